/* Sparse kernels: the fast batch-minor kernels against the scalar reference
 * (effml__spmm_ref) and scalar SDDMM, on batches that exercise full 64-wide
 * tiles, 16-wide tails and zero padding; plus the CSC structure. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "../lib/sparse/sparse_internal.h"

static void fill(float *p, int64_t n, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 7;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    p[i] = (float)((double)(s >> 11) * 0x1.0p-53 * 2.0 - 1.0);
  }
}

START_TEST(test_kernels_vs_reference) {
  static const int64_t batches[4] = {1, 16, 70, 131};
  effml_context *ctx = tu_ctx(3);
  const int64_t rows = 45, cols = 77, numel = rows * cols, nnz = 800;
  for (int32_t threads = 1; threads <= 2; ++threads) {
    ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
    int64_t *pos = NULL;
    ck_assert_int_eq(effml__random_positions(ctx, effml__ctx_rng(ctx), numel, nnz, &pos), EFFML_OK);
    for (int64_t i = 1; i < nnz; ++i) ck_assert_int_gt(pos[i], pos[i - 1]); /* sorted, unique */
    effml__spmat m;
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(effml__spmat_init_positions(ctx, &m, rows, cols, nnz, pos), EFFML_OK);
    ck_assert_int_eq(m.row_ptr[rows], nnz);
    ck_assert_int_eq(m.t_ptr[cols], nnz);
    /* CSC entries point back at CSR entries of the same (row, col) */
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t q = m.t_ptr[c]; q < m.t_ptr[c + 1]; ++q) {
        int64_t p = m.t_pos[q];
        ck_assert_int_eq(m.col_idx[p], c);
        ck_assert(p >= m.row_ptr[m.t_idx[q]] && p < m.row_ptr[m.t_idx[q] + 1]);
      }
    float *v = malloc(sizeof(float) * (size_t)nnz), *bias = malloc(sizeof(float) * (size_t)rows);
    fill(v, nnz, 1);
    fill(bias, rows, 2);
    for (int bi = 0; bi < 4; ++bi) {
      const int64_t B = batches[bi], ldb = (B + 15) / 16 * 16;
      float *X = malloc(sizeof(float) * (size_t)(B * cols)), *DY = malloc(sizeof(float) * (size_t)(B * rows));
      float *XT = malloc(sizeof(float) * (size_t)(cols * ldb)), *YT = malloc(sizeof(float) * (size_t)(rows * ldb));
      float *DYT = malloc(sizeof(float) * (size_t)(rows * ldb));
      float *Y = malloc(sizeof(float) * (size_t)(B * rows)), *Yref = malloc(sizeof(float) * (size_t)(B * rows));
      float *g = malloc(sizeof(float) * (size_t)nnz);
      fill(X, B * cols, 3 + (uint64_t)bi);
      fill(DY, B * rows, 4 + (uint64_t)bi);
      effml__spmm_ref(&m, v, X, B, bias, Yref);
      effml__transpose_in(ctx, X, B, cols, XT, ldb);
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t b = B; b < ldb; ++b) ck_assert_float_eq(XT[c * ldb + b], 0.0f);
      effml__spmm_t(ctx, rows, m.row_ptr, m.col_idx, v, XT, ldb, 0, YT);
      effml__transpose_out(ctx, YT, ldb, rows, B, bias, 0, Y);
      ck_assert_double_le(tu_max_abs_diff_f32(Y, Yref, B * rows), 1e-5);
      /* accumulate mode adds */
      effml__spmm_t(ctx, rows, m.row_ptr, m.col_idx, v, XT, ldb, 1, YT);
      effml__transpose_out(ctx, YT, ldb, rows, B, NULL, 0, Y);
      for (int64_t i = 0; i < B * rows; ++i)
        ck_assert_float_eq_tol(Y[i], 2.0f * (Yref[i] - bias[i % rows]), 1e-4);
      /* SDDMM vs scalar dot products */
      effml__transpose_in(ctx, DY, B, rows, DYT, ldb);
      effml__sddmm_t(ctx, &m, DYT, XT, ldb, g);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t p = m.row_ptr[r]; p < m.row_ptr[r + 1]; ++p) {
          double s = 0;
          for (int64_t b = 0; b < B; ++b) s += (double)DY[b * rows + r] * X[b * cols + m.col_idx[p]];
          ck_assert_double_le(fabs(s - g[p]), 1e-4);
        }
      free(X); free(DY); free(XT); free(YT); free(DYT); free(Y); free(Yref); free(g);
    }
    free(v); free(bias);
    effml__free(ctx, pos);
    effml__spmat_free(ctx, &m);
  }
  effml_context_free(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("internal_sparse");
  TCase *tc = tcase_create("kernels");
  tcase_add_test(tc, test_kernels_vs_reference);
  suite_add_tcase(s, tc);
  return tu_run(s) ? 1 : 0;
}
