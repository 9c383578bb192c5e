"""Library loading, version check, status -> exception table, zero-copy tensors."""
import ctypes
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

import effml
from effml import _core, _errors, _lib
from effml.neighbors import kneighbors

PYDIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_py(code, **env):
    e = dict(os.environ)
    e.update(env)
    e["PYTHONPATH"] = PYDIR
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True)


def test_version_matches_abi():
    assert _lib.version()[:2] == _lib.ABI_VERSION
    assert effml.library_version().startswith("%d.%d." % _lib.ABI_VERSION)
    assert os.path.isabs(effml.library_path()) and os.path.exists(effml.library_path())


def test_missing_library_lists_paths():
    r = run_py("import effml", EFFML_LIBRARY="/nonexistent/libeffml.so.0")
    assert r.returncode != 0
    assert "LibraryNotFoundError" in r.stderr
    assert "EFFML_LIBRARY: /nonexistent/libeffml.so.0 (no such file)" in r.stderr


def test_search_order_without_env(monkeypatch):
    monkeypatch.delenv("EFFML_LIBRARY")
    c = _lib._candidates()
    assert [w for w, _ in c] == ["package copy", "system loader"]
    assert c[0][1] == os.path.join(os.path.dirname(_lib.__file__), "libeffml.so.0")
    assert c[1][1] == "libeffml.so.0"
    monkeypatch.setenv("EFFML_LIBRARY", "/x/libeffml.so.0")
    assert _lib._candidates() == [("EFFML_LIBRARY", "/x/libeffml.so.0")]


def test_not_a_library_file(tmp_path):
    bad = tmp_path / "libeffml.so.0"
    bad.write_bytes(b"not an ELF file")
    r = run_py("import effml", EFFML_LIBRARY=str(bad))
    assert r.returncode != 0 and str(bad) in r.stderr


def test_version_mismatch_refused():
    class Fake:
        class effml_version_number:  # noqa: N801 - mimics a ctypes function
            restype = argtypes = None

            def __new__(cls):
                return 9 * 10000 + 3 * 100 + 1
    with pytest.raises(_lib.LibraryVersionError, match=r"libeffml 9\.3\.1.*written for 0\.2"):
        _lib._check_version(Fake, "/x/libeffml.so.0")


