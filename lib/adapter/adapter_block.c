/* The adapter block (Compacter eq. 2; rabeehk/compacter HyperComplexAdapter,
 * AdapterHub Adapter with phm_layer): y = up(act(down(x))) + x, down:
 * features -> d, up: d -> features, each a PHM/LPHM projection (or a dense
 * one, n = 1).  The block owns both projections and lists their parameters
 * under AdapterHub's names; a shared phm rule appears once, as "phm_rule". */
#include <stdio.h>
#include <string.h>

#include "adapter_internal.h"

typedef struct effml__adapter {
  effml_layer *down, *up;
  int32_t act, residual;
  int64_t d;
  int32_t i_shared_rule; /* block index of "phm_rule" (shared rule), or -1 */
  effml_tensor *h, *a;   /* [batch, d]: down output and activation (kept for backward) */
} effml__adapter;


void effml_adapter_options_init(effml_adapter_options *opt) {
  if (opt == NULL) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->reduction_factor = 32;
  opt->projection = EFFML_ADAPTER_PROJ_LPHM;
  opt->activation = EFFML_LAYER_ACT_GELU_TANH;
  opt->phm_dim = 4;
  opt->rank = 1;
  opt->w_init = EFFML_ADAPTER_PHM_INIT_GLOROT_UNIFORM;
  opt->phm_init_range = 1e-4;
  opt->residual = 1;
  opt->bias = 1;
}

static effml__adapter *as_adapter(const effml_layer *l) {
  return (l && l->ops == &effml__adapter_block_ops) ? (effml__adapter *)l->impl : NULL;
}

effml_layer *effml_adapter_down(effml_layer *block) {
  effml__adapter *p = as_adapter(block);
  return p ? p->down : NULL;
}

effml_layer *effml_adapter_up(effml_layer *block) {
  effml__adapter *p = as_adapter(block);
  return p ? p->up : NULL;
}

static void adapter_destroy(effml_layer *l) {
  effml__adapter *p = (effml__adapter *)l->impl;
  if (p == NULL) return;
  effml_tensor_free(p->h); /* down and up are children 0 and 1: freed by the generic code */
  effml_tensor_free(p->a);
  effml__free(l->ctx, p);
}

/* Make sure *t is [b, d]. */
static effml_status ensure_2d(effml_context *ctx, effml_tensor **t, int64_t b, int64_t d) {
  if (*t && (*t)->shape[0] == b && (*t)->shape[1] == d) return EFFML_OK;
  effml_tensor *n = NULL;
  EFFML__TRY(effml__tensor_f32_2d(ctx, b, d, &n));
  effml_tensor_free(*t);
  *t = n;
  return EFFML_OK;
}

static effml_status adapter_forward(effml_context *ctx, effml_layer *l, const effml_tensor *x,
                                    effml_tensor *y, int32_t mode) {
  effml__adapter *p = (effml__adapter *)l->impl;
  int64_t b = x->shape[0];
  effml_tensor *h = NULL, *a = NULL;
  effml_status st;
  if (mode == EFFML_LAYER_MODE_TRAIN) {
    st = ensure_2d(ctx, &p->h, b, p->d);
    if (st == EFFML_OK) st = ensure_2d(ctx, &p->a, b, p->d);
    h = p->h;
    a = p->a;
  } else {
    st = effml__tensor_f32_2d(ctx, b, p->d, &h);
    if (st == EFFML_OK) st = effml__tensor_f32_2d(ctx, b, p->d, &a);
  }
  if (st == EFFML_OK) st = effml_layer_forward(ctx, p->down, x, h, mode);
  if (st == EFFML_OK) st = effml__activation_apply(ctx, p->act, h, a);
  if (st == EFFML_OK) st = effml_layer_forward(ctx, p->up, a, y, mode);
  if (st == EFFML_OK && p->residual) {
    float *yy = effml__f32(y);
    const float *xx = effml__cf32(x);
    for (int64_t i = 0; i < b * l->in_features; ++i) yy[i] += xx[i];
  }
  if (mode != EFFML_LAYER_MODE_TRAIN) {
    effml_tensor_free(h);
    effml_tensor_free(a);
  }
  return st;
}

