"""effml.calibration: calibrators and metrics against the C reference file
(tests/ref/calibration_ref.txt, from numpy/scipy/torch, the values the C tests
check) and against independent numpy/scipy/torch computations here."""
import os
import pickle

import numpy as np
import pytest

import effml
from effml import calibration as cal
from effml import selective

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ref():
    out = {}
    with open(os.path.join(ROOT, "tests", "ref", "calibration_ref.txt")) as f:
        for line in f:
            parts = line.split()
            out[parts[0]] = np.array([float(v) for v in parts[2:]])
            assert out[parts[0]].size == int(parts[1])
    return out


R = _ref()
N, K = 400, 5
Z = R["logits"].reshape(N, K).astype(np.float32)
Y = R["labels"].astype(np.int64)
VIEWS = [R["view%d" % v].reshape(N, K).astype(np.float32) for v in range(3)]


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


# ---------------------------------------------------------------- reference file (= C tests)

def test_temperature_scaling_matches_reference():
    ts = cal.TemperatureScaling().fit(Z, Y)
    assert ts.temperature_ == pytest.approx(R["ts_T"][0], rel=1e-9)
    p = ts.predict_proba(Z.astype(np.float64))
    nll = -np.mean(np.log(p[np.arange(N), Y]))
    assert nll == pytest.approx(R["ts_nll"][0], rel=1e-9)
    # the prediction never changes; dtype follows the input
    assert ts.transform(Z).dtype == np.float32
    assert np.array_equal(ts.predict(Z), np.argmax(Z, 1))
    loss, grad = ts.loss(Z, Y)
    assert loss == pytest.approx(R["ts_nll"][0], rel=1e-6)  # f32 logits
    assert abs(grad[0]) < 1e-6


def test_vector_scaling_matches_reference():
    vs = cal.VectorScaling().fit(Z, Y)
    p = vs.predict_proba(Z.astype(np.float64))
    np.testing.assert_allclose(p, R["vs_probs"].reshape(N, K), atol=1e-7)
    nll = -np.mean(np.log(p[np.arange(N), Y]))
    assert nll == pytest.approx(R["vs_nll"][0], rel=1e-9)
    np.testing.assert_allclose(np.concatenate([vs.scale_, vs.bias_]), R["vs_params"], atol=1e-6)
    assert abs(vs.bias_.mean()) < 1e-12


@pytest.mark.parametrize("tag", ["", "tied_"])
def test_metrics_match_reference(tag):
    conf = R["conf_tied" if tag else "conf"]
    ok = R["correct"].astype(np.uint8)
    for B in (10, 15):
        for kind, name in ((0, "equal_width"), (1, "adaptive")):
            for norm in (1, 2):
                got = cal.ece(conf, ok, n_bins=B, binning=name, norm=norm)
                assert got == pytest.approx(R["ece_%sB%d_k%d_n%d" % (tag, B, kind, norm)][0],
                                            rel=1e-12, abs=1e-15), (B, name, norm)
    rb = cal.reliability_bins(conf, ok, n_bins=10, binning="adaptive")
    np.testing.assert_array_equal(rb["count"], R["rel_%scount" % tag])
    np.testing.assert_allclose(rb["mean_confidence"], R["rel_%sconf" % tag], rtol=1e-12)
    np.testing.assert_allclose(rb["accuracy"], R["rel_%sacc" % tag], rtol=1e-12)
    np.testing.assert_allclose(rb["upper_edge"], R["rel_%supper" % tag], rtol=1e-15)
    assert cal.augrc(conf, ok) == pytest.approx(R["augrc_tied" if tag else "augrc"][0],
                                                rel=1e-12)


def test_metrics_order_invariant():
    conf, ok = R["conf_tied"], R["correct"].astype(np.uint8)
    perm = np.random.default_rng(1).permutation(N)
    for f in (lambda c, o: cal.ece(c, o, binning="adaptive"), cal.augrc):
        assert f(conf, ok) == f(conf[perm], ok[perm])


