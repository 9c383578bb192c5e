/* Progress and cancellation of the long calls, and errors that name the call.
 *
 * For each long call: a cancel request made before the call stops it at its
 * first check with EFFML_E_CANCELLED and no output published; a progress
 * callback sees the public call's name and increasing counts, and stopping
 * it part-way gives EFFML_E_CANCELLED; withdrawing the request lets the same
 * call succeed.  Then a table of bad calls: every message starts with the
 * name of the function called. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

typedef struct {
  int64_t calls;       /* callback invocations */
  int64_t stop_at;     /* return "stop" at this invocation (1-based); 0 = never */
  int64_t last_done;   /* monotonicity check */
  int monotone;
  char call[64];
} watch;

static int32_t on_progress(void *user_data, const char *call, int64_t done, int64_t total) {
  watch *w = (watch *)user_data;
  ++w->calls;
  if (w->calls == 1) snprintf(w->call, sizeof w->call, "%s", call);
  if (done < w->last_done && strcmp(call, w->call) == 0) w->monotone = 0;
  if (total > 0 && done > total) w->monotone = 0;
  w->last_done = done;
  return w->stop_at > 0 && w->calls >= w->stop_at;
}

static void watch_reset(watch *w, int64_t stop_at) {
  memset(w, 0, sizeof *w);
  w->stop_at = stop_at;
  w->monotone = 1;
}

