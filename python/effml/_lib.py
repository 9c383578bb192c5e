"""Finding and loading ``libeffml.so.0``, and the table of C prototypes.

The library is looked up, in this order:

1. the path in the environment variable ``EFFML_LIBRARY`` (a file; when it is
   set and cannot be loaded, nothing else is tried: an explicit choice that
   fails is an error, not a silent fallback);
2. a copy inside the package, ``effml/libeffml.so.0`` (put there by
   ``cmake --build build --target python_package``, which assembles an
   installable copy of the package with the library in
   ``build/python``; see docs/python.md);
3. the system loader (``libeffml.so.0`` on ``LD_LIBRARY_PATH``, in
   ``/etc/ld.so.cache``, ...), as installed by ``cmake --install``.

When every place fails, :class:`LibraryNotFoundError` lists the paths tried
and why each failed.  A library whose MAJOR.MINOR differs from
:data:`ABI_VERSION` is refused (0.x releases rename functions without a
soname bump, so a mismatch would fail later, on some call, with a missing
symbol).

Every C function is declared once, in :data:`PROTOTYPES` (name -> restype,
argtypes); :func:`fn` binds it on first use and caches it, so a call costs one
dict lookup plus ctypes' own conversion.  ctypes releases the GIL around every
call through a ``CDLL``, so long C calls let other Python threads run.
"""

import ctypes
import os
import threading
from ctypes import (POINTER, c_char_p, c_double, c_int32, c_int64, c_size_t,
                    c_uint32, c_uint64, c_void_p)

#: MAJOR.MINOR of the C ABI these bindings were written for.
ABI_VERSION = (0, 2)

#: The soname looked for.
SONAME = "libeffml.so.0"

_P = c_void_p          # any opaque pointer (context, tensor, ...)
_PP = POINTER(c_void_p)  # out-parameter receiving an owned pointer
_ST = c_int32          # effml_status
_D = POINTER(c_double)
_I64 = POINTER(c_int64)

