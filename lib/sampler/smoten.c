/* SMOTEN: SMOTE for nominal features only (Chawla et al., JAIR 2002, §6.2
 * "SMOTE-N"), with imbalanced-learn's `SMOTEN` structure:
 *
 * - every column of x holds category codes (any finite numbers, compared
 *   exactly);
 * - the value difference metric (Stanfill & Waltz 1986) from the whole data:
 *   value v of column f is embedded as its class-probability vector
 *   P(class | x_f = v) (n_classes numbers); neighbours are Euclidean in the
 *   concatenated embedding, i.e. the VDM with exponents k = r = 2, so the one
 *   blocked kNN serves.  imblearn's default VDM (k = 1, r = 2) is a sum of
 *   squared L1 distances: for two classes the two give the same neighbours
 *   (L1 = 2|p - q| there); with more classes they can differ;
 * - per targeted class, its rows' k_neighbors nearest class rows plus the row
 *   itself (as imblearn, whose neighbour lists start with the row); each new
 *   row picks a base row uniformly (with replacement) and takes, per column,
 *   the most frequent value over those k + 1 rows (ties: the smallest value,
 *   as scipy.stats.mode);
 * - output: the originals, then one block per targeted class in label order.
 * (imblearn 0.10 searches neighbours on the rows of the VDM distance matrix
 * used as features, not on the VDM itself; we use the metric.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler_internal.h"

#define TAG_SMOTEN 0x534d4f54454eULL

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Position of v among the nv sorted distinct values (v is one of them). */
static int64_t value_slot(const double *sorted, int64_t nv, double v) {
  int64_t lo = 0, hi = nv - 1;
  while (lo < hi) {
    int64_t mid = (lo + hi) / 2;
    if (sorted[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

effml_status effml__smoten_resample(effml_context *ctx, const effml_sampler_resample_options *o,
                                    const effml_tensor *x, const effml_tensor *y,
                                    effml_tensor **x_out, effml_tensor **y_out) {
  const double *xd = NULL;
  double *x_own = NULL;
  EFFML__TRY(effml__sampler_x_f64(ctx, x, "x", 0, &xd, &x_own));
  const int64_t n = x->shape[0], d = x->shape[1], k = o->k_neighbors;
  int64_t *y64 = NULL, *values = NULL;
  effml__classes c;
  memset(&c, 0, sizeof c);
  effml_status st = effml__sampler_labels(ctx, y, n, &y64);
  if (st == EFFML_OK) st = effml__classes_build(ctx, y64, n, &c);
  if (st == EFFML_OK) {
    values = (int64_t *)effml__alloc_or_err(ctx, (size_t)c.n_classes * sizeof(int64_t), "strategy");
    st = values ? effml__strategy_resolve(ctx, o, &c, values) : EFFML_E_NOMEM;
  }
  if (st == EFFML_OK && k < 1)
    st = effml__err(ctx, EFFML_E_INVALID_ARG, "k_neighbors=%lld must be >= 1", (long long)k);
  for (int64_t cl = 0; st == EFFML_OK && cl < c.n_classes; ++cl)
    if (values[cl] > 0 && c.counts[cl] < k + 1)
      st = effml__err(ctx, EFFML_E_INVALID_ARG,
                      "k_neighbors=%lld needs at least %lld samples of class %lld, got %lld",
                      (long long)k, (long long)(k + 1), (long long)c.labels[cl],
                      (long long)c.counts[cl]);
  /* Embedding: per column, the distinct values (sorted) and P(class | value),
   * from every row; embedded are only the rows of the targeted classes (the
   * only rows searched), class after class: emb + eoff[cl] * d * nc. */
  const int64_t nc = c.n_classes;
  double *emb = NULL, *sorted = NULL, *prob = NULL;
  int64_t *eoff = NULL, ne = 0;
  if (st == EFFML_OK) {
    eoff = (int64_t *)effml__alloc_or_err(ctx, (size_t)nc * sizeof(int64_t), "classes");
    for (int64_t cl = 0; eoff && cl < nc; ++cl) {
      eoff[cl] = ne;
      if (values[cl] > 0) ne += c.counts[cl];
    }
    emb = eoff ? (double *)effml__alloc_or_err(ctx, (size_t)(ne * d * nc) * sizeof(double) + 1, "VDM embedding") : NULL;
    sorted = emb ? (double *)effml__alloc_or_err(ctx, (size_t)n * sizeof(double), "values") : NULL;
    prob = sorted ? (double *)effml__alloc_or_err(ctx, (size_t)(n * nc) * sizeof(double), "values") : NULL;
    if (!prob) st = EFFML_E_NOMEM;
  }
  for (int64_t f = 0; st == EFFML_OK && f < d; ++f) {
    for (int64_t i = 0; i < n; ++i) sorted[i] = xd[i * d + f];
    qsort(sorted, (size_t)n, sizeof(double), cmp_d);
    int64_t nv = 0;
    for (int64_t i = 0; i < n; ++i)
      if (i == 0 || sorted[i] != sorted[nv - 1]) sorted[nv++] = sorted[i];
    memset(prob, 0, (size_t)(nv * nc) * sizeof(double));
    for (int64_t i = 0; i < n; ++i) prob[value_slot(sorted, nv, xd[i * d + f]) * nc + c.cls[i]] += 1.0;
    for (int64_t v = 0; v < nv; ++v) {
      double s = 0;
      for (int64_t q = 0; q < nc; ++q) s += prob[v * nc + q];
      for (int64_t q = 0; q < nc; ++q) prob[v * nc + q] /= s;
    }
    for (int64_t cl = 0; cl < nc; ++cl) {
      if (values[cl] <= 0) continue;
      const int64_t *rows = c.rows + c.start[cl];
      for (int64_t t = 0; t < c.counts[cl]; ++t) {
        const int64_t v = value_slot(sorted, nv, xd[rows[t] * d + f]);
        memcpy(emb + ((eoff[cl] + t) * d + f) * nc, prob + v * nc, (size_t)nc * sizeof(double));
      }
    }
  }
  effml__free(ctx, sorted);
  effml__free(ctx, prob);
  sorted = prob = NULL;
  int64_t m = n;
  for (int64_t cl = 0; st == EFFML_OK && cl < nc; ++cl) m += values[cl] > 0 ? values[cl] : 0;
  effml_tensor *xo = NULL, *yo = NULL;
  int64_t shape[2] = {m, d};
  if (st == EFFML_OK) st = effml_tensor_create(ctx, x->dtype, 2, shape, &xo);
  if (st == EFFML_OK) st = effml_tensor_create(ctx, y->dtype, 1, &m, &yo);
  if (st == EFFML_OK) {
    memcpy(xo->data, x->data, (size_t)(n * d) * effml_tensor_dtype_size(x->dtype));
    memcpy(yo->data, y->data, (size_t)n * effml_tensor_dtype_size(y->dtype));
  }
  int64_t r = n;
  for (int64_t cl = 0; st == EFFML_OK && cl < nc; ++cl) {
    const int64_t n_new = values[cl];
    if (n_new <= 0) continue;
    const int64_t cnt = c.counts[cl], *rows = c.rows + c.start[cl];
    const double *ec = emb + eoff[cl] * d * nc;
    int64_t *nn = (int64_t *)effml__alloc_or_err(ctx, (size_t)(cnt * k) * sizeof(int64_t), "neighbours");
    int64_t *self = nn ? (int64_t *)effml__alloc_or_err(ctx, (size_t)cnt * sizeof(int64_t), "rows") : NULL;
    double *vals = self ? (double *)effml__alloc_or_err(ctx, (size_t)(k + 1) * sizeof(double), "votes") : NULL;
    st = vals ? EFFML_OK : EFFML_E_NOMEM;
    for (int64_t i = 0; st == EFFML_OK && i < cnt; ++i) self[i] = i;
    if (st == EFFML_OK) st = effml__knn_f64(ctx, ec, cnt, ec, cnt, d * nc, k, self, o->block_rows, nn, NULL);
    effml__rng rg;
    effml__class_rng(&rg, o->seed, TAG_SMOTEN, c.labels[cl]);
    for (int64_t s = 0; st == EFFML_OK && s < n_new; ++s, ++r) {
      int64_t b = (int64_t)effml__rng_below(&rg, (uint64_t)cnt);
      for (int64_t f = 0; f < d; ++f) {
        vals[0] = xd[rows[b] * d + f];
        for (int64_t j = 0; j < k; ++j) vals[j + 1] = xd[rows[nn[b * k + j]] * d + f];
        qsort(vals, (size_t)(k + 1), sizeof(double), cmp_d);
        double best = vals[0];
        int64_t bc = 0, run = 0;
        for (int64_t j = 0; j <= k; ++j) {
          run = (j > 0 && vals[j] == vals[j - 1]) ? run + 1 : 1;
          if (run > bc) {
            bc = run;
            best = vals[j];
          }
        }
        if (x->dtype == EFFML_F64)
          effml__f64(xo)[r * d + f] = best;
        else
          effml__f32(xo)[r * d + f] = (float)best;
      }
      if (y->dtype == EFFML_I64)
        ((int64_t *)(void *)yo->data)[r] = c.labels[cl];
      else
        ((int32_t *)(void *)yo->data)[r] = (int32_t)c.labels[cl];
    }
    effml__free(ctx, nn);
    effml__free(ctx, self);
    effml__free(ctx, vals);
  }
  effml__free(ctx, emb);
  effml__free(ctx, eoff);
  effml__classes_free(ctx, &c);
  effml__free(ctx, values);
  effml__free(ctx, y64);
  effml__free(ctx, x_own);
  if (st != EFFML_OK) {
    effml_tensor_free(xo);
    effml_tensor_free(yo);
    return st;
  }
  *x_out = xo;
  *y_out = yo;
  return EFFML_OK;
}
