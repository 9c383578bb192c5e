"""Coresets and resampling on Dask (``dask.array`` / ``dask.dataframe``).

:func:`coreset`
    lp sensitivity-sampling coreset of a Dask array chunked by rows, built
    by merge-and-reduce: every partition samples its own rows (scores in C),
    then a binary tree of weighted unions, each re-sampled back to ``m`` rows
    with the sensitivities of the weighted rows
    (``effml_sampler_weighted_sample_reduce``).  Only samples travel: at most
    about ``m`` rows per partition and per tree node.
:class:`SMOTE`
    The majority stays partitioned where it is; the rows of the classes that
    get synthetic rows are gathered to the client (small by definition;
    bounded by ``max_gather_bytes``), neighbours and the plan are computed
    once in C, and synthetic rows are generated in parallel and appended as
    new partitions.  Class counts equal the single-machine result's.
:class:`RandomUnderSampler`
    Class counts per partition are gathered (a few integers), the kept ranks
    of each targeted class are drawn on the client, and every partition
    filters its own rows: nothing else moves.  Class counts equal the
    single-machine result's; kept rows stay in their original order.

Determinism: the same ``random_state`` and the same partitioning give the
same result; a different partitioning gives a different (equally valid)
sample, because each partition and tree node draws from its own stream.

Error of the coreset: each reduce is a (1 +- eps) approximation of its input
with high probability, so a tree of depth L = ceil(log2(partitions)) is a
(1 +- eps)^L ~ (1 + L eps) approximation; docs/distributed.md reports the
measured cost ratios for several m and depths.
"""

import numbers

import numpy as np

from . import coreset as _cs
from ._errors import InvalidArgumentError, ShapeError
from ._sampler_base import _Labels, seed_from
from .over_sampling import SMOTE as _SMOTE
from .under_sampling import RandomUnderSampler as _RUS

__all__ = ["coreset", "SMOTE", "RandomUnderSampler"]

_MASK = 0xFFFFFFFFFFFFFFFF


def _mix(seed, *keys):
    """A 64-bit stream seed from a base seed and integer keys (splitmix64 steps)."""
    x = seed & _MASK
    for k in keys:
        x = (x ^ (int(k) & _MASK)) & _MASK
        x = (x + 0x9E3779B97F4A7C15) & _MASK
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        x = z ^ (z >> 31)
    return x


# ---------------------------------------------------------------- coreset

def _leaf(block, part, m, p, method, seed):
    """Sample one partition: dict of rows, weights, (partition, local index), row count."""
    a = np.asarray(block)
    if a.ndim != 2:
        raise ShapeError("partition %d is not 2-D (shape %s)" % (part, a.shape))
    n = a.shape[0]
    if n <= m or n < a.shape[1]:
        idx, w = np.arange(n, dtype=np.int64), np.ones(n)  # small: kept whole (exact)
    else:
        score = {"leverage": lambda: _cs.leverage_scores(a),
                 "root_leverage": lambda: _cs.root_leverage_scores(a, p),
                 "lewis": lambda: _cs.sensitivity_upper_bounds(a, p)}[method]()
        idx, w = _cs.sensitivity_sample(score, m, p, seed=_mix(seed, 1, part))
    return {"rows": np.ascontiguousarray(a[idx], dtype=np.float64), "w": np.asarray(w, np.float64),
            "part": np.full(len(idx), part, np.int64), "local": np.asarray(idx, np.int64),
            "counts": {part: n}}


def _node(left, right, level, pos, m, p, method, seed):
    """One merge-and-reduce node: union of two samples, re-sampled to about m rows."""
    rows = np.concatenate([left["rows"], right["rows"]])
    w = np.concatenate([left["w"], right["w"]])
    part = np.concatenate([left["part"], right["part"]])
    local = np.concatenate([left["local"], right["local"]])
    counts = dict(left["counts"])
    counts.update(right["counts"])
    if len(w) > m and len(w) >= rows.shape[1]:
        keep, w = _cs.weighted_sample_reduce(rows, w, m, p, method=method,
                                             seed=_mix(seed, 2, level, pos))
        rows, part, local = rows[keep], part[keep], local[keep]
    return {"rows": rows, "w": w, "part": part, "local": local, "counts": counts}


