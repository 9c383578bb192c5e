/**
 * @file effml/core.h
 * @brief The core: export macros, version, status codes, and the context
 *        (allocator hooks, thread count, random generator, log callback, last
 *        error message).
 *
 * Two tiers, as zstd has: the stable API, and an experimental tier of
 * research knobs (merge-drift measurement, reference-rounding compatibility
 * flags, DST FLOP accounting) that a program sees only when it defines
 * `EFFML_EXPERIMENTAL` before including effml.h.  Experimental symbols live
 * in their own version node (`EFFML_EXPERIMENTAL_0.2`) and may change or go
 * in any release; the stable ones follow docs/ABI.md.
 *
 * `EFFML_API` marks every exported function.  Vendored or static builds may
 * define it before including any libeffml header (for example to nothing).
 *
 * Version: the compile-time macros are the single source of truth (CMake
 * reads them).  Compare `EFFML_VERSION_NUMBER` with effml_version_number() to
 * detect a header/library mismatch.  The ABI major is `EFFML_VERSION_MAJOR`
 * (the SONAME is `libeffml.so.<major>`); see docs/ABI.md.
 *
 * Status codes: every fallible function returns an `effml_status`: 0 on
 * success, a negative code on error.  Codes are explicit numbers that are
 * never reused or renumbered (a retired code keeps its number forever).  The
 * detailed message -- naming the argument and the value that was wrong -- is
 * stored in the context: see effml_context_last_error().
 *
 * The context: every libeffml object is made from a context and must not outlive it.  A
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
#ifndef EFFML_CORE_H
#define EFFML_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifndef EFFML_API
#  if defined(_WIN32) && defined(EFFML_BUILDING_SHARED)
#    define EFFML_API __declspec(dllexport)
#  elif defined(__GNUC__) || defined(__clang__)
#    define EFFML_API __attribute__((visibility("default")))
#  else
#    define EFFML_API
#  endif
#endif

#ifdef __cplusplus
#  define EFFML_BEGIN_DECLS extern "C" {
#  define EFFML_END_DECLS }
#else
#  define EFFML_BEGIN_DECLS
#  define EFFML_END_DECLS
#endif

#define EFFML_VERSION_MAJOR 0
#define EFFML_VERSION_MINOR 2
#define EFFML_VERSION_PATCH 0
/** major*10000 + minor*100 + patch. */
#define EFFML_VERSION_NUMBER \
  (EFFML_VERSION_MAJOR * 10000 + EFFML_VERSION_MINOR * 100 + EFFML_VERSION_PATCH)
#define EFFML_VERSION_STRING "0.2.0"

EFFML_BEGIN_DECLS

/* ---- version ---- */

/** Version number of the library actually linked (same encoding as EFFML_VERSION_NUMBER). */
EFFML_API int32_t effml_version_number(void);
/** Version string of the linked library ("0.2.0"); static storage, never freed. */
EFFML_API const char *effml_version_string(void);

/* ---- status codes ---- */

typedef int32_t effml_status;

#define EFFML_OK 0
#define EFFML_E_INVALID_ARG (-1)  /**< NULL pointer, value out of its allowed range */
#define EFFML_E_SHAPE (-2)        /**< shapes disagree, zero/negative dim, too many dims */
#define EFFML_E_DTYPE (-3)        /**< unsupported or mismatched element type */
#define EFFML_E_NOMEM (-4)        /**< allocation failed */
#define EFFML_E_IO (-5)           /**< file could not be opened, read or written */
#define EFFML_E_FORMAT (-6)       /**< file or buffer contents are malformed */
#define EFFML_E_NUMERIC (-7)      /**< NaN/inf input, singular matrix, no convergence */
#define EFFML_E_UNSUPPORTED (-8)  /**< valid request that this build does not implement */
#define EFFML_E_NOT_FOUND (-9)    /**< named item (tensor, parameter, file) absent */
#define EFFML_E_OVERFLOW (-10)    /**< a size computation overflows size_t/int64_t */
#define EFFML_E_STATE (-11)       /**< call out of order (e.g. backward before forward) */
#define EFFML_E_RANGE (-12)       /**< index or label out of range */
#define EFFML_E_CANCELLED (-13)   /**< stopped by the progress callback or effml_context_set_cancel(); outputs untouched */

