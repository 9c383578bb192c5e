/* A PEFT adapter directory as one object (LoRA family and LoKr): the config
 * through its field table, the tensors grouped by module, and per module an
 * adapter layer built around a base layer the caller gives -- so that a tool
 * can merge a model module by module without holding it whole
 * (tools/effml-adapter.c). */
#include "blas.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "adapter_internal.h"

struct effml_adapter_peft {
  effml_context *ctx;
  effml__peft_cfg *cfg;
  effml_safetensors *st;
  int64_t n;
  char **modules; /* "base_model.model.q_proj", in file order of first tensor */
  const effml_tensor *vera_A, *vera_B; /* VeRA's shared projections (borrowed from st) */
};

static const char *const LORA_SUFFIX[] = {".lora_A.weight", ".lora_B.weight", ".lora_B.bias", ".lora_magnitude_vector"};
static const char *const LOKR_SUFFIX[] = {".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a", ".lokr_w2_b"};
static const char *const IA3_SUFFIX[] = {".ia3_l"};
static const char *const LOHA_SUFFIX[] = {".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b"};
static const char *const VERA_SUFFIX[] = {".vera_lambda_b", ".vera_lambda_d"};

/* EFFML_OK when every value of adapter tensor `name` is finite; otherwise EFFML_E_INVALID_ARG
 * naming the file, the tensor, its module and the first bad index (a NaN or Inf in an adapter
 * would otherwise merge into NaN weights with a success code). */
static effml_status check_finite(effml_context *ctx, const char *path, const char *name, size_t module_len_,
                                 const effml_tensor *t) {
  effml_tensor *f = NULL;
  const effml_tensor *x = t;
  if (effml_tensor_dtype(t) != EFFML_F32) {
    effml_status s = effml_tensor_convert(ctx, t, EFFML_F32, &f);
    if (s != EFFML_OK) return s;
    x = f;
  }
  const float *p = (const float *)effml_tensor_data_const(x);
  int64_t n = effml_tensor_numel(x), bad = -1;
  for (int64_t k = 0; k < n && bad < 0; ++k)
    if (!isfinite(p[k])) bad = k;
  double v = bad >= 0 ? (double)p[bad] : 0;
  effml_tensor_free(f);
  if (bad < 0) return EFFML_OK;
  return effml__err(ctx, EFFML_E_INVALID_ARG,
                    "\"%s\": module \"%.*s\": tensor \"%s\" holds a non-finite value (%g at flat index %lld); "
                    "refusing to load it",
                    path, (int)module_len_, name, name, v, (long long)bad);
}

/* Length of the module prefix of `name`, or 0 if no known suffix ends it. */
static size_t module_len(const effml__peft_cfg *c, const char *name) {
  const char *const *suf = c->type == EFFML__PEFT_LOKR   ? LOKR_SUFFIX
                          : c->type == EFFML__PEFT_IA3  ? IA3_SUFFIX
                          : c->type == EFFML__PEFT_LOHA ? LOHA_SUFFIX
                          : c->type == EFFML__PEFT_VERA ? VERA_SUFFIX
                                                        : LORA_SUFFIX;
  size_t ns = c->type == EFFML__PEFT_LOKR ? 6 : c->type == EFFML__PEFT_IA3 ? 1 : c->type == EFFML__PEFT_VERA ? 2 : 4,
         n = strlen(name);
  for (size_t i = 0; i < ns; ++i) {
    size_t k = strlen(suf[i]);
    if (n > k && strcmp(name + n - k, suf[i]) == 0) return n - k;
  }
  return 0;
}

/* 1 if the file holds tensor "<mod><suffix>". */
static int has_tensor(const effml_adapter_peft *a, const char *mod, const char *suffix) {
  size_t k = strlen(mod);
  for (int64_t t = 0; t < effml_safetensors_count(a->st); ++t) {
    const char *name = effml_safetensors_name(a->st, t);
    if (strncmp(name, mod, k) == 0 && strcmp(name + k, suffix) == 0) return 1;
  }
  return 0;
}

/* The first tensor module `mod` needs and the file lacks (its suffix), or NULL: the same
 * tensors effml_adapter_peft_attach() reads, checked at open so that describing an adapter
 * and merging it refuse the same files. */
static const char *missing_tensor(const effml_adapter_peft *a, const char *mod) {
  const effml__peft_cfg *c = a->cfg;
  if (c->type == EFFML__PEFT_LOKR) {
    if (!has_tensor(a, mod, ".lokr_w1") && !has_tensor(a, mod, ".lokr_w1_a")) return ".lokr_w1";
    if (!has_tensor(a, mod, ".lokr_w1") && !has_tensor(a, mod, ".lokr_w1_b")) return ".lokr_w1_b";
    if (!has_tensor(a, mod, ".lokr_w2") && !has_tensor(a, mod, ".lokr_w2_a")) return ".lokr_w2";
    if (!has_tensor(a, mod, ".lokr_w2") && !has_tensor(a, mod, ".lokr_w2_b")) return ".lokr_w2_b";
    return NULL;
  }
  if (c->type == EFFML__PEFT_IA3) return has_tensor(a, mod, ".ia3_l") ? NULL : ".ia3_l";
  const char *const *req = c->type == EFFML__PEFT_LOHA ? LOHA_SUFFIX : c->type == EFFML__PEFT_VERA ? VERA_SUFFIX : LORA_SUFFIX;
  size_t n = c->type == EFFML__PEFT_LOHA ? 4 : 2;
  for (size_t i = 0; i < n; ++i)
    if (!has_tensor(a, mod, req[i])) return req[i];
  if (c->type == EFFML__PEFT_LORA && c->lora_bias && !has_tensor(a, mod, ".lora_B.bias")) return ".lora_B.bias";
  if (c->type == EFFML__PEFT_LORA && c->use_dora && !has_tensor(a, mod, ".lora_magnitude_vector"))
    return ".lora_magnitude_vector";
  return NULL;
}

