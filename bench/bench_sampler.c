/* Sampler benchmarks (issue 6).  How the two sides meet: this program times
 * ours (one warm-up, then the median of --reps runs), writes the inputs as
 * .npy under /tmp and its timings to $EFFML_BENCH_SAMPLER_OURS (default
 * /tmp/effml_bench_sampler_ours.json); bench/sampler_baseline.py then times
 * the Python baseline on the same data and prints the combined JSON lines
 * (speedup = baseline_s / ours_s).  This program prints its own measurements
 * to stderr only.
 *
 * Cases:
 *   smote_200k_32    SMOTE, 200 000 x 32 f64, 5 % minority, k = 5, vs
 *                    imbalanced-learn 0.10 SMOTE.fit_resample; peak memory of
 *                    the library's own allocations (context allocator hook)
 *                    and the process peak RSS.
 *   leverage_1e6_32  exact leverage scores of 10^6 x 32 f64 vs numpy
 *                    (q, _ = np.linalg.qr(A); (q*q).sum(1)); the baseline
 *                    script also reports the max difference.
 *   temperature_draws  alias draws over 8 temperature-weighted sources on one
 *                    thread vs numpy Generator.choice(8, size, p=q).
 *
 * Options: --threads N (library threads, default 2), --reps N (default 3),
 * --quick (smaller sizes for a smoke run).  OpenBLAS threads are the caller's
 * (OPENBLAS_NUM_THREADS). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "effml.h"

/* Counting allocator: peak bytes held by the library. */
typedef struct {
  int64_t live, peak;
} counter;

static void *count_alloc(void *ud, size_t size) {
  counter *c = (counter *)ud;
  size_t *p = (size_t *)malloc(size + 64);
  if (!p) return NULL;
  p[0] = size;
  c->live += (int64_t)size;
  if (c->live > c->peak) c->peak = c->live;
  return (char *)p + 64;
}

static void count_free(void *ud, void *ptr) {
  counter *c = (counter *)ud;
  size_t *p = (size_t *)(void *)((char *)ptr - 64);
  c->live -= (int64_t)p[0];
  free(p);
}

/* splitmix64 of (seed, index) -> uniform [0,1): the baseline script regenerates nothing; it loads the .npy. */
static double unif(uint64_t seed, uint64_t i) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + i;
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return (double)(x >> 11) * 0x1.0p-53;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp_d);
  return v[n / 2];
}

