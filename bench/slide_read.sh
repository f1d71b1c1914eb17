#!/usr/bin/env bash
# The read path of `nic compress` alone, OpenSlide against the direct
# JPEG-tile reader (bench_slide_read): every 128 px patch at 0.5 um/px of
# CMU-1-Small-Region.pyramid.tif (2220 x 2967 px) and of a 4 x 3 tiling of
# CMU-1-Small-Region.svs (8880 x 8901 px, 79 Mpx, 256 px JPEG tiles, Q 90,
# as bench/compress/make_slides.sh makes its small slide), medians of RUNS.
#
#   bench/slide_read.sh [build dir] [RUNS] [THREADS]     (default build, 5, 1)
#
# Needs ../shared and the vips command; the generated slide goes to $WORK
# (a temporary folder) and is removed unless KEEP=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=$(realpath "${1:-$ROOT/build}")
RUNS=${2:-5}
THREADS=${3:-1}
SHARED=${NIC_SHARED:-$ROOT/../shared}
SVS="$SHARED/data/slides/CMU-1-Small-Region.svs"
PYR="$SHARED/data/slides/CMU-1-Small-Region.pyramid.tif"
for f in "$SVS" "$PYR" "$BUILD/bench_slide_read"; do
  [ -e "$f" ] || { echo "slide_read.sh: $f is missing" >&2; exit 1; }
done
command -v vips >/dev/null || { echo "slide_read.sh: the vips command is missing" >&2; exit 1; }
WORK=${WORK:-$(mktemp -d /tmp/nic-bench-read-XXXXXX)}
mkdir -p "$WORK"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
if [ ! -f "$WORK/small.tif" ]; then
  vips openslideload "$SVS" "$WORK/source.v" --rgb
  RES=$(awk 'BEGIN { printf "%.6f", 1000 / 0.499 }')
  vips replicate "$WORK/source.v" \
    "$WORK/small.tif[tile,tile-width=256,tile-height=256,pyramid,compression=jpeg,Q=90,resunit=cm,xres=$RES,yres=$RES]" 4 3
  rm -f "$WORK/source.v"
fi
echo "machine: $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$BUILD/bench_slide_read" --runs "$RUNS" --threads "$THREADS" --mpp 0.5 --mpp-override 0.499 \
  "$PYR" "$WORK/small.tif"
