/* The training loop, batched inference, checkpoints and the data loaders. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

/* Three Gaussian blobs in 8-D, labels 0..2. */
static void blobs(effml_context *ctx, int64_t n, effml_tensor **x, effml_tensor **y) {
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, (int64_t[]){n, 8}, x), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &n, y), EFFML_OK);
  tu_fill_uniform(*x, 5, -1, 1);
  float *xp = effml_tensor_data(*x);
  int32_t *yp = effml_tensor_data(*y);
  for (int64_t i = 0; i < n; ++i) {
    yp[i] = (int32_t)(i % 3);
    xp[i * 8 + yp[i]] += 3.0f; /* class k is shifted along axis k */
  }
}

static effml_layer *mlp(effml_context *ctx, int with_dropout) {
  effml_layer *m = NULL, *l = NULL;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &m), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 8, 16, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  ck_assert_int_eq(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  if (with_dropout) {
    ck_assert_int_eq(effml_layer_dropout_create(ctx, 0.1, 3, &l), EFFML_OK);
    ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  }
  ck_assert_int_eq(effml_layer_dense_create(ctx, 16, 3, 1, &l), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, m, l), EFFML_OK);
  return m;
}

typedef struct { int64_t calls, last_epoch, last_step; double first, last; } progress_log;
static void on_progress(void *u, int64_t epoch, int64_t step, double loss) {
  progress_log *p = (progress_log *)u;
  if (p->calls == 0) p->first = loss;
  p->last = loss;
  p->calls++;
  p->last_epoch = epoch;
  p->last_step = step;
}

static int32_t abort_at_5(void *u, int64_t step) {
  *(int64_t *)u = step;
  return step == 5;
}

static double accuracy_of(effml_context *ctx, effml_layer *m, const effml_tensor *x, const effml_tensor *y) {
  effml_tensor *z = tu_f32(ctx, effml_tensor_dim(x, 0), 3, NULL);
  ck_assert_int_eq(effml_train_predict(ctx, m, x, 64, z), EFFML_OK);
  double acc = 0;
  ck_assert_int_eq(effml_metrics_accuracy(ctx, z, y, &acc), EFFML_OK);
  effml_tensor_free(z);
  return acc;
}

/* Train from a fresh seed-7 context with `threads`; return the model. */
static effml_layer *train(effml_context *ctx, const effml_tensor *x, const effml_tensor *y,
                          progress_log *log, double *final_loss) {
  effml_layer *m = mlp(ctx, 1);
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  o.lr = 1e-2;
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(ctx, &o, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(ctx, opt, m), EFFML_OK);
  effml_train_options f;
  effml_train_options_init(&f);
  f.epochs = 8;
  f.batch_size = 32; /* 300 rows: 9 full batches and a tail of 12 */
  f.shuffle_seed = 11;
  f.progress = on_progress;
  f.progress_user_data = log;
  f.clip_norm = 5.0;
  ck_assert_msg(effml_train_classifier(ctx, m, opt, x, y, &f, final_loss) == EFFML_OK, "%s",
                effml_context_last_error(ctx));
  ck_assert_int_eq(effml_optimizer_steps(opt), 8 * 10);
  effml_optimizer_free(opt);
  return m;
}

