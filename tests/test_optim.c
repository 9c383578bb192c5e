/* Optimizers, schedules, clipping, initialisers and bad input. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../lib/layer/layer_internal.h" /* effml__activation_apply/backward */
#include "testutil.h"

static effml_layer *mlp(effml_context *ctx) {
  effml_layer *m = NULL, *l = NULL;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &m), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 4, 3, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_TANH, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 3, 2, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  return m;
}

static void random_grads(effml_layer *m, uint64_t seed) {
  for (int32_t i = 0; i < effml_layer_num_params(m); ++i)
    tu_fill_uniform(effml_layer_param_grad(m, i), seed + (uint64_t)i, -1, 1);
}

static void frozen_untouched(int32_t algorithm) {
  effml_context *ctx = tu_ctx(1);
  effml_layer *m = mlp(ctx);
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  o.algorithm = algorithm;
  o.lr = 0.1;
  o.momentum = algorithm == EFFML_OPTIM_SGD ? 0.9 : 0;
  o.weight_decay = 0.5; /* would move a frozen weight even with a zero gradient */
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(ctx, &o, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(ctx, opt, m), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_num_params(opt), 4);
  /* freeze after registration: decided at step time */
  ck_assert_int_eq(effml_layer_set_trainable(ctx, m, "0.weight", 0), EFFML_OK);
  ck_assert_int_eq(effml_layer_set_trainable(ctx, m, "nope", 0), EFFML_E_NOT_FOUND);
  float before[4][12];
  for (int32_t i = 0; i < 4; ++i)
    memcpy(before[i], effml_tensor_data(effml_layer_param(m, i)), effml_tensor_nbytes(effml_layer_param(m, i)));
  for (int s = 0; s < 3; ++s) {
    random_grads(m, 100 + 10 * (uint64_t)s);
    ck_assert_int_eq(effml_optimizer_step(ctx, opt), EFFML_OK);
  }
  for (int32_t i = 0; i < 4; ++i) {
    const effml_tensor *p = effml_layer_param(m, i);
    int same = memcmp(before[i], effml_tensor_data_const(p), effml_tensor_nbytes(p)) == 0;
    ck_assert_msg(same == (i == 0), "param %s: changed=%d", effml_layer_param_name(m, i), !same);
  }
  /* unfreezing resumes updates */
  ck_assert_int_eq(effml_layer_set_trainable(ctx, m, "0.weight", 1), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_step(ctx, opt), EFFML_OK);
  ck_assert_int_ne(memcmp(before[0], effml_tensor_data(effml_layer_param(m, 0)), 48), 0);
  effml_optimizer_free(opt);
  effml_layer_free(m);
  effml_context_free(ctx);
}

START_TEST(test_frozen_bit_for_bit_adamw) { frozen_untouched(EFFML_OPTIM_ADAMW); }
END_TEST
START_TEST(test_frozen_bit_for_bit_sgd) { frozen_untouched(EFFML_OPTIM_SGD); }
END_TEST

