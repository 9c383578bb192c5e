/* SMOTE-NC (Chawla et al. 2002 §6.1; imbalanced-learn `SMOTENC`, 0.12+
 * semantics, Chawla et al. 2002, arXiv 1106.1813, §6.1): neighbours on [continuous | one-hot * med_c /
 * sqrt(2)] within each targeted class, continuous columns interpolated,
 * categorical columns by majority vote of the base row's k neighbours.
 * Categorical values are votes, not interpolations, so there is no plan form. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler_internal.h"

#define TAG_SMOTENC 0x534d4f54454e43ULL

static int cmp_dbl(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int64_t find_val(const double *v, int64_t n, double x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (v[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

typedef struct {
  int64_t n, d, n_cat, width;
  char *is_cat;       /* [d] */
  int64_t *cat_cols;  /* [n_cat] column index */
  int64_t *cat_off;   /* [n_cat + 1] offsets into vals and into the one-hot block */
  double *vals;       /* sorted distinct values per categorical column */
} nc_table;

static void table_free(effml_context *ctx, nc_table *t) {
  effml__free(ctx, t->is_cat);
  effml__free(ctx, t->cat_cols);
  effml__free(ctx, t->cat_off);
  effml__free(ctx, t->vals);
  memset(t, 0, sizeof *t);
}

static effml_status table_build(effml_context *ctx, const effml_sampler_resample_options *o,
                                const double *x, int64_t n, int64_t d, nc_table *t) {
  memset(t, 0, sizeof *t);
  t->n = n;
  t->d = d;
  if (o->n_categorical < 1 || o->categorical_features == NULL)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "SMOTE-NC needs categorical_features (n_categorical=%lld); without "
                      "categorical columns use EFFML_SAMPLER_RESAMPLE_SMOTE",
                      (long long)o->n_categorical);
  if (o->n_categorical >= d)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "n_categorical=%lld of %lld features: SMOTE-NC needs at least one "
                      "continuous feature",
                      (long long)o->n_categorical, (long long)d);
  t->n_cat = o->n_categorical;
  t->is_cat = (char *)effml__calloc(ctx, (size_t)d, 1);
  t->cat_cols = (int64_t *)effml__malloc(ctx, (size_t)t->n_cat * sizeof(int64_t));
  t->cat_off = (int64_t *)effml__calloc(ctx, (size_t)t->n_cat + 1, sizeof(int64_t));
  t->vals = (double *)effml__malloc(ctx, (size_t)(n * t->n_cat) * sizeof(double));
  if (!t->is_cat || !t->cat_cols || !t->cat_off || !t->vals) {
    table_free(ctx, t);
    return effml__err(ctx, EFFML_E_NOMEM, "out of memory for SMOTE-NC categories");
  }
  for (int64_t j = 0; j < t->n_cat; ++j) {
    int64_t c = o->categorical_features[j];
    if (c < 0 || c >= d || t->is_cat[c]) {
      table_free(ctx, t);
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "categorical_features[%lld]=%lld is out of [0, %lld) or repeated",
                        (long long)j, (long long)c, (long long)d);
    }
    t->is_cat[c] = 1;
  }
  int64_t j = 0;
  for (int64_t c = 0; c < d; ++c)
    if (t->is_cat[c]) t->cat_cols[j++] = c; /* ascending column order */
  int64_t off = 0;
  for (j = 0; j < t->n_cat; ++j) {
    double *v = t->vals + off;
    for (int64_t i = 0; i < n; ++i) v[i] = x[i * d + t->cat_cols[j]];
    qsort(v, (size_t)n, sizeof(double), cmp_dbl);
    int64_t u = 0;
    for (int64_t i = 0; i < n; ++i)
      if (i == 0 || v[i] != v[u - 1]) v[u++] = v[i];
    t->cat_off[j] = off;
    off += u;
    t->cat_off[j + 1] = off;
  }
  t->width = (d - t->n_cat) + off;
  return EFFML_OK;
}

/* median of the ddof-0 standard deviations of the continuous columns over `rows` */
static double class_median_std(const double *x, const nc_table *t, const int64_t *rows,
                               int64_t nr, double *tmp) {
  int64_t m = 0;
  for (int64_t c = 0; c < t->d; ++c) {
    if (t->is_cat[c]) continue;
    double mean = 0, ss = 0;
    for (int64_t i = 0; i < nr; ++i) mean += x[rows[i] * t->d + c];
    mean /= (double)nr;
    for (int64_t i = 0; i < nr; ++i) {
      double e = x[rows[i] * t->d + c] - mean;
      ss += e * e;
    }
    tmp[m++] = sqrt(ss / (double)nr);
  }
  qsort(tmp, (size_t)m, sizeof(double), cmp_dbl);
  return m % 2 ? tmp[m / 2] : 0.5 * (tmp[m / 2 - 1] + tmp[m / 2]);
}

