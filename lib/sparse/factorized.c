/*
 * Sparse Factorized (Sparse-IFT §2.2, Fig. 2c): y = V σ(U x) + b with U
 * [d, in] and V [out, d] both sparse at s and d = ⌈in·out/((1-s)(in+out))⌉.
 *
 *   forward : Hᵀ = U Xᵀ,  Aᵀ = σ(Hᵀ),  Yᵀ = V Aᵀ          (all batch-minor)
 *   backward: g_V = SDDMM(dYᵀ, Aᵀ),  dAᵀ = Vᵀ dYᵀ,
 *             dHᵀ = dAᵀ ⊙ σ'(H)   (ReLU: A > 0 ⇔ H > 0, so only Aᵀ is kept),
 *             g_U = SDDMM(dHᵀ, Xᵀ),  dXᵀ = Uᵀ dHᵀ
 */
#include <string.h>

#include "sparse_internal.h"

enum { SF_U = 0, SF_V = 1 };

static effml_status factorized_forward(effml_context *ctx, effml_layer *layer,
                                       const effml_tensor *x, effml_tensor *y, int32_t mode) {
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  const int64_t batch = x->shape[0], in = layer->in_features, out = layer->out_features;
  const int64_t d = s->inner, ldb = (batch + 15) / 16 * 16;
  const int train = mode == EFFML_LAYER_MODE_TRAIN;
  float *XT = NULL, *AT = NULL, *YT = NULL, *tmp = NULL;
  effml_status st = EFFML_OK;
  if (train) {
    st = effml__ws_reserve(ctx, &s->xt, &s->xt_cap, (size_t)(in * ldb));
    if (st == EFFML_OK) st = effml__ws_reserve(ctx, &s->ht, &s->ht_cap, (size_t)(d * ldb));
    XT = s->xt;
    AT = s->ht;
  } else {
    XT = (float *)effml__alloc_or_err(ctx, (size_t)(in * ldb) * sizeof(float), "sparse Xᵀ panel");
    AT = (float *)effml__alloc_or_err(ctx, (size_t)(d * ldb) * sizeof(float), "sparse Hᵀ panel");
    if (!XT || !AT) st = EFFML_E_NOMEM;
  }
  if (st == EFFML_OK) {
    YT = effml__scratch(ctx, s, train, EFFML__WS_YT, (size_t)(out * ldb), "sparse Yᵀ panel");
    if (!YT) st = EFFML_E_NOMEM;
  }
  if (st == EFFML_OK) {
    size_t mx = (size_t)(s->mats[SF_U].nnz > s->mats[SF_V].nnz ? s->mats[SF_U].nnz : s->mats[SF_V].nnz);
    tmp = effml__scratch(ctx, s, train, EFFML__WS_NNZ, mx, "packed sparse values");
    if (!tmp) st = EFFML_E_NOMEM;
  }
  if (st == EFFML_OK) {
    effml__transpose_in(ctx, effml__cf32(x), batch, in, XT, ldb);
    const effml__spmat *U = &s->mats[SF_U], *V = &s->mats[SF_V];
    const float *u = effml__spmat_packed(U, effml__param_f32(layer, U->param), tmp);
    effml__spmat_mul(ctx, U, u, XT, ldb, 0, AT);
    if (s->activation == EFFML_LAYER_ACT_RELU)
      for (int64_t i = 0; i < d * ldb; ++i) AT[i] = AT[i] > 0.0f ? AT[i] : 0.0f;
    const float *v = effml__spmat_packed(V, effml__param_f32(layer, V->param), tmp);
    effml__spmat_mul(ctx, V, v, AT, ldb, 0, YT);
    effml__transpose_out(ctx, YT, ldb, out, batch,
                         s->has_bias ? effml__param_f32(layer, s->bias_param) : NULL, 0,
                         effml__f32(y));
  }
  effml__scratch_release(ctx, train, tmp);
  effml__scratch_release(ctx, train, YT);
  if (!train) {
    effml__free(ctx, XT);
    effml__free(ctx, AT);
  } else {
    s->ldb = ldb;
    s->batch = batch;
  }
  return st;
}

