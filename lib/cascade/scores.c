/*
 * Per-row kernel of a cascade stage: softmax in f64, aggregation with the
 * earlier members, confidence score and prediction (cascade.h, EFFML_CASCADE_SCORE_*;
 * reference Guoxoug/window-early-exit `utils/eval_utils.py::uncertainties` and
 * `cascade_results.py` L177-206).
 */
#include <math.h>
#include <string.h>

#include "cascade_internal.h"

/* Logit k of row j as double. */
static inline double logit_at(const effml__stage_block *b, int64_t r, int64_t k) {
  int64_t off = r * b->rs + k * b->cs;
  const double v =
      b->is_f64 ? ((const double *)b->base)[off] : (double)((const float *)b->base)[off];
  return b->cal ? b->cal[k] * v + b->cal[b->K + k] : v;
}

void effml__probs_score(const double *psum, int64_t K, double scale, int32_t score_kind,
                        double *score, int32_t *pred) {
  /* argmax first (lowest index on ties); the score needs at most one more pass */
  int64_t arg = 0;
  for (int64_t k = 1; k < K; ++k)
    if (psum[k] > psum[arg]) arg = k;
  *pred = (int32_t)arg;
  const double top1 = psum[arg] * scale;
  double v = 0.0;
  switch (score_kind) {
    case EFFML_CASCADE_SCORE_ENTROPY:
      for (int64_t k = 0; k < K; ++k) {
        double p = psum[k] * scale;
        if (p > 0.0) v += p * log(p); /* 0 log 0 = 0 */
      }
      break;
    case EFFML_CASCADE_SCORE_MARGIN: {
      double top2 = -INFINITY;
      for (int64_t k = 0; k < K; ++k)
        if (k != arg && psum[k] > top2) top2 = psum[k];
      v = top1 - top2 * scale;
      break;
    }
    case EFFML_CASCADE_SCORE_DOCTOR:
      for (int64_t k = 0; k < K; ++k) {
        double p = psum[k] * scale;
        v += p * p;
      }
      break;
    default: v = top1; break; /* MSP */
  }
  *score = v;
}

static inline void load_row(const effml__stage_block *b, int64_t r, double *zb);

/* The routing score s = sum_{k != arg} exp(z_k - zmax) in f32 (arg: the first maximal logit;
 * MSP = 1 / (1 + s), so s decreases strictly with the MSP and keeps full relative precision
 * where the MSP rounds to 1).  exp(x), x <= 0: x = n ln2 + t with |t| <= ln2/2 (two-part
 * ln2), a degree-6 Taylor polynomial in t (relative error below 1e-6 with the roundings),
 * times 2^n assembled in the exponent bits; x is clamped at -87 (exp < 2^-125).  Four lanes
 * accumulate classes k = l (mod 4) (class arg adds an exact 0); the total is
 * (l0 + l2) + (l1 + l3).  The SSE2 and the portable versions perform the same operations in
 * the same order, so the score is the same number wherever it is computed. */