def test_brier_matches_reference():
    z = Z.astype(np.float64)
    assert cal.brier_score(_softmax(z), Y) == pytest.approx(R["brier_raw"][0], rel=1e-12)
    pts = _softmax(z / R["ts_T"][0])
    assert cal.brier_score(pts, Y) == pytest.approx(R["brier_ts"][0], rel=1e-12)


def test_ca_features_loss_grad_match_reference():
    f = cal.ca_features(Z, VIEWS, top_k=4)
    np.testing.assert_allclose(f, R["ca_features"].reshape(N, 12), rtol=1e-6, atol=1e-7)
    for balance in (1, 0):
        ca = cal.CorrectnessAwareCalibrator(balance=bool(balance))
        loss, grad = ca.loss(Z, Y, views=VIEWS, params=R["ca_params"])
        # reference features come from the float64 views; ours from the f32 ones
        assert loss == pytest.approx(R["ca_loss_b%d" % balance][0], rel=1e-6)
        np.testing.assert_allclose(grad, R["ca_grad_b%d" % balance], rtol=1e-4, atol=1e-8)
    ca = cal.CorrectnessAwareCalibrator()
    ca.n_classes_, ca.n_features_, ca.params_ = K, 12, R["ca_params"].copy()
    t = ca.temperatures(Z, VIEWS)
    np.testing.assert_allclose(t, R["ca_T_b1"], rtol=1e-6)
    np.testing.assert_allclose(ca.transform(Z.astype(np.float64), VIEWS),
                               Z.astype(np.float64) / t[:, None], rtol=1e-12)


# ---------------------------------------------------------------- independent computations

def _data(seed, n=600, k=4):
    rng = np.random.default_rng(seed)
    true = rng.normal(size=(n, k))
    y = np.array([rng.choice(k, p=p) for p in _softmax(true)])
    z = 2.5 * true + rng.normal(size=(n, k)) * 0.3
    return z, y


def test_temperature_scaling_vs_scipy():
    so = pytest.importorskip("scipy.optimize")
    z, y = _data(7)

    def nll(t):
        p = _softmax(z / t)
        return -np.mean(np.log(p[np.arange(len(y)), y]))
    res = so.minimize_scalar(nll, bounds=(0.05, 20), method="bounded",
                             options={"xatol": 1e-10})
    ts = cal.TemperatureScaling().fit(z, y)
    assert ts.temperature_ == pytest.approx(res.x, rel=1e-6)
    assert nll(ts.temperature_) <= res.fun + 1e-12


