/* Exact k-nearest-neighbour search by register tiles.
 *
 * The ranking key of reference j for query i is |r_j|^2 - 2 q_i.r_j (|q_i|^2
 * is constant per query).  Each query keeps its K = k + slack best
 * candidates in a small sorted array; the candidates are then re-ranked with
 * exactly computed squared distances (sum of squared differences), so exact
 * duplicates are at distance 0 and ties go to the smaller index -- the
 * expansion alone is not exact enough for that.  The keys come from a fused
 * register tile: each block of references is packed into 16-wide panels,
 * feature-major; 4 queries x 16 (AVX-512), 8 (AVX2) or 4 (portable)
 * references of dot products are accumulated over the features (FMA on
 * AVX-512 and AVX2, the same keys on both; a product then an add in the
 * portable build), turned into keys and compared with each query's current
 * K-th key; no product tile is written, and no BLAS runs inside the workers
 * (OpenBLAS's own threads would compete with them).  The norms |r|^2 are
 * summed while a block is packed (per worker, not an array over all
 * references).  Keys that differ in
 * rounding only give the same answers after the exact re-rank.  Memory: per
 * worker one block of panels (at most 64 KiB) and its norms plus the
 * candidate lists;
 * never an n x n matrix.
 * Threads: query blocks are split over the context's workers; the result
 * does not depend on the split.  k has no limit beyond the reference rows;
 * each candidate insertion costs O(k), so a very large k is slow, not wrong. */
#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "sampler_internal.h"

#define KNN_SLACK 4
#define KNN_NR 16 /* references per panel (two 8-lane vectors) */
/* Doubles of packed references per worker (64 KiB): a block of panels stays
 * in L2 while 256 queries scan it (4x larger blocks measured no faster). */
#define KNN_PANEL 8192

typedef struct {
  const double *ref, *q;
  int64_t n_ref, n_q, d, k, K, bq;
  const int64_t *self_index;
  int64_t *idx;
  double *dist2;
  double *cand_v;    /* [workers][bq * K] */
  int64_t *cand_i;   /* [workers][bq * K] */
  double *rr_v;      /* [workers][K]: exact re-rank */
  int64_t *rr_i;     /* [workers][K] */
  int64_t base;      /* first block of the current round */
  int64_t rblock;    /* references per block */
  int fused;         /* 2 the AVX-512 scan, 1 the AVX2 scan, 0 the portable scan */
  double *pan;       /* [workers][rblock / 16][d][16] packed reference block */
  double *norms;     /* [workers][rblock]: |r|^2 of the packed block, +inf in the padding */
} knn_job;

static double sqdist(const double *a, const double *b, int64_t d) {
  double s = 0;
  for (int64_t j = 0; j < d; ++j) {
    double t = a[j] - b[j];
    s += t * t;
  }
  return s;
}

/* Insert (v, j) into the ascending list of K entries (last entry is the worst). */
static inline void cand_insert(double *cv, int64_t *ci, int64_t K, double v, int64_t j) {
  int64_t p = K - 1;
  while (p > 0 && (cv[p - 1] > v || (cv[p - 1] == v && ci[p - 1] > j))) {
    cv[p] = cv[p - 1];
    ci[p] = ci[p - 1];
    --p;
  }
  cv[p] = v;
  ci[p] = j;
}

#if defined(__x86_64__)
/* Candidates of queries q0 .. q0 + nq against references r0 .. r0 + nr (r0 a
 * multiple of KNN_NR): 4 queries x 16 references per register tile. */