static effml_status adapter_backward(effml_context *ctx, effml_layer *l, const effml_tensor *dy,
                                     effml_tensor *dx) {
  effml__adapter *p = (effml__adapter *)l->impl;
  if (p->i_shared_rule >= 0) { /* the block's one "phm_rule" flag governs both projections */
    int32_t tr = effml__param_trainable(l, p->i_shared_rule);
    for (int32_t i = 0; i < p->up->n_params; ++i)
      if (strcmp(p->up->params[i].name, "phm_rule") == 0) p->up->params[i].trainable = tr;
  }
  effml_tensor *da = NULL;
  EFFML__TRY(effml__tensor_f32_2d(ctx, dy->shape[0], p->d, &da));
  effml_status st = effml_layer_backward(ctx, p->up, dy, da);
  if (st == EFFML_OK) st = effml__activation_backward(ctx, p->act, p->h, da, da);
  if (st == EFFML_OK) st = effml_layer_backward(ctx, p->down, da, dx);
  if (st == EFFML_OK && dx && p->residual) {
    float *g = effml__f32(dx);
    const float *d = effml__cf32(dy);
    for (int64_t i = 0; i < dy->shape[0] * l->in_features; ++i) g[i] += d[i];
  }
  effml_tensor_free(da);
  return st;
}

const effml__layer_ops effml__adapter_block_ops = {
    .name = "adapter",
    .forward = adapter_forward,
    .backward = adapter_backward,
    .destroy = adapter_destroy,
};

/* Validated copy of the user's options and the bottleneck d. */
static effml_status read_options(effml_context *ctx, int64_t features, const effml_adapter_options *opt,
                                 effml_adapter_options *o, int64_t *d) {
  EFFML__TRY(EFFML__OPTIONS_READ(ctx, "adapter", effml_adapter_options_init, opt, o,
                                 sizeof(uint32_t)));
  if (features < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "adapter: features=%lld must be >= 1", (long long)features);
  if (o->projection < EFFML_ADAPTER_PROJ_LPHM || o->projection > EFFML_ADAPTER_PROJ_DENSE)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "adapter: projection=%d is not an EFFML_ADAPTER_PROJ_* value",
                      (int)o->projection);
  if (o->activation < EFFML_LAYER_ACT_IDENTITY || o->activation > EFFML_LAYER_ACT_TANH)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "adapter: activation=%d is not an EFFML_LAYER_ACT_* value",
                      (int)o->activation);
  if (o->bottleneck < 0 || (o->bottleneck == 0 && o->reduction_factor < 1))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "adapter: bottleneck=%lld / reduction_factor=%lld must be positive",
                      (long long)o->bottleneck, (long long)o->reduction_factor);
  if (o->projection == EFFML_ADAPTER_PROJ_LPHM && o->rank < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "adapter: rank=%lld must be >= 1", (long long)o->rank);
  *d = o->bottleneck > 0 ? o->bottleneck : features / o->reduction_factor;
  if (*d < 1)
    return effml__err(ctx, EFFML_E_SHAPE, "adapter: bottleneck d = features=%lld / reduction_factor=%lld is 0",
                      (long long)features, (long long)o->reduction_factor);
  return EFFML_OK;
}

static void phm_opts(const effml_adapter_options *o, effml_adapter_phm_options *po) {
  effml_adapter_phm_options_init(po);
  po->phm_dim = o->projection == EFFML_ADAPTER_PROJ_DENSE ? 1 : o->phm_dim;
  po->factorized = o->projection == EFFML_ADAPTER_PROJ_LPHM;
  po->rank = o->rank;
  po->bias = o->bias;
  po->w_init = o->w_init;
  po->phm_init_range = o->phm_init_range;
}

/* Mirror child's params into the block as prefix + name (skipping a shared "phm_rule"). */
static effml_status mirror(effml_context *ctx, effml_layer *l, effml_layer *child, const char *prefix,
                           int skip_rule) {
  char name[128];
  for (int32_t i = 0; i < child->n_params; ++i) {
    effml__param *c = &child->params[i];
    if (skip_rule && strcmp(c->name, "phm_rule") == 0) continue;
    snprintf(name, sizeof name, "%s%s", prefix, c->name);
    EFFML__TRY(effml__layer_add_shared_param(ctx, l, name, c->value, c->grad, c->trainable));
    l->params[l->n_params - 1].origin = c;
  }
  return EFFML_OK;
}

