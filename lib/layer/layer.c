/* The generic effml_layer: validation shared by every layer kind, parameter
 * bookkeeping, save/load by name, and the sequential container. */
#include <stdio.h>
#include <string.h>

#include "layer_internal.h"

/* ---- construction helpers for layer kinds ---- */

effml_status effml__layer_new(effml_context *ctx, const effml__layer_ops *ops, int64_t in_features,
                              int64_t out_features, void *impl, effml_layer **out) {
  effml_layer *l = (effml_layer *)effml__calloc(ctx, 1, sizeof *l);
  if (l == NULL) return effml__err(ctx, EFFML_E_NOMEM, "out of memory creating a %s layer", ops->name);
  l->ops = ops;
  l->kind = ops->name;
  l->ctx = ctx;
  l->in_features = in_features;
  l->out_features = out_features;
  l->impl = impl;
  *out = l;
  return EFFML_OK;
}

void effml__layer_set_kind(effml_layer *layer, const char *kind) { layer->kind = kind; }

effml_status effml__layer_adopt(effml_context *ctx, effml_layer *layer, effml_layer *child) {
  if (child == layer)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "a %s layer cannot contain itself", layer->kind);
  if (child->in_container)
    return effml__err(ctx, EFFML_E_STATE, "the %s layer is already owned by another layer",
                      child->kind);
  if (layer->n_children == layer->cap_children) {
    int32_t cap = layer->cap_children ? 2 * layer->cap_children : 4;
    effml_layer **c = (effml_layer **)effml__calloc(ctx, (size_t)cap, sizeof *c);
    if (c == NULL)
      return effml__err(ctx, EFFML_E_NOMEM, "out of memory adding a child to a %s layer",
                        layer->kind);
    if (layer->n_children) memcpy(c, layer->children, sizeof *c * (size_t)layer->n_children);
    effml__free(ctx, layer->children);
    layer->children = c;
    layer->cap_children = cap;
  }
  layer->children[layer->n_children++] = child;
  child->in_container = 1;
  return EFFML_OK;
}

void effml__layer_disown(effml_layer *layer, effml_layer *child) {
  for (int32_t i = 0; child && i < layer->n_children; ++i) {
    if (layer->children[i] != child) continue;
    memmove(layer->children + i, layer->children + i + 1,
            sizeof *layer->children * (size_t)(layer->n_children - i - 1));
    layer->n_children--;
    child->in_container = 0;
    return;
  }
}

effml_status effml__layer_walk(effml_context *ctx, effml_layer *layer, effml__layer_visit_fn fn,
                               void *arg) {
  if (layer == NULL) return EFFML_OK;
  EFFML__TRY(fn(ctx, layer, arg));
  for (int32_t i = 0; i < layer->n_children; ++i)
    EFFML__TRY(effml__layer_walk(ctx, layer->children[i], fn, arg));
  return EFFML_OK;
}

effml_status effml__layer_flops(effml_context *ctx, const effml_layer *layer, int64_t in_width,
                                double *flops) {
  if (layer->ops->flops == NULL)
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "layer kind '%s' has no FLOP rule", layer->kind);
  return layer->ops->flops(ctx, layer, in_width, flops);
}

static effml_status grow_params(effml_context *ctx, effml_layer *l) {
  if (l->n_params < l->cap_params) return EFFML_OK;
  int32_t cap = l->cap_params ? 2 * l->cap_params : 4;
  effml__param *p = (effml__param *)effml__calloc(ctx, (size_t)cap, sizeof *p);
  if (p == NULL) return effml__err(ctx, EFFML_E_NOMEM, "out of memory growing a parameter list");
  if (l->n_params) memcpy(p, l->params, sizeof *p * (size_t)l->n_params);
  effml__free(ctx, l->params);
  l->params = p;
  l->cap_params = cap;
  return EFFML_OK;
}

