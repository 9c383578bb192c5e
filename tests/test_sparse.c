/* Sparse-IFT: sparse layers vs a dense masked CBLAS reference, sizing
 * anchors (arXiv 2303.11525, §2.2), iso-FLOP, masks, ERK, RigL/SET, bad input. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EFFML_EXPERIMENTAL /* effml_adapter_lora_merge_drift, effml_dst_training_flops, EFFML_SPARSE_COMPAT_FLOAT */
#include "testutil.h"

/* ---------------- helpers ---------------- */

static int32_t param_index(effml_layer *l, const char *name) {
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
    if (strcmp(effml_layer_param_name(l, i), name) == 0) return i;
  return -1;
}

static float *pdata(effml_layer *l, const char *name) {
  int32_t i = param_index(l, name);
  ck_assert_int_ge(i, 0);
  return (float *)effml_tensor_data(effml_layer_param(l, i));
}

static float *gdata(effml_layer *l, const char *name) {
  int32_t i = param_index(l, name);
  ck_assert_int_ge(i, 0);
  return (float *)effml_tensor_data(effml_layer_param_grad(l, i));
}

/* Dense masked copy of sparse matrix m (malloc'ed). */
static float *dense_of(effml_context *ctx, effml_layer *l, int32_t m, int grad, int64_t *rows,
                       int64_t *cols) {
  ck_assert_int_eq(effml_sparse_matrix_shape(ctx, l, m, rows, cols), EFFML_OK);
  effml_tensor *t = tu_f32(ctx, *rows, *cols, NULL);
  if (grad)
    ck_assert_int_eq(effml_sparse_matrix_grad_to_dense(ctx, l, m, t), EFFML_OK);
  else
    ck_assert_int_eq(effml_sparse_matrix_to_dense(ctx, l, m, t), EFFML_OK);
  size_t n = (size_t)(*rows * *cols);
  float *d = malloc(n * sizeof(float));
  memcpy(d, effml_tensor_data(t), n * sizeof(float));
  effml_tensor_free(t);
  return d;
}

/* C[M,N] = beta C + A·op(B) with row-major A [M,K]. */
static void mm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, const float *B,
               float beta, float *C) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              (int)M, (int)N, (int)K, 1.0f, A, ta ? (int)M : (int)K, B, tb ? (int)K : (int)N, beta,
              C, (int)N);
}

static void assert_close(const float *a, const float *b, int64_t n, double tol, const char *what) {
  double scale = 1.0;
  for (int64_t i = 0; i < n; ++i) scale = fmax(scale, fabs((double)b[i]));
  double d = tu_max_abs_diff_f32(a, b, n);
  ck_assert_msg(d <= tol * scale, "%s: max |diff| %g > %g (scale %g)", what, d, tol * scale, scale);
}

/* Zero `ref` wherever mask (dense weights) is zero. */
static void apply_mask(float *ref, const float *w, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (w[i] == 0.0f) ref[i] = 0.0f;
}

enum { K_LINEAR, K_WIDE, K_PARALLEL, K_FACTORIZED, K_DOPED };

static effml_layer *make_b(effml_context *ctx, int kind, int64_t in, int64_t out, double s,
                           int32_t block) {
  effml_sparse_options o;
  effml_sparse_options_init(&o);
  o.sparsity = s;
  o.block_rows = block;
  effml_layer *l = NULL;
  effml_status st = EFFML_E_STATE;
  switch (kind) {
    case K_LINEAR: st = effml_sparse_linear_create(ctx, in, out, &o, &l); break;
    case K_WIDE: st = effml_sparse_wide_create(ctx, in, out, &o, &l); break;
    case K_PARALLEL: st = effml_sparse_parallel_create(ctx, in, out, &o, &l); break;
    case K_FACTORIZED: st = effml_sparse_factorized_create(ctx, in, out, &o, &l); break;
    default: st = effml_sparse_doped_create(ctx, in, out, &o, &l); break;
  }
  ck_assert_msg(st == EFFML_OK, "%s", effml_context_last_error(ctx));
  return l;
}

static effml_layer *make(effml_context *ctx, int kind, int64_t in, int64_t out, double s) {
  return make_b(ctx, kind, in, out, s, 1);
}

/* Forward + backward of layer l against the dense masked reference. */
static void check_against_dense(effml_context *ctx, effml_layer *l, int kind, int64_t batch) {
  const int64_t in = effml_layer_in_features(l), out = effml_layer_out_features(l);
  effml_tensor *x = tu_f32(ctx, batch, in, NULL), *y = tu_f32(ctx, batch, out, NULL);
  effml_tensor *dy = tu_f32(ctx, batch, out, NULL), *dx = tu_f32(ctx, batch, in, NULL);
  tu_fill_uniform(x, 11, -1.0f, 1.0f);
  tu_fill_uniform(dy, 12, -1.0f, 1.0f);
  const float *X = effml_tensor_data(x), *DY = effml_tensor_data(dy);
  float *yref = calloc((size_t)(batch * out), sizeof(float));
  float *dxref = calloc((size_t)(batch * in), sizeof(float));
  const float *b = pdata(l, "bias");
  for (int64_t i = 0; i < batch; ++i) memcpy(yref + i * out, b, (size_t)out * sizeof(float));

  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  effml_layer_zero_grad(l);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);

  int64_t r, c;
  if (kind == K_FACTORIZED) {
    float *U = dense_of(ctx, l, 0, 0, &r, &c); /* [d, in] */
    int64_t d = r;
    float *V = dense_of(ctx, l, 1, 0, &r, &c); /* [out, d] */
    float *H = calloc((size_t)(batch * d), sizeof(float)), *A = calloc((size_t)(batch * d), sizeof(float));
    mm(0, 1, batch, d, in, X, U, 0.0f, H);
    for (int64_t i = 0; i < batch * d; ++i) A[i] = H[i] > 0 ? H[i] : 0;
    mm(0, 1, batch, out, d, A, V, 1.0f, yref);
    /* backward */
    float *dA = calloc((size_t)(batch * d), sizeof(float));
    mm(0, 0, batch, d, out, DY, V, 0.0f, dA);
    for (int64_t i = 0; i < batch * d; ++i) if (!(H[i] > 0)) dA[i] = 0;
    float *dV = calloc((size_t)(out * d), sizeof(float)), *dU = calloc((size_t)(d * in), sizeof(float));
    mm(1, 0, out, d, batch, DY, A, 0.0f, dV);
    mm(1, 0, d, in, batch, dA, X, 0.0f, dU);
    apply_mask(dV, V, out * d);
    apply_mask(dU, U, d * in);
    mm(0, 0, batch, in, d, dA, U, 0.0f, dxref);
    float *gU = dense_of(ctx, l, 0, 1, &r, &c), *gV = dense_of(ctx, l, 1, 1, &r, &c);
    assert_close(gU, dU, d * in, 1e-4, "SF dU");
    assert_close(gV, dV, out * d, 1e-4, "SF dV");
    free(U); free(V); free(H); free(A); free(dA); free(dV); free(dU); free(gU); free(gV);
  } else {
    int32_t nm = effml_sparse_num_matrices(l);
    for (int32_t m = 0; m < nm; ++m) {
      float *W = dense_of(ctx, l, m, 0, &r, &c);
      ck_assert_int_eq(r, out);
      ck_assert_int_eq(c, in);
      mm(0, 1, batch, out, in, X, W, 1.0f, yref);
      mm(0, 0, batch, in, out, DY, W, 1.0f, dxref);
      float *dW = calloc((size_t)(out * in), sizeof(float));
      mm(1, 0, out, in, batch, DY, X, 0.0f, dW);
      apply_mask(dW, W, out * in);
      float *g = dense_of(ctx, l, m, 1, &r, &c);
      assert_close(g, dW, out * in, 1e-4, "dW");
      free(W); free(dW); free(g);
    }
    if (kind == K_DOPED) {
      int64_t rank = effml_tensor_dim(effml_layer_param(l, param_index(l, "u")), 0);
      const float *U = pdata(l, "u"), *V = pdata(l, "v");
      float *T = calloc((size_t)(batch * rank), sizeof(float)), *dT = calloc((size_t)(batch * rank), sizeof(float));
      mm(0, 1, batch, rank, in, X, U, 0.0f, T);
      mm(0, 1, batch, out, rank, T, V, 1.0f, yref);
      mm(0, 0, batch, rank, out, DY, V, 0.0f, dT);
      mm(0, 0, batch, in, rank, dT, U, 1.0f, dxref);
      float *dU = calloc((size_t)(rank * in), sizeof(float)), *dV = calloc((size_t)(out * rank), sizeof(float));
      mm(1, 0, out, rank, batch, DY, T, 0.0f, dV);
      mm(1, 0, rank, in, batch, dT, X, 0.0f, dU);
      assert_close(gdata(l, "u"), dU, rank * in, 1e-4, "SD dU");
      assert_close(gdata(l, "v"), dV, out * rank, 1e-4, "SD dV");
      free(T); free(dT); free(dU); free(dV);
    }
  }
  assert_close(effml_tensor_data(y), yref, batch * out, 1e-5, "forward");
  assert_close(effml_tensor_data(dx), dxref, batch * in, 1e-5, "dx");
  float *dbref = calloc((size_t)out, sizeof(float));
  for (int64_t i = 0; i < batch; ++i)
    for (int64_t j = 0; j < out; ++j) dbref[j] += DY[i * out + j];
  assert_close(gdata(l, "bias"), dbref, out, 1e-5, "db");
  free(dbref); free(yref); free(dxref);
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(dy); effml_tensor_free(dx);
}

