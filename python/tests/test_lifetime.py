"""Lifetime of the Python objects that keep C objects: every C object frees its memory
through the context it was made with, so that context must outlive it -- whatever order
the garbage collector finalizes a reference cycle in, and after the thread whose default
context made it has ended.  Crashes are checked in subprocesses (a segmentation fault is
then a failure, not the end of the run) with glibc's MALLOC_PERTURB_, which fills freed
memory so that a use after free reads garbage rather than the old values."""
import gc
import os
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest

from effml import _core, nn, peft
from effml.io import SafeTensors, load_safetensors
from effml.mixture import AliasSampler
from effml.selective import Cascade

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(ROOT, "tests", "data", "peft")


def run_py(code):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE), MALLOC_PERTURB_="165")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def test_context_close_waits_for_borrowers():
    ctx = _core.Context()
    h = ctx.handle
    ctx._borrow()
    ctx._borrow()
    ctx.close()  # two borrowers: postponed
    assert ctx.handle == h
    ctx._release()
    assert ctx.handle == h  # one left
    ctx._release()
    assert ctx.handle is None  # the last release did the close
    with pytest.raises(ValueError, match="closed"):
        ctx._borrow()
    c2 = _core.Context()
    c2._borrow()
    c2._release()
    assert c2.handle is not None  # no close asked: still open
    c2.close()
    assert c2.handle is None


def test_sequential_context_finalized_first_is_harmless():
    """The order the collector may pick in a cycle, made explicit: the model's context's
    finalizer runs before the model's.  It must leave the C context to the model, which
    is still usable and frees both, layers first."""
    m = nn.Sequential([nn.Dense(6, 5), nn.Activation("relu"), nn.Dense(5, 3)], seed=3)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)
    want = nn.predict(m, x)
    ctx = m._ctx
    ref = weakref.ref(ctx)
    ctx.__del__()
    assert ctx.handle is not None
    np.testing.assert_array_equal(nn.predict(m, x), want)
    del ctx
    p = m.params()["0.weight"]  # a view keeps the model (and so the context) alive
    del m
    gc.collect()
    assert ref() is not None and ref().handle is not None
    assert p.shape == (5, 6) and np.isfinite(p).all()
    del p
    gc.collect()
    assert ref() is None or ref().handle is None


def test_adapter_layer_context_finalized_first_is_harmless():
    ad = peft.load(os.path.join(DATA, "lora"))
    base = load_safetensors(os.path.join(DATA, "lora", "base.safetensors"))
    layer = ad.layer("q_proj", base["q_proj.weight"], base["q_proj.bias"])
    x = np.ones((2, layer.in_features), np.float32)
    want = layer.forward(x)
    layer._ctx.__del__()
    assert layer._ctx.handle is not None
    np.testing.assert_array_equal(layer.forward(x), want)
    ctx = layer._ctx
    layer.close()
    assert ctx.handle is None


