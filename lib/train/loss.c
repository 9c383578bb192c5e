/* Softmax cross-entropy.
 *
 * loss = (1/b) Σ_i [ m_i + log Σ_j exp(z_ij - m_i) - z_i,y_i ],  m_i = max_j z_ij
 * dL/dz_ij = (softmax(z_i)_j - [j = y_i]) / b
 * Everything is validated (labels, finiteness) before anything is written, so
 * an error leaves *loss and dlogits untouched.
 */
#include <math.h>
#include <string.h>

#include "../tensor/tensor_internal.h"

effml_status effml__check_logits_labels(effml_context *ctx, const char *fn,
                                        const effml_tensor *logits, const effml_tensor *labels) {
  EFFML__TRY(effml__check_tensor(ctx, logits, "logits", EFFML_F32, 2, 1));
  EFFML__TRY(effml__check_tensor(ctx, labels, "labels", 0, 1, 1));
  if (labels->dtype != EFFML_I32 && labels->dtype != EFFML_I64)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: labels must be i32 or i64, got %s", fn,
                      effml_tensor_dtype_name(labels->dtype));
  if (labels->shape[0] != logits->shape[0])
    return effml__err(ctx, EFFML_E_SHAPE,
                      "%s: labels has %lld entries but logits has %lld rows", fn,
                      (long long)labels->shape[0], (long long)logits->shape[0]);
  const int64_t b = logits->shape[0], c = logits->shape[1];
  const float *z = effml__cf32(logits);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t y = effml__label_at(labels, i);
    if (y < 0 || y >= c)
      return effml__err(ctx, EFFML_E_RANGE, "%s: labels[%lld]=%lld is outside [0, %lld)", fn,
                        (long long)i, (long long)y, (long long)c);
    const float *row = z + i * c;
    for (int64_t j = 0; j < c; ++j)
      if (!isfinite(row[j]))
        return effml__err(ctx, EFFML_E_NUMERIC, "%s: logits[%lld, %lld]=%g is not finite", fn,
                          (long long)i, (long long)j, (double)row[j]);
  }
  return EFFML_OK;
}

effml_status effml_train_softmax_cross_entropy(effml_context *ctx, const effml_tensor *logits,
                                         const effml_tensor *labels, double *loss,
                                         effml_tensor *dlogits) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, loss);
  EFFML__TRY(effml__check_logits_labels(ctx, __func__, logits, labels));
  const int64_t b = logits->shape[0], c = logits->shape[1];
  if (dlogits) {
    EFFML__TRY(effml__check_tensor(ctx, dlogits, "dlogits", EFFML_F32, 2, 1));
    EFFML__TRY(effml__check_writable(ctx, dlogits, "dlogits"));
    if (dlogits->shape[0] != b || dlogits->shape[1] != c)
      return effml__err(ctx, EFFML_E_SHAPE,
                        "%s: dlogits is [%lld, %lld] but logits is [%lld, %lld]", __func__,
                        (long long)dlogits->shape[0], (long long)dlogits->shape[1], (long long)b,
                        (long long)c);
  }
  const float *z = effml__cf32(logits);
  float *g = dlogits ? effml__f32(dlogits) : NULL;
  const double inv_b = 1.0 / (double)b;
  double total = 0.0;
  for (int64_t i = 0; i < b; ++i) {
    const float *row = z + i * c;
    const int64_t y = effml__label_at(labels, i);
    float m = row[0];
    for (int64_t j = 1; j < c; ++j) m = row[j] > m ? row[j] : m;
    double s = 0.0;
    for (int64_t j = 0; j < c; ++j) s += exp((double)row[j] - (double)m);
    const double lse = (double)m + log(s);
    total += lse - (double)row[y];
    if (g) { /* row[] is read before g[] is written: dlogits may alias logits */
      float *grow = g + i * c;
      for (int64_t j = 0; j < c; ++j)
        grow[j] = (float)(exp((double)row[j] - lse) * inv_b);
      grow[y] -= (float)inv_b;
    }
  }
  *loss = total * inv_b;
  return EFFML_OK;
}

