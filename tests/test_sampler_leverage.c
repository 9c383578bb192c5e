/* Leverage scores, root leverage, Lewis weights, sensitivity bounds and
 * sensitivity sampling (references: tests/ref/sampler_leverage_ref.py and the
 * worked vector of Woodruff & Yasuda 2023, arXiv 2306.00732). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static effml_tensor *ref_npy(effml_context *ctx, const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/sampler_lev_%s.npy", EFFML_TEST_REF, name);
  effml_tensor *t = NULL;
  ck_assert_msg(effml_io_npy_load(ctx, path, &t) == EFFML_OK, "%s: %s", path, effml_context_last_error(ctx));
  return t;
}

static const double *F(const effml_tensor *t) { return (const double *)effml_tensor_data_const(t); }

static effml_tensor *mat(effml_context *ctx, int64_t n, int64_t d, const double *v) {
  int64_t s[2] = {n, d};
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, s, &t), EFFML_OK);
  if (v) memcpy(effml_tensor_data(t), v, (size_t)(n * d) * sizeof(double));
  return t;
}

static effml_tensor *worked(effml_context *ctx) {
  const double b[8] = {1, 0, 0, 1, 1, 1, 2, -1};
  return mat(ctx, 4, 2, b);
}

START_TEST(test_worked_vector) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *b = worked(ctx), *tau = NULL, *w = NULL, *s = NULL, *rl = NULL;
  const double et[4] = {3.0 / 17, 6.0 / 17, 11.0 / 17, 14.0 / 17};
  const double ew[4] = {0.30824, 0.42922, 0.56236, 0.70018};
  const double sig[4] = {0.25, 1.0 / 3, 0.5, 0.6};
  for (int method = 0; method < 2; ++method) {
    effml_sampler_leverage_options o;
    effml_sampler_leverage_options_init(&o);
    o.method = method;
    ck_assert_int_eq(effml_sampler_leverage_scores(ctx, &o, b, &tau), EFFML_OK);
    for (int i = 0; i < 4; ++i) ck_assert_double_eq_tol(F(tau)[i], et[i], method ? 0.5 * et[i] : 1e-14);
    effml_tensor_free(tau);
  }
  int64_t iters = 0;
  ck_assert_int_eq(effml_sampler_lewis_weights(ctx, NULL, b, 1.0, &w, &iters), EFFML_OK);
  double sum = 0;
  for (int i = 0; i < 4; ++i) {
    ck_assert_double_eq_tol(F(w)[i], ew[i], 6e-6);
    sum += F(w)[i];
  }
  ck_assert_double_eq_tol(sum, 2.0, 1e-9);
  ck_assert(iters > 5 && iters < 100);
  ck_assert_int_eq(effml_sampler_sensitivity_upper_bounds(ctx, NULL, b, 1.0, &s), EFFML_OK);
  for (int i = 0; i < 4; ++i) ck_assert(F(s)[i] >= sig[i] - 1e-12 && F(s)[i] <= 1.0);
  ck_assert_int_eq(effml_sampler_root_leverage_scores(ctx, NULL, b, 1.0, &rl), EFFML_OK);
  for (int i = 0; i < 4; ++i) ck_assert_double_eq_tol(F(rl)[i], sqrt(et[i]), 1e-14);
  /* p = 2 Lewis weights are leverage scores */
  effml_tensor *w2 = NULL;
  ck_assert_int_eq(effml_sampler_lewis_weights(ctx, NULL, b, 2.0, &w2, &iters), EFFML_OK);
  for (int i = 0; i < 4; ++i) ck_assert_double_eq_tol(F(w2)[i], et[i], 1e-14);
  ck_assert_int_le(iters, 2);
  effml_tensor_free(w2);
  effml_tensor_free(rl);
  effml_tensor_free(s);
  effml_tensor_free(w);
  effml_tensor_free(b);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_heavy_tailed) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *a = ref_npy(ctx, "heavy_a"), *et = ref_npy(ctx, "heavy_tau"), *s1 = ref_npy(ctx, "heavy_s1");
  const char *lw[3] = {"heavy_lw1", "heavy_lw15", "heavy_lw3"};
  const double ps[3] = {1.0, 1.5, 3.0};
  effml_tensor *tau = NULL;
  ck_assert_int_eq(effml_sampler_leverage_scores(ctx, NULL, a, &tau), EFFML_OK);
  for (int i = 0; i < 40; ++i) ck_assert_double_eq_tol(F(tau)[i], F(et)[i], 1e-13);
  for (int k = 0; k < 3; ++k) {
    effml_tensor *e = ref_npy(ctx, lw[k]), *w = NULL, *sb = NULL;
    int64_t iters = 0;
    ck_assert_int_eq(effml_sampler_lewis_weights(ctx, NULL, a, ps[k], &w, &iters), EFFML_OK);
    double sum = 0;
    for (int i = 0; i < 40; ++i) {
      ck_assert_double_eq_tol(F(w)[i], F(e)[i], 1e-10);
      sum += F(w)[i];
    }
    ck_assert_double_eq_tol(sum, 3.0, 1e-10);
    ck_assert_int_le(iters, 80); /* contraction |1 - p/2| */
    ck_assert_int_eq(effml_sampler_sensitivity_upper_bounds(ctx, NULL, a, ps[k], &sb), EFFML_OK);
    if (k == 0)
      for (int i = 0; i < 40; ++i) ck_assert(F(sb)[i] >= F(s1)[i] * (1 - 1e-9)); /* an upper bound */
    effml_tensor_free(sb);
    effml_tensor_free(w);
    effml_tensor_free(e);
  }
  effml_tensor_free(tau);
  effml_tensor_free(s1);
  effml_tensor_free(et);
  effml_tensor_free(a);
  effml_context_free(ctx);
}
END_TEST

