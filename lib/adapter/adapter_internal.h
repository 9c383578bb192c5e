/*
 * Internal state shared by the adapter files (lib/adapter/).  The maths of
 * each kernel is in the file named after it:
 *   phm_rule.c          the shared rule A (refcounted)
 *   phm.c               PHM/LPHM layer: construction, init, path switch
 *   phm_factorized.c    forward/backward that never build H (Karimi Mahabadi et al. 2021, arXiv 2106.04647, §3.2)
 *   phm_rows.c          its row kernels for thin LPHM (n*r <= 16), one body per ISA level
 *   phm_materialized.c  H = sum_i A_i (x) B_i, and the reference forward/backward
 *   adapter_block.c     up(act(down(x))) + x, and the parameter formulas
 *   dense_base.c        the dense base under LoRA/LoKr/LoHa/IA3/VeRA (weight [out, in] or [in, out])
 *   conv1d.c            GPT-2 Conv1D (a dense layer with weight [in, out])
 *   lora.c, lora_dora.c LoRA and its DoRA kernels
 *   lokr.c, loha.c      Kronecker / Hadamard-product deltas
 *   ia3.c, vera.c       IA3 scaling vector, VeRA shared random pair
 *   adapter_files.c     files of the Python tools (PEFT LoRA, AdapterHub)
 *   peft_config.c       adapter_config.json field tables
 *   peft_adapter.c      a PEFT adapter directory as one object
 *   peft_lokr.c         PEFT LoKr files
 *   peft_save.c         saving LoKr, LoHa, IA3 and VeRA in PEFT's layout
 */
#ifndef EFFML_ADAPTER_INTERNAL_H
#define EFFML_ADAPTER_INTERNAL_H

#include "../layer/layer_internal.h"

struct effml_phm_rule {
  effml_context *ctx;
  int64_t n;
  int32_t refs;
  effml_tensor *value; /* [n, n, n] */
  effml_tensor *grad;  /* [n, n, n] */
};

/* Take one more reference (the layer that uses the rule). */
EFFML__HIDDEN void effml__phm_rule_retain(effml_phm_rule *rule);

/* A PHM (r == 0, full B_i) or LPHM (r >= 1, B_i = s_i t_i) projection. */
typedef struct effml__phm {
  int64_t n, r, kin, kout;
  int32_t path;        /* EFFML_ADAPTER_PHM_PATH_* */
  int32_t fixed_rule;  /* 1: A = [[[1]]] (n = 1, no rule parameter: a dense projection) */
  effml_phm_rule *rule; /* shared rule (reference held) or NULL */
  int32_t i_rule, i_wl, i_wr, i_w, i_b; /* param indices, -1 if absent */
  /* kept between a TRAIN forward and its backward */
  const float *x;      /* borrowed input [b, in] */
  int64_t batch;
  float *P, *Q;        /* factorized: [b*n, n*r] (LPHM) or Z [b*n, n*kout] (PHM) */
  size_t cap_pq;       /* floats in each of P and Q */
  float *H;            /* materialized path: H [in, out] of the last forward */
  float *dQ, *dP;      /* backward workspaces (grown, reused: no page faults per step) */
  size_t cap_d;
} effml__phm;

/* Create a PHM/LPHM layer; fixed_rule builds the n = 1 dense projection used
 * by the adapter block (no "phm_rule" parameter). */
EFFML__HIDDEN effml_status effml__phm_create(effml_context *ctx, int64_t in, int64_t out,
                                             const effml_adapter_phm_options *opt, effml_phm_rule *rule,
                                             int32_t fixed_rule, effml_layer **out_layer);
/* 1 if the layer is a PHM/LPHM layer. */
EFFML__HIDDEN int effml__is_phm(const effml_layer *l);
/* Rule values A [n,n,n] of the layer (the constant 1 for fixed_rule). */
EFFML__HIDDEN const float *effml__phm_rule_f32(const effml_layer *l);
/* Gradient buffer of A, or NULL if A is fixed or frozen in this layer. */
EFFML__HIDDEN float *effml__phm_rule_grad_f32(effml_layer *l);
/* Trainable flag of param index i (0 if i < 0). */
EFFML__HIDDEN int effml__param_trainable(effml_layer *l, int32_t i);

