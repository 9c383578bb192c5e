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
 * Row-parallel loops write disjoint rows; the dA sum runs in row order, so
 * results do not depend on the thread count. */
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

/* ---- fused row kernels for thin LPHM (n*r <= THIN_MAX): stages 1-3 per row in
 * one pass over x (the GEMMs above have N = n*r, a shape BLAS runs poorly).
 * Each output element is a fixed-order sum, so results do not depend on the
 * thread count. ---- */

#define THIN_MAX 16

/* 8-lane dot product (the lanes let the compiler vectorise without reassociation flags). */
static float dot8(const float *restrict a, const float *restrict b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

typedef struct thin_args {
  const float *A, *St, *T, *bias; /* St: S transposed [n*r, kin]; T: [n*r, kout] */
  const float *in;                /* forward: x [b, in]; backward: dy [b, out] */
  float *P, *Q, *out;             /* forward: P, Q kept, y; backward: dQ, dP, dx (or NULL) */
  int64_t n, r, kin, kout;
  const float *x;  /* backward: the forward's input, for dS (NULL: W_left frozen) */
  int64_t batch_rows;
  float *dSt;      /* backward: [chunks][n*r][kin] partial dS^T of each fixed row chunk */
  const float *Qf; /* backward: the forward's Q, for dT (NULL: W_right frozen) */
  float *dTp;      /* backward: [chunks][n*r][kout] partial dT of each fixed row chunk */
} thin_args;

/* Backward rows are processed in fixed chunks (independent of the thread
 * count); each chunk sums its dS^T part in row order and the parts are added
 * in chunk order, so dS does not depend on the thread count either. */
#define THIN_CHUNK 64

/* The backward row kernel is memory-bound only when it runs at full vector
 * width: built for x86-64 baseline (SSE2) it was compute-bound, so its body
 * is compiled for AVX-512F and AVX2+FMA too, and the call's context picks
 * one (effml_context_isa_level(); explicit, so a test can force each).
 * GCC only: this file is ISO C, which GCC compiles without contracting
 * a*b+c into FMAs, so the three builds give the same bits; clang contracts
 * by default and would not. */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
#define THIN_X86 1
#endif

static void thin_forward_rows(void *arg, int64_t begin, int64_t end, int32_t worker) {
  const thin_args *t = (const thin_args *)arg;
  int64_t n = t->n, r = t->r, nc = n * r, kin = t->kin, kout = t->kout;
  (void)worker;
  mix_args m = {t->A, t->P, t->Q, n, r, 1, 0};
  for (int64_t row = begin; row < end; ++row) {
    const float *x = t->in + row * n * kin;
    float *P = t->P + row * n * nc, *y = t->out + row * n * kout;
    for (int64_t a = 0; a < n; ++a)
      for (int64_t col = 0; col < nc; ++col) P[a * nc + col] = dot8(x + a * kin, t->St + col * kin, kin);
    mix_rows(&m, row, row + 1, 0);
    const float *Q = t->Q + row * n * nc;
    for (int64_t c = 0; c < n; ++c) {
      float *yc = y + c * kout;
      if (t->bias) memcpy(yc, t->bias + c * kout, (size_t)kout * sizeof(float));
      else memset(yc, 0, (size_t)kout * sizeof(float));
      for (int64_t col = 0; col < nc; ++col) {
        float q = Q[c * nc + col];
        const float *tr = t->T + col * kout;
        for (int64_t v = 0; v < kout; ++v) yc[v] += q * tr[v];
      }
    }
  }
}

/* The backward row kernel's body, built for each ISA level for the fused
 * small-adapter case (it gains from wide vectors) and once, baseline, for
 * the wide case, which lost ~25 % CPU time in the AVX-512 clone (measured 1
 * thread, LPHM 4096 -> 4096 n 8: 63 ms cloned vs 48 ms baseline; T5 768 -> 24
 * n 4: 14.6 ms cloned vs 18 ms baseline). */
static inline __attribute__((always_inline)) void thin_backward_body(void *arg, int64_t c0,
                                                                     int64_t c1, int32_t worker) {
  const thin_args *t = (const thin_args *)arg;
  int64_t n = t->n, r = t->r, nc = n * r, kin = t->kin, kout = t->kout;
  (void)worker;
  mix_args m = {t->A, t->P, t->Q, n, r, 0, 0}; /* here P = dQ (input), Q = dP (output) */
  for (int64_t ch = c0; ch < c1; ++ch) {
    float *dSt = t->x ? t->dSt + ch * nc * kin : NULL;
    if (dSt) memset(dSt, 0, (size_t)(nc * kin) * sizeof(float));
    float *dT = t->Qf ? t->dTp + ch * nc * kout : NULL;
    if (dT) memset(dT, 0, (size_t)(nc * kout) * sizeof(float));
    int64_t end = (ch + 1) * THIN_CHUNK < t->batch_rows ? (ch + 1) * THIN_CHUNK : t->batch_rows;
    for (int64_t row = ch * THIN_CHUNK; row < end; ++row) {
      const float *dy = t->in + row * n * kout;
      float *dQ = t->P + row * n * nc;
      for (int64_t c = 0; c < n; ++c)
        for (int64_t col = 0; col < nc; ++col) dQ[c * nc + col] = dot8(dy + c * kout, t->T + col * kout, kout);
      if (dT) /* dT[col, v] += Q[c, col] dy_c[v] */
        for (int64_t c = 0; c < n; ++c)
          for (int64_t col = 0; col < nc; ++col) {
            const float g = t->Qf[(row * n + c) * nc + col];
            float *restrict dt = dT + col * kout;
            const float *restrict dyc = dy + c * kout;
            for (int64_t v = 0; v < kout; ++v) dt[v] += g * dyc[v];
          }
      mix_rows(&m, row, row + 1, 0);
      const float *dP = t->Q + row * n * nc;
      for (int64_t a = 0; a < n; ++a) {
        if (dSt) { /* dS^T[col, u] += dP[a, col] x_a[u]: x is read here, once */
          const float *restrict xa = t->x + (row * n + a) * kin;
          for (int64_t col = 0; col < nc; ++col) {
            const float g = dP[a * nc + col];
            float *restrict ds = dSt + col * kin;
            for (int64_t u = 0; u < kin; ++u) ds[u] += g * xa[u];
          }
        }
        if (t->out == NULL) continue;
        float *restrict dx = t->out + (row * n + a) * kin;
        const float g0 = dP[a * nc];
        const float *restrict s0 = t->St;
        for (int64_t u = 0; u < kin; ++u) dx[u] = g0 * s0[u];
        for (int64_t col = 1; col < nc; ++col) {
          float g = dP[a * nc + col];
          const float *restrict sr = t->St + col * kin;
          for (int64_t u = 0; u < kin; ++u) dx[u] += g * sr[u];
        }
      }
    }
  }
}

/* The wide case, and the fused case at the portable level. */
static void thin_backward_rows(void *arg, int64_t c0, int64_t c1, int32_t worker) {
  thin_backward_body(arg, c0, c1, worker);
}
#ifdef THIN_X86
__attribute__((target("avx2,fma"))) static void thin_backward_rows_avx2(void *arg, int64_t c0,
                                                                         int64_t c1,
                                                                         int32_t worker) {
  thin_backward_body(arg, c0, c1, worker);
}
__attribute__((target("avx512f,avx2,fma"))) static void thin_backward_rows_avx512(void *arg,
                                                                                   int64_t c0,
                                                                                   int64_t c1,
                                                                                   int32_t worker) {
  thin_backward_body(arg, c0, c1, worker);
}
#endif

/* The fused case's row kernel at the context's ISA level. */
static effml__range_fn thin_backward_kernel(const effml_context *ctx) {
#ifdef THIN_X86
  switch (effml__ctx_isa(ctx)) {
    case EFFML_CORE_ISA_AVX512: return thin_backward_rows_avx512;
    case EFFML_CORE_ISA_AVX2: return thin_backward_rows_avx2;
    default: break;
  }
#else
  (void)ctx;
#endif
  return thin_backward_rows;
}

static void transpose_S(const float *S, int64_t kin, int64_t nc, float *St) {
  for (int64_t u = 0; u < kin; ++u)
    for (int64_t c = 0; c < nc; ++c) St[c * kin + u] = S[u * nc + c];
}

static int64_t thin_min_chunk(int64_t n, int64_t kin, int64_t kout, int64_t nc) {
  int64_t per_row = n * nc * (kin + kout + n) + 1;
  return (1 << 18) / per_row + 1; /* a thread is worth starting for ~256k MACs */
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
  if (r && nc <= THIN_MAX) {
    float *St = (float *)effml__malloc(ctx, (size_t)(kin * nc) * sizeof(float));
    if (St == NULL) {
      st = effml__err(ctx, EFFML_E_NOMEM, "phm forward: out of memory");
    } else {
      pack_cols(effml__param_f32(l, p->i_wl), n, kin, r, S);
      transpose_S(S, kin, nc, St);
      thin_args t = {A, St, effml__param_f32(l, p->i_wr), p->i_b >= 0 ? effml__param_f32(l, p->i_b) : NULL,
                     x, P, Q, y, n, r, kin, kout, NULL, 0, NULL, NULL, NULL};
      st = effml__parallel_for(ctx, b, thin_min_chunk(n, kin, kout, nc), thin_forward_rows, &t);
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
  size_t need = (size_t)(bn * nc);
  if (p->cap_d < need) {
    effml__free(ctx, p->dQ);
    effml__free(ctx, p->dP);
    p->dQ = (float *)effml__malloc(ctx, need * sizeof(float));
    p->dP = (float *)effml__malloc(ctx, need * sizeof(float));
    p->cap_d = (p->dQ && p->dP) ? need : 0;
  }
  float *dQ = p->cap_d ? p->dQ : NULL, *dP = p->cap_d ? p->dP : NULL;
  effml_status st = EFFML_OK;
  if (S == NULL || dP == NULL || dQ == NULL || (tw && dS == NULL)) {
    st = effml__err(ctx, EFFML_E_NOMEM, "phm backward: out of memory");
    goto done;
  }
  pack_cols(effml__param_f32(l, iw), n, kin, c, S);
  if (r && nc <= THIN_MAX) {
    const float *T = effml__param_f32(l, p->i_wr);
    float *St = (float *)effml__malloc(ctx, (size_t)(kin * nc) * sizeof(float));
    if (St == NULL) {
      st = effml__err(ctx, EFFML_E_NOMEM, "phm backward: out of memory");
      goto done;
    }
    transpose_S(S, kin, nc, St);
    const int64_t chunks = (b + THIN_CHUNK - 1) / THIN_CHUNK;
    /* Small adapters (x's rows thin against the factors, as in T5 adapters): dS
     * and dT in the row kernel, no BLAS call.  Wider ones (n r (kin + kout)
     * large): the accumulators' loads and stores cost more than BLAS's
     * register-blocked products, so dS and dT stay with sgemm below. */
    const int fuse = nc * (kin + kout) <= 2048;
    const int twr = fuse && effml__param_trainable(l, p->i_wr);
    const int tws = fuse && tw;
    float *parts = tws ? (float *)effml__malloc(ctx, (size_t)(chunks * nc * kin) * sizeof(float)) : NULL;
    float *tparts = twr ? (float *)effml__malloc(ctx, (size_t)(chunks * nc * kout) * sizeof(float)) : NULL;
    if ((tws && parts == NULL) || (twr && tparts == NULL)) {
      effml__free(ctx, St);
      effml__free(ctx, parts);
      effml__free(ctx, tparts);
      st = effml__err(ctx, EFFML_E_NOMEM, "phm backward: out of memory");
      goto done;
    }
    thin_args t = {A, St, T, NULL, dy, dQ, dP, dx, n, r, kin, kout, tws ? p->x : NULL, b, parts,
                   twr ? p->Q : NULL, tparts};
    int64_t min_chunks = thin_min_chunk(n, kin, kout, nc) / THIN_CHUNK + 1;
    st = effml__parallel_for(ctx, chunks, min_chunks,
                             fuse ? thin_backward_kernel(ctx) : thin_backward_rows, &t);
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
    effml__free(ctx, parts);
    effml__free(ctx, tparts);
    if (st != EFFML_OK) goto done;
    if (!fuse && effml__param_trainable(l, p->i_wr))
      st = effml__sgemm(ctx, CblasTrans, CblasNoTrans, nc, kout, bn, 1.0f, p->Q, nc, dy, kout, 1.0f,
                        effml__grad_f32(l, p->i_wr), kout);
    if (st != EFFML_OK) goto done;
    if (tws) tw = 0; /* dS done above, from the row kernel */
    if (gA) accumulate_dA(gA, p->P, dQ, b, n, r, 0);
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
