/**
 * @file effml/train.h
 * @brief Training primitives: dense, activation, dropout and layer-norm
 *        layers; softmax cross-entropy; SGD and AdamW with learning-rate
 *        schedules; gradient clipping; weight initialisers; a classifier
 *        training loop; the IDX / Fashion-MNIST loader (issue 3).
 *
 * The layers are `effml_layer`s (layer.h): explicit forward and backward on
 * f32 row-major batches `[batch, features]`, each owning its parameters and
 * their gradients.  The maths follows PyTorch's modules of the same name
 * (`nn.Linear`, `nn.GELU`, `nn.LayerNorm`, `nn.Dropout`,
 * `nn.CrossEntropyLoss`, `optim.SGD`, `optim.AdamW` -- Loshchilov & Hutter,
 * "Decoupled Weight Decay Regularization", ICLR 2019, Algorithm 2), so weights
 * and optimizer hyper-parameters carry over unchanged; where we differ it is
 * said below and in docs/training.md.
 *
 * @code
 *   effml_layer *m;  effml_sequential_create(ctx, &m);
 *   effml_layer *l;  effml_dense_create(ctx, 784, 10, 1, &l);  effml_sequential_add(ctx, m, l);
 *   effml_optimizer_options o;  effml_optimizer_options_init(&o);   // AdamW, lr 1e-3
 *   effml_optimizer *opt;  effml_optimizer_create(ctx, &o, &opt);  effml_optimizer_add_layer(ctx, opt, m);
 *   effml_fit_options f;  effml_fit_options_init(&f);  effml_fit_classifier(ctx, m, opt, x, y, &f, NULL);
 * @endcode
 *
 * Threads: layers and optimizers follow layer.h (one thread at a time; a
 * layer in EFFML_MODE_INFER may be shared by threads with their own
 * contexts).  Matrix work goes through CBLAS, whose thread count the caller
 * sets (OPENBLAS_NUM_THREADS); libeffml never changes it.
 */
#ifndef EFFML_TRAIN_H
#define EFFML_TRAIN_H

#include "common.h"
#include "context.h"
#include "error.h"
#include "tensor.h"
#include "layer.h"

EFFML_BEGIN_DECLS

/* ======================================================================
 * Layers
 * ====================================================================== */

/**
 * Dense (fully connected) layer `y = x Wᵀ + b` (PyTorch `nn.Linear`).
 *
 * Parameters: "weight" `[out_features, in_features]` (the layout PyTorch
 * stores, so its state dicts load unchanged) and, when `bias` is nonzero,
 * "bias" `[out_features]`.  Initialised as PyTorch does, from the context
 * generator: weight then bias, both U(-1/sqrt(in), 1/sqrt(in))
 * (kaiming_uniform with a = sqrt(5)).  Forward is one sgemm; backward adds
 * dW += dyᵀ x and db += Σ_rows dy, and writes dx = dy W.  A frozen weight
 * or bias (effml_layer_set_trainable()) gets no gradient work at all.
 * Keeps for backward: a borrow of x (train mode only).
 * @param in_features, out_features  >= 1
 * @param bias  nonzero to add a bias
 * @return EFFML_E_INVALID_ARG (NULL ctx/out, a width < 1), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_dense_create(effml_context *ctx, int64_t in_features,
                                          int64_t out_features, int32_t bias, effml_layer **out);

/** Element-wise activations. */
#define EFFML_ACT_IDENTITY 0  /**< y = x */
#define EFFML_ACT_RELU 1      /**< y = max(x, 0); derivative 0 at x = 0 (as PyTorch) */
#define EFFML_ACT_GELU 2      /**< exact: y = x Φ(x) = 0.5 x (1 + erf(x / √2)) (Hendrycks & Gimpel 2016) */
#define EFFML_ACT_GELU_TANH 3 /**< y = 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))) ("gelu_new") */
#define EFFML_ACT_SILU 4      /**< y = x σ(x) (= swish with β = 1) */
#define EFFML_ACT_TANH 5      /**< y = tanh(x) */

/** Name of an activation ("relu", "gelu", ...); "unknown" if invalid.  Static storage. */
EFFML_API const char *effml_activation_name(int32_t activation);

