/* LoHa (Hyeon-Woo et al. 2022, FedPara, arXiv 2108.06098, eq. 2; PEFT LoHa Linear):
 *   dW = s (W1a W1b) .* (W2a W2b),  W1a, W2a [out, r], W1b, W2b [r, in], s = alpha / r.
 * The Hadamard product of two rank-r products is a rank-r^2 product of Khatri-Rao factors:
 *   dW = s Ak Bk,  Ak[:, p r + q] = W1a[:, p] .* W2a[:, q]  [out, r^2],
 *                  Bk[p r + q, :] = W1b[p, :] .* W2b[q, :]  [r^2, in],
 * so the forward never builds dW: U = x Bk^T, y = x W^T + b + s U Ak^T -- r^2 (in + out) MACs per row
 * plus r^2 (in + out) to form Ak and Bk, against out*in per row (and out*in*2r once) for PEFT's
 * materialised dW.  Backward: dU = s dy Ak; dAk = s dy^T U; dBk = dU^T x; dx = dy W + dU Bk;
 *   dW1a[:, p] = sum_q dAk[:, pq] .* W2a[:, q],  dW2a[:, q] = sum_p dAk[:, pq] .* W1a[:, p]
 *   dW1b[p, :] = sum_q dBk[pq, :] .* W2b[q, :],  dW2b[q, :] = sum_p dBk[pq, :] .* W1b[p, :].
 * Merge: W += s Ak Bk (PEFT merge); unmerge subtracts it.
 * Training dropouts (PEFT LoHaLayer; adapter_dropout.c): module_dropout skips the delta for a
 * whole TRAIN forward (backward then gives dx = dy W and no factor gradient); rank_dropout
 * multiplies output column j of the delta by m_j (m over the out rows of dW, divided by its
 * mean), so the backward above runs with dy .* m in place of dy. */
#include "blas.h"
#include <math.h>
#include <string.h>

#include "adapter_internal.h"

typedef struct effml__loha {
  effml__dense_base base;
  int64_t r;
  double alpha, scale;
  int32_t merged;
  int32_t i_w1a, i_w1b, i_w2a, i_w2b;
  const float *x;
  int64_t batch;
  float *Ak, *Bk, *U; /* [out, r^2], [r^2, in], [b, r^2] of the last TRAIN forward */
  size_t cap_a, cap_b, cap_u;
  effml__delta_dropout dd; /* rank_dropout / module_dropout (always scaled by the mask mean) */
} effml__loha;

static void loha_destroy(effml_layer *l) {
  effml__loha *p = (effml__loha *)l->impl;
  if (p == NULL) return;
  effml__free(l->ctx, p->Ak);
  effml__free(l->ctx, p->Bk);
  effml__free(l->ctx, p->U);
  effml__free(l->ctx, p->dd.row_mask);
  effml__free(l->ctx, p);
}

/* Khatri-Rao factors of the current weights into Ak [out, r^2] and Bk [r^2, in]. */
static void khatri_rao(effml_layer *l, const effml__loha *p, float *Ak, float *Bk) {
  int64_t r = p->r, in = l->in_features, out = l->out_features, rr = r * r;
  const float *a1 = effml__param_f32(l, p->i_w1a), *a2 = effml__param_f32(l, p->i_w2a);
  const float *b1 = effml__param_f32(l, p->i_w1b), *b2 = effml__param_f32(l, p->i_w2b);
  for (int64_t j = 0; j < out; ++j)
    for (int64_t pp = 0; pp < r; ++pp)
      for (int64_t q = 0; q < r; ++q) Ak[j * rr + pp * r + q] = a1[j * r + pp] * a2[j * r + q];
  for (int64_t pp = 0; pp < r; ++pp)
    for (int64_t q = 0; q < r; ++q) {
      float *dst = Bk + (pp * r + q) * in;
      const float *u = b1 + pp * in, *v = b2 + q * in;
      for (int64_t k = 0; k < in; ++k) dst[k] = u[k] * v[k];
    }
}

