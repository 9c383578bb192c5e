/*
 * Internal helpers shared by every libeffml source file.  Nothing here is
 * exported: every symbol is `effml__` (two underscores) and hidden.
 *
 * One way to do a thing: argument checks go through effml__err() and the
 * EFFML__CHECK_* macros so the context always receives a message naming the
 * argument and the offending value; all memory goes through effml__malloc()
 * so the context's allocator hooks (and the allocation-failure tests) see it.
 */
#ifndef EFFML_INTERNAL_H
#define EFFML_INTERNAL_H

#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>
#ifdef __linux__
#include <sys/mman.h> /* MAP_ANONYMOUS, MADV_HUGEPAGE: the large-block allocator below */
#endif

/* The library implements both tiers. */
#ifndef EFFML_EXPERIMENTAL
#  define EFFML_EXPERIMENTAL 1
#endif
#include "effml.h"

#if defined(__GNUC__) || defined(__clang__)
#  define EFFML__HIDDEN __attribute__((visibility("hidden")))
#  define EFFML__PRINTF(a, b) __attribute__((format(printf, a, b)))
/* The status must be looked at (a refused call has not done its work). */
#  define EFFML__MUST_CHECK __attribute__((warn_unused_result))
#else
#  define EFFML__HIDDEN
#  define EFFML__PRINTF(a, b)
#  define EFFML__MUST_CHECK
#endif

/* ---- errors ---- */

/* Record `status` and a printf-style message in ctx (ctx may be NULL); return status. */
EFFML__HIDDEN effml_status effml__err(effml_context *ctx, effml_status status, const char *fmt, ...)
    EFFML__PRINTF(3, 4);
/* Log a message through the context's callback if its level allows. */
EFFML__HIDDEN void effml__log(effml_context *ctx, int32_t level, const char *fmt, ...)
    EFFML__PRINTF(3, 4);

/* The public function the user called, recorded in the context for the duration of the
 * call (the outermost one: library-internal public calls keep it).  Every public function
 * that takes a context starts with EFFML__ENTER(ctx); the guard restores the context on
 * every return path (GCC/Clang cleanup attribute). */
typedef struct effml__call_guard {
  effml_context *ctx;
  int owner;
} effml__call_guard;
EFFML__HIDDEN effml__call_guard effml__call_enter(effml_context *ctx, const char *name);
EFFML__HIDDEN void effml__call_leave(effml__call_guard *g);
EFFML__HIDDEN const char *effml__call_name(const effml_context *ctx);
#define EFFML__ENTER(ctx)                                                             \
  effml__call_guard effml__call_guard_ __attribute__((cleanup(effml__call_leave), unused)) = \
      effml__call_enter((ctx), __func__)

/* Progress of a long call: reports (done, total) in `unit`s to the context's progress
 * callback and honours a cancel request.  EFFML_OK to go on, or EFFML_E_CANCELLED with
 * the message "cancelled after <done> of <total> <unit>".  Call it from the thread that
 * called the public function, between units of work, before any output is published. */
EFFML__HIDDEN effml_status effml__progress(effml_context *ctx, int64_t done, int64_t total,
                                           const char *unit);
/* A cancellation point inside a phase that does not advance the call's own unit (an
 * inner kNN search): repeats the call's last report, or reports (0, 0, unit_if_none)
 * when it has made none yet, so `done` never goes backwards within a call. */
EFFML__HIDDEN effml_status effml__progress_poll(effml_context *ctx, const char *unit_if_none);
/* Cheap check of the cancel flag (no callback), for worker threads. */
EFFML__HIDDEN int effml__cancel_requested(const effml_context *ctx);

