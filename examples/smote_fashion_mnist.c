/* smote_fashion_mnist: make Fashion-MNIST long-tailed (imbalance ratio 100,
 * exponential profile n_c = 6000 * 100^(-c/9)), then train the same MLP
 * (784-128-10, AdamW) three ways and compare balanced accuracy and per-class
 * recall on the (balanced) test set:
 *   none         the long-tailed set as is
 *   smote        SMOTE (k_neighbors 5, 'auto') to 6000 rows per class
 *   temperature  a stream of the same size as the long-tailed set whose
 *                classes are drawn with q_c ∝ n_c^(1/T) (alias sampler) and
 *                examples uniformly within the class
 *
 *   smote_fashion_mnist [--data DIR] [--epochs N] [--temperature T] [--threads N] [--seed S]
 *
 * Ends with one JSON line per method. */
#include <effml.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "example_args.h"

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

/* Rows `idx` of x [n, 784] f32 and y [n] i32 as new tensors. */
static void gather(effml_context *ctx, const effml_tensor *x, const effml_tensor *y,
                   const int64_t *idx, int64_t m, effml_tensor **xo, effml_tensor **yo) {
  int64_t s[2] = {m, 784};
  CHECK(effml_tensor_create(ctx, EFFML_F32, 2, s, xo));
  CHECK(effml_tensor_create(ctx, EFFML_I32, 1, &m, yo));
  const float *xp = effml_tensor_data_const(x);
  const int32_t *yp = effml_tensor_data_const(y);
  float *xq = effml_tensor_data(*xo);
  int32_t *yq = effml_tensor_data(*yo);
  for (int64_t i = 0; i < m; ++i) {
    memcpy(xq + i * 784, xp + idx[i] * 784, 784 * sizeof(float));
    yq[i] = yp[idx[i]];
  }
}

/* Train the MLP on (x, y); per-class recall on the test set into recall[10]. */
static double train_eval(effml_context *ctx, const effml_tensor *x, const effml_tensor *y,
                         const effml_tensor *tx, const effml_tensor *ty, int64_t epochs,
                         uint64_t seed, double *recall, double *seconds) {
  double t0 = now();
  effml_context_set_seed(ctx, seed); /* same initial weights for every method */
  effml_layer *model, *layer;
  CHECK(effml_layer_sequential_create(ctx, &model));
  CHECK(effml_layer_dense_create(ctx, 784, 128, 1, &layer));
  CHECK(effml_layer_sequential_add(ctx, model, layer));
  CHECK(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &layer));
  CHECK(effml_layer_sequential_add(ctx, model, layer));
  CHECK(effml_layer_dense_create(ctx, 128, 10, 1, &layer));
  CHECK(effml_layer_sequential_add(ctx, model, layer));
  const int64_t batch = 128, steps = (effml_tensor_dim(x, 0) + batch - 1) / batch;
  effml_optimizer_options oo;
  effml_optimizer_options_init(&oo);
  oo.lr = 2e-3;
  oo.weight_decay = 1e-4;
  oo.schedule = EFFML_OPTIM_LR_WARMUP_COSINE;
  oo.warmup_steps = steps / 2;
  oo.total_steps = epochs * steps;
  effml_optimizer *opt;
  CHECK(effml_optimizer_create(ctx, &oo, &opt));
  CHECK(effml_optimizer_add_layer(ctx, opt, model));
  effml_train_options fo;
  effml_train_options_init(&fo);
  fo.epochs = epochs;
  fo.batch_size = batch;
  fo.shuffle_seed = seed;
  double loss = 0;
  CHECK(effml_train_classifier(ctx, model, opt, x, y, &fo, &loss));
  int64_t ls[2] = {effml_tensor_dim(tx, 0), 10};
  effml_tensor *logits;
  CHECK(effml_tensor_create(ctx, EFFML_F32, 2, ls, &logits));
  CHECK(effml_train_predict(ctx, model, tx, 1000, logits));
  const float *lp = effml_tensor_data_const(logits);
  const int32_t *yp = effml_tensor_data_const(ty);
  int64_t hit[10] = {0}, tot[10] = {0};
  for (int64_t i = 0; i < ls[0]; ++i) {
    int best = 0;
    for (int c = 1; c < 10; ++c)
      if (lp[i * 10 + c] > lp[i * 10 + best]) best = c;
    tot[yp[i]]++;
    hit[yp[i]] += best == yp[i];
  }
  double bal = 0;
  for (int c = 0; c < 10; ++c) {
    recall[c] = tot[c] ? (double)hit[c] / (double)tot[c] : 0.0;
    bal += recall[c] / 10.0;
  }
  effml_tensor_free(logits);
  effml_optimizer_free(opt);
  effml_layer_free(model);
  *seconds = now() - t0;
  return bal;
}

