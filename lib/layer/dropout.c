/* Inverted dropout (Srivastava et al. 2014; PyTorch nn.Dropout): in train
 * mode y = x ⊙ mask with mask_i ∈ {0, 1/(1-p)}, P(mask_i = 0) = p; in
 * infer mode y = x.  The mask is drawn sequentially from the layer's own
 * generator (seeded at creation, advanced by each train forward), so it does
 * not depend on the thread count.  backward: dx = dy ⊙ mask. */
#include <math.h>
#include <string.h>

#include "layer_internal.h"

typedef struct dropout_impl {
  double p;
  effml__rng rng;
  float *mask;      /* owned; valid for the pending train forward */
  int64_t mask_cap; /* elements allocated */
} dropout_impl;

static effml_status dropout_forward(effml_context *ctx, effml_layer *layer, const effml_tensor *x,
                                    effml_tensor *y, int32_t mode) {
  dropout_impl *d = (dropout_impl *)layer->impl;
  const int64_t n = effml_tensor_numel(x);
  const float *X = effml__cf32(x);
  float *Y = effml__f32(y);
  if (mode != EFFML_LAYER_MODE_TRAIN || d->p == 0.0) {
    memcpy(Y, X, (size_t)n * sizeof(float));
    return EFFML_OK;
  }
  if (n > d->mask_cap) {
    float *m = (float *)effml__alloc_or_err(ctx, (size_t)n * sizeof(float), "dropout mask");
    if (!m) return EFFML_E_NOMEM;
    effml__free(ctx, d->mask);
    d->mask = m;
    d->mask_cap = n;
  }
  const float scale = (float)(1.0 / (1.0 - d->p));
  /* Keep when u >= p with u uniform in [0,1) on 53 bits: P(drop) = p exactly up to 2^-53. */
  for (int64_t i = 0; i < n; ++i) {
    const float m = effml__rng_uniform(&d->rng) >= d->p ? scale : 0.0f;
    d->mask[i] = m;
    Y[i] = X[i] * m;
  }
  return EFFML_OK;
}

static effml_status dropout_backward(effml_context *ctx, effml_layer *layer,
                                     const effml_tensor *dy, effml_tensor *dx) {
  dropout_impl *d = (dropout_impl *)layer->impl;
  if (!dx) return EFFML_OK;
  const int64_t n = effml_tensor_numel(dy);
  const float *DY = effml__cf32(dy);
  float *DX = effml__f32(dx);
  if (d->p == 0.0) {
    memcpy(DX, DY, (size_t)n * sizeof(float));
    return EFFML_OK;
  }
  for (int64_t i = 0; i < n; ++i) DX[i] = DY[i] * d->mask[i];
  return EFFML_OK;
}

static void dropout_destroy(effml_layer *layer) {
  dropout_impl *d = (dropout_impl *)layer->impl;
  if (!d) return;
  effml__free(layer->ctx, d->mask);
  effml__free(layer->ctx, d);
}

/* Dropout is the identity at inference: no FLOPs (Sparse-IFT profiler). */
static effml_status dropout_flops(effml_context *ctx, const effml_layer *layer, int64_t in_width,
                                  double *flops) {
  *flops = 0.0;
  return EFFML_OK;
}

const effml__layer_ops effml__dropout_ops = {
    .name = "dropout",
    .forward = dropout_forward,
    .backward = dropout_backward,
    .destroy = dropout_destroy,
    .flops = dropout_flops,
};

effml_status effml_layer_dropout_create(effml_context *ctx, double p, uint64_t seed, effml_layer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out);
  if (!(p >= 0.0 && p < 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_layer_dropout_create: p=%g must be in [0, 1)", p);
  dropout_impl *d = (dropout_impl *)effml__calloc_or_err(ctx, 1, sizeof *d, "dropout layer");
  if (!d) return EFFML_E_NOMEM;
  d->p = p;
  effml__rng_seed(&d->rng, seed, 0);
  effml_status st = effml__layer_new(ctx, &effml__dropout_ops, 0, 0, d, out);
  if (st != EFFML_OK) effml__free(ctx, d);
  return st;
}
