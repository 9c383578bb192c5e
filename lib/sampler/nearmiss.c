/* NearMiss 1, 2 and 3 (Mani & Zhang, "kNN approach to unbalanced data
 * distributions: a case study involving information extraction", ICML 2003
 * Workshop on Learning from Imbalanced Datasets), with imbalanced-learn
 * 0.10's `NearMiss` semantics:
 *
 * - every targeted class c keeps `values[c]` rows (sampling_strategy of an
 *   under-sampler); the minority class is the first label with the smallest
 *   count;
 * - NearMiss-1: score = sum of the distances to the n_neighbors nearest
 *   minority rows; keep the smallest scores;
 * - NearMiss-2: score = sum of the distances to the min(n_neighbors, n_min)
 *   *farthest* minority rows (any n_neighbors >= 1; imblearn sorts the distances
 *   to all n_min minority rows and sums the last n_neighbors); keep the smallest
 *   scores;
 * - NearMiss-3: pre-select the union of the n_neighbors_ver3 nearest rows of c
 *   of every minority row; score as NearMiss-1; keep the *largest* scores
 *   (fewer rows than asked when the pre-selection is smaller, as imblearn);
 * - kept rows are listed in score order (ties by position), the classes in
 *   label order, untargeted classes whole in original order;
 * - a targeted minority class is scored against itself, its own row included
 *   (distance 0), as imblearn does.
 *
 * Distances are exact Euclidean (sqrt of the sum of squared differences);
 * scores are summed in numpy's pairwise order so that equal inputs give the
 * same sums. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler_internal.h"

double effml__np_sum(const double *a, int64_t n) {
  /* numpy's pairwise_sum (numpy/core/src/umath/loops_utils.h.src). */
  if (n < 8) {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += a[i];
    return s;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i;
    for (i = 8; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) s += a[i];
    return s;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return effml__np_sum(a, n2) + effml__np_sum(a + n2, n - n2);
}

typedef struct scored {
  double s;
  int64_t i;
} scored;

static int cmp_asc(const void *a, const void *b) {
  const scored *x = (const scored *)a, *y = (const scored *)b;
  if (x->s < y->s) return -1;
  if (x->s > y->s) return 1;
  return (x->i > y->i) - (x->i < y->i);
}

static int cmp_desc(const void *a, const void *b) {
  const scored *x = (const scored *)a, *y = (const scored *)b;
  if (x->s > y->s) return -1;
  if (x->s < y->s) return 1;
  return (x->i > y->i) - (x->i < y->i);
}

/* NearMiss-2 scores: for each query row, the sum of the k largest distances to
 * the reference rows (ascending, as numpy sees the tail of a sorted row).
 * Squared distances come 4 queries at a time from the k-means tile kernel
 * (each summed over the features in order, as a scalar loop would), and only
 * the k largest distances are kept (an ascending list): the same values, in
 * the same order, as sorting the whole row. */
typedef struct far_job {
  const double *q, *cg; /* cg: the reference rows in the tile kernel's groups */
  int64_t n_q, n_ref, d, k, ng;
  int isa;
  double *score;
  double *scratch; /* [workers][4 * 8 * ng + k] */
} far_job;

static void far_range(void *arg, int64_t b, int64_t e, int32_t worker) {
  far_job *J = (far_job *)arg;
  const int64_t ld = 8 * J->ng, k = J->k;
  double *out = J->scratch + (size_t)worker * (size_t)(4 * ld + k), *top = out + 4 * ld;
  for (int64_t i0 = b; i0 < e; i0 += 4) {
    const int64_t mr = e - i0 < 4 ? e - i0 : 4;
    const double *xr[4];
    for (int64_t r = 0; r < 4; ++r) xr[r] = J->q + (i0 + (r < mr ? r : 0)) * J->d;
    effml__sqdist_tile(J->isa, xr, J->cg, J->d, J->ng, out);
    for (int64_t r = 0; r < mr; ++r) {
      const double *o = out + r * ld;
      int64_t nt = 0; /* top[0..nt) ascending: the largest distances so far */
      for (int64_t j = 0; j < J->n_ref; ++j) {
        const double v = sqrt(o[j]);
        if (nt == k && !(v > top[0])) continue;
        int64_t p;
        if (nt < k) {
          p = nt++;
          while (p > 0 && top[p - 1] > v) {
            top[p] = top[p - 1];
            --p;
          }
        } else { /* drop top[0], insert v */
          p = 0;
          while (p + 1 < k && top[p + 1] < v) {
            top[p] = top[p + 1];
            ++p;
          }
        }
        top[p] = v;
      }
      J->score[i0 + r] = effml__np_sum(top, k);
    }
  }
}

