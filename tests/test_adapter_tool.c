/* effml-adapter merge/info on the PEFT 0.21 fixtures (tests/data/peft): the merged
 * file equals PEFT's merge_and_unload() weights to f32 tolerance, keeps the base's
 * header (names, dtypes, shapes, offsets, metadata) byte for byte, refuses what
 * cannot be merged without leaving a file behind, and rounds bf16 bases once. */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testutil.h"

#define PEFT_DIR EFFML_TEST_DATA "/peft"

static int run(const char *args) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "\"%s\" %s >/dev/null 2>%s/adapter_tool.err", EFFML_ADAPTER_TOOL, args, EFFML_TEST_TMP);
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Like run(), with stdout kept in the returned string (the caller frees it). */
static char *run_out(const char *args, int *rc_out) {
  char cmd[4096], p[512];
  snprintf(p, sizeof p, "%s/adapter_tool.out", EFFML_TEST_TMP);
  snprintf(cmd, sizeof cmd, "\"%s\" %s >%s 2>%s/adapter_tool.err", EFFML_ADAPTER_TOOL, args, p, EFFML_TEST_TMP);
  int rc = system(cmd);
  *rc_out = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  size_t n = 0;
  unsigned char *b = tu_read_file(p, &n);
  char *s = (char *)calloc(n + 1, 1);
  if (b) memcpy(s, b, n);
  free(b);
  return s;
}

static char *read_err(void) {
  char p[512];
  snprintf(p, sizeof p, "%s/adapter_tool.err", EFFML_TEST_TMP);
  size_t n = 0;
  unsigned char *b = tu_read_file(p, &n);
  char *s = (char *)calloc(n + 1, 1);
  if (b) memcpy(s, b, n);
  free(b);
  return s;
}

static size_t header_len(const unsigned char *b) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | b[i];
  return (size_t)n + 8;
}

static void check_case(const char *c) {
  char args[2048], out[512], ref[512], base[512];
  snprintf(out, sizeof out, "%s/tool_%s.safetensors", EFFML_TEST_TMP, c);
  snprintf(ref, sizeof ref, "%s/%s/merged.safetensors", PEFT_DIR, c);
  snprintf(base, sizeof base, "%s/%s/base.safetensors", PEFT_DIR, c);
  snprintf(args, sizeof args, "merge --base %s --adapter %s/%s --out %s", base, PEFT_DIR, c, out);
  unlink(out);
  ck_assert_msg(run(args) == 0, "%s: %s", c, read_err());
  effml_context *ctx = tu_ctx(1);
  effml_safetensors *a = NULL, *r = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, out, EFFML_IO_SAFETENSORS_COPY, &a), EFFML_OK);
  ck_assert_int_eq(effml_safetensors_load(ctx, ref, EFFML_IO_SAFETENSORS_COPY, &r), EFFML_OK);
  ck_assert_int_eq(effml_safetensors_count(a), effml_safetensors_count(r));
  for (int64_t i = 0; i < effml_safetensors_count(r); ++i) {
    const char *name = effml_safetensors_name(r, i);
    const effml_tensor *x = NULL, *y = NULL;
    ck_assert_int_eq(effml_safetensors_get(ctx, a, name, &x), EFFML_OK);
    ck_assert_int_eq(effml_safetensors_get(ctx, r, name, &y), EFFML_OK);
    const float *p = effml_tensor_data_const(x), *q = effml_tensor_data_const(y);
    for (int64_t k = 0; k < effml_tensor_numel(y); ++k)
      ck_assert_msg(fabs((double)p[k] - q[k]) <= 2e-6 * (1 + fabs((double)q[k])), "%s %s[%lld]: %g vs PEFT %g", c, name,
                    (long long)k, (double)p[k], (double)q[k]);
  }
  effml_safetensors_free(a);
  effml_safetensors_free(r);
  effml_context_free(ctx);
  size_t la = 0, lb = 0;
  unsigned char *fa = tu_read_file(out, &la), *fb = tu_read_file(base, &lb);
  ck_assert(la == lb && header_len(fa) == header_len(fb) && memcmp(fa, fb, header_len(fb)) == 0);
  free(fa);
  free(fb);
}

START_TEST(test_merge_fixtures) {
  const char *cases[] = {"lora", "lora_rslora", "lora_rank_alpha_pattern", "lora_dropout", "dora",
                         "dora_rslora", "lora_conv1d_fan_in_fan_out", "lokr", "lokr_decompose_both", "ia3", "loha", "vera"};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) check_case(cases[i]);
}
END_TEST

/* effml_adapter_peft_merge_tensors() straight on the fixtures' base tensors: PEFT's merged
 * weights to f32 tolerance, bit-identical for 1 and 3 context threads, and (plain LoRA's direct
 * sgemm into the weight) within f32 rounding of the layer path (attach + merge_layer). */
START_TEST(test_merge_tensors_api) {
  const char *cases[] = {"lora", "lora_rslora", "lora_rank_alpha_pattern", "dora",
                         "lora_conv1d_fan_in_fan_out", "lokr", "ia3", "loha", "vera"};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/%s", PEFT_DIR, cases[c]);
    effml_context *ctx = tu_ctx(1), *ctx3 = tu_ctx(1);
    ck_assert_int_eq(effml_context_set_num_threads(ctx3, 3), EFFML_OK);
    effml_adapter_peft *a = NULL;
    ck_assert_int_eq(effml_adapter_peft_open(ctx, dir, &a), EFFML_OK);
    effml_safetensors *b = NULL, *m = NULL;
    snprintf(p, sizeof p, "%s/base.safetensors", dir);
    ck_assert_int_eq(effml_safetensors_load(ctx, p, EFFML_IO_SAFETENSORS_COPY, &b), EFFML_OK);
    snprintf(p, sizeof p, "%s/merged.safetensors", dir);
    ck_assert_int_eq(effml_safetensors_load(ctx, p, EFFML_IO_SAFETENSORS_COPY, &m), EFFML_OK);
    int fan = effml_adapter_peft_fan_in_fan_out(a);
    for (int64_t i = 0; i < effml_adapter_peft_num_modules(a); ++i) {
      const char *x = effml_adapter_peft_module_name(a, i) + strlen("base_model.model.");
      char kw[512], kb[512];
      snprintf(kw, sizeof kw, "%s.weight", x);
      snprintf(kb, sizeof kb, "%s.bias", x);
      const effml_tensor *w0 = NULL, *b0 = NULL, *wr = NULL, *br = NULL;
      ck_assert_int_eq(effml_safetensors_get(ctx, b, kw, &w0), EFFML_OK);
      ck_assert_int_eq(effml_safetensors_get(ctx, m, kw, &wr), EFFML_OK);
      int has_b = effml_safetensors_get(ctx, b, kb, &b0) == EFFML_OK;
      if (has_b) ck_assert_int_eq(effml_safetensors_get(ctx, m, kb, &br), EFFML_OK);
      effml_tensor *w1 = NULL, *w3 = NULL, *b1 = NULL, *b3 = NULL;
      ck_assert_int_eq(effml_tensor_convert(ctx, w0, EFFML_F32, &w1), EFFML_OK);
      ck_assert_int_eq(effml_tensor_convert(ctx, w0, EFFML_F32, &w3), EFFML_OK);
      if (has_b) {
        ck_assert_int_eq(effml_tensor_convert(ctx, b0, EFFML_F32, &b1), EFFML_OK);
        ck_assert_int_eq(effml_tensor_convert(ctx, b0, EFFML_F32, &b3), EFFML_OK);
      }
      ck_assert_msg(effml_adapter_peft_merge_tensors(ctx, a, i, w1, b1) == EFFML_OK, "%s: %s", cases[c],
                    effml_context_last_error(ctx));
      ck_assert_int_eq(effml_adapter_peft_merge_tensors(ctx3, a, i, w3, b3), EFFML_OK);
      int64_t n = effml_tensor_numel(w1);
      const float *g = effml_tensor_data_const(w1), *g3 = effml_tensor_data_const(w3), *r = effml_tensor_data_const(wr);
      ck_assert_msg(memcmp(g, g3, (size_t)n * sizeof(float)) == 0, "%s: thread count changed the merge", cases[c]);
      for (int64_t k = 0; k < n; ++k)
        ck_assert_msg(fabs((double)g[k] - r[k]) <= 2e-6 * (1 + fabs((double)r[k])), "%s %s[%lld]: %g vs PEFT %g",
                      cases[c], kw, (long long)k, (double)g[k], (double)r[k]);
      if (has_b) {
        const float *gb = effml_tensor_data_const(b1), *rb = effml_tensor_data_const(br);
        for (int64_t k = 0; k < effml_tensor_numel(b1); ++k)
          ck_assert_msg(fabs((double)gb[k] - rb[k]) <= 2e-6 * (1 + fabs((double)rb[k])), "%s %s[%lld]: %g vs PEFT %g",
                        cases[c], kb, (long long)k, (double)gb[k], (double)rb[k]);
      }
      if (strncmp(cases[c], "lora", 4) == 0) { /* the layer path on the same weights */
        int64_t out = effml_tensor_dim(w0, fan ? 1 : 0), in = effml_tensor_dim(w0, fan ? 0 : 1);
        effml_layer *base = NULL, *l = NULL;
        ck_assert_int_eq(fan ? effml_adapter_conv1d_create(ctx, in, out, has_b, &base)
                             : effml_layer_dense_create(ctx, in, out, has_b, &base),
                         EFFML_OK);
        ck_assert_int_eq(effml_tensor_copy(ctx, effml_layer_param(base, 0), w0), EFFML_OK);
        if (has_b) ck_assert_int_eq(effml_tensor_copy(ctx, effml_layer_param(base, 1), b0), EFFML_OK);
        ck_assert_int_eq(effml_adapter_peft_attach(ctx, a, i, base, &l), EFFML_OK);
        ck_assert_int_eq(effml_adapter_peft_merge_layer(ctx, l), EFFML_OK);
        const float *q = effml_tensor_data_const(effml_layer_param(effml_adapter_lora_base(l), 0));
        for (int64_t k = 0; k < n; ++k)
          ck_assert_msg(fabs((double)g[k] - q[k]) <= 1e-6 * (1 + fabs((double)q[k])), "%s %s[%lld]: %g vs layer %g",
                        cases[c], kw, (long long)k, (double)g[k], (double)q[k]);
        effml_layer_free(l);
      }
      effml_tensor_free(w1);
      effml_tensor_free(w3);
      effml_tensor_free(b1);
      effml_tensor_free(b3);
    }
    /* the contract's refusals: a weight of the wrong dtype, a bias of the wrong width */
    effml_tensor *bad = NULL;
    int64_t sh[2] = {2, 3};
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, sh, &bad), EFFML_OK);
    ck_assert_int_eq(effml_adapter_peft_merge_tensors(ctx, a, 0, bad, NULL), EFFML_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "weight must be a contiguous 2-D f32"));
    ck_assert_int_eq(effml_adapter_peft_merge_tensors(ctx, a, effml_adapter_peft_num_modules(a), bad, NULL),
                     EFFML_E_RANGE);
    effml_tensor_free(bad);
    effml_safetensors_free(b);
    effml_safetensors_free(m);
    effml_adapter_peft_free(a);
    effml_context_free(ctx);
    effml_context_free(ctx3);
  }
}
END_TEST

START_TEST(test_refusals) {
  char args[2048], out[512];
  struct stat sb;
  /* lora_bias where v_proj has no bias: refused naming the module, nothing written */
  snprintf(out, sizeof out, "%s/tool_lora_bias.safetensors", EFFML_TEST_TMP);
  unlink(out);
  snprintf(args, sizeof args, "merge --base %s/lora_bias/base.safetensors --adapter %s/lora_bias --out %s", PEFT_DIR,
           PEFT_DIR, out);
  ck_assert_int_eq(run(args), 1);
  char *e = read_err();
  ck_assert_msg(strstr(e, "base_model.model.v_proj") && strstr(e, "lora_bias"), "%s", e);
  free(e);
  ck_assert(stat(out, &sb) != 0);
  /* a type not read: refused naming peft_type (a VeRA config with another type name) */
  char dir2[600], p2[700];
  snprintf(dir2, sizeof dir2, "%s/tool_boft", EFFML_TEST_TMP);
  mkdir(dir2, 0755);
  snprintf(p2, sizeof p2, "%s/adapter_config.json", dir2);
  FILE *cf = fopen(p2, "wb");
  fputs("{\"peft_type\": \"BOFT\", \"r\": 4}", cf);
  fclose(cf);
  snprintf(args, sizeof args, "merge --base %s/vera/base.safetensors --adapter %s --out %s", PEFT_DIR, dir2, out);
  ck_assert_int_eq(run(args), 1);
  e = read_err();
  ck_assert_msg(strstr(e, "peft_type=\"BOFT\""), "%s", e);
  free(e);
  ck_assert(stat(out, &sb) != 0);
  /* a base without the module */
  snprintf(args, sizeof args, "merge --base %s/lora_conv1d_fan_in_fan_out/base.safetensors --adapter %s/lora --out %s",
           PEFT_DIR, PEFT_DIR, out);
  ck_assert_int_eq(run(args), 1);
  e = read_err();
  ck_assert_msg(strstr(e, "q_proj.weight"), "%s", e);
  free(e);
  /* a single-file base with an index --out: refused naming both, nothing written */
  char idx_out[600], want[2048];
  snprintf(idx_out, sizeof idx_out, "%s/tool_single.safetensors.index.json", EFFML_TEST_TMP);
  unlink(idx_out);
  snprintf(args, sizeof args, "merge --base %s/lora/base.safetensors --adapter %s/lora --out %s", PEFT_DIR, PEFT_DIR,
           idx_out);
  ck_assert_int_eq(run(args), 1);
  e = read_err();
  snprintf(want, sizeof want,
           "effml-adapter: --base %s/lora/base.safetensors is a single safetensors file, so --out must name the "
           "merged safetensors file (\"DIR/model.safetensors\"), not an index: %s\n",
           PEFT_DIR, idx_out);
  ck_assert_str_eq(e, want);
  free(e);
  ck_assert(stat(idx_out, &sb) != 0);
  /* sharded index: refused; dry run writes nothing */
  snprintf(args, sizeof args, "merge --base model.safetensors.index.json --adapter %s/lora --out %s", PEFT_DIR, out);
  ck_assert_int_eq(run(args), 1);
  snprintf(args, sizeof args, "merge --dry-run --base %s/lora/base.safetensors --adapter %s/lora --out %s", PEFT_DIR,
           PEFT_DIR, out);
  ck_assert_int_eq(run(args), 0);
  ck_assert(stat(out, &sb) != 0);
  ck_assert_int_eq(run("merge --base x"), 2);
  snprintf(args, sizeof args, "info %s/dora", PEFT_DIR);
  ck_assert_int_eq(run(args), 0);
  snprintf(args, sizeof args, "info %s/vera", PEFT_DIR);
  ck_assert_int_eq(run(args), 0);
  snprintf(args, sizeof args, "info %s", dir2);
  ck_assert_int_eq(run(args), 1);
}
END_TEST

