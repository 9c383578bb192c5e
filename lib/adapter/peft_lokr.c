/* PEFT LoKr files (PEFT 0.21 LoKrConfig) for the LoKr layer: adapter_config.json
 * through the LoKr field table (peft_config.c), adapter_model.safetensors with
 * "<module>.lokr_w1" or ".lokr_w1_a"/".lokr_w1_b", and ".lokr_w2" or
 * ".lokr_w2_a"/".lokr_w2_b" -- the layer's own parameter names.  All-or-nothing;
 * a tensor no given module consumes is an error naming it. */
#include <stdio.h>
#include <string.h>

#include "adapter_internal.h"

effml_status effml_adapter_lokr_peft_options(effml_context *ctx, const char *dir, const char *module_name,
                                             effml_adapter_lokr_options *opt) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, dir);
  EFFML__CHECK_NULL(ctx, module_name);
  EFFML__CHECK_NULL(ctx, opt);
  effml__peft_cfg *cfg = NULL;
  EFFML__TRY(effml__peft_cfg_open_type(ctx, dir, EFFML__PEFT_LOKR, 0u, &cfg));
  effml_adapter_lokr_options o;
  effml_adapter_lokr_options_init(&o);
  effml__peft_cfg_module(cfg, module_name, &o.rank, &o.alpha);
  o.decompose_both = cfg->decompose_both;
  o.decompose_factor = cfg->decompose_factor;
  o.scale_convention = EFFML_ADAPTER_LOKR_SCALE_PEFT;
  effml__peft_cfg_close(cfg);
  *opt = o;
  return EFFML_OK;
}

typedef struct item {
  const effml_tensor *src;
  effml_tensor *dst;
} item;

effml_status effml_adapter_lokr_load_peft(effml_context *ctx, const char *dir, int64_t n, effml_layer *const *layers,
                                          const char *const *module_names) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, dir);
  EFFML__CHECK_NULL(ctx, layers);
  EFFML__CHECK_NULL(ctx, module_names);
  if (n < 1) return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_lokr_load_peft: n=%lld must be >= 1", (long long)n);
  for (int64_t i = 0; i < n; ++i)
    if (!effml__is_lokr(layers[i]) || module_names[i] == NULL)
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "effml_adapter_lokr_load_peft: layers[%lld] is not a lokr layer or has no module name", (long long)i);
  size_t plen = strlen(dir) + 32;
  char *st_path = (char *)effml__malloc(ctx, plen);
  item *items = (item *)effml__calloc(ctx, (size_t)(6 * n), sizeof *items);
  double *alphas = (double *)effml__calloc(ctx, (size_t)n, sizeof *alphas);
  effml__peft_cfg *cfg = NULL;
  effml_safetensors *st = NULL;
  effml_status s = (st_path && items && alphas) ? EFFML_OK
                                                : effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lokr_load_peft: out of memory");
  if (s == EFFML_OK) {
    snprintf(st_path, plen, "%s/adapter_model.safetensors", dir);
    s = effml__peft_cfg_open_type(ctx, dir, EFFML__PEFT_LOKR, 0u, &cfg);
  }
  if (s == EFFML_OK) s = effml_safetensors_load(ctx, st_path, EFFML_IO_SAFETENSORS_COPY, &st);
  int64_t count = 0;
  for (int64_t i = 0; s == EFFML_OK && i < n; ++i) {
    effml_layer *l = layers[i];
    int64_t r = 0;
    effml__peft_cfg_module(cfg, module_names[i], &r, &alphas[i]);
    if (r != effml__lokr_rank(l)) {
      s = effml__err(ctx, EFFML_E_SHAPE, "adapter_config.json r=%lld (after rank_pattern) for \"%s\" but the layer has rank=%lld",
                     (long long)r, module_names[i], (long long)effml__lokr_rank(l));
      break;
    }
    for (int32_t j = 0; s == EFFML_OK && j < effml_layer_num_params(l); ++j) {
      const char *pn = effml_layer_param_name(l, j);
      if (strncmp(pn, "base_layer.", 11) == 0) continue;
      size_t kl = strlen(module_names[i]) + strlen(pn) + 2;
      char *key = (char *)effml__malloc(ctx, kl);
      if (key == NULL) {
        s = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_lokr_load_peft: out of memory");
        break;
      }
      snprintf(key, kl, "%s.%s", module_names[i], pn);
      const effml_tensor *src = NULL;
      effml_tensor *dst = effml_layer_param(l, j);
      if (effml_safetensors_get(ctx, st, key, &src) != EFFML_OK) {
        s = effml__err(ctx, EFFML_E_NOT_FOUND,
                       "adapter file: missing key \"%s\" (the layer's factors follow r and decompose_both; "
                       "make it with effml_adapter_lokr_peft_options())", key);
      } else {
        int same = effml_tensor_ndim(src) == effml_tensor_ndim(dst);
        for (int32_t d = 0; same && d < effml_tensor_ndim(dst); ++d)
          same = effml_tensor_dim(src, d) == effml_tensor_dim(dst, d);
        char a[96], b[96];
        if (!same)
          s = effml__err(ctx, EFFML_E_SHAPE, "adapter file: \"%s\" has shape %s, the layer expects %s", key,
                         effml__shape_str(src, a, sizeof a), effml__shape_str(dst, b, sizeof b));
        else {
          items[count].src = src;
          items[count++].dst = dst;
        }
      }
      effml__free(ctx, key);
    }
  }
  for (int64_t t = 0; s == EFFML_OK && t < effml_safetensors_count(st); ++t) {
    const effml_tensor *src = NULL;
    effml_safetensors_get(ctx, st, effml_safetensors_name(st, t), &src);
    int used = 0;
    for (int64_t k = 0; !used && k < count; ++k) used = items[k].src == src;
    if (!used)
      s = effml__err(ctx, EFFML_E_UNSUPPORTED,
                     "\"%s\": tensor \"%s\" is not consumed by any of the %lld given modules (a module not passed, "
                     "or a PEFT feature this loader does not read)", st_path, effml_safetensors_name(st, t), (long long)n);
  }
  for (int64_t k = 0; s == EFFML_OK && k < count; ++k) s = effml_tensor_copy(ctx, items[k].dst, items[k].src);
  if (s == EFFML_OK)
    for (int64_t i = 0; i < n; ++i) {
      effml__lokr_set_alpha(layers[i], alphas[i]);
      (void)effml_adapter_lokr_set_dropout(ctx, layers[i], cfg->rank_dropout, cfg->module_dropout,
                                           cfg->rank_dropout_scale); /* in range: checked by the field table */
    }
  effml_safetensors_free(st);
  effml__peft_cfg_close(cfg);
  effml__free(ctx, alphas);
  effml__free(ctx, items);
  effml__free(ctx, st_path);
  return s;
}