static double vec_at(const effml_tensor *t, int64_t i) {
  const int64_t off = i * t->strides[0];
  return t->dtype == EFFML_F64 ? effml__cf64(t)[off] : (double)effml__cf32(t)[off];
}

/* A 1-D f32/f64 weight vector of length n, every entry finite and >= 0. */
static effml_status check_weights(effml_context *ctx, const char *fn, const effml_tensor *w,
                                  const char *name, int64_t n, const char *what) {
  EFFML__TRY(effml__check_tensor(ctx, w, name, 0, 1, 0));
  if (w->dtype != EFFML_F32 && w->dtype != EFFML_F64)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: %s must be f32 or f64, got %s", fn, name,
                      effml_tensor_dtype_name(w->dtype));
  if (w->shape[0] != n)
    return effml__err(ctx, EFFML_E_SHAPE, "%s: %s has %lld entries but there are %lld %s", fn,
                      name, (long long)w->shape[0], (long long)n, what);
  for (int64_t i = 0; i < n; ++i) {
    const double v = vec_at(w, i);
    if (!(v >= 0.0) || !isfinite(v))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: %s[%lld]=%g must be finite and >= 0", fn,
                        name, (long long)i, v);
  }
  return EFFML_OK;
}

effml_status effml_train_softmax_cross_entropy_weighted(
    effml_context *ctx, const effml_tensor *logits, const effml_tensor *labels,
    const effml_tensor *sample_weight, const effml_tensor *class_weight, int32_t reduction,
    double *loss, effml_tensor *dlogits) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_train_softmax_cross_entropy_weighted";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, loss);
  if (reduction != EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN && reduction != EFFML_TRAIN_REDUCTION_MEAN)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: reduction=%d is not EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN (0) or "
                      "EFFML_TRAIN_REDUCTION_MEAN (1)",
                      fn, (int)reduction);
  EFFML__TRY(effml__check_logits_labels(ctx, fn, logits, labels));
  const int64_t b = logits->shape[0], c = logits->shape[1];
  if (sample_weight) EFFML__TRY(check_weights(ctx, fn, sample_weight, "sample_weight", b, "rows"));
  if (class_weight) EFFML__TRY(check_weights(ctx, fn, class_weight, "class_weight", c, "classes"));
  if (dlogits) {
    EFFML__TRY(effml__check_tensor(ctx, dlogits, "dlogits", EFFML_F32, 2, 1));
    EFFML__TRY(effml__check_writable(ctx, dlogits, "dlogits"));
    if (dlogits->shape[0] != b || dlogits->shape[1] != c)
      return effml__err(ctx, EFFML_E_SHAPE, "%s: dlogits is [%lld, %lld] but logits is [%lld, %lld]",
                        fn, (long long)dlogits->shape[0], (long long)dlogits->shape[1],
                        (long long)b, (long long)c);
  }
  double denom = (double)b;
  if (reduction == EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN) {
    denom = 0.0;
    for (int64_t i = 0; i < b; ++i)
      denom += (sample_weight ? vec_at(sample_weight, i) : 1.0) *
               (class_weight ? vec_at(class_weight, effml__label_at(labels, i)) : 1.0);
    if (!(denom > 0.0))
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "%s: the weights of the batch's %lld rows sum to 0 (reduction "
                        "WEIGHTED_MEAN divides by that sum)",
                        fn, (long long)b);
  }
  const float *z = effml__cf32(logits);
  float *g = dlogits ? effml__f32(dlogits) : NULL;
  const double inv_d = 1.0 / denom;
  double total = 0.0;
  for (int64_t i = 0; i < b; ++i) {
    const float *row = z + i * c;
    const int64_t y = effml__label_at(labels, i);
    const double w = (sample_weight ? vec_at(sample_weight, i) : 1.0) *
                     (class_weight ? vec_at(class_weight, y) : 1.0);
    float m = row[0];
    for (int64_t j = 1; j < c; ++j) m = row[j] > m ? row[j] : m;
    double s = 0.0;
    for (int64_t j = 0; j < c; ++j) s += exp((double)row[j] - (double)m);
    const double lse = (double)m + log(s);
    const double zy = (double)row[y];
    total += w * (lse - zy);
    if (g) { /* row[] is read before g[] is written: dlogits may alias logits */
      float *grow = g + i * c;
      const double k = w * inv_d;
      for (int64_t j = 0; j < c; ++j) grow[j] = (float)(exp((double)row[j] - lse) * k);
      grow[y] = (float)((exp(zy - lse) - 1.0) * k);
    }
  }
  *loss = total * inv_d;
  return EFFML_OK;
}