/* Copy the adapter dir tests/data/peft/<c> to tmp/<dst>: in adapter_config.json the first `from`
 * replaced by `to` (from NULL: PEFT's file unchanged); tensor nan_key (if given) with a NaN at flat
 * index 5; tensor drop_key (if given) left out. */
static void make_adapter(const char *c, const char *dst, const char *from, const char *to, const char *nan_key,
                         const char *drop_key) {
  char src[600], p[700];
  snprintf(p, sizeof p, "%s/%s", EFFML_TEST_TMP, dst);
  mkdir(p, 0755);
  snprintf(src, sizeof src, "%s/%s/adapter_config.json", PEFT_DIR, c);
  size_t n = 0;
  unsigned char *cfg0 = tu_read_file(src, &n);
  ck_assert_ptr_nonnull(cfg0);
  unsigned char *cfg = (unsigned char *)calloc(n + 1, 1); /* NUL-terminated */
  memcpy(cfg, cfg0, n);
  free(cfg0);
  snprintf(p, sizeof p, "%s/%s/adapter_config.json", EFFML_TEST_TMP, dst);
  FILE *f = fopen(p, "wb");
  ck_assert_ptr_nonnull(f);
  char *hit = from ? strstr((char *)cfg, from) : NULL;
  if (from) ck_assert_msg(hit != NULL, "%s: no \"%s\" in the config", c, from);
  if (hit) {
    fwrite(cfg, 1, (size_t)(hit - (char *)cfg), f);
    fputs(to, f);
    fputs(hit + strlen(from), f);
  } else {
    fwrite(cfg, 1, n, f);
  }
  fclose(f);
  free(cfg);
  effml_context *ctx = tu_ctx(3);
  effml_safetensors *st = NULL;
  snprintf(src, sizeof src, "%s/%s/adapter_model.safetensors", PEFT_DIR, c);
  ck_assert_int_eq(effml_safetensors_load(ctx, src, EFFML_IO_SAFETENSORS_COPY, &st), EFFML_OK);
  int64_t nt = 0, nall = effml_safetensors_count(st);
  const char *names[16];
  const effml_tensor *ts[16];
  effml_tensor *conv[16];
  ck_assert(nall <= 16);
  for (int64_t j = 0; j < nall; ++j) {
    const effml_tensor *t = NULL;
    const char *name = effml_safetensors_name(st, j);
    if (drop_key && strcmp(name, drop_key) == 0) continue;
    int64_t i = nt++;
    names[i] = name;
    ck_assert_int_eq(effml_safetensors_get(ctx, st, names[i], &t), EFFML_OK);
    ck_assert_int_eq(effml_tensor_convert(ctx, t, EFFML_F32, &conv[i]), EFFML_OK);
    if (nan_key && strcmp(names[i], nan_key) == 0) ((float *)effml_tensor_data(conv[i]))[5] = NAN;
    ts[i] = conv[i];
  }
  snprintf(p, sizeof p, "%s/%s/adapter_model.safetensors", EFFML_TEST_TMP, dst);
  ck_assert_int_eq(effml_safetensors_save(ctx, p, nt, names, ts, 0, NULL, NULL), EFFML_OK);
  for (int64_t i = 0; i < nt; ++i) effml_tensor_free(conv[i]);
  effml_safetensors_free(st);
  effml_context_free(ctx);
}

/* a NaN in an adapter tensor: refused naming the module and the tensor, nothing written */
START_TEST(test_refuse_nonfinite) {
  char args[2048], out[512];
  struct stat sb;
  make_adapter("lora", "tool_nan", NULL, NULL, "base_model.model.q_proj.lora_A.weight", NULL);
  snprintf(out, sizeof out, "%s/tool_nan.safetensors", EFFML_TEST_TMP);
  unlink(out);
  snprintf(args, sizeof args, "merge --base %s/lora/base.safetensors --adapter %s/tool_nan --out %s", PEFT_DIR,
           EFFML_TEST_TMP, out);
  ck_assert_int_eq(run(args), 1);
  char *e = read_err();
  ck_assert_msg(strstr(e, "base_model.model.q_proj.lora_A.weight") && strstr(e, "non-finite"), "%s", e);
  free(e);
  ck_assert(stat(out, &sb) != 0);
  /* the same copy without the NaN merges (the refusal is the NaN's doing) */
  make_adapter("lora", "tool_nan", NULL, NULL, NULL, NULL);
  ck_assert_msg(run(args) == 0, "%s", read_err());
  ck_assert(stat(out, &sb) == 0);
  unlink(out);
}
END_TEST

/* expect `merge` of adapter tmp/<dir> into tests/data/peft/<base_case>/base to fail (1), with every
 * string of `want` (NULL-terminated) on stderr and no output file */
static void expect_merge_refused(const char *base_case, const char *dir, const char *const *want) {
  char args[2048], out[512];
  struct stat sb;
  snprintf(out, sizeof out, "%s/tool_refused.safetensors", EFFML_TEST_TMP);
  unlink(out);
  snprintf(args, sizeof args, "merge --base %s/%s/base.safetensors --adapter %s/%s --out %s", PEFT_DIR, base_case,
           EFFML_TEST_TMP, dir, out);
  ck_assert_int_eq(run(args), 1);
  char *e = read_err();
  for (int i = 0; want[i]; ++i) ck_assert_msg(strstr(e, want[i]) != NULL, "%s: want \"%s\" in: %s", dir, want[i], e);
  free(e);
  ck_assert(stat(out, &sb) != 0);
}

/* fan_in_fan_out that does not fit the base: an error naming fan_in_fan_out, the module and the shapes */
START_TEST(test_refuse_fan_in_fan_out) {
  const char *cases[] = {"lora", "dora", "ia3"};
  for (int i = 0; i < 3; ++i) {
    char dir[64];
    snprintf(dir, sizeof dir, "tool_fan_%s", cases[i]);
    make_adapter(cases[i], dir, "\"fan_in_fan_out\": false", "\"fan_in_fan_out\": true", NULL, NULL);
    const char *want[] = {"fan_in_fan_out=true", "base_model.model.q_proj", "[24, 40]", "q_proj.bias", "[24]", NULL};
    expect_merge_refused(cases[i], dir, want);
  }
  make_adapter("lora_conv1d_fan_in_fan_out", "tool_fan_conv1d", "\"fan_in_fan_out\": true", "\"fan_in_fan_out\": false",
               NULL, NULL);
  const char *want[] = {"fan_in_fan_out=false", "base_model.model.c_attn", "[16, 48]", "c_attn.bias", "[48]", NULL};
  expect_merge_refused("lora_conv1d_fan_in_fan_out", "tool_fan_conv1d", want);
  /* a module without a bias: the adapter's own shapes disagree, the library names fan_in_fan_out */
  effml_context *ctx = tu_ctx(4);
  effml_adapter_peft *a = NULL;
  ck_assert_int_eq(effml_adapter_peft_open(ctx, EFFML_TEST_TMP "/tool_fan_lora", &a), EFFML_OK);
  int64_t v = -1;
  for (int64_t m = 0; m < effml_adapter_peft_num_modules(a); ++m)
    if (strcmp(effml_adapter_peft_module_name(a, m), "base_model.model.v_proj") == 0) v = m;
  ck_assert_int_ge(v, 0);
  effml_layer *base = NULL, *l = NULL;
  ck_assert_int_eq(effml_adapter_conv1d_create(ctx, 16, 24, 0, &base), EFFML_OK); /* v_proj [16, 24] read as [in, out] */
  ck_assert_int_eq(effml_adapter_peft_attach(ctx, a, v, base, &l), EFFML_E_SHAPE);
  const char *e = effml_context_last_error(ctx);
  ck_assert_msg(strstr(e, "effml_adapter_peft_attach") && strstr(e, "fan_in_fan_out=true") &&
                    strstr(e, "base_model.model.v_proj") && strstr(e, "[4, 24]") && strstr(e, "[4, 16]"),
                "%s", e);
  effml_layer_free(base);
  /* a base of another size, which no fan_in_fan_out would fit: not blamed on fan_in_fan_out */
  base = NULL;
  ck_assert_int_eq(effml_adapter_conv1d_create(ctx, 10, 30, 0, &base), EFFML_OK);
  ck_assert_int_eq(effml_adapter_peft_attach(ctx, a, v, base, &l), EFFML_E_SHAPE);
  e = effml_context_last_error(ctx);
  ck_assert_msg(strstr(e, "base_model.model.v_proj") && strstr(e, "in_features=10, out_features=30") &&
                    strstr(e, "not a fan_in_fan_out or r question") && !strstr(e, "check fan_in_fan_out"),
                "%s", e);
  effml_layer_free(base); /* the caller keeps the base on error */
  effml_adapter_peft_free(a);
  effml_context_free(ctx);
}
END_TEST

/* The lora fixture's base plus `extra` small F32 tensors "zz.extra.NNNN" (copied
 * unchanged by a merge): many tensors, so many progress lines. */
static void make_many_tensor_base(const char *path, int extra) {
  effml_context *ctx = tu_ctx(1);
  effml_safetensors *b = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, PEFT_DIR "/lora/base.safetensors", EFFML_IO_SAFETENSORS_COPY, &b),
                   EFFML_OK);
  const int64_t nb = effml_safetensors_count(b), n = nb + extra;
  const char **names = (const char **)calloc((size_t)n, sizeof *names);
  const effml_tensor **ts = (const effml_tensor **)calloc((size_t)n, sizeof *ts);
  enum { NAME_STRIDE = 32 }; /* "zz.extra." + any int + NUL fits: no truncation */
  char *nbuf = (char *)calloc((size_t)extra, NAME_STRIDE);
  effml_tensor **own = (effml_tensor **)calloc((size_t)extra, sizeof *own);
  for (int64_t i = 0; i < nb; ++i) {
    names[i] = effml_safetensors_name(b, i);
    ck_assert_int_eq(effml_safetensors_get(ctx, b, names[i], &ts[i]), EFFML_OK);
  }
  const int64_t four = 4;
  for (int k = 0; k < extra; ++k) {
    snprintf(nbuf + NAME_STRIDE * k, NAME_STRIDE, "zz.extra.%04d", k);
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, &four, &own[k]), EFFML_OK);
    ck_assert_int_eq(effml_tensor_fill(ctx, own[k], (double)k), EFFML_OK);
    names[nb + k] = nbuf + NAME_STRIDE * k;
    ts[nb + k] = own[k];
  }
  ck_assert_int_eq(effml_safetensors_save(ctx, path, n, names, ts, 0, NULL, NULL), EFFML_OK);
  for (int k = 0; k < extra; ++k) effml_tensor_free(own[k]);
  free(own);
  free(nbuf);
  free(ts);
  free(names);
  effml_safetensors_free(b);
  effml_context_free(ctx);
}

static int count_lines_with(const char *s, const char *needle) {
  int k = 0;
  for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle)) ++k;
  return k;
}

/* --progress on a pipe: one line per tensor, in order, then "done"; none without it. */
START_TEST(test_merge_progress) {
  char base[512], out[512], args[2048];
  snprintf(base, sizeof base, "%s/tool_many.safetensors", EFFML_TEST_TMP);
  snprintf(out, sizeof out, "%s/tool_many_out.safetensors", EFFML_TEST_TMP);
  make_many_tensor_base(base, 40);
  effml_context *ctx = tu_ctx(1);
  effml_safetensors *b = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, base, EFFML_IO_SAFETENSORS_COPY, &b), EFFML_OK);
  const int n = (int)effml_safetensors_count(b);
  const char *first = effml_safetensors_name(b, 0);
  snprintf(args, sizeof args, "merge --base %s --adapter %s/lora --out %s --progress", base, PEFT_DIR, out);
  ck_assert_int_eq(run(args), 0);
  char *e = read_err();
  char want[256];
  snprintf(want, sizeof want, "effml-adapter: [1/%d] 0.0%% ", n);
  ck_assert_msg(strstr(e, want) != NULL, "%s", e);
  ck_assert_msg(strstr(strstr(e, want), first) != NULL, "the first line names %s: %s", first, e);
  snprintf(want, sizeof want, "/%d] ", n);
  ck_assert_int_eq(count_lines_with(e, want), n + 1);          /* every tensor, then done */
  ck_assert_int_eq(count_lines_with(e, "% merging "), 2);      /* q_proj and v_proj weights */
  ck_assert_int_eq(count_lines_with(e, "% copying zz.extra."), 40);
  snprintf(want, sizeof want, "effml-adapter: [%d/%d] 100.0%% done", n, n);
  ck_assert_msg(strstr(e, want) != NULL, "%s", e);
  free(e);
  snprintf(args, sizeof args, "merge --base %s --adapter %s/lora --out %s", base, PEFT_DIR, out);
  ck_assert_int_eq(run(args), 0); /* stderr is not a terminal: no progress lines */
  e = read_err();
  ck_assert_msg(strstr(e, "] ") == NULL && strstr(e, "merging base_model.model.q_proj") != NULL, "%s", e);
  free(e);
  effml_safetensors_free(b);
  effml_context_free(ctx);
  unlink(out);
  unlink(base);
}
END_TEST

/* SIGINT / SIGTERM during a merge: exit 128 + signal, --out keeps its old bytes, no
 * temporary file left.  The signal is sent after the first progress line; the tool
 * cannot have finished by then: its 4000 progress lines (~220 KB) do not fit in the
 * pipe, which this test does not read until after the signal. */