/* ---------------- forward/backward vs dense ---------------- */

START_TEST(test_matches_dense) {
  static const double S[3] = {0.5, 0.75, 0.9};
  static const char *names[5] = {"linear", "wide", "parallel", "factorized", "doped"};
  for (int kind = 0; kind < 5; ++kind)
    for (int si = 0; si < 3; ++si)
      for (int bi = 0; bi < 2; ++bi) {
        effml_context *ctx = tu_ctx(100 + (uint64_t)kind);
        int64_t batch = bi ? 70 : 5; /* 70: a 64-wide tile plus a tail; 5: one padded tile */
        effml_layer *l = make(ctx, kind, 37, 29, S[si]);
        ck_assert_str_eq(effml_layer_kind(l), kind == K_LINEAR ? "sparse_linear"
                                              : kind == K_WIDE ? "sparse_wide"
                                                               : kind == K_PARALLEL ? "sparse_parallel"
                                                                 : kind == K_FACTORIZED ? "sparse_factorized"
                                                                                        : "sparse_doped");
        (void)names;
        check_against_dense(ctx, l, kind, batch);
        /* second pass with a different batch reuses the workspaces */
        check_against_dense(ctx, l, kind, batch + 17);
        effml_layer_free(l);
        effml_context_free(ctx);
      }
}
END_TEST

START_TEST(test_user_csr_pytorch_58770) {
  /* CSR 3x5 times dense 5x2 equals the dense product (pytorch #58770). */
  effml_context *ctx = tu_ctx(1);
  int64_t rp[4] = {0, 2, 3, 5};
  int32_t ci[5] = {0, 4, 2, 1, 3};
  float v[5] = {1, 2, 3, 4, 5};
  effml_sparse_options o;
  effml_sparse_options_init(&o);
  o.bias = 0;
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_sparse_linear_create_csr(ctx, 5, 3, 5, rp, ci, v, &o, &l), EFFML_OK);
  float xv[10] = {1, 2, 3, 4, 5, -1, 0, 2, 0.5f, 1};
  effml_tensor *x = tu_f32(ctx, 2, 5, xv), *y = tu_f32(ctx, 2, 3, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
  const float *Y = effml_tensor_data(y);
  float expect[6] = {1 + 10, 9, 8 + 20, -1 + 2, 6, 0 + 2.5f};
  for (int i = 0; i < 6; ++i) ck_assert_float_eq_tol(Y[i], expect[i], 1e-6);
  ck_assert_int_eq(effml_sparse_nnz(l), 5);
  effml_tensor_free(x); effml_tensor_free(y);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_thread_count_invariance) {
  /* Bit-identical outputs, gradients and masks for 1, 2 and 3 threads. */
  float *ref_y = NULL, *ref_dx = NULL, *ref_g = NULL;
  const int64_t batch = 50, in = 300, out = 260;
  for (int32_t nt = 1; nt <= 3; ++nt) {
    effml_context *ctx = tu_ctx(7);
    ck_assert_int_eq(effml_context_set_num_threads(ctx, nt), EFFML_OK);
    effml_layer *l = make(ctx, K_PARALLEL, in, out, 0.75);
    effml_tensor *x = tu_f32(ctx, batch, in, NULL), *y = tu_f32(ctx, batch, out, NULL);
    effml_tensor *dy = tu_f32(ctx, batch, out, NULL), *dx = tu_f32(ctx, batch, in, NULL);
    tu_fill_uniform(x, 1, -1, 1);
    tu_fill_uniform(dy, 2, -1, 1);
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
    effml_layer_zero_grad(l);
    ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
    int64_t r, c;
    float *g = dense_of(ctx, l, 1, 1, &r, &c);
    if (nt == 1) {
      ref_y = malloc(sizeof(float) * (size_t)(batch * out));
      ref_dx = malloc(sizeof(float) * (size_t)(batch * in));
      memcpy(ref_y, effml_tensor_data(y), sizeof(float) * (size_t)(batch * out));
      memcpy(ref_dx, effml_tensor_data(dx), sizeof(float) * (size_t)(batch * in));
      ref_g = g;
    } else {
      ck_assert(memcmp(ref_y, effml_tensor_data(y), sizeof(float) * (size_t)(batch * out)) == 0);
      ck_assert(memcmp(ref_dx, effml_tensor_data(dx), sizeof(float) * (size_t)(batch * in)) == 0);
      ck_assert(memcmp(ref_g, g, sizeof(float) * (size_t)(r * c)) == 0);
      free(g);
    }
    effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(dy); effml_tensor_free(dx);
    effml_layer_free(l);
    effml_context_free(ctx);
  }
  free(ref_y); free(ref_dx); free(ref_g);
}
END_TEST

