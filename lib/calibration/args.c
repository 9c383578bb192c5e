/* Argument readers of the calibration area: small tensors into plain double
 * / flag / label arrays, with messages that name the public call. */
#include <math.h>

#include "calibration_internal.h"

static int64_t off2(const effml_tensor *t, int64_t i, int64_t j) {
  return i * t->strides[0] + (t->ndim == 2 ? j * t->strides[1] : 0);
}

static double getf(const effml_tensor *t, int64_t o) {
  return t->dtype == EFFML_F64 ? ((const double *)(const void *)t->data)[o]
                               : (double)((const float *)(const void *)t->data)[o];
}

static effml_status need_float(effml_context *ctx, const char *fn, const effml_tensor *t,
                               const char *name, int32_t ndim) {
  if (!t) return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: argument '%s' is NULL", fn, name);
  if (t->dtype != EFFML_F32 && t->dtype != EFFML_F64)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: %s has dtype %s, need f32 or f64", fn, name,
                      effml_tensor_dtype_name(t->dtype));
  if (t->ndim != ndim)
    return effml__err(ctx, EFFML_E_SHAPE, "%s: %s has %d dims, need %d", fn, name, (int)t->ndim,
                      (int)ndim);
  return EFFML_OK;
}

effml_status effml__cal_read_matrix(effml_context *ctx, const char *fn, const effml_tensor *t,
                                    const char *name, int64_t rows, int64_t cols, double **out,
                                    int64_t *rows_out, int64_t *cols_out) {
  EFFML__TRY(need_float(ctx, fn, t, name, 2));
  const int64_t r = t->shape[0], c = t->shape[1];
  if (r < 1 || c < 1)
    return effml__err(ctx, EFFML_E_SHAPE, "%s: %s is [%lld, %lld], need at least one row and column",
                      fn, name, (long long)r, (long long)c);
  if ((rows >= 0 && r != rows) || (cols >= 0 && c != cols))
    return effml__err(ctx, EFFML_E_SHAPE, "%s: %s is [%lld, %lld], need [%lld, %lld]", fn, name,
                      (long long)r, (long long)c, (long long)(rows >= 0 ? rows : r),
                      (long long)(cols >= 0 ? cols : c));
  double *v = (double *)effml__alloc_or_err(ctx, (size_t)(r * c) * sizeof(double), name);
  if (!v) return EFFML_E_NOMEM;
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) {
      const double x = getf(t, off2(t, i, j));
      if (!isfinite(x)) {
        effml__free(ctx, v);
        return effml__err(ctx, EFFML_E_NUMERIC, "%s: %s[%lld, %lld]=%g is not finite", fn, name,
                          (long long)i, (long long)j, x);
      }
      v[i * c + j] = x;
    }
  *out = v;
  if (rows_out) *rows_out = r;
  if (cols_out) *cols_out = c;
  return EFFML_OK;
}

effml_status effml__cal_read_vector(effml_context *ctx, const char *fn, const effml_tensor *t,
                                    const char *name, int64_t n, double **out, int64_t *n_out) {
  EFFML__TRY(need_float(ctx, fn, t, name, 1));
  const int64_t len = t->shape[0];
  if (len < 1 || (n >= 0 && len != n))
    return effml__err(ctx, EFFML_E_SHAPE, "%s: %s has %lld elements, need %lld", fn, name,
                      (long long)len, (long long)(n >= 0 ? n : 1));
  double *v = (double *)effml__alloc_or_err(ctx, (size_t)len * sizeof(double), name);
  if (!v) return EFFML_E_NOMEM;
  for (int64_t i = 0; i < len; ++i) {
    v[i] = getf(t, off2(t, i, 0));
    if (isnan(v[i])) {
      effml__free(ctx, v);
      return effml__err(ctx, EFFML_E_NUMERIC, "%s: %s[%lld] is NaN", fn, name, (long long)i);
    }
  }
  *out = v;
  if (n_out) *n_out = len;
  return EFFML_OK;
}

