#!/usr/bin/python3
"""Python side of bench/bench_sampler.c (see the comment at its top).

Reads ours (EFFML_BENCH_SAMPLER_OURS, default /tmp/effml_bench_sampler_ours.json)
and the inputs bench_sampler wrote under /tmp, times the baselines on the same
data (one warm-up, then --reps runs, default 5; numpy QR of the 10^6 x 32
matrix takes seconds, so it runs 2 per round and scripts/bench.sh pools 3
rounds) and prints one JSON line per case with bench, case, ours_s,
baseline, baseline_s (medians), *_min / *_max, the raw ours_runs /
baseline_runs, speedup and case-specific keys (goal, goal_met, ...).
"""
import json
import os
import statistics
import sys
import time

import numpy as np

reps = 5
for i, a in enumerate(sys.argv[1:]):
    if a == "--reps":
        reps = int(sys.argv[i + 2])

path = os.environ.get("EFFML_BENCH_SAMPLER_OURS") or "/tmp/effml_bench_sampler_ours.json"
with open(path) as f:
    ours = json.load(f)


def timed(fn, n=None):
    fn()
    ts = []
    out = None
    for _ in range(n or reps):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return ts, out


def report(case, baseline, base_runs, goal, **extra):
    o = ours[case]
    orun = o["ours_runs"]
    om, bm = statistics.median(orun), statistics.median(base_runs)
    line = {"bench": "sampler", "case": case, "ours_s": om, "ours_min": min(orun),
            "ours_max": max(orun), "baseline": baseline, "baseline_s": bm,
            "baseline_min": min(base_runs), "baseline_max": max(base_runs), "speedup": bm / om,
            "goal_speedup": goal, "goal_met": goal is None or bm / om >= goal,
            "ours_runs": orun, "baseline_runs": base_runs}
    line.update({k: v for k, v in o.items() if k not in line and k not in ("x", "y", "support")})
    line.update(extra)
    print(json.dumps(line), flush=True)



if "smote_200k_32" in ours:  # (bench_sampler --only runs one case)
    # smote_200k_32
    from imblearn.over_sampling import SMOTE  # noqa: E402

    X = np.load("/tmp/effml_bench_sampler_smote_x.npy")
    y = np.load("/tmp/effml_bench_sampler_smote_y.npy")
    t, (Xr, yr) = timed(lambda: SMOTE(k_neighbors=5, random_state=0).fit_resample(X, y))
    report("smote_200k_32", "imbalanced-learn 0.10 SMOTE.fit_resample", t, 2.5,
           baseline_rows_out=int(len(yr)))
    if "smote_200k_32_t1" in ours:  # ours on one thread
        report("smote_200k_32_t1", "imbalanced-learn 0.10 SMOTE.fit_resample", t, None,
               baseline_rows_out=int(len(yr)))
    if "smote_200k_32_into" in ours:
        report("smote_200k_32_into", "imbalanced-learn 0.10 SMOTE.fit_resample", t, 2.5,
               baseline_rows_out=int(len(yr)))
    del X, y, Xr, yr


if "leverage_1e6_32" in ours:
    # leverage_1e6_32
    A = np.load("/tmp/effml_bench_sampler_lev_a.npy")


    def lev():
        q, _ = np.linalg.qr(A)
        return (q * q).sum(1)


    t, tau_np = timed(lev, 2)
    tau = np.load("/tmp/effml_bench_sampler_lev_tau.npy")
    err = float(np.abs(tau - tau_np).max())
    report("leverage_1e6_32", "numpy linalg.qr + row norms", t, 15, max_abs_diff_vs_numpy=err,
           sum_tau=float(tau.sum()))
    tau_sk = np.load("/tmp/effml_bench_sampler_lev_tau_sketch.npy")
    ratio = tau_sk / np.maximum(tau_np, 1e-300)
    report("leverage_1e6_32_sketch", "numpy linalg.qr + row norms", t, None,
           sketch_ratio_min=float(ratio.min()), sketch_ratio_max=float(ratio.max()))
    del A, tau_np, tau, tau_sk


