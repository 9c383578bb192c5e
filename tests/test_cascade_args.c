/* Early-exit cascades: bad input gives a clear error, leaves outputs
 * untouched and leaks nothing -- NaN logits, mismatched class counts, coverage
 * or risk outside (0, 1], an empty validation set, a window with lo > hi, and
 * the other argument checks; plus an allocation-failure sweep. */
#include <math.h>
#include <string.h>

#include "testutil.h"

enum { K = 3, N = 6 };

static const float LOGITS[N * K] = {2, 0, 0,  0, 1, 0,   0, 0, 3,
                                    1, 1, 0,  0.5f, 0, 0, 0, 2, 2.5f};

static effml_tensor *vec(effml_context *ctx, int32_t dtype, int64_t n) {
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, dtype, 1, &n, &t), EFFML_OK);
  return t;
}

static effml_cascade *two_stage(effml_context *ctx, effml_tensor *a, effml_tensor *b) {
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  effml_cascade *c = NULL;
  ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, a, 1.0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, b, 2.0), EFFML_OK);
  return c;
}

#define EXPECT_ERR(call, code, needle)                                                   \
  do {                                                                                   \
    ck_assert_int_eq((call), (code));                                                    \
    ck_assert_msg(strstr(effml_context_last_error(ctx), (needle)) != NULL,               \
                  "message '%s' lacks '%s'", effml_context_last_error(ctx), (needle));   \
  } while (0)

