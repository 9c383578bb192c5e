/* The context's worker pool (effml_context_set_thread_pool) behind
 * effml__parallel_for: the setter's errors, many short regions (every item
 * done exactly once, by the worker index the split assigns), a region
 * started from inside a region (no deadlock), changing num_threads with a
 * live pool, workers joined by disable and free, a child after fork(),
 * cancellation, and the same bytes with the pool on and off for the sparse,
 * sampler and LPHM kernels at 1, 2 and 3 threads. */
#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "../lib/core/internal.h"

/* Threads of this process named "effml-pool" (the pool's workers), from
 * /proc/self/task/<tid>/comm. */
static int count_threads(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[300], name[32] = {0};
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue; /* the thread has exited */
    if (fgets(name, sizeof name, f)) n += strcmp(name, "effml-pool\n") == 0;
    fclose(f);
  }
  closedir(d);
  return n;
}

START_TEST(setter_errors_and_getter) {
  effml_context *ctx = tu_ctx(1);
  int32_t spin = 123;
  ck_assert_int_eq(effml_context_thread_pool(ctx, &spin), 0);
  ck_assert_int_eq(spin, 0);
  ck_assert_int_eq(effml_context_thread_pool(NULL, &spin), 0);
  ck_assert_int_eq(effml_context_set_thread_pool(NULL, 1, 0), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, 2, 0), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "enabled=2 must be 0 or 1"));
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, 1, -2), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "spin_us=-2"));
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, 1, EFFML_CORE_POOL_SPIN_MAX + 1), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "spin_us=1000001"));
  ck_assert_int_eq(effml_context_thread_pool(ctx, NULL), 0); /* refused: still off */
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, 1, EFFML_CORE_POOL_SPIN_DEFAULT), EFFML_OK);
  ck_assert_int_eq(effml_context_thread_pool(ctx, &spin), 1);
  ck_assert_int_eq(spin, EFFML_CORE_POOL_SPIN_DEFAULT_US);
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, 1, 250), EFFML_OK); /* new spin, same pool */
  ck_assert_int_eq(effml_context_thread_pool(ctx, &spin), 1);
  ck_assert_int_eq(spin, 250);
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, 0, 77), EFFML_OK);
  ck_assert_int_eq(effml_context_thread_pool(ctx, &spin), 0);
  ck_assert_int_eq(spin, 0);
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, 0, 0), EFFML_OK); /* off again: no-op */
  effml_context_free(ctx);
}
END_TEST

/* A region that counts every item and checks its chunk against the split. */
typedef struct {
  atomic_int *hits;
  int64_t n, nt;
  atomic_int bad; /* chunks whose bounds or worker index do not match */
  effml_context *ctx; /* nested: a region inside chunk `nest_worker` */
  int32_t nest_worker;
  atomic_int *nest_hits;
  int64_t nest_n;
} region;

static void count_inner(void *p, int64_t b, int64_t e, int32_t w) {
  region *r = (region *)p;
  (void)w;
  for (int64_t i = b; i < e; ++i) atomic_fetch_add(&r->nest_hits[i], 1);
}

static void count_range(void *p, int64_t b, int64_t e, int32_t w) {
  region *r = (region *)p;
  if (b != r->n * w / r->nt || e != r->n * (w + 1) / r->nt) atomic_fetch_add(&r->bad, 1);
  for (int64_t i = b; i < e; ++i) atomic_fetch_add(&r->hits[i], 1);
  if (r->ctx && w == r->nest_worker) {
    region in;
    memset(&in, 0, sizeof in);
    in.nest_hits = r->nest_hits;
    (void)effml__parallel_for(r->ctx, r->nest_n, 1, count_inner, &in);
  }
}

/* Run `reps` regions of n items at `threads` threads; every item must be hit reps times. */
static void run_regions(effml_context *ctx, int32_t threads, int64_t n, int reps) {
  ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
  atomic_int *hits = calloc((size_t)n, sizeof *hits);
  ck_assert_ptr_nonnull(hits);
  region r;
  memset(&r, 0, sizeof r);
  r.hits = hits;
  r.n = n;
  r.nt = threads < n ? threads : n;
  if (r.nt > 64) r.nt = 64; /* the most threads a region uses */
  for (int k = 0; k < reps; ++k) ck_assert_int_eq(effml__parallel_for(ctx, n, 1, count_range, &r), EFFML_OK);
  ck_assert_msg(atomic_load(&r.bad) == 0, "%d chunks had other bounds or worker index than the split", atomic_load(&r.bad));
  for (int64_t i = 0; i < n; ++i) ck_assert_int_eq(atomic_load(&hits[i]), reps);
  free(hits);
}

