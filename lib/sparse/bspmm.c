/*
 * Block-sparse kernels (docs/sparse.md "Block-sparse layout").
 *
 * Block shape: 4 consecutive output rows x 1 input column ("4x1", the
 * output-channel blocks of XNNPACK's SpMM and of Intel's 4x1 block kernels).
 * A matrix with m->block == 4 keeps its CSR/CSC element structure (so
 * checkpoints, optimizers, dense export and FLOP counts see ordinary
 * nonzeros), with one extra invariant: within every full block-row (rows
 * 4i..4i+3) the four rows hold the same column list.  Rows past the last
 * multiple of 4 (rows mod 4 of them) form a shorter tail block-row whose rows
 * also share one column list.
 *
 * Why 4x1: with batch-minor panels the unstructured kernel loads one Xᵀ
 * vector per nonzero for one FMA, so it is bound by loads, not FMAs.  A 4x1
 * block reuses each loaded Xᵀ vector for 4 FMAs (4 output rows) in the
 * forward pass, each loaded dXᵀ vector for 4 FMAs in dX (scatter form, the 4
 * dY rows held in registers), and each dY load for 4 blocks in dW, which is
 * the register reuse a GEMM micro-kernel has.  A square 4x4 block would also
 * share indices but costs 16 broadcasts per block and forces coarser masks;
 * 1x16 (input-side) blocks give no reuse of the streamed batch vector.
 *
 *   forward  Yᵀ[r, :] = Σ_j v Xᵀ[c_j, :]     split over block-rows
 *   dX       dXᵀ[c, :] += Σ_k v dYᵀ[r0+k, :]  split over batch lanes (each
 *            thread owns its lanes, block-rows summed in order)
 *   dW       g = ⟨dYᵀ[r, :], Xᵀ[c, :]⟩        split over block-rows
 *
 * Work is handed out in chunks from a shared counter (effml__sparse_run_chunks), so a
 * thread that gets less CPU takes fewer chunks instead of holding the others
 * up.  Every output is summed in one fixed order, so results do not depend on the
 * thread count.
 */
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "sparse_internal.h"

typedef float bsp_v16 __attribute__((vector_size(64)));
typedef int32_t bsp_i16 __attribute__((vector_size(64)));
/* lanes of two bsp_v16 picked by 16 constant indices 0..31 (a macro list) */
#if defined(__clang__)
#  define BSP_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#  define BSP_SHUF(a, b, ...) __builtin_shuffle(a, b, (bsp_i16){__VA_ARGS__})
#endif

#define BSP_PF 8
#ifndef BSP_DXW
#  define BSP_DXW 64 /* widest dX panel, lanes */
#endif

/* dW output of CSR position p: g[slot[p]] (slot NULL: g[p]) = r, or += r */
static inline void bsp_put(float *g, const int32_t *slot, int64_t p, int acc, float r) {
  float *d = g + (slot ? slot[p] : p);
  *d = acc ? *d + r : r;
}

#define BSP_SUFFIX generic
#define BSP_TARGET
#include "bspmm_body.inc"
#undef BSP_SUFFIX
#undef BSP_TARGET

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#  define BSP_X86 1
#  define BSP_SUFFIX avx512
#  define BSP_TARGET __attribute__((target("avx512f")))
#  include "bspmm_body.inc"
#  undef BSP_SUFFIX
#  undef BSP_TARGET
#  define BSP_SUFFIX avx2
#  define BSP_TARGET __attribute__((target("avx2,fma")))
#  include "bspmm_body.inc"
#  undef BSP_SUFFIX
#  undef BSP_TARGET
#endif

typedef void (*bfwd_fn)(int64_t, const int32_t *, const float *, const float *, const float *,
                        const float *, const float *, int64_t, int, float *);
typedef void (*bdx_fn)(const effml__spmat *, const float *, const float *, int64_t, int64_t,
                       int64_t, float *);
typedef void (*bdw_fn)(int64_t, const int32_t *, const float *, const float *, int64_t, float *,
                       const int32_t *, int64_t, int);

typedef void (*btail_fn)(const effml__spmat *, int64_t, const float *, const float *, int64_t,
                         int64_t, int64_t, int, float *);
