#!/usr/bin/python3
"""Reference files for tests/test_io.c (run with Debian's /usr/bin/python3).

Writes small `.npy` files with numpy itself (numpy 1.24: np.save and
np.lib.format.write_array) and safetensors files with a hand-written writer
that follows huggingface/safetensors `tensor.rs::prepare` (sort by dtype
descending then name, `__metadata__` first, compact JSON, header padded with
spaces to a multiple of 8).  Outputs: tests/data/io/*.npy, *.safetensors, and
the fuzz seed corpora tests/fuzz/corpus/{npy,safetensors}/.

Element values follow ref_value() below; test_io.c computes the same values.
"""
import io
import json
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "io")
CORPUS = os.path.join(HERE, "..", "fuzz", "corpus")
SHAPE8 = [2, 3, 1, 2, 1, 2, 1, 2]

SCALE = {"u1": 1, "i1": 1, "i2": 1000, "u2": 1000, "i4": 100000, "u4": 100000,
         "i8": 10**12, "u8": 10**12}


def ref_value(code, i):
    """Element i (C order) of every reference tensor, by numpy kind+size code."""
    if code[0] == "f" or code == "bf16":
        return (i % 16) * 0.5 - 3.0
    if code == "b1":
        return i % 3 == 0
    if code[0] == "i":
        return ((i * 7) % 23 - 11) * SCALE[code]
    return ((i * 7) % 23) * SCALE[code]


def ref_array(code, shape):
    n = int(np.prod(shape)) if shape else 1
    vals = [ref_value(code, i) for i in range(n)]
    if code == "bf16":
        a = np.array(vals, dtype="<f4").view("<u4") >> 16  # exact: values fit in bf16
        return a.astype("<u2").reshape(shape)
    dt = {"b1": "|b1"}.get(code, ("|" if code[1] == "1" else "<") + code)
    return np.array(vals, dtype=dt).reshape(shape)


def put(dirname, name, data):
    os.makedirs(dirname, exist_ok=True)
    with open(os.path.join(dirname, name), "wb") as f:
        f.write(data)


def npy_bytes(arr, version=None):
    b = io.BytesIO()
    if version is None:
        np.save(b, arr)
    else:
        np.lib.format.write_array(b, arr, version=version)
    return b.getvalue()


def npy_raw(header, data, major=1):
    """A .npy file with a hand-written header (padded like numpy does)."""
    hb = header.encode("latin1")
    pre = 6 + 2 + (2 if major == 1 else 4)
    pad = 64 - (pre + len(hb) + 1) % 64
    hb = hb + b" " * pad + b"\n"
    lenb = struct.pack("<H", len(hb)) if major == 1 else struct.pack("<I", len(hb))
    return b"\x93NUMPY" + bytes([major, 0]) + lenb + hb + data


# ---- safetensors ----

ST_RANK = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
           "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
           "C64", "F64", "I64", "U64"]
ST_CODE = {"BOOL": "b1", "U8": "u1", "I8": "i1", "I16": "i2", "U16": "u2", "F16": "f2",
           "BF16": "bf16", "I32": "i4", "U32": "u4", "F32": "f4", "F64": "f8", "I64": "i8",
           "U64": "u8"}


