/*
 * Sparse-IFT internals: the compressed sparse matrix every sparse layer is
 * built from (effml__spmat), the kernels on it, and the hooks that let the
 * dynamic-sparse-training code find the matrices inside any sparse layer.
 *
 * Layout (why: docs/sparse.md "Kernel layout"):
 *  - the weight W [rows = out, cols = in] is stored as CSR (row_ptr, col_idx)
 *    plus a CSC copy of the index structure for dX = dY W;
 *  - activations are transposed once per call to "batch-minor" panels
 *    Xᵀ [in, ldb] (ldb = batch rounded up to 16, zero padded), so each
 *    nonzero W[o,i] streams the contiguous batch vector Xᵀ[i, :];
 *  - the trainable values live in a 1-D layer parameter [nnz] in *slot*
 *    order: slot[p] is the value slot of CSR position p.  Slots stay stable
 *    across RigL/SET updates so optimizer state can follow its weight; the
 *    kernels read a packed copy in CSR order when slots are not the identity.
 */
#ifndef EFFML_SPARSE_INTERNAL_H
#define EFFML_SPARSE_INTERNAL_H

#include "../layer/layer_internal.h"

typedef struct effml__spmat {
  int64_t rows, cols, nnz;
  int64_t *row_ptr;   /* [rows + 1] */
  int32_t *col_idx;   /* [nnz], strictly increasing within a row */
  int32_t *slot;      /* [nnz] value slot of CSR position p */
  int32_t identity;   /* slot[p] == p for every p (no packing needed) */
  int32_t block;      /* 1 = unstructured; 4 = 4x1 blocks: the rows of each block-row
                         (rows 4i..4i+3, and the tail rows past the last multiple of 4)
                         share one column list (bspmm.c) */
  int64_t *t_ptr;     /* [cols + 1] CSC column pointers */
  int32_t *t_idx;     /* [nnz] row of CSC entry q */
  int64_t *t_pos;     /* [nnz] CSR position of CSC entry q */
  int32_t param;      /* index of the [nnz] value parameter in the owning layer */
  int32_t dense_grad_on; /* next backward also computes the dense dW (RigL) */
  int32_t dense_grad_valid;
  float *dense_grad;  /* [rows * cols] dY ᵀ X of the last backward when dense_grad_on */
} effml__spmat;

/* ---- matrix structure (spmat.c) ---- */
/* Build from a sorted list of flat positions (row * cols + col), strictly
 * increasing; slots are the identity.  On error nothing is allocated. */
EFFML__HIDDEN effml_status effml__spmat_init_positions(effml_context *ctx, effml__spmat *m,
                                                       int64_t rows, int64_t cols, int64_t nnz,
                                                       const int64_t *pos);
/* Rebuild CSR/CSC from positions with explicit slots (sorted by position). */
EFFML__HIDDEN effml_status effml__spmat_rebuild(effml_context *ctx, effml__spmat *m,
                                                const int64_t *pos, const int32_t *slot);
EFFML__HIDDEN void effml__spmat_free(effml_context *ctx, effml__spmat *m);
/* Exact-count uniform random positions (selection sampling, sorted) from rng. */
EFFML__HIDDEN effml_status effml__random_positions(effml_context *ctx, effml__rng *rng,
                                                   int64_t numel, int64_t nnz, int64_t **out);
/* Values in CSR order (vals[slot[p]]) into buf, or vals itself when identity. */
EFFML__HIDDEN const float *effml__spmat_packed(const effml__spmat *m, const float *vals,
                                               float *buf);
/* Values in CSC order into buf (always packs). */
EFFML__HIDDEN void effml__spmat_packed_t(const effml__spmat *m, const float *vals, float *buf);

/* ---- kernels (spmm.c); all deterministic for any thread count ---- */
/* Xᵀ[c, b] = X[b, c] for b < batch, 0 for batch <= b < ldb.  X [batch, cols]. */
EFFML__HIDDEN void effml__transpose_in(effml_context *ctx, const float *X, int64_t batch,
                                       int64_t cols, float *XT, int64_t ldb);
/* Y[b, r] (+)= Yᵀ[r, b] (+ bias[r]); accumulate != 0 adds into Y. */
EFFML__HIDDEN void effml__transpose_out(effml_context *ctx, const float *YT, int64_t ldb,
                                        int64_t rows, int64_t batch, const float *bias,
                                        int accumulate, float *Y);
