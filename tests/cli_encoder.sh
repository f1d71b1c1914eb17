#!/usr/bin/env bash
# nic encoder import / embed / info / convert from the command line, on the published
# multitask-4 encoder and its reference embedding in ../shared. Skipped
# (exit 77) when $NIC_SHARED is missing.
set -uo pipefail

NIC_BIN=${NIC_BIN:?NIC_BIN must point at the nic executable}
SHARED=${NIC_SHARED:-../shared}
MODELS="$SHARED/models/nic-published"
[ -x "$NIC_BIN" ] || { echo "$NIC_BIN is not an executable"; exit 1; }
if [ ! -f "$MODELS/encoder_multitask-4.h5" ]; then
  echo "SKIP: $MODELS/encoder_multitask-4.h5 not found (set NIC_SHARED)"
  exit 77
fi

TMP=$(mktemp -d /tmp/nic-cli-encoder-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
section_fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
# Ends a group of checks: "ok" when none of them failed since the last one.
ok() {
  [ $fails -eq $section_fails ] && echo "ok   $*" || echo "FAIL $*"
  section_fails=$fails
}

# ---- help: every subcommand explains its flags ---------------------------------
"$NIC_BIN" encoder -h >"$TMP/h" 2>&1 || fail "nic encoder -h exits non-zero"
for w in import embed info; do
  grep -q "$w" "$TMP/h" || fail "nic encoder -h does not mention '$w'"
done
"$NIC_BIN" encoder import -h >"$TMP/h" 2>&1 || fail "import -h exits non-zero"
for w in --output --name --help; do
  grep -q -- "$w" "$TMP/h" || fail "import -h does not explain $w"
done
"$NIC_BIN" encoder embed -h >"$TMP/h" 2>&1 || fail "embed -h exits non-zero"
for w in --model --batch --threads --resize --no-optimize --help; do
  grep -q -- "$w" "$TMP/h" || fail "embed -h does not explain $w"
done
"$NIC_BIN" encoder info -h >/dev/null 2>&1 || fail "info -h exits non-zero"
"$NIC_BIN" encoder bogus >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown subcommand should exit 2"
"$NIC_BIN" encoder embed "$MODELS/example_128.jpg" >/dev/null 2>&1
[ $? -eq 2 ] || fail "embed without --model should exit 2"
ok "help and usage errors"

# ---- import -------------------------------------------------------------------
MODEL="$TMP/mt4.safetensors"
"$NIC_BIN" encoder import "$MODELS/encoder_multitask-4.h5" -o "$MODEL" >"$TMP/out" 2>&1 ||
  { cat "$TMP/out"; fail "import failed"; }
[ -s "$MODEL" ] || fail "import wrote nothing"
ls "$TMP"/mt4.safetensors.tmp.* >/dev/null 2>&1 && fail "import left a temporary file"
"$NIC_BIN" encoder import "$TMP/nothing.h5" -o "$TMP/x.safetensors" 2>"$TMP/err"
[ $? -eq 1 ] || fail "importing a missing file should exit 1"
grep -q "nothing.h5" "$TMP/err" || fail "the import error does not name the file"
"$NIC_BIN" encoder import "$MODELS/example_128.jpg" -o "$TMP/x.safetensors" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "not an HDF5 file" "$TMP/err" || fail "importing a JPEG: $(cat "$TMP/err")"
# The file as any safetensors reader sees it (the checks of the reference
# implementation: header bounds and alignment, string-only __metadata__,
# tensors tiling the data exactly), and one tensor's values.
python3 - "$MODEL" <<'EOF' || fail "the model file is not valid safetensors"
import array, json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
assert 8 + n <= len(b) and (8 + n) % 8 == 0 and b[8:9] == b"{", "header bounds"
h = json.loads(b[8:8 + n].decode("utf-8"))
meta = h.pop("__metadata__")
assert all(isinstance(v, str) for v in meta.values()), "metadata values must be strings"
assert meta["format"] == "nic" and json.loads(meta["architecture"])["input"] == [3, 128, 128]
spans = sorted(tuple(e["data_offsets"]) for e in h.values())
pos = 0
for s, e in spans:
    assert s == pos, "tensors must tile the data"
    pos = e
assert pos == len(b) - 8 - n, "trailing data"
e = h["bn1.running_var"]
assert e["dtype"] == "F32" and e["shape"] == [128]
v = array.array("f", b[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]])
if sys.byteorder != "little":
    v.byteswap()