/* ---------------- block-sparse layout (4x1 blocks) ---------------- */

/* Every block-row (rows 4i..4i+3, and the tail rows) of matrix m keeps the
 * same columns; returns the number of nonzeros seen. */
static int64_t assert_blocked(effml_context *ctx, effml_layer *l, int32_t m) {
  int64_t r, c, nz = 0;
  float *W = dense_of(ctx, l, m, 0, &r, &c);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) {
      const int64_t i0 = i / 4 * 4;
      nz += W[i * c + j] != 0.0f;
      ck_assert_msg((W[i * c + j] != 0.0f) == (W[i0 * c + j] != 0.0f),
                    "matrix %d: row %lld col %lld differs from row %lld of its block-row",
                    (int)m, (long long)i, (long long)j, (long long)i0);
    }
  free(W);
  return nz;
}

START_TEST(test_block_matches_dense) {
  /* The 4x1 block kernels against the dense masked reference for every
   * Sparse-IFT kind: out 29 (a tail block-row of one row) and 68 (none),
   * batches 5, 70 (a 64-lane tile plus a tail) and 22/87 on the second pass. */
  static const double S[2] = {0.5, 0.9};
  static const int64_t OUT[2] = {29, 68};
  for (int kind = 0; kind < 5; ++kind)
    for (int si = 0; si < 2; ++si)
      for (int oi = 0; oi < 2; ++oi)
        for (int bi = 0; bi < 2; ++bi) {
          effml_context *ctx = tu_ctx(300 + (uint64_t)kind);
          const int64_t batch = bi ? 70 : 5;
          effml_layer *l = make_b(ctx, kind, 131, OUT[oi], S[si], 4);
          int64_t nz = 0;
          for (int32_t m = 0; m < effml_sparse_num_matrices(l); ++m) nz += assert_blocked(ctx, l, m);
          ck_assert_int_eq(nz, effml_sparse_nnz(l));
          check_against_dense(ctx, l, kind, batch);
          check_against_dense(ctx, l, kind, batch + 17);
          effml_layer_free(l);
          effml_context_free(ctx);
        }
}
END_TEST

/* L = Σ y ⊙ dy for the layer's current values (double accumulation). */
static double block_loss(effml_context *ctx, effml_layer *l, effml_tensor *x, effml_tensor *y,
                         const float *DY) {
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
  const float *Y = effml_tensor_data(y);
  double s = 0.0;
  for (int64_t i = 0; i < effml_tensor_numel(y); ++i) s += (double)Y[i] * (double)DY[i];
  return s;
}

START_TEST(test_block_finite_differences) {
  /* Nonzero gradients and dX of a block layer by central differences of
   * L = Σ y ⊙ dy (f32 forward, step 1e-2: tolerance 2e-3 relative). */
  effml_context *ctx = tu_ctx(41);
  effml_layer *l = make_b(ctx, K_LINEAR, 23, 10, 0.6, 4);
  const int64_t batch = 6, in = 23, out = 10;
  effml_tensor *x = tu_f32(ctx, batch, in, NULL), *y = tu_f32(ctx, batch, out, NULL);
  effml_tensor *dy = tu_f32(ctx, batch, out, NULL), *dx = tu_f32(ctx, batch, in, NULL);
  tu_fill_uniform(x, 5, -1, 1);
  tu_fill_uniform(dy, 6, -1, 1);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  effml_layer_zero_grad(l);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
  float *w = pdata(l, "weight"), *g = gdata(l, "weight");
  const float *DY = effml_tensor_data(dy);
  const double h = 1e-2;
  for (int64_t p = 0; p < effml_sparse_nnz(l); ++p) {
    const float w0 = w[p];
    w[p] = (float)(w0 + h);
    double lp = block_loss(ctx, l, x, y, DY);
    w[p] = (float)(w0 - h);
    double lm = block_loss(ctx, l, x, y, DY);
    w[p] = w0;
    double fd = (lp - lm) / (2 * h);
    ck_assert_msg(fabs(fd - g[p]) <= 2e-3 * fmax(1.0, fabs(fd)), "dW[%lld]: fd %g vs %g",
                  (long long)p, fd, (double)g[p]);
  }
  float *X = effml_tensor_data(x);
  const float *DX = effml_tensor_data(dx);
  for (int64_t i = 0; i < batch * in; ++i) {
    const float x0 = X[i];
    X[i] = (float)(x0 + h);
    double lp = block_loss(ctx, l, x, y, DY);
    X[i] = (float)(x0 - h);
    double lm = block_loss(ctx, l, x, y, DY);
    X[i] = x0;
    double fd = (lp - lm) / (2 * h);
    ck_assert_msg(fabs(fd - DX[i]) <= 2e-3 * fmax(1.0, fabs(fd)), "dX[%lld]: fd %g vs %g",
                  (long long)i, fd, (double)DX[i]);
  }
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(dy); effml_tensor_free(dx);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_block_thread_invariance) {
  /* Bit-identical y, dX, dW for 1, 2, 3 threads (dX is split over batch lanes). */
  float *ry = NULL, *rdx = NULL, *rg = NULL;
  const int64_t batch = 100, in = 300, out = 258;
  for (int32_t nt = 1; nt <= 3; ++nt) {
    effml_context *ctx = tu_ctx(8);
    ck_assert_int_eq(effml_context_set_num_threads(ctx, nt), EFFML_OK);
    effml_layer *l = make_b(ctx, K_WIDE, in, out, 0.8, 4);
    const int64_t win = effml_layer_in_features(l), wout = effml_layer_out_features(l);
    effml_tensor *x = tu_f32(ctx, batch, win, NULL), *y = tu_f32(ctx, batch, wout, NULL);
    effml_tensor *dy = tu_f32(ctx, batch, wout, NULL), *dx = tu_f32(ctx, batch, win, NULL);
    tu_fill_uniform(x, 1, -1, 1);
    tu_fill_uniform(dy, 2, -1, 1);
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
    effml_layer_zero_grad(l);
    ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
    const size_t ny = sizeof(float) * (size_t)(batch * wout), nx = sizeof(float) * (size_t)(batch * win);
    const size_t ng = sizeof(float) * (size_t)effml_sparse_nnz(l);
    if (nt == 1) {
      ry = malloc(ny); rdx = malloc(nx); rg = malloc(ng);
      memcpy(ry, effml_tensor_data(y), ny);
      memcpy(rdx, effml_tensor_data(dx), nx);
      memcpy(rg, gdata(l, "weight"), ng);
    } else {
      ck_assert(memcmp(ry, effml_tensor_data(y), ny) == 0);
      ck_assert(memcmp(rdx, effml_tensor_data(dx), nx) == 0);
      ck_assert(memcmp(rg, gdata(l, "weight"), ng) == 0);
    }
    effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(dy); effml_tensor_free(dx);
    effml_layer_free(l);
    effml_context_free(ctx);
  }
  free(ry); free(rdx); free(rg);
}
END_TEST

