/**
 * @file effml/calibration.h
 * @brief Post-hoc probability calibration (temperature scaling, vector
 *        scaling, the correctness-aware calibrator) and calibration metrics
 *        (ECE with equal-width or adaptive bins, reliability-diagram bins,
 *        multiclass Brier score).
 *
 * A calibrator maps a classifier's logits `[n, K]` to calibrated logits of
 * the same shape; softmax of the output is the calibrated probability.
 * Temperature scaling and the correctness-aware calibrator divide by a
 * positive temperature and never change the predicted class; vector scaling
 * (per-class scale and bias) can, so it can change accuracy too.
 * It is fitted on held-out validation logits and labels, then applied to any
 * logits of the same model -- for example each member of an early-exit
 * cascade before its scores are routed (docs/calibration.md).
 *
 * Methods:
 * - EFFML_CALIBRATION_TEMPERATURE: z / T, one T > 0 fitted by NLL (Guo,
 *   Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks",
 *   ICML 2017, arXiv 1706.04599, Sec. 4.2).
 * - EFFML_CALIBRATION_VECTOR: a ⊙ z + b (diagonal W), fitted by NLL (same
 *   paper and section, "vector scaling").
 * - EFFML_CALIBRATION_CORRECTNESS_AWARE: a per-sample temperature
 *   T(f) = clamp(w2ᵀ ReLU(W1 f + b1) + b2, t_min, t_max) computed from
 *   features f of transformed views of the sample, fitted with the
 *   correctness-aware loss Σ ω_i (max_k softmax(z_i / T_i)_k − c_i)² / Σ ω_i,
 *   c_i = 1 if the model's prediction is right (Liu, Wang, Zou, Zou & Zheng,
 *   "Optimizing Calibration by Gaining Aware of Prediction Correctness",
 *   2024, arXiv 2404.13016, Sec. 3).  The views are the caller's: it runs
 *   the model on transformed copies of each input and passes their logits to
 *   effml_calibration_ca_features().
 *
 * Metrics take top-label confidences and correctness flags; like the
 * selective metrics (docs/cascades.md) they depend only on the multiset of
 * (confidence, correct) pairs, never on the input order: equal confidences
 * always fall into the same bin.
 *
 * Threads: a calibrator is used by one thread at a time; the metric
 * functions are reentrant.
 */
#ifndef EFFML_CALIBRATION_H
#define EFFML_CALIBRATION_H

#include "core.h"
#include "tensor.h"

EFFML_BEGIN_DECLS

/* ======================================================================
 * Calibrators
 * ====================================================================== */

typedef struct effml_calibrator effml_calibrator;

#define EFFML_CALIBRATION_TEMPERATURE 1       /**< z / T (Guo et al. 2017) */
#define EFFML_CALIBRATION_VECTOR 2            /**< a ⊙ z + b (Guo et al. 2017) */
#define EFFML_CALIBRATION_CORRECTNESS_AWARE 3 /**< z / T(features), CA loss (Liu et al. 2024) */

/**
 * Calibrator options.  Fill with effml_calibration_options_init(); fields
 * are only ever added at the end.  Fields marked CA are used by
 * EFFML_CALIBRATION_CORRECTNESS_AWARE only; lr, epochs and balance were
 * chosen on a validation split of Fashion-MNIST (docs/calibration.md,
 * "Choosing the hyperparameters"); the others follow the authors' code.
 */