START_TEST(test_merge_interrupted) {
  char base[512], out[512];
  snprintf(base, sizeof base, "%s/tool_sig_base.safetensors", EFFML_TEST_TMP);
  snprintf(out, sizeof out, "%s/tool_sig_out.safetensors", EFFML_TEST_TMP);
  make_many_tensor_base(base, 4000);
  const int sigs[2] = {SIGINT, SIGTERM};
  for (int si = 0; si < 2; ++si) {
    static const char old[] = "the previous contents of --out";
    FILE *f = fopen(out, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(old, 1, sizeof old, f), sizeof old);
    fclose(f);
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      dup2(pfd[1], 2);
      close(pfd[0]);
      close(pfd[1]);
      int dn = open("/dev/null", O_WRONLY);
      dup2(dn, 1);
      execl(EFFML_ADAPTER_TOOL, EFFML_ADAPTER_TOOL, "merge", "--base", base, "--adapter", PEFT_DIR "/lora", "--out",
            out, "--progress", (char *)NULL);
      _exit(127);
    }
    close(pfd[1]);
    FILE *r = fdopen(pfd[0], "r");
    ck_assert_ptr_nonnull(r);
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, r)); /* the handlers are installed by now */
    ck_assert_msg(strncmp(line, "effml-adapter: [1/", 18) == 0, "%s", line);
    ck_assert_int_eq(kill(pid, sigs[si]), 0);
    size_t cap = 1 << 20, len = 0;
    char *all = (char *)malloc(cap);
    for (size_t k; (k = fread(all + len, 1, cap - 1 - len, r)) > 0;) len += k;
    all[len] = '\0';
    fclose(r);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 128 + sigs[si], "status %d: %s", status, all);
    ck_assert_msg(strstr(all, si == 0 ? "interrupted by SIGINT: nothing written" : "interrupted by SIGTERM") != NULL,
                  "%s", all);
    ck_assert_msg(strstr(all, "100.0% done") == NULL, "the merge ran to its end: %s", all);
    free(all);
    size_t n = 0;
    unsigned char *now = tu_read_file(out, &n);
    ck_assert_uint_eq(n, sizeof old);
    ck_assert_int_eq(memcmp(now, old, sizeof old), 0);
    free(now);
    DIR *d = opendir(EFFML_TEST_TMP);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *de; (de = readdir(d)) != NULL;)
      ck_assert_msg(strncmp(de->d_name, "tool_sig_out.safetensors.tmp", 28) != 0, "left behind: %s", de->d_name);
    closedir(d);
  }
  unlink(out);
  unlink(base);
}
END_TEST

/* ---- sharded checkpoints (model.safetensors.index.json) ---- */

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

/* A sharded copy of PEFT_DIR/<c>/base.safetensors in tmp/<dst>/ (created): SHARD1 holds the
 * weights, SHARD2 the biases (so a module's weight and bias lie in different shards; swapped when
 * bias_first) and `extra` small tensors "zz.extra.NNNN"; model.safetensors.index.json lists them
 * all, with "total_size": 1 (wrong on purpose: merge recomputes it).  Returns the number of
 * tensors. */
static int make_sharded_order(const char *c, const char *dst, int extra, int bias_first) {
  char p[700];
  snprintf(p, sizeof p, "%s/%s", EFFML_TEST_TMP, dst);
  mkdir(p, 0755);
  effml_context *ctx = tu_ctx(1);
  effml_safetensors *b = NULL;
  snprintf(p, sizeof p, "%s/%s/base.safetensors", PEFT_DIR, c);
  ck_assert_int_eq(effml_safetensors_load(ctx, p, EFFML_IO_SAFETENSORS_COPY, &b), EFFML_OK);
  const int64_t nb = effml_safetensors_count(b);
  const int n = (int)nb + extra;
  const char **names[2];
  const effml_tensor **ts[2];
  int cnt[2] = {0, 0};
  for (int s = 0; s < 2; ++s) {
    names[s] = (const char **)calloc((size_t)n, sizeof(char *));
    ts[s] = (const effml_tensor **)calloc((size_t)n, sizeof(effml_tensor *));
  }
  char *nbuf = (char *)calloc((size_t)(extra ? extra : 1), 32);
  effml_tensor **own = (effml_tensor **)calloc((size_t)(extra ? extra : 1), sizeof *own);
  for (int64_t i = 0; i < nb; ++i) {
    const char *name = effml_safetensors_name(b, i);
    int s = (strstr(name, ".bias") != NULL) != (bias_first != 0);
    names[s][cnt[s]] = name;
    ck_assert_int_eq(effml_safetensors_get(ctx, b, name, &ts[s][cnt[s]++]), EFFML_OK);
  }
  const int64_t four = 4;
  for (int k = 0; k < extra; ++k) {
    snprintf(nbuf + 32 * k, 32, "zz.extra.%04d", k);
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, &four, &own[k]), EFFML_OK);
    ck_assert_int_eq(effml_tensor_fill(ctx, own[k], (double)k), EFFML_OK);
    names[1][cnt[1]] = nbuf + 32 * k;
    ts[1][cnt[1]++] = own[k];
  }
  snprintf(p, sizeof p, "%s/%s/model.safetensors.index.json", EFFML_TEST_TMP, dst);
  FILE *f = fopen(p, "wb");
  ck_assert_ptr_nonnull(f);
  fputs("{\n  \"metadata\": {\n    \"total_size\": 1\n  },\n  \"weight_map\": {", f);
  for (int s = 0, first = 1; s < 2; ++s) {
    char sp[700];
    snprintf(sp, sizeof sp, "%s/%s/%s", EFFML_TEST_TMP, dst, s ? SHARD2 : SHARD1);
    ck_assert_int_eq(effml_safetensors_save(ctx, sp, cnt[s], names[s], ts[s], 0, NULL, NULL), EFFML_OK);
    for (int i = 0; i < cnt[s]; ++i, first = 0)
      fprintf(f, "%s\n    \"%s\": \"%s\"", first ? "" : ",", names[s][i], s ? SHARD2 : SHARD1);
  }
  fputs("\n  }\n}\n", f);
  fclose(f);
  for (int k = 0; k < extra; ++k) effml_tensor_free(own[k]);
  free(own);
  free(nbuf);
  for (int s = 0; s < 2; ++s) {
    free(names[s]);
    free(ts[s]);
  }
  effml_safetensors_free(b);
  effml_context_free(ctx);
  return n;
}

static int make_sharded(const char *c, const char *dst, int extra) { return make_sharded_order(c, dst, extra, 0); }

/* Replace the first `from` in file `path` by `to`. */
static void edit_file(const char *path, const char *from, const char *to) {
  size_t n = 0;
  unsigned char *b = tu_read_file(path, &n);
  ck_assert_ptr_nonnull(b);
  char *t = (char *)calloc(n + 1, 1);
  memcpy(t, b, n);
  free(b);
  char *hit = strstr(t, from);
  ck_assert_msg(hit != NULL, "%s: no \"%s\"", path, from);
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  fwrite(t, 1, (size_t)(hit - t), f);
  fputs(to, f);
  fputs(hit + strlen(from), f);
  fclose(f);
  free(t);
}

/* Number of entries of folder `d` (without . and ..), and whether one has ".tmp." in its name. */
static int count_dir(const char *d, int *has_tmp) {
  DIR *dp = opendir(d);
  ck_assert_ptr_nonnull(dp);
  int n = 0;
  *has_tmp = 0;
  for (struct dirent *de; (de = readdir(dp)) != NULL;) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    ++n;
    if (strstr(de->d_name, ".tmp.")) *has_tmp = 1;
  }
  closedir(dp);
  return n;
}

/* Data bytes (sum of tensor sizes) and header length of a safetensors file. */
static uint64_t data_bytes(const char *path, size_t *hlen) {
  size_t n = 0;
  unsigned char *b = tu_read_file(path, &n);
  ck_assert_ptr_nonnull(b);
  *hlen = header_len(b);
  uint64_t d = (uint64_t)(n - *hlen);
  free(b);
  return d;
}

/* A sharded base merges shard by shard into files with the same names, bit-identical to merging
 * the single-file base (so to PEFT's merge_and_unload() within 2e-6, checked by check_case), with
 * each shard's header kept byte for byte, the weight_map kept and total_size recomputed; a bias in
 * another shard than its weight (IA3, lora_bias) is merged too; no temporary file is left. */
START_TEST(test_merge_sharded) {
  const char *cases[] = {"lora", "ia3", "dora", "lokr", "loha"};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
    char dst[64], out_dir[600], args[3000], single[600], idx_out[700];
    snprintf(dst, sizeof dst, "shard_%s", cases[c]);
    const int n = make_sharded(cases[c], dst, 3);
    snprintf(out_dir, sizeof out_dir, "%s/%s_out", EFFML_TEST_TMP, dst);
    mkdir(out_dir, 0755);
    snprintf(idx_out, sizeof idx_out, "%s/model.safetensors.index.json", out_dir);
    snprintf(args, sizeof args, "merge --base %s/%s/model.safetensors.index.json --adapter %s/%s --out %s --progress",
             EFFML_TEST_TMP, dst, PEFT_DIR, cases[c], idx_out);
    ck_assert_msg(run(args) == 0, "%s: %s", cases[c], read_err());
    char *e = read_err();
    char want[128];
    snprintf(want, sizeof want, "effml-adapter: [%d/%d] 100.0%% done", n, n);
    ck_assert_msg(strstr(e, want) && strstr(e, "and its 2 shards"), "%s: %s", cases[c], e);
    snprintf(want, sizeof want, "/%d] ", n);
    ck_assert_int_eq(count_lines_with(e, want), n + 1); /* every tensor of both shards, then done */
    free(e);
    int has_tmp = 0;
    ck_assert_int_eq(count_dir(out_dir, &has_tmp), 3); /* two shards and the index */
    ck_assert(!has_tmp);
    /* the single-file merge of the same base: the reference bytes */
    snprintf(single, sizeof single, "%s/%s_single.safetensors", EFFML_TEST_TMP, dst);
    snprintf(args, sizeof args, "merge --base %s/%s/base.safetensors --adapter %s/%s --out %s", PEFT_DIR, cases[c],
             PEFT_DIR, cases[c], single);
    ck_assert_int_eq(run(args), 0);
    effml_context *ctx = tu_ctx(1);
    effml_safetensors *ref = NULL;
    ck_assert_int_eq(effml_safetensors_load(ctx, single, EFFML_IO_SAFETENSORS_COPY, &ref), EFFML_OK);
    int seen = 0;
    uint64_t total = 0;
    for (int s = 0; s < 2; ++s) {
      char in[700], out[700];
      snprintf(in, sizeof in, "%s/%s/%s", EFFML_TEST_TMP, dst, s ? SHARD2 : SHARD1);
      snprintf(out, sizeof out, "%s/%s", out_dir, s ? SHARD2 : SHARD1);
      size_t li = 0, lo = 0, hi = 0, ho = 0;
      unsigned char *fi = tu_read_file(in, &li), *fo = tu_read_file(out, &lo);
      ck_assert(li == lo && header_len(fi) == header_len(fo) && memcmp(fi, fo, header_len(fi)) == 0);
      free(fi);
      free(fo);
      total += data_bytes(out, &ho);
      (void)hi;
      effml_safetensors *got = NULL;
      ck_assert_int_eq(effml_safetensors_load(ctx, out, EFFML_IO_SAFETENSORS_COPY, &got), EFFML_OK);
      for (int64_t i = 0; i < effml_safetensors_count(got); ++i) {
        const char *name = effml_safetensors_name(got, i);
        const effml_tensor *x = NULL, *y = NULL;
        ck_assert_int_eq(effml_safetensors_get(ctx, got, name, &x), EFFML_OK);
        if (strncmp(name, "zz.extra.", 9) == 0) { /* copied: the value it was made with */
          const float *q = effml_tensor_data_const(x);
          ck_assert(q[0] == (float)atoi(name + 9) && q[3] == q[0]);
          continue;
        }
        ck_assert_int_eq(effml_safetensors_get(ctx, ref, name, &y), EFFML_OK);
        ck_assert_msg(effml_tensor_nbytes(x) == effml_tensor_nbytes(y) &&
                          memcmp(effml_tensor_data_const(x), effml_tensor_data_const(y), effml_tensor_nbytes(y)) == 0,
                      "%s: %s differs from the single-file merge", cases[c], name);
        ++seen;
      }
      effml_safetensors_free(got);
    }
    ck_assert_int_eq(seen, (int)effml_safetensors_count(ref));
    effml_safetensors_free(ref);
    effml_context_free(ctx);
    /* the index: total_size recomputed, the weight_map as given */
    size_t li = 0;
    unsigned char *ib = tu_read_file(idx_out, &li);
    char *itxt = (char *)calloc(li + 1, 1);
    memcpy(itxt, ib, li);
    free(ib);
    cJSON *got = cJSON_Parse(itxt), *in = NULL;
    ck_assert_msg(got != NULL, "%s", itxt);
    snprintf(args, sizeof args, "%s/%s/model.safetensors.index.json", EFFML_TEST_TMP, dst);
    ib = tu_read_file(args, &li);
    char *t2 = (char *)calloc(li + 1, 1);
    memcpy(t2, ib, li);
    free(ib);
    in = cJSON_Parse(t2);
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(got, "metadata"), "total_size");
    ck_assert_msg(cJSON_IsNumber(ts) && (uint64_t)ts->valuedouble == total, "%s: total_size in %s", cases[c], itxt);
    ck_assert(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(got, "weight_map"),
                            cJSON_GetObjectItemCaseSensitive(in, "weight_map"), 1));
    ck_assert_int_eq(cJSON_GetArraySize(got), 2);
    cJSON_Delete(got);
    cJSON_Delete(in);
    free(itxt);
    free(t2);
    unlink(single);
  }
  /* in place: --out is the base index; the shards are replaced by the merged ones */
  make_sharded("lora", "shard_inplace", 0);
  char args[2048], idx[600], ref[600];
  snprintf(idx, sizeof idx, "%s/shard_inplace/model.safetensors.index.json", EFFML_TEST_TMP);
  snprintf(args, sizeof args, "merge --base %s --adapter %s/lora --out %s", idx, PEFT_DIR, idx);
  ck_assert_msg(run(args) == 0, "%s", read_err());
  snprintf(ref, sizeof ref, "%s/shard_lora_out/" SHARD1, EFFML_TEST_TMP);
  snprintf(args, sizeof args, "%s/shard_inplace/" SHARD1, EFFML_TEST_TMP);
  size_t la = 0, lb = 0;
  unsigned char *fa = tu_read_file(args, &la), *fb = tu_read_file(ref, &lb);
  ck_assert(la == lb && memcmp(fa, fb, la) == 0);
  free(fa);
  free(fb);
  int has_tmp = 0;
  snprintf(args, sizeof args, "%s/shard_inplace", EFFML_TEST_TMP);
  ck_assert_int_eq(count_dir(args, &has_tmp), 3);
  ck_assert(!has_tmp);
}
END_TEST

/* Each module is merged once, also when its weight and its changed bias (IA3 output scaling: the
 * fixtures' one mergeable adapter that changes a bias) lie in different shards, weight first or
 * bias first: without --progress the tool
 * names every merge it makes ("effml-adapter: merging M"), and each module appears exactly once;
 * the shards are still bit-identical to the single-file merge. */