def st_bytes(tensors, metadata=None):
    """tensors: list of (name, dtype string, shape, raw bytes)."""
    order = sorted(tensors, key=lambda t: (-ST_RANK.index(t[1]), t[0].encode()))
    head = {}
    if metadata:
        head["__metadata__"] = dict(sorted(metadata.items(), key=lambda kv: kv[0].encode()))
    off = 0
    blobs = []
    for name, dt, shape, raw in order:
        head[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def st_raw(header, data):
    """A safetensors file with a verbatim header (no padding, no checks)."""
    hb = header.encode("utf-8") if isinstance(header, str) else header
    return struct.pack("<Q", len(hb)) + hb + data


def main():
    # ---- .npy written by numpy ----
    npy_codes = ["f4", "f8", "i4", "i8", "u1", "i1", "i2", "u2", "u4", "u8", "f2", "b1"]
    for code in npy_codes:
        put(DATA, "npy_%s_r2.npy" % code, npy_bytes(ref_array(code, [3, 4])))
    for r in range(9):
        put(DATA, "npy_f8_rank%d.npy" % r, npy_bytes(ref_array("f8", SHAPE8[:r])))
    a = ref_array("f4", [2, 3, 4])
    put(DATA, "npy_fortran_f4.npy", npy_bytes(np.asfortranarray(a)))
    put(DATA, "npy_fortran_i2.npy", npy_bytes(np.asfortranarray(ref_array("i2", [3, 5]))))
    put(DATA, "npy_v2_i4.npy", npy_bytes(ref_array("i4", [3, 4]), version=(2, 0)))
    put(DATA, "npy_v3_f8.npy", npy_bytes(ref_array("f8", [3, 4]), version=(3, 0)))
    padded = npy_raw("{ 'shape' : ( 3 , 4 , ) ,\t'fortran_order':False,\"descr\":'<i4' ,  }",
                     ref_array("i4", [3, 4]).tobytes())
    put(DATA, "npy_padded_i4.npy", padded)
    py2 = npy_raw("{'descr': '<i4', 'fortran_order': False, 'shape': (3L, 4L), }",
                  ref_array("i4", [3, 4]).tobytes())
    put(DATA, "npy_py2_i4.npy", py2)
    for f in ("npy_padded_i4.npy", "npy_py2_i4.npy"):  # numpy reads them: they are legal
        assert (np.load(os.path.join(DATA, f)) == ref_array("i4", [3, 4])).all()
    put(DATA, "npy_bigendian_f4.npy", npy_bytes(ref_array("f4", [3, 4]).astype(">f4")))
    put(DATA, "npy_object.npy", npy_bytes(np.array([1, "a", None], dtype=object)))
    put(DATA, "npy_complex64.npy", npy_bytes(np.zeros((2, 2), np.complex64)))
    put(DATA, "npy_structured.npy", npy_bytes(np.zeros(3, dtype=[("a", "<i4"), ("b", "<f4")])))
    put(DATA, "npy_zero_dim.npy", npy_bytes(np.zeros((0, 3), np.float32)))
    put(DATA, "npy_nine_dims.npy", npy_bytes(np.zeros([1] * 9, np.float32)))

    # ---- safetensors from the hand-written reference writer ----
    minimal = st_raw('{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}',
                     np.arange(4, dtype="<i4").tobytes())
    assert struct.unpack("<Q", minimal[:8])[0] == 60 and len(minimal) == 84
    put(DATA, "st_minimal.safetensors", minimal)
    all_dtypes = []
    for k, dt in enumerate(sorted(ST_CODE)):
        shape = SHAPE8[: (k % 9)]
        all_dtypes.append(("t_" + dt.lower(), dt, shape, ref_array(ST_CODE[dt], shape).tobytes()))
    put(DATA, "st_all_dtypes.safetensors",
        st_bytes(all_dtypes, {"format": "pt", "note": "h\u00e9llo \"q\"\n"}))
    # Names that sort differently by dtype and by name; a scalar; no metadata.
    mixed = [("b", "F32", [2], ref_array("f4", [2]).tobytes()),
             ("a", "U8", [3], ref_array("u1", [3]).tobytes()),
             ("c", "F64", [], ref_array("f8", []).tobytes()),
             ("a.weight", "F32", [2, 2], ref_array("f4", [2, 2]).tobytes())]
    put(DATA, "st_mixed.safetensors", st_bytes(mixed))
    # Leading/trailing whitespace around the JSON (test_whitespace_leading_padded_header).
    put(DATA, "st_ws_padded.safetensors",
        st_raw('   {"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}   ',
               np.arange(4, dtype="<i4").tobytes()))
    # A 3-byte BOOL before an F32: the F32 begins at offset 3 (misaligned).
    mis = st_raw('{"a":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]},'
                 '"b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}}',
                 bytes([1, 0, 1]) + ref_array("f4", [2]).tobytes())
    put(DATA, "st_misaligned.safetensors", mis)

    # ---- fuzz seeds: the good files plus a few bad ones ----
    for f in sorted(os.listdir(DATA)):
        src = open(os.path.join(DATA, f), "rb").read()
        if f.endswith(".npy"):
            put(os.path.join(CORPUS, "npy"), f, src)
        else:
            put(os.path.join(CORPUS, "safetensors"), f, src)
    good = npy_bytes(ref_array("f4", [3, 4]))
    put(os.path.join(CORPUS, "npy"), "trunc_data.npy", good[:-5])
    put(os.path.join(CORPUS, "npy"), "trunc_header.npy", good[:40])
    put(os.path.join(CORPUS, "safetensors"), "trunc.safetensors", minimal[:70])
    put(os.path.join(CORPUS, "safetensors"), "meta_only.safetensors",
        st_raw('{"__metadata__":{"a":"b"}}', b""))
    put(os.path.join(CORPUS, "safetensors"), "nested.safetensors",
        st_raw('{"x":{"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}}', b"\0" * 4))


if __name__ == "__main__":
    main()
