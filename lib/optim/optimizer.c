/* SGD (momentum, Nesterov) and AdamW over a set of parameter tensors, with
 * learning-rate schedules and global-norm gradient clipping.
 *
 * The updates follow PyTorch 1.13's single-tensor implementations
 * (torch/optim/sgd.py::_single_tensor_sgd, adamw.py::_single_tensor_adamw)
 * operation by operation, so one step agrees with PyTorch to f32 rounding.
 * Whether a parameter is updated is read from its layer's trainable flag at
 * every step: freezing after registration works, and a frozen parameter (and
 * its optimizer state) is never written.
 */
#include <math.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../layer/layer_internal.h"

typedef struct opt_param {
  char *name;                 /* owned; may be NULL */
  effml_tensor *value, *grad; /* borrowed */
  const effml__param *entry;  /* layer entry holding the trainable flag; NULL = always trainable */
  float *m;                   /* SGD momentum buffer / AdamW first moment (owned) */
  float *v;                   /* AdamW second moment (owned) */
  int64_t step;               /* updates applied to this parameter */
} opt_param;

struct effml_optimizer {
  effml_context *ctx;
  effml_optimizer_options o;
  opt_param *p;
  int32_t n, cap;
  int64_t steps;
};

void effml_optimizer_options_init(effml_optimizer_options *opt) {
  if (!opt) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->algorithm = EFFML_OPTIM_ADAMW;
  opt->lr = 1e-3;
  opt->weight_decay = 1e-2;
  opt->beta1 = 0.9;
  opt->beta2 = 0.999;
  opt->eps = 1e-8;
  opt->schedule = EFFML_OPTIM_LR_CONSTANT;
}

#define BAD(field, fmt, ...)                                                                   \
  effml__err(ctx, EFFML_E_INVALID_ARG, "effml_optimizer_create: " field "=" fmt " " __VA_ARGS__)

static effml_status validate(effml_context *ctx, const effml_optimizer_options *o) {
  if (o->algorithm != EFFML_OPTIM_SGD && o->algorithm != EFFML_OPTIM_ADAMW)
    return BAD("algorithm", "%d", "is not EFFML_OPTIM_SGD (1) or EFFML_OPTIM_ADAMW (2)",
               (int)o->algorithm);
  if (!(o->lr > 0) || !isfinite(o->lr)) return BAD("lr", "%g", "must be finite and > 0", o->lr);
  if (!(o->weight_decay >= 0) || !isfinite(o->weight_decay))
    return BAD("weight_decay", "%g", "must be finite and >= 0", o->weight_decay);
  if (o->algorithm == EFFML_OPTIM_SGD) {
    if (!(o->momentum >= 0 && o->momentum < 1))
      return BAD("momentum", "%g", "must be in [0, 1)", o->momentum);
    if (!(o->dampening >= 0 && o->dampening <= 1))
      return BAD("dampening", "%g", "must be in [0, 1]", o->dampening);
    if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
      return BAD("nesterov", "%d", "needs momentum > 0 and dampening 0 (got %g, %g)",
                 (int)o->nesterov, o->momentum, o->dampening);
  } else {
    if (!(o->beta1 >= 0 && o->beta1 < 1)) return BAD("beta1", "%g", "must be in [0, 1)", o->beta1);
    if (!(o->beta2 >= 0 && o->beta2 < 1)) return BAD("beta2", "%g", "must be in [0, 1)", o->beta2);
    if (!(o->eps >= 0) || !isfinite(o->eps)) return BAD("eps", "%g", "must be finite and >= 0", o->eps);
  }
  if (o->schedule < EFFML_OPTIM_LR_CONSTANT || o->schedule > EFFML_OPTIM_LR_WARMUP_COSINE)
    return BAD("schedule", "%d", "is not an EFFML_OPTIM_LR_* value (0..2)", (int)o->schedule);
  if (o->warmup_steps < 0)
    return BAD("warmup_steps", "%lld", "must be >= 0", (long long)o->warmup_steps);
  if (o->schedule == EFFML_OPTIM_LR_WARMUP_COSINE) {
    if (o->total_steps <= o->warmup_steps)
      return BAD("total_steps", "%lld", "must exceed warmup_steps=%lld for the cosine schedule",
                 (long long)o->total_steps, (long long)o->warmup_steps);
    if (!(o->min_lr >= 0 && o->min_lr <= o->lr))
      return BAD("min_lr", "%g", "must be in [0, lr=%g]", o->min_lr, o->lr);
  }
  return EFFML_OK;
}

