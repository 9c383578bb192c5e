#!/usr/bin/python3
"""SMOTE where the majority class fits on no single worker, on Dask.

Generates --gb GB of float64 rows on the workers with a --minority fraction
of class 1, resamples with effml.dask.SMOTE (only class 1's rows travel to the
client; synthetic rows are generated on the workers as new partitions), and
reduces the result on the workers to per-class counts and means.  Prints the
counts (equal to single-machine SMOTE's: both classes at the majority's
count), the bytes gathered, the time, and each worker's peak memory against
its limit.

    EFFML_LIBRARY=build/lib/libeffml.so.0 PYTHONPATH=python \\
        /usr/bin/python3 examples/python/dask_smote.py --gb 2
"""
import time

import numpy as np


def main():
    from _cluster import client_for, parser, report_peaks
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--minority", type=float, default=0.002)
    args = p.parse_args()

    import dask
    import dask.array as da
    import effml.dask as edask

    client = client_for(args)
    d = args.d
    n = int(args.gb * 1e9 / 8 / d)
    chunk = max(1000, int(args.chunk_mb * 2**20 / 8 / d))
    rs = da.random.RandomState(args.seed)
    y = (rs.random_sample(n, chunks=chunk) < args.minority).astype(np.int64)
    X = rs.standard_normal((n, d), chunks=(chunk, d)) + y[:, None]
    print("data: %d rows x %d = %.2f GB in %d partitions" % (n, d, n * d * 8 / 1e9, X.numblocks[0]))

    t0 = time.perf_counter()
    sm = edask.SMOTE(random_state=args.seed, max_gather_bytes=256 << 20, chunk_rows=chunk)
    Xr, yr = sm.fit_resample(X, y)
    t_plan = time.perf_counter() - t0
    n_gen = sum(sm.sampling_strategy_.values())
    counts = da.bincount(yr, minlength=2)
    mean1 = X[y == 1].mean(axis=0)
    mean_r1 = Xr[yr == 1].mean(axis=0)
    counts, mean1, mean_r1 = dask.compute(counts, mean1, mean_r1)
    t_all = time.perf_counter() - t0
    print("gathered class 1 to the client and planned %d synthetic rows in %.1f s" % (n_gen, t_plan))
    print("resampled counts: %s (single-machine SMOTE: both classes at the majority count %d)"
          % (dict(enumerate(counts.tolist())), counts[0]))
    print("class-1 mean before %s, after %s (synthetic rows lie between class-1 rows)"
          % (np.round(mean1[:3], 3), np.round(mean_r1[:3], 3)))
    print("total %.1f s" % t_all)
    ok = report_peaks(client) and counts[0] == counts[1]
    client.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
