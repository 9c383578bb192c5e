/* Layers, loss and optimizer steps against PyTorch 1.13 reference values
 * (tests/ref/train_make_ref.py -> tests/ref/train_ref.safetensors). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../lib/layer/layer_internal.h" /* effml__activation_apply/backward */
#include "testutil.h"

#define REF EFFML_TEST_REF "/train_ref.safetensors"

static effml_context *ctx;
static effml_safetensors *st;

static void setup(void) {
  ctx = tu_ctx(7);
  ck_assert_msg(effml_safetensors_load(ctx, REF, EFFML_IO_SAFETENSORS_COPY, &st) == EFFML_OK, "%s",
                effml_context_last_error(ctx));
}
static void teardown(void) {
  effml_safetensors_free(st);
  effml_context_free(ctx);
}

static const effml_tensor *ref(const char *name) {
  const effml_tensor *t = NULL;
  ck_assert_msg(effml_safetensors_get(ctx, st, name, &t) == EFFML_OK, "missing %s", name);
  return t;
}
static const float *reff(const char *name) { return (const float *)effml_tensor_data_const(ref(name)); }

/* New owned f32 copy of a reference tensor. */
static effml_tensor *copy(const char *name) {
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_contiguous(ctx, ref(name), &t), EFFML_OK);
  return t;
}

static void expect_close(const float *got, const char *name, double tol) {
  const effml_tensor *r = ref(name);
  double d = tu_max_abs_diff_f32(got, (const float *)effml_tensor_data_const(r), effml_tensor_numel(r));
  ck_assert_msg(d <= tol, "%s: max |diff| = %g > %g", name, d, tol);
}

static void set_param(effml_layer *l, int32_t i, const char *name) {
  ck_assert_int_eq(effml_tensor_copy(ctx, effml_layer_param(l, i), ref(name)), EFFML_OK);
}

START_TEST(test_dense_matches_torch) {
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 5, 3, 1, &l), EFFML_OK);
  ck_assert_str_eq(effml_layer_param_name(l, 0), "weight");
  ck_assert_str_eq(effml_layer_param_name(l, 1), "bias");
  set_param(l, 0, "dense.W");
  set_param(l, 1, "dense.b");
  effml_tensor *x = copy("dense.x"), *dy = copy("dense.dy");
  effml_tensor *y = tu_f32(ctx, 4, 3, NULL), *dx = tu_f32(ctx, 4, 5, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  expect_close(effml_tensor_data(y), "dense.y", 1e-5);
  effml_layer_zero_grad(l);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
  expect_close(effml_tensor_data(dx), "dense.dx", 1e-5);
  expect_close(effml_tensor_data(effml_layer_param_grad(l, 0)), "dense.dW", 1e-5);
  expect_close(effml_tensor_data(effml_layer_param_grad(l, 1)), "dense.db", 1e-5);
  /* gradients accumulate */
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, NULL), EFFML_OK);
  const float *g = effml_tensor_data(effml_layer_param_grad(l, 0)), *r = reff("dense.dW");
  for (int i = 0; i < 15; ++i) ck_assert_float_eq_tol(g[i], 2 * r[i], 1e-5);
  effml_tensor_free(x); effml_tensor_free(dy); effml_tensor_free(y); effml_tensor_free(dx);
  effml_layer_free(l);
}
END_TEST

static const struct { int32_t act; const char *name; } ACTS[] = {
    {EFFML_LAYER_ACT_RELU, "relu"}, {EFFML_LAYER_ACT_GELU, "gelu"}, {EFFML_LAYER_ACT_GELU_TANH, "gelu_tanh"},
    {EFFML_LAYER_ACT_SILU, "silu"}, {EFFML_LAYER_ACT_TANH, "tanh"}};

