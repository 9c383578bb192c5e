/* LoRA (Hu et al. 2021, eq. 3; PEFT LoraLayer):
 *   y = x W^T + b + s (x_d A^T) B^T [+ s b_B],  A [r, in], B [out, r], s = alpha/r (rsLoRA: alpha/sqrt(r))
 * x_d = dropout(x) in training (PEFT's lora_dropout, applied before A), x otherwise; b_B is
 * PEFT's lora_bias (a bias on lora_B, scaled by s like the rest of the branch).
 * r*(in + out) extra MACs per row.  Backward, with U = x_d A^T:
 *   dU = s dy B;  dB += s dy^T U;  db_B += s sum dy;  dA += dU^T x_d;  dx = dy W + (dU A) .* mask.
 * Merge: W <- W + s B A, b <- b + s b_B (PEFT merge); unmerge subtracts the same.
 *
 * DoRA (Liu et al. 2024, arXiv 2402.09353, eq. 5; PEFT DoraLinearLayer): with the per-output-row
 * norm n = ||W + s B A||_row (a constant in backward, DoRA section 4.3, as PEFT detaches it) and
 * the magnitude m ("lora_magnitude_vector" [out]), c = m / n:
 *   y = b + c .* (x W^T + s U B^T)                                  (eval, or no dropout)
 *   y = b + x W^T + (c - 1) .* (x_d W^T) + c .* (s U B^T)          (training with dropout, as PEFT)
 * Backward with Z = x_d W^T + s U B^T and dz = c .* dy:
 *   dm += sum_rows dy .* Z / n;  dU = s dz B;  dB += s dz^T U;  dA += dU^T x_d;
 *   dx = dy W + ((dz - dy) W + dU A) .* mask   (= dz W + dU A without dropout).
 * Merge: W <- c .* (W + s B A) per row (n kept for unmerge); unmerge W <- W / c - s B A. */
#include "blas.h"
#include <math.h>
#include <string.h>

#include "adapter_internal.h"


void effml_adapter_lora_options_init(effml_adapter_lora_options *opt) {
  if (opt == NULL) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->rank = 8;
  opt->alpha = 8.0;
  opt->init_a = EFFML_ADAPTER_LORA_INIT_KAIMING_UNIFORM;
  opt->freeze_base = 1;
}

static effml__lora *as_lora(const effml_layer *l) {
  return (l && l->ops == &effml__lora_ops) ? (effml__lora *)l->impl : NULL;
}

effml__lora *effml__lora_impl(const effml_layer *l) { return as_lora(l); }

static void lora_destroy(effml_layer *l) {
  effml__lora *p = (effml__lora *)l->impl;
  if (p == NULL) return;
  effml__free(l->ctx, p->U); /* the base is child 0: freed by the generic code */
  effml__free(l->ctx, p->xd);
  effml__free(l->ctx, p->mask);
  effml__free(l->ctx, p->Z);
  effml__free(l->ctx, p->norm);
  effml__free(l->ctx, p->merge_norm);
  effml__free(l->ctx, p);
}

/* Training dropout on x (PEFT nn.Dropout before lora_A): x_d = x .* mask, mask in {0, 1/(1-p)},
 * drawn from the context generator in row-major order.  Returns x_d, or x when inactive. */
const float *effml__lora_dropout(effml_context *ctx, effml__lora *p, const float *x, int64_t b, int64_t in,
                                 int32_t mode, effml_status *st) {
  if (mode != EFFML_LAYER_MODE_TRAIN) return x; /* inference writes nothing into the layer */
  p->dropped = 0;
  if (p->dropout <= 0.0) return x;
  if (!effml__input_dropout(ctx, p->dropout, x, (size_t)(b * in), &p->xd, &p->mask, &p->cap_x)) {
    *st = effml__err(ctx, EFFML_E_NOMEM, "lora forward: out of memory (dropout)");
    return NULL;
  }
  p->dropped = 1;
  return p->xd;
}

