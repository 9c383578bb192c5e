/* Files of the Python tools (PEFT `save_pretrained`, AdapterHub `save_adapter`):
 *  - PEFT LoRA: <dir>/adapter_config.json (r, lora_alpha, use_rslora) and
 *    <dir>/adapter_model.safetensors with "<module>.lora_A.weight" [r, in] and
 *    "<module>.lora_B.weight" [out, r] (adapter name removed, as PEFT saves).
 *  - AdapterHub Compacter: "<prefix>.adapter_down.0.W_left" ... and the shared
 *    rule once under e.g. "bert.shared_parameters.<name>.phm_rule".
 * Loading is all-or-nothing: every key and shape is checked before any
 * parameter is written. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_internal.h"

/* ---- a load plan: (file tensor -> parameter) pairs checked before copying ---- */

typedef struct plan_item {
  const effml_tensor *src;
  effml_tensor *dst;
} plan_item;

static int is_float_dtype(int32_t dt) {
  return dt == EFFML_F32 || dt == EFFML_F64 || dt == EFFML_F16 || dt == EFFML_BF16;
}

/* Find `key` in st and check it has dst's shape; message names key and both shapes. */
static effml_status plan_add(effml_context *ctx, const effml_safetensors *st, const char *key,
                             effml_tensor *dst, plan_item *items, int64_t *count) {
  const effml_tensor *src = NULL;
  effml_status s = effml_safetensors_get(ctx, st, key, &src);
  if (s != EFFML_OK) return effml__err(ctx, EFFML_E_NOT_FOUND, "adapter file: missing key \"%s\"", key);
  int same = src->ndim == dst->ndim;
  for (int32_t d = 0; same && d < dst->ndim; ++d) same = src->shape[d] == dst->shape[d];
  if (!same) {
    char a[96], b[96];
    return effml__err(ctx, EFFML_E_SHAPE, "adapter file: \"%s\" has shape %s, the layer expects %s", key,
                      effml__shape_str(src, a, sizeof a), effml__shape_str(dst, b, sizeof b));
  }
  if (!is_float_dtype(src->dtype))
    return effml__err(ctx, EFFML_E_DTYPE, "adapter file: \"%s\" has dtype %s, expected a float type", key,
                      effml_tensor_dtype_name(src->dtype));
  items[*count].src = src;
  items[*count].dst = dst;
  (*count)++;
  return EFFML_OK;
}

static effml_status plan_apply(effml_context *ctx, const plan_item *items, int64_t count) {
  for (int64_t i = 0; i < count; ++i) EFFML__TRY(effml_tensor_copy(ctx, items[i].dst, items[i].src));
  return EFFML_OK;
}

char *effml__peft_join3(effml_context *ctx, const char *a, const char *b, const char *c) {
  size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
  char *s = (char *)effml__malloc(ctx, la + lb + lc + 1);
  if (s == NULL) return NULL;
  memcpy(s, a, la);
  memcpy(s + la, b, lb);
  memcpy(s + la + lb, c, lc + 1);
  return s;
}

int32_t effml__peft_param_index(const effml_layer *l, const char *name) {
  for (int32_t i = 0; i < l->n_params; ++i)
    if (strcmp(l->params[i].name, name) == 0) return i;
  return -1;
}

/* ---- PEFT LoRA ---- */

