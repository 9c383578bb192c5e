/* SVM-SMOTE and KMeans-SMOTE, with imbalanced-learn 0.10's `SVMSMOTE` and
 * `KMeansSMOTE` semantics (the differences are listed in docs/samplers.md).
 *
 * SVM-SMOTE (Nguyen, Cooper & Kamei, "Borderline over-sampling for
 * imbalanced data classification", IJKESDP 3(1), 2011): the caller gives the
 * support vectors (rows of x, any class).  Per targeted class: its support
 * vectors whose m_neighbors nearest rows (all classes) are all of other
 * classes are noise and dropped; the rest are "danger" (at least half of
 * those neighbours of other classes) or "safe".  A fraction f ~ Beta(10, 10)
 * of floor(f (n + 1)) rows interpolates danger vectors toward one of their
 * k_neighbors class neighbours (step U[0,1)); the other rows extrapolate safe
 * vectors away from a class neighbour (step -out_step * U[0,1)).  Danger block
 * first.  When one group is empty the other makes all n rows (imblearn then
 * makes fewer than asked); no vector left is an error.
 *
 * KMeans-SMOTE (Douzas, Bacao & Last, "Improving imbalanced learning through
 * a heuristic oversampling method based on k-means and SMOTE", Information
 * Sciences 465, 2018): k-means over all rows (n_clusters); per targeted
 * class, clusters with a class fraction >= cluster_balance_threshold ("auto":
 * n / (total to generate) / 2, as imblearn) and more than k_neighbors class
 * rows are kept; weight_j ∝ (mean pairwise class distance)^e / (class rows),
 * e = log_1.6(n_features)^1.8 * 0.16 when "auto" (the paper and imblearn's
 * documentation; imblearn's code uses the cluster's row count); cluster j
 * makes ceil(n * weight_j) SMOTE rows from its class rows (so the class can get
 * a few more rows than asked, as imblearn).  Clusters in index order. */
#include <math.h>
#include <string.h>

#include "sampler_internal.h"

#define TAG_SVMSMOTE 0x53564dULL
#define TAG_KMSMOTE 0x4b4d53ULL

/* Gamma(shape n) for an integer n: -sum log U. */
static double gamma_int(effml__rng *r, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s -= log(1.0 - effml__rng_uniform(r));
  return s;
}

/* n SMOTE-style rows from bases[nb] with neighbour table nn[nb, k] (row ids). */
static void push_pairs(effml__plan *p, effml__rng *r, const int64_t *bases, int64_t nb,
                       const int64_t *nn, int64_t k, int64_t n, double scale) {
  for (int64_t s = 0; s < n; ++s) {
    uint64_t t = effml__rng_below(r, (uint64_t)(nb * k));
    int64_t b = (int64_t)(t / (uint64_t)k), j = (int64_t)(t % (uint64_t)k);
    effml__plan_push(p, bases[b], nn[b * k + j], scale * effml__rng_uniform(r));
  }
}

/* k nearest class rows (original ids) of each of `q` rows (original ids, all of
 * class cl), self excluded by index.  pos_in_class maps a row to its class position. */
static effml_status class_neighbours(effml_context *ctx, const effml__resample_in *in,
                                     const double *xc, int64_t nc, const int64_t *rows,
                                     const int64_t *pos, const int64_t *q, int64_t nq, int64_t k,
                                     int64_t *nn) {
  double *xq = effml__gather_rows(ctx, in->x, in->d, q, nq);
  int64_t *self = xq ? (int64_t *)effml__alloc_or_err(ctx, (size_t)nq * sizeof(int64_t) + 1, "rows") : NULL;
  effml_status st = self ? EFFML_OK : EFFML_E_NOMEM;
  for (int64_t i = 0; st == EFFML_OK && i < nq; ++i) self[i] = pos[q[i]];
  if (st == EFFML_OK) st = effml__knn_f64(ctx, xc, nc, xq, nq, in->d, k, self, in->o->block_rows, nn, NULL);
  for (int64_t t = 0; st == EFFML_OK && t < nq * k; ++t) nn[t] = rows[nn[t]];
  effml__free(ctx, xq);
  effml__free(ctx, self);
  return st;
}

