/* Finite-difference gradient checks for every layer kind and the loss.
 *
 * For a layer f and a fixed random r, L(x, θ) = Σ r ⊙ f(x; θ) (accumulated
 * in f64).  backward(dy = r) must give dL/dx and dL/dθ; each is compared with
 * the central difference (L(v + h) - L(v - h)) / 2h, h = 1e-2 (f32 forward). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../lib/layer/layer_internal.h" /* effml__activation_apply/backward */
#include "testutil.h"

#define B 3

static double objective(effml_context *ctx, effml_layer *l, effml_tensor *x, effml_tensor *y,
                        const float *r) {
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
  const float *p = effml_tensor_data(y);
  double s = 0;
  for (int64_t i = 0; i < effml_tensor_numel(y); ++i) s += (double)p[i] * r[i];
  return s;
}

static void check_close(double analytic, double numeric, const char *what, int64_t i) {
  double tol = 2e-3 + 1e-2 * fabs(numeric);
  ck_assert_msg(fabs(analytic - numeric) <= tol, "%s[%lld]: analytic %.6g vs numeric %.6g", what,
                (long long)i, analytic, numeric);
}

/* Central-difference check of every entry of `v` (a float array inside x or a parameter). */
static void fd_check(effml_context *ctx, effml_layer *l, effml_tensor *x, effml_tensor *y,
                     const float *r, float *v, int64_t n, const float *analytic, const char *what) {
  const float h = 1e-2f;
  for (int64_t i = 0; i < n; ++i) {
    float keep = v[i];
    v[i] = keep + h;
    double lp = objective(ctx, l, x, y, r);
    v[i] = keep - h;
    double lm = objective(ctx, l, x, y, r);
    v[i] = keep;
    check_close(analytic[i], (lp - lm) / (2.0 * h), what, i);
  }
}

/* Full check of a layer on a [B, in] input filled in [lo, hi). */
static void check_layer(effml_context *ctx, effml_layer *l, int64_t in, int64_t out, float lo,
                        float hi, uint64_t seed) {
  effml_tensor *x = tu_f32(ctx, B, in, NULL), *y = tu_f32(ctx, B, out, NULL);
  effml_tensor *r = tu_f32(ctx, B, out, NULL), *dx = tu_f32(ctx, B, in, NULL);
  tu_fill_uniform(x, seed, lo, hi);
  tu_fill_uniform(r, seed + 1, -1, 1);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  effml_layer_zero_grad(l);
  ck_assert_int_eq(effml_layer_backward(ctx, l, r, dx), EFFML_OK);
  const float *rp = effml_tensor_data(r);
  fd_check(ctx, l, x, y, rp, effml_tensor_data(x), B * in, effml_tensor_data(dx), "dx");
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
    fd_check(ctx, l, x, y, rp, effml_tensor_data(effml_layer_param(l, i)),
             effml_tensor_numel(effml_layer_param(l, i)),
             effml_tensor_data(effml_layer_param_grad(l, i)), effml_layer_param_name(l, i));
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(r); effml_tensor_free(dx);
}

