/* Weighted softmax cross-entropy, class weights and scalarization weights:
 * values and gradients against PyTorch / scikit-learn / numpy
 * (tests/ref/weighted_loss_ref.py -> weighted_loss_ref.txt), finite
 * differences, the expected-gradient identity of scalarization, and the fit
 * loop's sample_weight / class_weight options. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define REF EFFML_TEST_REF "/weighted_loss_ref.txt"

static effml_context *ctx;
static void setup(void) { ctx = tu_ctx(3); }
static void teardown(void) { effml_context_free(ctx); }

/* Array `name` of the reference file (malloc'd doubles; *n receives the count). */
static double *ref(const char *name, int64_t *n) {
  FILE *f = fopen(REF, "r");
  ck_assert_msg(f != NULL, "cannot open %s", REF);
  char key[128];
  long long cnt;
  double *out = NULL;
  while (fscanf(f, "%127s %lld", key, &cnt) == 2) {
    double *v = malloc((size_t)cnt * sizeof(double));
    for (long long i = 0; i < cnt; ++i) ck_assert_int_eq(fscanf(f, "%lf", &v[i]), 1);
    if (!strcmp(key, name)) {
      out = v;
      if (n) *n = cnt;
      break;
    }
    free(v);
  }
  fclose(f);
  ck_assert_msg(out != NULL, "reference %s missing", name);
  return out;
}

enum { B = 7, C = 5 };

typedef struct {
  effml_tensor *logits, *labels, *sw, *cw, *sw32, *cw32;
} fixture;

static fixture load(void) {
  fixture fx;
  double *z = ref("logits", NULL), *y = ref("labels", NULL), *sw = ref("sample_weight", NULL),
         *cw = ref("class_weight", NULL);
  fx.logits = tu_f32(ctx, B, C, NULL);
  float *zp = effml_tensor_data(fx.logits);
  for (int i = 0; i < B * C; ++i) zp[i] = (float)z[i];
  int64_t b = B, c = C;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, &b, &fx.labels), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, &b, &fx.sw), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, &b, &fx.sw32), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, &c, &fx.cw), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, &c, &fx.cw32), EFFML_OK);
  for (int i = 0; i < B; ++i) {
    ((int64_t *)effml_tensor_data(fx.labels))[i] = (int64_t)y[i];
    ((double *)effml_tensor_data(fx.sw))[i] = sw[i];
    ((float *)effml_tensor_data(fx.sw32))[i] = (float)sw[i];
  }
  for (int k = 0; k < C; ++k) {
    ((double *)effml_tensor_data(fx.cw))[k] = cw[k];
    ((float *)effml_tensor_data(fx.cw32))[k] = (float)cw[k];
  }
  free(z); free(y); free(sw); free(cw);
  return fx;
}

static void unload(fixture *fx) {
  effml_tensor_free(fx->logits); effml_tensor_free(fx->labels);
  effml_tensor_free(fx->sw); effml_tensor_free(fx->cw);
  effml_tensor_free(fx->sw32); effml_tensor_free(fx->cw32);
}

