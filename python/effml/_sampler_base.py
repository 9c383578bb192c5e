"""The base class of the imbalanced-learn drop-in samplers.

A sampler subclass declares, as class attributes, the C method code
(``_method``, an ``EFFML_SAMPLER_RESAMPLE_*``), its kind (``_sampling_type``:
"over-sampling", "under-sampling" or "clean-sampling") and how its output is
made (``_by_index``: True when every output row is an input row, so the
output is ``X[sample_indices_]`` and X may be any array; False when C
generates new rows).  It writes an explicit ``__init__`` with imblearn's
parameter names (scikit-learn's ``get_params`` reads them from the
signature) and, if it has method options, a ``_set_options(opt, n_features)``.
Nothing else: validation, labels, ``sampling_strategy``, ``random_state``,
threads, pandas and the C calls are here.  A sampler added to the C library
later is a dozen lines (see :class:`effml.under_sampling.TomekLinks`).

Estimators hold only their parameters (no C handle, no context): each call
uses the calling thread's context, so they pickle, ``clone`` and run under
``GridSearchCV(n_jobs=...)`` in other processes.
"""

import ctypes
import math
import numbers
from collections import OrderedDict
from ctypes import byref

import numpy as np

from . import _lib
from ._core import (Scope, _is_frame, as_array, c_int, empty_error, interruptible,
                    n_jobs_to_threads, thread_context)
from ._errors import DtypeError, InvalidArgumentError, UnsupportedError

try:  # scikit-learn gives get_params/set_params/clone/repr; optional
    from sklearn.base import BaseEstimator as _Base
except ImportError:  # pragma: no cover - exercised only without sklearn
    import inspect

    class _Base:
        """Minimal get_params/set_params when scikit-learn is not installed."""

        @classmethod
        def _get_param_names(cls):
            sig = inspect.signature(cls.__init__)
            return sorted(p.name for p in sig.parameters.values()
                          if p.name != "self" and p.kind != p.VAR_KEYWORD)

        def get_params(self, deep=True):
            return {k: getattr(self, k) for k in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for k, v in params.items():
                if k not in valid:
                    raise ValueError("invalid parameter %r for %s" % (k, type(self).__name__))
                setattr(self, k, v)
            return self


STRATEGY_AUTO, STRATEGY_MINORITY, STRATEGY_NOT_MINORITY, STRATEGY_NOT_MAJORITY = 0, 1, 2, 3
STRATEGY_ALL, STRATEGY_MAJORITY, STRATEGY_RATIO, STRATEGY_TARGETS = 4, 5, 6, 7

_STR_STRATEGIES = {"auto": STRATEGY_AUTO, "minority": STRATEGY_MINORITY,
                   "not minority": STRATEGY_NOT_MINORITY, "not majority": STRATEGY_NOT_MAJORITY,
                   "all": STRATEGY_ALL, "majority": STRATEGY_MAJORITY}
_ALLOWED_STR = {
    "over-sampling": ("auto", "minority", "not minority", "not majority", "all"),
    "under-sampling": ("auto", "majority", "not minority", "not majority", "all"),
    "clean-sampling": ("auto", "majority", "not minority", "not majority", "all"),
}

RESAMPLE_SMOTE, RESAMPLE_BORDERLINE1, RESAMPLE_BORDERLINE2, RESAMPLE_ADASYN = 1, 2, 3, 4
RESAMPLE_SMOTENC, RESAMPLE_RANDOM_OVER, RESAMPLE_RANDOM_UNDER = 5, 6, 7
RESAMPLE_TOMEK, RESAMPLE_ENN = 8, 9
RESAMPLE_NEARMISS, RESAMPLE_RENN, RESAMPLE_ALLKNN, RESAMPLE_NCL = 10, 11, 12, 13
RESAMPLE_CNN, RESAMPLE_OSS, RESAMPLE_SMOTEENN, RESAMPLE_SMOTETOMEK = 14, 15, 16, 17
RESAMPLE_CLUSTER_CENTROIDS, RESAMPLE_IHT = 18, 19
RESAMPLE_SVMSMOTE, RESAMPLE_KMEANS_SMOTE, RESAMPLE_SMOTEN = 20, 21, 22


#: ``effml_sampler_proba_fn``: (user_data, x_train, y_train, n_train, x_test, n_test,
#: n_features, classes, n_classes, proba) -> int
PROBA_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_double),
                            ctypes.POINTER(ctypes.c_int64), ctypes.c_int64,
                            ctypes.POINTER(ctypes.c_double), ctypes.c_int64, ctypes.c_int64,
                            ctypes.POINTER(ctypes.c_int64), ctypes.c_int64,
                            ctypes.POINTER(ctypes.c_double))



