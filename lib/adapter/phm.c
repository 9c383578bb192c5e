/* PHM and LPHM layers (Compacter eqs. 3-5): construction, the reference
 * initialisation, and the switch between the factorized and the materialized
 * execution paths.  The kernels live in phm_factorized.c / phm_materialized.c. */
#include <math.h>
#include <string.h>

#include "adapter_internal.h"

int effml__is_phm(const effml_layer *l) { return l != NULL && l->ops == &effml__phm_ops; }

void effml_adapter_phm_options_init(effml_adapter_phm_options *opt) {
  if (opt == NULL) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->phm_dim = 4;
  opt->factorized = 1;
  opt->rank = 1;
  opt->bias = 1;
  opt->w_init = EFFML_ADAPTER_PHM_INIT_GLOROT_UNIFORM;
  opt->phm_init_range = 1e-4;
  opt->rule_init_std = 0.01;
}

int effml__param_trainable(effml_layer *l, int32_t i) {
  if (i < 0) return 0;
  return effml__layer_param_entry(l, i)->trainable;
}

static const float ONE = 1.0f;

const float *effml__phm_rule_f32(const effml_layer *l) {
  const effml__phm *p = (const effml__phm *)l->impl;
  if (p->fixed_rule) return &ONE;
  return effml__param_f32((effml_layer *)l, p->i_rule);
}

float *effml__phm_rule_grad_f32(effml_layer *l) {
  const effml__phm *p = (const effml__phm *)l->impl;
  if (p->fixed_rule || !effml__param_trainable(l, p->i_rule)) return NULL;
  return effml__grad_f32(l, p->i_rule);
}

/* Xavier (Glorot) init of each [rows, cols] slice of a [n, rows, cols] tensor,
 * PyTorch fans: fan_in = cols, fan_out = rows (seq2seq/hypercomplex/inits.py). */
static void init_slices(effml_context *ctx, float *w, int64_t n, int64_t rows, int64_t cols,
                        int32_t how, double range) {
  effml__rng *g = effml__ctx_rng(ctx);
  double fan = (double)(rows + cols);
  double gain = how == EFFML_ADAPTER_PHM_INIT_ADAPTERS ? 1.0 : sqrt(2.0);
  int64_t total = n * rows * cols;
  switch (how) {
    case EFFML_ADAPTER_PHM_INIT_GLOROT_UNIFORM:
      effml__fill_uniform_sym_f32(g, w, total, gain * sqrt(6.0 / fan));
      break;
    case EFFML_ADAPTER_PHM_INIT_NORMAL:
      effml__fill_normal_f32(g, w, total, range);
      break;
    default: /* GLOROT_NORMAL, ADAPTERS */
      effml__fill_normal_f32(g, w, total, gain * sqrt(2.0 / fan));
      break;
  }
}

static void phm_destroy(effml_layer *l) {
  effml__phm *p = (effml__phm *)l->impl;
  if (p == NULL) return;
  effml__free(l->ctx, p->P);
  effml__free(l->ctx, p->Q);
  effml__free(l->ctx, p->H);
  effml__free(l->ctx, p->dQ);
  effml__free(l->ctx, p->dP);
  effml_phm_rule_free(p->rule);
  effml__free(l->ctx, p);
}

static effml_status phm_forward(effml_context *ctx, effml_layer *l, const effml_tensor *x,
                                effml_tensor *y, int32_t mode) {
  effml__phm *p = (effml__phm *)l->impl;
  int64_t b = x->shape[0];
  if (p->path == EFFML_ADAPTER_PHM_PATH_MATERIALIZED)
    return effml__phm_forward_materialized(ctx, l, effml__cf32(x), b, effml__f32(y), mode);
  return effml__phm_forward_factorized(ctx, l, effml__cf32(x), b, effml__f32(y), mode);
}