static int starts_with(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The message of a cancelled call: "<call>: cancelled after ...". */
static void assert_cancelled(effml_context *ctx, effml_status st, const char *call) {
  ck_assert_int_eq(st, EFFML_E_CANCELLED);
  char want[128];
  snprintf(want, sizeof want, "%s: cancelled after ", call);
  ck_assert_msg(starts_with(effml_context_last_error(ctx), want), "message '%s' should start with '%s'",
                effml_context_last_error(ctx), want);
}

START_TEST(cancel_flag_and_status) {
  effml_context *ctx = tu_ctx(1);
  ck_assert_int_eq(effml_context_cancel_requested(ctx), 0);
  effml_context_set_cancel(ctx, 1);
  ck_assert_int_eq(effml_context_cancel_requested(ctx), 1);
  effml_context_set_cancel(ctx, 0);
  ck_assert_int_eq(effml_context_cancel_requested(ctx), 0);
  ck_assert_str_eq(effml_status_str(EFFML_E_CANCELLED), "cancelled");
  ck_assert_int_eq(EFFML_E_CANCELLED, -13);
  effml_context_set_cancel(NULL, 1); /* ignored */
  ck_assert_int_eq(effml_context_cancel_requested(NULL), 0);
  effml_context_free(ctx);
}
END_TEST

START_TEST(knn_progress_and_cancel) {
  effml_context *ctx = tu_ctx(1);
  effml_tensor *x = tu_f32(ctx, 6000, 8, NULL);
  tu_fill_uniform(x, 2, -1, 1);
  watch w;
  watch_reset(&w, 0);
  effml_context_set_progress(ctx, on_progress, &w);
  effml_tensor *idx = NULL;
  ck_assert_int_eq(effml_sampler_knn(ctx, x, NULL, 5, &idx, NULL), EFFML_OK);
  ck_assert_int_ge(w.calls, 2); /* 24 query blocks of 256 rows, 8 per round */
  ck_assert_str_eq(w.call, "effml_sampler_knn");
  ck_assert(w.monotone);
  effml_tensor_free(idx);
  /* stop at the second report: nothing published */
  watch_reset(&w, 2);
  idx = NULL;
  effml_tensor *dist = NULL;
  assert_cancelled(ctx, effml_sampler_knn(ctx, x, NULL, 5, &idx, &dist), "effml_sampler_knn");
  ck_assert_ptr_null(idx);
  ck_assert_ptr_null(dist);
  ck_assert_int_eq(w.calls, 2);
  /* a request made beforehand stops it at once; withdrawn, the call runs */
  effml_context_set_progress(ctx, NULL, NULL);
  effml_context_set_cancel(ctx, 1);
  assert_cancelled(ctx, effml_sampler_knn(ctx, x, NULL, 5, &idx, NULL), "effml_sampler_knn");
  ck_assert_ptr_null(idx);
  effml_context_set_cancel(ctx, 0);
  ck_assert_int_eq(effml_sampler_knn(ctx, x, NULL, 5, &idx, NULL), EFFML_OK);
  effml_tensor_free(idx);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

START_TEST(resample_leverage_lewis_cancel) {
  effml_context *ctx = tu_ctx(1);
  effml_tensor *x = tu_f32(ctx, 3000, 6, NULL);
  tu_fill_uniform(x, 3, -1, 1);
  int64_t ys = 3000;
  effml_tensor *y = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, &ys, &y), EFFML_OK);
  int64_t *yy = (int64_t *)effml_tensor_data(y);
  for (int64_t i = 0; i < 3000; ++i) yy[i] = i % 10 == 0;
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  effml_tensor *xr = NULL, *yr = NULL;
  watch w;
  watch_reset(&w, 1);
  effml_context_set_progress(ctx, on_progress, &w);
  assert_cancelled(ctx, effml_sampler_resample(ctx, &o, x, y, &xr, &yr), "effml_sampler_resample");
  ck_assert_ptr_null(xr);
  ck_assert_ptr_null(yr);
  ck_assert_str_eq(w.call, "effml_sampler_resample"); /* the public call, not its inner kNN */
  /* stop at each later report in turn: always cancelled, never an output */
  for (int64_t k = 2; k <= 4; ++k) {
    watch_reset(&w, k);
    effml_status st = effml_sampler_resample(ctx, &o, x, y, &xr, &yr);
    if (st == EFFML_OK) { /* fewer reports than k: the run completed */
      ck_assert_int_lt(w.calls, k);
      effml_tensor_free(xr);
      effml_tensor_free(yr);
      xr = yr = NULL;
    } else {
      assert_cancelled(ctx, st, "effml_sampler_resample");
      ck_assert_ptr_null(xr);
    }
  }
  watch_reset(&w, 0);
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(xr, 0), 2700 * 2);
  ck_assert(w.monotone);
  effml_tensor_free(xr);
  effml_tensor_free(yr);

  effml_sampler_leverage_options lo;
  effml_sampler_leverage_options_init(&lo);
  effml_tensor *tau = NULL, *lw = NULL;
  watch_reset(&w, 1);
  assert_cancelled(ctx, effml_sampler_leverage_scores(ctx, &lo, x, &tau), "effml_sampler_leverage_scores");
  ck_assert_ptr_null(tau);
  int64_t iters = -7;
  watch_reset(&w, 3); /* Lewis weights: stop during the iterations */
  assert_cancelled(ctx, effml_sampler_lewis_weights(ctx, &lo, x, 1.0, &lw, &iters),
                   "effml_sampler_lewis_weights");
  ck_assert_ptr_null(lw);
  ck_assert_int_eq(iters, -7);
  watch_reset(&w, 0);
  ck_assert_int_eq(effml_sampler_lewis_weights(ctx, &lo, x, 1.0, &lw, &iters), EFFML_OK);
  ck_assert_int_ge(w.calls, 2);
  ck_assert_str_eq(w.call, "effml_sampler_lewis_weights");
  effml_tensor_free(lw);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* SMOTE's within-class kNN search is a cancellation point too: with a minority class of
 * 4000 rows it reports several times (repeating done = 0 of the output rows, so done never
 * goes backwards) before the first output row, and a stop there publishes nothing. */