/**
 * Width-agnostic activation layer (no parameters).  Its widths adopt the
 * input width (effml_sequential_add() sets them from the previous layer).
 * Keeps for backward: a borrow of x (train mode only).
 * @return EFFML_E_INVALID_ARG (unknown activation, NULL), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_activation_create(effml_context *ctx, int32_t activation,
                                               effml_layer **out);

/**
 * Dropout (Srivastava et al., JMLR 2014), "inverted" as PyTorch: in train
 * mode each element is zeroed with probability `p` and the survivors are
 * scaled by 1/(1-p); in infer mode y = x.  The mask comes from the layer's
 * own generator seeded with `seed` and advanced by every train forward, so
 * the same seed gives the same masks whatever the thread count.
 * Keeps for backward: the mask (owned, batch x width floats).
 * @param p  drop probability in [0, 1)
 * @return EFFML_E_INVALID_ARG (p outside [0, 1) or NaN), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_dropout_create(effml_context *ctx, double p, uint64_t seed,
                                            effml_layer **out);

/**
 * Layer normalisation over the feature dimension (Ba, Kiros & Hinton 2016;
 * PyTorch `nn.LayerNorm(features, eps)`):
 * y = (x - mean) / sqrt(var + eps) * weight + bias, var biased (divide by
 * features).  Parameters "weight" (ones) and "bias" (zeros), `[features]`.
 * Keeps for backward: a borrow of x plus the per-row mean and 1/std (owned).
 * @param features  >= 1
 * @param eps  > 0 (PyTorch default 1e-5)
 * @return EFFML_E_INVALID_ARG, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_layernorm_create(effml_context *ctx, int64_t features, double eps,
                                              effml_layer **out);

/**
 * Apply an activation element-wise (for layers that embed one, such as the
 * adapter block).  `x` and `y`: f32, contiguous, same shape (any ndim); `y`
 * may be `x` (in place).
 * @return EFFML_E_INVALID_ARG (unknown activation, NULL, read-only y),
 *         EFFML_E_DTYPE, EFFML_E_SHAPE.  On error y is untouched.
 */
EFFML_API effml_status effml_activation_apply(effml_context *ctx, int32_t activation,
                                              const effml_tensor *x, effml_tensor *y);

/**
 * Backward of an activation: dx = dy ⊙ f'(x).  `x` is the forward input;
 * all three f32, contiguous, same shape; `dx` may be `dy`.
 * @return as effml_activation_apply().
 */
EFFML_API effml_status effml_activation_backward(effml_context *ctx, int32_t activation,
                                                 const effml_tensor *x, const effml_tensor *dy,
                                                 effml_tensor *dx);