def coreset(X, m, *, p=2, method="leverage", random_state=None, return_indices=False,
            compute=True):
    """lp coreset of a Dask array ``X`` [n, d] by merge-and-reduce.

    Parameters
    ----------
    X : dask.array.Array, 2-D, chunked by rows (column chunks are merged
        first); chunk sizes may be unknown (arrays from DataFrames).  For
        regression append the target as the last column.
    m : expected sample size per partition and per tree node (> 0).
    p : the lp norm; method 'leverage' needs p = 2, 'root_leverage'
        1 <= p <= 2, 'lewis' 1 <= p < 4 (anything else: ValueError).
    random_state : int or None (drawn from numpy's global generator).
    return_indices : also return the global row indices.

    Returns
    -------
    rows : float64 (k, d) numpy array, weights : float64 (k,), [indices : int64 (k,)]
        The coreset is ``weights[:, None] * rows`` (weights carry the 1/p power).
        Partitions with no more than m rows (or fewer rows than columns) are
        kept whole with weight 1.
    """
    import dask
    import dask.array as da
    if not isinstance(X, da.Array):
        raise InvalidArgumentError("X must be a dask.array.Array (use da.from_array or "
                                   "DataFrame.to_dask_array()), got %s" % type(X).__name__)
    if X.ndim != 2:
        raise ShapeError("X must be 2-D [n, d], got %d dims" % X.ndim)
    if not (isinstance(m, numbers.Real) and m > 0):
        raise InvalidArgumentError("m must be > 0, got %r" % (m,))
    _cs.check_method(method, p)
    p = float(p)
    seed = seed_from(random_state)
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    blocks = X.to_delayed()[:, 0].tolist()
    nodes = [dask.delayed(_leaf)(b, i, m, p, method, seed) for i, b in enumerate(blocks)]
    level = 0
    while len(nodes) > 1:
        level += 1
        nxt = []
        for j in range(0, len(nodes) - 1, 2):
            nxt.append(dask.delayed(_node)(nodes[j], nodes[j + 1], level, j // 2, m, p, method,
                                           seed))
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
    root = nodes[0]
    if not compute:
        return root
    r = root.compute()
    out = (r["rows"], r["w"])
    if return_indices:
        parts = sorted(r["counts"])
        offs = dict(zip(parts, np.concatenate([[0], np.cumsum([r["counts"][q] for q in parts])])))
        gidx = np.array([offs[q] for q in r["part"].tolist()], dtype=np.int64) + r["local"]
        order = np.argsort(gidx, kind="stable")
        out = (r["rows"][order], r["w"][order], gidx[order])
    return out


def tree_depth(n_partitions):
    """Depth of the merge-and-reduce tree over ``n_partitions`` leaves."""
    return int(np.ceil(np.log2(n_partitions))) if n_partitions > 1 else 0


# ---------------------------------------------------------------- shared helpers

def _as_dask_pair(X, y):
    """(X, y, kind) with X and y aligned on the same row partitions; kind 'array' or 'frame'."""
    import dask.array as da
    import dask.dataframe as dd
    if isinstance(X, dd.DataFrame):
        if not isinstance(y, (dd.Series, dd.DataFrame)):
            raise InvalidArgumentError("with a dask DataFrame X, y must be a dask Series")
        if X.npartitions != y.npartitions:
            raise ShapeError("X has %d partitions, y %d: they must be partitioned alike"
                             % (X.npartitions, y.npartitions))
        return X, y, "frame"
    if isinstance(X, da.Array):
        if not isinstance(y, da.Array):
            raise InvalidArgumentError("with a dask Array X, y must be a dask Array")
        if X.ndim != 2 or y.ndim != 1:
            raise ShapeError("X must be 2-D and y 1-D, got %d and %d dims" % (X.ndim, y.ndim))
        if X.numblocks[1] != 1:
            X = X.rechunk({1: -1})
        if X.chunks[0] != y.chunks[0]:
            if any(np.isnan(c) for c in X.chunks[0] + y.chunks[0]):
                raise ShapeError("X and y have different, unknown row chunks; call "
                                 "compute_chunk_sizes() on both")
            y = y.rechunk({0: X.chunks[0]})
        return X, y, "array"
    raise InvalidArgumentError("X must be a dask Array or DataFrame, got %s" % type(X).__name__)


def _class_counts(y):
    """Sorted labels and their counts (computed)."""
    import dask
    vals = y.to_delayed().ravel().tolist() if hasattr(y, "chunks") else y.to_delayed()
    per = dask.compute(*[dask.delayed(_unique_counts)(b) for b in vals])
    tot = {}
    for u, c in per:
        for a, b in zip(u.tolist(), c.tolist()):
            tot[a] = tot.get(a, 0) + b
    labels = np.array(sorted(tot))
    return labels, np.array([tot[k] for k in labels.tolist()], np.int64), per


def _unique_counts(b):
    u, c = np.unique(np.asarray(b), return_counts=True)
    return u, c


def _resolve_targets(est, labels, counts, kind):
    """Per-class number to generate (over) or keep (under), as the single-machine C resolve.

    A small stand-in y with the same class counts is resolved by the C
    library itself, so every sampling_strategy form means exactly what it
    means on one machine (the stand-in is counts-sized: at most the number
    of rows of y, in int64 -- far less than X).
    """
    yy = np.repeat(np.arange(len(labels)), counts)
    lab = _Labels(labels[yy] if labels.dtype.kind not in "iu" else labels[yy].astype(np.int64))
    est._resolve(lab, np.zeros((0, 1)), fit_only=True)
    return est.sampling_strategy_