/* Yᵀ[r, :] (+)= Σ_p v[p] Xᵀ[idx[p], :] over p in [ptr[r], ptr[r+1]) — CSR
 * SpMM with batch-minor panels.  Used for forward (CSR) and for dXᵀ (CSC). */
EFFML__HIDDEN void effml__spmm_t(effml_context *ctx, int64_t rows, const int64_t *ptr,
                                 const int32_t *idx, const float *v, const float *XT,
                                 int64_t ldb, int accumulate, float *YT);
/* g[p] = ⟨dYᵀ[r, :], Xᵀ[col_idx[p], :]⟩ for every CSR position p (SDDMM). */
EFFML__HIDDEN void effml__sddmm_t(effml_context *ctx, const effml__spmat *m, const float *DYT,
                                  const float *XT, int64_t ldb, float *g);
/* Block-sparse kernels (bspmm.c) for m->block == 4; v in CSR order.
 * forward: Yᵀ (+)= W Xᵀ;  dx: dXᵀ (+)= Wᵀ dYᵀ;  sddmm: the value of CSR position p as
 * effml__sddmm_t, stored (accumulate: added) at g[slot[p]] (slot NULL: g[p]).
 * isa: EFFML_CORE_ISA_* build to use, -1 = the CPU's (tests run each). */
EFFML__HIDDEN void effml__bspmm_fwd(effml_context *ctx, const effml__spmat *m, const float *v,
                                    const float *XT, int64_t ldb, int accumulate, float *YT,
                                    int isa);
/* Rows [r0, re) (re - r0 <= 16) of a product on the lanes [l0, l1) (at most
 * 64) into yt: row r, lane b at yt[(r - r0) * 64 + b - l0]. */
typedef void (*effml__rows_fn)(void *arg, int64_t r0, int64_t re, int64_t l0, int64_t l1,
                               float *yt);
/* Y [batch, rows] (+)= (product)ᵀ (+ bias) with Xᵀ packed from X [batch, cols]
 * into XT [cols, ldb] (zero padded, as effml__transpose_in), all in one
 * parallel call (bspmm.c): pack items, then (lane tile of `lanes` lanes,
 * chunk of 16-row groups) items whose rows rows_fn computes from XT; nnz
 * sizes the thread count; isa as for the block kernels. */
EFFML__HIDDEN void effml__sparse_forward_fused(effml_context *ctx, int64_t rows, int64_t cols,
                                               int64_t nnz, int64_t lanes, effml__rows_fn rows_fn,
                                               void *rows_arg, const float *X, int64_t batch,
                                               float *XT, int64_t ldb, const float *bias,
                                               int accumulate, float *Y, int isa);
/* The same for an unstructured CSR matrix (spmm.c): the bytes of
 * effml__transpose_in + effml__spmm_t + effml__transpose_out at the
 * context's ISA level. */
EFFML__HIDDEN void effml__spmm_forward(effml_context *ctx, const effml__spmat *m, const float *v,
                                       const float *X, int64_t batch, float *XT, int64_t ldb,
                                       const float *bias, int accumulate, float *Y);
/* The whole forward of one 4x1 block matrix in one call (bspmm.c):
 * Xᵀ [cols, ldb] (caller's buffer; ldb >= batch, a multiple of 16) receives
 * X [batch, cols] transposed and zero padded, as effml__transpose_in writes
 * it (the backward reads it), and Y [batch, rows] (+)= W Xᵀ transposed
 * (+ bias [rows] when not NULL), as effml__bspmm_fwd then
 * effml__transpose_out compute it, with the same bytes. */
EFFML__HIDDEN void effml__bspmm_forward(effml_context *ctx, const effml__spmat *m, const float *v,
                                        const float *X, int64_t batch, float *XT, int64_t ldb,
                                        const float *bias, int accumulate, float *Y, int isa);
EFFML__HIDDEN void effml__bspmm_dx(effml_context *ctx, const effml__spmat *m, const float *v,
                                   const float *DYT, int64_t ldb, int accumulate, float *DXT,
                                   int isa);
EFFML__HIDDEN void effml__bsddmm(effml_context *ctx, const effml__spmat *m, const float *DYT,
                                 const float *XT, int64_t ldb, float *g, const int32_t *slot,
                                 int accumulate, int isa);