typedef struct effml_calibration_options {
  uint32_t struct_size;  /**< set by _init */
  int32_t method;        /**< EFFML_CALIBRATION_* (default TEMPERATURE) */
  int64_t num_classes;   /**< K >= 2 (required; no default) */
  int64_t num_features;  /**< CA: F = views x top_k features per sample (default 12: 3 views x 4) */
  int64_t hidden;        /**< CA: hidden ReLU units (default 5, as the authors' code) */
  double t_min, t_max;   /**< CA: temperature clamp (default 0.1, 10, as the authors' code) */
  int32_t balance;       /**< CA: nonzero weights correct rows by (1 − acc) and wrong rows by acc, acc of the batch (default 0; the authors' code 1: it pulls confidences towards 0.5, docs/calibration.md) */
  double lr;             /**< CA: Adam learning rate (default 1e-3, chosen on validation data; authors' code 1e-4) */
  int64_t epochs;        /**< CA: passes over the validation set (default 50, chosen with lr; authors' code 10) */
  int64_t batch_size;    /**< CA: rows per Adam step (default 1000, as the authors' code) */
  uint64_t seed;         /**< CA: initialisation and shuffling (default 0) */
  int32_t max_iter;      /**< TEMPERATURE/VECTOR: Newton iterations at most (default 100) */
} effml_calibration_options;

/** Fill `opt` with defaults (num_classes 0: the caller must set it).  NULL is ignored. */
EFFML_API void effml_calibration_options_init(effml_calibration_options *opt);

/**
 * Create an unfitted calibrator.  Parameters start at the identity map:
 * T = 1; a = 1, b = 0; CA: W1, b1, w2 ~ U(±1/sqrt(fan_in)) (PyTorch
 * `nn.Linear` bounds) from `seed`, b2 = 1, so T(f) starts near 1.
 * @param out  receives the calibrator, owned by the caller (effml_calibration_free())
 * @return EFFML_E_INVALID_ARG naming the bad field (unknown method,
 *         num_classes < 2, CA sizes < 1, t_min <= 0, t_max <= t_min,
 *         lr <= 0, epochs < 1, batch_size < 1, max_iter < 1, struct_size),
 *         EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_calibration_create(effml_context *ctx,
                                                const effml_calibration_options *opt,
                                                effml_calibrator **out);
/** Free a calibrator.  NULL is a no-op. */
EFFML_API void effml_calibration_free(effml_calibrator *cal);
/** Method of the calibrator (0 for NULL). */
EFFML_API int32_t effml_calibration_method(const effml_calibrator *cal);
/** Number of classes K the calibrator was created for (`options.num_classes`); 0 for NULL. */
EFFML_API int64_t effml_calibration_num_classes(const effml_calibrator *cal);

/**
 * Fit on validation data.
 * - TEMPERATURE: minimise the mean NLL over β = 1/T, a convex 1-D problem,
 *   by safeguarded Newton steps on dNLL/dβ = mean(E_p[z] − z_y) until it is
 *   below 1e-12, T restricted to [1e-2, 1e2] (a bound is returned when the
 *   optimum lies beyond it, e.g. separable data).
 * - VECTOR: minimise the mean NLL over (a, b), convex, by damped Newton
 *   steps with the exact Hessian and backtracking; b is then shifted to mean
 *   0 (softmax is unchanged by a common shift).
 * - CORRECTNESS_AWARE: Adam (β 0.9/0.999, ε 1e-8) on the CA loss over
 *   shuffled batches, `epochs` passes; ω normalised per batch.
 * @param logits    f32/f64 `[n, K]`, any strides, finite, n >= 1
 * @param features  CA: f32/f64 `[n, F]` (effml_calibration_ca_features()); others: NULL
 * @param labels    i32/i64 `[n]` in [0, K)
 * @return EFFML_E_INVALID_ARG (NULL, features given to / missing from the
 *         wrong method), EFFML_E_SHAPE, EFFML_E_DTYPE, EFFML_E_RANGE (label),
 *         EFFML_E_NUMERIC (non-finite input), EFFML_E_NOMEM, EFFML_E_CANCELLED.
 *         On error the parameters are unchanged.
 * Progress and cancellation (effml_context_set_progress()): VECTOR reports
 * before each Newton step, CORRECTNESS_AWARE before each epoch; TEMPERATURE
 * (a 1-D solve, milliseconds) does not report.
 */