static effml_status lora_forward(effml_context *ctx, effml_layer *l, const effml_tensor *xt,
                                 effml_tensor *yt, int32_t mode) {
  effml__lora *p = (effml__lora *)l->impl;
  int64_t b = xt->shape[0], in = l->in_features, out = l->out_features, r = p->r;
  const float *x = effml__cf32(xt);
  float *y = effml__f32(yt);
  if (p->merged && mode == EFFML_LAYER_MODE_TRAIN && (p->use_dora || p->dropout > 0.0))
    return effml__err(ctx, EFFML_E_STATE,
                      "lora forward: a merged %s layer cannot train (the merged weight has no dropout/norm "
                      "to differentiate); unmerge it first",
                      p->use_dora ? "DoRA" : "dropout");
  if (p->use_dora && !p->merged) return effml__dora_forward(ctx, l, x, b, y, mode);
  const float *A = effml__param_f32(l, p->i_a), *B = effml__param_f32(l, p->i_b);
  int need_u = !p->merged || mode == EFFML_LAYER_MODE_TRAIN;
  float *U = NULL;
  effml_status st = EFFML_OK;
  const float *xin = effml__lora_dropout(ctx, p, x, b, in, mode, &st);
  if (xin == NULL) return st;
  if (need_u) {
    if (!effml__fwd_scratch(ctx, mode == EFFML_LAYER_MODE_TRAIN, &p->U, &p->cap_u, (size_t)(b * r), &U))
      return effml__err(ctx, EFFML_E_NOMEM, "lora forward: out of memory");
    st = effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, r, in, 1.0f, xin, in, A, in, 0.0f, U, r);
  }
  EFFML__THEN(st, effml__dense_base_forward(ctx, l, &p->base, x, b, y));
  if (!p->merged) {
    EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, out, r, (float)p->scaling, U, r,
                                 B, r, 1.0f, y, out));
    if (st == EFFML_OK && p->i_bb >= 0) {
      const float *bb = effml__param_f32(l, p->i_bb);
      float s = (float)p->scaling;
      for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < out; ++j) y[i * out + j] += s * bb[j];
    }
  }
  effml__fwd_scratch_done(ctx, mode == EFFML_LAYER_MODE_TRAIN, U);
  if (mode == EFFML_LAYER_MODE_TRAIN && st == EFFML_OK) {
    p->x = x;
    p->batch = b;
  }
  return st;
}

static effml_status lora_backward(effml_context *ctx, effml_layer *l, const effml_tensor *dyt,
                                  effml_tensor *dxt) {
  effml__lora *p = (effml__lora *)l->impl;
  if (p->use_dora && !p->merged) return effml__dora_backward(ctx, l, effml__cf32(dyt), dxt ? effml__f32(dxt) : NULL);
  int64_t b = p->batch, in = l->in_features, out = l->out_features, r = p->r;
  const float *dy = effml__cf32(dyt), *x = p->x, *xin = p->dropped ? p->xd : p->x;
  float *dx = dxt ? effml__f32(dxt) : NULL;
  const float *A = effml__param_f32(l, p->i_a), *B = effml__param_f32(l, p->i_b);
  float s = (float)p->scaling;
  float *dU = (float *)effml__malloc(ctx, (size_t)(b * r) * sizeof(float));
  if (dU == NULL) return effml__err(ctx, EFFML_E_NOMEM, "lora backward: out of memory");
  effml_status st =
      effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, r, out, s, dy, out, B, r, 0.0f, dU, r);
  if (effml__param_trainable(l, p->i_b))
    EFFML__THEN(st, effml__sgemm(ctx, CblasTrans, CblasNoTrans, out, r, b, s, dy, out, p->U, r,
                                 1.0f, effml__grad_f32(l, p->i_b), r));
  if (st == EFFML_OK && p->i_bb >= 0 && effml__param_trainable(l, p->i_bb)) {
    float *g = effml__grad_f32(l, p->i_bb);
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < out; ++j) g[j] += s * dy[i * out + j];
  }
  if (effml__param_trainable(l, p->i_a))
    EFFML__THEN(st, effml__sgemm(ctx, CblasTrans, CblasNoTrans, r, in, b, 1.0f, dU, r, xin, in,
                                 1.0f, effml__grad_f32(l, p->i_a), in));
  /* merged W already holds s B A */
  EFFML__THEN(st, effml__dense_base_backward(ctx, l, &p->base, x, dy, b, dx));
  if (st == EFFML_OK && dx && !p->merged) {
    if (!p->dropped) {
      st =
          effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, in, r, 1.0f, dU, r, A, in, 1.0f, dx, in);
    } else {
      float *t = (float *)effml__malloc(ctx, (size_t)(b * in) * sizeof(float));
      if (t == NULL) {
        st = effml__err(ctx, EFFML_E_NOMEM, "lora backward: out of memory");
      } else {
        st = effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, in, r, 1.0f, dU, r, A, in, 0.0f, t,
                          in);
        if (st == EFFML_OK)
          for (int64_t i = 0; i < b * in; ++i) dx[i] += t[i] * p->mask[i];
        effml__free(ctx, t);
      }
    }
  }
  effml__free(ctx, dU);
  return st;
}

