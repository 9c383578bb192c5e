/* Re-sampling (SMOTE family, under-sampling, cleaning) and exact kNN against
 * imbalanced-learn 0.10 / scikit-learn 1.2 references (tests/ref/sampler_ref.py). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "effml.h"

/* Load tests/data/<name> as x [n, d] (dtype f32 or f64) and y [n] i64. */
static void st_load_csv(effml_context *ctx, const char *name, int32_t dtype,
                               effml_tensor **x, effml_tensor **y) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", EFFML_TEST_DATA, name);
  FILE *f = fopen(path, "r");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  long long n = 0, d = 0;
  ck_assert_int_eq(fscanf(f, "%lld,%lld", &n, &d), 2);
  int c;
  while ((c = fgetc(f)) != '\n' && c != EOF) {
  }
  int64_t xs[2] = {n, d};
  ck_assert_int_eq(effml_tensor_create(ctx, dtype, 2, xs, x), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, xs, y), EFFML_OK);
  int64_t *yl = (int64_t *)effml_tensor_data(*y);
  for (long long i = 0; i < n; ++i) {
    for (long long j = 0; j < d; ++j) {
      double v;
      ck_assert_int_eq(fscanf(f, "%lf,", &v), 1);
      if (dtype == EFFML_F64)
        ((double *)effml_tensor_data(*x))[i * d + j] = v;
      else
        ((float *)effml_tensor_data(*x))[i * d + j] = (float)v;
    }
    double lab;
    ck_assert_int_eq(fscanf(f, "%lf", &lab), 1);
    yl[i] = (int64_t)lab;
  }
  fclose(f);
}

/* Read tests/ref/<name> into a malloc'd NUL-terminated string. */
static char *st_read_ref(const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", EFFML_TEST_REF, name);
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = (char *)malloc((size_t)len + 1);
  ck_assert_ptr_nonnull(s);
  ck_assert_int_eq((long)fread(s, 1, (size_t)len, f), len);
  s[len] = 0;
  fclose(f);
  return s;
}

/* Find the line starting with `key ` in text; return a pointer after the key (or NULL). */
static const char *st_find_line(const char *text, const char *key) {
  size_t kl = strlen(key);
  const char *p = text;
  while (p && *p) {
    if (strncmp(p, key, kl) == 0 && p[kl] == ' ') return p + kl + 1;
    p = strchr(p, '\n');
    if (p) ++p;
  }
  return NULL;
}

/* Parse up to `max` integers from a line (stops at newline). */
static int64_t st_parse_ints(const char *p, int64_t *out, int64_t max) {
  int64_t n = 0;
  while (p && *p && *p != '\n' && n < max) {
    char *end;
    long long v = strtoll(p, &end, 10);
    if (end == p) break;
    out[n++] = v;
    p = end;
    while (*p == ' ') ++p;
  }
  return n;
}


static const int64_t *i64p(const effml_tensor *t) { return (const int64_t *)effml_tensor_data_const(t); }
static const double *f64p(const effml_tensor *t) { return (const double *)effml_tensor_data_const(t); }

static effml_tensor *make_y(effml_context *ctx, const int64_t *counts, int64_t nc) {
  int64_t n = 0;
  for (int64_t c = 0; c < nc; ++c) n += counts[c];
  effml_tensor *y = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, &n, &y), EFFML_OK);
  int64_t *p = (int64_t *)effml_tensor_data(y), r = 0;
  for (int64_t c = 0; c < nc; ++c)
    for (int64_t i = 0; i < counts[c]; ++i) p[r++] = c;
  return y;
}

static effml_tensor *make_x_random(effml_context *ctx, int64_t n, int64_t d, uint64_t seed) {
  int64_t s[2] = {n, d};
  effml_tensor *x = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, s, &x), EFFML_OK);
  double *p = (double *)effml_tensor_data(x);
  uint64_t z = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (int64_t i = 0; i < n * d; ++i) {
    z = z * 6364136223846793005ULL + 1442695040888963407ULL;
    p[i] = (double)(z >> 11) * 0x1.0p-53 * 2.0 - 1.0;
  }
  return x;
}

