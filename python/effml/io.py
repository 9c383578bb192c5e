"""``.npy`` and safetensors files through libeffml's readers and writers.

Loaded arrays are numpy arrays over the C library's memory (no copy):
:func:`load_npy` returns a writable array that owns its C tensor;
:class:`SafeTensors` opened with ``mmap=True`` (the default) hands out
read-only arrays over the mapped file, which keep the file open as long as
any of them lives.  bfloat16 tensors (no numpy dtype) are returned as float32
copies.  Errors: :class:`effml.EffmlIOError` (an OSError) when a file cannot
be opened, read or written; :class:`effml.FormatError` (a ValueError) for
malformed contents; :class:`effml.NotFoundError` (a KeyError) for a missing
tensor name.  The formats and the rules enforced are in docs/io.md.
"""

import ctypes
import os
from ctypes import byref, c_char_p, c_void_p

import numpy as np

from . import _lib
from ._core import BF16, EFFML_TO_NP, F32, Scope, thread_context
from ._errors import InvalidArgumentError, ShapeError

__all__ = ["load_npy", "save_npy", "SafeTensors", "load_safetensors", "save_safetensors"]


def _path(p):
    return os.fsencode(os.fspath(p))


def load_npy(path):
    """Load a ``.npy`` file (versions 1.0-3.0) as a numpy array (C order, no extra copy)."""
    ctx = thread_context()
    with Scope(ctx) as s:
        out = s.out()
        ctx.check(_lib.fn("effml_io_npy_load")(ctx.handle, _path(path), byref(out)),
                  "effml_io_npy_load")
        return s.adopt(out)


def _c_order(a, what):
    """``a`` C-contiguous, native byte order, keeping its shape; ``what`` names it in errors.

    Not ``np.ascontiguousarray``: it returns at least 1-d, which wrote 0-d
    arrays with shape (1,).  A non-native byte order (``'>f4'``) is converted
    once; the files are little-endian either way.  Zero-size arrays are
    refused (libeffml tensors need every dimension >= 1, docs/io.md).
    """
    native = a.dtype.newbyteorder("=")
    if native not in EFFML_TO_NP.values():
        raise InvalidArgumentError("%s: dtype %s is not supported" % (what, a.dtype))
    if a.dtype != native:
        a = a.astype(native)
    if a.size == 0:
        raise ShapeError("%s: shape %s has a zero-size dimension; libeffml tensors need every "
                         "dimension >= 1 (docs/io.md)" % (what, a.shape))
    return np.require(a, requirements="C")


def save_npy(path, array):
    """Save ``array`` as ``.npy`` (byte-identical to numpy 1.24's ``np.save``).

    Written to a temporary file and renamed: ``path`` is never half-written.
    """
    ctx = thread_context()
    a = _c_order(np.asarray(array), "save_npy")
    with Scope(ctx) as s:
        t = s.wrap(a)
        ctx.check(_lib.fn("effml_io_npy_save")(ctx.handle, _path(path), t), "effml_io_npy_save")


class _Handle:
    """Owns an effml_safetensors*; freed when the SafeTensors object and every
    array handed out are gone."""

    def __init__(self, ctx, h):
        ctx._borrow()  # freed through ctx (the loading thread's): kept until then
        self.ctx, self.h = ctx, h

    def __del__(self):
        h, self.h = getattr(self, "h", None), None
        if h:
            _lib.fn("effml_safetensors_free")(h)
            self.ctx._release()


