/* bench_cascade: early-exit cascade routing.
 *
 * Cases (JSON lines via bu_report):
 *   cascade_route_1m          scoring (MSP) and routing 10^6 samples x 10 classes through a
 *                             2-stage window cascade over precomputed logits (window
 *                             calibrated on 10^5 separate validation rows at coverage 0.8,
 *                             +-0.1 quantiles, so ~20% reach stage 1): effml_cascade_run
 *                             (pred, score, exit stage) vs the same computation in numpy
 *                             (bench/cascade_baseline.py: f64 softmax, window mask, mean of
 *                             the two members' probabilities on the rows in the window).
 *   cascade_routing_overhead  the routing's own cost as a fraction of the cheapest stage of
 *                             examples/cascade_fashion_mnist.c (an MLP 784-128-10, forward in
 *                             EFFML_LAYER_MODE_INFER): effml_cascade_run over that stage's
 *                             precomputed logits (10 000 rows, same window, outputs pred and
 *                             exit stage) vs the forward of those rows, interleaved.
 *                             Bar: overhead_fraction <= 0.02 (goal 0.005).  Stage 0 routes on
 *                             the f32 routing score s (certified cuts; exact MSP near a bound).
 *                             The routing-only path: stage 1's prediction is the certified
 *                             f32 argmax (recomputed exactly where not certain), so no f64
 *                             softmax runs.  The logits are read cold (the forward run just
 *                             before evicts them), the pessimistic case: a stage callback
 *                             would hand over logits it has just written.
 *   cascade_routing_overhead_with_scores  the same, also writing every sample's exact MSP
 *                             (the metrics path: one f64 softmax per sample).
 *   cascade_routing_overhead_calibrated  routing only as the first case, with per-stage
 *                             probability calibration turned on (temperature scaling,
 *                             T = 1.3, on both stages, set before the thresholds are
 *                             selected): calibrated logits take the exact paths (reported
 *                             separately; no bar).
 *
 * How the two sides meet (same pattern as bench_adapter): this program prints the
 * C-only case itself, writes the logits of cascade_route_1m to
 * /tmp/effml_bench_cascade_z{0,1}.npy and ours_s plus the window to
 * $EFFML_BENCH_CASCADE_OURS (default /tmp/effml_bench_cascade_ours.json);
 * scripts/bench.sh then runs bench/cascade_baseline.py, which times numpy on the
 * same data and window and prints the combined line (speedup = baseline_s / ours_s).
 *
 * Threads: the context uses OPENBLAS_NUM_THREADS (default 1) for its own loops;
 * numpy's side is single-threaded element-wise code.  Timings: median of --reps
 * (default 5) warm runs after one warm-up run, same data. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchutil.h"
#include "effml.h"

#define K 10

static void check(effml_context *ctx, effml_status st, const char *what) {
  if (st != EFFML_OK) {
    fprintf(stderr, "bench_cascade: %s: %s (%s)\n", what, effml_status_str(st),
            effml_context_last_error(ctx));
    exit(1);
  }
}

static double normal(effml_context *ctx) {
  double u1 = ((double)(effml_context_random_u64(ctx) >> 11) + 0.5) * 0x1.0p-53;
  double u2 = (double)(effml_context_random_u64(ctx) >> 11) * 0x1.0p-53;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Two members' logits for n samples: member 1 = member 0 plus independent noise. */
static void make_logits(effml_context *ctx, int64_t n, effml_tensor **z0, effml_tensor **z1) {
  int64_t shape[2] = {n, K};
  check(ctx, effml_tensor_create(ctx, EFFML_F32, 2, shape, z0), "create");
  check(ctx, effml_tensor_create(ctx, EFFML_F32, 2, shape, z1), "create");
  float *a = effml_tensor_data(*z0), *b = effml_tensor_data(*z1);
  for (int64_t i = 0; i < n; ++i) {
    int64_t y = (int64_t)(effml_context_random_u64(ctx) % K);
    double boost = 4.0 * ((double)(effml_context_random_u64(ctx) >> 11) * 0x1.0p-53);
    for (int k = 0; k < K; ++k) {
      double z = 1.5 * normal(ctx) + (k == y ? boost : 0.0);
      a[i * K + k] = (float)z;
      b[i * K + k] = (float)(z + 1.0 * normal(ctx) + (k == y ? 0.5 : 0.0));
    }
  }
}