/* ---- sampling_strategy anchors ---- */
START_TEST(test_strategy_reference) {
  effml_context *ctx = tu_ctx(0);
  char *ref = st_read_ref("sampler_strategy.txt");
  char *save = NULL;
  int lines = 0;
  for (char *line = strtok_r(ref, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char fam[16], strat[64];
    int nc, used;
    ck_assert_int_eq(sscanf(line, "%15s %63s %d%n", fam, strat, &nc, &used), 3);
    effml_sampler_resample_options o;
    effml_sampler_resample_options_init(&o);
    o.method = strcmp(fam, "over") == 0 ? EFFML_SAMPLER_RESAMPLE_RANDOM_OVER : EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER;
    int64_t tl[2] = {1, 2}, tc[2] = {7, 2};
    if (strcmp(strat, "auto") == 0) o.sampling_strategy = EFFML_SAMPLER_STRATEGY_AUTO;
    else if (strcmp(strat, "minority") == 0) o.sampling_strategy = EFFML_SAMPLER_STRATEGY_MINORITY;
    else if (strcmp(strat, "majority") == 0) o.sampling_strategy = EFFML_SAMPLER_STRATEGY_MAJORITY;
    else if (strcmp(strat, "not_minority") == 0) o.sampling_strategy = EFFML_SAMPLER_STRATEGY_NOT_MINORITY;
    else if (strcmp(strat, "not_majority") == 0) o.sampling_strategy = EFFML_SAMPLER_STRATEGY_NOT_MAJORITY;
    else if (strcmp(strat, "all") == 0) o.sampling_strategy = EFFML_SAMPLER_STRATEGY_ALL;
    else if (strcmp(strat, "targets") == 0) {
      o.sampling_strategy = EFFML_SAMPLER_STRATEGY_TARGETS;
      o.n_targets = 2;
      o.target_labels = tl;
      o.target_counts = tc;
    } else {
      ck_assert(strncmp(strat, "ratio=", 6) == 0);
      o.sampling_strategy = EFFML_SAMPLER_STRATEGY_RATIO;
      o.ratio = atof(strat + 6);
    }
    int64_t c3[3] = {10, 4, 2}, c2[2] = {100, 28};
    effml_tensor *y = nc == 3 ? make_y(ctx, c3, 3) : make_y(ctx, c2, 2);
    effml_tensor *labels = NULL, *values = NULL;
    ck_assert_msg(effml_sampler_strategy_resolve(ctx, &o, y, &labels, &values) == EFFML_OK, "%s: %s",
                  line, effml_context_last_error(ctx));
    int64_t expect[3] = {-1, -1, -1};
    const char *p = line + used;
    int lab, val, k;
    while (sscanf(p, " %d:%d%n", &lab, &val, &k) == 2) {
      expect[lab] = val;
      p += k;
    }
    ck_assert_int_eq(effml_tensor_dim(values, 0), nc);
    for (int c = 0; c < nc; ++c) {
      ck_assert_int_eq(i64p(labels)[c], c);
      ck_assert_msg(i64p(values)[c] == expect[c], "%s: class %d got %lld", line, c,
                    (long long)i64p(values)[c]);
    }
    effml_tensor_free(labels);
    effml_tensor_free(values);
    effml_tensor_free(y);
    ++lines;
  }
  ck_assert_int_ge(lines, 17);
  free(ref);
  effml_context_free(ctx);
}
END_TEST

/* Ties for majority/minority go to the first label; float ratio rounding is robust (#1215). */
START_TEST(test_strategy_ties_and_rounding) {
  effml_context *ctx = tu_ctx(0);
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  int64_t c[3] = {5, 5, 3};
  effml_tensor *y = make_y(ctx, c, 3), *l = NULL, *v = NULL;
  ck_assert_int_eq(effml_sampler_strategy_resolve(ctx, &o, y, &l, &v), EFFML_OK);
  ck_assert_int_eq(i64p(v)[0], -1);
  ck_assert_int_eq(i64p(v)[1], 0);
  ck_assert_int_eq(i64p(v)[2], 2);
  effml_tensor_free(l);
  effml_tensor_free(v);
  effml_tensor_free(y);
  /* 100 * 0.29 = 28.999999999999996 in floating point: imblearn gives 0 and raises. */
  int64_t c2[2] = {100, 28};
  y = make_y(ctx, c2, 2);
  o.sampling_strategy = EFFML_SAMPLER_STRATEGY_RATIO;
  o.ratio = 0.29;
  ck_assert_int_eq(effml_sampler_strategy_resolve(ctx, &o, y, &l, &v), EFFML_OK);
  ck_assert_int_eq(i64p(v)[1], 1);
  effml_tensor_free(l);
  effml_tensor_free(v);
  /* a ratio that would remove minority samples */
  o.ratio = 0.28;
  l = v = NULL;
  ck_assert_int_eq(effml_sampler_strategy_resolve(ctx, &o, y, &l, &v), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(l);
  ck_assert(strstr(effml_context_last_error(ctx), "removing samples") != NULL);
  o.ratio = 1.5;
  ck_assert_int_eq(effml_sampler_strategy_resolve(ctx, &o, y, &l, &v), EFFML_E_INVALID_ARG);
  o.sampling_strategy = EFFML_SAMPLER_STRATEGY_MAJORITY;
  ck_assert_int_eq(effml_sampler_strategy_resolve(ctx, &o, y, &l, &v), EFFML_E_INVALID_ARG);
  o.method = EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER;
  o.sampling_strategy = EFFML_SAMPLER_STRATEGY_MINORITY;
  ck_assert_int_eq(effml_sampler_strategy_resolve(ctx, &o, y, &l, &v), EFFML_E_INVALID_ARG);
  /* labels not in the target dict, counts below the class size */
  int64_t tl[1] = {7}, tc[1] = {200};
  o.method = EFFML_SAMPLER_RESAMPLE_SMOTE;
  o.sampling_strategy = EFFML_SAMPLER_STRATEGY_TARGETS;
  o.n_targets = 1;
  o.target_labels = tl;
  o.target_counts = tc;
  ck_assert_int_eq(effml_sampler_strategy_resolve(ctx, &o, y, &l, &v), EFFML_E_INVALID_ARG);
  ck_assert(strstr(effml_context_last_error(ctx), "=7") != NULL);
  tl[0] = 1;
  tc[0] = 10;
  ck_assert_int_eq(effml_sampler_strategy_resolve(ctx, &o, y, &l, &v), EFFML_E_INVALID_ARG);
  ck_assert(strstr(effml_context_last_error(ctx), "class 1") != NULL);
  o.method = EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER;
  ck_assert_int_eq(effml_sampler_strategy_resolve(ctx, &o, y, &l, &v), EFFML_OK);
  ck_assert_int_eq(i64p(v)[0], -1);
  ck_assert_int_eq(i64p(v)[1], 10);
  effml_tensor_free(l);
  effml_tensor_free(v);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* The class counts behind the strategy, read straight from y (<= 256 classes)
 * or through the full class table (more): i32 and i64 labels, negative,
 * in no order, against a direct count. */
START_TEST(test_strategy_counts_many_classes) {
  effml_context *ctx = tu_ctx(0);
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  for (int64_t ncls = 3; ncls <= 300; ncls += 297)
    for (int wide = 0; wide <= 1; ++wide) {
      const int64_t n = 20000;
      effml_tensor *y = NULL, *l = NULL, *v = NULL;
      ck_assert_int_eq(effml_tensor_create(ctx, wide ? EFFML_I64 : EFFML_I32, 1, &n, &y), EFFML_OK);
      int64_t cnt[300] = {0};
      for (int64_t i = 0; i < n; ++i) {
        int64_t k = (i * 7919 + (i * i) % 13) % ncls; /* uneven counts, no order */
        cnt[k]++;
        int64_t lab = 3 * k - 100;
        if (wide)
          ((int64_t *)effml_tensor_data(y))[i] = lab;
        else
          ((int32_t *)effml_tensor_data(y))[i] = (int32_t)lab;
      }
      ck_assert_int_eq(effml_sampler_strategy_resolve(ctx, &o, y, &l, &v), EFFML_OK);
      ck_assert_int_eq(effml_tensor_shape(l)[0], ncls);
      int64_t maj = 0;
      for (int64_t k = 1; k < ncls; ++k)
        if (cnt[k] > cnt[maj]) maj = k;
      for (int64_t k = 0; k < ncls; ++k) {
        ck_assert_int_eq(i64p(l)[k], 3 * k - 100);
        ck_assert_int_eq(i64p(v)[k], k == maj ? -1 : cnt[maj] - cnt[k]);
      }
      effml_tensor_free(l);
      effml_tensor_free(v);
      effml_tensor_free(y);
    }
  effml_context_free(ctx);
}
END_TEST

/* The finiteness check of x runs split over threads in blocks: the error
 * names the first non-finite value in row-major order wherever it lies
 * (another block, another thread's share, the tail), for f64 and f32 x. */
START_TEST(test_resample_first_nonfinite) {
  effml_context *ctx = tu_ctx(0);
  ck_assert_int_eq(effml_context_set_num_threads(ctx, 2), EFFML_OK);
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  o.k_neighbors = 3;
  const int64_t n = 20001, d = 3;
  int64_t xs[2] = {n, d};
  effml_tensor *y = NULL, *xr = NULL, *yr = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, &n, &y), EFFML_OK);
  for (int64_t i = 0; i < n; ++i) ((int64_t *)effml_tensor_data(y))[i] = i % 7 == 0;
  for (int f32 = 0; f32 <= 1; ++f32) {
    effml_tensor *x = NULL;
    ck_assert_int_eq(effml_tensor_create(ctx, f32 ? EFFML_F32 : EFFML_F64, 2, xs, &x), EFFML_OK);
    const struct { int64_t at[3]; double v[3]; const char *msg; } cases[] = {
        {{15000 * 3 + 1, 17000 * 3, 19999 * 3 + 2}, {NAN, INFINITY, -INFINITY}, "row 15000, column 1"},
        {{20000 * 3 + 2, -1, -1}, {-INFINITY, 0, 0}, "row 20000, column 2"},
        {{3, 12000 * 3, -1}, {INFINITY, NAN, 0}, "row 1, column 0"},
    };
    for (int c = 0; c < 3; ++c) {
      for (int64_t i = 0; i < n * d; ++i) {
        if (f32) ((float *)effml_tensor_data(x))[i] = (float)(i % 11);
        else ((double *)effml_tensor_data(x))[i] = (double)(i % 11);
      }
      for (int t = 0; t < 3; ++t) {
        if (cases[c].at[t] < 0) continue;
        if (f32) ((float *)effml_tensor_data(x))[cases[c].at[t]] = (float)cases[c].v[t];
        else ((double *)effml_tensor_data(x))[cases[c].at[t]] = cases[c].v[t];
      }
      ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_E_NUMERIC);
      ck_assert_msg(strstr(effml_context_last_error(ctx), cases[c].msg) != NULL, "%s: %s",
                    cases[c].msg, effml_context_last_error(ctx));
    }
    effml_tensor_free(x);
  }
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* ---- exact kNN ---- */
static void check_knn_file(const char *csv, const char *ref_name, int threads) {
  effml_context *ctx = tu_ctx(0);
  ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
  effml_tensor *x, *y, *idx = NULL, *dist = NULL;
  st_load_csv(ctx, csv, EFFML_F64, &x, &y);
  ck_assert_int_eq(effml_sampler_knn(ctx, x, NULL, 5, &idx, &dist), EFFML_OK);
  char *ref = st_read_ref(ref_name);
  const char *p = ref;
  int64_t n = effml_tensor_dim(x, 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t e[5];
    ck_assert_int_eq(st_parse_ints(p, e, 5), 5);
    for (int t = 0; t < 5; ++t)
      ck_assert_msg(i64p(idx)[i * 5 + t] == e[t], "%s row %lld neighbour %d: %lld vs %lld", csv,
                    (long long)i, t, (long long)i64p(idx)[i * 5 + t], (long long)e[t]);
    for (int t = 1; t < 5; ++t) ck_assert(f64p(dist)[i * 5 + t] >= f64p(dist)[i * 5 + t - 1]);
    p = strchr(p, '\n') + 1;
  }
  free(ref);
  effml_tensor_free(idx);
  effml_tensor_free(dist);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}

START_TEST(test_knn_breast_cancer) { check_knn_file("breast_cancer.csv", "sampler_knn_breast_cancer.txt", 1); check_knn_file("breast_cancer.csv", "sampler_knn_breast_cancer.txt", 3); }
END_TEST
START_TEST(test_knn_wine) { check_knn_file("wine.csv", "sampler_knn_wine.txt", 2); }
END_TEST

/* Exact duplicates: never self, duplicates first (distance 0), ties by index. */
START_TEST(test_knn_duplicates) {
  effml_context *ctx = tu_ctx(0);
  double v[] = {1, 2, 1, 2, 1, 2, 5, 5};
  int64_t s[2] = {4, 2};
  effml_tensor *x = NULL, *idx = NULL, *dist = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, s, &x), EFFML_OK);
  memcpy(effml_tensor_data(x), v, sizeof v);
  ck_assert_int_eq(effml_sampler_knn(ctx, x, NULL, 3, &idx, &dist), EFFML_OK);
  const int64_t e[4][3] = {{1, 2, 3}, {0, 2, 3}, {0, 1, 3}, {0, 1, 2}};
  for (int i = 0; i < 4; ++i)
    for (int t = 0; t < 3; ++t) ck_assert_int_eq(i64p(idx)[i * 3 + t], e[i][t]);
  ck_assert(f64p(dist)[0] == 0.0 && f64p(dist)[1] == 0.0);
  effml_tensor_free(idx);
  /* bad k */
  idx = NULL;
  ck_assert_int_eq(effml_sampler_knn(ctx, x, NULL, 4, &idx, NULL), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(idx);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx),
                               "k=4 must be in [1, 3]: x_ref has 4 rows and a point is not its own neighbour"));
  ck_assert_int_eq(effml_sampler_knn(ctx, x, NULL, 0, &idx, NULL), EFFML_E_INVALID_ARG);
  {
    /* 100 rows: k up to 99 (no cap beyond the rows; the search once stopped at 60) equals a
     * brute-force search by (exact squared distance, index) -- integer coordinates, many ties */
    int64_t s100[2] = {100, 2};
    effml_tensor *x100 = NULL;
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, s100, &x100), EFFML_OK);
    for (int i = 0; i < 200; ++i) ((double *)effml_tensor_data(x100))[i] = (double)(i * 7 % 13);
    ck_assert_int_eq(effml_sampler_knn(ctx, x100, NULL, 100, &idx, NULL), EFFML_E_INVALID_ARG);
    ck_assert_msg(strstr(effml_context_last_error(ctx), "k=100 must be in [1, 99]"), "%s",
                  effml_context_last_error(ctx));
    const double *xv = (const double *)effml_tensor_data(x100);
    for (int64_t kk = 61; kk <= 99; kk += 38) {
      ck_assert_int_eq(effml_sampler_knn(ctx, x100, NULL, kk, &idx, NULL), EFFML_OK);
      const int64_t *got = (const int64_t *)effml_tensor_data(idx);
      for (int64_t i = 0; i < 100; ++i) {
        int64_t ord[99], m = 0;
        double dd[100];
        for (int64_t j = 0; j < 100; ++j) {
          if (j == i) continue;
          double a = xv[i * 2] - xv[j * 2], b2 = xv[i * 2 + 1] - xv[j * 2 + 1];
          dd[j] = a * a + b2 * b2;
          int64_t p = m++;
          while (p > 0 && (dd[ord[p - 1]] > dd[j] || (dd[ord[p - 1]] == dd[j] && ord[p - 1] > j))) {
            ord[p] = ord[p - 1];
            --p;
          }
          ord[p] = j;
        }
        for (int64_t t = 0; t < kk; ++t) ck_assert_int_eq(got[i * kk + t], ord[t]);
      }
      effml_tensor_free(idx);
      idx = NULL;
    }
    effml_tensor_free(x100);
  }
  ck_assert_int_eq(effml_sampler_knn(ctx, x, x, 4, &idx, NULL), EFFML_OK); /* query set: self allowed */
  ck_assert_int_eq(i64p(idx)[0], 0);
  effml_tensor_free(idx);
  effml_tensor_free(dist);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