/* Passes over A of the last exact leverage call, counted by the progress
 * callback (one report per pass). */
static int32_t count_pass(void *user, const char *call, int64_t done, int64_t total) {
  (void)call;
  (void)done;
  (void)total;
  ++*(int64_t *)user;
  return 0;
}

static effml_status lev_passes(effml_context *ctx, const effml_tensor *a, effml_tensor **tau,
                               int64_t *passes) {
  *passes = 0;
  effml_context_set_progress(ctx, count_pass, passes);
  effml_status st = effml_sampler_leverage_scores(ctx, NULL, a, tau);
  effml_context_set_progress(ctx, NULL, NULL);
  return st;
}

/* A = Q M D with exactly known scores tau_i = ||Q_i||^2: Q = H C, C the
 * first d DCT-II basis vectors (orthonormal columns), H = I - 2 v v^T / v^T v
 * a Householder reflection with heavy entries in v (so some rows carry large
 * scores), M = I + mix * (uniform - 1/2) (mixes the columns), D = diag of
 * column scales 1 .. scale_min (log-spaced).  truth[i] in long double. */
static effml_tensor *known_scores(effml_context *ctx, int64_t n, int64_t d, double mix,
                                  double scale_min, double *truth) {
  effml_tensor *a = mat(ctx, n, d, NULL);
  double *p = (double *)effml_tensor_data(a);
  long double *v = (long double *)malloc((size_t)n * sizeof(long double));
  long double *q = (long double *)malloc((size_t)(n * d) * sizeof(long double));
  double *m = (double *)malloc((size_t)(d * d) * sizeof(double));
  ck_assert(v && q && m);
  const long double pi = 3.141592653589793238462643383279502884L;
  uint64_t z = 77;
  long double vv = 0;
  for (int64_t i = 0; i < n; ++i) {
    z = z * 6364136223846793005ULL + 1442695040888963407ULL;
    v[i] = ((long double)(z >> 11) * 0x1.0p-53L - 0.5L) * (i % 997 == 3 ? 40.0L : 1.0L);
    vv += v[i] * v[i];
  }
  for (int64_t j = 0; j < d; ++j) { /* q = C, then q -= 2 v (v^T C) / v^T v */
    long double cj = sqrtl((j ? 2.0L : 1.0L) / (long double)n), vc = 0;
    for (int64_t i = 0; i < n; ++i) {
      q[i * d + j] = cj * cosl(pi * ((long double)i + 0.5L) * (long double)j / (long double)n);
      vc += v[i] * q[i * d + j];
    }
    for (int64_t i = 0; i < n; ++i) q[i * d + j] -= 2.0L * v[i] * vc / vv;
  }
  for (int64_t k = 0; k < d * d; ++k) {
    z = z * 6364136223846793005ULL + 1442695040888963407ULL;
    m[k] = (k / d == k % d ? 1.0 : 0.0) + mix * ((double)(z >> 11) * 0x1.0p-53 - 0.5);
  }
  for (int64_t i = 0; i < n; ++i) {
    long double t = 0;
    for (int64_t j = 0; j < d; ++j) {
      long double s = 0;
      for (int64_t k = 0; k < d; ++k) s += q[i * d + k] * m[k * d + j];
      p[i * d + j] = (double)(s * powl(scale_min, d > 1 ? (long double)j / (long double)(d - 1) : 0.0L));
      t += q[i * d + j] * q[i * d + j];
    }
    truth[i] = (double)t;
  }
  free(v);
  free(q);
  free(m);
  return a;
}

