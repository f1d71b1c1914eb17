#!/usr/bin/env bash
# nic compress against the Python baseline (baseline.py: openslide-python +
# PyTorch DataLoader workers), on a 79-megapixel and a 2.2-gigapixel
# pyramidal JPEG TIFF of real tissue made from CMU-1-Small-Region.svs, with
# the published MTL-NIC encoder (the same .safetensors file for both), the
# same grid and the same kept cells (the baseline takes nic's coords).
#
#   bench/compress/run.sh [path/to/nic] [RUNS]       (default build/nic, 3)
#
# Runs nic and the baseline alternately, RUNS times each per slide, each as
# a whole process under /usr/bin/time -v, and prints the medians: end-to-end
# seconds (process wall time: nic includes loading the model, tissue
# detection and the grid; the baseline gets the coords for free), patches/s
# (patches / end-to-end seconds), the ratio, peak RSS, and where nic's time
# went (nic compress --verbose). Needs ../shared (the slide and the
# encoder), the vips command, and /usr/bin/python3 with torch, openslide,
# h5py (scripts/install-deps.sh). The slides are made in $WORK (default a
# temporary folder, about 1.8 GB) and removed at the end unless KEEP=1.
set -euo pipefail
NIC=$(realpath "${1:-build/nic}")
RUNS=${2:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${NIC_SHARED:-$ROOT/../shared}
PY=/usr/bin/python3
SRC="$SHARED/data/slides/CMU-1-Small-Region.svs"
KERAS="$SHARED/models/nic-published/encoder_multitask-4.h5"
for f in "$SRC" "$KERAS"; do [ -f "$f" ] || { echo "run.sh: $f is missing" >&2; exit 1; }; done
"$PY" -c "import torch, openslide, h5py" || { echo "run.sh: $PY lacks torch/openslide/h5py (scripts/install-deps.sh)" >&2; exit 1; }
WORK=${WORK:-$(mktemp -d /tmp/nic-bench-compress-XXXXXX)}
mkdir -p "$WORK"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load $(cut -d' ' -f1-3 /proc/loadavg)"
"$NIC" encoder import "$KERAS" -o "$WORK/mtl4.safetensors" > /dev/null
"$HERE/make_slides.sh" "$SRC" "$WORK"

secs() { # "h:mm:ss" or "m:ss.ss" -> seconds
  awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }' <<< "$1"
}
wall() { secs "$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$1")"; }
rss_mb() { awk '/Maximum resident set size/ { printf "%.0f\n", $NF / 1024 }' "$1"; }
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

for size in small big; do
  slide="$WORK/$size.tif"
  out="$WORK/nic-$size"
  for r in $(seq 1 "$RUNS"); do
    echo "$size: run $r/$RUNS (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    /usr/bin/time -v "$NIC" compress -m "$WORK/mtl4.safetensors" "$slide" -o "$out" --overwrite -v -q \
      > "$WORK/nic-$size.$r.log" 2> "$WORK/nic-$size.$r.time"
    /usr/bin/time -v "$PY" "$HERE/baseline.py" "$slide" --grid "$out/$size.h5" \
      --model "$WORK/mtl4.safetensors" -o "$WORK/base-$size.h5" \
      > "$WORK/base-$size.$r.log" 2> "$WORK/base-$size.$r.time"
    wall "$WORK/nic-$size.$r.time" >> "$WORK/nic-$size.wall"
    rss_mb "$WORK/nic-$size.$r.time" >> "$WORK/nic-$size.rss"
    wall "$WORK/base-$size.$r.time" >> "$WORK/base-$size.wall"
    rss_mb "$WORK/base-$size.$r.time" >> "$WORK/base-$size.rss"
    sed -n 's/.*read\/decode \([0-9.]*\) s.*encode \([0-9.]*\) s.*/\1 \2/p' "$WORK/nic-$size.$r.log" >> "$WORK/nic-$size.split"
  done
  patches=$(sed -n 's/.* \([0-9]*\) patches in .*/\1/p' "$WORK/nic-$size.1.log" | head -1)
  echo "$size $patches $(median < "$WORK/nic-$size.wall") $(median < "$WORK/base-$size.wall") $(median < "$WORK/nic-$size.rss") $(median < "$WORK/base-$size.rss")" >> "$WORK/summary"
done

echo
echo "runs (end-to-end seconds): "
for size in small big; do
  echo "  $size: nic [$(paste -sd' ' "$WORK/nic-$size.wall")]  baseline [$(paste -sd' ' "$WORK/base-$size.wall")]"
done
echo
printf "%-6s %8s %8s | %9s %9s %8s | %9s %9s %8s | %6s\n" slide Mpx patches "nic s" "nic p/s" "nic RSS" \
  "base s" "base p/s" "base RSS" ratio
while read -r size patches nw bw nr br; do
  mpx=$("$NIC" inspect "$WORK/$size.tif" | awk '/^size/ { printf "%.0f", $2 * $4 / 1e6 }')
  awk -v s="$size" -v m="$mpx" -v n="$patches" -v nw="$nw" -v bw="$bw" -v nr="$nr" -v br="$br" 'BEGIN {
    printf "%-6s %8d %8d | %9.1f %9.0f %6d MB | %9.1f %9.0f %6d MB | %5.2fx\n", s, m, n, nw, n / nw, nr, bw, n / bw, br, bw / nw }'
done < "$WORK/summary"
echo
echo "where nic's time went (each run; read/decode and encode are summed over their threads):"
for size in small big; do
  for r in $(seq 1 "$RUNS"); do
    echo "  $size run $r: $(grep -h "time:" "$WORK/nic-$size.$r.log" | sed 's/^ *time: //')"
    echo "  $size run $r: $(grep -h "waits:" "$WORK/nic-$size.$r.log" | sed 's/^ *waits: //')"
  done
done
echo
"$PY" - "$WORK/nic-big/big.h5" "$WORK/base-big.h5" <<'EOF'
import sys, h5py, numpy as np
a = h5py.File(sys.argv[1], "r")["features"][:]
b = h5py.File(sys.argv[2], "r")["features"][:]
cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
print(f"same work check: {len(a)} vs {len(b)} rows; per-patch cosine nic vs baseline: "
      f"median {np.median(cos):.4f}, 5th percentile {np.percentile(cos, 5):.4f} "
      "(the baseline reads the rounded corner and patch_size_level0 pixels, nic the exact "
      "fractional cell)")
EOF
