/* bench_adapter: Compacter's LPHM layer and LoRA.
 *
 * Cases (JSON lines via bu_report):
 *   lphm_fwd_bwd_t5         k 768 -> d 24, n 4, r 1, 12 800 rows, forward + backward (with dx):
 *                           ours (factorized) vs the reference approach in PyTorch CPU
 *                           (build H = sum_i kron(A_i, s_i t_i) every call, x @ H + b, autograd).
 *   lphm_fwd_bwd_4096       LPHM as a full layer 4096 -> 4096, n 8, r 1, 2 048 rows, same baseline.
 *   lphm_vs_materialized_c  the T5 case in our own code: factorized vs materialized path.
 *   lphm_fwd_bwd_t5_vs_floor, lphm_fwd_bwd_4096_vs_floor
 *                           ours against the memory traffic the layer cannot avoid (x read
 *                           twice -- forward and dW --, dy read, y and dx written once),
 *                           timed interleaved run by run as copies/read passes in warm memory;
 *                           speedup = floor / ours.
 *   lora_unmerged_fwd       4096 x 4096 base, r 16, 512 rows, inference forward, unmerged:
 *                           ours vs the base GEMM alone (cblas_sgemm); goal speedup >= 0.91.
 *                           Extra keys: merged forward time and the merge/unmerge drift after
 *                           1 000 cycles on a 1024 x 1024, r 16 layer.
 *   dora_fwd_bwd_4096       4096 x 4096 base (frozen, bias), r 16, 512 rows, TRAIN forward + backward
 *                           with dx: DoRA vs LoRA, both ours, interleaved run by run (goal: DoRA
 *                           <= 1.3x LoRA, i.e. speedup >= 0.77); min/median/max of each.  Also
 *                           handed to adapter_baseline.py: PyTorch computing PEFT's DoRA
 *                           (DoraLinearLayer's formula, norm detached) with autograd.
 *
 * EFFML_BENCH_ADAPTER_ONLY=dora runs only the DoRA case here and in adapter_baseline.py.
 *
 * How the two sides meet (same pattern as bench_train): this program prints the
 * C-baseline cases itself and writes ours_s of the PyTorch cases to
 * $EFFML_BENCH_ADAPTER_OURS (default /tmp/effml_bench_adapter_ours.json);
 * scripts/bench.sh then runs bench/adapter_baseline.py, which times the PyTorch
 * reference with the same shapes and threads, reads that file and prints the
 * combined lines (speedup = baseline_s / ours_s).
 *
 * Threads: OpenBLAS's count is the caller's (OPENBLAS_NUM_THREADS); the
 * context uses the same number for its own loops (default 1 when unset), and
 * the Python side calls torch.set_num_threads with it.  The context keeps a
 * worker pool for its loops (effml_context_set_thread_pool, default spin
 * time; "--no-pool" for per-call threads, "--pool-spin US"); the machine line
 * says so ("pool", "pool_spin_us").  Timings are the median of --reps warm
 * runs after one warm-up run, same data. */
#define EFFML_EXPERIMENTAL /* effml_adapter_lora_merge_drift, effml_dst_training_flops, EFFML_SPARSE_COMPAT_FLOAT */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "effml.h"

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void die(effml_context *ctx, const char *what) {
  fprintf(stderr, "bench_adapter: %s: %s\n", what, effml_context_last_error(ctx));
  exit(1);
}

static effml_tensor *rand2d(effml_context *ctx, int64_t r, int64_t c, uint64_t seed) {
  int64_t shape[2] = {r, c};
  effml_tensor *t = NULL;
  if (effml_tensor_create(ctx, EFFML_F32, 2, shape, &t) != EFFML_OK) die(ctx, "tensor");
  float *p = effml_tensor_data(t);
  uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (int64_t i = 0; i < r * c; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    p[i] = (float)((double)(s >> 11) * 0x1.0p-53 * 2.0 - 1.0);
  }
  return t;
}

/* median seconds of reps runs of forward(TRAIN)+backward (or forward INFER when infer) */
static double time_layer(effml_context *ctx, effml_layer *l, effml_tensor *x, effml_tensor *y,
                         effml_tensor *dy, effml_tensor *dx, int infer, int reps) {
  double t[32];
  for (int k = -1; k < reps; ++k) {
    double t0 = bu_now();
    if (effml_layer_forward(ctx, l, x, y, infer ? EFFML_LAYER_MODE_INFER : EFFML_LAYER_MODE_TRAIN) != EFFML_OK)
      die(ctx, "forward");
    if (!infer) {
      effml_layer_zero_grad(l);
      if (effml_layer_backward(ctx, l, dy, dx) != EFFML_OK) die(ctx, "backward");
    }
    if (k >= 0) t[k] = bu_now() - t0;
  }
  qsort(t, (size_t)reps, sizeof t[0], cmp_double);
  return t[reps / 2];
}

