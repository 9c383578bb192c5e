/* IA3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and
 * Cheaper than In-Context Learning", arXiv 2205.05638, section 3.3; PEFT IA3 Linear):
 * a learned vector l rescales a dense base's output or, for feed-forward modules,
 * its input:
 *   attention-style:  y = (x W^T + b) .* l,  l "ia3_l" [out, 1]
 *   feed-forward:     y = (x .* l) W^T + b,  l "ia3_l" [1, in]
 * Backward (z = x W^T + b, u = x .* l):
 *   output: dl_j = sum_rows dy_j z_j;  dz = dy .* l;  dx = dz W
 *   input:  du = dy W;  dl_k = sum_rows du_k x_k;  dx = du .* l
 * Merge (PEFT): output scaling multiplies the rows of W and the bias; input scaling
 * multiplies the columns of W; unmerge divides again. */
#include <string.h>

#include "adapter_internal.h"

typedef struct effml__ia3 {
  effml__dense_base base;
  int32_t feedforward, merged;
  int32_t i_l;
  const float *x;
  int64_t batch;
  float *buf; /* TRAIN: z [b, out] (output) or u [b, in] (feed-forward) */
  size_t cap;
} effml__ia3;

static void ia3_destroy(effml_layer *l) {
  effml__ia3 *p = (effml__ia3 *)l->impl;
  if (p == NULL) return;
  effml__free(l->ctx, p->buf);
  effml__free(l->ctx, p);
}

static effml_status ia3_forward(effml_context *ctx, effml_layer *l, const effml_tensor *xt, effml_tensor *yt,
                                int32_t mode) {
  effml__ia3 *p = (effml__ia3 *)l->impl;
  int64_t b = xt->shape[0], in = l->in_features, out = l->out_features;
  const float *x = effml__cf32(xt), *s = effml__param_f32(l, p->i_l);
  float *y = effml__f32(yt);
  int train = mode == EFFML_LAYER_MODE_TRAIN;
  if (p->merged) {
    if (train)
      return effml__err(ctx, EFFML_E_STATE, "ia3 forward: a merged IA3 layer cannot train; unmerge it first");
    return effml__dense_base_forward(ctx, l, &p->base, x, b, y);
  }
  if (p->feedforward) {
    float *u = NULL;
    if (!effml__fwd_scratch(ctx, train, &p->buf, &p->cap, (size_t)(b * in), &u))
      return effml__err(ctx, EFFML_E_NOMEM, "ia3 forward: out of memory");
    for (int64_t i = 0; i < b; ++i)
      for (int64_t k = 0; k < in; ++k) u[i * in + k] = x[i * in + k] * s[k];
    effml_status st = effml__dense_base_forward(ctx, l, &p->base, u, b, y);
    effml__fwd_scratch_done(ctx, train, u);
    if (st != EFFML_OK) return st;
  } else {
    EFFML__TRY(effml__dense_base_forward(ctx, l, &p->base, x, b, y));
    if (train) {
      if (!effml__grow_f32(ctx, &p->buf, &p->cap, (size_t)(b * out)))
        return effml__err(ctx, EFFML_E_NOMEM, "ia3 forward: out of memory");
      memcpy(p->buf, y, (size_t)(b * out) * sizeof(float));
    }
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < out; ++j) y[i * out + j] *= s[j];
  }
  if (train) {
    p->x = x;
    p->batch = b;
  }
  return EFFML_OK;
}

static effml_status ia3_backward(effml_context *ctx, effml_layer *l, const effml_tensor *dyt, effml_tensor *dxt) {
  effml__ia3 *p = (effml__ia3 *)l->impl;
  int64_t b = p->batch, in = l->in_features, out = l->out_features;
  const float *dy = effml__cf32(dyt), *s = effml__param_f32(l, p->i_l), *x = p->x;
  float *dx = dxt ? effml__f32(dxt) : NULL;
  int tl = effml__param_trainable(l, p->i_l);
  if (p->feedforward) {
    float *du = (float *)effml__malloc(ctx, (size_t)(b * in) * sizeof(float));
    if (du == NULL) return effml__err(ctx, EFFML_E_NOMEM, "ia3 backward: out of memory");
    /* base grads see u = x .* l */
    effml_status st = effml__dense_base_backward(ctx, l, &p->base, p->buf, dy, b, du);
    if (st != EFFML_OK) {
      effml__free(ctx, du);
      return st;
    }
    if (tl) {
      float *g = effml__grad_f32(l, p->i_l);
      for (int64_t i = 0; i < b; ++i)
        for (int64_t k = 0; k < in; ++k) g[k] += du[i * in + k] * x[i * in + k];
    }
    if (dx)
      for (int64_t i = 0; i < b; ++i)
        for (int64_t k = 0; k < in; ++k) dx[i * in + k] = du[i * in + k] * s[k];
    effml__free(ctx, du);
    return EFFML_OK;
  }
  float *dz = (float *)effml__malloc(ctx, (size_t)(b * out) * sizeof(float));
  if (dz == NULL) return effml__err(ctx, EFFML_E_NOMEM, "ia3 backward: out of memory");
  if (tl) {
    float *g = effml__grad_f32(l, p->i_l);
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < out; ++j) g[j] += dy[i * out + j] * p->buf[i * out + j];
  }
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < out; ++j) dz[i * out + j] = dy[i * out + j] * s[j];
  effml_status st = effml__dense_base_backward(ctx, l, &p->base, x, dz, b, dx);
  effml__free(ctx, dz);
  return st;
}

