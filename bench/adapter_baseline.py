#!/usr/bin/python3
"""PyTorch side of bench/bench_adapter.c (see the comment at its top).

The reference approach of rabeehk/compacter PHMLinear: every call builds
B_i = s_i t_i, H = sum_i kron(A_i, B_i) (batched einsum, as
seq2seq/hypercomplex/kronecker.py), then y = x @ H + b; forward and backward
through autograd (x requires grad, as an adapter inside a network does).
Same shapes, same threads (torch.set_num_threads = OPENBLAS_NUM_THREADS, default 1),
median of warm runs.  Reads ours_s from $EFFML_BENCH_ADAPTER_OURS (default
/tmp/effml_bench_adapter_ours.json, written by bench_adapter) and prints one
JSON line per case with speedup = baseline_s / ours_s.
"""
import json
import os
import statistics
import sys
import time

import torch

threads = int(os.environ.get("OPENBLAS_NUM_THREADS", "1") or 1)
torch.set_num_threads(threads)
reps = 5
for i, a in enumerate(sys.argv[1:]):
    if a == "--reps":
        reps = int(sys.argv[i + 2])


def kron_batched(A, B):
    n, kin, kout = A.shape[0], B.shape[1], B.shape[2]
    res = torch.einsum("bac,bkp->bakcp", A, B)
    return res.reshape(n, A.shape[1] * kin, A.shape[2] * kout)


def case(k, d, n, rows, reps):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(rows, k, generator=g) * 2 - 1).requires_grad_(True)
    dy = torch.rand(rows, d, generator=g) * 2 - 1
    rule = (torch.randn(n, n, n, generator=g) * 1e-4).requires_grad_(True)
    wl = (torch.rand(n, k // n, 1, generator=g) - 0.5).requires_grad_(True)
    wr = (torch.rand(n, 1, d // n, generator=g) - 0.5).requires_grad_(True)
    b = torch.zeros(d, requires_grad=True)
    ts = []
    for it in range(reps + 1):
        for p in (x, rule, wl, wr, b):
            p.grad = None
        t0 = time.perf_counter()
        H = kron_batched(rule, torch.bmm(wl, wr)).sum(0)
        y = x @ H + b
        y.backward(dy)
        if it:
            ts.append(time.perf_counter() - t0)
    return ts


def dora_case(rows, n, r, reps):
    """PEFT's DoraLinearLayer forward (eval-style, no dropout), norm detached, autograd backward
    with dx, frozen base with bias: returns (min, median, max) seconds."""
    g = torch.Generator().manual_seed(0)
    W = torch.rand(n, n, generator=g) * 2 - 1
    bias = torch.rand(n, generator=g) * 2 - 1
    A = ((torch.rand(r, n, generator=g) * 2 - 1) * 0.01).requires_grad_(True)
    B = (torch.sin(torch.arange(n * r, dtype=torch.float32)).reshape(n, r) * 0.01).requires_grad_(True)
    s = 32.0 / 16.0
    m = torch.linalg.norm(W, dim=1).requires_grad_(True)
    x = (torch.rand(rows, n, generator=g) * 2 - 1).requires_grad_(True)
    dy = torch.rand(rows, n, generator=g) * 2 - 1
    ts = []
    for it in range(reps + 1):
        for p in (A, B, m, x):
            p.grad = None
        t0 = time.perf_counter()
        lora_w = B @ A
        wn = torch.linalg.norm(W + s * lora_w.detach(), dim=1).detach()
        c = (m / wn).view(1, -1)
        base = x @ W.t()
        y = base + bias + (c - 1) * base + c * ((x @ A.t()) @ B.t()) * s
        y.backward(dy)
        if it:
            ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[0], ts[len(ts) // 2], ts[-1]


ours = {}
path = os.environ.get("EFFML_BENCH_ADAPTER_OURS", "/tmp/effml_bench_adapter_ours.json")
try:
    with open(path) as f:
        ours = json.load(f)
except OSError:
    print(f"adapter_baseline: {path} missing: run bench_adapter first", file=sys.stderr)
if ours.get("threads", threads) != threads:
    print(f"adapter_baseline: warning: ours ran with {ours.get('threads')} threads, torch with {threads}",
          file=sys.stderr)

only = os.environ.get("EFFML_BENCH_ADAPTER_ONLY")
dmin, dmed, dmax = dora_case(512, 4096, 16, reps)
o = ours.get("dora_fwd_bwd_4096")
print(json.dumps({"bench": "adapter", "case": "dora_fwd_bwd_4096", "ours_s": o, "baseline": "pytorch_peft_dora",
                  "baseline_s": round(dmed, 6), "speedup": round(dmed / o, 3) if o else None,
                  "baseline_min_s": round(dmin, 6), "baseline_max_s": round(dmax, 6), "reps": reps,
                  "interleaved": False, "threads": threads, "rows": 512, "in": 4096, "out": 4096, "rank": 16,
                  "torch": torch.__version__}), flush=True)
if only == "dora":
    sys.exit(0)

for name, (k, d, n, rows, r) in {"lphm_fwd_bwd_t5": (768, 24, 4, 12800, reps),
                                 "lphm_fwd_bwd_4096": (4096, 4096, 8, 2048, max(1, min(reps, 2)))}.items():
    runs = case(k, d, n, rows, r)
    o = ours.get(name + "_runs") or ([ours[name]] if ours.get(name) else [])
    om, bm = (statistics.median(o) if o else None), statistics.median(runs)
    print(json.dumps({"bench": "adapter", "case": name, "ours_s": om,
                      "ours_min": min(o) if o else None, "ours_max": max(o) if o else None,
                      "baseline": "pytorch_materialized", "baseline_s": bm, "baseline_min": min(runs),
                      "baseline_max": max(runs), "speedup": bm / om if om else None,
                      "ours_runs": o, "baseline_runs": runs,
                      "threads": threads, "rows": rows, "k": k, "d": d, "phm_dim": n, "rank": 1,
                      "torch": torch.__version__}), flush=True)