START_TEST(test_merge_sharded_merges_once) {
  const char *cases[] = {"ia3"};
  for (size_t c = 0; c < 1; ++c)
    for (int bias_first = 0; bias_first < 2; ++bias_first) {
      char dst[64], out_dir[600], args[3000], single[600], idx_out[700];
      snprintf(dst, sizeof dst, "shard_once_%s_%d", cases[c], bias_first);
      make_sharded_order(cases[c], dst, 2, bias_first);
      snprintf(out_dir, sizeof out_dir, "%s/%s_out", EFFML_TEST_TMP, dst);
      mkdir(out_dir, 0755);
      snprintf(idx_out, sizeof idx_out, "%s/model.safetensors.index.json", out_dir);
      snprintf(args, sizeof args, "merge --base %s/%s/model.safetensors.index.json --adapter %s/%s --out %s --no-progress",
               EFFML_TEST_TMP, dst, PEFT_DIR, cases[c], idx_out);
      ck_assert_msg(run(args) == 0, "%s: %s", cases[c], read_err());
      char *e = read_err();
      effml_context *ctx = tu_ctx(1);
      effml_adapter_peft *a = NULL;
      snprintf(args, sizeof args, "%s/%s", PEFT_DIR, cases[c]);
      ck_assert_int_eq(effml_adapter_peft_open(ctx, args, &a), EFFML_OK);
      const int64_t nm = effml_adapter_peft_num_modules(a);
      ck_assert_int_ge(nm, 2);
      ck_assert_int_eq(count_lines_with(e, "effml-adapter: merging "), (int)nm);
      for (int64_t m = 0; m < nm; ++m) {
        char want[256];
        snprintf(want, sizeof want, "effml-adapter: merging %s\n", effml_adapter_peft_module_name(a, m));
        ck_assert_msg(count_lines_with(e, want) == 1, "%s (bias_first=%d): %s merged %d times:\n%s", cases[c],
                      bias_first, effml_adapter_peft_module_name(a, m), count_lines_with(e, want), e);
      }
      effml_adapter_peft_free(a);
      free(e);
      snprintf(single, sizeof single, "%s/%s_single.safetensors", EFFML_TEST_TMP, dst);
      snprintf(args, sizeof args, "merge --base %s/%s/base.safetensors --adapter %s/%s --out %s", PEFT_DIR, cases[c],
               PEFT_DIR, cases[c], single);
      ck_assert_int_eq(run(args), 0);
      effml_safetensors *ref = NULL, *base = NULL;
      ck_assert_int_eq(effml_safetensors_load(ctx, single, EFFML_IO_SAFETENSORS_COPY, &ref), EFFML_OK);
      snprintf(args, sizeof args, "%s/%s/base.safetensors", PEFT_DIR, cases[c]);
      ck_assert_int_eq(effml_safetensors_load(ctx, args, EFFML_IO_SAFETENSORS_COPY, &base), EFFML_OK);
      int seen = 0, changed_bias = 0;
      for (int s = 0; s < 2; ++s) {
        char out[700];
        snprintf(out, sizeof out, "%s/%s", out_dir, s ? SHARD2 : SHARD1);
        effml_safetensors *got = NULL;
        ck_assert_int_eq(effml_safetensors_load(ctx, out, EFFML_IO_SAFETENSORS_COPY, &got), EFFML_OK);
        for (int64_t i = 0; i < effml_safetensors_count(got); ++i) {
          const char *name = effml_safetensors_name(got, i);
          if (strncmp(name, "zz.extra.", 9) == 0) continue;
          const effml_tensor *x = NULL, *y = NULL, *b0 = NULL;
          ck_assert_int_eq(effml_safetensors_get(ctx, got, name, &x), EFFML_OK);
          ck_assert_int_eq(effml_safetensors_get(ctx, ref, name, &y), EFFML_OK);
          ck_assert_int_eq(effml_safetensors_get(ctx, base, name, &b0), EFFML_OK);
          ck_assert_msg(effml_tensor_nbytes(x) == effml_tensor_nbytes(y) &&
                            memcmp(effml_tensor_data_const(x), effml_tensor_data_const(y), effml_tensor_nbytes(y)) == 0,
                        "%s (bias_first=%d): %s differs from the single-file merge", cases[c], bias_first, name);
          if (strstr(name, ".bias") &&
              memcmp(effml_tensor_data_const(x), effml_tensor_data_const(b0), effml_tensor_nbytes(b0)) != 0)
            ++changed_bias; /* the stashed bias is the merged one, not the base's */
          ++seen;
        }
        effml_safetensors_free(got);
      }
      ck_assert_int_eq(seen, (int)effml_safetensors_count(ref));
      ck_assert_int_ge(changed_bias, 1);
      effml_safetensors_free(ref);
      effml_safetensors_free(base);
      effml_context_free(ctx);
      unlink(single);
    }
}
END_TEST

/* An output of several 16 MiB pieces (the lora fixture plus a 40 MiB tensor "zz.big"): the tool
 * writes drop-behind (each piece sent to disk as written, the one before it dropped from the page
 * cache once on disk), and the file is still exact: header byte for byte, the merged weights
 * bit-identical to the merge of the fixture's own base, the big tensor's bytes unchanged.  On the
 * disk file systems whose page cache honours POSIX_FADV_DONTNEED (ext4, xfs, btrfs) most of the
 * output is no longer resident afterwards (mincore), which a plain write leaves resident. */
START_TEST(test_merge_drop_behind_large) {
  char base[512], out[512], ref[512], args[2048];
  snprintf(base, sizeof base, "%s/tool_big.safetensors", EFFML_TEST_TMP);
  snprintf(out, sizeof out, "%s/tool_big_out.safetensors", EFFML_TEST_TMP);
  snprintf(ref, sizeof ref, "%s/tool_big_ref.safetensors", EFFML_TEST_TMP);
  effml_context *ctx = tu_ctx(1);
  effml_safetensors *b = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, PEFT_DIR "/lora/base.safetensors", EFFML_IO_SAFETENSORS_COPY, &b),
                   EFFML_OK);
  const int64_t nb = effml_safetensors_count(b), nbig = (int64_t)10 << 20; /* 40 MiB of f32 */
  const char *names[16];
  const effml_tensor *ts[16];
  ck_assert_int_lt(nb, 15);
  for (int64_t i = 0; i < nb; ++i) {
    names[i] = effml_safetensors_name(b, i);
    ck_assert_int_eq(effml_safetensors_get(ctx, b, names[i], &ts[i]), EFFML_OK);
  }
  effml_tensor *big = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, &nbig, &big), EFFML_OK);
  float *bp = (float *)effml_tensor_data(big);
  for (int64_t i = 0; i < nbig; ++i) bp[i] = (float)(i % 1000003) * 0.25f;
  names[nb] = "zz.big";
  ts[nb] = big;
  ck_assert_int_eq(effml_safetensors_save(ctx, base, nb + 1, names, ts, 0, NULL, NULL), EFFML_OK);
  snprintf(args, sizeof args, "merge --base %s --adapter %s/lora --out %s", base, PEFT_DIR, out);
  ck_assert_msg(run(args) == 0, "%s", read_err());
  snprintf(args, sizeof args, "merge --base %s/lora/base.safetensors --adapter %s/lora --out %s", PEFT_DIR, PEFT_DIR,
           ref);
  ck_assert_int_eq(run(args), 0);
  struct stat st;
  ck_assert_int_eq(stat(out, &st), 0);
  ck_assert_int_gt(st.st_size, (off_t)2 << 24); /* three pieces of 16 MiB, the last one partial */
  /* residency first, before reading the file back pulls it into the cache */
  struct statfs sf;
  const long fs = statfs(out, &sf) == 0 ? (long)sf.f_type : 0;
  if (fs == 0xEF53 || fs == 0x58465342 || fs == (long)0x9123683E) { /* ext2/3/4, xfs, btrfs */
    int fd = open(out, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    ck_assert(m != MAP_FAILED);
    const long pg = sysconf(_SC_PAGESIZE);
    const size_t np = ((size_t)st.st_size + (size_t)pg - 1) / (size_t)pg;
    unsigned char *vec = (unsigned char *)malloc(np);
    ck_assert_int_eq(mincore(m, (size_t)st.st_size, vec), 0);
    size_t res = 0;
    for (size_t i = 0; i < np; ++i) res += vec[i] & 1;
    ck_assert_msg(res * 2 < np, "%zu of %zu pages of the output still cached: not written drop-behind", res, np);
    free(vec);
    munmap(m, (size_t)st.st_size);
    close(fd);
  }
  effml_safetensors *o = NULL, *r = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, out, EFFML_IO_SAFETENSORS_COPY, &o), EFFML_OK);
  ck_assert_int_eq(effml_safetensors_load(ctx, ref, EFFML_IO_SAFETENSORS_COPY, &r), EFFML_OK);
  ck_assert_int_eq(effml_safetensors_count(o), nb + 1);
  for (int64_t i = 0; i < nb + 1; ++i) {
    const effml_tensor *x = NULL, *y = NULL;
    ck_assert_int_eq(effml_safetensors_get(ctx, o, names[i], &x), EFFML_OK);
    y = i < nb ? NULL : big;
    if (i < nb) ck_assert_int_eq(effml_safetensors_get(ctx, r, names[i], &y), EFFML_OK);
    ck_assert_msg(effml_tensor_nbytes(x) == effml_tensor_nbytes(y) &&
                      memcmp(effml_tensor_data_const(x), effml_tensor_data_const(y), effml_tensor_nbytes(y)) == 0,
                  "%s differs", names[i]);
  }
  size_t lb = 0, lo = 0;
  unsigned char *fb = tu_read_file(base, &lb), *fo = tu_read_file(out, &lo);
  ck_assert(lb == lo && header_len(fb) == header_len(fo) && memcmp(fb, fo, header_len(fb)) == 0);
  free(fb);
  free(fo);
  effml_safetensors_free(o);
  effml_safetensors_free(r);
  effml_tensor_free(big);
  effml_safetensors_free(b);
  effml_context_free(ctx);
  unlink(base);
  unlink(out);
  unlink(ref);
}
END_TEST

/* What the index says that the tool cannot follow is refused naming it, with nothing written. */
START_TEST(test_merge_sharded_refusals) {
  struct {
    const char *from, *to, *want;
  } bad[] = {
      {"{\n  \"metadata\"", "{\n  \"format_version\": 2,\n  \"metadata\"", "unknown field \"format_version\""},
      {"\"total_size\": 1", "\"total_size\": 1, \"dtype\": \"bfloat16\"", "unknown metadata field \"dtype\""},
      {"\"q_proj.weight\": \"" SHARD1 "\"", "\"q_proj.weight\": \"model-00003-of-00003.safetensors\"",
       "weight_map names shard \"model-00003-of-00003.safetensors\" (for tensor \"q_proj.weight\")"},
      {"\"weight_map\": {", "\"weight_map\": {\n    \"k_proj.weight\": \"" SHARD1 "\",",
       "weight_map names tensor \"k_proj.weight\" in shard \"" SHARD1 "\""},
      {"\"v_proj.weight\": \"" SHARD1 "\",", "",
       "shard \"" SHARD1 "\" holds tensor \"v_proj.weight\", which weight_map does not list"},
      {"\"v_proj.weight\": \"" SHARD1 "\"", "\"v_proj.weight\": \"" SHARD2 "\"",
       "weight_map names tensor \"v_proj.weight\" in shard \"" SHARD2 "\""},
      {"\"q_proj.bias\": \"" SHARD2 "\"", "\"q_proj.bias\": \"../" SHARD2 "\"",
       "weight_map[\"q_proj.bias\"]=\"../" SHARD2 "\" is not a shard file name beside the index"},
      {"\"weight_map\": {", "\"weight_map\": {\n    \"q_proj.weight\": \"" SHARD2 "\",",
       "weight_map lists tensor \"q_proj.weight\" twice"},
      {"\"weight_map\": {", "\"weight_map\": 3, \"metadata\": {", "field \"metadata\" appears twice"},
      {"\"metadata\": {\n    \"total_size\": 1\n  },\n  \"weight_map\"", "\"metadata\": {\"total_size\": 1}, \"weight_map\": {}, \"x\"",
       "unknown field \"x\""},
      {"\"weight_map\": {", "\"weight_map\": [], \"y\": {", "unknown field \"y\""},
      {"\"total_size\": 1", "\"total_size\": \"5548\"",
       "model.safetensors.index.json: metadata field \"total_size\" is \"5548\", not a number\n"},
      {"\"total_size\": 1", "\"total_size\": -1",
       "model.safetensors.index.json: metadata field \"total_size\" is -1, not a non-negative integer (a count of "
       "bytes or elements)\n"},
      {"\"total_size\": 1", "\"total_size\": 1, \"total_parameters\": 2.5",
       "model.safetensors.index.json: metadata field \"total_parameters\" is 2.5, not a non-negative integer (a count "
       "of bytes or elements)\n"},
      {"\"total_size\": 1", "\"total_size\": 1, \"format\": \"pt\"", "unknown metadata field \"format\""},
  };
  char out_dir[600], idx[600], args[2048];
  snprintf(out_dir, sizeof out_dir, "%s/shard_bad_out", EFFML_TEST_TMP);
  mkdir(out_dir, 0755);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    char dst[64];
    snprintf(dst, sizeof dst, "shard_bad%zu", i);
    make_sharded("lora", dst, 0);
    snprintf(idx, sizeof idx, "%s/%s/model.safetensors.index.json", EFFML_TEST_TMP, dst);
    edit_file(idx, bad[i].from, bad[i].to);
    snprintf(args, sizeof args, "merge --base %s --adapter %s/lora --out %s/model.safetensors.index.json", idx,
             PEFT_DIR, out_dir);
    ck_assert_int_eq(run(args), 1);
    char *e = read_err();
    ck_assert_msg(strstr(e, bad[i].want) != NULL, "case %zu: %s\nlacks: %s", i, e, bad[i].want);
    free(e);
    int has_tmp = 0;
    ck_assert_int_eq(count_dir(out_dir, &has_tmp), 0); /* nothing written */
  }
  /* --out: not an index; in the base's folder under another name; a folder that does not exist */
  make_sharded("lora", "shard_outs", 0);
  snprintf(idx, sizeof idx, "%s/shard_outs/model.safetensors.index.json", EFFML_TEST_TMP);
  snprintf(args, sizeof args, "merge --base %s --adapter %s/lora --out %s/merged.safetensors", idx, PEFT_DIR, out_dir);
  ck_assert_int_eq(run(args), 1);
  char *e = read_err();
  ck_assert_msg(strstr(e, "so --out must name the output index"), "%s", e);
  free(e);
  snprintf(args, sizeof args, "merge --base %s --adapter %s/lora --out %s/shard_outs/merged.index.json", idx, PEFT_DIR,
           EFFML_TEST_TMP);
  ck_assert_int_eq(run(args), 1);
  e = read_err();
  ck_assert_msg(strstr(e, "would replace the base's shards"), "%s", e);
  free(e);
  snprintf(args, sizeof args, "merge --base %s --adapter %s/lora --out %s/no-such-dir/m.index.json", idx, PEFT_DIR,
           EFFML_TEST_TMP);
  ck_assert_int_eq(run(args), 1);
  e = read_err();
  ck_assert_msg(strstr(e, "no-such-dir does not exist"), "%s", e);
  free(e);
  int has_tmp = 0;
  snprintf(args, sizeof args, "%s/shard_outs", EFFML_TEST_TMP);
  ck_assert_int_eq(count_dir(args, &has_tmp), 3); /* the base untouched: 2 shards + index */
  ck_assert_int_eq(count_dir(out_dir, &has_tmp), 0);
  /* --dry-run lists the merges over the shards */
  snprintf(args, sizeof args, "merge --base %s --adapter %s/lora --dry-run", idx, PEFT_DIR);
  int rc = -1;
  char *o = run_out(args, &rc);
  ck_assert_msg(rc == 0 && strstr(o, "merge base_model.model.q_proj -> q_proj.weight [24, 40]") &&
                    strstr(o, "1 other tensors copied unchanged (2 shards)"),
                "%s", o);
  free(o);
}
END_TEST

