#!/usr/bin/env bash
# nic encoder train / probe from the command line, on patches made by
# 'nic simulate histo-patches': usage errors, a two-task run (classes and a
# regression), its files and model card, --resume, and the probe's output.
# With ../shared present, also the probe of the published encoder on a few
# PatchCamelyon patches (skipped under the sanitizers).
set -uo pipefail

NIC_BIN=${NIC_BIN:?NIC_BIN must point at the nic executable}
SHARED=${NIC_SHARED:-../shared}
[ -x "$NIC_BIN" ] || { echo "$NIC_BIN is not an executable"; exit 1; }

TMP=$(mktemp -d /tmp/nic-cli-encoder-train-XXXXXX)
fails=0
section_fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
T0=$SECONDS
ok() {
  [ $fails -eq $section_fails ] && echo "ok   $* ($((SECONDS - T0)) s)" || echo "FAIL $*"
  section_fails=$fails
  T0=$SECONDS
}
# Runs nic and expects exit status $1; the output is in $TMP/out.
expect() {
  local want=$1
  shift
  "$NIC_BIN" "$@" >"$TMP/out" 2>&1
  local got=$?
  [ $got -eq "$want" ] || { cat "$TMP/out"; fail "'nic $*' exited $got, expected $want"; }
}

# ---- help and usage errors ------------------------------------------------------------
expect 0 encoder -h
grep -q "train" "$TMP/out" && grep -q "probe" "$TMP/out" || fail "nic encoder -h lacks train/probe"
expect 0 encoder train -h
for w in --task --output --arch --embed-dim --unsupervised --epochs --batch --sampling --balanced \
  --optimizer --lr --schedule --patience --monitor --resume --seed --aug-hed --aug-zoom \
  --aug-blur --aug-noise --augment kind= weight= mpp= valid= holdout= max-train=; do
  grep -q -- "$w" "$TMP/out" || fail "train -h does not explain $w"
done
expect 0 encoder probe -h
for w in --model --train --test --train-split --test-split --max-train --mpp --C; do
  grep -q -- "$w" "$TMP/out" || fail "probe -h does not explain $w"
done
expect 2 encoder train -o "$TMP/x.safetensors"
grep -q "no --task" "$TMP/out" || fail "missing --task: $(cat "$TMP/out")"
expect 2 encoder train --task t=x
grep -q "missing -o" "$TMP/out" || fail "missing -o: $(cat "$TMP/out")"
expect 2 encoder train --task "no-equals" -o "$TMP/x.safetensors"
grep -q "NAME=PATH" "$TMP/out" || fail "bad task spec: $(cat "$TMP/out")"
expect 2 encoder train --task "t=x,kind=maybe" -o "$TMP/x.safetensors"
grep -q "kind must be" "$TMP/out" || fail "bad kind: $(cat "$TMP/out")"
expect 2 encoder train --task "t=x,size=3" -o "$TMP/x.safetensors"
grep -q "unknown option 'size'" "$TMP/out" || fail "bad task option: $(cat "$TMP/out")"
expect 2 encoder train --task t=x -o "$TMP/x.safetensors" --unsupervised gan
expect 2 encoder train --task t=x -o "$TMP/x.safetensors" --sampling random
expect 2 encoder train --task t=x -o "$TMP/x.safetensors" --aug-blur 2
expect 2 encoder train --task t=x -o "$TMP/x.safetensors" --lr 1e-3 --momentum 0.5
expect 1 encoder train --task "t=$TMP/missing" -o "$TMP/x.safetensors"
grep -q "task t" "$TMP/out" || fail "a missing dataset is not named: $(cat "$TMP/out")"
expect 2 encoder probe --model m.safetensors --train x
ok "help and usage errors"

# ---- data ---------------------------------------------------------------------------------
D="$TMP/hp"
expect 0 simulate histo-patches -o "$D" -n 160 --slides 6 --threads 2 -q
[ -f "$D/tissue.csv" ] && [ -f "$D/nuclei.csv" ] || fail "simulate wrote no labels"
ok "histo-patches for training"

