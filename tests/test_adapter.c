/* Adapters: PHM/LPHM, the adapter block with a shared phm rule,
 * LoRA and LoKr.  Reference values come from tests/ref/adapter_make_ref.py
 * (PyTorch float64 autograd on the reference maths); gradients are also
 * checked by central differences, and the factorized path against
 * x * materialize(). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EFFML_EXPERIMENTAL /* effml_adapter_lora_merge_drift, effml_dst_training_flops, EFFML_SPARSE_COMPAT_FLOAT */
#include "testutil.h"

static effml_safetensors *REF;
static effml_context *RCTX;

static void ref_open(void) {
  if (REF) return;
  RCTX = tu_ctx(0);
  ck_assert_int_eq(effml_safetensors_load(RCTX, EFFML_TEST_REF "/adapter_ref.safetensors",
                                          EFFML_IO_SAFETENSORS_COPY, &REF), EFFML_OK);
}

/* The reference tensor `key` as a new owned f32 tensor. */
static effml_tensor *ref_f32(effml_context *ctx, const char *key) {
  ref_open();
  const effml_tensor *t = NULL;
  ck_assert_msg(effml_safetensors_get(RCTX, REF, key, &t) == EFFML_OK, "missing ref %s", key);
  effml_tensor *c = NULL;
  ck_assert_int_eq(effml_tensor_convert(ctx, t, EFFML_F32, &c), EFFML_OK);
  return c;
}

/* Copy reference `key` into parameter `name` of `layer`. */
static void ref_into_param(effml_context *ctx, effml_layer *layer, const char *name, const char *key) {
  for (int32_t i = 0; i < effml_layer_num_params(layer); ++i) {
    if (strcmp(effml_layer_param_name(layer, i), name) == 0) {
      effml_tensor *v = ref_f32(ctx, key);
      ck_assert_msg(effml_tensor_copy(ctx, effml_layer_param(layer, i), v) == EFFML_OK, "%s: %s",
                    name, effml_context_last_error(ctx));
      effml_tensor_free(v);
      return;
    }
  }
  ck_abort_msg("no parameter %s", name);
}

static int32_t param_index(effml_layer *layer, const char *name) {
  for (int32_t i = 0; i < effml_layer_num_params(layer); ++i)
    if (strcmp(effml_layer_param_name(layer, i), name) == 0) return i;
  ck_abort_msg("no parameter %s", name);
  return -1;
}

/* max |got - ref| / max(1, |ref|) over the tensor. */
static double rel_err(effml_context *ctx, effml_tensor *got, const char *key) {
  effml_tensor *r = ref_f32(ctx, key);
  ck_assert_int_eq(effml_tensor_numel(r), effml_tensor_numel(got));
  const float *a = effml_tensor_data_const(got), *b = effml_tensor_data_const(r);
  double m = 0;
  for (int64_t i = 0; i < effml_tensor_numel(r); ++i) {
    double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs(b[i]));
    if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
  }
  effml_tensor_free(r);
  return m;
}

static void check_grad(effml_context *ctx, effml_layer *l, const char *name, const char *key) {
  double e = rel_err(ctx, effml_layer_param_grad(l, param_index(l, name)), key);
  ck_assert_msg(e < 2e-5, "grad %s vs %s: err %g", name, key, e);
}

/* Forward TRAIN on the case's x, backward with its gy; check y and dx. */
static void run_case(effml_context *ctx, effml_layer *l, const char *c, effml_tensor **dx_out) {
  char key[64];
  snprintf(key, sizeof key, "%s.x", c);
  effml_tensor *x = ref_f32(ctx, key);
  snprintf(key, sizeof key, "%s.gy", c);
  effml_tensor *gy = ref_f32(ctx, key);
  effml_tensor *y = tu_f32(ctx, effml_tensor_dim(x, 0), effml_layer_out_features(l), NULL);
  effml_tensor *dx = tu_f32(ctx, effml_tensor_dim(x, 0), effml_tensor_dim(x, 1), NULL);
  ck_assert_msg(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN) == EFFML_OK, "%s", effml_context_last_error(ctx));
  effml_layer_zero_grad(l);
  ck_assert_msg(effml_layer_backward(ctx, l, gy, dx) == EFFML_OK, "%s", effml_context_last_error(ctx));
  snprintf(key, sizeof key, "%s.y", c);
  double ey = rel_err(ctx, y, key);
  ck_assert_msg(ey < 2e-5, "%s y err %g", c, ey);
  snprintf(key, sizeof key, "%s.dx", c);
  double ex = rel_err(ctx, dx, key);
  ck_assert_msg(ex < 2e-5, "%s dx err %g", c, ex);
  effml_tensor_free(x);
  effml_tensor_free(gy);
  effml_tensor_free(y);
  if (dx_out) *dx_out = dx;
  else effml_tensor_free(dx);
}

/* ---------------------------------------------------------------- reference values */

