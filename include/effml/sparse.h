/**
 * @file effml/sparse.h
 * @brief Sparse iso-FLOP layers (Sparse-IFT), masks, dynamic sparse training
 *
 * Sparse-IFT (Thangarasa, Saxena, Gupta, Lie, "Sparse Iso-FLOP
 * Transformations for Maximizing Training Efficiency", ICML 2024, arXiv
 * 2303.11525, §2.2 and Fig. 2) replaces a dense layer `y = x Wᵀ + b`,
 * W `[out, in]`, by a *sparse* block that costs the same FLOPs but has more
 * capacity: Sparse Wide (wider, sparser), Sparse Parallel (k sparse branches
 * summed), Sparse Factorized (sparse U then sparse V) and Sparse Doped
 * (sparse W plus a dense low-rank U·V).  Masks evolve during training by
 * dynamic sparse training: RigL (Evci et al., ICML 2020) or SET (Mocanu et
 * al., Nat. Commun. 2018).  Unlike the reference code, which multiplies
 * masked dense matrices, libeffml stores the nonzeros (CSR + CSC) and
 * computes on them only (docs/sparse.md).
 *
 * Every block is an `effml_layer` with the dense layer's convention (x
 * `[batch, in]` → y `[batch, out]`, f32).  The nonzero values of each sparse
 * matrix are one trainable 1-D parameter `[nnz]` ("weight", or
 * "branchK.weight", "u.weight", "v.weight"), so the generic optimizers train
 * them; dense parts ("bias", Doped "u"/"v") are ordinary parameters.
 *
 * @code
 *   effml_sparse_options so;  effml_sparse_options_init(&so);  so.sparsity = 0.9;
 *   effml_layer *fc;  effml_sparse_wide_create(ctx, 1024, 1024, &so, &fc);  // 3238 x 3238, 10 % dense
 *   effml_layer_forward(ctx, fc, x, y, EFFML_LAYER_MODE_TRAIN);   // x [batch, 3238]
 *   effml_dst_options d;  effml_dst_options_init(&d);  d.total_steps = 10000;
 *   effml_dst *rigl;  effml_dst_create(ctx, model, optimizer, &d, &rigl);  // fit's step_hook: effml_dst_step_hook
 * @endcode
 *
 * Checkpoints: effml_layer_save()/effml_layer_load() store the `[nnz]` values
 * in slot order but not the mask, so they restore a layer only into one with
 * the same mask (built from the same CSR, or from the same seed before any
 * RigL/SET update).  To keep a trained mask, save the dense matrix from
 * effml_sparse_matrix_to_dense() and rebuild with
 * effml_sparse_linear_create_masked().
 *
 * Threads: as every layer (layer.h): one thread at a time; inference
 * (EFFML_LAYER_MODE_INFER) only reads the layer and allocates its workspaces per
 * call, so several threads may share a layer for inference, each with its own
 * context.  The kernels use the context's thread count (effml_context_set_num_threads)
 * and give bit-identical results for every thread count.  Randomness (masks,
 * initial values, SET regrowth) comes from the context's generator or the
 * documented seed, so the same seed gives the same masks and updates.
 */
#ifndef EFFML_SPARSE_H
#define EFFML_SPARSE_H

#include "core.h"
#include "tensor.h"
#include "layer.h"
#include "optim.h"

EFFML_BEGIN_DECLS

/* ======================================================================
 * Options shared by the sparse layer constructors
 * ====================================================================== */

/** Value initialisation of the nonzeros (drawn in CSR order from the context generator). */
#define EFFML_SPARSE_INIT_UNIFORM 0  /**< U(-1/√in, 1/√in): PyTorch nn.Linear's default on the dense matrix, then masked */
#define EFFML_SPARSE_INIT_KAIMING_NORMAL 1 /**< N(0, √(2/out)): Sparse-IFT's kaiming_normal(fan_out, relu), then masked, no density rescaling (§2.3) */

/** Nonlinearity between U and V of Sparse Factorized. */
#define EFFML_LAYER_ACT_IDENTITY 0
#define EFFML_LAYER_ACT_RELU 1

/** Which sides Sparse Wide widens. */
#define EFFML_SPARSE_WIDEN_IN 1u
#define EFFML_SPARSE_WIDEN_OUT 2u

