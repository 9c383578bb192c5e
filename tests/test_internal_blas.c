/* The checked BLAS/LAPACK wrappers (lib/core/blas.h): a size that does not
 * fit the BLAS integer of this build is refused before BLAS or any
 * allocation sees it, with a message naming the routine, the calling
 * function, the argument and its value; sizes that fit give BLAS's result.
 * No test allocates more than a few bytes: the refused calls get NULL
 * matrices, which BLAS would crash on if the check let them through. */
#include <string.h>

#include "testutil.h"
#include "../lib/core/blas.h"

/* Too large for a 32-bit BLAS integer (the checks below that need a
 * refusal run only when this build's BLAS integer is 32-bit). */
static const int64_t BIG = 3000000000LL;

static void expect_msg(effml_context *ctx, const char *part) {
  const char *m = effml_context_last_error(ctx);
  ck_assert_msg(m != NULL && strstr(m, part) != NULL, "message \"%s\" lacks \"%s\"", m ? m : "(null)",
                part);
}

START_TEST(test_sgemm_values) {
  effml_context *ctx = tu_ctx(1);
  /* [2x3] x [3x2]ᵀ-free product, exact in f32: C = A B + 1 C */
  const float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {7, 8, 9, 10, 11, 12};
  float C[4] = {1, 1, 1, 1};
  ck_assert_int_eq(effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, 2, 2, 3, 1.0f, A, 3, B, 2, 1.0f, C, 2),
                   EFFML_OK);
  const float want[4] = {59, 65, 140, 155};
  for (int i = 0; i < 4; ++i) ck_assert_float_eq(C[i], want[i]);
  /* A Aᵀ upper triangle by dsyrk, and the same by dgemm */
  const double D[6] = {1, 2, 3, 4, 5, 6};
  double G[4] = {0, 0, 0, 0}, H[4] = {0, 0, 0, 0};
  ck_assert_int_eq(effml__dsyrk(ctx, CblasUpper, CblasNoTrans, 2, 3, 1.0, D, 3, 0.0, G, 2), EFFML_OK);
  ck_assert_int_eq(effml__dgemm(ctx, CblasNoTrans, CblasTrans, 2, 2, 3, 1.0, D, 3, D, 3, 0.0, H, 2),
                   EFFML_OK);
  ck_assert_double_eq(G[0], 14.0);
  ck_assert_double_eq(G[1], 32.0);
  ck_assert_double_eq(G[3], 77.0);
  ck_assert_double_eq(H[2], 32.0);
  /* Cholesky of [[4, 2], [2, 5]] = L Lᵀ, L = [[2, 0], [1, 2]] */
  double S[4] = {4, 2, 2, 5};
  int64_t info = -1;
  ck_assert_int_eq(effml__dpotrf(ctx, 'L', 2, S, 2, &info), EFFML_OK);
  ck_assert_int_eq(info, 0);
  ck_assert_double_eq(S[0], 2.0);
  ck_assert_double_eq(S[1], 1.0);
  ck_assert_double_eq(S[3], 2.0);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_too_large_refused) {
  effml_context *ctx = tu_ctx(1);
  if (EFFML__BLAS_INT_MAX < BIG) {
    /* every argument position is checked, and the message names it */
    ck_assert_int_eq(effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, BIG, 2, 3, 1.0f, NULL, 3, NULL, 2,
                                  0.0f, NULL, 2),
                     EFFML_E_UNSUPPORTED);
    expect_msg(ctx, "cblas_sgemm (from test_too_large_refused_fn): m = 3000000000 does not fit");
    expect_msg(ctx, "32-bit, at most 2147483647");
    ck_assert_int_eq(effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, 2, 2, 3, 1.0f, NULL, 3, NULL, 2,
                                  0.0f, NULL, BIG),
                     EFFML_E_UNSUPPORTED);
    expect_msg(ctx, "ldc = 3000000000");
    ck_assert_int_eq(effml__dgemm(ctx, CblasNoTrans, CblasTrans, 2, 2, BIG, 1.0, NULL, BIG, NULL,
                                  BIG, 0.0, NULL, 2),
                     EFFML_E_UNSUPPORTED);
    expect_msg(ctx, "cblas_dgemm (from test_too_large_refused_fn): k = 3000000000");
    ck_assert_int_eq(effml__dtrsm(ctx, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, 4, BIG,
                                  1.0, NULL, BIG, NULL, BIG),
                     EFFML_E_UNSUPPORTED);
    expect_msg(ctx, "cblas_dtrsm (from test_too_large_refused_fn): n = 3000000000");
    ck_assert_int_eq(effml__dsyrk(ctx, CblasUpper, CblasTrans, 4, BIG, 1.0, NULL, 4, 0.0, NULL, 4),
                     EFFML_E_UNSUPPORTED);
    expect_msg(ctx, "cblas_dsyrk (from test_too_large_refused_fn): k = 3000000000");
  }
  if (EFFML__LAPACK_INT_MAX < BIG) {
    int64_t info = 0;
    ck_assert_int_eq(effml__dgelqf(ctx, 4, BIG, NULL, 4, NULL, NULL, 16, &info),
                     EFFML_E_UNSUPPORTED);
    expect_msg(ctx, "LAPACKE_dgelqf_work (from test_too_large_refused_fn): n = 3000000000");
    ck_assert_int_eq(effml__dpotrf(ctx, 'L', BIG, NULL, BIG, &info), EFFML_E_UNSUPPORTED);
    expect_msg(ctx, "LAPACKE_dpotrf_work (from test_too_large_refused_fn): n = 3000000000");
  }
  /* negative sizes are a shape error whatever the integer width */
  ck_assert_int_eq(effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, 2, -1, 3, 1.0f, NULL, 3, NULL, 2,
                                0.0f, NULL, 2),
                   EFFML_E_SHAPE);
  expect_msg(ctx, "n = -1 is negative");
  effml_context_free(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("internal_blas");
  TCase *tc = tcase_create("blas");
  tcase_add_test(tc, test_sgemm_values);
  tcase_add_test(tc, test_too_large_refused);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
