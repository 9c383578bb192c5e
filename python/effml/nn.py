"""Small neural networks: layers, optimizers and the training loop.

>>> model = Sequential([Dense(784, 256), Activation("relu"), Dense(256, 10)], seed=0)
>>> loss = fit(model, X, y, optimizer=AdamW(lr=1e-3), epochs=5, batch_size=128,
...            progress=True)                   # a tqdm bar when tqdm is installed
>>> logits = predict(model, X_test)

Layers are described by small picklable specs (:class:`Dense`,
:class:`Activation`, :class:`Dropout`, :class:`LayerNorm`) and built in C by
:class:`Sequential`, which owns its own context (thread count, seed of the
initialisers) and its C objects; use a model from one thread at a time.

Progress and interruption: ``fit(progress=callable)`` calls
``callable(epoch, step, loss)`` from inside the C loop (every
``progress_every`` steps, or once per epoch).  Ctrl-C during ``fit`` stops
the C loop after the current step (through the loop's step hook) and raises
``KeyboardInterrupt``; an exception raised by the progress callable stops
it the same way and is re-raised.  The parameters then hold the state of
the last completed step.
"""

import ctypes
from ctypes import CFUNCTYPE, byref, c_double, c_int32, c_int64, c_uint64, c_void_p

import numpy as np

from . import _lib
from . import losses as _losses
from ._core import Context, Scope, c_int, as_array
from ._errors import InvalidArgumentError

__all__ = ["Dense", "Activation", "Dropout", "LayerNorm", "Sequential", "SGD", "AdamW", "fit",
           "predict"]

_PROTOS = {
    "effml_layer_dense_create": (c_int32, [c_void_p, c_int64, c_int64, c_int32, c_void_p]),
    "effml_layer_activation_create": (c_int32, [c_void_p, c_int32, c_void_p]),
    "effml_layer_dropout_create": (c_int32, [c_void_p, c_double, c_uint64, c_void_p]),
    "effml_layer_layernorm_create": (c_int32, [c_void_p, c_int64, c_double, c_void_p]),
    "effml_layer_sequential_create": (c_int32, [c_void_p, c_void_p]),
    "effml_layer_sequential_add": (c_int32, [c_void_p, c_void_p, c_void_p]),
    "effml_layer_free": (None, [c_void_p]),
    "effml_layer_in_features": (c_int64, [c_void_p]),
    "effml_layer_out_features": (c_int64, [c_void_p]),
    "effml_layer_num_params": (c_int32, [c_void_p]),
    "effml_layer_param_name": (ctypes.c_char_p, [c_void_p, c_int32]),
    "effml_layer_param": (c_void_p, [c_void_p, c_int32]),
    "effml_layer_sequential_count": (c_int32, [c_void_p]),
    "effml_layer_sequential_get": (c_void_p, [c_void_p, c_int32]),
    "effml_optimizer_options_init": (None, [c_void_p]),
    "effml_optimizer_create": (c_int32, [c_void_p, c_void_p, c_void_p]),
    "effml_optimizer_add_layer": (c_int32, [c_void_p, c_void_p, c_void_p]),
    "effml_optimizer_free": (None, [c_void_p]),
    "effml_optimizer_steps": (c_int64, [c_void_p]),
    "effml_train_options_init": (None, [c_void_p]),
    "effml_train_classifier": (c_int32, [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p,
                                         c_void_p, ctypes.POINTER(c_double)]),
    "effml_train_predict": (c_int32, [c_void_p, c_void_p, c_void_p, c_int64, c_void_p]),
}
_lib.PROTOTYPES.update(_PROTOS)

_PROGRESS_FN = CFUNCTYPE(None, c_void_p, c_int64, c_int64, c_double)
_HOOK_FN = CFUNCTYPE(c_int32, c_void_p, c_int64)


class TrainOptions(ctypes.Structure):
    """Mirror of ``effml_train_options`` (include/effml/train.h)."""

    _fields_ = [("struct_size", ctypes.c_uint32), ("epochs", c_int64), ("batch_size", c_int64),
                ("shuffle_seed", c_uint64), ("progress", _PROGRESS_FN),
                ("progress_user_data", c_void_p), ("progress_every", c_int64),
                ("step_hook", _HOOK_FN), ("step_hook_user_data", c_void_p),
                ("clip_norm", c_double), ("sample_weight", c_void_p),
                ("class_weight", c_void_p), ("class_weight_balanced", c_int32),
                ("reduction", c_int32), ("scalarization", c_void_p)]


