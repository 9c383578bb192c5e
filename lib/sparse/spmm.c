/*
 * Sparse kernels on batch-minor panels (docs/sparse.md "Kernel layout").
 *
 *   spmm_t : Yᵀ[r, :] = Σ_p v_p · Xᵀ[c_p, :]      forward (CSR) and dXᵀ (CSC)
 *   sddmm_t: g_p      = ⟨dYᵀ[r_p, :], Xᵀ[c_p, :]⟩  gradient of the nonzeros only
 *
 * Each nonzero streams one contiguous batch vector, so the inner loop is a
 * broadcast-FMA (spmm) or a dot product (sddmm) over the batch with no
 * gathers.  The batch is cut in tiles of 64 floats so the Xᵀ panel a tile
 * touches stays in L2.  Work items are (lane tile, row chunk) pairs handed
 * out in tile-major order from a shared counter, so a thread that starts
 * late takes fewer items instead of holding up the join, and both threads
 * stay on one tile; every output is summed in one fixed order by whichever
 * thread takes it, so results do not depend on the thread count.
 *
 * Three builds of each kernel: AVX-512F, AVX2+FMA (x86-64, picked at run time
 * with __builtin_cpu_supports, so the library itself needs no -march flag),
 * and a portable one written with GCC/Clang vector extensions.
 * effml__spmm_ref is the scalar reference the tests compare against.
 */
#include <string.h>

#include "sparse_internal.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#  define EFFML__X86 1
#  include <immintrin.h>
#endif

typedef float effml__v16 __attribute__((vector_size(64)));

#ifndef PF
#define PF 8
#endif

/* ---------------- portable (vector extensions) ---------------- */

static void spmm_rows_generic(int64_t r0, int64_t r1, const int64_t *ptr, const int32_t *idx,
                              const float *v, const float *XT, int64_t ldb, int64_t l0,
                              int64_t l1, int acc, float *Y0, int64_t ldy) {
  for (int64_t b0 = l0; b0 < l1; b0 += 16) {
    for (int64_t r = r0; r < r1; ++r) {
      effml__v16 a = {0};
      for (int64_t p = ptr[r]; p < ptr[r + 1]; ++p) {
        effml__v16 x;
        memcpy(&x, XT + (int64_t)idx[p] * ldb + b0, sizeof x);
        a += v[p] * x;
      }
      float *y = Y0 + (r - r0) * ldy + (b0 - l0);
      if (acc) {
        effml__v16 t;
        memcpy(&t, y, sizeof t);
        a += t;
      }
      memcpy(y, &a, sizeof a);
    }
  }
}

static void sddmm_rows_generic(int64_t r0, int64_t r1, const int64_t *ptr, const int32_t *idx,
                               const float *DYT, const float *XT, int64_t ldb, float *g) {
  for (int64_t r = r0; r < r1; ++r) {
    const float *dy = DYT + r * ldb;
    for (int64_t p = ptr[r]; p < ptr[r + 1]; ++p) {
      const float *x = XT + (int64_t)idx[p] * ldb;
      effml__v16 a = {0};
      for (int64_t b = 0; b < ldb; b += 16) {
        effml__v16 xv, dv;
        memcpy(&xv, x + b, sizeof xv);
        memcpy(&dv, dy + b, sizeof dv);
        a += xv * dv;
      }
      float s = 0.0f;
      for (int k = 0; k < 16; ++k) s += a[k];
      g[p] = s;
    }
  }
}

#ifdef EFFML__X86
/* ---------------- AVX-512F ---------------- */

