"""lp sensitivity sampling: leverage scores, Lewis weights, sensitivity
bounds, importance sampling with weights, and merging weighted samples.

A coreset of ``A`` (n x d) for lp regression is a weighted subset of rows
(S A) such that ||S A x||_p^p approximates ||A x||_p^p for every x; for
regression append the target as the last column.  Sampling rows with
probabilities proportional to upper bounds on their sensitivities gives such
a subset (Woodruff & Yasuda, ICML 2023, arXiv:2301.10186; Cohen & Peng,
STOC 2015, arXiv:1412.0588 for Lewis weights; Drineas et al., JMLR 2012 for
sketched leverage scores).

Inputs are float32/float64 arrays (others converted once); outputs are
numpy arrays over C memory (no copy).

>>> idx, w = coreset(np.c_[X, y], m=500, random_state=0)
>>> beta = np.linalg.lstsq(w[:, None] * X[idx], w * y[idx], rcond=None)[0]
"""

import ctypes
from ctypes import byref, c_int64

import numpy as np

from . import _lib
from ._core import Scope, c_int, as_array, interruptible, n_jobs_to_threads, thread_context
from ._errors import InvalidArgumentError

__all__ = ["leverage_scores", "root_leverage_scores", "lewis_weights",
           "sensitivity_upper_bounds", "sensitivity_sample", "weighted_sample_merge",
           "weighted_sample_reduce", "coreset"]

_F = (np.dtype(np.float64), np.dtype(np.float32))


class LeverageOptions(ctypes.Structure):
    """Mirror of ``effml_sampler_leverage_options`` (include/effml/sampler.h)."""

    _fields_ = [("struct_size", ctypes.c_uint32), ("method", ctypes.c_int32),
                ("sketch_rows", c_int64), ("seed", ctypes.c_uint64),
                ("rank_tol", ctypes.c_double), ("max_iter", c_int64), ("tol", ctypes.c_double)]


def _opts(method="exact", sketch_rows=0, seed=0, rank_tol=None, max_iter=None, tol=None):
    o = LeverageOptions()
    _lib.fn("effml_sampler_leverage_options_init")(byref(o))
    if method == "exact":
        o.method = 0
    elif method == "sketch":
        o.method = 1
    else:
        raise InvalidArgumentError("method must be 'exact' or 'sketch', got %r" % (method,))
    o.sketch_rows = c_int(sketch_rows, "sketch_rows")
    o.seed = c_int(seed, "seed", "uint64")
    if rank_tol is not None:
        o.rank_tol = float(rank_tol)
    if max_iter is not None:
        o.max_iter = c_int(max_iter, "max_iter")
    if tol is not None:
        o.tol = float(tol)
    return o


def _scores(fname, A, opt, *extra, n_jobs=None):
    ctx = thread_context(n_jobs_to_threads(n_jobs))
    a = as_array(A, _F, name="A", ndim=2)
    with interruptible(ctx), Scope(ctx) as s:
        t = s.wrap(a)
        out = s.out()
        ctx.check(_lib.fn(fname)(ctx.handle, byref(opt), t, *extra, byref(out)), fname)
        return s.adopt(out)


def leverage_scores(A, *, method="exact", sketch_rows=0, seed=0, rank_tol=1e-12, n_jobs=None):
    """Leverage scores tau_i = a_i^T (A^T A)^-1 a_i (they sum to d).

    method 'exact': Householder TSQR plus one CholeskyQR refinement (stable
    for any condition number below 1/eps); 'sketch': R from the QR of a
    CountSketch of A with ``sketch_rows`` rows (0: max(4 d^2, 64 d)).
    A rank-deficient A (|R_jj|/max < rank_tol) is a NumericError.

    Returns float64 array (n,).
    """
    return _scores("effml_sampler_leverage_scores", A, _opts(method, sketch_rows, seed, rank_tol),
                   n_jobs=n_jobs)


def root_leverage_scores(A, p, **kw):
    """Root leverage scores tau_i^(p/2), 1 <= p <= 2 (Woodruff & Yasuda 2023)."""
    n_jobs = kw.pop("n_jobs", None)
    return _scores("effml_sampler_root_leverage_scores", A, _opts(**kw), ctypes.c_double(p),
                   n_jobs=n_jobs)


