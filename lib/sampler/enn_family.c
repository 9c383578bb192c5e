/* The edited-nearest-neighbours family beyond plain ENN, with imbalanced-learn
 * 0.10 semantics (`RepeatedEditedNearestNeighbours`, `AllKNN`,
 * `NeighbourhoodCleaningRule`):
 *
 * - RENN (Tomek, "An experiment with the edited nearest-neighbor rule", IEEE
 *   Trans. SMC 6(6), 1976): ENN passes on the remaining rows until a pass
 *   removes nothing, a class that is not the (original) minority falls below
 *   the minority's size, a class disappears, or max_iter passes ran.
 * - AllKNN (Tomek 1976, "all k-NN"): ENN passes with k = 1, 2, ...,
 *   n_neighbors on the remaining rows; stops early on the last two criteria
 *   (the size one only when allow_minority is 0).
 * - NCL (Laurikkala, "Improving identification of difficult small classes by
 *   balancing class distribution", AIME 2001): remove A1 (rows an ENN with the
 *   majority vote removes) and A2 (the neighbours of the minority rows that
 *   their n_neighbors nearest rows misclassify, when the neighbour's class is
 *   targeted and holds at least threshold_cleaning * |minority| rows).
 *
 * Every pass re-resolves sampling_strategy on the remaining rows, as imblearn
 * re-fits its ENN.  Output order is imblearn's: RENN/AllKNN compose the
 * per-pass orders (grouped by class in label order), NCL keeps the original
 * order.
 *
 * Where we differ from imbalanced-learn 0.10 (docs/samplers.md):
 * - NCL cleans a class when |C| >= threshold_cleaning * |minority| (the paper's
 *   rule); 0.10 compares |C| > threshold_cleaning * n_samples (#764; 0.12
 *   switched to |C| > threshold * |minority|).  With three or more classes 0.10
 *   usually cleans no class at all.
 * - NCL kind_sel=ALL counts a minority row as misclassified when any of its
 *   neighbours has another class; 0.10's code tests "all neighbour labels are
 *   non-zero" instead.  kind_sel=MODE (the paper's k-NN vote) matches 0.10.
 * - The minority class on a tie of counts is the smallest label (imblearn: the
 *   first label met in y). */
#include <string.h>

#include "sampler_internal.h"

/* Query rows per block of an ENN pass (effml__enn_pass). */
#define ENN_QBLOCK 4096

/* One ENN pass on compact rows xs [m, d], labels ys [m]: the kept positions,
 * grouped by class in label order, ascending within a class.  The classes
 * that may lose rows come from o's sampling_strategy on ys (cleaning rules). */
