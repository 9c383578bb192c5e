#!/bin/sh
# Build the libFuzzer targets for the .npy and safetensors readers with clang,
# libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   tests/fuzz/build.sh [OUTDIR]          (default: build-fuzz/ in the repo root)
#   OUTDIR/fuzz_npy -max_total_time=600 WORKDIR tests/fuzz/corpus/npy
#   OUTDIR/fuzz_safetensors -dict=tests/fuzz/safetensors.dict WORKDIR tests/fuzz/corpus/safetensors
#
# Only the sources the readers need are compiled (core, tensor, io), so a
# fuzz build does not depend on the rest of the library.  Needs clang-14 and
# libclang-rt-14-dev (Debian 12), libcjson-dev and pkg-config.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/build-fuzz}
CC=${CC:-clang-14}
mkdir -p "$OUT"
CFLAGS="-std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
 -fno-sanitize-recover=all -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
 -I$ROOT/include -I$ROOT/lib/core $(pkg-config --cflags libcjson)"
for t in npy safetensors; do
  # shellcheck disable=SC2086
  $CC $CFLAGS -o "$OUT/fuzz_$t" "$ROOT/tests/fuzz/fuzz_$t.c" \
    "$ROOT"/lib/core/*.c "$ROOT"/lib/tensor/*.c "$ROOT"/lib/io/*.c \
    $(pkg-config --libs libcjson) -lpthread -lm
  echo "built $OUT/fuzz_$t"
done
