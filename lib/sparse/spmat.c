/*
 * The compressed sparse matrix behind every sparse layer: CSR + CSC index
 * structure, stable value slots, exact-count random masks.
 */
#include "blas.h"
#include <math.h>
#include <string.h>

#include "sparse_internal.h"

effml_status effml__check_sparsity(effml_context *ctx, const char *fn, double sparsity) {
  if (!(sparsity >= 0.0 && sparsity < 1.0)) /* also rejects NaN */
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: sparsity=%g must be in [0, 1)", fn,
                      sparsity);
  return EFFML_OK;
}

effml_status effml__nnz_for(effml_context *ctx, const char *fn, int64_t rows, int64_t cols,
                            double sparsity, int64_t *nnz) {
  EFFML__TRY(effml__check_sparsity(ctx, fn, sparsity));
  /* exact rational density p / 10^9 (as the sizing functions), halves up:
   * 0.1 * 5535 is 553.5 -> 554, not the 553 of (1 - 0.9) * 5535 in doubles */
  const int64_t q = 1000000000LL;
  int64_t p = (int64_t)llround((1.0 - sparsity) * (double)q);
  unsigned __int128 num = (unsigned __int128)(rows * cols) * (unsigned __int128)p;
  int64_t n = (int64_t)((2 * num + (unsigned __int128)q) / (2 * (unsigned __int128)q));
  if (n > rows * cols) n = rows * cols;
  if (n < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: sparsity=%g leaves 0 nonzeros in a %lld x %lld matrix", fn, sparsity,
                      (long long)rows, (long long)cols);
  *nnz = n;
  return EFFML_OK;
}

effml_status effml__ws_reserve(effml_context *ctx, float **buf, size_t *cap, size_t n) {
  if (*cap >= n && *buf) return EFFML_OK;
  size_t bytes;
  if (!effml__mul_size(n, sizeof(float), &bytes))
    return effml__err(ctx, EFFML_E_OVERFLOW, "sparse workspace of %zu floats overflows", n);
  float *p = (float *)effml__alloc_or_err(ctx, bytes ? bytes : 4, "sparse workspace");
  if (!p) return EFFML_E_NOMEM;
  effml__free(ctx, *buf);
  *buf = p;
  *cap = n;
  return EFFML_OK;
}

void effml__spmat_free(effml_context *ctx, effml__spmat *m) {
  if (!m) return;
  effml__free(ctx, m->row_ptr);
  effml__free(ctx, m->col_idx);
  effml__free(ctx, m->slot);
  effml__free(ctx, m->t_ptr);
  effml__free(ctx, m->t_idx);
  effml__free(ctx, m->t_pos);
  effml__free(ctx, m->dense_grad);
  m->row_ptr = m->t_ptr = m->t_pos = NULL;
  m->col_idx = m->slot = m->t_idx = NULL;
  m->dense_grad = NULL;
}

/* Allocate all index arrays of an rows x cols matrix with nnz entries into
 * the fresh struct `n`. */
static effml_status alloc_index(effml_context *ctx, effml__spmat *n, int64_t rows, int64_t cols,
                                int64_t nnz) {
  memset(n, 0, sizeof *n);
  n->rows = rows;
  n->cols = cols;
  n->nnz = nnz;
  size_t z = (size_t)(nnz > 0 ? nnz : 1);
  n->row_ptr = (int64_t *)effml__malloc(ctx, (size_t)(rows + 1) * sizeof(int64_t));
  n->t_ptr = (int64_t *)effml__calloc(ctx, (size_t)(cols + 1), sizeof(int64_t));
  n->col_idx = (int32_t *)effml__malloc(ctx, z * sizeof(int32_t));
  n->slot = (int32_t *)effml__malloc(ctx, z * sizeof(int32_t));
  n->t_idx = (int32_t *)effml__malloc(ctx, z * sizeof(int32_t));
  n->t_pos = (int64_t *)effml__malloc(ctx, z * sizeof(int64_t));
  if (!n->row_ptr || !n->t_ptr || !n->col_idx || !n->slot || !n->t_idx || !n->t_pos) {
    effml__spmat_free(ctx, n);
    return effml__err(ctx, EFFML_E_NOMEM, "out of memory for a %lld x %lld sparse matrix",
                      (long long)rows, (long long)cols);
  }
  return EFFML_OK;
}

/* Fill CSR + CSC of n from sorted positions and slots. */
static void fill_index(effml__spmat *n, const int64_t *pos, const int32_t *slot) {
  int64_t p = 0;
  n->identity = 1;
  for (int64_t r = 0; r < n->rows; ++r) {
    n->row_ptr[r] = p;
    const int64_t end = (r + 1) * n->cols;
    while (p < n->nnz && pos[p] < end) {
      n->col_idx[p] = (int32_t)(pos[p] - r * n->cols);
      n->slot[p] = slot ? slot[p] : (int32_t)p;
      if (n->slot[p] != p) n->identity = 0;
      n->t_ptr[n->col_idx[p] + 1]++;
      ++p;
    }
  }
  n->row_ptr[n->rows] = p;
  for (int64_t c = 0; c < n->cols; ++c) n->t_ptr[c + 1] += n->t_ptr[c];
  /* CSC by a counting pass over rows in order: row indices come out sorted. */
  for (int64_t r = 0; r < n->rows; ++r)
    for (int64_t q = n->row_ptr[r]; q < n->row_ptr[r + 1]; ++q) {
      int32_t c = n->col_idx[q];
      int64_t dst = n->t_ptr[c]++;
      n->t_idx[dst] = (int32_t)r;
      n->t_pos[dst] = q;
    }
  /* t_ptr[c] now holds the start of column c + 1: shift back. */
  for (int64_t c = n->cols; c > 0; --c) n->t_ptr[c] = n->t_ptr[c - 1];
  n->t_ptr[0] = 0;
}