effml_status effml__enn_pass(effml_context *ctx, const effml_sampler_resample_options *o,
                             const double *xs, const int64_t *ys, int64_t m, int64_t d,
                             int64_t k, int32_t kind_sel, int64_t *keep, int64_t *n_keep) {
  if (k < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "n_neighbors=%lld must be >= 1", (long long)k);
  if (m < k + 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "n_neighbors=%lld needs at least %lld samples, %lld remain", (long long)k,
                      (long long)(k + 1), (long long)m);
  if (kind_sel != EFFML_SAMPLER_ENN_ALL && kind_sel != EFFML_SAMPLER_ENN_MODE)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "kind_sel=%d must be EFFML_SAMPLER_ENN_ALL or EFFML_SAMPLER_ENN_MODE", (int)kind_sel);
  effml__classes c;
  EFFML__TRY(effml__classes_build(ctx, ys, m, &c));
  effml_sampler_resample_options oe = *o;
  oe.method = EFFML_SAMPLER_RESAMPLE_ENN;
  int64_t *values = (int64_t *)effml__alloc_or_err(ctx, (size_t)c.n_classes * sizeof(int64_t), "strategy");
  /* The rows are searched and decided one block of ENN_QBLOCK at a time: per
   * row only a keep flag outlives its block (not k neighbour indices). */
  const int64_t qb = m < ENN_QBLOCK ? m : ENN_QBLOCK;
  int64_t *nn = NULL, *self = NULL, *votes = NULL;
  char *ok = NULL;
  effml_status st = values ? effml__strategy_resolve(ctx, &oe, &c, values) : EFFML_E_NOMEM;
  if (st == EFFML_OK) {
    nn = (int64_t *)effml__alloc_or_err(ctx, (size_t)(qb * k) * sizeof(int64_t), "neighbours");
    self = nn ? (int64_t *)effml__alloc_or_err(ctx, (size_t)qb * sizeof(int64_t), "self") : NULL;
    votes = self ? (int64_t *)effml__calloc(ctx, (size_t)c.n_classes, sizeof(int64_t)) : NULL;
    ok = votes ? (char *)effml__malloc(ctx, (size_t)m) : NULL;
    if (!ok) st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for an ENN pass");
  }
  for (int64_t b0 = 0; st == EFFML_OK && b0 < m; b0 += qb) {
    const int64_t nq = m - b0 < qb ? m - b0 : qb;
    for (int64_t t = 0; t < nq; ++t) self[t] = b0 + t;
    st = effml__knn_f64(ctx, xs, m, xs + b0 * d, nq, d, k, self, o->block_rows, nn, NULL);
    for (int64_t t = 0; st == EFFML_OK && t < nq; ++t) {
      const int64_t i = b0 + t, cl = c.cls[i];
      const int64_t *ni = nn + t * k;
      int keep_i = 1;
      if (values[cl] > 0) {
        if (kind_sel == EFFML_SAMPLER_ENN_ALL) {
          for (int64_t j = 0; j < k; ++j) keep_i &= c.cls[ni[j]] == cl;
        } else {
          for (int64_t j = 0; j < k; ++j) votes[c.cls[ni[j]]]++;
          int64_t best = 0; /* mode; ties to the smallest label (scipy.stats.mode) */
          for (int64_t j = 1; j < c.n_classes; ++j)
            if (votes[j] > votes[best]) best = j;
          keep_i = best == cl;
          for (int64_t j = 0; j < k; ++j) votes[c.cls[ni[j]]] = 0;
        }
      }
      ok[i] = (char)keep_i;
    }
  }
  int64_t nk = 0;
  for (int64_t cl = 0; st == EFFML_OK && cl < c.n_classes; ++cl) {
    const int64_t *rows = c.rows + c.start[cl];
    for (int64_t t = 0; t < c.counts[cl]; ++t)
      if (ok[rows[t]]) keep[nk++] = rows[t];
  }
  if (st == EFFML_OK) *n_keep = nk;
  effml__free(ctx, ok);
  effml__free(ctx, votes);
  effml__free(ctx, self);
  effml__free(ctx, nn);
  effml__free(ctx, values);
  effml__classes_free(ctx, &c);
  return st;
}

/* One ENN decision pass of repeated_enn over the live rows cur[0..m) (ids into
 * in->x; labels ys[t] = y[cur[t]]): the neighbours come from the lists in S,
 * (re)computed for the targeted rows whose list no longer determines them.
 * Kept positions into keep, grouped by class in label order, ascending
 * within a class -- what effml__enn_pass gives on the gathered rows. */