/* One lane of the same exp (used by the portable kernels). */
static inline float route_exp1(float x) {
  const float v = x < -87.0f ? -87.0f : x;
  const int32_t ni = (int32_t)(v * 1.44269504f - 0.5f);
  const float n = (float)ni;
  const float t = (v - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * t + 1.0f / 120.0f;
  p = p * t + 1.0f / 24.0f;
  p = p * t + 1.0f / 6.0f;
  p = p * t + 0.5f;
  p = p * t + 1.0f;
  p = p * t + 1.0f;
  const uint32_t bits = (uint32_t)(ni + 127) << 23;
  float two_n;
  memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}
#if defined(__SSE2__)
#include <emmintrin.h>
static inline __m128 route_exp4(__m128 x) {
  const __m128 v = _mm_max_ps(x, _mm_set1_ps(-87.0f));
  const __m128i ni = _mm_cvttps_epi32(_mm_sub_ps(_mm_mul_ps(v, _mm_set1_ps(1.44269504f)),
                                                 _mm_set1_ps(0.5f))); /* round half down, v <= 0 */
  const __m128 n = _mm_cvtepi32_ps(ni);
  const __m128 t = _mm_sub_ps(_mm_sub_ps(v, _mm_mul_ps(n, _mm_set1_ps(0.693359375f))),
                              _mm_mul_ps(n, _mm_set1_ps(-2.12194440e-4f)));
  __m128 p = _mm_set1_ps(1.0f / 720.0f);
  p = _mm_add_ps(_mm_mul_ps(p, t), _mm_set1_ps(1.0f / 120.0f));
  p = _mm_add_ps(_mm_mul_ps(p, t), _mm_set1_ps(1.0f / 24.0f));
  p = _mm_add_ps(_mm_mul_ps(p, t), _mm_set1_ps(1.0f / 6.0f));
  p = _mm_add_ps(_mm_mul_ps(p, t), _mm_set1_ps(0.5f));
  p = _mm_add_ps(_mm_mul_ps(p, t), _mm_set1_ps(1.0f));
  p = _mm_add_ps(_mm_mul_ps(p, t), _mm_set1_ps(1.0f));
  return _mm_mul_ps(p, _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(ni, _mm_set1_epi32(127)), 23)));
}
static float route_sum_exp(const float *z, int64_t K, float zmax, int64_t arg) {
  static const uint32_t drop[4][4] = {{0, ~0u, ~0u, ~0u}, {~0u, 0, ~0u, ~0u},
                                      {~0u, ~0u, 0, ~0u}, {~0u, ~0u, ~0u, 0}};
  const __m128 m = _mm_set1_ps(zmax);
  __m128 acc = _mm_setzero_ps();
  int64_t k0 = 0;
  for (; k0 + 4 <= K; k0 += 4) {
    __m128 e = route_exp4(_mm_sub_ps(_mm_loadu_ps(z + k0), m));
    if ((uint64_t)(arg - k0) < 4u) /* the argmax's term is left out: an exact 0 */
      e = _mm_and_ps(e, _mm_castsi128_ps(_mm_loadu_si128((const __m128i *)(const void *)drop[arg - k0])));
    acc = _mm_add_ps(acc, e);
  }
  if (k0 < K) { /* the last 1-3 classes; the other lanes (and the argmax) add exactly 0 */
    float x[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    uint32_t keep[4] = {0, 0, 0, 0};
    for (int64_t k = k0; k < K; ++k) {
      x[k - k0] = z[k] - zmax;
      keep[k - k0] = k == arg ? 0u : 0xFFFFFFFFu;
    }
    __m128 e = route_exp4(_mm_loadu_ps(x));
    e = _mm_and_ps(e, _mm_castsi128_ps(_mm_loadu_si128((const __m128i *)(const void *)keep)));
    acc = _mm_add_ps(acc, e);
  }
  const __m128 h = _mm_add_ps(acc, _mm_movehl_ps(acc, acc)); /* l0 + l2, l1 + l3 */
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}
#else
static float route_sum_exp(const float *z, int64_t K, float zmax, int64_t arg) {
  float lane[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t k = 0; k < K; ++k) lane[k & 3] += k == arg ? 0.0f : route_exp1(z[k] - zmax);
  return (lane[0] + lane[2]) + (lane[1] + lane[3]);
}
#endif

/* The routed prediction.  The exact path predicts argmax_k p_k (lowest index on ties) of
 * its f64 probabilities p_k = fl(e_k * fl(1 / sum)), e_k = exp(fl(z_k - max z)); the router
 * takes the first maximal logit.  The two agree unless another class's p_k ties with the
 * top one: p_k is non-decreasing in z_k, so a lower class with a slightly smaller logit can
 * have the same p_k (logits 2^-62 apart give e_k = 1 = e_max, and the lower index wins).
 * That needs z_max - z_k below 2^-40: then fl(z_k - z_max) <= -2^-40 (rounding is
 * monotone), e_k < 1 - 2^-41 (libm exp is within an ulp), and e_k * (1 / sum) lies more
 * than 2^-41 relatively, many ulps, below 1 * (1 / sum) = p_max, so p_k < p_max.  A row
 * whose top two logits are within ROUTE_NEAR of each other (f32 difference for f32 logits,
 * f64 otherwise; computed differences are monotone in the true one, so a row not flagged
 * is truly 2^-40 apart) takes the exact path's prediction (route_exact_pred). */
#define ROUTE_NEAR 0x1.0p-40
#define ROUTE_NEAR_F 0x1.0p-40f
static int route_near_f32(const float *z, int64_t K, int32_t arg) {
  const float zmax = z[arg];
  for (int64_t k = 0; k < K; ++k)
    if (k != arg && zmax - z[k] <= ROUTE_NEAR_F) return 1;
  return 0;
}
static int route_near_f64(const double *z, int64_t K, int32_t arg) {
  const double zmax = z[arg];
  for (int64_t k = 0; k < K; ++k)
    if (k != arg && zmax - z[k] <= ROUTE_NEAR) return 1;
  return 0;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define EFFML__ROUTE_AVX512 1
/* route_exp1 in 16 lanes, the same operations in the same order. */
__attribute__((target("avx512f"))) static inline __m512 route_exp16(__m512 xin) {
  const __m512 x = _mm512_max_ps(xin, _mm512_set1_ps(-87.0f));
  const __m512i ni = _mm512_cvttps_epi32(
      _mm512_sub_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _mm512_set1_ps(0.5f)));
  const __m512 n = _mm512_cvtepi32_ps(ni);
  const __m512 t = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f))),
                                 _mm512_mul_ps(n, _mm512_set1_ps(-2.12194440e-4f)));
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_add_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_add_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_add_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_add_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(0.5f));
  p = _mm512_add_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(1.0f));
  p = _mm512_add_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(1.0f));
  return _mm512_mul_ps(
      p, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(ni, _mm512_set1_epi32(127)), 23)));
}
/* The routing score of one row of K <= 16 f32 logits in one AVX-512 register, with the same
 * per-lane operations as route_exp4 (separate multiplies and adds: this file is ISO C, so
 * nothing is contracted into FMAs) and the same summation order: the four 4-lane chunks
 * are added in order (chunks past K and the argmax's lane add exact zeros), then
 * (l0 + l2) + (l1 + l3).  So the score is bit-identical to route_score_f32's: the same
 * number, and so the same exits, at every ISA level. */
__attribute__((target("avx512f"))) static double route_score_f32_avx512(const float *z,
                                                                        int64_t K,
                                                                        int32_t *arg) {
  const __mmask16 km = (__mmask16)((1u << K) - 1u);
  const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), km, z);
  const __m512 d = _mm512_maskz_sub_ps(km, v, v); /* 0, or NaN for NaN and inf */
  const float zmax = _mm512_reduce_max_ps(v);
  const __mmask16 at = _mm512_mask_cmp_ps_mask(km, v, _mm512_set1_ps(zmax), _CMP_EQ_OQ);
  *arg = at ? (int32_t)__builtin_ctz((unsigned)at) : 0;
  if (_mm512_mask_cmp_ps_mask(km, d, _mm512_setzero_ps(), _CMP_NEQ_UQ)) return -1.0;
  const __m512 e = _mm512_maskz_mov_ps((__mmask16)(km & ~(1u << *arg)),
                                       route_exp16(_mm512_sub_ps(v, _mm512_set1_ps(zmax))));
  __m128 acc = _mm512_castps512_ps128(e);
  acc = _mm_add_ps(acc, _mm512_extractf32x4_ps(e, 1));
  acc = _mm_add_ps(acc, _mm512_extractf32x4_ps(e, 2));
  acc = _mm_add_ps(acc, _mm512_extractf32x4_ps(e, 3));
  const __m128 h = _mm_add_ps(acc, _mm_movehl_ps(acc, acc)); /* l0 + l2, l1 + l3 */
  return (double)_mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}
/* z[k] (k < K <= 16) = class k of rows j .. j+15, one row per lane: the 16 rows are read
 * with masked contiguous loads (row l of base + (row_index ? row_index[j + l] : j + l) * rs)
 * and transposed in registers.  Contiguous loads keep the hardware prefetcher streaming;
 * gathers do not (measured: 16-row gathers cost 72 us per 10 000 rows warm and 125 us
 * after the caches were flushed, loads and transposes 67 and 70 us). */
