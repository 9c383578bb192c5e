/* LoKr (PEFT src/peft/tuners/lokr, LyCORIS lokr.py), linear case:
 *   dW = scale (w1 (x) w2) [out, in],  w1 [out_l, in_m], w2 [out_k, in_n],
 *   dW[p*out_k + q, i*in_n + j] = scale w1[p,i] w2[q,j],
 * applied through the Kronecker identity (A ⊗ B) vec(X) = vec(B X Aᵀ) (Van Loan 2000; LoKr: Yeh et al. 2024, arXiv 2309.14859): per row,
 * X = reshape_r(x, in_m, in_n), (dW x) = scale vec_r(w1 X w2^T), i.e.
 *   Z_all = X_all w2^T  ([b*in_m, in_n] x [in_n, out_k]: one GEMM)
 *   Y_b   = scale w1 Z_b  (out_l x in_m x out_k per row)
 * out_l*in_m*out_k + in_m*in_n*out_k MACs per row instead of out*in.
 * Backward (dY_b = reshape(dy_b, out_l, out_k)):
 *   dZ_b = scale w1^T dY_b;  dw1 += scale sum_b dY_b Z_b^T;
 *   dw2 += dZ_all^T X_all;   dX_all += dZ_all w2;
 * factored w = w_a w_b: dw_a = dw w_b^T, dw_b = w_a^T dw.
 * Training dropouts (PEFT LoKrLayer; adapter_dropout.c): module_dropout skips the delta for a
 * whole TRAIN forward (backward: dx = dy W, no factor gradient); rank_dropout multiplies output
 * column j of the delta by m_j (m over the out rows of dW, divided by its mean only with
 * rank_dropout_scale), so the backward runs with dY_b taken from dy .* m. */
#include "blas.h"
#include <math.h>
#include <string.h>

#include "adapter_internal.h"

typedef struct effml__lokr {
  effml__dense_base base;
  int64_t r, out_l, out_k, in_m, in_n;
  double scale;
  int32_t full_w1, full_w2;
  int32_t i_w1, i_w1a, i_w1b, i_w2, i_w2a, i_w2b;
  const float *x;
  int64_t batch;
  float *Z; /* [b*in_m, out_k] */
  size_t cap_z;
  effml__delta_dropout dd; /* rank_dropout / module_dropout / rank_dropout_scale */
} effml__lokr;


void effml_adapter_lokr_options_init(effml_adapter_lokr_options *opt) {
  if (opt == NULL) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->rank = 8;
  opt->alpha = 8.0;
  opt->decompose_factor = -1;
  opt->scale_convention = EFFML_ADAPTER_LOKR_SCALE_PEFT;
  opt->freeze_base = 1;
}

effml_status effml_adapter_lokr_factorization(int64_t dim, int64_t factor, int64_t *m_out, int64_t *n_out) {
  if (dim < 1 || m_out == NULL || n_out == NULL) return EFFML_E_INVALID_ARG;
  if (factor > 0 && dim % factor == 0) {
    *m_out = factor;
    *n_out = dim / factor;
    return EFFML_OK;
  }
  if (factor == -1) factor = dim;
  int64_t m = 1, n = dim, length = m + n;
  while (m < n) {
    int64_t nm = m + 1;
    while (dim % nm != 0) nm++;
    int64_t nn = dim / nm;
    if (nm + nn > length || nm > factor) break;
    m = nm;
    n = nn;
  }
  if (m > n) {
    int64_t t = m;
    m = n;
    n = t;
  }
  *m_out = m;
  *n_out = n;
  return EFFML_OK;
}

static void lokr_destroy(effml_layer *l) {
  effml__lokr *p = (effml__lokr *)l->impl;
  if (p == NULL) return;
  effml__free(l->ctx, p->Z); /* the base is child 0: freed by the generic code */
  effml__free(l->ctx, p->dd.row_mask);
  effml__free(l->ctx, p);
}

/* w = w_a w_b ([rows, r] x [r, cols]) or the full parameter copied. */
static effml_status factor_value(effml_context *ctx, effml_layer *l, int full, int32_t i_full,
                                 int32_t i_a, int32_t i_b, int64_t rows, int64_t cols, int64_t r,
                                 float *w) {
  if (full) {
    memcpy(w, effml__param_f32(l, i_full), (size_t)(rows * cols) * sizeof(float));
    return EFFML_OK;
  }
  return effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, rows, cols, r, 1.0f,
                      effml__param_f32(l, i_a), r, effml__param_f32(l, i_b), cols, 0.0f, w, cols);
}

