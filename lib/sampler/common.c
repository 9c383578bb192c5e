/* Shared sampler plumbing: input conversion and checks, the class table,
 * the growing plan, per-class generator streams. */
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler_internal.h"

/* First non-finite element of rows [begin, end) of p ([*, d]) per worker. */
typedef struct {
  const double *p;
  int64_t d;
  int64_t first[64];
} finite_job;

static void finite_range(void *arg, int64_t begin, int64_t end, int32_t worker) {
  finite_job *j = (finite_job *)arg;
  const double *p = j->p + begin * j->d;
  const int64_t m = (end - begin) * j->d;
  /* x - x is 0 for finite x and NaN otherwise (IEEE arithmetic: the library is
   * never built with -ffast-math, which could fold it): eight independent sums, then the
   * exact position only where a block's sum is not 0 */
  for (int64_t b = 0; b < m; b += 1024) {
    const int64_t e = b + 1024 < m ? b + 1024 : m;
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = b;
    for (; i + 8 <= e; i += 8)
      for (int t = 0; t < 8; ++t) s[t] += p[i + t] - p[i + t];
    for (; i < e; ++i) s[0] += p[i] - p[i];
    if (s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7] == 0.0) continue;
    for (i = b; i < e; ++i)
      if (!isfinite(p[i])) {
        j->first[worker] = begin * j->d + i;
        return;
      }
  }
}

effml_status effml__sampler_check_finite(effml_context *ctx, const double *p, int64_t n,
                                         int64_t d, const char *arg) {
  /* split over the context's threads (a read of all of p: memory-bound) */
  finite_job job = {p, d, {0}};
  for (int w = 0; w < 64; ++w) job.first[w] = INT64_MAX;
  EFFML__TRY(effml__parallel_for(ctx, n, 4096, finite_range, &job));
  int64_t bad = INT64_MAX;
  for (int w = 0; w < 64; ++w)
    if (job.first[w] < bad) bad = job.first[w];
  if (bad == INT64_MAX) return EFFML_OK;
  return effml__err(ctx, EFFML_E_NUMERIC, "argument '%s' has a non-finite value %g at row %lld, column %lld",
                    arg, p[bad], (long long)(bad / d), (long long)(bad % d));
}

effml_status effml__sampler_x_f64(effml_context *ctx, const effml_tensor *x, const char *arg,
                                  int allow_nonfinite, const double **xd, double **owned) {
  if (x == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "argument '%s' is NULL", arg);
  EFFML__TRY(effml__check_tensor(ctx, x, arg, 0, 2, 1));
  if (x->dtype != EFFML_F32 && x->dtype != EFFML_F64)
    return effml__err(ctx, EFFML_E_DTYPE,
                      "argument '%s' has dtype %s: samplers take f32 or f64 features "
                      "(convert integer features with effml_tensor_convert first)",
                      arg, effml_tensor_dtype_name(x->dtype));
  int64_t n = x->shape[0], d = x->shape[1];
  *owned = NULL;
  if (x->dtype == EFFML_F64) {
    *xd = (const double *)(const void *)x->data;
  } else {
    size_t bytes;
    if (!effml__mul_size((size_t)n, (size_t)d, &bytes) ||
        !effml__mul_size(bytes, sizeof(double), &bytes))
      return effml__err(ctx, EFFML_E_OVERFLOW, "argument '%s' is too large", arg);
    double *c = (double *)effml__alloc_or_err(ctx, bytes, "f64 copy of the features");
    if (!c) return EFFML_E_NOMEM;
    const float *f = (const float *)(const void *)x->data;
    for (int64_t i = 0; i < n * d; ++i) c[i] = (double)f[i];
    *owned = c;
    *xd = c;
  }
  if (!allow_nonfinite) {
    effml_status st = effml__sampler_check_finite(ctx, *xd, n, d, arg);
    if (st != EFFML_OK) {
      effml__free(ctx, *owned);
      *owned = NULL;
      return st;
    }
  }
  return EFFML_OK;
}

effml_status effml__sampler_labels_check(effml_context *ctx, const effml_tensor *y, int64_t n) {
  if (y == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "argument 'y' is NULL");
  EFFML__TRY(effml__check_tensor(ctx, y, "y", 0, 1, 1));
  if (y->dtype != EFFML_I32 && y->dtype != EFFML_I64)
    return effml__err(ctx, EFFML_E_DTYPE, "argument 'y' has dtype %s, expected i32 or i64 labels",
                      effml_tensor_dtype_name(y->dtype));
  if (n >= 0 && y->shape[0] != n)
    return effml__err(ctx, EFFML_E_SHAPE, "y has %lld labels but x has %lld rows",
                      (long long)y->shape[0], (long long)n);
  return EFFML_OK;
}

