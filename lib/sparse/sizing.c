/*
 * Iso-FLOP sizing of the Sparse-IFT members (Thangarasa et al. 2024, arXiv 2303.11525, §2.2)
 * and the FLOP counter (the Sparse-IFT profiler's rules).
 *
 * Exact rationals: the density 1-s is read as p/q with q = 10^9, so
 * s = 0.9 is exactly 1/10 and the ceilings/floors do not inherit the
 * double rounding of 1 - 0.9 = 0.09999999999999998 (which makes the
 * reference code size a 3x3 64->64 factorized layer at 577 instead of 576);
 * EFFML_SPARSE_COMPAT_FLOAT reproduces that rounding on purpose.
 */
#include <math.h>

#include "sparse_internal.h"

#define DENSITY_Q 1000000000LL

typedef unsigned __int128 u128;

/* density 1 - s = p / DENSITY_Q, p >= 1 */
static effml_status density_ratio(effml_context *ctx, const char *fn, double s, int64_t *p) {
  EFFML__TRY(effml__check_sparsity(ctx, fn, s));
  int64_t v = (int64_t)llround((1.0 - s) * (double)DENSITY_Q);
  if (v < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: sparsity=%.17g is too close to 1", fn, s);
  *p = v;
  return EFFML_OK;
}

static effml_status check_sizes(effml_context *ctx, const char *fn, int64_t in, int64_t out,
                                int64_t kernel_area) {
  if (in < 1 || out < 1 || in > INT32_MAX || out > INT32_MAX || kernel_area < 1 ||
      kernel_area > 1024)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: in_features=%lld, out_features=%lld must be in [1, 2^31-1] and "
                      "kernel_area=%lld in [1, 1024]",
                      fn, (long long)in, (long long)out, (long long)kernel_area);
  return EFFML_OK;
}

/* floor(width * sqrt(q / p)) exactly */
static int64_t widen(int64_t width, int64_t p) {
  u128 rhs = (u128)width * (u128)width * (u128)DENSITY_Q; /* w'^2 p <= rhs */
  int64_t w = (int64_t)floor((double)width * sqrt((double)DENSITY_Q / (double)p));
  while (w > 0 && (u128)w * (u128)w * (u128)p > rhs) --w;
  while ((u128)(w + 1) * (u128)(w + 1) * (u128)p <= rhs) ++w;
  return w;
}

effml_status effml_sparse_wide_dims(effml_context *ctx, int64_t in, int64_t out, double sparsity,
                                    uint32_t widen_sides, int64_t *wide_in, int64_t *wide_out) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_wide_dims";
  EFFML__CHECK_NULL(ctx, wide_in);
  EFFML__CHECK_NULL(ctx, wide_out);
  EFFML__TRY(check_sizes(ctx, fn, in, out, 1));
  if (widen_sides & ~(EFFML_SPARSE_WIDEN_IN | EFFML_SPARSE_WIDEN_OUT))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: widen=%u has unknown bits", fn,
                      (unsigned)widen_sides);
  int64_t p = 1;
  EFFML__TRY(density_ratio(ctx, fn, sparsity, &p));
  int64_t wi = (widen_sides & EFFML_SPARSE_WIDEN_IN) ? widen(in, p) : in;
  int64_t wo = (widen_sides & EFFML_SPARSE_WIDEN_OUT) ? widen(out, p) : out;
  if (wi > INT32_MAX || wo > INT32_MAX)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: widened sizes %lld x %lld exceed 2^31-1",
                      fn, (long long)wo, (long long)wi);
  *wide_in = wi;
  *wide_out = wo;
  return EFFML_OK;
}

effml_status effml_sparse_parallel_branches(effml_context *ctx, double sparsity,
                                            int64_t *branches) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_parallel_branches";
  EFFML__CHECK_NULL(ctx, branches);
  int64_t p = 1;
  EFFML__TRY(density_ratio(ctx, fn, sparsity, &p));
  /* round(q / p), halves up */
  *branches = (2 * DENSITY_Q + p) / (2 * p);
  if (*branches < 1) *branches = 1;
  return EFFML_OK;
}

effml_status effml_sparse_factorized_dim(effml_context *ctx, int64_t in, int64_t out,
                                         double sparsity, int64_t kernel_area, uint32_t flags,
                                         int64_t *dim) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_factorized_dim";
  EFFML__CHECK_NULL(ctx, dim);
  EFFML__TRY(check_sizes(ctx, fn, in, out, kernel_area));
  int64_t p = 1;
  EFFML__TRY(density_ratio(ctx, fn, sparsity, &p));
  const int64_t k = kernel_area;
  int64_t d;
  if (flags & EFFML_SPARSE_COMPAT_FLOAT) {
    d = (int64_t)ceil((double)(k * in * out) / ((1.0 - sparsity) * (double)(k * in + out)));
  } else { /* ⌈k·in·out·q / (p·(k·in + out))⌉ */
    u128 num = (u128)k * (u128)in * (u128)out * (u128)DENSITY_Q;
    u128 den = (u128)p * (u128)(k * in + out);
    d = (int64_t)((num + den - 1) / den);
  }
  *dim = d < 1 ? 1 : d;
  return EFFML_OK;
}

effml_status effml_sparse_doped_rank(effml_context *ctx, int64_t in, int64_t out, double sparsity,
                                     int64_t kernel_area, uint32_t flags, int64_t *rank) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_doped_rank";
  EFFML__CHECK_NULL(ctx, rank);
  EFFML__TRY(check_sizes(ctx, fn, in, out, kernel_area));
  int64_t p = 1;
  EFFML__TRY(density_ratio(ctx, fn, sparsity, &p));
  const int64_t k = kernel_area;
  if (flags & EFFML_SPARSE_COMPAT_FLOAT) {
    *rank = (int64_t)floor(sparsity * (double)(k * in * out) / (double)(k * in + out));
  } else { /* ⌊(q - p)·k·in·out / (q·(k·in + out))⌋ */
    u128 num = (u128)(DENSITY_Q - p) * (u128)k * (u128)in * (u128)out;
    u128 den = (u128)DENSITY_Q * (u128)(k * in + out);
    *rank = (int64_t)(num / den);
  }
  return EFFML_OK;
}

/* ---------------- FLOP counting ---------------- */

effml_status effml_sparse_count_flops(effml_context *ctx, const effml_layer *layer,
                                      double *flops) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, layer);
  EFFML__CHECK_NULL(ctx, flops);
  double f = 0.0;
  EFFML__TRY(effml__layer_flops(ctx, layer, layer->in_features, &f));
  *flops = f;
  return EFFML_OK;
}

effml_status effml_dst_training_flops(effml_context *ctx, double fwd_sparse, double fwd_dense,
                                      int64_t delta_t, double end_fraction, double *flops) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, flops);
  if (!(fwd_sparse >= 0.0) || !(fwd_dense >= 0.0) || delta_t < 0 || !(end_fraction >= 0.0) ||
      end_fraction > 1.0)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_dst_training_flops: fwd_sparse=%g, fwd_dense=%g must be >= 0, "
                      "delta_t=%lld >= 0, end_fraction=%g in [0, 1]",
                      fwd_sparse, fwd_dense, (long long)delta_t, end_fraction);
  const double fs = fwd_sparse;
  if (delta_t == 0) {
    *flops = 3.0 * fs;
    return EFFML_OK;
  }
  const double dt = (double)delta_t;
  const double during = (3.0 * fs * dt + 2.0 * fs + fwd_dense) / (dt + 1.0);
  *flops = end_fraction * during + (1.0 - end_fraction) * 3.0 * fs;
  return EFFML_OK;
}
