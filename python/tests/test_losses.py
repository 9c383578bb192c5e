"""effml.losses and nn.fit(sample_weight=, class_weight=, reduction=, scalarization=)
against scikit-learn's compute_class_weight, torch's CrossEntropyLoss(weight=...),
numpy, and the C reference file of the weighted loss."""
import os

import numpy as np
import pytest

import effml
from effml import losses, mixture, nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _batch(seed=0, b=37, c=5):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(b, c)) * 2).astype(np.float32)
    y = rng.integers(0, c, size=b)
    y[:c] = np.arange(c)  # every class present
    sw = rng.uniform(0, 3, size=b)
    cw = rng.uniform(0.2, 4, size=c)
    return z, y, sw, cw


def test_balanced_matches_sklearn():
    cw_mod = pytest.importorskip("sklearn.utils.class_weight")
    rng = np.random.default_rng(4)
    y = rng.choice(6, size=500, p=[0.5, 0.2, 0.15, 0.1, 0.04, 0.01])
    ref = cw_mod.compute_class_weight("balanced", classes=np.arange(6), y=y)
    np.testing.assert_allclose(losses.compute_class_weight("balanced", y), ref, rtol=1e-14)
    np.testing.assert_allclose(losses.class_weight_balanced(y, 6), ref, rtol=1e-14)
    d = {0: 0.5, 3: 2.0}
    ref = cw_mod.compute_class_weight(d, classes=np.arange(6), y=y)
    np.testing.assert_array_equal(losses.compute_class_weight(d, y), ref)
    np.testing.assert_array_equal(losses.compute_class_weight(None, y, 6), np.ones(6))


@pytest.mark.parametrize("use_sw", [False, True])
@pytest.mark.parametrize("use_cw", [False, True])
@pytest.mark.parametrize("reduction", ["weighted_mean", "mean"])
def test_weighted_loss_matches_torch(use_sw, use_cw, reduction):
    torch = pytest.importorskip("torch")
    z, y, sw, cw = _batch()
    sw = sw if use_sw else None
    cw = cw if use_cw else None
    loss, grad = losses.softmax_cross_entropy(z, y, sample_weight=sw, class_weight=cw,
                                              reduction=reduction, return_grad=True)
    zt = torch.tensor(z.astype(np.float64), requires_grad=True)
    yt = torch.tensor(y)
    cwt = None if cw is None else torch.tensor(cw)
    per = torch.nn.CrossEntropyLoss(weight=cwt, reduction="none")(zt, yt)  # w_c[y] * l_i
    s = torch.ones(len(y), dtype=torch.float64) if sw is None else torch.tensor(sw)
    wrow = s * (torch.ones(len(y), dtype=torch.float64) if cwt is None else cwt[yt])
    if reduction == "weighted_mean":
        L = (s * per).sum() / wrow.sum()
        if sw is None:  # exactly PyTorch's own mean reduction
            L2 = torch.nn.CrossEntropyLoss(weight=cwt)(zt, yt)
            assert L.item() == pytest.approx(L2.item(), rel=1e-12)
    else:
        L = (s * per).sum() / len(y)
    L.backward()
    assert loss == pytest.approx(L.item(), rel=1e-6)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert grad.dtype == np.float32


