/*
 * pipeline_fashion_mnist: the whole efficient-learning pipeline of libeffml,
 * end to end, on real data (Fashion-MNIST from Debian's dataset-fashion-mnist).
 *
 *   1. load Fashion-MNIST;
 *   2. make the training set long-tailed (imbalance ratio 100, exponential
 *      profile) and hold out a balanced validation split;
 *   3. rebalance it with SMOTE and with temperature class sampling, train a
 *      small MLP on each (and on the raw long tail), keep the better sampler
 *      (balanced accuracy on validation); beside them the comparison of Li et
 *      al. 2025 (arXiv 2410.04579): temperature sampling vs upweighting at the
 *      same T vs temperature sampling with Cooldown, with head/tail loss curves;
 *   4. train a dense MLP and a Sparse Wide MLP (RigL) at the same training FLOPs;
 *   5. build a window early-exit cascade from small ensemble members and
 *      calibrate it (and a single-threshold cascade) on validation; calibrate
 *      each member's probabilities (temperature, vector, correctness-aware
 *      scaling) and route a cascade on the calibrated members;
 *   6. adapt the trained dense MLP to a shifted task (images flipped
 *      left-right and inverted) with Compacter adapters, training < 2 % of
 *      the parameters;
 *   7. print one table and write results.json and results.csv;
 *   8. write the plot data (risk-coverage curves, per-class recall, head/tail
 *      loss curves, reliability diagram) and render PNGs with gnuplot when it
 *      is installed.
 *
 * Usage: pipeline_fashion_mnist [--data DIR] [--out DIR] [--seed N]
 *                               [--threads N] [--quick]
 * --quick trains on subsets for 2 epochs per model (the test suite runs it).
 * Output folder: --out, else $EFFML_EXAMPLES_OUT, else ${TMPDIR:-/tmp}/effml-examples;
 * nothing is written into the working directory unless --out names it.
 */
#include <effml.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "example_args.h"

#define NCLASS 10
#define NPIX 784

/* An example keeps error handling short: report and stop. */
#define CHECK(call)                                                                     \
  do {                                                                                  \
    effml_status st_ = (call);                                                          \
    if (st_ != EFFML_OK) {                                                              \
      fprintf(stderr, "error at %s:%d: %s: %s\n", __FILE__, __LINE__,                  \
              effml_status_str(st_), effml_context_last_error(ctx));                    \
      exit(1);                                                                          \
    }                                                                                   \
  } while (0)

typedef struct config {
  const char *data_dir;
  const char *out_dir;
  uint64_t seed;
  int32_t threads;
  int quick;
  /* sizes derived from --quick */
  int64_t per_class_max;   /* long-tail head class size */
  int64_t val_per_class;   /* balanced validation rows per class */
  int64_t test_rows;       /* test rows used */
  int64_t epochs_small;    /* sampler comparison / ensemble members */
  int64_t epochs_main;     /* dense / sparse MLPs */
  int64_t epochs_adapt;    /* shifted-task adaptation */
  int64_t hidden1, hidden2;
} config;

/* The cascade paper's claim, tested in step 5 (the same words and test as
 * examples/cascade_fashion_mnist.c). */
#define PAPER                                                                                  \
  "Xia & Bouganis, Window-Based Early-Exit Cascades for Uncertainty Estimation, ICCV 2023, "   \
  "arXiv 2303.08010"
#define CLAIM                                                                                  \
  "a window-based early-exit cascade of small models matches a larger single model's "        \
  "coverage at 5% risk (within 1 point) at fewer MACs per sample"
static struct {
  double window_cov5, large_cov5, window_macs, large_macs;
  int holds;
} claim;

/* One row of the results table. */
typedef struct result {
  char stage[48];
  char model[64];
  double test_accuracy;
  double balanced_accuracy;
  int64_t trainable_params;
  int64_t total_params;
  double macs_per_sample;
  double coverage_at_5_risk;
  double risk_at_80_coverage;
  double ece;
  double seconds;
} result;

static result g_results[48];
static int g_nresults;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void progress(void *user, int64_t epoch, int64_t step, double loss) {
  const char *what = (const char *)user;
  printf("  [%s] epoch %lld  step %lld  loss %.4f\n", what, (long long)epoch + 1, (long long)step,
         loss);
  fflush(stdout);
}

/* ---------------------------------------------------------------- data -- */

/* Rows `idx[0..n)` of x [N, f] f32 and y [N] i32 into new tensors. */
static void gather(effml_context *ctx, const effml_tensor *x, const effml_tensor *y,
                   const int64_t *idx, int64_t n, effml_tensor **xo, effml_tensor **yo) {
  int64_t f = effml_tensor_dim(x, 1);
  int64_t sx[2] = {n, f}, sy[1] = {n};
  CHECK(effml_tensor_create(ctx, EFFML_F32, 2, sx, xo));
  CHECK(effml_tensor_create(ctx, EFFML_I32, 1, sy, yo));
  const float *px = (const float *)effml_tensor_data_const(x);
  const int32_t *py = (const int32_t *)effml_tensor_data_const(y);
  float *qx = (float *)effml_tensor_data(*xo);
  int32_t *qy = (int32_t *)effml_tensor_data(*yo);
  for (int64_t i = 0; i < n; ++i) {
    memcpy(qx + i * f, px + idx[i] * f, (size_t)f * sizeof(float));
    qy[i] = py[idx[i]];
  }
}