const effml__layer_ops effml__lora_ops = {
    .name = "lora",
    .forward = lora_forward,
    .backward = lora_backward,
    .destroy = lora_destroy,
    .traits = EFFML__KIND_WRAPS_BASE,
};

effml_status effml_adapter_lora_create(effml_context *ctx, effml_layer *base, const effml_adapter_lora_options *opt,
                               effml_layer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, base);
  EFFML__CHECK_NULL(ctx, out);
  effml_adapter_lora_options o;
  EFFML__TRY(EFFML__OPTIONS_READ(ctx, "effml_adapter_lora_create", effml_adapter_lora_options_init,
                                 opt, &o, sizeof(uint32_t)));
  if (o.rank < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_create: rank=%lld must be >= 1", (long long)o.rank);
  if (!isfinite(o.alpha))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_create: alpha=%g must be finite", o.alpha);
  if (o.init_a != EFFML_ADAPTER_LORA_INIT_KAIMING_UNIFORM && o.init_a != EFFML_ADAPTER_LORA_INIT_GAUSSIAN)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_create: init_a=%d is not an EFFML_ADAPTER_LORA_INIT_* value",
                      (int)o.init_a);
  if (!(o.dropout >= 0.0 && o.dropout < 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_create: dropout=%g must be in [0, 1)", o.dropout);
  if (o.use_dora && o.lora_bias)
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "effml_adapter_lora_create: use_dora together with lora_bias is not supported (PEFT refuses it too)");
  int64_t in = 0, nout = 0;
  EFFML__TRY(effml__wrap_dense_base(ctx, base, &in, &nout));
  if (o.rank > (in < nout ? in : nout) * 16)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_create: rank=%lld is unreasonably large for a [%lld, %lld] weight",
                      (long long)o.rank, (long long)nout, (long long)in);
  effml__lora *p = (effml__lora *)effml__calloc_or_err(ctx, 1, sizeof *p, "a lora layer");
  if (p == NULL) return EFFML_E_NOMEM;
  p->r = o.rank;
  p->alpha = o.alpha;
  p->use_rslora = o.use_rslora != 0;
  p->use_dora = o.use_dora != 0;
  p->dropout = o.dropout;
  p->scaling = p->use_rslora ? o.alpha / sqrt((double)o.rank) : o.alpha / (double)o.rank;
  p->i_bb = p->i_m = -1;
  effml_layer *l = NULL;
  effml_status st = effml__layer_new(ctx, &effml__lora_ops, in, nout, p, &l);
  if (st != EFFML_OK) {
    effml__free(ctx, p);
    return st;
  }
  st = effml__register_dense_base(ctx, l, base, o.freeze_base, &p->base);
  int64_t sa[2] = {o.rank, in}, sb[2] = {nout, o.rank};
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "lora_A.weight", 2, sa, 1, &p->i_a);
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "lora_B.weight", 2, sb, 1, &p->i_b);
  if (st == EFFML_OK && o.lora_bias) st = effml__layer_add_param(ctx, l, "lora_B.bias", 1, &nout, 1, &p->i_bb);
  if (st == EFFML_OK && o.use_dora) st = effml__layer_add_param(ctx, l, "lora_magnitude_vector", 1, &nout, 1, &p->i_m);
  if (st == EFFML_OK && o.use_dora) {
    p->norm = (float *)effml__malloc(ctx, (size_t)nout * sizeof(float));
    if (p->norm == NULL) st = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lora_create: out of memory");
  }
  if (st != EFFML_OK) {
    effml__layer_disown(l, p->base.layer); /* the caller keeps the base on error */
    effml_layer_free(l);
    return st;
  }
  float *A = effml__param_f32(l, p->i_a);
  if (o.init_a == EFFML_ADAPTER_LORA_INIT_GAUSSIAN) {
    effml__rng *g = effml__ctx_rng(ctx);
    for (int64_t i = 0; i < o.rank * in; ++i) A[i] = (float)(effml__rng_normal(g) / (double)o.rank);
  } else {
    effml__init_kaiming_uniform(ctx, A, o.rank, in, sqrt(5.0));
  }
  if (o.use_dora) { /* PEFT: m = ||W + s B A||_row at creation (B = 0: ||W||_row) */
    st = effml__dora_norms(ctx, l, effml__param_f32(l, p->i_m));
    if (st != EFFML_OK) {
      effml__layer_disown(l, p->base.layer); /* the caller keeps the base on error */
      effml_layer_free(l);
      return st;
    }
  }
  *out = l;
  return EFFML_OK;
}