START_TEST(test_options) {
  effml_context *ctx = tu_ctx(0);
  effml_cascade *c = NULL;
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  EXPECT_ERR(effml_cascade_create(ctx, &opt, &c), EFFML_E_INVALID_ARG, "num_classes=0");
  opt.num_classes = 1;
  EXPECT_ERR(effml_cascade_create(ctx, &opt, &c), EFFML_E_INVALID_ARG, "num_classes=1");
  opt.num_classes = K;
  opt.score = 42;
  EXPECT_ERR(effml_cascade_create(ctx, &opt, &c), EFFML_E_INVALID_ARG, "score=42");
  opt.score = EFFML_CASCADE_SCORE_ENERGY;
  opt.temperature = 0.0;
  EXPECT_ERR(effml_cascade_create(ctx, &opt, &c), EFFML_E_INVALID_ARG, "temperature=0");
  opt.temperature = NAN;
  EXPECT_ERR(effml_cascade_create(ctx, &opt, &c), EFFML_E_INVALID_ARG, "temperature");
  opt.temperature = 1.0;
  opt.aggregation = 9;
  EXPECT_ERR(effml_cascade_create(ctx, &opt, &c), EFFML_E_INVALID_ARG, "aggregation=9");
  opt.aggregation = EFFML_CASCADE_AGG_MEAN;
  opt.struct_size = 4;
  EXPECT_ERR(effml_cascade_create(ctx, &opt, &c), EFFML_E_INVALID_ARG, "struct_size=4");
  ck_assert_ptr_null(c);
  EXPECT_ERR(effml_cascade_create(ctx, NULL, &c), EFFML_E_INVALID_ARG, "opt");
  /* a caller compiled against an older, shorter struct: the rest keeps its defaults */
  opt.struct_size = (uint32_t)(offsetof(effml_cascade_options, num_classes) + sizeof(int64_t));
  opt.score = 99; /* beyond the prefix: not read */
  ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
  effml_cascade_free(c);
  effml_cascade_free(NULL);
  effml_cascade_workspace_free(NULL);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_stage_and_rule_args) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *a = tu_f32(ctx, N, K, LOGITS), *wide = tu_f32(ctx, N, K + 1, NULL),
               *short_rows = tu_f32(ctx, N - 1, K, NULL);
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  effml_cascade *c = NULL;
  ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
  /* mismatched class counts across stages */
  EXPECT_ERR(effml_cascade_add_stage_logits(ctx, c, wide, 1.0), EFFML_E_SHAPE,
             "4 classes (columns) but the cascade has num_classes=3");
  EXPECT_ERR(effml_cascade_add_stage_logits(ctx, c, a, -1.0), EFFML_E_INVALID_ARG, "cost=-1");
  EXPECT_ERR(effml_cascade_add_stage_logits(ctx, c, a, NAN), EFFML_E_INVALID_ARG, "cost=nan");
  EXPECT_ERR(effml_cascade_add_stage_fn(ctx, c, NULL, NULL, 1.0), EFFML_E_INVALID_ARG, "fn");
  effml_tensor *ints = vec(ctx, EFFML_I32, 3);
  EXPECT_ERR(effml_cascade_add_stage_logits(ctx, c, ints, 1.0), EFFML_E_DTYPE, "i32");
  ck_assert_int_eq(effml_cascade_num_stages(c), 0);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, a, 1.0), EFFML_OK);
  EXPECT_ERR(effml_cascade_add_stage_logits(ctx, c, short_rows, 1.0), EFFML_E_SHAPE,
             "5 rows but earlier precomputed stages have 6");
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, a, 2.0), EFFML_OK);
  ck_assert(effml_cascade_stage_cost(c, 1) == 2.0);
  ck_assert(isnan(effml_cascade_stage_cost(c, 2)));
  /* window with lo > hi, NaN bounds, the last stage, out of range */
  EXPECT_ERR(effml_cascade_set_exit_rule(ctx, c, 0, EFFML_CASCADE_EXIT_WINDOW, 0.7, 0.3),
             EFFML_E_INVALID_ARG, "lo=0.7 > hi=0.3");
  EXPECT_ERR(effml_cascade_set_exit_rule(ctx, c, 0, EFFML_CASCADE_EXIT_WINDOW, NAN, 0.3),
             EFFML_E_INVALID_ARG, "NaN");
  EXPECT_ERR(effml_cascade_set_exit_rule(ctx, c, 0, EFFML_CASCADE_EXIT_THRESHOLD, NAN, 0),
             EFFML_E_INVALID_ARG, "NaN");
  EXPECT_ERR(effml_cascade_set_exit_rule(ctx, c, 1, EFFML_CASCADE_EXIT_THRESHOLD, 0.5, 0),
             EFFML_E_INVALID_ARG, "last stage");
  EXPECT_ERR(effml_cascade_set_exit_rule(ctx, c, -1, EFFML_CASCADE_EXIT_THRESHOLD, 0.5, 0),
             EFFML_E_INVALID_ARG, "stage=-1");
  EXPECT_ERR(effml_cascade_set_exit_rule(ctx, c, 0, 7, 0.5, 0), EFFML_E_INVALID_ARG, "rule=7");
  int32_t rule;
  double lo, hi, tau;
  ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, 0, &rule, &lo, &hi, &tau), EFFML_OK);
  ck_assert_int_eq(rule, EFFML_CASCADE_EXIT_NEVER); /* unchanged by the failed calls */
  ck_assert(isnan(tau));
  EXPECT_ERR(effml_cascade_get_exit_rule(ctx, c, 2, &rule, &lo, &hi, &tau), EFFML_E_INVALID_ARG,
             "stage=2");
  ck_assert_int_eq(effml_cascade_set_exit_rule(ctx, c, 0, EFFML_CASCADE_EXIT_WINDOW, 0.3, 0.3), EFFML_OK);
  effml_cascade_free(c);
  effml_tensor_free(a);
  effml_tensor_free(wide);
  effml_tensor_free(short_rows);
  effml_tensor_free(ints);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_run_args_and_nan) {
  effml_context *ctx = tu_ctx(0);
  float bad[N * K];
  memcpy(bad, LOGITS, sizeof bad);
  bad[4 * K + 2] = NAN;
  effml_tensor *a = tu_f32(ctx, N, K, LOGITS), *b = tu_f32(ctx, N, K, bad);
  effml_cascade *c = two_stage(ctx, a, b);
  effml_cascade *other = two_stage(ctx, a, a);
  effml_cascade_workspace *ws = NULL, *wo = NULL;
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, other, &wo), EFFML_OK);
  effml_tensor *score = vec(ctx, EFFML_F64, N), *pred = vec(ctx, EFFML_I32, N);
  ck_assert_int_eq(effml_tensor_fill(ctx, score, -7.0), EFFML_OK);
  ck_assert_int_eq(effml_tensor_fill(ctx, pred, -7.0), EFFML_OK);
  /* NaN logits in stage 1, sample 4, class 2: error, outputs untouched */
  EXPECT_ERR(effml_cascade_run(ctx, c, ws, N, NULL, pred, score, NULL, NULL), EFFML_E_NUMERIC,
             "stage 1 precomputed logits: logit of sample 4, class 2 is NaN");
  for (int i = 0; i < N; ++i) {
    ck_assert(((double *)effml_tensor_data(score))[i] == -7.0);
    ck_assert_int_eq(((int32_t *)effml_tensor_data(pred))[i], -7);
  }
  ck_assert(isnan(effml_cascade_workspace_expected_cost(ws)));
  ck_assert_int_eq(effml_cascade_workspace_num_samples(ws), 0);
  ck_assert(isnan(effml_cascade_workspace_exit_fraction(ws, 0)));
  /* ... but a window that lets sample 4 exit at stage 0 never reads the NaN:
   * sample 4 = [0.5, 0, 0] has MSP 0.452; only samples 1 (0.576) and 5 (0.592) pass */
  ck_assert_int_eq(effml_cascade_set_exit_rule(ctx, c, 0, EFFML_CASCADE_EXIT_WINDOW, 0.455, 0.6), EFFML_OK);
  ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N, NULL, pred, score, NULL, NULL), EFFML_OK);
  ck_assert_int_eq(effml_cascade_workspace_reach_count(ws, 1), 2);
  /* other argument errors */
  EXPECT_ERR(effml_cascade_run(ctx, c, wo, N, NULL, NULL, NULL, NULL, NULL), EFFML_E_INVALID_ARG,
             "another cascade");
  EXPECT_ERR(effml_cascade_run(ctx, c, ws, N - 1, NULL, NULL, NULL, NULL, NULL), EFFML_E_SHAPE,
             "n=5 but the precomputed logits stages have 6 rows");
  EXPECT_ERR(effml_cascade_run(ctx, c, ws, 0, NULL, NULL, NULL, NULL, NULL), EFFML_E_INVALID_ARG,
             "n=0");
  effml_tensor *short_score = vec(ctx, EFFML_F64, N - 1), *int_score = vec(ctx, EFFML_I32, N);
  EXPECT_ERR(effml_cascade_run(ctx, c, ws, N, NULL, NULL, short_score, NULL, NULL), EFFML_E_SHAPE,
             "score has shape [5], need [6]");
  EXPECT_ERR(effml_cascade_run(ctx, c, ws, N, NULL, NULL, int_score, NULL, NULL), EFFML_E_DTYPE,
             "score has dtype i32");
  EXPECT_ERR(effml_cascade_run(ctx, c, ws, N, NULL, NULL, NULL, NULL, score), EFFML_E_SHAPE,
             "probs");
  EXPECT_ERR(effml_cascade_run(ctx, NULL, ws, N, NULL, NULL, NULL, NULL, NULL),
             EFFML_E_INVALID_ARG, "cascade");
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  effml_cascade *empty = NULL;
  effml_cascade_workspace *we = NULL;
  ck_assert_int_eq(effml_cascade_create(ctx, &opt, &empty), EFFML_OK);
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, empty, &we), EFFML_OK);
  EXPECT_ERR(effml_cascade_run(ctx, empty, we, N, NULL, NULL, NULL, NULL, NULL), EFFML_E_STATE,
             "no stage");
  /* ensemble_predict: NaN, mismatched rows */
  const effml_tensor *mem[2] = {a, b};
  EXPECT_ERR(effml_cascade_ensemble_predict(ctx, &opt, 2, mem, NULL, score, NULL), EFFML_E_NUMERIC,
             "logits[1]: logit of sample 4, class 2 is NaN");
  effml_tensor *five = tu_f32(ctx, N - 1, K, NULL);
  const effml_tensor *mem2[2] = {a, five};
  EXPECT_ERR(effml_cascade_ensemble_predict(ctx, &opt, 2, mem2, NULL, NULL, NULL), EFFML_E_SHAPE,
             "logits[1] has 5 rows");
  EXPECT_ERR(effml_cascade_ensemble_predict(ctx, &opt, 0, mem2, NULL, NULL, NULL), EFFML_E_INVALID_ARG,
             "num_members=0");
  effml_tensor *all[] = {a, b, score, pred, short_score, int_score, five};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) effml_tensor_free(all[i]);
  effml_cascade_workspace_free(ws);
  effml_cascade_workspace_free(wo);
  effml_cascade_workspace_free(we);
  effml_cascade_free(c);
  effml_cascade_free(other);
  effml_cascade_free(empty);
  effml_context_free(ctx);
}
END_TEST

