"""Weighted softmax cross-entropy, class weights and scalarization (C: ``effml/train.h``).

>>> w = compute_class_weight("balanced", y, n_classes=10)    # scikit-learn's "balanced"
>>> loss, grad = softmax_cross_entropy(logits, y, class_weight=w, return_grad=True)
>>> effml.nn.fit(model, X, y, class_weight="balanced", sample_weight=sw)
>>> effml.nn.fit(model, X, y, reduction="mean",
...              scalarization=dict(kind="cooldown", t_start=3.0, t_end=1.0))

Row i of a batch weighs w_i = sample_weight[i] * class_weight[y_i] (the two
multiply, as in scikit-learn).  Two reductions:

- ``"weighted_mean"`` (default): sum_i w_i l_i / sum_i w_i over the batch,
  PyTorch's ``CrossEntropyLoss(weight=class_weight)`` with reduction "mean";
- ``"mean"``: sum_i w_i l_i / b.  With weights of mean 1 over the data
  (``fit`` divides them by their mean) this is an unbiased estimate of the
  full-data weighted loss, and the reduction under which upweighting by
  :func:`scalarization_weights` has exactly the expected gradient of
  temperature sampling at the same T.

Scalarization (upweighting) is the twin of temperature sampling in Li, Xu,
Tan, Murray & Khashabi, "Upsample or Upweight? Balanced Training on Heavily
Imbalanced Datasets" (NAACL 2025, arXiv 2410.04579): class (or source) k
gets loss weight w_k proportional to n_k^(1/T - 1), mean 1 over the data;
``fit(scalarization=...)`` follows a temperature schedule over the steps
(e.g. their Cooldown).
"""

import ctypes
from ctypes import byref, c_double, c_int32, c_int64, c_void_p

import numpy as np

from . import _lib
from ._core import Scope, as_array, c_int, f64_buffer, thread_context
from ._errors import InvalidArgumentError, ShapeError

__all__ = ["softmax_cross_entropy", "compute_class_weight", "class_weight_balanced",
           "scalarization_weights", "REDUCTIONS"]

_P = c_void_p
_D = ctypes.POINTER(c_double)
_lib.PROTOTYPES.update({
    "effml_train_softmax_cross_entropy_weighted": (c_int32, [_P, _P, _P, _P, _P, c_int32, _D,
                                                             _P]),
    "effml_train_class_weight_balanced": (c_int32, [_P, _P, c_int64, _D]),
    "effml_train_scalarization_weights": (c_int32, [_P, _D, c_int64, c_double, _D]),
})

#: reduction name -> C code (EFFML_TRAIN_REDUCTION_*)
REDUCTIONS = {"weighted_mean": 0, "mean": 1}
_F = (np.dtype(np.float64), np.dtype(np.float32))
_I = (np.dtype(np.int64), np.dtype(np.int32))


def _reduction(reduction):
    if reduction not in REDUCTIONS:
        raise InvalidArgumentError("reduction must be one of %s, got %r"
                                   % (sorted(REDUCTIONS), reduction))
    return REDUCTIONS[reduction]


def _labels(y, name="y"):
    ya = np.asarray(y)
    if ya.dtype.kind == "f":
        if not np.all(np.isfinite(ya)) or np.any(ya != np.trunc(ya)):
            raise InvalidArgumentError("%s must hold integer class labels" % name)
    elif ya.dtype.kind not in "iub":
        raise InvalidArgumentError("%s must hold integer class labels 0..K-1, got dtype %s"
                                   % (name, ya.dtype))
    return as_array(ya, _I, name=name, ndim=1)


def _weights(w, name, n):
    """Optional weight vector -> float64 [n] (finiteness and sign are checked in C)."""
    if w is None:
        return None
    a = np.asarray(w)
    if a.dtype.kind not in "fiub":
        raise InvalidArgumentError("%s must be numeric, got dtype %s" % (name, a.dtype))
    a = as_array(a, _F, name=name, ndim=1)
    if a.shape[0] != n:
        raise ShapeError("%s has %d entries, expected %d" % (name, a.shape[0], n))
    return a