effml_status effml_optimizer_create(effml_context *ctx, const effml_optimizer_options *opt,
                                    effml_optimizer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, opt);
  EFFML__CHECK_NULL(ctx, out);
  effml_optimizer_options o;
  EFFML__TRY(EFFML__OPTIONS_READ(ctx, "effml_optimizer_create", effml_optimizer_options_init, opt,
                                 &o, offsetof(effml_optimizer_options, lr) + sizeof(double)));
  EFFML__TRY(validate(ctx, &o));
  effml_optimizer *op = (effml_optimizer *)effml__calloc_or_err(ctx, 1, sizeof *op, "optimizer");
  if (!op) return EFFML_E_NOMEM;
  op->ctx = ctx;
  op->o = o;
  *out = op;
  return EFFML_OK;
}

static void param_release(effml_context *ctx, opt_param *p) {
  effml__free(ctx, p->name);
  effml__free(ctx, p->m);
  effml__free(ctx, p->v);
}

void effml_optimizer_free(effml_optimizer *opt) {
  if (!opt) return;
  for (int32_t i = 0; i < opt->n; ++i) param_release(opt->ctx, &opt->p[i]);
  effml__free(opt->ctx, opt->p);
  effml__free(opt->ctx, opt);
}

static int find_value(const effml_optimizer *opt, const effml_tensor *value) {
  for (int32_t i = 0; i < opt->n; ++i)
    if (opt->p[i].value == value ||
        (opt->p[i].value->data == value->data && opt->p[i].value->storage == value->storage))
      return i;
  return -1;
}

static effml_status check_pair(effml_context *ctx, const char *fn, const char *name,
                               const effml_tensor *value, const effml_tensor *grad) {
  if (value->dtype != EFFML_F32 || grad->dtype != EFFML_F32)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: parameter '%s' must be f32 (value %s, grad %s)",
                      fn, name ? name : "?", effml_tensor_dtype_name(value->dtype),
                      effml_tensor_dtype_name(grad->dtype));
  if (!effml_tensor_is_contiguous(value) || !effml_tensor_is_contiguous(grad) ||
      effml_tensor_numel(value) != effml_tensor_numel(grad))
    return effml__err(ctx, EFFML_E_SHAPE,
                      "%s: parameter '%s' needs contiguous value and grad with the same number "
                      "of elements (%lld vs %lld)",
                      fn, name ? name : "?", (long long)effml_tensor_numel(value),
                      (long long)effml_tensor_numel(grad));
  if (value->read_only || grad->read_only)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: parameter '%s' is read-only", fn,
                      name ? name : "?");
  return EFFML_OK;
}

/* Append one parameter with zeroed state; on failure nothing is appended. */
static effml_status push(effml_context *ctx, effml_optimizer *opt, const char *name,
                         effml_tensor *value, effml_tensor *grad, const effml__param *entry) {
  if (opt->n == opt->cap) {
    int32_t cap = opt->cap ? opt->cap * 2 : 8;
    opt_param *np = (opt_param *)effml__calloc_or_err(ctx, (size_t)cap, sizeof *np, "optimizer params");
    if (!np) return EFFML_E_NOMEM;
    if (opt->n) memcpy(np, opt->p, (size_t)opt->n * sizeof *np);
    effml__free(ctx, opt->p);
    opt->p = np;
    opt->cap = cap;
  }
  opt_param p;
  memset(&p, 0, sizeof p);
  p.value = value;
  p.grad = grad;
  p.entry = entry;
  const size_t n = (size_t)effml_tensor_numel(value);
  int need_m = opt->o.algorithm == EFFML_OPTIM_ADAMW || opt->o.momentum > 0;
  int need_v = opt->o.algorithm == EFFML_OPTIM_ADAMW;
  if (name) p.name = effml__strdup(ctx, name);
  if (need_m) p.m = (float *)effml__calloc(ctx, n, sizeof(float));
  if (need_v) p.v = (float *)effml__calloc(ctx, n, sizeof(float));
  if ((name && !p.name) || (need_m && !p.m) || (need_v && !p.v)) {
    param_release(ctx, &p);
    return effml__err(ctx, EFFML_E_NOMEM, "effml_optimizer: out of memory for the state of '%s'",
                      name ? name : "?");
  }
  opt->p[opt->n++] = p;
  return EFFML_OK;
}

effml_status effml_optimizer_add_param(effml_context *ctx, effml_optimizer *opt, const char *name,
                                       effml_tensor *value, effml_tensor *grad) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, opt);
  EFFML__CHECK_NULL(ctx, value);
  EFFML__CHECK_NULL(ctx, grad);
  EFFML__TRY(check_pair(ctx, __func__, name, value, grad));
  if (find_value(opt, value) >= 0) return EFFML_OK;
  return push(ctx, opt, name, value, grad, NULL);
}