/* max_i |tau_i - truth_i| / truth_i */
static double max_rel_err(const effml_tensor *tau, const double *truth, int64_t n) {
  double e = 0;
  for (int64_t i = 0; i < n; ++i) e = fmax(e, fabs(F(tau)[i] - truth[i]) / truth[i]);
  return e;
}

/* Columns on scales 1 .. 1e-8 (cond(A) ~ 1e8, so a plain Cholesky of A^T A
 * would lose every digit) but well conditioned once equilibrated: one
 * CholeskyQR step, two passes over A, at every thread count and ISA level;
 * every score within 1e-12 (relative) of the exact one. */
START_TEST(test_one_step_equilibrated) {
  const int64_t n = 20000, d = 12;
  double *truth = (double *)malloc((size_t)n * sizeof(double));
  ck_assert_ptr_nonnull(truth);
  effml_context *ctx = tu_ctx(0);
  effml_tensor *a = known_scores(ctx, n, d, 0.1, 1e-8, truth), *t1 = NULL;
  int64_t passes = 0;
  ck_assert_int_eq(lev_passes(ctx, a, &t1, &passes), EFFML_OK);
  ck_assert_int_eq(passes, 2);
  double err = max_rel_err(t1, truth, n), sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += F(t1)[i];
  printf("one step: max relative error %.3g, sum - d = %.3g\n", err, sum - (double)d);
  ck_assert_msg(err <= 1e-12, "max relative error %g", err);
  ck_assert_msg(fabs(sum - (double)d) <= 1e-12 * (double)d, "sum - d = %g", sum - (double)d);
  const int32_t cpu = effml_core_isa_level();
  for (int32_t isa = EFFML_CORE_ISA_PORTABLE; isa <= cpu; ++isa)
    for (int32_t th = 1; th <= 3; th += 2) {
      effml_context *c = tu_ctx(0);
      ck_assert_int_eq(effml_context_set_isa_level(c, isa), EFFML_OK);
      ck_assert_int_eq(effml_context_set_num_threads(c, th), EFFML_OK);
      effml_tensor *t = NULL;
      ck_assert_int_eq(lev_passes(c, a, &t, &passes), EFFML_OK);
      ck_assert_int_eq(passes, 2);
      ck_assert_msg(max_rel_err(t, truth, n) <= 1e-12, "%s, %d threads: %g",
                    effml_core_isa_name(isa), th, max_rel_err(t, truth, n));
      if (isa == cpu) /* the thread count never changes the bytes */
        ck_assert_int_eq(memcmp(F(t), F(t1), (size_t)n * sizeof(double)), 0);
      effml_tensor_free(t);
      effml_context_free(c);
    }
  effml_tensor_free(t1);
  effml_tensor_free(a);
  effml_context_free(ctx);
  free(truth);
}
END_TEST

