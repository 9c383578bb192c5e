/*
 * Inside a tensor (internal).  The tensor area (lib/tensor/) owns the
 * layout of struct effml_tensor; a file of a higher area that reads a
 * tensor's shape or data includes this header, every other file sees only
 * the opaque public type.  Nothing here is exported.
 */
#ifndef EFFML_TENSOR_INTERNAL_H
#define EFFML_TENSOR_INTERNAL_H

#include "internal.h"

struct effml__storage;
struct effml_tensor {
  struct effml__storage *storage;
  effml_context *ctx; /* allocator of this handle */
  int32_t dtype;
  int32_t ndim;
  int64_t shape[EFFML_TENSOR_MAX_DIMS];
  int64_t strides[EFFML_TENSOR_MAX_DIMS]; /* elements */
  char *data;                       /* element (0,...,0) */
  int32_t read_only;
};

/* Check `t` is non-NULL, has `dtype` (0 = any), `ndim` dims (-1 = any) and is
 * contiguous when `contiguous` is set; message names `arg`. */
EFFML__HIDDEN effml_status effml__check_tensor(effml_context *ctx, const effml_tensor *t,
                                               const char *arg, int32_t dtype, int32_t ndim,
                                               int contiguous);
/* Check t's dimension `dim` equals `expect` (message names arg and both values). */
EFFML__HIDDEN effml_status effml__check_dim(effml_context *ctx, const effml_tensor *t,
                                            const char *arg, int32_t dim, int64_t expect);
/* Check a writable tensor. */
EFFML__HIDDEN effml_status effml__check_writable(effml_context *ctx, const effml_tensor *t,
                                                 const char *arg);
/* Format a shape as "[2, 3]" into buf (always NUL-terminated). */
EFFML__HIDDEN const char *effml__shape_str(const effml_tensor *t, char *buf, size_t len);
/* As effml_tensor_create() but the contents are left uninitialised: only for
 * outputs that the caller then writes completely (saves a pass over memory). */
EFFML__HIDDEN effml_status effml__tensor_create_uninit(effml_context *ctx, int32_t dtype,
                                                       int32_t ndim, const int64_t *shape,
                                                       effml_tensor **out);
/* Create an f32 2-D contiguous tensor (common case). */
EFFML__HIDDEN effml_status effml__tensor_f32_2d(effml_context *ctx, int64_t rows, int64_t cols,
                                                effml_tensor **out);
/* Create a contiguous tensor with the same shape as `like`. */
EFFML__HIDDEN effml_status effml__tensor_like(effml_context *ctx, const effml_tensor *like,
                                              int32_t dtype, effml_tensor **out);
/* Typed data access for contiguous tensors (no checks). */
static inline float *effml__f32(effml_tensor *t) { return (float *)(void *)t->data; }
static inline const float *effml__cf32(const effml_tensor *t) { return (const float *)(const void *)t->data; }
static inline double *effml__f64(effml_tensor *t) { return (double *)(void *)t->data; }
static inline const double *effml__cf64(const effml_tensor *t) { return (const double *)(const void *)t->data; }
/* Labels: element i of a 1-D i32 or i64 tensor (dtype checked by the caller) as int64,
 * at i * strides[0].  The one reading of a label tensor. */
static inline int64_t effml__label_at(const effml_tensor *t, int64_t i) {
  const int64_t o = i * t->strides[0];
  return t->dtype == EFFML_I32 ? ((const int32_t *)(const void *)t->data)[o]
                               : ((const int64_t *)(const void *)t->data)[o];
}
/* The first n labels of `t` (1-D, i32 or i64: checked by the caller) copied into a new
 * int64 array *out (free with effml__free); `what` names the allocation in the
 * out-of-memory message.  Range checks stay with the caller (their messages differ). */
EFFML__HIDDEN effml_status effml__labels_to_i64(effml_context *ctx, const effml_tensor *t,
                                                int64_t n, const char *what, int64_t **out);
/* 1 when the storage regions of a and b overlap. */
EFFML__HIDDEN int effml__tensors_overlap(const effml_tensor *a, const effml_tensor *b);

#endif /* EFFML_TENSOR_INTERNAL_H */