#ifdef EFFML_EXPERIMENTAL
/** [experimental tier] Sizing flag: reproduce the reference code's float rounding (e.g. 577 instead of 576). */
#define EFFML_SPARSE_COMPAT_FLOAT 1u
#endif

/**
 * Options of the sparse layer constructors.  Fill with
 * effml_sparse_options_init(); fields are only ever added at the end.
 */
typedef struct effml_sparse_options {
  uint32_t struct_size; /**< sizeof(effml_sparse_options), set by _init */
  double sparsity;      /**< fraction of zeros s in [0, 1) (default 0.9) */
  int64_t nnz;          /**< effml_sparse_linear_create only: exact nonzero count (e.g. from ERK); 0 = (1-s)·in·out rounded half up, 1-s read as p/10^9 (default 0) */
  int32_t bias;         /**< 1 = add a dense bias [out] (default 1) */
  int32_t init;         /**< EFFML_SPARSE_INIT_* (default UNIFORM) */
  int32_t activation;   /**< Sparse Factorized: EFFML_LAYER_ACT_* between U and V (default RELU, the released nonlinear_relu) */
  uint32_t widen;       /**< Sparse Wide: EFFML_SPARSE_WIDEN_* sides to widen (default both) */
  /** Mask layout: 1 = unstructured (default); 4 = block-sparse, whole blocks of
   * 4 consecutive outputs x 1 input.  Random masks draw round(nnz/4) blocks
   * uniformly from the ceil(out/4) x in block grid (the last block-row is out
   * mod 4 tall when out is not a multiple of 4), so nnz is that many blocks'
   * elements; RigL/SET drop and grow whole blocks; the kernels reuse every
   * loaded activation vector for 4 outputs (docs/sparse.md "Block-sparse
   * layout"; block shape as in Elsen, Dukhan, Gale, Simonyan, "Fast Sparse
   * ConvNets", CVPR 2020, arXiv 1911.09723, §3).  For
   * effml_sparse_linear_create_masked/_csr the given mask must already be
   * made of such blocks (EFFML_E_INVALID_ARG names the first row that differs
   * from its block-row); with `nnz` set, nnz is rounded to whole blocks. */
  int32_t block_rows;
} effml_sparse_options;

/** Fill `opt` with the defaults above (struct_size set).  NULL is ignored. */
EFFML_API void effml_sparse_options_init(effml_sparse_options *opt);

/* ======================================================================
 * Sparse linear layer (CSR)
 * ====================================================================== */

/**
 * Sparse linear layer y = x Wᵀ + b with an unstructured mask of exactly
 * `opt->nnz` (or round((1-s)·in·out)) nonzeros, chosen uniformly at random
 * from the context's generator (each subset of that size equally likely),
 * then values by `opt->init`, then the bias U(-1/√in, 1/√in).
 * @param in_features, out_features  W is `[out_features, in_features]`, each in [1, 2^31-1]
 * @param opt  NULL for defaults
 * @param out  receives the layer (kind "sparse_linear"), owned by the caller
 * @return EFFML_E_INVALID_ARG (sizes, sparsity outside [0,1) or NaN, nnz < 0
 *         or > in·out, zero nonzeros), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_sparse_linear_create(effml_context *ctx, int64_t in_features,
                                                  int64_t out_features,
                                                  const effml_sparse_options *opt,
                                                  effml_layer **out);

/**
 * Sparse linear layer from a dense mask.
 * @param mask    `[out, in]`, dtype u8, bool, i32 or f32: nonzero = kept; at least one entry kept
 * @param weight  f32 `[out, in]` whose masked entries become the values, or NULL (init rule of opt)
 * @param opt     NULL for defaults (sparsity and nnz are ignored: the mask decides)
 * @return EFFML_E_SHAPE (mask or weight not 2-D, weight shape differs from mask),
 *         EFFML_E_DTYPE, EFFML_E_INVALID_ARG (empty mask), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_sparse_linear_create_masked(effml_context *ctx,
                                                         const effml_tensor *mask,
                                                         const effml_tensor *weight,
                                                         const effml_sparse_options *opt,
                                                         effml_layer **out);

/**
 * Sparse linear layer from a caller's CSR matrix (copied).
 * @param row_ptr  `out_features + 1` offsets, row_ptr[0] = 0, non-decreasing, row_ptr[out] = nnz
 * @param col_idx  `nnz` column indices, in [0, in_features), strictly increasing within a row
 * @param values   `nnz` values in the same order, or NULL (init rule of opt)
 * @return EFFML_E_INVALID_ARG (message names the first bad entry: index out of
 *         range, unsorted or duplicate column, bad row_ptr, nnz < 1), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_sparse_linear_create_csr(effml_context *ctx, int64_t in_features,
                                                      int64_t out_features, int64_t nnz,
                                                      const int64_t *row_ptr,
                                                      const int32_t *col_idx,
                                                      const float *values,
                                                      const effml_sparse_options *opt,
                                                      effml_layer **out);

/**
 * Number of stored nonzeros of all sparse matrices in `layer` (recursing into
 * sequential containers; dense layers count 0).  Exact after masks and after
 * every RigL/SET update.  0 for NULL.
 */
