/* Context: allocator hooks, thread count, generator, log callback, last error. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define EFFML__ERRMSG_LEN 512

struct effml_context {
  effml_alloc_fn alloc;
  effml_free_fn free;
  void *alloc_user_data;
  int32_t num_threads;
  effml_log_fn log;
  void *log_user_data;
  int32_t log_level;
  effml__rng rng;
  effml_status last_status;
  char last_error[EFFML__ERRMSG_LEN]; /* the message when it fits (most do) */
  char *long_error;                   /* a longer one, whole (effml__malloc), or NULL */
  const char *call;              /* the public function the user called (static), or NULL */
  effml_context_progress_fn progress;
  void *progress_user_data;
  atomic_int cancel;             /* effml_context_set_cancel(): any thread, or a signal handler (lock-free) */
  int64_t last_done, last_total; /* the running call's last progress report (effml__progress_poll) */
  const char *last_unit;         /* its unit (static), or NULL before the call's first report */
  int32_t isa_cap;               /* effml_context_set_isa_level(), or -1: the CPU's level */
  int32_t pool_spin_us;          /* effml_context_set_thread_pool(): the spin time in use */
  effml__pool *pool;             /* NULL: the pool is off (per-call threads) */
};

void effml_context_options_init(effml_context_options *opt) {
  if (opt == NULL) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->num_threads = 1;
  opt->log_level = EFFML_CORE_LOG_WARN;
}

effml_status effml_context_create(const effml_context_options *opt, effml_context **out) {
  effml_context_options o;
  if (out == NULL) return EFFML_E_INVALID_ARG;
  /* no context yet: the status only */
  EFFML__TRY(EFFML__OPTIONS_READ(NULL, "effml_context_create", effml_context_options_init, opt, &o,
                                 offsetof(effml_context_options, num_threads)));
  if ((o.alloc == NULL) != (o.free == NULL)) return EFFML_E_INVALID_ARG;
  if (o.num_threads < 1 || o.num_threads > 1024) return EFFML_E_INVALID_ARG;
  effml_context *ctx = o.alloc ? (effml_context *)o.alloc(o.alloc_user_data, sizeof *ctx)
                               : (effml_context *)malloc(sizeof *ctx);
  if (ctx == NULL) return EFFML_E_NOMEM;
  memset(ctx, 0, sizeof *ctx);
  atomic_init(&ctx->cancel, 0);
  ctx->alloc = o.alloc;
  ctx->free = o.free;
  ctx->alloc_user_data = o.alloc_user_data;
  ctx->num_threads = o.num_threads;
  ctx->isa_cap = -1;
  ctx->log = o.log;
  ctx->log_user_data = o.log_user_data;
  ctx->log_level = o.log_level;
  effml__rng_seed(&ctx->rng, o.seed, 0);
  *out = ctx;
  return EFFML_OK;
}

void effml_context_free(effml_context *ctx) {
  if (ctx == NULL) return;
  effml__pool_free(ctx, ctx->pool); /* joins its workers */
  effml__free(ctx, ctx->long_error);
  if (ctx->free)
    ctx->free(ctx->alloc_user_data, ctx);
  else
    free(ctx);
}

const char *effml_context_last_error(const effml_context *ctx) {
  if (ctx == NULL) return "effml_context_last_error: context is NULL";
  return ctx->long_error ? ctx->long_error : ctx->last_error;
}

effml_status effml_context_last_status(const effml_context *ctx) {
  return ctx ? ctx->last_status : EFFML_E_INVALID_ARG;
}

void effml_context_clear_error(effml_context *ctx) {
  if (ctx == NULL) return;
  ctx->last_status = EFFML_OK;
  ctx->last_error[0] = '\0';
  effml__free(ctx, ctx->long_error);
  ctx->long_error = NULL;
}

int32_t effml_context_num_threads(const effml_context *ctx) { return ctx ? ctx->num_threads : 1; }

effml_status effml_context_set_num_threads(effml_context *ctx, int32_t num_threads) {
  EFFML__CHECK_NULL(ctx, ctx);
  if (num_threads < 1 || num_threads > 1024)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_context_set_num_threads: num_threads=%d must be in [1, 1024]",
                      (int)num_threads);
  /* A live pool with more workers than the new count needs is replaced by
   * an empty one (its workers are joined; the new count's start at the next
   * region).  Without memory for the replacement the old pool stays: still
   * correct, its extra workers only sleep. */
  if (ctx->pool && effml__pool_workers(ctx->pool) > num_threads - 1) {
    effml__pool *fresh = effml__pool_create(ctx, ctx->pool_spin_us);
    if (fresh) {
      effml__pool_free(ctx, ctx->pool);
      ctx->pool = fresh;
    }
  }
  ctx->num_threads = num_threads;
  return EFFML_OK;
}