effml_status effml__spmat_init_positions(effml_context *ctx, effml__spmat *m, int64_t rows,
                                         int64_t cols, int64_t nnz, const int64_t *pos) {
  effml__spmat n;
  EFFML__TRY(alloc_index(ctx, &n, rows, cols, nnz));
  fill_index(&n, pos, NULL);
  n.param = m->param;
  n.block = m->block > 1 ? m->block : 1;
  *m = n;
  return EFFML_OK;
}

effml_status effml__spmat_rebuild(effml_context *ctx, effml__spmat *m, const int64_t *pos,
                                  const int32_t *slot) {
  effml__spmat n;
  EFFML__TRY(alloc_index(ctx, &n, m->rows, m->cols, m->nnz));
  fill_index(&n, pos, slot);
  n.param = m->param;
  n.block = m->block;
  n.dense_grad = m->dense_grad;
  n.dense_grad_on = m->dense_grad_on;
  n.dense_grad_valid = 0;
  m->dense_grad = NULL;
  effml__spmat_free(ctx, m);
  *m = n;
  return EFFML_OK;
}

/* Knuth's selection sampling (TAOCP vol. 2, 3.4.2, Algorithm S): exactly
 * nnz of numel positions, each subset equally likely, produced in sorted
 * order, one uniform draw per position scanned.  Sequential, so the result
 * does not depend on the thread count. */
effml_status effml__random_positions(effml_context *ctx, effml__rng *rng, int64_t numel,
                                     int64_t nnz, int64_t **out) {
  int64_t *pos = (int64_t *)effml__alloc_or_err(ctx, (size_t)(nnz > 0 ? nnz : 1) * sizeof(int64_t),
                                                "sparse mask positions");
  if (!pos) return EFFML_E_NOMEM;
  int64_t m = 0;
  for (int64_t t = 0; t < numel && m < nnz; ++t) {
    /* select t with probability (nnz - m) / (numel - t) */
    if ((uint64_t)(numel - t) * effml__rng_uniform(rng) < (double)(nnz - m)) pos[m++] = t;
  }
  *out = pos;
  return EFFML_OK;
}

effml_status effml__random_block_positions(effml_context *ctx, effml__rng *rng, int64_t rows,
                                           int64_t cols, int32_t block, int64_t nnz,
                                           int64_t **out, int64_t *nnz_out) {
  const int64_t brows = (rows + block - 1) / block, nunits = brows * cols;
  int64_t nb = (nnz + block / 2) / block;
  if (nb < 1) nb = 1;
  if (nb > nunits) nb = nunits;
  int64_t *units = NULL;
  EFFML__TRY(effml__random_positions(ctx, rng, nunits, nb, &units));
  int64_t total = 0;
  for (int64_t u = 0; u < nb; ++u) {
    const int64_t r0 = units[u] / cols * block;
    total += (r0 + block <= rows ? block : rows - r0);
  }
  int64_t *pos = (int64_t *)effml__alloc_or_err(ctx, (size_t)total * sizeof(int64_t),
                                                "block mask positions");
  if (!pos) {
    effml__free(ctx, units);
    return EFFML_E_NOMEM;
  }
  /* units are sorted by (block-row, column): expand block-row by block-row,
   * row by row, so the element positions come out sorted */
  int64_t k = 0;
  for (int64_t u0 = 0; u0 < nb;) {
    const int64_t br = units[u0] / cols;
    int64_t u1 = u0;
    while (u1 < nb && units[u1] / cols == br) ++u1;
    const int64_t r0 = br * block, r1 = r0 + block <= rows ? r0 + block : rows;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t u = u0; u < u1; ++u) pos[k++] = r * cols + units[u] % cols;
    u0 = u1;
  }
  effml__free(ctx, units);
  *out = pos;
  *nnz_out = total;
  return EFFML_OK;
}

const float *effml__spmat_packed(const effml__spmat *m, const float *vals, float *buf) {
  if (m->identity) return vals;
  for (int64_t p = 0; p < m->nnz; ++p) buf[p] = vals[m->slot[p]];
  return buf;
}

void effml__spmat_packed_t(const effml__spmat *m, const float *vals, float *buf) {
  for (int64_t q = 0; q < m->nnz; ++q) buf[q] = vals[m->slot[m->t_pos[q]]];
}

effml_status effml__spmat_dense_grad(effml_context *ctx, effml__spmat *m, const float *DYT,
                                     const float *XT, int64_t ldb) {
  if (!m->dense_grad_on || !m->dense_grad) return EFFML_OK;
  /* dW[r, c] = Σ_b dYᵀ[r, b] Xᵀ[c, b]; the zero padding adds nothing. */
  EFFML__TRY(effml__sgemm(ctx, CblasNoTrans, CblasTrans, m->rows, m->cols, ldb, 1.0f, DYT, ldb, XT,
                          ldb, 0.0f, m->dense_grad, m->cols));
  m->dense_grad_valid = 1;
  return EFFML_OK;
}
