#!/bin/bash
# nic tissue and nic inspect from the command line, on images this script
# makes: exit codes, output files, --mask round trips, one bad slide among
# good ones. Exits 77 (skipped) when the nic binary or awk is missing.
set -u

NIC=${NIC_BIN:-build/nic}
[ -x "$NIC" ] || { echo "SKIP: $NIC not built"; exit 77; }
command -v awk >/dev/null || { echo "SKIP: awk missing"; exit 77; }

T=$(mktemp -d /tmp/nic-cli-tissue-XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

# A 400 x 300 "slide" as an ASCII PPM (libvips reads it): glass with noise,
# an elliptic piece of pink tissue with purple speckles, a black border on
# the left and a blue pen stroke. No calibration: spacing comes from
# --mpp-override.
awk 'BEGIN {
  srand(7); w = 400; h = 300; print "P3"; print w, h; print 255
  for (y = 0; y < h; y++) for (x = 0; x < w; x++) {
    n = int(rand() * 6) - 3; r = 242 + n; g = 240 + n; b = 244 + n
    dx = (x - 170) / 110; dy = (y - 150) / 90
    if (dx * dx + dy * dy <= 1) {
      if (rand() < 0.2) { r = 120 + n; g = 70 + n; b = 160 + n } else { r = 225 + n; g = 150 + n; b = 190 + n }
    }
    if (x > 320 && x < 330 && y > 40 && y < 260) { r = 40; g = 70; b = 170 }
    if (x < 12) { r = 8; g = 8; b = 8 }
    print r, g, b
  }
}' > "$T/slide.ppm"

# --- detection -------------------------------------------------------------------
"$NIC" tissue -h > "$T/help.txt"
check "tissue -h exits 0" '[ $? -eq 0 ] && grep -q -- "--mpp-override" "$T/help.txt"'

"$NIC" tissue "$T/slide.ppm" -o "$T/out" --mpp-override 4 > "$T/log" 2>&1
rc=$?
check "tissue on an image exits 0" '[ $rc -eq 0 ]'
check "writes mask, thumbnail and GeoJSON" \
  '[ -s "$T/out/slide_mask.png" ] && [ -s "$T/out/slide_thumb.png" ] && [ -s "$T/out/slide.geojson" ]'
check "GeoJSON is a FeatureCollection of Tissue annotations" \
  'grep -q "\"FeatureCollection\"" "$T/out/slide.geojson" && grep -q "\"objectType\":\"annotation\"" "$T/out/slide.geojson" && grep -q "\"name\":\"Tissue\"" "$T/out/slide.geojson"'
check "summary reports the tissue share" 'grep -q "% tissue" "$T/log"'
# The ellipse is pi * 110 * 90 / (400 * 300) = 25.9% of the image.
pct=$(sed -n 's/.*: \([0-9.]*\)% tissue.*/\1/p' "$T/log")
check "tissue share near 25.9% (got $pct)" 'awk -v p="$pct" "BEGIN { exit !(p > 24 && p < 28) }"'
check "no temporary files left" '[ -z "$(ls "$T/out" | grep "\.tmp\.")" ]'

"$NIC" tissue "$T/slide.ppm" -o "$T/nospacing" > "$T/log" 2>&1
rc=$?
check "unknown spacing fails (exit 1) naming the file and the fix" \
  '[ $rc -eq 1 ] && grep -q "slide.ppm" "$T/log" && grep -q -- "--mpp-override" "$T/log"'

# --- one bad slide among good ones --------------------------------------------------------
echo "not a slide" > "$T/notes.svs"
cp "$T/slide.ppm" "$T/second.ppm"
"$NIC" tissue "$T/missing.svs" "$T/notes.svs" "$T/second.ppm" -o "$T/mixed" --mpp-override 4 \
  > "$T/log" 2>&1
rc=$?
check "a failing slide makes the exit code 1" '[ $rc -eq 1 ]'
check "errors name the missing and the invalid file" \
  'grep -q "missing.svs" "$T/log" && grep -q "notes.svs" "$T/log"'
check "the good slide is still done" '[ -s "$T/mixed/second_mask.png" ]'

# --- user masks ------------------------------------------------------------------------------
"$NIC" tissue "$T/slide.ppm" -o "$T/fromjson" --mpp-override 4 --mask "$T/out/slide.geojson" \
  > "$T/log" 2>&1
check "--mask GeoJSON reproduces the detected mask exactly" \
  '[ $? -eq 0 ] && cmp -s "$T/out/slide_mask.png" "$T/fromjson/slide_mask.png"'
"$NIC" tissue "$T/slide.ppm" -o "$T/frompng" --mpp-override 4 --mask "$T/out/slide_mask.png" \
  > "$T/log" 2>&1
check "--mask PNG reproduces the detected mask exactly" \
  '[ $? -eq 0 ] && cmp -s "$T/out/slide_mask.png" "$T/frompng/slide_mask.png"'