# ---------------------------------------------------------------- SMOTE

def _gather_rows(X, y, classes, kind, extra=None):
    """Rows of ``classes`` (and at most one row per partition of class ``extra``)."""
    import dask
    parts = []
    if kind == "array":
        xb, yb = X.to_delayed()[:, 0].tolist(), y.to_delayed().ravel().tolist()
    else:
        xb, yb = X.to_delayed(), y.to_delayed()
    for a, b in zip(xb, yb):
        parts.append(dask.delayed(_select)(a, b, classes, extra))
    got = dask.compute(*parts)
    xs = [g[0] for g in got if len(g[1])]
    ys = [g[1] for g in got if len(g[1])]
    return np.concatenate(xs), np.concatenate(ys)


def _select(xb, yb, classes, extra=None):
    xa = xb.to_numpy() if hasattr(xb, "to_numpy") else np.asarray(xb)
    ya = yb.to_numpy() if hasattr(yb, "to_numpy") else np.asarray(yb)
    keep = np.isin(ya, classes)
    if extra is not None:
        keep[np.flatnonzero(ya == extra)[:1]] = True
    return np.ascontiguousarray(xa[keep], dtype=np.float64), ya[keep]


def _apply_chunk(xg, base, nb, step, dtype):
    out = xg[base] + step[:, None] * (xg[nb] - xg[base])
    return out.astype(dtype, copy=False)


class SMOTE(_SMOTE):
    """SMOTE on Dask collections; parameters as :class:`effml.over_sampling.SMOTE` plus:

    max_gather_bytes : int, default 1 GiB
        Most bytes of rows gathered to the client (the rows of the classes
        that get synthetic rows, as float64).  Above it ``fit_resample``
        refuses with a message saying how much it would need.
    chunk_rows : int, default 100 000
        Synthetic rows per new partition.

    ``fit_resample(X, y)`` takes a dask Array (2-D) and Array (1-D), or a
    dask DataFrame and Series partitioned alike, and returns the same kind:
    the original partitions, then the synthetic rows as new partitions
    (imblearn's order: originals first, then one block per class in label
    order).  Class counts equal the single-machine SMOTE's.  After a call,
    ``gathered_rows_`` is the number of rows brought to the client.
    """

    def __init__(self, *, sampling_strategy="auto", random_state=None, k_neighbors=5,
                 n_jobs=None, max_gather_bytes=1 << 30, chunk_rows=100_000):
        super().__init__(sampling_strategy=sampling_strategy, random_state=random_state,
                         k_neighbors=k_neighbors, n_jobs=n_jobs)
        self.max_gather_bytes = max_gather_bytes
        self.chunk_rows = chunk_rows

    def fit_resample(self, X, y):
        """Resample Dask X, y; see the class docstring."""
        import dask
        import dask.array as da
        X, y, kind = _as_dask_pair(X, y)
        labels, counts, _ = _class_counts(y)
        if len(labels) < 2:
            raise InvalidArgumentError("y has %d class(es); SMOTE needs at least 2" % len(labels))
        gen = _resolve_targets(self, labels, counts, "over")
        targets = [c for c in gen if gen[c] > 0]
        d = X.shape[1]
        if not targets:
            return X, y
        n_gather = int(sum(counts[np.searchsorted(labels, c)] for c in targets)) + 1
        need = n_gather * d * 8
        if need > self.max_gather_bytes:
            raise InvalidArgumentError(
                "SMOTE would gather %d rows x %d columns = %d bytes of classes %s to the client, "
                "above max_gather_bytes=%d; raise max_gather_bytes or use fewer targeted classes"
                % (n_gather - 1, d, need, targets, self.max_gather_bytes))
        # The targeted classes' rows, plus one row of another class when only one class is
        # targeted (the C planner needs two classes; that row is never interpolated).
        others = [c for c in labels.tolist() if c not in targets]
        extra = others[0] if len(targets) == 1 and others else None
        xg, yg = _gather_rows(X, y, np.array(targets), kind, extra)
        if extra is not None:  # keep a single row of the extra class
            extra = np.flatnonzero(yg == others[0])[1:]
            keep = np.ones(len(yg), bool)
            keep[extra] = False
            xg, yg = xg[keep], yg[keep]
        self.gathered_rows_ = len(yg)
        single = _SMOTE(sampling_strategy={c: int(np.sum(yg == c)) + gen[c] for c in targets},
                        random_state=self.random_state, k_neighbors=self.k_neighbors,
                        n_jobs=self.n_jobs)
        base, nb, step = single.fit_resample_plan(xg, yg)
        n0 = len(yg)
        base, nb, step = base[n0:], nb[n0:], step[n0:]
        y_new = yg[base]
        dtype = np.dtype(X.dtype) if kind == "array" else np.dtype(np.float64)
        if dtype.kind != "f":
            dtype = np.dtype(np.float64)
        xg_d = dask.delayed(xg, pure=True)
        cr = max(1, int(self.chunk_rows))
        pieces, ypieces = [], []
        for s in range(0, len(base), cr):
            e = min(s + cr, len(base))
            blk = dask.delayed(_apply_chunk)(xg_d, base[s:e], nb[s:e], step[s:e], dtype)
            pieces.append(da.from_delayed(blk, shape=(e - s, d), dtype=dtype))
            ypieces.append(da.from_array(y_new[s:e], chunks=e - s))
        self.sampling_strategy_ = gen
        if kind == "array":
            y_syn = da.concatenate(ypieces).astype(y.dtype)
            return da.concatenate([X.astype(dtype) if X.dtype != dtype else X] + pieces), \
                da.concatenate([y, y_syn])
        import dask.dataframe as dd
        frames = [dd.from_dask_array(p, columns=list(X.columns)) for p in pieces]
        ys = [dd.from_dask_array(q).rename(y.name) for q in ypieces]
        Xo = dd.concat([X] + [f.astype(dict(X.dtypes)) for f in frames], interleave_partitions=False)
        yo = dd.concat([y] + [s.astype(y.dtype) for s in ys])
        return Xo, yo