__attribute__((target("avx512f"))) static void spmm_rows_avx512(
    int64_t r0, int64_t r1, const int64_t *ptr, const int32_t *idx, const float *v,
    const float *XT, int64_t ldb, int64_t l0, int64_t l1, int acc, float *Y0, int64_t ldy) {
  int64_t b0 = l0;
  for (; b0 + 64 <= l1; b0 += 64) {
    for (int64_t r = r0; r < r1; ++r) {
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      __m512 c0 = a0, c1 = a0, c2 = a0, c3 = a0;
      int64_t p = ptr[r];
      const int64_t pe = ptr[r + 1];
      /* two nonzeros per iteration into separate accumulators: 8 FMA chains */
      for (; p + 1 < pe; p += 2) {
        const float *x = XT + (int64_t)idx[p] * ldb + b0;
        const float *z = XT + (int64_t)idx[p + 1] * ldb + b0;
        if (p + PF + 1 < pe) { /* random rows: the hardware prefetcher cannot guess them */
          const char *px = (const char *)(XT + (int64_t)idx[p + PF] * ldb + b0);
          const char *pz = (const char *)(XT + (int64_t)idx[p + PF + 1] * ldb + b0);
          _mm_prefetch(px, _MM_HINT_T0); _mm_prefetch(px + 64, _MM_HINT_T0);
          _mm_prefetch(px + 128, _MM_HINT_T0); _mm_prefetch(px + 192, _MM_HINT_T0);
          _mm_prefetch(pz, _MM_HINT_T0); _mm_prefetch(pz + 64, _MM_HINT_T0);
          _mm_prefetch(pz + 128, _MM_HINT_T0); _mm_prefetch(pz + 192, _MM_HINT_T0);
        }
        __m512 w = _mm512_set1_ps(v[p]), u = _mm512_set1_ps(v[p + 1]);
        a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x), a0);
        a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 16), a1);
        a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 32), a2);
        a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 48), a3);
        c0 = _mm512_fmadd_ps(u, _mm512_loadu_ps(z), c0);
        c1 = _mm512_fmadd_ps(u, _mm512_loadu_ps(z + 16), c1);
        c2 = _mm512_fmadd_ps(u, _mm512_loadu_ps(z + 32), c2);
        c3 = _mm512_fmadd_ps(u, _mm512_loadu_ps(z + 48), c3);
      }
      if (p < pe) {
        const float *x = XT + (int64_t)idx[p] * ldb + b0;
        __m512 w = _mm512_set1_ps(v[p]);
        a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x), a0);
        a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 16), a1);
        a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 32), a2);
        a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 48), a3);
      }
      a0 = _mm512_add_ps(a0, c0);
      a1 = _mm512_add_ps(a1, c1);
      a2 = _mm512_add_ps(a2, c2);
      a3 = _mm512_add_ps(a3, c3);
      float *y = Y0 + (r - r0) * ldy + (b0 - l0);
      if (acc) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(y));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(y + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(y + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(y + 48));
      }
      _mm512_storeu_ps(y, a0);
      _mm512_storeu_ps(y + 16, a1);
      _mm512_storeu_ps(y + 32, a2);
      _mm512_storeu_ps(y + 48, a3);
    }
  }
  for (; b0 < l1; b0 += 16) {
    for (int64_t r = r0; r < r1; ++r) {
      __m512 a = _mm512_setzero_ps();
      for (int64_t p = ptr[r]; p < ptr[r + 1]; ++p)
        a = _mm512_fmadd_ps(_mm512_set1_ps(v[p]),
                            _mm512_loadu_ps(XT + (int64_t)idx[p] * ldb + b0), a);
      float *y = Y0 + (r - r0) * ldy + (b0 - l0);
      if (acc) a = _mm512_add_ps(a, _mm512_loadu_ps(y));
      _mm512_storeu_ps(y, a);
    }
  }
}

__attribute__((target("avx512f"))) static void sddmm_rows_avx512(
    int64_t r0, int64_t r1, const int64_t *ptr, const int32_t *idx, const float *DYT,
    const float *XT, int64_t ldb, float *g) {
  for (int64_t r = r0; r < r1; ++r) {
    const float *dy = DYT + r * ldb;
    int64_t p = ptr[r];
    const int64_t pe = ptr[r + 1];
    /* four nonzeros share each dY load */
    for (; p + 3 < pe; p += 4) {
      const float *x0 = XT + (int64_t)idx[p] * ldb, *x1 = XT + (int64_t)idx[p + 1] * ldb;
      const float *x2 = XT + (int64_t)idx[p + 2] * ldb, *x3 = XT + (int64_t)idx[p + 3] * ldb;
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t b = 0; b < ldb; b += 16) {
        __m512 d = _mm512_loadu_ps(dy + b);
        a0 = _mm512_fmadd_ps(d, _mm512_loadu_ps(x0 + b), a0);
        a1 = _mm512_fmadd_ps(d, _mm512_loadu_ps(x1 + b), a1);
        a2 = _mm512_fmadd_ps(d, _mm512_loadu_ps(x2 + b), a2);
        a3 = _mm512_fmadd_ps(d, _mm512_loadu_ps(x3 + b), a3);
      }
      g[p] = _mm512_reduce_add_ps(a0);
      g[p + 1] = _mm512_reduce_add_ps(a1);
      g[p + 2] = _mm512_reduce_add_ps(a2);
      g[p + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; p < pe; ++p) {
      const float *x0 = XT + (int64_t)idx[p] * ldb;
      __m512 a0 = _mm512_setzero_ps();
      for (int64_t b = 0; b < ldb; b += 16)
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(dy + b), _mm512_loadu_ps(x0 + b), a0);
      g[p] = _mm512_reduce_add_ps(a0);
    }
  }
}