effml_status effml__layer_add_param(effml_context *ctx, effml_layer *layer, const char *name,
                                    int32_t ndim, const int64_t *shape, int32_t trainable,
                                    int32_t *index) {
  EFFML__TRY(grow_params(ctx, layer));
  effml__param *p = &layer->params[layer->n_params];
  memset(p, 0, sizeof *p);
  effml_status st;
  p->name = effml__strdup(ctx, name);
  if (p->name == NULL) return effml__err(ctx, EFFML_E_NOMEM, "out of memory naming parameter '%s'", name);
  st = effml_tensor_create(ctx, EFFML_F32, ndim, shape, &p->value);
  if (st == EFFML_OK) st = effml_tensor_create(ctx, EFFML_F32, ndim, shape, &p->grad);
  if (st != EFFML_OK) {
    effml_tensor_free(p->value);
    effml__free(ctx, p->name);
    memset(p, 0, sizeof *p);
    return st;
  }
  p->trainable = trainable != 0;
  if (index) *index = layer->n_params;
  layer->n_params++;
  return EFFML_OK;
}

effml_status effml__layer_add_shared_param(effml_context *ctx, effml_layer *layer, const char *name,
                                           effml_tensor *value, effml_tensor *grad,
                                           int32_t trainable) {
  EFFML__TRY(grow_params(ctx, layer));
  effml__param *p = &layer->params[layer->n_params];
  memset(p, 0, sizeof *p);
  p->name = effml__strdup(ctx, name);
  if (p->name == NULL) return effml__err(ctx, EFFML_E_NOMEM, "out of memory naming parameter '%s'", name);
  p->value = value;
  p->grad = grad;
  p->trainable = trainable != 0;
  p->shared = 1;
  layer->n_params++;
  return EFFML_OK;
}

effml__param *effml__layer_param_entry(effml_layer *layer, int32_t i) {
  if (layer == NULL || i < 0 || i >= layer->n_params) return NULL;
  effml__param *p = &layer->params[i];
  while (p->origin) p = p->origin;
  return p;
}

float *effml__param_f32(effml_layer *layer, int32_t i) {
  effml__param *p = effml__layer_param_entry(layer, i);
  return p ? effml__f32(p->value) : NULL;
}

float *effml__grad_f32(effml_layer *layer, int32_t i) {
  effml__param *p = effml__layer_param_entry(layer, i);
  return p ? effml__f32(p->grad) : NULL;
}

void effml__bias_add(float *y, const float *bias, int64_t b, int64_t out) {
  for (int64_t r = 0; r < b; ++r)
    for (int64_t j = 0; j < out; ++j) y[r * out + j] += bias[j];
}

int effml__grow_f32(effml_context *ctx, float **buf, size_t *cap, size_t n) {
  if (*cap >= n) return 1;
  effml__free(ctx, *buf);
  *buf = (float *)effml__malloc(ctx, n * sizeof(float));
  *cap = *buf ? n : 0;
  return *buf != NULL;
}

int effml__fwd_scratch(effml_context *ctx, int keep, float **buf, size_t *cap, size_t n,
                       float **out) {
  if (keep) {
    const int ok = effml__grow_f32(ctx, buf, cap, n);
    *out = *buf;
    return ok;
  }
  *out = (float *)effml__malloc(ctx, n * sizeof(float));
  return *out != NULL;
}

void effml__fwd_scratch_done(effml_context *ctx, int keep, float *p) {
  if (!keep) effml__free(ctx, p);
}

void effml__bias_grad(float *db, const float *dy, int64_t b, int64_t out) {
  for (int64_t r = 0; r < b; ++r)
    for (int64_t j = 0; j < out; ++j) db[j] += dy[r * out + j];
}

/* ---- generic interface ---- */

const char *effml_layer_kind(const effml_layer *layer) { return layer ? layer->kind : "none"; }
int64_t effml_layer_in_features(const effml_layer *layer) { return layer ? layer->in_features : 0; }
int64_t effml_layer_out_features(const effml_layer *layer) {
  if (layer == NULL) return 0;
  return layer->out_features ? layer->out_features : layer->in_features;
}

