/**
 * @file effml/tensor.h
 * @brief Typed n-dimensional arrays (up to 8 dimensions), owned or wrapping
 *        caller memory.
 *
 * A tensor has a dtype, a shape `[d0, ..., d(n-1)]` and strides in elements
 * (row-major/C order when contiguous: the last dimension varies fastest).
 * Element (i0, ..., in-1) lives at `data + sum(ik * stride[k]) * dtype_size`.
 *
 * Ownership: effml_tensor_create() allocates zeroed storage owned by the
 * tensor.  effml_tensor_wrap() borrows caller memory (zero copy, e.g. a numpy
 * buffer): the caller keeps ownership and must keep the memory alive and
 * unmoved until the tensor and every view of it are freed.  Views (slice,
 * reshape, transpose) share storage with their source and keep it alive: the
 * source may be freed before its views.
 *
 * @code
 *   int64_t shape[2] = {3, 4};
 *   effml_tensor *x;
 *   effml_tensor_create(ctx, EFFML_F32, 2, shape, &x);   // zeroed 3x4
 *   effml_tensor_fill(ctx, x, 1.0);
 *   float *p = (float *)effml_tensor_data(x);            // p[i*4 + j]
 *   effml_tensor_free(x);
 * @endcode
 *
 * Threads: a tensor may be read from several threads at once; writing it while
 * another thread reads or writes it is a data race.  The reference count that
 * keeps shared storage alive is atomic, so views of one storage may be freed
 * from different threads.
 */
#ifndef EFFML_TENSOR_H
#define EFFML_TENSOR_H

#include "core.h"

EFFML_BEGIN_DECLS

typedef struct effml_tensor effml_tensor;

/** Element types (int32_t values, never renumbered). */
#define EFFML_F32 1
#define EFFML_F64 2
#define EFFML_I32 3
#define EFFML_I64 4
#define EFFML_U8 5
#define EFFML_I8 6
#define EFFML_I16 7
#define EFFML_U16 8
#define EFFML_U32 9
#define EFFML_U64 10
#define EFFML_F16 11  /**< IEEE binary16; storage/conversion only */
#define EFFML_BF16 12 /**< bfloat16; storage/conversion only */
#define EFFML_BOOL 13 /**< one byte, 0 or 1 */

/** Maximum number of dimensions. */
#define EFFML_TENSOR_MAX_DIMS 8

/** Size of one element in bytes (0 for an unknown dtype). */
EFFML_API size_t effml_tensor_dtype_size(int32_t dtype);
/** Short name ("f32", "i64", ...); "unknown" for an unknown dtype.  Static storage. */
EFFML_API const char *effml_tensor_dtype_name(int32_t dtype);

/**
 * Create a contiguous, zero-filled tensor.
 * @param ndim   0..EFFML_TENSOR_MAX_DIMS (0 = scalar with one element)
 * @param shape  `ndim` sizes, each >= 1 (may be NULL when ndim == 0)
 * @param out    receives the tensor, owned by the caller (effml_tensor_free())
 * @return EFFML_E_INVALID_ARG (NULL ctx/out/shape), EFFML_E_DTYPE (unknown
 *         dtype), EFFML_E_SHAPE (ndim out of range, a size < 1),
 *         EFFML_E_OVERFLOW (byte size overflows), EFFML_E_NOMEM.
 *         On error *out is untouched.
 */
EFFML_API effml_status effml_tensor_create(effml_context *ctx, int32_t dtype, int32_t ndim,
                                           const int64_t *shape, effml_tensor **out);

/**
 * Wrap caller memory without copying.
 * @param strides   element strides, or NULL for contiguous row-major.
 *                  Strides must be >= 0.
 * @param data      caller memory; must stay valid, and unmoved, until this
 *                  tensor and all its views are freed.  Must be aligned to the
 *                  element size.
 * @param data_bytes size of the memory at `data`; every addressed element must
 *                  lie inside it (checked).
 * @param read_only nonzero: libeffml refuses to write through this tensor
 *                  (effml_tensor_data() returns NULL; writers fail with
 *                  EFFML_E_INVALID_ARG).
 * @return as effml_tensor_create(), plus EFFML_E_INVALID_ARG when data is NULL,
 *         misaligned, or too small for the shape and strides.
 */
