/**
 * @file effml/adapter.h
 * @brief Kronecker and low-rank adapters: PHM, Compacter (LPHM with a shared
 *        phm rule), Compacter++, LoRA, LoKr, the adapter block, and the
 *        PEFT / AdapterHub files users already have.
 *
 * PHM (Zhang et al., ICLR 2021) builds a weight as a sum of Kronecker
 * products H = sum_i A_i (x) B_i; Compacter (Karimi Mahabadi et al., NeurIPS
 * 2021, arXiv 2106.04647, eq. 5) makes each B_i = s_i t_i low rank and shares
 * the "phm rule" A = [A_1..A_n] between every adapter of a model.  Every
 * layer here is an effml_layer with the weight convention of the reference
 * code: `y = x H + b`, H of shape `[in, out]` (the transpose of nn.Linear's
 * weight).  The forward and backward passes never build H; they cost
 * b*n*r*(k + d + n^2) multiply-adds for b rows (Compacter section 3.2).
 * LoRA (Hu et al. 2021; PEFT layout) and LoKr (PEFT / LyCORIS) wrap a frozen
 * dense base layer (`weight [out, in]`, PyTorch layout).
 *
 * @code
 *   effml_phm_rule *A;  effml_phm_rule_create(ctx, 4, 1e-4, &A);   // shared A ~ N(0, 1e-4)
 *   effml_adapter_options o;  effml_adapter_options_init(&o);      // Compacter defaults
 *   effml_layer *ad;  effml_adapter_create(ctx, 768, &o, A, &ad);    // 768 -> 24 -> 768 + x
 *   effml_phm_rule_free(A);                   // layers keep the rule alive
 *   effml_layer_forward(ctx, ad, x, y, EFFML_LAYER_MODE_TRAIN); ... effml_layer_free(ad);
 * @endcode
 *
 * Threads: as layer.h -- one thread at a time per layer; a phm rule shared by
 * several layers is written by each of their backward passes, so all layers
 * that share a rule belong to one thread while training.  Inference
 * (EFFML_LAYER_MODE_INFER) only reads layers and rules.
 *
 * Randomness: initial values come from the context's generator, drawn in
 * parameter order (rule, then W_left/W, then W_right), so one seed gives the
 * same adapters on every platform and thread count.
 */
#ifndef EFFML_ADAPTER_H
#define EFFML_ADAPTER_H

#include "core.h"
#include "tensor.h"
#include "layer.h"

EFFML_BEGIN_DECLS

/* ------------------------------------------------------------------------ */
/* The phm rule A: [phm_dim, phm_dim, phm_dim], A_i = rule[i]                */
/* ------------------------------------------------------------------------ */

/** The Kronecker "multiplication rule" A (n matrices of n x n), shareable. */
typedef struct effml_phm_rule effml_phm_rule;

/**
 * Create a phm rule A `[phm_dim, phm_dim, phm_dim]` (f32) with entries drawn
 * from N(0, init_std^2) by the context generator (init_std = 0 gives zeros).
 * Compacter's setting is init_std = 1e-4 (`phm_init_range`, configs/compacter.json).
 * Its gradient tensor (same shape) collects dA from every layer that uses it;
 * zero it (or any of those layers' gradients) before each step.
 * Reference-counted: each layer made with it holds a reference, so
 * effml_phm_rule_free() may be called as soon as the layers are built.
 * @return EFFML_E_INVALID_ARG (NULL ctx/out, phm_dim < 1 or > 64, init_std < 0
 *         or not finite), EFFML_E_NOMEM.  On error *out is untouched.
 */
EFFML_API effml_status effml_phm_rule_create(effml_context *ctx, int64_t phm_dim, double init_std,
                                             effml_phm_rule **out);
/** Drop the caller's reference; the rule is freed with its last user.  NULL is a no-op. */
EFFML_API void effml_phm_rule_free(effml_phm_rule *rule);
/** n (0 for NULL). */
EFFML_API int64_t effml_phm_rule_dim(const effml_phm_rule *rule);
/** Value `[n, n, n]` f32, rule[i][p][q] = A_i[p, q] (borrowed, writable, lives with the rule). */
EFFML_API effml_tensor *effml_phm_rule_value(effml_phm_rule *rule);
/** Gradient `[n, n, n]` f32 (borrowed, lives with the rule). */
EFFML_API effml_tensor *effml_phm_rule_grad(effml_phm_rule *rule);

/* ------------------------------------------------------------------------ */
/* PHM / LPHM layers                                                         */
/* ------------------------------------------------------------------------ */

/** Initialisation of s_i, t_i (or full B_i), per 2-D slice, fan_in = columns, fan_out = rows. */
#define EFFML_ADAPTER_PHM_INIT_GLOROT_UNIFORM 0 /**< reference code: xavier uniform, gain sqrt(2) (default) */
#define EFFML_ADAPTER_PHM_INIT_GLOROT_NORMAL 1  /**< xavier normal, gain sqrt(2) */
#define EFFML_ADAPTER_PHM_INIT_NORMAL 2         /**< N(0, phm_init_range^2) */
#define EFFML_ADAPTER_PHM_INIT_ADAPTERS 3       /**< what AdapterHub actually does: xavier normal, gain 1 */

/** Execution path of a PHM/LPHM layer. */
#define EFFML_ADAPTER_PHM_PATH_FACTORIZED 0   /**< never builds H: b*n*r*(k+d+n^2) MACs (default) */
#define EFFML_ADAPTER_PHM_PATH_MATERIALIZED 1 /**< builds H every call, then one GEMM (reference approach) */

/** Options of effml_adapter_phm_create(); fill with effml_adapter_phm_options_init(). */
typedef struct effml_adapter_phm_options {
  uint32_t struct_size;  /**< sizeof(effml_adapter_phm_options), set by _init */
  int64_t phm_dim;       /**< n, divides in and out (default 4); ignored when a shared rule is given */
  int32_t factorized;    /**< 1: LPHM, B_i = s_i t_i (default; AdapterHub factorized_phm_W); 0: full B_i (PHM) */
  int64_t rank;          /**< r >= 1 of s_i [in/n, r], t_i [r, out/n] (default 1; ignored when !factorized) */
  int32_t bias;          /**< 1: bias "b" [out] (default 1) */
  int32_t w_init;        /**< EFFML_ADAPTER_PHM_INIT_* (default GLOROT_UNIFORM) */
  double phm_init_range; /**< std of EFFML_ADAPTER_PHM_INIT_NORMAL (default 1e-4) */
  double rule_init_std;  /**< std of a per-layer rule (no shared rule), default 0.01 as the reference */
} effml_adapter_phm_options;

