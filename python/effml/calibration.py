"""Post-hoc probability calibration and calibration metrics (C: ``effml/calibration.h``).

>>> ts = TemperatureScaling().fit(val_logits, y_val)     # fitted by NLL
>>> p = ts.predict_proba(test_logits)                    # softmax(z / T)
>>> conf, ok = confidence_correct(p, y_test)
>>> ece(conf, ok, n_bins=15), brier_score(p, y_test)

Calibrators follow scikit-learn's conventions: hyperparameters in
``__init__``, ``fit(logits, y)`` returns ``self``, fitted state in attributes
ending in ``_`` (``params_``, ``n_classes_``, ...), and they pickle.  Every
call builds a C calibrator from ``params_`` in the calling thread's context
and frees it, so one fitted calibrator can be used from several threads.

- :class:`TemperatureScaling`: z / T, one T > 0 minimising the mean NLL
  (Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural
  Networks", ICML 2017, arXiv 1706.04599, Sec. 4.2).  Never changes the
  predicted class.
- :class:`VectorScaling`: a * z + b per class, by NLL (same paper and
  section).  Can change the predicted class.
- :class:`CorrectnessAwareCalibrator`: a per-sample temperature
  T(f) = clamp(w2' ReLU(W1 f + b1) + b2, t_min, t_max) from the model's
  probabilities on transformed *views* of each sample, fitted with the
  correctness-aware loss of Liu, Wang, Zou, Zou & Zheng, "Optimizing
  Calibration by Gaining Aware of Prediction Correctness" (2024, arXiv
  2404.13016, Sec. 3).  The caller runs its model on the transformed inputs
  and passes the logits of each view (``views=[z_1, ..., z_V]``).

Metrics take top-label confidences and correctness flags
(:func:`confidence_correct` makes them from probabilities and labels) and
depend only on the multiset of (confidence, correct) pairs: :func:`ece`
(equal-width or adaptive bins, norm 1 or 2), :func:`reliability_bins`,
:func:`brier_score` (multiclass) and :func:`augrc` (Traub et al., NeurIPS
2024, arXiv 2407.01032) beside :func:`effml.selective.aurc`.
"""

import ctypes
from ctypes import byref, c_double, c_int32, c_int64, c_uint32, c_uint64, c_void_p

import numpy as np

from . import _lib
from ._core import Scope, as_array, c_int, thread_context
from ._errors import InvalidArgumentError, ShapeError
from ._sampler_base import _Base

__all__ = ["TemperatureScaling", "VectorScaling", "CorrectnessAwareCalibrator", "ca_features",
           "confidence_correct", "softmax", "ece", "reliability_bins", "brier_score", "augrc"]

_P = c_void_p
_D = ctypes.POINTER(c_double)
_lib.PROTOTYPES.update({
    "effml_calibration_options_init": (None, [_P]),
    "effml_calibration_create": (c_int32, [_P, _P, _P]),
    "effml_calibration_free": (None, [_P]),
    "effml_calibration_fit": (c_int32, [_P, _P, _P, _P, _P]),
    "effml_calibration_apply": (c_int32, [_P, _P, _P, _P, _P]),
    "effml_calibration_loss": (c_int32, [_P, _P, _P, _P, _P, _D, _D]),
    "effml_calibration_num_params": (c_int64, [_P]),
    "effml_calibration_get_params": (c_int32, [_P, _P, _D]),
    "effml_calibration_set_params": (c_int32, [_P, _P, _D]),
    "effml_calibration_ca_features": (c_int32, [_P, _P, c_int32, _P, c_int64, _P]),
    "effml_calibration_reliability": (c_int32, [_P, _P, _P, c_int32, c_int32, _P, _D, _D, _D]),
    "effml_calibration_ece": (c_int32, [_P, _P, _P, c_int32, c_int32, c_int32, _D]),
    "effml_calibration_brier": (c_int32, [_P, _P, _P, _D]),
    "effml_metrics_selective_augrc": (c_int32, [_P, _P, _P, _D]),
    "effml_cascade_set_stage_calibration": (c_int32, [_P, _P, c_int32, _P]),
})

