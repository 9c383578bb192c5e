/* effml__parallel_for: split a range over the context's threads with plain
 * pthreads (no OpenMP runtime, so ThreadSanitizer sees every edge).
 *
 * Two ways to run a region, with the same split and the same worker indices
 * (so the same bytes):
 *  - per call (the default): start nt - 1 threads, do chunk 0 here, join;
 *  - the context's pool (effml_context_set_thread_pool): workers started once
 *    and kept; after each region they spin for spin_us (pause + yield) before
 *    blocking on a condition variable, so a region that follows within that
 *    time finds them awake instead of paying a thread start or a wake-up of a
 *    halted virtual CPU (1-4 ms on the 2-core VM the benches run on).
 * A region entered while another region of the same pool runs (a kernel
 * calling parallel_for from a worker or from chunk 0), or from a child
 * process after fork(), runs per call and leaves the pool alone. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#  define _GNU_SOURCE /* pthread_setname_np */
#endif
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define EFFML__MAX_THREADS 64

typedef struct {
  effml__range_fn fn;
  void *arg;
  int64_t begin, end;
  int32_t worker;
} effml__chunk;

static void *effml__chunk_main(void *p) {
  effml__chunk *c = (effml__chunk *)p;
  c->fn(c->arg, c->begin, c->end, c->worker);
  return NULL;
}

/* ---- the pool ---- */

typedef struct effml__pool_worker {
  struct effml__pool *pool;
  pthread_t tid;
  int32_t index; /* runs chunk `index` (1..) of a region */
  uint64_t seen; /* the ticket when it was started */
} effml__pool_worker;

struct effml__pool {
  pthread_mutex_t mu;
  pthread_cond_t work; /* workers wait here for a new ticket */
  pthread_cond_t done; /* the caller waits here for pending == 0 */
  /* ticket = (region generation << 8) | participants: workers 1..participants
   * run the region; the others only note the generation and keep waiting. */
  _Atomic uint64_t ticket;
  atomic_int pending;   /* participants that have not finished the region */
  atomic_int stop;      /* set once, by effml__pool_free */
  atomic_int spin_us;   /* effml_context_set_thread_pool (read at each wait) */
  atomic_int active;    /* a region is running: a nested region runs per call */
  int sleepers;         /* workers blocked on `work` (under mu) */
  pid_t pid;            /* the process that started the workers */
  int32_t nworkers;     /* started workers: indices 1..nworkers */
  /* the current region; written before the ticket, read by participants */
  effml__range_fn fn;
  void *arg;
  int64_t n, nt;
  effml__pool_worker w[EFFML__MAX_THREADS];
};

static inline void effml__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static int64_t effml__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spin until `pred(p, v)` holds or `spin_us` has passed: 32 pauses between
 * checks, a sched_yield every 8 checks (other runnable threads of a loaded
 * machine get the core), the clock read every 8 checks.  1 if pred held. */
static int effml__spin_ticket(struct effml__pool *p, uint64_t seen, int spin_us) {
  if (spin_us <= 0) return 0;
  const int64_t deadline = effml__now_ns() + (int64_t)spin_us * 1000;
  for (unsigned k = 1;; ++k) {
    if (atomic_load_explicit(&p->ticket, memory_order_acquire) != seen ||
        atomic_load_explicit(&p->stop, memory_order_relaxed))
      return 1;
    for (int i = 0; i < 32; ++i) effml__cpu_relax();
    if ((k & 7) == 0) {
      if (effml__now_ns() >= deadline) return 0;
      sched_yield();
    }
  }
}

static int effml__spin_done(struct effml__pool *p, int spin_us) {
  if (spin_us <= 0) return atomic_load_explicit(&p->pending, memory_order_acquire) == 0;
  const int64_t deadline = effml__now_ns() + (int64_t)spin_us * 1000;
  for (unsigned k = 1;; ++k) {
    if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0) return 1;
    for (int i = 0; i < 32; ++i) effml__cpu_relax();
    if ((k & 7) == 0) {
      if (effml__now_ns() >= deadline) return 0;
      sched_yield();
    }
  }
}

static void *effml__pool_main(void *q) {
  effml__pool_worker *me = (effml__pool_worker *)q;
  struct effml__pool *p = me->pool;
  uint64_t seen = me->seen;
  int sat_out = 0; /* the last region did not include this worker: wait without spinning */
  for (;;) {
    if (sat_out ||
        !effml__spin_ticket(p, seen, atomic_load_explicit(&p->spin_us, memory_order_relaxed))) {
      pthread_mutex_lock(&p->mu);
      p->sleepers++;
      while (atomic_load_explicit(&p->ticket, memory_order_acquire) == seen &&
             !atomic_load_explicit(&p->stop, memory_order_relaxed))
        pthread_cond_wait(&p->work, &p->mu);
      p->sleepers--;
      pthread_mutex_unlock(&p->mu);
    }
    if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
    seen = atomic_load_explicit(&p->ticket, memory_order_acquire);
    sat_out = me->index > (int32_t)(seen & 0xff);
    if (sat_out) continue; /* not in this region */
    const int64_t n = p->n, nt = p->nt, t = me->index;
    p->fn(p->arg, n * t / nt, n * (t + 1) / nt, me->index);
    if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
      pthread_mutex_lock(&p->mu);
      pthread_cond_signal(&p->done);
      pthread_mutex_unlock(&p->mu);
    }
  }
  return NULL;
}

