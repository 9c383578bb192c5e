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

/* ---- training loop ---- */


/** Progress callback: epoch (0-based), step (1-based: steps done in this effml_train_classifier call, restarting at each call; not the optimizer's count), mean loss over the steps since the last call. */
typedef void (*effml_train_progress_fn)(void *user_data, int64_t epoch, int64_t step, double loss);

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
} effml_train_options;

/** Fill `opt` with defaults (1 epoch, batch 128, seed 0, no progress, no hook, no clipping).  NULL is ignored. */
EFFML_API void effml_train_options_init(effml_train_options *opt);

/**
 * Train a classifier with softmax cross-entropy: for each epoch, for each
 * batch of a seeded permutation: forward (train mode), loss, zero the
 * model's gradients, backward, step_hook, clipping, optimizer step.
 * Workspaces are allocated once per call.
 * @param model   maps `[batch, f]` to logits `[batch, c]`
 * @param x       f32 `[n, f]`, contiguous; f = the model's in_features
 * @param labels  i32 or i64 `[n]`, each in [0, c)  (checked before training)
 * @param final_loss  NULL, or receives the mean loss of the last epoch
 * @return EFFML_E_INVALID_ARG (NULL, bad options), EFFML_E_SHAPE,
 *         EFFML_E_DTYPE, EFFML_E_RANGE (a label), EFFML_E_NUMERIC (the loss
 *         became NaN/inf: training stops), EFFML_E_STATE (step_hook
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
 * @param logits  f32 `[n, c]`, contiguous, caller-allocated, overwritten
 * @return EFFML_E_INVALID_ARG, EFFML_E_SHAPE, EFFML_E_DTYPE, errors of the layers.
 */
EFFML_API effml_status effml_train_predict(effml_context *ctx, effml_layer *model,
                                     const effml_tensor *x, int64_t batch_size,
                                     effml_tensor *logits);

EFFML_END_DECLS

#endif /* EFFML_TRAIN_H */
