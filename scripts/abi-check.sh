#!/usr/bin/env bash
# ABI gate (CTest `abi`): compare a freshly built libeffml.so with the
# committed baseline abi/libeffml.abi using libabigail.
#   scripts/abi-check.sh <libeffml.so> [baseline.abi] [include dir]
# Fails on any non-zero abidiff status: a removed or changed function, a
# changed type reachable from the API.  Added symbols are fine
# (--no-added-syms): within one ABI major the ABI only grows (docs/ABI.md).
# Both --headers-dir options point at the include directory the library was
# compiled with, so types are judged public or private from the real headers.
# Exit 77 (CTest "skipped") when abidiff is not installed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
so=${1:?usage: abi-check.sh LIBEFFML_SO [BASELINE] [INCLUDE_DIR]}
baseline=${2:-$root/abi/libeffml.abi}
incdir=${3:-$root/include}

if ! command -v abidiff >/dev/null 2>&1; then
  echo "abidiff not found (Debian: apt-get install abigail-tools): ABI gate skipped" >&2
  exit 77
fi
if [ ! -f "$baseline" ]; then
  echo "FAIL: no ABI baseline at $baseline (make one with scripts/abi-baseline.sh)" >&2
  exit 1
fi

set +e
abidiff --no-added-syms --headers-dir1 "$incdir" --headers-dir2 "$incdir" "$baseline" "$so"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  # abidiff's status is a bit field: 1 error, 2 usage, 4 ABI change, 8 incompatible change.
  echo "FAIL: abidiff status $rc against $baseline." >&2
  echo "If the change is intended (a new ABI major, or a change of still-unreleased API)," >&2
  echo "regenerate the baseline with scripts/abi-baseline.sh in a commit that says why." >&2
  exit 1
fi
echo "ABI OK: no removed or changed interfaces against $(basename "$baseline")"
