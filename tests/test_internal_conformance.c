/*
 * Layer-kind conformance suite: one row per layer kind (docs/architecture.md).
 *
 * Every row runs the same checks on a small layer of its kind:
 *   gradients   input and every parameter gradient against central finite
 *               differences of L = Σ g ⊙ y in double (or the row's declared
 *               reference gradient, for a method that defines another one);
 *   modes       TRAIN forward == INFER forward, bit for bit (dropout off);
 *   save/load   save → load into a fresh layer of the same mask: parameters
 *               and outputs bit-exact;
 *   frozen      frozen parameters bit-for-bit unchanged, and their grads
 *               still zero, after backward + an AdamW step (weight decay on);
 *   threads     two threads run INFER on one layer at once (own contexts):
 *               same outputs as alone, parameters, grads and the generic
 *               layer state unchanged (the TSan build of this suite,
 *               conformance_threads_tsan, also catches writes into the impl);
 *   alloc       create + forward + backward with the Nth allocation failing,
 *               N = 1, 2, ... until it succeeds: only EFFML_OK/EFFML_E_NOMEM,
 *               and no leak (tu_ctx_failing, the allocator of test_alloc);
 *   rejects     wrong widths and dtypes refused with a status and a message.
 * The `registry` case fails when a kind listed in lib/registry/layer_kinds.c
 * has no row, or a row builds a layer whose ops table is not registered.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "../lib/layer/layer_internal.h"

enum { BATCH = 3 };

/* Optional reference gradient (a method whose backward is not the exact
 * derivative of its forward, e.g. DoRA's detached weight norm): given x
 * [BATCH, in] and g = dL/dy [BATCH, out], write dx [BATCH, in] and the
 * gradient of every parameter into grads[i] (numel of param i). */
typedef void (*ref_grad_fn)(effml_layer *layer, const float *x, const float *g, float *dx,
                            float **grads);

typedef struct row {
  const char *label;
  const char *ops_name; /* the registered table the layer must use */
  effml_status (*make)(effml_context *ctx, effml_layer **out);
  int64_t in;           /* input width (width-agnostic layers: any) */
  ref_grad_fn reference; /* NULL: finite differences */
  /* Space-separated parameters the method never trains (VeRA's shared random
   * projections): kept frozen by the gradient check, which then expects
   * their grads to stay zero.  NULL: none. */
  const char *fixed;
  /* Training draws dropout masks (LoHa/LoKr rank and module dropout, VeRA's input
   * dropout): TRAIN differs from INFER by design.  The gradient check is then left to
   * test_adapter_dropout (finite differences under the drawn mask), and the modes check
   * asserts a TRAIN forward leaves INFER bit-for-bit unchanged.  Every other check
   * (threads: INFER writes nothing; alloc; frozen; save/load) runs with the dropouts on. */
  int stochastic;
} row;

/* ---- the rows ---- */

static effml_status mk_dense(effml_context *c, effml_layer **o) { return effml_layer_dense_create(c, 5, 4, 1, o); }
static effml_status mk_dense_nobias(effml_context *c, effml_layer **o) { return effml_layer_dense_create(c, 5, 4, 0, o); }
#define MK_ACT(n, a) \
  static effml_status mk_##n(effml_context *c, effml_layer **o) { return effml_layer_activation_create(c, a, o); }
MK_ACT(identity, EFFML_LAYER_ACT_IDENTITY)
MK_ACT(relu, EFFML_LAYER_ACT_RELU)
MK_ACT(gelu, EFFML_LAYER_ACT_GELU)
MK_ACT(gelu_tanh, EFFML_LAYER_ACT_GELU_TANH)
MK_ACT(silu, EFFML_LAYER_ACT_SILU)
MK_ACT(tanh, EFFML_LAYER_ACT_TANH)
static effml_status mk_dropout(effml_context *c, effml_layer **o) { return effml_layer_dropout_create(c, 0.0, 7, o); }
static effml_status mk_layernorm(effml_context *c, effml_layer **o) { return effml_layer_layernorm_create(c, 6, 1e-5, o); }

/* Adds `child` (just created with status st) to `seq`, freeing it if that fails. */
static effml_status add(effml_context *c, effml_layer *seq, effml_status st, effml_layer *child) {
  if (st != EFFML_OK) return st;
  st = effml_layer_sequential_add(c, seq, child);
  if (st != EFFML_OK) effml_layer_free(child);
  return st;
}

static effml_status mk_sequential(effml_context *c, effml_layer **o) {
  effml_layer *s = NULL, *inner = NULL, *l = NULL;
  effml_status st = effml_layer_sequential_create(c, &s);
  if (st != EFFML_OK) return st;
  st = effml_layer_dense_create(c, 5, 6, 1, &l);
  st = add(c, s, st, l);
  if (st == EFFML_OK) {
    st = effml_layer_activation_create(c, EFFML_LAYER_ACT_TANH, &l);
    st = add(c, s, st, l);
  }
  if (st == EFFML_OK) { /* a nested container */
    st = effml_layer_sequential_create(c, &inner);
    if (st == EFFML_OK) {
      st = effml_layer_layernorm_create(c, 6, 1e-5, &l);
      st = add(c, inner, st, l);
    }
    if (st == EFFML_OK) {
      st = effml_sparse_linear_create(c, 6, 6, NULL, &l);
      st = add(c, inner, st, l);
    }
    if (st == EFFML_OK) {
      st = add(c, s, st, inner); /* frees inner when adding fails */
    } else {
      effml_layer_free(inner); /* NULL when its creation failed */
    }
  }
  if (st == EFFML_OK) {
    st = effml_layer_dense_create(c, 6, 3, 1, &l);
    st = add(c, s, st, l);
  }
  if (st != EFFML_OK) {
    effml_layer_free(s);
    return st;
  }
  *o = s;
  return EFFML_OK;
}

