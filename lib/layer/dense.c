/* Dense layer y = x Wᵀ + b (PyTorch nn.Linear layout: W [out, in]).
 *
 * forward : y  = x Wᵀ + b            one sgemm (bias broadcast first, beta = 1)
 * backward: dW += dyᵀ x              one sgemm (skipped when W is frozen)
 *           db += Σ_rows dy          (skipped when b is frozen)
 *           dx  = dy W               one sgemm (skipped when dx is NULL)
 */
#include "blas.h"
#include <math.h>
#include <string.h>

#include "layer_internal.h"

enum { DENSE_W = 0, DENSE_B = 1 };

typedef struct dense_impl {
  int32_t has_bias;
  const effml_tensor *x; /* borrowed from the pending train forward */
} dense_impl;

static effml_status dense_forward(effml_context *ctx, effml_layer *layer, const effml_tensor *x,
                                  effml_tensor *y, int32_t mode) {
  dense_impl *d = (dense_impl *)layer->impl;
  const int64_t batch = x->shape[0], in = layer->in_features, out = layer->out_features;
  const float *W = effml__param_f32(layer, DENSE_W);
  float *Y = effml__f32(y);
  float beta = 0.0f;
  if (d->has_bias) {
    const float *b = effml__param_f32(layer, DENSE_B);
    for (int64_t i = 0; i < batch; ++i) memcpy(Y + i * out, b, (size_t)out * sizeof(float));
    beta = 1.0f;
  }
  EFFML__TRY(effml__sgemm(ctx, CblasNoTrans, CblasTrans, batch, out, in, 1.0f, effml__cf32(x), in,
                          W, in, beta, Y, out));
  /* Infer mode writes nothing into the layer (threads may share it). */
  if (mode == EFFML_LAYER_MODE_TRAIN) d->x = x;
  return EFFML_OK;
}

static effml_status dense_backward(effml_context *ctx, effml_layer *layer, const effml_tensor *dy,
                                   effml_tensor *dx) {
  dense_impl *d = (dense_impl *)layer->impl;
  const int64_t batch = dy->shape[0], in = layer->in_features, out = layer->out_features;
  const float *DY = effml__cf32(dy);
  if (effml__layer_param_entry(layer, DENSE_W)->trainable)
    EFFML__TRY(effml__sgemm(ctx, CblasTrans, CblasNoTrans, out, in, batch, 1.0f, DY, out,
                            effml__cf32(d->x), in, 1.0f, effml__grad_f32(layer, DENSE_W), in));
  if (d->has_bias && effml__layer_param_entry(layer, DENSE_B)->trainable)
    effml__bias_grad(effml__grad_f32(layer, DENSE_B), DY, batch, out);
  if (dx)
    EFFML__TRY(effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, batch, in, out, 1.0f, DY, out,
                            effml__param_f32(layer, DENSE_W), in, 0.0f, effml__f32(dx), in));
  d->x = NULL;
  return EFFML_OK;
}

static void dense_destroy(effml_layer *layer) { effml__free(layer->ctx, layer->impl); }

/* 2·in·out − out for the product, + out for the bias. */
static effml_status dense_flops(effml_context *ctx, const effml_layer *layer, int64_t in_width,
                                double *flops) {
  const dense_impl *d = (const dense_impl *)layer->impl;
  const double out = (double)layer->out_features;
  *flops = 2.0 * (double)layer->in_features * out - out + (d->has_bias ? out : 0.0);
  return EFFML_OK;
}

const effml__layer_ops effml__dense_ops = {
    .name = "dense",
    .forward = dense_forward,
    .backward = dense_backward,
    .destroy = dense_destroy,
    .flops = dense_flops,
};

static effml_status dense_create(effml_context *ctx, int64_t in_features, int64_t out_features, int32_t bias,
                                 int32_t init, effml_layer **out);

effml_status effml_layer_dense_create(effml_context *ctx, int64_t in_features, int64_t out_features,
                                int32_t bias, effml_layer **out) {
  EFFML__ENTER(ctx);
  return dense_create(ctx, in_features, out_features, bias, 1, out);
}

effml_status effml__layer_dense_create_uninit(effml_context *ctx, int64_t in_features, int64_t out_features,
                                              int32_t bias, effml_layer **out) {
  return dense_create(ctx, in_features, out_features, bias, 0, out);
}

static effml_status dense_create(effml_context *ctx, int64_t in_features, int64_t out_features, int32_t bias,
                                 int32_t init, effml_layer **out) {
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out);
  if (in_features < 1 || out_features < 1 || in_features > INT32_MAX ||
      out_features > INT32_MAX)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_layer_dense_create: in_features=%lld and out_features=%lld must be in "
                      "[1, 2^31-1]",
                      (long long)in_features, (long long)out_features);
  dense_impl *d = (dense_impl *)effml__calloc_or_err(ctx, 1, sizeof *d, "dense layer");
  if (!d) return EFFML_E_NOMEM;
  d->has_bias = bias != 0;
  effml_layer *layer = NULL;
  effml_status st = effml__layer_new(ctx, &effml__dense_ops, in_features, out_features, d, &layer);
  if (st != EFFML_OK) {
    effml__free(ctx, d);
    return st;
  }
  int64_t wshape[2] = {out_features, in_features};
  st = effml__layer_add_param(ctx, layer, "weight", 2, wshape, 1, NULL);
  if (st == EFFML_OK && d->has_bias)
    st = effml__layer_add_param(ctx, layer, "bias", 1, &out_features, 1, NULL);
  /* PyTorch's nn.Linear.reset_parameters: kaiming_uniform(a = sqrt(5)) gives
   * U(-1/sqrt(in), 1/sqrt(in)) for W, and the bias uses the same bound. */
  if (st == EFFML_OK && init) st = effml_tensor_init_kaiming_uniform(ctx, effml_layer_param(layer, DENSE_W), sqrt(5.0));
  if (st == EFFML_OK && init && d->has_bias) {
    double bound = 1.0 / sqrt((double)in_features);
    st = effml_tensor_init_uniform(ctx, effml_layer_param(layer, DENSE_B), -bound, bound);
  }
  if (st != EFFML_OK) {
    effml_layer_free(layer);
    return st;
  }
  *out = layer;
  return EFFML_OK;
}
