/* bench_train: one training epoch of the 784-256-128-10 ReLU MLP on
 * Fashion-MNIST (60 000 images; random data of the same shape when the
 * dataset is not installed), batch 128, AdamW, in libeffml -- side by side
 * with PyTorch CPU (bench/train_baseline.py, same model, batch, optimizer and
 * thread count).
 *
 * How the two sides meet: for each thread count (--threads, default "1,2")
 * this program times ours (--reps warm epochs, default 5, after one warm-up
 * epoch) with the library's context and OpenBLAS both set to that count, and
 * writes the raw runs to $EFFML_BENCH_TRAIN_OURS (default
 * /tmp/effml_bench_train_ours.json); scripts/bench.sh then runs
 * bench/train_baseline.py, which times PyTorch the same way at the same
 * thread counts, reads that file and prints one combined line per thread
 * count (speedup = baseline_s / ours_s), and alternates the two processes
 * several rounds.
 *
 * Our context keeps a worker pool for the library's loops
 * (effml_context_set_thread_pool, default spin time; "--no-pool" for
 * per-call threads, "--pool-spin US"); the machine line and the records say
 * so ("pool", "pool_spin_us").
 *
 * Also printed: the "gemm floor" case, the same epoch's GEMMs alone (no
 * gather, loss, activations or optimizer), timed interleaved with our epoch
 * (speedup = floor / ours), to show where the time goes. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "effml.h"

#define CASE "mlp_784_256_128_10_adamw_b128_epoch"

static void die(effml_context *ctx, const char *what) {
  fprintf(stderr, "bench_train: %s: %s\n", what, effml_context_last_error(ctx));
  exit(1);
}

static effml_layer *make_mlp(effml_context *ctx) {
  const int64_t w[4] = {784, 256, 128, 10};
  effml_layer *m, *l;
  if (effml_layer_sequential_create(ctx, &m)) die(ctx, "sequential");
  for (int k = 0; k < 3; ++k) {
    if (effml_layer_dense_create(ctx, w[k], w[k + 1], 1, &l) || effml_layer_sequential_add(ctx, m, l)) die(ctx, "dense");
    if (k < 2 && (effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &l) || effml_layer_sequential_add(ctx, m, l)))
      die(ctx, "relu");
  }
  return m;
}

/* The epoch's GEMMs alone: forward, dW and dx (not for the first layer). */
static double gemm_floor(int64_t n, int64_t batch) {
  const int w[4] = {784, 256, 128, 10};
  float *buf[4], *W[3], *dW[3], *g[4];
  for (int k = 0; k < 4; ++k) {
    buf[k] = calloc((size_t)batch * w[k], sizeof(float));
    g[k] = calloc((size_t)batch * w[k], sizeof(float));
  }
  for (int k = 0; k < 3; ++k) {
    W[k] = calloc((size_t)w[k] * w[k + 1], sizeof(float));
    dW[k] = calloc((size_t)w[k] * w[k + 1], sizeof(float));
  }
  const int b = (int)batch;
  double t0 = bu_now();
  for (int64_t s = 0; s < n / batch; ++s) {
    for (int k = 0; k < 3; ++k)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, w[k + 1], w[k], 1.0f, buf[k], w[k],
                  W[k], w[k], 0.0f, buf[k + 1], w[k + 1]);
    for (int k = 2; k >= 0; --k) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, w[k + 1], w[k], b, 1.0f, g[k + 1],
                  w[k + 1], buf[k], w[k], 1.0f, dW[k], w[k]);
      if (k > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, w[k], w[k + 1], 1.0f, g[k + 1],
                    w[k + 1], W[k], w[k], 0.0f, g[k], w[k]);
    }
  }
  double t = bu_now() - t0;
  for (int k = 0; k < 4; ++k) { free(buf[k]); free(g[k]); }
  for (int k = 0; k < 3; ++k) { free(W[k]); free(dW[k]); }
  return t;
}