/* The fused kernels' Gram tiles (4 x 4 column tiles over 64-row panels) at
 * widths that leave partial tiles and row counts that leave partial panels
 * and lanes: the scores of every ISA level stay within 1e-12 of exact. */
START_TEST(test_one_step_widths) {
  const int64_t ds[] = {1, 7, 33, 64}, ns[] = {4099, 8250, 9001, 12345};
  for (int c = 0; c < 4; ++c) {
    const int64_t n = ns[c], d = ds[c];
    double *truth = (double *)malloc((size_t)n * sizeof(double));
    ck_assert_ptr_nonnull(truth);
    effml_context *ctx = tu_ctx(0);
    effml_tensor *a = known_scores(ctx, n, d, 0.1 / (double)d, d > 1 ? 1e-4 : 1.0, truth);
    const int32_t cpu = effml_core_isa_level();
    for (int32_t isa = EFFML_CORE_ISA_PORTABLE; isa <= cpu; ++isa) {
      ck_assert_int_eq(effml_context_set_isa_level(ctx, isa), EFFML_OK);
      effml_tensor *t = NULL;
      int64_t passes = 0;
      ck_assert_int_eq(lev_passes(ctx, a, &t, &passes), EFFML_OK);
      ck_assert_int_eq(passes, 2);
      double err = max_rel_err(t, truth, n);
      ck_assert_msg(err <= 1e-12, "d %lld at %s: max relative error %g", (long long)d,
                    effml_core_isa_name(isa), err);
      effml_tensor_free(t);
    }
    effml_tensor_free(a);
    effml_context_free(ctx);
    free(truth);
  }
}
END_TEST

/* The threshold itself: two columns with correlation rho (the others
 * orthogonal), so the smallest eigenvalue of the correlation matrix is
 * 1 - rho: 0.26 takes one step, 0.24 the refinement; both exact. */
START_TEST(test_one_step_threshold) {
  const int64_t n = 9000, d = 6;
  const double rhos[2] = {0.74, 0.76};
  double *truth = (double *)malloc((size_t)n * sizeof(double));
  ck_assert_ptr_nonnull(truth);
  effml_context *ctx = tu_ctx(0);
  for (int c = 0; c < 2; ++c) {
    effml_tensor *a = known_scores(ctx, n, d, 0.0, 1e-4, truth), *t = NULL;
    double *p = (double *)effml_tensor_data(a);
    const double s1 = pow(1e-4, 1.0 / (double)(d - 1)), rho = rhos[c];
    for (int64_t i = 0; i < n; ++i) /* column 1 = s1 (rho q0 + sqrt(1 - rho^2) q1) */
      p[i * d + 1] = rho * s1 * p[i * d] + sqrt(1 - rho * rho) * p[i * d + 1];
    int64_t passes = 0;
    ck_assert_int_eq(lev_passes(ctx, a, &t, &passes), EFFML_OK);
    ck_assert_msg(passes == (c == 0 ? 2 : 3), "rho %g: %lld passes", rho, (long long)passes);
    double err = max_rel_err(t, truth, n);
    ck_assert_msg(err <= 1e-12, "rho %g: max relative error %g", rho, err);
    effml_tensor_free(t);
    effml_tensor_free(a);
  }
  effml_context_free(ctx);
  free(truth);
}
END_TEST

/* Strongly mixed columns (equilibrated kappa^2 far above the one-step bound,
 * cond ~ 1e3 before scaling to 1e-6): the refinement pass runs (three passes)
 * and the scores stay exact to 1e-12. */
START_TEST(test_refined_when_mixed) {
  const int64_t n = 20000, d = 12;
  double *truth = (double *)malloc((size_t)n * sizeof(double));
  ck_assert_ptr_nonnull(truth);
  effml_context *ctx = tu_ctx(0);
  effml_tensor *a = known_scores(ctx, n, d, 3.0, 1e-6, truth), *t = NULL;
  int64_t passes = 0;
  ck_assert_int_eq(lev_passes(ctx, a, &t, &passes), EFFML_OK);
  ck_assert_int_eq(passes, 3);
  double err = max_rel_err(t, truth, n);
  printf("refined: max relative error %.3g\n", err);
  ck_assert_msg(err <= 1e-12, "max relative error %g", err);
  effml_tensor_free(t);
  effml_tensor_free(a);
  effml_context_free(ctx);
  free(truth);
}
END_TEST

