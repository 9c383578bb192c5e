/* PEFT 0.21 LoRA-family adapters against files written by PEFT itself
 * (tests/data/peft/<case>/, see its README): outputs, input gradients,
 * every adapter-parameter gradient and merged weights equal PEFT's to f32
 * tolerance; every adapter_config.json value we cannot honour, and every
 * tensor no module consumes, is an error naming it, with the layers left
 * unchanged. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#define PEFT_DIR EFFML_TEST_DATA "/peft"

static int32_t pidx(effml_layer *l, const char *name) {
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
    if (strcmp(effml_layer_param_name(l, i), name) == 0) return i;
  return -1;
}

static effml_safetensors *open_st(effml_context *ctx, const char *dir, const char *file) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, file);
  struct stat sb;
  if (stat(p, &sb) != 0) return NULL;
  effml_safetensors *st = NULL;
  ck_assert_msg(effml_safetensors_load(ctx, p, EFFML_IO_SAFETENSORS_COPY, &st) == EFFML_OK, "%s: %s", p,
                effml_context_last_error(ctx));
  return st;
}

static const effml_tensor *get(effml_context *ctx, const effml_safetensors *st, const char *fmt, const char *m) {
  char k[256];
  snprintf(k, sizeof k, fmt, m);
  const effml_tensor *t = NULL;
  ck_assert_msg(effml_safetensors_get(ctx, st, k, &t) == EFFML_OK, "missing %s", k);
  return t;
}

/* max |a - b| / (1 + |b|) over the tensor: f32 tolerance on O(1) values */
static void expect_close(const char *what, const float *a, const effml_tensor *ref, double tol) {
  const float *b = (const float *)effml_tensor_data_const(ref);
  double worst = 0;
  int64_t at = 0;
  for (int64_t i = 0; i < effml_tensor_numel(ref); ++i) {
    double e = fabs((double)a[i] - (double)b[i]) / (1.0 + fabs((double)b[i]));
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  ck_assert_msg(worst <= tol, "%s: rel. error %.3g at %lld (ours %.8g, PEFT %.8g)", what, worst, (long long)at,
                (double)a[at], (double)b[at]);
}

/* A dense layer holding base.safetensors' "<m>.weight" [out, in] (and bias). With
 * transpose, the file holds [in, out] (GPT-2 Conv1D) and is transposed here. */
static effml_layer *dense_from_base(effml_context *ctx, const effml_safetensors *base, const char *m, int transpose) {
  const effml_tensor *w = get(ctx, base, "%s.weight", m);
  char kb[256];
  snprintf(kb, sizeof kb, "%s.bias", m);
  const effml_tensor *b = NULL;
  int has_bias = effml_safetensors_get(ctx, base, kb, &b) == EFFML_OK;
  int64_t out = effml_tensor_dim(w, transpose ? 1 : 0), in = effml_tensor_dim(w, transpose ? 0 : 1);
  effml_layer *d = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, in, out, has_bias, &d), EFFML_OK);
  float *W = (float *)effml_tensor_data(effml_layer_param(d, pidx(d, "weight")));
  const float *src = (const float *)effml_tensor_data_const(w);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) W[o * in + i] = transpose ? src[i * out + o] : src[o * in + i];
  if (has_bias) ck_assert_int_eq(effml_tensor_copy(ctx, effml_layer_param(d, pidx(d, "bias")), b), EFFML_OK);
  return d;
}

/* GPT-2 Conv1D base holding base.safetensors' "<m>.weight" [in, out] as stored. */
static effml_layer *conv1d_from_base(effml_context *ctx, const effml_safetensors *base, const char *m) {
  const effml_tensor *w = get(ctx, base, "%s.weight", m), *b = get(ctx, base, "%s.bias", m);
  effml_layer *d = NULL;
  ck_assert_int_eq(effml_adapter_conv1d_create(ctx, effml_tensor_dim(w, 0), effml_tensor_dim(w, 1), 1, &d), EFFML_OK);
  ck_assert_int_eq(effml_tensor_copy(ctx, effml_layer_param(d, pidx(d, "weight")), w), EFFML_OK);
  ck_assert_int_eq(effml_tensor_copy(ctx, effml_layer_param(d, pidx(d, "bias")), b), EFFML_OK);
  return d;
}

enum { BASE_DENSE, BASE_DENSE_TRANSPOSED_BY_HAND, BASE_CONV1D };

typedef struct lora_case {
  const char *name;
  int nmods;
  const char *mods[2];
  int base_kind;
} lora_case;

static effml_tensor *new2(effml_context *ctx, int64_t r, int64_t c) {
  int64_t s[2] = {r, c};
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, s, &t), EFFML_OK);
  return t;
}

/* The base weight of l in the file's layout ([out, in], or [in, out] for Conv1D cases). */
static float *weight_as_file(effml_layer *l, int file_transposed) {
  effml_layer *base = effml_adapter_lora_base(l);
  const float *W = effml_tensor_data(effml_layer_param(l, pidx(l, "base_layer.weight")));
  int64_t out = effml_layer_out_features(l), in = effml_layer_in_features(l);
  int stored_t = strcmp(effml_layer_kind(base), "conv1d") == 0;
  float *Wf = (float *)malloc((size_t)(out * in) * sizeof(float));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t k = 0; k < in; ++k)
      Wf[file_transposed ? k * out + o : o * in + k] = stored_t ? W[k * out + o] : W[o * in + k];
  return Wf;
}

/* Save the loaded layers in PEFT's layout, read them back into fresh layers made from the saved
 * config: the same options per module, the same tensors bit for bit, PEFT's key names. */
static void roundtrip(effml_context *ctx, const lora_case *c, effml_layer **l, const char **mn,
                      const effml_adapter_lora_options *o, const effml_safetensors *base) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/peft_rt_%s_%d", EFFML_TEST_TMP, c->name, c->base_kind);
  mkdir(dir, 0755);
  ck_assert_msg(effml_adapter_lora_save_peft(ctx, dir, c->nmods, l, mn, "tiny") == EFFML_OK, "%s", effml_context_last_error(ctx));
  effml_layer *m[2] = {NULL, NULL};
  for (int i = 0; i < c->nmods; ++i) {
    effml_adapter_lora_options q;
    ck_assert_msg(effml_adapter_lora_peft_options(ctx, dir, mn[i], &q) == EFFML_OK, "%s", effml_context_last_error(ctx));
    ck_assert_int_eq(q.rank, o[i].rank);
    ck_assert(q.alpha == o[i].alpha && q.use_rslora == o[i].use_rslora && q.use_dora == o[i].use_dora &&
              q.lora_bias == o[i].lora_bias && q.dropout == o[i].dropout);
    effml_layer *b = c->base_kind == BASE_CONV1D ? conv1d_from_base(ctx, base, c->mods[i])
                                                  : dense_from_base(ctx, base, c->mods[i], c->base_kind != BASE_DENSE);
    ck_assert_int_eq(effml_adapter_lora_create(ctx, b, &q, &m[i]), EFFML_OK);
  }
  ck_assert_msg(effml_adapter_lora_load_peft(ctx, dir, c->nmods, m, mn) == EFFML_OK, "%s", effml_context_last_error(ctx));
  char path[600];
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  effml_safetensors *st = open_st(ctx, dir, "adapter_model.safetensors");
  int64_t expect = 0;
  for (int i = 0; i < c->nmods; ++i) {
    ck_assert(effml_adapter_lora_scaling(m[i]) == effml_adapter_lora_scaling(l[i]));
    for (int32_t p = 0; p < effml_layer_num_params(l[i]); ++p) {
      const char *pn = effml_layer_param_name(l[i], p);
      if (strncmp(pn, "base_layer.", 11) == 0) continue;
      effml_tensor *a = effml_layer_param(l[i], p), *b = effml_layer_param(m[i], pidx(m[i], pn));
      ck_assert(memcmp(effml_tensor_data_const(a), effml_tensor_data_const(b), effml_tensor_nbytes(a)) == 0);
      char key[256];
      snprintf(key, sizeof key, "%s.%s", mn[i], pn); /* PEFT's saved name */
      const effml_tensor *t = NULL;
      ck_assert_msg(effml_safetensors_get(ctx, st, key, &t) == EFFML_OK, "saved file lacks %s", key);
      ++expect;
    }
    effml_layer_free(m[i]);
  }
  ck_assert_int_eq(effml_safetensors_count(st), expect);
  ck_assert_str_eq(effml_safetensors_metadata(st, "format"), "pt");
  effml_safetensors_free(st);
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  size_t len = 0;
  unsigned char *raw = tu_read_file(path, &len);
  char *txt = (char *)calloc(len + 1, 1);
  memcpy(txt, raw, len);
  free(raw);
  ck_assert(strstr(txt, c->base_kind == BASE_CONV1D ? "\"fan_in_fan_out\":\ttrue" : "\"fan_in_fan_out\":\tfalse") != NULL);
  free(txt);
}