/* The tensor "<mod><suffix>" of the file, or NULL (the error cleared: missing_tensor() reports it). */
static const effml_tensor *module_tensor(effml_context *ctx, const effml_adapter_peft *a, const char *mod,
                                         const char *suffix, char *key, size_t key_len) {
  const effml_tensor *t = NULL;
  snprintf(key, key_len, "%s%s", mod, suffix);
  if (effml_safetensors_get(ctx, a->st, key, &t) != EFFML_OK) {
    effml_context_clear_error(ctx);
    return NULL;
  }
  return effml_tensor_ndim(t) == 2 ? t : NULL;
}

/* "r=4 in adapter_config.json (no rank_pattern entry for this module)" or
 * "rank_pattern[\"q_proj\"]=4 in adapter_config.json", and the matching fix. */
static void rank_field(const char *pat, int64_t r, char *buf, size_t len, const char **fix) {
  if (pat) {
    snprintf(buf, len, "rank_pattern[\"%s\"]=%lld in adapter_config.json", pat, (long long)r);
    *fix = "fix rank_pattern";
  } else {
    snprintf(buf, len, "r=%lld in adapter_config.json (no rank_pattern entry for this module)", (long long)r);
    *fix = "fix r or add a rank_pattern entry";
  }
}

/* LoKr (PEFT 0.21 LoKrLayer.update_layer): w1 [out_l, in_m] is kept whole unless decompose_both
 * and r < max(out_l, in_m) / 2, when it is w1_a [out_l, r] w1_b [r, in_m]; w2 [out_k, in_n] is
 * factored into w2_a [out_k, r] w2_b [r, in_n] whenever r < max(out_k, in_n) / 2.  So a factor's
 * rank dimension must be the module's r, and whether each of w1 and w2 is whole or factored must
 * be what r (and decompose_both) make PEFT build -- a whole matrix has no rank to compare, but r
 * still decides that it is whole.  The sizes come from the file's own tensors.  EFFML_E_SHAPE
 * naming the tensor and the field to fix (r, the rank_pattern entry, or decompose_both). */
static effml_status check_rank_lokr(effml_context *ctx, const effml_adapter_peft *a, const char *path,
                                    const char *mod) {
  const effml__peft_cfg *c = a->cfg;
  int64_t r = 0;
  double alpha = 0;
  effml__peft_cfg_module(c, mod, &r, &alpha);
  const char *pat = effml__peft_cfg_rank_source(c, mod), *fix = NULL;
  char field[512];
  rank_field(pat, r, field, sizeof field, &fix);
  for (int w = 1; w <= 2; ++w) {
    char kf[1024], ka[1024], kb[1024], sh[96], sfull[16], sa[16], sb[16];
    snprintf(sfull, sizeof sfull, ".lokr_w%d", w);
    snprintf(sa, sizeof sa, ".lokr_w%d_a", w);
    snprintf(sb, sizeof sb, ".lokr_w%d_b", w);
    const effml_tensor *full = module_tensor(ctx, a, mod, sfull, kf, sizeof kf);
    const effml_tensor *fa = module_tensor(ctx, a, mod, sa, ka, sizeof ka);
    const effml_tensor *fb = module_tensor(ctx, a, mod, sb, kb, sizeof kb);
    if (full == NULL && (fa == NULL || fb == NULL)) continue; /* missing_tensor() reports it */
    /* 1. each factor's rank dimension against r (w_a [rows, r], w_b [r, cols]) */
    for (int f = 0; full == NULL && f < 2; ++f) {
      const effml_tensor *t = f == 0 ? fa : fb;
      int64_t k = effml_tensor_dim(t, f == 0 ? 1 : 0);
      if (k == r) continue;
      effml__shape_str(t, sh, sizeof sh);
      return effml__err(ctx, EFFML_E_SHAPE, "\"%s\": module \"%s\": tensor \"%s\" has shape %s (rank %lld), but %s; %s",
                        path, mod, f == 0 ? ka : kb, sh, (long long)k, field, fix);
    }
    /* 2. whole or factored, as r (and decompose_both for w1) make PEFT build it */
    int64_t rows = full ? effml_tensor_dim(full, 0) : effml_tensor_dim(fa, 0);
    int64_t cols = full ? effml_tensor_dim(full, 1) : effml_tensor_dim(fb, 1);
    int64_t mx = rows > cols ? rows : cols;
    int small = (double)r < (double)mx / 2;
    int factored = w == 1 ? c->decompose_both && small : small;
    if (full != NULL && factored) {
      effml__shape_str(full, sh, sizeof sh);
      if (w == 1)
        return effml__err(ctx, EFFML_E_SHAPE,
                          "\"%s\": module \"%s\": \"%s\" is a whole w1 %s, but decompose_both=true with %s makes "
                          "PEFT factor it (r < max(%lld, %lld)/2) into lokr_w1_a/lokr_w1_b; fix decompose_both (false "
                          "keeps w1 whole) or %s",
                          path, mod, kf, sh, field, (long long)rows, (long long)cols, pat ? "rank_pattern" : "r");
      return effml__err(ctx, EFFML_E_SHAPE,
                        "\"%s\": module \"%s\": \"%s\" is a whole w2 %s, but %s makes PEFT factor it "
                        "(r < max(%lld, %lld)/2) into lokr_w2_a/lokr_w2_b; a whole w2 needs r >= %lld: %s",
                        path, mod, kf, sh, field, (long long)rows, (long long)cols, (long long)((mx + 1) / 2), fix);
    }
    if (full == NULL && !factored) {
      effml__shape_str(fa, sh, sizeof sh);
      if (w == 1 && !c->decompose_both)
        return effml__err(ctx, EFFML_E_SHAPE,
                          "\"%s\": module \"%s\": w1 is factored (\"%s\" %s), but decompose_both=false in "
                          "adapter_config.json makes PEFT keep it whole as lokr_w1; fix decompose_both",
                          path, mod, ka, sh);
      /* the factors' rank is r (checked above) and r >= max/2: no r gives these factors */
      return effml__err(ctx, EFFML_E_SHAPE,
                        "\"%s\": module \"%s\": w%d [%lld, %lld] is factored (\"%s\" %s, rank %lld), but PEFT "
                        "factors it only when r < max(%lld, %lld)/2, so no r gives these factors (r=%lld in "
                        "adapter_config.json); save w%d whole as lokr_w%d",
                        path, mod, w, (long long)rows, (long long)cols, ka, sh, (long long)r, (long long)rows,
                        (long long)cols, (long long)r, w, w);
    }
  }
  return EFFML_OK;
}