static effml_sparse_options sp_opts(double sparsity) {
  effml_sparse_options so;
  effml_sparse_options_init(&so);
  so.sparsity = sparsity;
  return so;
}
static effml_status mk_sp_linear(effml_context *c, effml_layer **o) {
  effml_sparse_options so = sp_opts(0.5);
  return effml_sparse_linear_create(c, 6, 5, &so, o);
}
static effml_status mk_sp_wide(effml_context *c, effml_layer **o) {
  effml_sparse_options so = sp_opts(0.5);
  return effml_sparse_wide_create(c, 6, 5, &so, o);
}
static effml_status mk_sp_parallel(effml_context *c, effml_layer **o) {
  effml_sparse_options so = sp_opts(0.5);
  return effml_sparse_parallel_create(c, 6, 5, &so, o);
}
static effml_status mk_sp_factorized(effml_context *c, effml_layer **o) {
  effml_sparse_options so = sp_opts(0.5);
  return effml_sparse_factorized_create(c, 6, 5, &so, o);
}
static effml_status mk_sp_factorized_linear(effml_context *c, effml_layer **o) {
  effml_sparse_options so = sp_opts(0.5);
  so.activation = EFFML_LAYER_ACT_IDENTITY;
  so.bias = 0;
  return effml_sparse_factorized_create(c, 6, 5, &so, o);
}
static effml_status mk_sp_doped(effml_context *c, effml_layer **o) {
  effml_sparse_options so = sp_opts(0.5);
  return effml_sparse_doped_create(c, 8, 6, &so, o);
}

static effml_status mk_lora(effml_context *c, effml_layer **o) {
  effml_layer *base = NULL;
  effml_status st = effml_layer_dense_create(c, 6, 5, 1, &base);
  if (st != EFFML_OK) return st;
  effml_adapter_lora_options lo;
  effml_adapter_lora_options_init(&lo);
  lo.rank = 2;
  lo.alpha = 3.0;
  st = effml_adapter_lora_create(c, base, &lo, o);
  if (st != EFFML_OK) effml_layer_free(base);
  return st;
}
static effml_status mk_lokr(effml_context *c, effml_layer **o) {
  effml_layer *base = NULL;
  effml_status st = effml_layer_dense_create(c, 8, 6, 0, &base);
  if (st != EFFML_OK) return st;
  effml_adapter_lokr_options ko;
  effml_adapter_lokr_options_init(&ko);
  ko.rank = 1;
  st = effml_adapter_lokr_create(c, base, &ko, o);
  if (st != EFFML_OK) effml_layer_free(base);
  return st;
}
static effml_status mk_lora_opts(effml_context *c, effml_layer **o, int conv1d, int dora,
                                 int lora_bias) {
  effml_layer *base = NULL;
  effml_status st = conv1d ? effml_adapter_conv1d_create(c, 6, 5, 1, &base)
                           : effml_layer_dense_create(c, 6, 5, 1, &base);
  if (st != EFFML_OK) return st;
  effml_adapter_lora_options lo;
  effml_adapter_lora_options_init(&lo);
  lo.rank = 2;
  lo.alpha = 3.0;
  lo.use_dora = dora;
  lo.lora_bias = lora_bias;
  st = effml_adapter_lora_create(c, base, &lo, o);
  if (st != EFFML_OK) effml_layer_free(base);
  return st;
}
static effml_status mk_lora_conv1d(effml_context *c, effml_layer **o) { return mk_lora_opts(c, o, 1, 0, 1); }
static effml_status mk_dora(effml_context *c, effml_layer **o) { return mk_lora_opts(c, o, 0, 1, 0); }
static effml_status mk_ia3_opts(effml_context *c, effml_layer **o, int feedforward, int conv1d) {
  effml_layer *base = NULL;
  effml_status st = conv1d ? effml_adapter_conv1d_create(c, 6, 5, 1, &base)
                           : effml_layer_dense_create(c, 6, 5, 1, &base);
  if (st != EFFML_OK) return st;
  st = effml_adapter_ia3_create(c, base, feedforward, o);
  if (st != EFFML_OK) effml_layer_free(base);
  return st;
}
static effml_status mk_ia3(effml_context *c, effml_layer **o) { return mk_ia3_opts(c, o, 0, 0); }
static effml_status mk_ia3_ff(effml_context *c, effml_layer **o) { return mk_ia3_opts(c, o, 1, 1); }
static effml_status mk_loha(effml_context *c, effml_layer **o) {
  effml_layer *base = NULL;
  effml_status st = effml_layer_dense_create(c, 6, 5, 1, &base);
  if (st != EFFML_OK) return st;
  st = effml_adapter_loha_create(c, base, 2, 3.0, o);
  if (st != EFFML_OK) effml_layer_free(base);
  return st;
}
static effml_status mk_vera(effml_context *c, effml_layer **o) {
  effml_layer *base = NULL;
  effml_status st = effml_adapter_conv1d_create(c, 6, 5, 1, &base);
  if (st != EFFML_OK) return st;
  st = effml_adapter_vera_create(c, base, 3, 0.1, o);
  if (st != EFFML_OK) effml_layer_free(base);
  return st;
}
static effml_status mk_loha_drop(effml_context *c, effml_layer **o) {
  effml_status st = mk_loha(c, o);
  if (st != EFFML_OK) return st;
  st = effml_adapter_loha_set_dropout(c, *o, 0.3, 0.2);
  if (st != EFFML_OK) effml_layer_free(*o);
  return st;
}
static effml_status mk_lokr_drop(effml_context *c, effml_layer **o) {
  effml_status st = mk_lokr(c, o);
  if (st != EFFML_OK) return st;
  st = effml_adapter_lokr_set_dropout(c, *o, 0.3, 0.2, 1);
  if (st != EFFML_OK) effml_layer_free(*o);
  return st;
}
static effml_status mk_vera_drop(effml_context *c, effml_layer **o) {
  effml_status st = mk_vera(c, o);
  if (st != EFFML_OK) return st;
  st = effml_adapter_vera_set_dropout(c, *o, 0.25);
  if (st != EFFML_OK) effml_layer_free(*o);
  return st;
}
static effml_status mk_conv1d(effml_context *c, effml_layer **o) {
  return effml_adapter_conv1d_create(c, 6, 4, 1, o);
}