START_TEST(test_activations_match_torch) {
  effml_tensor *x = copy("act.x"), *dy = copy("act.dy");
  effml_tensor *y = tu_f32(ctx, 3, 7, NULL), *dx = tu_f32(ctx, 3, 7, NULL);
  char yn[64], dn[64];
  for (size_t k = 0; k < sizeof ACTS / sizeof ACTS[0]; ++k) {
    snprintf(yn, sizeof yn, "act.%s.y", ACTS[k].name);
    snprintf(dn, sizeof dn, "act.%s.dx", ACTS[k].name);
    ck_assert_str_eq(effml_layer_activation_name(ACTS[k].act), ACTS[k].name);
    /* raw entry points */
    ck_assert_int_eq(effml__activation_apply(ctx, ACTS[k].act, x, y), EFFML_OK);
    expect_close(effml_tensor_data(y), yn, 2e-6);
    ck_assert_int_eq(effml__activation_backward(ctx, ACTS[k].act, x, dy, dx), EFFML_OK);
    expect_close(effml_tensor_data(dx), dn, 2e-6);
    /* the layer */
    effml_layer *l = NULL;
    ck_assert_int_eq(effml_layer_activation_create(ctx, ACTS[k].act, &l), EFFML_OK);
    ck_assert_str_eq(effml_layer_kind(l), ACTS[k].name);
    ck_assert_int_eq(effml_layer_num_params(l), 0);
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
    expect_close(effml_tensor_data(y), yn, 2e-6);
    ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
    expect_close(effml_tensor_data(dx), dn, 2e-6);
    effml_layer_free(l);
  }
  /* in place: y = x */
  effml_tensor *z = copy("act.x");
  ck_assert_int_eq(effml__activation_apply(ctx, EFFML_LAYER_ACT_GELU, z, z), EFFML_OK);
  expect_close(effml_tensor_data(z), "act.gelu.y", 2e-6);
  effml_tensor_free(z);
  effml_tensor_free(x); effml_tensor_free(dy); effml_tensor_free(y); effml_tensor_free(dx);
}
END_TEST

START_TEST(test_layernorm_matches_torch) {
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_layer_layernorm_create(ctx, 6, 1e-5, &l), EFFML_OK);
  set_param(l, 0, "ln.weight");
  set_param(l, 1, "ln.bias");
  effml_tensor *x = copy("ln.x"), *dy = copy("ln.dy");
  effml_tensor *y = tu_f32(ctx, 4, 6, NULL), *dx = tu_f32(ctx, 4, 6, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  expect_close(effml_tensor_data(y), "ln.y", 1e-5);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
  expect_close(effml_tensor_data(dx), "ln.dx", 2e-5);
  expect_close(effml_tensor_data(effml_layer_param_grad(l, 0)), "ln.dweight", 1e-5);
  expect_close(effml_tensor_data(effml_layer_param_grad(l, 1)), "ln.dbias", 1e-5);
  /* infer mode gives the same y and keeps nothing */
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
  expect_close(effml_tensor_data(y), "ln.y", 1e-5);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_E_STATE);
  effml_tensor_free(x); effml_tensor_free(dy); effml_tensor_free(y); effml_tensor_free(dx);
  effml_layer_free(l);
}
END_TEST

START_TEST(test_cross_entropy_matches_torch) {
  const effml_tensor *z = ref("ce.logits"), *lab = ref("ce.labels");
  effml_tensor *dz = tu_f32(ctx, 5, 4, NULL);
  double loss = 0, acc = 0;
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, lab, &loss, dz), EFFML_OK);
  ck_assert_double_eq_tol(loss, reff("ce.loss")[0], 1e-6);
  expect_close(effml_tensor_data(dz), "ce.dlogits", 1e-7);
  /* i32 labels give the same; dlogits may alias logits */
  effml_tensor *lab32 = NULL, *zz = copy("ce.logits");
  ck_assert_int_eq(effml_tensor_convert(ctx, lab, EFFML_I32, &lab32), EFFML_OK);
  double loss2 = 0;
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, zz, lab32, &loss2, zz), EFFML_OK);
  ck_assert(loss2 == loss);
  expect_close(effml_tensor_data(zz), "ce.dlogits", 1e-7);
  /* accuracy by hand */
  const float *zp = reff("ce.logits");
  const int64_t *lp = (const int64_t *)effml_tensor_data_const(lab);
  int correct = 0;
  for (int i = 0; i < 5; ++i) {
    int best = 0;
    for (int j = 1; j < 4; ++j) if (zp[i * 4 + j] > zp[i * 4 + best]) best = j;
    correct += best == lp[i];
  }
  ck_assert_int_eq(effml_metrics_accuracy(ctx, z, lab, &acc), EFFML_OK);
  ck_assert_double_eq(acc, correct / 5.0);
  effml_tensor_free(lab32); effml_tensor_free(zz); effml_tensor_free(dz);
}
END_TEST

