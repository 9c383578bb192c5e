/* Softmax cross-entropy.
 *
 * loss = (1/b) Σ_i [ m_i + log Σ_j exp(z_ij - m_i) - z_i,y_i ],  m_i = max_j z_ij
 * dL/dz_ij = (softmax(z_i)_j - [j = y_i]) / b
 * Everything is validated (labels, finiteness) before anything is written, so
 * an error leaves *loss and dlogits untouched.
 */
#include <math.h>
#include <string.h>

#include "internal.h"

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
    int64_t y = labels->dtype == EFFML_I32 ? ((const int32_t *)(const void *)labels->data)[i]
                                            : ((const int64_t *)(const void *)labels->data)[i];
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

static int64_t label_at(const effml_tensor *labels, int64_t i) {
  return labels->dtype == EFFML_I32 ? ((const int32_t *)(const void *)labels->data)[i]
                                    : ((const int64_t *)(const void *)labels->data)[i];
}

effml_status effml_train_softmax_cross_entropy(effml_context *ctx, const effml_tensor *logits,
                                         const effml_tensor *labels, double *loss,
                                         effml_tensor *dlogits) {
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
    const int64_t y = label_at(labels, i);
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