def lewis_weights(A, p, *, max_iter=200, tol=1e-12, return_iterations=False, n_jobs=None):
    """lp Lewis weights (Cohen & Peng 2015), 0 < p < 4; they sum to d.

    Fixed-point iteration from w = 1, contracting with factor |1 - p/2|;
    NumericError if not converged within ``max_iter``.  With
    ``return_iterations`` returns ``(weights, iterations)``.
    """
    ctx = thread_context(n_jobs_to_threads(n_jobs))
    a = as_array(A, _F, name="A", ndim=2)
    opt = _opts(max_iter=max_iter, tol=tol)
    it = c_int64()
    with interruptible(ctx), Scope(ctx) as s:
        t = s.wrap(a)
        out = s.out()
        ctx.check(_lib.fn("effml_sampler_lewis_weights")(ctx.handle, byref(opt), t, float(p), byref(out),
                                                 byref(it)), "effml_sampler_lewis_weights")
        w = s.adopt(out)
    return (w, it.value) if return_iterations else w


def sensitivity_upper_bounds(A, p, **kw):
    """Upper bounds on the lp sensitivities, 1 <= p < 4 (Woodruff & Yasuda 2023, §3.10)."""
    n_jobs = kw.pop("n_jobs", None)
    return _scores("effml_sampler_sensitivity_upper_bounds", A, _opts(**kw), ctypes.c_double(p),
                   n_jobs=n_jobs)


_SCHEMES = {"bernoulli": 0, "iid": 1}


def sensitivity_sample(scores, m, p=2.0, *, scheme="bernoulli", seed=0):
    """Sample rows by ``scores`` with lp importance weights.

    'bernoulli': keep row i with pi_i = min(1, m s_i / S), weight pi_i^(-1/p);
    'iid': round(m) draws with q_i = s_i / S, a row drawn c_i times weighs
    (c_i / (m q_i))^(1/p).  E ||S A x||_p^p = ||A x||_p^p.

    Returns ``(indices, weights)``: int64 ascending and float64 arrays.
    """
    if scheme not in _SCHEMES:
        raise InvalidArgumentError("scheme must be 'bernoulli' or 'iid', got %r" % (scheme,))
    ctx = thread_context()
    sc = as_array(scores, (np.dtype(np.float64),), name="scores", ndim=1)
    with Scope(ctx) as s:
        t = s.wrap(sc)
        pi, pw = s.out(), s.out()
        ctx.check(_lib.fn("effml_sampler_sensitivity_sample")(
            ctx.handle, t, float(m), float(p), _SCHEMES[scheme], c_int(seed, "seed", "uint64"),
            byref(pi), byref(pw)), "effml_sampler_sensitivity_sample")
        return s.adopt(pi), s.adopt(pw)


def weighted_sample_merge(idx_a, w_a, idx_b, w_b, offset_b, p=2.0):
    """Union of two weighted samples of consecutive parts of the data.

    Indices of b are shifted by ``offset_b`` (the rows of the part before);
    a row in both gets (w_a^p + w_b^p)^(1/p).  Returns ``(indices, weights)``.
    """
    ctx = thread_context()
    ia = as_array(idx_a, (np.dtype(np.int64),), name="idx_a", ndim=1)
    ib = as_array(idx_b, (np.dtype(np.int64),), name="idx_b", ndim=1)
    wa = as_array(w_a, (np.dtype(np.float64),), name="w_a", ndim=1)
    wb = as_array(w_b, (np.dtype(np.float64),), name="w_b", ndim=1)
    with Scope(ctx) as s:
        ta, tb, twa, twb = s.wrap(ia), s.wrap(ib), s.wrap(wa), s.wrap(wb)
        pi, pw = s.out(), s.out()
        ctx.check(_lib.fn("effml_sampler_weighted_sample_merge")(ctx.handle, ta, twa, tb, twb,
                                                         c_int(offset_b, "offset_b"), float(p), byref(pi),
                                                         byref(pw)),
                  "effml_sampler_weighted_sample_merge")
        return s.adopt(pi), s.adopt(pw)


_SCORE_RULES = {"leverage": 0, "root_leverage": 1, "lewis": 2}


