/* The `_into` variants of the sampler calls with large outputs (kNN,
 * re-sampling, plan application, interleave, leverage scores): the same bytes
 * as the allocating call, written into the caller's tensors; rows past the
 * result untouched; unusable outputs refused by name and left untouched;
 * "too small" reports the size needed so the caller can retry. */
#include <math.h>
#include <string.h>

#include "testutil.h"

#define SENT_I64 ((int64_t)0x5A5A5A5A5A5A5A5ALL)

static effml_tensor *make(effml_context *ctx, int32_t dtype, int32_t ndim, int64_t d0,
                          int64_t d1) {
  int64_t shape[2] = {d0, d1};
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, dtype, ndim, shape, &t), EFFML_OK);
  return t;
}

/* Fill with a byte pattern that no result has. */
static void poison(effml_tensor *t) { memset(effml_tensor_data(t), 0x5A, effml_tensor_nbytes(t)); }

static int all_poison(const effml_tensor *t, size_t from_byte) {
  const unsigned char *p = (const unsigned char *)effml_tensor_data_const(t);
  for (size_t i = from_byte; i < effml_tensor_nbytes(t); ++i)
    if (p[i] != 0x5A) return 0;
  return 1;
}

/* 60 rows x 5 features, classes 0 (45 rows) and 1 (15 rows). */
static void imbalanced(effml_context *ctx, effml_tensor **x, effml_tensor **y) {
  *x = tu_f32(ctx, 60, 5, NULL);
  tu_fill_uniform(*x, 7, -1, 1);
  *y = make(ctx, EFFML_I64, 1, 60, 0);
  int64_t *yy = (int64_t *)effml_tensor_data(*y);
  for (int64_t i = 0; i < 60; ++i) yy[i] = i % 4 == 0 ? 1 : 0;
}

START_TEST(knn_into_matches_knn) {
  effml_context *ctx = tu_ctx(1);
  effml_tensor *x = tu_f32(ctx, 50, 4, NULL), *q = tu_f32(ctx, 20, 4, NULL);
  tu_fill_uniform(x, 3, -2, 2);
  tu_fill_uniform(q, 4, -2, 2);
  for (int with_query = 0; with_query < 2; ++with_query) {
    const effml_tensor *xq = with_query ? q : NULL;
    const int64_t nq = with_query ? 20 : 50, k = 6;
    effml_tensor *i0 = NULL, *d0 = NULL;
    ck_assert_int_eq(effml_sampler_knn(ctx, x, xq, k, &i0, &d0), EFFML_OK);
    effml_tensor *i1 = make(ctx, EFFML_I64, 2, nq, k), *d1 = make(ctx, EFFML_F64, 2, nq, k);
    poison(i1);
    poison(d1);
    ck_assert_int_eq(effml_sampler_knn_into(ctx, x, xq, k, i1, d1), EFFML_OK);
    ck_assert_int_eq(memcmp(effml_tensor_data(i0), effml_tensor_data(i1), effml_tensor_nbytes(i0)), 0);
    ck_assert_int_eq(memcmp(effml_tensor_data(d0), effml_tensor_data(d1), effml_tensor_nbytes(d0)), 0);
    /* again into the same buffers, without distances: same indices */
    poison(i1);
    ck_assert_int_eq(effml_sampler_knn_into(ctx, x, xq, k, i1, NULL), EFFML_OK);
    ck_assert_int_eq(memcmp(effml_tensor_data(i0), effml_tensor_data(i1), effml_tensor_nbytes(i0)), 0);
    /* the first neighbour's distance is the true Euclidean distance */
    const float *xd = (const float *)effml_tensor_data_const(x);
    const float *qd = with_query ? (const float *)effml_tensor_data_const(q) : xd;
    const int64_t j = ((const int64_t *)effml_tensor_data_const(i1))[0];
    double s = 0;
    for (int t = 0; t < 4; ++t) s += ((double)qd[t] - xd[j * 4 + t]) * ((double)qd[t] - xd[j * 4 + t]);
    ck_assert_double_eq_tol(((const double *)effml_tensor_data_const(d1))[0], sqrt(s), 1e-9);
    effml_tensor_free(i0); effml_tensor_free(d0); effml_tensor_free(i1); effml_tensor_free(d1);
  }
  effml_tensor_free(x);
  effml_tensor_free(q);
  effml_context_free(ctx);
}
END_TEST