/* CPU time of this process (all threads), for a contended machine. */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

/* Median of reps warm runs (after one warm-up) of the cascade over n rows. */
static double time_run(effml_context *ctx, effml_cascade *c, effml_cascade_workspace *ws,
                       int64_t n, effml_tensor *pred, effml_tensor *score, effml_tensor *stage,
                       int reps, double *cpu) {
  double t[64], u[64];
  check(ctx, effml_cascade_run(ctx, c, ws, n, NULL, pred, score, stage, NULL), "run");
  for (int r = 0; r < reps; ++r) {
    double t0 = bu_now(), u0 = cpu_now();
    check(ctx, effml_cascade_run(ctx, c, ws, n, NULL, pred, score, stage, NULL), "run");
    t[r] = bu_now() - t0;
    u[r] = cpu_now() - u0;
  }
  qsort(t, (size_t)reps, sizeof t[0], cmp_double);
  qsort(u, (size_t)reps, sizeof u[0], cmp_double);
  *cpu = u[reps / 2];
  return t[reps / 2];
}

/* A 2-stage MSP window cascade over precomputed logits, calibrated on (v0, v1); `prob_cal`
 * (or NULL) is set as both stages' probability calibration first. */
static effml_cascade *window_cascade(effml_context *ctx, effml_tensor *z0, effml_tensor *z1,
                                     effml_tensor *v0, effml_tensor *v1, double c0, double c1,
                                     const effml_calibrator *prob_cal) {
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  effml_cascade *c;
  check(ctx, effml_cascade_create(ctx, &opt, &c), "cascade_create");
  check(ctx, effml_cascade_add_stage_logits(ctx, c, z0, c0), "add_stage");
  check(ctx, effml_cascade_add_stage_logits(ctx, c, z1, c1), "add_stage");
  if (prob_cal)
    for (int32_t m = 0; m < 2; ++m)
      check(ctx, effml_cascade_set_stage_calibration(ctx, c, m, prob_cal), "set_stage_calibration");
  effml_cascade_threshold_options cal;
  effml_cascade_threshold_options_init(&cal);
  const effml_tensor *val[2] = {v0, v1};
  check(ctx, effml_cascade_select_thresholds(ctx, c, 2, val, NULL, &cal), "calibrate");
  return c;
}

static effml_tensor *vec(effml_context *ctx, int32_t dtype, int64_t n) {
  effml_tensor *t;
  check(ctx, effml_tensor_create(ctx, dtype, 1, &n, &t), "create");
  return t;
}

typedef struct {
  effml_context *ctx;
  effml_layer *mlp;
  effml_tensor *x, *y;
} fwd_job;
static void fwd_fn(void *p) {
  fwd_job *j = (fwd_job *)p;
  check(j->ctx, effml_layer_forward(j->ctx, j->mlp, j->x, j->y, EFFML_LAYER_MODE_INFER), "forward");
}
typedef struct {
  effml_context *ctx;
  effml_cascade *c;
  effml_cascade_workspace *ws;
  int64_t n;
  effml_tensor *pred, *score, *stage;
} run_job;
static void run_fn(void *p) {
  run_job *j = (run_job *)p;
  check(j->ctx, effml_cascade_run(j->ctx, j->c, j->ws, j->n, NULL, j->pred, j->score, j->stage, NULL),
        "run");
}
/* Median CPU time (this process, all threads) of reps runs of fn after one warm-up. */
static double cpu_of(bu_fn fn, void *arg, int reps) {
  double u[64];
  fn(arg);
  for (int r = 0; r < reps; ++r) {
    double u0 = cpu_now();
    fn(arg);
    u[r] = cpu_now() - u0;
  }
  return bu_median(u, reps);
}

