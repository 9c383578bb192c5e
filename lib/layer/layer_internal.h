/*
 * How a layer kind plugs into the one effml_layer interface (internal).
 *
 * The ops table below is the only extension point (contract and "how to add
 * a layer kind": docs/architecture.md).  A kind supplies one
 * effml__layer_ops, registers it once in lib/registry/layer_kinds.c, creates
 * its layers with effml__layer_new(), registers its parameters with
 * effml__layer_add_param() during construction (never later: containers
 * keep pointers to the params), and hands every layer it contains to
 * effml__layer_adopt() (the one way to hold child layers: every generic walk
 * -- FLOPs, sparse masks, RigL/SET, "find the base layer" -- sees them).
 * effml_layer_forward()/backward() validate the common things (NULLs, f32,
 * 2-D, contiguous, widths, batch, mode, the pending-forward state) before
 * calling the ops, so an op only checks what is specific to its kind.
 */
#ifndef EFFML_LAYER_INTERNAL_H
#define EFFML_LAYER_INTERNAL_H

#include "../tensor/tensor_internal.h"

typedef struct effml__param {
  char *name;               /* owned */
  effml_tensor *value;      /* owned unless `shared` */
  effml_tensor *grad;       /* owned unless `shared` */
  int32_t trainable;
  int32_t shared;           /* value/grad belong to another object (e.g. a phm rule) */
  struct effml__param *origin; /* containers: the child's param this entry mirrors */
  const char *fixed;        /* NULL, or why it can never be trained (static string): it stays
                             * frozen, effml_layer_set_trainable refuses it by name */
} effml__param;

/* Traits of a kind (bits of effml__layer_ops.traits). */
#define EFFML__KIND_SPARSE 0x1u      /* impl is an effml__sparse_layer (lib/sparse) */
#define EFFML__KIND_WRAPS_BASE 0x2u  /* child 0 is the base layer the kind adapts */
#define EFFML__KIND_CONTAINER 0x4u   /* children run one after the other (sequential) */
#define EFFML__KIND_WEIGHT_IN_OUT 0x8u /* "weight" is stored [in, out] (GPT-2 Conv1D, PEFT fan_in_fan_out) */

typedef struct effml__layer_ops {
  /* Kind name returned by effml_layer_kind() (a table serving several
   * kinds, e.g. the activations, sets each layer's name with
   * effml__layer_set_kind). */
  const char *name;
  /* x: [batch, in] f32 contiguous; y: [batch, out] f32 contiguous (validated).
   * EFFML_LAYER_MODE_INFER must not write the layer (several threads may share it). */
  effml_status (*forward)(effml_context *ctx, effml_layer *layer, const effml_tensor *x,
                          effml_tensor *y, int32_t mode);
  /* dy: [batch, out]; dx: [batch, in] or NULL (validated; a train forward is
   * pending).  Adds into the grads of trainable params only. */
  effml_status (*backward)(effml_context *ctx, effml_layer *layer, const effml_tensor *dy,
                           effml_tensor *dx);
  /* Free kind-specific state (impl); params and children are freed by the
   * generic code afterwards.  May be NULL. */
  void (*destroy)(effml_layer *layer);
  /* FLOPs of one forward pass for one input row of width in_width, by the
   * Sparse-IFT profiler rules (a multiply-add is 2 FLOPs, a dot of n terms
   * 2n-1, +1 per bias/element-wise op).  Containers sum their children with
   * effml__layer_flops().  NULL: the kind has no FLOP rule (counting fails
   * with EFFML_E_UNSUPPORTED naming it). */
  effml_status (*flops)(effml_context *ctx, const effml_layer *layer, int64_t in_width,
                        double *flops);
  uint32_t traits; /* EFFML__KIND_* */
} effml__layer_ops;

