/*
 * How a layer kind plugs into the one effml_layer interface (internal).
 *
 * A layer kind supplies an effml__layer_ops table and creates its layer with
 * effml__layer_new(); it registers its parameters with effml__layer_add_param()
 * during construction (never later: containers keep pointers to the params).
 * effml_layer_forward()/backward() validate the common things (NULLs, f32,
 * 2-D, contiguous, widths, batch, mode, the pending-forward state) before
 * calling the ops, so an op only checks what is specific to its kind.
 */
#ifndef EFFML_LAYER_INTERNAL_H
#define EFFML_LAYER_INTERNAL_H

#include "internal.h"

typedef struct effml__param {
  char *name;               /* owned */
  effml_tensor *value;      /* owned unless `shared` */
  effml_tensor *grad;       /* owned unless `shared` */
  int32_t trainable;
  int32_t shared;           /* value/grad belong to another object (e.g. a phm rule) */
  struct effml__param *origin; /* containers: the child's param this entry mirrors */
} effml__param;

typedef struct effml__layer_ops {
  const char *kind;
  /* x: [batch, in] f32 contiguous; y: [batch, out] f32 contiguous (validated). */
  effml_status (*forward)(effml_context *ctx, effml_layer *layer, const effml_tensor *x,
                          effml_tensor *y, int32_t mode);
  /* dy: [batch, out]; dx: [batch, in] or NULL (validated; a train forward is pending). */
  effml_status (*backward)(effml_context *ctx, effml_layer *layer, const effml_tensor *dy,
                           effml_tensor *dx);
  /* Free kind-specific state (impl); params are freed by the generic code. May be NULL. */
  void (*destroy)(effml_layer *layer);
} effml__layer_ops;

struct effml_layer {
  const effml__layer_ops *ops;
  effml_context *ctx;      /* allocator of the layer */
  int64_t in_features;     /* 0 = width-agnostic (activations) */
  int64_t out_features;    /* 0 = same as input */
  int32_t n_params, cap_params;
  effml__param *params;
  int32_t train_pending;   /* a TRAIN forward ran and backward may follow */
  int32_t in_container;    /* owned by a container (cannot be added again) */
  int64_t pending_batch;   /* batch of that forward */
  int64_t pending_width;   /* input width of that forward (width-agnostic layers) */
  void *impl;              /* kind-specific state */
};

/* Allocate a layer with `ops`, widths and impl (impl ownership passes to the
 * layer: ops->destroy frees it).  On error impl is NOT freed. */
EFFML__HIDDEN effml_status effml__layer_new(effml_context *ctx, const effml__layer_ops *ops,
                                            int64_t in_features, int64_t out_features,
                                            void *impl, effml_layer **out);
/* Register an owned parameter: value created with `ndim`/`shape` (zeroed,
 * f32) and a zero gradient of the same shape.  Returns its index via *index
 * (may be NULL) and the value via *value (may be NULL). */
EFFML__HIDDEN effml_status effml__layer_add_param(effml_context *ctx, effml_layer *layer,
                                                  const char *name, int32_t ndim,
                                                  const int64_t *shape, int32_t trainable,
                                                  int32_t *index);
/* Register a parameter whose value/grad tensors belong to someone else (the
 * owner must outlive the layer). */
EFFML__HIDDEN effml_status effml__layer_add_shared_param(effml_context *ctx, effml_layer *layer,
                                                         const char *name, effml_tensor *value,
                                                         effml_tensor *grad, int32_t trainable);
/* The layer's i-th param entry (resolving container mirrors to the origin). */
EFFML__HIDDEN effml__param *effml__layer_param_entry(effml_layer *layer, int32_t i);
/* Convenience: f32 data of param i's value / grad (contiguous). */
EFFML__HIDDEN float *effml__param_f32(effml_layer *layer, int32_t i);
EFFML__HIDDEN float *effml__grad_f32(effml_layer *layer, int32_t i);

/* ---- activations, shared by the layers that embed one (adapter block, sparse layers) ---- */

/**
 * Apply an activation element-wise (for layers that embed one, such as the
 * adapter block).  `x` and `y`: f32, contiguous, same shape (any ndim); `y`
 * may be `x` (in place).
 * @return EFFML_E_INVALID_ARG (unknown activation, NULL, read-only y),
 *         EFFML_E_DTYPE, EFFML_E_SHAPE.  On error y is untouched.
 */
EFFML__HIDDEN effml_status effml__activation_apply(effml_context *ctx, int32_t activation,
                                              const effml_tensor *x, effml_tensor *y);

/**
 * Backward of an activation: dx = dy ⊙ f'(x).  `x` is the forward input;
 * all three f32, contiguous, same shape; `dx` may be `dy`.
 * @return as effml__activation_apply().
 */
EFFML__HIDDEN effml_status effml__activation_backward(effml_context *ctx, int32_t activation,
                                                 const effml_tensor *x, const effml_tensor *dy,
                                                 effml_tensor *dx);

#endif /* EFFML_LAYER_INTERNAL_H */
