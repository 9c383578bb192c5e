"""The cascade's cheap routing path (run() without probabilities) exits exactly the
samples the exact path (run(return_probs=True)) exits, also where the MSP of many
samples is within 6e-8 of 1 (large logits): there an f32 MSP would round to 1.0
and tie samples whose exact MSPs differ.  Reference: the rule recomputed here with
numpy/scipy on the exact (f64) MSP."""
import math

import numpy as np
from scipy.stats import percentileofscore

from effml.selective import Cascade


def exact_msp(z):
    z = z.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p.max(1)


def test_window_rule_large_logits_matches_exact_path_and_numpy():
    rng = np.random.default_rng(7)
    n, k = 1000, 2
    logits = [(rng.standard_normal((n, k)) * 30).astype(np.float32) for _ in range(2)]
    y = rng.integers(0, k, n)
    s = exact_msp(logits[0])
    c = Cascade(logits, [1, 10])
    c.calibrate(logits, y, rule="window", target="coverage", target_value=0.5)
    tau = np.sort(s)[::-1][math.ceil(0.5 * n) - 1]
    q = percentileofscore(s, tau, kind="rank") / 100
    lo, hi = np.quantile(s, max(q - 0.1, 0)), np.quantile(s, min(q + 0.1, 1))
    want = (s < lo) | (s > hi)
    _, _, e1 = c.run()
    _, _, e2, _ = c.run(return_probs=True)
    assert int(want.sum()) == 798  # the numpy recipe's count on this data
    np.testing.assert_array_equal(e1 == 0, want)
    np.testing.assert_array_equal(e2 == 0, want)


def test_threshold_rule_large_logits_gives_the_promised_coverage():
    rng = np.random.default_rng(1)
    n, k = 2000, 2
    logits = [(rng.standard_normal((n, k)) * 30).astype(np.float32) for _ in range(2)]
    y = rng.integers(0, k, n)
    s = exact_msp(logits[0])
    c = Cascade(logits, [1, 10], aggregation="last")
    c.calibrate(logits, y, rule="threshold", target="coverage", target_value=1 / 3)
    tau = np.sort(s)[::-1][math.ceil(n / 3) - 1]
    want = s >= tau  # the whole tie group at tau (here the MSPs rounded to exactly 1)
    _, _, e1 = c.run()
    _, _, e2, _ = c.run(return_probs=True)
    np.testing.assert_array_equal(e1 == 0, want)
    np.testing.assert_array_equal(e2 == 0, want)
    assert c.exit_fraction(0) == want.mean()


def test_distinct_msps_near_one_exit_exactly_ceil_cn():
    # every exact MSP distinct, most of them above 1 - 6e-8 (logit gaps 17..25)
    rng = np.random.default_rng(3)
    n = 3000
    u = rng.permutation(n) / n  # gaps on a grid 8/n apart: MSPs at least ~4e-14 apart
    gap = np.where(np.arange(n) % 5 != 0, 17 + 8 * u, 5 * u)
    z0 = np.stack([gap, np.zeros(n)], 1).astype(np.float32)
    z1 = rng.standard_normal((n, 2)).astype(np.float32)
    s = exact_msp(z0)
    assert len(np.unique(s)) == n
    for cov in (0.1, 1 / 3, 0.5, 0.8):
        c = Cascade([z0, z1], [1, 10])
        c.calibrate([z0, z1], rng.integers(0, 2, n), rule="threshold", target="coverage",
                    target_value=cov)
        _, _, e1 = c.run()
        _, _, e2, _ = c.run(return_probs=True)
        assert int((e1 == 0).sum()) == math.ceil(cov * n - 1e-9)
        np.testing.assert_array_equal(e1, e2)