assert len(v) == 128 and min(v) > 0, "running variances"
assert h["conv1.weight"]["shape"] == [128, 3, 3, 3] and h["embedding.weight"]["shape"] == [128, 1152]
EOF
"$NIC_BIN" encoder info "$MODEL" >"$TMP/info" || fail "info failed"
grep -q "nic-multitask-4" "$TMP/info" || fail "info does not show the encoder name"
grep -q "trainable parameters: 594944" "$TMP/info" || fail "info: wrong parameter count"
ok "import and info"

# ---- embed: format and values ----------------------------------------------------
IMG="$MODELS/example_128.jpg"
"$NIC_BIN" encoder embed --model "$MODEL" --threads 2 "$IMG" >"$TMP/emb" 2>"$TMP/err" ||
  { cat "$TMP/err"; fail "embed failed"; }
compare() { # compare FILE LINE: line LINE of FILE against the reference, 1e-3
  python3 - "$1" "$2" "$MODELS/example_128.multitask-4.embedding.txt" "$IMG" <<'EOF'
import sys
lines = open(sys.argv[1]).read().splitlines()
line = lines[int(sys.argv[2])].split(" ")
ref = [float(x) for x in open(sys.argv[3]).read().split()]
if line[0] != sys.argv[4]:
    sys.exit("first field is %r, not the image path" % line[0])
vals = [float(x) for x in line[1:]]
if len(vals) != len(ref):
    sys.exit("%d values, the reference has %d" % (len(vals), len(ref)))
err = max(abs(a - b) for a, b in zip(vals, ref))
print("  max abs error vs reference: %.3g" % err)
sys.exit(0 if err <= 1e-3 else "error %g > 1e-3" % err)
EOF
}
[ "$(wc -l <"$TMP/emb")" -eq 1 ] || fail "expected one output line"
compare "$TMP/emb" 0 || fail "embedding differs from the reference"
"$NIC_BIN" encoder embed --no-optimize --batch 1 --model "$MODEL" "$IMG" >"$TMP/emb2" &&
  compare "$TMP/emb2" 0 || fail "--no-optimize embedding differs from the reference"
ok "embed matches the reference"

# ---- a missing image: reported, the others still embedded, exit 1 --------------
"$NIC_BIN" encoder embed --model "$MODEL" --batch 2 "$IMG" "$TMP/missing.png" "$IMG" \
  >"$TMP/emb3" 2>"$TMP/err"
rc=$?
[ $rc -eq 1 ] || fail "a missing image should give exit status 1, got $rc"
grep -q "missing.png" "$TMP/err" || fail "the error does not name the missing image"
[ "$(wc -l <"$TMP/emb3")" -eq 2 ] || fail "the two good images should still print"
compare "$TMP/emb3" 0 && compare "$TMP/emb3" 1 || fail "embeddings next to a failure differ"
ok "a missing image is reported and skipped"