__attribute__((target("avx512f"))) static inline void load16_transposed(
    const float *base, const int64_t *row_index, int64_t rs, int64_t K, int64_t j, __m512 z[16]) {
  const __mmask16 km = (__mmask16)((1u << K) - 1u);
  __m512 r[16], t[16];
  for (int l = 0; l < 16; ++l)
    r[l] = _mm512_maskz_loadu_ps(km, base + (row_index ? row_index[j + l] : j + l) * rs);
  for (int l = 0; l < 16; l += 2) { /* 16 x 16 transpose: pairs, quads, 128-bit lanes */
    t[l] = _mm512_unpacklo_ps(r[l], r[l + 1]);
    t[l + 1] = _mm512_unpackhi_ps(r[l], r[l + 1]);
  }
  for (int l = 0; l < 16; l += 4) {
    r[l] = _mm512_shuffle_ps(t[l], t[l + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[l + 1] = _mm512_shuffle_ps(t[l], t[l + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[l + 2] = _mm512_shuffle_ps(t[l + 1], t[l + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[l + 3] = _mm512_shuffle_ps(t[l + 1], t[l + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int l = 0; l < 4; ++l) {
    t[l] = _mm512_shuffle_f32x4(r[l], r[l + 4], 0x88);
    t[l + 4] = _mm512_shuffle_f32x4(r[l + 8], r[l + 12], 0x88);
    t[l + 8] = _mm512_shuffle_f32x4(r[l], r[l + 4], 0xdd);
    t[l + 12] = _mm512_shuffle_f32x4(r[l + 8], r[l + 12], 0xdd);
  }
  for (int l = 0; l < 4; ++l) {
    z[l] = _mm512_shuffle_f32x4(t[l], t[l + 4], 0x88);
    z[l + 8] = _mm512_shuffle_f32x4(t[l], t[l + 4], 0xdd);
    z[l + 4] = _mm512_shuffle_f32x4(t[l + 8], t[l + 12], 0x88);
    z[l + 12] = _mm512_shuffle_f32x4(t[l + 8], t[l + 12], 0xdd);
  }
}

/* The routing scores of 16 rows at once, one row per lane (K <= 16, raw f32 logits with
 * contiguous classes): per lane exactly route_score_f32's operations in its order (first
 * maximum by strict >, the four partial sums of classes k = l (mod 4) from 0, then
 * (s0 + s2) + (s1 + s3), the argmax's term an exact 0), so bit-identical to it.  Rows [begin, end) in
 * blocks of 16; returns the first row not done (the caller finishes the rest row by row).
 * A row with a non-finite logit gets score -1. */
__attribute__((target("avx512f"))) static int64_t route_blocks_avx512(const effml__stage_block *b,
                                                                     int64_t begin, int64_t end) {
  const int64_t K = b->K;
  int64_t j0 = begin;
  for (; j0 + 16 <= end; j0 += 16) {
    __m512 z[16];
    load16_transposed((const float *)b->base, b->row_index, b->rs, K, j0, z);
    __m512 zmax = z[0], top2 = _mm512_set1_ps(-INFINITY), fin = _mm512_sub_ps(z[0], z[0]);
    __m512i arg = _mm512_setzero_si512();
    for (int64_t k = 1; k < K; ++k) {
      fin = _mm512_add_ps(fin, _mm512_sub_ps(z[k], z[k]));
      const __mmask16 gt = _mm512_cmp_ps_mask(z[k], zmax, _CMP_GT_OQ);
      top2 = _mm512_mask_mov_ps(_mm512_max_ps(top2, z[k]), gt, zmax); /* the largest other */
      zmax = _mm512_mask_mov_ps(zmax, gt, z[k]);
      arg = _mm512_mask_mov_epi32(arg, gt, _mm512_set1_epi32((int32_t)k));
    }
    /* four named accumulators (an array indexed by k & 3 would live in memory); the
     * argmax's lanes skip the add (the same sum as adding an exact 0) */
#define ACC(a, k)                                                                      \
  a = _mm512_mask_add_ps(a, _mm512_cmpneq_epi32_mask(arg, _mm512_set1_epi32((int32_t)(k))), a, \
                         route_exp16(_mm512_sub_ps(z[k], zmax)))
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
      ACC(a0, k);
      ACC(a1, k + 1);
      ACC(a2, k + 2);
      ACC(a3, k + 3);
    }
    if (k < K) ACC(a0, k);
    if (k + 1 < K) ACC(a1, k + 1);
    if (k + 2 < K) ACC(a2, k + 2);
#undef ACC
    __m512 sv = _mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3));
    sv = _mm512_mask_mov_ps(sv, _mm512_cmp_ps_mask(fin, _mm512_setzero_ps(), _CMP_NEQ_UQ),
                             _mm512_set1_ps(-1.0f));
    _mm512_storeu_pd(b->score + j0, _mm512_cvtps_pd(_mm512_castps512_ps256(sv)));
    _mm512_storeu_pd(b->score + j0 + 8,
                     _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sv), 1))));
    /* a top pair closer than ROUTE_NEAR: pred -1, the caller computes the exact path's */
    _mm512_storeu_si512((void *)(b->pred + j0),
                        _mm512_mask_mov_epi32(arg,
                                              _mm512_cmp_ps_mask(_mm512_sub_ps(zmax, top2),
                                                                 _mm512_set1_ps(ROUTE_NEAR_F),
                                                                 _CMP_LE_OQ),
                                              _mm512_set1_epi32(-1)));
  }
  return j0;
}
#endif

/* The routing score from f32 logits (exact inputs; argmax on the floats themselves). */
static double route_score_f32(const float *z, int64_t K, int32_t *arg) {
  int64_t a = 0;
  float zmax = z[0];
  float fin = z[0] - z[0]; /* 0 for finite values, NaN for NaN and inf */
  for (int64_t k = 1; k < K; ++k) {
    fin += z[k] - z[k];
    if (z[k] > zmax) {
      zmax = z[k];
      a = k;
    }
  }
  *arg = (int32_t)a;
  if (fin != 0.0f) return -1.0;
  return (double)route_sum_exp(z, K, zmax, a);
}

double effml__route_score(const double *z, int64_t K, int32_t *arg) {
  int64_t a = 0;
  double zmax = z[0];
  int finite = isfinite(z[0]);
  for (int64_t k = 1; k < K; ++k) {
    finite &= isfinite(z[k]);
    if (z[k] > zmax) {
      zmax = z[k];
      a = k;
    }
  }
  *arg = (int32_t)a;
  if (!finite) return -1.0;
  float zf[256];
  int f32 = 1; /* logits that are f32 values (widened): the raw f32 kernel's very number */
  for (int64_t k = 0; k < K; ++k) f32 &= (double)(zf[k] = (float)z[k]) == z[k];
  int32_t unused;
  if (f32) return route_score_f32(zf, K, &unused); /* argmax stays the f64 one */
  /* other values (f64 or calibrated logits): x_k = z_k - zmax in f64, then rounded to f32
   * (relative error 2^-24 + 2^-53 in x, as the f32 subtraction's 2^-24) */
  for (int64_t k = 0; k < K; ++k) zf[k] = (float)(z[k] - zmax);
  return (double)route_sum_exp(zf, K, 0.0f, a);
}

/* ---- the exit decision on the routing score (effml__route_cuts) ----
 *
 * The exact path exits on the MSP computed in f64 (stage_row: p_k = exp(z_k - zmax) * (1 /
 * sum), libm exp, summed in class order; its maximum is fl(1 / fl(sum))).  The router decides
 * the same comparisons from the f32 routing score s~ where that is certain, and computes the
 * exact MSP where it is not.  With s = sum_{k != arg} e^(x_k) (x_k = z_k - zmax, real):
 *  - s~: each term's relative error is at most 1e-6 (the polynomial and its roundings) plus
 *    87 (2^-24 + 2^-53) (the rounded argument, |x| <= 87 above the clamp); terms below the
 *    clamp, subnormal results and their sums are off by at most 2^-120 each; the f32 sum of
 *    K - 1 terms adds (K - 1) 2^-24.  So |s~ - s| <= er s + ea with er = 1e-5 + 2 K 2^-24 and
 *    ea = K 2^-120.
 *  - the f64 MSP: libm exp (< 1 ulp), the rounded argument (at most 2^-53 / e absolutely a
 *    term), the K - 1 additions and the division give MSP64 = (1 + th) / (1 + s) with
 *    |th| <= (3.4 K + 1) 2^-53 < eta = (4 K + 16) 2^-53.
 *  - if s < 2^-54, every term and every partial sum of them is below half an ulp of 1, so
 *    the f64 sum is exactly 1 and MSP64 is exactly 1.
 * Cut values in s~ follow (cut_ge, cut_lt), each moved outwards by the f64 rounding of its
 * own computation (relative 2^-50 and (2 + 3c) 2^-53 absolutely). */
#define ROUTE_ER(K) (1e-5 + 2.0 * (double)(K) * 0x1.0p-24)
#define ROUTE_EA(K) ((double)(K) * 0x1.0p-120)
#define ROUTE_ETA(K) ((4.0 * (double)(K) + 16.0) * 0x1.0p-53)

/* L such that s~ < L implies MSP64 >= v (strict = 0) or MSP64 > v (strict = 1). */
static double cut_ge(double v, int strict, int64_t K) {
  if (isnan(v)) return -INFINITY;
  if (v <= 0.0) return INFINITY; /* MSP64 >= 1/K > 0 */
  const double er = ROUTE_ER(K), ea = ROUTE_EA(K), eta = ROUTE_ETA(K);
  double L = -INFINITY;
  if (strict ? v < 1.0 : v <= 1.0) L = 0x1.0p-54 * (1.0 - er) - ea; /* MSP64 == 1 exactly */
  double c = (1.0 - eta) / v - 1.0; /* need s < c (from above: s <= (s~ + ea) / (1 - er)) */
  c -= (2.0 + 3.0 * fabs(c)) * 0x1.0p-53;
  if (c > 0.0) {
    double L1 = c * (1.0 - er) - ea;
    L1 *= L1 > 0.0 ? 1.0 - 0x1.0p-50 : 1.0 + 0x1.0p-50;
    if (L1 > L) L = L1;
  }
  return L;
}

/* H such that s~ > H implies MSP64 < v (le = 0) or MSP64 <= v (le = 1). */
static double cut_lt(double v, int le, int64_t K) {
  if (isnan(v) || v <= 0.0) return INFINITY; /* never certain */
  if (v > 1.0 || (le && v >= 1.0)) return -INFINITY; /* MSP64 <= 1 always */
  const double er = ROUTE_ER(K), ea = ROUTE_EA(K), eta = ROUTE_ETA(K);
  double c = (1.0 + eta) / v - 1.0; /* need s > c (from below: s >= (s~ - ea) / (1 + er)) */
  c += (2.0 + 3.0 * fabs(c)) * 0x1.0p-53;
  return (c * (1.0 + er) + ea) * (1.0 + 0x1.0p-50);
}

void effml__route_cuts_init(effml__route_cuts *c, int32_t rule, double a, double b, int64_t K) {
  c->threshold = rule == EFFML_CASCADE_EXIT_THRESHOLD;
  c->a = a;
  c->b = b;
  c->ge_a = cut_ge(a, 0, K);
  c->lt_a = cut_lt(a, 0, K);
  c->gt_b = c->threshold ? -INFINITY : cut_ge(b, 1, K);
  c->le_b = c->threshold ? INFINITY : cut_lt(b, 1, K);
  c->e_lo = c->threshold ? c->ge_a : c->gt_b;
  c->e_hi = c->threshold ? INFINITY : c->lt_a;
  c->g_lo = c->threshold ? INFINITY : c->ge_a;
  c->g_hi = c->threshold ? c->lt_a : c->le_b;
}

double effml__route_exact_msp(const effml__stage_block *b, int64_t r) {
  double zb[256], p[256];
  load_row(b, r, zb);
  return effml__softmax_row(zb, b->K, p);
}

double effml__softmax_row(const double *z, int64_t K, double *p) {
  double zmax = -INFINITY;
  for (int64_t k = 0; k < K; ++k)
    if (z[k] > zmax) zmax = z[k];
  double sum = 0.0;
  for (int64_t k = 0; k < K; ++k) sum += (p[k] = exp(z[k] - zmax));
  const double inv_sum = 1.0 / sum;
  double top = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    p[k] *= inv_sum;
    if (p[k] > top) top = p[k];
  }
  return top;
}

