#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

effml_context *tu_ctx(uint64_t seed) {
  effml_context_options opt;
  effml_context_options_init(&opt);
  opt.seed = seed;
  effml_context *ctx = NULL;
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_OK);
  return ctx;
}

effml_tensor *tu_f32(effml_context *ctx, int64_t rows, int64_t cols, const float *values) {
  int64_t shape[2] = {rows, cols};
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, shape, &t), EFFML_OK);
  if (values) memcpy(effml_tensor_data(t), values, (size_t)(rows * cols) * sizeof(float));
  return t;
}

void tu_fill_uniform(effml_tensor *t, uint64_t seed, float lo, float hi) {
  float *p = (float *)effml_tensor_data(t);
  int64_t n = effml_tensor_numel(t);
  uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    double u = (double)(s >> 11) * 0x1.0p-53;
    p[i] = lo + (hi - lo) * (float)u;
  }
}

double tu_max_abs_diff_f32(const float *a, const float *b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
  }
  return m;
}

unsigned char *tu_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf) *len = (size_t)n;
  return buf;
}

int tu_run(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}

static void *tu_fail_alloc(void *ud, size_t size) {
  tu_failing_alloc *fa = (tu_failing_alloc *)ud;
  fa->count++;
  if (fa->fail_at > 0 && fa->count == fa->fail_at) return NULL;
  void *p = malloc(size);
  if (p) fa->live++;
  return p;
}

static void tu_fail_free(void *ud, void *p) {
  tu_failing_alloc *fa = (tu_failing_alloc *)ud;
  fa->live--;
  free(p);
}

effml_context *tu_ctx_failing(tu_failing_alloc *fa) {
  effml_context_options opt;
  effml_context_options_init(&opt);
  opt.alloc = tu_fail_alloc;
  opt.free = tu_fail_free;
  opt.alloc_user_data = fa;
  int64_t saved = fa->fail_at;
  fa->fail_at = 0; /* the context itself always succeeds */
  effml_context *ctx = NULL;
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_OK);
  fa->fail_at = saved;
  fa->count = 0;
  return ctx;
}