#: Outputs of this many bytes or more are allocated by the C library and adopted
#: (zero-copy) instead of written into numpy arrays: the library's default
#: allocator gives blocks of 32 MiB and more a 2 MiB-aligned mapping advised for
#: transparent huge pages (docs/conventions.md, "Memory"), which measured ~5 %
#: faster end to end than numpy's arrays for SMOTE's 97 MB output.  Smaller
#: outputs go through effml_sampler_resample_into (one exact-size write).
_LIBRARY_MAPS_BYTES = 32 << 20

class ResampleOptions(ctypes.Structure):
    """Mirror of ``effml_sampler_resample_options`` (include/effml/sampler.h)."""

    _fields_ = [("struct_size", ctypes.c_uint32), ("method", ctypes.c_int32),
                ("sampling_strategy", ctypes.c_int32), ("ratio", ctypes.c_double),
                ("n_targets", ctypes.c_int64),
                ("target_labels", ctypes.POINTER(ctypes.c_int64)),
                ("target_counts", ctypes.POINTER(ctypes.c_int64)),
                ("k_neighbors", ctypes.c_int64), ("m_neighbors", ctypes.c_int64),
                ("n_neighbors", ctypes.c_int64), ("kind_sel", ctypes.c_int32),
                ("seed", ctypes.c_uint64), ("block_rows", ctypes.c_int64),
                ("n_categorical", ctypes.c_int64),
                ("categorical_features", ctypes.POINTER(ctypes.c_int64)),
                ("version", ctypes.c_int32), ("allow_minority", ctypes.c_int32),
                ("n_neighbors_ver3", ctypes.c_int64), ("max_iter", ctypes.c_int64),
                ("threshold_cleaning", ctypes.c_double), ("n_seeds_S", ctypes.c_int64),
                ("voting", ctypes.c_int32), ("reserved0", ctypes.c_int32),
                ("kmeans_n_init", ctypes.c_int64), ("kmeans_max_iter", ctypes.c_int64),
                ("kmeans_tol", ctypes.c_double), ("proba_fn", PROBA_FN),
                ("proba_user_data", ctypes.c_void_p), ("cv", ctypes.c_int64),
                ("n_support", ctypes.c_int64),
                ("support_indices", ctypes.POINTER(ctypes.c_int64)),
                ("out_step", ctypes.c_double), ("n_clusters", ctypes.c_int64),
                ("cluster_balance_threshold", ctypes.c_double),
                ("density_exponent", ctypes.c_double)]


_F = (np.dtype(np.float64), np.dtype(np.float32))


