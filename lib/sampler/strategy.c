/* sampling_strategy resolution (imbalanced-learn `utils/_validation.py`,
 * imbalanced-learn `check_sampling_strategy`).  Counts are sorted by label; majority and minority are
 * the first label (in sorted order) with the largest / smallest count.
 *
 * Where we differ from imblearn 0.10: float ratios use floor(v + 1e-9 v)
 * instead of int(v), so 100 * 0.29 = 28.999999999999996 gives 29 (imblearn
 * #1215 loses the sample and then raises). */
#include <math.h>

#include "sampler_internal.h"

int effml__method_family(int32_t method) {
  switch (method) {
    case EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER:
    case EFFML_SAMPLER_RESAMPLE_NEARMISS:
    case EFFML_SAMPLER_RESAMPLE_CLUSTER_CENTROIDS:
    case EFFML_SAMPLER_RESAMPLE_IHT: return EFFML__FAMILY_UNDER;
    case EFFML_SAMPLER_RESAMPLE_TOMEK:
    case EFFML_SAMPLER_RESAMPLE_ENN:
    case EFFML_SAMPLER_RESAMPLE_RENN:
    case EFFML_SAMPLER_RESAMPLE_ALLKNN:
    case EFFML_SAMPLER_RESAMPLE_NCL:
    case EFFML_SAMPLER_RESAMPLE_CNN:
    case EFFML_SAMPLER_RESAMPLE_OSS: return EFFML__FAMILY_CLEAN;
    default: return EFFML__FAMILY_OVER;
  }
}

static int64_t robust_floor(double v) { return (int64_t)floor(v + 1e-9 * fabs(v)); }

static const char *strategy_name(int32_t s) {
  switch (s) {
    case EFFML_SAMPLER_STRATEGY_AUTO: return "auto";
    case EFFML_SAMPLER_STRATEGY_MINORITY: return "minority";
    case EFFML_SAMPLER_STRATEGY_NOT_MINORITY: return "not minority";
    case EFFML_SAMPLER_STRATEGY_NOT_MAJORITY: return "not majority";
    case EFFML_SAMPLER_STRATEGY_ALL: return "all";
    case EFFML_SAMPLER_STRATEGY_MAJORITY: return "majority";
    case EFFML_SAMPLER_STRATEGY_RATIO: return "ratio";
    case EFFML_SAMPLER_STRATEGY_TARGETS: return "targets";
    default: return "unknown";
  }
}

/* sampling_strategy = targets: per-label counts (over-samplers: the class's final count;
 * under-samplers: the count kept; cleaners: the labels cleaned). */
static effml_status resolve_targets(effml_context *ctx, const effml_sampler_resample_options *o,
                                    const effml__classes *c, int fam, int64_t *values) {
  const int64_t nc = c->n_classes;
  if (o->n_targets < 1 || o->target_labels == NULL ||
      (fam != EFFML__FAMILY_CLEAN && o->target_counts == NULL))
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "sampling_strategy=targets needs n_targets >= 1 (got %lld) and "
                      "non-NULL target_labels (%s)%s",
                      (long long)o->n_targets, o->target_labels ? "set" : "NULL",
                      fam == EFFML__FAMILY_CLEAN ? ""
                      : (o->target_counts ? " and target_counts (set)"
                                          : " and target_counts (NULL)"));
  for (int64_t t = 0; t < o->n_targets; ++t) {
    int64_t lab = o->target_labels[t], k = -1;
    for (int64_t j = 0; j < nc; ++j)
      if (c->labels[j] == lab) k = j;
    if (k < 0)
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "sampling_strategy target_labels[%lld]=%lld is not a label of y",
                        (long long)t, (long long)lab);
    if (fam == EFFML__FAMILY_CLEAN) {
      values[k] = 1;
      continue;
    }
    int64_t want = o->target_counts[t];
    if (want < 0)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "target_counts[%lld]=%lld for class %lld is negative",
                        (long long)t, (long long)want, (long long)lab);
    if (want > ((int64_t)1 << 48))
      return effml__err(ctx, EFFML_E_OVERFLOW,
                        "target_counts[%lld]=%lld for class %lld is beyond 2^48 rows",
                        (long long)t, (long long)want, (long long)lab);
    if (fam == EFFML__FAMILY_OVER) {
      if (want < c->counts[k])
        return effml__err(ctx, EFFML_E_INVALID_ARG,
                          "target_counts[%lld]=%lld for class %lld is below its %lld samples: "
                          "an over-sampler cannot remove samples",
                          (long long)t, (long long)want, (long long)lab,
                          (long long)c->counts[k]);
      values[k] = want - c->counts[k];
    } else {
      if (want > c->counts[k])
        return effml__err(ctx, EFFML_E_INVALID_ARG,
                          "target_counts[%lld]=%lld for class %lld exceeds its %lld samples: "
                          "an under-sampler cannot add samples",
                          (long long)t, (long long)want, (long long)lab,
                          (long long)c->counts[k]);
      values[k] = want;
    }
  }
  return EFFML_OK;
}

