# Writes a tiny random patch encoder as a nic safetensors file
# (docs/model-format.md) for the CLI tests: 2x2 average pool, conv 4x4/4
# (8 filters, LeakyReLU), global average, dense 8 -> 6.
#   python3 tests/make_tiny_encoder.py OUT.safetensors
import json, struct, sys
import numpy as np
rng = np.random.default_rng(3)
tensors = {"conv.weight": rng.normal(0, 0.3, (8, 3, 4, 4)), "conv.bias": rng.normal(0, 0.1, 8),
           "fc.weight": rng.normal(0, 0.5, (6, 8)), "fc.bias": np.zeros(6)}
arch = {"input": [3, 128, 128], "nodes": [
    {"name": "pool", "kind": "pool", "inputs": [0], "kernel": [2, 2], "stride": [2, 2], "pool": "avg"},
    {"name": "conv", "kind": "conv2d", "inputs": [1], "out": 8, "kernel": [4, 4], "stride": [4, 4],
     "bias": True, "act": "leaky_relu", "alpha": 0.2},
    {"name": "gap", "kind": "globalpool", "inputs": [2], "pool": "avg"},
    {"name": "fc", "kind": "dense", "inputs": [3], "out": 6, "bias": True}]}
inp = {"channels": 3, "height": 128, "width": 128, "patch_size": 128, "mpp": 0.5,
       "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
header, data, off = {}, b"", 0
for name, a in tensors.items():
    b = a.astype("<f4").tobytes()
    header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
    data, off = data + b, off + len(b)
header["__metadata__"] = {"format": "nic", "nic_version": "0.1.0", "inference_only": "false",
                          "architecture": json.dumps(arch), "input": json.dumps(inp),
                          "encoder_name": json.dumps("tiny")}
h = json.dumps(header).encode()
h += b" " * ((8 - (8 + len(h)) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + data)