EFFML_API int64_t effml_sparse_nnz(const effml_layer *layer);

/**
 * Number of sparse matrices in a sparse layer (1 for linear/wide, k for
 * parallel, 2 for factorized, 1 for doped), 0 for any other layer.
 */
EFFML_API int32_t effml_sparse_num_matrices(const effml_layer *layer);

/**
 * Shape of sparse matrix `m` of a sparse layer: rows (its output width) and
 * cols (its input width).
 * @return EFFML_E_INVALID_ARG (not a sparse layer, m out of range, NULL out-pointers).
 */
EFFML_API effml_status effml_sparse_matrix_shape(effml_context *ctx, const effml_layer *layer,
                                                 int32_t m, int64_t *rows, int64_t *cols);

/**
 * Write sparse matrix `m` of a sparse layer as a dense masked matrix.
 * @param dense  f32 `[rows, cols]` contiguous, overwritten (zeros off the mask)
 * @return EFFML_E_INVALID_ARG, EFFML_E_SHAPE, EFFML_E_DTYPE.
 */
EFFML_API effml_status effml_sparse_matrix_to_dense(effml_context *ctx, const effml_layer *layer,
                                                    int32_t m, effml_tensor *dense);

/**
 * Write the gradient of sparse matrix `m` accumulated since the last
 * zero_grad, as a dense `[rows, cols]` matrix that is zero off the mask
 * (what a masked-dense implementation would report).
 */
EFFML_API effml_status effml_sparse_matrix_grad_to_dense(effml_context *ctx,
                                                         const effml_layer *layer, int32_t m,
                                                         effml_tensor *dense);

/**
 * Ask every following backward() of `layer` (all its sparse matrices,
 * recursing into containers) to also compute the *dense* weight gradient
 * dW = dYᵀ X `[rows, cols]` (one GEMM per matrix), which RigL's growth needs
 * every ΔT steps (Evci et al. 2020, §3).  on = 0 stops and frees it.
 * @return EFFML_E_INVALID_ARG, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_sparse_request_dense_grad(effml_context *ctx, effml_layer *layer,
                                                       int32_t on);

/**
 * Copy the dense weight gradient of matrix `m` from the last backward after
 * effml_sparse_request_dense_grad().
 * @param dense  f32 `[rows, cols]` contiguous
 * @return EFFML_E_STATE (none computed since the request or since the last mask update).
 */
EFFML_API effml_status effml_sparse_dense_grad(effml_context *ctx, const effml_layer *layer,
                                               int32_t m, effml_tensor *dense);

/* ======================================================================
 * Iso-FLOP transformations (Thangarasa et al. 2024, arXiv 2303.11525, §2.2, Fig. 2)
 * ====================================================================== */

/**
 * Sparse Wide sizing: each widened side becomes floor(width·√(1/(1-s)))
 * (the reference code's int(64·√k)), so (1-s)·k_sw² = 1.
 * @param wide_in, wide_out  receive the widened sizes (a side not in `widen` keeps its size)
 * @return EFFML_E_INVALID_ARG (sparsity, sizes < 1, NULL).
 */
