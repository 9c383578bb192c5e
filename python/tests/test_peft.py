"""effml.peft against adapters written by PEFT 0.21 (tests/data/peft/: the
adapter, the base, PEFT's eval-mode outputs and merge_and_unload() result)."""
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import effml.peft as peft
from effml.errors import (FormatError, InvalidArgumentError, NotFoundError, ShapeError,
                          UnsupportedError)
from effml.io import load_safetensors, save_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(ROOT, "tests", "data", "peft")
CASES = sorted(d for d in os.listdir(DATA) if os.path.isdir(os.path.join(DATA, d)))
TYPES = {"dora": "LORA (DoRA)", "dora_rslora": "LORA (DoRA)", "ia3": "IA3", "loha": "LOHA",
         "lokr": "LOKR", "lokr_decompose_both": "LOKR", "vera": "VERA"}


def rel_err(a, b):
    """max |a - b| / (1 + |b|), the C tests' f32 tolerance on O(1) values."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / (1 + np.abs(b))))


def st(case, name):
    return load_safetensors(os.path.join(DATA, case, name + ".safetensors"))


def raw_tensors(path):
    """{name: (dtype, shape, bytes)} and the header bytes of a safetensors file."""
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
           for k, v in h.items() if k != "__metadata__"}
    return out, b[:8 + n]


def test_thirteen_fixtures():
    assert len(CASES) == 13, CASES


@pytest.mark.parametrize("case", CASES)
def test_open_and_inspect(case):
    ad = peft.load(os.path.join(DATA, case))
    cfg = json.load(open(os.path.join(DATA, case, "adapter_config.json")))
    assert ad.config == cfg
    assert ad.peft_type == TYPES.get(case, "LORA")
    want = ["c_attn"] if "conv1d" in case else ["q_proj", "v_proj"]
    assert ad.modules == want
    assert ad.saved_module_names == ["base_model.model." + m for m in want]
    assert ad.fan_in_fan_out == cfg.get("fan_in_fan_out", False)
    assert ad.changes_bias == (case == "lora_bias")
    # parameters: every adapter tensor of the module (VeRA's shared projections aside)
    adapter = st(case, "adapter_model")
    for m in want:
        n = sum(adapter[k].size for k in adapter.keys()
                if k.startswith("base_model.model.%s." % m))
        assert ad.module_info(m)["num_params"] == n
        assert ad.module_info("base_model.model." + m) == ad.module_info(m)
    assert ad.get_nb_trainable_parameters() == sum(ad.module_info(m)["num_params"] for m in want)
    if ad.peft_type.startswith("LORA"):
        for m in want:
            r = cfg["rank_pattern"].get(m, cfg["r"])
            a = cfg["alpha_pattern"].get(m, cfg["lora_alpha"])
            assert ad.module_info(m)["r"] == r
            assert ad.module_info(m)["alpha"] == a
            assert adapter["base_model.model.%s.lora_A.weight" % m].shape[0] == r
    assert repr(ad).startswith("PeftAdapter(")


def test_rank_pattern_applies():
    ad = peft.load(os.path.join(DATA, "lora_rank_alpha_pattern"))
    assert ad.module_info("v_proj")["r"] == 2 and ad.module_info("q_proj")["r"] == 4


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_peft(case):
    ad = peft.load(os.path.join(DATA, case))
    base, io = st(case, "base"), st(case, "io")
    for m in ad.modules:
        b = base[m + ".bias"] if m + ".bias" in base else None
        y = ad.forward(m, io[m + ".x"], base[m + ".weight"], b)
        assert y.dtype == np.float32 and y.shape == io[m + ".y"].shape
        assert rel_err(y, io[m + ".y"]) <= 2e-6, (case, m)
        # float64 inputs are converted once, same answer
        y64 = ad.forward(m, io[m + ".x"].astype(np.float64), base[m + ".weight"].astype(np.float64), b)
        assert np.array_equal(y64, y)


MERGEABLE = [c for c in CASES if os.path.exists(os.path.join(DATA, c, "merged.safetensors"))]


@pytest.mark.parametrize("case", MERGEABLE)
def test_merge_into_matches_peft(case, tmp_path):
    ad = peft.load(os.path.join(DATA, case))
    base_path = os.path.join(DATA, case, "base.safetensors")
    out = str(tmp_path / "merged.safetensors")
    changed = ad.merge_into(base_path, out)
    want = sorted(m + ".weight" for m in ad.modules)
    if case == "ia3":  # IA3 on an output feature scales the bias too (q_proj has one)
        want = sorted(want + ["q_proj.bias"])
    assert changed == want
    ours, header = raw_tensors(out)
    base, base_header = raw_tensors(base_path)
    assert header == base_header  # header (and so offsets, dtypes, metadata) byte for byte
    ref = st(case, "merged")
    got = load_safetensors(out)
    assert sorted(got.keys()) == sorted(ref.keys())
    for k in ref.keys():
        assert rel_err(got[k], ref[k]) <= 2e-6, (case, k)
        if k not in changed:
            assert ours[k] == base[k]  # untouched tensors: the same bytes
        else:
            assert ours[k] != base[k]
    assert not [f for f in os.listdir(tmp_path) if ".tmp." in f]


@pytest.mark.parametrize("case", MERGEABLE)
def test_merge_arrays_equal_merge_into(case, tmp_path):
    ad = peft.load(os.path.join(DATA, case))
    base = st(case, "base")
    out = str(tmp_path / "m.safetensors")
    ad.merge_into(os.path.join(DATA, case, "base.safetensors"), out)
    got = load_safetensors(out)
    for m in ad.modules:
        b = base[m + ".bias"] if m + ".bias" in base else None
        W, b2 = ad.merge(m, base[m + ".weight"], b)
        assert W.dtype == np.float32 and np.array_equal(W, got[m + ".weight"])
        if b is not None:
            assert np.array_equal(b2, got[m + ".bias"])
        # the merged layer computes what the adapter computes
        x = st(case, "io")[m + ".x"]
        y = x @ (W if ad.fan_in_fan_out else W.T) + (0 if b2 is None else b2)
        assert rel_err(y, ad.forward(m, x, base[m + ".weight"], b)) <= 2e-6


def _bf16_bytes(a):
    """float32 -> bfloat16 bytes, round to nearest even (as torch)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16).tobytes()