/* SIGINT / SIGTERM during a sharded merge: exit 128 + signal, the output index and shards keep
 * their old bytes, no temporary file left (as test_merge_interrupted, over two shards) */
START_TEST(test_merge_sharded_interrupted) {
  make_sharded("lora", "shard_sig", 4000);
  char idx[600], out_dir[600], out_idx[700];
  snprintf(idx, sizeof idx, "%s/shard_sig/model.safetensors.index.json", EFFML_TEST_TMP);
  snprintf(out_dir, sizeof out_dir, "%s/shard_sig_out", EFFML_TEST_TMP);
  mkdir(out_dir, 0755);
  snprintf(out_idx, sizeof out_idx, "%s/model.safetensors.index.json", out_dir);
  static const char old[] = "the previous contents";
  const char *olds[3] = {out_idx, SHARD1, SHARD2};
  char paths[3][800];
  for (int j = 0; j < 3; ++j) {
    if (j == 0) snprintf(paths[j], sizeof paths[j], "%s", out_idx);
    else snprintf(paths[j], sizeof paths[j], "%s/%s", out_dir, olds[j]);
  }
  const int sigs[2] = {SIGINT, SIGTERM};
  for (int si = 0; si < 2; ++si) {
    for (int j = 0; j < 3; ++j) {
      FILE *f = fopen(paths[j], "wb");
      ck_assert_ptr_nonnull(f);
      ck_assert_uint_eq(fwrite(old, 1, sizeof old, f), sizeof old);
      fclose(f);
    }
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      dup2(pfd[1], 2);
      close(pfd[0]);
      close(pfd[1]);
      int dn = open("/dev/null", O_WRONLY);
      dup2(dn, 1);
      execl(EFFML_ADAPTER_TOOL, EFFML_ADAPTER_TOOL, "merge", "--base", idx, "--adapter", PEFT_DIR "/lora", "--out",
            out_idx, "--progress", (char *)NULL);
      _exit(127);
    }
    close(pfd[1]);
    FILE *r = fdopen(pfd[0], "r");
    ck_assert_ptr_nonnull(r);
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, r));
    ck_assert_msg(strncmp(line, "effml-adapter: [1/", 18) == 0, "%s", line);
    ck_assert_int_eq(kill(pid, sigs[si]), 0);
    size_t cap = 1 << 20, len = 0;
    char *all = (char *)malloc(cap);
    for (size_t k; (k = fread(all + len, 1, cap - 1 - len, r)) > 0;) len += k;
    all[len] = '\0';
    fclose(r);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 128 + sigs[si], "status %d: %s", status, all);
    ck_assert_msg(strstr(all, "and its shards are as they were; the temporary files are removed"), "%s", all);
    ck_assert_msg(strstr(all, "100.0% done") == NULL, "the merge ran to its end: %s", all);
    free(all);
    for (int j = 0; j < 3; ++j) {
      size_t n = 0;
      unsigned char *now = tu_read_file(paths[j], &n);
      ck_assert_msg(n == sizeof old && memcmp(now, old, sizeof old) == 0, "%s changed", paths[j]);
      free(now);
    }
    int has_tmp = 0;
    ck_assert_int_eq(count_dir(out_dir, &has_tmp), 3);
    ck_assert(!has_tmp);
  }
}
END_TEST

/* usage, info errors, info's validation and fields */
START_TEST(test_cli_info) {
  int rc = -1;
  char args[1024];
  char *o = run_out("--help", &rc);
  ck_assert_int_eq(rc, 0);
  ck_assert_msg(strstr(o, "usage: effml-adapter merge") != NULL, "%s", o);
  free(o);
  ck_assert_int_eq(run("--bogus"), 2);
  ck_assert_int_eq(run("merge --bogus"), 2);
  ck_assert_int_eq(run(""), 2);
  /* a directory that does not exist: an error naming it */
  o = run_out("info /nonexistent-effml-dir", &rc);
  ck_assert_int_eq(rc, 1);
  ck_assert_msg(strstr(o, "unsupported") == NULL, "%s", o);
  free(o);
  char *e = read_err();
  ck_assert_msg(strstr(e, "/nonexistent-effml-dir") != NULL, "%s", e);
  free(e);
  /* lora_B missing: info refuses like merge, naming the tensor */
  make_adapter("lora", "tool_nob", NULL, NULL, NULL, "base_model.model.v_proj.lora_B.weight");
  snprintf(args, sizeof args, "info %s/tool_nob", EFFML_TEST_TMP);
  o = run_out(args, &rc);
  free(o);
  ck_assert_int_eq(rc, 1);
  e = read_err();
  ck_assert_msg(strstr(e, "base_model.model.v_proj.lora_B.weight") != NULL, "%s", e);
  free(e);
  const char *want[] = {"base_model.model.v_proj.lora_B.weight", NULL};
  expect_merge_refused("lora", "tool_nob", want);
  /* a NaN: info refuses too */
  make_adapter("lora", "tool_nan_info", NULL, NULL, "base_model.model.q_proj.lora_A.weight", NULL);
  snprintf(args, sizeof args, "info %s/tool_nan_info", EFFML_TEST_TMP);
  o = run_out(args, &rc);
  free(o);
  ck_assert_int_eq(rc, 1);
  /* alpha: shown for LoRA (8), not for IA3 and VeRA, which have none */
  snprintf(args, sizeof args, "info %s/lora", PEFT_DIR);
  o = run_out(args, &rc);
  ck_assert_int_eq(rc, 0);
  ck_assert_msg(strstr(o, "base_model.model.q_proj  r=4 alpha=8 rslora=false scale=2 (alpha/r) params=256\n") != NULL,
                "%s", o);
  free(o);
  /* use_rslora: the scale the merge applies is alpha / sqrt(r) = 8 / 2 (LoRA and DoRA) */
  const char *rs[] = {"lora_rslora", "dora_rslora", "dora"};
  for (int i = 0; i < 3; ++i) {
    snprintf(args, sizeof args, "info %s/%s", PEFT_DIR, rs[i]);
    o = run_out(args, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(o, i < 2 ? "base_model.model.q_proj  r=4 alpha=8 rslora=true scale=4 (alpha/sqrt(r)) params="
                                  : "base_model.model.q_proj  r=4 alpha=8 rslora=false scale=2 (alpha/r) params=") != NULL,
                  "%s: %s", rs[i], o);
    free(o);
  }
  const char *noalpha[] = {"ia3", "vera"};
  for (int i = 0; i < 2; ++i) {
    snprintf(args, sizeof args, "info %s/%s", PEFT_DIR, noalpha[i]);
    o = run_out(args, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(o, "base_model.model.q_proj") != NULL && strstr(o, "alpha") == NULL, "%s", o);
    free(o);
  }
}
END_TEST

/* Replace the first `from` in tmp/<dst>/adapter_config.json by `to`. */
static void edit_config(const char *dst, const char *from, const char *to) {
  char p[700];
  snprintf(p, sizeof p, "%s/%s/adapter_config.json", EFFML_TEST_TMP, dst);
  size_t n = 0;
  unsigned char *b = tu_read_file(p, &n);
  ck_assert_ptr_nonnull(b);
  char *cfg = (char *)calloc(n + 1, 1);
  memcpy(cfg, b, n);
  free(b);
  char *hit = strstr(cfg, from);
  ck_assert_msg(hit != NULL, "%s: no \"%s\" in the config", dst, from);
  FILE *f = fopen(p, "wb");
  ck_assert_ptr_nonnull(f);
  fwrite(cfg, 1, (size_t)(hit - cfg), f);
  fputs(to, f);
  fputs(hit + strlen(from), f);
  fclose(f);
  free(cfg);
}

/* info lists every problem, not only the first; effml_adapter_peft_problems counts them */
/* A report longer than info's first 64 KiB buffer is listed whole: 1500 tensors the library does
 * not read, each a problem whose line names it (about 150 bytes each, 220 KiB in all). */
START_TEST(test_info_lists_a_long_report_whole) {
  char dir[600], p[700], args[1024];
  snprintf(dir, sizeof dir, "%s/tool_long_report", EFFML_TEST_TMP);
  mkdir(dir, 0755);
  snprintf(args, sizeof args, "cp %s/lora/adapter_config.json %s/", PEFT_DIR, dir);
  ck_assert_int_eq(system(args), 0);
  effml_context *ctx = tu_ctx(1);
  effml_safetensors *b = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, PEFT_DIR "/lora/adapter_model.safetensors", EFFML_IO_SAFETENSORS_COPY,
                                          &b),
                   EFFML_OK);
  enum { EXTRA = 1500, STRIDE = 96 };
  const int64_t nb = effml_safetensors_count(b), n = nb + EXTRA, four = 4;
  const char **names = (const char **)calloc((size_t)n, sizeof *names);
  const effml_tensor **ts = (const effml_tensor **)calloc((size_t)n, sizeof *ts);
  char *nbuf = (char *)calloc(EXTRA, STRIDE);
  effml_tensor *one = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, &four, &one), EFFML_OK);
  for (int64_t i = 0; i < nb; ++i) {
    names[i] = effml_safetensors_name(b, i);
    ck_assert_int_eq(effml_safetensors_get(ctx, b, names[i], &ts[i]), EFFML_OK);
  }
  for (int k = 0; k < EXTRA; ++k) {
    snprintf(nbuf + STRIDE * k, STRIDE, "base_model.model.q_proj.not_an_adapter_tensor_of_this_kind_%04d", k);
    names[nb + k] = nbuf + STRIDE * k;
    ts[nb + k] = one;
  }
  snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
  ck_assert_int_eq(effml_safetensors_save(ctx, p, n, names, ts, 0, NULL, NULL), EFFML_OK);
  effml_tensor_free(one);
  free(nbuf);
  free(ts);
  free(names);
  effml_safetensors_free(b);
  effml_context_free(ctx);
  int rc = -1;
  snprintf(args, sizeof args, "info %s", dir);
  free(run_out(args, &rc));
  ck_assert_int_eq(rc, 1);
  char *e = read_err();
  char want[128];
  snprintf(want, sizeof want, "%d problems; this adapter cannot be merged", EXTRA);
  ck_assert_msg(strstr(e, want) != NULL, "%.300s", e);
  ck_assert_uint_gt(strlen(e), (size_t)1 << 17);
  ck_assert_int_eq(count_lines_with(e, "  unsupported: "), EXTRA);
  snprintf(want, sizeof want, "not_an_adapter_tensor_of_this_kind_%04d\" is not a LoRA/DoRA tensor", EXTRA - 1);
  ck_assert_msg(strstr(e, want) != NULL, "the last problem is missing");
  free(e);
}
END_TEST

START_TEST(test_info_lists_every_problem) {
  int rc = -1;
  char args[1024];
  make_adapter("lora", "tool_many", "\"modules_to_save\": null", "\"modules_to_save\": [\"lm_head\"]", NULL, NULL);
  edit_config("tool_many", "\"use_qalora\": false", "\"use_qalora\": true");
  edit_config("tool_many", "\"layer_replication\": null", "\"layer_replication\": [[0, 1]]");
  edit_config("tool_many", "\"target_modules\": [\n    \"v_proj\",", "\"target_modules\": [\n    \"k_proj\",");
  snprintf(args, sizeof args, "info %s/tool_many", EFFML_TEST_TMP);
  char *o = run_out(args, &rc);
  free(o);
  ck_assert_int_eq(rc, 1);
  char *e = read_err();
  ck_assert_msg(strstr(e, "4 problems") && strstr(e, "modules_to_save=[\"lm_head\"]") && strstr(e, "use_qalora=true") &&
                    strstr(e, "layer_replication=[[0,1]]") && strstr(e, "base_model.model.v_proj") &&
                    strstr(e, "target_modules=[\"k_proj\",\"q_proj\"]"),
                "%s", e);
  free(e);
  effml_context *ctx = tu_ctx(1);
  char rep[4096];
  int64_t np = -1;
  ck_assert_int_eq(effml_adapter_peft_problems(ctx, EFFML_TEST_TMP "/tool_many", rep, sizeof rep, &np), EFFML_OK);
  ck_assert_int_eq(np, 4);
  int lines = 0;
  for (const char *q = rep; *q; ++q) lines += *q == '\n';
  ck_assert_int_eq(lines, 4);
  /* cut short: still counts all four, the report stays NUL-terminated */
  ck_assert_int_eq(effml_adapter_peft_problems(ctx, EFFML_TEST_TMP "/tool_many", rep, 40, &np), EFFML_OK);
  ck_assert_int_eq(np, 4);
  ck_assert_uint_le(strlen(rep), 39);
  ck_assert_int_eq(effml_adapter_peft_problems(ctx, PEFT_DIR "/lokr", rep, sizeof rep, &np), EFFML_OK);
  ck_assert_int_eq(np, 0);
  ck_assert_str_eq(rep, "");
  effml_context_free(ctx);
  /* IA3: no rank to print, what each vector scales instead (feedforward_modules ["v_proj"]) */
  snprintf(args, sizeof args, "info %s/ia3", PEFT_DIR);
  o = run_out(args, &rc);
  ck_assert_int_eq(rc, 0);
  ck_assert_msg(strstr(o, "r=") == NULL && strstr(o, "base_model.model.q_proj  scales=output params=24") &&
                    strstr(o, "base_model.model.v_proj  scales=input (feedforward) params=24"),
                "%s", o);
  free(o);
}
END_TEST

/* A module that lacks a tensor still has the tensors it holds checked against r: use_dora without
 * magnitude vectors and r=8 against rank-4 tensors is 4 problems, each named, in one list. */