EFFML_API effml_status effml_sparse_wide_dims(effml_context *ctx, int64_t in_features,
                                              int64_t out_features, double sparsity,
                                              uint32_t widen, int64_t *wide_in,
                                              int64_t *wide_out);

/**
 * Sparse Wide block replacing a dense `[out, in]` layer: a sparse linear
 * layer of the widened shape (effml_sparse_wide_dims with opt->widen) holding
 * exactly in·out nonzeros, so its FLOPs equal the dense layer's exactly
 * (its realised sparsity is 1 - in·out/(wide_in·wide_out) ≈ s).
 * Its in_features/out_features are the widened sizes.  Kind "sparse_wide".
 */
EFFML_API effml_status effml_sparse_wide_create(effml_context *ctx, int64_t in_features,
                                                int64_t out_features,
                                                const effml_sparse_options *opt,
                                                effml_layer **out);

/** Sparse Parallel sizing: k = round(1/(1-s)) branches (exact rational, so s = 0.99 gives 100). */
EFFML_API effml_status effml_sparse_parallel_branches(effml_context *ctx, double sparsity,
                                                      int64_t *branches);

/**
 * Sparse Parallel block y = Σ_{i<k} W_i x + b, k = round(1/(1-s)), each W_i
 * `[out, in]` with its own random mask; the branches hold in·out nonzeros in
 * total (round(in·out/k) each, the remainder spread over the first
 * branches), so FLOPs equal the dense layer's.  Parameters "branch0.weight",
 * ..., "bias".  Kind "sparse_parallel".
 */
EFFML_API effml_status effml_sparse_parallel_create(effml_context *ctx, int64_t in_features,
                                                    int64_t out_features,
                                                    const effml_sparse_options *opt,
                                                    effml_layer **out);

/**
 * Sparse Factorized inner width d = ⌈κ·in·out / ((1-s)(κ·in + out))⌉ with
 * kernel area κ (1 for a linear layer, 9 for a 3×3 convolution), computed
 * with exact rationals (1-s is taken as the nearest p/10^9): 3×3 64→64 at
 * s = 0.9 gives 576.  EFFML_SPARSE_COMPAT_FLOAT reproduces the reference
 * code's double rounding (577).
 */
EFFML_API effml_status effml_sparse_factorized_dim(effml_context *ctx, int64_t in_features,
                                                   int64_t out_features, double sparsity,
                                                   int64_t kernel_area, uint32_t flags,
                                                   int64_t *dim);

/**
 * Sparse Factorized block y = V σ(U x) + b, U `[d, in]` and V `[out, d]`
 * each at sparsity s (round((1-s)·numel) nonzeros), d from
 * effml_sparse_factorized_dim (κ = 1), σ = opt->activation.  Parameters
 * "u.weight", "v.weight", "bias".  Kind "sparse_factorized".
 */
EFFML_API effml_status effml_sparse_factorized_create(effml_context *ctx, int64_t in_features,
                                                      int64_t out_features,
                                                      const effml_sparse_options *opt,
                                                      effml_layer **out);

/**
 * Sparse Doped rank r = ⌊s·κ·in·out / (κ·in + out)⌋ (exact rationals;
 * COMPAT_FLOAT as above), so (1-s)·in·out + r(in + out) ≤ in·out.
 */
EFFML_API effml_status effml_sparse_doped_rank(effml_context *ctx, int64_t in_features,
                                               int64_t out_features, double sparsity,
                                               int64_t kernel_area, uint32_t flags,
                                               int64_t *rank);

/**
 * Sparse Doped block y = x W_sᵀ + (x Uᵀ) Vᵀ + b: W_s `[out, in]` sparse at s,
 * U `[r, in]` and V `[out, r]` dense (libeffml keeps them dense, as the
 * derivation says; Thangarasa et al. 2024, arXiv 2303.11525, §2.2), r from effml_sparse_doped_rank (κ = 1).
 * U, V ~ U(-1/√fan_in, 1/√fan_in).  Parameters "weight", "u", "v", "bias".
 * Kind "sparse_doped".
 * @return as effml_sparse_linear_create, plus EFFML_E_INVALID_ARG when the
 *         rank is 0 (zero-width low-rank part: raise s or the widths).
 */
