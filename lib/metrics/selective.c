/*
 * Selective-classification and OOD metrics over (score, correct) pairs
 * (metrics.h; reference Guoxoug/window-early-exit `utils/eval_utils.py`).
 * Every selection is "score >= threshold" on confidences; every result is a
 * function of the multiset of (score, correct) pairs (tied scores form one
 * group, selected together), so it does not depend on the order of the input.
 */
#include <math.h>

#include "../cascade/cascade_internal.h"

/* The risk-coverage curve grouped by distinct score (metrics.h, "Ties"):
 * group j = 1..g holds the j-th largest distinct score thr[j]; cnt[j] and wrong[j]
 * count the samples and the wrong ones with score >= thr[j] (cnt[0] = wrong[0] = 0,
 * thr[0] = +inf).  Everything here depends only on the multiset of pairs. */
typedef struct {
  int64_t n, g;
  double *thr;     /* [n + 1] */
  int64_t *cnt;    /* [n + 1] */
  int64_t *wrong;  /* [n + 1] */
} rc_data;

static void rc_free(effml_context *ctx, rc_data *d) {
  effml__free(ctx, d->thr);
  effml__free(ctx, d->cnt);
  effml__free(ctx, d->wrong);
}

static effml_status rc_build(effml_context *ctx, const effml_tensor *scores,
                             const effml_tensor *correct, rc_data *d) {
  d->thr = NULL;
  d->cnt = NULL;
  d->wrong = NULL;
  d->g = 0;
  double *s = NULL;
  int64_t *idx = NULL;
  unsigned char *ok = NULL;
  effml_status st = effml__read_scores(ctx, scores, "scores", &d->n, &s);
  if (st == EFFML_OK) st = effml__read_flags(ctx, correct, "correct", d->n, &ok);
  if (st == EFFML_OK) st = effml__sort_desc(ctx, s, d->n, &idx);
  if (st == EFFML_OK) {
    d->thr = effml__alloc_or_err(ctx, (size_t)(d->n + 1) * sizeof(double), "rc curve");
    d->cnt = d->thr ? effml__alloc_or_err(ctx, (size_t)(d->n + 1) * sizeof(int64_t), "rc curve")
                    : NULL;
    d->wrong = d->cnt ? effml__alloc_or_err(ctx, (size_t)(d->n + 1) * sizeof(int64_t), "rc curve")
                      : NULL;
    if (!d->wrong) st = EFFML_E_NOMEM;
  }
  if (st == EFFML_OK) {
    d->thr[0] = INFINITY;
    d->cnt[0] = 0;
    d->wrong[0] = 0;
    int64_t g = 0, w = 0;
    for (int64_t k = 0; k < d->n; ++k) {
      double v = s[idx[k]];
      w += !ok[idx[k]];
      if (k + 1 < d->n && s[idx[k + 1]] == v) continue; /* the tie group goes on */
      ++g;
      d->thr[g] = v;
      d->cnt[g] = k + 1;
      d->wrong[g] = w;
    }
    d->g = g;
  }
  effml__free(ctx, s);
  effml__free(ctx, idx);
  effml__free(ctx, ok);
  if (st != EFFML_OK) rc_free(ctx, d);
  return st;
}

/* Risk of group j >= 1; the curve's starting point j = 0 takes group 1's risk. */
static inline double rc_risk(const rc_data *d, int64_t j) {
  if (j == 0) j = 1;
  return (double)d->wrong[j] / (double)d->cnt[j];
}

