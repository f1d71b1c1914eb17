#!/usr/bin/python3
"""The Python baseline for `nic compress`, written the way users write it
today (CLAM / TRIDENT style): openslide-python reads every patch at the best
pyramid level with read_region, PIL converts and resizes it, a torch
DataLoader with worker processes feeds batches to the PyTorch NIC encoder,
h5py writes features and coords.

So that both programs do exactly the same work, the grid and the kept cells
come from a file `nic compress` wrote for the same slide (its `coords` and
`patch_size_level0`), and the encoder weights from the same .safetensors
model, read with the small reader below (JSON header + numpy.frombuffer).

Prints one line: patches=N seconds=S patches_per_s=R (S from the first
read to the last write, after imports and model loading; the benchmark
script measures the whole process separately)."""
import argparse
import json
import math
import os
import struct
import time

import h5py
import numpy as np
import openslide
import torch
import torch.nn as nn
from PIL import Image

# ---- the model: safetensors -> torch ---------------------------------------


def read_safetensors(path):
    """Tensors (numpy float32) and metadata of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    dtypes = {"F32": np.float32, "F16": np.float16}
    tensors = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        a = np.frombuffer(data[b:e], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
        tensors[name] = torch.from_numpy(a.astype(np.float32))
    return tensors, meta


class NHWCFlatten(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


def activation(name, alpha):
    return {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(alpha), "sigmoid": nn.Sigmoid(),
            "tanh": nn.Tanh()}.get(name)


def build_model(path):
    """A torch nn.Sequential for a sequential nic model (the NIC encoders)."""
    w, meta = read_safetensors(path)
    arch = json.loads(meta["architecture"])
    layers = []
    for node in arch["nodes"]:
        kind, name = node["kind"], node["name"]
        act = None
        if kind == "pool":
            cls = nn.AvgPool2d if node["pool"] == "avg" else nn.MaxPool2d
            layers.append(cls(tuple(node["kernel"]), tuple(node["stride"])))
        elif kind == "conv2d":
            weight = w[name + ".weight"]
            pad = node["pad"]
            conv = nn.Conv2d(weight.shape[1] * node["groups"], weight.shape[0],
                             tuple(node["kernel"]), tuple(node["stride"]), (pad[0], pad[1]),
                             groups=node["groups"], bias=node["bias"])
            conv.weight.data.copy_(weight)
            if node["bias"]:
                conv.bias.data.copy_(w[name + ".bias"])
            layers.append(conv)
            act = activation(node["act"], node["alpha"])
        elif kind == "batchnorm":
            g = w[name + ".gamma"]
            bn = nn.BatchNorm2d(g.shape[0], eps=node["eps"])
            bn.weight.data.copy_(g)
            bn.bias.data.copy_(w[name + ".beta"])
            bn.running_mean.copy_(w[name + ".running_mean"])
            bn.running_var.copy_(w[name + ".running_var"])
            layers.append(bn)
        elif kind == "activation":
            act = activation(node["act"], node["alpha"])
        elif kind == "flatten":
            layers.append(NHWCFlatten() if node["order"] == "nhwc" else nn.Flatten())
        elif kind == "dense":
            weight = w[name + ".weight"]
            if layers and not isinstance(layers[-1], (NHWCFlatten, nn.Flatten)):
                layers.append(nn.Flatten())
            lin = nn.Linear(weight.shape[1], weight.shape[0], bias=node["bias"])
            lin.weight.data.copy_(weight)
            if node["bias"]:
                lin.bias.data.copy_(w[name + ".bias"])
            layers.append(lin)
            act = activation(node["act"], node["alpha"])
        elif kind in ("dropout", "spatial_dropout"):
            continue
        else:
            raise SystemExit(f"{path}: layer kind {kind} is not supported by the baseline")
        if act is not None:
            layers.append(act)
    info = json.loads(meta["input"])
    return nn.Sequential(*layers).eval(), info


# ---- the patches -----------------------------------------------------------


class Patches(torch.utils.data.Dataset):
    """Patch k: the level-0 square at coords[k] of patch_size_level0 pixels,
    read at the best level and resized to the encoder's patch size."""

    def __init__(self, slide_path, coords, size0, patch):
        self.slide_path, self.coords, self.size0, self.patch = slide_path, coords, size0, patch
        self.slide = None  # opened in each worker

    def __len__(self):
        return len(self.coords)

    def __getitem__(self, k):
        if self.slide is None:
            self.slide = openslide.OpenSlide(self.slide_path)
            ds = self.size0 / self.patch
            self.level = self.slide.get_best_level_for_downsample(ds)
            self.read = math.ceil(self.size0 / self.slide.level_downsamples[self.level])
        x, y = (int(v) for v in self.coords[k])
        img = self.slide.read_region((x, y), self.level, (self.read, self.read)).convert("RGB")
        if img.size != (self.patch, self.patch):
            img = img.resize((self.patch, self.patch), Image.BOX)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("slide")
    ap.add_argument("--grid", required=True, help="a nic compress output for this slide")
    ap.add_argument("--model", required=True, help="the .safetensors encoder")
    ap.add_argument("-o", "--output", required=True, help="the .h5 to write")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=os.cpu_count(),
                    help="DataLoader worker processes (default: one per core)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, info = build_model(a.model)
    mean = torch.tensor(info["mean"][:3]).view(1, 3, 1, 1)
    std = torch.tensor(info["std"][:3]).view(1, 3, 1, 1)
    with h5py.File(a.grid, "r") as f:
        coords = f["coords"][:]
        size0 = int(f["coords"].attrs["patch_size_level0"])
    data = Patches(a.slide, coords, size0, int(info["patch_size"]))
    loader = torch.utils.data.DataLoader(data, batch_size=a.batch, num_workers=a.workers,
                                         shuffle=False)
    t0 = time.perf_counter()
    feats = []
    with torch.inference_mode():
        for x8 in loader:
            x = (x8.float() / 255.0 - mean) / std
            feats.append(model(x).numpy())
    features = np.concatenate(feats)
    with h5py.File(a.output, "w") as f:
        f.create_dataset("features", data=features)
        f.create_dataset("coords", data=coords)
    dt = time.perf_counter() - t0
    print(f"patches={len(coords)} seconds={dt:.3f} patches_per_s={len(coords) / dt:.1f}")


if __name__ == "__main__":
    main()
