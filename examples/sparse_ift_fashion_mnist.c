/* Sparse-IFT on Fashion-MNIST: the 784-256-128-10 MLP of mlp_fashion_mnist,
 * dense vs Sparse Wide at s = 0.5, 0.75, 0.9 (and at 0.9 with the 4x1
 * block-sparse layout, RigL moving whole blocks) and Sparse Factorized at
 * 0.75, every sparse variant trained with RigL, all at the dense model's FLOPs.
 *
 *   sparse_ift_fashion_mnist [--data DIR] [--epochs N] [--batch N] [--lr X]
 *                            [--threads N] [--seed N] [--only NAME]
 *
 * Sparse Wide widens the hidden widths by √(1/(1-s)) (256 -> 362/512/809,
 * 128 -> 181/256/404); each of the three layers keeps exactly as many
 * nonzeros as its dense counterpart has weights, so the forward FLOPs equal
 * the dense model's.  Sparse Factorized replaces the two hidden layers by
 * sparse U, ReLU, sparse V (inner width ⌈in·out/((1-s)(in+out))⌉) and keeps
 * the head dense.  RigL: ΔT = 100 steps, drop fraction 0.3 with cosine
 * decay, updates stop at 75 % of training, new weights start at 0 with zeroed
 * AdamW moments.  Training FLOPs per sample follow Sparse-IFT's accounting
 * (3·f per step, plus the dense-gradient steps of RigL).
 * BLAS threads: set OPENBLAS_NUM_THREADS.  One JSON line per variant. */
#define EFFML_EXPERIMENTAL /* effml_adapter_lora_merge_drift, effml_dst_training_flops, EFFML_SPARSE_COMPAT_FLOAT */
#include <effml.h>

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

/* CPU seconds of all threads: a fairer yardstick than wall time on a busy machine. */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
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

enum { DENSE, WIDE, FACTORIZED };

typedef struct variant {
  const char *name;
  int kind;
  double sparsity;
  int32_t block; /* effml_sparse_options.block_rows: 1 unstructured, 4 = 4x1 blocks */
} variant;

/* Append layer (and a ReLU after it unless it is the head). */
static void add(effml_context *ctx, effml_layer *model, effml_layer *layer, int relu) {
  CHECK(effml_layer_sequential_add(ctx, model, layer));
  if (relu) {
    effml_layer *act;
    CHECK(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &act));
    CHECK(effml_layer_sequential_add(ctx, model, act));
  }
}

static effml_layer *build(effml_context *ctx, const variant *v) {
  static const int64_t w[4] = {784, 256, 128, 10};
  effml_layer *model, *layer;
  CHECK(effml_layer_sequential_create(ctx, &model));
  effml_sparse_options so;
  effml_sparse_options_init(&so);
  so.sparsity = v->sparsity;
  so.block_rows = v->block;
  for (int k = 0; k < 3; ++k) {
    if (v->kind == WIDE) {
      /* widen the hidden sides only: the input (784) and the classes (10) stay */
      so.widen = (k > 0 ? EFFML_SPARSE_WIDEN_IN : 0) | (k < 2 ? EFFML_SPARSE_WIDEN_OUT : 0);
      CHECK(effml_sparse_wide_create(ctx, w[k], w[k + 1], &so, &layer));
    } else if (v->kind == FACTORIZED && k < 2) {
      so.activation = EFFML_LAYER_ACT_RELU;
      CHECK(effml_sparse_factorized_create(ctx, w[k], w[k + 1], &so, &layer));
    } else {
      CHECK(effml_layer_dense_create(ctx, w[k], w[k + 1], 1, &layer));
    }
    add(ctx, model, layer, k < 2);
  }
  return model;
}

/* Forward FLOPs of the same shapes computed densely (RigL's dense-gradient cost f_D). */
static double dense_equivalent_flops(effml_context *ctx, effml_layer *model) {
  double f = 0;
  for (int32_t i = 0; i < effml_layer_sequential_count(model); ++i) {
    effml_layer *l = effml_layer_sequential_get(model, i);
    int32_t nm = effml_sparse_num_matrices(l);
    if (nm == 0) {
      double g = 0;
      CHECK(effml_sparse_count_flops(ctx, l, &g));
      f += g;
      continue;
    }
    for (int32_t m = 0; m < nm; ++m) {
      int64_t r, c;
      CHECK(effml_sparse_matrix_shape(ctx, l, m, &r, &c));
      f += 2.0 * (double)r * (double)c;
    }
  }
  return f;
}

