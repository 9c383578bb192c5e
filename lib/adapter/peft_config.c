/* PEFT adapter_config.json for LoRA (PEFT 0.21 LoraConfig): the field table.
 *
 * The rule (docs/adapters.md, "adapter_config.json field table"):
 *   - informational keys are accepted whatever their value;
 *   - a key at its default, null or empty value is accepted;
 *   - a value the library implements is honoured;
 *   - any other value is EFFML_E_UNSUPPORTED naming the key and the value.
 * A key the table does not know is accepted only when null, false, {} or [];
 * anything else is refused the same way (a newer PEFT may have added it). */
#include <cjson/cJSON.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "adapter_internal.h"

enum {
  F_INFO,     /* informational: any value */
  F_EMPTY,    /* only null / false / {} / [] / "" (the defaults) */
  F_HONOURED  /* parsed below */
};

typedef struct field {
  const char *key;
  int rule;
} field;

/* Every key PEFT 0.21 writes for LoraConfig (sorted as PEFT writes them). */
static const field LORA_FIELDS[] = {
    {"alora_invocation_tokens", F_EMPTY}, /* aLoRA: activation after invocation tokens */
    {"alpha_pattern", F_HONOURED},
    {"arrow_config", F_EMPTY},            /* Arrow routing between several LoRAs */
    {"auto_mapping", F_INFO},
    {"base_model_name_or_path", F_INFO},
    {"bias", F_HONOURED},                 /* "none" only */
    {"corda_config", F_INFO},             /* init-time only; init "corda" itself is refused */
    {"ensure_weight_tying", F_HONOURED},  /* accepted: acts only with modules_to_save/trainable tokens */
    {"eva_config", F_INFO},               /* init-time only (EVA leaves the base unchanged) */
    {"exclude_modules", F_HONOURED}, /* modules in the file must not match (PEFT's rules) */
    {"fan_in_fan_out", F_HONOURED},       /* A/B do not depend on it; the base layer states its layout */
    {"inference_mode", F_INFO},
    {"init_lora_weights", F_HONOURED},
    {"kasa_config", F_EMPTY},
    {"layer_replication", F_EMPTY},       /* rebuilds the layer stack */
    {"layers_pattern", F_HONOURED},  /* with layers_to_transform */
    {"layers_to_transform", F_HONOURED},  /* modules in the file must be in these layers */
    {"loftq_config", F_INFO},             /* init-time only; init "loftq" itself is refused */
    {"lora_alpha", F_HONOURED},
    {"lora_bias", F_HONOURED},
    {"lora_dropout", F_HONOURED},
    {"lora_ga_config", F_EMPTY},
    {"megatron_config", F_EMPTY},
    {"megatron_core", F_INFO},
    {"modules_to_save", F_EMPTY},         /* full copies of other modules: refused */
    {"monteclora_config", F_EMPTY},
    {"peft_type", F_HONOURED},
    {"peft_version", F_INFO},
    {"qalora_group_size", F_INFO},        /* used only with use_qalora */
    {"r", F_HONOURED},
    {"rank_pattern", F_HONOURED},
    {"revision", F_INFO},
    {"runtime_config", F_INFO},           /* not saved by PEFT; runtime only */
    {"target_modules", F_HONOURED},  /* modules in the file must match (PEFT's rules) */
    {"target_parameters", F_EMPTY},       /* LoRA on nn.Parameter (MoE experts) */
    {"task_type", F_INFO},
    {"trainable_token_indices", F_EMPTY},
    {"use_bdlora", F_EMPTY},
    {"use_dora", F_HONOURED},
    {"use_qalora", F_EMPTY},
    {"use_rslora", F_HONOURED},
    {"velora_config", F_EMPTY},
};

/* Every key PEFT 0.21 writes for LoKrConfig. */
static const field LOKR_FIELDS[] = {
    {"alpha", F_HONOURED},
    {"alpha_pattern", F_HONOURED},
    {"auto_mapping", F_INFO},
    {"base_model_name_or_path", F_INFO},
    {"decompose_both", F_HONOURED},
    {"decompose_factor", F_HONOURED},
    {"exclude_modules", F_HONOURED}, /* modules in the file must not match (PEFT's rules) */
    {"inference_mode", F_INFO},
    {"init_weights", F_HONOURED},      /* init only; the weights are in the file */
    {"layers_pattern", F_HONOURED},  /* with layers_to_transform */
    {"layers_to_transform", F_HONOURED},  /* modules in the file must be in these layers */
    {"module_dropout", F_HONOURED},    /* training-only: skip the delta with probability p */
    {"modules_to_save", F_EMPTY},
    {"peft_type", F_HONOURED},
    {"peft_version", F_INFO},
    {"r", F_HONOURED},
    {"rank_dropout", F_HONOURED},      /* training-only: mask over the rows of dW */
    {"rank_dropout_scale", F_HONOURED}, /* divide the rank mask by its mean */
    {"rank_pattern", F_HONOURED},
    {"revision", F_INFO},
    {"target_modules", F_HONOURED},  /* modules in the file must match (PEFT's rules) */
    {"task_type", F_INFO},
    {"use_effective_conv2d", F_INFO},  /* Conv2d modules only; a linear module ignores it */
};

