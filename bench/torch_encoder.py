#!/usr/bin/python3
"""The PyTorch equivalent of `nic bench encoder`: the same NIC encoder
(2x2 average pool, 4 x [conv 3x3/2 valid 128 + LeakyReLU(0.2) + BatchNorm],
flatten, dense 1152 -> 128) on random 8-bit RGB patches, written the way a
PyTorch user would: uint8 -> float in [-1, 1], eval() + inference_mode for
inference, a dense 2-class head + cross-entropy + Adam for training.
Prints the same two closing lines as nic."""
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
    a = ap.parse_args()
    threads = a.threads or torch.get_num_interop_threads() or 1
    if a.threads == 0:
        import os
        threads = os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(f"torch={torch.__version__} threads={torch.get_num_threads()}")
    inf = trn = None
    if a.only in (None, "inference"):
        m = encoder().eval()
        x8 = torch.randint(0, 256, (a.batch, 3, 128, 128), dtype=torch.uint8)

        def infer():
            with torch.inference_mode():
                m(to_input(x8))

        inf = measure(infer, a.batch, a.seconds)
        print(f"inference: batch {a.batch}, {inf:.1f} patches/s")
    if a.only in (None, "training"):
        m = nn.Sequential(encoder(), nn.Linear(128, 2)).train()
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
