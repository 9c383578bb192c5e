/* Adapter files: PEFT LoRA directories and AdapterHub Compacter
 * safetensors, made by tests/ref/adapter_make_ref.py; round trips through
 * our writers; bad files (shape disagreeing with the base layer, missing
 * keys) leave the layers untouched. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

static const char *MODS[2] = {"base_model.model.layers.0.self_attn.q_proj",
                              "base_model.model.layers.0.self_attn.v_proj"};

static int32_t pidx(effml_layer *l, const char *name) {
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
    if (strcmp(effml_layer_param_name(l, i), name) == 0) return i;
  ck_abort_msg("no parameter %s", name);
  return -1;
}

static void make_loras(effml_context *ctx, int64_t rank, effml_layer **l) {
  effml_adapter_lora_options o;
  effml_adapter_lora_options_init(&o);
  o.rank = rank;
  for (int i = 0; i < 2; ++i) {
    effml_layer *d = NULL;
    ck_assert_int_eq(effml_layer_dense_create(ctx, 8, 6, 1, &d), EFFML_OK);
    ck_assert_int_eq(effml_adapter_lora_create(ctx, d, &o, &l[i]), EFFML_OK);
  }
}

static void expect_same(effml_context *ctx, const effml_safetensors *st, const char *key, effml_tensor *t) {
  const effml_tensor *r = NULL;
  ck_assert_int_eq(effml_safetensors_get(ctx, st, key, &r), EFFML_OK);
  ck_assert_int_eq(effml_tensor_numel(r), effml_tensor_numel(t));
  ck_assert(memcmp(effml_tensor_data_const(r), effml_tensor_data_const(t), effml_tensor_nbytes(t)) == 0);
}

START_TEST(test_peft_load_and_roundtrip) {
  effml_context *ctx = tu_ctx(1);
  effml_layer *l[2];
  make_loras(ctx, 2, l);
  ck_assert_msg(effml_adapter_lora_load_peft(ctx, EFFML_TEST_REF "/adapter_peft", 2, l, MODS) == EFFML_OK, "%s",
                effml_context_last_error(ctx));
  ck_assert(fabs(effml_adapter_lora_scaling(l[0]) - 3.0) < 1e-12); /* lora_alpha 6 / r 2 */
  effml_safetensors *st = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, EFFML_TEST_REF "/adapter_peft/adapter_model.safetensors", 0, &st), EFFML_OK);
  expect_same(ctx, st, "base_model.model.layers.0.self_attn.v_proj.lora_B.weight",
              effml_layer_param(l[1], pidx(l[1], "lora_B.weight")));
  expect_same(ctx, st, "base_model.model.layers.0.self_attn.q_proj.lora_A.weight",
              effml_layer_param(l[0], pidx(l[0], "lora_A.weight")));
  effml_safetensors_free(st);

  /* write, read back into fresh layers: same tensors, same config */
  char dir[512];
  snprintf(dir, sizeof dir, "%s/adapter_peft_out", EFFML_TEST_TMP);
  mkdir(dir, 0755);
  ck_assert_msg(effml_adapter_lora_save_peft(ctx, dir, 2, l, MODS, "toy") == EFFML_OK, "%s", effml_context_last_error(ctx));
  effml_layer *m[2];
  make_loras(ctx, 2, m);
  ck_assert_int_eq(effml_adapter_lora_load_peft(ctx, dir, 2, m, MODS), EFFML_OK);
  ck_assert(fabs(effml_adapter_lora_scaling(m[1]) - 3.0) < 1e-12);
  for (int i = 0; i < 2; ++i)
    for (int k = 0; k < 2; ++k) {
      const char *pn = k ? "lora_B.weight" : "lora_A.weight";
      effml_tensor *a = effml_layer_param(l[i], pidx(l[i], pn)), *b = effml_layer_param(m[i], pidx(m[i], pn));
      ck_assert(memcmp(effml_tensor_data_const(a), effml_tensor_data_const(b), effml_tensor_nbytes(a)) == 0);
    }
  char path[600];
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  size_t len = 0;
  unsigned char *txt = tu_read_file(path, &len);
  ck_assert(txt != NULL);
  ck_assert(strstr((char *)txt, "\"peft_type\":\t\"LORA\"") != NULL);
  ck_assert(strstr((char *)txt, "\"q_proj\"") != NULL && strstr((char *)txt, "\"v_proj\"") != NULL);
  free(txt);
  for (int i = 0; i < 2; ++i) {
    effml_layer_free(l[i]);
    effml_layer_free(m[i]);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_peft_bad_files) {
  effml_context *ctx = tu_ctx(2);
  effml_layer *l[2];
  make_loras(ctx, 2, l);
  effml_tensor *a0 = effml_layer_param(l[0], pidx(l[0], "lora_A.weight"));
  float keep[16];
  memcpy(keep, effml_tensor_data_const(a0), sizeof keep);
  ck_assert_int_eq(effml_adapter_lora_load_peft(ctx, EFFML_TEST_REF "/adapter_peft_badshape", 2, l, MODS), EFFML_E_SHAPE);
  ck_assert(strstr(effml_context_last_error(ctx), "v_proj.lora_A.weight") != NULL);
  ck_assert(strstr(effml_context_last_error(ctx), "[2, 7]") != NULL);
  ck_assert(memcmp(keep, effml_tensor_data_const(a0), sizeof keep) == 0); /* all-or-nothing */
  ck_assert_int_eq(effml_adapter_lora_load_peft(ctx, EFFML_TEST_REF "/adapter_peft_missing", 2, l, MODS), EFFML_E_NOT_FOUND);
  ck_assert(strstr(effml_context_last_error(ctx), "v_proj.lora_B.weight") != NULL);
  ck_assert(memcmp(keep, effml_tensor_data_const(a0), sizeof keep) == 0);
  ck_assert(fabs(effml_adapter_lora_scaling(l[0]) - 4.0) < 1e-12); /* unchanged: default alpha 8 / r 2 */
  ck_assert_int_eq(effml_adapter_lora_load_peft(ctx, EFFML_TEST_REF "/no_such_dir", 2, l, MODS), EFFML_E_IO);
  const char *wrong[2] = {"x.q_proj", "x.v_proj"};
  ck_assert_int_eq(effml_adapter_lora_load_peft(ctx, EFFML_TEST_REF "/adapter_peft", 2, l, wrong), EFFML_E_NOT_FOUND);
  effml_layer *r3[2];
  make_loras(ctx, 3, r3); /* config r = 2 disagrees with the layers' rank 3 */
  ck_assert_int_eq(effml_adapter_lora_load_peft(ctx, EFFML_TEST_REF "/adapter_peft", 2, r3, MODS), EFFML_E_SHAPE);
  ck_assert(strstr(effml_context_last_error(ctx), "r=2") != NULL);
  ck_assert_int_eq(effml_adapter_lora_load_peft(ctx, EFFML_TEST_REF "/adapter_peft", 0, l, MODS), EFFML_E_INVALID_ARG);
  for (int i = 0; i < 2; ++i) {
    effml_layer_free(l[i]);
    effml_layer_free(r3[i]);
  }
  effml_context_free(ctx);
}
END_TEST

