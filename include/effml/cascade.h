/**
 * @file effml/cascade.h
 * @brief Window-based early-exit cascades
 *
 * A cascade runs M >= 1 classifiers ("stages") in sequence.  After stage m a
 * sample has a prediction and a confidence score computed from the members
 * 0..m (mean of their softmax probabilities, accumulated in double), or from
 * stage m alone (multi-exit networks).  An exit rule decides whether the
 * sample stops there or goes on; the last stage keeps everything still in
 * flight.  The window rule of Xia & Bouganis, "Window-Based Early-Exit
 * Cascades for Uncertainty Estimation" (ICCV 2023, arXiv 2303.08010, Sec. 3,
 * reference code Guoxoug/window-early-exit) passes a sample on only when its
 * score falls inside [lo, hi] around the task threshold tau: samples far from
 * tau are already accepted or rejected with confidence, so only the ambiguous
 * ones pay for the next member.  The classic single-threshold rule (Wisdom of
 * Committees, Wang et al. ICLR 2022) is also available.
 *
 * @code
 *   effml_cascade_options opt;  effml_cascade_options_init(&opt);
 *   opt.num_classes = 10;                      // score = EFFML_CASCADE_SCORE_MSP
 *   effml_cascade *c;  effml_cascade_create(ctx, &opt, &c);
 *   effml_cascade_add_stage_fn(ctx, c, small_fn, small_model, 1.2e6);  // MACs/sample
 *   effml_cascade_add_stage_fn(ctx, c, small_fn, other_model, 1.2e6);
 *   effml_cascade_select_thresholds(ctx, c, 2, val_logits, val_labels, &cal);   // window around tau
 *   effml_cascade_workspace *ws;  effml_cascade_workspace_create(ctx, c, &ws);
 *   effml_cascade_run(ctx, c, ws, n, &batch, pred, score, exit_stage, NULL);
 *   double macs = effml_cascade_workspace_expected_cost(ws);
 * @endcode
 *
 * Conventions used everywhere in this header:
 *  - Stages are numbered from 0.  Every score is a *confidence*: higher means
 *    more confident (the reference negates its uncertainties the same way
 *    before thresholding).  A sample is *accepted* (selected, kept, exits at a
 *    threshold rule) iff score >= threshold.
 *  - Fractions (coverage, risk, error, FPR, AUROC) are in [0, 1], not percent.
 *
 * Threads: build a cascade (create, add stages, set rules, calibrate) from one
 * thread.  Once built it is only read: one cascade may then be run from
 * several threads at once, each thread with its own context and its own
 * workspace.  Stage callbacks are then called concurrently (from the threads
 * that called effml_cascade_run(), never from library worker threads), so
 * they must be safe for that.  Changing a cascade while it runs is a data race.
 */
#ifndef EFFML_CASCADE_H
#define EFFML_CASCADE_H

#include "core.h"
#include "tensor.h"
#include "calibration.h"

EFFML_BEGIN_DECLS

typedef struct effml_cascade effml_cascade;
typedef struct effml_cascade_workspace effml_cascade_workspace;

/* ---- confidence scores (higher = more confident) ---- */

/** Maximum softmax probability max_k p_k (reference "confidence", display "MSP"). */
#define EFFML_CASCADE_SCORE_MSP 1
/** Negative entropy sum_k p_k log p_k (reference "entropy" negated, display "-H"); 0 log 0 = 0. */
#define EFFML_CASCADE_SCORE_ENTROPY 2
/** Maximum logit max_k z_k (reference "max_logit" = -max_k z_k, negated). */
#define EFFML_CASCADE_SCORE_MAX_LOGIT 3
/** Negative energy T * logsumexp(z / T) (Liu et al. NeurIPS 2020; reference "energy" negated, T = 1). */
#define EFFML_CASCADE_SCORE_ENERGY 4
/** Softmax margin p_(1) - p_(2), top-1 minus top-2 probability. */
#define EFFML_CASCADE_SCORE_MARGIN 5
/** DOCTOR (Granese et al. NeurIPS 2021, D_alpha): sum_k p_k^2 = 1 - g(x), g the Gini
 *  impurity; DOCTOR's rule "reject iff g/(1-g) > gamma" is "score < 1/(1+gamma)". */
#define EFFML_CASCADE_SCORE_DOCTOR 6

/* ---- how stage m combines the members ---- */

/** Stage m predicts from the mean of the softmax probabilities of stages 0..m
 *  (f64).  MSP, entropy, margin and DOCTOR are computed on that mean; max
 *  logit and energy are the mean of the members' own scores (as the reference). */