def compute_class_weight(class_weight, y, n_classes=None):
    """Per-class weights [n_classes] (float64) in scikit-learn's semantics.

    class_weight : None (all ones), ``"balanced"`` (n / (n_classes * n_k),
        scikit-learn's ``compute_class_weight``; every class needs a label),
        a dict {class label: weight} (classes not in it weigh 1; a key that is
        not a class in [0, n_classes) is an error), or an array of n_classes
        weights.
    y : int labels in [0, n_classes)
    n_classes : default max(y) + 1
    """
    ya = _labels(y)
    if ya.shape[0] < 1:
        raise ShapeError("y is empty")
    if n_classes is None:
        n_classes = int(ya.max()) + 1
    n_classes = c_int(n_classes, "n_classes", "int64", 1)
    if class_weight is None:
        return np.ones(n_classes)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise InvalidArgumentError("class_weight must be None, 'balanced', a dict or an array, "
                                       "got %r" % class_weight)
        return class_weight_balanced(ya, n_classes)
    if isinstance(class_weight, dict):
        out = np.ones(n_classes)
        for k, v in class_weight.items():
            try:
                ki = int(k)
            except (TypeError, ValueError):
                ki = None
            if ki is None or ki != k or not 0 <= ki < n_classes:
                raise InvalidArgumentError("class_weight has key %r, which is not a class label "
                                           "in [0, %d)" % (k, n_classes))
            out[ki] = float(v)
        if not np.all(np.isfinite(out)) or np.any(out < 0):
            bad = next(k for k, v in class_weight.items() if not (np.isfinite(v) and v >= 0))
            raise InvalidArgumentError("class_weight[%r]=%r must be finite and >= 0"
                                       % (bad, class_weight[bad]))
        return out
    a = _weights(class_weight, "class_weight", n_classes).astype(np.float64)
    return a


def class_weight_balanced(y, n_classes=None):
    """scikit-learn's ``class_weight="balanced"``: n / (n_classes * n_k), float64 [n_classes].

    Over the data these weights have mean 1.  A class in [0, n_classes) with
    no label is an error (scikit-learn refuses it too).
    """
    ya = _labels(y)
    if n_classes is None:
        n_classes = int(ya.max()) + 1 if ya.size else 1
    n_classes = c_int(n_classes, "n_classes", "int64", 1)
    out = np.empty(n_classes)
    ctx = thread_context()
    with Scope(ctx) as s:
        ctx.check(_lib.fn("effml_train_class_weight_balanced")(ctx.handle, s.wrap(ya), n_classes,
                                                                 out.ctypes.data_as(_D)),
                  "effml_train_class_weight_balanced")
    return out


def scalarization_weights(sizes, temperature):
    """Scalarization (upweighting) weights of Li et al. 2025 (arXiv 2410.04579).

    w_k = q_k N / n_k, proportional to n_k^(1/T - 1), with q the temperature
    sampling probabilities at T and N = sum n_k, so sum_k n_k w_k / N = 1.
    T = 1: all ones; T = inf: scikit-learn's "balanced" weights.  Sizes of 0
    get weight 0.  Returns float64 [len(sizes)].
    """
    s, ps = f64_buffer(sizes, "sizes")
    out = np.empty_like(s)
    ctx = thread_context()
    ctx.check(_lib.fn("effml_train_scalarization_weights")(ctx.handle, ps, s.shape[0],
                                                             float(temperature),
                                                             out.ctypes.data_as(_D)),
              "effml_train_scalarization_weights")
    return out