typedef void (*bgroup_fn)(const effml__spmat *, const float *, const float *, int64_t, int64_t,
                          int64_t, int64_t, int64_t, float *);
typedef void (*bout_fn)(const float *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                        const float *, int, float *);
typedef void (*bpack_fn)(const float *, int64_t, int64_t, int64_t, int64_t, float *, int64_t);

typedef struct {
  bfwd_fn fwd;
  bdx_fn dx;
  bdw_fn dw;
  btail_fn tail;
  bgroup_fn group;
  bout_fn out;
  bpack_fn pack;
} bsp_kernels;

/* Kernels of ISA level `isa` (EFFML_CORE_ISA_*), -1 = the context's
 * (effml_context_isa_level()); a level above the context's is capped to it. */
static bsp_kernels pick(const effml_context *ctx, int isa) {
  const int cpu = (int)effml__ctx_isa(ctx);
  if (isa < 0 || isa > cpu) isa = cpu;
#ifdef BSP_X86
  switch (isa) {
    case 2: return (bsp_kernels){bfwd_row_avx512, bdx_lanes_avx512, bdw_row_avx512, bfwd_tail_avx512,
                              bfwd_group_avx512, bout_avx512, bpack_avx512};
    case 1: return (bsp_kernels){bfwd_row_avx2, bdx_lanes_avx2, bdw_row_avx2, bfwd_tail_avx2,
                              bfwd_group_avx2, bout_avx2, bpack_avx2};
    default: break;
  }
#endif
  return (bsp_kernels){bfwd_row_generic, bdx_lanes_generic, bdw_row_generic, bfwd_tail_generic,
                              bfwd_group_generic, bout_generic, bpack_generic};
}

int effml__spmat_is_blocked(const effml__spmat *m, int32_t block) {
  if (block <= 1) return 1;
  for (int64_t r0 = 0; r0 < m->rows; r0 += block) {
    const int64_t re = r0 + block < m->rows ? r0 + block : m->rows;
    const int64_t n = m->row_ptr[r0 + 1] - m->row_ptr[r0];
    for (int64_t r = r0 + 1; r < re; ++r) {
      if (m->row_ptr[r + 1] - m->row_ptr[r] != n) return 0;
      if (n && memcmp(m->col_idx + m->row_ptr[r], m->col_idx + m->row_ptr[r0],
                      (size_t)n * sizeof(int32_t)) != 0)
        return 0;
    }
  }
  return 1;
}

/* ---------------- forward ---------------- */

typedef struct {
  bsp_kernels k;
  const effml__spmat *m;
  const float *v, *XT;
  int64_t ldb;
  int acc;
  float *YT;
} fwd_job;

static void fwd_range(void *arg, int64_t b, int64_t e, int32_t w) {
  fwd_job *j = (fwd_job *)arg;
  const effml__spmat *m = j->m;
  for (int64_t br = b; br < e; ++br) {
    const int64_t r0 = 4 * br;
    if (r0 + 4 <= m->rows) {
      const int64_t p0 = m->row_ptr[r0], n = m->row_ptr[r0 + 1] - p0;
      const float *v = j->v + p0;
      j->k.fwd(n, m->col_idx + p0, v, v + n, v + 2 * n, v + 3 * n, j->XT, j->ldb, j->acc,
               j->YT + r0 * j->ldb);
    } else {
      for (int64_t r = r0; r < m->rows; ++r)
        j->k.tail(m, r, j->v, j->XT, j->ldb, 0, j->ldb, j->acc, j->YT + r * j->ldb);
    }
  }
}

/* Items of at least ~64k multiply-adds per thread. */
static int64_t min_items(int64_t items, int64_t nnz, int64_t ldb) {
  return effml__sparse_min_items(items, nnz, ldb, 65536.0);
}

/* Chunks of a range handed out from a shared counter (declared in
 * sparse_internal.h, used by the CSR kernels too).  Each thread keeps
 * taking the next `chunk` items until none are left, so when one thread gets
 * less CPU (another process on its core, a worker that starts late,
 * OpenBLAS's workers still busy-waiting after a GEMM, which they do for
 * ~0.1 s) the others take over its share instead of waiting for it at the
 * join.  Which thread runs an item does not change its result: each item's
 * outputs are computed whole, in one order, by whoever takes it. */