static int32_t param_index(const effml_layer *l, const char *name) {
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
    if (strcmp(effml_layer_param_name(l, i), name) == 0) return i;
  return -1;
}

/* DoRA's own gradient (Liu et al. 2024, §4.3; PEFT detaches the norm): with
 * V = W + s B A [out, in], n = ||V||_row treated as a constant, c = m / n,
 * y = b + c ⊙ (x Vᵀ):  dz = c ⊙ g;  dx = dz V;  dm = Σ_rows g ⊙ (x Vᵀ) / n;
 * dB = s dzᵀ (x Aᵀ);  dA = (s dz B)ᵀ x;  dW = dzᵀ x;  db = Σ_rows g.
 * Computed here in double from the parameters, independently of lora_dora.c. */
static void dora_reference(effml_layer *l, const float *x, const float *g, float *dx,
                           float **grads) {
  const int64_t in = effml_layer_in_features(l), out = effml_layer_out_features(l);
  const int32_t iw = param_index(l, "base_layer.weight"), ib = param_index(l, "base_layer.bias");
  const int32_t ia = param_index(l, "lora_A.weight"), ibm = param_index(l, "lora_B.weight");
  const int32_t im = param_index(l, "lora_magnitude_vector");
  ck_assert(iw >= 0 && ia >= 0 && ibm >= 0 && im >= 0);
  const float *W = (const float *)effml_tensor_data_const(effml_layer_param(l, iw));
  const float *A = (const float *)effml_tensor_data_const(effml_layer_param(l, ia));
  const float *B = (const float *)effml_tensor_data_const(effml_layer_param(l, ibm));
  const float *m = (const float *)effml_tensor_data_const(effml_layer_param(l, im));
  const int64_t r = effml_tensor_shape(effml_layer_param(l, ia))[0];
  const double s = effml_adapter_lora_scaling(l);
  double *V = (double *)calloc((size_t)(out * in), sizeof(double));
  double *n = (double *)calloc((size_t)out, sizeof(double));
  double *dz = (double *)calloc((size_t)(BATCH * out), sizeof(double));
  double *Z = (double *)calloc((size_t)(BATCH * out), sizeof(double));
  for (int64_t j = 0; j < out; ++j) {
    for (int64_t k = 0; k < in; ++k) {
      double v = W[j * in + k];
      for (int64_t q = 0; q < r; ++q) v += s * (double)B[j * r + q] * (double)A[q * in + k];
      V[j * in + k] = v;
      n[j] += v * v;
    }
    n[j] = sqrt(n[j]);
  }
  for (int64_t i = 0; i < BATCH; ++i)
    for (int64_t j = 0; j < out; ++j) {
      double z = 0.0;
      for (int64_t k = 0; k < in; ++k) z += (double)x[i * in + k] * V[j * in + k];
      Z[i * out + j] = z;
      dz[i * out + j] = (double)m[j] / n[j] * (double)g[i * out + j];
    }
  for (int64_t i = 0; i < BATCH; ++i)
    for (int64_t k = 0; k < in; ++k) {
      double a = 0.0;
      for (int64_t j = 0; j < out; ++j) a += dz[i * out + j] * V[j * in + k];
      dx[i * in + k] = (float)a;
    }
  for (int64_t j = 0; j < out; ++j) {
    double a = 0.0, bsum = 0.0;
    for (int64_t i = 0; i < BATCH; ++i) {
      a += (double)g[i * out + j] * Z[i * out + j];
      bsum += g[i * out + j];
    }
    grads[im][j] = (float)(a / n[j]);
    if (ib >= 0) grads[ib][j] = (float)bsum;
    for (int64_t k = 0; k < in; ++k) {
      double w = 0.0;
      for (int64_t i = 0; i < BATCH; ++i) w += dz[i * out + j] * (double)x[i * in + k];
      grads[iw][j * in + k] = (float)w;
    }
  }
  for (int64_t q = 0; q < r; ++q) {
    for (int64_t j = 0; j < out; ++j) { /* dB[j, q] = s Σ_i dz[i, j] U[i, q] */
      double a = 0.0;
      for (int64_t i = 0; i < BATCH; ++i) {
        double u = 0.0;
        for (int64_t k = 0; k < in; ++k) u += (double)x[i * in + k] * (double)A[q * in + k];
        a += dz[i * out + j] * u;
      }
      grads[ibm][j * r + q] = (float)(s * a);
    }
    for (int64_t k = 0; k < in; ++k) { /* dA[q, k] = Σ_i (s Σ_j dz[i, j] B[j, q]) x[i, k] */
      double a = 0.0;
      for (int64_t i = 0; i < BATCH; ++i) {
        double du = 0.0;
        for (int64_t j = 0; j < out; ++j) du += dz[i * out + j] * (double)B[j * r + q];
        a += s * du * (double)x[i * in + k];
      }
      grads[ia][q * in + k] = (float)a;
    }
  }
  free(V);
  free(n);
  free(dz);
  free(Z);
}