EFFML_API effml_status effml_calibration_fit(effml_context *ctx, effml_calibrator *cal,
                                             const effml_tensor *logits,
                                             const effml_tensor *features,
                                             const effml_tensor *labels);

/**
 * Calibrated logits: z / T, a ⊙ z + b, or z / T(f_i) row by row.
 * @param logits    f32/f64 `[n, K]`, any strides, finite
 * @param features  CA: f32/f64 `[n, F]`; others NULL
 * @param out       f32/f64 `[n, K]`, contiguous, writable; may be `logits` when that is contiguous
 * @return as effml_calibration_fit() (no labels); on error `out` is untouched.
 */
EFFML_API effml_status effml_calibration_apply(effml_context *ctx, const effml_calibrator *cal,
                                               const effml_tensor *logits,
                                               const effml_tensor *features, effml_tensor *out);

/**
 * The training objective at the current parameters and its gradient, over
 * all n rows at once: mean NLL (TEMPERATURE, VECTOR) or the CA loss with ω
 * from the accuracy of all n rows (CORRECTNESS_AWARE).  For gradient checks
 * and for monitoring.  Where the CA clamp is active the gradient through T is
 * 0 (as torch.clamp).
 * @param grad  NULL or `[effml_calibration_num_params()]` doubles (caller memory)
 * @return as effml_calibration_fit().
 */
EFFML_API effml_status effml_calibration_loss(effml_context *ctx, const effml_calibrator *cal,
                                              const effml_tensor *logits,
                                              const effml_tensor *features,
                                              const effml_tensor *labels, double *loss,
                                              double *grad);

/**
 * Number of parameters and their flat layout: TEMPERATURE [T];
 * VECTOR [a_0..a_{K−1}, b_0..b_{K−1}]; CA [W1 (hidden x F, row-major), b1
 * (hidden), w2 (hidden), b2].  0 for NULL.
 */
EFFML_API int64_t effml_calibration_num_params(const effml_calibrator *cal);
/** Copy the parameters into `params` (`num_params` doubles).  @return EFFML_E_INVALID_ARG (NULL). */
EFFML_API effml_status effml_calibration_get_params(effml_context *ctx, const effml_calibrator *cal,
                                                    double *params);
/**
 * Set the parameters from `params` (`num_params` doubles, finite; T > 0).
 * @return EFFML_E_INVALID_ARG (NULL, non-finite value, T <= 0); on error nothing changes.
 */
EFFML_API effml_status effml_calibration_set_params(effml_context *ctx, effml_calibrator *cal,
                                                    const double *params);

/**
 * Correctness-aware calibrator inputs (Liu et al. 2024, Sec. 3; the authors'
 * code): for each sample, the top_k classes of the original logits (by
 * logit, descending, ties to the lower index); for each view v, the view's
 * softmax probabilities at those classes.
 * features[i, v·top_k + j] = softmax(views[v][i])[c_ij], c_ij the j-th
 * ranked class of logits[i].
 * @param logits     f32/f64 `[n, K]` of the untransformed inputs
 * @param num_views  V >= 1
 * @param views      V tensors f32/f64 `[n, K]`: logits of the model on the
 *                   transformed inputs (view v of sample i in row i)
 * @param top_k      1 <= top_k <= K (default of the paper's code: 4)
 * @param features   f32/f64 `[n, V·top_k]`, contiguous, writable
 * @return EFFML_E_INVALID_ARG, EFFML_E_SHAPE, EFFML_E_DTYPE, EFFML_E_NUMERIC; `features` untouched on error.
 */
EFFML_API effml_status effml_calibration_ca_features(effml_context *ctx,
                                                     const effml_tensor *logits,
                                                     int32_t num_views,
                                                     const effml_tensor *const *views,
                                                     int64_t top_k, effml_tensor *features);

/* ======================================================================
 * Metrics
 * ====================================================================== */