typedef struct {
  atomic_llong next;
  int64_t items, chunk;
  effml__range_fn fn;
  void *arg;
} chunk_job;

static void chunk_worker(void *arg, int64_t b, int64_t e, int32_t w) {
  chunk_job *c = (chunk_job *)arg;
  for (;;) {
    const int64_t s = atomic_fetch_add_explicit(&c->next, c->chunk, memory_order_relaxed);
    if (s >= c->items) return;
    c->fn(c->arg, s, s + c->chunk < c->items ? s + c->chunk : c->items, w);
  }
}

void effml__sparse_run_chunks(effml_context *ctx, int64_t items, int64_t min_per, int64_t chunk,
                              effml__range_fn fn, void *arg) {
  int64_t nt = effml__ctx_threads(ctx);
  if (min_per < 1) min_per = 1;
  if (nt > items / min_per) nt = items / min_per;
  if (nt > 64) nt = 64;
  if (nt <= 1) {
    if (items > 0) fn(arg, 0, items, 0);
    return;
  }
  chunk_job c;
  atomic_init(&c.next, 0);
  c.items = items;
  c.chunk = chunk > 0 ? chunk : (items + 32 * nt - 1) / (32 * nt);
  c.fn = fn;
  c.arg = arg;
  (void)effml__parallel_for(ctx, nt, 1, chunk_worker, &c);
}
void effml__bspmm_fwd(effml_context *ctx, const effml__spmat *m, const float *v, const float *XT,
                      int64_t ldb, int accumulate, float *YT, int isa) {
  fwd_job j = {pick(ctx, isa), m, v, XT, ldb, accumulate, YT};
  const int64_t items = (m->rows + 3) / 4;
  effml__sparse_run_chunks(ctx, items, min_items(items, m->nnz, ldb), 0, fwd_range, &j);
}

/* ---------------- fused forward (row-major in and out) ---------------- */

/* One call, two kinds of work items from one shared counter:
 *   [0, npack)          pack: Xᵀ columns [64 i, 64 i + 64) from X (bpack);
 *   [npack, + ncomp)    compute: (lane tile, chunk of 16-row groups) pairs in
 *                       tile-major order; each group's rows are computed into
 *                       a 16 x 64 buffer (the caller's rows_fn) and written
 *                       to Y directly (bout).
 * A thread takes a compute item only once every pack item is done (the pack
 * items are all handed out before the first compute item, so a thread waits
 * only for packs still running on another thread, microseconds each).
 * Compared with transpose_in + product + transpose_out this starts the
 * threads once instead of three times and never writes or reads a Yᵀ
 * panel; tile-major order keeps a lane tile's Xᵀ rows in L2 while the
 * tile's rows run.  Block forward, one core (s = 0.9 Sparse Wide, 3238
 * inputs, batch 256, load ~13, process CPU time, medians of 11, interleaved):
 * 9.2-10.2 ms against 16 ms for the three steps (14.2 of them the product,
 * which in block-row order streams all of Xᵀ from L3 for every block-row);
 * 32-lane tiles, whose Xᵀ rows fit L2 with room to spare, measured
 * 11.9-12.7 ms (twice the broadcasts and loop overhead per multiply-add). */
typedef struct {
  bsp_kernels k;
  int64_t rows, cols;
  effml__rows_fn rows_fn;
  void *rows_arg;
  const float *X, *bias;
  int64_t batch, ldb, lanes, tiles, groups, chunks, npack, ncomp;
  int acc;
  float *XT, *Y;
  atomic_llong next, packed;
} ffwd_job;

