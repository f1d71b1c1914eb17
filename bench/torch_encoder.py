#!/usr/bin/python3
"""The PyTorch equivalent of `nic bench encoder`: the same encoder on random
8-bit RGB patches, written the way a PyTorch user would: uint8 -> float in
[-1, 1], eval() + inference_mode for inference, a dense 2-class head +
cross-entropy + Adam for training. Prints the same two closing lines as nic.

--arch nic (default): the NIC encoder (2x2 average pool, 4 x [conv 3x3/2
valid 128 + LeakyReLU(0.2) + BatchNorm], flatten, dense 1152 -> 128).
--arch resnet-small: src/encoder/arch_resnet.c layer for layer (2x2 average
pool, conv 3x3/2 32 + BN + ReLU stem, four stages of two basic blocks at 32,
64, 128, 256 filters, global average pool, dense 256 -> 128)."""
import argparse
import time

import torch
import torch.nn as nn


def encoder():
    layers = [nn.AvgPool2d(2)]
    cin = 3
    for _ in range(4):
        layers += [nn.Conv2d(cin, 128, 3, stride=2), nn.LeakyReLU(0.2),
                   nn.BatchNorm2d(128, eps=1e-3, momentum=0.01)]
        cin = 128
    # NHWC flatten as in Keras; a permute keeps the weights interchangeable
    layers += [Permute(), nn.Flatten(), nn.Linear(1152, 128)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN plus the identity or a 1x1/stride
    conv + BN projection, then ReLU; convs without bias (the BN has one), BN
    eps 1e-5 and momentum 0.1 (nic's 0.9 in the Keras sense), the branch's
    last BN starting at gamma 0, as nic_encoder_build_resnet_small."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        nn.init.zeros_(self.b2.weight)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))

    def forward(self, x):
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return torch.relu(y + (x if self.proj is None else self.proj(x)))


def resnet_small(embed_dim=128):
    layers = [nn.AvgPool2d(2), nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
              nn.BatchNorm2d(32, eps=1e-5, momentum=0.1), nn.ReLU()]
    cin = 32
    for stage, width in enumerate((32, 64, 128, 256)):
        for blk in range(2):
            layers.append(BasicBlock(cin, width, 2 if stage > 0 and blk == 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, embed_dim)]
    return nn.Sequential(*layers)


def forward_mflop(m):
    """Forward MFLOP per 128x128 patch, counted as nic does: 2 per
    multiply-add of every conv and dense layer."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total += 2 * out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += 2 * out.numel() * mod.in_features

    hs = [x.register_forward_hook(hook) for x in m.modules()
          if isinstance(x, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        m.eval()(torch.zeros(1, 3, 128, 128))
    for h in hs:
        h.remove()
    return total / 1e6


ARCHS = {"nic": encoder, "resnet-small": resnet_small}


class Permute(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def to_input(u8):
    return u8.float().div_(255.0).mul_(2.0).sub_(1.0)


def measure(step, batch, seconds):
    for _ in range(2):
        step()
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += batch
        if n >= 2 * batch and time.perf_counter() - t0 >= seconds:
            break
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", choices=["inference", "training"])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="nic")
    a = ap.parse_args()
    threads = a.threads or torch.get_num_interop_threads() or 1
    if a.threads == 0:
        import os
        threads = os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    build = ARCHS[a.arch]
    print(f"torch={torch.__version__} threads={torch.get_num_threads()} arch={a.arch} "
          f"forward_mflop_per_patch={forward_mflop(build()):.1f}")
    inf = trn = None
    if a.only in (None, "inference"):
        m = build().eval()
        x8 = torch.randint(0, 256, (a.batch, 3, 128, 128), dtype=torch.uint8)

        def infer():
            with torch.inference_mode():
                m(to_input(x8))

        inf = measure(infer, a.batch, a.seconds)
        print(f"inference: batch {a.batch}, {inf:.1f} patches/s")
    if a.only in (None, "training"):
        m = nn.Sequential(build(), nn.Linear(128, 2)).train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
        x8 = torch.randint(0, 256, (a.train_batch, 3, 128, 128), dtype=torch.uint8)
        y = torch.arange(a.train_batch) % 2
        lossf = nn.CrossEntropyLoss()

        def train():
            opt.zero_grad(set_to_none=True)
            loss = lossf(m(to_input(x8)), y)
            loss.backward()
            opt.step()

        trn = measure(train, a.train_batch, a.seconds)
        print(f"training: batch {a.train_batch}, {trn:.1f} patches/s")
    if inf is not None:
        print(f"inference_patches_per_s={inf:.1f}")
    if trn is not None:
        print(f"training_patches_per_s={trn:.1f}")


if __name__ == "__main__":
    main()