/* EFFML_OK when the rank dimension of every LoRA / LoHa tensor of module `mod` is the r the
 * config gives it (LoKr: check_rank_lokr()); otherwise EFFML_E_SHAPE naming the tensor, its rank and the config field that
 * disagrees (r, or the rank_pattern entry) -- so that describing an adapter and merging it refuse
 * the same files, and the message names the field to fix. */
static effml_status check_rank(effml_context *ctx, const effml_adapter_peft *a, const char *path, const char *mod) {
  static const char *const LORA_RANK[] = {".lora_A.weight", ".lora_B.weight"};
  static const int LORA_DIM[] = {0, 1};
  static const char *const LOHA_RANK[] = {".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b"};
  static const int LOHA_DIM[] = {1, 0, 1, 0};
  const effml__peft_cfg *c = a->cfg;
  if (c->type == EFFML__PEFT_LOKR) return check_rank_lokr(ctx, a, path, mod);
  const char *const *suf = c->type == EFFML__PEFT_LORA ? LORA_RANK : c->type == EFFML__PEFT_LOHA ? LOHA_RANK : NULL;
  const int *dim = c->type == EFFML__PEFT_LORA ? LORA_DIM : LOHA_DIM;
  size_t ns = c->type == EFFML__PEFT_LORA ? 2 : 4;
  if (suf == NULL) return EFFML_OK;
  int64_t r = 0;
  double alpha = 0;
  effml__peft_cfg_module(c, mod, &r, &alpha);
  const char *pat = effml__peft_cfg_rank_source(c, mod);
  for (size_t i = 0; i < ns; ++i) {
    char key[1024];
    snprintf(key, sizeof key, "%s%s", mod, suf[i]);
    const effml_tensor *t = NULL;
    if (effml_safetensors_get(ctx, a->st, key, &t) != EFFML_OK) {
      effml_context_clear_error(ctx);
      continue; /* missing_tensor() reports it */
    }
    if (effml_tensor_ndim(t) != 2 || effml_tensor_dim(t, dim[i]) == r) continue;
    char sh[96];
    effml__shape_str(t, sh, sizeof sh);
    if (pat)
      return effml__err(ctx, EFFML_E_SHAPE,
                        "\"%s\": module \"%s\": tensor \"%s\" has shape %s (rank %lld), but rank_pattern[\"%s\"]=%lld "
                        "in adapter_config.json gives this module r=%lld; fix rank_pattern",
                        path, mod, key, sh, (long long)effml_tensor_dim(t, dim[i]), pat, (long long)r, (long long)r);
    return effml__err(ctx, EFFML_E_SHAPE,
                      "\"%s\": module \"%s\": tensor \"%s\" has shape %s (rank %lld), but r=%lld in "
                      "adapter_config.json (no rank_pattern entry for this module); fix r or add a rank_pattern entry",
                      path, mod, key, sh, (long long)effml_tensor_dim(t, dim[i]), (long long)r);
  }
  return EFFML_OK;
}

void effml_adapter_peft_free(effml_adapter_peft *a) {
  if (a == NULL) return;
  for (int64_t i = 0; i < a->n; ++i) effml__free(a->ctx, a->modules[i]);
  effml__free(a->ctx, a->modules);
  effml_safetensors_free(a->st);
  effml__peft_cfg_close(a->cfg);
  effml__free(a->ctx, a);
}

/* With a sink, a problem that does not stop the reading (a config key, a tensor, a module) is
 * recorded there and the checks go on; without one the first problem is the result. */
#define NOTE(call)                                              \
  do {                                                          \
    s = (call);                                                 \
    if (s != EFFML_OK && sk != NULL && s != EFFML_E_NOMEM) {    \
      effml__peft_sink_add(sk, effml_context_last_error(ctx));  \
      s = EFFML_OK;                                             \
    }                                                           \
  } while (0)

