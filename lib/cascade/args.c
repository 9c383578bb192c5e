/*
 * Argument helpers of the cascade area: read the small 1-D tensors of the
 * metrics (scores, flags, labels) into plain arrays, check and write outputs,
 * and the one descending sort every selective metric shares.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cascade_internal.h"

/* Offset in elements of the i-th element (row-major logical order) of a 1-D or 2-D tensor. */
static inline int64_t elem_off(const effml_tensor *t, int64_t i) {
  if (t->ndim == 1) return i * t->strides[0];
  return (i / t->shape[1]) * t->strides[0] + (i % t->shape[1]) * t->strides[1];
}

static double get_f(const effml_tensor *t, int64_t i) {
  int64_t o = elem_off(t, i);
  return t->dtype == EFFML_F64 ? ((const double *)(const void *)t->data)[o]
                               : (double)((const float *)(const void *)t->data)[o];
}

static int64_t get_i(const effml_tensor *t, int64_t i) {
  int64_t o = elem_off(t, i);
  switch (t->dtype) {
    case EFFML_I32: return ((const int32_t *)(const void *)t->data)[o];
    case EFFML_I64: return ((const int64_t *)(const void *)t->data)[o];
    default: return ((const unsigned char *)t->data)[o]; /* u8, bool */
  }
}

static effml_status check_1d(effml_context *ctx, const effml_tensor *t, const char *name,
                             int64_t n) {
  if (t == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "%s is NULL", name);
  if (t->ndim != 1)
    return effml__err(ctx, EFFML_E_SHAPE, "%s has %d dims, need 1-D [N]", name, (int)t->ndim);
  if (n >= 0 && t->shape[0] != n)
    return effml__err(ctx, EFFML_E_SHAPE, "%s has %lld elements, need %lld (one per sample)",
                      name, (long long)t->shape[0], (long long)n);
  return EFFML_OK;
}

effml_status effml__read_scores(effml_context *ctx, const effml_tensor *t, const char *name,
                                int64_t *n, double **out) {
  EFFML__TRY(check_1d(ctx, t, name, -1));
  if (t->dtype != EFFML_F32 && t->dtype != EFFML_F64)
    return effml__err(ctx, EFFML_E_DTYPE, "%s has dtype %s, need f32 or f64", name,
                      effml_tensor_dtype_name(t->dtype));
  int64_t len = t->shape[0];
  double *v = effml__alloc_or_err(ctx, (size_t)len * sizeof(double), name);
  if (!v) return EFFML_E_NOMEM;
  for (int64_t i = 0; i < len; ++i) {
    v[i] = get_f(t, i);
    if (isnan(v[i])) {
      effml__free(ctx, v);
      return effml__err(ctx, EFFML_E_NUMERIC, "%s[%lld] is NaN", name, (long long)i);
    }
  }
  *n = len;
  *out = v;
  return EFFML_OK;
}

effml_status effml__read_flags(effml_context *ctx, const effml_tensor *t, const char *name,
                               int64_t n, unsigned char **out) {
  EFFML__TRY(check_1d(ctx, t, name, n));
  if (t->dtype != EFFML_BOOL && t->dtype != EFFML_U8 && t->dtype != EFFML_I32 &&
      t->dtype != EFFML_I64)
    return effml__err(ctx, EFFML_E_DTYPE, "%s has dtype %s, need bool, u8, i32 or i64", name,
                      effml_tensor_dtype_name(t->dtype));
  unsigned char *v = effml__alloc_or_err(ctx, (size_t)n, name);
  if (!v) return EFFML_E_NOMEM;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t f = get_i(t, i);
    if (f != 0 && f != 1) {
      effml__free(ctx, v);
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s[%lld]=%lld is not 0 or 1", name,
                        (long long)i, (long long)f);
    }
    v[i] = (unsigned char)f;
  }
  *out = v;
  return EFFML_OK;
}