def neighbors_k(value, name, extra=1):
    """imblearn's neighbour parameter -> our k.

    An int is k itself.  An object with ``n_neighbors`` (e.g. scikit-learn's
    ``NearestNeighbors``) is used as imblearn uses it: it is queried on the
    training rows, so its first neighbour is the row itself and k =
    ``n_neighbors - extra``.  Only its k is taken: the search is always
    libeffml's exact Euclidean search, so an object with another metric is
    refused rather than silently ignored.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if c_int(value, name) < 1:
            # 0 must not reach C, where 0 means "the method's default".
            raise InvalidArgumentError("%s must be an int >= 1, got %r" % (name, value))
        return int(value)
    k = getattr(value, "n_neighbors", None)
    if k is None:
        raise InvalidArgumentError(
            "%s must be an int or an object with n_neighbors (e.g. NearestNeighbors), got %r"
            % (name, value))
    metric = getattr(value, "metric", "minkowski")
    p = getattr(value, "p", 2)
    if not (metric in ("euclidean", "l2") or (metric == "minkowski" and p in (2, None))):
        raise UnsupportedError(
            "%s=%r: only its n_neighbors is used and the search is exact Euclidean; "
            "metric=%r p=%r is not supported" % (name, value, metric, p))
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or int(k) - extra < 1:
        raise InvalidArgumentError(
            "%s=%r: its n_neighbors must be an int >= %d, got %r" % (name, value, 1 + extra, k))
    return c_int(k, name) - extra


def _dict_count(label, value):
    """A sample count from a ``sampling_strategy`` dict: an integer (or a float
    with an integral value, e.g. 100.0).  100.7 is refused naming the class and
    the value (imbalanced-learn raises TypeError there; truncating it to 100
    would resample a count nobody asked for)."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (numbers.Real, np.floating)) and not isinstance(value, (bool, np.bool_)) \
            and math.isfinite(value) and float(value) == int(value):
        return int(value)
    raise DtypeError("sampling_strategy[%r]=%r: the number of samples of a class must be "
                     "an integer" % (label, value))


def seed_from(random_state):
    """A 64-bit seed from scikit-learn's ``random_state`` (None, int or RandomState).

    None draws from numpy's global generator (a new stream per call, as
    imblearn); a RandomState instance is advanced by one draw.
    """
    if random_state is None or isinstance(random_state, np.random.RandomState):
        rs = np.random.mtrand._rand if random_state is None else random_state
        return int(rs.randint(0, 2**63 - 1, dtype=np.int64))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return c_int(random_state, "random_state", "uint64")
    raise InvalidArgumentError(
        "random_state must be None, an int or a numpy RandomState, got %r" % (random_state,))


def _is_sparse(X):
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def _check_X_y(X, y):
    """(X, y_1d) with basic checks; X untouched (a DataFrame stays one)."""
    if X is None:
        raise InvalidArgumentError("X is None")
    ya = np.asarray(y)
    if ya.ndim == 2 and ya.shape[1] == 1:
        ya = ya.ravel()
    if ya.ndim != 1:
        raise InvalidArgumentError("y must be 1-D (one label per row), got shape %s"
                                   % (ya.shape,))
    n = X.shape[0] if hasattr(X, "shape") else len(X)
    if n == 0:
        raise empty_error("X", tuple(X.shape) if hasattr(X, "shape") else (0,), rows=True)
    if n != ya.shape[0]:
        from ._errors import ShapeError
        raise ShapeError("X has %d rows but y has %d labels" % (n, ya.shape[0]))
    if ya.dtype.kind == "f" and not np.all(np.isfinite(ya)):
        raise InvalidArgumentError("y contains NaN or infinity")
    if ya.dtype.kind == "f" and np.any(ya != np.round(ya)):
        raise InvalidArgumentError(
            "y looks continuous (non-integer floats); samplers need class labels")
    return ya


