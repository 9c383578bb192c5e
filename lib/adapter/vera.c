/* VeRA (Kopiczko, Blankevoort, Asano 2024, "VeRA: Vector-based Random Matrix
 * Adaptation", arXiv 2310.11454, eq. 1; PEFT VeRA Linear): one frozen random pair
 * A [r, max_in], B [max_out, r] shared by the model, each module using the leading
 * slices A_s = A[:, :in], B_s = B[:out, :], and two trained vectors per module:
 *   y = x W^T + b + lb .* ((ld .* (x A_s^T)) B_s^T),   dW = diag(lb) B_s diag(ld) A_s.
 * Parameters: "vera_A" [r, in] and "vera_B" [out, r] (this module's slices, frozen),
 * "vera_lambda_d" [r], "vera_lambda_b" [out].  Backward, U = x A_s^T, V = ld .* U,
 * P = V B_s^T:  dlb = sum_rows dy .* P;  dV = (dy .* lb) B_s;  dld = sum_rows dV .* U;
 *   dx = dy W + (dV .* ld) A_s.  Merge W += dW (PEFT), unmerge subtracts it.
 * vera_dropout p (PEFT: nn.Dropout on the adapter's input): in TRAIN, U = x_d A_s^T with
 * x_d = x .* mask, mask in {0, 1/(1-p)} (adapter_dropout.c, as LoRA's lora_dropout); the base
 * sees x.  Backward then adds ((dV .* ld) A_s) .* mask to dx. */
#include "blas.h"
#include <string.h>

#include "adapter_internal.h"

typedef struct effml__vera {
  effml__dense_base base;
  int64_t r;
  int32_t merged;
  int32_t i_a, i_b, i_ld, i_lb;
  const float *x;
  int64_t batch;
  float *U, *P; /* [b, r], [b, out] of the last TRAIN forward */
  size_t cap_u, cap_p;
  double dropout;    /* vera_dropout */
  int32_t dropped;   /* the last TRAIN forward applied dropout: xd, mask valid */
  float *xd, *mask;  /* [batch, in] */
  size_t cap_x;
} effml__vera;

static void vera_destroy(effml_layer *l) {
  effml__vera *p = (effml__vera *)l->impl;
  if (p == NULL) return;
  effml__free(l->ctx, p->U);
  effml__free(l->ctx, p->P);
  effml__free(l->ctx, p->xd);
  effml__free(l->ctx, p->mask);
  effml__free(l->ctx, p);
}

static effml_status vera_forward(effml_context *ctx, effml_layer *l, const effml_tensor *xt, effml_tensor *yt,
                                 int32_t mode) {
  effml__vera *p = (effml__vera *)l->impl;
  int64_t b = xt->shape[0], in = l->in_features, out = l->out_features, r = p->r;
  const float *x = effml__cf32(xt), *A = effml__param_f32(l, p->i_a), *B = effml__param_f32(l, p->i_b);
  const float *ld = effml__param_f32(l, p->i_ld), *lb = effml__param_f32(l, p->i_lb);
  float *y = effml__f32(yt);
  int train = mode == EFFML_LAYER_MODE_TRAIN;
  if (p->merged && train)
    return effml__err(ctx, EFFML_E_STATE, "vera forward: a merged VeRA layer cannot train; unmerge it first");
  const float *xin = x; /* the adapter's input: dropped in TRAIN when vera_dropout > 0 */
  if (train) {
    p->dropped = 0;
    if (p->dropout > 0.0) {
      if (!effml__input_dropout(ctx, p->dropout, x, (size_t)(b * in), &p->xd, &p->mask, &p->cap_x))
        return effml__err(ctx, EFFML_E_NOMEM, "vera forward: out of memory (dropout)");
      p->dropped = 1;
      xin = p->xd;
    }
  }
  EFFML__TRY(effml__dense_base_forward(ctx, l, &p->base, x, b, y));
  if (p->merged) return EFFML_OK;
  float *U = NULL, *P = NULL;
  if (!effml__fwd_scratch(ctx, train, &p->U, &p->cap_u, (size_t)(b * r), &U) ||
      !effml__fwd_scratch(ctx, train, &p->P, &p->cap_p, (size_t)(b * out), &P)) {
    effml__fwd_scratch_done(ctx, train, U);
    return effml__err(ctx, EFFML_E_NOMEM, "vera forward: out of memory");
  }
  float *V = (float *)effml__malloc(ctx, (size_t)(b * r) * sizeof(float));
  effml_status st =
      V ? effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, r, in, 1.0f, xin, in, A, in, 0.0f, U, r)
        : effml__err(ctx, EFFML_E_NOMEM, "vera forward: out of memory");
  if (st == EFFML_OK) {
    for (int64_t i = 0; i < b; ++i)
      for (int64_t k = 0; k < r; ++k) V[i * r + k] = ld[k] * U[i * r + k];
    st = effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, out, r, 1.0f, V, r, B, r, 0.0f, P, out);
  }
  if (st == EFFML_OK)
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < out; ++j) y[i * out + j] += lb[j] * P[i * out + j];
  effml__free(ctx, V);
  effml__fwd_scratch_done(ctx, train, U);
  effml__fwd_scratch_done(ctx, train, P);
  if (st == EFFML_OK && train) {
    p->x = x;
    p->batch = b;
  }
  return st;
}