/* Factorized kernels (phm_factorized.c).  x [b, in] -> y [b, out]. */
EFFML__HIDDEN effml_status effml__phm_forward_factorized(effml_context *ctx, effml_layer *l,
                                                         const float *x, int64_t b, float *y,
                                                         int32_t mode);
EFFML__HIDDEN effml_status effml__phm_backward_factorized(effml_context *ctx, effml_layer *l,
                                                          const float *dy, float *dx);
/* Row kernels of the thin LPHM (n*r <= EFFML__PHM_MAXC), phm_rows.c: stages
 * 1-3 of the factorized forward, and the backward's dQ, dP, dx and chunk parts
 * of dT, dA and dS^T, in one pass over each row of x / dy.  Built once per ISA
 * level; the context's level picks one (bit-identical results). */
#define EFFML__PHM_MAXC 16
#define EFFML__PHM_CHUNK 64 /* backward rows per chunk (fixed: results do not depend on threads) */
typedef struct effml__phm_rows_args {
  const float *A;     /* [n, n, n] */
  const float *St;    /* S transposed [n*r, kin] */
  const float *T;     /* W_right as [n*r, kout] */
  const float *bias;  /* forward: [n*kout] or NULL */
  int64_t n, r, kin, kout, batch;
  /* forward: x [b, n*kin] -> P, Q [b*n, n*r] (kept; both NULL: not kept), y [b, n*kout] */
  const float *x;
  float *P, *Q, *y;
  /* backward: dy [b, n*kout]; P, Q as kept; x (NULL: no dS^T); out: dx (or
   * NULL), dP [b*n, n*r] (or NULL), per-chunk parts dSt [chunks][n*r][kin],
   * dT [chunks][n*r][kout], dA [chunks][n][n][n] (each NULL when not wanted) */
  const float *dy;
  float *dx, *dP, *dSt, *dT, *dA;
} effml__phm_rows_args;
EFFML__HIDDEN effml__range_fn effml__phm_rows_forward(const effml_context *ctx);
EFFML__HIDDEN effml__range_fn effml__phm_rows_backward(const effml_context *ctx);

/* Materialized kernels (phm_materialized.c). */
EFFML__HIDDEN effml_status effml__phm_build_H(effml_context *ctx, const effml_layer *l, float *H);
EFFML__HIDDEN effml_status effml__phm_forward_materialized(effml_context *ctx, effml_layer *l,
                                                           const float *x, int64_t b, float *y,
                                                           int32_t mode);
EFFML__HIDDEN effml_status effml__phm_backward_materialized(effml_context *ctx, effml_layer *l,
                                                            const float *dy, float *dx);

/* A dense base layer as LoRA/LoKr see it: weight [out, in], bias [out] or NULL. */
typedef struct effml__dense_base {
  effml_layer *layer;   /* owned */
  int32_t i_weight, i_bias; /* indices in the wrapper's param list */
  int32_t transposed;   /* 1: weight stored [in, out] (GPT-2 Conv1D, PEFT fan_in_fan_out) */
} effml__dense_base;
/* 1 if `base` stores its weight [in, out] (kind "conv1d"). */
EFFML__HIDDEN int effml__base_is_transposed(const effml_layer *base);
/* The products below go through the checked BLAS wrappers (lib/core/blas.h):
 * a size the BLAS integer cannot hold is an error in ctx. */
/* y = x W^T + beta y (no bias), W the logical [out, in] weight, for b rows. */
EFFML__HIDDEN EFFML__MUST_CHECK effml_status effml__dense_base_matmul(
    effml_context *ctx, const effml_layer *l, const effml__dense_base *db, const float *x,
    int64_t b, float beta, float *y);
/* dx = dy W + beta dx. */
EFFML__HIDDEN EFFML__MUST_CHECK effml_status effml__dense_base_matmul_t(
    effml_context *ctx, const effml_layer *l, const effml__dense_base *db, const float *dy,
    int64_t b, float beta, float *dx);