START_TEST(test_weighted_matches_torch) {
  fixture fx = load();
  effml_tensor *g = tu_f32(ctx, B, C, NULL);
  static const char *names[4] = {"both", "sw", "cw", "none"};
  static const char *reds[2] = {"wmean", "mean"};
  for (int dt = 0; dt < 2; ++dt)
    for (int v = 0; v < 4; ++v)
      for (int r = 0; r < 2; ++r) {
        const effml_tensor *sw = (v == 0 || v == 1) ? (dt ? fx.sw32 : fx.sw) : NULL;
        const effml_tensor *cw = (v == 0 || v == 2) ? (dt ? fx.cw32 : fx.cw) : NULL;
        double loss = NAN;
        ck_assert_msg(effml_train_softmax_cross_entropy_weighted(
                          ctx, fx.logits, fx.labels, sw, cw,
                          r ? EFFML_TRAIN_REDUCTION_MEAN : EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN,
                          &loss, g) == EFFML_OK,
                      "%s", effml_context_last_error(ctx));
        char key[64];
        snprintf(key, sizeof key, "%s_%s_loss", names[v], reds[r]);
        double *rl = ref(key, NULL);
        ck_assert_msg(fabs(loss - rl[0]) <= 1e-6 * fabs(rl[0]), "%s: %.10g vs %.10g", key, loss,
                      rl[0]);
        snprintf(key, sizeof key, "%s_%s_grad", names[v], reds[r]);
        double *rg = ref(key, NULL);
        const float *gp = effml_tensor_data(g);
        for (int i = 0; i < B * C; ++i)
          ck_assert_msg(fabs(gp[i] - rg[i]) <= 1e-6, "%s[%d]: %.9g vs %.9g", key, i, gp[i], rg[i]);
        free(rl);
        free(rg);
      }
  /* PyTorch's CrossEntropyLoss(weight=cw) itself */
  double loss, *rl = ref("torch_cw_loss", NULL), *rg = ref("torch_cw_grad", NULL);
  ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(
                       ctx, fx.logits, fx.labels, NULL, fx.cw,
                       EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN, &loss, g),
                   EFFML_OK);
  ck_assert_double_eq_tol(loss, rl[0], 1e-6);
  for (int i = 0; i < B * C; ++i) ck_assert_double_eq_tol(((float *)effml_tensor_data(g))[i], rg[i], 1e-6);
  /* without weights it is the unweighted loss */
  double plain;
  ck_assert_int_eq(effml_train_softmax_cross_entropy(ctx, fx.logits, fx.labels, &plain, NULL), EFFML_OK);
  ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(
                       ctx, fx.logits, fx.labels, NULL, NULL, EFFML_TRAIN_REDUCTION_MEAN, &loss,
                       NULL),
                   EFFML_OK);
  ck_assert_double_eq_tol(loss, plain, 1e-12);
  /* dlogits may alias logits */
  effml_tensor *z2 = NULL;
  ck_assert_int_eq(effml_tensor_contiguous(ctx, fx.logits, &z2), EFFML_OK);
  ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(
                       ctx, z2, fx.labels, fx.sw, fx.cw, EFFML_TRAIN_REDUCTION_MEAN, &loss, z2),
                   EFFML_OK);
  double *rb = ref("both_mean_grad", NULL);
  for (int i = 0; i < B * C; ++i) ck_assert_double_eq_tol(((float *)effml_tensor_data(z2))[i], rb[i], 1e-6);
  free(rb); free(rl); free(rg);
  effml_tensor_free(z2);
  effml_tensor_free(g);
  unload(&fx);
}
END_TEST

START_TEST(test_weighted_finite_differences) {
  fixture fx = load();
  effml_tensor *g = tu_f32(ctx, B, C, NULL), *z = NULL;
  ck_assert_int_eq(effml_tensor_contiguous(ctx, fx.logits, &z), EFFML_OK);
  float *zp = effml_tensor_data(z);
  for (int r = 0; r < 2; ++r) {
    const int32_t red = r ? EFFML_TRAIN_REDUCTION_MEAN : EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN;
    double l0;
    ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(ctx, z, fx.labels, fx.sw, fx.cw,
                                                                red, &l0, g),
                     EFFML_OK);
    const float *gp = effml_tensor_data(g);
    for (int i = 0; i < B * C; ++i) {
      const float keep = zp[i], h = 1e-2f;
      double lp, lm;
      zp[i] = keep + h;
      effml_train_softmax_cross_entropy_weighted(ctx, z, fx.labels, fx.sw, fx.cw, red, &lp, NULL);
      zp[i] = keep - h;
      effml_train_softmax_cross_entropy_weighted(ctx, z, fx.labels, fx.sw, fx.cw, red, &lm, NULL);
      zp[i] = keep;
      const double fd = (lp - lm) / (2.0 * ((double)(keep + h) - (double)keep));
      ck_assert_msg(fabs(fd - gp[i]) <= 2e-4 + 1e-3 * fabs(fd), "red %d elem %d: fd %.8g vs %.8g",
                    r, i, fd, gp[i]);
    }
  }
  effml_tensor_free(z);
  effml_tensor_free(g);
  unload(&fx);
}
END_TEST

