/*
 * The cascade object: options, stages, exit rules, and the no-exit ensemble
 * (include/effml/cascade.h).  Running lives in run.c, calibration in
 * calibrate.c, the per-row maths in scores.c.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cascade_internal.h"

void effml_cascade_options_init(effml_cascade_options *opt) {
  if (!opt) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->num_classes = 0;
  opt->score = EFFML_CASCADE_SCORE_MSP;
  opt->aggregation = EFFML_CASCADE_AGG_MEAN;
  opt->temperature = 1.0;
}

effml_status effml__cascade_check_options(effml_context *ctx, const effml_cascade_options *opt,
                                          effml_cascade_options *known) {
  EFFML__CHECK_NULL(ctx, opt);
  EFFML__TRY(EFFML__OPTIONS_READ(ctx, NULL, effml_cascade_options_init, opt, known,
                                 offsetof(effml_cascade_options, num_classes) + sizeof(int64_t)));
  if (known->num_classes < 2)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "num_classes=%lld must be >= 2",
                      (long long)known->num_classes);
  if (known->score < EFFML_CASCADE_SCORE_MSP || known->score > EFFML_CASCADE_SCORE_DOCTOR)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "score=%d is not an EFFML_CASCADE_SCORE_* value",
                      (int)known->score);
  if (known->aggregation != EFFML_CASCADE_AGG_MEAN && known->aggregation != EFFML_CASCADE_AGG_LAST)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "aggregation=%d is not EFFML_CASCADE_AGG_MEAN or _LAST",
                      (int)known->aggregation);
  if (!(known->temperature > 0.0) || !isfinite(known->temperature))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "temperature=%g must be finite and > 0",
                      known->temperature);
  return EFFML_OK;
}

effml_status effml_cascade_create(effml_context *ctx, const effml_cascade_options *opt,
                                  effml_cascade **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, out);
  effml_cascade_options o;
  EFFML__TRY(effml__cascade_check_options(ctx, opt, &o));
  effml_cascade *c = effml__calloc_or_err(ctx, 1, sizeof *c, "cascade");
  if (!c) return EFFML_E_NOMEM;
  c->ctx = ctx;
  c->num_classes = o.num_classes;
  c->score = o.score;
  c->aggregation = o.aggregation;
  c->temperature = o.temperature;
  *out = c;
  return EFFML_OK;
}

void effml_cascade_free(effml_cascade *cascade) {
  if (!cascade) return;
  for (int32_t m = 0; m < cascade->num_stages; ++m) effml__free(cascade->ctx, cascade->stages[m].cal);
  effml__free(cascade->ctx, cascade->stages);
  effml__free(cascade->ctx, cascade);
}

static effml_status add_stage(effml_context *ctx, effml_cascade *c, effml__cascade_stage *s) {
  if (!isfinite(s->cost) || s->cost < 0.0)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "cost=%g MACs per sample must be finite and >= 0",
                      s->cost);
  if (c->num_stages == INT32_MAX)
    return effml__err(ctx, EFFML_E_OVERFLOW, "too many stages");
  if (c->num_stages == c->cap_stages) {
    int32_t cap = c->cap_stages ? c->cap_stages * 2 : 4;
    effml__cascade_stage *ns = effml__calloc_or_err(ctx, (size_t)cap, sizeof *ns, "cascade stages");
    if (!ns) return EFFML_E_NOMEM;
    if (c->num_stages) memcpy(ns, c->stages, (size_t)c->num_stages * sizeof *ns);
    effml__free(c->ctx, c->stages);
    c->stages = ns;
    c->cap_stages = cap;
  }
  s->rule = EFFML_CASCADE_EXIT_NEVER;
  s->a = -INFINITY;
  s->b = INFINITY;
  s->tau = NAN;
  s->cal = NULL;
  c->stages[c->num_stages++] = *s;
  return EFFML_OK;
}

effml_status effml_cascade_add_stage_fn(effml_context *ctx, effml_cascade *cascade,
                                        effml_cascade_stage_fn fn, void *stage_data,
                                        double cost) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, cascade);
  EFFML__CHECK_NULL(ctx, fn);
  effml__cascade_stage s;
  memset(&s, 0, sizeof s);
  s.fn = fn;
  s.stage_data = stage_data;
  s.cost = cost;
  return add_stage(ctx, cascade, &s);
}

effml_status effml_cascade_add_stage_logits(effml_context *ctx, effml_cascade *cascade,
                                            const effml_tensor *logits, double cost) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, cascade);
  char name[48];
  snprintf(name, sizeof name, "logits of stage %d", (int)cascade->num_stages);
  EFFML__TRY(effml__check_logits(ctx, logits, name, cascade->num_classes));
  if (cascade->logits_rows && logits->shape[0] != cascade->logits_rows)
    return effml__err(ctx, EFFML_E_SHAPE,
                      "%s has %lld rows but earlier precomputed stages have %lld", name,
                      (long long)logits->shape[0], (long long)cascade->logits_rows);
  effml__cascade_stage s;
  memset(&s, 0, sizeof s);
  s.logits = logits;
  s.cost = cost;
  EFFML__TRY(add_stage(ctx, cascade, &s));
  cascade->logits_rows = logits->shape[0];
  return EFFML_OK;
}

int32_t effml_cascade_num_stages(const effml_cascade *cascade) {
  return cascade ? cascade->num_stages : 0;
}

int64_t effml_cascade_num_classes(const effml_cascade *cascade) {
  return cascade ? cascade->num_classes : 0;
}

double effml_cascade_stage_cost(const effml_cascade *cascade, int32_t stage) {
  if (!cascade || stage < 0 || stage >= cascade->num_stages) return NAN;
  return cascade->stages[stage].cost;
}

effml_status effml_cascade_set_exit_rule(effml_context *ctx, effml_cascade *cascade,
                                         int32_t stage, int32_t rule, double a, double b) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, cascade);
  if (stage < 0 || stage >= cascade->num_stages)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "stage=%d is out of range [0, %d)", (int)stage,
                      (int)cascade->num_stages);
  if (stage == cascade->num_stages - 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "stage=%d is the last stage: every sample still in flight exits there",
                      (int)stage);
  effml__cascade_stage *s = &cascade->stages[stage];
  switch (rule) {
    case EFFML_CASCADE_EXIT_NEVER:
      a = -INFINITY;
      b = INFINITY;
      break;
    case EFFML_CASCADE_EXIT_THRESHOLD:
      if (isnan(a))
        return effml__err(ctx, EFFML_E_INVALID_ARG, "threshold a=NaN for stage %d", (int)stage);
      b = INFINITY;
      break;
    case EFFML_CASCADE_EXIT_WINDOW:
      if (isnan(a) || isnan(b))
        return effml__err(ctx, EFFML_E_INVALID_ARG, "window [lo=%g, hi=%g] of stage %d has NaN",
                          a, b, (int)stage);
      if (a > b)
        return effml__err(ctx, EFFML_E_INVALID_ARG,
                          "window of stage %d has lo=%g > hi=%g (need lo <= hi)", (int)stage, a,
                          b);
      break;
    default:
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "rule=%d is not an EFFML_CASCADE_EXIT_* value", (int)rule);
  }
  s->rule = rule;
  s->a = a;
  s->b = b;
  s->tau = NAN; /* set by hand: no calibrated task threshold */
  return EFFML_OK;
}