effml_status effml_layer_forward(effml_context *ctx, effml_layer *layer, const effml_tensor *x,
                                 effml_tensor *y, int32_t mode) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, layer);
  if (mode != EFFML_LAYER_MODE_TRAIN && mode != EFFML_LAYER_MODE_INFER)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_layer_forward: mode=%d must be EFFML_LAYER_MODE_TRAIN (1) or EFFML_LAYER_MODE_INFER (0)", (int)mode);
  EFFML__TRY(effml__check_tensor(ctx, x, "x", EFFML_F32, 2, 1));
  EFFML__TRY(effml__check_tensor(ctx, y, "y", EFFML_F32, 2, 1));
  EFFML__TRY(effml__check_writable(ctx, y, "y"));
  int64_t batch = x->shape[0], in = x->shape[1];
  if (layer->in_features && in != layer->in_features)
    return effml__err(ctx, EFFML_E_SHAPE, "%s layer: x has %lld features, the layer expects in_features=%lld",
                      layer->kind, (long long)in, (long long)layer->in_features);
  int64_t out = layer->out_features ? layer->out_features : in;
  EFFML__TRY(effml__check_dim(ctx, y, "y", 0, batch));
  EFFML__TRY(effml__check_dim(ctx, y, "y", 1, out));
  if (effml__tensors_overlap(x, y))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s layer: y must not alias x", layer->kind);
  /* Inference must not write the layer (several threads may share it). */
  if (mode == EFFML_LAYER_MODE_TRAIN) layer->train_pending = 0;
  effml_status st = layer->ops->forward(ctx, layer, x, y, mode);
  if (st == EFFML_OK && mode == EFFML_LAYER_MODE_TRAIN) {
    layer->train_pending = 1;
    layer->pending_batch = batch;
    layer->pending_width = in;
  }
  return st;
}

effml_status effml_layer_backward(effml_context *ctx, effml_layer *layer, const effml_tensor *dy,
                                  effml_tensor *dx) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, layer);
  if (!layer->train_pending)
    return effml__err(ctx, EFFML_E_STATE,
                      "%s layer: backward needs a preceding forward in EFFML_LAYER_MODE_TRAIN",
                      layer->kind);
  if (layer->ops->backward == NULL)
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "%s layer has no backward pass", layer->kind);
  int64_t in = layer->pending_width;
  int64_t out = layer->out_features ? layer->out_features : in;
  EFFML__TRY(effml__check_tensor(ctx, dy, "dy", EFFML_F32, 2, 1));
  EFFML__TRY(effml__check_dim(ctx, dy, "dy", 0, layer->pending_batch));
  EFFML__TRY(effml__check_dim(ctx, dy, "dy", 1, out));
  if (dx) {
    EFFML__TRY(effml__check_tensor(ctx, dx, "dx", EFFML_F32, 2, 1));
    EFFML__TRY(effml__check_writable(ctx, dx, "dx"));
    EFFML__TRY(effml__check_dim(ctx, dx, "dx", 0, layer->pending_batch));
    EFFML__TRY(effml__check_dim(ctx, dx, "dx", 1, in));
    if (effml__tensors_overlap(dx, dy))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s layer: dx must not alias dy", layer->kind);
  }
  effml_status st = layer->ops->backward(ctx, layer, dy, dx);
  if (st == EFFML_OK) layer->train_pending = 0;
  return st;
}

void effml_layer_free(effml_layer *layer) {
  if (layer == NULL) return;
  effml_context *ctx = layer->ctx;
  if (layer->ops->destroy) layer->ops->destroy(layer);
  for (int32_t i = 0; i < layer->n_children; ++i) effml_layer_free(layer->children[i]);
  effml__free(ctx, layer->children);
  for (int32_t i = 0; i < layer->n_params; ++i) {
    effml__param *p = &layer->params[i];
    if (!p->shared && p->origin == NULL) {
      effml_tensor_free(p->value);
      effml_tensor_free(p->grad);
    }
    effml__free(ctx, p->name);
  }
  effml__free(ctx, layer->params);
  effml__free(ctx, layer);
}

int32_t effml_layer_num_params(const effml_layer *layer) { return layer ? layer->n_params : 0; }

const char *effml_layer_param_name(const effml_layer *layer, int32_t i) {
  if (layer == NULL || i < 0 || i >= layer->n_params) return NULL;
  return layer->params[i].name;
}