/* The first pass checks finiteness: a NaN or an infinity deep in A is named
 * by row and column; finite values whose squares overflow are not an error
 * (Householder TSQR takes over) and leave the scores scale-invariant. */
START_TEST(test_nonfinite_and_overflow) {
  const int64_t n = 10000, d = 5;
  double *truth = (double *)malloc((size_t)n * sizeof(double));
  ck_assert_ptr_nonnull(truth);
  effml_context *ctx = tu_ctx(0);
  effml_tensor *a = known_scores(ctx, n, d, 0.1, 1e-3, truth), *t = NULL, *big = NULL;
  double *p = (double *)effml_tensor_data(a);
  const double keep = p[7654 * d + 3];
  p[7654 * d + 3] = NAN;
  ck_assert_int_eq(effml_sampler_leverage_scores(ctx, NULL, a, &t), EFFML_E_NUMERIC);
  ck_assert_ptr_null(t);
  ck_assert_msg(strstr(effml_context_last_error(ctx), "non-finite value nan at row 7654, column 3"),
                "%s", effml_context_last_error(ctx));
  p[7654 * d + 3] = -INFINITY;
  p[9999 * d + 0] = INFINITY;
  ck_assert_int_eq(effml_sampler_leverage_scores(ctx, NULL, a, &t), EFFML_E_NUMERIC);
  ck_assert_msg(strstr(effml_context_last_error(ctx), "non-finite value -inf at row 7654, column 3"),
                "%s", effml_context_last_error(ctx));
  p[7654 * d + 3] = keep;
  ck_assert_int_eq(effml_sampler_leverage_scores(ctx, NULL, a, &t), EFFML_E_NUMERIC);
  ck_assert_msg(strstr(effml_context_last_error(ctx), "non-finite value inf at row 9999, column 0"),
                "%s", effml_context_last_error(ctx));
  effml_tensor_free(a);
  a = known_scores(ctx, n, d, 0.1, 1e-3, truth);
  ck_assert_int_eq(effml_tensor_convert(ctx, a, EFFML_F64, &big), EFFML_OK);
  double *b = (double *)effml_tensor_data(big);
  for (int64_t i = 0; i < n * d; ++i) b[i] *= 0x1p600; /* exact: squares overflow */
  int64_t passes = 0;
  ck_assert_int_eq(lev_passes(ctx, big, &t, &passes), EFFML_OK);
  ck_assert_int_eq(passes, 4); /* Gram (overflowed), Householder, refinement, scores */
  double err = max_rel_err(t, truth, n);
  ck_assert_msg(err <= 1e-12, "max relative error %g", err);
  effml_tensor_free(t);
  effml_tensor_free(big);
  effml_tensor_free(a);
  effml_context_free(ctx);
  free(truth);
}
END_TEST

/* cond(A) = 1e10: a Cholesky of A^T A cannot even be formed; ours matches numpy's QR. */
START_TEST(test_ill_conditioned) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *a = ref_npy(ctx, "ill_a"), *et = ref_npy(ctx, "ill_tau"), *tau = NULL;
  effml_tensor *tt = ref_npy(ctx, "ill_tau_true");
  int64_t passes = 0;
  ck_assert_int_eq(lev_passes(ctx, a, &tau, &passes), EFFML_OK);
  /* Gram, then either its Cholesky fails or the refinement finds U far from
   * orthonormal (one more pass), then Householder, refinement, scores */
  ck_assert_msg(passes == 4 || passes == 5, "%lld passes", (long long)passes);
  double err = 0, err_np = 0, sum = 0;
  for (int i = 0; i < 600; ++i) {
    err = fmax(err, fabs(F(tau)[i] - F(tt)[i]));
    err_np = fmax(err_np, fabs(F(et)[i] - F(tt)[i]));
    sum += F(tau)[i];
  }
  /* as accurate as numpy's Householder QR (both ~ cond(A) eps from the truth) */
  ck_assert_msg(err <= 4 * err_np + 1e-12, "max error %g vs numpy QR %g", err, err_np);
  effml_tensor_free(tt);
  ck_assert_msg(fabs(sum - 8.0) < 1e-10, "sum - 8 = %g", sum - 8.0);
  effml_tensor_free(tau);
  effml_tensor_free(et);
  effml_tensor_free(a);
  effml_context_free(ctx);
}
END_TEST

