/* Layer normalisation over the feature dimension (Ba et al. 2016; PyTorch
 * nn.LayerNorm(features, eps)), per row i:
 *   μ = mean(x),  σ² = mean((x-μ)²) (biased),  r = 1/sqrt(σ² + eps)
 *   x̂ = (x-μ)·r,  y = x̂ ⊙ weight + bias
 * backward (g = dy ⊙ weight):
 *   dweight += Σ_i dy ⊙ x̂,  dbias += Σ_i dy
 *   dx = r·(g - mean(g) - x̂·mean(g ⊙ x̂))
 * Row statistics are accumulated in f64. */
#include <math.h>
#include <string.h>

#include "layer_internal.h"

enum { LN_W = 0, LN_B = 1 };

typedef struct ln_impl {
  double eps;
  const effml_tensor *x; /* borrowed from the pending train forward */
  float *mean, *rstd;    /* owned, per row of that forward */
  int64_t cap;           /* rows allocated */
} ln_impl;

static effml_status ln_forward(effml_context *ctx, effml_layer *layer, const effml_tensor *x,
                               effml_tensor *y, int32_t mode) {
  ln_impl *l = (ln_impl *)layer->impl;
  const int64_t batch = x->shape[0], f = layer->in_features;
  const int train = mode == EFFML_LAYER_MODE_TRAIN;
  if (train && batch > l->cap) {
    float *m = (float *)effml__alloc_or_err(ctx, (size_t)batch * sizeof(float), "layernorm stats");
    float *r = (float *)effml__alloc_or_err(ctx, (size_t)batch * sizeof(float), "layernorm stats");
    if (!m || !r) {
      effml__free(ctx, m);
      effml__free(ctx, r);
      return EFFML_E_NOMEM;
    }
    effml__free(ctx, l->mean);
    effml__free(ctx, l->rstd);
    l->mean = m;
    l->rstd = r;
    l->cap = batch;
  }
  const float *w = effml__param_f32(layer, LN_W), *b = effml__param_f32(layer, LN_B);
  for (int64_t i = 0; i < batch; ++i) {
    const float *xr = effml__cf32(x) + i * f;
    float *yr = effml__f32(y) + i * f;
    double s = 0.0;
    for (int64_t j = 0; j < f; ++j) s += xr[j];
    const double mu = s / (double)f;
    double ss = 0.0;
    for (int64_t j = 0; j < f; ++j) ss += ((double)xr[j] - mu) * ((double)xr[j] - mu);
    const double r = 1.0 / sqrt(ss / (double)f + l->eps);
    for (int64_t j = 0; j < f; ++j) yr[j] = (float)(((double)xr[j] - mu) * r) * w[j] + b[j];
    if (train) {
      l->mean[i] = (float)mu;
      l->rstd[i] = (float)r;
    }
  }
  if (train) l->x = x; /* infer mode writes nothing into the layer */
  return EFFML_OK;
}

static effml_status ln_backward(effml_context *ctx, effml_layer *layer, const effml_tensor *dy,
                                effml_tensor *dx) {
  ln_impl *l = (ln_impl *)layer->impl;
  const int64_t batch = dy->shape[0], f = layer->in_features;
  const float *w = effml__param_f32(layer, LN_W);
  float *dw = effml__layer_param_entry(layer, LN_W)->trainable ? effml__grad_f32(layer, LN_W) : NULL;
  float *db = effml__layer_param_entry(layer, LN_B)->trainable ? effml__grad_f32(layer, LN_B) : NULL;
  for (int64_t i = 0; i < batch; ++i) {
    const float *xr = effml__cf32(l->x) + i * f, *gr = effml__cf32(dy) + i * f;
    const double mu = l->mean[i], r = l->rstd[i];
    double sg = 0.0, sgx = 0.0;
    for (int64_t j = 0; j < f; ++j) {
      const double xh = ((double)xr[j] - mu) * r;
      const double g = (double)gr[j] * w[j];
      sg += g;
      sgx += g * xh;
      if (dw) dw[j] += (float)((double)gr[j] * xh);
      if (db) db[j] += gr[j];
    }
    if (dx) {
      float *dxr = effml__f32(dx) + i * f;
      const double mg = sg / (double)f, mgx = sgx / (double)f;
      for (int64_t j = 0; j < f; ++j) {
        const double xh = ((double)xr[j] - mu) * r;
        dxr[j] = (float)(r * ((double)gr[j] * w[j] - mg - xh * mgx));
      }
    }
  }
  l->x = NULL;
  return EFFML_OK;
}

static void ln_destroy(effml_layer *layer) {
  ln_impl *l = (ln_impl *)layer->impl;
  if (!l) return;
  effml__free(layer->ctx, l->mean);
  effml__free(layer->ctx, l->rstd);
  effml__free(layer->ctx, l);
}

/* No FLOP rule (the Sparse-IFT profiler counts linear layers only). */
const effml__layer_ops effml__layernorm_ops = {
    .name = "layernorm",
    .forward = ln_forward,
    .backward = ln_backward,
    .destroy = ln_destroy,
};

effml_status effml_layer_layernorm_create(effml_context *ctx, int64_t features, double eps,
                                    effml_layer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out);
  if (features < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_layer_layernorm_create: features=%lld must be >= 1",
                      (long long)features);
  if (!(eps > 0) || !isfinite(eps))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_layer_layernorm_create: eps=%g must be finite and > 0", eps);
  ln_impl *l = (ln_impl *)effml__calloc_or_err(ctx, 1, sizeof *l, "layernorm layer");
  if (!l) return EFFML_E_NOMEM;
  l->eps = eps;
  effml_layer *layer = NULL;
  effml_status st = effml__layer_new(ctx, &effml__layernorm_ops, features, features, l, &layer);
  if (st != EFFML_OK) {
    effml__free(ctx, l);
    return st;
  }
  st = effml__layer_add_param(ctx, layer, "weight", 1, &features, 1, NULL);
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, layer, "bias", 1, &features, 1, NULL);
  if (st == EFFML_OK) st = effml_tensor_fill(ctx, effml_layer_param(layer, LN_W), 1.0);
  if (st != EFFML_OK) {
    effml_layer_free(layer);
    return st;
  }
  *out = layer;
  return EFFML_OK;
}
