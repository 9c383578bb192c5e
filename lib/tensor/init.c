/* Weight initialisers with torch.nn.init's conventions, drawing from the
 * context generator in row-major element order. */
#include <math.h>

#include "tensor_internal.h"

/* PyTorch _calculate_fan_in_and_fan_out: [d0, d1, rest...] ->
 * fan_in = d1·Π rest, fan_out = d0·Π rest. */
static effml_status fans(effml_context *ctx, const char *fn, const effml_tensor *t, double *fan_in,
                         double *fan_out) {
  if (t->ndim < 2)
    return effml__err(ctx, EFFML_E_SHAPE,
                      "%s: fan_in and fan_out need a tensor with >= 2 dimensions, got ndim=%d",
                      fn, (int)t->ndim);
  double receptive = 1.0;
  for (int32_t k = 2; k < t->ndim; ++k) receptive *= (double)t->shape[k];
  *fan_in = (double)t->shape[1] * receptive;
  *fan_out = (double)t->shape[0] * receptive;
  return EFFML_OK;
}

static effml_status check_target(effml_context *ctx, const char *fn, effml_tensor *t) {
  EFFML__TRY(effml__check_tensor(ctx, t, "t", 0, -1, 1));
  EFFML__TRY(effml__check_writable(ctx, t, "t"));
  if (t->dtype != EFFML_F32 && t->dtype != EFFML_F64)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: t must be f32 or f64, got %s", fn,
                      effml_tensor_dtype_name(t->dtype));
  return EFFML_OK;
}

/* Fill with lo + (hi-lo)·U or mean + std·N. */
static void fill(effml_context *ctx, effml_tensor *t, int normal, double a, double b) {
  effml__rng *r = effml__ctx_rng(ctx);
  const int64_t n = effml_tensor_numel(t);
  if (t->dtype == EFFML_F32) {
    float *p = effml__f32(t);
    for (int64_t i = 0; i < n; ++i)
      p[i] = (float)(normal ? a + b * effml__rng_normal(r) : a + (b - a) * effml__rng_uniform(r));
  } else {
    double *p = effml__f64(t);
    for (int64_t i = 0; i < n; ++i)
      p[i] = normal ? a + b * effml__rng_normal(r) : a + (b - a) * effml__rng_uniform(r);
  }
}

static effml_status check_finite(effml_context *ctx, const char *fn, const char *name, double v,
                                 int nonneg) {
  if (!isfinite(v) || (nonneg && v < 0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: %s=%g must be finite%s", fn, name, v,
                      nonneg ? " and >= 0" : "");
  return EFFML_OK;
}

effml_status effml_tensor_init_xavier_uniform(effml_context *ctx, effml_tensor *t, double gain) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__TRY(check_finite(ctx, __func__, "gain", gain, 1));
  EFFML__TRY(check_target(ctx, __func__, t));
  double fi = 0, fo = 0;
  EFFML__TRY(fans(ctx, __func__, t, &fi, &fo));
  double a = gain * sqrt(6.0 / (fi + fo));
  fill(ctx, t, 0, -a, a);
  return EFFML_OK;
}

effml_status effml_tensor_init_xavier_normal(effml_context *ctx, effml_tensor *t, double gain) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__TRY(check_finite(ctx, __func__, "gain", gain, 1));
  EFFML__TRY(check_target(ctx, __func__, t));
  double fi = 0, fo = 0;
  EFFML__TRY(fans(ctx, __func__, t, &fi, &fo));
  fill(ctx, t, 1, 0.0, gain * sqrt(2.0 / (fi + fo)));
  return EFFML_OK;
}

effml_status effml_tensor_init_kaiming_normal(effml_context *ctx, effml_tensor *t, double a) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__TRY(check_finite(ctx, __func__, "a", a, 0));
  EFFML__TRY(check_target(ctx, __func__, t));
  double fi = 0, fo = 0;
  EFFML__TRY(fans(ctx, __func__, t, &fi, &fo));
  fill(ctx, t, 1, 0.0, sqrt(2.0 / (1.0 + a * a)) / sqrt(fi));
  return EFFML_OK;
}

effml_status effml_tensor_init_kaiming_uniform(effml_context *ctx, effml_tensor *t, double a) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__TRY(check_finite(ctx, __func__, "a", a, 0));
  EFFML__TRY(check_target(ctx, __func__, t));
  double fi = 0, fo = 0;
  EFFML__TRY(fans(ctx, __func__, t, &fi, &fo));
  double bound = sqrt(2.0 / (1.0 + a * a)) * sqrt(3.0 / fi);
  fill(ctx, t, 0, -bound, bound);
  return EFFML_OK;
}

effml_status effml_tensor_init_normal(effml_context *ctx, effml_tensor *t, double mean, double std) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__TRY(check_finite(ctx, __func__, "mean", mean, 0));
  EFFML__TRY(check_finite(ctx, __func__, "std", std, 1));
  EFFML__TRY(check_target(ctx, __func__, t));
  fill(ctx, t, 1, mean, std);
  return EFFML_OK;
}

effml_status effml_tensor_init_uniform(effml_context *ctx, effml_tensor *t, double lo, double hi) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__TRY(check_finite(ctx, __func__, "lo", lo, 0));
  EFFML__TRY(check_finite(ctx, __func__, "hi", hi, 0));
  if (lo > hi)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: lo=%g must be <= hi=%g", __func__, lo, hi);
  EFFML__TRY(check_target(ctx, __func__, t));
  fill(ctx, t, 0, lo, hi);
  return EFFML_OK;
}