START_TEST(test_schedules) {
  effml_context *ctx = tu_ctx(2);
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  o.lr = 0.4;
  o.schedule = EFFML_OPTIM_LR_WARMUP_LINEAR;
  o.warmup_steps = 4;
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(ctx, &o, &opt), EFFML_OK);
  const double lin[6] = {0.1, 0.2, 0.3, 0.4, 0.4, 0.4};
  for (int s = 0; s < 6; ++s) {
    ck_assert_double_eq_tol(effml_optimizer_lr(opt), lin[s], 1e-15);
    ck_assert_int_eq(effml_optimizer_step(ctx, opt), EFFML_OK); /* no params: only counts */
  }
  ck_assert_int_eq(effml_optimizer_steps(opt), 6);
  effml_optimizer_free(opt);

  o.schedule = EFFML_OPTIM_LR_WARMUP_COSINE;
  o.warmup_steps = 2;
  o.total_steps = 6;
  o.min_lr = 0.1;
  ck_assert_int_eq(effml_optimizer_create(ctx, &o, &opt), EFFML_OK);
  const double pi = acos(-1.0);
  for (int s = 0; s < 9; ++s) {
    double want = s < 2 ? 0.4 * (s + 1) / 2.0
                        : s >= 6 ? 0.1 : 0.1 + 0.3 * 0.5 * (1 + cos(pi * (s - 2) / 4.0));
    ck_assert_double_eq_tol(effml_optimizer_lr(opt), want, 1e-15);
    ck_assert_int_eq(effml_optimizer_step(ctx, opt), EFFML_OK);
  }
  effml_optimizer_free(opt);
  ck_assert_double_eq(effml_optimizer_lr(NULL), 0.0);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_reset_state_and_shared_params) {
  effml_context *ctx = tu_ctx(3);
  float w[4] = {1, 2, 3, 4}, g[4] = {0.5f, -0.5f, 0.25f, 1};
  int64_t n = 4;
  effml_tensor *tw = NULL, *tg = NULL;
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_F32, 1, &n, NULL, w, sizeof w, 0, &tw), EFFML_OK);
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_F32, 1, &n, NULL, g, sizeof g, 0, &tg), EFFML_OK);
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  o.lr = 0.1;
  o.weight_decay = 0.01;
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(ctx, &o, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_param(ctx, opt, "w", tw, tg), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_param(ctx, opt, "w again", tw, tg), EFFML_OK); /* shared: once */
  ck_assert_int_eq(effml_optimizer_num_params(opt), 1);
  ck_assert_int_eq(effml_optimizer_step(ctx, opt), EFFML_OK);
  /* zero the moments of elements 1 and 3, then step with a zero gradient:
   * those elements only decay, p *= (1 - lr*wd); the others keep moving */
  int64_t idx[2] = {1, 3};
  ck_assert_int_eq(effml_optimizer_reset_state(ctx, opt, tw, idx, 2), EFFML_OK);
  float prev[4];
  memcpy(prev, w, sizeof w);
  effml_optimizer_zero_grad(opt);
  for (int i = 0; i < 4; ++i) ck_assert(g[i] == 0.0f);
  ck_assert_int_eq(effml_optimizer_step(ctx, opt), EFFML_OK);
  const float decay = (float)(1.0 - 0.1 * 0.01);
  ck_assert(w[1] == prev[1] * decay);
  ck_assert(w[3] == prev[3] * decay);
  ck_assert(fabsf(w[0] - prev[0] * decay) > 1e-3f);
  /* errors */
  int64_t bad[2] = {0, 4};
  ck_assert_int_eq(effml_optimizer_reset_state(ctx, opt, tw, bad, 2), EFFML_E_RANGE);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "indices[1]=4"));
  ck_assert_int_eq(effml_optimizer_reset_state(ctx, opt, tg, idx, 2), EFFML_E_NOT_FOUND);
  ck_assert_int_eq(effml_optimizer_reset_state(ctx, opt, tw, NULL, 2), EFFML_E_INVALID_ARG);
  effml_optimizer_free(opt);
  effml_tensor_free(tw);
  effml_tensor_free(tg);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_clip_grad_norm) {
  effml_context *ctx = tu_ctx(4);
  float w[2] = {0, 0}, g[2] = {3, 4};
  int64_t n = 2;
  effml_tensor *tw = NULL, *tg = NULL;
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_F32, 1, &n, NULL, w, sizeof w, 0, &tw), EFFML_OK);
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_F32, 1, &n, NULL, g, sizeof g, 0, &tg), EFFML_OK);
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(ctx, &o, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_param(ctx, opt, "w", tw, tg), EFFML_OK);
  double total = 0;
  ck_assert_int_eq(effml_optimizer_clip_grad_norm(ctx, opt, 10.0, &total), EFFML_OK);
  ck_assert_double_eq(total, 5.0);
  ck_assert(g[0] == 3.0f && g[1] == 4.0f); /* under the limit: untouched */
  ck_assert_int_eq(effml_optimizer_clip_grad_norm(ctx, opt, 1.0, &total), EFFML_OK);
  ck_assert_double_eq(total, 5.0);
  ck_assert_float_eq_tol(g[0], 0.6f, 1e-6);
  ck_assert_float_eq_tol(g[1], 0.8f, 1e-6);
  ck_assert_int_eq(effml_optimizer_clip_grad_norm(ctx, opt, 0.0, &total), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_optimizer_clip_grad_norm(ctx, opt, NAN, &total), EFFML_E_INVALID_ARG);
  g[0] = NAN;
  const float g1 = g[1];
  ck_assert_int_eq(effml_optimizer_clip_grad_norm(ctx, opt, 1.0, &total), EFFML_E_NUMERIC);
  ck_assert(isnan(g[0]) && g[1] == g1);
  effml_optimizer_free(opt);
  effml_tensor_free(tw);
  effml_tensor_free(tg);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_optimizer_bad_options) {
  effml_context *ctx = tu_ctx(5);
  effml_optimizer *opt = NULL;
  effml_optimizer_options o;
#define EXPECT_BAD(field_set, needle)                                             \
  do {                                                                            \
    effml_optimizer_options_init(&o);                                             \
    field_set;                                                                    \
    ck_assert_int_eq(effml_optimizer_create(ctx, &o, &opt), EFFML_E_INVALID_ARG); \
    ck_assert_ptr_null(opt);                                                      \
    ck_assert_msg(strstr(effml_context_last_error(ctx), needle) != NULL, "%s",    \
                  effml_context_last_error(ctx));                                 \
  } while (0)
  EXPECT_BAD(o.lr = 0, "lr=0");
  EXPECT_BAD(o.lr = -1e-3, "lr=-0.001");
  EXPECT_BAD(o.lr = NAN, "lr=nan");
  EXPECT_BAD(o.algorithm = 7, "algorithm=7");
  EXPECT_BAD(o.beta1 = 1.0, "beta1=1");
  EXPECT_BAD(o.beta2 = -0.1, "beta2=-0.1");
  EXPECT_BAD(o.eps = -1, "eps=-1");
  EXPECT_BAD(o.weight_decay = -0.1, "weight_decay=-0.1");
  EXPECT_BAD((o.algorithm = EFFML_OPTIM_SGD, o.nesterov = 1), "nesterov");
  EXPECT_BAD((o.algorithm = EFFML_OPTIM_SGD, o.momentum = 1.0), "momentum=1");
  EXPECT_BAD((o.schedule = EFFML_OPTIM_LR_WARMUP_COSINE, o.warmup_steps = 10, o.total_steps = 10), "total_steps=10");
  EXPECT_BAD((o.schedule = EFFML_OPTIM_LR_WARMUP_COSINE, o.total_steps = 10, o.min_lr = 1), "min_lr=1");
  EXPECT_BAD(o.schedule = 9, "schedule=9");
  EXPECT_BAD(o.warmup_steps = -1, "warmup_steps=-1");
  EXPECT_BAD(o.struct_size = 4, "struct_size=4");
  ck_assert_int_eq(effml_optimizer_create(ctx, NULL, &opt), EFFML_E_INVALID_ARG);
  /* an older, shorter struct: fields past its size keep their defaults */
  effml_optimizer_options_init(&o);
  o.lr = 0.5;
  o.struct_size = (uint32_t)(offsetof(effml_optimizer_options, lr) + sizeof(double));
  o.beta1 = 5; /* beyond the prefix: ignored */
  ck_assert_int_eq(effml_optimizer_create(ctx, &o, &opt), EFFML_OK);
  ck_assert_double_eq(effml_optimizer_lr(opt), 0.5);
  /* add_param checks */
  effml_tensor *a = tu_f32(ctx, 2, 3, NULL), *b = tu_f32(ctx, 3, 3, NULL);
  ck_assert_int_eq(effml_optimizer_add_param(ctx, opt, "a", a, b), EFFML_E_SHAPE);
  int64_t s2[2] = {2, 3};
  effml_tensor *i32 = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 2, s2, &i32), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_param(ctx, opt, "a", a, i32), EFFML_E_DTYPE);
  ck_assert_int_eq(effml_optimizer_add_param(ctx, opt, "a", NULL, a), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_optimizer_num_params(opt), 0);
  effml_tensor_free(a); effml_tensor_free(b); effml_tensor_free(i32);
  effml_optimizer_free(opt);
  effml_optimizer_free(NULL);
  effml_optimizer_zero_grad(NULL);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_initialisers) {
  effml_context *ctx = tu_ctx(6);
  int64_t shape[2] = {200, 300};
  effml_tensor *t = NULL, *t2 = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, shape, &t), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, shape, &t2), EFFML_OK);
  const int64_t n = 60000;
  struct { int kind; double arg; double lo, hi, std; } cases[] = {
      {0, 2.0, -2.0 * sqrt(6.0 / 500), 2.0 * sqrt(6.0 / 500), 2.0 * sqrt(6.0 / 500) / sqrt(3.0)},
      {1, 1.5, -INFINITY, INFINITY, 1.5 * sqrt(2.0 / 500)},
      {2, 0.0, -INFINITY, INFINITY, sqrt(2.0) / sqrt(300.0)},
      {3, sqrt(5.0), -1 / sqrt(300.0), 1 / sqrt(300.0), 1 / sqrt(300.0) / sqrt(3.0)},
      {4, 0.0, -INFINITY, INFINITY, 0.02},
      {5, 0.0, -0.3, 0.3, 0.3 / sqrt(3.0)},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
    for (int rep = 0; rep < 2; ++rep) {
      effml_context_set_seed(ctx, 77);
      effml_tensor *dst = rep ? t2 : t;
      effml_status st = EFFML_OK;
      switch (cases[c].kind) {
        case 0: st = effml_tensor_init_xavier_uniform(ctx, dst, cases[c].arg); break;
        case 1: st = effml_tensor_init_xavier_normal(ctx, dst, cases[c].arg); break;
        case 2: st = effml_tensor_init_kaiming_normal(ctx, dst, cases[c].arg); break;
        case 3: st = effml_tensor_init_kaiming_uniform(ctx, dst, cases[c].arg); break;
        case 4: st = effml_tensor_init_normal(ctx, dst, 0.0, 0.02); break;
        case 5: st = effml_tensor_init_uniform(ctx, dst, -0.3, 0.3); break;
      }
      ck_assert_int_eq(st, EFFML_OK);
    }
    /* same seed, same values */
    ck_assert_int_eq(memcmp(effml_tensor_data(t), effml_tensor_data(t2), (size_t)n * 4), 0);
    const float *p = effml_tensor_data(t);
    double s = 0, ss = 0;
    int64_t outside = 0; /* one assertion, not one per element: Check logs each */
    for (int64_t i = 0; i < n; ++i) {
      outside += !(p[i] >= cases[c].lo && p[i] <= cases[c].hi);
      s += p[i];
      ss += (double)p[i] * p[i];
    }
    ck_assert_int_eq(outside, 0);
    double mean = s / n, sd = sqrt(ss / n - mean * mean);
    ck_assert_msg(fabs(mean) < 4 * cases[c].std / sqrt((double)n), "case %zu mean %g", c, mean);
    ck_assert_msg(fabs(sd / cases[c].std - 1) < 0.02, "case %zu sd %g want %g", c, sd, cases[c].std);
  }
  /* bad input leaves the tensor untouched */
  float keep = ((float *)effml_tensor_data(t))[0];
  int64_t one = 5;
  effml_tensor *v = NULL, *iv = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, &one, &v), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 2, shape, &iv), EFFML_OK);
  ck_assert_int_eq(effml_tensor_init_xavier_uniform(ctx, v, 1.0), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_tensor_init_kaiming_normal(ctx, iv, 0.0), EFFML_E_DTYPE);
  ck_assert_int_eq(effml_tensor_init_uniform(ctx, t, 1.0, -1.0), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_init_normal(ctx, t, 0.0, -1.0), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_init_xavier_normal(ctx, t, NAN), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_init_normal(ctx, NULL, 0.0, 1.0), EFFML_E_INVALID_ARG);
  ck_assert(((float *)effml_tensor_data(t))[0] == keep);
  ck_assert_int_eq(effml_tensor_init_normal(ctx, v, 1.0, 0.0), EFFML_OK); /* 1-D fine without fans */
  ck_assert(((float *)effml_tensor_data(v))[4] == 1.0f);
  effml_tensor_free(t); effml_tensor_free(t2); effml_tensor_free(v); effml_tensor_free(iv);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_bad_layer_and_loss_input) {
  effml_context *ctx = tu_ctx(7);
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 0, 3, 1, &l), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "in_features=0"));
  ck_assert_int_eq(effml_layer_dense_create(ctx, 3, -2, 1, &l), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_layer_activation_create(ctx, 99, &l), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "activation=99"));
  ck_assert_int_eq(effml_layer_dropout_create(ctx, 1.0, 0, &l), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_layer_dropout_create(ctx, -0.1, 0, &l), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_layer_dropout_create(ctx, NAN, 0, &l), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_layer_layernorm_create(ctx, 4, 0.0, &l), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_layer_layernorm_create(ctx, 0, 1e-5, &l), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(l);
  ck_assert_str_eq(effml_layer_activation_name(42), "unknown");

  /* shape mismatch in forward */
  ck_assert_int_eq(effml_layer_dense_create(ctx, 3, 2, 1, &l), EFFML_OK);
  effml_tensor *x = tu_f32(ctx, 4, 5, NULL), *y = tu_f32(ctx, 4, 2, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_E_SHAPE);
  effml_layer_free(l);
  effml_tensor *y5 = tu_f32(ctx, 4, 4, NULL);
  ck_assert_int_eq(effml__activation_apply(ctx, EFFML_LAYER_ACT_RELU, x, y5), EFFML_E_SHAPE);
  ck_assert_int_eq(effml__activation_apply(ctx, 17, x, x), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml__activation_backward(ctx, EFFML_LAYER_ACT_TANH, x, y5, x), EFFML_E_SHAPE);
  /* a view shifted by one element overlaps without being in place */
  effml_tensor *xa = NULL, *xa2 = NULL, *xb2 = NULL;
  ck_assert_int_eq(effml_tensor_reshape(ctx, x, 1, (int64_t[]){20}, &xa), EFFML_OK);
  ck_assert_int_eq(effml_tensor_slice(ctx, xa, 0, 0, 10, 1, &xa2), EFFML_OK);
  ck_assert_int_eq(effml_tensor_slice(ctx, xa, 0, 1, 11, 1, &xb2), EFFML_OK);
  ck_assert_int_eq(effml__activation_apply(ctx, EFFML_LAYER_ACT_SILU, xa2, xb2), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml__activation_apply(ctx, EFFML_LAYER_ACT_SILU, xa2, xa2), EFFML_OK);
  ck_assert_int_eq(effml__activation_backward(ctx, EFFML_LAYER_ACT_SILU, xa2, xa2, xb2), EFFML_E_INVALID_ARG);
  effml_tensor_free(xa); effml_tensor_free(xa2); effml_tensor_free(xb2);

  /* loss: labels out of range, NaN/inf logits, shapes, dtypes; outputs untouched */
  effml_tensor *z = tu_f32(ctx, 3, 4, NULL), *dz = tu_f32(ctx, 3, 4, NULL);
  tu_fill_uniform(z, 1, -1, 1);
  ck_assert_int_eq(effml_tensor_fill(ctx, dz, 7.0), EFFML_OK);
  int32_t lab[3] = {0, 4, 1};
  int64_t n3 = 3, n2 = 2;
  effml_tensor *tl = NULL, *tl2 = NULL, *tlf = NULL;
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_I32, 1, &n3, NULL, lab, sizeof lab, 0, &tl), EFFML_OK);
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_I32, 1, &n2, NULL, lab, sizeof lab, 0, &tl2), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, &n3, &tlf), EFFML_OK);
  double loss = 123.0, acc = 5.0;
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, tl, &loss, dz), EFFML_E_RANGE);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "labels[1]=4"));
  ck_assert_int_eq(effml_metrics_accuracy(ctx, z, tl, &acc), EFFML_E_RANGE);
  lab[1] = -1;
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, tl, &loss, dz), EFFML_E_RANGE);
  lab[1] = 3;
  ((float *)effml_tensor_data(z))[6] = NAN;
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, tl, &loss, dz), EFFML_E_NUMERIC);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "logits[1, 2]"));
  ((float *)effml_tensor_data(z))[6] = INFINITY;
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, tl, &loss, dz), EFFML_E_NUMERIC);
  ck_assert_int_eq(effml_metrics_accuracy(ctx, z, tl, &acc), EFFML_E_NUMERIC);
  ((float *)effml_tensor_data(z))[6] = 0.5f;
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, tl2, &loss, dz), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, tlf, &loss, dz), EFFML_E_DTYPE);
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, tl, &loss, y5), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, tl, NULL, dz), EFFML_E_INVALID_ARG);
  ck_assert_double_eq(loss, 123.0);
  ck_assert_double_eq(acc, 5.0);
  const float *d = effml_tensor_data(dz);
  for (int i = 0; i < 12; ++i) ck_assert(d[i] == 7.0f);
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, tl, &loss, dz), EFFML_OK);
  ck_assert(isfinite(loss));
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(y5); effml_tensor_free(z);
  effml_tensor_free(dz); effml_tensor_free(tl); effml_tensor_free(tl2); effml_tensor_free(tlf);
  effml_context_free(ctx);
}
END_TEST