START_TEST(test_weighted_errors) {
  fixture fx = load();
  effml_tensor *g = tu_f32(ctx, B, C, NULL);
  float *gp = effml_tensor_data(g);
  for (int i = 0; i < B * C; ++i) gp[i] = 42.0f;
  double loss = 7.0;
  ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(ctx, fx.logits, fx.labels, NULL,
                                                              NULL, 2, &loss, g),
                   EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "reduction=2"));
  ((double *)effml_tensor_data(fx.sw))[2] = -1.0;
  ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(
                       ctx, fx.logits, fx.labels, fx.sw, NULL, 0, &loss, g),
                   EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "sample_weight[2]=-1"));
  ((double *)effml_tensor_data(fx.sw))[2] = NAN;
  ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(
                       ctx, fx.logits, fx.labels, fx.sw, NULL, 0, &loss, g),
                   EFFML_E_INVALID_ARG);
  /* all-zero weights under WEIGHTED_MEAN: PyTorch gives NaN, we refuse */
  for (int i = 0; i < B; ++i) ((double *)effml_tensor_data(fx.sw))[i] = 0.0;
  ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(
                       ctx, fx.logits, fx.labels, fx.sw, NULL, 0, &loss, g),
                   EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "sum to 0"));
  /* ... but Σ w ℓ / b is 0 */
  ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(
                       ctx, fx.logits, fx.labels, fx.sw, NULL, 1, &loss, NULL),
                   EFFML_OK);
  ck_assert_double_eq(loss, 0.0);
  loss = 7.0;
  /* wrong lengths and dtypes */
  ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(
                       ctx, fx.logits, fx.labels, fx.cw, NULL, 0, &loss, g),
                   EFFML_E_SHAPE);
  ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(
                       ctx, fx.logits, fx.labels, NULL, fx.sw, 0, &loss, g),
                   EFFML_E_SHAPE);
  ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(
                       ctx, fx.logits, fx.labels, fx.labels, NULL, 0, &loss, g),
                   EFFML_E_DTYPE);
  ck_assert_double_eq(loss, 7.0);
  for (int i = 0; i < B * C; ++i) ck_assert_float_eq(gp[i], 42.0f);
  effml_tensor_free(g);
  unload(&fx);
}
END_TEST

START_TEST(test_class_weights) {
  int64_t n;
  double *y = ref("balanced_labels", &n), *want = ref("balanced_weights", NULL);
  effml_tensor *lab = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &n, &lab), EFFML_OK);
  for (int64_t i = 0; i < n; ++i) ((int32_t *)effml_tensor_data(lab))[i] = (int32_t)y[i];
  double w[6];
  ck_assert_int_eq(effml_train_class_weight_balanced(ctx, lab, 5, w), EFFML_OK);
  for (int k = 0; k < 5; ++k) ck_assert_double_eq_tol(w[k], want[k], 1e-15);
  /* a class without samples is an error, as in scikit-learn */
  ck_assert_int_eq(effml_train_class_weight_balanced(ctx, lab, 6, w), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "class 5"));
  ck_assert_int_eq(effml_train_class_weight_balanced(ctx, lab, 4, w), EFFML_E_RANGE);

  double *sizes = ref("scal_sizes", NULL);
  const double ts[4] = {1, 2, 3, 10};
  for (int t = 0; t < 4; ++t) {
    char key[32];
    snprintf(key, sizeof key, "scal_T%g", ts[t]);
    double *r = ref(key, NULL);
    ck_assert_int_eq(effml_train_scalarization_weights(ctx, sizes, 6, ts[t], w), EFFML_OK);
    double mean = 0, total = 0;
    for (int k = 0; k < 6; ++k) {
      ck_assert_msg(fabs(w[k] - r[k]) <= 1e-12 * fabs(r[k]) + 1e-15, "T=%g k=%d: %.17g vs %.17g",
                    ts[t], k, w[k], r[k]);
      mean += sizes[k] * w[k];
      total += sizes[k];
    }
    ck_assert_double_eq_tol(mean / total, 1.0, 1e-12); /* mean 1 over the data */
    free(r);
  }
  /* T = inf: the "balanced" weights over the present classes */
  ck_assert_int_eq(effml_train_scalarization_weights(ctx, sizes, 6, INFINITY, w), EFFML_OK);
  double total = 0;
  for (int k = 0; k < 6; ++k) total += sizes[k];
  for (int k = 0; k < 5; ++k) ck_assert_double_eq_tol(w[k], total / (5.0 * sizes[k]), 1e-9);
  ck_assert_double_eq(w[5], 0.0);
  ck_assert_int_eq(effml_train_scalarization_weights(ctx, sizes, 6, 0.0, w), EFFML_E_INVALID_ARG);
  free(sizes); free(y); free(want);
  effml_tensor_free(lab);
}
END_TEST

/* Scalarization at T with reduction MEAN has the expected gradient of
 * temperature sampling at T: averaged over every batch of size b drawn
 * without replacement, the MEAN batch gradient equals the full-data
 * temperature-sampling gradient Σ_k q_k mean_{i in k} ∇ℓ_i exactly;
 * WEIGHTED_MEAN's average does not. */