effml_status effml__sampler_labels(effml_context *ctx, const effml_tensor *y, int64_t n,
                                   int64_t **y64) {
  EFFML__TRY(effml__sampler_labels_check(ctx, y, n));
  return effml__labels_to_i64(ctx, y, y->shape[0], "labels", y64);
}

effml_status effml__classes_count(effml_context *ctx, const effml_tensor *y, effml__classes *c) {
  memset(c, 0, sizeof *c);
  const int64_t n = y->shape[0];
  /* Distinct labels in a small sorted set with their counts, read straight
   * from y (a run of equal labels costs one comparison each); past 256
   * classes, the full table. */
  int64_t lab[256], cnt[256], nc = 0, pos = -1, last = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = effml__label_at(y, i);
    if (pos >= 0 && v == last) {
      cnt[pos]++;
      continue;
    }
    int64_t lo = 0, hi = nc;
    while (lo < hi) {
      int64_t mid = (lo + hi) / 2;
      if (lab[mid] < v) lo = mid + 1;
      else hi = mid;
    }
    if (lo == nc || lab[lo] != v) {
      if (nc == 256) { /* many classes: sort a copy */
        int64_t *y64 = NULL;
        EFFML__TRY(effml__labels_to_i64(ctx, y, n, "labels", &y64));
        effml_status st = effml__classes_build(ctx, y64, n, c);
        effml__free(ctx, y64);
        return st;
      }
      memmove(lab + lo + 1, lab + lo, (size_t)(nc - lo) * sizeof(int64_t));
      memmove(cnt + lo + 1, cnt + lo, (size_t)(nc - lo) * sizeof(int64_t));
      lab[lo] = v;
      cnt[lo] = 0;
      ++nc;
    }
    cnt[lo]++;
    pos = lo;
    last = v;
  }
  c->n_classes = nc;
  c->labels = (int64_t *)effml__malloc(ctx, (size_t)nc * sizeof(int64_t) + 1);
  c->counts = (int64_t *)effml__malloc(ctx, (size_t)nc * sizeof(int64_t) + 1);
  if (!c->labels || !c->counts) {
    effml__classes_free(ctx, c);
    return effml__err(ctx, EFFML_E_NOMEM, "out of memory for the class table");
  }
  memcpy(c->labels, lab, (size_t)nc * sizeof(int64_t));
  memcpy(c->counts, cnt, (size_t)nc * sizeof(int64_t));
  return EFFML_OK;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int64_t find_label(const int64_t *labels, int64_t nc, int64_t v) {
  int64_t lo = 0, hi = nc;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (labels[mid] < v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return (lo < nc && labels[lo] == v) ? lo : -1;
}

effml_status effml__classes_build(effml_context *ctx, const int64_t *y, int64_t n,
                                  effml__classes *c) {
  memset(c, 0, sizeof *c);
  int64_t *sorted = (int64_t *)effml__malloc(ctx, (size_t)n * sizeof(int64_t));
  c->rows = (int64_t *)effml__malloc(ctx, (size_t)n * sizeof(int64_t));
  c->cls = (int64_t *)effml__malloc(ctx, (size_t)n * sizeof(int64_t));
  if (!sorted || !c->rows || !c->cls) {
    effml__free(ctx, sorted);
    effml__classes_free(ctx, c);
    return effml__err(ctx, EFFML_E_NOMEM, "out of memory for the class table (%lld rows)",
                      (long long)n);
  }
  /* Distinct labels: a small sorted set grown while scanning y (a run of
   * equal labels costs one comparison); past 256 classes, sort a copy. */
  int64_t nc = 0, last = 0;
  for (int64_t i = 0; i < n && nc <= 256; ++i) {
    if (nc > 0 && y[i] == last) continue;
    last = y[i];
    int64_t lo = 0, hi = nc;
    while (lo < hi) {
      int64_t mid = (lo + hi) / 2;
      if (sorted[mid] < last) lo = mid + 1;
      else hi = mid;
    }
    if (lo < nc && sorted[lo] == last) continue;
    memmove(sorted + lo + 1, sorted + lo, (size_t)(nc - lo) * sizeof(int64_t));
    sorted[lo] = last;
    ++nc;
  }
  if (nc > 256) {
    memcpy(sorted, y, (size_t)n * sizeof(int64_t));
    qsort(sorted, (size_t)n, sizeof(int64_t), cmp_i64);
    nc = 0;
    for (int64_t i = 0; i < n; ++i)
      if (i == 0 || sorted[i] != sorted[i - 1]) sorted[nc++] = sorted[i];
  }
  c->n_classes = nc;
  c->labels = (int64_t *)effml__malloc(ctx, (size_t)nc * sizeof(int64_t));
  c->counts = (int64_t *)effml__calloc(ctx, (size_t)nc, sizeof(int64_t));
  c->start = (int64_t *)effml__calloc(ctx, (size_t)nc + 1, sizeof(int64_t));
  if (!c->labels || !c->counts || !c->start) {
    effml__free(ctx, sorted);
    effml__classes_free(ctx, c);
    return effml__err(ctx, EFFML_E_NOMEM, "out of memory for the class table");
  }
  memcpy(c->labels, sorted, (size_t)nc * sizeof(int64_t));
  effml__free(ctx, sorted);
  for (int64_t i = 0; i < n; ++i) {
    c->cls[i] = find_label(c->labels, nc, y[i]);
    c->counts[c->cls[i]]++;
  }
  for (int64_t k = 0; k < nc; ++k) c->start[k + 1] = c->start[k] + c->counts[k];
  /* Fill rows per class in original order, using counts as cursors. */
  for (int64_t k = 0; k < nc; ++k) c->counts[k] = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t k = c->cls[i];
    c->rows[c->start[k] + c->counts[k]++] = i;
  }
  return EFFML_OK;
}