class SafeTensors:
    """A loaded safetensors file: a read-only mapping name -> numpy array.

    Parameters
    ----------
    path : str or path-like
    mmap : bool, default True
        Map the file (arrays are read-only views of the mapping) instead of
        reading it into memory (arrays are then still read-only: the file's
        buffer is shared).

    ``metadata`` is the ``__metadata__`` dict of strings.  Arrays stay valid
    after the object is dropped or closed (each keeps the file alive).
    Use it as a context manager, or call :meth:`close`, to release the file
    as soon as no array handed out still refers to it.
    """

    def __init__(self, path, mmap=True):
        ctx = thread_context()
        h = c_void_p()
        ctx.check(_lib.fn("effml_safetensors_load")(ctx.handle, _path(path), 1 if mmap else 0,
                                                    byref(h)), "effml_safetensors_load")
        self._own = _Handle(ctx, h.value)
        L = _lib.fn
        n = L("effml_safetensors_count")(h.value)
        self._names = [L("effml_safetensors_name")(h.value, i).decode() for i in range(n)]
        m = L("effml_safetensors_metadata_count")(h.value)
        self.metadata = {}
        for i in range(m):
            k = L("effml_safetensors_metadata_key")(h.value, i)
            self.metadata[k.decode()] = L("effml_safetensors_metadata")(h.value, k).decode()

    def close(self):
        """Drop this object's hold on the file (idempotent).

        The file is unmapped/freed once no array handed out still refers to
        it; indexing a closed object raises ValueError.
        """
        self._own = None

    @property
    def closed(self):
        """True after :meth:`close`."""
        return self._own is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def keys(self):
        """Tensor names in file offset order."""
        return list(self._names)

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)

    def __contains__(self, name):
        return name in self._names

    def __getitem__(self, name):
        if self._own is None:
            raise ValueError("SafeTensors: the file is closed")
        ctx = self._own.ctx
        t = c_void_p()
        ctx.check(_lib.fn("effml_safetensors_get")(ctx.handle, self._own.h, name.encode(),
                                                   byref(t)), "effml_safetensors_get")
        L = _lib.fn
        code = L("effml_tensor_dtype")(t.value)
        if code == BF16:  # no numpy bfloat16: convert (a copy)
            with Scope(ctx) as s:
                out = s.out()
                ctx.check(L("effml_tensor_convert")(ctx.handle, t.value, F32, byref(out)),
                          "effml_tensor_convert")
                return s.adopt(out)
        dt = EFFML_TO_NP[code]
        nd = L("effml_tensor_ndim")(t.value)
        sp = L("effml_tensor_shape")(t.value)
        shape = tuple(sp[i] for i in range(nd))
        nbytes = L("effml_tensor_nbytes")(t.value)
        buf = (ctypes.c_char * nbytes).from_address(L("effml_tensor_data_const")(t.value))
        buf._owner = self._own  # the file lives while any array over it lives
        arr = np.frombuffer(buf, dtype=dt).reshape(shape)
        arr.flags.writeable = False
        return arr

    def items(self):
        """(name, array) pairs in file order."""
        return [(k, self[k]) for k in self._names]


def load_safetensors(path, mmap=True):
    """Load a safetensors file as a dict name -> numpy array (read-only, zero copy)."""
    with SafeTensors(path, mmap=mmap) as st:
        return dict(st.items())


def save_safetensors(path, tensors, metadata=None):
    """Write ``tensors`` (dict name -> array) and optional ``metadata`` (str -> str).

    Names must be unique UTF-8 strings other than ``__metadata__``.  Tensors
    are written contiguous, little-endian, in the reference writer's order;
    ``path`` is replaced atomically.
    """
    ctx = thread_context()
    names = list(tensors)
    meta = dict(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgumentError("metadata keys and values must be str")
    arrays = [_c_order(np.asarray(tensors[k]), "save_safetensors: tensor %r" % (k,))
              for k in names]
    with Scope(ctx) as s:
        hs = [s.wrap(a) for a in arrays]
        n = len(names)
        cn = (c_char_p * max(n, 1))(*[k.encode() for k in names])
        ct = (c_void_p * max(n, 1))(*hs)
        mk = (c_char_p * max(len(meta), 1))(*[k.encode() for k in meta])
        mv = (c_char_p * max(len(meta), 1))(*[v.encode() for v in meta.values()])
        ctx.check(_lib.fn("effml_safetensors_save")(
            ctx.handle, _path(path), n, cn, ct, len(meta), mk, mv), "effml_safetensors_save")
