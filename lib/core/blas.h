/*
 * Checked BLAS/LAPACK calls (internal).  Every call of the library into
 * CBLAS or LAPACKE goes through these wrappers: sizes come in as int64_t and
 * are checked against the integer type of the BLAS the library was built
 * with (OpenBLAS's `blasint`, `CBLAS_INT` of the reference CBLAS, plain int
 * otherwise; LAPACKE's `lapack_int`) before anything is called, so a
 * dimension that does not fit is an error instead of a silently truncated
 * size.  The message names the BLAS routine, the library function that
 * called it, the argument and its value:
 *
 *   "cblas_sgemm (from dense_forward): m = 3000000000 does not fit the BLAS
 *    integer (32-bit, at most 2147483647)"
 *
 * Only row-major CBLAS is used; the transposes are CBLAS's own enums.  The
 * result must be used (warn_unused_result): a refused call has not written
 * its output.
 */
#ifndef EFFML_BLAS_H
#define EFFML_BLAS_H

#include <cblas.h>
#include <lapacke.h>

#include "internal.h"

/* The integer type of the CBLAS interface, detected at build time. */
#if defined(OPENBLAS_VERSION) || defined(OPENBLAS_CONST)
typedef blasint effml__blas_int; /* int, or int64 in an INTERFACE64 OpenBLAS */
#elif defined(CBLAS_INT)
typedef CBLAS_INT effml__blas_int;
#else
typedef int effml__blas_int;
#endif
#define EFFML__BLAS_INT_MAX \
  ((int64_t)(sizeof(effml__blas_int) >= sizeof(int64_t) ? INT64_MAX : INT32_MAX))

/* LAPACKE's integer (lapack_int: int, or int64 with LAPACK_ILP64). */
#define EFFML__LAPACK_INT_MAX \
  ((int64_t)(sizeof(lapack_int) >= sizeof(int64_t) ? INT64_MAX : INT32_MAX))

/* Refuse the call (before BLAS sees it) when a size does not fit: effml__blas_check_dims()
 * (internal.h) names the routine, the caller, the argument and its value. */
#define EFFML__BLAS_CHECK(routine, max, names, ...)                                     \
  do {                                                                                  \
    const int64_t v_[] = {__VA_ARGS__};                                                 \
    EFFML__TRY(effml__blas_check_dims(ctx, routine, caller, max,                        \
                                      (int32_t)(sizeof v_ / sizeof v_[0]), v_, names)); \
  } while (0)

/* C[m,n] = alpha op(A) op(B) + beta C, row-major (cblas_sgemm / cblas_dgemm);
 * B[m,n] = alpha B op(A)^-1 (cblas_dtrsm); C = alpha op(A) op(A)^T + beta C
 * (cblas_dsyrk).  LAPACKE (column-major): on a size that fits, *info receives
 * LAPACKE's own info (0 = success; the caller decides what a nonzero info
 * means) and the result is EFFML_OK; lwork == -1 is a workspace query. */
static inline EFFML__MUST_CHECK effml_status effml__sgemm_at(
    effml_context *ctx, const char *caller, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
    int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda, const float *B,
    int64_t ldb, float beta, float *C, int64_t ldc) {
  EFFML__BLAS_CHECK("cblas_sgemm", EFFML__BLAS_INT_MAX, "m, n, k, lda, ldb, ldc", m, n, k, lda, ldb,
                    ldc);
  cblas_sgemm(CblasRowMajor, ta, tb, (effml__blas_int)m, (effml__blas_int)n, (effml__blas_int)k,
              alpha, A, (effml__blas_int)lda, B, (effml__blas_int)ldb, beta, C,
              (effml__blas_int)ldc);
  return EFFML_OK;
}

static inline EFFML__MUST_CHECK effml_status effml__dgemm_at(
    effml_context *ctx, const char *caller, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
    int64_t m, int64_t n, int64_t k, double alpha, const double *A, int64_t lda, const double *B,
    int64_t ldb, double beta, double *C, int64_t ldc) {
  EFFML__BLAS_CHECK("cblas_dgemm", EFFML__BLAS_INT_MAX, "m, n, k, lda, ldb, ldc", m, n, k, lda, ldb,
                    ldc);
  cblas_dgemm(CblasRowMajor, ta, tb, (effml__blas_int)m, (effml__blas_int)n, (effml__blas_int)k,
              alpha, A, (effml__blas_int)lda, B, (effml__blas_int)ldb, beta, C,
              (effml__blas_int)ldc);
  return EFFML_OK;
}

