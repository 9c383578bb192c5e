/* The generic layer interface and the sequential container (layer.h):
 * parameter naming and mirroring, state errors, width checks, save/load
 * (all-or-nothing, strict), and concurrent inference on one shared model. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

static effml_layer *mlp(effml_context *ctx) {
  effml_layer *m, *l;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &m), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 6, 5, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_TANH, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 5, 3, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  return m;
}

START_TEST(test_names_and_widths) {
  effml_context *ctx = tu_ctx(1);
  effml_layer *m = mlp(ctx);
  ck_assert_int_eq(effml_layer_num_params(m), 4);
  ck_assert_str_eq(effml_layer_param_name(m, 0), "0.weight");
  ck_assert_str_eq(effml_layer_param_name(m, 1), "0.bias");
  ck_assert_str_eq(effml_layer_param_name(m, 2), "2.weight");
  ck_assert_ptr_null(effml_layer_param_name(m, 4));
  ck_assert_int_eq(effml_layer_in_features(m), 6);
  ck_assert_int_eq(effml_layer_out_features(m), 3);
  ck_assert_int_eq(effml_layer_count_params(m, 0), 6 * 5 + 5 + 5 * 3 + 3);
  /* The container's entries are the children's tensors, not copies. */
  ck_assert_ptr_eq(effml_layer_param(m, 2), effml_layer_param(effml_layer_sequential_get(m, 2), 0));
  /* Freezing through the container freezes the child. */
  ck_assert_int_eq(effml_layer_set_trainable(ctx, m, "0.weight", 0), EFFML_OK);
  ck_assert_int_eq(effml_layer_param_trainable(effml_layer_sequential_get(m, 0), 0), 0);
  ck_assert_int_eq(effml_layer_count_params(m, 1), 5 + 5 * 3 + 3);
  ck_assert_int_eq(effml_layer_set_trainable(ctx, m, "nope", 0), EFFML_E_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "nope"));
  /* A child whose width disagrees is refused and stays the caller's. */
  effml_layer *bad;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 4, 2, 1, &bad), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, bad), EFFML_E_SHAPE);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "in_features=4"));
  effml_layer_free(bad);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, m), EFFML_E_INVALID_ARG);
  /* A layer already owned by a container cannot be added again (double free). */
  effml_layer *again = effml_layer_sequential_get(m, 1), *other;
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, again), EFFML_E_STATE);
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &other), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, other, again), EFFML_E_STATE);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "already owned"));
  ck_assert_int_eq(effml_layer_sequential_count(other), 0);
  effml_layer_free(other);
  effml_layer_free(m);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_state_and_shapes) {
  effml_context *ctx = tu_ctx(2);
  effml_layer *m = mlp(ctx);
  effml_tensor *x = tu_f32(ctx, 4, 6, NULL), *y = tu_f32(ctx, 4, 3, NULL);
  effml_tensor *y_bad = tu_f32(ctx, 4, 2, NULL), *x_bad = tu_f32(ctx, 4, 7, NULL);
  tu_fill_uniform(x, 3, -1, 1);
  /* backward before any training forward */
  ck_assert_int_eq(effml_layer_backward(ctx, m, y, NULL), EFFML_E_STATE);
  ck_assert_int_eq(effml_layer_forward(ctx, m, x_bad, y, EFFML_LAYER_MODE_TRAIN), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_layer_forward(ctx, m, x, y_bad, EFFML_LAYER_MODE_TRAIN), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_layer_forward(ctx, m, x, y, 7), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_layer_forward(ctx, m, x, x, EFFML_LAYER_MODE_TRAIN), EFFML_E_SHAPE);
  /* inference keeps nothing: backward still refused */
  ck_assert_int_eq(effml_layer_forward(ctx, m, x, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, m, y, NULL), EFFML_E_STATE);
  /* train forward = infer forward, then one backward is allowed */
  float yi[12];
  memcpy(yi, effml_tensor_data(y), sizeof yi);
  ck_assert_int_eq(effml_layer_forward(ctx, m, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert(memcmp(yi, effml_tensor_data(y), sizeof yi) == 0);
  effml_tensor *dy = tu_f32(ctx, 4, 3, NULL), *dx = tu_f32(ctx, 4, 6, NULL);
  tu_fill_uniform(dy, 4, -1, 1);
  effml_layer_zero_grad(m);
  ck_assert_int_eq(effml_layer_backward(ctx, m, dy, dx), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, m, dy, dx), EFFML_E_STATE);
  effml_tensor *dy_bad = tu_f32(ctx, 3, 3, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, m, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, m, dy_bad, dx), EFFML_E_SHAPE);
  effml_tensor_free(dy_bad);
  effml_tensor_free(dy); effml_tensor_free(dx);
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(x_bad); effml_tensor_free(y_bad);
  effml_layer_free(m);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_save_load) {
  effml_context *ctx = tu_ctx(5);
  effml_layer *a = mlp(ctx), *b = mlp(ctx); /* different random weights */
  char path[512], path2[512];
  snprintf(path, sizeof path, "%s/test_layer_model.safetensors", EFFML_TEST_TMP);
  snprintf(path2, sizeof path2, "%s/test_layer_other.safetensors", EFFML_TEST_TMP);
  ck_assert_int_eq(effml_layer_save(ctx, a, path, "model."), EFFML_OK);
  ck_assert_int_eq(effml_layer_load(ctx, b, path, "model.", 0xf0u), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_layer_load(ctx, b, path, "model.", EFFML_LAYER_LOAD_STRICT), EFFML_OK);
  for (int32_t i = 0; i < effml_layer_num_params(a); ++i)
    ck_assert(memcmp(effml_tensor_data(effml_layer_param(a, i)),
                     effml_tensor_data(effml_layer_param(b, i)),
                     effml_tensor_nbytes(effml_layer_param(a, i))) == 0);
  /* wrong prefix: missing key, and nothing changed */
  effml_layer *c = mlp(ctx);
  float before[30];
  memcpy(before, effml_tensor_data(effml_layer_param(c, 0)), sizeof before);
  ck_assert_int_eq(effml_layer_load(ctx, c, path, "other.", 0), EFFML_E_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "other.0.weight"));
  /* a file whose last layer has another shape: refused, all-or-nothing */
  effml_layer *d, *l;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &d), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 6, 5, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, d, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_TANH, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, d, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 5, 4, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, d, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_save(ctx, d, path2, NULL), EFFML_OK);
  ck_assert_int_eq(effml_layer_load(ctx, c, path2, NULL, 0), EFFML_E_SHAPE);
  ck_assert(memcmp(before, effml_tensor_data(effml_layer_param(c, 0)), sizeof before) == 0);
  /* strict: a file tensor that matches no parameter */
  effml_layer *small;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &small), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 6, 5, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, small, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_load(ctx, small, path, "model.", 0), EFFML_OK);
  ck_assert_int_eq(effml_layer_load(ctx, small, path, "model.", EFFML_LAYER_LOAD_STRICT), EFFML_E_NOT_FOUND);
  effml_layer_free(small);
  effml_layer_free(d);
  effml_layer_free(a); effml_layer_free(b); effml_layer_free(c);
  remove(path);
  remove(path2);
  effml_context_free(ctx);
}
END_TEST