effml__pool *effml__pool_create(effml_context *ctx, int32_t spin_us) {
  effml__pool *p = (effml__pool *)effml__malloc(ctx, sizeof *p);
  if (p == NULL) return NULL;
  memset(p, 0, sizeof *p);
  if (pthread_mutex_init(&p->mu, NULL) != 0) goto fail0;
  if (pthread_cond_init(&p->work, NULL) != 0) goto fail1;
  if (pthread_cond_init(&p->done, NULL) != 0) goto fail2;
  atomic_init(&p->ticket, 0);
  atomic_init(&p->pending, 0);
  atomic_init(&p->stop, 0);
  atomic_init(&p->spin_us, spin_us);
  atomic_init(&p->active, 0);
  p->pid = getpid();
  return p;
fail2:
  pthread_cond_destroy(&p->work);
fail1:
  pthread_mutex_destroy(&p->mu);
fail0:
  effml__free(ctx, p);
  return NULL;
}

void effml__pool_set_spin(effml__pool *p, int32_t spin_us) {
  if (p) atomic_store_explicit(&p->spin_us, spin_us, memory_order_relaxed);
}

int32_t effml__pool_workers(const effml__pool *p) { return p ? p->nworkers : 0; }

void effml__pool_free(effml_context *ctx, effml__pool *p) {
  if (p == NULL) return;
  if (p->pid == getpid()) {
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->stop, 1, memory_order_release);
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int32_t i = 1; i <= p->nworkers; ++i) pthread_join(p->w[i].tid, NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
  }
  /* else: a child after fork(); the workers live only in the parent, and the
   * mutex may have been copied in any state: release the memory alone. */
  effml__free(ctx, p);
}

/* Start workers up to index `want`; stops at the first that cannot start
 * (tried again at the next region).  All signals are blocked in the workers
 * so that a process-directed signal goes to a thread of the application. */
static void effml__pool_grow(effml__pool *p, int32_t want) {
  if (p->nworkers >= want) return;
  sigset_t all, old;
  sigfillset(&all);
  const int masked = pthread_sigmask(SIG_SETMASK, &all, &old) == 0;
  while (p->nworkers < want) {
    effml__pool_worker *w = &p->w[p->nworkers + 1];
    w->pool = p;
    w->index = p->nworkers + 1;
    w->seen = atomic_load_explicit(&p->ticket, memory_order_relaxed);
    if (pthread_create(&w->tid, NULL, effml__pool_main, w) != 0) break;
#if defined(__linux__)
    (void)pthread_setname_np(w->tid, "effml-pool");
#endif
    p->nworkers++;
  }
  if (masked) pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Run a region of nt chunks on the pool.  Returns 0 (and does nothing) when
 * the pool cannot take it: nested in a running region, or after fork(). */
static int effml__pool_run(effml__pool *p, int64_t n, int64_t nt, effml__range_fn fn, void *arg) {
  if (p->pid != getpid()) return 0;
  if (atomic_exchange_explicit(&p->active, 1, memory_order_acquire)) return 0;
  effml__pool_grow(p, (int32_t)(nt - 1));
  const int64_t part = p->nworkers < nt - 1 ? p->nworkers : nt - 1;
  p->fn = fn;
  p->arg = arg;
  p->n = n;
  p->nt = nt;
  atomic_store_explicit(&p->pending, (int)part, memory_order_relaxed);
  if (part > 0) {
    pthread_mutex_lock(&p->mu);
    const uint64_t gen = (atomic_load_explicit(&p->ticket, memory_order_relaxed) >> 8) + 1;
    atomic_store_explicit(&p->ticket, (gen << 8) | (uint64_t)part, memory_order_release);
    if (p->sleepers) pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
  }
  fn(arg, 0, n / nt, 0);
  /* chunks without a worker (one could not be started): done here */
  for (int64_t t = part + 1; t < nt; ++t) fn(arg, n * t / nt, n * (t + 1) / nt, (int32_t)t);
  if (part > 0 && !effml__spin_done(p, atomic_load_explicit(&p->spin_us, memory_order_relaxed))) {
    pthread_mutex_lock(&p->mu);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0)
      pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
  }
  atomic_store_explicit(&p->active, 0, memory_order_release);
  return 1;
}

/* ---- the entry point ---- */

effml_status effml__parallel_for(effml_context *ctx, int64_t n, int64_t min_chunk,
                                 effml__range_fn fn, void *arg) {
  if (n <= 0) return EFFML_OK;
  if (min_chunk < 1) min_chunk = 1;
  int64_t nt = effml__ctx_threads(ctx);
  if (nt > n / min_chunk) nt = n / min_chunk;
  if (nt > EFFML__MAX_THREADS) nt = EFFML__MAX_THREADS;
  if (nt <= 1) {
    fn(arg, 0, n, 0);
    return EFFML_OK;
  }
  effml__pool *pool = effml__ctx_pool(ctx);
  if (pool && effml__pool_run(pool, n, nt, fn, arg)) return EFFML_OK;
  effml__chunk chunks[EFFML__MAX_THREADS];
  pthread_t tids[EFFML__MAX_THREADS];
  int started[EFFML__MAX_THREADS] = {0};
  for (int64_t t = 0; t < nt; ++t) {
    chunks[t].fn = fn;
    chunks[t].arg = arg;
    chunks[t].begin = n * t / nt;
    chunks[t].end = n * (t + 1) / nt;
    chunks[t].worker = (int32_t)t;
  }
  for (int64_t t = 1; t < nt; ++t)
    started[t] = pthread_create(&tids[t], NULL, effml__chunk_main, &chunks[t]) == 0;
  fn(arg, chunks[0].begin, chunks[0].end, 0);
  for (int64_t t = 1; t < nt; ++t) {
    if (started[t])
      pthread_join(tids[t], NULL);
    else /* could not start a thread: do its share here */
      fn(arg, chunks[t].begin, chunks[t].end, (int32_t)t);
  }
  return EFFML_OK;
}
