/*
 * libFuzzer target for the safetensors reader: effml_safetensors_load_buffer()
 * must return a status for any bytes; on success every name, tensor and
 * metadata entry must be reachable and every tensor must lie inside the
 * buffer.  Built by tests/fuzz/build.sh; replayed over
 * tests/fuzz/corpus/safetensors by the CTest test fuzz_replay_safetensors.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "effml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  effml_context *ctx = NULL;
  if (effml_context_create(NULL, &ctx) != EFFML_OK) abort();
  static const uint8_t empty[1] = {0};
  effml_safetensors *st = NULL;
  effml_status rc =
      effml_safetensors_load_buffer(ctx, size ? (const void *)data : empty, size, &st);
  if (rc == EFFML_OK) {
    size_t total = 0;
    for (int64_t i = 0; i < effml_safetensors_count(st); ++i) {
      const char *name = effml_safetensors_name(st, i);
      const effml_tensor *t = NULL;
      if (name == NULL || effml_safetensors_get(ctx, st, name, &t) != EFFML_OK || t == NULL)
        abort();
      size_t nbytes = effml_tensor_nbytes(t);
      const unsigned char *p = (const unsigned char *)effml_tensor_data_const(t);
      unsigned acc = 0;
      for (size_t k = 0; k < nbytes; ++k) acc += p[k];
      (void)acc;
      total += nbytes;
    }
    if (total > size) abort();
    for (int64_t i = 0; i < effml_safetensors_metadata_count(st); ++i) {
      const char *k = effml_safetensors_metadata_key(st, i);
      if (k == NULL || effml_safetensors_metadata(st, k) == NULL) abort();
    }
    effml_safetensors_free(st);
  } else if (st != NULL || effml_context_last_error(ctx)[0] == '\0') {
    abort();
  }
  effml_context_free(ctx);
  return 0;
}
