"""io, mixtures, coresets, selective metrics and cascades against numpy/sklearn."""
import io as pyio
import json

import struct

import numpy as np
import pytest

import effml
from effml import coreset as cs, io as eio, mixture as mx, selective as sel


# ---------------------------------------------------------------- io

@pytest.mark.parametrize("dtype", ["f4", "f8", "i4", "i8", "u1", "i1", "i2", "u2", "u4", "u8",
                                   "f2", "?"])
def test_npy_roundtrip_byte_identical(tmp_path, dtype):
    a = (np.arange(60).reshape(3, 4, 5) % 7).astype(dtype)
    p = tmp_path / "a.npy"
    eio.save_npy(p, a)
    buf = pyio.BytesIO()
    np.save(buf, a)
    assert p.read_bytes() == buf.getvalue()
    b = eio.load_npy(p)
    assert b.dtype == a.dtype and np.array_equal(a, b) and b.flags.writeable


def test_npy_load_numpy_files(tmp_path):
    a = np.asfortranarray(np.random.RandomState(0).rand(4, 3))
    np.save(tmp_path / "f.npy", a)
    b = eio.load_npy(str(tmp_path / "f.npy"))
    assert b.flags.c_contiguous and np.array_equal(a, b)
    eio.save_npy(tmp_path / "t.npy", a.T[::2])  # any layout is written in C order
    assert np.array_equal(np.load(tmp_path / "t.npy"), a.T[::2])


def test_npy_errors(tmp_path):
    with pytest.raises(OSError) as e:
        eio.load_npy(tmp_path / "missing.npy")
    assert isinstance(e.value, effml.EffmlIOError)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(ValueError):
        eio.load_npy(bad)
    with pytest.raises(ValueError):
        eio.save_npy(tmp_path / "o.npy", np.array(["x"]))


