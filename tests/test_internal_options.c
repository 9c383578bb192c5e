/* The one option-struct reader (effml__options_read, internal.h) that every
 * public *_create with an options struct goes through: NULL keeps the
 * defaults, an older (smaller) struct fills only its prefix, struct_size
 * below the type's minimum or above EFFML__OPTIONS_MAX_SIZE is refused with
 * a message naming the function, the value, the bound and the _init call;
 * a newer (larger) struct is accepted only with every byte beyond the
 * library's sizeof 0, else EFFML_E_UNSUPPORTED naming the struct, the offset
 * and the library version.  The same holds for the readers with their own
 * messages (effml_train_classifier, effml_sampler_temperature_at). */
#include <stdio.h>
#include <string.h>

#include "testutil.h"
#include "../lib/core/internal.h"

typedef struct demo_options {
  uint32_t struct_size;
  int32_t a;
  double b;
  int64_t c; /* a "newer" field */
} demo_options;

static void demo_options_init(demo_options *o) {
  memset(o, 0, sizeof *o);
  o->struct_size = (uint32_t)sizeof *o;
  o->a = 1;
  o->b = 2.5;
  o->c = 7;
}

static void expect_msg(effml_context *ctx, const char *part) {
  const char *m = effml_context_last_error(ctx);
  ck_assert_msg(m && strstr(m, part), "message \"%s\" lacks \"%s\"", m ? m : "(null)", part);
}

START_TEST(test_reader) {
  effml_context *ctx = tu_ctx(1);
  demo_options o, u;
  /* NULL: the defaults */
  ck_assert_int_eq(EFFML__OPTIONS_READ(ctx, "demo_create", demo_options_init, NULL, &o, 8),
                   EFFML_OK);
  ck_assert_int_eq(o.a, 1);
  ck_assert_int_eq(o.c, 7);
  /* an older caller knows a and b only: c keeps its default, struct_size becomes ours */
  demo_options_init(&u);
  u.a = 5;
  u.b = -1.0;
  u.c = 99;
  u.struct_size = (uint32_t)offsetof(demo_options, c);
  ck_assert_int_eq(EFFML__OPTIONS_READ(ctx, "demo_create", demo_options_init, &u, &o, 8),
                   EFFML_OK);
  ck_assert_int_eq(o.a, 5);
  ck_assert_double_eq(o.b, -1.0);
  ck_assert_int_eq(o.c, 7);
  ck_assert_uint_eq(o.struct_size, sizeof o);
  /* too small for the type's minimum */
  u.struct_size = 4;
  ck_assert_int_eq(EFFML__OPTIONS_READ(ctx, "demo_create", demo_options_init, &u, &o, 8),
                   EFFML_E_INVALID_ARG);
  expect_msg(ctx, "demo_create: opt->struct_size=4 is not valid (at least 8 bytes; fill the "
                  "struct with demo_options_init first)");
  /* garbage (an uninitialised struct) */
  u.struct_size = 1u << 20;
  ck_assert_int_eq(EFFML__OPTIONS_READ(ctx, NULL, demo_options_init, &u, &o, 8),
                   EFFML_E_INVALID_ARG);
  expect_msg(ctx, "opt->struct_size=1048576 is not valid (at most 4096 bytes");
  effml_context_free(ctx);
}
END_TEST

/* Public readers that had no upper bound now refuse garbage too. */
START_TEST(test_public_refuses_garbage) {
  effml_context *ctx = tu_ctx(1);
  effml_layer *base = NULL, *l = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 8, 4, 1, &base), EFFML_OK);
  effml_adapter_lora_options o;
  effml_adapter_lora_options_init(&o);
  o.struct_size = 1u << 20;
  ck_assert_int_eq(effml_adapter_lora_create(ctx, base, &o, &l), EFFML_E_INVALID_ARG);
  expect_msg(ctx, "effml_adapter_lora_create: opt->struct_size=1048576 is not valid");
  ck_assert_ptr_null(l);
  effml_layer_free(base);
  effml_context_free(ctx);
}
END_TEST

/* A program compiled against a newer header: its struct is larger.  Extra bytes all 0
 * (the newer fields "off") are accepted; any nonzero one is refused, never ignored. */
START_TEST(test_newer_struct) {
  effml_context *ctx = tu_ctx(1);
  struct {
    demo_options o;
    uint64_t future[2];
  } big;
  memset(&big, 0, sizeof big);
  demo_options_init(&big.o);
  big.o.struct_size = (uint32_t)sizeof big;
  big.o.a = 9;
  demo_options o;
  ck_assert_int_eq(EFFML__OPTIONS_READ(ctx, "demo_create", demo_options_init, &big, &o, 8),
                   EFFML_OK);
  ck_assert_int_eq(o.a, 9);
  ck_assert_uint_eq(o.struct_size, sizeof o);
  ((unsigned char *)&big)[sizeof(demo_options) + 11] = 1;
  o.a = 123;
  ck_assert_int_eq(EFFML__OPTIONS_READ(ctx, "demo_create", demo_options_init, &big, &o, 8),
                   EFFML_E_UNSUPPORTED);
  char want[256];
  snprintf(want, sizeof want,
           "demo_create: demo_options has struct_size=%zu but libeffml %s knows only its first "
           "%zu bytes, and the byte at offset %zu is nonzero: a field of a newer header is set "
           "(leave it 0, or link a newer libeffml)",
           sizeof big, effml_version_string(), sizeof(demo_options), sizeof(demo_options) + 11);
  ck_assert_str_eq(effml_context_last_error(ctx), want);
  /* the first nonzero byte is named */
  ((unsigned char *)&big)[sizeof(demo_options) + 2] = 0x80;
  ck_assert_int_eq(EFFML__OPTIONS_READ(ctx, NULL, demo_options_init, &big, &o, 8),
                   EFFML_E_UNSUPPORTED);
  snprintf(want, sizeof want, "the byte at offset %zu is nonzero", sizeof(demo_options) + 2);
  expect_msg(ctx, want);
  effml_context_free(ctx);
}
END_TEST

