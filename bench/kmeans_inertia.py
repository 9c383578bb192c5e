#!/usr/bin/python3
"""Why KMeans-SMOTE's default k-means stops after 20 Lloyd iterations
(docs/samplers.md, KMeans-SMOTE): inertia on a 50 000 x 16 Gaussian mixture
like bench_sampler's parity data (10 % minority shifted by 0.35 per feature)
of scikit-learn 1.2's Lloyd KMeans (8 clusters, 3 k-means++ inits,
tol 1e-4) capped at 300 / 100 / 50 / 20 iterations, and of MiniBatchKMeans
(imbalanced-learn 0.10's default estimator: 8 clusters, batch 1024, 3 inits).
One JSON line per setting (bench "kmeans_inertia"); times are one run each.
    /usr/bin/python3 bench/kmeans_inertia.py >> bench/results/kmeans_inertia.jsonl"""
import json
import time
import warnings

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

warnings.simplefilter("ignore")
rs = np.random.RandomState(0)
n = 50000
y = (rs.rand(n) < 0.1).astype(np.int64)
X = rs.randn(n, 16) + 0.35 * y[:, None]
for mi in (300, 100, 50, 20):
    t0 = time.perf_counter()
    km = KMeans(8, n_init=3, max_iter=mi, algorithm="lloyd", random_state=0).fit(X)
    print(json.dumps({"bench": "kmeans_inertia", "case": f"lloyd_max_iter_{mi}", "n_iter": int(km.n_iter_),
                      "inertia": float(km.inertia_), "one_run_s": time.perf_counter() - t0}))
t0 = time.perf_counter()
mb = MiniBatchKMeans(8, n_init=3, random_state=0).fit(X)
print(json.dumps({"bench": "kmeans_inertia", "case": "minibatch_imblearn_default", "n_steps": int(mb.n_steps_),
                  "inertia": float(-mb.score(X)), "one_run_s": time.perf_counter() - t0}))
