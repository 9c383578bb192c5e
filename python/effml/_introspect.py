"""Run-time introspection of the C library (ISA level, option-struct layouts).

The C calls that report the ISA level and struct layouts are newer than the
0.1 ABI; functions here fall back to what 0.1 offers (an option struct's
``_init`` writes its ``struct_size``), so the bindings work with both.
"""

import ctypes

from . import _lib


def isa_level():
    """SIMD level the library's own kernels dispatch to on this CPU ("portable",
    "avx2", "avx512"), or None when the library has no ISA query."""
    if not _lib.has("effml_core_isa_level"):
        return None
    return _lib.fn("effml_core_isa_name")(_lib.fn("effml_core_isa_level")()).decode()


def library_structs():
    """Names of every public option struct the loaded library knows (None if it cannot say)."""
    if not _lib.has("effml_core_struct_name"):
        return None
    out, i, f = [], 0, _lib.fn("effml_core_struct_name")
    while True:
        n = f(i)
        if n is None:
            return out
        out.append(n.decode())
        i += 1


def mirrored_structs():
    """C struct name -> (ctypes mirror, name of its C ``_init`` function)."""
    from ._core import ContextOptions
    from .calibration import CalibrationOptions
    from ._sampler_base import ResampleOptions
    from .coreset import LeverageOptions
    from .mixture import TemperatureSchedule
    from .nn import OptimizerOptions, TrainOptions
    from .selective import CascadeCalibrationOptions, CascadeOptions
    return {
        "effml_context_options": (ContextOptions, "effml_context_options_init"),
        "effml_sampler_resample_options": (ResampleOptions, "effml_sampler_resample_options_init"),
        "effml_sampler_temperature_schedule": (TemperatureSchedule, "effml_sampler_temperature_schedule_init"),
        "effml_sampler_leverage_options": (LeverageOptions, "effml_sampler_leverage_options_init"),
        "effml_cascade_options": (CascadeOptions, "effml_cascade_options_init"),
        "effml_cascade_threshold_options": (CascadeCalibrationOptions,
                                              "effml_cascade_threshold_options_init"),
        "effml_optimizer_options": (OptimizerOptions, "effml_optimizer_options_init"),
        "effml_train_options": (TrainOptions, "effml_train_options_init"),
        "effml_calibration_options": (CalibrationOptions, "effml_calibration_options_init"),
    }


def c_struct_size(name):
    """sizeof(struct ``name``) as the loaded library reports it.

    ``effml_core_struct_size`` when the library has it, else the struct_size
    its ``_init`` writes.
    """
    if _lib.has("effml_core_struct_size"):
        return _lib.fn("effml_core_struct_size")(name.encode())
    return init_struct_size(name)


def init_struct_size(name):
    """The ``struct_size`` the struct's ``_init`` function writes."""
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