START_TEST(smote_knn_phase_cancel) {
  effml_context *ctx = tu_ctx(1);
  const int64_t n = 12000;
  effml_tensor *x = tu_f32(ctx, n, 8, NULL);
  tu_fill_uniform(x, 7, -1, 1);
  effml_tensor *y = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, &n, &y), EFFML_OK);
  int64_t *yy = (int64_t *)effml_tensor_data(y);
  for (int64_t i = 0; i < n; ++i) yy[i] = i % 3 == 0; /* 4000 minority rows */
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  effml_tensor *xr = NULL, *yr = NULL;
  watch w;
  watch_reset(&w, 0);
  effml_context_set_progress(ctx, on_progress, &w);
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_OK);
  const int64_t reports = w.calls;
  ck_assert_int_ge(reports, 3); /* >= 2 rounds of the kNN search, then the output rows */
  ck_assert(w.monotone);
  effml_tensor_free(xr);
  effml_tensor_free(yr);
  xr = yr = NULL;
  watch_reset(&w, 2); /* the second report is inside the kNN search */
  assert_cancelled(ctx, effml_sampler_resample(ctx, &o, x, y, &xr, &yr), "effml_sampler_resample");
  ck_assert_ptr_null(xr);
  ck_assert_ptr_null(yr);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "cancelled after 0 output rows"));
  ck_assert_int_eq(w.calls, 2);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

START_TEST(fit_cancel_keeps_last_step) {
  effml_context *ctx = tu_ctx(3);
  effml_tensor *x = tu_f32(ctx, 512, 4, NULL);
  tu_fill_uniform(x, 4, -1, 1);
  int64_t n = 512;
  effml_tensor *y = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &n, &y), EFFML_OK);
  int32_t *yy = (int32_t *)effml_tensor_data(y);
  const float *xx = (const float *)effml_tensor_data_const(x);
  for (int64_t i = 0; i < n; ++i) yy[i] = xx[i * 4] > 0;
  effml_layer *m = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 4, 2, 1, &m), EFFML_OK);
  effml_optimizer_options oo;
  effml_optimizer_options_init(&oo);
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(ctx, &oo, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(ctx, opt, m), EFFML_OK);
  effml_train_options fo;
  effml_train_options_init(&fo);
  fo.epochs = 3;
  fo.batch_size = 64; /* 8 steps per epoch, 24 in all */
  watch w;
  watch_reset(&w, 6); /* stop before the 6th step */
  effml_context_set_progress(ctx, on_progress, &w);
  double loss = -1;
  assert_cancelled(ctx, effml_train_classifier(ctx, m, opt, x, y, &fo, &loss), "effml_train_classifier");
  ck_assert_double_eq(loss, -1); /* no final loss published */
  ck_assert_int_eq(effml_optimizer_steps(opt), 5); /* the 5 completed steps stay */
  ck_assert_str_eq(w.call, "effml_train_classifier");
  ck_assert(w.monotone);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "5 of 24 steps"));
  effml_context_set_progress(ctx, NULL, NULL);
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x, y, &fo, &loss), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_steps(opt), 5 + 24);
  effml_optimizer_free(opt);
  effml_layer_free(m);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

