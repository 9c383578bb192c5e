/* k-means (Lloyd's algorithm with k-means++ seeding: Arthur & Vassilvitskii,
 * "k-means++: the advantages of careful seeding", SODA 2007) for
 * ClusterCentroids and KMeans-SMOTE, and imbalanced-learn's
 * `ClusterCentroids` (Yen & Lee 2009 style under-sampling by cluster
 * centroids; imblearn 0.10 semantics: one KMeans with n_clusters = the number
 * to keep per targeted class; voting "soft" returns the centroids, "hard" the
 * class row nearest to each centroid).
 *
 * Assignment: exact distances to every centre when there are at most 32
 * centres, else the blocked exact kNN (k = 1 over the centres); ties to the
 * smaller centre index either way; the centre update sums rows in row order, so the
 * result depends only on the seed, never on the thread count.  scikit-learn's
 * conventions: tolerance relative to the mean per-feature variance, an empty
 * cluster takes the row farthest from its centre, the best of n_init runs by
 * inertia.  The generator streams are ours, so centres are not numpy's. */
#include <math.h>
#include <string.h>

#include "sampler_internal.h"

#define TAG_KMEANS 0x4b4d45414eULL

/* k-means++ seeding (one candidate per step). */
static void kpp_init(const double *x, int64_t n, int64_t d, int64_t k, effml__rng *r, double *c,
                     double *dmin) {
  int64_t first = (int64_t)effml__rng_below(r, (uint64_t)n);
  memcpy(c, x + first * d, (size_t)d * sizeof(double));
  double tot = 0;
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t t = 0; t < d; ++t) {
      double u = x[i * d + t] - c[t];
      s += u * u;
    }
    dmin[i] = s;
    tot += s;
  }
  for (int64_t j = 1; j < k; ++j) {
    int64_t pick = n - 1;
    if (tot > 0) {
      double u = effml__rng_uniform(r) * tot, acc = 0;
      for (int64_t i = 0; i < n; ++i) {
        acc += dmin[i];
        if (acc > u) {
          pick = i;
          break;
        }
      }
    } else {
      pick = (int64_t)effml__rng_below(r, (uint64_t)n);
    }
    double *cj = c + j * d;
    memcpy(cj, x + pick * d, (size_t)d * sizeof(double));
    tot = 0;
    for (int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int64_t t = 0; t < d; ++t) {
        double u = x[i * d + t] - cj[t];
        s += u * u;
      }
      if (s < dmin[i]) dmin[i] = s;
      tot += dmin[i];
    }
  }
}

/* Assignment to the nearest of a few centres: exact squared distances to
 * every centre, ties to the smaller centre index (what the blocked kNN gives,
 * without its GEMM tiles and candidate lists, which cost more than the work
 * itself when there are only a few centres).  Rows are independent: any
 * split over threads gives the same bytes. */
#define KMEANS_DIRECT_MAX 32

typedef struct {
  const double *x, *c;
  int64_t d, k;
  int64_t *lab;
  double *dist;
} assign_job;

static void assign_range(void *arg, int64_t b, int64_t e, int32_t worker) {
  (void)worker;
  const assign_job *J = (const assign_job *)arg;
  const int64_t d = J->d, k = J->k;
  for (int64_t i = b; i < e; ++i) {
    const double *xi = J->x + i * d;
    double best = INFINITY;
    int64_t bj = 0;
    for (int64_t j = 0; j < k; ++j) {
      const double *cj = J->c + j * d;
      double s = 0;
      for (int64_t t = 0; t < d; ++t) {
        const double u = xi[t] - cj[t];
        s += u * u;
      }
      if (s < best) {
        best = s;
        bj = j;
      }
    }
    J->lab[i] = bj;
    J->dist[i] = best;
  }
}