static effml_status mk_phm(effml_context *c, effml_layer **o) {
  effml_adapter_phm_options po;
  effml_adapter_phm_options_init(&po);
  po.phm_dim = 2;
  po.factorized = 0;
  return effml_adapter_phm_create(c, 6, 4, &po, NULL, o);
}
static effml_status mk_lphm(effml_context *c, effml_layer **o) {
  effml_adapter_phm_options po;
  effml_adapter_phm_options_init(&po);
  po.phm_dim = 2;
  return effml_adapter_phm_create(c, 6, 4, &po, NULL, o);
}
static effml_status mk_adapter(effml_context *c, effml_layer **o) {
  effml_adapter_options ao;
  effml_adapter_options_init(&ao);
  ao.bottleneck = 4;
  ao.phm_dim = 2;
  return effml_adapter_create(c, 8, &ao, NULL, o);
}
static effml_status mk_adapter_shared(effml_context *c, effml_layer **o) {
  effml_phm_rule *rule = NULL;
  effml_status st = effml_phm_rule_create(c, 2, 0.3, &rule);
  if (st != EFFML_OK) return st;
  effml_adapter_options ao;
  effml_adapter_options_init(&ao);
  ao.bottleneck = 4;
  ao.projection = EFFML_ADAPTER_PROJ_PHM;
  st = effml_adapter_create(c, 8, &ao, rule, o);
  effml_phm_rule_free(rule);
  return st;
}
static effml_status mk_adapter_dense(effml_context *c, effml_layer **o) {
  effml_adapter_options ao;
  effml_adapter_options_init(&ao);
  ao.bottleneck = 3;
  ao.projection = EFFML_ADAPTER_PROJ_DENSE;
  ao.activation = EFFML_LAYER_ACT_SILU;
  return effml_adapter_create(c, 6, &ao, NULL, o);
}

static const row ROWS[] = {
    {"sequential (nested)", "sequential", mk_sequential, 5, NULL},
    {"dense", "dense", mk_dense, 5, NULL},
    {"dense, no bias", "dense", mk_dense_nobias, 5, NULL},
    {"identity", "activation", mk_identity, 6, NULL},
    {"relu", "activation", mk_relu, 6, NULL},
    {"gelu", "activation", mk_gelu, 6, NULL},
    {"gelu_tanh", "activation", mk_gelu_tanh, 6, NULL},
    {"silu", "activation", mk_silu, 6, NULL},
    {"tanh", "activation", mk_tanh, 6, NULL},
    {"dropout p=0", "dropout", mk_dropout, 6, NULL},
    {"layernorm", "layernorm", mk_layernorm, 6, NULL},
    {"sparse_linear", "sparse_linear", mk_sp_linear, 6, NULL},
    {"sparse_wide", "sparse_wide", mk_sp_wide, 0, NULL},
    {"sparse_parallel", "sparse_parallel", mk_sp_parallel, 6, NULL},
    {"sparse_factorized relu", "sparse_factorized", mk_sp_factorized, 6, NULL},
    {"sparse_factorized linear", "sparse_factorized", mk_sp_factorized_linear, 6, NULL},
    {"sparse_doped", "sparse_doped", mk_sp_doped, 8, NULL},
    {"lora", "lora", mk_lora, 6, NULL},
    {"lora over conv1d, lora_bias", "lora", mk_lora_conv1d, 6, NULL},
    {"dora (detached norm)", "lora", mk_dora, 6, dora_reference},
    {"lokr", "lokr", mk_lokr, 8, NULL},
    {"loha", "loha", mk_loha, 6, NULL},
    {"vera over conv1d", "vera", mk_vera, 6, NULL, "vera_A vera_B"},
    {"lokr, rank+module dropout (scaled)", "lokr", mk_lokr_drop, 8, NULL, NULL, 1},
    {"loha, rank+module dropout", "loha", mk_loha_drop, 6, NULL, NULL, 1},
    {"vera over conv1d, vera_dropout", "vera", mk_vera_drop, 6, NULL, "vera_A vera_B", 1},
    {"ia3, output scaling", "ia3", mk_ia3, 6, NULL},
    {"ia3 feed-forward over conv1d", "ia3", mk_ia3_ff, 6, NULL},
    {"phm", "phm", mk_phm, 6, NULL},
    {"lphm", "phm", mk_lphm, 6, NULL},
    {"adapter lphm", "adapter", mk_adapter, 8, NULL},
    {"adapter phm, shared rule", "adapter", mk_adapter_shared, 8, NULL},
    {"adapter dense", "adapter", mk_adapter_dense, 6, NULL},
    {"conv1d", "conv1d", mk_conv1d, 6, NULL},
};
enum { N_ROWS = (int)(sizeof ROWS / sizeof ROWS[0]) };

/* ---- helpers ---- */

static int64_t in_width(const row *r, const effml_layer *l) {
  return effml_layer_in_features(l) ? effml_layer_in_features(l) : r->in;
}
static int64_t out_width(const effml_layer *l, int64_t in) {
  return effml_layer_out_features(l) ? effml_layer_out_features(l) : in;
}

static effml_layer *make(const row *r, effml_context *ctx) {
  effml_layer *l = NULL;
  effml_status st = r->make(ctx, &l);
  ck_assert_msg(st == EFFML_OK, "%s: create failed: %s", r->label, effml_context_last_error(ctx));
  return l;
}

/* Inputs away from 0 (no ReLU kink within the FD step). */
static void fill_input(effml_tensor *t, uint64_t seed) {
  tu_fill_uniform(t, seed, 0.15f, 1.0f);
  float *p = (float *)effml_tensor_data(t);
  for (int64_t i = 0; i < effml_tensor_numel(t); ++i)
    if ((effml__mix64(seed + (uint64_t)i) >> 11) & 1) p[i] = -p[i];
}

/* Every parameter to random values (LoRA B and LoKr w1 start at zero, which
 * would make the other factors' gradients zero and untested). */
static void randomize_params(effml_layer *l, uint64_t seed) {
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
    tu_fill_uniform(effml_layer_param(l, i), seed + 101u * (uint64_t)i, -0.8f, 0.8f);
}

static double loss(effml_context *ctx, effml_layer *l, const effml_tensor *x, effml_tensor *y,
                   const float *g) {
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER), EFFML_OK);
  const float *py = (const float *)effml_tensor_data_const(y);
  double s = 0.0;
  for (int64_t i = 0; i < effml_tensor_numel(y); ++i) s += (double)g[i] * (double)py[i];
  return s;
}

