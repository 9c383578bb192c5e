/* GPT-2's Conv1D (HF transformers pytorch_utils.Conv1D): a dense layer whose
 * weight is stored [in, out] -- the layout PEFT calls fan_in_fan_out.
 *   forward : y = x W + b        (W [in, out])
 *   backward: dW += x^T dy;  db += sum_rows dy;  dx = dy W^T
 * It exists so that a LoRA/DoRA layer can wrap such a base without the user
 * transposing weights by hand (the wrapper reads the layout from the kind). */
#include "blas.h"
#include <string.h>

#include "adapter_internal.h"

typedef struct conv1d_impl {
  int32_t has_bias;
  const float *x;
} conv1d_impl;

static effml_status conv1d_forward(effml_context *ctx, effml_layer *l, const effml_tensor *x,
                                   effml_tensor *y, int32_t mode) {
  (void)ctx;
  conv1d_impl *d = (conv1d_impl *)l->impl;
  int64_t b = x->shape[0], in = l->in_features, out = l->out_features;
  float *Y = effml__f32(y);
  float beta = 0.0f;
  if (d->has_bias) {
    const float *bias = effml__param_f32(l, 1);
    for (int64_t i = 0; i < b; ++i) memcpy(Y + i * out, bias, (size_t)out * sizeof(float));
    beta = 1.0f;
  }
  EFFML__TRY(effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, out, in, 1.0f, effml__cf32(x), in,
                          effml__param_f32(l, 0), out, beta, Y, out));
  if (mode == EFFML_LAYER_MODE_TRAIN) d->x = effml__cf32(x);
  return EFFML_OK;
}

static effml_status conv1d_backward(effml_context *ctx, effml_layer *l, const effml_tensor *dyt,
                                    effml_tensor *dx) {
  conv1d_impl *d = (conv1d_impl *)l->impl;
  int64_t b = dyt->shape[0], in = l->in_features, out = l->out_features;
  const float *dy = effml__cf32(dyt);
  if (effml__param_trainable(l, 0))
    EFFML__TRY(effml__sgemm(ctx, CblasTrans, CblasNoTrans, in, out, b, 1.0f, d->x, in, dy, out,
                            1.0f, effml__grad_f32(l, 0), out));
  if (d->has_bias && effml__param_trainable(l, 1)) effml__bias_grad(effml__grad_f32(l, 1), dy, b, out);
  if (dx)
    EFFML__TRY(effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, in, out, 1.0f, dy, out,
                            effml__param_f32(l, 0), out, 0.0f, effml__f32(dx), in));
  d->x = NULL;
  return EFFML_OK;
}

static void conv1d_destroy(effml_layer *l) { effml__free(l->ctx, l->impl); }

/* As a dense layer: 2·in·out − out for the product, + out for the bias. */
static effml_status conv1d_flops(effml_context *ctx, const effml_layer *l, int64_t in_width,
                                 double *flops) {
  const conv1d_impl *d = (const conv1d_impl *)l->impl;
  const double out = (double)l->out_features;
  *flops = 2.0 * (double)l->in_features * out - out + (d->has_bias ? out : 0.0);
  return EFFML_OK;
}

const effml__layer_ops effml__conv1d_ops = {
    .name = "conv1d",
    .forward = conv1d_forward,
    .backward = conv1d_backward,
    .destroy = conv1d_destroy,
    .flops = conv1d_flops,
    .traits = EFFML__KIND_WEIGHT_IN_OUT,
};

static effml_status conv1d_create(effml_context *ctx, int64_t in_features, int64_t out_features, int32_t bias,
                                  int32_t init, effml_layer **out);

effml_status effml_adapter_conv1d_create(effml_context *ctx, int64_t in_features, int64_t out_features, int32_t bias,
                                 effml_layer **out) {
  EFFML__ENTER(ctx);
  return conv1d_create(ctx, in_features, out_features, bias, 1, out);
}

effml_status effml__conv1d_create_uninit(effml_context *ctx, int64_t in_features, int64_t out_features, int32_t bias,
                                         effml_layer **out) {
  return conv1d_create(ctx, in_features, out_features, bias, 0, out);
}

static effml_status conv1d_create(effml_context *ctx, int64_t in_features, int64_t out_features, int32_t bias,
                                  int32_t init, effml_layer **out) {
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out);
  if (in_features < 1 || out_features < 1 || in_features > INT32_MAX || out_features > INT32_MAX)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_adapter_conv1d_create: in_features=%lld and out_features=%lld must be in [1, 2^31-1]",
                      (long long)in_features, (long long)out_features);
  conv1d_impl *d = (conv1d_impl *)effml__calloc_or_err(ctx, 1, sizeof *d, "conv1d layer");
  if (d == NULL) return EFFML_E_NOMEM;
  d->has_bias = bias != 0;
  effml_layer *l = NULL;
  effml_status st = effml__layer_new(ctx, &effml__conv1d_ops, in_features, out_features, d, &l);
  if (st != EFFML_OK) {
    effml__free(ctx, d);
    return st;
  }
  int64_t ws[2] = {in_features, out_features};
  st = effml__layer_add_param(ctx, l, "weight", 2, ws, 1, NULL);
  if (st == EFFML_OK && d->has_bias) st = effml__layer_add_param(ctx, l, "bias", 1, &out_features, 1, NULL);
  if (st == EFFML_OK && init) { /* GPT-2: weight ~ N(0, 0.02^2), bias 0 */
    effml__fill_normal_f32(effml__ctx_rng(ctx), effml__param_f32(l, 0), in_features * out_features, 0.02);
  }
  if (st != EFFML_OK) {
    effml_layer_free(l);
    return st;
  }
  *out = l;
  return EFFML_OK;
}