class OptimizerOptions(ctypes.Structure):
    """Mirror of ``effml_optimizer_options`` (include/effml/optim.h)."""

    _fields_ = [("struct_size", ctypes.c_uint32), ("algorithm", c_int32), ("lr", c_double),
                ("momentum", c_double), ("dampening", c_double), ("nesterov", c_int32),
                ("weight_decay", c_double), ("beta1", c_double), ("beta2", c_double),
                ("eps", c_double), ("schedule", c_int32), ("warmup_steps", c_int64),
                ("total_steps", c_int64), ("min_lr", c_double)]


# ---------------------------------------------------------------- layer specs

class Dense:
    """Fully connected layer y = x W^T + b (PyTorch ``nn.Linear``; weight [out, in])."""

    def __init__(self, in_features, out_features, bias=True):
        self.in_features, self.out_features, self.bias = int(in_features), int(out_features), bias

    def _build(self, ctx):
        h = c_void_p()
        ctx.check(_lib.fn("effml_layer_dense_create")(ctx.handle, self.in_features,
                                                      self.out_features, 1 if self.bias else 0,
                                                      byref(h)), "effml_layer_dense_create")
        return h.value


_ACTS = {"identity": 0, "relu": 1, "gelu": 2, "gelu_tanh": 3, "silu": 4, "tanh": 5}


class Activation:
    """Element-wise activation: 'identity', 'relu', 'gelu', 'gelu_tanh', 'silu' or 'tanh'."""

    def __init__(self, name):
        if name not in _ACTS:
            raise InvalidArgumentError("activation must be one of %s, got %r"
                                       % (sorted(_ACTS), name))
        self.name = name

    def _build(self, ctx):
        h = c_void_p()
        ctx.check(_lib.fn("effml_layer_activation_create")(ctx.handle, _ACTS[self.name],
                                                           byref(h)),
                  "effml_layer_activation_create")
        return h.value


class Dropout:
    """Inverted dropout with drop probability ``p`` in [0, 1) and its own ``seed``."""

    def __init__(self, p, seed=0):
        self.p, self.seed = float(p), c_int(seed, "seed", "uint64")

    def _build(self, ctx):
        h = c_void_p()
        ctx.check(_lib.fn("effml_layer_dropout_create")(ctx.handle, self.p, self.seed, byref(h)),
                  "effml_layer_dropout_create")
        return h.value


class LayerNorm:
    """Layer normalisation over ``features`` (PyTorch ``nn.LayerNorm``)."""

    def __init__(self, features, eps=1e-5):
        self.features, self.eps = int(features), float(eps)

    def _build(self, ctx):
        h = c_void_p()
        ctx.check(_lib.fn("effml_layer_layernorm_create")(ctx.handle, self.features, self.eps,
                                                          byref(h)),
                  "effml_layer_layernorm_create")
        return h.value


class Sequential:
    """A C sequential model built from layer specs.

    Parameters
    ----------
    layers : list of Dense / Activation / Dropout / LayerNorm
    seed : int, seed of the model's context (parameter initialisation)
    num_threads : threads of libeffml's own loops
    thread_pool : keep those threads between calls (see :class:`Context`; default False)

    ``params()`` returns the parameters as writable float32 numpy arrays over
    the model's own memory (no copy; they live as long as the model).
    """

    def __init__(self, layers, *, seed=0, num_threads=1, thread_pool=False):
        self.specs = list(layers)
        self._h = None
        self._ctx = ctx = Context(num_threads=num_threads, seed=seed, thread_pool=thread_pool)
        h = c_void_p()
        ctx.check(_lib.fn("effml_layer_sequential_create")(ctx.handle, byref(h)),
                  "effml_layer_sequential_create")
        ctx._borrow()  # the layers are freed through ctx: it outlives them (see __del__)
        self._h = h.value
        for spec in self.specs:
            child = spec._build(ctx)
            st = _lib.fn("effml_layer_sequential_add")(ctx.handle, self._h, child)
            if st:
                _lib.fn("effml_layer_free")(child)
                ctx.check(st, "effml_layer_sequential_add")

    @property
    def in_features(self):
        """Input width."""
        return _lib.fn("effml_layer_in_features")(self._h)

    @property
    def out_features(self):
        """Output width (number of classes for a classifier)."""
        return _lib.fn("effml_layer_out_features")(self._h)

    def params(self):
        """Dict "<layer index>.<name>" -> float32 numpy array (a view of the model's memory)."""
        L = _lib.fn
        out = {}
        for i in range(L("effml_layer_sequential_count")(self._h)):
            child = L("effml_layer_sequential_get")(self._h, i)
            for j in range(L("effml_layer_num_params")(child)):
                name = L("effml_layer_param_name")(child, j).decode()
                t = L("effml_layer_param")(child, j)
                nd = L("effml_tensor_ndim")(t)
                sp = L("effml_tensor_shape")(t)
                shape = tuple(sp[k] for k in range(nd))
                buf = (ctypes.c_char * L("effml_tensor_nbytes")(t)).from_address(
                    L("effml_tensor_data")(t))
                buf._owner = self
                out["%d.%s" % (i, name)] = np.frombuffer(buf, np.float32).reshape(shape)
        return out

    def __del__(self):
        # The model's layers first, then its own context.  In a reference cycle the garbage
        # collector may run the Context's finalizer first: the borrow makes that a no-op and
        # the context is freed here, after the layers.  params() arrays keep the model alive.
        h, self._h = getattr(self, "_h", None), None
        ctx = getattr(self, "_ctx", None)
        if h:
            _lib.fn("effml_layer_free")(h)
            ctx._release()
        if ctx is not None:
            ctx.close()

    def __reduce__(self):
        raise TypeError("a Sequential holds C objects; save its params() instead of pickling")