/* Every key PEFT 0.21 writes for IA3Config. */
static const field IA3_FIELDS[] = {
    {"auto_mapping", F_INFO},
    {"base_model_name_or_path", F_INFO},
    {"exclude_modules", F_HONOURED}, /* modules in the file must not match (PEFT's rules) */
    {"fan_in_fan_out", F_HONOURED},   /* the base layer states its layout */
    {"feedforward_modules", F_HONOURED},
    {"inference_mode", F_INFO},
    {"init_ia3_weights", F_INFO},     /* init only; the vectors are in the file */
    {"modules_to_save", F_EMPTY},
    {"peft_type", F_HONOURED},
    {"peft_version", F_INFO},
    {"revision", F_INFO},
    {"target_modules", F_HONOURED},  /* modules in the file must match (PEFT's rules) */
    {"task_type", F_INFO},
};

/* Every key PEFT 0.21 writes for LoHaConfig. */
static const field LOHA_FIELDS[] = {
    {"alpha", F_HONOURED},
    {"alpha_pattern", F_HONOURED},
    {"auto_mapping", F_INFO},
    {"base_model_name_or_path", F_INFO},
    {"exclude_modules", F_HONOURED}, /* modules in the file must not match (PEFT's rules) */
    {"inference_mode", F_INFO},
    {"init_weights", F_HONOURED},      /* init only; the weights are in the file */
    {"layers_pattern", F_HONOURED},  /* with layers_to_transform */
    {"layers_to_transform", F_HONOURED},  /* modules in the file must be in these layers */
    {"module_dropout", F_HONOURED},    /* training-only: skip the delta with probability p */
    {"modules_to_save", F_EMPTY},
    {"peft_type", F_HONOURED},
    {"peft_version", F_INFO},
    {"r", F_HONOURED},
    {"rank_dropout", F_HONOURED},      /* training-only: mask over the rows of dW */
    {"rank_pattern", F_HONOURED},
    {"revision", F_INFO},
    {"target_modules", F_HONOURED},  /* modules in the file must match (PEFT's rules) */
    {"task_type", F_INFO},
    {"use_effective_conv2d", F_INFO},  /* Conv2d modules only */
};

/* Every key PEFT 0.21 writes for VeraConfig. */
static const field VERA_FIELDS[] = {
    {"auto_mapping", F_INFO},
    {"base_model_name_or_path", F_INFO},
    {"bias", F_HONOURED},              /* "none" only */
    {"d_initial", F_INFO},             /* init only; lambda_d is in the file */
    {"fan_in_fan_out", F_HONOURED},    /* the base layer states its layout */
    {"inference_mode", F_INFO},
    {"init_weights", F_INFO},
    {"layers_pattern", F_HONOURED},  /* with layers_to_transform */
    {"layers_to_transform", F_HONOURED},  /* modules in the file must be in these layers */
    {"modules_to_save", F_EMPTY},
    {"peft_type", F_HONOURED},
    {"peft_version", F_INFO},
    {"projection_prng_key", F_INFO},   /* used only to regenerate projections; save_projection false is refused */
    {"r", F_HONOURED},
    {"revision", F_INFO},
    {"save_projection", F_HONOURED},   /* true only */
    {"target_modules", F_HONOURED},  /* modules in the file must match (PEFT's rules) */
    {"task_type", F_INFO},
    {"vera_dropout", F_HONOURED},      /* training-only: dropout on the adapter's input */
};

static const char *type_name(int32_t t) {
  return t == EFFML__PEFT_LOKR ? "LOKR" : t == EFFML__PEFT_IA3 ? "IA3" : t == EFFML__PEFT_LOHA ? "LOHA"
       : t == EFFML__PEFT_VERA ? "VERA" : "LORA";
}