/* Rows of one class encoded for the neighbour search: [continuous | one-hot * oh]. */
static void encode_class(const double *xd, const nc_table *t, const int64_t *rows, int64_t nc,
                         double oh, double *enc, int64_t *self) {
  const int64_t d = t->d, W = t->width;
  for (int64_t i = 0; i < nc; ++i) {
    const double *xi = xd + rows[i] * d;
    double *e = enc + i * W;
    int64_t p = 0;
    for (int64_t col = 0; col < d; ++col)
      if (!t->is_cat[col]) e[p++] = xi[col];
    memset(e + p, 0, (size_t)(W - p) * sizeof(double));
    for (int64_t j = 0; j < t->n_cat; ++j) {
      int64_t nv = t->cat_off[j + 1] - t->cat_off[j];
      int64_t v = find_val(t->vals + t->cat_off[j], nv, xi[t->cat_cols[j]]);
      e[p + t->cat_off[j] + v] = oh;
    }
    self[i] = i;
  }
}

/* Categorical column j of a new sample: the majority value among the base row's k
 * neighbours nbr[0..k-1] (class rows), ties broken uniformly with rng. votes[] is zero
 * on entry and on return. */
static double vote_category(const double *xd, const nc_table *t, int64_t j, const int64_t *rows,
                            const int64_t *nbr, int64_t k, int64_t *votes, effml__rng *rng) {
  const double *cv = t->vals + t->cat_off[j];
  int64_t nv = t->cat_off[j + 1] - t->cat_off[j], col = t->cat_cols[j];
  for (int64_t q = 0; q < k; ++q) votes[find_val(cv, nv, xd[rows[nbr[q]] * t->d + col])]++;
  int64_t best = 0, ties = 0;
  for (int64_t v = 0; v < nv; ++v) {
    if (votes[v] > best) {
      best = votes[v];
      ties = 1;
    } else if (votes[v] == best && best > 0) {
      ties++;
    }
  }
  int64_t pick = (int64_t)effml__rng_below(rng, (uint64_t)ties), chosen = 0;
  for (int64_t v = 0; v < nv; ++v) {
    if (votes[v] == best && pick-- == 0) chosen = v;
    votes[v] = 0;
  }
  return cv[chosen];
}

/* Row r of the outputs: the sample tmp[d] (in x's dtype) and the label. */
static void put_row(effml_tensor *xo, effml_tensor *yo, int64_t r, int64_t d, const double *tmp,
                    int64_t label) {
  if (xo->dtype == EFFML_F64)
    memcpy(effml__f64(xo) + r * d, tmp, (size_t)d * sizeof(double));
  else
    for (int64_t col = 0; col < d; ++col) effml__f32(xo)[r * d + col] = (float)tmp[col];
  if (yo->dtype == EFFML_I64)
    ((int64_t *)(void *)yo->data)[r] = label;
  else
    ((int32_t *)(void *)yo->data)[r] = (int32_t)label;
}

/* n_new samples of class cl into rows r0.. of xo/yo: encode the class, find each row's
 * k neighbours, interpolate the continuous columns and vote the categorical ones. */
static effml_status synthesize_class(effml_context *ctx, const effml_sampler_resample_options *o,
                                     const double *xd, const nc_table *t, const effml__classes *c,
                                     int64_t cl, int64_t n_new, int64_t r0, double *tmp,
                                     int64_t *votes, effml_tensor *xo, effml_tensor *yo) {
  const int64_t *rows = c->rows + c->start[cl];
  const int64_t nc = c->counts[cl], W = t->width, d = t->d, k = o->k_neighbors;
  double med = class_median_std(xd, t, rows, nc, tmp);
  double oh = med > 0 ? med / sqrt(2.0) : 1.0; /* raw one-hot when the median is 0 (imblearn #662) */
  double *enc = (double *)effml__malloc(ctx, (size_t)(nc * W) * sizeof(double));
  int64_t *nn = (int64_t *)effml__malloc(ctx, (size_t)(nc * k) * sizeof(int64_t));
  int64_t *self = (int64_t *)effml__malloc(ctx, (size_t)nc * sizeof(int64_t));
  effml_status st = EFFML_OK;
  if (!enc || !nn || !self)
    st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for SMOTE-NC class %lld", (long long)c->labels[cl]);
  if (st == EFFML_OK) {
    encode_class(xd, t, rows, nc, oh, enc, self);
    st = effml__knn_f64(ctx, enc, nc, enc, nc, W, k, self, o->block_rows, nn, NULL);
  }
  effml__rng rng;
  effml__class_rng(&rng, o->seed, TAG_SMOTENC, c->labels[cl]);
  for (int64_t s = 0, r = r0; st == EFFML_OK && s < n_new; ++s, ++r) {
    int64_t pair = (int64_t)effml__rng_below(&rng, (uint64_t)(nc * k));
    double u = effml__rng_uniform(&rng);
    int64_t li = pair / k;
    const double *xb = xd + rows[li] * d, *xn = xd + rows[nn[pair]] * d;
    for (int64_t col = 0; col < d; ++col) tmp[col] = xb[col] + u * (xn[col] - xb[col]);
    for (int64_t j = 0; j < t->n_cat; ++j)
      tmp[t->cat_cols[j]] = vote_category(xd, t, j, rows, nn + li * k, k, votes, &rng);
    put_row(xo, yo, r, d, tmp, c->labels[cl]);
  }
  effml__free(ctx, enc);
  effml__free(ctx, nn);
  effml__free(ctx, self);
  return st;
}