int main(int argc, char **argv) {
  int reps = 5, nthr = 0, thr[8];
  const char *tlist = "1,2";
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) tlist = argv[++i];
  }
  if (reps < 1) reps = 1;
  if (reps > 16) reps = 16;
  for (const char *p = tlist; *p && nthr < 8;) {
    int v = atoi(p);
    if (v >= 1 && v <= 256) thr[nthr++] = v;
    p = strchr(p, ',');
    if (!p) break;
    ++p;
  }
  if (nthr == 0) thr[nthr++] = 2;
  const char *path = getenv("EFFML_BENCH_TRAIN_OURS");
  if (!path) path = "/tmp/effml_bench_train_ours.json";
  FILE *f = fopen(path, "w");
  if (f) fprintf(f, "{\"case\":\"%s\",\"runs\":[", CASE);
  for (int ti = 0; ti < nthr; ++ti) {
    const int threads = thr[ti];
    openblas_set_num_threads(threads);
    effml_context_options co;
    effml_context_options_init(&co);
    co.seed = 1;
    co.num_threads = threads;
    effml_context *ctx;
    if (effml_context_create(&co, &ctx)) return 1;
    char pool[96];
    if (bu_pool_setup(ctx, argc, argv, pool, sizeof pool) < 0) return 1;
    if (ti == 0) bu_machine("train", threads, pool);
    effml_tensor *x = NULL, *y = NULL;
    int real = effml_data_fashion_mnist_load(ctx, NULL, EFFML_DATA_SPLIT_TRAIN, &x, &y) == EFFML_OK;
    if (!real) {
      int64_t xs[2] = {60000, 784}, n = 60000;
      if (effml_tensor_create(ctx, EFFML_F32, 2, xs, &x) || effml_tensor_create(ctx, EFFML_I32, 1, &n, &y))
        die(ctx, "data");
      if (effml_tensor_init_uniform(ctx, x, 0, 1)) die(ctx, "init");
      int32_t *lab = effml_tensor_data(y);
      for (int64_t i = 0; i < n; ++i) lab[i] = (int32_t)(i % 10);
    }
    effml_layer *m = make_mlp(ctx);
    effml_optimizer_options oo;
    effml_optimizer_options_init(&oo); /* AdamW lr 1e-3, as torch.optim.AdamW defaults */
    effml_optimizer *opt;
    if (effml_optimizer_create(ctx, &oo, &opt) || effml_optimizer_add_layer(ctx, opt, m)) die(ctx, "optimizer");
    effml_train_options fo;
    effml_train_options_init(&fo);
    fo.batch_size = 128;
    double times[16], floors[16], loss = 0;
    for (int r = -1; r < reps; ++r) { /* r = -1: warm-up epoch */
      fo.shuffle_seed = (uint64_t)(r + 1);
      double t0 = bu_now();
      if (effml_train_classifier(ctx, m, opt, x, y, &fo, &loss)) die(ctx, "fit");
      double t1 = bu_now() - t0;
      double fl = gemm_floor(60000, 128); /* interleaved with the epochs */
      if (r >= 0) {
        times[r] = t1;
        floors[r] = fl;
      }
    }
    char extra[256];
    snprintf(extra, sizeof extra, "\"threads\":%d,\"note\":\"the epoch's sgemm calls alone\",%s", threads,
             pool);
    bu_report_runs("train", CASE "_vs_floor", times, reps, "the epoch's sgemm calls",
                   floors, reps, extra);
    if (f) {
      fprintf(f, "%s{\"threads\":%d,\"data\":\"%s\",\"final_loss\":%.4f,%s,\"ours_runs\":[", ti ? "," : "",
              threads, real ? "fashion-mnist" : "random", loss, pool);
      for (int r = 0; r < reps; ++r) fprintf(f, "%s%.6f", r ? "," : "", times[r]);
      fprintf(f, "]}");
    }
    double tm[16];
    memcpy(tm, times, sizeof tm);
    fprintf(stderr, "bench_train: %d threads: ours median %.3f s\n", threads, bu_median(tm, reps));
    effml_optimizer_free(opt);
    effml_layer_free(m);
    effml_tensor_free(x);
    effml_tensor_free(y);
    effml_context_free(ctx);
  }
  if (f) {
    fprintf(f, "]}\n");
    fclose(f);
  }
  return 0;
}
