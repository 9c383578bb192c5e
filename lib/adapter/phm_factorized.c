/* Factorized PHM/LPHM forward and backward: H is never built
 * (Karimi Mahabadi et al. 2021, arXiv 2106.04647, §3.2).
 *
 * Per row, X = reshape_r(x, n, kin) and y = vec_r(sum_i A_i^T X B_i).  Over a
 * batch of b rows, X_all = x viewed as [b*n, kin] (no copy):
 *   LPHM (B_i = s_i t_i):
 *     1. P = X_all S,         S = [s_1 .. s_n] [kin, n*r]        b*n*r*k MACs
 *     2. Q_i = A_i^T P_i per row (block i of P/Q: n x r)          b*n^3*r
 *     3. Y_all = Q T,          T = [t_1; ..; t_n] = W_right        b*n*r*d
 *   PHM (full B_i):
 *     1. Z = X_all Bcat,       Bcat = [B_1 .. B_n] [kin, n*kout]  b*k*d
 *     2. Y_row = sum_i A_i^T Z_i,row                               b*n^2*d
 * Backward (dY_all = dy viewed [b*n, kout]):
 *   dQ = dY T^T; dT += Q^T dY; dA_i += sum_rows P_i dQ_i^T;
 *   dP_i = A_i dQ_i; dS += X_all^T dP; dX_all = dP S^T; db += sum_rows dy.
 * Row-parallel loops write disjoint rows; the dA sum runs in row order (BLAS
 * path) or in fixed 64-row chunks added in order (thin LPHM, n*r <= 16: the
 * row kernels of phm_rows.c), so results do not depend on the thread count. */
#include "blas.h"
#include <string.h>

#include "adapter_internal.h"

/* ---- packing: W_left [n, kin, r] <-> S [kin, n*r]; W [n, kin, kout] <-> Bcat ---- */

static void pack_cols(const float *w, int64_t n, int64_t rows, int64_t c, float *S) {
  int64_t nc = n * c;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t u = 0; u < rows; ++u)
      memcpy(S + u * nc + i * c, w + (i * rows + u) * c, (size_t)c * sizeof(float));
}

static void unpack_add_cols(const float *S, int64_t n, int64_t rows, int64_t c, float *gw) {
  int64_t nc = n * c;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t u = 0; u < rows; ++u) {
      float *g = gw + (i * rows + u) * c;
      const float *s = S + u * nc + i * c;
      for (int64_t j = 0; j < c; ++j) g[j] += s[j];
    }
}

/* ---- stage 2 (the mixing by A), row-parallel ---- */

typedef struct mix_args {
  const float *A; /* [n, n, n] */
  const float *in;
  float *out;
  int64_t n, c; /* c = r (LPHM) or kout (PHM) */
  int transpose; /* 1: out_c = sum_a A_i[a,c] in_a (forward); 0: out_a = sum_c A_i[a,c] in_c */
  int sum_i;     /* PHM forward: out [n, kout] = sum over i; PHM backward: in [n, kout] */
} mix_args;

/* LPHM: in/out rows are [n (a or c), n*r (i, j)].
 * PHM forward: in Z_row [n (a), n*kout (i, v)] -> out Y_row [n (c), kout].
 * PHM backward: in dY_row [n (c), kout] -> out dZ_row [n (a), n*kout (i, v)]. */
