/**
 * @file effml/io.h
 * @brief `.npy` and safetensors files.
 *
 * `.npy` (numpy format versions 1.0, 2.0 and 3.0): little-endian or
 * byte-order-free dtypes `<f4 <f8 <i4 <i8 |u1 |i1 <i2 <u2 <u4 <u8 <f2 |b1`,
 * C order.  Fortran-order files are converted to C order on load.
 * Big-endian and object dtypes are refused (EFFML_E_UNSUPPORTED).
 *
 * safetensors (huggingface/safetensors, README "Format"): u64 little-endian
 * header length N, N bytes of UTF-8 JSON, then the byte buffer.  The loader
 * enforces the reference rules: N <= 100 000 000, entries contiguous from 0
 * in offset order with no gaps or overlaps, END - BEGIN equal to the byte size
 * of dtype x shape, the last END + 8 + N equal to the file length, no
 * duplicate names, a `__metadata__` map of strings only.  The writer sorts by
 * dtype alignment (descending) then name, and pads the header with spaces to a
 * multiple of 8, as the reference writer does.
 */
#ifndef EFFML_IO_H
#define EFFML_IO_H

#include "common.h"
#include "context.h"
#include "error.h"
#include "tensor.h"

EFFML_BEGIN_DECLS

/**
 * Load a `.npy` file into a new owned, contiguous tensor.
 * @return EFFML_E_IO (cannot open/read), EFFML_E_FORMAT (bad magic, truncated,
 *         malformed header, data shorter than the shape), EFFML_E_UNSUPPORTED
 *         (big-endian, object or unknown dtype, more than EFFML_MAX_DIMS dims),
 *         EFFML_E_SHAPE (a zero dimension), EFFML_E_OVERFLOW, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_npy_load(effml_context *ctx, const char *path, effml_tensor **out);
/** As effml_npy_load(), from `len` bytes at `buf` (copied). */
EFFML_API effml_status effml_npy_load_buffer(effml_context *ctx, const void *buf, size_t len,
                                             effml_tensor **out);
/** Save `t` (any layout; written in C order) as `.npy` version 1.0 (2.0 if the header needs it). */
EFFML_API effml_status effml_npy_save(effml_context *ctx, const char *path, const effml_tensor *t);

/** A loaded safetensors file: named tensors plus `__metadata__` strings. */
typedef struct effml_safetensors effml_safetensors;

/** Flags for effml_safetensors_load(). */
#define EFFML_SAFETENSORS_COPY 0u /**< read the file into memory */
#define EFFML_SAFETENSORS_MMAP 1u /**< map it read-only (tensors are read-only; falls back to a copy when a tensor is misaligned) */

/**
 * Load a safetensors file.
 * @param flags  EFFML_SAFETENSORS_COPY or EFFML_SAFETENSORS_MMAP
 * @param out    owned by the caller (effml_safetensors_free())
 * @return EFFML_E_IO, EFFML_E_FORMAT (any violation of the header rules
 *         above; the message names the tensor and offsets), EFFML_E_DTYPE
 *         (unknown dtype string, or F4/F6/F8 types not supported),
 *         EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_safetensors_load(effml_context *ctx, const char *path, uint32_t flags,
                                              effml_safetensors **out);
/** As effml_safetensors_load(), from `len` bytes at `buf` (copied). */
EFFML_API effml_status effml_safetensors_load_buffer(effml_context *ctx, const void *buf,
                                                     size_t len, effml_safetensors **out);
/** Free a loaded file and every tensor borrowed from it.  NULL is a no-op. */
EFFML_API void effml_safetensors_free(effml_safetensors *st);
/** Number of tensors. */
EFFML_API int64_t effml_safetensors_count(const effml_safetensors *st);
/** Name of tensor `i` (0 <= i < count), in file offset order; NULL if out of range.  Borrowed. */
EFFML_API const char *effml_safetensors_name(const effml_safetensors *st, int64_t i);
/**
 * Borrow the tensor called `name`; it lives as long as `st`.
 * @return EFFML_E_NOT_FOUND (message names the missing key), EFFML_E_INVALID_ARG.
 */
EFFML_API effml_status effml_safetensors_get(effml_context *ctx, const effml_safetensors *st,
                                             const char *name, const effml_tensor **out);
/** Value of `__metadata__[key]`, or NULL.  Borrowed. */
EFFML_API const char *effml_safetensors_metadata(const effml_safetensors *st, const char *key);
/** Number of `__metadata__` entries. */
EFFML_API int64_t effml_safetensors_metadata_count(const effml_safetensors *st);
/** Key of metadata entry `i`, or NULL.  Borrowed. */
EFFML_API const char *effml_safetensors_metadata_key(const effml_safetensors *st, int64_t i);

/**
 * Write `n` named tensors (any layout; written contiguous, little-endian) and
 * optional metadata to `path`.
 * @param meta_keys, meta_values  `n_meta` strings each (may be NULL when n_meta == 0)
 * @return EFFML_E_INVALID_ARG (NULL/empty/duplicate names, name "__metadata__"),
 *         EFFML_E_IO, EFFML_E_NOMEM.  On error a partial file may have been
 *         removed; the path is never left half-written (written to a
 *         temporary name, then renamed).
 */
EFFML_API effml_status effml_safetensors_save(effml_context *ctx, const char *path, int64_t n,
                                              const char *const *names,
                                              const effml_tensor *const *tensors, int64_t n_meta,
                                              const char *const *meta_keys,
                                              const char *const *meta_values);

EFFML_END_DECLS

#endif /* EFFML_IO_H */
