#!/usr/bin/python3
"""Choose the correctness-aware calibrator's hyperparameters on a validation split.

The calibrator of Liu, Wang, Zou, Zou & Zheng, "Optimizing Calibration by
Gaining Aware of Prediction Correctness" (2024, arXiv 2404.13016) is trained
with Adam; the authors' released code uses lr 1e-4 and 10 epochs over an
ImageNet-sized validation set.  This script picks lr, epochs and the
accuracy balancing of the loss on Fashion-MNIST, honestly:

- members as in examples/pipeline_fashion_mnist.c (MLP 784-64-10, AdamW
  lr 2e-3, batch 128, seeds 1, 2, 3) in two regimes: "overconfident" (10000
  training rows, 30 epochs: test ECE ~0.05, like the pipeline's members) and
  "short" (30000 rows, 4 epochs: already nearly calibrated); training rows
  come first in a fixed permutation of the official training set;
- validation = 10000 training rows used by neither, split in two halves:
  calibrators are *fitted* on half A and the setting is *chosen* on half B
  (lowest mean 15-bin ECE over the six members); the official test set is
  not looked at until the choice is made;
- then every calibrator (temperature scaling, CA with the old defaults, CA
  with the chosen setting) is refitted on the whole validation split and
  reported on the test set: ECE (15 equal-width bins, L1), adaptive ECE,
  multiclass Brier, AUGRC;
- views as the pipeline: rotation by +10 degrees (bilinear), shift by
  (+2, -1) pixels, contrast 0.6 about the image mean.

    EFFML_LIBRARY=build/lib/libeffml.so.0 PYTHONPATH=python \\
        /usr/bin/python3 examples/python/tune_correctness_aware.py > bench/results/ca_tuning.txt
"""
import gzip
import itertools
import os
import sys
import time

import numpy as np

from effml import nn
from effml.calibration import (CorrectnessAwareCalibrator, TemperatureScaling, augrc,
                               brier_score, confidence_correct, ece, softmax)

DATA = os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist")
GRID_LR = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
GRID_EPOCHS = (10, 50, 200, 1000)
GRID_BALANCE = (True, False)
OLD = dict(lr=1e-2, epochs=200, balance=True)  # the defaults before this tuning


def load(kind):
    with gzip.open(os.path.join(DATA, "%s-images-idx3-ubyte.gz" % kind)) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(DATA, "%s-labels-idx1-ubyte.gz" % kind)) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return (x / 255.0).astype(np.float32), y


def views_of(x):
    """The three transformed copies of 28x28 images (as the pipeline example)."""
    from scipy import ndimage
    im = x.reshape(-1, 28, 28)
    rot = ndimage.rotate(im, 10.0, axes=(2, 1), reshape=False, order=1, mode="constant", cval=0)
    sh = np.zeros_like(im)
    sh[:, :27, 2:] = im[:, 1:, :26]  # out[r, c] = in[r + 1, c - 2]
    m = im.mean(axis=(1, 2), keepdims=True)
    con = m + 0.6 * (im - m)
    return [np.clip(v, 0, 1).reshape(-1, 784).astype(np.float32) for v in (rot, sh, con)]


def metrics(p, y):
    conf, ok = confidence_correct(p, y)
    return dict(ece=ece(conf, ok), aece=ece(conf, ok, binning="adaptive"),
                brier=brier_score(p, y), augrc=augrc(conf, ok), acc=ok.mean())


REGIMES = (("overconfident", 10000, 30), ("short", 30000, 4))


def make_members(xtr_all, ytr_all, x_te, y_te, tr, va_a, va_b, vx, vx_te):
    members = []
    for seed in (1, 2, 3):
        m = nn.Sequential([nn.Dense(784, 64), nn.Activation("relu"), nn.Dense(64, 10)], seed=seed)
        nn.fit(m, xtr_all[tr[0]], ytr_all[tr[0]], optimizer=nn.AdamW(lr=2e-3), epochs=tr[1],
               batch_size=128, shuffle_seed=seed)
        d = {}
        for k, idx in (("a", va_a), ("b", va_b)):
            d[k] = (nn.predict(m, xtr_all[idx]), ytr_all[idx], [nn.predict(m, v) for v in vx[k]])
        d["te"] = (nn.predict(m, x_te), y_te, [nn.predict(m, v) for v in vx_te])
        members.append(d)
    return members


def mean_of(ms):
    return {k: float(np.mean([q[k] for q in ms])) for k in ms[0]}