START_TEST(test_fit_learns_and_is_deterministic) {
  effml_context *ctx = tu_ctx(7);
  effml_tensor *x, *y;
  blobs(ctx, 300, &x, &y);
  progress_log log = {0};
  double final_loss = 0;
  effml_layer *m = train(ctx, x, y, &log, &final_loss);
  ck_assert_int_eq(log.calls, 8); /* once per epoch */
  ck_assert_int_eq(log.last_epoch, 7);
  ck_assert_int_eq(log.last_step, 80);
  ck_assert_double_eq(log.last, final_loss);
  ck_assert_msg(final_loss < 0.5 * log.first, "loss %g -> %g", log.first, final_loss);
  double acc = accuracy_of(ctx, m, x, y);
  ck_assert_msg(acc > 0.95, "accuracy %g", acc);

  /* same seeds with two threads: bit-identical parameters */
  effml_context *ctx2 = tu_ctx(7);
  ck_assert_int_eq(effml_context_set_num_threads(ctx2, 2), EFFML_OK);
  progress_log log2 = {0};
  double final2 = 0;
  effml_layer *m2 = train(ctx2, x, y, &log2, &final2);
  for (int32_t i = 0; i < effml_layer_num_params(m); ++i)
    ck_assert_int_eq(memcmp(effml_tensor_data(effml_layer_param(m, i)),
                            effml_tensor_data(effml_layer_param(m2, i)),
                            effml_tensor_nbytes(effml_layer_param(m, i))), 0);
  ck_assert(final2 == final_loss);

  /* predict: batch size does not change the logits; equals one infer forward */
  effml_tensor *z1 = tu_f32(ctx, 300, 3, NULL), *z2 = tu_f32(ctx, 300, 3, NULL);
  ck_assert_int_eq(effml_train_predict(ctx, m, x, 7, z1), EFFML_OK);
  ck_assert_int_eq(effml_layer_forward(ctx, m, x, z2, EFFML_LAYER_MODE_INFER), EFFML_OK);
  ck_assert(tu_max_abs_diff_f32(effml_tensor_data(z1), effml_tensor_data(z2), 900) < 1e-5);

  /* checkpoint round trip under sequential names */
  char path[512];
  snprintf(path, sizeof path, "%s/train_fit_%d.safetensors", EFFML_TEST_TMP, (int)getpid());
  ck_assert_int_eq(effml_layer_save(ctx, m, path, NULL), EFFML_OK);
  effml_layer *m3 = mlp(ctx, 1);
  ck_assert_msg(effml_layer_load(ctx, m3, path, NULL, EFFML_LAYER_LOAD_STRICT) == EFFML_OK, "%s",
                effml_context_last_error(ctx));
  ck_assert_str_eq(effml_layer_param_name(m3, 2), "3.weight");
  ck_assert_int_eq(effml_train_predict(ctx, m3, x, 7, z2), EFFML_OK);
  ck_assert_int_eq(memcmp(effml_tensor_data(z1), effml_tensor_data(z2), 900 * sizeof(float)), 0);
  unlink(path);

  effml_tensor_free(z1); effml_tensor_free(z2);
  effml_layer_free(m); effml_layer_free(m2); effml_layer_free(m3);
  effml_tensor_free(x); effml_tensor_free(y);
  effml_context_free(ctx); effml_context_free(ctx2);
}
END_TEST

START_TEST(test_fit_hooks_and_bad_input) {
  effml_context *ctx = tu_ctx(8);
  effml_tensor *x, *y;
  blobs(ctx, 100, &x, &y);
  effml_layer *m = mlp(ctx, 0);
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(ctx, &o, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(ctx, opt, m), EFFML_OK);
  effml_train_options f;
  effml_train_options_init(&f);
  ck_assert_int_eq(f.batch_size, 128);
  f.batch_size = 10;
  f.epochs = 3;
  /* step hook aborts at step 5, before that step's update */
  int64_t seen = 0;
  f.step_hook = abort_at_5;
  f.step_hook_user_data = &seen;
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x, y, &f, NULL), EFFML_E_STATE);
  ck_assert_int_eq(seen, 5);
  ck_assert_int_eq(effml_optimizer_steps(opt), 4);
  f.step_hook = NULL;
  /* progress every 3 steps: 30 steps -> 10 reports */
  progress_log log = {0};
  f.progress = on_progress;
  f.progress_user_data = &log;
  f.progress_every = 3;
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x, y, &f, NULL), EFFML_OK);
  ck_assert_int_eq(log.calls, 10);
  ck_assert_int_eq(log.last_step, 30);

  /* labels out of range: rejected before any step; parameters untouched */
  float w0 = ((float *)effml_tensor_data(effml_layer_param(m, 0)))[0];
  int64_t steps = effml_optimizer_steps(opt);
  ((int32_t *)effml_tensor_data(y))[57] = 3;
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x, y, &f, NULL), EFFML_E_RANGE);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "labels[57]=3"));
  ck_assert_int_eq(effml_optimizer_steps(opt), steps);
  ck_assert(((float *)effml_tensor_data(effml_layer_param(m, 0)))[0] == w0);
  ((int32_t *)effml_tensor_data(y))[57] = 0;
  /* shapes, options */
  effml_tensor *x7 = tu_f32(ctx, 100, 7, NULL), *z = tu_f32(ctx, 100, 4, NULL);
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x7, y, &f, NULL), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_train_predict(ctx, m, x, 10, z), EFFML_E_SHAPE);
  ck_assert_int_eq(effml_train_predict(ctx, m, x, 0, z), EFFML_E_INVALID_ARG);
  f.epochs = 0;
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x, y, &f, NULL), EFFML_E_INVALID_ARG);
  f.epochs = 1;
  f.batch_size = -1;
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x, y, &f, NULL), EFFML_E_INVALID_ARG);
  f.batch_size = 10;
  f.struct_size = 3;
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x, y, &f, NULL), EFFML_E_INVALID_ARG);
  /* NaN input surfaces as a numeric error from the loss, not a NaN loss */
  effml_train_options_init(&f);
  ((float *)effml_tensor_data(x))[0] = NAN;
  double loss = 42;
  ck_assert_int_eq(effml_train_classifier(ctx, m, opt, x, y, &f, &loss), EFFML_E_NUMERIC);
  ck_assert_double_eq(loss, 42);
  effml_tensor_free(x7); effml_tensor_free(z);
  effml_optimizer_free(opt);
  effml_layer_free(m);
  effml_tensor_free(x); effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* Write an IDX file: header, dims, then `data` bytes already big-endian. */
