/*
 * Calibration of the exit rules from validation logits (cascade.h,
 * effml_cascade_select_thresholds; Xia & Bouganis Sec. 3.2, reference
 * `cascade_results.py` L702-767 and `eval_utils.py::get_threshold`):
 * the task threshold tau of each stage from a target coverage, risk or TPR,
 * then either tau itself (single threshold) or a window of validation-score
 * quantiles around tau's percentile rank.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cascade_internal.h"

void effml_cascade_threshold_options_init(effml_cascade_threshold_options *opt) {
  if (!opt) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->rule = EFFML_CASCADE_EXIT_WINDOW;
  opt->target = EFFML_CASCADE_TARGET_COVERAGE;
  opt->target_value = 0.8;
  opt->window_below = 0.1;
  opt->window_above = 0.1;
}

/* numpy.quantile(a, p) with the default 'linear' method on ascending `a`
 * (virtual index (n-1)*p, and numpy's two-sided lerp for bit-equal results). */
static double quantile_sorted(const double *a, int64_t n, double p) {
  double v = (double)(n - 1) * p;
  double fl = floor(v);
  int64_t i = (int64_t)fl;
  if (i >= n - 1) return a[n - 1];
  if (i < 0) return a[0];
  double t = v - fl, lo = a[i], hi = a[i + 1], d = hi - lo;
  return t >= 0.5 ? hi - d * (1.0 - t) : lo + d * t;
}

/* scipy.stats.percentileofscore(a, x, kind='rank') / 100. */
static double percentile_rank(const double *a, int64_t n, double x) {
  int64_t left = 0, right = 0;
  for (int64_t i = 0; i < n; ++i) {
    left += a[i] < x;
    right += a[i] <= x;
  }
  return (double)(left + right + (left < right)) * (50.0 / (double)n) / 100.0;
}

typedef struct {
  int32_t rule;
  double a, b, tau;
} stage_rule;

/* tau and the rule of one stage from its validation scores and predictions. */
static effml_status fit_stage(effml_context *ctx, int32_t m, const double *s, const int32_t *pred,
                              const int64_t *labels, int64_t n,
                              const effml_cascade_threshold_options *o, stage_rule *out) {
  int64_t *idx = NULL;
  double *asc = NULL;
  EFFML__TRY(effml__sort_desc(ctx, s, n, &idx));
  effml_status st = EFFML_OK;
  double tau;
  if (o->target == EFFML_CASCADE_TARGET_RISK) {
    /* largest selectable k (the end of a tie group: "score >= tau" takes the whole
     * group) whose top-k validation risk is <= r */
    int64_t wrong = 0, best = 0, first = 0;
    double first_risk = 0.0;
    for (int64_t k = 1; k <= n; ++k) {
      int64_t i = idx[k - 1];
      wrong += pred[i] != labels[i];
      if (k < n && s[idx[k]] == s[i]) continue;
      if (!first) {
        first = k;
        first_risk = (double)wrong / (double)k;
      }
      if ((double)wrong / (double)k <= o->target_value) best = k;
    }
    if (best == 0) {
      /* no selectable coverage: coverage 0, tau = +inf, the answer of
       * effml_metrics_selective_coverage_at_risk() on these scores */
      tau = INFINITY;
      effml__log(ctx, EFFML_CORE_LOG_WARN,
                 "cascade stage %d: no coverage reaches risk=%g on the validation set (its most "
                 "confident group, %lld sample(s), has risk %g): tau = +inf, the stage accepts "
                 "no sample",
                 (int)m, o->target_value, (long long)first, first_risk);
    } else {
      tau = s[idx[best - 1]];
    }
  } else { /* coverage, or TPR on in-distribution scores: the same order statistic; with
            * ties at it, "score >= tau" selects the whole group (the smallest selectable
            * coverage >= c) */
    tau = s[idx[effml__ceil_count(o->target_value, n) - 1]];
  }
  out->tau = tau;
  if (o->rule == EFFML_CASCADE_EXIT_THRESHOLD) {
    out->rule = EFFML_CASCADE_EXIT_THRESHOLD;
    out->a = tau;
    out->b = INFINITY;
  } else {
    asc = effml__alloc_or_err(ctx, (size_t)n * sizeof(double), "sorted scores");
    if (!asc) {
      st = EFFML_E_NOMEM;
      goto done;
    }
    for (int64_t i = 0; i < n; ++i) asc[i] = s[idx[n - 1 - i]];
    double q = percentile_rank(asc, n, tau);
    double qlo = q - o->window_below, qhi = q + o->window_above;
    if (qlo < 0.0) qlo = 0.0;
    if (qhi > 1.0) qhi = 1.0;
    out->rule = EFFML_CASCADE_EXIT_WINDOW;
    out->a = quantile_sorted(asc, n, qlo);
    /* tau = +inf (risk target out of reach): q = 1 and the window reaches up to tau, so no
     * sample exits as accepted above it */
    out->b = isinf(tau) ? INFINITY : quantile_sorted(asc, n, qhi);
  }
done:
  effml__free(ctx, idx);
  effml__free(ctx, asc);
  return st;
}

