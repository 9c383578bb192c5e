/* Progress and cancellation of the long calls, and errors that name the call.
 *
 * For each long call: a cancel request made before the call stops it at its
 * first check with EFFML_E_CANCELLED and no output published; a progress
 * callback sees the public call's name and increasing counts, and stopping
 * it part-way gives EFFML_E_CANCELLED; withdrawing the request lets the same
 * call succeed.  Then a table of bad calls: every message starts with the
 * name of the function called. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"
/* the documented cancellation intervals (rows per kNN query block, blocks per round, output rows
 * per re-sampling round): the counts below are derived from them and the data sizes */
#include "../lib/sampler/sampler_internal.h"

typedef struct {
  int64_t calls;       /* callback invocations */
  int64_t stop_at;     /* return "stop" at this invocation (1-based); 0 = never */
  int64_t last_done;   /* monotonicity check */
  int64_t last_total;  /* total of the last report */
  int64_t no_total;    /* reports with total == 0 (a poll: SMOTE's within-class kNN rounds) */
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
  w->last_total = total;
  w->no_total += total == 0;
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
  /* three rounds of query blocks with one thread, the last one partial: one report before each */
  const int64_t n = 3 * EFFML__KNN_BLOCKS_PER_ROUND * EFFML__KNN_QBLOCK - EFFML__KNN_QBLOCK / 2;
  const int64_t blocks = (n + EFFML__KNN_QBLOCK - 1) / EFFML__KNN_QBLOCK;
  const int64_t rounds = (blocks + EFFML__KNN_BLOCKS_PER_ROUND - 1) / EFFML__KNN_BLOCKS_PER_ROUND;
  ck_assert_int_eq(rounds, 3);
  effml_tensor *x = tu_f32(ctx, n, 8, NULL);
  tu_fill_uniform(x, 2, -1, 1);
  watch w;
  watch_reset(&w, 0);
  effml_context_set_progress(ctx, on_progress, &w);
  effml_tensor *idx = NULL;
  ck_assert_int_eq(effml_sampler_knn(ctx, x, NULL, 5, &idx, NULL), EFFML_OK);
  ck_assert_int_eq(w.calls, rounds);
  ck_assert_int_eq(w.last_done, (rounds - 1) * EFFML__KNN_BLOCKS_PER_ROUND * EFFML__KNN_QBLOCK);
  ck_assert_int_eq(w.last_total, n);
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
  /* Lewis weights: at least one report per iteration (docs/conventions.md); the uncancelled run
   * gives the count, and a stop at its third report falls during the iterations */
  int64_t iters = -7;
  watch_reset(&w, 0);
  ck_assert_int_eq(effml_sampler_lewis_weights(ctx, &lo, x, 1.0, &lw, &iters), EFFML_OK);
  const int64_t lewis_reports = w.calls;
  ck_assert_int_ge(lewis_reports, iters);
  ck_assert_msg(iters >= 3, "the data converge in %lld iterations: too few to stop during them", (long long)iters);
  ck_assert_str_eq(w.call, "effml_sampler_lewis_weights");
  effml_tensor_free(lw);
  lw = NULL;
  const int64_t iters_done = iters;
  iters = -7;
  watch_reset(&w, 3);
  assert_cancelled(ctx, effml_sampler_lewis_weights(ctx, &lo, x, 1.0, &lw, &iters),
                   "effml_sampler_lewis_weights");
  ck_assert_ptr_null(lw);
  ck_assert_int_eq(iters, -7);
  ck_assert_int_eq(w.calls, 3);
  watch_reset(&w, 0);
  ck_assert_int_eq(effml_sampler_lewis_weights(ctx, &lo, x, 1.0, &lw, &iters), EFFML_OK);
  ck_assert_int_eq(w.calls, lewis_reports); /* the same run again */
  ck_assert_int_eq(iters, iters_done);
  effml_tensor_free(lw);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* SMOTE's within-class kNN search is a cancellation point too: with a minority class of
 * 10000 rows it reports several times (repeating done = 0 of the output rows, so done never
 * goes backwards) before the first output row, and a stop there publishes nothing.  (The
 * search polls between rounds of at least ~2^27 multiply-adds: a class of 4000 x 8 is one
 * round.) */
START_TEST(smote_knn_phase_cancel) {
  effml_context *ctx = tu_ctx(1);
  const int64_t n = 30000;
  effml_tensor *x = tu_f32(ctx, n, 8, NULL);
  tu_fill_uniform(x, 7, -1, 1);
  effml_tensor *y = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, &n, &y), EFFML_OK);
  int64_t *yy = (int64_t *)effml_tensor_data(y);
  for (int64_t i = 0; i < n; ++i) yy[i] = i % 3 == 0; /* 10000 minority rows */
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  effml_tensor *xr = NULL, *yr = NULL;
  watch w;
  watch_reset(&w, 0);
  effml_context_set_progress(ctx, on_progress, &w);
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_OK);
  const int64_t reports = w.calls, polls = w.no_total;
  /* the output rows: one report before each round of EFFML__RESAMPLE_ROUND_ROWS; the rest are
   * the kNN search's polls (total 0), which come first; the stop below needs two of them */
  const int64_t out_rounds = (effml_tensor_dim(xr, 0) + EFFML__RESAMPLE_ROUND_ROWS - 1) / EFFML__RESAMPLE_ROUND_ROWS;
  ck_assert_int_eq(reports, polls + out_rounds);
  ck_assert_msg(polls >= 2, "%lld kNN polls for a class of 10000 x 8: a stop at the second report would not fall "
                "in the search", (long long)polls);
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