def test_python_m_effml():
    r = subprocess.run([sys.executable, "-m", "effml"], env=dict(os.environ, PYTHONPATH=PYDIR),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "library: libeffml %s" % effml.library_version() in r.stdout
    assert "path: %s" % effml.library_path() in r.stdout
    assert "isa: " in r.stdout


@pytest.mark.parametrize("status,builtin", [
    (-1, ValueError), (-2, ValueError), (-3, ValueError), (-3, TypeError),
    (-4, MemoryError), (-5, OSError), (-6, ValueError), (-7, ValueError),
    (-8, NotImplementedError), (-9, KeyError), (-10, OverflowError),
    (-11, RuntimeError), (-12, IndexError), (-13, RuntimeError), (-99, RuntimeError)])
def test_status_table(status, builtin):
    e = _errors.error_for(status, "the message", "effml_f")
    assert isinstance(e, builtin) and isinstance(e, effml.EffmlError)
    assert str(e) == "effml_f: the message" and e.status == status
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is type(e) and str(e2) == str(e)


def test_status_table_matches_c_names():
    # every code the C library describes has its own class
    f = _lib.fn("effml_status_str")
    for code, cls in _errors.STATUS_EXCEPTIONS.items():
        assert f(code).decode() != "unknown status", code
    assert f(-14).decode() == "unknown status"


def test_c_error_message_kept():
    ctx = effml.Context()
    with pytest.raises(effml.InvalidArgumentError) as ei:
        ctx.num_threads = 0
    assert "effml_context_set_num_threads" in str(ei.value)
    assert ctx.last_error() and ctx.last_error() in str(ei.value)
    with pytest.raises(effml.InvalidArgumentError):
        effml.Context(num_threads=0)


def test_context_threads_and_pickle():
    ctx = effml.Context(num_threads=3, seed=7)
    assert ctx.num_threads == 3
    with pytest.raises(TypeError):
        pickle.dumps(ctx)
    seen = {}

    def worker(i):
        seen[i] = id(_core.thread_context())
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(set(seen.values())) == 3 or len(seen) == 3  # one context per thread
    c = _core.thread_context(num_threads=2)
    assert c is _core.thread_context() and c.num_threads == 2
    assert _core.n_jobs_to_threads(None) == 1 and _core.n_jobs_to_threads(4) == 4
    assert _core.n_jobs_to_threads(-1) == (os.cpu_count() or 1)
    with pytest.raises(ValueError):
        _core.n_jobs_to_threads(0)


def _pool_workers():
    """Threads of this process named "effml-pool" (the context pool's workers)."""
    n = 0
    for t in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/comm" % t) as f:
                n += f.read().strip() == "effml-pool"
        except OSError:  # the thread has exited
            pass
    return n


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc (Linux)")
def test_context_thread_pool():
    ctx = effml.Context(num_threads=3)
    assert not ctx.thread_pool and ctx.pool_spin_us == 0  # off by default, as in C
    base = _pool_workers()
    X = np.random.default_rng(0).standard_normal((12000, 8))
    ref = kneighbors(X, 5, return_distance=True)  # the thread context, per-call threads
    tc = _core.thread_context()
    tc.set_thread_pool(True, 200)
    tc.num_threads = 3
    try:
        for _ in range(3):
            got = kneighbors(X, 5, return_distance=True, n_jobs=3)
            assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
        assert tc.thread_pool and tc.pool_spin_us == 200
        assert _pool_workers() == base + 2  # the pool's two workers outlive the calls
    finally:
        tc.set_thread_pool(False)
    assert _pool_workers() == base and not tc.thread_pool  # joined
    p = effml.Context(num_threads=2, thread_pool=True)
    assert p.thread_pool and p.pool_spin_us == 1000  # EFFML_CORE_POOL_SPIN_DEFAULT_US
    p.set_thread_pool(True, 0)
    assert p.pool_spin_us == 0
    with pytest.raises(effml.InvalidArgumentError, match="pool_spin_us=-5"):
        effml.Context(thread_pool=True, pool_spin_us=-5)
    with pytest.raises(effml.InvalidArgumentError, match="pool_spin_us=1000001"):
        p.set_thread_pool(True, 1000001)
    with pytest.raises(effml.InvalidArgumentError, match="thread_pool must be a bool"):
        p.set_thread_pool(1)
    with pytest.raises(effml.InvalidArgumentError, match="needs thread_pool=True"):
        effml.Context(pool_spin_us=10)
    assert p.pool_spin_us == 0  # refused calls change nothing
    p.close()


@pytest.mark.parametrize("dtype", ["f4", "f8", "i4", "i8", "u1", "i1", "i2", "u2", "u4", "u8",
                                   "f2", "?"])
def test_wrap_is_zero_copy(dtype):
    ctx = effml.Context()
    a = np.arange(24).reshape(2, 3, 4).astype(dtype)
    with _core.Scope(ctx) as s:
        h = s.wrap(a)
        L = _lib.fn
        assert L("effml_tensor_data_const")(h) == a.ctypes.data
        assert L("effml_tensor_ndim")(h) == 3 and L("effml_tensor_numel")(h) == 24
        assert L("effml_tensor_dtype")(h) == _core.NP_TO_EFFML[np.dtype(dtype)]
        assert L("effml_tensor_is_read_only")(h) == 0
        # C writes through a writable wrap: numpy sees it (same memory)
        idx = (ctypes.c_int64 * 3)(1, 2, 3)
        st = _lib.lib().effml_tensor_set_f64(ctypes.c_void_p(ctx.handle), ctypes.c_void_p(h),
                                              idx, ctypes.c_double(1.0))
        assert st == 0 and a[1, 2, 3] == 1


def test_wrap_read_only_stays_read_only():
    ctx = effml.Context()
    a = np.ones((4, 5))
    a.flags.writeable = False
    with _core.Scope(ctx) as s:
        h = s.wrap(a)
        assert _lib.fn("effml_tensor_is_read_only")(h) == 1
        assert _lib.fn("effml_tensor_data")(h) is None  # no writable pointer
        f = _lib.lib().effml_tensor_fill
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_double]
        f.restype = ctypes.c_int32
        assert f(ctx.handle, h, 3.0) == -1
        with pytest.raises(effml.InvalidArgumentError):
            s.wrap(a, writable=True)
    assert np.all(a == 1)


