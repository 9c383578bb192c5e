/*
 * Sparse linear layer (and its relatives Sparse Wide and Sparse Parallel,
 * which are the same computation with 1 or k CSR matrices):
 *
 *   forward : Yᵀ = Σ_i W_i Xᵀ            spmm_t on batch-minor panels, + b
 *   backward: g_i = SDDMM(dYᵀ, Xᵀ) on W_i's mask    (nonzero gradients only)
 *             dXᵀ = Σ_i W_iᵀ dYᵀ         spmm_t with the CSC structure
 *             db  = Σ_b dY[b, :]
 *             dW_i = dYᵀ X (dense, one GEMM) only when requested (RigL)
 *
 * Also the shared plumbing of every sparse layer kind: creation, matrix
 * registration, workspaces, queries.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sparse_internal.h"

void effml_sparse_options_init(effml_sparse_options *opt) {
  if (!opt) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->sparsity = 0.9;
  opt->nnz = 0;
  opt->bias = 1;
  opt->init = EFFML_SPARSE_INIT_UNIFORM;
  opt->activation = EFFML_LAYER_ACT_RELU;
  opt->widen = EFFML_SPARSE_WIDEN_IN | EFFML_SPARSE_WIDEN_OUT;
  opt->block_rows = 1;
}

/* Read the prefix of the caller's options that it has (ABI rule). */
static effml_status read_options(effml_context *ctx, const effml_sparse_options *in,
                                 effml_sparse_options *o) {
  if (!in) {
    effml_sparse_options_init(o);
    return EFFML_OK;
  }
  EFFML__TRY(EFFML__OPTIONS_READ(ctx, "effml_sparse_options", effml_sparse_options_init, in, o,
                                 sizeof(uint32_t) + sizeof(double)));
  if (o->init != EFFML_SPARSE_INIT_UNIFORM && o->init != EFFML_SPARSE_INIT_KAIMING_NORMAL)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_sparse_options: init=%d is unknown",
                      (int)o->init);
  if (o->activation != EFFML_LAYER_ACT_IDENTITY && o->activation != EFFML_LAYER_ACT_RELU)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_sparse_options: activation=%d is unknown",
                      (int)o->activation);
  if (o->block_rows != 1 && o->block_rows != 4)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_sparse_options: block_rows=%d is not supported (1 = unstructured, "
                      "4 = 4x1 blocks)",
                      (int)o->block_rows);
  return EFFML_OK;
}

effml_status effml__sparse_read_options(effml_context *ctx, const effml_sparse_options *in,
                                        effml_sparse_options *o) {
  return read_options(ctx, in, o);
}

static effml_status check_dims(effml_context *ctx, const char *fn, int64_t in, int64_t out) {
  if (in < 1 || out < 1 || in > INT32_MAX || out > INT32_MAX)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: in_features=%lld and out_features=%lld must be in [1, 2^31-1]", fn,
                      (long long)in, (long long)out);
  return EFFML_OK;
}

float *effml__scratch(effml_context *ctx, effml__sparse_layer *s, int persistent, int slot,
                      size_t n, const char *what) {
  if (!persistent) return (float *)effml__alloc_or_err(ctx, (n ? n : 1) * sizeof(float), what);
  if (effml__ws_reserve(ctx, &s->ws[slot], &s->ws_cap[slot], n) != EFFML_OK) return NULL;
  return s->ws[slot];
}

void effml__scratch_release(effml_context *ctx, int persistent, float *p) {
  if (!persistent) effml__free(ctx, p);
}

/* ---------------- forward / backward of linear, wide, parallel ---------------- */

static int64_t round16(int64_t b) { return (b + 15) / 16 * 16; }

/* Yᵀ (+)= Σ_i W_i Xᵀ for the matrices of a linear/parallel layer; values
 * are packed to CSR order when RigL/SET moved slots. */