static effml_status open_impl(effml_context *ctx, const char *dir, effml__peft_sink *sk, effml_adapter_peft **out) {
  effml_adapter_peft *a = (effml_adapter_peft *)effml__calloc_or_err(ctx, 1, sizeof *a, "a PEFT adapter");
  if (a == NULL) return EFFML_E_NOMEM;
  a->ctx = ctx;
  effml_status s =
      effml__peft_cfg_open_collect(ctx, dir, -1, EFFML__PEFT_CAP_DORA | EFFML__PEFT_CAP_LORA_BIAS, sk, &a->cfg);
  size_t plen = strlen(dir) + 32;
  char *path = s == EFFML_OK ? (char *)effml__malloc(ctx, plen) : NULL;
  if (s == EFFML_OK && path == NULL) s = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_peft_open: out of memory");
  if (s == EFFML_OK) {
    snprintf(path, plen, "%s/adapter_model.safetensors", dir);
    s = effml_safetensors_load(ctx, path, EFFML_IO_SAFETENSORS_COPY, &a->st);
  }
  int64_t nt = s == EFFML_OK ? effml_safetensors_count(a->st) : 0;
  if (s == EFFML_OK) {
    a->modules = (char **)effml__calloc(ctx, (size_t)(nt > 0 ? nt : 1), sizeof *a->modules);
    if (a->modules == NULL) s = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_peft_open: out of memory");
  }
  const int32_t ty = a->cfg ? a->cfg->type : 0;
  for (int64_t t = 0; s == EFFML_OK && t < nt; ++t) {
    const char *name = effml_safetensors_name(a->st, t);
    if (ty == EFFML__PEFT_VERA && (strcmp(name, "base_model.vera_A") == 0 || strcmp(name, "base_model.vera_B") == 0)) {
      effml_safetensors_get(ctx, a->st, name, name[16] == 'A' ? &a->vera_A : &a->vera_B);
      NOTE(check_finite(ctx, path, name, strlen(name), name[16] == 'A' ? a->vera_A : a->vera_B));
      continue; /* the shared projections */
    }
    size_t k = module_len(a->cfg, name);
    if (k == 0) {
      NOTE(effml__err(ctx, EFFML_E_UNSUPPORTED, "\"%s\": tensor \"%s\" is not a %s tensor this library reads", path,
                      name,
                      ty == EFFML__PEFT_LOKR   ? "LoKr"
                      : ty == EFFML__PEFT_IA3  ? "IA3"
                      : ty == EFFML__PEFT_LOHA ? "LoHa"
                      : ty == EFFML__PEFT_VERA ? "VeRA"
                                               : "LoRA/DoRA"));
      continue;
    }
    const effml_tensor *tv = NULL;
    s = effml_safetensors_get(ctx, a->st, name, &tv);
    if (s == EFFML_OK) NOTE(check_finite(ctx, path, name, k, tv));
    if (s != EFFML_OK) break;
    int64_t m = 0;
    while (m < a->n && !(strlen(a->modules[m]) == k && strncmp(a->modules[m], name, k) == 0)) ++m;
    if (m == a->n) {
      a->modules[a->n] = (char *)effml__malloc(ctx, k + 1);
      if (a->modules[a->n] == NULL) {
        s = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_peft_open: out of memory");
        break;
      }
      memcpy(a->modules[a->n], name, k);
      a->modules[a->n++][k] = '\0';
    }
  }
  if (s == EFFML_OK && a->n == 0) NOTE(effml__err(ctx, EFFML_E_FORMAT, "\"%s\" holds no adapter tensor", path));
  for (int64_t m = 0; s == EFFML_OK && m < a->n; ++m) { /* the config must target every module of the file */
    const char *field = NULL;
    if (!effml__peft_cfg_targets(a->cfg, a->modules[m], &field)) {
      char b[160];
      NOTE(effml__err(ctx, EFFML_E_UNSUPPORTED,
                      "\"%s\": module \"%s\" is in the file, but %s=%s in adapter_config.json does not target it "
                      "(PEFT would not put an adapter there); fix %s or remove the module's tensors",
                      path, a->modules[m], field, effml__peft_cfg_value(a->cfg, field, b, sizeof b), field));
    }
  }
  for (int64_t m = 0; s == EFFML_OK && m < a->n; ++m) {
    const char *miss = missing_tensor(a, a->modules[m]);
    if (miss)
      NOTE(effml__err(ctx, EFFML_E_NOT_FOUND, "\"%s\": module \"%s\" has no tensor \"%s%s\"", path, a->modules[m],
                      a->modules[m], miss));
    /* the tensors that are there are still checked against r (a list names every problem; check_rank()
     * skips absent tensors); LoKr's whole-or-factored rule needs them all */
    if (s == EFFML_OK && (!miss || ty != EFFML__PEFT_LOKR)) NOTE(check_rank(ctx, a, path, a->modules[m]));
  }
  if (s == EFFML_OK && ty == EFFML__PEFT_VERA && (a->vera_A == NULL || a->vera_B == NULL))
    NOTE(effml__err(ctx, EFFML_E_NOT_FOUND, "\"%s\": missing key \"%s\" (VeRA's shared projection)", path,
                    a->vera_A == NULL ? "base_model.vera_A" : "base_model.vera_B"));
  else if (s == EFFML_OK && ty == EFFML__PEFT_VERA &&
           (effml_tensor_ndim(a->vera_A) != 2 || effml_tensor_ndim(a->vera_B) != 2 ||
            effml_tensor_dim(a->vera_A, 0) != a->cfg->r || effml_tensor_dim(a->vera_B, 1) != a->cfg->r))
    NOTE(effml__err(ctx, EFFML_E_SHAPE, "\"%s\": vera_A must be [r=%lld, max_in] and vera_B [max_out, r]", path,
                    (long long)a->cfg->r));
  effml__free(ctx, path);
  if (s != EFFML_OK && sk != NULL && s != EFFML_E_NOMEM) { /* a problem that stops the reading */
    effml__peft_sink_add(sk, effml_context_last_error(ctx));
    s = EFFML_OK;
  }
  if (s != EFFML_OK || sk != NULL) {
    effml_adapter_peft_free(a);
    return s;
  }
  *out = a;
  return EFFML_OK;
}
#undef NOTE