START_TEST(many_short_regions) {
  effml_context *ctx = tu_ctx(1);
  const int base = count_threads();
  /* spin 0: every region wakes blocked workers; 50 us: some find them spinning; default */
  static const int32_t spins[3] = {0, 50, EFFML_CORE_POOL_SPIN_DEFAULT};
  for (int s = 0; s < 3; ++s) {
    ck_assert_int_eq(effml_context_set_thread_pool(ctx, 1, spins[s]), EFFML_OK);
    for (int32_t t = 2; t <= 4; ++t) {
      run_regions(ctx, t, 7, 3000 / t);
      run_regions(ctx, t, 1000, 200);
    }
    /* started lazily, one per extra thread, and kept */
    ck_assert_int_eq(effml__pool_workers(effml__ctx_pool(ctx)), 3);
    ck_assert_int_eq(count_threads(), base + 3);
    ck_assert_int_eq(effml_context_set_thread_pool(ctx, 0, 0), EFFML_OK); /* joins them */
    ck_assert_int_eq(count_threads(), base);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(nested_region_runs_per_call) {
  effml_context *ctx = tu_ctx(1);
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, 1, 20), EFFML_OK);
  for (int32_t t = 2; t <= 3; ++t) {
    ck_assert_int_eq(effml_context_set_num_threads(ctx, t), EFFML_OK);
    for (int32_t nest = 0; nest < t; ++nest) { /* from the caller's chunk and from each worker */
      const int64_t n = 12, nn = 900;
      atomic_int *hits = calloc((size_t)n, sizeof *hits), *inner = calloc((size_t)nn, sizeof *inner);
      region r;
      memset(&r, 0, sizeof r);
      r.hits = hits;
      r.n = n;
      r.nt = t;
      r.ctx = ctx;
      r.nest_worker = nest;
      r.nest_hits = inner;
      r.nest_n = nn;
      for (int k = 0; k < 50; ++k) ck_assert_int_eq(effml__parallel_for(ctx, n, 1, count_range, &r), EFFML_OK);
      ck_assert_msg(atomic_load(&r.bad) == 0, "%d chunks had other bounds or worker index than the split", atomic_load(&r.bad));
      for (int64_t i = 0; i < n; ++i) ck_assert_int_eq(atomic_load(&hits[i]), 50);
      for (int64_t i = 0; i < nn; ++i) ck_assert_int_eq(atomic_load(&inner[i]), 50);
      free(hits);
      free(inner);
    }
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(num_threads_changes_with_live_pool) {
  effml_context *ctx = tu_ctx(1);
  const int base = count_threads();
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, 1, 100), EFFML_OK);
  ck_assert_int_eq(count_threads(), base); /* nothing started before a region needs it */
  static const int32_t seq[7] = {4, 2, 3, 1, 5, 2, 64};
  static const int32_t workers[7] = {3, 1, 2, 0, 4, 1, 63};
  for (int k = 0; k < 7; ++k) {
    run_regions(ctx, seq[k], 257, 40);
    ck_assert_int_eq(effml__pool_workers(effml__ctx_pool(ctx)), workers[k]);
    ck_assert_int_eq(count_threads(), base + workers[k]);
  }
  /* more threads than the 64 a region uses: still 63 workers */
  run_regions(ctx, 1024, 5000, 3);
  ck_assert_int_eq(effml__pool_workers(effml__ctx_pool(ctx)), 63);
  effml_context_free(ctx); /* joins all 63 */
  ck_assert_int_eq(count_threads(), base);
}
END_TEST

#if defined(__SANITIZE_THREAD__)
#  define POOL_TSAN 1
#elif defined(__has_feature)
#  if __has_feature(thread_sanitizer)
#    define POOL_TSAN 1
#  endif
#endif