/* Shuffle with the context generator (Fisher-Yates). */
static void shuffle(effml_context *ctx, int64_t *a, int64_t n) {
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = (int64_t)(effml_context_random_u64(ctx) % (uint64_t)(i + 1));
    int64_t t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

/* Long-tailed training set (exponential profile n_c = n_max * ratio^(-c/(C-1)))
 * and a balanced validation split, both drawn from the official training set. */
static void make_long_tail(effml_context *ctx, const config *cfg, const effml_tensor *x,
                           const effml_tensor *y, effml_tensor **xt, effml_tensor **yt,
                           effml_tensor **xv, effml_tensor **yv, int64_t *counts) {
  int64_t n = effml_tensor_dim(x, 0);
  const int32_t *py = (const int32_t *)effml_tensor_data_const(y);
  int64_t *order = malloc(sizeof(int64_t) * (size_t)n);
  int64_t *tr = malloc(sizeof(int64_t) * (size_t)n);
  int64_t *va = malloc(sizeof(int64_t) * (size_t)n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  shuffle(ctx, order, n);
  int64_t taken_v[NCLASS] = {0}, taken_t[NCLASS] = {0}, nt = 0, nv = 0;
  for (int c = 0; c < NCLASS; ++c)
    counts[c] = (int64_t)floor((double)cfg->per_class_max * pow(100.0, -(double)c / (NCLASS - 1)));
  for (int64_t k = 0; k < n; ++k) {
    int64_t i = order[k];
    int c = py[i];
    if (taken_v[c] < cfg->val_per_class) {
      va[nv++] = i;
      taken_v[c]++;
    } else if (taken_t[c] < counts[c]) {
      tr[nt++] = i;
      taken_t[c]++;
    }
  }
  gather(ctx, x, y, tr, nt, xt, yt);
  gather(ctx, x, y, va, nv, xv, yv);
  free(order);
  free(tr);
  free(va);
}

/* The shifted task of step 6: flip each image left-right and invert it. */
static void shift_images(effml_context *ctx, const effml_tensor *x, effml_tensor **out) {
  CHECK(effml_tensor_contiguous(ctx, x, out));
  float *p = (float *)effml_tensor_data(*out);
  const float *s = (const float *)effml_tensor_data_const(x);
  int64_t n = effml_tensor_dim(x, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int r = 0; r < 28; ++r)
      for (int c = 0; c < 28; ++c)
        p[i * NPIX + r * 28 + c] = 1.0f - s[i * NPIX + r * 28 + (27 - c)];
}

/* -------------------------------------------------------------- models -- */

/* 784 - h1 - h2 - 10 MLP with ReLU. */
static effml_layer *make_mlp(effml_context *ctx, int64_t h1, int64_t h2) {
  int64_t widths[4] = {NPIX, h1, h2, NCLASS};
  int nl = h2 > 0 ? 3 : 2;
  if (h2 <= 0) widths[2] = NCLASS;
  effml_layer *model, *l;
  CHECK(effml_layer_sequential_create(ctx, &model));
  for (int k = 0; k < nl; ++k) {
    CHECK(effml_layer_dense_create(ctx, widths[k], widths[k + 1], 1, &l));
    CHECK(effml_layer_sequential_add(ctx, model, l));
    if (k + 1 < nl) {
      CHECK(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &l));
      CHECK(effml_layer_sequential_add(ctx, model, l));
    }
  }
  return model;
}

static double mlp_macs(int64_t h1, int64_t h2) {
  return h2 > 0 ? (double)(NPIX * h1 + h1 * h2 + h2 * NCLASS) : (double)(NPIX * h1 + h1 * NCLASS);
}

static effml_optimizer *make_adamw(effml_context *ctx, effml_layer *model, double lr,
                                   int64_t total_steps) {
  effml_optimizer_options oo;
  effml_optimizer_options_init(&oo);
  oo.algorithm = EFFML_OPTIM_ADAMW;
  oo.lr = lr;
  oo.weight_decay = 1e-4;
  oo.schedule = EFFML_OPTIM_LR_WARMUP_COSINE;
  oo.warmup_steps = total_steps / 20;
  oo.total_steps = total_steps;
  oo.min_lr = lr * 0.02;
  effml_optimizer *opt;
  CHECK(effml_optimizer_create(ctx, &oo, &opt));
  CHECK(effml_optimizer_add_layer(ctx, opt, model));
  return opt;
}

static int64_t steps_for(int64_t rows, int64_t batch, int64_t epochs) {
  return ((rows + batch - 1) / batch) * epochs;
}

/* Train `model` on (x, y) with AdamW; returns wall seconds. */
static double train(effml_context *ctx, effml_layer *model, const effml_tensor *x,
                    const effml_tensor *y, int64_t epochs, double lr, const char *label,
                    int32_t (*hook)(void *, int64_t), void *hook_data, effml_optimizer **opt_out) {
  const int64_t batch = 128;
  int64_t total = steps_for(effml_tensor_dim(x, 0), batch, epochs);
  effml_optimizer *opt = opt_out && *opt_out ? *opt_out : make_adamw(ctx, model, lr, total);
  effml_train_options fo;
  effml_train_options_init(&fo);
  fo.epochs = epochs;
  fo.batch_size = batch;
  fo.shuffle_seed = effml_context_random_u64(ctx);
  fo.progress = progress;
  fo.progress_user_data = (void *)label;
  fo.step_hook = hook;
  fo.step_hook_user_data = hook_data;
  double t0 = now_s();
  CHECK(effml_train_classifier(ctx, model, opt, x, y, &fo, NULL));
  double dt = now_s() - t0;
  if (opt_out)
    *opt_out = opt;
  else
    effml_optimizer_free(opt);
  return dt;
}

/* ------------------------------------------------------------- metrics -- */

typedef struct eval {
  double accuracy, balanced_accuracy, cov5, risk80, ece;
  double recall[NCLASS];
} eval;

/* (score, correct) pairs for the selective metrics: the scores wrapped
 * read-only (no copy) and correct[i] = pred[i] == labels[i]. */
static void score_correct(effml_context *ctx, const int32_t *pred, const double *score,
                          const effml_tensor *labels, effml_tensor **sc, effml_tensor **ok) {
  int64_t n = effml_tensor_dim(labels, 0), s1[1] = {n};
  const int32_t *y = (const int32_t *)effml_tensor_data_const(labels);
  CHECK(effml_tensor_wrap(ctx, EFFML_F64, 1, s1, NULL, (void *)(uintptr_t)score,
                          sizeof(double) * (size_t)n, 1, sc));
  CHECK(effml_tensor_create(ctx, EFFML_I32, 1, s1, ok));
  int32_t *pok = (int32_t *)effml_tensor_data(*ok);
  for (int64_t i = 0; i < n; ++i) pok[i] = pred[i] == y[i];
}

/* Accuracy, balanced accuracy, per-class recall and selective metrics from
 * predictions and confidence scores (f64 [n]). */
static void evaluate_preds(effml_context *ctx, const int32_t *pred, const double *score,
                           const effml_tensor *labels, eval *e) {
  int64_t n = effml_tensor_dim(labels, 0);
  const int32_t *y = (const int32_t *)effml_tensor_data_const(labels);
  int64_t hit[NCLASS] = {0}, tot[NCLASS] = {0}, correct = 0;
  effml_tensor *sc, *ok;
  score_correct(ctx, pred, score, labels, &sc, &ok);
  const int32_t *pok = (const int32_t *)effml_tensor_data_const(ok);
  for (int64_t i = 0; i < n; ++i) {
    tot[y[i]]++;
    hit[y[i]] += pok[i];
    correct += pok[i];
  }
  e->accuracy = (double)correct / (double)n;
  double bal = 0;
  int present = 0;
  for (int c = 0; c < NCLASS; ++c) {
    e->recall[c] = tot[c] ? (double)hit[c] / (double)tot[c] : 0;
    if (tot[c]) {
      bal += e->recall[c];
      present++;
    }
  }
  e->balanced_accuracy = bal / present;
  e->cov5 = 0;
  effml_status st = effml_metrics_selective_coverage_at_risk(ctx, sc, ok, 0.05, &e->cov5, NULL);
  if (st != EFFML_OK) e->cov5 = 0; /* no coverage reaches 5 % risk */
  CHECK(effml_metrics_selective_risk_at_coverage(ctx, sc, ok, 0.80, &e->risk80, NULL, NULL));
  /* top-label ECE of the score (MSP), 15 equal-width bins, L1 (Guo et al. 2017) */
  CHECK(effml_calibration_ece(ctx, sc, ok, 15, EFFML_CALIBRATION_BINS_EQUAL_WIDTH, 1, &e->ece));
  effml_tensor_free(sc);
  effml_tensor_free(ok);
}

/* malloc() n predictions and scores and wrap them (zero copy) as i32/f64 [n]
 * tensors for the library to write into. */
static void wrap_outputs(effml_context *ctx, int64_t n, int32_t **pred, double **score,
                         effml_tensor **p, effml_tensor **s) {
  int64_t s1[1] = {n};
  *pred = malloc(sizeof(int32_t) * (size_t)n);
  *score = malloc(sizeof(double) * (size_t)n);
  if (!*pred || !*score) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  CHECK(effml_tensor_wrap(ctx, EFFML_I32, 1, s1, NULL, *pred, sizeof(int32_t) * (size_t)n, 0, p));
  CHECK(effml_tensor_wrap(ctx, EFFML_F64, 1, s1, NULL, *score, sizeof(double) * (size_t)n, 0, s));
}

/* Predictions and MSP scores of one model (m = 1) or the mean-softmax ensemble of m
 * models, from their logits; the caller free()s *pred and *score. */
static void model_pred_score(effml_context *ctx, const effml_tensor *const *logits, int m,
                             int32_t **pred, double **score) {
  int64_t n = effml_tensor_dim(logits[0], 0);
  effml_cascade_options co;
  effml_cascade_options_init(&co);
  co.num_classes = NCLASS;
  effml_tensor *p, *s;
  wrap_outputs(ctx, n, pred, score, &p, &s);
  CHECK(effml_cascade_ensemble_predict(ctx, &co, m, logits, p, s, NULL));
  effml_tensor_free(p); /* the wraps only; the arrays stay the caller's */
  effml_tensor_free(s);
}

/* Logits of `model` on x, then evaluate with the maximum softmax probability. */
static void evaluate_model(effml_context *ctx, effml_layer *model, const effml_tensor *x,
                           const effml_tensor *y, eval *e, effml_tensor **logits_out) {
  int64_t sl[2] = {effml_tensor_dim(x, 0), NCLASS};
  effml_tensor *logits;
  CHECK(effml_tensor_create(ctx, EFFML_F32, 2, sl, &logits));
  CHECK(effml_train_predict(ctx, model, x, 1000, logits));
  int32_t *pred;
  double *score;
  model_pred_score(ctx, (const effml_tensor *const *)&logits, 1, &pred, &score);
  evaluate_preds(ctx, pred, score, y, e);
  free(pred);
  free(score);
  if (logits_out)
    *logits_out = logits;
  else
    effml_tensor_free(logits);
}

static result *add_result(const char *stage, const char *model, const eval *e, int64_t trainable,
                          int64_t total, double macs, double seconds) {
  result *r = &g_results[g_nresults++];
  memset(r, 0, sizeof *r);
  snprintf(r->stage, sizeof r->stage, "%s", stage);
  snprintf(r->model, sizeof r->model, "%s", model);
  r->test_accuracy = e->accuracy;
  r->balanced_accuracy = e->balanced_accuracy;
  r->coverage_at_5_risk = e->cov5;
  r->risk_at_80_coverage = e->risk80;
  r->ece = e->ece;
  r->trainable_params = trainable;
  r->total_params = total;
  r->macs_per_sample = macs;
  r->seconds = seconds;
  return r;
}

/* Risk-coverage curve of (score, correct) pairs into a gnuplot data file. */
static void write_rc_curve(effml_context *ctx, const char *path, const int32_t *pred,
                           const double *score, const effml_tensor *labels) {
  int64_t n = effml_tensor_dim(labels, 0), s2[1] = {n + 1};
  effml_tensor *sc, *ok, *cov, *risk;
  score_correct(ctx, pred, score, labels, &sc, &ok);
  CHECK(effml_tensor_create(ctx, EFFML_F64, 1, s2, &cov));
  CHECK(effml_tensor_create(ctx, EFFML_F64, 1, s2, &risk));
  int64_t npts = 0; /* one point per distinct score, point 0 at coverage 0 */
  CHECK(effml_metrics_selective_risk_coverage_curve(ctx, sc, ok, cov, risk, NULL, &npts));
  FILE *f = fopen(path, "w");
  if (f) {
    fprintf(f, "# coverage risk\n");
    const double *c = (const double *)effml_tensor_data_const(cov);
    const double *r = (const double *)effml_tensor_data_const(risk);
    int64_t last = npts - 1, stride = last > 2000 ? last / 2000 : 1;
    for (int64_t i = 0; i < last; i += stride) fprintf(f, "%.6f %.6f\n", c[i], r[i]);
    fprintf(f, "%.6f %.6f\n", c[last], r[last]);
    fclose(f);
  }
  effml_tensor_free(sc);
  effml_tensor_free(ok);
  effml_tensor_free(cov);
  effml_tensor_free(risk);
}

/* ------------------------------------------------------------ cascade --- */

/* Stage callback: run ensemble member `stage_data` on the rows still in flight. */
static effml_status member_stage(effml_context *ctx, void *stage_data, void *run_data,
                                 int32_t stage, const int64_t *rows, int64_t n_rows,
                                 effml_tensor *logits) {
  (void)stage;
  effml_layer *model = (effml_layer *)stage_data;
  const effml_tensor *x = (const effml_tensor *)run_data;
  int64_t s[2] = {n_rows, NPIX};
  effml_tensor *xb;
  effml_status st = effml_tensor_create(ctx, EFFML_F32, 2, s, &xb);
  if (st != EFFML_OK) return st;
  const float *px = (const float *)effml_tensor_data_const(x);
  float *pb = (float *)effml_tensor_data(xb);
  for (int64_t i = 0; i < n_rows; ++i)
    memcpy(pb + i * NPIX, px + rows[i] * NPIX, NPIX * sizeof(float));
  st = effml_train_predict(ctx, model, xb, 1000, logits);
  effml_tensor_free(xb);
  return st;
}

typedef struct cascade_out {
  eval e;
  double macs;
  double exit_frac[8];
  double seconds;
  int32_t *pred;
  double *score;
} cascade_out;

/* Build a cascade over `members`, calibrate it on validation logits, run it on x. */
static void run_cascade(effml_context *ctx, int32_t rule, effml_layer **members, int m,
                        double member_macs, effml_tensor **val_logits, const effml_tensor *yv,
                        const effml_tensor *x, const effml_tensor *y, cascade_out *out) {
  effml_cascade_options co;
  effml_cascade_options_init(&co);
  co.num_classes = NCLASS;
  effml_cascade *cas;
  CHECK(effml_cascade_create(ctx, &co, &cas));
  for (int k = 0; k < m; ++k) CHECK(effml_cascade_add_stage_fn(ctx, cas, member_stage, members[k], member_macs));
  effml_cascade_threshold_options cal;
  effml_cascade_threshold_options_init(&cal);
  cal.rule = rule;
  cal.window_below = 0.1;
  cal.window_above = 0.1;
  if (rule == EFFML_CASCADE_EXIT_WINDOW) { /* the window sits around the 5 % risk threshold */
    cal.target = EFFML_CASCADE_TARGET_RISK;
    cal.target_value = 0.05;
  } else { /* the single-threshold baseline: 80 % exit at each stage */
    cal.target = EFFML_CASCADE_TARGET_COVERAGE;
    cal.target_value = 0.8;
  }
  effml_status st = effml_cascade_select_thresholds(ctx, cas, m, (const effml_tensor *const *)val_logits, yv, &cal);
  if (st == EFFML_E_RANGE) { /* no validation coverage reaches 5 % risk at some stage */
    printf("  window cascade: %s; window around 80 %% coverage instead\n", effml_context_last_error(ctx));
    cal.target = EFFML_CASCADE_TARGET_COVERAGE;
    cal.target_value = 0.8;
    st = effml_cascade_select_thresholds(ctx, cas, m, (const effml_tensor *const *)val_logits, yv, &cal);
  }
  CHECK(st);
  effml_cascade_workspace *ws;
  CHECK(effml_cascade_workspace_create(ctx, cas, &ws));
  int64_t n = effml_tensor_dim(x, 0);
  effml_tensor *pred, *score;
  wrap_outputs(ctx, n, &out->pred, &out->score, &pred, &score);
  double t0 = now_s();
  CHECK(effml_cascade_run(ctx, cas, ws, n, (void *)x, pred, score, NULL, NULL));
  out->seconds = now_s() - t0;
  out->macs = effml_cascade_workspace_expected_cost(ws);
  for (int k = 0; k < m && k < 8; ++k) out->exit_frac[k] = effml_cascade_workspace_exit_fraction(ws, k);
  evaluate_preds(ctx, out->pred, out->score, y, &out->e);
  effml_tensor_free(pred);
  effml_tensor_free(score);
  effml_cascade_workspace_free(ws);
  effml_cascade_free(cas);
}

/* ------------------------------------------------------------- output --- */

static void print_table(void) {
  int ws = 5, wm = 5; /* column widths from the longest stage and model names */
  for (int i = 0; i < g_nresults; ++i) {
    int a = (int)strlen(g_results[i].stage), b = (int)strlen(g_results[i].model);
    ws = a > ws ? a : ws;
    wm = b > wm ? b : wm;
  }
  printf("\n%-*s  %-*s %8s %8s %10s %10s %8s %7s %8s\n", ws, "stage", wm, "model", "test_acc",
         "bal_acc", "trainable", "MACs/smp", "cov@5%", "ECE", "seconds");
  for (int i = 0; i < ws + wm + 2 + 6 * 9 + 2 * 11 + 8; ++i) putchar('-');
  putchar('\n');
  for (int i = 0; i < g_nresults; ++i) {
    const result *r = &g_results[i];
    printf("%-*s  %-*s %7.2f%% %7.2f%% %10lld %10.0f %7.2f%% %7.4f %8.1f\n", ws, r->stage, wm, r->model,
           100 * r->test_accuracy, 100 * r->balanced_accuracy, (long long)r->trainable_params,
           r->macs_per_sample, 100 * r->coverage_at_5_risk, r->ece, r->seconds);
  }
  printf("(bal_acc: mean per-class recall; on a test set with equal class counts it equals test_acc)\n\n");
}

/* One RFC 4180 text field: always quoted, inner quotes doubled (model names hold commas). */
static void csv_field(FILE *f, const char *v) {
  fputc('"', f);
  for (; *v; ++v) {
    if (*v == '"') fputc('"', f);
    fputc(*v, f);
  }
  fputc('"', f);
}

static void write_outputs(const config *cfg, const char *chosen_sampler, double total_s) {
  char path[1024];
  snprintf(path, sizeof path, "%s/results.json", cfg->out_dir);
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    exit(1);
  }
  fprintf(f, "{\n  \"example\": \"pipeline_fashion_mnist\",\n  \"quick\": %s,\n  \"seed\": %llu,\n"
             "  \"threads\": %d,\n  \"chosen_sampler\": \"%s\",\n  \"total_seconds\": %.3f,\n"
             "  \"results\": [\n",
          cfg->quick ? "true" : "false", (unsigned long long)cfg->seed, (int)cfg->threads,
          chosen_sampler, total_s);
  for (int i = 0; i < g_nresults; ++i) {
    const result *r = &g_results[i];
    fprintf(f,
            "    {\"stage\": \"%s\", \"model\": \"%s\", \"test_accuracy\": %.6f, "
            "\"balanced_accuracy\": %.6f, \"trainable_params\": %lld, \"total_params\": %lld, "
            "\"trainable_percent\": %.4f, \"macs_per_sample\": %.1f, \"coverage_at_5pct_risk\": %.6f, "
            "\"risk_at_80pct_coverage\": %.6f, \"ece_15bins\": %.6f, \"seconds\": %.3f}%s\n",
            r->stage, r->model, r->test_accuracy, r->balanced_accuracy,
            (long long)r->trainable_params, (long long)r->total_params,
            r->total_params ? 100.0 * (double)r->trainable_params / (double)r->total_params : 0.0,
            r->macs_per_sample, r->coverage_at_5_risk, r->risk_at_80_coverage, r->ece, r->seconds,
            i + 1 < g_nresults ? "," : "");
  }
  fprintf(f, "  ],\n  \"claim\": {\"paper\": \"%s\", \"claim\": \"%s\", \"holds\": %s, "
             "\"window_cov_at_risk_5\": %.6f, \"large_cov_at_risk_5\": %.6f, "
             "\"window_macs\": %.1f, \"large_macs\": %.1f}\n}\n",
          PAPER, CLAIM, claim.holds ? "true" : "false", claim.window_cov5, claim.large_cov5,
          claim.window_macs, claim.large_macs);
  fclose(f);
  snprintf(path, sizeof path, "%s/results.csv", cfg->out_dir);
  f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    exit(1);
  }
  fprintf(f, "stage,model,test_accuracy,balanced_accuracy,trainable_params,total_params,"
             "macs_per_sample,coverage_at_5pct_risk,risk_at_80pct_coverage,ece_15bins,seconds\n");
  for (int i = 0; i < g_nresults; ++i) {
    const result *r = &g_results[i];
    csv_field(f, r->stage);
    fputc(',', f);
    csv_field(f, r->model);
    fprintf(f, ",%.6f,%.6f,%lld,%lld,%.1f,%.6f,%.6f,%.6f,%.3f\n",
            r->test_accuracy, r->balanced_accuracy, (long long)r->trainable_params,
            (long long)r->total_params, r->macs_per_sample, r->coverage_at_5_risk,
            r->risk_at_80_coverage, r->ece, r->seconds);
  }
  fclose(f);
}

