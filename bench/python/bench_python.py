#!/usr/bin/python3
"""Benchmarks of the Python package (run by `scripts/bench.sh python`).

Cases, each timed interleaved in this one process (ours, baseline, ours, ...)
over --reps runs (default 5; one warm-up each), reported as one JSON line
with median and min/max:

- smote_200k_32: effml.over_sampling.SMOTE vs imblearn.over_sampling.SMOTE
  on 200 000 x 32 float64 with a 5 % minority class (k = 5), the same shape
  as bench_sampler's C case.  Also timed in the same loop: the bare C calls
  through ctypes on pre-wrapped tensors: effml_sampler_resample (the C
  library allocates the outputs; `overhead_vs_c` = python / c_call - 1) and
  effml_sampler_resample_into (into numpy arrays allocated per call, as the
  binding does for outputs under 32 MiB; `overhead_vs_c_into`).  This case's
  97 MB output is allocated by the library and adopted by the binding.
  Both ratios include the machine's noise; the binding's own cost is also
  measured directly: `binding_own_s` = wall time of fit_resample minus the
  time spent inside its C call (timed around the ctypes call), median over
  the runs, and `binding_own_frac` = that / the C call's time.
- tiny_call: per-call time of effml.mixture.temperature_probs on 8 sources
  (a whole Python call: conversion, wrap, C, result) vs the bare ctypes call
  with prepared pointers; goal under 5 us per call.

Environment: EFFML_LIBRARY (scripts/bench.sh points it at the Release
build), OPENBLAS_NUM_THREADS (bench.sh: 2).  Ours runs with n_jobs=2 (the C
bench's 2 threads).  Options: --reps N, --quick (20 000 rows).
"""
import ctypes
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

import effml  # noqa: E402
from effml import _core, _lib, mixture  # noqa: E402
from effml._sampler_base import ResampleOptions  # noqa: E402
from effml.over_sampling import SMOTE  # noqa: E402

reps, quick = 5, False
args = sys.argv[1:]
for i, a in enumerate(args):
    if a == "--reps":
        reps = max(5, int(args[i + 1]))
    if a == "--quick":
        quick = True


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
            "python": platform.python_version(), "numpy": np.__version__,
            "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "library": effml.library_path(), "library_version": effml.library_version()}


def stats(ts):
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts)}


def emit(case, ours, baseline, baseline_name, **extra):
    o, b = stats(ours), stats(baseline)
    line = {"bench": "python", "case": case, "ours_s": o["median"], "baseline": baseline_name,
            "baseline_s": b["median"], "speedup": b["median"] / o["median"],
            "ours_min_s": o["min"], "ours_max_s": o["max"], "baseline_min_s": b["min"],
            "baseline_max_s": b["max"], "reps": len(ours)}
    line.update(extra)
    line["machine"] = machine()
    print(json.dumps(line), flush=True)