/* sampling_strategy = ratio (binary problems): minority / majority after re-sampling. */
static effml_status resolve_ratio(effml_context *ctx, const effml_sampler_resample_options *o,
                                  const effml__classes *c, int fam, int64_t maj, int64_t mino,
                                  int64_t *values) {
  const int64_t n_maj = c->counts[maj], n_min = c->counts[mino];
  double a = o->ratio;
  if (fam == EFFML__FAMILY_CLEAN)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "sampling_strategy=ratio is not allowed for a cleaning method");
  if (c->n_classes != 2)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "sampling_strategy=ratio is only for binary problems; y has %lld classes",
                      (long long)c->n_classes);
  if (!(a > 0.0 && a <= 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "ratio=%g must be in (0, 1]", a);
  if (fam == EFFML__FAMILY_OVER) {
    int64_t v = robust_floor((double)n_maj * a) - n_min;
    if (v <= 0)
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "ratio=%g gives %lld minority samples for %lld majority samples, but "
                        "class %lld already has %lld: it would require removing samples from "
                        "the minority class",
                        a, (long long)robust_floor((double)n_maj * a), (long long)n_maj,
                        (long long)c->labels[mino], (long long)n_min);
    values[mino] = v;
  } else {
    int64_t v = robust_floor((double)n_min / a);
    if (v > n_maj)
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "ratio=%g asks to keep %lld samples of class %lld, which has only %lld",
                        a, (long long)v, (long long)c->labels[maj], (long long)n_maj);
    values[maj] = v;
  }
  return EFFML_OK;
}

/* The named strategies (auto, minority, not minority, not majority, all, majority):
 * over-samplers grow the chosen classes to the majority count, under-samplers keep the
 * minority count of them, cleaners mark them. */
static effml_status resolve_named(effml_context *ctx, int32_t s, const effml__classes *c, int fam,
                                  int64_t maj, int64_t mino, int64_t *values) {
  const int64_t nc = c->n_classes, n_maj = c->counts[maj], n_min = c->counts[mino];
  if (s < EFFML_SAMPLER_STRATEGY_AUTO || s > EFFML_SAMPLER_STRATEGY_MAJORITY)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "sampling_strategy=%d is not an EFFML_SAMPLER_STRATEGY_* value",
                      (int)s);
  if (fam == EFFML__FAMILY_OVER) {
    if (s == EFFML_SAMPLER_STRATEGY_MAJORITY)
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "sampling_strategy='majority' cannot be used with an over-sampler");
    for (int64_t k = 0; k < nc; ++k) {
      int take = (s == EFFML_SAMPLER_STRATEGY_AUTO || s == EFFML_SAMPLER_STRATEGY_NOT_MAJORITY) ? k != maj
                 : s == EFFML_SAMPLER_STRATEGY_MINORITY                                 ? k == mino
                 : s == EFFML_SAMPLER_STRATEGY_NOT_MINORITY                             ? k != mino
                                                                                : 1;
      if (take) values[k] = n_maj - c->counts[k];
    }
  } else {
    if (s == EFFML_SAMPLER_STRATEGY_MINORITY)
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "sampling_strategy='%s' cannot be used with an under-sampler or cleaner",
                        strategy_name(s));
    for (int64_t k = 0; k < nc; ++k) {
      int take = (s == EFFML_SAMPLER_STRATEGY_AUTO || s == EFFML_SAMPLER_STRATEGY_NOT_MINORITY) ? k != mino
                 : s == EFFML_SAMPLER_STRATEGY_MAJORITY                                 ? k == maj
                 : s == EFFML_SAMPLER_STRATEGY_NOT_MAJORITY                             ? k != maj
                                                                                : 1;
      if (take) values[k] = fam == EFFML__FAMILY_UNDER ? n_min : 1;
    }
  }
  return EFFML_OK;
}

/* Phases: at least two classes; majority and minority; values[] = -1 (class untouched);
 * then resolve_targets, resolve_ratio or resolve_named. */
effml_status effml__strategy_resolve(effml_context *ctx, const effml_sampler_resample_options *o,
                                     const effml__classes *c, int64_t *values) {
  const int64_t nc = c->n_classes;
  if (nc < 2)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "y has %lld class(es) (label %lld): re-sampling needs at least 2 classes",
                      (long long)nc, nc ? (long long)c->labels[0] : 0LL);
  int64_t maj = 0, mino = 0;
  for (int64_t k = 1; k < nc; ++k) {
    if (c->counts[k] > c->counts[maj]) maj = k;
    if (c->counts[k] < c->counts[mino]) mino = k;
  }
  const int fam = effml__method_family(o->method);
  const int32_t s = o->sampling_strategy;
  for (int64_t k = 0; k < nc; ++k) values[k] = -1;
  if (s == EFFML_SAMPLER_STRATEGY_TARGETS) return resolve_targets(ctx, o, c, fam, values);
  if (s == EFFML_SAMPLER_STRATEGY_RATIO) return resolve_ratio(ctx, o, c, fam, maj, mino, values);
  return resolve_named(ctx, s, c, fam, maj, mino, values);
}