/* Short display name of a results row for the cost plot. */
static const char *display_name(const char *stage) {
  static const char *map[][2] = {
      {"rebalance:none", "long tail, no rebalancing"}, {"rebalance:smote", "SMOTE"},
      {"rebalance:temperature", "temperature sampling"}, {"dense", "larger dense MLP"},
      {"sparse_wide_rigl", "Sparse Wide (RigL)"}, {"single_small", "single small MLP"},
      {"ensemble", "ensemble (3 members)"}, {"cascade_threshold", "threshold cascade"},
      {"cascade_window", "window cascade"}};
  for (size_t i = 0; i < sizeof map / sizeof map[0]; ++i)
    if (!strcmp(map[i][0], stage)) return map[i][1];
  return stage;
}

/* Cost plot data: every model evaluated on the (original) test set is a point
 * (MACs per sample, coverage at 5 % risk, accuracy) with a label position per
 * panel chosen so labels do not overlap; the Pareto fronts (no other point at
 * most as costly and at least as good, one of them strictly) go to their own
 * files, sorted by cost.  Writes the axis ranges into `ranges` (xmax, then
 * ymin/ymax of the two panels). */
static void write_cost_data(const config *cfg, double ranges[5]) {
  int idx[32], n = 0;
  double xmax = 0;
  for (int i = 0; i < g_nresults; ++i) {
    if (!strncmp(g_results[i].stage, "shift:", 6)) continue; /* another task */
    /* the calibration and upsample-vs-upweight rows have their own plots */
    if (!strncmp(g_results[i].stage, "calibrated:", 11) ||
        !strcmp(g_results[i].stage, "cascade_window_calibrated") ||
        !strcmp(g_results[i].stage, "rebalance:upweight") ||
        !strcmp(g_results[i].stage, "rebalance:temperature+cooldown"))
      continue;
    idx[n++] = i;
    if (g_results[i].macs_per_sample > xmax) xmax = g_results[i].macs_per_sample;
  }
  xmax *= 1.45; /* room for the labels right of the costliest points */
  ranges[0] = xmax;
  double lx[2][32], ly[2][32];
  for (int which = 0; which < 2; ++which) {
    double lo = 1, hi = 0;
    for (int k = 0; k < n; ++k) {
      const result *r = &g_results[idx[k]];
      double v = which ? r->test_accuracy : r->coverage_at_5_risk;
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
    double span = hi - lo > 0.05 ? hi - lo : 0.05;
    lo -= 0.08 * span;
    hi += 0.12 * span;
    ranges[1 + 2 * which] = lo;
    ranges[2 + 2 * which] = hi;
    /* label boxes in data units: ~80 characters across and ~34 lines up a panel */
    const double cw = xmax / 80.0, lh = (hi - lo) / 34.0;
    double bx0[32], bx1[32], by0[32], by1[32];
    int placed = 0;
    for (int k = 0; k < n; ++k) {
      const result *r = &g_results[idx[k]];
      double x = r->macs_per_sample, v = which ? r->test_accuracy : r->coverage_at_5_risk;
      double w = (double)(strlen(display_name(r->stage)) + 1) * cw;
      static const double steps[] = {0.5, 1.7, -0.7, 2.9, -1.9, 4.1, -3.1, 5.3, -4.3};
      int s = 0;
      for (; s < (int)(sizeof steps / sizeof steps[0]); ++s) {
        double y0 = v + (steps[s] - 0.5) * lh, y1 = y0 + lh, x0 = x + cw, x1 = x0 + w;
        int clash = y0 < lo || y1 > hi;
        for (int q = 0; q < placed && !clash; ++q)
          clash = x0 < bx1[q] && bx0[q] < x1 && y0 < by1[q] && by0[q] < y1;
        for (int q = 0; q < n && !clash; ++q) { /* nor over another point */
          const result *o = &g_results[idx[q]];
          double ov = which ? o->test_accuracy : o->coverage_at_5_risk;
          clash = q != k && o->macs_per_sample > x0 - cw && o->macs_per_sample < x1 &&
                  ov > y0 - 0.3 * lh && ov < y1 + 0.3 * lh;
        }
        if (!clash) break;
      }
      if (s == (int)(sizeof steps / sizeof steps[0])) s = 0;
      double y0 = v + (steps[s] - 0.5) * lh;
      bx0[placed] = x + cw;
      bx1[placed] = x + cw + w;
      by0[placed] = y0;
      by1[placed] = y0 + lh;
      ++placed;
      lx[which][k] = x + cw;
      ly[which][k] = y0 + 0.5 * lh;
    }
  }
  char path[4300];
  snprintf(path, sizeof path, "%s/cost.dat", cfg->out_dir);
  FILE *f = fopen(path, "w");
  if (!f) return;
  fprintf(f, "# name macs_per_sample coverage_at_5pct_risk test_accuracy label_x label_y_cov "
             "label_y_acc stage (test set)\n");
  for (int k = 0; k < n; ++k) {
    const result *r = &g_results[idx[k]];
    fprintf(f, "\"%s\" %.1f %.6f %.6f %.1f %.6f %.6f %s\n", display_name(r->stage),
            r->macs_per_sample, r->coverage_at_5_risk, r->test_accuracy, lx[0][k], ly[0][k],
            ly[1][k], r->stage);
  }
  fclose(f);
  for (int which = 0; which < 2; ++which) {
    snprintf(path, sizeof path, "%s/pareto_%s.dat", cfg->out_dir, which ? "acc" : "cov");
    f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "# Pareto front: macs_per_sample %s stage\n",
            which ? "test_accuracy" : "coverage_at_5pct_risk");
    int order[32];
    for (int i = 0; i < n; ++i) order[i] = idx[i];
    for (int i = 1; i < n; ++i) /* by cost, then best value first */
      for (int j = i; j > 0; --j) {
        const result *x = &g_results[order[j - 1]], *y = &g_results[order[j]];
        double vx = which ? x->test_accuracy : x->coverage_at_5_risk;
        double vy = which ? y->test_accuracy : y->coverage_at_5_risk;
        if (x->macs_per_sample < y->macs_per_sample ||
            (x->macs_per_sample == y->macs_per_sample && vx >= vy))
          break;
        int t = order[j - 1];
        order[j - 1] = order[j];
        order[j] = t;
      }
    double best = -1, last_v = 0;
    for (int i = 0; i < n; ++i) {
      const result *r = &g_results[order[i]];
      double v = which ? r->test_accuracy : r->coverage_at_5_risk;
      if (v > best) {
        fprintf(f, "%.1f %.6f %s\n", r->macs_per_sample, v, r->stage);
        best = last_v = v;
      }
    }
    fprintf(f, "%.1f %.6f end\n", xmax, last_v); /* the front stays level to the right */
    fclose(f);
  }
}

