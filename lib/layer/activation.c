/* Element-wise activations: the kernels, the raw-tensor entry points
 * (effml__activation_apply/backward, used by layers that embed an activation)
 * and the width-agnostic activation layer.
 *
 * Derivatives (x = forward input):
 *   relu       f' = [x > 0] (NaN propagates, as in PyTorch)
 *   gelu       f  = x Φ(x),  f' = Φ(x) + x φ(x)
 *   gelu_tanh  f  = ½x(1 + t), t = tanh(u), u = √(2/π)(x + 0.044715x³)
 *              f' = ½(1 + t) + ½x(1 - t²)·√(2/π)(1 + 3·0.044715x²)
 *   silu       f  = x σ(x),  f' = σ(x)(1 + x(1 - σ(x)))
 *   tanh       f' = 1 - tanh²(x)
 */
#include <math.h>
#include <string.h>

#include "layer_internal.h"

#define GELU_K 0.7978845608028654f /* √(2/π) */
#define GELU_C 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

/* Below this many elements a loop is cheaper than starting threads. */
#define ACT_PARALLEL_MIN ((int64_t)1 << 17)

static void act_fwd(int32_t act, const float *x, float *y, int64_t n) {
  switch (act) {
    case EFFML_LAYER_ACT_IDENTITY:
      if (x != y) memmove(y, x, (size_t)n * sizeof(float));
      break;
    case EFFML_LAYER_ACT_RELU:
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.0f ? 0.0f : x[i]; /* NaN passes, as in PyTorch */
      break;
    case EFFML_LAYER_ACT_GELU:
      for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * INV_SQRT2));
      break;
    case EFFML_LAYER_ACT_GELU_TANH:
      for (int64_t i = 0; i < n; ++i) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(GELU_K * (v + GELU_C * v * v * v)));
      }
      break;
    case EFFML_LAYER_ACT_SILU:
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (1.0f + expf(-x[i]));
      break;
    case EFFML_LAYER_ACT_TANH:
      for (int64_t i = 0; i < n; ++i) y[i] = tanhf(x[i]);
      break;
    default:
      break;
  }
}

static void act_bwd(int32_t act, const float *x, const float *dy, float *dx, int64_t n) {
  switch (act) {
    case EFFML_LAYER_ACT_IDENTITY:
      if (dx != dy) memmove(dx, dy, (size_t)n * sizeof(float));
      break;
    case EFFML_LAYER_ACT_RELU:
      for (int64_t i = 0; i < n; ++i) dx[i] = x[i] <= 0.0f ? 0.0f : dy[i];
      break;
    case EFFML_LAYER_ACT_GELU:
      for (int64_t i = 0; i < n; ++i) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erff(v * INV_SQRT2));
        float pdf = INV_SQRT_2PI * expf(-0.5f * v * v);
        dx[i] = dy[i] * (cdf + v * pdf);
      }
      break;
    case EFFML_LAYER_ACT_GELU_TANH:
      for (int64_t i = 0; i < n; ++i) {
        float v = x[i];
        float t = tanhf(GELU_K * (v + GELU_C * v * v * v));
        float du = GELU_K * (1.0f + 3.0f * GELU_C * v * v);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
      }
      break;
    case EFFML_LAYER_ACT_SILU:
      for (int64_t i = 0; i < n; ++i) {
        float s = 1.0f / (1.0f + expf(-x[i]));
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
      }
      break;
    case EFFML_LAYER_ACT_TANH:
      for (int64_t i = 0; i < n; ++i) {
        float t = tanhf(x[i]);
        dx[i] = dy[i] * (1.0f - t * t);
      }
      break;
    default:
      break;
  }
}

typedef struct act_job {
  int32_t act;
  const float *x, *dy;
  float *out;
} act_job;

static void act_fwd_range(void *arg, int64_t begin, int64_t end, int32_t worker) {
  const act_job *j = (const act_job *)arg;
  act_fwd(j->act, j->x + begin, j->out + begin, end - begin);
}