/**
 * Short static description of a status code ("invalid argument", ...).
 * Unknown codes give "unknown status".  Never NULL, never freed.
 */
EFFML_API const char *effml_status_str(effml_status status);

/* ---- context ---- */

typedef struct effml_context effml_context;

/** Allocate `size` bytes aligned for any C type; return NULL on failure. */
typedef void *(*effml_alloc_fn)(void *user_data, size_t size);
/** Release memory from the matching effml_alloc_fn; `ptr` is never NULL. */
typedef void (*effml_free_fn)(void *user_data, void *ptr);

/** Log levels passed to effml_log_fn. */
#define EFFML_CORE_LOG_ERROR 1
#define EFFML_CORE_LOG_WARN 2
#define EFFML_CORE_LOG_INFO 3
#define EFFML_CORE_LOG_DEBUG 4

/** Log callback: `message` is borrowed for the duration of the call. */
typedef void (*effml_log_fn)(void *user_data, int32_t level, const char *message);

/**
 * Options for effml_context_create().  Fill with effml_context_options_init()
 * first; fields are only ever added at the end.
 *
 * Memory.  Every block the library allocates comes from `alloc`/`free` when
 * set: one call per block, of the size asked plus 72 bytes, the data aligned
 * to 64 bytes inside it; nothing else is done to that memory (no madvise).
 * Without them the default allocator is used: malloc below 32 MiB (data
 * 64-byte aligned; blocks of 8 MiB and more have their whole 2 MiB pages
 * advised for transparent huge pages, Linux MADV_HUGEPAGE), and at 32 MiB
 * and above a mapping of its own whose data is 2 MiB-aligned and whose whole
 * length (rounded up to 2 MiB) is advised MADV_HUGEPAGE, so a fresh output
 * page-faults once per 2 MiB instead of once per 4 KiB.  The advice is a
 * hint: where the kernel declines it the memory has 4 KiB pages; where mmap
 * fails the block comes from malloc.  docs/conventions.md ("Memory") has the
 * reasons and measurements.
 */