static void ffwd_worker(void *arg, int64_t b, int64_t e, int32_t w) {
  ffwd_job *j = (ffwd_job *)arg;
  float yt[16 * 64] __attribute__((aligned(64)));
  int ready = 0;
  for (;;) {
    const int64_t s = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
    if (s >= j->npack + j->ncomp) return;
    if (s < j->npack) {
      const int64_t c0 = 64 * s, c1 = c0 + 64 < j->cols ? c0 + 64 : j->cols;
      j->k.pack(j->X, j->batch, j->cols, c0, c1, j->XT, j->ldb);
      atomic_fetch_add_explicit(&j->packed, 1, memory_order_release);
      continue;
    }
    for (int spin = 0; !ready; ++spin) {
      ready = atomic_load_explicit(&j->packed, memory_order_acquire) == j->npack;
      if (!ready && spin >= 256) sched_yield();
    }
    const int64_t it = s - j->npack, tile = it / j->chunks, c = it % j->chunks;
    const int64_t l0 = tile * j->lanes, l1 = l0 + j->lanes < j->ldb ? l0 + j->lanes : j->ldb;
    const int64_t g0 = j->groups * c / j->chunks, g1 = j->groups * (c + 1) / j->chunks;
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t r0 = 16 * g, re = r0 + 16 < j->rows ? r0 + 16 : j->rows;
      j->rows_fn(j->rows_arg, r0, re, l0, l1, yt);
      j->k.out(yt, l0, l1, r0, re - r0, j->batch, j->rows, j->bias, j->acc, j->Y);
    }
  }
}

void effml__sparse_forward_fused(effml_context *ctx, int64_t rows, int64_t cols, int64_t nnz,
                                 int64_t lanes, effml__rows_fn rows_fn, void *rows_arg,
                                 const float *X, int64_t batch, float *XT, int64_t ldb,
                                 const float *bias, int accumulate, float *Y, int isa) {
  if (batch <= 0 || rows <= 0) return;
  ffwd_job j;
  memset(&j, 0, sizeof j);
  j.k = pick(ctx, isa);
  j.rows = rows;
  j.cols = cols;
  j.rows_fn = rows_fn;
  j.rows_arg = rows_arg;
  j.X = X;
  j.bias = bias;
  j.batch = batch;
  j.ldb = ldb;
  j.acc = accumulate;
  j.XT = XT;
  j.Y = Y;
  j.lanes = lanes;
  j.tiles = (ldb + lanes - 1) / lanes;
  j.groups = (rows + 15) / 16;
  j.npack = (cols + 63) / 64;
  /* threads: at least ~64k multiply-adds each (as the other block kernels) */
  int64_t nt = effml__ctx_threads(ctx);
  const double macs = (double)nnz * (double)ldb;
  if ((double)nt > macs / 65536.0) nt = (int64_t)(macs / 65536.0);
  if (nt > 64) nt = 64;
  if (nt < 1) nt = 1;
  /* about 32 compute items per thread; one per tile when single-threaded */
  j.chunks = nt > 1 ? (32 * nt + j.tiles - 1) / j.tiles : 1;
  if (j.chunks > j.groups) j.chunks = j.groups;
  j.ncomp = j.tiles * j.chunks;
  atomic_init(&j.next, 0);
  atomic_init(&j.packed, 0);
  if (nt <= 1)
    ffwd_worker(&j, 0, 1, 0);
  else
    (void)effml__parallel_for(ctx, nt, 1, ffwd_worker, &j);
}

typedef struct {
  bsp_kernels k;
  const effml__spmat *m;
  const float *v, *XT;
  int64_t ldb;
} bgroup_job;

static void bgroup_rows(void *arg, int64_t r0, int64_t re, int64_t l0, int64_t l1, float *yt) {
  const bgroup_job *g = (const bgroup_job *)arg;
  g->k.group(g->m, g->v, g->XT, g->ldb, l0, l1, r0, re, yt);
}

void effml__bspmm_forward(effml_context *ctx, const effml__spmat *m, const float *v,
                          const float *X, int64_t batch, float *XT, int64_t ldb,
                          const float *bias, int accumulate, float *Y, int isa) {
  bgroup_job g = {pick(ctx, isa), m, v, XT, ldb};
  /* a lane tile's Xᵀ rows: at most 1 MiB at 64 lanes, else narrower tiles */
  const int64_t lanes = m->cols <= 4096 ? 64 : m->cols <= 8192 ? 32 : 16;
  effml__sparse_forward_fused(ctx, m->rows, m->cols, m->nnz, lanes, bgroup_rows, &g, X, batch,
                              XT, ldb, bias, accumulate, Y, isa);
}

/* ---------------- dX ---------------- */

