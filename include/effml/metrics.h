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

/**
 * Top-1 accuracy: fraction of rows whose arg-max logit (first on ties)
 * equals the label.  Shapes and errors as effml_train_softmax_cross_entropy().
 */
EFFML_API effml_status effml_metrics_accuracy(effml_context *ctx, const effml_tensor *logits,
                                      const effml_tensor *labels, double *accuracy);

/* ---- selective-classification and OOD metrics ----
 * Inputs: `scores` f32/f64 [N] confidences (no NaN); `correct` / `is_ood` bool, u8, i32 or
 * i64 [N], each 0 or 1 (1 = true; any other value, e.g. -1 or 2, is EFFML_E_INVALID_ARG
 * naming the element: "correct[3]=2 is not 0 or 1").  Errors: EFFML_E_INVALID_ARG (NULL,
 * value out of range),
 * EFFML_E_SHAPE (N < 1, lengths differ), EFFML_E_DTYPE, EFFML_E_NUMERIC (NaN score),
 * EFFML_E_NOMEM.  Outputs are written only on success.
 *
 * Ties.  Every metric is a function of the multiset of (score, correct) pairs: the order of
 * the input never matters.  Let t_1 > t_2 > ... > t_G be the G distinct scores.  A threshold
 * t selects {i : score_i >= t}, so equal scores are always selected together and only the G
 * coverages c_j = n_j / N are selectable, n_j = #{score >= t_j}; the selective risk there is
 * r_j = w_j / n_j, w_j = #{score >= t_j and wrong} (Geifman & El-Yaniv, NeurIPS 2017).
 * The risk-coverage curve has one point per distinct threshold (as scikit-learn's ROC and
 * precision-recall curves group ties), points j = 1..G, plus a starting point j = 0 at
 * coverage c_0 = 0, threshold t_0 = +inf and risk r_0 = r_1 (the empty selection has no risk
 * of its own; the curve starts level with its first point).  The curve is a step function:
 * risk r_j on the coverage interval (c_{j-1}, c_j], and areas under it are step sums
 * (sum_j (c_j - c_{j-1}) * value_j, like scikit-learn's average_precision_score), never
 * trapezoids.  Every threshold a function returns selects exactly the coverage (or TPR) it
 * reports or promises. */

/**
 * Risk-coverage curve (Geifman & El-Yaniv 2017), one point per distinct threshold (see
 * "Ties" above): coverage[j] = c_j, risk[j] = r_j, thresholds[j] = t_j for j = 0..G, with
 * coverage[0] = 0, risk[0] = risk[1], thresholds[0] = +inf; "score >= thresholds[j]" selects
 * exactly coverage[j].
 * @param coverage, risk, thresholds  each NULL or f64 [N + 1], contiguous.  Entries
 *                    G+1..N (N - G of them, present only when scores tie) repeat point G
 *                    (coverage 1), so they add no width to the curve.
 * @param num_points  NULL or receives G + 1 (N + 1 without ties).
 */
EFFML_API effml_status effml_metrics_selective_risk_coverage_curve(effml_context *ctx,
                                                           const effml_tensor *scores,
                                                           const effml_tensor *correct,
                                                           effml_tensor *coverage,
                                                           effml_tensor *risk,
                                                           effml_tensor *thresholds,
                                                           int64_t *num_points);

/**
 * AURC: area under the risk-coverage step curve, sum_j (c_j - c_{j-1}) * r_j (see "Ties"),
 * in [0, 1], not multiplied by 100.  Without ties this is (1/N) sum_k risk(top k), the
 * definition of Geifman et al., "Bias-Reduced Uncertainty Estimation for Deep Neural
 * Classifiers" (ICLR 2019, arXiv 1805.08206).  The window-cascade reference instead takes
 * np.trapz from (0, 0) over one point per sample, which without ties is ours minus
 * (overall error) / (2N), and with ties depends on the input order.
 */
EFFML_API effml_status effml_metrics_selective_aurc(effml_context *ctx, const effml_tensor *scores,
                                            const effml_tensor *correct, double *aurc);

/**
 * AUGRC: area under the generalized-risk-coverage curve of Traub, Bungert, Lüth, Baumgartner
 * & Jaeger, "Overcoming Common Flaws in the Evaluation of Selective Classification Systems"
 * (NeurIPS 2024, arXiv 2407.01032): the generalized risk at threshold t_j is the joint
 * probability of being accepted and wrong, w_j / N (not w_j / n_j), and
 * AUGRC = sum_j (c_j - c_{j-1}) * w_j / N over the same steps and points as AURC (see
 * "Ties"), in [0, 1].  Without ties this is (1/N^2) sum_k (number wrong among the top k).
 * Unlike AURC it does not let the few most confident samples dominate.  With E = e N errors
 * all ranked below every correct sample it is e (e + 1/N) / 2 (its minimum for that error
 * rate); a ranking no better than chance gives e (1 + 1/N) / 2.
 */
EFFML_API effml_status effml_metrics_selective_augrc(effml_context *ctx,
                                                     const effml_tensor *scores,
                                                     const effml_tensor *correct, double *augrc);

/**
 * Risk at coverage c in (0, 1]: the smallest selectable coverage c_j >= c (the first
 * distinct threshold whose top set holds ceil(c*N) samples), its risk r_j and threshold t_j.
 * Scores [.9, .9, .5, .5] with correct [1, 0, 1, 0] in any order: c = 0.25 gives risk 0.5,
 * threshold 0.9, selected coverage 0.5.  The reference takes k = argmin |k/N - c| (rounding)
 * over individual samples and pairs it with the (k+1)-th score.
 * @param threshold          may be NULL
 * @param selected_coverage  may be NULL; receives c_j, the coverage "score >= threshold" selects
 */
EFFML_API effml_status effml_metrics_selective_risk_at_coverage(effml_context *ctx,
                                                        const effml_tensor *scores,
                                                        const effml_tensor *correct,
                                                        double coverage, double *risk,
                                                        double *threshold,
                                                        double *selected_coverage);

/**
 * Coverage at risk r in (0, 1]: the largest selectable coverage c_j with r_j <= r and its
 * threshold t_j ("score >= t_j" selects exactly c_j).  Coverage 0 and threshold +inf when
 * r_1 > r (the most confident tie group is already too wrong).  Scores [.9, .8, .8, .8],
 * the first two correct, r = 0.34: coverage 0.25, threshold 0.9.  The reference instead
 * takes argmin_{k >= 500} |risk_k - r|, which may exceed r.
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
 * the smallest selectable one >= tpr; tied scores, ID or OOD, are accepted together);
 * FPR = (number of OOD with score >= t) / N_OOD.  The reference picks t with ID recall closest to
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
