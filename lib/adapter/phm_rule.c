/* The phm rule A = [A_1..A_n] (Compacter section 3.2): one [n, n, n] tensor
 * that many LPHM layers share.  Reference-counted so that a caller can drop
 * its handle once the layers hold theirs; its gradient collects dA from every
 * layer whose backward runs before the optimizer step. */
#include <math.h>

#include "adapter_internal.h"

effml_status effml_phm_rule_create(effml_context *ctx, int64_t phm_dim, double init_std,
                                   effml_phm_rule **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out);
  if (phm_dim < 1 || phm_dim > 64)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_phm_rule_create: phm_dim=%lld must be in [1, 64]",
                      (long long)phm_dim);
  if (!(init_std >= 0.0) || !isfinite(init_std))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_phm_rule_create: init_std=%g must be finite and >= 0",
                      init_std);
  effml_phm_rule *r = (effml_phm_rule *)effml__calloc_or_err(ctx, 1, sizeof *r, "a phm rule");
  if (r == NULL) return EFFML_E_NOMEM;
  int64_t shape[3] = {phm_dim, phm_dim, phm_dim};
  effml_status st = effml_tensor_create(ctx, EFFML_F32, 3, shape, &r->value);
  if (st == EFFML_OK) st = effml_tensor_create(ctx, EFFML_F32, 3, shape, &r->grad);
  if (st != EFFML_OK) {
    effml_tensor_free(r->value);
    effml__free(ctx, r);
    return st;
  }
  r->ctx = ctx;
  r->n = phm_dim;
  r->refs = 1;
  /* Shared A ~ N(0, phm_init_range^2) (modeling_t5.py, "normal" phm_c_init). */
  float *a = effml__f32(r->value);
  effml__rng *g = effml__ctx_rng(ctx);
  if (init_std > 0)
    effml__fill_normal_f32(g, a, phm_dim * phm_dim * phm_dim, init_std);
  else
    for (int64_t i = 0; i < phm_dim * phm_dim * phm_dim; ++i) a[i] = 0.0f;
  *out = r;
  return EFFML_OK;
}

void effml__phm_rule_retain(effml_phm_rule *rule) {
  if (rule) rule->refs++;
}

void effml_phm_rule_free(effml_phm_rule *rule) {
  if (rule == NULL || --rule->refs > 0) return;
  effml_tensor_free(rule->value);
  effml_tensor_free(rule->grad);
  effml__free(rule->ctx, rule);
}

int64_t effml_phm_rule_dim(const effml_phm_rule *rule) { return rule ? rule->n : 0; }
effml_tensor *effml_phm_rule_value(effml_phm_rule *rule) { return rule ? rule->value : NULL; }
effml_tensor *effml_phm_rule_grad(effml_phm_rule *rule) { return rule ? rule->grad : NULL; }