# ---------------------------------------------------------------- RandomUnderSampler

def _mask_block(yb, ranks_by_class, offsets):
    """Keep mask of one partition: targeted classes keep the listed ranks."""
    ya = yb.to_numpy() if hasattr(yb, "to_numpy") else np.asarray(yb)
    keep = np.ones(len(ya), bool)
    for c, ranks in ranks_by_class.items():
        rows = np.flatnonzero(ya == c)
        local = ranks - offsets[c]
        local = local[(local >= 0) & (local < len(rows))]
        k = np.zeros(len(rows), bool)
        k[local] = True
        keep[rows] = k
    return keep


def _filter(xb, keep):
    return xb[keep] if not hasattr(xb, "iloc") else xb.iloc[np.flatnonzero(keep)]


class RandomUnderSampler(_RUS):
    """Random under-sampling on Dask collections (parameters as the single-machine one).

    Only per-partition class counts go to the client; each partition filters
    its own rows.  Class counts equal the single-machine result's; the kept
    rows are a uniform random subset of each targeted class (drawn with
    numpy's generator seeded by ``random_state``) and stay in their original
    order and partitions.
    """

    def fit_resample(self, X, y):
        """Resample Dask X, y (same kind out); see the class docstring."""
        import dask
        import dask.array as da
        X, y, kind = _as_dask_pair(X, y)
        if self.replacement:
            raise InvalidArgumentError("replacement=True is not implemented")
        labels, counts, per = _class_counts(y)
        if len(labels) < 2:
            raise InvalidArgumentError("y has %d class(es); under-sampling needs at least 2"
                                       % len(labels))
        keep_n = _resolve_targets(self, labels, counts, "under")
        rng = np.random.default_rng(seed_from(self.random_state) & ((1 << 63) - 1))
        ranks = {}
        for c, k in keep_n.items():
            n_c = int(counts[np.searchsorted(labels, c)])
            ranks[c] = np.sort(rng.choice(n_c, size=int(k), replace=False))
        # per-partition offsets of each class's ranks
        offsets = []
        run = {c: 0 for c in ranks}
        for u, cnt in per:
            offsets.append(dict(run))
            for a, b in zip(u.tolist(), cnt.tolist()):
                if a in run:
                    run[a] += b
        if kind == "array":
            xb, yb = X.to_delayed()[:, 0].tolist(), y.to_delayed().ravel().tolist()
        else:
            xb, yb = X.to_delayed(), y.to_delayed()
        masks = [dask.delayed(_mask_block)(b, ranks, off) for b, off in zip(yb, offsets)]
        xs = [dask.delayed(_filter)(a, mk) for a, mk in zip(xb, masks)]
        ys = [dask.delayed(_filter)(b, mk) for b, mk in zip(yb, masks)]
        if kind == "array":
            d = X.shape[1]
            Xo = da.concatenate([da.from_delayed(a, shape=(np.nan, d), dtype=X.dtype) for a in xs])
            yo = da.concatenate([da.from_delayed(b, shape=(np.nan,), dtype=y.dtype) for b in ys])
            return Xo, yo
        import dask.dataframe as dd
        return dd.from_delayed(xs, meta=X._meta), dd.from_delayed(ys, meta=y._meta)