def read_safetensors_py(path):
    """Independent reader: the format is u64 header length, JSON, bytes."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    meta = hdr.pop("__metadata__", {})
    dt = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "U8": "u1", "F16": "<f2", "I32": "<i4"}
    out = {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                            dtype=dt[v["dtype"]]).reshape(v["shape"]) for k, v in hdr.items()}
    return out, meta


def test_safetensors_roundtrip(tmp_path):
    rng = np.random.RandomState(1)
    t = {"w": rng.rand(3, 4).astype(np.float32), "b": np.arange(5, dtype=np.int64),
         "h": rng.rand(2, 2).astype(np.float16), "m": np.array([[1, 2]], np.uint8)}
    p = tmp_path / "m.safetensors"
    eio.save_safetensors(p, t, {"format": "pt", "note": "x"})
    ref, meta = read_safetensors_py(p)
    assert meta == {"format": "pt", "note": "x"}
    for k in t:
        assert np.array_equal(ref[k], t[k])
    for mmap in (True, False):
        st = eio.SafeTensors(p, mmap=mmap)
        assert sorted(st.keys()) == sorted(t) and st.metadata == meta and len(st) == 4
        w = st["w"]
        assert np.array_equal(w, t["w"]) and not w.flags.writeable
        with pytest.raises(ValueError):
            w[0, 0] = 1
        del st  # arrays keep the file alive
        assert np.array_equal(w, t["w"])
    d = eio.load_safetensors(p)
    assert all(np.array_equal(d[k], t[k]) for k in t)
    with pytest.raises(KeyError) as e:
        eio.SafeTensors(p)["nope"]
    assert "nope" in str(e.value)


def test_safetensors_bf16_as_float32(tmp_path):
    vals = np.array([1.0, -2.5, 0.15625, 3e38], dtype=np.float32)
    bf = (vals.view(np.uint32) >> 16).astype("<u2")  # exact in bf16
    hdr = json.dumps({"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}).encode()
    hdr += b" " * (-len(hdr) % 8)
    p = tmp_path / "bf.safetensors"
    p.write_bytes(struct.pack("<Q", len(hdr)) + hdr + bf.tobytes())
    x = eio.SafeTensors(p)["x"]
    assert x.dtype == np.float32 and np.array_equal(x, (bf.astype(np.uint32) << 16).view(np.float32))


def test_safetensors_errors(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", 4) + b"{}xx")
    with pytest.raises(ValueError):
        eio.SafeTensors(p)
    with pytest.raises(ValueError):
        eio.save_safetensors(tmp_path / "o.safetensors", {"__metadata__": np.zeros(1)})


# ---------------------------------------------------------------- mixtures

def test_temperature_probs():
    n = np.array([1000.0, 100.0, 10.0, 0.0])
    for T in (0.5, 1.0, 2.0, 5.0):
        p = n / n.sum()
        q = np.where(n > 0, p ** (1 / T), 0)
        assert np.allclose(mx.temperature_probs(n, T), q / q.sum(), rtol=1e-14)
        assert np.allclose(mx.temperature_probs(n, alpha=1 / T), q / q.sum(), rtol=1e-14)
    assert np.allclose(mx.temperature_probs(n, float("inf")), [1 / 3, 1 / 3, 1 / 3, 0])
    with pytest.raises(ValueError):
        mx.temperature_probs(n, 0.0)
    with pytest.raises(ValueError):
        mx.temperature_probs([-1.0, 2.0])


def test_temperature_probs_fast_and_general_paths_agree():
    """A writable contiguous float64 vector takes the pointer fast path; every other
    input (read-only, strided, other dtype, list, 2-D, empty) the converting one."""
    n = np.array([1000.0, 100.0, 10.0, 0.0, 3.0, 7.0])
    ref = mx.temperature_probs(n.tolist(), 2.0)
    fast = mx.temperature_probs(n, 2.0)
    assert fast.dtype == np.float64 and fast.shape == (6,) and fast.flags.writeable
    assert np.array_equal(fast, ref)
    ro = n.copy()
    ro.flags.writeable = False
    wide = np.zeros(12)
    wide[::2] = n
    for x in (ro, wide[::2], n.astype(np.float32), n.astype(np.int64)):
        assert np.array_equal(mx.temperature_probs(x, 2.0), ref)
    assert np.array_equal(n, [1000.0, 100.0, 10.0, 0.0, 3.0, 7.0])  # input untouched
    fast[0] = -1  # results are independent arrays
    assert mx.temperature_probs(n, 2.0)[0] == ref[0]
    with pytest.raises(ValueError, match="1-D"):
        mx.temperature_probs(np.ones((2, 3)), 2.0)
    with pytest.raises(ValueError, match="empty"):
        mx.temperature_probs(np.zeros(0), 2.0)
    with pytest.raises(ValueError):
        mx.temperature_probs(np.array([1.0, np.nan]), 2.0)
    big = np.arange(1.0, 5001.0)  # beyond the cached ctypes array types
    assert np.allclose(mx.temperature_probs(big, 1.0), big / big.sum(), rtol=1e-13)


def test_temperature_schedules():
    assert mx.temperature_at(5, kind="linear", t_start=1, t_end=3, total_steps=10) == \
        pytest.approx(2.0)
    f = 0.3
    assert mx.temperature_at(3, kind="cosine", t_start=5, t_end=1, total_steps=10) == \
        pytest.approx(1 + 4 * (1 + np.cos(np.pi * f)) / 2)
    assert mx.temperature_at(4, kind="cooldown", t_start=5, t_end=1, total_steps=10) == 5
    assert mx.temperature_at(6, kind="cooldown", t_start=5, t_end=1, total_steps=10) == 1
    with pytest.raises(ValueError):
        mx.temperature_at(1, kind="nope")


def unimax_py(sizes, budget, epochs):
    order = np.argsort(sizes, kind="stable")
    u = np.zeros(len(sizes))
    b = budget
    for i, j in enumerate(order):
        u[j] = min(b / (len(sizes) - i), epochs * sizes[j])
        b -= u[j]
    return u / u.sum(), u


def test_unimax_matches_algorithm_1():
    sizes = np.array([5e3, 1e6, 2e4, 3e5, 7e2])
    for budget, ep in ((1e6, 4), (5e4, 1), (1e7, 2)):
        p, u = mx.unimax(sizes, budget, ep)
        rp, ru = unimax_py(sizes, budget, ep)
        assert np.allclose(u, ru, rtol=1e-12) and np.allclose(p, rp, rtol=1e-12)


def test_virtual_sizes_and_interleave():
    c, v = mx.virtual_sizes([100, 50, 10], [0.5, 0.3, 0.2], 1000)
    assert v == 1000 and c.sum() == 1000 and list(c) == [500, 300, 200]
    s, i = mx.interleave([3, 2, 4])
    assert list(s) == [0, 1, 2, 0, 1, 2] and list(i) == [0, 0, 0, 1, 1, 1]
    s, i = mx.interleave([3, 2, 4], stopping_strategy="all_exhausted")
    assert len(s) == 12 and list(i[s == 1]) == [0, 1, 0, 1]
    s, i = mx.interleave([3, 2, 4], [0.2, 0.0, 0.8], seed=3,
                         stopping_strategy="all_exhausted_without_replacement")
    assert 1 not in s and sorted(i[s == 2]) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        mx.interleave([3, 2], stopping_strategy="x")


def test_alias_sampler():
    w = np.array([0.1, 0.0, 0.6, 0.3])
    a = mx.AliasSampler(w, seed=11)
    d = a.draw(200000)
    f = np.bincount(d, minlength=4) / len(d)
    assert f[1] == 0 and np.allclose(f, w, atol=0.005)
    b = mx.AliasSampler(w, seed=11)
    assert np.array_equal(np.concatenate([b.draw(7), b.draw(193)]), d[:200])
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(a)


# ---------------------------------------------------------------- coresets

def heavy(n=4000, d=6, seed=0):
    rng = np.random.RandomState(seed)
    A = rng.standard_t(2, size=(n, d))
    A[:5] *= 50  # a few rare, decisive rows
    return A


def test_leverage_scores_vs_numpy_qr():
    A = heavy()
    Q, _ = np.linalg.qr(A)
    tau = (Q ** 2).sum(1)
    assert np.allclose(cs.leverage_scores(A), tau, rtol=1e-10, atol=1e-14)
    assert np.allclose(cs.leverage_scores(A.astype(np.float32)), tau, rtol=1e-3, atol=1e-6)
    sk = cs.leverage_scores(A, method="sketch", seed=1)
    assert np.allclose(sk.sum(), 6, rtol=0.3) and np.corrcoef(sk, tau)[0, 1] > 0.95
    assert np.allclose(cs.root_leverage_scores(A, 1.0), tau ** 0.5, rtol=1e-9)
    Ad = A.copy()
    Ad[:, 1] = Ad[:, 0]
    with pytest.raises(ValueError):
        cs.leverage_scores(Ad)  # rank deficient: NumericError


@pytest.mark.parametrize("p", [1.0, 1.5, 3.0])
def test_lewis_weights_fixed_point(p):
    A = heavy(800, 4)
    w, it = cs.lewis_weights(A, p, return_iterations=True)
    M = A.T @ (A * (w ** (1 - 2 / p))[:, None])
    lhs = w ** (2 / p)
    rhs = np.einsum("ij,jk,ik->i", A, np.linalg.inv(M), A)
    assert np.allclose(lhs, rhs, rtol=1e-8) and abs(w.sum() - 4) < 1e-8 and it >= 1
    assert np.allclose(cs.lewis_weights(A, 2.0), cs.leverage_scores(A), rtol=1e-10)


def test_sensitivity_sample_and_merge():
    s = np.r_[np.ones(1000), np.full(10, 50.0)]
    idx, w = cs.sensitivity_sample(s, 100, 2.0, seed=4)
    pi = np.minimum(1, 100 * s / s.sum())
    assert np.all(np.diff(idx) > 0) and np.allclose(w, pi[idx] ** -0.5)
    assert set(range(1000, 1010)) <= set(idx)  # pi = 1 for the heavy rows
    idx2, w2 = cs.sensitivity_sample(s, 100, 2.0, scheme="iid", seed=4)
    assert len(idx2) <= 100
    i, ww = cs.weighted_sample_merge([0, 3], [1.0, 2.0], [0, 2], [3.0, 4.0], offset_b=3)
    assert list(i) == [0, 3, 5] and np.allclose(ww, [1.0, np.hypot(2, 3), 4.0])


def test_coreset_regression_quality():
    rng = np.random.RandomState(3)
    n, d = 20000, 5
    X = rng.standard_t(2, size=(n, d))
    X[:10] *= 100
    beta = rng.randn(d)
    y = X @ beta + rng.standard_t(3, size=n)
    y[:10] += 500
    A = np.c_[X, y]
    full = np.linalg.lstsq(X, y, rcond=None)[0]
    cost = lambda b: np.sum((X @ b - y) ** 2)  # noqa: E731
    idx, w = cs.coreset(A, 1000, random_state=0)
    b = np.linalg.lstsq(w[:, None] * X[idx], w * y[idx], rcond=None)[0]
    ratio = cost(b) / cost(full)
    uni = rng.choice(n, len(idx), replace=False)
    bu = np.linalg.lstsq(X[uni], y[uni], rcond=None)[0]
    assert 1 <= ratio < 1.05 and ratio < cost(bu) / cost(full)
    with pytest.raises(ValueError):
        cs.coreset(A, 100, p=1.0)
    with pytest.raises(ValueError):
        cs.coreset(A, 100, p=0.5, method="lewis")
    idx1, _ = cs.coreset(A, 500, p=1.0, method="root_leverage", random_state=1)
    idx3, _ = cs.coreset(A, 500, p=3.0, method="lewis", random_state=1)
    for idx_, p_, meth in ((idx1, 1.0, "root"), (idx3, 3.0, "lewis")):
        sc = cs.root_leverage_scores(A, p_) if meth == "root" else \
            cs.sensitivity_upper_bounds(A, p_)
        expect = np.minimum(1, 500 * sc / sc.sum()).sum()  # Bernoulli: E|S| = sum pi_i
        assert abs(len(idx_) - expect) < 5 * np.sqrt(expect) + 1


# ---------------------------------------------------------------- selective

def rc_numpy(scores, correct):
    o = np.argsort(-scores, kind="stable")
    wrong = np.cumsum(~correct[o].astype(bool))
    k = np.arange(1, len(scores) + 1)
    return np.r_[0, k / len(scores)], np.r_[0, wrong / k]


def test_selective_metrics_vs_numpy_sklearn():
    from sklearn.metrics import roc_auc_score
    rng = np.random.RandomState(0)
    n = 500
    scores = rng.rand(n)
    correct = rng.rand(n) < scores  # confident samples are more often right
    cov, risk, thr = sel.risk_coverage_curve(scores, correct)
    c_ref, r_ref = rc_numpy(scores, correct)  # no ties: one point per sample
    r_ref[0] = r_ref[1]                        # the curve starts level with its first point
    assert np.allclose(cov, c_ref) and np.allclose(risk, r_ref)
    assert thr[0] == np.inf and np.allclose(thr[1:], np.sort(scores)[::-1])
    assert sel.aurc(scores, correct) == pytest.approx(np.mean(r_ref[1:]), rel=1e-12)
    r, t, cv = sel.risk_at_coverage(scores, correct, 0.5)
    k = 250
    assert r == pytest.approx(r_ref[k]) and t == pytest.approx(np.sort(scores)[::-1][k - 1])
    assert cv == 0.5 and np.mean(scores >= t) == 0.5
    # ties: the same multiset in another order gives the same results
    st = np.round(scores, 1)
    perm = rng.permutation(n)
    for f in (sel.aurc,):
        assert f(st, correct) == f(st[perm], correct[perm])
    c1, r1, t1 = sel.risk_coverage_curve(st, correct)
    c2, r2, t2 = sel.risk_coverage_curve(st[perm], correct[perm])
    assert len(c1) == len(np.unique(st)) + 1
    assert np.array_equal(c1, c2) and np.array_equal(r1, r2) and np.array_equal(t1, t2)
    assert all(np.mean(st >= t) == c for c, t in zip(c1, t1))
    c, t = sel.coverage_at_risk(scores, correct, 0.2)
    ok = np.flatnonzero(r_ref[1:] <= 0.2)
    assert c == pytest.approx((ok.max() + 1) / n)
    is_ood = rng.rand(n) < 0.3
    s2 = scores - 0.3 * is_ood
    assert sel.ood_auroc(s2, is_ood) == pytest.approx(roc_auc_score(is_ood, -s2), rel=1e-12)
    fpr, t = sel.fpr_at_tpr(s2, is_ood, 0.95)
    assert fpr == pytest.approx(np.mean(s2[is_ood] >= t))
    assert np.mean(s2[~is_ood] >= t) >= 0.95
    pred, labels = rng.randint(0, 3, n), rng.randint(0, 3, n)
    assert sel.top1_error(pred, labels) == pytest.approx(np.mean(pred != labels))
    probs = rng.dirichlet(np.ones(3), n)
    assert sel.nll(probs, labels) == pytest.approx(-np.mean(np.log(probs[np.arange(n), labels])))
    with pytest.raises(ValueError):
        sel.aurc(np.r_[scores[:-1], np.nan], correct)
    with pytest.raises(ValueError):
        sel.aurc(scores, correct[:-1])


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_ensemble_and_cascade():
    rng = np.random.RandomState(2)
    n, k = 400, 5
    z1, z2 = rng.randn(n, k) * 2, rng.randn(n, k) * 2
    pred, score, probs = sel.ensemble_predict([z1, z2], return_probs=True)
    p = (softmax(z1) + softmax(z2)) / 2
    assert np.allclose(probs, p) and np.array_equal(pred, p.argmax(1))
    assert np.allclose(score, p.max(1))
    _, s_e = sel.ensemble_predict(z1, score="energy")
    assert np.allclose(s_e, np.log(np.exp(z1).sum(1)))
    c = sel.Cascade([z1, z2], [1.0, 10.0])
    t = np.median(softmax(z1).max(1))
    c.set_exit_rule(0, "threshold", t)
    pr, sc, ex = c.run()
    first = softmax(z1).max(1) >= t
    assert np.array_equal(ex, np.where(first, 0, 1))
    assert np.array_equal(pr[first], softmax(z1).argmax(1)[first])
    assert np.allclose(sc[~first], p.max(1)[~first])
    assert c.expected_cost == pytest.approx(1 + 10 * np.mean(~first))
    assert c.exit_fraction(0) == pytest.approx(np.mean(first))
    labels = rng.randint(0, k, n)
    c.calibrate([z1, z2], labels, target="coverage", target_value=0.7)
    rule, a, b, tau = c.exit_rule(0)
    assert rule == "window" and a <= tau <= b
    with pytest.raises(ValueError):
        sel.Cascade([z1, z2[:, :3]], [1, 2])
