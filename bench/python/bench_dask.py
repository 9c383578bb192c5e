#!/usr/bin/python3
"""effml.dask figures (run by `scripts/bench.sh python` after bench_python.py).

JSON lines:
- coreset_quality: heavy-tailed regression (n = 400 000, d = 8, 20 rare
  decisive rows), least-squares cost of the coreset optimum over the
  full-data optimum (1 + eps), median of 3 seeds, for m in {500, 2000, 8000}
  and tree depth in {0, 2, 4, 6} (1, 4, 16, 64 partitions), next to the
  single-machine coreset (effml.coreset.coreset) and uniform sampling of the
  same size;
- coreset_scaling / smote_scaling: wall time on a LocalCluster with 1 and 2
  worker processes and 1x, 2x, 4x the data, with the single-machine call on
  the same data (the engine's overhead), and the bytes gathered by SMOTE.
Options: --quick (smaller sizes).
"""
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

quick = "--quick" in sys.argv


def emit(d):
    d["machine"] = {"cores": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}
    print(json.dumps(d), flush=True)


def data(n, d=8, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.standard_t(2, size=(n, d))
    X[:20] *= 100
    y = X @ np.linspace(-1, 1, d) + rng.standard_t(3, size=n)
    y[:20] += 1000
    return np.c_[X, y]


def ratio(A, rows, w):
    d = A.shape[1] - 1
    G = A.T @ A
    full = np.linalg.solve(G[:d, :d], G[:d, d])
    b = np.linalg.lstsq(w[:, None] * rows[:, :d], w * rows[:, d], rcond=None)[0]
    c = lambda v: float(np.r_[v, -1.0] @ G @ np.r_[v, -1.0])  # noqa: E731
    return c(b) / c(full)


def main():
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster
    from effml import coreset as cs, dask as edask
    from effml import over_sampling as eov

    n = 100_000 if quick else 400_000
    A = data(n)
    with dask.config.set(scheduler="synchronous"):  # quality does not depend on the engine
        for m in (500, 2000, 8000):
            for parts in (1, 4, 16, 64):
                rs, rs1, rsu, sizes = [], [], [], []
                for seed in range(3):
                    dA = da.from_array(A, chunks=(-(-n // parts), A.shape[1]))
                    rows, w = edask.coreset(dA, m, random_state=seed)
                    rs.append(ratio(A, rows, w))
                    sizes.append(len(w))
                    i1, w1 = cs.coreset(A, len(w), random_state=seed)
                    rs1.append(ratio(A, A[i1], w1))
                    u = np.random.RandomState(seed).choice(n, len(w), replace=False)
                    rsu.append(ratio(A, A[u], np.ones(len(u))))
                emit({"bench": "dask", "case": "coreset_quality", "n": n, "d": 8, "m": m,
                      "partitions": parts, "depth": edask.tree_depth(parts),
                      "rows_median": int(statistics.median(sizes)),
                      "eps_dask": statistics.median(rs) - 1,
                      "eps_single_machine": statistics.median(rs1) - 1,
                      "eps_uniform": statistics.median(rsu) - 1, "seeds": 3})

    base = 200_000 if quick else 1_000_000
    for workers in (1, 2):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit="1GiB")
        client = Client(cluster)
        for mult in (1, 2, 4):
            nn = base * mult
            dA = da.random.RandomState(1).standard_t(2, size=(nn, 9), chunks=(100_000, 9))
            t0 = time.perf_counter()
            edask.coreset(dA, 2000, random_state=0)
            t_d = time.perf_counter() - t0
            local = dA.compute()
            t0 = time.perf_counter()
            cs.coreset(local, 2000, random_state=0)
            t_1 = time.perf_counter() - t0
            emit({"bench": "dask", "case": "coreset_scaling", "workers": workers, "rows": nn,
                  "cols": 9, "dask_s": t_d, "single_machine_s": t_1,
                  "note": "dask_s includes generating the data on the workers"})
            y = (da.random.RandomState(2).random_sample(nn, chunks=100_000) < 0.01).astype(np.int64)
            X = da.random.RandomState(3).standard_normal((nn, 8), chunks=(100_000, 8)) + y[:, None]
            t0 = time.perf_counter()
            sm = edask.SMOTE(random_state=0, chunk_rows=100_000)
            Xr, yr = sm.fit_resample(X, y)
            cnt = da.bincount(yr, minlength=2).compute()
            t_s = time.perf_counter() - t0
            Xl, yl = dask.compute(X, y)
            t0 = time.perf_counter()
            eov.SMOTE(random_state=0).fit_resample(Xl, yl)
            t_l = time.perf_counter() - t0
            emit({"bench": "dask", "case": "smote_scaling", "workers": workers, "rows": nn,
                  "cols": 8, "minority_rows": int(np.sum(yl == 1)),
                  "gathered_bytes": int(np.sum(yl == 1)) * 8 * 8, "counts": cnt.tolist(),
                  "dask_s": t_s, "single_machine_s": t_l,
                  "note": "dask_s: generate on workers, gather, plan, synthesize, count"})
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