/* Callback stages: a failing callback's status is returned; NaN from a callback is named
 * by the sample it belongs to. */
static effml_status cb_fill(effml_context *ctx, void *stage_data, void *run_data, int32_t stage,
                            const int64_t *rows, int64_t n_rows, effml_tensor *logits) {
  int mode = *(int *)stage_data;
  if (mode == 1) return EFFML_E_IO;
  float *z = effml_tensor_data(logits);
  for (int64_t i = 0; i < n_rows; ++i)
    for (int k = 0; k < K; ++k) z[i * K + k] = LOGITS[rows[i] * K + k];
  if (mode == 2 && n_rows > 1) z[1 * K + 0] = INFINITY; /* second row in flight */
  return EFFML_OK;
}

START_TEST(test_callback_errors) {
  effml_context *ctx = tu_ctx(0);
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  int ok = 0, fail = 1, inf = 2;
  effml_cascade *c = NULL;
  ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, c, cb_fill, &ok, 1.0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, c, cb_fill, &fail, 1.0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, c, cb_fill, &inf, 1.0), EFFML_OK);
  effml_cascade_workspace *ws = NULL;
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
  EXPECT_ERR(effml_cascade_run(ctx, c, ws, N, NULL, NULL, NULL, NULL, NULL), EFFML_E_IO,
             "stage 1 callback failed");
  /* exit at stage 0 iff MSP >= 0.5: samples 3 (0.422) and 4 (0.452) reach stage 1, whose
   * callback writes inf into its second row, i.e. sample 4 */
  effml_cascade_free(c);
  effml_cascade_workspace_free(ws);
  ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, c, cb_fill, &ok, 1.0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, c, cb_fill, &inf, 1.0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_set_exit_rule(ctx, c, 0, EFFML_CASCADE_EXIT_THRESHOLD, 0.5, 0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
  EXPECT_ERR(effml_cascade_run(ctx, c, ws, N, NULL, NULL, NULL, NULL, NULL), EFFML_E_NUMERIC,
             "stage 1 callback: logit of sample 4, class 0 is infinite");
  effml_cascade_workspace_free(ws);
  effml_cascade_free(c);
  effml_context_free(ctx);
}
END_TEST

