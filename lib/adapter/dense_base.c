/* The frozen dense base under LoRA and LoKr: any layer with parameters
 * "weight" [out, in] (PyTorch nn.Linear layout) and optionally "bias" [out],
 * e.g. effml_layer_dense_create(), or a GPT-2 Conv1D layer (kind "conv1d",
 * effml_adapter_conv1d_create()) whose "weight" is stored [in, out] (PEFT's
 * fan_in_fan_out).  W below is always the logical [out, in] weight.  The wrapper owns the base layer and exposes its
 * tensors as "base_layer.weight"/"base_layer.bias" (PEFT's in-memory names). */
#include "blas.h"
#include <math.h>
#include <string.h>

#include "adapter_internal.h"

static int32_t find_param(const effml_layer *l, const char *name) {
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
    if (strcmp(effml_layer_param_name(l, i), name) == 0) return i;
  return -1;
}

effml_status effml__wrap_dense_base(effml_context *ctx, effml_layer *base, int64_t *in,
                                    int64_t *out) {
  EFFML__CHECK_NULL(ctx, base);
  int32_t iw = find_param(base, "weight"), ib = find_param(base, "bias");
  if (iw < 0)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "base layer (%s) has no parameter \"weight\"",
                      effml_layer_kind(base));
  const effml_tensor *w = effml_layer_param(base, iw);
  if (w->ndim != 2 || w->dtype != EFFML_F32)
    return effml__err(ctx, EFFML_E_SHAPE, "base layer weight must be f32 [out, in], got %d dims",
                      (int)w->ndim);
  int tr = effml__base_is_transposed(base);
  int64_t nout = w->shape[tr ? 1 : 0];
  if (ib >= 0) {
    const effml_tensor *bb = effml_layer_param(base, ib);
    if (bb->ndim != 1 || bb->shape[0] != nout)
      return effml__err(ctx, EFFML_E_SHAPE, "base layer bias must be [%lld]", (long long)nout);
  }
  *out = nout;
  *in = w->shape[tr ? 0 : 1];
  return EFFML_OK;
}

effml_status effml__register_dense_base(effml_context *ctx, effml_layer *l, effml_layer *base,
                                        int32_t freeze, effml__dense_base *db) {
  int32_t iw = find_param(base, "weight"), ib = find_param(base, "bias");
  db->layer = NULL;
  db->i_weight = db->i_bias = -1;
  if (base->in_container)
    return effml__err(ctx, EFFML_E_STATE, "the base %s layer is already owned by another layer",
                      base->kind);
  db->transposed = effml__base_is_transposed(base);
  effml__param *pw = effml__layer_param_entry(base, iw);
  EFFML__TRY(effml__layer_add_shared_param(ctx, l, "base_layer.weight", pw->value, pw->grad, !freeze));
  db->i_weight = l->n_params - 1;
  l->params[db->i_weight].origin = pw; /* the trainable flag is the base's own */
  if (ib >= 0) {
    effml__param *pb = effml__layer_param_entry(base, ib);
    EFFML__TRY(effml__layer_add_shared_param(ctx, l, "base_layer.bias", pb->value, pb->grad, !freeze));
    db->i_bias = l->n_params - 1;
    l->params[db->i_bias].origin = pb;
  }
  EFFML__TRY(effml__layer_adopt(ctx, l, base)); /* child 0: the base (EFFML__KIND_WRAPS_BASE) */
  pw->trainable = !freeze;
  if (ib >= 0) effml__layer_param_entry(base, ib)->trainable = !freeze;
  db->layer = base;
  return EFFML_OK;
}

int effml__base_is_transposed(const effml_layer *base) {
  return base != NULL && (base->ops->traits & EFFML__KIND_WEIGHT_IN_OUT) != 0;
}