START_TEST(cascade_and_file_loads_cancel) {
  effml_context *ctx = tu_ctx(1);
  effml_cascade_options co;
  effml_cascade_options_init(&co);
  co.num_classes = 3;
  effml_cascade *c = NULL;
  ck_assert_int_eq(effml_cascade_create(ctx, &co, &c), EFFML_OK);
  effml_tensor *l0 = tu_f32(ctx, 40, 3, NULL), *l1 = tu_f32(ctx, 40, 3, NULL);
  tu_fill_uniform(l0, 5, -2, 2);
  tu_fill_uniform(l1, 6, -2, 2);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, l0, 1.0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, l1, 2.0), EFFML_OK);
  effml_cascade_workspace *ws = NULL;
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
  int64_t n = 40;
  effml_tensor *pred = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &n, &pred), EFFML_OK);
  memset(effml_tensor_data(pred), 0x5A, effml_tensor_nbytes(pred));
  watch w;
  watch_reset(&w, 2); /* stop before stage 1 */
  effml_context_set_progress(ctx, on_progress, &w);
  assert_cancelled(ctx, effml_cascade_run(ctx, c, ws, n, NULL, pred, NULL, NULL, NULL), "effml_cascade_run");
  const unsigned char *pb = (const unsigned char *)effml_tensor_data_const(pred);
  for (size_t i = 0; i < effml_tensor_nbytes(pred); ++i) ck_assert_int_eq(pb[i], 0x5A);
  watch_reset(&w, 0);
  ck_assert_int_eq(effml_cascade_run(ctx, c, ws, n, NULL, pred, NULL, NULL, NULL), EFFML_OK);
  ck_assert_int_eq(w.calls, 2);
  ck_assert_str_eq(w.call, "effml_cascade_run");

  /* .npy and IDX loads: a request made beforehand stops them, no tensor */
  char npy[512], idx[512];
  snprintf(npy, sizeof npy, "%s/cancel_test.npy", EFFML_TEST_TMP);
  snprintf(idx, sizeof idx, "%s/cancel_test.idx", EFFML_TEST_TMP);
  effml_context_set_progress(ctx, NULL, NULL);
  ck_assert_int_eq(effml_io_npy_save(ctx, npy, l0), EFFML_OK);
  FILE *f = fopen(idx, "wb");
  ck_assert_ptr_nonnull(f);
  const unsigned char head[8] = {0, 0, 0x08, 1, 0, 0, 0, 3}, data[3] = {7, 8, 9};
  ck_assert_uint_eq(fwrite(head, 1, 8, f), 8);
  ck_assert_uint_eq(fwrite(data, 1, 3, f), 3);
  fclose(f);
  effml_tensor *t = NULL;
  effml_context_set_cancel(ctx, 1);
  assert_cancelled(ctx, effml_io_npy_load(ctx, npy, &t), "effml_io_npy_load");
  ck_assert_ptr_null(t);
  assert_cancelled(ctx, effml_data_idx_load(ctx, idx, &t), "effml_data_idx_load");
  ck_assert_ptr_null(t);
  effml_context_set_cancel(ctx, 0);
  ck_assert_int_eq(effml_data_idx_load(ctx, idx, &t), EFFML_OK);
  ck_assert_int_eq(((const uint8_t *)effml_tensor_data_const(t))[2], 9);
  effml_tensor_free(t);
  ck_assert_int_eq(effml_io_npy_load(ctx, npy, &t), EFFML_OK);
  ck_assert_int_eq(memcmp(effml_tensor_data_const(t), effml_tensor_data_const(l0), effml_tensor_nbytes(l0)), 0);
  effml_tensor_free(t);
  remove(npy);
  remove(idx);
  effml_tensor_free(pred);
  effml_tensor_free(l0);
  effml_tensor_free(l1);
  effml_cascade_workspace_free(ws);
  effml_cascade_free(c);
  effml_context_free(ctx);
}
END_TEST

/* Bad calls across the areas: the message starts with the function called. */
START_TEST(errors_name_the_call) {
  effml_context *ctx = tu_ctx(1);
  effml_tensor *x = tu_f32(ctx, 4, 3, NULL), *y5 = tu_f32(ctx, 4, 5, NULL);
  int64_t four = 4;
  effml_tensor *li = NULL, *out = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &four, &li), EFFML_OK);
  effml_layer *dense = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 3, 2, 1, &dense), EFFML_OK);
  effml_sampler_resample_options ro;
  effml_sampler_resample_options_init(&ro);
  ro.method = 99;
  effml_optimizer_options oo;
  effml_optimizer_options_init(&oo);
  oo.lr = -1;
  effml_optimizer *opt = NULL;
  effml_layer *l = NULL;
  double v = 0;
  int64_t shape[2] = {2, 0};
  /* each bad call; its message starts with the call */