EFFML_API effml_status effml_sparse_doped_create(effml_context *ctx, int64_t in_features,
                                                 int64_t out_features,
                                                 const effml_sparse_options *opt,
                                                 effml_layer **out);

/**
 * Forward FLOPs per sample of `layer` (recursing into sequential containers),
 * with the Sparse-IFT profiler's rules (Thangarasa et al. 2024, arXiv 2303.11525, App. on FLOPs), adds and multiplies
 * counted separately: a linear map with nnz stored weights and `out` outputs
 * costs 2·nnz - out (nnz multiplies, nnz - out adds; a dense layer has
 * nnz = in·out), plus `out` for a bias, `(k-1)·out` for summing k parallel
 * branches, and 1 per element for an activation layer or SF's ReLU.
 * Dense ("dense") and activation layers are understood; other kinds give
 * EFFML_E_UNSUPPORTED.
 */
EFFML_API effml_status effml_sparse_count_flops(effml_context *ctx, const effml_layer *layer,
                                                double *flops);

/* ======================================================================
 * Masks
 * ====================================================================== */

/**
 * Uniform random mask with exactly round((1-s)·numel) ones (≥ 1), drawn from
 * the context's generator by selection sampling (every subset of that size
 * equally likely).
 * @param mask  u8 or bool `[rows, cols]`, contiguous, overwritten with 0/1
 * @return EFFML_E_INVALID_ARG (sparsity, zero ones), EFFML_E_DTYPE, EFFML_E_SHAPE.
 */
EFFML_API effml_status effml_sparse_mask_uniform(effml_context *ctx, double sparsity,
                                                 effml_tensor *mask);

/**
 * Erdős–Rényi-Kernel distribution of nonzeros over layers (Evci et al. 2020,
 * §3, google-research/rigl sparse_utils.get_sparsities_erdos_renyi):
 * density_l = ε·((rows_l + cols_l)/(rows_l·cols_l))^power_scale with ε
 * chosen so Σ nnz_l = round((1-s)·Σ numel_l) *exactly*; layers whose density
 * would exceed 1 are made dense and ε re-solved.  Integer counts take the
 * floor, then the remainder goes one by one to the largest fractional parts
 * (ties: lower layer index).
 * @param rows, cols   `n_layers` weight shapes `[out, in]`
 * @param power_scale  1.0 for ERK (> 0)
 * @param nnz          receives `n_layers` exact counts (each in [1, numel_l])
 * @return EFFML_E_INVALID_ARG (sparsity, n_layers < 1, sizes < 1, a layer left with 0).
 */
EFFML_API effml_status effml_sparse_erk(effml_context *ctx, int32_t n_layers,
                                        const int64_t *rows, const int64_t *cols,
                                        double sparsity, double power_scale, int64_t *nnz);

/* ======================================================================
 * Dynamic sparse training: RigL and SET
 * ====================================================================== */

typedef struct effml_dst effml_dst;

#define EFFML_SPARSE_DST_RIGL 0   /**< regrow where |dense gradient| is largest (Evci et al. 2020) */
#define EFFML_SPARSE_DST_SET 1    /**< regrow at uniformly random positions (Mocanu et al. 2018) */
#define EFFML_SPARSE_DST_STATIC 2 /**< never update (static sparse training) */

#define EFFML_SPARSE_DST_DECAY_COSINE 0   /**< α(t) = α0·(1 + cos(π(t - begin)/(end - begin)))/2 */
#define EFFML_SPARSE_DST_DECAY_CONSTANT 1 /**< α(t) = α0 */

/** Options of effml_dst_create(); fill with effml_dst_options_init(). */
typedef struct effml_dst_options {
  uint32_t struct_size;   /**< sizeof(effml_dst_options), set by _init */
  int32_t method;         /**< EFFML_SPARSE_DST_* (default RIGL) */
  int64_t delta_t;        /**< update interval ΔT in steps, >= 1 (default 100) */
  double drop_fraction;   /**< α0 in (0, 1] (default 0.3) */
  int32_t decay;          /**< EFFML_SPARSE_DST_DECAY_* (default COSINE) */
  int64_t total_steps;    /**< training steps planned, >= 1 (required; default 0 = invalid) */
  double end_fraction;    /**< updates stop at end = floor(end_fraction·total_steps), in (0, 1] (default 0.75) */
  int64_t begin_step;     /**< updates start after this step (default 0) */
  uint64_t seed;          /**< SET's regrowth scores: stream (seed, update, matrix) (default 0) */
} effml_dst_options;