static void act_bwd_range(void *arg, int64_t begin, int64_t end, int32_t worker) {
  const act_job *j = (const act_job *)arg;
  act_bwd(j->act, j->x + begin, j->dy + begin, j->out + begin, end - begin);
}

/* ReLU and identity are memory-bound: threads do not pay for themselves. */
static int act_cheap(int32_t act) { return act == EFFML_LAYER_ACT_IDENTITY || act == EFFML_LAYER_ACT_RELU; }

static effml_status act_run_fwd(effml_context *ctx, int32_t act, const float *x, float *y,
                                int64_t n) {
  if (act_cheap(act) || n < ACT_PARALLEL_MIN) {
    act_fwd(act, x, y, n);
    return EFFML_OK;
  }
  act_job j = {act, x, NULL, y};
  return effml__parallel_for(ctx, n, ACT_PARALLEL_MIN / 2, act_fwd_range, &j);
}

static effml_status act_run_bwd(effml_context *ctx, int32_t act, const float *x, const float *dy,
                                float *dx, int64_t n) {
  if (act_cheap(act) || n < ACT_PARALLEL_MIN) {
    act_bwd(act, x, dy, dx, n);
    return EFFML_OK;
  }
  act_job j = {act, x, dy, dx};
  return effml__parallel_for(ctx, n, ACT_PARALLEL_MIN / 2, act_bwd_range, &j);
}

const char *effml_layer_activation_name(int32_t activation) {
  switch (activation) {
    case EFFML_LAYER_ACT_IDENTITY: return "identity";
    case EFFML_LAYER_ACT_RELU: return "relu";
    case EFFML_LAYER_ACT_GELU: return "gelu";
    case EFFML_LAYER_ACT_GELU_TANH: return "gelu_tanh";
    case EFFML_LAYER_ACT_SILU: return "silu";
    case EFFML_LAYER_ACT_TANH: return "tanh";
    default: return "unknown";
  }
}

static effml_status check_act(effml_context *ctx, const char *fn, int32_t activation) {
  if (activation < EFFML_LAYER_ACT_IDENTITY || activation > EFFML_LAYER_ACT_TANH)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: activation=%d is not one of EFFML_LAYER_ACT_IDENTITY..EFFML_LAYER_ACT_TANH (0..5)",
                      fn, (int)activation);
  return EFFML_OK;
}

/* Element-wise kernels may write in place, but not into a shifted copy of their input. */
static effml_status check_alias(effml_context *ctx, const char *fn, const effml_tensor *in,
                                const char *iname, const effml_tensor *out, const char *oname) {
  if (in->data != out->data && effml__tensors_overlap(in, out))
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: %s overlaps %s without being the same elements (only exact in-place is allowed)",
                      fn, oname, iname);
  return EFFML_OK;
}

/* Same shape check for element-wise arguments. */
static effml_status check_same_shape(effml_context *ctx, const char *fn, const effml_tensor *a,
                                     const char *aname, const effml_tensor *b, const char *bname) {
  int same = a->ndim == b->ndim;
  for (int32_t k = 0; same && k < a->ndim; ++k) same = a->shape[k] == b->shape[k];
  if (!same) {
    char sa[96], sb[96];
    return effml__err(ctx, EFFML_E_SHAPE, "%s: %s%s and %s%s must have the same shape", fn, aname,
                      effml__shape_str(a, sa, sizeof sa), bname,
                      effml__shape_str(b, sb, sizeof sb));
  }
  return EFFML_OK;
}

effml_status effml__activation_apply(effml_context *ctx, int32_t activation, const effml_tensor *x,
                                    effml_tensor *y) {
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__TRY(check_act(ctx, __func__, activation));
  EFFML__TRY(effml__check_tensor(ctx, x, "x", EFFML_F32, -1, 1));
  EFFML__TRY(effml__check_tensor(ctx, y, "y", EFFML_F32, -1, 1));
  EFFML__TRY(effml__check_writable(ctx, y, "y"));
  EFFML__TRY(check_same_shape(ctx, __func__, x, "x", y, "y"));
  EFFML__TRY(check_alias(ctx, __func__, x, "x", y, "y"));
  return act_run_fwd(ctx, activation, effml__cf32(x), effml__f32(y), effml_tensor_numel(x));
}