_TEMPERATURE, _VECTOR, _CORRECTNESS_AWARE = 1, 2, 3
_BINNINGS = {"equal_width": 0, "adaptive": 1}
_F = (np.dtype(np.float64), np.dtype(np.float32))
_I = (np.dtype(np.int64), np.dtype(np.int32))
_B = (np.dtype(np.uint8), np.dtype(np.bool_), np.dtype(np.int32), np.dtype(np.int64))


class CalibrationOptions(ctypes.Structure):
    """Mirror of ``effml_calibration_options`` (include/effml/calibration.h)."""

    _fields_ = [("struct_size", c_uint32), ("method", c_int32), ("num_classes", c_int64),
                ("num_features", c_int64), ("hidden", c_int64), ("t_min", c_double),
                ("t_max", c_double), ("balance", c_int32), ("lr", c_double),
                ("epochs", c_int64), ("batch_size", c_int64), ("seed", c_uint64),
                ("max_iter", c_int32)]


def _logits(a, name="logits"):
    z = as_array(a, _F, name=name, ndim=2)
    if z.shape[0] < 1 or z.shape[1] < 2:
        raise ShapeError("%s must be [n, K] with n >= 1 and K >= 2 classes, got shape %s"
                         % (name, z.shape))
    return z


def _labels(y, n, name="y"):
    ya = np.asarray(y)
    if ya.dtype.kind == "f":
        if not np.all(np.isfinite(ya)) or np.any(ya != np.trunc(ya)):
            raise InvalidArgumentError("%s must hold integer class labels" % name)
    elif ya.dtype.kind not in "iub":
        raise InvalidArgumentError("%s must hold integer class labels, got dtype %s"
                                   % (name, ya.dtype))
    ya = as_array(ya, _I, name=name, ndim=1)
    if ya.shape[0] != n:
        raise ShapeError("%s has %d labels but logits have %d rows" % (name, ya.shape[0], n))
    return ya


