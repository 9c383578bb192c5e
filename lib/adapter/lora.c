/* LoRA (Hu et al. 2021, eq. 3; PEFT LoraLayer):
 *   y = x W^T + b + s (x A^T) B^T,  A [r, in], B [out, r], s = alpha/r (rsLoRA: alpha/sqrt(r))
 * r*(in + out) extra MACs per row.  Backward, with U = x A^T:
 *   dU = s dy B;  dB += s dy^T U;  dA += dU^T x;  dx = dy W + dU A.
 * Merge: W <- W + s B A (PEFT merge); unmerge subtracts the same product. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "adapter_internal.h"

typedef struct effml__lora {
  effml__dense_base base;
  int64_t r;
  double alpha, scaling;
  int32_t use_rslora, merged;
  int32_t i_a, i_b;
  const float *x; /* borrowed input of the last TRAIN forward */
  int64_t batch;
  float *U;       /* [batch, r] of the last TRAIN forward */
  size_t cap_u;
} effml__lora;

static const effml__layer_ops LORA_OPS;

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
  return (l && l->ops == &LORA_OPS) ? (effml__lora *)l->impl : NULL;
}

static void lora_destroy(effml_layer *l) {
  effml__lora *p = (effml__lora *)l->impl;
  if (p == NULL) return;
  effml_layer_free(p->base.layer);
  effml__free(l->ctx, p->U);
  effml__free(l->ctx, p);
}

static effml_status lora_forward(effml_context *ctx, effml_layer *l, const effml_tensor *xt,
                                 effml_tensor *yt, int32_t mode) {
  effml__lora *p = (effml__lora *)l->impl;
  int64_t b = xt->shape[0], in = l->in_features, out = l->out_features, r = p->r;
  const float *x = effml__cf32(xt);
  float *y = effml__f32(yt);
  const float *A = effml__param_f32(l, p->i_a), *B = effml__param_f32(l, p->i_b);
  int need_u = !p->merged || mode == EFFML_LAYER_MODE_TRAIN;
  float *U = NULL;
  if (need_u) {
    size_t need = (size_t)(b * r);
    if (mode == EFFML_LAYER_MODE_TRAIN) {
      if (p->cap_u < need) {
        effml__free(ctx, p->U);
        p->U = (float *)effml__malloc(ctx, need * sizeof(float));
        p->cap_u = p->U ? need : 0;
      }
      U = p->U;
    } else {
      U = (float *)effml__malloc(ctx, need * sizeof(float));
    }
    if (U == NULL) return effml__err(ctx, EFFML_E_NOMEM, "lora forward: out of memory");
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, (int)r, (int)in, 1.0f, x, (int)in,
                A, (int)in, 0.0f, U, (int)r);
  }
  effml__dense_base_forward(l, &p->base, x, b, y);
  if (!p->merged)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, (int)out, (int)r,
                (float)p->scaling, U, (int)r, B, (int)r, 1.0f, y, (int)out);
  if (mode == EFFML_LAYER_MODE_TRAIN) {
    p->x = x;
    p->batch = b;
  } else {
    effml__free(ctx, U);
  }
  return EFFML_OK;
}

static effml_status lora_backward(effml_context *ctx, effml_layer *l, const effml_tensor *dyt,
                                  effml_tensor *dxt) {
  effml__lora *p = (effml__lora *)l->impl;
  int64_t b = p->batch, in = l->in_features, out = l->out_features, r = p->r;
  const float *dy = effml__cf32(dyt), *x = p->x;
  float *dx = dxt ? effml__f32(dxt) : NULL;
  const float *A = effml__param_f32(l, p->i_a), *B = effml__param_f32(l, p->i_b);
  float s = (float)p->scaling;
  float *dU = (float *)effml__malloc(ctx, (size_t)(b * r) * sizeof(float));
  if (dU == NULL) return effml__err(ctx, EFFML_E_NOMEM, "lora backward: out of memory");
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b, (int)r, (int)out, s, dy, (int)out,
              B, (int)r, 0.0f, dU, (int)r);
  if (effml__param_trainable(l, p->i_b))
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)r, (int)b, s, dy, (int)out,
                p->U, (int)r, 1.0f, effml__grad_f32(l, p->i_b), (int)r);
  if (effml__param_trainable(l, p->i_a))
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)in, (int)b, 1.0f, dU, (int)r,
                x, (int)in, 1.0f, effml__grad_f32(l, p->i_a), (int)in);
  effml__dense_base_backward(l, &p->base, x, dy, b, dx); /* merged W already holds s B A */
  if (dx && !p->merged)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b, (int)in, (int)r, 1.0f, dU,
                (int)r, A, (int)in, 1.0f, dx, (int)in);
  effml__free(ctx, dU);
  return EFFML_OK;
}

static const effml__layer_ops LORA_OPS = {"lora", lora_forward, lora_backward, lora_destroy};