static effml_status enn_pass_cached(effml_context *ctx, const effml__resample_in *in,
                                    effml__knn_cache *S, const char *dead, const int64_t *cur,
                                    const int64_t *ys, int64_t m, int64_t k, int64_t order_epoch,
                                    int64_t *q, int64_t *nbuf, int64_t *votes, int64_t *keep,
                                    int64_t *n_keep) {
  const effml_sampler_resample_options *o = in->o;
  const effml__classes *c0 = in->c;
  if (m < k + 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "n_neighbors=%lld needs at least %lld samples, %lld remain", (long long)k,
                      (long long)(k + 1), (long long)m);
  effml__classes c;
  EFFML__TRY(effml__classes_build(ctx, ys, m, &c));
  effml_sampler_resample_options oe = *o;
  oe.method = EFFML_SAMPLER_RESAMPLE_ENN;
  int64_t *values = (int64_t *)effml__alloc_or_err(ctx, (size_t)c.n_classes * sizeof(int64_t), "strategy");
  effml_status st = values ? effml__strategy_resolve(ctx, &oe, &c, values) : EFFML_E_NOMEM;
  int64_t nq = 0;
  for (int64_t t = 0; st == EFFML_OK && t < m; ++t)
    if (values[c.cls[t]] > 0 && !effml__knn_cache_get(S, dead, cur[t], k, order_epoch, nbuf))
      q[nq++] = cur[t];
  if (st == EFFML_OK)
    st = effml__knn_cache_fill(ctx, S, in->x, in->d, cur, m, q, nq, order_epoch, o->block_rows);
  int64_t nk = 0;
  for (int64_t cl = 0; st == EFFML_OK && cl < c.n_classes; ++cl) {
    const int64_t *rows = c.rows + c.start[cl];
    for (int64_t t = 0; st == EFFML_OK && t < c.counts[cl]; ++t) {
      const int64_t pos = rows[t], i = cur[pos], ci = c0->cls[i];
      int ok = 1;
      if (values[cl] > 0) {
        if (!effml__knn_cache_get(S, dead, i, k, order_epoch, nbuf)) {
          st = effml__err(ctx, EFFML_E_STATE, "ENN pass: row %lld has no neighbour list (a bug)",
                          (long long)i);
          break;
        }
        if (o->kind_sel == EFFML_SAMPLER_ENN_ALL) {
          for (int64_t j = 0; j < k; ++j) ok &= c0->cls[nbuf[j]] == ci;
        } else {
          for (int64_t j = 0; j < k; ++j) votes[c0->cls[nbuf[j]]]++;
          int64_t best = 0; /* mode; ties to the smallest label (scipy.stats.mode) */
          for (int64_t j = 1; j < c0->n_classes; ++j)
            if (votes[j] > votes[best]) best = j;
          ok = best == ci;
          for (int64_t j = 0; j < k; ++j) votes[c0->cls[nbuf[j]]] = 0;
        }
      }
      if (ok) keep[nk++] = pos;
    }
  }
  if (st == EFFML_OK) *n_keep = nk;
  effml__free(ctx, values);
  effml__classes_free(ctx, &c);
  return st;
}

/* Repeated passes (RENN when all_k is 0, AllKNN when 1) over the rows `cur`
 * (original indices, updated in place; *n_cur their count).  Each pass is the
 * ENN pass on the remaining rows; neighbour lists are kept from pass to pass
 * (knn_shrink.c), so a pass searches only the rows whose neighbours the
 * previous one removed, with the same result as a fresh search. */
