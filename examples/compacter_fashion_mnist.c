/* Adapt a trained Fashion-MNIST MLP to a shifted task with Compacter,
 * Compacter++, LoRA and full fine-tuning, and compare them.
 *
 *   compacter_fashion_mnist [--data DIR] [--base FILE] [--epochs N] [--batch N]
 *                           [--threads N] [--seed N] [--base-epochs N]
 *                           [--phm-dim N] [--rank R] [--reduction F] [--adapter-lr X]
 *
 * Base model: the 784-256-128-10 ReLU MLP saved by examples/mlp_fashion_mnist
 * (FILE, default OUTDIR/mlp_fashion_mnist.safetensors with OUTDIR =
 * $EFFML_EXAMPLES_OUT or ${TMPDIR:-/tmp}/effml-examples; names "0.weight" ... "4.bias");
 * when FILE is missing it is trained here first (--base-epochs, default 5).
 * Shifted task: every image flipped left-right and inverted (x -> 1 - x),
 * same labels.  Methods, each trained from the same base for --epochs
 * (default 10) with AdamW (warm-up then cosine; lr 1e-2 for adapters and
 * LoRA, --adapter-lr, and 1e-3 for full fine-tuning):
 *   frozen     the base as is
 *   compacter  base frozen; a Compacter block (LPHM, n 8, r 1, one shared phm
 *              rule) after each hidden layer -- the MLP analogue of "after
 *              attention and after the feed-forward block" -- plus the head
 *   compacter++  one block after the last hidden layer only (the
 *              "feed-forward only" placement) plus the head
 *   lora       base frozen; LoRA r 2 (alpha 4) on every dense layer
 *   full       every base parameter trained
 * "plus the head": the 10-way output layer is trained with the adapters (the
 * paper keeps T5's LM head frozen but trains its layer norms; an MLP has no
 * norms, and the head is 0.55 % of the base).  Trainable counts include it.
 * BLAS threads: set OPENBLAS_NUM_THREADS.  One JSON summary line per method. */
#include <effml.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "example_args.h"

static effml_context *ctx;

#define CHECK(call)                                                                     \
  do {                                                                                  \
    effml_status st_ = (call);                                                          \
    if (st_ != EFFML_OK) {                                                              \
      fprintf(stderr, "error: %s: %s\n", effml_status_str(st_), effml_context_last_error(ctx)); \
      exit(1);                                                                          \
    }                                                                                   \
  } while (0)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const int64_t W[4] = {784, 256, 128, 10};
/* Compacter settings (command line): n, r, reduction factor, adapter learning rate. */
static int64_t PHM_DIM = 8, RANK = 1, REDUCTION = 8;
static double ADAPTER_LR = 1e-2;

/* The shifted task: flip each 28x28 image left-right and invert it. */
static effml_tensor *shift_images(const effml_tensor *x) {
  effml_tensor *y;
  CHECK(effml_tensor_contiguous(ctx, x, &y));
  const float *src = effml_tensor_data_const(x);
  float *dst = effml_tensor_data(y);
  for (int64_t i = 0; i < effml_tensor_dim(x, 0); ++i)
    for (int r = 0; r < 28; ++r)
      for (int c = 0; c < 28; ++c) dst[i * 784 + r * 28 + c] = 1.0f - src[i * 784 + r * 28 + 27 - c];
  return y;
}

/* base[k]: the three dense layers of the loaded base model (borrowed). */
static effml_layer *base_dense[3];

/* A fresh dense layer with base layer k's weights, frozen unless `train`. */
static effml_layer *dense_copy(int k, int train) {
  effml_layer *d;
  CHECK(effml_layer_dense_create(ctx, W[k], W[k + 1], 1, &d));
  for (int32_t i = 0; i < 2; ++i) CHECK(effml_tensor_copy(ctx, effml_layer_param(d, i), effml_layer_param(base_dense[k], i)));
  CHECK(effml_layer_set_trainable(ctx, d, NULL, train));
  return d;
}

static void add(effml_layer *m, effml_layer *l) { CHECK(effml_layer_sequential_add(ctx, m, l)); }

static void add_relu(effml_layer *m) {
  effml_layer *a;
  CHECK(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &a));
  add(m, a);
}

enum { FROZEN, COMPACTER, COMPACTERPP, LORA, FULL, N_METHODS };
static const char *NAMES[N_METHODS] = {"frozen", "compacter", "compacter++", "lora", "full"};

