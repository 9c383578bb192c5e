/*
 * Masks: exact-count uniform random masks and the Erdős–Rényi-Kernel (ERK)
 * distribution of nonzeros over layers (Evci et al. 2020, arXiv 1911.11134, §3).
 */
#include <math.h>
#include <string.h>

#include "sparse_internal.h"

effml_status effml_sparse_mask_uniform(effml_context *ctx, double sparsity, effml_tensor *mask) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_mask_uniform";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__TRY(effml__check_tensor(ctx, mask, "mask", 0, 2, 1));
  EFFML__TRY(effml__check_writable(ctx, mask, "mask"));
  if (mask->dtype != EFFML_U8 && mask->dtype != EFFML_BOOL)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: mask has dtype %s, expected u8 or bool", fn,
                      effml_tensor_dtype_name(mask->dtype));
  const int64_t rows = mask->shape[0], cols = mask->shape[1];
  int64_t nnz = 0, *pos = NULL;
  EFFML__TRY(effml__nnz_for(ctx, fn, rows, cols, sparsity, &nnz));
  EFFML__TRY(effml__random_positions(ctx, effml__ctx_rng(ctx), rows * cols, nnz, &pos));
  uint8_t *m = (uint8_t *)(void *)mask->data;
  memset(m, 0, (size_t)(rows * cols));
  for (int64_t i = 0; i < nnz; ++i) m[pos[i]] = 1;
  effml__free(ctx, pos);
  return EFFML_OK;
}

effml_status effml_sparse_erk(effml_context *ctx, int32_t n_layers, const int64_t *rows,
                              const int64_t *cols, double sparsity, double power_scale,
                              int64_t *nnz) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_erk";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, rows);
  EFFML__CHECK_NULL(ctx, cols);
  EFFML__CHECK_NULL(ctx, nnz);
  EFFML__TRY(effml__check_sparsity(ctx, fn, sparsity));
  if (n_layers < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: n_layers=%d must be >= 1", fn, (int)n_layers);
  if (!(power_scale > 0.0) || !isfinite(power_scale))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: power_scale=%g must be > 0", fn, power_scale);
  double total = 0.0;
  for (int32_t l = 0; l < n_layers; ++l) {
    if (rows[l] < 1 || cols[l] < 1 || rows[l] > INT32_MAX || cols[l] > INT32_MAX)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: layer %d has shape [%lld, %lld]", fn,
                        (int)l, (long long)rows[l], (long long)cols[l]);
    total += (double)rows[l] * (double)cols[l];
  }
  const int64_t target = (int64_t)llround((1.0 - sparsity) * total);
  double *raw = (double *)effml__alloc_or_err(ctx, (size_t)n_layers * sizeof(double) * 2, "ERK");
  uint8_t *dense = (uint8_t *)effml__calloc_or_err(ctx, (size_t)n_layers, 1, "ERK");
  int64_t *out = (int64_t *)effml__alloc_or_err(ctx, (size_t)n_layers * sizeof(int64_t), "ERK");
  if (!raw || !dense || !out) {
    effml__free(ctx, raw);
    effml__free(ctx, dense);
    effml__free(ctx, out);
    return EFFML_E_NOMEM;
  }
  int64_t *caller_nnz = nnz; /* written only on success */
  nnz = out;
  double *frac = raw + n_layers;
  for (int32_t l = 0; l < n_layers; ++l)
    raw[l] = pow((double)(rows[l] + cols[l]) / ((double)rows[l] * (double)cols[l]), power_scale);
  /* Solve ε; a layer that would exceed density 1 becomes dense (the one with
   * the largest raw score first) and ε is solved again. */
  double eps = 0.0;
  for (;;) {
    double divisor = 0.0, rhs = (double)target;
    for (int32_t l = 0; l < n_layers; ++l) {
      double numel = (double)rows[l] * (double)cols[l];
      if (dense[l])
        rhs -= numel;
      else
        divisor += raw[l] * numel;
    }
    eps = divisor > 0.0 ? rhs / divisor : 0.0;
    int32_t worst = -1;
    for (int32_t l = 0; l < n_layers; ++l)
      if (!dense[l] && eps * raw[l] > 1.0 && (worst < 0 || raw[l] > raw[worst])) worst = l;
    if (worst < 0) break;
    dense[worst] = 1;
  }
  int64_t sum = 0;
  for (int32_t l = 0; l < n_layers; ++l) {
    int64_t numel = rows[l] * cols[l];
    double x = dense[l] ? (double)numel : eps * raw[l] * (double)numel;
    if (x > (double)numel) x = (double)numel;
    nnz[l] = (int64_t)floor(x);
    frac[l] = dense[l] ? -1.0 : x - (double)nnz[l];
    sum += nnz[l];
  }
  /* Largest remainder: hand out the missing units one by one. */
  while (sum < target) {
    int32_t best = -1;
    for (int32_t l = 0; l < n_layers; ++l)
      if (nnz[l] < rows[l] * cols[l] && (best < 0 || frac[l] > frac[best])) best = l;
    if (best < 0) break;
    nnz[best]++;
    frac[best] = -2.0;
    sum++;
  }
  effml_status st = EFFML_OK;
  for (int32_t l = 0; l < n_layers && st == EFFML_OK; ++l)
    if (nnz[l] < 1)
      st = effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: sparsity=%g leaves layer %d [%lld, %lld] with 0 nonzeros", fn,
                      sparsity, (int)l, (long long)rows[l], (long long)cols[l]);
  if (st == EFFML_OK) memcpy(caller_nnz, out, (size_t)n_layers * sizeof(int64_t));
  effml__free(ctx, raw);
  effml__free(ctx, dense);
  effml__free(ctx, out);
  return st;
}