effml_status effml_adapter_create(effml_context *ctx, int64_t features, const effml_adapter_options *opt,
                                  effml_phm_rule *rule, effml_layer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out);
  effml_adapter_options o;
  int64_t d = 0;
  EFFML__TRY(read_options(ctx, features, opt, &o, &d));
  int dense = o.projection == EFFML_ADAPTER_PROJ_DENSE;
  effml_phm_rule *r = dense ? NULL : rule;
  effml_adapter_phm_options po;
  phm_opts(&o, &po);
  effml__adapter *p = (effml__adapter *)effml__calloc_or_err(ctx, 1, sizeof *p, "an adapter block");
  if (p == NULL) return EFFML_E_NOMEM;
  p->act = o.activation;
  p->residual = o.residual != 0;
  p->d = d;
  p->i_shared_rule = -1;
  effml_status st = effml__phm_create(ctx, features, d, &po, r, dense, &p->down);
  if (st == EFFML_OK) st = effml__phm_create(ctx, d, features, &po, r, dense, &p->up);
  effml_layer *l = NULL;
  if (st == EFFML_OK) st = effml__layer_new(ctx, &effml__adapter_block_ops, features, features, p, &l);
  if (st != EFFML_OK) {
    effml_layer_free(p->down);
    effml_layer_free(p->up);
    effml__free(ctx, p);
    return st;
  }
  /* The block owns its projections as children 0 (down) and 1 (up). */
  st = effml__layer_adopt(ctx, l, p->down);
  if (st == EFFML_OK) st = effml__layer_adopt(ctx, l, p->up);
  if (st != EFFML_OK) {
    if (!p->down->in_container) effml_layer_free(p->down);
    if (!p->up->in_container) effml_layer_free(p->up);
    effml_layer_free(l);
    return st;
  }
  st = mirror(ctx, l, p->down, "adapter_down.0.", r != NULL);
  if (st == EFFML_OK) st = mirror(ctx, l, p->up, "adapter_up.", r != NULL);
  if (st == EFFML_OK && r != NULL) {
    effml__param *c = &p->down->params[0]; /* "phm_rule" is the first param of a projection */
    st = effml__layer_add_shared_param(ctx, l, "phm_rule", c->value, c->grad, 1);
    if (st == EFFML_OK) {
      p->i_shared_rule = l->n_params - 1;
      l->params[p->i_shared_rule].origin = c;
    }
  }
  if (st != EFFML_OK) {
    effml_layer_free(l);
    return st;
  }
  *out = l;
  return EFFML_OK;
}

effml_status effml_adapter_count_params(effml_context *ctx, int64_t features,
                                        const effml_adapter_options *opt, int32_t shared_rule,
                                        int32_t include_bias, int64_t *out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out);
  effml_adapter_options o;
  int64_t d = 0;
  EFFML__TRY(read_options(ctx, features, opt, &o, &d));
  int64_t n = o.projection == EFFML_ADAPTER_PROJ_DENSE ? 1 : o.phm_dim;
  if (n < 1 || features % n || d % n)
    return effml__err(ctx, EFFML_E_SHAPE, "adapter: phm_dim=%lld must divide features=%lld and bottleneck=%lld",
                      (long long)n, (long long)features, (long long)d);
  int64_t k = features, per;
  switch (o.projection) {
    case EFFML_ADAPTER_PROJ_LPHM: per = 2 * o.rank * (k + d); break; /* s: k r, t: d r, each way */
    case EFFML_ADAPTER_PROJ_PHM: per = 2 * (k * d / n); break;       /* n (k/n)(d/n) each way */
    default: per = 2 * k * d; break;
  }
  if (o.projection != EFFML_ADAPTER_PROJ_DENSE && !shared_rule) per += 2 * n * n * n;
  if (include_bias && o.bias) per += d + k;
  *out = per;
  return EFFML_OK;
}

int effml__is_adapter(const effml_layer *layer) { return as_adapter(layer) != NULL; }
