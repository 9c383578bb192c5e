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

status=0
for a in "${areas[@]}"; do
  echo "bench: $a" >&2
  if [ "$a" = python ]; then
    (cd "$root" && EFFML_LIBRARY="$build/lib/libeffml.so.0" \
      /usr/bin/python3 bench/python/bench_python.py "${bench_args[@]}") || status=1
    (cd "$root" && EFFML_LIBRARY="$build/lib/libeffml.so.0" \
      /usr/bin/python3 bench/python/bench_dask.py "${bench_args[@]}") || status=1
    continue
  fi
  "$build/bench/bench_$a" "${bench_args[@]}" || status=1
  if [ -f "$root/bench/${a}_baseline.py" ]; then
    if [ -x /usr/bin/python3 ]; then
      (cd "$root" && /usr/bin/python3 "bench/${a}_baseline.py") || status=1
    else
      echo "bench: /usr/bin/python3 missing: baseline for $a skipped" >&2
    fi
  fi
done
exit "$status"
