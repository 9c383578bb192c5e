#!/usr/bin/env bash
# scripts/bench.sh [area]: Release build (-DEFFML_NATIVE=OFF, no tests) in
# build-bench/, then for each area (or the one given) run
# build-bench/bench/bench_<area> and, if present,
# /usr/bin/python3 bench/<area>_baseline.py.  The area `python` builds only
# the shared library and runs bench/python/bench_python.py against it
# (EFFML_LIBRARY=build-bench/lib/libeffml.so.0): the Python package vs
# imbalanced-learn, interleaved in one process, and the per-call overhead;
# then bench/python/bench_dask.py (effml.dask quality and scaling).
#
# stdout carries only the benchmarks' JSON lines, one object per line with
# keys bench, case, ours_s, baseline, baseline_s, speedup (= baseline_s /
# ours_s) plus case-specific keys; build logs and notes go to stderr, so
#   scripts/bench.sh sparse > sparse.jsonl
# keeps a clean record.  Threads are the caller's: set OPENBLAS_NUM_THREADS
# (and OMP_NUM_THREADS for the Python side) to compare like with like; both
# default to 2 (the CI machine's cores) so every area measures ours and its
# baseline at the same thread count.
# EFFML_BENCH_ARGS is passed to every bench program.
#
# Where ours and the baseline run in different processes (an area with a
# bench/<area>_baseline.py), the C program and the Python baseline alternate
# EFFML_BENCH_ROUNDS times (default 3); bench/combine.py then pools the
# rounds' repetitions into one line per case (min / median / max).  C-only
# areas interleave ours and the baseline inside one process and run once.
# EFFML_BENCH_RECORD=1 also appends the pooled lines to
# bench/results/<UTC date>.jsonl, the file the docs' tables are rendered from,
# and re-renders those tables (scripts/bench-docs.py; the bench_docs test
# checks they match the results files).
set -euo pipefail
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$OPENBLAS_NUM_THREADS}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${EFFML_BENCH_BUILD:-$root/build-bench}
jobs=${EFFML_JOBS:-$(nproc 2>/dev/null || echo 2)}
read -r -a bench_args <<<"${EFFML_BENCH_ARGS:-}"

if [ $# -gt 0 ]; then
  areas=("$@")
else
  areas=()
  for f in "$root"/bench/bench_*.c; do
    [ -e "$f" ] || continue
    f=$(basename "$f" .c)
    areas+=("${f#bench_}")
  done
  [ -f "$root/bench/python/bench_python.py" ] && areas+=(python)
fi
if [ "${#areas[@]}" -eq 0 ]; then
  echo "bench: no bench/bench_*.c yet" >&2
  exit 0
fi
targets=()
for a in "${areas[@]}"; do
  if [ "$a" = python ]; then
    targets+=(effml)
    continue
  fi
  targets+=("bench_$a")
  if [ ! -f "$root/bench/bench_$a.c" ]; then
    echo "bench: no bench/bench_$a.c" >&2
    exit 2
  fi
done

{
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DEFFML_NATIVE=OFF \
    -DEFFML_SANITIZE= -DEFFML_BUILD_TESTS=OFF -DEFFML_BUILD_BENCH=ON
  cmake --build "$build" -j "$jobs" --target "${targets[@]}"
} >&2

rounds=${EFFML_BENCH_ROUNDS:-3}
record=${EFFML_BENCH_RECORD:-0}
results=$root/bench/results/$(date -u +%F).jsonl
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
status=0
for a in "${areas[@]}"; do
  echo "bench: $a" >&2
  : >"$raw"
  if [ "$a" = python ]; then
    (cd "$root" && EFFML_LIBRARY="$build/lib/libeffml.so.0" \
      /usr/bin/python3 bench/python/bench_python.py "${bench_args[@]}") >>"$raw" || status=1
    (cd "$root" && EFFML_LIBRARY="$build/lib/libeffml.so.0" \
      /usr/bin/python3 bench/python/bench_dask.py "${bench_args[@]}") >>"$raw" || status=1
    cat "$raw"
    if [ "$record" = 1 ]; then
      mkdir -p "$root/bench/results"
      cat "$raw" >>"$results"
    fi
    continue
  fi
  n=1
  if [ -f "$root/bench/${a}_baseline.py" ] && [ -x /usr/bin/python3 ]; then n=$rounds; fi
  for ((r = 1; r <= n; ++r)); do
    [ "$n" -gt 1 ] && echo "bench: $a round $r/$n" >&2
    "$build/bench/bench_$a" "${bench_args[@]}" >>"$raw" || status=1
    if [ -f "$root/bench/${a}_baseline.py" ]; then
      if [ -x /usr/bin/python3 ]; then
        (cd "$root" && /usr/bin/python3 "bench/${a}_baseline.py") >>"$raw" || status=1
      else
        echo "bench: /usr/bin/python3 missing: baseline for $a skipped" >&2
      fi
    fi
  done
  if [ -x /usr/bin/python3 ]; then
    out=$(/usr/bin/python3 "$root/bench/combine.py" <"$raw") || status=1
  else
    out=$(cat "$raw")
  fi
  printf '%s\n' "$out"
  if [ "$record" = 1 ]; then
    mkdir -p "$root/bench/results"
    printf '%s\n' "$out" >>"$results"
  fi
done
if [ "$record" = 1 ] && [ -x /usr/bin/python3 ]; then
  /usr/bin/python3 "$root/scripts/bench-docs.py" || status=1
fi
exit "$status"
