/**
 * @file effml/layer.h
 * @brief One interface for every layer kind: forward, backward, named
 *        parameters with gradients, save/load, and the sequential container.
 *
 * Every layer maps an f32 row-major batch `x [batch, in_features]` to
 * `y [batch, out_features]`.  Dense, activation, dropout and normalisation (below),
 * adapter (adapter.h) and sparse (sparse.h) layers all are `effml_layer`s, so
 * optimizers, checkpoints and containers treat them alike.
 *
 * What a layer keeps for backward: in EFFML_LAYER_MODE_TRAIN, forward() *borrows*
 * `x` (and, for some activations, `y`) until the next forward() or
 * backward(), and may store small per-batch state it owns (a dropout mask,
 * layer-norm means and inverse standard deviations).  The caller must not
 * modify or free `x`/`y` before backward().  In EFFML_LAYER_MODE_INFER nothing is
 * kept (no borrow, no extra memory, dropout is the identity), and backward()
 * then fails with EFFML_E_STATE.  The sequential container owns its
 * intermediate activations, so its own caller only keeps `x` alive.
 *
 * Gradients accumulate: backward() adds into each parameter's gradient
 * tensor (so a parameter shared by several layers, such as a Compacter
 * `phm_rule`, collects the sum); call effml_layer_zero_grad() before each
 * step.
 *
 * @code
 *   effml_layer *model;  effml_layer_sequential_create(ctx, &model);
 *   effml_layer *fc;     effml_layer_dense_create(ctx, 784, 10, 1, &fc);
 *   effml_layer_sequential_add(ctx, model, fc);           // model owns fc now
 *   effml_layer_forward(ctx, model, x, logits, EFFML_LAYER_MODE_TRAIN);
 *   effml_layer_zero_grad(model);
 *   effml_layer_backward(ctx, model, dlogits, NULL);
 *   effml_layer_free(model);
 * @endcode
 *
 * Threads: a layer is used by one thread at a time.  In EFFML_LAYER_MODE_INFER a
 * layer is only read, so several threads may run inference on one layer at
 * once (each with its own context and output tensors) as long as no thread
 * trains or modifies it meanwhile.
 */
#ifndef EFFML_LAYER_H
#define EFFML_LAYER_H

#include "core.h"
#include "tensor.h"

EFFML_BEGIN_DECLS

typedef struct effml_layer effml_layer;

/** Forward modes. */
#define EFFML_LAYER_MODE_INFER 0 /**< keep nothing; dropout is the identity */
#define EFFML_LAYER_MODE_TRAIN 1 /**< keep what backward needs */

/** Layer kind name ("dense", "relu", "sequential", "lphm", ...).  Static storage. */
EFFML_API const char *effml_layer_kind(const effml_layer *layer);
/** Input features (width of x), or 0 for width-agnostic layers (activations) before first use. */
EFFML_API int64_t effml_layer_in_features(const effml_layer *layer);
/** Output features (width of y); for width-agnostic layers, equal to the input width. */
EFFML_API int64_t effml_layer_out_features(const effml_layer *layer);

/**
 * Forward pass.
 * @param x  f32 `[batch, in_features]`, contiguous, batch >= 1
 * @param y  f32 `[batch, out_features]`, contiguous, caller-allocated,
 *           overwritten (must not alias x)
 * @param mode EFFML_LAYER_MODE_TRAIN or EFFML_LAYER_MODE_INFER
 * @return EFFML_E_INVALID_ARG (NULL, bad mode, aliasing), EFFML_E_DTYPE (not
 *         f32), EFFML_E_SHAPE (widths or batch disagree, not contiguous),
 *         EFFML_E_NOMEM.  On error y is unspecified.
 */
EFFML_API effml_status effml_layer_forward(effml_context *ctx, effml_layer *layer,
                                           const effml_tensor *x, effml_tensor *y, int32_t mode);

/**
 * Backward pass of the last EFFML_LAYER_MODE_TRAIN forward.
 * @param dy  f32 `[batch, out_features]`, gradient of the loss w.r.t. y
 * @param dx  f32 `[batch, in_features]` to overwrite with dL/dx, or NULL when
 *            the input gradient is not needed (saves work for a first layer)
 * Adds parameter gradients into the layer's gradient tensors (trainable
 * parameters only; frozen ones are skipped).
 * @return EFFML_E_STATE (no training forward pending), EFFML_E_SHAPE,
 *         EFFML_E_DTYPE, EFFML_E_INVALID_ARG, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_layer_backward(effml_context *ctx, effml_layer *layer,
                                            const effml_tensor *dy, effml_tensor *dx);

/** Free a layer and what it owns.  NULL is a no-op.  Shared objects it references (a phm rule) are released by their own free. */
EFFML_API void effml_layer_free(effml_layer *layer);

/* ---- parameters ---- */

/** Number of parameters (for a container: of all its children, in order). */
EFFML_API int32_t effml_layer_num_params(const effml_layer *layer);
/**
 * Name of parameter `i` ("weight", "bias"; in a sequential container prefixed
 * by the child index as PyTorch's nn.Sequential does: "0.weight").  NULL if
 * out of range.  Borrowed, valid while the layer lives.
 */