static effml_status scores_far(effml_context *ctx, const double *q, int64_t n_q,
                               const double *ref, int64_t n_ref, int64_t d, int64_t k,
                               double *score) {
  int64_t workers = effml__ctx_threads(ctx);
  if (workers < 1) workers = 1;
  if (workers > 64) workers = 64;
  const int64_t ng = (n_ref + 7) / 8;
  far_job J = {q, NULL, n_q, n_ref, d, k, ng, effml__sqdist_isa(ctx, -1), score, NULL};
  double *cg = effml__sqdist_groups(ctx, ref, n_ref, d);
  J.cg = cg;
  J.scratch = cg ? (double *)effml__alloc_or_err(ctx, (size_t)(workers * (32 * ng + k)) * sizeof(double),
                                                 "NearMiss-2 distances")
                 : NULL;
  effml_status st = J.scratch ? effml__parallel_for(ctx, n_q, 16, far_range, &J) : EFFML_E_NOMEM;
  effml__free(ctx, cg);
  effml__free(ctx, J.scratch);
  return st;
}

/* NearMiss-1/3 scores: sum of the distances to the k nearest reference rows. */
static effml_status scores_near(effml_context *ctx, const effml_sampler_resample_options *o,
                                const double *q, int64_t n_q, const double *ref, int64_t n_ref,
                                int64_t d, int64_t k, double *score) {
  if (n_q == 0) return EFFML_OK;
  int64_t *idx = (int64_t *)effml__alloc_or_err(ctx, (size_t)(n_q * k) * sizeof(int64_t), "kNN");
  double *d2 = idx ? (double *)effml__alloc_or_err(ctx, (size_t)(n_q * k) * sizeof(double), "kNN")
                   : NULL;
  effml_status st = d2 ? effml__knn_f64(ctx, ref, n_ref, q, n_q, d, k, NULL, o->block_rows, idx, d2)
                       : EFFML_E_NOMEM;
  for (int64_t i = 0; st == EFFML_OK && i < n_q; ++i) {
    double *r = d2 + i * k;
    for (int64_t j = 0; j < k; ++j) r[j] = sqrt(r[j]);
    score[i] = effml__np_sum(r, k);
  }
  effml__free(ctx, idx);
  effml__free(ctx, d2);
  return st;
}