START_TEST(knn_into_refuses_unusable_outputs) {
  effml_context *ctx = tu_ctx(1);
  effml_tensor *x = tu_f32(ctx, 30, 3, NULL);
  tu_fill_uniform(x, 5, 0, 1);
  effml_tensor *wrong_k = make(ctx, EFFML_I64, 2, 30, 4), *wrong_dt = make(ctx, EFFML_I32, 2, 30, 5);
  effml_tensor *ok = make(ctx, EFFML_I64, 2, 30, 5), *dist_rows = make(ctx, EFFML_F64, 2, 29, 5);
  poison(wrong_k); poison(wrong_dt); poison(ok); poison(dist_rows);
  ck_assert_int_eq(effml_sampler_knn_into(ctx, x, NULL, 5, wrong_k, NULL), EFFML_E_SHAPE);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "indices"));
  ck_assert_int_eq(effml_sampler_knn_into(ctx, x, NULL, 5, wrong_dt, NULL), EFFML_E_DTYPE);
  ck_assert_int_eq(effml_sampler_knn_into(ctx, x, NULL, 5, ok, dist_rows), EFFML_E_SHAPE);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "distances"));
  ck_assert_int_eq(effml_sampler_knn_into(ctx, x, NULL, 5, NULL, NULL), EFFML_E_INVALID_ARG);
  int64_t buf[150];
  int64_t shape[2] = {30, 5};
  effml_tensor *ro = NULL;
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_I64, 2, shape, NULL, buf, sizeof buf, 1, &ro), EFFML_OK);
  ck_assert_int_eq(effml_sampler_knn_into(ctx, x, NULL, 5, ro, NULL), EFFML_E_INVALID_ARG);
  ck_assert(all_poison(wrong_k, 0) && all_poison(wrong_dt, 0) && all_poison(ok, 0) &&
            all_poison(dist_rows, 0));
  effml_tensor_free(ro);
  effml_tensor_free(wrong_k); effml_tensor_free(wrong_dt); effml_tensor_free(ok);
  effml_tensor_free(dist_rows); effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

/* One method: the allocating result, then _into with too little room
 * (refused, *n_out = rows needed, nothing written), then with room to spare
 * (same bytes, the spare rows untouched). */
static void check_resample_into(effml_context *ctx, const effml_sampler_resample_options *o,
                                const effml_tensor *x, const effml_tensor *y) {
  effml_tensor *x0 = NULL, *y0 = NULL;
  ck_assert_int_eq(effml_sampler_resample(ctx, o, x, y, &x0, &y0), EFFML_OK);
  const int64_t m = effml_tensor_dim(x0, 0), d = effml_tensor_dim(x0, 1);
  ck_assert_int_ge(m, 2);
  effml_tensor *xs = make(ctx, effml_tensor_dtype(x), 2, m - 1, d), *ys = make(ctx, EFFML_I64, 1, m - 1, 0);
  poison(xs);
  poison(ys);
  int64_t n_out = -1;
  ck_assert_int_eq(effml_sampler_resample_into(ctx, o, x, y, xs, ys, &n_out), EFFML_E_SHAPE);
  ck_assert_int_eq(n_out, m);
  ck_assert(all_poison(xs, 0) && all_poison(ys, 0));
  effml_tensor *xb = make(ctx, effml_tensor_dtype(x), 2, m + 3, d), *yb = make(ctx, EFFML_I64, 1, m + 3, 0);
  poison(xb);
  poison(yb);
  n_out = -1;
  ck_assert_int_eq(effml_sampler_resample_into(ctx, o, x, y, xb, yb, &n_out), EFFML_OK);
  ck_assert_int_eq(n_out, m);
  ck_assert_int_eq(memcmp(effml_tensor_data(x0), effml_tensor_data(xb), effml_tensor_nbytes(x0)), 0);
  ck_assert_int_eq(memcmp(effml_tensor_data(y0), effml_tensor_data(yb), effml_tensor_nbytes(y0)), 0);
  ck_assert(all_poison(xb, effml_tensor_nbytes(x0)) && all_poison(yb, effml_tensor_nbytes(y0)));
  effml_tensor_free(x0); effml_tensor_free(y0); effml_tensor_free(xs); effml_tensor_free(ys);
  effml_tensor_free(xb); effml_tensor_free(yb);
}

