/* Temperature sampling, schedules, UniMax, virtual sizes, alias draws and
 * interleave stopping strategies (references: tests/ref/sampler_temperature_ref.py,
 * arXiv 1907.05019, 2304.09151, 2410.04579, HF datasets documentation examples). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static void ref_values(const char *key, double *out, int n) {
  char path[512], line[1024];
  snprintf(path, sizeof path, "%s/sampler_temperature.txt", EFFML_TEST_REF);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t kl = strlen(key);
  int found = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
      char *p = line + kl;
      for (int i = 0; i < n; ++i) out[i] = strtod(p, &p);
      found = 1;
      break;
    }
  }
  fclose(f);
  ck_assert_msg(found, "no reference line %s", key);
}

START_TEST(test_temperature_probs) {
  effml_context *ctx = tu_ctx(0);
  const double sizes[3] = {1000, 100, 10};
  const char *keys[5] = {"temp_T=1", "temp_T=2", "temp_T=3.33", "temp_T=5", "temp_T=0.5"};
  const double T[5] = {1, 2, 3.33, 5, 0.5};
  for (int t = 0; t < 5; ++t) {
    double q[3], e[3];
    ref_values(keys[t], e, 3);
    ck_assert_int_eq(effml_sampler_temperature_probs(ctx, sizes, 3, T[t], q), EFFML_OK);
    for (int i = 0; i < 3; ++i) ck_assert_double_eq_tol(q[i], e[i], 1e-14);
    ck_assert_int_eq(effml_sampler_temperature_probs_alpha(ctx, sizes, 3, 1.0 / T[t], q), EFFML_OK);
    for (int i = 0; i < 3; ++i) ck_assert_double_eq_tol(q[i], e[i], 1e-14);
  }
  double q[3];
  ck_assert_int_eq(effml_sampler_temperature_probs(ctx, sizes, 3, INFINITY, q), EFFML_OK);
  for (int i = 0; i < 3; ++i) ck_assert_double_eq_tol(q[i], 1.0 / 3.0, 1e-15);
  /* a zero-size source gets probability 0 even at T = inf */
  const double z[3] = {5, 0, 5};
  ck_assert_int_eq(effml_sampler_temperature_probs(ctx, z, 3, INFINITY, q), EFFML_OK);
  ck_assert(q[1] == 0.0 && fabs(q[0] - 0.5) < 1e-15);
  /* bad input */
  ck_assert_int_eq(effml_sampler_temperature_probs(ctx, sizes, 3, 0.0, q), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_temperature_probs(ctx, sizes, 3, NAN, q), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_temperature_probs(ctx, sizes, 0, 1.0, q), EFFML_E_INVALID_ARG);
  const double neg[2] = {1, -1};
  ck_assert_int_eq(effml_sampler_temperature_probs(ctx, neg, 2, 1.0, q), EFFML_E_INVALID_ARG);
  ck_assert(strstr(effml_context_last_error(ctx), "sizes[1]=-1") != NULL);
  const double zero[2] = {0, 0};
  ck_assert_int_eq(effml_sampler_temperature_probs(ctx, zero, 2, 1.0, q), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_temperature_probs_alpha(ctx, sizes, 3, -0.5, q), EFFML_E_INVALID_ARG);
  effml_context_free(ctx);
}
END_TEST

static double my_schedule(void *ud, int64_t step, int64_t total) {
  (void)ud;
  return 1.0 + (double)(total - step);
}