effml_status effml_adapter_lora_load_peft(effml_context *ctx, const char *dir, int64_t n,
                                  effml_layer *const *layers, const char *const *module_names) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, dir);
  EFFML__CHECK_NULL(ctx, layers);
  EFFML__CHECK_NULL(ctx, module_names);
  if (n < 1) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_load_peft: n=%lld must be >= 1", (long long)n);
  for (int64_t i = 0; i < n; ++i) {
    if (!effml__is_lora(layers[i]) || module_names[i] == NULL)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_load_peft: layers[%lld] is not a lora layer or has no module name",
                        (long long)i);
    if (effml_adapter_lora_is_merged(layers[i]))
      return effml__err(ctx, EFFML_E_STATE, "effml_adapter_lora_load_peft: layers[%lld] is merged; unmerge it first", (long long)i);
  }
  char *st_path = effml__peft_join3(ctx, dir, "/", "adapter_model.safetensors");
  plan_item *items = (plan_item *)effml__calloc(ctx, (size_t)(4 * n), sizeof *items);
  double *alphas = (double *)effml__calloc(ctx, (size_t)n, sizeof *alphas);
  effml__peft_cfg *cfg = NULL;
  effml_safetensors *st = NULL;
  effml_status s = EFFML_OK;
  if (st_path == NULL || items == NULL || alphas == NULL)
    s = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lora_load_peft: out of memory");
  if (s == EFFML_OK) s = effml__peft_cfg_open(ctx, dir, EFFML__PEFT_CAP_DORA | EFFML__PEFT_CAP_LORA_BIAS, &cfg);
  if (s == EFFML_OK) s = effml_safetensors_load(ctx, st_path, EFFML_IO_SAFETENSORS_COPY, &st);
  int64_t count = 0;
  for (int64_t i = 0; s == EFFML_OK && i < n; ++i) {
    effml_layer *l = layers[i];
    int64_t r = 0;
    effml__peft_cfg_module(cfg, module_names[i], &r, &alphas[i]);
    if (r != effml__lora_rank(l)) {
      s = effml__err(ctx, EFFML_E_SHAPE, "adapter_config.json r=%lld (after rank_pattern) for \"%s\" but the layer has rank=%lld",
                     (long long)r, module_names[i], (long long)effml__lora_rank(l));
      break;
    }
    const effml__lora *lp = effml__lora_impl(l);
    if ((lp->i_m >= 0) != (cfg->use_dora != 0) || (lp->i_bb >= 0) != (cfg->lora_bias != 0)) {
      int dora = (lp->i_m >= 0) != (cfg->use_dora != 0);
      s = effml__err(ctx, EFFML_E_INVALID_ARG,
                     "adapter_config.json %s=%s but the layer for \"%s\" was made with %s=%d "
                     "(make it with effml_adapter_lora_peft_options())",
                     dora ? "use_dora" : "lora_bias", (dora ? cfg->use_dora : cfg->lora_bias) ? "true" : "false",
                     module_names[i], dora ? "use_dora" : "lora_bias", dora ? lp->i_m >= 0 : lp->i_bb >= 0);
      break;
    }
    static const char *const suffix[4] = {"lora_A.weight", "lora_B.weight", "lora_B.bias", "lora_magnitude_vector"};
    for (int k = 0; s == EFFML_OK && k < 4; ++k) {
      if ((k == 2 && lp->i_bb < 0) || (k == 3 && lp->i_m < 0)) continue;
      char *key = effml__peft_join3(ctx, module_names[i], ".", suffix[k]);
      effml_tensor *dst = effml_layer_param(l, effml__peft_param_index(l, suffix[k]));
      s = key ? plan_add(ctx, st, key, dst, items, &count)
              : effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lora_load_peft: out of memory");
      effml__free(ctx, key);
    }
  }
  /* every tensor of the file must be consumed: a stray one means a feature we do not read */
  for (int64_t t = 0; s == EFFML_OK && t < effml_safetensors_count(st); ++t) {
    const char *name = effml_safetensors_name(st, t);
    int used = 0;
    for (int64_t k = 0; !used && k < count; ++k) {
      const effml_tensor *src = NULL;
      used = effml_safetensors_get(ctx, st, name, &src) == EFFML_OK && src == items[k].src;
    }
    if (!used)
      s = effml__err(ctx, EFFML_E_UNSUPPORTED,
                     "\"%s\": tensor \"%s\" is not consumed by any of the %lld given modules (a module not passed, "
                     "or a PEFT feature this loader does not read)", st_path, name, (long long)n);
  }
  if (s == EFFML_OK) s = plan_apply(ctx, items, count);
  if (s == EFFML_OK)
    for (int64_t i = 0; i < n; ++i) {
      effml__lora_set_alpha(layers[i], alphas[i], cfg->use_rslora);
      effml__lora_impl(layers[i])->dropout = cfg->dropout;
    }
  effml_safetensors_free(st);
  effml__peft_cfg_close(cfg);
  effml__free(ctx, alphas);
  effml__free(ctx, items);
  effml__free(ctx, st_path);
  return s;
}