effml_status effml_adapter_peft_open(effml_context *ctx, const char *dir, effml_adapter_peft **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, dir);
  EFFML__CHECK_NULL(ctx, out);
  return open_impl(ctx, dir, NULL, out);
}

void effml__peft_sink_add(effml__peft_sink *k, const char *msg) {
  size_t n = strlen(msg);
  k->n++;
  if (k->buf == NULL || k->len == 0 || k->used + 1 >= k->len) return;
  size_t room = k->len - k->used - 1, c = n < room ? n : room;
  memcpy(k->buf + k->used, msg, c);
  k->used += c;
  if (k->used + 1 < k->len) k->buf[k->used++] = '\n';
  k->buf[k->used] = '\0';
}

effml_status effml_adapter_peft_problems(effml_context *ctx, const char *dir, char *report, size_t report_len,
                                         int64_t *num_problems) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, dir);
  EFFML__CHECK_NULL(ctx, num_problems);
  effml__peft_sink k = {report, report_len, 0, 0};
  if (report && report_len) report[0] = '\0';
  effml_adapter_peft *unused = NULL;
  EFFML__TRY(open_impl(ctx, dir, &k, &unused));
  *num_problems = k.n;
  return EFFML_OK;
}

const char *effml_adapter_peft_type(const effml_adapter_peft *a) {
  if (a == NULL) return NULL;
  if (a->cfg->type == EFFML__PEFT_IA3) return "IA3";
  if (a->cfg->type == EFFML__PEFT_LOHA) return "LOHA";
  if (a->cfg->type == EFFML__PEFT_VERA) return "VERA";
  return a->cfg->type == EFFML__PEFT_LOKR ? "LOKR" : (a->cfg->use_dora ? "LORA (DoRA)" : "LORA");
}

int64_t effml_adapter_peft_num_modules(const effml_adapter_peft *a) { return a ? a->n : 0; }

const char *effml_adapter_peft_module_name(const effml_adapter_peft *a, int64_t i) {
  return (a && i >= 0 && i < a->n) ? a->modules[i] : NULL;
}

int32_t effml_adapter_peft_module_scales_input(const effml_adapter_peft *a, int64_t i) {
  if (a == NULL || i < 0 || i >= a->n || a->cfg->type != EFFML__PEFT_IA3) return 0;
  return effml__peft_cfg_feedforward(a->cfg, a->modules[i]) ? 1 : 0;
}

int32_t effml_adapter_peft_fan_in_fan_out(const effml_adapter_peft *a) { return a ? a->cfg->fan_in_fan_out : 0; }

int32_t effml_adapter_peft_changes_bias(const effml_adapter_peft *a) {
  return a && a->cfg->type == EFFML__PEFT_LORA && a->cfg->lora_bias;
}

effml_status effml_adapter_peft_dropouts(effml_context *ctx, const effml_adapter_peft *a, double *dropout,
                                         double *rank_dropout, double *module_dropout, int32_t *rank_dropout_scale) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, a);
  const effml__peft_cfg *c = a->cfg;
  int lyco = c->type == EFFML__PEFT_LOKR || c->type == EFFML__PEFT_LOHA;
  /* the values attach() passes to the layers' dropout setters */
  if (dropout) *dropout = c->type == EFFML__PEFT_LORA || c->type == EFFML__PEFT_VERA ? c->dropout : 0.0;
  if (rank_dropout) *rank_dropout = lyco ? c->rank_dropout : 0.0;
  if (module_dropout) *module_dropout = lyco ? c->module_dropout : 0.0;
  if (rank_dropout_scale)
    *rank_dropout_scale = c->type == EFFML__PEFT_LOHA ? 1 : c->type == EFFML__PEFT_LOKR ? c->rank_dropout_scale : 0;
  return EFFML_OK;
}

effml_status effml_adapter_peft_module_info(effml_context *ctx, const effml_adapter_peft *a, int64_t i, int64_t *rank,
                                            double *alpha, int64_t *num_params) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, a);
  if (i < 0 || i >= a->n) return effml__err(ctx, EFFML_E_RANGE, "effml_adapter_peft_module_info: i=%lld out of [0, %lld)",
                                            (long long)i, (long long)a->n);
  int64_t r = 0;
  double al = 0;
  effml__peft_cfg_module(a->cfg, a->modules[i], &r, &al);
  int64_t np = 0;
  size_t k = strlen(a->modules[i]);
  for (int64_t t = 0; t < effml_safetensors_count(a->st); ++t) {
    const char *name = effml_safetensors_name(a->st, t);
    if (strncmp(name, a->modules[i], k) == 0 && module_len(a->cfg, name) == k) {
      const effml_tensor *x = NULL;
      effml_safetensors_get(ctx, a->st, name, &x);
      np += effml_tensor_numel(x);
    }
  }
  if (rank) *rank = r;
  if (alpha) *alpha = al;
  if (num_params) *num_params = np;
  return EFFML_OK;
}