static void mix_rows(void *arg, int64_t begin, int64_t end, int32_t worker) {
  const mix_args *m = (const mix_args *)arg;
  int64_t n = m->n, c = m->c, nc = n * c;
  (void)worker;
  for (int64_t row = begin; row < end; ++row) {
    if (!m->sum_i) { /* LPHM, both directions: per (i, j) a small n x n matrix-vector product */
      const float *in = m->in + row * n * nc;
      float *out = m->out + row * n * nc;
      float v[64], w[64];
      for (int64_t i = 0; i < n; ++i) {
        const float *Ai = m->A + i * n * n;
        for (int64_t j = 0; j < c; ++j) {
          for (int64_t p = 0; p < n; ++p) v[p] = in[p * nc + i * c + j];
          if (m->transpose) { /* forward: w[q] = sum_p A_i[p, q] v[p] */
            for (int64_t q = 0; q < n; ++q) w[q] = 0.0f;
            for (int64_t p = 0; p < n; ++p)
              for (int64_t q = 0; q < n; ++q) w[q] += Ai[p * n + q] * v[p];
          } else { /* backward: w[q] = sum_p A_i[q, p] v[p] */
            for (int64_t q = 0; q < n; ++q) {
              float acc = 0.0f;
              for (int64_t p = 0; p < n; ++p) acc += Ai[q * n + p] * v[p];
              w[q] = acc;
            }
          }
          for (int64_t q = 0; q < n; ++q) out[q * nc + i * c + j] = w[q];
        }
      }
    } else if (m->transpose) { /* PHM forward */
      const float *z = m->in + row * n * nc;
      float *y = m->out + row * nc;
      memset(y, 0, (size_t)nc * sizeof(float));
      for (int64_t cc = 0; cc < n; ++cc)
        for (int64_t a = 0; a < n; ++a)
          for (int64_t i = 0; i < n; ++i) {
            float w = m->A[(i * n + a) * n + cc];
            const float *s = z + a * nc + i * c;
            float *d = y + cc * c;
            for (int64_t v = 0; v < c; ++v) d[v] += w * s[v];
          }
    } else { /* PHM backward: dZ[a, (i, v)] = sum_c A_i[a, c] dY[c, v] */
      const float *dyr = m->in + row * nc;
      float *dz = m->out + row * n * nc;
      memset(dz, 0, (size_t)(n * nc) * sizeof(float));
      for (int64_t a = 0; a < n; ++a)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t cc = 0; cc < n; ++cc) {
            float w = m->A[(i * n + a) * n + cc];
            const float *s = dyr + cc * c;
            float *d = dz + a * nc + i * c;
            for (int64_t v = 0; v < c; ++v) d[v] += w * s[v];
          }
    }
  }
}

static effml_status run_mix(effml_context *ctx, const float *A, const float *in, float *out,
                            int64_t b, int64_t n, int64_t c, int transpose, int sum_i) {
  mix_args m = {A, in, out, n, c, transpose, sum_i};
  int64_t per_row = n * n * n * c;
  int64_t min_chunk = per_row > 0 ? (1 << 16) / per_row + 1 : b;
  return effml__parallel_for(ctx, b, min_chunk, mix_rows, &m);
}

/* dA_i[a, c] += sum_rows sum_j L[(row, a), (i, j)] R[(row, c), (i, j)]  (L, R: [b*n, n*c]).
 * For PHM, R is dY [b*n, kout] shared by every i (r_shared = 1). */
static void accumulate_dA(float *dA, const float *L, const float *R, int64_t b, int64_t n,
                          int64_t c, int r_shared) {
  int64_t nc = n * c, rstride = r_shared ? c : nc;
  if (!r_shared) { /* LPHM: dA_i += outer(P_i[:, j], dQ_i[:, j]) for every row and j */
    float pa[64], gc[64];
    for (int64_t row = 0; row < b; ++row) {
      const float *Lr = L + row * n * nc, *Rr = R + row * n * nc;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < c; ++j) {
          for (int64_t a = 0; a < n; ++a) {
            pa[a] = Lr[a * nc + i * c + j];
            gc[a] = Rr[a * nc + i * c + j];
          }
          float *d = dA + i * n * n;
          for (int64_t a = 0; a < n; ++a)
            for (int64_t cc = 0; cc < n; ++cc) d[a * n + cc] += pa[a] * gc[cc];
        }
    }
    return;
  }
  for (int64_t row = 0; row < b; ++row) {
    const float *Lr = L + row * n * nc;
    const float *Rr = R + row * n * rstride;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t a = 0; a < n; ++a) {
        const float *l = Lr + a * nc + i * c;
        for (int64_t cc = 0; cc < n; ++cc) {
          const float *rr = Rr + cc * rstride;
          double sum = 0;
          for (int64_t j = 0; j < c; ++j) sum += (double)l[j] * rr[j];
          dA[(i * n + a) * n + cc] += (float)sum;
        }
      }
  }
}