/* A step_hook that, at step `at`, writes `value` into *target (a row of x, or a weight). */
typedef struct {
  int64_t at;
  float *target;
  float value;
} poke;

static int32_t poke_hook(void *user_data, int64_t step) {
  poke *p = (poke *)user_data;
  if (step == p->at) *p->target = p->value;
  return 0;
}

/* A NaN/Inf during training is reported with the epoch and the dataset row
 * (the index into x, through the shuffle), not the row within the batch. */
START_TEST(fit_nonfinite_names_dataset_row) {
  effml_context *ctx = tu_ctx(3);
  const int64_t n = 200;
  effml_tensor *x = tu_f32(ctx, n, 4, NULL);
  tu_fill_uniform(x, 8, -1, 1);
  float *xx = (float *)effml_tensor_data(x);
  effml_tensor *y = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &n, &y), EFFML_OK);
  for (int64_t i = 0; i < n; ++i) ((int32_t *)effml_tensor_data(y))[i] = xx[i * 4] > 0;
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
  fo.batch_size = 16; /* 13 steps per epoch: a batch row is < 16 */
  fo.shuffle_seed = 7;
  /* 1. a NaN in x from the start: epoch 0 */
  xx[41 * 4 + 2] = NAN;
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x, y, &fo, NULL), EFFML_E_NUMERIC);
  ck_assert_str_eq(effml_context_last_error(ctx),
                   "effml_train_classifier: epoch 0 (0-based), dataset row 41: x[41, 2]=nan is not finite");
  xx[41 * 4 + 2] = 0.5f;
  /* 2. an Inf written into row 137 after the last step of epoch 0: found in epoch 1 */
  const float keep = xx[137 * 4 + 1];
  poke pk = {13, &xx[137 * 4 + 1], INFINITY};
  fo.step_hook = poke_hook;
  fo.step_hook_user_data = &pk;
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x, y, &fo, NULL), EFFML_E_NUMERIC);
  ck_assert_str_eq(effml_context_last_error(ctx),
                   "effml_train_classifier: epoch 1 (0-based), dataset row 137: x[137, 1]=inf is not finite");
  xx[137 * 4 + 1] = keep;
  /* 3. the model diverges (a NaN weight from step 20): x is finite, the model is named */
  float *w = (float *)effml_tensor_data(effml_layer_param(m, 0));
  pk = (poke){20, &w[3], NAN};
  const int64_t steps0 = effml_optimizer_steps(opt);
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x, y, &fo, NULL), EFFML_E_NUMERIC);
  const char *msg = effml_context_last_error(ctx);
  long long row = -1;
  ck_assert_msg(sscanf(msg, "effml_train_classifier: epoch 1 (0-based), dataset row %lld: logits[", &row) == 1,
                "message '%s'", msg);
  ck_assert(row >= 0 && row < n);
  ck_assert_ptr_nonnull(strstr(msg, "]=nan is not finite at step 21 although the row of x is finite: the model diverged"));
  ck_assert_int_eq(effml_optimizer_steps(opt) - steps0, 20); /* the 20 completed steps */
  effml_optimizer_free(opt);
  effml_layer_free(m);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* effml_train_predict: progress in rows, cancel leaves logits untouched. */