static effml_status repeated_enn(effml_context *ctx, const effml__resample_in *in, int all_k,
                                 int64_t *cur, int64_t *n_cur) {
  const effml_sampler_resample_options *o = in->o;
  const effml__classes *c = in->c;
  if (!all_k && o->max_iter < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "max_iter=%lld must be >= 1",
                      (long long)o->max_iter);
  if (o->n_neighbors < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "n_neighbors=%lld must be >= 1",
                      (long long)o->n_neighbors);
  if (o->n_neighbors > in->n - 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "n_neighbors=%lld needs at least %lld samples, got %lld",
                      (long long)o->n_neighbors, (long long)(o->n_neighbors + 1), (long long)in->n);
  if (o->kind_sel != EFFML_SAMPLER_ENN_ALL && o->kind_sel != EFFML_SAMPLER_ENN_MODE)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "kind_sel=%d must be EFFML_SAMPLER_ENN_ALL or EFFML_SAMPLER_ENN_MODE", (int)o->kind_sel);
  int64_t mino = 0;
  for (int64_t k = 1; k < c->n_classes; ++k)
    if (c->counts[k] < c->counts[mino]) mino = k;
  const int64_t n_min = c->counts[mino];
  int64_t m = *n_cur;
  effml__knn_cache S;
  /* two spare entries per list: a row survives the loss of two neighbours without a new search */
  EFFML__TRY(effml__knn_cache_init(ctx, &S, in->n, o->n_neighbors + 2));
  int64_t *ys = (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t), "labels");
  int64_t *keep = ys ? (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t), "kept rows") : NULL;
  int64_t *q = keep ? (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t), "rows") : NULL;
  int64_t *nbuf = q ? (int64_t *)effml__alloc_or_err(ctx, (size_t)o->n_neighbors * sizeof(int64_t), "neighbours") : NULL;
  int64_t *cnt = nbuf ? (int64_t *)effml__calloc(ctx, (size_t)c->n_classes, sizeof(int64_t)) : NULL;
  int64_t *votes = cnt ? (int64_t *)effml__calloc(ctx, (size_t)c->n_classes, sizeof(int64_t)) : NULL;
  char *dead = votes ? (char *)effml__calloc(ctx, (size_t)in->n, 1) : NULL;
  effml_status st = dead ? EFFML_OK : effml__err(ctx, EFFML_E_NOMEM, "out of memory for ENN passes");
  int64_t order_epoch = 0;
  const int64_t passes = all_k ? o->n_neighbors : o->max_iter;
  for (int64_t it = 0; st == EFFML_OK && it < passes; ++it) {
    const int64_t k = all_k ? it + 1 : o->n_neighbors;
    for (int64_t i = 0; i < m; ++i) ys[i] = in->y[cur[i]];
    int64_t nk = 0;
    st = enn_pass_cached(ctx, in, &S, dead, cur, ys, m, k, order_epoch, q, nbuf, votes, keep, &nk);
    if (st != EFFML_OK) break;
    /* the removed rows die; the live order changes when keep is not ascending */
    int ascending = 1;
    for (int64_t t = 0; t < m; ++t) dead[cur[t]] = 1;
    for (int64_t t = 0; t < nk; ++t) {
      dead[cur[keep[t]]] = 0;
      if (t > 0 && keep[t] < keep[t - 1]) ascending = 0;
    }
    if (!ascending) order_epoch++;
    /* cur <- cur[keep] (keep is a list of distinct positions: use ys as scratch). */
    for (int64_t t = 0; t < nk; ++t) ys[t] = cur[keep[t]];
    memcpy(cur, ys, (size_t)nk * sizeof(int64_t));
    const int converged = nk == m;
    m = nk;
    for (int64_t cl = 0; cl < c->n_classes; ++cl) cnt[cl] = 0;
    for (int64_t t = 0; t < m; ++t) cnt[c->cls[cur[t]]]++;
    int below = 0, gone = 0;
    for (int64_t cl = 0; cl < c->n_classes; ++cl) {
      if (cnt[cl] == 0) gone = 1;
      else if (cl != mino && cnt[cl] < n_min) below = 1;
    }
    if (all_k && o->allow_minority) below = 0;
    if ((!all_k && converged) || below || gone) break;
  }
  effml__knn_cache_free(ctx, &S);
  effml__free(ctx, ys);
  effml__free(ctx, keep);
  effml__free(ctx, q);
  effml__free(ctx, nbuf);
  effml__free(ctx, cnt);
  effml__free(ctx, votes);
  effml__free(ctx, dead);
  if (st == EFFML_OK) *n_cur = m;
  return st;
}

static effml_status repeated_plan(effml_context *ctx, const effml__resample_in *in, int all_k,
                                  effml__plan *p) {
  int64_t *cur = (int64_t *)effml__alloc_or_err(ctx, (size_t)in->n * sizeof(int64_t), "rows");
  if (!cur) return EFFML_E_NOMEM;
  for (int64_t i = 0; i < in->n; ++i) cur[i] = i;
  int64_t m = in->n;
  effml_status st = repeated_enn(ctx, in, all_k, cur, &m);
  if (st == EFFML_OK) st = effml__plan_reserve(ctx, p, m);
  for (int64_t t = 0; st == EFFML_OK && t < m; ++t) effml__plan_push(p, cur[t], -1, 0.0);
  effml__free(ctx, cur);
  return st;
}

effml_status effml__renn_plan(effml_context *ctx, const effml__resample_in *in, effml__plan *p) {
  return repeated_plan(ctx, in, 0, p);
}

effml_status effml__allknn_plan(effml_context *ctx, const effml__resample_in *in,
                                effml__plan *p) {
  return repeated_plan(ctx, in, 1, p);
}

