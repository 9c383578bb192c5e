"""save/load edge cases of effml.io: 0-d arrays, byte order, empty arrays,
SafeTensors lifetime."""
import json
import struct

import numpy as np
import pytest

import effml.io as eio


def _st_header(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n])


@pytest.mark.parametrize("value", [np.float64(3.5), np.array(-2, np.int32), np.array(True)])
def test_npy_0d_shape_kept(tmp_path, value):
    p, ref = tmp_path / "a.npy", tmp_path / "ref.npy"
    eio.save_npy(p, value)
    np.save(ref, np.asarray(value))
    assert p.read_bytes() == ref.read_bytes()  # before: written with shape (1,)
    back = eio.load_npy(p)
    assert back.shape == () and back == np.asarray(value)
    assert np.load(p).shape == ()


def test_safetensors_0d_shape_kept(tmp_path):
    p = tmp_path / "a.safetensors"
    eio.save_safetensors(p, {"s": np.array(2.5, np.float32), "v": np.arange(3.0)})
    h = _st_header(p)
    assert h["s"]["shape"] == [] and h["v"]["shape"] == [3]
    d = eio.load_safetensors(p)
    assert d["s"].shape == () and float(d["s"]) == 2.5
    np.testing.assert_array_equal(d["v"], np.arange(3.0))


@pytest.mark.parametrize("dt", [">f4", ">i8", ">f8"])
def test_npy_big_endian_converted(tmp_path, dt):
    a = np.arange(12, dtype=dt).reshape(3, 4)
    p, ref = tmp_path / "a.npy", tmp_path / "ref.npy"
    eio.save_npy(p, a)
    np.save(ref, a.astype(a.dtype.newbyteorder("<")))
    assert p.read_bytes() == ref.read_bytes()
    np.testing.assert_array_equal(eio.load_npy(p), a)


def test_safetensors_big_endian_converted(tmp_path):
    p = tmp_path / "a.safetensors"
    eio.save_safetensors(p, {"w": np.arange(6, dtype=">f4").reshape(2, 3)})
    assert _st_header(p)["w"]["dtype"] == "F32"
    np.testing.assert_array_equal(eio.load_safetensors(p)["w"], np.arange(6.0).reshape(2, 3))


def test_zero_size_refused_clearly(tmp_path):
    # docs/io.md: libeffml tensors need every dimension >= 1; nothing is written
    p = tmp_path / "z.npy"
    with pytest.raises(ValueError, match=r"save_npy: shape \(0, 3\) has a zero-size dimension"):
        eio.save_npy(p, np.zeros((0, 3)))
    assert not p.exists()
    q = tmp_path / "z.safetensors"
    with pytest.raises(ValueError, match="tensor 'e'.*zero-size"):
        eio.save_safetensors(q, {"ok": np.ones(2), "e": np.zeros((2, 0))})
    assert not q.exists()


def test_unsupported_dtype_named(tmp_path):
    with pytest.raises(ValueError, match="complex128"):
        eio.save_npy(tmp_path / "c.npy", np.zeros(3, complex))


def test_safetensors_close_and_context_manager(tmp_path):
    p = tmp_path / "a.safetensors"
    eio.save_safetensors(p, {"x": np.arange(4.0)})
    with eio.SafeTensors(p) as st:
        assert not st.closed
        x = st["x"]
    assert st.closed
    with pytest.raises(ValueError, match="closed"):
        st["x"]
    st.close()  # idempotent
    np.testing.assert_array_equal(x, np.arange(4.0))  # arrays handed out stay valid
    st2 = eio.SafeTensors(p, mmap=False)
    st2.close()
    assert st2.closed and st2.keys() == ["x"]
