"""Selective classification, OOD metrics, ensembles and early-exit cascades
over precomputed logits or Python callables.

Conventions (as the C library): every score is a *confidence* (higher = more
confident); a sample is accepted iff score >= threshold; fractions
(coverage, risk, error, FPR, AUROC) are in [0, 1].  ``correct`` / ``is_ood``
are boolean-like arrays (bool, uint8, int32, int64; nonzero = true).  Tied
scores are selected together, so every metric depends only on the multiset of
(score, flag) pairs, never on their order.

References: risk-coverage curves, Geifman & El-Yaniv, NeurIPS 2017
(arXiv:1705.08500); window-based early-exit cascades, Xia & Bouganis, ICCV
2023 (arXiv:2303.08010); energy score, Liu et al., NeurIPS 2020; DOCTOR,
Granese et al., NeurIPS 2021.
"""

import ctypes
import math
import warnings
from ctypes import byref, c_double, c_int32, c_void_p

import numpy as np

from . import _lib
from ._core import Scope, c_int, as_array, interruptible, thread_context
from ._errors import InvalidArgumentError, ShapeError

__all__ = ["risk_coverage_curve", "aurc", "risk_at_coverage", "coverage_at_risk", "ood_auroc",
           "fpr_at_tpr", "top1_error", "nll", "ensemble_predict", "Cascade",
           "TargetNotReachedWarning"]


class TargetNotReachedWarning(UserWarning):
    """Warned by :meth:`Cascade.calibrate` when no coverage reaches a risk target on the
    validation set: the stage then accepts no sample (tau = +inf), the answer
    :func:`coverage_at_risk` gives as ``(0.0, inf)`` (as scikit-learn fits with a
    ``ConvergenceWarning`` rather than fail).  Turn it into an error with
    ``warnings.simplefilter("error", TargetNotReachedWarning)``."""

_F = (np.dtype(np.float64), np.dtype(np.float32))
_B = (np.dtype(np.uint8), np.dtype(np.bool_), np.dtype(np.int32), np.dtype(np.int64))
_I = (np.dtype(np.int64), np.dtype(np.int32))


def _sc(scores, flags, flag_name):
    s = as_array(scores, _F, name="scores", ndim=1)
    c = as_array(flags, _B, name=flag_name, ndim=1)
    return s, c


def risk_coverage_curve(scores, correct):
    """Risk-coverage curve ``(coverage, risk, thresholds)``, float64 arrays of G + 1 points.

    One point per distinct score t_1 > ... > t_G (tied scores are selected together):
    coverage[j] = #{score >= t_j} / N, risk[j] = errors among them / their number,
    thresholds[j] = t_j; point 0 is (coverage 0, risk[1], +inf).  Every metric here is a
    function of the multiset of (score, correct) pairs (docs/cascades.md, "Ties").
    """
    ctx = thread_context()
    s, c = _sc(scores, correct, "correct")
    n = s.shape[0] + 1
    cov, risk, thr = np.empty(n), np.empty(n), np.empty(n)
    npts = ctypes.c_int64()
    with Scope(ctx) as sc:
        ts, tc = sc.wrap(s), sc.wrap(c)
        ctx.check(_lib.fn("effml_metrics_selective_risk_coverage_curve")(
            ctx.handle, ts, tc, sc.wrap(cov, True), sc.wrap(risk, True),
            sc.wrap(thr, True), byref(npts)), "effml_metrics_selective_risk_coverage_curve")
    g = npts.value
    return cov[:g], risk[:g], thr[:g]


def _scalar(fname, a, b, *extra, n_out=1):
    """Call fname(ctx, a, b, *extra, &out0[, &out1]) and return the outputs."""
    ctx = thread_context()
    outs = [c_double() for _ in range(n_out)]
    with Scope(ctx) as sc:
        ta, tb = sc.wrap(a), sc.wrap(b)
        ctx.check(_lib.fn(fname)(ctx.handle, ta, tb, *extra, *[byref(o) for o in outs]), fname)
    return [o.value for o in outs]