START_TEST(predict_progress_and_cancel) {
  effml_context *ctx = tu_ctx(4);
  const int64_t n = 1000;
  effml_tensor *x = tu_f32(ctx, n, 6, NULL), *lg = tu_f32(ctx, n, 3, NULL), *ref = tu_f32(ctx, n, 3, NULL);
  tu_fill_uniform(x, 9, -1, 1);
  effml_layer *m = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 6, 3, 1, &m), EFFML_OK);
  ck_assert_int_eq(effml_train_predict(ctx, m, x, n, ref), EFFML_OK); /* one batch */
  watch w;
  for (int64_t stop_at = 1; stop_at <= 10; stop_at += 3) {
    memset(effml_tensor_data(lg), 0x5A, effml_tensor_nbytes(lg));
    watch_reset(&w, stop_at);
    effml_context_set_progress(ctx, on_progress, &w);
    assert_cancelled(ctx, effml_train_predict(ctx, m, x, 100, lg), "effml_train_predict");
    ck_assert_int_eq(w.calls, stop_at);
    ck_assert_str_eq(w.call, "effml_train_predict");
    const unsigned char *b = (const unsigned char *)effml_tensor_data_const(lg);
    for (size_t i = 0; i < effml_tensor_nbytes(lg); ++i) ck_assert_int_eq(b[i], 0x5A);
  }
  char want[96];
  snprintf(want, sizeof want, "effml_train_predict: cancelled after %d of 1000 rows", 900);
  ck_assert_str_eq(effml_context_last_error(ctx), want); /* stopped at the 10th report */
  watch_reset(&w, 0);
  ck_assert_int_eq(effml_train_predict(ctx, m, x, 100, lg), EFFML_OK);
  ck_assert_int_eq(w.calls, 10); /* one report per batch, before it */
  ck_assert(w.monotone);
  ck_assert(tu_max_abs_diff_f32(effml_tensor_data(lg), effml_tensor_data(ref), n * 3) <= 1e-6);
  /* one batch: a request made beforehand stops it, logits untouched */
  effml_context_set_progress(ctx, NULL, NULL);
  memset(effml_tensor_data(lg), 0x5A, effml_tensor_nbytes(lg));
  effml_context_set_cancel(ctx, 1);
  assert_cancelled(ctx, effml_train_predict(ctx, m, x, n, lg), "effml_train_predict");
  ck_assert_int_eq(((const unsigned char *)effml_tensor_data_const(lg))[0], 0x5A);
  effml_context_set_cancel(ctx, 0);
  effml_layer_free(m);
  effml_tensor_free(x);
  effml_tensor_free(lg);
  effml_tensor_free(ref);
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

  /* threshold selection (three stages: reports before stages 0 and 1): stopped
   * before stage 1, no rule changes; ensemble predictions: outputs untouched */
  effml_tensor *l2 = tu_f32(ctx, 40, 3, NULL);
  tu_fill_uniform(l2, 7, -2, 2);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, l2, 3.0), EFFML_OK);
  const effml_tensor *val[3] = {l0, l1, l2};
  int32_t rule0 = -1, rule1 = -1;
  double a0, b0, tau0, a1, b1, tau1;
  ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, 0, &rule0, &a0, &b0, &tau0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, 1, &rule1, &a1, &b1, &tau1), EFFML_OK);
  watch_reset(&w, 2);
  assert_cancelled(ctx, effml_cascade_select_thresholds(ctx, c, 3, val, NULL, NULL),
                   "effml_cascade_select_thresholds");
  ck_assert_str_eq(effml_context_last_error(ctx), "effml_cascade_select_thresholds: cancelled after 1 of 2 stages");
  int32_t r = -2;
  double a, b, tau;
  ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, 0, &r, &a, &b, &tau), EFFML_OK);
  ck_assert(r == rule0 && memcmp(&a, &a0, sizeof a) == 0 && memcmp(&b, &b0, sizeof b) == 0 &&
            memcmp(&tau, &tau0, sizeof tau) == 0); /* stage 0's new rule was not published */
  ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, 1, &r, &a, &b, &tau), EFFML_OK);
  ck_assert(r == rule1 && memcmp(&tau, &tau1, sizeof tau) == 0);
  watch_reset(&w, 0);
  ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, 3, val, NULL, NULL), EFFML_OK);
  ck_assert_int_eq(w.calls, 2);
  ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, 0, &r, &a, &b, &tau), EFFML_OK);
  ck_assert(!isnan(tau)); /* now calibrated */
  memset(effml_tensor_data(pred), 0x5A, effml_tensor_nbytes(pred));
  watch_reset(&w, 3);
  assert_cancelled(ctx, effml_cascade_ensemble_predict(ctx, &co, 3, val, pred, NULL, NULL),
                   "effml_cascade_ensemble_predict");
  for (size_t i = 0; i < effml_tensor_nbytes(pred); ++i) ck_assert_int_eq(pb[i], 0x5A);
  watch_reset(&w, 0);
  ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &co, 3, val, pred, NULL, NULL), EFFML_OK);
  ck_assert_int_eq(w.calls, 3);
  ck_assert_int_ne(pb[0], 0x5A);
  effml_tensor_free(l2);

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
  /* stopped by the callback at its first report (header parsed, tensor allocated,
   * no data read yet): no tensor published, nothing leaked (ASan) */
  watch_reset(&w, 1);
  effml_context_set_progress(ctx, on_progress, &w);
  assert_cancelled(ctx, effml_io_npy_load(ctx, npy, &t), "effml_io_npy_load");
  ck_assert_ptr_null(t);
  ck_assert_str_eq(w.call, "effml_io_npy_load");
  ck_assert_str_eq(effml_context_last_error(ctx), "effml_io_npy_load: cancelled after 0 of 480 bytes");
  watch_reset(&w, 1);
  assert_cancelled(ctx, effml_data_idx_load(ctx, idx, &t), "effml_data_idx_load");
  ck_assert_ptr_null(t);
  ck_assert_str_eq(w.call, "effml_data_idx_load");
  effml_context_set_progress(ctx, NULL, NULL);
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
  /* one-line definitions (found by check_enter.pl since it reads them too) */
  CHECK_PREFIX("effml_adapter_ia3_merge", effml_adapter_ia3_merge(ctx, dense));
  CHECK_PREFIX("effml_adapter_ia3_unmerge", effml_adapter_ia3_unmerge(ctx, dense));
  CHECK_PREFIX("effml_adapter_loha_merge", effml_adapter_loha_merge(ctx, dense));
  CHECK_PREFIX("effml_adapter_loha_unmerge", effml_adapter_loha_unmerge(ctx, dense));
  CHECK_PREFIX("effml_adapter_vera_merge", effml_adapter_vera_merge(ctx, dense));
  CHECK_PREFIX("effml_adapter_vera_unmerge", effml_adapter_vera_unmerge(ctx, dense));
  ck_assert_str_eq(effml_context_last_error(ctx), "effml_adapter_vera_unmerge: layer is not a vera layer");
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