/** Fill `opt` with the defaults above (struct_size set).  NULL is ignored. */
EFFML_API void effml_adapter_phm_options_init(effml_adapter_phm_options *opt);

/**
 * Create a PHM (factorized = 0, kind "phm") or LPHM (kind "lphm") layer
 * `y = x H + b`, x `[batch, in]`, y `[batch, out]`,
 * H[p*kin+u, c*kout+v] = sum_i A_i[p,c] B_i[u,v], kin = in/n, kout = out/n
 * (Karimi Mahabadi et al. 2021, arXiv 2106.04647, eqs. 3-5; layout of
 * the reference code's `PHMLinear`).
 * Parameters (AdapterHub PHMLayer names and shapes): LPHM "W_left"
 * `[n, in/n, rank]` (s_i), "W_right" `[n, rank, out/n]` (t_i); PHM "W"
 * `[n, in/n, out/n]`; "phm_rule" `[n, n, n]`; "b" `[out]` (zero) when bias.
 * @param rule  shared rule (its n is used; the layer takes a reference), or
 *              NULL for a per-layer rule owned by the layer, N(0, rule_init_std^2).
 * @param opt   NULL for defaults.
 * @return EFFML_E_INVALID_ARG (NULL, rank < 1, in/out < 1, phm_dim < 1,
 *         bad w_init, negative ranges; message names the value),
 *         EFFML_E_SHAPE (n does not divide in or out: "in_features=10 is not
 *         a multiple of phm_dim=4"), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_phm_create(effml_context *ctx, int64_t in_features,
                                        int64_t out_features, const effml_adapter_phm_options *opt,
                                        effml_phm_rule *rule, effml_layer **out);

/**
 * Write H `[in, out]` (f32, caller-allocated, contiguous) of a "phm"/"lphm"
 * layer: for inspection, export to a dense layer (weight = H transposed), or
 * as the test oracle of the factorized path.  Cost n*in*out (+ in*out*r/n).
 * @return EFFML_E_INVALID_ARG (not a PHM layer), EFFML_E_SHAPE, EFFML_E_DTYPE.
 */
EFFML_API effml_status effml_adapter_phm_materialize(effml_context *ctx, const effml_layer *layer,
                                             effml_tensor *H);

/** Choose EFFML_ADAPTER_PHM_PATH_FACTORIZED or EFFML_ADAPTER_PHM_PATH_MATERIALIZED (same results to f32 rounding). */
EFFML_API effml_status effml_adapter_phm_set_path(effml_context *ctx, effml_layer *layer, int32_t path);

/** The shared rule of a PHM/LPHM layer (borrowed), or NULL if it owns a per-layer rule. */
EFFML_API effml_phm_rule *effml_adapter_phm_shared_rule(effml_layer *layer);

/* ------------------------------------------------------------------------ */
/* Adapter block: up(act(down(x))) + x                                       */
/* ------------------------------------------------------------------------ */

#define EFFML_ADAPTER_PROJ_LPHM 0  /**< Compacter: LPHM projections (default) */
#define EFFML_ADAPTER_PROJ_PHM 1   /**< PHM-Adapter: full B_i */
#define EFFML_ADAPTER_PROJ_DENSE 2 /**< Houlsby/Pfeiffer adapter: dense projections (n = 1) */

/** Options of effml_adapter_create(); fill with effml_adapter_options_init(). */
typedef struct effml_adapter_options {
  uint32_t struct_size;     /**< sizeof(effml_adapter_options), set by _init */
  int64_t reduction_factor; /**< bottleneck d = features / reduction_factor (default 32) */
  int64_t bottleneck;       /**< if > 0, d itself (overrides reduction_factor); default 0 */
  int32_t projection;       /**< EFFML_ADAPTER_PROJ_* (default LPHM) */
  int32_t activation;       /**< EFFML_LAYER_ACT_GELU_TANH (gelu_new, default), _GELU, _RELU, _SILU (swish) */
  int64_t phm_dim;          /**< n for per-block rules (default 4) */
  int64_t rank;             /**< r of the LPHM projections (default 1) */
  int32_t w_init;           /**< EFFML_ADAPTER_PHM_INIT_* (default GLOROT_UNIFORM) */
  double phm_init_range;    /**< see effml_adapter_phm_options (default 1e-4) */
  int32_t residual;         /**< 1: add x (default 1) */
  int32_t bias;             /**< 1: projections have biases (default 1) */
} effml_adapter_options;

/** Fill `opt` with the Compacter defaults above (struct_size set).  NULL is ignored. */
EFFML_API void effml_adapter_options_init(effml_adapter_options *opt);

/**
 * Create an adapter block (kind "adapter"), x and y `[batch, features]`:
 * y = up(act(down(x))) + x (Compacter eq. 2, HyperComplexAdapter), down:
 * features -> d, up: d -> features.  Placement is the caller's: Compacter puts
 * one after self-attention and one after the feed-forward block of every
 * layer, Compacter++ only after the feed-forward block (docs/adapters.md).
 * Parameters use AdapterHub names: "adapter_down.0.W_left", "adapter_down.0.W_right",
 * "adapter_down.0.b", "adapter_up.W_left", "adapter_up.W_right", "adapter_up.b"
 * ("…W" for PHM/dense projections; dense is W `[1, in, out]`), plus "phm_rule"
 * for a shared rule (one entry) or "adapter_down.0.phm_rule"/"adapter_up.phm_rule"
 * for per-projection rules.
 * @param rule  shared rule (LPHM/PHM; the block holds a reference) or NULL:
 *              per-projection rules of opt->phm_dim.  Ignored for DENSE.
 * @return EFFML_E_INVALID_ARG (bad option values), EFFML_E_SHAPE (n does
 *         not divide features or d; d < 1), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_create(effml_context *ctx, int64_t features,
                                            const effml_adapter_options *opt,
                                            effml_phm_rule *rule, effml_layer **out);
/** The down / up projection of an adapter block (borrowed "phm"/"lphm" layers), or NULL. */
EFFML_API effml_layer *effml_adapter_down(effml_layer *block);
EFFML_API effml_layer *effml_adapter_up(effml_layer *block);

