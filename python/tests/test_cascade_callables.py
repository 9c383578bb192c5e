"""Python callables as cascade stages: same answers as precomputed logits,
each stage sees exactly the samples still in flight, and an exception raised
in a stage is raised by run() unchanged (not swallowed)."""
import numpy as np
import pytest

from effml import selective as sel
from effml.errors import ShapeError


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def problem(n=300, k=4, f=6, seed=3):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, f)
    W1, W2 = rng.randn(f, k), rng.randn(f, k) * 2
    return X, W1, W2


def test_callable_stages_match_precomputed_logits():
    X, W1, W2 = problem()
    z1, z2 = (X @ W1).astype(np.float32), (X @ W2).astype(np.float32)
    seen = []

    def small(batch):
        seen.append(("small", batch.copy()))
        return batch @ W1

    def big(batch):
        seen.append(("big", batch.copy()))
        return batch @ W2

    t = float(np.median(softmax(z1.astype(np.float64)).max(1)))
    ref = sel.Cascade([z1, z2], [1.0, 8.0])
    ref.set_exit_rule(0, "threshold", t)
    c = sel.Cascade([small, big], [1.0, 8.0], num_classes=4)
    c.set_exit_rule(0, "threshold", t)
    assert c.num_stages == 2
    pr, sc, ex, probs = c.run(X, return_probs=True)
    rp, rs, rx, rprobs = ref.run(return_probs=True)
    assert np.array_equal(pr, rp) and np.array_equal(ex, rx)
    assert np.allclose(sc, rs, rtol=0, atol=1e-12) and np.allclose(probs, rprobs, atol=1e-12)
    # stage 0 saw every sample, stage 1 exactly those that did not exit, in order
    assert [s for s, _ in seen] == ["small", "big"]
    assert np.array_equal(seen[0][1], X)
    assert np.array_equal(seen[1][1], X[ex == 1])
    assert 0 < (ex == 1).sum() < len(X)
    assert c.expected_cost == pytest.approx(1 + 8 * np.mean(ex == 1))


def test_mixed_stages_and_index_inputs():
    """A callable after a logits stage; X = np.arange(n) hands the callable the indices."""
    X, W1, W2 = problem(n=120)
    z1 = X @ W1
    got = []

    def second(rows):
        got.append(rows.copy())
        return X[rows] @ W2

    c = sel.Cascade([z1, second], [1, 5])
    c.set_exit_rule(0, "threshold", 0.8)
    pred, score, ex = c.run(np.arange(120))
    exit0 = softmax(z1).max(1) >= 0.8
    assert np.array_equal(ex, np.where(exit0, 0, 1))
    assert np.array_equal(got[0], np.flatnonzero(~exit0))
    p = (softmax(z1) + softmax(X @ W2)) / 2
    assert np.array_equal(pred[~exit0], p.argmax(1)[~exit0])
    with pytest.raises(ShapeError, match="119 samples but the stage logits have 120"):
        c.run(np.arange(119))


def test_dataframe_inputs_use_iloc():
    pd = pytest.importorskip("pandas")
    X, W1, _ = problem(n=50)
    df = pd.DataFrame(X, index=np.arange(50) * 7 + 3)
    types = []

    def stage(batch):
        types.append(type(batch).__name__)
        return batch.to_numpy() @ W1

    pred, _, ex = sel.Cascade([stage], [1], num_classes=4).run(df)
    assert types == ["DataFrame"] and np.array_equal(pred, (X @ W1).argmax(1))
    assert np.all(ex == 0)


class Boom(Exception):
    pass


def test_exception_in_stage_is_raised_unchanged():
    X, W1, W2 = problem(n=80)
    calls = []

    def ok(batch):
        calls.append("ok")
        return batch @ W1

    def bad(batch):
        calls.append("bad")
        raise Boom("stage failed on %d rows" % len(batch))

    c = sel.Cascade([ok, bad, ok], [1, 2, 3], num_classes=4)
    c.set_exit_rule(0, "never")
    c.set_exit_rule(1, "never")
    with pytest.raises(Boom, match="stage failed on 80 rows") as ei:
        c.run(X)
    assert calls == ["ok", "bad"]  # stopped at once: stage 2 never called
    assert "bad" in "".join(str(tb.name) for tb in ei.traceback)  # the callable's own frame
    # the cascade is still usable
    c2 = sel.Cascade([ok], [1], num_classes=4)
    assert np.array_equal(c2.run(X)[0], (X @ W1).argmax(1))


def test_bad_stage_results_are_named():
    X, W1, _ = problem(n=30)
    c = sel.Cascade([lambda b: (b @ W1)[:, :3]], [1], num_classes=4)
    with pytest.raises(ShapeError, match=r"stage 0 returned logits of shape \(30, 3\) for 30 rows"):
        c.run(X)
    c = sel.Cascade([lambda b: np.full((len(b), 4), "x")], [1], num_classes=4)
    with pytest.raises(ValueError, match="dtype <U1"):
        c.run(X)
    c = sel.Cascade([lambda b: np.full((len(b), 4), np.nan)], [1], num_classes=4)
    with pytest.raises(ValueError, match="stage 0"):  # NumericError from C names the stage
        c.run(X)
    with pytest.raises(ValueError, match="num_classes is needed"):
        sel.Cascade([lambda b: b], [1])
    with pytest.raises(ValueError, match="need.*the inputs X"):
        sel.Cascade([lambda b: b @ W1], [1], num_classes=4).run()
    with pytest.raises(ShapeError, match="num_classes=3 but the stage logits have 4"):
        sel.Cascade([X @ W1, lambda b: b], [1, 1], num_classes=3)