START_TEST(test_dense_gradients) {
  effml_context *ctx = tu_ctx(1);
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 4, 3, 1, &l), EFFML_OK);
  check_layer(ctx, l, 4, 3, -1, 1, 10);
  effml_layer_free(l);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 5, 2, 0, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_num_params(l), 1);
  check_layer(ctx, l, 5, 2, -1, 1, 11);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_activation_gradients) {
  effml_context *ctx = tu_ctx(2);
  for (int32_t a = EFFML_LAYER_ACT_IDENTITY; a <= EFFML_LAYER_ACT_TANH; ++a) {
    effml_layer *l = NULL;
    ck_assert_int_eq(effml_layer_activation_create(ctx, a, &l), EFFML_OK);
    /* ReLU: keep inputs away from the kink at 0 (h = 1e-2). */
    if (a == EFFML_LAYER_ACT_RELU) {
      check_layer(ctx, l, 6, 6, 0.1f, 2.0f, 20);
      check_layer(ctx, l, 6, 6, -2.0f, -0.1f, 21);
    } else {
      check_layer(ctx, l, 6, 6, -3.0f, 3.0f, 22 + (uint64_t)a);
    }
    effml_layer_free(l);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_layernorm_gradients) {
  effml_context *ctx = tu_ctx(3);
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_layer_layernorm_create(ctx, 5, 1e-5, &l), EFFML_OK);
  tu_fill_uniform(effml_layer_param(l, 0), 30, 0.5f, 1.5f);
  tu_fill_uniform(effml_layer_param(l, 1), 31, -1.0f, 1.0f);
  check_layer(ctx, l, 5, 5, -2.0f, 3.0f, 32);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_sequential_gradients) {
  /* dense -> layernorm -> gelu_tanh -> dense -> silu -> dense: chain rule through the container */
  effml_context *ctx = tu_ctx(4);
  effml_layer *m = NULL, *l = NULL;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &m), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 4, 5, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_layernorm_create(ctx, 5, 1e-5, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_GELU_TANH, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 5, 4, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_SILU, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 4, 3, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_num_params(m), 8);
  check_layer(ctx, m, 4, 3, -1.0f, 1.0f, 40);
  effml_layer_free(m);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_cross_entropy_gradient) {
  effml_context *ctx = tu_ctx(5);
  effml_tensor *z = tu_f32(ctx, 4, 5, NULL), *dz = tu_f32(ctx, 4, 5, NULL);
  tu_fill_uniform(z, 50, -4, 4);
  int32_t labs[4] = {0, 4, 2, 2};
  int64_t n = 4;
  effml_tensor *lab = NULL;
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_I32, 1, &n, NULL, labs, sizeof labs, 1, &lab), EFFML_OK);
  double loss = 0;
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, lab, &loss, dz), EFFML_OK);
  float *zp = effml_tensor_data(z);
  const float *g = effml_tensor_data(dz);
  const float h = 1e-2f;
  for (int i = 0; i < 20; ++i) {
    float keep = zp[i];
    double lp, lm;
    zp[i] = keep + h;
    ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, lab, &lp, NULL), EFFML_OK);
    zp[i] = keep - h;
    ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, lab, &lm, NULL), EFFML_OK);
    zp[i] = keep;
    ck_assert_msg(fabs((lp - lm) / (2 * h) - g[i]) < 1e-4, "dlogits[%d]: %g vs %g", i, g[i], (lp - lm) / (2 * h));
  }
  /* rows of dlogits sum to zero; huge logits stay finite (log-sum-exp) */
  for (int r = 0; r < 4; ++r) {
    double s = 0;
    for (int j = 0; j < 5; ++j) s += g[r * 5 + j];
    ck_assert_double_eq_tol(s, 0.0, 1e-7);
  }
  for (int i = 0; i < 20; ++i) zp[i] = zp[i] * 1e4f;
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, lab, &loss, dz), EFFML_OK);
  ck_assert(isfinite(loss));
  effml_tensor_free(z); effml_tensor_free(dz); effml_tensor_free(lab);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_dropout_mask_identities) {
  effml_context *ctx = tu_ctx(6);
  effml_layer *l = NULL, *l2 = NULL;
  const double p = 0.25;
  ck_assert_int_eq(effml_layer_dropout_create(ctx, p, 99, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_dropout_create(ctx, p, 99, &l2), EFFML_OK);
  const int64_t rows = 64, cols = 64, n = rows * cols;
  effml_tensor *x = tu_f32(ctx, rows, cols, NULL), *y = tu_f32(ctx, rows, cols, NULL);
  effml_tensor *y2 = tu_f32(ctx, rows, cols, NULL), *dy = tu_f32(ctx, rows, cols, NULL);
  effml_tensor *dx = tu_f32(ctx, rows, cols, NULL);
  tu_fill_uniform(x, 60, 0.5f, 1.5f);
  tu_fill_uniform(dy, 61, -1, 1);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(effml_layer_forward(ctx, l2, x, y2, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(memcmp(effml_tensor_data(y), effml_tensor_data(y2), (size_t)n * 4), 0); /* same seed, same mask */
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
  const float *xp = effml_tensor_data(x), *yp = effml_tensor_data(y), *dyp = effml_tensor_data(dy),
              *dxp = effml_tensor_data(dx);
  int64_t dropped = 0, wrong = 0;
  const float scale = (float)(1 / (1 - p));
  for (int64_t i = 0; i < n; ++i) {
    if (yp[i] == 0.0f) {
      ++dropped;
      wrong += dxp[i] != 0.0f;
    } else {
      wrong += yp[i] != xp[i] * scale || dxp[i] != dyp[i] * scale;
    }
  }
  ck_assert_int_eq(wrong, 0);
  /* Binomial(4096, 0.25): mean 1024, sd 27.7 */
  ck_assert_msg(dropped > 1024 - 150 && dropped < 1024 + 150, "dropped %lld", (long long)dropped);
  /* the next train forward draws a new mask; infer mode is the identity */
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y2, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_ne(memcmp(effml_tensor_data(y), effml_tensor_data(y2), (size_t)n * 4), 0);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert_int_eq(memcmp(effml_tensor_data(y), xp, (size_t)n * 4), 0);
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(y2); effml_tensor_free(dy);
  effml_tensor_free(dx);
  effml_layer_free(l); effml_layer_free(l2);
  effml_context_free(ctx);
}
END_TEST

/* Dropout's mask is redrawn each forward; a fresh layer with the same seed
 * draws the same first mask, so L(x) = Σ r ⊙ dropout(x) is a fixed function. */
static double dropout_objective(effml_context *ctx, effml_tensor *x, effml_tensor *y, const float *r) {
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_layer_dropout_create(ctx, 0.3, 1234, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  effml_layer_free(l);
  const float *p = effml_tensor_data(y);
  double s = 0;
  for (int64_t i = 0; i < effml_tensor_numel(y); ++i) s += (double)p[i] * r[i];
  return s;
}

START_TEST(test_dropout_gradient) {
  effml_context *ctx = tu_ctx(9);
  effml_tensor *x = tu_f32(ctx, B, 8, NULL), *y = tu_f32(ctx, B, 8, NULL);
  effml_tensor *r = tu_f32(ctx, B, 8, NULL), *dx = tu_f32(ctx, B, 8, NULL);
  tu_fill_uniform(x, 90, -1, 1);
  tu_fill_uniform(r, 91, -1, 1);
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_layer_dropout_create(ctx, 0.3, 1234, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, l, r, dx), EFFML_OK);
  effml_layer_free(l);
  float *xp = effml_tensor_data(x);
  const float *g = effml_tensor_data(dx), *rp = effml_tensor_data(r);
  const float h = 1e-2f;
  for (int64_t i = 0; i < B * 8; ++i) {
    float keep = xp[i];
    xp[i] = keep + h;
    double lp = dropout_objective(ctx, x, y, rp);
    xp[i] = keep - h;
    double lm = dropout_objective(ctx, x, y, rp);
    xp[i] = keep;
    check_close(g[i], (lp - lm) / (2.0 * h), "dropout dx", i);
  }
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(r); effml_tensor_free(dx);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_frozen_dense_skips_gradients) {
  effml_context *ctx = tu_ctx(7);
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 3, 2, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_set_trainable(ctx, l, "weight", 0), EFFML_OK);
  effml_tensor *x = tu_f32(ctx, 2, 3, NULL), *y = tu_f32(ctx, 2, 2, NULL), *dy = tu_f32(ctx, 2, 2, NULL);
  tu_fill_uniform(x, 70, -1, 1);
  tu_fill_uniform(dy, 71, -1, 1);
  effml_layer_zero_grad(l);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, NULL), EFFML_OK);
  const float *gw = effml_tensor_data(effml_layer_param_grad(l, 0));
  for (int i = 0; i < 6; ++i) ck_assert(gw[i] == 0.0f);
  const float *gb = effml_tensor_data(effml_layer_param_grad(l, 1)), *d = effml_tensor_data(dy);
  ck_assert_float_eq_tol(gb[0], d[0] + d[2], 1e-6);
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(dy);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

/* Large tensors are split over the context's threads: same bits for any count. */
START_TEST(test_activation_threads_bit_identical) {
  effml_context *c1 = tu_ctx(8), *c2 = tu_ctx(8);
  ck_assert_int_eq(effml_context_set_num_threads(c2, 3), EFFML_OK);
  const int64_t rows = 600, cols = 512;
  effml_tensor *x = tu_f32(c1, rows, cols, NULL), *dy = tu_f32(c1, rows, cols, NULL);
  effml_tensor *a = tu_f32(c1, rows, cols, NULL), *b = tu_f32(c1, rows, cols, NULL);
  tu_fill_uniform(x, 80, -4, 4);
  tu_fill_uniform(dy, 81, -1, 1);
  const size_t bytes = (size_t)(rows * cols) * sizeof(float);
  for (int32_t act = EFFML_LAYER_ACT_IDENTITY; act <= EFFML_LAYER_ACT_TANH; ++act) {
    ck_assert_int_eq(effml__activation_apply(c1, act, x, a), EFFML_OK);
    ck_assert_int_eq(effml__activation_apply(c2, act, x, b), EFFML_OK);
    ck_assert_int_eq(memcmp(effml_tensor_data(a), effml_tensor_data(b), bytes), 0);
    ck_assert_int_eq(effml__activation_backward(c1, act, x, dy, a), EFFML_OK);
    ck_assert_int_eq(effml__activation_backward(c2, act, x, dy, b), EFFML_OK);
    ck_assert_int_eq(memcmp(effml_tensor_data(a), effml_tensor_data(b), bytes), 0);
  }
  effml_tensor_free(x); effml_tensor_free(dy); effml_tensor_free(a); effml_tensor_free(b);
  effml_context_free(c1);
  effml_context_free(c2);
}
END_TEST

int main(void) {
  Suite *s = suite_create("layer_grad");
  TCase *tc = tcase_create("finite_differences");
  tcase_add_test(tc, test_dense_gradients);
  tcase_add_test(tc, test_activation_gradients);
  tcase_add_test(tc, test_layernorm_gradients);
  tcase_add_test(tc, test_sequential_gradients);
  tcase_add_test(tc, test_cross_entropy_gradient);
  tcase_add_test(tc, test_dropout_mask_identities);
  tcase_add_test(tc, test_dropout_gradient);
  tcase_add_test(tc, test_frozen_dense_skips_gradients);
  tcase_add_test(tc, test_activation_threads_bit_identical);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