/* The routing-only path (pred and exit stage asked for; the last stage's prediction without
 * its softmax) names a non-finite logit of the last stage like the exact path and leaves
 * the outputs untouched, precomputed and callback, mean and LAST aggregation. */
START_TEST(test_routing_only_nan) {
  effml_context *ctx = tu_ctx(0);
  float bad[N * K];
  memcpy(bad, LOGITS, sizeof bad);
  bad[4 * K + 2] = NAN;
  effml_tensor *a = tu_f32(ctx, N, K, LOGITS), *b = tu_f32(ctx, N, K, bad);
  effml_tensor *pred = vec(ctx, EFFML_I32, N), *stage = vec(ctx, EFFML_I64, N);
  const effml_tensor *val[1] = {a};
  effml_cascade_threshold_options cal;
  effml_cascade_threshold_options_init(&cal);
  cal.window_below = cal.window_above = 1.0; /* every sample goes on to stage 1 */
  for (int use_cb = 0; use_cb < 2; ++use_cb)
    for (int32_t agg = EFFML_CASCADE_AGG_MEAN; agg <= EFFML_CASCADE_AGG_LAST; ++agg) {
      effml_cascade_options opt;
      effml_cascade_options_init(&opt);
      opt.num_classes = K;
      opt.aggregation = agg;
      effml_cascade *c = NULL;
      int ok = 0, inf = 2;
      ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
      if (use_cb) {
        ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, c, cb_fill, &ok, 1.0), EFFML_OK);
        ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, c, cb_fill, &inf, 2.0), EFFML_OK);
      } else {
        ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, a, 1.0), EFFML_OK);
        ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, b, 2.0), EFFML_OK);
      }
      ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, 1, val, NULL, &cal), EFFML_OK);
      effml_cascade_workspace *ws = NULL;
      ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
      ck_assert_int_eq(effml_tensor_fill(ctx, pred, -7.0), EFFML_OK);
      ck_assert_int_eq(effml_tensor_fill(ctx, stage, -7.0), EFFML_OK);
      /* callback: inf in the second row in flight, sample 1 */
      EXPECT_ERR(effml_cascade_run(ctx, c, ws, N, NULL, pred, NULL, stage, NULL), EFFML_E_NUMERIC,
                 use_cb ? "stage 1 callback: logit of sample 1, class 0 is infinite"
                        : "stage 1 precomputed logits: logit of sample 4, class 2 is NaN");
      for (int i = 0; i < N; ++i) {
        ck_assert_int_eq(((int32_t *)effml_tensor_data(pred))[i], -7);
        ck_assert_int_eq(((int64_t *)effml_tensor_data(stage))[i], -7);
      }
      ck_assert_int_eq(effml_cascade_workspace_num_samples(ws), 0);
      effml_cascade_workspace_free(ws);
      effml_cascade_free(c);
    }
  /* a non-finite logit in the routed stage 0 (scoring and exit fused on this path) */
  for (int use_cb = 0; use_cb < 2; ++use_cb)
    for (int32_t agg = EFFML_CASCADE_AGG_MEAN; agg <= EFFML_CASCADE_AGG_LAST; ++agg) {
      effml_cascade_options opt;
      effml_cascade_options_init(&opt);
      opt.num_classes = K;
      opt.aggregation = agg;
      effml_cascade *c = NULL;
      int ok = 0, inf = 2;
      ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
      if (use_cb) {
        ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, c, cb_fill, &inf, 1.0), EFFML_OK);
        ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, c, cb_fill, &ok, 2.0), EFFML_OK);
      } else {
        ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, b, 1.0), EFFML_OK);
        ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, a, 2.0), EFFML_OK);
      }
      ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, 1, val, NULL, &cal), EFFML_OK);
      effml_cascade_workspace *ws = NULL;
      ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
      ck_assert_int_eq(effml_tensor_fill(ctx, pred, -7.0), EFFML_OK);
      EXPECT_ERR(effml_cascade_run(ctx, c, ws, N, NULL, pred, NULL, stage, NULL), EFFML_E_NUMERIC,
                 use_cb ? "stage 0 callback: logit of sample 1, class 0 is infinite"
                        : "stage 0 precomputed logits: logit of sample 4, class 2 is NaN");
      for (int i = 0; i < N; ++i) ck_assert_int_eq(((int32_t *)effml_tensor_data(pred))[i], -7);
      effml_cascade_workspace_free(ws);
      effml_cascade_free(c);
    }
  effml_tensor *all[] = {a, b, pred, stage};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) effml_tensor_free(all[i]);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_calibrate_args) {
  effml_context *ctx = tu_ctx(0);
  float bad[N * K];
  memcpy(bad, LOGITS, sizeof bad);
  bad[2] = NAN;
  effml_tensor *a = tu_f32(ctx, N, K, LOGITS), *nan_val = tu_f32(ctx, N, K, bad),
               *wide = tu_f32(ctx, N, K + 1, NULL), *five = tu_f32(ctx, N - 1, K, NULL);
  effml_cascade *c = two_stage(ctx, a, a);
  effml_tensor *labels = vec(ctx, EFFML_I32, N);
  const effml_tensor *v1[1] = {a}, *vnan[1] = {nan_val}, *vwide[1] = {wide};
  const effml_tensor *vrows[2] = {a, five}, *v3[3] = {a, a, a};
  effml_cascade_threshold_options cal;
  effml_cascade_threshold_options_init(&cal);
  /* coverage or risk outside (0, 1] */
  double badv[] = {0.0, -0.1, 1.5, NAN};
  for (int i = 0; i < 4; ++i) {
    cal.target_value = badv[i];
    cal.target = i % 2 ? EFFML_CASCADE_TARGET_RISK : EFFML_CASCADE_TARGET_COVERAGE;
    EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 1, v1, labels, &cal), EFFML_E_INVALID_ARG,
               "must be in (0, 1]");
  }
  effml_cascade_threshold_options_init(&cal);
  cal.window_below = -0.1;
  EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 1, v1, labels, &cal), EFFML_E_INVALID_ARG,
             "window_below=-0.1");
  effml_cascade_threshold_options_init(&cal);
  cal.rule = EFFML_CASCADE_EXIT_NEVER;
  EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 1, v1, labels, &cal), EFFML_E_INVALID_ARG, "rule=0");
  effml_cascade_threshold_options_init(&cal);
  cal.target = 17;
  EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 1, v1, labels, &cal), EFFML_E_INVALID_ARG, "target=17");
  /* an empty validation set */
  EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 0, v1, labels, NULL), EFFML_E_SHAPE,
             "empty validation set");
  EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 1, NULL, labels, NULL), EFFML_E_SHAPE,
             "empty validation set");
  EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 3, v3, labels, NULL), EFFML_E_SHAPE, "num_stages=3");
  /* NaN logits, mismatched classes and rows */
  EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 1, vnan, labels, NULL), EFFML_E_NUMERIC,
             "val_logits[0]: logit of sample 0, class 2 is NaN");
  EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 1, vwide, labels, NULL), EFFML_E_SHAPE,
             "4 classes");
  EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 2, vrows, labels, NULL), EFFML_E_SHAPE,
             "val_logits[1] has 5 rows");
  /* risk needs labels, in range, and a reachable target */
  effml_cascade_threshold_options_init(&cal);
  cal.target = EFFML_CASCADE_TARGET_RISK;
  cal.target_value = 0.1;
  EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 1, v1, NULL, &cal), EFFML_E_INVALID_ARG,
             "val_labels is NULL");
  int32_t *y = effml_tensor_data(labels);
  y[3] = 3;
  EXPECT_ERR(effml_cascade_select_thresholds(ctx, c, 1, v1, labels, &cal), EFFML_E_RANGE,
             "val_labels[3]=3 is outside [0, num_classes=3)");
  int32_t rule;
  ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, 0, &rule, NULL, NULL, NULL), EFFML_OK);
  ck_assert_int_eq(rule, EFFML_CASCADE_EXIT_NEVER); /* failed calibrations changed nothing */
  effml_cascade_threshold_options_init(&cal);
  ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, 1, v1, NULL, &cal), EFFML_OK);
  effml_tensor *all[] = {a, nan_val, wide, five, labels};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) effml_tensor_free(all[i]);
  effml_cascade_free(c);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_metric_args) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *s = vec(ctx, EFFML_F64, 4), *ok = vec(ctx, EFFML_U8, 4), *ok3 = vec(ctx, EFFML_U8, 3);
  effml_tensor *fl = vec(ctx, EFFML_F32, 4), *lab = vec(ctx, EFFML_I64, 4);
  double *sv = effml_tensor_data(s);
  for (int i = 0; i < 4; ++i) sv[i] = 0.1 * i;
  double v = -1, t = -1;
  EXPECT_ERR(effml_metrics_selective_risk_at_coverage(ctx, s, ok, 0.0, &v, &t, NULL), EFFML_E_INVALID_ARG, "coverage=0");
  EXPECT_ERR(effml_metrics_selective_risk_at_coverage(ctx, s, ok, 1.01, &v, &t, NULL), EFFML_E_INVALID_ARG, "coverage=1.01");
  EXPECT_ERR(effml_metrics_selective_coverage_at_risk(ctx, s, ok, -0.5, &v, &t), EFFML_E_INVALID_ARG, "risk=-0.5");
  EXPECT_ERR(effml_metrics_selective_coverage_at_risk(ctx, s, ok, NAN, &v, &t), EFFML_E_INVALID_ARG, "risk=nan");
  ck_assert(v == -1 && t == -1);
  EXPECT_ERR(effml_metrics_selective_aurc(ctx, s, ok3, &v), EFFML_E_SHAPE, "correct has 3 elements, need 4");
  EXPECT_ERR(effml_metrics_selective_aurc(ctx, s, fl, &v), EFFML_E_DTYPE, "correct has dtype f32");
  EXPECT_ERR(effml_metrics_selective_aurc(ctx, lab, ok, &v), EFFML_E_DTYPE, "scores has dtype i64");
  sv[2] = NAN;
  EXPECT_ERR(effml_metrics_selective_aurc(ctx, s, ok, &v), EFFML_E_NUMERIC, "scores[2] is NaN");
  sv[2] = 0.2;
  /* everything wrong: coverage 0 at any risk < 1, threshold +inf */
  ck_assert_int_eq(effml_metrics_selective_coverage_at_risk(ctx, s, ok, 0.5, &v, &t), EFFML_OK);
  ck_assert(v == 0.0 && t == INFINITY);
  ck_assert_int_eq(effml_metrics_selective_coverage_at_risk(ctx, s, ok, 1.0, &v, &t), EFFML_OK);
  ck_assert(v == 1.0 && t == 0.0);
  /* OOD needs both classes */
  EXPECT_ERR(effml_metrics_ood_auroc(ctx, s, ok, &v), EFFML_E_INVALID_ARG, "need both ID and OOD");
  EXPECT_ERR(effml_metrics_ood_fpr_at_tpr(ctx, s, ok, 0.0, &v, &t), EFFML_E_INVALID_ARG, "tpr=0");
  /* ties: AUROC counts them as one half */
  ((unsigned char *)effml_tensor_data(ok))[0] = 1;
  for (int i = 0; i < 4; ++i) sv[i] = 0.5;
  ck_assert_int_eq(effml_metrics_ood_auroc(ctx, s, ok, &v), EFFML_OK);
  ck_assert(v == 0.5);
  effml_tensor *conv = vec(ctx, EFFML_F64, 5);
  EXPECT_ERR(effml_metrics_selective_risk_coverage_curve(ctx, s, ok, s, NULL, NULL, NULL),
             EFFML_E_SHAPE, "coverage has shape [4], need [5]");
  EXPECT_ERR(effml_metrics_selective_risk_coverage_curve(ctx, s, ok, NULL, conv, ok, NULL),
             EFFML_E_DTYPE, "thresholds has dtype u8");
  /* eval */
  int64_t *lv = effml_tensor_data(lab);
  lv[0] = 0; lv[1] = 1; lv[2] = 5; lv[3] = 1;
  int64_t shp[2] = {4, 3};
  effml_tensor *probs = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, shp, &probs), EFFML_OK);
  ck_assert_int_eq(effml_tensor_fill(ctx, probs, 1.0 / 3.0), EFFML_OK);
  EXPECT_ERR(effml_metrics_nll(ctx, probs, lab, &v), EFFML_E_RANGE, "labels[2]=5");
  lv[2] = 2;
  ck_assert_int_eq(effml_metrics_nll(ctx, probs, lab, &v), EFFML_OK);
  ck_assert(fabs(v - log(3.0)) < 1e-15);
  EXPECT_ERR(effml_metrics_top1_error(ctx, lab, ok3, &v), EFFML_E_SHAPE, "labels has 3 elements");
  ck_assert_int_eq(effml_metrics_top1_error(ctx, lab, lab, &v), EFFML_OK);
  ck_assert(v == 0.0);
  effml_tensor *all[] = {s, ok, ok3, fl, lab, conv, probs};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) effml_tensor_free(all[i]);
  effml_context_free(ctx);
}
END_TEST