static effml_status factorized_backward(effml_context *ctx, effml_layer *layer,
                                        const effml_tensor *dy, effml_tensor *dx) {
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  const int64_t batch = dy->shape[0], in = layer->in_features, out = layer->out_features;
  const int64_t d = s->inner, ldb = s->ldb;
  effml__spmat *U = &s->mats[SF_U], *V = &s->mats[SF_V];
  float *DYT = effml__scratch(ctx, s, 1, EFFML__WS_DYT, (size_t)(out * ldb), "sparse dYᵀ");
  float *DHT = DYT ? effml__scratch(ctx, s, 1, EFFML__WS_AUX, (size_t)(d * ldb), "sparse dHᵀ") : NULL;
  float *DXT = dx && DHT ? effml__scratch(ctx, s, 1, EFFML__WS_DXT, (size_t)(in * ldb), "sparse dXᵀ") : NULL;
  effml_status st = (!DYT || !DHT || (dx && !DXT)) ? EFFML_E_NOMEM : EFFML_OK;
  if (st == EFFML_OK) {
    effml__transpose_in(ctx, effml__cf32(dy), batch, out, DYT, ldb);
    st = effml__spmat_backward_weight(ctx, layer, V, DYT, s->ht, ldb);
  }
  if (st == EFFML_OK) st = effml__spmat_backward_input(ctx, layer, V, DYT, ldb, 0, DHT);
  if (st == EFFML_OK) {
    if (s->activation == EFFML_LAYER_ACT_RELU)
      for (int64_t i = 0; i < d * ldb; ++i)
        if (!(s->ht[i] > 0.0f)) DHT[i] = 0.0f;
    st = effml__spmat_backward_weight(ctx, layer, U, DHT, s->xt, ldb);
  }
  if (st == EFFML_OK && dx) {
    st = effml__spmat_backward_input(ctx, layer, U, DHT, ldb, 0, DXT);
    if (st == EFFML_OK) effml__transpose_out(ctx, DXT, ldb, in, batch, NULL, 0, effml__f32(dx));
  }
  if (st == EFFML_OK && s->has_bias)
    effml__bias_backward(layer, s->bias_param, effml__cf32(dy), batch, out);
  return st;
}

/* U then V, + d for the ReLU between them, + out for the bias. */
static effml_status factorized_flops(effml_context *ctx, const effml_layer *layer,
                                     int64_t in_width, double *flops) {
  const effml__sparse_layer *s = (const effml__sparse_layer *)layer->impl;
  double f = effml__linear_flops(s->mats[SF_U].nnz, s->inner) +
             effml__linear_flops(s->mats[SF_V].nnz, layer->out_features);
  if (s->activation == EFFML_LAYER_ACT_RELU) f += (double)s->inner;
  if (s->has_bias) f += (double)layer->out_features;
  *flops = f;
  return EFFML_OK;
}

const effml__layer_ops effml__sparse_factorized_ops = {
    .name = "sparse_factorized",
    .forward = factorized_forward,
    .backward = factorized_backward,
    .destroy = effml__sparse_destroy,
    .flops = factorized_flops,
    .traits = EFFML__KIND_SPARSE,
};

effml_status effml_sparse_factorized_create(effml_context *ctx, int64_t in, int64_t out,
                                            const effml_sparse_options *opt,
                                            effml_layer **out_layer) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_factorized_create";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out_layer);
  effml_sparse_options o;
  EFFML__TRY(effml__sparse_read_options(ctx, opt, &o));
  if (in < 1 || out < 1 || in > INT32_MAX || out > INT32_MAX)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: in_features=%lld and out_features=%lld must be in [1, 2^31-1]", fn,
                      (long long)in, (long long)out);
  int64_t d = 0, nu = 0, nv = 0;
  EFFML__TRY(effml_sparse_factorized_dim(ctx, in, out, o.sparsity, 1, 0, &d));
  if (d > INT32_MAX)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: inner width d=%lld is too large", fn,
                      (long long)d);
  EFFML__TRY(effml__nnz_for(ctx, fn, d, in, o.sparsity, &nu));
  EFFML__TRY(effml__nnz_for(ctx, fn, out, d, o.sparsity, &nv));
  effml_layer *layer = NULL;
  EFFML__TRY(effml__sparse_layer_new(ctx, &effml__sparse_factorized_ops, in, out, 2, o.bias, &layer));
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  s->inner = d;
  s->activation = o.activation;
  s->block = o.block_rows;
  effml_status st = effml__sparse_random_matrix(ctx, layer, SF_U, d, in, nu, "u.weight", o.init, in);
  if (st == EFFML_OK)
    st = effml__sparse_random_matrix(ctx, layer, SF_V, out, d, nv, "v.weight", o.init, d);
  if (st == EFFML_OK) st = effml__sparse_add_bias(ctx, layer, out, d);
  if (st != EFFML_OK) {
    effml_layer_free(layer);
    return st;
  }
  *out_layer = layer;
  return EFFML_OK;
}