static const field *find_field(const effml__peft_cfg *c, const char *key) {
  const field *t = c->type == EFFML__PEFT_LOKR ? LOKR_FIELDS
                   : c->type == EFFML__PEFT_IA3 ? IA3_FIELDS
                   : c->type == EFFML__PEFT_LOHA ? LOHA_FIELDS
                   : c->type == EFFML__PEFT_VERA ? VERA_FIELDS
                                                 : LORA_FIELDS;
  size_t n = c->type == EFFML__PEFT_LOKR   ? sizeof LOKR_FIELDS / sizeof LOKR_FIELDS[0]
             : c->type == EFFML__PEFT_IA3  ? sizeof IA3_FIELDS / sizeof IA3_FIELDS[0]
             : c->type == EFFML__PEFT_LOHA ? sizeof LOHA_FIELDS / sizeof LOHA_FIELDS[0]
             : c->type == EFFML__PEFT_VERA ? sizeof VERA_FIELDS / sizeof VERA_FIELDS[0]
                                           : sizeof LORA_FIELDS / sizeof LORA_FIELDS[0];
  for (size_t i = 0; i < n; ++i)
    if (strcmp(t[i].key, key) == 0) return &t[i];
  return NULL;
}

static int is_empty_value(const cJSON *v) {
  if (cJSON_IsNull(v) || cJSON_IsFalse(v)) return 1;
  if ((cJSON_IsObject(v) || cJSON_IsArray(v)) && v->child == NULL) return 1;
  if (cJSON_IsString(v) && v->valuestring[0] == '\0') return 1;
  return 0;
}

/* The value as compact JSON, cut to fit `buf`. */
static const char *value_str(const cJSON *v, char *buf, size_t len) {
  char *s = cJSON_PrintUnformatted(v);
  if (s == NULL) {
    snprintf(buf, len, "?");
    return buf;
  }
  if (strlen(s) >= len && len > 4) {
    memcpy(buf, s, len - 4);
    memcpy(buf + len - 4, "...", 4);
  } else {
    snprintf(buf, len, "%s", s);
  }
  free(s);
  return buf;
}

static effml_status unsupported(effml_context *ctx, const effml__peft_cfg *c, const cJSON *v,
                                const char *why) {
  char b[160];
  return effml__err(ctx, EFFML_E_UNSUPPORTED, "\"%s\": %s=%s is not supported%s%s", c->path, v->string,
                    value_str(v, b, sizeof b), why ? ": " : "", why ? why : "");
}

static effml_status bad_value(effml_context *ctx, const effml__peft_cfg *c, const cJSON *v,
                              const char *want) {
  char b[160];
  return effml__err(ctx, EFFML_E_FORMAT, "\"%s\": %s=%s, expected %s", c->path, v->string,
                    value_str(v, b, sizeof b), want);
}

/* A rank/alpha pattern: an object of {regex: number}; the regexes are checked here. */
static effml_status check_pattern(effml_context *ctx, const effml__peft_cfg *c, const cJSON *v,
                                  int want_int) {
  if (cJSON_IsNull(v)) return EFFML_OK;
  if (!cJSON_IsObject(v)) return bad_value(ctx, c, v, "an object {module pattern: number}");
  for (const cJSON *e = v->child; e; e = e->next) {
    if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) ||
        (want_int && (e->valuedouble < 1 || e->valuedouble != floor(e->valuedouble))))
      return effml__err(ctx, EFFML_E_FORMAT, "\"%s\": %s[\"%s\"] must be a %s", c->path, v->string,
                        e->string, want_int ? "positive integer" : "finite number");
    /* PEFT matches Python regular expressions; we match POSIX extended ones.  The
     * common subset (literals, ., [], *, +, ?, |, (), {m,n}, \. escapes) means the
     * same; anything else (\d, (?...), lazy quantifiers) is refused. */
    const char *k = e->string;
    for (size_t i = 0; k[i]; ++i) {
      int bad = 0;
      if (k[i] == '\\') bad = k[i + 1] == '\0' || (k[i + 1] >= 'a' && k[i + 1] <= 'z') ||
                              (k[i + 1] >= 'A' && k[i + 1] <= 'Z') || (k[i + 1] >= '0' && k[i + 1] <= '9');
      if (k[i] == '(' && k[i + 1] == '?') bad = 1;
      if ((k[i] == '*' || k[i] == '+' || k[i] == '?' || k[i] == '}') && k[i + 1] == '?') bad = 1;
      /* a repetition of a repetition ("*+", "+*", "?{2}"): Python reads "*+" as possessive
       * and refuses "++"; POSIX leaves it undefined, and glibc compiles chains of them into
       * automata whose size explodes (found by fuzz_peft_config: 60 '+' took minutes) */
      if ((k[i] == '*' || k[i] == '+' || k[i] == '?' || k[i] == '}') &&
          (k[i + 1] == '*' || k[i + 1] == '+' || k[i + 1] == '{'))
        return effml__err(ctx, EFFML_E_UNSUPPORTED,
                          "\"%s\": %s key \"%s\" repeats a repetition (\"%c%c\" at offset %zu): "
                          "write one quantifier", c->path, v->string, k, k[i], k[i + 1], i);
      if (bad)
        return effml__err(ctx, EFFML_E_UNSUPPORTED,
                          "\"%s\": %s key \"%s\" uses regular-expression syntax other than POSIX extended "
                          "(\\d, \\w, (?...), lazy quantifiers); write it without them",
                          c->path, v->string, k);
      if (k[i] == '\\') ++i;
    }
    size_t len = strlen(k);
    char *re = (char *)effml__malloc(ctx, len + 16);
    if (re == NULL) return effml__err(ctx, EFFML_E_NOMEM, "peft config: out of memory");
    snprintf(re, len + 16, "^(.*\\.)?(%s)$", k);
    regex_t rx;
    int rc = regcomp(&rx, re, REG_EXTENDED | REG_NOSUB);
    effml__free(ctx, re);
    if (rc != 0)
      return effml__err(ctx, EFFML_E_FORMAT, "\"%s\": %s key \"%s\" is not a valid regular expression",
                        c->path, v->string, k);
    regfree(&rx);
  }
  return EFFML_OK;
}