def _bf16_to_f32(b, shape):
    return (np.frombuffer(b, np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)


def test_merge_into_half_precision_checkpoints(tmp_path):
    """F16 and BF16 weights: merged in f32, rounded once, dtype kept."""
    case = "lora"
    ad = peft.load(os.path.join(DATA, case))
    base, ref = st(case, "base"), st(case, "merged")
    # F16 via effml.io
    p16 = str(tmp_path / "base16.safetensors")
    save_safetensors(p16, {k: base[k].astype(np.float16) for k in base.keys()})
    out16 = str(tmp_path / "m16.safetensors")
    ad.merge_into(p16, out16)
    got = load_safetensors(out16)
    for k in ref.keys():
        assert got[k].dtype == np.float16
        exact = ad.merge(k.split(".")[0], base[k.split(".")[0] + ".weight"].astype(np.float16))[0] \
            if k.endswith("weight") else base[k].astype(np.float16)
        assert np.array_equal(got[k], exact), k
        assert rel_err(got[k], ref[k]) <= 2e-3  # f16 rounding of PEFT's f32 merge
    # BF16, written by hand (header + bytes)
    names = sorted(base.keys())
    hdr, off, blobs = {}, 0, []
    for k in names:
        bts = _bf16_bytes(base[k])
        hdr[k] = {"dtype": "BF16", "shape": list(base[k].shape), "data_offsets": [off, off + len(bts)]}
        off += len(bts)
        blobs.append(bts)
    hj = json.dumps(hdr).encode()
    pb = str(tmp_path / "base_bf16.safetensors")
    with open(pb, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))
    outb = str(tmp_path / "mb.safetensors")
    assert ad.merge_into(pb, outb) == ["q_proj.weight", "v_proj.weight"]
    raw, header = raw_tensors(outb)
    assert raw["q_proj.bias"][2] == _bf16_bytes(base["q_proj.bias"])
    for k in ("q_proj.weight", "v_proj.weight"):
        dt, shape, bts = raw[k]
        assert dt == "BF16"
        m = _bf16_to_f32(bts, shape)
        # within one bf16 rounding (2^-8 relative) of PEFT's f32 merge of the bf16 base
        assert rel_err(m, ref[k]) <= 2 ** -7, k


def test_merge_into_in_place(tmp_path):
    p = str(tmp_path / "model.safetensors")
    shutil.copy(os.path.join(DATA, "lora", "base.safetensors"), p)
    peft.load(os.path.join(DATA, "lora")).merge_into(p, p)
    got, ref = load_safetensors(p), st("lora", "merged")
    assert max(rel_err(got[k], ref[k]) for k in ref.keys()) <= 2e-6


