"""effml.dask on a LocalCluster with 2 worker processes (small data, under a minute)."""
import os

import numpy as np
import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
pytest.importorskip("sklearn")
import dask.array as da  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402

from effml import coreset as cs, dask as edask, over_sampling as eov, under_sampling as eun  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client():
    os.environ.setdefault("PYTHONPATH", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, memory_limit="1GiB")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def regression(n=40000, d=5, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.standard_t(2, size=(n, d))
    X[:20] *= 80  # rare, decisive rows
    beta = rng.randn(d)
    y = X @ beta + rng.standard_t(3, size=n)
    y[:20] += 300
    return X, y


def cost_ratio(X, y, rows, w):
    full = np.linalg.lstsq(X, y, rcond=None)[0]
    b = np.linalg.lstsq(w[:, None] * rows[:, :-1], w * rows[:, -1], rcond=None)[0]
    c = lambda v: np.sum((X @ v - y) ** 2)  # noqa: E731
    return c(b) / c(full)


def test_coreset_quality_and_determinism(client):
    X, y = regression()
    A = np.c_[X, y]
    dA = da.from_array(A, chunks=(5000, 6))  # 8 partitions: tree depth 3
    rows, w, idx = edask.coreset(dA, 800, random_state=1, return_indices=True)
    assert np.array_equal(rows, A[idx])  # global indices address the right rows
    assert np.all(np.diff(idx) > 0)
    r = cost_ratio(X, y, rows, w)
    assert 1 <= r < 1.10, r
    # same seed, same partitioning: same sample; the single-machine coreset of the same
    # size is of the same quality
    rows2, w2 = edask.coreset(dA, 800, random_state=1)
    assert np.array_equal(np.sort(w2), np.sort(w))
    i1, w1 = cs.coreset(A, len(w), random_state=1)
    r1 = cost_ratio(X, y, A[i1], w1)
    assert r < 1 + 3 * (r1 - 1) + 0.02, (r, r1)
    uni = np.random.RandomState(0).choice(len(A), len(w), replace=False)
    assert r < cost_ratio(X, y, A[uni], np.ones(len(uni)))


def test_coreset_unknown_chunks_empty_partitions_column_chunks(client):
    X, y = regression(12000, 4, seed=2)
    A = np.c_[X, y]
    df = pd.DataFrame(A, columns=list("abcde"))
    ddf = dd.from_pandas(df, npartitions=4)
    ddf = ddf[ddf.a > -1e9]  # filtering: unknown chunk sizes
    dA = ddf.to_dask_array()
    assert np.isnan(dA.chunks[0][0])
    rows, w, idx = edask.coreset(dA, 600, random_state=3, return_indices=True)
    assert np.array_equal(rows, A[idx]) and cost_ratio(X, y, rows, w) < 1.2
    # an empty partition and split columns: still correct
    ddf2 = dd.from_pandas(df.assign(i=np.arange(len(df))), npartitions=4)
    ddf2 = ddf2[(ddf2.i < 3000) | (ddf2.i >= 6000)].drop(columns="i")  # partition 1 empty
    rows, w, idx = edask.coreset(ddf2.to_dask_array(), 600, random_state=3, return_indices=True)
    keep = np.r_[0:3000, 6000:12000]
    assert np.array_equal(rows, A[keep][idx])
    dcol = da.from_array(A, chunks=(3000, 2))
    rows, w, idx = edask.coreset(dcol, 600, random_state=3, return_indices=True)
    assert np.array_equal(rows, A[idx])


def test_coreset_methods_and_errors(client):
    X, y = regression(8000, 3, seed=4)
    dA = da.from_array(np.c_[X, y], chunks=(2000, 4))
    for method, p in (("root_leverage", 1.0), ("lewis", 3.0), ("lewis", 1.5)):
        rows, w = edask.coreset(dA, 400, p=p, method=method, random_state=0)
        assert len(w) > 10 and np.all(w >= 1)
    for method, p in (("leverage", 1.0), ("root_leverage", 3.0), ("lewis", 0.5), ("lewis", 4.0),
                      ("nope", 2.0)):
        with pytest.raises(ValueError):
            edask.coreset(dA, 400, p=p, method=method)
    with pytest.raises(ValueError):
        edask.coreset(np.zeros((10, 2)), 5)
    with pytest.raises(ValueError):
        edask.coreset(da.zeros(10, chunks=5), 5)


def imbalanced(n=6000, d=4, seed=0):
    rng = np.random.RandomState(seed)
    y = np.zeros(n, np.int64)
    y[rng.rand(n) < 0.05] = 1
    y[rng.rand(n) < 0.03] = 2
    X = rng.randn(n, d) + y[:, None]
    return X, y


def counts(y):
    u, c = np.unique(np.asarray(y), return_counts=True)
    return dict(zip(u.tolist(), c.tolist()))


def test_smote_counts_equal_single_machine(client):
    X, y = imbalanced()
    dX, dy = da.from_array(X, chunks=(1000, 4)), da.from_array(y, chunks=1000)
    for ss in ("auto", "minority", {1: 1000, 2: 900}):
        sm = edask.SMOTE(sampling_strategy=ss, random_state=0, chunk_rows=1500)
        Xr, yr = sm.fit_resample(dX, dy)
        Xr, yr = dask.compute(Xr, yr)
        # only the targeted classes travel (plus one row of another class when one is targeted)
        c = counts(y)
        want = sum(c[k] for k in sm.sampling_strategy_ if sm.sampling_strategy_[k] > 0)
        assert sm.gathered_rows_ == want + (1 if len(sm.sampling_strategy_) == 1 else 0)
        Xs, ys = eov.SMOTE(sampling_strategy=ss, random_state=0).fit_resample(X, y)
        assert counts(yr) == counts(ys)
        assert np.array_equal(Xr[:len(X)], X)  # originals first, where they were
        syn, ysyn = Xr[len(X):], yr[len(X):]
        for c in np.unique(ysyn):  # synthetic rows inside their class's bounding box
            lo, hi = X[y == c].min(0), X[y == c].max(0)
            assert np.all((syn[ysyn == c] >= lo - 1e-12) & (syn[ysyn == c] <= hi + 1e-12))


def test_smote_dataframe_absent_class_and_gather_limit(client):
    X, y = imbalanced(4000, 3, seed=1)
    order = np.argsort(y == 2, kind="stable")  # class 2 only in the last partition
    X, y = X[order], y[order]
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    ddf = dd.from_pandas(df, npartitions=4)
    dys = dd.from_pandas(pd.Series(y, name="label"), npartitions=4)
    Xr, yr = edask.SMOTE(random_state=0).fit_resample(ddf, dys)
    Xr, yr = dask.compute(Xr, yr)
    assert isinstance(Xr, pd.DataFrame) and list(Xr.columns) == ["a", "b", "c"]
    assert counts(yr) == counts(eov.SMOTE(random_state=0).fit_resample(X, y)[1])
    with pytest.raises(ValueError, match=r"bytes"):
        edask.SMOTE(max_gather_bytes=1000).fit_resample(ddf, dys)


def test_random_under_sampler_counts_and_rows(client):
    X, y = imbalanced(5000, 3, seed=2)
    dX, dy = da.from_array(X, chunks=(700, 3)), da.from_array(y, chunks=700)
    for ss in ("auto", {0: 500, 1: 100}):
        Xr, yr = edask.RandomUnderSampler(sampling_strategy=ss, random_state=0).fit_resample(dX, dy)
        Xr, yr = dask.compute(Xr, yr)
        ys = eun.RandomUnderSampler(sampling_strategy=ss, random_state=0).fit_resample(X, y)[1]
        assert counts(yr) == counts(ys)
        # every kept row is an original row with its label, each at most once
        pos = {tuple(r): i for i, r in enumerate(X)}
        idx = np.array([pos[tuple(r)] for r in Xr])
        assert len(set(idx)) == len(idx) and np.array_equal(y[idx], yr)
        assert np.all(np.diff(idx) > 0)  # original order kept
    df = pd.DataFrame(X, columns=list("abc"))
    Xr, yr = edask.RandomUnderSampler(random_state=1).fit_resample(
        dd.from_pandas(df, npartitions=3), dd.from_pandas(pd.Series(y), npartitions=3))
    Xr, yr = dask.compute(Xr, yr)
    assert isinstance(Xr, pd.DataFrame) and counts(yr) == counts(ys if False else
                                                              eun.RandomUnderSampler(random_state=1)
                                                              .fit_resample(X, y)[1])