/* ---- the routed exit of rows j0..j1-1 that are the samples themselves (stage 0) ---- */
#ifdef EFFML__ROUTE_AVX512
/* 8 rows a time: the cuts as f64 compares (the decisions of effml__route_decide), pred and
 * stage stored for all 8 (a row that goes on gets both again where it exits), the rows that
 * go on compressed into rows[w..]; undecided lanes (near a bound) take the exact MSP.
 * Returns the first row not done; *w advanced. */
__attribute__((target("avx512f"))) static int64_t route_exit_identity_avx512(
    const effml__stage_block *b, const effml__route_cuts *c, const double *sc, const int32_t *pr,
    int64_t j0, int64_t j1, int32_t m, int32_t *out_pred, int32_t *out_stage, int64_t *rows,
    int64_t *w) {
  const __m512d e_lo = _mm512_set1_pd(c->e_lo), e_hi = _mm512_set1_pd(c->e_hi),
                g_lo = _mm512_set1_pd(c->g_lo), g_hi = _mm512_set1_pd(c->g_hi);
  const __m256i stage = _mm256_set1_epi32(m);
  int64_t j = j0, n = *w;
  for (; j + 8 <= j1; j += 8) {
    const __m512d s = _mm512_loadu_pd(sc + (j - j0));
    __mmask8 ex = _mm512_cmp_pd_mask(s, e_lo, _CMP_LT_OQ) | _mm512_cmp_pd_mask(s, e_hi, _CMP_GT_OQ);
    const __mmask8 on = _mm512_cmp_pd_mask(s, g_lo, _CMP_LT_OQ) & _mm512_cmp_pd_mask(s, g_hi, _CMP_GT_OQ);
    __mmask8 open = (__mmask8) ~(ex | on);
    while (open) { /* near a bound: the exact MSP decides */
      const int l = __builtin_ctz(open);
      open &= (__mmask8)(open - 1);
      if (effml__route_exit_exact(c, effml__route_exact_msp(b, j + l))) ex |= (__mmask8)(1u << l);
    }
    _mm256_storeu_si256((__m256i *)(void *)(out_pred + j),
                        _mm256_loadu_si256((const __m256i *)(const void *)(pr + (j - j0))));
    _mm256_storeu_si256((__m256i *)(void *)(out_stage + j), stage);
    const __mmask8 keep = (__mmask8)~ex;
    /* compressed in a register and stored whole (a compressing store to memory is
     * microcoded and slow on some CPUs): the lanes past the kept ones land on rows[n + 8)
     * <= rows[j + 8), positions of rows already read, within rows' n_act entries */
    _mm512_storeu_si512((void *)(rows + n),
                        _mm512_maskz_compress_epi64(
                            keep, _mm512_add_epi64(_mm512_set1_epi64(j),
                                                   _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0))));
    n += __builtin_popcount((unsigned)keep);
  }
  *w = n;
  return j;
}
#endif

