"""Ctrl-C during long C calls: a real SIGINT stops the call through the
context's cancel flag and raises KeyboardInterrupt; afterwards the previous
SIGINT handler is back, the cancel request is withdrawn (the next call on the
same thread's context succeeds) and nothing was published.

Each case runs in a subprocess: a timer thread sends SIGINT to the process
one second into a call that would otherwise take far longer (minutes), and
the script prints how long the call ran before KeyboardInterrupt.
"""
import os
import subprocess
import sys

import pytest

PYDIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRELUDE = r'''
import os, signal, threading, time
import numpy as np
import effml
from effml import _core, _lib

def interrupt_after(seconds, call):
    before = signal.getsignal(signal.SIGINT)
    threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.time()
    try:
        call()
        print("NOT INTERRUPTED")
    except KeyboardInterrupt:
        print("interrupted after %.2f s" % (time.time() - t0))
    ctx = _core.thread_context()
    print("handler restored", signal.getsignal(signal.SIGINT) is before)
    print("cancel withdrawn", _lib.fn("effml_context_cancel_requested")(ctx.handle) == 0)
'''

CASES = {
    # kNN of 200 000 x 32 rows: about 1.3e12 flops
    "knn": r'''
from effml.neighbors import kneighbors
X = np.random.RandomState(0).rand(200000, 32)
interrupt_after(1.0, lambda: kneighbors(X, 5))
print("after", kneighbors(X[:50], 3).shape)
''',
    # SMOTE with a 120 000-row minority class (its kNN alone is ~5e11 flops)
    "smote": r'''
from effml.over_sampling import SMOTE
rng = np.random.RandomState(0)
y = np.r_[np.zeros(240000, np.int64), np.ones(120000, np.int64)]
X = rng.rand(len(y), 48)
res = []
interrupt_after(1.0, lambda: res.append(SMOTE(random_state=0).fit_resample(X, y)))
print("published", len(res))
Xs, ys = SMOTE(random_state=0).fit_resample(X[:300], y[:300] * 0 + (np.arange(300) < 60))
print("after", Xs.shape)
''',
    # Lewis weights for p = 3.99 (contraction 0.995 per iteration) to tol = 1e-300:
    # thousands of iterations, a cancellation point each
    "lewis": r'''
from effml.coreset import lewis_weights
A = np.random.RandomState(0).randn(200000, 16)
interrupt_after(1.0, lambda: lewis_weights(A, 3.99, max_iter=10**9, tol=1e-300))
print("after", round(float(lewis_weights(A[:500], 1.0).sum()), 6))
''',
    # a cascade of Python stages, each taking 0.8 s: the signal arrives in stage 1,
    # the run stops before stage 2
    "cascade": r'''
from effml.selective import Cascade
calls = []
def stage(i):
    def f(batch):
        calls.append(i)
        time.sleep(0.8)
        return np.zeros((len(batch), 3))
    return f
c = Cascade([stage(0), stage(1), stage(2), stage(3)], [1, 1, 1, 1], num_classes=3)
for s in range(3):
    c.set_exit_rule(s, "never")
interrupt_after(1.0, lambda: c.run(np.arange(10)))
print("stages called", calls)
print("after", c.run(np.arange(10))[2].tolist() == [3] * 10)
''',
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ctrl_c_stops_long_call(case):
    r = subprocess.run([sys.executable, "-c", PRELUDE + CASES[case]], capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PYTHONPATH=PYDIR))
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "interrupted after" in out, out + r.stderr
    t = float(out.split("interrupted after")[1].split()[0])
    assert 0.9 <= t < 30, out
    assert "handler restored True" in out, out
    assert "cancel withdrawn True" in out, out
    if case == "smote":
        assert "published 0" in out and "after (" in out, out
    if case == "knn":
        assert "after (50, 3)" in out, out
    if case == "lewis":
        assert "after 16.0" in out, out
    if case == "cascade":
        assert "stages called [0, 1]" in out and "after True" in out, out


def test_interruptible_is_inert_off_the_main_thread():
    """Off the main thread nothing is installed (Python delivers signals to the main thread)."""
    import signal
    import threading
    from effml import _core
    seen = []

    def body():
        ctx = _core.thread_context()
        with _core.interruptible(ctx) as it:
            seen.append(it._old is None and signal.getsignal(signal.SIGINT) is not it._on_sigint)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [True]


def test_interruptible_leaves_ignored_sigint_alone():
    import signal
    from effml import _core
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _core.interruptible(_core.thread_context()):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_user_handler_called_after_the_call():
    """A user's own SIGINT handler is called once the C call has stopped, not inside it."""
    code = PRELUDE + r'''
from effml.neighbors import kneighbors
got = []
signal.signal(signal.SIGINT, lambda s, f: got.append(s))
X = np.random.RandomState(0).rand(200000, 32)
threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
t0 = time.time()
try:
    kneighbors(X, 5)
    print("NOT STOPPED")
except __import__("effml.errors").errors.CancelledError as e:
    print("cancelled after %.2f s" % (time.time() - t0), got == [signal.SIGINT], "cancelled" in str(e))
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=PYDIR))
    assert "cancelled after" in r.stdout and r.stdout.strip().endswith("True True"), \
        r.stdout + r.stderr