EFFML_API effml_status effml_tensor_wrap(effml_context *ctx, int32_t dtype, int32_t ndim,
                                         const int64_t *shape, const int64_t *strides,
                                         void *data, size_t data_bytes, int32_t read_only,
                                         effml_tensor **out);

/** Free a tensor (or view).  Storage is released when its last user goes.  NULL is a no-op. */
EFFML_API void effml_tensor_free(effml_tensor *t);

/* ---- queries (never fail; a NULL tensor gives 0/NULL) ---- */
/** Element type (EFFML_F32, ...), or 0 for NULL. */
EFFML_API int32_t effml_tensor_dtype(const effml_tensor *t);
/** Number of dimensions, 0..EFFML_TENSOR_MAX_DIMS (0 = scalar). */
EFFML_API int32_t effml_tensor_ndim(const effml_tensor *t);
/** Size of dimension `dim` (negative counts from the end); 0 if out of range. */
EFFML_API int64_t effml_tensor_dim(const effml_tensor *t, int32_t dim);
/** Borrowed array of ndim sizes, valid while `t` lives. */
EFFML_API const int64_t *effml_tensor_shape(const effml_tensor *t);
/** Borrowed array of ndim strides in elements, valid while `t` lives. */
EFFML_API const int64_t *effml_tensor_strides(const effml_tensor *t);
/** Number of elements (product of the shape). */
EFFML_API int64_t effml_tensor_numel(const effml_tensor *t);
/** numel * dtype size, in bytes. */
EFFML_API size_t effml_tensor_nbytes(const effml_tensor *t);
/** 1 if row-major contiguous, else 0. */
EFFML_API int32_t effml_tensor_is_contiguous(const effml_tensor *t);
/** 1 if the tensor is read-only (wrapped read-only, or a mapped file). */
EFFML_API int32_t effml_tensor_is_read_only(const effml_tensor *t);
/** Pointer to element (0,...,0); NULL for read-only tensors.  Borrowed. */
EFFML_API void *effml_tensor_data(effml_tensor *t);
/** Pointer to element (0,...,0), for reading.  Borrowed. */
EFFML_API const void *effml_tensor_data_const(const effml_tensor *t);

/* ---- views (no copy; the view keeps the storage alive) ---- */

/**
 * View of `src` restricted to indices start, start+step, ... < stop along `dim`.
 * @return EFFML_E_RANGE (dim or start/stop out of range, empty result),
 *         EFFML_E_INVALID_ARG (step < 1, NULL args), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_tensor_slice(effml_context *ctx, const effml_tensor *src,
                                          int32_t dim, int64_t start, int64_t stop,
                                          int64_t step, effml_tensor **out);
/**
 * View with a new shape and the same number of elements.  One entry may be -1
 * (inferred).  `src` must be contiguous (else EFFML_E_SHAPE: call
 * effml_tensor_contiguous() first).
 */
EFFML_API effml_status effml_tensor_reshape(effml_context *ctx, const effml_tensor *src,
                                            int32_t ndim, const int64_t *shape,
                                            effml_tensor **out);
/** View with dimensions `dim0` and `dim1` swapped. */
EFFML_API effml_status effml_tensor_transpose(effml_context *ctx, const effml_tensor *src,
                                              int32_t dim0, int32_t dim1, effml_tensor **out);

/* ---- copies ---- */

/** New contiguous, owned copy of `src` (same dtype). */
EFFML_API effml_status effml_tensor_contiguous(effml_context *ctx, const effml_tensor *src,
                                               effml_tensor **out);
/**
 * New contiguous, owned copy converted to `dtype`.  Float to integer
 * truncates toward zero; values outside the target range give
 * EFFML_E_NUMERIC (as does NaN/inf to an integer type).  Floats round to
 * nearest even when narrowing (f64 -> f32/f16/bf16).
 */
