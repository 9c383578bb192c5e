/* Early-exit cascades: one built cascade run from several threads at
 * once, each with its own context and workspace, gives the single-threaded
 * results; and the library's own loops give identical results for every
 * thread count.  Also built with -fsanitize=thread as test_cascade_threads_tsan
 * (tests/cmake/cascade_tsan.cmake). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { K = 10, M = 3, N = 20000, THREADS = 4, REPEATS = 3 };

typedef struct {
  const effml_tensor *logits;
} stage_src;

/* Callback: copies the rows in flight from a shared read-only tensor (thread-safe). */
static effml_status copy_rows(effml_context *ctx, void *stage_data, void *run_data, int32_t stage,
                              const int64_t *rows, int64_t n_rows, effml_tensor *out) {
  const stage_src *s = stage_data;
  const float *src = effml_tensor_data_const(s->logits);
  float *dst = effml_tensor_data(out);
  for (int64_t i = 0; i < n_rows; ++i) memcpy(dst + i * K, src + rows[i] * K, K * sizeof(float));
  return EFFML_OK;
}

static effml_tensor *logits[M];
static stage_src srcs[M];
static effml_cascade *cascade;
static double ref_score[N];
static int32_t ref_pred[N], ref_stage[N];
static double ref_cost;

typedef struct {
  int id;
  int ok;
} worker_arg;

static int run_once(effml_context *ctx, effml_cascade_workspace *ws, double *score, int32_t *pred,
                    int32_t *stage, double *cost) {
  int64_t n = N;
  effml_tensor *ts = NULL, *tp = NULL, *tst = NULL;
  if (effml_tensor_wrap(ctx, EFFML_F64, 1, &n, NULL, score, sizeof(double) * N, 0, &ts) ||
      effml_tensor_wrap(ctx, EFFML_I32, 1, &n, NULL, pred, sizeof(int32_t) * N, 0, &tp) ||
      effml_tensor_wrap(ctx, EFFML_I32, 1, &n, NULL, stage, sizeof(int32_t) * N, 0, &tst))
    return 0;
  effml_status st = effml_cascade_run(ctx, cascade, ws, N, NULL, tp, ts, tst, NULL);
  *cost = effml_cascade_workspace_expected_cost(ws);
  effml_tensor_free(ts);
  effml_tensor_free(tp);
  effml_tensor_free(tst);
  return st == EFFML_OK;
}

static void *worker(void *p) {
  worker_arg *a = p;
  effml_context_options opt;
  effml_context_options_init(&opt);
  opt.num_threads = 1 + a->id % 2; /* some threads also split their own loops */
  effml_context *ctx = NULL;
  a->ok = 0;
  if (effml_context_create(&opt, &ctx)) return NULL;
  effml_cascade_workspace *ws = NULL;
  if (effml_cascade_workspace_create(ctx, cascade, &ws) == EFFML_OK) {
    double *score = malloc(N * sizeof(double));
    int32_t *pred = malloc(N * sizeof(int32_t)), *stage = malloc(N * sizeof(int32_t));
    int ok = score && pred && stage;
    for (int r = 0; r < REPEATS && ok; ++r) {
      double cost;
      ok = run_once(ctx, ws, score, pred, stage, &cost) && cost == ref_cost &&
           memcmp(score, ref_score, sizeof ref_score) == 0 &&
           memcmp(pred, ref_pred, sizeof ref_pred) == 0 &&
           memcmp(stage, ref_stage, sizeof ref_stage) == 0;
    }
    a->ok = ok;
    free(score);
    free(pred);
    free(stage);
  }
  effml_cascade_workspace_free(ws);
  effml_context_free(ctx);
  return NULL;
}

START_TEST(test_shared_cascade_many_threads) {
  effml_context *ctx = tu_ctx(3);
  for (int m = 0; m < M; ++m) {
    logits[m] = tu_f32(ctx, N, K, NULL);
    tu_fill_uniform(logits[m], 100 + m, -3.0f, 3.0f + m);
    srcs[m].logits = logits[m];
  }
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  opt.score = EFFML_CASCADE_SCORE_ENTROPY;
  ck_assert_int_eq(effml_cascade_create(ctx, &opt, &cascade), EFFML_OK);
  for (int m = 0; m < M; ++m)
    ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, cascade, copy_rows, &srcs[m], 1e6 * (m + 1)),
                     EFFML_OK);
  effml_cascade_threshold_options cal;
  effml_cascade_threshold_options_init(&cal);
  ck_assert_int_eq(effml_cascade_select_thresholds(ctx, cascade, M, (const effml_tensor *const *)logits,
                                           NULL, &cal),
                   EFFML_OK);
  /* single-threaded reference */
  effml_cascade_workspace *ws = NULL;
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, cascade, &ws), EFFML_OK);
  ck_assert(run_once(ctx, ws, ref_score, ref_pred, ref_stage, &ref_cost));
  ck_assert_int_gt(effml_cascade_workspace_reach_count(ws, 1), 0);
  ck_assert_int_lt(effml_cascade_workspace_reach_count(ws, 1), N);
  /* the library's own loops: same results with 3 threads */
  static double s3[N];
  static int32_t p3[N], st3[N];
  double c3;
  ck_assert_int_eq(effml_context_set_num_threads(ctx, 3), EFFML_OK);
  ck_assert(run_once(ctx, ws, s3, p3, st3, &c3));
  ck_assert(memcmp(s3, ref_score, sizeof s3) == 0 && memcmp(p3, ref_pred, sizeof p3) == 0 &&
            memcmp(st3, ref_stage, sizeof st3) == 0 && c3 == ref_cost);
  /* one cascade, several threads, each with its own context and workspace */
  pthread_t tid[THREADS];
  worker_arg args[THREADS];
  for (int t = 0; t < THREADS; ++t) {
    args[t].id = t;
    ck_assert_int_eq(pthread_create(&tid[t], NULL, worker, &args[t]), 0);
  }
  for (int t = 0; t < THREADS; ++t) {
    pthread_join(tid[t], NULL);
    ck_assert_msg(args[t].ok, "thread %d differs from the single-threaded run", t);
  }
  effml_cascade_workspace_free(ws);
  effml_cascade_free(cascade);
  for (int m = 0; m < M; ++m) effml_tensor_free(logits[m]);
  effml_context_free(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cascade_threads");
  TCase *tc = tcase_create("threads");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_shared_cascade_many_threads);
  suite_add_tcase(s, tc);
  return tu_run(s) ? 1 : 0;
}
