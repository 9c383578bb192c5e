/* Calibrators (temperature, vector, correctness-aware) and calibration
 * metrics (ECE, reliability bins, Brier) against numpy / scipy / torch
 * reference values (tests/ref/calibration_ref.py -> calibration_ref.txt),
 * finite differences and exact identities. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define REF EFFML_TEST_REF "/calibration_ref.txt"

static effml_context *ctx;
static void setup(void) { ctx = tu_ctx(5); }
static void teardown(void) { effml_context_free(ctx); }

static double *ref(const char *name, int64_t *n) {
  FILE *f = fopen(REF, "r");
  ck_assert_msg(f != NULL, "cannot open %s", REF);
  char key[128];
  long long cnt;
  double *out = NULL;
  while (fscanf(f, "%127s %lld", key, &cnt) == 2) {
    double *v = malloc((size_t)cnt * sizeof(double));
    for (long long i = 0; i < cnt; ++i) ck_assert_int_eq(fscanf(f, "%lf", &v[i]), 1);
    if (!strcmp(key, name)) {
      out = v;
      if (n) *n = cnt;
      break;
    }
    free(v);
  }
  fclose(f);
  ck_assert_msg(out != NULL, "reference %s missing", name);
  return out;
}

enum { N = 400, K = 5, V = 3, TOPK = 4, F = V * TOPK, H = 5 };

static effml_tensor *mat(const char *name, int64_t rows, int64_t cols, int32_t dtype) {
  double *v = ref(name, NULL);
  effml_tensor *t = NULL;
  int64_t shape[2] = {rows, cols};
  ck_assert_int_eq(effml_tensor_create(ctx, dtype, cols ? 2 : 1, shape, &t), EFFML_OK);
  const int64_t cnt = rows * (cols ? cols : 1);
  for (int64_t i = 0; i < cnt; ++i) {
    if (dtype == EFFML_F32) ((float *)effml_tensor_data(t))[i] = (float)v[i];
    else if (dtype == EFFML_F64) ((double *)effml_tensor_data(t))[i] = v[i];
    else if (dtype == EFFML_I64) ((int64_t *)effml_tensor_data(t))[i] = (int64_t)v[i];
    else ((int32_t *)effml_tensor_data(t))[i] = (int32_t)v[i];
  }
  free(v);
  return t;
}

static void softmax_rows(const effml_tensor *z, double *p) {
  for (int64_t i = 0; i < N; ++i) {
    double row[K], m = -INFINITY, s = 0;
    for (int k = 0; k < K; ++k) {
      row[k] = effml_tensor_dtype(z) == EFFML_F64 ? ((const double *)effml_tensor_data_const(z))[i * K + k]
                                                  : ((const float *)effml_tensor_data_const(z))[i * K + k];
      m = fmax(m, row[k]);
    }
    for (int k = 0; k < K; ++k) s += (p[i * K + k] = exp(row[k] - m));
    for (int k = 0; k < K; ++k) p[i * K + k] /= s;
  }
}

static effml_calibrator *make(int32_t method) {
  effml_calibration_options o;
  effml_calibration_options_init(&o);
  o.method = method;
  o.num_classes = K;
  effml_calibrator *c = NULL;
  ck_assert_msg(effml_calibration_create(ctx, &o, &c) == EFFML_OK, "%s", effml_context_last_error(ctx));
  return c;
}

START_TEST(test_temperature_scaling) {
  effml_tensor *z = mat("logits", N, K, EFFML_F32), *y = mat("labels", N, 0, EFFML_I32);
  effml_calibrator *c = make(EFFML_CALIBRATION_TEMPERATURE);
  ck_assert_int_eq(effml_calibration_num_params(c), 1);
  double nll0, T, nll, g;
  ck_assert_int_eq(effml_calibration_loss(ctx, c, z, NULL, y, &nll0, NULL), EFFML_OK);
  double *r = ref("nll_raw", NULL), *rt = ref("ts_T", NULL), *rn = ref("ts_nll", NULL);
  ck_assert_double_eq_tol(nll0, r[0], 1e-12);
  ck_assert_int_eq(effml_calibration_fit(ctx, c, z, NULL, y), EFFML_OK);
  ck_assert_int_eq(effml_calibration_get_params(ctx, c, &T), EFFML_OK);
  ck_assert_msg(fabs(T - rt[0]) <= 1e-9 * rt[0], "T %.15g vs scipy %.15g", T, rt[0]);
  ck_assert_int_eq(effml_calibration_loss(ctx, c, z, NULL, y, &nll, &g), EFFML_OK);
  ck_assert_double_eq_tol(nll, rn[0], 1e-12);
  ck_assert_double_le(fabs(g), 1e-9);
  /* finite differences of dNLL/dT away from the optimum */
  double t2 = 2.0, lp, lm, l2, g2;
  ck_assert_int_eq(effml_calibration_set_params(ctx, c, &t2), EFFML_OK);
  effml_calibration_loss(ctx, c, z, NULL, y, &l2, &g2);
  t2 = 2.0 + 1e-5; effml_calibration_set_params(ctx, c, &t2);
  effml_calibration_loss(ctx, c, z, NULL, y, &lp, NULL);
  t2 = 2.0 - 1e-5; effml_calibration_set_params(ctx, c, &t2);
  effml_calibration_loss(ctx, c, z, NULL, y, &lm, NULL);
  ck_assert_double_eq_tol((lp - lm) / 2e-5, g2, 1e-7);
  /* apply: z / T; in place works; prediction unchanged */
  ck_assert_int_eq(effml_calibration_set_params(ctx, c, &T), EFFML_OK);
  effml_tensor *out = tu_f32(ctx, N, K, NULL);
  ck_assert_int_eq(effml_calibration_apply(ctx, c, z, NULL, out), EFFML_OK);
  const float *zp = effml_tensor_data(z), *op = effml_tensor_data(out);
  for (int i = 0; i < N * K; ++i) ck_assert_float_eq_tol(op[i], (float)(zp[i] / T), 1e-6);
  /* bad parameter values are refused */
  double bad = -1.0;
  ck_assert_int_eq(effml_calibration_set_params(ctx, c, &bad), EFFML_E_INVALID_ARG);
  effml_calibration_get_params(ctx, c, &t2);
  ck_assert_double_eq(t2, T);
  free(r); free(rt); free(rn);
  effml_tensor_free(out);
  effml_calibration_free(c);
  effml_tensor_free(z); effml_tensor_free(y);
}
END_TEST