typedef struct {
  bsp_kernels k;
  const effml__spmat *m;
  const float *v, *DYT;
  int64_t ldb;
  int acc;
  float *DXT;
} dx_job;

static void dx_range(void *arg, int64_t b, int64_t e, int32_t w) {
  dx_job *j = (dx_job *)arg;
  const effml__spmat *m = j->m;
  const int64_t ldb = j->ldb, l0 = 16 * b, l1 = 16 * e;
  if (!j->acc)
    for (int64_t c = 0; c < m->cols; ++c)
      memset(j->DXT + c * ldb + l0, 0, (size_t)(l1 - l0) * sizeof(float));
  j->k.dx(m, j->v, j->DYT, ldb, l0, l1, j->DXT);
  for (int64_t r = m->rows / 4 * 4; r < m->rows; ++r) /* tail rows, in order */
    for (int64_t p = m->row_ptr[r]; p < m->row_ptr[r + 1]; ++p) {
      float *x = j->DXT + (int64_t)m->col_idx[p] * ldb;
      const float *d = j->DYT + r * ldb, wv = j->v[p];
      for (int64_t l = l0; l < l1; ++l) x[l] += wv * d[l];
    }
}

void effml__bspmm_dx(effml_context *ctx, const effml__spmat *m, const float *v, const float *DYT,
                     int64_t ldb, int accumulate, float *DXT, int isa) {
  dx_job j = {pick(ctx, isa), m, v, DYT, ldb, accumulate, DXT};
  const int64_t items = ldb / 16;
  /* chunks of 4 items = 64 lanes, the widest dX panel */
  effml__sparse_run_chunks(ctx, items, min_items(items, m->nnz, ldb), 4, dx_range, &j);
}

/* ---------------- dW (nonzeros only) ---------------- */

typedef struct {
  bsp_kernels k;
  const effml__spmat *m;
  const float *DYT, *XT;
  int64_t ldb;
  float *g;
  const int32_t *slot;
  int acc;
} dw_job;

static void dw_range(void *arg, int64_t b, int64_t e, int32_t w) {
  dw_job *j = (dw_job *)arg;
  const effml__spmat *m = j->m;
  const int64_t ldb = j->ldb;
  for (int64_t br = b; br < e; ++br) {
    const int64_t r0 = 4 * br;
    if (r0 + 4 <= m->rows) {
      const int64_t p0 = m->row_ptr[r0], n = m->row_ptr[r0 + 1] - p0;
      j->k.dw(n, m->col_idx + p0, j->DYT + r0 * ldb, j->XT, ldb, j->g, j->slot, p0, j->acc);
      continue;
    }
    for (int64_t r = r0; r < m->rows; ++r)
      for (int64_t p = m->row_ptr[r]; p < m->row_ptr[r + 1]; ++p) {
        const float *x = j->XT + (int64_t)m->col_idx[p] * ldb, *d = j->DYT + r * ldb;
        bsp_v16 a = {0};
        for (int64_t l = 0; l < ldb; l += 16) {
          bsp_v16 xv, dv;
          memcpy(&xv, x + l, sizeof xv);
          memcpy(&dv, d + l, sizeof dv);
          a += xv * dv;
        }
        float s = 0.0f;
        for (int q = 0; q < 16; ++q) s += a[q];
        bsp_put(j->g, j->slot, p, j->acc, s);
      }
  }
}

void effml__bsddmm(effml_context *ctx, const effml__spmat *m, const float *DYT, const float *XT,
                   int64_t ldb, float *g, const int32_t *slot, int accumulate, int isa) {
  dw_job j = {pick(ctx, isa), m, DYT, XT, ldb, g, slot, accumulate};
  const int64_t items = (m->rows + 3) / 4;
  effml__sparse_run_chunks(ctx, items, min_items(items, m->nnz, ldb), 0, dw_range, &j);
}

void effml__spmat_mul(effml_context *ctx, const effml__spmat *m, const float *v, const float *XT,
                      int64_t ldb, int accumulate, float *YT) {
  if (m->block == 4)
    effml__bspmm_fwd(ctx, m, v, XT, ldb, accumulate, YT, -1);
  else
    effml__spmm_t(ctx, m->rows, m->row_ptr, m->col_idx, v, XT, ldb, accumulate, YT);
}