/* ---------------- AVX2 + FMA ---------------- */

__attribute__((target("avx2,fma"))) static void spmm_rows_avx2(
    int64_t r0, int64_t r1, const int64_t *ptr, const int32_t *idx, const float *v,
    const float *XT, int64_t ldb, int64_t l0, int64_t l1, int acc, float *Y0, int64_t ldy) {
  int64_t b0 = l0;
  for (; b0 + 64 <= l1; b0 += 64) {
    for (int64_t r = r0; r < r1; ++r) {
      __m256 a[8];
      for (int k = 0; k < 8; ++k) a[k] = _mm256_setzero_ps();
      for (int64_t p = ptr[r]; p < ptr[r + 1]; ++p) {
        const float *x = XT + (int64_t)idx[p] * ldb + b0;
        __m256 w = _mm256_set1_ps(v[p]);
        for (int k = 0; k < 8; ++k) a[k] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + 8 * k), a[k]);
      }
      float *y = Y0 + (r - r0) * ldy + (b0 - l0);
      for (int k = 0; k < 8; ++k) {
        if (acc) a[k] = _mm256_add_ps(a[k], _mm256_loadu_ps(y + 8 * k));
        _mm256_storeu_ps(y + 8 * k, a[k]);
      }
    }
  }
  for (; b0 < l1; b0 += 16) {
    for (int64_t r = r0; r < r1; ++r) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0;
      for (int64_t p = ptr[r]; p < ptr[r + 1]; ++p) {
        const float *x = XT + (int64_t)idx[p] * ldb + b0;
        __m256 w = _mm256_set1_ps(v[p]);
        a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x), a0);
        a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + 8), a1);
      }
      float *y = Y0 + (r - r0) * ldy + (b0 - l0);
      if (acc) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(y));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(y + 8));
      }
      _mm256_storeu_ps(y, a0);
      _mm256_storeu_ps(y + 8, a1);
    }
  }
}

__attribute__((target("avx2,fma"))) static float hsum256(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void sddmm_rows_avx2(
    int64_t r0, int64_t r1, const int64_t *ptr, const int32_t *idx, const float *DYT,
    const float *XT, int64_t ldb, float *g) {
  for (int64_t r = r0; r < r1; ++r) {
    const float *dy = DYT + r * ldb;
    int64_t p = ptr[r];
    const int64_t pe = ptr[r + 1];
    for (; p + 3 < pe; p += 4) {
      const float *x0 = XT + (int64_t)idx[p] * ldb, *x1 = XT + (int64_t)idx[p + 1] * ldb;
      const float *x2 = XT + (int64_t)idx[p + 2] * ldb, *x3 = XT + (int64_t)idx[p + 3] * ldb;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t b = 0; b < ldb; b += 8) {
        __m256 d = _mm256_loadu_ps(dy + b);
        a0 = _mm256_fmadd_ps(d, _mm256_loadu_ps(x0 + b), a0);
        a1 = _mm256_fmadd_ps(d, _mm256_loadu_ps(x1 + b), a1);
        a2 = _mm256_fmadd_ps(d, _mm256_loadu_ps(x2 + b), a2);
        a3 = _mm256_fmadd_ps(d, _mm256_loadu_ps(x3 + b), a3);
      }
      g[p] = hsum256(a0);
      g[p + 1] = hsum256(a1);
      g[p + 2] = hsum256(a2);
      g[p + 3] = hsum256(a3);
    }
    for (; p < pe; ++p) {
      const float *x0 = XT + (int64_t)idx[p] * ldb;
      __m256 a0 = _mm256_setzero_ps();
      for (int64_t b = 0; b < ldb; b += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(dy + b), _mm256_loadu_ps(x0 + b), a0);
      g[p] = hsum256(a0);
    }
  }
}
#endif /* EFFML__X86 */

/* ---------------- dispatch ---------------- */

/* rows [r0, r1), lanes [l0, l1): output row r, lane b at Y0[(r - r0) ldy + b - l0] */
typedef void (*spmm_rows_fn)(int64_t, int64_t, const int64_t *, const int32_t *, const float *,
                             const float *, int64_t, int64_t, int64_t, int, float *, int64_t);