int64_t effml__route_exit_identity(const effml__stage_block *b, const effml__route_cuts *c,
                                   const double *sc, const int32_t *pr, int64_t j0, int64_t j1,
                                   int32_t m, int32_t *out_pred, int32_t *out_stage,
                                   int64_t *rows, int64_t w) {
  int64_t j = j0;
#ifdef EFFML__ROUTE_AVX512
  if (b->isa >= EFFML_CORE_ISA_AVX512)
    j = route_exit_identity_avx512(b, c, sc, pr, j0, j1, m, out_pred, out_stage, rows, &w);
#endif
  for (; j < j1; ++j) {
    int ex = effml__route_decide(c, sc[j - j0]);
    if (ex < 0) ex = effml__route_exit_exact(c, effml__route_exact_msp(b, j));
    /* without branches (whether a row exits is data-dependent): a row that goes on gets
     * pred and stage again at the stage where it exits */
    out_pred[j] = pr[j - j0];
    out_stage[j] = m;
    rows[w] = j;
    w += !ex;
  }
  return w;
}

/* The exact path's prediction from a row of logits as doubles (load_row): the argmax of
 * effml__softmax_row's probabilities, lowest index on ties (effml__probs_score's rule). */
static int32_t route_exact_pred(const double *z, int64_t K) {
  double p[256];
  (void)effml__softmax_row(z, K, p);
  int64_t arg = 0;
  for (int64_t k = 1; k < K; ++k)
    if (p[k] > p[arg]) arg = k;
  return (int32_t)arg;
}

/* ---- the last stage's prediction on the routing-only path (effml__tail_block) ----
 *
 * Error of one member's f32 probability p~_k = fl(e~_k * fl(1 / S~)) against the exact p_k
 * (u = 2^-24; x_k = z_k - max z <= 0, computed in f32 as x~_k = x_k (1 + a), |a| <= u):
 *  - the exp polynomial (route_exp1) has relative error b <= 1e-6 (Taylor remainder
 *    |t|^7 / 7! * e^|t| < 2e-7 for |t| <= ln2/2, plus the rounding of seven f32 steps), and
 *    the rounded argument adds e^x u |x| <= u / e absolutely (max of |x| e^x is 1/e);
 *    below the clamp at -87 the true value and e~ are both under 2^-125;
 *  - so |e~_k - e_k| <= b e_k + u/e, and S~ = fl(sum e~_k) (S >= 1) is within
 *    b + K u / e + (K - 1) u (1 + b) relatively of S; 1/S~ rounds once more;
 *  - hence |p~_k - p_k| <= 2b + (1.4 K + 3) u for p_k <= 1.
 * effml__tail_bound returns twice that, 4e-6 + (2.8 K + 6) u; the tests measure the error
 * on adversarial rows and find it below a quarter of the bound.  The sum of two members
 * adds one more rounding (<= 2u), covered by the factor two.  The exact path's own error
 * (f64) is below 1e-15. */
double effml__tail_bound(int64_t K) { return 4e-6 + (2.8 * (double)K + 6.0) * 0x1.0p-24; }

static inline const float *tail_row(const effml__tail_block *t, int32_t i, int64_t j) {
  const int64_t r = t->row_index[i] ? t->row_index[i][j] : j;
  return t->base[i] + r * t->rs[i];
}

int effml__tail_fast_probs(const effml__tail_block *t, int64_t j, float *q) {
  const int64_t K = t->K;
  for (int64_t k = 0; k < K; ++k) q[k] = 0.0f;
  for (int32_t i = 0; i < t->members; ++i) {
    const float *z = tail_row(t, i, j);
    float zmax = z[0], fin = z[0] - z[0];
    for (int64_t k = 1; k < K; ++k) {
      fin += z[k] - z[k];
      if (z[k] > zmax) zmax = z[k];
    }
    if (fin != 0.0f) return 0;
    float e[256], sum = 0.0f;
    for (int64_t k = 0; k < K; ++k) sum += (e[k] = route_exp1(z[k] - zmax));
    const float inv = 1.0f / sum;
    for (int64_t k = 0; k < K; ++k) q[k] += e[k] * inv;
  }
  return 1;
}

