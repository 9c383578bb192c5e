"""Contexts, calls and tensors: the layer every other module is built on.

Contexts
    A :class:`Context` owns one C ``effml_context`` (thread count, seed, last
    error).  A C context is used by one thread at a time, so the package keeps
    one per Python thread (:func:`thread_context`), created on first use and
    freed with the thread's local storage; never share a :class:`Context`
    object between threads.  Estimators never store a context: each call takes
    the calling thread's, so estimators pickle and run in several threads or
    processes (``n_jobs``) at once.

Tensors
    :func:`wrap` hands a numpy array to C *without copying* when it is
    C-contiguous, aligned, native byte order and of a dtype libeffml knows
    (float32/64, int8/16/32/64, uint8/16/32/64, float16, bool); a read-only
    array is wrapped read-only, so C can never write through it.  Any other
    array is converted once (``np.ascontiguousarray(a, dtype=...)``) and the
    copy is wrapped.  Owned C results are *adopted*: :func:`adopt` returns a
    numpy array over the C tensor's memory (no copy) that frees the tensor
    when the last numpy view of it goes away.
"""

import ctypes
import signal
import threading
import weakref
from ctypes import byref, c_int64, c_void_p

import numpy as np

from . import _lib
from ._errors import DtypeError, InvalidArgumentError, error_for

F32, F64, I32, I64, U8, I8, I16, U16, U32, U64, F16, BF16, BOOL = range(1, 14)

#: numpy dtype -> libeffml dtype code (native little-endian only).
NP_TO_EFFML = {
    np.dtype(np.float32): F32, np.dtype(np.float64): F64,
    np.dtype(np.int32): I32, np.dtype(np.int64): I64,
    np.dtype(np.uint8): U8, np.dtype(np.int8): I8,
    np.dtype(np.int16): I16, np.dtype(np.uint16): U16,
    np.dtype(np.uint32): U32, np.dtype(np.uint64): U64,
    np.dtype(np.float16): F16, np.dtype(np.bool_): BOOL,
}
#: libeffml dtype code -> numpy dtype (bf16 has no numpy dtype: see adopt()).
EFFML_TO_NP = {v: k for k, v in NP_TO_EFFML.items()}


