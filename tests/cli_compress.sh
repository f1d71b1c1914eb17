#!/bin/bash
# nic compress (and nic inspect on its outputs and on models) from the command
# line: usage errors, the missing-model message, outputs and the report, resume,
# one bad slide among good ones, slide lists, shards, --verbose, log output.
# The encoder is a tiny nic model written here with Python + NumPy; the slides
# are images made with awk. Exits 77 (skipped) when the nic binary, awk or
# Python with NumPy is missing.
set -u

NIC=${NIC_BIN:-build/nic}
PY=/usr/bin/python3
[ -x "$NIC" ] || { echo "SKIP: $NIC not built"; exit 77; }
command -v awk >/dev/null || { echo "SKIP: awk missing"; exit 77; }
"$PY" -c "import numpy" 2>/dev/null || { echo "SKIP: $PY with numpy missing"; exit 77; }

T=$(mktemp -d /tmp/nic-cli-compress-XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

# --- a tiny encoder: 2x2 average pool, conv 4x4/4 (8 filters), global average,
# dense 8 -> 6, as a nic safetensors file (docs/model-format.md) -------------------
"$PY" "$(dirname "$0")/make_tiny_encoder.py" "$T/tiny.safetensors"
[ -s "$T/tiny.safetensors" ] || { echo "FAIL cannot write the test model"; exit 1; }
M="$T/tiny.safetensors"

# --- slides: 640 x 512 images (no calibration), glass with an elliptic piece of
# speckled tissue; the seed varies the speckles --------------------------------------
make_slide() {
  awk -v seed="$2" 'BEGIN {
    srand(seed); w = 640; h = 512; print "P3"; print w, h; print 255
    for (y = 0; y < h; y++) for (x = 0; x < w; x++) {
      n = int(rand() * 6) - 3; r = 242 + n; g = 240 + n; b = 244 + n
      dx = (x - 320) / 250; dy = (y - 256) / 200
      if (dx * dx + dy * dy <= 1) {
        if (rand() < 0.2) { r = 120 + n; g = 70 + n; b = 160 + n } else { r = 225 + n; g = 150 + n; b = 190 + n }
      }
      print r, g, b
    }
  }' > "$1"
}
mkdir -p "$T/slides"
make_slide "$T/slides/a.ppm" 1
make_slide "$T/slides/b.ppm" 2
make_slide "$T/slides/c.ppm" 3

# --- usage -------------------------------------------------------------------------
"$NIC" compress -h > "$T/help.txt"
check "compress -h exits 0 and explains --slide-mpp" '[ $? -eq 0 ] && grep -q -- "--slide-mpp" "$T/help.txt"'
"$NIC" help | grep -q "compress"
check "compress is listed in nic help" '[ $? -eq 0 ]'
"$NIC" compress -m "$M" -o "$T/o" > "$T/log" 2>&1
check "no slides is a usage error (2)" '[ $? -eq 2 ]'
"$NIC" compress -m "$M" "$T/slides/a.ppm" > "$T/log" 2>&1
check "no -o is a usage error (2)" '[ $? -eq 2 ]'
"$NIC" compress -m "$M" --shard 2/2 "$T/slides/a.ppm" -o "$T/o" > "$T/log" 2>&1
check "--shard 2/2 is a usage error (2)" '[ $? -eq 2 ] && grep -q "0 <= I < N" "$T/log"'
"$NIC" compress -m "$M" --orientations 4 "$T/slides/a.ppm" -o "$T/o" > "$T/log" 2>&1
check "--orientations 4 is a usage error (2)" '[ $? -eq 2 ]'
"$NIC" compress -m "$M" --min-tissue 1.5 "$T/slides/a.ppm" -o "$T/o" > "$T/log" 2>&1
check "--min-tissue 1.5 is a usage error (2)" '[ $? -eq 2 ]'
if [ ! -e "${NIC_SRC:-.}/models/nic-default.safetensors" ]; then
  "$NIC" compress "$T/slides/a.ppm" -o "$T/o" > "$T/log" 2>&1
  check "without --model and without a bundled encoder: a clear error (1)" \
    '[ $? -eq 1 ] && grep -q "no bundled default encoder" "$T/log" && grep -q -- "--model" "$T/log"'
fi
"$NIC" compress -m "$T/none.safetensors" "$T/slides/a.ppm" -o "$T/o" > "$T/log" 2>&1
check "a missing model fails naming it (1)" '[ $? -eq 1 ] && grep -q "none.safetensors" "$T/log"'

# --- one slide ---------------------------------------------------------------------
"$NIC" compress -m "$M" --slide-mpp 0.5 -v "$T/slides/a.ppm" -o "$T/out" > "$T/log" 2> "$T/err"
rc=$?
check "compress an image exits 0" '[ $rc -eq 0 ]'
check "writes OUTDIR/<id>.h5 and the report" '[ -s "$T/out/a.h5" ] && [ -s "$T/out/compress_report.csv" ]'
check "the report: header and an ok row" \
  'head -1 "$T/out/compress_report.csv" | grep -qx "slide_id,path,status,n_patches,seconds,error" && grep -q "^a,.*,ok,[1-9][0-9]*," "$T/out/compress_report.csv"'