START_TEST(resample_into_matches_resample) {
  effml_context *ctx = tu_ctx(1);
  effml_tensor *x, *y;
  imbalanced(ctx, &x, &y);
  effml_sampler_resample_options o;
  const int32_t methods[] = {EFFML_SAMPLER_RESAMPLE_SMOTE, EFFML_SAMPLER_RESAMPLE_ADASYN,
                             EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER, EFFML_SAMPLER_RESAMPLE_ENN};
  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; ++i) {
    effml_sampler_resample_options_init(&o);
    o.method = methods[i];
    o.seed = 11;
    check_resample_into(ctx, &o, x, y);
  }
  /* SMOTE-NC (no plan form: built in library memory, then copied) */
  int64_t cat[1] = {4};
  float *xd = (float *)effml_tensor_data(x);
  for (int64_t r = 0; r < 60; ++r) xd[r * 5 + 4] = (float)(r % 3);
  effml_sampler_resample_options_init(&o);
  o.method = EFFML_SAMPLER_RESAMPLE_SMOTENC;
  o.n_categorical = 1;
  o.categorical_features = cat;
  check_resample_into(ctx, &o, x, y);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* The allocating call writes x's rows straight into the output's first n
 * rows (they are not in its internal plan), then the plan's rows: the same
 * bytes as the public plan (originals included) applied, for outputs past one
 * 65536-row round, f32 and f64 x, i32 and i64 y, 2 threads, and methods whose
 * plans copy runs of rows (random over-sampling) or interpolate. */