# ---------------------------------------------------------------- optimizers

class SGD:
    """SGD with momentum/Nesterov, PyTorch semantics (weight decay as L2 in the gradient)."""

    def __init__(self, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        self.kw = dict(algorithm=1, lr=lr, momentum=momentum, dampening=dampening,
                       nesterov=int(bool(nesterov)), weight_decay=weight_decay)


class AdamW:
    """AdamW (Loshchilov & Hutter 2019), PyTorch defaults."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        self.kw = dict(algorithm=2, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps,
                       weight_decay=weight_decay)


def _make_optimizer(ctx, spec, model_h):
    o = OptimizerOptions()
    _lib.fn("effml_optimizer_options_init")(byref(o))
    for k, v in spec.kw.items():
        setattr(o, k, v)
    h = c_void_p()
    ctx.check(_lib.fn("effml_optimizer_create")(ctx.handle, byref(o), byref(h)),
              "effml_optimizer_create")
    st = _lib.fn("effml_optimizer_add_layer")(ctx.handle, h.value, model_h)
    if st:
        _lib.fn("effml_optimizer_free")(h.value)
        ctx.check(st, "effml_optimizer_add_layer")
    return h.value


# ---------------------------------------------------------------- fit / predict

def _tqdm_progress(epochs):
    try:
        from tqdm import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=epochs, unit="epoch")
    state = {"epoch": 0}

    def cb(epoch, step, loss):
        while state["epoch"] <= epoch:
            state["epoch"] += 1
            bar.update(1)
        bar.set_postfix(loss="%.4f" % loss)
    return cb, bar


def _class_labels(y, name="y"):
    """``y`` as int64/int32 class labels for :func:`fit`.

    Integer and bool arrays pass; float arrays are accepted only when every
    value is a finite whole number (``[0., 2., 1.]``, as scikit-learn accepts
    them) and are converted exactly.  A fractional or non-finite float label
    is refused -- never truncated -- with InvalidArgumentError naming the
    first bad value and its index; any other dtype (strings, objects) is
    refused naming the dtype.
    """
    ya = y if isinstance(y, np.ndarray) else np.asarray(y)
    if ya.dtype.kind == "f":
        bad = ~np.isfinite(ya) | (ya != np.trunc(ya))
        if bad.any():
            i = int(np.flatnonzero(bad.ravel())[0])
            raise InvalidArgumentError(
                "%s must hold integer class labels; %s[%d] = %r is not a whole number "
                "(float labels are accepted only when integer-valued, never truncated)"
                % (name, name, i, float(ya.ravel()[i])))
    elif ya.dtype.kind not in "iub":
        raise InvalidArgumentError("%s must hold integer class labels, got dtype %s"
                                   % (name, ya.dtype))
    return as_array(ya, (np.dtype(np.int64), np.dtype(np.int32)), name=name, ndim=1)


def fit(model, X, y, *, optimizer=None, epochs=1, batch_size=128, shuffle_seed=0,
        progress=None, progress_every=0, clip_norm=0.0, sample_weight=None, class_weight=None,
        reduction="weighted_mean", scalarization=None):
    """Train ``model`` with softmax cross-entropy on ``X`` (float32 [n, f]) and ``y`` (ints).

    ``y``: integer class labels 0..K-1.  Float labels are accepted when every
    value is a whole number (``2.0``, as scikit-learn does); a fractional or
    non-finite one (``0.7``, NaN) raises InvalidArgumentError ("y must hold
    integer class labels; y[i] = ...") instead of being truncated.

    Parameters
    ----------
    optimizer : SGD or AdamW spec (default AdamW()); a fresh optimizer per call.
    progress : None, True (a tqdm bar when tqdm is installed) or a callable
        ``f(epoch, step, loss)`` called every ``progress_every`` steps (0: once
        per epoch) from inside the C loop.
    clip_norm : > 0 clips the global gradient norm before each step.
    sample_weight : None or [n] weights (finite, >= 0), as scikit-learn's.
    class_weight : None, ``"balanced"`` (n / (n_classes n_k), scikit-learn's),
        a dict {class: weight} (others weigh 1) or [n_classes] weights;
        multiplies ``sample_weight``.
    reduction : ``"weighted_mean"`` (sum w l / sum w per batch, PyTorch's; a
        batch whose weights all are 0 is skipped: no optimizer step, counted
        as a progress step with loss NaN) or
        ``"mean"`` (weights divided by their mean over the data, then
        sum w l / b: unbiased; see :mod:`effml.losses`).
    scalarization : None, a temperature T, or a dict of schedule settings
        (kind 'constant'/'linear'/'cosine'/'cooldown', t_start, t_end,
        total_steps -- default all steps of this call --, switch_fraction):
        class weights proportional to n_k^(1/T(step) - 1) (Li et al. 2025,
        arXiv 2410.04579); use ``reduction="mean"`` to match temperature
        sampling's expected gradient.

    Returns the mean loss of the last epoch.  Ctrl-C (KeyboardInterrupt) or an
    exception in ``progress`` stops the loop after the current step and is
    re-raised; C errors raise as usual (e.g. NumericError when the loss
    becomes NaN).
    """
    ctx = model._ctx
    xa = as_array(X, (np.dtype(np.float32),), name="X", ndim=2)
    ya = _class_labels(y)
    opt_h = _make_optimizer(ctx, optimizer or AdamW(), model._h)
    bar = None
    if progress is True:
        progress, bar = _tqdm_progress(epochs)
    pending = []

    def on_progress(_ud, epoch, step, loss):
        if pending:
            return
        try:
            progress(int(epoch), int(step), float(loss))
        except BaseException as e:  # noqa: B902 - re-raised after the C call
            pending.append(e)

    def on_step(_ud, step):
        return 1 if pending else 0

    # Ctrl-C: while the C loop runs, SIGINT only records a KeyboardInterrupt; the
    # step hook sees it and stops the loop, and it is raised once C has returned.
    import signal
    import threading
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        def on_sigint(signum, frame):
            pending.append(KeyboardInterrupt())
        try:
            old_handler = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main interpreter
            old_handler = None

    o = TrainOptions()
    _lib.fn("effml_train_options_init")(byref(o))
    o.epochs, o.batch_size = c_int(epochs, "epochs"), c_int(batch_size, "batch_size")
    o.shuffle_seed = c_int(shuffle_seed, "shuffle_seed", "uint64")
    o.progress_every, o.clip_norm = c_int(progress_every, "progress_every"), float(clip_norm)
    pcb = _PROGRESS_FN(on_progress) if progress is not None else _PROGRESS_FN()
    hcb = _HOOK_FN(on_step)
    o.progress, o.step_hook = pcb, hcb
    loss = c_double()
    try:
        with Scope(ctx) as s:
            tx, ty = s.wrap(xa), s.wrap(ya)
            keep = _losses._set_fit_weights(o, s, ya, model.out_features, epochs, batch_size,
                                            sample_weight, class_weight, reduction,
                                            scalarization)  # noqa: F841 - alive for the call
            st = _lib.fn("effml_train_classifier")(ctx.handle, model._h, opt_h, tx, ty,
                                                   byref(o), byref(loss))
            if pending:
                raise pending[0]
            ctx.check(st, "effml_train_classifier")
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        _lib.fn("effml_optimizer_free")(opt_h)
        if bar is not None:
            bar.close()
    return loss.value


def predict(model, X, batch_size=256):
    """Logits of ``model`` on ``X`` (float32 [n, f]) as a float32 [n, classes] array."""
    ctx = model._ctx
    xa = as_array(X, (np.dtype(np.float32),), name="X", ndim=2)
    out = np.empty((xa.shape[0], model.out_features), np.float32)
    with Scope(ctx) as s:
        ctx.check(_lib.fn("effml_train_predict")(ctx.handle, model._h, s.wrap(xa), c_int(batch_size, "batch_size"),
                                                 s.wrap(out, True)), "effml_train_predict")
    return out