START_TEST(test_lphm_reference_both_paths) {
  effml_context *ctx = tu_ctx(1);
  for (int path = 0; path < 2; ++path) {
    effml_adapter_phm_options o;
    effml_adapter_phm_options_init(&o);
    o.phm_dim = 3;
    o.rank = 2;
    effml_layer *l = NULL;
    ck_assert_int_eq(effml_adapter_phm_create(ctx, 6, 9, &o, NULL, &l), EFFML_OK);
    ck_assert_str_eq(effml_layer_kind(l), "lphm");
    ck_assert_int_eq(effml_adapter_phm_set_path(ctx, l, path), EFFML_OK);
    ref_into_param(ctx, l, "phm_rule", "lphm.phm_rule");
    ref_into_param(ctx, l, "W_left", "lphm.W_left");
    ref_into_param(ctx, l, "W_right", "lphm.W_right");
    ref_into_param(ctx, l, "b", "lphm.b");
    run_case(ctx, l, "lphm", NULL);
    check_grad(ctx, l, "phm_rule", "lphm.dphm_rule");
    check_grad(ctx, l, "W_left", "lphm.dW_left");
    check_grad(ctx, l, "W_right", "lphm.dW_right");
    check_grad(ctx, l, "b", "lphm.db");
    /* materialize() = the reference H (element order of kron(A_i, B_i)) */
    effml_tensor *H = tu_f32(ctx, 6, 9, NULL);
    ck_assert_int_eq(effml_adapter_phm_materialize(ctx, l, H), EFFML_OK);
    ck_assert(rel_err(ctx, H, "lphm.H") < 1e-5);
    effml_tensor_free(H);
    effml_layer_free(l);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_phm_reference_both_paths) {
  effml_context *ctx = tu_ctx(2);
  for (int path = 0; path < 2; ++path) {
    effml_adapter_phm_options o;
    effml_adapter_phm_options_init(&o);
    o.phm_dim = 2;
    o.factorized = 0;
    effml_layer *l = NULL;
    ck_assert_int_eq(effml_adapter_phm_create(ctx, 4, 6, &o, NULL, &l), EFFML_OK);
    ck_assert_str_eq(effml_layer_kind(l), "phm");
    ck_assert_int_eq(effml_adapter_phm_set_path(ctx, l, path), EFFML_OK);
    ref_into_param(ctx, l, "phm_rule", "phm.phm_rule");
    ref_into_param(ctx, l, "W", "phm.W");
    ref_into_param(ctx, l, "b", "phm.b");
    run_case(ctx, l, "phm", NULL);
    check_grad(ctx, l, "phm_rule", "phm.dphm_rule");
    check_grad(ctx, l, "W", "phm.dW");
    check_grad(ctx, l, "b", "phm.db");
    effml_layer_free(l);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_adapter_block_reference) {
  effml_context *ctx = tu_ctx(3);
  effml_phm_rule *A = NULL;
  ck_assert_int_eq(effml_phm_rule_create(ctx, 2, 1e-4, &A), EFFML_OK);
  effml_adapter_options o;
  effml_adapter_options_init(&o);
  o.bottleneck = 4;
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_adapter_create(ctx, 8, &o, A, &l), EFFML_OK);
  effml_phm_rule_free(A); /* the block keeps the rule alive */
  ck_assert_str_eq(effml_layer_kind(l), "adapter");
  ref_into_param(ctx, l, "phm_rule", "adapter.phm_rule");
  ref_into_param(ctx, l, "adapter_down.0.W_left", "adapter.down_W_left");
  ref_into_param(ctx, l, "adapter_down.0.W_right", "adapter.down_W_right");
  ref_into_param(ctx, l, "adapter_down.0.b", "adapter.down_b");
  ref_into_param(ctx, l, "adapter_up.W_left", "adapter.up_W_left");
  ref_into_param(ctx, l, "adapter_up.W_right", "adapter.up_W_right");
  ref_into_param(ctx, l, "adapter_up.b", "adapter.up_b");
  run_case(ctx, l, "adapter", NULL);
  check_grad(ctx, l, "phm_rule", "adapter.dphm_rule"); /* dA summed over down and up */
  check_grad(ctx, l, "adapter_down.0.W_left", "adapter.ddown_W_left");
  check_grad(ctx, l, "adapter_down.0.W_right", "adapter.ddown_W_right");
  check_grad(ctx, l, "adapter_down.0.b", "adapter.ddown_b");
  check_grad(ctx, l, "adapter_up.W_left", "adapter.dup_W_left");
  check_grad(ctx, l, "adapter_up.W_right", "adapter.dup_W_right");
  check_grad(ctx, l, "adapter_up.b", "adapter.dup_b");
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

/* A minimal base layer: dense from layer.h. */
static effml_layer *dense_from_ref(effml_context *ctx, int64_t in, int64_t out, const char *c) {
  effml_layer *d = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, in, out, 1, &d), EFFML_OK);
  char key[64];
  snprintf(key, sizeof key, "%s.weight", c);
  ref_into_param(ctx, d, "weight", key);
  snprintf(key, sizeof key, "%s.bias", c);
  ref_into_param(ctx, d, "bias", key);
  return d;
}

START_TEST(test_lora_reference) {
  effml_context *ctx = tu_ctx(4);
  effml_layer *base = dense_from_ref(ctx, 5, 4, "lora");
  effml_adapter_lora_options o;
  effml_adapter_lora_options_init(&o);
  o.rank = 2;
  o.alpha = 4;
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_adapter_lora_create(ctx, base, &o, &l), EFFML_OK);
  ck_assert(effml_adapter_lora_base(l) == base);
  ck_assert(fabs(effml_adapter_lora_scaling(l) - 2.0) < 1e-12);
  ref_into_param(ctx, l, "lora_A.weight", "lora.lora_A");
  ref_into_param(ctx, l, "lora_B.weight", "lora.lora_B");
  run_case(ctx, l, "lora", NULL);
  check_grad(ctx, l, "lora_A.weight", "lora.dlora_A");
  check_grad(ctx, l, "lora_B.weight", "lora.dlora_B");
  /* frozen base: no gradient at all */
  ck_assert_int_eq(effml_layer_param_trainable(l, param_index(l, "base_layer.weight")), 0);
  effml_tensor *gw = effml_layer_param_grad(l, param_index(l, "base_layer.weight"));
  const float *g = effml_tensor_data_const(gw);
  for (int64_t i = 0; i < effml_tensor_numel(gw); ++i) ck_assert(g[i] == 0.0f);
  ck_assert_int_eq(effml_layer_count_params(l, 1), 2 * 5 + 4 * 2);
  /* merged: the same y and dx, and the same LoRA gradients */
  ck_assert_int_eq(effml_adapter_lora_merge(ctx, l), EFFML_OK);
  ck_assert_int_eq(effml_adapter_lora_merge(ctx, l), EFFML_E_STATE);
  ck_assert_int_eq(effml_adapter_lora_is_merged(l), 1);
  run_case(ctx, l, "lora", NULL);
  check_grad(ctx, l, "lora_A.weight", "lora.dlora_A");
  ck_assert_int_eq(effml_adapter_lora_unmerge(ctx, l), EFFML_OK);
  ck_assert_int_eq(effml_adapter_lora_unmerge(ctx, l), EFFML_E_STATE);
  ck_assert(rel_err(ctx, effml_layer_param(l, param_index(l, "base_layer.weight")), "lora.weight") < 1e-6);
  double dabs = -1, drel = -1;
  ck_assert_int_eq(effml_adapter_lora_merge_drift(ctx, l, 1000, &dabs, &drel), EFFML_OK);
  ck_assert(dabs >= 0 && drel < 1e-4);
  effml_layer_free(l);
  /* rsLoRA scaling alpha/sqrt(r) */
  base = dense_from_ref(ctx, 5, 4, "lora");
  o.use_rslora = 1;
  o.rank = 4;
  ck_assert_int_eq(effml_adapter_lora_create(ctx, base, &o, &l), EFFML_OK);
  ck_assert(fabs(effml_adapter_lora_scaling(l) - 2.0) < 1e-12);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_lokr_reference) {
  effml_context *ctx = tu_ctx(5);
  int64_t m, n;
  ck_assert_int_eq(effml_adapter_lokr_factorization(256, -1, &m, &n), EFFML_OK);
  ck_assert(m == 16 && n == 16);
  effml_adapter_lokr_factorization(128, -1, &m, &n);
  ck_assert(m == 8 && n == 16);
  effml_adapter_lokr_factorization(127, -1, &m, &n);
  ck_assert(m == 1 && n == 127);
  effml_adapter_lokr_factorization(128, 4, &m, &n);
  ck_assert(m == 4 && n == 32);
  effml_adapter_lokr_factorization(3072, -1, &m, &n);
  ck_assert(m == 48 && n == 64);

  effml_layer *base = dense_from_ref(ctx, 6, 4, "lokr");
  effml_adapter_lokr_options o;
  effml_adapter_lokr_options_init(&o);
  o.alpha = 4; /* r 8: both factors full, PEFT scale 4/8 */
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_adapter_lokr_create(ctx, base, &o, &l), EFFML_OK);
  ref_into_param(ctx, l, "lokr_w1", "lokr.lokr_w1");
  ref_into_param(ctx, l, "lokr_w2", "lokr.lokr_w2");
  run_case(ctx, l, "lokr", NULL);
  check_grad(ctx, l, "lokr_w1", "lokr.dlokr_w1");
  check_grad(ctx, l, "lokr_w2", "lokr.dlokr_w2");
  effml_tensor *dw = tu_f32(ctx, 4, 6, NULL);
  ck_assert_int_eq(effml_adapter_lokr_delta_weight(ctx, l, dw), EFFML_OK);
  ck_assert(rel_err(ctx, dw, "lokr.delta_weight") < 1e-6);
  effml_tensor_free(dw);
  effml_layer_free(l);

  /* LyCORIS convention: both full -> scale 1 */
  base = dense_from_ref(ctx, 6, 4, "lokr");
  o.scale_convention = EFFML_ADAPTER_LOKR_SCALE_LYCORIS;
  ck_assert_int_eq(effml_adapter_lokr_create(ctx, base, &o, &l), EFFML_OK);
  ref_into_param(ctx, l, "lokr_w1", "lokr.lokr_w1");
  ref_into_param(ctx, l, "lokr_w2", "lokr.lokr_w2");
  dw = tu_f32(ctx, 4, 6, NULL);
  ck_assert_int_eq(effml_adapter_lokr_delta_weight(ctx, l, dw), EFFML_OK);
  effml_tensor *r = ref_f32(ctx, "lokr.delta_weight");
  const float *a = effml_tensor_data_const(dw), *b = effml_tensor_data_const(r);
  for (int i = 0; i < 24; ++i) ck_assert(fabs(a[i] - 2.0 * b[i]) < 1e-5);
  effml_tensor_free(r);
  effml_tensor_free(dw);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- gradient checks */