static effml_status sum_spmm(effml_context *ctx, effml_layer *layer, effml__sparse_layer *s,
                             const float *XT, int64_t ldb, float *YT, int train) {
  for (int32_t i = 0; i < s->n_mats; ++i) {
    effml__spmat *m = &s->mats[i];
    const float *vals = effml__param_f32(layer, m->param);
    float *tmp = NULL;
    if (!m->identity) {
      tmp = effml__scratch(ctx, s, train, EFFML__WS_NNZ, (size_t)m->nnz, "packed sparse values");
      if (!tmp) return EFFML_E_NOMEM;
      vals = effml__spmat_packed(m, vals, tmp);
    }
    effml__spmat_mul(ctx, m, vals, XT, ldb, i > 0, YT);
    if (tmp) effml__scratch_release(ctx, train, tmp);
  }
  return EFFML_OK;
}

static effml_status linear_forward(effml_context *ctx, effml_layer *layer, const effml_tensor *x,
                                   effml_tensor *y, int32_t mode) {
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  const int64_t batch = x->shape[0], in = layer->in_features, out = layer->out_features;
  const int64_t ldb = round16(batch);
  float *XT = NULL, *YT = NULL;
  effml_status st = EFFML_OK;
  if (mode == EFFML_LAYER_MODE_TRAIN) {
    st = effml__ws_reserve(ctx, &s->xt, &s->xt_cap, (size_t)(in * ldb));
    XT = s->xt;
  } else {
    XT = (float *)effml__alloc_or_err(ctx, (size_t)(in * ldb) * sizeof(float), "sparse Xᵀ panel");
    if (!XT) st = EFFML_E_NOMEM;
  }
  const int train = mode == EFFML_LAYER_MODE_TRAIN;
  /* one matrix: Xᵀ packed, the product and Y written in one parallel call
   * (no Yᵀ panel; the same bytes as the three steps below) */
  const int fused = s->n_mats == 1;
  if (st == EFFML_OK && fused) {
    effml__spmat *m = &s->mats[0];
    const float *vals = effml__param_f32(layer, m->param);
    float *tmp = NULL;
    if (!m->identity) {
      tmp = effml__scratch(ctx, s, train, EFFML__WS_NNZ, (size_t)m->nnz, "packed sparse values");
      if (!tmp) st = EFFML_E_NOMEM;
      else vals = effml__spmat_packed(m, vals, tmp);
    }
    const float *bias = s->has_bias ? effml__param_f32(layer, s->bias_param) : NULL;
    if (st == EFFML_OK && m->block == 4)
      effml__bspmm_forward(ctx, m, vals, effml__cf32(x), batch, XT, ldb, bias, 0, effml__f32(y),
                           -1);
    else if (st == EFFML_OK)
      effml__spmm_forward(ctx, m, vals, effml__cf32(x), batch, XT, ldb, bias, 0, effml__f32(y));
    if (tmp) effml__scratch_release(ctx, train, tmp);
  }
  if (st == EFFML_OK && !fused) {
    YT = effml__scratch(ctx, s, train, EFFML__WS_YT, (size_t)(out * ldb), "sparse Yᵀ panel");
    if (!YT) st = EFFML_E_NOMEM;
  }
  if (st == EFFML_OK && !fused) {
    effml__transpose_in(ctx, effml__cf32(x), batch, in, XT, ldb);
    st = sum_spmm(ctx, layer, s, XT, ldb, YT, train);
  }
  if (st == EFFML_OK && !fused)
    effml__transpose_out(ctx, YT, ldb, out, batch,
                         s->has_bias ? effml__param_f32(layer, s->bias_param) : NULL, 0,
                         effml__f32(y));
  effml__scratch_release(ctx, train, YT);
  if (mode != EFFML_LAYER_MODE_TRAIN) {
    effml__free(ctx, XT);
  } else { /* only a training forward may write layer state (INFER is shared) */
    s->ldb = ldb;
    s->batch = batch;
  }
  return st;
}