START_TEST(test_vector_scaling) {
  effml_tensor *z = mat("logits", N, K, EFFML_F64), *y = mat("labels", N, 0, EFFML_I64);
  effml_calibrator *c = make(EFFML_CALIBRATION_VECTOR);
  ck_assert_int_eq(effml_calibration_num_params(c), 2 * K);
  ck_assert_int_eq(effml_calibration_fit(ctx, c, z, NULL, y), EFFML_OK);
  double nll, g[2 * K], ab[2 * K];
  double *rn = ref("vs_nll", NULL), *rp = ref("vs_params", NULL), *rprob = ref("vs_probs", NULL);
  ck_assert_int_eq(effml_calibration_loss(ctx, c, z, NULL, y, &nll, g), EFFML_OK);
  ck_assert_msg(fabs(nll - rn[0]) <= 1e-9, "NLL %.15g vs scipy %.15g", nll, rn[0]);
  for (int j = 0; j < 2 * K; ++j) ck_assert_double_le(fabs(g[j]), 1e-9);
  effml_calibration_get_params(ctx, c, ab);
  for (int j = 0; j < 2 * K; ++j) ck_assert_msg(fabs(ab[j] - rp[j]) <= 1e-5, "param %d: %.10g vs %.10g", j, ab[j], rp[j]);
  effml_tensor *out = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, (int64_t[]){N, K}, &out), EFFML_OK);
  ck_assert_int_eq(effml_calibration_apply(ctx, c, z, NULL, out), EFFML_OK);
  double *p = malloc(N * K * sizeof(double));
  softmax_rows(out, p);
  for (int i = 0; i < N * K; ++i) ck_assert_double_eq_tol(p[i], rprob[i], 1e-7);
  /* gradient by finite differences at a point away from the optimum */
  double probe[2 * K], gp[2 * K];
  for (int j = 0; j < 2 * K; ++j) probe[j] = ab[j] + 0.1 * (j % 3 - 1);
  effml_calibration_set_params(ctx, c, probe);
  effml_calibration_loss(ctx, c, z, NULL, y, &nll, gp);
  for (int j = 0; j < 2 * K; ++j) {
    double lp, lm, keep = probe[j];
    probe[j] = keep + 1e-6; effml_calibration_set_params(ctx, c, probe);
    effml_calibration_loss(ctx, c, z, NULL, y, &lp, NULL);
    probe[j] = keep - 1e-6; effml_calibration_set_params(ctx, c, probe);
    effml_calibration_loss(ctx, c, z, NULL, y, &lm, NULL);
    probe[j] = keep;
    ck_assert_double_eq_tol((lp - lm) / 2e-6, gp[j], 1e-7);
  }
  free(p); free(rn); free(rp); free(rprob);
  effml_tensor_free(out);
  effml_calibration_free(c);
  effml_tensor_free(z); effml_tensor_free(y);
}
END_TEST

