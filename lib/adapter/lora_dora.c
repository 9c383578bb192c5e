/* DoRA kernels of the LoRA layer (Liu et al. 2024, arXiv 2402.09353, eq. 5 and
 * section 4.3; the formulas are at the top of lora.c).  The per-row norm
 * n_j = ||W_j + s B_j A|| is computed in blocks of rows (never an [out, in]
 * temporary): T = W[j0:j0+nb] + s B[j0:j0+nb] A, one GEMM of nb*r*in MACs per
 * block, then the row sums of squares in double.  Total out*in*r MACs and one
 * pass over W per forward -- r/batch of the base GEMM's cost. */
#include "blas.h"
#include <math.h>
#include <string.h>

#include "adapter_internal.h"

#define DORA_BLOCK 64

/* Apply fn to each block of logical rows: T = W rows (+ s B A rows when with_delta). */
static effml_status for_blocks(effml_context *ctx, effml_layer *l, float sign_delta,
                               void (*fn)(effml_layer *, int64_t j0, int64_t nb, float *T, void *arg),
                               void *arg, int write_back) {
  effml__lora *p = effml__lora_impl(l);
  int64_t in = l->in_features, out = l->out_features, r = p->r;
  const float *A = effml__param_f32(l, p->i_a), *B = effml__param_f32(l, p->i_b);
  float *T = (float *)effml__malloc(ctx, (size_t)(DORA_BLOCK * in) * sizeof(float));
  if (T == NULL) return effml__err(ctx, EFFML_E_NOMEM, "DoRA: out of memory");
  for (int64_t j0 = 0; j0 < out; j0 += DORA_BLOCK) {
    int64_t nb = out - j0 < DORA_BLOCK ? out - j0 : DORA_BLOCK;
    effml__dense_base_rows(l, &p->base, j0, nb, T);
    if (sign_delta != 0.0f) {
      effml_status st =
          effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, nb, in, r, sign_delta * (float)p->scaling,
                       B + j0 * r, r, A, in, 1.0f, T, in);
      if (st != EFFML_OK) { /* refused before the first block: nothing was written back */
        effml__free(ctx, T);
        return st;
      }
    }
    fn(l, j0, nb, T, arg);
    if (write_back) effml__dense_base_set_rows(l, &p->base, j0, nb, T);
  }
  effml__free(ctx, T);
  return EFFML_OK;
}

static void norms_fn(effml_layer *l, int64_t j0, int64_t nb, float *T, void *arg) {
  float *n = (float *)arg;
  int64_t in = l->in_features;
  for (int64_t j = 0; j < nb; ++j) {
    double acc = 0;
    const float *t = T + j * in;
    for (int64_t i = 0; i < in; ++i) acc += (double)t[i] * t[i];
    n[j0 + j] = (float)sqrt(acc);
  }
}

effml_status effml__dora_norms(effml_context *ctx, effml_layer *l, float *out) {
  return for_blocks(ctx, l, 1.0f, norms_fn, out, 0);
}

/* merge: T = c .* (W + s B A) rows, remembering n; the caller's arg is unused */
static void merge_fn(effml_layer *l, int64_t j0, int64_t nb, float *T, void *arg) {
  (void)arg;
  effml__lora *p = effml__lora_impl(l);
  int64_t in = l->in_features;
  const float *m = effml__param_f32(l, p->i_m);
  norms_fn(l, j0, nb, T, p->merge_norm);
  for (int64_t j = 0; j < nb; ++j) {
    float c = m[j0 + j] / p->merge_norm[j0 + j];
    for (int64_t i = 0; i < in; ++i) T[j * in + i] *= c;
  }
}

/* unmerge, first step: T = W' / c rows (the delta is subtracted afterwards) */
static void unscale_fn(effml_layer *l, int64_t j0, int64_t nb, float *T, void *arg) {
  (void)arg;
  effml__lora *p = effml__lora_impl(l);
  int64_t in = l->in_features;
  const float *m = effml__param_f32(l, p->i_m);
  for (int64_t j = 0; j < nb; ++j) {
    float c = m[j0 + j] / p->merge_norm[j0 + j];
    for (int64_t i = 0; i < in; ++i) T[j * in + i] /= c;
  }
}

static void nop_fn(effml_layer *l, int64_t j0, int64_t nb, float *T, void *arg) {
  (void)l, (void)j0, (void)nb, (void)T, (void)arg;
}