class Context:
    """One libeffml context: thread count, seed of its generator, last error.

    Parameters
    ----------
    num_threads : int, default 1
        Threads for libeffml's own loops (>= 1).  BLAS threads are OpenBLAS's
        (``OPENBLAS_NUM_THREADS``).
    seed : int, default 0
        Seed of the context's generator (functions that take an explicit seed
        do not use it).
    thread_pool : bool, default False
        Keep the worker threads of libeffml's loops between calls (C
        ``effml_context_set_thread_pool``): they spin ``pool_spin_us``
        microseconds after each loop, then sleep, and are joined when the pool
        is turned off or the context is freed.  Same results; saves the thread
        start (1-4 ms on an idle VM) of short multi-threaded calls, at the
        price of that spinning CPU time.  Off: threads are started per call.
    pool_spin_us : int or None, default None
        Spin time in microseconds, 0 to 1 000 000; None: the library's
        default (``EFFML_CORE_POOL_SPIN_DEFAULT_US``, 1000).  Only with
        ``thread_pool=True``.

    A context is used by one thread at a time.  Use :func:`thread_context`
    for the calling thread's default context.

    Lifetime: every C object made from a context (a layer, an adapter, a
    cascade, a loaded file, an adopted tensor) frees its memory through it, so
    the C context must outlive them.  A Python object that keeps such a C
    object keeps the Context too and *borrows* it (``_borrow()`` when it
    takes the C object, ``_release()`` after freeing it); ``close()`` -- and
    so the garbage collector, which finalizes the objects of a reference
    cycle in any order, and the end of a thread, which drops its default
    context -- frees the C context only once no borrower is left, otherwise
    when the last one releases it.
    """

    __slots__ = ("_h", "_borrows", "_close_pending", "__weakref__")

    def __init__(self, num_threads=1, seed=0, thread_pool=False, pool_spin_us=None):
        self._h = None
        self._borrows = 0
        self._close_pending = False
        opt = ContextOptions()
        _lib.fn("effml_context_options_init")(byref(opt))
        opt.num_threads = c_int(num_threads, "num_threads", "int32")
        opt.seed = c_int(seed, "seed", "uint64")
        h = c_void_p()
        st = _lib.fn("effml_context_create")(byref(opt), byref(h))
        if st:
            raise error_for(st, "cannot create a context (num_threads=%r)" % num_threads,
                            "effml_context_create")
        self._h = h.value
        if thread_pool or pool_spin_us is not None:
            self.set_thread_pool(thread_pool, pool_spin_us)

    @property
    def handle(self):
        """The raw ``effml_context *`` as an int (for ctypes calls)."""
        return self._h

    @property
    def num_threads(self):
        """Threads for libeffml's own loops."""
        return _lib.fn("effml_context_num_threads")(self._h)

    @num_threads.setter
    def num_threads(self, n):
        self.check(_lib.fn("effml_context_set_num_threads")(self._h, c_int(n, "num_threads", "int32")),
                   "effml_context_set_num_threads")

    def set_thread_pool(self, enabled, spin_us=None):
        """Turn the worker pool on (``enabled=True``) or off; ``spin_us`` as in
        the constructor's ``pool_spin_us`` (None: the library's default).
        Turning it off joins the workers."""
        if not isinstance(enabled, (bool, np.bool_)):
            raise InvalidArgumentError("thread_pool must be a bool, got %r" % (enabled,))
        if spin_us is not None and not enabled:
            raise InvalidArgumentError("pool_spin_us=%r needs thread_pool=True" % (spin_us,))
        spin = -1 if spin_us is None else c_int(spin_us, "pool_spin_us", "int32", 0, 1000000)
        self.check(_lib.fn("effml_context_set_thread_pool")(self._h, int(bool(enabled)), spin),
                   "effml_context_set_thread_pool")

    @property
    def thread_pool(self):
        """True if the context keeps a worker pool (see the constructor)."""
        return bool(_lib.fn("effml_context_thread_pool")(self._h, None))

    @property
    def pool_spin_us(self):
        """The pool's spin time in microseconds (0 when the pool is off)."""
        v = ctypes.c_int32(0)
        _lib.fn("effml_context_thread_pool")(self._h, ctypes.byref(v))
        return v.value

    def set_seed(self, seed):
        """Re-seed the context's generator."""
        _lib.fn("effml_context_set_seed")(self._h, c_int(seed, "seed", "uint64"))

    def last_error(self):
        """Message of the last error recorded in this context ("" if none)."""
        m = _lib.fn("effml_context_last_error")(self._h)
        return m.decode("utf-8", "replace") if m else ""

    def check(self, status, function):
        """Raise the exception for ``status`` (with the context's message) if nonzero."""
        if status:
            raise error_for(status, self.last_error(), function)

    def _borrow(self):
        """A C object made from this context is kept by a Python object: the C context
        stays until the matching :meth:`_release`."""
        with _borrow_lock:
            if self._h is None:
                raise InvalidArgumentError("the context is closed")
            self._borrows += 1

    def _release(self):
        """The C object of one :meth:`_borrow` is freed; a close() asked for meanwhile
        happens now if it was the last."""
        with _borrow_lock:
            self._borrows -= 1
            last = self._borrows == 0 and self._close_pending
        if last:
            self.close()

    def close(self):
        """Free the C context now, or -- while C objects made from it are alive (see the
        class docstring) -- as soon as the last of them is freed."""
        with _borrow_lock:
            if self._borrows > 0:
                self._close_pending = True
                return
            h, self._h = self._h, None
        if h:
            _lib.fn("effml_context_free")(h)

    def __del__(self):
        # a borrower alive in the same reference cycle postpones the free to its release
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __reduce__(self):
        raise TypeError("a libeffml Context cannot be pickled; make one per process/thread")


_tls = threading.local()
#: guards the borrow counts (a finalizer may run in any thread, and inside another's call)
_borrow_lock = threading.RLock()


def thread_context(num_threads=None):
    """The calling thread's default :class:`Context` (created on first use).

    ``num_threads`` (if given) sets its thread count first: estimators pass
    their ``n_jobs`` here.
    """
    try:
        ctx = _tls.ctx
    except AttributeError:
        ctx = _tls.ctx = Context()
    if num_threads is not None and num_threads != ctx.num_threads:
        ctx.num_threads = num_threads
    return ctx


#: Range of each C integer type a Python int may be passed as.
C_INT_RANGES = {
    "int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1),
    "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1),
}


