#!/usr/bin/env bash
# Makes the benchmark slides of `nic compress` from a real H&E slide by
# tiling it with libvips: pyramidal, 256 px JPEG tiles (Q 90), resolution
# tags for the source's spacing, as scanners' generic TIFFs are.
#   bench/compress/make_slides.sh SOURCE OUTDIR
# writes OUTDIR/small.tif (4 x 3 copies: 8880 x 8901 px, 79 Mpx) and
# OUTDIR/big.tif (21 x 16 copies: 46620 x 47472 px, 2.21 gigapixels, 1.7 GB)
# from CMU-1-Small-Region.svs (2220 x 2967 px at 0.499 um/px); existing
# files are kept. Needs the vips command (Debian libvips-tools).
set -euo pipefail
SRC=${1:?usage: make_slides.sh SOURCE OUTDIR}
OUT=${2:?usage: make_slides.sh SOURCE OUTDIR}
MPP=${MPP:-0.499}
command -v vips >/dev/null || { echo "make_slides.sh: the vips command is missing (apt install libvips-tools)" >&2; exit 1; }
mkdir -p "$OUT"
# level 0 of the source as plain RGB (OpenSlide's RGBA has nothing in alpha here)
[ -f "$OUT/source.v" ] || vips openslideload "$SRC" "$OUT/source.v" --rgb
RES=$(awk -v m="$MPP" 'BEGIN { printf "%.6f", 1000 / m }') # pixels per mm
OPTS="tile,tile-width=256,tile-height=256,pyramid,compression=jpeg,Q=90,resunit=cm,xres=$RES,yres=$RES"
make() { # name across down
  [ -f "$OUT/$1.tif" ] && return
  echo "making $OUT/$1.tif ($2 x $3 copies)" >&2
  vips replicate "$OUT/source.v" "$OUT/$1.tmp.tif[$OPTS]" "$2" "$3"
  mv "$OUT/$1.tmp.tif" "$OUT/$1.tif"
}
make small 4 3
make big 21 16
rm -f "$OUT/source.v"