static effml_status need_int_1d(effml_context *ctx, const char *fn, const effml_tensor *t,
                                const char *name, int64_t n, int allow_flags) {
  if (!t) return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: argument '%s' is NULL", fn, name);
  const int ok = t->dtype == EFFML_I32 || t->dtype == EFFML_I64 ||
                 (allow_flags && (t->dtype == EFFML_BOOL || t->dtype == EFFML_U8));
  if (!ok)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: %s has dtype %s, need %s", fn, name,
                      effml_tensor_dtype_name(t->dtype), allow_flags ? "bool, u8, i32 or i64" : "i32 or i64");
  if (t->ndim != 1 || t->shape[0] != n)
    return effml__err(ctx, EFFML_E_SHAPE, "%s: %s must be 1-D with %lld elements (one per sample)",
                      fn, name, (long long)n);
  return EFFML_OK;
}

static int64_t geti(const effml_tensor *t, int64_t i) {
  const int64_t o = i * t->strides[0];
  switch (t->dtype) {
    case EFFML_I32: return ((const int32_t *)(const void *)t->data)[o];
    case EFFML_I64: return ((const int64_t *)(const void *)t->data)[o];
    default: return ((const unsigned char *)t->data)[o];
  }
}

effml_status effml__cal_read_flags(effml_context *ctx, const char *fn, const effml_tensor *t,
                                   const char *name, int64_t n, unsigned char **out) {
  EFFML__TRY(need_int_1d(ctx, fn, t, name, n, 1));
  unsigned char *v = (unsigned char *)effml__alloc_or_err(ctx, (size_t)n, name);
  if (!v) return EFFML_E_NOMEM;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t f = geti(t, i);
    if (f != 0 && f != 1) {
      effml__free(ctx, v);
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: %s[%lld]=%lld is not 0 or 1", fn, name,
                        (long long)i, (long long)f);
    }
    v[i] = (unsigned char)f;
  }
  *out = v;
  return EFFML_OK;
}

effml_status effml__cal_read_labels(effml_context *ctx, const char *fn, const effml_tensor *t,
                                    const char *name, int64_t n, int64_t K, int64_t **out) {
  EFFML__TRY(need_int_1d(ctx, fn, t, name, n, 0));
  int64_t *v = NULL;
  EFFML__TRY(effml__labels_to_i64(ctx, t, n, name, &v));
  for (int64_t i = 0; i < n; ++i) {
    if (v[i] < 0 || v[i] >= K) {
      const long long bad = (long long)v[i];
      effml__free(ctx, v);
      return effml__err(ctx, EFFML_E_RANGE, "%s: %s[%lld]=%lld is outside [0, %lld)", fn, name,
                        (long long)i, bad, (long long)K);
    }
  }
  *out = v;
  return EFFML_OK;
}

effml_status effml__cal_check_out(effml_context *ctx, const char *fn, const effml_tensor *t,
                                  const char *name, int64_t rows, int64_t cols) {
  EFFML__TRY(need_float(ctx, fn, t, name, 2));
  if (!effml_tensor_is_contiguous(t))
    return effml__err(ctx, EFFML_E_SHAPE, "%s: %s must be contiguous", fn, name);
  if (t->read_only)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: %s is read-only", fn, name);
  if (t->shape[0] != rows || t->shape[1] != cols)
    return effml__err(ctx, EFFML_E_SHAPE, "%s: %s is [%lld, %lld], need [%lld, %lld]", fn, name,
                      (long long)t->shape[0], (long long)t->shape[1], (long long)rows,
                      (long long)cols);
  return EFFML_OK;
}

void effml__cal_write(effml_tensor *t, const double *v, int64_t count) {
  if (t->dtype == EFFML_F64) {
    double *d = (double *)(void *)t->data;
    for (int64_t i = 0; i < count; ++i) d[i] = v[i];
  } else {
    float *d = (float *)(void *)t->data;
    for (int64_t i = 0; i < count; ++i) d[i] = (float)v[i];
  }
}