#define EFFML_CASCADE_AGG_MEAN 1
/** Stage m predicts from its own logits only (exits of one multi-exit network). */
#define EFFML_CASCADE_AGG_LAST 2

/* ---- exit rules (stages 0..M-2; the last stage always keeps every sample) ---- */

/** No sample exits at this stage (the default: a fresh cascade is the full ensemble). */
#define EFFML_CASCADE_EXIT_NEVER 0
/** Single threshold t: exit iff score >= t. */
#define EFFML_CASCADE_EXIT_THRESHOLD 1
/** Window [lo, hi]: pass to the next stage iff lo <= score <= hi (inclusive), exit otherwise. */
#define EFFML_CASCADE_EXIT_WINDOW 2

/* ---- calibration targets ---- */

/** Coverage c in (0, 1]: tau = the ceil(c*N)-th largest validation score, so "score >= tau"
 *  selects the smallest selectable validation coverage >= c (more than ceil(c*N) samples
 *  when that score is tied; see "Ties" in effml/metrics.h). */
#define EFFML_CASCADE_TARGET_COVERAGE 1
/** Risk r in (0, 1]: tau = the lowest distinct validation score whose top set {score >= tau}
 *  has risk <= r, i.e. the largest selectable coverage with validation risk <= r (the same
 *  rule as effml_metrics_selective_coverage_at_risk(); ties never split).  Scores [.9, .8, .8, .8]
 *  with the first two correct, r = 0.34: tau = 0.9 (coverage 0.25), not 0.8 (risk 0.5).
 *  When no coverage reaches r (the most confident group's risk exceeds it), the answer is
 *  coverage 0, as that metric's (0, +inf): tau = +inf, the stage accepts no sample (a
 *  threshold rule exits none there; a window is [Q(1 - window_below), +inf], so only the
 *  samples below it exit, as a coverage target tending to 0 would give), and a warning
 *  naming the stage goes to the context's log; effml_cascade_get_exit_rule() reports the
 *  tau. */
#define EFFML_CASCADE_TARGET_RISK 2
/** In-distribution TPR t in (0, 1] for OOD detection (ID = positive, accepted iff score >= tau):
 *  tau = the ceil(t*N)-th largest (in-distribution) validation score, so the selected TPR is
 *  the smallest selectable one >= t.  Labels are not used. */
#define EFFML_CASCADE_TARGET_TPR 3

/**
 * Options for effml_cascade_create() and effml_cascade_ensemble_predict().  Fill with
 * effml_cascade_options_init(); fields are only ever added at the end.
 */
typedef struct effml_cascade_options {
  uint32_t struct_size; /**< sizeof(effml_cascade_options), set by _init */
  int64_t num_classes;  /**< K >= 2 classes, the width of every stage's logits (no default: 0) */
  int32_t score;        /**< EFFML_CASCADE_SCORE_* (default EFFML_CASCADE_SCORE_MSP) */
  int32_t aggregation;  /**< EFFML_CASCADE_AGG_* (default EFFML_CASCADE_AGG_MEAN) */
  double temperature;   /**< energy temperature T > 0 (default 1); other scores ignore it */
} effml_cascade_options;

/** Fill `opt` with defaults (struct_size set).  NULL is ignored. */
EFFML_API void effml_cascade_options_init(effml_cascade_options *opt);

/**
 * Stage callback: compute the logits of the rows that reach this stage.
 * @param ctx        the context passed to effml_cascade_run() (for tensors, errors)
 * @param stage_data the pointer given to effml_cascade_add_stage_fn() (e.g. the model)
 * @param run_data   the pointer given to effml_cascade_run() (e.g. the input batch)
 * @param stage      0-based stage index
 * @param rows       `n_rows` increasing indices in [0, n) of the run's samples still in
 *                   flight; borrowed for the call
 * @param n_rows     >= 1 (a stage no sample reaches is not called)
 * @param logits     f32 [n_rows, num_classes], contiguous, writable; row i belongs to sample
 *                   rows[i]; borrowed for the call
 * @return EFFML_OK, or an error status that effml_cascade_run() returns unchanged.
 * Called on the thread that called effml_cascade_run().
 */
typedef effml_status (*effml_cascade_stage_fn)(effml_context *ctx, void *stage_data,
                                               void *run_data, int32_t stage,
                                               const int64_t *rows, int64_t n_rows,
                                               effml_tensor *logits);