int main(int argc, char **argv) {
  const char *data = NULL;
  int64_t epochs = 5;
  double temperature = 3.0;
  int threads = 2;
  uint64_t seed = 7;
  unsigned long long seed_arg = seed;
  const ex_opt opts[] = {
      {"--data", EX_STR, &data, "DIR", "Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)"},
      {"--epochs", EX_I64, &epochs, "N", "training epochs per method (default 5)"},
      {"--temperature", EX_F64, &temperature, "T", "temperature of class sampling, q_c ~ n_c^(1/T) (default 3)"},
      {"--threads", EX_INT, &threads, "N", "libeffml threads (default 2)"},
      {"--seed", EX_U64, &seed_arg, "S", "seed (default 7)"},
  };
  ex_parse(argc, argv,
           "Make Fashion-MNIST long-tailed (imbalance ratio 100), then train the same MLP on the\n"
           "raw long tail, on SMOTE output and with temperature class sampling; compare balanced\n"
           "accuracy and per-class recall on the balanced test set.  Writes no files.",
           opts, EX_NOPTS(opts));
  seed = (uint64_t)seed_arg;
  effml_context_options co;
  effml_context_options_init(&co);
  co.num_threads = threads;
  effml_context *ctx = NULL;
  if (effml_context_create(&co, &ctx) != EFFML_OK) return 1;
  effml_tensor *trx, *try_, *tex, *tey;
  CHECK(effml_data_fashion_mnist_load(ctx, data, EFFML_DATA_SPLIT_TRAIN, &trx, &try_));
  CHECK(effml_data_fashion_mnist_load(ctx, data, EFFML_DATA_SPLIT_TEST, &tex, &tey));

  /* Long tail: the first n_c training images of class c, n_c = 6000 * 100^(-c/9). */
  int64_t n_c[10], taken[10] = {0}, m = 0;
  for (int c = 0; c < 10; ++c) {
    n_c[c] = (int64_t)floor(6000.0 * pow(100.0, -c / 9.0) + 0.5);
    m += n_c[c];
  }
  int64_t *idx = malloc((size_t)m * sizeof(int64_t)), k = 0;
  const int32_t *yl = effml_tensor_data_const(try_);
  for (int64_t i = 0; i < effml_tensor_dim(try_, 0) && k < m; ++i)
    if (taken[yl[i]] < n_c[yl[i]]) {
      taken[yl[i]]++;
      idx[k++] = i;
    }
  effml_tensor *lx, *ly;
  gather(ctx, trx, try_, idx, m, &lx, &ly);
  printf("long-tailed train set: %lld rows, class sizes", (long long)m);
  for (int c = 0; c < 10; ++c) printf(" %lld", (long long)n_c[c]);
  printf(" (ratio %.0f)\n", (double)n_c[0] / (double)n_c[9]);

  const char *names[3] = {"none", "smote", "temperature"};
  double recall[3][10], bal[3], secs[3], prep[3] = {0, 0, 0};
  int64_t rows[3];
  for (int method = 0; method < 3; ++method) {
    effml_tensor *x = lx, *y = ly;
    double t0 = now();
    if (method == 1) {
      effml_sampler_resample_options ro;
      effml_sampler_resample_options_init(&ro);
      ro.method = EFFML_SAMPLER_RESAMPLE_SMOTE;
      ro.k_neighbors = 5;
      ro.seed = seed;
      CHECK(effml_sampler_resample(ctx, &ro, lx, ly, &x, &y));
    } else if (method == 2) {
      double sizes[10], q[10];
      for (int c = 0; c < 10; ++c) sizes[c] = (double)n_c[c];
      CHECK(effml_sampler_temperature_probs(ctx, sizes, 10, temperature, q));
      effml_sampler_alias *al;
      CHECK(effml_sampler_alias_create(ctx, q, 10, seed, &al));
      int64_t *cls = malloc((size_t)m * sizeof(int64_t)), *pick = malloc((size_t)m * sizeof(int64_t));
      CHECK(effml_sampler_alias_draw(ctx, al, m, cls));
      int64_t start[11] = {0};
      for (int c = 0; c < 10; ++c) start[c + 1] = start[c] + n_c[c]; /* rows of each class */
      int64_t *by_class = malloc((size_t)m * sizeof(int64_t)), fill[10] = {0};
      const int32_t *lyp = effml_tensor_data_const(ly);
      for (int64_t i = 0; i < m; ++i) by_class[start[lyp[i]] + fill[lyp[i]]++] = i;
      uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
      for (int64_t i = 0; i < m; ++i) { /* uniform example within the drawn class */
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        int64_t c = cls[i];
        pick[i] = by_class[start[c] + (int64_t)((s >> 33) % (uint64_t)n_c[c])];
      }
      gather(ctx, lx, ly, pick, m, &x, &y);
      free(cls);
      free(pick);
      free(by_class);
      effml_sampler_alias_free(al);
    }
    prep[method] = now() - t0;
    rows[method] = effml_tensor_dim(x, 0);
    bal[method] = train_eval(ctx, x, y, tex, tey, epochs, seed, recall[method], &secs[method]);
    printf("%-12s rows %6lld  prep %6.2f s  train+eval %6.1f s  balanced accuracy %.2f%%\n",
           names[method], (long long)rows[method], prep[method], secs[method], 100 * bal[method]);
    fflush(stdout);
    if (x != lx) {
      effml_tensor_free(x);
      effml_tensor_free(y);
    }
  }
  printf("\nper-class recall (%%)\nclass  n_train     none    smote  temp(T=%g)\n", temperature);
  for (int c = 0; c < 10; ++c)
    printf("%5d  %7lld  %7.1f  %7.1f  %7.1f\n", c, (long long)n_c[c], 100 * recall[0][c],
           100 * recall[1][c], 100 * recall[2][c]);
  for (int method = 0; method < 3; ++method) {
    printf("{\"example\":\"smote_fashion_mnist\",\"method\":\"%s\",\"train_rows\":%lld,"
           "\"balanced_accuracy\":%.4f,\"epochs\":%lld,\"resample_s\":%.3f,\"train_eval_s\":%.2f,"
           "\"recall\":[",
           names[method], (long long)rows[method], bal[method], (long long)epochs, prep[method],
           secs[method]);
    for (int c = 0; c < 10; ++c) printf("%s%.4f", c ? "," : "", recall[method][c]);
    if (method == 2)
      printf("],\"temperature\":%g}\n", temperature);
    else
      printf("]}\n");
  }
  free(idx);
  effml_tensor_free(lx);
  effml_tensor_free(ly);
  effml_tensor_free(trx);
  effml_tensor_free(try_);
  effml_tensor_free(tex);
  effml_tensor_free(tey);
  effml_context_free(ctx);
  return 0;
}
