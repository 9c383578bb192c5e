#!/usr/bin/python3
"""Python side of bench/bench_sampler.c (see the comment at its top).

Reads ours (EFFML_BENCH_SAMPLER_OURS, default /tmp/effml_bench_sampler_ours.json)
and the inputs bench_sampler wrote under /tmp, times the baselines on the same
data (one warm-up, median of --reps runs, default 3) and prints one JSON line
per case with bench, case, ours_s, baseline, baseline_s, speedup and
case-specific keys (goal, goal_met, ...).
"""
import json
import os
import sys
import time

import numpy as np

reps = 3
for i, a in enumerate(sys.argv[1:]):
    if a == "--reps":
        reps = int(sys.argv[i + 2])

path = os.environ.get("EFFML_BENCH_SAMPLER_OURS") or "/tmp/effml_bench_sampler_ours.json"
with open(path) as f:
    ours = json.load(f)


def timed(fn):
    fn()
    ts = []
    out = None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2], out


def report(case, baseline, baseline_s, goal, **extra):
    o = ours[case]
    line = {"bench": "sampler", "case": case, "ours_s": o["ours_s"], "baseline": baseline,
            "baseline_s": baseline_s, "speedup": baseline_s / o["ours_s"],
            "goal_speedup": goal, "goal_met": goal is None or baseline_s / o["ours_s"] >= goal}
    line.update({k: v for k, v in o.items() if k != "ours_s"})
    line.update(extra)
    print(json.dumps(line), flush=True)


# smote_200k_32
from imblearn.over_sampling import SMOTE  # noqa: E402

X = np.load("/tmp/effml_bench_sampler_smote_x.npy")
y = np.load("/tmp/effml_bench_sampler_smote_y.npy")
t, (Xr, yr) = timed(lambda: SMOTE(k_neighbors=5, random_state=0).fit_resample(X, y))
report("smote_200k_32", "imbalanced-learn 0.10 SMOTE.fit_resample", t, 10,
       baseline_rows_out=int(len(yr)))
del X, y, Xr, yr

# leverage_1e6_32
A = np.load("/tmp/effml_bench_sampler_lev_a.npy")


def lev():
    q, _ = np.linalg.qr(A)
    return (q * q).sum(1)


t, tau_np = timed(lev)
tau = np.load("/tmp/effml_bench_sampler_lev_tau.npy")
err = float(np.abs(tau - tau_np).max())
report("leverage_1e6_32", "numpy linalg.qr + row norms", t, 20, max_abs_diff_vs_numpy=err,
       sum_tau=float(tau.sum()))
tau_sk = np.load("/tmp/effml_bench_sampler_lev_tau_sketch.npy")
ratio = tau_sk / np.maximum(tau_np, 1e-300)
report("leverage_1e6_32_sketch", "numpy linalg.qr + row norms", t, None,
       sketch_ratio_min=float(ratio.min()), sketch_ratio_max=float(ratio.max()))
del A, tau_np, tau, tau_sk

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


t, _ = timed(draws)
report("temperature_draws", "numpy Generator.choice(p=q)", t, 3,
       ours_draws_per_s=total / o["ours_s"], baseline_draws_per_s=total / t)