def c_int(value, name, ctype="int64", lo=None, hi=None):
    """A Python/numpy integer checked to fit the C type ``ctype``.

    ctypes silently wraps an int too wide for an argument or struct field
    (2**32 becomes 0 in an int32), so every Python int bound for a C integer
    goes through here.  ``lo``/``hi`` narrow the range further.  Raises
    InvalidArgumentError (a ValueError) naming ``name`` for a non-integer
    (bool and float included) or a value outside the range.
    """
    import numbers
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentError("%s must be an int, got %r" % (name, value))
    v = int(value)
    clo, chi = C_INT_RANGES[ctype]
    lo = clo if lo is None else max(lo, clo)
    hi = chi if hi is None else min(hi, chi)
    if not lo <= v <= hi:
        raise InvalidArgumentError("%s=%d is out of range [%d, %d] (C %s)"
                                   % (name, v, lo, hi, ctype))
    return v


def n_jobs_to_threads(n_jobs):
    """scikit-learn's ``n_jobs`` convention -> a thread count >= 1.

    None -> 1, -1 -> all CPUs, -2 -> all but one, ..., k >= 1 -> k.
    """
    if n_jobs is None:
        return 1
    n_jobs = c_int(n_jobs, "n_jobs", "int32")
    if n_jobs == 0:
        raise InvalidArgumentError("n_jobs == 0 has no meaning (None, -1 or >= 1)")
    if n_jobs < 0:
        import os
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return n_jobs


class ContextOptions(ctypes.Structure):
    """Mirror of ``effml_context_options`` (include/effml/context.h)."""

    _fields_ = [("struct_size", ctypes.c_uint32), ("alloc", c_void_p), ("free", c_void_p),
                ("alloc_user_data", c_void_p), ("num_threads", ctypes.c_int32),
                ("seed", ctypes.c_uint64), ("log", c_void_p), ("log_user_data", c_void_p),
                ("log_level", ctypes.c_int32)]


# ---------------------------------------------------------------- tensors


def _is_frame(a):
    """A pandas-like DataFrame (duck-typed: pandas is never imported here)."""
    return hasattr(a, "columns") and hasattr(a, "dtypes") and hasattr(a, "to_numpy") \
        and hasattr(getattr(a, "dtypes"), "items")


def _frame_to_numpy(df, target, name):
    """A DataFrame whose columns are all numeric -> one numpy array.

    Columns of one plain numpy dtype go through ``np.asarray`` (no copy
    where pandas allows).  Mixed numeric columns (float with bool or int) and
    pandas nullable columns (Float64, Int64, boolean) would otherwise become
    an object array: they are converted once to ``target`` (float64 for the
    samplers), missing values (pd.NA) becoming NaN.  A non-numeric column
    raises DtypeError naming it.
    """
    kinds = []
    for col, dt in df.dtypes.items():
        kind = getattr(dt, "kind", "O")
        if kind not in "biuf":
            raise DtypeError("%s column %r has dtype %s; expected numeric columns"
                             % (name, col, dt))
        kinds.append(dt)
    if all(isinstance(dt, np.dtype) for dt in kinds) and len(set(kinds)) <= 1:
        return np.asarray(df)
    return df.to_numpy(dtype=target, na_value=np.nan)


def api_caller():
    """The effml call the user made, for messages: ``"SMOTE.fit_resample"``,
    ``"effml.calibration.ece"``; None outside the package.

    Walks out from the caller to the outermost frame of this package before a
    frame of user code (the innermost user -> effml boundary, so a user
    callback that calls effml again is named by its own call).  A method is
    named by the class of its ``self`` (a base class's ``fit_resample`` run by
    SMOTE is ``SMOTE.fit_resample``); ``__init__`` as ``Class()``.
    """
    import sys
    pkg = __name__.rpartition(".")[0]
    f, entry = sys._getframe(1), None
    while f is not None:
        mod = f.f_globals.get("__name__", "")
        if mod != pkg and not mod.startswith(pkg + "."):
            break
        entry = f
        f = f.f_back
    if entry is None:
        return None
    code = entry.f_code
    first = code.co_varnames[0] if code.co_argcount else None
    if first in ("self", "cls") and first in entry.f_locals:
        obj = entry.f_locals[first]
        cls = obj if first == "cls" and isinstance(obj, type) else type(obj)
        if code.co_name == "__init__":
            return "%s()" % cls.__name__
        return "%s.%s" % (cls.__name__, code.co_name)
    return "%s.%s" % (entry.f_globals.get("__name__", pkg),
                      getattr(code, "co_qualname", code.co_name))


