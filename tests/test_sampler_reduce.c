/* effml_sampler_weighted_sample_reduce: the reduce of merge-and-reduce.
 * Exact identities (all rows kept when m is large; w = 1 is plain
 * sensitivity sampling; weighted rows = sampling diag(w) A by hand) and
 * unbiasedness of the weighted cost over seeds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const double *F(const effml_tensor *t) { return (const double *)effml_tensor_data_const(t); }
static const int64_t *I(const effml_tensor *t) { return (const int64_t *)effml_tensor_data_const(t); }

static effml_tensor *vec_f64(effml_context *ctx, int64_t n, const double *v) {
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, &n, &t), EFFML_OK);
  memcpy(effml_tensor_data(t), v, (size_t)n * sizeof(double));
  return t;
}

/* Heavy-tailed rows: a few large ones. */
static effml_tensor *rows(effml_context *ctx, int64_t n, int64_t d, uint64_t seed) {
  int64_t s[2] = {n, d};
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, s, &t), EFFML_OK);
  double *a = (double *)effml_tensor_data(t);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < n * d; ++i) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    double u = ((double)(x >> 11) + 0.5) * 0x1.0p-53;
    a[i] = tan(3.14159265358979 * (u - 0.5)) * 0.2; /* Cauchy-ish */
  }
  for (int64_t j = 0; j < d; ++j) a[j] *= 40; /* row 0 is rare and decisive */
  return t;
}

static double weights_of(int64_t i) { return 0.5 + (double)((i * 37) % 11) / 7.0; }

START_TEST(test_large_m_keeps_everything) {
  effml_context *ctx = tu_ctx(0);
  const int64_t n = 50, d = 3;
  effml_tensor *a = rows(ctx, n, d, 1);
  double w[50];
  for (int64_t i = 0; i < n; ++i) w[i] = weights_of(i);
  effml_tensor *tw = vec_f64(ctx, n, w), *idx = NULL, *nw = NULL;
  /* pi_i = min(1, m s_i / S) = 1 for every row once m >= S / min s */
  ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, tw, 1e12, 2.0,
                                                        EFFML_SAMPLER_SCORE_LEVERAGE, 3, &idx, &nw),
                   EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(idx, 0), n);
  for (int64_t i = 0; i < n; ++i) {
    ck_assert_int_eq(I(idx)[i], i);
    ck_assert_double_eq(F(nw)[i], w[i]);
  }
  effml_tensor_free(idx);
  effml_tensor_free(nw);
  effml_tensor_free(tw);
  effml_tensor_free(a);
  effml_context_free(ctx);
}
END_TEST

/* reduce(A, w) == sensitivity_sample(scores(diag(w) A)) with weights times w. */
START_TEST(test_equals_sampling_the_weighted_rows) {
  effml_context *ctx = tu_ctx(0);
  const int64_t n = 400, d = 4;
  effml_tensor *a = rows(ctx, n, d, 2);
  double *w = malloc((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; ++i) w[i] = weights_of(i);
  effml_tensor *tw = vec_f64(ctx, n, w);
  int64_t bs[2] = {n, d};
  effml_tensor *b = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, bs, &b), EFFML_OK);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j)
      ((double *)effml_tensor_data(b))[i * d + j] = w[i] * F(a)[i * d + j];
  const int32_t rules[3] = {EFFML_SAMPLER_SCORE_LEVERAGE, EFFML_SAMPLER_SCORE_ROOT_LEVERAGE,
                            EFFML_SAMPLER_SCORE_SENSITIVITY};
  const double ps[3] = {2.0, 1.5, 3.0};
  for (int r = 0; r < 3; ++r) {
    effml_tensor *s = NULL, *i1 = NULL, *w1 = NULL, *i2 = NULL, *w2 = NULL;
    if (r == 0) ck_assert_int_eq(effml_sampler_leverage_scores(ctx, NULL, b, &s), EFFML_OK);
    if (r == 1) ck_assert_int_eq(effml_sampler_root_leverage_scores(ctx, NULL, b, ps[r], &s), EFFML_OK);
    if (r == 2) ck_assert_int_eq(effml_sampler_sensitivity_upper_bounds(ctx, NULL, b, ps[r], &s), EFFML_OK);
    ck_assert_int_eq(effml_sampler_sensitivity_sample(ctx, s, 60, ps[r], EFFML_SAMPLER_DRAW_BERNOULLI,
                                                      9, &i1, &w1), EFFML_OK);
    ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, tw, 60, ps[r], rules[r], 9,
                                                          &i2, &w2), EFFML_OK);
    ck_assert_int_eq(effml_tensor_dim(i1, 0), effml_tensor_dim(i2, 0));
    ck_assert(effml_tensor_dim(i2, 0) < n);
    for (int64_t t = 0; t < effml_tensor_dim(i1, 0); ++t) {
      ck_assert_int_eq(I(i1)[t], I(i2)[t]);
      ck_assert_double_eq_tol(F(w2)[t], F(w1)[t] * w[I(i1)[t]], 1e-12 * F(w2)[t]);
    }
    effml_tensor_free(s);
    effml_tensor_free(i1);
    effml_tensor_free(w1);
    effml_tensor_free(i2);
    effml_tensor_free(w2);
  }
  free(w);
  effml_tensor_free(b);
  effml_tensor_free(tw);
  effml_tensor_free(a);
  effml_context_free(ctx);
}
END_TEST

