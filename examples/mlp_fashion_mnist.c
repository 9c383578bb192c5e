/* Train a 784-256-128-10 MLP on Fashion-MNIST with libeffml, report test
 * accuracy, and save the model for the adapter, sparse and cascade examples.
 *
 *   mlp_fashion_mnist [--data DIR] [--out FILE] [--epochs N] [--batch N]
 *                     [--lr X] [--threads N] [--seed N]
 *
 * DIR defaults to /usr/share/datasets/fashion-mnist (Debian package
 * dataset-fashion-mnist).  FILE (default OUTDIR/mlp_fashion_mnist.safetensors,
 * OUTDIR = $EFFML_EXAMPLES_OUT or ${TMPDIR:-/tmp}/effml-examples) gets
 * the parameters under PyTorch nn.Sequential names: "0.weight" [256, 784],
 * "0.bias", "2.weight" [128, 256], "2.bias", "4.weight" [10, 128], "4.bias".
 * BLAS threads: set OPENBLAS_NUM_THREADS (libeffml never changes it).
 * The last line is a JSON summary. */
#include <effml.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "example_args.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define CHECK(call)                                                                     \
  do {                                                                                  \
    effml_status st_ = (call);                                                          \
    if (st_ != EFFML_OK) {                                                              \
      fprintf(stderr, "error: %s: %s\n", effml_status_str(st_), effml_context_last_error(ctx)); \
      exit(1);                                                                          \
    }                                                                                   \
  } while (0)

/* What the per-epoch progress callback needs to evaluate on the test set. */
typedef struct progress {
  effml_context *ctx;
  effml_layer *model;
  effml_optimizer *opt;
  effml_tensor *test_x, *test_y, *test_logits;
  double t0, eval_seconds, last_accuracy;
} progress;

static void on_epoch(void *user, int64_t epoch, int64_t step, double loss) {
  progress *p = (progress *)user;
  effml_context *ctx = p->ctx;
  double t = now();
  CHECK(effml_train_predict(ctx, p->model, p->test_x, 1000, p->test_logits));
  CHECK(effml_metrics_accuracy(ctx, p->test_logits, p->test_y, &p->last_accuracy));
  p->eval_seconds += now() - t;
  printf("%5lld  %6lld  %10.4f  %9.2f%%  %9.2e  %8.1f\n", (long long)epoch + 1, (long long)step,
         loss, 100.0 * p->last_accuracy, effml_optimizer_lr(p->opt),
         now() - p->t0 - p->eval_seconds);
  fflush(stdout);
}