effml_status effml_context_set_thread_pool(effml_context *ctx, int32_t enabled, int32_t spin_us) {
  EFFML__CHECK_NULL(ctx, ctx);
  if (enabled != 0 && enabled != 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_context_set_thread_pool: enabled=%d must be 0 or 1", (int)enabled);
  /* Disabling ignores spin_us (documented in core.h): switching the pool off
   * must not fail because of a value that would not be used. */
  if (!enabled) {
    effml__pool_free(ctx, ctx->pool);
    ctx->pool = NULL;
    ctx->pool_spin_us = 0;
    return EFFML_OK;
  }
  if (spin_us != EFFML_CORE_POOL_SPIN_DEFAULT && (spin_us < 0 || spin_us > EFFML_CORE_POOL_SPIN_MAX))
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_context_set_thread_pool: spin_us=%d must be in [0, %d] microseconds "
                      "or EFFML_CORE_POOL_SPIN_DEFAULT (-1)",
                      (int)spin_us, (int)EFFML_CORE_POOL_SPIN_MAX);
  const int32_t spin = spin_us == EFFML_CORE_POOL_SPIN_DEFAULT ? EFFML_CORE_POOL_SPIN_DEFAULT_US : spin_us;
  if (ctx->pool == NULL) {
    ctx->pool = effml__pool_create(ctx, spin);
    if (ctx->pool == NULL)
      return effml__err(ctx, EFFML_E_NOMEM,
                        "effml_context_set_thread_pool: out of memory (or no mutex) for the pool");
  } else
    effml__pool_set_spin(ctx->pool, spin);
  ctx->pool_spin_us = spin;
  return EFFML_OK;
}

int32_t effml_context_thread_pool(const effml_context *ctx, int32_t *spin_us) {
  const int32_t on = ctx && ctx->pool;
  if (spin_us) *spin_us = on ? ctx->pool_spin_us : 0;
  return on;
}

void effml_context_set_seed(effml_context *ctx, uint64_t seed) {
  if (ctx) effml__rng_seed(&ctx->rng, seed, 0);
}

uint64_t effml_context_random_u64(effml_context *ctx) {
  return ctx ? effml__rng_u64(&ctx->rng) : 0;
}

/* ---- internal ---- */

effml__rng *effml__ctx_rng(effml_context *ctx) { return &ctx->rng; }
int32_t effml__ctx_threads(const effml_context *ctx) { return ctx ? ctx->num_threads : 1; }
effml__pool *effml__ctx_pool(effml_context *ctx) { return ctx ? ctx->pool : NULL; }

int32_t effml_context_isa_level(const effml_context *ctx) {
  const int32_t cpu = effml__isa_level();
  return ctx && ctx->isa_cap >= 0 && ctx->isa_cap < cpu ? ctx->isa_cap : cpu;
}

int32_t effml__ctx_isa(const effml_context *ctx) { return effml_context_isa_level(ctx); }

effml_status effml_context_set_isa_level(effml_context *ctx, int32_t level) {
  EFFML__CHECK_NULL(ctx, ctx);
  const int32_t cpu = effml__isa_level();
  if (level < EFFML_CORE_ISA_PORTABLE || level > EFFML_CORE_ISA_AVX512)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_context_set_isa_level: level=%d is not an EFFML_CORE_ISA_* value "
                      "(0 portable, 1 avx2, 2 avx512)",
                      (int)level);
  if (level > cpu)
    return effml__err(ctx, EFFML_E_UNSUPPORTED,
                      "effml_context_set_isa_level: level %d (%s) is above this CPU's %d (%s)",
                      (int)level, effml_core_isa_name(level), (int)cpu, effml_core_isa_name(cpu));
  ctx->isa_cap = level;
  return EFFML_OK;
}

/* The message is kept whole, however long (a list of every problem of an adapter, a long path):
 * one that fits the context's inline buffer is stored there, a longer one in a block from the
 * context's allocator, replaced (never reused) by the next error, so that an argument pointing at
 * the previous message stays valid while the new one is formatted.  Only if that block cannot be
 * allocated is the message cut to the inline buffer, ending in EFFML__CUT. */
#define EFFML__CUT " [... message cut: out of memory]"