/* ---- thin LPHM (n*r <= EFFML__PHM_MAXC): the row kernels of phm_rows.c ---- */

static void transpose_S(const float *S, int64_t kin, int64_t nc, float *St) {
  for (int64_t u = 0; u < kin; ++u)
    for (int64_t c = 0; c < nc; ++c) St[c * kin + u] = S[u * nc + c];
}

/* Rows a worker thread must get before one is started.  Measured on the
 * 2-core AVX-512 VM: pthread_create + join costs ~19 us; the row kernels run
 * ~0.05 ns (forward) and ~0.09 ns (backward) per unit of n*nc*(kin+kout+n)
 * (T5 shape, in cache).  2^20 units is ~50 us (forward) / ~100 us (backward)
 * of work, 3-5 spawn costs; below that the calling thread does it alone. */
static int64_t thin_min_chunk(int64_t n, int64_t kin, int64_t kout, int64_t nc) {
  int64_t per_row = n * nc * (kin + kout + n) + 1;
  return (1 << 20) / per_row + 1;
}

/* Grow the kept buffers P, Q to `need` floats each. */
static effml_status keep_buffers(effml_context *ctx, effml__phm *p, size_t need) {
  if (p->cap_pq >= need && p->P && p->Q) return EFFML_OK;
  effml__free(ctx, p->P);
  effml__free(ctx, p->Q);
  p->P = (float *)effml__malloc(ctx, need * sizeof(float));
  p->Q = (float *)effml__malloc(ctx, need * sizeof(float));
  p->cap_pq = (p->P && p->Q) ? need : 0;
  if (!p->cap_pq) return effml__err(ctx, EFFML_E_NOMEM, "phm forward: out of memory for %zu floats", need);
  return EFFML_OK;
}

