/* probe_pool_spin: what the worker pool's spin time buys, on this machine.
 * The s = 0.9 block-sparse Sparse Wide forward (the bench_sparse case
 * sparse_wide_block_fwd_s90: batch 256, 1024 -> 1024, 2 threads) is called
 * again after the calling thread slept for a gap; for each spin time (and
 * per-call threads, "percall") and gap it prints one JSON line: the call's
 * wall time min / median / max over 15 tries and the process CPU per
 * gap + call cycle beyond the call's own (the spinning), in microseconds.
 * A gap shorter than the spin finds the workers awake; a longer one pays a
 * wake-up of a blocked worker (on an idle VM: of a halted vCPU).
 *
 * "probe_pool_spin THREADS ab block|csr [REPS]" instead times the bar cases'
 * protocol (bench_sparse): 0.1 s idle, an untimed call, a timed call, with
 * the pool on (default spin) and off (per-call threads) alternating, and
 * prints the medians and their ratio (off / on), REPS pairs (default 21).
 * Build: cmake --build build-bench --target probe_pool_spin. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "effml.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void sleep_s(double s) {
  if (s <= 0) return;
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 2;
  effml_context_options co;
  effml_context_options_init(&co);
  co.num_threads = threads;
  co.seed = 1;
  effml_context *ctx = NULL;
  if (effml_context_create(&co, &ctx) != EFFML_OK) return 1;
  effml_sparse_options o;
  effml_sparse_options_init(&o);
  o.sparsity = 0.9;
  o.bias = 0;
  const int ab = argc > 2 && strcmp(argv[2], "ab") == 0;
  o.block_rows = ab && argc > 3 && strcmp(argv[3], "csr") == 0 ? 1 : 4;
  effml_layer *l = NULL;
  const int64_t D = 1024, B = 256;
  if (effml_sparse_wide_create(ctx, D, D, &o, &l) != EFFML_OK) return 1;
  const int64_t W = effml_layer_in_features(l);
  int64_t sx[2] = {B, W}, sy[2] = {B, effml_layer_out_features(l)};
  effml_tensor *x = NULL, *y = NULL;
  if (effml_tensor_create(ctx, EFFML_F32, 2, sx, &x) != EFFML_OK ||
      effml_tensor_create(ctx, EFFML_F32, 2, sy, &y) != EFFML_OK)
    return 1;
  float *px = effml_tensor_data(x);
  for (int64_t i = 0; i < B * W; ++i) px[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  if (ab) {
    const int reps = argc > 4 ? atoi(argv[4]) : 21;
    double t[2][256];
    for (int k = 0; k < reps && k < 256; ++k)
      for (int h = 0; h < 2; ++h) {
        const int on = (k + h) & 1; /* alternate which side goes first */
        if (effml_context_set_thread_pool(ctx, on, EFFML_CORE_POOL_SPIN_DEFAULT) != EFFML_OK) return 1;
        sleep_s(0.1);
        if (effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER) != EFFML_OK) return 1;
        const double t0 = now();
        if (effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER) != EFFML_OK) return 1;
        t[on][k] = now() - t0;
      }
    const int n = reps < 256 ? reps : 256;
    qsort(t[0], (size_t)n, sizeof t[0][0], cmp);
    qsort(t[1], (size_t)n, sizeof t[1][0], cmp);
    printf("{\"layout\":\"%s\",\"threads\":%d,\"reps\":%d,\"percall_ms\":[%.3f,%.3f,%.3f],"
           "\"pool_ms\":[%.3f,%.3f,%.3f],\"percall_over_pool\":%.3f}\n",
           o.block_rows == 4 ? "block4x1" : "csr", threads, n, t[0][0] * 1e3, t[0][n / 2] * 1e3,
           t[0][n - 1] * 1e3, t[1][0] * 1e3, t[1][n / 2] * 1e3, t[1][n - 1] * 1e3,
           t[0][n / 2] / t[1][n / 2]);
    return 0;
  }
  const int spins[] = {-1, 0, 100, 300, 1000, 3000, 10000};
  const double gaps[] = {0.0, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.02, 0.1};
  enum { TRIES = 15 };
  for (size_t s = 0; s < sizeof spins / sizeof spins[0]; ++s) {
    if (effml_context_set_thread_pool(ctx, spins[s] >= 0, spins[s] >= 0 ? spins[s] : 0) != EFFML_OK)
      return 1;
    for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; ++g) {
      double t[TRIES], c[TRIES];
      for (int k = -2; k < TRIES; ++k) {
        if (effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER) != EFFML_OK) return 1;
        const double c0 = cpu();
        sleep_s(gaps[g]);
        const double t0 = now(), c1 = cpu();
        if (effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER) != EFFML_OK) return 1;
        const double t1 = now(), c2 = cpu();
        if (k >= 0) {
          t[k] = t1 - t0;
          c[k] = (c1 - c0); /* CPU burnt during the gap (the spinning) */
          (void)c2;
        }
      }
      qsort(t, TRIES, sizeof t[0], cmp);
      qsort(c, TRIES, sizeof c[0], cmp);
      if (spins[s] < 0)
        printf("{\"spin_us\":\"percall\"");
      else
        printf("{\"spin_us\":%d", spins[s]);
      printf(",\"gap_us\":%.0f,\"threads\":%d,\"call_us_min\":%.0f,\"call_us_med\":%.0f,"
             "\"call_us_max\":%.0f,\"gap_cpu_us_med\":%.0f}\n",
             gaps[g] * 1e6, threads, t[0] * 1e6, t[TRIES / 2] * 1e6, t[TRIES - 1] * 1e6,
             c[TRIES / 2] * 1e6);
      fflush(stdout);
    }
  }
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_layer_free(l);
  effml_context_free(ctx);
  return 0;
}