/* fn over the items [0, items) on up to the context's threads (at least
 * min_per items per thread), handed out in chunks of `chunk` items (0: about
 * 32 chunks per thread) from a shared counter: a thread that starts late or
 * gets less CPU takes fewer chunks.  fn must compute each item's outputs
 * whole, so results do not depend on which thread runs it (bspmm.c). */
EFFML__HIDDEN void effml__sparse_run_chunks(effml_context *ctx, int64_t items, int64_t min_per,
                                            int64_t chunk, effml__range_fn fn, void *arg);
/* min_per for effml__sparse_run_chunks: enough of `items` items (nnz * ldb
 * multiply-adds over all of them) that a thread gets at least `grain`
 * multiply-adds; at least 1. */
static inline int64_t effml__sparse_min_items(int64_t items, int64_t nnz, int64_t ldb,
                                              double grain) {
  double per = items > 0 ? (double)nnz * (double)ldb / (double)items : 1.0;
  double mn = grain / (per > 1.0 ? per : 1.0);
  return mn < 1.0 ? 1 : (int64_t)mn;
}
/* 1 if every block-row of m (block rows each) shares one column list. */
EFFML__HIDDEN int effml__spmat_is_blocked(const effml__spmat *m, int32_t block);
/* Yᵀ (+)= W Xᵀ with the kernel of m's layout (v in CSR order). */
EFFML__HIDDEN void effml__spmat_mul(effml_context *ctx, const effml__spmat *m, const float *v,
                                    const float *XT, int64_t ldb, int accumulate, float *YT);
/* Random block mask: round(nnz / block) blocks of `block` rows x 1 column
 * drawn uniformly (each subset equally likely) from the ceil(rows/block) x
 * cols block grid (tail blocks are rows mod block tall), expanded to sorted
 * element positions; *nnz_out receives the element count. */
EFFML__HIDDEN effml_status effml__random_block_positions(effml_context *ctx, effml__rng *rng,
                                                         int64_t rows, int64_t cols,
                                                         int32_t block, int64_t nnz,
                                                         int64_t **out, int64_t *nnz_out);
/* Reference kernel (row-major, scalar): Y[b, r] = Σ_p v[p] X[b, col[p]] (+ bias). */
EFFML__HIDDEN void effml__spmm_ref(const effml__spmat *m, const float *v, const float *X,
                                   int64_t batch, const float *bias, float *Y);

/* ---- layers: how dst.c and the FLOP counter see inside a sparse layer ---- */
typedef struct effml__sparse_layer {
  int32_t n_mats;
  effml__spmat *mats;     /* [n_mats] */
  int32_t has_bias;
  int32_t bias_param;     /* -1 if none */
  int64_t inner;          /* SF: d; SD: rank; SP: branches */
  int32_t activation;     /* SF */
  int32_t u_param, v_param; /* SD dense factors */
  int64_t dense_in, dense_out; /* the dense layer this block replaces (FLOP budget) */
  int32_t block;          /* layout of the matrices made by effml__sparse_random_matrix */
  /* training state (TRAIN forward -> backward) */
  int64_t ldb, batch;
  float *xt;    /* Xᵀ [in, ldb] */
  size_t xt_cap;
  float *ht;    /* SF: pre-activation Hᵀ [d, ldb]; SD: T = X Uᵀ [batch, rank] */
  size_t ht_cap;
  const float *x; /* SD: borrowed x for dU */
  float *ws[5];   /* training workspaces kept between steps (EFFML__WS_*) */
  size_t ws_cap[5];
} effml__sparse_layer;

#define EFFML__WS_YT 0
#define EFFML__WS_DYT 1
#define EFFML__WS_DXT 2
#define EFFML__WS_NNZ 3
#define EFFML__WS_AUX 4

/* The sparse kinds' ops tables (all with EFFML__KIND_SPARSE). */
EFFML__HIDDEN extern const effml__layer_ops effml__sparse_linear_ops, effml__sparse_wide_ops,
    effml__sparse_parallel_ops, effml__sparse_factorized_ops, effml__sparse_doped_ops;
/* ops->destroy shared by the sparse kinds. */
EFFML__HIDDEN void effml__sparse_destroy(effml_layer *layer);
/* FLOPs of a sparse/dense product with nnz weights and `out` outputs: 2 nnz - out. */
EFFML__HIDDEN double effml__linear_flops(int64_t nnz, int64_t out);