effml_status effml__dora_merge(effml_context *ctx, effml_layer *l, int32_t to_merged) {
  effml__lora *p = effml__lora_impl(l);
  if (to_merged) {
    if (p->merge_norm == NULL) {
      p->merge_norm = (float *)effml__malloc(ctx, (size_t)l->out_features * sizeof(float));
      if (p->merge_norm == NULL) return effml__err(ctx, EFFML_E_NOMEM, "DoRA merge: out of memory");
    }
    return for_blocks(ctx, l, 1.0f, merge_fn, NULL, 1);
  }
  EFFML__TRY(for_blocks(ctx, l, 0.0f, unscale_fn, NULL, 1));
  return for_blocks(ctx, l, -1.0f, nop_fn, NULL, 1);
}

/* Dropout of lora.c (shared). */
effml_status effml__dora_forward(effml_context *ctx, effml_layer *l, const float *x, int64_t b, float *y,
                                 int32_t mode) {
  effml__lora *p = effml__lora_impl(l);
  int64_t in = l->in_features, out = l->out_features, r = p->r;
  const float *A = effml__param_f32(l, p->i_a), *B = effml__param_f32(l, p->i_b);
  const float *m = effml__param_f32(l, p->i_m);
  float s = (float)p->scaling;
  int train = mode == EFFML_LAYER_MODE_TRAIN;
  /* Inference writes nothing into the layer: its norms go to a temporary. */
  float *norm = train ? p->norm : (float *)effml__malloc(ctx, (size_t)out * sizeof(float));
  if (norm == NULL) return effml__err(ctx, EFFML_E_NOMEM, "DoRA forward: out of memory");
  effml_status st = effml__dora_norms(ctx, l, norm);
  const float *xin = st == EFFML_OK ? effml__lora_dropout(ctx, p, x, b, in, mode, &st) : NULL;
  if (xin == NULL) {
    if (!train) effml__free(ctx, norm);
    return st;
  }
  float *U = NULL;
  if (!effml__fwd_scratch(ctx, train, &p->U, &p->cap_u, (size_t)(b * r), &U) ||
      (train && !effml__grow_f32(ctx, &p->Z, &p->cap_z, (size_t)(b * out)))) {
    if (!train) effml__free(ctx, norm);
    return effml__err(ctx, EFFML_E_NOMEM, "DoRA forward: out of memory");
  }
  float *Z = train ? p->Z : y; /* no dropout in inference: scale Z in place */
  st = effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, r, in, 1.0f, xin, in, A, in, 0.0f, U, r);
  const float *bias = p->base.i_bias >= 0 ? effml__param_f32(l, p->base.i_bias) : NULL;
  if (xin != x) {
    /* PEFT in training with dropout: y = b + x W^T + (c - 1) x_d W^T + c s U B^T */
    EFFML__THEN(st, effml__dense_base_matmul(ctx, l, &p->base, x, b, 0.0f, y));
    EFFML__THEN(st, effml__dense_base_matmul(ctx, l, &p->base, xin, b, 0.0f, Z));
    if (st == EFFML_OK)
      for (int64_t i = 0; i < b * out; ++i) y[i] -= Z[i];
    EFFML__THEN(
        st, effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, out, r, s, U, r, B, r, 1.0f, Z, out));
    if (st == EFFML_OK)
      for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < out; ++j)
          y[i * out + j] += m[j] / norm[j] * Z[i * out + j] + (bias ? bias[j] : 0.0f);
  } else {
    EFFML__THEN(st, effml__dense_base_matmul(ctx, l, &p->base, x, b, 0.0f, Z));
    EFFML__THEN(
        st, effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, out, r, s, U, r, B, r, 1.0f, Z, out));
    if (st == EFFML_OK)
      for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < out; ++j)
          y[i * out + j] = m[j] / norm[j] * Z[i * out + j] + (bias ? bias[j] : 0.0f);
  }
  if (train) {
    if (st == EFFML_OK) {
      p->x = x;
      p->batch = b;
    }
  } else {
    effml__fwd_scratch_done(ctx, train, U);
    effml__free(ctx, norm);
  }
  return st;
}