effml_status effml_adapter_peft_attach(effml_context *ctx, const effml_adapter_peft *a, int64_t i, effml_layer *base,
                                       effml_layer **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, a);
  EFFML__CHECK_NULL(ctx, base);
  EFFML__CHECK_NULL(ctx, out);
  if (i < 0 || i >= a->n)
    return effml__err(ctx, EFFML_E_RANGE, "effml_adapter_peft_attach: i=%lld out of [0, %lld)", (long long)i, (long long)a->n);
  const effml__peft_cfg *c = a->cfg;
  effml_layer *l = NULL;
  int64_t r = 0;
  double alpha = 0;
  effml__peft_cfg_module(c, a->modules[i], &r, &alpha);
  if (c->type == EFFML__PEFT_VERA) {
    EFFML__TRY(effml_adapter_vera_create(ctx, base, r, 0.1, &l));
  } else if (c->type == EFFML__PEFT_LOHA) {
    EFFML__TRY(effml_adapter_loha_create(ctx, base, r, alpha, &l));
  } else if (c->type == EFFML__PEFT_IA3) {
    EFFML__TRY(effml_adapter_ia3_create(ctx, base, effml__peft_cfg_feedforward(c, a->modules[i]), &l));
  } else if (c->type == EFFML__PEFT_LOKR) {
    effml_adapter_lokr_options o;
    effml_adapter_lokr_options_init(&o);
    o.rank = r;
    o.alpha = alpha;
    o.decompose_both = c->decompose_both;
    o.decompose_factor = c->decompose_factor;
    EFFML__TRY(effml_adapter_lokr_create(ctx, base, &o, &l));
  } else {
    effml_adapter_lora_options o;
    effml_adapter_lora_options_init(&o);
    o.rank = r;
    o.alpha = alpha;
    o.use_rslora = c->use_rslora;
    o.use_dora = c->use_dora;
    o.lora_bias = c->lora_bias;
    o.dropout = c->dropout;
    EFFML__TRY(effml_adapter_lora_create(ctx, base, &o, &l));
  }
  /* every adapter parameter from the file, shapes checked first (all-or-nothing) */
  effml_status s = EFFML_OK;
  int32_t np = effml_layer_num_params(l);
  const effml_tensor **src = (const effml_tensor **)effml__calloc(ctx, (size_t)np, sizeof *src);
  if (src == NULL) s = effml__err(ctx, EFFML_E_NOMEM, "effml_adapter_peft_attach: out of memory");
  for (int32_t j = 0; s == EFFML_OK && j < np; ++j) {
    const char *pn = effml_layer_param_name(l, j);
    if (strncmp(pn, "base_layer.", 11) == 0) continue;
    if (c->type == EFFML__PEFT_VERA && (strcmp(pn, "vera_A") == 0 || strcmp(pn, "vera_B") == 0)) {
      /* this module's leading slice of the shared projection */
      const effml_tensor *full = pn[5] == 'A' ? a->vera_A : a->vera_B;
      effml_tensor *dst = effml_layer_param(l, j);
      int64_t need = pn[5] == 'A' ? effml_tensor_dim(dst, 1) : effml_tensor_dim(dst, 0);
      int64_t have = pn[5] == 'A' ? effml_tensor_dim(full, 1) : effml_tensor_dim(full, 0);
      if (need > have) {
        s = effml__err(ctx, EFFML_E_SHAPE, "adapter file: \"base_model.%s\" has %lld %s, module \"%s\" needs %lld", pn,
                       (long long)have, pn[5] == 'A' ? "columns (max in_features)" : "rows (max out_features)",
                       a->modules[i], (long long)need);
        break;
      }
      effml_tensor *view = NULL;
      s = effml_tensor_slice(ctx, full, pn[5] == 'A' ? 1 : 0, 0, need, 1, &view);
      if (s == EFFML_OK) s = effml_tensor_copy(ctx, dst, view);
      effml_tensor_free(view);
      continue;
    }
    char key[1024];
    snprintf(key, sizeof key, "%s.%s", a->modules[i], pn);
    if (effml_safetensors_get(ctx, a->st, key, &src[j]) != EFFML_OK) {
      s = effml__err(ctx, EFFML_E_NOT_FOUND, "adapter file: missing key \"%s\"", key);
      break;
    }
    const effml_tensor *dst = effml_layer_param(l, j);
    int same = effml_tensor_ndim(src[j]) == effml_tensor_ndim(dst);
    for (int32_t d = 0; same && d < effml_tensor_ndim(dst); ++d) same = effml_tensor_dim(src[j], d) == effml_tensor_dim(dst, d);
    char x1[96], x2[96];
    if (!same) {
      /* (ranks were checked against r / rank_pattern at open: what differs is in/out.) Blame
       * fan_in_fan_out only when reading the base weight the other way round would make this
       * tensor fit; otherwise the base layer has another size than the adapter's. */
      int64_t bin = effml_layer_in_features(base), bout = effml_layer_out_features(base);
      int swap = bin != bout && effml_tensor_ndim(src[j]) == effml_tensor_ndim(dst);
      for (int32_t d = 0; swap && d < effml_tensor_ndim(dst); ++d) {
        int64_t want = effml_tensor_dim(dst, d), have = effml_tensor_dim(src[j], d);
        if (have != want) swap = (want == bin && have == bout) || (want == bout && have == bin);
      }
      if (swap)
        s = effml__err(ctx, EFFML_E_SHAPE,
                       "adapter file: \"%s\" has shape %s, the base layer needs %s (module \"%s\", fan_in_fan_out=%s: "
                       "the base weight is read as %s; check fan_in_fan_out in adapter_config.json)",
                       key, effml__shape_str(src[j], x1, sizeof x1), effml__shape_str(dst, x2, sizeof x2),
                       a->modules[i], c->fan_in_fan_out ? "true" : "false", c->fan_in_fan_out ? "[in, out]" : "[out, in]");
      else
        s = effml__err(ctx, EFFML_E_SHAPE,
                       "adapter file: \"%s\" has shape %s, the base layer needs %s (module \"%s\": the base layer has "
                       "in_features=%lld, out_features=%lld, another size than the adapter was made for -- not a "
                       "fan_in_fan_out or r question; is this the base model the adapter was trained on?)",
                       key, effml__shape_str(src[j], x1, sizeof x1), effml__shape_str(dst, x2, sizeof x2),
                       a->modules[i], (long long)bin, (long long)bout);
    }
  }
  for (int32_t j = 0; s == EFFML_OK && j < np; ++j)
    if (src[j]) s = effml_tensor_copy(ctx, effml_layer_param(l, j), src[j]);
  effml__free(ctx, src);
  if (s != EFFML_OK) {
    effml__layer_disown(l, base); /* the caller keeps the base on error */
    effml_layer_free(l);
    return s;
  }
  if (c->type == EFFML__PEFT_LOKR) effml__lokr_set_alpha(l, alpha);
  /* the training dropouts (in range: the field table checked them) */
  if (c->type == EFFML__PEFT_LOKR)
    s = effml_adapter_lokr_set_dropout(ctx, l, c->rank_dropout, c->module_dropout, c->rank_dropout_scale);
  else if (c->type == EFFML__PEFT_LOHA)
    s = effml_adapter_loha_set_dropout(ctx, l, c->rank_dropout, c->module_dropout);
  else if (c->type == EFFML__PEFT_VERA)
    s = effml_adapter_vera_set_dropout(ctx, l, c->dropout);
  if (s != EFFML_OK) {
    effml__layer_disown(l, base);
    effml_layer_free(l);
    return s;
  }
  *out = l;
  return EFFML_OK;
}