# ---- a two-task run ------------------------------------------------------------------------
M="$TMP/enc.safetensors"
TRAIN=(encoder train --task "tissue=$D/tissue.csv,mpp=0.5" --task "nuclei=$D/nuclei.csv,kind=regression,weight=0.5,holdout=0.25"
  -o "$M" --batch 16 --steps-per-epoch 3 --progress none --seed 3 --name cli-test)
expect 0 "${TRAIN[@]}" --epochs 1
grep -q "task tissue: .*4 classes" "$TMP/out" || fail "the tissue task is not described"
grep -q "task nuclei: .*regression.*held out: 0.25" "$TMP/out" || fail "the nuclei task is not described"
grep -Eq "^epoch 1/1: .*patches/s.*tissue: loss [0-9.]+ acc [0-9.]+ bacc [0-9.]+ auc .*nuclei: loss [0-9.]+ mae" \
  "$TMP/out" || { cat "$TMP/out"; fail "no epoch summary"; }
CARD="$TMP/enc.card.json"
[ -s "$M" ] && [ -s "$CARD" ] && [ -s "$M.ckpt.safetensors" ] || fail "missing output files"
ls "$TMP"/*.tmp.* >/dev/null 2>&1 && fail "a temporary file was left behind"
for k in '"encoder_name": "cli-test"' '"tasks"' '"dataset"' '"kind": "regression"' '"history"' \
  '"mpp": 0.5' '"normalisation"' '"mean"' '"command_line": "nic encoder train --task' \
  '"source_revision"' '"nic_version"' '"written"' '"augmentation"' '"patches_per_s"'; do
  grep -q -- "$k" "$CARD" || fail "model card lacks $k"
done
expect 0 encoder info "$M"
grep -q "model_card" "$TMP/out" || fail "the encoder's metadata has no model card"
grep -q "embedding" "$TMP/out" || fail "info does not show the NIC layers"
ok "two-task training: outputs and model card"

expect 0 "${TRAIN[@]}" --epochs 2 --resume
grep -q "resuming .* after epoch 1 of 2" "$TMP/out" || { cat "$TMP/out"; fail "no resume"; }
grep -q "^epoch 2/2" "$TMP/out" || fail "the resumed run did not train epoch 2"
grep -q "^epoch 1/2" "$TMP/out" && fail "the resumed run repeated epoch 1"
grep -q '"epochs_run": 2' "$CARD" || fail "the card does not count 2 epochs"
expect 1 encoder train --task "tissue=$D/tissue.csv" -o "$M" --resume --progress none
grep -q "different run" "$TMP/out" || fail "resuming other tasks: $(cat "$TMP/out")"
ok "--resume"

# ---- a soup: two runs averaged, then one epoch at lr 0 writes the encoder --------------------------
M2="$TMP/enc2.safetensors"
expect 0 encoder train --task "tissue=$D/tissue.csv,mpp=0.5" --task "nuclei=$D/nuclei.csv,kind=regression,weight=0.5,holdout=0.25" \
  -o "$M2" --batch 16 --steps-per-epoch 3 --progress none --seed 4 --epochs 1 --ema 0.9
expect 0 encoder average "$M.ckpt.safetensors" "$M2.ckpt.safetensors" -o "$TMP/soup.safetensors"
grep -q "the mean of 2 model files (1 contributed a moving average)" "$TMP/out" ||
  { cat "$TMP/out"; fail "average: summary line"; }
expect 0 encoder info "$TMP/soup.safetensors"
grep -q "averaged_from" "$TMP/out" || fail "the soup does not name its inputs"
expect 0 encoder train --task "tissue=$D/tissue.csv,mpp=0.5" --task "nuclei=$D/nuclei.csv,kind=regression,weight=0.5,holdout=0.25" \
  -o "$TMP/soup-enc.safetensors" --batch 16 --steps-per-epoch 3 --progress none --epochs 1 \
  --lr 0 --schedule constant --init "$TMP/soup.safetensors"
grep -q "the trunk and 2 of 2 task heads" "$TMP/out" || { cat "$TMP/out"; fail "the soup's heads"; }
expect 0 encoder average "$M" "$M2" -o "$TMP/soup-trunk.safetensors" --live
expect 0 encoder embed --model "$TMP/soup-trunk.safetensors" "$D/patches/$(ls "$D/patches" | head -n 1)"
"$NIC_BIN" encoder average -h >"$TMP/h" 2>&1 || fail "average -h exits non-zero"
for w in --output --live "model soup"; do grep -q -- "$w" "$TMP/h" || fail "average -h does not explain $w"; done
"$NIC_BIN" encoder -h 2>&1 | grep -q average || fail "nic encoder -h does not mention average"
expect 2 encoder average "$M"
expect 2 encoder average -o "$TMP/x.safetensors"
expect 1 encoder average "$M" "$M.ckpt.safetensors" -o "$TMP/x.safetensors"
grep -q "not the same model" "$TMP/out" || fail "average of different models: $(cat "$TMP/out")"
expect 1 encoder average "$M" "$TMP/none.safetensors" -o "$TMP/x.safetensors"
grep -q "none.safetensors" "$TMP/out" || fail "average: a missing input is not named"
ok "average (model soup) and --init from it"

# ---- an unreadable patch is reported and skipped ------------------------------------------------
B="$TMP/broken"
mkdir -p "$B"
echo "path,label,split" >"$B/labels.csv"
grep ',train$' "$D/tumour.csv" | head -n 12 | sed "s|^patches/|$D/patches/|" >>"$B/labels.csv"
printf 'not a png' >"$B/bad.png"
echo "bad.png,1,train" >>"$B/labels.csv"
expect 0 encoder train --task "b=$B/labels.csv,mpp=0.5" -o "$TMP/b.safetensors" --batch 16 \
  --epochs 1 --progress none
grep -q "task b: skipped an unreadable item: .*bad.png" "$TMP/out" ||
  { cat "$TMP/out"; fail "the broken patch was not reported"; }
grep -q "(no validation)" "$TMP/out" || fail "a task without validation items is not marked"
ok "unreadable patches"

# ---- probe ---------------------------------------------------------------------------------------
expect 0 encoder probe --model "$M" --train "$D/tissue.csv" --test "$D/tissue.csv" --progress none
tail -n 1 "$TMP/out" | grep -Eq '^accuracy=[0-9.]+ balanced_accuracy=[0-9.]+ auc=[0-9.]+$' ||
  { cat "$TMP/out"; fail "the probe's last line"; }
grep -q "\[train\].*\[test\]" "$TMP/out" || fail "the probe does not say which splits it used"
grep -Eq "^3 +[0-9]+ +[0-9]+ " "$TMP/out" || fail "no per-class line for class 3"
expect 1 encoder probe --model "$M" --train "$D/tissue.csv" --test "$D/tissue.csv" --test-split train
grep -q "would include the training items" "$TMP/out" || fail "overlap not refused"
expect 1 encoder probe --model "$TMP/none.safetensors" --train "$D/tissue.csv" --test "$D/tissue.csv"
grep -q "none.safetensors" "$TMP/out" || fail "a missing model is not named"
ok "probe"

# ---- the published encoder on PatchCamelyon (real data, optional) -------------------------------
PUB="$SHARED/models/nic-published/encoder_multitask-4.h5"
if [ -f "$PUB" ] && [ -d "$SHARED/data/pcam/train" ] && [ -z "${NIC_SANITIZED:-}" ]; then
  expect 0 encoder import "$PUB" -o "$TMP/mt4.safetensors"
  expect 0 encoder probe --model "$TMP/mt4.safetensors" --train "$SHARED/data/pcam" \
    --test "$SHARED/data/pcam" --mpp 0.972 --max-train 200 --max-test 100 --progress none
  tail -n 1 "$TMP/out" | grep -Eq '^accuracy=0\.[0-9]+ ' || { cat "$TMP/out"; fail "PCam probe"; }
  grep -q "\[train\].*0.972 um/px.*\[valid\]" "$TMP/out" || fail "PCam splits or spacing"
  echo "     published multitask-4 on 200/100 PCam patches: $(tail -n 1 "$TMP/out")"
  ok "probe of the published encoder on PatchCamelyon"
else
  echo "skip PatchCamelyon probe (no ../shared, or sanitized build)"
fi

if [ $fails -eq 0 ]; then
  rm -rf "$TMP"
  echo "all passed"
  exit 0
fi
echo "$fails failure(s); files kept in $TMP"
exit 1