class _Labels:
    """y as C labels: integer y is passed as is (no copy for int32/int64),
    anything else (strings, floats, ...) is encoded to int64 codes."""

    def __init__(self, y):
        self.y = y
        if y.dtype.kind in "iu" and y.dtype != np.uint64:
            self.encoded = False
            self.c = y if y.dtype in (np.dtype(np.int64), np.dtype(np.int32)) \
                else y.astype(np.int64)
            self.c = np.ascontiguousarray(self.c)
            self.classes = None
        else:
            self.encoded = True
            self.classes, codes = np.unique(y, return_inverse=True)
            self.c = codes.astype(np.int64, copy=False)

    def to_c(self, label):
        """A user-facing label -> its C label."""
        if not self.encoded:
            if isinstance(label, (numbers.Integral, np.integer)) and not isinstance(label, bool):
                return int(label)
            raise InvalidArgumentError("class %r is not an integer label of y" % (label,))
        i = np.searchsorted(self.classes, label)
        if i >= len(self.classes) or self.classes[i] != label:
            raise InvalidArgumentError("class %r in sampling_strategy is not in y" % (label,))
        return int(i)

    def from_c(self, labels):
        """C labels (array) -> user-facing labels."""
        return self.classes[labels] if self.encoded else labels

    def counts(self):
        """OrderedDict label -> count, sorted by label."""
        if self.encoded:
            cnt = np.bincount(self.c, minlength=len(self.classes))
            return OrderedDict((c, int(n)) for c, n in zip(self.classes.tolist(), cnt))
        c = self.c
        if c.size:
            lo, hi = int(c.min()), int(c.max())
            if lo >= 0 and hi < 4 * c.size + 1024:  # small non-negative labels: no sort
                cnt = np.bincount(c)
                u = np.flatnonzero(cnt)
                return OrderedDict((int(a), int(b)) for a, b in zip(u, cnt[u]))
        u, cnt = np.unique(c, return_counts=True)
        return OrderedDict((int(a), int(b)) for a, b in zip(u, cnt))