/**
 * Trainable parameters of one adapter block as built by effml_adapter_create()
 * with `opt` (features -> d -> features).  Compacter section 4: a model with L
 * layers and 2 adapters per layer has 2L * count + n^3 = 4L(k + d) + n^3
 * (biases excluded); the PHM-Adapter 4L(kd/n + n^3).
 * @param shared_rule   1: the projections use a shared rule (counted by the
 *                      caller once per model); 0: per-projection rules, counted here.
 * @param include_bias  0: the paper's formulas; 1: what the layer holds.
 * @param out           receives the count.
 * @return EFFML_E_INVALID_ARG / EFFML_E_SHAPE as effml_adapter_create().
 */
EFFML_API effml_status effml_adapter_count_params(effml_context *ctx, int64_t features,
                                                  const effml_adapter_options *opt,
                                                  int32_t shared_rule, int32_t include_bias,
                                                  int64_t *out);

/* ------------------------------------------------------------------------ */
/* LoRA                                                                      */
/* ------------------------------------------------------------------------ */

#define EFFML_ADAPTER_LORA_INIT_KAIMING_UNIFORM 0 /**< A ~ kaiming_uniform(a = sqrt 5) as PEFT (default) */
#define EFFML_ADAPTER_LORA_INIT_GAUSSIAN 1        /**< A ~ N(0, (1/r)^2), PEFT "gaussian" */

/** Options of effml_adapter_lora_create(); fill with effml_adapter_lora_options_init(). */
typedef struct effml_adapter_lora_options {
  uint32_t struct_size; /**< sizeof(effml_adapter_lora_options), set by _init */
  int64_t rank;         /**< r >= 1 (default 8, PEFT) */
  double alpha;         /**< lora_alpha (default 8) */
  int32_t use_rslora;   /**< 1: scaling alpha/sqrt(r) instead of alpha/r (default 0) */
  int32_t init_a;       /**< EFFML_ADAPTER_LORA_INIT_* (default KAIMING_UNIFORM); B is always 0 */
  int32_t freeze_base;  /**< 1: base weight/bias frozen (default 1) */
  /* appended in 0.2 (struct_size tells them apart) */
  int32_t use_dora;     /**< 1: DoRA (Liu et al. 2024, arXiv 2402.09353): parameter "lora_magnitude_vector" [out] (default 0) */
  int32_t lora_bias;    /**< 1: PEFT lora_bias, parameter "lora_B.bias" [out], zero (default 0; not with use_dora) */
  double dropout;       /**< PEFT lora_dropout p in [0, 1): x is dropped before lora_A in EFFML_LAYER_MODE_TRAIN (default 0) */
} effml_adapter_lora_options;

/** Fill `opt` with PEFT's LoraConfig defaults (struct_size set).  NULL is ignored. */
EFFML_API void effml_adapter_lora_options_init(effml_adapter_lora_options *opt);

/**
 * Wrap a dense base layer (a layer with parameter "weight" `[out, in]` and
 * optionally "bias" `[out]`, e.g. effml_layer_dense_create(); or a "conv1d" layer,
 * weight stored `[in, out]`) in LoRA (kind "lora"):
 * y = x W^T + b + s (x_d A^T) B^T [+ s b_B], A "lora_A.weight" `[r, in]`,
 * B "lora_B.weight" `[out, r]` (zero), s = alpha/r (or alpha/sqrt(r)),
 * x_d = dropout(x) in training.  Hu et al. 2021 eq. 3; PEFT LoraLayer.
 * With use_dora (Liu et al. 2024, arXiv 2402.09353, eq. 5):
 * y = b + (m / ||W + s B A||_row) .* (x W^T + s (x A^T) B^T), the norm a
 * constant in backward (DoRA section 4.3, as PEFT); m "lora_magnitude_vector"
 * `[out]` starts at ||W||_row of the base weight at creation.  With lora_bias,
 * "lora_B.bias" `[out]` (zero).  Parameters: "base_layer.weight",
 * "base_layer.bias" (the base's own tensors), "lora_A.weight",
 * "lora_B.weight", then "lora_B.bias" / "lora_magnitude_vector".  Extra cost
 * per forward: r*(in+out) MACs per row; DoRA adds out*in*r MACs (the norms)
 * and one pass over W.
 * Ownership: on success the LoRA layer owns `base` (freed with it); on error
 * the caller still owns it.
 * @return EFFML_E_INVALID_ARG (NULL, rank < 1, alpha not finite, bad init_a,
 *         dropout outside [0, 1), base without "weight"), EFFML_E_UNSUPPORTED
 *         (use_dora with lora_bias), EFFML_E_SHAPE (base weight not 2-D or bias
 *         not [out]), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_lora_create(effml_context *ctx, effml_layer *base,
                                         const effml_adapter_lora_options *opt, effml_layer **out);
/** Borrow the base layer of a LoRA or LoKr layer (NULL otherwise). */
EFFML_API effml_layer *effml_adapter_lora_base(effml_layer *layer);
/** Scaling s of a LoRA layer (0 if not LoRA). */
EFFML_API double effml_adapter_lora_scaling(const effml_layer *layer);
/**
 * Merge: W <- W + s B A and b <- b + s b_B (PEFT merge); with DoRA
 * W <- (m / ||W + s B A||_row) .* (W + s B A), the norm kept for unmerge.
 * Forward then costs one GEMM.  Unmerge subtracts the same product.  A
 * merged DoRA or dropout layer refuses EFFML_LAYER_MODE_TRAIN (EFFML_E_STATE).  f32 rounding makes merge+unmerge inexact:
 * effml_adapter_lora_merge_drift() (experimental tier) measures it.
 * @return EFFML_E_STATE (already merged / not merged), EFFML_E_INVALID_ARG (not LoRA),
 *         EFFML_E_UNSUPPORTED (lora_bias on a base without bias: nothing to merge it into),
 *         EFFML_E_NOMEM (DoRA).
 */
EFFML_API effml_status effml_adapter_lora_merge(effml_context *ctx, effml_layer *layer);
EFFML_API effml_status effml_adapter_lora_unmerge(effml_context *ctx, effml_layer *layer);
/** 1 if merged, else 0. */
EFFML_API int32_t effml_adapter_lora_is_merged(const effml_layer *layer);
/**
 * Set the training dropout p in [0, 1) of a LoRA layer (PEFT lora_dropout:
 * x is dropped, and kept entries scaled by 1/(1-p), before lora_A, in
 * EFFML_LAYER_MODE_TRAIN only; masks come from the context generator).
 * @return EFFML_E_INVALID_ARG (not LoRA, p outside [0, 1)).
 */
