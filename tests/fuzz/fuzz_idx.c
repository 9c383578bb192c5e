/*
 * libFuzzer target for the IDX loader effml_data_idx_load(), raw and gzip:
 * the input bytes are the file as is (raw IDX, or a gzip stream the loader
 * detects and inflates).  Built with -DFUZZ_IDX_GZ, the input is the IDX
 * content and the target gzips it first, so the parser behind the gzip path
 * sees arbitrary content too.  Any bytes must give a status; on success the
 * tensor's shape must account for exactly the data the file holds.
 * Built by tests/fuzz/build.sh; replayed by CTest (fuzz_replay_idx, _idx_gz).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "effml.h"
#include "fuzz_tmpfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (1u << 20)) return 0; /* inputs stay small; the loader reads whole files */
  const char *path;
#ifdef FUZZ_IDX_GZ
  {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    uLong cap = deflateBound(&zs, (uLong)size) + 64;
    unsigned char *gz = malloc(cap);
    if (gz == NULL) abort();
    zs.next_in = (Bytef *)(uintptr_t)data;
    zs.avail_in = (uInt)size;
    zs.next_out = gz;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) abort();
    path = fuzz_write("in.idx.gz", gz, (size_t)zs.total_out);
    deflateEnd(&zs);
    free(gz);
  }
#else
  path = fuzz_write("in.idx", data, size);
#endif
  effml_context *ctx = NULL;
  if (effml_context_create(NULL, &ctx) != EFFML_OK) abort();
  effml_tensor *t = NULL;
  effml_status st = effml_data_idx_load(ctx, path, &t);
  if (st == EFFML_OK) {
    if (t == NULL) abort();
    size_t want = effml_tensor_nbytes(t);
    const unsigned char *p = effml_tensor_data_const(t);
    unsigned acc = 0;
    for (size_t k = 0; k < want; ++k) acc += p[k]; /* every byte readable */
    (void)acc;
#ifndef FUZZ_IDX_GZ
    /* a raw file holds a 4 + 4*ndim byte header and exactly the data */
    if (size >= 2 && !(data[0] == 0x1f && data[1] == 0x8b) &&
        size != 4 + 4 * (size_t)effml_tensor_ndim(t) + want)
      abort();
#else
    if (size != 4 + 4 * (size_t)effml_tensor_ndim(t) + want) abort();
#endif
    effml_tensor_free(t);
  } else if (t != NULL || effml_context_last_error(ctx)[0] == '\0') {
    abort(); /* an error names itself and leaves the output alone */
  }
  effml_context_free(ctx);
  return 0;
}
