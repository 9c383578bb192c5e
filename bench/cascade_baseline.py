#!/usr/bin/python3
"""numpy side of bench/bench_cascade.c (see the comment at its top).

cascade_route_1m: scoring and routing 10^6 samples x 10 classes through the same
2-stage MSP window cascade, written as one would in numpy (the reference
Guoxoug/window-early-exit computes both members for every sample; here, as our
cascade does, member 2 is only combined for the rows inside the window):
f64 softmax of member 1, window mask lo <= MSP <= hi, mean of the two members'
probabilities for the rows in the window, final prediction/score/exit stage.
Reads the logits (/tmp/effml_bench_cascade_z{0,1}.npy) and ours_s, lo, hi from
$EFFML_BENCH_CASCADE_OURS (default /tmp/effml_bench_cascade_ours.json), both
written by bench_cascade; median of warm runs; prints one JSON line.
"""
import json
import os
import sys
import time

import numpy as np

reps = 5
for i, a in enumerate(sys.argv[1:]):
    if a == "--reps":
        reps = int(sys.argv[i + 2])

path = os.environ.get("EFFML_BENCH_CASCADE_OURS") or "/tmp/effml_bench_cascade_ours.json"
with open(path) as f:
    ours = json.load(f)["cascade_route_1m"]
z0 = np.load("/tmp/effml_bench_cascade_z0.npy")
z1 = np.load("/tmp/effml_bench_cascade_z1.npy")
lo, hi = ours["lo"], ours["hi"]


def softmax64(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def route(z0, z1):
    p0 = softmax64(z0)
    s0 = p0.max(axis=1)
    pred = p0.argmax(axis=1).astype(np.int32)
    inside = (s0 >= lo) & (s0 <= hi)
    idx = np.nonzero(inside)[0]
    pbar = 0.5 * (p0[idx] + softmax64(z1[idx]))
    score = s0.copy()
    score[idx] = pbar.max(axis=1)
    pred[idx] = pbar.argmax(axis=1)
    stage = inside.astype(np.int32)
    return pred, score, stage, len(idx)


route(z0, z1)  # warm-up
times = []
for _ in range(reps):
    t0 = time.perf_counter()
    _, _, _, reach1 = route(z0, z1)
    times.append(time.perf_counter() - t0)
base = sorted(times)[len(times) // 2]
line = {
    "bench": "cascade",
    "case": "cascade_route_1m",
    "ours_s": ours["ours_s"],
    "baseline": "numpy",
    "baseline_s": base,
    "speedup": base / ours["ours_s"],
    "n": ours["n"],
    "classes": int(z0.shape[1]),
    "threads": ours["threads"],
    "reach_stage1": ours["reach1"],
    "same_routing": reach1 == ours["reach1"],
    "ours_cpu_s": ours.get("ours_cpu_s"),
}
print(json.dumps(line))
