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
 *
 * @code
 *   effml_safetensors *st;
 *   effml_safetensors_load(ctx, "adapter.safetensors", EFFML_IO_SAFETENSORS_MMAP, &st);
 *   const effml_tensor *w;
 *   if (effml_safetensors_get(ctx, st, "lora_A.weight", &w) == EFFML_OK) use(w);
 *   effml_safetensors_free(st);                      // w is gone with st
 * @endcode
 *
 * Differences from the reference implementations, all documented in
 * docs/io.md: zero-size dimensions (legal in both formats) are refused with
 * EFFML_E_SHAPE because libeffml tensors need every dimension >= 1; more than
 * EFFML_TENSOR_MAX_DIMS dimensions give EFFML_E_UNSUPPORTED; `.npy` headers longer
 * than 1 MiB are refused.  The safetensors header JSON is parsed with cJSON,
 * whose parse tree is allocated with malloc() (not the context allocator)
 * and freed before the loader returns.  Little-endian hosts only.
 *
 * Threads: loading and saving use only their arguments; a loaded
 * effml_safetensors (and its borrowed tensors) may be read from several
 * threads at once.  The context passed to a loader must outlive the object.
 */
#ifndef EFFML_IO_H
#define EFFML_IO_H

#include "core.h"
#include "tensor.h"

EFFML_BEGIN_DECLS

/**
 * Load a `.npy` file into a new owned, contiguous tensor (Fortran-order
 * files are reordered to C order; bytes after the data are ignored, as numpy
 * does).  The header is parsed, never evaluated.
 * @param out  receives the tensor, owned by the caller (effml_tensor_free());
 *             untouched on error
 * @return EFFML_E_INVALID_ARG (NULL argument), EFFML_E_IO (cannot open/read,
 *         a directory), EFFML_E_FORMAT (bad magic, truncated, malformed
 *         header, header longer than 1 MiB, data shorter than the shape),
 *         EFFML_E_UNSUPPORTED (format version other than 1.0/2.0/3.0;
 *         big-endian, object, structured or unknown dtype; more than
 *         EFFML_TENSOR_MAX_DIMS dims), EFFML_E_SHAPE (a zero or negative dimension),
 *         EFFML_E_OVERFLOW (the byte size overflows), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_io_npy_load(effml_context *ctx, const char *path, effml_tensor **out);
/** As effml_io_npy_load(), from `len` bytes at `buf` (copied). */
EFFML_API effml_status effml_io_npy_load_buffer(effml_context *ctx, const void *buf, size_t len,
                                             effml_tensor **out);
/**
 * Save `t` (any layout; written in C order) as `.npy` version 1.0 (2.0 if
 * the header needs it), byte-identical to numpy 1.24's np.save().  Written
 * to a temporary file and renamed, so `path` is never left half-written.
 * @return EFFML_E_INVALID_ARG, EFFML_E_DTYPE (bf16: no numpy dtype),
 *         EFFML_E_IO, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_io_npy_save(effml_context *ctx, const char *path, const effml_tensor *t);

/** A loaded safetensors file: named tensors plus `__metadata__` strings. */
typedef struct effml_safetensors effml_safetensors;

/** Flags for effml_safetensors_load(). */
#define EFFML_IO_SAFETENSORS_COPY 0u /**< read the file into memory */
#define EFFML_IO_SAFETENSORS_MMAP 1u /**< map it read-only: tensors wrap the mapping and are read-only; a tensor whose offset is not a multiple of its element size gets an aligned (still read-only) copy */

/**
 * Load a safetensors file.  The byte buffer is read into one 64-byte aligned
 * block (COPY) or mapped (MMAP); the tensors borrow it.
 * @param flags  EFFML_IO_SAFETENSORS_COPY or EFFML_IO_SAFETENSORS_MMAP
 * @param out    owned by the caller (effml_safetensors_free()); untouched on error
 * @return EFFML_E_INVALID_ARG (NULL argument, unknown flags), EFFML_E_IO
 *         (cannot open, read or map; not a regular file), EFFML_E_FORMAT
 *         (any violation of the header rules above, invalid UTF-8 or JSON, a
 *         header that is not a JSON object; the message names the tensor and
 *         offsets), EFFML_E_DTYPE (unknown dtype string, or F4/F6/F8/C64,
 *         which libeffml does not support), EFFML_E_UNSUPPORTED (more than
 *         EFFML_TENSOR_MAX_DIMS dimensions), EFFML_E_SHAPE (a zero-size dimension;
 *         the message names the tensor), EFFML_E_NOMEM, EFFML_E_CANCELLED.
 * Progress (effml_context_set_progress()) is reported in bytes of the data
 * section: before each 64 MiB read and once all are read (COPY), or before the
 * first and after each tensor (MMAP); either way the last report has done ==
 * total.  A cancel request stops the load with nothing published.
 */
EFFML_API effml_status effml_safetensors_load(effml_context *ctx, const char *path, uint32_t flags,
                                              effml_safetensors **out);
/** As effml_safetensors_load(), from `len` bytes at `buf` (copied in 64 MiB pieces, each after a progress report, and a last report of done == total). */
EFFML_API effml_status effml_safetensors_load_buffer(effml_context *ctx, const void *buf,
                                                     size_t len, effml_safetensors **out);
/**
 * Free a loaded file and every tensor borrowed from it (views made from
 * those tensors must be freed first: they do not keep the buffer alive).
 * NULL is a no-op.
 */
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
/** Value of `__metadata__[key]`, or NULL (also for NULL arguments).  Borrowed. */
EFFML_API const char *effml_safetensors_metadata(const effml_safetensors *st, const char *key);
/** Number of `__metadata__` entries. */
EFFML_API int64_t effml_safetensors_metadata_count(const effml_safetensors *st);
/** Key of metadata entry `i` (entries in byte order of their keys), or NULL if out of range.  Borrowed. */
EFFML_API const char *effml_safetensors_metadata_key(const effml_safetensors *st, int64_t i);

/**
 * Write `n` named tensors (any layout; written contiguous, little-endian) and
 * optional metadata to `path`.
 * @param n      number of tensors (0 writes a file with metadata only)
 * @param names, tensors  `n` entries each (may be NULL when n == 0); names
 *               are UTF-8 and unique
 * @param meta_keys, meta_values  `n_meta` UTF-8 strings each (may be NULL
 *               when n_meta == 0); written sorted by key
 * @return EFFML_E_INVALID_ARG (NULL/empty/duplicate/non-UTF-8 names, name
 *         "__metadata__", NULL or duplicate metadata keys, n or n_meta < 0),
 *         EFFML_E_IO, EFFML_E_NOMEM, EFFML_E_CANCELLED.  On error `path` is
 *         untouched: the file is written under a temporary name next to it,
 *         then renamed; the temporary file is removed on every error.
 * Progress is reported in bytes of tensor data, before each tensor and once
 * more with done == total when all are written, before the rename; a cancel
 * request (or a progress callback asking to stop) at any of these reports
 * stops the save there, `path` untouched.
 */
EFFML_API effml_status effml_safetensors_save(effml_context *ctx, const char *path, int64_t n,
                                              const char *const *names,
                                              const effml_tensor *const *tensors, int64_t n_meta,
                                              const char *const *meta_keys,
                                              const char *const *meta_values);

EFFML_END_DECLS

#endif /* EFFML_IO_H */