effml_tensor *effml_layer_param(effml_layer *layer, int32_t i) {
  effml__param *p = effml__layer_param_entry(layer, i);
  return p ? p->value : NULL;
}

effml_tensor *effml_layer_param_grad(effml_layer *layer, int32_t i) {
  effml__param *p = effml__layer_param_entry(layer, i);
  return p ? p->grad : NULL;
}

int32_t effml_layer_param_trainable(const effml_layer *layer, int32_t i) {
  effml__param *p = effml__layer_param_entry((effml_layer *)layer, i);
  return p ? p->trainable : 0;
}

effml_status effml_layer_set_trainable(effml_context *ctx, effml_layer *layer, const char *name,
                                       int32_t trainable) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, layer);
  int found = 0;
  for (int32_t i = 0; i < layer->n_params; ++i) {
    if (name == NULL || strcmp(layer->params[i].name, name) == 0) {
      effml__param *e = effml__layer_param_entry(layer, i);
      found = 1;
      if (trainable && e->fixed) {
        if (name == NULL) continue; /* "all": every parameter that can be trained */
        return effml__err(ctx, EFFML_E_UNSUPPORTED,
                          "%s layer's parameter '%s' cannot be trained: %s", layer->kind, name,
                          e->fixed);
      }
      e->trainable = trainable != 0;
    }
  }
  if (!found && name != NULL)
    return effml__err(ctx, EFFML_E_NOT_FOUND, "%s layer has no parameter named '%s'",
                      layer->kind, name);
  return EFFML_OK;
}

int64_t effml_layer_count_params(const effml_layer *layer, int32_t trainable_only) {
  if (layer == NULL) return 0;
  int64_t n = 0;
  for (int32_t i = 0; i < layer->n_params; ++i) {
    effml__param *p = effml__layer_param_entry((effml_layer *)layer, i);
    if (!trainable_only || p->trainable) n += effml_tensor_numel(p->value);
  }
  return n;
}

void effml_layer_zero_grad(effml_layer *layer) {
  if (layer == NULL) return;
  for (int32_t i = 0; i < layer->n_params; ++i) {
    effml__param *p = effml__layer_param_entry(layer, i);
    memset(p->grad->data, 0, effml_tensor_nbytes(p->grad));
  }
}

/* ---- save / load ---- */

static char *join_name(effml_context *ctx, const char *prefix, const char *name) {
  size_t a = prefix ? strlen(prefix) : 0, b = strlen(name);
  char *s = (char *)effml__malloc(ctx, a + b + 1);
  if (s == NULL) return NULL;
  if (a) memcpy(s, prefix, a);
  memcpy(s + a, name, b + 1);
  return s;
}

effml_status effml_layer_save(effml_context *ctx, const effml_layer *layer, const char *path,
                              const char *prefix) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, layer);
  EFFML__CHECK_NULL(ctx, path);
  int32_t n = layer->n_params;
  if (n == 0) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_layer_save: %s layer has no parameters", layer->kind);
  char **names = (char **)effml__calloc(ctx, (size_t)n, sizeof *names);
  const effml_tensor **ts = (const effml_tensor **)effml__calloc(ctx, (size_t)n, sizeof *ts);
  effml_status st = EFFML_OK;
  if (names == NULL || ts == NULL) st = effml__err(ctx, EFFML_E_NOMEM, "effml_layer_save: out of memory");
  for (int32_t i = 0; st == EFFML_OK && i < n; ++i) {
    names[i] = join_name(ctx, prefix, layer->params[i].name);
    if (names[i] == NULL) st = effml__err(ctx, EFFML_E_NOMEM, "effml_layer_save: out of memory");
    ts[i] = effml__layer_param_entry((effml_layer *)layer, i)->value;
  }
  if (st == EFFML_OK) {
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    st = effml_safetensors_save(ctx, path, n, (const char *const *)names,
                                (const effml_tensor *const *)ts, 1, mk, mv);
  }
  for (int32_t i = 0; names && i < n; ++i) effml__free(ctx, names[i]);
  effml__free(ctx, names);
  effml__free(ctx, (void *)ts);
  return st;
}