/* A module-name selector (target_modules, exclude_modules, feedforward_modules, layers_pattern):
 * null, a list of strings, or one string -- a Python regular expression, accepted in the subset
 * that POSIX extended reads the same (no \d-style escapes, (?...), lazy or repeated
 * quantifiers: the last make glibc's regcomp explode). */
static effml_status check_module_names(effml_context *ctx, const effml__peft_cfg *c, const cJSON *v) {
  if (cJSON_IsNull(v)) return EFFML_OK;
  if (cJSON_IsArray(v)) {
    for (const cJSON *e = v->child; e; e = e->next)
      if (!cJSON_IsString(e)) return bad_value(ctx, c, v, "a list of module names or a regular expression");
    return EFFML_OK;
  }
  if (!cJSON_IsString(v)) return bad_value(ctx, c, v, "a list of module names or a regular expression");
  const char *k2 = v->valuestring;
  for (size_t i = 0; k2[i]; ++i) {
    int q = k2[i] == '*' || k2[i] == '+' || k2[i] == '?' || k2[i] == '}';
    if ((k2[i] == '\\' && k2[i + 1] != '.') || (k2[i] == '(' && k2[i + 1] == '?') ||
        (q && (k2[i + 1] == '?' || k2[i + 1] == '*' || k2[i + 1] == '+' || k2[i + 1] == '{')))
      return effml__err(ctx, EFFML_E_UNSUPPORTED,
                        "\"%s\": %s \"%s\" uses regular-expression syntax other than POSIX extended (offset %zu)",
                        c->path, v->string, k2, i);
    if (k2[i] == '\\') ++i;
  }
  regex_t rx;
  if (regcomp(&rx, k2, REG_EXTENDED | REG_NOSUB) != 0) return bad_value(ctx, c, v, "a valid regular expression");
  regfree(&rx);
  return EFFML_OK;
}