def _near_tie_logits(n, k, dtype, seed):
    """Rows whose top two logits differ by less than 1e-16 relatively (their f64 softmax
    probabilities are equal; the larger logit is in the higher class), rows with a top
    pair 1e-6 apart, and random rows, in turn."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-3, 3, (n, k))
    lo = np.arange(n) % (k - 1)
    hi = lo + 1 + (np.arange(n) // 3) % (k - 1 - lo)
    for i in range(n):
        if i % 3 == 2:
            continue
        z[i] = rng.uniform(-3, -1, k)
        if dtype == np.float32:
            z[i, lo[i]] = np.float32(1e-20 * (1 + i % 5))
            z[i, hi[i]] = np.float32(2 * z[i, lo[i]]) if i % 3 == 0 else np.float32(z[i, lo[i]] + 1e-6)
        else:
            z[i, lo[i]] = 2.0 ** -10 * (1 + i / 128)
            z[i, hi[i]] = np.nextafter(z[i, lo[i]], 1.0) if i % 3 == 0 else z[i, lo[i]] + 1e-6
    return z.astype(dtype), lo, hi


def test_near_tie_logits_predict_as_the_exact_path():
    # the exact path predicts the argmax of the f64 probabilities (lowest index on ties);
    # run() routes stage 0 on the f32 routing score and must predict the same
    for dtype in (np.float64, np.float32):
        n, k = 70, 5
        z, lo, hi = _near_tie_logits(n, k, dtype, 11)
        zd = z.astype(np.float64)
        p = np.exp(zd - zd.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        want = p.argmax(1)
        tie = np.arange(n) % 3 == 0
        assert (z[tie, hi[tie]] > z[tie, lo[tie]]).all()
        np.testing.assert_array_equal(want[tie], lo[tie])
        np.testing.assert_array_equal(want[np.arange(n) % 3 == 1], hi[np.arange(n) % 3 == 1])
        other = np.random.default_rng(5).standard_normal((n, k)).astype(dtype)
        for how in ("calibrated", "threshold", "window"):
            c = Cascade([z, other], [1, 10])
            if how == "calibrated":
                c.calibrate([z], rule="threshold", target="coverage", target_value=1.0)
            elif how == "threshold":
                c.set_exit_rule(0, "threshold", 0.0)
            else:
                c.set_exit_rule(0, "window", 0.6, 0.9)
            msp = p.max(1)
            exit0 = (msp < 0.6) | (msp > 0.9) if how == "window" else np.ones(n, bool)
            pr1, s1, e1 = c.run()
            pr2, s2, e2, probs = c.run(return_probs=True)
            np.testing.assert_array_equal(e1 == 0, exit0)
            np.testing.assert_array_equal(e1, e2)
            np.testing.assert_array_equal(pr1, pr2)
            np.testing.assert_array_equal(s1, s2)
            np.testing.assert_array_equal(pr1[exit0], want[exit0])
            assert tie[exit0].sum() >= 20
            np.testing.assert_array_equal(pr1, probs.argmax(1))


def test_hand_set_bounds_at_exact_scores_exit_as_the_exact_path():
    # a rule set by hand routes on the cheap score too: bounds placed exactly at samples'
    # exact MSPs (and their f64 neighbours) exit the same samples as run(return_probs=True)
    rng = np.random.default_rng(21)
    n, k = 400, 6
    z0 = (rng.standard_normal((n, k)) * 3).astype(np.float32)
    z1 = rng.standard_normal((n, k)).astype(np.float32)
    c = Cascade([z0, z1], [1, 10])
    c.set_exit_rule(0, "never")
    s0 = Cascade([z0], [1]).run()[1]  # exact MSP of stage 0 alone
    for t in range(40):
        a = s0[(7 * t) % n]
        a = (a, np.nextafter(a, 0), np.nextafter(a, 2))[t % 3]
        b = max(a, s0[(13 * t + 5) % n])
        if t % 2:
            c.set_exit_rule(0, "threshold", a)
            want = s0 >= a
        else:
            c.set_exit_rule(0, "window", a, b)
            want = (s0 < a) | (s0 > b)
        _, _, e1 = c.run()
        _, _, e2, _ = c.run(return_probs=True)
        np.testing.assert_array_equal(e1 == 0, want)
        np.testing.assert_array_equal(e1, e2)


def test_risk_target_out_of_reach_is_coverage_zero_with_a_warning():
    # the metric and the calibration give one answer: coverage 0, threshold +inf
    import warnings
    import pytest
    from effml.selective import TargetNotReachedWarning, coverage_at_risk, ensemble_predict
    rng = np.random.default_rng(4)
    n, k = 200, 4
    z0 = (rng.standard_normal((n, k)) * 2).astype(np.float32)
    z1 = rng.standard_normal((n, k)).astype(np.float32)
    pred, s = ensemble_predict([z0])
    y = (pred + 1) % k  # every stage-0 prediction wrong but the least confident quarter
    low = np.argsort(s)[: n // 4]
    y[low] = pred[low]
    correct = pred == y
    cov, thr = coverage_at_risk(s, correct, 0.05)
    assert cov == 0.0 and thr == np.inf
    for rule in ("threshold", "window"):
        c = Cascade([z0, z1], [1, 10])
        with pytest.warns(TargetNotReachedWarning, match=r"risk=0.05 .*stage\(s\) 0"):
            c.calibrate([z0], y, rule=rule, target="risk", target_value=0.05)
        r, a, b, tau = c.exit_rule(0)
        assert (r, tau, b) == (rule, thr, np.inf)
        want = s < np.quantile(s, 0.9) if rule == "window" else np.zeros(n, bool)
        if rule == "window":
            assert a == np.quantile(s, 0.9)
        for probs in (False, True):
            e = c.run(return_probs=probs)[2]
            np.testing.assert_array_equal(e == 0, want)
        with warnings.catch_warnings():
            warnings.simplefilter("error", TargetNotReachedWarning)
            with pytest.raises(TargetNotReachedWarning):
                c.calibrate([z0], y, rule=rule, target="risk", target_value=0.05)
        with warnings.catch_warnings():  # a reachable target is silent
            warnings.simplefilter("error")
            c.calibrate([z0], y, rule=rule, target="risk", target_value=0.9)
            assert np.isfinite(c.exit_rule(0)[3])
