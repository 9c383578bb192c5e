/* Internal helpers of the calibration area (lib/calibration). */
#ifndef EFFML_CALIBRATION_INTERNAL_H
#define EFFML_CALIBRATION_INTERNAL_H

#include "../tensor/tensor_internal.h"

/* Copy a 2-D f32/f64 tensor (any strides) into a new row-major double array;
 * every value finite (EFFML_E_NUMERIC names row and column).  `cols` < 0:
 * any; else must match.  Messages start with `fn` and name `name`. */
EFFML__HIDDEN effml_status effml__cal_read_matrix(effml_context *ctx, const char *fn,
                                                  const effml_tensor *t, const char *name,
                                                  int64_t rows, int64_t cols, double **out,
                                                  int64_t *rows_out, int64_t *cols_out);
/* 1-D f32/f64 [n] (n < 0: any) into doubles, no NaN. */
EFFML__HIDDEN effml_status effml__cal_read_vector(effml_context *ctx, const char *fn,
                                                  const effml_tensor *t, const char *name,
                                                  int64_t n, double **out, int64_t *n_out);
/* 1-D bool/u8/i32/i64 [n] flags, each 0 or 1 (else EFFML_E_INVALID_ARG naming the element). */
EFFML__HIDDEN effml_status effml__cal_read_flags(effml_context *ctx, const char *fn,
                                                 const effml_tensor *t, const char *name,
                                                 int64_t n, unsigned char **out);
/* 1-D i32/i64 [n] labels in [0, K). */
EFFML__HIDDEN effml_status effml__cal_read_labels(effml_context *ctx, const char *fn,
                                                  const effml_tensor *t, const char *name,
                                                  int64_t n, int64_t K, int64_t **out);
/* Check a contiguous writable f32/f64 [rows, cols] output. */
EFFML__HIDDEN effml_status effml__cal_check_out(effml_context *ctx, const char *fn,
                                                const effml_tensor *t, const char *name,
                                                int64_t rows, int64_t cols);
/* Write row-major doubles into a checked output. */
EFFML__HIDDEN void effml__cal_write(effml_tensor *t, const double *v, int64_t count);

#endif
