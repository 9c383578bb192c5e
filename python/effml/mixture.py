"""Data mixtures over K sources: temperature sampling, schedules, UniMax,
virtual epoch sizes, alias draws and interleaving.

Sizes and probabilities are 1-D array-likes (converted to float64/int64
once); results are numpy arrays allocated here that the C call writes into.

References: temperature sampling, Arivazhagan et al. 2019 ("Massively
multilingual NMT in the wild", arXiv:1907.05019); UniMax, Chung et al., ICLR
2023 (arXiv:2304.09151), Alg. 1; virtual sizes as fairseq's
SampledMultiDataset; interleaving as Hugging Face datasets'
``interleave_datasets``.
"""

import ctypes
from ctypes import byref, c_double, c_int64, c_void_p

import numpy as np

from . import _lib
from ._core import Scope, c_int, dptr, f64_buffer, i64_buffer, thread_context
from ._errors import InvalidArgumentError

__all__ = ["temperature_probs", "temperature_at", "unimax", "virtual_sizes", "interleave",
           "AliasSampler"]


_temp_fn = _lib.fn("effml_sampler_temperature_probs")
_ndarray, _F64, _frombuffer = np.ndarray, np.dtype(np.float64), np.frombuffer
_DOUBLE_ARRAYS = {}  # n -> c_double * n
_byref, _from_buffer = byref, ctypes.c_double.from_buffer


def temperature_probs(sizes, temperature=1.0, *, alpha=None):
    """q_i = p_i^(1/T) / sum_j p_j^(1/T), p_i = n_i / N.

    Parameters
    ----------
    sizes : array-like of K sizes >= 0 (examples or tokens), sum > 0
    temperature : float > 0, default 1 (proportional); ``float('inf')`` is uniform
        over non-empty sources.
    alpha : float >= 0, optional
        The 1/T form used by XLM and mT5 (q_i proportional to p_i^alpha);
        when given, ``temperature`` is ignored.

    Returns float64 array of K probabilities (empty sources get 0).
    """
    if alpha is None and type(sizes) is _ndarray and sizes.dtype is _F64:
        # Fast path (the per-call cost is the point of a tiny call): a writable
        # C-contiguous float64 vector is passed by pointer with no conversion.
        sh = sizes.shape
        try:
            if len(sh) != 1:
                raise TypeError
            n = sh[0]
            ps = _byref(_from_buffer(sizes))  # refuses read-only / non-contiguous buffers
        except (TypeError, ValueError, BufferError):
            ps = None
        if ps is not None:
            # the output: a ctypes array (passed as double * without conversion),
            # returned as the numpy array over it
            t = _DOUBLE_ARRAYS.get(n)
            if t is None:
                t = c_double * n
                if n <= 4096:
                    _DOUBLE_ARRAYS[n] = t
            buf = t()
            ctx = thread_context()
            st = _temp_fn(ctx._h, ps, n, temperature, buf)
            if st:
                ctx.check(st, "effml_sampler_temperature_probs")
            return _frombuffer(buf)
    ctx = thread_context()
    s, ps = f64_buffer(sizes, "sizes")
    if not s.shape[0]:
        raise InvalidArgumentError("sizes is empty (one size per source needed)")
    out = np.empty(s.shape[0])
    if alpha is None:
        st = _temp_fn(ctx._h, ps, s.shape[0], temperature, dptr(out))
        if st:
            ctx.check(st, "effml_sampler_temperature_probs")
    else:
        ctx.check(_lib.fn("effml_sampler_temperature_probs_alpha")(ctx.handle, ps, len(s), float(alpha),
                                                           dptr(out)),
                  "effml_sampler_temperature_probs_alpha")
    return out


class TemperatureSchedule(ctypes.Structure):
    """Mirror of ``effml_sampler_temperature_schedule`` (include/effml/sampler.h)."""

    _fields_ = [("struct_size", ctypes.c_uint32), ("kind", ctypes.c_int32),
                ("t_start", c_double), ("t_end", c_double), ("total_steps", c_int64),
                ("switch_fraction", c_double), ("fn", c_void_p), ("user_data", c_void_p)]


_SCHEDULES = {"constant": 0, "linear": 1, "cosine": 2, "cooldown": 3}


def temperature_at(step, *, kind="constant", t_start=1.0, t_end=1.0, total_steps=1,
                   switch_fraction=0.5):
    """Temperature at training ``step`` of a schedule.

    kind: 'constant' (T = t_start), 'linear' (t_start -> t_end over
    total_steps), 'cosine' (t_end + (t_start - t_end)(1 + cos(pi f))/2,
    f = step/total_steps), 'cooldown' (t_start until switch_fraction *
    total_steps, then t_end; Li et al. 2025).  Steps past total_steps keep the
    final value.
    """
    if kind not in _SCHEDULES:
        raise InvalidArgumentError("kind must be one of %s, got %r" % (sorted(_SCHEDULES), kind))
    ctx = thread_context()
    s = TemperatureSchedule()
    _lib.fn("effml_sampler_temperature_schedule_init")(byref(s))
    s.kind = _SCHEDULES[kind]
    s.t_start, s.t_end = float(t_start), float(t_end)
    s.total_steps = c_int(total_steps, "total_steps")
    s.switch_fraction = float(switch_fraction)
    t = c_double()
    ctx.check(_lib.fn("effml_sampler_temperature_at")(ctx.handle, byref(s), c_int(step, "step"), byref(t)),
              "effml_sampler_temperature_at")
    return t.value