/* Distribute dw [rows, cols] to the full gradient or to dw_a, dw_b. */
static effml_status factor_grad(effml_context *ctx, effml_layer *l, int full, int32_t i_full,
                                int32_t i_a, int32_t i_b, int64_t rows, int64_t cols, int64_t r,
                                const float *dw) {
  if (full) {
    if (!effml__param_trainable(l, i_full)) return EFFML_OK;
    float *g = effml__grad_f32(l, i_full);
    for (int64_t k = 0; k < rows * cols; ++k) g[k] += dw[k];
    return EFFML_OK;
  }
  if (effml__param_trainable(l, i_a)) /* dw_a += dw w_b^T */
    EFFML__TRY(effml__sgemm(ctx, CblasNoTrans, CblasTrans, rows, r, cols, 1.0f, dw, cols,
                            effml__param_f32(l, i_b), cols, 1.0f, effml__grad_f32(l, i_a), r));
  if (effml__param_trainable(l, i_b)) /* dw_b += w_a^T dw */
    EFFML__TRY(effml__sgemm(ctx, CblasTrans, CblasNoTrans, r, cols, rows, 1.0f,
                            effml__param_f32(l, i_a), r, dw, cols, 1.0f, effml__grad_f32(l, i_b),
                            cols));
  return EFFML_OK;
}

static effml_status lokr_forward(effml_context *ctx, effml_layer *l, const effml_tensor *xt,
                                 effml_tensor *yt, int32_t mode) {
  effml__lokr *p = (effml__lokr *)l->impl;
  int64_t b = xt->shape[0], ol = p->out_l, ok = p->out_k, im = p->in_m, in_ = p->in_n;
  const float *x = effml__cf32(xt);
  float *y = effml__f32(yt);
  if (mode == EFFML_LAYER_MODE_TRAIN) {
    EFFML__TRY(effml__delta_dropout_draw(ctx, &p->dd, l->out_features, "lokr forward"));
    if (p->dd.skipped) { /* module dropout: the base alone */
      EFFML__TRY(effml__dense_base_forward(ctx, l, &p->base, x, b, y));
      p->x = x;
      p->batch = b;
      return EFFML_OK;
    }
  }
  const int masked = mode == EFFML_LAYER_MODE_TRAIN && p->dd.masked;
  size_t need = (size_t)(b * im * ok);
  float *w1 = (float *)effml__malloc(ctx, (size_t)(ol * im + ok * in_ + (masked ? b * l->out_features : 0)) * sizeof(float));
  float *Z = NULL;
  if (w1 != NULL) (void)effml__fwd_scratch(ctx, mode == EFFML_LAYER_MODE_TRAIN, &p->Z, &p->cap_z, need, &Z);
  if (w1 == NULL || Z == NULL) {
    effml__free(ctx, w1);
    effml__fwd_scratch_done(ctx, mode == EFFML_LAYER_MODE_TRAIN, Z);
    return effml__err(ctx, EFFML_E_NOMEM, "lokr forward: out of memory");
  }
  float *w2 = w1 + ol * im;
  effml_status st = factor_value(ctx, l, p->full_w1, p->i_w1, p->i_w1a, p->i_w1b, ol, im, p->r, w1);
  EFFML__THEN(st, factor_value(ctx, l, p->full_w2, p->i_w2, p->i_w2a, p->i_w2b, ok, in_, p->r, w2));
  EFFML__THEN(st, effml__dense_base_forward(ctx, l, &p->base, x, b, y));
  EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasTrans, b * im, ok, in_, 1.0f, x, in_, w2,
                               in_, 0.0f, Z, ok));
  int64_t out = l->out_features;
  float *D = masked ? w2 + ok * in_ : y; /* rank dropout: the delta apart, then times m_j */
  for (int64_t row = 0; st == EFFML_OK && row < b; ++row)
    st = effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, ol, ok, im, (float)p->scale, w1, im,
                      Z + row * im * ok, ok, masked ? 0.0f : 1.0f, D + row * out, ok);
  if (st == EFFML_OK && masked) {
    effml__delta_dropout_apply(&p->dd, D, b, out);
    for (int64_t i = 0; i < b * out; ++i) y[i] += D[i];
  }
  effml__free(ctx, w1);
  effml__fwd_scratch_done(ctx, mode == EFFML_LAYER_MODE_TRAIN, Z);
  if (mode == EFFML_LAYER_MODE_TRAIN && st == EFFML_OK) {
    p->x = x;
    p->batch = b;
  }
  return st;
}