/* Every allocation failure is reported as EFFML_E_NOMEM and leaks nothing. */
START_TEST(test_allocation_failures) {
  for (int64_t k = 1; k < 200; ++k) {
    tu_failing_alloc fa = {0, 0, 0};
    effml_context *ctx = tu_ctx_failing(&fa);
    int64_t live0 = fa.live;
    fa.fail_at = k;
    fa.count = 0;
    effml_layer *m = NULL, *l = NULL, *ln = NULL;
    effml_optimizer *opt = NULL;
    effml_optimizer_options o;
    effml_optimizer_options_init(&o);
    effml_status st = effml_layer_sequential_create(ctx, &m);
    if (st == EFFML_OK) st = effml_layer_dense_create(ctx, 4, 3, 1, &l);
    if (st == EFFML_OK) { st = effml_layer_sequential_add(ctx, m, l); if (st != EFFML_OK) effml_layer_free(l); }
    if (st == EFFML_OK) st = effml_layer_layernorm_create(ctx, 3, 1e-5, &ln);
    if (st == EFFML_OK) { st = effml_layer_sequential_add(ctx, m, ln); if (st != EFFML_OK) effml_layer_free(ln); }
    if (st == EFFML_OK) st = effml_optimizer_create(ctx, &o, &opt);
    if (st == EFFML_OK) st = effml_optimizer_add_layer(ctx, opt, m);
    effml_tensor *x = NULL, *y = NULL;
    int64_t xs[2] = {2, 4}, ys[2] = {2, 3};
    if (st == EFFML_OK) st = effml_tensor_create(ctx, EFFML_F32, 2, xs, &x);
    if (st == EFFML_OK) st = effml_tensor_create(ctx, EFFML_F32, 2, ys, &y);
    if (st == EFFML_OK) st = effml_layer_forward(ctx, m, x, y, EFFML_LAYER_MODE_TRAIN);
    if (st == EFFML_OK) st = effml_layer_backward(ctx, m, y, NULL);
    if (st == EFFML_OK) st = effml_optimizer_step(ctx, opt);
    ck_assert(st == EFFML_OK || st == EFFML_E_NOMEM);
    effml_tensor_free(x);
    effml_tensor_free(y);
    effml_optimizer_free(opt);
    effml_layer_free(m);
    ck_assert_int_eq(fa.live, live0);
    effml_context_free(ctx);
    if (st == EFFML_OK) break; /* k passed the last allocation */
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("optim");
  TCase *tc = tcase_create("optim");
  tcase_add_test(tc, test_frozen_bit_for_bit_adamw);
  tcase_add_test(tc, test_frozen_bit_for_bit_sgd);
  tcase_add_test(tc, test_schedules);
  tcase_add_test(tc, test_reset_state_and_shared_params);
  tcase_add_test(tc, test_clip_grad_norm);
  tcase_add_test(tc, test_optimizer_bad_options);
  tcase_add_test(tc, test_initialisers);
  tcase_add_test(tc, test_bad_layer_and_loss_input);
  tcase_add_test(tc, test_allocation_failures);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
