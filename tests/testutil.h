/* Small helpers shared by the Check suites. */
#ifndef EFFML_TESTUTIL_H
#define EFFML_TESTUTIL_H

#include <check.h>
#include <stdint.h>

#include "effml.h"

/* A context with defaults and the given seed (fails the test on error). */
effml_context *tu_ctx(uint64_t seed);
/* f32 2-D tensor from an array (copied). */
effml_tensor *tu_f32(effml_context *ctx, int64_t rows, int64_t cols, const float *values);
/* Fill an f32 tensor with uniform values in [lo, hi) from a local generator. */
void tu_fill_uniform(effml_tensor *t, uint64_t seed, float lo, float hi);
/* Max |a - b| over n floats. */
double tu_max_abs_diff_f32(const float *a, const float *b, int64_t n);
/* Read a whole file; NULL if absent.  *len receives the size.  free() the result. */
unsigned char *tu_read_file(const char *path, size_t *len);
/* Run a suite, return the number of failures (for main). */
int tu_run(Suite *s);

/* An allocator that fails the Nth allocation (1-based) and counts live blocks. */
typedef struct tu_failing_alloc {
  int64_t fail_at;   /* 0 = never fail */
  int64_t count;     /* allocations attempted */
  int64_t live;      /* blocks currently allocated */
} tu_failing_alloc;
/* Context using that allocator. */
effml_context *tu_ctx_failing(tu_failing_alloc *fa);

#endif
