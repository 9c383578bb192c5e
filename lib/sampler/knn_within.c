/* Exact k-nearest neighbours of every row of a set among the set's own rows
 * (a point is never its own neighbour): the search SMOTE and ADASYN make
 * within a class.
 *
 * Candidates come from one pass over the upper triangle of the set's Gram
 * matrix (each pair is computed once and offered to both of its rows: half
 * the multiply-adds of a full product), fused with the selection: an 8 x 32
 * register tile of dot products is turned into ranking keys
 * kappa_ij = g_j - 2 c_i.c_j (c = rows minus the set's mean, so the keys keep
 * their precision however far the data sit from the origin; g_j = |c_j|^2,
 * less an error allowance in the integer kernel) and compared against each
 * row's current K-th key, K = k + 4; almost every pair fails both
 * comparisons and costs nothing more.  No tile ever reaches memory.
 *
 * Two kinds of dot product:
 *  - f32: c rounded to f32, f32 multiply-adds (16 per AVX-512 instruction);
 *  - i16: c quantized to integers q = round(c / s) with |q| <= Q,
 *    Q = floor(sqrt((2^31 - 1) / d')) (d' = d rounded up to even), so that
 *    every dot product of two rows is exact in int32; AVX-512 VNNI
 *    (vpdpwssd) does 32 multiply-adds per instruction, twice the f32 rate.
 *    Chosen when the CPU has it, d <= 256 (Q >= 2896) and the data have no
 *    extreme outliers (max |c| <= 16 rms |c|), where its quantization error
 *    is far below typical neighbour-distance gaps; if its certificate still
 *    fails for more than nc/8 + 16 rows, the search is redone in f32.
 *
 * Exactness.  Each row's K candidates are then re-ranked with squared
 * distances computed exactly as effml__knn_f64 does (f64 sum of squared
 * differences of the original rows; ties to the smaller index), and the
 * result is certified: every row that was not a candidate has a key
 * >= kappa_K, the K-th candidate key, and keys are within delta_i below the
 * exact ones (bounds below), so if the k-th exact distance satisfies
 * D_(k) - |c_i|^2 < kappa_K - delta_i, no other row can be closer or tie.  A
 * row whose certificate fails (near-ties at the k-th neighbour, many exact
 * duplicates) is searched again by brute force in f64.  The output is
 * therefore exactly the f64 answer, independent of the thread count and of
 * which kernel (AVX-512, VNNI or portable; f32 or i16) ran.
 *
 * delta_i, f32 keys: the dot product of two f32 vectors of length d carries
 * an error of at most gamma_d |a||b| (gamma_d = d u / (1 - d u), u = 2^-24),
 * rounding c to f32 adds 3u |c_i||c_j| per product and 3u |c_j|^2 per norm,
 * forming the key one more u; all are bounded by (2d + 16) u (|c_i| + R)^2
 * with R the largest |c_j|; we take twice that.
 * delta_i, i16 keys: with c = s q + e, |e_t| <= e = s (1/2 + 2^-30), the
 * integer dot product P_ij = q_i.q_j is exact and
 * |c_i.c_j - s^2 P_ij| <= a_i + a_j, a_i = e |s q_i|_1 + d e^2 / 2; the key
 * is formed in f32 as fl(g_j + fl(-2 s^2) fl(P_ij)) with g_j = |c_j|^2 - 2 a_j
 * (so a_j is inside the key), whose rounding is below 3u G + 10u |s q_i| H
 * (G = max |g_j|, H = max |s q_j|); delta_i = 2 a_i + that.
 * Both: plus 8 (d + 2) 2^-53 (|c_i| + R)^2 for the f64 side (the centering,
 * and the exact distances: differences of given values carry relative errors
 * only, and D_ij <= (|c_i| + R)^2), and a factor 1 + 1e-6.
 *
 * Threads: the row pairs are split into tasks of equal work (row block b
 * together with row block nb - 1 - b); each worker keeps private candidate
 * lists for every row, merged at the end (the K smallest (key, index) pairs
 * of the union are the K smallest overall). */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "sampler_internal.h"

#define WK_SLACK 4
#define WK_MR 8  /* rows per register tile */
#define WK_NR 32 /* columns per register tile (two 16-lane vectors) */