static effml_layer *make_lphm(effml_context *ctx, int64_t in, int64_t out, int64_t n) {
  effml_phm_rule *A = NULL;
  if (effml_phm_rule_create(ctx, n, 1e-4, &A) != EFFML_OK) die(ctx, "rule");
  effml_adapter_phm_options o;
  effml_adapter_phm_options_init(&o);
  effml_layer *l = NULL;
  if (effml_adapter_phm_create(ctx, in, out, &o, A, &l) != EFFML_OK) die(ctx, "lphm");
  effml_phm_rule_free(A);
  return l;
}

/* One streaming read pass over v[0..n) (16 accumulators: bound by memory, not by add latency). */
static float read_pass_f32(const float *v, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) acc[l] += v[i + l];
  float s = 0;
  for (int l = 0; l < 16; ++l) s += acc[l];
  for (; i < n; ++i) s += v[i];
  return s;
}

/* Forward (TRAIN) + backward with dx, reps runs into t[]; when fl != NULL the
 * case's memory floor is timed interleaved, run by run, into fl[]: x read
 * twice, dy read once, y and dx written once, all into warm memory (a copy
 * x -> dx, a copy dy -> y and one more read pass over x). */
static double lphm_case(effml_context *ctx, int64_t in, int64_t out, int64_t n, int64_t rows,
                        int reps, int path, double *t, double *fl) {
  effml_layer *l = make_lphm(ctx, in, out, n);
  effml_adapter_phm_set_path(ctx, l, path);
  effml_tensor *x = rand2d(ctx, rows, in, 1), *y = rand2d(ctx, rows, out, 2);
  effml_tensor *dy = rand2d(ctx, rows, out, 3), *dx = rand2d(ctx, rows, in, 4);
  float *fdx = malloc((size_t)(rows * in) * sizeof(float)), *fy = malloc((size_t)(rows * out) * sizeof(float));
  if (!fdx || !fy) die(ctx, "floor buffers");
  memset(fdx, 0, (size_t)(rows * in) * sizeof(float));
  memset(fy, 0, (size_t)(rows * out) * sizeof(float));
  volatile float sink = 0;
  for (int k = -1; k < reps; ++k) {
    double t0 = bu_now();
    if (effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN) != EFFML_OK) die(ctx, "forward");
    effml_layer_zero_grad(l);
    if (effml_layer_backward(ctx, l, dy, dx) != EFFML_OK) die(ctx, "backward");
    double t1 = bu_now();
    if (fl) {
      memcpy(fdx, effml_tensor_data(x), (size_t)(rows * in) * sizeof(float));
      memcpy(fy, effml_tensor_data(dy), (size_t)(rows * out) * sizeof(float));
      sink += read_pass_f32(effml_tensor_data(x), rows * in);
    }
    double t2 = bu_now();
    if (k >= 0) {
      t[k] = t1 - t0;
      if (fl) fl[k] = t2 - t1;
    }
  }
  free(fdx);
  free(fy);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(dy);
  effml_tensor_free(dx);
  effml_layer_free(l);
  double c[32];
  memcpy(c, t, (size_t)reps * sizeof *c);
  return bu_median(c, reps);
}

static effml_layer *make_lora4096(effml_context *ctx, int dora) {
  effml_layer *d = NULL, *l = NULL;
  if (effml_layer_dense_create(ctx, 4096, 4096, 1, &d) != EFFML_OK) die(ctx, "dense");
  effml_adapter_lora_options lo;
  effml_adapter_lora_options_init(&lo);
  lo.rank = 16;
  lo.alpha = 32;
  lo.use_dora = dora;
  if (effml_adapter_lora_create(ctx, d, &lo, &l) != EFFML_OK) die(ctx, "lora/dora");
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
    if (strcmp(effml_layer_param_name(l, i), "lora_B.weight") == 0) { /* trained-looking B */
      float *b = effml_tensor_data(effml_layer_param(l, i));
      for (int64_t k = 0; k < 4096 * 16; ++k) b[k] = 0.01f * sinf((float)k);
    }
  return l;
}