class BaseSampler(_Base):
    """Shared machinery of the drop-in samplers (see the module docstring).

    Public API, as imbalanced-learn's ``BaseSampler``: :meth:`fit`,
    :meth:`fit_resample`, the ``sampling_strategy_`` attribute and, for
    samplers that only select rows, ``sample_indices_``.
    """

    _estimator_type = "sampler"
    _method = None
    _sampling_type = "over-sampling"
    _by_index = False

    # ---- hooks for subclasses
    def _set_options(self, opt, n_features):
        """Write method-specific fields of ``opt`` (a ResampleOptions)."""

    def _threads(self):
        return n_jobs_to_threads(getattr(self, "n_jobs", None))

    # ---- imblearn API
    def fit(self, X, y):
        """Check the inputs and compute ``sampling_strategy_``; return self."""
        ya = _check_X_y(X, y)
        labels = _Labels(ya)
        self._resolve(labels, X, fit_only=True)
        return self

    def _check(self, ctx, st, fname):
        """ctx.check, but an exception raised in a Python callback wins (re-raised)."""
        pend = getattr(self, "_pending", None)
        if pend:
            self._pending = []
            raise pend[0]
        ctx.check(st, fname)

    def fit_resample(self, X, y):
        """Resample the data set.

        Parameters
        ----------
        X : array-like or pandas DataFrame, shape (n_samples, n_features)
            Samplers that generate rows need numeric X (float32 stays
            float32; other numeric dtypes are converted to float64 once).
            Samplers that only select rows accept any X (strings, mixed
            DataFrames, scipy sparse for the random samplers).
        y : array-like or pandas Series, shape (n_samples,)
            Class labels of any type.

        Returns
        -------
        X_resampled, y_resampled
            Same kind as the inputs (a DataFrame/Series stays one, with a
            new RangeIndex and the original column dtypes).
        """
        ya = _check_X_y(X, y)
        labels = _Labels(ya)
        ctx = thread_context(self._threads())
        opt, keep = self._resolve(labels, X, fit_only=False)
        if self._by_index:
            idx = self._plan_indices(ctx, opt, X, labels)
            self.sample_indices_ = idx
            X_res = _take_rows(X, idx)
            y_res = ya[idx]
        else:
            X_res, y_res = self._generate(ctx, opt, X, labels)
        return _wrap_like(X, X_res), _wrap_like(y, y_res)

    def fit_resample_plan(self, X, y):
        """The re-sampling as a plan, without materialising it (libeffml extension).

        Returns ``(base, neighbor, step)``: int64, int64, float64 arrays of one
        entry per output row of :meth:`fit_resample` with the same
        ``random_state``.  Output row r is ``X[base[r]] + step[r] *
        (X[neighbor[r]] - X[base[r]])``, or a copy of ``X[base[r]]`` when
        ``neighbor[r] == -1``; its label is ``y[base[r]]``.  Use it to
        generate rows in a stream, or to check where each synthetic row
        comes from.  SMOTENC cannot be planned (UnsupportedError).
        """
        ya = _check_X_y(X, y)
        labels = _Labels(ya)
        ctx = thread_context(self._threads())
        opt, keep = self._resolve(labels, X, fit_only=False)
        n = labels.c.shape[0]
        if self._method in (RESAMPLE_RANDOM_OVER, RESAMPLE_RANDOM_UNDER):
            xa = np.zeros((n, 1))
        else:
            xa = self._x_float(X)
        with interruptible(ctx), Scope(ctx) as s:
            tx, ty = s.wrap(xa), s.wrap(labels.c)
            pb, pn, ps = s.out(), s.out(), s.out()
            ctx.check(_lib.fn("effml_sampler_resample_plan")(ctx.handle, byref(opt), tx, ty,
                                                     byref(pb), byref(pn), byref(ps)),
                      "effml_sampler_resample_plan")
            return s.adopt(pb), s.adopt(pn), s.adopt(ps)

    # ---- internals
    def _options(self, labels, n_features, keep):
        opt = ResampleOptions()
        _lib.fn("effml_sampler_resample_options_init")(byref(opt))
        opt.method = self._method
        ss = self.sampling_strategy
        kind = self._sampling_type
        if callable(ss) and not isinstance(ss, str):
            ss = ss(labels.y)
            if not isinstance(ss, dict):
                raise InvalidArgumentError(
                    "sampling_strategy callable must return a dict, got %r" % (ss,))
        if isinstance(ss, str):
            if ss not in _ALLOWED_STR[kind]:
                raise InvalidArgumentError(
                    "sampling_strategy=%r is not allowed for %s; use one of %s"
                    % (ss, kind, ", ".join(repr(s) for s in _ALLOWED_STR[kind])))
            opt.sampling_strategy = _STR_STRATEGIES[ss]
        elif isinstance(ss, numbers.Real) and not isinstance(ss, bool):
            if kind == "clean-sampling":
                raise InvalidArgumentError(
                    "sampling_strategy cannot be a float for cleaning samplers")
            opt.sampling_strategy = STRATEGY_RATIO
            opt.ratio = float(ss)
        elif isinstance(ss, dict):
            if kind == "clean-sampling":
                raise InvalidArgumentError(
                    "sampling_strategy as a dict is not allowed for cleaning samplers; "
                    "give the list of classes to clean")
            lab = np.array([labels.to_c(k) for k in ss], dtype=np.int64)
            cnt = np.array([_dict_count(k, v) for k, v in ss.items()], dtype=np.int64)
            keep += [lab, cnt]
            opt.sampling_strategy = STRATEGY_TARGETS
            opt.n_targets = len(lab)
            opt.target_labels = lab.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
            opt.target_counts = cnt.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
        elif isinstance(ss, (list, tuple, np.ndarray)) and kind == "clean-sampling":
            lab = np.array([labels.to_c(k) for k in ss], dtype=np.int64)
            keep.append(lab)
            opt.sampling_strategy = STRATEGY_TARGETS
            opt.n_targets = len(lab)
            opt.target_labels = lab.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
        else:
            raise InvalidArgumentError(
                "sampling_strategy must be a str, float, dict%s or callable, got %r"
                % (", list" if kind == "clean-sampling" else "", ss))
        opt.seed = seed_from(getattr(self, "random_state", None))
        self._set_options(opt, n_features)
        return opt

    def _resolve(self, labels, X, fit_only):
        """Build the options and compute ``sampling_strategy_``."""
        keep = []
        n_features = X.shape[1] if hasattr(X, "shape") and len(X.shape) == 2 else 1
        opt = self._options(labels, n_features, keep)
        ctx = thread_context()
        yc = labels.c
        with Scope(ctx) as s:
            ty = s.wrap(yc)
            pl, pv = s.out(), s.out()
            ctx.check(_lib.fn("effml_sampler_strategy_resolve")(
                ctx.handle, byref(opt), ty, byref(pl), byref(pv)),
                "effml_sampler_strategy_resolve")
            cl = s.adopt(pl)
            vals = s.adopt(pv)
        out = OrderedDict()
        # (cleaning samplers report the minority count; the others need no count here)
        n_min = min(labels.counts().values()) if self._sampling_type == "clean-sampling" else 0
        for c, v in zip(labels.from_c(cl).tolist(), vals.tolist()):
            if v >= 0:
                out[c] = n_min if self._sampling_type == "clean-sampling" else int(v)
        self.sampling_strategy_ = out
        return opt, keep

    def _x_float(self, X):
        if _is_sparse(X):
            raise DtypeError("%s needs a dense X; scipy sparse input is not supported "
                             "(use X.toarray())" % type(self).__name__)
        if _is_frame(X):
            _refuse_frame_na(X, "X")
        xa = X if _is_frame(X) else (X.to_numpy() if hasattr(X, "to_numpy") else X)
        return as_array(xa, _F, name="X", ndim=2)

    def _plan_indices(self, ctx, opt, X, labels):
        """Rows kept/copied (``base`` of the C plan), as an int64 array."""
        n = labels.c.shape[0]
        if self._method in (RESAMPLE_RANDOM_OVER, RESAMPLE_RANDOM_UNDER):
            xa = np.zeros((n, 1))  # random samplers look at y only; any X is indexed
        else:
            xa = self._x_float(X)
        with interruptible(ctx), Scope(ctx) as s:
            tx, ty = s.wrap(xa), s.wrap(labels.c)
            pb, pn, ps = s.out(), s.out(), s.out()
            self._check(ctx, _lib.fn("effml_sampler_resample_plan")(
                ctx.handle, byref(opt), tx, ty, byref(pb), byref(pn), byref(ps)),
                "effml_sampler_resample_plan")
            return s.adopt(pb)

    def _generate(self, ctx, opt, X, labels):
        xa = self._x_float(X)
        with interruptible(ctx):
            xr, yr = self._generate_c(ctx, opt, xa, labels)
        yr = labels.from_c(yr)
        if not labels.encoded and yr.dtype != labels.y.dtype:
            yr = yr.astype(labels.y.dtype)
        return xr, yr

    def _generate_c(self, ctx, opt, xa, labels):
        """The C call of :meth:`_generate`: (rows, C labels)."""
        if _lib.has("effml_sampler_resample_into") and \
                self._method not in (RESAMPLE_SMOTENC, RESAMPLE_CLUSTER_CENTROIDS):
            cap = self._output_rows_bound(xa, labels)
            if cap * xa.shape[1] * xa.itemsize < _LIBRARY_MAPS_BYTES:
                return self._generate_into(ctx, opt, xa, labels, cap)
        with Scope(ctx) as s:
            tx, ty = s.wrap(xa), s.wrap(labels.c)
            px, py = s.out(), s.out()
            ctx.check(_lib.fn("effml_sampler_resample")(ctx.handle, byref(opt), tx, ty,
                                                        byref(px), byref(py)),
                      "effml_sampler_resample")
            return s.adopt(px), s.adopt(py)

    def _output_rows_bound(self, xa, labels):
        """An upper bound on the rows the C call writes (the _into path's capacity)."""
        n = xa.shape[0]
        gen = getattr(self, "sampling_strategy_", {}) or {}
        cap = n + sum(gen.values()) if self._sampling_type == "over-sampling" else n
        if self._method == RESAMPLE_ADASYN:  # rint per row: up to half a row more per row
            counts = labels.counts()
            cap += sum(counts[c] for c in gen) // 2 + 1
        return cap

    def _generate_into(self, ctx, opt, xa, labels, cap):
        """Resample into numpy arrays allocated here (the C call writes the rows once);
        cap: :meth:`_output_rows_bound`."""
        d = xa.shape[1]
        f = _lib.fn("effml_sampler_resample_into")
        for _ in range(2):
            xo = np.empty((cap, d), dtype=xa.dtype)
            yo = np.empty(cap, dtype=labels.c.dtype)
            n_out = ctypes.c_int64(0)
            with Scope(ctx) as s:
                tx, ty = s.wrap(xa), s.wrap(labels.c)
                st = f(ctx.handle, byref(opt), tx, ty, s.wrap(xo, True), s.wrap(yo, True),
                       byref(n_out))
            if st == -2 and n_out.value > cap:  # EFFML_E_SHAPE: too small; size reported
                cap = n_out.value
                continue
            self._check(ctx, st, "effml_sampler_resample_into")
            m = n_out.value
            return (xo, yo) if m == cap else (xo[:m], yo[:m])
        raise RuntimeError("effml_sampler_resample_into: output size changed between calls")


