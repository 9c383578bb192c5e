/* Common benchmark output: one JSON object per line with keys bench, case,
 * ours_s, baseline, baseline_s, speedup (= baseline_s / ours_s), plus extra
 * case-specific keys given as a preformatted JSON fragment. */
#ifndef EFFML_BENCHUTIL_H
#define EFFML_BENCHUTIL_H

#include <stdint.h>

/* Monotonic wall clock in seconds. */
double bu_now(void);
/* Print one result line.  `extra` is NULL or e.g. "\"threads\":2,\"nnz\":123". */
void bu_report(const char *bench, const char *case_name, double ours_s, const char *baseline,
               double baseline_s, const char *extra);
/* Peak resident set size of this process in bytes (from /proc/self/status VmHWM). */
int64_t bu_peak_rss(void);

#endif
