/* Exact k-nearest neighbours of every row of a set among the set's own rows
 * (a point is never its own neighbour): the search SMOTE and ADASYN make
 * within a class.
 *
 * Candidates come from one pass over the upper triangle of the set's Gram
 * matrix in f32 (each pair is computed once and offered to both of its rows:
 * half the multiply-adds of a full product), fused with the selection: an
 * 8 x 32 register tile of dot products is turned into ranking keys
 * kappa_ij = |c_j|^2 - 2 c_i.c_j (c = rows minus the set's mean, so the keys
 * keep their f32 precision however far the data sit from the origin) and
 * compared against each row's current K-th key, K = k + 4; almost every pair
 * fails both comparisons and costs nothing more.  No tile ever reaches memory.
 *
 * Exactness.  Each row's K candidates are then re-ranked with squared
 * distances computed exactly as effml__knn_f64 does (f64 sum of squared
 * differences of the original rows; ties to the smaller index), and the
 * result is certified: every row that was not a candidate has an f32 key
 * >= kappa_K, the K-th candidate key, and f32 keys are within delta_i of
 * the exact ones (a rounding-error bound, below), so if the k-th exact
 * distance satisfies D_(k) - |c_i|^2 < kappa_K - delta_i, no other row can be
 * closer or tie.  A row whose certificate fails (near-ties at the k-th
 * neighbour, many exact duplicates) is searched again by brute force in f64.
 * The output is therefore exactly the f64 answer, independent of the thread
 * count and of which kernel (AVX-512 or portable) ran.
 *
 * delta_i: the dot product of two f32 vectors of length d carries an error of
 * at most gamma_d |a||b| (gamma_d = d u / (1 - d u), u = 2^-24), rounding c to
 * f32 adds 3u |c_i||c_j| per product and 3u |c_j|^2 per norm, forming the key
 * one more u; all are bounded by (2d + 16) u (|c_i| + R)^2 with R the largest
 * |c_j|; we take twice that, plus 8 (d + 2) 2^-53 (|c_i| + R)^2 for the f64
 * side (the centering, and the exact distances: differences of given values
 * carry relative errors only, and D_ij <= (|c_i| + R)^2).
 *
 * Threads: the row pairs are split into tasks of equal work (row block b
 * together with row block nb - 1 - b); each worker keeps private candidate
 * lists for every row, merged at the end (the K smallest (key, index) pairs
 * of the union are the K smallest overall). */
#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "sampler_internal.h"

#define WK_SLACK 4
#define WK_MR 8  /* rows per register tile */
#define WK_NR 32 /* columns per register tile (two 16-lane vectors) */

typedef struct {
  int64_t nc, np, d, K, nrb, ntasks;
  int64_t base; /* first task of the current round */
  const float *xf;  /* [np][d] centered rows, f32, zero padded */
  const float *pan; /* [np / 32][d][32] the same, column panels */
  const float *nf;  /* [np] |c_j|^2 in f32; +inf for padding */
  float *cv;        /* [workers][np][K] candidate keys, ascending */
  int32_t *ci;      /* [workers][np][K] candidate rows */
  float *worst;     /* [workers][np] cv[.][K-1] */
  int isa;
} wk_job;

/* Insert (v, j) into the ascending K-list when it beats the last entry. */
static inline void wk_insert(float *cv, int32_t *ci, int64_t K, float v, int32_t j) {
  if (!(v < cv[K - 1] || (v == cv[K - 1] && j < ci[K - 1]))) return;
  int64_t p = K - 1;
  while (p > 0 && (cv[p - 1] > v || (cv[p - 1] == v && ci[p - 1] > j))) {
    cv[p] = cv[p - 1];
    ci[p] = ci[p - 1];
    --p;
  }
  cv[p] = v;
  ci[p] = j;
}