static void check_ece(const char *conf_name, const char *tag) {
  effml_tensor *c = mat(conf_name, N, 0, EFFML_F64), *ok = mat("correct", N, 0, EFFML_I32);
  for (int B = 10; B <= 15; B += 5)
    for (int kind = 0; kind < 2; ++kind)
      for (int norm = 1; norm <= 2; ++norm) {
        char key[64];
        snprintf(key, sizeof key, "ece_%sB%d_k%d_n%d", tag, B, kind, norm);
        double *r = ref(key, NULL), e = NAN;
        ck_assert_msg(effml_calibration_ece(ctx, c, ok, B, kind, norm, &e) == EFFML_OK, "%s",
                      effml_context_last_error(ctx));
        ck_assert_msg(fabs(e - r[0]) <= 1e-12, "%s: %.15g vs %.15g", key, e, r[0]);
        free(r);
      }
  /* reliability bins (adaptive, 10) */
  int64_t cnt[10];
  double mc[10], acc[10], up[10];
  ck_assert_int_eq(effml_calibration_reliability(ctx, c, ok, 10, EFFML_CALIBRATION_BINS_ADAPTIVE,
                                                 cnt, mc, acc, up),
                   EFFML_OK);
  const char *parts[4] = {"count", "conf", "acc", "upper"};
  for (int q = 0; q < 4; ++q) {
    char key[64];
    snprintf(key, sizeof key, "rel_%s%s", tag, parts[q]);
    double *r = ref(key, NULL);
    for (int b = 0; b < 10; ++b) {
      const double got = q == 0 ? (double)cnt[b] : q == 1 ? mc[b] : q == 2 ? acc[b] : up[b];
      ck_assert_msg(fabs(got - r[b]) <= 1e-12, "%s[%d]: %.15g vs %.15g", key, b, got, r[b]);
    }
    free(r);
  }
  /* order does not matter: reverse the pairs, results bit-identical */
  effml_tensor *c2 = mat(conf_name, N, 0, EFFML_F64), *ok2 = mat("correct", N, 0, EFFML_I32);
  double *cp = effml_tensor_data(c2);
  int32_t *okp = effml_tensor_data(ok2);
  for (int i = 0; i < N / 2; ++i) {
    double t = cp[i]; cp[i] = cp[N - 1 - i]; cp[N - 1 - i] = t;
    int32_t u = okp[i]; okp[i] = okp[N - 1 - i]; okp[N - 1 - i] = u;
  }
  for (int kind = 0; kind < 2; ++kind) {
    double a, b;
    effml_calibration_ece(ctx, c, ok, 15, kind, 1, &a);
    effml_calibration_ece(ctx, c2, ok2, 15, kind, 1, &b);
    ck_assert_msg(a == b, "order changed ECE: %.17g vs %.17g", a, b);
  }
  effml_tensor_free(c2); effml_tensor_free(ok2);
  effml_tensor_free(c); effml_tensor_free(ok);
}

START_TEST(test_ece_and_reliability) {
  check_ece("conf", "");
  check_ece("conf_tied", "tied_");
}
END_TEST

START_TEST(test_metric_identities_and_errors) {
  /* a perfectly calibrated toy: conf 0.5 with half right -> ECE 0; all in one tie group */
  effml_tensor *c = NULL, *ok = NULL;
  int64_t n = 4;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, &n, &c), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_U8, 1, &n, &ok), EFFML_OK);
  effml_tensor_fill(ctx, c, 0.5);
  ((uint8_t *)effml_tensor_data(ok))[1] = 1;
  ((uint8_t *)effml_tensor_data(ok))[2] = 1;
  double e = -1;
  int64_t cnt[3];
  for (int kind = 0; kind < 2; ++kind) {
    ck_assert_int_eq(effml_calibration_ece(ctx, c, ok, 3, kind, 1, &e), EFFML_OK);
    ck_assert_double_eq(e, 0.0);
    /* a tie group never straddles bins */
    ck_assert_int_eq(effml_calibration_reliability(ctx, c, ok, 3, kind, cnt, NULL, NULL, NULL), EFFML_OK);
    ck_assert_int_eq(cnt[0] + cnt[1] + cnt[2], 4);
    ck_assert(cnt[0] == 4 || cnt[1] == 4 || cnt[2] == 4);
  }
  /* equal-width edges are right-closed: 0.5 is in (1/3, 2/3] for 3 bins, in (0, 0.5] for 2 */
  ck_assert_int_eq(effml_calibration_reliability(ctx, c, ok, 2, 0, cnt, NULL, NULL, NULL), EFFML_OK);
  ck_assert_int_eq(cnt[0], 4);
  e = 7;
  ck_assert_int_eq(effml_calibration_ece(ctx, c, ok, 0, 0, 1, &e), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_calibration_ece(ctx, c, ok, 10, 2, 1, &e), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_calibration_ece(ctx, c, ok, 10, 0, 3, &e), EFFML_E_INVALID_ARG);
  ((float *)effml_tensor_data(c))[2] = 1.5f;
  ck_assert_int_eq(effml_calibration_ece(ctx, c, ok, 10, 0, 1, &e), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "effml_calibration_ece: confidences[2]=1.5"));
  ((float *)effml_tensor_data(c))[2] = NAN;
  ck_assert_int_eq(effml_calibration_ece(ctx, c, ok, 10, 0, 1, &e), EFFML_E_NUMERIC);
  ck_assert_double_eq(e, 7);
  /* Brier */
  effml_tensor *z = mat("logits", N, K, EFFML_F32), *y = mat("labels", N, 0, EFFML_I32), *p = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, (int64_t[]){N, K}, &p), EFFML_OK);
  softmax_rows(z, effml_tensor_data(p));
  double b, *rb = ref("brier_raw", NULL), *rbt = ref("brier_ts", NULL), *rt = ref("ts_T", NULL);
  ck_assert_int_eq(effml_calibration_brier(ctx, p, y, &b), EFFML_OK);
  ck_assert_double_eq_tol(b, rb[0], 1e-12);
  effml_calibrator *ts = make(EFFML_CALIBRATION_TEMPERATURE);
  effml_calibration_set_params(ctx, ts, rt);
  effml_tensor *zc = tu_f32(ctx, N, K, NULL);
  effml_calibration_apply(ctx, ts, z, NULL, zc);
  softmax_rows(zc, effml_tensor_data(p));
  ck_assert_int_eq(effml_calibration_brier(ctx, p, y, &b), EFFML_OK);
  ck_assert_double_eq_tol(b, rbt[0], 1e-6); /* zc is f32 */
  ((int32_t *)effml_tensor_data(y))[3] = K;
  ck_assert_int_eq(effml_calibration_brier(ctx, p, y, &b), EFFML_E_RANGE);
  free(rb); free(rbt); free(rt);
  effml_calibration_free(ts);
  effml_tensor_free(zc); effml_tensor_free(z); effml_tensor_free(y); effml_tensor_free(p);
  effml_tensor_free(c); effml_tensor_free(ok);
}
END_TEST