static effml_status kmeans_assign(effml_context *ctx, const double *c, int64_t k, const double *x,
                                  int64_t n, int64_t d, int64_t block_rows, int64_t *lab,
                                  double *dist) {
  if (k > KMEANS_DIRECT_MAX) return effml__knn_f64(ctx, c, k, x, n, d, 1, NULL, block_rows, lab, dist);
  assign_job J = {x, c, d, k, lab, dist};
  return effml__parallel_for(ctx, n, 4096, assign_range, &J);
}

effml_status effml__kmeans(effml_context *ctx, const double *x, int64_t n, int64_t d, int64_t k,
                           int64_t n_init, int64_t max_iter, double tol, uint64_t seed,
                           uint64_t stream, int64_t block_rows, double *centers, int64_t *labels) {
  if (k < 1 || k > n)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "k-means: n_clusters=%lld must be in [1, %lld]",
                      (long long)k, (long long)n);
  if (n_init < 1 || max_iter < 1 || !(tol >= 0) || !isfinite(tol))
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "k-means: kmeans_n_init=%lld and kmeans_max_iter=%lld must be >= 1, "
                      "kmeans_tol=%g finite and >= 0",
                      (long long)n_init, (long long)max_iter, tol);
  double *c = (double *)effml__malloc(ctx, (size_t)(k * d) * sizeof(double));
  double *cn = (double *)effml__malloc(ctx, (size_t)(k * d) * sizeof(double));
  double *dist = (double *)effml__malloc(ctx, (size_t)n * sizeof(double));
  int64_t *lab = (int64_t *)effml__malloc(ctx, (size_t)n * sizeof(int64_t));
  int64_t *cnt = (int64_t *)effml__malloc(ctx, (size_t)k * sizeof(int64_t));
  double *mean = (double *)effml__calloc(ctx, (size_t)d, sizeof(double));
  if (!c || !cn || !dist || !lab || !cnt || !mean) {
    effml__free(ctx, c);
    effml__free(ctx, cn);
    effml__free(ctx, dist);
    effml__free(ctx, lab);
    effml__free(ctx, cnt);
    effml__free(ctx, mean);
    return effml__err(ctx, EFFML_E_NOMEM, "k-means: out of memory (%lld rows, %lld clusters)",
                      (long long)n, (long long)k);
  }
  /* tolerance relative to the mean variance of the features (scikit-learn) */
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < d; ++t) mean[t] += x[i * d + t];
  for (int64_t t = 0; t < d; ++t) mean[t] /= (double)n;
  double var = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < d; ++t) {
      double u = x[i * d + t] - mean[t];
      var += u * u;
    }
  const double tol_abs = tol * var / (double)(n * d);
  double best = INFINITY;
  effml_status st = EFFML_OK;
  for (int64_t run = 0; st == EFFML_OK && run < n_init; ++run) {
    effml__rng r;
    effml__rng_seed(&r, seed, effml__mix64(TAG_KMEANS ^ stream) + (uint64_t)run);
    kpp_init(x, n, d, k, &r, c, dist);
    double inertia = INFINITY;
    for (int64_t it = 0; st == EFFML_OK && it < max_iter; ++it) {
      st = kmeans_assign(ctx, c, k, x, n, d, block_rows, lab, dist);
      if (st != EFFML_OK) break;
      memset(cn, 0, (size_t)(k * d) * sizeof(double));
      memset(cnt, 0, (size_t)k * sizeof(int64_t));
      inertia = 0;
      for (int64_t i = 0; i < n; ++i) {
        cnt[lab[i]]++;
        inertia += dist[i];
        for (int64_t t = 0; t < d; ++t) cn[lab[i] * d + t] += x[i * d + t];
      }
      for (int64_t j = 0; j < k; ++j) {
        if (cnt[j] == 0) { /* relocate to the row farthest from its centre */
          int64_t far = 0;
          for (int64_t i = 1; i < n; ++i)
            if (dist[i] > dist[far]) far = i;
          memcpy(cn + j * d, x + far * d, (size_t)d * sizeof(double));
          dist[far] = 0;
          continue;
        }
        for (int64_t t = 0; t < d; ++t) cn[j * d + t] /= (double)cnt[j];
      }
      double shift = 0;
      for (int64_t t = 0; t < k * d; ++t) shift += (cn[t] - c[t]) * (cn[t] - c[t]);
      memcpy(c, cn, (size_t)(k * d) * sizeof(double));
      if (shift <= tol_abs) break;
    }
    if (st != EFFML_OK) break;
    /* final assignment to the final centres */
    st = kmeans_assign(ctx, c, k, x, n, d, block_rows, lab, dist);
    if (st != EFFML_OK) break;
    inertia = 0;
    for (int64_t i = 0; i < n; ++i) inertia += dist[i];
    if (inertia < best) {
      best = inertia;
      memcpy(centers, c, (size_t)(k * d) * sizeof(double));
      if (labels) memcpy(labels, lab, (size_t)n * sizeof(int64_t));
    }
  }
  effml__free(ctx, c);
  effml__free(ctx, cn);
  effml__free(ctx, dist);
  effml__free(ctx, lab);
  effml__free(ctx, cnt);
  effml__free(ctx, mean);
  return st;
}