/* DoRA vs LoRA forward+backward, interleaved; returns DoRA's median, prints the line. */
static double dora_case(effml_context *ctx, int threads, int reps) {
  effml_layer *ld = make_lora4096(ctx, 1), *ll = make_lora4096(ctx, 0);
  effml_tensor *x = rand2d(ctx, 512, 4096, 8), *y = rand2d(ctx, 512, 4096, 9);
  effml_tensor *dy = rand2d(ctx, 512, 4096, 10), *dx = rand2d(ctx, 512, 4096, 11);
  double td[32], tl[32], ratio[32];
  for (int k = -1; k < reps; ++k) {
    double a = time_layer(ctx, ld, x, y, dy, dx, 0, 1);
    double b = time_layer(ctx, ll, x, y, dy, dx, 0, 1);
    if (k >= 0) {
      td[k] = a;
      tl[k] = b;
      ratio[k] = a / b; /* paired: the two runs of one pair see the same machine load */
    }
  }
  qsort(ratio, (size_t)reps, sizeof ratio[0], cmp_double);
  qsort(td, (size_t)reps, sizeof td[0], cmp_double);
  qsort(tl, (size_t)reps, sizeof tl[0], cmp_double);
  char extra[512];
  snprintf(extra, sizeof extra,
           "\"threads\":%d,\"rows\":512,\"in\":4096,\"out\":4096,\"rank\":16,\"reps\":%d,"
           "\"ours_min_s\":%.6g,\"ours_max_s\":%.6g,\"baseline_min_s\":%.6g,\"baseline_max_s\":%.6g,"
           "\"interleaved\":true,\"paired_ratio_median\":%.4g,\"paired_ratio_min\":%.4g,"
           "\"paired_ratio_max\":%.4g,\"goal_ratio_max\":1.3",
           threads, reps, td[0], td[reps - 1], tl[0], tl[reps - 1], ratio[reps / 2], ratio[0], ratio[reps - 1]);
  bu_report("adapter", "dora_vs_lora_fwd_bwd_4096", td[reps / 2], "effml_lora_fwd_bwd", tl[reps / 2], extra);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(dy);
  effml_tensor_free(dx);
  effml_layer_free(ld);
  effml_layer_free(ll);
  return td[reps / 2];
}