/* Every allocation failing in turn: a clean error and no leak. */
START_TEST(test_allocation_failures) {
  for (int64_t fail_at = 1; fail_at < 200; ++fail_at) {
    tu_failing_alloc fa = {0, 0, 0};
    effml_context *ctx = tu_ctx_failing(&fa);
    effml_tensor *a = tu_f32(ctx, N, K, LOGITS);
    effml_tensor *score = vec(ctx, EFFML_F64, N), *okf = vec(ctx, EFFML_U8, N);
    int64_t base = fa.live;
    fa.fail_at = fa.count + fail_at;
    effml_status st = EFFML_OK;
    effml_cascade *c = NULL;
    effml_cascade_workspace *ws = NULL;
    effml_cascade_options opt;
    effml_cascade_options_init(&opt);
    opt.num_classes = K;
    const effml_tensor *v1[1] = {a};
    st = effml_cascade_create(ctx, &opt, &c);
    if (!st) st = effml_cascade_add_stage_logits(ctx, c, a, 1.0);
    if (!st) st = effml_cascade_add_stage_logits(ctx, c, a, 1.0);
    if (!st) st = effml_cascade_select_thresholds(ctx, c, 1, v1, NULL, NULL);
    if (!st) st = effml_cascade_workspace_create(ctx, c, &ws);
    if (!st) st = effml_cascade_run(ctx, c, ws, N, NULL, NULL, score, NULL, NULL);
    double aurc;
    if (!st) st = effml_metrics_selective_aurc(ctx, score, okf, &aurc);
    ck_assert(st == EFFML_OK || st == EFFML_E_NOMEM);
    effml_cascade_workspace_free(ws);
    effml_cascade_free(c);
    ck_assert_int_eq(fa.live, base);
    int done = st == EFFML_OK;
    effml_tensor_free(a);
    effml_tensor_free(score);
    effml_tensor_free(okf);
    effml_context_free(ctx);
    if (done) break;
  }
}
END_TEST

