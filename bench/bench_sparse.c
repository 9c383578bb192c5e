/*
 * Sparse-IFT kernels vs dense GEMM (OpenBLAS cblas_sgemm).  Every baseline
 * here is C, so this program times both sides itself (no Python baseline):
 * same data, same process, warm runs, median of several repetitions, the
 * library's thread count equal to OpenBLAS's (`--threads N` sets both via
 * the context and OPENBLAS_NUM_THREADS is left to the caller).
 *
 * Cases (one JSON line each, bu_report keys):
 *   sparse_wide_fwd_s{50,75,90,95}         Sparse Wide layer derived from a
 *        dense 1024x1024 layer (both sides widened, nnz = 1024²), batch 256,
 *        forward (INFER), vs the dense layer's GEMM            (baseline dense_gemm)
 *   sparse_wide_fwd_s{..}_vs_masked        same, vs the reference code's
 *        masked-dense GEMM of the widened matrix               (baseline masked_dense)
 *   sparse_linear_fwd_bwd_s90              one 1024x1024 layer at s = 0.9,
 *        forward + backward (dX and nonzero dW) vs masked-dense forward +
 *        backward (3 GEMMs + masking dW)                       (baseline masked_dense)
 *   sparse_wide_fwd_bwd_s90                the s = 0.9 Sparse Wide layer, same
 *   sparse_linear_fwd_s{50..98}            crossover sweep: a 1024x1024 layer
 *        at sparsity s vs the dense GEMM of the same shape      (baseline dense_gemm)
 *   sparse_wide_block_fwd_s90              the s = 0.9 Sparse Wide layer with the
 *        4x1 block-sparse layout (block_rows = 4), forward, vs the dense
 *        1024x1024 GEMM of the same FLOPs                     (baseline dense_gemm)
 *   sparse_wide_block_fwd_bwd_s90          same, forward + backward (dX and the
 *        nonzero dW) vs the dense layer's 3 GEMMs              (baseline dense_gemm)
 *   sparse_layout_rowmajor_s90             layout check: our batch-minor kernel vs
 *        a row-major CSR kernel (sparse dot per sample, scalar) (baseline csr_rowmajor)
 *   sparse_wide_fwd_s90_percall, sparse_wide_block_fwd_s90_percall
 *        the two bar cases again with the library's worker pool off (threads
 *        started per call), so what the pool buys shows    (baseline dense_gemm)
 *
 * Our context keeps a worker pool (effml_context_set_thread_pool, default
 * spin time) unless --no-pool is given; the machine line and every case say
 * so ("pool", "pool_spin_us").  OpenBLAS keeps its own workers spinning
 * after each call; the pool gives the library's loops the same.
 *
 * Usage: bench_sparse [--threads N] [--quick] [--cpu] [--no-pool] [--pool-spin US]
 *   --cpu  time with the process CPU clock instead of the wall clock: on a
 *          shared, overloaded machine this is the fair measure, but only with
 *          --threads 1 and OPENBLAS_NUM_THREADS=1 (it sums all threads).
 */
#include <time.h>
#include <sys/resource.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "effml.h"
#include "../lib/sparse/sparse_internal.h"

static int g_quick = 0, g_cpu = 0;
/* "\"pool\":1,\"pool_spin_us\":N" of our context (bu_pool_setup), added to every case */
static char g_pool[96];

static double now(void);