/* gnuplot script for the three plots; rendered when gnuplot is installed. */
static void plots(const config *cfg, const char *chosen) {
  double rg[5];
  write_cost_data(cfg, rg);
  char path[4300];
  snprintf(path, sizeof path, "%s/plots.gp", cfg->out_dir);
  FILE *f = fopen(path, "w");
  if (!f) return;
  fprintf(f,
          "# Rendered by pipeline_fashion_mnist: gnuplot plots.gp (in this folder)\n"
          "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
          "  set terminal pngcairo size 1400,620 font 'sans,11'\n"
          "} else {\n"
          "  set terminal png size 1400,620  # libgd: dash types render solid\n"
          "}\n"
          "set grid\n"
          "# risk-coverage: five curves told apart by colour, dash type and width\n"
          "set style line 1 lc rgb '#b2abd2' lw 7   dt 1\n"
          "set style line 2 lc rgb '#d95f02' lw 2.5 dt (12,6)\n"
          "set style line 3 lc rgb '#1b9e77' lw 3   dt (2,4)\n"
          "set style line 4 lc rgb '#e7298a' lw 2   dt (10,4,2,4)\n"
          "set style line 5 lc rgb '#000000' lw 1.5 dt 1\n"
          "set style line 6 lc rgb '#666666' lw 1.5 dt (6,6)\n"
          "set output 'risk_coverage.png'\n"
          "set multiplot layout 1,2 title 'Risk-coverage on Fashion-MNIST test (MSP scores; one point per distinct score)'\n"
          "set xlabel 'coverage (fraction accepted)'; set ylabel 'risk (error among accepted)'\n"
          "set key top left box opaque\n"
          "set title 'all coverages'\n"
          "set xrange [0:1]; set yrange [0:*]\n"
          "plot 'rc_member.dat' w l ls 1 t 'single small MLP (stage 1 of both cascades)', \\\n"
          "     'rc_dense.dat' w l ls 2 t 'larger dense MLP', \\\n"
          "     'rc_ensemble.dat' w l ls 3 t 'ensemble (all members)', \\\n"
          "     'rc_cascade_threshold.dat' w l ls 4 t 'single-threshold cascade', \\\n"
          "     'rc_cascade_window.dat' w l ls 5 t 'window cascade', \\\n"
          "     0.05 w l ls 6 t '5%% risk'\n"
          "set title 'zoom: coverage 0 to 0.7'\n"
          "set xrange [0:0.7]; set yrange [0:*]\n"
          "replot\n"
          "unset multiplot\n"
          "# cost: each model and cascade a point, the Pareto front drawn\n"
          "set output 'cost.png'\n"
          "set multiplot layout 1,2 title 'What the cascade buys: quality vs inference cost (Fashion-MNIST test)'\n"
          "set xlabel 'MACs per sample'; set format x '%%.0s%%c'\n"
          "set key bottom right box opaque noenhanced\n"
          "set xrange [0:%.1f]\n"
          "set title 'coverage at 5%% risk'\n"
          "set ylabel 'coverage at 5%% risk'; set yrange [%.4f:%.4f]\n"
          "plot 'pareto_cov.dat' u 1:2 w steps lc rgb '#d95f02' lw 2 dt (8,4) t 'Pareto front', \\\n"
          "     'cost.dat' u 2:3:($5-$2):($6-$3) w vectors nohead lc rgb '#bbbbbb' notitle, \\\n"
          "     'cost.dat' u 2:3 w p pt 7 ps 1.4 lc rgb '#1f78b4' t 'model or cascade', \\\n"
          "     'cost.dat' u 5:6:1 w labels left noenhanced font ',9' notitle\n"
          "set title 'accuracy'\n"
          "set ylabel 'test accuracy'; set yrange [%.4f:%.4f]\n"
          "plot 'pareto_acc.dat' u 1:2 w steps lc rgb '#d95f02' lw 2 dt (8,4) t 'Pareto front', \\\n"
          "     'cost.dat' u 2:4:($5-$2):($7-$4) w vectors nohead lc rgb '#bbbbbb' notitle, \\\n"
          "     'cost.dat' u 2:4 w p pt 7 ps 1.4 lc rgb '#1f78b4' t 'model or cascade', \\\n"
          "     'cost.dat' u 5:7:1 w labels left noenhanced font ',9' notitle\n"
          "unset multiplot\n"
          "set format x '%%g'; set offsets 0, 0, 0, 0\n"
          "set output 'per_class_recall.png'\n"
          "set title 'Per-class test recall: no rebalancing vs SMOTE vs temperature sampling (T=3); chosen: %s' noenhanced\n"
          "set xlabel 'Fashion-MNIST class (training images in the long-tailed set)' offset 0,-1.2\n"
          "set bmargin 6\n"
          "set ylabel 'recall'\n"
          "set style data histogram; set style histogram clustered gap 1\n"
          "set style fill solid 0.85 border -1; set xrange [*:*]; set yrange [0:1.15]\n"
          "set key top right horizontal box opaque\n"
          "plot 'per_class_recall.dat' u 4:xtic(sprintf(\"%%s\\n(%%d)\", strcol(2), column(3))) lc rgb '#999999' t 'no rebalancing', \\\n"
          "     '' u 5 lc rgb '#1b9e77' t 'SMOTE', '' u 6 lc rgb '#7570b3' t 'temperature sampling'\n",
          rg[0], rg[1], rg[2], rg[3], rg[4], chosen);
  /* Upsample vs upweight (Li et al. 2025): head/tail loss per round. */
  fprintf(f,
          "set output 'loss_curves.png'\n"
          "set terminal png size 1300,560\n"
          "set output 'loss_curves.png'\n"
          "set style data lines; set xrange [*:*]; set yrange [*:*]; set xtics auto; unset bmargin\n"
          "set format x '%%.0s%%c'\n"
          "set key outside bottom center horizontal maxrows 2 noopaque nobox\n"
          "set multiplot layout 1,2 title 'Upsample vs upweight on the long tail (T = 3): mean cross-entropy, head = classes 0-4, tail = 5-9'\n"
          "set xlabel 'training rows seen'; set ylabel 'training loss (whole long-tailed set)'\n"
          "set title 'train'\n"
          "plot 'loss_temperature.dat' u 1:2 w lp lw 2 lc 1 t 'temperature, head', '' u 1:3 w lp lw 2 dt 2 lc 1 t 'temperature, tail', \\\n"
          "     'loss_upweight.dat' u 1:2 w lp lw 2 lc 2 t 'upweight, head', '' u 1:3 w lp lw 2 dt 2 lc 2 t 'upweight, tail', \\\n"
          "     'loss_cooldown.dat' u 1:2 w lp lw 2 lc 3 t 'cooldown, head', '' u 1:3 w lp lw 2 dt 2 lc 3 t 'cooldown, tail'\n"
          "set title 'test'; set ylabel 'test loss'\n"
          "plot 'loss_temperature.dat' u 1:4 w lp lw 2 lc 1 t 'temperature, head', '' u 1:5 w lp lw 2 dt 2 lc 1 t 'temperature, tail', \\\n"
          "     'loss_upweight.dat' u 1:4 w lp lw 2 lc 2 t 'upweight, head', '' u 1:5 w lp lw 2 dt 2 lc 2 t 'upweight, tail', \\\n"
          "     'loss_cooldown.dat' u 1:4 w lp lw 2 lc 3 t 'cooldown, head', '' u 1:5 w lp lw 2 dt 2 lc 3 t 'cooldown, tail'\n"
          "unset multiplot\n");
  /* Reliability diagram of cascade member 1, before and after calibration. */
  fprintf(f,
          "set terminal png size 1500,520\n"
          "set output 'reliability.png'\n"
          "set format x '%%g'\n"
          "set multiplot layout 1,3 title 'Reliability of cascade member 1 on test (15 bins; numbers = samples per bin)'\n"
          "set xrange [0:1]; set yrange [0:1.1]; set xlabel 'confidence (max softmax)'; set ylabel 'accuracy'\n"
          "set style fill solid 0.6 border -1; set boxwidth 1.0/15 absolute; set key inside top left nobox noopaque\n"
          "set title 'uncalibrated'\n"
          "plot 'reliability.dat' u 1:($4>0?$2:1/0) w boxes t 'accuracy', '' u 1:($4>0?$3:1/0) w p pt 7 lc rgb 'black' t 'mean confidence', x w l dt 2 lc rgb 'gray' t 'ideal', '' u 1:($4>0?$2+0.04:1/0):4 w labels font ',9' notitle\n"
          "set title 'temperature scaling'\n"
          "plot 'reliability.dat' u 1:($7>0?$5:1/0) w boxes t 'accuracy', '' u 1:($7>0?$6:1/0) w p pt 7 lc rgb 'black' t 'mean confidence', x w l dt 2 lc rgb 'gray' t 'ideal', '' u 1:($7>0?$5+0.04:1/0):7 w labels font ',9' notitle\n"
          "set title 'correctness-aware (unweighted, 3 views)'\n"
          "plot 'reliability.dat' u 1:($10>0?$8:1/0) w boxes t 'accuracy', '' u 1:($10>0?$9:1/0) w p pt 7 lc rgb 'black' t 'mean confidence', x w l dt 2 lc rgb 'gray' t 'ideal', '' u 1:($10>0?$8+0.04:1/0):10 w labels font ',9' notitle\n"
          "unset multiplot\n");
  fclose(f);
  if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot plots.gp", cfg->out_dir);
    if (system(cmd) == 0)
      printf("plots: %s/{risk_coverage,cost,per_class_recall,loss_curves,reliability}.png\n",
             cfg->out_dir);
    else
      printf("plots: gnuplot failed; data and script are in %s\n", cfg->out_dir);
  } else {
    printf("plots: gnuplot not installed; data files and %s/plots.gp written\n", cfg->out_dir);
  }
}

/* --------------------------------------------------------------- main --- */