def empty_error(name, shape, where=None, rows=False):
    """ShapeError for an array argument with a zero-length axis, naming the call
    (``where``, default :func:`api_caller`) and the argument: "SMOTE.fit_resample:
    X has 0 rows (shape (0, 2))".  C tensors need every axis >= 1.  ``rows``: axis 0
    is called rows even for a 1-D shape (X given as a list)."""
    from ._errors import ShapeError
    where = where or api_caller()
    shape = tuple(int(d) for d in shape)
    if len(shape) == 1 and not rows:
        what = "0 entries"
    elif shape[0] == 0:
        what = "0 rows"
    elif len(shape) == 2:
        what = "0 columns"
    else:
        what = "a zero-length axis %d" % shape.index(0)
    return ShapeError("%s%s has %s (shape %s); an empty array cannot be processed"
                      % ("%s: " % where if where else "", name, what, shape))


def as_array(a, dtypes, name="array", ndim=None, where=None):
    """``a`` as a numpy array libeffml can wrap without a further copy.

    ``dtypes``: allowed numpy dtypes, first = the conversion target for
    anything else.  A C-contiguous array of an allowed dtype is returned as is
    (no copy); otherwise it is converted once.  A DataFrame with mixed
    numeric or pandas nullable columns is converted once to ``dtypes[0]``
    (see :func:`_frame_to_numpy`).  ``ndim`` (int or tuple) is checked when
    given.  An array with a zero-length axis raises ShapeError naming the
    call (``where``, default the effml call the user made: see
    :func:`api_caller`) and ``name`` -- "SMOTE.fit_resample: X has 0 rows" --
    rather than the C wrapper's "shape[0]=0 must be >= 1".
    """
    arr = _frame_to_numpy(a, dtypes[0], name) if _is_frame(a) else np.asarray(a)
    if arr.dtype not in dtypes:
        if arr.dtype.kind in "OUSVMmc":
            raise DtypeError("%s has dtype %s; expected a numeric array (%s)"
                             % (name, arr.dtype, ", ".join(str(d) for d in dtypes)))
        arr = np.ascontiguousarray(arr, dtype=dtypes[0])
    elif not arr.flags.c_contiguous or not arr.flags.aligned:
        # (np.ascontiguousarray keeps a contiguous but misaligned buffer, e.g. one
        # unpickled from a pickle-5 frame: copy explicitly)
        arr = np.array(arr, order="C", copy=True)
    if ndim is not None:
        ok = arr.ndim in ndim if isinstance(ndim, tuple) else arr.ndim == ndim
        if not ok:
            from ._errors import ShapeError
            raise ShapeError("%s must have %s dimension(s), got shape %s"
                             % (name, ndim, arr.shape))
    if arr.ndim >= 1 and 0 in arr.shape:
        raise empty_error(name, arr.shape, where)
    return arr


_wrap_fn = None
_free_fn = None


def wrap(ctx, arr, writable=False):
    """Wrap a C-contiguous numpy array as a borrowed ``effml_tensor *`` (int).

    The caller keeps ``arr`` alive until the tensor is freed (use
    :class:`Scope`).  Read-only arrays are wrapped read-only; ``writable``
    demands a writable array (C output buffers).
    """
    global _wrap_fn
    code = NP_TO_EFFML.get(arr.dtype)
    if code is None:
        raise DtypeError("dtype %s has no libeffml equivalent" % arr.dtype)
    if not arr.flags.c_contiguous:
        raise InvalidArgumentError("internal: wrap() needs a C-contiguous array")
    ro = 0 if arr.flags.writeable else 1
    if writable and ro:
        raise InvalidArgumentError("output array is read-only")
    if _wrap_fn is None:
        _wrap_fn = _lib.fn("effml_tensor_wrap")
    nd = arr.ndim
    shape = (c_int64 * max(nd, 1))(*arr.shape)
    h = c_void_p()
    ptr = arr.ctypes.data
    if ptr == 0:  # zero-size arrays may have no buffer; C will refuse the shape
        ptr = 1
    st = _wrap_fn(ctx._h, code, nd, shape, None, ptr, arr.nbytes, ro, byref(h))
    if st:
        ctx.check(st, "effml_tensor_wrap")
    return h.value


def _free_tensor(h, ctx):
    _lib.fn("effml_tensor_free")(h)
    ctx._release()