/* kernels (the isa argument of effml__knn_within_f64_isa) */
enum { WK_F32 = 0, WK_F32_AVX512 = 1, WK_I16 = 2, WK_I16_VNNI = 3 };

typedef struct {
  int64_t nc, np, d, K, nrb, ntasks;
  int64_t ls;       /* list stride: 16 when K <= 16 (one AVX-512 register), else K */
  int64_t h;        /* i16: pairs per row, (d + 1) / 2 */
  int64_t base;     /* first task of the current round */
  const float *xf;  /* f32: [np][d] centered rows, zero padded */
  const float *pan; /* f32: [np / 32][d][32] the same, column panels */
  const int32_t *xq;  /* i16: [np][h] rows, pairs of int16 packed in an int32 */
  const int32_t *pq;  /* i16: [np / 32][h][32] the same, column panels */
  const float *nf;  /* [np] g_j (see the top comment); +inf for padding */
  float m;          /* key = nf[j] + m * dot: -2 (f32) or fl(-2 s^2) (i16) */
  float *cv;        /* [workers][np][ls] candidate keys, ascending (first K) */
  int32_t *ci;      /* [workers][np][ls] candidate rows */
  float *worst;     /* [workers][np] cv[.][K-1] */
  int kind;
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

/* Offer the keys of one 8 x 32 tile of dot products (acc, as floats) to the
 * rows' and the columns' lists; only pairs j > i count. */
static void wk_select_scalar(const wk_job *J, int64_t i0, int64_t j0, float acc[WK_MR][WK_NR],
                             float *cv, int32_t *ci, float *worst) {
  const int64_t K = J->K, S = J->ls;
  for (int r = 0; r < WK_MR; ++r) {
    int64_t i = i0 + r;
    for (int c = 0; c < WK_NR; ++c) {
      int64_t j = j0 + c;
      if (j <= i || j >= J->nc || i >= J->nc) continue;
      float kr = J->nf[j] + J->m * acc[r][c], kc = J->nf[i] + J->m * acc[r][c];
      if (kr < worst[i]) {
        wk_insert(cv + i * S, ci + i * S, K, kr, (int32_t)j);
        worst[i] = cv[i * S + K - 1];
      }
      if (kc < worst[j]) {
        wk_insert(cv + j * S, ci + j * S, K, kc, (int32_t)i);
        worst[j] = cv[j * S + K - 1];
      }
    }
  }
}

/* One 8 x 32 tile: rows i0.., columns j0.. (portable kernels). */
static void wk_tile_scalar(const wk_job *J, int64_t i0, int64_t j0, float *cv, int32_t *ci,
                           float *worst) {
  float acc[WK_MR][WK_NR];
  if (J->kind == WK_I16) {
    const int64_t h = J->h;
    const int32_t *p = J->pq + (j0 / WK_NR) * h * WK_NR;
    int32_t ia[WK_MR][WK_NR];
    memset(ia, 0, sizeof ia);
    for (int64_t t = 0; t < h; ++t)
      for (int r = 0; r < WK_MR; ++r) {
        const int32_t a = J->xq[(i0 + r) * h + t];
        const int32_t a0 = (int16_t)(uint16_t)((uint32_t)a & 0xffffu), a1 = (int16_t)(uint16_t)((uint32_t)a >> 16);
        for (int c = 0; c < WK_NR; ++c) {
          const int32_t b = p[t * WK_NR + c];
          const int32_t b0 = (int16_t)(uint16_t)((uint32_t)b & 0xffffu), b1 = (int16_t)(uint16_t)((uint32_t)b >> 16);
          ia[r][c] += a0 * b0 + a1 * b1; /* exact: |sum| <= d Q^2 < 2^31 */
        }
      }
    for (int r = 0; r < WK_MR; ++r)
      for (int c = 0; c < WK_NR; ++c) acc[r][c] = (float)ia[r][c];
  } else {
    const int64_t d = J->d;
    memset(acc, 0, sizeof acc);
    const float *p = J->pan + (j0 / WK_NR) * d * WK_NR;
    for (int64_t t = 0; t < d; ++t)
      for (int r = 0; r < WK_MR; ++r) {
        float a = J->xf[(i0 + r) * d + t];
        for (int c = 0; c < WK_NR; ++c) acc[r][c] += a * p[t * WK_NR + c];
      }
  }
  wk_select_scalar(J, i0, j0, acc, cv, ci, worst);
}

#if defined(__x86_64__)
/* wk_insert for K <= 16 on a list of stride 16 held in registers (keys l,
 * rows li): the entries greater than v move up one place, v takes the first
 * of them (the same list as wk_insert, up to the order of equal keys). */
__attribute__((target("avx512f"), always_inline)) static inline void wk_insert16_reg(
    __m512 *l, __m512i *li, __mmask16 kmask, float v, int32_t j) {
  const __m512 vv = _mm512_set1_ps(v);
  const __mmask16 gt = (__mmask16)(_mm512_cmp_ps_mask(*l, vv, _CMP_GT_OQ) & kmask);
  if (!gt) return;
  const __m512i up = _mm512_set_epi32(14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0);
  const __mmask16 first = (__mmask16)(gt & (0u - (unsigned)gt)), after = (__mmask16)(gt & ~first);
  __m512 nl = _mm512_mask_mov_ps(*l, after, _mm512_permutexvar_ps(up, *l));
  __m512i ni = _mm512_mask_mov_epi32(*li, after, _mm512_permutexvar_epi32(up, *li));
  *l = _mm512_mask_mov_ps(nl, first, vv);
  *li = _mm512_mask_mov_epi32(ni, first, _mm512_set1_epi32(j));
}

/* The same on a list in memory. */
__attribute__((target("avx512f"), always_inline)) static inline void wk_insert16(
    float *cv, int32_t *ci, __mmask16 kmask, float v, int32_t j) {
  __m512 l = _mm512_loadu_ps(cv);
  __m512i li = _mm512_loadu_si512((const void *)ci);
  wk_insert16_reg(&l, &li, kmask, v, j);
  _mm512_storeu_ps(cv, l);
  _mm512_storeu_si512((void *)ci, li);
}

/* The selection of an 8 x 32 tile held in registers (AVX-512). */
__attribute__((target("avx512f"), always_inline)) static inline void wk_select_avx512(
    const wk_job *J, int64_t i0, int64_t j0, __m512 acc[WK_MR][2], float *cv, int32_t *ci,
    float *worst) {
  const int64_t K = J->K, S = J->ls;
  const int v16 = S == 16;
  const __mmask16 kmask = (__mmask16)(K >= 16 ? 0xffffu : (1u << K) - 1u);
  const __m512 m = _mm512_set1_ps(J->m);
  const __m512 nj0 = _mm512_loadu_ps(J->nf + j0), nj1 = _mm512_loadu_ps(J->nf + j0 + 16);
  __m512 wc0 = _mm512_loadu_ps(worst + j0), wc1 = _mm512_loadu_ps(worst + j0 + 16);
  const int diag = j0 <= i0 + WK_MR - 1; /* tile touches the diagonal: keep j > i only */
  for (int r = 0; r < WK_MR; ++r) {
    const int64_t i = i0 + r;
    __m512 kr0 = _mm512_fmadd_ps(m, acc[r][0], nj0), kr1 = _mm512_fmadd_ps(m, acc[r][1], nj1);
    __m512 ni = _mm512_set1_ps(J->nf[i]);
    __m512 kc0 = _mm512_fmadd_ps(m, acc[r][0], ni), kc1 = _mm512_fmadd_ps(m, acc[r][1], ni);
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
    if (v16 && hr) { /* the row's list stays in registers for all its hits */
      __m512 l = _mm512_loadu_ps(cv + i * S);
      __m512i li = _mm512_loadu_si512((const void *)(ci + i * S));
      while (hr) {
        int c = __builtin_ctz(hr);
        hr &= hr - 1;
        wk_insert16_reg(&l, &li, kmask, kr[c], (int32_t)(j0 + c));
      }
      _mm512_storeu_ps(cv + i * S, l);
      _mm512_storeu_si512((void *)(ci + i * S), li);
    }
    while (hr) {
      int c = __builtin_ctz(hr);
      hr &= hr - 1;
      wk_insert(cv + i * S, ci + i * S, K, kr[c], (int32_t)(j0 + c));
    }
    worst[i] = cv[i * S + K - 1];
    if (hc) {
      while (hc) {
        int c = __builtin_ctz(hc);
        hc &= hc - 1;
        int64_t j = j0 + c;
        if (v16)
          wk_insert16(cv + j * S, ci + j * S, kmask, kc[c], (int32_t)i);
        else
          wk_insert(cv + j * S, ci + j * S, K, kc[c], (int32_t)i);
        worst[j] = cv[j * S + K - 1];
      }
      wc0 = _mm512_loadu_ps(worst + j0);
      wc1 = _mm512_loadu_ps(worst + j0 + 16);
    }
  }
}

__attribute__((target("avx512f"))) static void wk_tile_avx512(const wk_job *J, int64_t i0,
                                                              int64_t j0, float *cv, int32_t *ci,
                                                              float *worst) {
  const int64_t d = J->d;
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
  wk_select_avx512(J, i0, j0, acc, cv, ci, worst);
}

/* The i16 tile: vpdpwssd adds the two int16 products of each int32 lane to
 * an exact int32 sum; converted to f32 once at the end. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void wk_tile_vnni(
    const wk_job *J, int64_t i0, int64_t j0, float *cv, int32_t *ci, float *worst) {
  const int64_t h = J->h;
  const int32_t *p = J->pq + (j0 / WK_NR) * h * WK_NR;
  const int32_t *a = J->xq + i0 * h;
  /* sixteen named accumulators and inline asm: with an array, or with GCC
   * 12's intrinsic, the accumulators go through memory around every
   * instruction, which costs more than the multiply-adds */
  __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
          c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
          c61 = c00, c70 = c00, c71 = c00;
#define WK_DP(acc, b, p) __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(b), "v"(p))
#define WK_ROW(r, c0, c1)                          \
  do {                                             \
    const __m512i b = _mm512_set1_epi32(a[(r) * h + t]); \
    WK_DP(c0, b, p0);                              \
    WK_DP(c1, b, p1);                              \
  } while (0)
  for (int64_t t = 0; t < h; ++t) {
    const __m512i p0 = _mm512_loadu_si512((const void *)(p + t * WK_NR));
    const __m512i p1 = _mm512_loadu_si512((const void *)(p + t * WK_NR + 16));
    WK_ROW(0, c00, c01);
    WK_ROW(1, c10, c11);
    WK_ROW(2, c20, c21);
    WK_ROW(3, c30, c31);
    WK_ROW(4, c40, c41);
    WK_ROW(5, c50, c51);
    WK_ROW(6, c60, c61);
    WK_ROW(7, c70, c71);
  }
#undef WK_ROW
#undef WK_DP
  __m512 af[WK_MR][2] = {
      {_mm512_cvtepi32_ps(c00), _mm512_cvtepi32_ps(c01)}, {_mm512_cvtepi32_ps(c10), _mm512_cvtepi32_ps(c11)},
      {_mm512_cvtepi32_ps(c20), _mm512_cvtepi32_ps(c21)}, {_mm512_cvtepi32_ps(c30), _mm512_cvtepi32_ps(c31)},
      {_mm512_cvtepi32_ps(c40), _mm512_cvtepi32_ps(c41)}, {_mm512_cvtepi32_ps(c50), _mm512_cvtepi32_ps(c51)},
      {_mm512_cvtepi32_ps(c60), _mm512_cvtepi32_ps(c61)}, {_mm512_cvtepi32_ps(c70), _mm512_cvtepi32_ps(c71)}};
  wk_select_avx512(J, i0, j0, af, cv, ci, worst);
}
#endif