def aurc(scores, correct):
    """Area under the risk-coverage step curve: sum_j (c_j - c_{j-1}) r_j (no ties: mean risk)."""
    return _scalar("effml_metrics_selective_aurc", *_sc(scores, correct, "correct"))[0]


def risk_at_coverage(scores, correct, coverage):
    """``(risk, threshold, selected_coverage)`` at the smallest selectable coverage >= ``coverage``.

    ``score >= threshold`` selects exactly ``selected_coverage`` (ceil(c N) samples, extended to
    the end of a tie group)."""
    s, c = _sc(scores, correct, "correct")
    return tuple(_scalar("effml_metrics_selective_risk_at_coverage", s, c, c_double(coverage), n_out=3))


def coverage_at_risk(scores, correct, risk):
    """``(coverage, threshold)``: the largest selectable coverage whose top set has risk <= ``risk``.

    ``(0.0, inf)`` when no coverage reaches ``risk`` (the most confident group's risk
    exceeds it): selecting nothing is the answer, not an error.  :meth:`Cascade.calibrate`
    with ``target="risk"`` uses the same rule (tau = +inf, with a
    :class:`TargetNotReachedWarning`)."""
    s, c = _sc(scores, correct, "correct")
    return tuple(_scalar("effml_metrics_selective_coverage_at_risk", s, c, c_double(risk), n_out=2))


def ood_auroc(scores, is_ood):
    """AUROC of OOD detection (OOD positive, scored by -score), as sklearn's roc_auc_score."""
    return _scalar("effml_metrics_ood_auroc", *_sc(scores, is_ood, "is_ood"))[0]


def fpr_at_tpr(scores, is_ood, tpr=0.95):
    """``(fpr, threshold)``: OOD false-positive rate at in-distribution TPR ``tpr``."""
    s, c = _sc(scores, is_ood, "is_ood")
    return tuple(_scalar("effml_metrics_ood_fpr_at_tpr", s, c, c_double(tpr), n_out=2))


def top1_error(pred, labels):
    """Fraction of pred[i] != labels[i] (integer arrays)."""
    p = as_array(pred, _I, name="pred", ndim=1)
    l = as_array(labels, _I, name="labels", ndim=1)
    return _scalar("effml_metrics_top1_error", p, l)[0]


def nll(probs, labels):
    """Mean -log probs[i, labels[i]] in nats (+inf if a true class has probability 0)."""
    p = as_array(probs, _F, name="probs", ndim=2)
    l = as_array(labels, _I, name="labels", ndim=1)
    return _scalar("effml_metrics_nll", p, l)[0]


class CascadeOptions(ctypes.Structure):
    """Mirror of ``effml_cascade_options`` (include/effml/cascade.h)."""

    _fields_ = [("struct_size", ctypes.c_uint32), ("num_classes", ctypes.c_int64),
                ("score", c_int32), ("aggregation", c_int32), ("temperature", c_double)]


class CascadeCalibrationOptions(ctypes.Structure):
    """Mirror of ``effml_cascade_threshold_options`` (include/effml/cascade.h)."""

    _fields_ = [("struct_size", ctypes.c_uint32), ("rule", c_int32), ("target", c_int32),
                ("target_value", c_double), ("window_below", c_double),
                ("window_above", c_double)]


_SCORES = {"msp": 1, "entropy": 2, "max_logit": 3, "energy": 4, "margin": 5, "doctor": 6}
_AGG = {"mean": 1, "last": 2}


def _cascade_opts(num_classes, score, aggregation, temperature):
    if score not in _SCORES:
        raise InvalidArgumentError("score must be one of %s, got %r" % (sorted(_SCORES), score))
    if aggregation not in _AGG:
        raise InvalidArgumentError("aggregation must be 'mean' or 'last', got %r" % (aggregation,))
    o = CascadeOptions()
    _lib.fn("effml_cascade_options_init")(byref(o))
    o.num_classes = c_int(num_classes, "num_classes")
    o.score = _SCORES[score]
    o.aggregation = _AGG[aggregation]
    o.temperature = float(temperature)
    return o