/* ---- SMOTE ---- */
static int64_t strategy_of(const char *s) {
  if (!strcmp(s, "auto")) return EFFML_SAMPLER_STRATEGY_AUTO;
  if (!strcmp(s, "minority")) return EFFML_SAMPLER_STRATEGY_MINORITY;
  if (!strcmp(s, "not_minority")) return EFFML_SAMPLER_STRATEGY_NOT_MINORITY;
  if (!strcmp(s, "all")) return EFFML_SAMPLER_STRATEGY_ALL;
  return EFFML_SAMPLER_STRATEGY_NOT_MAJORITY;
}

/* k neighbours of `row` within rows of the same class (by effml_sampler_knn on the class). */
static int in_class_neighbours(const double *x, const int64_t *y, int64_t n, int64_t d, int64_t k,
                               int64_t row, int64_t cand) {
  /* brute force: k-th smallest distance within the class, self excluded */
  double *dd = malloc((size_t)n * sizeof(double));
  int64_t m = 0;
  double dc = -1;
  for (int64_t j = 0; j < n; ++j) {
    if (j == row || y[j] != y[row]) continue;
    double s = 0;
    for (int64_t t = 0; t < d; ++t) s += (x[row * d + t] - x[j * d + t]) * (x[row * d + t] - x[j * d + t]);
    dd[m++] = s;
    if (j == cand) dc = s;
  }
  int64_t smaller = 0;
  for (int64_t j = 0; j < m; ++j) smaller += dd[j] < dc;
  free(dd);
  return dc >= 0 && smaller < k;
}