static effml_status lokr_backward(effml_context *ctx, effml_layer *l, const effml_tensor *dyt,
                                  effml_tensor *dxt) {
  effml__lokr *p = (effml__lokr *)l->impl;
  int64_t b = p->batch, ol = p->out_l, ok = p->out_k, im = p->in_m, in_ = p->in_n;
  int64_t out = l->out_features;
  const float *dy = effml__cf32(dyt), *x = p->x;
  float *dx = dxt ? effml__f32(dxt) : NULL;
  float s = (float)p->scale;
  if (p->dd.skipped) return effml__dense_base_backward(ctx, l, &p->base, x, dy, b, dx);
  const int masked = p->dd.masked;
  size_t nw = (size_t)(2 * (ol * im + ok * in_) + (masked ? b * out : 0));
  float *w1 = (float *)effml__malloc(ctx, nw * sizeof(float));
  float *dZ = (float *)effml__malloc(ctx, (size_t)(b * im * ok) * sizeof(float));
  if (w1 == NULL || dZ == NULL) {
    effml__free(ctx, w1);
    effml__free(ctx, dZ);
    return effml__err(ctx, EFFML_E_NOMEM, "lokr backward: out of memory");
  }
  float *w2 = w1 + ol * im, *dw1 = w2 + ok * in_, *dw2 = dw1 + ol * im;
  memset(dw1, 0, (size_t)(ol * im + ok * in_) * sizeof(float));
  const float *dyd = dy; /* the delta's upstream gradient: dy .* m under rank dropout */
  if (masked) {
    float *t = dw2 + ok * in_;
    memcpy(t, dy, (size_t)(b * out) * sizeof(float));
    effml__delta_dropout_apply(&p->dd, t, b, out);
    dyd = t;
  }
  effml_status st = factor_value(ctx, l, p->full_w1, p->i_w1, p->i_w1a, p->i_w1b, ol, im, p->r, w1);
  EFFML__THEN(st, factor_value(ctx, l, p->full_w2, p->i_w2, p->i_w2a, p->i_w2b, ok, in_, p->r, w2));
  for (int64_t row = 0; st == EFFML_OK && row < b; ++row) {
    const float *dyb = dyd + row * out;
    st = effml__sgemm(ctx, CblasTrans, CblasNoTrans, im, ok, ol, s, w1, im, dyb, ok, 0.0f,
                      dZ + row * im * ok, ok);
    EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasTrans, ol, im, ok, s, dyb, ok,
                                 p->Z + row * im * ok, ok, 1.0f, dw1, im));
  }
  EFFML__THEN(st, effml__sgemm(ctx, CblasTrans, CblasNoTrans, ok, in_, b * im, 1.0f, dZ, ok, x, in_,
                               0.0f, dw2, in_));
  EFFML__THEN(st, effml__dense_base_backward(ctx, l, &p->base, x, dy, b, dx));
  if (dx)
    EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b * im, in_, ok, 1.0f, dZ, ok, w2,
                                 in_, 1.0f, dx, in_));
  EFFML__THEN(st, factor_grad(ctx, l, p->full_w1, p->i_w1, p->i_w1a, p->i_w1b, ol, im, p->r, dw1));
  EFFML__THEN(st, factor_grad(ctx, l, p->full_w2, p->i_w2, p->i_w2a, p->i_w2b, ok, in_, p->r, dw2));
  effml__free(ctx, w1);
  effml__free(ctx, dZ);
  return st;
}

const effml__layer_ops effml__lokr_ops = {
    .name = "lokr",
    .forward = lokr_forward,
    .backward = lokr_backward,
    .destroy = lokr_destroy,
    .traits = EFFML__KIND_WRAPS_BASE,
};