effml_status effml_adapter_lora_peft_options(effml_context *ctx, const char *dir, const char *module_name,
                                     effml_adapter_lora_options *opt) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, dir);
  EFFML__CHECK_NULL(ctx, module_name);
  EFFML__CHECK_NULL(ctx, opt);
  effml__peft_cfg *cfg = NULL;
  EFFML__TRY(effml__peft_cfg_open(ctx, dir, EFFML__PEFT_CAP_DORA | EFFML__PEFT_CAP_LORA_BIAS, &cfg));
  effml_adapter_lora_options o;
  effml_adapter_lora_options_init(&o);
  effml__peft_cfg_module(cfg, module_name, &o.rank, &o.alpha);
  o.use_rslora = cfg->use_rslora;
  o.use_dora = cfg->use_dora;
  o.lora_bias = cfg->lora_bias;
  o.dropout = cfg->dropout;
  effml__peft_cfg_close(cfg);
  *opt = o;
  return EFFML_OK;
}

effml_status effml__peft_write_text(effml_context *ctx, const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (f == NULL) return effml__err(ctx, EFFML_E_IO, "cannot create \"%s\"", path);
  size_t len = strlen(text);
  int ok = fwrite(text, 1, len, f) == len;
  ok = (fclose(f) == 0) && ok;
  return ok ? EFFML_OK : effml__err(ctx, EFFML_E_IO, "cannot write \"%s\"", path);
}

/* "model.layers.0.q_proj" -> "model\.layers\.0\.q_proj": a rank/alpha_pattern key matching that name */
char *effml__peft_pattern_key(effml_context *ctx, const char *module_name) {
  const char *k = effml__peft_module_key(module_name);
  size_t n = strlen(k), extra = 0;
  for (size_t i = 0; i < n; ++i) extra += strchr(".[]()*+?{}|^$\\", k[i]) != NULL;
  char *s = (char *)effml__malloc(ctx, n + extra + 1);
  if (s == NULL) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n; ++i) {
    if (strchr(".[]()*+?{}|^$\\", k[i]) != NULL) s[o++] = '\\';
    s[o++] = k[i];
  }
  s[o] = '\0';
  return s;
}