#: name -> (restype, [argtypes]).  Option structs are passed as c_void_p
#: (ctypes.byref/addressof of the mirrored Structure).  Names are the C
#: names, spelled out in full so that a rename script that rewrites C names
#: also rewrites these.
PROTOTYPES = {
    # version / errors / context
    "effml_version_number": (c_int32, []),
    "effml_version_string": (c_char_p, []),
    "effml_status_str": (c_char_p, [_ST]),
    "effml_context_options_init": (None, [_P]),
    "effml_context_create": (_ST, [_P, _PP]),
    "effml_context_free": (None, [_P]),
    "effml_context_last_error": (c_char_p, [_P]),
    "effml_context_last_status": (_ST, [_P]),
    "effml_context_clear_error": (None, [_P]),
    "effml_context_num_threads": (c_int32, [_P]),
    "effml_context_set_progress": (None, [_P, _P, _P]),
    "effml_context_set_cancel": (None, [_P, c_int32]),
    "effml_context_cancel_requested": (c_int32, [_P]),
    "effml_context_set_num_threads": (_ST, [_P, c_int32]),
    "effml_context_set_seed": (None, [_P, c_uint64]),
    "effml_context_set_thread_pool": (_ST, [_P, c_int32, c_int32]),
    "effml_context_thread_pool": (c_int32, [_P, _P]),
    "effml_context_random_u64": (c_uint64, [_P]),
    # introspection (0.2)
    "effml_core_isa_level": (c_int32, []),
    "effml_core_isa_name": (c_char_p, [c_int32]),
    "effml_core_struct_size": (c_size_t, [c_char_p]),
    "effml_core_struct_name": (c_char_p, [c_int32]),
    # tensors
    "effml_tensor_dtype_size": (c_size_t, [c_int32]),
    "effml_tensor_dtype_name": (c_char_p, [c_int32]),
    "effml_tensor_create": (_ST, [_P, c_int32, c_int32, _I64, _PP]),
    "effml_tensor_wrap": (_ST, [_P, c_int32, c_int32, _I64, _I64, _P, c_size_t,
                                c_int32, _PP]),
    "effml_tensor_free": (None, [_P]),
    "effml_tensor_dtype": (c_int32, [_P]),
    "effml_tensor_ndim": (c_int32, [_P]),
    "effml_tensor_shape": (_I64, [_P]),
    "effml_tensor_strides": (_I64, [_P]),
    "effml_tensor_numel": (c_int64, [_P]),
    "effml_tensor_nbytes": (c_size_t, [_P]),
    "effml_tensor_is_contiguous": (c_int32, [_P]),
    "effml_tensor_is_read_only": (c_int32, [_P]),
    "effml_tensor_data": (_P, [_P]),
    "effml_tensor_data_const": (_P, [_P]),
    "effml_tensor_contiguous": (_ST, [_P, _P, _PP]),
    "effml_tensor_convert": (_ST, [_P, _P, c_int32, _PP]),
    # io
    "effml_io_npy_load": (_ST, [_P, c_char_p, _PP]),
    "effml_io_npy_load_buffer": (_ST, [_P, _P, c_size_t, _PP]),
    "effml_io_npy_save": (_ST, [_P, c_char_p, _P]),
    "effml_safetensors_load": (_ST, [_P, c_char_p, c_uint32, _PP]),
    "effml_safetensors_load_buffer": (_ST, [_P, _P, c_size_t, _PP]),
    "effml_safetensors_free": (None, [_P]),
    "effml_safetensors_count": (c_int64, [_P]),
    "effml_safetensors_name": (c_char_p, [_P, c_int64]),
    "effml_safetensors_get": (_ST, [_P, _P, c_char_p, _PP]),
    "effml_safetensors_metadata": (c_char_p, [_P, c_char_p]),
    "effml_safetensors_metadata_count": (c_int64, [_P]),
    "effml_safetensors_metadata_key": (c_char_p, [_P, c_int64]),
    "effml_safetensors_save": (_ST, [_P, c_char_p, c_int64, POINTER(c_char_p), _PP,
                                     c_int64, POINTER(c_char_p), POINTER(c_char_p)]),
    # samplers: re-sampling
    "effml_sampler_resample_options_init": (None, [_P]),
    "effml_sampler_knn": (_ST, [_P, _P, _P, c_int64, _PP, _PP]),
    "effml_sampler_strategy_resolve": (_ST, [_P, _P, _P, _PP, _PP]),
    "effml_sampler_resample_plan": (_ST, [_P, _P, _P, _P, _PP, _PP, _PP]),
    "effml_sampler_resample_apply": (_ST, [_P, _P, _P, _P, _P, _P, _PP, _PP]),
    "effml_sampler_resample": (_ST, [_P, _P, _P, _P, _PP, _PP]),
    "effml_sampler_resample_into": (_ST, [_P, _P, _P, _P, _P, _P, _I64]),
    "effml_sampler_knn_into": (_ST, [_P, _P, _P, c_int64, _P, _P]),
    "effml_sampler_leverage_scores_into": (_ST, [_P, _P, _P, _P]),
    # samplers: temperature / mixtures
    "effml_sampler_temperature_probs": (_ST, [_P, _D, c_int64, c_double, _D]),
    "effml_sampler_temperature_probs_alpha": (_ST, [_P, _D, c_int64, c_double, _D]),
    "effml_sampler_temperature_schedule_init": (None, [_P]),
    "effml_sampler_temperature_at": (_ST, [_P, _P, c_int64, _D]),
    "effml_sampler_unimax": (_ST, [_P, _D, c_int64, c_double, c_double, _D, _D]),
    "effml_sampler_virtual_sizes": (_ST, [_P, _I64, _D, c_int64, c_int64, _I64, _I64]),
    "effml_sampler_alias_create": (_ST, [_P, _D, c_int64, c_uint64, _PP]),
    "effml_sampler_alias_free": (None, [_P]),
    "effml_sampler_alias_draw": (_ST, [_P, _P, c_int64, _I64]),
    "effml_sampler_interleave": (_ST, [_P, _I64, c_int64, _D, c_int32, c_uint64, c_int64, _PP, _PP]),
    # samplers: lp sensitivity sampling
    "effml_sampler_leverage_options_init": (None, [_P]),
    "effml_sampler_leverage_scores": (_ST, [_P, _P, _P, _PP]),
    "effml_sampler_root_leverage_scores": (_ST, [_P, _P, _P, c_double, _PP]),
    "effml_sampler_lewis_weights": (_ST, [_P, _P, _P, c_double, _PP, _I64]),
    "effml_sampler_sensitivity_upper_bounds": (_ST, [_P, _P, _P, c_double, _PP]),
    "effml_sampler_sensitivity_sample": (_ST, [_P, _P, c_double, c_double, c_int32, c_uint64, _PP, _PP]),
    "effml_sampler_weighted_sample_merge": (_ST, [_P, _P, _P, _P, _P, c_int64, c_double, _PP, _PP]),
    "effml_sampler_weighted_sample_reduce": (_ST, [_P, _P, _P, _P, c_double, c_double, c_int32,
                                                   c_uint64, _PP, _PP]),
    # cascades and selective-classification metrics
    "effml_cascade_options_init": (None, [_P]),
    "effml_cascade_ensemble_predict": (_ST, [_P, _P, c_int32, _PP, _P, _P, _P]),
    "effml_metrics_selective_risk_coverage_curve": (_ST, [_P, _P, _P, _P, _P, _P, _P]),
    "effml_metrics_selective_aurc": (_ST, [_P, _P, _P, _D]),
    "effml_metrics_selective_risk_at_coverage": (_ST, [_P, _P, _P, c_double, _D, _D, _D]),
    "effml_metrics_selective_coverage_at_risk": (_ST, [_P, _P, _P, c_double, _D, _D]),
    "effml_metrics_ood_auroc": (_ST, [_P, _P, _P, _D]),
    "effml_metrics_ood_fpr_at_tpr": (_ST, [_P, _P, _P, c_double, _D, _D]),
    "effml_metrics_top1_error": (_ST, [_P, _P, _P, _D]),
    "effml_metrics_nll": (_ST, [_P, _P, _P, _D]),
    "effml_cascade_create": (_ST, [_P, _P, _PP]),
    "effml_cascade_free": (None, [_P]),
    "effml_cascade_add_stage_fn": (_ST, [_P, _P, _P, _P, c_double]),
    "effml_cascade_add_stage_logits": (_ST, [_P, _P, _P, c_double]),
    "effml_cascade_num_stages": (c_int32, [_P]),
    "effml_cascade_num_classes": (c_int64, [_P]),
    "effml_cascade_stage_cost": (c_double, [_P, c_int32]),
    "effml_cascade_set_exit_rule": (_ST, [_P, _P, c_int32, c_int32, c_double, c_double]),
    "effml_cascade_get_exit_rule": (_ST, [_P, _P, c_int32, POINTER(c_int32), _D, _D, _D]),
    "effml_cascade_threshold_options_init": (None, [_P]),
    "effml_cascade_select_thresholds": (_ST, [_P, _P, c_int32, _PP, _P, _P]),
    "effml_cascade_workspace_create": (_ST, [_P, _P, _PP]),
    "effml_cascade_workspace_free": (None, [_P]),
    "effml_cascade_run": (_ST, [_P, _P, _P, c_int64, _P, _P, _P, _P, _P]),
    "effml_cascade_workspace_num_samples": (c_int64, [_P]),
    "effml_cascade_workspace_reach_count": (c_int64, [_P, c_int32]),
    "effml_cascade_workspace_exit_count": (c_int64, [_P, c_int32]),
    "effml_cascade_workspace_exit_fraction": (c_double, [_P, c_int32]),
    "effml_cascade_workspace_expected_cost": (c_double, [_P]),
}