def adopt(ctx, h, read_only=False):
    """numpy array over the owned C tensor ``h`` (no copy); frees it with the array.

    bf16 tensors are converted to float32 (numpy has no bfloat16).  The
    Context is kept alive until the tensor is freed.
    """
    L = _lib.fn
    code = L("effml_tensor_dtype")(h)
    if code == BF16:
        raise DtypeError("bf16 tensors need effml.io's conversion")  # callers convert first
    dt = EFFML_TO_NP.get(code)
    if dt is None:
        L("effml_tensor_free")(h)
        raise DtypeError("C returned a tensor of unknown dtype code %d" % code)
    nd = L("effml_tensor_ndim")(h)
    sp = L("effml_tensor_shape")(h)
    shape = tuple(sp[i] for i in range(nd))
    nbytes = L("effml_tensor_nbytes")(h)
    if not L("effml_tensor_is_contiguous")(h):
        L("effml_tensor_free")(h)
        raise InvalidArgumentError("internal: adopt() needs a contiguous tensor")
    ptr = L("effml_tensor_data_const")(h)
    buf = (ctypes.c_char * nbytes).from_address(ptr)
    ctx._borrow()
    weakref.finalize(buf, _free_tensor, h, ctx)
    arr = np.frombuffer(buf, dtype=dt).reshape(shape)
    if read_only or L("effml_tensor_is_read_only")(h):
        arr.flags.writeable = False
    return arr


def copy_out(h):
    """New numpy array with a copy of the (borrowed) C tensor ``h``'s elements."""
    L = _lib.fn
    code = L("effml_tensor_dtype")(h)
    dt = EFFML_TO_NP.get(code)
    if dt is None:
        raise DtypeError("tensor dtype %s has no numpy equivalent"
                         % L("effml_tensor_dtype_name")(code).decode())
    nd = L("effml_tensor_ndim")(h)
    sp = L("effml_tensor_shape")(h)
    st = L("effml_tensor_strides")(h)
    shape = tuple(sp[i] for i in range(nd))
    strides = tuple(st[i] * dt.itemsize for i in range(nd))
    ptr = L("effml_tensor_data_const")(h)
    # bytes from the first element to the end of the last (an empty tensor: none)
    span = (sum((s - 1) * abs(t) for s, t in zip(shape, strides)) + dt.itemsize
            if all(shape) else 0)
    buf = (ctypes.c_char * max(span, dt.itemsize)).from_address(ptr)
    view = np.ndarray(shape, dtype=dt, buffer=buf, strides=strides)
    return view.copy()


class Scope:
    """Collects borrowed tensors and owned outputs of one C call; frees them on exit.

    >>> with Scope(ctx) as s:
    ...     x = s.wrap(arr)
    ...     out = s.out()
    ...     ctx.check(f(ctx.handle, x, out), "effml_f")
    ...     result = s.adopt(out)
    """

    __slots__ = ("ctx", "_wrapped", "_keep", "_outs")

    def __init__(self, ctx):
        self.ctx = ctx
        self._wrapped = []
        self._keep = []
        self._outs = []

    def __enter__(self):
        return self

    def wrap(self, arr, writable=False):
        """Borrowed tensor over ``arr`` (kept alive until the scope ends).

        An input that is not C-contiguous and aligned is copied first (outputs
        must already be: C writes into them).
        """
        if not writable and not (arr.flags.c_contiguous and arr.flags.aligned):
            arr = np.array(arr, order="C", copy=True)
        h = wrap(self.ctx, arr, writable)
        self._wrapped.append(h)
        self._keep.append(arr)
        return h

    def out(self):
        """A ``c_void_p`` out-parameter (pass ``byref`` of it); freed unless adopted."""
        p = c_void_p()
        self._outs.append(p)
        return p

    def adopt(self, p, read_only=False):
        """Take ownership of out-parameter ``p`` as a numpy array (None stays None)."""
        h = p.value
        if h is None:
            return None
        p.value = None
        return adopt(self.ctx, h, read_only)

    def __exit__(self, *exc):
        free = _lib.fn("effml_tensor_free")
        for h in self._wrapped:
            free(h)
        for p in self._outs:
            if p.value:
                free(p.value)
                p.value = None
        self._wrapped.clear()
        self._keep.clear()
        return False


_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
_c_double_p = ctypes.POINTER(ctypes.c_double)
_c_int64_p = ctypes.POINTER(ctypes.c_int64)


def dptr(a):
    """``double *`` of a C-contiguous float64 array, cheaply (no ``a.ctypes``)."""
    try:
        return byref(ctypes.c_double.from_buffer(a))
    except (TypeError, ValueError):  # read-only or empty
        return a.ctypes.data_as(_c_double_p) if a.size else None