def test_ca_gradient_finite_differences_and_torch():
    torch = pytest.importorskip("torch")
    z, y = _data(11, n=300, k=5)
    rng = np.random.default_rng(3)
    views = [z + rng.normal(size=z.shape) * s for s in (0.3, 0.8)]
    ca = cal.CorrectnessAwareCalibrator(top_k=3, hidden=4, balance=True)
    F, H = 6, 4
    theta = np.concatenate([rng.normal(size=H * F) * 0.5, rng.normal(size=H) * 0.2,
                            rng.normal(size=H) * 0.5, [1.1]])
    loss, grad = ca.loss(z, y, views=views, params=theta)
    eps = 1e-6
    fd = np.array([(ca.loss(z, y, views=views, params=theta + eps * e)[0]
                    - ca.loss(z, y, views=views, params=theta - eps * e)[0]) / (2 * eps)
                   for e in np.eye(theta.size)])
    np.testing.assert_allclose(grad, fd, atol=1e-7)
    # torch autograd on features computed here with numpy
    order = np.argsort(-z, axis=1, kind="stable")[:, :3]
    feats = np.concatenate([np.take_along_axis(_softmax(v), order, 1) for v in views], 1)
    np.testing.assert_allclose(cal.ca_features(z, views, 3), feats, rtol=1e-13)
    th = torch.tensor(theta, requires_grad=True)
    T = torch.clamp(torch.relu(torch.tensor(feats) @ th[:H * F].view(H, F).T + th[H * F:H * F + H])
                    @ th[H * F + H:H * F + 2 * H] + th[-1], 0.1, 10.0)
    conf = torch.softmax(torch.tensor(z) / T[:, None], 1).max(1).values
    c = torch.tensor((z.argmax(1) == y).astype(np.float64))
    w = torch.where(c > 0, 1 - c.mean(), c.mean())
    L = (w * (conf - c) ** 2).sum() / w.sum()
    L.backward()
    assert loss == pytest.approx(L.item(), rel=1e-12)
    np.testing.assert_allclose(grad, th.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_ca_fit_lowers_its_loss_and_keeps_predictions():
    z, y = _data(5, n=800, k=5)
    rng = np.random.default_rng(9)
    # views: noisier for wrongly predicted rows, so the features carry a correctness signal
    wrong = (z.argmax(1) != y)[:, None]
    views = [z + rng.normal(size=z.shape) * (0.3 + 2.0 * wrong) for _ in range(3)]
    ca = cal.CorrectnessAwareCalibrator(lr=1e-2, epochs=300)  # 800 rows: 1 step per epoch
    l0, _ = ca.loss(z, y, views=views)  # unfitted: at the starting point
    assert l0 == ca.loss(z, y, views=views, params=_init_params(ca, z, views))[0]
    ca.fit(z, y, views=views)
    l1, _ = ca.loss(z, y, views=views)
    assert l1 < l0
    assert np.array_equal(ca.predict(z, views), z.argmax(1))
    t = ca.temperatures(z, views)
    assert np.all((t >= 0.1) & (t <= 10))
    # wrong rows get higher temperatures (lower confidence) than right ones
    assert t[wrong[:, 0]].mean() > t[~wrong[:, 0]].mean()
    # deterministic for a seed, and it pickles
    again = cal.CorrectnessAwareCalibrator(lr=1e-2, epochs=300).fit(z, y, views=views)
    np.testing.assert_array_equal(again.params_, ca.params_)
    back = pickle.loads(pickle.dumps(ca))
    np.testing.assert_array_equal(back.transform(z, views), ca.transform(z, views))


def _init_params(ca, z, views):
    """The C initialisation (fit with a learning rate too small to move anything)."""
    c = cal.CorrectnessAwareCalibrator(lr=1e-300, epochs=1, random_state=ca.random_state)
    return c.fit(z, views=views, y=np.zeros(len(z), np.int64)).params_


def test_ece_brier_augrc_vs_numpy():
    z, y = _data(21, n=1000, k=6)
    p = _softmax(z)
    conf, ok = cal.confidence_correct(p, y)
    assert np.array_equal(conf, p.max(1)) and np.array_equal(ok, p.argmax(1) == y)
    # equal width, 15 bins, right-closed
    b = np.clip(np.ceil(conf * 15).astype(int) - 1, 0, 14)
    e = sum(np.sum(b == k) / len(y) * abs(ok[b == k].mean() - conf[b == k].mean())
            for k in range(15) if np.any(b == k))
    assert cal.ece(conf, ok) == pytest.approx(e, rel=1e-12)
    assert cal.brier_score(p, y) == pytest.approx(((p - np.eye(6)[y]) ** 2).sum(1).mean(),
                                                  rel=1e-12)
    # AUGRC without ties: (1/N^2) sum_k wrong among the top k
    order = np.argsort(-conf)
    wrong = np.cumsum(1 - ok[order])
    assert cal.augrc(conf, ok) == pytest.approx(wrong.sum() / len(y) ** 2, rel=1e-12)
    # AURC is the same steps with selective risk; AUGRC <= AURC
    assert cal.augrc(conf, ok) <= selective.aurc(conf, ok)


def test_temperature_lowers_test_ece():
    z, y = _data(31, n=4000, k=5)
    z = z * 2.0  # overconfident
    ts = cal.TemperatureScaling().fit(z[:2000], y[:2000])
    before = cal.ece(*cal.confidence_correct(_softmax(z[2000:]), y[2000:]))
    after = cal.ece(*cal.confidence_correct(ts.predict_proba(z[2000:]), y[2000:]))
    assert ts.temperature_ > 1.5 and after < before / 2


# ---------------------------------------------------------------- API and bad input

def test_defaults_are_the_c_defaults():
    o = cal.CalibrationOptions()
    effml._lib.fn("effml_calibration_options_init")(__import__("ctypes").byref(o))
    ca = cal.CorrectnessAwareCalibrator()
    assert (ca.hidden, ca.t_min, ca.t_max, bool(ca.balance), ca.lr, ca.epochs, ca.batch_size) == \
        (o.hidden, o.t_min, o.t_max, bool(o.balance), o.lr, o.epochs, o.batch_size)
    assert ca.top_k * 3 == o.num_features
    assert cal.TemperatureScaling().max_iter == o.max_iter == cal.VectorScaling().max_iter


def test_sklearn_clone_and_params():
    base = pytest.importorskip("sklearn.base")
    ca = cal.CorrectnessAwareCalibrator(lr=3e-3, epochs=7)
    c2 = base.clone(ca)
    assert c2.get_params()["lr"] == 3e-3 and c2.get_params()["epochs"] == 7
    assert "lr=0.003" in repr(ca)


def test_bad_input_is_named():
    ts = cal.TemperatureScaling()
    with pytest.raises(effml.StateError, match="not fitted"):
        ts.transform(Z)
    with pytest.raises(ValueError, match="y has 3 labels"):
        ts.fit(Z, Y[:3])
    with pytest.raises(ValueError, match="logits"):
        ts.fit(Z[:, :1], Y)
    with pytest.raises(ValueError, match="integer class labels"):
        ts.fit(Z, Y + 0.5)
    with pytest.raises(IndexError, match="labels"):  # RangeError from C names the label
        ts.fit(Z, np.where(Y == 0, 7, Y))
    bad = Z.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"logits|finite|NaN"):
        ts.fit(bad, Y)
    ts.fit(Z, Y)
    with pytest.raises(ValueError, match="fitted on 5"):
        ts.transform(Z[:, :4])
    with pytest.raises(ValueError, match="takes no views"):
        ts.fit(Z, Y, views=VIEWS)
    ca = cal.CorrectnessAwareCalibrator(epochs=2)
    with pytest.raises(ValueError, match="needs views"):
        ca.fit(Z, Y)
    with pytest.raises(ValueError, match="views"):
        ca.fit(Z, Y, views=VIEWS[0])
    with pytest.raises(ValueError, match=r"views\[1\]"):
        ca.fit(Z, Y, views=[VIEWS[0], VIEWS[1][:, :3]])
    with pytest.raises(ValueError, match="top_k"):
        cal.ca_features(Z, VIEWS, top_k=6)
    with pytest.raises(ValueError, match="lr"):
        cal.CorrectnessAwareCalibrator(lr=0).fit(Z, Y, views=VIEWS)
    with pytest.raises(ValueError, match="t_max"):
        cal.CorrectnessAwareCalibrator(t_min=2, t_max=1).fit(Z, Y, views=VIEWS)
    ca.fit(Z, Y, views=VIEWS)
    with pytest.raises(ValueError, match="fitted on 12"):
        ca.transform(Z, VIEWS[:2])
    conf, ok = R["conf"], R["correct"]
    with pytest.raises(ValueError, match="binning"):
        cal.ece(conf, ok, binning="quantile")
    with pytest.raises(ValueError, match="norm"):
        cal.ece(conf, ok, norm=3)
    with pytest.raises(ValueError, match="n_bins"):
        cal.ece(conf, ok, n_bins=0)
    with pytest.raises(ValueError, match="correct has 3"):
        cal.ece(conf, ok[:3])
    with pytest.raises(ValueError, match="confiden"):
        cal.ece(conf * 2, ok)
    with pytest.raises(ValueError, match="y has"):
        cal.brier_score(_softmax(Z), Y[:5])