/**
 * Create an empty cascade.
 * @param opt  options (only the first opt->struct_size bytes are read); num_classes required.
 * @param out  receives the cascade, owned by the caller (effml_cascade_free()).
 * @return EFFML_E_INVALID_ARG (NULL args, bad struct_size, num_classes < 2, unknown score or
 *         aggregation, temperature not finite and > 0), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_cascade_create(effml_context *ctx, const effml_cascade_options *opt,
                                            effml_cascade **out);

/** Free a cascade.  Its workspaces must be freed first.  NULL is a no-op. */
EFFML_API void effml_cascade_free(effml_cascade *cascade);

/**
 * Append a stage computed by a callback.
 * @param fn          the callback (see effml_cascade_stage_fn)
 * @param stage_data  passed to fn; borrowed, must outlive the cascade's runs
 * @param cost        cost of this stage in MACs per sample (>= 0, finite), caller-given
 * @return EFFML_E_INVALID_ARG (NULL cascade/fn, bad cost), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_cascade_add_stage_fn(effml_context *ctx, effml_cascade *cascade,
                                                  effml_cascade_stage_fn fn, void *stage_data,
                                                  double cost);

/**
 * Append a stage whose logits are precomputed: row i of `logits` belongs to
 * sample i of every run, so effml_cascade_run() needs n == rows.
 * @param logits  f32 or f64 [rows, num_classes], any strides; borrowed: must stay alive and
 *                unchanged until the cascade is freed.  NaN/inf values are reported by the
 *                run that reads them (EFFML_E_NUMERIC).
 * @param cost    MACs per sample (>= 0, finite)
 * @return EFFML_E_INVALID_ARG (NULL, bad cost), EFFML_E_DTYPE, EFFML_E_SHAPE (not 2-D, or
 *         columns != num_classes, or rows differ from an earlier logits stage), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_cascade_add_stage_logits(effml_context *ctx, effml_cascade *cascade,
                                                      const effml_tensor *logits, double cost);

/** Number of stages added so far (0 for NULL). */
EFFML_API int32_t effml_cascade_num_stages(const effml_cascade *cascade);
/** Number of classes K (0 for NULL). */
EFFML_API int64_t effml_cascade_num_classes(const effml_cascade *cascade);
/** Cost of `stage` in MACs per sample (NaN if out of range). */
EFFML_API double effml_cascade_stage_cost(const effml_cascade *cascade, int32_t stage);

/**
 * Set the exit rule of `stage` (0 <= stage < num_stages - 1).
 * @param rule  EFFML_CASCADE_EXIT_NEVER (a, b ignored), _THRESHOLD (exit iff score >= a;
 *              b ignored), _WINDOW (pass iff a <= score <= b; a, b may be -inf/+inf)
 * @return EFFML_E_INVALID_ARG (unknown rule, NaN bound, window with a > b, stage is the last
 *         stage or out of range).  On error the rule is unchanged.
 */
EFFML_API effml_status effml_cascade_set_exit_rule(effml_context *ctx, effml_cascade *cascade,
                                                   int32_t stage, int32_t rule, double a,
                                                   double b);

/**
 * Calibrate stage `stage`'s probabilities before they are aggregated, scored and routed:
 * its logits z (from the callback or the precomputed tensor, in effml_cascade_run() and in
 * effml_cascade_select_thresholds() alike) become z / T (temperature scaling) or a ⊙ z + b
 * (vector scaling) first (Guo et al. 2017, see calibration.h).  Fit the calibrator on the
 * stage's own validation logits; its parameters are copied now (refit, then call again).
 * Select the thresholds after setting the calibrations, since the scores change.
 * @param cal  a fitted EFFML_CALIBRATION_TEMPERATURE or _VECTOR calibrator for num_classes
 *             classes, or NULL to remove the stage's calibration
 * @return EFFML_E_INVALID_ARG (NULL cascade, stage out of range, a correctness-aware
 *         calibrator: it needs per-sample view features -- apply it to the logits before
 *         adding a logits stage instead), EFFML_E_SHAPE (class count), EFFML_E_NOMEM.
 *         On error the stage keeps its previous calibration.
 */
EFFML_API effml_status effml_cascade_set_stage_calibration(effml_context *ctx,
                                                           effml_cascade *cascade, int32_t stage,
                                                           const effml_calibrator *cal);

/**
 * Read the exit rule of `stage` (any stage; the last reports EFFML_CASCADE_EXIT_NEVER since
 * everything exits there anyway) and the task threshold tau found by the last calibration
 * (NaN if the stage was not calibrated).  Any output pointer may be NULL.
 * @return EFFML_E_INVALID_ARG (NULL cascade, stage out of range).
 */