/* Build the model of a method from the base weights. */
static effml_layer *build(int method) {
  effml_layer *m;
  CHECK(effml_layer_sequential_create(ctx, &m));
  effml_phm_rule *A = NULL;
  CHECK(effml_phm_rule_create(ctx, PHM_DIM, 1e-4, &A)); /* one A shared by every block */
  effml_adapter_options ao;
  effml_adapter_options_init(&ao);
  ao.reduction_factor = REDUCTION; /* 8: 256 -> 32, 128 -> 16 */
  ao.rank = RANK;
  for (int k = 0; k < 3; ++k) {
    int last = k == 2;
    if (method == LORA) {
      effml_adapter_lora_options lo;
      effml_adapter_lora_options_init(&lo);
      lo.rank = 2;
      lo.alpha = 4;
      effml_layer *l;
      CHECK(effml_adapter_lora_create(ctx, dense_copy(k, 0), &lo, &l));
      add(m, l);
    } else {
      add(m, dense_copy(k, method == FULL || (last && (method == COMPACTER || method == COMPACTERPP))));
    }
    if (last) break;
    add_relu(m);
    if (method == COMPACTER || (method == COMPACTERPP && k == 1)) {
      effml_layer *ad;
      CHECK(effml_adapter_create(ctx, W[k + 1], &ao, A, &ad));
      add(m, ad);
    }
  }
  effml_phm_rule_free(A);
  return m;
}

/* Trainable parameters of a model, the shared rule counted once. */
static int64_t trainable_params(effml_layer *m) {
  int64_t n = 0;
  const effml_tensor *seen = NULL;
  for (int32_t i = 0; i < effml_layer_num_params(m); ++i) {
    if (!effml_layer_param_trainable(m, i)) continue;
    const char *name = effml_layer_param_name(m, i);
    const char *dot = strchr(name, '.');
    if (dot && strcmp(dot + 1, "phm_rule") == 0) {
      if (seen == effml_layer_param(m, i)) continue;
      seen = effml_layer_param(m, i);
    }
    n += effml_tensor_numel(effml_layer_param(m, i));
  }
  return n;
}

static double evaluate(effml_layer *m, const effml_tensor *x, const effml_tensor *y, effml_tensor *logits) {
  double acc = 0;
  CHECK(effml_train_predict(ctx, m, x, 1000, logits));
  CHECK(effml_metrics_accuracy(ctx, logits, y, &acc));
  return acc;
}

static void train(effml_layer *m, double lr, int64_t epochs, int64_t batch, uint64_t seed,
                  const effml_tensor *x, const effml_tensor *y) {
  int64_t steps = epochs * ((effml_tensor_dim(x, 0) + batch - 1) / batch);
  effml_optimizer_options oo;
  effml_optimizer_options_init(&oo);
  oo.lr = lr;
  oo.weight_decay = 0.0;
  oo.schedule = EFFML_OPTIM_LR_WARMUP_COSINE;
  oo.warmup_steps = steps / 20;
  oo.total_steps = steps;
  effml_optimizer *opt;
  CHECK(effml_optimizer_create(ctx, &oo, &opt));
  CHECK(effml_optimizer_add_layer(ctx, opt, m));
  effml_train_options fo;
  effml_train_options_init(&fo);
  fo.epochs = epochs;
  fo.batch_size = batch;
  fo.shuffle_seed = seed;
  CHECK(effml_train_classifier(ctx, m, opt, x, y, &fo, NULL));
  effml_optimizer_free(opt);
}