effml_layer *effml_adapter_lora_base(effml_layer *layer) {
  if (layer == NULL || !(layer->ops->traits & EFFML__KIND_WRAPS_BASE)) return NULL;
  return effml__layer_child(layer, 0);
}

double effml_adapter_lora_scaling(const effml_layer *layer) {
  effml__lora *p = as_lora(layer);
  return p ? p->scaling : 0.0;
}

int32_t effml_adapter_lora_is_merged(const effml_layer *layer) {
  effml__lora *p = as_lora(layer);
  return p ? p->merged : 0;
}

/* W += sign * s * B A (in W's storage layout: [out, in], or [in, out] for a Conv1D base) */
static effml_status apply_delta(effml_context *ctx, const effml_layer *l, float *W, float sign) {
  effml__lora *p = (effml__lora *)l->impl;
  int64_t in = l->in_features, out = l->out_features, r = p->r;
  const float *A = effml__param_f32((effml_layer *)l, p->i_a), *B = effml__param_f32((effml_layer *)l, p->i_b);
  if (p->base.transposed)
    return effml__sgemm(ctx, CblasTrans, CblasTrans, in, out, r, sign * (float)p->scaling, A, in, B,
                        r, 1.0f, W, out);
  return effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, out, in, r, sign * (float)p->scaling, B, r,
                      A, in, 1.0f, W, in);
}

static effml_status merge_common(effml_context *ctx, effml_layer *layer, int32_t to_merged) {
  EFFML__CHECK_NULL(ctx, ctx);
  effml__lora *p = as_lora(layer);
  if (p == NULL)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "lora merge/unmerge: layer is not a lora layer");
  if (p->merged == to_merged)
    return effml__err(ctx, EFFML_E_STATE, "lora %s: the layer is %s merged", to_merged ? "merge" : "unmerge",
                      to_merged ? "already" : "not");
  if (p->i_bb >= 0 && p->base.i_bias < 0)
    return effml__err(ctx, EFFML_E_UNSUPPORTED,
                      "lora merge: lora_B.bias (lora_bias) cannot be merged: the base layer has no bias (PEFT refuses too)");
  if (p->use_dora) {
    EFFML__TRY(effml__dora_merge(ctx, layer, to_merged));
  } else {
    EFFML__TRY(apply_delta(ctx, layer, effml__param_f32(layer, p->base.i_weight),
                           to_merged ? 1.0f : -1.0f));
  }
  if (p->i_bb >= 0) {
    float *bias = effml__param_f32(layer, p->base.i_bias);
    const float *bb = effml__param_f32(layer, p->i_bb);
    float s = (to_merged ? 1.0f : -1.0f) * (float)p->scaling;
    for (int64_t j = 0; j < layer->out_features; ++j) bias[j] += s * bb[j];
  }
  p->merged = to_merged;
  layer->train_pending = 0;
  return EFFML_OK;
}