static void parse_args(int argc, char **argv, config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->data_dir = NULL;
  cfg->out_dir = NULL;
  unsigned long long seed = 42;
  int threads = 2, quick = 0;
  const ex_opt opts[] = {
      {"--data", EX_STR, &cfg->data_dir, "DIR",
       "Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)"},
      {"--out", EX_STR, &cfg->out_dir, "DIR",
       "results.json, results.csv, plot data and PNGs (default $EFFML_EXAMPLES_OUT,"
       " else ${TMPDIR:-/tmp}/effml-examples; created)"},
      {"--seed", EX_U64, &seed, "N", "seed of every random choice (default 42)"},
      {"--threads", EX_INT, &threads, "N", "threads for libeffml's own loops, 1..1024 (default 2)"},
      {"--quick", EX_FLAG, &quick, "",
       "subsets (1000 rows per head class, 2000 test images), 2 epochs per model"},
  };
  ex_parse(argc, argv,
           "The whole libeffml pipeline on Fashion-MNIST: long tail -> SMOTE / temperature\n"
           "sampling -> dense vs Sparse Wide MLP -> window early-exit cascade -> Compacter\n"
           "adapters; one table, results.json, results.csv and plots.  Full run: 4 epochs for\n"
           "the sampler comparison and the cascade members, 10 for the dense and sparse MLPs,\n"
           "6 for the adapters; --quick: 2 each.",
           opts, EX_NOPTS(opts));
  if (threads < 1 || threads > 1024) {
    fprintf(stderr, "%s: --threads needs an integer in [1, 1024], got %d\n", argv[0], threads);
    exit(2);
  }
  cfg->seed = (uint64_t)seed;
  cfg->threads = (int32_t)threads;
  cfg->quick = quick;
  if (cfg->quick) {
    cfg->per_class_max = 1000;
    cfg->val_per_class = 60;
    cfg->test_rows = 2000;
    cfg->epochs_small = 2;
    cfg->epochs_main = 2;
    cfg->epochs_adapt = 2;
    cfg->hidden1 = 128;
    cfg->hidden2 = 64;
  } else {
    cfg->per_class_max = 5000;
    cfg->val_per_class = 500;
    cfg->test_rows = 10000;
    cfg->epochs_small = 4;
    cfg->epochs_main = 10;
    cfg->epochs_adapt = 6;
    cfg->hidden1 = 256;
    cfg->hidden2 = 128;
  }
  /* Fail now, not after minutes of training, when --out cannot be written. */
  cfg->out_dir = ex_out_dir(cfg->out_dir);
  char probe[4200];
  snprintf(probe, sizeof probe, "%s/.write_test", cfg->out_dir);
  FILE *f = fopen(probe, "w");
  if (!f) {
    fprintf(stderr, "cannot write to the output folder %s: %s\n", cfg->out_dir, strerror(errno));
    exit(2);
  }
  fclose(f);
  remove(probe);
}

/* Temperature class sampling (q_c ∝ n_c^(1/T)): draw `rows` indices, class by
 * the alias method, then uniformly within the class. */
static void temperature_draw(effml_context *ctx, const effml_tensor *y, const int64_t *counts,
                             double temperature, int64_t rows, uint64_t seed, int64_t *idx) {
  double sizes[NCLASS], q[NCLASS];
  for (int c = 0; c < NCLASS; ++c) sizes[c] = (double)counts[c];
  CHECK(effml_sampler_temperature_probs(ctx, sizes, NCLASS, temperature, q));
  effml_sampler_alias *as;
  CHECK(effml_sampler_alias_create(ctx, q, NCLASS, seed, &as));
  int64_t *cls = malloc(sizeof(int64_t) * (size_t)rows);
  CHECK(effml_sampler_alias_draw(ctx, as, rows, cls));
  /* rows of each class */
  int64_t n = effml_tensor_dim(y, 0);
  const int32_t *py = (const int32_t *)effml_tensor_data_const(y);
  int64_t *by_class[NCLASS], fill[NCLASS] = {0};
  for (int c = 0; c < NCLASS; ++c) by_class[c] = malloc(sizeof(int64_t) * (size_t)(counts[c] + 1));
  for (int64_t i = 0; i < n; ++i) by_class[py[i]][fill[py[i]]++] = i;
  for (int64_t i = 0; i < rows; ++i) {
    int64_t c = cls[i];
    idx[i] = by_class[c][effml_context_random_u64(ctx) % (uint64_t)fill[c]];
  }
  for (int c = 0; c < NCLASS; ++c) free(by_class[c]);
  free(cls);
  effml_sampler_alias_free(as);
}

/* ------------------------------------- upsample vs upweight (Li et al.) -- */

/* Mean softmax cross-entropy of `model` on (x, y) over head classes (0..4,
 * the large ones) and tail classes (5..9), unweighted. */
static void head_tail_loss(effml_context *ctx, effml_layer *model, const effml_tensor *x,
                           const effml_tensor *y, double out[2]) {
  const int64_t n = effml_tensor_dim(x, 0), sl[2] = {n, NCLASS};
  effml_tensor *logits;
  CHECK(effml_tensor_create(ctx, EFFML_F32, 2, sl, &logits));
  CHECK(effml_train_predict(ctx, model, x, 1000, logits));
  const float *z = (const float *)effml_tensor_data_const(logits);
  const int32_t *py = (const int32_t *)effml_tensor_data_const(y);
  double sum[2] = {0, 0};
  int64_t cnt[2] = {0, 0};
  for (int64_t i = 0; i < n; ++i) {
    const float *row = z + i * NCLASS;
    double m = row[0], t = 0;
    for (int k = 1; k < NCLASS; ++k) m = row[k] > m ? row[k] : m;
    for (int k = 0; k < NCLASS; ++k) t += exp((double)row[k] - m);
    const int g = py[i] >= NCLASS / 2;
    sum[g] += m + log(t) - (double)row[py[i]];
    cnt[g]++;
  }
  for (int g = 0; g < 2; ++g) out[g] = cnt[g] ? sum[g] / (double)cnt[g] : NAN;
  effml_tensor_free(logits);
}

#define ARM_TEMPERATURE 0 /* temperature sampling at T = 3 */
#define ARM_UPWEIGHT 1    /* uniform sampling, loss weights w_c ∝ n_c^(1/3 - 1) (scalarization) */
#define ARM_COOLDOWN 2    /* temperature sampling, T = 3 for the first half, then T = 1 */

/* One arm of the Li et al. 2025 comparison on the long tail: R rounds, each a
 * fresh draw of round_rows rows (class by temperature, then uniform within the
 * class) and one pass over it; the same optimizer, lr schedule and number of
 * steps for every arm.  After each round the head/tail training loss (on the
 * whole long tail) and test loss are appended to `dat`.  Returns seconds. */
static double balance_arm(effml_context *ctx, const config *cfg, effml_layer *m, int arm,
                          const effml_tensor *x_lt, const effml_tensor *y_lt,
                          const int64_t *counts, const effml_tensor *x_test,
                          const effml_tensor *y_test, int64_t epoch_rows, const char *dat) {
  const double T = 3.0;
  const int64_t rounds = 4 * cfg->epochs_small, round_rows = epoch_rows / 4;
  effml_optimizer *opt = make_adamw(ctx, m, 2e-3, steps_for(round_rows, 128, rounds));
  effml_tensor *cw = NULL;
  if (arm == ARM_UPWEIGHT) {
    double sizes[NCLASS], w[NCLASS];
    for (int c = 0; c < NCLASS; ++c) sizes[c] = (double)counts[c];
    CHECK(effml_train_scalarization_weights(ctx, sizes, NCLASS, T, w));
    int64_t sc[1] = {NCLASS};
    CHECK(effml_tensor_create(ctx, EFFML_F64, 1, sc, &cw));
    memcpy(effml_tensor_data(cw), w, sizeof w);
  }
  FILE *f = fopen(dat, "w");
  if (f) fprintf(f, "# rows_seen train_head train_tail test_head test_tail (mean CE; head = classes 0-4)\n");
  int64_t *idx = malloc(sizeof(int64_t) * (size_t)round_rows);
  double secs = 0;
  for (int64_t r = 0; r < rounds; ++r) {
    const double t_sample = arm == ARM_UPWEIGHT ? 1.0 : (arm == ARM_COOLDOWN && 2 * r >= rounds ? 1.0 : T);
    temperature_draw(ctx, y_lt, counts, t_sample, round_rows, cfg->seed + (uint64_t)r, idx);
    effml_tensor *xe, *ye;
    gather(ctx, x_lt, y_lt, idx, round_rows, &xe, &ye);
    effml_train_options fo;
    effml_train_options_init(&fo);
    fo.epochs = 1;
    fo.batch_size = 128;
    fo.shuffle_seed = effml_context_random_u64(ctx);
    fo.class_weight = cw; /* NULL for the sampling arms */
    fo.reduction = EFFML_TRAIN_REDUCTION_MEAN;
    double t0 = now_s();
    CHECK(effml_train_classifier(ctx, m, opt, xe, ye, &fo, NULL));
    secs += now_s() - t0;
    effml_tensor_free(xe);
    effml_tensor_free(ye);
    double tr[2], te[2];
    head_tail_loss(ctx, m, x_lt, y_lt, tr);
    head_tail_loss(ctx, m, x_test, y_test, te);
    if (f) fprintf(f, "%lld %.5f %.5f %.5f %.5f\n", (long long)((r + 1) * round_rows), tr[0], tr[1], te[0], te[1]);
  }
  if (f) fclose(f);
  free(idx);
  effml_tensor_free(cw);
  effml_optimizer_free(opt);
  return secs;
}

/* ------------------------------------------------------ calibration --- */

/* Transformed views of 28x28 images for the correctness-aware calibrator:
 * 0 = rotation by +10 degrees (bilinear, about the centre), 1 = shift by
 * (+2, -1) pixels, 2 = contrast 0.6 about each image's mean.  Zero outside. */
static void image_view(effml_context *ctx, const effml_tensor *x, int kind, effml_tensor **out) {
  CHECK(effml_tensor_contiguous(ctx, x, out));
  const float *s = (const float *)effml_tensor_data_const(x);
  float *p = (float *)effml_tensor_data(*out);
  const int64_t n = effml_tensor_dim(x, 0);
  const double a = 10.0 * 3.14159265358979323846 / 180.0, ca = cos(a), sa = sin(a);
  for (int64_t i = 0; i < n; ++i) {
    const float *src = s + i * NPIX;
    float *dst = p + i * NPIX;
    double mean = 0;
    for (int k = 0; k < NPIX; ++k) mean += src[k];
    mean /= NPIX;
    for (int r = 0; r < 28; ++r)
      for (int c = 0; c < 28; ++c) {
        double v = 0;
        if (kind == 0) { /* inverse-rotate the target pixel into the source */
          const double yr = r - 13.5, xr = c - 13.5;
          const double sy = ca * yr - sa * xr + 13.5, sx = sa * yr + ca * xr + 13.5;
          const int y0 = (int)floor(sy), x0 = (int)floor(sx);
          const double fy = sy - y0, fx = sx - x0;
          for (int dy = 0; dy < 2; ++dy)
            for (int dx = 0; dx < 2; ++dx) {
              const int yy = y0 + dy, xx = x0 + dx;
              if (yy < 0 || yy > 27 || xx < 0 || xx > 27) continue;
              v += (dy ? fy : 1 - fy) * (dx ? fx : 1 - fx) * src[yy * 28 + xx];
            }
        } else if (kind == 1) {
          const int yy = r + 1, xx = c - 2;
          v = (yy < 0 || yy > 27 || xx < 0 || xx > 27) ? 0.0 : src[yy * 28 + xx];
        } else {
          v = mean + 0.6 * (src[r * 28 + c] - mean);
        }
        dst[r * 28 + c] = (float)(v < 0 ? 0 : v > 1 ? 1 : v);
      }
  }
}

/* Logits of `model` on x, f32 [n, 10]. */
static effml_tensor *logits_of(effml_context *ctx, effml_layer *model, const effml_tensor *x) {
  int64_t sl[2] = {effml_tensor_dim(x, 0), NCLASS};
  effml_tensor *z;
  CHECK(effml_tensor_create(ctx, EFFML_F32, 2, sl, &z));
  CHECK(effml_train_predict(ctx, model, x, 1000, z));
  return z;
}

