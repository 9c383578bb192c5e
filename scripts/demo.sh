#!/usr/bin/env bash
# scripts/demo.sh: install the dependencies, build libeffml, install it into
# build/prefix, build every program in examples/ against that install (Release, as
# a user would, with find_package(effml)) into build/examples/ and run the main
# example on Fashion-MNIST.
#   scripts/demo.sh [extra arguments for the example]
# Environment: EFFML_SKIP_APT=1, EFFML_JOBS, EFFML_DATA (default
# /usr/share/datasets/fashion-mnist), EFFML_DEMO (example to run),
# EFFML_OUT (pipeline output directory, default build/demo).
set -euo pipefail

# The main job: the end-to-end pipeline.
main_example=${EFFML_DEMO:-pipeline_fashion_mnist}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=${EFFML_JOBS:-$(nproc 2>/dev/null || echo 2)}
data=${EFFML_DATA:-/usr/share/datasets/fashion-mnist}
build=$root/build
prefix=$build/prefix

# shellcheck source=scripts/deps.sh
source "$root/scripts/deps.sh"
effml_install_deps

# Until the main example exists, run the smallest one there is.
if [ ! -f "$root/examples/$main_example.c" ]; then
  smallest=$(find "$root/examples" -maxdepth 1 -name '*.c' -printf '%s %f\n' | sort -n |
    head -n 1 | cut -d' ' -f2)
  if [ -z "$smallest" ]; then
    echo "demo: no examples/*.c yet" >&2
    exit 1
  fi
  echo "demo: examples/$main_example.c not there yet; running examples/$smallest" >&2
  main_example=${smallest%.c}
fi

echo "demo: configuring and building libeffml in $build (a minute or two)" >&2
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$jobs" >/dev/null
echo "demo: installing into $prefix, building examples/ against it" >&2
cmake --install "$build" --prefix "$prefix" >/dev/null
cmake -S "$root/examples" -B "$build/examples" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build/examples" -j "$jobs" >/dev/null
echo "demo: built every example (Release) in $build/examples against $prefix" >&2
out=${EFFML_OUT:-$build/demo}
if [ "$main_example" = pipeline_fashion_mnist ]; then
  mkdir -p "$out"
  echo "demo: results, CSV and plots go to $out" >&2
  "$build/examples/$main_example" --data "$data" --out "$out" "$@"
else
  "$build/examples/$main_example" --data "$data" "$@"
fi