effml_status effml_adapter_lora_save_peft(effml_context *ctx, const char *dir, int64_t n,
                                  effml_layer *const *layers, const char *const *module_names,
                                  const char *base_model_name_or_path) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, dir);
  EFFML__CHECK_NULL(ctx, layers);
  EFFML__CHECK_NULL(ctx, module_names);
  if (n < 1) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_save_peft: n=%lld must be >= 1", (long long)n);
  for (int64_t i = 0; i < n; ++i) {
    if (!effml__is_lora(layers[i]) || module_names[i] == NULL || module_names[i][0] == '\0')
      return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lora_save_peft: layers[%lld] is not a lora layer or has no module name",
                        (long long)i);
    const effml__lora *p = effml__lora_impl(layers[i]), *p0 = effml__lora_impl(layers[0]);
    if (p->merged)
      return effml__err(ctx, EFFML_E_STATE, "effml_adapter_lora_save_peft: layers[%lld] is merged; unmerge it first", (long long)i);
    if (p->use_rslora != p0->use_rslora || p->use_dora != p0->use_dora || (p->i_bb >= 0) != (p0->i_bb >= 0) ||
        p->dropout != p0->dropout || p->base.transposed != p0->base.transposed)
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "effml_adapter_lora_save_peft: layers[%lld] differs from layers[0] in use_rslora/use_dora/lora_bias/"
                        "dropout/base layout (one adapter_config.json holds one of each)", (long long)i);
  }
  const effml__lora *p0 = effml__lora_impl(layers[0]);
  char **names = (char **)effml__calloc(ctx, (size_t)(4 * n), sizeof *names);
  const effml_tensor **ts = (const effml_tensor **)effml__calloc(ctx, (size_t)(4 * n), sizeof *ts);
  char *st_path = effml__peft_join3(ctx, dir, "/", "adapter_model.safetensors");
  char *cfg_path = effml__peft_join3(ctx, dir, "/", "adapter_config.json");
  cJSON *c = cJSON_CreateObject(), *tm = cJSON_CreateArray(), *rp = cJSON_CreateObject(), *ap = cJSON_CreateObject();
  effml_status s = EFFML_OK;
  if (names == NULL || ts == NULL || st_path == NULL || cfg_path == NULL || !c || !tm || !rp || !ap)
    s = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lora_save_peft: out of memory");
  int64_t k = 0;
  static const char *const suffix[4] = {"lora_A.weight", "lora_B.weight", "lora_B.bias", "lora_magnitude_vector"};
  for (int64_t i = 0; s == EFFML_OK && i < n; ++i) {
    const effml__lora *p = effml__lora_impl(layers[i]);
    for (int j = 0; s == EFFML_OK && j < 4; ++j) {
      if ((j == 2 && p->i_bb < 0) || (j == 3 && p->i_m < 0)) continue;
      names[k] = effml__peft_join3(ctx, module_names[i], ".", suffix[j]);
      ts[k] = effml_layer_param(layers[i], effml__peft_param_index(layers[i], suffix[j]));
      if (names[k++] == NULL) s = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lora_save_peft: out of memory");
    }
    /* per-module r / alpha as PEFT's rank_pattern / alpha_pattern (keys: escaped module paths) */
    if (s == EFFML_OK && (p->r != p0->r || p->alpha != p0->alpha)) {
      char *key = effml__peft_pattern_key(ctx, module_names[i]);
      if (key == NULL) s = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lora_save_peft: out of memory");
      if (key && p->r != p0->r) cJSON_AddNumberToObject(rp, key, (double)p->r);
      if (key && p->alpha != p0->alpha) cJSON_AddNumberToObject(ap, key, p->alpha);
      effml__free(ctx, key);
    }
    const char *last = strrchr(module_names[i], '.');
    last = last ? last + 1 : module_names[i];
    int dup = 0;
    for (int j = 0; s == EFFML_OK && j < cJSON_GetArraySize(tm); ++j)
      dup |= strcmp(cJSON_GetArrayItem(tm, j)->valuestring, last) == 0;
    if (s == EFFML_OK && !dup) cJSON_AddItemToArray(tm, cJSON_CreateString(last));
  }
  /* the patterns must give every module its own r and alpha back (a key may match a longer name) */
  for (int64_t i = 0; s == EFFML_OK && i < n; ++i) {
    effml__peft_cfg probe;
    memset(&probe, 0, sizeof probe);
    probe.r = p0->r;
    probe.alpha = p0->alpha;
    probe.rank_pattern = rp;
    probe.alpha_pattern = ap;
    int64_t r = 0;
    double alpha = 0;
    effml__peft_cfg_module(&probe, module_names[i], &r, &alpha);
    const effml__lora *p = effml__lora_impl(layers[i]);
    if (r != p->r || alpha != p->alpha)
      s = effml__err(ctx, EFFML_E_INVALID_ARG,
                     "effml_adapter_lora_save_peft: module \"%s\" (r=%lld, alpha=%g) cannot be told apart by PEFT's "
                     "rank_pattern/alpha_pattern matching from another module whose name ends in it",
                     module_names[i], (long long)p->r, p->alpha);
  }
  if (s == EFFML_OK) {
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    s = effml_safetensors_save(ctx, st_path, k, (const char *const *)names, ts, 1, mk, mv);
  }
  if (s == EFFML_OK) {
    /* adapter_config.json with LoraConfig's fields; keys newer than PEFT 0.9 only when set,
     * so that older PEFT versions read what they can honour */
    cJSON_AddItemToObject(c, "alpha_pattern", ap);
    ap = NULL;
    cJSON_AddStringToObject(c, "base_model_name_or_path", base_model_name_or_path ? base_model_name_or_path : "");
    cJSON_AddStringToObject(c, "bias", "none");
    cJSON_AddBoolToObject(c, "fan_in_fan_out", p0->base.transposed);
    cJSON_AddTrueToObject(c, "inference_mode");
    cJSON_AddTrueToObject(c, "init_lora_weights");
    cJSON_AddNumberToObject(c, "lora_alpha", p0->alpha);
    if (p0->i_bb >= 0) cJSON_AddTrueToObject(c, "lora_bias");
    cJSON_AddNumberToObject(c, "lora_dropout", p0->dropout);
    cJSON_AddNullToObject(c, "modules_to_save");
    cJSON_AddStringToObject(c, "peft_type", "LORA");
    cJSON_AddNumberToObject(c, "r", (double)p0->r);
    cJSON_AddItemToObject(c, "rank_pattern", rp);
    rp = NULL;
    cJSON_AddItemToObject(c, "target_modules", tm);
    tm = NULL;
    cJSON_AddNullToObject(c, "task_type");
    cJSON_AddBoolToObject(c, "use_dora", p0->use_dora);
    cJSON_AddBoolToObject(c, "use_rslora", p0->use_rslora);
    char *text = cJSON_Print(c);
    s = text ? effml__peft_write_text(ctx, cfg_path, text) : effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lora_save_peft: out of memory");
    free(text);
  }
  cJSON_Delete(tm);
  cJSON_Delete(rp);
  cJSON_Delete(ap);
  cJSON_Delete(c);
  for (int64_t i = 0; names && i < 4 * n; ++i) effml__free(ctx, names[i]);
  effml__free(ctx, names);
  effml__free(ctx, ts);
  effml__free(ctx, st_path);
  effml__free(ctx, cfg_path);
  return s;
}

