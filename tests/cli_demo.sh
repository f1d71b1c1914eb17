#!/bin/bash
# nic demo on a tiny cohort (8 slides of 1024 px, 2 folds, 1 epoch) with a tiny
# random encoder written here with Python + NumPy: -h documents every flag,
# usage errors, the missing-model messages, the report and its figures, the
# last line (name=value pairs that parse), and resuming (finished stages are
# skipped, a changed option redoes what it affects). No timings are checked.
# Exits 77 (skipped) when the nic binary or Python with NumPy is missing.
set -u

NIC=${NIC_BIN:-build/nic}
SRC=${NIC_SRC:-.}
PY=/usr/bin/python3
[ -x "$NIC" ] || { echo "SKIP: $NIC not built"; exit 77; }
"$PY" -c "import numpy" 2>/dev/null || { echo "SKIP: $PY with numpy missing"; exit 77; }

T=$(mktemp -d /tmp/nic-cli-demo-XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

# --- a tiny encoder: 2x2 average pool, conv 4x4/4 (8 filters), global average,
# dense 8 -> 6, as a nic safetensors file (docs/model-format.md) -------------------
"$PY" "$(dirname "$0")/make_tiny_encoder.py" "$T/tiny.safetensors"
[ -s "$T/tiny.safetensors" ] || { echo "FAIL cannot write the test model"; exit 1; }
M="$T/tiny.safetensors"

# --- help and usage errors ---------------------------------------------------------
"$NIC" demo -h >"$T/h" 2>&1
check "demo -h exits 0" '[ $? -eq 0 ]'
missing=""
for f in --output --model --slides --size --lesion --folds --epochs --patience --heatmaps \
  --seed --threads --restart --quiet --help; do
  grep -q -- "$f" "$T/h" || missing="$missing $f"
done
check "demo -h explains every flag (missing:$missing)" '[ -z "$missing" ]'
"$NIC" help | grep -q "demo" && ok "nic help lists demo" || bad "nic help lists demo"
"$NIC" demo --bogus >/dev/null 2>&1
check "unknown flag: exit 2" '[ $? -eq 2 ]'
"$NIC" demo --lesion 0.5,0.1 --model "$M" >/dev/null 2>&1
check "--lesion HI < LO: exit 2" '[ $? -eq 2 ]'
"$NIC" demo --slides 6 --folds 4 --model "$M" >/dev/null 2>&1
check "too few slides for the folds: exit 2" '[ $? -eq 2 ]'
"$NIC" demo --model "$T/nothing.safetensors" -o "$T/x" >/dev/null 2>"$T/err"
rc=$?
check "missing --model file: exit 1 naming it" '[ $rc -eq 1 ] && grep -q nothing.safetensors "$T/err"'
if [ ! -e "$SRC/models/nic-default.safetensors" ]; then
  "$NIC" demo -o "$T/x" >/dev/null 2>"$T/err"
  rc=$?
  check "no bundled encoder: exit 1, says where it looked and how to get one" \
    '[ $rc -eq 1 ] && grep -q "looked for" "$T/err" && grep -q "nic-default.safetensors" "$T/err" && grep -q "nic encoder import" "$T/err"'
fi

# --- a tiny demo ------------------------------------------------------------------------
D="$T/demo"
args=(demo -o "$D" --model "$M" --slides 8 --size 1024 --folds 2 --epochs 1 --heatmaps 2
  --threads 1 --quiet) # one thread: robust on a busy machine (no OpenMP barrier spinning)
"$NIC" "${args[@]}" >"$T/out1" 2>"$T/err1"
rc=$?
check "tiny demo exits 0" '[ $rc -eq 0 ]'
[ $rc -eq 0 ] || { cat "$T/out1" "$T/err1"; }
for s in simulate compress train evaluate heatmaps report; do
  grep -q "^== $s" "$T/out1" || bad "stage $s is printed"
done
for f in report.md roc.png learning_curves.png slides/labels.csv run/predictions.csv \
  run/metrics.json run/fold_0.safetensors run/fold_1.safetensors features/compress_report.csv; do
  [ -s "$D/$f" ] || bad "$f written"
done
ls "$D"/features/*.h5 >/dev/null 2>&1 && [ "$(ls "$D"/features/*.h5 | wc -l)" -eq 8 ] &&
  ok "8 compressed slides" || bad "8 compressed slides"

# Every PNG is a PNG, and every figure the report links exists.
"$PY" - "$D" >"$T/pycheck" 2>&1 <<'EOF'
import os, re, sys
d = sys.argv[1]
rep = open(os.path.join(d, "report.md")).read()
links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", rep)
assert "roc.png" in links, links
assert "learning_curves.png" in links, links
heat = [l for l in links if l.startswith("heatmaps/")]
assert len(heat) == 4, heat  # 2 slides x (Grad-CAM, truth)
for l in links:
    p = os.path.join(d, l)
    assert os.path.isfile(p), "missing figure " + l
    assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n", "not a PNG: " + l
for needle in ["Slide-level AUC", "95% CI", "| AUC |", "| fold |", "## Timings", "| train |",
               "nic demo -o"]:
    assert needle in rep, "report lacks " + needle
print("report ok")
EOF
check "report: figures exist and are PNGs, metrics, folds, timings, command line" \
  'grep -q "report ok" "$T/pycheck" || { cat "$T/pycheck"; false; }'

# The last line: name=value pairs, the AUC first, inside its interval.
parse_last() {
  "$PY" - "$1" <<'EOF'
import math, sys
last = open(sys.argv[1]).read().strip().splitlines()[-1]
kv = dict(t.split("=", 1) for t in last.split())
assert last.startswith("auc="), last
auc, lo, hi = float(kv["auc"]), float(kv["auc_lo"]), float(kv["auc_hi"])
assert 0 <= lo <= auc <= hi <= 1, last
assert kv["n"] == "8" and kv["folds"] == "2", last
for k in ["auc_mean", "bacc", "acc", "seconds", "report"]:
    assert k in kv, k
float(kv["seconds"])
print(kv["auc"])
EOF
}
auc1=$(parse_last "$T/out1" 2>"$T/perr")
check "last line parses (auc=$auc1)" '[ -n "$auc1" ] || { cat "$T/perr"; false; }'

# --- resume: the same command skips the finished stages ------------------------------------
"$NIC" "${args[@]}" >"$T/out2" 2>&1
rc=$?
check "second run exits 0" '[ $rc -eq 0 ]'
check "second run skips simulate and train" \
  'grep -q "== simulate: done before" "$T/out2" && grep -q "== train: done before" "$T/out2"'
check "second run compresses nothing" 'grep -q "0 compressed, 8 already done" "$T/out2"'
auc2=$(parse_last "$T/out2" 2>/dev/null)
check "second run gives the same AUC ($auc2)" '[ "$auc1" = "$auc2" ]'

# A changed training option redoes training only.
"$NIC" "${args[@]}" --epochs 2 >"$T/out3" 2>&1
rc=$?
check "--epochs 2 reruns training only" \
  '[ $rc -eq 0 ] && grep -q "== simulate: done before" "$T/out3" && ! grep -q "== train: done before" "$T/out3" && grep -q "0 compressed, 8 already done" "$T/out3"'
# --restart redoes everything.
"$NIC" "${args[@]}" --restart >"$T/out4" 2>&1
rc=$?
check "--restart redoes every stage with the same result" \
  '[ $rc -eq 0 ] && ! grep -q "done before" "$T/out4" && grep -q "8 compressed" "$T/out4" && [ "$(parse_last "$T/out4" 2>/dev/null)" = "$auc1" ]'

if [ $fails -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
