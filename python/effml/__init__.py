"""effml: Python bindings of libeffml (pure Python over the C ABI, ctypes + numpy).

Importing the package loads ``libeffml.so.0`` (see :mod:`effml._lib` for
where it looks) and refuses a library of another MAJOR.MINOR version.

Modules:

- :mod:`effml.over_sampling`, :mod:`effml.under_sampling`,
  :mod:`effml.combine`: drop-in replacements for imbalanced-learn's samplers
  of the same names;
- :mod:`effml.neighbors`: the exact k-nearest-neighbour search behind them;
- :mod:`effml.io`: ``.npy`` and safetensors files;
- :mod:`effml.mixture`: temperature sampling over data sources, UniMax,
  virtual sizes, interleaving, alias draws;
- :mod:`effml.coreset`: leverage scores, Lewis weights, sensitivity sampling;
- :mod:`effml.selective`: selective-classification and OOD metrics,
  ensembles, early-exit cascades over logits or Python callables;
- :mod:`effml.peft`: PEFT adapter directories: inspect, apply, merge into
  weights or a safetensors checkpoint;
- :mod:`effml.calibration`: temperature / vector scaling, the
  correctness-aware calibrator, ECE, Brier score, AUGRC;
- :mod:`effml.losses`: weighted cross-entropy, class weights, scalarization
  (``effml.nn.fit`` takes ``sample_weight`` and ``class_weight``).

Errors raise the classes in :mod:`effml.errors` (each also a ValueError,
MemoryError, OSError, ... as a scikit-learn user expects).  Threads: every
function uses the calling thread's own C context, so functions and
estimators may be called from several threads at once; ctypes releases the
GIL during C calls.  Install and examples: docs/python.md.
"""

__version__ = "0.2.0"

from . import _lib
from ._core import Context, thread_context
from ._errors import (EffmlError, InvalidArgumentError, ShapeError, DtypeError,
                      OutOfMemoryError, EffmlIOError, FormatError, NumericError,
                      UnsupportedError, NotFoundError, SizeOverflowError, StateError,
                      RangeError, CancelledError)
from ._lib import LibraryNotFoundError, LibraryVersionError

_lib.lib()  # load now: a missing or mismatched library fails at import


def library_version():
    """Version string of the loaded C library, e.g. ``"0.2.0"``."""
    return _lib.version_string()


def library_path():
    """Absolute path of the loaded ``libeffml.so.0``."""
    return _lib.path()


def isa_level():
    """SIMD level the C library dispatches to, as the library reports it.

    Returns None when the loaded library has no introspection call yet.
    """
    from ._introspect import isa_level as _isa
    return _isa()


__all__ = ["Context", "thread_context", "EffmlError", "InvalidArgumentError", "ShapeError",
           "DtypeError", "OutOfMemoryError", "EffmlIOError", "FormatError", "NumericError",
           "UnsupportedError", "NotFoundError", "SizeOverflowError", "StateError",
           "RangeError", "CancelledError", "LibraryNotFoundError", "LibraryVersionError", "library_version",
           "library_path", "isa_level", "__version__"]
