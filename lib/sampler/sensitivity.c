/* Sampling rows by scores with lp importance weights (Woodruff & Yasuda 2023,
 * arXiv 2306.00732, §3, sampling with rescaling), and merging weighted samples.
 *
 * Bernoulli: row i kept with pi_i = min(1, m s_i / S), weight pi_i^{-1/p};
 * its coin is a hash of (seed, i), so the sample does not depend on the
 * thread count or on how the rows are split.  I.i.d.: round(m) alias draws
 * with q_i = s_i / S; a row drawn c_i times gets (c_i / (m q_i))^{1/p}, so
 * E ||S A x||_p^p = ||A x||_p^p in both schemes. */
#include <math.h>
#include <string.h>

#include "sampler_internal.h"

static effml_status out_pair(effml_context *ctx, const int64_t *idx, const double *w, int64_t k,
                             effml_tensor **indices, effml_tensor **weights) {
  if (k == 0)
    return effml__err(ctx, EFFML_E_NUMERIC, "the sample is empty (no row selected); increase m");
  effml_tensor *ti = NULL, *tw = NULL;
  EFFML__TRY(effml_tensor_create(ctx, EFFML_I64, 1, &k, &ti));
  effml_status st = effml_tensor_create(ctx, EFFML_F64, 1, &k, &tw);
  if (st != EFFML_OK) {
    effml_tensor_free(ti);
    return st;
  }
  memcpy(ti->data, idx, (size_t)k * sizeof(int64_t));
  memcpy(tw->data, w, (size_t)k * sizeof(double));
  *indices = ti;
  *weights = tw;
  return EFFML_OK;
}

effml_status effml_sampler_sensitivity_sample(effml_context *ctx, const effml_tensor *scores, double m,
                                      double p, int32_t scheme, uint64_t seed,
                                      effml_tensor **indices, effml_tensor **weights) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, indices);
  EFFML__CHECK_NULL(ctx, weights);
  EFFML__TRY(effml__check_tensor(ctx, scores, "scores", EFFML_F64, 1, 1));
  if (!(m > 0) || !isfinite(m)) return effml__err(ctx, EFFML_E_INVALID_ARG, "m=%g must be finite and > 0", m);
  if (!(p >= 1) || !isfinite(p)) return effml__err(ctx, EFFML_E_INVALID_ARG, "p=%g must be finite and >= 1", p);
  if (scheme != EFFML_SAMPLER_DRAW_BERNOULLI && scheme != EFFML_SAMPLER_DRAW_IID)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "scheme=%d is not an EFFML_SAMPLER_DRAW_* value", (int)scheme);
  const int64_t n = scores->shape[0];
  const double *s = effml__cf64(scores);
  double S = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!(s[i] >= 0) || !isfinite(s[i]))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "scores[%lld]=%g must be finite and >= 0",
                        (long long)i, s[i]);
    S += s[i];
  }
  if (!(S > 0)) return effml__err(ctx, EFFML_E_INVALID_ARG, "scores sum to 0");
  int64_t *idx = (int64_t *)effml__malloc(ctx, (size_t)n * sizeof(int64_t));
  double *w = (double *)effml__malloc(ctx, (size_t)n * sizeof(double));
  if (!idx || !w) {
    effml__free(ctx, idx);
    effml__free(ctx, w);
    return effml__err(ctx, EFFML_E_NOMEM, "out of memory for a sample of %lld rows", (long long)n);
  }
  int64_t k = 0;
  effml_status st = EFFML_OK;
  if (scheme == EFFML_SAMPLER_DRAW_BERNOULLI) {
    for (int64_t i = 0; i < n; ++i) {
      double pi = fmin(1.0, m * s[i] / S);
      double u = (double)(effml__mix64(seed ^ effml__mix64((uint64_t)i)) >> 11) * 0x1.0p-53;
      if (pi > 0 && u < pi) {
        idx[k] = i;
        w[k++] = pow(pi, -1.0 / p);
      }
    }
  } else {
    int64_t draws = (int64_t)llround(m);
    if (draws < 1) draws = 1;
    effml_sampler_alias *al = NULL;
    int64_t *cnt = (int64_t *)effml__calloc(ctx, (size_t)n, sizeof(int64_t));
    int64_t *buf = (int64_t *)effml__malloc(ctx, 4096 * sizeof(int64_t));
    st = (cnt && buf) ? effml_sampler_alias_create(ctx, s, n, seed, &al)
                      : effml__err(ctx, EFFML_E_NOMEM, "out of memory for draw counts");
    for (int64_t done = 0; st == EFFML_OK && done < draws; done += 4096) {
      int64_t c = draws - done < 4096 ? draws - done : 4096;
      st = effml_sampler_alias_draw(ctx, al, c, buf);
      for (int64_t t = 0; st == EFFML_OK && t < c; ++t) cnt[buf[t]]++;
    }
    for (int64_t i = 0; st == EFFML_OK && i < n; ++i)
      if (cnt[i] > 0) {
        idx[k] = i;
        w[k++] = pow((double)cnt[i] / ((double)draws * s[i] / S), 1.0 / p);
      }
    effml_sampler_alias_free(al);
    effml__free(ctx, cnt);
    effml__free(ctx, buf);
  }
  if (st == EFFML_OK) st = out_pair(ctx, idx, w, k, indices, weights);
  effml__free(ctx, idx);
  effml__free(ctx, w);
  return st;
}