static effml_status check_fraction(effml_context *ctx, const char *name, double v) {
  if (!(v > 0.0 && v <= 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s=%g must be in (0, 1]", name, v);
  return EFFML_OK;
}

effml_status effml_metrics_selective_risk_coverage_curve(effml_context *ctx, const effml_tensor *scores,
                                                 const effml_tensor *correct,
                                                 effml_tensor *coverage, effml_tensor *risk,
                                                 effml_tensor *thresholds, int64_t *num_points) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  rc_data d;
  EFFML__TRY(rc_build(ctx, scores, correct, &d));
  const int64_t n = d.n, g = d.g;
  effml_status st = effml__check_out(ctx, coverage, "coverage", EFFML_F64, EFFML_F64, 1, n + 1, 0);
  if (!st) st = effml__check_out(ctx, risk, "risk", EFFML_F64, EFFML_F64, 1, n + 1, 0);
  if (!st) st = effml__check_out(ctx, thresholds, "thresholds", EFFML_F64, EFFML_F64, 1, n + 1, 0);
  double *v = NULL;
  if (!st) {
    v = effml__alloc_or_err(ctx, (size_t)(n + 1) * sizeof(double), "rc curve");
    if (!v) st = EFFML_E_NOMEM;
  }
  /* points 0..g; entries g+1..n repeat point g (zero width) */
  if (!st && coverage) {
    for (int64_t k = 0; k <= n; ++k) v[k] = (double)d.cnt[k <= g ? k : g] / (double)n;
    effml__write_f64_out(coverage, v, n + 1);
  }
  if (!st && risk) {
    for (int64_t k = 0; k <= n; ++k) v[k] = rc_risk(&d, k <= g ? k : g);
    effml__write_f64_out(risk, v, n + 1);
  }
  if (!st && thresholds) {
    for (int64_t k = 0; k <= n; ++k) v[k] = d.thr[k <= g ? k : g];
    effml__write_f64_out(thresholds, v, n + 1);
  }
  if (!st && num_points) *num_points = g + 1;
  effml__free(ctx, v);
  rc_free(ctx, &d);
  return st;
}

effml_status effml_metrics_selective_aurc(effml_context *ctx, const effml_tensor *scores,
                                  const effml_tensor *correct, double *aurc) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, aurc);
  rc_data d;
  EFFML__TRY(rc_build(ctx, scores, correct, &d));
  /* step integral: group j's coverage interval (c_{j-1}, c_j] at the risk of threshold j */
  double area = 0.0;
  for (int64_t j = 1; j <= d.g; ++j)
    area += (double)(d.cnt[j] - d.cnt[j - 1]) * rc_risk(&d, j);
  *aurc = area / (double)d.n;
  rc_free(ctx, &d);
  return EFFML_OK;
}

effml_status effml_metrics_selective_augrc(effml_context *ctx, const effml_tensor *scores,
                                           const effml_tensor *correct, double *augrc) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, augrc);
  rc_data d;
  EFFML__TRY(rc_build(ctx, scores, correct, &d));
  /* the same steps as AURC, at the generalized risk w_j / N of threshold j */
  double area = 0.0;
  for (int64_t j = 1; j <= d.g; ++j)
    area += (double)(d.cnt[j] - d.cnt[j - 1]) * (double)d.wrong[j];
  *augrc = area / ((double)d.n * (double)d.n);
  rc_free(ctx, &d);
  return EFFML_OK;
}

effml_status effml_metrics_selective_risk_at_coverage(effml_context *ctx, const effml_tensor *scores,
                                              const effml_tensor *correct, double coverage,
                                              double *risk, double *threshold,
                                              double *selected_coverage) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, risk);
  EFFML__TRY(check_fraction(ctx, "coverage", coverage));
  rc_data d;
  EFFML__TRY(rc_build(ctx, scores, correct, &d));
  /* the smallest selectable coverage >= c: the first group holding ceil(c*N) samples */
  const int64_t k = effml__ceil_count(coverage, d.n);
  int64_t j = 1;
  while (d.cnt[j] < k) ++j;
  *risk = rc_risk(&d, j);
  if (threshold) *threshold = d.thr[j];
  if (selected_coverage) *selected_coverage = (double)d.cnt[j] / (double)d.n;
  rc_free(ctx, &d);
  return EFFML_OK;
}

effml_status effml_metrics_selective_coverage_at_risk(effml_context *ctx, const effml_tensor *scores,
                                              const effml_tensor *correct, double risk,
                                              double *coverage, double *threshold) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, coverage);
  EFFML__TRY(check_fraction(ctx, "risk", risk));
  rc_data d;
  EFFML__TRY(rc_build(ctx, scores, correct, &d));
  int64_t best = 0; /* group 0: nothing selected, threshold +inf */
  for (int64_t j = d.g; j >= 1; --j)
    if (rc_risk(&d, j) <= risk) {
      best = j;
      break;
    }
  *coverage = (double)d.cnt[best] / (double)d.n;
  if (threshold) *threshold = d.thr[best];
  rc_free(ctx, &d);
  return EFFML_OK;
}

/* Scores, OOD flags and the descending order, with both classes present. */
static effml_status ood_build(effml_context *ctx, const effml_tensor *scores,
                              const effml_tensor *is_ood, int64_t *n, double **s,
                              unsigned char **ood, int64_t **idx, int64_t *n_ood) {
  *s = NULL;
  *ood = NULL;
  *idx = NULL;
  effml_status st = effml__read_scores(ctx, scores, "scores", n, s);
  if (!st) st = effml__read_flags(ctx, is_ood, "is_ood", *n, ood);
  if (!st) {
    int64_t c = 0;
    for (int64_t i = 0; i < *n; ++i) c += (*ood)[i];
    *n_ood = c;
    if (c == 0 || c == *n)
      st = effml__err(ctx, EFFML_E_INVALID_ARG,
                      "is_ood has %lld OOD of %lld samples: need both ID and OOD samples",
                      (long long)c, (long long)*n);
  }
  if (!st) st = effml__sort_desc(ctx, *s, *n, idx);
  if (st) {
    effml__free(ctx, *s);
    effml__free(ctx, *ood);
    effml__free(ctx, *idx);
  }
  return st;
}