/* E sum_kept w'^p |a x|^p = sum w^p |a x|^p: mean over 400 seeds within 4 standard errors. */
START_TEST(test_unbiased_cost) {
  effml_context *ctx = tu_ctx(0);
  const int64_t n = 300, d = 3;
  effml_tensor *a = rows(ctx, n, d, 3);
  double *w = malloc((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; ++i) w[i] = weights_of(i);
  effml_tensor *tw = vec_f64(ctx, n, w);
  const double x[3] = {0.7, -1.2, 0.4};
  const double ps[2] = {2.0, 1.0};
  const int32_t rules[2] = {EFFML_SAMPLER_SCORE_LEVERAGE, EFFML_SAMPLER_SCORE_ROOT_LEVERAGE};
  for (int r = 0; r < 2; ++r) {
    double p = ps[r], truth = 0;
    for (int64_t i = 0; i < n; ++i) {
      double ax = 0;
      for (int64_t j = 0; j < d; ++j) ax += F(a)[i * d + j] * x[j];
      truth += pow(w[i], p) * pow(fabs(ax), p);
    }
    double sum = 0, sum2 = 0;
    const int reps = 400;
    for (int s = 0; s < reps; ++s) {
      effml_tensor *idx = NULL, *nw = NULL;
      ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, tw, 40, p, rules[r],
                                                            (uint64_t)s, &idx, &nw), EFFML_OK);
      double c = 0;
      for (int64_t t = 0; t < effml_tensor_dim(idx, 0); ++t) {
        int64_t i = I(idx)[t];
        double ax = 0;
        for (int64_t j = 0; j < d; ++j) ax += F(a)[i * d + j] * x[j];
        c += pow(F(nw)[t], p) * pow(fabs(ax), p);
      }
      sum += c;
      sum2 += c * c;
      effml_tensor_free(idx);
      effml_tensor_free(nw);
    }
    double mean = sum / reps, var = sum2 / reps - mean * mean;
    double se = sqrt(var / reps);
    ck_assert_msg(fabs(mean - truth) < 4 * se + 1e-9 * truth, "p=%g mean %g truth %g se %g", p, mean,
                  truth, se);
    ck_assert(se > 0);
  }
  free(w);
  effml_tensor_free(tw);
  effml_tensor_free(a);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_bad_input) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *a = rows(ctx, 20, 3, 4), *idx = NULL, *nw = NULL;
  double w[20];
  for (int i = 0; i < 20; ++i) w[i] = 1;
  effml_tensor *tw = vec_f64(ctx, 20, w), *short_w = vec_f64(ctx, 10, w);
  const int32_t LEV = EFFML_SAMPLER_SCORE_LEVERAGE;
  ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, tw, 5, 1.0, LEV, 0, &idx, &nw), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, tw, 5, 2.0, 7, 0, &idx, &nw), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, tw, 0, 2.0, LEV, 0, &idx, &nw), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, tw, 5, 4.0,
                                                        EFFML_SAMPLER_SCORE_SENSITIVITY, 0, &idx, &nw), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, tw, 5, 2.5,
                                                        EFFML_SAMPLER_SCORE_ROOT_LEVERAGE, 0, &idx, &nw), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, short_w, 5, 2.0, LEV, 0, &idx, &nw), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, tw, tw, 5, 2.0, LEV, 0, &idx, &nw), EFFML_E_SHAPE);
  ((double *)effml_tensor_data(tw))[4] = 0;
  ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, tw, 5, 2.0, LEV, 0, &idx, &nw), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "w[4]"));
  ((double *)effml_tensor_data(tw))[4] = 1;
  ((double *)effml_tensor_data(a))[5] = NAN;
  ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, tw, 5, 2.0, LEV, 0, &idx, &nw), EFFML_E_NUMERIC);
  ck_assert_int_eq(effml_sampler_weighted_sample_reduce(ctx, NULL, a, tw, 5, 2.0, LEV, 0, NULL, &nw), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(idx);
  ck_assert_ptr_null(nw);
  effml_tensor_free(short_w);
  effml_tensor_free(tw);
  effml_tensor_free(a);
  effml_context_free(ctx);
}
END_TEST

static Suite *reduce_suite(void) {
  Suite *s = suite_create("sampler_reduce");
  TCase *tc = tcase_create("reduce");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_large_m_keeps_everything);
  tcase_add_test(tc, test_equals_sampling_the_weighted_rows);
  tcase_add_test(tc, test_unbiased_cost);
  tcase_add_test(tc, test_bad_input);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(reduce_suite()); }