typedef struct {
  effml_layer *model;
  const effml_tensor *x;
  float out[64 * 3];
  effml_status st;
} infer_job;

static void *infer_thread(void *p) {
  infer_job *j = (infer_job *)p;
  effml_context *ctx;
  if (effml_context_create(NULL, &ctx) != EFFML_OK) {
    j->st = EFFML_E_NOMEM;
    return NULL;
  }
  int64_t shape[2] = {64, 3};
  effml_tensor *y;
  j->st = effml_tensor_wrap(ctx, EFFML_F32, 2, shape, NULL, j->out, sizeof j->out, 0, &y);
  for (int it = 0; j->st == EFFML_OK && it < 50; ++it)
    j->st = effml_layer_forward(ctx, j->model, j->x, y, EFFML_LAYER_MODE_INFER);
  effml_tensor_free(y);
  effml_context_free(ctx);
  return NULL;
}

START_TEST(test_shared_inference) {
  effml_context *ctx = tu_ctx(9);
  effml_layer *m = mlp(ctx);
  effml_tensor *x = tu_f32(ctx, 64, 6, NULL), *y = tu_f32(ctx, 64, 3, NULL);
  tu_fill_uniform(x, 11, -2, 2);
  ck_assert_int_eq(effml_layer_forward(ctx, m, x, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
  infer_job jobs[3];
  pthread_t t[3];
  for (int k = 0; k < 3; ++k) {
    memset(&jobs[k], 0, sizeof jobs[k]);
    jobs[k].model = m;
    jobs[k].x = x;
    ck_assert_int_eq(pthread_create(&t[k], NULL, infer_thread, &jobs[k]), 0);
  }
  for (int k = 0; k < 3; ++k) {
    pthread_join(t[k], NULL);
    ck_assert_int_eq(jobs[k].st, EFFML_OK);
    ck_assert(memcmp(jobs[k].out, effml_tensor_data(y), sizeof jobs[k].out) == 0);
  }
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_layer_free(m);
  effml_context_free(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("layer");
  TCase *tc = tcase_create("sequential");
  tcase_add_test(tc, test_names_and_widths);
  tcase_add_test(tc, test_state_and_shapes);
  tcase_add_test(tc, test_save_load);
  tcase_add_test(tc, test_shared_inference);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