def test_errors_are_named(tmp_path):
    lora = peft.load(os.path.join(DATA, "lora"))
    base = st("lora", "base")
    with pytest.raises(NotFoundError, match="no module 'k_proj'.*q_proj, v_proj"):
        lora.forward("k_proj", np.zeros((1, 40)), base["q_proj.weight"])
    with pytest.raises(KeyError):  # NotFoundError is a KeyError
        lora.module_info("nope")
    with pytest.raises(IndexError):
        lora.module_info(2)
    with pytest.raises(ShapeError, match="bias has 3 entries"):
        lora.forward("q_proj", np.zeros((1, 40)), base["q_proj.weight"], np.zeros(3))
    with pytest.raises(ValueError):  # x of the wrong width: the C layer's ShapeError
        lora.forward("q_proj", np.zeros((2, 39)), base["q_proj.weight"])
    with pytest.raises(ValueError):  # weight of another shape than the adapter's A/B
        lora.forward("q_proj", np.zeros((2, 24)), base["v_proj.weight"])
    # the base lacks the module: nothing written
    conv = peft.load(os.path.join(DATA, "lora_conv1d_fan_in_fan_out"))
    out = str(tmp_path / "o.safetensors")
    with pytest.raises(NotFoundError, match="c_attn.weight"):
        conv.merge_into(os.path.join(DATA, "lora", "base.safetensors"), out)
    assert not os.listdir(tmp_path)
    # lora_bias into a base without v_proj.bias (PEFT refuses too)
    lb = peft.load(os.path.join(DATA, "lora_bias"))
    with pytest.raises(ValueError, match="lora_bias cannot be merged.*v_proj.bias"):
        lb.merge_into(os.path.join(DATA, "lora_bias", "base.safetensors"), out)
    with pytest.raises(ValueError, match="lora_bias"):
        lb.merge("v_proj", base["v_proj.weight"])
    assert not os.listdir(tmp_path)
    with pytest.raises(InvalidArgumentError, match="sharded checkpoint index, so the output must"):
        lora.merge_into(str(tmp_path / "model.safetensors.index.json"), out)
    with pytest.raises(InvalidArgumentError, match="single safetensors file.*not an index"):
        lora.merge_into(os.path.join(DATA, "lora", "base.safetensors"),
                        str(tmp_path / "model.safetensors.index.json"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 5) + b"nope!")
    with pytest.raises(FormatError, match="not JSON"):
        lora.merge_into(str(bad), out)
    lora.close()
    with pytest.raises(ValueError, match="closed"):
        lora.module_info(0)
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(peft.load(os.path.join(DATA, "lora")))


def test_unsupported_config_is_refused_by_name(tmp_path):
    d = tmp_path / "ad"
    shutil.copytree(os.path.join(DATA, "lora"), d)
    cfg = json.load(open(d / "adapter_config.json"))
    cfg["bias"] = "all"
    json.dump(cfg, open(d / "adapter_config.json", "w"))
    with pytest.raises(UnsupportedError, match="bias"):
        peft.load(str(d))
    del cfg["peft_type"]
    cfg["bias"] = "none"
    json.dump(cfg, open(d / "adapter_config.json", "w"))
    with pytest.raises(FormatError, match="peft_type"):
        peft.load(str(d))
    with pytest.raises(OSError):
        peft.load(str(tmp_path / "missing"))


def test_docs_example_runs():
    """The PEFT example of docs/python.md, run as written from the repository root; its
    printed lines are the '# ...' lines under each print."""
    doc = open(os.path.join(ROOT, "docs", "python.md")).read()
    block = doc.split("<!-- example: peft -->\n```python\n", 1)[1].split("```", 1)[0]
    want = [l[2:] for l in block.splitlines() if l.startswith("# ")]
    assert len(want) == 4
    r = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == want


