/**
 * @file effml/layer.h
 * @brief One interface for every layer kind: forward, backward, named
 *        parameters with gradients, save/load, and the sequential container.
 *
 * Every layer maps an f32 row-major batch `x [batch, in_features]` to
 * `y [batch, out_features]`.  Dense, activation, normalisation (train.h),
 * adapter (adapter.h) and sparse (sparse.h) layers all are `effml_layer`s, so
 * optimizers, checkpoints and containers treat them alike.
 *
 * What a layer keeps for backward: in EFFML_MODE_TRAIN, forward() *borrows*
 * `x` (and, for some activations, `y`) until the next forward() or
 * backward(), and may store small per-batch state it owns (a dropout mask,
 * layer-norm means and inverse standard deviations).  The caller must not
 * modify or free `x`/`y` before backward().  In EFFML_MODE_INFER nothing is
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
 *   effml_layer *model;  effml_sequential_create(ctx, &model);
 *   effml_layer *fc;     effml_dense_create(ctx, 784, 10, 1, &fc);
 *   effml_sequential_add(ctx, model, fc);           // model owns fc now
 *   effml_layer_forward(ctx, model, x, logits, EFFML_MODE_TRAIN);
 *   effml_layer_zero_grad(model);
 *   effml_layer_backward(ctx, model, dlogits, NULL);
 *   effml_layer_free(model);
 * @endcode
 *
 * Threads: a layer is used by one thread at a time.  In EFFML_MODE_INFER a
 * layer is only read, so several threads may run inference on one layer at
 * once (each with its own context and output tensors) as long as no thread
 * trains or modifies it meanwhile.
 */
#ifndef EFFML_LAYER_H
#define EFFML_LAYER_H

#include "common.h"
#include "context.h"
#include "error.h"
#include "tensor.h"

EFFML_BEGIN_DECLS

typedef struct effml_layer effml_layer;

/** Forward modes. */
#define EFFML_MODE_INFER 0 /**< keep nothing; dropout is the identity */
#define EFFML_MODE_TRAIN 1 /**< keep what backward needs */

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
 * @param mode EFFML_MODE_TRAIN or EFFML_MODE_INFER
 * @return EFFML_E_INVALID_ARG (NULL, bad mode, aliasing), EFFML_E_DTYPE (not
 *         f32), EFFML_E_SHAPE (widths or batch disagree, not contiguous),
 *         EFFML_E_NOMEM.  On error y is unspecified.
 */
EFFML_API effml_status effml_layer_forward(effml_context *ctx, effml_layer *layer,
                                           const effml_tensor *x, effml_tensor *y, int32_t mode);

/**
 * Backward pass of the last EFFML_MODE_TRAIN forward.
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
 * Mark parameters trainable (1) or frozen (0).
 * @param name  exact parameter name, or NULL for all parameters of the layer
 * @return EFFML_E_NOT_FOUND if `name` matches nothing.
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
#define EFFML_LOAD_STRICT 1u /**< every file tensor under `prefix` must match a parameter */

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
EFFML_API effml_status effml_sequential_create(effml_context *ctx, effml_layer **out);
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
EFFML_API effml_status effml_sequential_add(effml_context *ctx, effml_layer *seq,
                                            effml_layer *child);
/** Number of children (0 for a non-container). */
EFFML_API int32_t effml_sequential_count(const effml_layer *seq);
/** Borrow child `i`, or NULL. */
EFFML_API effml_layer *effml_sequential_get(effml_layer *seq, int32_t i);

EFFML_END_DECLS

#endif /* EFFML_LAYER_H */