effml_status effml_adapter_peft_merge_layer(effml_context *ctx, effml_layer *layer) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  if (effml__is_lora(layer)) return effml_adapter_lora_merge(ctx, layer);
  if (effml__is_ia3(layer)) return effml_adapter_ia3_merge(ctx, layer);
  if (effml__is_loha(layer)) return effml_adapter_loha_merge(ctx, layer);
  if (effml__is_vera(layer)) return effml_adapter_vera_merge(ctx, layer);
  if (!effml__is_lokr(layer))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_adapter_peft_merge_layer: not a lora, lokr, loha, ia3 or vera layer");
  effml_layer *base = effml_adapter_lora_base(layer); /* child 0 of LoRA and LoKr alike */
  int32_t iw = -1;
  for (int32_t j = 0; j < effml_layer_num_params(base); ++j)
    if (strcmp(effml_layer_param_name(base, j), "weight") == 0) iw = j;
  effml_tensor *w = effml_layer_param(base, iw), *dw = NULL;
  EFFML__TRY(effml_tensor_create(ctx, EFFML_F32, 2, effml_tensor_shape(w), &dw));
  effml_status s = effml_adapter_lokr_delta_weight(ctx, layer, dw);
  if (s == EFFML_OK) {
    float *W = effml__f32(w);
    const float *D = effml__cf32(dw);
    for (int64_t k = 0; k < effml_tensor_numel(w); ++k) W[k] += D[k];
  }
  effml_tensor_free(dw);
  return s;
}

/* ---- merging straight into a file's tensors ---- */

/* f32 view of an adapter tensor: the tensor itself, or a converted copy in *tmp. */
static const float *as_f32(effml_context *ctx, const effml_tensor *t, effml_tensor **tmp, effml_status *s) {
  *tmp = NULL;
  if (effml_tensor_dtype(t) == EFFML_F32) return (const float *)effml_tensor_data_const(t);
  *s = effml_tensor_convert(ctx, t, EFFML_F32, tmp);
  return *s == EFFML_OK ? (const float *)effml_tensor_data_const(*tmp) : NULL;
}

/* Plain LoRA (no DoRA): W += s B A, b += s lora_B.bias, without building a layer. */
static effml_status merge_lora_direct(effml_context *ctx, const effml_adapter_peft *a, int64_t i, effml_tensor *weight,
                                      effml_tensor *bias, int64_t in, int64_t out) {
  const effml__peft_cfg *c = a->cfg;
  const char *mod = a->modules[i];
  int64_t r = 0;
  double alpha = 0;
  effml__peft_cfg_module(c, mod, &r, &alpha);
  char ka[1024], kb[1024], kbb[1024];
  snprintf(ka, sizeof ka, "%s.lora_A.weight", mod);
  snprintf(kb, sizeof kb, "%s.lora_B.weight", mod);
  snprintf(kbb, sizeof kbb, "%s.lora_B.bias", mod);
  const effml_tensor *A = NULL, *B = NULL, *Bb = NULL;
  EFFML__TRY(effml_safetensors_get(ctx, a->st, ka, &A));
  EFFML__TRY(effml_safetensors_get(ctx, a->st, kb, &B));
  if (c->lora_bias) EFFML__TRY(effml_safetensors_get(ctx, a->st, kbb, &Bb));
  if (effml_tensor_ndim(A) != 2 || effml_tensor_dim(A, 0) != r || effml_tensor_dim(A, 1) != in)
    return effml__err(ctx, EFFML_E_SHAPE,
                      "adapter file: \"%s\" must be [r=%lld, in=%lld] for module \"%s\" (fan_in_fan_out=%s: the base "
                      "weight is read as %s)",
                      ka, (long long)r, (long long)in, mod, c->fan_in_fan_out ? "true" : "false",
                      c->fan_in_fan_out ? "[in, out]" : "[out, in]");
  if (effml_tensor_ndim(B) != 2 || effml_tensor_dim(B, 0) != out || effml_tensor_dim(B, 1) != r)
    return effml__err(ctx, EFFML_E_SHAPE, "adapter file: \"%s\" must be [out=%lld, r=%lld] for module \"%s\"", kb,
                      (long long)out, (long long)r, mod);
  if (Bb && (effml_tensor_ndim(Bb) != 1 || effml_tensor_dim(Bb, 0) != out))
    return effml__err(ctx, EFFML_E_SHAPE, "adapter file: \"%s\" must be [out=%lld]", kbb, (long long)out);
  if (Bb && bias == NULL)
    return effml__err(ctx, EFFML_E_UNSUPPORTED,
                      "module \"%s\": lora_bias cannot be merged: the base has no bias (PEFT refuses too)", mod);
  double scaling = c->use_rslora ? alpha / sqrt((double)r) : alpha / (double)r;
  effml_tensor *ta = NULL, *tb = NULL, *tbb = NULL;
  effml_status s = EFFML_OK;
  const float *Af = as_f32(ctx, A, &ta, &s), *Bf = Af ? as_f32(ctx, B, &tb, &s) : NULL;
  const float *Bbf = (Bf && Bb) ? as_f32(ctx, Bb, &tbb, &s) : NULL;
  float *W = (float *)effml_tensor_data(weight);
  /* W += s B A as one sgemm with beta = 1 straight into the f32 weight (measured against a
   * blocked rank-r loop that streams W once: for 4096 x 4096, r 16, one thread, sgemm took
   * 30-47 ms, the loop 63-107 ms at -O3 and 380 ms at -O2) */
  if (s == EFFML_OK) {
    if (!c->fan_in_fan_out) /* W [out, in] */
      s = effml__sgemm(ctx, CblasNoTrans, CblasNoTrans, out, in, r, (float)scaling, Bf, r, Af, in, 1.0f, W, in);
    else /* W [in, out] += s A^T B^T */
      s = effml__sgemm(ctx, CblasTrans, CblasTrans, in, out, r, (float)scaling, Af, in, Bf, r, 1.0f, W, out);
  }
  if (s == EFFML_OK && Bbf) {
    float *b = (float *)effml_tensor_data(bias);
    for (int64_t o = 0; o < out; ++o) b[o] += (float)scaling * Bbf[o];
  }
  effml_tensor_free(ta);
  effml_tensor_free(tb);
  effml_tensor_free(tbb);
  return s;
}