/* Calibrator fits (vector scaling, correctness-aware): progress and cancel,
 * parameters unchanged by a cancelled fit. */
START_TEST(calibration_fit_cancel) {
  effml_context *ctx = tu_ctx(6);
  const int64_t n = 300, K = 4, F = 12;
  effml_tensor *z = tu_f32(ctx, n, K, NULL), *f = tu_f32(ctx, n, F, NULL), *y = NULL;
  tu_fill_uniform(z, 21, -3, 3);
  tu_fill_uniform(f, 22, 0, 1);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &n, &y), EFFML_OK);
  const float *zz = (const float *)effml_tensor_data_const(z);
  for (int64_t i = 0; i < n; ++i) /* mostly the argmax, some noise */
    ((int32_t *)effml_tensor_data(y))[i] = i % 5 == 0 ? (int32_t)(i % K) : (zz[i * K] > zz[i * K + 1] ? 0 : 1);
  const int32_t methods[2] = {EFFML_CALIBRATION_VECTOR, EFFML_CALIBRATION_CORRECTNESS_AWARE};
  watch w;
  for (int mi = 0; mi < 2; ++mi) {
    const int ca = methods[mi] == EFFML_CALIBRATION_CORRECTNESS_AWARE;
    effml_calibration_options o;
    effml_calibration_options_init(&o);
    o.method = methods[mi];
    o.num_classes = K;
    o.num_features = F;
    o.epochs = 6;
    o.batch_size = 64;
    effml_calibrator *c = NULL;
    ck_assert_int_eq(effml_calibration_create(ctx, &o, &c), EFFML_OK);
    const int64_t np = effml_calibration_num_params(c);
    double before[512], after[512];
    ck_assert_int_le(np, 512);
    ck_assert_int_eq(effml_calibration_get_params(ctx, c, before), EFFML_OK);
    watch_reset(&w, 2);
    effml_context_set_progress(ctx, on_progress, &w);
    assert_cancelled(ctx, effml_calibration_fit(ctx, c, z, ca ? f : NULL, y), "effml_calibration_fit");
    ck_assert_str_eq(w.call, "effml_calibration_fit");
    ck_assert_int_eq(effml_calibration_get_params(ctx, c, after), EFFML_OK);
    ck_assert_int_eq(memcmp(before, after, (size_t)np * sizeof(double)), 0);
    ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), ca ? "1 of 6 epochs" : "1 of 100 Newton steps"));
    watch_reset(&w, 0);
    ck_assert_int_eq(effml_calibration_fit(ctx, c, z, ca ? f : NULL, y), EFFML_OK);
    if (ca) ck_assert_int_eq(w.calls, 6);
    else ck_assert_int_ge(w.calls, 2);
    ck_assert(w.monotone);
    ck_assert_int_eq(effml_calibration_get_params(ctx, c, after), EFFML_OK);
    ck_assert_int_ne(memcmp(before, after, (size_t)np * sizeof(double)), 0); /* the fit moved them */
    effml_context_set_progress(ctx, NULL, NULL);
    effml_calibration_free(c);
  }
  effml_tensor_free(z);
  effml_tensor_free(f);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* Number of entries of directory `dir` whose name starts with `prefix`. */