int main(int argc, char **argv) {
  const char *data = NULL, *base_path = NULL;
  int64_t epochs = 10, batch = 128, base_epochs = 5;
  int threads = 2;
  unsigned long long seed = 42;
  const ex_opt opts[] = {
      {"--data", EX_STR, &data, "DIR", "Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)"},
      {"--base", EX_STR, &base_path, "FILE", "base MLP checkpoint (default OUTDIR/mlp_fashion_mnist.safetensors;"
                                             " trained and saved there when missing)"},
      {"--epochs", EX_I64, &epochs, "N", "epochs per method (default 10)"},
      {"--batch", EX_I64, &batch, "N", "batch size (default 128)"},
      {"--base-epochs", EX_I64, &base_epochs, "N", "epochs of the base when it is trained here (default 5)"},
      {"--threads", EX_INT, &threads, "N", "libeffml threads (default 2)"},
      {"--seed", EX_U64, &seed, "N", "seed (default 42)"},
      {"--phm-dim", EX_I64, &PHM_DIM, "N", "PHM dimension n (default 8)"},
      {"--rank", EX_I64, &RANK, "R", "LPHM rank (default 1)"},
      {"--reduction", EX_I64, &REDUCTION, "F", "adapter bottleneck reduction factor (default 8)"},
      {"--adapter-lr", EX_F64, &ADAPTER_LR, "X", "learning rate of adapters and LoRA (default 1e-2)"},
  };
  ex_parse(argc, argv,
           "Adapt a trained Fashion-MNIST MLP to a shifted task (flipped, inverted images) with\n"
           "Compacter, Compacter++, LoRA and full fine-tuning, and compare them.\n"
           "OUTDIR: $EFFML_EXAMPLES_OUT, else ${TMPDIR:-/tmp}/effml-examples (created).",
           opts, EX_NOPTS(opts));
  char base_buf[8192];
  if (!base_path) {
    snprintf(base_buf, sizeof base_buf, "%s",
             ex_path(ex_out_dir(NULL), "mlp_fashion_mnist.safetensors"));
    base_path = base_buf;
  }
  effml_context_options co;
  effml_context_options_init(&co);
  co.num_threads = threads;
  co.seed = seed;
  if (effml_context_create(&co, &ctx) != EFFML_OK) return 1;

  effml_tensor *train_x, *train_y, *test_x, *test_y;
  CHECK(effml_data_fashion_mnist_load(ctx, data, EFFML_DATA_SPLIT_TRAIN, &train_x, &train_y));
  CHECK(effml_data_fashion_mnist_load(ctx, data, EFFML_DATA_SPLIT_TEST, &test_x, &test_y));
  int64_t logits_shape[2] = {effml_tensor_dim(test_x, 0), 10};
  effml_tensor *logits;
  CHECK(effml_tensor_create(ctx, EFFML_F32, 2, logits_shape, &logits));

  /* The base model: load it, or train it on the original task. */
  effml_layer *base;
  CHECK(effml_layer_sequential_create(ctx, &base));
  for (int k = 0; k < 3; ++k) {
    CHECK(effml_layer_dense_create(ctx, W[k], W[k + 1], 1, &base_dense[k]));
    add(base, base_dense[k]);
    if (k < 2) add_relu(base);
  }
  if (effml_layer_load(ctx, base, base_path, NULL, EFFML_LAYER_LOAD_STRICT) == EFFML_OK) {
    printf("base model: %s\n", base_path);
  } else {
    printf("base model: %s not loadable (%s); training it for %lld epochs\n", base_path,
           effml_context_last_error(ctx), (long long)base_epochs);
    train(base, 2e-3, base_epochs, batch, seed, train_x, train_y);
    if (effml_layer_save(ctx, base, base_path, NULL) == EFFML_OK) printf("saved the base model to %s\n", base_path);
  }
  const int64_t base_params = effml_layer_count_params(base, 0);
  printf("base on the original task: %.2f%% test accuracy, %lld parameters\n",
         100.0 * evaluate(base, test_x, test_y, logits), (long long)base_params);

  effml_tensor *sx = shift_images(train_x), *stx = shift_images(test_x);
  printf("shifted task: images flipped left-right and inverted; %lld epochs per method\n\n", (long long)epochs);
  printf("%-12s  %9s  %10s  %8s  %8s\n", "method", "test_acc", "trainable", "% base", "seconds");

  double acc[N_METHODS], secs[N_METHODS];
  int64_t tp[N_METHODS];
  for (int m = 0; m < N_METHODS; ++m) {
    effml_layer *model = build(m);
    tp[m] = trainable_params(model);
    double t0 = now();
    /* learning rates: adapters like a larger one (the paper: 3e-3 vs 3e-4 for fine-tuning) */
    if (m != FROZEN) train(model, m == FULL ? 1e-3 : ADAPTER_LR, epochs, batch, seed + 1, sx, train_y);
    secs[m] = now() - t0;
    acc[m] = evaluate(model, stx, test_y, logits);
    printf("%-12s  %8.2f%%  %10lld  %7.3f%%  %8.1f\n", NAMES[m], 100.0 * acc[m], (long long)tp[m],
           100.0 * (double)tp[m] / (double)base_params, secs[m]);
    fflush(stdout);
    effml_layer_free(model);
  }
  printf("\ncompacter vs full fine-tuning: %+.2f points with %.2f%% of the parameters\n",
         100.0 * (acc[COMPACTER] - acc[FULL]), 100.0 * (double)tp[COMPACTER] / (double)base_params);
  for (int m = 0; m < N_METHODS; ++m)
    printf("{\"example\":\"compacter_fashion_mnist\",\"method\":\"%s\",\"test_accuracy\":%.4f,"
           "\"trainable_params\":%lld,\"trainable_pct\":%.4f,\"seconds\":%.2f,\"epochs\":%lld}\n",
           NAMES[m], acc[m], (long long)tp[m], 100.0 * (double)tp[m] / (double)base_params, secs[m],
           (long long)(m == FROZEN ? 0 : epochs));

  effml_tensor_free(sx);
  effml_tensor_free(stx);
  effml_tensor_free(logits);
  effml_layer_free(base);
  effml_tensor_free(train_x);
  effml_tensor_free(train_y);
  effml_tensor_free(test_x);
  effml_tensor_free(test_y);
  effml_context_free(ctx);
  return 0;
}