typedef struct effml_context_options {
  uint32_t struct_size;     /**< sizeof(effml_context_options), set by _init */
  effml_alloc_fn alloc;     /**< NULL: malloc (both alloc and free must be set, or neither) */
  effml_free_fn free;       /**< NULL: free */
  void *alloc_user_data;    /**< passed to alloc/free */
  int32_t num_threads;      /**< threads for libeffml's own loops, 1..1024 (default 1); one loop uses at most 64 */
  uint64_t seed;            /**< seed of the context's generator (default 0) */
  effml_log_fn log;         /**< NULL: no logging */
  void *log_user_data;      /**< passed to log */
  int32_t log_level;        /**< messages at or below this level are passed (default EFFML_CORE_LOG_WARN) */
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
 * message.  The message is whole, however long (a long path, a list of every
 * problem): one over 511 bytes is held in a block from the context's
 * allocator, freed by the next error, effml_context_clear_error() or
 * effml_context_free(); only if that block cannot be allocated is the message
 * cut to 511 bytes, ending in " [... message cut: out of memory]".  The log
 * callback receives the same whole text.
 */
EFFML_API const char *effml_context_last_error(const effml_context *ctx);

/** Status of the last error recorded in `ctx` (EFFML_OK if none). */
EFFML_API effml_status effml_context_last_status(const effml_context *ctx);

/** Forget the last error. */
EFFML_API void effml_context_clear_error(effml_context *ctx);

/** Threads used by libeffml's own loops (>= 1). */
EFFML_API int32_t effml_context_num_threads(const effml_context *ctx);

/**
 * Set the thread count for libeffml's own loops.  EFFML_E_INVALID_ARG if < 1 or > 1024.
 * A value up to 1024 is accepted and reported back by effml_context_num_threads(), but
 * each parallel loop uses at most 64 threads (the calling thread and up to 63 workers;
 * fewer when the loop has less work than that many chunks), so values above 64 act as 64.
 * With the worker pool on (effml_context_set_thread_pool()) at most 63 workers are started.
 */
EFFML_API effml_status effml_context_set_num_threads(effml_context *ctx, int32_t num_threads);

/** effml_context_set_thread_pool(): use the default spin time. */
#define EFFML_CORE_POOL_SPIN_DEFAULT (-1)
/** The default spin time, microseconds (see effml_context_set_thread_pool()). */
#define EFFML_CORE_POOL_SPIN_DEFAULT_US 1000
/** The largest spin time accepted, microseconds (1 s). */
#define EFFML_CORE_POOL_SPIN_MAX 1000000

/**
 * Keep the worker threads of libeffml's own loops between calls (a pool
 * owned by `ctx`) instead of starting them for each parallel loop (the
 * default, `enabled` = 0).
 *
 * With the pool on, the num_threads - 1 workers are started by the first
 * loop that needs them and live until the pool is turned off, or the
 * context is freed (both join them).  After each loop they busy-wait
 * (a CPU pause, yielding the core to other runnable threads every few
 * microseconds) for `spin_us` microseconds, then block on a condition
 * variable until the next loop.  A loop that starts within `spin_us` of the
 * last one finds them awake; otherwise it pays a wake-up instead of a thread
 * start, which costs about as much on an idle virtual machine (1-4 ms on a
 * 2-core cloud VM once its vCPU has halted, 60 us when busy).  The price is
 * CPU: up to `spin_us` of each worker's core after every loop, shown as
 * process CPU time, taken from other threads (OpenBLAS's included) only
 * when they have no other core.  Results are the same bytes with the pool
 * on or off: the work split and the worker indices do not change.
 *
 * A loop started while another loop of the same context runs (from inside
 * a kernel) and any loop in a child process after fork() use per-call
 * threads; the pool is never shared with the child (free the context
 * there as usual: the parent's workers are not joined in the child).
 * Lowering num_threads (effml_context_set_num_threads) below what the
 * started workers serve joins them all; the new count's workers start at
 * the next loop.  Signals are blocked in the pool's workers; on
 * Linux they are named "effml-pool".
 *
 * @param enabled  1: pool on (a pool already on keeps its workers and takes
 *                 the new spin time); 0: off (joins the workers; no-op if off).
 * @param spin_us  microseconds a worker (and the calling thread, waiting for
 *                 the workers) busy-waits before blocking, 0 to
 *                 EFFML_CORE_POOL_SPIN_MAX, or EFFML_CORE_POOL_SPIN_DEFAULT
 *                 (EFFML_CORE_POOL_SPIN_DEFAULT_US).  Ignored when enabled = 0.
 * @return EFFML_E_INVALID_ARG (ctx NULL, enabled not 0/1, spin_us out of
 *         range; nothing changes), EFFML_E_NOMEM (the pool could not be
 *         made; it stays off).
 * Threads: not thread-safe with calls running on the same context (like
 * every context setter).
 */
EFFML_API effml_status effml_context_set_thread_pool(effml_context *ctx, int32_t enabled,
                                                     int32_t spin_us);

/**
 * 1 if `ctx` keeps a worker pool (effml_context_set_thread_pool), else 0
 * (also for NULL).  `spin_us` (NULL: not wanted) receives the spin time in
 * microseconds in use, 0 when the pool is off.
 */
EFFML_API int32_t effml_context_thread_pool(const effml_context *ctx, int32_t *spin_us);

/**
 * Cap the ISA level of libeffml's hand-written kernels for calls on `ctx`
 * (EFFML_CORE_ISA_PORTABLE, _AVX2 or _AVX512; a new context uses the CPU's
 * level, effml_core_isa_level()).  Use it to reproduce results across
 * machines: with the same level, seed, inputs and any thread count the
 * libeffml kernels give the same bytes on every x86-64 CPU that supports the
 * level.  Between levels, which results are bit-identical and which may
 * differ in the last bits (and by how much) is listed in docs/conventions.md
 * ("Results across ISA levels").  OpenBLAS picks its own kernels and is not
 * affected (its choice is OpenBLAS's OPENBLAS_CORETYPE environment
 * variable).  Not thread-safe with calls running on the same context.
 * @return EFFML_E_INVALID_ARG (ctx NULL, level not an EFFML_CORE_ISA_* value),
 *         EFFML_E_UNSUPPORTED (level above the CPU's; the cap is unchanged).
 */
EFFML_API effml_status effml_context_set_isa_level(effml_context *ctx, int32_t level);

/**
 * ISA level the kernels of calls on `ctx` dispatch to: the CPU's level, or the
 * cap set by effml_context_set_isa_level().  ctx NULL: the CPU's level.
 */
EFFML_API int32_t effml_context_isa_level(const effml_context *ctx);

/** Re-seed the context's generator (same effect as creating it with this seed). */
EFFML_API void effml_context_set_seed(effml_context *ctx, uint64_t seed);

/** Next 64 random bits from the context's generator (for callers that want the same stream). */
EFFML_API uint64_t effml_context_random_u64(effml_context *ctx);

/* ---- progress and cancellation of long calls ---- */

/**
 * Progress callback of a context: called by the long calls (training and
 * batched inference, re-sampling, kNN, leverage scores and Lewis weights,
 * cascade runs and threshold selection, calibrator fits, .npy/IDX/safetensors loads and safetensors
 * saves; docs/conventions.md lists the unit of each) between units of work,
 * on the thread that made the call.
 * @param call  name of the public function running ("effml_sampler_knn"), static
 * @param done  units finished so far (rows, steps, iterations, bytes: the
 *              unit is the call's own and named in a cancellation message)
 * @param total units in all, or 0 when not known in advance
 * @return 0 to go on; nonzero to stop: the call then returns
 *         EFFML_E_CANCELLED and publishes no output (handles stay unset;
 *         a training run keeps the parameters of its last completed step).
 * The callback may not call libeffml with the same context.
 */
typedef int32_t (*effml_context_progress_fn)(void *user_data, const char *call, int64_t done,
                                              int64_t total);

/** Set (or, with NULL, remove) the context's progress callback. */
EFFML_API void effml_context_set_progress(effml_context *ctx, effml_context_progress_fn fn,
                                          void *user_data);

/**
 * Request (cancel = 1) or withdraw (0) cancellation of the call running with
 * `ctx`.  Unlike everything else on a context, this may be called from any
 * thread or from a signal handler while another thread runs a call (a
 * Python Ctrl-C handler, a GUI's stop button).  The request stays until it is
 * withdrawn: every long call made with `ctx` meanwhile returns
 * EFFML_E_CANCELLED at its first check.
 */
EFFML_API void effml_context_set_cancel(effml_context *ctx, int32_t cancel);

/** 1 if cancellation is requested on `ctx`, else 0. */
EFFML_API int32_t effml_context_cancel_requested(const effml_context *ctx);

/* ---- introspection (what a binding checks in the library it loaded) ---- */

/** ISA levels of the hand-written kernels (sparse matrix products, transposes). */
#define EFFML_CORE_ISA_PORTABLE 0 /**< portable C (GCC/Clang vector extensions) */
#define EFFML_CORE_ISA_AVX2 1     /**< x86-64 AVX2 + FMA */
#define EFFML_CORE_ISA_AVX512 2   /**< x86-64 AVX-512F */

/**
 * Highest ISA level the kernels can dispatch to on this CPU (EFFML_CORE_ISA_*),
 * read from the CPU at each call: the level of every kernel call on a context
 * that effml_context_set_isa_level() has not capped.  Only the libeffml
 * kernels follow it; OpenBLAS picks its own.  Thread-safe.
 */
EFFML_API int32_t effml_core_isa_level(void);

/** Name of an ISA level ("portable", "avx2", "avx512"); "unknown" otherwise.  Static storage. */
EFFML_API const char *effml_core_isa_name(int32_t level);

/**
 * sizeof() of a public option struct as this library was compiled, by its
 * type name ("effml_train_options", "effml_sampler_resample_options", ...),
 * or 0 for a name that is not a public option struct.  A binding that
 * mirrors a struct compares its mirror's size with this one; the library
 * reads only the first `struct_size` bytes of an options argument, so a
 * smaller (older) mirror is fine once its `struct_size` says so, while an
 * `_init` call writes the library's full size.  Thread-safe.
 */
EFFML_API size_t effml_core_struct_size(const char *name);

/**
 * Name of public option struct `i` (0, 1, ... in header order), or NULL past
 * the last: iterate to learn every struct the library knows.  Static storage.
 */
EFFML_API const char *effml_core_struct_name(int32_t i);

EFFML_END_DECLS

#endif /* EFFML_CORE_H */