#define CHECK(expr)                                                                  \
  do {                                                                               \
    effml_status st_ = (expr);                                                       \
    if (st_ != EFFML_OK) {                                                           \
      fprintf(stderr, "bench_sampler: %s failed: %s\n", #expr, effml_context_last_error(ctx)); \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

int main(int argc, char **argv) {
  int threads = 2, reps = 3, quick = 0;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--quick")) quick = 1;
  }
  if (reps < 1) reps = 1;
  if (reps > 15) reps = 15;
  counter cnt = {0, 0};
  effml_context_options co;
  effml_context_options_init(&co);
  co.num_threads = threads;
  co.alloc = count_alloc;
  co.free = count_free;
  co.alloc_user_data = &cnt;
  effml_context *ctx = NULL;
  if (effml_context_create(&co, &ctx) != EFFML_OK) return 1;
  const char *path = getenv("EFFML_BENCH_SAMPLER_OURS");
  if (!path || !*path) path = "/tmp/effml_bench_sampler_ours.json";
  FILE *js = fopen(path, "w");
  if (!js) return 1;
  fprintf(js, "{");
  double t[16];

  /* ---- smote_200k_32 ---- */
  {
    const int64_t n = quick ? 20000 : 200000, d = 32;
    int64_t xs[2] = {n, d};
    effml_tensor *x = NULL, *y = NULL;
    CHECK(effml_tensor_create(ctx, EFFML_F64, 2, xs, &x));
    CHECK(effml_tensor_create(ctx, EFFML_I64, 1, &n, &y));
    double *xp = (double *)effml_tensor_data(x);
    int64_t *yp = (int64_t *)effml_tensor_data(y);
    for (int64_t i = 0; i < n; ++i) {
      yp[i] = (i % 20 == 0); /* 5 % minority */
      for (int64_t j = 0; j < d; ++j) xp[i * d + j] = unif(1, (uint64_t)(i * d + j)) + 0.5 * (double)yp[i];
    }
    CHECK(effml_io_npy_save(ctx, "/tmp/effml_bench_sampler_smote_x.npy", x));
    CHECK(effml_io_npy_save(ctx, "/tmp/effml_bench_sampler_smote_y.npy", y));
    effml_sampler_resample_options o;
    effml_sampler_resample_options_init(&o);
    o.k_neighbors = 5;
    int64_t base_live = cnt.live;
    for (int r = -1; r < reps; ++r) {
      effml_tensor *xr = NULL, *yr = NULL;
      cnt.peak = cnt.live;
      double t0 = bu_now();
      CHECK(effml_sampler_resample(ctx, &o, x, y, &xr, &yr));
      if (r >= 0) t[r] = bu_now() - t0;
      effml_tensor_free(xr);
      effml_tensor_free(yr);
    }
    double ours = median(t, reps);
    /* peak of the last run: output tensors (x_out, y_out) + plan + working memory */
    double peak_mb = (double)(cnt.peak - base_live) / 1048576.0;
    double out_mb = (double)(n + (n - 2 * (n / 20))) * (double)(d + 1) * 8.0 / 1048576.0;
    fprintf(stderr, "bench_sampler: smote ours %.4f s, library peak %.1f MiB (outputs %.1f MiB)\n",
            ours, peak_mb, out_mb);
    fprintf(js, "\"smote_200k_32\": {\"ours_s\": %.9g, \"n\": %lld, \"d\": %lld, \"k\": 5, "
                "\"threads\": %d, \"reps\": %d, \"lib_peak_mb\": %.2f, \"output_mb\": %.2f, "
                "\"process_peak_rss_mb\": %.1f},\n",
            ours, (long long)n, (long long)d, threads, reps, peak_mb, out_mb,
            (double)bu_peak_rss() / 1048576.0);
    effml_tensor_free(x);
    effml_tensor_free(y);
  }

  /* ---- leverage_1e6_32 ---- */
  {
    const int64_t n = quick ? 100000 : 1000000, d = 32;
    int64_t as[2] = {n, d};
    effml_tensor *a = NULL, *tau = NULL;
    CHECK(effml_tensor_create(ctx, EFFML_F64, 2, as, &a));
    double *ap = (double *)effml_tensor_data(a);
    /* columns with scales 1 .. 1e-6 (cond ~ 1e6) and heavy rows every 1000th */
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j)
        ap[i * d + j] = (unif(2, (uint64_t)(i * d + j)) - 0.5) * (i % 1000 == 0 ? 50.0 : 1.0) *
                        (j == d - 1 ? 1e-6 : 1.0);
    CHECK(effml_io_npy_save(ctx, "/tmp/effml_bench_sampler_lev_a.npy", a));
    effml_sampler_leverage_options lo;
    effml_sampler_leverage_options_init(&lo);
    double ours_sk = 0;
    for (int method = 0; method < 2; ++method) {
      lo.method = method;
      for (int r = -1; r < reps; ++r) {
        effml_tensor_free(tau);
        tau = NULL;
        double t0 = bu_now();
        CHECK(effml_sampler_leverage_scores(ctx, &lo, a, &tau));
        if (r >= 0) t[r] = bu_now() - t0;
      }
      if (method == 0) {
        double ours = median(t, reps);
        CHECK(effml_io_npy_save(ctx, "/tmp/effml_bench_sampler_lev_tau.npy", tau));
        fprintf(stderr, "bench_sampler: leverage exact ours %.4f s\n", ours);
        fprintf(js, "\"leverage_1e6_32\": {\"ours_s\": %.9g, \"n\": %lld, \"d\": %lld, \"threads\": %d, "
                    "\"reps\": %d, \"method\": \"CholeskyQR2, Householder TSQR fallback\"},\n",
                ours, (long long)n, (long long)d, threads, reps);
      } else {
        ours_sk = median(t, reps);
        CHECK(effml_io_npy_save(ctx, "/tmp/effml_bench_sampler_lev_tau_sketch.npy", tau));
        fprintf(stderr, "bench_sampler: leverage sketch ours %.4f s\n", ours_sk);
        fprintf(js, "\"leverage_1e6_32_sketch\": {\"ours_s\": %.9g, \"n\": %lld, \"d\": %lld, "
                    "\"threads\": %d, \"reps\": %d, \"method\": \"CountSketch %lld rows\"},\n",
                ours_sk, (long long)n, (long long)d, threads, reps, (long long)(4 * d * d));
      }
    }
    effml_tensor_free(tau);
    effml_tensor_free(a);
  }

  /* ---- temperature_draws (one thread) ---- */
  {
    const double sizes[8] = {5e9, 2e9, 8e8, 3e8, 1e8, 2e7, 5e6, 1e6};
    double q[8];
    CHECK(effml_sampler_temperature_probs(ctx, sizes, 8, 3.33, q));
    const int64_t total = quick ? 10000000 : 100000000, chunk = 1000000;
    int64_t *buf = (int64_t *)malloc((size_t)chunk * sizeof(int64_t));
    effml_sampler_alias *al = NULL;
    CHECK(effml_sampler_alias_create(ctx, q, 8, 42, &al));
    int64_t sink = 0;
    for (int r = -1; r < reps; ++r) {
      double t0 = bu_now();
      for (int64_t done = 0; done < total; done += chunk) {
        CHECK(effml_sampler_alias_draw(ctx, al, chunk, buf));
        sink += buf[chunk - 1];
      }
      if (r >= 0) t[r] = bu_now() - t0;
    }
    double ours = median(t, reps);
    fprintf(stderr, "bench_sampler: temperature draws %.1f M/s (sink %lld)\n",
            (double)total / ours / 1e6, (long long)sink);
    fprintf(js, "\"temperature_draws\": {\"ours_s\": %.9g, \"draws\": %lld, \"threads\": 1, "
                "\"reps\": %d, \"temperature\": 3.33, \"q\": [",
            ours, (long long)total, reps);
    for (int i = 0; i < 8; ++i) fprintf(js, "%s%.17g", i ? ", " : "", q[i]);
    fprintf(js, "]}\n");
    effml_sampler_alias_free(al);
    free(buf);
  }
  fprintf(js, "}\n");
  fclose(js);
  effml_context_free(ctx);
  return 0;
}