effml_status effml_layer_load(effml_context *ctx, effml_layer *layer, const char *path,
                              const char *prefix, uint32_t flags) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, layer);
  EFFML__CHECK_NULL(ctx, path);
  if (flags & ~(uint32_t)EFFML_LAYER_LOAD_STRICT)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_layer_load: unknown flags=0x%x",
                      (unsigned)flags);
  effml_safetensors *sf = NULL;
  EFFML__TRY(effml_safetensors_load(ctx, path, EFFML_IO_SAFETENSORS_MMAP, &sf));
  int32_t n = layer->n_params;
  effml_tensor **tmp = (effml_tensor **)effml__calloc(ctx, (size_t)(n ? n : 1), sizeof *tmp);
  effml_status st = tmp ? EFFML_OK : effml__err(ctx, EFFML_E_NOMEM, "effml_layer_load: out of memory");
  /* Phase 1: find, check and convert everything; no parameter changes yet. */
  for (int32_t i = 0; st == EFFML_OK && i < n; ++i) {
    char *key = join_name(ctx, prefix, layer->params[i].name);
    if (key == NULL) {
      st = effml__err(ctx, EFFML_E_NOMEM, "effml_layer_load: out of memory");
      break;
    }
    const effml_tensor *src = NULL;
    effml_tensor *dst = effml__layer_param_entry(layer, i)->value;
    st = effml_safetensors_get(ctx, sf, key, &src);
    if (st == EFFML_E_NOT_FOUND)
      st = effml__err(ctx, EFFML_E_NOT_FOUND, "effml_layer_load: '%s' has no tensor '%s'", path, key);
    if (st == EFFML_OK && (src->ndim != dst->ndim ||
                           memcmp(src->shape, dst->shape, sizeof(int64_t) * (size_t)dst->ndim))) {
      char a[128], b[128];
      st = effml__err(ctx, EFFML_E_SHAPE, "effml_layer_load: tensor '%s' has shape %s, the parameter has %s",
                      key, effml__shape_str(src, a, sizeof a), effml__shape_str(dst, b, sizeof b));
    }
    if (st == EFFML_OK && src->dtype != EFFML_F32 && src->dtype != EFFML_F64 &&
        src->dtype != EFFML_F16 && src->dtype != EFFML_BF16)
      st = effml__err(ctx, EFFML_E_DTYPE, "effml_layer_load: tensor '%s' has dtype %s, expected a float type",
                      key, effml_tensor_dtype_name(src->dtype));
    if (st == EFFML_OK) st = effml_tensor_convert(ctx, src, EFFML_F32, &tmp[i]);
    effml__free(ctx, key);
  }
  if (st == EFFML_OK && (flags & EFFML_LAYER_LOAD_STRICT)) {
    size_t plen = prefix ? strlen(prefix) : 0;
    for (int64_t k = 0; st == EFFML_OK && k < effml_safetensors_count(sf); ++k) {
      const char *fname = effml_safetensors_name(sf, k);
      if (plen && strncmp(fname, prefix, plen) != 0) continue;
      int hit = 0;
      for (int32_t i = 0; i < n && !hit; ++i) hit = strcmp(fname + plen, layer->params[i].name) == 0;
      if (!hit)
        st = effml__err(ctx, EFFML_E_NOT_FOUND,
                        "effml_layer_load (strict): file tensor '%s' matches no parameter", fname);
    }
  }
  /* Phase 2: commit. */
  for (int32_t i = 0; st == EFFML_OK && i < n; ++i) {
    effml_tensor *dst = effml__layer_param_entry(layer, i)->value;
    memcpy(dst->data, tmp[i]->data, effml_tensor_nbytes(dst));
  }
  for (int32_t i = 0; tmp && i < n; ++i) effml_tensor_free(tmp[i]);
  effml__free(ctx, tmp);
  effml_safetensors_free(sf);
  return st;
}

/* ---- sequential container ---- */

/* The children are the layer's generic children (effml__layer_adopt); the
 * impl keeps the per-child widths and the training buffers. */
