/* Install-tree consumer: a program built only against an installed libeffml
 * (pkg-config or find_package), as a user's program is.  It checks that the
 * header and the linked library agree on the version and that a context and
 * a tensor round-trip through the public API.  Prints one line; exit 0 = OK. */
#include <effml.h>
#include <stdio.h>
#include <string.h>

static int fail(const char *what, effml_context *ctx) {
  fprintf(stderr, "consumer: %s failed: %s\n", what, ctx ? effml_context_last_error(ctx) : "");
  return 1;
}

int main(void) {
  if (effml_version_number() != EFFML_VERSION_NUMBER ||
      strcmp(effml_version_string(), EFFML_VERSION_STRING) != 0) {
    fprintf(stderr, "consumer: header %s but library %s\n", EFFML_VERSION_STRING,
            effml_version_string());
    return 1;
  }
  effml_context_options opt;
  effml_context_options_init(&opt);
  opt.seed = 7;
  effml_context *ctx = NULL;
  if (effml_context_create(&opt, &ctx) != EFFML_OK) return fail("effml_context_create", NULL);

  int64_t shape[2] = {2, 3};
  effml_tensor *t = NULL;
  if (effml_tensor_create(ctx, EFFML_F32, 2, shape, &t) != EFFML_OK)
    return fail("effml_tensor_create", ctx);
  if (effml_tensor_fill(ctx, t, 0.5) != EFFML_OK) return fail("effml_tensor_fill", ctx);
  const float *p = (const float *)effml_tensor_data_const(t);
  double sum = 0;
  for (int64_t i = 0; i < effml_tensor_numel(t); ++i) sum += p[i];

  /* A bad call must fail cleanly with a message naming the argument. */
  effml_tensor *bad = NULL;
  int64_t zero[1] = {0};
  effml_status st = effml_tensor_create(ctx, EFFML_F32, 1, zero, &bad);
  int ok = sum == 3.0 && st == EFFML_E_SHAPE && bad == NULL &&
           strlen(effml_context_last_error(ctx)) > 0;
  printf("consumer: libeffml %s, sum=%g, bad shape -> %s (%s): %s\n", effml_version_string(), sum,
         effml_status_str(st), effml_context_last_error(ctx), ok ? "OK" : "FAIL");
  effml_tensor_free(t);
  effml_context_free(ctx);
  return ok ? 0 : 1;
}