effml_status effml_optimizer_add_layer(effml_context *ctx, effml_optimizer *opt,
                                       effml_layer *layer) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, opt);
  EFFML__CHECK_NULL(ctx, layer);
  const int32_t np = effml_layer_num_params(layer);
  for (int32_t i = 0; i < np; ++i) {
    const effml__param *e = effml__layer_param_entry(layer, i);
    EFFML__TRY(check_pair(ctx, __func__, effml_layer_param_name(layer, i), e->value, e->grad));
  }
  const int32_t n0 = opt->n;
  for (int32_t i = 0; i < np; ++i) {
    const effml__param *e = effml__layer_param_entry(layer, i);
    if (find_value(opt, e->value) >= 0) continue;
    effml_status st = push(ctx, opt, effml_layer_param_name(layer, i), e->value, e->grad, e);
    if (st != EFFML_OK) { /* all or nothing */
      while (opt->n > n0) param_release(ctx, &opt->p[--opt->n]);
      return st;
    }
  }
  return EFFML_OK;
}

static int trainable_now(const opt_param *p) { return p->entry == NULL || p->entry->trainable; }

static double lr_at(const effml_optimizer_options *o, int64_t s) {
  if (o->schedule != EFFML_OPTIM_LR_CONSTANT && s < o->warmup_steps)
    return o->lr * (double)(s + 1) / (double)o->warmup_steps;
  if (o->schedule == EFFML_OPTIM_LR_WARMUP_COSINE) {
    if (s >= o->total_steps) return o->min_lr;
    const double progress =
        (double)(s - o->warmup_steps) / (double)(o->total_steps - o->warmup_steps);
    return o->min_lr + (o->lr - o->min_lr) * 0.5 * (1.0 + cos(M_PI * progress));
  }
  return o->lr;
}

double effml_optimizer_lr(const effml_optimizer *opt) {
  return opt ? lr_at(&opt->o, opt->steps) : 0.0;
}

int64_t effml_optimizer_steps(const effml_optimizer *opt) { return opt ? opt->steps : 0; }

int32_t effml_optimizer_num_params(const effml_optimizer *opt) { return opt ? opt->n : 0; }

static void sgd_update(const effml_optimizer_options *o, opt_param *p, float lr) {
  float *w = effml__f32(p->value);
  const float *g = effml__cf32(p->grad);
  const int64_t n = effml_tensor_numel(p->value);
  const float wd = (float)o->weight_decay, mu = (float)o->momentum;
  const float damp = 1.0f - (float)o->dampening;
  float *buf = p->m;
  if (!buf) {
    for (int64_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + wd * w[i]);
    return;
  }
  const int first = p->step == 0;
  for (int64_t i = 0; i < n; ++i) {
    const float d = g[i] + wd * w[i];
    buf[i] = first ? d : mu * buf[i] + damp * d;
    const float u = o->nesterov ? d + mu * buf[i] : buf[i];
    w[i] -= lr * u;
  }
}

/* One AdamW element update, in PyTorch's operation order. */
#define ADAMW_ELEM(i)                                              \
  do {                                                             \
    w[i] *= decay;                                                 \
    m[i] = b1 * m[i] + c1 * g[i];                                  \
    v[i] = b2 * v[i] + c2 * g[i] * g[i];                           \
    const float denom_ = sqrtf(v[i]) * inv_bc2_sqrt + eps;         \
    w[i] -= step_size * (m[i] / denom_);                           \
  } while (0)

static void adamw_update(const effml_optimizer_options *o, opt_param *p, double lr) {
  float *w = effml__f32(p->value);
  const float *g = effml__cf32(p->grad);
  float *m = p->m, *v = p->v;
  const int64_t n = effml_tensor_numel(p->value);
  const double t = (double)(p->step + 1);
  const float decay = (float)(1.0 - lr * o->weight_decay);
  const float b1 = (float)o->beta1, b2 = (float)o->beta2;
  const float c1 = (float)(1.0 - o->beta1), c2 = (float)(1.0 - o->beta2);
  const float step_size = (float)(lr / (1.0 - pow(o->beta1, t)));
  const float inv_bc2_sqrt = (float)(1.0 / sqrt(1.0 - pow(o->beta2, t)));
  const float eps = (float)o->eps;
  int64_t i = 0;
#if defined(__SSE2__)
  /* sqrtf() keeps compilers from vectorising this loop (errno), and the
   * update runs over every parameter at every step: four lanes by hand, the
   * same operations in the same order as the scalar tail (IEEE sqrt and
   * division are exact-rounded in both). */
  const __m128 vdecay = _mm_set1_ps(decay), vb1 = _mm_set1_ps(b1), vb2 = _mm_set1_ps(b2);
  const __m128 vc1 = _mm_set1_ps(c1), vc2 = _mm_set1_ps(c2), vss = _mm_set1_ps(step_size);
  const __m128 vbc = _mm_set1_ps(inv_bc2_sqrt), veps = _mm_set1_ps(eps);
  for (; i + 4 <= n; i += 4) {
    const __m128 gi = _mm_loadu_ps(g + i);
    const __m128 wi = _mm_mul_ps(_mm_loadu_ps(w + i), vdecay);
    const __m128 mi = _mm_add_ps(_mm_mul_ps(vb1, _mm_loadu_ps(m + i)), _mm_mul_ps(vc1, gi));
    const __m128 vi = _mm_add_ps(_mm_mul_ps(vb2, _mm_loadu_ps(v + i)), _mm_mul_ps(_mm_mul_ps(vc2, gi), gi));
    const __m128 den = _mm_add_ps(_mm_mul_ps(_mm_sqrt_ps(vi), vbc), veps);
    _mm_storeu_ps(m + i, mi);
    _mm_storeu_ps(v + i, vi);
    _mm_storeu_ps(w + i, _mm_sub_ps(wi, _mm_mul_ps(vss, _mm_div_ps(mi, den))));
  }
#endif
  for (; i < n; ++i) ADAMW_ELEM(i);
}