typedef struct seq_impl {
  int32_t cap;              /* capacity of widths/acts/grads */
  int64_t *widths;          /* widths[k] = output width of child k */
  effml_tensor **acts;      /* acts[k] = output of child k (k < n-1), per batch */
  effml_tensor **grads;     /* grads[k] = dL/d(acts[k]) */
  int64_t batch;            /* batch the buffers are sized for */
  int64_t in_width;         /* width the buffers were sized for */
  int32_t locked;           /* added to another container: no more adds */
} seq_impl;

static void seq_free_buffers(effml_layer *l, seq_impl *s) {
  for (int32_t k = 0; k < l->n_children; ++k) {
    if (s->acts) { effml_tensor_free(s->acts[k]); s->acts[k] = NULL; }
    if (s->grads) { effml_tensor_free(s->grads[k]); s->grads[k] = NULL; }
  }
  s->batch = 0;
}

static void seq_destroy(effml_layer *l) {
  seq_impl *s = (seq_impl *)l->impl;
  if (s == NULL) return;
  seq_free_buffers(l, s);
  effml__free(l->ctx, s->widths);
  effml__free(l->ctx, s->acts);
  effml__free(l->ctx, s->grads);
  effml__free(l->ctx, s);
}

/* Make sure the intermediate buffers fit [batch, width_k]. */
static effml_status seq_buffers(effml_context *ctx, effml_layer *l, int64_t batch, int64_t in_w,
                                int need_grads) {
  seq_impl *s = (seq_impl *)l->impl;
  if (s->batch != batch || s->in_width != in_w) seq_free_buffers(l, s);
  s->batch = batch;
  s->in_width = in_w;
  int64_t w = in_w;
  for (int32_t k = 0; k + 1 < l->n_children; ++k) {
    int64_t ow = effml_layer_out_features(l->children[k]);
    w = ow ? ow : w;
    if (s->acts[k] == NULL) EFFML__TRY(effml__tensor_f32_2d(ctx, batch, w, &s->acts[k]));
    if (need_grads && s->grads[k] == NULL) EFFML__TRY(effml__tensor_f32_2d(ctx, batch, w, &s->grads[k]));
  }
  return EFFML_OK;
}

/* Inference keeps nothing in the container: two ping-pong buffers of the
 * widest intermediate width are allocated per call from the caller's context,
 * so several threads may run inference on one model at once (layer.h). */
static effml_status seq_forward_infer(effml_context *ctx, effml_layer *l, const effml_tensor *x,
                                      effml_tensor *y) {
  const int32_t n = l->n_children;
  int64_t batch = x->shape[0], w = x->shape[1], wmax = 1;
  for (int32_t k = 0; k + 1 < n; ++k) {
    int64_t ow = effml_layer_out_features(l->children[k]);
    w = ow ? ow : w;
    if (w > wmax) wmax = w;
  }
  float *buf[2] = {NULL, NULL};
  size_t bytes;
  if (!effml__mul_size((size_t)batch, (size_t)wmax, &bytes) ||
      !effml__mul_size(bytes, sizeof(float), &bytes))
    return effml__err(ctx, EFFML_E_OVERFLOW, "sequential forward: activation size overflows");
  if (n > 1) {
    buf[0] = (float *)effml__alloc_or_err(ctx, bytes, "sequential activations");
    buf[1] = n > 2 ? (float *)effml__alloc_or_err(ctx, bytes, "sequential activations") : NULL;
    if (buf[0] == NULL || (n > 2 && buf[1] == NULL)) {
      effml__free(ctx, buf[0]);
      effml__free(ctx, buf[1]);
      return EFFML_E_NOMEM;
    }
  }
  effml_status st = EFFML_OK;
  effml_tensor *views[2] = {NULL, NULL};
  const effml_tensor *in = x;
  w = x->shape[1];
  for (int32_t k = 0; st == EFFML_OK && k < n; ++k) {
    effml_tensor *out = y;
    if (k + 1 < n) {
      int64_t ow = effml_layer_out_features(l->children[k]);
      w = ow ? ow : w;
      int64_t shape[2] = {batch, w};
      effml_tensor_free(views[k & 1]);
      views[k & 1] = NULL;
      st = effml_tensor_wrap(ctx, EFFML_F32, 2, shape, NULL, buf[k & 1], bytes, 0, &views[k & 1]);
      if (st != EFFML_OK) break;
      out = views[k & 1];
    }
    st = effml_layer_forward(ctx, l->children[k], in, out, EFFML_LAYER_MODE_INFER);
    in = out;
  }
  effml_tensor_free(views[0]);
  effml_tensor_free(views[1]);
  effml__free(ctx, buf[0]);
  effml__free(ctx, buf[1]);
  return st;
}