static effml_status phm_backward(effml_context *ctx, effml_layer *l, const effml_tensor *dy,
                                 effml_tensor *dx) {
  effml__phm *p = (effml__phm *)l->impl;
  float *dxp = dx ? effml__f32(dx) : NULL;
  if (p->path == EFFML_ADAPTER_PHM_PATH_MATERIALIZED)
    return effml__phm_backward_materialized(ctx, l, effml__cf32(dy), dxp);
  return effml__phm_backward_factorized(ctx, l, effml__cf32(dy), dxp);
}

/* One table for PHM and LPHM; each layer is named "phm" or "lphm". */
const effml__layer_ops effml__phm_ops = {
    .name = "phm",
    .forward = phm_forward,
    .backward = phm_backward,
    .destroy = phm_destroy,
};

effml_status effml__phm_create(effml_context *ctx, int64_t in, int64_t out,
                               const effml_adapter_phm_options *user_opt, effml_phm_rule *rule,
                               int32_t fixed_rule, effml_layer **out_layer) {
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out_layer);
  effml_adapter_phm_options o;
  EFFML__TRY(EFFML__OPTIONS_READ(ctx, "effml_adapter_phm_create", effml_adapter_phm_options_init,
                                 user_opt, &o, sizeof(uint32_t)));
  if (in < 1 || out < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_phm_create: in_features=%lld and out_features=%lld must be >= 1",
                      (long long)in, (long long)out);
  int64_t n = fixed_rule ? 1 : rule ? rule->n : o.phm_dim;
  if (n < 1 || n > 64)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_phm_create: phm_dim=%lld must be in [1, 64]", (long long)n);
  if (o.factorized && o.rank < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_phm_create: rank=%lld must be >= 1 (use factorized=0 for full B_i)",
                      (long long)o.rank);
  if (o.w_init < EFFML_ADAPTER_PHM_INIT_GLOROT_UNIFORM || o.w_init > EFFML_ADAPTER_PHM_INIT_ADAPTERS)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_phm_create: w_init=%d is not an EFFML_ADAPTER_PHM_INIT_* value", (int)o.w_init);
  if (!(o.phm_init_range >= 0) || !isfinite(o.phm_init_range) || !(o.rule_init_std >= 0) ||
      !isfinite(o.rule_init_std))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_phm_create: phm_init_range=%g and rule_init_std=%g must be finite and >= 0",
                      o.phm_init_range, o.rule_init_std);
  if (in % n != 0)
    return effml__err(ctx, EFFML_E_SHAPE, "effml_adapter_phm_create: in_features=%lld is not a multiple of phm_dim=%lld",
                      (long long)in, (long long)n);
  if (out % n != 0)
    return effml__err(ctx, EFFML_E_SHAPE, "effml_adapter_phm_create: out_features=%lld is not a multiple of phm_dim=%lld",
                      (long long)out, (long long)n);
  int64_t kin = in / n, kout = out / n, r = o.factorized ? o.rank : 0;
  if (r > 0 && (r > kin * 64 || r > 1 << 20))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_phm_create: rank=%lld is unreasonably large", (long long)r);

  effml__phm *p = (effml__phm *)effml__calloc_or_err(ctx, 1, sizeof *p, "a phm layer");
  if (p == NULL) return EFFML_E_NOMEM;
  p->n = n;
  p->r = r;
  p->kin = kin;
  p->kout = kout;
  p->fixed_rule = fixed_rule;
  p->i_rule = p->i_wl = p->i_wr = p->i_w = p->i_b = -1;
  effml_layer *l = NULL;
  effml_status st = effml__layer_new(ctx, &effml__phm_ops, in, out, p, &l);
  if (st != EFFML_OK) {
    effml__free(ctx, p);
    return st;
  }
  if (r) effml__layer_set_kind(l, "lphm");
  int64_t srule[3] = {n, n, n};
  if (!fixed_rule && rule) {
    p->i_rule = 0;
    st = effml__layer_add_shared_param(ctx, l, "phm_rule", rule->value, rule->grad, 1);
    if (st == EFFML_OK) {
      p->rule = rule;
      effml__phm_rule_retain(rule);
    }
  } else if (!fixed_rule) {
    st = effml__layer_add_param(ctx, l, "phm_rule", 3, srule, 1, &p->i_rule);
    if (st == EFFML_OK) { /* per-layer rule: N(0, 0.01^2) as PHMLinear's "normal" */
      effml__fill_normal_f32(effml__ctx_rng(ctx), effml__param_f32(l, p->i_rule), n * n * n,
                             o.rule_init_std);
    }
  }
  if (st == EFFML_OK && r) {
    int64_t sl[3] = {n, kin, r}, sr[3] = {n, r, kout};
    st = effml__layer_add_param(ctx, l, "W_left", 3, sl, 1, &p->i_wl);
    if (st == EFFML_OK) st = effml__layer_add_param(ctx, l, "W_right", 3, sr, 1, &p->i_wr);
    if (st == EFFML_OK) {
      init_slices(ctx, effml__param_f32(l, p->i_wl), n, kin, r, o.w_init, o.phm_init_range);
      init_slices(ctx, effml__param_f32(l, p->i_wr), n, r, kout, o.w_init, o.phm_init_range);
    }
  } else if (st == EFFML_OK) {
    int64_t sw[3] = {n, kin, kout};
    st = effml__layer_add_param(ctx, l, "W", 3, sw, 1, &p->i_w);
    if (st == EFFML_OK) init_slices(ctx, effml__param_f32(l, p->i_w), n, kin, kout, o.w_init, o.phm_init_range);
  }
  if (st == EFFML_OK && o.bias) {
    int64_t sb[1] = {out};
    st = effml__layer_add_param(ctx, l, "b", 1, sb, 1, &p->i_b);
  }
  if (st != EFFML_OK) {
    effml_layer_free(l);
    return st;
  }
  *out_layer = l;
  return EFFML_OK;
}