START_TEST(test_block_dst) {
  /* RigL and SET on a block layer move whole blocks: nnz exact, every
   * block-row still shares its columns, kept weights keep their values, new
   * ones start at 0, and the update does not depend on the thread count. */
  for (int32_t method = EFFML_SPARSE_DST_RIGL; method <= EFFML_SPARSE_DST_SET; ++method) {
    float *ref = NULL;
    int64_t ref_n = 0;
    for (int32_t nt = 1; nt <= 2; ++nt) {
      effml_context *ctx = tu_ctx(55);
      ck_assert_int_eq(effml_context_set_num_threads(ctx, nt), EFFML_OK);
      effml_layer *l = make_b(ctx, K_LINEAR, 40, 30, 0.8, 4); /* tail block-row of 2 rows */
      const int64_t nnz0 = effml_sparse_nnz(l);
      int64_t r, c;
      float *W0 = dense_of(ctx, l, 0, 0, &r, &c);
      effml_dst_options d;
      effml_dst_options_init(&d);
      d.method = method;
      d.delta_t = 1;
      d.drop_fraction = 0.5;
      d.decay = EFFML_SPARSE_DST_DECAY_CONSTANT;
      d.total_steps = 100;
      d.seed = 3;
      effml_dst *dst = NULL;
      ck_assert_int_eq(effml_dst_create(ctx, l, NULL, &d, &dst), EFFML_OK);
      effml_tensor *x = tu_f32(ctx, 8, 40, NULL), *y = tu_f32(ctx, 8, 30, NULL);
      effml_tensor *dy = tu_f32(ctx, 8, 30, NULL);
      tu_fill_uniform(x, 1, -1, 1);
      tu_fill_uniform(dy, 2, -1, 1);
      ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
      ck_assert_int_eq(effml_layer_backward(ctx, l, dy, NULL), EFFML_OK);
      int32_t upd = 0;
      ck_assert_int_eq(effml_dst_step(ctx, dst, &upd), EFFML_OK);
      ck_assert_int_eq(upd, 1);
      ck_assert_int_eq(effml_sparse_nnz(l), nnz0);
      ck_assert_int_eq(assert_blocked(ctx, l, 0) <= nnz0, 1);
      float *W1 = dense_of(ctx, l, 0, 0, &r, &c);
      int64_t moved = 0;
      for (int64_t i = 0; i < r * c; ++i) {
        if (W1[i] != 0.0f && W0[i] != 0.0f) ck_assert_float_eq(W1[i], W0[i]);
        moved += W0[i] != 0.0f && W1[i] == 0.0f;
      }
      ck_assert_msg(moved >= 4, "method %d: an update at alpha 0.5 moved only %lld weights",
                    (int)method, (long long)moved);
      if (nt == 1) {
        ref = W1;
        ref_n = r * c;
      } else {
        ck_assert(memcmp(ref, W1, sizeof(float) * (size_t)ref_n) == 0);
        free(W1);
      }
      /* the updated mask still runs the block kernels correctly (grown
       * weights start at 0: give every nonzero a value so the dense
       * reference sees the whole mask) */
      float *wv = pdata(l, "weight");
      for (int64_t p = 0; p < nnz0; ++p) wv[p] = 0.05f + 0.01f * (float)(p % 13);
      ck_assert_int_eq(assert_blocked(ctx, l, 0), nnz0);
      check_against_dense(ctx, l, K_LINEAR, 19);
      free(W0);
      effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(dy);
      effml_dst_free(dst);
      effml_layer_free(l);
      effml_context_free(ctx);
    }
    free(ref);
  }
}
END_TEST

START_TEST(test_block_masked_and_bad_input) {
  effml_context *ctx = tu_ctx(2);
  effml_sparse_options o;
  effml_sparse_options_init(&o);
  ck_assert_int_eq(o.block_rows, 1);
  effml_layer *l = NULL;
  o.block_rows = 2;
  ck_assert_int_eq(effml_sparse_linear_create(ctx, 8, 8, &o, &l), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "block_rows=2"));
  /* a mask of 4x1 blocks (rows 0-3 keep columns 1, 4; rows 4-5 keep column 2) */
  o.block_rows = 4;
  float mv[6 * 5] = {0};
  for (int r = 0; r < 4; ++r) mv[r * 5 + 1] = mv[r * 5 + 4] = 1.0f;
  for (int r = 4; r < 6; ++r) mv[r * 5 + 2] = 1.0f;
  effml_tensor *mask = tu_f32(ctx, 6, 5, mv);
  ck_assert_int_eq(effml_sparse_linear_create_masked(ctx, mask, NULL, &o, &l), EFFML_OK);
  ck_assert_int_eq(effml_sparse_nnz(l), 10);
  check_against_dense(ctx, l, K_LINEAR, 3);
  effml_layer_free(l);
  /* row 2 breaks its block: refused, naming the row */
  mv[2 * 5 + 4] = 0.0f;
  effml_tensor_free(mask);
  mask = tu_f32(ctx, 6, 5, mv);
  l = NULL;
  ck_assert_int_eq(effml_sparse_linear_create_masked(ctx, mask, NULL, &o, &l), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(l);
  ck_assert_msg(strstr(effml_context_last_error(ctx), "row 2") != NULL, "%s",
                effml_context_last_error(ctx));
  effml_tensor_free(mask);
  effml_context_free(ctx);
}
END_TEST

/* ---------------- sizing and FLOPs ---------------- */