/** Fill `opt` with the defaults above.  NULL is ignored. */
EFFML_API void effml_dst_options_init(effml_dst_options *opt);

/**
 * Dynamic-sparse-training controller over every sparse matrix of `model`
 * (recursing into sequential containers).  Steps are counted by
 * effml_dst_step(): step t (1-based) updates the masks iff
 * begin < t < end and t mod ΔT = 0 (cbsparse DynamicMaskOptimizer).  Per
 * matrix: drop n = ⌊α(t)·nnz⌋ active weights of smallest |w| (ties: lower
 * flat index), then grow n positions outside the remaining mask with the
 * largest score — |dense gradient| (RigL) or U(0,1) (SET) — ties to the lower
 * flat index.  A just-dropped weight may be regrown and keeps its value and
 * optimizer state; new connections start at 0 with zero gradient and, when
 * `optimizer` is given, zeroed optimizer state (effml_optimizer_reset_state).
 * nnz is unchanged.  For RigL the controller requests the dense gradient for
 * exactly the backward passes that precede an update.
 * @param model      borrowed; must outlive the controller and keep its layers
 * @param optimizer  borrowed, may be NULL (then no state reset)
 * @return EFFML_E_INVALID_ARG (bad options, no sparse matrix in model), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_dst_create(effml_context *ctx, effml_layer *model,
                                        effml_optimizer *optimizer,
                                        const effml_dst_options *opt, effml_dst **out);

/** Free the controller (not the model).  NULL is a no-op. */
EFFML_API void effml_dst_free(effml_dst *dst);

/**
 * Count one training step; call after backward and before the optimizer step.
 * @param updated  NULL, or receives 1 if the masks were updated at this step
 * @return EFFML_E_STATE (an update is due but the dense gradient is missing;
 *         nothing changed), EFFML_E_NOMEM (matrices are updated one at a
 *         time, each all-or-nothing, so some may already carry their new
 *         mask; nnz stays exact either way).
 */
EFFML_API effml_status effml_dst_step(effml_context *ctx, effml_dst *dst, int32_t *updated);

/**
 * effml_train_options.step_hook adapter: `user_data` is the effml_dst; calls
 * effml_dst_step with the context given to effml_dst_create and returns
 * nonzero on error (which stops effml_train_classifier with EFFML_E_STATE).
 */
EFFML_API int32_t effml_dst_step_hook(void *user_data, int64_t step);

/** Steps counted so far and mask updates done so far (0 for NULL). */
EFFML_API int64_t effml_dst_steps(const effml_dst *dst);
EFFML_API int64_t effml_dst_updates(const effml_dst *dst);

/** Drop fraction α(t) that an update at step t would use (0 outside (begin, end)). */
EFFML_API double effml_dst_drop_fraction(const effml_dst *dst, int64_t step);

#ifdef EFFML_EXPERIMENTAL
/**
 * [experimental tier: define EFFML_EXPERIMENTAL; version node EFFML_EXPERIMENTAL_0.2]
 * Average training FLOPs per sample-step of a RigL run (Sparse-IFT
 * relative_flops_utils): during the update phase
 * (3·f_s·ΔT + 2·f_s + f_D)/(ΔT + 1), afterwards 3·f_s, weighted by
 * end_fraction; static sparse or dense training is 3·f.
 * @param fwd_sparse  forward FLOPs per sample of the sparse model (f_s)
 * @param fwd_dense   forward FLOPs per sample of its dense counterpart with the same shapes (f_D)
 * @param delta_t     ΔT >= 1; 0 means static (no RigL overhead)
 */
EFFML_API effml_status effml_dst_training_flops(effml_context *ctx, double fwd_sparse,
                                                double fwd_dense, int64_t delta_t,
                                                double end_fraction, double *flops);
#endif /* EFFML_EXPERIMENTAL */

EFFML_END_DECLS

#endif /* EFFML_SPARSE_H */