START_TEST(test_smote_counts_order_segments) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x, *y;
  st_load_csv(ctx, "wine.csv", EFFML_F64, &x, &y);
  const int64_t n = effml_tensor_dim(x, 0), d = effml_tensor_dim(x, 1);
  char *ref = st_read_ref("sampler_smote_counts.txt");
  char *save = NULL;
  for (char *line = strtok_r(ref, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char strat[32];
    long long total;
    int used;
    ck_assert_int_eq(sscanf(line, "%31s %lld%n", strat, &total, &used), 2);
    effml_sampler_resample_options o;
    effml_sampler_resample_options_init(&o);
    o.sampling_strategy = (int32_t)strategy_of(strat);
    o.seed = 7;
    effml_tensor *b = NULL, *nb = NULL, *st = NULL, *xr = NULL, *yr = NULL;
    ck_assert_msg(effml_sampler_resample_plan(ctx, &o, x, y, &b, &nb, &st) == EFFML_OK, "%s",
                  effml_context_last_error(ctx));
    ck_assert_int_eq(effml_sampler_resample_apply(ctx, x, y, b, nb, st, &xr, &yr), EFFML_OK);
    ck_assert_int_eq(effml_tensor_dim(yr, 0), total);
    /* originals first, unchanged */
    ck_assert_int_eq(memcmp(effml_tensor_data(xr), effml_tensor_data(x), (size_t)(n * d) * sizeof(double)), 0);
    /* synthetic blocks by ascending label with the reference counts */
    const int64_t *yo = i64p(yr);
    int64_t r = n, lab, cnt;
    const char *p = line + used;
    int k;
    long long a, bb;
    while (sscanf(p, " %lld:%lld%n", &a, &bb, &k) == 2) {
      lab = a;
      cnt = bb;
      for (int64_t t = 0; t < cnt; ++t, ++r) ck_assert_int_eq(yo[r], lab);
      p += k;
    }
    ck_assert_int_eq(r, total);
    /* every synthetic point on the segment from its base to one of the base's 5 class neighbours */
    const double *xs = f64p(x), *xo = f64p(xr), *s = f64p(st);
    for (r = n; r < total; ++r) {
      int64_t i = i64p(b)[r], j = i64p(nb)[r];
      ck_assert(s[r] >= 0.0 && s[r] < 1.0);
      ck_assert(in_class_neighbours(xs, i64p(y), n, d, 5, i, j));
      for (int64_t t = 0; t < d; ++t)
        ck_assert(fabs(xo[r * d + t] - (xs[i * d + t] + s[r] * (xs[j * d + t] - xs[i * d + t]))) <= 1e-12 * (1 + fabs(xs[i * d + t])));
    }
    effml_tensor_free(b);
    effml_tensor_free(nb);
    effml_tensor_free(st);
    effml_tensor_free(xr);
    effml_tensor_free(yr);
  }
  free(ref);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

static void plan_for(effml_context *ctx, const effml_sampler_resample_options *o, const effml_tensor *x,
                     const effml_tensor *y, effml_tensor **b, effml_tensor **nb, effml_tensor **s) {
  ck_assert_msg(effml_sampler_resample_plan(ctx, o, x, y, b, nb, s) == EFFML_OK, "%s",
                effml_context_last_error(ctx));
}

START_TEST(test_same_seed_any_threads) {
  int32_t methods[] = {EFFML_SAMPLER_RESAMPLE_SMOTE, EFFML_SAMPLER_RESAMPLE_BORDERLINE1, EFFML_SAMPLER_RESAMPLE_BORDERLINE2,
                       EFFML_SAMPLER_RESAMPLE_ADASYN, EFFML_SAMPLER_RESAMPLE_RANDOM_OVER, EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER,
                       EFFML_SAMPLER_RESAMPLE_TOMEK, EFFML_SAMPLER_RESAMPLE_ENN};
  effml_context *c1 = tu_ctx(0), *c3 = tu_ctx(99);
  ck_assert_int_eq(effml_context_set_num_threads(c3, 3), EFFML_OK);
  effml_tensor *x, *y;
  st_load_csv(c1, "breast_cancer.csv", EFFML_F64, &x, &y);
  for (size_t m = 0; m < sizeof methods / sizeof methods[0]; ++m) {
    effml_sampler_resample_options o;
    effml_sampler_resample_options_init(&o);
    o.method = methods[m];
    o.seed = 1234;
    o.block_rows = 37; /* many blocks, split over the threads */
    effml_tensor *b1, *n1, *s1, *b3, *n3, *s3;
    plan_for(c1, &o, x, y, &b1, &n1, &s1);
    plan_for(c3, &o, x, y, &b3, &n3, &s3);
    int64_t len = effml_tensor_dim(b1, 0);
    ck_assert_int_eq(effml_tensor_dim(b3, 0), len);
    ck_assert_int_eq(memcmp(i64p(b1), i64p(b3), (size_t)len * 8), 0);
    ck_assert_int_eq(memcmp(i64p(n1), i64p(n3), (size_t)len * 8), 0);
    ck_assert_int_eq(memcmp(f64p(s1), f64p(s3), (size_t)len * 8), 0);
    /* a different seed changes the synthetic rows of SMOTE */
    if (methods[m] == EFFML_SAMPLER_RESAMPLE_SMOTE) {
      effml_tensor *b2, *n2, *s2;
      o.seed = 1235;
      plan_for(c1, &o, x, y, &b2, &n2, &s2);
      ck_assert(memcmp(f64p(s1), f64p(s2), (size_t)len * 8) != 0);
      effml_tensor_free(b2);
      effml_tensor_free(n2);
      effml_tensor_free(s2);
    }
    effml_tensor_free(b1);
    effml_tensor_free(n1);
    effml_tensor_free(s1);
    effml_tensor_free(b3);
    effml_tensor_free(n3);
    effml_tensor_free(s3);
  }
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(c1);
  effml_context_free(c3);
}
END_TEST

/* f32 stays f32; i32 labels stay i32; integer features are refused. */
START_TEST(test_dtypes) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x, *y, *xr = NULL, *yr = NULL, *y32 = NULL, *xi = NULL;
  st_load_csv(ctx, "wine.csv", EFFML_F32, &x, &y);
  ck_assert_int_eq(effml_tensor_convert(ctx, y, EFFML_I32, &y32), EFFML_OK);
  ck_assert_int_eq(effml_sampler_resample(ctx, NULL, x, y32, &xr, &yr), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dtype(xr), EFFML_F32);
  ck_assert_int_eq(effml_tensor_dtype(yr), EFFML_I32);
  ck_assert_int_eq(effml_tensor_dim(xr, 0), 213);
  effml_tensor_free(xr);
  effml_tensor_free(yr);
  xr = yr = NULL;
  ck_assert_int_eq(effml_tensor_convert(ctx, x, EFFML_I32, &xi), EFFML_OK);
  ck_assert_int_eq(effml_sampler_resample(ctx, NULL, xi, y, &xr, &yr), EFFML_E_DTYPE);
  ck_assert_ptr_null(xr);
  ck_assert_int_eq(effml_sampler_resample(ctx, NULL, x, x, &xr, &yr), EFFML_E_SHAPE);
  effml_tensor_free(xi);
  effml_tensor_free(y32);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_bad_input) {
  effml_context *ctx = tu_ctx(0);
  int64_t c[2] = {10, 5};
  effml_tensor *y = make_y(ctx, c, 2), *x = make_x_random(ctx, 15, 3, 1);
  effml_tensor *xr = NULL, *yr = NULL;
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  /* k_neighbors >= class size names the class and the counts */
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_E_INVALID_ARG);
  ck_assert_str_eq(effml_context_last_error(ctx), "effml_sampler_resample: k_neighbors=5 needs at least 6 samples of class 1, got 5");
  ck_assert_ptr_null(xr);
  ck_assert_ptr_null(yr);
  o.k_neighbors = 4; /* n_c = k + 1 works */
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(yr, 0), 20);
  effml_tensor_free(xr);
  effml_tensor_free(yr);
  xr = yr = NULL;
  o.k_neighbors = 0;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_E_INVALID_ARG);
  o.k_neighbors = 4;
  o.method = 42;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_E_INVALID_ARG);
  o.method = EFFML_SAMPLER_RESAMPLE_SMOTE;
  /* NaN / inf */
  ((double *)effml_tensor_data(x))[7] = NAN;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_E_NUMERIC);
  ck_assert(strstr(effml_context_last_error(ctx), "row 2") != NULL);
  /* random samplers accept NaN */
  o.method = EFFML_SAMPLER_RESAMPLE_RANDOM_OVER;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_OK);
  effml_tensor_free(xr);
  effml_tensor_free(yr);
  xr = yr = NULL;
  o.method = EFFML_SAMPLER_RESAMPLE_SMOTE;
  ((double *)effml_tensor_data(x))[7] = INFINITY;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_E_NUMERIC);
  ((double *)effml_tensor_data(x))[7] = 0.5;
  /* a single class */
  int64_t c1[1] = {15};
  effml_tensor *y1 = make_y(ctx, c1, 1);
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y1, &xr, &yr), EFFML_E_INVALID_ARG);
  ck_assert(strstr(effml_context_last_error(ctx), "1 class") != NULL);
  /* NULLs and mismatched lengths */
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, NULL, y, &xr, &yr), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, NULL, &yr), EFFML_E_INVALID_ARG);
  int64_t c4[2] = {10, 4};
  effml_tensor *y14 = make_y(ctx, c4, 2);
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y14, &xr, &yr), EFFML_E_SHAPE);
  /* bad struct_size */
  effml_sampler_resample_options bad = o;
  bad.struct_size = 3;
  ck_assert_int_eq(effml_sampler_resample(ctx, &bad, x, y, &xr, &yr), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(xr);
  /* ADASYN on separated classes: nothing to learn from */
  double sep[] = {0, 0, 0.1, 0, 0, 0.1, 0.1, 0.1, 0.05, 0.05, 0.02, 0.03, 0.07, 0.02,
                  10, 10, 10.1, 10, 10, 10.1, 10.1, 10.1, 10.05, 10.05};
  int64_t s2[2] = {12, 2};
  effml_tensor *xs = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, s2, &xs), EFFML_OK);
  memcpy(effml_tensor_data(xs), sep, sizeof sep);
  int64_t cs[2] = {7, 5};
  effml_tensor *ys = make_y(ctx, cs, 2);
  o.method = EFFML_SAMPLER_RESAMPLE_ADASYN;
  o.k_neighbors = 3;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, xs, ys, &xr, &yr), EFFML_E_NUMERIC);
  ck_assert(strstr(effml_context_last_error(ctx), "class 1") != NULL);
  /* Borderline on separated classes: no danger points, class skipped */
  o.method = EFFML_SAMPLER_RESAMPLE_BORDERLINE1;
  o.m_neighbors = 6;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, xs, ys, &xr, &yr), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(yr, 0), 12);
  effml_tensor_free(xr);
  effml_tensor_free(yr);
  o.m_neighbors = 12;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, xs, ys, &xr, &yr), EFFML_E_INVALID_ARG);
  effml_tensor_free(xs);
  effml_tensor_free(ys);
  effml_tensor_free(y14);
  effml_tensor_free(y1);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* Duplicates (imbalanced-learn drops kneighbors column 0 as "self"): 3 x [1,2] + [5,5] as one class; every
 * synthetic row from a duplicate is another duplicate (distance-0 neighbour),
 * and from [5,5] lies on a segment toward [1,2]. */