START_TEST(test_scalarization_expected_gradient) {
  enum { N = 6, K = 3, BS = 3 };
  const int32_t y[N] = {0, 0, 0, 0, 1, 2};
  const double sizes[K] = {4, 1, 1}, T = 2.0;
  double w[K], q[K];
  ck_assert_int_eq(effml_train_scalarization_weights(ctx, sizes, K, T, w), EFFML_OK);
  ck_assert_int_eq(effml_sampler_temperature_probs(ctx, sizes, K, T, q), EFFML_OK);
  effml_tensor *z = tu_f32(ctx, N, K, NULL);
  tu_fill_uniform(z, 9, -2, 2);
  const float *zp = effml_tensor_data(z);
  /* target: Σ_k q_k (1/n_k) Σ_{i in k} (softmax(z_i) - e_{y_i}) per row */
  double target[N][K];
  for (int i = 0; i < N; ++i) {
    double m = zp[i * K], s = 0;
    for (int j = 1; j < K; ++j) m = fmax(m, zp[i * K + j]);
    for (int j = 0; j < K; ++j) s += exp(zp[i * K + j] - m);
    for (int j = 0; j < K; ++j)
      target[i][j] = q[y[i]] / sizes[y[i]] * (exp(zp[i * K + j] - m) / s - (j == y[i]));
  }
  /* enumerate the C(6,3) = 20 batches; the full-data gradient of a row is the
   * batch gradient times (number of batches) / (batches containing the row) * (b / N) ... */
  double avg[2][N][K];
  memset(avg, 0, sizeof avg);
  int nb = 0;
  effml_tensor *zb = tu_f32(ctx, BS, K, NULL), *gb = tu_f32(ctx, BS, K, NULL), *yb = NULL,
               *wb = NULL;
  int64_t bs = BS;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &bs, &yb), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, &bs, &wb), EFFML_OK);
  for (int a = 0; a < N; ++a)
    for (int b = a + 1; b < N; ++b)
      for (int c = b + 1; c < N; ++c) {
        const int rows[BS] = {a, b, c};
        for (int r = 0; r < BS; ++r) {
          memcpy((float *)effml_tensor_data(zb) + r * K, zp + rows[r] * K, K * sizeof(float));
          ((int32_t *)effml_tensor_data(yb))[r] = y[rows[r]];
          ((double *)effml_tensor_data(wb))[r] = w[y[rows[r]]];
        }
        for (int red = 0; red < 2; ++red) {
          double loss;
          ck_assert_int_eq(effml_train_softmax_cross_entropy_weighted(ctx, zb, yb, wb, NULL, red,
                                                                      &loss, gb),
                           EFFML_OK);
          /* the batch gradient w.r.t. the parameters is Σ_rows dlogits ⊗ ...: accumulate
           * per dataset row, so the row-wise average is the expected contribution */
          for (int r = 0; r < BS; ++r)
            for (int j = 0; j < K; ++j)
              avg[red][rows[r]][j] += ((float *)effml_tensor_data(gb))[r * K + j];
        }
        ++nb;
      }
  ck_assert_int_eq(nb, 20);
  double dev[2] = {0, 0};
  for (int red = 0; red < 2; ++red)
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < K; ++j) dev[red] = fmax(dev[red], fabs(avg[red][i][j] / nb - target[i][j]));
  ck_assert_msg(dev[1] < 1e-6, "MEAN: max deviation %g", dev[1]);
  ck_assert_msg(dev[0] > 1e-3, "WEIGHTED_MEAN unexpectedly unbiased (%g)", dev[0]);
  effml_tensor_free(z); effml_tensor_free(zb); effml_tensor_free(gb);
  effml_tensor_free(yb); effml_tensor_free(wb);
}
END_TEST

/* ---- the fit loop ---- */

static void blobs(int64_t n, effml_tensor **x, effml_tensor **y) {
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, (int64_t[]){n, 4}, x), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &n, y), EFFML_OK);
  tu_fill_uniform(*x, 5, -1, 1);
  float *xp = effml_tensor_data(*x);
  int32_t *yp = effml_tensor_data(*y);
  for (int64_t i = 0; i < n; ++i) {
    yp[i] = i % 5 == 0 ? 2 : (int32_t)(i % 2); /* class 2 is the rare one */
    xp[i * 4 + yp[i]] += 1.0f;
  }
}