check "--verbose says where the time went" 'grep -q "read/decode" "$T/log" && grep -q "encode" "$T/log"'
check "no progress bar escapes when stderr is not a terminal" '! grep -q $'"'"'\r'"'"' "$T/err"'
check "no temporary files left" '[ -z "$(ls "$T/out" | grep "\.tmp\.")" ]'
n=$(sed -n 's/^a,.*,ok,\([0-9]*\),.*/\1/p' "$T/out/compress_report.csv")
# 20 cells of 128 px; the ellipse covers the 6 inner cells and parts of the others
check "a plausible number of patches (got $n)" '[ "$n" -ge 4 ] && [ "$n" -le 16 ]'

"$NIC" inspect "$T/out/a.h5" > "$T/log" 2>&1
check "inspect describes the compressed slide" \
  '[ $? -eq 0 ] && grep -q "compressed slide" "$T/log" && grep -q "grid *4 x 5" "$T/log" && grep -q "encoder *tiny" "$T/log" && grep -q "made by *nic compress" "$T/log"'
"$NIC" inspect "$M" > "$T/log" 2>&1
check "inspect describes the model" \
  '[ $? -eq 0 ] && grep -q "nic model" "$T/log" && grep -q "6 values per patch" "$T/log" && grep -q "128 px at 0.5 um/px" "$T/log"'

"$NIC" compress -m "$M" --slide-mpp 0.5 "$T/slides/a.ppm" -o "$T/out" > "$T/log" 2>&1
check "a second run skips the finished slide" \
  '[ $? -eq 0 ] && grep -q "already done" "$T/log" && grep -q ",skipped," "$T/out/compress_report.csv"'
"$NIC" compress -m "$M" --slide-mpp 0.5 --overwrite "$T/slides/a.ppm" -o "$T/out" > "$T/log" 2>&1
check "--overwrite redoes it" '[ $? -eq 0 ] && grep -q ",ok," "$T/out/compress_report.csv"'

"$NIC" compress -m "$M" "$T/slides/b.ppm" -o "$T/out" > "$T/log" 2>&1
check "a slide without spacing fails (1), naming the fix" \
  '[ $? -eq 1 ] && grep -q "b.ppm" "$T/log" && grep -q -- "--slide-mpp" "$T/log" && grep -q "^b,.*,failed,0,.*spacing" "$T/out/compress_report.csv"'

# --- one bad slide among good ones ----------------------------------------------------
echo "not a slide" > "$T/notes.svs"
"$NIC" compress -m "$M" --slide-mpp 0.5 "$T/missing.svs" "$T/notes.svs" "$T/slides/b.ppm" \
  -o "$T/mixed" > "$T/log" 2> "$T/err"
rc=$?
check "a failing slide makes the exit code 1" '[ $rc -eq 1 ]'
check "errors name the missing and the invalid file" \
  'grep -q "missing.svs" "$T/err" && grep -q "notes.svs" "$T/err" && grep -q FAILED "$T/err"'
check "the good slide is still done" '[ -s "$T/mixed/b.h5" ]'
check "the report has all three" \
  '[ $(wc -l < "$T/mixed/compress_report.csv") -eq 4 ] && grep -q "^missing,.*,failed,0,.*missing.svs" "$T/mixed/compress_report.csv"'
check "the summary counts them" 'grep -q "1 compressed, 0 already done, 2 failed" "$T/log"'

# --- lists: a CSV with an mpp column, a folder, shards ----------------------------------
printf 'slide_id,path,mpp\nfirst,slides/a.ppm,0.5\nsecond,slides/c.ppm,0.5\n' > "$T/list.csv"
"$NIC" compress -m "$M" "$T/list.csv" -o "$T/fromcsv" > "$T/log" 2>&1
check "a CSV list with ids and spacing" '[ $? -eq 0 ] && [ -s "$T/fromcsv/first.h5" ] && [ -s "$T/fromcsv/second.h5" ]'
for i in 0 1; do
  "$NIC" compress -m "$M" --slide-mpp 0.5 --shard $i/2 "$T/slides" -o "$T/sharded" > "$T/log.$i" 2>&1
  check "shard $i/2 exits 0" '[ $? -eq 0 ]'
done
check "shards split the folder: a and c, then b" \
  'grep -q "^a," "$T/sharded/compress_report.0-of-2.csv" && grep -q "^c," "$T/sharded/compress_report.0-of-2.csv" && grep -q "^b," "$T/sharded/compress_report.1-of-2.csv" && ! grep -q "^b," "$T/sharded/compress_report.0-of-2.csv"'
check "together they did every slide" '[ -s "$T/sharded/a.h5" ] && [ -s "$T/sharded/b.h5" ] && [ -s "$T/sharded/c.h5" ]'

# --- an output folder that cannot be made ------------------------------------------------
"$NIC" compress -m "$M" --slide-mpp 0.5 "$T/slides/a.ppm" -o "$T/notes.svs/out" > "$T/log" 2>&1
check "an output folder that cannot be created fails (1) saying so" \
  '[ $? -eq 1 ] && grep -q "cannot create output folder" "$T/log"'

if [ $fails -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