def test_unclosed_layers_in_a_cycle_are_collected():
    """Layers never closed, caught with their adapter in a reference cycle: the garbage
    collector runs the finalizers in any order, and each layer's own context must outlive
    the layer (it used to be freed first: a segmentation fault).  In a subprocess so that a
    crash is a failure, not the end of the run."""
    code = """if True:
        import gc
        from effml import peft
        from effml.io import load_safetensors
        gc.disable()
        class Cycle:
            pass
        for case in ("lokr", "lora", "loha"):
            for _ in range(10):
                ad = peft.load("tests/data/peft/" + case)
                base = load_safetensors("tests/data/peft/%s/base.safetensors" % case)
                c = Cycle()
                c.self, c.ad = c, ad
                c.layers = [ad.layer(m, base[m + ".weight"], base.get(m + ".bias")) for m in ad.modules]
                c.layers[0].forward(base[ad.modules[0] + ".weight"][:2].copy() * 0 + 1, train=True)
                del ad, c
                assert gc.collect() > 0
        print("collected")
    """
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)))
    assert (r.returncode, r.stdout) == (0, "collected\n"), r.stderr[-2000:]


def test_problems_lists_every_refusal(tmp_path):
    assert peft.problems(os.path.join(DATA, "lora")) == []
    d = tmp_path / "ad"
    shutil.copytree(os.path.join(DATA, "lora"), d)
    cfg = json.load(open(d / "adapter_config.json"))
    cfg["bias"] = "all"                 # not honoured
    cfg["use_qalora"] = True            # not honoured either
    json.dump(cfg, open(d / "adapter_config.json", "w"))
    got = peft.problems(str(d))
    assert len(got) >= 2, got
    assert any("bias" in p for p in got) and any("use_qalora" in p for p in got), got
    with pytest.raises(UnsupportedError):  # load() refuses at the first of them
        peft.load(str(d))


def test_rank_mismatch_names_the_config_field(tmp_path):
    """r / rank_pattern disagreeing with the tensors' rank is refused at load (not reported as
    r=8 and then blamed on fan_in_fan_out at forward), naming the field per module."""
    d = tmp_path / "ad"
    shutil.copytree(os.path.join(DATA, "lora"), d)
    cfg = json.load(open(d / "adapter_config.json"))
    cfg["r"] = 8
    cfg["rank_pattern"] = {"q_proj": 2}
    json.dump(cfg, open(d / "adapter_config.json", "w"))
    got = peft.problems(str(d))
    assert len(got) == 2, got
    q = [p for p in got if "q_proj.lora_A.weight" in p]
    v = [p for p in got if "v_proj.lora_A.weight" in p]
    assert len(q) == 1 and 'has shape [4, 40] (rank 4), but rank_pattern["q_proj"]=2' in q[0] \
        and "fix rank_pattern" in q[0], got
    assert len(v) == 1 and "has shape [4, 24] (rank 4), but r=8 in adapter_config.json" in v[0] \
        and "fix r or add a rank_pattern entry" in v[0], got
    assert not any("fan_in_fan_out" in p for p in got), got
    with pytest.raises(ShapeError, match=r"rank 4\), but (rank_pattern\[\"q_proj\"\]=2|r=8)"):
        peft.load(str(d))
    # a base weight of another size is not blamed on fan_in_fan_out (nor on r)
    with peft.load(os.path.join(DATA, "lora")) as ad:
        with pytest.raises(ShapeError, match=r"in_features=30, out_features=16, another size.*"
                                             r"not a fan_in_fan_out or r question") as ei:
            ad.forward("v_proj", np.ones((2, 30), np.float32), np.ones((16, 30), np.float32))
        assert "check fan_in_fan_out" not in str(ei.value)


# ---- AdapterLayer, dropouts and save (effml_adapter_peft_save / effml_adapter_lora_save_peft)

KIND = {"LORA": "lora", "LORA (DoRA)": "lora", "LOKR": "lokr", "LOHA": "loha", "IA3": "ia3",
        "VERA": "vera"}


def layers_of(ad, case, seed=0):
    base = st(case, "base")
    return [ad.layer(m, base[m + ".weight"], base.get(m + ".bias"), seed=seed) for m in ad.modules]


@pytest.mark.parametrize("case", CASES)
def test_layer_forward_equals_adapter_forward(case):
    """ad.layer(...).forward(x) in eval mode is ad.forward(...) bit for bit, and within 2e-6 of
    PEFT's eval-mode output."""
    with peft.load(os.path.join(DATA, case)) as ad:
        base, io = st(case, "base"), st(case, "io")
        for m, l in zip(ad.modules, layers_of(ad, case)):
            with l:
                assert l.kind == KIND[ad.peft_type] and l.module == "base_model.model." + m
                b = base[m + ".bias"] if m + ".bias" in base else None
                y = l.forward(io[m + ".x"])
                assert np.array_equal(y, ad.forward(m, io[m + ".x"], base[m + ".weight"], b))
                assert rel_err(y, io[m + ".y"]) <= 2e-6, (case, m)