int32_t effml__tail_exact_pred(const effml__tail_block *t, int64_t j) {
  /* member 0 as exit_routed's effml__softmax_row, later members as stage_row's mean:
   * acc_k = e_k * (1 / sum) summed over the members in order, argmax (lowest index) */
  const int64_t K = t->K;
  double acc[256], e[256];
  for (int32_t i = 0; i < t->members; ++i) {
    const float *z = tail_row(t, i, j);
    double zmax = -INFINITY;
    for (int64_t k = 0; k < K; ++k)
      if ((double)z[k] > zmax) zmax = (double)z[k];
    double sum = 0.0;
    for (int64_t k = 0; k < K; ++k) sum += (e[k] = exp((double)z[k] - zmax));
    const double inv_sum = 1.0 / sum;
    for (int64_t k = 0; k < K; ++k) acc[k] = i == 0 ? e[k] * inv_sum : acc[k] + e[k] * inv_sum;
  }
  int64_t arg = 0;
  for (int64_t k = 1; k < K; ++k)
    if (acc[k] > acc[arg]) arg = k;
  return (int32_t)arg;
}

/* Index of the first non-finite logit of the last member's row j, or -1. */
static int64_t tail_bad(const effml__tail_block *t, int64_t j) {
  const float *z = tail_row(t, t->members - 1, j);
  for (int64_t k = 0; k < t->K; ++k)
    if (!isfinite(z[k])) return k;
  return -1;
}

#ifdef EFFML__ROUTE_AVX512
/* q~ of row j for K <= 16 in one register (same bound: the same exp, other summation
 * orders); returns the certified argmax, or -1 when the top two are within the bound, or
 * -2 for a non-finite logit. */
__attribute__((target("avx512f"))) static int32_t tail_row_avx512(const effml__tail_block *t,
                                                                  int64_t j, float gap) {
  const __mmask16 km = (__mmask16)((1u << t->K) - 1u);
  __m512 q = _mm512_setzero_ps();
  for (int32_t i = 0; i < t->members; ++i) {
    const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), km, tail_row(t, i, j));
    if (_mm512_mask_cmp_ps_mask(km, _mm512_maskz_sub_ps(km, v, v), _mm512_setzero_ps(),
                                _CMP_NEQ_UQ))
      return -2;
    const __m512 e =
        _mm512_maskz_mov_ps(km, route_exp16(_mm512_sub_ps(v, _mm512_set1_ps(_mm512_reduce_max_ps(v)))));
    q = _mm512_add_ps(q, _mm512_mul_ps(e, _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(e))));
  }
  q = _mm512_mask_mov_ps(_mm512_set1_ps(-1.0f), km, q);
  const float top1 = _mm512_reduce_max_ps(q);
  const unsigned at = (unsigned)_mm512_cmp_ps_mask(q, _mm512_set1_ps(top1), _CMP_EQ_OQ);
  const int32_t arg = (int32_t)__builtin_ctz(at);
  const float top2 = _mm512_reduce_max_ps(_mm512_mask_mov_ps(q, (__mmask16)(1u << arg), _mm512_set1_ps(-1.0f)));
  return top1 - top2 > gap ? arg : -1;
}
/* effml__tail_rows for 16 rows at once, one row per lane (K <= 16): the same q~ (up to the
 * order of the f32 sum, which the bound covers), its first maximum and the largest other
 * value; lanes not certified are recomputed exactly.  Returns the first row not done (the
 * caller finishes row by row); *bad = j * K + k of a non-finite logit of the last member. */
__attribute__((target("avx512f"))) static int64_t tail_blocks_avx512(const effml__tail_block *t,
                                                                    int64_t begin, int64_t end,
                                                                    float gap, int64_t *fb,
                                                                    int64_t *bad) {
  const int64_t K = t->K;
  int64_t j0 = begin;
  *bad = -1;
  for (; j0 + 16 <= end; j0 += 16) {
    __m512 q[16];
    __mmask16 nonfinite = 0;
    if (j0 + 48 <= end) /* rows picked by index, which the prefetcher cannot guess: fetch two
                         * blocks ahead (cold-cache tail of the bench case 78 -> 65 us) */
      for (int32_t i = 0; i < t->members; ++i)
        if (t->row_index[i])
          for (int l = 32; l < 48; ++l) {
            const float *r = t->base[i] + t->row_index[i][j0 + l] * t->rs[i];
            __builtin_prefetch(r);
            __builtin_prefetch(r + K - 1);
          }
    for (int32_t i = 0; i < t->members; ++i) {
      __m512 z[16];
      load16_transposed(t->base[i], t->row_index[i], t->rs[i], K, j0, z);
      __m512 zmax = z[0], fin = _mm512_sub_ps(z[0], z[0]);
      for (int64_t k = 1; k < K; ++k) {
        fin = _mm512_add_ps(fin, _mm512_sub_ps(z[k], z[k]));
        zmax = _mm512_max_ps(zmax, z[k]);
      }
      nonfinite |= _mm512_cmp_ps_mask(fin, _mm512_setzero_ps(), _CMP_NEQ_UQ);
      __m512 sum = _mm512_setzero_ps();
      for (int64_t k = 0; k < K; ++k) {
        z[k] = route_exp16(_mm512_sub_ps(z[k], zmax));
        sum = _mm512_add_ps(sum, z[k]);
      }
      const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), sum);
      for (int64_t k = 0; k < K; ++k)
        q[k] = i == 0 ? _mm512_mul_ps(z[k], inv) : _mm512_add_ps(q[k], _mm512_mul_ps(z[k], inv));
    }
    __m512 top1 = q[0], top2 = _mm512_set1_ps(-1.0f);
    __m512i arg = _mm512_setzero_si512();
    for (int64_t k = 1; k < K; ++k) {
      const __mmask16 gt = _mm512_cmp_ps_mask(q[k], top1, _CMP_GT_OQ);
      top2 = _mm512_mask_mov_ps(_mm512_max_ps(top2, q[k]), gt, top1);
      top1 = _mm512_mask_mov_ps(top1, gt, q[k]);
      arg = _mm512_mask_mov_epi32(arg, gt, _mm512_set1_epi32((int32_t)k));
    }
    _mm512_storeu_si512((void *)(t->pred + j0), arg);
    const __mmask16 sure =
        _mm512_cmp_ps_mask(_mm512_sub_ps(top1, top2), _mm512_set1_ps(gap), _CMP_GT_OQ) &
        (__mmask16)~nonfinite;
    if (sure != 0xFFFF)
      for (int l = 0; l < 16; ++l) {
        if (sure >> l & 1) continue;
        const int64_t j = j0 + l;
        if (nonfinite >> l & 1) {
          const int64_t k = tail_bad(t, j);
          if (k >= 0) {
            *bad = j * K + k;
            return j0;
          }
        }
        t->pred[j] = effml__tail_exact_pred(t, j);
        ++*fb;
      }
  }
  return j0;
}
#endif