def main():
    t0 = time.time()
    xtr_all, ytr_all = load("train")
    x_te, y_te = load("t10k")
    perm = np.random.default_rng(0).permutation(len(ytr_all))
    va = perm[30000:40000]
    va_a, va_b = va[:5000], va[5000:]
    vx = {k: views_of(xtr_all[idx]) for k, idx in (("a", va_a), ("b", va_b))}
    vx_te = views_of(x_te)
    print("# correctness-aware calibrator: hyperparameter choice on Fashion-MNIST")
    print("# members: MLP 784-64-10, AdamW 2e-3, batch 128, seeds 1,2,3; regimes "
          + ", ".join("%s (%d rows, %d epochs)" % r for r in REGIMES))
    print("# validation: 10000 other training rows = half A (fit) + half B (choose); test: t10k")
    members = {}
    for name, rows, ep in REGIMES:
        members[name] = make_members(xtr_all, ytr_all, x_te, y_te, (perm[:rows], ep), va_a, va_b,
                                     vx, vx_te)
        for i, d in enumerate(members[name]):
            print("# %s member %d: accuracy A %.4f  B %.4f  test %.4f" % (
                name, i + 1, *[(d[k][0].argmax(1) == d[k][1]).mean() for k in ("a", "b", "te")]))
    allm = [d for name, _, _ in REGIMES for d in members[name]]
    print("# grid: lr x epochs x balance, fitted on A, scored on B (mean over the members of "
          "each regime, then over both)")
    print("%-8s %-7s %-8s %-10s %-10s %-9s %-9s" % ("lr", "epochs", "balance", "ECE_B_over",
                                                     "ECE_B_short", "ECE_B", "AUGRC_B"))
    rows = []
    for lr, ep, bal in itertools.product(GRID_LR, GRID_EPOCHS, GRID_BALANCE):
        per = {}
        for name, _, _ in REGIMES:
            ms = []
            for d in members[name]:
                za, ya, va_views = d["a"]
                zb, yb, vb_views = d["b"]
                ca = CorrectnessAwareCalibrator(lr=lr, epochs=ep, balance=bal).fit(
                    za, ya, views=va_views)
                ms.append(metrics(ca.predict_proba(zb, vb_views), yb))
            per[name] = ms
        mean = mean_of(per["overconfident"] + per["short"])
        rows.append(((lr, ep, bal), mean))
        print("%-8g %-7d %-8d %.5f    %.5f    %.5f   %.5f" % (
            lr, ep, bal, mean_of(per["overconfident"])["ece"], mean_of(per["short"])["ece"],
            mean["ece"], mean["augrc"]))
        sys.stdout.flush()
    best = min(rows, key=lambda r: r[1]["ece"])
    (lr, ep, bal), _ = best
    ts_b = mean_of([metrics(TemperatureScaling().fit(d["a"][0], d["a"][1]).predict_proba(
        d["b"][0]), d["b"][1]) for d in allm])
    un_b = mean_of([metrics(softmax(d["b"][0]), d["b"][1]) for d in allm])
    print("# on B (all six members): uncalibrated ECE %.5f AUGRC %.5f, temperature scaling ECE "
          "%.5f AUGRC %.5f" % (un_b["ece"], un_b["augrc"], ts_b["ece"], ts_b["augrc"]))
    print("# chosen (lowest mean ECE on B): lr %g, epochs %d, balance %d" % (lr, ep, bal))
    print("# test (calibrators refitted on all 10000 validation rows), per member and mean:")
    print("%-27s %-14s %-9s %-9s %-9s %-9s" % ("calibrator", "member", "ECE", "ECE_adapt",
                                               "Brier", "AUGRC"))
    arms = [("uncalibrated", None), ("temperature", "ts"),
            ("CA old (1e-2, 200, bal 1)", OLD), ("CA chosen", dict(lr=lr, epochs=ep, balance=bal))]
    for name, _, _ in REGIMES:
        for aname, arm in arms:
            ms = []
            for i, d in enumerate(members[name]):
                z = np.vstack([d["a"][0], d["b"][0]])
                y = np.concatenate([d["a"][1], d["b"][1]])
                v = [np.vstack([p, q]) for p, q in zip(d["a"][2], d["b"][2])]
                zt, yt, vt = d["te"]
                if arm is None:
                    p = softmax(zt)
                elif arm == "ts":
                    p = TemperatureScaling().fit(z, y).predict_proba(zt)
                else:
                    p = CorrectnessAwareCalibrator(**arm).fit(z, y, views=v).predict_proba(zt, vt)
                q = metrics(p, yt)
                ms.append(q)
                print("%-27s %-14s %.5f   %.5f   %.5f   %.5f" % (
                    aname, "%s %d" % (name[:5], i + 1), q["ece"], q["aece"], q["brier"],
                    q["augrc"]))
            mean = mean_of(ms)
            print("%-27s %-14s %.5f   %.5f   %.5f   %.5f" % (
                aname, "%s mean" % name[:5], mean["ece"], mean["aece"], mean["brier"],
                mean["augrc"]))
    print("# %.0f s, load average %.1f" % (time.time() - t0, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
