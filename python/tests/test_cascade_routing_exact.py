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
