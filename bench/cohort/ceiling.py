#!/usr/bin/env python3
"""How much slide-level signal an encoder leaves in a mosaic cohort.

    bench/cohort/ceiling.py COHORT_DIR [--folds 5] [--seed 0]

COHORT_DIR is one of bench/cohort/run.sh's mosaic folders (slides/ from
`nic simulate mosaic`, features/ from `nic compress`). The simulator knows
which cells are tumour, so this fits what a slide model trained on slide
labels can at best discover: a logistic regression on the patch embeddings
with the *patch* labels (k-fold by slide, so every slide is scored by a
classifier that never saw it), then turns each slide's patch logits z into a
slide score in several ways and prints the slide-level AUC of each:

  max         the largest z (one patch decides)
  top3        the mean of the 3 largest z
  sum-global  sum over the slide of relu(z - t)            (no geometry)
  sum-3x3     max over cells of the sum of relu(z - t) over the 3 x 3 cells
              around it (a cluster detector: what a CNN can learn)

with t the threshold, from the fitted classifier's logit scale, that does
best (reported). These are ceilings for models that must find the tumour
direction from 64 slide labels: if sum-3x3 is below a bar, no slide model on
these features reaches it. Needs numpy, h5py and torch (Debian's
python3-torch)."""
import argparse
import csv
import os
import sys

import h5py
import numpy as np
import torch


def load(cohort):
    slides_dir, feats_dir = os.path.join(cohort, "slides"), os.path.join(cohort, "features")
    label_of_cell = {}
    with open(os.path.join(slides_dir, "patches.csv")) as f:
        for p in csv.DictReader(f):
            label_of_cell[(p["slide_id"], int(p["grid_x"]), int(p["grid_y"]))] = int(p["class"])
    slides = []
    with open(os.path.join(slides_dir, "slides.csv")) as f:
        for r in csv.DictReader(f):
            path = os.path.join(feats_dir, r["slide_id"] + ".h5")
            if not os.path.exists(path):
                print(f"ceiling.py: {path} missing, slide left out", file=sys.stderr)
                continue
            with h5py.File(path, "r") as h:
                x, xy, step = h["features"][:], h["coords"][:], h.attrs["stride_level0"]
                gh, gw = int(h.attrs["grid_h"]), int(h.attrs["grid_w"])
            gx, gy = np.rint(xy[:, 0] / step).astype(int), np.rint(xy[:, 1] / step).astype(int)
            y = np.array([label_of_cell.get((r["slide_id"], a, b), 0) for a, b in zip(gx, gy)])
            slides.append(dict(label=int(r["label"]), x=x, gx=gx, gy=gy, y=y, gh=gh, gw=gw))
    return slides


def auc(scores, labels):
    s, l = np.asarray(scores, float), np.asarray(labels)
    p, n = s[l == 1], s[l == 0]
    if len(p) == 0 or len(n) == 0:
        return float("nan")
    return float((p[:, None] > n[None, :]).mean() + 0.5 * (p[:, None] == n[None, :]).mean())


def fit_logistic(x, y):
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt)
        loss = loss + 1e-3 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w.detach().numpy(), float(b)
    return lambda q: ((q - mu) / sd) @ w + b


def sum3x3(s, r):
    grid = np.zeros((s["gh"] + 2, s["gw"] + 2))
    grid[s["gy"] + 1, s["gx"] + 1] = r
    return max(grid[i - 1:i + 2, j - 1:j + 2].sum() for i, j in zip(s["gy"] + 1, s["gx"] + 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohort")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    slides = load(a.cohort)
    if len(slides) < a.folds:
        sys.exit(f"ceiling.py: {a.cohort}: {len(slides)} slides, need at least {a.folds}")
    fold = np.random.default_rng(a.seed).permutation(len(slides)) % a.folds
    z = [None] * len(slides)
    for k in range(a.folds):
        train = [s for s, f in zip(slides, fold) if f != k]
        score = fit_logistic(np.concatenate([s["x"] for s in train]),
                             np.concatenate([s["y"] for s in train]))
        for i, s in enumerate(slides):
            if fold[i] == k:
                z[i] = score(s["x"])
    labels = [s["label"] for s in slides]
    zs, ys = np.concatenate(z), np.concatenate([s["y"] for s in slides])
    print(f"{a.cohort}: {len(slides)} slides, {len(zs)} patches ({int(ys.sum())} tumour)")
    print(f"patch AUC (logistic on patch labels, {a.folds}-fold by slide): {auc(zs, ys):.4f}")
    print(f"slide AUC  max {auc([q.max() for q in z], labels):.4f}"
          f"  top3 {auc([np.sort(q)[-3:].mean() for q in z], labels):.4f}")
    # thresholds between the normal and tumour patches' typical logits
    lo, hi = np.median(zs[ys == 0]), np.median(zs[ys == 1])
    best = {}
    for t in np.linspace(lo, hi + (hi - lo), 9):
        g = auc([np.maximum(q - t, 0).sum() for q in z], labels)
        c = auc([sum3x3(s, np.maximum(q - t, 0)) for s, q in zip(slides, z)], labels)
        best["sum-global"] = max(best.get("sum-global", (0, 0)), (g, t))
        best["sum-3x3"] = max(best.get("sum-3x3", (0, 0)), (c, t))
    for name, (v, t) in best.items():
        print(f"slide AUC  {name} {v:.4f} (t = {t:.2f})")


if __name__ == "__main__":
    main()