static effml_status check_key(effml_context *ctx, effml__peft_cfg *c, const cJSON *v) {
  const char *k = v->string;
  const field *f = find_field(c, k);
  if (f == NULL) {
    if (is_empty_value(v)) return EFFML_OK;
    return unsupported(ctx, c, v, "unknown key (not in PEFT 0.21's config of this peft_type)");
  }
  if (f->rule == F_INFO) return EFFML_OK;
  if (f->rule == F_EMPTY) return is_empty_value(v) ? EFFML_OK : unsupported(ctx, c, v, NULL);
  if (strcmp(k, "peft_type") == 0) {
    if (!cJSON_IsString(v)) return bad_value(ctx, c, v, "a string");
    const char *want = type_name(c->type);
    if (strcmp(v->valuestring, want) != 0) {
      char why[96];
      if (c->auto_type)
        snprintf(why, sizeof why, "this library reads LORA, LOKR, LOHA, IA3 and VERA adapters");
      else
        snprintf(why, sizeof why, "this loader reads %s adapters", want);
      return unsupported(ctx, c, v, why);
    }
  } else if (strcmp(k, "r") == 0) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble > 1e9)
      return bad_value(ctx, c, v, "a positive integer");
    c->r = (int64_t)v->valuedouble;
  } else if (strcmp(k, "alpha") == 0 && (c->type == EFFML__PEFT_LOKR || c->type == EFFML__PEFT_LOHA)) {
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return bad_value(ctx, c, v, "a finite number");
    c->alpha = v->valuedouble;
  } else if (strcmp(k, "save_projection") == 0) {
    if (!cJSON_IsBool(v)) return bad_value(ctx, c, v, "true or false");
    if (!cJSON_IsTrue(v))
      return unsupported(ctx, c, v,
                         "the file then lacks vera_A/vera_B, which PEFT regenerates with torch's random generator "
                         "(projection_prng_key); save the adapter with save_projection=True");
  } else if (strcmp(k, "vera_dropout") == 0) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble < 1.0))
      return bad_value(ctx, c, v, "a number in [0, 1)");
    c->dropout = v->valuedouble;
  } else if (strcmp(k, "feedforward_modules") == 0 || strcmp(k, "target_modules") == 0 ||
             strcmp(k, "exclude_modules") == 0 || strcmp(k, "layers_pattern") == 0) {
    EFFML__TRY(check_module_names(ctx, c, v));
    if (k[0] == 'f') c->feedforward = v;
    else if (k[0] == 't') c->target = v;
    else if (k[0] == 'e') c->exclude = v;
    else c->layers_pattern = v;
  } else if (strcmp(k, "layers_to_transform") == 0) {
    if (cJSON_IsNull(v)) return EFFML_OK;
    if (cJSON_IsNumber(v)) {
      if (v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble)) return bad_value(ctx, c, v, "a layer index or a list of them");
    } else if (cJSON_IsArray(v)) {
      for (const cJSON *e = v->child; e; e = e->next)
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble != floor(e->valuedouble))
          return bad_value(ctx, c, v, "a layer index or a list of them");
    } else {
      return bad_value(ctx, c, v, "a layer index or a list of them");
    }
    c->layers_to_transform = v;
  } else if (strcmp(k, "decompose_both") == 0) {
    if (!cJSON_IsBool(v)) return bad_value(ctx, c, v, "true or false");
    c->decompose_both = cJSON_IsTrue(v);
  } else if (strcmp(k, "decompose_factor") == 0) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || (v->valuedouble < 1 && v->valuedouble != -1))
      return bad_value(ctx, c, v, "-1 or a positive integer");
    c->decompose_factor = (int64_t)v->valuedouble;
  } else if (strcmp(k, "module_dropout") == 0 || strcmp(k, "rank_dropout") == 0) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble < 1.0))
      return bad_value(ctx, c, v, "a number in [0, 1)");
    if (k[0] == 'm') c->module_dropout = v->valuedouble;
    else c->rank_dropout = v->valuedouble;
  } else if (strcmp(k, "rank_dropout_scale") == 0) {
    if (!cJSON_IsBool(v)) return bad_value(ctx, c, v, "true or false");
    c->rank_dropout_scale = cJSON_IsTrue(v);
  } else if (strcmp(k, "init_weights") == 0) {
    if (!cJSON_IsBool(v) && !(cJSON_IsString(v) && strcmp(v->valuestring, "lycoris") == 0))
      return unsupported(ctx, c, v, NULL);
  } else if (strcmp(k, "lora_alpha") == 0) {
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return bad_value(ctx, c, v, "a finite number");
    c->alpha = v->valuedouble;
  } else if (strcmp(k, "use_rslora") == 0 || strcmp(k, "use_dora") == 0 || strcmp(k, "lora_bias") == 0 ||
             strcmp(k, "fan_in_fan_out") == 0 || strcmp(k, "ensure_weight_tying") == 0) {
    if (!cJSON_IsBool(v)) return bad_value(ctx, c, v, "true or false");
    int on = cJSON_IsTrue(v);
    if (strcmp(k, "use_rslora") == 0) c->use_rslora = on;
    if (strcmp(k, "use_dora") == 0) c->use_dora = on;
    if (strcmp(k, "lora_bias") == 0) c->lora_bias = on;
    if (strcmp(k, "fan_in_fan_out") == 0) c->fan_in_fan_out = on;
    if (on && (c->caps & EFFML__PEFT_CAP_DORA) == 0 && strcmp(k, "use_dora") == 0)
      return unsupported(ctx, c, v, "use_dora is a LoRA option; this adapter type has no DoRA form");
    if (on && (c->caps & EFFML__PEFT_CAP_LORA_BIAS) == 0 && strcmp(k, "lora_bias") == 0)
      return unsupported(ctx, c, v, "lora_bias is a LoRA option; this adapter type has no lora_B");
  } else if (strcmp(k, "lora_dropout") == 0) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble < 1.0))
      return bad_value(ctx, c, v, "a number in [0, 1)");
    c->dropout = v->valuedouble;
  } else if (strcmp(k, "bias") == 0) {
    if (!cJSON_IsString(v)) return bad_value(ctx, c, v, "\"none\", \"all\" or \"lora_only\"");
    if (strcmp(v->valuestring, "none") != 0)
      return unsupported(ctx, c, v, "the file then carries trained base biases; only \"none\" is read");
  } else if (strcmp(k, "init_lora_weights") == 0) {
    /* The weights are in the file, so the initialisation only matters when it
     * changed the base weights too (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA...). */
    if (cJSON_IsBool(v)) return EFFML_OK;
    if (cJSON_IsString(v) && (strcmp(v->valuestring, "gaussian") == 0 || strcmp(v->valuestring, "eva") == 0))
      return EFFML_OK;
    return unsupported(ctx, c, v,
                       "this initialisation changes the base weights, which the adapter file does not "
                       "carry (convert the adapter with PEFT's path_initial_model_for_weight_conversion)");
  } else if (strcmp(k, "rank_pattern") == 0 || strcmp(k, "alpha_pattern") == 0) {
    int rank = k[0] == 'r';
    EFFML__TRY(check_pattern(ctx, c, v, rank));
    if (rank) c->rank_pattern = v;
    else c->alpha_pattern = v;
  }
  return EFFML_OK;
}

