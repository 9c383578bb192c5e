/* The one option-struct reader (effml__options_read, internal.h) that every
 * public *_create with an options struct goes through: NULL keeps the
 * defaults, an older (smaller) struct fills only its prefix, struct_size
 * below the type's minimum or above EFFML__OPTIONS_MAX_SIZE is refused with
 * a message naming the function, the value, the bound and the _init call. */
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

int main(void) {
  Suite *s = suite_create("internal_options");
  TCase *tc = tcase_create("options");
  tcase_add_test(tc, test_reader);
  tcase_add_test(tc, test_public_refuses_garbage);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