START_TEST(test_smote_duplicates) {
  effml_context *ctx = tu_ctx(0);
  double v[] = {1, 2, 1, 2, 1, 2, 5, 5, 9, 9, 9, 8, 8, 9, 8, 8, 9, 7, 7, 9};
  int64_t s[2] = {10, 2};
  effml_tensor *x = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, s, &x), EFFML_OK);
  memcpy(effml_tensor_data(x), v, sizeof v);
  int64_t c[2] = {4, 6};
  int64_t yv[10] = {1, 1, 1, 1, 0, 0, 0, 0, 0, 0};
  effml_tensor *y = make_y(ctx, c, 2);
  memcpy(effml_tensor_data(y), yv, sizeof yv);
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  o.k_neighbors = 2;
  o.sampling_strategy = EFFML_SAMPLER_STRATEGY_TARGETS;
  int64_t tl[1] = {1}, tc[1] = {40};
  o.n_targets = 1;
  o.target_labels = tl;
  o.target_counts = tc;
  effml_tensor *b, *nb, *st;
  plan_for(ctx, &o, x, y, &b, &nb, &st);
  ck_assert_int_eq(effml_tensor_dim(b, 0), 46);
  for (int64_t r = 10; r < 46; ++r) {
    int64_t i = i64p(b)[r], j = i64p(nb)[r];
    ck_assert(i != j);
    ck_assert(i < 4 && j < 4);
    if (i < 3) ck_assert(j < 3); /* the two other duplicates */
  }
  effml_tensor_free(b);
  effml_tensor_free(nb);
  effml_tensor_free(st);
  /* Absurd target counts are refused with a clear error, never overflow a plan. */
  {
    int64_t huge[3] = {INT64_MAX / 2, ((int64_t)1 << 48) + 1, INT64_MAX};
    int32_t methods[3] = {EFFML_SAMPLER_RESAMPLE_SMOTE, EFFML_SAMPLER_RESAMPLE_RANDOM_OVER, EFFML_SAMPLER_RESAMPLE_ADASYN};
    for (int m = 0; m < 3; ++m)
      for (int h = 0; h < 3; ++h) {
        effml_sampler_resample_options_init(&o);
        o.method = methods[m];
        o.k_neighbors = 2;
        o.sampling_strategy = EFFML_SAMPLER_STRATEGY_TARGETS;
        int64_t tc2[1] = {huge[h]};
        o.n_targets = 1;
        o.target_labels = tl;
        o.target_counts = tc2;
        effml_tensor *xo = (effml_tensor *)&o, *yo = (effml_tensor *)&o;
        ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xo, &yo), EFFML_E_OVERFLOW);
        ck_assert_ptr_eq(xo, (effml_tensor *)&o); /* outputs untouched */
        ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "target_counts[0]"));
      }
  }
  /* Tomek: a cross-class exact duplicate pair is a link (imblearn misses it) */
  double w[] = {0, 0, 0, 0, 5, 5, 5, 6, 6, 5, 6, 6};
  int64_t s6[2] = {6, 2};
  effml_tensor *x6 = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, s6, &x6), EFFML_OK);
  memcpy(effml_tensor_data(x6), w, sizeof w);
  int64_t y6v[6] = {0, 1, 0, 0, 0, 1};
  int64_t c6[2] = {4, 2};
  effml_tensor *y6 = make_y(ctx, c6, 2);
  memcpy(effml_tensor_data(y6), y6v, sizeof y6v);
  effml_sampler_resample_options_init(&o);
  o.method = EFFML_SAMPLER_RESAMPLE_TOMEK;
  plan_for(ctx, &o, x6, y6, &b, &nb, &st);
  ck_assert_int_eq(effml_tensor_dim(b, 0), 5);
  ck_assert_int_eq(i64p(b)[0], 1); /* row 0 (majority member of the link) removed */
  effml_tensor_free(b);
  effml_tensor_free(nb);
  effml_tensor_free(st);
  effml_tensor_free(x6);
  effml_tensor_free(y6);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* ---- cleaning: identical kept rows ---- */
