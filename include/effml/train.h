/**
 * @file effml/train.h
 * @brief Training: softmax cross-entropy, the classifier training loop, batched inference.
 *
 * Softmax cross-entropy (PyTorch `nn.CrossEntropyLoss`), a classifier
 * training loop and batched inference over any `effml_layer` (layer.h) with
 * an `effml_optimizer` (optim.h).  Where we differ from PyTorch it is said
 * below and in docs/training.md.
 *
 * @code
 *   effml_layer *m;  effml_layer_sequential_create(ctx, &m);
 *   effml_layer *l;  effml_layer_dense_create(ctx, 784, 10, 1, &l);  effml_layer_sequential_add(ctx, m, l);
 *   effml_optimizer_options o;  effml_optimizer_options_init(&o);   // AdamW, lr 1e-3
 *   effml_optimizer *opt;  effml_optimizer_create(ctx, &o, &opt);  effml_optimizer_add_layer(ctx, opt, m);
 *   effml_train_options f;  effml_train_options_init(&f);  effml_train_classifier(ctx, m, opt, x, y, &f, NULL);
 * @endcode
 *
 * Threads: one thread at a time per model and optimizer.  Matrix work goes
 * through CBLAS, whose thread count the caller sets (OPENBLAS_NUM_THREADS);
 * libeffml never changes it.
 */
#ifndef EFFML_TRAIN_H
#define EFFML_TRAIN_H

#include "core.h"
#include "tensor.h"
#include "layer.h"
#include "optim.h"

EFFML_BEGIN_DECLS

/* ---- loss ---- */

/**
 * Softmax cross-entropy, mean over the batch (PyTorch
 * `nn.CrossEntropyLoss()` with reduction "mean"):
 * loss = (1/b) Σ_i [logsumexp(z_i) - z_i,y_i], computed with the max
 * subtracted and accumulated in f64.
 * @param logits  f32 `[b, c]`, contiguous, every value finite
 * @param labels  i32 or i64 `[b]`, each in [0, c)
 * @param loss    receives the mean loss
 * @param dlogits NULL, or f32 `[b, c]` contiguous to overwrite with
 *                dL/dz = (softmax(z) - onehot(y)) / b; may be `logits`
 * @return EFFML_E_INVALID_ARG (NULL), EFFML_E_DTYPE, EFFML_E_SHAPE,
 *         EFFML_E_RANGE (a label outside [0, c); the message names the row
 *         and value), EFFML_E_NUMERIC (NaN or inf in logits; names row and
 *         column).  On error *loss and dlogits are untouched.
 */
EFFML_API effml_status effml_train_softmax_cross_entropy(effml_context *ctx, const effml_tensor *logits,
                                                   const effml_tensor *labels, double *loss,
                                                   effml_tensor *dlogits);

/** Reductions of the weighted cross-entropy (w_i = sample weight x class weight of y_i). */
#define EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN 0 /**< Σ_i w_i ℓ_i / Σ_i w_i over the batch: PyTorch `CrossEntropyLoss(weight=...)` with reduction "mean" */
#define EFFML_TRAIN_REDUCTION_MEAN 1          /**< Σ_i w_i ℓ_i / b: the weights are taken as given (normalise them to mean 1 over the data) */

/**
 * Weighted softmax cross-entropy.  Row i has weight
 * w_i = sample_weight[i] · class_weight[y_i] (the two multiply, as in
 * scikit-learn's `sample_weight` with `class_weight`; a NULL vector counts
 * as all ones) and loss ℓ_i = logsumexp(z_i) − z_i,y_i (max subtracted,
 * accumulated in f64).
 *
 * - EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN: L = Σ w_i ℓ_i / Σ w_i, PyTorch's
 *   `nn.CrossEntropyLoss(weight=class_weight)` (mean) with the sample
 *   weights folded in.  The denominator depends on the batch, so the
 *   expected batch gradient is not the full-data weighted gradient.
 * - EFFML_TRAIN_REDUCTION_MEAN: L = Σ w_i ℓ_i / b.  With weights of mean 1
 *   over the whole training set this is an unbiased estimate of the
 *   full-data loss (1/N) Σ w_i ℓ_i; it is the reduction under which
 *   upweighting by effml_train_scalarization_weights() has exactly the
 *   expected gradient of temperature sampling (docs/training.md).
 *
 * Without weights both reduce to effml_train_softmax_cross_entropy().
 * @param logits         f32 `[b, c]`, contiguous, finite
 * @param labels         i32 or i64 `[b]` in [0, c)
 * @param sample_weight  NULL or f32/f64 `[b]` (any stride), each finite and >= 0
 * @param class_weight   NULL or f32/f64 `[c]` (any stride), each finite and >= 0
 * @param reduction      EFFML_TRAIN_REDUCTION_*
 * @param loss           receives L
 * @param dlogits        NULL, or f32 `[b, c]` contiguous to overwrite with
 *                       dL/dz_ij = w_i (softmax(z_i)_j − [j = y_i]) / D,
 *                       D the denominator above; may be `logits`
 * @return EFFML_E_INVALID_ARG (NULL, unknown reduction, a negative or
 *         non-finite weight, WEIGHTED_MEAN with Σ w_i = 0: PyTorch returns
 *         NaN there), EFFML_E_DTYPE, EFFML_E_SHAPE, EFFML_E_RANGE (label),
 *         EFFML_E_NUMERIC (non-finite logit).  On error nothing is written.
 * Thread-safety: reentrant.
 */