static effml_status seq_forward(effml_context *ctx, effml_layer *l, const effml_tensor *x,
                                effml_tensor *y, int32_t mode) {
  seq_impl *s = (seq_impl *)l->impl;
  const int32_t n = l->n_children;
  if (n == 0) {
    memcpy(y->data, x->data, effml_tensor_nbytes(x));
    return EFFML_OK;
  }
  if (mode == EFFML_LAYER_MODE_INFER) return seq_forward_infer(ctx, l, x, y);
  EFFML__TRY(seq_buffers(ctx, l, x->shape[0], x->shape[1], 1));
  const effml_tensor *in = x;
  for (int32_t k = 0; k < n; ++k) {
    effml_tensor *out = (k + 1 < n) ? s->acts[k] : y;
    EFFML__TRY(effml_layer_forward(ctx, l->children[k], in, out, mode));
    in = out;
  }
  return EFFML_OK;
}

static effml_status seq_backward(effml_context *ctx, effml_layer *l, const effml_tensor *dy,
                                 effml_tensor *dx) {
  seq_impl *s = (seq_impl *)l->impl;
  if (l->n_children == 0) {
    if (dx) memcpy(dx->data, dy->data, effml_tensor_nbytes(dy));
    return EFFML_OK;
  }
  const effml_tensor *g = dy;
  for (int32_t k = l->n_children - 1; k >= 0; --k) {
    effml_tensor *gin = k > 0 ? s->grads[k - 1] : dx;
    /* The first child needs no input gradient when the caller asked for none;
     * a child with no trainable parameters before it still needs its dx. */
    EFFML__TRY(effml_layer_backward(ctx, l->children[k], g, gin));
    g = gin;
  }
  return EFFML_OK;
}

/* The children one after the other: each sees the previous output width. */
static effml_status seq_flops(effml_context *ctx, const effml_layer *l, int64_t in_width,
                              double *flops) {
  double acc = 0.0;
  int64_t w = in_width;
  for (int32_t k = 0; k < l->n_children; ++k) {
    double f = 0.0;
    EFFML__TRY(effml__layer_flops(ctx, l->children[k], w, &f));
    acc += f;
    int64_t ow = effml_layer_out_features(l->children[k]);
    w = ow ? ow : w;
  }
  *flops = acc;
  return EFFML_OK;
}

const effml__layer_ops effml__sequential_ops = {
    .name = "sequential",
    .forward = seq_forward,
    .backward = seq_backward,
    .destroy = seq_destroy,
    .flops = seq_flops,
    .traits = EFFML__KIND_CONTAINER,
};

effml_status effml_layer_sequential_create(effml_context *ctx, effml_layer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out);
  seq_impl *s = (seq_impl *)effml__calloc(ctx, 1, sizeof *s);
  if (s == NULL) return effml__err(ctx, EFFML_E_NOMEM, "effml_layer_sequential_create: out of memory");
  effml_layer *l = NULL;
  effml_status st = effml__layer_new(ctx, &effml__sequential_ops, 0, 0, s, &l);
  if (st != EFFML_OK) {
    effml__free(ctx, s);
    return st;
  }
  *out = l;
  return EFFML_OK;
}

static int is_sequential(const effml_layer *l) { return l && l->ops == &effml__sequential_ops; }