/* grad[slot[p]] += g[p] */
static void scatter_grad(const effml__spmat *m, const float *g, float *grad) {
  if (m->identity)
    for (int64_t p = 0; p < m->nnz; ++p) grad[p] += g[p];
  else
    for (int64_t p = 0; p < m->nnz; ++p) grad[m->slot[p]] += g[p];
}

/* Nonzero (and, when armed, dense) gradients of matrix m from dYᵀ, Xᵀ. */
effml_status effml__spmat_backward_weight(effml_context *ctx, effml_layer *layer,
                                          effml__spmat *m, const float *DYT, const float *XT,
                                          int64_t ldb) {
  effml__param *pe = effml__layer_param_entry(layer, m->param);
  if (pe->trainable && m->block == 4) {
    /* the block kernel adds into the gradient slots itself (same sums as scatter_grad) */
    effml__bsddmm(ctx, m, DYT, XT, ldb, effml__f32(pe->grad), m->identity ? NULL : m->slot, 1, -1);
  } else if (pe->trainable) {
    float *g = effml__scratch(ctx, (effml__sparse_layer *)layer->impl, 1, EFFML__WS_NNZ,
                              (size_t)m->nnz, "sparse gradient");
    if (!g) return EFFML_E_NOMEM;
    effml__sddmm_t(ctx, m, DYT, XT, ldb, g);
    scatter_grad(m, g, effml__f32(pe->grad));
  }
  return effml__spmat_dense_grad(ctx, m, DYT, XT, ldb);
}

/* dXᵀ (+)= W_mᵀ dYᵀ via the CSC structure. */
effml_status effml__spmat_backward_input(effml_context *ctx, effml_layer *layer,
                                         const effml__spmat *m, const float *DYT, int64_t ldb,
                                         int accumulate, float *DXT) {
  float *vt = effml__scratch(ctx, (effml__sparse_layer *)layer->impl, 1, EFFML__WS_NNZ,
                             (size_t)m->nnz, "CSC values");
  if (!vt) return EFFML_E_NOMEM;
  if (m->block == 4) { /* block kernel: CSR-ordered values, scatter over batch lanes */
    effml__bspmm_dx(ctx, m, effml__spmat_packed(m, effml__param_f32(layer, m->param), vt), DYT,
                    ldb, accumulate, DXT, -1);
    return EFFML_OK;
  }
  effml__spmat_packed_t(m, effml__param_f32(layer, m->param), vt);
  effml__spmm_t(ctx, m->cols, m->t_ptr, m->t_idx, vt, DYT, ldb, accumulate, DXT);
  return EFFML_OK;
}

void effml__bias_backward(effml_layer *layer, int32_t param, const float *DY, int64_t batch,
                          int64_t out) {
  effml__param *pe = effml__layer_param_entry(layer, param);
  if (!pe->trainable) return;
  effml__bias_grad(effml__f32(pe->grad), DY, batch, out);
}

static effml_status linear_backward(effml_context *ctx, effml_layer *layer,
                                    const effml_tensor *dy, effml_tensor *dx) {
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  const int64_t batch = dy->shape[0], in = layer->in_features, out = layer->out_features;
  const int64_t ldb = s->ldb;
  effml_status st = EFFML_OK;
  float *DYT = effml__scratch(ctx, s, 1, EFFML__WS_DYT, (size_t)(out * ldb), "sparse dYᵀ");
  float *DXT = NULL;
  if (!DYT) return EFFML_E_NOMEM;
  if (dx) {
    DXT = effml__scratch(ctx, s, 1, EFFML__WS_DXT, (size_t)(in * ldb), "sparse dXᵀ");
    if (!DXT) st = EFFML_E_NOMEM;
  }
  if (st == EFFML_OK) effml__transpose_in(ctx, effml__cf32(dy), batch, out, DYT, ldb);
  for (int32_t i = 0; st == EFFML_OK && i < s->n_mats; ++i)
    st = effml__spmat_backward_weight(ctx, layer, &s->mats[i], DYT, s->xt, ldb);
  for (int32_t i = 0; st == EFFML_OK && dx && i < s->n_mats; ++i)
    st = effml__spmat_backward_input(ctx, layer, &s->mats[i], DYT, ldb, i > 0, DXT);
  if (st == EFFML_OK && dx) effml__transpose_out(ctx, DXT, ldb, in, batch, NULL, 0, effml__f32(dx));
  if (st == EFFML_OK && s->has_bias)
    effml__bias_backward(layer, s->bias_param, effml__cf32(dy), batch, out);
  return st;
}