/* One 8 x 32 tile: rows i0.., columns j0..; only pairs j > i count. */
static void wk_tile_scalar(const wk_job *J, int64_t i0, int64_t j0, float *cv, int32_t *ci,
                           float *worst) {
  const int64_t d = J->d, K = J->K;
  float acc[WK_MR][WK_NR];
  memset(acc, 0, sizeof acc);
  const float *p = J->pan + (j0 / WK_NR) * d * WK_NR;
  for (int64_t t = 0; t < d; ++t)
    for (int r = 0; r < WK_MR; ++r) {
      float a = J->xf[(i0 + r) * d + t];
      for (int c = 0; c < WK_NR; ++c) acc[r][c] += a * p[t * WK_NR + c];
    }
  for (int r = 0; r < WK_MR; ++r) {
    int64_t i = i0 + r;
    for (int c = 0; c < WK_NR; ++c) {
      int64_t j = j0 + c;
      if (j <= i || j >= J->nc || i >= J->nc) continue;
      float kr = J->nf[j] - 2.0f * acc[r][c], kc = J->nf[i] - 2.0f * acc[r][c];
      if (kr < worst[i]) {
        wk_insert(cv + i * K, ci + i * K, K, kr, (int32_t)j);
        worst[i] = cv[i * K + K - 1];
      }
      if (kc < worst[j]) {
        wk_insert(cv + j * K, ci + j * K, K, kc, (int32_t)i);
        worst[j] = cv[j * K + K - 1];
      }
    }
  }
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void wk_tile_avx512(const wk_job *J, int64_t i0,
                                                              int64_t j0, float *cv, int32_t *ci,
                                                              float *worst) {
  const int64_t d = J->d, K = J->K;
  const float *p = J->pan + (j0 / WK_NR) * d * WK_NR;
  const float *a = J->xf + i0 * d;
  __m512 acc[WK_MR][2];
  for (int r = 0; r < WK_MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t t = 0; t < d; ++t) {
    __m512 p0 = _mm512_loadu_ps(p + t * WK_NR), p1 = _mm512_loadu_ps(p + t * WK_NR + 16);
    for (int r = 0; r < WK_MR; ++r) {
      __m512 b = _mm512_set1_ps(a[r * d + t]);
      acc[r][0] = _mm512_fmadd_ps(b, p0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(b, p1, acc[r][1]);
    }
  }
  const __m512 m2 = _mm512_set1_ps(-2.0f);
  const __m512 nj0 = _mm512_loadu_ps(J->nf + j0), nj1 = _mm512_loadu_ps(J->nf + j0 + 16);
  __m512 wc0 = _mm512_loadu_ps(worst + j0), wc1 = _mm512_loadu_ps(worst + j0 + 16);
  const int diag = j0 <= i0 + WK_MR - 1; /* tile touches the diagonal: keep j > i only */
  for (int r = 0; r < WK_MR; ++r) {
    const int64_t i = i0 + r;
    __m512 kr0 = _mm512_fmadd_ps(m2, acc[r][0], nj0), kr1 = _mm512_fmadd_ps(m2, acc[r][1], nj1);
    __m512 ni = _mm512_set1_ps(J->nf[i]);
    __m512 kc0 = _mm512_fmadd_ps(m2, acc[r][0], ni), kc1 = _mm512_fmadd_ps(m2, acc[r][1], ni);
    __m512 wr = _mm512_set1_ps(worst[i]);
    __mmask16 hr0 = _mm512_cmp_ps_mask(kr0, wr, _CMP_LT_OQ);
    __mmask16 hr1 = _mm512_cmp_ps_mask(kr1, wr, _CMP_LT_OQ);
    __mmask16 hc0 = _mm512_cmp_ps_mask(kc0, wc0, _CMP_LT_OQ);
    __mmask16 hc1 = _mm512_cmp_ps_mask(kc1, wc1, _CMP_LT_OQ);
    uint32_t hr = (uint32_t)hr0 | ((uint32_t)hr1 << 16);
    uint32_t hc = (uint32_t)hc0 | ((uint32_t)hc1 << 16);
    if (diag) {
      int64_t first = i + 1 - j0; /* lanes >= first are j > i */
      uint32_t keep = first <= 0 ? 0xffffffffu : first >= 32 ? 0u : ~((1u << first) - 1u);
      hr &= keep;
      hc &= keep;
    }
    if (!(hr | hc)) continue;
    float kr[WK_NR], kc[WK_NR];
    _mm512_storeu_ps(kr, kr0);
    _mm512_storeu_ps(kr + 16, kr1);
    _mm512_storeu_ps(kc, kc0);
    _mm512_storeu_ps(kc + 16, kc1);
    while (hr) {
      int c = __builtin_ctz(hr);
      hr &= hr - 1;
      wk_insert(cv + i * K, ci + i * K, K, kr[c], (int32_t)(j0 + c));
    }
    worst[i] = cv[i * K + K - 1];
    if (hc) {
      while (hc) {
        int c = __builtin_ctz(hc);
        hc &= hc - 1;
        int64_t j = j0 + c;
        wk_insert(cv + j * K, ci + j * K, K, kc[c], (int32_t)i);
        worst[j] = cv[j * K + K - 1];
      }
      wc0 = _mm512_loadu_ps(worst + j0);
      wc1 = _mm512_loadu_ps(worst + j0 + 16);
    }
  }
}
#endif

/* Row block b (rows 8b .. 8b+7) against every column panel from its own. */
static void wk_row_block(const wk_job *J, int64_t b, float *cv, int32_t *ci, float *worst) {
  const int64_t i0 = b * WK_MR;
  if (i0 >= J->nc) return;
  for (int64_t j0 = (i0 / WK_NR) * WK_NR; j0 < J->np; j0 += WK_NR) {
#if defined(__x86_64__)
    if (J->isa) {
      wk_tile_avx512(J, i0, j0, cv, ci, worst);
      continue;
    }
#endif
    wk_tile_scalar(J, i0, j0, cv, ci, worst);
  }
}

static void wk_tasks(void *arg, int64_t t0, int64_t t1, int32_t worker) {
  const wk_job *J = (const wk_job *)arg;
  const size_t off = (size_t)worker * (size_t)(J->np * J->K);
  float *cv = J->cv + off, *worst = J->worst + (size_t)worker * (size_t)J->np;
  int32_t *ci = J->ci + off;
  for (int64_t t = J->base + t0; t < J->base + t1; ++t) {
    wk_row_block(J, t, cv, ci, worst);
    if (J->nrb - 1 - t != t) wk_row_block(J, J->nrb - 1 - t, cv, ci, worst);
  }
}

static double sqdist_f64(const double *a, const double *b, int64_t d) {
  double s = 0;
  for (int64_t j = 0; j < d; ++j) {
    double t = a[j] - b[j];
    s += t * t;
  }
  return s;
}

static inline void ins_f64(double *ev, int64_t *ei, int64_t m, double v, int64_t j) {
  if (!(v < ev[m - 1] || (v == ev[m - 1] && j < ei[m - 1]))) return;
  int64_t p = m - 1;
  while (p > 0 && (ev[p - 1] > v || (ev[p - 1] == v && ei[p - 1] > j))) {
    ev[p] = ev[p - 1];
    ei[p] = ei[p - 1];
    --p;
  }
  ev[p] = v;
  ei[p] = j;
}

typedef struct {
  const wk_job *J;
  const double *x;
  const int64_t *rows;
  const double *qn; /* |c_i|^2 (f64) */
  double rmax;
  int64_t k, workers;
  int64_t *nn;
  int64_t fallbacks[64];
} wk_final;

static void wk_finish(void *arg, int64_t q0, int64_t q1, int32_t worker) {
  wk_final *F = (wk_final *)arg;
  const wk_job *J = F->J;
  const int64_t K = J->K, k = F->k, d = J->d, nc = J->nc;
  const double u32 = 0x1p-24, u64 = 0x1p-53;
  for (int64_t i = q0; i < q1; ++i) {
    /* merge the workers' lists: the K smallest (key, index) pairs */
    float mv[64];
    int32_t mi[64];
    for (int64_t t = 0; t < K; ++t) {
      mv[t] = INFINITY;
      mi[t] = INT32_MAX;
    }
    for (int64_t w = 0; w < F->workers; ++w) {
      const float *cv = J->cv + ((size_t)w * (size_t)J->np + (size_t)i) * (size_t)K;
      const int32_t *ci = J->ci + ((size_t)w * (size_t)J->np + (size_t)i) * (size_t)K;
      for (int64_t t = 0; t < K && ci[t] != INT32_MAX; ++t) wk_insert(mv, mi, K, cv[t], ci[t]);
    }
    /* exact re-rank */
    const double *xi = F->x + F->rows[i] * d;
    double ev[64];
    int64_t ei[64];
    int64_t m = 0;
    for (int64_t t = 0; t < K && mi[t] != INT32_MAX; ++t) {
      ev[m] = INFINITY;
      ei[m] = INT64_MAX;
      ++m;
      ins_f64(ev, ei, m, sqdist_f64(xi, F->x + F->rows[mi[t]] * d, d), mi[t]);
    }
    int ok = m >= k;
    if (ok && m == K && K < nc - 1) { /* some rows were not candidates: certify */
      double ci_ = sqrt(F->qn[i]) + F->rmax;
      double delta = (2.0 * (double)(2 * d + 16) * u32 + 8.0 * (double)(d + 2) * u64) * ci_ * ci_;
      delta *= 1.0 + 1e-6;
      ok = ev[k - 1] - F->qn[i] < (double)mv[K - 1] - delta;
    } else if (ok && m < nc - 1) {
      ok = 0; /* fewer candidates than rows without a full list: cannot happen; be safe */
    }
    if (!ok) { /* brute force in f64 */
      F->fallbacks[worker]++;
      m = k;
      for (int64_t t = 0; t < k; ++t) {
        ev[t] = INFINITY;
        ei[t] = INT64_MAX;
      }
      for (int64_t j = 0; j < nc; ++j)
        if (j != i) ins_f64(ev, ei, k, sqdist_f64(xi, F->x + F->rows[j] * d, d), j);
    }
    for (int64_t t = 0; t < k; ++t) F->nn[i * k + t] = ei[t];
  }
}

/* 1: the AVX-512 tile kernel (the context's ISA level allows it), else 0. */
static int wk_isa(const effml_context *ctx) {
#if defined(__x86_64__)
  return effml__ctx_isa(ctx) >= EFFML_CORE_ISA_AVX512 ? 1 : 0;
#else
  (void)ctx;
  return 0;
#endif
}

effml_status effml__knn_within_f64(effml_context *ctx, const double *x, const int64_t *rows,
                                   int64_t nc, int64_t d, int64_t k, int64_t *nn,
                                   int64_t *n_fallback) {
  return effml__knn_within_f64_isa(ctx, x, rows, nc, d, k, nn, n_fallback, -1);
}

effml_status effml__knn_within_f64_isa(effml_context *ctx, const double *x, const int64_t *rows,
                                       int64_t nc, int64_t d, int64_t k, int64_t *nn,
                                       int64_t *n_fallback, int isa) {
  if (k < 1 || k > nc - 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "k=%lld must be in [1, %lld] (set of %lld rows)",
                      (long long)k, (long long)(nc - 1), (long long)nc);
  if (k > 64 - WK_SLACK) {
    /* more neighbours than this search's fixed candidate lists hold: the
     * generic blocked search on the gathered rows (the same answer, by the
     * contract above) */
    double *xs = effml__gather_rows(ctx, x, d, rows, nc);
    int64_t *self = xs ? (int64_t *)effml__alloc_or_err(ctx, (size_t)nc * sizeof(int64_t), "rows") : NULL;
    effml_status st = self ? EFFML_OK : EFFML_E_NOMEM;
    for (int64_t i = 0; self && i < nc; ++i) self[i] = i;
    if (st == EFFML_OK) st = effml__knn_f64(ctx, xs, nc, xs, nc, d, k, self, 0, nn, NULL);
    if (st == EFFML_OK && n_fallback) *n_fallback = 0;
    effml__free(ctx, self);
    effml__free(ctx, xs);
    return st;
  }
  if (nc > INT32_MAX - WK_NR)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "kNN within a set of %lld rows: at most %d",
                      (long long)nc, INT32_MAX - WK_NR);
  int64_t K = k + WK_SLACK;
  if (K > nc - 1) K = nc - 1;
  const int64_t np = (nc + WK_NR - 1) / WK_NR * WK_NR;
  const int64_t nrb = (nc + WK_MR - 1) / WK_MR;
  const int64_t ntasks = (nrb + 1) / 2;
  int64_t workers = effml__ctx_threads(ctx);
  if (workers > 64) workers = 64;
  if (workers > ntasks) workers = ntasks;
  if (workers < 1) workers = 1;

  wk_job J;
  memset(&J, 0, sizeof J);
  J.nc = nc;
  J.np = np;
  J.d = d;
  J.K = K;
  J.nrb = nrb;
  J.ntasks = ntasks;
  J.isa = isa < 0 ? wk_isa(ctx) : (isa > 0 && wk_isa(ctx));
  size_t nd = (size_t)(np * d);
  float *xf = (float *)effml__malloc(ctx, nd * sizeof(float));
  float *pan = (float *)effml__malloc(ctx, nd * sizeof(float));
  float *nf = (float *)effml__malloc(ctx, (size_t)np * sizeof(float));
  double *mu = (double *)effml__calloc(ctx, (size_t)d, sizeof(double));
  double *qn = (double *)effml__malloc(ctx, (size_t)nc * sizeof(double));
  size_t lists = (size_t)workers * (size_t)(np * K);
  J.cv = (float *)effml__malloc(ctx, lists * sizeof(float));
  J.ci = (int32_t *)effml__malloc(ctx, lists * sizeof(int32_t));
  J.worst = (float *)effml__malloc(ctx, (size_t)(workers * np) * sizeof(float));
  effml_status st = EFFML_OK;
  if (!xf || !pan || !nf || !mu || !qn || !J.cv || !J.ci || !J.worst)
    st = effml__err(ctx, EFFML_E_NOMEM, "kNN: out of memory for a set of %lld x %lld",
                    (long long)nc, (long long)d);
  if (st == EFFML_OK) {
    double rmax = 0;
    for (int64_t i = 0; i < nc; ++i) {
      const double *r = x + rows[i] * d;
      for (int64_t t = 0; t < d; ++t) mu[t] += r[t];
    }
    for (int64_t t = 0; t < d; ++t) mu[t] /= (double)nc;
    for (int64_t i = 0; i < np; ++i) {
      double s = 0;
      for (int64_t t = 0; t < d; ++t) {
        float v = 0.0f;
        if (i < nc) {
          const double xv = x[rows[i] * d + t], c = xv - mu[t];
          v = (float)c;
          s += c * c;
        }
        xf[i * d + t] = v;
        pan[(i / WK_NR) * d * WK_NR + t * WK_NR + i % WK_NR] = v;
      }
      if (i < nc) {
        double sf = 0;
        for (int64_t t = 0; t < d; ++t) sf += (double)xf[i * d + t] * (double)xf[i * d + t];
        nf[i] = (float)sf;
        qn[i] = s;
        rmax = fmax(rmax, sqrt(s));
      } else {
        nf[i] = INFINITY;
      }
    }
    for (size_t t = 0; t < lists; ++t) {
      J.cv[t] = INFINITY;
      J.ci[t] = INT32_MAX;
    }
    for (int64_t t = 0; t < workers * np; ++t) J.worst[t] = INFINITY;
    /* padded rows never take candidates */
    for (int64_t w = 0; w < workers; ++w)
      for (int64_t i = nc; i < np; ++i) J.worst[w * np + i] = -INFINITY;
    J.xf = xf;
    J.pan = pan;
    J.nf = nf;
    /* At most 64 rounds of tasks, with a cancellation point before each (the caller's
     * progress is repeated, not advanced: see effml__progress_poll); every task runs
     * once whatever the split, so the lists are the same. */
    int64_t per_round = (ntasks + 63) / 64;
    if (per_round < workers * 8) per_round = workers * 8;
    for (J.base = 0; st == EFFML_OK && J.base < ntasks; J.base += per_round) {
      st = effml__progress_poll(ctx, "output rows");
      if (st != EFFML_OK) break;
      const int64_t cnt = ntasks - J.base < per_round ? ntasks - J.base : per_round;
      st = effml__parallel_for(ctx, cnt, (cnt + workers - 1) / workers, wk_tasks, &J);
    }
    if (st == EFFML_OK) {
      wk_final F;
      memset(&F, 0, sizeof F);
      F.J = &J;
      F.x = x;
      F.rows = rows;
      F.qn = qn;
      F.rmax = rmax;
      F.k = k;
      F.workers = workers;
      F.nn = nn;
      st = effml__parallel_for(ctx, nc, 256, wk_finish, &F);
      int64_t fb = 0;
      for (int w = 0; w < 64; ++w) fb += F.fallbacks[w];
      if (n_fallback) *n_fallback = fb;
    }
  }
  effml__free(ctx, xf);
  effml__free(ctx, pan);
  effml__free(ctx, nf);
  effml__free(ctx, mu);
  effml__free(ctx, qn);
  effml__free(ctx, J.cv);
  effml__free(ctx, J.ci);
  effml__free(ctx, J.worst);
  return st;
}