/* Row block b (rows 8b .. 8b+7) against every column panel from its own. */
static void wk_row_block(const wk_job *J, int64_t b, float *cv, int32_t *ci, float *worst) {
  const int64_t i0 = b * WK_MR;
  if (i0 >= J->nc) return;
  for (int64_t j0 = (i0 / WK_NR) * WK_NR; j0 < J->np; j0 += WK_NR) {
#if defined(__x86_64__)
    if (J->kind == WK_I16_VNNI) {
      wk_tile_vnni(J, i0, j0, cv, ci, worst);
      continue;
    }
    if (J->kind == WK_F32_AVX512) {
      wk_tile_avx512(J, i0, j0, cv, ci, worst);
      continue;
    }
#endif
    wk_tile_scalar(J, i0, j0, cv, ci, worst);
  }
}

/* One round of tasks [next, end): each worker claims the next task until none
 * is left, so a worker the system deschedules holds up no one but itself. */
typedef struct {
  const wk_job *J;
  atomic_llong next;
  int64_t end;
} wk_round;

static void wk_tasks(void *arg, int64_t w0, int64_t w1, int32_t worker) {
  (void)w0;
  (void)w1; /* one worker per call: [worker, worker + 1) */
  wk_round *R = (wk_round *)arg;
  const wk_job *J = R->J;
  const size_t off = (size_t)worker * (size_t)(J->np * J->ls);
  float *cv = J->cv + off, *worst = J->worst + (size_t)worker * (size_t)J->np;
  int32_t *ci = J->ci + off;
  for (;;) {
    const int64_t t = (int64_t)atomic_fetch_add_explicit(&R->next, 1, memory_order_relaxed);
    if (t >= R->end) break;
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
  const double *xc;  /* [nc][d] the set's rows, gathered (f64, as given) */
  const double *qn;  /* |c_i|^2 (f64) */
  const double *dl;  /* [nc] delta_i (see the top comment) */
  int64_t k, workers;
  int64_t *nn;       /* rows whose certificate fails get nn[i * k] = -1 */
  int64_t failed[64];
} wk_final;

/* Merge the workers' lists, re-rank exactly and certify; a row that cannot be
 * certified is marked (nn[i * k] = -1) for the brute-force pass. */
static void wk_finish(void *arg, int64_t q0, int64_t q1, int32_t worker) {
  wk_final *F = (wk_final *)arg;
  const wk_job *J = F->J;
  const int64_t K = J->K, k = F->k, d = J->d, nc = J->nc;
  for (int64_t i = q0; i < q1; ++i) {
    /* merge the workers' lists: the K smallest (key, index) pairs */
    float mv[64];
    int32_t mi[64];
    for (int64_t t = 0; t < K; ++t) {
      mv[t] = INFINITY;
      mi[t] = INT32_MAX;
    }
    for (int64_t w = 0; w < F->workers; ++w) {
      const float *cv = J->cv + ((size_t)w * (size_t)J->np + (size_t)i) * (size_t)J->ls;
      const int32_t *ci = J->ci + ((size_t)w * (size_t)J->np + (size_t)i) * (size_t)J->ls;
      for (int64_t t = 0; t < K && ci[t] != INT32_MAX; ++t) wk_insert(mv, mi, K, cv[t], ci[t]);
    }
    /* exact re-rank */
    const double *xi = F->xc + i * d;
    double ev[64];
    int64_t ei[64];
    int64_t m = 0;
    for (int64_t t = 0; t < K && mi[t] != INT32_MAX; ++t) {
      ev[m] = INFINITY;
      ei[m] = INT64_MAX;
      ++m;
      ins_f64(ev, ei, m, sqdist_f64(xi, F->xc + (int64_t)mi[t] * d, d), mi[t]);
    }
    int ok = m >= k;
    if (ok && m == K && K < nc - 1) /* some rows were not candidates: certify */
      ok = ev[k - 1] - F->qn[i] < (double)mv[K - 1] - F->dl[i];
    else if (ok && m < nc - 1)
      ok = 0; /* fewer candidates than rows without a full list: cannot happen; be safe */
    if (!ok) {
      F->failed[worker]++;
      F->nn[i * k] = -1;
      continue;
    }
    for (int64_t t = 0; t < k; ++t) F->nn[i * k + t] = ei[t];
  }
}

/* Brute force in f64 for the rows marked by wk_finish. */
static void wk_brute(void *arg, int64_t q0, int64_t q1, int32_t worker) {
  (void)worker;
  wk_final *F = (wk_final *)arg;
  const int64_t k = F->k, d = F->J->d, nc = F->J->nc;
  for (int64_t i = q0; i < q1; ++i) {
    if (F->nn[i * k] != -1) continue;
    const double *xi = F->xc + i * d;
    double ev[64];
    int64_t ei[64];
    for (int64_t t = 0; t < k; ++t) {
      ev[t] = INFINITY;
      ei[t] = INT64_MAX;
    }
    for (int64_t j = 0; j < nc; ++j)
      if (j != i) ins_f64(ev, ei, k, sqdist_f64(xi, F->xc + j * d, d), j);
    for (int64_t t = 0; t < k; ++t) F->nn[i * k + t] = ei[t];
  }
}

/* The fastest kernel the context's ISA level and the CPU allow, before
 * looking at the data: WK_I16_VNNI, WK_F32_AVX512 or WK_F32. */
static int wk_best_kind(const effml_context *ctx, int64_t d) {
#if defined(__x86_64__)
  if (effml__ctx_isa(ctx) >= EFFML_CORE_ISA_AVX512) {
    if (d <= 256 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni"))
      return WK_I16_VNNI;
    return WK_F32_AVX512;
  }
#else
  (void)ctx;
  (void)d;
#endif
  return WK_F32;
}

/* The kernel asked for (isa, see sampler_internal.h), or what the CPU offers
 * nearest to it. */
static int wk_kind(const effml_context *ctx, int isa) {
  const int best = wk_best_kind(ctx, 256); /* what the CPU has, whatever d */
  switch (isa) {
    case WK_F32: return WK_F32;
    case WK_F32_AVX512: return best >= WK_F32_AVX512 ? WK_F32_AVX512 : WK_F32;
    case WK_I16: return WK_I16;
    case WK_I16_VNNI: return best == WK_I16_VNNI ? WK_I16_VNNI : WK_I16;
    default: return WK_F32;
  }
}

effml_status effml__knn_within_f64(effml_context *ctx, const double *x, const int64_t *rows,
                                   int64_t nc, int64_t d, int64_t k, int64_t *nn,
                                   int64_t *n_fallback) {
  return effml__knn_within_f64_isa(ctx, x, rows, nc, d, k, nn, n_fallback, -1);
}

/* One search with a given kernel kind; *failed receives the number of rows
 * whose certificate failed; with brute = 0 they are left marked (nn[i*k] =
 * -1) instead of searched. */
static effml_status wk_search(effml_context *ctx, const double *x, const int64_t *rows,
                              int64_t nc, int64_t d, int64_t k, int64_t *nn, int kind,
                              int auto_kind, int64_t *failed, int *kind_used) {
  int64_t K = k + WK_SLACK;
  if (K > nc - 1) K = nc - 1;
  const int64_t np = (nc + WK_NR - 1) / WK_NR * WK_NR;
  const int64_t nrb = (nc + WK_MR - 1) / WK_MR;
  const int64_t ntasks = (nrb + 1) / 2;
  const int64_t h = (d + 1) / 2;
  int64_t workers = effml__ctx_threads(ctx);
  if (workers > 64) workers = 64;
  if (workers > ntasks) workers = ntasks;
  if (workers < 1) workers = 1;

  wk_job J;
  memset(&J, 0, sizeof J);
  J.nc = nc;
  J.np = np;
  J.d = d;
  J.h = h;
  J.K = K;
  J.nrb = nrb;
  J.ntasks = ntasks;
  const size_t nd = (size_t)(np * d), nh = (size_t)(np * h);
  float *xf = (float *)effml__malloc(ctx, nd * sizeof(float) + 1);
  float *pan = (float *)effml__malloc(ctx, nd * sizeof(float) + 1);
  int32_t *xq = (int32_t *)effml__malloc(ctx, nh * sizeof(int32_t) + 1);
  int32_t *pq = (int32_t *)effml__malloc(ctx, nh * sizeof(int32_t) + 1);
  float *nf = (float *)effml__malloc(ctx, (size_t)np * sizeof(float));
  double *mu = (double *)effml__calloc(ctx, (size_t)d, sizeof(double));
  double *qn = (double *)effml__malloc(ctx, (size_t)nc * sizeof(double));
  double *dl = (double *)effml__malloc(ctx, (size_t)nc * sizeof(double));
  double *l2 = (double *)effml__malloc(ctx, (size_t)nc * sizeof(double));
  int16_t *qrow = (int16_t *)effml__malloc(ctx, (size_t)(2 * h) * sizeof(int16_t) + 2);
  /* the rows gathered once: the exact re-rank then reads them from cache, not
   * scattered across x */
  double *xc = (double *)effml__malloc(ctx, (size_t)(nc * d) * sizeof(double) + 1);
  J.ls = K <= 16 ? 16 : K;
  size_t lists = (size_t)workers * (size_t)(np * J.ls);
  J.cv = (float *)effml__malloc(ctx, lists * sizeof(float));
  J.ci = (int32_t *)effml__malloc(ctx, lists * sizeof(int32_t));
  J.worst = (float *)effml__malloc(ctx, (size_t)(workers * np) * sizeof(float));
  effml_status st = EFFML_OK;
  if (!xf || !pan || !xq || !pq || !nf || !mu || !qn || !dl || !l2 || !qrow || !xc || !J.cv || !J.ci ||
      !J.worst)
    st = effml__err(ctx, EFFML_E_NOMEM, "kNN: out of memory for a set of %lld x %lld",
                    (long long)nc, (long long)d);
  const double u32 = 0x1p-24, u64 = 0x1p-53;
  if (st == EFFML_OK) {
    for (int64_t i = 0; i < nc; ++i) {
      const double *r = x + rows[i] * d;
      memcpy(xc + i * d, r, (size_t)d * sizeof(double));
      for (int64_t t = 0; t < d; ++t) mu[t] += r[t];
    }
    for (int64_t t = 0; t < d; ++t) mu[t] /= (double)nc;
    double rmax = 0, cmax = 0, csum2 = 0;
    for (int64_t i = 0; i < nc; ++i) {
      double s = 0;
      for (int64_t t = 0; t < d; ++t) {
        const double c = xc[i * d + t] - mu[t];
        s += c * c;
        cmax = fmax(cmax, fabs(c));
      }
      qn[i] = s;
      csum2 += s;
      rmax = fmax(rmax, sqrt(s));
    }
    /* i16 only where its quantization step is small against the data's
     * spread: no extreme outliers */
    if (auto_kind && kind == WK_I16_VNNI && cmax > 16.0 * sqrt(csum2 / (double)(nc * d)))
      kind = WK_F32_AVX512;
    J.kind = kind;
    if (kind == WK_I16 || kind == WK_I16_VNNI) {
      const int64_t Q = (int64_t)floor(sqrt(2147483647.0 / (double)(2 * h)));
      const int64_t Qc = Q < 32767 ? Q : 32767;
      const double s = cmax > 0 ? cmax / (double)Qc : 1.0;
      const double e = s * (0.5 + 0x1p-30);
      double G = 0, H = 0;
      /* q = round(c / s) to nearest (even) through the 1.5 * 2^52 trick (|c / s| <=
       * Qc < 2^15): no libm call; c * (1 / s) is within 2^-52 relative of c / s,
       * so |c - s q| <= e still holds */
      const double inv = 1.0 / s, magic = 0x1.8p52;
      memset(xq, 0, nh * sizeof(int32_t));
      memset(pq, 0, nh * sizeof(int32_t));
      for (int64_t i = 0; i < nc; ++i) {
        double a1 = 0, hq = 0;
        const double *xi = xc + i * d;
        for (int64_t t = 0; t < d; ++t) {
          double qd = ((xi[t] - mu[t]) * inv + magic) - magic; /* (IEEE: not folded) */
          if (qd > (double)Qc) qd = (double)Qc;
          if (qd < -(double)Qc) qd = -(double)Qc;
          qrow[t] = (int16_t)qd;
          a1 += fabs(qd);
          hq += qd * qd;
        }
        if (d % 2) qrow[d] = 0;
        int32_t *pcol = pq + (i / WK_NR) * h * WK_NR + i % WK_NR;
        for (int64_t t2 = 0; t2 < h; ++t2) {
          /* the pair as vpdpwssd reads it: element 2 t2 in the low half */
          const int32_t w = (int32_t)((uint32_t)(uint16_t)qrow[2 * t2] |
                                      ((uint32_t)(uint16_t)qrow[2 * t2 + 1] << 16));
          xq[i * h + t2] = w;
          pcol[t2 * WK_NR] = w;
        }
        const double ai = e * s * a1 + (double)d * e * e / 2.0; /* e |s q_i|_1 + d e^2 / 2 */
        const double g = qn[i] - 2.0 * ai;
        nf[i] = (float)g;
        dl[i] = 2.0 * ai; /* the i-dependent part; rounding terms below */
        l2[i] = s * sqrt(hq); /* |s q_i| */
        G = fmax(G, fabs(g));
        H = fmax(H, l2[i]);
      }
      for (int64_t i = nc; i < np; ++i) nf[i] = INFINITY;
      J.m = (float)(-2.0 * s * s);
      for (int64_t i = 0; i < nc; ++i) {
        const double ri = sqrt(qn[i]) + rmax;
        dl[i] += 3.0 * u32 * G + 10.0 * u32 * l2[i] * H + 8.0 * (double)(d + 2) * u64 * ri * ri;
        dl[i] *= 1.0 + 1e-6;
      }
    } else {
      for (int64_t i = 0; i < np; ++i) {
        double sf = 0;
        for (int64_t t = 0; t < d; ++t) {
          float v = i < nc ? (float)(xc[i * d + t] - mu[t]) : 0.0f;
          xf[i * d + t] = v;
          pan[(i / WK_NR) * d * WK_NR + t * WK_NR + i % WK_NR] = v;
          sf += (double)v * (double)v;
        }
        nf[i] = i < nc ? (float)sf : INFINITY;
      }
      J.m = -2.0f;
      for (int64_t i = 0; i < nc; ++i) {
        const double ri = sqrt(qn[i]) + rmax;
        dl[i] = (2.0 * (double)(2 * d + 16) * u32 + 8.0 * (double)(d + 2) * u64) * ri * ri;
        dl[i] *= 1.0 + 1e-6;
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
    J.xq = xq;
    J.pq = pq;
    J.nf = nf;
    /* Rounds of tasks with a cancellation point before each (the caller's progress
     * is repeated, not advanced: see effml__progress_poll): at most 64, and none
     * smaller than about 2^27 multiply-adds (a task is two row blocks against
     * about np columns), so a small search does not wait at many barriers.
     * Every task runs once, on whichever worker claims it: each row's merged
     * candidates are the K smallest keys whatever the split. */
    const double task_work = (double)(2 * WK_MR) * (double)np * (double)d;
    int64_t per_round = (ntasks + 63) / 64;
    const int64_t by_work = (int64_t)ceil(134217728.0 / (task_work > 1 ? task_work : 1));
    if (per_round < by_work) per_round = by_work;
    if (per_round < workers * 8) per_round = workers * 8;
    for (J.base = 0; st == EFFML_OK && J.base < ntasks; J.base += per_round) {
      st = effml__progress_poll(ctx, "output rows");
      if (st != EFFML_OK) break;
      wk_round R;
      R.J = &J;
      atomic_init(&R.next, (long long)J.base);
      R.end = ntasks - J.base < per_round ? ntasks : J.base + per_round;
      st = effml__parallel_for(ctx, workers, 1, wk_tasks, &R);
    }
    wk_final F;
    memset(&F, 0, sizeof F);
    F.J = &J;
    F.xc = xc;
    F.qn = qn;
    F.dl = dl;
    F.k = k;
    F.workers = workers;
    F.nn = nn;
    if (st == EFFML_OK) st = effml__parallel_for(ctx, nc, 256, wk_finish, &F);
    int64_t fb = 0;
    for (int w = 0; w < 64; ++w) fb += F.failed[w];
    *failed = fb;
    *kind_used = kind;
    /* many failures of the i16 certificate: the caller redoes it in f32 */
    const int redo = auto_kind && (kind == WK_I16 || kind == WK_I16_VNNI) && fb > nc / 8 + 16;
    if (st == EFFML_OK && fb > 0 && !redo) st = effml__parallel_for(ctx, nc, 64, wk_brute, &F);
  }
  effml__free(ctx, xf);
  effml__free(ctx, pan);
  effml__free(ctx, xq);
  effml__free(ctx, pq);
  effml__free(ctx, nf);
  effml__free(ctx, mu);
  effml__free(ctx, qn);
  effml__free(ctx, dl);
  effml__free(ctx, l2);
  effml__free(ctx, qrow);
  effml__free(ctx, xc);
  effml__free(ctx, J.cv);
  effml__free(ctx, J.ci);
  effml__free(ctx, J.worst);
  return st;
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
  const int auto_kind = isa < 0;
  int kind = auto_kind ? wk_best_kind(ctx, d) : wk_kind(ctx, isa);
  int64_t failed = 0;
  int used = kind;
  effml_status st = wk_search(ctx, x, rows, nc, d, k, nn, kind, auto_kind, &failed, &used);
  if (st == EFFML_OK && auto_kind && (used == WK_I16 || used == WK_I16_VNNI) &&
      failed > nc / 8 + 16)
    st = wk_search(ctx, x, rows, nc, d, k, nn, wk_best_kind(ctx, 100000), 0, &failed, &used);
  if (st == EFFML_OK && n_fallback) *n_fallback = failed;
  return st;
}