void effml__sparse_destroy(effml_layer *layer) {
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  if (!s) return;
  effml_context *ctx = layer->ctx;
  for (int32_t i = 0; i < s->n_mats; ++i) effml__spmat_free(ctx, &s->mats[i]);
  effml__free(ctx, s->mats);
  effml__free(ctx, s->xt);
  effml__free(ctx, s->ht);
  for (int k = 0; k < 5; ++k) effml__free(ctx, s->ws[k]);
  effml__free(ctx, s);
  layer->impl = NULL;
}

double effml__linear_flops(int64_t nnz, int64_t out) { return 2.0 * (double)nnz - (double)out; }

/* Linear, wide and parallel: each branch a sparse product, the branches
 * summed, + out for the bias. */
static effml_status linear_flops(effml_context *ctx, const effml_layer *layer, int64_t in_width,
                                 double *flops) {
  const effml__sparse_layer *s = (const effml__sparse_layer *)layer->impl;
  const int64_t out = layer->out_features;
  double f = 0.0;
  for (int32_t i = 0; i < s->n_mats; ++i) f += effml__linear_flops(s->mats[i].nnz, out);
  f += (double)(s->n_mats - 1) * (double)out; /* summing the branches */
  if (s->has_bias) f += (double)out;
  *flops = f;
  return EFFML_OK;
}

/* Forward/backward of SF and SD live in their own files, with their tables. */
const effml__layer_ops effml__sparse_linear_ops = {
    .name = "sparse_linear",
    .forward = linear_forward,
    .backward = linear_backward,
    .destroy = effml__sparse_destroy,
    .flops = linear_flops,
    .traits = EFFML__KIND_SPARSE,
};
const effml__layer_ops effml__sparse_wide_ops = {
    .name = "sparse_wide",
    .forward = linear_forward,
    .backward = linear_backward,
    .destroy = effml__sparse_destroy,
    .flops = linear_flops,
    .traits = EFFML__KIND_SPARSE,
};
const effml__layer_ops effml__sparse_parallel_ops = {
    .name = "sparse_parallel",
    .forward = linear_forward,
    .backward = linear_backward,
    .destroy = effml__sparse_destroy,
    .flops = linear_flops,
    .traits = EFFML__KIND_SPARSE,
};

effml__sparse_layer *effml__sparse_of(effml_layer *layer) {
  if (layer && (layer->ops->traits & EFFML__KIND_SPARSE))
    return (effml__sparse_layer *)layer->impl;
  return NULL;
}

effml_status effml__sparse_layer_new(effml_context *ctx, const effml__layer_ops *ops, int64_t in,
                                     int64_t out, int32_t n_mats, int32_t bias,
                                     effml_layer **out_layer) {
  effml__sparse_layer *s = (effml__sparse_layer *)effml__calloc_or_err(ctx, 1, sizeof *s, "sparse layer");
  if (!s) return EFFML_E_NOMEM;
  s->mats = (effml__spmat *)effml__calloc_or_err(ctx, (size_t)n_mats, sizeof *s->mats, "sparse matrices");
  if (!s->mats) {
    effml__free(ctx, s);
    return EFFML_E_NOMEM;
  }
  s->n_mats = n_mats;
  s->has_bias = bias != 0;
  s->bias_param = -1;
  s->u_param = s->v_param = -1;
  s->dense_in = in;
  s->dense_out = out;
  effml_status st = effml__layer_new(ctx, ops, in, out, s, out_layer);
  if (st != EFFML_OK) {
    effml__free(ctx, s->mats);
    effml__free(ctx, s);
  }
  return st;
}