def test_cascade_stage_calibration_routes_like_prescaled_logits():
    rng = np.random.default_rng(12)
    z1, y = _data(40, n=900, k=5)
    z2 = z1 * 1.3 + rng.normal(size=z1.shape)
    va, te = slice(0, 450), slice(450, 900)
    t1 = cal.TemperatureScaling().fit(z1[va], y[va])
    v2 = cal.VectorScaling().fit(z2[va], y[va])
    a = selective.Cascade([z1[te], z2[te]], [1.0, 3.0])
    a.set_stage_calibration(0, t1)
    a.set_stage_calibration(1, v2)
    a.calibrate([z1[va], z2[va]], y[va], target="coverage", target_value=0.6)
    b = selective.Cascade([t1.transform(z1[te]), v2.transform(z2[te])], [1.0, 3.0])
    b.calibrate([t1.transform(z1[va]), v2.transform(z2[va])], y[va], target="coverage",
                target_value=0.6)
    ra, rb = a.run(), b.run()
    np.testing.assert_array_equal(ra[0], rb[0])
    np.testing.assert_array_equal(ra[2], rb[2])
    np.testing.assert_allclose(ra[1], rb[1], rtol=1e-12)
    assert a.exit_rule(0)[3] == pytest.approx(b.exit_rule(0)[3], rel=1e-12)
    # calibration changes routing compared with the raw cascade
    c = selective.Cascade([z1[te], z2[te]], [1.0, 3.0])
    c.calibrate([z1[va], z2[va]], y[va], target="coverage", target_value=0.6)
    assert not np.allclose(c.run()[1], ra[1])
    a.set_stage_calibration(0, None)
    with pytest.raises(ValueError, match="TemperatureScaling or VectorScaling"):
        a.set_stage_calibration(0, cal.CorrectnessAwareCalibrator())
    with pytest.raises(effml.StateError, match="not fitted"):
        a.set_stage_calibration(0, cal.TemperatureScaling())
    with pytest.raises(IndexError, match="stage=2"):
        a.set_stage_calibration(2, t1)
    with pytest.raises(ValueError, match="class"):  # vector scaling for 3 classes, cascade of 5
        a.set_stage_calibration(0, cal.VectorScaling().fit(Z[:, :3], Y % 3))
    with pytest.raises(ValueError, match="fitted on 3 classes, the cascade has 5"):
        a.set_stage_calibration(0, cal.TemperatureScaling().fit(Z[:, :3], Y % 3))


