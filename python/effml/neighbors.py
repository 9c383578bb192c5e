"""Exact k-nearest-neighbour search (libeffml's blocked GEMM search).

The search behind every neighbour-based sampler, exposed for checking and
reuse.  Distances are Euclidean, candidates are re-ranked with exactly
computed distances, ties go to the smaller reference index.
"""

import numbers
from ctypes import byref

import numpy as np

from . import _lib
from ._core import Scope, as_array, c_int, interruptible, n_jobs_to_threads, thread_context
from ._errors import InvalidArgumentError

__all__ = ["kneighbors"]

_F = (np.dtype(np.float64), np.dtype(np.float32))


def kneighbors(X, k, query=None, *, return_distance=False, n_jobs=None):
    """The ``k`` nearest rows of ``X`` for each row of ``query``.

    Parameters
    ----------
    X : array-like, shape (n, d), float32 or float64 (others converted once)
    k : int, 1 <= k <= n (n - 1 when ``query`` is None); no other cap
    query : array-like (m, d) of X's dtype, or None
        None: query X itself; a row is never its own neighbour (by index, so
        an exact duplicate row is returned, at distance 0).
    return_distance : bool
        Also return the Euclidean distances (float64).
    n_jobs : threads (None = 1, -1 = all CPUs).

    Returns
    -------
    indices : int64 array (m, k), nearest first
    distances : float64 array (m, k), only with ``return_distance``

    Raises ValueError subclasses for bad k, shapes, dtypes or NaN/inf.
    """
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or int(k) < 1:
        # 0 must not reach C, where 0 would mean "the default".
        raise InvalidArgumentError("k must be an int >= 1, got %r" % (k,))
    ctx = thread_context(n_jobs_to_threads(n_jobs))
    xa = as_array(X, _F, name="X", ndim=2)
    qa = None if query is None else as_array(query, (xa.dtype,), name="query", ndim=2)
    with interruptible(ctx), Scope(ctx) as s:
        tx = s.wrap(xa)
        tq = None if qa is None else s.wrap(qa)
        pi, pd = s.out(), s.out()
        ctx.check(_lib.fn("effml_sampler_knn")(ctx.handle, tx, tq, c_int(k, "k"), byref(pi),
                                       byref(pd) if return_distance else None), "effml_sampler_knn")
        idx = s.adopt(pi)
        dist = s.adopt(pd) if return_distance else None
    return (idx, dist) if return_distance else idx