/* Grow widths/acts/grads to hold one more child. */
static effml_status seq_reserve(effml_context *ctx, effml_layer *seq, seq_impl *s) {
  if (seq->n_children < s->cap) return EFFML_OK;
  int32_t cap = s->cap ? 2 * s->cap : 8;
  int64_t *w = (int64_t *)effml__calloc(ctx, (size_t)cap, sizeof *w);
  effml_tensor **a = (effml_tensor **)effml__calloc(ctx, (size_t)cap, sizeof *a);
  effml_tensor **g = (effml_tensor **)effml__calloc(ctx, (size_t)cap, sizeof *g);
  if (!w || !a || !g) {
    effml__free(ctx, w); effml__free(ctx, a); effml__free(ctx, g);
    return effml__err(ctx, EFFML_E_NOMEM, "effml_layer_sequential_add: out of memory");
  }
  seq_free_buffers(seq, s);
  if (seq->n_children) memcpy(w, s->widths, sizeof *w * (size_t)seq->n_children);
  effml__free(ctx, s->widths);
  effml__free(ctx, s->acts); effml__free(ctx, s->grads);
  s->widths = w; s->acts = a; s->grads = g;
  s->cap = cap;
  return EFFML_OK;
}

effml_status effml_layer_sequential_add(effml_context *ctx, effml_layer *seq, effml_layer *child) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, seq);
  EFFML__CHECK_NULL(ctx, child);
  if (!is_sequential(seq))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_layer_sequential_add: 'seq' is a %s layer, not a sequential container", seq->kind);
  if (child == seq)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_layer_sequential_add: a container cannot contain itself");
  seq_impl *s = (seq_impl *)seq->impl;
  const int32_t n = seq->n_children;
  if (child->in_container)
    return effml__err(ctx, EFFML_E_STATE,
                      "effml_layer_sequential_add: the %s layer is already owned by a container",
                      child->kind);
  if (s->locked)
    return effml__err(ctx, EFFML_E_STATE, "effml_layer_sequential_add: this container is already inside another container");
  int64_t prev = n ? s->widths[n - 1] : seq->in_features;
  if (child->in_features && prev && child->in_features != prev)
    return effml__err(ctx, EFFML_E_SHAPE,
                      "effml_layer_sequential_add: child %d (%s) has in_features=%lld, the previous output width is %lld",
                      (int)n, child->kind, (long long)child->in_features, (long long)prev);
  EFFML__TRY(seq_reserve(ctx, seq, s));
  /* Mirror the child's parameters as "<index>.<name>"; all-or-nothing. */
  int32_t first = seq->n_params;
  effml_status st = EFFML_OK;
  for (int32_t i = 0; st == EFFML_OK && i < child->n_params; ++i) {
    char buf[32];
    snprintf(buf, sizeof buf, "%d.", (int)n);
    char *name = join_name(ctx, buf, child->params[i].name);
    if (name == NULL) {
      st = effml__err(ctx, EFFML_E_NOMEM, "effml_layer_sequential_add: out of memory");
      break;
    }
    st = grow_params(ctx, seq);
    if (st == EFFML_OK) {
      effml__param *p = &seq->params[seq->n_params++];
      memset(p, 0, sizeof *p);
      p->name = name;
      p->origin = &child->params[i];
      p->value = child->params[i].value;
      p->grad = child->params[i].grad;
    } else {
      effml__free(ctx, name);
    }
  }
  if (st == EFFML_OK) st = effml__layer_adopt(ctx, seq, child);
  if (st != EFFML_OK) {
    while (seq->n_params > first) effml__free(ctx, seq->params[--seq->n_params].name);
    return st;
  }
  s->widths[n] = child->out_features ? child->out_features : (child->in_features ? child->in_features : prev);
  if (n == 0) seq->in_features = child->in_features;
  seq->out_features = s->widths[n];
  if (is_sequential(child)) ((seq_impl *)child->impl)->locked = 1;
  seq_free_buffers(seq, s);
  return EFFML_OK;
}

int32_t effml_layer_sequential_count(const effml_layer *seq) {
  return is_sequential(seq) ? seq->n_children : 0;
}

effml_layer *effml_layer_sequential_get(effml_layer *seq, int32_t i) {
  return is_sequential(seq) ? effml__layer_child(seq, i) : NULL;
}