int64_t effml__tail_rows(const effml__tail_block *t, int64_t begin, int64_t end,
                         int64_t *fallbacks) {
  const int64_t K = t->K;
  /* certified when the computed gap exceeds both q~'s errors: members * bound each */
  const float gap = (float)(2.0 * (double)t->members * effml__tail_bound(K));
  int64_t fb = 0;
#ifdef EFFML__ROUTE_AVX512
  if (K <= 16 && t->isa >= EFFML_CORE_ISA_AVX512) {
    int64_t bad;
    const int64_t done = tail_blocks_avx512(t, begin, end, gap, &fb, &bad);
    if (bad >= 0) {
      *fallbacks += fb;
      return bad;
    }
    for (int64_t j = done; j < end; ++j) {
      int32_t a = tail_row_avx512(t, j, gap);
      if (a == -2) { /* a non-finite logit: name the last member's, or fall back */
        const int64_t k = tail_bad(t, j);
        if (k >= 0) return j * K + k;
        a = -1;
      }
      if (a < 0) {
        a = effml__tail_exact_pred(t, j);
        ++fb;
      }
      t->pred[j] = a;
    }
    *fallbacks += fb;
    return -1;
  }
#endif
  float q[256];
  for (int64_t j = begin; j < end; ++j) {
    const int fast = effml__tail_fast_probs(t, j, q);
    if (!fast) {
      const int64_t k = tail_bad(t, j);
      if (k >= 0) return j * K + k;
    }
    int64_t arg = 0;
    for (int64_t k = 1; k < K; ++k)
      if (q[k] > q[arg]) arg = k;
    float top2 = -1.0f;
    for (int64_t k = 0; k < K; ++k)
      if (k != arg && q[k] > top2) top2 = q[k];
    if (!fast || !(q[arg] - top2 > gap)) {
      arg = effml__tail_exact_pred(t, j);
      ++fb;
    }
    t->pred[j] = (int32_t)arg;
  }
  *fallbacks += fb;
  return -1;
}

/* Row r's logits as doubles into zb, with the common layouts unrolled from the
 * generic strided access. */
void effml__load_row(const effml__stage_block *b, int64_t r, double *zb) {
  load_row(b, r, zb);
}

static inline void load_row(const effml__stage_block *b, int64_t r, double *zb) {
  const int64_t K = b->K;
  if (!b->is_f64 && b->cs == 1) {
    const float *z = (const float *)b->base + r * b->rs;
    for (int64_t k = 0; k < K; ++k) zb[k] = (double)z[k];
  } else if (b->is_f64 && b->cs == 1) {
    const double *z = (const double *)b->base + r * b->rs;
    for (int64_t k = 0; k < K; ++k) zb[k] = z[k];
  } else {
    for (int64_t k = 0; k < K; ++k) zb[k] = logit_at(b, r, k);
    return; /* logit_at applied the calibration */
  }
  if (b->cal)
    for (int64_t k = 0; k < K; ++k) zb[k] = b->cal[k] * zb[k] + b->cal[K + k];
}

/* One row: z holds the logits (zb copy, or NULL to read in place for large K). */
static inline int64_t stage_row(const effml__stage_block *b, int64_t j, int64_t r,
                                const double *z) {
  const int64_t K = b->K;
  const int mean = b->aggregation == EFFML_CASCADE_AGG_MEAN && b->m > 1;
  const double inv_m = mean ? 1.0 / (double)b->m : 1.0;
  double *acc = b->acc + j * K;
#define Z(k) (z ? z[k] : logit_at(b, r, (k)))
  double zmax = -INFINITY;
  for (int64_t k = 0; k < K; ++k) {
    double v = Z(k);
    if (!isfinite(v)) return j * K + k;
    if (v > zmax) zmax = v;
  }
  /* p_k = exp(z_k - zmax) / sum; the numerators go to acc (or are added after) */
  double sum = 0.0;
  if (!mean) {
    for (int64_t k = 0; k < K; ++k) sum += (acc[k] = exp(Z(k) - zmax));
    const double inv_sum = 1.0 / sum;
    for (int64_t k = 0; k < K; ++k) acc[k] *= inv_sum;
  } else if (z) {
    double e[256];
    for (int64_t k = 0; k < K; ++k) sum += (e[k] = exp(z[k] - zmax));
    const double inv_sum = 1.0 / sum;
    for (int64_t k = 0; k < K; ++k) acc[k] += e[k] * inv_sum;
  } else { /* large K: recompute the numerators rather than allocate */
    for (int64_t k = 0; k < K; ++k) sum += exp(Z(k) - zmax);
    const double inv_sum = 1.0 / sum;
    for (int64_t k = 0; k < K; ++k) acc[k] += exp(Z(k) - zmax) * inv_sum;
  }
  if (b->score_kind == EFFML_CASCADE_SCORE_MAX_LOGIT || b->score_kind == EFFML_CASCADE_SCORE_ENERGY) {
    double s;
    if (b->score_kind == EFFML_CASCADE_SCORE_MAX_LOGIT) {
      s = zmax;
    } else if (b->temperature == 1.0) {
      s = zmax + log(sum);
    } else { /* T * logsumexp(z / T), shifted by the max for stability */
      const double T = b->temperature;
      double st = 0.0;
      for (int64_t k = 0; k < K; ++k) st += exp((Z(k) - zmax) / T);
      s = zmax + T * log(st);
    }
#undef Z
    b->sacc[j] = mean ? b->sacc[j] + s : s;
    int64_t arg = 0;
    for (int64_t k = 1; k < K; ++k)
      if (acc[k] > acc[arg]) arg = k;
    b->pred[j] = (int32_t)arg;
    b->score[j] = b->sacc[j] * inv_m;
  } else {
    effml__probs_score(acc, K, inv_m, b->score_kind, &b->score[j], &b->pred[j]);
  }
  return -1;
}