@pytest.mark.parametrize("case", CASES)
def test_save_round_trip_is_bit_identical(case, tmp_path):
    """save() then load(): the same tensors, byte for byte (PEFT's own file), the same
    parameters and outputs bit for bit, the same dropouts."""
    ad = peft.load(os.path.join(DATA, case))
    layers = layers_of(ad, case)
    peft.save(str(tmp_path), layers)
    orig, _ = raw_tensors(os.path.join(DATA, case, "adapter_model.safetensors"))
    ours, _ = raw_tensors(str(tmp_path / "adapter_model.safetensors"))
    assert sorted(ours) == sorted(orig)
    for k in orig:
        assert ours[k] == orig[k], (case, k)  # dtype, shape and bytes
    ad2 = peft.load(str(tmp_path))
    assert ad2.peft_type == ad.peft_type and ad2.modules == ad.modules
    assert ad2.dropouts == ad.dropouts
    io = st(case, "io")
    for m, l, l2 in zip(ad.modules, layers, layers_of(ad2, case)):
        p, p2 = l.params(), l2.params()
        assert sorted(p) == sorted(p2)
        for k in p:
            assert p[k].dtype == np.float32 and np.array_equal(p[k], p2[k]), (case, m, k)
        assert np.array_equal(l.forward(io[m + ".x"]), l2.forward(io[m + ".x"]))
        l.close()
        l2.close()
    ad.close()
    ad2.close()


DROPOUT_SET = {"lora": {"p": 0.5}, "vera": {"p": 0.5},
               "loha": {"rank_dropout": 0.5, "module_dropout": 0.25},
               "lokr": {"rank_dropout": 0.5, "module_dropout": 0.25, "rank_dropout_scale": True}}


@pytest.mark.parametrize("case", ["lora", "dora", "lokr", "loha", "vera"])
def test_dropout_setters_eval_is_bit_identical_to_none(case, tmp_path):
    """Dropout set on a layer: read back; in eval the output is bit-identical to the same layer
    with no dropout; in training with dropout it differs, with 0 it equals eval; save() writes
    the values and load() gives them back."""
    ad = peft.load(os.path.join(DATA, case))
    io = st(case, "io")
    layers = layers_of(ad, case, seed=3)
    want = DROPOUT_SET[layers[0].kind]
    for m, l in zip(ad.modules, layers):
        x = np.repeat(io[m + ".x"], 8, axis=0)  # enough rows that a p=0.5 mask drops something
        none = l.forward(x)
        l.set_dropout(**want)
        assert l.dropout == want
        assert np.array_equal(l.forward(x), none)           # eval: never drops
        assert not np.array_equal(l.forward(x, train=True), none)
        assert np.array_equal(l.forward(x), none)           # and still not after a TRAIN forward
    peft.save(str(tmp_path), layers)
    back = peft.load(str(tmp_path)).dropouts
    if layers[0].kind in ("lora", "vera"):
        assert back["dropout"] == 0.5
    else:
        assert back["rank_dropout"] == 0.5 and back["module_dropout"] == 0.25
        assert back["rank_dropout_scale"] is True
    for m, l in zip(ad.modules, layers):
        zero = {k: (False if k == "rank_dropout_scale" else 0.0) for k in want}
        l.set_dropout(**zero)
        x = io[m + ".x"]
        assert np.array_equal(l.forward(x, train=True), l.forward(x))  # p = 0: no draw, no change
        l.close()


def type_error(f, *a, **kw):
    """The message of the TypeError f(*a, **kw) raises (the exception is not kept: a traceback
    held in the test's frame would keep its layers alive into a garbage-collection cycle)."""
    try:
        f(*a, **kw)
    except TypeError as e:
        return str(e)
    raise AssertionError("no TypeError")


def test_set_dropout_lokr_types():
    with peft.load(os.path.join(DATA, "lokr")) as ad:
        ls = layers_of(ad, "lokr")
        l = ls[0]
        for k in ("rank_dropout", "module_dropout"):
            assert type_error(l.set_dropout, **{k: "0.2"}) == (
                "AdapterLayer.set_dropout: %s must be a real number (a probability), got '0.2' (str)" % k)
        assert type_error(l.set_dropout, rank_dropout_scale="false") == (
            "AdapterLayer.set_dropout: rank_dropout_scale must be a bool, got 'false' (str)")
        l.set_dropout(rank_dropout=0.25, module_dropout=0.5, rank_dropout_scale=True)
        assert l.dropout == {"rank_dropout": 0.25, "module_dropout": 0.5, "rank_dropout_scale": True}
        for x in ls:
            x.close()