/* AUGRC (metrics.h) on the same confidences: numpy reference, order invariance, closed forms. */
START_TEST(test_augrc) {
  const char *names[2] = {"conf", "conf_tied"}, *refs[2] = {"augrc", "augrc_tied"};
  for (int t = 0; t < 2; ++t) {
    effml_tensor *c = mat(names[t], N, 0, EFFML_F64), *ok = mat("correct", N, 0, EFFML_I32);
    double a = NAN, a2 = NAN, *r = ref(refs[t], NULL);
    ck_assert_msg(effml_metrics_selective_augrc(ctx, c, ok, &a) == EFFML_OK, "%s", effml_context_last_error(ctx));
    ck_assert_msg(fabs(a - r[0]) <= 1e-14, "%s: %.17g vs %.17g", refs[t], a, r[0]);
    /* reversed order: identical */
    double *cp = effml_tensor_data(c);
    int32_t *op = effml_tensor_data(ok);
    for (int i = 0; i < N / 2; ++i) {
      double x = cp[i]; cp[i] = cp[N - 1 - i]; cp[N - 1 - i] = x;
      int32_t u = op[i]; op[i] = op[N - 1 - i]; op[N - 1 - i] = u;
    }
    ck_assert_int_eq(effml_metrics_selective_augrc(ctx, c, ok, &a2), EFFML_OK);
    ck_assert(a == a2);
    free(r);
    effml_tensor_free(c); effml_tensor_free(ok);
  }
  /* closed forms: errors ranked last -> e (e + 1/n) / 2; one tie group -> e (one step to coverage 1) */
  effml_tensor *c = NULL, *ok = NULL;
  int64_t n = 10;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, &n, &c), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_BOOL, 1, &n, &ok), EFFML_OK);
  for (int i = 0; i < 10; ++i) {
    ((float *)effml_tensor_data(c))[i] = 1.0f - 0.05f * (float)i;
    ((uint8_t *)effml_tensor_data(ok))[i] = i < 7;
  }
  double a;
  ck_assert_int_eq(effml_metrics_selective_augrc(ctx, c, ok, &a), EFFML_OK);
  ck_assert_double_eq_tol(a, 0.3 * (0.3 + 0.1) / 2, 1e-15);
  effml_tensor_fill(ctx, c, 0.5);
  ck_assert_int_eq(effml_metrics_selective_augrc(ctx, c, ok, &a), EFFML_OK);
  ck_assert_double_eq_tol(a, 0.3, 1e-15);
  effml_tensor_free(c); effml_tensor_free(ok);
}
END_TEST

static void expect_err(effml_status got, effml_status want, const char *msg) {
  ck_assert_msg(got == want, "status %d, want %d (%s)", (int)got, (int)want,
                effml_context_last_error(ctx));
  ck_assert_msg(strstr(effml_context_last_error(ctx), msg), "message \"%s\" lacks \"%s\"",
                effml_context_last_error(ctx), msg);
}

/* Brier takes probabilities: every entry in [0, 1] and finite, every row summing to 1
 * within 1e-6 * K.  Before, p * 5 scored 4.75 and -p 1.75 with EFFML_OK. */