static effml_status loha_forward(effml_context *ctx, effml_layer *l, const effml_tensor *xt, effml_tensor *yt,
                                 int32_t mode) {
  effml__loha *p = (effml__loha *)l->impl;
  int64_t b = xt->shape[0], in = l->in_features, out = l->out_features, rr = p->r * p->r;
  const float *x = effml__cf32(xt);
  float *y = effml__f32(yt);
  int train = mode == EFFML_LAYER_MODE_TRAIN;
  if (p->merged && train)
    return effml__err(ctx, EFFML_E_STATE, "loha forward: a merged LoHa layer cannot train; unmerge it first");
  if (train) EFFML__TRY(effml__delta_dropout_draw(ctx, &p->dd, out, "loha forward"));
  EFFML__TRY(effml__dense_base_forward(ctx, l, &p->base, x, b, y));
  if (p->merged) return EFFML_OK;
  if (train && p->dd.skipped) { /* module dropout: the base alone */
    p->x = x;
    p->batch = b;
    return EFFML_OK;
  }
  float *Ak = NULL, *Bk = NULL, *U = NULL;
  if (!effml__fwd_scratch(ctx, train, &p->Ak, &p->cap_a, (size_t)(out * rr), &Ak) ||
      !effml__fwd_scratch(ctx, train, &p->Bk, &p->cap_b, (size_t)(rr * in), &Bk) ||
      !effml__fwd_scratch(ctx, train, &p->U, &p->cap_u, (size_t)(b * rr), &U)) {
    effml__fwd_scratch_done(ctx, train, Ak);
    effml__fwd_scratch_done(ctx, train, Bk);
    return effml__err(ctx, EFFML_E_NOMEM, "loha forward: out of memory");
  }
  khatri_rao(l, p, Ak, Bk);
  effml_status st =
      effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, rr, in, 1.0f, x, in, Bk, in, 0.0f, U, rr);
  if (train && p->dd.masked) { /* rank dropout: column j of the delta times m_j */
    float *D = (float *)effml__malloc(ctx, (size_t)(b * out) * sizeof(float));
    if (D == NULL && st == EFFML_OK) st = effml__err(ctx, EFFML_E_NOMEM, "loha forward: out of memory");
    EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, out, rr, (float)p->scale, U, rr,
                                 Ak, rr, 0.0f, D, out));
    if (st == EFFML_OK) {
      effml__delta_dropout_apply(&p->dd, D, b, out);
      for (int64_t i = 0; i < b * out; ++i) y[i] += D[i];
    }
    effml__free(ctx, D);
  } else {
    EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, out, rr, (float)p->scale, U, rr,
                                 Ak, rr, 1.0f, y, out));
  }
  effml__fwd_scratch_done(ctx, train, Ak);
  effml__fwd_scratch_done(ctx, train, Bk);
  effml__fwd_scratch_done(ctx, train, U);
  if (train && st == EFFML_OK) {
    p->x = x;
    p->batch = b;
  }
  return st;
}