EFFML_API effml_status effml_adapter_lora_set_dropout(effml_context *ctx, effml_layer *layer, double p);
/** The training dropout p of a LoRA layer (0 if not LoRA). */
EFFML_API double effml_adapter_lora_dropout(const effml_layer *layer);
#ifdef EFFML_EXPERIMENTAL
/**
 * [experimental tier: define EFFML_EXPERIMENTAL; version node EFFML_EXPERIMENTAL_0.2]
 * Run `cycles` merge/unmerge cycles on a copy of the base weight and report
 * max |W_after - W_before| (absolute) and that divided by max |W_before|.
 * The layer is not modified.  @return EFFML_E_INVALID_ARG, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_lora_merge_drift(effml_context *ctx, const effml_layer *layer,
                                              int64_t cycles, double *max_abs_error,
                                              double *max_rel_error);
#endif /* EFFML_EXPERIMENTAL */

/**
 * Create a GPT-2 `Conv1D` layer (kind "conv1d", HF transformers
 * pytorch_utils.Conv1D): y = x W + b with "weight" stored `[in, out]` (the
 * layout PEFT calls fan_in_fan_out) and "bias" `[out]` when `bias`.  Weight
 * N(0, 0.02^2) from the context generator, bias 0 (GPT-2's init).  Load a
 * GPT-2 checkpoint's `c_attn.weight` into it as is; effml_adapter_lora_create()
 * accepts it as a base and reads the layout from the kind, so LoRA/DoRA
 * adapters saved with fan_in_fan_out=true apply without transposing.
 * @return EFFML_E_INVALID_ARG (NULL, widths outside [1, 2^31-1]), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_conv1d_create(effml_context *ctx, int64_t in_features,
                                           int64_t out_features, int32_t bias, effml_layer **out);

/**
 * Fill `opt` (effml_adapter_lora_options_init() first is not needed) with what
 * `dir`/adapter_config.json says for one module: rank and alpha after
 * rank_pattern/alpha_pattern (PEFT's key matching on the name without
 * "base_model.model."), use_rslora, use_dora, lora_bias, dropout.  Create the
 * module's layer with these options, then effml_adapter_lora_load_peft().
 * @param module_name  e.g. "base_model.model.model.layers.0.self_attn.q_proj"
 * @return the errors of the field table (EFFML_E_UNSUPPORTED naming key and
 *         value, EFFML_E_FORMAT, EFFML_E_IO), EFFML_E_INVALID_ARG, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_lora_peft_options(effml_context *ctx, const char *dir,
                                               const char *module_name, effml_adapter_lora_options *opt);

/**
 * Load PEFT LoRA weights: `dir`/adapter_config.json and
 * `dir`/adapter_model.safetensors, keys `module_names[i]` + ".lora_A.weight"
 * `[r, in]` and ".lora_B.weight" `[out, r]` (PEFT's saved names, adapter name
 * removed), e.g. "base_model.model.model.layers.0.self_attn.q_proj".  Every
 * config key is checked against the field table of docs/adapters.md (PEFT
 * 0.21 LoraConfig): informational keys accepted, default/null/empty values
 * accepted, implemented values honoured (r, lora_alpha -- 8 when absent --,
 * use_rslora, rank_pattern/alpha_pattern with PEFT's key matching), any other
 * value refused.  use_dora and lora_bias must agree with how each layer was
 * made (see effml_adapter_lora_peft_options()); lora_dropout is set on every layer.
 * Sets each layer's A, B (and "lora_B.bias", "lora_magnitude_vector"),
 * scaling and dropout.  Every tensor of the file
 * must be consumed by one of the n modules.  All-or-nothing: on error no layer
 * changed.
 * @return EFFML_E_IO (missing files), EFFML_E_FORMAT (bad JSON, r missing,
 *         malformed value), EFFML_E_UNSUPPORTED (a config value this library
 *         cannot honour, or a tensor no module consumes: the message names the
 *         key and value, or the tensor), EFFML_E_NOT_FOUND (names the missing
 *         key), EFFML_E_SHAPE (a module's r after rank_pattern, or a tensor's
 *         shape, disagrees with the layer: names key and both shapes),
 *         EFFML_E_INVALID_ARG, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_lora_load_peft(effml_context *ctx, const char *dir, int64_t n,
                                            effml_layer *const *layers,
                                            const char *const *module_names);
/**
 * Save in PEFT's layout: `dir` (must exist)/adapter_model.safetensors (F32,
 * metadata {"format": "pt"}) and adapter_config.json (peft_type "LORA", r,
 * lora_alpha, use_rslora, use_dora, lora_dropout, fan_in_fan_out (true for
 * conv1d bases), lora_bias when set, target_modules = last name components,
 * r/alpha of modules that differ from layers[0] as rank_pattern/alpha_pattern).
 * Tensors: lora_A.weight, lora_B.weight, lora_B.bias, lora_magnitude_vector.
 * All layers must share use_rslora, use_dora, lora_bias, dropout and base
 * layout (EFFML_E_INVALID_ARG otherwise); a merged layer is EFFML_E_STATE.
 */
EFFML_API effml_status effml_adapter_lora_save_peft(effml_context *ctx, const char *dir, int64_t n,
                                            effml_layer *const *layers,
                                            const char *const *module_names,
                                            const char *base_model_name_or_path);

/* ------------------------------------------------------------------------ */
/* AdapterHub Compacter files                                                */
/* ------------------------------------------------------------------------ */

/**
 * Save adapter blocks with AdapterHub names: each block parameter under
 * `prefixes[i]` + "." + name (e.g. prefix
 * "bert.encoder.layer.0.output.adapters.task"), and a shared rule once
 * under `phm_rule_key` (e.g. "bert.shared_parameters.task.phm_rule").
 * Blocks must all share one rule, or all have per-projection rules
 * (phm_rule_key then unused, may be NULL).  Metadata {"format": "pt"}.
 */
EFFML_API effml_status effml_adapter_compacter_save_adapterhub(effml_context *ctx, const char *path,
                                                       int64_t n, effml_layer *const *blocks,
                                                       const char *const *prefixes,
                                                       const char *phm_rule_key);
