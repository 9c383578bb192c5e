/*
 * Sparse Doped (Sparse-IFT §2.2, Fig. 2d): y = x W_sᵀ + (x Uᵀ) Vᵀ + b with
 * W_s [out, in] sparse at s and U [r, in], V [out, r] dense, r =
 * ⌊s·in·out/(in+out)⌋.  The low-rank part goes through cblas_sgemm:
 *
 *   forward : Y = sparse(X) + T Vᵀ,  T = X Uᵀ [batch, r]  (T kept for backward)
 *   backward: g_W = SDDMM(dYᵀ, Xᵀ);  dV += dYᵀ T;  dT = dY V;  dU += dTᵀ X;
 *             dX = (W_sᵀ dYᵀ)ᵀ + dT U
 */
#include "blas.h"
#include <math.h>
#include <string.h>

#include "sparse_internal.h"

static effml_status doped_forward(effml_context *ctx, effml_layer *layer, const effml_tensor *x,
                                  effml_tensor *y, int32_t mode) {
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  const int64_t batch = x->shape[0], in = layer->in_features, out = layer->out_features;
  const int64_t r = s->inner, ldb = (batch + 15) / 16 * 16;
  const int train = mode == EFFML_LAYER_MODE_TRAIN;
  const effml__spmat *W = &s->mats[0];
  float *XT = NULL, *T = NULL, *YT = NULL, *tmp = NULL;
  effml_status st = EFFML_OK;
  if (train) {
    st = effml__ws_reserve(ctx, &s->xt, &s->xt_cap, (size_t)(in * ldb));
    if (st == EFFML_OK) st = effml__ws_reserve(ctx, &s->ht, &s->ht_cap, (size_t)(batch * r));
    XT = s->xt;
    T = s->ht;
  } else {
    XT = (float *)effml__alloc_or_err(ctx, (size_t)(in * ldb) * sizeof(float), "sparse Xᵀ panel");
    T = (float *)effml__alloc_or_err(ctx, (size_t)(batch * r) * sizeof(float), "doped T");
    if (!XT || !T) st = EFFML_E_NOMEM;
  }
  if (st == EFFML_OK) {
    YT = effml__scratch(ctx, s, train, EFFML__WS_YT, (size_t)(out * ldb), "sparse Yᵀ panel");
    tmp = YT ? effml__scratch(ctx, s, train, EFFML__WS_NNZ, (size_t)W->nnz, "packed values") : NULL;
    if (!YT || !tmp) st = EFFML_E_NOMEM;
  }
  if (st == EFFML_OK) {
    const float *X = effml__cf32(x);
    float *Y = effml__f32(y);
    effml__transpose_in(ctx, X, batch, in, XT, ldb);
    const float *w = effml__spmat_packed(W, effml__param_f32(layer, W->param), tmp);
    effml__spmat_mul(ctx, W, w, XT, ldb, 0, YT);
    effml__transpose_out(ctx, YT, ldb, out, batch,
                         s->has_bias ? effml__param_f32(layer, s->bias_param) : NULL, 0, Y);
    st = effml__sgemm(ctx, CblasNoTrans, CblasTrans, batch, r, in, 1.0f, X, in,
                      effml__param_f32(layer, s->u_param), in, 0.0f, T, r);
    if (st == EFFML_OK)
      st = effml__sgemm(ctx, CblasNoTrans, CblasTrans, batch, out, r, 1.0f, T, r,
                        effml__param_f32(layer, s->v_param), r, 1.0f, Y, out);
  }
  effml__scratch_release(ctx, train, tmp);
  effml__scratch_release(ctx, train, YT);
  if (!train) {
    effml__free(ctx, XT);
    effml__free(ctx, T);
  } else {
    s->ldb = ldb;
    s->batch = batch;
    s->x = effml__cf32(x);
  }
  return st;
}