/* ---- class weights ---------------------------------------------------------- */

effml_status effml_train_class_weight_balanced(effml_context *ctx, const effml_tensor *labels,
                                               int64_t num_classes, double *weights) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_train_class_weight_balanced";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, weights);
  if (num_classes < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: num_classes=%lld must be >= 1", fn,
                      (long long)num_classes);
  EFFML__TRY(effml__check_tensor(ctx, labels, "labels", 0, 1, 1));
  if (labels->dtype != EFFML_I32 && labels->dtype != EFFML_I64)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: labels must be i32 or i64, got %s", fn,
                      effml_tensor_dtype_name(labels->dtype));
  const int64_t n = labels->shape[0];
  if (n < 1) return effml__err(ctx, EFFML_E_SHAPE, "%s: labels is empty", fn);
  int64_t *count = (int64_t *)effml__calloc_or_err(ctx, (size_t)num_classes, sizeof(int64_t),
                                                    "class counts");
  if (!count) return EFFML_E_NOMEM;
  effml_status st = EFFML_OK;
  for (int64_t i = 0; i < n && st == EFFML_OK; ++i) {
    const int64_t y = effml__label_at(labels, i);
    if (y < 0 || y >= num_classes)
      st = effml__err(ctx, EFFML_E_RANGE, "%s: labels[%lld]=%lld is outside [0, %lld)", fn,
                      (long long)i, (long long)y, (long long)num_classes);
    else
      ++count[y];
  }
  for (int64_t k = 0; k < num_classes && st == EFFML_OK; ++k)
    if (count[k] == 0)
      st = effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: class %lld has no sample (\"balanced\" weights n/(K n_k) need every "
                      "class present)",
                      fn, (long long)k);
  if (st == EFFML_OK)
    for (int64_t k = 0; k < num_classes; ++k)
      weights[k] = (double)n / ((double)num_classes * (double)count[k]);
  effml__free(ctx, count);
  return st;
}

effml_status effml_train_scalarization_weights(effml_context *ctx, const double *sizes,
                                               int64_t n_sources, double temperature,
                                               double *weights) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_train_scalarization_weights";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, sizes);
  EFFML__CHECK_NULL(ctx, weights);
  if (n_sources < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: n_sources=%lld must be >= 1", fn,
                      (long long)n_sources);
  double *q = (double *)effml__alloc_or_err(ctx, (size_t)n_sources * sizeof(double), "probs");
  if (!q) return EFFML_E_NOMEM;
  effml_status st = effml_sampler_temperature_probs(ctx, sizes, n_sources, temperature, q);
  if (st == EFFML_OK) {
    double total = 0.0;
    for (int64_t k = 0; k < n_sources; ++k) total += sizes[k];
    /* w_k = q_k N / n_k: uniform sampling weighted by w has the expected gradient of
     * temperature sampling, and Σ_k n_k w_k / N = Σ_k q_k = 1 (mean 1 over the data). */
    for (int64_t k = 0; k < n_sources; ++k)
      weights[k] = sizes[k] > 0.0 ? q[k] * total / sizes[k] : 0.0;
  }
  effml__free(ctx, q);
  return st;
}