START_TEST(child_after_fork_runs_per_call) {
#ifdef POOL_TSAN
  return; /* ThreadSanitizer cannot start threads in a child of a threaded process */
#endif
  effml_context *ctx = tu_ctx(1);
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, 1, 100), EFFML_OK);
  run_regions(ctx, 3, 100, 20);
  ck_assert_int_eq(effml__pool_workers(effml__ctx_pool(ctx)), 2);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    /* the workers did not come along: regions run on per-call threads */
    atomic_int hits[300];
    for (int i = 0; i < 300; ++i) atomic_init(&hits[i], 0);
    region r;
    memset(&r, 0, sizeof r);
    r.hits = hits;
    r.n = 300;
    r.nt = 3;
    for (int k = 0; k < 20; ++k) (void)effml__parallel_for(ctx, 300, 1, count_range, &r);
    int ok = atomic_load(&r.bad) == 0;
    for (int i = 0; i < 300; ++i) ok &= atomic_load(&hits[i]) == 20;
    effml_context_free(ctx); /* must not wait for the parent's workers */
    _exit(ok ? 0 : 3);
  }
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFEXITED(status));
  ck_assert_int_eq(WEXITSTATUS(status), 0);
  run_regions(ctx, 3, 100, 20); /* the parent's pool still works */
  effml_context_free(ctx);
}
END_TEST

#ifndef EFFML_TEST_POOL_CORE_ONLY /* the cases below run kernels of other areas */
static int stop_at_second(void *user, const char *call, int64_t done, int64_t total) {
  (void)call;
  (void)done;
  (void)total;
  return ++*(int *)user >= 2;
}

START_TEST(cancel_with_pool) {
  effml_context *ctx = tu_ctx(1);
  ck_assert_int_eq(effml_context_set_num_threads(ctx, 2), EFFML_OK);
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, 1, EFFML_CORE_POOL_SPIN_DEFAULT), EFFML_OK);
  effml_tensor *x = tu_f32(ctx, 6000, 8, NULL);
  tu_fill_uniform(x, 2, -1, 1);
  int calls = 0;
  effml_context_set_progress(ctx, stop_at_second, &calls);
  effml_tensor *idx = NULL;
  ck_assert_int_eq(effml_sampler_knn(ctx, x, NULL, 5, &idx, NULL), EFFML_E_CANCELLED);
  ck_assert_ptr_null(idx);
  ck_assert_int_eq(calls, 2);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "effml_sampler_knn: cancelled after"));
  effml_context_set_progress(ctx, NULL, NULL);
  effml_context_set_cancel(ctx, 1);
  ck_assert_int_eq(effml_sampler_knn(ctx, x, NULL, 5, &idx, NULL), EFFML_E_CANCELLED);
  effml_context_set_cancel(ctx, 0);
  ck_assert_int_eq(effml_sampler_knn(ctx, x, NULL, 5, &idx, NULL), EFFML_OK);
  ck_assert_int_eq(effml__pool_workers(effml__ctx_pool(ctx)), 1);
  effml_tensor_free(idx);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

/* ---- same bytes, pool on and off ---- */

typedef struct {
  unsigned char *p;
  size_t n, cap;
} blob;

static void put(blob *b, const effml_tensor *t) {
  const size_t n = (size_t)effml_tensor_numel(t) * effml_tensor_dtype_size(effml_tensor_dtype(t));
  if (b->n + n > b->cap) {
    b->cap = 2 * (b->n + n);
    b->p = realloc(b->p, b->cap);
    ck_assert_ptr_nonnull(b->p);
  }
  memcpy(b->p + b->n, effml_tensor_data_const(t), n);
  b->n += n;
}

static effml_context *kernel_ctx(int32_t threads, int32_t pool) {
  effml_context *ctx = tu_ctx(11);
  ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
  ck_assert_int_eq(effml_context_set_thread_pool(ctx, pool, pool ? 200 : 0), EFFML_OK);
  return ctx;
}

/* forward (train) + backward of a layer: y, dx and every gradient */
static void layer_bytes(effml_context *ctx, effml_layer *l, int64_t batch, blob *b) {
  effml_tensor *x = tu_f32(ctx, batch, effml_layer_in_features(l), NULL);
  effml_tensor *y = tu_f32(ctx, batch, effml_layer_out_features(l), NULL);
  effml_tensor *dy = tu_f32(ctx, batch, effml_layer_out_features(l), NULL);
  effml_tensor *dx = tu_f32(ctx, batch, effml_layer_in_features(l), NULL);
  tu_fill_uniform(x, 5, -1, 1);
  tu_fill_uniform(dy, 6, -1, 1);
  effml_layer_zero_grad(l);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
  put(b, y);
  put(b, dx);
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
    if (effml_layer_param_grad(l, i)) put(b, effml_layer_param_grad(l, i));
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
  put(b, y);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(dy);
  effml_tensor_free(dx);
}