effml_status effml__svmsmote_plan(effml_context *ctx, const effml__resample_in *in,
                                  effml__plan *p) {
  const effml__classes *c = in->c;
  const effml_sampler_resample_options *o = in->o;
  const int64_t n = in->n, d = in->d, k = o->k_neighbors, m = o->m_neighbors;
  if (o->n_support < 1 || o->support_indices == NULL)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "SVM-SMOTE needs the support vectors: n_support=%lld, support_indices %s",
                      (long long)o->n_support, o->support_indices ? "set" : "NULL");
  if (!(o->out_step >= 0.0) || !isfinite(o->out_step))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "out_step=%g must be finite and >= 0", o->out_step);
  if (k < 1 || m < 1 || m > n - 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "k_neighbors=%lld and m_neighbors=%lld must be >= 1 (m < %lld rows)",
                      (long long)k, (long long)m, (long long)n);
  char *is_sv = (char *)effml__calloc(ctx, (size_t)n, 1);
  int64_t *pos = is_sv ? (int64_t *)effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "positions") : NULL;
  if (!pos) {
    effml__free(ctx, is_sv);
    return EFFML_E_NOMEM;
  }
  effml_status st = EFFML_OK;
  for (int64_t t = 0; t < o->n_support; ++t) {
    int64_t i = o->support_indices[t];
    if (i < 0 || i >= n) {
      st = effml__err(ctx, EFFML_E_INVALID_ARG, "support_indices[%lld]=%lld is not a row of x (%lld rows)",
                      (long long)t, (long long)i, (long long)n);
      break;
    }
    is_sv[i] = 1;
  }
  for (int64_t cl = 0; cl < c->n_classes; ++cl)
    for (int64_t t = 0; t < c->counts[cl]; ++t) pos[c->rows[c->start[cl] + t]] = t;
  for (int64_t cl = 0; st == EFFML_OK && cl < c->n_classes; ++cl) {
    const int64_t n_new = in->values[cl];
    if (n_new <= 0) continue;
    const int64_t nc = c->counts[cl], *rows = c->rows + c->start[cl];
    if (nc < k + 1) {
      st = effml__err(ctx, EFFML_E_INVALID_ARG, "k_neighbors=%lld needs at least %lld samples of class %lld, got %lld",
                      (long long)k, (long long)(k + 1), (long long)c->labels[cl], (long long)nc);
      break;
    }
    int64_t nsv = 0;
    for (int64_t t = 0; t < nc; ++t) nsv += is_sv[rows[t]];
    int64_t *sv = (int64_t *)effml__alloc_or_err(ctx, (size_t)(nsv + 1) * sizeof(int64_t), "support vectors");
    int64_t *mnn = sv ? (int64_t *)effml__alloc_or_err(ctx, (size_t)(nsv * m + 1) * sizeof(int64_t), "neighbours") : NULL;
    int64_t *danger = mnn ? (int64_t *)effml__alloc_or_err(ctx, (size_t)(nsv + 1) * sizeof(int64_t), "rows") : NULL;
    int64_t *safe = danger ? (int64_t *)effml__alloc_or_err(ctx, (size_t)(nsv + 1) * sizeof(int64_t), "rows") : NULL;
    int64_t *knn = safe ? (int64_t *)effml__alloc_or_err(ctx, (size_t)(nsv * k + 1) * sizeof(int64_t), "neighbours") : NULL;
    double *xc = knn ? effml__gather_rows(ctx, in->x, d, rows, nc) : NULL;
    if (!xc) st = EFFML_E_NOMEM;
    int64_t nd = 0, ns = 0;
    if (st == EFFML_OK) {
      nsv = 0;
      for (int64_t t = 0; t < nc; ++t)
        if (is_sv[rows[t]]) sv[nsv++] = rows[t];
      double *xs = effml__gather_rows(ctx, in->x, d, sv, nsv);
      st = xs ? effml__knn_f64(ctx, in->x, n, xs, nsv, d, m, sv, o->block_rows, mnn, NULL) : EFFML_E_NOMEM;
      effml__free(ctx, xs);
    }
    for (int64_t i = 0; st == EFFML_OK && i < nsv; ++i) {
      int64_t other = 0;
      for (int64_t j = 0; j < m; ++j) other += c->cls[mnn[i * m + j]] != cl;
      if (other == m) continue; /* noise */
      if (2 * other >= m) danger[nd++] = sv[i];
      else safe[ns++] = sv[i];
    }
    if (st == EFFML_OK && nd + ns == 0)
      st = effml__err(ctx, EFFML_E_NUMERIC,
                      "SVM-SMOTE: class %lld has no support vector that is not noise "
                      "(%lld support vectors given for it)",
                      (long long)c->labels[cl], (long long)nsv);
    effml__rng r;
    effml__class_rng(&r, o->seed, TAG_SVMSMOTE, c->labels[cl]);
    int64_t n_d = 0;
    if (st == EFFML_OK) {
      double g1 = gamma_int(&r, 10), g2 = gamma_int(&r, 10);
      n_d = (int64_t)(g1 / (g1 + g2) * (double)(n_new + 1));
      if (n_d > n_new) n_d = n_new;
      if (ns == 0) n_d = n_new;
      if (nd == 0) n_d = 0;
      st = effml__plan_reserve(ctx, p, n_new);
    }
    if (st == EFFML_OK && nd > 0 && n_d > 0) {
      st = class_neighbours(ctx, in, xc, nc, rows, pos, danger, nd, k, knn);
      if (st == EFFML_OK) push_pairs(p, &r, danger, nd, knn, k, n_d, 1.0);
    }
    if (st == EFFML_OK && ns > 0 && n_new - n_d > 0) {
      st = class_neighbours(ctx, in, xc, nc, rows, pos, safe, ns, k, knn);
      if (st == EFFML_OK) push_pairs(p, &r, safe, ns, knn, k, n_new - n_d, -o->out_step);
    }
    effml__free(ctx, sv);
    effml__free(ctx, mnn);
    effml__free(ctx, danger);
    effml__free(ctx, safe);
    effml__free(ctx, knn);
    effml__free(ctx, xc);
  }
  effml__free(ctx, is_sv);
  effml__free(ctx, pos);
  return st;
}

