#!/bin/sh
# Build the libFuzzer targets with clang, libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer:
#   fuzz_npy, fuzz_safetensors    the .npy and safetensors readers
#   fuzz_idx, fuzz_idx_gz         the IDX loader, file as is / content gzipped first
#   fuzz_peft_config              adapter_config.json through the PEFT LoRA loader
#   fuzz_layer_load               arbitrary safetensors loaded into a model
#
#   tests/fuzz/build.sh [OUTDIR]          (default: build-fuzz/ in the repo root)
#   OUTDIR/fuzz_npy -max_total_time=600 WORKDIR tests/fuzz/corpus/npy
#   OUTDIR/fuzz_safetensors -dict=tests/fuzz/safetensors.dict WORKDIR tests/fuzz/corpus/safetensors
#   OUTDIR/fuzz_layer_load -dict=tests/fuzz/safetensors.dict WORKDIR tests/fuzz/corpus/layer_load
#   OUTDIR/fuzz_peft_config -dict=tests/fuzz/json.dict WORKDIR tests/fuzz/corpus/peft_config
#
# The library is compiled once (lib/*/*.c, -fsanitize=fuzzer-no-link) and
# linked into every target.  Needs clang-14 and libclang-rt-14-dev (Debian 12),
# libcjson-dev, zlib, OpenBLAS/LAPACKE and pkg-config.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/build-fuzz}
CC=${CC:-clang-14}
JOBS=${JOBS:-2}
mkdir -p "$OUT/obj"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
CFLAGS="-std=c11 -g -O1 -fno-omit-frame-pointer $SAN -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
 -I$ROOT/include -I$ROOT/lib/core $(pkg-config --cflags libcjson) $(pkg-config --cflags openblas 2>/dev/null || true)"
LIBS="$(pkg-config --libs libcjson) -llapacke $(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lz -lpthread -lm"
# the library, once (objects named after their folder to keep them apart)
ls "$ROOT"/lib/*/*.c | xargs -P "$JOBS" -I{} sh -c '
  src={}; o="$1/obj/$(basename "$(dirname "$src")")_$(basename "$src" .c).o"
  [ "$o" -nt "$src" ] || $2 $3 -fsanitize=fuzzer-no-link -c "$src" -o "$o"' sh "$OUT" "$CC" "$CFLAGS"
for t in npy safetensors idx idx_gz peft_config layer_load; do
  src=$ROOT/tests/fuzz/fuzz_$t.c
  def=
  if [ "$t" = idx_gz ]; then src=$ROOT/tests/fuzz/fuzz_idx.c; def=-DFUZZ_IDX_GZ; fi
  # shellcheck disable=SC2086
  $CC $CFLAGS -fsanitize=fuzzer $def -o "$OUT/fuzz_$t" "$src" "$OUT"/obj/*.o $LIBS
  echo "built $OUT/fuzz_$t"
done