static double now(void) {
  if (!g_cpu) return bu_now();
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef void (*bench_fn)(void *);

/* Warm runs of ours and the baseline *interleaved* (a, b, a, b, ...) so
 * load from other processes hits both alike; medians.
 *
 * Each side is timed in its own steady state, as if the caller ran it in a
 * loop by itself: every timed call directly follows an untimed call of the
 * same side, and ours starts only once no other thread of the process runs
 * (bu_quiesce).  Without that wait ours would start inside the window in
 * which OpenBLAS's worker busy-waits after the baseline's sgemm (about
 * 2^28 TSC cycles, ~0.1 s; OPENBLAS_THREAD_TIMEOUT): the library's two
 * threads then share the two cores with it (measured under load: the
 * OpenBLAS worker used 7-35 ms of CPU inside single 10-30 ms forwards), which
 * is what split the block forward's idle runs into a 3.8-4.0 ms and a
 * 6.2-6.9 ms group.  The baseline keeps its workers hot (its own untimed
 * call just before), as in the earlier protocol, where ours never took long
 * enough for them to sleep.  The seconds waited are reported as
 * "quiesce_s" (sum over the case's repetitions), the median process CPU
 * seconds of each side's timed calls as "ours_cpu_s" / "baseline_cpu_s"
 * (ours_cpu_s / (ours_s x threads) near 1: the library's threads were busy
 * the whole call; the baseline's includes OpenBLAS's busy-waiting), and the
 * median minor page faults per timed call as "ours_minflt" /
 * "baseline_minflt" (scratch that lands on fresh pages costs ~2 GB/s here). */
/* raw runs of the last time_pair (for bu_report_runs) */
static double g_last[2][16];
static int g_nlast;
static double g_quiesce;
/* median process CPU seconds of the timed calls: ours / (wall x threads)
 * near 1 means the library's threads were busy the whole call */
static double g_cpu_med[2];

/* median minor page faults of each side's timed calls (fresh scratch pages) */
static double g_flt_med[2];

static long minflt(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

static double proc_cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void time_pair(bench_fn fa, void *a, bench_fn fb, void *b, double *ta, double *tb) {
  int reps = g_quick ? 5 : 9;
  double t[2][16], c[2][16], f[2][16];
  g_quiesce = 0.0;
  for (int i = 0; i < reps; ++i) {
    g_quiesce += bu_quiesce(1.0);
    fa(a);
    long f0 = minflt();
    double c0 = proc_cpu(), t0 = now();
    fa(a);
    double t1 = now(), c1 = proc_cpu();
    long f1 = minflt();
    (void)bu_pool_idle(1.0); /* our pool's workers stop spinning before the baseline runs */
    fb(b);
    long f2 = minflt();
    double c2 = proc_cpu(), t2 = now();
    fb(b);
    double t3 = now(), c3 = proc_cpu();
    long f3 = minflt();
    f[0][i] = (double)(f1 - f0);
    f[1][i] = (double)(f3 - f2);
    t[0][i] = t1 - t0;
    t[1][i] = t3 - t2;
    c[0][i] = c1 - c0;
    c[1][i] = c3 - c2;
  }
  for (int k = 0; k < 2; ++k) {
    g_cpu_med[k] = bu_median(c[k], reps);
    g_flt_med[k] = bu_median(f[k], reps);
  }
  memcpy(g_last, t, sizeof g_last);
  g_nlast = reps;
  for (int k = 0; k < 2; ++k)
    for (int i = 1; i < reps; ++i)
      for (int j = i; j > 0 && t[k][j] < t[k][j - 1]; --j) {
        double s = t[k][j]; t[k][j] = t[k][j - 1]; t[k][j - 1] = s;
      }
  *ta = t[0][reps / 2];
  *tb = t[1][reps / 2];
}

/* Report the last time_pair: min / median / max of both sides. */
static void report_last(const char *name, const char *baseline, const char *extra) {
  char ex[512];
  snprintf(ex, sizeof ex,
           "%s%s\"quiesce_s\":%.3f,\"ours_cpu_s\":%.6g,\"baseline_cpu_s\":%.6g,"
           "\"ours_minflt\":%.0f,\"baseline_minflt\":%.0f,%s",
           extra ? extra : "", extra && *extra ? "," : "", g_quiesce, g_cpu_med[0], g_cpu_med[1],
           g_flt_med[0], g_flt_med[1], g_pool);
  bu_report_runs("sparse", name, g_last[0], g_nlast, baseline, g_last[1], g_nlast, ex);
}

/* A bar case's forward again with the pool off (per-call threads, as
 * without effml_context_set_thread_pool), so what the pool buys shows. */
static void percall_case(const char *name, const char *extra, effml_context *ctx, void *j, void *g);

static void fill(float *p, int64_t n, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    p[i] = (float)((double)(s >> 11) * 0x1.0p-53 * 2.0 - 1.0);
  }
}

typedef struct {
  effml_context *ctx;
  effml_layer *layer;
  effml_tensor *x, *y, *dy, *dx;
  /* GEMM operands */
  int64_t M, N, K;
  float *A, *B, *C, *D, *E, *mask;
} job;

static void run_layer_fwd(void *p) {
  job *j = p;
  if (effml_layer_forward(j->ctx, j->layer, j->x, j->y, EFFML_LAYER_MODE_INFER) != EFFML_OK) abort();
}

static void run_layer_fwd_bwd(void *p) {
  job *j = p;
  if (effml_layer_forward(j->ctx, j->layer, j->x, j->y, EFFML_LAYER_MODE_TRAIN) != EFFML_OK) abort();
  effml_layer_zero_grad(j->layer);
  if (effml_layer_backward(j->ctx, j->layer, j->dy, j->dx) != EFFML_OK) abort();
}

/* y[M,N] = x[M,K] W[N,K]ᵀ */
static void run_gemm_fwd(void *p) {
  job *j = p;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->M, (int)j->N, (int)j->K, 1.0f,
              j->A, (int)j->K, j->B, (int)j->K, 0.0f, j->C, (int)j->N);
}