effml_status effml__dense_base_matmul(effml_context *ctx, const effml_layer *l,
                                      const effml__dense_base *db, const float *x, int64_t b,
                                      float beta, float *y) {
  int64_t in = l->in_features, out = l->out_features;
  const float *W = effml__param_f32((effml_layer *)l, db->i_weight);
  if (db->transposed)
    return effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, out, in, 1.0f, x, in, W, out, beta, y,
                        out);
  return effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, out, in, 1.0f, x, in, W, in, beta, y, out);
}

effml_status effml__dense_base_matmul_t(effml_context *ctx, const effml_layer *l,
                                        const effml__dense_base *db, const float *dy, int64_t b,
                                        float beta, float *dx) {
  int64_t in = l->in_features, out = l->out_features;
  const float *W = effml__param_f32((effml_layer *)l, db->i_weight);
  if (db->transposed)
    return effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, in, out, 1.0f, dy, out, W, out, beta, dx,
                        in);
  return effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, in, out, 1.0f, dy, out, W, in, beta, dx,
                      in);
}

effml_status effml__dense_base_wgrad(effml_context *ctx, effml_layer *l,
                                     const effml__dense_base *db, const float *dy, const float *x,
                                     int64_t b) {
  int64_t in = l->in_features, out = l->out_features;
  float *G = effml__grad_f32(l, db->i_weight);
  if (db->transposed)
    return effml__sgemm(ctx, CblasTrans, CblasNoTrans, in, out, b, 1.0f, x, in, dy, out, 1.0f, G,
                        out);
  return effml__sgemm(ctx, CblasTrans, CblasNoTrans, out, in, b, 1.0f, dy, out, x, in, 1.0f, G, in);
}

effml_status effml__dense_base_forward(effml_context *ctx, effml_layer *l,
                                       const effml__dense_base *db, const float *x, int64_t b,
                                       float *y) {
  int64_t out = l->out_features;
  EFFML__TRY(effml__dense_base_matmul(ctx, l, db, x, b, 0.0f, y));
  if (db->i_bias >= 0) effml__bias_add(y, effml__param_f32(l, db->i_bias), b, out);
  return EFFML_OK;
}

effml_status effml__dense_base_backward(effml_context *ctx, effml_layer *l,
                                        const effml__dense_base *db, const float *x,
                                        const float *dy, int64_t b, float *dx) {
  int64_t out = l->out_features;
  if (dx) EFFML__TRY(effml__dense_base_matmul_t(ctx, l, db, dy, b, 0.0f, dx));
  if (effml__param_trainable(l, db->i_weight))
    EFFML__TRY(effml__dense_base_wgrad(ctx, l, db, dy, x, b));
  if (db->i_bias >= 0 && effml__param_trainable(l, db->i_bias))
    effml__bias_grad(effml__grad_f32(l, db->i_bias), dy, b, out);
  return EFFML_OK;
}

void effml__dense_base_rows(const effml_layer *l, const effml__dense_base *db, int64_t j0, int64_t nb,
                            float *T) {
  int64_t in = l->in_features, out = l->out_features;
  const float *W = effml__param_f32((effml_layer *)l, db->i_weight);
  if (!db->transposed) {
    memcpy(T, W + j0 * in, (size_t)(nb * in) * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < nb; ++j) T[j * in + i] = W[i * out + j0 + j];
}

void effml__dense_base_set_rows(effml_layer *l, const effml__dense_base *db, int64_t j0, int64_t nb,
                                const float *T) {
  int64_t in = l->in_features, out = l->out_features;
  float *W = effml__param_f32(l, db->i_weight);
  if (!db->transposed) {
    memcpy(W + j0 * in, T, (size_t)(nb * in) * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < nb; ++j) W[i * out + j0 + j] = T[j * in + i];
}

void effml__init_kaiming_uniform(effml_context *ctx, float *w, int64_t rows, int64_t cols,
                                 double a) {
  double gain = sqrt(2.0 / (1.0 + a * a)), bound = gain * sqrt(3.0 / (double)cols);
  effml__fill_uniform_sym_f32(effml__ctx_rng(ctx), w, rows * cols, bound);
}