/* Sum of the Euclidean distances over the ordered pairs a != b of rows
 * x[rows[0..m)], added in (a, b) order; each squared distance summed over the
 * features in order (effml__sqdist_tile: same bytes as the scalar loop). */
static effml_status mean_pair_sum(effml_context *ctx, const double *x, int64_t d,
                                  const int64_t *rows, int64_t m, double *sum) {
  double *xm = effml__gather_rows(ctx, x, d, rows, m);
  double *cg = xm ? effml__sqdist_groups(ctx, xm, m, d) : NULL;
  const int64_t ng = (m + 7) / 8;
  double *out = cg ? (double *)effml__alloc_or_err(ctx, (size_t)(4 * 8 * ng) * sizeof(double), "distances") : NULL;
  if (!out) {
    effml__free(ctx, xm);
    effml__free(ctx, cg);
    return EFFML_E_NOMEM;
  }
  const int isa = effml__sqdist_isa(ctx, -1);
  double s = 0;
  for (int64_t a0 = 0; a0 < m; a0 += 4) {
    const int64_t mr = m - a0 < 4 ? m - a0 : 4;
    const double *xr[4];
    for (int64_t r = 0; r < 4; ++r) xr[r] = xm + (a0 + (r < mr ? r : 0)) * d;
    effml__sqdist_tile(isa, xr, cg, d, ng, out);
    for (int64_t r = 0; r < mr; ++r) {
      const double *o = out + r * 8 * ng;
      for (int64_t b = 0; b < m; ++b)
        if (b != a0 + r) s += sqrt(o[b]);
    }
  }
  *sum = s;
  effml__free(ctx, xm);
  effml__free(ctx, cg);
  effml__free(ctx, out);
  return EFFML_OK;
}