static void percall_case(const char *name, const char *extra, effml_context *ctx, void *j, void *g) {
  int32_t spin = 0;
  if (!effml_context_thread_pool(ctx, &spin)) return;
  if (effml_context_set_thread_pool(ctx, 0, 0) != EFFML_OK) abort();
  char keep[sizeof g_pool];
  memcpy(keep, g_pool, sizeof keep);
  snprintf(g_pool, sizeof g_pool, "\"pool\":0,\"pool_spin_us\":0");
  double t_ours, t_dense;
  time_pair(run_layer_fwd, j, run_gemm_fwd, g, &t_ours, &t_dense);
  report_last(name, "dense_gemm", extra);
  memcpy(g_pool, keep, sizeof keep);
  if (effml_context_set_thread_pool(ctx, 1, spin) != EFFML_OK) abort();
}

/* masked-dense forward + backward: y = x Wᵀ, dX = dY W, dW = (dYᵀ x) ⊙ mask */
static void run_gemm_fwd_bwd(void *p) {
  job *j = p;
  run_gemm_fwd(p);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)j->M, (int)j->K, (int)j->N, 1.0f,
              j->C, (int)j->N, j->B, (int)j->K, 0.0f, j->D, (int)j->K);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)j->N, (int)j->K, (int)j->M, 1.0f,
              j->C, (int)j->N, j->A, (int)j->K, 0.0f, j->E, (int)j->K);
  if (j->mask)
    for (int64_t i = 0; i < j->N * j->K; ++i) j->E[i] *= j->mask[i];
}

/* with_bwd: 1 = masked-dense backward (mask 1 in 10), 2 = plain dense backward */
static void gemm_job(job *j, int64_t M, int64_t N, int64_t K, int with_bwd) {
  j->M = M; j->N = N; j->K = K;
  j->A = malloc(sizeof(float) * (size_t)(M * K));
  j->B = malloc(sizeof(float) * (size_t)(N * K));
  j->C = malloc(sizeof(float) * (size_t)(M * N));
  fill(j->A, M * K, 1);
  fill(j->B, N * K, 2);
  if (with_bwd) {
    j->D = malloc(sizeof(float) * (size_t)(M * K));
    j->E = malloc(sizeof(float) * (size_t)(N * K));
    if (with_bwd == 1) {
      j->mask = malloc(sizeof(float) * (size_t)(N * K));
      for (int64_t i = 0; i < N * K; ++i) j->mask[i] = (i % 10) == 0;
    }
  }
}

static void gemm_free(job *j) {
  free(j->A); free(j->B); free(j->C); free(j->D); free(j->E); free(j->mask);
  j->A = j->B = j->C = j->D = j->E = j->mask = NULL;
}

static void layer_job(job *j, effml_context *ctx, effml_layer *l, int64_t batch) {
  int64_t in = effml_layer_in_features(l), out = effml_layer_out_features(l);
  int64_t sx[2] = {batch, in}, sy[2] = {batch, out};
  j->ctx = ctx;
  j->layer = l;
  effml_tensor_create(ctx, EFFML_F32, 2, sx, &j->x);
  effml_tensor_create(ctx, EFFML_F32, 2, sy, &j->y);
  effml_tensor_create(ctx, EFFML_F32, 2, sy, &j->dy);
  effml_tensor_create(ctx, EFFML_F32, 2, sx, &j->dx);
  fill(effml_tensor_data(j->x), batch * in, 3);
  fill(effml_tensor_data(j->dy), batch * out, 4);
}

static void layer_free(job *j) {
  effml_tensor_free(j->x); effml_tensor_free(j->y); effml_tensor_free(j->dy); effml_tensor_free(j->dx);
  effml_layer_free(j->layer);
}

