#!/usr/bin/env bash
# The end-to-end demo. Until the bundled encoder exists (issue 5) it runs a
# smoke pipeline of what is there: simulated H&E slides, tissue detection,
# and, when ../shared has the published encoder, its import, an embedding
# and the compression of the simulated slides; then a short throughput
# measurement of the engine.
set -euo pipefail
NIC=${1:-build/nic}
out=${NIC_DEMO_OUT:-out/demo}
mkdir -p "$out"
echo "== nic demo (smoke pipeline) -> $out"
"$NIC" --version
echo "== simulating 2 small H&E slides"
"$NIC" simulate histo -n 2 --size 4096 --seed 1 -o "$out/slides"
echo "== tissue detection"
"$NIC" tissue "$out"/slides/*.tif -o "$out/tissue"
shared=../shared/models/nic-published
if [ -f "$shared/encoder_multitask-4.h5" ]; then
  echo "== importing the published MTL-NIC encoder"
  "$NIC" encoder import "$shared/encoder_multitask-4.h5" -o "$out/mtl4.safetensors"
  echo "== embedding the example patch (first 8 values)"
  "$NIC" encoder embed --model "$out/mtl4.safetensors" "$shared/example_128.jpg" | cut -d' ' -f1-9
  echo "== compressing the simulated slides with it"
  "$NIC" compress --model "$out/mtl4.safetensors" --overwrite "$out/slides" -o "$out/compressed"
  first=$(ls "$out"/compressed/*.h5 | head -1)
  "$NIC" inspect "$first" | head -12
fi
echo "== engine throughput (3 s each)"
"$NIC" bench encoder --seconds 3 | tail -2
echo "== done"