START_TEST(test_sizing_anchors) {
  effml_context *ctx = tu_ctx(0);
  static const double S[3] = {0.5, 0.75, 0.9};
  int64_t v, w;
  /* Sparse Wide base width 64 -> 90, 128, 202 (int(64·√k)) */
  static const int64_t sw[3] = {90, 128, 202};
  /* Sparse Parallel k = 2, 4, 10 */
  static const int64_t sp[3] = {2, 4, 10};
  /* Sparse Factorized: 3x3 64->64, 3x3 512->512, FC 768->3072 (exact rationals) */
  static const int64_t sf64[3] = {116, 231, 576}, sf512[3] = {922, 1844, 4608},
                       sffc[3] = {1229, 2458, 6144};
  /* Sparse Doped ranks */
  static const int64_t sd64[3] = {28, 43, 51}, sd512[3] = {230, 345, 414},
                       sdfc[3] = {307, 460, 552};
  for (int i = 0; i < 3; ++i) {
    ck_assert_int_eq(effml_sparse_wide_dims(ctx, 64, 64, S[i], 3, &v, &w), EFFML_OK);
    ck_assert_int_eq(v, sw[i]);
    ck_assert_int_eq(w, sw[i]);
    ck_assert_int_eq(effml_sparse_parallel_branches(ctx, S[i], &v), EFFML_OK);
    ck_assert_int_eq(v, sp[i]);
    ck_assert_int_eq(effml_sparse_factorized_dim(ctx, 64, 64, S[i], 9, 0, &v), EFFML_OK);
    ck_assert_int_eq(v, sf64[i]);
    ck_assert_int_eq(effml_sparse_factorized_dim(ctx, 512, 512, S[i], 9, 0, &v), EFFML_OK);
    ck_assert_int_eq(v, sf512[i]);
    ck_assert_int_eq(effml_sparse_factorized_dim(ctx, 768, 3072, S[i], 1, 0, &v), EFFML_OK);
    ck_assert_int_eq(v, sffc[i]);
    ck_assert_int_eq(effml_sparse_doped_rank(ctx, 64, 64, S[i], 9, 0, &v), EFFML_OK);
    ck_assert_int_eq(v, sd64[i]);
    ck_assert_int_eq(effml_sparse_doped_rank(ctx, 512, 512, S[i], 9, 0, &v), EFFML_OK);
    ck_assert_int_eq(v, sd512[i]);
    ck_assert_int_eq(effml_sparse_doped_rank(ctx, 768, 3072, S[i], 1, 0, &v), EFFML_OK);
    ck_assert_int_eq(v, sdfc[i]);
  }
  /* the reference code's float rounding: 577, 4609, 6145 at s = 0.9 */
  ck_assert_int_eq(effml_sparse_factorized_dim(ctx, 64, 64, 0.9, 9, EFFML_SPARSE_COMPAT_FLOAT, &v), EFFML_OK);
  ck_assert_int_eq(v, 577);
  ck_assert_int_eq(effml_sparse_factorized_dim(ctx, 512, 512, 0.9, 9, EFFML_SPARSE_COMPAT_FLOAT, &v), EFFML_OK);
  ck_assert_int_eq(v, 4609);
  ck_assert_int_eq(effml_sparse_factorized_dim(ctx, 768, 3072, 0.9, 1, EFFML_SPARSE_COMPAT_FLOAT, &v), EFFML_OK);
  ck_assert_int_eq(v, 6145);
  /* round, not int: 1/(1-0.99) = 100 */
  ck_assert_int_eq(effml_sparse_parallel_branches(ctx, 0.99, &v), EFFML_OK);
  ck_assert_int_eq(v, 100);
  /* widen one side only */
  ck_assert_int_eq(effml_sparse_wide_dims(ctx, 784, 256, 0.75, EFFML_SPARSE_WIDEN_OUT, &v, &w), EFFML_OK);
  ck_assert_int_eq(v, 784);
  ck_assert_int_eq(w, 512);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_iso_flop) {
  static const double S[3] = {0.5, 0.75, 0.9};
  effml_context *ctx = tu_ctx(3);
  const int64_t in = 512, out = 256;
  effml_layer *dense = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, in, out, 1, &dense), EFFML_OK);
  double fd = 0;
  ck_assert_int_eq(effml_sparse_count_flops(ctx, dense, &fd), EFFML_OK);
  ck_assert_double_eq(fd, 2.0 * in * out); /* in·out mults, (in-1)·out adds, out bias adds */
  for (int kind = 0; kind < 5; ++kind)
    for (int si = 0; si < 3; ++si) {
      if (kind == K_LINEAR) continue; /* not a transformation */
      effml_layer *l = make(ctx, kind, in, out, S[si]);
      double f = 0;
      ck_assert_int_eq(effml_sparse_count_flops(ctx, l, &f), EFFML_OK);
      ck_assert_msg(fabs(f / fd - 1.0) <= 0.01, "kind %d s %.2f: FLOPs %.0f vs dense %.0f", kind,
                    S[si], f, fd);
      effml_layer_free(l);
    }
  /* a sequential MLP with one Sparse Wide hidden layer */
  effml_layer *seq = NULL, *a = NULL, *relu = NULL, *b = NULL;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &seq), EFFML_OK);
  effml_sparse_options o;
  effml_sparse_options_init(&o);
  o.sparsity = 0.75;
  o.widen = EFFML_SPARSE_WIDEN_OUT;
  ck_assert_int_eq(effml_sparse_wide_create(ctx, 64, 32, &o, &a), EFFML_OK);
  ck_assert_int_eq(effml_layer_out_features(a), 64);
  ck_assert_int_eq(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &relu), EFFML_OK);
  o.widen = EFFML_SPARSE_WIDEN_IN;
  ck_assert_int_eq(effml_sparse_wide_create(ctx, 32, 10, &o, &b), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, seq, a), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, seq, relu), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, seq, b), EFFML_OK);
  double f = 0;
  ck_assert_int_eq(effml_sparse_count_flops(ctx, seq, &f), EFFML_OK);
  /* (2·64·32 - 64 + 64) + 64 + (2·32·10 - 10 + 10) */
  ck_assert_double_eq(f, 2.0 * 64 * 32 + 64 + 2.0 * 32 * 10);
  ck_assert_int_eq(effml_sparse_nnz(seq), 64 * 32 + 32 * 10);
  effml_layer_free(seq);
  effml_layer_free(dense);
  /* training FLOPs: (3·fs·ΔT + 2·fs + fD)/(ΔT + 1) over the update phase */
  double t;
  ck_assert_int_eq(effml_dst_training_flops(ctx, 100, 1000, 100, 1.0, &t), EFFML_OK);
  ck_assert_double_eq_tol(t, (3.0 * 100 * 100 + 200 + 1000) / 101.0, 1e-9);
  ck_assert_int_eq(effml_dst_training_flops(ctx, 100, 1000, 0, 0.8, &t), EFFML_OK);
  ck_assert_double_eq(t, 300.0);
  effml_context_free(ctx);
}
END_TEST

/* ---------------- masks ---------------- */

START_TEST(test_mask_exact_and_seeded) {
  static const double S[4] = {0.0, 0.5, 0.75, 0.9};
  for (int i = 0; i < 4; ++i) {
    int64_t shape[2] = {33, 47};
    uint8_t *first = NULL;
    for (int rep = 0; rep < 3; ++rep) {
      effml_context *ctx = tu_ctx(rep == 2 ? 6 : 5);
      effml_tensor *m = NULL;
      ck_assert_int_eq(effml_tensor_create(ctx, EFFML_U8, 2, shape, &m), EFFML_OK);
      ck_assert_int_eq(effml_sparse_mask_uniform(ctx, S[i], m), EFFML_OK);
      const uint8_t *p = effml_tensor_data(m);
      int64_t n = 0;
      for (int64_t k = 0; k < 33 * 47; ++k) n += p[k];
      ck_assert_int_eq(n, llround((1.0 - S[i]) * 33 * 47));
      if (rep == 0) {
        first = malloc(33 * 47);
        memcpy(first, p, 33 * 47);
      } else if (rep == 1) {
        ck_assert(memcmp(first, p, 33 * 47) == 0); /* same seed, same mask */
      } else if (S[i] > 0) {
        ck_assert(memcmp(first, p, 33 * 47) != 0); /* another seed, another mask */
      }
      effml_tensor_free(m);
      effml_context_free(ctx);
    }
    free(first);
  }
  /* layer nnz is exact */
  effml_context *ctx = tu_ctx(9);
  effml_layer *l = make(ctx, K_LINEAR, 123, 45, 0.9);
  ck_assert_int_eq(effml_sparse_nnz(l), llround(0.1 * 123 * 45));
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_erk) {
  /* mixed shapes at s = 0.9: the small head would exceed density 1 and is
   * made dense; Σ nnz = (1-s)·Σ numel exactly (sparseml #2159). */
  effml_context *ctx = tu_ctx(0);
  int64_t rows[4] = {256, 128, 64, 10}, cols[4] = {784, 256, 128, 64}, nnz[4];
  ck_assert_int_eq(effml_sparse_erk(ctx, 4, rows, cols, 0.9, 1.0, nnz), EFFML_OK);
  int64_t total = 0, sum = 0;
  for (int l = 0; l < 4; ++l) {
    total += rows[l] * cols[l];
    sum += nnz[l];
    ck_assert_int_ge(nnz[l], 1);
    ck_assert_int_le(nnz[l], rows[l] * cols[l]);
  }
  ck_assert_int_eq(sum, llround(0.1 * (double)total));
  ck_assert_int_eq(nnz[3], 640); /* dense */
  /* ERK densities are proportional to (rows + cols)/(rows·cols) among sparse layers */
  double d0 = (double)nnz[0] / (256.0 * 784), d1 = (double)nnz[1] / (128.0 * 256);
  ck_assert_double_eq_tol(d0 / d1, ((256.0 + 784) / (256.0 * 784)) / ((128.0 + 256) / (128.0 * 256)), 1e-3);
  /* bad input */
  ck_assert_int_eq(effml_sparse_erk(ctx, 4, rows, cols, 1.0, 1.0, nnz), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sparse_erk(ctx, 0, rows, cols, 0.5, 1.0, nnz), EFFML_E_INVALID_ARG);
  effml_context_free(ctx);
}
END_TEST