def softmax_cross_entropy(logits, y, *, sample_weight=None, class_weight=None,
                          reduction="weighted_mean", return_grad=False):
    """Weighted softmax cross-entropy of ``logits`` [b, K] (float32) and labels ``y`` [b].

    Row weight w_i = sample_weight[i] * class_weight[y_i] (absent = 1);
    l_i = logsumexp(z_i) - z_i,y_i.  ``reduction`` ``"weighted_mean"``:
    sum w_i l_i / sum w_i (PyTorch ``CrossEntropyLoss(weight=...)``);
    ``"mean"``: sum w_i l_i / b.  ``class_weight`` as in
    :func:`compute_class_weight` (``"balanced"`` from this batch's labels).

    Returns the loss (float), or ``(loss, grad)`` with ``return_grad``: grad
    float32 [b, K] = dL/dlogits = w_i (softmax(z_i) - onehot(y_i)) / D.
    """
    z = as_array(logits, (np.dtype(np.float32),), name="logits", ndim=2)
    ya = _labels(y)
    if ya.shape[0] != z.shape[0]:
        raise ShapeError("y has %d labels but logits have %d rows" % (ya.shape[0], z.shape[0]))
    red = _reduction(reduction)
    sw = _weights(sample_weight, "sample_weight", z.shape[0])
    cw = None
    if class_weight is not None:
        cw = compute_class_weight(class_weight, ya, z.shape[1])
    grad = np.empty(z.shape, np.float32) if return_grad else None
    ctx = thread_context()
    loss = c_double()
    with Scope(ctx) as s:
        ctx.check(_lib.fn("effml_train_softmax_cross_entropy_weighted")(
            ctx.handle, s.wrap(z), s.wrap(ya), None if sw is None else s.wrap(sw),
            None if cw is None else s.wrap(cw), red, byref(loss),
            None if grad is None else s.wrap(grad, True)),
            "effml_train_softmax_cross_entropy_weighted")
    return (loss.value, grad) if return_grad else loss.value


def _schedule(scalarization, total_steps):
    """A ``TemperatureSchedule`` struct for ``fit(scalarization=...)``.

    A number is a constant temperature; a dict holds the keyword arguments
    of :func:`effml.mixture.temperature_at` (kind, t_start, t_end,
    total_steps -- default: the steps of the fit call --, switch_fraction).
    """
    from .mixture import TemperatureSchedule, _SCHEDULES
    s = TemperatureSchedule()
    _lib.fn("effml_sampler_temperature_schedule_init")(byref(s))
    if isinstance(scalarization, dict):
        spec = dict(scalarization)
        unknown = set(spec) - {"kind", "t_start", "t_end", "total_steps", "switch_fraction"}
        if unknown:
            raise InvalidArgumentError("scalarization has unknown key(s) %s (kind, t_start, t_end, "
                                       "total_steps, switch_fraction)" % sorted(unknown))
        kind = spec.get("kind", "constant")
        if kind not in _SCHEDULES:
            raise InvalidArgumentError("scalarization kind must be one of %s, got %r"
                                       % (sorted(_SCHEDULES), kind))
        s.kind = _SCHEDULES[kind]
        s.t_start = float(spec.get("t_start", 1.0))
        s.t_end = float(spec.get("t_end", s.t_start if kind == "constant" else 1.0))
        s.total_steps = c_int(spec.get("total_steps", total_steps), "scalarization total_steps",
                              "int64", 1)
        s.switch_fraction = float(spec.get("switch_fraction", 0.5))
    else:
        try:
            t = float(scalarization)
        except (TypeError, ValueError):
            raise InvalidArgumentError("scalarization must be a temperature (number) or a dict of "
                                       "schedule settings, got %r" % (scalarization,)) from None
        s.kind, s.t_start, s.t_end, s.total_steps = _SCHEDULES["constant"], t, t, 1
    # T must be > 0 (inf allowed); the C loop checks the schedule as well
    for name in ("t_start", "t_end"):
        v = getattr(s, name)
        if not v > 0:
            raise InvalidArgumentError("scalarization %s=%r must be > 0" % (name, v))
    return s


def _set_fit_weights(o, scope, ya, n_classes, epochs, batch_size, sample_weight, class_weight,
                     reduction, scalarization):
    """Fill the weighted-loss fields of a ``TrainOptions`` ``o`` for ``effml.nn.fit``.

    Returns the objects that must stay alive during the C call (the tensors
    are owned by ``scope``).
    """
    keep = []
    n = ya.shape[0]
    o.reduction = _reduction(reduction)
    sw = _weights(sample_weight, "sample_weight", n)
    if sw is not None:
        o.sample_weight = scope.wrap(sw)
    if isinstance(class_weight, str) and class_weight == "balanced":
        o.class_weight_balanced = 1
    elif class_weight is not None:
        cw = compute_class_weight(class_weight, ya, n_classes)
        o.class_weight = scope.wrap(cw)
    if scalarization is not None:
        steps = c_int(epochs, "epochs") * max(1, -(-n // max(1, c_int(batch_size, "batch_size"))))
        s = _schedule(scalarization, steps)
        keep.append(s)
        o.scalarization = ctypes.addressof(s)
    return keep