static effml_status ia3_flops(effml_context *ctx, const effml_layer *l, int64_t in_width, double *flops) {
  EFFML__TRY(effml__layer_flops(ctx, effml__layer_child(l, 0), in_width, flops));
  const effml__ia3 *p = (const effml__ia3 *)l->impl;
  *flops += (double)(p->feedforward ? l->in_features : l->out_features); /* one multiply per element */
  return EFFML_OK;
}

const effml__layer_ops effml__ia3_ops = {
    .name = "ia3",
    .forward = ia3_forward,
    .backward = ia3_backward,
    .destroy = ia3_destroy,
    .flops = ia3_flops,
    .traits = EFFML__KIND_WRAPS_BASE,
};

static effml__ia3 *as_ia3(const effml_layer *l) {
  return (l && l->ops == &effml__ia3_ops) ? (effml__ia3 *)l->impl : NULL;
}

int effml__is_ia3(const effml_layer *l) { return as_ia3(l) != NULL; }

effml_status effml_adapter_ia3_create(effml_context *ctx, effml_layer *base, int32_t feedforward, effml_layer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, base);
  EFFML__CHECK_NULL(ctx, out);
  int64_t in = 0, nout = 0;
  EFFML__TRY(effml__wrap_dense_base(ctx, base, &in, &nout));
  effml__ia3 *p = (effml__ia3 *)effml__calloc_or_err(ctx, 1, sizeof *p, "an ia3 layer");
  if (p == NULL) return EFFML_E_NOMEM;
  p->feedforward = feedforward != 0;
  effml_layer *l = NULL;
  effml_status st = effml__layer_new(ctx, &effml__ia3_ops, in, nout, p, &l);
  if (st != EFFML_OK) {
    effml__free(ctx, p);
    return st;
  }
  st = effml__register_dense_base(ctx, l, base, 1, &p->base);
  int64_t shape[2] = {p->feedforward ? 1 : nout, p->feedforward ? in : 1};
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "ia3_l", 2, shape, 1, &p->i_l);
  if (st != EFFML_OK) {
    effml__layer_disown(l, p->base.layer);
    effml_layer_free(l);
    return st;
  }
  float *s = effml__param_f32(l, p->i_l); /* PEFT init_ia3_weights: ones (identity) */
  for (int64_t k = 0; k < shape[0] * shape[1]; ++k) s[k] = 1.0f;
  *out = l;
  return EFFML_OK;
}

static effml_status ia3_merge_common(effml_context *ctx, effml_layer *l, int to_merged) {
  EFFML__CHECK_NULL(ctx, ctx);
  effml__ia3 *p = as_ia3(l);
  if (p == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "layer is not an ia3 layer");
  if (p->merged == to_merged)
    return effml__err(ctx, EFFML_E_STATE, "the layer is %s merged",
                      to_merged ? "already" : "not");
  const float *s = effml__param_f32(l, p->i_l);
  if (!to_merged) { /* PEFT divides by l (+1e-8): refuse an exact zero instead of inventing weights */
    int64_t n = p->feedforward ? l->in_features : l->out_features;
    for (int64_t k = 0; k < n; ++k)
      if (s[k] == 0.0f)
        return effml__err(ctx, EFFML_E_NUMERIC, "ia3_l[%lld] = 0, the merge cannot be undone", (long long)k);
  }
  int64_t in = l->in_features, out = l->out_features;
  float *T = (float *)effml__malloc(ctx, (size_t)in * sizeof(float));
  if (T == NULL) return effml__err(ctx, EFFML_E_NOMEM, "out of memory");
  for (int64_t j = 0; j < out; ++j) { /* logical rows of W, whatever the storage */
    effml__dense_base_rows(l, &p->base, j, 1, T);
    for (int64_t k = 0; k < in; ++k) {
      float f = p->feedforward ? s[k] : s[j];
      T[k] = to_merged ? T[k] * f : T[k] / f;
    }
    effml__dense_base_set_rows(l, &p->base, j, 1, T);
  }
  effml__free(ctx, T);
  if (!p->feedforward && p->base.i_bias >= 0) {
    float *bias = effml__param_f32(l, p->base.i_bias);
    for (int64_t j = 0; j < out; ++j) bias[j] = to_merged ? bias[j] * s[j] : bias[j] / s[j];
  }
  p->merged = to_merged;
  l->train_pending = 0;
  return EFFML_OK;
}

effml_status effml_adapter_ia3_merge(effml_context *ctx, effml_layer *layer) {
  EFFML__ENTER(ctx);
  return ia3_merge_common(ctx, layer, 1);
}
effml_status effml_adapter_ia3_unmerge(effml_context *ctx, effml_layer *layer) {
  EFFML__ENTER(ctx);
  return ia3_merge_common(ctx, layer, 0);
}

void effml__ia3_info(const effml_layer *layer, effml__adapter_info *in) {
  const effml__ia3 *p = as_ia3(layer);
  in->feedforward = p->feedforward;
  in->merged = p->merged;
  in->transposed = p->base.transposed;
}