static effml_status loha_backward(effml_context *ctx, effml_layer *l, const effml_tensor *dyt, effml_tensor *dxt) {
  effml__loha *p = (effml__loha *)l->impl;
  int64_t b = p->batch, in = l->in_features, out = l->out_features, r = p->r, rr = r * r;
  const float *dy = effml__cf32(dyt), *x = p->x;
  float *dx = dxt ? effml__f32(dxt) : NULL, s = (float)p->scale;
  if (p->dd.skipped) return effml__dense_base_backward(ctx, l, &p->base, x, dy, b, dx);
  int masked = p->dd.masked;
  float *dU = (float *)effml__malloc(ctx, (size_t)(b * rr + out * rr + rr * in + (masked ? b * out : 0)) * sizeof(float));
  if (dU == NULL) return effml__err(ctx, EFFML_E_NOMEM, "loha backward: out of memory");
  float *dAk = dU + b * rr, *dBk = dAk + out * rr;
  const float *dyd = dy; /* the delta's upstream gradient: dy .* m under rank dropout */
  if (masked) {
    float *t = dBk + rr * in;
    memcpy(t, dy, (size_t)(b * out) * sizeof(float));
    effml__delta_dropout_apply(&p->dd, t, b, out);
    dyd = t;
  }
  effml_status st = effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, rr, out, s, dyd, out, p->Ak, rr,
                                 0.0f, dU, rr);
  EFFML__THEN(st, effml__sgemm(ctx, CblasTrans, CblasNoTrans, out, rr, b, s, dyd, out, p->U, rr,
                               0.0f, dAk, rr));
  EFFML__THEN(st, effml__sgemm(ctx, CblasTrans, CblasNoTrans, rr, in, b, 1.0f, dU, rr, x, in, 0.0f,
                               dBk, in));
  if (st != EFFML_OK) {
    effml__free(ctx, dU);
    return st;
  }
  const float *a1 = effml__param_f32(l, p->i_w1a), *a2 = effml__param_f32(l, p->i_w2a);
  const float *b1 = effml__param_f32(l, p->i_w1b), *b2 = effml__param_f32(l, p->i_w2b);
  if (effml__param_trainable(l, p->i_w1a) || effml__param_trainable(l, p->i_w2a)) {
    float *g1 = effml__param_trainable(l, p->i_w1a) ? effml__grad_f32(l, p->i_w1a) : NULL;
    float *g2 = effml__param_trainable(l, p->i_w2a) ? effml__grad_f32(l, p->i_w2a) : NULL;
    for (int64_t j = 0; j < out; ++j)
      for (int64_t pp = 0; pp < r; ++pp)
        for (int64_t q = 0; q < r; ++q) {
          float d = dAk[j * rr + pp * r + q];
          if (g1) g1[j * r + pp] += d * a2[j * r + q];
          if (g2) g2[j * r + q] += d * a1[j * r + pp];
        }
  }
  if (effml__param_trainable(l, p->i_w1b) || effml__param_trainable(l, p->i_w2b)) {
    float *g1 = effml__param_trainable(l, p->i_w1b) ? effml__grad_f32(l, p->i_w1b) : NULL;
    float *g2 = effml__param_trainable(l, p->i_w2b) ? effml__grad_f32(l, p->i_w2b) : NULL;
    for (int64_t pp = 0; pp < r; ++pp)
      for (int64_t q = 0; q < r; ++q) {
        const float *d = dBk + (pp * r + q) * in;
        for (int64_t k = 0; k < in; ++k) {
          if (g1) g1[pp * in + k] += d[k] * b2[q * in + k];
          if (g2) g2[q * in + k] += d[k] * b1[pp * in + k];
        }
      }
  }
  st = effml__dense_base_backward(ctx, l, &p->base, x, dy, b, dx);
  if (dx)
    EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, in, rr, 1.0f, dU, rr, p->Bk,
                                 in, 1.0f, dx, in));
  effml__free(ctx, dU);
  return st;
}

static effml_status loha_flops(effml_context *ctx, const effml_layer *l, int64_t in_width, double *flops) {
  EFFML__TRY(effml__layer_flops(ctx, effml__layer_child(l, 0), in_width, flops));
  const effml__loha *p = (const effml__loha *)l->impl;
  double rr = (double)(p->r * p->r);
  *flops += 2.0 * rr * (double)(l->in_features + l->out_features) + (double)l->out_features;
  return EFFML_OK;
}

const effml__layer_ops effml__loha_ops = {
    .name = "loha",
    .forward = loha_forward,
    .backward = loha_backward,
    .destroy = loha_destroy,
    .flops = loha_flops,
    .traits = EFFML__KIND_WRAPS_BASE,
};

static effml__loha *as_loha(const effml_layer *l) {
  return (l && l->ops == &effml__loha_ops) ? (effml__loha *)l->impl : NULL;
}

int effml__is_loha(const effml_layer *l) { return as_loha(l) != NULL; }

effml_status effml_adapter_loha_create(effml_context *ctx, effml_layer *base, int64_t rank, double alpha,
                                       effml_layer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, base);
  EFFML__CHECK_NULL(ctx, out);
  if (rank < 1 || rank > 4096)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_loha_create: rank=%lld must be in [1, 4096]", (long long)rank);
  if (!isfinite(alpha)) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_loha_create: alpha=%g must be finite", alpha);
  int64_t in = 0, nout = 0;
  EFFML__TRY(effml__wrap_dense_base(ctx, base, &in, &nout));
  if (effml__base_is_transposed(base))
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "effml_adapter_loha_create: a conv1d base (weight [in, out]) is not supported by LoHa");
  effml__loha *p = (effml__loha *)effml__calloc_or_err(ctx, 1, sizeof *p, "a loha layer");
  if (p == NULL) return EFFML_E_NOMEM;
  p->r = rank;
  p->alpha = alpha;
  p->scale = alpha / (double)rank;
  effml_layer *l = NULL;
  effml_status st = effml__layer_new(ctx, &effml__loha_ops, in, nout, p, &l);
  if (st != EFFML_OK) {
    effml__free(ctx, p);
    return st;
  }
  st = effml__register_dense_base(ctx, l, base, 1, &p->base);
  int64_t sa[2] = {nout, rank}, sb[2] = {rank, in};
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "hada_w1_a", 2, sa, 1, &p->i_w1a);
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "hada_w1_b", 2, sb, 1, &p->i_w1b);
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "hada_w2_a", 2, sa, 1, &p->i_w2a);
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "hada_w2_b", 2, sb, 1, &p->i_w2b);
  if (st != EFFML_OK) {
    effml__layer_disown(l, p->base.layer);
    effml_layer_free(l);
    return st;
  }
  /* dW starts at 0: W2b = 0, the other factors kaiming_uniform(a = sqrt 5) */
  double a5 = sqrt(5.0);
  effml__init_kaiming_uniform(ctx, effml__param_f32(l, p->i_w1a), nout, rank, a5);
  effml__init_kaiming_uniform(ctx, effml__param_f32(l, p->i_w1b), rank, in, a5);
  effml__init_kaiming_uniform(ctx, effml__param_f32(l, p->i_w2a), nout, rank, a5);
  *out = l;
  return EFFML_OK;
}

