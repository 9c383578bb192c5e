/* SMOTE (Chawla et al., JAIR 2002), Borderline-SMOTE 1/2 (Han et al. 2005)
 * and ADASYN (He et al. 2008) as plans: each synthetic row is
 * x[base] + step * (x[neighbor] - x[base]) with one scalar step per row, so
 * it lies on the segment between its base and one of that base's neighbours
 * (imbalanced-learn `BaseSMOTE._generate_samples`, Chawla et al. 2002, arXiv 1106.1813, §4.2).
 *
 * Classes are handled in ascending label order; each class draws from its own
 * generator stream (seed, method, label), so output does not depend on the
 * thread count or on which other classes are targeted.
 *
 * Where we differ from imbalanced-learn: the point itself is excluded from
 * its neighbours by index, not by dropping the first column of a (k+1)-NN
 * query, so exact duplicates are proper neighbours at distance 0 and no real
 * neighbour is lost; k_neighbors >= class size is reported naming the class. */
#include <math.h>
#include <string.h>

#include "sampler_internal.h"

#define TAG_SMOTE 0x534d4f5445ULL
#define TAG_BORDER 0x424f524445ULL
#define TAG_ADASYN 0x414441ULL

static effml_status check_k(effml_context *ctx, const char *name, int64_t k) {
  if (k < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s=%lld must be >= 1", name, (long long)k);
  return EFFML_OK;
}

static effml_status check_class_size(effml_context *ctx, const char *name, int64_t k,
                                     int64_t label, int64_t n_c) {
  if (n_c < k + 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s=%lld needs at least %lld samples of class %lld, got %lld", name,
                      (long long)k, (long long)(k + 1), (long long)label, (long long)n_c);
  return EFFML_OK;
}

/* k-NN of the rows `q_rows` among the rows `r_rows` (both global row indices
 * into x).  A query is never its own neighbour.  nn receives [n_q, k] indices
 * *into r_rows* (local) when r_rows != NULL, else global rows of x. */
static effml_status knn_rows(effml_context *ctx, const effml__resample_in *in,
                             const int64_t *r_rows, int64_t n_r, const int64_t *q_rows,
                             int64_t n_q, int64_t k, int64_t *nn) {
  const int64_t d = in->d;
  double *xr = NULL, *xq = NULL;
  int64_t *self = (int64_t *)effml__alloc_or_err(ctx, (size_t)n_q * sizeof(int64_t) + 1,
                                                 "kNN self index");
  if (!self) return EFFML_E_NOMEM;
  effml_status st = EFFML_OK;
  xq = effml__gather_rows(ctx, in->x, d, q_rows, n_q);
  if (!xq) st = EFFML_E_NOMEM;
  const double *ref = in->x;
  if (st == EFFML_OK && r_rows) {
    xr = effml__gather_rows(ctx, in->x, d, r_rows, n_r);
    if (!xr) st = EFFML_E_NOMEM;
    ref = xr;
    /* local self index: position of q_rows[i] in r_rows (both ascending), or -1 */
    int64_t j = 0;
    for (int64_t i = 0; i < n_q; ++i) {
      while (j < n_r && r_rows[j] < q_rows[i]) ++j;
      self[i] = (j < n_r && r_rows[j] == q_rows[i]) ? j : -1;
    }
  } else {
    memcpy(self, q_rows, (size_t)n_q * sizeof(int64_t));
  }
  if (st == EFFML_OK)
    st = effml__knn_f64(ctx, ref, n_r, xq, n_q, d, k, self, in->o->block_rows, nn, NULL);
  effml__free(ctx, self);
  effml__free(ctx, xq);
  effml__free(ctx, xr);
  return st;
}

effml_status effml__smote_plan(effml_context *ctx, const effml__resample_in *in, effml__plan *p) {
  const effml__classes *c = in->c;
  const int64_t k = in->o->k_neighbors;
  EFFML__TRY(check_k(ctx, "k_neighbors", k));
  for (int64_t cl = 0; cl < c->n_classes; ++cl)
    if (in->values[cl] > 0)
      EFFML__TRY(check_class_size(ctx, "k_neighbors", k, c->labels[cl], c->counts[cl]));
  for (int64_t cl = 0; cl < c->n_classes; ++cl) {
    int64_t n_new = in->values[cl];
    if (n_new <= 0) continue;
    const int64_t *rows = c->rows + c->start[cl];
    int64_t nc = c->counts[cl];
    int64_t *nn = (int64_t *)effml__alloc_or_err(ctx, (size_t)(nc * k) * sizeof(int64_t),
                                                 "SMOTE neighbours");
    if (!nn) return EFFML_E_NOMEM;
    effml_status st = effml__knn_within_f64(ctx, in->x, rows, nc, in->d, k, nn, NULL);
    if (st == EFFML_OK) st = effml__plan_reserve(ctx, p, n_new);
    if (st != EFFML_OK) {
      effml__free(ctx, nn);
      return st;
    }
    effml__rng r;
    effml__class_rng(&r, in->o->seed, TAG_SMOTE, c->labels[cl]);
    for (int64_t s = 0; s < n_new; ++s) {
      int64_t pair = (int64_t)effml__rng_below(&r, (uint64_t)(nc * k));
      double u = effml__rng_uniform(&r);
      effml__plan_push(p, rows[pair / k], rows[nn[pair]], u);
    }
    effml__free(ctx, nn);
  }
  return EFFML_OK;
}

/* k in-class neighbours of the danger rows (Borderline-SMOTE-1): nnk [nd, k]
 * receives positions into rows[0..nc) for the rows at positions dpos[0..nd)
 * (ascending), never the row itself.  path 1: the certified within-class
 * search over the whole class (f32 candidates over the upper triangle, exact
 * f64 re-rank), then the danger rows' lists picked out; path 0: the f64 tile
 * search with the danger rows as queries; -1: path 1 when the danger rows are
 * at least a quarter of the class (the within search does the whole class's
 * work, roughly 4x cheaper per pair), else path 0.  Both return the same
 * lists: exact distances, ties to the smaller position. */
effml_status effml__danger_knn(effml_context *ctx, const double *x, int64_t d,
                               const int64_t *rows, int64_t nc, const int64_t *dpos, int64_t nd,
                               int64_t k, int64_t block_rows, int64_t *nnk, int path) {
  if (path < 0) path = 4 * nd >= nc;
  if (path == 1) {
    int64_t *all = (int64_t *)effml__alloc_or_err(ctx, (size_t)(nc * k) * sizeof(int64_t),
                                                  "Borderline class neighbours");
    if (!all) return EFFML_E_NOMEM;
    effml_status st = effml__knn_within_f64(ctx, x, rows, nc, d, k, all, NULL);
    if (st == EFFML_OK)
      for (int64_t t = 0; t < nd; ++t)
        memcpy(nnk + t * k, all + dpos[t] * k, (size_t)k * sizeof(int64_t));
    effml__free(ctx, all);
    return st;
  }
  int64_t *qrows = (int64_t *)effml__alloc_or_err(ctx, (size_t)nd * sizeof(int64_t) + 1,
                                                  "danger rows");
  if (!qrows) return EFFML_E_NOMEM;
  for (int64_t t = 0; t < nd; ++t) qrows[t] = rows[dpos[t]];
  double *xr = effml__gather_rows(ctx, x, d, rows, nc);
  double *xq = xr ? effml__gather_rows(ctx, x, d, qrows, nd) : NULL;
  effml_status st = xq ? EFFML_OK : EFFML_E_NOMEM;
  if (st == EFFML_OK) st = effml__knn_f64(ctx, xr, nc, xq, nd, d, k, dpos, block_rows, nnk, NULL);
  effml__free(ctx, qrows);
  effml__free(ctx, xr);
  effml__free(ctx, xq);
  return st;
}

effml_status effml__borderline_plan(effml_context *ctx, const effml__resample_in *in,
                                    effml__plan *p) {
  const effml__classes *c = in->c;
  const int64_t k = in->o->k_neighbors, m = in->o->m_neighbors, n = in->n;
  const int kind2 = in->o->method == EFFML_SAMPLER_RESAMPLE_BORDERLINE2;
  EFFML__TRY(check_k(ctx, "k_neighbors", k));
  EFFML__TRY(check_k(ctx, "m_neighbors", m));
  if (n < m + 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "m_neighbors=%lld needs at least %lld samples in x, got %lld", (long long)m,
                      (long long)(m + 1), (long long)n);
  for (int64_t cl = 0; cl < c->n_classes; ++cl)
    if (in->values[cl] > 0) {
      if (kind2 && n < k + 1)
        return effml__err(ctx, EFFML_E_INVALID_ARG,
                          "k_neighbors=%lld needs at least %lld samples in x, got %lld",
                          (long long)k, (long long)(k + 1), (long long)n);
      if (!kind2) EFFML__TRY(check_class_size(ctx, "k_neighbors", k, c->labels[cl], c->counts[cl]));
    }
  for (int64_t cl = 0; cl < c->n_classes; ++cl) {
    int64_t n_new = in->values[cl];
    if (n_new <= 0) continue;
    const int64_t *rows = c->rows + c->start[cl];
    int64_t nc = c->counts[cl];
    int64_t *nnm = (int64_t *)effml__alloc_or_err(ctx, (size_t)(nc * m) * sizeof(int64_t),
                                                  "Borderline m-neighbours");
    int64_t *danger = nnm ? (int64_t *)effml__alloc_or_err(ctx, (size_t)nc * sizeof(int64_t),
                                                           "danger rows")
                          : NULL;
    int64_t *nnk = NULL, *dpos = NULL;
    effml_status st = danger ? EFFML_OK : EFFML_E_NOMEM;
    if (st == EFFML_OK) {
      dpos = (int64_t *)effml__alloc_or_err(ctx, (size_t)nc * sizeof(int64_t), "danger positions");
      if (!dpos) st = EFFML_E_NOMEM;
    }
    if (st == EFFML_OK) st = knn_rows(ctx, in, NULL, n, rows, nc, m, nnm);
    int64_t nd = 0;
    for (int64_t i = 0; st == EFFML_OK && i < nc; ++i) {
      int64_t other = 0;
      for (int64_t t = 0; t < m; ++t) other += in->y[nnm[i * m + t]] != c->labels[cl];
      if (2 * other >= m && other < m) { /* danger: m/2 <= other < m */
        dpos[nd] = i;
        danger[nd++] = rows[i];
      }
    }
    if (st == EFFML_OK && nd > 0) {
      nnk = (int64_t *)effml__alloc_or_err(ctx, (size_t)(nd * k) * sizeof(int64_t),
                                           "Borderline k-neighbours");
      if (!nnk) st = EFFML_E_NOMEM;
      if (st == EFFML_OK)
        st = kind2 ? knn_rows(ctx, in, NULL, n, danger, nd, k, nnk)
                   : effml__danger_knn(ctx, in->x, in->d, rows, nc, dpos, nd, k,
                                       in->o->block_rows, nnk, -1);
      if (st == EFFML_OK) st = effml__plan_reserve(ctx, p, n_new);
      if (st == EFFML_OK) {
        effml__rng r;
        effml__class_rng(&r, in->o->seed, TAG_BORDER + (uint64_t)kind2, c->labels[cl]);
        for (int64_t s = 0; s < n_new; ++s) {
          int64_t pair = (int64_t)effml__rng_below(&r, (uint64_t)(nd * k));
          double u = effml__rng_uniform(&r);
          int64_t nb = kind2 ? nnk[pair] : rows[nnk[pair]];
          if (kind2 && in->y[nb] != c->labels[cl]) u *= 0.5 * effml__rng_uniform(&r);
          effml__plan_push(p, danger[pair / k], nb, u);
        }
      }
    }
    effml__free(ctx, nnm);
    effml__free(ctx, danger);
    effml__free(ctx, dpos);
    effml__free(ctx, nnk);
    if (st != EFFML_OK) return st;
  }
  return EFFML_OK;
}

/* Sum of v[0..n) in the order numpy's np.sum adds a contiguous float64 array
 * (pairwise: 8 running sums over blocks of up to 128 values, halves split at
 * a multiple of 8 above that; the caller adds 8192-value chunks in order).  ADASYN's per-row counts g_i = rint(r_i / sum(r)
 * * n_new) round half to even, so a last-bit difference in the sum changes g_i
 * where r_i / sum(r) * n_new is a tie (x.5): summing in imblearn's order makes
 * the counts the same as imbalanced-learn's. */
static double numpy_pairwise_sum(const double *v, int64_t n) {
  if (n < 8) {
    double s = 0.;
    for (int64_t i = 0; i < n; ++i) s += v[i];
    return s;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = v[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += v[i + j];
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) s += v[i];
    return s;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpy_pairwise_sum(v, n2) + numpy_pairwise_sum(v + n2, n - n2);
}

effml_status effml__adasyn_plan(effml_context *ctx, const effml__resample_in *in, effml__plan *p) {
  const effml__classes *c = in->c;
  const int64_t k = in->o->k_neighbors, n = in->n;
  EFFML__TRY(check_k(ctx, "k_neighbors", k));
  if (n < k + 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "k_neighbors=%lld needs at least %lld samples in x, got %lld", (long long)k,
                      (long long)(k + 1), (long long)n);
  for (int64_t cl = 0; cl < c->n_classes; ++cl)
    if (in->values[cl] > 0)
      EFFML__TRY(check_class_size(ctx, "k_neighbors", k, c->labels[cl], c->counts[cl]));
  for (int64_t cl = 0; cl < c->n_classes; ++cl) {
    int64_t n_new = in->values[cl];
    if (n_new <= 0) continue;
    const int64_t *rows = c->rows + c->start[cl];
    int64_t nc = c->counts[cl];
    int64_t *nn = (int64_t *)effml__alloc_or_err(ctx, (size_t)(nc * k) * sizeof(int64_t),
                                                 "ADASYN neighbours");
    int64_t *g = nn ? (int64_t *)effml__alloc_or_err(ctx, (size_t)nc * sizeof(int64_t), "ADASYN g")
                    : NULL;
    effml_status st = g ? EFFML_OK : EFFML_E_NOMEM;
    if (st == EFFML_OK) st = knn_rows(ctx, in, NULL, n, rows, nc, k, nn);
    double rsum = 0;
    int64_t gsum = 0;
    if (st == EFFML_OK) {
      /* r_i = other_i / k into g's memory (a double per row), summed as np.sum does */
      double *r = (double *)(void *)g;
      for (int64_t i = 0; i < nc; ++i) {
        int64_t other = 0;
        for (int64_t t = 0; t < k; ++t) other += in->y[nn[i * k + t]] != c->labels[cl];
        r[i] = (double)other / (double)k;
      }
      /* np.sum reduces in chunks of its 8192-element buffer, pairwise within each */
      for (int64_t b = 0; b < nc; b += 8192) rsum += numpy_pairwise_sum(r + b, nc - b < 8192 ? nc - b : 8192);
      if (rsum == 0)
        st = effml__err(ctx, EFFML_E_NUMERIC,
                        "ADASYN: no neighbour of class %lld belongs to another class; "
                        "the class is already separated (ratio sum is 0)",
                        (long long)c->labels[cl]);
    }
    if (st == EFFML_OK) {
      for (int64_t i = 0; i < nc; ++i) {
        int64_t other = 0;
        for (int64_t t = 0; t < k; ++t) other += in->y[nn[i * k + t]] != c->labels[cl];
        /* imblearn: ratio_nn /= sum(ratio_nn); rint(ratio_nn * n_samples) */
        g[i] = (int64_t)nearbyint((double)other / (double)k / rsum * (double)n_new);
        gsum += g[i];
      }
      if (gsum == 0)
        st = effml__err(ctx, EFFML_E_NUMERIC,
                        "ADASYN: no samples will be generated for class %lld with n_new=%lld; "
                        "increase the sampling target",
                        (long long)c->labels[cl], (long long)n_new);
    }
    /* Neighbours for generation are taken within the class (imblearn #298). */
    if (st == EFFML_OK) st = effml__knn_within_f64(ctx, in->x, rows, nc, in->d, k, nn, NULL);
    if (st == EFFML_OK) st = effml__plan_reserve(ctx, p, gsum);
    if (st == EFFML_OK) {
      effml__rng r;
      effml__class_rng(&r, in->o->seed, TAG_ADASYN, c->labels[cl]);
      for (int64_t i = 0; i < nc; ++i)
        for (int64_t t = 0; t < g[i]; ++t) {
          int64_t nb = nn[i * k + (int64_t)effml__rng_below(&r, (uint64_t)k)];
          double u = effml__rng_uniform(&r);
          effml__plan_push(p, rows[i], rows[nb], u);
        }
    }
    effml__free(ctx, nn);
    effml__free(ctx, g);
    if (st != EFFML_OK) return st;
  }
  return EFFML_OK;
}
