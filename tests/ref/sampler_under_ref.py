#!/usr/bin/python3
"""Reference selections for tests/test_sampler_under.c from imbalanced-learn 0.10.0
(Debian's /usr/bin/python3).  Run from the repository root:
    /usr/bin/python3 tests/ref/sampler_under_ref.py
Writes tests/data/fmnist_sub.csv (once; a Fashion-MNIST subset) and
tests/ref/sampler_under.txt, one line per case: "<data> <method> i i i ...",
the row indices imblearn keeps (its `sample_indices_`, in its order).

Data sets (no exact or near distance ties, checked below):
  wine_imb  scikit-learn's wine (tests/data/wine.csv) with class 2 cut to its
            first 20 rows: 59 / 71 / 20 rows, 13 features.
  bc_imb    scikit-learn's breast cancer with class 0 cut to its first 60 rows:
            60 / 357 rows, 30 features.
  fmnist    Fashion-MNIST training images, classes 0 / 6 / 2 (first 200 / 70 /
            30 in file order, rows with a distance tie dropped), 2x2 pixel sums
            (14 x 14 = 196 features), in tests/data/fmnist_sub.csv.
"""
import gzip
import os
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.neighbors import NearestNeighbors
from imblearn.under_sampling import (NearMiss, EditedNearestNeighbours, TomekLinks,
                                     RepeatedEditedNearestNeighbours, AllKNN,
                                     NeighbourhoodCleaningRule, InstanceHardnessThreshold)

warnings.simplefilter("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")
FMNIST = "/usr/share/datasets/fashion-mnist"


def load(name):
    with open(os.path.join(DATA, name)) as f:
        n, d = map(int, f.readline().split(",")[:2])
        rows = [list(map(float, line.split(","))) for line in f if line.strip()]
    a = np.array(rows)
    assert a.shape == (n, d + 1)
    return a[:, :d], a[:, d].astype(np.int64)


def subset(X, y, cls, keep):
    """Keep only the first `keep` rows of class `cls` (the C test does the same)."""
    rows = np.flatnonzero(y == cls)
    mask = np.ones(len(y), bool)
    mask[rows[keep:]] = False
    return X[mask], y[mask]


def tie_rows(X, rel=1e-9):
    """Rows whose sorted distances to the others have a (near) tie."""
    sq = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    bad = []
    for i in range(len(X)):
        d = np.sort(np.delete(sq[i], i))
        gap = np.diff(d)
        if np.any(gap <= rel * np.maximum(d[1:], 1e-300)):
            bad.append(i)
    return bad


def fmnist_subset():
    path = os.path.join(DATA, "fmnist_sub.csv")
    if os.path.exists(path):
        return load("fmnist_sub.csv")
    with gzip.open(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")) as f:
        img = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(FMNIST, "train-labels-idx1-ubyte.gz")) as f:
        lab = np.frombuffer(f.read(), np.uint8, offset=8)
    idx = np.concatenate([np.flatnonzero(lab == c)[:n] for c, n in [(0, 215), (6, 80), (2, 36)]])
    idx.sort()
    X = img[idx].astype(np.int64).reshape(-1, 14, 2, 14, 2).sum((2, 4)).reshape(len(idx), 196)
    y = lab[idx].astype(np.int64)
    while True:
        bad = tie_rows(X.astype(float))
        if not bad:
            break
        X = np.delete(X, bad[0], 0)
        y = np.delete(y, bad[0], 0)
    # trim to 200 / 70 / 30 (first rows of each class in file order)
    keep = np.concatenate([np.flatnonzero(y == c)[:n] for c, n in [(0, 200), (6, 70), (2, 30)]])
    keep.sort()
    X, y = X[keep], y[keep]
    with open(path, "w") as f:
        f.write("%d,%d,fashion-mnist 2x2 pixel sums\n" % X.shape)
        for r, l in zip(X, y):
            f.write(",".join(map(str, r)) + ",%d\n" % l)
    return X.astype(float), y


def nearmiss_gaps(X, y, version, k=3, k3=3):
    """Smallest relative gap between consecutive NearMiss scores of a class
    (the order is part of the output, so near ties would make it ambiguous)."""
    cnt = {c: (y == c).sum() for c in np.unique(y)}
    mino = min(cnt, key=cnt.get)
    Xm = X[y == mino]
    worst = np.inf
    for c in cnt:
        if c == mino:
            continue
        Xc = X[y == c]
        D = np.sqrt(((Xc[:, None, :] - Xm[None, :, :]) ** 2).sum(-1))
        D.sort(1)
        if version == 3:
            D3 = np.sqrt(((Xm[:, None, :] - Xc[None, :, :]) ** 2).sum(-1))
            pre = np.unique(np.argsort(D3, 1)[:, :k3])
            D = D[pre]
        s = np.sort(D[:, -k:].sum(1) if version == 2 else D[:, :k].sum(1))
        g = np.diff(s) / s[1:]
        worst = min(worst, g.min())
    return worst