struct effml_layer {
  const effml__layer_ops *ops;
  const char *kind;        /* ops->name unless set by effml__layer_set_kind (static string) */
  effml_context *ctx;      /* allocator of the layer */
  int64_t in_features;     /* 0 = width-agnostic (activations) */
  int64_t out_features;    /* 0 = same as input */
  int32_t n_params, cap_params;
  effml__param *params;
  int32_t n_children, cap_children;
  effml_layer **children;  /* owned (effml__layer_adopt); freed after ops->destroy */
  int32_t train_pending;   /* a TRAIN forward ran and backward may follow */
  int32_t in_container;    /* owned by another layer (cannot be adopted again) */
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
/* Name this layer's kind (a static string) when its ops table serves several kinds. */
EFFML__HIDDEN void effml__layer_set_kind(effml_layer *layer, const char *kind);
/* Take ownership of `child` (appended as the last child; freed with the
 * layer).  Fails with EFFML_E_STATE when child is already owned or is layer
 * itself; the caller keeps child on error. */
EFFML__HIDDEN effml_status effml__layer_adopt(effml_context *ctx, effml_layer *layer,
                                              effml_layer *child);
/* Undo effml__layer_adopt for `child` (error paths: the caller keeps it). */
EFFML__HIDDEN void effml__layer_disown(effml_layer *layer, effml_layer *child);
static inline int32_t effml__layer_num_children(const effml_layer *l) {
  return l ? l->n_children : 0;
}
static inline effml_layer *effml__layer_child(const effml_layer *l, int32_t i) {
  return (l && i >= 0 && i < l->n_children) ? l->children[i] : NULL;
}
/* Visit `layer` and every layer nested in it, parents before children,
 * children in order; stops at the first non-OK status. */
typedef effml_status (*effml__layer_visit_fn)(effml_context *ctx, effml_layer *layer, void *arg);
EFFML__HIDDEN effml_status effml__layer_walk(effml_context *ctx, effml_layer *layer,
                                             effml__layer_visit_fn fn, void *arg);
/* FLOPs of one forward row of width in_width through `layer` (ops->flops;
 * EFFML_E_UNSUPPORTED naming the kind when it has no FLOP rule). */
EFFML__HIDDEN effml_status effml__layer_flops(effml_context *ctx, const effml_layer *layer,
                                              int64_t in_width, double *flops);
/* The layer's i-th param entry (resolving container mirrors to the origin). */
EFFML__HIDDEN effml__param *effml__layer_param_entry(effml_layer *layer, int32_t i);
/* Convenience: f32 data of param i's value / grad (contiguous). */
EFFML__HIDDEN float *effml__param_f32(effml_layer *layer, int32_t i);
EFFML__HIDDEN float *effml__grad_f32(effml_layer *layer, int32_t i);

/* Bias of a layer with outputs y[b, out] (f32, row-major, contiguous): the one
 * broadcast add and the one gradient, shared by every kind that has a bias.
 * effml__bias_add: y[r, j] += bias[j].  effml__bias_grad: db[j] += dy[r, j],
 * rows r = 0..b-1 in order (so the sum does not depend on the thread count). */
EFFML__HIDDEN void effml__bias_add(float *y, const float *bias, int64_t b, int64_t out);
EFFML__HIDDEN void effml__bias_grad(float *db, const float *dy, int64_t b, int64_t out);

/* Grow the layer-owned buffer *buf (capacity *cap floats) to hold n floats; the
 * contents are not kept.  Returns 1, or 0 out of memory (*buf NULL, *cap 0; no
 * error recorded: the caller names what failed). */
EFFML__HIDDEN int effml__grow_f32(effml_context *ctx, float **buf, size_t *cap, size_t n);
/* Scratch of n floats for a forward pass, "kept for backward in training, temporary
 * in inference": with `keep` (a TRAIN forward) *out is the layer's buffer *buf grown
 * by effml__grow_f32 and kept for backward; otherwise a fresh temporary, so an
 * inference forward writes nothing into the layer (threads may share it).  Returns 1,
 * or 0 out of memory (no error recorded).  Release with effml__fwd_scratch_done. */
EFFML__HIDDEN int effml__fwd_scratch(effml_context *ctx, int keep, float **buf, size_t *cap,
                                     size_t n, float **out);
/* Frees p when it is a temporary (keep == 0); a kept buffer stays with the layer. */
EFFML__HIDDEN void effml__fwd_scratch_done(effml_context *ctx, int keep, float *p);

/* The registry (lib/registry/layer_kinds.c): every ops table, once. */
EFFML__HIDDEN int32_t effml__layer_kind_count(void);
EFFML__HIDDEN const effml__layer_ops *effml__layer_kind_at(int32_t i);
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

/* effml_layer_dense_create() without the random initialisation (weight and bias zero): for a
 * caller that fills the weights itself (a merge from a file's tensors). */
EFFML__HIDDEN effml_status effml__layer_dense_create_uninit(effml_context *ctx, int64_t in_features,
                                                            int64_t out_features, int32_t bias, effml_layer **out);

#endif /* EFFML_LAYER_INTERNAL_H */