EFFML_API effml_status effml_cascade_get_exit_rule(effml_context *ctx,
                                                   const effml_cascade *cascade, int32_t stage,
                                                   int32_t *rule, double *a, double *b,
                                                   double *tau);

/**
 * Options for effml_cascade_select_thresholds().  Fill with
 * effml_cascade_threshold_options_init(); fields are only ever added at the end.
 */
typedef struct effml_cascade_threshold_options {
  uint32_t struct_size;  /**< set by _init */
  int32_t rule;          /**< EFFML_CASCADE_EXIT_WINDOW (default) or EFFML_CASCADE_EXIT_THRESHOLD */
  int32_t target;        /**< EFFML_CASCADE_TARGET_* (default EFFML_CASCADE_TARGET_COVERAGE) */
  double target_value;   /**< coverage, risk or TPR in (0, 1] (default 0.8) */
  double window_below;   /**< window half-width below tau's quantile, in [0, 1] (default 0.1) */
  double window_above;   /**< window half-width above tau's quantile, in [0, 1] (default 0.1) */
} effml_cascade_threshold_options;

/** Fill `opt` with defaults (struct_size set).  NULL is ignored. */
EFFML_API void effml_cascade_threshold_options_init(effml_cascade_threshold_options *opt);

/**
 * Calibrate the exit rule of every stage but the last from validation logits
 * (Xia & Bouganis Sec. 3.2; reference `cascade_results.py`, generalised to M stages).
 *
 * For each stage m < M-1: s = stage m's aggregated validation scores (every validation
 * sample, as if all reached it), tau_m from `target` (see EFFML_CASCADE_TARGET_*; risk uses
 * stage m's own correctness).  Threshold rule: exit iff score >= tau_m.  Window rule:
 * q = percentile rank of tau_m in s (scipy `percentileofscore(kind="rank")` / 100),
 * lo = Q(max(q - window_below, 0)), hi = Q(min(q + window_above, 1)), Q = the
 * linearly interpolated quantile of s (numpy's default), pass iff lo <= score <= hi.
 *
 * @param num_stages  M (all stages) or M-1 (the last stage's logits are not needed)
 * @param val_logits  `num_stages` tensors f32/f64 [N_val, num_classes], same N_val >= 1
 * @param val_labels  i32/i64 [N_val] in [0, num_classes); needed only for
 *                    EFFML_CASCADE_TARGET_RISK, else may be NULL (ignored)
 * @param opt         options (NULL: defaults)
 * @return EFFML_E_INVALID_ARG (NULL, bad option, target_value outside (0, 1], window width
 *         outside [0, 1]), EFFML_E_STATE (no stage), EFFML_E_SHAPE (empty validation set,
 *         mismatched rows or class counts, num_stages not M or M-1), EFFML_E_DTYPE,
 *         EFFML_E_NUMERIC (NaN/inf logits), EFFML_E_RANGE (label out of range),
 *         EFFML_E_NOMEM, EFFML_E_CANCELLED.  A risk target no coverage reaches is not an
 *         error (EFFML_CASCADE_TARGET_RISK: tau = +inf, logged).  On error the
 *         rules are unchanged.  Progress (effml_context_set_progress()) is reported
 *         before each stage, in stages.
 */
EFFML_API effml_status effml_cascade_select_thresholds(effml_context *ctx, effml_cascade *cascade,
                                               int32_t num_stages,
                                               const effml_tensor *const *val_logits,
                                               const effml_tensor *val_labels,
                                               const effml_cascade_threshold_options *opt);

/**
 * Create a workspace: the per-thread scratch memory of effml_cascade_run() and
 * the statistics of its last run.  It grows on demand.
 * @param out  receives the workspace, owned by the caller (effml_cascade_workspace_free());
 *             it must be freed before the cascade.  Memory comes from ctx's allocator.
 * @return EFFML_E_INVALID_ARG, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_cascade_workspace_create(effml_context *ctx,
                                                      const effml_cascade *cascade,
                                                      effml_cascade_workspace **out);
/** Free a workspace.  NULL is a no-op. */
EFFML_API void effml_cascade_workspace_free(effml_cascade_workspace *ws);