effml_status effml__phm_forward_factorized(effml_context *ctx, effml_layer *l, const float *x,
                                           int64_t b, float *y, int32_t mode) {
  effml__phm *p = (effml__phm *)l->impl;
  int64_t n = p->n, r = p->r, kin = p->kin, kout = p->kout, bn = b * n;
  int64_t c = r ? r : kout, nc = n * c; /* columns of one block of P (LPHM) or Z (PHM) */
  size_t need = (size_t)bn * (size_t)nc;
  float *P, *Q, *S = (float *)effml__malloc(ctx, (size_t)(kin * nc) * sizeof(float));
  float *tmpP = NULL, *tmpQ = NULL;
  if (S == NULL) return effml__err(ctx, EFFML_E_NOMEM, "phm forward: out of memory");
  if (mode == EFFML_LAYER_MODE_TRAIN) {
    effml_status st = keep_buffers(ctx, p, need);
    if (st != EFFML_OK) {
      effml__free(ctx, S);
      return st;
    }
    P = p->P;
    Q = p->Q;
  } else if (r && nc <= EFFML__PHM_MAXC) {
    P = Q = NULL; /* inference, thin: the row kernel keeps a row's P and Q on its stack */
  } else {
    P = tmpP = (float *)effml__malloc(ctx, need * sizeof(float));
    Q = tmpQ = r ? (float *)effml__malloc(ctx, need * sizeof(float)) : NULL;
    if (P == NULL || (r && Q == NULL)) {
      effml__free(ctx, S);
      effml__free(ctx, tmpP);
      effml__free(ctx, tmpQ);
      return effml__err(ctx, EFFML_E_NOMEM, "phm forward: out of memory");
    }
  }
  const float *A = effml__phm_rule_f32(l);
  effml_status st;
  if (r && nc <= EFFML__PHM_MAXC) {
    float *St = (float *)effml__malloc(ctx, (size_t)(kin * nc) * sizeof(float));
    if (St == NULL) {
      st = effml__err(ctx, EFFML_E_NOMEM, "phm forward: out of memory");
    } else {
      pack_cols(effml__param_f32(l, p->i_wl), n, kin, r, S);
      transpose_S(S, kin, nc, St);
      effml__phm_rows_args t = {.A = A, .St = St, .T = effml__param_f32(l, p->i_wr),
                                .bias = p->i_b >= 0 ? effml__param_f32(l, p->i_b) : NULL,
                                .n = n, .r = r, .kin = kin, .kout = kout, .batch = b,
                                .x = x, .P = P, .Q = Q, .y = y};
      st = effml__parallel_for(ctx, b, thin_min_chunk(n, kin, kout, nc), effml__phm_rows_forward(ctx), &t);
      effml__free(ctx, St);
    }
    effml__free(ctx, S);
    effml__free(ctx, tmpP);
    effml__free(ctx, tmpQ);
    if (st == EFFML_OK && mode == EFFML_LAYER_MODE_TRAIN) {
      p->x = x;
      p->batch = b;
    }
    return st;
  } else if (r) {
    pack_cols(effml__param_f32(l, p->i_wl), n, kin, r, S);
    st = effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, bn, nc, kin, 1.0f, x, kin, S, nc, 0.0f, P,
                      nc);
    EFFML__THEN(st, run_mix(ctx, A, P, Q, b, n, r, 1, 0));
    EFFML__THEN(st, effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, bn, kout, nc, 1.0f, Q, nc,
                                 effml__param_f32(l, p->i_wr), kout, 0.0f, y, kout));
  } else {
    pack_cols(effml__param_f32(l, p->i_w), n, kin, kout, S);
    st = effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, bn, nc, kin, 1.0f, x, kin, S, nc, 0.0f, P,
                      nc);
    EFFML__THEN(st, run_mix(ctx, A, P, y, b, n, kout, 1, 1));
  }
  if (st == EFFML_OK && p->i_b >= 0) effml__bias_add(y, effml__param_f32(l, p->i_b), b, l->out_features);
  effml__free(ctx, S);
  effml__free(ctx, tmpP);
  effml__free(ctx, tmpQ);
  if (st == EFFML_OK && mode == EFFML_LAYER_MODE_TRAIN) {
    p->x = x;
    p->batch = b;
  }
  return st;
}

