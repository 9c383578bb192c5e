#!/usr/bin/python3
"""Reference outputs for tests/test_sampler*.c, from imbalanced-learn 0.10 /
scikit-learn 1.2 / numpy (Debian's /usr/bin/python3).  Run from the repo root:
    /usr/bin/python3 tests/ref/sampler_ref.py
Writes small text files tests/ref/sampler_*.txt (one record per line)."""
import os
import warnings

import numpy as np
from sklearn.neighbors import NearestNeighbors
from imblearn.over_sampling import SMOTE, RandomOverSampler, BorderlineSMOTE, ADASYN
from imblearn.utils import check_sampling_strategy
from imblearn.under_sampling import RandomUnderSampler, TomekLinks, EditedNearestNeighbours

warnings.simplefilter("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")


def load(name):
    with open(os.path.join(DATA, name)) as f:
        n, d = map(int, f.readline().split(",")[:2])
        rows = [list(map(float, line.split(","))) for line in f if line.strip()]
    a = np.array(rows)
    assert a.shape == (n, d + 1)
    return a[:, :d], a[:, d].astype(np.int64)


def out(name):
    return open(os.path.join(HERE, name), "w")


# 1. sampling_strategy dictionaries (imbalanced-learn `check_sampling_strategy`).  Line: "<sampler> <strategy> l:v l:v ..."
y3 = np.array([0] * 10 + [1] * 4 + [2] * 2)
ybin = np.array([0] * 100 + [1] * 28)
X3 = np.random.RandomState(0).randn(len(y3), 2)
Xbin = np.random.RandomState(0).randn(len(ybin), 2)
with out("sampler_strategy.txt") as f:
    cases = [
        ("over", RandomOverSampler, X3, y3, ["auto", "not majority", "not minority", "all"]),
        ("under", RandomUnderSampler, X3, y3, ["auto", "majority", "not minority", "not majority", "all"]),
        ("over", RandomOverSampler, Xbin, ybin, [0.5, 0.75, 1.0]),
        ("under", RandomUnderSampler, Xbin, ybin, [0.5, 0.75, 1.0]),
    ]
    for fam, cls, X, y, strategies in cases:
        for s in strategies:
            sm = cls(sampling_strategy=s, random_state=0).fit(X, y)
            d = sm.sampling_strategy_
            name = s.replace(" ", "_") if isinstance(s, str) else "ratio=%r" % s
            f.write("%s %s %d %s\n" % (fam, name, len(np.unique(y)),
                                       " ".join("%d:%d" % (k, v) for k, v in sorted(d.items()))))
    # 'minority' for over-samplers (0.10.0 rejects it on SMOTE, #964; RandomOverSampler accepts)
    d = check_sampling_strategy("minority", y3, "over-sampling")
    f.write("over minority 3 %s\n" % " ".join("%d:%d" % kv for kv in sorted(d.items())))
    d = RandomOverSampler(sampling_strategy={1: 7, 2: 2}).fit(X3, y3).sampling_strategy_
    f.write("over targets 3 %s\n" % " ".join("%d:%d" % kv for kv in sorted(d.items())))

# 2. Output counts and order of SMOTE for every strategy on wine (3 classes 59/71/48).
Xw, yw = load("wine.csv")
with out("sampler_smote_counts.txt") as f:
    for s in ["auto", "minority", "not minority", "all", "not majority"]:
        ss = check_sampling_strategy(s, yw, "over-sampling") if s == "minority" else s
        if s == "minority":  # 0.10.0 rejects 'minority' on SMOTE (#964): pass the resolved dict
            ss = {k: v + (yw == k).sum() for k, v in ss.items()}
        Xr, yr = SMOTE(sampling_strategy=ss, k_neighbors=5, random_state=0).fit_resample(Xw, yw)
        assert np.array_equal(Xr[: len(yw)], Xw) and np.array_equal(yr[: len(yw)], yw)
        tail = yr[len(yw):]
        # label blocks of the synthetic tail: run-length "label:count"
        runs = []
        for v in tail:
            if runs and runs[-1][0] == v:
                runs[-1][1] += 1
            else:
                runs.append([v, 1])
        f.write("%s %d %s\n" % (s.replace(" ", "_"), len(yr), " ".join("%d:%d" % (a, b) for a, b in runs)))

# 3. Exact neighbour sets (k = 5, self excluded) on breast cancer and wine.
for name, fname in [("breast_cancer", "breast_cancer.csv"), ("wine", "wine.csv")]:
    X, y = load(fname)
    dist, ind = NearestNeighbors(n_neighbors=6).fit(X).kneighbors(X)
    assert (ind[:, 0] == np.arange(len(X))).all()
    # no ties at the k-th boundary, so the sets are well defined
    with out("sampler_knn_%s.txt" % name) as f:
        for i in range(len(X)):
            f.write(" ".join(str(v) for v in ind[i, 1:]) + "\n")

# 4. Cleaning methods keep exactly these rows (wine: no duplicates, so imblearn is exact).
with out("sampler_clean_wine.txt") as f:
    t = TomekLinks().fit(Xw, yw)
    t.fit_resample(Xw, yw)
    f.write("tomek " + " ".join(map(str, t.sample_indices_)) + "\n")
    for kind in ["all", "mode"]:
        e = EditedNearestNeighbours(n_neighbors=3, kind_sel=kind)
        e.fit_resample(Xw, yw)
        f.write("enn_%s " % kind + " ".join(map(str, e.sample_indices_)) + "\n")

# 5. Borderline danger sets (m = 10) of each targeted class on breast cancer
#    (classes 0 = 212 malignant, 1 = 357 benign) and ADASYN g_i per base row.
Xb, yb = load("breast_cancer.csv")
with out("sampler_border_breast_cancer.txt") as f:
    m = 10
    _, ind = NearestNeighbors(n_neighbors=m + 1).fit(Xb).kneighbors(Xb)
    nmaj = (yb[ind[:, 1:]] != yb[:, None]).sum(1)
    danger = np.flatnonzero((yb == 0) & (nmaj >= m / 2) & (nmaj < m))
    f.write("danger " + " ".join(map(str, danger)) + "\n")
    Xr, yr = BorderlineSMOTE(kind="borderline-1", random_state=0).fit_resample(Xb, yb)
    f.write("counts %d %d\n" % ((yr == 0).sum(), (yr == 1).sum()))
    k = 5
    n_new = 357 - 212
    _, ind = NearestNeighbors(n_neighbors=k + 1).fit(Xb).kneighbors(Xb[yb == 0])
    r = (yb[ind[:, 1:]] != 0).sum(1) / k
    g = np.rint(r / r.sum() * n_new).astype(int)
    f.write("adasyn " + " ".join(map(str, g)) + "\n")
    Xr, yr = ADASYN(random_state=0).fit_resample(Xb, yb)
    f.write("adasyn_total %d\n" % (len(yr) - len(yb)))
print("ok")