def unimax(sizes, budget, max_epochs):
    """UniMax allocation (Chung et al. 2023, Alg. 1).

    Sources sorted by size ascending; the i-th of L gets U = min(B / (L - i),
    max_epochs * n_i) and B -= U.

    Returns ``(probs, allocation)``: float64 arrays of K entries (probs = U / sum U).
    """
    ctx = thread_context()
    s, ps = f64_buffer(sizes, "sizes")
    probs, alloc = np.empty_like(s), np.empty_like(s)
    D = ctypes.POINTER(c_double)
    ctx.check(_lib.fn("effml_sampler_unimax")(ctx.handle, ps, len(s), float(budget), float(max_epochs),
                                      alloc.ctypes.data_as(D), probs.ctypes.data_as(D)),
              "effml_sampler_unimax")
    return probs, alloc


def virtual_sizes(sizes, probs, virtual_size=0):
    """Per-epoch example counts per source (fairseq SampledMultiDataset).

    ``virtual_size`` 0 uses fairseq's default epoch size.  Counts are
    floor(V q_i) plus the largest remainders, so they sum to V exactly.

    Returns ``(counts, V)``: int64 array of K counts and the epoch size.
    """
    ctx = thread_context()
    s, ps = i64_buffer(sizes, "sizes")
    p, pp = f64_buffer(probs, "probs", len(s))
    counts = np.empty(len(s), dtype=np.int64)
    v = c_int64()
    ctx.check(_lib.fn("effml_sampler_virtual_sizes")(ctx.handle, ps, pp, len(s), c_int(virtual_size, "virtual_size"),
                                             counts.ctypes.data_as(ctypes.POINTER(c_int64)),
                                             byref(v)), "effml_sampler_virtual_sizes")
    return counts, v.value


_STOP = {"first_exhausted": 0, "all_exhausted": 1, "all_exhausted_without_replacement": 2}


def interleave(lengths, probs=None, *, stopping_strategy="first_exhausted", seed=0,
               max_len=None):
    """The (source, example) sequence of interleaving K sources.

    probs None: round robin; otherwise each step draws a source with these
    probabilities (alias method, seeded by ``seed``) and emits its next
    example.  ``stopping_strategy``: 'first_exhausted', 'all_exhausted'
    (short sources wrap) or 'all_exhausted_without_replacement', as Hugging
    Face datasets.  ``max_len`` caps the output (default 100 * sum(lengths);
    reaching it is a RangeError).

    Returns ``(source, index)``: two int64 arrays.
    """
    if stopping_strategy not in _STOP:
        raise InvalidArgumentError("stopping_strategy must be one of %s, got %r"
                                   % (sorted(_STOP), stopping_strategy))
    ctx = thread_context()
    ln, pl = i64_buffer(lengths, "lengths")
    if probs is None:
        p, pp = None, None
    else:
        p, pp = f64_buffer(probs, "probs", len(ln))
    if max_len is None:
        max_len = max(1, 100 * int(ln.sum()))
    with Scope(ctx) as s:
        a, b = s.out(), s.out()
        ctx.check(_lib.fn("effml_sampler_interleave")(ctx.handle, pl, len(ln), pp, _STOP[stopping_strategy],
                                              c_int(seed, "seed", "uint64"), int(max_len),
                                              byref(a), byref(b)), "effml_sampler_interleave")
        return s.adopt(a), s.adopt(b)


class AliasSampler:
    """O(1) draws from a fixed discrete distribution (Walker/Vose alias method).

    Parameters
    ----------
    weights : array-like >= 0, finite, sum > 0 (normalised here)
    seed : int, default 0

    The same seed gives the same sequence however draws are split into calls.
    Holds a C object: use from one thread at a time; not picklable.
    """

    def __init__(self, weights, seed=0):
        self._ctx = thread_context()
        w, pw = f64_buffer(weights, "weights")
        h = c_void_p()
        self._ctx.check(_lib.fn("effml_sampler_alias_create")(
            self._ctx.handle, pw, len(w), c_int(seed, "seed", "uint64"), byref(h)),
            "effml_sampler_alias_create")
        self._ctx._borrow()  # freed through the creating thread's context: kept until then
        self._h = h.value

    def draw(self, count):
        """``count`` indices in [0, K) as an int64 array."""
        out = np.empty(c_int(count, "count", lo=0), dtype=np.int64)
        self._ctx.check(_lib.fn("effml_sampler_alias_draw")(
            self._ctx.handle, self._h, int(count), out.ctypes.data_as(ctypes.POINTER(c_int64))),
            "effml_sampler_alias_draw")
        return out

    def __del__(self):
        h, self._h = getattr(self, "_h", None), None
        if h:
            _lib.fn("effml_sampler_alias_free")(h)
            self._ctx._release()

    def __reduce__(self):
        raise TypeError("AliasSampler holds a C object and cannot be pickled")