effml_status effml_adapter_lokr_create(effml_context *ctx, effml_layer *base, const effml_adapter_lokr_options *opt,
                               effml_layer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, base);
  EFFML__CHECK_NULL(ctx, out);
  effml_adapter_lokr_options o;
  EFFML__TRY(EFFML__OPTIONS_READ(ctx, "effml_adapter_lokr_create", effml_adapter_lokr_options_init,
                                 opt, &o, sizeof(uint32_t)));
  if (o.rank < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lokr_create: rank=%lld must be >= 1", (long long)o.rank);
  if (!isfinite(o.alpha))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lokr_create: alpha=%g must be finite", o.alpha);
  if (o.decompose_factor == 0 || o.decompose_factor < -1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lokr_create: decompose_factor=%lld must be -1 or >= 1",
                      (long long)o.decompose_factor);
  if (o.scale_convention != EFFML_ADAPTER_LOKR_SCALE_PEFT && o.scale_convention != EFFML_ADAPTER_LOKR_SCALE_LYCORIS)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lokr_create: scale_convention=%d is not an EFFML_ADAPTER_LOKR_SCALE_* value",
                      (int)o.scale_convention);
  int64_t in = 0, nout = 0;
  EFFML__TRY(effml__wrap_dense_base(ctx, base, &in, &nout));
  if (effml__base_is_transposed(base))
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "effml_adapter_lokr_create: a conv1d base (weight [in, out]) is not supported by LoKr");
  effml__lokr *p = (effml__lokr *)effml__calloc_or_err(ctx, 1, sizeof *p, "a lokr layer");
  if (p == NULL) return EFFML_E_NOMEM;
  effml_adapter_lokr_factorization(in, o.decompose_factor, &p->in_m, &p->in_n);
  effml_adapter_lokr_factorization(nout, o.decompose_factor, &p->out_l, &p->out_k);
  p->r = o.rank;
  double r = (double)o.rank;
  double m1 = (double)(p->out_l > p->in_m ? p->out_l : p->in_m);
  double m2 = (double)(p->out_k > p->in_n ? p->out_k : p->in_n);
  p->full_w1 = !(o.decompose_both && r < m1 / 2);
  p->full_w2 = !(r < m2 / 2);
  p->scale = (o.scale_convention == EFFML_ADAPTER_LOKR_SCALE_LYCORIS && p->full_w1 && p->full_w2) ? 1.0 : o.alpha / r;
  p->i_w1 = p->i_w1a = p->i_w1b = p->i_w2 = p->i_w2a = p->i_w2b = -1;
  effml_layer *l = NULL;
  effml_status st = effml__layer_new(ctx, &effml__lokr_ops, in, nout, p, &l);
  if (st != EFFML_OK) {
    effml__free(ctx, p);
    return st;
  }
  st = effml__register_dense_base(ctx, l, base, o.freeze_base, &p->base);
  int64_t ol = p->out_l, im = p->in_m, ok = p->out_k, in_ = p->in_n, rk = o.rank;
  if (st == EFFML_OK && p->full_w1) {
    int64_t s1[2] = {ol, im};
    st = effml__layer_add_param(ctx, l, "lokr_w1", 2, s1, 1, &p->i_w1);
  } else if (st == EFFML_OK) {
    int64_t sa[2] = {ol, rk}, sb[2] = {rk, im};
    st = effml__layer_add_param(ctx, l, "lokr_w1_a", 2, sa, 1, &p->i_w1a);
    if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "lokr_w1_b", 2, sb, 1, &p->i_w1b);
  }
  if (st == EFFML_OK && p->full_w2) {
    int64_t s2[2] = {ok, in_};
    st = effml__layer_add_param(ctx, l, "lokr_w2", 2, s2, 1, &p->i_w2);
  } else if (st == EFFML_OK) {
    int64_t sa[2] = {ok, rk}, sb[2] = {rk, in_};
    st = effml__layer_add_param(ctx, l, "lokr_w2_a", 2, sa, 1, &p->i_w2a);
    if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "lokr_w2_b", 2, sb, 1, &p->i_w2b);
  }
  if (st != EFFML_OK) {
    effml__layer_disown(l, p->base.layer); /* the caller keeps the base on error */
    effml_layer_free(l);
    return st;
  }
  /* PEFT init_weights=True: w1 (or w1_a) = 0, the rest kaiming_uniform(a = sqrt 5). */
  double a5 = sqrt(5.0);
  if (!p->full_w1) effml__init_kaiming_uniform(ctx, effml__param_f32(l, p->i_w1b), rk, im, a5);
  if (p->full_w2) {
    effml__init_kaiming_uniform(ctx, effml__param_f32(l, p->i_w2), ok, in_, a5);
  } else {
    effml__init_kaiming_uniform(ctx, effml__param_f32(l, p->i_w2a), ok, rk, a5);
    effml__init_kaiming_uniform(ctx, effml__param_f32(l, p->i_w2b), rk, in_, a5);
  }
  *out = l;
  return EFFML_OK;
}

static effml__lokr *as_lokr(const effml_layer *l) {
  return (l && l->ops == &effml__lokr_ops) ? (effml__lokr *)l->impl : NULL;
}