def check_method(method, p):
    """Validate a (method, p) pair of :func:`coreset`; return the C score rule."""
    p = float(p)
    if method == "leverage":
        if p != 2.0:
            raise InvalidArgumentError("method='leverage' is for p = 2; use 'root_leverage' "
                                       "(1 <= p <= 2) or 'lewis' (1 <= p < 4)")
    elif method == "root_leverage":
        if not 1.0 <= p <= 2.0:
            raise InvalidArgumentError("method='root_leverage' needs 1 <= p <= 2, got %g" % p)
    elif method == "lewis":
        if not 1.0 <= p < 4.0:
            raise InvalidArgumentError("method='lewis' needs 1 <= p < 4, got %g" % p)
    else:
        raise InvalidArgumentError("method must be 'leverage', 'root_leverage' or 'lewis', "
                                   "got %r" % (method,))
    return _SCORE_RULES[method]


def weighted_sample_reduce(A, w, m, p=2.0, *, method="leverage", seed=0, n_jobs=None):
    """Re-sample weighted rows back to about ``m`` rows (the reduce of merge-and-reduce).

    Row i of ``A`` with importance weight ``w[i]`` stands for w_i^p |a_i x|^p;
    scores are computed on the weighted rows w_i a_i by ``method`` (as
    :func:`coreset`), rows are kept with pi_i = min(1, m s_i / S) and get
    weight w_i pi_i^(-1/p): the weighted cost is preserved in expectation.
    Each reduce of a tree multiplies the error: depth L gives about
    (1 + eps)^L.

    Returns ``(indices, weights)``: positions into A (int64 ascending) and new weights.
    """
    rule = check_method(method, p)
    ctx = thread_context(n_jobs_to_threads(n_jobs))
    a = as_array(A, _F, name="A", ndim=2)
    wa = as_array(w, (np.dtype(np.float64),), name="w", ndim=1)
    with interruptible(ctx), Scope(ctx) as s:
        ta, tw = s.wrap(a), s.wrap(wa)
        pi, pw = s.out(), s.out()
        ctx.check(_lib.fn("effml_sampler_weighted_sample_reduce")(
            ctx.handle, None, ta, tw, float(m), float(p), rule, c_int(seed, "seed", "uint64"),
            byref(pi), byref(pw)), "effml_sampler_weighted_sample_reduce")
        return s.adopt(pi), s.adopt(pw)


def coreset(A, m, *, p=2.0, method="leverage", scheme="bernoulli", random_state=0, n_jobs=None):
    """A weighted coreset of the rows of ``A`` for lp regression.

    Parameters
    ----------
    A : (n, d) array; for regression append the target as the last column.
    m : expected sample size.
    p : the lp norm; method 'leverage' needs p = 2, 'root_leverage' 1 <= p <= 2,
        'lewis' 1 <= p < 4 (rows sampled by the sensitivity upper bounds built
        from the Lewis weights; the importance weights of
        :func:`sensitivity_sample` need p >= 1).
    scheme, random_state : see :func:`sensitivity_sample` (random_state is its seed).

    Returns ``(indices, weights)``; the coreset is ``weights[:, None] * A[indices]``
    (weights already carry the 1/p power).
    """
    p = float(p)
    if method == "leverage":
        if p != 2.0:
            raise InvalidArgumentError("method='leverage' is for p = 2; use 'root_leverage' "
                                       "(1 <= p <= 2) or 'lewis' (1 <= p < 4)")
        sc = leverage_scores(A, n_jobs=n_jobs)
    elif method == "root_leverage":
        if not 1.0 <= p <= 2.0:
            raise InvalidArgumentError("method='root_leverage' needs 1 <= p <= 2, got %g" % p)
        sc = root_leverage_scores(A, p, n_jobs=n_jobs)
    elif method == "lewis":
        if not 1.0 <= p < 4.0:
            raise InvalidArgumentError("method='lewis' needs 1 <= p < 4, got %g" % p)
        sc = sensitivity_upper_bounds(A, p, n_jobs=n_jobs)
    else:
        raise InvalidArgumentError("method must be 'leverage', 'root_leverage' or 'lewis', "
                                   "got %r" % (method,))
    seed = random_state if random_state is not None else np.random.randint(0, 2**62)
    return sensitivity_sample(sc, m, p, scheme=scheme, seed=seed)