/* ---- ClusterCentroids ---- */

static effml_status cc_check(effml_context *ctx, const effml_sampler_resample_options *o) {
  if (o->voting != EFFML_SAMPLER_VOTING_SOFT && o->voting != EFFML_SAMPLER_VOTING_HARD)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "voting=%d must be EFFML_SAMPLER_VOTING_SOFT or EFFML_SAMPLER_VOTING_HARD",
                      (int)o->voting);
  return EFFML_OK;
}

/* Centres of targeted class cl into *out [values[cl], d] (owned). */
static effml_status cc_centers(effml_context *ctx, const effml__resample_in *in, int64_t cl,
                               double **out) {
  const effml__classes *c = in->c;
  const effml_sampler_resample_options *o = in->o;
  const int64_t d = in->d, nk = in->values[cl];
  double *xc = effml__gather_rows(ctx, in->x, d, c->rows + c->start[cl], c->counts[cl]);
  double *cen = xc ? (double *)effml__alloc_or_err(ctx, (size_t)(nk * d) * sizeof(double) + 1, "centroids") : NULL;
  effml_status st = cen ? effml__kmeans(ctx, xc, c->counts[cl], d, nk, o->kmeans_n_init,
                                        o->kmeans_max_iter, o->kmeans_tol, o->seed,
                                        (uint64_t)c->labels[cl], o->block_rows, cen, NULL)
                        : EFFML_E_NOMEM;
  effml__free(ctx, xc);
  if (st != EFFML_OK) {
    effml__free(ctx, cen);
    return st;
  }
  *out = cen;
  return EFFML_OK;
}

effml_status effml__cluster_centroids_plan(effml_context *ctx, const effml__resample_in *in,
                                           effml__plan *p) {
  const effml__classes *c = in->c;
  const effml_sampler_resample_options *o = in->o;
  EFFML__TRY(cc_check(ctx, o));
  if (o->voting != EFFML_SAMPLER_VOTING_HARD)
    return effml__err(ctx, EFFML_E_UNSUPPORTED,
                      "ClusterCentroids with voting=SOFT returns centroids, which are not rows "
                      "of x: use effml_sampler_resample, or voting=HARD for a plan");
  effml_status st = effml__plan_reserve(ctx, p, in->n);
  for (int64_t cl = 0; st == EFFML_OK && cl < c->n_classes; ++cl) {
    const int64_t *rows = c->rows + c->start[cl];
    if (in->values[cl] < 0) {
      for (int64_t i = 0; i < c->counts[cl]; ++i) effml__plan_push(p, rows[i], -1, 0.0);
      continue;
    }
    if (in->values[cl] == 0) continue;
    double *cen = NULL;
    st = cc_centers(ctx, in, cl, &cen);
    if (st != EFFML_OK) break;
    const int64_t nk = in->values[cl];
    double *xc = effml__gather_rows(ctx, in->x, in->d, rows, c->counts[cl]);
    int64_t *nn = xc ? (int64_t *)effml__alloc_or_err(ctx, (size_t)nk * sizeof(int64_t), "nearest rows") : NULL;
    st = nn ? effml__knn_f64(ctx, xc, c->counts[cl], cen, nk, in->d, 1, NULL, o->block_rows, nn, NULL)
            : EFFML_E_NOMEM;
    for (int64_t j = 0; st == EFFML_OK && j < nk; ++j) effml__plan_push(p, rows[nn[j]], -1, 0.0);
    effml__free(ctx, nn);
    effml__free(ctx, xc);
    effml__free(ctx, cen);
  }
  return st;
}