def softmax(logits):
    """Row-wise softmax (max subtracted) of ``logits`` [n, K] as float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def ca_features(logits, views, top_k=4):
    """Inputs of the correctness-aware calibrator (Liu et al. 2024, Sec. 3).

    For each sample, the ``top_k`` classes of ``logits`` (by logit,
    descending, ties to the lower index); for each view v, the view's
    softmax probabilities at those classes:
    ``features[i, v * top_k + j] = softmax(views[v][i])[c_ij]``.

    logits : float [n, K], the model on the untransformed inputs
    views : list of V float [n, K] arrays, the model on transformed copies
        (row i of every view is sample i)
    Returns float64 [n, V * top_k].
    """
    z = _logits(logits)
    if isinstance(views, np.ndarray) and views.ndim == 2:
        raise InvalidArgumentError("views must be a list of [n, K] logit arrays (one per view), "
                                   "not one 2-D array")
    try:
        vs = [_logits(v, "views[%d]" % i) for i, v in enumerate(views)]
    except TypeError:
        raise InvalidArgumentError("views must be a list of [n, K] logit arrays, got %r"
                                   % type(views).__name__) from None
    if not vs:
        raise InvalidArgumentError("views must hold at least one [n, K] logit array")
    top_k = c_int(top_k, "top_k", "int64", 1, z.shape[1])
    ctx = thread_context()
    out = np.empty((z.shape[0], len(vs) * top_k))
    with Scope(ctx) as s:
        tz = s.wrap(z)
        arr = (c_void_p * len(vs))(*[s.wrap(v) for v in vs])
        ctx.check(_lib.fn("effml_calibration_ca_features")(ctx.handle, tz, len(vs), arr, top_k,
                                                             s.wrap(out, True)),
                  "effml_calibration_ca_features")
    return out


class _Calibrator(_Base):
    """Shared fit/transform over one C calibrator built per call from ``params_``."""

    _method = None

    def _opts(self, n_classes, n_features=None):
        o = CalibrationOptions()
        _lib.fn("effml_calibration_options_init")(byref(o))
        o.method = self._method
        o.num_classes = n_classes
        self._fill(o, n_features)
        return o

    def _fill(self, o, n_features):
        o.max_iter = c_int(self.max_iter, "max_iter", "int32")

    def _features(self, z, views, fitting):
        if views is not None:
            raise InvalidArgumentError("%s takes no views (only CorrectnessAwareCalibrator does)"
                                       % type(self).__name__)
        return None

    def _create(self, ctx, n_classes, n_features, params=None):
        h = c_void_p()
        ctx.check(_lib.fn("effml_calibration_create")(ctx.handle,
                                                        byref(self._opts(n_classes, n_features)),
                                                        byref(h)), "effml_calibration_create")
        if params is not None:
            p = np.ascontiguousarray(params, dtype=np.float64)
            st = _lib.fn("effml_calibration_set_params")(ctx.handle, h.value,
                                                         p.ctypes.data_as(_D))
            if st:
                _lib.fn("effml_calibration_free")(h.value)
                ctx.check(st, "effml_calibration_set_params")
        return h.value

    def _check_fitted(self, z):
        if not hasattr(self, "params_"):
            from ._errors import StateError
            raise StateError("%s is not fitted: call fit(logits, y) first" % type(self).__name__)
        if z.shape[1] != self.n_classes_:
            raise ShapeError("logits have %d classes, the calibrator was fitted on %d"
                             % (z.shape[1], self.n_classes_))

    def fit(self, logits, y, views=None):
        """Fit on validation ``logits`` [n, K] (float32/64) and labels ``y`` [n] in [0, K)."""
        z = _logits(logits)
        ya = _labels(y, z.shape[0])
        f = self._features(z, views, True)
        ctx = thread_context()
        h = self._create(ctx, z.shape[1], None if f is None else f.shape[1])
        try:
            with Scope(ctx) as s:
                ctx.check(_lib.fn("effml_calibration_fit")(ctx.handle, h, s.wrap(z),
                                                            None if f is None else s.wrap(f),
                                                            s.wrap(ya)), "effml_calibration_fit")
            n = _lib.fn("effml_calibration_num_params")(h)
            p = np.empty(n)
            ctx.check(_lib.fn("effml_calibration_get_params")(ctx.handle, h, p.ctypes.data_as(_D)),
                      "effml_calibration_get_params")
        finally:
            _lib.fn("effml_calibration_free")(h)
        self.n_classes_ = z.shape[1]
        self.n_features_ = None if f is None else f.shape[1]
        self.params_ = p
        self._set_attrs()
        return self

    def _set_attrs(self):
        pass

    def _c_handle(self, ctx):
        """A new C calibrator holding ``params_`` (the caller frees it with effml_calibration_free)."""
        if not hasattr(self, "params_"):
            from ._errors import StateError
            raise StateError("%s is not fitted: call fit(logits, y) first" % type(self).__name__)
        return self._create(ctx, self.n_classes_, self.n_features_, self.params_)

    def transform(self, logits, views=None):
        """Calibrated logits, same shape and dtype (float32 or float64) as ``logits``."""
        z = _logits(logits)
        self._check_fitted(z)
        f = self._features(z, views, False)
        ctx = thread_context()
        h = self._create(ctx, self.n_classes_, self.n_features_, self.params_)
        out = np.empty(z.shape, z.dtype)
        try:
            with Scope(ctx) as s:
                ctx.check(_lib.fn("effml_calibration_apply")(ctx.handle, h, s.wrap(z),
                                                              None if f is None else s.wrap(f),
                                                              s.wrap(out, True)),
                          "effml_calibration_apply")
        finally:
            _lib.fn("effml_calibration_free")(h)
        return out

    def predict_proba(self, logits, views=None):
        """Calibrated probabilities softmax(transform(logits)), float64 [n, K]."""
        return softmax(self.transform(logits, views))

    def predict(self, logits, views=None):
        """Predicted classes (argmax of the calibrated logits), int64 [n]."""
        return np.argmax(self.transform(logits, views), axis=1)

    def loss(self, logits, y, views=None, params=None):
        """The training objective and its gradient at ``params``.

        ``params`` defaults to ``params_`` when fitted, else the starting
        point ``fit`` begins from (seeded by ``random_state``).
        Objective: mean NLL (temperature, vector scaling) or the correctness-aware loss
        over all rows; returns ``(loss, grad)`` with grad float64
        ``[len(params_)]`` (layout in ``effml_calibration_num_params``).
        """
        z = _logits(logits)
        ya = _labels(y, z.shape[0])
        f = self._features(z, views, params is None and not hasattr(self, "params_"))
        k = self.n_classes_ if hasattr(self, "params_") else z.shape[1]
        if k != z.shape[1]:
            raise ShapeError("logits have %d classes, the calibrator was fitted on %d"
                             % (z.shape[1], k))
        nf = None if f is None else f.shape[1]
        # unfitted and no params: the C calibrator's starting point (T = 1, identity, ...)
        p = getattr(self, "params_", None) if params is None else np.asarray(params,
                                                                             dtype=np.float64)
        ctx = thread_context()
        h = self._create(ctx, k, nf)
        try:
            n = _lib.fn("effml_calibration_num_params")(h)
            if p is not None and p.shape != (n,):
                raise ShapeError("params must have %d entries, got shape %s" % (n, p.shape))
            if p is not None:
                pc = np.ascontiguousarray(p)
                ctx.check(_lib.fn("effml_calibration_set_params")(ctx.handle, h,
                                                                   pc.ctypes.data_as(_D)),
                          "effml_calibration_set_params")
            g = np.empty(n)
            out = c_double()
            with Scope(ctx) as s:
                ctx.check(_lib.fn("effml_calibration_loss")(ctx.handle, h, s.wrap(z),
                                                             None if f is None else s.wrap(f),
                                                             s.wrap(ya), byref(out),
                                                             g.ctypes.data_as(_D)),
                          "effml_calibration_loss")
        finally:
            _lib.fn("effml_calibration_free")(h)
        return out.value, g


class TemperatureScaling(_Calibrator):
    """Temperature scaling: z / T with T > 0 minimising the validation NLL.

    Guo, Pleiss, Sun & Weinberger, ICML 2017 (arXiv 1706.04599), Sec. 4.2.
    Fitted by safeguarded Newton steps on beta = 1/T (a convex problem) to
    |dNLL/dbeta| < 1e-12; T is kept in [0.01, 100] (a bound is returned when
    the optimum lies beyond, e.g. on separable data).

    Parameters
    ----------
    max_iter : int, Newton iterations at most (default 100)

    Attributes: ``temperature_`` (float), ``params_`` ([T]), ``n_classes_``.
    """

    _method = _TEMPERATURE

    def __init__(self, max_iter=100):
        self.max_iter = max_iter

    def _set_attrs(self):
        self.temperature_ = float(self.params_[0])


class VectorScaling(_Calibrator):
    """Vector scaling: a * z + b (per-class scale and bias) minimising the validation NLL.

    Guo et al. 2017, Sec. 4.2.  Damped Newton with the exact Hessian (convex);
    the bias is shifted to mean 0 afterwards.  Unlike temperature scaling it
    can change the predicted class.

    Parameters
    ----------
    max_iter : int, Newton iterations at most (default 100)

    Attributes: ``scale_`` (a, [K]), ``bias_`` (b, [K]), ``params_`` ([a, b]), ``n_classes_``.
    """

    _method = _VECTOR

    def __init__(self, max_iter=100):
        self.max_iter = max_iter

    def _set_attrs(self):
        k = self.n_classes_
        self.scale_, self.bias_ = self.params_[:k].copy(), self.params_[k:].copy()


class CorrectnessAwareCalibrator(_Calibrator):
    """Correctness-aware calibrator of Liu et al. 2024 (arXiv 2404.13016, Sec. 3).

    A per-sample temperature T(f) = clamp(w2' ReLU(W1 f + b1) + b2, t_min,
    t_max) from features f = :func:`ca_features` (logits, views, top_k) --
    the model's probabilities, on transformed views of the sample, at the
    original top-k classes -- trained with Adam on the correctness-aware
    loss sum_i w_i (max_k softmax(z_i / T_i)_k - c_i)^2 / sum_i w_i, c_i = 1
    if the model's prediction is right.  The prediction never changes.

    ``fit``, ``transform``, ``predict_proba`` and ``loss`` need ``views``: a
    list of V logit arrays [n, K], the model on V transformed copies of the
    inputs (the same transformations, in the same order, at fit and at
    transform; the paper uses rotation, greyscale and colour jitter).

    Parameters
    ----------
    top_k : int, top classes per view (default 4, as the authors' code)
    hidden : int, hidden ReLU units (default 5, as the authors' code)
    t_min, t_max : temperature clamp (default 0.1, 10, as the authors' code)
    balance : bool, weight correct rows by (1 - acc) and wrong rows by acc,
        acc of the batch (default False; the authors' code True, which pulls
        every confidence towards 0.5 and raised test ECE to ~0.2 here)
    lr : Adam learning rate (default 1e-3; the authors' code 1e-4)
    epochs : passes over the validation rows (default 50; the authors' code
        10).  Adam takes epochs * ceil(n / batch_size) steps: a few hundred
        validation rows need more epochs or a larger lr.
    batch_size : rows per Adam step (default 1000, as the authors' code)
    random_state : int, seed of the initialisation and the shuffling

    lr, epochs and balance were chosen on a Fashion-MNIST validation split
    (examples/python/tune_correctness_aware.py; docs/calibration.md).

    Attributes: ``params_`` (flat [W1 (hidden x F), b1, w2, b2]),
    ``n_classes_``, ``n_features_`` (F = V * top_k).
    """

    _method = _CORRECTNESS_AWARE

    def __init__(self, top_k=4, hidden=5, t_min=0.1, t_max=10.0, balance=False, lr=1e-3,
                 epochs=50, batch_size=1000, random_state=0):
        self.top_k, self.hidden, self.t_min, self.t_max = top_k, hidden, t_min, t_max
        self.balance, self.lr, self.epochs, self.batch_size = balance, lr, epochs, batch_size
        self.random_state = random_state

    def _fill(self, o, n_features):
        o.num_features = c_int(n_features, "n_features", "int64")
        o.hidden = c_int(self.hidden, "hidden")
        o.t_min, o.t_max = float(self.t_min), float(self.t_max)
        o.balance = 1 if self.balance else 0
        o.lr = float(self.lr)
        o.epochs = c_int(self.epochs, "epochs")
        o.batch_size = c_int(self.batch_size, "batch_size")
        o.seed = c_int(self.random_state, "random_state", "uint64")

    def _features(self, z, views, fitting):
        if views is None:
            raise InvalidArgumentError("CorrectnessAwareCalibrator needs views: a list of [n, K] "
                                       "logit arrays of the model on transformed inputs")
        f = ca_features(z, views, self.top_k)
        if not fitting and hasattr(self, "n_features_") and f.shape[1] != self.n_features_:
            raise ShapeError("views give %d features (%d views x top_k %d), the calibrator was "
                             "fitted on %d" % (f.shape[1], len(views), self.top_k,
                                               self.n_features_))
        return f

    def temperatures(self, logits, views):
        """Per-sample temperatures T(f_i), float64 [n]: transform() divides row i by T_i."""
        z = _logits(logits)
        self._check_fitted(z)
        f = self._features(z, views, False)
        h, nf = self.hidden, self.n_features_
        p = self.params_
        w1 = p[:h * nf].reshape(h, nf)
        b1, w2, b2 = p[h * nf:h * nf + h], p[h * nf + h:h * nf + 2 * h], p[-1]
        t = np.maximum(f @ w1.T + b1, 0.0) @ w2 + b2
        return np.clip(t, self.t_min, self.t_max)


# ---------------------------------------------------------------- metrics

def confidence_correct(probs, y):
    """``(confidence, correct)`` from probabilities ``probs`` [n, K] and labels ``y`` [n].

    confidence = max_k probs[i, k] (float64), correct = argmax == y (uint8).
    """
    p = _logits(probs, "probs")
    ya = _labels(y, p.shape[0])
    return p.max(axis=1).astype(np.float64), (np.argmax(p, axis=1) == ya).astype(np.uint8)


def _conf(confidences, correct):
    c = as_array(confidences, _F, name="confidences", ndim=1)
    ok = as_array(correct, _B, name="correct", ndim=1)
    if c.shape[0] != ok.shape[0]:
        raise ShapeError("confidences has %d entries but correct has %d"
                         % (c.shape[0], ok.shape[0]))
    return c, ok


def _binning(binning):
    if binning not in _BINNINGS:
        raise InvalidArgumentError("binning must be one of %s, got %r"
                                   % (sorted(_BINNINGS), binning))
    return _BINNINGS[binning]


def ece(confidences, correct, n_bins=15, binning="equal_width", norm=1):
    """Expected calibration error of top-label ``confidences`` in [0, 1] and ``correct`` flags.

    norm 1: sum_b (n_b / n) |acc_b - conf_b| (Naeini, Cooper & Hauskrecht,
    AAAI 2015; Guo et al. 2017, Eq. 3); norm 2: the RMS version.
    binning 'equal_width': bin b = (b/B, (b+1)/B] (0 goes to bin 0);
    'adaptive' (equal mass): upper edges u_b = s_(ceil(b n / B)) of the
    sorted confidences, tied confidences never split.  Papers usually report
    norm 1 with 15 equal-width bins (the defaults).
    """
    c, ok = _conf(confidences, correct)
    b = _binning(binning)
    nb = c_int(n_bins, "n_bins", "int32", 1)
    norm = c_int(norm, "norm", "int32")
    if norm not in (1, 2):
        raise InvalidArgumentError("norm must be 1 or 2, got %d" % norm)
    ctx = thread_context()
    out = c_double()
    with Scope(ctx) as s:
        ctx.check(_lib.fn("effml_calibration_ece")(ctx.handle, s.wrap(c), s.wrap(ok), nb, b, norm,
                                                    byref(out)), "effml_calibration_ece")
    return out.value


def reliability_bins(confidences, correct, n_bins=15, binning="equal_width"):
    """Reliability-diagram bins: dict of float64/int64 arrays of ``n_bins`` entries.

    ``count`` (samples per bin), ``mean_confidence`` and ``accuracy`` (0 for
    an empty bin), ``upper_edge`` ((b+1)/B, or u_b for adaptive bins).  Bins
    as in :func:`ece`.
    """
    c, ok = _conf(confidences, correct)
    b = _binning(binning)
    nb = c_int(n_bins, "n_bins", "int32", 1)
    cnt = np.empty(nb, np.int64)
    mc, acc, up = np.empty(nb), np.empty(nb), np.empty(nb)
    ctx = thread_context()
    with Scope(ctx) as s:
        ctx.check(_lib.fn("effml_calibration_reliability")(
            ctx.handle, s.wrap(c), s.wrap(ok), nb, b, cnt.ctypes.data_as(c_void_p),
            mc.ctypes.data_as(_D), acc.ctypes.data_as(_D), up.ctypes.data_as(_D)),
            "effml_calibration_reliability")
    return {"count": cnt, "mean_confidence": mc, "accuracy": acc, "upper_edge": up}


def brier_score(probs, y):
    """Multiclass Brier score (1/n) sum_i sum_k (p_ik - [k = y_i])^2, in [0, 2] (Brier 1950).

    ``probs`` [n, K] float (rows of probabilities), ``y`` [n] labels in [0, K).
    """
    p = _logits(probs, "probs")
    ya = _labels(y, p.shape[0])
    ctx = thread_context()
    out = c_double()
    with Scope(ctx) as s:
        ctx.check(_lib.fn("effml_calibration_brier")(ctx.handle, s.wrap(p), s.wrap(ya),
                                                      byref(out)), "effml_calibration_brier")
    return out.value


def augrc(scores, correct):
    """Area under the generalized-risk-coverage curve, in [0, 1].

    Traub, Bungert, Lueth, Baumgartner & Jaeger, "Overcoming Common Flaws in
    the Evaluation of Selective Classification Systems" (NeurIPS 2024, arXiv
    2407.01032): sum_j (c_j - c_{j-1}) w_j / N over the risk-coverage steps
    of :func:`effml.selective.risk_coverage_curve`, w_j the errors among
    the accepted (score >= t_j); without ties (1/N^2) sum_k (errors in the
    top k).  Tied scores are accepted together.
    """
    s = as_array(scores, _F, name="scores", ndim=1)
    ok = as_array(correct, _B, name="correct", ndim=1)
    ctx = thread_context()
    out = c_double()
    with Scope(ctx) as sc:
        ctx.check(_lib.fn("effml_metrics_selective_augrc")(ctx.handle, sc.wrap(s), sc.wrap(ok),
                                                            byref(out)),
                  "effml_metrics_selective_augrc")
    return out.value
