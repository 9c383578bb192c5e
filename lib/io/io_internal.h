/*
 * Helpers shared by the file-format readers and writers in lib/io/:
 * an atomic file writer (temporary file + rename) and a strict UTF-8 check.
 * Hidden (effml__) like every internal symbol.
 */
#ifndef EFFML_IO_INTERNAL_H
#define EFFML_IO_INTERNAL_H

#include <stdio.h>

#include "../tensor/tensor_internal.h"

/* The formats are little-endian; this build byte-copies element data, so a
 * big-endian host is refused rather than silently writing wrong files. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#  define EFFML__HOST_BIG_ENDIAN 1
#else
#  define EFFML__HOST_BIG_ENDIAN 0
#endif

/* 1 when bytes [s, s+n) are well-formed UTF-8 (RFC 3629: no overlong forms,
 * no surrogates, nothing above U+10FFFF), else 0. */
EFFML__HIDDEN int effml__utf8_valid(const unsigned char *s, size_t n);

/* A file written under a temporary name in the destination's directory and
 * renamed over `path` on commit, so `path` is never seen half-written. */
typedef struct effml__afile {
  FILE *f;
  char *tmp;  /* temporary path (context allocator) */
  const char *path;
  int failed; /* a write failed (errno saved in err) */
  int err;
} effml__afile;

/* Create the temporary file.  EFFML_E_IO / EFFML_E_NOMEM (message set). */
EFFML__HIDDEN effml_status effml__afile_open(effml_context *ctx, effml__afile *af,
                                             const char *path, const char *fn);
/* Append n bytes (errors are remembered and reported by commit). */
EFFML__HIDDEN void effml__afile_write(effml__afile *af, const void *p, size_t n);
/* Flush, close and rename over the destination; on any error remove the
 * temporary file and return EFFML_E_IO.  Always releases af. */
EFFML__HIDDEN effml_status effml__afile_commit(effml_context *ctx, effml__afile *af,
                                               const char *fn);
/* Close and remove the temporary file (after an error elsewhere). */
EFFML__HIDDEN void effml__afile_abort(effml_context *ctx, effml__afile *af);

/* safetensors dtype strings (huggingface/safetensors `Dtype`).  `rank` is the
 * position in the reference enum, which the writer sorts by (descending). */
typedef struct effml__st_dtype {
  const char *name;
  int32_t dtype; /* EFFML_*, or 0: known to the format but not to libeffml */
  int32_t rank;
  int32_t bits;
} effml__st_dtype;
/* Look up a dtype string (n bytes); NULL when the format does not know it. */
EFFML__HIDDEN const effml__st_dtype *effml__st_dtype_by_name(const char *s, size_t n);
/* The entry for an EFFML_* dtype; NULL when it has none. */
EFFML__HIDDEN const effml__st_dtype *effml__st_dtype_of(int32_t dtype);

#endif /* EFFML_IO_INTERNAL_H */
