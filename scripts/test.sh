#!/usr/bin/env bash
# scripts/test.sh: the whole test suite, three times.
#
# On a fresh Debian 12 machine (as root, with nothing but this repository) it
# installs every dependency with apt-get (skipped when not root or when
# EFFML_SKIP_APT=1), then configures, builds and runs all of CTest:
#   build/        gcc, RelWithDebInfo, warnings as errors (-DEFFML_WERROR=ON),
#                 then the Python package's pytest suite (python/tests, with
#                 /usr/bin/python3 and EFFML_LIBRARY=build/lib/libeffml.so.0:
#                 nothing is installed)
#   build-clang/  clang, RelWithDebInfo, warnings as errors, no benchmarks
#   build-asan/   gcc under AddressSanitizer + UndefinedBehaviorSanitizer
#                 (-DEFFML_SANITIZE=address,undefined), no benchmarks
# Exits non-zero if any build or test fails (pytest collecting no test counts
# as a failure).  Ends with one line "total: N passed, M failed" (CTest tests
# plus pytest tests).
#
# Environment: EFFML_SKIP_APT=1 (no apt-get), EFFML_JOBS (default: nproc),
# EFFML_CTEST_ARGS (extra ctest arguments, e.g. "-R core"),
# EFFML_PYTEST_ARGS (extra pytest arguments, e.g. "-k smote"),
# EFFML_CLANG (default: clang; empty skips the clang suite).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=${EFFML_JOBS:-$(nproc 2>/dev/null || echo 2)}
read -r -a ctest_extra <<<"${EFFML_CTEST_ARGS:-}"
t0=$(date +%s)

# shellcheck source=scripts/deps.sh
source "$root/scripts/deps.sh"
effml_install_deps

passed=0 failed=0 status=0
summary=()

# run_suite NAME BUILD_DIR [cmake args...]: configure, build, ctest.
run_suite() {
  local name=$1 dir=$2 t log rc
  shift 2
  t=$(date +%s)
  echo "==== $name: configure and build in $dir"
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
  cmake --build "$dir" -j "$jobs"
  echo "==== $name: ctest"
  log=$dir/ctest-summary.log
  set +e
  ctest --test-dir "$dir" -j "$jobs" --output-on-failure "${ctest_extra[@]}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  # "100% tests passed, 0 tests failed out of 42"
  local line p f n
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
  if [ -n "$line" ]; then
    f=$(sed -E 's/.*passed, ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    n=$(sed -E 's/.*failed out of ([0-9]+).*/\1/' <<<"$line")
    p=$((n - f))
  else
    p=0 f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  [ "$rc" -eq 0 ] || status=1
  summary+=("$name: $p passed, $f failed ($(($(date +%s) - t)) s)")
}

run_suite plain "$root/build" -DEFFML_WERROR=ON

clang_cc=${EFFML_CLANG-clang}
if [ -n "$clang_cc" ]; then
  if command -v "$clang_cc" >/dev/null 2>&1; then
    run_suite clang "$root/build-clang" -DCMAKE_C_COMPILER="$clang_cc" -DEFFML_WERROR=ON \
      -DEFFML_BUILD_BENCH=OFF
  else
    echo "==== clang: '$clang_cc' not found" >&2
    failed=$((failed + 1))
    status=1
    summary+=("clang: compiler '$clang_cc' not found")
  fi
fi

# run_pytest: python/tests against the plain build's library (no install).
run_pytest() {
  local t log rc p f e line
  t=$(date +%s)
  log=$root/build/pytest-summary.log
  echo "==== python: pytest python/tests (EFFML_LIBRARY=$root/build/lib/libeffml.so.0)"
  read -r -a pytest_extra <<<"${EFFML_PYTEST_ARGS:-}"
  set +e
  (cd "$root" && EFFML_LIBRARY="$root/build/lib/libeffml.so.0" PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 -m pytest python/tests -q -p no:cacheprovider --timeout=600 \
    "${pytest_extra[@]}") 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  # last line, e.g. "41 passed, 1 failed, 2 skipped in 3.21s"
  line=$(grep -E '[0-9]+ (passed|failed|error)' "$log" | tail -n 1 || true)
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  f=$((f + e))
  if [ "$rc" -eq 5 ]; then
    echo "python: pytest collected no tests" >&2
    f=$((f + 1))
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "python: pytest exited with $rc" >&2
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  [ "$rc" -eq 0 ] || status=1
  summary+=("python: $p passed, $f failed ($(($(date +%s) - t)) s)")
}
run_pytest

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
run_suite sanitized "$root/build-asan" -DEFFML_SANITIZE=address,undefined -DEFFML_BUILD_BENCH=OFF

echo "==== summary ($(($(date +%s) - t0)) s wall, $jobs jobs)"
printf '%s\n' "${summary[@]}"
echo "total: $passed passed, $failed failed"
exit "$status"