mkdir -p "$T/masks"
cp "$T/out/slide.geojson" "$T/masks/slide.geojson"
cp "$T/out/slide_mask.png" "$T/masks/second_mask.png"
"$NIC" tissue "$T/slide.ppm" "$T/second.ppm" -o "$T/fromdir" --mpp-override 4 --mask "$T/masks" \
  > "$T/log" 2>&1
check "--mask DIR finds <id>.geojson and <id>_mask.png" \
  '[ $? -eq 0 ] && cmp -s "$T/out/slide_mask.png" "$T/fromdir/second_mask.png"'
"$NIC" tissue "$T/slide.ppm" -o "$T/nomask" --mpp-override 4 --mask "$T/none.geojson" > "$T/log" 2>&1
check "a missing mask file fails naming it" '[ $? -eq 1 ] && grep -q "none.geojson" "$T/log"'

# A blank slide: no tissue, and its (empty) GeoJSON is a valid mask.
awk 'BEGIN { srand(3); print "P3"; print 200, 150; print 255
  for (i = 0; i < 200 * 150; i++) { n = int(rand() * 6) - 3; print 242 + n, 240 + n, 244 + n } }' \
  > "$T/blank.ppm"
"$NIC" tissue "$T/blank.ppm" -o "$T/blank" --mpp-override 4 > "$T/log" 2>&1
check "a blank slide has no tissue" '[ $? -eq 0 ] && grep -q ": 0.0% tissue" "$T/log"'
"$NIC" tissue "$T/blank.ppm" -o "$T/blank2" --mpp-override 4 --mask "$T/blank/blank.geojson" \
  > "$T/log" 2>&1
check "an empty GeoJSON is a valid mask" \
  '[ $? -eq 0 ] && cmp -s "$T/blank/blank_mask.png" "$T/blank2/blank_mask.png"'

# --- usage errors -------------------------------------------------------------------------------
"$NIC" tissue "$T/slide.ppm" > /dev/null 2>&1
check "missing -o is a usage error (2)" '[ $? -eq 2 ]'
"$NIC" tissue "$T/slide.ppm" "$T/second.ppm" -o "$T/x" --mask "$T/out/slide.geojson" > /dev/null 2>&1
check "--mask FILE with two slides is a usage error (2)" '[ $? -eq 2 ]'
"$NIC" tissue "$T/slide.ppm" -o "$T/x" --level-mpp -3 > /dev/null 2>&1
check "a negative --level-mpp is a usage error (2)" '[ $? -eq 2 ]'
"$NIC" tissue "$T/slide.ppm" "$T/sub/slide.ppm" -o "$T/dup" --mpp-override 4 > "$T/log" 2>&1
check "two slides with one output name: the second fails" \
  '[ $? -eq 1 ] && grep -q "same output name" "$T/log"'

# --- inspect ---------------------------------------------------------------------------------------
"$NIC" inspect "$T/slide.ppm" > "$T/log" 2>&1
check "inspect an image" '[ $? -eq 0 ] && grep -q "400 x 300" "$T/log" && grep -q "spacing *unknown" "$T/log"'
"$NIC" inspect "$T/missing.svs" > "$T/log" 2>&1
check "inspect a missing file fails naming it" '[ $? -eq 1 ] && grep -q "missing.svs" "$T/log"'
"$NIC" inspect "$T/notes.svs" > "$T/log" 2>&1
check "inspect a text file named .svs fails naming it" '[ $? -eq 1 ] && grep -q "notes.svs" "$T/log"'
: > "$T/model.safetensors"
"$NIC" inspect "$T/model.safetensors" > "$T/log" 2>&1
check "inspect dispatches .safetensors away from the slide reader" \
  '[ $? -eq 1 ] && grep -q "model" "$T/log"'

# A calibrated tiled pyramid, when the vips command is there to make one.
if command -v vips >/dev/null; then
  vips tiffsave "$T/slide.ppm" "$T/pyr.tif" --tile --tile-width 128 --tile-height 128 --pyramid \
    --compression deflate --xres 250 --yres 250 > /dev/null 2>&1 # 250 px/mm = 4 um/px
  "$NIC" inspect "$T/pyr.tif" > "$T/log" 2>&1
  check "inspect a pyramid: levels and spacing from resolution tags" \
    '[ $? -eq 0 ] && grep -q "generic-tiff" "$T/log" && grep -q "levels *3" "$T/log" && grep -q "4 x 4 um/px (resolution tags)" "$T/log"'
  "$NIC" tissue "$T/pyr.tif" -o "$T/pyr" > "$T/log" 2>&1
  check "tissue on the pyramid matches the image" \
    '[ $? -eq 0 ] && cmp -s "$T/out/slide_mask.png" "$T/pyr/pyr_mask.png"'
  "$NIC" inspect --all "$T/pyr.tif" > "$T/log" 2>&1
  check "inspect --all lists every property" '[ $? -eq 0 ] && ! grep -q "for all" "$T/log"'
else
  echo "skip pyramid checks: no vips command"
fi

if [ $fails -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all passed"
