/* Row kernels of the thin factorized LPHM (Karimi Mahabadi et al. 2021,
 * arXiv 2106.04647, §3.2; the batch formulation is in phm_factorized.c).
 *
 * For a thin adapter (n*r <= 16 columns in P) the GEMMs of the factorized
 * path have N = n*r, a shape BLAS runs poorly, and the layer is bound by its
 * passes over x, dy and dx.  These kernels make one pass per row:
 *   forward:  P = X_row S (n*r dot products per row of X_row, each load of x
 *             shared by 4 columns), Q = mix(P), y = Q T + b;
 *   backward: dQ = dY_row T^T, dP = mix^T(dQ), dx = dP S^T, and the row's
 *             contributions to dT, dA and dS^T, which are summed into one part
 *             per fixed chunk of 64 rows (phm_factorized.c adds the parts in
 *             chunk order), so no result depends on the thread count.
 * The x / dx part of the backward runs over 16-wide column blocks of the
 * row, so each dS^T accumulator is loaded and stored once per row, not once
 * per (row, a) pair.  Memory: x is prefetched PR_PF_ROWS rows ahead into L2
 * (measured: without it the row's compute and its memory stalls added up
 * instead of overlapping); large y and dx are written with non-temporal stores
 * (no read for ownership of lines that are only overwritten); the backward walks the
 * chunks last to first, so rows the forward read last are read again first.
 *
 * One C body (phm_rows_body.inc) is compiled portable, for AVX2 and for
 * AVX-512F; effml_context_isa_level() picks one.  The builds give the same
 * bits (lane-wise vector statements, no FMA contraction: the library is
 * built with -ffp-contract=off). */
#include <stdint.h>
#include <string.h>

#include "adapter_internal.h"

typedef float pr_v16 __attribute__((vector_size(64)));
typedef float pr_v8 __attribute__((vector_size(32)));
typedef float pr_v4 __attribute__((vector_size(16)));
#define PR_MAXC EFFML__PHM_MAXC

/* out = the sum of the 16 lanes of the pr_v16 `a`, by halving (16 -> 8 -> 4
 * -> 2 -> 1): the same order in every build.  A macro, not a function: a
 * 64-byte vector argument would change the calling convention per ISA, and
 * lane extracts rather than memcpy of halves keep `a` in a register (an
 * accumulator whose address is taken lives in memory). */
#define PR_HSUM(out, a)                                                              \
  do {                                                                               \
    const pr_v16 pr_a_ = (a);                                                        \
    const pr_v8 pr_s8_ = (pr_v8){pr_a_[0], pr_a_[1], pr_a_[2], pr_a_[3], pr_a_[4],   \
                                 pr_a_[5], pr_a_[6], pr_a_[7]} +                     \
                         (pr_v8){pr_a_[8], pr_a_[9], pr_a_[10], pr_a_[11], pr_a_[12], \
                                 pr_a_[13], pr_a_[14], pr_a_[15]};                   \
    const pr_v4 pr_s4_ = (pr_v4){pr_s8_[0], pr_s8_[1], pr_s8_[2], pr_s8_[3]} +       \
                         (pr_v4){pr_s8_[4], pr_s8_[5], pr_s8_[6], pr_s8_[7]};        \
    (out) = (pr_s4_[0] + pr_s4_[2]) + (pr_s4_[1] + pr_s4_[3]);                      \
  } while (0)
#ifndef PR_PF_ROWS
#define PR_PF_ROWS 2 /* rows of x prefetched ahead (1, 2, 4, 8 measured: 2 best) */
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#  define PR_X86 1
#  include <immintrin.h>
#endif

/* Write an output of `total` floats (rows of `len` floats from p) with
 * streaming stores?  Only a large output (>= 8 MiB: it would not stay in the
 * last-level cache next to x anyway, and the next layer reads it from memory
 * either way) whose rows are all 64-byte aligned; a small one is written
 * through the cache, where the next layer finds it. */
