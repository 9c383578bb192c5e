#!/usr/bin/python3
"""Render the benchmark tables in README.md and docs/*.md from the committed
results files bench/results/<date>.jsonl (written by
EFFML_BENCH_RECORD=1 scripts/bench.sh).

A table lives between two markers:

    <!-- bench-table AREA: CASE[@THREADS] CASE ... -->
    ... (generated: do not edit) ...
    <!-- /bench-table -->

`AREA/memory` instead of `AREA` renders the cases' memory figures instead of
their timings: rows out, the library's peak allocation during the call
(lib_peak_mb: the context allocator hook, outputs included), the output's
size (output_mb) and their ratio (peak_over_output), from the same lines.

Each CASE is the latest line of that bench area and case (and thread count,
when @THREADS is given) over all results files, read in this order: files
not named by a date (older per-area records such as adapter_dora.jsonl)
first, then the dated files in file-name (date) order (a file named
<date>-<label>.jsonl sorts before <date>.jsonl: use it for a run of the code
before a change, or an earlier run of the same day, kept for comparison).
So a full scripts/bench.sh run, which writes bench/results/<date>.jsonl,
always supersedes the per-area records.  The table gives min / median / max of ours and the baseline, the
spread (max / min of ours: how much the figure varies between repetitions
on that run), the speedup (baseline / ours median; for a *_vs_floor case
floor / ours) and, under the table, the results file and the machine line of
the run the figures come from (CPU, ISA, threads, OpenBLAS, copy bandwidths,
load average).

Usage: scripts/bench-docs.py [--check] [files...]
  --check  rewrite nothing; exit 1 and name each table that differs from what
           the results give (a test runs this).
Default files: README.md and docs/*.md under the repository root."""
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = re.compile(r"<!-- bench-table ([a-z0-9_]+)(/memory)?:((?: [A-Za-z0-9_@]+)+) -->")
END = "<!-- /bench-table -->"


def load_results():
    latest, machine = {}, {}
    paths = glob.glob(os.path.join(ROOT, "bench", "results", "*.jsonl"))
    dated = re.compile(r"\d{4}-\d{2}-\d{2}")
    paths.sort(key=lambda q: (dated.match(os.path.basename(q)) is not None, os.path.basename(q)))
    for path in paths:
        rel = os.path.relpath(path, ROOT)
        with open(path) as f:
            for n, raw in enumerate(f, 1):
                raw = raw.strip()
                if not raw:
                    continue
                line = json.loads(raw)
                line["_file"] = rel
                bench, case = line.get("bench"), line.get("case")
                if case == "machine":
                    machine[(rel, bench)] = line
                    continue
                latest[(bench, case, None)] = line
                if line.get("threads") is not None:
                    latest[(bench, case, int(line["threads"]))] = line
    return latest, machine


def fmt_s(v):
    if v is None:
        return "—"
    v = float(v)
    if v >= 1:
        return f"{v:.2f} s"
    if v >= 1e-3:
        return f"{v * 1e3:.3g} ms"
    return f"{v * 1e6:.3g} µs"


def triple(line, key):
    m = line.get(key + "_s")
    if m is None:
        return "—"
    lo, hi = line.get(key + "_min"), line.get(key + "_max")
    if lo is None or hi is None:
        return fmt_s(m)
    return f"{fmt_s(m)} ({fmt_s(lo)} – {fmt_s(hi)})"


def machine_text(m):
    load = m.get("loadavg") or []
    loads = ", ".join(f"{v:.1f}" for v in load) if load else "?"
    return (f"{m.get('cpu')} ({m.get('cpus')} CPUs), ISA {m.get('isa')}, "
            f"{m.get('threads')} library threads, {m.get('openblas', '').split(' NO_')[0]} "
            f"core {m.get('openblas_core')} ({m.get('openblas_threads')} threads), "
            f"copy {m.get('copy_gbs_warm')} GB/s warm / {m.get('copy_gbs_fresh')} GB/s fresh, "
            f"load average {loads}")