#define EFFML_CALIBRATION_BINS_EQUAL_WIDTH 0 /**< bin b = (b/B, (b+1)/B], b = 0..B−1 (a confidence of 0 goes to bin 0) */
#define EFFML_CALIBRATION_BINS_ADAPTIVE 1    /**< equal-mass: upper edges u_b = s_(⌈b·n/B⌉) of the ascending confidences; a sample goes to the first bin with conf <= u_b */

/**
 * Reliability-diagram bins of top-label confidences.  Outputs (each NULL or
 * `num_bins` entries, caller memory): per bin the number of samples, their
 * mean confidence, their accuracy (both 0 for an empty bin), and the bin's
 * upper edge ((b+1)/B, or u_b for adaptive bins).
 * @param confidences  f32/f64 `[n]` in [0, 1] (e.g. max softmax probability), n >= 1
 * @param correct      bool/u8/i32/i64 `[n]`, each 0 or 1 (1 = the prediction is right)
 * @param num_bins     B >= 1
 * @param binning      EFFML_CALIBRATION_BINS_*
 * @return EFFML_E_INVALID_ARG (NULL confidences/correct, B < 1, unknown
 *         binning, a confidence outside [0, 1], a flag other than 0 or 1:
 *         "correct[3]=2 is not 0 or 1"), EFFML_E_SHAPE,
 *         EFFML_E_DTYPE, EFFML_E_NUMERIC (NaN), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_calibration_reliability(effml_context *ctx,
                                                     const effml_tensor *confidences,
                                                     const effml_tensor *correct,
                                                     int32_t num_bins, int32_t binning,
                                                     int64_t *count, double *mean_confidence,
                                                     double *accuracy, double *upper_edge);

/**
 * Expected calibration error over the bins above (Naeini, Cooper &
 * Hauskrecht, AAAI 2015; Guo et al. 2017, Eq. 3):
 * norm 1: ECE = Σ_b (n_b / n) |acc_b − conf_b|;
 * norm 2: sqrt(Σ_b (n_b / n) (acc_b − conf_b)²) (the RMS calibration error).
 * Guo et al. and most papers report norm 1 with 15 equal-width bins.
 * @param norm  1 or 2
 * @return as effml_calibration_reliability(); EFFML_E_INVALID_ARG for another norm.
 */
EFFML_API effml_status effml_calibration_ece(effml_context *ctx, const effml_tensor *confidences,
                                             const effml_tensor *correct, int32_t num_bins,
                                             int32_t binning, int32_t norm, double *ece);

/**
 * Multiclass Brier score (Brier 1950): (1/n) Σ_i Σ_k (p_ik − [k = y_i])²,
 * in [0, 2] (scikit-learn 1.2's `brier_score_loss` is binary only).
 * @param probs   f32/f64 `[n, K]`, any strides: probabilities, each in [0, 1],
 *                each row summing to 1 within 1e-6 * K (|Σ_k p_ik − 1| <= 1e-6 K,
 *                room for f32 softmax rounding); pass probabilities, not logits
 * @param labels  i32/i64 `[n]` in [0, K)
 * @return EFFML_E_INVALID_ARG (NULL; an entry outside [0, 1]: "probs[3, 1]=5 is
 *         outside [0, 1]"; a row sum off by more than the tolerance: "row 3 of probs
 *         sums to 0.9, not 1 (tolerance 1e-6 * K = 5e-06)"), EFFML_E_SHAPE,
 *         EFFML_E_DTYPE, EFFML_E_RANGE (label), EFFML_E_NUMERIC (NaN or inf entry).
 *         On error *brier is untouched.
 */
EFFML_API effml_status effml_calibration_brier(effml_context *ctx, const effml_tensor *probs,
                                               const effml_tensor *labels, double *brier);

EFFML_END_DECLS

#endif /* EFFML_CALIBRATION_H */
