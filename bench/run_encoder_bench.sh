#!/usr/bin/env bash
# Runs `nic bench encoder` and its PyTorch twin alternately, RUNS times each
# (default 5), on the same machine in the same session, and prints the
# medians and the nic/PyTorch ratios, with the load average before and after
# (on a shared machine, other jobs make single runs meaningless; see
# docs/benchmarks.md). ARCH is the encoder both build: nic (default) or
# resnet-small. Usage:
#   bench/run_encoder_bench.sh [path/to/nic] [RUNS] [SECONDS] [ARCH]
set -euo pipefail
NIC=${1:-build/nic}
RUNS=${2:-5}
SECS=${3:-8}
ARCH=${4:-nic}
case "$ARCH" in nic | resnet-small) ;; *) echo "ARCH must be nic or resnet-small, got '$ARCH'" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
val() { sed -n "s/^$1=//p" "$2"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(load)
for i in $(seq 1 "$RUNS"); do
  echo "run $i/$RUNS ($ARCH)" >&2
  "$NIC" bench encoder --arch "$ARCH" --seconds "$SECS" > "$tmp/nic.$i"
  "$PY" "$HERE/torch_encoder.py" --arch "$ARCH" --seconds "$SECS" > "$tmp/torch.$i"
  for k in inference training; do
    val ${k}_patches_per_s "$tmp/nic.$i" >> "$tmp/nic.$k"
    val ${k}_patches_per_s "$tmp/torch.$i" >> "$tmp/torch.$k"
  done
done
head -1 "$tmp/nic.1"
head -1 "$tmp/torch.1"
echo "load average (1, 5, 15 min): before $load_before, after $(load)"
median() { sort -g "$1" | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
for k in inference training; do
  n=$(median "$tmp/nic.$k"); t=$(median "$tmp/torch.$k")
  echo "$k: nic runs [$(paste -sd' ' "$tmp/nic.$k")] torch runs [$(paste -sd' ' "$tmp/torch.$k")]"
  awk -v k="$k" -v n="$n" -v t="$t" 'BEGIN {printf "%s_median nic=%.1f torch=%.1f ratio=%.2f\n", k, n, t, n/t}'
done
grep -h "of FP32 peak" "$tmp"/nic.* | sort | tail -2