def test_dropouts_from_config_and_setter_errors(tmp_path):
    with peft.load(os.path.join(DATA, "lora_dropout")) as ad:
        assert ad.dropouts == {"dropout": 0.1, "rank_dropout": 0.0, "module_dropout": 0.0,
                               "rank_dropout_scale": False}
        base = st("lora_dropout", "base")
        with ad.layer("q_proj", base["q_proj.weight"]) as l:
            assert l.dropout == {"p": pytest.approx(0.1, abs=0)}
            with pytest.raises(InvalidArgumentError, match="a lora layer has no rank_dropout"):
                l.set_dropout(rank_dropout=0.1)
            with pytest.raises(InvalidArgumentError, match=r"effml_adapter_lora_set_dropout.*1\.5"):
                l.set_dropout(1.5)
            # a probability must be a real number: str and bool refused naming the argument
            for bad in ("0.1", True, np.bool_(False), None.__class__, [0.1]):
                assert type_error(l.set_dropout, bad) == (
                    "AdapterLayer.set_dropout: p must be a real number (a probability), got %r (%s)"
                    % (bad, type(bad).__name__))
            l.set_dropout(np.float32(0.25))
            assert l.dropout == {"p": 0.25}
            l.set_dropout(0)
            assert l.dropout == {"p": 0.0}
            l.set_dropout(0.1)
            assert l.dropout == {"p": 0.1}
        with pytest.raises(InvalidArgumentError, match="closed"):
            l.forward(np.ones((1, 40), np.float32))
    with peft.load(os.path.join(DATA, "loha")) as ad:
        assert ad.dropouts["rank_dropout_scale"] is True  # LoHa always rescales its rank mask
    with peft.load(os.path.join(DATA, "ia3")) as ad:
        assert ad.dropouts == {"dropout": 0.0, "rank_dropout": 0.0, "module_dropout": 0.0,
                               "rank_dropout_scale": False}
        base = st("ia3", "base")
        with ad.layer("q_proj", base["q_proj.weight"], base["q_proj.bias"]) as l:
            assert l.dropout == {}
            with pytest.raises(InvalidArgumentError, match="a ia3 layer has no p"):
                l.set_dropout(0.1)
    with pytest.raises(InvalidArgumentError, match="no layer"):
        peft.save(str(tmp_path), [])
    # layers of two kinds in one directory are refused by the C saver, naming the problem
    with peft.load(os.path.join(DATA, "lokr")) as a1, peft.load(os.path.join(DATA, "loha")) as a2:
        l1, l2 = layers_of(a1, "lokr")[0], layers_of(a2, "loha")[0]
        with pytest.raises(InvalidArgumentError, match="effml_adapter_peft_save"):
            peft.save(str(tmp_path), [l1, l2], modules=["base_model.model.a", "base_model.model.b"])


# ---- sharded checkpoints (model.safetensors.index.json)

SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def write_raw_safetensors(path, tensors):
    """{name: (dtype, shape, bytes)} -> a safetensors file (names sorted, header padded to 8)."""
    header, off, blobs = {}, 0, []
    for k in sorted(tensors):
        dt, shape, b = tensors[k]
        header[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def make_sharded(case, d, bias_first=False, extra=2):
    """A two-shard copy of the case's base in folder d: the weights in one shard, the biases
    (and ``extra`` small tensors) in the other, so a module's weight and bias lie in different
    shards (the bias's shard first when bias_first); the index's total_size is wrong on
    purpose (1: merge_into recomputes it).  Returns the index path."""
    os.makedirs(d, exist_ok=True)
    base, _ = raw_tensors(os.path.join(DATA, case, "base.safetensors"))
    parts = ({}, {})
    for k, v in base.items():
        parts[(".bias" in k) != bias_first][k] = v
    for i in range(extra):
        parts[1]["zz.extra.%04d" % i] = ("F32", [4], np.full(4, i, np.float32).tobytes())
    wm = {}
    for s, part in enumerate(parts):
        write_raw_safetensors(os.path.join(d, SHARDS[s]), part)
        wm.update({k: SHARDS[s] for k in sorted(part)})
    idx = os.path.join(d, "model.safetensors.index.json")
    with open(idx, "w") as f:
        json.dump({"metadata": {"total_size": 1}, "weight_map": wm}, f, indent=2)
    return idx


def effml_adapter_tool():
    """The effml-adapter program built beside the library under test, or None."""
    lib = os.environ.get("EFFML_LIBRARY", "")
    p = os.path.join(os.path.dirname(os.path.dirname(lib)), "tools", "effml-adapter")
    return p if lib and os.access(p, os.X_OK) else None


@pytest.mark.parametrize("case", ["lora", "ia3", "dora", "lokr", "loha", "vera"])
@pytest.mark.parametrize("bias_first", [False, True])
def test_merge_into_sharded_equals_single_file(case, bias_first, tmp_path, monkeypatch):
    idx = make_sharded(case, str(tmp_path / "base"), bias_first)
    ad = peft.load(os.path.join(DATA, case))
    calls = []
    real = ad._merge_file_module
    monkeypatch.setattr(ad, "_merge_file_module",
                        lambda ctx, i, *a: calls.append(i) or real(ctx, i, *a))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out_idx = str(out_dir / "model.safetensors.index.json")
    changed = ad.merge_into(idx, out_idx)
    assert sorted(calls) == list(range(len(ad.modules)))  # each module merged exactly once
    single = str(tmp_path / "single.safetensors")
    assert ad.merge_into(os.path.join(DATA, case, "base.safetensors"), single) == changed
    ref, _ = raw_tensors(single)
    seen, total = 0, 0
    for s in SHARDS:
        got, header = raw_tensors(str(out_dir / s))
        _, base_header = raw_tensors(str(tmp_path / "base" / s))
        assert header == base_header  # each shard's header byte for byte
        for k, v in got.items():
            total += len(v[2])
            if k.startswith("zz.extra."):
                assert v[2] == np.full(4, int(k[9:]), np.float32).tobytes()
                continue
            assert v == ref[k], (case, k)  # bit-identical to the single-file merge
            seen += 1
    assert seen == len(ref)
    if case == "ia3":  # the bias lies in the other shard than its weight and changes
        assert "q_proj.bias" in changed
    assert sorted(os.listdir(out_dir)) == sorted(SHARDS + ("model.safetensors.index.json",))
    with open(out_idx) as f:
        got_idx = json.load(f)
    with open(idx) as f:
        in_idx = json.load(f)
    assert got_idx["weight_map"] == in_idx["weight_map"]
    assert list(got_idx["weight_map"]) == list(in_idx["weight_map"])  # in the given order
    assert got_idx["metadata"] == {"total_size": total}
    tool = effml_adapter_tool()
    if tool:  # the index byte for byte as the C tool writes it
        tdir = tmp_path / "tool"
        tdir.mkdir()
        r = subprocess.run([tool, "merge", "--base", idx, "--adapter", os.path.join(DATA, case),
                            "--out", str(tdir / "model.safetensors.index.json"), "--no-progress"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        for name in SHARDS + ("model.safetensors.index.json",):
            assert (tdir / name).read_bytes() == (out_dir / name).read_bytes(), name


def test_merge_into_sharded_in_place_and_total_parameters(tmp_path):
    d = str(tmp_path / "m")
    idx = make_sharded("lora", d, extra=0)
    with open(idx) as f:
        j = json.load(f)
    j["metadata"]["total_parameters"] = 7  # wrong on purpose: recomputed
    with open(idx, "w") as f:
        json.dump(j, f)
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ad = peft.load(os.path.join(DATA, "lora"))
    ad.merge_into(idx, str(ref_dir / "model.safetensors.index.json"))
    ad.merge_into(idx, idx)  # in place
    for s in SHARDS:
        assert open(os.path.join(d, s), "rb").read() == (ref_dir / s).read_bytes()
    base = st("lora", "base")
    with open(idx) as f:
        md = json.load(f)["metadata"]
    assert md["total_parameters"] == sum(v.size for v in base.values())
    assert md["total_size"] == sum(v.nbytes for v in base.values())
    assert sorted(os.listdir(d)) == sorted(SHARDS + ("model.safetensors.index.json",))


@pytest.mark.parametrize("edit, exc, match", [
    (lambda j: j.update(extra=1), FormatError, "unknown field 'extra'"),
    (lambda j: j["metadata"].update(format="pt"), FormatError, "unknown metadata field 'format'"),
    (lambda j: j["metadata"].update(total_size="5"), FormatError,
     "metadata field 'total_size' is \"5\", not a number"),
    (lambda j: j["metadata"].update(total_size=-1), FormatError,
     "'total_size' is -1, not a non-negative integer"),
    (lambda j: j["weight_map"].update({"q_proj.bias": "../x.safetensors"}), FormatError,
     "weight_map\\['q_proj.bias'\\]=\"../x.safetensors\" is not a shard file name"),
    (lambda j: j["weight_map"].update({"k_proj.weight": SHARDS[0]}), FormatError,
     "weight_map names tensor 'k_proj.weight' in shard"),
    (lambda j: j["weight_map"].pop("v_proj.weight"), FormatError,
     "holds tensor 'v_proj.weight', which weight_map does not list"),
    (lambda j: j["weight_map"].update({"v_proj.weight": SHARDS[1]}), FormatError,
     "weight_map names tensor 'v_proj.weight' in shard 'model-00002"),
    (lambda j: j["weight_map"].update({"q_proj.bias": "model-00003-of-00003.safetensors"}),
     FormatError, "names shard 'model-00003-of-00003.safetensors' \\(for tensor 'q_proj.bias'\\)"),
    (lambda j: j.pop("weight_map"), FormatError, "no \"weight_map\" object"),
])
def test_merge_into_sharded_refusals(tmp_path, edit, exc, match):
    d = str(tmp_path / "b")
    idx = make_sharded("lora", d, extra=0)
    with open(idx) as f:
        j = json.load(f)
    edit(j)
    with open(idx, "w") as f:
        json.dump(j, f)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(exc, match=match):
        peft.load(os.path.join(DATA, "lora")).merge_into(idx, str(out_dir / "m.index.json"))
    assert not os.listdir(out_dir)


def test_merge_into_sharded_duplicate_key_and_bad_out(tmp_path):
    d = str(tmp_path / "b")
    idx = make_sharded("lora", d, extra=0)
    lora = peft.load(os.path.join(DATA, "lora"))
    text = open(idx).read()
    with open(idx, "w") as f:
        f.write(text.replace('"weight_map": {', '"weight_map": {"q_proj.weight": "%s", ' % SHARDS[0], 1))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(FormatError, match="key 'q_proj.weight' appears twice"):
        lora.merge_into(idx, str(out_dir / "m.index.json"))
    with open(idx, "w") as f:
        f.write(text)
    with pytest.raises(InvalidArgumentError, match="in the base's folder but is not the base index"):
        lora.merge_into(idx, os.path.join(d, "other.index.json"))
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        lora.merge_into(idx, str(tmp_path / "nope" / "m.index.json"))
    assert not os.listdir(out_dir)
    assert sorted(os.listdir(d)) == sorted(SHARDS + ("model.safetensors.index.json",))


def test_merge_into_sharded_error_midway_leaves_nothing(tmp_path, monkeypatch):
    """An error (or Ctrl-C) while the second shard is written: no output, no temporary file,
    and an in-place target keeps its bytes."""
    d = str(tmp_path / "b")
    idx = make_sharded("ia3", d)
    before = {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}
    ad = peft.load(os.path.join(DATA, "ia3"))
    real = peft.PeftAdapter._write_merged
    count = []

    def failing(self, path, *a):
        count.append(path)
        if len(count) == 2:
            raise KeyboardInterrupt
        return real(self, path, *a)
    monkeypatch.setattr(peft.PeftAdapter, "_write_merged", failing)
    for target in (str(tmp_path / "o" / "model.safetensors.index.json"), idx):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        count.clear()
        with pytest.raises(KeyboardInterrupt):
            ad.merge_into(idx, target)
        assert len(count) == 2
        assert not [f for f in os.listdir(os.path.dirname(target)) if ".tmp." in f]
    assert not os.listdir(tmp_path / "o")
    assert {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)} == before


def test_merge_into_single_file_missing_out_folder_names_the_output(tmp_path):
    # used to raise a raw FileNotFoundError naming the internal OUT.tmp.<pid> file
    lora = peft.load(os.path.join(DATA, "lora"))
    out = str(tmp_path / "nope" / "x" / "out.safetensors")
    with pytest.raises(InvalidArgumentError) as ei:
        lora.merge_into(os.path.join(DATA, "lora", "base.safetensors"), out)
    msg = str(ei.value)
    assert msg == "output %s: its folder %s does not exist" % (out, os.path.dirname(out)), msg
    assert ".tmp." not in msg
    assert not (tmp_path / "nope").exists()