/* Many TSQR blocks; same result for any thread count; sketch within a factor. */
START_TEST(test_tall_blocks_threads_sketch) {
  effml_context *c1 = tu_ctx(0), *c3 = tu_ctx(0);
  ck_assert_int_eq(effml_context_set_num_threads(c3, 3), EFFML_OK);
  const int64_t n = 20000, d = 6;
  effml_tensor *a = mat(c1, n, d, NULL);
  double *p = (double *)effml_tensor_data(a);
  uint64_t z = 12345;
  for (int64_t i = 0; i < n * d; ++i) {
    z = z * 6364136223846793005ULL + 1442695040888963407ULL;
    double u = (double)(z >> 11) * 0x1.0p-53;
    p[i] = (u - 0.5) * (i % d == 0 ? 1e3 : 1.0) / (1.0 + (double)(i / d % 97)); /* uneven rows */
  }
  effml_tensor *t1 = NULL, *t3 = NULL, *ts = NULL;
  ck_assert_int_eq(effml_sampler_leverage_scores(c1, NULL, a, &t1), EFFML_OK);
  ck_assert_int_eq(effml_sampler_leverage_scores(c3, NULL, a, &t3), EFFML_OK);
  ck_assert_int_eq(memcmp(F(t1), F(t3), (size_t)n * sizeof(double)), 0);
  /* check against the normal equations on this well-conditioned matrix */
  double G[36] = {0};
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < d; ++r)
      for (int64_t c = 0; c < d; ++c) G[r * d + c] += p[i * d + r] * p[i * d + c];
  /* invert G by Gauss-Jordan */
  double I[36] = {0};
  for (int r = 0; r < d; ++r) I[r * d + r] = 1;
  for (int c = 0; c < d; ++c) {
    double piv = G[c * d + c];
    for (int k = 0; k < d; ++k) {
      G[c * d + k] /= piv;
      I[c * d + k] /= piv;
    }
    for (int r = 0; r < d; ++r)
      if (r != c) {
        double f = G[r * d + c];
        for (int k = 0; k < d; ++k) {
          G[r * d + k] -= f * G[c * d + k];
          I[r * d + k] -= f * I[c * d + k];
        }
      }
  }
  double sum = 0;
  for (int64_t i = 0; i < n; i += 7) {
    double t = 0;
    for (int r = 0; r < d; ++r)
      for (int c = 0; c < d; ++c) t += p[i * d + r] * I[r * d + c] * p[i * d + c];
    ck_assert_double_eq_tol(F(t1)[i], t, 1e-10 + 1e-8 * t);
  }
  for (int64_t i = 0; i < n; ++i) sum += F(t1)[i];
  ck_assert_double_eq_tol(sum, (double)d, 1e-9);
  effml_sampler_leverage_options o;
  effml_sampler_leverage_options_init(&o);
  o.method = EFFML_SAMPLER_LEVERAGE_SKETCH;
  o.seed = 3;
  ck_assert_int_eq(effml_sampler_leverage_scores(c1, &o, a, &ts), EFFML_OK);
  for (int64_t i = 0; i < n; ++i) {
    double r = F(ts)[i] / F(t1)[i];
    ck_assert_msg(r > 0.5 && r < 2.0, "row %lld: sketched/exact = %g", (long long)i, r);
  }
  effml_tensor_free(t1);
  effml_tensor_free(t3);
  effml_tensor_free(ts);
  effml_tensor_free(a);
  effml_context_free(c1);
  effml_context_free(c3);
}
END_TEST