/* L = sum(y * g) in double.  */
static double loss_of(effml_context *ctx, effml_layer *l, effml_tensor *x, effml_tensor *y,
                      const effml_tensor *g) {
  ck_assert_msg(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER) == EFFML_OK, "%s", effml_context_last_error(ctx));
  const float *yy = effml_tensor_data_const(y), *gg = effml_tensor_data_const(g);
  double s = 0;
  for (int64_t i = 0; i < effml_tensor_numel(y); ++i) s += (double)yy[i] * gg[i];
  return s;
}

/* Central differences on every parameter (up to 24 entries each) and on x. */
static void fd_check(effml_context *ctx, effml_layer *l, int64_t batch, double tol) {
  int64_t in = effml_layer_in_features(l), out = effml_layer_out_features(l);
  effml_tensor *x = tu_f32(ctx, batch, in, NULL), *y = tu_f32(ctx, batch, out, NULL);
  effml_tensor *g = tu_f32(ctx, batch, out, NULL), *dx = tu_f32(ctx, batch, in, NULL);
  tu_fill_uniform(x, 11, -1, 1);
  tu_fill_uniform(g, 12, -1, 1);
  /* move every parameter away from zero (B = 0 etc. would hide terms) */
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i) {
    effml_tensor *v = effml_layer_param(l, i);
    float *p = effml_tensor_data(v);
    for (int64_t k = 0; k < effml_tensor_numel(v); ++k) p[k] = 0.5f * sinf(1.0f + 0.7f * (float)k + (float)i) ;
  }
  effml_layer_zero_grad(l);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, l, g, dx), EFFML_OK);
  const float eps = 1e-2f;
  for (int32_t i = -1; i < effml_layer_num_params(l); ++i) {
    effml_tensor *v = i < 0 ? x : effml_layer_param(l, i);
    if (i >= 0 && !effml_layer_param_trainable(l, i)) continue;
    const float *an = effml_tensor_data_const(i < 0 ? dx : effml_layer_param_grad(l, i));
    float *p = effml_tensor_data(v);
    int64_t nel = effml_tensor_numel(v), step = nel > 24 ? nel / 24 : 1;
    for (int64_t k = 0; k < nel; k += step) {
      float keep = p[k];
      p[k] = keep + eps;
      double lp = loss_of(ctx, l, x, y, g);
      p[k] = keep - eps;
      double lm = loss_of(ctx, l, x, y, g);
      p[k] = keep;
      double fd = (lp - lm) / (2.0 * eps);
      ck_assert_msg(fabs(fd - an[k]) <= tol * fmax(1.0, fabs(fd)),
                    "%s param %s[%lld]: analytic %g vs numeric %g", effml_layer_kind(l),
                    i < 0 ? "x" : effml_layer_param_name(l, i), (long long)k, an[k], fd);
    }
  }
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(g);
  effml_tensor_free(dx);
}