effml_status effml__dora_backward(effml_context *ctx, effml_layer *l, const float *dy, float *dx) {
  effml__lora *p = effml__lora_impl(l);
  int64_t b = p->batch, in = l->in_features, out = l->out_features, r = p->r;
  const float *A = effml__param_f32(l, p->i_a), *B = effml__param_f32(l, p->i_b);
  const float *m = effml__param_f32(l, p->i_m), *x = p->x, *xin = p->dropped ? p->xd : p->x, *Z = p->Z;
  float s = (float)p->scaling;
  float *dz = (float *)effml__malloc(ctx, (size_t)(b * out) * sizeof(float));
  float *dU = (float *)effml__malloc(ctx, (size_t)(b * r) * sizeof(float));
  float *t = p->dropped && dx ? (float *)effml__malloc(ctx, (size_t)(b * in) * sizeof(float)) : NULL;
  if (dz == NULL || dU == NULL || (p->dropped && dx && t == NULL)) {
    effml__free(ctx, dz);
    effml__free(ctx, dU);
    effml__free(ctx, t);
    return effml__err(ctx, EFFML_E_NOMEM, "DoRA backward: out of memory");
  }
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < out; ++j) dz[i * out + j] = m[j] / p->norm[j] * dy[i * out + j];
  if (effml__param_trainable(l, p->i_m)) { /* row-major pass, double accumulators */
    double *acc = (double *)effml__calloc(ctx, (size_t)out, sizeof(double));
    if (acc == NULL) {
      effml__free(ctx, dz);
      effml__free(ctx, dU);
      effml__free(ctx, t);
      return effml__err(ctx, EFFML_E_NOMEM, "DoRA backward: out of memory");
    }
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < out; ++j) acc[j] += (double)dy[i * out + j] * Z[i * out + j];
    float *gm = effml__grad_f32(l, p->i_m);
    for (int64_t j = 0; j < out; ++j) gm[j] += (float)(acc[j] / p->norm[j]);
    effml__free(ctx, acc);
  }
  effml_status st =
      effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, r, out, s, dz, out, B, r, 0.0f, dU, r);
  if (effml__param_trainable(l, p->i_b))
    EFFML__THEN(st, effml__sgemm(ctx, CblasTrans, CblasNoTrans, out, r, b, s, dz, out, p->U, r,
                                 1.0f, effml__grad_f32(l, p->i_b), r));
  if (effml__param_trainable(l, p->i_a))
    EFFML__THEN(st, effml__sgemm(ctx, CblasTrans, CblasNoTrans, r, in, b, 1.0f, dU, r, xin, in,
                                 1.0f, effml__grad_f32(l, p->i_a), in));
  if (st == EFFML_OK && p->base.i_bias >= 0 && effml__param_trainable(l, p->base.i_bias))
    effml__bias_grad(effml__grad_f32(l, p->base.i_bias), dy, b, out);
  int wtrain = effml__param_trainable(l, p->base.i_weight);
  if (!p->dropped) {
    if (dx) {
      EFFML__THEN(st, effml__dense_base_matmul_t(ctx, l, &p->base, dz, b, 0.0f, dx));
      EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, in, r, 1.0f, dU, r, A, in,
                                   1.0f, dx, in));
    }
    if (wtrain) EFFML__THEN(st, effml__dense_base_wgrad(ctx, l, &p->base, dz, x, b));
  } else {
    /* dz <- dz - dy: the part of the gradient that flows through the dropped input */
    if (wtrain) EFFML__THEN(st, effml__dense_base_wgrad(ctx, l, &p->base, dy, x, b));
    for (int64_t i = 0; i < b * out; ++i) dz[i] -= dy[i];
    if (wtrain) EFFML__THEN(st, effml__dense_base_wgrad(ctx, l, &p->base, dz, xin, b));
    if (dx) {
      EFFML__THEN(st, effml__dense_base_matmul_t(ctx, l, &p->base, dy, b, 0.0f, dx));
      EFFML__THEN(st, effml__dense_base_matmul_t(ctx, l, &p->base, dz, b, 0.0f, t));
      EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, in, r, 1.0f, dU, r, A, in,
                                   1.0f, t, in));
      if (st == EFFML_OK)
        for (int64_t i = 0; i < b * in; ++i) dx[i] += t[i] * p->mask[i];
    }
  }
  effml__free(ctx, dz);
  effml__free(ctx, dU);
  effml__free(ctx, t);
  return st;
}