if "temperature_draws" in ours:
    # temperature_draws
    o = ours["temperature_draws"]
    q = np.array(o["q"])
    total = int(o["draws"])
    rng = np.random.default_rng(42)
    chunk = 10_000_000


    def draws():
        s = 0
        for _ in range(total // chunk):
            s += int(rng.choice(8, size=chunk, p=q)[-1])
        return s


    t, _ = timed(draws, 3)
    report("temperature_draws", "numpy Generator.choice(p=q)", t, 3,
           ours_draws_per_s=total / statistics.median(o["ours_runs"]),
           baseline_draws_per_s=total / statistics.median(t))


# parity_*: the imbalanced-learn-parity samplers (bench_sampler.c, run_parity)
PARITY = [k for k in ours if k.startswith("parity_")]
if PARITY:
    import warnings

    from sklearn.base import BaseEstimator, ClassifierMixin
    from imblearn import combine as icb
    from imblearn import over_sampling as iov
    from imblearn import under_sampling as iun

    warnings.simplefilter("ignore")  # sklearn 1.2's n_init FutureWarning

    class NearestCentroidSoftmax(ClassifierMixin, BaseEstimator):
        """bench_sampler.c's nc_softmax: P(c|x) ~ exp(-|x - mean_c|^2 / 2)."""

        def fit(self, X, y):
            self.classes_ = np.unique(y)
            self.mu_ = np.stack([X[y == c].mean(0) for c in self.classes_])
            return self

        def predict_proba(self, X):
            s = -0.5 * ((X * X).sum(1)[:, None] - 2 * X @ self.mu_.T + (self.mu_ ** 2).sum(1))
            s -= s.max(1, keepdims=True)
            e = np.exp(s)
            return e / e.sum(1, keepdims=True)

        def predict(self, X):
            return self.classes_[self.predict_proba(X).argmax(1)]

    class FixedSupport(ClassifierMixin, BaseEstimator):
        """An 'SVM' whose support vectors are given (bench_sampler.c's band), so
        SVMSMOTE's timing leaves the SVC fit out, as ours does."""

        def __init__(self, support=None):
            self.support = support

        def fit(self, X, y):
            self.support_ = np.asarray(self.support)
            self.classes_ = np.unique(y)
            return self

        def predict(self, X):
            return np.zeros(len(X), dtype=np.int64)

    def make(name, sup):
        return {
            "nearmiss1": lambda: iun.NearMiss(version=1),
            "nearmiss2": lambda: iun.NearMiss(version=2),
            "nearmiss3": lambda: iun.NearMiss(version=3),
            "renn": lambda: iun.RepeatedEditedNearestNeighbours(),
            "allknn": lambda: iun.AllKNN(),
            "ncl": lambda: iun.NeighbourhoodCleaningRule(kind_sel="mode"),
            "cnn": lambda: iun.CondensedNearestNeighbour(random_state=0),
            "oss": lambda: iun.OneSidedSelection(random_state=0),
            "cluster_centroids": lambda: iun.ClusterCentroids(random_state=0),
            "iht": lambda: iun.InstanceHardnessThreshold(estimator=NearestCentroidSoftmax(),
                                                         random_state=0),
            "svmsmote": lambda: iov.SVMSMOTE(svm_estimator=FixedSupport(sup), random_state=0),
            "kmeans_smote": lambda: iov.KMeansSMOTE(cluster_balance_threshold=0.05,
                                                    random_state=0),
            "smoten": lambda: iov.SMOTEN(random_state=0),
            "smoteenn": lambda: icb.SMOTEENN(random_state=0),
            "smotetomek": lambda: icb.SMOTETomek(random_state=0),
        }[name]

    for case in PARITY:
        o = ours[case]
        X, y = np.load(o["x"]), np.load(o["y"])
        sup = np.load(o["support"]) if "support" in o else None
        mk = make(o["sampler"], sup)
        ts, rows = [], 0
        for _ in range(int(o.get("baseline_reps", 2))):
            s = mk()
            t0 = time.perf_counter()
            Xr, yr = s.fit_resample(X, y)
            ts.append(time.perf_counter() - t0)
            rows = int(len(yr))
        report(case, "imbalanced-learn 0.10 " + type(mk()).__name__ + ".fit_resample", ts, None,
               baseline_rows_out=rows,
               baseline_warmup=False)
        del X, y