effml_status effml__ncl_plan(effml_context *ctx, const effml__resample_in *in, effml__plan *p) {
  const effml_sampler_resample_options *o = in->o;
  const effml__classes *c = in->c;
  const int64_t n = in->n, d = in->d, k = o->n_neighbors;
  const double thr = o->threshold_cleaning;
  if (!(thr > 0.0) || thr != thr || thr > 1e300)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "threshold_cleaning=%g must be finite and > 0",
                      thr);
  if (o->kind_sel != EFFML_SAMPLER_ENN_ALL && o->kind_sel != EFFML_SAMPLER_ENN_MODE)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "kind_sel=%d must be EFFML_SAMPLER_ENN_ALL or EFFML_SAMPLER_ENN_MODE", (int)o->kind_sel);
  int64_t mino = 0;
  for (int64_t j = 1; j < c->n_classes; ++j)
    if (c->counts[j] < c->counts[mino]) mino = j;
  const int64_t n_min = c->counts[mino];
  int64_t *keep = (int64_t *)effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "kept rows");
  char *drop = keep ? (char *)effml__calloc(ctx, (size_t)n, 1) : NULL;
  int64_t *nn = drop ? (int64_t *)effml__alloc_or_err(ctx, (size_t)(n_min * k) * sizeof(int64_t) + 1, "neighbours") : NULL;
  effml_status st = nn ? EFFML_OK : effml__err(ctx, EFFML_E_NOMEM, "out of memory for NCL");
  /* A1: every row the majority-vote ENN removes. */
  int64_t nk = 0;
  if (st == EFFML_OK) st = effml__enn_pass(ctx, o, in->x, in->y, n, d, k, EFFML_SAMPLER_ENN_MODE, keep, &nk);
  if (st == EFFML_OK) {
    memset(drop, 1, (size_t)n);
    for (int64_t t = 0; t < nk; ++t) drop[keep[t]] = 0;
  }
  /* A2: neighbours of misclassified minority rows, in classes large enough. */
  const int64_t *mrows = c->rows + c->start[mino];
  double *xmin = NULL;
  int64_t *votes = NULL;
  if (st == EFFML_OK) {
    xmin = effml__gather_rows(ctx, in->x, d, mrows, n_min);
    votes = xmin ? (int64_t *)effml__calloc(ctx, (size_t)c->n_classes, sizeof(int64_t)) : NULL;
    st = votes ? effml__knn_f64(ctx, in->x, n, xmin, n_min, d, k, mrows, o->block_rows, nn, NULL)
               : effml__err(ctx, EFFML_E_NOMEM, "out of memory for NCL");
  }
  for (int64_t t = 0; st == EFFML_OK && t < n_min; ++t) {
    const int64_t *ni = nn + t * k;
    int wrong = 0;
    if (o->kind_sel == EFFML_SAMPLER_ENN_ALL) {
      for (int64_t j = 0; j < k; ++j) wrong |= c->cls[ni[j]] != mino;
    } else {
      for (int64_t j = 0; j < k; ++j) votes[c->cls[ni[j]]]++;
      int64_t best = 0;
      for (int64_t j = 1; j < c->n_classes; ++j)
        if (votes[j] > votes[best]) best = j;
      wrong = best != mino;
      for (int64_t j = 0; j < k; ++j) votes[c->cls[ni[j]]] = 0;
    }
    if (!wrong) continue;
    for (int64_t j = 0; j < k; ++j) {
      int64_t cl = c->cls[ni[j]];
      if (in->values[cl] > 0 && (double)c->counts[cl] >= thr * (double)n_min) drop[ni[j]] = 1;
    }
  }
  if (st == EFFML_OK) st = effml__plan_reserve(ctx, p, n);
  for (int64_t i = 0; st == EFFML_OK && i < n; ++i)
    if (!drop[i]) effml__plan_push(p, i, -1, 0.0);
  effml__free(ctx, xmin);
  effml__free(ctx, votes);
  effml__free(ctx, keep);
  effml__free(ctx, drop);
  effml__free(ctx, nn);
  return st;
}
