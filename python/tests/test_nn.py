"""Layers, optimizers, fit with progress callbacks and Ctrl-C (against numpy)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from effml import nn

PYDIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def data(n=64, f=5, c=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, f).astype(np.float32)
    y = rng.randint(0, c, n)
    return X, y


def test_forward_matches_numpy():
    X, _ = data()
    m = nn.Sequential([nn.Dense(5, 7), nn.Activation("relu"), nn.Dense(7, 3)], seed=1)
    p = m.params()
    assert sorted(p) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert p["0.weight"].shape == (7, 5) and p["0.weight"].dtype == np.float32
    h = np.maximum(X @ p["0.weight"].T + p["0.bias"], 0)
    ref = h @ p["2.weight"].T + p["2.bias"]
    assert np.allclose(nn.predict(m, X, batch_size=10), ref, atol=1e-5)
    assert m.in_features == 5 and m.out_features == 3


def test_one_sgd_step_is_the_cross_entropy_gradient():
    X, y = data()
    m = nn.Sequential([nn.Dense(5, 3)], seed=2)
    W0, b0 = m.params()["0.weight"].copy(), m.params()["0.bias"].copy()
    lr = 0.5
    loss = nn.fit(m, X, y, optimizer=nn.SGD(lr=lr), epochs=1, batch_size=len(X))
    P = softmax(X.astype(np.float64) @ W0.T + b0)
    ref_loss = -np.mean(np.log(P[np.arange(len(y)), y]))
    G = P.copy()
    G[np.arange(len(y)), y] -= 1
    G /= len(y)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert np.allclose(m.params()["0.weight"], W0 - lr * (G.T @ X), atol=1e-5)
    assert np.allclose(m.params()["0.bias"], b0 - lr * G.sum(0), atol=1e-5)


def test_training_learns_and_progress_called():
    rng = np.random.RandomState(0)
    X = rng.randn(600, 4).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    m = nn.Sequential([nn.Dense(4, 16), nn.Activation("gelu"), nn.LayerNorm(16), nn.Dropout(0.1),
                       nn.Dense(16, 2)], seed=0)
    calls = []
    nn.fit(m, X, y, optimizer=nn.AdamW(lr=0.01), epochs=5, batch_size=32,
           progress=lambda e, s, l: calls.append((e, s, l)))
    assert [c[0] for c in calls] == [0, 1, 2, 3, 4] and calls[-1][2] < calls[0][2]
    acc = np.mean(nn.predict(m, X).argmax(1) == y)
    assert acc > 0.9
    calls.clear()
    nn.fit(m, X, y, epochs=1, batch_size=100, progress=lambda *a: calls.append(a),
           progress_every=2)
    assert [c[1] for c in calls] == [2, 4, 6]


def test_exception_in_progress_stops_and_is_reraised():
    X, y = data(200)
    m = nn.Sequential([nn.Dense(5, 3)], seed=0)
    seen = []

    def cb(e, s, l):
        seen.append(s)
        if s == 3:
            raise KeyError("stop here")
    with pytest.raises(KeyError, match="stop here"):
        nn.fit(m, X, y, epochs=50, batch_size=10, progress=cb, progress_every=1)
    assert seen == [1, 2, 3]
    with pytest.raises(KeyboardInterrupt):
        nn.fit(m, X, y, epochs=5, batch_size=10, progress_every=1,
               progress=lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))


def test_ctrl_c_interrupts_fit():
    code = r'''
import os, signal, threading, time, numpy as np
from effml import nn
rng = np.random.RandomState(0)
X = rng.randn(20000, 64).astype(np.float32); y = rng.randint(0, 10, 20000)
m = nn.Sequential([nn.Dense(64, 256), nn.Activation("relu"), nn.Dense(256, 10)])
threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
t0 = time.time()
try:
    nn.fit(m, X, y, epochs=10000, batch_size=64)
    print("NOT INTERRUPTED")
except KeyboardInterrupt:
    print("interrupted after %.1f s" % (time.time() - t0))
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=PYDIR))
    assert "interrupted after" in r.stdout, r.stdout + r.stderr
    assert float(r.stdout.split()[2]) < 30


def test_errors():
    X, y = data()
    m = nn.Sequential([nn.Dense(5, 3)])
    with pytest.raises(ValueError):
        nn.fit(m, X[:, :4], y)
    with pytest.raises(ValueError):
        nn.fit(m, X, y + 10)  # label out of range: RangeError
    with pytest.raises(ValueError):
        nn.Sequential([nn.Dense(5, 3), nn.Dense(4, 2)])
    with pytest.raises(ValueError):
        nn.Activation("nope")
    with pytest.raises(ValueError):
        nn.fit(m, X, y, optimizer=nn.SGD(lr=-1))
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(m)


def test_fit_refuses_fractional_float_labels():
    """Float labels are never truncated: 0.7-offset labels are refused naming the first bad one;
    integer-valued floats train exactly as the ints do (scikit-learn accepts them too)."""
    from effml.errors import InvalidArgumentError
    X, y = data()
    m = nn.Sequential([nn.Dense(5, 3)], seed=2)
    W0 = m.params()["0.weight"].copy()
    with pytest.raises(InvalidArgumentError) as ei:
        nn.fit(m, X, y + 0.7, epochs=1)
    assert str(ei.value) == ("y must hold integer class labels; y[0] = %r is not a whole number "
                             "(float labels are accepted only when integer-valued, never truncated)"
                             % float(y[0] + 0.7))
    assert np.array_equal(m.params()["0.weight"], W0)  # nothing trained
    yn = y.astype(np.float64)
    yn[5] = np.nan
    with pytest.raises(InvalidArgumentError, match=r"^y must hold integer class labels; y\[5\] = nan"):
        nn.fit(m, X, yn)
    with pytest.raises(InvalidArgumentError, match=r"^y must hold integer class labels, got dtype <U1$"):
        nn.fit(m, X, np.array(["a"] * len(y)))
    # integer-valued floats: the same training as int labels
    a = nn.Sequential([nn.Dense(5, 3)], seed=2)
    b = nn.Sequential([nn.Dense(5, 3)], seed=2)
    la = nn.fit(a, X, y, optimizer=nn.SGD(lr=0.5), epochs=1, batch_size=len(X))
    lb = nn.fit(b, X, y.astype(np.float32), optimizer=nn.SGD(lr=0.5), epochs=1, batch_size=len(X))
    assert la == lb
    assert np.array_equal(a.params()["0.weight"], b.params()["0.weight"])
