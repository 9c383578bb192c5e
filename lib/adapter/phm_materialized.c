/* The materialized PHM/LPHM path, as the reference code runs it
 * (rabeehk/compacter PHMLinear: build H every call, then one GEMM), kept for
 * three jobs: effml_adapter_phm_materialize() (inspection, export, cached-H
 * inference), the test oracle of the factorized kernels, and the
 * "materialized" side of bench lphm_vs_materialized_c.
 *
 *   B_i = s_i t_i (LPHM) or W[i] (PHM)                  [kin, kout]
 *   H[p*kin+u, c*kout+v] = sum_i A_i[p,c] B_i[u,v]       [in, out]
 *   y = x H + b
 * Backward (materialized H; Karimi Mahabadi et al. 2021, arXiv 2106.04647, §3):
 *   dH = x^T dy; dx = dy H^T; db = sum dy;
 *   dA_i[p,c] = sum_{u,v} dH[p*kin+u, c*kout+v] B_i[u,v];
 *   dB_i[u,v] = sum_{p,c} A_i[p,c] dH[p*kin+u, c*kout+v];
 *   ds_i = dB_i t_i^T; dt_i = s_i^T dB_i. */
#include "blas.h"
#include <string.h>

#include "adapter_internal.h"

/* B [n, kin, kout]. */
static effml_status build_B(effml_context *ctx, const effml_layer *l, float *B) {
  const effml__phm *p = (const effml__phm *)l->impl;
  int64_t n = p->n, r = p->r, kin = p->kin, kout = p->kout;
  if (r == 0) {
    memcpy(B, effml__param_f32((effml_layer *)l, p->i_w), (size_t)(n * kin * kout) * sizeof(float));
    return EFFML_OK;
  }
  const float *s = effml__param_f32((effml_layer *)l, p->i_wl);
  const float *t = effml__param_f32((effml_layer *)l, p->i_wr);
  for (int64_t i = 0; i < n; ++i)
    EFFML__TRY(effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, kin, kout, r, 1.0f, s + i * kin * r, r,
                            t + i * r * kout, kout, 0.0f, B + i * kin * kout, kout));
  return EFFML_OK;
}

static void build_H_from_B(const effml__phm *p, const float *A, const float *B, float *H) {
  int64_t n = p->n, kin = p->kin, kout = p->kout, out = n * kout;
  for (int64_t pp = 0; pp < n; ++pp)
    for (int64_t c = 0; c < n; ++c)
      for (int64_t u = 0; u < kin; ++u) {
        float *h = H + (pp * kin + u) * out + c * kout;
        memset(h, 0, (size_t)kout * sizeof(float));
        for (int64_t i = 0; i < n; ++i) {
          float a = A[(i * n + pp) * n + c];
          const float *bb = B + (i * kin + u) * kout;
          for (int64_t v = 0; v < kout; ++v) h[v] += a * bb[v];
        }
      }
}

effml_status effml__phm_build_H(effml_context *ctx, const effml_layer *l, float *H) {
  const effml__phm *p = (const effml__phm *)l->impl;
  float *B = (float *)effml__malloc(ctx, (size_t)(p->n * p->kin * p->kout) * sizeof(float));
  if (B == NULL) return effml__err(ctx, EFFML_E_NOMEM, "phm materialize: out of memory");
  effml_status st = build_B(ctx, l, B);
  if (st == EFFML_OK) build_H_from_B(p, effml__phm_rule_f32(l), B, H);
  effml__free(ctx, B);
  return st;
}

effml_status effml__phm_forward_materialized(effml_context *ctx, effml_layer *l, const float *x,
                                             int64_t b, float *y, int32_t mode) {
  effml__phm *p = (effml__phm *)l->impl;
  int64_t in = l->in_features, out = l->out_features;
  float *H = (float *)effml__malloc(ctx, (size_t)(in * out) * sizeof(float));
  if (H == NULL) return effml__err(ctx, EFFML_E_NOMEM, "phm forward (materialized): out of memory");
  effml_status st = effml__phm_build_H(ctx, l, H);
  EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, b, out, in, 1.0f, x, in, H, out,
                               0.0f, y, out));
  if (st != EFFML_OK) {
    effml__free(ctx, H);
    return st;
  }
  if (p->i_b >= 0) effml__bias_add(y, effml__param_f32(l, p->i_b), b, out);
  if (mode == EFFML_LAYER_MODE_TRAIN) {
    effml__free(ctx, p->H);
    p->H = H;
    p->x = x;
    p->batch = b;
  } else {
    effml__free(ctx, H);
  }
  return EFFML_OK;
}