/**
 * Load what effml_adapter_compacter_save_adapterhub() writes, or an AdapterHub
 * `adapter.safetensors`.  All-or-nothing.
 * @return EFFML_E_NOT_FOUND (names the missing key), EFFML_E_SHAPE (names the
 *         key and both shapes), EFFML_E_IO, EFFML_E_FORMAT, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_compacter_load_adapterhub(effml_context *ctx, const char *path,
                                                       int64_t n, effml_layer *const *blocks,
                                                       const char *const *prefixes,
                                                       const char *phm_rule_key);

/* ------------------------------------------------------------------------ */
/* LoKr                                                                      */
/* ------------------------------------------------------------------------ */

#define EFFML_ADAPTER_LOKR_SCALE_PEFT 0    /**< scale = alpha / r always (PEFT, default) */
#define EFFML_ADAPTER_LOKR_SCALE_LYCORIS 1 /**< scale 1 when w1 and w2 are both full (LyCORIS) */

/** Options of effml_adapter_lokr_create(); fill with effml_adapter_lokr_options_init(). */
typedef struct effml_adapter_lokr_options {
  uint32_t struct_size;     /**< sizeof(effml_adapter_lokr_options), set by _init */
  int64_t rank;             /**< r >= 1 (default 8) */
  double alpha;             /**< default 8 */
  int32_t decompose_both;   /**< 1: also factor w1 when r < max(out_l, in_m)/2 (default 0) */
  int64_t decompose_factor; /**< factorization cap, -1 = none (default) */
  int32_t scale_convention; /**< EFFML_ADAPTER_LOKR_SCALE_* (default PEFT) */
  int32_t freeze_base;      /**< default 1 */
} effml_adapter_lokr_options;

/** Fill `opt` with PEFT's LoKrConfig defaults.  NULL is ignored. */
EFFML_API void effml_adapter_lokr_options_init(effml_adapter_lokr_options *opt);

/**
 * PEFT's factorization(dim, factor): (m, n), m <= n, m * n = dim, closest
 * to sqrt(dim) (factor > 0 dividing dim gives (factor, dim/factor)).
 * Anchors: 256 -> (16,16); 128 -> (8,16); 127 -> (1,127); 128, 4 -> (4,32).
 * @return EFFML_E_INVALID_ARG (dim < 1, NULL outputs).
 */
EFFML_API effml_status effml_adapter_lokr_factorization(int64_t dim, int64_t factor, int64_t *m,
                                                int64_t *n);
/**
 * Wrap a dense base layer in LoKr (kind "lokr"): y = x W^T + b + x dW^T,
 * dW = scale (w1 (x) w2) `[out, in]`, w1 `[out_l, in_m]`, w2 `[out_k, in_n]`
 * (or low-rank w*_a w*_b), computed per row as scale * vec(w1 X w2^T) with
 * X = x reshaped `[in_m, in_n]` (never building dW).  Parameters:
 * "base_layer.weight", "base_layer.bias", "lokr_w1" or "lokr_w1_a"/"lokr_w1_b",
 * "lokr_w2" or "lokr_w2_a"/"lokr_w2_b".  Init as PEFT: w1 (or w1_a) = 0,
 * the others kaiming_uniform(a = sqrt 5).  Ownership of `base` as LoRA.
 */
EFFML_API effml_status effml_adapter_lokr_create(effml_context *ctx, effml_layer *base,
                                         const effml_adapter_lokr_options *opt, effml_layer **out);
/** Write dW `[out, in]` (scale included) of a LoKr layer (inspection, merge, tests). */
EFFML_API effml_status effml_adapter_lokr_delta_weight(effml_context *ctx, const effml_layer *layer,
                                               effml_tensor *dw);
/**
 * Set the training dropouts of a LoKr layer (PEFT 0.21 LoKrConfig, after
 * LyCORIS; EFFML_LAYER_MODE_TRAIN only, randomness from the context
 * generator, nothing drawn when a p is 0 or in inference):
 *  - module_dropout in [0, 1): each TRAIN forward skips the whole delta with
 *    probability module_dropout (y = x W^T + b; backward gives dx = dy W and
 *    no factor gradient);
 *  - rank_dropout in [0, 1): otherwise one mask m `[out]` over the rows of dW
 *    per forward, m_j = 0 with probability rank_dropout, else 1, divided by
 *    its mean (kept rows / out) when rank_dropout_scale is non-zero (PEFT's
 *    default is 0: no division); y = x W^T + b + (x dW^T) .* m.  When every
 *    row is dropped the delta is 0 (PEFT divides 0 by 0 there).
 * The layer defaults are 0, 0, 0.  Not reproducible against PEFT draw by
 * draw (torch's generator).  Not thread-safe on one layer.
 * @return EFFML_E_INVALID_ARG (not LoKr, a p outside [0, 1), NULL ctx).
 */
EFFML_API effml_status effml_adapter_lokr_set_dropout(effml_context *ctx, effml_layer *layer, double rank_dropout,
                                                      double module_dropout, int32_t rank_dropout_scale);
/** The dropouts set by effml_adapter_lokr_set_dropout(); NULL outputs skipped.
 *  @return EFFML_E_INVALID_ARG (not a LoKr layer). */
EFFML_API effml_status effml_adapter_lokr_dropout(const effml_layer *layer, double *rank_dropout,
                                                  double *module_dropout, int32_t *rank_dropout_scale);

/**
 * Fill `opt` with what a PEFT LoKr `dir`/adapter_config.json (PEFT 0.21
 * LoKrConfig, field table in docs/adapters.md) says for one module: rank and
 * alpha after rank_pattern/alpha_pattern, decompose_both, decompose_factor,
 * the PEFT scale convention (alpha / r).  Create the layer with these, then
 * effml_adapter_lokr_load_peft().
 * The training dropouts (rank_dropout, module_dropout, rank_dropout_scale)
 * are not options: effml_adapter_lokr_load_peft() sets them on the layers.
 * @return EFFML_E_UNSUPPORTED (a config value not honoured, named with its
 *         value),
 *         EFFML_E_FORMAT, EFFML_E_IO, EFFML_E_INVALID_ARG, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_lokr_peft_options(effml_context *ctx, const char *dir,
                                                       const char *module_name,
                                                       effml_adapter_lokr_options *opt);
/**
 * Load PEFT LoKr weights into LoKr layers: keys `module_names[i]` + "." +
 * each of the layer's factor names ("lokr_w1" or "lokr_w1_a"/"lokr_w1_b",
 * "lokr_w2" or "lokr_w2_a"/"lokr_w2_b"), e.g. "base_model.model.q_proj.lokr_w1".
 * Sets the scale alpha / r per module and the config's rank_dropout,
 * module_dropout and rank_dropout_scale (effml_adapter_lokr_set_dropout()).
 * Every tensor of the file must be
 * consumed.  All-or-nothing.
 * @return EFFML_E_NOT_FOUND (a factor the layer has is missing: made with
 *         other r/decompose_both), EFFML_E_SHAPE (names key and both shapes, or
 *         the config r disagrees), EFFML_E_UNSUPPORTED (a config value, or a
 *         tensor no module consumes, named), EFFML_E_IO, EFFML_E_FORMAT,
 *         EFFML_E_INVALID_ARG, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_lokr_load_peft(effml_context *ctx, const char *dir, int64_t n,
                                                    effml_layer *const *layers,
                                                    const char *const *module_names);

/* ------------------------------------------------------------------------ */
/* IA3                                                                       */
/* ------------------------------------------------------------------------ */