START_TEST(test_brier_refuses_non_probabilities) {
  const double good[3 * 2] = {0.9, 0.1, 0.2, 0.8, 0.5, 0.5};
  effml_tensor *p = NULL, *y = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, (int64_t[]){3, 2}, &p), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, (int64_t[]){3}, &y), EFFML_OK);
  double *pv = effml_tensor_data(p);
  int32_t *yv = effml_tensor_data(y);
  yv[0] = 0, yv[1] = 1, yv[2] = 0;
  memcpy(pv, good, sizeof good);
  double b = -1;
  ck_assert_int_eq(effml_calibration_brier(ctx, p, y, &b), EFFML_OK);
  /* (0.01 + 0.01) + (0.04 + 0.04) + (0.25 + 0.25) over 3 rows */
  ck_assert_double_eq_tol(b, 0.6 / 3.0, 1e-15);
  for (int i = 0; i < 6; ++i) pv[i] = 5 * good[i];
  b = 7;
  expect_err(effml_calibration_brier(ctx, p, y, &b), EFFML_E_INVALID_ARG,
             "effml_calibration_brier: probs[0, 0]=4.5 is outside [0, 1]");
  ck_assert_double_eq(b, 7); /* untouched */
  for (int i = 0; i < 6; ++i) pv[i] = -good[i];
  expect_err(effml_calibration_brier(ctx, p, y, &b), EFFML_E_INVALID_ARG,
             "effml_calibration_brier: probs[0, 0]=-0.9 is outside [0, 1]");
  memcpy(pv, good, sizeof good);
  pv[5] = 5; /* the element the message must name */
  expect_err(effml_calibration_brier(ctx, p, y, &b), EFFML_E_INVALID_ARG,
             "probs[2, 1]=5 is outside [0, 1]");
  pv[5] = NAN;
  expect_err(effml_calibration_brier(ctx, p, y, &b), EFFML_E_NUMERIC, "probs[2, 1]=nan is not finite");
  pv[5] = INFINITY;
  expect_err(effml_calibration_brier(ctx, p, y, &b), EFFML_E_NUMERIC, "probs[2, 1]=inf is not finite");
  /* in range but not a distribution: row 1 sums to 0.9 */
  memcpy(pv, good, sizeof good);
  pv[3] = 0.7;
  expect_err(effml_calibration_brier(ctx, p, y, &b), EFFML_E_INVALID_ARG,
             "effml_calibration_brier: row 1 of probs sums to 0.9, not 1 "
             "(tolerance 1e-6 * K = 2e-06)");
  /* within the tolerance 1e-6 * K = 2e-6: accepted; just outside: refused */
  pv[3] = 0.8 + 1.9e-6;
  ck_assert_int_eq(effml_calibration_brier(ctx, p, y, &b), EFFML_OK);
  const double d3 = 0.8 + 1.9e-6 - 1.0, b_ok = b;
  ck_assert_double_eq_tol(b, (0.02 + 0.04 + d3 * d3 + 0.5) / 3.0, 1e-15);
  pv[3] = 0.8 + 2.1e-6;
  expect_err(effml_calibration_brier(ctx, p, y, &b), EFFML_E_INVALID_ARG,
             "row 1 of probs sums to 1.0000021, not 1");
  ck_assert_double_eq(b, b_ok); /* untouched */
  effml_tensor_free(p); effml_tensor_free(y);
}
END_TEST

/* Correctness flags are 0 or 1; before, -1, 2, 3 counted as correct in ECE, the
 * reliability bins and AUGRC (a wrong answer with EFFML_OK). */
START_TEST(test_flags_refuse_non_binary) {
  effml_tensor *c = NULL, *ok = NULL, *ok64 = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, (int64_t[]){4}, &c), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, (int64_t[]){4}, &ok), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, (int64_t[]){4}, &ok64), EFFML_OK);
  double *cv = effml_tensor_data(c);
  int32_t *ov = effml_tensor_data(ok);
  int64_t *o64 = effml_tensor_data(ok64);
  const double conf[4] = {0.9, 0.8, 0.6, 0.3};
  memcpy(cv, conf, sizeof conf);
  for (int i = 0; i < 4; ++i) ov[i] = i % 2, o64[i] = i % 2;
  double e = -1, a = -1;
  int64_t cnt[2];
  ck_assert_int_eq(effml_calibration_ece(ctx, c, ok, 1, 0, 1, &e), EFFML_OK);
  ck_assert_double_eq_tol(e, fabs(0.5 - 2.6 / 4), 1e-15); /* one bin: |acc - conf| */
  ck_assert_int_eq(effml_metrics_selective_augrc(ctx, c, ok, &a), EFFML_OK);
  const int32_t bad[3] = {-1, 2, 3};
  for (int t = 0; t < 3; ++t) {
    ov[3] = bad[t];
    char msg[96];
    snprintf(msg, sizeof msg, "effml_calibration_ece: correct[3]=%d is not 0 or 1", (int)bad[t]);
    double e2 = 7, a2 = 7;
    expect_err(effml_calibration_ece(ctx, c, ok, 1, 0, 1, &e2), EFFML_E_INVALID_ARG, msg);
    ck_assert_double_eq(e2, 7);
    snprintf(msg, sizeof msg, "effml_calibration_reliability: correct[3]=%d is not 0 or 1",
             (int)bad[t]);
    cnt[0] = cnt[1] = 9;
    expect_err(effml_calibration_reliability(ctx, c, ok, 2, 0, cnt, NULL, NULL, NULL),
               EFFML_E_INVALID_ARG, msg);
    ck_assert_int_eq(cnt[0], 9);
    snprintf(msg, sizeof msg, "effml_metrics_selective_augrc: correct[3]=%d is not 0 or 1",
             (int)bad[t]);
    expect_err(effml_metrics_selective_augrc(ctx, c, ok, &a2), EFFML_E_INVALID_ARG, msg);
    ck_assert_double_eq(a2, 7);
    expect_err(effml_metrics_selective_aurc(ctx, c, ok, &a2), EFFML_E_INVALID_ARG,
               "correct[3]");
  }
  /* i64 beyond 32 bits is named with its full value */
  o64[1] = (int64_t)1 << 32;
  expect_err(effml_calibration_ece(ctx, c, ok64, 1, 0, 1, &e), EFFML_E_INVALID_ARG,
             "correct[1]=4294967296 is not 0 or 1");
  expect_err(effml_metrics_selective_augrc(ctx, c, ok64, &a), EFFML_E_INVALID_ARG,
             "correct[1]=4294967296 is not 0 or 1");
  /* u8 2 is refused too */
  effml_tensor *u8 = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_U8, 1, (int64_t[]){4}, &u8), EFFML_OK);
  uint8_t *uv = effml_tensor_data(u8);
  uv[0] = 1, uv[1] = 0, uv[2] = 2, uv[3] = 1;
  expect_err(effml_calibration_ece(ctx, c, u8, 1, 0, 1, &e), EFFML_E_INVALID_ARG,
             "correct[2]=2 is not 0 or 1");
  expect_err(effml_metrics_selective_augrc(ctx, c, u8, &a), EFFML_E_INVALID_ARG,
             "correct[2]=2 is not 0 or 1");
  effml_tensor_free(c); effml_tensor_free(ok); effml_tensor_free(ok64); effml_tensor_free(u8);
}
END_TEST