START_TEST(test_fd_lphm_phm) {
  effml_context *ctx = tu_ctx(6);
  effml_adapter_phm_options o;
  effml_adapter_phm_options_init(&o);
  o.rank = 3;
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 12, 8, &o, NULL, &l), EFFML_OK);
  fd_check(ctx, l, 5, 2e-3);
  effml_adapter_phm_set_path(ctx, l, EFFML_ADAPTER_PHM_PATH_MATERIALIZED);
  fd_check(ctx, l, 5, 2e-3);
  effml_layer_free(l);
  o.rank = 5; /* n*r = 20: the BLAS path instead of the fused row kernels */
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 12, 8, &o, NULL, &l), EFFML_OK);
  fd_check(ctx, l, 5, 2e-3);
  effml_layer_free(l);
  o.rank = 3;
  o.factorized = 0;
  o.phm_dim = 2;
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 6, 4, &o, NULL, &l), EFFML_OK);
  fd_check(ctx, l, 3, 2e-3);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_fd_shared_rule_two_layers) {
  /* dA accumulates over two LPHM layers sharing one A (and over down/up of two blocks) */
  effml_context *ctx = tu_ctx(7);
  effml_phm_rule *A = NULL;
  ck_assert_int_eq(effml_phm_rule_create(ctx, 2, 1e-4, &A), EFFML_OK);
  effml_adapter_phm_options o;
  effml_adapter_phm_options_init(&o);
  effml_layer *seq = NULL, *l1 = NULL, *l2 = NULL;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &seq), EFFML_OK);
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 8, 4, &o, A, &l1), EFFML_OK);
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 4, 6, &o, A, &l2), EFFML_OK);
  ck_assert(effml_adapter_phm_shared_rule(l1) == A);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, seq, l1), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, seq, l2), EFFML_OK);
  fd_check(ctx, seq, 4, 2e-3);
  effml_layer_free(seq);

  effml_adapter_options ao;
  effml_adapter_options_init(&ao);
  ao.bottleneck = 4;
  ao.activation = EFFML_LAYER_ACT_GELU;
  effml_layer *b1 = NULL, *b2 = NULL;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &seq), EFFML_OK);
  ck_assert_int_eq(effml_adapter_create(ctx, 8, &ao, A, &b1), EFFML_OK);
  ao.activation = EFFML_LAYER_ACT_SILU;
  ck_assert_int_eq(effml_adapter_create(ctx, 8, &ao, A, &b2), EFFML_OK);
  effml_phm_rule_free(A);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, seq, b1), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, seq, b2), EFFML_OK);
  fd_check(ctx, seq, 3, 3e-3);
  effml_layer_free(seq);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_fd_block_variants_lora_lokr) {
  effml_context *ctx = tu_ctx(8);
  effml_adapter_options ao;
  effml_adapter_options_init(&ao);
  ao.bottleneck = 6;
  ao.phm_dim = 2;
  ao.activation = EFFML_LAYER_ACT_RELU;
  int32_t projs[3] = {EFFML_ADAPTER_PROJ_LPHM, EFFML_ADAPTER_PROJ_PHM, EFFML_ADAPTER_PROJ_DENSE};
  for (int i = 0; i < 3; ++i) {
    ao.projection = projs[i];
    effml_layer *b = NULL;
    ck_assert_int_eq(effml_adapter_create(ctx, 10, &ao, NULL, &b), EFFML_OK);
    fd_check(ctx, b, 3, 3e-3);
    effml_layer_free(b);
  }
  effml_layer *d = NULL, *l = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 7, 5, 1, &d), EFFML_OK);
  effml_adapter_lora_options lo;
  effml_adapter_lora_options_init(&lo);
  lo.rank = 3;
  lo.freeze_base = 0; /* check the base gradients too */
  ck_assert_int_eq(effml_adapter_lora_create(ctx, d, &lo, &l), EFFML_OK);
  fd_check(ctx, l, 4, 2e-3);
  effml_layer_free(l);
  /* LoKr with factored w2 (r < max(out_k, in_n)/2) and factored w1 (decompose_both) */
  ck_assert_int_eq(effml_layer_dense_create(ctx, 24, 20, 1, &d), EFFML_OK);
  effml_adapter_lokr_options ko;
  effml_adapter_lokr_options_init(&ko);
  ko.rank = 1;
  ko.decompose_both = 1;
  ck_assert_int_eq(effml_adapter_lokr_create(ctx, d, &ko, &l), EFFML_OK);
  ck_assert_int_ge(param_index(l, "lokr_w1_a"), 0);
  ck_assert_int_ge(param_index(l, "lokr_w2_b"), 0);
  fd_check(ctx, l, 3, 3e-3);
  /* forward = x (W + dW)^T + b */
  effml_tensor *x = tu_f32(ctx, 2, 24, NULL), *y = tu_f32(ctx, 2, 20, NULL);
  tu_fill_uniform(x, 3, -1, 1);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
  effml_tensor *dw = tu_f32(ctx, 20, 24, NULL);
  ck_assert_int_eq(effml_adapter_lokr_delta_weight(ctx, l, dw), EFFML_OK);
  const float *W = effml_tensor_data_const(effml_layer_param(l, param_index(l, "base_layer.weight")));
  const float *bb = effml_tensor_data_const(effml_layer_param(l, param_index(l, "base_layer.bias")));
  const float *D = effml_tensor_data_const(dw), *xx = effml_tensor_data_const(x), *yy = effml_tensor_data_const(y);
  for (int r = 0; r < 2; ++r)
    for (int o = 0; o < 20; ++o) {
      double s = bb[o];
      for (int i = 0; i < 24; ++i) s += (double)xx[r * 24 + i] * (W[o * 24 + i] + D[o * 24 + i]);
      ck_assert(fabs(s - yy[r * 20 + o]) < 1e-4);
    }
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(dw);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- factorized vs materialized */