def iptr(a):
    """``int64_t *`` of a C-contiguous int64 array."""
    try:
        return byref(ctypes.c_int64.from_buffer(a))
    except (TypeError, ValueError):
        return a.ctypes.data_as(_c_int64_p) if a.size else None


def f64_buffer(values, name, n=None):
    """``values`` as a contiguous float64 numpy array and its ``double *``."""
    if type(values) is np.ndarray and values.dtype is _F64 and values.flags.c_contiguous:
        a = values
    else:
        a = np.ascontiguousarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise InvalidArgumentError("%s must be 1-D, got shape %s" % (name, a.shape))
    if n is not None and a.shape[0] != n:
        raise InvalidArgumentError("%s has %d entries, expected %d" % (name, a.shape[0], n))
    return a, dptr(a)


def i64_buffer(values, name, n=None):
    """``values`` as a contiguous int64 numpy array and its ``int64_t *``."""
    a = np.asarray(values)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.trunc(a)):
            raise InvalidArgumentError("%s must hold integers" % name)
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.ndim != 1:
        raise InvalidArgumentError("%s must be 1-D, got shape %s" % (name, a.shape))
    if n is not None and a.shape[0] != n:
        raise InvalidArgumentError("%s has %d entries, expected %d" % (name, a.shape[0], n))
    return a, iptr(a)


# ---------------------------------------------------------------- Ctrl-C

#: ``effml_context_progress_fn``: (user_data, call, done, total) -> int32
PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int32, c_void_p, ctypes.c_char_p, c_int64, c_int64)


class interruptible:
    """Let Ctrl-C stop the long libeffml calls made with ``ctx`` inside the block.

    >>> with interruptible(ctx):
    ...     ctx.check(f(ctx.handle, ...), "effml_f")

    Python runs a signal handler only between bytecodes of the main thread,
    never while a ctypes call is inside C.  So, on the main thread and while
    SIGINT has a Python handler, the block installs its own SIGINT handler
    and a progress callback on ``ctx``: the long C calls (re-sampling, kNN,
    leverage scores and Lewis weights, cascade runs) call it between units of
    work, which gives Python the chance to run the handler.  The handler only
    records the interrupt and sets the context's cancel flag
    (``effml_context_set_cancel``, safe from a signal handler); the callback
    then asks C to stop, C returns ``EFFML_E_CANCELLED`` without publishing
    any output (caller buffers untouched), and on leaving the block the flag
    is withdrawn, the previous handler and no progress callback are restored,
    and ``KeyboardInterrupt`` is raised (instead of the CancelledError) — or,
    if the previous handler was a user's own, it is called then.  The latency
    is one unit of work of the C call (a round of rows or an iteration).

    Elsewhere (another thread, SIGINT ignored or at the OS default) the block
    changes nothing.  The context must not get another progress callback
    meanwhile.
    """

    __slots__ = ("ctx", "hit", "_old", "_cb")

    def __init__(self, ctx):
        self.ctx = ctx
        self.hit = False
        self._old = None
        self._cb = None

    def _on_sigint(self, signum, frame):
        self.hit = True
        _lib.fn("effml_context_set_cancel")(self.ctx._h, 1)

    def _on_progress(self, _ud, _call, _done, _total):
        return 1 if self.hit else 0

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        old = signal.getsignal(signal.SIGINT)
        if not callable(old):  # SIG_IGN, SIG_DFL, or a handler not set from Python
            return self
        try:
            signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main interpreter
            return self
        self._old = old
        self._cb = PROGRESS_FN(self._on_progress)
        _lib.fn("effml_context_set_progress")(self.ctx._h, self._cb, None)
        return self

    def __exit__(self, *exc):
        old = self._old
        if old is None:
            return False
        self._old = None
        h = self.ctx._h
        outer = getattr(old, "__self__", None)
        outer_cb = outer._cb if isinstance(outer, interruptible) and outer.ctx is self.ctx else None
        _lib.fn("effml_context_set_progress")(h, outer_cb, None)
        _lib.fn("effml_context_set_cancel")(h, 0)
        signal.signal(signal.SIGINT, old)
        self._cb = None
        if self.hit:
            self.hit = False
            if old is signal.default_int_handler:
                raise KeyboardInterrupt() from None
            old(signal.SIGINT, None)  # e.g. an outer block's handler, or the user's
        return False