/* Train a fresh linear model from seed 7 with SGD; returns its weight [3, 4] + bias. */
static void fit(const effml_tensor *x, const effml_tensor *y, const effml_train_options *extra,
                float out[15], effml_status expect) {
  effml_context *c2 = tu_ctx(7);
  effml_layer *m = NULL;
  ck_assert_int_eq(effml_layer_dense_create(c2, 4, 3, 1, &m), EFFML_OK);
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  o.algorithm = EFFML_OPTIM_SGD;
  o.lr = 0.5;
  o.weight_decay = 0;
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(c2, &o, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(c2, opt, m), EFFML_OK);
  effml_train_options f = *extra;
  double loss;
  ck_assert_msg(effml_train_classifier(c2, m, opt, x, y, &f, &loss) == expect, "%s",
                effml_context_last_error(c2));
  if (out) {
    memcpy(out, effml_tensor_data(effml_layer_param(m, 0)), 12 * sizeof(float));
    memcpy(out + 12, effml_tensor_data(effml_layer_param(m, 1)), 3 * sizeof(float));
  }
  effml_optimizer_free(opt);
  effml_layer_free(m);
  effml_context_free(c2);
}

static double maxdiff(const float *a, const float *b) { return tu_max_abs_diff_f32(a, b, 15); }

START_TEST(test_fit_weights) {
  effml_tensor *x, *y;
  blobs(40, &x, &y);
  effml_train_options f;
  effml_train_options_init(&f);
  f.epochs = 3;
  f.batch_size = 8;
  float base[15], p[15];
  fit(x, y, &f, base, EFFML_OK);

  /* uniform weights change nothing (both reductions) */
  effml_tensor *sw = NULL, *cw = NULL;
  int64_t n = 40, c = 3;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, &n, &sw), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, &c, &cw), EFFML_OK);
  effml_tensor_fill(ctx, sw, 2.5);
  effml_train_options g = f;
  g.sample_weight = sw;
  fit(x, y, &g, p, EFFML_OK);
  ck_assert_double_le(maxdiff(base, p), 1e-5);
  g.reduction = EFFML_TRAIN_REDUCTION_MEAN;
  fit(x, y, &g, p, EFFML_OK);
  ck_assert_double_le(maxdiff(base, p), 1e-5);
  /* scalarization at constant T = 1 is all ones */
  effml_sampler_temperature_schedule ts;
  effml_sampler_temperature_schedule_init(&ts);
  ts.total_steps = 15;
  g = f;
  g.scalarization = &ts;
  fit(x, y, &g, p, EFFML_OK);
  ck_assert_double_le(maxdiff(base, p), 1e-5);

  /* "balanced" equals passing its vector; balanced == scalarization at T = inf under MEAN */
  double bal[3];
  ck_assert_int_eq(effml_train_class_weight_balanced(ctx, y, 3, bal), EFFML_OK);
  for (int k = 0; k < 3; ++k) ((float *)effml_tensor_data(cw))[k] = (float)bal[k];
  float pb[15], pc[15], pt[15];
  g = f;
  g.class_weight_balanced = 1;
  g.reduction = EFFML_TRAIN_REDUCTION_MEAN;
  fit(x, y, &g, pb, EFFML_OK);
  ck_assert_double_ge(maxdiff(base, pb), 1e-3); /* the weights matter */
  g = f;
  g.class_weight = cw;
  g.reduction = EFFML_TRAIN_REDUCTION_MEAN;
  fit(x, y, &g, pc, EFFML_OK);
  ck_assert_double_le(maxdiff(pb, pc), 1e-5);
  ts.t_start = ts.t_end = INFINITY;
  g = f;
  g.scalarization = &ts;
  g.reduction = EFFML_TRAIN_REDUCTION_MEAN;
  fit(x, y, &g, pt, EFFML_OK);
  ck_assert_double_le(maxdiff(pb, pt), 1e-5);

  /* full batch, WEIGHTED_MEAN: weight 2 on a row == the row twice */
  effml_tensor_fill(ctx, sw, 1.0);
  ((double *)effml_tensor_data(sw))[3] = 2.0;
  g = f;
  g.batch_size = 40;
  g.sample_weight = sw;
  fit(x, y, &g, p, EFFML_OK);
  effml_tensor *x2, *y2;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, (int64_t[]){41, 4}, &x2), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, (int64_t[]){41}, &y2), EFFML_OK);
  memcpy(effml_tensor_data(x2), effml_tensor_data(x), 40 * 4 * sizeof(float));
  memcpy((float *)effml_tensor_data(x2) + 160, (float *)effml_tensor_data(x) + 12, 4 * sizeof(float));
  memcpy(effml_tensor_data(y2), effml_tensor_data(y), 40 * sizeof(int32_t));
  ((int32_t *)effml_tensor_data(y2))[40] = ((int32_t *)effml_tensor_data(y))[3];
  g = f;
  g.batch_size = 41;
  fit(x2, y2, &g, pc, EFFML_OK);
  ck_assert_double_le(maxdiff(p, pc), 1e-5);

  /* bad options are errors naming the field */
  g = f;
  g.reduction = 9;
  fit(x, y, &g, NULL, EFFML_E_INVALID_ARG);
  g = f;
  g.class_weight = sw; /* 40 entries for 3 classes */
  fit(x, y, &g, NULL, EFFML_E_SHAPE);
  ((double *)effml_tensor_data(sw))[0] = -1;
  g = f;
  g.sample_weight = sw;
  fit(x, y, &g, NULL, EFFML_E_INVALID_ARG);
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(x2); effml_tensor_free(y2);
  effml_tensor_free(sw); effml_tensor_free(cw);
}
END_TEST