START_TEST(test_factorized_equals_materialized) {
  effml_context *ctx = tu_ctx(9);
  /* n*r <= 16 runs the fused row kernels, larger n*r the BLAS path: both covered */
  int64_t cases[][4] = {{768, 24, 4, 1}, {96, 64, 8, 2}, {64, 128, 4, 3}, {64, 32, 4, 5}, {48, 96, 2, 9}};
  for (int c = 0; c < 5; ++c) {
    effml_adapter_phm_options o;
    effml_adapter_phm_options_init(&o);
    o.phm_dim = cases[c][2];
    o.rank = cases[c][3];
    o.rule_init_std = 0.5;
    effml_layer *l = NULL;
    int64_t in = cases[c][0], out = cases[c][1], b = 33;
    ck_assert_int_eq(effml_adapter_phm_create(ctx, in, out, &o, NULL, &l), EFFML_OK);
    float *bias = effml_tensor_data(effml_layer_param(l, param_index(l, "b")));
    for (int64_t j = 0; j < out; ++j) bias[j] = 0.01f * (float)j;
    effml_tensor *x = tu_f32(ctx, b, in, NULL), *y = tu_f32(ctx, b, out, NULL), *H = tu_f32(ctx, in, out, NULL);
    tu_fill_uniform(x, 5, -1, 1);
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
    ck_assert_int_eq(effml_adapter_phm_materialize(ctx, l, H), EFFML_OK);
    const float *xx = effml_tensor_data_const(x), *hh = effml_tensor_data_const(H), *yy = effml_tensor_data_const(y);
    double maxe = 0, maxy = 0;
    for (int64_t r = 0; r < b; ++r)
      for (int64_t j = 0; j < out; ++j) {
        double s = bias[j];
        for (int64_t i = 0; i < in; ++i) s += (double)xx[r * in + i] * hh[i * out + j];
        maxe = fmax(maxe, fabs(s - yy[r * out + j]));
        maxy = fmax(maxy, fabs(s));
      }
    ck_assert_msg(maxe <= 1e-5 * fmax(1.0, maxy), "case %d: max err %g (scale %g)", c, maxe, maxy);
    /* the materialized path gives the same y and gradients */
    effml_tensor *g = tu_f32(ctx, b, out, NULL), *dx1 = tu_f32(ctx, b, in, NULL), *dx2 = tu_f32(ctx, b, in, NULL);
    effml_tensor *y2 = tu_f32(ctx, b, out, NULL);
    tu_fill_uniform(g, 6, -1, 1);
    int32_t np = effml_layer_num_params(l);
    float *saved[8] = {0};
    for (int path = 0; path < 2; ++path) {
      effml_adapter_phm_set_path(ctx, l, path);
      effml_layer_zero_grad(l);
      ck_assert_int_eq(effml_layer_forward(ctx, l, x, path ? y2 : y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
      ck_assert_int_eq(effml_layer_backward(ctx, l, g, path ? dx2 : dx1), EFFML_OK);
      for (int32_t i = 0; i < np; ++i) {
        effml_tensor *gt = effml_layer_param_grad(l, i);
        int64_t ne = effml_tensor_numel(gt);
        if (path == 0) {
          saved[i] = malloc((size_t)ne * sizeof(float));
          memcpy(saved[i], effml_tensor_data_const(gt), (size_t)ne * sizeof(float));
        } else {
          const float *gg = effml_tensor_data_const(gt);
          double m = 0, s = 0;
          for (int64_t k = 0; k < ne; ++k) {
            m = fmax(m, fabs(gg[k] - saved[i][k]));
            s = fmax(s, fabs(saved[i][k]));
          }
          ck_assert_msg(m <= 2e-5 * fmax(1.0, s), "case %d grad %s: %g (scale %g)", c, effml_layer_param_name(l, i), m, s);
          free(saved[i]);
        }
      }
    }
    ck_assert(tu_max_abs_diff_f32(effml_tensor_data_const(y), effml_tensor_data_const(y2), b * out) < 1e-4);
    ck_assert(tu_max_abs_diff_f32(effml_tensor_data_const(dx1), effml_tensor_data_const(dx2), b * in) < 1e-4);
    effml_tensor_free(g);
    effml_tensor_free(dx1);
    effml_tensor_free(dx2);
    effml_tensor_free(y2);
    effml_tensor_free(x);
    effml_tensor_free(y);
    effml_tensor_free(H);
    effml_layer_free(l);
  }
  effml_context_free(ctx);
}
END_TEST

/* Everything a TRAIN forward + backward writes: y, dx (when dx_wanted) and every
 * parameter gradient, concatenated into a new buffer (*n floats). */
static float *lphm_run(effml_context *ctx, effml_layer *l, int64_t b, int dx_wanted, int64_t *n) {
  const int64_t in = effml_layer_in_features(l), out = effml_layer_out_features(l);
  effml_tensor *x = tu_f32(ctx, b, in, NULL), *y = tu_f32(ctx, b, out, NULL);
  effml_tensor *g = tu_f32(ctx, b, out, NULL), *dx = tu_f32(ctx, b, in, NULL);
  tu_fill_uniform(x, 21, -1, 1);
  tu_fill_uniform(g, 22, -1, 1);
  effml_layer_zero_grad(l);
  ck_assert_msg(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN) == EFFML_OK, "%s",
                effml_context_last_error(ctx));
  ck_assert_msg(effml_layer_backward(ctx, l, g, dx_wanted ? dx : NULL) == EFFML_OK, "%s",
                effml_context_last_error(ctx));
  /* an inference forward (which keeps nothing for a backward) gives the same y */
  effml_tensor *yi = tu_f32(ctx, b, out, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, yi, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert_msg(memcmp(effml_tensor_data_const(yi), effml_tensor_data_const(y), (size_t)(b * out) * sizeof(float)) == 0,
                "%s: INFER y differs from TRAIN y", effml_layer_kind(l));
  effml_tensor_free(yi);
  int64_t total = b * out + (dx_wanted ? b * in : 0);
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i) total += effml_tensor_numel(effml_layer_param_grad(l, i));
  float *buf = malloc((size_t)total * sizeof(float)), *p = buf;
  ck_assert_ptr_nonnull(buf);
  memcpy(p, effml_tensor_data_const(y), (size_t)(b * out) * sizeof(float));
  p += b * out;
  if (dx_wanted) {
    memcpy(p, effml_tensor_data_const(dx), (size_t)(b * in) * sizeof(float));
    p += b * in;
  }
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i) {
    effml_tensor *gt = effml_layer_param_grad(l, i);
    memcpy(p, effml_tensor_data_const(gt), effml_tensor_nbytes(gt));
    p += effml_tensor_numel(gt);
  }
  *n = total;
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(g);
  effml_tensor_free(dx);
  return buf;
}

/* The thin LPHM row kernels (n*r <= 16; lib/adapter/phm_rows.c) on shapes that
 * reach every branch: 16-wide column blocks with and without a scalar tail in
 * kin and kout, the column counts with their own unrolled build (n = r*n = 4
 * and 8) and the generic one (n*r = 6, 12, 16), dS/dT in the row kernel
 * (small adapters, n*r <= 8) and by BLAS (wide with n*r = 12), several 64-row
 * chunks with a partial last one.
 * Checked against the materialized path (an independent BLAS computation), for
 * thread-count independence (bit for bit), and with W_left frozen and no dx
 * (the other results unchanged, bit for bit). */