effml_status effml_adapter_peft_merge_tensors(effml_context *ctx, const effml_adapter_peft *a, int64_t i,
                                              effml_tensor *weight, effml_tensor *bias) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, a);
  EFFML__CHECK_NULL(ctx, weight);
  if (i < 0 || i >= a->n)
    return effml__err(ctx, EFFML_E_RANGE, "effml_adapter_peft_merge_tensors: i=%lld out of [0, %lld)", (long long)i,
                      (long long)a->n);
  const effml__peft_cfg *c = a->cfg;
  const char *mod = a->modules[i];
  char x1[96];
  if (effml_tensor_dtype(weight) != EFFML_F32 || effml_tensor_ndim(weight) != 2 || !effml_tensor_is_contiguous(weight))
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_adapter_peft_merge_tensors: module \"%s\": weight must be a contiguous 2-D f32 tensor, got "
                      "%s %s",
                      mod, effml_tensor_dtype_name(effml_tensor_dtype(weight)), effml__shape_str(weight, x1, sizeof x1));
  int fan = c->fan_in_fan_out;
  int64_t out = effml_tensor_dim(weight, fan ? 1 : 0), in = effml_tensor_dim(weight, fan ? 0 : 1);
  if (bias && (effml_tensor_dtype(bias) != EFFML_F32 || effml_tensor_ndim(bias) != 1 || effml_tensor_dim(bias, 0) != out ||
               !effml_tensor_is_contiguous(bias)))
    return effml__err(ctx, EFFML_E_SHAPE,
                      "effml_adapter_peft_merge_tensors: module \"%s\": bias must be a contiguous f32 [%lld] (the "
                      "weight's out_features with fan_in_fan_out=%s), got %s",
                      mod, (long long)out, fan ? "true" : "false", effml__shape_str(bias, x1, sizeof x1));
  if (c->type == EFFML__PEFT_LORA && !c->use_dora) return merge_lora_direct(ctx, a, i, weight, bias, in, out);
  /* every other type: its layer around a base made from these tensors (no random init), merged, copied back */
  effml_layer *base = NULL, *l = NULL;
  EFFML__TRY(fan ? effml__conv1d_create_uninit(ctx, in, out, bias != NULL, &base)
                 : effml__layer_dense_create_uninit(ctx, in, out, bias != NULL, &base));
  int32_t iw = -1, ib = -1;
  for (int32_t j = 0; j < effml_layer_num_params(base); ++j) {
    if (strcmp(effml_layer_param_name(base, j), "weight") == 0) iw = j;
    if (strcmp(effml_layer_param_name(base, j), "bias") == 0) ib = j;
  }
  effml_tensor *bw = effml_layer_param(base, iw), *bb = ib >= 0 ? effml_layer_param(base, ib) : NULL;
  size_t wbytes = (size_t)effml_tensor_numel(weight) * sizeof(float);
  memcpy(effml_tensor_data(bw), effml_tensor_data_const(weight), wbytes);
  if (bb) memcpy(effml_tensor_data(bb), effml_tensor_data_const(bias), (size_t)out * sizeof(float));
  effml_status s = effml_adapter_peft_attach(ctx, a, i, base, &l);
  if (s != EFFML_OK) {
    effml_layer_free(base);
    return s;
  }
  s = effml_adapter_peft_merge_layer(ctx, l);
  if (s == EFFML_OK) {
    memcpy(effml_tensor_data(weight), effml_tensor_data_const(bw), wbytes);
    if (bb) memcpy(effml_tensor_data(bias), effml_tensor_data_const(bb), (size_t)out * sizeof(float));
  }
  effml_layer_free(l);
  return s;
}