def test_metrics_refuse_non_probabilities_and_non_binary_flags():
    # the C library refuses these (they used to return a score with success)
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    assert cal.brier_score(p, y) == pytest.approx((0.02 + 0.08 + 0.5 + 0.18) / 4, abs=1e-15)
    with pytest.raises(effml.InvalidArgumentError, match=r"probs\[0, 0\]=4.5 is outside \[0, 1\]"):
        cal.brier_score(p * 5, y)
    with pytest.raises(effml.InvalidArgumentError, match=r"probs\[0, 0\]=-0.9 is outside \[0, 1\]"):
        cal.brier_score(-p, y)
    q = p.copy()
    q[3, 1] = 0.5
    with pytest.raises(effml.InvalidArgumentError, match=r"row 3 of probs sums to 0.8, not 1"):
        cal.brier_score(q, y)
    conf = np.array([0.9, 0.8, 0.6, 0.3])
    for bad in (-1, 2, 3):
        ok = np.array([1, 0, 1, bad], dtype=np.int64)
        with pytest.raises(effml.InvalidArgumentError, match=r"correct\[3\]=%d is not 0 or 1" % bad):
            cal.ece(conf, ok)
        with pytest.raises(effml.InvalidArgumentError, match=r"correct\[3\]=%d is not 0 or 1" % bad):
            cal.reliability_bins(conf, ok, n_bins=2)
        with pytest.raises(effml.InvalidArgumentError, match=r"correct\[3\]=%d is not 0 or 1" % bad):
            cal.augrc(conf, ok)