START_TEST(test_clean_wine) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x, *y;
  st_load_csv(ctx, "wine.csv", EFFML_F64, &x, &y);
  char *ref = st_read_ref("sampler_clean_wine.txt");
  const char *keys[3] = {"tomek", "enn_all", "enn_mode"};
  for (int k = 0; k < 3; ++k) {
    effml_sampler_resample_options o;
    effml_sampler_resample_options_init(&o);
    o.method = k == 0 ? EFFML_SAMPLER_RESAMPLE_TOMEK : EFFML_SAMPLER_RESAMPLE_ENN;
    o.kind_sel = k == 2 ? EFFML_SAMPLER_ENN_MODE : EFFML_SAMPLER_ENN_ALL;
    effml_tensor *b, *nb, *st;
    plan_for(ctx, &o, x, y, &b, &nb, &st);
    int64_t e[200];
    int64_t ne = st_parse_ints(st_find_line(ref, keys[k]), e, 200);
    ck_assert_int_eq(effml_tensor_dim(b, 0), ne);
    for (int64_t i = 0; i < ne; ++i) {
      ck_assert_int_eq(i64p(b)[i], e[i]);
      ck_assert_int_eq(i64p(nb)[i], -1);
    }
    effml_tensor_free(b);
    effml_tensor_free(nb);
    effml_tensor_free(st);
  }
  free(ref);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_random_samplers) {
  effml_context *ctx = tu_ctx(0);
  int64_t c[3] = {10, 4, 2};
  effml_tensor *y = make_y(ctx, c, 3), *x = make_x_random(ctx, 16, 2, 3);
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  o.method = EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER;
  effml_tensor *b, *nb, *st;
  plan_for(ctx, &o, x, y, &b, &nb, &st);
  /* auto keeps n_min = 2 of classes 0 and 1, all of class 2; grouped by class */
  ck_assert_int_eq(effml_tensor_dim(b, 0), 6);
  const int64_t *p = i64p(b);
  ck_assert(p[0] < 10 && p[1] < 10 && p[0] != p[1]);
  ck_assert(p[2] >= 10 && p[2] < 14 && p[3] >= 10 && p[3] < 14 && p[2] != p[3]);
  ck_assert(p[4] == 14 && p[5] == 15);
  effml_tensor_free(b);
  effml_tensor_free(nb);
  effml_tensor_free(st);
  o.method = EFFML_SAMPLER_RESAMPLE_RANDOM_OVER;
  plan_for(ctx, &o, x, y, &b, &nb, &st);
  ck_assert_int_eq(effml_tensor_dim(b, 0), 30);
  for (int64_t r = 0; r < 16; ++r) ck_assert_int_eq(i64p(b)[r], r);
  for (int64_t r = 16; r < 22; ++r) ck_assert(i64p(b)[r] >= 10 && i64p(b)[r] < 14);
  for (int64_t r = 22; r < 30; ++r) ck_assert(i64p(b)[r] >= 14);
  effml_tensor_free(b);
  effml_tensor_free(nb);
  effml_tensor_free(st);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* ---- Borderline and ADASYN on breast cancer ---- */
START_TEST(test_borderline_adasyn) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x, *y;
  st_load_csv(ctx, "breast_cancer.csv", EFFML_F64, &x, &y);
  const int64_t n = effml_tensor_dim(x, 0), d = effml_tensor_dim(x, 1);
  const double *xs = f64p(x);
  const int64_t *ys = i64p(y);
  char *ref = st_read_ref("sampler_border_breast_cancer.txt");
  int64_t danger[600];
  int64_t nd = st_parse_ints(st_find_line(ref, "danger"), danger, 600);
  ck_assert_int_gt(nd, 5);
  for (int kind = 1; kind <= 2; ++kind) {
    effml_sampler_resample_options o;
    effml_sampler_resample_options_init(&o);
    o.method = kind == 1 ? EFFML_SAMPLER_RESAMPLE_BORDERLINE1 : EFFML_SAMPLER_RESAMPLE_BORDERLINE2;
    o.seed = 5;
    effml_tensor *b, *nb, *st;
    plan_for(ctx, &o, x, y, &b, &nb, &st);
    ck_assert_int_eq(effml_tensor_dim(b, 0), 714); /* 357 / 357 */
    char *used = calloc((size_t)n, 1);
    int toward_other = 0;
    for (int64_t r = n; r < 714; ++r) {
      int64_t i = i64p(b)[r], j = i64p(nb)[r];
      double s = f64p(st)[r];
      int is_danger = 0;
      for (int64_t t = 0; t < nd; ++t) is_danger |= danger[t] == i;
      ck_assert_msg(is_danger, "base %lld is not a danger point", (long long)i);
      used[i] = 1;
      ck_assert_int_eq(ys[i], 0);
      if (kind == 1) {
        ck_assert_int_eq(ys[j], 0); /* minority-minority segment */
        ck_assert(in_class_neighbours(xs, ys, n, d, 5, i, j));
        ck_assert(s >= 0 && s < 1);
      } else if (ys[j] != 0) {
        ck_assert(s >= 0 && s < 0.5); /* at most half way toward another class */
        toward_other++;
      }
    }
    int64_t nused = 0;
    for (int64_t i = 0; i < n; ++i) nused += used[i];
    ck_assert_int_ge(nused, nd - 3); /* 145 draws over ~21 danger points use nearly all */
    if (kind == 2) ck_assert_int_gt(toward_other, 0);
    free(used);
    effml_tensor_free(b);
    effml_tensor_free(nb);
    effml_tensor_free(st);
  }
  /* ADASYN: base multiplicities g_i = rint(r_i * n_new) exactly as the reference */
  int64_t g[300];
  int64_t ng = st_parse_ints(st_find_line(ref, "adasyn"), g, 300);
  ck_assert_int_eq(ng, 212);
  int64_t total = 0;
  for (int64_t i = 0; i < ng; ++i) total += g[i];
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  o.method = EFFML_SAMPLER_RESAMPLE_ADASYN;
  effml_tensor *b, *nb, *st;
  plan_for(ctx, &o, x, y, &b, &nb, &st);
  ck_assert_int_eq(effml_tensor_dim(b, 0), n + total);
  ck_assert_int_eq(total, 146); /* not balanced, like the paper and the anchor */
  int64_t *mult = calloc((size_t)n, sizeof(int64_t));
  for (int64_t r = n; r < n + total; ++r) {
    int64_t i = i64p(b)[r], j = i64p(nb)[r];
    mult[i]++;
    ck_assert(in_class_neighbours(xs, ys, n, d, 5, i, j));
  }
  int64_t t = 0;
  for (int64_t i = 0; i < n; ++i)
    if (ys[i] == 0) ck_assert_int_eq(mult[i], g[t++]);
  free(mult);
  effml_tensor_free(b);
  effml_tensor_free(nb);
  effml_tensor_free(st);
  free(ref);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

/* Every allocation failure is reported and leaks nothing. */
START_TEST(test_alloc_failures) {
  tu_failing_alloc fa = {0, 0, 0};
  for (int64_t fail = 1; fail < 400; ++fail) {
    fa.fail_at = fail;
    effml_context *ctx = tu_ctx_failing(&fa);
    int64_t live0 = fa.live;
    int64_t c[2] = {12, 7};
    int64_t n = 19, sh[2] = {19, 3};
    effml_tensor *x = NULL, *y = NULL;
    fa.fail_at = 0;
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, sh, &x), EFFML_OK);
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, &n, &y), EFFML_OK);
    for (int64_t i = 0; i < 19 * 3; ++i) ((double *)effml_tensor_data(x))[i] = (double)((i * 37) % 11);
    for (int64_t i = 0; i < 19; ++i) ((int64_t *)effml_tensor_data(y))[i] = i < c[0] ? 0 : 1;
    fa.fail_at = fa.count + fail;
    int32_t methods[4] = {EFFML_SAMPLER_RESAMPLE_SMOTE, EFFML_SAMPLER_RESAMPLE_BORDERLINE2, EFFML_SAMPLER_RESAMPLE_ENN,
                          EFFML_SAMPLER_RESAMPLE_SMOTENC};
    int64_t cat[1] = {2};
    int all_ok = 1;
    for (int m = 0; m < 4; ++m) {
      effml_sampler_resample_options o;
      effml_sampler_resample_options_init(&o);
      o.method = methods[m];
      o.n_categorical = 1;
      o.categorical_features = cat;
      o.m_neighbors = 6;
      effml_tensor *xr = NULL, *yr = NULL;
      effml_status st = effml_sampler_resample(ctx, &o, x, y, &xr, &yr);
      if (st != EFFML_OK) {
        ck_assert_int_eq(st, EFFML_E_NOMEM);
        ck_assert_ptr_null(xr);
        all_ok = 0;
      }
      effml_tensor_free(xr);
      effml_tensor_free(yr);
    }
    fa.fail_at = 0;
    effml_tensor_free(x);
    effml_tensor_free(y);
    ck_assert_int_eq(fa.live, live0 - 0);
    effml_context_free(ctx);
    if (all_ok) break;
  }
}
END_TEST


