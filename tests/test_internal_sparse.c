/* Sparse kernels: the fast batch-minor kernels against the scalar reference
 * (effml__spmm_ref) and scalar SDDMM, on batches that exercise full 64-wide
 * tiles, 16-wide tails and zero padding; plus the CSC structure. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "../lib/sparse/sparse_internal.h"

/* Under ThreadSanitizer (internal_sparse_tsan) the thread tests run the
 * CPU's ISA level only, and the fused forward every other batch: the
 * threading is the same code at every level, and TSan runs ~20x slower. */
#ifdef EFFML_TEST_TSAN
#  define FIRST_ISA(cpu) (cpu)
#  define BATCH_STEP 2
#else
#  define FIRST_ISA(cpu) 0
#  define BATCH_STEP 1
#endif

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

START_TEST(test_block_kernels_each_isa) {
  /* The 4x1 block kernels of every ISA build this CPU runs (portable, AVX2,
   * AVX-512) against double-precision scalar references, on a 4x1 block mask
   * with a tail block-row (rows 43 = 10 full block-rows + 3), batches that
   * exercise 64-lane tiles, 32- and 16-lane dX tiles, and 1 or 2 threads. */
  static const int64_t batches[4] = {1, 16, 70, 131};
  effml_context *ctx = tu_ctx(5);
  const int64_t rows = 43, cols = 90;
  int64_t *pos = NULL, nnz = 0;
  ck_assert_int_eq(effml__random_block_positions(ctx, effml__ctx_rng(ctx), rows, cols, 4, 1200,
                                                 &pos, &nnz), EFFML_OK);
  for (int64_t i = 1; i < nnz; ++i) ck_assert_int_gt(pos[i], pos[i - 1]);
  effml__spmat m;
  memset(&m, 0, sizeof m);
  m.block = 4;
  ck_assert_int_eq(effml__spmat_init_positions(ctx, &m, rows, cols, nnz, pos), EFFML_OK);
  ck_assert_int_eq(m.block, 4);
  ck_assert(effml__spmat_is_blocked(&m, 4));
  /* 300 blocks: 10 full block-rows x 4 + the tail of 3 rows */
  int64_t units = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += 4) units += m.row_ptr[r0 + 1] - m.row_ptr[r0];
  ck_assert_int_eq(units, 300);
  float *v = malloc(sizeof(float) * (size_t)nnz);
  fill(v, nnz, 9);
  const int cpu = (int)effml_core_isa_level();
  for (int isa = 0; isa <= cpu; ++isa)
    for (int32_t threads = 1; threads <= 2; ++threads) {
      ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
      for (int bi = 0; bi < 4; ++bi) {
        const int64_t B = batches[bi], ldb = (B + 15) / 16 * 16;
        float *X = malloc(sizeof(float) * (size_t)(B * cols)), *DY = malloc(sizeof(float) * (size_t)(B * rows));
        float *XT = malloc(sizeof(float) * (size_t)(cols * ldb)), *YT = malloc(sizeof(float) * (size_t)(rows * ldb));
        float *DYT = malloc(sizeof(float) * (size_t)(rows * ldb)), *DXT = malloc(sizeof(float) * (size_t)(cols * ldb));
        float *g = malloc(sizeof(float) * (size_t)nnz);
        fill(X, B * cols, 13 + (uint64_t)bi);
        fill(DY, B * rows, 17 + (uint64_t)bi);
        effml__transpose_in(ctx, X, B, cols, XT, ldb);
        effml__transpose_in(ctx, DY, B, rows, DYT, ldb);
        effml__bspmm_fwd(ctx, &m, v, XT, ldb, 0, YT, isa);
        effml__bspmm_dx(ctx, &m, v, DYT, ldb, 0, DXT, isa);
        effml__bsddmm(ctx, &m, DYT, XT, ldb, g, NULL, 0, isa);
        double ey = 0, edx = 0, eg = 0;
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t r = 0; r < rows; ++r) {
            double s = 0;
            for (int64_t p = m.row_ptr[r]; p < m.row_ptr[r + 1]; ++p)
              s += (double)v[p] * X[b * cols + m.col_idx[p]];
            ey = fmax(ey, fabs(s - YT[r * ldb + b]));
          }
          for (int64_t c = 0; c < cols; ++c) {
            double s = 0;
            for (int64_t q = m.t_ptr[c]; q < m.t_ptr[c + 1]; ++q)
              s += (double)v[m.t_pos[q]] * DY[b * rows + m.t_idx[q]];
            edx = fmax(edx, fabs(s - DXT[c * ldb + b]));
          }
        }
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t p = m.row_ptr[r]; p < m.row_ptr[r + 1]; ++p) {
            double s = 0;
            for (int64_t b = 0; b < B; ++b) s += (double)DY[b * rows + r] * X[b * cols + m.col_idx[p]];
            eg = fmax(eg, fabs(s - g[p]));
          }
        ck_assert_msg(ey <= 1e-5 && edx <= 1e-5 && eg <= 1e-4,
                      "isa %d, %d threads, batch %lld: |dy| %g |dx| %g |dw| %g", isa, (int)threads,
                      (long long)B, ey, edx, eg);
        /* accumulate mode adds to what is there */
        float *Y1 = malloc(sizeof(float) * (size_t)(rows * ldb));
        memcpy(Y1, YT, sizeof(float) * (size_t)(rows * ldb));
        effml__bspmm_fwd(ctx, &m, v, XT, ldb, 1, YT, isa);
        for (int64_t i = 0; i < rows * ldb; ++i) ck_assert_float_eq_tol(YT[i], 2.0f * Y1[i], 1e-5);
        free(Y1);
        free(X); free(DY); free(XT); free(YT); free(DYT); free(DXT); free(g);
      }
    }
  free(v);
  effml__free(ctx, pos);
  effml__spmat_free(ctx, &m);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_block_kernels_chunked_threads) {
  /* The block kernels hand out block-rows (dX: 64-lane panels) in chunks from
   * a shared counter.  On a matrix big enough for 2 and 3 threads to take
   * many chunks each (101 block-rows incl. a 2-row tail; batch 200 = three
   * 64-lane dX panels + 16 lanes), every ISA build gives the same bytes for
   * 1, 2 and 3 threads, in plain and accumulate mode (dW: added into
   * permuted value slots), and matches a double-precision reference. */
  effml_context *ctx = tu_ctx(11);
  const int64_t rows = 402, cols = 300, B = 200, ldb = 208;
  int64_t *pos = NULL, nnz = 0;
  ck_assert_int_eq(effml__random_block_positions(ctx, effml__ctx_rng(ctx), rows, cols, 4, 12060,
                                                 &pos, &nnz), EFFML_OK);
  effml__spmat m;
  memset(&m, 0, sizeof m);
  m.block = 4;
  ck_assert_int_eq(effml__spmat_init_positions(ctx, &m, rows, cols, nnz, pos), EFFML_OK);
  ck_assert(effml__spmat_is_blocked(&m, 4));
  const size_t ny = (size_t)(rows * ldb), nx = (size_t)(cols * ldb);
  float *v = malloc(sizeof(float) * (size_t)nnz), *X = malloc(sizeof(float) * (size_t)(B * cols));
  float *DY = malloc(sizeof(float) * (size_t)(B * rows));
  float *XT = malloc(sizeof(float) * nx), *DYT = malloc(sizeof(float) * ny);
  float *YT[2], *DXT[2], *G[2], *YA[2], *DXA[2];
  for (int k = 0; k < 2; ++k) {
    YT[k] = malloc(sizeof(float) * ny);
    YA[k] = malloc(sizeof(float) * ny);
    DXT[k] = malloc(sizeof(float) * nx);
    DXA[k] = malloc(sizeof(float) * nx);
    G[k] = malloc(sizeof(float) * (size_t)nnz);
  }
  float *GS = malloc(sizeof(float) * (size_t)nnz), *base = malloc(sizeof(float) * (size_t)nnz);
  int32_t *perm = malloc(sizeof(int32_t) * (size_t)nnz);
  fill(base, nnz, 24);
  for (int64_t p = 0; p < nnz; ++p) perm[p] = (int32_t)p;
  for (int64_t p = nnz - 1; p > 0; --p) { /* a fixed shuffle */
    const int64_t q = (p * 7919 + 13) % (p + 1);
    const int32_t t = perm[p];
    perm[p] = perm[q];
    perm[q] = t;
  }
  fill(v, nnz, 21);
  fill(X, B * cols, 22);
  fill(DY, B * rows, 23);
  effml__transpose_in(ctx, X, B, cols, XT, ldb);
  effml__transpose_in(ctx, DY, B, rows, DYT, ldb);
  const int cpu = (int)effml_core_isa_level();
  for (int isa = FIRST_ISA(cpu); isa <= cpu; ++isa)
    for (int32_t threads = 1; threads <= 3; ++threads) {
      const int k = threads > 1; /* [0]: one thread, [1]: this run */
      ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
      memset(YT[k], 0xff, sizeof(float) * ny); /* NaN: an item left out shows */
      memset(DXT[k], 0xff, sizeof(float) * nx);
      memset(G[k], 0xff, sizeof(float) * (size_t)nnz);
      effml__bspmm_fwd(ctx, &m, v, XT, ldb, 0, YT[k], isa);
      effml__bspmm_dx(ctx, &m, v, DYT, ldb, 0, DXT[k], isa);
      effml__bsddmm(ctx, &m, DYT, XT, ldb, G[k], NULL, 0, isa);
      memcpy(YA[k], DYT, sizeof(float) * ny); /* accumulate onto nonzero data */
      memcpy(DXA[k], XT, sizeof(float) * nx);
      effml__bspmm_fwd(ctx, &m, v, XT, ldb, 1, YA[k], isa);
      effml__bspmm_dx(ctx, &m, v, DYT, ldb, 1, DXA[k], isa);
      if (threads == 1) {
        double ey = 0, edx = 0, eg = 0;
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t r = 0; r < rows; ++r) {
            double s = 0;
            for (int64_t p = m.row_ptr[r]; p < m.row_ptr[r + 1]; ++p)
              s += (double)v[p] * X[b * cols + m.col_idx[p]];
            ey = fmax(ey, fabs(s - YT[0][r * ldb + b]));
          }
          for (int64_t c = 0; c < cols; ++c) {
            double s = 0;
            for (int64_t q = m.t_ptr[c]; q < m.t_ptr[c + 1]; ++q)
              s += (double)v[m.t_pos[q]] * DY[b * rows + m.t_idx[q]];
            edx = fmax(edx, fabs(s - DXT[0][c * ldb + b]));
          }
        }
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t p = m.row_ptr[r]; p < m.row_ptr[r + 1]; ++p) {
            double s = 0;
            for (int64_t b = 0; b < B; ++b) s += (double)DY[b * rows + r] * X[b * cols + m.col_idx[p]];
            eg = fmax(eg, fabs(s - G[0][p]));
          }
        ck_assert_msg(ey <= 1e-5 && edx <= 1e-5 && eg <= 1e-4, "isa %d: |dy| %g |dx| %g |dw| %g",
                      isa, ey, edx, eg);
        continue;
      }
      ck_assert_msg(memcmp(YT[0], YT[1], sizeof(float) * ny) == 0, "isa %d, %d threads: forward", isa, (int)threads);
      ck_assert_msg(memcmp(DXT[0], DXT[1], sizeof(float) * nx) == 0, "isa %d, %d threads: dX", isa, (int)threads);
      ck_assert_msg(memcmp(G[0], G[1], sizeof(float) * (size_t)nnz) == 0, "isa %d, %d threads: dW", isa, (int)threads);
      ck_assert_msg(memcmp(YA[0], YA[1], sizeof(float) * ny) == 0, "isa %d, %d threads: forward, accumulate", isa, (int)threads);
      ck_assert_msg(memcmp(DXA[0], DXA[1], sizeof(float) * nx) == 0, "isa %d, %d threads: dX, accumulate", isa, (int)threads);
      /* dW added into permuted value slots (the layer's gradient after RigL moved
       * slots): grad[slot[p]] = base + value(p), one float add, exactly */
      for (int64_t p = 0; p < nnz; ++p) GS[p] = base[p];
      effml__bsddmm(ctx, &m, DYT, XT, ldb, GS, perm, 1, isa);
      for (int64_t p = 0; p < nnz; ++p)
        ck_assert_msg(GS[perm[p]] == base[perm[p]] + G[0][p],
                      "isa %d, %d threads: dW into slot %d of position %lld", isa, (int)threads,
                      (int)perm[p], (long long)p);
    }
  for (int k = 0; k < 2; ++k) {
    free(YT[k]); free(YA[k]); free(DXT[k]); free(DXA[k]); free(G[k]);
  }
  free(v); free(X); free(DY); free(XT); free(DYT); free(GS); free(base); free(perm);
  effml__free(ctx, pos);
  effml__spmat_free(ctx, &m);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_csr_kernels_chunked_threads) {
  /* The CSR kernels hand out (64-lane tile, row chunk) items (SDDMM: row
   * chunks) from a shared counter.  On a matrix with empty rows and rows of
   * very different lengths, big enough for 2 and 3 threads to take many
   * items (batch 200: three 64-lane tiles + a 16-lane rest), every ISA level
   * gives the same bytes for 1, 2 and 3 threads: forward through CSR, dX
   * through CSC, plain and accumulate, and SDDMM; one thread matches a
   * double-precision reference. */
  effml_context *ctx = tu_ctx(12);
  const int64_t rows = 402, cols = 300, B = 200, ldb = 208;
  /* rows 40..79 empty, rows 200..209 dense, the rest about 1 in 9 */
  int64_t *pos = malloc(sizeof(int64_t) * (size_t)(rows * cols)), nnz = 0;
  uint64_t st = 99;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      st = st * 6364136223846793005ULL + 1442695040888963407ULL;
      const int keep = r >= 40 && r < 80 ? 0 : r >= 200 && r < 210 ? 1 : (st >> 33) % 9 == 0;
      if (keep) pos[nnz++] = r * cols + c;
    }
  effml__spmat m;
  memset(&m, 0, sizeof m);
  ck_assert_int_eq(effml__spmat_init_positions(ctx, &m, rows, cols, nnz, pos), EFFML_OK);
  const size_t ny = (size_t)(rows * ldb), nx = (size_t)(cols * ldb);
  float *v = malloc(sizeof(float) * (size_t)nnz), *vt = malloc(sizeof(float) * (size_t)nnz);
  float *X = malloc(sizeof(float) * (size_t)(B * cols)), *DY = malloc(sizeof(float) * (size_t)(B * rows));
  float *XT = malloc(sizeof(float) * nx), *DYT = malloc(sizeof(float) * ny);
  float *YT[2], *DXT[2], *G[2], *YA[2], *DXA[2];
  for (int k = 0; k < 2; ++k) {
    YT[k] = malloc(sizeof(float) * ny);
    YA[k] = malloc(sizeof(float) * ny);
    DXT[k] = malloc(sizeof(float) * nx);
    DXA[k] = malloc(sizeof(float) * nx);
    G[k] = malloc(sizeof(float) * (size_t)nnz);
  }
  fill(v, nnz, 31);
  for (int64_t q = 0; q < nnz; ++q) vt[q] = v[m.t_pos[q]];
  fill(X, B * cols, 32);
  fill(DY, B * rows, 33);
  effml__transpose_in(ctx, X, B, cols, XT, ldb);
  effml__transpose_in(ctx, DY, B, rows, DYT, ldb);
  const int cpu = (int)effml_core_isa_level();
  for (int isa = FIRST_ISA(cpu); isa <= cpu; ++isa)
    for (int32_t threads = 1; threads <= 3; ++threads) {
      const int k = threads > 1; /* [0]: one thread, [1]: this run */
      ck_assert_int_eq(effml_context_set_isa_level(ctx, isa), EFFML_OK);
      ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
      memset(YT[k], 0xff, sizeof(float) * ny); /* NaN: an item left out shows */
      memset(DXT[k], 0xff, sizeof(float) * nx);
      memset(G[k], 0xff, sizeof(float) * (size_t)nnz);
      effml__spmm_t(ctx, rows, m.row_ptr, m.col_idx, v, XT, ldb, 0, YT[k]);
      effml__spmm_t(ctx, cols, m.t_ptr, m.t_idx, vt, DYT, ldb, 0, DXT[k]);
      effml__sddmm_t(ctx, &m, DYT, XT, ldb, G[k]);
      memcpy(YA[k], DYT, sizeof(float) * ny); /* accumulate onto nonzero data */
      memcpy(DXA[k], XT, sizeof(float) * nx);
      effml__spmm_t(ctx, rows, m.row_ptr, m.col_idx, v, XT, ldb, 1, YA[k]);
      effml__spmm_t(ctx, cols, m.t_ptr, m.t_idx, vt, DYT, ldb, 1, DXA[k]);
      if (threads == 1) {
        double ey = 0, edx = 0, eg = 0, ea = 0;
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t r = 0; r < rows; ++r) {
            double s = 0;
            for (int64_t p = m.row_ptr[r]; p < m.row_ptr[r + 1]; ++p)
              s += (double)v[p] * X[b * cols + m.col_idx[p]];
            ey = fmax(ey, fabs(s - YT[0][r * ldb + b]));
            ea = fmax(ea, fabs(s + DYT[r * ldb + b] - YA[0][r * ldb + b]));
          }
          for (int64_t c = 0; c < cols; ++c) {
            double s = 0;
            for (int64_t q = m.t_ptr[c]; q < m.t_ptr[c + 1]; ++q)
              s += (double)vt[q] * DY[b * rows + m.t_idx[q]];
            edx = fmax(edx, fabs(s - DXT[0][c * ldb + b]));
            ea = fmax(ea, fabs(s + XT[c * ldb + b] - DXA[0][c * ldb + b]));
          }
        }
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t p = m.row_ptr[r]; p < m.row_ptr[r + 1]; ++p) {
            double s = 0;
            for (int64_t b = 0; b < B; ++b) s += (double)DY[b * rows + r] * X[b * cols + m.col_idx[p]];
            eg = fmax(eg, fabs(s - G[0][p]));
          }
        /* the padding lanes of Xᵀ are zero, so they must come out zero */
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t b = B; b < ldb; ++b) ck_assert_float_eq(YT[0][r * ldb + b], 0.0f);
        ck_assert_msg(ey <= 1e-4 && edx <= 1e-4 && eg <= 1e-3 && ea <= 1e-4,
                      "isa %d: |dy| %g |dx| %g |dw| %g |acc| %g", isa, ey, edx, eg, ea);
        continue;
      }
      ck_assert_msg(memcmp(YT[0], YT[1], sizeof(float) * ny) == 0, "isa %d, %d threads: forward", isa, (int)threads);
      ck_assert_msg(memcmp(DXT[0], DXT[1], sizeof(float) * nx) == 0, "isa %d, %d threads: dX", isa, (int)threads);
      ck_assert_msg(memcmp(G[0], G[1], sizeof(float) * (size_t)nnz) == 0, "isa %d, %d threads: dW", isa, (int)threads);
      ck_assert_msg(memcmp(YA[0], YA[1], sizeof(float) * ny) == 0, "isa %d, %d threads: forward, accumulate", isa, (int)threads);
      ck_assert_msg(memcmp(DXA[0], DXA[1], sizeof(float) * nx) == 0, "isa %d, %d threads: dX, accumulate", isa, (int)threads);
    }
  for (int k = 0; k < 2; ++k) {
    free(YT[k]); free(YA[k]); free(DXT[k]); free(DXA[k]); free(G[k]);
  }
  free(pos); free(v); free(vt); free(X); free(DY); free(XT); free(DYT);
  effml__spmat_free(ctx, &m);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_block_forward_fused) {
  /* effml__bspmm_forward (Xᵀ packed and Y written row-major in one call) gives
   * the same bytes as effml__transpose_in + effml__bspmm_fwd +
   * effml__transpose_out, for every ISA level, 1/2/3 threads, with and
   * without bias, plain and accumulate; shapes cover 64-, 32- and 16-lane
   * tiles (cols <= 2048, <= 4096, > 4096), a tail block-row, a last row group
   * shorter than 16 rows, batches that are not multiples of 16, and column
   * counts that are not multiples of 16.  The Xᵀ it leaves is transpose_in's. */
  static const int64_t shapes[4][3] = {{43, 90, 1200}, {402, 300, 12060}, {70, 2100, 9000},
                                       {21, 4111, 6000}};
  static const int64_t batches[5] = {1, 16, 70, 131, 200};
  effml_context *ctx = tu_ctx(13);
  const int cpu = (int)effml_core_isa_level();
  for (int si = 0; si < 4; ++si) {
    const int64_t rows = shapes[si][0], cols = shapes[si][1];
    int64_t *pos = NULL, nnz = 0;
    ck_assert_int_eq(effml__random_block_positions(ctx, effml__ctx_rng(ctx), rows, cols, 4,
                                                   shapes[si][2], &pos, &nnz), EFFML_OK);
    effml__spmat m;
    memset(&m, 0, sizeof m);
    m.block = 4;
    ck_assert_int_eq(effml__spmat_init_positions(ctx, &m, rows, cols, nnz, pos), EFFML_OK);
    float *v = malloc(sizeof(float) * (size_t)nnz), *bias = malloc(sizeof(float) * (size_t)rows);
    fill(v, nnz, 40 + (uint64_t)si);
    fill(bias, rows, 50 + (uint64_t)si);
    for (int bi = 0; bi < 5; bi += BATCH_STEP) {
      const int64_t B = batches[bi], ldb = (B + 15) / 16 * 16;
      const size_t nxt = (size_t)(cols * ldb), ny = (size_t)(B * rows);
      float *X = malloc(sizeof(float) * (size_t)(B * cols));
      float *XT0 = malloc(sizeof(float) * nxt), *XT1 = malloc(sizeof(float) * nxt);
      float *YT = malloc(sizeof(float) * (size_t)(rows * ldb));
      float *Y0 = malloc(sizeof(float) * ny), *Y1 = malloc(sizeof(float) * ny);
      float *Yinit = malloc(sizeof(float) * ny);
      fill(X, B * cols, 60 + (uint64_t)bi);
      fill(Yinit, (int64_t)ny, 70 + (uint64_t)bi);
      for (int isa = FIRST_ISA(cpu); isa <= cpu; ++isa)
        for (int32_t threads = 1; threads <= 3; ++threads)
          for (int mode = 0; mode < 4; ++mode) { /* bit 0: bias, bit 1: accumulate */
            const float *bb = mode & 1 ? bias : NULL;
            const int acc = mode >> 1;
            ck_assert_int_eq(effml_context_set_isa_level(ctx, isa), EFFML_OK);
            ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
            memcpy(Y0, Yinit, sizeof(float) * ny);
            memcpy(Y1, Yinit, sizeof(float) * ny);
            memset(XT1, 0xff, sizeof(float) * nxt); /* NaN: a column left unpacked shows */
            effml__transpose_in(ctx, X, B, cols, XT0, ldb);
            effml__bspmm_fwd(ctx, &m, v, XT0, ldb, 0, YT, isa);
            effml__transpose_out(ctx, YT, ldb, rows, B, bb, acc, Y0);
            effml__bspmm_forward(ctx, &m, v, X, B, XT1, ldb, bb, acc, Y1, isa);
            ck_assert_msg(memcmp(XT0, XT1, sizeof(float) * nxt) == 0,
                          "%lldx%lld batch %lld isa %d, %d threads: Xᵀ", (long long)rows,
                          (long long)cols, (long long)B, isa, (int)threads);
            size_t i = 0;
            while (i < ny && memcmp(&Y0[i], &Y1[i], sizeof(float)) == 0) ++i;
            ck_assert_msg(i == ny,
                          "%lldx%lld batch %lld isa %d, %d threads, mode %d: Y[%lld, %lld] "
                          "%.9g vs %.9g", (long long)rows, (long long)cols, (long long)B, isa,
                          (int)threads, mode, (long long)(i / (size_t)rows),
                          (long long)(i % (size_t)rows), i < ny ? Y1[i] : 0.0, i < ny ? Y0[i] : 0.0);
          }
      /* and against a double-precision reference (the last run: all threads, bias, accumulate) */
      double e = 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t r = 0; r < rows; ++r) {
          double s = (double)Yinit[b * rows + r] + bias[r];
          for (int64_t p = m.row_ptr[r]; p < m.row_ptr[r + 1]; ++p)
            s += (double)v[p] * X[b * cols + m.col_idx[p]];
          e = fmax(e, fabs(s - Y1[b * rows + r]));
        }
      ck_assert_msg(e <= 1e-4, "%lldx%lld batch %lld: |y - ref| %g", (long long)rows,
                    (long long)cols, (long long)B, e);
      free(X); free(XT0); free(XT1); free(YT); free(Y0); free(Y1); free(Yinit);
    }
    free(v); free(bias);
    effml__free(ctx, pos);
    effml__spmat_free(ctx, &m);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_csr_forward_fused) {
  /* effml__spmm_forward (the unstructured CSR forward in one call) gives the
   * same bytes as effml__transpose_in + effml__spmm_t + effml__transpose_out,
   * for every ISA level, 1/2/3 threads, with and without bias, plain and
   * accumulate; rows that are not a multiple of 16, batches that are not
   * multiples of 16 or 64, column counts that are not multiples of 16 or 64,
   * a wide matrix.  The Xᵀ it leaves is transpose_in's. */
  static const int64_t shapes[4][3] = {{43, 90, 1200}, {402, 300, 12060}, {70, 2100, 9000},
                                       {21, 4111, 6000}};
  static const int64_t batches[5] = {1, 16, 70, 131, 200};
  effml_context *ctx = tu_ctx(13);
  const int cpu = (int)effml_core_isa_level();
  for (int si = 0; si < 4; ++si) {
    const int64_t rows = shapes[si][0], cols = shapes[si][1];
    int64_t *pos = NULL, nnz = 0;
    nnz = shapes[si][2];
    ck_assert_int_eq(effml__random_positions(ctx, effml__ctx_rng(ctx), rows * cols, nnz, &pos),
                     EFFML_OK);
    effml__spmat m;
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(effml__spmat_init_positions(ctx, &m, rows, cols, nnz, pos), EFFML_OK);
    float *v = malloc(sizeof(float) * (size_t)nnz), *bias = malloc(sizeof(float) * (size_t)rows);
    fill(v, nnz, 40 + (uint64_t)si);
    fill(bias, rows, 50 + (uint64_t)si);
    for (int bi = 0; bi < 5; bi += BATCH_STEP) {
      const int64_t B = batches[bi], ldb = (B + 15) / 16 * 16;
      const size_t nxt = (size_t)(cols * ldb), ny = (size_t)(B * rows);
      float *X = malloc(sizeof(float) * (size_t)(B * cols));
      float *XT0 = malloc(sizeof(float) * nxt), *XT1 = malloc(sizeof(float) * nxt);
      float *YT = malloc(sizeof(float) * (size_t)(rows * ldb));
      float *Y0 = malloc(sizeof(float) * ny), *Y1 = malloc(sizeof(float) * ny);
      float *Yinit = malloc(sizeof(float) * ny);
      fill(X, B * cols, 60 + (uint64_t)bi);
      fill(Yinit, (int64_t)ny, 70 + (uint64_t)bi);
      for (int isa = FIRST_ISA(cpu); isa <= cpu; ++isa)
        for (int32_t threads = 1; threads <= 3; ++threads)
          for (int mode = 0; mode < 4; ++mode) { /* bit 0: bias, bit 1: accumulate */
            const float *bb = mode & 1 ? bias : NULL;
            const int acc = mode >> 1;
            ck_assert_int_eq(effml_context_set_isa_level(ctx, isa), EFFML_OK);
            ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
            memcpy(Y0, Yinit, sizeof(float) * ny);
            memcpy(Y1, Yinit, sizeof(float) * ny);
            memset(XT1, 0xff, sizeof(float) * nxt); /* NaN: a column left unpacked shows */
            effml__transpose_in(ctx, X, B, cols, XT0, ldb);
            effml__spmm_t(ctx, rows, m.row_ptr, m.col_idx, v, XT0, ldb, 0, YT);
            effml__transpose_out(ctx, YT, ldb, rows, B, bb, acc, Y0);
            effml__spmm_forward(ctx, &m, v, X, B, XT1, ldb, bb, acc, Y1);
            ck_assert_msg(memcmp(XT0, XT1, sizeof(float) * nxt) == 0,
                          "%lldx%lld batch %lld isa %d, %d threads: Xᵀ", (long long)rows,
                          (long long)cols, (long long)B, isa, (int)threads);
            size_t i = 0;
            while (i < ny && memcmp(&Y0[i], &Y1[i], sizeof(float)) == 0) ++i;
            ck_assert_msg(i == ny,
                          "%lldx%lld batch %lld isa %d, %d threads, mode %d: Y[%lld, %lld] "
                          "%.9g vs %.9g", (long long)rows, (long long)cols, (long long)B, isa,
                          (int)threads, mode, (long long)(i / (size_t)rows),
                          (long long)(i % (size_t)rows), i < ny ? Y1[i] : 0.0, i < ny ? Y0[i] : 0.0);
          }
      /* and against a double-precision reference (the last run: all threads, bias, accumulate) */
      double e = 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t r = 0; r < rows; ++r) {
          double s = (double)Yinit[b * rows + r] + bias[r];
          for (int64_t p = m.row_ptr[r]; p < m.row_ptr[r + 1]; ++p)
            s += (double)v[p] * X[b * cols + m.col_idx[p]];
          e = fmax(e, fabs(s - Y1[b * rows + r]));
        }
      ck_assert_msg(e <= 1e-4, "%lldx%lld batch %lld: |y - ref| %g", (long long)rows,
                    (long long)cols, (long long)B, e);
      free(X); free(XT0); free(XT1); free(YT); free(Y0); free(Y1); free(Yinit);
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
  tcase_add_test(tc, test_block_kernels_each_isa);
  suite_add_tcase(s, tc);
  /* the kernels' own threads hand work out from shared counters: this case
   * also runs under ThreadSanitizer (internal_sparse_tsan) */
  TCase *th = tcase_create("threads");
  tcase_add_test(th, test_block_kernels_chunked_threads);
  tcase_add_test(th, test_csr_kernels_chunked_threads);
  tcase_add_test(th, test_block_forward_fused);
  tcase_add_test(th, test_csr_forward_fused);
  tcase_set_timeout(th, 300);
  suite_add_tcase(s, th);
  return tu_run(s) ? 1 : 0;
}