/**
 * Wrap a dense (or "conv1d") base layer in IA3 (kind "ia3"; Liu et al. 2022,
 * arXiv 2205.05638, section 3.3; PEFT IA3 Linear): a learned vector "ia3_l"
 * rescales the output, y = (x W^T + b) .* l with l `[out, 1]`, or for a
 * feed-forward module the input, y = (x .* l) W^T + b with l `[1, in]`.  l
 * starts at ones; the base is frozen.  Ownership of `base` as LoRA.  Extra
 * cost: one multiply per output (or input) element per row.
 * @return EFFML_E_INVALID_ARG (NULL, base without "weight"), EFFML_E_SHAPE, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_ia3_create(effml_context *ctx, effml_layer *base,
                                                int32_t feedforward, effml_layer **out);
/**
 * Merge as PEFT: output scaling multiplies W's rows and the bias by l; input
 * scaling multiplies W's columns.  Unmerge divides again (a zero entry of l
 * cannot be undone: EFFML_E_NUMERIC).  A merged layer refuses training.
 * @return EFFML_E_STATE (already merged / not merged), EFFML_E_INVALID_ARG, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_ia3_merge(effml_context *ctx, effml_layer *layer);
EFFML_API effml_status effml_adapter_ia3_unmerge(effml_context *ctx, effml_layer *layer);

/* ------------------------------------------------------------------------ */
/* LoHa                                                                      */
/* ------------------------------------------------------------------------ */

/**
 * Wrap a dense base layer in LoHa (kind "loha"; Hyeon-Woo et al. 2022,
 * FedPara, arXiv 2108.06098, eq. 2; PEFT LoHa Linear):
 * dW = (alpha/r) (W1a W1b) .* (W2a W2b), parameters "hada_w1_a", "hada_w2_a"
 * `[out, r]`, "hada_w1_b", "hada_w2_b" `[r, in]` (PEFT's names).  dW is never
 * built: it equals a rank-r^2 product of Khatri-Rao factors, r^2 (in + out)
 * MACs per row.  Init: W2b = 0 (dW = 0), the rest kaiming_uniform(a = sqrt 5).
 * Frozen base; ownership of `base` as LoRA.  A "conv1d" base is
 * EFFML_E_UNSUPPORTED.
 * @return EFFML_E_INVALID_ARG (rank outside [1, 4096], alpha not finite, NULL),
 *         EFFML_E_UNSUPPORTED, EFFML_E_SHAPE, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_loha_create(effml_context *ctx, effml_layer *base, int64_t rank,
                                                 double alpha, effml_layer **out);
/** Merge W += dW (PEFT); unmerge subtracts it.  A merged layer refuses training.
 *  @return EFFML_E_STATE, EFFML_E_INVALID_ARG, EFFML_E_NOMEM. */
EFFML_API effml_status effml_adapter_loha_merge(effml_context *ctx, effml_layer *layer);
EFFML_API effml_status effml_adapter_loha_unmerge(effml_context *ctx, effml_layer *layer);
/**
 * Set the training dropouts of a LoHa layer (PEFT 0.21 LoHaConfig, after
 * LyCORIS; EFFML_LAYER_MODE_TRAIN only, randomness from the context
 * generator, nothing drawn when a p is 0 or in inference):
 *  - module_dropout in [0, 1): each TRAIN forward skips the whole delta with
 *    probability module_dropout (backward: dx = dy W, no factor gradient);
 *  - rank_dropout in [0, 1): otherwise one mask m `[out]` over the rows of dW
 *    per forward, m_j = 0 with probability rank_dropout, else 1, always
 *    divided by its mean (kept rows / out), as PEFT does for LoHa;
 *    y = x W^T + b + (x dW^T) .* m.  Every row dropped gives a zero delta
 *    (PEFT divides 0 by 0 there).
 * Defaults 0, 0.  Not thread-safe on one layer.
 * @return EFFML_E_INVALID_ARG (not LoHa, a p outside [0, 1), NULL ctx).
 */
EFFML_API effml_status effml_adapter_loha_set_dropout(effml_context *ctx, effml_layer *layer, double rank_dropout,
                                                      double module_dropout);
/** The dropouts set by effml_adapter_loha_set_dropout(); NULL outputs skipped.
 *  @return EFFML_E_INVALID_ARG (not a LoHa layer). */
EFFML_API effml_status effml_adapter_loha_dropout(const effml_layer *layer, double *rank_dropout,
                                                  double *module_dropout);

/* ------------------------------------------------------------------------ */
/* VeRA                                                                      */
/* ------------------------------------------------------------------------ */

/**
 * Wrap a dense (or "conv1d") base layer in VeRA (kind "vera"; Kopiczko,
 * Blankevoort, Asano 2024, arXiv 2310.11454, eq. 1; PEFT VeRA Linear):
 * y = x W^T + b + lb .* ((ld .* (x A^T)) B^T) with frozen random projections
 * "vera_A" `[r, in]`, "vera_B" `[out, r]` (in PEFT, the leading slices of one
 * pair shared by the model) and trained "vera_lambda_d" `[r]` (starts at
 * d_initial, PEFT 0.1) and "vera_lambda_b" `[out]` (starts at 0: dW = 0).
 * The projections start kaiming_uniform(a = sqrt 5) from the context
 * generator (PEFT's torch-generated ones are not reproduced: load them).
 * Frozen base; ownership of `base` as LoRA.  vera_A and vera_B can never be
 * trained (effml_layer_set_trainable() refuses them by name with
 * EFFML_E_UNSUPPORTED): VeRA keeps them frozen by definition.
 * @return EFFML_E_INVALID_ARG (rank outside [1, 65536], NULL), EFFML_E_SHAPE, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_vera_create(effml_context *ctx, effml_layer *base, int64_t rank,
                                                 double d_initial, effml_layer **out);
/** Merge W += diag(lb) B diag(ld) A (PEFT); unmerge subtracts it.  A merged layer refuses training.
 *  @return EFFML_E_STATE, EFFML_E_INVALID_ARG, EFFML_E_NOMEM. */