class LibraryNotFoundError(OSError):
    """``libeffml.so.0`` could not be loaded; the message lists every path tried."""


class LibraryVersionError(ImportError):
    """The loaded library's MAJOR.MINOR differs from :data:`ABI_VERSION`."""


_lock = threading.Lock()
_cdll = None
_path = None
_bound = {}


def _candidates():
    """(description, path-or-name) pairs in search order."""
    env = os.environ.get("EFFML_LIBRARY")
    if env:
        return [("EFFML_LIBRARY", env)]
    here = os.path.dirname(os.path.abspath(__file__))
    return [("package copy", os.path.join(here, SONAME)),
            ("system loader", SONAME)]


def _load():
    global _cdll, _path
    tried = []
    for what, cand in _candidates():
        if os.sep in cand and not os.path.exists(cand):
            tried.append("%s: %s (no such file)" % (what, cand))
            continue
        try:
            lib = ctypes.CDLL(cand)
        except OSError as e:
            tried.append("%s: %s (%s)" % (what, cand, e))
            continue
        _path = _resolve_path(lib, cand)
        _check_version(lib, _path)
        _cdll = lib
        return lib
    raise LibraryNotFoundError(
        "cannot load %s; tried:\n  %s\nBuild it (cmake -S . -B build && cmake --build build) "
        "and set EFFML_LIBRARY=/path/to/build/lib/%s, or install it (docs/python.md)."
        % (SONAME, "\n  ".join(tried), SONAME))


