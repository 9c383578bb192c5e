/**
 * @file effml/optim.h
 * @brief Optimizers (SGD, AdamW), learning-rate schedules, gradient clipping.
 *
 * SGD with momentum/Nesterov and AdamW with learning-rate schedules, and
 * gradient clipping by global norm.  The maths follows PyTorch's `optim.SGD`,
 * `optim.AdamW` (Loshchilov & Hutter, "Decoupled Weight Decay
 * Regularization", ICLR 2019, arXiv 1711.05101, Algorithm 2) and
 * `nn.utils.clip_grad_norm_`, so hyper-parameters carry over unchanged.
 *
 * @code
 *   effml_optimizer_options o;  effml_optimizer_options_init(&o);   // AdamW, lr 1e-3
 *   effml_optimizer *opt;  effml_optimizer_create(ctx, &o, &opt);
 *   effml_optimizer_add_layer(ctx, opt, model);
 *   ... backward ...;  effml_optimizer_step(ctx, opt);
 *   effml_optimizer_free(opt);
 * @endcode
 *
 * Threads: an optimizer is used by one thread at a time.
 */
#ifndef EFFML_OPTIM_H
#define EFFML_OPTIM_H

#include "core.h"
#include "tensor.h"
#include "layer.h"

EFFML_BEGIN_DECLS

typedef struct effml_optimizer effml_optimizer;

#define EFFML_OPTIM_SGD 1   /**< SGD with momentum / Nesterov (PyTorch `optim.SGD`) */
#define EFFML_OPTIM_ADAMW 2 /**< AdamW (PyTorch `optim.AdamW`; Loshchilov & Hutter 2019, Alg. 2) */

#define EFFML_OPTIM_LR_CONSTANT 0       /**< lr at every step */
#define EFFML_OPTIM_LR_WARMUP_LINEAR 1  /**< lr·(s+1)/warmup_steps for step s < warmup_steps, then lr */
#define EFFML_OPTIM_LR_WARMUP_COSINE 2  /**< warm-up as above, then min_lr + (lr-min_lr)·(1+cos(π·(s-w)/(T-w)))/2, min_lr from T = total_steps on */

/**
 * Optimizer options.  Fill with effml_optimizer_options_init(); fields are
 * only ever added at the end.
 *
 * SGD step (PyTorch semantics): g = grad + weight_decay·p; with momentum
 * μ > 0: buf = g on the first step, else μ·buf + (1-dampening)·g; then
 * g = g + μ·buf (Nesterov) or g = buf; p -= lr·g.
 *
 * AdamW step t (per parameter, counted from 1): p -= lr·weight_decay·p;
 * m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
 * p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps).
 */
typedef struct effml_optimizer_options {
  uint32_t struct_size;  /**< sizeof(effml_optimizer_options), set by _init */
  int32_t algorithm;     /**< EFFML_OPTIM_SGD or EFFML_OPTIM_ADAMW (default AdamW) */
  double lr;             /**< peak learning rate, > 0 (default 1e-3) */
  double momentum;       /**< SGD momentum in [0, 1) (default 0) */
  double dampening;      /**< SGD dampening in [0, 1] (default 0) */
  int32_t nesterov;      /**< SGD Nesterov momentum (needs momentum > 0, dampening 0) */
  double weight_decay;   /**< >= 0; decoupled for AdamW, L2 in the gradient for SGD (default 1e-2, AdamW's; PyTorch's SGD default is 0) */
  double beta1;          /**< AdamW β1 in [0, 1) (default 0.9) */
  double beta2;          /**< AdamW β2 in [0, 1) (default 0.999) */
  double eps;            /**< AdamW ε >= 0 (default 1e-8) */
  int32_t schedule;      /**< EFFML_OPTIM_LR_* (default constant) */
  int64_t warmup_steps;  /**< >= 0 (default 0) */
  int64_t total_steps;   /**< cosine: > warmup_steps (default 0) */
  double min_lr;         /**< cosine: final lr in [0, lr] (default 0) */
} effml_optimizer_options;

/** Fill `opt` with defaults: AdamW as PyTorch (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight_decay 1e-2), constant lr.  NULL is ignored. */
EFFML_API void effml_optimizer_options_init(effml_optimizer_options *opt);