START_TEST(resample_matches_plan_apply_large) {
  effml_context *ctx = tu_ctx(2);
  ck_assert_int_eq(effml_context_set_num_threads(ctx, 2), EFFML_OK);
  const int64_t n = 70001, d = 3;
  /* (the methods share the plan machinery; those searching all n rows for
   * neighbours are left out to keep the sanitizer run short) */
  const int32_t methods[] = {EFFML_SAMPLER_RESAMPLE_SMOTE, EFFML_SAMPLER_RESAMPLE_RANDOM_OVER};
  for (int wide = 0; wide <= 1; ++wide) {
    int64_t xs[2] = {n, d};
    effml_tensor *x = NULL, *y = NULL;
    ck_assert_int_eq(effml_tensor_create(ctx, wide ? EFFML_F64 : EFFML_F32, 2, xs, &x), EFFML_OK);
    ck_assert_int_eq(effml_tensor_create(ctx, wide ? EFFML_I64 : EFFML_I32, 1, &n, &y), EFFML_OK);
    uint64_t s = 99;
    for (int64_t i = 0; i < n; ++i) {
      const int lab = i % 10 == 3;
      if (wide) ((int64_t *)effml_tensor_data(y))[i] = lab;
      else ((int32_t *)effml_tensor_data(y))[i] = lab;
      for (int64_t t = 0; t < d; ++t) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        const double v = (double)(s >> 11) * 0x1.0p-53 + 0.3 * lab;
        if (wide) ((double *)effml_tensor_data(x))[i * d + t] = v;
        else ((float *)effml_tensor_data(x))[i * d + t] = (float)v;
      }
    }
    for (size_t mi = 0; mi < sizeof methods / sizeof methods[0]; ++mi) {
      effml_sampler_resample_options o;
      effml_sampler_resample_options_init(&o);
      o.method = methods[mi];
      o.seed = 5;
      effml_tensor *x0 = NULL, *y0 = NULL, *x1 = NULL, *y1 = NULL, *b = NULL, *nb = NULL, *st = NULL;
      ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &x0, &y0), EFFML_OK);
      ck_assert_int_eq(effml_sampler_resample_plan(ctx, &o, x, y, &b, &nb, &st), EFFML_OK);
      ck_assert_int_eq(effml_sampler_resample_apply(ctx, x, y, b, nb, st, &x1, &y1), EFFML_OK);
      ck_assert_int_gt(effml_tensor_dim(x0, 0), 65536 + n / 4);
      ck_assert_int_eq(effml_tensor_dim(x0, 0), effml_tensor_dim(x1, 0));
      ck_assert_msg(memcmp(effml_tensor_data(x0), effml_tensor_data(x1), effml_tensor_nbytes(x0)) == 0,
                    "method %d wide %d: x differs", (int)methods[mi], wide);
      ck_assert_int_eq(memcmp(effml_tensor_data(y0), effml_tensor_data(y1), effml_tensor_nbytes(y0)), 0);
      /* the originals first, unchanged */
      ck_assert_int_eq(memcmp(effml_tensor_data(x0), effml_tensor_data(x), effml_tensor_nbytes(x)), 0);
      ck_assert_int_eq(memcmp(effml_tensor_data(y0), effml_tensor_data(y), effml_tensor_nbytes(y)), 0);
      effml_tensor_free(x0); effml_tensor_free(y0); effml_tensor_free(x1); effml_tensor_free(y1);
      effml_tensor_free(b); effml_tensor_free(nb); effml_tensor_free(st);
    }
    effml_tensor_free(x);
    effml_tensor_free(y);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(resample_apply_into_matches_apply) {
  effml_context *ctx = tu_ctx(1);
  effml_tensor *x, *y;
  imbalanced(ctx, &x, &y);
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  effml_tensor *b = NULL, *nb = NULL, *st = NULL, *x0 = NULL, *y0 = NULL;
  ck_assert_int_eq(effml_sampler_resample_plan(ctx, &o, x, y, &b, &nb, &st), EFFML_OK);
  ck_assert_int_eq(effml_sampler_resample_apply(ctx, x, y, b, nb, st, &x0, &y0), EFFML_OK);
  const int64_t m = effml_tensor_dim(b, 0);
  ck_assert_int_eq(m, 90); /* SMOTE to parity: 45 + 45 */
  effml_tensor *xb = make(ctx, EFFML_F32, 2, m, 5), *yb = make(ctx, EFFML_I64, 1, m, 0);
  ck_assert_int_eq(effml_sampler_resample_apply_into(ctx, x, y, b, nb, st, xb, yb), EFFML_OK);
  ck_assert_int_eq(memcmp(effml_tensor_data(x0), effml_tensor_data(xb), effml_tensor_nbytes(x0)), 0);
  ck_assert_int_eq(memcmp(effml_tensor_data(y0), effml_tensor_data(yb), effml_tensor_nbytes(y0)), 0);
  /* x_out in the wrong dtype or y_out of another length: refused, untouched */
  effml_tensor *xw = make(ctx, EFFML_F64, 2, m, 5), *yw = make(ctx, EFFML_I64, 1, m + 1, 0);
  poison(xw);
  poison(yw);
  ck_assert_int_eq(effml_sampler_resample_apply_into(ctx, x, y, b, nb, st, xw, yb), EFFML_E_DTYPE);
  ck_assert_int_eq(effml_sampler_resample_apply_into(ctx, x, y, b, nb, st, xb, yw), EFFML_E_SHAPE);
  ck_assert(all_poison(xw, 0) && all_poison(yw, 0));
  effml_tensor_free(b); effml_tensor_free(nb); effml_tensor_free(st); effml_tensor_free(x0);
  effml_tensor_free(y0); effml_tensor_free(xb); effml_tensor_free(yb); effml_tensor_free(xw);
  effml_tensor_free(yw); effml_tensor_free(x); effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

START_TEST(interleave_into_matches_interleave) {
  effml_context *ctx = tu_ctx(1);
  const int64_t lengths[3] = {5, 9, 2};
  const double probs[3] = {0.5, 0.3, 0.2};
  for (int strategy = EFFML_SAMPLER_STOP_FIRST_EXHAUSTED;
       strategy <= EFFML_SAMPLER_STOP_ALL_EXHAUSTED_WITHOUT_REPLACEMENT; ++strategy)
    for (int with_probs = 0; with_probs < 2; ++with_probs) {
      const double *p = with_probs ? probs : NULL;
      effml_tensor *s0 = NULL, *i0 = NULL;
      ck_assert_int_eq(effml_sampler_interleave(ctx, lengths, 3, p, strategy, 99, 1000, &s0, &i0),
                       EFFML_OK);
      const int64_t m = effml_tensor_dim(s0, 0);
      effml_tensor *s1 = make(ctx, EFFML_I64, 1, m + 4, 0), *i1 = make(ctx, EFFML_I64, 1, m + 4, 0);
      poison(s1);
      poison(i1);
      int64_t n_out = -1;
      ck_assert_int_eq(effml_sampler_interleave_into(ctx, lengths, 3, p, strategy, 99, s1, i1, &n_out),
                       EFFML_OK);
      ck_assert_int_eq(n_out, m);
      ck_assert_int_eq(memcmp(effml_tensor_data(s0), effml_tensor_data(s1), (size_t)m * 8), 0);
      ck_assert_int_eq(memcmp(effml_tensor_data(i0), effml_tensor_data(i1), (size_t)m * 8), 0);
      ck_assert(all_poison(s1, (size_t)m * 8) && all_poison(i1, (size_t)m * 8));
      /* one entry short: the same error as max_len = m - 1 */
      effml_tensor *s2 = make(ctx, EFFML_I64, 1, m - 1, 0), *i2 = make(ctx, EFFML_I64, 1, m - 1, 0);
      ck_assert_int_eq(effml_sampler_interleave_into(ctx, lengths, 3, p, strategy, 99, s2, i2, &n_out),
                       EFFML_E_RANGE);
      effml_tensor_free(s0); effml_tensor_free(i0); effml_tensor_free(s1); effml_tensor_free(i1);
      effml_tensor_free(s2); effml_tensor_free(i2);
    }
  /* round robin, first exhausted: min(len) = 2 rounds of 3 sources */
  effml_tensor *s = make(ctx, EFFML_I64, 1, 6, 0), *i = make(ctx, EFFML_I64, 1, 6, 0);
  int64_t n_out = 0;
  ck_assert_int_eq(effml_sampler_interleave_into(ctx, lengths, 3, NULL, EFFML_SAMPLER_STOP_FIRST_EXHAUSTED,
                                                 0, s, i, &n_out), EFFML_OK);
  ck_assert_int_eq(n_out, 6);
  const int64_t *sd = (const int64_t *)effml_tensor_data_const(s), *id = (const int64_t *)effml_tensor_data_const(i);
  for (int64_t r = 0; r < 6; ++r) {
    ck_assert_int_eq(sd[r], r % 3);
    ck_assert_int_eq(id[r], r / 3);
  }
  effml_tensor *bad = make(ctx, EFFML_I32, 1, 6, 0);
  ck_assert_int_eq(effml_sampler_interleave_into(ctx, lengths, 3, NULL, 0, 0, bad, i, &n_out), EFFML_E_DTYPE);
  effml_tensor_free(s); effml_tensor_free(i); effml_tensor_free(bad);
  effml_context_free(ctx);
}
END_TEST

START_TEST(leverage_into_matches_leverage) {
  effml_context *ctx = tu_ctx(1);
  effml_tensor *a = tu_f32(ctx, 200, 6, NULL);
  tu_fill_uniform(a, 21, -1, 1);
  effml_sampler_leverage_options o;
  effml_sampler_leverage_options_init(&o);
  effml_tensor *t0 = NULL;
  ck_assert_int_eq(effml_sampler_leverage_scores(ctx, &o, a, &t0), EFFML_OK);
  effml_tensor *t1 = make(ctx, EFFML_F64, 1, 200, 0);
  poison(t1);
  ck_assert_int_eq(effml_sampler_leverage_scores_into(ctx, &o, a, t1), EFFML_OK);
  ck_assert_int_eq(memcmp(effml_tensor_data(t0), effml_tensor_data(t1), effml_tensor_nbytes(t0)), 0);
  /* leverage scores of a full-rank n x d matrix sum to d */
  double sum = 0;
  for (int64_t r = 0; r < 200; ++r) sum += ((const double *)effml_tensor_data_const(t1))[r];
  ck_assert_double_eq_tol(sum, 6.0, 1e-9);
  effml_tensor *short_t = make(ctx, EFFML_F64, 1, 199, 0), *f32_t = make(ctx, EFFML_F32, 1, 200, 0);
  poison(short_t);
  poison(f32_t);
  ck_assert_int_eq(effml_sampler_leverage_scores_into(ctx, &o, a, short_t), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_sampler_leverage_scores_into(ctx, &o, a, f32_t), EFFML_E_DTYPE);
  ck_assert_int_eq(effml_sampler_leverage_scores_into(ctx, &o, a, NULL), EFFML_E_INVALID_ARG);
  ck_assert(all_poison(short_t, 0) && all_poison(f32_t, 0));
  effml_tensor_free(t0); effml_tensor_free(t1); effml_tensor_free(short_t); effml_tensor_free(f32_t);
  effml_tensor_free(a);
  effml_context_free(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sampler_into");
  TCase *tc = tcase_create("into");
  tcase_add_test(tc, knn_into_matches_knn);
  tcase_add_test(tc, knn_into_refuses_unusable_outputs);
  tcase_add_test(tc, resample_into_matches_resample);
  tcase_add_test(tc, resample_apply_into_matches_apply);
  tcase_add_test(tc, resample_matches_plan_apply_large);
  tcase_add_test(tc, interleave_into_matches_interleave);
  tcase_add_test(tc, leverage_into_matches_leverage);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
