/* Top-1 accuracy over logits: the arg-max (first on ties) against the label.
 * Inputs are validated as for the softmax cross-entropy (lib/train/loss.c). */
#include "../tensor/tensor_internal.h"

effml_status effml_metrics_accuracy(effml_context *ctx, const effml_tensor *logits,
                            const effml_tensor *labels, double *accuracy) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, accuracy);
  EFFML__TRY(effml__check_logits_labels(ctx, __func__, logits, labels));
  const int64_t b = logits->shape[0], c = logits->shape[1];
  const float *z = effml__cf32(logits);
  int64_t correct = 0;
  for (int64_t i = 0; i < b; ++i) {
    const float *row = z + i * c;
    int64_t best = 0;
    for (int64_t j = 1; j < c; ++j)
      if (row[j] > row[best]) best = j;
    correct += best == effml__label_at(labels, i);
  }
  *accuracy = (double)correct / (double)b;
  return EFFML_OK;
}