/**
 * Create an optimizer with no parameters yet.
 * @param opt  options; only the first `opt->struct_size` bytes are read
 * @param out  owned by the caller (effml_optimizer_free())
 * @return EFFML_E_INVALID_ARG naming the bad field (lr <= 0 or not finite,
 *         momentum, betas, eps, weight_decay, schedule, steps, min_lr out of
 *         range; Nesterov without momentum or with dampening; unknown
 *         algorithm; bad struct_size), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_optimizer_create(effml_context *ctx,
                                              const effml_optimizer_options *opt,
                                              effml_optimizer **out);

/**
 * Register every parameter of `layer` (for a container: of all its
 * children).  A value tensor already registered (a shared Compacter
 * `phm_rule` reached through several layers) is registered once.  All
 * parameters are registered, frozen ones included: whether a parameter is
 * updated is decided at each step from its trainable flag.  The optimizer
 * keeps pointers into the layer: the layer must outlive the optimizer.
 * @return EFFML_E_INVALID_ARG, EFFML_E_DTYPE (non-f32 parameter),
 *         EFFML_E_NOMEM (nothing registered then).
 */
EFFML_API effml_status effml_optimizer_add_layer(effml_context *ctx, effml_optimizer *opt,
                                                 effml_layer *layer);

/**
 * Register one tensor with its gradient (both f32, contiguous, same number
 * of elements; always trainable).  Both are borrowed and must outlive the
 * optimizer.  A value already registered is ignored.
 * @param name  for messages (copied); may be NULL
 * @return EFFML_E_INVALID_ARG, EFFML_E_DTYPE, EFFML_E_SHAPE, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_optimizer_add_param(effml_context *ctx, effml_optimizer *opt,
                                                 const char *name, effml_tensor *value,
                                                 effml_tensor *grad);

/**
 * One update of every registered parameter that is trainable now, with the
 * lr of the schedule at this step (effml_optimizer_lr()).  A frozen
 * parameter's values and optimizer state are not touched (bit for bit).
 * @return EFFML_E_INVALID_ARG (NULL).
 */
EFFML_API effml_status effml_optimizer_step(effml_context *ctx, effml_optimizer *opt);

/** Set the gradient of every registered parameter to zero.  NULL is a no-op. */
EFFML_API void effml_optimizer_zero_grad(effml_optimizer *opt);

/**
 * Zero the optimizer state (SGD momentum buffer, AdamW m and v) at the given
 * flat element indices of the registered parameter whose value tensor is
 * `value` -- for connections regrown by RigL/SET, which start with zero
 * momentum (Evci et al. 2020, §3).
 * @param indices  `n` indices in [0, numel(value))
 * @return EFFML_E_NOT_FOUND (value not registered), EFFML_E_RANGE (an index
 *         out of range; nothing changed), EFFML_E_INVALID_ARG.
 */
EFFML_API effml_status effml_optimizer_reset_state(effml_context *ctx, effml_optimizer *opt,
                                                   const effml_tensor *value,
                                                   const int64_t *indices, int64_t n);

/** Learning rate the next step will use (0 for NULL). */
EFFML_API double effml_optimizer_lr(const effml_optimizer *opt);
/** Number of steps taken so far (0 for NULL). */
EFFML_API int64_t effml_optimizer_steps(const effml_optimizer *opt);
/** Number of registered parameter tensors (0 for NULL). */
EFFML_API int32_t effml_optimizer_num_params(const effml_optimizer *opt);
/** Free the optimizer (not the parameters).  NULL is a no-op. */
EFFML_API void effml_optimizer_free(effml_optimizer *opt);

/**
 * Clip gradients by global norm (PyTorch `clip_grad_norm_`): over the
 * registered parameters that are trainable now, total = sqrt(Σ ‖g‖²)
 * (accumulated in f64); when total > max_norm every such gradient is scaled
 * by max_norm / (total + 1e-6).
 * @param max_norm    > 0
 * @param total_norm  NULL, or receives the norm before clipping
 * @return EFFML_E_INVALID_ARG (max_norm <= 0 or NaN), EFFML_E_NUMERIC (the
 *         norm is NaN or inf; gradients untouched).
 */
EFFML_API effml_status effml_optimizer_clip_grad_norm(effml_context *ctx, effml_optimizer *opt,
                                            double max_norm, double *total_norm);

EFFML_END_DECLS

#endif /* EFFML_OPTIM_H */