def run_notes(files, area, machine):
    notes = []
    for f in files:
        m = machine.get((f, area))
        notes.append(f"Run {os.path.basename(f)[:-6]}: `{f}`" + (f"; machine: {machine_text(m)}." if m else "."))
    return notes


def fmt_mb(v):
    return "—" if v is None else f"{float(v):.2f}"


def render_memory(area, cases, latest, machine):
    rows = ["| case | threads | rows out | library peak (MiB) | output x + y (MiB) | peak / output | run |",
            "|---|---|---|---|---|---|---|"]
    files = []
    for spec in cases:
        case, _, thr = spec.partition("@")
        line = latest.get((area, case, int(thr) if thr else None))
        if line is None or line.get("lib_peak_mb") is None:
            rows.append(f"| `{case}` | {thr or '—'} | no memory figure recorded | | | | |")
            continue
        if line["_file"] not in files:
            files.append(line["_file"])
        peak, out = line.get("lib_peak_mb"), line.get("output_mb")
        ratio = line.get("peak_over_output")
        if ratio is None and peak is not None and out:
            ratio = float(peak) / float(out)
        ratio = f"**{ratio:.2f}**" if ratio is not None else "—"
        rows.append(f"| `{case}` | {line.get('threads', '—')} | {line.get('rows_out', '—')} | "
                    f"{fmt_mb(peak)} | {fmt_mb(out)} | {ratio} | {os.path.basename(line['_file'])[:-6]} |")
    return "\n".join(rows) + "\n\n" + "\n".join(run_notes(files, area, machine)) + "\n"


def render(area, cases, latest, machine):
    rows = ["| case | threads | ours: median (min – max) | baseline | baseline: median (min – max) "
            "| spread of ours (max/min) | speedup | run |",
            "|---|---|---|---|---|---|---|---|"]
    files = []
    for spec in cases:
        case, _, thr = spec.partition("@")
        key = (area, case, int(thr) if thr else None)
        line = latest.get(key)
        if line is None:
            rows.append(f"| `{case}` | {thr or '—'} | no result recorded | | | | | |")
            continue
        if line["_file"] not in files:
            files.append(line["_file"])
        lo, hi = line.get("ours_min"), line.get("ours_max")
        spread = f"{hi / lo:.2f}×" if lo and hi else "—"
        sp = line.get("speedup")
        sp = f"**{sp:.2f}**" if isinstance(sp, (int, float)) else "—"
        rows.append(f"| `{case}` | {line.get('threads', '—')} | {triple(line, 'ours')} | "
                    f"{line.get('baseline', '—')} | {triple(line, 'baseline')} | {spread} | {sp} | "
                    f"{os.path.basename(line['_file'])[:-6]} |")
    return "\n".join(rows) + "\n\n" + "\n".join(run_notes(files, area, machine)) + "\n"


def process(path, latest, machine, check):
    with open(path) as f:
        text = f.read()
    out, pos, bad = [], 0, []
    for m in BEGIN.finditer(text):
        if m.start() < pos:
            continue
        end = text.find(END, m.end())
        if end < 0:
            raise SystemExit(f"bench-docs: {path}: bench-table without {END}")
        fn = render_memory if m.group(2) else render
        body = "\n" + fn(m.group(1), m.group(3).split(), latest, machine)
        if text[m.end():end] != body:
            bad.append(m.group(0))
        out.append(text[pos:m.end()])
        out.append(body)
        pos = end
    out.append(text[pos:])
    new = "".join(out)
    if check:
        for b in bad:
            print(f"bench-docs: {os.path.relpath(path, ROOT)}: table {b} differs from bench/results; "
                  f"run scripts/bench-docs.py", file=sys.stderr)
        return not bad
    if new != text:
        with open(path, "w") as f:
            f.write(new)
    return True


def main():
    args = sys.argv[1:]
    check = "--check" in args
    files = [a for a in args if a != "--check"]
    if not files:
        files = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    latest, machine = load_results()
    ok = all([process(p, latest, machine, check) for p in files])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