def test_as_array_converts_once():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert _core.as_array(a, (np.dtype("f8"),)) is a                    # as is
    t = _core.as_array(a.T, (np.dtype("f8"),))                           # not contiguous
    assert t.flags.c_contiguous and np.array_equal(t, a.T)
    i = _core.as_array(a.astype(np.int16), (np.dtype("f8"), np.dtype("f4")))
    assert i.dtype == np.float64 and np.array_equal(i, a)
    be = a.astype(">f8")
    c = _core.as_array(be, (np.dtype("f8"),))
    assert c.dtype == np.dtype("f8") and np.array_equal(c, a)
    with pytest.raises(ValueError, match="dtype"):
        _core.as_array(np.array(["a", "b"]), (np.dtype("f8"),), name="x")
    with pytest.raises(ValueError, match="dimension"):
        _core.as_array(a, (np.dtype("f8"),), ndim=1)


def test_adopt_owns_and_frees():
    ctx = effml.Context()
    with _core.Scope(ctx) as s:
        p = s.out()
        shape = (ctypes.c_int64 * 2)(3, 5)
        ctx.check(_lib.fn("effml_tensor_create")(ctx.handle, _core.F32, 2, shape, ctypes.byref(p)),
                  "effml_tensor_create")
        arr = s.adopt(p)
    assert arr.shape == (3, 5) and arr.dtype == np.float32 and np.all(arr == 0)
    arr[1, 2] = 4.5
    v = arr[1:]  # a view keeps the C tensor alive
    del arr
    assert v[0, 2] == 4.5


def test_zero_size_array_is_a_clear_error():
    ctx = effml.Context()
    with _core.Scope(ctx) as s:
        with pytest.raises(effml.ShapeError):
            s.wrap(np.zeros((0, 3)))


def test_misaligned_buffer_is_copied_not_refused():
    # pickle protocol 5 (Dask, multiprocessing) can hand out contiguous but misaligned
    # buffers; np.ascontiguousarray keeps them misaligned
    buf = bytearray(8 * 12 + 3)
    a = np.frombuffer(buf, offset=3, dtype=np.float64).reshape(6, 2)
    assert not a.flags.aligned
    b = _core.as_array(a, (np.dtype("f8"),))
    assert b.flags.aligned and b.flags.c_contiguous and np.array_equal(a, b)
    ctx = effml.Context()
    with _core.Scope(ctx) as s:
        h = s.wrap(a)
        assert _lib.fn("effml_tensor_data_const")(h) % 8 == 0


def test_long_error_message_is_whole(tmp_path):
    """A C message longer than the context's 512-byte inline buffer reaches Python whole:
    a missing file under a 3 000-character path is named in full, strerror text included."""
    from effml.io import load_safetensors
    p = str(tmp_path) + "/" + "no_such_dir/" * 250 + "END.safetensors"
    with pytest.raises(effml.EffmlIOError) as e:
        load_safetensors(p, mmap=False)
    msg = str(e.value)
    assert len(msg) > 3000
    assert msg.startswith("effml_safetensors_load: cannot open '%s'" % p)  # the C message
    assert msg.endswith("No such file or directory")
    assert "message cut" not in msg
