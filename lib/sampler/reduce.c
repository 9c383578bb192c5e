/* The "reduce" of merge-and-reduce coresets: re-sample a weighted sample of
 * rows back to about m rows with the sensitivities of the weighted rows
 * (Har-Peled & Mazumdar, STOC 2004, §3 "merge and reduce"; Woodruff &
 * Yasuda, ICML 2023, arXiv 2301.10186, for the lp sensitivity bounds).
 *
 * A weighted row (a_i, w_i) stands for w_i^p |a_i x|^p in the cost, i.e. the
 * row b_i = w_i a_i of B = diag(w) A.  Scores are computed on B by the
 * chosen rule, rows are kept with pi_i = min(1, m s_i / S) (Bernoulli, the
 * coin of row i a hash of (seed, i), as effml_sampler_sensitivity_sample) and
 * a kept row's weight becomes w_i pi_i^{-1/p}, so
 * E sum_kept w'_i^p |a_i x|^p = sum_i w_i^p |a_i x|^p for every x. */
#include <math.h>
#include <string.h>

#include "sampler_internal.h"

effml_status effml_sampler_weighted_sample_reduce(effml_context *ctx,
                                                  const effml_sampler_leverage_options *opt,
                                                  const effml_tensor *a, const effml_tensor *w,
                                                  double m, double p, int32_t score,
                                                  uint64_t seed, effml_tensor **indices,
                                                  effml_tensor **weights) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, indices);
  EFFML__CHECK_NULL(ctx, weights);
  EFFML__CHECK_NULL(ctx, a);
  EFFML__TRY(effml__check_tensor(ctx, w, "w", EFFML_F64, 1, 1));
  if (a->ndim != 2)
    return effml__err(ctx, EFFML_E_SHAPE, "a must be 2-D [k, d], got %d dims", (int)a->ndim);
  EFFML__TRY(effml__check_dim(ctx, w, "w", 0, a->shape[0]));
  if (!(m > 0) || !isfinite(m)) return effml__err(ctx, EFFML_E_INVALID_ARG, "m=%g must be finite and > 0", m);
  if (score == EFFML_SAMPLER_SCORE_LEVERAGE) {
    if (p != 2) return effml__err(ctx, EFFML_E_INVALID_ARG, "score LEVERAGE needs p = 2, got p=%g", p);
  } else if (score == EFFML_SAMPLER_SCORE_ROOT_LEVERAGE) {
    if (!(p >= 1 && p <= 2))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "score ROOT_LEVERAGE needs 1 <= p <= 2, got p=%g", p);
  } else if (score == EFFML_SAMPLER_SCORE_SENSITIVITY) {
    if (!(p >= 1 && p < 4))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "score SENSITIVITY needs 1 <= p < 4, got p=%g", p);
  } else {
    return effml__err(ctx, EFFML_E_INVALID_ARG, "score=%d is not an EFFML_SAMPLER_SCORE_* value",
                      (int)score);
  }
  const int64_t k = a->shape[0], d = a->shape[1];
  const double *wd = effml__cf64(w);
  for (int64_t i = 0; i < k; ++i)
    if (!(wd[i] > 0) || !isfinite(wd[i]))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "w[%lld]=%g must be finite and > 0",
                        (long long)i, wd[i]);
  /* B = diag(w) A in f64 (a may be f32 or strided: read through the converter). */
  const double *ad = NULL;
  double *a_owned = NULL;
  EFFML__TRY(effml__sampler_x_f64(ctx, a, "a", 0, &ad, &a_owned));
  effml_tensor *b = NULL, *s = NULL, *idx = NULL, *pw = NULL;
  int64_t bs[2] = {k, d};
  effml_status st = effml_tensor_create(ctx, EFFML_F64, 2, bs, &b);
  if (st == EFFML_OK) {
    double *bd = (double *)b->data;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < d; ++j) bd[i * d + j] = wd[i] * ad[i * d + j];
    if (score == EFFML_SAMPLER_SCORE_LEVERAGE)
      st = effml_sampler_leverage_scores(ctx, opt, b, &s);
    else if (score == EFFML_SAMPLER_SCORE_ROOT_LEVERAGE)
      st = effml_sampler_root_leverage_scores(ctx, opt, b, p, &s);
    else
      st = effml_sampler_sensitivity_upper_bounds(ctx, opt, b, p, &s);
  }
  if (st == EFFML_OK)
    st = effml_sampler_sensitivity_sample(ctx, s, m, p, EFFML_SAMPLER_DRAW_BERNOULLI, seed, &idx, &pw);
  if (st == EFFML_OK) {
    const int64_t *ix = (const int64_t *)(const void *)idx->data;
    double *pwd = (double *)pw->data;
    for (int64_t t = 0; t < idx->shape[0]; ++t) pwd[t] *= wd[ix[t]];
    *indices = idx;
    *weights = pw;
    idx = pw = NULL;
  }
  effml_tensor_free(idx);
  effml_tensor_free(pw);
  effml_tensor_free(s);
  effml_tensor_free(b);
  effml__free(ctx, a_owned);
  return st;
}