/* ======================================================================
 * Loss and metrics
 * ====================================================================== */

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
EFFML_API effml_status effml_softmax_cross_entropy(effml_context *ctx, const effml_tensor *logits,
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
 * Without weights both reduce to effml_softmax_cross_entropy().
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
 *   w_k = q_k N / n_k ∝ n_k^(1/T − 1),  q = effml_temperature_probs(n, T),
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
 * @return as effml_temperature_probs(), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_train_scalarization_weights(effml_context *ctx, const double *sizes,
                                                         int64_t n_sources, double temperature,
                                                         double *weights);

/**
 * Top-1 accuracy: fraction of rows whose arg-max logit (first on ties)
 * equals the label.  Shapes and errors as effml_softmax_cross_entropy().
 */
EFFML_API effml_status effml_accuracy(effml_context *ctx, const effml_tensor *logits,
                                      const effml_tensor *labels, double *accuracy);

/* ======================================================================
 * Initialisers (PyTorch `torch.nn.init` conventions), from the context RNG
 * ====================================================================== */

/*
 * Fans as PyTorch: for a tensor `[d0, d1, d2...]` (ndim >= 2), fan_in =
 * d1 * prod(d2...), fan_out = d0 * prod(d2...); so a dense weight
 * `[out, in]` has fan_in = in.  Every initialiser writes the elements in
 * row-major order, drawing from the context generator
 * (effml_context_set_seed()).  The tensor must be f32 or f64, contiguous and
 * writable.  Errors: EFFML_E_INVALID_ARG (NULL, read-only, bad range),
 * EFFML_E_DTYPE, EFFML_E_SHAPE (ndim < 2 for the fan-based ones, not
 * contiguous).  On error the tensor is untouched.
 */

/** Xavier/Glorot uniform (Glorot & Bengio 2010, eq. 16): U(-a, a), a = gain·sqrt(6/(fan_in+fan_out)). */
EFFML_API effml_status effml_init_xavier_uniform(effml_context *ctx, effml_tensor *t, double gain);
/** Xavier/Glorot normal: N(0, std²), std = gain·sqrt(2/(fan_in+fan_out)). */
EFFML_API effml_status effml_init_xavier_normal(effml_context *ctx, effml_tensor *t, double gain);
/** Kaiming/He normal, mode fan_in (He et al. 2015, eq. 10): std = sqrt(2/(1+a²))/sqrt(fan_in); a = leaky slope (0 for ReLU). */
EFFML_API effml_status effml_init_kaiming_normal(effml_context *ctx, effml_tensor *t, double a);
/** Kaiming/He uniform, mode fan_in: bound = sqrt(2/(1+a²))·sqrt(3/fan_in) (a = sqrt(5) gives nn.Linear's default). */
EFFML_API effml_status effml_init_kaiming_uniform(effml_context *ctx, effml_tensor *t, double a);
/** Normal N(mean, std²), std >= 0. */
EFFML_API effml_status effml_init_normal(effml_context *ctx, effml_tensor *t, double mean,
                                         double std);
/** Uniform U(lo, hi), lo <= hi. */
EFFML_API effml_status effml_init_uniform(effml_context *ctx, effml_tensor *t, double lo,
                                          double hi);

/* ======================================================================
 * Optimizers
 * ====================================================================== */

typedef struct effml_optimizer effml_optimizer;

#define EFFML_OPTIM_SGD 1   /**< SGD with momentum / Nesterov (PyTorch `optim.SGD`) */
#define EFFML_OPTIM_ADAMW 2 /**< AdamW (PyTorch `optim.AdamW`; Loshchilov & Hutter 2019, Alg. 2) */

#define EFFML_LR_CONSTANT 0       /**< lr at every step */
#define EFFML_LR_WARMUP_LINEAR 1  /**< lr·(s+1)/warmup_steps for step s < warmup_steps, then lr */
#define EFFML_LR_WARMUP_COSINE 2  /**< warm-up as above, then min_lr + (lr-min_lr)·(1+cos(π·(s-w)/(T-w)))/2, min_lr from T = total_steps on */

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
  int32_t schedule;      /**< EFFML_LR_* (default constant) */
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
EFFML_API effml_status effml_clip_grad_norm(effml_context *ctx, effml_optimizer *opt,
                                            double max_norm, double *total_norm);

/* ======================================================================
 * Training loop
 * ====================================================================== */

/** Progress callback: epoch (0-based), step (1-based: steps done in this effml_fit_classifier call, restarting at each call; not the optimizer's count), mean loss over the steps since the last call. */
typedef void (*effml_progress_fn)(void *user_data, int64_t epoch, int64_t step, double loss);

struct effml_temperature_schedule; /* sampler.h */

/** Options of effml_fit_classifier().  Fill with effml_fit_options_init(); fields only grow at the end. */
typedef struct effml_fit_options {
  uint32_t struct_size;           /**< sizeof(effml_fit_options), set by _init */
  int64_t epochs;                 /**< >= 1 (default 1) */
  int64_t batch_size;             /**< >= 1 (default 128); the last batch of an epoch may be smaller */
  uint64_t shuffle_seed;          /**< epoch e visits the rows in a permutation drawn from (shuffle_seed, e) */
  effml_progress_fn progress;     /**< NULL: no progress reports */
  void *progress_user_data;       /**< passed to progress */
  int64_t progress_every;         /**< report every this many steps; 0 = once per epoch (default 0) */
  /** Called after backward, before clipping and the optimizer step (e.g. RigL/SET mask updates); nonzero return aborts fit with EFFML_E_STATE. */
  int32_t (*step_hook)(void *user_data, int64_t step);
  void *step_hook_user_data;      /**< passed to step_hook */
  double clip_norm;               /**< > 0: effml_clip_grad_norm() before each step; 0 = off */
  /* ---- weighted loss (0.2): all NULL/0 trains with effml_softmax_cross_entropy() as before ---- */
  const effml_tensor *sample_weight; /**< NULL, or f32/f64 `[n]` per-row weights (finite, >= 0; borrowed for the call) */
  const effml_tensor *class_weight;  /**< NULL, or f32/f64 `[c]` per-class weights (finite, >= 0; borrowed) */
  int32_t class_weight_balanced;     /**< nonzero: also multiply by effml_train_class_weight_balanced() of `labels` (scikit-learn "balanced") */
  int32_t reduction;                 /**< EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN (default, PyTorch) or _MEAN (row weights divided by their mean over the data at each step) */
  /** NULL, or scalarization (Li et al. 2025): class weights effml_train_scalarization_weights(class sizes of `labels`, T(step)) with T from this schedule at the call's step count (0-based); the upweighting twin of temperature sampling with the same schedule (e.g. Cooldown).  Borrowed for the call. */
  const struct effml_temperature_schedule *scalarization;
} effml_fit_options;

/** Fill `opt` with defaults (1 epoch, batch 128, seed 0, no progress, no hook, no clipping).  NULL is ignored. */
EFFML_API void effml_fit_options_init(effml_fit_options *opt);

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
EFFML_API effml_status effml_fit_classifier(effml_context *ctx, effml_layer *model,
                                            effml_optimizer *opt, const effml_tensor *x,
                                            const effml_tensor *labels,
                                            const effml_fit_options *fit, double *final_loss);

/**
 * Inference in batches (EFFML_MODE_INFER: nothing kept, dropout off).
 * @param x       f32 `[n, f]`, contiguous
 * @param batch_size  >= 1 (rows per forward call)
 * @param logits  f32 `[n, c]`, contiguous, caller-allocated, overwritten
 * @return EFFML_E_INVALID_ARG, EFFML_E_SHAPE, EFFML_E_DTYPE, errors of the layers.
 */
EFFML_API effml_status effml_predict(effml_context *ctx, effml_layer *model,
                                     const effml_tensor *x, int64_t batch_size,
                                     effml_tensor *logits);

/* ======================================================================
 * Data: IDX files and Fashion-MNIST
 * ====================================================================== */

#define EFFML_SPLIT_TRAIN 0 /**< 60 000 training images */
#define EFFML_SPLIT_TEST 1  /**< 10 000 test images */

/**
 * Load Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from the IDX files
 * `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
 * `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz` (the names the
 * Debian package dataset-fashion-mnist installs; uncompressed files without
 * `.gz` are accepted too).
 * @param dir     NULL: /usr/share/datasets/fashion-mnist
 * @param split   EFFML_SPLIT_TRAIN or EFFML_SPLIT_TEST
 * @param images  receives f32 `[n, 784]`, pixel/255 in [0, 1], owned by the caller
 * @param labels  receives i32 `[n]` in [0, 9], owned by the caller
 * @return EFFML_E_NOT_FOUND (files absent: the message names the path and
 *         the Debian package), EFFML_E_FORMAT (malformed or inconsistent
 *         files), EFFML_E_IO, EFFML_E_INVALID_ARG, EFFML_E_NOMEM.  On error
 *         neither output is written.
 */
EFFML_API effml_status effml_fashion_mnist_load(effml_context *ctx, const char *dir, int32_t split,
                                                effml_tensor **images, effml_tensor **labels);

/**
 * Load one IDX file (LeCun's MNIST format: two zero bytes, a type byte, the
 * number of dimensions, big-endian u32 sizes, big-endian data), gzipped or
 * raw (detected).  Types 0x08 -> EFFML_U8, 0x09 -> EFFML_I8, 0x0B ->
 * EFFML_I16, 0x0C -> EFFML_I32, 0x0D -> EFFML_F32, 0x0E -> EFFML_F64.
 * @param out  receives a new contiguous tensor with the file's shape, owned by the caller
 * @return EFFML_E_NOT_FOUND (no such file), EFFML_E_IO, EFFML_E_FORMAT (bad
 *         magic, unknown type, zero or too many dimensions, truncated data,
 *         trailing bytes), EFFML_E_OVERFLOW, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_idx_load(effml_context *ctx, const char *path, effml_tensor **out);

EFFML_END_DECLS

#endif /* EFFML_TRAIN_H */
