/* k-means (Lloyd's algorithm with k-means++ seeding: Arthur & Vassilvitskii,
 * "k-means++: the advantages of careful seeding", SODA 2007) for
 * ClusterCentroids and KMeans-SMOTE, and imbalanced-learn's
 * `ClusterCentroids` (Yen & Lee 2009 style under-sampling by cluster
 * centroids; imblearn 0.10 semantics: one KMeans with n_clusters = the number
 * to keep per targeted class; voting "soft" returns the centroids, "hard" the
 * class row nearest to each centroid).
 *
 * Assignment: exact distances to every centre when there are at most 256
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

/* Squared distances of rows x[i0 .. i0 + mr) (mr <= 4) to c into s[]: each
 * summed over the features in order, four independent sums at a time. */
static inline void dist4(const double *x, int64_t i0, int64_t mr, int64_t d, const double *c,
                         double s[4]) {
  const double *x0 = x + i0 * d, *x1 = x + (i0 + (mr > 1)) * d, *x2 = x + (i0 + 2 * (mr > 2)) * d,
               *x3 = x + (i0 + 3 * (mr > 3)) * d;
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  for (int64_t t = 0; t < d; ++t) {
    const double u0 = x0[t] - c[t], u1 = x1[t] - c[t], u2 = x2[t] - c[t], u3 = x3[t] - c[t];
    s0 += u0 * u0;
    s1 += u1 * u1;
    s2 += u2 * u2;
    s3 += u3 * u3;
  }
  s[0] = s0;
  s[1] = s1;
  s[2] = s2;
  s[3] = s3;
}

/* k-means++ seeding (one candidate per step). */
static void kpp_init(const double *x, int64_t n, int64_t d, int64_t k, effml__rng *r, double *c,
                     double *dmin) {
  int64_t first = (int64_t)effml__rng_below(r, (uint64_t)n);
  memcpy(c, x + first * d, (size_t)d * sizeof(double));
  double tot = 0, s[4];
  for (int64_t i0 = 0; i0 < n; i0 += 4) {
    const int64_t mr = n - i0 < 4 ? n - i0 : 4;
    dist4(x, i0, mr, d, c, s);
    for (int64_t q = 0; q < mr; ++q) {
      dmin[i0 + q] = s[q];
      tot += s[q];
    }
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
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
      const int64_t mr = n - i0 < 4 ? n - i0 : 4;
      dist4(x, i0, mr, d, cj, s);
      for (int64_t q = 0; q < mr; ++q) {
        if (s[q] < dmin[i0 + q]) dmin[i0 + q] = s[q];
        tot += dmin[i0 + q];
      }
    }
  }
}

/* Assignment to the nearest centre: exact squared distances to every centre,
 * ties to the smaller centre index (what the blocked kNN gives, without its
 * GEMM tiles, candidate lists and re-rank, which cost more than the work
 * itself when there are few centres).  Each distance is summed over the
 * features in order from 0.0, as the kNN's exact re-rank does, so both paths
 * and both kernels below give the same bytes.  The kernels compute KM_MR rows
 * against KM_NR centres at a time (independent sums: the vector units run
 * across centres, never across the terms of one sum).  Rows are independent:
 * any split over threads gives the same bytes. */
#define KMEANS_DIRECT_MAX 256
#define KM_MR 4 /* rows per tile (assign_tile is written for 4) */
#define KM_NR 8

typedef struct {
  const double *x;
  const double *cg; /* centres in groups of KM_NR, transposed: cg[(g * d + t) * KM_NR + jj] */
  int64_t d, k, ng;
  int isa;
  int64_t *lab;
  double *dist;
} assign_job;

typedef double km_v8 __attribute__((vector_size(64)));

/* Squared distances of rows xr[0..KM_MR) to the ng * KM_NR grouped centres
 * into out[r * ng * KM_NR + j] (vector extensions: element-wise, in order). */
static inline __attribute__((always_inline)) void assign_tile(const double *const *xr,
                                                              const double *cg, int64_t d,
                                                              int64_t ng, double *out) {
  const int64_t ld = ng * KM_NR;
  for (int64_t g = 0; g < ng; ++g) {
    km_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    const double *c = cg + g * d * KM_NR;
    for (int64_t t = 0; t < d; ++t) {
      km_v8 ct;
      memcpy(&ct, c + t * KM_NR, sizeof ct);
      const km_v8 u0 = xr[0][t] - ct, u1 = xr[1][t] - ct, u2 = xr[2][t] - ct, u3 = xr[3][t] - ct;
      a0 += u0 * u0;
      a1 += u1 * u1;
      a2 += u2 * u2;
      a3 += u3 * u3;
    }
    memcpy(out + g * KM_NR, &a0, sizeof a0);
    memcpy(out + ld + g * KM_NR, &a1, sizeof a1);
    memcpy(out + 2 * ld + g * KM_NR, &a2, sizeof a2);
    memcpy(out + 3 * ld + g * KM_NR, &a3, sizeof a3);
  }
}