effml_status effml__phm_backward_materialized(effml_context *ctx, effml_layer *l, const float *dy,
                                              float *dx) {
  effml__phm *p = (effml__phm *)l->impl;
  int64_t n = p->n, r = p->r, kin = p->kin, kout = p->kout, b = p->batch;
  int64_t in = l->in_features, out = l->out_features;
  const float *A = effml__phm_rule_f32(l);
  float *gA = effml__phm_rule_grad_f32(l);
  float *dH = (float *)effml__malloc(ctx, (size_t)(in * out) * sizeof(float));
  float *B = (float *)effml__malloc(ctx, (size_t)(n * kin * kout) * sizeof(float));
  float *dB = (float *)effml__calloc(ctx, (size_t)(n * kin * kout), sizeof(float));
  if (dH == NULL || B == NULL || dB == NULL) {
    effml__free(ctx, dH);
    effml__free(ctx, B);
    effml__free(ctx, dB);
    return effml__err(ctx, EFFML_E_NOMEM, "phm backward (materialized): out of memory");
  }
  effml_status st = effml__sgemm(ctx, CblasTrans, CblasNoTrans, in, out, b, 1.0f, p->x, in, dy, out,
                                 0.0f, dH, out);
  if (dx)
    EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasTrans, b, in, out, 1.0f, dy, out, p->H,
                                 out, 0.0f, dx, in));
  EFFML__THEN(st, build_B(ctx, l, B));
  if (st != EFFML_OK) {
    effml__free(ctx, dH);
    effml__free(ctx, B);
    effml__free(ctx, dB);
    return st;
  }
  for (int64_t pp = 0; pp < n; ++pp)
    for (int64_t c = 0; c < n; ++c)
      for (int64_t i = 0; i < n; ++i) {
        float a = A[(i * n + pp) * n + c];
        double s = 0;
        for (int64_t u = 0; u < kin; ++u) {
          const float *h = dH + (pp * kin + u) * out + c * kout;
          const float *bb = B + (i * kin + u) * kout;
          float *db = dB + (i * kin + u) * kout;
          for (int64_t v = 0; v < kout; ++v) {
            s += (double)h[v] * bb[v];
            db[v] += a * h[v];
          }
        }
        if (gA) gA[(i * n + pp) * n + c] += (float)s;
      }
  if (r == 0) {
    if (effml__param_trainable(l, p->i_w)) {
      float *g = effml__grad_f32(l, p->i_w);
      for (int64_t k = 0; k < n * kin * kout; ++k) g[k] += dB[k];
    }
  } else {
    const float *s = effml__param_f32(l, p->i_wl), *t = effml__param_f32(l, p->i_wr);
    for (int64_t i = 0; i < n; ++i) {
      if (effml__param_trainable(l, p->i_wl)) /* ds_i += dB_i t_i^T */
        EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasTrans, kin, r, kout, 1.0f,
                                     dB + i * kin * kout, kout, t + i * r * kout, kout, 1.0f,
                                     effml__grad_f32(l, p->i_wl) + i * kin * r, r));
      if (effml__param_trainable(l, p->i_wr)) /* dt_i += s_i^T dB_i */
        EFFML__THEN(st, effml__sgemm(ctx, CblasTrans, CblasNoTrans, r, kout, kin, 1.0f,
                                     s + i * kin * r, r, dB + i * kin * kout, kout, 1.0f,
                                     effml__grad_f32(l, p->i_wr) + i * r * kout, kout));
    }
  }
  if (st == EFFML_OK && p->i_b >= 0 && effml__param_trainable(l, p->i_b))
    effml__bias_grad(effml__grad_f32(l, p->i_b), dy, b, out);
  effml__free(ctx, dH);
  effml__free(ctx, B);
  effml__free(ctx, dB);
  return st;
}