def ensemble_predict(logits, *, score="msp", aggregation="mean", temperature=1.0,
                     return_probs=False):
    """Predictions and confidence scores of an ensemble of precomputed logits.

    Parameters
    ----------
    logits : list of (n, K) float arrays, one per member (or one (n, K) array)
    score : 'msp', 'entropy', 'max_logit', 'energy', 'margin' or 'doctor'
    aggregation : 'mean' (mean of the members' softmax) or 'last' (last member only)

    Returns ``(pred, score)`` (int64, float64), plus ``probs`` (n, K) float64
    with ``return_probs``.
    """
    if isinstance(logits, np.ndarray) and logits.ndim == 2:
        logits = [logits]
    ls = [as_array(l, _F, name="logits[%d]" % i, ndim=2) for i, l in enumerate(logits)]
    if not ls:
        raise InvalidArgumentError("logits is empty")
    n, k = ls[0].shape
    opt = _cascade_opts(k, score, aggregation, temperature)
    ctx = thread_context()
    pred, sc_, probs = np.empty(n, np.int64), np.empty(n), np.empty((n, k)) if return_probs else None
    with Scope(ctx) as sc:
        hs = (c_void_p * len(ls))(*[sc.wrap(l) for l in ls])
        ctx.check(_lib.fn("effml_cascade_ensemble_predict")(
            ctx.handle, byref(opt), len(ls), hs, sc.wrap(pred, True), sc.wrap(sc_, True),
            sc.wrap(probs, True) if return_probs else None), "effml_cascade_ensemble_predict")
    return (pred, sc_, probs) if return_probs else (pred, sc_)


_RULES = {"never": 0, "threshold": 1, "window": 2}
_TARGETS = {"coverage": 1, "risk": 2, "tpr": 3}


#: ``effml_cascade_stage_fn``: (ctx, stage_data, run_data, stage, rows, n_rows, logits) -> status
STAGE_FN = ctypes.CFUNCTYPE(c_int32, c_void_p, c_void_p, c_void_p, c_int32,
                            ctypes.POINTER(ctypes.c_int64), ctypes.c_int64, c_void_p)


