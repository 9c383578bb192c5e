#!/bin/sh
# Build the libFuzzer targets with clang, libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer: the .npy and safetensors readers, the IDX loader
# (file as is; fuzz_idx_gz: content gzipped first), adapter_config.json through
# the PEFT LoRA loader, and effml_layer_load with arbitrary safetensors.
#
#   tests/fuzz/build.sh [OUTDIR]          (default: build-fuzz/ in the repo root)
#   OUTDIR/fuzz_npy -max_total_time=600 WORKDIR tests/fuzz/corpus/npy
#   OUTDIR/fuzz_safetensors -dict=tests/fuzz/safetensors.dict WORKDIR tests/fuzz/corpus/safetensors
#   OUTDIR/fuzz_layer_load -dict=tests/fuzz/safetensors.dict WORKDIR tests/fuzz/corpus/layer_load
#   OUTDIR/fuzz_peft_config -dict=tests/fuzz/json.dict WORKDIR tests/fuzz/corpus/peft_config
#
# The library comes from the project's own CMake build (OUTDIR/lib, target
# effml_static, instrumented with -fsanitize=fuzzer-no-link,address,undefined),
# so this script names no source folders: the static archive contributes only
# the objects a target reaches.  Every tests/fuzz/fuzz_*.c is one target.
# Needs clang-14 and libclang-rt-14-dev (Debian 12), cmake, pkg-config and the
# library's build dependencies.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/build-fuzz}
CC=${CC:-clang-14}
JOBS=${EFFML_JOBS:-2}
mkdir -p "$OUT"
cmake -S "$ROOT" -B "$OUT/lib" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER="$CC" \
  -DEFFML_SANITIZE=fuzzer-no-link,address,undefined -DEFFML_BUILD_TESTS=OFF \
  -DEFFML_BUILD_BENCH=OFF >/dev/null
cmake --build "$OUT/lib" --target effml_static -j "$JOBS"
CFLAGS="-std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
 -fno-sanitize-recover=all -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I$ROOT/include"
LIBS="$OUT/lib/lib/libeffml.a $(pkg-config --libs libcjson openblas) -llapacke -lz -lpthread -lm"
for src in "$ROOT"/tests/fuzz/fuzz_*.c; do
  t=$(basename "$src" .c)
  # shellcheck disable=SC2086
  $CC $CFLAGS -o "$OUT/$t" "$src" $LIBS
  echo "built $OUT/$t"
  if [ "$t" = fuzz_idx ]; then # the same target over gzipped content
    # shellcheck disable=SC2086
    $CC $CFLAGS -DFUZZ_IDX_GZ -o "$OUT/fuzz_idx_gz" "$src" $LIBS
    echo "built $OUT/fuzz_idx_gz"
  fi
done
