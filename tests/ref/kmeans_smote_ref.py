#!/usr/bin/python3
"""Reference cluster selection and per-cluster counts of imbalanced-learn
0.10.0's KMeansSMOTE for tests/test_sampler_under.c (test_kmeans_smote_selection).
Run from the repository root:
    /usr/bin/python3 tests/ref/kmeans_smote_ref.py
Writes tests/data/kmsmote_blobs.csv and tests/ref/kmeans_smote.txt.

Data: five blobs in 2-D, 100 apart on the first axis (so every k-means with
5 clusters finds exactly the blobs), each with its own numbers of class 0
(majority) and class 1 rows and its own spread of the class-1 rows (so the
density weights differ):

  blob  class 0  class 1  class-1 fraction  why
  0       40       10       0.20            kept at threshold 0.1, not at "auto" (0.5)
  1       20       20       0.50            kept at both (0.5 is not < 0.5)
  2       50        2       0.04            below threshold 0.1
  3       10       30       0.75            kept at both
  4        1        2       0.67            above both thresholds, but 2 < k_neighbors + 1 = 3 rows

Rows are on circles (no random numbers), so the C test regenerates nothing.
Each line of kmeans_smote.txt: "<threshold> <exponent> c0 c1 c2 c3 c4", the
number of new class-1 rows imblearn puts in each blob (the blob of a new row
is read from its first coordinate), with kmeans_estimator = KMeans(5 clusters)
and density_exponent given explicitly: imblearn 0.10's "auto" exponent uses
the cluster's row count where the paper (and we) use the feature count, a
documented difference this file carves out.  The script also checks the
counts against the formulas (threshold filter, sparsity = mean pairwise
distance ** exponent / rows, ceil(n_new * weight)).
"""
import math
import os
import warnings

import numpy as np
from sklearn.cluster import KMeans
from imblearn.over_sampling import KMeansSMOTE

warnings.simplefilter("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")

BLOBS = [(40, 10, 1.0), (20, 20, 3.0), (50, 2, 1.0), (10, 30, 2.0), (1, 2, 1.0)]


def make():
    X, y, blob = [], [], []
    for b, (n0, n1, r1) in enumerate(BLOBS):
        cx = 100.0 * b
        for i in range(n0):
            a = 2 * math.pi * i / n0 + 0.3
            X.append((cx + 4.0 * math.cos(a) * (1 + 0.05 * (i % 3)), 4.0 * math.sin(a)))
            y.append(0)
            blob.append(b)
        for i in range(n1):
            a = 2 * math.pi * i / n1 + 0.1 * b
            rr = r1 * (0.5 + 0.5 * (i % 4) / 3.0)
            X.append((cx + rr * math.cos(a), rr * math.sin(a)))
            y.append(1)
            blob.append(b)
    return np.array(X), np.array(y, dtype=np.int64), np.array(blob)


def expected(X, y, blob, thr, ex, k=2):
    n_new = int((y == 0).sum() - (y == 1).sum())
    w = {}
    for b in range(len(BLOBS)):
        m = blob == b
        frac = (y[m] == 1).mean()
        if frac < thr or frac * m.sum() < k + 1:
            continue
        P = X[m & (y == 1)]
        D = np.sqrt(((P[:, None, :] - P[None, :, :]) ** 2).sum(-1))
        mean = D.sum() / (len(P) ** 2 - len(P))
        w[b] = mean ** ex / len(P)
    tot = sum(w.values())
    return [int(math.ceil(n_new * w[b] / tot)) if b in w else 0 for b in range(len(BLOBS))]


def main():
    X, y, blob = make()
    with open(os.path.join(DATA, "kmsmote_blobs.csv"), "w") as f:
        f.write(f"{len(y)},2,class_0,class_1\n")
        for (a, b), c in zip(X, y):
            f.write(f"{a!r},{b!r},{c}\n")
    lines = []
    for thr in (0.1, "auto"):
        for ex in (2.0, 0.5):
            s = KMeansSMOTE(k_neighbors=2, random_state=0, cluster_balance_threshold=thr,
                            density_exponent=ex,
                            kmeans_estimator=KMeans(n_clusters=5, n_init=10, random_state=0))
            Xr, yr = s.fit_resample(X, y)
            new = Xr[len(y):]
            assert (yr[len(y):] == 1).all()
            got = [int((np.abs(new[:, 0] - 100.0 * b) < 50).sum()) for b in range(len(BLOBS))]
            want = expected(X, y, blob, 0.5 if thr == "auto" else thr, ex)
            assert got == want, (thr, ex, got, want)
            t = "nan" if thr == "auto" else repr(thr)
            lines.append(f"{t} {ex!r} " + " ".join(map(str, got)))
    with open(os.path.join(HERE, "kmeans_smote.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