int main(int argc, char **argv) {
  int reps = 5;
  for (int i = 1; i + 1 < argc; ++i)
    if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[++i]);
  if (reps < 1 || reps > 31) reps = 5;
  const char *env = getenv("OPENBLAS_NUM_THREADS");
  int threads = env ? atoi(env) : 1;
  if (threads < 1) threads = 1;
  effml_context_options co;
  effml_context_options_init(&co);
  co.num_threads = threads;
  co.seed = 7;
  effml_context *ctx = NULL;
  if (effml_context_create(&co, &ctx) != EFFML_OK) return 1;
  char pool[96];
  if (bu_pool_setup(ctx, argc, argv, pool, sizeof pool) < 0) return 1;
  bu_machine("adapter", threads, pool);
  char extra[256];
  const char *only = getenv("EFFML_BENCH_ADAPTER_ONLY");
  const char *ours_path = getenv("EFFML_BENCH_ADAPTER_OURS");
  if (ours_path == NULL) ours_path = "/tmp/effml_bench_adapter_ours.json";
  double dora = dora_case(ctx, threads, reps);
  if (only && strcmp(only, "dora") == 0) {
    FILE *f = fopen(ours_path, "w");
    if (f) {
      fprintf(f, "{\"threads\":%d,\"dora_fwd_bwd_4096\":%.9g}\n", threads, dora);
      fclose(f);
    }
    effml_context_free(ctx);
    return 0;
  }

  /* PyTorch-baseline cases: ours only (raw runs), handed to adapter_baseline.py;
   * the memory floors are ours' own lines here */
  double t5r[32], t5f[32], bigr[32], bigf[32];
  double t5 = lphm_case(ctx, 768, 24, 4, 12800, reps, EFFML_ADAPTER_PHM_PATH_FACTORIZED, t5r, t5f);
  double big = lphm_case(ctx, 4096, 4096, 8, 2048, reps, EFFML_ADAPTER_PHM_PATH_FACTORIZED, bigr, bigf);
  snprintf(extra, sizeof extra,
           "\"threads\":%d,\"rows\":12800,\"k\":768,\"d\":24,\"phm_dim\":4,\"rank\":1,"
           "\"floor_bytes\":%lld", threads, (long long)(12800LL * (2 * 768 + 768 + 2 * 24) * 4));
  bu_report_runs("adapter", "lphm_fwd_bwd_t5_vs_floor", t5r, reps,
                 "floor: x read twice, dx written, dy read, y written (warm)", t5f, reps, extra);
  snprintf(extra, sizeof extra,
           "\"threads\":%d,\"rows\":2048,\"k\":4096,\"d\":4096,\"phm_dim\":8,\"rank\":1,"
           "\"floor_bytes\":%lld", threads, (long long)(2048LL * (3 * 4096 + 2 * 4096) * 4));
  bu_report_runs("adapter", "lphm_fwd_bwd_4096_vs_floor", bigr, reps,
                 "floor: x read twice, dx written, dy read, y written (warm)", bigf, reps, extra);
  FILE *f = fopen(ours_path, "w");
  if (f) {
    fprintf(f, "{\"threads\":%d,\"lphm_fwd_bwd_t5\":%.9g,\"lphm_fwd_bwd_4096\":%.9g,\"dora_fwd_bwd_4096\":%.9g",
            threads, t5, big, dora);
    fprintf(f, ",\"lphm_fwd_bwd_t5_runs\":[");
    for (int k = 0; k < reps; ++k) fprintf(f, "%s%.9g", k ? "," : "", t5r[k]);
    fprintf(f, "],\"lphm_fwd_bwd_4096_runs\":[");
    for (int k = 0; k < reps; ++k) fprintf(f, "%s%.9g", k ? "," : "", bigr[k]);
    fprintf(f, "]}\n");
    fclose(f);
  }
  fprintf(stderr, "bench_adapter: ours lphm_fwd_bwd_t5 %.4f s, lphm_fwd_bwd_4096 %.4f s (-> %s)\n", t5, big,
          ours_path);

  /* factorized vs materialized, both ours */
  double matr[32];
  lphm_case(ctx, 768, 24, 4, 12800, reps, EFFML_ADAPTER_PHM_PATH_MATERIALIZED, matr, NULL);
  snprintf(extra, sizeof extra, "\"threads\":%d,\"rows\":12800,\"k\":768,\"d\":24,\"phm_dim\":4,\"rank\":1", threads);
  bu_report_runs("adapter", "lphm_vs_materialized_c", t5r, reps, "effml_materialized", matr, reps, extra);

  /* LoRA unmerged forward vs the base GEMM alone */
  {
    int64_t in = 4096, out = 4096, rows = 512;
    effml_layer *d = NULL, *l = NULL;
    if (effml_layer_dense_create(ctx, in, out, 0, &d) != EFFML_OK) die(ctx, "dense");
    effml_adapter_lora_options lo;
    effml_adapter_lora_options_init(&lo);
    lo.rank = 16;
    lo.alpha = 16;
    if (effml_adapter_lora_create(ctx, d, &lo, &l) != EFFML_OK) die(ctx, "lora");
    for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
      if (strcmp(effml_layer_param_name(l, i), "lora_B.weight") == 0) { /* trained-looking B */
        float *b = effml_tensor_data(effml_layer_param(l, i));
        for (int64_t k = 0; k < out * 16; ++k) b[k] = 0.01f * sinf((float)k);
      }
    effml_tensor *x = rand2d(ctx, rows, in, 5), *y = rand2d(ctx, rows, out, 6);
    double ours = time_layer(ctx, l, x, y, NULL, NULL, 1, reps);
    const float *W = effml_tensor_data_const(effml_layer_param(d, 0));
    double tb[32];
    for (int k = -1; k < reps; ++k) {
      double t0 = bu_now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)out, (int)in, 1.0f,
                  effml_tensor_data_const(x), (int)in, W, (int)in, 0.0f, effml_tensor_data(y), (int)out);
      if (k >= 0) tb[k] = bu_now() - t0;
    }
    qsort(tb, (size_t)reps, sizeof tb[0], cmp_double);
    effml_adapter_lora_merge(ctx, l);
    double merged = time_layer(ctx, l, x, y, NULL, NULL, 1, reps);
    effml_adapter_lora_unmerge(ctx, l);
    effml_tensor_free(x);
    effml_tensor_free(y);
    effml_layer_free(l);
    /* drift of 1 000 merge/unmerge cycles */
    if (effml_layer_dense_create(ctx, 1024, 1024, 0, &d) != EFFML_OK || effml_adapter_lora_create(ctx, d, &lo, &l) != EFFML_OK)
      die(ctx, "lora 1024");
    for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
      if (strcmp(effml_layer_param_name(l, i), "lora_B.weight") == 0) {
        float *b = effml_tensor_data(effml_layer_param(l, i));
        for (int64_t k = 0; k < 1024 * 16; ++k) b[k] = 0.01f * sinf((float)k);
      }
    double dabs = 0, drel = 0;
    effml_adapter_lora_merge_drift(ctx, l, 1000, &dabs, &drel);
    effml_layer_free(l);
    snprintf(extra, sizeof extra,
             "\"threads\":%d,\"rows\":512,\"in\":4096,\"out\":4096,\"rank\":16,\"merged_s\":%.6g,"
             "\"merge_drift_1000_abs\":%.3g,\"merge_drift_1000_rel\":%.3g",
             threads, merged, dabs, drel);
    bu_report("adapter", "lora_unmerged_fwd", ours, "cblas_sgemm_base", tb[reps / 2], extra);
  }
  effml_context_free(ctx);
  return 0;
}
