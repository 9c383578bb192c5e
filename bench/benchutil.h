/* Common benchmark output: one JSON object per line with keys bench, case,
 * ours_s, baseline, baseline_s, speedup (= baseline_s / ours_s), plus extra
 * case-specific keys given as a preformatted JSON fragment.
 *
 * Conventions every bench follows (scripts/bench.sh, bench/combine.py):
 *  - one "machine" line first (bu_machine): CPU model, ISA level, threads,
 *    OpenBLAS version and core type, copy bandwidth into warm and into
 *    freshly allocated memory, load average;
 *  - timings are min / median / max over >= 5 warm repetitions after a
 *    warm-up, ours and the baseline interleaved in one process where both are
 *    C (bu_time_pair), the raw repetitions in ours_runs / baseline_runs so
 *    bench/combine.py can pool repeated rounds;
 *  - a floor (work the method cannot avoid) is measured in the same run and
 *    reported as a "<case>_vs_floor" line whose speedup = floor / ours. */
#ifndef EFFML_BENCHUTIL_H
#define EFFML_BENCHUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "effml.h"

/* Monotonic wall clock in seconds. */
double bu_now(void);
/* Print one result line.  `extra` is NULL or e.g. "\"threads\":2,\"nnz\":123". */
void bu_report(const char *bench, const char *case_name, double ours_s, const char *baseline,
               double baseline_s, const char *extra);
/* Print one result line from raw repetitions: ours_s / baseline_s are the
 * medians, *_min / *_max beside them, *_runs the raw values; speedup =
 * median(baseline) / median(ours).  nb == 0: baseline_s is null. */
void bu_report_runs(const char *bench, const char *case_name, const double *ours, int n,
                    const char *baseline, const double *base, int nb, const char *extra);
/* Median / min / max of v[0..n) (v is left sorted). */
double bu_median(double *v, int n);
/* Peak resident set size of this process in bytes (from /proc/self/status VmHWM). */
int64_t bu_peak_rss(void);

/* Highest x86 ISA level this CPU offers among the library's kernels:
 * "avx512f", "avx2+fma" or "baseline". */
const char *bu_isa_level(void);
/* Copy bandwidth in GB/s (bytes copied / s, median of 5) of a `bytes`-sized
 * memcpy into memory already written (warm) or into a freshly malloc'd
 * buffer each time (fresh: includes the page faults of first touch). */
double bu_copy_gbs(size_t bytes, int fresh);
/* Seconds to write `bytes` once into freshly malloc'd memory (memset), the
 * cost of handing back a new output of that size. */
double bu_fresh_write_s(size_t bytes);
/* Print the machine line for `bench` (case "machine"); `threads` is the
 * library's thread count, `extra` as in bu_report. */
void bu_machine(const char *bench, int threads, const char *extra);

typedef void (*bu_fn)(void *);
/* Interleaved timing: one warm-up of each, then reps x (a, b); ta/tb get the
 * raw per-run seconds (b may be NULL: only a is timed). */
void bu_time_pair(bu_fn fa, void *a, bu_fn fb, void *b, int reps, double *ta, double *tb);
/* Wait (polling every millisecond, at most max_s seconds) until no other
 * thread of this process is running, e.g. until OpenBLAS's workers, which
 * busy-wait for about 2^28 TSC cycles (OPENBLAS_THREAD_TIMEOUT, ~0.1 s)
 * after each call, have gone to sleep.  libeffml's own pool workers (threads
 * named "effml-pool", effml_context_set_thread_pool) are not waited for: they
 * spin only for the pool's spin time after a call of ours, and keeping them
 * awake for our next call is the pool's purpose.  Returns the seconds
 * waited; where /proc/self/task cannot be read (non-Linux) it returns 0 at
 * once. */
double bu_quiesce(double max_s);
/* Wait (polling every 0.1 ms, at most max_s seconds) until libeffml's pool
 * workers ("effml-pool") have stopped spinning, so that a baseline timed next
 * does not share the cores with them.  Returns the seconds waited. */
double bu_pool_idle(double max_s);
/* Turn on ctx's worker pool for our side (effml_context_set_thread_pool) with
 * the default spin time, or as the command line says: "--no-pool" (per-call
 * threads), "--pool-spin US".  Writes "\"pool\":1,\"pool_spin_us\":N" (JSON
 * fragment for the machine line and the cases) into json[cap].  Returns 1
 * (pool on), 0 (off), -1 (refused; message on stderr). */
int bu_pool_setup(effml_context *ctx, int argc, char **argv, char *json, size_t cap);

#endif
