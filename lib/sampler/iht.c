/* Instance hardness threshold (Smith, Martinez & Giraud-Carrier, "An instance
 * level analysis of data complexity", Machine Learning 95(2), 2014), as
 * imbalanced-learn 0.10's `InstanceHardnessThreshold`:
 *
 * - stratified `cv`-fold split with shuffling (scikit-learn's
 *   StratifiedKFold(shuffle=True) allocation: folds_for_class =
 *   repeat(arange(cv), allocation[:, k]), shuffled per class; the shuffle
 *   comes from our class streams);
 * - the caller's callback is trained on each fold's complement and returns
 *   class probabilities for the fold (cross_val_predict(method=
 *   "predict_proba")); p_i = the probability of row i's own class;
 * - a targeted class keeps its rows with p >= numpy.percentile(p_class,
 *   (1 - n_keep / n_class) * 100) (linear interpolation), in original order;
 *   ties at the threshold can keep more rows than asked, as imblearn.
 * Classes are in label order everywhere (imblearn indexes the probability
 * columns by the label value, which breaks for labels other than 0..K-1). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler_internal.h"

#define TAG_IHT 0x494854ULL

static int cmp_dbl(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double effml__np_percentile(double *v, int64_t n, double q) {
  qsort(v, (size_t)n, sizeof(double), cmp_dbl);
  double vi = (double)(n - 1) * (q / 100.0);
  double prev = floor(vi);
  int64_t ip = (int64_t)prev, in = ip + 1;
  if (ip < 0) ip = 0;
  if (ip > n - 1) ip = n - 1;
  if (in > n - 1) in = n - 1;
  if (in < 0) in = 0;
  double t = vi - prev, a = v[ip], b = v[in], diff = b - a;
  return t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;
}

effml_status effml__iht_plan(effml_context *ctx, const effml__resample_in *in, effml__plan *p) {
  const effml__classes *c = in->c;
  const effml_sampler_resample_options *o = in->o;
  const int64_t n = in->n, d = in->d, nc = c->n_classes, cv = o->cv;
  if (o->proba_fn == NULL)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "InstanceHardnessThreshold needs opt->proba_fn (the classifier's "
                      "probabilities)");
  int64_t maxc = 0;
  for (int64_t k = 0; k < nc; ++k)
    if (c->counts[k] > maxc) maxc = c->counts[k];
  if (cv < 2 || cv > maxc)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "cv=%lld must be >= 2 and at most the largest class size %lld", (long long)cv,
                      (long long)maxc);
  int64_t *fold = (int64_t *)effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "folds");
  int64_t *alloc = fold ? (int64_t *)effml__calloc(ctx, (size_t)(cv * nc), sizeof(int64_t)) : NULL;
  int64_t *ff = alloc ? (int64_t *)effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "folds") : NULL;
  double *pt = ff ? (double *)effml__alloc_or_err(ctx, (size_t)n * sizeof(double), "probabilities") : NULL;
  int64_t *tr = pt ? (int64_t *)effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "rows") : NULL;
  int64_t *ytr = tr ? (int64_t *)effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "labels") : NULL;
  double *proba = ytr ? (double *)effml__alloc_or_err(ctx, (size_t)(n * nc) * sizeof(double), "probabilities") : NULL;
  effml_status st = proba ? EFFML_OK : EFFML_E_NOMEM;
  /* allocation[i][k]: members of class k among sorted-labels positions i, i+cv, ... */
  if (st == EFFML_OK) {
    int64_t pos = 0;
    for (int64_t k = 0; k < nc; ++k)
      for (int64_t t = 0; t < c->counts[k]; ++t, ++pos) alloc[(pos % cv) * nc + k]++;
    for (int64_t k = 0; k < nc; ++k) {
      int64_t m = 0;
      for (int64_t i = 0; i < cv; ++i)
        for (int64_t t = 0; t < alloc[i * nc + k]; ++t) ff[m++] = i;
      effml__rng r;
      effml__class_rng(&r, o->seed, TAG_IHT, c->labels[k]);
      for (int64_t i = m - 1; i > 0; --i) {
        int64_t j = (int64_t)effml__rng_below(&r, (uint64_t)(i + 1));
        int64_t tmp = ff[i];
        ff[i] = ff[j];
        ff[j] = tmp;
      }
      for (int64_t t = 0; t < m; ++t) fold[c->rows[c->start[k] + t]] = ff[t];
    }
  }
  for (int64_t f = 0; st == EFFML_OK && f < cv; ++f) {
    int64_t ntr = 0, nte = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (fold[i] == f) ff[nte++] = i;
      else tr[ntr++] = i;
    }
    for (int64_t i = 0; i < ntr; ++i) ytr[i] = in->y[tr[i]];
    double *xtr = effml__gather_rows(ctx, in->x, d, tr, ntr);
    double *xte = xtr ? effml__gather_rows(ctx, in->x, d, ff, nte) : NULL;
    if (!xte) {
      effml__free(ctx, xtr);
      st = EFFML_E_NOMEM;
      break;
    }
    for (int64_t t = 0; t < nte * nc; ++t) proba[t] = NAN;
    int rc = o->proba_fn(o->proba_user_data, xtr, ytr, ntr, xte, nte, d, c->labels, nc, proba);
    effml__free(ctx, xtr);
    effml__free(ctx, xte);
    if (rc != 0) {
      st = effml__err(ctx, EFFML_E_INVALID_ARG, "proba_fn returned %d for fold %lld of %lld", rc,
                      (long long)f, (long long)cv);
      break;
    }
    for (int64_t t = 0; t < nte; ++t) {
      double v = proba[t * nc + c->cls[ff[t]]];
      if (!(v >= 0.0 && v <= 1.0)) {
        st = effml__err(ctx, EFFML_E_NUMERIC,
                        "proba_fn gave probability %g (row %lld, class %lld): not in [0, 1]", v,
                        (long long)ff[t], (long long)in->y[ff[t]]);
        break;
      }
      pt[ff[t]] = v;
    }
  }
  if (st == EFFML_OK) st = effml__plan_reserve(ctx, p, n);
  for (int64_t k = 0; st == EFFML_OK && k < nc; ++k) {
    const int64_t *rows = c->rows + c->start[k];
    const int64_t cnt = c->counts[k];
    if (in->values[k] < 0) {
      for (int64_t t = 0; t < cnt; ++t) effml__plan_push(p, rows[t], -1, 0.0);
      continue;
    }
    double *v = proba; /* scratch: n * nc >= cnt */
    for (int64_t t = 0; t < cnt; ++t) v[t] = pt[rows[t]];
    double thr = effml__np_percentile(v, cnt, (1.0 - (double)in->values[k] / (double)cnt) * 100.0);
    for (int64_t t = 0; t < cnt; ++t)
      if (pt[rows[t]] >= thr) effml__plan_push(p, rows[t], -1, 0.0);
  }
  effml__free(ctx, fold);
  effml__free(ctx, alloc);
  effml__free(ctx, ff);
  effml__free(ctx, pt);
  effml__free(ctx, tr);
  effml__free(ctx, ytr);
  effml__free(ctx, proba);
  return st;
}
