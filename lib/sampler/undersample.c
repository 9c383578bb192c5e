/* Random over-sampling (bootstrap copies), random under-sampling, Tomek links
 * and edited nearest neighbours (imbalanced-learn `RandomOverSampler`,
 * `RandomUnderSampler`, `TomekLinks`, `EditedNearestNeighbours`,
 * imbalanced-learn 0.10).  Plans only hold copies (neighbor = -1).
 *
 * Where we differ: Tomek and ENN exclude a point from its own neighbours by
 * index, so a cross-class exact duplicate pair is a Tomek link (imblearn's
 * positional self-removal misses it). */
#include <string.h>

#include "sampler_internal.h"

#define TAG_ROS 0x524f53ULL
#define TAG_RUS 0x525553ULL

effml_status effml__random_over_plan(effml_context *ctx, const effml__resample_in *in,
                                     effml__plan *p) {
  const effml__classes *c = in->c;
  for (int64_t cl = 0; cl < c->n_classes; ++cl) {
    int64_t n_new = in->values[cl];
    if (n_new <= 0) continue;
    EFFML__TRY(effml__plan_reserve(ctx, p, n_new));
    const int64_t *rows = c->rows + c->start[cl];
    effml__rng r;
    effml__class_rng(&r, in->o->seed, TAG_ROS, c->labels[cl]);
    for (int64_t s = 0; s < n_new; ++s)
      effml__plan_push(p, rows[effml__rng_below(&r, (uint64_t)c->counts[cl])], -1, 0.0);
  }
  return EFFML_OK;
}

effml_status effml__random_under_plan(effml_context *ctx, const effml__resample_in *in,
                                      effml__plan *p) {
  const effml__classes *c = in->c;
  EFFML__TRY(effml__plan_reserve(ctx, p, in->n));
  int64_t *perm = (int64_t *)effml__alloc_or_err(ctx, (size_t)in->n * sizeof(int64_t), "permutation");
  if (!perm) return EFFML_E_NOMEM;
  /* Output grouped by class in label order; targeted classes keep the first
   * N_c rows of a random permutation (partial Fisher-Yates), in that order. */
  for (int64_t cl = 0; cl < c->n_classes; ++cl) {
    const int64_t *rows = c->rows + c->start[cl];
    int64_t nc = c->counts[cl], keep = in->values[cl];
    if (keep < 0) {
      for (int64_t i = 0; i < nc; ++i) effml__plan_push(p, rows[i], -1, 0.0);
      continue;
    }
    memcpy(perm, rows, (size_t)nc * sizeof(int64_t));
    effml__rng r;
    effml__class_rng(&r, in->o->seed, TAG_RUS, c->labels[cl]);
    for (int64_t i = 0; i < keep; ++i) {
      int64_t j = i + (int64_t)effml__rng_below(&r, (uint64_t)(nc - i));
      int64_t t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
      effml__plan_push(p, perm[i], -1, 0.0);
    }
  }
  effml__free(ctx, perm);
  return EFFML_OK;
}

static effml_status knn_all(effml_context *ctx, const effml__resample_in *in, int64_t k,
                            int64_t **nn_out) {
  int64_t n = in->n;
  int64_t *nn = (int64_t *)effml__alloc_or_err(ctx, (size_t)(n * k) * sizeof(int64_t), "neighbours");
  int64_t *self = nn ? (int64_t *)effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "self") : NULL;
  if (!self) {
    effml__free(ctx, nn);
    return EFFML_E_NOMEM;
  }
  for (int64_t i = 0; i < n; ++i) self[i] = i;
  effml_status st = effml__knn_f64(ctx, in->x, n, in->x, n, in->d, k, self, in->o->block_rows, nn, NULL);
  effml__free(ctx, self);
  if (st != EFFML_OK) {
    effml__free(ctx, nn);
    return st;
  }
  *nn_out = nn;
  return EFFML_OK;
}

effml_status effml__tomek_plan(effml_context *ctx, const effml__resample_in *in, effml__plan *p) {
  int64_t *nn = NULL;
  EFFML__TRY(knn_all(ctx, in, 1, &nn));
  effml_status st = effml__plan_reserve(ctx, p, in->n);
  for (int64_t i = 0; st == EFFML_OK && i < in->n; ++i) {
    int64_t j = nn[i];
    int linked = in->y[j] != in->y[i] && nn[j] == i;
    if (!(linked && in->values[in->c->cls[i]] > 0)) effml__plan_push(p, i, -1, 0.0);
  }
  effml__free(ctx, nn);
  return st;
}

effml_status effml__enn_plan(effml_context *ctx, const effml__resample_in *in, effml__plan *p) {
  const effml__classes *c = in->c;
  const int64_t k = in->o->n_neighbors, n = in->n;
  if (k < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "n_neighbors=%lld must be >= 1", (long long)k);
  if (n < k + 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "n_neighbors=%lld needs at least %lld samples in x, got %lld", (long long)k,
                      (long long)(k + 1), (long long)n);
  if (in->o->kind_sel != EFFML_SAMPLER_ENN_ALL && in->o->kind_sel != EFFML_SAMPLER_ENN_MODE)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "kind_sel=%d must be EFFML_SAMPLER_ENN_ALL or EFFML_SAMPLER_ENN_MODE",
                      (int)in->o->kind_sel);
  int64_t *nn = NULL;
  EFFML__TRY(knn_all(ctx, in, k, &nn));
  int64_t *votes = (int64_t *)effml__calloc(ctx, (size_t)c->n_classes, sizeof(int64_t));
  effml_status st = votes ? effml__plan_reserve(ctx, p, n)
                          : effml__err(ctx, EFFML_E_NOMEM, "out of memory for ENN votes");
  for (int64_t cl = 0; st == EFFML_OK && cl < c->n_classes; ++cl) {
    const int64_t *rows = c->rows + c->start[cl];
    for (int64_t t = 0; t < c->counts[cl]; ++t) {
      int64_t i = rows[t];
      int keep = 1;
      if (in->values[cl] > 0) {
        if (in->o->kind_sel == EFFML_SAMPLER_ENN_ALL) {
          for (int64_t j = 0; j < k; ++j) keep &= c->cls[nn[i * k + j]] == cl;
        } else {
          for (int64_t j = 0; j < k; ++j) votes[c->cls[nn[i * k + j]]]++;
          int64_t best = 0; /* mode; ties go to the smallest label (scipy.stats.mode) */
          for (int64_t j = 1; j < c->n_classes; ++j)
            if (votes[j] > votes[best]) best = j;
          keep = best == cl;
          for (int64_t j = 0; j < k; ++j) votes[c->cls[nn[i * k + j]]] = 0;
        }
      }
      if (keep) effml__plan_push(p, i, -1, 0.0);
    }
  }
  effml__free(ctx, votes);
  effml__free(ctx, nn);
  return st;
}