START_TEST(test_lphm_row_kernels) {
  /* in, out, n, r */
  const int64_t cases[][4] = {{160, 80, 4, 1}, {105, 51, 3, 2},   {128, 24, 8, 1},
                              {40, 40, 2, 8},   {1280, 1280, 4, 1}, {600, 600, 4, 3}};
  for (int c = 0; c < 6; ++c) {
    const int64_t in = cases[c][0], out = cases[c][1], b = 150;
    float *ref = NULL;
    int64_t nref = 0;
    for (int32_t th = 1; th <= 3; th += 2) {
      effml_context *ctx = tu_ctx(31);
      effml_context_set_num_threads(ctx, th);
      effml_adapter_phm_options o;
      effml_adapter_phm_options_init(&o);
      o.phm_dim = cases[c][2];
      o.rank = cases[c][3];
      o.rule_init_std = 0.5;
      effml_layer *l = NULL;
      ck_assert_int_eq(effml_adapter_phm_create(ctx, in, out, &o, NULL, &l), EFFML_OK);
      tu_fill_uniform(effml_layer_param(l, param_index(l, "b")), 23, -1, 1);
      int64_t n1 = 0, n2 = 0;
      /* 41 chunks: enough work for 2 or 3 threads at th = 3 in every case */
      float *fact = lphm_run(ctx, l, 2600, 1, &n1);
      if (th == 1) {
        ref = fact;
        nref = n1;
        /* against the materialized path at b = 150 (3 chunks, the last partial) */
        float *f2 = lphm_run(ctx, l, b, 1, &n1);
        /* rows are independent in y and dx: the first b rows of the 2 600-row run
         * (which writes y and dx with streaming stores where they are >= 8 MiB
         * and rows are multiples of 16 floats, as in case 4) are the same bits
         * as the b-row run (cached stores) */
        ck_assert_msg(memcmp(ref, f2, (size_t)(b * out) * sizeof(float)) == 0,
                      "case %d: y rows differ between 2600- and %lld-row runs", c, (long long)b);
        ck_assert_msg(memcmp(ref + 2600 * out, f2 + b * out, (size_t)(b * in) * sizeof(float)) == 0,
                      "case %d: dx rows differ between 2600- and %lld-row runs", c, (long long)b);
        ck_assert_int_eq(effml_adapter_phm_set_path(ctx, l, EFFML_ADAPTER_PHM_PATH_MATERIALIZED), EFFML_OK);
        float *mat = lphm_run(ctx, l, b, 1, &n2);
        ck_assert_int_eq(n1, n2);
        double d = 0, m = 0;
        for (int64_t k = 0; k < n1; ++k) {
          d = fmax(d, fabs((double)f2[k] - mat[k]));
          m = fmax(m, fabs((double)mat[k]));
        }
        ck_assert_msg(d <= 2e-5 * m, "case %d: factorized vs materialized max |diff| %g (scale %g)", c, d, m);
        free(f2);
        free(mat);
        ck_assert_int_eq(effml_adapter_phm_set_path(ctx, l, EFFML_ADAPTER_PHM_PATH_FACTORIZED), EFFML_OK);
        /* W_left frozen, no dx: y and the other gradients are the same bits */
        float *full = lphm_run(ctx, l, b, 1, &n1);
        ck_assert_int_eq(effml_layer_set_trainable(ctx, l, "W_left", 0), EFFML_OK);
        float *part = lphm_run(ctx, l, b, 0, &n2);
        ck_assert_int_eq(n2, n1 - b * in);
        ck_assert(memcmp(part, full, (size_t)(b * out) * sizeof(float)) == 0);
        int64_t off_f = b * out + b * in, off_p = b * out;
        for (int32_t i = 0; i < effml_layer_num_params(l); ++i) {
          int64_t ne = effml_tensor_numel(effml_layer_param_grad(l, i));
          if (strcmp(effml_layer_param_name(l, i), "W_left") == 0) {
            for (int64_t k = 0; k < ne; ++k) ck_assert(part[off_p + k] == 0.0f); /* frozen: untouched */
          } else {
            ck_assert_msg(memcmp(part + off_p, full + off_f, (size_t)ne * sizeof(float)) == 0,
                          "case %d: grad %s differs with W_left frozen", c, effml_layer_param_name(l, i));
          }
          off_f += ne;
          off_p += ne;
        }
        free(full);
        free(part);
      } else {
        ck_assert_int_eq(n1, nref);
        ck_assert_msg(memcmp(fact, ref, (size_t)n1 * sizeof(float)) == 0, "case %d: 3 threads differ from 1", c);
        free(fact);
      }
      effml_layer_free(l);
      effml_context_free(ctx);
    }
    free(ref);
  }
}
END_TEST

START_TEST(test_threads_same_result) {
  float *first = NULL;
  for (int32_t th = 1; th <= 3; ++th) {
    effml_context *ctx = tu_ctx(42);
    effml_context_set_num_threads(ctx, th);
    effml_phm_rule *A = NULL;
    effml_phm_rule_create(ctx, 4, 0.3, &A);
    effml_adapter_options ao;
    effml_adapter_options_init(&ao);
    ao.bottleneck = 8;
    effml_layer *l = NULL;
    ck_assert_int_eq(effml_adapter_create(ctx, 64, &ao, A, &l), EFFML_OK);
    effml_phm_rule_free(A);
    effml_tensor *x = tu_f32(ctx, 300, 64, NULL), *y = tu_f32(ctx, 300, 64, NULL), *dx = tu_f32(ctx, 300, 64, NULL);
    tu_fill_uniform(x, 9, -1, 1);
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
    ck_assert_int_eq(effml_layer_backward(ctx, l, x, dx), EFFML_OK);
    const float *yy = effml_tensor_data_const(y);
    const float *ga = effml_tensor_data_const(effml_layer_param_grad(l, param_index(l, "phm_rule")));
    if (!first) {
      first = malloc((300 * 64 + 64) * sizeof(float));
      memcpy(first, yy, 300 * 64 * sizeof(float));
      memcpy(first + 300 * 64, ga, 64 * sizeof(float));
    } else {
      ck_assert(memcmp(first, yy, 300 * 64 * sizeof(float)) == 0);
      ck_assert(memcmp(first + 300 * 64, ga, 64 * sizeof(float)) == 0);
    }
    effml_tensor_free(x);
    effml_tensor_free(y);
    effml_tensor_free(dx);
    effml_layer_free(l);
    effml_context_free(ctx);
  }
  free(first);
}
END_TEST

/* ---------------------------------------------------------------- counts and init */

