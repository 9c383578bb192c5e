/**
 * @file effml/context.h
 * @brief The context: allocator hooks, thread count, random generator, log
 *        callback and the last error message.
 *
 * Every libeffml object is made from a context and must not outlive it.  A
 * context and the objects made from it are used by one thread at a time,
 * unless a header says otherwise (docs/threading.md).  There is no global
 * state and no global initialisation.
 *
 * @code
 *   effml_context_options opt;
 *   effml_context_options_init(&opt);
 *   opt.num_threads = 2;  opt.seed = 42;
 *   effml_context *ctx;
 *   if (effml_context_create(&opt, &ctx) != EFFML_OK) return 1;
 *   ... if (st != EFFML_OK) fprintf(stderr, "%s\n", effml_context_last_error(ctx));
 *   effml_context_free(ctx);
 * @endcode
 *
 * Random numbers: the context owns one generator (xoshiro256**, seeded with
 * splitmix64 from `seed`).  Functions that need randomness draw from it in a
 * documented order, so the same seed and inputs give the same outputs on every
 * platform and for every thread count.
 *
 * BLAS threads: libeffml never changes OpenBLAS's own thread count.  Set it
 * with the environment variable OPENBLAS_NUM_THREADS or
 * openblas_set_num_threads() in your program.  `num_threads` only controls the
 * library's own loops.
 */
#ifndef EFFML_CONTEXT_H
#define EFFML_CONTEXT_H

#include "common.h"
#include "error.h"

EFFML_BEGIN_DECLS

typedef struct effml_context effml_context;

/** Allocate `size` bytes aligned for any C type; return NULL on failure. */
typedef void *(*effml_alloc_fn)(void *user_data, size_t size);
/** Release memory from the matching effml_alloc_fn; `ptr` is never NULL. */
typedef void (*effml_free_fn)(void *user_data, void *ptr);

/** Log levels passed to effml_log_fn. */
#define EFFML_LOG_ERROR 1
#define EFFML_LOG_WARN 2
#define EFFML_LOG_INFO 3
#define EFFML_LOG_DEBUG 4

/** Log callback: `message` is borrowed for the duration of the call. */
typedef void (*effml_log_fn)(void *user_data, int32_t level, const char *message);

/**
 * Options for effml_context_create().  Fill with effml_context_options_init()
 * first; fields are only ever added at the end.
 */
typedef struct effml_context_options {
  uint32_t struct_size;     /**< sizeof(effml_context_options), set by _init */
  effml_alloc_fn alloc;     /**< NULL: malloc (both alloc and free must be set, or neither) */
  effml_free_fn free;       /**< NULL: free */
  void *alloc_user_data;    /**< passed to alloc/free */
  int32_t num_threads;      /**< threads for libeffml's own loops, >= 1 (default 1) */
  uint64_t seed;            /**< seed of the context's generator (default 0) */
  effml_log_fn log;         /**< NULL: no logging */
  void *log_user_data;      /**< passed to log */
  int32_t log_level;        /**< messages at or below this level are passed (default EFFML_LOG_WARN) */
} effml_context_options;

/** Fill `opt` with defaults (struct_size set).  NULL is ignored. */
EFFML_API void effml_context_options_init(effml_context_options *opt);

/**
 * Create a context.
 * @param opt  options (NULL: defaults).  Only the first `opt->struct_size`
 *             bytes are read.
 * @param out  receives the new context, owned by the caller (effml_context_free()).
 * @return EFFML_E_INVALID_ARG (out NULL, bad struct_size, num_threads < 1,
 *         only one of alloc/free set), EFFML_E_NOMEM.  On error *out is untouched.
 */
EFFML_API effml_status effml_context_create(const effml_context_options *opt,
                                            effml_context **out);

/** Free a context.  All objects made from it must be freed first.  NULL is a no-op. */
EFFML_API void effml_context_free(effml_context *ctx);

/**
 * Message of the last error recorded in `ctx` ("" if none).  Borrowed: valid
 * until the next libeffml call with this context.  NULL ctx gives a static
 * message.
 */
EFFML_API const char *effml_context_last_error(const effml_context *ctx);

/** Status of the last error recorded in `ctx` (EFFML_OK if none). */
EFFML_API effml_status effml_context_last_status(const effml_context *ctx);

/** Forget the last error. */
EFFML_API void effml_context_clear_error(effml_context *ctx);

/** Threads used by libeffml's own loops (>= 1). */
EFFML_API int32_t effml_context_num_threads(const effml_context *ctx);

/** Set the thread count for libeffml's own loops.  EFFML_E_INVALID_ARG if < 1 or > 1024. */
EFFML_API effml_status effml_context_set_num_threads(effml_context *ctx, int32_t num_threads);

/** Re-seed the context's generator (same effect as creating it with this seed). */
EFFML_API void effml_context_set_seed(effml_context *ctx, uint64_t seed);

/** Next 64 random bits from the context's generator (for callers that want the same stream). */
EFFML_API uint64_t effml_context_random_u64(effml_context *ctx);

EFFML_END_DECLS

#endif /* EFFML_CONTEXT_H */