static inline EFFML__MUST_CHECK effml_status effml__dsyrk_at(effml_context *ctx, const char *caller,
                                                             enum CBLAS_UPLO uplo,
                                                             enum CBLAS_TRANSPOSE trans, int64_t n,
                                                             int64_t k, double alpha,
                                                             const double *A, int64_t lda,
                                                             double beta, double *C, int64_t ldc) {
  EFFML__BLAS_CHECK("cblas_dsyrk", EFFML__BLAS_INT_MAX, "n, k, lda, ldc", n, k, lda, ldc);
  cblas_dsyrk(CblasRowMajor, uplo, trans, (effml__blas_int)n, (effml__blas_int)k, alpha, A,
              (effml__blas_int)lda, beta, C, (effml__blas_int)ldc);
  return EFFML_OK;
}

static inline EFFML__MUST_CHECK effml_status
effml__dtrsm_at(effml_context *ctx, const char *caller, enum CBLAS_SIDE side, enum CBLAS_UPLO uplo,
                enum CBLAS_TRANSPOSE ta, enum CBLAS_DIAG diag, int64_t m, int64_t n, double alpha,
                const double *A, int64_t lda, double *B, int64_t ldb) {
  EFFML__BLAS_CHECK("cblas_dtrsm", EFFML__BLAS_INT_MAX, "m, n, lda, ldb", m, n, lda, ldb);
  cblas_dtrsm(CblasRowMajor, side, uplo, ta, diag, (effml__blas_int)m, (effml__blas_int)n, alpha, A,
              (effml__blas_int)lda, B, (effml__blas_int)ldb);
  return EFFML_OK;
}

static inline EFFML__MUST_CHECK effml_status effml__dgelqf_at(effml_context *ctx,
                                                              const char *caller, int64_t m,
                                                              int64_t n, double *A, int64_t lda,
                                                              double *tau, double *work,
                                                              int64_t lwork, int64_t *info) {
  /* lwork = -1 is LAPACK's workspace query. */
  EFFML__BLAS_CHECK("LAPACKE_dgelqf_work", EFFML__LAPACK_INT_MAX, "m, n, lda, lwork", m, n, lda,
                    lwork == -1 ? 0 : lwork);
  *info = (int64_t)LAPACKE_dgelqf_work(LAPACK_COL_MAJOR, (lapack_int)m, (lapack_int)n, A,
                                       (lapack_int)lda, tau, work, (lapack_int)lwork);
  return EFFML_OK;
}

static inline EFFML__MUST_CHECK effml_status effml__dpotrf_at(effml_context *ctx,
                                                              const char *caller, char uplo,
                                                              int64_t n, double *A, int64_t lda,
                                                              int64_t *info) {
  EFFML__BLAS_CHECK("LAPACKE_dpotrf_work", EFFML__LAPACK_INT_MAX, "n, lda", n, lda);
  *info = (int64_t)LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, uplo, (lapack_int)n, A, (lapack_int)lda);
  return EFFML_OK;
}

/* The wrappers as called: the caller's function name is filled in. */
#define effml__sgemm(ctx, ...) effml__sgemm_at((ctx), __func__, __VA_ARGS__)
#define effml__dgemm(ctx, ...) effml__dgemm_at((ctx), __func__, __VA_ARGS__)
#define effml__dsyrk(ctx, ...) effml__dsyrk_at((ctx), __func__, __VA_ARGS__)
#define effml__dtrsm(ctx, ...) effml__dtrsm_at((ctx), __func__, __VA_ARGS__)
#define effml__dgelqf(ctx, ...) effml__dgelqf_at((ctx), __func__, __VA_ARGS__)
#define effml__dpotrf(ctx, ...) effml__dpotrf_at((ctx), __func__, __VA_ARGS__)

#endif /* EFFML_BLAS_H */