static effml_status doped_backward(effml_context *ctx, effml_layer *layer,
                                   const effml_tensor *dy, effml_tensor *dx) {
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  const int64_t batch = dy->shape[0], in = layer->in_features, out = layer->out_features;
  const int64_t r = s->inner, ldb = s->ldb;
  effml__spmat *W = &s->mats[0];
  const float *DY = effml__cf32(dy), *X = s->x, *T = s->ht;
  float *DYT = effml__scratch(ctx, s, 1, EFFML__WS_DYT, (size_t)(out * ldb), "sparse dYᵀ");
  float *dT = DYT ? effml__scratch(ctx, s, 1, EFFML__WS_AUX, (size_t)(batch * r), "doped dT") : NULL;
  float *DXT = dx && dT ? effml__scratch(ctx, s, 1, EFFML__WS_DXT, (size_t)(in * ldb), "sparse dXᵀ") : NULL;
  effml_status st = (!DYT || !dT || (dx && !DXT)) ? EFFML_E_NOMEM : EFFML_OK;
  if (st == EFFML_OK) {
    effml__transpose_in(ctx, DY, batch, out, DYT, ldb);
    st = effml__spmat_backward_weight(ctx, layer, W, DYT, s->xt, ldb);
  }
  if (st == EFFML_OK) {
    const float *U = effml__param_f32(layer, s->u_param), *V = effml__param_f32(layer, s->v_param);
    if (effml__layer_param_entry(layer, s->v_param)->trainable) /* dV += dYᵀ T */
      st = effml__sgemm(ctx, CblasTrans, CblasNoTrans, out, r, batch, 1.0f, DY, out, T, r, 1.0f,
                        effml__grad_f32(layer, s->v_param), r);
    /* dT = dY V */
    if (st == EFFML_OK)
      st = effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, batch, r, out, 1.0f, DY, out, V, r, 0.0f,
                        dT, r);
    if (st == EFFML_OK && effml__layer_param_entry(layer, s->u_param)->trainable) /* dU += dTᵀ X */
      st = effml__sgemm(ctx, CblasTrans, CblasNoTrans, r, in, batch, 1.0f, dT, r, X, in, 1.0f,
                        effml__grad_f32(layer, s->u_param), in);
    if (st == EFFML_OK && dx) {
      st = effml__spmat_backward_input(ctx, layer, W, DYT, ldb, 0, DXT);
      if (st == EFFML_OK) {
        float *DX = effml__f32(dx);
        effml__transpose_out(ctx, DXT, ldb, in, batch, NULL, 0, DX);
        st = effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, batch, in, r, 1.0f, dT, r, U, in, 1.0f,
                          DX, in);
      }
    }
  }
  if (st == EFFML_OK && s->has_bias) effml__bias_backward(layer, s->bias_param, DY, batch, out);
  s->x = NULL;
  return st;
}

static effml_status add_dense(effml_context *ctx, effml_layer *layer, const char *name,
                              int64_t rows, int64_t cols, int32_t *idx) {
  int64_t shape[2] = {rows, cols};
  EFFML__TRY(effml__layer_add_param(ctx, layer, name, 2, shape, 1, idx));
  effml__fill_uniform_sym_f32(effml__ctx_rng(ctx), effml__param_f32(layer, *idx), rows * cols,
                              1.0 / sqrt((double)cols));
  return EFFML_OK;
}

/* The sparse product, the dense U [r, in] and V [out, r], the sum of the
 * two paths, + out for the bias. */
static effml_status doped_flops(effml_context *ctx, const effml_layer *layer, int64_t in_width,
                                double *flops) {
  const effml__sparse_layer *s = (const effml__sparse_layer *)layer->impl;
  const int64_t out = layer->out_features;
  double f = effml__linear_flops(s->mats[0].nnz, out) +
             effml__linear_flops(s->inner * layer->in_features, s->inner) +
             effml__linear_flops(out * s->inner, out) + (double)out;
  if (s->has_bias) f += (double)out;
  *flops = f;
  return EFFML_OK;
}

const effml__layer_ops effml__sparse_doped_ops = {
    .name = "sparse_doped",
    .forward = doped_forward,
    .backward = doped_backward,
    .destroy = effml__sparse_destroy,
    .flops = doped_flops,
    .traits = EFFML__KIND_SPARSE,
};

effml_status effml_sparse_doped_create(effml_context *ctx, int64_t in, int64_t out,
                                       const effml_sparse_options *opt, effml_layer **out_layer) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_doped_create";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out_layer);
  effml_sparse_options o;
  EFFML__TRY(effml__sparse_read_options(ctx, opt, &o));
  if (in < 1 || out < 1 || in > INT32_MAX || out > INT32_MAX)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: in_features=%lld and out_features=%lld must be in [1, 2^31-1]", fn,
                      (long long)in, (long long)out);
  int64_t r = 0, nnz = 0;
  EFFML__TRY(effml_sparse_doped_rank(ctx, in, out, o.sparsity, 1, 0, &r));
  if (r < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: sparsity=%g gives rank 0 for a %lld x %lld layer (zero-width "
                      "low-rank part); raise the sparsity or the widths",
                      fn, o.sparsity, (long long)out, (long long)in);
  EFFML__TRY(effml__nnz_for(ctx, fn, out, in, o.sparsity, &nnz));
  effml_layer *layer = NULL;
  EFFML__TRY(effml__sparse_layer_new(ctx, &effml__sparse_doped_ops, in, out, 1, o.bias, &layer));
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  s->inner = r;
  s->block = o.block_rows;
  effml_status st = effml__sparse_random_matrix(ctx, layer, 0, out, in, nnz, "weight", o.init, in);
  if (st == EFFML_OK) st = add_dense(ctx, layer, "u", r, in, &s->u_param);
  if (st == EFFML_OK) st = add_dense(ctx, layer, "v", out, r, &s->v_param);
  if (st == EFFML_OK) st = effml__sparse_add_bias(ctx, layer, out, in);
  if (st != EFFML_OK) {
    effml_layer_free(layer);
    return st;
  }
  *out_layer = layer;
  return EFFML_OK;
}