def test_objects_outlive_the_thread_that_made_them():
    """Made in a thread with that thread's default context, used and freed after the
    thread has ended (its local storage, and with it the context, dropped)."""
    made = {}
    for kind in ("adapter", "safetensors", "alias", "cascade"):  # each alone keeps it
        box = {}

        def one():
            box["ctx"] = weakref.ref(_core.thread_context())
            box["obj"] = {"adapter": lambda: peft.load(os.path.join(DATA, "lora")),
                          "safetensors": lambda: SafeTensors(os.path.join(DATA, "lora",
                                                                          "base.safetensors")),
                          "alias": lambda: AliasSampler([1.0, 2.0], seed=1),
                          "cascade": lambda: Cascade([np.eye(2, dtype=np.float32)], [1.0])}[kind]()
        t = threading.Thread(target=one)
        t.start()
        t.join()
        gc.collect()
        assert box["ctx"]() is not None and box["ctx"]().handle is not None, kind
        del box["obj"]
        gc.collect()
        assert box["ctx"]() is None or box["ctx"]().handle is None, kind

    def work():
        made["ctx"] = weakref.ref(_core.thread_context())
        made["ad"] = peft.load(os.path.join(DATA, "lora"))
        made["st"] = SafeTensors(os.path.join(DATA, "lora", "base.safetensors"), mmap=False)
        made["alias"] = AliasSampler([1.0, 2.0, 3.0], seed=1)
        made["casc"] = Cascade([np.eye(3, dtype=np.float32) * 4, np.eye(3, dtype=np.float32)],
                               [1.0, 2.0])
    t = threading.Thread(target=work)
    t.start()
    t.join()
    gc.collect()
    ctx = made["ctx"]()
    assert ctx is not None and ctx.handle is not None  # kept by its borrowers
    base = load_safetensors(os.path.join(DATA, "lora", "base.safetensors"))
    ref = load_safetensors(os.path.join(DATA, "lora", "merged.safetensors"))
    w, _ = made["ad"].merge("q_proj", base["q_proj.weight"])
    assert np.max(np.abs(w - ref["q_proj.weight"])) < 1e-5
    np.testing.assert_array_equal(made["st"]["q_proj.bias"], base["q_proj.bias"])
    assert made["alias"].draw(5).shape == (5,)
    pred, _, stage = made["casc"].run(np.zeros((3, 1)))
    np.testing.assert_array_equal(pred, [0, 1, 2])
    made["ad"].close()
    del made["ad"], made["st"], made["alias"], made["casc"], ctx
    gc.collect()
    assert made["ctx"]() is None or made["ctx"]().handle is None  # freed with the last one


def test_objects_in_cycles_with_deleted_parents_are_collected():
    """Every kind of object keeping a C object, left in reference cycles with the objects
    it came from deleted first, collected in one pass (finalizers in the collector's
    order), many times over; and the same after their thread has ended."""
    code = """if True:
        import gc, threading
        import numpy as np
        from effml import nn, peft
        from effml.io import SafeTensors, load_safetensors
        from effml.mixture import AliasSampler
        from effml.selective import Cascade
        gc.disable()
        class Cycle:
            pass
        D = "tests/data/peft/"
        def make(k):
            c = Cycle()
            c.self = c
            c.m = nn.Sequential([nn.Dense(4, 3), nn.Activation("tanh"), nn.Dense(3, 2)], seed=k)
            c.p = c.m.params()["0.weight"]
            c.m.back = c
            ad = peft.load(D + "lora")
            base = load_safetensors(D + "lora/base.safetensors")
            c.layer = ad.layer("q_proj", base["q_proj.weight"], base["q_proj.bias"])
            c.layer.forward(np.ones((2, c.layer.in_features), np.float32), train=True)
            c.ad = ad
            ad.back = c
            c.st = SafeTensors(D + "lora/base.safetensors")
            c.arr = c.st["q_proj.weight"]
            c.alias = AliasSampler([1.0, 1.0], seed=k)
            c.alias.back = c
            c.casc = Cascade([np.eye(2, dtype=np.float32), lambda X: np.ones((len(X), 2))],
                             [1.0, 2.0])
            c.casc.back = c
            return c
        n = 0
        for k in range(40):
            c = make(k)
            del c
            n += gc.collect()
            box = []
            t = threading.Thread(target=lambda: box.append(make(k)))
            t.start()
            t.join()
            del box[:]
            n += gc.collect()
        print("collected", n > 0)
    """
    r = run_py(code)
    assert (r.returncode, r.stdout) == (0, "collected True\n"), r.stderr[-3000:]


def test_peft_adapter_closed_after_its_thread_ended():
    """The crash this guards against: an adapter opened in a thread, closed after the
    thread ended, freed its memory through the thread's freed context."""
    code = """if True:
        import gc, threading
        from effml import peft
        box = {}
        for _ in range(20):
            t = threading.Thread(target=lambda: box.update(ad=peft.load("tests/data/peft/lokr")))
            t.start()
            t.join()
            gc.collect()
            box.pop("ad").close()
        print("ok")
    """
    r = run_py(code)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr[-3000:]