effml_status effml__cluster_centroids_resample(effml_context *ctx,
                                               const effml_sampler_resample_options *o,
                                               const effml_tensor *x, const effml_tensor *y,
                                               effml_tensor **x_out, effml_tensor **y_out) {
  EFFML__TRY(cc_check(ctx, o));
  const double *xd = NULL;
  double *x_own = NULL;
  EFFML__TRY(effml__sampler_x_f64(ctx, x, "x", 0, &xd, &x_own));
  const int64_t n = x->shape[0], d = x->shape[1];
  int64_t *y64 = NULL, *values = NULL;
  effml__classes c;
  memset(&c, 0, sizeof c);
  effml_status st = effml__sampler_labels(ctx, y, n, &y64);
  if (st == EFFML_OK) st = effml__classes_build(ctx, y64, n, &c);
  if (st == EFFML_OK) {
    values = (int64_t *)effml__alloc_or_err(ctx, (size_t)c.n_classes * sizeof(int64_t), "strategy");
    st = values ? effml__strategy_resolve(ctx, o, &c, values) : EFFML_E_NOMEM;
  }
  int64_t m = 0;
  for (int64_t cl = 0; st == EFFML_OK && cl < c.n_classes; ++cl)
    m += values[cl] < 0 ? c.counts[cl] : values[cl];
  if (st == EFFML_OK && m == 0) st = effml__err(ctx, EFFML_E_NUMERIC, "re-sampling removed every sample");
  effml_tensor *xo = NULL, *yo = NULL;
  int64_t shape[2] = {m, d};
  if (st == EFFML_OK) st = effml_tensor_create(ctx, x->dtype, 2, shape, &xo);
  if (st == EFFML_OK) st = effml_tensor_create(ctx, y->dtype, 1, &m, &yo);
  effml__resample_in in = {o, xd, n, d, y64, &c, values, 0};
  int64_t r = 0;
  for (int64_t cl = 0; st == EFFML_OK && cl < c.n_classes; ++cl) {
    const int64_t *rows = c.rows + c.start[cl];
    const double *src = NULL;
    double *cen = NULL;
    int64_t cnt = values[cl] < 0 ? c.counts[cl] : values[cl];
    if (values[cl] > 0) {
      st = cc_centers(ctx, &in, cl, &cen);
      if (st != EFFML_OK) break;
      src = cen;
    }
    for (int64_t j = 0; j < cnt; ++j, ++r) {
      const double *row = src ? src + j * d : xd + rows[j] * d;
      if (x->dtype == EFFML_F64)
        memcpy(effml__f64(xo) + r * d, row, (size_t)d * sizeof(double));
      else
        for (int64_t t = 0; t < d; ++t) effml__f32(xo)[r * d + t] = (float)row[t];
      if (y->dtype == EFFML_I64)
        ((int64_t *)(void *)yo->data)[r] = c.labels[cl];
      else
        ((int32_t *)(void *)yo->data)[r] = (int32_t)c.labels[cl];
    }
    effml__free(ctx, cen);
  }
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