START_TEST(test_param_counts) {
  effml_context *ctx = tu_ctx(10);
  effml_adapter_options o;
  effml_adapter_options_init(&o);
  o.bottleneck = 24; /* T5-base k 768, d 24, n 4, r 1 */
  int64_t per = 0;
  ck_assert_int_eq(effml_adapter_count_params(ctx, 768, &o, 1, 1, &per), EFFML_OK);
  ck_assert_int_eq(per, 2376);
  ck_assert_int_eq(24 * per + 64 + 47616, 104704); /* Compacter++ T5-base anchor: 0.0470 % */
  ck_assert_int_eq(48 * per + 64 + 47616, 161728); /* Compacter */
  /* the layer holds exactly what the function counts (+ the rule, once) */
  effml_phm_rule *A = NULL;
  effml_phm_rule_create(ctx, 4, 1e-4, &A);
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_adapter_create(ctx, 768, &o, A, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_count_params(l, 1), per + 64);
  effml_layer_free(l);
  effml_phm_rule_free(A);
  /* paper formulas (section 4), biases excluded */
  for (int64_t L = 1; L <= 24; L += 11) {
    int64_t k = 768, d = 24, n = 4;
    ck_assert_int_eq(effml_adapter_count_params(ctx, k, &o, 1, 0, &per), EFFML_OK);
    ck_assert_int_eq(2 * L * per + n * n * n, 4 * L * (k + d) + n * n * n);
    effml_adapter_options p = o;
    p.projection = EFFML_ADAPTER_PROJ_PHM;
    p.phm_dim = 12;
    ck_assert_int_eq(effml_adapter_count_params(ctx, k, &p, 0, 0, &per), EFFML_OK);
    ck_assert_int_eq(2 * L * per, 4 * L * (k * d / 12 + 12 * 12 * 12));
    p.projection = EFFML_ADAPTER_PROJ_DENSE;
    ck_assert_int_eq(effml_adapter_count_params(ctx, k, &p, 0, 0, &per), EFFML_OK);
    ck_assert_int_eq(2 * L * per, 2 * L * (2 * k * d)); /* Adapter 2L(2kd) */
  }
  /* PHM-Adapter n 12: 48 adapters with biases + T5 LNs = 398,976 */
  effml_adapter_options p = o;
  p.projection = EFFML_ADAPTER_PROJ_PHM;
  p.phm_dim = 12;
  ck_assert_int_eq(effml_adapter_count_params(ctx, 768, &p, 0, 1, &per), EFFML_OK);
  ck_assert_int_eq(48 * per + 47616, 398976);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_init_statistics) {
  effml_context *ctx = tu_ctx(11);
  effml_phm_rule *A = NULL;
  ck_assert_int_eq(effml_phm_rule_create(ctx, 4, 1e-4, &A), EFFML_OK);
  const float *a = effml_tensor_data_const(effml_phm_rule_value(A));
  double s2 = 0;
  for (int i = 0; i < 64; ++i) s2 += (double)a[i] * a[i];
  ck_assert(sqrt(s2 / 64) > 0.5e-4 && sqrt(s2 / 64) < 1.5e-4);
  effml_adapter_phm_options o;
  effml_adapter_phm_options_init(&o);
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 768, 24, &o, A, &l), EFFML_OK);
  effml_phm_rule_free(A);
  /* W_left[i] 192x1: bound sqrt(12/193); W_right[i] 1x6: bound sqrt(12/7) */
  const float *wl = effml_tensor_data_const(effml_layer_param(l, param_index(l, "W_left")));
  const float *wr = effml_tensor_data_const(effml_layer_param(l, param_index(l, "W_right")));
  double bl = sqrt(12.0 / 193), br = sqrt(12.0 / 7), ml = 0, mr = 0;
  for (int i = 0; i < 768; ++i) ml = fmax(ml, fabs(wl[i]));
  for (int i = 0; i < 24; ++i) mr = fmax(mr, fabs(wr[i]));
  ck_assert(ml <= bl && ml > 0.9 * bl);
  ck_assert(mr <= br && mr > 0.5 * br);
  const float *b = effml_tensor_data_const(effml_layer_param(l, param_index(l, "b")));
  for (int i = 0; i < 24; ++i) ck_assert(b[i] == 0.0f);
  effml_layer_free(l);
  /* same seed, same adapter */
  effml_context *c1 = tu_ctx(77), *c2 = tu_ctx(77);
  effml_layer *l1 = NULL, *l2 = NULL;
  effml_adapter_phm_create(c1, 16, 8, &o, NULL, &l1);
  effml_adapter_phm_create(c2, 16, 8, &o, NULL, &l2);
  for (int32_t i = 0; i < effml_layer_num_params(l1); ++i)
    ck_assert(memcmp(effml_tensor_data_const(effml_layer_param(l1, i)),
                     effml_tensor_data_const(effml_layer_param(l2, i)),
                     effml_tensor_nbytes(effml_layer_param(l1, i))) == 0);
  effml_layer_free(l1);
  effml_layer_free(l2);
  effml_context_free(c1);
  effml_context_free(c2);
  effml_context_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- bad input */

