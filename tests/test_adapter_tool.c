/* effml-adapter merge/info on the PEFT 0.21 fixtures (tests/data/peft): the merged
 * file equals PEFT's merge_and_unload() weights to f32 tolerance, keeps the base's
 * header (names, dtypes, shapes, offsets, metadata) byte for byte, refuses what
 * cannot be merged without leaving a file behind, and rounds bf16 bases once. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define PEFT_DIR EFFML_TEST_DATA "/peft"

static int run(const char *args) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "\"%s\" %s >/dev/null 2>%s/adapter_tool.err", EFFML_ADAPTER_TOOL, args, EFFML_TEST_TMP);
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
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
  tcase_add_test(t, test_refusals);
  tcase_add_test(t, test_merge_bf16);
  suite_add_tcase(s, t);
  return s;
}

int main(void) { return tu_run(suite()) ? 1 : 0; }