effml_status effml_cascade_get_exit_rule(effml_context *ctx, const effml_cascade *cascade,
                                         int32_t stage, int32_t *rule, double *a, double *b,
                                         double *tau) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, cascade);
  if (stage < 0 || stage >= cascade->num_stages)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "stage=%d is out of range [0, %d)", (int)stage,
                      (int)cascade->num_stages);
  const effml__cascade_stage *s = &cascade->stages[stage];
  int last = stage == cascade->num_stages - 1;
  if (rule) *rule = last ? EFFML_CASCADE_EXIT_NEVER : s->rule;
  if (a) *a = last ? -INFINITY : s->a;
  if (b) *b = last ? INFINITY : s->b;
  if (tau) *tau = s->tau;
  return EFFML_OK;
}

/* ---- ensemble without exits ---- */

effml_status effml_cascade_ensemble_predict(effml_context *ctx, const effml_cascade_options *opt,
                                    int32_t num_members, const effml_tensor *const *logits,
                                    effml_tensor *pred, effml_tensor *score,
                                    effml_tensor *probs) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  effml_cascade_options o;
  EFFML__TRY(effml__cascade_check_options(ctx, opt, &o));
  EFFML__CHECK_NULL(ctx, logits);
  if (num_members < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "num_members=%d must be >= 1", (int)num_members);
  const int64_t K = o.num_classes;
  int64_t n = 0;
  for (int32_t m = 0; m < num_members; ++m) {
    char name[40];
    snprintf(name, sizeof name, "logits[%d]", (int)m);
    EFFML__TRY(effml__check_logits(ctx, logits[m], name, K));
    if (m == 0) n = logits[0]->shape[0];
    if (logits[m]->shape[0] != n)
      return effml__err(ctx, EFFML_E_SHAPE, "logits[%d] has %lld rows but logits[0] has %lld",
                        (int)m, (long long)logits[m]->shape[0], (long long)n);
  }
  EFFML__TRY(effml__check_out(ctx, pred, "pred", EFFML_I32, EFFML_I64, 1, n, 0));
  EFFML__TRY(effml__check_out(ctx, score, "score", EFFML_F32, EFFML_F64, 1, n, 0));
  EFFML__TRY(effml__check_out(ctx, probs, "probs", EFFML_F32, EFFML_F64, 2, n, K));
  size_t nk;
  if (!effml__mul_size((size_t)n, (size_t)K, &nk))
    return effml__err(ctx, EFFML_E_OVERFLOW, "n=%lld x num_classes=%lld overflows",
                      (long long)n, (long long)K);
  double *acc = effml__malloc(ctx, nk * sizeof(double));
  double *sacc = effml__malloc(ctx, (size_t)n * sizeof(double));
  double *sc = effml__malloc(ctx, (size_t)n * sizeof(double));
  int32_t *pr = effml__malloc(ctx, (size_t)n * sizeof(int32_t));
  effml_status st = EFFML_OK;
  if (!acc || !sacc || !sc || !pr) {
    st = effml__err(ctx, EFFML_E_NOMEM, "ensemble_predict: out of memory for n=%lld",
                    (long long)n);
    goto done;
  }
  int32_t first = o.aggregation == EFFML_CASCADE_AGG_LAST ? num_members - 1 : 0;
  for (int32_t m = first; m < num_members; ++m) {
    effml__stage_block b;
    memset(&b, 0, sizeof b);
    b.K = K;
    b.score_kind = o.score;
    b.aggregation = o.aggregation;
    b.temperature = o.temperature;
    b.m = m - first + 1;
    b.acc = acc;
    b.sacc = sacc;
    b.score = sc;
    b.pred = pr;
    char name[40];
    snprintf(name, sizeof name, "logits[%d]", (int)m);
    st = effml__progress(ctx, m - first, num_members - first, "members"); /* outputs untouched */
    if (st) goto done;
    st = effml__stage_tensor(ctx, &b, logits[m], n, name);
    if (st) goto done;
  }
  if (pred) effml__write_i32_out(pred, pr, n);
  if (score) effml__write_f64_out(score, sc, n);
  if (probs) {
    double inv = o.aggregation == EFFML_CASCADE_AGG_MEAN ? 1.0 / (double)num_members : 1.0;
    for (size_t i = 0; i < nk; ++i) acc[i] *= inv;
    effml__write_f64_out(probs, acc, (int64_t)nk);
  }