/* The options' rule, target and ranges. */
static effml_status check_threshold_options(effml_context *ctx,
                                            const effml_cascade_threshold_options *o) {
  if (o->rule != EFFML_CASCADE_EXIT_WINDOW && o->rule != EFFML_CASCADE_EXIT_THRESHOLD)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "rule=%d: calibration fits EFFML_CASCADE_EXIT_WINDOW or _THRESHOLD",
                      (int)o->rule);
  const char *tname = o->target == EFFML_CASCADE_TARGET_COVERAGE ? "coverage"
                      : o->target == EFFML_CASCADE_TARGET_RISK   ? "risk"
                      : o->target == EFFML_CASCADE_TARGET_TPR    ? "tpr"
                                                                 : NULL;
  if (!tname)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "target=%d is not an EFFML_CASCADE_TARGET_*",
                      (int)o->target);
  if (!(o->target_value > 0.0 && o->target_value <= 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "target_value (%s)=%g must be in (0, 1]", tname,
                      o->target_value);
  if (!(o->window_below >= 0.0 && o->window_below <= 1.0) ||
      !(o->window_above >= 0.0 && o->window_above <= 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "window_below=%g and window_above=%g must be in [0, 1]", o->window_below,
                      o->window_above);
  return EFFML_OK;
}

/* num_stages (M - 1 or M) validation logits of K classes with one row count, *n. */
static effml_status check_val_logits(effml_context *ctx, int32_t M, int64_t K, int32_t num_stages,
                                     const effml_tensor *const *val_logits, int64_t *n) {
  if (num_stages < 1 || val_logits == NULL)
    return effml__err(ctx, EFFML_E_SHAPE,
                      "empty validation set: num_stages=%d (val_logits %s), need %d or %d",
                      (int)num_stages, val_logits ? "given" : "NULL", (int)(M - 1), (int)M);
  if (num_stages != M && num_stages != M - 1)
    return effml__err(ctx, EFFML_E_SHAPE,
                      "num_stages=%d validation logits for a cascade of %d stages (need %d or %d)",
                      (int)num_stages, (int)M, (int)(M - 1), (int)M);
  *n = 0;
  for (int32_t m = 0; m < num_stages; ++m) {
    char name[40];
    snprintf(name, sizeof name, "val_logits[%d]", (int)m);
    EFFML__TRY(effml__check_logits(ctx, val_logits[m], name, K));
    if (m == 0) *n = val_logits[0]->shape[0];
    if (val_logits[m]->shape[0] != *n)
      return effml__err(ctx, EFFML_E_SHAPE,
                        "val_logits[%d] has %lld rows but val_logits[0] has %lld", (int)m,
                        (long long)val_logits[m]->shape[0], (long long)*n);
  }
  return EFFML_OK;
}

/* Scratch of the stage fits: running sums, scores and predictions. */
typedef struct {
  double *acc, *sacc, *sc;
  int32_t *pr;
} fit_scratch;

/* The rules of stages 0..M-2: stage m's validation scores accumulate member by member,
 * as in a run where every sample reaches every stage, and its rule is fitted on them. */
static effml_status fit_stages(effml_context *ctx, const effml_cascade *cascade,
                               const effml_tensor *const *val_logits, const int64_t *labels,
                               int64_t n, const effml_cascade_threshold_options *o,
                               const fit_scratch *w, stage_rule *rules) {
  const int32_t M = cascade->num_stages;
  for (int32_t m = 0; m < M - 1; ++m) {
    EFFML__TRY(effml__progress(ctx, m, M - 1, "stages")); /* the rules are written after */
    effml__stage_block b;
    memset(&b, 0, sizeof b);
    b.K = cascade->num_classes;
    b.score_kind = cascade->score;
    b.aggregation = cascade->aggregation;
    b.temperature = cascade->temperature;
    b.m = m + 1;
    b.cal = cascade->stages[m].cal;
    b.acc = w->acc;
    b.sacc = w->sacc;
    b.score = w->sc;
    b.pred = w->pr;
    char name[40];
    snprintf(name, sizeof name, "val_logits[%d]", (int)m);
    EFFML__TRY(effml__stage_tensor(ctx, &b, val_logits[m], n, name));
    EFFML__TRY(fit_stage(ctx, m, w->sc, w->pr, labels, n, o, &rules[m]));
  }
  return EFFML_OK;
}

/* Phases: options; validation set; labels and scratch; the stage fits (fit_stages); the
 * rules written into the cascade only once every stage has been fitted. */
effml_status effml_cascade_select_thresholds(effml_context *ctx, effml_cascade *cascade,
                                     int32_t num_stages, const effml_tensor *const *val_logits,
                                     const effml_tensor *val_labels,
                                     const effml_cascade_threshold_options *opt) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, cascade);
  effml_cascade_threshold_options o;
  EFFML__TRY(EFFML__OPTIONS_READ(ctx, NULL, effml_cascade_threshold_options_init, opt, &o,
                                 sizeof(uint32_t) + sizeof(int32_t)));
  EFFML__TRY(check_threshold_options(ctx, &o));
  const int32_t M = cascade->num_stages;
  const int64_t K = cascade->num_classes;
  if (M < 1) return effml__err(ctx, EFFML_E_STATE, "the cascade has no stage to calibrate");
  if (M == 1) return EFFML_OK; /* the only stage is the last: nothing exits early */
  int64_t n = 0;
  EFFML__TRY(check_val_logits(ctx, M, K, num_stages, val_logits, &n));
  int64_t *labels = NULL;
  if (o.target == EFFML_CASCADE_TARGET_RISK) {
    if (!val_labels)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "val_labels is NULL but target is risk");
    EFFML__TRY(effml__read_labels(ctx, val_labels, "val_labels", n, K, &labels));
  }
  size_t nk;
  if (!effml__mul_size((size_t)n, (size_t)K * sizeof(double), &nk)) {
    effml__free(ctx, labels);
    return effml__err(ctx, EFFML_E_OVERFLOW, "n=%lld x num_classes=%lld overflows",
                      (long long)n, (long long)K);
  }
  fit_scratch w;
  w.acc = effml__malloc(ctx, nk);
  w.sacc = effml__malloc(ctx, (size_t)n * sizeof(double));
  w.sc = effml__malloc(ctx, (size_t)n * sizeof(double));
  w.pr = effml__malloc(ctx, (size_t)n * sizeof(int32_t));
  stage_rule *rules = effml__calloc(ctx, (size_t)M, sizeof(stage_rule));
  effml_status st = EFFML_OK;
  if (!w.acc || !w.sacc || !w.sc || !w.pr || !rules)
    st = effml__err(ctx, EFFML_E_NOMEM, "calibrate: out of memory for %lld samples", (long long)n);
  if (st == EFFML_OK) st = fit_stages(ctx, cascade, val_logits, labels, n, &o, &w, rules);
  if (st == EFFML_OK)
    for (int32_t m = 0; m < M - 1; ++m) {
      cascade->stages[m].rule = rules[m].rule;
      cascade->stages[m].a = rules[m].a;
      cascade->stages[m].b = rules[m].b;
      cascade->stages[m].tau = rules[m].tau;
    }
  effml__free(ctx, labels);
  effml__free(ctx, w.acc);
  effml__free(ctx, w.sacc);
  effml__free(ctx, w.sc);
  effml__free(ctx, w.pr);
  effml__free(ctx, rules);
  return st;
}