def _take_rows(X, idx):
    if hasattr(X, "iloc"):
        return X.iloc[idx]
    if _is_sparse(X):
        return X.tocsr()[idx]
    return np.asarray(X)[idx]


def _cast_column(values, dtype):
    """Computed (float) column ``values`` back to a frame column's ``dtype``.

    One rule for plain numpy and pandas nullable dtypes alike: integer
    columns (int64, uint8, ``Int64``, ...) truncate toward zero, as numpy's
    ``astype`` does for the plain ones and imbalanced-learn does (a synthetic
    2.7 becomes 2, -0.5 becomes 0); bool and ``boolean`` columns take nonzero
    as True (numpy's ``astype(bool)``); float columns keep the value.
    pandas refuses to cast 2.7 to ``Int64`` at all, hence the explicit trunc.
    """
    import pandas as pd
    v = np.asarray(values)
    kind = getattr(dtype, "kind", "O")
    if v.dtype.kind == "f" and kind in "iu":
        v = np.trunc(v)
    elif v.dtype.kind == "f" and kind == "b":
        v = v != 0
    return pd.Series(v, copy=False).astype(dtype)


def _frame_like(orig, res):
    """2-D array ``res`` as a DataFrame with ``orig``'s columns and dtypes (see
    :func:`_cast_column`), a new RangeIndex."""
    import pandas as pd
    cols = [_cast_column(res[:, j], dt) for j, dt in enumerate(orig.dtypes)]
    out = pd.concat(cols, axis=1, ignore_index=True) if cols else pd.DataFrame(res)
    out.columns = orig.columns
    return out