class Cascade:
    """A window-based early-exit cascade (Xia & Bouganis 2023) over logits or callables.

    Parameters
    ----------
    stages : list, one entry per stage, each either
        - an (n, K) float array: the stage's precomputed logits on the n
          samples of every run, or
        - a callable ``f(batch) -> logits``: called during :meth:`run` with
          ``batch = X[rows]`` (``X.iloc[rows]`` for a DataFrame), the inputs
          of the samples still in flight at this stage (``rows`` increasing),
          and returning their logits, array-like (len(rows), K) (converted to
          float32, as the C callback's buffer is).  A stage that no sample
          reaches is not called.  To work on sample indices, run with
          ``X=np.arange(n)``.  An exception raised by ``f`` (or a result of
          the wrong shape, a ShapeError) stops the run and is raised by
          :meth:`run` unchanged.  ``f`` may call other effml functions.
    costs : list of per-sample costs (e.g. MACs), one per stage
    num_classes : K; needed only when no stage is an array
    score, aggregation, temperature : as :func:`ensemble_predict`

    Methods: :meth:`set_exit_rule`, :meth:`calibrate` (from validation
    logits), :meth:`run` -> (pred, score, exit_stage); after a run
    :attr:`expected_cost` and :meth:`exit_fraction`.  Holds C objects and the
    stage arrays: build and run it from one thread; not picklable.  Ctrl-C
    stops a run between stages (KeyboardInterrupt).

    >>> def small(batch): return batch @ W_small      # logits of the rows in flight
    >>> c = Cascade([small, big_model_logits], [1.0, 20.0])
    >>> c.set_exit_rule(0, "threshold", 0.9)
    >>> pred, score, exit_stage = c.run(X)
    """

    def __init__(self, stages, costs, *, num_classes=None, score="msp", aggregation="mean",
                 temperature=1.0):
        stages, costs = list(stages), list(costs)
        if len(stages) != len(costs) or not stages:
            raise InvalidArgumentError("stages and costs must be non-empty and of equal length")
        self._h = self._ws = None
        self._tensors = []
        self._arrays = [None if callable(l) and not hasattr(l, "__array__")
                        else as_array(l, _F, name="stages[%d]" % i, ndim=2)
                        for i, l in enumerate(stages)]
        self._fns = [None if a is not None else f for f, a in zip(stages, self._arrays)]
        k = next((a.shape[1] for a in self._arrays if a is not None), None)
        if num_classes is None:
            if k is None:
                raise InvalidArgumentError("num_classes is needed when every stage is a callable")
            num_classes = k
        elif k is not None and k != num_classes:
            raise ShapeError("num_classes=%r but the stage logits have %d columns"
                             % (num_classes, k))
        self._rows = next((a.shape[0] for a in self._arrays if a is not None), None)
        self._ctx = ctx = thread_context()
        self.num_classes = num_classes
        opt = _cascade_opts(self.num_classes, score, aggregation, temperature)
        self._pending = []
        self._run_X = None
        self._cbs = []
        h = c_void_p()
        ctx.check(_lib.fn("effml_cascade_create")(ctx.handle, byref(opt), byref(h)),
                  "effml_cascade_create")
        ctx._borrow()  # the cascade, its workspace and wrapped tensors are freed through ctx
        self._h = h.value
        from ._core import wrap
        for i, (a, f, c) in enumerate(zip(self._arrays, self._fns, costs)):
            if a is not None:
                t = wrap(ctx, a)
                self._tensors.append(t)
                ctx.check(_lib.fn("effml_cascade_add_stage_logits")(ctx.handle, self._h, t,
                                                                    float(c)),
                          "effml_cascade_add_stage_logits")
            else:
                cb = STAGE_FN(self._stage_callback(i, f))
                self._cbs.append(cb)
                ctx.check(_lib.fn("effml_cascade_add_stage_fn")(ctx.handle, self._h, cb, None,
                                                                float(c)),
                          "effml_cascade_add_stage_fn")
        ws = c_void_p()
        ctx.check(_lib.fn("effml_cascade_workspace_create")(ctx.handle, self._h, byref(ws)),
                  "effml_cascade_workspace_create")
        self._ws = ws.value

    def _stage_callback(self, i, f):
        """The C stage callback around the Python callable ``f`` (stage ``i``)."""
        k = self.num_classes
        data = _lib.fn("effml_tensor_data")

        def cb(_ctx, _sd, _rd, _stage, rows, n_rows, logits):
            if self._pending:
                return -11
            try:
                r = np.ctypeslib.as_array(rows, shape=(n_rows,)).copy()
                X = self._run_X
                out = f(X.iloc[r] if hasattr(X, "iloc") else X[r])
                out = np.asarray(out)
                if out.shape != (n_rows, k):
                    raise ShapeError("cascade stage %d returned logits of shape %s for %d rows; "
                                     "expected (%d, %d)" % (i, out.shape, n_rows, n_rows, k))
                if out.dtype.kind not in "fiub":
                    raise InvalidArgumentError("cascade stage %d returned logits of dtype %s"
                                               % (i, out.dtype))
                buf = (ctypes.c_float * (n_rows * k)).from_address(data(logits))
                np.frombuffer(buf, np.float32).reshape(n_rows, k)[...] = out
                return 0
            except BaseException as e:  # noqa: B902 - re-raised by run()
                self._pending.append(e)
                return -11
        return cb

    @property
    def num_stages(self):
        """Number of stages."""
        return _lib.fn("effml_cascade_num_stages")(self._h)

    def _stage(self, stage):
        """``stage`` checked against the cascade's stage count (IndexError names it)."""
        s = c_int(stage, "stage", "int32")
        if not 0 <= s < self.num_stages:
            raise IndexError("stage=%d out of range: the cascade has %d stages"
                             % (s, self.num_stages))
        return s

    def set_exit_rule(self, stage, rule, a=0.0, b=0.0):
        """rule 'never', 'threshold' (exit iff score >= a) or 'window' (pass iff a <= score <= b)."""
        if rule not in _RULES:
            raise InvalidArgumentError("rule must be 'never', 'threshold' or 'window'")
        self._ctx.check(_lib.fn("effml_cascade_set_exit_rule")(
            self._ctx.handle, self._h, self._stage(stage), _RULES[rule], float(a), float(b)),
            "effml_cascade_set_exit_rule")

    def exit_rule(self, stage):
        """``(rule, a, b, tau)`` of ``stage`` (tau NaN when not calibrated)."""
        r, a, b, t = c_int32(), c_double(), c_double(), c_double()
        self._ctx.check(_lib.fn("effml_cascade_get_exit_rule")(
            self._ctx.handle, self._h, self._stage(stage), byref(r), byref(a), byref(b), byref(t)),
            "effml_cascade_get_exit_rule")
        return {v: k for k, v in _RULES.items()}[r.value], a.value, b.value, t.value

    def calibrate(self, val_logits, val_labels=None, *, rule="window", target="coverage",
                  target_value=0.8, window_below=0.1, window_above=0.1):
        """Set every stage's exit rule but the last from validation logits (paper Sec. 3.2).

        ``target="risk"``: tau = the threshold of the largest validation coverage whose risk
        is <= ``target_value`` (as :func:`coverage_at_risk`).  Where no coverage reaches it,
        that stage gets tau = +inf, coverage 0 (:func:`coverage_at_risk` gives ``(0.0, inf)``
        for the same data): a threshold rule exits no sample there, a window is
        ``[Q(1 - window_below), inf]`` (only the samples below it exit), and a
        :class:`TargetNotReachedWarning` names the stage; :meth:`exit_rule` reports the tau.
        """
        o = CascadeCalibrationOptions()
        _lib.fn("effml_cascade_threshold_options_init")(byref(o))
        if rule not in ("window", "threshold") or target not in _TARGETS:
            raise InvalidArgumentError("rule must be 'window'/'threshold', target "
                                       "'coverage'/'risk'/'tpr'")
        o.rule, o.target = _RULES[rule], _TARGETS[target]
        o.target_value, o.window_below, o.window_above = target_value, window_below, window_above
        ctx = self._ctx
        vs = [as_array(l, _F, name="val_logits[%d]" % i, ndim=2) for i, l in enumerate(val_logits)]
        with Scope(ctx) as sc:
            hs = (c_void_p * len(vs))(*[sc.wrap(v) for v in vs])
            tl = None if val_labels is None else sc.wrap(
                as_array(val_labels, _I, name="val_labels", ndim=1))
            ctx.check(_lib.fn("effml_cascade_select_thresholds")(ctx.handle, self._h, len(vs), hs, tl,
                                                         byref(o)), "effml_cascade_select_thresholds")
        if target == "risk":
            out = [m for m in range(self.num_stages - 1) if math.isinf(self.exit_rule(m)[3])]
            if out:
                warnings.warn(TargetNotReachedWarning(
                    "no coverage reaches risk=%g on the validation set at stage(s) %s (the most "
                    "confident samples' risk is above it): tau = +inf there, the stage accepts no "
                    "sample (coverage_at_risk gives (0.0, inf) for the same data)"
                    % (target_value, ", ".join(map(str, out)))), stacklevel=2)

    def run(self, X=None, return_probs=False):
        """Run the cascade: ``(pred, score, exit_stage)`` (+ ``probs`` with ``return_probs``).

        ``X``: the inputs the callable stages index (``X[rows]``); its length
        is the number of samples n.  Without callable stages X may be None
        (n is then the rows of the stage logits; given, it must match them).
        Outputs: pred int64 (n,), score float64 (n,), exit_stage int64 (n,),
        probs float64 (n, K).  An exception raised by a stage callable is
        re-raised here; Ctrl-C stops the run between stages.
        """
        if isinstance(X, bool):  # run(True): the old positional return_probs
            X, return_probs = None, X
        ctx = self._ctx
        if X is None:
            if self._rows is None:
                raise InvalidArgumentError("run(X): the cascade has callable stages, which need "
                                           "the inputs X (X[rows] is passed to them)")
            n = self._rows
        else:
            n = X.shape[0] if hasattr(X, "shape") else len(X)
            if self._rows is not None and n != self._rows:
                raise ShapeError("X has %d samples but the stage logits have %d rows"
                                 % (n, self._rows))
        pred, score, ex = np.empty(n, np.int64), np.empty(n), np.empty(n, np.int64)
        probs = np.empty((n, self.num_classes)) if return_probs else None
        self._pending = []
        self._run_X = X
        try:
            with interruptible(ctx), Scope(ctx) as sc:
                st = _lib.fn("effml_cascade_run")(
                    ctx.handle, self._h, self._ws, n, None, sc.wrap(pred, True),
                    sc.wrap(score, True), sc.wrap(ex, True),
                    sc.wrap(probs, True) if return_probs else None)
                if self._pending:
                    raise self._pending[0]
                ctx.check(st, "effml_cascade_run")
        finally:
            self._run_X = None
            self._pending = []
        return (pred, score, ex, probs) if return_probs else (pred, score, ex)

    @property
    def expected_cost(self):
        """Expected cost per sample of the last run (NaN before a run)."""
        return _lib.fn("effml_cascade_workspace_expected_cost")(self._ws)

    def exit_fraction(self, stage):
        """Fraction of the last run's samples that exited at ``stage``."""
        return _lib.fn("effml_cascade_workspace_exit_fraction")(self._ws, self._stage(stage))

    def set_stage_calibration(self, stage, calibrator):
        """Calibrate ``stage``'s logits before routing (``effml_cascade_set_stage_calibration``).

        ``calibrator``: a fitted :class:`effml.calibration.TemperatureScaling`
        or :class:`~effml.calibration.VectorScaling` for this cascade's class
        count (its parameters are copied now), or None to remove it.  The
        stage's logits become z / T or a * z + b before the softmax, the
        aggregation and the score, in :meth:`run` and :meth:`calibrate`
        alike: set calibrations first, then select the thresholds.  A
        correctness-aware calibrator needs view features a stage does not
        have (refused): apply it to the logits before building the cascade.
        """
        from . import calibration as _cal
        ctx, s = self._ctx, self._stage(stage)
        L = _lib.fn
        if calibrator is None:
            ctx.check(L("effml_cascade_set_stage_calibration")(ctx.handle, self._h, s, None),
                      "effml_cascade_set_stage_calibration")
            return
        if not isinstance(calibrator, (_cal.TemperatureScaling, _cal.VectorScaling)):
            raise InvalidArgumentError(
                "calibrator must be a fitted TemperatureScaling or VectorScaling (or None), got %s;"
                " apply a CorrectnessAwareCalibrator to the logits before building the cascade"
                % type(calibrator).__name__)
        if getattr(calibrator, "n_classes_", self.num_classes) != self.num_classes:
            from ._errors import ShapeError
            raise ShapeError("calibrator was fitted on %d classes, the cascade has %d"
                             % (calibrator.n_classes_, self.num_classes))
        h = calibrator._c_handle(ctx)
        try:
            ctx.check(L("effml_cascade_set_stage_calibration")(ctx.handle, self._h, s, h),
                      "effml_cascade_set_stage_calibration")
        finally:
            L("effml_calibration_free")(h)

    def __del__(self):
        L = _lib.fn
        h = getattr(self, "_h", None)
        if getattr(self, "_ws", None):
            L("effml_cascade_workspace_free")(self._ws)
            self._ws = None
        if getattr(self, "_h", None):
            L("effml_cascade_free")(self._h)
            self._h = None
        for t in getattr(self, "_tensors", []):
            L("effml_tensor_free")(t)
        self._tensors = []
        if h is not None:  # the cascade's context, after everything made from it
            self._ctx._release()

    def __reduce__(self):
        raise TypeError("Cascade holds C objects and cannot be pickled")
