/**
 * @file effml/metrics.h
 * @brief Classification, selective-classification and OOD metrics.
 *
 * Classification metrics over logits, predictions and (score, correct)
 * pairs: top-1 accuracy and error, negative log-likelihood, selective
 * classification (risk-coverage curve and its area; Geifman & El-Yaniv,
 * "Selective Classification for Deep Neural Networks", NeurIPS 2017,
 * arXiv 1705.08500) and out-of-distribution detection (AUROC, FPR at a TPR).
 *
 * Conventions: every score is a *confidence* (higher = more confident); a
 * sample is accepted iff score >= threshold.  Fractions (coverage, risk,
 * error, FPR, AUROC) are in [0, 1], not percent.
 *
 * @code
 *   double acc;  effml_metrics_accuracy(ctx, logits, labels, &acc);
 *   double aurc; effml_metrics_selective_aurc(ctx, scores, correct, &aurc);
 * @endcode
 *
 * Threads: every function only reads its inputs and writes its outputs.
 */
#ifndef EFFML_METRICS_H
#define EFFML_METRICS_H

#include "core.h"
#include "tensor.h"

EFFML_BEGIN_DECLS

/* ---- risk-coverage threshold conventions ---- */

/** thresholds[k] = k-th largest score: "score >= thresholds[k]" selects exactly the top k
 *  (without ties); thresholds[0] = +inf. */
#define EFFML_METRICS_RC_EXACT 0
/** Guoxoug/window-early-exit `risk_coverage_curve`: thresholds[k] = (k+1)-th largest score,
 *  which with "score >= t" selects k+1 samples (off by one); thresholds[N] = -inf. */
#define EFFML_METRICS_RC_REFERENCE 1

/**
 * Top-1 accuracy: fraction of rows whose arg-max logit (first on ties)
 * equals the label.  Shapes and errors as effml_train_softmax_cross_entropy().
 */
EFFML_API effml_status effml_metrics_accuracy(effml_context *ctx, const effml_tensor *logits,
                                      const effml_tensor *labels, double *accuracy);

/* ---- selective-classification and OOD metrics ----
 * Inputs: `scores` f32/f64 [N] confidences (no NaN); `correct` / `is_ood` bool, u8, i32 or
 * i64 [N] (nonzero = true).  Sorting is by score descending, ties broken by lower index
 * first (stable).  Errors: EFFML_E_INVALID_ARG (NULL, value out of range), EFFML_E_SHAPE
 * (N < 1, lengths differ), EFFML_E_DTYPE, EFFML_E_NUMERIC (NaN score), EFFML_E_NOMEM.
 * Outputs are written only on success. */

/**
 * Risk-coverage curve (Geifman & El-Yaniv 2017; reference `eval_utils.py::risk_coverage_curve`).
 * coverage[k] = k/N, risk[k] = (number wrong among the top k)/k for k = 1..N, risk[0] = 0 (as the
 * reference), thresholds per `convention` (EFFML_METRICS_RC_EXACT or EFFML_METRICS_RC_REFERENCE).
 * @param coverage, risk, thresholds  each NULL or f64 [N + 1], contiguous.
 */
EFFML_API effml_status effml_metrics_selective_risk_coverage_curve(effml_context *ctx,
                                                           const effml_tensor *scores,
                                                           const effml_tensor *correct,
                                                           int32_t convention,
                                                           effml_tensor *coverage,
                                                           effml_tensor *risk,
                                                           effml_tensor *thresholds);

/** AURC: trapezoidal area under the risk-coverage curve, including the point (0, 0)
 *  (reference convention: np.trapz(risk, coverage), not multiplied by 100). */
EFFML_API effml_status effml_metrics_selective_aurc(effml_context *ctx, const effml_tensor *scores,
                                            const effml_tensor *correct, double *aurc);

/**
 * Risk at coverage c in (0, 1]: the error rate among the top k = ceil(c*N) scores, and the
 * threshold selecting them (the k-th largest score; "score >= threshold").  The reference
 * takes k = argmin |k/N - c| (rounding instead of ceil) and pairs it with the (k+1)-th score.
 * @param threshold  may be NULL
 */
EFFML_API effml_status effml_metrics_selective_risk_at_coverage(effml_context *ctx,
                                                        const effml_tensor *scores,
                                                        const effml_tensor *correct,
                                                        double coverage, double *risk,
                                                        double *threshold);

/**
 * Coverage at risk r in (0, 1]: the largest k/N whose top k has risk <= r, and the threshold
 * selecting it (k-th largest score).  0 coverage and threshold +inf when even the top-1 is
 * wrong.  The reference instead takes argmin_{k >= 500} |risk_k - r|, which may exceed r.
 * @param threshold  may be NULL
 */
EFFML_API effml_status effml_metrics_selective_coverage_at_risk(effml_context *ctx,
                                                        const effml_tensor *scores,
                                                        const effml_tensor *correct,
                                                        double risk, double *coverage,
                                                        double *threshold);

/**
 * AUROC of OOD detection: OOD = positive class scored by uncertainty (-score), as the
 * reference (sklearn `roc_auc_score`); equals P(score_ID > score_OOD) + P(tie)/2.
 * Needs both classes (else EFFML_E_INVALID_ARG).
 */
EFFML_API effml_status effml_metrics_ood_auroc(effml_context *ctx, const effml_tensor *scores,
                                       const effml_tensor *is_ood, double *auroc);

/**
 * FPR at a TPR in (0, 1] (FPR@95: tpr = 0.95): in-distribution samples are positive and
 * accepted iff score >= t, t = the ceil(tpr*N_ID)-th largest ID score (so the true TPR is
 * >= tpr); FPR = (number of OOD with score >= t) / N_OOD.  The reference picks t with ID recall closest to
 * tpr on sklearn's precision-recall curve.  Needs both classes.
 * @param threshold  may be NULL
 */
EFFML_API effml_status effml_metrics_ood_fpr_at_tpr(effml_context *ctx, const effml_tensor *scores,
                                            const effml_tensor *is_ood, double tpr, double *fpr,
                                            double *threshold);

/** Top-1 error: fraction of pred[i] != labels[i]; pred and labels i32/i64 [N]. */
EFFML_API effml_status effml_metrics_top1_error(effml_context *ctx, const effml_tensor *pred,
                                             const effml_tensor *labels, double *error);

/**
 * Negative log-likelihood: mean over i of -log probs[i, labels[i]], in nats.
 * @param probs   f32/f64 [N, K] probabilities (e.g. effml_cascade_run()'s `probs`); a zero
 *                probability of the true class gives +inf (no clamping)
 * @param labels  i32/i64 [N] in [0, K) (else EFFML_E_RANGE)
 */
EFFML_API effml_status effml_metrics_nll(effml_context *ctx, const effml_tensor *probs,
                                      const effml_tensor *labels, double *nll);

EFFML_END_DECLS

#endif /* EFFML_METRICS_H */
