"""Runs the example of docs/python.md, "Weighted losses and calibration", and checks
that what it prints is what the docs show under it."""
import contextlib
import io
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _block():
    doc = open(os.path.join(ROOT, "docs", "python.md")).read()
    sec = doc.split("## Weighted losses and calibration", 1)[1].split("\n## ", 1)[0]
    return sec.split("```python\n", 1)[1].split("```", 1)[0]


def test_docs_calibration_example_runs_and_prints_what_the_docs_show():
    pytest.importorskip("sklearn")
    code = _block()
    shown = [l[2:] for l in code.splitlines() if l.startswith("# ") and
             (l.startswith("# [") or "ECE" in l)]
    buf = io.StringIO()
    ns = {"__name__": "docs_example"}
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "docs/python.md", "exec"), ns)
    printed = buf.getvalue().splitlines()
    # same lines and labels; numbers to within 2e-3 (BLAS kernels differ between CPUs)
    num = re.compile(r"-?\d+\.\d+")
    assert [num.sub("#", l) for l in printed] == [num.sub("#", l) for l in shown]
    for a, b in zip(printed, shown):
        for x, y in zip(num.findall(a), num.findall(b)):
            assert abs(float(x) - float(y)) <= 2e-3, (a, b)
    # and what it claims: temperature scaling lowers ECE and keeps the ranking quality
    ece = {m.group(1): float(m.group(2)) for m in
           (re.match(r"(\S+)\s+ECE ([0-9.]+)", l) for l in printed[1:]) if m}
    assert ece["temperature"] < ece["uncalibrated"] / 2
    assert ece["correctness-aware"] < ece["uncalibrated"]
    assert abs(ns["ts"].temperature_ - 1) > 0.1  # here < 1: balanced weights left it underconfident