/* ---------------- dynamic sparse training ---------------- */

/* Run `steps` manual training steps (forward, backward, dst_step, SGD) on a
 * two-layer sparse MLP; return the final dense masks concatenated. */
static float *run_dst(int32_t method, int32_t threads, int64_t steps, int64_t *n_out) {
  effml_context *ctx = tu_ctx(21);
  ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
  effml_layer *seq = NULL, *a = NULL, *relu = NULL, *b = NULL;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &seq), EFFML_OK);
  a = make(ctx, K_LINEAR, 40, 30, 0.8);
  b = make(ctx, K_FACTORIZED, 30, 8, 0.75);
  ck_assert_int_eq(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &relu), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, seq, a), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, seq, relu), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, seq, b), EFFML_OK);
  const int64_t nnz0 = effml_sparse_nnz(seq);
  effml_optimizer_options oo;
  effml_optimizer_options_init(&oo);
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(ctx, &oo, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(ctx, opt, seq), EFFML_OK);
  effml_dst_options d;
  effml_dst_options_init(&d);
  d.method = method;
  d.delta_t = 3;
  d.total_steps = steps;
  d.seed = 4;
  effml_dst *dst = NULL;
  ck_assert_msg(effml_dst_create(ctx, seq, opt, &d, &dst) == EFFML_OK, "%s", effml_context_last_error(ctx));
  effml_tensor *x = tu_f32(ctx, 20, 40, NULL), *y = tu_f32(ctx, 20, 8, NULL), *dy = tu_f32(ctx, 20, 8, NULL);
  int64_t n_updates = 0;
  for (int64_t t = 1; t <= steps; ++t) {
    tu_fill_uniform(x, (uint64_t)t, -1, 1);
    tu_fill_uniform(dy, (uint64_t)t + 1000, -1, 1);
    ck_assert_int_eq(effml_layer_forward(ctx, seq, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
    effml_layer_zero_grad(seq);
    ck_assert_int_eq(effml_layer_backward(ctx, seq, dy, NULL), EFFML_OK);
    int32_t upd = 0;
    ck_assert_msg(effml_dst_step(ctx, dst, &upd) == EFFML_OK, "%s", effml_context_last_error(ctx));
    n_updates += upd;
    ck_assert_int_eq(upd, method != EFFML_SPARSE_DST_STATIC && t % 3 == 0 && t < (int64_t)(0.75 * steps));
    ck_assert_int_eq(effml_sparse_nnz(seq), nnz0); /* exact after every update */
    ck_assert_int_eq(effml_optimizer_step(ctx, opt), EFFML_OK);
  }
  ck_assert_int_eq(effml_dst_updates(dst), n_updates);
  ck_assert_int_eq(effml_dst_steps(dst), steps);
  /* collect the masks/values */
  int64_t r0, c0, r1, c1, r2, c2;
  float *m0 = dense_of(ctx, a, 0, 0, &r0, &c0), *m1 = dense_of(ctx, b, 0, 0, &r1, &c1),
        *m2 = dense_of(ctx, b, 1, 0, &r2, &c2);
  int64_t n = r0 * c0 + r1 * c1 + r2 * c2;
  float *all = malloc(sizeof(float) * (size_t)n);
  memcpy(all, m0, sizeof(float) * (size_t)(r0 * c0));
  memcpy(all + r0 * c0, m1, sizeof(float) * (size_t)(r1 * c1));
  memcpy(all + r0 * c0 + r1 * c1, m2, sizeof(float) * (size_t)(r2 * c2));
  free(m0); free(m1); free(m2);
  *n_out = n;
  effml_dst_free(dst);
  effml_optimizer_free(opt);
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(dy);
  effml_layer_free(seq);
  effml_context_free(ctx);
  return all;
}

START_TEST(test_dst_exact_and_deterministic) {
  for (int32_t method = EFFML_SPARSE_DST_RIGL; method <= EFFML_SPARSE_DST_STATIC; ++method) {
    int64_t n1, n2;
    float *w1 = run_dst(method, 1, 20, &n1);
    float *w2 = run_dst(method, 2, 20, &n2);
    ck_assert_int_eq(n1, n2);
    ck_assert_msg(memcmp(w1, w2, sizeof(float) * (size_t)n1) == 0, "method %d differs by threads", method);
    free(w1); free(w2);
  }
}
END_TEST

/* google-research/rigl #5: w [0.9, 0.1, 0, 0], mask [1,1,0,0], s 0.5, α 0.5. */
static void rigl5(float x2, float *out_w, float *out_v) {
  effml_context *ctx = tu_ctx(0);
  int64_t rp[2] = {0, 2};
  int32_t ci[2] = {0, 1};
  float v[2] = {0.9f, 0.1f};
  effml_sparse_options o;
  effml_sparse_options_init(&o);
  o.bias = 0;
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_sparse_linear_create_csr(ctx, 4, 1, 2, rp, ci, v, &o, &l), EFFML_OK);
  effml_dst_options d;
  effml_dst_options_init(&d);
  d.delta_t = 1;
  d.drop_fraction = 0.5;
  d.decay = EFFML_SPARSE_DST_DECAY_CONSTANT;
  d.total_steps = 100;
  effml_dst *dst = NULL;
  ck_assert_int_eq(effml_dst_create(ctx, l, NULL, &d, &dst), EFFML_OK);
  /* dense grad dW[0, i] = dy·x[i] = x[i] */
  float xv[4] = {0.0f, 1.0f, x2, 0.0f}, one = 1.0f;
  effml_tensor *x = tu_f32(ctx, 1, 4, xv), *y = tu_f32(ctx, 1, 1, NULL), *dy = tu_f32(ctx, 1, 1, &one);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, NULL), EFFML_OK);
  int32_t upd = 0;
  ck_assert_int_eq(effml_dst_step(ctx, dst, &upd), EFFML_OK);
  ck_assert_int_eq(upd, 1);
  ck_assert_int_eq(effml_sparse_nnz(l), 2);
  effml_tensor *w = tu_f32(ctx, 1, 4, NULL);
  ck_assert_int_eq(effml_sparse_matrix_to_dense(ctx, l, 0, w), EFFML_OK);
  memcpy(out_w, effml_tensor_data(w), 4 * sizeof(float));
  memcpy(out_v, pdata(l, "weight"), 2 * sizeof(float));
  effml_tensor_free(w); effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(dy);
  effml_dst_free(dst);
  effml_layer_free(l);
  effml_context_free(ctx);
}