effml_status effml_adapter_lora_create(effml_context *ctx, effml_layer *base, const effml_adapter_lora_options *opt,
                               effml_layer **out) {
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, base);
  EFFML__CHECK_NULL(ctx, out);
  effml_adapter_lora_options o;
  effml_adapter_lora_options_init(&o);
  if (opt) {
    if (opt->struct_size < sizeof(uint32_t))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_create: opt->struct_size=%u is too small",
                        (unsigned)opt->struct_size);
    memcpy(&o, opt, opt->struct_size < sizeof o ? opt->struct_size : sizeof o);
  }
  if (o.rank < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_create: rank=%lld must be >= 1", (long long)o.rank);
  if (!isfinite(o.alpha))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_create: alpha=%g must be finite", o.alpha);
  if (o.init_a != EFFML_ADAPTER_LORA_INIT_KAIMING_UNIFORM && o.init_a != EFFML_ADAPTER_LORA_INIT_GAUSSIAN)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_create: init_a=%d is not an EFFML_ADAPTER_LORA_INIT_* value",
                      (int)o.init_a);
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
  p->scaling = p->use_rslora ? o.alpha / sqrt((double)o.rank) : o.alpha / (double)o.rank;
  effml_layer *l = NULL;
  effml_status st = effml__layer_new(ctx, &LORA_OPS, in, nout, p, &l);
  if (st != EFFML_OK) {
    effml__free(ctx, p);
    return st;
  }
  st = effml__register_dense_base(ctx, l, base, o.freeze_base, &p->base);
  int64_t sa[2] = {o.rank, in}, sb[2] = {nout, o.rank};
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "lora_A.weight", 2, sa, 1, &p->i_a);
  if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "lora_B.weight", 2, sb, 1, &p->i_b);
  if (st != EFFML_OK) {
    p->base.layer = NULL; /* the caller keeps the base on error */
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
  *out = l;
  return EFFML_OK;
}

effml_layer *effml_adapter_lora_base(effml_layer *layer) {
  effml__lora *p = as_lora(layer);
  if (p) return p->base.layer;
  return effml__lokr_base(layer);
}

double effml_adapter_lora_scaling(const effml_layer *layer) {
  effml__lora *p = as_lora(layer);
  return p ? p->scaling : 0.0;
}

int32_t effml_adapter_lora_is_merged(const effml_layer *layer) {
  effml__lora *p = as_lora(layer);
  return p ? p->merged : 0;
}

/* W += sign * s * B A */
static void apply_delta(effml_layer *l, float *W, float sign) {
  effml__lora *p = (effml__lora *)l->impl;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)l->out_features, (int)l->in_features,
              (int)p->r, sign * (float)p->scaling, effml__param_f32(l, p->i_b), (int)p->r,
              effml__param_f32(l, p->i_a), (int)l->in_features, 1.0f, W, (int)l->in_features);
}

static effml_status merge_common(effml_context *ctx, effml_layer *layer, int32_t to_merged) {
  EFFML__CHECK_NULL(ctx, ctx);
  effml__lora *p = as_lora(layer);
  if (p == NULL)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "lora merge/unmerge: layer is not a lora layer");
  if (p->merged == to_merged)
    return effml__err(ctx, EFFML_E_STATE, "lora %s: the layer is %s merged", to_merged ? "merge" : "unmerge",
                      to_merged ? "already" : "not");
  apply_delta(layer, effml__param_f32(layer, p->base.i_weight), to_merged ? 1.0f : -1.0f);
  p->merged = to_merged;
  layer->train_pending = 0;
  return EFFML_OK;
}

effml_status effml_adapter_lora_merge(effml_context *ctx, effml_layer *layer) { return merge_common(ctx, layer, 1); }
effml_status effml_adapter_lora_unmerge(effml_context *ctx, effml_layer *layer) { return merge_common(ctx, layer, 0); }

effml_status effml_adapter_lora_merge_drift(effml_context *ctx, const effml_layer *layer, int64_t cycles,
                                    double *max_abs_error, double *max_rel_error) {
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, max_abs_error);
  effml__lora *p = as_lora(layer);
  if (p == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_merge_drift: layer is not a lora layer");
  if (cycles < 0) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_merge_drift: cycles=%lld must be >= 0", (long long)cycles);
  int64_t nw = layer->in_features * layer->out_features;
  const float *W0 = effml__param_f32((effml_layer *)layer, p->base.i_weight);
  float *W = (float *)effml__malloc(ctx, (size_t)nw * sizeof(float));
  if (W == NULL) return effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lora_merge_drift: out of memory");
  memcpy(W, W0, (size_t)nw * sizeof(float));
  for (int64_t c = 0; c < cycles; ++c) {
    apply_delta((effml_layer *)layer, W, 1.0f);
    apply_delta((effml_layer *)layer, W, -1.0f);
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