int main(int argc, char **argv) {
  int reps = 5;
  for (int i = 1; i + 1 < argc; ++i)
    if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[i + 1]);
  if (reps < 1) reps = 1;
  if (reps > 63) reps = 63;
  const char *env = getenv("OPENBLAS_NUM_THREADS");
  int threads = env && atoi(env) > 0 ? atoi(env) : 1;
  effml_context_options co;
  effml_context_options_init(&co);
  co.num_threads = threads;
  co.seed = 7;
  effml_context *ctx;
  if (effml_context_create(&co, &ctx)) return 1;
  bu_machine("cascade", threads, NULL);

  /* ---- cascade_route_1m ---- */
  const int64_t n = 1000000, n_val = 100000;
  effml_tensor *z0, *z1, *v0, *v1;
  make_logits(ctx, n, &z0, &z1);
  make_logits(ctx, n_val, &v0, &v1);
  effml_cascade *c = window_cascade(ctx, z0, z1, v0, v1, 1.0, 1.0, NULL);
  effml_cascade_workspace *ws;
  check(ctx, effml_cascade_workspace_create(ctx, c, &ws), "workspace");
  effml_tensor *pred = vec(ctx, EFFML_I32, n), *score = vec(ctx, EFFML_F64, n),
               *stage = vec(ctx, EFFML_I32, n);
  double ours_cpu, ours = time_run(ctx, c, ws, n, pred, score, stage, reps, &ours_cpu);
  double lo, hi;
  check(ctx, effml_cascade_get_exit_rule(ctx, c, 0, NULL, &lo, &hi, NULL), "get_exit_rule");
  int64_t reach1 = effml_cascade_workspace_reach_count(ws, 1);
  check(ctx, effml_io_npy_save(ctx, "/tmp/effml_bench_cascade_z0.npy", z0), "npy_save");
  check(ctx, effml_io_npy_save(ctx, "/tmp/effml_bench_cascade_z1.npy", z1), "npy_save");
  const char *path = getenv("EFFML_BENCH_CASCADE_OURS");
  if (!path || !*path) path = "/tmp/effml_bench_cascade_ours.json";
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "bench_cascade: cannot write %s\n", path);
    return 1;
  }
  fprintf(f,
          "{\"cascade_route_1m\": {\"ours_s\": %.9g, \"lo\": %.17g, \"hi\": %.17g, "
          "\"reach1\": %lld, \"n\": %lld, \"threads\": %d, \"reps\": %d, \"ours_cpu_s\": %.9g}}\n",
          ours, lo, hi, (long long)reach1, (long long)n, threads, reps, ours_cpu);
  fclose(f);
  fprintf(stderr, "bench_cascade: cascade_route_1m ours %.4f s, %lld of %lld reach stage 1; "
                  "numpy timing follows from bench/cascade_baseline.py\n",
          ours, (long long)reach1, (long long)n);
  effml_cascade_workspace_free(ws);
  effml_cascade_free(c);
  effml_tensor_free(pred);
  effml_tensor_free(score);
  effml_tensor_free(stage);

  /* ---- cascade_routing_overhead: vs the example's cheapest stage (MLP 784-128-10) ---- */
  const int64_t m = 10000;
  effml_layer *mlp, *l;
  check(ctx, effml_layer_sequential_create(ctx, &mlp), "sequential");
  check(ctx, effml_layer_dense_create(ctx, 784, 128, 1, &l), "dense");
  check(ctx, effml_layer_sequential_add(ctx, mlp, l), "add");
  check(ctx, effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &l), "relu");
  check(ctx, effml_layer_sequential_add(ctx, mlp, l), "add");
  check(ctx, effml_layer_dense_create(ctx, 128, K, 1, &l), "dense");
  check(ctx, effml_layer_sequential_add(ctx, mlp, l), "add");
  int64_t xs[2] = {m, 784}, ys[2] = {m, K};
  effml_tensor *x, *y;
  check(ctx, effml_tensor_create(ctx, EFFML_F32, 2, xs, &x), "create");
  check(ctx, effml_tensor_create(ctx, EFFML_F32, 2, ys, &y), "create");
  float *xp = effml_tensor_data(x);
  for (int64_t i = 0; i < m * 784; ++i)
    xp[i] = (float)((effml_context_random_u64(ctx) >> 11) * 0x1.0p-53);
  /* route m rows of the 1m logits (same distribution, same window as above) */
  effml_tensor *zm0, *zm1;
  check(ctx, effml_tensor_slice(ctx, z0, 0, 0, m, 1, &zm0), "slice");
  check(ctx, effml_tensor_slice(ctx, z1, 0, 0, m, 1, &zm1), "slice");
  double macs = 784.0 * 128 + 128.0 * K;
  c = window_cascade(ctx, zm0, zm1, v0, v1, macs, macs, NULL);
  check(ctx, effml_cascade_workspace_create(ctx, c, &ws), "workspace");
  pred = vec(ctx, EFFML_I32, m);
  score = vec(ctx, EFFML_F64, m);
  stage = vec(ctx, EFFML_I32, m);
  /* ours and the stage's forward interleaved (bu_time_pair), min/median/max over reps:
   *  - routing only: the outputs a deployed router needs (class and exit stage);
   *  - with exact scores: also the exact MSP of every sample (the metrics path). */
  fwd_job fj = {ctx, mlp, x, y};
  /* the third case: the same cascade with temperature scaling on both stages */
  effml_calibration_options copt;
  effml_calibration_options_init(&copt);
  copt.num_classes = K;
  effml_calibrator *tcal;
  check(ctx, effml_calibration_create(ctx, &copt, &tcal), "calibration_create");
  const double temperature = 1.3;
  check(ctx, effml_calibration_set_params(ctx, tcal, &temperature), "calibration_set_params");
  effml_cascade *cc = window_cascade(ctx, zm0, zm1, v0, v1, macs, macs, tcal);
  effml_cascade_workspace *wsc;
  check(ctx, effml_cascade_workspace_create(ctx, cc, &wsc), "workspace");
  for (int variant = 0; variant < 3; ++variant) {
    const int with_scores = variant == 1, calibrated = variant == 2;
    run_job rj = {ctx, calibrated ? cc : c, calibrated ? wsc : ws, m, pred, with_scores ? score : NULL,
                  stage};
    double tr[64], tf[64];
    bu_time_pair(run_fn, &rj, fwd_fn, &fj, reps, tr, tf);
    double trs[64], tfs[64];
    memcpy(trs, tr, sizeof(double) * (size_t)reps);
    memcpy(tfs, tf, sizeof(double) * (size_t)reps);
    double route_med = bu_median(trs, reps), fwd_med = bu_median(tfs, reps);
    /* the routing's own CPU time vs the forward's, each alone (the machine is shared) */
    double route_cpu = cpu_of(run_fn, &rj, reps), fwd_cpu = cpu_of(fwd_fn, &fj, reps);
    char extra[512];
    snprintf(extra, sizeof extra,
             "\"rows\":%lld,\"threads\":%d,\"outputs\":\"%s\",\"overhead_fraction\":%.4g,"
             "\"bar\":0.02,\"goal\":0.005,\"bar_met\":%s,\"ours_cpu_s\":%.6g,"
             "\"baseline_cpu_s\":%.6g,\"overhead_fraction_cpu\":%.4g,\"stage_macs\":%.0f,"
             "\"reach1\":%lld",
             (long long)m, threads,
             with_scores  ? "pred, exit_stage, exact score"
             : calibrated ? "pred, exit_stage; temperature-scaled stages"
                          : "pred, exit_stage",
             route_med / fwd_med, route_med / fwd_med <= 0.02 ? "true" : "false", route_cpu,
             fwd_cpu, route_cpu / fwd_cpu, macs,
             (long long)effml_cascade_workspace_reach_count(calibrated ? wsc : ws, 1));
    if (calibrated) { /* reported separately: no bar */
      char *bar = strstr(extra, "\"bar\":0.02,\"goal\":0.005,\"bar_met\":");
      if (bar) {
        char *rest = strchr(bar + 38, ',');
        memmove(bar, rest + 1, strlen(rest + 1) + 1);
      }
    }
    bu_report_runs("cascade",
                   with_scores  ? "cascade_routing_overhead_with_scores"
                   : calibrated ? "cascade_routing_overhead_calibrated"
                                : "cascade_routing_overhead",
                   tr, reps, "mlp_784_128_10_forward", tf, reps, extra);
  }
  effml_cascade_workspace_free(wsc);
  effml_cascade_free(cc);
  effml_calibration_free(tcal);

  effml_cascade_workspace_free(ws);
  effml_cascade_free(c);
  effml_tensor *all[] = {z0, z1, v0, v1, pred, score, stage, x, y, zm0, zm1};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) effml_tensor_free(all[i]);
  effml_layer_free(mlp);
  effml_context_free(ctx);
  return 0;
}
