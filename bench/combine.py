#!/usr/bin/python3
"""Pool the JSON lines of several benchmark rounds (scripts/bench.sh runs each
area's C program and its Python baseline alternately, EFFML_BENCH_ROUNDS
times) into one line per case.

Lines are grouped by (bench, case, threads).  Raw repetitions (ours_runs,
baseline_runs; a line without them counts its ours_s / baseline_s as one
run) are concatenated over the rounds, and ours_s / baseline_s become the
medians with *_min / *_max beside them; speedup = median(baseline) /
median(ours) (for a *_vs_floor case: floor / ours).  Other keys come from the
group's last line; "rounds" says how many lines were pooled.  Machine lines
(case "machine") keep the first line's fields and list every round's copy
bandwidths and load averages.  Reads stdin, writes stdout, order of first
appearance."""
import json
import statistics
import sys


def runs(line, key):
    r = line.get(key + "_runs")
    if isinstance(r, list) and r:
        return [float(v) for v in r]
    v = line.get(key + "_s")
    return [float(v)] if isinstance(v, (int, float)) else []


def main():
    groups, order = {}, []
    for raw in sys.stdin:
        raw = raw.strip()
        if not raw.startswith("{"):
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            print(f"combine: skipped a line that is not JSON: {raw[:80]}", file=sys.stderr)
            continue
        key = (line.get("bench"), line.get("case"), line.get("threads"))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(line)
    for key in order:
        lines = groups[key]
        out = dict(lines[-1])
        if key[1] == "machine":
            out = dict(lines[0])
            for k in ("copy_gbs_warm", "copy_gbs_fresh"):
                out[k + "_rounds"] = [ln.get(k) for ln in lines]
            out["loadavg_rounds"] = [ln.get("loadavg") for ln in lines]
            out["rounds"] = len(lines)
            print(json.dumps(out), flush=True)
            continue
        o = [v for ln in lines for v in runs(ln, "ours")]
        b = [v for ln in lines for v in runs(ln, "baseline")]
        if o:
            out.update(ours_s=statistics.median(o), ours_min=min(o), ours_max=max(o), ours_runs=o)
        if b:
            out.update(baseline_s=statistics.median(b), baseline_min=min(b), baseline_max=max(b),
                       baseline_runs=b)
        if o and b and out["ours_s"] > 0:
            out["speedup"] = out["baseline_s"] / out["ours_s"]
        out["reps"] = len(o)
        out["rounds"] = len(lines)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