void effml__classes_free(effml_context *ctx, effml__classes *c) {
  effml__free(ctx, c->labels);
  effml__free(ctx, c->counts);
  effml__free(ctx, c->start);
  effml__free(ctx, c->rows);
  effml__free(ctx, c->cls);
  memset(c, 0, sizeof *c);
}

effml_status effml__plan_reserve(effml_context *ctx, effml__plan *p, int64_t extra) {
  /* Plans hold three 8-byte values per row: refuse sizes whose bytes overflow. */
  const int64_t max_rows = (int64_t)(SIZE_MAX / 64 < (size_t)INT64_MAX / 4 ? SIZE_MAX / 64
                                                                          : (size_t)INT64_MAX / 4);
  if (extra < 0 || extra > max_rows - p->n)
    return effml__err(ctx, EFFML_E_OVERFLOW,
                      "resample: a plan of %lld + %lld rows overflows the addressable size",
                      (long long)p->n, (long long)extra);
  if (p->n + extra <= p->cap) return EFFML_OK;
  int64_t cap = p->cap <= max_rows / 2 && p->cap * 2 > p->n + extra ? p->cap * 2 : p->n + extra;
  if (cap < 16) cap = 16;
  int64_t *b = (int64_t *)effml__malloc(ctx, (size_t)cap * sizeof(int64_t));
  int64_t *nb = (int64_t *)effml__malloc(ctx, (size_t)cap * sizeof(int64_t));
  double *s = (double *)effml__malloc(ctx, (size_t)cap * sizeof(double));
  if (!b || !nb || !s) {
    effml__free(ctx, b);
    effml__free(ctx, nb);
    effml__free(ctx, s);
    return effml__err(ctx, EFFML_E_NOMEM, "out of memory for a plan of %lld rows",
                      (long long)cap);
  }
  if (p->n) {
    memcpy(b, p->base, (size_t)p->n * sizeof(int64_t));
    memcpy(nb, p->nbr, (size_t)p->n * sizeof(int64_t));
    memcpy(s, p->step, (size_t)p->n * sizeof(double));
  }
  effml__free(ctx, p->base);
  effml__free(ctx, p->nbr);
  effml__free(ctx, p->step);
  p->base = b;
  p->nbr = nb;
  p->step = s;
  p->cap = cap;
  return EFFML_OK;
}

void effml__plan_free(effml_context *ctx, effml__plan *p) {
  effml__free(ctx, p->base);
  effml__free(ctx, p->nbr);
  effml__free(ctx, p->step);
  memset(p, 0, sizeof *p);
}

void effml__class_rng(effml__rng *r, uint64_t seed, uint64_t method_tag, int64_t label) {
  effml__rng_seed(r, seed, effml__mix64(method_tag) ^ (uint64_t)label);
}

double *effml__gather_rows(effml_context *ctx, const double *x, int64_t d, const int64_t *rows,
                           int64_t n_rows) {
  double *o = (double *)effml__alloc_or_err(ctx, (size_t)(n_rows * d) * sizeof(double) + 1,
                                            "gathered rows");
  if (!o) return NULL;
  for (int64_t i = 0; i < n_rows; ++i)
    memcpy(o + i * d, x + rows[i] * d, (size_t)d * sizeof(double));
  return o;
}