effml_status effml_adapter_phm_create(effml_context *ctx, int64_t in_features, int64_t out_features,
                              const effml_adapter_phm_options *opt, effml_phm_rule *rule,
                              effml_layer **out) {
  EFFML__ENTER(ctx);
  return effml__phm_create(ctx, in_features, out_features, opt, rule, 0, out);
}

effml_status effml_adapter_phm_set_path(effml_context *ctx, effml_layer *layer, int32_t path) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, layer);
  if (!effml__is_phm(layer))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_phm_set_path: layer is a %s layer, not phm/lphm",
                      layer->kind);
  if (path != EFFML_ADAPTER_PHM_PATH_FACTORIZED && path != EFFML_ADAPTER_PHM_PATH_MATERIALIZED)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_phm_set_path: path=%d is not an EFFML_ADAPTER_PHM_PATH_* value", (int)path);
  effml__phm *p = (effml__phm *)layer->impl;
  p->path = path;
  layer->train_pending = 0; /* the kept state belongs to the other path */
  return EFFML_OK;
}

effml_phm_rule *effml_adapter_phm_shared_rule(effml_layer *layer) {
  if (!effml__is_phm(layer)) return NULL;
  return ((effml__phm *)layer->impl)->rule;
}

effml_status effml_adapter_phm_materialize(effml_context *ctx, const effml_layer *layer, effml_tensor *H) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, layer);
  if (!effml__is_phm(layer))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_phm_materialize: layer is a %s layer, not phm/lphm",
                      layer->kind);
  EFFML__TRY(effml__check_tensor(ctx, H, "H", EFFML_F32, 2, 1));
  EFFML__TRY(effml__check_writable(ctx, H, "H"));
  EFFML__TRY(effml__check_dim(ctx, H, "H", 0, layer->in_features));
  EFFML__TRY(effml__check_dim(ctx, H, "H", 1, layer->out_features));
  return effml__phm_build_H(ctx, layer, effml__f32(H));
}