START_TEST(test_schedules) {
  effml_context *ctx = tu_ctx(0);
  effml_sampler_temperature_schedule s;
  effml_sampler_temperature_schedule_init(&s);
  double t;
  s.t_start = 5;
  s.t_end = 1;
  s.total_steps = 100;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 50, &t), EFFML_OK);
  ck_assert(t == 5.0);
  s.kind = EFFML_SAMPLER_SCHEDULE_LINEAR;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 25, &t), EFFML_OK);
  ck_assert_double_eq_tol(t, 4.0, 1e-15);
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 1000, &t), EFFML_OK);
  ck_assert_double_eq_tol(t, 1.0, 1e-15);
  s.kind = EFFML_SAMPLER_SCHEDULE_COSINE;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 0, &t), EFFML_OK);
  ck_assert_double_eq_tol(t, 5.0, 1e-15);
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 50, &t), EFFML_OK);
  ck_assert_double_eq_tol(t, 3.0, 1e-12);
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 100, &t), EFFML_OK);
  ck_assert_double_eq_tol(t, 1.0, 1e-15);
  s.kind = EFFML_SAMPLER_SCHEDULE_COOLDOWN;
  s.switch_fraction = 0.8;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 79, &t), EFFML_OK);
  ck_assert(t == 5.0);
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 80, &t), EFFML_OK);
  ck_assert(t == 1.0);
  s.switch_fraction = 1.5;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 80, &t), EFFML_E_INVALID_ARG);
  s.kind = EFFML_SAMPLER_SCHEDULE_CUSTOM;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 80, &t), EFFML_E_INVALID_ARG);
  s.fn = my_schedule;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 90, &t), EFFML_OK);
  ck_assert(t == 11.0);
  s.kind = 77;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 1, &t), EFFML_E_INVALID_ARG);
  s.kind = EFFML_SAMPLER_SCHEDULE_LINEAR;
  s.t_end = 0;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 1, &t), EFFML_E_INVALID_ARG);
  s.t_end = 1;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, -1, &t), EFFML_E_INVALID_ARG);
  s.total_steps = 0;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &s, 1, &t), EFFML_E_INVALID_ARG);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_unimax_and_virtual_sizes) {
  effml_context *ctx = tu_ctx(0);
  const double c[5] = {549707867.0, 10027573389.0, 42541080893.0, 179955884499.0, 184595788282.0};
  double U[5], p[5], eU[5], ep[5];
  ref_values("unimax_U", eU, 5);
  ref_values("unimax_p", ep, 5);
  ck_assert_int_eq(effml_sampler_unimax(ctx, c, 5, 2.5e11, 4, U, p), EFFML_OK);
  for (int i = 0; i < 5; ++i) {
    ck_assert_double_eq_tol(U[i], eU[i], 1e-4);
    ck_assert_double_eq_tol(p[i], ep[i], 1e-13);
  }
  ck_assert_double_eq_tol(p[0], 0.008795325872, 1e-12); /* UniMax anchor (arXiv 2304.09151) */
  ck_assert_int_eq(effml_sampler_unimax(ctx, c, 5, -1, 4, U, p), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_unimax(ctx, c, 5, 1e9, 0, U, p), EFFML_E_INVALID_ARG);

  const double sizes_d[3] = {1000, 100, 10};
  const int64_t sizes[3] = {1000, 100, 10};
  const double T[3] = {1, 2, 5};
  const char *keys[3] = {"vsize_T=1", "vsize_T=2", "vsize_T=5"};
  for (int t = 0; t < 3; ++t) {
    double q[3], ev;
    int64_t counts[3], V;
    ref_values(keys[t], &ev, 1);
    ck_assert_int_eq(effml_sampler_temperature_probs(ctx, sizes_d, 3, T[t], q), EFFML_OK);
    ck_assert_int_eq(effml_sampler_virtual_sizes(ctx, sizes, q, 3, 0, counts, &V), EFFML_OK);
    ck_assert_int_eq(V, (int64_t)ev);
    ck_assert_int_eq(counts[0] + counts[1] + counts[2], V);
    for (int i = 0; i < 3; ++i) ck_assert(fabs((double)counts[i] - (double)V * q[i]) < 1.0);
  }
  /* T = inf with V = 1110: exactly 370 each (ceil(n * ratio) gives 371 by float error) */
  double q[3];
  int64_t counts[3], V;
  ck_assert_int_eq(effml_sampler_temperature_probs(ctx, sizes_d, 3, INFINITY, q), EFFML_OK);
  ck_assert_int_eq(effml_sampler_virtual_sizes(ctx, sizes, q, 3, 1110, counts, &V), EFFML_OK);
  ck_assert(counts[0] == 370 && counts[1] == 370 && counts[2] == 370);
  ck_assert_int_eq(effml_sampler_virtual_sizes(ctx, sizes, q, 3, 1111, counts, NULL), EFFML_OK);
  ck_assert(counts[0] == 371 && counts[1] == 370 && counts[2] == 370); /* tie -> lower index */
  /* T = 2, V = 1110: floor [783, 247, 78] + largest remainders */
  ck_assert_int_eq(effml_sampler_temperature_probs(ctx, sizes_d, 3, 2, q), EFFML_OK);
  ck_assert_int_eq(effml_sampler_virtual_sizes(ctx, sizes, q, 3, 1110, counts, NULL), EFFML_OK);
  ck_assert(counts[0] == 784 && counts[1] == 248 && counts[2] == 78);
  const double bad[3] = {0.5, 0.5, 0.5};
  ck_assert_int_eq(effml_sampler_virtual_sizes(ctx, sizes, bad, 3, 10, counts, NULL), EFFML_E_INVALID_ARG);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_alias) {
  effml_context *ctx = tu_ctx(0);
  const double w[5] = {0.5, 0.0, 0.25, 0.125, 0.125};
  effml_sampler_alias *a = NULL, *b = NULL;
  ck_assert_int_eq(effml_sampler_alias_create(ctx, w, 5, 42, &a), EFFML_OK);
  ck_assert_int_eq(effml_sampler_alias_create(ctx, w, 5, 42, &b), EFFML_OK);
  enum { N = 400000 };
  int64_t *out = malloc(N * sizeof(int64_t)), *out2 = malloc(N * sizeof(int64_t));
  ck_assert_int_eq(effml_sampler_alias_draw(ctx, a, N, out), EFFML_OK);
  /* same seed, draws split into calls: same sequence */
  ck_assert_int_eq(effml_sampler_alias_draw(ctx, b, 1000, out2), EFFML_OK);
  ck_assert_int_eq(effml_sampler_alias_draw(ctx, b, N - 1000, out2 + 1000), EFFML_OK);
  ck_assert_int_eq(memcmp(out, out2, N * sizeof(int64_t)), 0);
  int64_t cnt[5] = {0};
  for (int i = 0; i < N; ++i) {
    ck_assert(out[i] >= 0 && out[i] < 5);
    cnt[out[i]]++;
  }
  ck_assert_int_eq(cnt[1], 0); /* zero weight never drawn */
  for (int i = 0; i < 5; ++i) {
    double e = w[i] * N, sd = sqrt(N * w[i] * (1 - w[i])) + 1e-9;
    ck_assert_msg(fabs((double)cnt[i] - e) < 5 * sd, "index %d: %lld vs %g", i, (long long)cnt[i], e);
  }
  effml_sampler_alias_free(a);
  effml_sampler_alias_free(b);
  effml_sampler_alias_free(NULL);
  const double bad[2] = {1, NAN};
  a = NULL;
  ck_assert_int_eq(effml_sampler_alias_create(ctx, bad, 2, 0, &a), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(a);
  const double zero[2] = {0, 0};
  ck_assert_int_eq(effml_sampler_alias_create(ctx, zero, 2, 0, &a), EFFML_E_INVALID_ARG);
  free(out);
  free(out2);
  effml_context_free(ctx);
}
END_TEST

static void expect_seq(effml_context *ctx, const int64_t *len, int k, const double *p, int32_t stop,
                       uint64_t seed, const int64_t *expect_flat, int64_t n_expect,
                       const int64_t *offsets) {
  effml_tensor *s = NULL, *i = NULL;
  ck_assert_int_eq(effml_sampler_interleave(ctx, len, k, p, stop, seed, 100000, &s, &i), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(s, 0), n_expect);
  const int64_t *sp = effml_tensor_data_const(s), *ip = effml_tensor_data_const(i);
  for (int64_t t = 0; t < n_expect; ++t)
    ck_assert_int_eq(offsets[sp[t]] + ip[t], expect_flat[t]);
  effml_tensor_free(s);
  effml_tensor_free(i);
}

START_TEST(test_interleave) {
  effml_context *ctx = tu_ctx(0);
  /* HF datasets round robin examples: sources [0..2], [3..6], [7..11] */
  const int64_t len[3] = {3, 4, 5}, off[3] = {0, 3, 7};
  const int64_t first[] = {0, 3, 7, 1, 4, 8, 2, 5, 9};
  expect_seq(ctx, len, 3, NULL, EFFML_SAMPLER_STOP_FIRST_EXHAUSTED, 0, first, 9, off);
  const int64_t len2[3] = {3, 4, 5}, off2[3] = {0, 10, 20};
  const int64_t all[] = {0, 10, 20, 1, 11, 21, 2, 12, 22, 0, 13, 23, 1, 10, 24};
  expect_seq(ctx, len2, 3, NULL, EFFML_SAMPLER_STOP_ALL_EXHAUSTED, 0, all, 15, off2);
  const int64_t wo[] = {0, 10, 20, 1, 11, 21, 2, 12, 22, 13, 23, 24};
  expect_seq(ctx, len2, 3, NULL, EFFML_SAMPLER_STOP_ALL_EXHAUSTED_WITHOUT_REPLACEMENT, 0, wo, 12, off2);

  /* With probabilities: rules of the HF doc example ([0,1,2], [10,11,12],
   * [20,21,22], p [0.7, 0.2, 0.1]): the stop test runs before each draw. */
  const int64_t l3[3] = {3, 3, 3};
  const double p[3] = {0.7, 0.2, 0.1};
  for (uint64_t seed = 0; seed < 50; ++seed) {
    for (int32_t stop = 0; stop < 3; ++stop) {
      effml_tensor *s = NULL, *i = NULL;
      ck_assert_int_eq(effml_sampler_interleave(ctx, l3, 3, p, stop, seed, 100000, &s, &i), EFFML_OK);
      int64_t n = effml_tensor_dim(s, 0);
      const int64_t *sp = effml_tensor_data_const(s), *ip = effml_tensor_data_const(i);
      int64_t used[3] = {0, 0, 0};
      int exhausted[3] = {0, 0, 0};
      for (int64_t t = 0; t < n; ++t) {
        /* not stopped before this draw */
        int any = exhausted[0] | exhausted[1] | exhausted[2];
        int allx = exhausted[0] & exhausted[1] & exhausted[2];
        ck_assert(!(stop == EFFML_SAMPLER_STOP_FIRST_EXHAUSTED ? any : allx));
        ck_assert_int_eq(ip[t], stop == 2 ? used[sp[t]] : used[sp[t]] % 3); /* next example */
        if (stop == 2) ck_assert(!exhausted[sp[t]]);
        if (++used[sp[t]] % 3 == 0) exhausted[sp[t]] = 1;
      }
      int any = exhausted[0] | exhausted[1] | exhausted[2];
      int allx = exhausted[0] & exhausted[1] & exhausted[2];
      ck_assert(stop == EFFML_SAMPLER_STOP_FIRST_EXHAUSTED ? any : allx); /* stopped right after */
      if (stop == 2) ck_assert_int_eq(n, 9);
      effml_tensor_free(s);
      effml_tensor_free(i);
    }
  }
  /* a zero-probability source is never drawn and never blocks stopping */
  const double pz[3] = {0.5, 0.5, 0.0};
  effml_tensor *s = NULL, *i = NULL;
  ck_assert_int_eq(effml_sampler_interleave(ctx, l3, 3, pz, EFFML_SAMPLER_STOP_ALL_EXHAUSTED, 3, 1000, &s, &i), EFFML_OK);
  for (int64_t t = 0; t < effml_tensor_dim(s, 0); ++t) ck_assert_int_ne(((const int64_t *)effml_tensor_data_const(s))[t], 2);
  effml_tensor_free(s);
  effml_tensor_free(i);
  /* same seed, same sequence */
  effml_tensor *s1, *i1, *s2, *i2;
  ck_assert_int_eq(effml_sampler_interleave(ctx, len2, 3, p, EFFML_SAMPLER_STOP_ALL_EXHAUSTED, 9, 1000, &s1, &i1), EFFML_OK);
  ck_assert_int_eq(effml_sampler_interleave(ctx, len2, 3, p, EFFML_SAMPLER_STOP_ALL_EXHAUSTED, 9, 1000, &s2, &i2), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(s1, 0), effml_tensor_dim(s2, 0));
  ck_assert_int_eq(memcmp(effml_tensor_data_const(s1), effml_tensor_data_const(s2), (size_t)effml_tensor_dim(s1, 0) * 8), 0);
  effml_tensor_free(s1);
  effml_tensor_free(i1);
  effml_tensor_free(s2);
  effml_tensor_free(i2);
  /* bad input */
  s = i = NULL;
  ck_assert_int_eq(effml_sampler_interleave(ctx, len2, 3, p, 7, 0, 100, &s, &i), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_interleave(ctx, len2, 3, NULL, EFFML_SAMPLER_STOP_ALL_EXHAUSTED, 0, 5, &s, &i), EFFML_E_RANGE);
  ck_assert_ptr_null(s);
  const double pbad[3] = {0.5, 0.2, 0.1};
  ck_assert_int_eq(effml_sampler_interleave(ctx, len2, 3, pbad, 0, 0, 100, &s, &i), EFFML_E_INVALID_ARG);
  const int64_t lbad[2] = {3, 0};
  ck_assert_int_eq(effml_sampler_interleave(ctx, lbad, 2, NULL, 0, 0, 100, &s, &i), EFFML_E_INVALID_ARG);
  effml_context_free(ctx);
}
END_TEST

static Suite *temperature_suite(void) {
  Suite *s = suite_create("sampler_temperature");
  TCase *tc = tcase_create("temperature");
  tcase_add_test(tc, test_temperature_probs);
  tcase_add_test(tc, test_schedules);
  tcase_add_test(tc, test_unimax_and_virtual_sizes);
  tcase_add_test(tc, test_alias);
  tcase_add_test(tc, test_interleave);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(temperature_suite()); }