EFFML_API effml_status effml_train_softmax_cross_entropy_weighted(
    effml_context *ctx, const effml_tensor *logits, const effml_tensor *labels,
    const effml_tensor *sample_weight, const effml_tensor *class_weight, int32_t reduction,
    double *loss, effml_tensor *dlogits);

/**
 * scikit-learn's `class_weight="balanced"`:
 * weights[k] = n / (num_classes · n_k), n_k the number of labels equal to k
 * (`sklearn.utils.class_weight.compute_class_weight`).  Over the data these
 * weights have mean 1 (Σ_k n_k weights[k] = n).
 * @param labels       i32/i64 `[n]`, n >= 1, contiguous, each in [0, num_classes)
 * @param num_classes  >= 1
 * @param weights      receives `[num_classes]` (caller memory)
 * @return EFFML_E_INVALID_ARG (NULL, num_classes < 1, a class with no
 *         label: scikit-learn raises there too), EFFML_E_DTYPE,
 *         EFFML_E_SHAPE (empty), EFFML_E_RANGE (a label), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_train_class_weight_balanced(effml_context *ctx,
                                                         const effml_tensor *labels,
                                                         int64_t num_classes, double *weights);

/**
 * Scalarization (upweighting) weights of Li, Xu, Tan, Murray & Khashabi,
 * "Upsample or Upweight? Balanced Training on Heavily Imbalanced Datasets"
 * (NAACL 2025, arXiv 2410.04579): the loss weight of source (class)
 * k at temperature T is
 *   w_k = q_k N / n_k ∝ n_k^(1/T − 1),  q = effml_sampler_temperature_probs(n, T),
 * N = Σ n_k, so that Σ_k n_k w_k / N = 1 (mean 1 over the data).  Under
 * uniform sampling with EFFML_TRAIN_REDUCTION_MEAN the expected batch
 * gradient Σ_k (n_k/N) w_k ḡ_k equals Σ_k q_k ḡ_k, the expected gradient of
 * temperature sampling at T (ḡ_k the mean gradient of source k): upsampling
 * and upweighting differ only in their gradient noise.  T = 1 gives all
 * ones; T = ∞ gives N / (K' n_k) (K' sources with n_k > 0), which equals
 * effml_train_class_weight_balanced().  Sources with n_k = 0 get weight 0.
 * @param sizes        `[n_sources]` sizes n_k >= 0, finite, sum > 0
 * @param temperature  T > 0 (INFINITY allowed)
 * @param weights      receives `[n_sources]` (caller memory)
 * @return as effml_sampler_temperature_probs(), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_train_scalarization_weights(effml_context *ctx, const double *sizes,
                                                         int64_t n_sources, double temperature,
                                                         double *weights);

/* ---- training loop ---- */


/** Progress callback: epoch (0-based), step (1-based: steps done in this effml_train_classifier call, restarting at each call, skipped zero-weight batches included; not the optimizer's count), mean loss over the steps since the last call that had a loss (NaN if none had: every one was a skipped zero-weight batch). */
typedef void (*effml_train_progress_fn)(void *user_data, int64_t epoch, int64_t step, double loss);

struct effml_sampler_temperature_schedule; /* sampler.h */

/** Options of effml_train_classifier().  Fill with effml_train_options_init(); fields only grow at the end. */
typedef struct effml_train_options {
  uint32_t struct_size;           /**< sizeof(effml_train_options), set by _init */
  int64_t epochs;                 /**< >= 1 (default 1) */
  int64_t batch_size;             /**< >= 1 (default 128); the last batch of an epoch may be smaller */
  uint64_t shuffle_seed;          /**< epoch e visits the rows in a permutation drawn from (shuffle_seed, e) */
  effml_train_progress_fn progress;     /**< NULL: no progress reports */
  void *progress_user_data;       /**< passed to progress */
  int64_t progress_every;         /**< report every this many steps; 0 = once per epoch (default 0) */
  /** Called after backward, before clipping and the optimizer step (e.g. RigL/SET mask updates); nonzero return aborts fit with EFFML_E_STATE. */
  int32_t (*step_hook)(void *user_data, int64_t step);
  void *step_hook_user_data;      /**< passed to step_hook */
  double clip_norm;               /**< > 0: effml_optimizer_clip_grad_norm() before each step; 0 = off */
  /* ---- weighted loss (0.2): all NULL/0 trains with effml_train_softmax_cross_entropy() as before ---- */
  const effml_tensor *sample_weight; /**< NULL, or f32/f64 `[n]` per-row weights (finite, >= 0; borrowed for the call) */
  const effml_tensor *class_weight;  /**< NULL, or f32/f64 `[c]` per-class weights (finite, >= 0; borrowed) */
  int32_t class_weight_balanced;     /**< nonzero: also multiply by effml_train_class_weight_balanced() of `labels` (scikit-learn "balanced") */
  int32_t reduction;                 /**< EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN (default, PyTorch) or _MEAN (row weights divided by their mean over the data at each step) */
  /** NULL, or scalarization (Li et al. 2025): class weights effml_train_scalarization_weights(class sizes of `labels`, T(step)) with T from this schedule at the call's step count (0-based); the upweighting twin of temperature sampling with the same schedule (e.g. Cooldown).  Borrowed for the call. */
  const struct effml_sampler_temperature_schedule *scalarization;
} effml_train_options;

