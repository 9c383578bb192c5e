#!/usr/bin/python3
"""A least-squares coreset of data that no worker could hold, on Dask.

Generates --gb GB of heavy-tailed regression data (float64, target as the last
column, a few rare decisive rows) on the workers, builds an lp coreset by
merge-and-reduce (effml.dask.coreset), and compares the weighted
least-squares fit on the coreset with the exact full-data optimum (from the
Gram matrix, one more pass).  Prints the cost ratio (1 + eps), the tree depth,
the time, and each worker's peak memory against its limit.

    EFFML_LIBRARY=build/lib/libeffml.so.0 PYTHONPATH=python \\
        /usr/bin/python3 examples/python/dask_coreset.py --gb 2
    ... --scheduler tcp://host:8786          # a real cluster (dask-scheduler / dask-worker)
"""
import time

import numpy as np


def main():
    from _cluster import client_for, parser, report_peaks
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=10, help="features (plus the target column)")
    p.add_argument("--m", type=float, default=4000, help="coreset size per node")
    args = p.parse_args()

    import dask.array as da
    import effml.dask as edask

    client = client_for(args)
    d = args.d
    n = int(args.gb * 1e9 / 8 / (d + 1))
    chunk = max(1000, int(args.chunk_mb * 2**20 / 8 / (d + 1)))
    rs = da.random.RandomState(args.seed)
    X = rs.standard_t(2, size=(n, d), chunks=(chunk, d))
    beta = np.linspace(-1, 1, d)
    noise = rs.standard_t(3, size=(n,), chunks=(chunk,))
    y = X @ beta + noise

    def rare(block, block_id=None):  # the first rows of block 0 are large and off the model
        if block_id[0] == 0:
            block = block.copy()
            block[:20, :-1] *= 100
            block[:20, -1] += 1000
        return block
    A = da.concatenate([X, y[:, None]], axis=1).rechunk({1: -1}).map_blocks(rare, dtype=float)
    print("data: %d rows x %d columns = %.2f GB in %d partitions of %.0f MB; tree depth %d"
          % (n, d + 1, n * (d + 1) * 8 / 1e9, A.numblocks[0], chunk * (d + 1) * 8 / 2**20,
             edask.tree_depth(A.numblocks[0])))

    t0 = time.perf_counter()
    rows, w = edask.coreset(A, args.m, random_state=args.seed)
    t_core = time.perf_counter() - t0
    t0 = time.perf_counter()
    G = (A.T @ A).compute()  # exact full-data optimum and cost from the Gram matrix
    t_gram = time.perf_counter() - t0
    full = np.linalg.solve(G[:d, :d], G[:d, d])

    def cost(b):
        v = np.r_[b, -1.0]
        return float(v @ G @ v)
    b = np.linalg.lstsq(w[:, None] * rows[:, :d], w * rows[:, d], rcond=None)[0]
    ratio = cost(b) / cost(full)
    print("coreset: %d rows (%.4f %% of the data) in %.1f s; Gram pass %.1f s"
          % (len(w), 100 * len(w) / n, t_core, t_gram))
    print("full-data cost of the coreset optimum / optimum = %.5f (eps = %.2g)" % (ratio, ratio - 1))
    ok = report_peaks(client)
    client.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