def _resolve_path(lib, cand):
    """Absolute path of the loaded object (via dladdr), or `cand` if unknown."""
    try:
        class _DlInfo(ctypes.Structure):
            _fields_ = [("dli_fname", c_char_p), ("dli_fbase", c_void_p),
                        ("dli_sname", c_char_p), ("dli_saddr", c_void_p)]
        libdl = ctypes.CDLL(None)
        dladdr = libdl.dladdr
        dladdr.argtypes = [c_void_p, POINTER(_DlInfo)]
        dladdr.restype = ctypes.c_int
        info = _DlInfo()
        addr = ctypes.cast(lib.effml_version_number, c_void_p)
        if dladdr(addr, ctypes.byref(info)) and info.dli_fname:
            return os.path.realpath(info.dli_fname.decode())
    except (AttributeError, OSError):
        pass
    return cand


def _check_version(lib, path):
    try:
        f = lib.effml_version_number
    except AttributeError:
        raise LibraryVersionError("%s is not libeffml (no effml_version_number)" % path)
    f.restype = c_int32
    f.argtypes = []
    v = f()
    major, minor = v // 10000, (v // 100) % 100
    if (major, minor) != ABI_VERSION:
        raise LibraryVersionError(
            "%s is libeffml %d.%d.%d, but this effml package was written for %d.%d.x "
            "(0.x releases rename functions); install matching versions"
            % (path, major, minor, v % 100, ABI_VERSION[0], ABI_VERSION[1]))


def lib():
    """The loaded ``ctypes.CDLL`` (loaded on first use)."""
    l = _cdll
    if l is None:
        with _lock:
            l = _cdll if _cdll is not None else _load()
    return l


def path():
    """Absolute path of the loaded library."""
    lib()
    return _path


def has(name):
    """True if the loaded library exports ``name`` (for calls added in later releases)."""
    try:
        getattr(lib(), name)
        return True
    except AttributeError:
        return False


def fn(name):
    """The bound C function ``name``, with restype/argtypes from PROTOTYPES (cached)."""
    f = _bound.get(name)
    if f is None:
        restype, argtypes = PROTOTYPES[name]
        try:
            f = getattr(lib(), name)
        except AttributeError:
            from ._errors import UnsupportedError
            raise UnsupportedError(
                "%s does not export %s (a newer library is needed)" % (_path, name)) from None
        f.restype = restype
        f.argtypes = argtypes
        _bound[name] = f
    return f


def version():
    """(major, minor, patch) of the loaded library."""
    v = fn("effml_version_number")()
    return v // 10000, (v // 100) % 100, v % 100


def version_string():
    """Version string of the loaded library, e.g. ``"0.2.0"``."""
    return fn("effml_version_string")().decode()