static effml_status vera_backward(effml_context *ctx, effml_layer *l, const effml_tensor *dyt, effml_tensor *dxt) {
  effml__vera *p = (effml__vera *)l->impl;
  int64_t b = p->batch, in = l->in_features, out = l->out_features, r = p->r;
  const float *dy = effml__cf32(dyt), *A = effml__param_f32(l, p->i_a), *B = effml__param_f32(l, p->i_b);
  const float *ld = effml__param_f32(l, p->i_ld), *lb = effml__param_f32(l, p->i_lb);
  float *dx = dxt ? effml__f32(dxt) : NULL;
  float *dyb = (float *)effml__malloc(ctx, (size_t)(b * out + b * r) * sizeof(float));
  if (dyb == NULL) return effml__err(ctx, EFFML_E_NOMEM, "vera backward: out of memory");
  float *dV = dyb + b * out;
  if (effml__param_trainable(l, p->i_lb)) {
    float *g = effml__grad_f32(l, p->i_lb);
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < out; ++j) g[j] += dy[i * out + j] * p->P[i * out + j];
  }
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < out; ++j) dyb[i * out + j] = dy[i * out + j] * lb[j];
  effml_status st =
      effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, r, out, 1.0f, dyb, out, B, r, 0.0f, dV, r);
  if (st == EFFML_OK && effml__param_trainable(l, p->i_ld)) {
    float *g = effml__grad_f32(l, p->i_ld);
    for (int64_t i = 0; i < b; ++i)
      for (int64_t k = 0; k < r; ++k) g[k] += dV[i * r + k] * p->U[i * r + k];
  }
  if (st == EFFML_OK) st = effml__dense_base_backward(ctx, l, &p->base, p->x, dy, b, dx);
  if (st == EFFML_OK && dx) {
    for (int64_t i = 0; i < b; ++i)
      for (int64_t k = 0; k < r; ++k) dV[i * r + k] *= ld[k];
    if (!p->dropped) {
      st = effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, in, r, 1.0f, dV, r, A, in, 1.0f, dx, in);
    } else { /* through the dropout mask */
      float *t = (float *)effml__malloc(ctx, (size_t)(b * in) * sizeof(float));
      st = t ? effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, in, r, 1.0f, dV, r, A, in, 0.0f, t, in)
             : effml__err(ctx, EFFML_E_NOMEM, "vera backward: out of memory");
      if (st == EFFML_OK)
        for (int64_t i = 0; i < b * in; ++i) dx[i] += t[i] * p->mask[i];
      effml__free(ctx, t);
    }
  }
  effml__free(ctx, dyb);
  return st;
}

static effml_status vera_flops(effml_context *ctx, const effml_layer *l, int64_t in_width, double *flops) {
  EFFML__TRY(effml__layer_flops(ctx, effml__layer_child(l, 0), in_width, flops));
  const effml__vera *p = (const effml__vera *)l->impl;
  *flops += 2.0 * (double)p->r * (double)(l->in_features + l->out_features) + (double)p->r + 2.0 * (double)l->out_features;
  return EFFML_OK;
}

const effml__layer_ops effml__vera_ops = {
    .name = "vera",
    .forward = vera_forward,
    .backward = vera_backward,
    .destroy = vera_destroy,
    .flops = vera_flops,
    .traits = EFFML__KIND_WRAPS_BASE,
};

static effml__vera *as_vera(const effml_layer *l) {
  return (l && l->ops == &effml__vera_ops) ? (effml__vera *)l->impl : NULL;
}

int effml__is_vera(const effml_layer *l) { return as_vera(l) != NULL; }