/* grad(W) += dy^T x (in the storage layout). */
EFFML__HIDDEN EFFML__MUST_CHECK effml_status effml__dense_base_wgrad(
    effml_context *ctx, effml_layer *l, const effml__dense_base *db, const float *dy,
    const float *x, int64_t b);
/* Copy logical rows j0 .. j0+nb-1 of W ([nb, in]) out of / into the storage. */
EFFML__HIDDEN void effml__dense_base_rows(const effml_layer *l, const effml__dense_base *db, int64_t j0,
                                          int64_t nb, float *T);
EFFML__HIDDEN void effml__dense_base_set_rows(effml_layer *l, const effml__dense_base *db, int64_t j0,
                                              int64_t nb, const float *T);

/* Check `base` has "weight" [out, in] (and optional "bias" [out]); give in, out. */
EFFML__HIDDEN effml_status effml__wrap_dense_base(effml_context *ctx, effml_layer *base,
                                                  int64_t *in, int64_t *out);
/* Register base's weight and bias as "base_layer.weight" and "base_layer.bias" of `l`
 * (trainable = !freeze); `l` takes ownership of `base` when this succeeds. */
EFFML__HIDDEN effml_status effml__register_dense_base(effml_context *ctx, effml_layer *l,
                                                      effml_layer *base, int32_t freeze,
                                                      effml__dense_base *db);
/* y = x W^T + b (W [out, in]) for b rows; dx = dy W (beta 0) and base grads if trainable. */
EFFML__HIDDEN EFFML__MUST_CHECK effml_status effml__dense_base_forward(
    effml_context *ctx, effml_layer *l, const effml__dense_base *db, const float *x, int64_t b,
    float *y);
EFFML__HIDDEN EFFML__MUST_CHECK effml_status effml__dense_base_backward(
    effml_context *ctx, effml_layer *l, const effml__dense_base *db, const float *x,
    const float *dy, int64_t b, float *dx);

/* A LoRA / DoRA layer (lora.c; DoRA kernels in lora_dora.c). */
typedef struct effml__lora {
  effml__dense_base base;
  int64_t r;
  double alpha, scaling, dropout;
  int32_t use_rslora, use_dora, merged;
  int32_t i_a, i_b, i_bb, i_m; /* lora_B.bias, lora_magnitude_vector: -1 if absent */
  const float *x;  /* borrowed input of the last TRAIN forward */
  int64_t batch;
  float *U;        /* [batch, r] of the last TRAIN forward */
  size_t cap_u;
  int32_t dropped; /* the last TRAIN forward applied dropout: xd, mask valid */
  float *xd, *mask; /* [batch, in] dropped input and mask (0 or 1/(1-p)) */
  size_t cap_x;
  float *Z;        /* DoRA: [batch, out] x_d W^T + s U B^T of the last TRAIN forward */
  size_t cap_z;
  float *norm;     /* DoRA: [out] ||W + s B A||_row of the last forward */
  float *merge_norm; /* DoRA: [out] the norm used by merge (for unmerge) */
} effml__lora;
/* effml__grow_f32, effml__fwd_scratch: layer_internal.h. */
/* Training dropout of x before lora_A (TRAIN and p > 0): returns x_d (p->xd, mask in p->mask,
 * p->dropped = 1) or x itself; NULL on allocation failure (*st set). */
EFFML__HIDDEN const float *effml__lora_dropout(effml_context *ctx, effml__lora *p, const float *x, int64_t b,
                                               int64_t in, int32_t mode, effml_status *st);
/* Inverted dropout of x [n] (PEFT nn.Dropout, as lora_dropout): mask[i] = 0 when the context
 * generator's next uniform u < p, else 1/(1-p), drawn in order; xd = x .* mask.  *xd and *mask
 * are grown together (capacity *cap).  0 on allocation failure (*cap then 0). */
EFFML__HIDDEN int effml__input_dropout(effml_context *ctx, double p, const float *x, size_t n, float **xd,
                                       float **mask, size_t *cap);

