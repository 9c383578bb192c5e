#!/usr/bin/python3
"""Interleaved timing of the imbalanced-learn-parity samplers: libeffml's
Python drop-in (effml.*) against imbalanced-learn 0.10 on the same data, in
one process, same thread count (n_jobs=1 on both sides; OpenBLAS threads as
the environment sets them).  One warm-up each, then --reps rounds (default
5) of ours/theirs alternately; prints one JSON line per sampler with
min/median/max of both and the median ratio, plus a machine line.

  EFFML_LIBRARY=build/lib/libeffml.so.0 PYTHONPATH=python \\
    /usr/bin/python3 bench/sampler_parity_bench.py [--reps 5] [--n 5000]

Data: a Gaussian blob mixture, d = 16, 10 % minority (seeded); n rows for the
neighbour-based samplers, n/2.5 for the ones imblearn runs per sample or
with a fitted model (CNN, OSS, IHT, SVM-SMOTE).
"""
import json
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

warnings.simplefilter("ignore")
reps, n = 5, 5000
for i, a in enumerate(sys.argv[1:]):
    if a == "--reps":
        reps = int(sys.argv[i + 2])
    if a == "--n":
        n = int(sys.argv[i + 2])

import effml.combine as ecb  # noqa: E402
import effml.over_sampling as eov  # noqa: E402
import effml.under_sampling as eun  # noqa: E402
from imblearn import combine as icb  # noqa: E402
from imblearn import over_sampling as iov  # noqa: E402
from imblearn import under_sampling as iun  # noqa: E402


def data(m, seed=0):
    rs = np.random.RandomState(seed)
    y = (rs.rand(m) < 0.1).astype(np.int64)
    X = rs.randn(m, 16) + y[:, None] * 1.5
    return X, y


CASES = [
    ("NearMiss1", eun.NearMiss, iun.NearMiss, {"version": 1}, 1.0),
    ("NearMiss2", eun.NearMiss, iun.NearMiss, {"version": 2}, 1.0),
    ("NearMiss3", eun.NearMiss, iun.NearMiss, {"version": 3}, 1.0),
    ("RENN", eun.RepeatedEditedNearestNeighbours, iun.RepeatedEditedNearestNeighbours, {}, 1.0),
    ("AllKNN", eun.AllKNN, iun.AllKNN, {}, 1.0),
    ("NCL", eun.NeighbourhoodCleaningRule, iun.NeighbourhoodCleaningRule, {"kind_sel": "mode"}, 1.0),
    ("SMOTEENN", ecb.SMOTEENN, icb.SMOTEENN, {"random_state": 0}, 1.0),
    ("SMOTETomek", ecb.SMOTETomek, icb.SMOTETomek, {"random_state": 0}, 1.0),
    ("ClusterCentroids", eun.ClusterCentroids, iun.ClusterCentroids, {"random_state": 0}, 0.4),
    ("KMeansSMOTE", eov.KMeansSMOTE, iov.KMeansSMOTE,
     {"random_state": 0, "cluster_balance_threshold": 0.05}, 1.0),
    ("SMOTEN", eov.SMOTEN, iov.SMOTEN, {"random_state": 0}, 1.0),
    ("CNN", eun.CondensedNearestNeighbour, iun.CondensedNearestNeighbour, {"random_state": 0}, 0.4),
    ("OSS", eun.OneSidedSelection, iun.OneSidedSelection, {"random_state": 0}, 0.4),
    ("IHT", eun.InstanceHardnessThreshold, iun.InstanceHardnessThreshold, {"random_state": 0}, 0.4),
    ("SVMSMOTE", eov.SVMSMOTE, iov.SVMSMOTE, {"random_state": 0}, 0.4),
]

print(json.dumps({"machine": platform.processor() or platform.machine(),
                  "cpus": os.cpu_count(), "load": os.getloadavg()[0],
                  "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}))
for name, ours, theirs, kw, frac in CASES:
    m = int(n * frac)
    X, y = data(m)
    if name == "SMOTEN":
        X = np.floor(X).clip(-2, 3).astype(np.int64)
    a, b = ours(**kw), theirs(**kw)
    a.fit_resample(X, y)
    b.fit_resample(X, y)
    ta, tb = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        a.fit_resample(X, y)
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b.fit_resample(X, y)
        tb.append(time.perf_counter() - t0)
    ma, mb = statistics.median(ta), statistics.median(tb)
    print(json.dumps({"bench": "sampler_parity", "case": name, "n": m, "d": 16,
                      "ours_s": ma, "ours_min": min(ta), "ours_max": max(ta),
                      "baseline": "imblearn 0.10.0", "baseline_s": mb,
                      "baseline_min": min(tb), "baseline_max": max(tb),
                      "speedup": mb / ma}), flush=True)