effml_status effml_optimizer_step(effml_context *ctx, effml_optimizer *opt) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, opt);
  const double lr = lr_at(&opt->o, opt->steps);
  for (int32_t i = 0; i < opt->n; ++i) {
    opt_param *p = &opt->p[i];
    if (!trainable_now(p)) continue;
    if (opt->o.algorithm == EFFML_OPTIM_SGD)
      sgd_update(&opt->o, p, (float)lr);
    else
      adamw_update(&opt->o, p, lr);
    p->step++;
  }
  opt->steps++;
  return EFFML_OK;
}

void effml_optimizer_zero_grad(effml_optimizer *opt) {
  if (!opt) return;
  for (int32_t i = 0; i < opt->n; ++i)
    memset(opt->p[i].grad->data, 0, (size_t)effml_tensor_numel(opt->p[i].grad) * sizeof(float));
}

effml_status effml_optimizer_reset_state(effml_context *ctx, effml_optimizer *opt,
                                         const effml_tensor *value, const int64_t *indices,
                                         int64_t n) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, opt);
  EFFML__CHECK_NULL(ctx, value);
  if (n < 0)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: n=%lld must be >= 0", __func__, (long long)n);
  if (n == 0) return EFFML_OK;
  EFFML__CHECK_NULL(ctx, indices);
  const int k = find_value(opt, value);
  if (k < 0)
    return effml__err(ctx, EFFML_E_NOT_FOUND, "%s: value tensor is not registered with the optimizer",
                      __func__);
  opt_param *p = &opt->p[k];
  const int64_t numel = effml_tensor_numel(p->value);
  for (int64_t i = 0; i < n; ++i)
    if (indices[i] < 0 || indices[i] >= numel)
      return effml__err(ctx, EFFML_E_RANGE, "%s: indices[%lld]=%lld is outside [0, %lld) of '%s'",
                        __func__, (long long)i, (long long)indices[i], (long long)numel,
                        p->name ? p->name : "?");
  for (int64_t i = 0; i < n; ++i) {
    if (p->m) p->m[indices[i]] = 0.0f;
    if (p->v) p->v[indices[i]] = 0.0f;
  }
  return EFFML_OK;
}

effml_status effml_optimizer_clip_grad_norm(effml_context *ctx, effml_optimizer *opt, double max_norm,
                                  double *total_norm) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, opt);
  if (!(max_norm > 0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: max_norm=%g must be > 0", __func__, max_norm);
  double ss = 0.0;
  for (int32_t i = 0; i < opt->n; ++i) {
    if (!trainable_now(&opt->p[i])) continue;
    const float *g = effml__cf32(opt->p[i].grad);
    const int64_t n = effml_tensor_numel(opt->p[i].grad);
    for (int64_t j = 0; j < n; ++j) ss += (double)g[j] * (double)g[j];
  }
  const double total = sqrt(ss);
  if (!isfinite(total))
    return effml__err(ctx, EFFML_E_NUMERIC, "%s: the gradient norm is %g", __func__, total);
  if (total_norm) *total_norm = total;
  if (total > max_norm) {
    const float scale = (float)(max_norm / (total + 1e-6));
    for (int32_t i = 0; i < opt->n; ++i) {
      if (!trainable_now(&opt->p[i])) continue;
      float *g = effml__f32(opt->p[i].grad);
      const int64_t n = effml_tensor_numel(opt->p[i].grad);
      for (int64_t j = 0; j < n; ++j) g[j] *= scale;
    }
  }
  return EFFML_OK;
}