/* The sparse impl of `layer` (a kind with EFFML__KIND_SPARSE), or NULL. */
EFFML__HIDDEN effml__sparse_layer *effml__sparse_of(effml_layer *layer);
/* Register matrix m's [nnz] parameter `name` in layer and fill it with
 * values (CSR order) or with the init rule. */
EFFML__HIDDEN effml_status effml__sparse_add_matrix(effml_context *ctx, effml_layer *layer,
                                                    effml__spmat *m, const char *name,
                                                    const float *values, int32_t init,
                                                    int64_t fan_in);
/* Grow a float workspace to hold n floats (64-byte aligned). */
EFFML__HIDDEN effml_status effml__ws_reserve(effml_context *ctx, float **buf, size_t *cap,
                                             size_t n);
/* Scratch buffer of n floats: in training (persistent != 0) the layer's
 * workspace `slot`, kept and reused across steps; in inference a fresh
 * allocation (inference must not write layer state).  NULL + EFFML_E_NOMEM
 * recorded on failure.  Release with effml__scratch_release. */
EFFML__HIDDEN float *effml__scratch(effml_context *ctx, effml__sparse_layer *s, int persistent,
                                    int slot, size_t n, const char *what);
EFFML__HIDDEN void effml__scratch_release(effml_context *ctx, int persistent, float *p);
/* Validate sparsity in [0, 1) (message names `fn`). */
EFFML__HIDDEN effml_status effml__check_sparsity(effml_context *ctx, const char *fn,
                                                 double sparsity);
/* nnz of a rows x cols matrix at sparsity s: round((1 - s) * numel), error if 0. */
EFFML__HIDDEN effml_status effml__nnz_for(effml_context *ctx, const char *fn, int64_t rows,
                                          int64_t cols, double sparsity, int64_t *nnz);
/* Generic sparse layer builder for the kind `ops` (sparse_layer.c). */
EFFML__HIDDEN effml_status effml__sparse_layer_new(effml_context *ctx,
                                                   const effml__layer_ops *ops, int64_t in,
                                                   int64_t out, int32_t n_mats, int32_t bias,
                                                   effml_layer **out_layer);
/* Backward helper shared by kinds: dense grad into m->dense_grad when armed. */
EFFML__HIDDEN effml_status effml__spmat_dense_grad(effml_context *ctx, effml__spmat *m,
                                                   const float *DYT, const float *XT, int64_t ldb);

/* Read the known prefix of caller options and validate enums. */
EFFML__HIDDEN effml_status effml__sparse_read_options(effml_context *ctx,
                                                      const effml_sparse_options *in,
                                                      effml_sparse_options *o);
/* Random exact-count mask for matrix i of `layer`, registered as `name`. */
EFFML__HIDDEN effml_status effml__sparse_random_matrix(effml_context *ctx, effml_layer *layer,
                                                       int32_t i, int64_t rows, int64_t cols,
                                                       int64_t nnz, const char *name,
                                                       int32_t init, int64_t fan_in);
/* Register and initialise the dense bias [out] when the layer has one. */
EFFML__HIDDEN effml_status effml__sparse_add_bias(effml_context *ctx, effml_layer *layer,
                                                  int64_t out, int64_t fan_in);
/* Nonzero gradients of m (added into its grad slots) and, when armed, dense dW. */
EFFML__HIDDEN effml_status effml__spmat_backward_weight(effml_context *ctx, effml_layer *layer,
                                                        effml__spmat *m, const float *DYT,
                                                        const float *XT, int64_t ldb);
/* (both use the layer's EFFML__WS_NNZ workspace) */
/* dXᵀ (+)= mᵀ dYᵀ through the CSC structure. */
EFFML__HIDDEN effml_status effml__spmat_backward_input(effml_context *ctx, effml_layer *layer,
                                                       const effml__spmat *m, const float *DYT,
                                                       int64_t ldb, int accumulate, float *DXT);
/* db += Σ_b dY[b, :] when the bias is trainable. */
EFFML__HIDDEN void effml__bias_backward(effml_layer *layer, int32_t param, const float *DY,
                                        int64_t batch, int64_t out);

#endif /* EFFML_SPARSE_INTERNAL_H */