done:
  effml__free(ctx, acc);
  effml__free(ctx, sacc);
  effml__free(ctx, sc);
  effml__free(ctx, pr);
  return st;
}

effml_status effml_cascade_set_stage_calibration(effml_context *ctx, effml_cascade *cascade,
                                                 int32_t stage, const effml_calibrator *cal) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_cascade_set_stage_calibration";
  EFFML__CHECK_NULL(ctx, cascade);
  if (stage < 0 || stage >= cascade->num_stages)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: stage=%d is outside [0, %d)", fn, (int)stage,
                      (int)cascade->num_stages);
  effml__cascade_stage *s = &cascade->stages[stage];
  if (!cal) {
    effml__free(cascade->ctx, s->cal);
    s->cal = NULL;
    return EFFML_OK;
  }
  const int64_t K = cascade->num_classes, np = effml_calibration_num_params(cal);
  const int32_t method = effml_calibration_method(cal);
  if (method == EFFML_CALIBRATION_CORRECTNESS_AWARE)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: a correctness-aware calibrator needs per-sample view features, which a "
                      "cascade stage does not have; calibrate such logits before adding them",
                      fn);
  const int64_t cal_k = effml_calibration_num_classes(cal);
  if (cal_k != K || (method == EFFML_CALIBRATION_VECTOR && np != 2 * K) ||
      (method == EFFML_CALIBRATION_TEMPERATURE && np != 1))
    return effml__err(ctx, EFFML_E_SHAPE,
                      "%s: the calibrator was made for %lld classes, the cascade has %lld", fn,
                      (long long)cal_k, (long long)K);
  double *ab = (double *)effml__alloc_or_err(cascade->ctx, (size_t)(2 * K) * sizeof(double),
                                             "stage calibration");
  if (!ab) return EFFML_E_NOMEM;
  effml_status st = EFFML_OK;
  if (method == EFFML_CALIBRATION_TEMPERATURE) {
    double T = 1.0;
    st = effml_calibration_get_params(ctx, cal, &T);
    for (int64_t k = 0; k < K; ++k) ab[k] = 1.0 / T, ab[K + k] = 0.0;
  } else {
    st = effml_calibration_get_params(ctx, cal, ab);
  }
  if (st != EFFML_OK) {
    effml__free(cascade->ctx, ab);
    return st;
  }
  effml__free(cascade->ctx, s->cal);
  s->cal = ab;
  return EFFML_OK;
}