EFFML_API effml_status effml_adapter_vera_merge(effml_context *ctx, effml_layer *layer);
EFFML_API effml_status effml_adapter_vera_unmerge(effml_context *ctx, effml_layer *layer);
/**
 * Set the training dropout p in [0, 1) of a VeRA layer (PEFT vera_dropout,
 * an nn.Dropout on the adapter's input): in EFFML_LAYER_MODE_TRAIN the input
 * of the A projection is x .* mask, mask entries 0 with probability p and
 * 1/(1-p) otherwise (masks from the context generator, as LoRA's
 * lora_dropout); the base layer sees x.  Inference never drops.  Default 0.
 * @return EFFML_E_INVALID_ARG (not VeRA, p outside [0, 1), NULL ctx).
 */
EFFML_API effml_status effml_adapter_vera_set_dropout(effml_context *ctx, effml_layer *layer, double p);
/** The training dropout p of a VeRA layer (0 if not VeRA). */
EFFML_API double effml_adapter_vera_dropout(const effml_layer *layer);

/* ------------------------------------------------------------------------ */
/* A PEFT adapter directory as one object (module-by-module merging)         */
/* ------------------------------------------------------------------------ */

/** An opened PEFT adapter directory (LoRA family, LoKr, LoHa, IA3, VeRA). */
typedef struct effml_adapter_peft effml_adapter_peft;

/**
 * Open `dir` (adapter_config.json + adapter_model.safetensors, PEFT 0.21
 * layout): the config goes through the field table of its type (LORA with
 * DoRA/lora_bias/patterns/fan_in_fan_out, or LOKR), the tensors are read and
 * grouped by module (the name before ".lora_A.weight", ".lokr_w1", ...).
 * Checked here, before any merge: "peft_type" is present (PEFT always writes
 * it; no type is guessed), every module has the tensors its type needs
 * (lora_A and lora_B, the magnitude vector for DoRA, lora_B.bias for lora_bias,
 * LoKr's w1/w2 or their factors, LoHa's four factors, VeRA's lambdas), their
 * rank against the module's r / rank_pattern (LoRA, LoHa, LoKr's factors; LoKr's
 * whole-or-factored layout against r and decompose_both, as PEFT 0.21's
 * LoKrLayer.update_layer decides it), and every adapter value is finite.
 * @param out  owned by the caller (effml_adapter_peft_free()); untouched on error
 * @return EFFML_E_UNSUPPORTED (a config value or a tensor this library does not
 *         read, named with its value), EFFML_E_FORMAT (also: "peft_type"
 *         missing), EFFML_E_NOT_FOUND (a module's required tensor, named),
 *         EFFML_E_SHAPE (a rank or LoKr layout the config disagrees with: the
 *         tensor and the field to fix, named), EFFML_E_INVALID_ARG (a NaN/Inf in an adapter tensor, naming the
 *         module, the tensor and the index), EFFML_E_IO, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_peft_open(effml_context *ctx, const char *dir, effml_adapter_peft **out);
/**
 * Every problem that makes effml_adapter_peft_open() refuse `dir`, not only the
 * first: each config key it cannot honour (named with its value), each tensor it
 * does not read, each module the config does not target (target_modules,
 * exclude_modules, layers_to_transform), each missing tensor and non-finite value,
 * each LoRA/LoHa/LoKr tensor whose rank disagrees with the module's r (naming r or the
 * rank_pattern entry that sets it), each LoKr w1/w2 stored whole where PEFT 0.21 would
 * factor it or factored where it would keep it whole (naming r, the rank_pattern
 * entry or decompose_both).
 * Reading stops early only when a file cannot be read or "peft_type" is missing or
 * unknown (that one problem is reported).  `report` receives one message per line
 * (NUL-terminated; cut at report_len, *num_problems still counts them all).
 * *num_problems == 0 means effml_adapter_peft_open() accepts `dir`.
 * @param report  may be NULL when report_len is 0
 * @return EFFML_OK when the check ran (whatever it found), EFFML_E_INVALID_ARG (NULL), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_peft_problems(effml_context *ctx, const char *dir, char *report,
                                                   size_t report_len, int64_t *num_problems);
/** IA3: 1 if module i scales its input (a feedforward_modules match, PEFT's rule), 0 if its output;
 *  0 for other types and an i out of range. */
EFFML_API int32_t effml_adapter_peft_module_scales_input(const effml_adapter_peft *a, int64_t i);
/** Free an adapter opened by effml_adapter_peft_open().  NULL is a no-op. */
EFFML_API void effml_adapter_peft_free(effml_adapter_peft *a);
/** "LORA", "LORA (DoRA)", "LOKR", "LOHA", "IA3" or "VERA" (borrowed; NULL for NULL). */
EFFML_API const char *effml_adapter_peft_type(const effml_adapter_peft *a);
/** Number of adapted modules. */
EFFML_API int64_t effml_adapter_peft_num_modules(const effml_adapter_peft *a);
/** Saved name of module i, e.g. "base_model.model.model.layers.0.self_attn.q_proj" (borrowed), or NULL. */
EFFML_API const char *effml_adapter_peft_module_name(const effml_adapter_peft *a, int64_t i);
/** 1 if the config says fan_in_fan_out (base weights stored [in, out], GPT-2 Conv1D). */
EFFML_API int32_t effml_adapter_peft_fan_in_fan_out(const effml_adapter_peft *a);
/** 1 if merging changes the base bias too (lora_bias). */
EFFML_API int32_t effml_adapter_peft_changes_bias(const effml_adapter_peft *a);
/**
 * The training dropouts effml_adapter_peft_attach() sets on the layers it builds, as
 * adapter_config.json gives them (PEFT 0.21's defaults, 0 and false, where a key is absent or
 * null; the field table already refused values outside [0, 1)):
 *  - `dropout`: lora_dropout (LoRA, DoRA: inverted dropout of the input of lora_A) or
 *    vera_dropout (VeRA: of the input of the A projection); 0 for other types;
 *  - `rank_dropout`, `module_dropout`: LoKr and LoHa (effml_adapter_lokr_set_dropout(),
 *    effml_adapter_loha_set_dropout()); 0 for other types;
 *  - `rank_dropout_scale`: 1 when the rank mask is divided by its mean -- LoKr's
 *    rank_dropout_scale, and always 1 for LoHa (PEFT's LoHa always divides); 0 otherwise.
 * All act only in EFFML_LAYER_MODE_TRAIN: merging (effml_adapter_peft_merge_tensors(),
 * effml_adapter_peft_merge_layer(), effml-adapter merge) and inference never drop.  IA3 has
 * no dropout (all 0).  Any output may be NULL.  Thread-safety: `a` is only read.
 * @return EFFML_E_INVALID_ARG (ctx or a NULL).
 */