/* LoHa/LoKr training dropouts (PEFT LoHaLayer/LoKrLayer, after LyCORIS):
 *   module_dropout: the whole delta is skipped in a TRAIN forward when u < module_p;
 *   rank_dropout: otherwise one mask over the out rows of dW, row_mask[j] = 0 when u < rank_p
 *   else 1, divided by its mean (kept/out) when rank_scale (LoHa always; LoKr when
 *   rank_dropout_scale).  Every row dropped leaves an all-zero mask (PEFT's 0/0 gives NaN).
 * Draws happen only in TRAIN and only for p > 0 (module first, then the rows). */
typedef struct effml__delta_dropout {
  double rank_p, module_p;
  int32_t rank_scale;
  int32_t skipped; /* the last TRAIN forward skipped the delta */
  int32_t masked;  /* the last TRAIN forward applied row_mask */
  float *row_mask; /* [out] */
  size_t cap;
} effml__delta_dropout;
/* Draw for one TRAIN forward; sets skipped/masked.  EFFML_E_NOMEM names `who`. */
EFFML__HIDDEN effml_status effml__delta_dropout_draw(effml_context *ctx, effml__delta_dropout *d, int64_t out,
                                                     const char *who);
/* Check rank_p, module_p in [0, 1) and store them. */
EFFML__HIDDEN effml_status effml__delta_dropout_set(effml_context *ctx, effml__delta_dropout *d, const char *fn,
                                                    double rank_p, double module_p, int32_t rank_scale);
/* t[i, j] *= row_mask[j] for b rows of width out. */
EFFML__HIDDEN void effml__delta_dropout_apply(const effml__delta_dropout *d, float *t, int64_t b, int64_t out);

/* What the last TRAIN forward of a LoHa, LoKr or VeRA layer drew (tests): row_mask [out] when
 * masked, in_mask [batch, in] for VeRA's input dropout when dropped; 0 if not such a layer. */
typedef struct effml__dropout_probe {
  int32_t skipped, masked, dropped;
  const float *row_mask, *in_mask;
} effml__dropout_probe;
EFFML__HIDDEN int effml__adapter_dropout_probe(const effml_layer *l, effml__dropout_probe *out);
EFFML__HIDDEN int effml__loha_dropout_probe(const effml_layer *l, effml__dropout_probe *out);
EFFML__HIDDEN int effml__lokr_dropout_probe(const effml_layer *l, effml__dropout_probe *out);
EFFML__HIDDEN int effml__vera_dropout_probe(const effml_layer *l, effml__dropout_probe *out);
/* The impl of a LoRA layer, or NULL. */
EFFML__HIDDEN effml__lora *effml__lora_impl(const effml_layer *l);
/* DoRA: out[j] = ||W_j + s B_j A|| (row norms of the logical [out, in] weight). */
EFFML__HIDDEN effml_status effml__dora_norms(effml_context *ctx, effml_layer *l, float *out);
EFFML__HIDDEN effml_status effml__dora_forward(effml_context *ctx, effml_layer *l, const float *x, int64_t b,
                                               float *y, int32_t mode);
EFFML__HIDDEN effml_status effml__dora_backward(effml_context *ctx, effml_layer *l, const float *dy, float *dx);
EFFML__HIDDEN effml_status effml__dora_merge(effml_context *ctx, effml_layer *l, int32_t to_merged);

/* LoRA internals for the PEFT loader: rank, and set alpha/use_rslora (recomputes the scaling). */
EFFML__HIDDEN int effml__is_lora(const effml_layer *layer);
EFFML__HIDDEN int64_t effml__lora_rank(const effml_layer *layer);
EFFML__HIDDEN double effml__lora_alpha(const effml_layer *layer);
EFFML__HIDDEN int32_t effml__lora_rslora(const effml_layer *layer);
EFFML__HIDDEN void effml__lora_set_alpha(effml_layer *layer, double alpha, int32_t use_rslora);
/* 1 if the layer is an adapter block. */
EFFML__HIDDEN int effml__is_adapter(const effml_layer *layer);