/** Fill `opt` with defaults (1 epoch, batch 128, seed 0, no progress, no hook, no clipping).  NULL is ignored. */
EFFML_API void effml_train_options_init(effml_train_options *opt);

/**
 * Train a classifier with softmax cross-entropy: for each epoch, for each
 * batch of a seeded permutation: forward (train mode), loss, zero the
 * model's gradients, backward, step_hook, clipping, optimizer step.
 * Workspaces are allocated once per call.
 * Weighted loss: when any of fit->sample_weight, class_weight,
 * class_weight_balanced, scalarization is set, the loss is
 * effml_train_softmax_cross_entropy_weighted() with row weight
 * w_i = sample_weight[i] · class_weight[y_i] · balanced[y_i] · scalarization[y_i](step)
 * (absent factors are 1) and fit->reduction; under
 * EFFML_TRAIN_REDUCTION_MEAN the w_i are divided by their mean over all n
 * rows (recomputed when the scalarization temperature changes), so
 * L = Σ_batch w_i ℓ_i / b estimates the full-data weighted mean loss without bias.
 * Zero weights are allowed.  Under EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN a
 * batch whose weights sum to 0 has no loss and no gradient and is skipped:
 * no forward, no step_hook, no clipping, no optimizer step (so the
 * optimizer's step count, momenta and weight decay do not advance: training
 * equals training without those batches).  It still counts as a step of
 * this call (the counter of progress, progress_every, step_hook's argument,
 * the scalarization schedule and the context's progress, which therefore
 * still reach epochs x batches); a progress report over skipped steps only
 * passes loss NaN, and the per-epoch means leave skipped batches out.  (The
 * standalone effml_train_softmax_cross_entropy_weighted() still refuses a
 * zero-sum batch; under _MEAN such a batch has loss 0 and takes a
 * zero-gradient step as usual.)  Every row weight 0 is refused up front.
 * @param model   maps `[batch, f]` to logits `[batch, c]`
 * @param x       f32 `[n, f]`, contiguous; f = the model's in_features
 * @param labels  i32 or i64 `[n]`, each in [0, c)  (checked before training)
 * @param final_loss  NULL, or receives the mean loss of the last epoch (over
 *                    its batches that were not skipped; NaN if all were)
 * @return EFFML_E_INVALID_ARG (NULL, bad options, every row weight 0), EFFML_E_SHAPE,
 *         EFFML_E_DTYPE, EFFML_E_RANGE (a label), EFFML_E_NUMERIC (a logit
 *         became NaN/inf: training stops; the message names the epoch
 *         (0-based) and the dataset row, i.e. the index into `x` after undoing
 *         the shuffle, and whether that row of x is non-finite or the model
 *         diverged), EFFML_E_CANCELLED, EFFML_E_STATE (step_hook
 *         aborted), EFFML_E_NOMEM, or any error of the layers.  On error the
 *         parameters hold the state of the last completed step.
 */
EFFML_API effml_status effml_train_classifier(effml_context *ctx, effml_layer *model,
                                            effml_optimizer *opt, const effml_tensor *x,
                                            const effml_tensor *labels,
                                            const effml_train_options *fit, double *final_loss);

/**
 * Inference in batches (EFFML_LAYER_MODE_INFER: nothing kept, dropout off).
 * @param x       f32 `[n, f]`, contiguous
 * @param batch_size  >= 1 (rows per forward call)
 * Reports progress in rows before each batch and honours cancellation
 * (effml_context_set_progress()); with more than one batch the logits are
 * computed into a scratch `[n, c]` and copied once at the end, so that on any
 * error, EFFML_E_CANCELLED included, `logits` is untouched.
 * @param logits  f32 `[n, c]`, contiguous, caller-allocated, overwritten
 * @return EFFML_E_INVALID_ARG, EFFML_E_SHAPE, EFFML_E_DTYPE, EFFML_E_NOMEM,
 *         EFFML_E_CANCELLED, errors of the layers.
 */
EFFML_API effml_status effml_train_predict(effml_context *ctx, effml_layer *model,
                                     const effml_tensor *x, int64_t batch_size,
                                     effml_tensor *logits);

EFFML_END_DECLS

#endif /* EFFML_TRAIN_H */