/* The public readers: shared (lora, context), fit and the temperature schedule. */
START_TEST(test_public_newer_structs) {
  effml_context *ctx = tu_ctx(1);
  char want[256];
  /* lora (shared reader) */
  effml_layer *base = NULL, *base2 = NULL, *l = NULL, *l2 = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, 8, 4, 1, &base), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 8, 4, 1, &base2), EFFML_OK);
  struct {
    effml_adapter_lora_options o;
    uint64_t future[3];
  } lb;
  memset(&lb, 0, sizeof lb);
  effml_adapter_lora_options_init(&lb.o);
  lb.o.struct_size = (uint32_t)sizeof lb;
  lb.o.rank = 2;
  ck_assert_int_eq(effml_adapter_lora_create(ctx, base2, &lb.o, &l2), EFFML_OK); /* owns base2 */
  effml_layer_free(l2);
  lb.future[2] = 5;
  ck_assert_int_eq(effml_adapter_lora_create(ctx, base, &lb.o, &l), EFFML_E_UNSUPPORTED);
  snprintf(want, sizeof want,
           "effml_adapter_lora_create: effml_adapter_lora_options has struct_size=%zu but "
           "libeffml %s knows only its first %zu bytes",
           sizeof lb, effml_version_string(), sizeof(effml_adapter_lora_options));
  expect_msg(ctx, want);
  ck_assert_ptr_null(l);

  /* context (no context yet: the status only) */
  struct {
    effml_context_options o;
    uint64_t future[2];
  } cb;
  memset(&cb, 0, sizeof cb);
  effml_context_options_init(&cb.o);
  cb.o.struct_size = (uint32_t)sizeof cb;
  effml_context *c2 = NULL;
  ck_assert_int_eq(effml_context_create(&cb.o, &c2), EFFML_OK);
  effml_context_free(c2);
  c2 = NULL;
  cb.future[0] = 1;
  ck_assert_int_eq(effml_context_create(&cb.o, &c2), EFFML_E_UNSUPPORTED);
  ck_assert_ptr_null(c2);

  /* temperature schedule */
  struct {
    effml_sampler_temperature_schedule s;
    double future;
  } tb;
  memset(&tb, 0, sizeof tb);
  effml_sampler_temperature_schedule_init(&tb.s);
  tb.s.struct_size = (uint32_t)sizeof tb;
  tb.s.t_start = 3.0;
  double t = 0;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &tb.s, 0, &t), EFFML_OK);
  ck_assert_double_eq(t, 3.0);
  tb.future = 1.0;
  t = -1;
  ck_assert_int_eq(effml_sampler_temperature_at(ctx, &tb.s, 0, &t), EFFML_E_UNSUPPORTED);
  ck_assert_double_eq(t, -1);
  snprintf(want, sizeof want,
           "effml_sampler_temperature_at: effml_sampler_temperature_schedule has struct_size=%zu",
           sizeof tb);
  expect_msg(ctx, want);

  /* effml_train_classifier: the same rule, and now the same upper limit */
  effml_optimizer_options oo;
  effml_optimizer_options_init(&oo);
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(ctx, &oo, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(ctx, opt, base), EFFML_OK);
  effml_tensor *x = tu_f32(ctx, 4, 8, NULL), *y = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, (int64_t[]){4}, &y), EFFML_OK);
  effml_tensor_fill(ctx, x, 0.25);
  for (int i = 0; i < 4; ++i) ((int32_t *)effml_tensor_data(y))[i] = i;
  struct fit_big {
    effml_train_options f;
    uint64_t future[2];
  } fb;
  memset(&fb, 0, sizeof fb);
  effml_train_options_init(&fb.f);
  fb.f.struct_size = (uint32_t)sizeof fb;
  ck_assert_int_eq(effml_train_classifier(ctx, base, opt, x, y, &fb.f, NULL), EFFML_OK);
  fb.future[1] = 1;
  ck_assert_int_eq(effml_train_classifier(ctx, base, opt, x, y, &fb.f, NULL), EFFML_E_UNSUPPORTED);
  snprintf(want, sizeof want,
           "effml_train_classifier: effml_train_options has struct_size=%zu but libeffml %s "
           "knows only its first %zu bytes, and the byte at offset %zu is nonzero",
           sizeof fb, effml_version_string(), sizeof(effml_train_options),
           offsetof(struct fit_big, future) + 8);
  expect_msg(ctx, want);
  fb.f.struct_size = 1u << 20;
  ck_assert_int_eq(effml_train_classifier(ctx, base, opt, x, y, &fb.f, NULL), EFFML_E_INVALID_ARG);
  expect_msg(ctx, "effml_train_classifier: fit->struct_size=1048576 is not valid (at most 4096 "
                  "bytes; call effml_train_options_init)");
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_optimizer_free(opt);
  effml_layer_free(base);
  effml_context_free(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("internal_options");
  TCase *tc = tcase_create("options");
  tcase_add_test(tc, test_reader);
  tcase_add_test(tc, test_public_refuses_garbage);
  tcase_add_test(tc, test_newer_struct);
  tcase_add_test(tc, test_public_newer_structs);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