/* ---- AdapterHub Compacter ---- */

/* The shared rule value of a block ("phm_rule" entry), or NULL for per-projection rules. */
static effml_tensor *block_rule(effml_layer *b) {
  int32_t i = effml__peft_param_index(b, "phm_rule");
  return i >= 0 ? effml_layer_param(b, i) : NULL;
}

static effml_status check_blocks(effml_context *ctx, const char *fn, int64_t n, effml_layer *const *blocks,
                                 const char *const *prefixes, const char *phm_rule_key,
                                 effml_tensor **rule) {
  EFFML__CHECK_NULL(ctx, blocks);
  EFFML__CHECK_NULL(ctx, prefixes);
  if (n < 1) return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: n=%lld must be >= 1", fn, (long long)n);
  *rule = NULL;
  for (int64_t i = 0; i < n; ++i) {
    if (!effml__is_adapter(blocks[i]) || prefixes[i] == NULL)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: blocks[%lld] is not an adapter block or has no prefix", fn, (long long)i);
    effml_tensor *r = block_rule(blocks[i]);
    if (i == 0) *rule = r;
    else if (r != *rule)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: blocks[%lld] does not share blocks[0]'s phm rule", fn, (long long)i);
  }
  if (*rule && (phm_rule_key == NULL || phm_rule_key[0] == '\0'))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: the blocks share a phm rule, so phm_rule_key must be given", fn);
  return EFFML_OK;
}