/**
 * Run the cascade on n samples.  Stage 0 sees every sample; stage m+1 sees only
 * the samples that passed stage m's exit rule; the last stage keeps all.
 * Each sample's outputs are those of the stage where it exits.
 *
 * @param ws          a workspace made for this cascade (one per concurrent caller)
 * @param n           number of samples >= 1 (must equal the rows of logits stages)
 * @param run_data    passed to every stage callback (e.g. the input batch); may be NULL
 * @param pred        NULL or i32/i64 [n]: argmax class (lowest index on ties)
 * @param score       NULL or f32/f64 [n]: the confidence score at the exit stage
 * @param exit_stage  NULL or i32/i64 [n]: 0-based stage where the sample exited
 * @param probs       NULL or f32/f64 [n, num_classes]: the (aggregated) probabilities
 * @return EFFML_E_INVALID_ARG (NULL cascade/ws, ws of another cascade, n < 1),
 *         EFFML_E_STATE (no stage), EFFML_E_SHAPE / EFFML_E_DTYPE (outputs),
 *         EFFML_E_NUMERIC (NaN/inf logits: the message names stage, sample and class),
 *         a callback's own error, EFFML_E_NOMEM.  On error the outputs are untouched and the
 *         workspace statistics are reset.
 * Routing: a stage with a threshold or window rule (selected by
 * effml_cascade_select_thresholds() or set with effml_cascade_set_exit_rule()) on a one-member
 * MSP score (stage 0, or EFFML_CASCADE_AGG_LAST; K <= 256) decides exits on a cheap f32
 * routing score, certified against the rule's bounds, and on the exact MSP for the samples
 * near a bound, so it exits exactly the samples the exact score would; outputs (pred, score,
 * probs) are exact whatever the route, the lowest index on tied probabilities included.
 * With only pred and exit_stage asked for, the last stage's pred is an f32 argmax certified
 * against an error bound and recomputed exactly where the bound does not separate the top two
 * classes.  Passing `probs` routes on the exact score (docs/cascades.md).
 * Cost: O(n * K) per stage reached plus the callbacks; the library's own loops use ctx's
 * threads and give identical results for every thread count.
 */
EFFML_API effml_status effml_cascade_run(effml_context *ctx, const effml_cascade *cascade,
                                         effml_cascade_workspace *ws, int64_t n, void *run_data,
                                         effml_tensor *pred, effml_tensor *score,
                                         effml_tensor *exit_stage, effml_tensor *probs);

/** Samples of the last successful run (0 if none). */
EFFML_API int64_t effml_cascade_workspace_num_samples(const effml_cascade_workspace *ws);
/** Samples of the last run that reached `stage` (0 if out of range). */
EFFML_API int64_t effml_cascade_workspace_reach_count(const effml_cascade_workspace *ws,
                                                      int32_t stage);
/** Samples of the last run that exited at `stage` (0 if out of range). */
EFFML_API int64_t effml_cascade_workspace_exit_count(const effml_cascade_workspace *ws,
                                                     int32_t stage);
/** Fraction of the last run's samples that exited at `stage` (NaN before a run). */
EFFML_API double effml_cascade_workspace_exit_fraction(const effml_cascade_workspace *ws,
                                                       int32_t stage);
/**
 * Expected cost of the last run in MACs per sample:
 * sum over stages m of (fraction of samples reaching m) * cost_m (Xia & Bouganis Sec. 4;
 * reference `cascade_results.py` cumulative MACs).  NaN before a run.
 */
EFFML_API double effml_cascade_workspace_expected_cost(const effml_cascade_workspace *ws);

/**
 * Predictions and scores of an ensemble (no early exit): what the last stage of a
 * cascade with these members computes, under opt's score and aggregation
 * (EFFML_CASCADE_AGG_LAST uses only the last member).
 * @param num_members  >= 1
 * @param logits       `num_members` tensors f32/f64 [n, opt->num_classes], same n
 * @param pred, score, probs  as in effml_cascade_run() (each may be NULL)
 * @return EFFML_E_INVALID_ARG, EFFML_E_SHAPE, EFFML_E_DTYPE, EFFML_E_NUMERIC, EFFML_E_NOMEM,
 *         EFFML_E_CANCELLED; outputs untouched on error.  Progress is reported before
 *         each member, in members.
 */
EFFML_API effml_status effml_cascade_ensemble_predict(effml_context *ctx, const effml_cascade_options *opt,
                                              int32_t num_members,
                                              const effml_tensor *const *logits,
                                              effml_tensor *pred, effml_tensor *score,
                                              effml_tensor *probs);

EFFML_END_DECLS

#endif /* EFFML_CASCADE_H */