enum { K_SPARSE_BLOCK, K_SPARSE_CSR, K_LPHM, K_KNN, K_SMOTE, K_COUNT };
static const char *const kernel_name[K_COUNT] = {"sparse block", "sparse csr", "lphm", "knn", "smote"};

static blob kernel_bytes(int kind, int32_t threads, int32_t pool) {
  effml_context *ctx = kernel_ctx(threads, pool);
  blob b = {0};
  effml_layer *l = NULL;
  if (kind == K_SPARSE_BLOCK || kind == K_SPARSE_CSR) {
    effml_sparse_options o;
    effml_sparse_options_init(&o);
    o.sparsity = 0.9;
    o.block_rows = kind == K_SPARSE_BLOCK ? 4 : 1;
    ck_assert_msg(effml_sparse_wide_create(ctx, 384, 384, &o, &l) == EFFML_OK, "%s",
                  effml_context_last_error(ctx));
    layer_bytes(ctx, l, 128, &b);
  } else if (kind == K_LPHM) {
    effml_phm_rule *A = NULL;
    ck_assert_int_eq(effml_phm_rule_create(ctx, 4, 0.1, &A), EFFML_OK);
    effml_adapter_phm_options o;
    effml_adapter_phm_options_init(&o);
    ck_assert_int_eq(effml_adapter_phm_create(ctx, 768, 768, &o, A, &l), EFFML_OK);
    effml_phm_rule_free(A);
    layer_bytes(ctx, l, 1200, &b); /* >= 3 chunks of ~170 rows (thin_min_chunk) */
  } else {
    const int64_t n = 12000;
    effml_tensor *x = tu_f32(ctx, n, 8, NULL);
    tu_fill_uniform(x, 9, -1, 1);
    if (kind == K_KNN) {
      effml_tensor *idx = NULL, *dist = NULL;
      ck_assert_int_eq(effml_sampler_knn(ctx, x, NULL, 5, &idx, &dist), EFFML_OK);
      put(&b, idx);
      put(&b, dist);
      effml_tensor_free(idx);
      effml_tensor_free(dist);
    } else {
      effml_tensor *y = NULL, *xr = NULL, *yr = NULL;
      ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, &n, &y), EFFML_OK);
      int64_t *yy = (int64_t *)effml_tensor_data(y);
      for (int64_t i = 0; i < n; ++i) yy[i] = i % 5 == 0;
      effml_sampler_resample_options o;
      effml_sampler_resample_options_init(&o);
      ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_OK);
      put(&b, xr);
      put(&b, yr);
      effml_tensor_free(xr);
      effml_tensor_free(yr);
      effml_tensor_free(y);
    }
    effml_tensor_free(x);
  }
  /* the pool really ran the regions (workers were started) */
  ck_assert_msg(effml__pool_workers(effml__ctx_pool(ctx)) == (pool ? threads - 1 : 0),
                "%s: %d pool workers at threads=%d pool=%d", kernel_name[kind],
                (int)effml__pool_workers(effml__ctx_pool(ctx)), (int)threads, (int)pool);
  effml_layer_free(l);
  effml_context_free(ctx);
  return b;
}

START_TEST(kernels_same_bytes_pool_on_off) {
  for (int kind = 0; kind < K_COUNT; ++kind)
    for (int32_t threads = 1; threads <= 3; ++threads) {
      blob off = kernel_bytes(kind, threads, 0), on = kernel_bytes(kind, threads, 1);
      ck_assert_uint_gt(off.n, 0);
      if (on.n != off.n || memcmp(on.p, off.p, on.n) != 0)
        ck_abort_msg("%s: threads=%d gives other bytes with the pool on than off", kernel_name[kind],
                     (int)threads);
      free(on.p);
      free(off.p);
    }
}
END_TEST

#endif /* EFFML_TEST_POOL_CORE_ONLY */

int main(void) {
  Suite *s = suite_create("internal_pool");
  TCase *tc = tcase_create("pool");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, setter_errors_and_getter);
  tcase_add_test(tc, many_short_regions);
  tcase_add_test(tc, nested_region_runs_per_call);
  tcase_add_test(tc, num_threads_changes_with_live_pool);
  tcase_add_test(tc, child_after_fork_runs_per_call);
#ifndef EFFML_TEST_POOL_CORE_ONLY
  tcase_add_test(tc, cancel_with_pool);
  tcase_add_test(tc, kernels_same_bytes_pool_on_off);
#endif
  suite_add_tcase(s, tc);
  return tu_run(s) ? 1 : 0;
}