static void expect_grad(const row *r, const char *what, int64_t i, double analytic,
                        double numeric) {
  double tol = 2e-3 + 1e-2 * fmax(fabs(analytic), fabs(numeric));
  ck_assert_msg(fabs(analytic - numeric) <= tol, "%s: d/d%s[%lld]: analytic %.6g, numeric %.6g",
                r->label, what, (long long)i, analytic, numeric);
}

/* Central difference of L w.r.t. element i of the f32 buffer p. */
static double numeric_grad(effml_context *ctx, effml_layer *l, const effml_tensor *x,
                           effml_tensor *y, const float *g, float *p, int64_t i) {
  const float h = 2e-3f, keep = p[i];
  p[i] = keep + h;
  double lp = loss(ctx, l, x, y, g);
  p[i] = keep - h;
  double lm = loss(ctx, l, x, y, g);
  p[i] = keep;
  return (lp - lm) / (2.0 * (double)h);
}

/* ---- checks ---- */

/* Freeze the row's fixed parameters. */
static void freeze_fixed(const row *r, effml_context *ctx, effml_layer *l) {
  char names[256], *save = NULL;
  if (r->fixed == NULL) return;
  snprintf(names, sizeof names, "%s", r->fixed);
  for (char *t = strtok_r(names, " ", &save); t; t = strtok_r(NULL, " ", &save))
    ck_assert_msg(effml_layer_set_trainable(ctx, l, t, 0) == EFFML_OK, "%s: no parameter %s",
                  r->label, t);
}

static void check_gradients(const row *r) {
  if (r->stochastic) return; /* test_adapter_dropout: finite differences under the drawn mask */
  effml_context *ctx = tu_ctx(11);
  effml_layer *l = make(r, ctx);
  randomize_params(l, 5);
  ck_assert_int_eq(effml_layer_set_trainable(ctx, l, NULL, 1), EFFML_OK);
  freeze_fixed(r, ctx, l);
  const int64_t in = in_width(r, l), out = out_width(l, in);
  effml_tensor *x = tu_f32(ctx, BATCH, in, NULL), *y = tu_f32(ctx, BATCH, out, NULL);
  effml_tensor *dy = tu_f32(ctx, BATCH, out, NULL), *dx = tu_f32(ctx, BATCH, in, NULL);
  fill_input(x, 3);
  tu_fill_uniform(dy, 4, -1.0f, 1.0f);
  effml_layer_zero_grad(l);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_msg(effml_layer_backward(ctx, l, dy, dx) == EFFML_OK, "%s: backward: %s", r->label,
                effml_context_last_error(ctx));
  const float *g = (const float *)effml_tensor_data_const(dy);
  const int32_t np = effml_layer_num_params(l);
  if (r->reference) { /* the row's own definition of the gradient */
    float *rdx = (float *)calloc((size_t)(BATCH * in), sizeof(float));
    float **rg = (float **)calloc((size_t)np + 1, sizeof *rg);
    for (int32_t i = 0; i < np; ++i)
      rg[i] = (float *)calloc((size_t)effml_tensor_numel(effml_layer_param(l, i)), sizeof(float));
    r->reference(l, (const float *)effml_tensor_data_const(x), g, rdx, rg);
    const float *adx = (const float *)effml_tensor_data_const(dx);
    for (int64_t i = 0; i < BATCH * in; ++i) expect_grad(r, "x", i, adx[i], rdx[i]);
    for (int32_t p = 0; p < np; ++p) {
      const float *ag = (const float *)effml_tensor_data_const(effml_layer_param_grad(l, p));
      for (int64_t i = 0; i < effml_tensor_numel(effml_layer_param(l, p)); ++i)
        expect_grad(r, effml_layer_param_name(l, p), i, ag[i], rg[p][i]);
      free(rg[p]);
    }
    free(rg);
    free(rdx);
  } else {
    float *px = (float *)effml_tensor_data(x);
    const float *adx = (const float *)effml_tensor_data_const(dx);
    for (int64_t i = 0; i < BATCH * in; ++i)
      expect_grad(r, "x", i, adx[i], numeric_grad(ctx, l, x, y, g, px, i));
    for (int32_t p = 0; p < np; ++p) {
      float *pv = (float *)effml_tensor_data(effml_layer_param(l, p));
      const float *ag = (const float *)effml_tensor_data_const(effml_layer_param_grad(l, p));
      const int64_t n = effml_tensor_numel(effml_layer_param(l, p));
      if (!effml_layer_param_trainable(l, p)) { /* a fixed parameter: no gradient */
        for (int64_t i = 0; i < n; ++i)
          ck_assert_msg(ag[i] == 0.0f, "%s: frozen %s got a gradient", r->label,
                        effml_layer_param_name(l, p));
        continue;
      }
      const int64_t step = n > 48 ? n / 48 : 1; /* at most ~48 probes per parameter */
      for (int64_t i = 0; i < n; i += step)
        expect_grad(r, effml_layer_param_name(l, p), i, ag[i],
                    numeric_grad(ctx, l, x, y, g, pv, i));
    }
  }
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(dy);
  effml_tensor_free(dx);
  effml_layer_free(l);
  effml_context_free(ctx);
}

static void check_modes(const row *r) {
  effml_context *ctx = tu_ctx(12);
  effml_layer *l = make(r, ctx);
  randomize_params(l, 6);
  const int64_t in = in_width(r, l), out = out_width(l, in);
  effml_tensor *x = tu_f32(ctx, BATCH, in, NULL);
  effml_tensor *yt = tu_f32(ctx, BATCH, out, NULL), *yi = tu_f32(ctx, BATCH, out, NULL);
  fill_input(x, 7);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, yi, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, yt, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  if (r->stochastic) /* dropout: compare INFER after the TRAIN forward with INFER before it */
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, yt, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert_msg(memcmp(effml_tensor_data_const(yt), effml_tensor_data_const(yi),
                       (size_t)(BATCH * out) * sizeof(float)) == 0,
                "%s: TRAIN and INFER forwards differ", r->label);
  effml_tensor_free(x);
  effml_tensor_free(yt);
  effml_tensor_free(yi);
  effml_layer_free(l);
  effml_context_free(ctx);
}