EFFML_API effml_status effml_adapter_peft_dropouts(effml_context *ctx, const effml_adapter_peft *a, double *dropout,
                                                   double *rank_dropout, double *module_dropout,
                                                   int32_t *rank_dropout_scale);
/**
 * Rank and alpha of module i (after rank_pattern/alpha_pattern) and its number
 * of adapter parameters (elements of its tensors).  Any output may be NULL.
 * @return EFFML_E_RANGE, EFFML_E_INVALID_ARG.
 */
EFFML_API effml_status effml_adapter_peft_module_info(effml_context *ctx, const effml_adapter_peft *a,
                                                      int64_t i, int64_t *rank, double *alpha,
                                                      int64_t *num_params);
/**
 * Build module i's adapter layer around `base` (a dense layer, or a "conv1d"
 * one for fan_in_fan_out files): a "lora" layer (DoRA, lora_bias, dropout as
 * configured), a "lokr", "loha", "ia3" or "vera" layer (VeRA: the module's
 * slices of the shared vera_A/vera_B) (feed-forward as
 * feedforward_modules says, PEFT's matching), its weights copied from the file.  On
 * success `*out` owns `base`; on error the caller still owns it.
 * @return EFFML_E_NOT_FOUND / EFFML_E_SHAPE (names the key and the shapes),
 *         the errors of effml_adapter_lora_create() / effml_adapter_lokr_create(),
 *         EFFML_E_RANGE, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_peft_attach(effml_context *ctx, const effml_adapter_peft *a, int64_t i,
                                                 effml_layer *base, effml_layer **out);
/**
 * Merge a layer made by effml_adapter_peft_attach() into its base weights (and
 * bias, for lora_bias): effml_adapter_lora_merge() for LoRA/DoRA; W += dW for
 * LoKr (the LoKr layer then computes W + 2 dW: read the base and free it).
 * @return as effml_adapter_lora_merge(); EFFML_E_INVALID_ARG (another kind).
 */
EFFML_API effml_status effml_adapter_peft_merge_layer(effml_context *ctx, effml_layer *layer);
/**
 * Merge module i straight into a base model's tensors, in place: `weight` as the
 * checkpoint stores it (`[out, in]`, or `[in, out]` when the config says
 * fan_in_fan_out), contiguous f32; `bias` `[out]` f32 or NULL (changed by
 * lora_bias and by IA3 output scaling, as PEFT's merge does; otherwise left
 * alone).  Plain LoRA/rsLoRA is one sgemm W += s B A with beta = 1 straight into
 * `weight` (no delta matrix; OpenBLAS's threads); DoRA, LoKr, LoHa, IA3 and VeRA go
 * through their layer's merge (a base made from these tensors, no random
 * initialisation; memory: one more copy of the weight).  The result equals
 * effml_adapter_peft_attach() + effml_adapter_peft_merge_layer() on the same weights
 * up to f32 rounding of the sum.  Thread-safety: `a` is only read.
 * @return EFFML_E_INVALID_ARG (NULL, weight not contiguous 2-D f32), EFFML_E_SHAPE
 *         (bias not [out]; an adapter tensor that does not fit the weight, named),
 *         EFFML_E_UNSUPPORTED (lora_bias with bias NULL, naming the module),
 *         EFFML_E_RANGE (i), the errors of effml_adapter_peft_attach(), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_peft_merge_tensors(effml_context *ctx, const effml_adapter_peft *a, int64_t i,
                                                        effml_tensor *weight, effml_tensor *bias);
/**
 * Save LoKr, LoHa, IA3 or VeRA layers (all of one kind; "lora" layers go to
 * effml_adapter_lora_save_peft()) in PEFT 0.21's layout, which PeftModel.from_pretrained
 * and effml_adapter_peft_open() read back: `dir` (must exist)/adapter_model.safetensors,
 * F32, metadata {"format": "pt"}, keys `module_names[i]` + "." + PEFT's parameter name
 * ("lokr_w1" or "lokr_w1_a"/"lokr_w1_b", "lokr_w2" or its factors; "hada_w1_a", "hada_w1_b",
 * "hada_w2_a", "hada_w2_b"; "ia3_l"; "vera_lambda_b", "vera_lambda_d", plus the shared
 * "base_model.vera_A" `[r, max in]` / "base_model.vera_B" `[max out, r]`), and
 * `dir`/adapter_config.json with every key PEFT 0.21 writes for the config class (values:
 * r and alpha of layers[0], other modules' as rank_pattern/alpha_pattern; LoKr alpha =
 * its scale times r, decompose_both true when any w1 is factored, decompose_factor -1;
 * IA3 feedforward_modules = the input-scaling modules; fan_in_fan_out true for conv1d
 * bases; target_modules = each module's name without "base_model.model.", which PEFT
 * matches exactly; the layers' training dropouts -- rank_dropout, module_dropout,
 * rank_dropout_scale, vera_dropout --, init_weights true, peft_version "0.21.0").
 * @param module_names  e.g. "base_model.model.model.layers.0.self_attn.q_proj"
 * @return EFFML_E_INVALID_ARG (NULL, n < 1, layers of different kinds or base layouts,
 *         a kind PEFT's layout does not cover, VeRA layers whose projections are not
 *         leading slices of one pair or whose r differ, LoKr layers PEFT would build with
 *         other factor shapes from r / decompose_both / decompose_factor -1, modules
 *         the patterns cannot tell apart, layers with different dropouts), EFFML_E_STATE (a merged layer), EFFML_E_IO,
 *         EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_adapter_peft_save(effml_context *ctx, const char *dir, int64_t n,
                                               effml_layer *const *layers, const char *const *module_names,
                                               const char *base_model_name_or_path);

EFFML_END_DECLS

#endif /* EFFML_ADAPTER_H */