static char *path_join(effml_context *ctx, const char *dir, const char *file) {
  size_t a = strlen(dir), b = strlen(file);
  char *s = (char *)effml__malloc(ctx, a + b + 2);
  if (s == NULL) return NULL;
  memcpy(s, dir, a);
  s[a] = '/';
  memcpy(s + a + 1, file, b + 1);
  return s;
}

effml_status effml__peft_cfg_open(effml_context *ctx, const char *dir, uint32_t caps,
                                  effml__peft_cfg **out) {
  return effml__peft_cfg_open_type(ctx, dir, EFFML__PEFT_LORA, caps, out);
}

effml_status effml__peft_cfg_open_type(effml_context *ctx, const char *dir, int32_t type, uint32_t caps,
                                       effml__peft_cfg **out) {
  return effml__peft_cfg_open_collect(ctx, dir, type, caps, NULL, out);
}

effml_status effml__peft_cfg_open_collect(effml_context *ctx, const char *dir, int32_t type, uint32_t caps,
                                          effml__peft_sink *sink, effml__peft_cfg **out) {
  effml__peft_cfg *c = (effml__peft_cfg *)effml__calloc_or_err(ctx, 1, sizeof *c, "a PEFT config");
  if (c == NULL) return EFFML_E_NOMEM;
  c->ctx = ctx;
  c->type = type;
  c->decompose_factor = -1;
  c->caps = caps;
  c->alpha = 8.0; /* PEFT's default lora_alpha */
  c->path = path_join(ctx, dir, "adapter_config.json");
  effml_status s = c->path ? EFFML_OK : effml__err(ctx, EFFML_E_NOMEM, "peft config: out of memory");
  FILE *f = s == EFFML_OK ? fopen(c->path, "rb") : NULL;
  if (s == EFFML_OK && f == NULL) s = effml__err(ctx, EFFML_E_IO, "cannot open \"%s\"", c->path);
  if (s == EFFML_OK) {
    long n = -1;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && n < (1L << 26) && fseek(f, 0, SEEK_SET) == 0) buf = (char *)effml__malloc(ctx, (size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
      s = effml__err(ctx, EFFML_E_IO, "cannot read \"%s\"", c->path);
    } else {
      buf[n] = '\0';
      c->root = cJSON_Parse(buf);
    }
    effml__free(ctx, buf);
    fclose(f);
  }
  if (s == EFFML_OK && (c->root == NULL || !cJSON_IsObject(c->root)))
    s = effml__err(ctx, EFFML_E_FORMAT, "\"%s\" is not a JSON object", c->path);
  if (s == EFFML_OK && c->type < 0) { /* any type this library reads: from peft_type */
    c->auto_type = 1;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(c->root, "peft_type");
    const char *tn = cJSON_IsString(t) ? t->valuestring : "";
    c->type = strcmp(tn, "LOKR") == 0   ? EFFML__PEFT_LOKR
              : strcmp(tn, "IA3") == 0  ? EFFML__PEFT_IA3
              : strcmp(tn, "LOHA") == 0 ? EFFML__PEFT_LOHA
              : strcmp(tn, "VERA") == 0 ? EFFML__PEFT_VERA
                                        : EFFML__PEFT_LORA;
  }
  const cJSON *pt = s == EFFML_OK ? cJSON_GetObjectItemCaseSensitive(c->root, "peft_type") : NULL;
  if (s == EFFML_OK && pt == NULL) /* PEFT writes it in every config; guessing LORA could misread the tensors */
    s = effml__err(ctx, EFFML_E_FORMAT, "\"%s\": required key \"peft_type\" is missing", c->path);
  if (pt != NULL) s = check_key(ctx, c, pt); /* a wrong type is reported as such, before its keys */
  int have_r = 0;
  for (const cJSON *v = c->root ? c->root->child : NULL; s == EFFML_OK && v; v = v->next) {
    if (v == pt) continue;
    s = check_key(ctx, c, v);
    have_r |= strcmp(v->string, "r") == 0;
    if (s != EFFML_OK && sink != NULL && s != EFFML_E_NOMEM) { /* record it, check the other keys */
      effml__peft_sink_add(sink, effml_context_last_error(ctx));
      s = EFFML_OK;
    }
  }
  if (s == EFFML_OK && !have_r && c->type != EFFML__PEFT_IA3) {
    s = effml__err(ctx, EFFML_E_FORMAT, "\"%s\": \"r\" is missing", c->path);
    if (sink != NULL) {
      effml__peft_sink_add(sink, effml_context_last_error(ctx));
      s = EFFML_OK;
    }
  }
  if (s != EFFML_OK) {
    effml__peft_cfg_close(c);
    return s;
  }
  *out = c;
  return EFFML_OK;
}

