/* Training dropouts of the PEFT adapter kinds other than LoRA (PEFT 0.21 LoHaLayer, LoKrLayer,
 * VeraLayer; LyCORIS loha.py/lokr.py for the rank and module dropouts):
 *   - input dropout (VeRA's vera_dropout, LoRA's lora_dropout): inverted dropout on x before the
 *     adapter's first projection, kept entries scaled by 1/(1-p);
 *   - rank dropout (LoHa, LoKr): one Bernoulli mask over the out rows of dW per TRAIN forward,
 *     divided by the mask's mean when scaled (PEFT: LoHa always, LoKr with rank_dropout_scale);
 *   - module dropout (LoHa, LoKr): the whole delta skipped with probability p per TRAIN forward.
 * Randomness comes from the context generator; nothing is drawn at p = 0 or outside TRAIN. */
#include <string.h>

#include "adapter_internal.h"

int effml__input_dropout(effml_context *ctx, double p, const float *x, size_t n, float **xd, float **mask,
                         size_t *cap) {
  size_t cx = *cap, cm = *cap;
  if (!effml__grow_f32(ctx, xd, &cx, n) || !effml__grow_f32(ctx, mask, &cm, n)) {
    *cap = 0; /* one of the two may be smaller now: grow both next time */
    return 0;
  }
  *cap = n > *cap ? n : *cap;
  effml__rng *g = effml__ctx_rng(ctx);
  const float keep = (float)(1.0 / (1.0 - p));
  float *m = *mask, *d = *xd;
  for (size_t i = 0; i < n; ++i) {
    m[i] = effml__rng_uniform(g) < p ? 0.0f : keep;
    d[i] = x[i] * m[i];
  }
  return 1;
}

effml_status effml__delta_dropout_draw(effml_context *ctx, effml__delta_dropout *d, int64_t out, const char *who) {
  d->skipped = 0;
  d->masked = 0;
  if (d->module_p > 0.0 && effml__rng_uniform(effml__ctx_rng(ctx)) < d->module_p) {
    d->skipped = 1;
    return EFFML_OK;
  }
  if (d->rank_p <= 0.0) return EFFML_OK;
  if (!effml__grow_f32(ctx, &d->row_mask, &d->cap, (size_t)out))
    return effml__err(ctx, EFFML_E_NOMEM, "%s: out of memory (rank dropout mask)", who);
  effml__rng *g = effml__ctx_rng(ctx);
  int64_t kept = 0;
  for (int64_t j = 0; j < out; ++j) {
    d->row_mask[j] = effml__rng_uniform(g) < d->rank_p ? 0.0f : 1.0f;
    kept += d->row_mask[j] != 0.0f;
  }
  if (d->rank_scale && kept > 0) { /* divided by the mean kept/out */
    const float c = (float)((double)out / (double)kept);
    for (int64_t j = 0; j < out; ++j) d->row_mask[j] *= c;
  }
  d->masked = 1;
  return EFFML_OK;
}

effml_status effml__delta_dropout_set(effml_context *ctx, effml__delta_dropout *d, const char *fn, double rank_p,
                                      double module_p, int32_t rank_scale) {
  if (!(rank_p >= 0.0 && rank_p < 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: rank_dropout=%g must be in [0, 1)", fn, rank_p);
  if (!(module_p >= 0.0 && module_p < 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: module_dropout=%g must be in [0, 1)", fn, module_p);
  d->rank_p = rank_p;
  d->module_p = module_p;
  d->rank_scale = rank_scale != 0;
  return EFFML_OK;
}

void effml__delta_dropout_apply(const effml__delta_dropout *d, float *t, int64_t b, int64_t out) {
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < out; ++j) t[i * out + j] *= d->row_mask[j];
}

int effml__adapter_dropout_probe(const effml_layer *l, effml__dropout_probe *out) {
  memset(out, 0, sizeof *out);
  return effml__loha_dropout_probe(l, out) || effml__lokr_dropout_probe(l, out) || effml__vera_dropout_probe(l, out);
}