int main(int argc, char **argv) {
  const char *data = NULL, *only = NULL;
  int64_t epochs = 3, batch = 128;
  double lr = 2e-3;
  int threads = 2;
  unsigned long long seed = 42;
  const ex_opt opts[] = {
      {"--data", EX_STR, &data, "DIR", "Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)"},
      {"--epochs", EX_I64, &epochs, "N", "training epochs per variant (default 3)"},
      {"--batch", EX_I64, &batch, "N", "batch size (default 128)"},
      {"--lr", EX_F64, &lr, "X", "peak AdamW learning rate (default 2e-3)"},
      {"--threads", EX_INT, &threads, "N", "libeffml threads (default 2)"},
      {"--seed", EX_U64, &seed, "N", "seed (default 42)"},
      {"--only", EX_STR, &only, "NAME", "train only the variant NAME (as printed in the table)"},
  };
  ex_parse(argc, argv,
           "Sparse-IFT on Fashion-MNIST: a dense MLP vs Sparse Wide (s = 0.5, 0.75, 0.9) and Sparse\n"
           "Factorized (s = 0.75) MLPs trained with RigL at the dense model's FLOPs.  Writes no files.",
           opts, EX_NOPTS(opts));
  effml_context_options co;
  effml_context_options_init(&co);
  co.num_threads = threads;
  co.seed = seed;
  effml_context *ctx = NULL;
  if (effml_context_create(&co, &ctx) != EFFML_OK) return 1;

  effml_tensor *train_x, *train_y, *test_x, *test_y;
  CHECK(effml_data_fashion_mnist_load(ctx, data, EFFML_DATA_SPLIT_TRAIN, &train_x, &train_y));
  CHECK(effml_data_fashion_mnist_load(ctx, data, EFFML_DATA_SPLIT_TEST, &test_x, &test_y));
  const int64_t n_train = effml_tensor_dim(train_x, 0), n_test = effml_tensor_dim(test_x, 0);
  printf("Fashion-MNIST: %lld train, %lld test images; %lld epochs, batch %lld\n",
         (long long)n_train, (long long)n_test, (long long)epochs, (long long)batch);
  int64_t logits_shape[2] = {n_test, 10};
  effml_tensor *logits;
  CHECK(effml_tensor_create(ctx, EFFML_F32, 2, logits_shape, &logits));

  enum { NV = 6 };
  static const variant V[NV] = {{"dense", DENSE, 0.0, 1},
                                {"sparse_wide_s50", WIDE, 0.5, 1},
                                {"sparse_wide_s75", WIDE, 0.75, 1},
                                {"sparse_wide_s90", WIDE, 0.9, 1},
                                {"sparse_wide_s90_block", WIDE, 0.9, 4},
                                {"sparse_factorized_s75", FACTORIZED, 0.75, 1}};
  char json[NV][640];
  int done[NV] = {0};
  const int64_t steps_per_epoch = (n_train + batch - 1) / batch, total = epochs * steps_per_epoch;
  const int64_t delta_t = 100;
  const double end_fraction = 0.75;
  printf("\n%-22s %8s %9s %12s %12s %9s %9s %8s %8s\n", "variant", "widths", "test_acc",
         "fwd_flops", "train_flops", "weights", "updates", "train_s", "cpu_s");
  for (int v = 0; v < NV; ++v) {
    if (only && strcmp(only, V[v].name) != 0) continue;
    effml_context_set_seed(ctx, seed);
    effml_layer *model = build(ctx, &V[v]);
    effml_optimizer_options oo;
    effml_optimizer_options_init(&oo);
    oo.lr = lr;
    oo.weight_decay = 1e-4;
    oo.schedule = EFFML_OPTIM_LR_WARMUP_COSINE;
    oo.warmup_steps = steps_per_epoch < total ? steps_per_epoch : total / 10;
    oo.total_steps = total;
    effml_optimizer *opt;
    CHECK(effml_optimizer_create(ctx, &oo, &opt));
    CHECK(effml_optimizer_add_layer(ctx, opt, model));
    effml_dst *rigl = NULL;
    effml_train_options fo;
    effml_train_options_init(&fo);
    fo.epochs = epochs;
    fo.batch_size = batch;
    fo.shuffle_seed = seed;
    if (V[v].kind != DENSE) {
      effml_dst_options d;
      effml_dst_options_init(&d);
      d.method = EFFML_SPARSE_DST_RIGL;
      d.delta_t = delta_t;
      d.drop_fraction = 0.3;
      d.total_steps = total;
      d.end_fraction = end_fraction;
      d.seed = seed;
      CHECK(effml_dst_create(ctx, model, opt, &d, &rigl));
      fo.step_hook = effml_dst_step_hook;
      fo.step_hook_user_data = rigl;
    }
    const int64_t nnz0 = effml_sparse_nnz(model);
    const double t0 = now(), c0 = cpu_now();
    CHECK(effml_train_classifier(ctx, model, opt, train_x, train_y, &fo, NULL));
    const double train_s = now() - t0, train_cpu_s = cpu_now() - c0;
    double acc = 0, fwd = 0, train = 0;
    CHECK(effml_train_predict(ctx, model, test_x, 1000, logits));
    CHECK(effml_metrics_accuracy(ctx, logits, test_y, &acc));
    CHECK(effml_sparse_count_flops(ctx, model, &fwd));
    if (rigl) {
      CHECK(effml_dst_training_flops(ctx, fwd, dense_equivalent_flops(ctx, model), delta_t,
                                     end_fraction, &train));
    } else {
      train = 3.0 * fwd;
    }
    /* weights that cost FLOPs: stored nonzeros plus dense weight matrices */
    const int64_t weights = effml_layer_count_params(model, 0);
    if (nnz0 != effml_sparse_nnz(model)) {
      fprintf(stderr, "nonzero count changed: %lld -> %lld\n", (long long)nnz0,
              (long long)effml_sparse_nnz(model));
      return 1;
    }
    char widths[32];
    snprintf(widths, sizeof widths, "%lld-%lld",
             (long long)effml_layer_out_features(effml_layer_sequential_get(model, 0)),
             (long long)effml_layer_out_features(effml_layer_sequential_get(model, 2)));
    printf("%-22s %8s %8.2f%% %12.0f %12.0f %9lld %9lld %8.1f %8.1f\n", V[v].name, widths,
           100.0 * acc, fwd, train, (long long)weights, (long long)effml_dst_updates(rigl), train_s,
           train_cpu_s);
    fflush(stdout);
    snprintf(json[v], sizeof json[v],
             "{\"example\":\"sparse_ift_fashion_mnist\",\"variant\":\"%s\",\"sparsity\":%.2f,"
             "\"hidden\":\"%s\",\"test_accuracy\":%.4f,\"fwd_flops_per_sample\":%.0f,"
             "\"train_flops_per_sample_step\":%.0f,\"nonzeros\":%lld,\"params\":%lld,"
             "\"rigl_updates\":%lld,\"train_seconds\":%.2f,\"train_cpu_seconds\":%.2f,"
             "\"epochs\":%lld,\"block_rows\":%d,\"seed\":%llu}",
             V[v].name, V[v].sparsity, widths, acc, fwd, train, (long long)nnz0,
             (long long)weights, (long long)effml_dst_updates(rigl), train_s, train_cpu_s, (long long)epochs,
             (int)V[v].block, (unsigned long long)seed);
    done[v] = 1;
    effml_dst_free(rigl);
    effml_optimizer_free(opt);
    effml_layer_free(model);
  }
  printf("\n");
  for (int v = 0; v < NV; ++v)
    if (done[v]) printf("%s\n", json[v]);
  effml_tensor_free(logits);
  effml_tensor_free(train_x); effml_tensor_free(train_y);
  effml_tensor_free(test_x); effml_tensor_free(test_y);
  effml_context_free(ctx);
  return 0;
}