EFFML_API const char *effml_layer_param_name(const effml_layer *layer, int32_t i);
/** Value tensor of parameter `i` (borrowed; may be written, e.g. to load weights).  NULL if out of range. */
EFFML_API effml_tensor *effml_layer_param(effml_layer *layer, int32_t i);
/** Gradient tensor of parameter `i`, same shape as the value (borrowed).  NULL if out of range. */
EFFML_API effml_tensor *effml_layer_param_grad(effml_layer *layer, int32_t i);
/** 1 if parameter `i` is trainable, 0 if frozen or out of range. */
EFFML_API int32_t effml_layer_param_trainable(const effml_layer *layer, int32_t i);
/**
 * Mark parameters trainable (1) or frozen (0).  A few parameters are frozen by
 * the method's definition and can never be trained (VeRA's "vera_A" and
 * "vera_B"): naming one with trainable = 1 is refused; name = NULL with
 * trainable = 1 makes every other parameter trainable and leaves them frozen.
 * @param name  exact parameter name, or NULL for all parameters of the layer
 * @return EFFML_E_NOT_FOUND if `name` matches nothing, EFFML_E_UNSUPPORTED
 *         (message names the parameter and why) for a parameter that cannot
 *         be trained.
 */
EFFML_API effml_status effml_layer_set_trainable(effml_context *ctx, effml_layer *layer,
                                                 const char *name, int32_t trainable);
/** Number of scalar parameters: all (trainable_only = 0) or trainable only (1).  A shared tensor counts once per layer that uses it; see the adapter docs. */
EFFML_API int64_t effml_layer_count_params(const effml_layer *layer, int32_t trainable_only);
/** Set every gradient tensor of the layer to zero. */
EFFML_API void effml_layer_zero_grad(effml_layer *layer);

/**
 * Save all parameters to a safetensors file, each under `prefix` + name
 * (prefix may be NULL or ""), with metadata {"format": "pt"}.
 */
EFFML_API effml_status effml_layer_save(effml_context *ctx, const effml_layer *layer,
                                        const char *path, const char *prefix);

/** Flags for effml_layer_load(). */
#define EFFML_LAYER_LOAD_STRICT 1u /**< every file tensor under `prefix` must match a parameter */

/**
 * Load parameters by name (`prefix` + name) from a safetensors file.  Every
 * parameter must be present with the same shape (F32, F64, F16 or BF16
 * sources are converted to f32).  All-or-nothing: on error no parameter has
 * changed.
 * @return EFFML_E_NOT_FOUND (message names the missing key), EFFML_E_SHAPE
 *         (names the key and both shapes), EFFML_E_INVALID_ARG (unknown flag
 *         bits), EFFML_E_FORMAT, EFFML_E_IO, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_layer_load(effml_context *ctx, effml_layer *layer, const char *path,
                                        const char *prefix, uint32_t flags);

/* ---- sequential container ---- */

/** Create an empty sequential container (y = f_n(...f_1(x))). */
EFFML_API effml_status effml_layer_sequential_create(effml_context *ctx, effml_layer **out);
/**
 * Append `child`; the container takes ownership of it on success (on error the
 * caller still owns it).  Its in_features must match the previous output
 * width (width-agnostic layers adopt it).
 * A layer belongs to at most one container: adding it a second time (to this
 * or another container) fails with EFFML_E_STATE.
 * @return EFFML_E_SHAPE (widths disagree), EFFML_E_STATE (child already in a
 *         container, or `seq` itself is inside another container),
 *         EFFML_E_INVALID_ARG, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_layer_sequential_add(effml_context *ctx, effml_layer *seq,
                                            effml_layer *child);
/** Number of children (0 for a non-container). */
EFFML_API int32_t effml_layer_sequential_count(const effml_layer *seq);
/** Borrow child `i`, or NULL. */
EFFML_API effml_layer *effml_layer_sequential_get(effml_layer *seq, int32_t i);

/* ---- layer kinds: dense, activation, dropout, layer norm ---- */

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
EFFML_API effml_status effml_layer_dense_create(effml_context *ctx, int64_t in_features,
                                          int64_t out_features, int32_t bias, effml_layer **out);

/** Element-wise activations. */
#define EFFML_LAYER_ACT_IDENTITY 0  /**< y = x */
#define EFFML_LAYER_ACT_RELU 1      /**< y = max(x, 0); derivative 0 at x = 0 (as PyTorch) */
#define EFFML_LAYER_ACT_GELU 2      /**< exact: y = x Φ(x) = 0.5 x (1 + erf(x / √2)) (Hendrycks & Gimpel 2016) */
#define EFFML_LAYER_ACT_GELU_TANH 3 /**< y = 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))) ("gelu_new") */
#define EFFML_LAYER_ACT_SILU 4      /**< y = x σ(x) (= swish with β = 1) */
#define EFFML_LAYER_ACT_TANH 5      /**< y = tanh(x) */

/** Name of an activation ("relu", "gelu", ...); "unknown" if invalid.  Static storage. */
EFFML_API const char *effml_layer_activation_name(int32_t activation);

/**
 * Width-agnostic activation layer (no parameters).  Its widths adopt the
 * input width (effml_layer_sequential_add() sets them from the previous layer).
 * Keeps for backward: a borrow of x (train mode only).
 * @return EFFML_E_INVALID_ARG (unknown activation, NULL), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_layer_activation_create(effml_context *ctx, int32_t activation,
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
EFFML_API effml_status effml_layer_dropout_create(effml_context *ctx, double p, uint64_t seed,
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
EFFML_API effml_status effml_layer_layernorm_create(effml_context *ctx, int64_t features, double eps,
                                              effml_layer **out);

EFFML_END_DECLS

#endif /* EFFML_LAYER_H */