/* ---- zero-weight batches under WEIGHTED_MEAN are skipped (train.h) ---- */

typedef struct skip_log {
  int64_t reports, hooks, last_step;
  int64_t nan_reports;
  double last_loss;
} skip_log;

static void skip_progress(void *u, int64_t epoch, int64_t step, double loss) {
  skip_log *l = u;
  (void)epoch;
  ++l->reports;
  l->last_step = step;
  if (isnan(loss)) ++l->nan_reports;
  else l->last_loss = loss;
}

static int32_t skip_hook(void *u, int64_t step) {
  (void)step;
  ++((skip_log *)u)->hooks;
  return 0;
}

/* A fresh linear model [4 -> 3] from seed 7 trained with AdamW (default lr, weight decay
 * 1e-2: a step with a zero gradient would still move every parameter). */
static void fit_adamw(const effml_tensor *x, const effml_tensor *y, const effml_train_options *f,
                      float out[15], double *loss) {
  effml_context *c2 = tu_ctx(7);
  effml_layer *m = NULL;
  ck_assert_int_eq(effml_layer_dense_create(c2, 4, 3, 1, &m), EFFML_OK);
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  o.algorithm = EFFML_OPTIM_ADAMW;
  o.lr = 0.05;
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_optimizer_create(c2, &o, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(c2, opt, m), EFFML_OK);
  ck_assert_msg(effml_train_classifier(c2, m, opt, x, y, f, loss) == EFFML_OK, "%s",
                effml_context_last_error(c2));
  memcpy(out, effml_tensor_data(effml_layer_param(m, 0)), 12 * sizeof(float));
  memcpy(out + 12, effml_tensor_data(effml_layer_param(m, 1)), 3 * sizeof(float));
  effml_optimizer_free(opt);
  effml_layer_free(m);
  effml_context_free(c2);
}

/* Rows of weight 0 (sample weight 0, or class weight 0 for their label): with batch_size 1
 * (and 2: the nonzero row's partner adds an exact 0 to every gradient) the batches whose
 * weights sum to 0 are skipped (no forward, no step_hook, no optimizer step: AdamW's step
 * count and moments stay put), so training equals training on the nonzero row alone, for
 * any shuffle.  Before, effml_train_classifier failed at the first such batch. */