/* Phases: labels, classes and per-class targets (checked against k); the category
 * table; the outputs with the originals first; synthesize_class per targeted class. */
effml_status effml__smotenc_resample(effml_context *ctx, const effml_sampler_resample_options *o,
                                     const effml_tensor *x, const effml_tensor *y,
                                     effml_tensor **x_out, effml_tensor **y_out) {
  const double *xd = NULL;
  double *x_own = NULL;
  EFFML__TRY(effml__sampler_x_f64(ctx, x, "x", 0, &xd, &x_own));
  const int64_t n = x->shape[0], d = x->shape[1], k = o->k_neighbors;
  int64_t *y64 = NULL, *values = NULL, *votes = NULL;
  double *tmp = NULL;
  effml__classes c;
  memset(&c, 0, sizeof c);
  nc_table t;
  memset(&t, 0, sizeof t);
  effml_tensor *xo = NULL, *yo = NULL;
  effml_status st = effml__sampler_labels(ctx, y, n, &y64);
  if (st == EFFML_OK) st = effml__classes_build(ctx, y64, n, &c);
  if (st == EFFML_OK) {
    values = (int64_t *)effml__alloc_or_err(ctx, (size_t)c.n_classes * sizeof(int64_t), "strategy");
    st = values ? effml__strategy_resolve(ctx, o, &c, values) : EFFML_E_NOMEM;
  }
  if (st == EFFML_OK && k < 1)
    st = effml__err(ctx, EFFML_E_INVALID_ARG, "k_neighbors=%lld must be >= 1", (long long)k);
  int64_t total = n;
  for (int64_t cl = 0; st == EFFML_OK && cl < c.n_classes; ++cl) {
    if (values[cl] <= 0) continue;
    if (c.counts[cl] < k + 1)
      st = effml__err(ctx, EFFML_E_INVALID_ARG,
                      "k_neighbors=%lld needs at least %lld samples of class %lld, got %lld",
                      (long long)k, (long long)(k + 1), (long long)c.labels[cl],
                      (long long)c.counts[cl]);
    total += values[cl];
  }
  if (st == EFFML_OK) st = table_build(ctx, o, xd, n, d, &t);
  int64_t shape[2] = {total, d};
  if (st == EFFML_OK) st = effml_tensor_create(ctx, x->dtype, 2, shape, &xo);
  if (st == EFFML_OK) st = effml_tensor_create(ctx, y->dtype, 1, &total, &yo);
  if (st == EFFML_OK) {
    tmp = (double *)effml__malloc(ctx, (size_t)(d + 1) * sizeof(double));
    votes = (int64_t *)effml__calloc(ctx, (size_t)(t.width + 1), sizeof(int64_t));
    if (!tmp || !votes) st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for SMOTE-NC");
  }
  /* originals first, unchanged */
  if (st == EFFML_OK) {
    memcpy(xo->data, x->data, (size_t)(n * d) * effml_tensor_dtype_size(x->dtype));
    memcpy(yo->data, y->data, (size_t)n * effml_tensor_dtype_size(y->dtype));
  }
  int64_t r = n;
  for (int64_t cl = 0; st == EFFML_OK && cl < c.n_classes; ++cl) {
    if (values[cl] <= 0) continue;
    st = synthesize_class(ctx, o, xd, &t, &c, cl, values[cl], r, tmp, votes, xo, yo);
    r += values[cl];
  }
  effml__free(ctx, tmp);
  effml__free(ctx, votes);
  table_free(ctx, &t);
  effml__classes_free(ctx, &c);
  effml__free(ctx, values);
  effml__free(ctx, y64);
  effml__free(ctx, x_own);
  if (st != EFFML_OK) {
    effml_tensor_free(xo);
    effml_tensor_free(yo);
    return st;
  }
  *x_out = xo;
  *y_out = yo;
  return EFFML_OK;
}