__attribute__((target("avx512f"))) static void knn_scan_avx512(const knn_job *J, const double *pan, const double *rn,
                                                               int64_t q0, int64_t nq, int64_t r0,
                                                               int64_t nr, double *cvs,
                                                               int64_t *cis) {
  const int64_t d = J->d, K = J->K, rend = r0 + nr;
  const __m512d m2 = _mm512_set1_pd(-2.0);
  for (int64_t i0 = 0; i0 < nq; i0 += 4) {
    const int64_t mr = nq - i0 < 4 ? nq - i0 : 4;
    const double *qr[4];
    int64_t self[4];
    for (int64_t r = 0; r < 4; ++r) {
      const int64_t i = q0 + i0 + (r < mr ? r : 0);
      qr[r] = J->q + i * d;
      self[r] = J->self_index ? J->self_index[i] : -1;
    }
    for (int64_t j0 = r0; j0 < rend; j0 += KNN_NR) {
      const double *p = pan + ((j0 - r0) / KNN_NR) * d * KNN_NR;
      __m512d a00 = _mm512_setzero_pd(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00,
              a30 = a00, a31 = a00;
      for (int64_t t = 0; t < d; ++t) {
        const __m512d p0 = _mm512_loadu_pd(p + t * KNN_NR), p1 = _mm512_loadu_pd(p + t * KNN_NR + 8);
        __m512d b = _mm512_set1_pd(qr[0][t]);
        a00 = _mm512_fmadd_pd(b, p0, a00);
        a01 = _mm512_fmadd_pd(b, p1, a01);
        b = _mm512_set1_pd(qr[1][t]);
        a10 = _mm512_fmadd_pd(b, p0, a10);
        a11 = _mm512_fmadd_pd(b, p1, a11);
        b = _mm512_set1_pd(qr[2][t]);
        a20 = _mm512_fmadd_pd(b, p0, a20);
        a21 = _mm512_fmadd_pd(b, p1, a21);
        b = _mm512_set1_pd(qr[3][t]);
        a30 = _mm512_fmadd_pd(b, p0, a30);
        a31 = _mm512_fmadd_pd(b, p1, a31);
      }
      const __m512d n0 = _mm512_loadu_pd(rn + (j0 - r0)), n1 = _mm512_loadu_pd(rn + (j0 - r0) + 8);
      __m512d acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
      for (int64_t r = 0; r < mr; ++r) {
        double *cv = cvs + (i0 + r) * K;
        int64_t *ci = cis + (i0 + r) * K;
        const __m512d k0 = _mm512_fmadd_pd(m2, acc[r][0], n0), k1 = _mm512_fmadd_pd(m2, acc[r][1], n1);
        const __m512d w = _mm512_set1_pd(cv[K - 1]);
        unsigned mask = (unsigned)_mm512_cmp_pd_mask(k0, w, _CMP_LT_OQ) |
                        ((unsigned)_mm512_cmp_pd_mask(k1, w, _CMP_LT_OQ) << 8);
        if (!mask) continue;
        double kk[KNN_NR];
        _mm512_storeu_pd(kk, k0);
        _mm512_storeu_pd(kk + 8, k1);
        while (mask) {
          const int b = __builtin_ctz(mask);
          mask &= mask - 1;
          const int64_t j = j0 + b;
          if (j != self[r] && kk[b] < cv[K - 1]) cand_insert(cv, ci, K, kk[b], j);
        }
      }
    }
  }
}
#endif

#if defined(__x86_64__)
/* The same scan on AVX2 + FMA: 4 queries x 8 references per register tile
 * (each 16-wide panel in two halves); the same keys bit for bit (one FMA per
 * feature in order), so the same candidates. */
__attribute__((target("avx2,fma"))) static void knn_scan_avx2(const knn_job *J, const double *pan, const double *rn,
                                                              int64_t q0, int64_t nq, int64_t r0,
                                                              int64_t nr, double *cvs,
                                                              int64_t *cis) {
  const int64_t d = J->d, K = J->K, rend = r0 + nr;
  const __m256d m2 = _mm256_set1_pd(-2.0);
  for (int64_t i0 = 0; i0 < nq; i0 += 4) {
    const int64_t mr = nq - i0 < 4 ? nq - i0 : 4;
    const double *qr[4];
    int64_t self[4];
    for (int64_t r = 0; r < 4; ++r) {
      const int64_t i = q0 + i0 + (r < mr ? r : 0);
      qr[r] = J->q + i * d;
      self[r] = J->self_index ? J->self_index[i] : -1;
    }
    for (int64_t j0 = r0; j0 < rend; j0 += KNN_NR) {
      for (int h = 0; h < 2; ++h) {
        const double *p = pan + ((j0 - r0) / KNN_NR) * d * KNN_NR + h * 8;
        __m256d a00 = _mm256_setzero_pd(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00,
                a30 = a00, a31 = a00;
        for (int64_t t = 0; t < d; ++t) {
          const __m256d p0 = _mm256_loadu_pd(p + t * KNN_NR), p1 = _mm256_loadu_pd(p + t * KNN_NR + 4);
          __m256d b = _mm256_broadcast_sd(qr[0] + t);
          a00 = _mm256_fmadd_pd(b, p0, a00);
          a01 = _mm256_fmadd_pd(b, p1, a01);
          b = _mm256_broadcast_sd(qr[1] + t);
          a10 = _mm256_fmadd_pd(b, p0, a10);
          a11 = _mm256_fmadd_pd(b, p1, a11);
          b = _mm256_broadcast_sd(qr[2] + t);
          a20 = _mm256_fmadd_pd(b, p0, a20);
          a21 = _mm256_fmadd_pd(b, p1, a21);
          b = _mm256_broadcast_sd(qr[3] + t);
          a30 = _mm256_fmadd_pd(b, p0, a30);
          a31 = _mm256_fmadd_pd(b, p1, a31);
        }
        const int64_t jh = j0 + h * 8;
        const __m256d n0 = _mm256_loadu_pd(rn + (jh - r0)), n1 = _mm256_loadu_pd(rn + (jh - r0) + 4);
        __m256d acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
        for (int64_t r = 0; r < mr; ++r) {
          double *cv = cvs + (i0 + r) * K;
          int64_t *ci = cis + (i0 + r) * K;
          const __m256d k0 = _mm256_fmadd_pd(m2, acc[r][0], n0), k1 = _mm256_fmadd_pd(m2, acc[r][1], n1);
          const __m256d w = _mm256_set1_pd(cv[K - 1]);
          unsigned mask = (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(k0, w, _CMP_LT_OQ)) |
                          ((unsigned)_mm256_movemask_pd(_mm256_cmp_pd(k1, w, _CMP_LT_OQ)) << 4);
          if (!mask) continue;
          double kk[8];
          _mm256_storeu_pd(kk, k0);
          _mm256_storeu_pd(kk + 4, k1);
          while (mask) {
            const int b = __builtin_ctz(mask);
            mask &= mask - 1;
            const int64_t j = jh + b;
            if (j != self[r] && kk[b] < cv[K - 1]) cand_insert(cv, ci, K, kk[b], j);
          }
        }
      }
    }
  }
}
#endif

/* The same scan in portable C (vector extensions of two lanes, so that
 * every accumulator stays in a register even on SSE2; no FMA): 4 queries x 4
 * references per register tile (each 16-wide panel in four quarters), the
 * keys |r|^2 - 2 q.r with the dot product rounded after each product; they
 * differ from the FMA keys in rounding only, and the exact re-rank makes
 * the answers the same.  No BLAS call inside the workers: OpenBLAS would
 * start (and spin) its own threads beside them. */
typedef double knn_v2 __attribute__((vector_size(16)));

static void knn_scan_portable(const knn_job *J, const double *pan, const double *rn, int64_t q0,
                              int64_t nq,
                              int64_t r0, int64_t nr, double *cvs, int64_t *cis) {
  const int64_t d = J->d, K = J->K, rend = r0 + nr;
  for (int64_t i0 = 0; i0 < nq; i0 += 4) {
    const int64_t mr = nq - i0 < 4 ? nq - i0 : 4;
    const double *qr[4];
    int64_t self[4];
    for (int64_t r = 0; r < 4; ++r) {
      const int64_t i = q0 + i0 + (r < mr ? r : 0);
      qr[r] = J->q + i * d;
      self[r] = J->self_index ? J->self_index[i] : -1;
    }
    for (int64_t j0 = r0; j0 < rend; j0 += KNN_NR) {
      for (int h = 0; h < 4; ++h) {
        const int64_t jh = j0 + h * 4;
        if (jh >= rend) break;
        const double *p = pan + ((j0 - r0) / KNN_NR) * d * KNN_NR + h * 4;
        knn_v2 a00 = {0, 0}, a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00,
               a31 = a00;
        for (int64_t t = 0; t < d; ++t) {
          knn_v2 p0, p1;
          memcpy(&p0, p + t * KNN_NR, sizeof p0);
          memcpy(&p1, p + t * KNN_NR + 2, sizeof p1);
          knn_v2 b = {qr[0][t], qr[0][t]};
          a00 += b * p0;
          a01 += b * p1;
          b = (knn_v2){qr[1][t], qr[1][t]};
          a10 += b * p0;
          a11 += b * p1;
          b = (knn_v2){qr[2][t], qr[2][t]};
          a20 += b * p0;
          a21 += b * p1;
          b = (knn_v2){qr[3][t], qr[3][t]};
          a30 += b * p0;
          a31 += b * p1;
        }
        const knn_v2 acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
        for (int64_t r = 0; r < mr; ++r) {
          double *cv = cvs + (i0 + r) * K;
          int64_t *ci = cis + (i0 + r) * K;
          double kk[4];
          for (int u = 0; u < 4; ++u) kk[u] = rn[jh - r0 + u] - 2.0 * acc[r][u >> 1][u & 1];
          for (int u = 0; u < 4; ++u) {
            const int64_t j = jh + u;
            if (kk[u] < cv[K - 1] && j != self[r]) cand_insert(cv, ci, K, kk[u], j);
          }
        }
      }
    }
  }
}

static void knn_blocks(void *arg, int64_t b0, int64_t b1, int32_t worker) {
  knn_job *J = (knn_job *)arg;
  const int64_t K = J->K, d = J->d, bq = J->bq;
  double *cvs = J->cand_v + (size_t)worker * (size_t)(bq * K);
  int64_t *cis = J->cand_i + (size_t)worker * (size_t)(bq * K);
  for (int64_t b = J->base + b0; b < J->base + b1; ++b) {
    int64_t q0 = b * bq, nq = J->n_q - q0 < bq ? J->n_q - q0 : bq;
    for (int64_t t = 0; t < nq * K; ++t) {
      cvs[t] = INFINITY;
      cis[t] = INT64_MAX;
    }
    for (int64_t r0 = 0; r0 < J->n_ref; r0 += J->rblock) {
      int64_t nr = J->n_ref - r0 < J->rblock ? J->n_ref - r0 : J->rblock;
      /* this block of references in 16-wide panels, feature-major (zero padding, norm +inf) */
      double *pan = J->pan + (size_t)worker * (size_t)(J->rblock * d);
      double *rn = J->norms + (size_t)worker * (size_t)J->rblock;
      const int64_t npad = (nr + KNN_NR - 1) / KNN_NR * KNN_NR;
      for (int64_t j = 0; j < npad; ++j) {
        double *pj = pan + (j / KNN_NR) * d * KNN_NR + j % KNN_NR;
        if (j >= nr) { /* padding: never a candidate */
          for (int64_t t = 0; t < d; ++t) pj[t * KNN_NR] = 0.0;
          rn[j] = INFINITY;
          continue;
        }
        const double *r = J->ref + (r0 + j) * d;
        double sn = 0;
        for (int64_t t = 0; t < d; ++t) {
          pj[t * KNN_NR] = r[t];
          sn += r[t] * r[t];
        }
        rn[j] = sn;
      }
#if defined(__x86_64__)
      if (J->fused == 2)
        knn_scan_avx512(J, pan, rn, q0, nq, r0, nr, cvs, cis);
      else if (J->fused == 1)
        knn_scan_avx2(J, pan, rn, q0, nq, r0, nr, cvs, cis);
      else
#endif
        knn_scan_portable(J, pan, rn, q0, nq, r0, nr, cvs, cis);
    }
    /* Re-rank the candidates with exact squared distances. */
    for (int64_t i = 0; i < nq; ++i) {
      double *cv = cvs + i * K;
      int64_t *ci = cis + i * K;
      const double *qi = J->q + (q0 + i) * d;
      double *ev = J->rr_v + (size_t)worker * (size_t)K;
      int64_t *ei = J->rr_i + (size_t)worker * (size_t)K;
      int64_t m = 0;
      for (int64_t t = 0; t < K; ++t) {
        if (ci[t] == INT64_MAX) continue;
        double v = sqdist(qi, J->ref + ci[t] * d, d);
        ev[m] = INFINITY;
        ei[m] = INT64_MAX;
        ++m;
        cand_insert(ev, ei, m, v, ci[t]);
      }
      (void)cv;
      for (int64_t t = 0; t < J->k; ++t) {
        J->idx[(q0 + i) * J->k + t] = ei[t];
        if (J->dist2) J->dist2[(q0 + i) * J->k + t] = ev[t];
      }
    }
  }
}

effml_status effml__knn_f64(effml_context *ctx, const double *ref, int64_t n_ref,
                            const double *q, int64_t n_q, int64_t d, int64_t k,
                            const int64_t *self_index, int64_t block_rows, int64_t *idx,
                            double *dist2) {
  int64_t avail = n_ref - (self_index ? 1 : 0);
  if (k < 1 || k > avail)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "k=%lld must be in [1, %lld] (the reference rows available as neighbours)",
                      (long long)k, (long long)avail);
  if (n_q == 0) return EFFML_OK;
  int64_t K = k + KNN_SLACK;
  if (K > avail) K = avail;
  int64_t bq = block_rows > 0 ? block_rows : EFFML__KNN_QBLOCK;
  if (bq > n_q) bq = n_q;
  int64_t nblocks = (n_q + bq - 1) / bq;
  int64_t workers = effml__ctx_threads(ctx);
  if (workers > 64) workers = 64;
  if (workers > nblocks) workers = nblocks;
  if (workers < 1) workers = 1;

  knn_job J;
  memset(&J, 0, sizeof J);
#if defined(__x86_64__)
  const int32_t isa = effml__ctx_isa(ctx);
  const int fused = isa >= EFFML_CORE_ISA_AVX512 ? 2 : isa >= EFFML_CORE_ISA_AVX2 ? 1 : 0;
#else
  const int fused = 0;
#endif
  size_t cand_n = (size_t)workers * (size_t)(bq * K);
  /* a block's panels stay within KNN_PANEL doubles (512 references up to d = 16) */
  J.rblock = KNN_PANEL / (d > 0 ? d : 1) / KNN_NR * KNN_NR;
  if (J.rblock < KNN_NR) J.rblock = KNN_NR;
  if (J.rblock > EFFML__KNN_RBLOCK) J.rblock = EFFML__KNN_RBLOCK;
  double *pan = (double *)effml__malloc(ctx, (size_t)(workers * J.rblock * d) * sizeof(double) + 1);
  J.norms = (double *)effml__malloc(ctx, (size_t)(workers * J.rblock) * sizeof(double));
  J.cand_v = (double *)effml__malloc(ctx, cand_n * sizeof(double));
  J.cand_i = (int64_t *)effml__malloc(ctx, cand_n * sizeof(int64_t));
  J.rr_v = (double *)effml__malloc(ctx, (size_t)(workers * K) * sizeof(double));
  J.rr_i = (int64_t *)effml__malloc(ctx, (size_t)(workers * K) * sizeof(int64_t));
  if (!pan || !J.norms || !J.cand_v || !J.cand_i || !J.rr_v || !J.rr_i) {
    effml__free(ctx, pan);
    effml__free(ctx, J.norms);
    effml__free(ctx, J.cand_v);
    effml__free(ctx, J.cand_i);
    effml__free(ctx, J.rr_v);
    effml__free(ctx, J.rr_i);
    return effml__err(ctx, EFFML_E_NOMEM, "kNN: out of memory for %lld-row blocks",
                      (long long)bq);
  }
  J.fused = fused;
  J.pan = pan;
  J.ref = ref;
  J.q = q;
  J.n_ref = n_ref;
  J.n_q = n_q;
  J.d = d;
  J.k = k;
  J.K = K;
  J.bq = bq;
  J.self_index = self_index;
  J.idx = idx;
  J.dist2 = dist2;
  /* Rounds of a few blocks per worker, with a progress report (and a chance to
   * cancel) between rounds; blocks are independent, so any split gives the same bytes. */
  const int64_t per_round = workers * EFFML__KNN_BLOCKS_PER_ROUND;
  effml_status st = EFFML_OK;
  for (J.base = 0; st == EFFML_OK && J.base < nblocks; J.base += per_round) {
    st = effml__progress(ctx, J.base * bq, n_q, "query rows");
    if (st != EFFML_OK) break;
    const int64_t cnt = nblocks - J.base < per_round ? nblocks - J.base : per_round;
    st = effml__parallel_for(ctx, cnt, (cnt + workers - 1) / workers, knn_blocks, &J);
  }
  effml__free(ctx, pan);
  effml__free(ctx, J.norms);
  effml__free(ctx, J.cand_v);
  effml__free(ctx, J.cand_i);
  effml__free(ctx, J.rr_v);
  effml__free(ctx, J.rr_i);
  return st;
}

/* Inputs of a public kNN call, validated: f64 views of the data (owned copies
 * freed by knn_inputs_free), sizes, and the self index when x_query is NULL. */
typedef struct knn_inputs {
  const double *ref, *q;
  double *ref_own, *q_own;
  int64_t *self;
  int64_t n_ref, n_q, d;
} knn_inputs;

static void knn_inputs_free(effml_context *ctx, knn_inputs *in) {
  effml__free(ctx, in->self);
  effml__free(ctx, in->ref_own);
  effml__free(ctx, in->q_own);
}

static effml_status knn_inputs_read(effml_context *ctx, const effml_tensor *x_ref,
                                    const effml_tensor *x_query, int64_t k, knn_inputs *in) {
  memset(in, 0, sizeof *in);
  EFFML__TRY(effml__sampler_x_f64(ctx, x_ref, "x_ref", 0, &in->ref, &in->ref_own));
  in->n_ref = x_ref->shape[0];
  in->d = x_ref->shape[1];
  in->n_q = in->n_ref;
  in->q = in->ref;
  effml_status st = EFFML_OK;
  if (x_query) {
    st = effml__sampler_x_f64(ctx, x_query, "x_query", 0, &in->q, &in->q_own);
    if (st == EFFML_OK && x_query->dtype != x_ref->dtype)
      st = effml__err(ctx, EFFML_E_DTYPE, "x_query dtype %s differs from x_ref dtype %s",
                      effml_tensor_dtype_name(x_query->dtype), effml_tensor_dtype_name(x_ref->dtype));
    if (st == EFFML_OK && x_query->shape[1] != in->d)
      st = effml__err(ctx, EFFML_E_SHAPE, "x_query has %lld features, x_ref has %lld",
                      (long long)x_query->shape[1], (long long)in->d);
    if (st == EFFML_OK) in->n_q = x_query->shape[0];
  }
  int64_t avail = in->n_ref - (x_query ? 0 : 1);
  if (st == EFFML_OK && (k < 1 || k > avail))
    st = effml__err(ctx, EFFML_E_INVALID_ARG,
                    "k=%lld must be in [1, %lld]: x_ref has %lld rows%s", (long long)k,
                    (long long)avail, (long long)in->n_ref,
                    x_query ? "" : " and a point is not its own neighbour");
  if (st == EFFML_OK && !x_query) {
    in->self = (int64_t *)effml__alloc_or_err(ctx, (size_t)in->n_q * sizeof(int64_t),
                                              "kNN self index");
    if (!in->self) st = EFFML_E_NOMEM;
    for (int64_t i = 0; in->self && i < in->n_q; ++i) in->self[i] = i;
  }
  if (st != EFFML_OK) knn_inputs_free(ctx, in);
  return st;
}

/* Neighbours into idx [n_q, k] and, when dist is not NULL, Euclidean distances. */
static effml_status knn_compute(effml_context *ctx, const knn_inputs *in, int64_t k, int64_t *idx,
                                double *dist) {
  EFFML__TRY(effml__knn_f64(ctx, in->ref, in->n_ref, in->q, in->n_q, in->d, k, in->self, 0, idx,
                            dist));
  if (dist)
    for (int64_t i = 0; i < in->n_q * k; ++i) dist[i] = sqrt(dist[i]);
  return EFFML_OK;
}

effml_status effml_sampler_knn(effml_context *ctx, const effml_tensor *x_ref,
                               const effml_tensor *x_query, int64_t k, effml_tensor **indices,
                               effml_tensor **distances) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, indices);
  knn_inputs in;
  EFFML__TRY(knn_inputs_read(ctx, x_ref, x_query, k, &in));
  effml_tensor *ti = NULL, *td = NULL;
  int64_t shape[2] = {in.n_q, k};
  /* Every element of both outputs is written: no zeroing pass. */
  effml_status st = effml__tensor_create_uninit(ctx, EFFML_I64, 2, shape, &ti);
  if (st == EFFML_OK && distances) st = effml__tensor_create_uninit(ctx, EFFML_F64, 2, shape, &td);
  if (st == EFFML_OK)
    st = knn_compute(ctx, &in, k, (int64_t *)(void *)ti->data, td ? effml__f64(td) : NULL);
  knn_inputs_free(ctx, &in);
  if (st != EFFML_OK) {
    effml_tensor_free(ti);
    effml_tensor_free(td);
    return st;
  }
  *indices = ti;
  if (distances) *distances = td;
  return EFFML_OK;
}