#define CHECK_PREFIX(name, expr)                                                              \
  do {                                                                                        \
    effml_context_clear_error(ctx);                                                           \
    ck_assert_int_lt((expr), 0);                                                              \
    ck_assert_msg(starts_with(effml_context_last_error(ctx), name ": "),                      \
                  "message '%s' should start with '%s: '", effml_context_last_error(ctx), name); \
  } while (0)
  CHECK_PREFIX("effml_tensor_create", effml_tensor_create(ctx, EFFML_F32, 2, shape, &out));
  CHECK_PREFIX("effml_tensor_create", effml_tensor_create(ctx, 99, 1, &four, &out));
  CHECK_PREFIX("effml_layer_dense_create", effml_layer_dense_create(ctx, 0, 2, 1, &l));
  CHECK_PREFIX("effml_layer_forward", effml_layer_forward(ctx, dense, li, x, EFFML_LAYER_MODE_INFER));
  CHECK_PREFIX("effml_layer_forward", effml_layer_forward(ctx, dense, x, y5, EFFML_LAYER_MODE_INFER));
  CHECK_PREFIX("effml_layer_activation_create", effml_layer_activation_create(ctx, 42, &l));
  CHECK_PREFIX("effml_optimizer_create", effml_optimizer_create(ctx, &oo, &opt));
  CHECK_PREFIX("effml_train_softmax_cross_entropy", effml_train_softmax_cross_entropy(ctx, x, x, &v, NULL));
  CHECK_PREFIX("effml_metrics_accuracy", effml_metrics_accuracy(ctx, x, x, &v));
  CHECK_PREFIX("effml_sampler_resample", effml_sampler_resample(ctx, &ro, x, li, &out, &out));
  CHECK_PREFIX("effml_sampler_knn", effml_sampler_knn(ctx, x, NULL, 9, &li, NULL));
  CHECK_PREFIX("effml_io_npy_load", effml_io_npy_load(ctx, "/nonexistent/x.npy", &out));
  CHECK_PREFIX("effml_data_idx_load", effml_data_idx_load(ctx, "/nonexistent/x.idx", &out));
  CHECK_PREFIX("effml_tensor_init_normal", effml_tensor_init_normal(ctx, x, 0.0, -1.0));
  CHECK_PREFIX("effml_tensor_reshape", effml_tensor_reshape(ctx, x, 1, &four, &out));
  CHECK_PREFIX("effml_sampler_knn_into", effml_sampler_knn_into(ctx, x, NULL, 2, x, NULL));
#undef CHECK_PREFIX
  /* a failure inside a nested public call keeps both names */
  effml_train_options fo;
  effml_train_options_init(&fo);
  effml_tensor *lab = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &four, &lab), EFFML_OK);
  ((int32_t *)effml_tensor_data(lab))[1] = 7; /* label out of range for 2 classes */
  effml_optimizer_options_init(&oo);
  ck_assert_int_eq(effml_optimizer_create(ctx, &oo, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(ctx, opt, dense), EFFML_OK);
  ck_assert_int_eq(effml_train_classifier(ctx, dense, opt, x, lab, &fo, NULL), EFFML_E_RANGE);
  ck_assert(starts_with(effml_context_last_error(ctx), "effml_train_classifier: "));
  effml_optimizer_free(opt);
  effml_tensor_free(lab);
  effml_layer_free(dense);
  effml_tensor_free(li);
  effml_tensor_free(x);
  effml_tensor_free(y5);
  effml_context_free(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("core_cancel");
  TCase *tc = tcase_create("cancel");
  tcase_add_test(tc, cancel_flag_and_status);
  tcase_add_test(tc, knn_progress_and_cancel);
  tcase_add_test(tc, resample_leverage_lewis_cancel);
  tcase_add_test(tc, smote_knn_phase_cancel);
  tcase_add_test(tc, fit_cancel_keeps_last_step);
  tcase_add_test(tc, cascade_and_file_loads_cancel);
  tcase_add_test(tc, errors_name_the_call);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
