/*
 * Queries on sparse layers: nonzero counts, matrix shapes, dense views of
 * the values and gradients, and the on-request dense weight gradient (RigL).
 */
#include <string.h>

#include "sparse_internal.h"

/* ---------------- queries ---------------- */

/* Visitor: add the nonzeros of a sparse layer to *(int64_t *)arg. */
static effml_status add_nnz(effml_context *ctx, effml_layer *l, void *arg) {
  effml__sparse_layer *s = effml__sparse_of(l);
  for (int32_t i = 0; s && i < s->n_mats; ++i) *(int64_t *)arg += s->mats[i].nnz;
  return EFFML_OK;
}

int64_t effml_sparse_nnz(const effml_layer *layer) {
  int64_t n = 0;
  (void)effml__layer_walk(NULL, (effml_layer *)(uintptr_t)layer, add_nnz, &n);
  return n;
}

int32_t effml_sparse_num_matrices(const effml_layer *layer) {
  effml__sparse_layer *s = effml__sparse_of((effml_layer *)(uintptr_t)layer);
  return s ? s->n_mats : 0;
}

static effml_status get_matrix(effml_context *ctx, const effml_layer *layer, int32_t m,
                               effml__sparse_layer **s_out) {
  EFFML__CHECK_NULL(ctx, layer);
  effml__sparse_layer *s = effml__sparse_of((effml_layer *)(uintptr_t)layer);
  if (!s)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "layer of kind '%s' is not a sparse layer",
                      effml_layer_kind(layer));
  if (m < 0 || m >= s->n_mats)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "matrix index m=%d is outside [0, %d)", (int)m,
                      (int)s->n_mats);
  *s_out = s;
  return EFFML_OK;
}

effml_status effml_sparse_matrix_shape(effml_context *ctx, const effml_layer *layer, int32_t m,
                                       int64_t *rows, int64_t *cols) {
  EFFML__ENTER(ctx);
  effml__sparse_layer *s = NULL;
  EFFML__TRY(get_matrix(ctx, layer, m, &s));
  EFFML__CHECK_NULL(ctx, rows);
  EFFML__CHECK_NULL(ctx, cols);
  *rows = s->mats[m].rows;
  *cols = s->mats[m].cols;
  return EFFML_OK;
}

static effml_status check_dense_out(effml_context *ctx, const effml__spmat *mt, effml_tensor *dense) {
  EFFML__TRY(effml__check_tensor(ctx, dense, "dense", EFFML_F32, 2, 1));
  EFFML__TRY(effml__check_writable(ctx, dense, "dense"));
  EFFML__TRY(effml__check_dim(ctx, dense, "dense", 0, mt->rows));
  EFFML__TRY(effml__check_dim(ctx, dense, "dense", 1, mt->cols));
  return EFFML_OK;
}

static effml_status scatter_dense(effml_context *ctx, const effml_layer *layer, int32_t m,
                                  effml_tensor *dense, int use_grad) {
  effml__sparse_layer *s = NULL;
  EFFML__TRY(get_matrix(ctx, layer, m, &s));
  const effml__spmat *mt = &s->mats[m];
  EFFML__TRY(check_dense_out(ctx, mt, dense));
  effml_layer *l = (effml_layer *)(uintptr_t)layer;
  const float *v = use_grad ? effml__grad_f32(l, mt->param) : effml__param_f32(l, mt->param);
  float *d = effml__f32(dense);
  memset(d, 0, (size_t)(mt->rows * mt->cols) * sizeof(float));
  for (int64_t r = 0; r < mt->rows; ++r)
    for (int64_t p = mt->row_ptr[r]; p < mt->row_ptr[r + 1]; ++p)
      d[r * mt->cols + mt->col_idx[p]] = v[mt->slot[p]];
  return EFFML_OK;
}

effml_status effml_sparse_matrix_to_dense(effml_context *ctx, const effml_layer *layer, int32_t m,
                                          effml_tensor *dense) {
  EFFML__ENTER(ctx);
  return scatter_dense(ctx, layer, m, dense, 0);
}

effml_status effml_sparse_matrix_grad_to_dense(effml_context *ctx, const effml_layer *layer,
                                               int32_t m, effml_tensor *dense) {
  EFFML__ENTER(ctx);
  return scatter_dense(ctx, layer, m, dense, 1);
}

/* Visitor: arm (*(int32_t *)arg != 0) or disarm the dense gradient of a sparse layer. */
static effml_status arm_dense_grad(effml_context *ctx, effml_layer *layer, void *arg) {
  const int32_t on = *(const int32_t *)arg;
  effml__sparse_layer *s = effml__sparse_of(layer);
  if (s) {
    for (int32_t i = 0; i < s->n_mats; ++i) {
      effml__spmat *m = &s->mats[i];
      if (on && !m->dense_grad) {
        size_t n;
        if (!effml__mul_size((size_t)m->rows, (size_t)m->cols, &n) ||
            !effml__mul_size(n, sizeof(float), &n))
          return effml__err(ctx, EFFML_E_OVERFLOW, "dense gradient size overflows");
        m->dense_grad = (float *)effml__alloc_or_err(ctx, n, "dense weight gradient");
        if (!m->dense_grad) return EFFML_E_NOMEM;
      }
      if (!on) {
        effml__free(ctx, m->dense_grad);
        m->dense_grad = NULL;
      }
      m->dense_grad_on = on != 0;
      m->dense_grad_valid = 0;
    }
  }
  return EFFML_OK;
}

effml_status effml_sparse_request_dense_grad(effml_context *ctx, effml_layer *layer, int32_t on) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, layer);
  return effml__layer_walk(ctx, layer, arm_dense_grad, &on);
}

effml_status effml_sparse_dense_grad(effml_context *ctx, const effml_layer *layer, int32_t m,
                                     effml_tensor *dense) {
  EFFML__ENTER(ctx);
  effml__sparse_layer *s = NULL;
  EFFML__TRY(get_matrix(ctx, layer, m, &s));
  const effml__spmat *mt = &s->mats[m];
  EFFML__TRY(check_dense_out(ctx, mt, dense));
  if (!mt->dense_grad || !mt->dense_grad_valid)
    return effml__err(ctx, EFFML_E_STATE,
                      "no dense gradient for matrix %d: call effml_sparse_request_dense_grad "
                      "before a backward pass",
                      (int)m);
  memcpy(effml__f32(dense), mt->dense_grad, (size_t)(mt->rows * mt->cols) * sizeof(float));
  return EFFML_OK;
}