/* Reliability bins (15 equal-width) of the MSP of `logits` against y. */
static void reliability_of(effml_context *ctx, const effml_tensor *logits, const effml_tensor *y,
                           int64_t *count, double *conf, double *acc) {
  int32_t *pred;
  double *score;
  model_pred_score(ctx, &logits, 1, &pred, &score);
  effml_tensor *sc, *ok;
  score_correct(ctx, pred, score, y, &sc, &ok);
  CHECK(effml_calibration_reliability(ctx, sc, ok, 15, EFFML_CALIBRATION_BINS_EQUAL_WIDTH, count,
                                      conf, acc, NULL));
  effml_tensor_free(sc);
  effml_tensor_free(ok);
  free(pred);
  free(score);
}

/* ECE (15 equal-width bins, L1) and multiclass Brier score of the softmax of `logits`. */
static void ece_brier(effml_context *ctx, const effml_tensor *logits, const effml_tensor *y,
                      double *ece, double *brier) {
  const effml_tensor *one[1] = {logits};
  int32_t *pred;
  double *score;
  model_pred_score(ctx, one, 1, &pred, &score);
  effml_tensor *sc, *ok, *probs;
  score_correct(ctx, pred, score, y, &sc, &ok);
  CHECK(effml_calibration_ece(ctx, sc, ok, 15, EFFML_CALIBRATION_BINS_EQUAL_WIDTH, 1, ece));
  int64_t sp[2] = {effml_tensor_dim(logits, 0), NCLASS};
  CHECK(effml_tensor_create(ctx, EFFML_F64, 2, sp, &probs));
  effml_cascade_options co;
  effml_cascade_options_init(&co);
  co.num_classes = NCLASS;
  CHECK(effml_cascade_ensemble_predict(ctx, &co, 1, one, NULL, NULL, probs));
  CHECK(effml_calibration_brier(ctx, probs, y, brier));
  effml_tensor_free(probs);
  effml_tensor_free(sc);
  effml_tensor_free(ok);
  free(pred);
  free(score);
}

/* Fit a calibrator of `method` on validation logits (and CA features) and
 * return calibrated copies of the test logits. */
static effml_tensor *calibrate(effml_context *ctx, int32_t method, const effml_tensor *val_logits,
                               const effml_tensor *val_feat, const effml_tensor *y_val,
                               const effml_tensor *test_logits, const effml_tensor *test_feat,
                               int balance, double *param0, effml_calibrator **keep) {
  effml_calibration_options o;
  effml_calibration_options_init(&o);
  o.method = method;
  o.balance = balance;
  o.num_classes = NCLASS;
  o.num_features = 12; /* 3 views x top-4 classes */
  effml_calibrator *cal;
  CHECK(effml_calibration_create(ctx, &o, &cal));
  const int ca = method == EFFML_CALIBRATION_CORRECTNESS_AWARE;
  CHECK(effml_calibration_fit(ctx, cal, val_logits, ca ? val_feat : NULL, y_val));
  if (param0) CHECK(effml_calibration_get_params(ctx, cal, param0)); /* TS: T */
  int64_t sl[2] = {effml_tensor_dim(test_logits, 0), NCLASS};
  effml_tensor *out;
  CHECK(effml_tensor_create(ctx, EFFML_F32, 2, sl, &out));
  CHECK(effml_calibration_apply(ctx, cal, test_logits, ca ? test_feat : NULL, out));
  if (keep)
    *keep = cal;
  else
    effml_calibration_free(cal);
  return out;
}

/* CA features of `model` on x: the model's logits on 3 transformed views. */
static effml_tensor *ca_features(effml_context *ctx, effml_layer *model, const effml_tensor *x,
                                 const effml_tensor *logits) {
  effml_tensor *views[3];
  for (int v = 0; v < 3; ++v) {
    effml_tensor *xv;
    image_view(ctx, x, v, &xv);
    views[v] = logits_of(ctx, model, xv);
    effml_tensor_free(xv);
  }
  int64_t sf[2] = {effml_tensor_dim(x, 0), 12};
  effml_tensor *f;
  CHECK(effml_tensor_create(ctx, EFFML_F64, 2, sf, &f));
  CHECK(effml_calibration_ca_features(ctx, logits, 3, (const effml_tensor *const *)views, 4, f));
  for (int v = 0; v < 3; ++v) effml_tensor_free(views[v]);
  return f;
}

/* A window cascade over precomputed logits whose stages calibrate their members'
 * probabilities before routing (effml_cascade_set_stage_calibration): thresholds from
 * the validation logits, run on the test logits. */
static void run_cascade_logits(effml_context *ctx, effml_tensor **val_logits,
                               effml_tensor **test_logits, effml_calibrator **cals, int m,
                               double member_macs, const effml_tensor *yv, const effml_tensor *y,
                               cascade_out *out) {
  effml_cascade_options co;
  effml_cascade_options_init(&co);
  co.num_classes = NCLASS;
  effml_cascade *cas;
  CHECK(effml_cascade_create(ctx, &co, &cas));
  for (int k = 0; k < m; ++k) {
    CHECK(effml_cascade_add_stage_logits(ctx, cas, test_logits[k], member_macs));
    CHECK(effml_cascade_set_stage_calibration(ctx, cas, k, cals[k]));
  }
  effml_cascade_threshold_options th;
  effml_cascade_threshold_options_init(&th);
  th.rule = EFFML_CASCADE_EXIT_WINDOW; /* as run_cascade's window: around the 5 % risk threshold */
  th.target = EFFML_CASCADE_TARGET_RISK;
  th.target_value = 0.05;
  th.window_below = 0.1;
  th.window_above = 0.1;
  CHECK(effml_cascade_select_thresholds(ctx, cas, m, (const effml_tensor *const *)val_logits, yv, &th));
  effml_cascade_workspace *ws;
  CHECK(effml_cascade_workspace_create(ctx, cas, &ws));
  int64_t n = effml_tensor_dim(test_logits[0], 0);
  effml_tensor *pred, *score;
  wrap_outputs(ctx, n, &out->pred, &out->score, &pred, &score);
  double t0 = now_s();
  CHECK(effml_cascade_run(ctx, cas, ws, n, NULL, pred, score, NULL, NULL));
  out->seconds = now_s() - t0;
  out->macs = effml_cascade_workspace_expected_cost(ws);
  evaluate_preds(ctx, out->pred, out->score, y, &out->e);
  effml_tensor_free(pred);
  effml_tensor_free(score);
  effml_cascade_workspace_free(ws);
  effml_cascade_free(cas);
}

