/* The ISA level is chosen per context (effml_context_set_isa_level) and every
 * dispatched kernel follows it: each level this CPU runs (portable, AVX2,
 * AVX-512) is forced in turn and the kernels' results are compared with the
 * portable level's -- bit for bit where docs/conventions.md ("Results across
 * ISA levels") promises it, else within the tolerance stated there.  The
 * largest differences seen are printed (the figures in the docs).
 *   sparse_linear  (CSR spmm forward, sddmm weight grad, spmm_t input grad,
 *                   the AVX-512 panel transposes)
 *   sparse_linear with block_rows = 4 (the blocked kernels)
 *   lphm           (the thin LPHM row kernels, forward and backward)
 *   kNN within a set (f32 candidate tiles, exact f64 re-rank)
 *   leverage scores (AVX-512 fused passes vs the BLAS passes) */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"
#include "../lib/sampler/sampler_internal.h"

enum { B = 37, IN = 64, OUT = 48 };

static double rel_diff(const float *a, const float *b, int64_t n) {
  double d = 0, m = 0;
  for (int64_t i = 0; i < n; ++i) {
    d = fmax(d, fabs((double)a[i] - (double)b[i]));
    m = fmax(m, fabs((double)b[i]));
  }
  return m > 0 ? d / m : d;
}

/* Everything a TRAIN forward + backward of a fresh layer writes: y, dx and
 * every parameter grad, concatenated ([B*out + B*in + grads] floats). */
typedef effml_status (*make_fn)(effml_context *ctx, effml_layer **out);