static void check_save_load(const row *r) {
  effml_context *ctx = tu_ctx(13), *ctx2 = tu_ctx(13); /* same seed: same sparse masks */
  effml_layer *a = make(r, ctx), *b = make(r, ctx2);
  const int32_t np = effml_layer_num_params(a);
  ck_assert_int_eq(np, effml_layer_num_params(b));
  if (np == 0) { /* nothing to keep: saving says so */
    ck_assert_int_eq(effml_layer_save(ctx, a, EFFML_TEST_TMP "/conf.safetensors", NULL),
                     EFFML_E_INVALID_ARG);
  } else {
    randomize_params(a, 8);
    randomize_params(b, 9);
    char path[512];
    snprintf(path, sizeof path, "%s/conformance_%s.safetensors", EFFML_TEST_TMP, r->ops_name);
    ck_assert_msg(effml_layer_save(ctx, a, path, "m.") == EFFML_OK, "%s: save: %s", r->label,
                  effml_context_last_error(ctx));
    ck_assert_msg(effml_layer_load(ctx2, b, path, "m.", EFFML_LAYER_LOAD_STRICT) == EFFML_OK,
                  "%s: load: %s", r->label, effml_context_last_error(ctx2));
    for (int32_t p = 0; p < np; ++p) {
      const effml_tensor *va = effml_layer_param(a, p), *vb = effml_layer_param(b, p);
      ck_assert_msg(memcmp(effml_tensor_data_const(va), effml_tensor_data_const(vb),
                           effml_tensor_nbytes(va)) == 0,
                    "%s: parameter %s differs after save/load", r->label,
                    effml_layer_param_name(a, p));
    }
    remove(path);
  }
  const int64_t in = in_width(r, a), out = out_width(a, in);
  effml_tensor *x = tu_f32(ctx, BATCH, in, NULL);
  effml_tensor *ya = tu_f32(ctx, BATCH, out, NULL), *yb = tu_f32(ctx, BATCH, out, NULL);
  fill_input(x, 10);
  ck_assert_int_eq(effml_layer_forward(ctx, a, x, ya, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert_int_eq(effml_layer_forward(ctx2, b, x, yb, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert_msg(memcmp(effml_tensor_data_const(ya), effml_tensor_data_const(yb),
                       (size_t)(BATCH * out) * sizeof(float)) == 0,
                "%s: outputs differ after save/load", r->label);
  effml_tensor_free(x);
  effml_tensor_free(ya);
  effml_tensor_free(yb);
  effml_layer_free(a);
  effml_layer_free(b);
  effml_context_free(ctx);
  effml_context_free(ctx2);
}

static void check_frozen(const row *r) {
  effml_context *ctx = tu_ctx(14);
  effml_layer *l = make(r, ctx);
  randomize_params(l, 11);
  const int32_t np = effml_layer_num_params(l);
  /* Freeze every other parameter (all of them when there is one). */
  ck_assert_int_eq(effml_layer_set_trainable(ctx, l, NULL, 1), EFFML_OK);
  for (int32_t p = 0; p < np; p += 2)
    ck_assert_int_eq(effml_layer_set_trainable(ctx, l, effml_layer_param_name(l, p), 0), EFFML_OK);
  void **before = (void **)calloc((size_t)np + 1, sizeof *before);
  for (int32_t p = 0; p < np; ++p) {
    const effml_tensor *v = effml_layer_param(l, p);
    before[p] = malloc(effml_tensor_nbytes(v));
    memcpy(before[p], effml_tensor_data_const(v), effml_tensor_nbytes(v));
  }
  effml_optimizer_options oo;
  effml_optimizer_options_init(&oo);
  oo.lr = 0.05;
  oo.weight_decay = 0.1;
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(ctx, &oo, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(ctx, opt, l), EFFML_OK);
  const int64_t in = in_width(r, l), out = out_width(l, in);
  effml_tensor *x = tu_f32(ctx, BATCH, in, NULL), *y = tu_f32(ctx, BATCH, out, NULL);
  effml_tensor *dy = tu_f32(ctx, BATCH, out, NULL), *dx = tu_f32(ctx, BATCH, in, NULL);
  fill_input(x, 12);
  tu_fill_uniform(dy, 13, -1.0f, 1.0f);
  effml_layer_zero_grad(l);
  int changed = 0;
  for (int step = 0; step < 2; ++step) {
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
    ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
    for (int32_t p = 0; p < np; p += 2) {
      const effml_tensor *gr = effml_layer_param_grad(l, p);
      const float *gv = (const float *)effml_tensor_data_const(gr);
      for (int64_t i = 0; i < effml_tensor_numel(gr); ++i)
        ck_assert_msg(gv[i] == 0.0f, "%s: backward wrote the grad of frozen %s", r->label,
                      effml_layer_param_name(l, p));
    }
    ck_assert_int_eq(effml_optimizer_step(ctx, opt), EFFML_OK);
  }
  for (int32_t p = 0; p < np; ++p) {
    const effml_tensor *v = effml_layer_param(l, p);
    int same = memcmp(before[p], effml_tensor_data_const(v), effml_tensor_nbytes(v)) == 0;
    if (p % 2 == 0)
      ck_assert_msg(same, "%s: frozen %s changed", r->label, effml_layer_param_name(l, p));
    else
      changed |= !same;
    free(before[p]);
  }
  if (np > 1) ck_assert_msg(changed, "%s: no trainable parameter moved", r->label);
  free(before);
  effml_optimizer_free(opt);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(dy);
  effml_tensor_free(dx);
  effml_layer_free(l);
  effml_context_free(ctx);
}

typedef struct infer_job {
  effml_context *ctx;
  effml_layer *layer;
  const effml_tensor *x;
  effml_tensor *y;
  const float *expect;
  int64_t n;
  int ok;
} infer_job;

static void *infer_thread(void *arg) {
  infer_job *j = (infer_job *)arg;
  j->ok = 1;
  for (int it = 0; it < 25 && j->ok; ++it) {
    if (effml_layer_forward(j->ctx, j->layer, j->x, j->y, EFFML_LAYER_MODE_INFER) != EFFML_OK ||
        memcmp(effml_tensor_data_const(j->y), j->expect, (size_t)j->n * sizeof(float)) != 0)
      j->ok = 0;
  }
  return NULL;
}

static void check_threads(const row *r) {
  effml_context *ctx = tu_ctx(15);
  effml_layer *l = make(r, ctx);
  randomize_params(l, 14);
  const int64_t in = in_width(r, l), out = out_width(l, in);
  effml_tensor *x = tu_f32(ctx, BATCH, in, NULL), *y = tu_f32(ctx, BATCH, out, NULL);
  effml_tensor *dy = tu_f32(ctx, BATCH, out, NULL), *dx = tu_f32(ctx, BATCH, in, NULL);
  fill_input(x, 15);
  tu_fill_uniform(dy, 16, -1.0f, 1.0f);
  /* A training step first, so training buffers exist and a backward is pending. */
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  effml_tensor *ref = tu_f32(ctx, BATCH, out, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, ref, EFFML_LAYER_MODE_INFER), EFFML_OK);
  const int32_t np = effml_layer_num_params(l);
  size_t total = 0;
  for (int32_t p = 0; p < np; ++p) total += 2 * effml_tensor_nbytes(effml_layer_param(l, p));
  unsigned char *snap = (unsigned char *)malloc(total + 1), *q = snap;
  for (int32_t p = 0; p < np; ++p) {
    const effml_tensor *v = effml_layer_param(l, p), *gr = effml_layer_param_grad(l, p);
    memcpy(q, effml_tensor_data_const(v), effml_tensor_nbytes(v));
    q += effml_tensor_nbytes(v);
    memcpy(q, effml_tensor_data_const(gr), effml_tensor_nbytes(gr));
    q += effml_tensor_nbytes(gr);
  }
  const int32_t pend = l->train_pending, nparams = l->n_params, nchild = l->n_children;
  const int64_t pbatch = l->pending_batch, pwidth = l->pending_width;
  void *const impl = l->impl;
  infer_job jobs[2];
  pthread_t th[2];
  for (int k = 0; k < 2; ++k) {
    jobs[k].ctx = tu_ctx(20 + (uint64_t)k);
    jobs[k].layer = l;
    jobs[k].x = x;
    jobs[k].y = tu_f32(jobs[k].ctx, BATCH, out, NULL);
    jobs[k].expect = (const float *)effml_tensor_data_const(ref);
    jobs[k].n = BATCH * out;
    ck_assert_int_eq(pthread_create(&th[k], NULL, infer_thread, &jobs[k]), 0);
  }
  for (int k = 0; k < 2; ++k) ck_assert_int_eq(pthread_join(th[k], NULL), 0);
  for (int k = 0; k < 2; ++k) {
    ck_assert_msg(jobs[k].ok, "%s: thread %d: INFER output differs or failed", r->label, k);
    effml_tensor_free(jobs[k].y);
    effml_context_free(jobs[k].ctx);
  }
  q = snap;
  for (int32_t p = 0; p < np; ++p) {
    const effml_tensor *v = effml_layer_param(l, p), *gr = effml_layer_param_grad(l, p);
    ck_assert_msg(memcmp(q, effml_tensor_data_const(v), effml_tensor_nbytes(v)) == 0,
                  "%s: INFER wrote parameter %s", r->label, effml_layer_param_name(l, p));
    q += effml_tensor_nbytes(v);
    ck_assert_msg(memcmp(q, effml_tensor_data_const(gr), effml_tensor_nbytes(gr)) == 0,
                  "%s: INFER wrote the grad of %s", r->label, effml_layer_param_name(l, p));
    q += effml_tensor_nbytes(gr);
  }
  ck_assert_msg(l->train_pending == pend && l->pending_batch == pbatch &&
                    l->pending_width == pwidth && l->n_params == nparams &&
                    l->n_children == nchild && l->impl == impl,
                "%s: INFER wrote the generic layer state", r->label);
  /* The pending TRAIN forward survived the inferences. */
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
  free(snap);
  effml_tensor_free(ref);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(dy);
  effml_tensor_free(dx);
  effml_layer_free(l);
  effml_context_free(ctx);
}

static void check_alloc(const row *r) {
  effml_context *plain = tu_ctx(16);
  effml_layer *probe = make(r, plain);
  const int64_t in = in_width(r, probe), out = out_width(probe, in);
  effml_layer_free(probe);
  effml_tensor *x = tu_f32(plain, BATCH, in, NULL), *y = tu_f32(plain, BATCH, out, NULL);
  effml_tensor *dy = tu_f32(plain, BATCH, out, NULL), *dx = tu_f32(plain, BATCH, in, NULL);
  fill_input(x, 17);
  tu_fill_uniform(dy, 18, -1.0f, 1.0f);
  for (int64_t n = 1; n <= 100000; ++n) {
    tu_failing_alloc fa = {0, 0, 0};
    effml_context *ctx = tu_ctx_failing(&fa);
    fa.fail_at = n;
    effml_layer *l = NULL;
    effml_status st = r->make(ctx, &l);
    if (st == EFFML_OK) st = effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN);
    if (st == EFFML_OK) st = effml_layer_backward(ctx, l, dy, dx);
    if (st == EFFML_OK) st = effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_INFER);
    const int64_t count = fa.count;
    fa.fail_at = 0;
    ck_assert_msg(st == EFFML_OK || st == EFFML_E_NOMEM,
                  "%s: allocation %lld failing gave status %d: %s", r->label, (long long)n,
                  (int)st, effml_context_last_error(ctx));
    effml_layer_free(l);
    effml_context_free(ctx);
    ck_assert_msg(fa.live == 0, "%s: allocation %lld failing leaked %lld blocks", r->label,
                  (long long)n, (long long)fa.live);
    if (st == EFFML_OK) {
      ck_assert_msg(count == n - 1, "%s: succeeded at N=%lld after %lld allocations", r->label,
                    (long long)n, (long long)count);
      break;
    }
  }
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(dy);
  effml_tensor_free(dx);
  effml_context_free(plain);
}

static void expect_refused(const row *r, effml_context *ctx, effml_status got, effml_status want,
                           const char *what) {
  ck_assert_msg(got == want, "%s: %s gave status %d, expected %d", r->label, what, (int)got,
                (int)want);
  ck_assert_msg(effml_context_last_error(ctx)[0] != '\0', "%s: %s: no message", r->label, what);
  effml_context_clear_error(ctx);
}

static void check_rejects(const row *r) {
  effml_context *ctx = tu_ctx(17);
  effml_layer *l = make(r, ctx);
  const int64_t in = in_width(r, l), out = out_width(l, in);
  effml_tensor *x = tu_f32(ctx, BATCH, in, NULL), *y = tu_f32(ctx, BATCH, out, NULL);
  effml_tensor *ybad = tu_f32(ctx, BATCH, out + 1, NULL), *dy = tu_f32(ctx, BATCH, out, NULL);
  effml_tensor *dybad = tu_f32(ctx, BATCH + 1, out, NULL), *dx = tu_f32(ctx, BATCH, in, NULL);
  int64_t sh[2] = {BATCH, in}, sh3[3] = {BATCH, in, 1};
  effml_tensor *x64 = NULL, *x3 = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, sh, &x64), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 3, sh3, &x3), EFFML_OK);
  fill_input(x, 19);
  expect_refused(r, ctx, effml_layer_backward(ctx, l, dy, dx), EFFML_E_STATE,
                 "backward before a TRAIN forward");
  expect_refused(r, ctx, effml_layer_forward(ctx, l, x64, y, EFFML_LAYER_MODE_TRAIN), EFFML_E_DTYPE,
                 "f64 x");
  expect_refused(r, ctx, effml_layer_forward(ctx, l, x3, y, EFFML_LAYER_MODE_TRAIN), EFFML_E_SHAPE,
                 "3-D x");
  expect_refused(r, ctx, effml_layer_forward(ctx, l, x, ybad, EFFML_LAYER_MODE_TRAIN), EFFML_E_SHAPE,
                 "y of the wrong width");
  if (effml_layer_in_features(l)) {
    effml_tensor *xw = tu_f32(ctx, BATCH, in + 1, NULL), *yw = tu_f32(ctx, BATCH, out, NULL);
    expect_refused(r, ctx, effml_layer_forward(ctx, l, xw, yw, EFFML_LAYER_MODE_TRAIN), EFFML_E_SHAPE,
                   "x of the wrong width");
    effml_tensor_free(xw);
    effml_tensor_free(yw);
  }
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  expect_refused(r, ctx, effml_layer_backward(ctx, l, dybad, dx), EFFML_E_SHAPE,
                 "dy of the wrong batch");
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
  effml_tensor_free(x);
  effml_tensor_free(x64);
  effml_tensor_free(x3);
  effml_tensor_free(y);
  effml_tensor_free(ybad);
  effml_tensor_free(dy);
  effml_tensor_free(dybad);
  effml_tensor_free(dx);
  effml_layer_free(l);
  effml_context_free(ctx);
}