typedef void (*sddmm_rows_fn)(int64_t, int64_t, const int64_t *, const int32_t *, const float *,
                              const float *, int64_t, float *);

/* 2 = AVX-512F, 1 = AVX2+FMA, 0 = portable (EFFML_CORE_ISA_*): the level of
 * the call's context (effml_context_isa_level()). */
static int isa_level(const effml_context *ctx) { return (int)effml__ctx_isa(ctx); }

static spmm_rows_fn pick_spmm(const effml_context *ctx) {
#ifdef EFFML__X86
  switch (isa_level(ctx)) {
    case 2: return spmm_rows_avx512;
    case 1: return spmm_rows_avx2;
    default: break;
  }
#endif
  return spmm_rows_generic;
}

static sddmm_rows_fn pick_sddmm(const effml_context *ctx) {
#ifdef EFFML__X86
  switch (isa_level(ctx)) {
    case 2: return sddmm_rows_avx512;
    case 1: return sddmm_rows_avx2;
    default: break;
  }
#endif
  return sddmm_rows_generic;
}

/* First row r with ptr[r] >= t (ptr nondecreasing, ptr[0] = 0). */
static int64_t row_at(const int64_t *ptr, int64_t rows, int64_t t) {
  int64_t lo = 0, hi = rows;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (ptr[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* Row chunks of about equal nonzero counts: chunk k of n is the rows
 * [row_at(k nnz / n), row_at((k+1) nnz / n)), the last one ending at rows.
 * Every row lands in exactly one chunk. */
static void row_chunk(const int64_t *ptr, int64_t rows, int64_t n, int64_t k, int64_t *r0,
                      int64_t *r1) {
  const int64_t nnz = ptr[rows];
  *r0 = row_at(ptr, rows, (int64_t)((double)nnz * (double)k / (double)n));
  *r1 = k + 1 == n ? rows : row_at(ptr, rows, (int64_t)((double)nnz * (double)(k + 1) / (double)n));
  if (*r1 < *r0) *r1 = *r0;
}

/* How many row chunks: about 32 work items per thread over `tiles` lane
 * tiles, none below ~32k multiply-adds unless there is only one. */
static int64_t n_row_chunks(const effml_context *ctx, int64_t rows, int64_t nnz, int64_t lanes,
                            int64_t tiles) {
  const int64_t nt = effml__ctx_threads(ctx);
  int64_t n = (32 * nt + tiles - 1) / tiles;
  const int64_t cap = nnz * lanes / 32768;
  if (n > cap) n = cap;
  if (n > rows) n = rows;
  return n < 1 ? 1 : n;
}

/* Items per thread so a thread gets at least ~32k multiply-adds. */
static int64_t min_items(int64_t items, int64_t nnz, int64_t ldb) {
  return effml__sparse_min_items(items, nnz, ldb, 32768.0);
}

/* SpMM work items: (lane tile, row chunk) pairs in tile-major order, handed
 * out from a shared counter (effml__sparse_run_chunks).  A lane tile is 64
 * batch lanes (the last one the ldb % 64 rest), the width the AVX kernels
 * work in, so each lane goes through the same code path as with one thread;
 * tile-major order keeps the threads on the same Xᵀ tile (its rows for 64
 * lanes, 256 bytes each) while they take its row chunks. */
typedef struct {
  spmm_rows_fn fn;
  const int64_t *ptr;
  const int32_t *idx;
  const float *v, *XT;
  int64_t rows, ldb, nrc;
  int acc;
  float *YT;
} spmm_job;

static void spmm_range(void *arg, int64_t b, int64_t e, int32_t w) {
  spmm_job *j = (spmm_job *)arg;
  for (int64_t it = b; it < e; ++it) {
    const int64_t tile = it / j->nrc, k = it % j->nrc;
    const int64_t l0 = 64 * tile, l1 = l0 + 64 < j->ldb ? l0 + 64 : j->ldb;
    int64_t r0, r1;
    row_chunk(j->ptr, j->rows, j->nrc, k, &r0, &r1);
    if (r1 > r0)
      j->fn(r0, r1, j->ptr, j->idx, j->v, j->XT, j->ldb, l0, l1, j->acc, j->YT + r0 * j->ldb + l0,
            j->ldb);
  }
}

void effml__spmm_t(effml_context *ctx, int64_t rows, const int64_t *ptr, const int32_t *idx,
                   const float *v, const float *XT, int64_t ldb, int accumulate, float *YT) {
  if (rows <= 0 || ldb <= 0) return;
  const int64_t tiles = (ldb + 63) / 64, nnz = ptr[rows];
  const int64_t nrc = n_row_chunks(ctx, rows, nnz, ldb < 64 ? ldb : 64, tiles);
  spmm_job j = {pick_spmm(ctx), ptr, idx, v, XT, rows, ldb, nrc, accumulate, YT};
  const int64_t items = tiles * nrc;
  effml__sparse_run_chunks(ctx, items, min_items(items, nnz, ldb), 1, spmm_range, &j);
}

/* The whole CSR forward in one call (effml__sparse_forward_fused): each
 * 16-row group's rows run through the same row kernel on the same 64-lane
 * tiles as effml__spmm_t (so the same bytes), into the group buffer. */
typedef struct {
  spmm_rows_fn fn;
  const effml__spmat *m;
  const float *v, *XT;
  int64_t ldb;
} spmm_group_job;

static void spmm_group_rows(void *arg, int64_t r0, int64_t re, int64_t l0, int64_t l1,
                            float *yt) {
  const spmm_group_job *g = (const spmm_group_job *)arg;
  g->fn(r0, re, g->m->row_ptr, g->m->col_idx, g->v, g->XT, g->ldb, l0, l1, 0, yt, 64);
}

void effml__spmm_forward(effml_context *ctx, const effml__spmat *m, const float *v,
                         const float *X, int64_t batch, float *XT, int64_t ldb,
                         const float *bias, int accumulate, float *Y) {
  spmm_group_job g = {pick_spmm(ctx), m, v, XT, ldb};
  effml__sparse_forward_fused(ctx, m->rows, m->cols, m->nnz, 64, spmm_group_rows, &g, X, batch,
                              XT, ldb, bias, accumulate, Y, -1);
}

/* SDDMM work items: row chunks of about equal nonzero counts, handed out
 * from a shared counter. */
typedef struct {
  sddmm_rows_fn fn;
  const effml__spmat *m;
  const float *DYT, *XT;
  int64_t ldb, nrc;
  float *g;
} sddmm_job;

static void sddmm_range(void *arg, int64_t b, int64_t e, int32_t w) {
  sddmm_job *j = (sddmm_job *)arg;
  for (int64_t k = b; k < e; ++k) {
    int64_t r0, r1;
    row_chunk(j->m->row_ptr, j->m->rows, j->nrc, k, &r0, &r1);
    if (r1 > r0) j->fn(r0, r1, j->m->row_ptr, j->m->col_idx, j->DYT, j->XT, j->ldb, j->g);
  }
}

void effml__sddmm_t(effml_context *ctx, const effml__spmat *m, const float *DYT, const float *XT,
                    int64_t ldb, float *g) {
  if (m->rows <= 0) return;
  const int64_t nrc = n_row_chunks(ctx, m->rows, m->nnz, ldb, 1);
  sddmm_job j = {pick_sddmm(ctx), m, DYT, XT, ldb, nrc, g};
  effml__sparse_run_chunks(ctx, nrc, min_items(nrc, m->nnz, ldb), 1, sddmm_range, &j);
}

/* ---------------- transposes (16 x 16 blocks) ---------------- */

#ifdef EFFML__X86
#  define UPL(a, b) _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
#  define UPH(a, b) _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
/* dst[j * ldd + i] = src[i * lds + j] for a full 16 x 16 block (in-register). */
__attribute__((target("avx512f"))) static void tr16_avx512(const float *src, int64_t lds,
                                                           float *dst, int64_t ldd) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = UPL(t[i], t[i + 2]);
    r[i + 1] = UPH(t[i], t[i + 2]);
    r[i + 2] = UPL(t[i + 1], t[i + 3]);
    r[i + 3] = UPH(t[i + 1], t[i + 3]);
  }
  for (int h = 0; h < 16; h += 8)
    for (int k = 0; k < 4; ++k) {
      t[h + k] = _mm512_shuffle_f32x4(r[h + k], r[h + k + 4], 0x88);
      t[h + k + 4] = _mm512_shuffle_f32x4(r[h + k], r[h + k + 4], 0xdd);
    }
  for (int k = 0; k < 8; ++k) {
    r[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
    r[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ldd, r[i]);
}
#  undef UPL
#  undef UPH

/* Y block (16 rows of 16) (+)= transpose of the YT block + bias. */
__attribute__((target("avx512f"))) static void tr16_out_avx512(const float *src, int64_t lds,
                                                               float *dst, int64_t ldd,
                                                               const float *bias, int acc) {
  float tmp[256];
  tr16_avx512(src, lds, tmp, 16);
  const __m512 bv = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  for (int i = 0; i < 16; ++i) {
    __m512 v = _mm512_add_ps(_mm512_loadu_ps(tmp + 16 * i), bv);
    if (acc) v = _mm512_add_ps(v, _mm512_loadu_ps(dst + i * ldd));
    _mm512_storeu_ps(dst + i * ldd, v);
  }
}
#endif

typedef struct {
  const float *src;
  float *dst;
  int64_t batch, n, ldb;
  const float *bias;
  int acc;
  int isa;
} tr_job;

/* XT[c, b] = X[b, c]; one work item = 16 columns c. */
static void tr_in_range(void *arg, int64_t b, int64_t e, int32_t w) {
  tr_job *j = (tr_job *)arg;
  for (int64_t cb = b * 16; cb < e * 16 && cb < j->n; cb += 16) {
    int64_t ce = cb + 16 < j->n ? cb + 16 : j->n;
    for (int64_t bb = 0; bb < j->batch; bb += 16) {
      int64_t be = bb + 16 < j->batch ? bb + 16 : j->batch;
#ifdef EFFML__X86
      if (j->isa == 2 && ce - cb == 16 && be - bb == 16) {
        tr16_avx512(j->src + bb * j->n + cb, j->n, j->dst + cb * j->ldb + bb, j->ldb);
        continue;
      }
#endif
      for (int64_t c = cb; c < ce; ++c) {
        float *d = j->dst + c * j->ldb;
        for (int64_t r = bb; r < be; ++r) d[r] = j->src[r * j->n + c];
      }
    }
    for (int64_t c = cb; c < ce; ++c)
      for (int64_t r = j->batch; r < j->ldb; ++r) j->dst[c * j->ldb + r] = 0.0f;
  }
}

/* Y[b, r] (+)= YT[r, b] + bias[r]; one work item = 16 batch rows b. */
static void tr_out_range(void *arg, int64_t b, int64_t e, int32_t w) {
  tr_job *j = (tr_job *)arg;
  for (int64_t bb = b * 16; bb < e * 16 && bb < j->batch; bb += 16) {
    int64_t be = bb + 16 < j->batch ? bb + 16 : j->batch;
    for (int64_t rb = 0; rb < j->n; rb += 16) {
      int64_t re = rb + 16 < j->n ? rb + 16 : j->n;
#ifdef EFFML__X86
      if (j->isa == 2 && re - rb == 16 && be - bb == 16) {
        if (!j->acc && !j->bias)
          tr16_avx512(j->src + rb * j->ldb + bb, j->ldb, j->dst + bb * j->n + rb, j->n);
        else
          tr16_out_avx512(j->src + rb * j->ldb + bb, j->ldb, j->dst + bb * j->n + rb, j->n,
                          j->bias ? j->bias + rb : NULL, j->acc);
        continue;
      }
#endif
      for (int64_t s = bb; s < be; ++s) {
        float *y = j->dst + s * j->n;
        for (int64_t r = rb; r < re; ++r) {
          float t = j->src[r * j->ldb + s] + (j->bias ? j->bias[r] : 0.0f);
          y[r] = j->acc ? y[r] + t : t;
        }
      }
    }
  }
}

void effml__transpose_in(effml_context *ctx, const float *X, int64_t batch, int64_t cols,
                         float *XT, int64_t ldb) {
  tr_job j = {X, XT, batch, cols, ldb, NULL, 0, isa_level(ctx)};
  (void)effml__parallel_for(ctx, (cols + 15) / 16, 64, tr_in_range, &j);
}

void effml__transpose_out(effml_context *ctx, const float *YT, int64_t ldb, int64_t rows,
                          int64_t batch, const float *bias, int accumulate, float *Y) {
  tr_job j = {YT, Y, batch, rows, ldb, bias, accumulate, isa_level(ctx)};
  (void)effml__parallel_for(ctx, (batch + 15) / 16, 4, tr_out_range, &j);
}

/* ---------------- reference ---------------- */

void effml__spmm_ref(const effml__spmat *m, const float *v, const float *X, int64_t batch,
                     const float *bias, float *Y) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < m->rows; ++r) {
      float s = bias ? bias[r] : 0.0f;
      for (int64_t p = m->row_ptr[r]; p < m->row_ptr[r + 1]; ++p)
        s += v[p] * X[b * m->cols + m->col_idx[p]];
      Y[b * m->rows + r] = s;
    }
}