void effml__loha_set_alpha(effml_layer *l, double alpha) {
  effml__loha *p = as_loha(l);
  p->alpha = alpha;
  p->scale = alpha / (double)p->r;
}

static effml_status loha_merge_common(effml_context *ctx, effml_layer *l, int to_merged) {
  EFFML__CHECK_NULL(ctx, ctx);
  effml__loha *p = as_loha(l);
  if (p == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "layer is not a loha layer");
  if (p->merged == to_merged)
    return effml__err(ctx, EFFML_E_STATE, "the layer is %s merged",
                      to_merged ? "already" : "not");
  int64_t in = l->in_features, out = l->out_features, rr = p->r * p->r;
  float *Ak = (float *)effml__malloc(ctx, (size_t)(out * rr + rr * in) * sizeof(float));
  if (Ak == NULL) return effml__err(ctx, EFFML_E_NOMEM, "out of memory");
  khatri_rao(l, p, Ak, Ak + out * rr);
  effml_status st = effml__sgemm(
      ctx, CblasNoTrans, CblasNoTrans, out, in, rr, (to_merged ? 1.0f : -1.0f) * (float)p->scale,
      Ak, rr, Ak + out * rr, in, 1.0f, effml__param_f32(l, p->base.i_weight), in);
  effml__free(ctx, Ak);
  if (st != EFFML_OK) return st; /* refused before writing: the weight is unchanged */
  p->merged = to_merged;
  l->train_pending = 0;
  return EFFML_OK;
}

effml_status effml_adapter_loha_merge(effml_context *ctx, effml_layer *layer) {
  EFFML__ENTER(ctx);
  return loha_merge_common(ctx, layer, 1);
}
effml_status effml_adapter_loha_unmerge(effml_context *ctx, effml_layer *layer) {
  EFFML__ENTER(ctx);
  return loha_merge_common(ctx, layer, 0);
}

effml_status effml_adapter_loha_set_dropout(effml_context *ctx, effml_layer *layer, double rank_dropout,
                                            double module_dropout) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  effml__loha *p = as_loha(layer);
  if (p == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_loha_set_dropout: layer is not a loha layer");
  return effml__delta_dropout_set(ctx, &p->dd, "effml_adapter_loha_set_dropout", rank_dropout, module_dropout, 1);
}

effml_status effml_adapter_loha_dropout(const effml_layer *layer, double *rank_dropout, double *module_dropout) {
  const effml__loha *p = as_loha(layer);
  if (p == NULL) return EFFML_E_INVALID_ARG;
  if (rank_dropout) *rank_dropout = p->dd.rank_p;
  if (module_dropout) *module_dropout = p->dd.module_p;
  return EFFML_OK;
}

int effml__loha_dropout_probe(const effml_layer *l, effml__dropout_probe *out) {
  const effml__loha *p = as_loha(l);
  if (p == NULL) return 0;
  out->skipped = p->dd.skipped;
  out->masked = p->dd.masked;
  out->row_mask = p->dd.masked ? p->dd.row_mask : NULL;
  return 1;
}

void effml__loha_info(const effml_layer *layer, effml__adapter_info *in) {
  const effml__loha *p = as_loha(layer);
  in->rank_dropout = p->dd.rank_p;
  in->module_dropout = p->dd.module_p;
  in->r = p->r;
  in->alpha = p->alpha;
  in->merged = p->merged;
  in->transposed = p->base.transposed;
}