effml_status effml_adapter_lora_merge(effml_context *ctx, effml_layer *layer) {
  EFFML__ENTER(ctx);
  return merge_common(ctx, layer, 1);
}
effml_status effml_adapter_lora_unmerge(effml_context *ctx, effml_layer *layer) {
  EFFML__ENTER(ctx);
  return merge_common(ctx, layer, 0);
}

effml_status effml_adapter_lora_merge_drift(effml_context *ctx, const effml_layer *layer, int64_t cycles,
                                    double *max_abs_error, double *max_rel_error) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, max_abs_error);
  effml__lora *p = as_lora(layer);
  if (p == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_merge_drift: layer is not a lora layer");
  if (p->use_dora)
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "effml_adapter_lora_merge_drift: measures the plain LoRA delta only (layer uses DoRA)");
  if (cycles < 0) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_merge_drift: cycles=%lld must be >= 0", (long long)cycles);
  int64_t nw = layer->in_features * layer->out_features;
  const float *W0 = effml__param_f32((effml_layer *)layer, p->base.i_weight);
  float *W = (float *)effml__malloc(ctx, (size_t)nw * sizeof(float));
  if (W == NULL) return effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lora_merge_drift: out of memory");
  memcpy(W, W0, (size_t)nw * sizeof(float));
  effml_status st = EFFML_OK;
  for (int64_t c = 0; st == EFFML_OK && c < cycles; ++c) {
    st = apply_delta(ctx, layer, W, 1.0f);
    EFFML__THEN(st, apply_delta(ctx, layer, W, -1.0f));
  }
  if (st != EFFML_OK) {
    effml__free(ctx, W);
    return st;
  }
  double mabs = 0, mw = 0;
  for (int64_t i = 0; i < nw; ++i) {
    double d = fabs((double)W[i] - W0[i]);
    if (d > mabs) mabs = d;
    if (fabs(W0[i]) > mw) mw = fabs(W0[i]);
  }
  effml__free(ctx, W);
  *max_abs_error = mabs;
  if (max_rel_error) *max_rel_error = mw > 0 ? mabs / mw : 0.0;
  return EFFML_OK;
}

effml_status effml_adapter_lora_set_dropout(effml_context *ctx, effml_layer *layer, double p) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  effml__lora *q = as_lora(layer);
  if (q == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_set_dropout: layer is not a lora layer");
  if (!(p >= 0.0 && p < 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_set_dropout: p=%g must be in [0, 1)", p);
  q->dropout = p;
  return EFFML_OK;
}

double effml_adapter_lora_dropout(const effml_layer *layer) {
  effml__lora *q = as_lora(layer);
  return q ? q->dropout : 0.0;
}

int effml__is_lora(const effml_layer *layer) { return as_lora(layer) != NULL; }
int64_t effml__lora_rank(const effml_layer *layer) { return as_lora(layer)->r; }
double effml__lora_alpha(const effml_layer *layer) { return as_lora(layer)->alpha; }
int32_t effml__lora_rslora(const effml_layer *layer) { return as_lora(layer)->use_rslora; }
void effml__lora_set_alpha(effml_layer *layer, double alpha, int32_t use_rslora) {
  effml__lora *p = as_lora(layer);
  p->alpha = alpha;
  p->use_rslora = use_rslora != 0;
  p->scaling = p->use_rslora ? alpha / sqrt((double)p->r) : alpha / (double)p->r;
}