int main(int argc, char **argv) {
  config cfg;
  parse_args(argc, argv, &cfg);
  double t_start = now_s();

  effml_context_options copt;
  effml_context_options_init(&copt);
  copt.seed = cfg.seed;
  copt.num_threads = cfg.threads;
  effml_context *ctx = NULL;
  if (effml_context_create(&copt, &ctx) != EFFML_OK) {
    fprintf(stderr, "cannot create a libeffml context\n");
    return 1;
  }
  printf("libeffml %s pipeline on Fashion-MNIST (%s mode, seed %llu, %d threads)\n",
         effml_version_string(), cfg.quick ? "quick" : "full", (unsigned long long)cfg.seed,
         (int)cfg.threads);

  /* 1. Data. */
  printf("\n== 1. load Fashion-MNIST\n");
  effml_tensor *x_all, *y_all, *x_test_all, *y_test_all, *x_test, *y_test;
  CHECK(effml_data_fashion_mnist_load(ctx, cfg.data_dir, EFFML_DATA_SPLIT_TRAIN, &x_all, &y_all));
  CHECK(effml_data_fashion_mnist_load(ctx, cfg.data_dir, EFFML_DATA_SPLIT_TEST, &x_test_all, &y_test_all));
  {
    int64_t n = cfg.test_rows < effml_tensor_dim(x_test_all, 0) ? cfg.test_rows
                                                                : effml_tensor_dim(x_test_all, 0);
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; ++i) idx[i] = i;
    gather(ctx, x_test_all, y_test_all, idx, n, &x_test, &y_test);
    free(idx);
  }
  printf("  %lld training and %lld test images (using %lld test images)\n",
         (long long)effml_tensor_dim(x_all, 0), (long long)effml_tensor_dim(x_test_all, 0),
         (long long)effml_tensor_dim(x_test, 0));

  /* 2. Long tail + balanced validation split. */
  printf("\n== 2. long-tailed training set (imbalance ratio 100, exponential profile)\n");
  effml_tensor *x_lt, *y_lt, *x_val, *y_val;
  int64_t counts[NCLASS];
  make_long_tail(ctx, &cfg, x_all, y_all, &x_lt, &y_lt, &x_val, &y_val, counts);
  printf("  class counts:");
  for (int c = 0; c < NCLASS; ++c) printf(" %lld", (long long)counts[c]);
  printf("  (%lld rows); validation %lld rows, balanced\n", (long long)effml_tensor_dim(x_lt, 0),
         (long long)effml_tensor_dim(x_val, 0));

  /* 3. Rebalancing: none vs SMOTE vs temperature class sampling. */
  printf("\n== 3. rebalance: SMOTE vs temperature class sampling (chosen on validation)\n");
  const int64_t hs1 = cfg.hidden1 / 2, hs2 = 0; /* the small MLP of the comparison */
  /* Arms 2-4 are the comparison of Li et al., "Upsample or Upweight?" (NAACL 2025):
   * temperature sampling, scalarization at the same T (uniform sampling, loss
   * weights w_c ∝ n_c^(1/T - 1), reduction MEAN: the same expected gradient),
   * and temperature sampling with Cooldown (T = 3, then 1) -- same rows seen,
   * same steps, same optimizer; loss curves per round for head and tail classes. */
  const char *names[5] = {"none", "smote", "temperature", "upweight", "temperature+cooldown"};
  eval ev_val[5], ev_test[5];
  double secs[5];
  effml_tensor *x_bal[3] = {x_lt, NULL, NULL}, *y_bal[3] = {y_lt, NULL, NULL};
  {
    double t0 = now_s();
    effml_sampler_resample_options ro;
    effml_sampler_resample_options_init(&ro);
    ro.method = EFFML_SAMPLER_RESAMPLE_SMOTE;
    ro.sampling_strategy = EFFML_SAMPLER_STRATEGY_AUTO;
    ro.k_neighbors = 5;
    ro.seed = cfg.seed;
    CHECK(effml_sampler_resample(ctx, &ro, x_lt, y_lt, &x_bal[1], &y_bal[1]));
    printf("  SMOTE: %lld -> %lld rows in %.2f s\n", (long long)effml_tensor_dim(x_lt, 0),
           (long long)effml_tensor_dim(x_bal[1], 0), now_s() - t0);
  }
  const int64_t epoch_rows = effml_tensor_dim(x_bal[1], 0);
  const double temperature = 3.0;
  static const char *arm_dat[3] = {"loss_temperature.dat", "loss_upweight.dat", "loss_cooldown.dat"};
  for (int v = 0; v < 5; ++v) {
    /* arms 2-4 start from the same weights and generator state, so temperature and
     * cooldown coincide until the switch */
    if (v >= 2) effml_context_set_seed(ctx, cfg.seed + 100);
    effml_layer *m = make_mlp(ctx, hs1, hs2);
    double t = 0;
    if (v < 2) {
      t = train(ctx, m, x_bal[v], y_bal[v], cfg.epochs_small, 2e-3, names[v], NULL, NULL, NULL);
    } else {
      char path[1024];
      snprintf(path, sizeof path, "%s/%s", cfg.out_dir, arm_dat[v - 2]);
      t = balance_arm(ctx, &cfg, m, v - 2, x_lt, y_lt, counts, x_test, y_test, epoch_rows, path);
    }
    secs[v] = t;
    evaluate_model(ctx, m, x_val, y_val, &ev_val[v], NULL);
    evaluate_model(ctx, m, x_test, y_test, &ev_test[v], NULL);
    printf("  %-21s validation balanced accuracy %.2f%%\n", names[v], 100 * ev_val[v].balanced_accuracy);
    static const char *suffix[5] = {"", " (k=5)", " (T=3)", " (w at T=3)", " (T=3 then 1)"};
    char model[64];
    snprintf(model, sizeof model, "MLP 784-%lld-10%s", (long long)hs1, suffix[v]);
    char stage[48];
    snprintf(stage, sizeof stage, "rebalance:%s", names[v]);
    add_result(stage, model, &ev_test[v], effml_layer_count_params(m, 1),
               effml_layer_count_params(m, 0), mlp_macs(hs1, hs2), secs[v]);
    effml_layer_free(m);
  }
  printf("  upsample vs upweight (test balanced accuracy): temperature %.2f%%, upweight %.2f%%, "
         "temperature+cooldown %.2f%%\n",
         100 * ev_test[2].balanced_accuracy, 100 * ev_test[3].balanced_accuracy,
         100 * ev_test[4].balanced_accuracy);
  int best = ev_val[1].balanced_accuracy >= ev_val[2].balanced_accuracy ? 1 : 2;
  printf("  chosen: %s\n", names[best]);
  /* Per-class recall plot data. */
  {
    char path[1024];
    snprintf(path, sizeof path, "%s/per_class_recall.dat", cfg.out_dir);
    FILE *f = fopen(path, "w");
    if (f) {
      static const char *class_names[NCLASS] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                                "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                                                "Ankle boot"};
      fprintf(f, "# class name train_count recall_none recall_smote recall_temperature (test set)\n");
      for (int c = 0; c < NCLASS; ++c)
        fprintf(f, "%d \"%s\" %lld %.4f %.4f %.4f\n", c, class_names[c], (long long)counts[c],
                ev_test[0].recall[c], ev_test[1].recall[c], ev_test[2].recall[c]);
      fclose(f);
    }
  }
  /* The training set from here on: SMOTE output, or one temperature draw. */
  effml_tensor *x_tr, *y_tr;
  if (best == 1) {
    x_tr = x_bal[1];
    y_tr = y_bal[1];
    x_bal[1] = y_bal[1] = NULL;
  } else {
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)epoch_rows);
    temperature_draw(ctx, y_lt, counts, temperature, epoch_rows, cfg.seed + 1000, idx);
    gather(ctx, x_lt, y_lt, idx, epoch_rows, &x_tr, &y_tr);
    free(idx);
  }
  effml_tensor_free(x_bal[1]);
  effml_tensor_free(y_bal[1]);

  /* 4. Dense MLP vs Sparse Wide MLP (RigL) at the same FLOPs. */
  printf("\n== 4. dense MLP vs Sparse Wide MLP (sparsity 0.9, RigL) at equal FLOPs\n");
  const int64_t h1 = cfg.hidden1, h2 = cfg.hidden2;
  effml_layer *dense = make_mlp(ctx, h1, h2);
  double dense_s = train(ctx, dense, x_tr, y_tr, cfg.epochs_main, 1e-3, "dense", NULL, NULL, NULL);
  eval ev_dense;
  effml_tensor *dense_test_logits;
  evaluate_model(ctx, dense, x_test, y_test, &ev_dense, &dense_test_logits);
  char model[96];
  snprintf(model, sizeof model, "MLP 784-%lld-%lld-10", (long long)h1, (long long)h2);
  add_result("dense", model, &ev_dense, effml_layer_count_params(dense, 1),
             effml_layer_count_params(dense, 0), mlp_macs(h1, h2), dense_s);
  {
    const double sparsity = 0.9;
    effml_sparse_options so;
    effml_sparse_options_init(&so);
    so.sparsity = sparsity;
    int64_t ins[3] = {NPIX, h1, h2}, outs[3] = {h1, h2, NCLASS};
    uint32_t widen[3] = {EFFML_SPARSE_WIDEN_OUT, EFFML_SPARSE_WIDEN_IN | EFFML_SPARSE_WIDEN_OUT,
                         EFFML_SPARSE_WIDEN_IN};
    effml_layer *sw, *l;
    CHECK(effml_layer_sequential_create(ctx, &sw));
    double macs = 0;
    for (int k = 0; k < 3; ++k) {
      so.widen = widen[k];
      CHECK(effml_sparse_wide_create(ctx, ins[k], outs[k], &so, &l));
      macs += (double)effml_sparse_nnz(l);
      CHECK(effml_layer_sequential_add(ctx, sw, l));
      if (k < 2) {
        CHECK(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &l));
        CHECK(effml_layer_sequential_add(ctx, sw, l));
      }
    }
    int64_t steps = steps_for(effml_tensor_dim(x_tr, 0), 128, cfg.epochs_main);
    effml_optimizer *opt = make_adamw(ctx, sw, 1e-3, steps);
    effml_dst_options dopt;
    effml_dst_options_init(&dopt);
    dopt.method = EFFML_SPARSE_DST_RIGL;
    dopt.total_steps = steps;
    dopt.delta_t = cfg.quick ? 20 : 100;
    dopt.drop_fraction = 0.3;
    dopt.end_fraction = 0.75;
    dopt.seed = cfg.seed;
    effml_dst *dst;
    CHECK(effml_dst_create(ctx, sw, opt, &dopt, &dst));
    double sw_s = train(ctx, sw, x_tr, y_tr, cfg.epochs_main, 1e-3, "sparse-wide", effml_dst_step_hook,
                        dst, &opt);
    printf("  RigL: %lld mask updates over %lld steps\n", (long long)effml_dst_updates(dst),
           (long long)effml_dst_steps(dst));
    eval ev_sw;
    evaluate_model(ctx, sw, x_test, y_test, &ev_sw, NULL);
    int64_t w1 = effml_layer_out_features(effml_layer_sequential_get(sw, 0));
    int64_t w2 = effml_layer_out_features(effml_layer_sequential_get(sw, 2));
    snprintf(model, sizeof model, "Sparse Wide 784-%lld-%lld-10 s=0.9", (long long)w1, (long long)w2);
    /* trainable = nonzeros + biases (the values the optimizer updates) */
    add_result("sparse_wide_rigl", model, &ev_sw, effml_layer_count_params(sw, 1),
               effml_layer_count_params(sw, 0), macs, sw_s);
    effml_dst_free(dst);
    effml_optimizer_free(opt);
    effml_layer_free(sw);
  }

  /* 5. Early-exit cascades over small ensemble members. */
  printf("\n== 5. window early-exit cascade of small ensemble members\n");
  enum { M = 3 };
  const int64_t hm = cfg.quick ? 32 : 64;
  effml_layer *members[M];
  effml_tensor *val_logits[M], *test_logits[M];
  double member_s = 0;
  eval ev_member;
  for (int k = 0; k < M; ++k) {
    char label[32];
    snprintf(label, sizeof label, "member %d", k + 1);
    members[k] = make_mlp(ctx, hm, 0);
    member_s += train(ctx, members[k], x_tr, y_tr, cfg.epochs_small, 2e-3, label, NULL, NULL, NULL);
    eval ev;
    evaluate_model(ctx, members[k], x_val, y_val, &ev, &val_logits[k]);
    evaluate_model(ctx, members[k], x_test, y_test, k == 0 ? &ev_member : &ev, &test_logits[k]);
  }
  const double member_macs = mlp_macs(hm, 0);
  snprintf(model, sizeof model, "MLP 784-%lld-10 (member 1)", (long long)hm);
  add_result("single_small", model, &ev_member, effml_layer_count_params(members[0], 1),
             effml_layer_count_params(members[0], 0), member_macs, member_s / M);
  int32_t *ens_pred, *mem_pred, *dense_pred;
  double *ens_score, *mem_score, *dense_score;
  model_pred_score(ctx, (const effml_tensor *const *)test_logits, M, &ens_pred, &ens_score);
  model_pred_score(ctx, (const effml_tensor *const *)test_logits, 1, &mem_pred, &mem_score);
  model_pred_score(ctx, (const effml_tensor *const *)&dense_test_logits, 1, &dense_pred, &dense_score);
  eval ev_ens;
  evaluate_preds(ctx, ens_pred, ens_score, y_test, &ev_ens);
  snprintf(model, sizeof model, "ensemble of %d members", M);
  add_result("ensemble", model, &ev_ens, M * effml_layer_count_params(members[0], 1),
             M * effml_layer_count_params(members[0], 0), M * member_macs, member_s);
  cascade_out cas_thr, cas_win;
  run_cascade(ctx, EFFML_CASCADE_EXIT_THRESHOLD, members, M, member_macs, val_logits, y_val,
              x_test, y_test, &cas_thr);
  run_cascade(ctx, EFFML_CASCADE_EXIT_WINDOW, members, M, member_macs, val_logits, y_val, x_test,
              y_test, &cas_win);
  printf("  threshold cascade: exits per stage %.2f / %.2f / %.2f, %.0f MACs/sample\n",
         cas_thr.exit_frac[0], cas_thr.exit_frac[1], cas_thr.exit_frac[2], cas_thr.macs);
  printf("  window cascade:    exits per stage %.2f / %.2f / %.2f, %.0f MACs/sample\n",
         cas_win.exit_frac[0], cas_win.exit_frac[1], cas_win.exit_frac[2], cas_win.macs);
  add_result("cascade_threshold", "single-threshold cascade (cov 0.8)", &cas_thr.e,
             M * effml_layer_count_params(members[0], 1), M * effml_layer_count_params(members[0], 0),
             cas_thr.macs, cas_thr.seconds);
  add_result("cascade_window", "window cascade (risk 0.05, +-0.1)", &cas_win.e,
             M * effml_layer_count_params(members[0], 1), M * effml_layer_count_params(members[0], 0),
             cas_win.macs, cas_win.seconds);
  {
    char path[1024];
    snprintf(path, sizeof path, "%s/rc_member.dat", cfg.out_dir);
    write_rc_curve(ctx, path, mem_pred, mem_score, y_test);
    snprintf(path, sizeof path, "%s/rc_dense.dat", cfg.out_dir);
    write_rc_curve(ctx, path, dense_pred, dense_score, y_test);
    snprintf(path, sizeof path, "%s/rc_ensemble.dat", cfg.out_dir);
    write_rc_curve(ctx, path, ens_pred, ens_score, y_test);
    snprintf(path, sizeof path, "%s/rc_cascade_threshold.dat", cfg.out_dir);
    write_rc_curve(ctx, path, cas_thr.pred, cas_thr.score, y_test);
    snprintf(path, sizeof path, "%s/rc_cascade_window.dat", cfg.out_dir);
    write_rc_curve(ctx, path, cas_win.pred, cas_win.score, y_test);
  }
  claim.window_cov5 = cas_win.e.cov5;
  claim.large_cov5 = ev_dense.cov5;
  claim.window_macs = cas_win.macs;
  claim.large_macs = mlp_macs(h1, h2);
  claim.holds = claim.window_cov5 >= claim.large_cov5 - 0.01 && claim.window_macs < claim.large_macs;
  printf("  %s\n  claim: %s\n  window cascade %.1f%% vs larger dense MLP %.1f%% coverage at 5%% risk,"
         " %.0f vs %.0f MACs/sample -> %s\n",
         PAPER, CLAIM, 100 * claim.window_cov5, 100 * claim.large_cov5, claim.window_macs,
         claim.large_macs, claim.holds ? "holds" : "does not hold here");

  /* 5b. Calibrate each member on validation; the window cascade then routes on
   * calibrated scores (temperature-scaled logits as logits stages). */
  printf("\n== 5b. calibrate the members (temperature, vector, correctness-aware) before routing\n");
  {
    effml_calibrator *ts_cal[M];
    int64_t rcnt[3][15];
    double rconf[3][15], racc[3][15];
    printf("  test ECE (15 bins, L1) / multiclass Brier; T = the fitted temperature\n"
           "            %-16s %-16s %-16s %-16s %-16s\n", "uncalibrated", "temperature", "vector",
           "CA (unweighted)", "CA (balanced)");
    for (int k = 0; k < M; ++k) {
      effml_tensor *fv = ca_features(ctx, members[k], x_val, val_logits[k]);
      effml_tensor *ft = ca_features(ctx, members[k], x_test, test_logits[k]);
      double T = 1, e[5], b[5];
      effml_tensor *ts = calibrate(ctx, EFFML_CALIBRATION_TEMPERATURE, val_logits[k], NULL, y_val,
                                   test_logits[k], NULL, 1, &T, &ts_cal[k]);
      effml_tensor *vs = calibrate(ctx, EFFML_CALIBRATION_VECTOR, val_logits[k], NULL, y_val,
                                   test_logits[k], NULL, 1, NULL, NULL);
      effml_tensor *cz = calibrate(ctx, EFFML_CALIBRATION_CORRECTNESS_AWARE, val_logits[k], fv,
                                   y_val, test_logits[k], ft, 0, NULL, NULL);
      effml_tensor *cb = calibrate(ctx, EFFML_CALIBRATION_CORRECTNESS_AWARE, val_logits[k], fv,
                                   y_val, test_logits[k], ft, 1, NULL, NULL);
      const effml_tensor *all[5] = {test_logits[k], ts, vs, cz, cb};
      for (int q = 0; q < 5; ++q) ece_brier(ctx, all[q], y_test, &e[q], &b[q]);
      printf("  member %d  %.4f / %.4f  %.4f / %.4f  %.4f / %.4f  %.4f / %.4f  %.4f / %.4f  %.2f\n",
             k + 1, e[0], b[0], e[1], b[1], e[2], b[2], e[3], b[3], e[4], b[4], T);
      if (k == 0) {
        const effml_tensor *rel[3] = {test_logits[0], ts, cz};
        for (int q = 0; q < 3; ++q) reliability_of(ctx, rel[q], y_test, rcnt[q], rconf[q], racc[q]);
        static const char *st[3] = {"calibrated:temperature", "calibrated:vector",
                                    "calibrated:correctness_aware"};
        static const char *md[3] = {"member 1 + temperature scaling", "member 1 + vector scaling",
                                    "member 1 + CA calibrator (unweighted)"};
        for (int q = 0; q < 3; ++q) {
          int32_t *pp;
          double *ps;
          eval ev;
          model_pred_score(ctx, &all[q + 1], 1, &pp, &ps);
          evaluate_preds(ctx, pp, ps, y_test, &ev);
          add_result(st[q], md[q], &ev, effml_layer_count_params(members[0], 1),
                     effml_layer_count_params(members[0], 0), member_macs, 0.0);
          free(pp);
          free(ps);
        }
      }
      effml_tensor_free(ts);
      effml_tensor_free(vs);
      effml_tensor_free(cz);
      effml_tensor_free(cb);
      effml_tensor_free(fv);
      effml_tensor_free(ft);
    }
    cascade_out cas_cal;
    run_cascade_logits(ctx, val_logits, test_logits, ts_cal, M, member_macs, y_val, y_test, &cas_cal);
    add_result("cascade_window_calibrated", "window cascade, TS-calibrated members", &cas_cal.e,
               M * effml_layer_count_params(members[0], 1),
               M * effml_layer_count_params(members[0], 0), cas_cal.macs, cas_cal.seconds);
    printf("  window cascade on calibrated members: ECE %.4f (uncalibrated %.4f), %.0f MACs/sample\n",
           cas_cal.e.ece, cas_win.e.ece, cas_cal.macs);
    free(cas_cal.pred);
    free(cas_cal.score);
    for (int k = 0; k < M; ++k) effml_calibration_free(ts_cal[k]);
    char path[1024];
    snprintf(path, sizeof path, "%s/reliability.dat", cfg.out_dir);
    FILE *f = fopen(path, "w");
    if (f) {
      fprintf(f, "# member 1 on test, 15 equal-width bins: centre, then (accuracy, mean confidence, count) "
                 "uncalibrated, temperature, correctness-aware\n");
      for (int bb = 0; bb < 15; ++bb)
        fprintf(f, "%.4f %.4f %.4f %lld %.4f %.4f %lld %.4f %.4f %lld\n", (bb + 0.5) / 15.0,
                racc[0][bb], rconf[0][bb], (long long)rcnt[0][bb], racc[1][bb], rconf[1][bb],
                (long long)rcnt[1][bb], racc[2][bb], rconf[2][bb], (long long)rcnt[2][bb]);
      fclose(f);
    }
  }
  free(ens_pred); free(ens_score); free(mem_pred); free(mem_score); free(dense_pred); free(dense_score);
  free(cas_thr.pred); free(cas_thr.score); free(cas_win.pred); free(cas_win.score);
  for (int k = 0; k < M; ++k) {
    effml_tensor_free(val_logits[k]);
    effml_tensor_free(test_logits[k]);
    effml_layer_free(members[k]);
  }
  effml_tensor_free(dense_test_logits);

  /* 6. Compacter adaptation of the dense MLP to a shifted task. */
  printf("\n== 6. Compacter adapters: adapt the dense MLP to flipped + inverted images\n");
  {
    effml_tensor *xs_tr, *xs_test;
    shift_images(ctx, x_tr, &xs_tr);
    shift_images(ctx, x_test, &xs_test);
    eval ev_frozen;
    evaluate_model(ctx, dense, xs_test, y_test, &ev_frozen, NULL);
    add_result("shift:frozen_base", "dense MLP, no adaptation", &ev_frozen, 0,
               effml_layer_count_params(dense, 0), mlp_macs(h1, h2), 0.0);

    /* Same base weights, with a Compacter block after each hidden layer.  The
     * hidden layers are frozen; the adapters and the classifier head train. */
    effml_phm_rule *rule;
    CHECK(effml_phm_rule_create(ctx, 4, 1e-4, &rule)); /* shared A, Compacter's init */
    effml_adapter_options ao;
    effml_adapter_options_init(&ao);
    ao.bottleneck = 16;
    ao.phm_dim = 4;
    ao.rank = 1;
    effml_layer *adapted, *l;
    CHECK(effml_layer_sequential_create(ctx, &adapted));
    int64_t widths[4] = {NPIX, h1, h2, NCLASS};
    double adapter_macs = 0;
    for (int k = 0; k < 3; ++k) {
      CHECK(effml_layer_dense_create(ctx, widths[k], widths[k + 1], 1, &l));
      effml_layer *src = effml_layer_sequential_get(dense, 2 * k);
      for (int32_t p = 0; p < effml_layer_num_params(l); ++p)
        CHECK(effml_tensor_copy(ctx, effml_layer_param(l, p), effml_layer_param(src, p)));
      if (k < 2) CHECK(effml_layer_set_trainable(ctx, l, NULL, 0));
      CHECK(effml_layer_sequential_add(ctx, adapted, l));
      if (k < 2) {
        CHECK(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &l));
        CHECK(effml_layer_sequential_add(ctx, adapted, l));
        CHECK(effml_adapter_create(ctx, widths[k + 1], &ao, rule, &l));
        CHECK(effml_layer_sequential_add(ctx, adapted, l));
        /* factorized LPHM cost per sample: n*r*(k+d+n^2) per projection (Karimi Mahabadi et al. 2021, arXiv 2106.04647, §3.2) */
        adapter_macs += 2.0 * 4 * 1 * (double)(widths[k + 1] + 16 + 16);
      }
    }
    effml_phm_rule_free(rule); /* the adapters hold their references */
    int64_t trainable = effml_layer_count_params(adapted, 1);
    int64_t total = effml_layer_count_params(adapted, 0);
    double ad_s = train(ctx, adapted, xs_tr, y_tr, cfg.epochs_adapt, 3e-3, "compacter", NULL, NULL, NULL);
    eval ev_ad;
    evaluate_model(ctx, adapted, xs_test, y_test, &ev_ad, NULL);
    printf("  Compacter: %lld of %lld parameters trainable (%.2f%%)\n", (long long)trainable,
           (long long)total, 100.0 * (double)trainable / (double)total);
    add_result("shift:compacter", "dense MLP + 2 Compacter blocks + head", &ev_ad, trainable, total,
               mlp_macs(h1, h2) + adapter_macs, ad_s);
    effml_layer_free(adapted);
    effml_tensor_free(xs_tr);
    effml_tensor_free(xs_test);
  }

  /* 7. Table, JSON, CSV.  8. Plots. */
  double total_s = now_s() - t_start;
  print_table();
  write_outputs(&cfg, names[best], total_s);
  plots(&cfg, names[best]);
  printf("results: %s/results.json, %s/results.csv (total %.1f s)\n", cfg.out_dir, cfg.out_dir, total_s);
  for (int i = 0; i < g_nresults; ++i) {
    const result *r = &g_results[i];
    printf("{\"example\":\"pipeline_fashion_mnist\",\"stage\":\"%s\",\"test_accuracy\":%.4f,"
           "\"balanced_accuracy\":%.4f,\"trainable_params\":%lld,\"macs_per_sample\":%.0f,"
           "\"coverage_at_5pct_risk\":%.4f,\"seconds\":%.2f}\n",
           r->stage, r->test_accuracy, r->balanced_accuracy, (long long)r->trainable_params,
           r->macs_per_sample, r->coverage_at_5_risk, r->seconds);
  }
  printf("{\"example\":\"pipeline_fashion_mnist\",\"paper\":\"%s\",\"claim\":\"%s\","
         "\"holds\":%s,\"window_cov_at_risk_5\":%.4f,\"large_cov_at_risk_5\":%.4f,"
         "\"window_macs\":%.0f,\"large_macs\":%.0f,\"mac_ratio\":%.3f}\n",
         PAPER, CLAIM, claim.holds ? "true" : "false", claim.window_cov5, claim.large_cov5,
         claim.window_macs, claim.large_macs, claim.window_macs / claim.large_macs);

  effml_layer_free(dense);
  effml_tensor_free(x_tr); effml_tensor_free(y_tr);
  effml_tensor_free(x_lt); effml_tensor_free(y_lt);
  effml_tensor_free(x_val); effml_tensor_free(y_val);
  effml_tensor_free(x_test); effml_tensor_free(y_test);
  effml_tensor_free(x_all); effml_tensor_free(y_all);
  effml_tensor_free(x_test_all); effml_tensor_free(y_test_all);
  effml_context_free(ctx);
  return 0;
}