START_TEST(test_fit_skips_zero_weight_batches) {
  enum { NR = 6, KEEP = 4, EPOCHS = 3 };
  effml_tensor *x = NULL, *y = NULL, *sw = NULL, *cw = NULL, *x1 = NULL, *y1 = NULL, *w1 = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, (int64_t[]){NR, 4}, &x), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, (int64_t[]){NR}, &y), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, (int64_t[]){NR}, &sw), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, (int64_t[]){3}, &cw), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, (int64_t[]){1, 4}, &x1), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, (int64_t[]){1}, &y1), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, (int64_t[]){1}, &w1), EFFML_OK);
  tu_fill_uniform(x, 11, -1, 1);
  int32_t *yp = effml_tensor_data(y);
  const int32_t labels[NR] = {0, 1, 0, 1, 2, 0}; /* row KEEP is the only one of class 2 */
  memcpy(yp, labels, sizeof labels);
  double *swp = effml_tensor_data(sw);
  for (int i = 0; i < NR; ++i) swp[i] = i == KEEP ? 2.0 : 0.0;
  float *cwp = effml_tensor_data(cw);
  cwp[0] = 0.0f, cwp[1] = 0.0f, cwp[2] = 1.0f;
  memcpy(effml_tensor_data(x1), (float *)effml_tensor_data(x) + KEEP * 4, 4 * sizeof(float));
  ((int32_t *)effml_tensor_data(y1))[0] = labels[KEEP];
  effml_tensor_fill(ctx, w1, 1.0);

  /* reference: the one row, EPOCHS steps (weighted path, weight 1) */
  effml_train_options f;
  effml_train_options_init(&f);
  f.epochs = EPOCHS;
  f.batch_size = 1;
  f.sample_weight = w1;
  float ref_p[15], p[15];
  double ref_loss = NAN, loss = NAN;
  fit_adamw(x1, y1, &f, ref_p, &ref_loss);
  ck_assert(isfinite(ref_loss));

  for (int variant = 0; variant < 4; ++variant) {
    skip_log log = {0, 0, 0, 0, NAN};
    effml_train_options g;
    effml_train_options_init(&g);
    g.epochs = EPOCHS;
    g.batch_size = variant < 2 ? 1 : 2;
    g.shuffle_seed = 99 + (uint64_t)variant;
    if (variant % 2 == 0) g.sample_weight = sw; /* weight 2 on row KEEP, 0 elsewhere */
    else g.class_weight = cw;                    /* classes 0 and 1 weigh 0 */
    g.progress = skip_progress;
    g.progress_user_data = &log;
    g.progress_every = 1;
    g.step_hook = skip_hook;
    g.step_hook_user_data = &log;
    fit_adamw(x, y, &g, p, &loss);
    if (variant < 2) { /* one row per batch: the very same arithmetic */
      for (int i = 0; i < 15; ++i)
        ck_assert_msg(p[i] == ref_p[i], "variant %d: param %d %.9g vs %.9g", variant, i,
                      (double)p[i], (double)ref_p[i]);
      ck_assert_double_eq(loss, ref_loss);
    } else { /* a 2-row product may round differently; a zero-gradient AdamW step moves ~lr */
      ck_assert_double_le(maxdiff(p, ref_p), 1e-5);
      ck_assert_double_eq_tol(loss, ref_loss, 1e-5);
    }
    /* every batch counts as a step for progress; skipped ones report NaN (no loss) */
    const int64_t steps = EPOCHS * (NR / g.batch_size);
    ck_assert_int_eq(log.reports, steps);
    ck_assert_int_eq(log.last_step, steps);
    ck_assert_int_eq(log.nan_reports, steps - EPOCHS);
    ck_assert_int_eq(log.hooks, EPOCHS); /* the hook runs only after a backward */
  }

  /* every row weight 0: refused up front, naming the cause */
  effml_tensor_fill(ctx, sw, 0.0);
  effml_train_options g;
  effml_train_options_init(&g);
  g.sample_weight = sw;
  effml_context *c2 = tu_ctx(7);
  effml_layer *m = NULL;
  effml_optimizer *opt = NULL;
  ck_assert_int_eq(effml_layer_dense_create(c2, 4, 3, 1, &m), EFFML_OK);
  effml_optimizer_options oo;
  effml_optimizer_options_init(&oo);
  ck_assert_int_eq(effml_optimizer_create(c2, &oo, &opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(c2, opt, m), EFFML_OK);
  ck_assert_int_eq(effml_train_classifier(c2, m, opt, x, y, &g, NULL), EFFML_E_INVALID_ARG);
  ck_assert_str_eq(effml_context_last_error(c2),
                   "effml_train_classifier: every row weight (sample_weight x class_weight) is "
                   "0: nothing to train on");
  effml_optimizer_free(opt);
  effml_layer_free(m);
  effml_context_free(c2);
  effml_tensor_free(x); effml_tensor_free(y); effml_tensor_free(sw); effml_tensor_free(cw);
  effml_tensor_free(x1); effml_tensor_free(y1); effml_tensor_free(w1);
}
END_TEST

/* The scalarization schedule is applied step by step: full-batch SGD (no state) for 4
 * steps with Cooldown T = inf -> 1 at step 2 equals 2 steps with the "balanced" weights
 * (= T = inf) followed by 2 unweighted steps on the same model. */