static effml_calibrator *make_ca(int balance) {
  effml_calibration_options o;
  effml_calibration_options_init(&o);
  o.method = EFFML_CALIBRATION_CORRECTNESS_AWARE;
  o.num_classes = K;
  o.num_features = F;
  o.hidden = H;
  o.balance = balance;
  /* 400 rows are one Adam step per epoch: more, larger steps than the defaults
   * (chosen for thousands of validation rows) so that the fit test below moves */
  o.lr = 1e-2;
  o.epochs = 200;
  effml_calibrator *c = NULL;
  ck_assert_int_eq(effml_calibration_create(ctx, &o, &c), EFFML_OK);
  return c;
}

/* Stage calibration in a cascade: a cascade over raw logits with TS (T = 2) on stage 0
 * and VS on stage 1 routes exactly as a cascade over the pre-scaled logits. */
static effml_status logits_cb(effml_context *c, void *stage_data, void *run_data, int32_t stage,
                              const int64_t *rows, int64_t n_rows, effml_tensor *out) {
  (void)run_data; (void)stage;
  const double *z = effml_tensor_data_const((const effml_tensor *)stage_data);
  float *o = effml_tensor_data(out);
  for (int64_t i = 0; i < n_rows; ++i)
    for (int k = 0; k < K; ++k) o[i * K + k] = (float)z[rows[i] * K + k];
  (void)c;
  return EFFML_OK;
}