static void assign_tile_portable(const double *const *xr, const double *cg, int64_t d, int64_t ng,
                                 double *out) {
  assign_tile(xr, cg, d, ng, out);
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void assign_tile_avx512(const double *const *xr,
                                                                  const double *cg, int64_t d,
                                                                  int64_t ng, double *out) {
  assign_tile(xr, cg, d, ng, out);
}
#endif

static void assign_range(void *arg, int64_t b, int64_t e, int32_t worker) {
  (void)worker;
  const assign_job *J = (const assign_job *)arg;
  const int64_t d = J->d, k = J->k, ng = J->ng;
  double out[KM_MR * KMEANS_DIRECT_MAX];
  for (int64_t i0 = b; i0 < e; i0 += KM_MR) {
    const int64_t mr = e - i0 < KM_MR ? e - i0 : KM_MR;
    const double *xr[KM_MR];
    for (int r = 0; r < KM_MR; ++r) xr[r] = J->x + (i0 + (r < mr ? r : 0)) * d;
    effml__sqdist_tile(J->isa, xr, J->cg, d, ng, out);
    for (int64_t r = 0; r < mr; ++r) {
      const double *o = out + r * ng * KM_NR;
      double best = o[0];
      int64_t bj = 0;
      for (int64_t j = 1; j < k; ++j) { /* first minimum: ties to the smaller centre */
        const double v = o[j];
        const int lt = v < best;
        best = lt ? v : best;
        bj = lt ? j : bj;
      }
      J->lab[i0 + r] = bj;
      J->dist[i0 + r] = best;
    }
  }
}

double *effml__sqdist_groups(effml_context *ctx, const double *c, int64_t k, int64_t d) {
  const int64_t ng = (k + KM_NR - 1) / KM_NR;
  double *cg = (double *)effml__alloc_or_err(ctx, (size_t)(ng * KM_NR * d) * sizeof(double) + 1,
                                             "grouped rows");
  if (!cg) return NULL;
  for (int64_t j = 0; j < ng * KM_NR; ++j)
    for (int64_t t = 0; t < d; ++t)
      cg[((j / KM_NR) * d + t) * KM_NR + j % KM_NR] = j < k ? c[j * d + t] : 0.0;
  return cg;
}

int effml__sqdist_isa(const effml_context *ctx, int isa) {
#if defined(__x86_64__)
  const int cpu = effml__ctx_isa(ctx) >= EFFML_CORE_ISA_AVX512;
  return isa < 0 ? cpu : (isa > 0 && cpu);
#else
  (void)ctx;
  (void)isa;
  return 0;
#endif
}

void effml__sqdist_tile(int isa, const double *const *xr, const double *cg, int64_t d, int64_t ng,
                        double *out) {
#if defined(__x86_64__)
  if (isa) {
    assign_tile_avx512(xr, cg, d, ng, out);
    return;
  }
#else
  (void)isa;
#endif
  assign_tile_portable(xr, cg, d, ng, out);
}

effml_status effml__kmeans_assign_isa(effml_context *ctx, const double *c, int64_t k,
                                      const double *x, int64_t n, int64_t d, int64_t block_rows,
                                      int64_t *lab, double *dist, int isa) {
  if (k > KMEANS_DIRECT_MAX) return effml__knn_f64(ctx, c, k, x, n, d, 1, NULL, block_rows, lab, dist);
  double *cg = effml__sqdist_groups(ctx, c, k, d);
  if (!cg) return EFFML_E_NOMEM;
  assign_job J = {x, cg, d, k, (k + KM_NR - 1) / KM_NR, effml__sqdist_isa(ctx, isa), lab, dist};
  effml_status st = effml__parallel_for(ctx, n, 4096, assign_range, &J);
  effml__free(ctx, cg);
  return st;
}

static effml_status kmeans_assign(effml_context *ctx, const double *c, int64_t k, const double *x,
                                  int64_t n, int64_t d, int64_t block_rows, int64_t *lab,
                                  double *dist) {
  return effml__kmeans_assign_isa(ctx, c, k, x, n, d, block_rows, lab, dist, -1);
}

/* dst[t] += src[t] for t < d (restrict: the compiler may vectorise it; element-wise, so the
 * same bytes either way). */
static inline void add_row(double *restrict dst, const double *restrict src, int64_t d) {
  for (int64_t t = 0; t < d; ++t) dst[t] += src[t];
}

/* One k-means run (seeding + Lloyd + final assignment) and its scratch. */
typedef struct {
  const double *x;
  int64_t n, d, k, max_iter, block_rows;
  double tol_abs;
  uint64_t seed, stream;
  int isa;
} km_args;

typedef struct {
  double *c, *cn, *dist, *cg; /* cg: grouped centres for km_assign without a context */
  int64_t *lab, *cnt;
} km_scratch;

/* Nearest centres of every row: through kmeans_assign (threads, or the kNN
 * for many centres) when ctx is given, else on this thread (k <= 256). */
static effml_status km_assign(effml_context *ctx, const km_args *A, km_scratch *s) {
  if (ctx) return kmeans_assign(ctx, s->c, A->k, A->x, A->n, A->d, A->block_rows, s->lab, s->dist);
  const int64_t k = A->k, d = A->d, ng = (k + KM_NR - 1) / KM_NR;
  for (int64_t j = 0; j < ng * KM_NR; ++j)
    for (int64_t t = 0; t < d; ++t)
      s->cg[((j / KM_NR) * d + t) * KM_NR + j % KM_NR] = j < k ? s->c[j * d + t] : 0.0;
  assign_job J = {A->x, s->cg, d, k, ng, A->isa, s->lab, s->dist};
  assign_range(&J, 0, A->n, 0);
  return EFFML_OK;
}

/* Run `run`: final centres in s->c, labels in s->lab, inertia in *inertia. */
static effml_status km_run(effml_context *ctx, const km_args *A, int64_t run, km_scratch *s,
                           double *inertia) {
  const double *x = A->x;
  const int64_t n = A->n, d = A->d, k = A->k;
  effml__rng r;
  effml__rng_seed(&r, A->seed, effml__mix64(TAG_KMEANS ^ A->stream) + (uint64_t)run);
  kpp_init(x, n, d, k, &r, s->c, s->dist);
  for (int64_t it = 0; it < A->max_iter; ++it) {
    EFFML__TRY(km_assign(ctx, A, s));
    memset(s->cn, 0, (size_t)(k * d) * sizeof(double));
    memset(s->cnt, 0, (size_t)k * sizeof(int64_t));
    for (int64_t i = 0; i < n; ++i) {
      s->cnt[s->lab[i]]++;
      add_row(s->cn + s->lab[i] * d, x + i * d, d);
    }
    for (int64_t j = 0; j < k; ++j) {
      if (s->cnt[j] == 0) { /* relocate to the row farthest from its centre */
        int64_t far = 0;
        for (int64_t i = 1; i < n; ++i)
          if (s->dist[i] > s->dist[far]) far = i;
        memcpy(s->cn + j * d, x + far * d, (size_t)d * sizeof(double));
        s->dist[far] = 0;
        continue;
      }
      for (int64_t t = 0; t < d; ++t) s->cn[j * d + t] /= (double)s->cnt[j];
    }
    double shift = 0;
    for (int64_t t = 0; t < k * d; ++t) shift += (s->cn[t] - s->c[t]) * (s->cn[t] - s->c[t]);
    memcpy(s->c, s->cn, (size_t)(k * d) * sizeof(double));
    if (shift <= A->tol_abs) break;
  }
  /* final assignment to the final centres */
  EFFML__TRY(km_assign(ctx, A, s));
  double in = 0;
  for (int64_t i = 0; i < n; ++i) in += s->dist[i];
  *inertia = in;
  return EFFML_OK;
}

/* Runs in parallel: each worker runs whole runs on its own scratch (no
 * threads inside a run); run r leaves its centres, labels and inertia in
 * out_c[r], out_lab[r], out_in[r]. */
typedef struct {
  const km_args *A;
  km_scratch *s; /* [workers] */
  double *out_c, *out_in;
  int64_t *out_lab;
} km_par;

static void km_runs_range(void *arg, int64_t b, int64_t e, int32_t worker) {
  km_par *P = (km_par *)arg;
  const km_args *A = P->A;
  km_scratch *s = P->s + worker;
  for (int64_t run = b; run < e; ++run) {
    (void)km_run(NULL, A, run, s, P->out_in + run); /* no context: cannot fail */
    memcpy(P->out_c + run * A->k * A->d, s->c, (size_t)(A->k * A->d) * sizeof(double));
    if (P->out_lab) memcpy(P->out_lab + run * A->n, s->lab, (size_t)A->n * sizeof(int64_t));
  }
}

static void km_scratch_free(effml_context *ctx, km_scratch *s) {
  effml__free(ctx, s->c);
  effml__free(ctx, s->cn);
  effml__free(ctx, s->dist);
  effml__free(ctx, s->cg);
  effml__free(ctx, s->lab);
  effml__free(ctx, s->cnt);
}

static int km_scratch_alloc(effml_context *ctx, km_scratch *s, const km_args *A, int with_cg) {
  const int64_t k = A->k, d = A->d, n = A->n;
  memset(s, 0, sizeof *s);
  s->c = (double *)effml__malloc(ctx, (size_t)(k * d) * sizeof(double));
  s->cn = (double *)effml__malloc(ctx, (size_t)(k * d) * sizeof(double));
  s->dist = (double *)effml__malloc(ctx, (size_t)n * sizeof(double));
  s->lab = (int64_t *)effml__malloc(ctx, (size_t)n * sizeof(int64_t));
  s->cnt = (int64_t *)effml__malloc(ctx, (size_t)k * sizeof(int64_t));
  if (with_cg)
    s->cg = (double *)effml__malloc(ctx, (size_t)((k + KM_NR - 1) / KM_NR * KM_NR * d) * sizeof(double));
  return s->c && s->cn && s->dist && s->lab && s->cnt && (!with_cg || s->cg);
}

/* Runs go to threads when the context has them, there are several runs, the
 * centres are few enough for the direct assignment and the rows too few for
 * the assignment itself to use threads (parallel_for's 4096-row chunks). */
#define KM_PAR_ROWS (2 * 4096)

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
  /* tolerance relative to the mean variance of the features (scikit-learn) */
  double *mean = (double *)effml__calloc(ctx, (size_t)d, sizeof(double));
  if (!mean) return effml__err(ctx, EFFML_E_NOMEM, "k-means: out of memory");
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < d; ++t) mean[t] += x[i * d + t];
  for (int64_t t = 0; t < d; ++t) mean[t] /= (double)n;
  double var = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < d; ++t) {
      double u = x[i * d + t] - mean[t];
      var += u * u;
    }
  effml__free(ctx, mean);
  const km_args A = {x, n, d, k, max_iter, block_rows, tol * var / (double)(n * d), seed, stream,
                     effml__sqdist_isa(ctx, -1)};
  int64_t workers = effml__ctx_threads(ctx);
  if (workers > n_init) workers = n_init;
  if (workers > 64) workers = 64;
  const int par = workers > 1 && k <= KMEANS_DIRECT_MAX && n < KM_PAR_ROWS;
  if (!par) workers = 1;
  km_scratch s[64];
  memset(s, 0, sizeof s);
  double *out_c = NULL, *out_in = NULL;
  int64_t *out_lab = NULL;
  int ok = 1;
  for (int64_t w = 0; w < workers; ++w) ok = ok && km_scratch_alloc(ctx, s + w, &A, par);
  if (par && ok) {
    out_c = (double *)effml__malloc(ctx, (size_t)(n_init * k * d) * sizeof(double));
    out_in = (double *)effml__malloc(ctx, (size_t)n_init * sizeof(double));
    if (labels) out_lab = (int64_t *)effml__malloc(ctx, (size_t)(n_init * n) * sizeof(int64_t));
    ok = out_c && out_in && (!labels || out_lab);
  }
  effml_status st = ok ? EFFML_OK
                       : effml__err(ctx, EFFML_E_NOMEM, "k-means: out of memory (%lld rows, %lld clusters)",
                                    (long long)n, (long long)k);
  double best = INFINITY;
  if (st == EFFML_OK && par) {
    km_par P = {&A, s, out_c, out_in, out_lab};
    st = effml__parallel_for(ctx, n_init, 1, km_runs_range, &P);
    /* the best run by inertia, the first on a tie: as the runs in order */
    for (int64_t run = 0; st == EFFML_OK && run < n_init; ++run)
      if (out_in[run] < best) {
        best = out_in[run];
        memcpy(centers, out_c + run * k * d, (size_t)(k * d) * sizeof(double));
        if (labels) memcpy(labels, out_lab + run * n, (size_t)n * sizeof(int64_t));
      }
  }
  for (int64_t run = 0; st == EFFML_OK && !par && run < n_init; ++run) {
    double inertia = INFINITY;
    st = km_run(ctx, &A, run, s, &inertia);
    if (st == EFFML_OK && inertia < best) {
      best = inertia;
      memcpy(centers, s->c, (size_t)(k * d) * sizeof(double));
      if (labels) memcpy(labels, s->lab, (size_t)n * sizeof(int64_t));
    }
  }
  for (int64_t w = 0; w < workers; ++w) km_scratch_free(ctx, s + w);
  effml__free(ctx, out_c);
  effml__free(ctx, out_in);
  effml__free(ctx, out_lab);
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