effml_status effml_adapter_compacter_save_adapterhub(effml_context *ctx, const char *path, int64_t n,
                                             effml_layer *const *blocks, const char *const *prefixes,
                                             const char *phm_rule_key) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, path);
  effml_tensor *rule = NULL;
  EFFML__TRY(check_blocks(ctx, "effml_adapter_compacter_save_adapterhub", n, blocks, prefixes, phm_rule_key, &rule));
  int64_t total = rule ? 1 : 0;
  for (int64_t i = 0; i < n; ++i) total += blocks[i]->n_params - (rule ? 1 : 0);
  char **names = (char **)effml__calloc(ctx, (size_t)total, sizeof *names);
  const effml_tensor **ts = (const effml_tensor **)effml__calloc(ctx, (size_t)total, sizeof *ts);
  effml_status s = (names && ts) ? EFFML_OK : effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_compacter_save_adapterhub: out of memory");
  int64_t k = 0;
  for (int64_t i = 0; s == EFFML_OK && i < n; ++i)
    for (int32_t j = 0; s == EFFML_OK && j < blocks[i]->n_params; ++j) {
      const char *pn = blocks[i]->params[j].name;
      if (rule && strcmp(pn, "phm_rule") == 0) continue;
      names[k] = effml__peft_join3(ctx, prefixes[i], ".", pn);
      ts[k] = effml_layer_param(blocks[i], j);
      if (names[k++] == NULL) s = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_compacter_save_adapterhub: out of memory");
    }
  if (s == EFFML_OK && rule) {
    names[k] = effml__peft_join3(ctx, phm_rule_key, "", "");
    ts[k] = rule;
    if (names[k++] == NULL) s = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_compacter_save_adapterhub: out of memory");
  }
  if (s == EFFML_OK) {
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    s = effml_safetensors_save(ctx, path, k, (const char *const *)names, ts, 1, mk, mv);
  }
  for (int64_t i = 0; names && i < total; ++i) effml__free(ctx, names[i]);
  effml__free(ctx, names);
  effml__free(ctx, ts);
  return s;
}

effml_status effml_adapter_compacter_load_adapterhub(effml_context *ctx, const char *path, int64_t n,
                                             effml_layer *const *blocks, const char *const *prefixes,
                                             const char *phm_rule_key) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, path);
  effml_tensor *rule = NULL;
  EFFML__TRY(check_blocks(ctx, "effml_adapter_compacter_load_adapterhub", n, blocks, prefixes, phm_rule_key, &rule));
  int64_t total = 1;
  for (int64_t i = 0; i < n; ++i) total += blocks[i]->n_params;
  plan_item *items = (plan_item *)effml__calloc(ctx, (size_t)total, sizeof *items);
  if (items == NULL) return effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_compacter_load_adapterhub: out of memory");
  effml_safetensors *st = NULL;
  effml_status s = effml_safetensors_load(ctx, path, EFFML_IO_SAFETENSORS_COPY, &st);
  int64_t count = 0;
  for (int64_t i = 0; s == EFFML_OK && i < n; ++i)
    for (int32_t j = 0; s == EFFML_OK && j < blocks[i]->n_params; ++j) {
      const char *pn = blocks[i]->params[j].name;
      if (rule && strcmp(pn, "phm_rule") == 0) continue;
      char *key = effml__peft_join3(ctx, prefixes[i], ".", pn);
      s = key ? plan_add(ctx, st, key, effml_layer_param(blocks[i], j), items, &count)
              : effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_compacter_load_adapterhub: out of memory");
      effml__free(ctx, key);
    }
  if (s == EFFML_OK && rule) s = plan_add(ctx, st, phm_rule_key, rule, items, &count);
  if (s == EFFML_OK) s = plan_apply(ctx, items, count);
  effml_safetensors_free(st);
  effml__free(ctx, items);
  return s;
}