START_TEST(test_info_lists_missing_and_rank_together) {
  make_adapter("lora", "tool_dora_r8", "\"use_dora\": false", "\"use_dora\": true", NULL, NULL);
  edit_config("tool_dora_r8", "\"r\": 4,", "\"r\": 8,");
  effml_context *ctx = tu_ctx(1);
  char rep[4096], want[4096];
  int64_t np = -1;
  const char *dir = EFFML_TEST_TMP "/tool_dora_r8";
  ck_assert_int_eq(effml_adapter_peft_problems(ctx, dir, rep, sizeof rep, &np), EFFML_OK);
  ck_assert_int_eq(np, 4);
  const char *f = EFFML_TEST_TMP "/tool_dora_r8/adapter_model.safetensors";
  int used = 0;
  for (int m = 0; m < 2; ++m) {
    const char *mod = m == 0 ? "base_model.model.q_proj" : "base_model.model.v_proj";
    used += snprintf(want + used, sizeof want - (size_t)used,
                     "effml_adapter_peft_problems: \"%s\": module \"%s\" has no tensor \"%s.lora_magnitude_vector\"\n"
                     "effml_adapter_peft_problems: \"%s\": module \"%s\": tensor \"%s.lora_A.weight\" has shape "
                     "[4, %d] (rank 4), but r=8 in adapter_config.json (no rank_pattern entry for this module); fix r "
                     "or add a rank_pattern entry\n",
                     f, mod, mod, f, mod, mod, m == 0 ? 40 : 24);
  }
  ck_assert_str_eq(rep, want);
  /* opening it still refuses with the first problem */
  effml_adapter_peft *a = NULL;
  ck_assert_int_eq(effml_adapter_peft_open(ctx, dir, &a), EFFML_E_NOT_FOUND);
  ck_assert_ptr_null(a);
  ck_assert_msg(strstr(effml_context_last_error(ctx), "has no tensor \"base_model.model.q_proj.lora_magnitude_vector\""),
                "%s", effml_context_last_error(ctx));
  effml_context_free(ctx);
}
END_TEST

/* Attach module 0 of the adapter in `dir` to a dense base of its size (from <fixture>/base.safetensors)
 * and return the layer (the caller frees it): what the library applies in training. */
static effml_layer *attach_first(effml_context *ctx, const effml_adapter_peft *a, const char *fixture) {
  char p[600], key[600];
  snprintf(p, sizeof p, "%s/%s/base.safetensors", PEFT_DIR, fixture);
  effml_safetensors *b = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, p, EFFML_IO_SAFETENSORS_COPY, &b), EFFML_OK);
  snprintf(key, sizeof key, "%s.weight", effml_adapter_peft_module_name(a, 0) + 17); /* without base_model.model. */
  const effml_tensor *w = NULL;
  ck_assert_int_eq(effml_safetensors_get(ctx, b, key, &w), EFFML_OK);
  effml_layer *base = NULL, *l = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, effml_tensor_dim(w, 1), effml_tensor_dim(w, 0), 0, &base), EFFML_OK);
  effml_safetensors_free(b);
  ck_assert_int_eq(effml_adapter_peft_attach(ctx, a, 0, base, &l), EFFML_OK);
  return l;
}

/* info prints every dropout field of the type: what adapter_config.json says and what the library
 * applies (effml_adapter_peft_dropouts, which equals what attach sets on the layers) */
START_TEST(test_info_dropouts) {
  int rc = -1;
  char args[1024];
  snprintf(args, sizeof args, "info %s/lora_dropout", PEFT_DIR);
  char *o = run_out(args, &rc);
  ck_assert_int_eq(rc, 0);
  ck_assert_msg(strstr(o, "dropouts (training only; merge and inference never drop):\n"
                          "  lora_dropout: config 0.1; applied p=0.1 (inverted dropout of the adapter's input)\n"),
                "%s", o);
  free(o);
  snprintf(args, sizeof args, "info %s/vera", PEFT_DIR);
  o = run_out(args, &rc);
  ck_assert_int_eq(rc, 0);
  ck_assert_msg(strstr(o, "  vera_dropout: config 0; applied p=0 (off)\n") && !strstr(o, "lora_dropout"), "%s", o);
  free(o);
  snprintf(args, sizeof args, "info %s/ia3", PEFT_DIR);
  o = run_out(args, &rc);
  ck_assert_int_eq(rc, 0);
  ck_assert_msg(strstr(o, "dropouts: none (IA3 has no dropout)\n"), "%s", o);
  free(o);
  /* LoKr with every dropout on */
  make_adapter("lokr", "tool_lokr_drop", "\"module_dropout\": 0.0", "\"module_dropout\": 0.5", NULL, NULL);
  edit_config("tool_lokr_drop", "\"rank_dropout\": 0.0", "\"rank_dropout\": 0.25");
  edit_config("tool_lokr_drop", "\"rank_dropout_scale\": false", "\"rank_dropout_scale\": true");
  snprintf(args, sizeof args, "info %s/tool_lokr_drop", EFFML_TEST_TMP);
  o = run_out(args, &rc);
  ck_assert_int_eq(rc, 0);
  ck_assert_msg(strstr(o, "  rank_dropout: config 0.25; applied p=0.25 (mask over the rows of the delta, drawn per "
                          "forward)\n"
                          "  module_dropout: config 0.5; applied p=0.5 (the whole delta skipped with probability p per "
                          "forward)\n"
                          "  rank_dropout_scale: config true; applied: the rank mask divided by its mean\n"),
                "%s", o);
  free(o);
  effml_context *ctx = tu_ctx(1);
  effml_adapter_peft *a = NULL;
  ck_assert_int_eq(effml_adapter_peft_open(ctx, EFFML_TEST_TMP "/tool_lokr_drop", &a), EFFML_OK);
  double p = -1, rp = -1, mp = -1;
  int32_t sc = -1;
  ck_assert_int_eq(effml_adapter_peft_dropouts(ctx, a, &p, &rp, &mp, &sc), EFFML_OK);
  ck_assert(p == 0.0 && rp == 0.25 && mp == 0.5 && sc == 1);
  effml_layer *l = attach_first(ctx, a, "lokr");
  double lrp = -1, lmp = -1;
  int32_t lsc = -1;
  ck_assert_int_eq(effml_adapter_lokr_dropout(l, &lrp, &lmp, &lsc), EFFML_OK);
  ck_assert(lrp == rp && lmp == mp && lsc == sc);
  effml_layer_free(l);
  effml_adapter_peft_free(a);
  ck_assert_int_eq(effml_adapter_peft_dropouts(ctx, NULL, &p, NULL, NULL, NULL), EFFML_E_INVALID_ARG);
  /* LoHa: rank_dropout absent (PEFT's default 0), module_dropout 0.125; the mask always rescaled */
  make_adapter("loha", "tool_loha_drop", "\"rank_dropout\": 0.0,", "", NULL, NULL);
  edit_config("tool_loha_drop", "\"module_dropout\": 0.0", "\"module_dropout\": 0.125");
  snprintf(args, sizeof args, "info %s/tool_loha_drop", EFFML_TEST_TMP);
  o = run_out(args, &rc);
  ck_assert_int_eq(rc, 0);
  ck_assert_msg(strstr(o, "  rank_dropout: config absent; applied p=0 (off)\n"
                          "  module_dropout: config 0.125; applied p=0.125 (the whole delta skipped with probability "
                          "p per forward)\n"
                          "  rank_dropout_scale: not a LoHa field; applied: the rank mask divided by its mean (always, "
                          "as PEFT's LoHa)\n"),
                "%s", o);
  free(o);
  ck_assert_int_eq(effml_adapter_peft_open(ctx, EFFML_TEST_TMP "/tool_loha_drop", &a), EFFML_OK);
  ck_assert_int_eq(effml_adapter_peft_dropouts(ctx, a, &p, &rp, &mp, &sc), EFFML_OK);
  ck_assert(p == 0.0 && rp == 0.0 && mp == 0.125 && sc == 1);
  l = attach_first(ctx, a, "loha");
  ck_assert_int_eq(effml_adapter_loha_dropout(l, &lrp, &lmp), EFFML_OK);
  ck_assert(lrp == rp && lmp == mp);
  effml_layer_free(l);
  effml_adapter_peft_free(a);
  /* LoRA: the value attach gives the layer */
  ck_assert_int_eq(effml_adapter_peft_open(ctx, PEFT_DIR "/lora_dropout", &a), EFFML_OK);
  ck_assert_int_eq(effml_adapter_peft_dropouts(ctx, a, &p, &rp, &mp, &sc), EFFML_OK);
  ck_assert(p == 0.1 && rp == 0.0 && mp == 0.0 && sc == 0);
  l = attach_first(ctx, a, "lora_dropout");
  ck_assert(effml_adapter_lora_dropout(l) == p);
  effml_layer_free(l);
  effml_adapter_peft_free(a);
  effml_context_free(ctx);
}
END_TEST

/* A config whose r / rank_pattern disagrees with the tensors' rank: info refuses it (exit 1) as merge
 * does, naming the field to fix per module -- rank_pattern for q_proj, r for v_proj */
START_TEST(test_info_rank_mismatch) {
  int rc = -1;
  char args[1024];
  make_adapter("lora", "tool_rank", "\"r\": 4", "\"r\": 8", NULL, NULL);
  edit_config("tool_rank", "\"rank_pattern\": {}", "\"rank_pattern\": {\"q_proj\": 2}");
  snprintf(args, sizeof args, "info %s/tool_rank", EFFML_TEST_TMP);
  char *o = run_out(args, &rc);
  ck_assert_msg(strstr(o, "r=8") == NULL && strstr(o, "params=") == NULL, "%s", o); /* no description printed */
  free(o);
  ck_assert_int_eq(rc, 1);
  char *e = read_err();
  ck_assert_msg(strstr(e, "2 problems") &&
                    strstr(e, "module \"base_model.model.q_proj\": tensor \"base_model.model.q_proj.lora_A.weight\" "
                              "has shape [4, 40] (rank 4), but rank_pattern[\"q_proj\"]=2") &&
                    strstr(e, "fix rank_pattern") &&
                    strstr(e, "module \"base_model.model.v_proj\": tensor \"base_model.model.v_proj.lora_A.weight\" "
                              "has shape [4, 24] (rank 4), but r=8 in adapter_config.json") &&
                    strstr(e, "fix r or add a rank_pattern entry"),
                "%s", e);
  free(e);
  effml_context *ctx = tu_ctx(1);
  char rep[4096];
  int64_t np = -1;
  ck_assert_int_eq(effml_adapter_peft_problems(ctx, EFFML_TEST_TMP "/tool_rank", rep, sizeof rep, &np), EFFML_OK);
  ck_assert_int_eq(np, 2);
  effml_adapter_peft *a = NULL;
  ck_assert_int_eq(effml_adapter_peft_open(ctx, EFFML_TEST_TMP "/tool_rank", &a), EFFML_E_SHAPE);
  ck_assert_ptr_null(a);
  effml_context_free(ctx);
  /* merge refuses with the same reason and leaves no file */
  char out[512];
  snprintf(out, sizeof out, "%s/tool_rank.safetensors", EFFML_TEST_TMP);
  unlink(out);
  snprintf(args, sizeof args, "merge --base %s/lora/base.safetensors --adapter %s/tool_rank --out %s", PEFT_DIR,
           EFFML_TEST_TMP, out);
  ck_assert_int_eq(run(args), 1);
  e = read_err();
  ck_assert_msg(strstr(e, "rank_pattern[\"q_proj\"]=2") || strstr(e, "but r=8"), "%s", e);
  free(e);
  ck_assert_int_ne(access(out, F_OK), 0);
  /* r alone wrong (rank-4 tensors, "r": 2, no rank_pattern): one problem, naming r */
  make_adapter("lora", "tool_rank_r", "\"r\": 4", "\"r\": 2", NULL, NULL);
  snprintf(args, sizeof args, "info %s/tool_rank_r", EFFML_TEST_TMP);
  o = run_out(args, &rc);
  free(o);
  ck_assert_int_eq(rc, 1);
  e = read_err();
  ck_assert_msg(strstr(e, "(rank 4), but r=2 in adapter_config.json") && strstr(e, "fix r or add a rank_pattern entry"),
                "%s", e);
  free(e);
}
END_TEST

/* The one problem effml_adapter_peft_problems() reports for tmp/<dst>: `want` is the whole message
 * after the file name (which it checks too), and effml_adapter_peft_open() refuses with EFFML_E_SHAPE
 * and the same text; info exits 1 printing it. */
static void expect_lokr_problem(const char *dst, int64_t nprob, const char *want) {
  char dir[600], rep[8192], line[4096], args[1024];
  snprintf(dir, sizeof dir, "%s/%s", EFFML_TEST_TMP, dst);
  effml_context *ctx = tu_ctx(1);
  int64_t np = -1;
  ck_assert_int_eq(effml_adapter_peft_problems(ctx, dir, rep, sizeof rep, &np), EFFML_OK);
  ck_assert_msg(np == nprob, "%s: %lld problems, want %lld:\n%s", dst, (long long)np, (long long)nprob, rep);
  snprintf(line, sizeof line, "\"%s/adapter_model.safetensors\": %s", dir, want);
  ck_assert_msg(strstr(rep, line) != NULL, "%s: report\n%s\nlacks\n%s", dst, rep, line);
  effml_adapter_peft *a = NULL;
  ck_assert_int_eq(effml_adapter_peft_open(ctx, dir, &a), EFFML_E_SHAPE);
  ck_assert_ptr_null(a);
  effml_context_free(ctx);
  int rc = -1;
  snprintf(args, sizeof args, "info %s", dir);
  char *o = run_out(args, &rc);
  ck_assert_msg(rc == 1 && strstr(o, "params=") == NULL, "%s: rc %d\n%s", dst, rc, o);
  free(o);
  char *e = read_err();
  ck_assert_msg(strstr(e, line) != NULL, "%s: stderr\n%s\nlacks\n%s", dst, e, line);
  free(e);
}

/* LoKr: a factor's rank against r / rank_pattern, and whether w1 / w2 are whole or factored as r
 * (and decompose_both) make PEFT build them, each refused naming the field to fix; a whole matrix
 * has no rank, so any r that keeps it whole is accepted */