#define EFFML__CHECK_NULL(ctx, p)                                                          \
  do {                                                                                     \
    if ((p) == NULL)                                                                       \
      return effml__err((ctx), EFFML_E_INVALID_ARG, "argument '%s' is NULL", #p);          \
  } while (0)

#define EFFML__TRY(expr)                   \
  do {                                     \
    effml_status effml__st_ = (expr);      \
    if (effml__st_ != EFFML_OK) return effml__st_; \
  } while (0)

/* Evaluate `expr` into `st` only while st is EFFML_OK: a chain of calls in a
 * function that frees its temporaries on every path. */
#define EFFML__THEN(st, expr)              \
  do {                                     \
    if ((st) == EFFML_OK) (st) = (expr);   \
  } while (0)

/* logits f32 [b, c] finite, labels i32/i64 [b] in [0, c); messages start with `fn`
 * (lib/train/loss.c; shared by the loss and the accuracy metric). */
EFFML__HIDDEN effml_status effml__check_logits_labels(effml_context *ctx, const char *fn,
                                                      const effml_tensor *logits,
                                                      const effml_tensor *labels);

/* ---- option structs ---- */

/* Largest struct_size accepted: anything bigger is not an initialised struct. */
#define EFFML__OPTIONS_MAX_SIZE 4096
/* The one reader of a caller's option struct (every public options type
 * starts with `uint32_t struct_size`).  `out` (`size` bytes) already holds
 * the defaults; user NULL keeps them.  Otherwise user->struct_size must lie
 * in [min_size, EFFML__OPTIONS_MAX_SIZE] (min_size: the prefix every caller
 * has), the first min(struct_size, size) bytes are copied over the defaults
 * (an older caller's struct leaves newer fields at their defaults) and
 * out's struct_size becomes `size`.  A newer caller's larger struct is
 * accepted only if every byte beyond `size` is 0 (its newer fields "off"),
 * else EFFML_E_UNSUPPORTED (effml__options_check_tail).  EFFML_E_INVALID_ARG names `fn` (NULL:
 * the public call's name, which every message starts with, is enough), the
 * value, the bound and `init_name`.  Validation of the values stays with
 * the caller. */
EFFML__HIDDEN effml_status effml__options_read(effml_context *ctx, const char *fn,
                                               const char *init_name, const void *user,
                                               void *out, size_t size, size_t min_size);
/* Bytes [size, user_size) of a caller's option struct (a newer header's
 * fields) must all be 0: else EFFML_E_UNSUPPORTED naming `fn` (may be NULL),
 * the struct (`type_name`, `type_len` chars), the offset of the first nonzero
 * byte and the library version.  For the readers that keep their own
 * messages (effml_train_classifier, effml_sampler_temperature_at). */
EFFML__HIDDEN effml_status effml__options_check_tail(effml_context *ctx, const char *fn,
                                                     const char *type_name, size_t type_len,
                                                     const void *user, size_t user_size,
                                                     size_t size);
/* Defaults by `init`, then effml__options_read(). */
#define EFFML__OPTIONS_READ(ctx, fn, init, user, out, min_size) \
  (init(out), effml__options_read((ctx), (fn), #init, (user), (out), sizeof *(out), (min_size)))

/* ---- BLAS sizes (the checked wrappers: lib/core/blas.h) ---- */

/* Check that each of the `n` sizes in `v` (named by the comma-separated
 * `names`) lies in [0, max]; else EFFML_E_UNSUPPORTED (too large for the BLAS
 * integer) or EFFML_E_SHAPE (negative), the message naming `routine`,
 * `caller`, the argument and its value. */
EFFML__HIDDEN EFFML__MUST_CHECK effml_status effml__blas_check_dims(
    effml_context *ctx, const char *routine, const char *caller, int64_t max, int32_t n,
    const int64_t *v, const char *names);

/* ---- CPU ---- */

/* Highest EFFML_CORE_ISA_* level this CPU runs (lib/core/introspect.c). */
EFFML__HIDDEN int32_t effml__isa_level(void);
/* The level the hand-written kernels of a call on `ctx` dispatch to: the
 * CPU's, or lower when effml_context_set_isa_level() capped it (ctx may be
 * NULL: the CPU's).  Every dispatching kernel asks this, never the CPU. */
EFFML__HIDDEN int32_t effml__ctx_isa(const effml_context *ctx);

/* ---- memory (context allocator; 64-byte aligned) ---- */

EFFML__HIDDEN void *effml__malloc(effml_context *ctx, size_t size);
/* Zeroed n*size bytes; NULL on overflow or failure (no message set). */
EFFML__HIDDEN void *effml__calloc(effml_context *ctx, size_t n, size_t size);
EFFML__HIDDEN void effml__free(effml_context *ctx, void *p);
EFFML__HIDDEN char *effml__strdup(effml_context *ctx, const char *s);
/* As effml__malloc/calloc but set EFFML_E_NOMEM in ctx on failure (what = what was being allocated). */
EFFML__HIDDEN void *effml__alloc_or_err(effml_context *ctx, size_t size, const char *what);
EFFML__HIDDEN void *effml__calloc_or_err(effml_context *ctx, size_t n, size_t size, const char *what);
/* Large blocks of the default allocator (lib/core/context.c explains the
 * kinds).  effml__map_alloc: `size` bytes in a mapping of their own, the data
 * 2 MiB-aligned, the mapping rounded up to whole 2 MiB pages and advised
 * MADV_HUGEPAGE through `advise` (NULL: madvise; tests pass one that fails);
 * NULL where mmap fails or the platform has none.  Free with effml__free(NULL
 * or a default-allocator ctx, p).  effml__block_kind: which kind a block of
 * the default allocator is (not for blocks of a caller's allocator). */
typedef int (*effml__advise_fn)(void *addr, size_t len, int advice);
#define EFFML__MAP_MIN ((size_t)32 << 20) /* default-allocator blocks this large get a mapping */
#define EFFML__MAP_PAGE ((size_t)2 << 20) /* the huge page size they are aligned to */
#if defined(__linux__) && defined(MAP_ANONYMOUS) && defined(MADV_HUGEPAGE)
#define EFFML__HAVE_MAP 1
#else
#define EFFML__HAVE_MAP 0
#endif
/* Sanitizer builds keep the default allocator on malloc (ASan checks its blocks). */
#if defined(__SANITIZE_ADDRESS__)
#define EFFML__SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define EFFML__SANITIZED 1
#endif
#endif
#if EFFML__HAVE_MAP && !defined(EFFML__SANITIZED)
#define EFFML__DEFAULT_MAPS 1
#else
#define EFFML__DEFAULT_MAPS 0
#endif
#define EFFML__BLOCK_MALLOC 0
#define EFFML__BLOCK_MAPPED_ADVISED 1
#define EFFML__BLOCK_MAPPED 2 /* mapped, the huge-page advice refused: 4 KiB pages */
EFFML__HIDDEN void *effml__map_alloc(size_t size, effml__advise_fn advise);
EFFML__HIDDEN int effml__block_kind(const void *p);
/* Overflow-checked a*b; returns 0 on overflow. */
EFFML__HIDDEN int effml__mul_size(size_t a, size_t b, size_t *out);

/* ---- random numbers: xoshiro256** seeded by splitmix64 ---- */

typedef struct effml__rng {
  uint64_t s[4];
} effml__rng;

/* Seed from (seed, stream): independent streams for the same seed. */
EFFML__HIDDEN void effml__rng_seed(effml__rng *r, uint64_t seed, uint64_t stream);
EFFML__HIDDEN uint64_t effml__rng_u64(effml__rng *r);
/* Uniform double in [0, 1) with 53 random bits. */
EFFML__HIDDEN double effml__rng_uniform(effml__rng *r);
/* Uniform integer in [0, n) without modulo bias (n >= 1). */
EFFML__HIDDEN uint64_t effml__rng_below(effml__rng *r, uint64_t n);
/* Standard normal (Marsaglia polar method; consumes a variable number of draws). */
EFFML__HIDDEN double effml__rng_normal(effml__rng *r);
/* The random fills of parameters, n f32 values drawn from r in index order (the one
 * place these formulas live, so every initialiser draws and rounds alike):
 * uniform_sym: p[i] = (float)(bound * (2u - 1)), u = effml__rng_uniform: U(-bound, bound);
 * normal:      p[i] = (float)(sd * z),           z = effml__rng_normal:  N(0, sd^2). */
EFFML__HIDDEN void effml__fill_uniform_sym_f32(effml__rng *r, float *p, int64_t n, double bound);
EFFML__HIDDEN void effml__fill_normal_f32(effml__rng *r, float *p, int64_t n, double sd);
/* splitmix64 finaliser: a good 64-bit hash, used to derive per-item streams. */
EFFML__HIDDEN uint64_t effml__mix64(uint64_t x);
/* The context's generator. */
EFFML__HIDDEN effml__rng *effml__ctx_rng(effml_context *ctx);

/* ---- threads ---- */

/* Run fn(arg, begin, end, worker) over [0, n) split into at most
 * ctx->num_threads contiguous chunks of at least `min_chunk` items.  Runs
 * inline when one chunk suffices.  The split depends only on n, min_chunk and
 * the thread count; code that must give identical results for every thread
 * count must not depend on the split (e.g. derive randomness per item). */
typedef void (*effml__range_fn)(void *arg, int64_t begin, int64_t end, int32_t worker);
EFFML__HIDDEN effml_status effml__parallel_for(effml_context *ctx, int64_t n, int64_t min_chunk,
                                               effml__range_fn fn, void *arg);
EFFML__HIDDEN int32_t effml__ctx_threads(const effml_context *ctx);

/* The context's worker pool (effml_context_set_thread_pool), or NULL when it
 * is off.  The pool is allocated when it is turned on; its workers start at
 * the first region that needs them and live until effml__pool_free. */
typedef struct effml__pool effml__pool;
EFFML__HIDDEN effml__pool *effml__ctx_pool(effml_context *ctx);
EFFML__HIDDEN effml__pool *effml__pool_create(effml_context *ctx, int32_t spin_us);
/* Stop and join every worker, then release the pool (NULL: no-op). */
EFFML__HIDDEN void effml__pool_free(effml_context *ctx, effml__pool *p);
EFFML__HIDDEN void effml__pool_set_spin(effml__pool *p, int32_t spin_us);
/* Workers started so far. */
EFFML__HIDDEN int32_t effml__pool_workers(const effml__pool *p);

/* ---- tensors ---- */

/* struct effml_tensor, the tensor checks and the typed accessors are in
 * lib/tensor/tensor_internal.h: only the files that look inside a tensor
 * include it (elsewhere effml_tensor is the opaque public type). */

/* Byte helpers for little-endian file formats. */
static inline uint64_t effml__load_le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
static inline void effml__store_le64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = (unsigned char)(v >> (8 * i));
}

#endif /* EFFML_INTERNAL_H */