START_TEST(test_cascade_stage_calibration) {
  effml_tensor *z0 = mat("logits", N, K, EFFML_F64), *z1 = mat("view0", N, K, EFFML_F64);
  effml_tensor *y = mat("labels", N, 0, EFFML_I32);
  /* f32-exact copies so the callback stage (f32 buffer) sees the same values */
  for (int i = 0; i < N * K; ++i) {
    ((double *)effml_tensor_data(z0))[i] = (float)((double *)effml_tensor_data(z0))[i];
    ((double *)effml_tensor_data(z1))[i] = (float)((double *)effml_tensor_data(z1))[i];
  }
  effml_calibrator *ts = make(EFFML_CALIBRATION_TEMPERATURE), *vs = make(EFFML_CALIBRATION_VECTOR);
  double two = 2.0, ab[2 * K];
  ck_assert_int_eq(effml_calibration_set_params(ctx, ts, &two), EFFML_OK);
  for (int k = 0; k < K; ++k) ab[k] = 0.5 + 0.25 * k, ab[K + k] = 0.1 * k - 0.2;
  ck_assert_int_eq(effml_calibration_set_params(ctx, vs, ab), EFFML_OK);
  effml_tensor *s0 = mat("logits", N, K, EFFML_F64), *s1 = mat("view0", N, K, EFFML_F64);
  double *p0 = effml_tensor_data(s0), *p1 = effml_tensor_data(s1);
  const double *r0 = effml_tensor_data(z0), *r1 = effml_tensor_data(z1);
  for (int i = 0; i < N; ++i)
    for (int k = 0; k < K; ++k) {
      p0[i * K + k] = 0.5 * r0[i * K + k];
      p1[i * K + k] = ab[k] * r1[i * K + k] + ab[K + k];
    }
  effml_cascade_options co;
  effml_cascade_options_init(&co);
  co.num_classes = K;
  effml_cascade *cal_c, *ref_c;
  ck_assert_int_eq(effml_cascade_create(ctx, &co, &cal_c), EFFML_OK);
  ck_assert_int_eq(effml_cascade_create(ctx, &co, &ref_c), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, cal_c, logits_cb, z0, 1.0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, cal_c, z1, 2.0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, ref_c, s0, 1.0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, ref_c, s1, 2.0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_set_stage_calibration(ctx, cal_c, 0, ts), EFFML_OK);
  ck_assert_int_eq(effml_cascade_set_stage_calibration(ctx, cal_c, 1, vs), EFFML_OK);
  effml_cascade_threshold_options th;
  effml_cascade_threshold_options_init(&th);
  const effml_tensor *vcal[2] = {z0, z1}, *vref[2] = {s0, s1};
  ck_assert_int_eq(effml_cascade_select_thresholds(ctx, cal_c, 2, vcal, y, &th), EFFML_OK);
  ck_assert_int_eq(effml_cascade_select_thresholds(ctx, ref_c, 2, vref, y, &th), EFFML_OK);
  double a1, b1, a2, b2;
  int32_t rule;
  effml_cascade_get_exit_rule(ctx, cal_c, 0, &rule, &a1, &b1, NULL);
  effml_cascade_get_exit_rule(ctx, ref_c, 0, &rule, &a2, &b2, NULL);
  ck_assert(a1 == a2 && b1 == b2);
  effml_tensor *out[2][3];
  for (int c = 0; c < 2; ++c) {
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, (int64_t[]){N}, &out[c][0]), EFFML_OK);
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, (int64_t[]){N}, &out[c][1]), EFFML_OK);
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, (int64_t[]){N}, &out[c][2]), EFFML_OK);
    effml_cascade *cc = c ? ref_c : cal_c;
    effml_cascade_workspace *ws;
    ck_assert_int_eq(effml_cascade_workspace_create(ctx, cc, &ws), EFFML_OK);
    ck_assert_int_eq(effml_cascade_run(ctx, cc, ws, N, NULL, out[c][0], out[c][1], out[c][2], NULL), EFFML_OK);
    effml_cascade_workspace_free(ws);
  }
  ck_assert_int_eq(memcmp(effml_tensor_data(out[0][0]), effml_tensor_data(out[1][0]), N * sizeof(int32_t)), 0);
  ck_assert_int_eq(memcmp(effml_tensor_data(out[0][1]), effml_tensor_data(out[1][1]), N * sizeof(double)), 0);
  ck_assert_int_eq(memcmp(effml_tensor_data(out[0][2]), effml_tensor_data(out[1][2]), N * sizeof(int32_t)), 0);
  /* both stages were reached and exits happened at stage 0: the test routes */
  int exited0 = 0;
  for (int i = 0; i < N; ++i) exited0 += ((int32_t *)effml_tensor_data(out[0][2]))[i] == 0;
  ck_assert(exited0 > 0 && exited0 < N);
  /* removing the calibration changes the routing back */
  ck_assert_int_eq(effml_cascade_set_stage_calibration(ctx, cal_c, 0, NULL), EFFML_OK);
  /* a correctness-aware calibrator and bad stages are refused */
  effml_calibrator *ca = make_ca(1);
  ck_assert_int_eq(effml_cascade_set_stage_calibration(ctx, cal_c, 0, ca), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_cascade_set_stage_calibration(ctx, cal_c, 2, ts), EFFML_E_INVALID_ARG);
  effml_calibration_free(ca);
  /* a temperature calibrator fitted for another class count is refused by name, not applied */
  ck_assert_int_eq(effml_calibration_num_classes(ts), K);
  ck_assert_int_eq(effml_calibration_num_classes(NULL), 0);
  {
    effml_calibration_options o;
    effml_calibration_options_init(&o);
    o.method = EFFML_CALIBRATION_TEMPERATURE;
    o.num_classes = K + 1;
    effml_calibrator *other = NULL;
    ck_assert_int_eq(effml_calibration_create(ctx, &o, &other), EFFML_OK);
    ck_assert_int_eq(effml_calibration_num_classes(other), K + 1);
    ck_assert_int_eq(effml_cascade_set_stage_calibration(ctx, cal_c, 0, other), EFFML_E_SHAPE);
    char want[128];
    snprintf(want, sizeof want, "effml_cascade_set_stage_calibration: the calibrator was made for %d classes, the cascade has %d", K + 1, K);
    ck_assert_msg(strstr(effml_context_last_error(ctx), want), "%s", effml_context_last_error(ctx));
    effml_calibration_free(other);
  }
  for (int c = 0; c < 2; ++c)
    for (int q = 0; q < 3; ++q) effml_tensor_free(out[c][q]);
  effml_cascade_free(cal_c);
  effml_cascade_free(ref_c);
  effml_calibration_free(ts);
  effml_calibration_free(vs);
  effml_tensor_free(z0); effml_tensor_free(z1); effml_tensor_free(s0); effml_tensor_free(s1);
  effml_tensor_free(y);
}
END_TEST

