/* Neighbour lists kept across the passes of a cleaning rule over a row set
 * that only shrinks (RENN and AllKNN's ENN passes, one-sided selection's
 * repeated Tomek-link removal).
 *
 * A list is row i's L nearest live rows when it was computed, by (exact
 * squared distance, position in the live order of that pass), as
 * effml__knn_f64 gives them.  Removing rows never brings a row closer, so
 * later the k nearest live rows are the first k live entries of the list,
 * provided
 * - the list still has k live entries, and
 * - ties cannot reorder them: either the live order is the one the list was
 *   computed in (the caller keeps an order epoch), or the k-th live entry is
 *   strictly closer than the entry after it (or the list held every other
 *   live row).
 * Otherwise the row is recomputed against the live rows.  A pass therefore
 * gives exactly the neighbours a full kNN over the live rows would, and
 * searches only the rows next to what the previous pass removed. */
#include <string.h>

#include "sampler_internal.h"

effml_status effml__knn_cache_init(effml_context *ctx, effml__knn_cache *S, int64_t n, int64_t L) {
  memset(S, 0, sizeof *S);
  S->n = n;
  S->L = L;
  S->nb = (int64_t *)effml__malloc(ctx, (size_t)(n * L) * sizeof(int64_t) + 1);
  S->dv = (double *)effml__malloc(ctx, (size_t)(n * L) * sizeof(double) + 1);
  S->len = (int64_t *)effml__calloc(ctx, (size_t)n + 1, sizeof(int64_t));
  S->epoch = (int64_t *)effml__malloc(ctx, (size_t)n * sizeof(int64_t) + 1);
  S->pos = (int64_t *)effml__malloc(ctx, (size_t)n * sizeof(int64_t) + 1);
  S->complete = (char *)effml__calloc(ctx, (size_t)n + 1, 1);
  if (!S->nb || !S->dv || !S->len || !S->epoch || !S->pos || !S->complete) {
    effml__knn_cache_free(ctx, S);
    return effml__err(ctx, EFFML_E_NOMEM, "out of memory for neighbour lists of %lld rows",
                      (long long)n);
  }
  return EFFML_OK;
}

void effml__knn_cache_free(effml_context *ctx, effml__knn_cache *S) {
  effml__free(ctx, S->nb);
  effml__free(ctx, S->dv);
  effml__free(ctx, S->len);
  effml__free(ctx, S->epoch);
  effml__free(ctx, S->pos);
  effml__free(ctx, S->complete);
  memset(S, 0, sizeof *S);
}

int effml__knn_cache_get(const effml__knn_cache *S, const char *dead, int64_t i, int64_t k,
                         int64_t order_epoch, int64_t *out) {
  const int64_t L = S->L, n = S->len[i];
  const int64_t *nb = S->nb + i * L;
  const double *dv = S->dv + i * L;
  int64_t c = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (dead[nb[t]]) continue;
    out[c++] = nb[t];
    if (c < k) continue;
    if (S->epoch[i] == order_epoch) return 1;
    return t + 1 < n ? dv[t + 1] > dv[t] : S->complete[i];
  }
  return 0;
}

effml_status effml__knn_cache_fill(effml_context *ctx, effml__knn_cache *S, const double *x,
                                   int64_t d, const int64_t *live, int64_t m, const int64_t *q,
                                   int64_t nq, int64_t order_epoch, int64_t block_rows) {
  if (nq == 0) return EFFML_OK;
  const int64_t L = S->L, K = L < m - 1 ? L : m - 1;
  if (K < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "neighbour lists need at least 2 rows, %lld remain",
                      (long long)m);
  for (int64_t t = 0; t < m; ++t) S->pos[live[t]] = t;
  double *xc = effml__gather_rows(ctx, x, d, live, m);
  double *xq = xc ? effml__gather_rows(ctx, x, d, q, nq) : NULL;
  int64_t *self = xq ? (int64_t *)effml__malloc(ctx, (size_t)nq * sizeof(int64_t)) : NULL;
  int64_t *idx = self ? (int64_t *)effml__malloc(ctx, (size_t)(nq * K) * sizeof(int64_t)) : NULL;
  double *d2 = idx ? (double *)effml__malloc(ctx, (size_t)(nq * K) * sizeof(double)) : NULL;
  effml_status st = d2 ? EFFML_OK : effml__err(ctx, EFFML_E_NOMEM, "out of memory for %lld neighbour lists", (long long)nq);
  if (st == EFFML_OK) {
    for (int64_t t = 0; t < nq; ++t) self[t] = S->pos[q[t]];
    st = effml__knn_f64(ctx, xc, m, xq, nq, d, K, self, block_rows, idx, d2);
  }
  for (int64_t t = 0; st == EFFML_OK && t < nq; ++t) {
    const int64_t i = q[t];
    for (int64_t j = 0; j < K; ++j) {
      S->nb[i * L + j] = live[idx[t * K + j]];
      S->dv[i * L + j] = d2[t * K + j];
    }
    S->len[i] = K;
    S->complete[i] = K == m - 1;
    S->epoch[i] = order_epoch;
  }
  effml__free(ctx, xc);
  effml__free(ctx, xq);
  effml__free(ctx, self);
  effml__free(ctx, idx);
  effml__free(ctx, d2);
  return st;
}