/* Rows kept from class `cl` (positions in the class) into *sel / *n_sel. */
static effml_status nearmiss_class(effml_context *ctx, const effml__resample_in *in, int64_t cl,
                                   const double *xmin, int64_t n_min, scored **sel,
                                   int64_t *n_sel) {
  const effml__classes *c = in->c;
  const effml_sampler_resample_options *o = in->o;
  const int64_t d = in->d, nc = c->counts[cl];
  /* NearMiss-2 sums the min(n_neighbors, n_min) farthest minority rows (imblearn
   * takes the last n_neighbors of all n_min sorted distances). */
  const int64_t k = o->version == 2 && o->n_neighbors > n_min ? n_min : o->n_neighbors;
  const int64_t *rows = c->rows + c->start[cl];
  double *xc = effml__gather_rows(ctx, in->x, d, rows, nc);
  if (!xc) return EFFML_E_NOMEM;
  scored *s = (scored *)effml__alloc_or_err(ctx, (size_t)nc * sizeof(scored) + 1, "NearMiss scores");
  double *sc = (double *)effml__alloc_or_err(ctx, (size_t)nc * sizeof(double) + 1, "NearMiss scores");
  effml_status st = s && sc ? EFFML_OK : EFFML_E_NOMEM;
  int64_t m = 0;
  if (st == EFFML_OK && o->version != 3) {
    st = o->version == 1 ? scores_near(ctx, o, xc, nc, xmin, n_min, d, k, sc)
                         : scores_far(ctx, xc, nc, xmin, n_min, d, k, sc);
    for (int64_t i = 0; st == EFFML_OK && i < nc; ++i) s[m++] = (scored){sc[i], i};
    if (st == EFFML_OK) qsort(s, (size_t)m, sizeof(scored), cmp_asc);
  } else if (st == EFFML_OK) {
    const int64_t k3 = o->n_neighbors_ver3;
    if (k3 > nc)
      st = effml__err(ctx, EFFML_E_INVALID_ARG,
                      "NearMiss-3: n_neighbors_ver3=%lld exceeds the %lld samples of class %lld",
                      (long long)k3, (long long)nc, (long long)c->labels[cl]);
    int64_t *idx = NULL;
    char *mark = NULL;
    if (st == EFFML_OK) {
      idx = (int64_t *)effml__alloc_or_err(ctx, (size_t)(n_min * k3) * sizeof(int64_t) + 1, "kNN");
      mark = (char *)effml__calloc(ctx, (size_t)nc + 1, 1);
      if (!idx || !mark) st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for NearMiss-3");
    }
    if (st == EFFML_OK)
      st = effml__knn_f64(ctx, xc, nc, xmin, n_min, d, k3, NULL, o->block_rows, idx, NULL);
    if (st == EFFML_OK) {
      for (int64_t t = 0; t < n_min * k3; ++t) mark[idx[t]] = 1;
      int64_t *pre = idx; /* reuse: the pre-selected positions, ascending */
      int64_t np = 0;
      for (int64_t i = 0; i < nc; ++i)
        if (mark[i]) pre[np++] = i;
      double *xp = effml__gather_rows(ctx, xc, d, pre, np);
      st = xp ? scores_near(ctx, o, xp, np, xmin, n_min, d, k, sc) : EFFML_E_NOMEM;
      for (int64_t i = 0; st == EFFML_OK && i < np; ++i) s[m++] = (scored){sc[i], pre[i]};
      if (st == EFFML_OK) qsort(s, (size_t)m, sizeof(scored), cmp_desc);
      effml__free(ctx, xp);
    }
    effml__free(ctx, idx);
    effml__free(ctx, mark);
  }
  effml__free(ctx, xc);
  effml__free(ctx, sc);
  if (st != EFFML_OK) {
    effml__free(ctx, s);
    return st;
  }
  *sel = s;
  *n_sel = m;
  return EFFML_OK;
}

effml_status effml__nearmiss_plan(effml_context *ctx, const effml__resample_in *in,
                                  effml__plan *p) {
  const effml__classes *c = in->c;
  const effml_sampler_resample_options *o = in->o;
  if (o->version < 1 || o->version > 3)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "NearMiss version=%d must be 1, 2 or 3",
                      (int)o->version);
  int64_t mino = 0;
  for (int64_t k = 1; k < c->n_classes; ++k)
    if (c->counts[k] < c->counts[mino]) mino = k;
  const int64_t n_min = c->counts[mino], k = o->n_neighbors;
  if (k < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "NearMiss: n_neighbors=%lld must be >= 1",
                      (long long)k);
  /* Versions 1 and 3 query the k nearest minority rows; version 2 scores with all
   * of them (the min(k, n_min) farthest), so any k >= 1 is valid there. */
  if (o->version != 2 && k > n_min)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "NearMiss-%d: n_neighbors=%lld must be in [1, %lld] (the minority class %lld "
                      "has %lld samples)",
                      (int)o->version, (long long)k, (long long)n_min, (long long)c->labels[mino],
                      (long long)n_min);
  if (o->version == 3 && o->n_neighbors_ver3 < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "NearMiss-3: n_neighbors_ver3=%lld must be >= 1",
                      (long long)o->n_neighbors_ver3);
  double *xmin = effml__gather_rows(ctx, in->x, in->d, c->rows + c->start[mino], n_min);
  if (!xmin) return EFFML_E_NOMEM;
  effml_status st = effml__plan_reserve(ctx, p, in->n);
  for (int64_t cl = 0; st == EFFML_OK && cl < c->n_classes; ++cl) {
    const int64_t *rows = c->rows + c->start[cl];
    if (in->values[cl] < 0) {
      for (int64_t i = 0; i < c->counts[cl]; ++i) effml__plan_push(p, rows[i], -1, 0.0);
      continue;
    }
    scored *s = NULL;
    int64_t m = 0;
    st = nearmiss_class(ctx, in, cl, xmin, n_min, &s, &m);
    if (st != EFFML_OK) break;
    int64_t keep = in->values[cl] < m ? in->values[cl] : m;
    for (int64_t i = 0; i < keep; ++i) effml__plan_push(p, rows[s[i].i], -1, 0.0);
    effml__free(ctx, s);
  }
  effml__free(ctx, xmin);
  return st;
}