int64_t effml__stage_rows(const effml__stage_block *b, int64_t begin, int64_t end) {
  double zb[256];
  const int small = b->K <= 256; /* the usual case: work from a local copy of the row */
  if (b->route && small) { /* routing score only: no softmax in f64, no running sums */
    int64_t j = begin;
#ifdef EFFML__ROUTE_AVX512
    const int wide = b->K <= 16 && b->isa >= EFFML_CORE_ISA_AVX512;
    if (wide && !b->is_f64 && b->cs == 1 && !b->cal) { /* 16 rows at a time, then row by row */
      const int64_t done = route_blocks_avx512(b, begin, end);
      for (; j < done; ++j)
        if (b->score[j] < 0.0 || b->pred[j] < 0) {
          const int64_t r = b->row_index ? b->row_index[j] : j;
          load_row(b, r, zb);
          for (int64_t k = 0; k < b->K; ++k)
            if (!isfinite(zb[k])) return j * b->K + k;
          b->pred[j] = route_exact_pred(zb, b->K); /* a near tie at the top */
        }
    }
#endif
    for (; j < end; ++j) {
      const int64_t r = b->row_index ? b->row_index[j] : j;
      double v;
      int near;
      if (!b->is_f64 && b->cs == 1 && !b->cal) { /* raw f32 rows; calibrated rows go via load_row */
        const float *zr = (const float *)b->base + r * b->rs;
#ifdef EFFML__ROUTE_AVX512
        if (wide)
          v = route_score_f32_avx512(zr, b->K, &b->pred[j]);
        else
#endif
          v = route_score_f32(zr, b->K, &b->pred[j]);
        near = v >= 0.0 && route_near_f32(zr, b->K, b->pred[j]);
        if (v < 0.0 || near) load_row(b, r, zb);
      } else {
        load_row(b, r, zb);
        v = effml__route_score(zb, b->K, &b->pred[j]);
        near = v >= 0.0 && route_near_f64(zb, b->K, b->pred[j]);
      }
      if (v < 0.0)
        for (int64_t k = 0; k < b->K; ++k)
          if (!isfinite(zb[k])) return j * b->K + k;
      if (near) b->pred[j] = route_exact_pred(zb, b->K);
      b->score[j] = v;
    }
    return -1;
  }
  for (int64_t j = begin; j < end; ++j) {
    const int64_t r = b->row_index ? b->row_index[j] : j;
    if (small) load_row(b, r, zb);
    int64_t bad = stage_row(b, j, r, small ? zb : NULL);
    if (bad >= 0) return bad;
  }
  return -1;
}

typedef struct {
  const effml__stage_block *b;
  int64_t bad[64];
} stage_job;

static void stage_job_fn(void *arg, int64_t begin, int64_t end, int32_t worker) {
  stage_job *job = (stage_job *)arg;
  job->bad[worker] = effml__stage_rows(job->b, begin, end);
}

void effml__stage_prepare(effml_context *ctx, effml__stage_block *b, const effml_tensor *logits) {
  if (logits) {
    b->base = logits->data;
    b->is_f64 = logits->dtype == EFFML_F64;
    b->rs = logits->strides[0];
    b->cs = logits->strides[1];
  }
  b->isa = effml__ctx_isa(ctx);
}

effml_status effml__stage_bad(effml_context *ctx, const effml__stage_block *b, int64_t bad,
                              const char *name) {
  int64_t j = bad / b->K, k = bad % b->K;
  int64_t r = b->row_index ? b->row_index[j] : b->name_index ? b->name_index[j] : j;
  double z = logit_at(b, b->row_index ? r : j, k);
  return effml__err(ctx, EFFML_E_NUMERIC, "%s: logit of sample %lld, class %lld is %s", name,
                    (long long)r, (long long)k, isnan(z) ? "NaN" : "infinite");
}

effml_status effml__stage_tensor(effml_context *ctx, effml__stage_block *b,
                                 const effml_tensor *logits, int64_t rows, const char *name) {
  effml__stage_prepare(ctx, b, logits);
  stage_job job;
  job.b = b;
  for (int i = 0; i < 64; ++i) job.bad[i] = -1;
  /* rows are independent, so the split (and the thread count) cannot change results.  A
   * thread takes at least ~0.5 ms of work: a thread start and join costs 18 us at best on
   * the 2-core test VM (35-75 us under load); the routing score takes ~7-11 ns a row
   * (K = 10, AVX-512), the exact stage kernel ~100 ns. */
  EFFML__TRY(effml__parallel_for(ctx, rows, b->route ? EFFML__CASCADE_ROUTE_GRAIN : 8192,
                                 stage_job_fn, &job));
  int64_t bad = -1;
  for (int i = 0; i < 64; ++i)
    if (job.bad[i] >= 0 && (bad < 0 || job.bad[i] < bad)) bad = job.bad[i];
  return bad >= 0 ? effml__stage_bad(ctx, b, bad, name) : EFFML_OK;
}

effml_status effml__check_logits(effml_context *ctx, const effml_tensor *t, const char *name,
                                 int64_t K) {
  if (t == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "%s is NULL", name);
  if (t->dtype != EFFML_F32 && t->dtype != EFFML_F64)
    return effml__err(ctx, EFFML_E_DTYPE, "%s has dtype %s, need f32 or f64 logits", name,
                      effml_tensor_dtype_name(t->dtype));
  if (t->ndim != 2)
    return effml__err(ctx, EFFML_E_SHAPE, "%s has %d dims, need [rows, num_classes=%lld]",
                      name, (int)t->ndim, (long long)K);
  if (t->shape[1] != K)
    return effml__err(ctx, EFFML_E_SHAPE,
                      "%s has %lld classes (columns) but the cascade has num_classes=%lld", name,
                      (long long)t->shape[1], (long long)K);
  return EFFML_OK;
}