effml_status effml__sparse_add_matrix(effml_context *ctx, effml_layer *layer, effml__spmat *m,
                                      const char *name, const float *values, int32_t init,
                                      int64_t fan_in) {
  int32_t idx = -1;
  int64_t shape[1] = {m->nnz};
  EFFML__TRY(effml__layer_add_param(ctx, layer, name, 1, shape, 1, &idx));
  m->param = idx;
  float *v = effml__param_f32(layer, idx);
  if (values) {
    memcpy(v, values, (size_t)m->nnz * sizeof(float));
  } else {
    effml__rng *r = effml__ctx_rng(ctx);
    if (init == EFFML_SPARSE_INIT_KAIMING_NORMAL) {
      /* sd from the fan_out of the dense [rows, cols] weight */
      effml__fill_normal_f32(r, v, m->nnz, sqrt(2.0 / (double)m->rows));
    } else {
      effml__fill_uniform_sym_f32(r, v, m->nnz, 1.0 / sqrt((double)fan_in));
    }
  }
  return EFFML_OK;
}

effml_status effml__sparse_add_bias(effml_context *ctx, effml_layer *layer, int64_t out,
                                    int64_t fan_in) {
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  if (!s->has_bias) return EFFML_OK;
  int32_t idx = -1;
  EFFML__TRY(effml__layer_add_param(ctx, layer, "bias", 1, &out, 1, &idx));
  s->bias_param = idx;
  float *b = effml__param_f32(layer, idx);
  effml__fill_uniform_sym_f32(effml__ctx_rng(ctx), b, out, 1.0 / sqrt((double)fan_in));
  return EFFML_OK;
}

/* Random exact-count mask for matrix m of `layer`, registered as `name`. */
effml_status effml__sparse_random_matrix(effml_context *ctx, effml_layer *layer, int32_t i,
                                         int64_t rows, int64_t cols, int64_t nnz,
                                         const char *name, int32_t init, int64_t fan_in) {
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  int64_t *pos = NULL;
  s->mats[i].block = s->block > 1 ? s->block : 1;
  if (s->block > 1)
    EFFML__TRY(effml__random_block_positions(ctx, effml__ctx_rng(ctx), rows, cols, s->block, nnz,
                                             &pos, &nnz));
  else
    EFFML__TRY(effml__random_positions(ctx, effml__ctx_rng(ctx), rows * cols, nnz, &pos));
  effml_status st = effml__spmat_init_positions(ctx, &s->mats[i], rows, cols, nnz, pos);
  effml__free(ctx, pos);
  if (st == EFFML_OK) st = effml__sparse_add_matrix(ctx, layer, &s->mats[i], name, NULL, init, fan_in);
  return st;
}

/* ---------------- public constructors ---------------- */

effml_status effml_sparse_linear_create(effml_context *ctx, int64_t in, int64_t out,
                                        const effml_sparse_options *opt, effml_layer **out_layer) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_linear_create";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out_layer);
  effml_sparse_options o;
  EFFML__TRY(read_options(ctx, opt, &o));
  EFFML__TRY(check_dims(ctx, fn, in, out));
  int64_t nnz = o.nnz;
  if (nnz == 0) {
    EFFML__TRY(effml__nnz_for(ctx, fn, out, in, o.sparsity, &nnz));
  } else if (nnz < 0 || nnz > in * out) {
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: nnz=%lld must be in [1, %lld] (in*out)", fn,
                      (long long)nnz, (long long)(in * out));
  }
  effml_layer *layer = NULL;
  EFFML__TRY(effml__sparse_layer_new(ctx, &effml__sparse_linear_ops, in, out, 1, o.bias, &layer));
  ((effml__sparse_layer *)layer->impl)->block = o.block_rows;
  effml_status st = effml__sparse_random_matrix(ctx, layer, 0, out, in, nnz, "weight", o.init, in);
  if (st == EFFML_OK) st = effml__sparse_add_bias(ctx, layer, out, in);
  if (st != EFFML_OK) {
    effml_layer_free(layer);
    return st;
  }
  *out_layer = layer;
  return EFFML_OK;
}