START_TEST(test_info_rank_mismatch_lokr) {
  /* factored (lokr_decompose_both, rank-2 factors) under r=3: both modules, naming r */
  make_adapter("lokr_decompose_both", "tool_lokr_r3", "\"r\": 2", "\"r\": 3", NULL, NULL);
  expect_lokr_problem("tool_lokr_r3", 2,
                      "module \"base_model.model.q_proj\": tensor \"base_model.model.q_proj.lokr_w1_a\" has shape "
                      "[4, 2] (rank 2), but r=3 in adapter_config.json (no rank_pattern entry for this module); fix r or "
                      "add a rank_pattern entry");
  expect_lokr_problem("tool_lokr_r3", 2,
                      "module \"base_model.model.v_proj\": tensor \"base_model.model.v_proj.lokr_w2_a\" has shape "
                      "[4, 2] (rank 2), but r=3 in adapter_config.json (no rank_pattern entry for this module); fix r or "
                      "add a rank_pattern entry");
  /* the same through rank_pattern for q_proj only: one problem, naming the entry */
  make_adapter("lokr_decompose_both", "tool_lokr_pat", "\"rank_pattern\": {}", "\"rank_pattern\": {\"q_proj\": 3}",
               NULL, NULL);
  expect_lokr_problem("tool_lokr_pat", 1,
                      "module \"base_model.model.q_proj\": tensor \"base_model.model.q_proj.lokr_w1_a\" has shape "
                      "[4, 2] (rank 2), but rank_pattern[\"q_proj\"]=3 in adapter_config.json; fix rank_pattern");
  /* whole w2 (lokr, r=4) under r=1: PEFT would factor it, naming r and the smallest r that keeps it whole */
  make_adapter("lokr", "tool_lokr_r1", "\"r\": 4", "\"r\": 1", NULL, NULL);
  expect_lokr_problem("tool_lokr_r1", 2,
                      "module \"base_model.model.q_proj\": \"base_model.model.q_proj.lokr_w2\" is a whole w2 [6, 8], "
                      "but r=1 in adapter_config.json (no rank_pattern entry for this module) makes PEFT factor it "
                      "(r < max(6, 8)/2) into lokr_w2_a/lokr_w2_b; a whole w2 needs r >= 4: fix r or add a "
                      "rank_pattern entry");
  expect_lokr_problem("tool_lokr_r1", 2,
                      "module \"base_model.model.v_proj\": \"base_model.model.v_proj.lokr_w2\" is a whole w2 [4, 6], "
                      "but r=1 in adapter_config.json (no rank_pattern entry for this module) makes PEFT factor it "
                      "(r < max(4, 6)/2) into lokr_w2_a/lokr_w2_b; a whole w2 needs r >= 3: fix r or add a "
                      "rank_pattern entry");
  /* whole w1 [4, 5] with decompose_both=true and q_proj's r=1 (< 5/2): names decompose_both; v_proj (r=4) fits */
  make_adapter("lokr", "tool_lokr_db", "\"decompose_both\": false", "\"decompose_both\": true", NULL, NULL);
  edit_config("tool_lokr_db", "\"rank_pattern\": {}", "\"rank_pattern\": {\"q_proj\": 1}");
  expect_lokr_problem("tool_lokr_db", 1,
                      "module \"base_model.model.q_proj\": \"base_model.model.q_proj.lokr_w1\" is a whole w1 [4, 5], "
                      "but decompose_both=true with rank_pattern[\"q_proj\"]=1 in adapter_config.json makes PEFT "
                      "factor it (r < max(4, 5)/2) into lokr_w1_a/lokr_w1_b; fix decompose_both (false keeps w1 whole) "
                      "or rank_pattern");
  /* factored w1 with decompose_both=false: names decompose_both */
  make_adapter("lokr_decompose_both", "tool_lokr_nodb", "\"decompose_both\": true", "\"decompose_both\": false", NULL,
               NULL);
  expect_lokr_problem("tool_lokr_nodb", 1,
                      "module \"base_model.model.q_proj\": w1 is factored (\"base_model.model.q_proj.lokr_w1_a\" "
                      "[4, 2]), but decompose_both=false in adapter_config.json makes PEFT keep it whole as lokr_w1; "
                      "fix decompose_both");
  /* rank-2 factors of a w2 [2, 2], which PEFT keeps whole for every r: no r fits, the file is named */
  {
    make_adapter("lokr", "tool_lokr_tiny", "\"r\": 4", "\"r\": 2", NULL, NULL);
    effml_context *c2 = tu_ctx(1);
    int64_t sh[2] = {2, 2};
    effml_tensor *t[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; ++i) {
      ck_assert_int_eq(effml_tensor_create(c2, EFFML_F32, 2, sh, &t[i]), EFFML_OK);
      float *q = (float *)effml_tensor_data(t[i]);
      for (int k = 0; k < 4; ++k) q[k] = 0.25f * (float)(k + i);
    }
    const char *names[3] = {"base_model.model.q_proj.lokr_w1", "base_model.model.q_proj.lokr_w2_a",
                            "base_model.model.q_proj.lokr_w2_b"};
    ck_assert_int_eq(effml_safetensors_save(c2, EFFML_TEST_TMP "/tool_lokr_tiny/adapter_model.safetensors", 3, names,
                                            (const effml_tensor *const *)t, 0, NULL, NULL),
                     EFFML_OK);
    for (int i = 0; i < 3; ++i) effml_tensor_free(t[i]);
    effml_context_free(c2);
    expect_lokr_problem("tool_lokr_tiny", 1,
                        "module \"base_model.model.q_proj\": w2 [2, 2] is factored (\"base_model.model.q_proj.lokr_w2_a\" "
                        "[2, 2], rank 2), but PEFT factors it only when r < max(2, 2)/2, so no r gives these factors "
                        "(r=2 in adapter_config.json); save w2 whole as lokr_w2");
  }
  /* rank-2 factors of v_proj's w2 [4, 6] under rank_pattern 3 = max/2: whole in PEFT, and 3 != 2 first */
  make_adapter("lokr_decompose_both", "tool_lokr_v3", "\"rank_pattern\": {}", "\"rank_pattern\": {\"v_proj\": 3}", NULL,
               NULL);
  expect_lokr_problem("tool_lokr_v3", 1,
                      "module \"base_model.model.v_proj\": tensor \"base_model.model.v_proj.lokr_w2_a\" has shape "
                      "[4, 2] (rank 2), but rank_pattern[\"v_proj\"]=3 in adapter_config.json; fix rank_pattern");
  /* whole matrices have no rank: any r that keeps them whole (r >= 4 here) is accepted, and merges */
  make_adapter("lokr", "tool_lokr_r5", "\"r\": 4", "\"r\": 5", NULL, NULL);
  effml_context *ctx = tu_ctx(1);
  int64_t np = -1;
  char rep[4096];
  ck_assert_int_eq(effml_adapter_peft_problems(ctx, EFFML_TEST_TMP "/tool_lokr_r5", rep, sizeof rep, &np), EFFML_OK);
  ck_assert_msg(np == 0, "%s", rep);
  const char *ok[] = {"lokr", "lokr_decompose_both"};
  for (int i = 0; i < 2; ++i) {
    char d[600];
    snprintf(d, sizeof d, "%s/%s", PEFT_DIR, ok[i]);
    ck_assert_int_eq(effml_adapter_peft_problems(ctx, d, rep, sizeof rep, &np), EFFML_OK);
    ck_assert_msg(np == 0, "%s: %s", ok[i], rep);
  }
  effml_context_free(ctx);
  int rc = -1;
  char *o = run_out("info " EFFML_TEST_TMP "/tool_lokr_r5", &rc);
  ck_assert_msg(rc == 0 && strstr(o, "base_model.model.q_proj  r=5 alpha=8 params=68"), "%s", o);
  free(o);
  /* merge refuses a mismatch with the same message and leaves no file */
  char out[512], args[1024];
  snprintf(out, sizeof out, "%s/tool_lokr_r1.safetensors", EFFML_TEST_TMP);
  unlink(out);
  snprintf(args, sizeof args, "merge --base %s/lokr/base.safetensors --adapter %s/tool_lokr_r1 --out %s", PEFT_DIR,
           EFFML_TEST_TMP, out);
  ck_assert_int_eq(run(args), 1);
  char *e = read_err();
  ck_assert_msg(strstr(e, "is a whole w2 [6, 8], but r=1 in adapter_config.json"), "%s", e);
  free(e);
  ck_assert_int_ne(access(out, F_OK), 0);
}
END_TEST

/* target_modules / exclude_modules / layers_to_transform with PEFT's matching rules: a module the
 * config would not target is refused naming the field; one it targets merges */
START_TEST(test_targeting) {
  effml_context *ctx = tu_ctx(1);
  struct {
    const char *from, *to, *field; /* field NULL: accepted */
  } cases[] = {
      {"\"target_modules\": [\n    \"v_proj\",\n    \"q_proj\"\n  ]", "\"target_modules\": [\"q_proj\"]", "target_modules"},
      /* suffix rule: "proj" is not a name component of "q_proj" */
      {"\"target_modules\": [\n    \"v_proj\",\n    \"q_proj\"\n  ]", "\"target_modules\": [\"proj\"]", "target_modules"},
      {"\"target_modules\": [\n    \"v_proj\",\n    \"q_proj\"\n  ]", "\"target_modules\": \"(q|v)_proj\"", NULL},
      /* a string is a full match, not a search */
      {"\"target_modules\": [\n    \"v_proj\",\n    \"q_proj\"\n  ]", "\"target_modules\": \"q_pro\"", "target_modules"},
      {"\"target_modules\": [\n    \"v_proj\",\n    \"q_proj\"\n  ]", "\"target_modules\": \"all-linear\"", NULL},
      {"\"target_modules\": [\n    \"v_proj\",\n    \"q_proj\"\n  ]", "\"target_modules\": null", NULL},
      {"\"exclude_modules\": null", "\"exclude_modules\": [\"v_proj\"]", "exclude_modules"},
      {"\"exclude_modules\": null", "\"exclude_modules\": \"v_.*\"", "exclude_modules"},
      {"\"exclude_modules\": null", "\"exclude_modules\": [\"k_proj\"]", NULL},
      /* the fixture's module names equal target_modules entries: PEFT skips the layer check */
      {"\"layers_to_transform\": null", "\"layers_to_transform\": [0]", NULL},
      {"\"layers_to_transform\": null", "\"layers_to_transform\": []", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
    char dir[64], path[600];
    snprintf(dir, sizeof dir, "tool_target_%zu", i);
    make_adapter("lora", dir, cases[i].from, cases[i].to, NULL, NULL);
    snprintf(path, sizeof path, "%s/%s", EFFML_TEST_TMP, dir);
    effml_adapter_peft *a = NULL;
    effml_status st = effml_adapter_peft_open(ctx, path, &a);
    if (cases[i].field == NULL) {
      ck_assert_msg(st == EFFML_OK, "%s: %s", cases[i].to, effml_context_last_error(ctx));
      ck_assert_int_eq(effml_adapter_peft_num_modules(a), 2);
      effml_adapter_peft_free(a);
      continue;
    }
    ck_assert_int_eq(st, EFFML_E_UNSUPPORTED);
    const char *e = effml_context_last_error(ctx);
    ck_assert_msg(strstr(e, cases[i].field) && strstr(e, "base_model.model.") && strstr(e, "does not target"), "%s: %s",
                  cases[i].to, e);
    if (i == 0 || i == 6) ck_assert_msg(strstr(e, "base_model.model.v_proj") != NULL, "%s", e);
    /* the tool refuses it the same way and writes nothing */
    const char *want[] = {cases[i].field, "does not target", NULL};
    expect_merge_refused("lora", dir, want);
  }
  /* layers_to_transform with a layer index in the name (PEFT's ".<pattern>.<index>." rule): the
   * fixture's modules renamed into model.layers.0.q_proj and model.layers.3.v_proj */
  effml_safetensors *st = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, PEFT_DIR "/lora/adapter_model.safetensors", 0, &st), EFFML_OK);
  int64_t nt = effml_safetensors_count(st);
  char names[8][128];
  const char *np[8];
  const effml_tensor *ts[8];
  for (int64_t i = 0; i < nt && i < 8; ++i) {
    const char *nm = effml_safetensors_name(st, i), *rest = nm + strlen("base_model.model.");
    snprintf(names[i], sizeof names[i], "base_model.model.model.layers.%d.%s", rest[0] == 'q' ? 0 : 3, rest);
    np[i] = names[i];
    ck_assert_int_eq(effml_safetensors_get(ctx, st, nm, &ts[i]), EFFML_OK);
  }
  struct {
    const char *cfg, *field, *module;
  } lc[] = {
      {"\"target_modules\": [\"q_proj\", \"v_proj\"], \"layers_to_transform\": [0, 3]", NULL, NULL},
      {"\"target_modules\": [\"q_proj\", \"v_proj\"], \"layers_to_transform\": [0]", "layers_to_transform", "layers.3.v_proj"},
      {"\"target_modules\": [\"q_proj\", \"v_proj\"], \"layers_to_transform\": 3, \"layers_pattern\": \"layers\"",
       "layers_to_transform", "layers.0.q_proj"},
      {"\"target_modules\": [\"q_proj\", \"v_proj\"], \"layers_to_transform\": [0, 3], \"layers_pattern\": [\"blocks\"]",
       "layers_to_transform", "layers.0.q_proj"},
      /* named in full: PEFT skips the layer check for it */
      {"\"target_modules\": [\"q_proj\", \"model.layers.3.v_proj\"], \"layers_to_transform\": [0]", NULL, NULL},
  };
  for (size_t i = 0; i < sizeof lc / sizeof lc[0]; ++i) {
    char dir[600], p[700];
    snprintf(dir, sizeof dir, "%s/tool_layers_%zu", EFFML_TEST_TMP, i);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    ck_assert_int_eq(effml_safetensors_save(ctx, p, nt, np, ts, 0, NULL, NULL), EFFML_OK);
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, %s}\n", lc[i].cfg);
    fclose(f);
    effml_adapter_peft *a = NULL;
    effml_status st2 = effml_adapter_peft_open(ctx, dir, &a);
    if (lc[i].field == NULL) {
      ck_assert_msg(st2 == EFFML_OK, "%s: %s", lc[i].cfg, effml_context_last_error(ctx));
      effml_adapter_peft_free(a);
    } else {
      ck_assert_int_eq(st2, EFFML_E_UNSUPPORTED);
      const char *e = effml_context_last_error(ctx);
      ck_assert_msg(strstr(e, lc[i].field) && strstr(e, lc[i].module), "%s: %s", lc[i].cfg, e);
    }
  }
  effml_safetensors_free(st);
  effml_context_free(ctx);
}
END_TEST

/* The value of key k of JSON file p (the caller frees the result with cJSON_Delete on the root). */
static cJSON *load_json(const char *p) {
  size_t n = 0;
  unsigned char *b = tu_read_file(p, &n);
  ck_assert_ptr_nonnull(b);
  char *s = (char *)calloc(n + 1, 1);
  memcpy(s, b, n);
  free(b);
  cJSON *j = cJSON_Parse(s);
  free(s);
  ck_assert_ptr_nonnull(j);
  return j;
}

/* a JSON list compared as a set of strings */
static int same_string_set(const cJSON *a, const cJSON *b) {
  if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) return 0;
  for (const cJSON *x = a->child; x; x = x->next) {
    int hit = 0;
    for (const cJSON *y = b->child; y; y = y->next) hit |= strcmp(x->valuestring, y->valuestring) == 0;
    if (!hit) return 0;
  }
  return 1;
}

