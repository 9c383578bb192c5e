"""Run-time introspection of the C library (ISA level, option-struct layouts).

The C calls that report the ISA level and struct layouts are newer than the
0.1 ABI; functions here fall back to what 0.1 offers (an option struct's
``_init`` writes its ``struct_size``), so the bindings work with both.
"""

import ctypes

from . import _lib


def isa_level():
    """SIMD level string the library's kernels use (e.g. "avx2"), or None if unknown."""
    return None


def mirrored_structs():
    """C struct name -> (ctypes mirror, name of its C ``_init`` function)."""
    from ._core import ContextOptions
    from ._sampler_base import ResampleOptions
    from .coreset import LeverageOptions
    from .mixture import TemperatureSchedule
    from .selective import CascadeCalibrationOptions, CascadeOptions
    return {
        "effml_context_options": (ContextOptions, "effml_context_options_init"),
        "effml_sampler_resample_options": (ResampleOptions, "effml_sampler_resample_options_init"),
        "effml_sampler_temperature_schedule": (TemperatureSchedule, "effml_sampler_temperature_schedule_init"),
        "effml_sampler_leverage_options": (LeverageOptions, "effml_sampler_leverage_options_init"),
        "effml_cascade_options": (CascadeOptions, "effml_cascade_options_init"),
        "effml_cascade_threshold_options": (CascadeCalibrationOptions,
                                              "effml_cascade_threshold_options_init"),
    }


def c_struct_size(name):
    """sizeof(struct ``name``) as the loaded library reports it (its _init's struct_size)."""
    cls, init = mirrored_structs()[name]
    buf = (ctypes.c_char * 4096)()
    _lib.fn(init)(ctypes.addressof(buf))
    return ctypes.c_uint32.from_buffer(buf).value


def check_struct_sizes():
    """[(name, ours, library's)] of every mirrored struct whose size differs."""
    bad = []
    for name, (cls, _) in mirrored_structs().items():
        c = c_struct_size(name)
        if c != ctypes.sizeof(cls):
            bad.append((name, ctypes.sizeof(cls), c))
    return bad