def smote_case():
    from imblearn.over_sampling import SMOTE as ImbSMOTE
    n, d = (20000 if quick else 200000), 32
    rng = np.random.RandomState(0)
    y = (np.arange(n) % 20 == 0).astype(np.int64)
    X = rng.rand(n, d) + 0.5 * y[:, None]

    ours_est = SMOTE(k_neighbors=5, random_state=0, n_jobs=2)
    ref_est = ImbSMOTE(k_neighbors=5, random_state=0)
    # bare C call on pre-wrapped tensors, same context and threads
    ctx = _core.Context(num_threads=2)
    opt = ResampleOptions()
    _lib.fn("effml_sampler_resample_options_init")(ctypes.byref(opt))
    opt.method, opt.k_neighbors, opt.seed = 1, 5, 0
    scope = _core.Scope(ctx)
    tx, ty = scope.wrap(X), scope.wrap(y)
    f, free = _lib.fn("effml_sampler_resample"), _lib.fn("effml_tensor_free")

    def c_call():
        a, b = ctypes.c_void_p(), ctypes.c_void_p()
        ctx.check(f(ctx.handle, ctypes.byref(opt), tx, ty, ctypes.byref(a), ctypes.byref(b)),
                  "effml_sampler_resample")
        free(a.value)
        free(b.value)

    name_into = "effml_sampler_resample_into"
    f_into = _lib.fn(name_into)
    cap = n + (n - 2 * int(y.sum()))  # SMOTE 'auto': the minority grows to the majority

    def c_into_call():
        xo, yo, m = np.empty((cap, d)), np.empty(cap, np.int64), ctypes.c_int64()
        with _core.Scope(ctx) as sc:
            ctx.check(f_into(ctx.handle, ctypes.byref(opt), tx, ty, sc.wrap(xo, True),
                             sc.wrap(yo, True), ctypes.byref(m)), name_into)
        return xo, yo

    # time spent inside the binding's C call: the bound function is wrapped (the
    # binding looks it up by name at each call) so its wall time is recorded
    in_c = []

    def timed(fn):
        def call(*a):
            t0 = time.perf_counter()
            r = fn(*a)
            in_c.append(time.perf_counter() - t0)
            return r
        return call

    # the binding calls effml_sampler_resample (outputs of 32 MiB and more, adopted)
    # or effml_sampler_resample_into (smaller ones): both are timed
    name_alloc = "effml_sampler_resample"

    def py_call():
        _lib._bound[name_into], _lib._bound[name_alloc] = timed(f_into), timed(f)
        try:
            return ours_est.fit_resample(X, y)
        finally:
            _lib._bound[name_into], _lib._bound[name_alloc] = f_into, f

    def ref_call():
        return ref_est.fit_resample(X, y)

    t_py, t_c, t_ci, t_ref, own = [], [], [], [], []
    for fn in (py_call, c_call, c_into_call, ref_call):  # warm-up
        fn()
    rows_ours = rows_ref = None
    for _ in range(reps):
        for fn, ts in ((py_call, t_py), (c_call, t_c), (c_into_call, t_ci), (ref_call, t_ref)):
            in_c.clear()
            t0 = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t0)
            if fn is py_call:
                rows_ours = len(out[1])
                own.append(ts[-1] - sum(in_c))
            elif fn is ref_call:
                rows_ref = len(out[1])
            del out
    scope.__exit__(None, None, None)
    c, ci = stats(t_c), stats(t_ci)
    emit("smote_200k_32" if not quick else "smote_20k_32", t_py, t_ref,
         "imbalanced-learn %s SMOTE.fit_resample" % __import__("imblearn").__version__,
         n=n, d=d, k=5, threads=2, c_call_s=c["median"], c_call_min_s=c["min"],
         c_call_max_s=c["max"], overhead_vs_c=statistics.median(t_py) / c["median"] - 1,
         c_into_s=ci["median"], c_into_min_s=ci["min"], c_into_max_s=ci["max"],
         overhead_vs_c_into=statistics.median(t_py) / ci["median"] - 1,
         binding_own_s=statistics.median(own),
         binding_own_frac=statistics.median(own) / ci["median"],
         goal_overhead=0.05, rows_out=rows_ours, baseline_rows_out=rows_ref)


def tiny_case():
    sizes = np.array([1e6, 5e5, 2e5, 1e5, 5e4, 2e4, 1e4, 5e3])
    n_calls = 20000
    ctx = _core.thread_context()
    f = _lib.fn("effml_sampler_temperature_probs")
    out = np.empty(8)
    D = ctypes.POINTER(ctypes.c_double)
    ps, po = sizes.ctypes.data_as(D), out.ctypes.data_as(D)
    h = ctx.handle

    def bare():
        for _ in range(n_calls):
            f(h, ps, 8, 2.0, po)

    def full():
        for _ in range(n_calls):
            mixture.temperature_probs(sizes, 2.0)

    t_full, t_bare = [], []
    bare()
    full()
    for _ in range(reps):
        for fn, ts in ((full, t_full), (bare, t_bare)):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) / n_calls)
    emit("tiny_call_temperature_probs_8", t_full, t_bare,
         "bare ctypes call with prepared pointers (the C call plus ctypes' own cost)",
         calls_per_rep=n_calls, ours_us=statistics.median(t_full) * 1e6,
         bare_us=statistics.median(t_bare) * 1e6,
         binding_own_us=(statistics.median(t_full) - statistics.median(t_bare)) * 1e6,
         goal_us=5.0, goal_met=statistics.median(t_full) * 1e6 < 5.0)


if __name__ == "__main__":
    tiny_case()
    smote_case()