/* row-major reference kernel on the layer's matrix */
typedef struct {
  effml__spmat *m;
  const float *v, *X;
  float *Y;
  int64_t batch;
} ref_job;
static void run_ref(void *p) {
  ref_job *r = p;
  effml__spmm_ref(r->m, r->v, r->X, r->batch, NULL, r->Y);
}

int main(int argc, char **argv) {
  int threads = openblas_get_num_threads();
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--quick") == 0) g_quick = 1;
    else if (strcmp(argv[i], "--cpu") == 0) g_cpu = 1;
  }
  if (threads < 1) threads = 1;
  effml_context_options co;
  effml_context_options_init(&co);
  co.num_threads = threads;
  co.seed = 1;
  effml_context *ctx = NULL;
  if (effml_context_create(&co, &ctx) != EFFML_OK) return 1;
  const int pool = bu_pool_setup(ctx, argc, argv, g_pool, sizeof g_pool);
  if (pool < 0) return 1;
  bu_machine("sparse", threads, g_pool);
  const int64_t D = 1024, B = 256;
  char extra[320];

  /* dense baseline of the 1024x1024 layer */
  job g = {0};
  gemm_job(&g, B, D, D, 0);

  static const double S[4] = {0.5, 0.75, 0.9, 0.95};
  static const char *SN[4] = {"50", "75", "90", "95"};
  for (int i = 0; i < 4; ++i) {
    effml_sparse_options o;
    effml_sparse_options_init(&o);
    o.sparsity = S[i];
    o.bias = 0;
    effml_layer *l = NULL;
    if (effml_sparse_wide_create(ctx, D, D, &o, &l) != EFFML_OK) {
      fprintf(stderr, "%s\n", effml_context_last_error(ctx));
      return 1;
    }
    const int64_t W = effml_layer_in_features(l);
    job j = {0};
    layer_job(&j, ctx, l, B);
    double t_ours, t_dense, t_ours2, t_masked;
    time_pair(run_layer_fwd, &j, run_gemm_fwd, &g, &t_ours, &t_dense);
    snprintf(extra, sizeof extra,
             "\"threads\":%d,\"clock\":\"%s\",\"width\":%lld,\"nnz\":%lld,\"batch\":%lld,\"gflops\":%.2f", threads, g_cpu ? "cpu" : "wall",
             (long long)W, (long long)effml_sparse_nnz(l), (long long)B,
             2.0 * (double)effml_sparse_nnz(l) * (double)B / t_ours * 1e-9);
    char name[96];
    snprintf(name, sizeof name, "sparse_wide_fwd_s%s", SN[i]);
    report_last(name, "dense_gemm", extra);
    job m = {0};
    gemm_job(&m, B, W, W, 0);
    time_pair(run_layer_fwd, &j, run_gemm_fwd, &m, &t_ours2, &t_masked);
    gemm_free(&m);
    snprintf(name, sizeof name, "sparse_wide_fwd_s%s_vs_masked", SN[i]);
    report_last(name, "masked_dense", extra);
    if (i == 2) {
      /* forward + backward of the s = 0.9 wide layer vs masked dense */
      double t_fb, t_mfb;
      job mb = {0};
      gemm_job(&mb, B, W, W, 1);
      time_pair(run_layer_fwd_bwd, &j, run_gemm_fwd_bwd, &mb, &t_fb, &t_mfb);
      gemm_free(&mb);
      report_last("sparse_wide_fwd_bwd_s90", "masked_dense", extra);
      /* layout: row-major CSR (sparse dot per sample) on the same matrix */
      effml__sparse_layer *s = effml__sparse_of(l);
      ref_job r = {&s->mats[0], effml_tensor_data(effml_layer_param(l, 0)),
                   effml_tensor_data(j.x), effml_tensor_data(j.y), B};
      double t_o, t_ref;
      time_pair(run_layer_fwd, &j, run_ref, &r, &t_o, &t_ref);
      report_last("sparse_layout_rowmajor_s90", "csr_rowmajor", extra);
    }
    if (i == 2 && pool) percall_case("sparse_wide_fwd_s90_percall", extra, ctx, &j, &g);
    layer_free(&j);
  }

  /* block-sparse (4x1) Sparse Wide at s = 0.9 vs the dense layer of the same FLOPs */
  {
    effml_sparse_options o;
    effml_sparse_options_init(&o);
    o.sparsity = 0.9;
    o.bias = 0;
    o.block_rows = 4;
    effml_layer *l = NULL;
    if (effml_sparse_wide_create(ctx, D, D, &o, &l) != EFFML_OK) {
      fprintf(stderr, "%s\n", effml_context_last_error(ctx));
      return 1;
    }
    job j = {0};
    layer_job(&j, ctx, l, B);
    double t_ours, t_dense;
    time_pair(run_layer_fwd, &j, run_gemm_fwd, &g, &t_ours, &t_dense);
    snprintf(extra, sizeof extra,
             "\"threads\":%d,\"clock\":\"%s\",\"width\":%lld,\"nnz\":%lld,\"batch\":%lld,"
             "\"block\":\"4x1\",\"gflops\":%.2f,\"dense_gflops\":%.2f",
             threads, g_cpu ? "cpu" : "wall", (long long)effml_layer_in_features(l),
             (long long)effml_sparse_nnz(l), (long long)B,
             2.0 * (double)effml_sparse_nnz(l) * (double)B / t_ours * 1e-9,
             2.0 * (double)(D * D) * (double)B / t_dense * 1e-9);
    report_last("sparse_wide_block_fwd_s90", "dense_gemm", extra);
    if (pool) percall_case("sparse_wide_block_fwd_s90_percall", extra, ctx, &j, &g);
    job db = {0};
    gemm_job(&db, B, D, D, 2);
    time_pair(run_layer_fwd_bwd, &j, run_gemm_fwd_bwd, &db, &t_ours, &t_dense);
    gemm_free(&db);
    snprintf(extra, sizeof extra,
             "\"threads\":%d,\"clock\":\"%s\",\"width\":%lld,\"nnz\":%lld,\"batch\":%lld,"
             "\"block\":\"4x1\"",
             threads, g_cpu ? "cpu" : "wall", (long long)effml_layer_in_features(l),
             (long long)effml_sparse_nnz(l), (long long)B);
    report_last("sparse_wide_block_fwd_bwd_s90", "dense_gemm", extra);
    layer_free(&j);
  }

  /* one 1024x1024 sparse layer at 0.9: forward + backward vs masked dense */
  {
    effml_sparse_options o;
    effml_sparse_options_init(&o);
    o.sparsity = 0.9;
    o.bias = 0;
    effml_layer *l = NULL;
    effml_sparse_linear_create(ctx, D, D, &o, &l);
    job j = {0};
    layer_job(&j, ctx, l, B);
    double t_fb, t_mfb;
    job mb = {0};
    gemm_job(&mb, B, D, D, 1);
    time_pair(run_layer_fwd_bwd, &j, run_gemm_fwd_bwd, &mb, &t_fb, &t_mfb);
    gemm_free(&mb);
    snprintf(extra, sizeof extra, "\"threads\":%d,\"clock\":\"%s\",\"width\":%lld,\"nnz\":%lld,\"batch\":%lld",
             threads, g_cpu ? "cpu" : "wall", (long long)D, (long long)effml_sparse_nnz(l), (long long)B);
    report_last("sparse_linear_fwd_bwd_s90", "masked_dense", extra);
    layer_free(&j);
  }

  /* crossover sweep: same shape, sparse vs dense GEMM */
  static const double C[7] = {0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98};
  static const char *CN[7] = {"50", "60", "70", "80", "90", "95", "98"};
  for (int i = 0; i < 7; ++i) {
    effml_sparse_options o;
    effml_sparse_options_init(&o);
    o.sparsity = C[i];
    o.bias = 0;
    effml_layer *l = NULL;
    effml_sparse_linear_create(ctx, D, D, &o, &l);
    job j = {0};
    layer_job(&j, ctx, l, B);
    double t, t_dense;
    time_pair(run_layer_fwd, &j, run_gemm_fwd, &g, &t, &t_dense);
    snprintf(extra, sizeof extra, "\"threads\":%d,\"clock\":\"%s\",\"width\":%lld,\"nnz\":%lld,\"batch\":%lld",
             threads, g_cpu ? "cpu" : "wall", (long long)D, (long long)effml_sparse_nnz(l), (long long)B);
    char name[64];
    snprintf(name, sizeof name, "sparse_linear_fwd_s%s", CN[i]);
    report_last(name, "dense_gemm", extra);
    layer_free(&j);
  }
  gemm_free(&g);
  effml_context_free(ctx);
  return 0;
}