int effml__is_lokr(const effml_layer *layer) { return as_lokr(layer) != NULL; }
int64_t effml__lokr_rank(const effml_layer *layer) { return as_lokr(layer)->r; }
void effml__lokr_set_alpha(effml_layer *layer, double alpha) { /* PEFT's scale: alpha / r always */
  effml__lokr *p = as_lokr(layer);
  p->scale = alpha / (double)p->r;
}

effml_status effml_adapter_lokr_delta_weight(effml_context *ctx, const effml_layer *layer, effml_tensor *dw) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  effml__lokr *p = as_lokr(layer);
  if (p == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lokr_delta_weight: layer is not a lokr layer");
  EFFML__TRY(effml__check_tensor(ctx, dw, "dw", EFFML_F32, 2, 1));
  EFFML__TRY(effml__check_writable(ctx, dw, "dw"));
  EFFML__TRY(effml__check_dim(ctx, dw, "dw", 0, layer->out_features));
  EFFML__TRY(effml__check_dim(ctx, dw, "dw", 1, layer->in_features));
  int64_t ol = p->out_l, ok = p->out_k, im = p->in_m, in_ = p->in_n;
  float *w1 = (float *)effml__malloc(ctx, (size_t)(ol * im + ok * in_) * sizeof(float));
  if (w1 == NULL) return effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lokr_delta_weight: out of memory");
  float *w2 = w1 + ol * im, *D = effml__f32(dw);
  effml_status st = factor_value(ctx, (effml_layer *)layer, p->full_w1, p->i_w1, p->i_w1a, p->i_w1b,
                                 ol, im, p->r, w1);
  EFFML__THEN(st, factor_value(ctx, (effml_layer *)layer, p->full_w2, p->i_w2, p->i_w2a, p->i_w2b,
                               ok, in_, p->r, w2));
  if (st != EFFML_OK) {
    effml__free(ctx, w1);
    return st;
  }
  int64_t in = layer->in_features;
  for (int64_t pp = 0; pp < ol; ++pp)
    for (int64_t q = 0; q < ok; ++q)
      for (int64_t i = 0; i < im; ++i)
        for (int64_t j = 0; j < in_; ++j)
          D[(pp * ok + q) * in + i * in_ + j] = (float)(p->scale * w1[pp * im + i] * w2[q * in_ + j]);
  effml__free(ctx, w1);
  return EFFML_OK;
}

effml_status effml_adapter_lokr_set_dropout(effml_context *ctx, effml_layer *layer, double rank_dropout,
                                            double module_dropout, int32_t rank_dropout_scale) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  effml__lokr *p = as_lokr(layer);
  if (p == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lokr_set_dropout: layer is not a lokr layer");
  return effml__delta_dropout_set(ctx, &p->dd, "effml_adapter_lokr_set_dropout", rank_dropout, module_dropout,
                                  rank_dropout_scale);
}

effml_status effml_adapter_lokr_dropout(const effml_layer *layer, double *rank_dropout, double *module_dropout,
                                        int32_t *rank_dropout_scale) {
  const effml__lokr *p = as_lokr(layer);
  if (p == NULL) return EFFML_E_INVALID_ARG;
  if (rank_dropout) *rank_dropout = p->dd.rank_p;
  if (module_dropout) *module_dropout = p->dd.module_p;
  if (rank_dropout_scale) *rank_dropout_scale = p->dd.rank_scale;
  return EFFML_OK;
}

int effml__lokr_dropout_probe(const effml_layer *l, effml__dropout_probe *out) {
  const effml__lokr *p = as_lokr(l);
  if (p == NULL) return 0;
  out->skipped = p->dd.skipped;
  out->masked = p->dd.masked;
  out->row_mask = p->dd.masked ? p->dd.row_mask : NULL;
  return 1;
}

void effml__lokr_info(const effml_layer *layer, effml__adapter_info *in) {
  const effml__lokr *p = as_lokr(layer);
  in->rank_dropout = p->dd.rank_p;
  in->module_dropout = p->dd.module_p;
  in->rank_dropout_scale = p->dd.rank_scale;
  in->r = p->r;
  in->alpha = p->scale * (double)p->r; /* PEFT's convention scale = alpha / r gives this scale back */
  in->transposed = p->base.transposed;
  in->w1_factored = !p->full_w1;
  in->out_l = p->out_l;
  in->out_k = p->out_k;
  in->in_m = p->in_m;
  in->in_n = p->in_n;
}
