"""Ctrl-C during long C calls: a real SIGINT stops the call through the
context's cancel flag and raises KeyboardInterrupt; afterwards the previous
SIGINT handler is back, the cancel request is withdrawn (the next call on the
same thread's context succeeds) and nothing was published.

Each case runs in a subprocess.  The SIGINT is sent to the process from the
call's own first progress report (a cancellation point, documented per call in
docs/conventions.md: a round of query blocks for kNN, an iteration for Lewis
weights, a stage for a cascade), so it arrives while the C call runs, on any
machine however fast: a timer of a fixed number of seconds depended on the
data being large enough for this machine.  The call must then stop at that
same report (the handler runs there, before the callback answers C), which is
what the script prints, next to how many reports the whole call would make,
derived from the data sizes and the documented interval.
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

_reports = []
_on_progress = _core.interruptible._on_progress

def _kill_at_first_report(self, ud, call, done, total):
    _reports.append(done)
    if len(_reports) == 1:  # a real SIGINT, delivered while the C call runs
        os.kill(os.getpid(), signal.SIGINT)
    return _on_progress(self, ud, call, done, total)

_core.interruptible._on_progress = _kill_at_first_report

def interrupt_after(_unused, call):
    before = signal.getsignal(signal.SIGINT)
    del _reports[:]
    try:
        call()
        print("NOT INTERRUPTED")
    except KeyboardInterrupt:
        print("interrupted at report %d" % len(_reports))
    ctx = _core.thread_context()
    print("handler restored", signal.getsignal(signal.SIGINT) is before)
    print("cancel withdrawn", _lib.fn("effml_context_cancel_requested")(ctx.handle) == 0)
'''

CASES = {
    # kNN of 20 000 x 32 rows: rounds of 8 blocks of 256 query rows (one thread): 10 reports
    "knn": r'''
from effml.neighbors import kneighbors
X = np.random.RandomState(0).rand(20000, 32)
print("reports in all", -(-(-(-20000 // 256)) // 8))
interrupt_after(1.0, lambda: kneighbors(X, 5))
print("after", kneighbors(X[:50], 3).shape)
_core.interruptible._on_progress = lambda self, ud, call, done, total: _reports.append(done) or 0
del _reports[:]
kneighbors(X, 5)  # uninterrupted: the reports it makes
print("reports counted", len(_reports))
''',
    # SMOTE with a 12 000-row minority class: its within-class kNN polls between rounds of at
    # least 2^27 multiply-adds (12 000^2 x 48 / 2^27: several), then one report per 65 536
    # output rows
    "smote": r'''
from effml.over_sampling import SMOTE
rng = np.random.RandomState(0)
y = np.r_[np.zeros(24000, np.int64), np.ones(12000, np.int64)]
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
A = np.random.RandomState(0).randn(20000, 16)
interrupt_after(1.0, lambda: lewis_weights(A, 3.99, max_iter=10**9, tol=1e-300))
print("after", round(float(lewis_weights(A[:500], 1.0).sum()), 6))
''',
    # a cascade of Python stages: one report before each stage (4), the signal sent at the
    # first, so the run stops before stage 0 computes anything
    "cascade": r'''
print("reports in all", 4)
from effml.selective import Cascade
calls = []
def stage(i):
    def f(batch):
        calls.append(i)
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
    # stopped at the report the signal arrived in, the first of several
    assert "interrupted at report 1\n" in out, out + r.stderr
    if case in ("knn", "cascade"):  # the count the sizes and the interval give: more than 1
        assert "reports in all %d\n" % {"knn": 10, "cascade": 4}[case] in out, out
    assert "handler restored True" in out, out
    assert "cancel withdrawn True" in out, out
    if case == "smote":
        assert "published 0" in out and "after (" in out, out
    if case == "knn":
        assert "after (50, 3)" in out and "reports counted 10\n" in out, out
    if case == "lewis":
        assert "after 16.0" in out, out
    if case == "cascade":
        assert "stages called []" in out and "after True" in out, out


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
X = np.random.RandomState(0).rand(20000, 32)
try:
    kneighbors(X, 5)
    print("NOT STOPPED")
except __import__("effml.errors").errors.CancelledError as e:
    print("cancelled at report %d" % len(_reports), got == [signal.SIGINT], "cancelled" in str(e))
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=PYDIR))
    assert r.stdout.strip() == "cancelled at report 1 True True", r.stdout + r.stderr