effml_status effml__err(effml_context *ctx, effml_status status, const char *fmt, ...) {
  if (ctx == NULL) return status;
  /* Every message starts with the public function the user called; a message that already
   * starts with it is kept, one naming an inner call is nested ("effml_train_classifier:
   * effml_layer_forward: ..."). */
  char msg[EFFML__ERRMSG_LEN];
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int need = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (need < 0) {
    need = 0;
    msg[0] = '\0';
  }
  const size_t n = ctx->call ? strlen(ctx->call) : 0;
  const int nest = n && !(strncmp(msg, ctx->call, n) == 0 && msg[n] == ':');
  const size_t pre = nest ? n + 2 : 0, total = pre + (size_t)need + 1;
  char *whole = NULL;
  if (total > sizeof ctx->last_error) { /* format it again, whole, into a block of its own */
    whole = (char *)effml__malloc(ctx, total);
    if (whole) {
      if (nest) {
        memcpy(whole, ctx->call, n);
        memcpy(whole + n, ": ", 2);
      }
      vsnprintf(whole + pre, total - pre, fmt, ap2);
    }
  }
  va_end(ap2);
  effml__free(ctx, ctx->long_error); /* after the formatting: an argument may have pointed into it */
  ctx->long_error = whole;
  if (whole == NULL) {
    if (nest) {
      if (snprintf(ctx->last_error, sizeof ctx->last_error, "%s: %s", ctx->call, msg) < 0)
        ctx->last_error[0] = '\0';
    } else {
      memcpy(ctx->last_error, msg, sizeof msg);
    }
    if (total > sizeof ctx->last_error) /* cut: say so rather than end mid-word */
      memcpy(ctx->last_error + sizeof ctx->last_error - sizeof EFFML__CUT, EFFML__CUT, sizeof EFFML__CUT);
  } else {
    ctx->last_error[0] = '\0';
  }
  ctx->last_status = status;
  if (ctx->log && ctx->log_level >= EFFML_CORE_LOG_ERROR)
    ctx->log(ctx->log_user_data, EFFML_CORE_LOG_ERROR, effml_context_last_error(ctx));
  return status;
}

effml__call_guard effml__call_enter(effml_context *ctx, const char *name) {
  effml__call_guard g = {ctx, 0};
  if (ctx && !ctx->call) {
    ctx->call = name;
    ctx->last_done = ctx->last_total = 0;
    ctx->last_unit = NULL;
    g.owner = 1;
  }
  return g;
}

void effml__call_leave(effml__call_guard *g) {
  if (g->owner) g->ctx->call = NULL;
}

const char *effml__call_name(const effml_context *ctx) { return ctx ? ctx->call : NULL; }

effml_status effml__progress(effml_context *ctx, int64_t done, int64_t total, const char *unit) {
  if (ctx == NULL) return EFFML_OK;
  ctx->last_done = done;
  ctx->last_total = total;
  ctx->last_unit = unit;
  int stop = atomic_load_explicit(&ctx->cancel, memory_order_relaxed) != 0;
  if (!stop && ctx->progress)
    stop = ctx->progress(ctx->progress_user_data, ctx->call ? ctx->call : "", done, total) != 0;
  if (!stop) return EFFML_OK;
  if (total > 0)
    return effml__err(ctx, EFFML_E_CANCELLED, "cancelled after %lld of %lld %s", (long long)done,
                      (long long)total, unit);
  return effml__err(ctx, EFFML_E_CANCELLED, "cancelled after %lld %s", (long long)done, unit);
}

effml_status effml__progress_poll(effml_context *ctx, const char *unit_if_none) {
  if (ctx == NULL) return EFFML_OK;
  if (ctx->last_unit == NULL) return effml__progress(ctx, 0, 0, unit_if_none);
  return effml__progress(ctx, ctx->last_done, ctx->last_total, ctx->last_unit);
}

int effml__cancel_requested(const effml_context *ctx) {
  return ctx && atomic_load_explicit(&((effml_context *)(uintptr_t)ctx)->cancel, memory_order_relaxed) != 0;
}

void effml_context_set_progress(effml_context *ctx, effml_context_progress_fn fn, void *user_data) {
  if (!ctx) return;
  ctx->progress = fn;
  ctx->progress_user_data = user_data;
}

void effml_context_set_cancel(effml_context *ctx, int32_t cancel) {
  if (ctx) atomic_store_explicit(&ctx->cancel, cancel != 0, memory_order_relaxed);
}

int32_t effml_context_cancel_requested(const effml_context *ctx) {
  return effml__cancel_requested(ctx);
}