START_TEST(test_bad_input) {
  effml_context *ctx = tu_ctx(0);
  const double v[8] = {1, 2, 2, 4, 3, 6, -1, -2}; /* rank 1 */
  effml_tensor *a = mat(ctx, 4, 2, v), *t = NULL;
  ck_assert_int_eq(effml_sampler_leverage_scores(ctx, NULL, a, &t), EFFML_E_NUMERIC);
  ck_assert(strstr(effml_context_last_error(ctx), "rank deficient") != NULL);
  ck_assert_ptr_null(t);
  effml_sampler_leverage_options o;
  effml_sampler_leverage_options_init(&o);
  o.method = EFFML_SAMPLER_LEVERAGE_SKETCH;
  ck_assert_int_eq(effml_sampler_leverage_scores(ctx, &o, a, &t), EFFML_E_NUMERIC);
  ck_assert_int_eq(effml_sampler_lewis_weights(ctx, NULL, a, 1.0, &t, NULL), EFFML_E_NUMERIC);
  effml_tensor_free(a);
  effml_tensor *b = worked(ctx);
  ck_assert_int_eq(effml_sampler_lewis_weights(ctx, NULL, b, 4.0, &t, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_lewis_weights(ctx, NULL, b, 0.0, &t, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_root_leverage_scores(ctx, NULL, b, 2.5, &t), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_sensitivity_upper_bounds(ctx, NULL, b, 0.5, &t), EFFML_E_INVALID_ARG);
  ck_assert(strstr(effml_context_last_error(ctx), "p=0.5") != NULL);
  effml_sampler_leverage_options_init(&o);
  o.max_iter = 2;
  ck_assert_int_eq(effml_sampler_lewis_weights(ctx, &o, b, 1.0, &t, NULL), EFFML_E_NUMERIC);
  o.method = 9;
  ck_assert_int_eq(effml_sampler_leverage_scores(ctx, &o, b, &t), EFFML_E_INVALID_ARG);
  ((double *)effml_tensor_data(b))[3] = NAN;
  ck_assert_int_eq(effml_sampler_leverage_scores(ctx, NULL, b, &t), EFFML_E_NUMERIC);
  ck_assert_ptr_null(t);
  effml_tensor *wide = mat(ctx, 2, 3, NULL);
  ck_assert_int_eq(effml_sampler_leverage_scores(ctx, NULL, wide, &t), EFFML_E_SHAPE);
  effml_tensor_free(wide);
  effml_tensor_free(b);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_sampling_unbiased) {
  effml_context *ctx = tu_ctx(0);
  const int64_t n = 500;
  effml_tensor *s = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, &n, &s), EFFML_OK);
  double *sv = (double *)effml_tensor_data(s);
  for (int64_t i = 0; i < n; ++i) sv[i] = 1.0 / (1.0 + (double)i); /* skewed scores */
  for (int scheme = 0; scheme < 2; ++scheme) {
    double mean_total = 0, mean_k = 0;
    const int reps = 200;
    for (int r = 0; r < reps; ++r) {
      effml_tensor *idx = NULL, *w = NULL;
      ck_assert_int_eq(effml_sampler_sensitivity_sample(ctx, s, 50, 2.0, scheme, (uint64_t)r, &idx, &w), EFFML_OK);
      int64_t k = effml_tensor_dim(idx, 0);
      const int64_t *ip = effml_tensor_data_const(idx);
      double tot = 0;
      for (int64_t t = 0; t < k; ++t) {
        if (t) ck_assert(ip[t] > ip[t - 1]);
        tot += pow(F(w)[t], 2.0); /* sum of w^p estimates the row count n */
      }
      mean_total += tot / reps;
      mean_k += (double)k / reps;
      effml_tensor_free(idx);
      effml_tensor_free(w);
    }
    ck_assert_msg(fabs(mean_total / (double)n - 1) < 0.08, "scheme %d: mean %g", scheme, mean_total);
    ck_assert(mean_k > 20 && mean_k <= 60);
  }
  /* rows with pi = 1 always kept with weight 1; same seed -> same sample */
  effml_tensor *i1, *w1, *i2, *w2;
  ck_assert_int_eq(effml_sampler_sensitivity_sample(ctx, s, 1e6, 1.0, EFFML_SAMPLER_DRAW_BERNOULLI, 4, &i1, &w1), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(i1, 0), n);
  ck_assert(F(w1)[0] == 1.0);
  effml_tensor_free(i1);
  effml_tensor_free(w1);
  ck_assert_int_eq(effml_sampler_sensitivity_sample(ctx, s, 30, 1.0, EFFML_SAMPLER_DRAW_IID, 4, &i1, &w1), EFFML_OK);
  ck_assert_int_eq(effml_sampler_sensitivity_sample(ctx, s, 30, 1.0, EFFML_SAMPLER_DRAW_IID, 4, &i2, &w2), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(i1, 0), effml_tensor_dim(i2, 0));
  ck_assert_int_eq(memcmp(F(w1), F(w2), (size_t)effml_tensor_dim(i1, 0) * 8), 0);
  /* merge: disjoint parts (offset), then overlapping rows combine in the p-th power */
  effml_tensor *im, *wm;
  ck_assert_int_eq(effml_sampler_weighted_sample_merge(ctx, i1, w1, i2, w2, n, 1.0, &im, &wm), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(im, 0), 2 * effml_tensor_dim(i1, 0));
  ck_assert_int_eq(((const int64_t *)effml_tensor_data_const(im))[effml_tensor_dim(i1, 0)],
                   ((const int64_t *)effml_tensor_data_const(i2))[0] + n);
  effml_tensor_free(im);
  effml_tensor_free(wm);
  ck_assert_int_eq(effml_sampler_weighted_sample_merge(ctx, i1, w1, i2, w2, 0, 2.0, &im, &wm), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(im, 0), effml_tensor_dim(i1, 0));
  ck_assert_double_eq_tol(F(wm)[0], sqrt(2.0) * F(w1)[0], 1e-12);
  effml_tensor_free(im);
  effml_tensor_free(wm);
  im = NULL;
  ck_assert_int_eq(effml_sampler_weighted_sample_merge(ctx, i1, w1, i2, w2, -1, 2.0, &im, &wm), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_weighted_sample_merge(ctx, i1, w1, i2, w2, 0, 0.5, &im, &wm), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(im);
  effml_tensor_free(i1);
  effml_tensor_free(w1);
  effml_tensor_free(i2);
  effml_tensor_free(w2);
  /* bad input */
  ck_assert_int_eq(effml_sampler_sensitivity_sample(ctx, s, 0, 2.0, 0, 0, &i1, &w1), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_sensitivity_sample(ctx, s, 10, 0.5, 0, 0, &i1, &w1), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_sensitivity_sample(ctx, s, 10, 2.0, 5, 0, &i1, &w1), EFFML_E_INVALID_ARG);
  sv[3] = -1;
  ck_assert_int_eq(effml_sampler_sensitivity_sample(ctx, s, 10, 2.0, 0, 0, &i1, &w1), EFFML_E_INVALID_ARG);
  effml_tensor_free(s);
  effml_context_free(ctx);
}
END_TEST

static Suite *leverage_suite(void) {
  Suite *s = suite_create("sampler_leverage");
  TCase *tc = tcase_create("leverage");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_worked_vector);
  tcase_add_test(tc, test_heavy_tailed);
  tcase_add_test(tc, test_ill_conditioned);
  tcase_add_test(tc, test_one_step_equilibrated);
  tcase_add_test(tc, test_one_step_widths);
  tcase_add_test(tc, test_one_step_threshold);
  tcase_add_test(tc, test_refined_when_mixed);
  tcase_add_test(tc, test_nonfinite_and_overflow);
  tcase_add_test(tc, test_tall_blocks_threads_sketch);
  tcase_add_test(tc, test_bad_input);
  tcase_add_test(tc, test_sampling_unbiased);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(leverage_suite()); }