effml_status effml_adapter_vera_create(effml_context *ctx, effml_layer *base, int64_t rank, double d_initial,
                                       effml_layer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, base);
  EFFML__CHECK_NULL(ctx, out);
  if (rank < 1 || rank > 65536)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_vera_create: rank=%lld must be in [1, 65536]", (long long)rank);
  int64_t in = 0, nout = 0;
  EFFML__TRY(effml__wrap_dense_base(ctx, base, &in, &nout));
  effml__vera *p = (effml__vera *)effml__calloc_or_err(ctx, 1, sizeof *p, "a vera layer");
  if (p == NULL) return EFFML_E_NOMEM;
  p->r = rank;
  effml_layer *l = NULL;
  effml_status st = effml__layer_new(ctx, &effml__vera_ops, in, nout, p, &l);
  if (st != EFFML_OK) {
    effml__free(ctx, p);
    return st;
  }
  st = effml__register_dense_base(ctx, l, base, 1, &p->base);
  int64_t sa[2] = {rank, in}, sb[2] = {nout, rank};
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "vera_A", 2, sa, 0, &p->i_a);
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "vera_B", 2, sb, 0, &p->i_b);
  if (st == EFFML_OK) { /* frozen by definition; backward computes no gradient for them */
    static const char why[] = "VeRA's random projections vera_A/vera_B are frozen by definition "
                              "(Kopiczko et al. 2024, arXiv 2310.11454, eq. 1; PEFT keeps them as "
                              "buffers): only vera_lambda_d and vera_lambda_b train";
    effml__layer_param_entry(l, p->i_a)->fixed = why;
    effml__layer_param_entry(l, p->i_b)->fixed = why;
  }
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "vera_lambda_d", 1, &rank, 1, &p->i_ld);
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "vera_lambda_b", 1, &nout, 1, &p->i_lb);
  if (st != EFFML_OK) {
    effml__layer_disown(l, p->base.layer);
    effml_layer_free(l);
    return st;
  }
  /* PEFT: lambda_b = 0 (dW = 0), lambda_d = d_initial; projections kaiming_uniform here (PEFT draws
   * them from torch's generator with projection_prng_key, which is not reproduced) */
  double a5 = 2.23606797749979;
  effml__init_kaiming_uniform(ctx, effml__param_f32(l, p->i_a), rank, in, a5);
  effml__init_kaiming_uniform(ctx, effml__param_f32(l, p->i_b), nout, rank, a5);
  float *ld = effml__param_f32(l, p->i_ld);
  for (int64_t k = 0; k < rank; ++k) ld[k] = (float)d_initial;
  *out = l;
  return EFFML_OK;
}

static effml_status vera_merge_common(effml_context *ctx, effml_layer *l, int to_merged) {
  EFFML__CHECK_NULL(ctx, ctx);
  effml__vera *p = as_vera(l);
  if (p == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "layer is not a vera layer");
  if (p->merged == to_merged)
    return effml__err(ctx, EFFML_E_STATE, "the layer is %s merged",
                      to_merged ? "already" : "not");
  int64_t in = l->in_features, out = l->out_features, r = p->r;
  const float *A = effml__param_f32(l, p->i_a), *B = effml__param_f32(l, p->i_b);
  const float *ld = effml__param_f32(l, p->i_ld), *lb = effml__param_f32(l, p->i_lb);
  float *T = (float *)effml__malloc(ctx, (size_t)in * sizeof(float));
  if (T == NULL) return effml__err(ctx, EFFML_E_NOMEM, "out of memory");
  float sign = to_merged ? 1.0f : -1.0f;
  for (int64_t j = 0; j < out; ++j) { /* logical row j of W: += lb_j sum_k B_jk ld_k A_k */
    effml__dense_base_rows(l, &p->base, j, 1, T);
    for (int64_t k = 0; k < r; ++k) {
      float c = sign * lb[j] * B[j * r + k] * ld[k];
      const float *a = A + k * in;
      for (int64_t i = 0; i < in; ++i) T[i] += c * a[i];
    }
    effml__dense_base_set_rows(l, &p->base, j, 1, T);
  }
  effml__free(ctx, T);
  p->merged = to_merged;
  l->train_pending = 0;
  return EFFML_OK;
}

effml_status effml_adapter_vera_merge(effml_context *ctx, effml_layer *layer) {
  EFFML__ENTER(ctx);
  return vera_merge_common(ctx, layer, 1);
}
effml_status effml_adapter_vera_unmerge(effml_context *ctx, effml_layer *layer) {
  EFFML__ENTER(ctx);
  return vera_merge_common(ctx, layer, 0);
}

effml_status effml_adapter_vera_set_dropout(effml_context *ctx, effml_layer *layer, double p) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  effml__vera *v = as_vera(layer);
  if (v == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_vera_set_dropout: layer is not a vera layer");
  if (!(p >= 0.0 && p < 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_vera_set_dropout: p=%g must be in [0, 1)", p);
  v->dropout = p;
  return EFFML_OK;
}

double effml_adapter_vera_dropout(const effml_layer *layer) {
  const effml__vera *v = as_vera(layer);
  return v ? v->dropout : 0.0;
}

int effml__vera_dropout_probe(const effml_layer *l, effml__dropout_probe *out) {
  const effml__vera *p = as_vera(l);
  if (p == NULL) return 0;
  out->dropped = p->dropped;
  out->in_mask = p->dropped ? p->mask : NULL;
  return 1;
}

void effml__vera_info(const effml_layer *layer, effml__adapter_info *in) {
  const effml__vera *p = as_vera(layer);
  in->dropout = p->dropout;
  in->r = p->r;
  in->merged = p->merged;
  in->transposed = p->base.transposed;
}
