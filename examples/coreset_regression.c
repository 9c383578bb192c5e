/* coreset_regression: least-squares (p = 2) and least-absolute-deviations
 * (p = 1) regression of Fashion-MNIST one-hot labels on pooled pixels, solved
 * on the full data and on a 5 % lp sensitivity sample (Woodruff & Yasuda
 * 2023), reporting the relative loss gap and the time.
 *
 *   coreset_regression [--data DIR] [--fraction F] [--seed S]
 *
 * Features: the 28 x 28 image average-pooled to 7 x 7 (49 values) plus a
 * bias column; targets: the 10 one-hot columns.  Scores come from the
 * stacked matrix [pooled X | Y] (its span contains every residual X B - Y,
 * so the sample preserves ||X B - Y||_p for all B):
 * p = 2 leverage scores, p = 1 sensitivity upper bounds from l1 Lewis
 * weights; rows are kept by Bernoulli sampling with weights pi^(-1/p).
 * The weighted problems are solved by normal equations (p = 2) and by
 * iteratively reweighted least squares (p = 1), written out here in plain C.
 * Ends with one JSON line per p. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "effml.h"
#include "example_args.h"

#define D 50 /* 49 pooled pixels + bias */
#define C 10 /* one-hot targets */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Solve (sum_i r_i x_i x_i^T + ridge I) B = sum_i r_i x_i y_i^T over the rows
 * `idx` (NULL: all n) with row weights r (NULL: 1).  Cholesky, D x D. */
static int weighted_ls(const double *x, const double *y, const int64_t *idx, int64_t n,
                       const double *r, double *b) {
  static double G[D * D], R[D * C];
  memset(G, 0, sizeof G);
  memset(R, 0, sizeof R);
  for (int64_t t = 0; t < n; ++t) {
    int64_t i = idx ? idx[t] : t;
    double w = r ? r[t] : 1.0;
    const double *xi = x + i * D, *yi = y + i * C;
    for (int a = 0; a < D; ++a) {
      double wa = w * xi[a];
      for (int c = 0; c <= a; ++c) G[a * D + c] += wa * xi[c];
      for (int c = 0; c < C; ++c) R[a * C + c] += wa * yi[c];
    }
  }
  for (int a = 0; a < D; ++a) G[a * D + a] += 1e-8;
  for (int a = 0; a < D; ++a) { /* G = L L^T in the lower triangle */
    for (int c = 0; c <= a; ++c) {
      double s = G[a * D + c];
      for (int k = 0; k < c; ++k) s -= G[a * D + k] * G[c * D + k];
      if (a == c) {
        if (s <= 0) return -1;
        G[a * D + a] = sqrt(s);
      } else {
        G[a * D + c] = s / G[c * D + c];
      }
    }
  }
  for (int c = 0; c < C; ++c) { /* forward then backward substitution */
    double z[D];
    for (int a = 0; a < D; ++a) {
      double s = R[a * C + c];
      for (int k = 0; k < a; ++k) s -= G[a * D + k] * z[k];
      z[a] = s / G[a * D + a];
    }
    for (int a = D - 1; a >= 0; --a) {
      double s = z[a];
      for (int k = a + 1; k < D; ++k) s -= G[k * D + a] * b[k * C + c];
      b[a * C + c] = s / G[a * D + a];
    }
  }
  return 0;
}

/* Full-data loss sum_i ||x_i B - y_i||_p^p. */
static double loss(const double *x, const double *y, int64_t n, const double *b, double p) {
  double L = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < C; ++c) {
      double e = -y[i * C + c];
      for (int a = 0; a < D; ++a) e += x[i * D + a] * b[a * C + c];
      L += p == 2 ? e * e : fabs(e);
    }
  return L;
}

/* p = 1 by IRLS: weights w_i / max(|residual row|_2, eps) approximate sum w_i ||r_i||_1 row-wise. */
static int irls_l1(const double *x, const double *y, const int64_t *idx, int64_t n,
                   const double *w, double *b, int iters) {
  double *r = malloc((size_t)n * sizeof(double));
  if (!r) return -1;
  for (int64_t t = 0; t < n; ++t) r[t] = w ? w[t] : 1.0;
  int st = weighted_ls(x, y, idx, n, r, b);
  for (int it = 0; it < iters && st == 0; ++it) {
    for (int64_t t = 0; t < n; ++t) {
      int64_t i = idx ? idx[t] : t;
      double s = 0;
      for (int c = 0; c < C; ++c) {
        double e = -y[i * C + c];
        for (int a = 0; a < D; ++a) e += x[i * D + a] * b[a * C + c];
        s += fabs(e);
      }
      r[t] = (w ? w[t] : 1.0) / fmax(s, 1e-6);
    }
    st = weighted_ls(x, y, idx, n, r, b);
  }
  free(r);
  return st;
}