void effml__peft_cfg_close(effml__peft_cfg *c) {
  if (c == NULL) return;
  cJSON_Delete(c->root);
  effml__free(c->ctx, c->path);
  effml__free(c->ctx, c);
}

/* PEFT's get_pattern_key: the first key k (in file order) with
 * re.match(rf"(.*\.)?({k})$", name); NULL if none. */
static const cJSON *pattern_entry(const cJSON *pattern, const char *name) {
  if (pattern == NULL || !cJSON_IsObject(pattern)) return NULL;
  for (const cJSON *e = pattern->child; e; e = e->next) {
    size_t len = strlen(e->string) + 16;
    char *re = (char *)malloc(len);
    if (re == NULL) return NULL;
    snprintf(re, len, "^(.*\\.)?(%s)$", e->string);
    regex_t rx;
    int ok = regcomp(&rx, re, REG_EXTENDED | REG_NOSUB) == 0;
    free(re);
    if (!ok) continue; /* checked at open */
    int hit = regexec(&rx, name, 0, NULL, 0) == 0;
    regfree(&rx);
    if (hit) return e;
  }
  return NULL;
}

const char *effml__peft_module_key(const char *module_name) {
  static const char prefix[] = "base_model.model.";
  if (strncmp(module_name, prefix, sizeof prefix - 1) == 0) return module_name + sizeof prefix - 1;
  return module_name;
}

void effml__peft_cfg_module(const effml__peft_cfg *c, const char *module_name, int64_t *r, double *alpha) {
  const char *key = effml__peft_module_key(module_name);
  const cJSON *er = pattern_entry(c->rank_pattern, key), *ea = pattern_entry(c->alpha_pattern, key);
  *r = er ? (int64_t)er->valuedouble : c->r;
  *alpha = ea ? ea->valuedouble : c->alpha;
}

const char *effml__peft_cfg_rank_source(const effml__peft_cfg *c, const char *module_name) {
  const cJSON *er = pattern_entry(c->rank_pattern, effml__peft_module_key(module_name));
  return er ? er->string : NULL;
}

int effml__peft_cfg_feedforward(const effml__peft_cfg *c, const char *module_name) {
  const cJSON *v = c->feedforward;
  const char *key = effml__peft_module_key(module_name);
  if (v == NULL || cJSON_IsNull(v)) return 0;
  if (cJSON_IsString(v)) { /* PEFT: re.fullmatch(feedforward_modules, key) */
    size_t len = strlen(v->valuestring) + 8;
    char *re = (char *)malloc(len);
    if (re == NULL) return 0;
    snprintf(re, len, "^(%s)$", v->valuestring);
    regex_t rx;
    int hit = 0;
    if (regcomp(&rx, re, REG_EXTENDED | REG_NOSUB) == 0) {
      hit = regexec(&rx, key, 0, NULL, 0) == 0;
      regfree(&rx);
    }
    free(re);
    return hit;
  }
  size_t kl = strlen(key); /* PEFT: any(key.endswith(t) for t in feedforward_modules) */
  for (const cJSON *e = v->child; e; e = e->next) {
    size_t tl = strlen(e->valuestring);
    if (tl <= kl && strcmp(key + kl - tl, e->valuestring) == 0) return 1;
  }
  return 0;
}