START_TEST(test_bad_input) {
  effml_context *ctx = tu_ctx(12);
  effml_adapter_phm_options o;
  effml_adapter_phm_options_init(&o);
  effml_layer *l = (effml_layer *)0x1;
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 10, 8, &o, NULL, &l), EFFML_E_SHAPE);
  ck_assert(strstr(effml_context_last_error(ctx), "in_features=10") != NULL);
  ck_assert(strstr(effml_context_last_error(ctx), "phm_dim=4") != NULL);
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 8, 6, &o, NULL, &l), EFFML_E_SHAPE);
  ck_assert(strstr(effml_context_last_error(ctx), "out_features=6") != NULL);
  ck_assert(l == (effml_layer *)0x1); /* untouched */
  o.rank = 0;
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 8, 8, &o, NULL, &l), EFFML_E_INVALID_ARG);
  ck_assert(strstr(effml_context_last_error(ctx), "rank=0") != NULL);
  o.rank = 1;
  o.w_init = 9;
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 8, 8, &o, NULL, &l), EFFML_E_INVALID_ARG);
  o.w_init = 0;
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 0, 8, &o, NULL, &l), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 8, 8, NULL, NULL, NULL), EFFML_E_INVALID_ARG);
  effml_phm_rule *A = NULL;
  ck_assert_int_eq(effml_phm_rule_create(ctx, 0, 1e-4, &A), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_phm_rule_create(ctx, 3, -1, &A), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_phm_rule_create(ctx, 3, 1e-4, &A), EFFML_OK);
  ck_assert_int_eq(effml_adapter_phm_create(ctx, 8, 9, &o, A, &l), EFFML_E_SHAPE); /* rule's n = 3 */
  effml_phm_rule_free(A);

  effml_adapter_options ao;
  effml_adapter_options_init(&ao);
  ao.reduction_factor = 100;
  ck_assert_int_eq(effml_adapter_create(ctx, 64, &ao, NULL, &l), EFFML_E_SHAPE);
  ao.reduction_factor = 32;
  ao.bottleneck = 6; /* n 4 does not divide 6 */
  ck_assert_int_eq(effml_adapter_create(ctx, 64, &ao, NULL, &l), EFFML_E_SHAPE);
  ao.bottleneck = 8;
  ao.rank = 0;
  ck_assert_int_eq(effml_adapter_create(ctx, 64, &ao, NULL, &l), EFFML_E_INVALID_ARG);
  ao.rank = 1;
  ao.activation = 99;
  ck_assert_int_eq(effml_adapter_create(ctx, 64, &ao, NULL, &l), EFFML_E_INVALID_ARG);
  ao.activation = EFFML_LAYER_ACT_GELU;
  int64_t cnt;
  ck_assert_int_eq(effml_adapter_count_params(ctx, 64, &ao, 0, 0, &cnt), EFFML_OK);

  /* shape mismatch at forward/backward; backward before forward */
  ck_assert_int_eq(effml_adapter_create(ctx, 64, &ao, NULL, &l), EFFML_OK);
  effml_tensor *x = tu_f32(ctx, 2, 60, NULL), *y = tu_f32(ctx, 2, 64, NULL), *x2 = tu_f32(ctx, 2, 64, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_layer_backward(ctx, l, y, x2), EFFML_E_STATE);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x2, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, l, y, x2), EFFML_E_STATE); /* infer keeps nothing */
  ck_assert_int_eq(effml_adapter_phm_set_path(ctx, l, 0), EFFML_E_INVALID_ARG); /* block, not phm */
  ck_assert_int_eq(effml_adapter_phm_set_path(ctx, effml_adapter_down(l), 7), EFFML_E_INVALID_ARG);
  effml_tensor *H = tu_f32(ctx, 64, 7, NULL);
  ck_assert_int_eq(effml_adapter_phm_materialize(ctx, effml_adapter_down(l), H), EFFML_E_SHAPE);
  effml_tensor_free(H);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(x2);
  effml_layer_free(l);

  /* LoRA / LoKr */
  effml_layer *d = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 8, 4, 1, &d), EFFML_OK);
  effml_adapter_lora_options lo;
  effml_adapter_lora_options_init(&lo);
  lo.rank = 0;
  ck_assert_int_eq(effml_adapter_lora_create(ctx, d, &lo, &l), EFFML_E_INVALID_ARG);
  ck_assert(strstr(effml_context_last_error(ctx), "rank=0") != NULL);
  lo.rank = 2;
  lo.alpha = NAN;
  ck_assert_int_eq(effml_adapter_lora_create(ctx, d, &lo, &l), EFFML_E_INVALID_ARG);
  effml_adapter_lokr_options ko;
  effml_adapter_lokr_options_init(&ko);
  ko.rank = 0;
  ck_assert_int_eq(effml_adapter_lokr_create(ctx, d, &ko, &l), EFFML_E_INVALID_ARG);
  effml_layer *act = NULL;
  ck_assert_int_eq(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &act), EFFML_OK);
  ck_assert_int_eq(effml_adapter_lora_create(ctx, act, NULL, &l), EFFML_E_INVALID_ARG); /* no "weight" */
  effml_layer_free(act);
  ck_assert_int_eq(effml_adapter_lora_merge(ctx, d), EFFML_E_INVALID_ARG);
  effml_layer_free(d); /* still ours after the failures */
  int64_t m, n;
  ck_assert_int_eq(effml_adapter_lokr_factorization(0, -1, &m, &n), EFFML_E_INVALID_ARG);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_alloc_failures) {
  /* every allocation of building + running a block fails in turn: clean errors, no leaks */
  for (int64_t k = 1; k < 400; ++k) {
    tu_failing_alloc fa = {k, 0, 0};
    effml_context *ctx = tu_ctx_failing(&fa);
    effml_phm_rule *A = NULL;
    effml_layer *l = NULL;
    effml_tensor *x = NULL, *y = NULL, *dx = NULL;
    int64_t shape[2] = {3, 16};
    effml_status st = effml_phm_rule_create(ctx, 2, 1e-4, &A);
    if (st == EFFML_OK) {
      effml_adapter_options ao;
      effml_adapter_options_init(&ao);
      ao.bottleneck = 4;
      st = effml_adapter_create(ctx, 16, &ao, A, &l);
      effml_phm_rule_free(A);
    }
    if (st == EFFML_OK) st = effml_tensor_create(ctx, EFFML_F32, 2, shape, &x);
    if (st == EFFML_OK) st = effml_tensor_create(ctx, EFFML_F32, 2, shape, &y);
    if (st == EFFML_OK) st = effml_tensor_create(ctx, EFFML_F32, 2, shape, &dx);
    if (st == EFFML_OK) st = effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN);
    if (st == EFFML_OK) st = effml_layer_backward(ctx, l, y, dx);
    ck_assert(st == EFFML_OK || st == EFFML_E_NOMEM);
    effml_tensor_free(x);
    effml_tensor_free(y);
    effml_tensor_free(dx);
    effml_layer_free(l);
    effml_context_free(ctx);
    ck_assert_int_eq(fa.live, 0);
    if (st == EFFML_OK) break;
  }
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("adapter");
  TCase *t = tcase_create("core");
  tcase_add_test(t, test_lphm_reference_both_paths);
  tcase_add_test(t, test_phm_reference_both_paths);
  tcase_add_test(t, test_adapter_block_reference);
  tcase_add_test(t, test_lora_reference);
  tcase_add_test(t, test_lokr_reference);
  tcase_add_test(t, test_fd_lphm_phm);
  tcase_add_test(t, test_fd_shared_rule_two_layers);
  tcase_add_test(t, test_fd_block_variants_lora_lokr);
  tcase_add_test(t, test_factorized_equals_materialized);
  tcase_add_test(t, test_threads_same_result);
  tcase_add_test(t, test_lphm_row_kernels);
  tcase_add_test(t, test_param_counts);
  tcase_add_test(t, test_init_statistics);
  tcase_add_test(t, test_bad_input);
  tcase_add_test(t, test_alloc_failures);
  suite_add_tcase(s, t);
  return s;
}

int main(void) {
  int failed = tu_run(suite());
  effml_safetensors_free(REF);
  effml_context_free(RCTX);
  return failed ? 1 : 0;
}