int main(int argc, char **argv) {
  const char *data = NULL;
  double fraction = 0.05;
  uint64_t seed = 1;
  unsigned long long seed_arg = seed;
  const ex_opt opts[] = {
      {"--data", EX_STR, &data, "DIR", "Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)"},
      {"--fraction", EX_F64, &fraction, "F", "expected sample size as a fraction of the rows (default 0.05)"},
      {"--seed", EX_U64, &seed_arg, "S", "seed (default 1)"},
  };
  ex_parse(argc, argv,
           "Least-squares (p = 2) and least-absolute-deviations (p = 1) regression of Fashion-MNIST\n"
           "labels on pooled pixels, on the full data and on an lp sensitivity sample (leverage\n"
           "scores, l1 Lewis weights): relative loss gap and time.  Writes no files.",
           opts, EX_NOPTS(opts));
  seed = (uint64_t)seed_arg;
  effml_context *ctx = NULL;
  effml_context_options co;
  effml_context_options_init(&co);
  co.num_threads = 2;
  if (effml_context_create(&co, &ctx) != EFFML_OK) return 1;
  effml_tensor *img = NULL, *lab = NULL;
  if (effml_data_fashion_mnist_load(ctx, data, EFFML_DATA_SPLIT_TRAIN, &img, &lab) != EFFML_OK) {
    fprintf(stderr, "coreset_regression: %s\n", effml_context_last_error(ctx));
    return 1;
  }
  const int64_t n = effml_tensor_dim(img, 0);
  const float *px = effml_tensor_data_const(img);
  const int32_t *lb = effml_tensor_data_const(lab);
  /* Z = [pooled X | Y]: the bias is the sum of the one-hot columns, so it is
   * left out (Z must have full column rank); span(Z) = span([X, 1, Y]). */
  int64_t zs[2] = {n, D - 1 + C};
  effml_tensor *z = NULL;
  if (effml_tensor_create(ctx, EFFML_F64, 2, zs, &z) != EFFML_OK) return 1;
  double *zp = effml_tensor_data(z);
  double *x = malloc((size_t)(n * D) * sizeof(double)), *y = malloc((size_t)(n * C) * sizeof(double));
  for (int64_t i = 0; i < n; ++i) {
    for (int by = 0; by < 7; ++by)
      for (int bx = 0; bx < 7; ++bx) {
        double s = 0;
        for (int u = 0; u < 4; ++u)
          for (int v = 0; v < 4; ++v) s += px[i * 784 + (by * 4 + u) * 28 + bx * 4 + v];
        x[i * D + by * 7 + bx] = s / 16.0;
      }
    x[i * D + 49] = 1.0;
    for (int c = 0; c < C; ++c) y[i * C + c] = lb[i] == c;
    memcpy(zp + i * (D - 1 + C), x + i * D, (D - 1) * sizeof(double));
    memcpy(zp + i * (D - 1 + C) + D - 1, y + i * C, C * sizeof(double));
  }
  printf("Fashion-MNIST train: %lld rows, %d features (7x7 pooled + bias), %d targets; sample %.0f%%\n",
         (long long)n, D, C, 100 * fraction);
  printf("%-4s %12s %12s %10s %9s %9s %9s  (sample s = scores + sampling + solve)\n", "p",
         "full loss", "sample loss", "gap", "rows", "full s", "sample s");
  for (int k = 0; k < 2; ++k) {
    double p = k == 0 ? 2.0 : 1.0;
    static double bf[D * C], bs[D * C];
    double t0 = now();
    int st = p == 2 ? weighted_ls(x, y, NULL, n, NULL, bf) : irls_l1(x, y, NULL, n, NULL, bf, 30);
    double t_full = now() - t0;
    /* sample: scores, Bernoulli rows, weighted solve */
    t0 = now();
    effml_tensor *s = NULL, *idx = NULL, *w = NULL;
    effml_sampler_leverage_options lo;
    effml_sampler_leverage_options_init(&lo);
    lo.tol = 1e-6; /* Lewis weights to 1e-6 in log: ample for sampling */
    effml_status es = p == 2 ? effml_sampler_leverage_scores(ctx, &lo, z, &s)
                             : effml_sampler_sensitivity_upper_bounds(ctx, &lo, z, 1.0, &s);
    if (es == EFFML_OK)
      es = effml_sampler_sensitivity_sample(ctx, s, fraction * (double)n, p, EFFML_SAMPLER_DRAW_BERNOULLI, seed, &idx, &w);
    if (es != EFFML_OK || st != 0) {
      fprintf(stderr, "coreset_regression: %s\n", es != EFFML_OK ? effml_context_last_error(ctx) : "solve failed");
      return 1;
    }
    const int64_t m = effml_tensor_dim(idx, 0);
    const int64_t *ip = effml_tensor_data_const(idx);
    const double *wp = effml_tensor_data_const(w);
    double *wr = malloc((size_t)m * sizeof(double));
    for (int64_t t = 0; t < m; ++t) wr[t] = pow(wp[t], p); /* sum w^p |r|^p estimates the full loss */
    st = p == 2 ? weighted_ls(x, y, ip, m, wr, bs) : irls_l1(x, y, ip, m, wr, bs, 30);
    double t_sample = now() - t0;
    double lf = loss(x, y, n, bf, p), ls = loss(x, y, n, bs, p);
    printf("%-4g %12.2f %12.2f %9.3f%% %9lld %9.3f %9.3f\n", p, lf, ls, 100 * (ls - lf) / lf,
           (long long)m, t_full, t_sample);
    printf("{\"example\":\"coreset_regression\",\"p\":%g,\"rows\":%lld,\"sample_rows\":%lld,"
           "\"full_loss\":%.6g,\"sample_loss\":%.6g,\"relative_gap\":%.6g,\"full_s\":%.4g,"
           "\"sample_s\":%.4g}\n",
           p, (long long)n, (long long)m, lf, ls, (ls - lf) / lf, t_full, t_sample);
    free(wr);
    effml_tensor_free(s);
    effml_tensor_free(idx);
    effml_tensor_free(w);
    if (st != 0) return 1;
  }
  free(x);
  free(y);
  effml_tensor_free(z);
  effml_tensor_free(img);
  effml_tensor_free(lab);
  effml_context_free(ctx);
  return 0;
}