# ---- sizes: wrong size rejected without --resize; --resize area-averages ---------
python3 - "$TMP" <<'EOF' || fail "cannot write test images"
import struct, sys, zlib
def png(path, w, h, pix):  # 8-bit RGB PNG, no dependencies
    raw = b"".join(b"\0" + bytes(pix[y * w * 3:(y + 1) * w * 3]) for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
big = [((x // 2) * 7 + (y // 2) * 3 + c * 40) % 256 for y in range(256) for x in range(256) for c in range(3)]
png(sys.argv[1] + "/big.png", 256, 256, big)
# the same picture at 128 px: each 2x2 block of big.png is one pixel here
small = [(x * 7 + y * 3 + c * 40) % 256 for y in range(128) for x in range(128) for c in range(3)]
png(sys.argv[1] + "/small.png", 128, 128, small)
EOF
"$NIC_BIN" encoder embed --model "$MODEL" "$TMP/big.png" >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "256x256" "$TMP/err" || fail "a 256 px image should be rejected without --resize"
"$NIC_BIN" encoder embed --model "$MODEL" --resize "$TMP/big.png" "$TMP/small.png" >"$TMP/emb4" ||
  fail "--resize failed"
python3 - "$TMP/emb4" <<'EOF' || fail "--resize of a 2x image differs from the 1x image"
import sys
a, b = [[float(v) for v in l.split()[1:]] for l in open(sys.argv[1]).read().splitlines()]
sys.exit(0 if max(abs(x - y) for x, y in zip(a, b)) < 1e-5 else "differ")
EOF
ok "image sizes and --resize"

# ---- convert: float16 storage ------------------------------------------------------
"$NIC_BIN" encoder convert -h >"$TMP/h" 2>&1 || fail "convert -h exits non-zero"
for w in --output --dtype f16 bf16 f32 running; do
  grep -q -- "$w" "$TMP/h" || fail "convert -h does not explain $w"
done
"$NIC_BIN" encoder -h 2>&1 | grep -q convert || fail "nic encoder -h does not mention convert"
"$NIC_BIN" encoder convert "$MODEL" -o "$TMP/x.safetensors" --dtype f8 2>"$TMP/err"
[ $? -eq 2 ] && grep -q "f16, bf16 or f32" "$TMP/err" || fail "a bad --dtype should exit 2"
"$NIC_BIN" encoder convert "$MODEL" 2>/dev/null
[ $? -eq 2 ] || fail "convert without -o should exit 2"
"$NIC_BIN" encoder convert "$TMP/nothing.safetensors" -o "$TMP/x.safetensors" 2>/dev/null
[ $? -eq 1 ] || fail "converting a missing file should exit 1"
F16="$TMP/mt4-f16.safetensors"
"$NIC_BIN" encoder convert "$MODEL" -o "$F16" --dtype f16 >"$TMP/out" 2>&1 ||
  { cat "$TMP/out"; fail "convert failed"; }
grep -q "as F16" "$TMP/out" || fail "convert does not report what it stored"
python3 - "$MODEL" "$F16" <<'EOF' || fail "the f16 file"
import json, os, struct, sys
def header(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n])
a, h = header(sys.argv[1]), header(sys.argv[2])
assert a.pop("__metadata__")["architecture"] == h.pop("__metadata__")["architecture"]
for name, e in h.items():
    want = "F32" if "running_" in name else "F16"
    assert e["dtype"] == want, (name, e["dtype"])
    assert e["shape"] == a[name]["shape"], name
r = os.path.getsize(sys.argv[2]) / os.path.getsize(sys.argv[1])
assert 0.5 < r < 0.53, r
EOF
"$NIC_BIN" encoder info "$F16" | grep -q "trainable parameters: 594944" || fail "info on the f16 file"
"$NIC_BIN" encoder embed --model "$F16" "$IMG" >"$TMP/emb16" || fail "embed with the f16 file"
python3 - "$TMP/emb" "$TMP/emb16" <<'EOF' || fail "f16 embedding too far from the float32 one"
import sys
a, b = [[float(v) for v in open(f).read().split()[1:]] for f in sys.argv[1:3]]
rel = max(abs(x - y) for x, y in zip(a, b)) / max(abs(x) for x in a)
print("  f16 copy: max |diff| / max |embedding| = %.2e" % rel)
sys.exit(0 if rel < 5e-3 else "relative error %g" % rel)
EOF
"$NIC_BIN" encoder convert "$F16" -o "$TMP/back.safetensors" --dtype f32 >/dev/null &&
  "$NIC_BIN" encoder embed --model "$TMP/back.safetensors" "$IMG" >"$TMP/emb32" &&
  cmp -s <(cut -d' ' -f2- "$TMP/emb16") <(cut -d' ' -f2- "$TMP/emb32") ||
  fail "f16 -> f32 should give the f16 file's embeddings exactly"
ok "convert to float16 and back"

[ $fails -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all passed"