/* PEFT-layout save of LoKr, LoHa, IA3 and VeRA: load each fixture, attach every module, save, and
 * compare with PEFT's own files: the same tensor names, dtypes, shapes and bytes; the same config
 * keys, and the same values for every key that decides what PEFT builds; then open the saved
 * directory again and get every parameter back bit for bit. */
START_TEST(test_save_peft_roundtrip) {
  const char *cases[] = {"lokr", "lokr_decompose_both", "loha", "ia3", "vera"};
  const char *decisive[] = {"peft_type", "r", "alpha", "decompose_both", "decompose_factor", "fan_in_fan_out",
                            "save_projection", "rank_dropout", "module_dropout", "vera_dropout", "bias",
                            "rank_pattern", "alpha_pattern", "modules_to_save", "exclude_modules", "layers_to_transform",
                            "use_effective_conv2d", "rank_dropout_scale", NULL};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
    char dir[512], p[700], out[512];
    snprintf(dir, sizeof dir, "%s/%s", PEFT_DIR, cases[c]);
    snprintf(out, sizeof out, "%s/save_%s", EFFML_TEST_TMP, cases[c]);
    mkdir(out, 0755);
    effml_context *ctx = tu_ctx(7);
    effml_adapter_peft *a = NULL;
    ck_assert_int_eq(effml_adapter_peft_open(ctx, dir, &a), EFFML_OK);
    effml_safetensors *b = NULL;
    snprintf(p, sizeof p, "%s/base.safetensors", dir);
    ck_assert_int_eq(effml_safetensors_load(ctx, p, 0, &b), EFFML_OK);
    int64_t n = effml_adapter_peft_num_modules(a);
    effml_layer *layers[8];
    const char *mods[8];
    ck_assert_int_le(n, 8);
    for (int64_t i = 0; i < n; ++i) {
      mods[i] = effml_adapter_peft_module_name(a, i);
      char kw[512];
      snprintf(kw, sizeof kw, "%s.weight", mods[i] + strlen("base_model.model."));
      const effml_tensor *w = NULL;
      ck_assert_int_eq(effml_safetensors_get(ctx, b, kw, &w), EFFML_OK);
      effml_layer *base = NULL;
      ck_assert_int_eq(effml_layer_dense_create(ctx, effml_tensor_dim(w, 1), effml_tensor_dim(w, 0), 1, &base), EFFML_OK);
      ck_assert_msg(effml_adapter_peft_attach(ctx, a, i, base, &layers[i]) == EFFML_OK, "%s: %s", cases[c],
                    effml_context_last_error(ctx));
    }
    ck_assert_msg(effml_adapter_peft_save(ctx, out, n, layers, mods, NULL) == EFFML_OK, "%s: %s", cases[c],
                  effml_context_last_error(ctx));
    /* tensors: names, dtypes, shapes and bytes as PEFT wrote them */
    effml_safetensors *ref = NULL, *got = NULL;
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    ck_assert_int_eq(effml_safetensors_load(ctx, p, EFFML_IO_SAFETENSORS_COPY, &ref), EFFML_OK);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", out);
    ck_assert_int_eq(effml_safetensors_load(ctx, p, EFFML_IO_SAFETENSORS_COPY, &got), EFFML_OK);
    ck_assert_int_eq(effml_safetensors_count(got), effml_safetensors_count(ref));
    ck_assert_str_eq(effml_safetensors_metadata(got, "format"), "pt");
    for (int64_t t = 0; t < effml_safetensors_count(ref); ++t) {
      const char *name = effml_safetensors_name(ref, t);
      const effml_tensor *x = NULL, *y = NULL;
      ck_assert_msg(effml_safetensors_get(ctx, got, name, &x) == EFFML_OK, "%s: saved file lacks \"%s\"", cases[c], name);
      ck_assert_int_eq(effml_safetensors_get(ctx, ref, name, &y), EFFML_OK);
      ck_assert_int_eq(effml_tensor_dtype(x), effml_tensor_dtype(y));
      ck_assert_int_eq(effml_tensor_ndim(x), effml_tensor_ndim(y));
      for (int32_t d = 0; d < effml_tensor_ndim(y); ++d) ck_assert_int_eq(effml_tensor_dim(x, d), effml_tensor_dim(y, d));
      ck_assert_msg(memcmp(effml_tensor_data_const(x), effml_tensor_data_const(y),
                           (size_t)effml_tensor_numel(y) * sizeof(float)) == 0,
                    "%s: \"%s\" differs from PEFT's bytes", cases[c], name);
    }
    /* config: PEFT's key set; the deciding values equal */
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    cJSON *jr = load_json(p);
    snprintf(p, sizeof p, "%s/adapter_config.json", out);
    cJSON *jg = load_json(p);
    ck_assert_int_eq(cJSON_GetArraySize(jg), cJSON_GetArraySize(jr));
    for (const cJSON *e = jr->child; e; e = e->next)
      ck_assert_msg(cJSON_GetObjectItemCaseSensitive(jg, e->string) != NULL, "%s: saved config lacks \"%s\"", cases[c],
                    e->string);
    for (int k = 0; decisive[k]; ++k) {
      const cJSON *x = cJSON_GetObjectItemCaseSensitive(jg, decisive[k]), *y = cJSON_GetObjectItemCaseSensitive(jr, decisive[k]);
      if (y == NULL) continue;
      ck_assert_msg(cJSON_Compare(x, y, 1), "%s: %s differs: %s vs PEFT %s", cases[c], decisive[k], cJSON_PrintUnformatted(x),
                    cJSON_PrintUnformatted(y));
    }
    ck_assert(same_string_set(cJSON_GetObjectItemCaseSensitive(jg, "target_modules"),
                              cJSON_GetObjectItemCaseSensitive(jr, "target_modules")));
    const cJSON *ffr = cJSON_GetObjectItemCaseSensitive(jr, "feedforward_modules");
    if (ffr) ck_assert(same_string_set(cJSON_GetObjectItemCaseSensitive(jg, "feedforward_modules"), ffr));
    cJSON_Delete(jr);
    cJSON_Delete(jg);
    /* round trip: the saved directory opens and attaches to the same parameters, bit for bit */
    effml_adapter_peft *a2 = NULL;
    ck_assert_msg(effml_adapter_peft_open(ctx, out, &a2) == EFFML_OK, "%s: %s", cases[c], effml_context_last_error(ctx));
    ck_assert_int_eq(effml_adapter_peft_num_modules(a2), n);
    for (int64_t i = 0; i < n; ++i) {
      int64_t j = -1;
      for (int64_t m = 0; m < n; ++m)
        if (strcmp(effml_adapter_peft_module_name(a2, m), mods[i]) == 0) j = m;
      ck_assert_int_ge(j, 0);
      effml_layer *base = NULL, *l2 = NULL;
      ck_assert_int_eq(effml_layer_dense_create(ctx, effml_layer_in_features(layers[i]), effml_layer_out_features(layers[i]),
                                                1, &base), EFFML_OK);
      ck_assert_int_eq(effml_adapter_peft_attach(ctx, a2, j, base, &l2), EFFML_OK);
      ck_assert_int_eq(effml_layer_num_params(l2), effml_layer_num_params(layers[i]));
      for (int32_t q = 0; q < effml_layer_num_params(l2); ++q) {
        const char *pn = effml_layer_param_name(l2, q);
        if (strncmp(pn, "base_layer.", 11) == 0) continue;
        const effml_tensor *x = effml_layer_param(l2, q), *y = effml_layer_param(layers[i], q);
        ck_assert_str_eq(pn, effml_layer_param_name(layers[i], q));
        ck_assert_msg(memcmp(effml_tensor_data_const(x), effml_tensor_data_const(y),
                             (size_t)effml_tensor_numel(y) * sizeof(float)) == 0,
                      "%s %s %s: round trip changed it", cases[c], mods[i], pn);
      }
      effml_layer_free(l2);
    }
    effml_adapter_peft_free(a2);
    /* refusals: a layer of another kind mixed in, a merged layer */
    effml_layer *mixed[2] = {layers[0], NULL};
    effml_layer *d = NULL;
    ck_assert_int_eq(effml_layer_dense_create(ctx, 3, 2, 0, &d), EFFML_OK);
    mixed[1] = d;
    ck_assert_int_eq(effml_adapter_peft_save(ctx, out, 2, mixed, mods, NULL), EFFML_E_INVALID_ARG);
    effml_layer_free(d);
    if (strncmp(cases[c], "lokr", 4) != 0) { /* LoKr layers have no merged state */
      ck_assert_int_eq(effml_adapter_peft_merge_layer(ctx, layers[0]), EFFML_OK);
      ck_assert_int_eq(effml_adapter_peft_save(ctx, out, n, layers, mods, NULL), EFFML_E_STATE);
      ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "merged"));
    }
    for (int64_t i = 0; i < n; ++i) effml_layer_free(layers[i]);
    effml_safetensors_free(ref);
    effml_safetensors_free(got);
    effml_safetensors_free(b);
    effml_adapter_peft_free(a);
    effml_context_free(ctx);
  }
}
END_TEST

/* adapter_config.json without peft_type: refused naming the key (PEFT always writes it) */
START_TEST(test_refuse_missing_peft_type) {
  int rc = -1;
  char args[1024];
  make_adapter("lora", "tool_notype", "\"peft_type\": \"LORA\",", "", NULL, NULL);
  const char *want[] = {"peft_type", "missing", NULL};
  expect_merge_refused("lora", "tool_notype", want);
  snprintf(args, sizeof args, "info %s/tool_notype", EFFML_TEST_TMP);
  char *o = run_out(args, &rc);
  free(o);
  ck_assert_int_eq(rc, 1);
  char *e = read_err();
  ck_assert_msg(strstr(e, "effml_adapter_peft_open") && strstr(e, "\"peft_type\" is missing"), "%s", e);
  free(e);
}
END_TEST

/* bf16 base: the delta is computed in f32 and the result rounded once */
START_TEST(test_merge_bf16) {
  effml_context *ctx = tu_ctx(2);
  effml_safetensors *b = NULL, *m = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, PEFT_DIR "/lora/base.safetensors", 0, &b), EFFML_OK);
  ck_assert_int_eq(effml_safetensors_load(ctx, PEFT_DIR "/lora/merged.safetensors", 0, &m), EFFML_OK);
  const char *names[3];
  const effml_tensor *ts[3];
  effml_tensor *conv[3];
  for (int i = 0; i < 3; ++i) {
    names[i] = effml_safetensors_name(b, i);
    const effml_tensor *t = NULL;
    ck_assert_int_eq(effml_safetensors_get(ctx, b, names[i], &t), EFFML_OK);
    ck_assert_int_eq(effml_tensor_convert(ctx, t, EFFML_BF16, &conv[i]), EFFML_OK);
    ts[i] = conv[i];
  }
  char base[512], out[512], args[2048];
  snprintf(base, sizeof base, "%s/tool_bf16_base.safetensors", EFFML_TEST_TMP);
  snprintf(out, sizeof out, "%s/tool_bf16_out.safetensors", EFFML_TEST_TMP);
  const char *mk[1] = {"format"}, *mv[1] = {"pt"};
  ck_assert_int_eq(effml_safetensors_save(ctx, base, 3, names, ts, 1, mk, mv), EFFML_OK);
  snprintf(args, sizeof args, "merge --base %s --adapter %s/lora --out %s", base, PEFT_DIR, out);
  ck_assert_msg(run(args) == 0, "%s", read_err());
  effml_safetensors *o = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, out, 0, &o), EFFML_OK);
  ck_assert_str_eq(effml_safetensors_metadata(o, "format"), "pt");
  for (int i = 0; i < 3; ++i) {
    const effml_tensor *got = NULL, *bf = ts[i], *ref = NULL, *orig = NULL;
    ck_assert_int_eq(effml_safetensors_get(ctx, o, names[i], &got), EFFML_OK);
    ck_assert_int_eq(effml_tensor_dtype(got), EFFML_BF16);
    ck_assert_int_eq(effml_safetensors_get(ctx, m, names[i], &ref), EFFML_OK);
    ck_assert_int_eq(effml_safetensors_get(ctx, b, names[i], &orig), EFFML_OK);
    /* expected: bf16(bf16(W) + (merged - W)) computed in f32, rounded once */
    effml_tensor *gf = NULL, *bff = NULL;
    ck_assert_int_eq(effml_tensor_convert(ctx, got, EFFML_F32, &gf), EFFML_OK);
    ck_assert_int_eq(effml_tensor_convert(ctx, bf, EFFML_F32, &bff), EFFML_OK);
    const float *g = effml_tensor_data_const(gf), *w16 = effml_tensor_data_const(bff), *r = effml_tensor_data_const(ref),
                *w = effml_tensor_data_const(orig);
    for (int64_t k = 0; k < effml_tensor_numel(ref); ++k) {
      double want = (double)w16[k] + ((double)r[k] - w[k]);
      ck_assert_msg(fabs(g[k] - want) <= fabs(want) * 0x1p-8 + 1e-6, "%s[%lld]: %g, want %g", names[i], (long long)k,
                    (double)g[k], want);
    }
    effml_tensor_free(gf);
    effml_tensor_free(bff);
  }
  for (int i = 0; i < 3; ++i) effml_tensor_free(conv[i]);
  effml_safetensors_free(o);
  effml_safetensors_free(b);
  effml_safetensors_free(m);
  effml_context_free(ctx);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("adapter_tool");
  TCase *t = tcase_create("tool");
  tcase_add_test(t, test_merge_fixtures);
  tcase_add_test(t, test_merge_tensors_api);
  tcase_add_test(t, test_refusals);
  tcase_add_test(t, test_merge_bf16);
  tcase_add_test(t, test_refuse_nonfinite);
  tcase_add_test(t, test_refuse_fan_in_fan_out);
  tcase_add_test(t, test_cli_info);
  tcase_add_test(t, test_info_lists_every_problem);
  tcase_add_test(t, test_info_lists_a_long_report_whole);
  tcase_add_test(t, test_info_lists_missing_and_rank_together);
  tcase_add_test(t, test_info_rank_mismatch);
  tcase_add_test(t, test_info_dropouts);
  tcase_add_test(t, test_info_rank_mismatch_lokr);
  tcase_add_test(t, test_targeting);
  tcase_add_test(t, test_save_peft_roundtrip);
  tcase_add_test(t, test_merge_progress);
  tcase_add_test(t, test_merge_drop_behind_large);
  tcase_add_test(t, test_merge_interrupted);
  tcase_add_test(t, test_merge_sharded);
  tcase_add_test(t, test_merge_sharded_merges_once);
  tcase_add_test(t, test_merge_sharded_refusals);
  tcase_add_test(t, test_merge_sharded_interrupted);
  tcase_add_test(t, test_refuse_missing_peft_type);
  suite_add_tcase(s, t);
  return s;
}

int main(void) { return tu_run(suite()) ? 1 : 0; }