void effml__log(effml_context *ctx, int32_t level, const char *fmt, ...) {
  if (ctx == NULL || ctx->log == NULL || level > ctx->log_level) return;
  char buf[EFFML__ERRMSG_LEN];
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int need = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  char *whole = need >= (int)sizeof buf ? (char *)effml__malloc(ctx, (size_t)need + 1) : NULL;
  if (whole) vsnprintf(whole, (size_t)need + 1, fmt, ap2); /* a long message whole, as errors */
  va_end(ap2);
  ctx->log(ctx->log_user_data, level, whole ? whole : buf);
  effml__free(ctx, whole);
}

/* Memory.  Three kinds of block, told apart by effml__free():
 *  - a caller's allocator (effml_context_options.alloc): every block comes
 *    from it, over-allocated by 64 + 8 bytes and aligned to a cache line; the
 *    raw pointer sits just before the aligned one.  Nothing else is done to
 *    it (no advice: the memory may not even be anonymous pages);
 *  - the default allocator below EFFML__MAP_MIN: the same layout on malloc;
 *    blocks of EFFML__HUGE_MIN or more have their whole 2 MiB pages advised
 *    for transparent huge pages (Linux MADV_HUGEPAGE);
 *  - the default allocator at EFFML__MAP_MIN and above: a mapping of its own
 *    (effml__map_alloc), the data 2 MiB-aligned and the mapping rounded up to
 *    whole 2 MiB pages, advised MADV_HUGEPAGE as a whole.  Such a block is
 *    always fresh memory (glibc's malloc, too, maps every block above its
 *    largest mmap threshold, 32 MiB on 64-bit, and unmaps it on free), so the
 *    first write into it page-faults; with huge pages granted that is one
 *    fault per 2 MiB instead of one per 4 KiB, and on this project's VM
 *    writing a fresh 97 MB output costs about a fifth of the CPU time (see
 *    docs/conventions.md, "Memory").  Below 32 MiB glibc recycles freed
 *    blocks from its heap (already-faulted, warm memory), which beats any
 *    fresh mapping, so those stay on malloc.
 * The advice is a hint: where the kernel refuses it (no THP support, an
 * error) the block is used as it is, with 4 KiB pages; where mmap itself
 * fails, the block comes from malloc.  Sanitizer builds keep every default
 * block on malloc so that ASan sees (and bounds-checks) it. */
#define EFFML__ALIGN 64
#define EFFML__HUGE_MIN ((size_t)8 << 20)
#define EFFML__HUGE_PAGE EFFML__MAP_PAGE
#define EFFML__HEAD_PAGE ((size_t)4096)

/* A mapped block's header, at the end of the 4 KiB page just before the data;
 * its last word is the tagged mapping base (bit 0 set), where a malloc
 * block keeps its untagged raw pointer. */
typedef struct effml__map_head {
  size_t len;      /* bytes mapped from base */
  int32_t advice;  /* EFFML__BLOCK_MAPPED_ADVISED or _MAPPED */
  int32_t pad;
  uintptr_t tagged_base;
} effml__map_head;

#if EFFML__HAVE_MAP
static int sys_advise(void *addr, size_t len, int advice) { return madvise(addr, len, advice); }
#endif

void *effml__map_alloc(size_t size, effml__advise_fn advise) {
#if EFFML__HAVE_MAP
  if (size == 0 || size > SIZE_MAX / 2 - 2 * EFFML__HUGE_PAGE - EFFML__HEAD_PAGE) return NULL;
  const size_t body = (size + EFFML__HUGE_PAGE - 1) & ~(EFFML__HUGE_PAGE - 1);
  const size_t want = EFFML__HEAD_PAGE + body;   /* header page + whole huge pages */
  const size_t len = want + EFFML__HUGE_PAGE;    /* slack to place the data on a 2 MiB boundary */
  char *raw = (char *)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == (char *)MAP_FAILED) return NULL;
  uintptr_t data = ((uintptr_t)raw + EFFML__HEAD_PAGE + EFFML__HUGE_PAGE - 1) & ~(uintptr_t)(EFFML__HUGE_PAGE - 1);
  char *base = (char *)(data - EFFML__HEAD_PAGE);
  /* give back the slack on both sides (a failed trim only keeps address space) */
  if (base > raw) (void)munmap(raw, (size_t)(base - raw));
  char *end = base + want;
  if (end < raw + len) (void)munmap(end, (size_t)(raw + len - end));
  if (advise == NULL) advise = sys_advise;
  effml__map_head h;
  h.len = want;
  h.advice = advise((void *)data, body, MADV_HUGEPAGE) == 0 ? EFFML__BLOCK_MAPPED_ADVISED
                                                              : EFFML__BLOCK_MAPPED;
  h.pad = 0;
  h.tagged_base = (uintptr_t)base | 1u;
  memcpy((void *)(data - sizeof h), &h, sizeof h);
  return (void *)data;