/* The value of a config key as compact JSON (for messages), cut to fit `buf`. */
const char *effml__peft_cfg_value(const effml__peft_cfg *c, const char *key, char *buf, size_t len) {
  const cJSON *v = c->root ? cJSON_GetObjectItemCaseSensitive(c->root, key) : NULL;
  if (v == NULL) {
    snprintf(buf, len, "(absent)");
    return buf;
  }
  return value_str(v, buf, len);
}

/* 1 if `key` fully matches the POSIX extended form of Python regex `re` (re.fullmatch). */
static int full_match(const char *re, const char *key) {
  size_t len = strlen(re) + 8;
  char *b = (char *)malloc(len);
  if (b == NULL) return 0;
  snprintf(b, len, "^(%s)$", re);
  regex_t rx;
  int hit = 0;
  if (regcomp(&rx, b, REG_EXTENDED | REG_NOSUB) == 0) {
    hit = regexec(&rx, key, 0, NULL, 0) == 0;
    regfree(&rx);
  }
  free(b);
  return hit;
}

/* PEFT's list rule: key equals an entry or ends with "." + entry. */
static int list_match(const cJSON *list, const char *key) {
  size_t kl = strlen(key);
  for (const cJSON *e = list->child; e; e = e->next) {
    size_t tl = strlen(e->valuestring);
    if (strcmp(key, e->valuestring) == 0 || (tl < kl && key[kl - tl - 1] == '.' && strcmp(key + kl - tl, e->valuestring) == 0))
      return 1;
  }
  return 0;
}

/* The layer index PEFT reads from `key` for layers_to_transform: re.match(r".*\.{p}\.(\d+)\.", key) for each
 * layers_pattern p in order (any "[^.]*" when there is none); -1 if none matches.  POSIX's leftmost-longest
 * ".*" takes the last occurrence, as Python's greedy backtracking does. */
static long layer_index(const cJSON *pattern, const char *key) {
  const cJSON *one = NULL;
  const cJSON *list = NULL;
  if (pattern && cJSON_IsString(pattern) && pattern->valuestring[0]) one = pattern;
  else if (pattern && cJSON_IsArray(pattern) && pattern->child) list = pattern;
  const cJSON *p = one ? one : list ? list->child : NULL;
  do {
    const char *pat = p ? p->valuestring : "[^.]*";
    size_t len = strlen(pat) + 32;
    char *b = (char *)malloc(len);
    if (b == NULL) return -1;
    snprintf(b, len, "^.*\\.(%s)\\.([0-9]+)\\.", pat);
    regex_t rx;
    regmatch_t m[3];
    long idx = -1;
    if (regcomp(&rx, b, REG_EXTENDED) == 0) {
      if (regexec(&rx, key, 3, m, 0) == 0 && m[2].rm_so >= 0) idx = strtol(key + m[2].rm_so, NULL, 10);
      regfree(&rx);
    }
    free(b);
    if (idx >= 0) return idx;
    p = (list && p) ? p->next : NULL;
  } while (p);
  return -1;
}

int effml__peft_cfg_targets(const effml__peft_cfg *c, const char *module_name, const char **why_key) {
  const char *key = effml__peft_module_key(module_name);
  const cJSON *ex = c->exclude, *t = c->target;
  *why_key = NULL;
  if (ex && !is_empty_value(ex)) {
    if (cJSON_IsString(ex) ? full_match(ex->valuestring, key) : list_match(ex, key)) {
      *why_key = "exclude_modules";
      return 0;
    }
  }
  if (t == NULL || cJSON_IsNull(t)) return 1; /* not saved: nothing to check against */
  if (cJSON_IsString(t)) {
    if (strcasecmp(t->valuestring, "all-linear") == 0) return 1; /* PEFT resolves it to every linear layer */
    if (full_match(t->valuestring, key)) return 1;
    *why_key = "target_modules";
    return 0;
  }
  for (const cJSON *e = t->child; e; e = e->next)
    if (strcmp(key, e->valuestring) == 0) return 1; /* named directly: PEFT skips the layer check */
  if (!list_match(t, key)) {
    *why_key = "target_modules";
    return 0;
  }
  const cJSON *lt = c->layers_to_transform;
  if (lt == NULL || cJSON_IsNull(lt) || (cJSON_IsArray(lt) && lt->child == NULL)) return 1;
  long idx = layer_index(c->layers_pattern, key);
  int ok = 0;
  if (idx >= 0) {
    if (cJSON_IsNumber(lt)) ok = (long)lt->valuedouble == idx;
    else
      for (const cJSON *e = lt->child; e && !ok; e = e->next) ok = (long)e->valuedouble == idx;
  }
  if (!ok) *why_key = "layers_to_transform";
  return ok;
}