def ncl_fixed(X, y, k=3, kind="mode", thr=0.5):
    """NCL as the paper (and libeffml): A1 = majority-vote ENN removals; A2 =
    neighbours of misclassified minority rows in classes with
    |C| >= thr * |minority| (imblearn 0.10: |C| > thr * n_samples, #764)."""
    e = EditedNearestNeighbours(n_neighbors=k, kind_sel="mode").fit(X, y)
    e.fit_resample(X, y)
    drop = np.ones(len(y), bool)
    drop[e.sample_indices_] = False
    cnt = {c: (y == c).sum() for c in np.unique(y)}
    mino = min(cnt, key=cnt.get)
    clean = [c for c in cnt if c != mino and cnt[c] >= thr * cnt[mino]]
    rows = np.flatnonzero(y == mino)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X[rows], return_distance=False)
    assert (nn[:, 0] == rows).all()
    nb = y[nn[:, 1:]]
    if kind == "mode":
        vals = np.array([np.bincount(r, minlength=y.max() + 1).argmax() for r in nb])
        wrong = vals != mino
    else:
        wrong = (nb != mino).any(1)
    for r in nn[wrong, 1:]:
        for j in r:
            if y[j] in clean:
                drop[j] = True
    return np.flatnonzero(~drop)


class FixedProba(ClassifierMixin, BaseEstimator):
    """A 'classifier' whose probabilities depend on the test row only, so the
    instance-hardness selection does not depend on the (random) folds.  The C
    test computes the same formulas."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        if len(self.classes_) == 2:
            s = 1.0 / (1.0 + np.exp(-(X[:, 0] - 15.0) / 2.0))
            return np.column_stack([s, 1.0 - s])
        mu = np.array([13.7, 12.3, 13.1])
        e = np.exp(-((X[:, :1] - mu[None, :]) ** 2) / 0.5)
        return e / e.sum(1, keepdims=True)


def main():
    Xw, yw = load("wine.csv")
    Xb, yb = load("breast_cancer.csv")
    sets = [("wine_imb",) + subset(Xw, yw, 2, 20),
            ("bc_imb",) + subset(Xb, yb, 0, 60),
            ("fmnist",) + fmnist_subset()]
    lines = []
    for name, X, y in sets:
        X = X.astype(float)
        assert not tie_rows(X), name
        cases = []
        for v in (1, 2, 3):
            assert nearmiss_gaps(X, y, v) > 1e-9, (name, v)
            cases.append(("nearmiss%d" % v, NearMiss(version=v)))
        assert nearmiss_gaps(X, y, 1, k=5) > 1e-9
        cases.append(("nearmiss1_k5", NearMiss(version=1, n_neighbors=5)))
        cases += [("enn_all", EditedNearestNeighbours()),
                  ("enn_mode", EditedNearestNeighbours(kind_sel="mode")),
                  ("tomek", TomekLinks()),
                  ("renn_all", RepeatedEditedNearestNeighbours()),
                  ("renn_mode", RepeatedEditedNearestNeighbours(kind_sel="mode")),
                  ("renn_all_k5_it2", RepeatedEditedNearestNeighbours(n_neighbors=5, max_iter=2)),
                  ("allknn_all", AllKNN()),
                  ("allknn_mode", AllKNN(kind_sel="mode", n_neighbors=5)),
                  ("allknn_allowmin", AllKNN(n_neighbors=5, allow_minority=True)),
                  ("ncl_mode_010", NeighbourhoodCleaningRule(kind_sel="mode"))]
        for meth, s in cases:
            s.fit_resample(X, y)
            lines.append("%s %s %s" % (name, meth, " ".join(map(str, s.sample_indices_))))
        if name != "fmnist":
            s = InstanceHardnessThreshold(estimator=FixedProba(), random_state=0)
            s.fit_resample(X, y)
            lines.append("%s iht %s" % (name, " ".join(map(str, s.sample_indices_))))
        if name == "bc_imb":
            from sklearn.svm import SVC
            from imblearn.over_sampling import SVMSMOTE
            sv = SVC(gamma="scale").fit(X, y).support_
            lines.append("%s svc_support %s" % (name, " ".join(map(str, sv))))
            Xr, yr = SVMSMOTE(random_state=0).fit_resample(X, y)
            lines.append("%s svmsmote_counts %d %d" % (name, (yr == 0).sum(), (yr == 1).sum()))
        # NCL: the paper's threshold (what libeffml does), mode and the intended 'all'
        lines.append("%s ncl_mode %s" % (name, " ".join(map(str, ncl_fixed(X, y, kind="mode")))))
        lines.append("%s ncl_all %s" % (name, " ".join(map(str, ncl_fixed(X, y, kind="all")))))
    with open(os.path.join(HERE, "sampler_under.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("ok", len(lines))


if __name__ == "__main__":
    main()