/* Load the case, check y (inference), dx and parameter grads (training), merged weights, unmerge. */
static void run_lora_case(const lora_case *c) {
  effml_context *ctx = tu_ctx(7);
  char dir[256];
  snprintf(dir, sizeof dir, "%s/%s", PEFT_DIR, c->name);
  effml_safetensors *base = open_st(ctx, dir, "base.safetensors"), *io = open_st(ctx, dir, "io.safetensors"),
                    *grads = open_st(ctx, dir, "grads.safetensors"), *merged = open_st(ctx, dir, "merged.safetensors");
  effml_layer *l[2] = {NULL, NULL};
  char names[2][128];
  const char *mn[2];
  effml_adapter_lora_options o[2];
  for (int i = 0; i < c->nmods; ++i) {
    snprintf(names[i], sizeof names[i], "base_model.model.%s", c->mods[i]);
    mn[i] = names[i];
    ck_assert_msg(effml_adapter_lora_peft_options(ctx, dir, mn[i], &o[i]) == EFFML_OK, "%s", effml_context_last_error(ctx));
    effml_layer *b = c->base_kind == BASE_CONV1D ? conv1d_from_base(ctx, base, c->mods[i])
                                                  : dense_from_base(ctx, base, c->mods[i], c->base_kind != BASE_DENSE);
    ck_assert_msg(effml_adapter_lora_create(ctx, b, &o[i], &l[i]) == EFFML_OK, "%s", effml_context_last_error(ctx));
  }
  ck_assert_msg(effml_adapter_lora_load_peft(ctx, dir, c->nmods, l, mn) == EFFML_OK, "%s: %s", c->name,
                effml_context_last_error(ctx));
  int file_t = c->base_kind != BASE_DENSE;
  roundtrip(ctx, c, l, mn, o, base);
  for (int i = 0; i < c->nmods; ++i) {
    const char *m = c->mods[i];
    const effml_tensor *x = get(ctx, io, "%s.x", m), *y = get(ctx, io, "%s.y", m), *g = get(ctx, io, "%s.g", m),
                       *dx = get(ctx, io, "%s.dx", m);
    int64_t b = effml_tensor_dim(x, 0);
    effml_tensor *yo = new2(ctx, b, effml_tensor_dim(y, 1)), *dxo = new2(ctx, b, effml_tensor_dim(x, 1));
    char what[320]; /* room for a 256-byte key */
    ck_assert_int_eq(effml_layer_forward(ctx, l[i], x, yo, EFFML_LAYER_MODE_INFER), EFFML_OK);
    snprintf(what, sizeof what, "%s %s y", c->name, m);
    expect_close(what, effml_tensor_data(yo), y, 2e-6);
    if (o[i].dropout > 0) {
      /* the loader set PEFT's lora_dropout: a training forward differs; PEFT's fixture
       * gradients are taken without dropout, so turn it off to compare them */
      ck_assert(effml_adapter_lora_dropout(l[i]) == o[i].dropout);
      ck_assert_int_eq(effml_layer_forward(ctx, l[i], x, yo, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
      ck_assert(tu_max_abs_diff_f32(effml_tensor_data(yo), effml_tensor_data_const(y), effml_tensor_numel(y)) > 1e-3);
      ck_assert_int_eq(effml_layer_backward(ctx, l[i], g, dxo), EFFML_OK);
      ck_assert_int_eq(effml_adapter_lora_set_dropout(ctx, l[i], 0.0), EFFML_OK);
    }
    effml_layer_zero_grad(l[i]);
    ck_assert_int_eq(effml_layer_forward(ctx, l[i], x, yo, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
    expect_close(what, effml_tensor_data(yo), y, 2e-6);
    ck_assert_int_eq(effml_layer_backward(ctx, l[i], g, dxo), EFFML_OK);
    snprintf(what, sizeof what, "%s %s dx", c->name, m);
    expect_close(what, effml_tensor_data(dxo), dx, 2e-6);
    int checked = 0;
    for (int32_t p = 0; p < effml_layer_num_params(l[i]); ++p) {
      if (!effml_layer_param_trainable(l[i], p)) continue;
      const char *pn = effml_layer_param_name(l[i], p);
      char key[256];
      snprintf(key, sizeof key, "%s.%s", mn[i], pn);
      const effml_tensor *ref = NULL;
      ck_assert_msg(effml_safetensors_get(ctx, grads, key, &ref) == EFFML_OK, "no PEFT gradient for %s", key);
      snprintf(what, sizeof what, "%s grad %s", c->name, key);
      expect_close(what, effml_tensor_data(effml_layer_param_grad(l[i], p)), ref, 5e-6);
      ++checked;
    }
    ck_assert_int_eq(checked, 2 + (o[i].use_dora != 0) + (o[i].lora_bias != 0));
    /* merge: PEFT's merged weights where it could merge; our refusal where it could not */
    char kb[160];
    snprintf(kb, sizeof kb, "%s.bias", m);
    const effml_tensor *bref = NULL;
    int base_bias = effml_safetensors_get(ctx, base, kb, &bref) == EFFML_OK;
    if (o[i].lora_bias && !base_bias) {
      ck_assert_int_eq(effml_adapter_lora_merge(ctx, l[i]), EFFML_E_UNSUPPORTED);
      ck_assert(strstr(effml_context_last_error(ctx), "lora_B.bias") != NULL);
    } else {
      float *W0 = weight_as_file(l[i], file_t);
      ck_assert_int_eq(effml_adapter_lora_merge(ctx, l[i]), EFFML_OK);
      if (merged) {
        float *Wf = weight_as_file(l[i], file_t);
        snprintf(what, sizeof what, "%s %s merged weight", c->name, m);
        expect_close(what, Wf, get(ctx, merged, "%s.weight", m), 2e-6);
        free(Wf);
        if (base_bias) {
          snprintf(what, sizeof what, "%s %s merged bias", c->name, m);
          expect_close(what, effml_tensor_data(effml_layer_param(l[i], pidx(l[i], "base_layer.bias"))),
                       get(ctx, merged, "%s.bias", m), 2e-6);
        }
      }
      ck_assert_int_eq(effml_layer_forward(ctx, l[i], x, yo, EFFML_LAYER_MODE_INFER), EFFML_OK);
      snprintf(what, sizeof what, "%s %s merged y", c->name, m);
      expect_close(what, effml_tensor_data(yo), y, 5e-6);
      if (o[i].use_dora) /* a merged DoRA layer cannot train */
        ck_assert_int_eq(effml_layer_forward(ctx, l[i], x, yo, EFFML_LAYER_MODE_TRAIN), EFFML_E_STATE);
      ck_assert_int_eq(effml_adapter_lora_unmerge(ctx, l[i]), EFFML_OK);
      float *W1 = weight_as_file(l[i], file_t);
      ck_assert_msg(tu_max_abs_diff_f32(W0, W1, effml_layer_out_features(l[i]) * effml_layer_in_features(l[i])) < 1e-6,
                    "%s %s: unmerge does not restore W", c->name, m);
      free(W0);
      free(W1);
      ck_assert_int_eq(effml_layer_forward(ctx, l[i], x, yo, EFFML_LAYER_MODE_INFER), EFFML_OK);
      snprintf(what, sizeof what, "%s %s unmerged y", c->name, m);
      expect_close(what, effml_tensor_data(yo), y, 5e-6);
    }
    effml_tensor_free(yo);
    effml_tensor_free(dxo);
  }
  for (int i = 0; i < c->nmods; ++i) effml_layer_free(l[i]);
  effml_safetensors_free(base);
  effml_safetensors_free(io);
  effml_safetensors_free(grads);
  effml_safetensors_free(merged);
  effml_context_free(ctx);
}

#define QV {"q_proj", "v_proj"}
START_TEST(test_lora) {
  lora_case c = {"lora", 2, QV, BASE_DENSE};
  run_lora_case(&c);
}
END_TEST

START_TEST(test_lora_rslora) {
  lora_case c = {"lora_rslora", 2, QV, BASE_DENSE};
  run_lora_case(&c);
}
END_TEST

START_TEST(test_lora_rank_alpha_pattern) {
  /* rank_pattern {"v_proj": 2}, alpha_pattern {"v_proj": 6}: v_proj scaling 3, q_proj 2 */
  lora_case c = {"lora_rank_alpha_pattern", 2, QV, BASE_DENSE};
  run_lora_case(&c);
}
END_TEST

START_TEST(test_lora_dropout) {
  lora_case c = {"lora_dropout", 2, QV, BASE_DENSE};
  run_lora_case(&c);
}
END_TEST

START_TEST(test_lora_bias) {
  lora_case c = {"lora_bias", 2, QV, BASE_DENSE};
  run_lora_case(&c);
}
END_TEST

START_TEST(test_dora) {
  lora_case c = {"dora", 2, QV, BASE_DENSE};
  run_lora_case(&c);
}
END_TEST

START_TEST(test_dora_rslora) {
  lora_case c = {"dora_rslora", 2, QV, BASE_DENSE};
  run_lora_case(&c);
}
END_TEST

START_TEST(test_lora_conv1d) {
  lora_case c = {"lora_conv1d_fan_in_fan_out", 1, {"c_attn", NULL}, BASE_CONV1D};
  run_lora_case(&c);
}
END_TEST

START_TEST(test_lora_conv1d_transposed_by_hand) {
  lora_case c = {"lora_conv1d_fan_in_fan_out", 1, {"c_attn", NULL}, BASE_DENSE_TRANSPOSED_BY_HAND};
  run_lora_case(&c);
}
END_TEST

/* ---- refusals ---- */

static void copy_file(const char *from, const char *to) {
  size_t len = 0;
  unsigned char *b = tu_read_file(from, &len);
  ck_assert_msg(b != NULL, "cannot read %s", from);
  FILE *f = fopen(to, "wb");
  ck_assert(f != NULL);
  ck_assert(fwrite(b, 1, len, f) == len);
  fclose(f);
  free(b);
}

/* TMP/<tag>: case `from` with `old` replaced by `repl` in adapter_config.json. */
static const char *variant(const char *from, const char *tag, const char *old, const char *repl) {
  static char dir[512];
  char p[700], q[700];
  snprintf(dir, sizeof dir, "%s/peft_%s", EFFML_TEST_TMP, tag);
  mkdir(dir, 0755);
  snprintf(p, sizeof p, "%s/%s/adapter_model.safetensors", PEFT_DIR, from);
  snprintf(q, sizeof q, "%s/adapter_model.safetensors", dir);
  copy_file(p, q);
  snprintf(p, sizeof p, "%s/%s/adapter_config.json", PEFT_DIR, from);
  size_t len = 0;
  unsigned char *raw = tu_read_file(p, &len);
  ck_assert(raw != NULL);
  char *txt = (char *)malloc(len + 1); /* tu_read_file does not NUL-terminate */
  memcpy(txt, raw, len);
  txt[len] = '\0';
  free(raw);
  char *at = strstr(txt, old);
  ck_assert_msg(at != NULL, "%s not in %s", old, p);
  snprintf(q, sizeof q, "%s/adapter_config.json", dir);
  FILE *f = fopen(q, "wb");
  fwrite(txt, 1, (size_t)(at - txt), f);
  fputs(repl, f);
  fputs(at + strlen(old), f);
  fclose(f);
  free(txt);
  return dir;
}

/* One more edit of `dir`/adapter_config.json (a variant() directory), in place. */
static const char *variant_more(const char *dir, const char *old, const char *repl) {
  char p[700];
  snprintf(p, sizeof p, "%s/adapter_config.json", dir);
  size_t len = 0;
  unsigned char *raw = tu_read_file(p, &len);
  ck_assert(raw != NULL);
  char *txt = (char *)malloc(len + 1);
  memcpy(txt, raw, len);
  txt[len] = '\0';
  free(raw);
  char *at = strstr(txt, old);
  ck_assert_msg(at != NULL, "%s not in %s", old, p);
  FILE *f = fopen(p, "wb");
  fwrite(txt, 1, (size_t)(at - txt), f);
  fputs(repl, f);
  fputs(at + strlen(old), f);
  fclose(f);
  free(txt);
  return dir;
}

/* Module 0 of `vdir` (a variant of fixture `from` whose config sets training dropouts),
 * attached to its base.  PEFT's eval mode ignores the dropouts, so inference must still give
 * the fixture's output. */
static effml_layer *attach_variant0(effml_context *ctx, const char *from, const char *vdir) {
  char dir[256];
  snprintf(dir, sizeof dir, "%s/%s", PEFT_DIR, from);
  effml_safetensors *base = open_st(ctx, dir, "base.safetensors"), *io = open_st(ctx, dir, "io.safetensors");
  effml_adapter_peft *a = NULL;
  ck_assert_msg(effml_adapter_peft_open(ctx, vdir, &a) == EFFML_OK, "%s", effml_context_last_error(ctx));
  const char *m = effml_adapter_peft_module_name(a, 0) + strlen("base_model.model.");
  effml_layer *l = NULL;
  ck_assert_msg(effml_adapter_peft_attach(ctx, a, 0, dense_from_base(ctx, base, m, 0), &l) == EFFML_OK, "%s",
                effml_context_last_error(ctx));
  const effml_tensor *x = get(ctx, io, "%s.x", m), *y = get(ctx, io, "%s.y", m);
  effml_tensor *yo = new2(ctx, 5, effml_layer_out_features(l));
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, yo, EFFML_LAYER_MODE_INFER), EFFML_OK);
  char what[300];
  snprintf(what, sizeof what, "%s with training dropouts, inference y", from);
  expect_close(what, effml_tensor_data(yo), y, 2e-6);
  effml_tensor_free(yo);
  effml_adapter_peft_free(a);
  effml_safetensors_free(base);
  effml_safetensors_free(io);
  return l;
}

typedef struct pair {
  effml_context *ctx;
  effml_layer *l[2];
  const char *mn[2];
  float keep_a[4 * 40], keep_b[24 * 4];
  double keep_s;
} pair;

static void pair_make(pair *p, int64_t r0, int64_t r1) {
  p->ctx = tu_ctx(9);
  int64_t in[2] = {40, 24}, out[2] = {24, 16}, r[2] = {r0, r1};
  for (int i = 0; i < 2; ++i) {
    effml_layer *d = NULL;
    ck_assert_int_eq(effml_layer_dense_create(p->ctx, in[i], out[i], i == 0, &d), EFFML_OK);
    effml_adapter_lora_options o;
    effml_adapter_lora_options_init(&o);
    o.rank = r[i];
    ck_assert_int_eq(effml_adapter_lora_create(p->ctx, d, &o, &p->l[i]), EFFML_OK);
  }
  p->mn[0] = "base_model.model.q_proj";
  p->mn[1] = "base_model.model.v_proj";
  memcpy(p->keep_a, effml_tensor_data(effml_layer_param(p->l[0], pidx(p->l[0], "lora_A.weight"))), sizeof p->keep_a);
  memcpy(p->keep_b, effml_tensor_data(effml_layer_param(p->l[0], pidx(p->l[0], "lora_B.weight"))), sizeof p->keep_b);
  p->keep_s = effml_adapter_lora_scaling(p->l[0]);
}

/* The load must fail with `code`, the message must contain `needle`, layer 0 unchanged. */
static void expect_refused(pair *p, const char *dir, int64_t n, effml_status code, const char *needle) {
  effml_status s = effml_adapter_lora_load_peft(p->ctx, dir, n, p->l, p->mn);
  const char *msg = effml_context_last_error(p->ctx);
  ck_assert_msg(s == code, "%s: got %d (%s), expected %d", dir, (int)s, msg, (int)code);
  ck_assert_msg(strstr(msg, needle) != NULL, "message \"%s\" does not name \"%s\"", msg, needle);
  ck_assert(memcmp(p->keep_a, effml_tensor_data(effml_layer_param(p->l[0], pidx(p->l[0], "lora_A.weight"))),
                   sizeof p->keep_a) == 0);
  ck_assert(memcmp(p->keep_b, effml_tensor_data(effml_layer_param(p->l[0], pidx(p->l[0], "lora_B.weight"))),
                   sizeof p->keep_b) == 0);
  ck_assert(effml_adapter_lora_scaling(p->l[0]) == p->keep_s);
}

static void pair_free(pair *p) {
  effml_layer_free(p->l[0]);
  effml_layer_free(p->l[1]);
  effml_context_free(p->ctx);
}

START_TEST(test_refuse_config_values) {
  pair p;
  pair_make(&p, 4, 4);
  expect_refused(&p, variant("lora", "bias_all", "\"bias\": \"none\"", "\"bias\": \"all\""), 2, EFFML_E_UNSUPPORTED,
                 "bias=\"all\"");
  expect_refused(&p, variant("lora", "pissa", "\"init_lora_weights\": false", "\"init_lora_weights\": \"pissa\""), 2,
                 EFFML_E_UNSUPPORTED, "init_lora_weights=\"pissa\"");
  expect_refused(&p, variant("lora", "olora", "\"init_lora_weights\": false", "\"init_lora_weights\": \"olora\""), 2,
                 EFFML_E_UNSUPPORTED, "init_lora_weights=\"olora\"");
  expect_refused(&p, variant("lora", "mts", "\"modules_to_save\": null", "\"modules_to_save\": [\"classifier\"]"), 2,
                 EFFML_E_UNSUPPORTED, "modules_to_save=[\"classifier\"]");
  expect_refused(&p, variant("lora", "ttok", "\"trainable_token_indices\": null", "\"trainable_token_indices\": [1, 2]"),
                 2, EFFML_E_UNSUPPORTED, "trainable_token_indices=[1,2]");
  expect_refused(&p, variant("lora", "repl", "\"layer_replication\": null", "\"layer_replication\": [[0, 1]]"), 2,
                 EFFML_E_UNSUPPORTED, "layer_replication=[[0,1]]");
  expect_refused(&p, variant("lora", "tparam", "\"target_parameters\": null", "\"target_parameters\": [\"experts\"]"), 2,
                 EFFML_E_UNSUPPORTED, "target_parameters");
  expect_refused(&p, variant("lora", "alora", "\"alora_invocation_tokens\": null", "\"alora_invocation_tokens\": [5]"), 2,
                 EFFML_E_UNSUPPORTED, "alora_invocation_tokens=[5]");
  expect_refused(&p, variant("lora", "qalora", "\"use_qalora\": false", "\"use_qalora\": true"), 2, EFFML_E_UNSUPPORTED,
                 "use_qalora=true");
  expect_refused(&p, variant("lora", "unknown", "\"alpha_pattern\": {},", "\"alpha_pattern\": {}, \"use_magic\": 3,"),
                 2, EFFML_E_UNSUPPORTED, "use_magic=3");
  expect_refused(&p, variant("lora", "ptype", "\"peft_type\": \"LORA\"", "\"peft_type\": \"BOFT\""), 2,
                 EFFML_E_UNSUPPORTED, "peft_type=\"BOFT\"");
  expect_refused(&p, variant("lora", "dropout", "\"lora_dropout\": 0.0", "\"lora_dropout\": 1.5"), 2, EFFML_E_FORMAT,
                 "lora_dropout=1.5");
  expect_refused(&p, variant("lora", "rx", "\"rank_pattern\": {}", "\"rank_pattern\": {\"layers\\\\.\\\\d+\": 2}"), 2,
                 EFFML_E_UNSUPPORTED, "rank_pattern");
  expect_refused(&p, variant("lora", "nor", "\"r\": 4,", ""), 2, EFFML_E_FORMAT, "\"r\" is missing");
  /* accepted: unknown keys at null/false/{}; informational keys with any value */
  const char *ok = variant("lora", "okunknown", "\"alpha_pattern\": {},",
                           "\"alpha_pattern\": {}, \"future_flag\": false, \"future_cfg\": null,");
  ck_assert_msg(effml_adapter_lora_load_peft(p.ctx, ok, 2, p.l, p.mn) == EFFML_OK, "%s", effml_context_last_error(p.ctx));
  ok = variant("lora", "okinfo", "\"base_model_name_or_path\": null", "\"base_model_name_or_path\": \"meta/x\"");
  ck_assert_msg(effml_adapter_lora_load_peft(p.ctx, ok, 2, p.l, p.mn) == EFFML_OK, "%s", effml_context_last_error(p.ctx));
  pair_free(&p);
}
END_TEST

START_TEST(test_refuse_tensors) {
  pair p;
  pair_make(&p, 4, 4);
  /* only q_proj given: v_proj's tensors are stray */
  expect_refused(&p, PEFT_DIR "/lora", 1, EFFML_E_UNSUPPORTED, "base_model.model.v_proj.lora_A.weight");
  /* rank disagreeing with the layer */
  pair q;
  pair_make(&q, 4, 2);
  expect_refused(&q, PEFT_DIR "/lora", 2, EFFML_E_SHAPE, "v_proj");
  pair_free(&q);
  /* a rank_pattern the file's tensors contradict: v_proj layer rank 2 (from the pattern) but tensors of rank 4 */
  pair_make(&q, 4, 2);
  expect_refused(&q, variant("lora", "rp_lie", "\"rank_pattern\": {}", "\"rank_pattern\": {\"v_proj\": 2}"), 2,
                 EFFML_E_SHAPE, "v_proj.lora_A.weight");
  pair_free(&q);
  /* config r = 2 for v_proj against a rank-4 layer */
  pair_make(&q, 4, 4);
  expect_refused(&q, PEFT_DIR "/lora_rank_alpha_pattern", 2, EFFML_E_SHAPE, "r=2");
  pair_free(&q);
  /* DoRA / lora_bias files into plain LoRA layers: the layers disagree with the config */
  expect_refused(&p, PEFT_DIR "/dora", 2, EFFML_E_INVALID_ARG, "use_dora=true");
  expect_refused(&p, PEFT_DIR "/lora_bias", 2, EFFML_E_INVALID_ARG, "lora_bias=true");
  /* their tensors in a file whose config says otherwise: stray */
  expect_refused(&p, variant("dora", "dora_lie", "\"use_dora\": true", "\"use_dora\": false"), 2,
                 EFFML_E_UNSUPPORTED, "lora_magnitude_vector");
  expect_refused(&p, variant("lora_bias", "bias_lie", "\"lora_bias\": true", "\"lora_bias\": false"), 2,
                 EFFML_E_UNSUPPORTED, "lora_B.bias");
  pair_free(&p);
}
END_TEST

/* ---- dropout in training (PEFT's lora_dropout: x dropped before lora_A) ---- */

/* L = sum(y * g) of a TRAIN forward with the context generator reseeded: the same mask each call. */
static double loss_seeded(effml_context *ctx, effml_layer *l, const effml_tensor *x, const effml_tensor *g,
                          effml_tensor *y) {
  effml_context_set_seed(ctx, 1234);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  const float *a = effml_tensor_data(y), *b = effml_tensor_data_const(g);
  double acc = 0;
  for (int64_t i = 0; i < effml_tensor_numel(y); ++i) acc += (double)a[i] * b[i];
  return acc;
}

/* With one mask, y is linear in x, A, B (LoRA) and in x, m (DoRA, norm constant): central
 * differences are exact up to rounding. */
static void dropout_fd(const char *casename) {
  effml_context *ctx = tu_ctx(5);
  char dir[256];
  snprintf(dir, sizeof dir, "%s/%s", PEFT_DIR, casename);
  effml_safetensors *base = open_st(ctx, dir, "base.safetensors"), *io = open_st(ctx, dir, "io.safetensors");
  const char *mn = "base_model.model.q_proj";
  effml_adapter_lora_options o;
  ck_assert_int_eq(effml_adapter_lora_peft_options(ctx, dir, mn, &o), EFFML_OK);
  o.dropout = 0.3;
  effml_layer *l = NULL;
  ck_assert_int_eq(effml_adapter_lora_create(ctx, dense_from_base(ctx, base, "q_proj", 0), &o, &l), EFFML_OK);
  effml_safetensors *ad = open_st(ctx, dir, "adapter_model.safetensors");
  const char *pn[3] = {"lora_A.weight", "lora_B.weight", o.use_dora ? "lora_magnitude_vector" : NULL};
  for (int k = 0; k < 3 && pn[k]; ++k) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", mn, pn[k]);
    const effml_tensor *t = NULL;
    ck_assert_int_eq(effml_safetensors_get(ctx, ad, key, &t), EFFML_OK);
    ck_assert_int_eq(effml_tensor_copy(ctx, effml_layer_param(l, pidx(l, pn[k])), t), EFFML_OK);
  }
  effml_safetensors_free(ad);
  const effml_tensor *x0 = get(ctx, io, "%s.x", "q_proj"), *g = get(ctx, io, "%s.g", "q_proj");
  effml_tensor *x = NULL;
  ck_assert_int_eq(effml_tensor_contiguous(ctx, x0, &x), EFFML_OK);
  effml_tensor *y = new2(ctx, 5, 24), *dx = new2(ctx, 5, 40);
  effml_layer_zero_grad(l);
  loss_seeded(ctx, l, x, g, y);
  ck_assert_int_eq(effml_layer_backward(ctx, l, g, dx), EFFML_OK);
  const double h = 1e-2;
  /* input gradient */
  float *xv = effml_tensor_data(x);
  for (int i = 0; i < 200; i += 7) {
    float keep = xv[i];
    xv[i] = keep + (float)h;
    double lp = loss_seeded(ctx, l, x, g, y);
    xv[i] = keep - (float)h;
    double lm = loss_seeded(ctx, l, x, g, y);
    xv[i] = keep;
    double fd = (lp - lm) / (2 * h), an = ((const float *)effml_tensor_data(dx))[i];
    ck_assert_msg(fabs(fd - an) < 2e-3 * (1 + fabs(an)), "%s dx[%d]: fd %g, ours %g", casename, i, fd, an);
  }
  /* parameter gradients (DoRA: only m, since the norm is held constant in backward) */
  for (int k = o.use_dora ? 2 : 0; k < 3 && pn[k]; ++k) {
    int32_t pi = pidx(l, pn[k]);
    float *v = effml_tensor_data(effml_layer_param(l, pi));
    const float *gr = effml_tensor_data(effml_layer_param_grad(l, pi));
    for (int64_t i = 0; i < effml_tensor_numel(effml_layer_param(l, pi)); i += 5) {
      float keep = v[i];
      v[i] = keep + (float)h;
      double lp = loss_seeded(ctx, l, x, g, y);
      v[i] = keep - (float)h;
      double lm = loss_seeded(ctx, l, x, g, y);
      v[i] = keep;
      double fd = (lp - lm) / (2 * h);
      ck_assert_msg(fabs(fd - gr[i]) < 2e-3 * (1 + fabs(gr[i])), "%s d%s[%lld]: fd %g, ours %g", casename, pn[k],
                    (long long)i, fd, (double)gr[i]);
    }
  }
  /* E[train output] = eval output: kept entries are scaled by 1/(1-p) (400 draws; without the
   * scaling the mean would miss 30 % of the adapter's contribution y_eval - y_base) */
  effml_tensor *ye = new2(ctx, 5, 24), *yb = new2(ctx, 5, 24);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, ye, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert_int_eq(effml_layer_forward(ctx, effml_adapter_lora_base(l), x, yb, EFFML_LAYER_MODE_INFER), EFFML_OK);
  double *mean = (double *)calloc(120, sizeof(double));
  int differ = 0;
  for (int d = 0; d < 400; ++d) {
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
    for (int i = 0; i < 120; ++i) mean[i] += ((const float *)effml_tensor_data(y))[i] / 400.0;
    differ |= tu_max_abs_diff_f32(effml_tensor_data(y), effml_tensor_data(ye), 120) > 1e-4;
  }
  ck_assert(differ);
  double err = 0, contrib = 0;
  for (int i = 0; i < 120; ++i) {
    double e = ((const float *)effml_tensor_data(ye))[i], bb = ((const float *)effml_tensor_data(yb))[i];
    err += (mean[i] - e) * (mean[i] - e);
    contrib += (e - bb) * (e - bb);
  }
  ck_assert_msg(sqrt(err) < 0.1 * sqrt(contrib), "%s: mean of training outputs off by rms %g (adapter part rms %g)",
                casename, sqrt(err / 120), sqrt(contrib / 120));
  effml_tensor_free(yb);
  free(mean);
  effml_tensor_free(ye);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(dx);
  effml_layer_free(l);
  effml_safetensors_free(base);
  effml_safetensors_free(io);
  effml_context_free(ctx);
}

START_TEST(test_dropout_training_lora) { dropout_fd("lora"); }
END_TEST

START_TEST(test_dropout_training_dora) { dropout_fd("dora"); }
END_TEST

START_TEST(test_bad_inputs) {
  effml_context *ctx = tu_ctx(3);
  /* use_dora: true but no magnitude tensors */
  const char *dir = variant("lora", "dora_nomag", "\"use_dora\": false", "\"use_dora\": true");
  effml_layer *l[2];
  const char *mn[2] = {"base_model.model.q_proj", "base_model.model.v_proj"};
  int64_t in[2] = {40, 24}, out[2] = {24, 16};
  for (int i = 0; i < 2; ++i) {
    effml_adapter_lora_options o;
    ck_assert_int_eq(effml_adapter_lora_peft_options(ctx, dir, mn[i], &o), EFFML_OK);
    ck_assert_int_eq(o.use_dora, 1);
    effml_layer *d = NULL;
    ck_assert_int_eq(effml_layer_dense_create(ctx, in[i], out[i], 1, &d), EFFML_OK);
    ck_assert_int_eq(effml_adapter_lora_create(ctx, d, &o, &l[i]), EFFML_OK);
  }
  float keep[24];
  memcpy(keep, effml_tensor_data(effml_layer_param(l[0], pidx(l[0], "lora_magnitude_vector"))), sizeof keep);
  ck_assert_int_eq(effml_adapter_lora_load_peft(ctx, dir, 2, l, mn), EFFML_E_NOT_FOUND);
  ck_assert(strstr(effml_context_last_error(ctx), "q_proj.lora_magnitude_vector") != NULL);
  ck_assert(memcmp(keep, effml_tensor_data(effml_layer_param(l[0], pidx(l[0], "lora_magnitude_vector"))), sizeof keep) == 0);
  for (int i = 0; i < 2; ++i) effml_layer_free(l[i]);
  effml_context_free(ctx);

  /* a transposed lora_A ([in, r] instead of [r, in]) */
  pair p;
  pair_make(&p, 4, 4);
  char d2[512], path[600];
  snprintf(d2, sizeof d2, "%s/peft_transposed", EFFML_TEST_TMP);
  mkdir(d2, 0755);
  effml_safetensors *st = open_st(p.ctx, PEFT_DIR "/lora", "adapter_model.safetensors");
  int64_t nt = effml_safetensors_count(st);
  const char *names[8];
  const effml_tensor *ts[8];
  effml_tensor *tr = NULL;
  for (int64_t i = 0; i < nt; ++i) {
    names[i] = effml_safetensors_name(st, i);
    ck_assert_int_eq(effml_safetensors_get(p.ctx, st, names[i], &ts[i]), EFFML_OK);
    if (strcmp(names[i], "base_model.model.q_proj.lora_A.weight") == 0) {
      ck_assert_int_eq(effml_tensor_transpose(p.ctx, ts[i], 0, 1, &tr), EFFML_OK);
      ts[i] = tr;
    }
  }
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", d2);
  ck_assert_int_eq(effml_safetensors_save(p.ctx, path, nt, names, ts, 0, NULL, NULL), EFFML_OK);
  effml_tensor_free(tr);
  effml_safetensors_free(st);
  snprintf(path, sizeof path, "%s/adapter_config.json", d2);
  copy_file(PEFT_DIR "/lora/adapter_config.json", path);
  expect_refused(&p, d2, 2, EFFML_E_SHAPE, "q_proj.lora_A.weight\" has shape [40, 4]");
  pair_free(&p);
}
END_TEST

/* ---- LoKr files ---- */

static void run_lokr_case(const char *name) {
  effml_context *ctx = tu_ctx(8);
  char dir[256];
  snprintf(dir, sizeof dir, "%s/%s", PEFT_DIR, name);
  effml_safetensors *base = open_st(ctx, dir, "base.safetensors"), *io = open_st(ctx, dir, "io.safetensors"),
                    *grads = open_st(ctx, dir, "grads.safetensors"), *merged = open_st(ctx, dir, "merged.safetensors");
  const char *mods[2] = {"q_proj", "v_proj"}, *mn[2] = {"base_model.model.q_proj", "base_model.model.v_proj"};
  effml_layer *l[2];
  for (int i = 0; i < 2; ++i) {
    effml_adapter_lokr_options o;
    ck_assert_msg(effml_adapter_lokr_peft_options(ctx, dir, mn[i], &o) == EFFML_OK, "%s", effml_context_last_error(ctx));
    ck_assert_int_eq(effml_adapter_lokr_create(ctx, dense_from_base(ctx, base, mods[i], 0), &o, &l[i]), EFFML_OK);
  }
  ck_assert_msg(effml_adapter_lokr_load_peft(ctx, dir, 2, l, mn) == EFFML_OK, "%s", effml_context_last_error(ctx));
  for (int i = 0; i < 2; ++i) {
    const effml_tensor *x = get(ctx, io, "%s.x", mods[i]), *y = get(ctx, io, "%s.y", mods[i]),
                       *g = get(ctx, io, "%s.g", mods[i]), *dx = get(ctx, io, "%s.dx", mods[i]);
    int64_t out = effml_layer_out_features(l[i]), in = effml_layer_in_features(l[i]);
    effml_tensor *yo = new2(ctx, 5, out), *dxo = new2(ctx, 5, in), *dw = new2(ctx, out, in);
    char what[400];
    snprintf(what, sizeof what, "%s %s y", name, mods[i]);
    ck_assert_int_eq(effml_layer_forward(ctx, l[i], x, yo, EFFML_LAYER_MODE_INFER), EFFML_OK);
    expect_close(what, effml_tensor_data(yo), y, 2e-6);
    effml_layer_zero_grad(l[i]);
    ck_assert_int_eq(effml_layer_forward(ctx, l[i], x, yo, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
    ck_assert_int_eq(effml_layer_backward(ctx, l[i], g, dxo), EFFML_OK);
    snprintf(what, sizeof what, "%s %s dx", name, mods[i]);
    expect_close(what, effml_tensor_data(dxo), dx, 2e-6);
    int checked = 0;
    for (int32_t p = 0; p < effml_layer_num_params(l[i]); ++p) {
      if (!effml_layer_param_trainable(l[i], p)) continue;
      char key[256];
      snprintf(key, sizeof key, "%s.%s", mn[i], effml_layer_param_name(l[i], p));
      const effml_tensor *ref = NULL;
      ck_assert_msg(effml_safetensors_get(ctx, grads, key, &ref) == EFFML_OK, "no PEFT gradient for %s", key);
      snprintf(what, sizeof what, "%s grad %s", name, key);
      expect_close(what, effml_tensor_data(effml_layer_param_grad(l[i], p)), ref, 5e-6);
      ++checked;
    }
    ck_assert_int_ge(checked, 2);
    /* merged = W + dW */
    ck_assert_int_eq(effml_adapter_lokr_delta_weight(ctx, l[i], dw), EFFML_OK);
    float *d = effml_tensor_data(dw);
    const float *W = effml_tensor_data(effml_layer_param(l[i], pidx(l[i], "base_layer.weight")));
    for (int64_t k = 0; k < out * in; ++k) d[k] += W[k];
    snprintf(what, sizeof what, "%s %s merged weight", name, mods[i]);
    expect_close(what, d, get(ctx, merged, "%s.weight", mods[i]), 2e-6);
    effml_tensor_free(yo);
    effml_tensor_free(dxo);
    effml_tensor_free(dw);
  }
  /* only one module given: the other's factors are stray */
  effml_status st = effml_adapter_lokr_load_peft(ctx, dir, 1, l, mn);
  ck_assert_int_eq(st, EFFML_E_UNSUPPORTED);
  ck_assert(strstr(effml_context_last_error(ctx), "v_proj.lokr_w") != NULL);
  for (int i = 0; i < 2; ++i) effml_layer_free(l[i]);
  effml_safetensors_free(base);
  effml_safetensors_free(io);
  effml_safetensors_free(grads);
  effml_safetensors_free(merged);
  effml_context_free(ctx);
}

START_TEST(test_lokr) { run_lokr_case("lokr"); }
END_TEST

START_TEST(test_lokr_decompose_both) { run_lokr_case("lokr_decompose_both"); }
END_TEST

START_TEST(test_lokr_refusals) {
  effml_context *ctx = tu_ctx(2);
  effml_adapter_lokr_options o;
  /* the training dropouts are read (set on the layers by load_peft / attach); out of range is a format error */
  ck_assert_int_eq(effml_adapter_lokr_peft_options(ctx, variant("lokr", "lokr_rd", "\"rank_dropout\": 0.0", "\"rank_dropout\": 1.5"),
                                                   "base_model.model.q_proj", &o), EFFML_E_FORMAT);
  ck_assert(strstr(effml_context_last_error(ctx), "rank_dropout") != NULL);
  ck_assert_int_eq(effml_adapter_lokr_peft_options(ctx, variant("lokr", "lokr_rds", "\"rank_dropout_scale\": false", "\"rank_dropout_scale\": 2"),
                                                   "base_model.model.q_proj", &o), EFFML_E_FORMAT);
  ck_assert(strstr(effml_context_last_error(ctx), "rank_dropout_scale") != NULL);
  {
    const char *vdir = variant("lokr", "lokr_md", "\"module_dropout\": 0.0", "\"module_dropout\": 0.2");
    variant_more(vdir, "\"rank_dropout\": 0.0", "\"rank_dropout\": 0.25");
    variant_more(vdir, "\"rank_dropout_scale\": false", "\"rank_dropout_scale\": true");
    effml_layer *l = attach_variant0(ctx, "lokr", vdir);
    double rd = -1, md = -1;
    int32_t sc = -1;
    ck_assert_int_eq(effml_adapter_lokr_dropout(l, &rd, &md, &sc), EFFML_OK);
    ck_assert(md == 0.2 && rd == 0.25 && sc == 1);
    effml_layer_free(l);
    /* the LoKr-only loader sets them too */
    effml_safetensors *base = open_st(ctx, PEFT_DIR "/lokr", "base.safetensors");
    const char *mn[1] = {"base_model.model.q_proj"};
    ck_assert_msg(effml_adapter_lokr_peft_options(ctx, vdir, mn[0], &o) == EFFML_OK, "%s", effml_context_last_error(ctx));
    ck_assert_int_eq(effml_adapter_lokr_create(ctx, dense_from_base(ctx, base, "q_proj", 0), &o, &l), EFFML_OK);
    ck_assert_int_eq(effml_adapter_lokr_dropout(l, &rd, &md, &sc), EFFML_OK);
    ck_assert(md == 0.0 && rd == 0.0 && sc == 0); /* a new layer: none */
    effml_layer_free(l);
    effml_safetensors_free(base);
  }
  /* LoRA-only switches in a LoKr config are refused by name, not ignored */
  ck_assert_int_eq(effml_adapter_lokr_peft_options(ctx, variant("lokr", "lokr_dora", "\"module_dropout\": 0.0", "\"module_dropout\": 0.0, \"use_dora\": true"),
                                                   "base_model.model.q_proj", &o), EFFML_E_UNSUPPORTED);
  ck_assert_msg(strstr(effml_context_last_error(ctx), "use_dora") != NULL, "%s", effml_context_last_error(ctx));
  ck_assert_int_eq(effml_adapter_lokr_peft_options(ctx, variant("lokr", "lokr_lbias", "\"module_dropout\": 0.0", "\"module_dropout\": 0.0, \"lora_bias\": true"),
                                                   "base_model.model.q_proj", &o), EFFML_E_UNSUPPORTED);
  ck_assert_msg(strstr(effml_context_last_error(ctx), "lora_bias") != NULL, "%s", effml_context_last_error(ctx));
  ck_assert_int_eq(effml_adapter_lokr_peft_options(ctx, variant("lokr", "lokr_mts", "\"modules_to_save\": null", "\"modules_to_save\": [\"head\"]"),
                                                   "base_model.model.q_proj", &o), EFFML_E_UNSUPPORTED);
  /* a LoRA directory is not a LoKr one, and the other way round */
  ck_assert_int_eq(effml_adapter_lokr_peft_options(ctx, PEFT_DIR "/lora", "base_model.model.q_proj", &o), EFFML_E_UNSUPPORTED);
  ck_assert(strstr(effml_context_last_error(ctx), "peft_type=\"LORA\"") != NULL);
  effml_adapter_lora_options lo;
  ck_assert_int_eq(effml_adapter_lora_peft_options(ctx, PEFT_DIR "/lokr", "base_model.model.q_proj", &lo), EFFML_E_UNSUPPORTED);
  ck_assert(strstr(effml_context_last_error(ctx), "peft_type=\"LOKR\"") != NULL);
  /* LoKr factors of another shape (decompose_both file into a layer made without it) */
  effml_layer *l[2];
  const char *mn[2] = {"base_model.model.q_proj", "base_model.model.v_proj"};
  int64_t in[2] = {40, 24}, out[2] = {24, 16};
  for (int i = 0; i < 2; ++i) {
    ck_assert_int_eq(effml_adapter_lokr_peft_options(ctx, PEFT_DIR "/lokr_decompose_both", mn[i], &o), EFFML_OK);
    o.decompose_both = 0;
    effml_layer *d = NULL;
    ck_assert_int_eq(effml_layer_dense_create(ctx, in[i], out[i], 1, &d), EFFML_OK);
    ck_assert_int_eq(effml_adapter_lokr_create(ctx, d, &o, &l[i]), EFFML_OK);
  }
  ck_assert_int_eq(effml_adapter_lokr_load_peft(ctx, PEFT_DIR "/lokr_decompose_both", 2, l, mn), EFFML_E_NOT_FOUND);
  ck_assert(strstr(effml_context_last_error(ctx), "q_proj.lokr_w1") != NULL);
  for (int i = 0; i < 2; ++i) effml_layer_free(l[i]);
  effml_context_free(ctx);
}
END_TEST

/* ---- any type through effml_adapter_peft_* (open, attach, merge) ---- */

static void run_attach_case(const char *name, const char *want_type) {
  effml_context *ctx = tu_ctx(4);
  char dir[256];
  snprintf(dir, sizeof dir, "%s/%s", PEFT_DIR, name);
  effml_safetensors *base = open_st(ctx, dir, "base.safetensors"), *io = open_st(ctx, dir, "io.safetensors"),
                    *grads = open_st(ctx, dir, "grads.safetensors"), *merged = open_st(ctx, dir, "merged.safetensors");
  effml_adapter_peft *a = NULL;
  ck_assert_msg(effml_adapter_peft_open(ctx, dir, &a) == EFFML_OK, "%s", effml_context_last_error(ctx));
  ck_assert_str_eq(effml_adapter_peft_type(a), want_type);
  ck_assert_int_eq(effml_adapter_peft_num_modules(a), 2);
  int64_t ngrads = 0;
  for (int64_t i = 0; i < 2; ++i) {
    const char *mn = effml_adapter_peft_module_name(a, i), *m = mn + strlen("base_model.model.");
    effml_layer *b = dense_from_base(ctx, base, m, 0), *l = NULL;
    ck_assert_msg(effml_adapter_peft_attach(ctx, a, i, b, &l) == EFFML_OK, "%s", effml_context_last_error(ctx));
    const effml_tensor *x = get(ctx, io, "%s.x", m), *y = get(ctx, io, "%s.y", m), *g = get(ctx, io, "%s.g", m),
                       *dx = get(ctx, io, "%s.dx", m);
    int64_t out = effml_layer_out_features(l), in = effml_layer_in_features(l);
    effml_tensor *yo = new2(ctx, 5, out), *dxo = new2(ctx, 5, in);
    char what[400];
    snprintf(what, sizeof what, "%s %s y", name, m);
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, yo, EFFML_LAYER_MODE_INFER), EFFML_OK);
    expect_close(what, effml_tensor_data(yo), y, 2e-6);
    effml_layer_zero_grad(l);
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, yo, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
    ck_assert_int_eq(effml_layer_backward(ctx, l, g, dxo), EFFML_OK);
    snprintf(what, sizeof what, "%s %s dx", name, m);
    expect_close(what, effml_tensor_data(dxo), dx, 2e-6);
    for (int32_t p = 0; p < effml_layer_num_params(l); ++p) {
      if (!effml_layer_param_trainable(l, p)) continue;
      char key[256];
      snprintf(key, sizeof key, "%s.%s", mn, effml_layer_param_name(l, p));
      const effml_tensor *ref = NULL;
      ck_assert_msg(effml_safetensors_get(ctx, grads, key, &ref) == EFFML_OK, "no PEFT gradient for %s", key);
      snprintf(what, sizeof what, "%s grad %s", name, key);
      expect_close(what, effml_tensor_data(effml_layer_param_grad(l, p)), ref, 5e-6);
      ++ngrads;
    }
    ck_assert_int_eq(effml_adapter_peft_merge_layer(ctx, l), EFFML_OK);
    effml_layer *bl = effml_adapter_lora_base(l);
    snprintf(what, sizeof what, "%s %s merged weight", name, m);
    expect_close(what, effml_tensor_data(effml_layer_param(bl, pidx(bl, "weight"))), get(ctx, merged, "%s.weight", m), 2e-6);
    if (pidx(bl, "bias") >= 0) {
      snprintf(what, sizeof what, "%s %s merged bias", name, m);
      expect_close(what, effml_tensor_data(effml_layer_param(bl, pidx(bl, "bias"))), get(ctx, merged, "%s.bias", m), 2e-6);
    }
    effml_tensor_free(yo);
    effml_tensor_free(dxo);
    effml_layer_free(l);
  }
  ck_assert_int_eq(ngrads, effml_safetensors_count(grads));
  effml_adapter_peft_free(a);
  effml_safetensors_free(base);
  effml_safetensors_free(io);
  effml_safetensors_free(grads);
  effml_safetensors_free(merged);
  effml_context_free(ctx);
}

START_TEST(test_loha) {
  run_attach_case("loha", "LOHA");
  effml_context *ctx = tu_ctx(6);
  effml_adapter_peft *a = NULL;
  { /* the training dropouts are set on the layer; inference ignores them, as PEFT's eval mode */
    const char *vdir = variant("loha", "loha_rd", "\"rank_dropout\": 0.0", "\"rank_dropout\": 0.3");
    variant_more(vdir, "\"module_dropout\": 0.0", "\"module_dropout\": 0.1");
    effml_layer *l = attach_variant0(ctx, "loha", vdir);
    double rd = -1, md = -1;
    ck_assert_int_eq(effml_adapter_loha_dropout(l, &rd, &md), EFFML_OK);
    ck_assert(rd == 0.3 && md == 0.1);
    effml_layer_free(l);
    ck_assert_int_eq(effml_adapter_peft_open(ctx, variant("loha", "loha_rd1", "\"rank_dropout\": 0.0", "\"rank_dropout\": 1.0"), &a),
                     EFFML_E_FORMAT);
    ck_assert(strstr(effml_context_last_error(ctx), "rank_dropout") != NULL);
  }
  /* merge / unmerge round trip */
  effml_layer *d = NULL, *l = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 12, 10, 1, &d), EFFML_OK);
  ck_assert_int_eq(effml_adapter_loha_create(ctx, d, 3, 6.0, &l), EFFML_OK);
  tu_fill_uniform(effml_layer_param(l, pidx(l, "hada_w2_b")), 5, -1, 1);
  float w0[120];
  memcpy(w0, effml_tensor_data(effml_layer_param(l, pidx(l, "base_layer.weight"))), sizeof w0);
  effml_tensor *x = new2(ctx, 4, 12), *y0 = new2(ctx, 4, 10), *y1 = new2(ctx, 4, 10);
  tu_fill_uniform(x, 3, -1, 1);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y0, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert_int_eq(effml_adapter_loha_merge(ctx, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y1, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert(tu_max_abs_diff_f32(effml_tensor_data(y0), effml_tensor_data(y1), 40) < 1e-5);
  ck_assert_int_eq(effml_adapter_loha_unmerge(ctx, l), EFFML_OK);
  ck_assert(tu_max_abs_diff_f32(w0, effml_tensor_data(effml_layer_param(l, pidx(l, "base_layer.weight"))), 120) < 1e-5);
  effml_tensor_free(x);
  effml_tensor_free(y0);
  effml_tensor_free(y1);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_vera) {
  run_attach_case("vera", "VERA"); /* q_proj uses all of vera_A [4, 40] / vera_B [24, 4], v_proj a slice */
  effml_context *ctx = tu_ctx(6);
  effml_adapter_peft *a = NULL;
  ck_assert_int_eq(effml_adapter_peft_open(ctx, variant("vera", "vera_nosave", "\"save_projection\": true",
                                                        "\"save_projection\": false"), &a), EFFML_E_UNSUPPORTED);
  ck_assert(strstr(effml_context_last_error(ctx), "save_projection=false") != NULL);
  {
    effml_layer *l = attach_variant0(ctx, "vera", variant("vera", "vera_drop", "\"vera_dropout\": 0.0", "\"vera_dropout\": 0.1"));
    ck_assert(effml_adapter_vera_dropout(l) == 0.1);
    effml_layer_free(l);
    ck_assert_int_eq(effml_adapter_peft_open(ctx, variant("vera", "vera_drop1", "\"vera_dropout\": 0.0", "\"vera_dropout\": -0.1"), &a),
                     EFFML_E_FORMAT);
    ck_assert(strstr(effml_context_last_error(ctx), "vera_dropout") != NULL);
  }
  /* a module wider than the shared projection */
  ck_assert_int_eq(effml_adapter_peft_open(ctx, PEFT_DIR "/vera", &a), EFFML_OK);
  effml_layer *d = NULL, *l = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 48, 16, 0, &d), EFFML_OK);
  ck_assert_int_eq(effml_adapter_peft_attach(ctx, a, 1, d, &l), EFFML_E_SHAPE);
  ck_assert(strstr(effml_context_last_error(ctx), "vera_A") != NULL);
  effml_layer_free(d);
  effml_adapter_peft_free(a);
  /* merge / unmerge round trip */
  ck_assert_int_eq(effml_layer_dense_create(ctx, 12, 10, 1, &d), EFFML_OK);
  ck_assert_int_eq(effml_adapter_vera_create(ctx, d, 3, 0.1, &l), EFFML_OK);
  tu_fill_uniform(effml_layer_param(l, pidx(l, "vera_lambda_b")), 5, -1, 1);
  float w0[120];
  memcpy(w0, effml_tensor_data(effml_layer_param(l, pidx(l, "base_layer.weight"))), sizeof w0);
  effml_tensor *x = new2(ctx, 4, 12), *y0 = new2(ctx, 4, 10), *y1 = new2(ctx, 4, 10);
  tu_fill_uniform(x, 3, -1, 1);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y0, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert_int_eq(effml_adapter_vera_merge(ctx, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y1, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert(tu_max_abs_diff_f32(effml_tensor_data(y0), effml_tensor_data(y1), 40) < 1e-5);
  ck_assert_int_eq(effml_adapter_vera_unmerge(ctx, l), EFFML_OK);
  ck_assert(tu_max_abs_diff_f32(w0, effml_tensor_data(effml_layer_param(l, pidx(l, "base_layer.weight"))), 120) < 1e-6);
  /* vera_A / vera_B are frozen by definition: naming one trainable is refused
   * (backward computes no gradient for them); "all" leaves them frozen */
  const int32_t ia = pidx(l, "vera_A"), ib = pidx(l, "vera_B"), ild = pidx(l, "vera_lambda_d");
  ck_assert_int_eq(effml_layer_set_trainable(ctx, l, "vera_A", 1), EFFML_E_UNSUPPORTED);
  ck_assert_str_eq(effml_context_last_error(ctx),
                   "effml_layer_set_trainable: vera layer's parameter 'vera_A' cannot be trained: VeRA's random "
                   "projections vera_A/vera_B are frozen by definition (Kopiczko et al. 2024, arXiv 2310.11454, eq. 1; "
                   "PEFT keeps them as buffers): only vera_lambda_d and vera_lambda_b train");
  ck_assert_int_eq(effml_layer_set_trainable(ctx, l, "vera_B", 1), EFFML_E_UNSUPPORTED);
  ck_assert(strstr(effml_context_last_error(ctx), "'vera_B' cannot be trained") != NULL);
  ck_assert_int_eq(effml_layer_set_trainable(ctx, l, "vera_B", 0), EFFML_OK); /* freezing is fine */
  ck_assert_int_eq(effml_layer_set_trainable(ctx, l, "vera_lambda_d", 0), EFFML_OK);
  ck_assert_int_eq(effml_layer_set_trainable(ctx, l, NULL, 1), EFFML_OK);
  ck_assert_int_eq(effml_layer_param_trainable(l, ia), 0);
  ck_assert_int_eq(effml_layer_param_trainable(l, ib), 0);
  ck_assert_int_eq(effml_layer_param_trainable(l, ild), 1);
  ck_assert_int_eq(effml_layer_count_params(l, 1), 120 + 10 + 3 + 10); /* base W, b, lambda_d, lambda_b */
  /* the same through a container's prefixed name */
  effml_layer *seq = NULL;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &seq), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, seq, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_set_trainable(ctx, seq, "0.vera_A", 1), EFFML_E_UNSUPPORTED);
  ck_assert(strstr(effml_context_last_error(ctx), "'0.vera_A' cannot be trained") != NULL);
  ck_assert_int_eq(effml_layer_param_trainable(l, ia), 0);
  effml_tensor_free(x);
  effml_tensor_free(y0);
  effml_tensor_free(y1);
  effml_layer_free(seq);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_ia3) {
  run_attach_case("ia3", "IA3"); /* q_proj scales its output (and bias), v_proj (feed-forward) its input */
  /* merge / unmerge round trip on a layer of our own */
  effml_context *ctx = tu_ctx(6);
  for (int ff = 0; ff < 2; ++ff) {
    effml_layer *d = NULL, *l = NULL;
    ck_assert_int_eq(effml_layer_dense_create(ctx, 8, 6, 1, &d), EFFML_OK);
    ck_assert_int_eq(effml_adapter_ia3_create(ctx, d, ff, &l), EFFML_OK);
    float *s = effml_tensor_data(effml_layer_param(l, pidx(l, "ia3_l")));
    for (int k = 0; k < (ff ? 8 : 6); ++k) s[k] = 0.5f + 0.25f * (float)k;
    float w0[48];
    memcpy(w0, effml_tensor_data(effml_layer_param(l, pidx(l, "base_layer.weight"))), sizeof w0);
    effml_tensor *x = new2(ctx, 3, 8), *y0 = new2(ctx, 3, 6), *y1 = new2(ctx, 3, 6);
    tu_fill_uniform(x, 3, -1, 1);
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, y0, EFFML_LAYER_MODE_INFER), EFFML_OK);
    ck_assert_int_eq(effml_adapter_ia3_merge(ctx, l), EFFML_OK);
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, y1, EFFML_LAYER_MODE_INFER), EFFML_OK);
    ck_assert(tu_max_abs_diff_f32(effml_tensor_data(y0), effml_tensor_data(y1), 18) < 1e-5);
    ck_assert_int_eq(effml_layer_forward(ctx, l, x, y1, EFFML_LAYER_MODE_TRAIN), EFFML_E_STATE);
    ck_assert_int_eq(effml_adapter_ia3_unmerge(ctx, l), EFFML_OK);
    ck_assert(tu_max_abs_diff_f32(w0, effml_tensor_data(effml_layer_param(l, pidx(l, "base_layer.weight"))), 48) < 1e-6);
    effml_tensor_free(x);
    effml_tensor_free(y0);
    effml_tensor_free(y1);
    effml_layer_free(l);
  }
  /* feedforward_modules disagreeing with the tensor's shape: named */
  effml_adapter_peft *a = NULL;
  ck_assert_int_eq(effml_adapter_peft_open(ctx, variant("ia3", "ia3_ff", "\"feedforward_modules\": [\n    \"v_proj\"\n  ]",
                                                        "\"feedforward_modules\": [\"q_proj\"]"), &a), EFFML_OK);
  effml_layer *d = NULL, *l = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 40, 24, 1, &d), EFFML_OK);
  ck_assert_int_eq(effml_adapter_peft_attach(ctx, a, 0, d, &l), EFFML_E_SHAPE);
  ck_assert(strstr(effml_context_last_error(ctx), "ia3_l") != NULL);
  effml_layer_free(d); /* still ours after the error */
  effml_adapter_peft_free(a);
  /* a regular-expression feedforward_modules: full match as PEFT; repeated quantifiers refused */
  ck_assert_int_eq(effml_adapter_peft_open(ctx, variant("ia3", "ia3_rx", "\"feedforward_modules\": [\n    \"v_proj\"\n  ]",
                                                        "\"feedforward_modules\": \"v_pro.\""), &a), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 24, 16, 0, &d), EFFML_OK);
  ck_assert_msg(effml_adapter_peft_attach(ctx, a, 1, d, &l) == EFFML_OK, "%s", effml_context_last_error(ctx));
  ck_assert_int_eq(effml_tensor_dim(effml_layer_param(l, pidx(l, "ia3_l")), 0), 1); /* [1, in]: feed-forward */
  effml_layer_free(l);
  effml_adapter_peft_free(a);
  ck_assert_int_eq(effml_adapter_peft_open(ctx, variant("ia3", "ia3_rx2", "\"feedforward_modules\": [\n    \"v_proj\"\n  ]",
                                                        "\"feedforward_modules\": \"(a|b)*++\""), &a), EFFML_E_UNSUPPORTED);
  effml_context_free(ctx);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("adapter_peft");
  TCase *t = tcase_create("peft");
  tcase_add_test(t, test_lora);
  tcase_add_test(t, test_lora_rslora);
  tcase_add_test(t, test_lora_rank_alpha_pattern);
  tcase_add_test(t, test_lora_dropout);
  tcase_add_test(t, test_lora_bias);
  tcase_add_test(t, test_dora);
  tcase_add_test(t, test_dora_rslora);
  tcase_add_test(t, test_lora_conv1d);
  tcase_add_test(t, test_lora_conv1d_transposed_by_hand);
  tcase_add_test(t, test_refuse_config_values);
  tcase_add_test(t, test_refuse_tensors);
  tcase_add_test(t, test_dropout_training_lora);
  tcase_add_test(t, test_dropout_training_dora);
  tcase_add_test(t, test_bad_inputs);
  tcase_add_test(t, test_lokr);
  tcase_add_test(t, test_lokr_decompose_both);
  tcase_add_test(t, test_lokr_refusals);
  tcase_add_test(t, test_ia3);
  tcase_add_test(t, test_loha);
  tcase_add_test(t, test_vera);
  suite_add_tcase(s, t);
  return s;
}

int main(void) { return tu_run(suite()) ? 1 : 0; }