static void write_idx(const char *path, int type, int ndim, const uint32_t *dims, const void *data,
                      size_t len, int extra) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  unsigned char h[4] = {0, 0, (unsigned char)type, (unsigned char)ndim};
  fwrite(h, 1, 4, f);
  for (int k = 0; k < ndim; ++k) {
    unsigned char d[4] = {(unsigned char)(dims[k] >> 24), (unsigned char)(dims[k] >> 16),
                          (unsigned char)(dims[k] >> 8), (unsigned char)dims[k]};
    fwrite(d, 1, 4, f);
  }
  fwrite(data, 1, len, f);
  if (extra) fputc(0, f);
  fclose(f);
}

START_TEST(test_idx_loader) {
  effml_context *ctx = tu_ctx(9);
  char path[512];
  snprintf(path, sizeof path, "%s/train_idx_%d.idx", EFFML_TEST_TMP, (int)getpid());
  /* raw f32 [3]: 1.5, -2, 0.25 big-endian */
  const unsigned char f32be[12] = {0x3F, 0xC0, 0, 0, 0xC0, 0, 0, 0, 0x3E, 0x80, 0, 0};
  uint32_t d3 = 3;
  write_idx(path, 0x0D, 1, &d3, f32be, sizeof f32be, 0);
  effml_tensor *t = NULL;
  ck_assert_msg(effml_data_idx_load(ctx, path, &t) == EFFML_OK, "%s", effml_context_last_error(ctx));
  ck_assert_int_eq(effml_tensor_dtype(t), EFFML_F32);
  const float *fp = effml_tensor_data(t);
  ck_assert(fp[0] == 1.5f && fp[1] == -2.0f && fp[2] == 0.25f);
  effml_tensor_free(t);
  /* u8 [2, 2] */
  const unsigned char u8[4] = {0, 1, 254, 255};
  uint32_t d22[2] = {2, 2};
  write_idx(path, 0x08, 2, d22, u8, 4, 0);
  ck_assert_int_eq(effml_data_idx_load(ctx, path, &t), EFFML_OK);
  ck_assert_int_eq(effml_tensor_ndim(t), 2);
  ck_assert_int_eq(memcmp(effml_tensor_data(t), u8, 4), 0);
  effml_tensor_free(t);
  /* gzipped i16 [2, 3] written by tests/ref/train_make_ref.py */
  ck_assert_int_eq(effml_data_idx_load(ctx, EFFML_TEST_REF "/train_idx_i16.gz", &t), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dtype(t), EFFML_I16);
  const int16_t want[6] = {1, -2, 300, -32768, 32767, 0};
  ck_assert_int_eq(memcmp(effml_tensor_data(t), want, sizeof want), 0);
  effml_tensor_free(t);
  /* malformed files */
  t = NULL;
  write_idx(path, 0x08, 2, d22, u8, 3, 0); /* truncated */
  ck_assert_int_eq(effml_data_idx_load(ctx, path, &t), EFFML_E_FORMAT);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "truncated"));
  write_idx(path, 0x08, 2, d22, u8, 4, 1); /* trailing byte */
  ck_assert_int_eq(effml_data_idx_load(ctx, path, &t), EFFML_E_FORMAT);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "bytes after the data"));
  /* a header that declares 2^32 - 1 bytes in a 13-byte file is refused before anything of
   * that size is allocated (found by fuzz_idx: it used to malloc 4 GiB first) */
  uint32_t dbig[1] = {0xFFFFFFFFu};
  write_idx(path, 0x08, 1, dbig, u8, 4, 1);
  ck_assert_int_eq(effml_data_idx_load(ctx, path, &t), EFFML_E_FORMAT);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "header declares 4294967303"));
  write_idx(path, 0x07, 2, d22, u8, 4, 0); /* unknown type */
  ck_assert_int_eq(effml_data_idx_load(ctx, path, &t), EFFML_E_FORMAT);
  write_idx(path, 0x08, 0, d22, u8, 4, 0); /* no dimensions */
  ck_assert_int_eq(effml_data_idx_load(ctx, path, &t), EFFML_E_FORMAT);
  uint32_t d0[2] = {2, 0};
  write_idx(path, 0x08, 2, d0, u8, 4, 0); /* zero size */
  ck_assert_int_eq(effml_data_idx_load(ctx, path, &t), EFFML_E_FORMAT);
  FILE *f = fopen(path, "wb");
  fputs("PK\x03\x04", f);
  fclose(f);
  ck_assert_int_eq(effml_data_idx_load(ctx, path, &t), EFFML_E_FORMAT);
  ck_assert_ptr_null(t);
  unlink(path);
  ck_assert_int_eq(effml_data_idx_load(ctx, path, &t), EFFML_E_NOT_FOUND);
  ck_assert_int_eq(effml_data_idx_load(ctx, NULL, &t), EFFML_E_INVALID_ARG);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_fashion_mnist) {
  effml_context *ctx = tu_ctx(10);
  effml_tensor *img = NULL, *lab = NULL;
  ck_assert_int_eq(effml_data_fashion_mnist_load(ctx, "/nonexistent/dir", EFFML_DATA_SPLIT_TEST, &img, &lab),
                   EFFML_E_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "dataset-fashion-mnist"));
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "/nonexistent/dir"));
  ck_assert_int_eq(effml_data_fashion_mnist_load(ctx, NULL, 2, &img, &lab), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(img);
  if (access("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", R_OK) != 0) {
    effml_context_free(ctx);
    return; /* package not installed: only the error path is testable */
  }
  ck_assert_msg(effml_data_fashion_mnist_load(ctx, NULL, EFFML_DATA_SPLIT_TEST, &img, &lab) == EFFML_OK, "%s",
                effml_context_last_error(ctx));
  ck_assert_int_eq(effml_tensor_dim(img, 0), 10000);
  ck_assert_int_eq(effml_tensor_dim(img, 1), 784);
  ck_assert_int_eq(effml_tensor_dtype(lab), EFFML_I32);
  const float *p = effml_tensor_data(img);
  int64_t outside = 0;
  float mx = 0;
  for (int64_t i = 0; i < 10000 * 784; ++i) {
    outside += !(p[i] >= 0.0f && p[i] <= 1.0f);
    mx = p[i] > mx ? p[i] : mx;
  }
  ck_assert_int_eq(outside, 0);
  ck_assert(mx == 1.0f);
  int64_t count[10] = {0};
  const int32_t *l = effml_tensor_data(lab);
  for (int64_t i = 0; i < 10000; ++i) count[l[i]]++;
  for (int k = 0; k < 10; ++k) ck_assert_int_eq(count[k], 1000); /* balanced test split */
  ck_assert_int_eq(l[0], 9); /* first test image: ankle boot */
  effml_tensor_free(img);
  effml_tensor_free(lab);
  effml_context_free(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("train_fit");
  TCase *tc = tcase_create("fit");
  tcase_add_test(tc, test_fit_learns_and_is_deterministic);
  tcase_add_test(tc, test_fit_hooks_and_bad_input);
  tcase_add_test(tc, test_idx_loader);
  tcase_add_test(tc, test_fashion_mnist);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