START_TEST(test_rigl_issue5) {
  float w[4], v[2];
  /* argmax |g| outside the kept set is index 1: 0.1 comes back with its value */
  rigl5(0.5f, w, v);
  ck_assert_float_eq(w[0], 0.9f);
  ck_assert_float_eq(w[1], 0.1f);
  ck_assert_float_eq(w[2], 0.0f);
  ck_assert_float_eq(w[3], 0.0f);
  /* argmax is index 2: index 1 is dropped, index 2 grows at 0 in the freed slot 1 */
  rigl5(5.0f, w, v);
  ck_assert_float_eq(w[0], 0.9f);
  ck_assert_float_eq(w[1], 0.0f);
  ck_assert_float_eq(v[0], 0.9f); /* slot 0 keeps 0.9 */
  ck_assert_float_eq(v[1], 0.0f); /* slot 1 now holds the new connection */
  effml_context *ctx = tu_ctx(0);
  (void)ctx;
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_dst_schedule) {
  effml_context *ctx = tu_ctx(0);
  effml_layer *l = make(ctx, K_LINEAR, 10, 10, 0.5);
  effml_dst_options d;
  effml_dst_options_init(&d);
  d.total_steps = 1000;
  effml_dst *dst = NULL;
  ck_assert_int_eq(effml_dst_create(ctx, l, NULL, &d, &dst), EFFML_OK);
  ck_assert_double_eq_tol(effml_dst_drop_fraction(dst, 1), 0.3 * (0.5 + 0.5 * cos(M_PI / 750.0)), 1e-12);
  ck_assert_double_eq_tol(effml_dst_drop_fraction(dst, 375), 0.15, 1e-12);
  ck_assert_double_eq(effml_dst_drop_fraction(dst, 750), 0.0);
  /* an update due without a dense gradient is refused (RigL) */
  for (int t = 1; t < 100; ++t) ck_assert_int_eq(effml_dst_step(ctx, dst, NULL), EFFML_OK);
  ck_assert_int_eq(effml_dst_step(ctx, dst, NULL), EFFML_E_STATE);
  effml_dst_free(dst);
  /* bad options */
  d.total_steps = 0;
  ck_assert_int_eq(effml_dst_create(ctx, l, NULL, &d, &dst), EFFML_E_INVALID_ARG);
  d.total_steps = 10;
  d.drop_fraction = 0.0;
  ck_assert_int_eq(effml_dst_create(ctx, l, NULL, &d, &dst), EFFML_E_INVALID_ARG);
  effml_layer *dense = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 3, 3, 1, &dense), EFFML_OK);
  d.drop_fraction = 0.3;
  ck_assert_int_eq(effml_dst_create(ctx, dense, NULL, &d, &dst), EFFML_E_INVALID_ARG);
  effml_layer_free(dense);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_dense_grad_request) {
  effml_context *ctx = tu_ctx(2);
  effml_layer *l = make(ctx, K_LINEAR, 13, 7, 0.5);
  effml_tensor *x = tu_f32(ctx, 9, 13, NULL), *y = tu_f32(ctx, 9, 7, NULL), *dy = tu_f32(ctx, 9, 7, NULL);
  effml_tensor *g = tu_f32(ctx, 7, 13, NULL);
  tu_fill_uniform(x, 1, -1, 1);
  tu_fill_uniform(dy, 2, -1, 1);
  ck_assert_int_eq(effml_sparse_dense_grad(ctx, l, 0, g), EFFML_E_STATE);
  ck_assert_int_eq(effml_sparse_request_dense_grad(ctx, l, 1), EFFML_OK);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, NULL), EFFML_OK);
  ck_assert_int_eq(effml_sparse_dense_grad(ctx, l, 0, g), EFFML_OK);
  float ref[7 * 13];
  mm(1, 0, 7, 13, 9, effml_tensor_data(dy), effml_tensor_data(x), 0.0f, ref);
  assert_close(effml_tensor_data(g), ref, 7 * 13, 1e-5, "dense dW");
  ck_assert_int_eq(effml_sparse_request_dense_grad(ctx, l, 0), EFFML_OK);
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(dy); effml_tensor_free(g);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

/* ---------------- bad input ---------------- */