static void make_blocks(effml_context *ctx, effml_layer **b) {
  effml_phm_rule *A = NULL;
  ck_assert_int_eq(effml_phm_rule_create(ctx, 2, 1e-4, &A), EFFML_OK);
  effml_adapter_options o;
  effml_adapter_options_init(&o);
  o.bottleneck = 4;
  for (int i = 0; i < 2; ++i) ck_assert_int_eq(effml_adapter_create(ctx, 8, &o, A, &b[i]), EFFML_OK);
  effml_phm_rule_free(A);
}

static const char *PRE[2] = {"bert.encoder.layer.0.output.adapters.task",
                             "bert.encoder.layer.1.output.adapters.task"};
static const char *RULE = "bert.shared_parameters.task.phm_rule";

START_TEST(test_adapterhub_load_and_roundtrip) {
  effml_context *ctx = tu_ctx(3);
  effml_layer *b[2];
  make_blocks(ctx, b);
  ck_assert_msg(effml_adapter_compacter_load_adapterhub(ctx, EFFML_TEST_REF "/adapter_adapterhub.safetensors", 2, b, PRE,
                                                RULE) == EFFML_OK, "%s", effml_context_last_error(ctx));
  effml_safetensors *st = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, EFFML_TEST_REF "/adapter_adapterhub.safetensors", 0, &st), EFFML_OK);
  expect_same(ctx, st, RULE, effml_layer_param(b[1], pidx(b[1], "phm_rule")));
  expect_same(ctx, st, "bert.encoder.layer.1.output.adapters.task.adapter_up.W_right",
              effml_layer_param(b[1], pidx(b[1], "adapter_up.W_right")));
  expect_same(ctx, st, "bert.encoder.layer.0.output.adapters.task.adapter_down.0.b",
              effml_layer_param(b[0], pidx(b[0], "adapter_down.0.b")));
  effml_safetensors_free(st);
  /* both blocks see the one loaded rule */
  ck_assert(effml_layer_param(b[0], pidx(b[0], "phm_rule")) == effml_layer_param(b[1], pidx(b[1], "phm_rule")));

  char path[512];
  snprintf(path, sizeof path, "%s/adapter_adapterhub_out.safetensors", EFFML_TEST_TMP);
  ck_assert_int_eq(effml_adapter_compacter_save_adapterhub(ctx, path, 2, b, PRE, RULE), EFFML_OK);
  ck_assert_int_eq(effml_safetensors_load(ctx, path, 0, &st), EFFML_OK);
  ck_assert_int_eq(effml_safetensors_count(st), 13); /* 2 x 6 + the rule once */
  effml_safetensors *orig = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, EFFML_TEST_REF "/adapter_adapterhub.safetensors", 0, &orig), EFFML_OK);
  for (int64_t i = 0; i < effml_safetensors_count(orig); ++i) { /* same names, shapes and values */
    const effml_tensor *t = NULL;
    ck_assert_int_eq(effml_safetensors_get(ctx, orig, effml_safetensors_name(orig, i), &t), EFFML_OK);
    expect_same(ctx, st, effml_safetensors_name(orig, i), (effml_tensor *)t);
  }
  effml_safetensors_free(orig);
  effml_safetensors_free(st);

  /* bad: missing key, shape mismatch (blocks of another width) */
  effml_layer *c[2];
  effml_phm_rule *A = NULL;
  effml_phm_rule_create(ctx, 2, 1e-4, &A);
  effml_adapter_options o;
  effml_adapter_options_init(&o);
  o.bottleneck = 2;
  for (int i = 0; i < 2; ++i) ck_assert_int_eq(effml_adapter_create(ctx, 8, &o, A, &c[i]), EFFML_OK);
  effml_phm_rule_free(A);
  ck_assert_int_eq(effml_adapter_compacter_load_adapterhub(ctx, EFFML_TEST_REF "/adapter_adapterhub.safetensors", 2, c, PRE, RULE),
                   EFFML_E_SHAPE);
  ck_assert(strstr(effml_context_last_error(ctx), "adapter_down.0.W_right") != NULL);
  ck_assert_int_eq(effml_adapter_compacter_load_adapterhub(ctx, EFFML_TEST_REF "/adapter_adapterhub.safetensors", 2, b, PRE,
                                                   "bert.shared_parameters.other.phm_rule"), EFFML_E_NOT_FOUND);
  ck_assert_int_eq(effml_adapter_compacter_save_adapterhub(ctx, path, 2, b, PRE, NULL), EFFML_E_INVALID_ARG);
  effml_layer *mixed[2] = {b[0], c[0]}; /* different rules */
  ck_assert_int_eq(effml_adapter_compacter_save_adapterhub(ctx, path, 2, mixed, PRE, RULE), EFFML_E_INVALID_ARG);
  for (int i = 0; i < 2; ++i) {
    effml_layer_free(b[i]);
    effml_layer_free(c[i]);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_own_format_roundtrip) {
  /* our own format: effml_layer_save/load of a block keeps every value */
  effml_context *ctx = tu_ctx(4);
  effml_layer *b[2];
  make_blocks(ctx, b);
  char path[512];
  snprintf(path, sizeof path, "%s/adapter_own.safetensors", EFFML_TEST_TMP);
  ck_assert_int_eq(effml_layer_save(ctx, b[0], path, "blk."), EFFML_OK);
  ck_assert_int_eq(effml_layer_load(ctx, b[1], path, "blk.", EFFML_LAYER_LOAD_STRICT), EFFML_OK);
  for (int32_t i = 0; i < effml_layer_num_params(b[0]); ++i) {
    effml_tensor *x = effml_layer_param(b[0], i), *y = effml_layer_param(b[1], i);
    ck_assert(memcmp(effml_tensor_data_const(x), effml_tensor_data_const(y), effml_tensor_nbytes(x)) == 0);
  }
  effml_layer_free(b[0]);
  effml_layer_free(b[1]);
  effml_context_free(ctx);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("adapter_files");
  TCase *t = tcase_create("files");
  tcase_add_test(t, test_peft_load_and_roundtrip);
  tcase_add_test(t, test_peft_bad_files);
  tcase_add_test(t, test_adapterhub_load_and_roundtrip);
  tcase_add_test(t, test_own_format_roundtrip);
  suite_add_tcase(s, t);
  return s;
}

int main(void) { return tu_run(suite()) ? 1 : 0; }