#define PR_STREAMS(p, len, total) \
  ((len) % 16 == 0 && ((uintptr_t)(p) & 63) == 0 && (total) >= ((int64_t)2 << 20))

/* PR_STREAM(p, v): store the 16 floats of v at p (64-byte aligned) without
 * reading the line first (x86 non-temporal stores; SSE is part of x86-64's
 * baseline); PR_FENCE() orders them before later stores (sfence). */
#ifdef PR_X86
#  define PR_STREAM(p, v)                                                     \
    do {                                                                      \
      float *pr_p_ = (p);                                                     \
      pr_v16 pr_v_ = (v);                                                     \
      for (int pr_k_ = 0; pr_k_ < 4; ++pr_k_) {                               \
        __m128 pr_q_;                                                         \
        memcpy(&pr_q_, (const char *)&pr_v_ + 16 * pr_k_, sizeof pr_q_);      \
        _mm_stream_ps(pr_p_ + 4 * pr_k_, pr_q_);                              \
      }                                                                       \
    } while (0)
#  define PR_FENCE() _mm_sfence()
#else
#  define PR_STREAM(p, v)                      \
    do {                                       \
      pr_v16 pr_v_ = (v);                      \
      memcpy((p), &pr_v_, sizeof pr_v_);       \
    } while (0)
#  define PR_FENCE() ((void)0)
#endif

#define PR_SUFFIX generic
#define PR_TARGET
#include "phm_rows_body.inc"
#undef PR_SUFFIX
#undef PR_TARGET

#ifdef PR_X86
#  define PR_SUFFIX avx2
#  define PR_TARGET __attribute__((target("avx2")))
#  undef PR_STREAM
#  define PR_STREAM(p, v)                                                     \
    do {                                                                      \
      float *pr_p_ = (p);                                                     \
      pr_v16 pr_v_ = (v);                                                     \
      __m256 pr_lo_, pr_hi_;                                                  \
      memcpy(&pr_lo_, &pr_v_, sizeof pr_lo_);                                 \
      memcpy(&pr_hi_, (const char *)&pr_v_ + 32, sizeof pr_hi_);              \
      _mm256_stream_ps(pr_p_, pr_lo_);                                        \
      _mm256_stream_ps(pr_p_ + 8, pr_hi_);                                    \
    } while (0)
#  include "phm_rows_body.inc"
#  undef PR_SUFFIX
#  undef PR_TARGET
#  define PR_SUFFIX avx512
#  define PR_TARGET __attribute__((target("avx512f")))
#  undef PR_STREAM
#  define PR_STREAM(p, v)                            \
    do {                                             \
      __m512 pr_z_;                                  \
      pr_v16 pr_v_ = (v);                            \
      memcpy(&pr_z_, &pr_v_, sizeof pr_z_);          \
      _mm512_stream_ps((p), pr_z_);                  \
    } while (0)
#  include "phm_rows_body.inc"
#  undef PR_SUFFIX
#  undef PR_TARGET
#endif

effml__range_fn effml__phm_rows_forward(const effml_context *ctx) {
#ifdef PR_X86
  switch (effml__ctx_isa(ctx)) {
    case EFFML_CORE_ISA_AVX512: return pr_forward_rows_avx512;
    case EFFML_CORE_ISA_AVX2: return pr_forward_rows_avx2;
    default: break;
  }
#else
  (void)ctx;
#endif
  return pr_forward_rows_generic;
}

effml__range_fn effml__phm_rows_backward(const effml_context *ctx) {
#ifdef PR_X86
  switch (effml__ctx_isa(ctx)) {
    case EFFML_CORE_ISA_AVX512: return pr_backward_chunks_avx512;
    case EFFML_CORE_ISA_AVX2: return pr_backward_chunks_avx2;
    default: break;
  }
#else
  (void)ctx;
#endif
  return pr_backward_chunks_generic;
}