START_TEST(test_bad_input) {
  effml_context *ctx = tu_ctx(0);
  effml_sparse_options o;
  effml_sparse_options_init(&o);
  effml_layer *l = NULL;
  /* sparsity outside [0, 1) */
  const double bad[4] = {-0.1, 1.0, 1.5, NAN};
  for (int i = 0; i < 4; ++i) {
    o.sparsity = bad[i];
    ck_assert_int_eq(effml_sparse_linear_create(ctx, 4, 4, &o, &l), EFFML_E_INVALID_ARG);
    ck_assert_ptr_null(l);
    ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "sparsity="));
    ck_assert_int_eq(effml_sparse_wide_create(ctx, 4, 4, &o, &l), EFFML_E_INVALID_ARG);
    ck_assert_int_eq(effml_sparse_parallel_create(ctx, 4, 4, &o, &l), EFFML_E_INVALID_ARG);
    ck_assert_int_eq(effml_sparse_factorized_create(ctx, 4, 4, &o, &l), EFFML_E_INVALID_ARG);
    ck_assert_int_eq(effml_sparse_doped_create(ctx, 4, 4, &o, &l), EFFML_E_INVALID_ARG);
    int64_t shape[2] = {3, 3};
    effml_tensor *m = NULL;
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_U8, 2, shape, &m), EFFML_OK);
    ck_assert_int_eq(effml_sparse_mask_uniform(ctx, bad[i], m), EFFML_E_INVALID_ARG);
    effml_tensor_free(m);
  }
  /* zero-width results: no nonzero left; doped rank 0 */
  o.sparsity = 0.99;
  ck_assert_int_eq(effml_sparse_linear_create(ctx, 2, 2, &o, &l), EFFML_E_INVALID_ARG);
  o.sparsity = 0.5;
  ck_assert_int_eq(effml_sparse_doped_create(ctx, 1, 1, &o, &l), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "rank 0"));
  ck_assert_int_eq(effml_sparse_linear_create(ctx, 0, 3, &o, &l), EFFML_E_INVALID_ARG);
  o.nnz = 13;
  ck_assert_int_eq(effml_sparse_linear_create(ctx, 3, 4, &o, &l), EFFML_E_INVALID_ARG);
  o.nnz = 0;
  o.struct_size = 3;
  ck_assert_int_eq(effml_sparse_linear_create(ctx, 3, 4, &o, &l), EFFML_E_INVALID_ARG);
  effml_sparse_options_init(&o);
  /* mask with the wrong shape / dtype */
  int64_t ms[2] = {3, 4}, ws[2] = {4, 3}, m1[1] = {12};
  effml_tensor *mask = NULL, *w = NULL, *m1d = NULL, *mf64 = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_U8, 2, ms, &mask), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, ws, &w), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_U8, 1, m1, &m1d), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, ms, &mf64), EFFML_OK);
  ck_assert_int_eq(effml_sparse_linear_create_masked(ctx, mask, w, &o, &l), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_sparse_linear_create_masked(ctx, m1d, NULL, &o, &l), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_sparse_linear_create_masked(ctx, mf64, NULL, &o, &l), EFFML_E_DTYPE);
  ck_assert_int_eq(effml_sparse_linear_create_masked(ctx, mask, NULL, &o, &l), EFFML_E_INVALID_ARG); /* empty */
  ((uint8_t *)effml_tensor_data(mask))[5] = 1;
  ck_assert_int_eq(effml_sparse_linear_create_masked(ctx, mask, NULL, &o, &l), EFFML_OK);
  ck_assert_int_eq(effml_sparse_nnz(l), 1);
  ck_assert_int_eq(effml_layer_in_features(l), 4);
  effml_layer_free(l);
  l = NULL;
  effml_tensor_free(mask); effml_tensor_free(w); effml_tensor_free(m1d); effml_tensor_free(mf64);
  /* user CSR: out of range, unsorted, duplicate, bad row_ptr */
  int64_t rp[3] = {0, 2, 3};
  int32_t oob[3] = {0, 5, 1}, uns[3] = {2, 1, 0}, dup[3] = {1, 1, 0};
  ck_assert_int_eq(effml_sparse_linear_create_csr(ctx, 5, 2, 3, rp, oob, NULL, &o, &l), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "col_idx[1]=5"));
  ck_assert_int_eq(effml_sparse_linear_create_csr(ctx, 5, 2, 3, rp, uns, NULL, &o, &l), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "sorted"));
  ck_assert_int_eq(effml_sparse_linear_create_csr(ctx, 5, 2, 3, rp, dup, NULL, &o, &l), EFFML_E_INVALID_ARG);
  int32_t neg[3] = {-1, 0, 0};
  ck_assert_int_eq(effml_sparse_linear_create_csr(ctx, 5, 2, 3, rp, neg, NULL, &o, &l), EFFML_E_INVALID_ARG);
  int64_t rp_bad[3] = {0, 3, 2};
  int32_t ok[3] = {0, 1, 2};
  ck_assert_int_eq(effml_sparse_linear_create_csr(ctx, 5, 2, 3, rp_bad, ok, NULL, &o, &l), EFFML_E_INVALID_ARG);
  int64_t rp_end[3] = {0, 2, 2};
  ck_assert_int_eq(effml_sparse_linear_create_csr(ctx, 5, 2, 3, rp_end, ok, NULL, &o, &l), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(l);
  /* queries on a non-sparse layer */
  effml_layer *dense = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 3, 3, 1, &dense), EFFML_OK);
  int64_t r, c;
  ck_assert_int_eq(effml_sparse_matrix_shape(ctx, dense, 0, &r, &c), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sparse_nnz(dense), 0);
  effml_layer_free(dense);
  /* wrong output shape for to_dense */
  l = make(ctx, K_LINEAR, 5, 4, 0.5);
  effml_tensor *t = tu_f32(ctx, 5, 4, NULL);
  ck_assert_int_eq(effml_sparse_matrix_to_dense(ctx, l, 0, t), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_sparse_matrix_to_dense(ctx, l, 1, t), EFFML_E_INVALID_ARG);
  effml_tensor_free(t);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_alloc_failures) {
  /* Every allocation failure gives EFFML_E_NOMEM and leaks nothing. */
  for (int kind = 0; kind < 5; ++kind) {
    int done = 0;
    for (int64_t k = 1; !done && k < 400; ++k) {
      tu_failing_alloc fa = {k, 0, 0};
      effml_context *ctx = tu_ctx_failing(&fa);
      effml_sparse_options o;
      effml_sparse_options_init(&o);
      o.sparsity = 0.75;
      effml_layer *l = NULL;
      effml_status st;
      switch (kind) {
        case K_LINEAR: st = effml_sparse_linear_create(ctx, 12, 9, &o, &l); break;
        case K_WIDE: st = effml_sparse_wide_create(ctx, 12, 9, &o, &l); break;
        case K_PARALLEL: st = effml_sparse_parallel_create(ctx, 12, 9, &o, &l); break;
        case K_FACTORIZED: st = effml_sparse_factorized_create(ctx, 12, 9, &o, &l); break;
        default: st = effml_sparse_doped_create(ctx, 12, 9, &o, &l); break;
      }
      if (st == EFFML_OK) {
        int64_t in = effml_layer_in_features(l), out = effml_layer_out_features(l);
        effml_tensor *x = NULL, *y = NULL, *dx = NULL;
        int64_t sx[2] = {3, in}, sy[2] = {3, out};
        st = effml_tensor_create(ctx, EFFML_F32, 2, sx, &x);
        if (st == EFFML_OK) st = effml_tensor_create(ctx, EFFML_F32, 2, sy, &y);
        if (st == EFFML_OK) st = effml_tensor_create(ctx, EFFML_F32, 2, sx, &dx);
        if (st == EFFML_OK) st = effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN);
        if (st == EFFML_OK) st = effml_layer_backward(ctx, l, y, dx);
        if (st == EFFML_OK) done = 1;
        else ck_assert_int_eq(st, EFFML_E_NOMEM);
        effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(dx);
        effml_layer_free(l);
      } else {
        ck_assert_int_eq(st, EFFML_E_NOMEM);
        ck_assert_ptr_null(l);
      }
      effml_context_free(ctx);
      ck_assert_int_eq(fa.live, 0);
    }
    ck_assert_msg(done, "kind %d never succeeded", kind);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("sparse");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_matches_dense);
  tcase_add_test(tc, test_user_csr_pytorch_58770);
  tcase_add_test(tc, test_thread_count_invariance);
  tcase_add_test(tc, test_block_matches_dense);
  tcase_add_test(tc, test_block_finite_differences);
  tcase_add_test(tc, test_block_thread_invariance);
  tcase_add_test(tc, test_block_dst);
  tcase_add_test(tc, test_block_masked_and_bad_input);
  tcase_add_test(tc, test_sizing_anchors);
  tcase_add_test(tc, test_iso_flop);
  tcase_add_test(tc, test_mask_exact_and_seeded);
  tcase_add_test(tc, test_erk);
  tcase_add_test(tc, test_dst_exact_and_deterministic);
  tcase_add_test(tc, test_rigl_issue5);
  tcase_add_test(tc, test_dst_schedule);
  tcase_add_test(tc, test_dense_grad_request);
  tcase_add_test(tc, test_bad_input);
  tcase_add_test(tc, test_alloc_failures);
  suite_add_tcase(s, tc);
  return tu_run(s) ? 1 : 0;
}