int main(int argc, char **argv) {
  const char *data = NULL, *out = NULL;
  int64_t epochs = 20, batch = 128;
  double lr = 2e-3;
  int threads = 2;
  unsigned long long seed = 42;
  const ex_opt opts[] = {
      {"--data", EX_STR, &data, "DIR", "Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)"},
      {"--out", EX_STR, &out, "FILE", "checkpoint to write (default OUTDIR/mlp_fashion_mnist.safetensors)"},
      {"--epochs", EX_I64, &epochs, "N", "training epochs (default 20)"},
      {"--batch", EX_I64, &batch, "N", "batch size (default 128)"},
      {"--lr", EX_F64, &lr, "X", "peak AdamW learning rate (default 2e-3)"},
      {"--threads", EX_INT, &threads, "N", "libeffml threads (default 2)"},
      {"--seed", EX_U64, &seed, "N", "seed (default 42)"},
  };
  ex_parse(argc, argv,
           "Train a 784-256-128-10 MLP on Fashion-MNIST and save it for the adapter example.\n"
           "OUTDIR: $EFFML_EXAMPLES_OUT, else ${TMPDIR:-/tmp}/effml-examples (created).\n"
           "About 2 s per epoch on 2 cores; the last line is a JSON summary.",
           opts, EX_NOPTS(opts));
  char out_buf[8192];
  if (!out) {
    snprintf(out_buf, sizeof out_buf, "%s", ex_path(ex_out_dir(NULL), "mlp_fashion_mnist.safetensors"));
    out = out_buf;
  }

  effml_context_options co;
  effml_context_options_init(&co);
  co.num_threads = threads;
  co.seed = seed;
  effml_context *ctx = NULL;
  if (effml_context_create(&co, &ctx) != EFFML_OK) return 1;

  /* Data: f32 [n, 784] in [0, 1] and i32 labels. */
  effml_tensor *train_x, *train_y, *test_x, *test_y;
  CHECK(effml_data_fashion_mnist_load(ctx, data, EFFML_DATA_SPLIT_TRAIN, &train_x, &train_y));
  CHECK(effml_data_fashion_mnist_load(ctx, data, EFFML_DATA_SPLIT_TEST, &test_x, &test_y));
  printf("Fashion-MNIST: %lld train, %lld test images\n", (long long)effml_tensor_dim(train_x, 0),
         (long long)effml_tensor_dim(test_x, 0));

  /* Model: dense(784,256) relu dense(256,128) relu dense(128,10). */
  const int64_t widths[4] = {784, 256, 128, 10};
  effml_layer *model, *layer;
  CHECK(effml_layer_sequential_create(ctx, &model));
  for (int k = 0; k < 3; ++k) {
    CHECK(effml_layer_dense_create(ctx, widths[k], widths[k + 1], 1, &layer));
    CHECK(effml_layer_sequential_add(ctx, model, layer));
    if (k < 2) {
      CHECK(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &layer));
      CHECK(effml_layer_sequential_add(ctx, model, layer));
    }
  }
  printf("model: 784-256-128-10 MLP, %lld parameters\n",
         (long long)effml_layer_count_params(model, 0));

  /* AdamW with one epoch of linear warm-up, then cosine decay to 0. */
  const int64_t steps_per_epoch = (effml_tensor_dim(train_x, 0) + batch - 1) / batch;
  effml_optimizer_options oo;
  effml_optimizer_options_init(&oo);
  oo.lr = lr;
  oo.weight_decay = 1e-4;
  oo.schedule = EFFML_OPTIM_LR_WARMUP_COSINE;
  oo.warmup_steps = steps_per_epoch;
  oo.total_steps = epochs * steps_per_epoch;
  effml_optimizer *opt;
  CHECK(effml_optimizer_create(ctx, &oo, &opt));
  CHECK(effml_optimizer_add_layer(ctx, opt, model));

  int64_t logits_shape[2] = {effml_tensor_dim(test_x, 0), 10};
  effml_tensor *test_logits;
  CHECK(effml_tensor_create(ctx, EFFML_F32, 2, logits_shape, &test_logits));
  progress pr = {ctx, model, opt, test_x, test_y, test_logits, now(), 0.0, 0.0};

  effml_train_options fo;
  effml_train_options_init(&fo);
  fo.epochs = epochs;
  fo.batch_size = batch;
  fo.shuffle_seed = seed;
  fo.progress = on_epoch;
  fo.progress_user_data = &pr;
  printf("epoch    step  train_loss  test_acc      next_lr  train_s\n");
  double final_loss = 0;
  CHECK(effml_train_classifier(ctx, model, opt, train_x, train_y, &fo, &final_loss));
  const double train_seconds = now() - pr.t0 - pr.eval_seconds;

  CHECK(effml_layer_save(ctx, model, out, NULL));
  printf("saved %s\n", out);
  printf("{\"example\":\"mlp_fashion_mnist\",\"test_accuracy\":%.4f,\"train_seconds\":%.2f,"
         "\"params\":%lld,\"epochs\":%lld,\"batch\":%lld,\"final_train_loss\":%.4f}\n",
         pr.last_accuracy, train_seconds, (long long)effml_layer_count_params(model, 0),
         (long long)epochs, (long long)batch, final_loss);

  effml_tensor_free(test_logits);
  effml_optimizer_free(opt);
  effml_layer_free(model);
  effml_tensor_free(train_x); effml_tensor_free(train_y);
  effml_tensor_free(test_x); effml_tensor_free(test_y);
  effml_context_free(ctx);
  return 0;
}