/* LoKr internals for the PEFT loader: 1 if LoKr; rank; set alpha (PEFT scale alpha / r). */
EFFML__HIDDEN int effml__is_lokr(const effml_layer *layer);
EFFML__HIDDEN int64_t effml__lokr_rank(const effml_layer *layer);
EFFML__HIDDEN void effml__lokr_set_alpha(effml_layer *layer, double alpha);
/* The adapter kinds' ops tables (registered in lib/registry/layer_kinds.c). */
EFFML__HIDDEN extern const effml__layer_ops effml__lora_ops, effml__lokr_ops, effml__phm_ops,
    effml__adapter_block_ops, effml__conv1d_ops, effml__ia3_ops, effml__loha_ops, effml__vera_ops;

/* kaiming_uniform_(a) of PyTorch on a 2-D [rows, cols] tensor: bound = gain*sqrt(3/fan_in),
 * gain = sqrt(2/(1+a^2)), fan_in = cols.  From the context generator. */
EFFML__HIDDEN void effml__init_kaiming_uniform(effml_context *ctx, float *w, int64_t rows,
                                               int64_t cols, double a);

/* ---- PEFT adapter_config.json (peft_config.c): the field table ---- */
struct cJSON;
#define EFFML__PEFT_CAP_DORA 1u      /* the caller honours use_dora */
#define EFFML__PEFT_CAP_LORA_BIAS 2u /* the caller honours lora_bias */
#define EFFML__PEFT_LORA 0
#define EFFML__PEFT_LOKR 1
#define EFFML__PEFT_IA3 2
#define EFFML__PEFT_LOHA 3
#define EFFML__PEFT_VERA 4
typedef struct effml__peft_cfg {
  effml_context *ctx;
  int32_t type;             /* EFFML__PEFT_* */
  int32_t auto_type;        /* the type came from peft_type (effml_adapter_peft_open) */
  int32_t decompose_both;   /* LoKr */
  int64_t decompose_factor; /* LoKr, -1 = none */
  char *path;               /* <dir>/adapter_config.json */
  struct cJSON *root;
  uint32_t caps;
  int64_t r;
  double alpha, dropout;     /* dropout: lora_dropout, or VeRA's vera_dropout */
  double rank_dropout, module_dropout; /* LoHa/LoKr */
  int32_t rank_dropout_scale;          /* LoKr */
  int32_t use_rslora, use_dora, lora_bias, fan_in_fan_out;
  const struct cJSON *rank_pattern, *alpha_pattern; /* inside root, or NULL */
  const struct cJSON *feedforward; /* IA3 feedforward_modules, or NULL */
  const struct cJSON *target, *exclude, *layers_pattern, *layers_to_transform; /* or NULL */
} effml__peft_cfg;
/* "model.layers.0.q_proj" -> "model\.layers\.0\.q_proj": a rank/alpha_pattern key matching
 * exactly that module (regex metacharacters escaped).  Caller frees with effml__free; NULL when
 * out of memory. */
EFFML__HIDDEN char *effml__peft_pattern_key(effml_context *ctx, const char *module_name);
/* a + b + c in one new string (caller frees with effml__free); NULL when out of memory. */
EFFML__HIDDEN char *effml__peft_join3(effml_context *ctx, const char *a, const char *b, const char *c);
/* Index of the layer's parameter called `name`, or -1. */
EFFML__HIDDEN int32_t effml__peft_param_index(const effml_layer *l, const char *name);
/* Write `text` to `path` (created or truncated).  EFFML_E_IO naming the path on failure. */
EFFML__HIDDEN effml_status effml__peft_write_text(effml_context *ctx, const char *path,
                                                  const char *text);
/* Read and check every key of a LoRA adapter_config.json against the field
 * table; EFFML_E_UNSUPPORTED names the key and value it cannot honour. */
EFFML__HIDDEN effml_status effml__peft_cfg_open(effml_context *ctx, const char *dir, uint32_t caps,
                                                effml__peft_cfg **out);
EFFML__HIDDEN effml_status effml__peft_cfg_open_type(effml_context *ctx, const char *dir, int32_t type,
                                                     uint32_t caps, effml__peft_cfg **out);
EFFML__HIDDEN void effml__peft_cfg_close(effml__peft_cfg *c);
/* r and alpha of one module after rank_pattern / alpha_pattern (PEFT's get_pattern_key). */
EFFML__HIDDEN void effml__peft_cfg_module(const effml__peft_cfg *c, const char *module_name, int64_t *r,
                                          double *alpha);