def _refuse_frame_na(X, what):
    """InvalidArgumentError naming the first pandas nullable column of frame ``X`` that holds
    pd.NA (a sampler interpolates between rows: missing values must be filled first)."""
    for j, dt in enumerate(X.dtypes):
        if isinstance(dt, np.dtype) or getattr(dt, "kind", "O") not in "biuf":
            continue  # plain numpy columns: NaN is refused by C, naming row and column;
            # non-numeric ones by _frame_to_numpy, naming the column
        na = np.asarray(X.iloc[:, j].isna())
        if na.any():
            from ._core import api_caller
            where = api_caller()
            raise InvalidArgumentError(
                "%s%s column %r (%s) holds a missing value (pd.NA) at row %d; this sampler "
                "computes on X and needs complete data: fill or drop the missing values first"
                % ("%s: " % where if where else "", what, X.columns[j], dt,
                   int(np.flatnonzero(na)[0])))


def _wrap_like(orig, res):
    """Return ``res`` as the same kind of container as ``orig`` (pandas stays pandas)."""
    mod = type(orig).__module__
    if mod.startswith("pandas"):
        import pandas as pd
        if isinstance(orig, pd.DataFrame):
            if isinstance(res, pd.DataFrame):
                return res.reset_index(drop=True)
            return _frame_like(orig, np.asarray(res))
        if isinstance(orig, pd.Series):
            if isinstance(res, pd.Series):
                return res.reset_index(drop=True)
            return pd.Series(res, dtype=orig.dtype, name=orig.name)
    if isinstance(orig, list) and not _is_sparse(res):
        return np.asarray(res)
    return res