effml_status effml_metrics_ood_auroc(effml_context *ctx, const effml_tensor *scores,
                             const effml_tensor *is_ood, double *auroc) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, auroc);
  int64_t n, n_ood, *idx;
  double *s;
  unsigned char *ood;
  EFFML__TRY(ood_build(ctx, scores, is_ood, &n, &s, &ood, &idx, &n_ood));
  /* Mann-Whitney over tie groups: count (ID, OOD) pairs ordered the wrong way */
  double bad = 0.0;
  int64_t ood_above = 0;
  for (int64_t i = 0; i < n;) {
    int64_t g_id = 0, g_ood = 0, j = i;
    while (j < n && s[idx[j]] == s[idx[i]]) {
      if (ood[idx[j]])
        ++g_ood;
      else
        ++g_id;
      ++j;
    }
    bad += (double)g_id * (double)ood_above + 0.5 * (double)g_id * (double)g_ood;
    ood_above += g_ood;
    i = j;
  }
  *auroc = 1.0 - bad / ((double)(n - n_ood) * (double)n_ood);
  effml__free(ctx, s);
  effml__free(ctx, ood);
  effml__free(ctx, idx);
  return EFFML_OK;
}

effml_status effml_metrics_ood_fpr_at_tpr(effml_context *ctx, const effml_tensor *scores,
                                  const effml_tensor *is_ood, double tpr, double *fpr,
                                  double *threshold) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, fpr);
  EFFML__TRY(check_fraction(ctx, "tpr", tpr));
  int64_t n, n_ood, *idx;
  double *s;
  unsigned char *ood;
  EFFML__TRY(ood_build(ctx, scores, is_ood, &n, &s, &ood, &idx, &n_ood));
  int64_t k = effml__ceil_count(tpr, n - n_ood), seen = 0;
  double t = INFINITY;
  for (int64_t j = 0; j < n; ++j)
    if (!ood[idx[j]] && ++seen == k) {
      t = s[idx[j]];
      break;
    }
  int64_t fp = 0;
  for (int64_t i = 0; i < n; ++i) fp += ood[i] && s[i] >= t;
  *fpr = (double)fp / (double)n_ood;
  if (threshold) *threshold = t;
  effml__free(ctx, s);
  effml__free(ctx, ood);
  effml__free(ctx, idx);
  return EFFML_OK;
}

effml_status effml_metrics_top1_error(effml_context *ctx, const effml_tensor *pred,
                                   const effml_tensor *labels, double *error) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, error);
  EFFML__CHECK_NULL(ctx, pred);
  if (pred->ndim != 1)
    return effml__err(ctx, EFFML_E_SHAPE, "pred has %d dims, need 1-D [N]", (int)pred->ndim);
  int64_t n = pred->shape[0], *p = NULL, *y = NULL;
  effml_status st = effml__read_labels(ctx, pred, "pred", n, 0, &p);
  if (!st) st = effml__read_labels(ctx, labels, "labels", n, 0, &y);
  if (!st) {
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) wrong += p[i] != y[i];
    *error = (double)wrong / (double)n;
  }
  effml__free(ctx, p);
  effml__free(ctx, y);
  return st;
}

effml_status effml_metrics_nll(effml_context *ctx, const effml_tensor *probs,
                            const effml_tensor *labels, double *nll) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, nll);
  EFFML__CHECK_NULL(ctx, probs);
  if (probs->dtype != EFFML_F32 && probs->dtype != EFFML_F64)
    return effml__err(ctx, EFFML_E_DTYPE, "probs has dtype %s, need f32 or f64",
                      effml_tensor_dtype_name(probs->dtype));
  if (probs->ndim != 2)
    return effml__err(ctx, EFFML_E_SHAPE, "probs has %d dims, need [N, K]", (int)probs->ndim);
  const int64_t n = probs->shape[0], K = probs->shape[1];
  int64_t *y = NULL;
  EFFML__TRY(effml__read_labels(ctx, labels, "labels", n, K, &y));
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = i * probs->strides[0] + y[i] * probs->strides[1];
    double p = probs->dtype == EFFML_F64 ? effml__cf64(probs)[off] : (double)effml__cf32(probs)[off];
    if (isnan(p)) {
      long long yi = (long long)y[i];
      effml__free(ctx, y);
      return effml__err(ctx, EFFML_E_NUMERIC, "probs[%lld, %lld] is NaN", (long long)i, yi);
    }
    sum -= log(p);
  }
  effml__free(ctx, y);
  *nll = sum / (double)n;
  return EFFML_OK;
}