/* Build a one-matrix linear layer from sorted positions (+ optional values in position order). */
static effml_status linear_from_positions(effml_context *ctx, int64_t in, int64_t out,
                                          int64_t nnz, const int64_t *pos, const float *values,
                                          const effml_sparse_options *o, effml_layer **out_layer) {
  effml_layer *layer = NULL;
  EFFML__TRY(effml__sparse_layer_new(ctx, &effml__sparse_linear_ops, in, out, 1, o->bias, &layer));
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  s->block = o->block_rows;
  s->mats[0].block = o->block_rows;
  effml_status st = effml__spmat_init_positions(ctx, &s->mats[0], out, in, nnz, pos);
  if (st == EFFML_OK && !effml__spmat_is_blocked(&s->mats[0], o->block_rows)) {
    int64_t bad = 0;
    for (int64_t r = 1; r < out && !bad; ++r) {
      const int64_t r0 = r / o->block_rows * o->block_rows;
      const effml__spmat *m = &s->mats[0];
      const int64_t n = m->row_ptr[r + 1] - m->row_ptr[r];
      if (r != r0 && (n != m->row_ptr[r0 + 1] - m->row_ptr[r0] ||
                      memcmp(m->col_idx + m->row_ptr[r], m->col_idx + m->row_ptr[r0],
                             (size_t)n * sizeof(int32_t)) != 0))
        bad = r;
    }
    st = effml__err(ctx, EFFML_E_INVALID_ARG,
                    "block_rows=%d: the mask is not made of %dx1 blocks: row %lld keeps other "
                    "columns than row %lld, the first row of its block-row",
                    (int)o->block_rows, (int)o->block_rows, (long long)bad,
                    (long long)(bad / o->block_rows * o->block_rows));
  }
  if (st == EFFML_OK) st = effml__sparse_add_matrix(ctx, layer, &s->mats[0], "weight", values, o->init, in);
  if (st == EFFML_OK) st = effml__sparse_add_bias(ctx, layer, out, in);
  if (st != EFFML_OK) {
    effml_layer_free(layer);
    return st;
  }
  *out_layer = layer;
  return EFFML_OK;
}

static int mask_at(const effml_tensor *mask, int64_t r, int64_t c) {
  const char *p = mask->data + (r * mask->strides[0] + c * mask->strides[1]) *
                                   (int64_t)effml_tensor_dtype_size(mask->dtype);
  switch (mask->dtype) {
    case EFFML_U8:
    case EFFML_BOOL: return *(const uint8_t *)p != 0;
    case EFFML_I32: {
      int32_t v;
      memcpy(&v, p, sizeof v);
      return v != 0;
    }
    default: {
      float v;
      memcpy(&v, p, sizeof v);
      return v != 0.0f;
    }
  }
}

