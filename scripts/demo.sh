#!/usr/bin/env bash
# The end-to-end demo (`make demo`): `nic demo` simulates a small H&E cohort,
# compresses it with the bundled encoder, cross-validates the NIC slide CNN
# and writes out/demo/report.md; its last line is the slide-level AUC.
#
#   scripts/demo.sh [build/nic] [nic demo options...]
#
# NIC_DEMO_OUT sets the folder (default out/demo). Until the bundled encoder
# (models/nic-default.safetensors) exists, a developer machine with the
# published MTL-NIC encoder in ../shared uses that one instead; elsewhere
# `nic demo` says where it looked and how to get an encoder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
NIC=${1:-build/nic}
[ $# -gt 0 ] && shift
out=${NIC_DEMO_OUT:-out/demo}
args=(-o "$out")
published="$root/../shared/models/nic-published/encoder_multitask-4.h5"
if [ ! -f "$root/models/nic-default.safetensors" ] && [ -f "$published" ] &&
  [[ " $* " != *" --model "* && " $* " != *" -m "* ]]; then
  mkdir -p "$out"
  if [ ! -f "$out/mtl4.safetensors" ]; then
    echo "== no bundled encoder yet: importing the published MTL-NIC encoder from ../shared"
    "$NIC" encoder import "$published" -o "$out/mtl4.safetensors" >/dev/null
  fi
  args+=(--model "$out/mtl4.safetensors")
fi
exec "$NIC" demo "${args[@]}" "$@"