/* SMOTE-NC: categorical column in the middle; with one category per class the
 * one-hot part adds nothing, so the continuous part is plain SMOTE geometry and
 * the vote returns the class's category. */
START_TEST(test_smotenc) {
  effml_context *ctx = tu_ctx(0);
  const int64_t n = 40, d = 3;
  int64_t sh[2] = {n, d};
  effml_tensor *x = NULL, *y = NULL, *xr = NULL, *yr = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, sh, &x), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, &n, &y), EFFML_OK);
  double *xp = (double *)effml_tensor_data(x);
  int64_t *yp = (int64_t *)effml_tensor_data(y);
  uint64_t z = 77;
  for (int64_t i = 0; i < n; ++i) {
    yp[i] = i % 4 == 0; /* 10 minority rows */
    for (int64_t j = 0; j < d; ++j) {
      z = z * 6364136223846793005ULL + 1442695040888963407ULL;
      xp[i * d + j] = (double)(z >> 11) * 0x1.0p-53;
    }
    xp[i * d + 1] = yp[i] ? 7.0 : (double)(i % 3); /* categorical codes */
  }
  int64_t cat[1] = {1};
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  o.method = EFFML_SAMPLER_RESAMPLE_SMOTENC;
  o.k_neighbors = 3;
  o.n_categorical = 1;
  o.categorical_features = cat;
  o.seed = 3;
  ck_assert_msg(effml_sampler_resample(ctx, &o, x, y, &xr, &yr) == EFFML_OK, "%s", effml_context_last_error(ctx));
  ck_assert_int_eq(effml_tensor_dim(xr, 0), 60);
  const double *xo = (const double *)effml_tensor_data_const(xr);
  ck_assert_int_eq(memcmp(xo, xp, (size_t)(n * d) * sizeof(double)), 0);
  for (int64_t r = n; r < 60; ++r) {
    ck_assert_int_eq(i64p(yr)[r], 1);
    ck_assert(xo[r * d + 1] == 7.0);
    /* continuous part on a segment from a minority row to one of its 3 nearest minority rows */
    int found = 0;
    for (int64_t i = 0; i < n && !found; ++i) {
      if (!yp[i]) continue;
      for (int64_t j = 0; j < n && !found; ++j) {
        if (!yp[j] || j == i) continue;
        double ux = xp[j * d] - xp[i * d], uy = xp[j * d + 2] - xp[i * d + 2];
        double t = fabs(ux) > fabs(uy) ? (xo[r * d] - xp[i * d]) / ux : (xo[r * d + 2] - xp[i * d + 2]) / uy;
        if (!(t >= 0 && t < 1)) continue;
        if (fabs(xp[i * d] + t * ux - xo[r * d]) > 1e-12 || fabs(xp[i * d + 2] + t * uy - xo[r * d + 2]) > 1e-12) continue;
        /* j among i's 3 nearest on the continuous columns */
        double dij = ux * ux + uy * uy;
        int closer = 0;
        for (int64_t m = 0; m < n; ++m) {
          if (!yp[m] || m == i) continue;
          double a = xp[m * d] - xp[i * d], b = xp[m * d + 2] - xp[i * d + 2];
          closer += a * a + b * b < dij;
        }
        found = closer < 3;
      }
    }
    ck_assert_msg(found, "synthetic row %lld is not on a neighbour segment", (long long)r);
  }
  effml_tensor_free(xr);
  effml_tensor_free(yr);
  /* mixed categories in the minority: every synthetic category is one of the class's codes */
  for (int64_t i = 0; i < n; ++i)
    if (yp[i]) xp[i * d + 1] = (double)(i % 8 == 0 ? 5 : 6);
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_OK);
  xo = (const double *)effml_tensor_data_const(xr);
  for (int64_t r = n; r < 60; ++r) ck_assert(xo[r * d + 1] == 5.0 || xo[r * d + 1] == 6.0);
  effml_tensor_free(xr);
  effml_tensor_free(yr);
  xr = yr = NULL;
  /* bad input */
  effml_tensor *b = NULL, *nb = NULL, *st = NULL;
  ck_assert_int_eq(effml_sampler_resample_plan(ctx, &o, x, y, &b, &nb, &st), EFFML_E_UNSUPPORTED);
  o.n_categorical = 0;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_E_INVALID_ARG);
  int64_t all[3] = {0, 1, 2}, rep[2] = {1, 1}, bad[1] = {3};
  o.n_categorical = 3;
  o.categorical_features = all;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_E_INVALID_ARG);
  o.n_categorical = 2;
  o.categorical_features = rep;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_E_INVALID_ARG);
  o.n_categorical = 1;
  o.categorical_features = bad;
  ck_assert_int_eq(effml_sampler_resample(ctx, &o, x, y, &xr, &yr), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(xr);
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

static Suite *sampler_suite(void) {
  Suite *s = suite_create("sampler");
  TCase *tc = tcase_create("resample");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_strategy_reference);
  tcase_add_test(tc, test_strategy_ties_and_rounding);
  tcase_add_test(tc, test_strategy_counts_many_classes);
  tcase_add_test(tc, test_resample_first_nonfinite);
  tcase_add_test(tc, test_knn_breast_cancer);
  tcase_add_test(tc, test_knn_wine);
  tcase_add_test(tc, test_knn_duplicates);
  tcase_add_test(tc, test_smote_counts_order_segments);
  tcase_add_test(tc, test_same_seed_any_threads);
  tcase_add_test(tc, test_dtypes);
  tcase_add_test(tc, test_bad_input);
  tcase_add_test(tc, test_smote_duplicates);
  tcase_add_test(tc, test_clean_wine);
  tcase_add_test(tc, test_random_samplers);
  tcase_add_test(tc, test_borderline_adasyn);
  tcase_add_test(tc, test_alloc_failures);
  tcase_add_test(tc, test_smotenc);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(sampler_suite()); }
