#!/usr/bin/env bash
# Regenerate the committed ABI baseline abi/libeffml.abi from a fresh build.
#   scripts/abi-baseline.sh [--head] [build dir]
# --head builds the last commit (git archive HEAD, unpacked in
# build-abi-head/src) instead of the working tree, so nobody's unfinished changes get
# into the baseline.  Default build dir: build-abi/ (RelWithDebInfo, no
# sanitizers, no tests).
# Policy (docs/ABI.md): the baseline changes only in a commit that says why the
# ABI changed -- at a release, when a new ABI major starts, when an option
# struct grows at its end, or (during 0.x development) when still-unreleased
# API is reshaped.  Never regenerate it just to silence the `abi` test.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=$(nproc 2>/dev/null || echo 2)
src=$root
if [ "${1:-}" = --head ]; then
  shift
  src=$root/build-abi-head/src # a fixed path: the baseline records source paths
  rm -rf "$src"
  mkdir -p "$src"
  git -C "$root" archive HEAD | tar -x -C "$src"
  echo "building HEAD ($(git -C "$root" rev-parse --short HEAD)) in $src"
fi
build=${1:-$src/build-abi}

# Debug info is what abidw reads: RelWithDebInfo, no sanitizers.
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEFFML_SANITIZE= \
  -DEFFML_BUILD_TESTS=OFF -DEFFML_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target effml -j "$jobs"
so=$(find "$build/lib" -maxdepth 1 -name 'libeffml.so.*.*.*' | head -n 1)
if [ -z "$so" ]; then
  echo "FAIL: no libeffml.so.X.Y.Z under $build/lib" >&2
  exit 1
fi
mkdir -p "$root/abi"
abidw --headers-dir "$src/include" --no-corpus-path --no-comp-dir-path \
  --out-file "$root/abi/libeffml.abi" "$so"
echo "wrote $root/abi/libeffml.abi from $so"
echo "functions: $(grep -c '<elf-symbol name=' "$root/abi/libeffml.abi")"
"$root/scripts/abi-check.sh" "$so" "$root/abi/libeffml.abi" "$src/include"