effml_status effml_sampler_knn_into(effml_context *ctx, const effml_tensor *x_ref,
                                    const effml_tensor *x_query, int64_t k, effml_tensor *indices,
                                    effml_tensor *distances) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  knn_inputs in;
  EFFML__TRY(knn_inputs_read(ctx, x_ref, x_query, k, &in));
  effml_status st = effml__check_tensor(ctx, indices, "indices", EFFML_I64, 2, 1);
  if (st == EFFML_OK) st = effml__check_writable(ctx, indices, "indices");
  if (st == EFFML_OK) st = effml__check_dim(ctx, indices, "indices", 0, in.n_q);
  if (st == EFFML_OK) st = effml__check_dim(ctx, indices, "indices", 1, k);
  if (st == EFFML_OK && distances) {
    st = effml__check_tensor(ctx, distances, "distances", EFFML_F64, 2, 1);
    if (st == EFFML_OK) st = effml__check_writable(ctx, distances, "distances");
    if (st == EFFML_OK) st = effml__check_dim(ctx, distances, "distances", 0, in.n_q);
    if (st == EFFML_OK) st = effml__check_dim(ctx, distances, "distances", 1, k);
  }
  if (st == EFFML_OK)
    st = knn_compute(ctx, &in, k, (int64_t *)(void *)indices->data,
                     distances ? effml__f64(distances) : NULL);
  knn_inputs_free(ctx, &in);
  return st;
}