static void sgd_model(effml_context **c2, effml_layer **m, effml_optimizer **opt) {
  *c2 = tu_ctx(7);
  ck_assert_int_eq(effml_layer_dense_create(*c2, 4, 3, 1, m), EFFML_OK);
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  o.algorithm = EFFML_OPTIM_SGD;
  o.lr = 0.5;
  o.weight_decay = 0;
  ck_assert_int_eq(effml_optimizer_create(*c2, &o, opt), EFFML_OK);
  ck_assert_int_eq(effml_optimizer_add_layer(*c2, *opt, *m), EFFML_OK);
}

START_TEST(test_fit_cooldown_schedule) {
  effml_tensor *x, *y;
  blobs(40, &x, &y);
  float a[15], b[15];
  effml_context *c2;
  effml_layer *m;
  effml_optimizer *opt;
  /* one call, the schedule switching mid-way */
  sgd_model(&c2, &m, &opt);
  effml_sampler_temperature_schedule ts;
  effml_sampler_temperature_schedule_init(&ts);
  ts.kind = EFFML_SAMPLER_SCHEDULE_COOLDOWN;
  ts.t_start = INFINITY;
  ts.t_end = 1.0;
  ts.total_steps = 4;
  ts.switch_fraction = 0.5;
  effml_train_options f;
  effml_train_options_init(&f);
  f.epochs = 4;
  f.batch_size = 40;
  f.scalarization = &ts;
  f.reduction = EFFML_TRAIN_REDUCTION_MEAN;
  ck_assert_msg(effml_train_classifier(c2, m, opt, x, y, &f, NULL) == EFFML_OK, "%s",
                effml_context_last_error(c2));
  memcpy(a, effml_tensor_data(effml_layer_param(m, 0)), 12 * sizeof(float));
  memcpy(a + 12, effml_tensor_data(effml_layer_param(m, 1)), 3 * sizeof(float));
  effml_optimizer_free(opt);
  effml_layer_free(m);
  effml_context_free(c2);
  /* two calls: balanced weights, then none */
  sgd_model(&c2, &m, &opt);
  effml_train_options_init(&f);
  f.epochs = 2;
  f.batch_size = 40;
  f.class_weight_balanced = 1;
  f.reduction = EFFML_TRAIN_REDUCTION_MEAN;
  ck_assert_int_eq(effml_train_classifier(c2, m, opt, x, y, &f, NULL), EFFML_OK);
  f.class_weight_balanced = 0;
  ck_assert_int_eq(effml_train_classifier(c2, m, opt, x, y, &f, NULL), EFFML_OK);
  memcpy(b, effml_tensor_data(effml_layer_param(m, 0)), 12 * sizeof(float));
  memcpy(b + 12, effml_tensor_data(effml_layer_param(m, 1)), 3 * sizeof(float));
  ck_assert_double_le(maxdiff(a, b), 1e-5);
  /* and it differs from balanced weights throughout */
  f.epochs = 2;
  f.class_weight_balanced = 1;
  ck_assert_int_eq(effml_train_classifier(c2, m, opt, x, y, &f, NULL), EFFML_OK);
  effml_optimizer_free(opt);
  effml_layer_free(m);
  effml_context_free(c2);
  sgd_model(&c2, &m, &opt);
  f.epochs = 4;
  ck_assert_int_eq(effml_train_classifier(c2, m, opt, x, y, &f, NULL), EFFML_OK);
  memcpy(b, effml_tensor_data(effml_layer_param(m, 0)), 12 * sizeof(float));
  memcpy(b + 12, effml_tensor_data(effml_layer_param(m, 1)), 3 * sizeof(float));
  ck_assert_double_ge(maxdiff(a, b), 1e-3);
  effml_optimizer_free(opt);
  effml_layer_free(m);
  effml_context_free(c2);
  effml_tensor_free(x);
  effml_tensor_free(y);
}
END_TEST

int main(void) {
  Suite *s = suite_create("train_weighted");
  TCase *tc = tcase_create("weighted");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_weighted_matches_torch);
  tcase_add_test(tc, test_weighted_finite_differences);
  tcase_add_test(tc, test_weighted_errors);
  tcase_add_test(tc, test_class_weights);
  tcase_add_test(tc, test_scalarization_expected_gradient);
  tcase_add_test(tc, test_fit_weights);
  tcase_add_test(tc, test_fit_cooldown_schedule);
  tcase_add_test(tc, test_fit_skips_zero_weight_batches);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
