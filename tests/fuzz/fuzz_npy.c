/*
 * libFuzzer target for the .npy reader: effml_io_npy_load_buffer() must return
 * a status (never crash, over-read, leak or trip UBSan) for any bytes, and a
 * tensor it returns must be self-consistent.  Built by tests/fuzz/build.sh;
 * replayed over tests/fuzz/corpus/npy by the CTest test fuzz_replay_npy.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "effml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  effml_context *ctx = NULL;
  if (effml_context_create(NULL, &ctx) != EFFML_OK) abort();
  /* A zero-length input still needs a valid pointer. */
  static const uint8_t empty[1] = {0};
  effml_tensor *t = NULL;
  effml_status st = effml_io_npy_load_buffer(ctx, size ? (const void *)data : empty, size, &t);
  if (st == EFFML_OK) {
    /* The payload is copied in full: touch every byte. */
    size_t nbytes = effml_tensor_nbytes(t);
    if (nbytes != (size_t)effml_tensor_numel(t) * effml_tensor_dtype_size(effml_tensor_dtype(t)) ||
        nbytes > size || !effml_tensor_is_contiguous(t))
      abort();
    const unsigned char *p = (const unsigned char *)effml_tensor_data_const(t);
    unsigned acc = 0;
    for (size_t i = 0; i < nbytes; ++i) acc += p[i];
    (void)acc;
    effml_tensor_free(t);
  } else if (t != NULL || effml_context_last_error(ctx)[0] == '\0') {
    abort(); /* errors leave *out untouched and always carry a message */
  }
  effml_context_free(ctx);
  return 0;
}