/* A risk target no coverage reaches is not an error: as effml_metrics_selective_coverage_at_risk()
 * answers coverage 0 with threshold +inf on the same scores, calibration sets tau = +inf (the
 * stage accepts no sample) and logs a warning naming the stage.  A threshold rule then exits
 * nothing at stage 0; a window is [Q(0.9), +inf] (q = 1), so only the samples below Q(0.9)
 * exit. */
typedef struct {
  int warnings;
  char last[512];
} log_sink;
static void capture_log(void *user, int32_t level, const char *message) {
  log_sink *l = user;
  if (level == EFFML_CORE_LOG_WARN) {
    ++l->warnings;
    strncpy(l->last, message, sizeof l->last - 1);
  }
}

START_TEST(test_risk_out_of_reach) {
  log_sink sink = {0, {0}};
  effml_context_options co;
  effml_context_options_init(&co);
  co.log = capture_log;
  co.log_user_data = &sink;
  effml_context *ctx = NULL;
  ck_assert_int_eq(effml_context_create(&co, &ctx), EFFML_OK);
  effml_tensor *a = tu_f32(ctx, N, K, LOGITS), *labels = vec(ctx, EFFML_I32, N),
               *s = vec(ctx, EFFML_F64, N), *p = vec(ctx, EFFML_I32, N),
               *ok = vec(ctx, EFFML_U8, N);
  /* MSPs .79 .58 .91 .42 .45 .59, predictions 0 1 2 0 0 2: with every label 1 only sample 1
   * is right, so the most confident sample (2) is wrong and every top set has risk >= 3/4 */
  int32_t *y = effml_tensor_data(labels);
  for (int i = 0; i < N; ++i) y[i] = 1;
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  const effml_tensor *v1[1] = {a};
  ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &opt, 1, v1, p, s, NULL), EFFML_OK);
  for (int i = 0; i < N; ++i)
    ((unsigned char *)effml_tensor_data(ok))[i] = ((int32_t *)effml_tensor_data(p))[i] == 1;
  double cov = -1, thr = 0;
  ck_assert_int_eq(effml_metrics_selective_coverage_at_risk(ctx, s, ok, 0.1, &cov, &thr), EFFML_OK);
  ck_assert(cov == 0.0 && thr == INFINITY);
  effml_cascade *c = two_stage(ctx, a, a);
  effml_cascade_workspace *ws = NULL;
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
  for (int window = 0; window < 2; ++window) {
    effml_cascade_threshold_options cal;
    effml_cascade_threshold_options_init(&cal);
    cal.target = EFFML_CASCADE_TARGET_RISK;
    cal.target_value = 0.1;
    cal.rule = window ? EFFML_CASCADE_EXIT_WINDOW : EFFML_CASCADE_EXIT_THRESHOLD;
    sink.warnings = 0;
    ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, 1, v1, labels, &cal), EFFML_OK);
    ck_assert_int_eq(sink.warnings, 1);
    ck_assert_msg(strstr(sink.last, "stage 0: no coverage reaches risk=0.1") &&
                      strstr(sink.last, "1 sample(s), has risk 1") && strstr(sink.last, "tau = +inf"),
                  "log: %s", sink.last);
    int32_t rule;
    double lo, hi, tau;
    ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, 0, &rule, &lo, &hi, &tau), EFFML_OK);
    ck_assert(tau == thr);
    ck_assert(hi == INFINITY);
    const double *sv = effml_tensor_data(s);
    int64_t want = 0;
    if (window) { /* numpy.quantile(s, 0.9): virtual index 4.5 between the two largest */
      ck_assert_int_eq(rule, EFFML_CASCADE_EXIT_WINDOW);
      const double s4 = sv[0], s5 = sv[2]; /* .79 and .91, the two largest */
      ck_assert_msg(fabs(lo - 0.5 * (s4 + s5)) <= 1e-15, "lo %.17g", lo);
      for (int i = 0; i < N; ++i) want += sv[i] < lo;
      ck_assert_int_eq(want, 5);
    } else {
      ck_assert_int_eq(rule, EFFML_CASCADE_EXIT_THRESHOLD);
      ck_assert(lo == INFINITY);
    }
    for (int probs = 0; probs < 2; ++probs) { /* routed and exact paths */
      int64_t shape[2] = {N, K};
      effml_tensor *pr = NULL;
      if (probs) ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, shape, &pr), EFFML_OK);
      ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N, NULL, p, NULL, NULL, pr), EFFML_OK);
      ck_assert_int_eq(effml_cascade_workspace_exit_count(ws, 0), want);
      effml_tensor_free(pr);
    }
  }
  /* a reachable target is silent */
  effml_cascade_threshold_options cal;
  effml_cascade_threshold_options_init(&cal);
  cal.target = EFFML_CASCADE_TARGET_RISK;
  cal.target_value = 0.8;
  sink.warnings = 0;
  ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, 1, v1, labels, &cal), EFFML_OK);
  ck_assert_int_eq(sink.warnings, 0);
  effml_cascade_workspace_free(ws);
  effml_cascade_free(c);
  effml_tensor *all[] = {a, labels, s, p, ok};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) effml_tensor_free(all[i]);
  effml_context_free(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cascade_args");
  TCase *tc = tcase_create("args");
  tcase_add_test(tc, test_options);
  tcase_add_test(tc, test_stage_and_rule_args);
  tcase_add_test(tc, test_run_args_and_nan);
  tcase_add_test(tc, test_callback_errors);
  tcase_add_test(tc, test_calibrate_args);
  tcase_add_test(tc, test_risk_out_of_reach);
  tcase_add_test(tc, test_routing_only_nan);
  tcase_add_test(tc, test_metric_args);
  tcase_add_test(tc, test_allocation_failures);
  suite_add_tcase(s, tc);
  return tu_run(s) ? 1 : 0;
}