effml_status effml__read_labels(effml_context *ctx, const effml_tensor *t, const char *name,
                                int64_t n, int64_t K, int64_t **out) {
  EFFML__TRY(check_1d(ctx, t, name, n));
  if (t->dtype != EFFML_I32 && t->dtype != EFFML_I64)
    return effml__err(ctx, EFFML_E_DTYPE, "%s has dtype %s, need i32 or i64", name,
                      effml_tensor_dtype_name(t->dtype));
  int64_t *v = NULL;
  EFFML__TRY(effml__labels_to_i64(ctx, t, n, name, &v));
  for (int64_t i = 0; i < n; ++i) {
    if (K > 0 && (v[i] < 0 || v[i] >= K)) {
      long long bad = (long long)v[i];
      effml__free(ctx, v);
      return effml__err(ctx, EFFML_E_RANGE, "%s[%lld]=%lld is outside [0, num_classes=%lld)",
                        name, (long long)i, bad, (long long)K);
    }
  }
  *out = v;
  return EFFML_OK;
}

effml_status effml__check_out(effml_context *ctx, const effml_tensor *t, const char *name,
                              int32_t dt1, int32_t dt2, int32_t ndim, int64_t n, int64_t K) {
  if (t == NULL) return EFFML_OK;
  if (t->dtype != dt1 && t->dtype != dt2)
    return effml__err(ctx, EFFML_E_DTYPE, "%s has dtype %s, need %s or %s", name,
                      effml_tensor_dtype_name(t->dtype), effml_tensor_dtype_name(dt1), effml_tensor_dtype_name(dt2));
  if (t->ndim != ndim || t->shape[0] != n || (ndim == 2 && t->shape[1] != K)) {
    char buf[96];
    if (ndim == 1)
      return effml__err(ctx, EFFML_E_SHAPE, "%s has shape %s, need [%lld]", name,
                        effml__shape_str(t, buf, sizeof buf), (long long)n);
    return effml__err(ctx, EFFML_E_SHAPE, "%s has shape %s, need [%lld, %lld]", name,
                      effml__shape_str(t, buf, sizeof buf), (long long)n, (long long)K);
  }
  return effml__check_writable(ctx, t, name);
}

void effml__write_i32_out(effml_tensor *t, const int32_t *v, int64_t n) {
  if (t->dtype == EFFML_I32 && effml_tensor_is_contiguous(t)) {
    memcpy(t->data, v, (size_t)n * sizeof(int32_t));
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    int64_t o = elem_off(t, i);
    if (t->dtype == EFFML_I32)
      ((int32_t *)(void *)t->data)[o] = v[i];
    else
      ((int64_t *)(void *)t->data)[o] = v[i];
  }
}

void effml__write_f64_out(effml_tensor *t, const double *v, int64_t n) {
  if (t->dtype == EFFML_F64 && effml_tensor_is_contiguous(t)) {
    memcpy(t->data, v, (size_t)n * sizeof(double));
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    int64_t o = elem_off(t, i);
    if (t->dtype == EFFML_F64)
      ((double *)(void *)t->data)[o] = v[i];
    else
      ((float *)(void *)t->data)[o] = (float)v[i];
  }
}

/* Merge sort of indices: stable, O(n log n), no qsort context pointer needed. */
static void msort(const double *s, int64_t *a, int64_t *tmp, int64_t n) {
  if (n < 2) return;
  int64_t h = n / 2;
  msort(s, a, tmp, h);
  msort(s, a + h, tmp, n - h);
  int64_t i = 0, j = h, k = 0;
  while (i < h && j < n) tmp[k++] = s[a[j]] > s[a[i]] ? a[j++] : a[i++];
  while (i < h) tmp[k++] = a[i++];
  while (j < n) tmp[k++] = a[j++];
  for (k = 0; k < n; ++k) a[k] = tmp[k];
}

effml_status effml__sort_desc(effml_context *ctx, const double *s, int64_t n, int64_t **idx) {
  int64_t *a = effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "sort index");
  int64_t *tmp = effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "sort buffer");
  if (!a || !tmp) {
    effml__free(ctx, a);
    effml__free(ctx, tmp);
    return EFFML_E_NOMEM;
  }
  for (int64_t i = 0; i < n; ++i) a[i] = i;
  msort(s, a, tmp, n);
  effml__free(ctx, tmp);
  *idx = a;
  return EFFML_OK;
}

int64_t effml__ceil_count(double c, int64_t n) {
  double x = c * (double)n;
  int64_t k = (int64_t)ceil(x - 1e-9 * (x > 1.0 ? x : 1.0));
  if (k < 1) k = 1;
  if (k > n) k = n;
  return k;
}