EFFML_API effml_status effml_tensor_convert(effml_context *ctx, const effml_tensor *src,
                                            int32_t dtype, effml_tensor **out);
/**
 * Copy the elements of `src` into `dst` (same shape; dtypes may differ, with
 * the rules of effml_tensor_convert()).  `dst` is untouched on error.
 */
EFFML_API effml_status effml_tensor_copy(effml_context *ctx, effml_tensor *dst,
                                         const effml_tensor *src);

/* ---- element access ---- */

/** Set every element to `value` (converted to the dtype; integers truncate; out of range: EFFML_E_NUMERIC). */
EFFML_API effml_status effml_tensor_fill(effml_context *ctx, effml_tensor *t, double value);
/** Read element at `index` (ndim entries) as double. */
EFFML_API effml_status effml_tensor_get_f64(effml_context *ctx, const effml_tensor *t,
                                            const int64_t *index, double *value);
/** Write element at `index` from a double (rules of effml_tensor_fill()). */
EFFML_API effml_status effml_tensor_set_f64(effml_context *ctx, effml_tensor *t,
                                            const int64_t *index, double value);
/** Read an integer element exactly (integer and bool dtypes only, else EFFML_E_DTYPE). */
EFFML_API effml_status effml_tensor_get_i64(effml_context *ctx, const effml_tensor *t,
                                            const int64_t *index, int64_t *value);
/** Write an integer element exactly (integer and bool dtypes; EFFML_E_NUMERIC if it does not fit). */
EFFML_API effml_status effml_tensor_set_i64(effml_context *ctx, effml_tensor *t,
                                            const int64_t *index, int64_t value);

/* ---- initialisers (PyTorch `torch.nn.init` conventions), from the context generator ---- */

/*
 * Fans as PyTorch: for a tensor `[d0, d1, d2...]` (ndim >= 2), fan_in =
 * d1 * prod(d2...), fan_out = d0 * prod(d2...); so a dense weight
 * `[out, in]` has fan_in = in.  Every initialiser writes the elements in
 * row-major order, drawing from the context generator
 * (effml_context_set_seed()).  The tensor must be f32 or f64, contiguous and
 * writable.  Errors: EFFML_E_INVALID_ARG (NULL, read-only, bad range),
 * EFFML_E_DTYPE, EFFML_E_SHAPE (ndim < 2 for the fan-based ones, not
 * contiguous).  On error the tensor is untouched.
 */

/** Xavier/Glorot uniform (Glorot & Bengio 2010, eq. 16): U(-a, a), a = gain·sqrt(6/(fan_in+fan_out)). */
EFFML_API effml_status effml_tensor_init_xavier_uniform(effml_context *ctx, effml_tensor *t, double gain);
/** Xavier/Glorot normal: N(0, std²), std = gain·sqrt(2/(fan_in+fan_out)). */
EFFML_API effml_status effml_tensor_init_xavier_normal(effml_context *ctx, effml_tensor *t, double gain);
/** Kaiming/He normal, mode fan_in (He et al. 2015, eq. 10): std = sqrt(2/(1+a²))/sqrt(fan_in); a = leaky slope (0 for ReLU). */
EFFML_API effml_status effml_tensor_init_kaiming_normal(effml_context *ctx, effml_tensor *t, double a);
/** Kaiming/He uniform, mode fan_in: bound = sqrt(2/(1+a²))·sqrt(3/fan_in) (a = sqrt(5) gives nn.Linear's default). */
EFFML_API effml_status effml_tensor_init_kaiming_uniform(effml_context *ctx, effml_tensor *t, double a);
/** Normal N(mean, std²), std >= 0. */
EFFML_API effml_status effml_tensor_init_normal(effml_context *ctx, effml_tensor *t, double mean,
                                         double std);
/** Uniform U(lo, hi), lo <= hi. */
EFFML_API effml_status effml_tensor_init_uniform(effml_context *ctx, effml_tensor *t, double lo,
                                          double hi);

EFFML_END_DECLS

#endif /* EFFML_TENSOR_H */
