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
