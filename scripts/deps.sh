#!/usr/bin/env bash
# Debian 12 packages that build, test, fuzz, document and demo libeffml.
# Sourced by scripts/test.sh and scripts/demo.sh; run alone it installs them.
# apt-get is skipped when not root or when EFFML_SKIP_APT=1 (then the list is
# printed for whoever installs them), and when every package is present.
# C tests never need Python: python3 is for the optional reference scripts
# (tests/ref/*.py), the bench baselines and the Python package (python/),
# whose pytest suite scripts/test.sh runs after CTest.

EFFML_DEPS=(
  build-essential cmake pkg-config          # C11 compiler, g++ for header_cxx, CMake >= 3.20
  libopenblas-dev liblapacke-dev            # BLAS/LAPACK (openblas.pc, lapacke.h)
  check libsubunit-dev                      # Check unit tests (check.pc needs subunit)
  libcjson-dev zlib1g-dev                   # safetensors JSON headers; gzipped IDX files
  abigail-tools                             # abidw/abidiff: the `abi` test
  binutils file shellcheck                  # nm for `symbols`; the `shellcheck` test
  clang libclang-rt-14-dev                  # second compiler in test.sh; libFuzzer targets
  doxygen                                   # cmake --build build --target docs
  gnuplot-nox                               # plots in examples/benchmarks
  dataset-fashion-mnist                     # /usr/share/datasets/fashion-mnist for examples
  python3                                   # reference scripts and bench baselines
  python3-numpy python3-venv python3-pip python3-setuptools  # the effml package (python/) and its install
  python3-pytest python3-pytest-timeout     # its test suite
  python3-sklearn python3-imblearn python3-pandas python3-scipy  # drop-in tests against imbalanced-learn
  python3-tqdm python3-dask python3-distributed  # progress bars; effml.dask
)

effml_install_deps() {
  local missing=() p
  for p in "${EFFML_DEPS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps: all ${#EFFML_DEPS[@]} Debian packages already installed"
    return 0
  fi
  if [ "${EFFML_SKIP_APT:-0}" = 1 ] || [ "$(id -u)" -ne 0 ]; then
    echo "deps: not installing (EFFML_SKIP_APT=1 or not root); missing: ${missing[*]}" >&2
    return 0
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${EFFML_DEPS[@]}"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  effml_install_deps
fi