effml_status effml_sparse_linear_create_masked(effml_context *ctx, const effml_tensor *mask,
                                               const effml_tensor *weight,
                                               const effml_sparse_options *opt,
                                               effml_layer **out_layer) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_linear_create_masked";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out_layer);
  effml_sparse_options o;
  EFFML__TRY(read_options(ctx, opt, &o));
  EFFML__TRY(effml__check_tensor(ctx, mask, "mask", 0, 2, 0));
  int32_t dt = mask->dtype;
  if (dt != EFFML_U8 && dt != EFFML_BOOL && dt != EFFML_I32 && dt != EFFML_F32)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: mask has dtype %s, expected u8, bool, i32 or f32",
                      fn, effml_tensor_dtype_name(dt));
  const int64_t out = mask->shape[0], in = mask->shape[1];
  EFFML__TRY(check_dims(ctx, fn, in, out));
  if (weight) {
    EFFML__TRY(effml__check_tensor(ctx, weight, "weight", EFFML_F32, 2, 0));
    if (weight->shape[0] != out || weight->shape[1] != in)
      return effml__err(ctx, EFFML_E_SHAPE,
                        "%s: weight has shape [%lld, %lld] but mask has shape [%lld, %lld]", fn,
                        (long long)weight->shape[0], (long long)weight->shape[1],
                        (long long)out, (long long)in);
  }
  int64_t nnz = 0;
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < in; ++c) nnz += mask_at(mask, r, c);
  if (nnz < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: mask [%lld, %lld] keeps no entry", fn,
                      (long long)out, (long long)in);
  int64_t *pos = (int64_t *)effml__alloc_or_err(ctx, (size_t)nnz * sizeof(int64_t), "mask positions");
  float *vals = weight ? (float *)effml__alloc_or_err(ctx, (size_t)nnz * sizeof(float), "mask values") : NULL;
  if (!pos || (weight && !vals)) {
    effml__free(ctx, pos);
    effml__free(ctx, vals);
    return EFFML_E_NOMEM;
  }
  int64_t k = 0;
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < in; ++c)
      if (mask_at(mask, r, c)) {
        pos[k] = r * in + c;
        if (vals) {
          const float *w = (const float *)(const void *)weight->data;
          vals[k] = w[r * weight->strides[0] + c * weight->strides[1]];
        }
        ++k;
      }
  effml_status st = linear_from_positions(ctx, in, out, nnz, pos, vals, &o, out_layer);
  effml__free(ctx, pos);
  effml__free(ctx, vals);
  return st;
}

effml_status effml_sparse_linear_create_csr(effml_context *ctx, int64_t in, int64_t out,
                                            int64_t nnz, const int64_t *row_ptr,
                                            const int32_t *col_idx, const float *values,
                                            const effml_sparse_options *opt,
                                            effml_layer **out_layer) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_linear_create_csr";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, row_ptr);
  EFFML__CHECK_NULL(ctx, col_idx);
  EFFML__CHECK_NULL(ctx, out_layer);
  effml_sparse_options o;
  EFFML__TRY(read_options(ctx, opt, &o));
  EFFML__TRY(check_dims(ctx, fn, in, out));
  if (nnz < 1 || nnz > in * out)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: nnz=%lld must be in [1, %lld]", fn,
                      (long long)nnz, (long long)(in * out));
  if (row_ptr[0] != 0 || row_ptr[out] != nnz)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: row_ptr[0]=%lld must be 0 and row_ptr[%lld]=%lld must equal nnz=%lld",
                      fn, (long long)row_ptr[0], (long long)out, (long long)row_ptr[out],
                      (long long)nnz);
  for (int64_t r = 0; r < out; ++r) {
    if (row_ptr[r + 1] < row_ptr[r])
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "%s: row_ptr decreases at row %lld (%lld > %lld)", fn, (long long)r,
                        (long long)row_ptr[r], (long long)row_ptr[r + 1]);
    for (int64_t p = row_ptr[r]; p < row_ptr[r + 1]; ++p) {
      if (col_idx[p] < 0 || col_idx[p] >= in)
        return effml__err(ctx, EFFML_E_INVALID_ARG,
                          "%s: col_idx[%lld]=%d (row %lld) is outside [0, %lld)", fn,
                          (long long)p, (int)col_idx[p], (long long)r, (long long)in);
      if (p > row_ptr[r] && col_idx[p] <= col_idx[p - 1])
        return effml__err(ctx, EFFML_E_INVALID_ARG,
                          "%s: col_idx[%lld]=%d (row %lld) is not greater than the previous "
                          "column %d: columns must be sorted and unique within a row",
                          fn, (long long)p, (int)col_idx[p], (long long)r, (int)col_idx[p - 1]);
    }
  }
  int64_t *pos = (int64_t *)effml__alloc_or_err(ctx, (size_t)nnz * sizeof(int64_t), "CSR positions");
  if (!pos) return EFFML_E_NOMEM;
  for (int64_t r = 0; r < out; ++r)
    for (int64_t p = row_ptr[r]; p < row_ptr[r + 1]; ++p) pos[p] = r * in + col_idx[p];
  effml_status st = linear_from_positions(ctx, in, out, nnz, pos, values, &o, out_layer);
  effml__free(ctx, pos);
  return st;
}

