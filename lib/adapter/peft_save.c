/* Saving LoKr, LoHa, IA3 and VeRA layers in PEFT 0.21's layout: adapter_model.safetensors with
 * PEFT's tensor names (the layers' parameter names are PEFT's saved suffixes) and an
 * adapter_config.json holding every key PEFT 0.21 writes for that config class, so that
 * PeftModel.from_pretrained (and effml_adapter_peft_open) read the directory back.
 * LoRA goes to effml_adapter_lora_save_peft(). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_internal.h"

#define FN "effml_adapter_peft_save"

/* 1 if the first n entries of rows x cols row-major `small` (leading ld_s) equal `big`'s (ld_b). */
static int leading_equal(const float *small, int64_t ld_s, const float *big, int64_t ld_b, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    if (memcmp(small + i * ld_s, big + i * ld_b, (size_t)cols * sizeof(float)) != 0) return 0;
  return 1;
}

effml_status effml_adapter_peft_save(effml_context *ctx, const char *dir, int64_t n, effml_layer *const *layers,
                                     const char *const *module_names, const char *base_model_name_or_path) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, dir);
  EFFML__CHECK_NULL(ctx, layers);
  EFFML__CHECK_NULL(ctx, module_names);
  if (n < 1) return effml__err(ctx, EFFML_E_INVALID_ARG, FN ": n=%lld must be >= 1", (long long)n);
  for (int64_t i = 0; i < n; ++i)
    if (layers[i] == NULL || module_names[i] == NULL || module_names[i][0] == '\0')
      return effml__err(ctx, EFFML_E_INVALID_ARG, FN ": layers[%lld] or module_names[%lld] is NULL or empty",
                        (long long)i, (long long)i);
  if (effml__is_lora(layers[0]))
    return effml_adapter_lora_save_peft(ctx, dir, n, layers, module_names, base_model_name_or_path);
  const char *kind = effml_layer_kind(layers[0]);
  int type = effml__is_lokr(layers[0])   ? EFFML__PEFT_LOKR
             : effml__is_loha(layers[0]) ? EFFML__PEFT_LOHA
             : effml__is_ia3(layers[0])  ? EFFML__PEFT_IA3
             : effml__is_vera(layers[0]) ? EFFML__PEFT_VERA
                                         : -1;
  if (type < 0)
    return effml__err(ctx, EFFML_E_INVALID_ARG, FN ": layers[0] is a \"%s\" layer; PEFT's layout is written for lora, "
                      "lokr, loha, ia3 and vera layers", kind);
  effml__adapter_info in0;
  effml__adapter_get_info(layers[0], &in0);
  for (int64_t i = 0; i < n; ++i) {
    if (strcmp(effml_layer_kind(layers[i]), kind) != 0)
      return effml__err(ctx, EFFML_E_INVALID_ARG, FN ": layers[%lld] is a \"%s\" layer, layers[0] a \"%s\" one (one "
                        "adapter_config.json holds one peft_type)", (long long)i, effml_layer_kind(layers[i]), kind);
    effml__adapter_info in;
    effml__adapter_get_info(layers[i], &in);
    if (in.merged)
      return effml__err(ctx, EFFML_E_STATE, FN ": layers[%lld] (module \"%s\") is merged; unmerge it first", (long long)i,
                        module_names[i]);
    if (in.transposed != in0.transposed)
      return effml__err(ctx, EFFML_E_INVALID_ARG, FN ": layers[%lld] has a %s base, layers[0] a %s one (one "
                        "fan_in_fan_out per adapter_config.json)", (long long)i, in.transposed ? "conv1d" : "dense",
                        in0.transposed ? "conv1d" : "dense");
    if (type == EFFML__PEFT_VERA && in.r != in0.r)
      return effml__err(ctx, EFFML_E_INVALID_ARG, FN ": VeRA layers[%lld] has r=%lld, layers[0] r=%lld (PEFT's VeRA has "
                        "one r and one projection pair)", (long long)i, (long long)in.r, (long long)in0.r);
    if (in.rank_dropout != in0.rank_dropout || in.module_dropout != in0.module_dropout ||
        in.rank_dropout_scale != in0.rank_dropout_scale || in.dropout != in0.dropout)
      return effml__err(ctx, EFFML_E_INVALID_ARG, FN ": layers[%lld] has other training dropouts than layers[0] "
                        "(rank %g/%g, module %g/%g, rank_dropout_scale %d/%d, vera_dropout %g/%g; one "
                        "adapter_config.json holds one of each)", (long long)i, in.rank_dropout, in0.rank_dropout,
                        in.module_dropout, in0.module_dropout, (int)in.rank_dropout_scale, (int)in0.rank_dropout_scale,
                        in.dropout, in0.dropout);
  }
  /* LoKr: PEFT decides each factor's form from r, decompose_both and the factorization of the
   * widths; the layers must be what it would build again */
  int decompose_both = 0;
  for (int64_t i = 0; type == EFFML__PEFT_LOKR && i < n; ++i) {
    effml__adapter_info in;
    effml__adapter_get_info(layers[i], &in);
    decompose_both |= in.w1_factored;
  }
  for (int64_t i = 0; type == EFFML__PEFT_LOKR && i < n; ++i) {
    effml__adapter_info in;
    effml__adapter_get_info(layers[i], &in);
    int64_t ol = 0, ok = 0, im = 0, inn = 0;
    effml_adapter_lokr_factorization(effml_layer_out_features(layers[i]), -1, &ol, &ok);
    effml_adapter_lokr_factorization(effml_layer_in_features(layers[i]), -1, &im, &inn);
    int64_t m1 = ol > im ? ol : im;
    int w1_factored = decompose_both && (double)in.r < (double)m1 / 2.0;
    if (ol != in.out_l || ok != in.out_k || im != in.in_m || inn != in.in_n || w1_factored != in.w1_factored)
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        FN ": LoKr module \"%s\" (w1 [%lld, %lld]%s, w2 [%lld, %lld]) is not what PEFT builds from r=%lld, "
                        "decompose_both=%s, decompose_factor=-1 (w1 [%lld, %lld]%s, w2 [%lld, %lld]); save layers made "
                        "with decompose_factor -1 and one decompose_both",
                        module_names[i], (long long)in.out_l, (long long)in.in_m, in.w1_factored ? " factored" : "",
                        (long long)in.out_k, (long long)in.in_n, (long long)in.r, decompose_both ? "true" : "false",
                        (long long)ol, (long long)im, w1_factored ? " factored" : "", (long long)ok, (long long)inn);
  }
  /* VeRA: every module's vera_A / vera_B must be leading slices of one pair; the widest ones are it */
  int64_t ia = 0, ib = 0;
  for (int64_t i = 0; type == EFFML__PEFT_VERA && i < n; ++i) {
    if (effml_layer_in_features(layers[i]) > effml_layer_in_features(layers[ia])) ia = i;
    if (effml_layer_out_features(layers[i]) > effml_layer_out_features(layers[ib])) ib = i;
  }
  for (int64_t i = 0; type == EFFML__PEFT_VERA && i < n; ++i) {
    const effml_tensor *A = effml_layer_param(layers[i], effml__peft_param_index(layers[i], "vera_A")),
                       *B = effml_layer_param(layers[i], effml__peft_param_index(layers[i], "vera_B")),
                       *FA = effml_layer_param(layers[ia], effml__peft_param_index(layers[ia], "vera_A")),
                       *FB = effml_layer_param(layers[ib], effml__peft_param_index(layers[ib], "vera_B"));
    int64_t r = in0.r, ni = effml_layer_in_features(layers[i]), no = effml_layer_out_features(layers[i]);
    if (!leading_equal(effml_tensor_data_const(A), ni, effml_tensor_data_const(FA),
                       effml_layer_in_features(layers[ia]), r, ni) ||
        !leading_equal(effml_tensor_data_const(B), r, effml_tensor_data_const(FB), r, no, r))
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        FN ": VeRA module \"%s\": its vera_A/vera_B are not the leading slices of the widest modules' "
                        "(\"%s\", \"%s\"); PEFT's VeRA shares one projection pair across the model",
                        module_names[i], module_names[ia], module_names[ib]);
  }
  /* the tensors */
  static const char *const LOKR_P[] = {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"};
  static const char *const LOHA_P[] = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"};
  static const char *const IA3_P[] = {"ia3_l"};
  static const char *const VERA_P[] = {"vera_lambda_b", "vera_lambda_d"};
  const char *const *pn = type == EFFML__PEFT_LOKR ? LOKR_P : type == EFFML__PEFT_LOHA ? LOHA_P
                          : type == EFFML__PEFT_IA3 ? IA3_P : VERA_P;
  int np = type == EFFML__PEFT_LOKR ? 6 : type == EFFML__PEFT_LOHA ? 4 : type == EFFML__PEFT_IA3 ? 1 : 2;
  int64_t cap = n * np + 2, k = 0;
  char **names = (char **)effml__calloc(ctx, (size_t)cap, sizeof *names);
  const effml_tensor **ts = (const effml_tensor **)effml__calloc(ctx, (size_t)cap, sizeof *ts);
  char *st_path = effml__peft_join3(ctx, dir, "/", "adapter_model.safetensors");
  char *cfg_path = effml__peft_join3(ctx, dir, "/", "adapter_config.json");
  cJSON *c = cJSON_CreateObject(), *tm = cJSON_CreateArray(), *ff = cJSON_CreateArray(), *rp = cJSON_CreateObject(),
        *ap = cJSON_CreateObject();
  effml_status s = EFFML_OK;
  if (!names || !ts || !st_path || !cfg_path || !c || !tm || !ff || !rp || !ap)
    s = effml__err(ctx, EFFML_E_NOMEM, FN ": out of memory");
  for (int64_t i = 0; s == EFFML_OK && i < n; ++i) {
    for (int j = 0; s == EFFML_OK && j < np; ++j) {
      int32_t pi = effml__peft_param_index(layers[i], pn[j]);
      if (pi < 0) continue; /* LoKr: the full or the factored form */
      names[k] = effml__peft_join3(ctx, module_names[i], ".", pn[j]);
      ts[k] = effml_layer_param(layers[i], pi);
      if (names[k++] == NULL) s = effml__err(ctx, EFFML_E_NOMEM, FN ": out of memory");
    }
    effml__adapter_info in;
    effml__adapter_get_info(layers[i], &in);
    /* per-module r / alpha as rank_pattern / alpha_pattern (LoKr, LoHa) */
    if (s == EFFML_OK && (type == EFFML__PEFT_LOKR || type == EFFML__PEFT_LOHA) && (in.r != in0.r || in.alpha != in0.alpha)) {
      char *key = effml__peft_pattern_key(ctx, module_names[i]);
      if (key == NULL) s = effml__err(ctx, EFFML_E_NOMEM, FN ": out of memory");
      if (key && in.r != in0.r) cJSON_AddNumberToObject(rp, key, (double)in.r);
      if (key && in.alpha != in0.alpha) cJSON_AddNumberToObject(ap, key, in.alpha);
      effml__free(ctx, key);
    }
    /* target_modules: each module's full name (without "base_model.model."): PEFT matches a list
     * entry equal to the name exactly, so exactly these modules get an adapter */
    const char *key = effml__peft_module_key(module_names[i]);
    if (s == EFFML_OK) cJSON_AddItemToArray(tm, cJSON_CreateString(key));
    if (s == EFFML_OK && type == EFFML__PEFT_IA3 && in.feedforward) cJSON_AddItemToArray(ff, cJSON_CreateString(key));
  }
  if (s == EFFML_OK && type == EFFML__PEFT_VERA) {
    names[k] = effml__peft_join3(ctx, "base_model", ".", "vera_A");
    ts[k] = effml_layer_param(layers[ia], effml__peft_param_index(layers[ia], "vera_A"));
    if (names[k++] == NULL) s = effml__err(ctx, EFFML_E_NOMEM, FN ": out of memory");
    names[k] = effml__peft_join3(ctx, "base_model", ".", "vera_B");
    ts[k] = effml_layer_param(layers[ib], effml__peft_param_index(layers[ib], "vera_B"));
    if (names[k++] == NULL) s = effml__err(ctx, EFFML_E_NOMEM, FN ": out of memory");
  }
  /* the patterns must give every module its own r and alpha back */
  for (int64_t i = 0; s == EFFML_OK && (type == EFFML__PEFT_LOKR || type == EFFML__PEFT_LOHA) && i < n; ++i) {
    effml__peft_cfg probe;
    memset(&probe, 0, sizeof probe);
    probe.r = in0.r;
    probe.alpha = in0.alpha;
    probe.rank_pattern = rp;
    probe.alpha_pattern = ap;
    int64_t r = 0;
    double alpha = 0;
    effml__peft_cfg_module(&probe, module_names[i], &r, &alpha);
    effml__adapter_info in;
    effml__adapter_get_info(layers[i], &in);
    if (r != in.r || alpha != in.alpha)
      s = effml__err(ctx, EFFML_E_INVALID_ARG,
                     FN ": module \"%s\" (r=%lld, alpha=%g) cannot be told apart by PEFT's rank_pattern/alpha_pattern "
                     "matching from another module whose name ends in it",
                     module_names[i], (long long)in.r, in.alpha);
  }
  if (s == EFFML_OK) {
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    s = effml_safetensors_save(ctx, st_path, k, (const char *const *)names, ts, 1, mk, mv);
  }
  if (s == EFFML_OK) { /* every key PEFT 0.21 writes for the config class, in its (sorted) order */
    const char *bm = base_model_name_or_path;
    if (type == EFFML__PEFT_LOKR || type == EFFML__PEFT_LOHA) {
      cJSON_AddNumberToObject(c, "alpha", in0.alpha);
      cJSON_AddItemToObject(c, "alpha_pattern", ap);
      ap = NULL;
    }
    cJSON_AddNullToObject(c, "auto_mapping");
    if (bm) cJSON_AddStringToObject(c, "base_model_name_or_path", bm);
    else cJSON_AddNullToObject(c, "base_model_name_or_path");
    if (type == EFFML__PEFT_VERA) {
      cJSON_AddStringToObject(c, "bias", "none");
      cJSON_AddNumberToObject(c, "d_initial", 0.1);
    }
    if (type == EFFML__PEFT_LOKR) {
      cJSON_AddBoolToObject(c, "decompose_both", decompose_both);
      cJSON_AddNumberToObject(c, "decompose_factor", -1);
    }
    if (type != EFFML__PEFT_VERA) cJSON_AddNullToObject(c, "exclude_modules");
    if (type == EFFML__PEFT_IA3 || type == EFFML__PEFT_VERA) cJSON_AddBoolToObject(c, "fan_in_fan_out", in0.transposed);
    if (type == EFFML__PEFT_IA3) {
      cJSON_AddItemToObject(c, "feedforward_modules", ff);
      ff = NULL;
    }
    cJSON_AddTrueToObject(c, "inference_mode");
    if (type == EFFML__PEFT_IA3) cJSON_AddTrueToObject(c, "init_ia3_weights");
    else cJSON_AddTrueToObject(c, "init_weights");
    if (type != EFFML__PEFT_IA3) {
      cJSON_AddNullToObject(c, "layers_pattern");
      cJSON_AddNullToObject(c, "layers_to_transform");
    }
    if (type == EFFML__PEFT_LOKR || type == EFFML__PEFT_LOHA) cJSON_AddNumberToObject(c, "module_dropout", in0.module_dropout);
    cJSON_AddNullToObject(c, "modules_to_save");
    cJSON_AddStringToObject(c, "peft_type", type == EFFML__PEFT_LOKR   ? "LOKR"
                                            : type == EFFML__PEFT_LOHA ? "LOHA"
                                            : type == EFFML__PEFT_IA3  ? "IA3"
                                                                       : "VERA");
    cJSON_AddStringToObject(c, "peft_version", "0.21.0"); /* the layout this file follows */
    if (type == EFFML__PEFT_VERA) cJSON_AddNumberToObject(c, "projection_prng_key", 0);
    if (type != EFFML__PEFT_IA3) cJSON_AddNumberToObject(c, "r", (double)in0.r);
    if (type == EFFML__PEFT_LOKR || type == EFFML__PEFT_LOHA) cJSON_AddNumberToObject(c, "rank_dropout", in0.rank_dropout);
    if (type == EFFML__PEFT_LOKR) cJSON_AddBoolToObject(c, "rank_dropout_scale", in0.rank_dropout_scale);
    if (type == EFFML__PEFT_LOKR || type == EFFML__PEFT_LOHA) {
      cJSON_AddItemToObject(c, "rank_pattern", rp);
      rp = NULL;
    }
    cJSON_AddNullToObject(c, "revision");
    if (type == EFFML__PEFT_VERA) cJSON_AddTrueToObject(c, "save_projection");
    cJSON_AddItemToObject(c, "target_modules", tm);
    tm = NULL;
    cJSON_AddNullToObject(c, "task_type");
    if (type == EFFML__PEFT_LOKR || type == EFFML__PEFT_LOHA) cJSON_AddFalseToObject(c, "use_effective_conv2d");
    if (type == EFFML__PEFT_VERA) cJSON_AddNumberToObject(c, "vera_dropout", in0.dropout);
    char *text = cJSON_Print(c);
    s = text ? effml__peft_write_text(ctx, cfg_path, text) : effml__err(ctx, EFFML_E_NOMEM, FN ": out of memory");
    free(text);
  }
  cJSON_Delete(tm);
  cJSON_Delete(ff);
  cJSON_Delete(rp);
  cJSON_Delete(ap);
  cJSON_Delete(c);
  for (int64_t i = 0; names && i < cap; ++i) effml__free(ctx, names[i]);
  effml__free(ctx, names);
  effml__free(ctx, ts);
  effml__free(ctx, st_path);
  effml__free(ctx, cfg_path);
  return s;
}

void effml__adapter_get_info(const effml_layer *layer, effml__adapter_info *in) {
  memset(in, 0, sizeof *in);
  if (effml__is_lokr(layer)) effml__lokr_info(layer, in);
  else if (effml__is_loha(layer)) effml__loha_info(layer, in);
  else if (effml__is_vera(layer)) effml__vera_info(layer, in);
  else if (effml__is_ia3(layer)) effml__ia3_info(layer, in);
}