static int count_prefixed(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  int k = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) k += starts_with(e->d_name, prefix);
  closedir(d);
  return k;
}

/* safetensors: load (copy, mmap, buffer) and save report bytes and stop on a
 * cancel request with nothing published; a cancelled save leaves the
 * destination as it was and no temporary file behind. */
START_TEST(safetensors_progress_and_cancel) {
  effml_context *ctx = tu_ctx(5);
  effml_tensor *a = tu_f32(ctx, 64, 16, NULL), *b = tu_f32(ctx, 8, 3, NULL), *c = tu_f32(ctx, 5, 5, NULL);
  tu_fill_uniform(a, 1, -1, 1);
  tu_fill_uniform(b, 2, -1, 1);
  tu_fill_uniform(c, 3, -1, 1);
  const char *names[3] = {"a", "b", "c"};
  const effml_tensor *ts[3] = {a, b, c};
  const int64_t data_bytes = (64 * 16 + 8 * 3 + 5 * 5) * 4;
  char path[512];
  snprintf(path, sizeof path, "%s/cancel_test.safetensors", EFFML_TEST_TMP);
  watch w;
  watch_reset(&w, 0);
  effml_context_set_progress(ctx, on_progress, &w);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 3, names, ts, 0, NULL, NULL), EFFML_OK);
  ck_assert_int_eq(w.calls, 4); /* before each tensor, and done == total once all are written */
  ck_assert_str_eq(w.call, "effml_safetensors_save");
  ck_assert(w.monotone);
  ck_assert_int_eq(w.last_done, data_bytes);
  ck_assert_int_eq(w.last_total, data_bytes);
  /* a save stopped before its second tensor: the old file stays, no temporary left */
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  static unsigned char before[8192];
  const size_t nb = fread(before, 1, sizeof before, f);
  fclose(f);
  ck_assert_int_gt(nb, data_bytes);
  watch_reset(&w, 2);
  const effml_tensor *ts2[3] = {c, b, a};
  assert_cancelled(ctx, effml_safetensors_save(ctx, path, 3, names, ts2, 0, NULL, NULL),
                   "effml_safetensors_save");
  static unsigned char after[8192];
  f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fread(after, 1, sizeof after, f), nb);
  fclose(f);
  ck_assert_int_eq(memcmp(before, after, nb), 0);
  ck_assert_int_eq(count_prefixed(EFFML_TEST_TMP, "cancel_test.safetensors.tmp"), 0);
  /* stopped at the last report (done == total, every byte written): still nothing published */
  watch_reset(&w, 4);
  assert_cancelled(ctx, effml_safetensors_save(ctx, path, 3, names, ts2, 0, NULL, NULL),
                   "effml_safetensors_save");
  ck_assert_int_eq(w.last_done, data_bytes);
  ck_assert_int_eq(w.last_total, data_bytes);
  f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fread(after, 1, sizeof after, f), nb);
  fclose(f);
  ck_assert_int_eq(memcmp(before, after, nb), 0);
  ck_assert_int_eq(count_prefixed(EFFML_TEST_TMP, "cancel_test.safetensors.tmp"), 0);
  /* no tensor (metadata only): one report, 0 of 0 */
  {
    char p0[512];
    snprintf(p0, sizeof p0, "%s/cancel_test_empty.safetensors", EFFML_TEST_TMP);
    watch_reset(&w, 0);
    ck_assert_int_eq(effml_safetensors_save(ctx, p0, 0, NULL, NULL, 0, NULL, NULL), EFFML_OK);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.last_done, 0);
    ck_assert_int_eq(w.last_total, 0);
    remove(p0);
  }

  const uint32_t modes[2] = {EFFML_IO_SAFETENSORS_COPY, EFFML_IO_SAFETENSORS_MMAP};
  for (int mo = 0; mo < 2; ++mo) {
    effml_safetensors *st = NULL;
    watch_reset(&w, 0);
    ck_assert_int_eq(effml_safetensors_load(ctx, path, modes[mo], &st), EFFML_OK);
    ck_assert_str_eq(w.call, "effml_safetensors_load");
    ck_assert(w.monotone);
    /* copy: before the one piece and once it is in; mmap: before and after each tensor.
     * Either way the last report is done == total (COPY used to stop one piece short). */
    ck_assert_int_eq(w.last_done, data_bytes);
    ck_assert_int_eq(w.last_total, data_bytes);
    ck_assert_int_eq(w.calls, mo == 0 ? 2 : 4);
    const effml_tensor *got = NULL;
    ck_assert_int_eq(effml_safetensors_get(ctx, st, "a", &got), EFFML_OK);
    ck_assert_int_eq(memcmp(effml_tensor_data_const(got), effml_tensor_data_const(a), effml_tensor_nbytes(a)), 0);
    effml_safetensors_free(st);
    /* stopped at the last report: nothing published */
    const int64_t last = w.calls;
    st = NULL;
    watch_reset(&w, last);
    assert_cancelled(ctx, effml_safetensors_load(ctx, path, modes[mo], &st), "effml_safetensors_load");
    ck_assert_ptr_null(st);
    /* a request made beforehand */
    effml_context_set_progress(ctx, NULL, NULL);
    effml_context_set_cancel(ctx, 1);
    assert_cancelled(ctx, effml_safetensors_load(ctx, path, modes[mo], &st), "effml_safetensors_load");
    ck_assert_ptr_null(st);
    effml_context_set_cancel(ctx, 0);
    effml_context_set_progress(ctx, on_progress, &w);
  }
  effml_safetensors *st = NULL;
  watch_reset(&w, 1);
  assert_cancelled(ctx, effml_safetensors_load_buffer(ctx, before, nb, &st), "effml_safetensors_load_buffer");
  ck_assert_ptr_null(st);
  watch_reset(&w, 0);
  ck_assert_int_eq(effml_safetensors_load_buffer(ctx, before, nb, &st), EFFML_OK);
  ck_assert_int_eq(effml_safetensors_count(st), 3);
  ck_assert_int_eq(w.calls, 2);
  ck_assert_int_eq(w.last_done, data_bytes);
  ck_assert_int_eq(w.last_total, data_bytes);
  effml_safetensors_free(st);
  remove(path);
  effml_tensor_free(a);
  effml_tensor_free(b);
  effml_tensor_free(c);
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
  tcase_add_test(tc, fit_nonfinite_names_dataset_row);
  tcase_add_test(tc, predict_progress_and_cancel);
  tcase_add_test(tc, cascade_and_file_loads_cancel);
  tcase_add_test(tc, safetensors_progress_and_cancel);
  tcase_add_test(tc, calibration_fit_cancel);
  tcase_add_test(tc, errors_name_the_call);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