START_TEST(test_correctness_aware) {
  effml_tensor *z = mat("logits", N, K, EFFML_F32), *y = mat("labels", N, 0, EFFML_I32);
  effml_tensor *views[V];
  for (int v = 0; v < V; ++v) {
    char key[16];
    snprintf(key, sizeof key, "view%d", v);
    views[v] = mat(key, N, K, EFFML_F32);
  }
  /* features */
  effml_tensor *f = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, (int64_t[]){N, F}, &f), EFFML_OK);
  ck_assert_int_eq(effml_calibration_ca_features(ctx, z, V, (const effml_tensor *const *)views, TOPK, f),
                   EFFML_OK);
  double *rf = ref("ca_features", NULL);
  for (int i = 0; i < N * F; ++i) ck_assert_double_eq_tol(((double *)effml_tensor_data(f))[i], rf[i], 1e-12);
  free(rf);
  ck_assert_int_eq(effml_calibration_ca_features(ctx, z, V, (const effml_tensor *const *)views, K + 1, f),
                   EFFML_E_INVALID_ARG);
  /* loss and gradient at fixed parameters against torch autograd, both weightings */
  double *theta = ref("ca_params", NULL);
  for (int bal = 1; bal >= 0; --bal) {
    effml_calibrator *c = make_ca(bal);
    ck_assert_int_eq(effml_calibration_num_params(c), H * F + 2 * H + 1);
    ck_assert_int_eq(effml_calibration_set_params(ctx, c, theta), EFFML_OK);
    double loss, g[H * F + 2 * H + 1];
    ck_assert_int_eq(effml_calibration_loss(ctx, c, z, f, y, &loss, g), EFFML_OK);
    char key[32];
    snprintf(key, sizeof key, "ca_loss_b%d", bal);
    double *rl = ref(key, NULL);
    snprintf(key, sizeof key, "ca_grad_b%d", bal);
    double *rg = ref(key, NULL);
    ck_assert_msg(fabs(loss - rl[0]) <= 1e-12, "loss %.15g vs torch %.15g", loss, rl[0]);
    for (int j = 0; j < H * F + 2 * H + 1; ++j)
      ck_assert_msg(fabs(g[j] - rg[j]) <= 1e-12, "grad[%d] %.15g vs torch %.15g", j, g[j], rg[j]);
    /* finite differences */
    double th[H * F + 2 * H + 1];
    memcpy(th, theta, sizeof th);
    for (int j = 0; j < H * F + 2 * H + 1; ++j) {
      double lp, lm, keep = th[j];
      th[j] = keep + 1e-6; effml_calibration_set_params(ctx, c, th);
      effml_calibration_loss(ctx, c, z, f, y, &lp, NULL);
      th[j] = keep - 1e-6; effml_calibration_set_params(ctx, c, th);
      effml_calibration_loss(ctx, c, z, f, y, &lm, NULL);
      th[j] = keep;
      ck_assert_msg(fabs((lp - lm) / 2e-6 - g[j]) <= 1e-7, "fd[%d] %.10g vs %.10g", j,
                    (lp - lm) / 2e-6, g[j]);
    }
    /* apply divides each row by its temperature (torch's T) */
    effml_calibration_set_params(ctx, c, theta);
    effml_tensor *out = NULL;
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, (int64_t[]){N, K}, &out), EFFML_OK);
    ck_assert_int_eq(effml_calibration_apply(ctx, c, z, f, out), EFFML_OK);
    snprintf(key, sizeof key, "ca_T_b%d", bal);
    double *rT = ref(key, NULL);
    for (int i = 0; i < N; ++i)
      for (int k = 0; k < K; ++k)
        ck_assert_double_eq_tol(((double *)effml_tensor_data(out))[i * K + k],
                                ((float *)effml_tensor_data(z))[i * K + k] / rT[i], 1e-9);
    free(rT); free(rl); free(rg);
    effml_tensor_free(out);
    effml_calibration_free(c);
  }
  free(theta);
  /* fitting lowers the objective, from the default start */
  effml_calibrator *c = make_ca(1);
  double before, after;
  effml_calibration_loss(ctx, c, z, f, y, &before, NULL);
  ck_assert_int_eq(effml_calibration_fit(ctx, c, z, f, y), EFFML_OK);
  effml_calibration_loss(ctx, c, z, f, y, &after, NULL);
  ck_assert_msg(after < 0.8 * before, "CA loss %g -> %g", before, after);
  /* wrong inputs */
  ck_assert_int_eq(effml_calibration_fit(ctx, c, z, NULL, y), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "effml_calibration_fit: the correctness-aware"));
  effml_calibrator *ts = make(EFFML_CALIBRATION_TEMPERATURE);
  ck_assert_int_eq(effml_calibration_fit(ctx, ts, z, f, y), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_calibration_fit(ctx, ts, f, NULL, y), EFFML_E_SHAPE);
  effml_calibration_free(ts);
  effml_calibration_free(c);
  effml_calibration_options o;
  effml_calibration_options_init(&o);
  effml_calibrator *bad = NULL;
  ck_assert_int_eq(effml_calibration_create(ctx, &o, &bad), EFFML_E_INVALID_ARG); /* num_classes */
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "num_classes"));
  o.num_classes = 3;
  o.method = EFFML_CALIBRATION_CORRECTNESS_AWARE;
  o.t_max = 0.05;
  ck_assert_int_eq(effml_calibration_create(ctx, &o, &bad), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(bad);
  for (int v = 0; v < V; ++v) effml_tensor_free(views[v]);
  effml_tensor_free(f); effml_tensor_free(z); effml_tensor_free(y);
}
END_TEST

int main(void) {
  Suite *s = suite_create("calibration");
  TCase *tc = tcase_create("calibration");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_temperature_scaling);
  tcase_add_test(tc, test_vector_scaling);
  tcase_add_test(tc, test_ece_and_reliability);
  tcase_add_test(tc, test_metric_identities_and_errors);
  tcase_add_test(tc, test_correctness_aware);
  tcase_add_test(tc, test_augrc);
  tcase_add_test(tc, test_brier_refuses_non_probabilities);
  tcase_add_test(tc, test_flags_refuse_non_binary);
  tcase_add_test(tc, test_cascade_stage_calibration);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