def test_weighted_loss_reference_file():
    # the same PyTorch reference values the C test checks (tests/ref/weighted_loss_ref.py)
    path = os.path.join(ROOT, "tests", "ref", "weighted_loss_ref.txt")
    ref = {}
    with open(path) as f:
        for line in f:
            p = line.split()
            ref[p[0]] = np.array([float(v) for v in p[2:]])
    z = ref["logits"].astype(np.float32).reshape(len(ref["labels"]), -1)
    y = ref["labels"].astype(np.int64)
    flags = {"both": (1, 1), "sw": (1, 0), "cw": (0, 1), "none": (0, 0)}
    for name, (use_sw, use_cw) in flags.items():
        for tag, red in (("wmean", "weighted_mean"), ("mean", "mean")):
            loss, grad = losses.softmax_cross_entropy(
                z, y, sample_weight=ref["sample_weight"] if use_sw else None,
                class_weight=ref["class_weight"] if use_cw else None, reduction=red,
                return_grad=True)
            key = "%s_%s_" % (name, tag)
            assert loss == pytest.approx(ref[key + "loss"][0], rel=1e-6), key
            np.testing.assert_allclose(grad.ravel(), ref[key + "grad"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        losses.compute_class_weight("balanced", ref["balanced_labels"].astype(int), 5),
        ref["balanced_weights"], rtol=1e-14)
    for T in (1, 2, 3, 10):
        np.testing.assert_allclose(losses.scalarization_weights(ref["scal_sizes"], float(T)),
                                   ref["scal_T%d" % T], rtol=1e-12)


def test_scalarization_weights_formula():
    n = np.array([5000.0, 800, 120, 9])
    for T in (1.0, 2.0, 5.0):
        w = losses.scalarization_weights(n, T)
        ref = n ** (1 / T - 1)
        ref = ref / (ref @ n / n.sum())
        np.testing.assert_allclose(w, ref, rtol=1e-12)
        # expected gradient identity: (n_k / N) w_k = temperature-sampling q_k
        q = mixture.temperature_probs(n, T)
        np.testing.assert_allclose(n / n.sum() * w, q, rtol=1e-12)
    np.testing.assert_allclose(losses.scalarization_weights(n, np.inf),
                               n.sum() / (4 * n), rtol=1e-12)
    np.testing.assert_allclose(losses.scalarization_weights(n, 1.0), np.ones(4), rtol=1e-15)


# ---------------------------------------------------------------- through nn.fit

def _one_step(seed, **kw):
    """One full-batch SGD step of a Dense layer; returns (W, b) before and after."""
    rng = np.random.default_rng(seed)
    n, f, c = 64, 6, 4
    X = rng.normal(size=(n, f)).astype(np.float32)
    y = rng.choice(c, size=n, p=[0.55, 0.25, 0.15, 0.05])
    y[:c] = np.arange(c)
    m = nn.Sequential([nn.Dense(f, c)], seed=3)
    p0 = {k: v.copy() for k, v in m.params().items()}
    nn.fit(m, X, y, optimizer=nn.SGD(lr=0.5), epochs=1, batch_size=n, **kw)
    return X, y, p0, m.params()


def _torch_step(X, y, p0, wrow, denom):
    torch = pytest.importorskip("torch")
    W = torch.tensor(p0["0.weight"].astype(np.float64), requires_grad=True)
    b = torch.tensor(p0["0.bias"].astype(np.float64), requires_grad=True)
    z = torch.tensor(X.astype(np.float64)) @ W.T + b
    per = torch.nn.CrossEntropyLoss(reduction="none")(z, torch.tensor(y))
    L = (torch.tensor(wrow) * per).sum() / denom
    L.backward()
    return (W - 0.5 * W.grad).detach().numpy(), (b - 0.5 * b.grad).detach().numpy()


@pytest.mark.parametrize("case", ["sample", "balanced", "dict", "sample+balanced+mean",
                                  "scalarization"])
def test_fit_step_matches_torch(case):
    rng = np.random.default_rng(8)
    sw = rng.uniform(0.1, 2.0, size=64)
    if case == "sample":
        X, y, p0, p1 = _one_step(1, sample_weight=sw)
        wrow, denom = sw, sw.sum()
    elif case == "balanced":
        X, y, p0, p1 = _one_step(1, class_weight="balanced")
        cw = losses.compute_class_weight("balanced", y)
        wrow = cw[y]
        denom = wrow.sum()
    elif case == "dict":
        X, y, p0, p1 = _one_step(1, class_weight={3: 5.0, 0: 0.5})
        cw = np.array([0.5, 1, 1, 5.0])
        wrow, denom = cw[y], cw[y].sum()
    elif case == "sample+balanced+mean":
        X, y, p0, p1 = _one_step(1, sample_weight=sw, class_weight="balanced", reduction="mean")
        cw = losses.compute_class_weight("balanced", y)
        wrow = sw * cw[y]
        wrow = wrow / wrow.mean()  # "mean": weights at mean 1 over the data
        denom = len(y)
    else:
        X, y, p0, p1 = _one_step(1, scalarization=3.0, reduction="mean")
        w = losses.scalarization_weights(np.bincount(y, minlength=4).astype(float), 3.0)
        wrow, denom = w[y], len(y)
    W, b = _torch_step(X, y, p0, wrow, denom)
    np.testing.assert_allclose(p1["0.weight"], W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p1["0.bias"], b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(p1["0.weight"], p0["0.weight"])


def test_fit_weights_change_training_and_defaults_do_not():
    X, y, _, plain = _one_step(2)
    _, _, _, ones = _one_step(2, sample_weight=np.ones(64))
    np.testing.assert_allclose(ones["0.weight"], plain["0.weight"], rtol=1e-6, atol=1e-7)
    _, _, _, bal = _one_step(2, class_weight="balanced")
    assert np.abs(bal["0.weight"] - plain["0.weight"]).max() > 1e-3
    # a cooldown schedule 3 -> 1 switching after the only step equals constant T = 3
    _, _, _, cd = _one_step(2, scalarization=dict(kind="cooldown", t_start=3.0, t_end=1.0),
                            reduction="mean")
    _, _, _, c3 = _one_step(2, scalarization=3.0, reduction="mean")
    np.testing.assert_array_equal(cd["0.weight"], c3["0.weight"])


def test_bad_input_is_named():
    z, y, sw, cw = _batch()
    with pytest.raises(ValueError, match="reduction"):
        losses.softmax_cross_entropy(z, y, reduction="sum")
    with pytest.raises(ValueError, match="sample_weight has 3"):
        losses.softmax_cross_entropy(z, y, sample_weight=sw[:3])
    with pytest.raises(ValueError, match="sample_weight"):
        losses.softmax_cross_entropy(z, y, sample_weight=-sw)
    with pytest.raises(ValueError, match="class_weight"):
        losses.softmax_cross_entropy(z, y, class_weight=cw[:2])
    with pytest.raises(ValueError, match="class_weight has key 9"):
        losses.compute_class_weight({9: 1.0}, y, 5)
    with pytest.raises(ValueError, match=r"class_weight\[1\]"):
        losses.compute_class_weight({1: -2.0}, y, 5)
    with pytest.raises(ValueError, match="balanced"):
        losses.compute_class_weight("balance", y, 5)
    with pytest.raises(ValueError, match="class|label"):  # class 5 has no label
        losses.class_weight_balanced(y, 6)
    with pytest.raises(ValueError, match="y has 3 labels"):
        losses.softmax_cross_entropy(z, y[:3])
    with pytest.raises(ValueError, match="temperature|T"):
        losses.scalarization_weights([3.0, 2.0], -1.0)
    X = np.zeros((8, 6), np.float32)
    yy = np.arange(8) % 4
    m = nn.Sequential([nn.Dense(6, 4)])
    with pytest.raises(ValueError, match="sample_weight has 7"):
        nn.fit(m, X, yy, sample_weight=np.ones(7))
    with pytest.raises(ValueError, match="scalarization has unknown key"):
        nn.fit(m, X, yy, scalarization=dict(kind="cooldown", t_begin=2.0))
    with pytest.raises(ValueError, match="scalarization kind"):
        nn.fit(m, X, yy, scalarization=dict(kind="warm"))
    with pytest.raises(ValueError, match="t_start"):
        nn.fit(m, X, yy, scalarization=0.0)
    with pytest.raises(ValueError, match="reduction"):
        nn.fit(m, X, yy, class_weight="balanced", reduction="sum")


def test_fit_skips_zero_weight_batches():
    # weighted_mean: a batch whose weights all are 0 has no loss and is skipped (no
    # optimizer step) instead of failing; it still counts as a progress step (loss NaN)
    X = np.random.default_rng(3).normal(size=(8, 6)).astype(np.float32)
    yy = np.arange(8) % 4
    reports = []
    m = nn.Sequential([nn.Dense(6, 4)])
    loss = nn.fit(m, X, yy, epochs=2, batch_size=1, class_weight={0: 0.0, 1: 0.0, 2: 0.0},
                  progress=lambda e, s, l: reports.append((s, l)), progress_every=1)
    assert np.isfinite(loss)
    assert [s for s, _ in reports] == list(range(1, 17))
    assert sum(np.isnan(l) for _, l in reports) == 12  # 6 of 8 rows weigh 0, two epochs
    with pytest.raises(effml.InvalidArgumentError, match="every row weight"):
        nn.fit(m, X, yy, sample_weight=np.zeros(8))