static int64_t run_layer(int32_t isa, make_fn make, float *buf) {
  effml_context *ctx = tu_ctx(7); /* same seed: the same layer at every level */
  ck_assert_int_eq(effml_context_set_isa_level(ctx, isa), EFFML_OK);
  ck_assert_int_eq(effml_context_isa_level(ctx), isa);
  effml_layer *l = NULL;
  ck_assert_int_eq(make(ctx, &l), EFFML_OK);
  const int64_t in = effml_layer_in_features(l), out = effml_layer_out_features(l);
  effml_tensor *x = tu_f32(ctx, B, in, NULL), *y = tu_f32(ctx, B, out, NULL);
  effml_tensor *dy = tu_f32(ctx, B, out, NULL), *dx = tu_f32(ctx, B, in, NULL);
  tu_fill_uniform(x, 11, -1.0f, 1.0f);
  tu_fill_uniform(dy, 12, -1.0f, 1.0f);
  ck_assert_int_eq(effml_layer_forward(ctx, l, x, y, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_int_eq(effml_layer_backward(ctx, l, dy, dx), EFFML_OK);
  int64_t n = 0;
  memcpy(buf + n, effml_tensor_data(y), (size_t)(B * out) * sizeof(float));
  n += B * out;
  memcpy(buf + n, effml_tensor_data(dx), (size_t)(B * in) * sizeof(float));
  n += B * in;
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i) {
    effml_tensor *g = effml_layer_param_grad(l, i);
    memcpy(buf + n, effml_tensor_data(g), effml_tensor_nbytes(g));
    n += effml_tensor_numel(g);
  }
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_tensor_free(dy);
  effml_tensor_free(dx);
  effml_layer_free(l);
  effml_context_free(ctx);
  return n;
}

static effml_status make_sparse(effml_context *ctx, effml_layer **out) {
  effml_sparse_options o;
  effml_sparse_options_init(&o);
  o.sparsity = 0.8;
  return effml_sparse_linear_create(ctx, IN, OUT, &o, out);
}

static effml_status make_sparse_blocked(effml_context *ctx, effml_layer **out) {
  effml_sparse_options o;
  effml_sparse_options_init(&o);
  o.sparsity = 0.8;
  o.block_rows = 4;
  return effml_sparse_linear_create(ctx, IN, OUT, &o, out);
}

static effml_status make_lphm(effml_context *ctx, effml_layer **out) {
  effml_adapter_phm_options o;
  effml_adapter_phm_options_init(&o);
  o.phm_dim = 4;
  o.rank = 2;
  return effml_adapter_phm_create(ctx, IN, OUT, &o, NULL, out);
}

/* The row kernels' unrolled builds (n*r = 4 and 8) with 16-wide column
 * blocks plus a scalar tail in kin and kout. */
static effml_status make_lphm_n4(effml_context *ctx, effml_layer **out) {
  effml_adapter_phm_options o;
  effml_adapter_phm_options_init(&o);
  o.phm_dim = 4;
  o.rank = 1;
  return effml_adapter_phm_create(ctx, 4 * 40, 4 * 20, &o, NULL, out);
}

static effml_status make_lphm_n8(effml_context *ctx, effml_layer **out) {
  effml_adapter_phm_options o;
  effml_adapter_phm_options_init(&o);
  o.phm_dim = 8;
  o.rank = 1;
  return effml_adapter_phm_create(ctx, 8 * 24, 8 * 17, &o, NULL, out);
}

/* Compare every level with the portable one; bit-identical or within tol. */
static void check_layer(const char *name, make_fn make, int bit_identical, double tol) {
  static float ref[1 << 16], got[1 << 16];
  const int32_t cpu = effml_core_isa_level();
  int64_t n = run_layer(EFFML_CORE_ISA_PORTABLE, make, ref);
  for (int32_t isa = EFFML_CORE_ISA_PORTABLE + 1; isa <= cpu; ++isa) {
    ck_assert_int_eq(run_layer(isa, make, got), n);
    double d = rel_diff(got, ref, n);
    printf("isa: %-14s %-8s vs portable: max |diff| / max |value| = %.3g%s\n", name,
           effml_core_isa_name(isa), d, memcmp(got, ref, (size_t)n * sizeof(float)) ? "" : " (bit-identical)");
    if (bit_identical)
      ck_assert_msg(memcmp(got, ref, (size_t)n * sizeof(float)) == 0,
                    "%s at %s differs from portable (rel %g)", name, effml_core_isa_name(isa), d);
    else
      ck_assert_msg(d <= tol, "%s at %s: rel diff %g > %g", name, effml_core_isa_name(isa), d, tol);
  }
  /* the same level twice gives the same bytes */
  ck_assert_int_eq(run_layer(cpu, make, got), n);
  ck_assert_int_eq(run_layer(cpu, make, ref), n);
  ck_assert(memcmp(got, ref, (size_t)n * sizeof(float)) == 0);
}

START_TEST(test_sparse_layers) {
  check_layer("sparse_linear", make_sparse, 0, 1e-5);
  check_layer("sparse_blocked", make_sparse_blocked, 0, 1e-5);
}
END_TEST

START_TEST(test_lphm) {
  check_layer("lphm", make_lphm, 1, 0.0);
  check_layer("lphm n4 r1", make_lphm_n4, 1, 0.0);
  check_layer("lphm n8 r1", make_lphm_n8, 1, 0.0);
}
END_TEST

START_TEST(test_knn_within_each_level) {
  enum { N = 300, D = 10, K = 5 };
  static double x[N * D];
  static int64_t rows[N], ref[N * K], got[N * K];
  uint64_t s = 5;
  for (int64_t i = 0; i < N * D; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    x[i] = (double)(s >> 11) * 0x1.0p-53 + 1000.0; /* offset: f32 candidates lose bits */
  }
  for (int64_t i = 0; i < N; ++i) rows[i] = i;
  const int32_t cpu = effml_core_isa_level();
  for (int32_t isa = EFFML_CORE_ISA_PORTABLE; isa <= cpu; ++isa) {
    effml_context *ctx = tu_ctx(1);
    ck_assert_int_eq(effml_context_set_isa_level(ctx, isa), EFFML_OK);
    ck_assert_int_eq(effml__knn_within_f64(ctx, x, rows, N, D, K, isa ? got : ref, NULL), EFFML_OK);
    if (isa) /* the neighbours (a selection) are the same at every level */
      ck_assert_msg(memcmp(got, ref, sizeof ref) == 0, "kNN within differs at %s",
                    effml_core_isa_name(isa));
    effml_context_free(ctx);
  }
}
END_TEST

START_TEST(test_leverage_each_level) {
  enum { N = 3000, D = 16 };
  static double a[N * D], ref[N], got[N];
  uint64_t s = 9;
  for (int64_t i = 0; i < N * D; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    a[i] = (double)(s >> 11) * 0x1.0p-53 - 0.5;
  }
  effml_sampler_leverage_options o;
  effml_sampler_leverage_options_init(&o);
  const int32_t cpu = effml_core_isa_level();
  for (int32_t isa = EFFML_CORE_ISA_PORTABLE; isa <= cpu; ++isa) {
    effml_context *ctx = tu_ctx(1);
    ck_assert_int_eq(effml_context_set_isa_level(ctx, isa), EFFML_OK);
    ck_assert_int_eq(effml__leverage_f64(ctx, &o, a, NULL, N, D, isa ? got : ref), EFFML_OK);
    if (isa) {
      double d = 0, m = 0;
      for (int64_t i = 0; i < N; ++i) {
        d = fmax(d, fabs(got[i] - ref[i]));
        m = fmax(m, fabs(ref[i]));
      }
      printf("isa: %-14s %-8s vs portable: max |diff| / max |value| = %.3g%s\n", "leverage",
             effml_core_isa_name(isa), d / m, memcmp(got, ref, sizeof ref) ? "" : " (bit-identical)");
      ck_assert_msg(d <= 1e-12 * m, "leverage at %s: rel diff %g", effml_core_isa_name(isa), d / m);
    }
    effml_context_free(ctx);
  }
}
END_TEST

START_TEST(test_set_level_errors) {
  effml_context *ctx = tu_ctx(1);
  const int32_t cpu = effml_core_isa_level();
  ck_assert_int_eq(effml_context_isa_level(ctx), cpu);
  ck_assert_int_eq(effml_context_isa_level(NULL), cpu);
  ck_assert_int_eq(effml_context_set_isa_level(ctx, 3), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "level=3 is not an EFFML_CORE_ISA_*"));
  ck_assert_int_eq(effml_context_set_isa_level(ctx, -1), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_context_set_isa_level(NULL, 0), EFFML_E_INVALID_ARG);
  if (cpu < EFFML_CORE_ISA_AVX512) {
    ck_assert_int_eq(effml_context_set_isa_level(ctx, cpu + 1), EFFML_E_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "is above this CPU's"));
    ck_assert_int_eq(effml_context_isa_level(ctx), cpu); /* unchanged */
  }
  ck_assert_int_eq(effml_context_set_isa_level(ctx, EFFML_CORE_ISA_PORTABLE), EFFML_OK);
  ck_assert_int_eq(effml_context_isa_level(ctx), EFFML_CORE_ISA_PORTABLE);
  ck_assert_int_eq(effml_context_set_isa_level(ctx, cpu), EFFML_OK); /* back to the CPU's */
  ck_assert_int_eq(effml_context_isa_level(ctx), cpu);
  effml_context_free(ctx);
}
END_TEST

int main(void) {
  printf("isa: this CPU runs up to %s\n", effml_core_isa_name(effml_core_isa_level()));
  Suite *s = suite_create("internal_isa");
  TCase *tc = tcase_create("isa");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_set_level_errors);
  tcase_add_test(tc, test_sparse_layers);
  tcase_add_test(tc, test_lphm);
  tcase_add_test(tc, test_knn_within_each_level);
  tcase_add_test(tc, test_leverage_each_level);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