effml_status effml_sampler_weighted_sample_merge(effml_context *ctx, const effml_tensor *idx_a,
                                         const effml_tensor *w_a, const effml_tensor *idx_b,
                                         const effml_tensor *w_b, int64_t offset_b, double p,
                                         effml_tensor **indices, effml_tensor **weights) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, indices);
  EFFML__CHECK_NULL(ctx, weights);
  EFFML__TRY(effml__check_tensor(ctx, idx_a, "idx_a", EFFML_I64, 1, 1));
  EFFML__TRY(effml__check_tensor(ctx, idx_b, "idx_b", EFFML_I64, 1, 1));
  EFFML__TRY(effml__check_tensor(ctx, w_a, "w_a", EFFML_F64, 1, 1));
  EFFML__TRY(effml__check_tensor(ctx, w_b, "w_b", EFFML_F64, 1, 1));
  EFFML__TRY(effml__check_dim(ctx, w_a, "w_a", 0, idx_a->shape[0]));
  EFFML__TRY(effml__check_dim(ctx, w_b, "w_b", 0, idx_b->shape[0]));
  if (!(p >= 1) || !isfinite(p)) return effml__err(ctx, EFFML_E_INVALID_ARG, "p=%g must be finite and >= 1", p);
  if (offset_b < 0) return effml__err(ctx, EFFML_E_INVALID_ARG, "offset_b=%lld must be >= 0", (long long)offset_b);
  const int64_t na = idx_a->shape[0], nb = idx_b->shape[0];
  const int64_t *ia = (const int64_t *)(const void *)idx_a->data, *ib = (const int64_t *)(const void *)idx_b->data;
  const double *wa = effml__cf64(w_a), *wb = effml__cf64(w_b);
  for (int pass = 0; pass < 2; ++pass) {
    const int64_t *ix = pass ? ib : ia;
    const double *wx = pass ? wb : wa;
    int64_t nx = pass ? nb : na;
    for (int64_t t = 0; t < nx; ++t) {
      if (ix[t] < 0 || (t > 0 && ix[t] <= ix[t - 1]))
        return effml__err(ctx, EFFML_E_INVALID_ARG, "%s[%lld]=%lld: indices must be >= 0 and strictly ascending",
                          pass ? "idx_b" : "idx_a", (long long)t, (long long)ix[t]);
      if (!(wx[t] > 0) || !isfinite(wx[t]))
        return effml__err(ctx, EFFML_E_INVALID_ARG, "%s[%lld]=%g must be finite and > 0",
                          pass ? "w_b" : "w_a", (long long)t, wx[t]);
    }
  }
  int64_t *idx = (int64_t *)effml__malloc(ctx, (size_t)(na + nb) * sizeof(int64_t));
  double *w = (double *)effml__malloc(ctx, (size_t)(na + nb) * sizeof(double));
  effml_status st = EFFML_OK;
  if (!idx || !w) st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for a merged sample");
  int64_t k = 0, x = 0, y = 0;
  while (st == EFFML_OK && (x < na || y < nb)) {
    int64_t vb = y < nb ? ib[y] + offset_b : INT64_MAX;
    if (x < na && ia[x] < vb) {
      idx[k] = ia[x];
      w[k++] = wa[x++];
    } else if (x < na && ia[x] == vb) { /* the same row in both: weights add in the p-th power */
      idx[k] = vb;
      w[k++] = pow(pow(wa[x++], p) + pow(wb[y++], p), 1.0 / p);
    } else {
      idx[k] = vb;
      w[k++] = wb[y++];
    }
  }
  if (st == EFFML_OK) st = out_pair(ctx, idx, w, k, indices, weights);
  effml__free(ctx, idx);
  effml__free(ctx, w);
  return st;
}