effml_status effml__activation_backward(effml_context *ctx, int32_t activation,
                                       const effml_tensor *x, const effml_tensor *dy,
                                       effml_tensor *dx) {
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__TRY(check_act(ctx, __func__, activation));
  EFFML__TRY(effml__check_tensor(ctx, x, "x", EFFML_F32, -1, 1));
  EFFML__TRY(effml__check_tensor(ctx, dy, "dy", EFFML_F32, -1, 1));
  EFFML__TRY(effml__check_tensor(ctx, dx, "dx", EFFML_F32, -1, 1));
  EFFML__TRY(effml__check_writable(ctx, dx, "dx"));
  EFFML__TRY(check_same_shape(ctx, __func__, x, "x", dy, "dy"));
  EFFML__TRY(check_same_shape(ctx, __func__, x, "x", dx, "dx"));
  EFFML__TRY(check_alias(ctx, __func__, x, "x", dx, "dx"));
  EFFML__TRY(check_alias(ctx, __func__, dy, "dy", dx, "dx"));
  return act_run_bwd(ctx, activation, effml__cf32(x), effml__cf32(dy), effml__f32(dx),
                     effml_tensor_numel(x));
}

/* ---- the layer ---- */

typedef struct act_impl {
  int32_t act;
  const effml_tensor *x; /* borrowed from the pending train forward */
} act_impl;

static effml_status act_layer_forward(effml_context *ctx, effml_layer *layer,
                                      const effml_tensor *x, effml_tensor *y, int32_t mode) {
  act_impl *a = (act_impl *)layer->impl;
  EFFML__TRY(act_run_fwd(ctx, a->act, effml__cf32(x), effml__f32(y), effml_tensor_numel(x)));
  if (mode == EFFML_LAYER_MODE_TRAIN) a->x = x; /* infer mode writes nothing into the layer */
  return EFFML_OK;
}

static effml_status act_layer_backward(effml_context *ctx, effml_layer *layer,
                                       const effml_tensor *dy, effml_tensor *dx) {
  act_impl *a = (act_impl *)layer->impl;
  effml_status st = EFFML_OK;
  if (dx)
    st = act_run_bwd(ctx, a->act, effml__cf32(a->x), effml__cf32(dy), effml__f32(dx),
                     effml_tensor_numel(dy));
  a->x = NULL;
  return st;
}

static void act_layer_destroy(effml_layer *layer) { effml__free(layer->ctx, layer->impl); }

/* One element-wise operation per input value. */
static effml_status act_layer_flops(effml_context *ctx, const effml_layer *layer,
                                    int64_t in_width, double *flops) {
  *flops = (double)in_width;
  return EFFML_OK;
}

/* One ops table serves every activation; each layer carries its own name. */
const effml__layer_ops effml__activation_ops = {
    .name = "activation",
    .forward = act_layer_forward,
    .backward = act_layer_backward,
    .destroy = act_layer_destroy,
    .flops = act_layer_flops,
};
static const char *const act_names[6] = {"identity", "relu", "gelu", "gelu_tanh", "silu", "tanh"};

effml_status effml_layer_activation_create(effml_context *ctx, int32_t activation, effml_layer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out);
  EFFML__TRY(check_act(ctx, __func__, activation));
  act_impl *a = (act_impl *)effml__calloc_or_err(ctx, 1, sizeof *a, "activation layer");
  if (!a) return EFFML_E_NOMEM;
  a->act = activation;
  effml_status st = effml__layer_new(ctx, &effml__activation_ops, 0, 0, a, out);
  if (st != EFFML_OK) {
    effml__free(ctx, a);
    return st;
  }
  effml__layer_set_kind(*out, act_names[activation]);
  return EFFML_OK;
}