/* Two steps with the reference gradients; compare after each. */
static void run_two_steps(const effml_optimizer_options *o, const char *p1, const char *p2) {
  effml_tensor *p = copy("opt.p0"), *g = copy("opt.g1");
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(ctx, o, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_param(ctx, opt, "p", p, g), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_step(ctx, opt), EFFML_OK);
  expect_close(effml_tensor_data(p), p1, 1e-6);
  ck_assert_int_eq(effml_tensor_copy(ctx, g, ref("opt.g2")), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_step(ctx, opt), EFFML_OK);
  expect_close(effml_tensor_data(p), p2, 1e-6);
  ck_assert_int_eq(effml_optimizer_steps(opt), 2);
  effml_optimizer_free(opt);
  effml_tensor_free(p);
  effml_tensor_free(g);
}

START_TEST(test_adamw_matches_torch) {
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  o.lr = 1e-2;
  o.weight_decay = 0.1;
  run_two_steps(&o, "adamw.p1", "adamw.p2");
}
END_TEST

START_TEST(test_sgd_matches_torch) {
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  o.algorithm = EFFML_OPTIM_SGD;
  o.lr = 0.1;
  o.momentum = 0.9;
  o.nesterov = 1;
  o.weight_decay = 1e-3;
  run_two_steps(&o, "sgd_nesterov.p1", "sgd_nesterov.p2");
  effml_optimizer_options_init(&o);
  o.algorithm = EFFML_OPTIM_SGD;
  o.lr = 0.05;
  o.momentum = 0.8;
  o.dampening = 0.25;
  o.weight_decay = 0;
  run_two_steps(&o, "sgd_momentum.p1", "sgd_momentum.p2");
}
END_TEST

START_TEST(test_mlp_loads_torch_state_dict) {
  effml_layer *m = NULL, *l = NULL;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &m), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 5, 4, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 4, 3, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  /* PyTorch's nn.Sequential names ("0.weight", "2.bias") load unchanged */
  ck_assert_msg(effml_layer_load(ctx, m, REF, "mlp.", 0) == EFFML_OK, "%s", effml_context_last_error(ctx));
  effml_tensor *x = copy("mlp.x"), *z = tu_f32(ctx, 6, 3, NULL), *dz = tu_f32(ctx, 6, 3, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, m, x, z, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  expect_close(effml_tensor_data(z), "mlp.logits", 1e-5);
  double loss = 0;
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, z, ref("mlp.labels"), &loss, dz), EFFML_OK);
  ck_assert_double_eq_tol(loss, reff("mlp.loss")[0], 1e-5);
  effml_layer_zero_grad(m);
  ck_assert_int_eq(effml_layer_backward(ctx, m, dz, NULL), EFFML_OK);
  char name[64];
  for (int32_t i = 0; i < effml_layer_num_params(m); ++i) {
    snprintf(name, sizeof name, "mlp_grad.%s", effml_layer_param_name(m, i));
    expect_close(effml_tensor_data(effml_layer_param_grad(m, i)), name, 1e-5);
  }
  effml_tensor_free(x); effml_tensor_free(z); effml_tensor_free(dz);
  effml_layer_free(m);
}
END_TEST

int main(void) {
  Suite *s = suite_create("train_ref");
  TCase *tc = tcase_create("torch");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_dense_matches_torch);
  tcase_add_test(tc, test_activations_match_torch);
  tcase_add_test(tc, test_layernorm_matches_torch);
  tcase_add_test(tc, test_cross_entropy_matches_torch);
  tcase_add_test(tc, test_adamw_matches_torch);
  tcase_add_test(tc, test_sgd_matches_torch);
  tcase_add_test(tc, test_mlp_loads_torch_state_dict);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