effml_status effml_sparse_wide_create(effml_context *ctx, int64_t in, int64_t out,
                                      const effml_sparse_options *opt, effml_layer **out_layer) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_wide_create";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out_layer);
  effml_sparse_options o;
  EFFML__TRY(read_options(ctx, opt, &o));
  EFFML__TRY(check_dims(ctx, fn, in, out));
  int64_t win = 0, wout = 0;
  EFFML__TRY(effml_sparse_wide_dims(ctx, in, out, o.sparsity, o.widen, &win, &wout));
  EFFML__TRY(check_dims(ctx, fn, win, wout));
  effml_layer *layer = NULL;
  EFFML__TRY(effml__sparse_layer_new(ctx, &effml__sparse_wide_ops, win, wout, 1, o.bias, &layer));
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  s->dense_in = in;
  s->dense_out = out;
  s->block = o.block_rows;
  effml_status st = effml__sparse_random_matrix(ctx, layer, 0, wout, win, in * out, "weight", o.init, win);
  if (st == EFFML_OK) st = effml__sparse_add_bias(ctx, layer, wout, win);
  if (st != EFFML_OK) {
    effml_layer_free(layer);
    return st;
  }
  *out_layer = layer;
  return EFFML_OK;
}

effml_status effml_sparse_parallel_create(effml_context *ctx, int64_t in, int64_t out,
                                          const effml_sparse_options *opt,
                                          effml_layer **out_layer) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_sparse_parallel_create";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out_layer);
  effml_sparse_options o;
  EFFML__TRY(read_options(ctx, opt, &o));
  EFFML__TRY(check_dims(ctx, fn, in, out));
  int64_t k = 0;
  EFFML__TRY(effml_sparse_parallel_branches(ctx, o.sparsity, &k));
  const int64_t numel = in * out;
  if (numel / k < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: sparsity=%g gives %lld branches but the %lld x %lld layer has only "
                      "%lld weights (a branch would be empty)",
                      fn, o.sparsity, (long long)k, (long long)out, (long long)in, (long long)numel);
  if (k > 1024)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: sparsity=%g gives %lld branches (max 1024)",
                      fn, o.sparsity, (long long)k);
  effml_layer *layer = NULL;
  EFFML__TRY(effml__sparse_layer_new(ctx, &effml__sparse_parallel_ops, in, out, (int32_t)k, o.bias, &layer));
  effml__sparse_layer *s = (effml__sparse_layer *)layer->impl;
  s->inner = k;
  s->block = o.block_rows;
  effml_status st = EFFML_OK;
  for (int64_t i = 0; st == EFFML_OK && i < k; ++i) {
    char name[48];
    snprintf(name, sizeof name, "branch%lld.weight", (long long)i);
    int64_t nnz = numel / k + (i < numel % k ? 1 : 0);
    st = effml__sparse_random_matrix(ctx, layer, (int32_t)i, out, in, nnz, name, o.init, in);
  }
  if (st == EFFML_OK) st = effml__sparse_add_bias(ctx, layer, out, in);
  if (st != EFFML_OK) {
    effml_layer_free(layer);
    return st;
  }
  *out_layer = layer;
  return EFFML_OK;
}
