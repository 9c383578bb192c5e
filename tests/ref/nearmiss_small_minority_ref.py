"""Reference for test_nearmiss2_small_minority (tests/test_sampler_under.c):
imbalanced-learn 0.10's NearMiss(version=2) on tests/data/wine.csv with class 2
cut to its first `keep` rows, for n_neighbors below, equal to and above the
minority size (version 2 sums the min(n_neighbors, n_min) farthest minority
distances, so n_neighbors > n_min is valid there).  Prints
`keep k: sample_indices_`.  Run: python3 tests/ref/nearmiss_small_minority_ref.py"""
import os

import numpy as np
from imblearn.under_sampling import NearMiss

here = os.path.dirname(os.path.abspath(__file__))
raw = np.loadtxt(os.path.join(here, "..", "data", "wine.csv"), delimiter=",", skiprows=1)
for keep, ks in ((1, (1, 3)), (2, (1, 2, 3, 7)), (4, (2, 3, 4, 9))):
    y = raw[:, -1].astype(int)
    rows = [i for i in range(len(y)) if y[i] != 2] + list(np.flatnonzero(y == 2)[:keep])
    rows = np.sort(rows)
    X, y = raw[rows, :-1], y[rows]
    for k in ks:
        nm = NearMiss(version=2, n_neighbors=k)
        nm.fit_resample(X, y)
        print("%d %d: %s" % (keep, k, " ".join(str(int(i)) for i in nm.sample_indices_)))