effml_status effml__phm_backward_factorized(effml_context *ctx, effml_layer *l, const float *dy,
                                            float *dx) {
  effml__phm *p = (effml__phm *)l->impl;
  int64_t n = p->n, r = p->r, kin = p->kin, kout = p->kout, b = p->batch, bn = b * n;
  int64_t c = r ? r : kout, nc = n * c;
  const float *A = effml__phm_rule_f32(l);
  float *gA = effml__phm_rule_grad_f32(l);
  int32_t iw = r ? p->i_wl : p->i_w;
  int tw = effml__param_trainable(l, iw);
  float *S = (float *)effml__malloc(ctx, (size_t)(kin * nc) * sizeof(float));
  float *dS = tw ? (float *)effml__malloc(ctx, (size_t)(kin * nc) * sizeof(float)) : NULL;
  /* The thin path (r > 0, nc <= EFFML__PHM_MAXC) runs the row kernel; with `fuse` it also sums
   * dS and dT there, so it never needs dQ, and needs dP only for dS by GEMM (below). */
  const int thin = r && nc <= EFFML__PHM_MAXC;
  /* dS and dT in the row kernel (x and dy read once, no BLAS call) for small
   * adapters and for n*r <= 8 at any width; for n*r = 9..16 on wide rows the
   * row kernel's dS accumulators (up to 16 vectors per 16-column block)
   * cost more than two GEMMs.  Measured, 4096 -> 4096, 2 048 rows, one
   * thread, backward CPU ms (sgemm / row kernel): n 8 r 1: 21 / 16.5;
   * n 4 r 1: 20.4 / 11.3; n 2 r 1: 17.5 / 12.8; n 4 r 2: 24.5 / 25.2;
   * n 8 r 2: 32 / 35; n 2 r 8: 39 / 76; n 4 r 4: 35 / 50.  dA is always
   * summed in the row kernel (n^3 floats per chunk). */
  const int fuse = thin && (nc <= 8 || nc * (kin + kout) <= 2048);
  const int want_dQ = r && !thin, want_dP = !thin || (tw && !fuse);
  size_t need = (size_t)(bn * nc);
  if ((want_dQ || want_dP) && p->cap_d < need) {
    effml__free(ctx, p->dQ);
    effml__free(ctx, p->dP);
    p->dQ = (float *)effml__malloc(ctx, need * sizeof(float));
    p->dP = (float *)effml__malloc(ctx, need * sizeof(float));
    p->cap_d = (p->dQ && p->dP) ? need : 0;
  }
  float *dQ = want_dQ && p->cap_d ? p->dQ : NULL, *dP = want_dP && p->cap_d ? p->dP : NULL;
  effml_status st = EFFML_OK;
  if (S == NULL || (want_dP && dP == NULL) || (want_dQ && dQ == NULL) || (tw && dS == NULL)) {
    st = effml__err(ctx, EFFML_E_NOMEM, "phm backward: out of memory");
    goto done;
  }
  pack_cols(effml__param_f32(l, iw), n, kin, c, S);
  if (thin) {
    const float *T = effml__param_f32(l, p->i_wr);
    float *St = (float *)effml__malloc(ctx, (size_t)(kin * nc) * sizeof(float));
    if (St == NULL) {
      st = effml__err(ctx, EFFML_E_NOMEM, "phm backward: out of memory");
      goto done;
    }
    transpose_S(S, kin, nc, St);
    const int64_t chunks = (b + EFFML__PHM_CHUNK - 1) / EFFML__PHM_CHUNK;
    const int twr = fuse && effml__param_trainable(l, p->i_wr);
    const int tws = fuse && tw;
    float *parts = tws ? (float *)effml__malloc(ctx, (size_t)(chunks * nc * kin) * sizeof(float)) : NULL;
    float *tparts = twr ? (float *)effml__malloc(ctx, (size_t)(chunks * nc * kout) * sizeof(float)) : NULL;
    float *aparts = gA ? (float *)effml__malloc(ctx, (size_t)(chunks * n * n * n) * sizeof(float)) : NULL;
    if ((tws && parts == NULL) || (twr && tparts == NULL) || (gA && aparts == NULL)) {
      effml__free(ctx, St);
      effml__free(ctx, parts);
      effml__free(ctx, tparts);
      effml__free(ctx, aparts);
      st = effml__err(ctx, EFFML_E_NOMEM, "phm backward: out of memory");
      goto done;
    }
    effml__phm_rows_args t = {.A = A, .St = St, .T = T, .n = n, .r = r, .kin = kin, .kout = kout,
                              .batch = b, .x = tws ? p->x : NULL, .P = p->P, .Q = p->Q, .dy = dy,
                              .dx = dx, .dP = (tw && !tws) ? dP : NULL, .dSt = parts,
                              .dT = tparts, .dA = aparts};
    int64_t min_chunks = thin_min_chunk(n, kin, kout, nc) / EFFML__PHM_CHUNK + 1;
    st = effml__parallel_for(ctx, chunks, min_chunks, effml__phm_rows_backward(ctx), &t);
    effml__free(ctx, St);
    if (st == EFFML_OK && tws) { /* dS = sum of the chunks' parts, in chunk order */
      float *acc = parts;
      for (int64_t ch = 1; ch < chunks; ++ch) {
        const float *pc = parts + ch * nc * kin;
        for (int64_t q = 0; q < nc * kin; ++q) acc[q] += pc[q];
      }
      for (int64_t u = 0; u < kin; ++u)
        for (int64_t col = 0; col < nc; ++col) dS[u * nc + col] = acc[col * kin + u];
      unpack_add_cols(dS, n, kin, c, effml__grad_f32(l, iw));
    }
    if (st == EFFML_OK && twr) { /* dT: the chunks' parts in chunk order */
      float *g = effml__grad_f32(l, p->i_wr);
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const float *pc = tparts + ch * nc * kout;
        for (int64_t q = 0; q < nc * kout; ++q) g[q] += pc[q];
      }
    }
    if (st == EFFML_OK && gA) /* dA: the chunks' parts in chunk order */
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const float *pc = aparts + ch * n * n * n;
        for (int64_t q = 0; q < n * n * n; ++q) gA[q] += pc[q];
      }
    effml__free(ctx, parts);
    effml__free(ctx, tparts);
    effml__free(ctx, aparts);
    if (st != EFFML_OK) goto done;
    if (!fuse && effml__param_trainable(l, p->i_wr))
      st = effml__sgemm(ctx, CblasTrans, CblasNoTrans, nc, kout, bn, 1.0f, p->Q, nc, dy, kout, 1.0f,
                        effml__grad_f32(l, p->i_wr), kout);
    if (st != EFFML_OK) goto done;
    if (tws) tw = 0; /* dS done above, from the row kernel */
    dx = NULL; /* written by the row kernel */
  } else if (r) {
    const float *T = effml__param_f32(l, p->i_wr);
    /* dQ = dY T^T; dT += Q^T dY */
    st = effml__sgemm(ctx, CblasNoTrans, CblasTrans, bn, nc, kout, 1.0f, dy, kout, T, kout, 0.0f,
                      dQ, nc);
    if (effml__param_trainable(l, p->i_wr))
      EFFML__THEN(st, effml__sgemm(ctx, CblasTrans, CblasNoTrans, nc, kout, bn, 1.0f, p->Q, nc, dy,
                                   kout, 1.0f, effml__grad_f32(l, p->i_wr), kout));
    if (st != EFFML_OK) goto done;
    if (gA) accumulate_dA(gA, p->P, dQ, b, n, r, 0);
    st = run_mix(ctx, A, dQ, dP, b, n, r, 0, 0); /* dP_i = A_i dQ_i */
  } else {
    if (gA) accumulate_dA(gA, p->P, dy, b, n, kout, 1); /* dA_i[a,c] = sum Z_i[a,:] . dY[c,:] */
    st = run_mix(ctx, A, dy, dP, b, n, kout, 0, 1);    /* dZ */
  }
  if (st != EFFML_OK) goto done;
  if (tw) { /* (the thin path has done dS in its row kernel) */
    st = effml__sgemm(ctx, CblasTrans, CblasNoTrans, kin, nc, bn, 1.0f, p->x, kin, dP, nc, 0.0f, dS,
                      nc);
    if (st != EFFML_OK) goto done;
    unpack_add_cols(dS, n, kin, c, effml__grad_f32(l, iw));
  }
  if (dx)
    st = effml__sgemm(ctx, CblasNoTrans, CblasTrans, bn, kin, nc, 1.0f, dP, nc, S, nc, 0.0f, dx,
                      kin);
  if (st == EFFML_OK && p->i_b >= 0 && effml__param_trainable(l, p->i_b))
    effml__bias_grad(effml__grad_f32(l, p->i_b), dy, b, l->out_features);
done:
  effml__free(ctx, S);
  effml__free(ctx, dS);
  return st;
}