#else
  (void)size;
  (void)advise;
  return NULL;
#endif
}

int effml__block_kind(const void *p) {
  uintptr_t raw;
  memcpy(&raw, (const char *)p - sizeof raw, sizeof raw);
  if (!(raw & 1u)) return EFFML__BLOCK_MALLOC;
  effml__map_head h;
  memcpy(&h, (const char *)p - sizeof h, sizeof h);
  return h.advice;
}

void *effml__malloc(effml_context *ctx, size_t size) {
  if (size > SIZE_MAX - EFFML__ALIGN - sizeof(void *)) return NULL;
  const int deflt = !(ctx && ctx->alloc);
#if EFFML__DEFAULT_MAPS
  if (deflt && size >= EFFML__MAP_MIN) {
    void *m = effml__map_alloc(size, NULL);
    if (m != NULL) return m;
    /* no mapping to be had: malloc below (which likely maps, or fails, too) */
  }
#endif
  size_t total = size + EFFML__ALIGN + sizeof(void *);
  void *raw = deflt ? malloc(total) : ctx->alloc(ctx->alloc_user_data, total);
  if (raw == NULL) return NULL;
#ifdef MADV_HUGEPAGE
  if (deflt && total >= EFFML__HUGE_MIN) {
    uintptr_t b = ((uintptr_t)raw + EFFML__HUGE_PAGE - 1) & ~(uintptr_t)(EFFML__HUGE_PAGE - 1);
    uintptr_t e = ((uintptr_t)raw + total) & ~(uintptr_t)(EFFML__HUGE_PAGE - 1);
    if (e > b) (void)madvise((void *)b, (size_t)(e - b), MADV_HUGEPAGE);
  }
#endif
  uintptr_t p = ((uintptr_t)raw + sizeof(void *) + EFFML__ALIGN - 1) & ~(uintptr_t)(EFFML__ALIGN - 1);
  memcpy((void *)(p - sizeof(void *)), &raw, sizeof raw);
  return (void *)p;
}

void effml__free(effml_context *ctx, void *p) {
  if (p == NULL) return;
  uintptr_t raw;
  memcpy(&raw, (char *)p - sizeof raw, sizeof raw);
  if (ctx && ctx->free) {
    ctx->free(ctx->alloc_user_data, (void *)raw);
    return;
  }
#if EFFML__HAVE_MAP
  if (raw & 1u) {
    effml__map_head h;
    memcpy(&h, (char *)p - sizeof h, sizeof h);
    (void)munmap((void *)(raw & ~(uintptr_t)1u), h.len);
    return;
  }
#endif
  free((void *)raw);
}

int effml__mul_size(size_t a, size_t b, size_t *out) {
  if (a != 0 && b > SIZE_MAX / a) return 0;
  *out = a * b;
  return 1;
}

void *effml__calloc(effml_context *ctx, size_t n, size_t size) {
  size_t total;
  if (!effml__mul_size(n, size, &total)) return NULL;
  void *p = effml__malloc(ctx, total);
  if (p == NULL) return NULL;
#if EFFML__DEFAULT_MAPS
  /* A block with a mapping of its own is fresh anonymous memory, already zero:
   * a memset would only fault in every page now, a pass the caller's first
   * write repeats. */
  if (!(ctx && ctx->alloc) && total >= EFFML__MAP_MIN && effml__block_kind(p) != EFFML__BLOCK_MALLOC)
    return p;
#endif
  memset(p, 0, total);
  return p;
}

char *effml__strdup(effml_context *ctx, const char *s) {
  size_t n = strlen(s) + 1;
  char *d = (char *)effml__malloc(ctx, n);
  if (d) memcpy(d, s, n);
  return d;
}

void *effml__alloc_or_err(effml_context *ctx, size_t size, const char *what) {
  void *p = effml__malloc(ctx, size);
  if (p == NULL) effml__err(ctx, EFFML_E_NOMEM, "out of memory allocating %zu bytes for %s", size, what);
  return p;
}

void *effml__calloc_or_err(effml_context *ctx, size_t n, size_t size, const char *what) {
  void *p = effml__calloc(ctx, n, size);
  if (p == NULL) effml__err(ctx, EFFML_E_NOMEM, "out of memory allocating %zu x %zu bytes for %s", n, size, what);
  return p;
}