/* The rank_pattern key that sets the module's r (borrowed from the config), or NULL when r does. */
EFFML__HIDDEN const char *effml__peft_cfg_rank_source(const effml__peft_cfg *c, const char *module_name);
/* IA3: 1 if the module is in feedforward_modules (PEFT's matching: a string is a full regex
 * match, a list matches by name suffix). */
EFFML__HIDDEN int effml__peft_cfg_feedforward(const effml__peft_cfg *c, const char *module_name);
/* PEFT 0.21's check_target_module_exists on the module name without "base_model.model.":
 * exclude_modules (string: re.fullmatch; list: equal or ends with "." + entry) wins; then
 * target_modules (string: re.fullmatch, "all-linear" matches all; list: equal, or ends with
 * "." + entry and, for the latter, the layer index passes layers_to_transform/layers_pattern).
 * target_modules null or absent: 1.  0 sets *why_key to the deciding key. */
EFFML__HIDDEN const char *effml__peft_cfg_value(const effml__peft_cfg *c, const char *key, char *buf, size_t len);
/* Problems collected instead of returned (effml_adapter_peft_problems): one line each in buf
 * (NUL-terminated, cut at len), n counts them all. */
typedef struct effml__peft_sink {
  char *buf;
  size_t len, used;
  int64_t n;
} effml__peft_sink;
EFFML__HIDDEN void effml__peft_sink_add(effml__peft_sink *k, const char *msg);
/* effml__peft_cfg_open_type(); with a sink, a key it cannot honour is recorded there and the
 * other keys are still checked (the result is EFFML_OK with *out set, unless the file cannot be
 * read or its peft_type is missing or unknown). */
EFFML__HIDDEN effml_status effml__peft_cfg_open_collect(effml_context *ctx, const char *dir, int32_t type, uint32_t caps,
                                                        effml__peft_sink *sink, effml__peft_cfg **out);
EFFML__HIDDEN int effml__peft_cfg_targets(const effml__peft_cfg *c, const char *module_name, const char **why_key);
/* 1 if the layer is an IA3 layer (ia3.c). */
EFFML__HIDDEN int effml__is_ia3(const effml_layer *l);
/* LoHa (loha.c): 1 if LoHa; set alpha (scale alpha / r). */
EFFML__HIDDEN int effml__is_loha(const effml_layer *l);
EFFML__HIDDEN void effml__loha_set_alpha(effml_layer *l, double alpha);
/* 1 if the layer is a VeRA layer (vera.c). */
EFFML__HIDDEN int effml__is_vera(const effml_layer *l);
/* The module name as PEFT matches patterns: without "base_model.model.". */
EFFML__HIDDEN const char *effml__peft_module_key(const char *module_name);

/* effml_adapter_conv1d_create() without the random initialisation (weight and bias zero). */
EFFML__HIDDEN effml_status effml__conv1d_create_uninit(effml_context *ctx, int64_t in_features, int64_t out_features,
                                                       int32_t bias, effml_layer **out);

/* What a PEFT-layout saver needs to know of a LoKr, LoHa, IA3 or VeRA layer (0 where it does not apply). */
typedef struct effml__adapter_info {
  int64_t r;
  double alpha;
  int32_t merged, transposed, feedforward, w1_factored;
  int64_t out_l, out_k, in_m, in_n; /* LoKr's factorization */
  double rank_dropout, module_dropout, dropout; /* LoHa/LoKr; VeRA's vera_dropout */
  int32_t rank_dropout_scale;                   /* LoKr */
} effml__adapter_info;
EFFML__HIDDEN void effml__lokr_info(const effml_layer *layer, effml__adapter_info *in);
EFFML__HIDDEN void effml__loha_info(const effml_layer *layer, effml__adapter_info *in);
EFFML__HIDDEN void effml__vera_info(const effml_layer *layer, effml__adapter_info *in);
EFFML__HIDDEN void effml__ia3_info(const effml_layer *layer, effml__adapter_info *in);
EFFML__HIDDEN void effml__adapter_get_info(const effml_layer *layer, effml__adapter_info *in);

#endif /* EFFML_ADAPTER_INTERNAL_H */