/* ---- cases ---- */

#define EACH_ROW(fn)                                              \
  START_TEST(test_##fn) { fn(&ROWS[_i]); }                        \
  END_TEST

EACH_ROW(check_gradients)
EACH_ROW(check_modes)
EACH_ROW(check_save_load)
EACH_ROW(check_frozen)
EACH_ROW(check_threads)
EACH_ROW(check_alloc)
EACH_ROW(check_rejects)

/* Every registered kind has a row; every row's layers use a registered kind. */
START_TEST(test_registry) {
  effml_context *ctx = tu_ctx(1);
  const int32_t nk = effml__layer_kind_count();
  ck_assert_int_gt(nk, 0);
  int covered[64] = {0};
  ck_assert_int_le(nk, 64);
  for (int i = 0; i < N_ROWS; ++i) {
    effml_layer *l = make(&ROWS[i], ctx);
    int k = 0;
    while (k < nk && effml__layer_kind_at(k) != l->ops) ++k;
    ck_assert_msg(k < nk, "row %s: its layer's ops table '%s' is not registered", ROWS[i].label,
                  l->ops->name);
    ck_assert_msg(strcmp(l->ops->name, ROWS[i].ops_name) == 0,
                  "row %s: layer uses the '%s' table, the row says '%s'", ROWS[i].label,
                  l->ops->name, ROWS[i].ops_name);
    covered[k] = 1;
    effml_layer_free(l);
  }
  for (int32_t k = 0; k < nk; ++k)
    ck_assert_msg(covered[k], "registered layer kind '%s' has no conformance row",
                  effml__layer_kind_at(k)->name);
  effml_context_free(ctx);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("conformance");
  TCase *tc = tcase_create("registry");
  tcase_add_test(tc, test_registry);
  suite_add_tcase(s, tc);
  struct {
    const char *name;
    const TTest *test;
  } cases[] = {{"gradients", test_check_gradients}, {"modes", test_check_modes},
               {"save_load", test_check_save_load}, {"frozen", test_check_frozen},
               {"threads", test_check_threads},     {"alloc", test_check_alloc},
               {"rejects", test_check_rejects}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
    tc = tcase_create(cases[c].name);
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, cases[c].test, 0, N_ROWS);
    suite_add_tcase(s, tc);
  }
  return s;
}

int main(void) { return tu_run(suite()) ? EXIT_FAILURE : EXIT_SUCCESS; }