effml_status effml__kmeans_smote_plan(effml_context *ctx, const effml__resample_in *in,
                                      effml__plan *p) {
  const effml__classes *c = in->c;
  const effml_sampler_resample_options *o = in->o;
  const int64_t n = in->n, d = in->d, k = o->k_neighbors, nk = o->n_clusters;
  if (k < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "k_neighbors=%lld must be >= 1", (long long)k);
  if (nk < 1 || nk > n)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "n_clusters=%lld must be in [1, %lld]",
                      (long long)nk, (long long)n);
  if (!isnan(o->density_exponent) && !isfinite(o->density_exponent))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "density_exponent=%g must be finite (NaN: auto)",
                      o->density_exponent);
  if (!isnan(o->cluster_balance_threshold) && !isfinite(o->cluster_balance_threshold))
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "cluster_balance_threshold=%g must be finite (NaN: auto)",
                      o->cluster_balance_threshold);
  double *cen = (double *)effml__alloc_or_err(ctx, (size_t)(nk * d) * sizeof(double), "centres");
  int64_t *lab = cen ? (int64_t *)effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "clusters") : NULL;
  int64_t *ccnt = lab ? (int64_t *)effml__calloc(ctx, (size_t)(nk * (c->n_classes + 1)), sizeof(int64_t)) : NULL;
  double *w = ccnt ? (double *)effml__alloc_or_err(ctx, (size_t)nk * sizeof(double), "weights") : NULL;
  int64_t *crow = w ? (int64_t *)effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "rows") : NULL;
  effml_status st = crow ? EFFML_OK : EFFML_E_NOMEM;
  if (st == EFFML_OK)
    st = effml__kmeans(ctx, in->x, n, d, nk, o->kmeans_n_init, o->kmeans_max_iter, o->kmeans_tol,
                       o->seed, TAG_KMSMOTE, o->block_rows, cen, lab);
  /* ccnt[j * (nc + 1)]: rows of cluster j; + 1 + cl: rows of class cl in it */
  const int64_t stride = c->n_classes + 1;
  for (int64_t i = 0; st == EFFML_OK && i < n; ++i) {
    ccnt[lab[i] * stride]++;
    ccnt[lab[i] * stride + 1 + c->cls[i]]++;
  }
  int64_t total = 0;
  for (int64_t cl = 0; cl < c->n_classes; ++cl) total += in->values[cl] > 0 ? in->values[cl] : 0;
  const double e_auto = 0.16 * pow(log((double)d) / log(1.6), 1.8);
  for (int64_t cl = 0; st == EFFML_OK && cl < c->n_classes; ++cl) {
    const int64_t n_new = in->values[cl];
    if (n_new <= 0) continue;
    double thr = isnan(o->cluster_balance_threshold) ? (double)n_new / (double)total / 2.0
                                                    : o->cluster_balance_threshold;
    if (nk == 1) thr = -INFINITY;
    const double ex = isnan(o->density_exponent) ? e_auto : o->density_exponent;
    double wsum = 0;
    int64_t nvalid = 0;
    for (int64_t j = 0; st == EFFML_OK && j < nk; ++j) {
      w[j] = -1;
      const int64_t nj = ccnt[j * stride], cj = ccnt[j * stride + 1 + cl];
      if (nj == 0 || (double)cj / (double)nj < thr || cj < k + 1) continue;
      int64_t m = 0;
      for (int64_t i = 0; i < n; ++i)
        if (lab[i] == j && c->cls[i] == cl) crow[m++] = i;
      double sum = 0;
      st = mean_pair_sum(ctx, in->x, d, crow, m, &sum);
      if (st != EFFML_OK) break;
      double mean = sum / (double)(m * m - m);
      w[j] = pow(mean, ex) / (double)m;
      wsum += w[j];
      nvalid++;
    }
    if (st == EFFML_OK && nvalid == 0)
      st = effml__err(ctx, EFFML_E_NUMERIC,
                      "KMeans-SMOTE: no cluster has enough samples of class %lld (need a class "
                      "fraction >= %g and more than k_neighbors=%lld of them); lower "
                      "cluster_balance_threshold or change n_clusters",
                      (long long)c->labels[cl], thr, (long long)k);
    effml__rng r;
    effml__class_rng(&r, o->seed, TAG_KMSMOTE, c->labels[cl]);
    for (int64_t j = 0; st == EFFML_OK && j < nk; ++j) {
      if (w[j] < 0) continue;
      const int64_t nj = (int64_t)ceil((double)n_new * (w[j] / wsum));
      if (nj <= 0) continue;
      int64_t m = 0;
      for (int64_t i = 0; i < n; ++i)
        if (lab[i] == j && c->cls[i] == cl) crow[m++] = i;
      double *xm = effml__gather_rows(ctx, in->x, d, crow, m);
      int64_t *nn = xm ? (int64_t *)effml__alloc_or_err(ctx, (size_t)(m * k) * sizeof(int64_t), "neighbours") : NULL;
      int64_t *self = nn ? (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t), "rows") : NULL;
      st = self ? EFFML_OK : EFFML_E_NOMEM;
      for (int64_t i = 0; st == EFFML_OK && i < m; ++i) self[i] = i;
      if (st == EFFML_OK) st = effml__knn_f64(ctx, xm, m, xm, m, d, k, self, o->block_rows, nn, NULL);
      for (int64_t t = 0; st == EFFML_OK && t < m * k; ++t) nn[t] = crow[nn[t]];
      if (st == EFFML_OK) st = effml__plan_reserve(ctx, p, nj);
      if (st == EFFML_OK) push_pairs(p, &r, crow, m, nn, k, nj, 1.0);
      effml__free(ctx, xm);
      effml__free(ctx, nn);
      effml__free(ctx, self);
    }
  }
  effml__free(ctx, cen);
  effml__free(ctx, lab);
  effml__free(ctx, ccnt);
  effml__free(ctx, w);
  effml__free(ctx, crow);
  return st;
}
