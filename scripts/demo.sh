#!/usr/bin/env bash
# The end-to-end demo. Until the simulators, compression and slide-model
# issues land, it runs a smoke pipeline of what exists: the encoder on
# random weights (or the published one when ../shared has it), an embedding,
# and a short throughput measurement.
set -euo pipefail
NIC=${1:-build/nic}
out=${NIC_DEMO_OUT:-out/demo}
mkdir -p "$out"
echo "== nic demo (smoke pipeline) -> $out"
"$NIC" --version
shared=../shared/models/nic-published
if [ -f "$shared/encoder_multitask-4.h5" ]; then
  echo "== importing the published MTL-NIC encoder"
  "$NIC" encoder import "$shared/encoder_multitask-4.h5" -o "$out/mtl4.safetensors"
  echo "== embedding the example patch (first 8 values)"
  "$NIC" encoder embed --model "$out/mtl4.safetensors" "$shared/example_128.jpg" | cut -d' ' -f1-9
fi
echo "== engine throughput (3 s each)"
"$NIC" bench encoder --seconds 3 | tail -2
echo "== done"
