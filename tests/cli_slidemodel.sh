#!/usr/bin/env bash
# nic train / predict / eval / heatmap from the command line, on a toy cohort
# of compressed slides that test_slidemodel writes (--toy DIR): positives hold
# a small cluster of cells with shifted embeddings. Checks the outputs, the
# output formats, determinism, split reuse and the errors on bad inputs.
set -uo pipefail

NIC_BIN=${NIC_BIN:?NIC_BIN must point at the nic executable}
[ -x "$NIC_BIN" ] || { echo "$NIC_BIN is not an executable"; exit 1; }
TOY_BIN="$(dirname "$NIC_BIN")/test_slidemodel"
if [ ! -x "$TOY_BIN" ]; then
  echo "SKIP: $TOY_BIN not built"
  exit 77
fi

TMP=$(mktemp -d /tmp/nic-cli-slidemodel-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
section_fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
ok() {
  [ $fails -eq $section_fails ] && echo "ok   $*" || echo "FAIL $*"
  section_fails=$fails
}
# Small, fast models; one thread (see test_slidemodel.c).
EPOCHS=15
CNN="--model nic --crop 16 --filters 16 --hidden 16 --dropout 0.1 --lr 0.01 --batch 8 --test-crops 4 -t 1 -q"
MIL="--model abmil --hidden 16 --attn-dim 8 --lr 0.003 --batch 8 -t 1 -q"

"$TOY_BIN" --toy "$TMP/toy" >"$TMP/out" 2>&1 || { cat "$TMP/out"; echo "cannot make the toy cohort"; exit 1; }
TOY="$TMP/toy"

# ---- help and usage errors ----------------------------------------------------------
for c in train predict eval heatmap; do
  "$NIC_BIN" $c -h >"$TMP/h" 2>&1 || fail "nic $c -h exits non-zero"
done
"$NIC_BIN" train -h >"$TMP/h"
for w in --features --labels --task --folds --splits --model --epochs --lr --patience --balance \
  --crop --strided --test-crops --seed --monitor --smooth --scores; do
  grep -q -- "$w" "$TMP/h" || fail "train -h does not explain $w"
done
"$NIC_BIN" help | grep -q "heatmap" || fail "nic help does not list heatmap"
"$NIC_BIN" train --features "$TOY" --labels "$TOY/labels.csv" -o "$TMP/x" 2>"$TMP/err"
[ $? -eq 2 ] && grep -q -- "--task" "$TMP/err" || fail "train without --task should exit 2"
"$NIC_BIN" train --features "$TOY" --labels "$TOY/labels.csv" --task ordinal -o "$TMP/x" 2>"$TMP/err"
[ $? -eq 2 ] && grep -q "unknown task 'ordinal'" "$TMP/err" || fail "unknown task: $(cat "$TMP/err")"
"$NIC_BIN" eval 2>/dev/null
[ $? -eq 2 ] || fail "eval without a file should exit 2"
"$NIC_BIN" train -f "$TOY" -l "$TOY/labels.csv" -T binary --strided 9 -o "$TMP/x" $CNN 2>"$TMP/err"
[ $? -ne 0 ] && grep -q "strided blocks must be 0-8, got 9" "$TMP/err" || fail "--strided 9: $(cat "$TMP/err")"
ok "help and usage errors"

# ---- bad inputs --------------------------------------------------------------------------
printf 'case_id,slide,label\na,toy_000,tumour\n' >"$TMP/nocol.csv"
"$NIC_BIN" train -f "$TOY" -l "$TMP/nocol.csv" -T binary -o "$TMP/x" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "nocol.csv" "$TMP/err" && grep -q "'slide_id'" "$TMP/err" ||
  fail "a labels CSV without slide_id: $(cat "$TMP/err")"
# a labelled slide without features file is reported and left out
{ cat "$TOY/labels.csv"; echo "case_999,toy_999,tumour"; } >"$TMP/missing.csv"
"$NIC_BIN" train -f "$TOY" -l "$TMP/missing.csv" -T binary -o "$TMP/miss" $MIL -e 1 >"$TMP/out" 2>"$TMP/err" ||
  fail "train with a missing features file failed: $(cat "$TMP/err")"
grep -q "toy_999.h5" "$TMP/err" && grep -q "skipped" "$TMP/err" || fail "the missing file is not reported"
grep -q "1 without features file" "$TMP/out" || fail "the summary does not count the missing slide"
"$NIC_BIN" predict -m "$TOY/labels.csv" -f "$TOY" -o "$TMP/p.csv" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "labels.csv" "$TMP/err" || fail "predict with a bad model: $(cat "$TMP/err")"
ok "bad inputs"

# ---- train: cross-validated NIC CNN -------------------------------------------------------
RUN="$TMP/run"
"$NIC_BIN" train -f "$TOY" -l "$TOY/labels.csv" -T binary -k 2 -e $EPOCHS -o "$RUN" $CNN >"$TMP/train.out" 2>&1 ||
  { cat "$TMP/train.out"; fail "train failed"; }
for f in splits_0.csv splits_1.csv fold_0.safetensors fold_1.safetensors predictions.csv metrics.json; do
  [ -s "$RUN/$f" ] || fail "train did not write $f"
done
last=$(tail -n 1 "$TMP/train.out")
[[ "$last" =~ ^auc=[0-9.]+\ auc_sd=[0-9.]+\ bacc= ]] || fail "train's last line: '$last'"
auc=$(echo "$last" | sed 's/^auc=\([0-9.]*\).*/\1/')
awk -v a="$auc" 'BEGIN { exit !(a > 0.9) }' || fail "cross-validated AUC $auc <= 0.9"
head -n 1 "$RUN/splits_0.csv" | grep -qx ",train,val,test" || fail "splits_0.csv is not CLAM's format"
head -n 1 "$RUN/predictions.csv" | grep -qx "slide_id,label,score,fold" || fail "predictions.csv header"
[ "$(tail -n +2 "$RUN/predictions.csv" | wc -l)" -eq 40 ] || fail "out-of-fold predictions of 40 slides expected"
grep -q '"per_fold"' "$RUN/metrics.json" && grep -q '"auc"' "$RUN/metrics.json" || fail "metrics.json content"
ok "train (NIC CNN, 2 folds): $last"

# the run's splits can be given back; the folds are the same
"$NIC_BIN" train -f "$TOY" -l "$TOY/labels.csv" -T binary --splits "$RUN" -e 1 -o "$TMP/run2" $MIL >/dev/null 2>&1 ||
  fail "train --splits failed"
for k in 0 1; do cmp -s "$RUN/splits_$k.csv" "$TMP/run2/splits_$k.csv" || fail "splits_$k.csv differs after reuse"; done
ok "splits reused"

# ---- predict: deterministic ------------------------------------------------------------------
"$NIC_BIN" predict -m "$RUN/fold_0.safetensors" -f "$TOY" -l "$TOY/labels.csv" -o "$TMP/a.csv" -t 1 -q >/dev/null ||
  fail "predict failed"
"$NIC_BIN" predict -m "$RUN/fold_0.safetensors" -f "$TOY" -l "$TOY/labels.csv" -o "$TMP/b.csv" -t 1 -q >/dev/null
cmp -s "$TMP/a.csv" "$TMP/b.csv" || fail "two predictions of the same slides differ"
"$NIC_BIN" predict -m "$RUN/fold_0.safetensors" -f "$TOY" -o "$TMP/c.csv" -t 1 -q >/dev/null
[ "$(sed -n 2p "$TMP/c.csv" | cut -d, -f2)" = "" ] || fail "predictions without labels have a label"
[ "$(tail -n +2 "$TMP/c.csv" | wc -l)" -eq 40 ] || fail "predict on a folder: 40 rows expected"
ok "predict"

# ---- eval: report format and plot ---------------------------------------------------------------
"$NIC_BIN" eval "$RUN/predictions.csv" >"$TMP/eval.out" 2>&1 || fail "eval failed"
grep -q "^fold 0 " "$TMP/eval.out" && grep -q "^mean +- sd" "$TMP/eval.out" && grep -q "^pooled " "$TMP/eval.out" ||
  fail "eval report: $(cat "$TMP/eval.out")"
tail -n 1 "$TMP/eval.out" | grep -Eq '^auc=[0-9.]+ auc_sd=[0-9.]+ bacc=[0-9.]+ acc=[0-9.]+ kappa=' ||
  fail "eval's last line: $(tail -n 1 "$TMP/eval.out")"
[ -s "$RUN/predictions_roc.png" ] || fail "no ROC plot"
"$NIC_BIN" eval "$TMP/a.csv" --plot "$TMP/roc.png" --resamples 200 >/dev/null && [ -s "$TMP/roc.png" ] ||
  fail "eval --plot"
ok "eval"

# ---- heatmaps ------------------------------------------------------------------------------------
"$NIC_BIN" heatmap -m "$RUN/fold_0.safetensors" -f "$TOY" --slide toy_000 -o "$TMP/hm" -t 1 -q >/dev/null ||
  fail "heatmap failed"
[ -s "$TMP/hm/toy_000_heatmap.png" ] && [ -s "$TMP/hm/toy_000_heatmap.geojson" ] || fail "heatmap files"
grep -q '"measurements":{"score":' "$TMP/hm/toy_000_heatmap.geojson" || fail "no score measurement"
grep -q '"type":"Polygon"' "$TMP/hm/toy_000_heatmap.geojson" || fail "no tiles"
[ -e "$TMP/hm/toy_003_heatmap.png" ] && fail "--slide did not restrict the slides"
ok "heatmap"

# ---- survival and regression with ABMIL ----------------------------------------------------------
S="$TOY/survival"
"$NIC_BIN" train -f "$S" -l "$S/labels.csv" -T survival -k 2 -e $EPOCHS -o "$TMP/surv" $MIL >"$TMP/s.out" 2>&1 ||
  { cat "$TMP/s.out"; fail "survival training failed"; }
tail -n 1 "$TMP/s.out" | grep -Eq '^c_index=[0-9.]+ c_index_sd=' || fail "survival last line: $(tail -n 1 "$TMP/s.out")"
"$NIC_BIN" eval "$TMP/surv/predictions.csv" >/dev/null && [ -s "$TMP/surv/predictions_km.png" ] ||
  fail "no Kaplan-Meier plot"
head -n 1 "$TMP/surv/predictions.csv" | grep -qx "slide_id,label,score,time,event,fold" ||
  fail "survival predictions header"
awk -F, 'NR == 1 { print; next } { v = ($3 == "tumour") ? 0.8 : 0.2; printf "%s,%s,%.3f\n", $1, $2, v + (NR % 7) * 0.01 }' \
  "$TOY/labels.csv" | sed '1s/.*/case_id,slide_id,label/' >"$TMP/reg.csv"
"$NIC_BIN" train -f "$TOY" -l "$TMP/reg.csv" -T regression -e 3 -o "$TMP/reg" $MIL >"$TMP/r.out" 2>&1 ||
  { cat "$TMP/r.out"; fail "regression training failed"; }
tail -n 1 "$TMP/r.out" | grep -Eq '^spearman=' || fail "regression last line: $(tail -n 1 "$TMP/r.out")"
[ -s "$TMP/reg/model.safetensors" ] || fail "a single split writes model.safetensors"
ok "survival and regression (ABMIL)"

# ---- the cluster detector: train, predict, heatmap -------------------------------------------------
CL="--model cluster --crop 16 --batch 8 --test-crops 4 -t 1 -q"
"$NIC_BIN" train -f "$TOY" -l "$TOY/labels.csv" -T binary --splits "$RUN" -e $EPOCHS -o "$TMP/cl" $CL \
  >"$TMP/cl.out" 2>&1 || fail "train --model cluster: $(tail -n 3 "$TMP/cl.out")"
last=$(tail -n 1 "$TMP/cl.out")
auc=$(echo "$last" | sed -E 's/^auc=([0-9.]+).*/\1/')
awk -v a="$auc" 'BEGIN { exit !(a >= 0.9) }' || fail "cluster model AUC $auc < 0.9: $last"
grep -q '"model": *"cluster"' "$TMP/cl/metrics.json" && grep -q '"smooth": *3' "$TMP/cl/metrics.json" ||
  fail "metrics.json of the cluster run"
"$NIC_BIN" predict -m "$TMP/cl/fold_0.safetensors" -f "$TOY" -o "$TMP/cl.csv" -t 1 -q >/dev/null &&
  [ "$(tail -n +2 "$TMP/cl.csv" | wc -l)" -eq 40 ] || fail "predict with a cluster model"
"$NIC_BIN" heatmap -m "$TMP/cl/fold_0.safetensors" -f "$TOY" --slide toy_000 -o "$TMP/clhm" -t 1 -q >/dev/null &&
  [ -s "$TMP/clhm/toy_000_heatmap.png" ] || fail "heatmap of a cluster model"
"$NIC_BIN" train -f "$TOY" -l "$TOY/labels.csv" -T binary -o "$TMP/x" $CL --smooth 4 2>"$TMP/err"
[ $? -ne 0 ] && grep -q "smooth odd" "$TMP/err" || fail "--smooth 4: $(cat "$TMP/err")"
ok "cluster model: $last"

[ $fails -eq 0 ] && echo "all passed" || echo "$fails failed"
[ $fails -eq 0 ]
