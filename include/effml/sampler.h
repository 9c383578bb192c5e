/**
 * @file effml/sampler.h
 * @brief Samplers: the SMOTE family and under-sampling, temperature sampling
 *        over data sources, and lp sensitivity sampling.
 *
 * Three kinds of data sampling, each with an explicit seed:
 *
 * 1. **Re-sampling of an imbalanced labelled set** `x [n_samples, n_features]`
 *    (f32 or f64), `y [n_samples]` (i32 or i64 labels, any values): SMOTE
 *    (Chawla et al., JAIR 2002), Borderline-SMOTE 1/2 (Han et al., 2005),
 *    ADASYN (He et al., 2008), random over/under-sampling, Tomek links and
 *    edited nearest neighbours, with imbalanced-learn 0.10's
 *    `sampling_strategy` meanings and output order (originals first, then one
 *    synthetic block per class in ascending label order).  A "plan" form
 *    returns, per output row, `base`, `neighbor` and `step` so a caller can
 *    generate rows in a stream: row = x[base] + step * (x[neighbor] - x[base])
 *    (neighbor = -1: a copy of x[base]).
 * 2. **Temperature sampling over K sources** (q_i proportional to
 *    (n_i/N)^(1/T)), schedules of T, UniMax (Chung et al., ICLR 2023),
 *    fairseq-style virtual sizes, O(1) alias draws and the three interleave
 *    stopping strategies of Hugging Face datasets.
 * 3. **lp sensitivity sampling** (Woodruff & Yasuda, ICML 2023): exact and
 *    sketched leverage scores, root leverage, lp Lewis weights (Cohen & Peng,
 *    STOC 2015), sensitivity upper bounds, Bernoulli / i.i.d. sampling with
 *    importance weights and merging of weighted samples.
 *
 * @code
 *   effml_sampler_resample_options opt;  effml_sampler_resample_options_init(&opt);
 *   opt.method = EFFML_SAMPLER_RESAMPLE_SMOTE;  opt.k_neighbors = 5;  opt.seed = 42;
 *   effml_tensor *xr, *yr;
 *   if (effml_sampler_resample(ctx, &opt, x, y, &xr, &yr) != EFFML_OK)
 *     fprintf(stderr, "%s\n", effml_context_last_error(ctx));
 * @endcode
 *
 * Determinism: every random choice comes from the library's generator
 * (xoshiro256**) seeded by the `seed` argument or option, with per-class and
 * per-item streams, so the same seed and inputs give the same output for every
 * thread count.  The streams differ from numpy's, so outputs are not
 * bit-identical to imbalanced-learn's; counts, order and geometry are.
 *
 * Threads: these functions are used with one context per thread; they use
 * the context's thread count for their own loops (kNN search).  An
 * `effml_sampler_alias` is used by one thread at a time.
 */
#ifndef EFFML_SAMPLER_H
#define EFFML_SAMPLER_H

#include "core.h"
#include "tensor.h"

EFFML_BEGIN_DECLS

/* ========================================================================
 * 1. Re-sampling (SMOTE family, under-sampling, cleaning)
 * ====================================================================== */

/** `sampling_strategy` kinds (imbalanced-learn `utils/_validation.py`). */
#define EFFML_SAMPLER_STRATEGY_AUTO 0         /**< over: 'not majority'; under/clean: 'not minority' */
#define EFFML_SAMPLER_STRATEGY_MINORITY 1     /**< the minority class only (over-samplers) */
#define EFFML_SAMPLER_STRATEGY_NOT_MINORITY 2 /**< every class but the minority */
#define EFFML_SAMPLER_STRATEGY_NOT_MAJORITY 3 /**< every class but the majority */
#define EFFML_SAMPLER_STRATEGY_ALL 4          /**< every class */
#define EFFML_SAMPLER_STRATEGY_MAJORITY 5     /**< the majority class only (under/clean samplers) */
#define EFFML_SAMPLER_STRATEGY_RATIO 6        /**< float `ratio` (binary problems only) */
#define EFFML_SAMPLER_STRATEGY_TARGETS 7      /**< per-class final counts (`target_labels`/`target_counts`) */

/** Re-sampling methods. */
#define EFFML_SAMPLER_RESAMPLE_SMOTE 1        /**< SMOTE (Chawla et al. 2002), imblearn `SMOTE` */
#define EFFML_SAMPLER_RESAMPLE_BORDERLINE1 2  /**< Borderline-SMOTE 1 (Han et al. 2005) */
#define EFFML_SAMPLER_RESAMPLE_BORDERLINE2 3  /**< Borderline-SMOTE 2 (Han et al. 2005) */
#define EFFML_SAMPLER_RESAMPLE_ADASYN 4       /**< ADASYN (He et al. 2008) */
#define EFFML_SAMPLER_RESAMPLE_SMOTENC 5      /**< SMOTE-NC, mixed continuous/categorical (Chawla 2002 §6.1); effml_sampler_resample() only */
#define EFFML_SAMPLER_RESAMPLE_RANDOM_OVER 6  /**< bootstrap copies, imblearn `RandomOverSampler` */
#define EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER 7 /**< imblearn `RandomUnderSampler` (no replacement) */
#define EFFML_SAMPLER_RESAMPLE_TOMEK 8        /**< remove Tomek-link members, imblearn `TomekLinks` */
#define EFFML_SAMPLER_RESAMPLE_ENN 9          /**< edited nearest neighbours, imblearn `EditedNearestNeighbours` */
#define EFFML_SAMPLER_RESAMPLE_NEARMISS 10    /**< NearMiss 1/2/3 (Mani & Zhang 2003), imblearn `NearMiss`; `version` */
#define EFFML_SAMPLER_RESAMPLE_RENN 11        /**< repeated ENN (Tomek 1976), imblearn `RepeatedEditedNearestNeighbours` */
#define EFFML_SAMPLER_RESAMPLE_ALLKNN 12      /**< ENN with k = 1..n_neighbors (Tomek 1976), imblearn `AllKNN` */
#define EFFML_SAMPLER_RESAMPLE_NCL 13         /**< neighbourhood cleaning rule (Laurikkala 2001), imblearn `NeighbourhoodCleaningRule` */
#define EFFML_SAMPLER_RESAMPLE_CNN 14         /**< condensed nearest neighbour (Hart 1968), imblearn `CondensedNearestNeighbour` */
#define EFFML_SAMPLER_RESAMPLE_OSS 15         /**< one-sided selection (Kubat & Matwin 1997), imblearn `OneSidedSelection` */
#define EFFML_SAMPLER_RESAMPLE_SMOTEENN 16    /**< SMOTE then ENN (Batista et al. 2004), imblearn `SMOTEENN` */
#define EFFML_SAMPLER_RESAMPLE_SMOTETOMEK 17  /**< SMOTE then Tomek links (Batista et al. 2004), imblearn `SMOTETomek` */
#define EFFML_SAMPLER_RESAMPLE_CLUSTER_CENTROIDS 18 /**< k-means centroids per class, imblearn `ClusterCentroids`; `voting` */
#define EFFML_SAMPLER_RESAMPLE_IHT 19 /**< instance hardness threshold (Smith et al. 2014), imblearn `InstanceHardnessThreshold`; `proba_fn`, `cv` */
#define EFFML_SAMPLER_RESAMPLE_SVMSMOTE 20 /**< SVM-SMOTE (Nguyen et al. 2011), imblearn `SVMSMOTE`; `support_indices` */
#define EFFML_SAMPLER_RESAMPLE_KMEANS_SMOTE 21 /**< KMeans-SMOTE (Douzas et al. 2018), imblearn `KMeansSMOTE` */
#define EFFML_SAMPLER_RESAMPLE_SMOTEN 22 /**< SMOTEN, nominal features only (Chawla et al. 2002), imblearn `SMOTEN`; effml_sampler_resample() only */

/** ENN selection rule (`kind_sel`). */
#define EFFML_SAMPLER_ENN_ALL 0  /**< keep a sample iff all its neighbours share its class */
#define EFFML_SAMPLER_ENN_MODE 1 /**< keep iff the neighbours' most common class is its class */

/** ClusterCentroids `voting`. */
#define EFFML_SAMPLER_VOTING_SOFT 0 /**< the k-means centroids themselves (imblearn's choice for dense x) */
#define EFFML_SAMPLER_VOTING_HARD 1 /**< the class row nearest to each centroid */

/**
 * Class probabilities for InstanceHardnessThreshold: fit a classifier on
 * `x_train` [n_train, n_features] (f64, row-major) with labels `y_train`
 * [n_train], and write P(classes[j] | x_test[i]) to `proba[i * n_classes + j]`
 * for the `n_test` rows of `x_test`.  `classes` [n_classes] are the sorted
 * labels of the whole y (a fold may lack some).  All arrays are borrowed for
 * the call.  Return 0 on success; any other value aborts the re-sampling with
 * EFFML_E_INVALID_ARG.  Called once per fold, from the calling thread.
 */
typedef int (*effml_sampler_proba_fn)(void *user_data, const double *x_train,
                                      const int64_t *y_train, int64_t n_train,
                                      const double *x_test, int64_t n_test, int64_t n_features,
                                      const int64_t *classes, int64_t n_classes, double *proba);

/**
 * Options of effml_sampler_resample() / effml_sampler_resample_plan().  Fill with
 * effml_sampler_resample_options_init(); fields are only ever added at the end and
 * the library reads only the first `struct_size` bytes.
 *
 * `sampling_strategy` (imbalanced-learn meanings; counts sorted by label, ties
 * for majority/minority go to the smallest label):
 * - over-samplers (SMOTE, Borderline, ADASYN, random over): the number to
 *   *generate* per targeted class is n_maj - n_c; RATIO (binary) generates
 *   round(n_maj * ratio) - n_min with a rounding that is robust to floating
 *   point (imblearn truncates and loses a sample, #1215); TARGETS gives
 *   *final* counts.
 * - random under-sampling: the number to *keep*: n_min (AUTO / NOT_MINORITY /
 *   MAJORITY / NOT_MAJORITY / ALL), round(n_min / ratio) for RATIO, TARGETS
 *   = counts kept.
 * - cleaning (Tomek, ENN): which classes may lose samples; TARGETS lists
 *   them in `target_labels` (`target_counts` is ignored and may be NULL).
 */
typedef struct effml_sampler_resample_options {
  uint32_t struct_size;          /**< sizeof(effml_sampler_resample_options), set by _init */
  int32_t method;                /**< EFFML_SAMPLER_RESAMPLE_* (default SMOTE) */
  int32_t sampling_strategy;     /**< EFFML_SAMPLER_STRATEGY_* (default AUTO) */
  double ratio;                  /**< for EFFML_SAMPLER_STRATEGY_RATIO: over (0,1], under (0,1] */
  int64_t n_targets;             /**< entries of target_labels / target_counts */
  const int64_t *target_labels;  /**< borrowed during the call */
  const int64_t *target_counts;  /**< borrowed during the call */
  int64_t k_neighbors;           /**< SMOTE family neighbours (imblearn defaults: 5; KMeans-SMOTE 2); 0 = the method's default */
  int64_t m_neighbors;           /**< Borderline danger test neighbours (default 10) */
  int64_t n_neighbors;           /**< ENN, RENN, AllKNN, NCL, NearMiss, SMOTEENN neighbours (imblearn default 3), CNN, OSS (default 1); 0 = the method's default; no cap beyond the rows searched */
  int32_t kind_sel;              /**< ENN: EFFML_SAMPLER_ENN_ALL (default) or EFFML_SAMPLER_ENN_MODE */
  uint64_t seed;                 /**< seed of every random choice (default 0) */
  int64_t block_rows;            /**< kNN query rows per block (memory bound; 0 = 256) */
  int64_t n_categorical;         /**< SMOTE-NC: number of categorical columns (>= 1, < n_features) */
  const int64_t *categorical_features; /**< SMOTE-NC: their column indices; borrowed during the call */
  int32_t version;               /**< NearMiss version 1, 2 or 3 (default 1) */
  int32_t allow_minority;        /**< AllKNN: 1 = go on when a class falls below the minority's size (default 0) */
  int64_t n_neighbors_ver3;      /**< NearMiss-3 pre-selection neighbours (default 3) */
  int64_t max_iter;              /**< RENN: at most this many ENN passes (default 100) */
  double threshold_cleaning;     /**< NCL: clean classes of size >= threshold * minority size (default 0.5) */
  int64_t n_seeds_S;             /**< CNN, OSS: random rows of each targeted class that start the kept set (default 1) */
  int32_t voting;                /**< ClusterCentroids: EFFML_SAMPLER_VOTING_SOFT (default) or _HARD */
  int32_t reserved0;             /**< must be 0 */
  int64_t kmeans_n_init;         /**< k-means restarts (k-means++ seeding, Lloyd), best inertia kept; 0 = the method's default: ClusterCentroids 10 (scikit-learn 1.2's KMeans), KMeans-SMOTE 3 (the n_init of imblearn 0.10's MiniBatchKMeans) */
  int64_t kmeans_max_iter;       /**< Lloyd iterations per run at most; 0 = the method's default: ClusterCentroids 300, KMeans-SMOTE 20 */
  double kmeans_tol;             /**< stop when the centre shift^2 <= tol * mean feature variance (default 1e-4) */
  effml_sampler_proba_fn proba_fn; /**< IHT: the classifier (required for IHT) */
  void *proba_user_data;         /**< IHT: passed to proba_fn */
  int64_t cv;                    /**< IHT: stratified folds (default 5) */
  int64_t n_support;             /**< SVM-SMOTE: entries of support_indices */
  const int64_t *support_indices; /**< SVM-SMOTE: rows of x that are support vectors (any class; e.g. scikit-learn's SVC.support_); borrowed */
  double out_step;               /**< SVM-SMOTE: extrapolation step for safe support vectors (default 0.5) */
  int64_t n_clusters;            /**< KMeans-SMOTE: k-means clusters (imblearn's kmeans_estimator as an int; default 8) */
  double cluster_balance_threshold; /**< KMeans-SMOTE: minimum class fraction of a cluster (NaN = imblearn's "auto", the default) */
  double density_exponent;       /**< KMeans-SMOTE: sparsity exponent (NaN = "auto", the default) */
} effml_sampler_resample_options;

/** Fill `opt` with defaults.  NULL is ignored. */
EFFML_API void effml_sampler_resample_options_init(effml_sampler_resample_options *opt);

/**
 * Exact k-nearest-neighbour search (Euclidean), blocked through GEMM, multi-
 * threaded over query blocks, memory O(threads * 256 * 2048 doubles) -- never
 * an n x n matrix.  Candidates are re-ranked with exactly computed distances
 * and ties are broken by the smaller reference index.
 *
 * @param x_ref    [n_ref, n_features] f32 or f64, contiguous, finite.
 * @param x_query  [n_query, n_features], same dtype; NULL: query = x_ref and a
 *                 point is never its own neighbour (by index, so an exact
 *                 duplicate *is* returned as a neighbour at distance 0).
 * @param k        neighbours per query, 1 <= k <= n_ref (n_ref - 1 when x_query is NULL); no other
 *                 cap (each candidate insertion costs O(k), so a huge k is slow, not wrong).
 * @param indices  receives [n_query, k] i64 reference indices, nearest first (owned).
 * @param distances NULL, or receives [n_query, k] f64 Euclidean distances (owned).
 * @return EFFML_E_INVALID_ARG (NULL, bad k), EFFML_E_SHAPE, EFFML_E_DTYPE,
 *         EFFML_E_NUMERIC (NaN/inf), EFFML_E_NOMEM.  Outputs untouched on error.
 */
EFFML_API effml_status effml_sampler_knn(effml_context *ctx, const effml_tensor *x_ref,
                                 const effml_tensor *x_query, int64_t k, effml_tensor **indices,
                                 effml_tensor **distances);

/**
 * effml_sampler_knn() into caller-owned outputs (docs/conventions.md), for
 * callers that search repeatedly or own their arrays (a binding's numpy
 * buffers): no allocation of the outputs, no first-touch page faults.
 * @param indices    i64 `[n_query, k]`, contiguous, writable; overwritten
 * @param distances  NULL, or f64 `[n_query, k]`, contiguous, writable; overwritten
 * @return as effml_sampler_knn(), plus EFFML_E_DTYPE / EFFML_E_SHAPE /
 *         EFFML_E_INVALID_ARG (read-only) naming an output that does not fit.
 *         Validation errors leave the outputs untouched; EFFML_E_NOMEM during
 *         the search leaves them unspecified.
 */
EFFML_API effml_status effml_sampler_knn_into(effml_context *ctx, const effml_tensor *x_ref,
                                              const effml_tensor *x_query, int64_t k,
                                              effml_tensor *indices, effml_tensor *distances);

/**
 * Resolve `sampling_strategy` for labels `y` as the method in `opt` would.
 *
 * @param y       [n_samples] i32 or i64 labels.
 * @param labels  receives [n_classes] i64 sorted distinct labels (owned).
 * @param values  receives [n_classes] i64: over-samplers, samples to generate;
 *                random under-sampling, samples to keep; cleaning, 1 if the
 *                class may lose samples.  -1 for classes not targeted.
 * @return EFFML_E_INVALID_ARG (fewer than 2 classes, strategy not allowed for
 *         the method, ratio out of range or removing samples, label in
 *         target_labels absent from y, target count below / above the class
 *         count), EFFML_E_SHAPE, EFFML_E_DTYPE, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_sampler_strategy_resolve(effml_context *ctx,
                                                       const effml_sampler_resample_options *opt,
                                                       const effml_tensor *y,
                                                       effml_tensor **labels,
                                                       effml_tensor **values);

/**
 * Plan a re-sampling without materialising it: output row r is
 * `x[base[r]] + step[r] * (x[neighbor[r]] - x[base[r]])`, or a copy of
 * `x[base[r]]` when `neighbor[r] == -1`; its label is `y[base[r]]`.
 *
 * Over-samplers list every original row first (base = 0..n-1, neighbor -1),
 * then one synthetic block per class in ascending label order.  Random
 * under-sampling and ENN list the kept rows grouped by class in label order
 * (random under-sampling: targeted classes in random order, others in
 * original order; ENN: original order within a class); Tomek keeps the
 * original order.
 *
 * Method details (see docs/samplers.md, "Where we differ"):
 * - SMOTE: for each targeted class, the k nearest neighbours within the
 *   class, self excluded by index; base pairs (row, neighbour) i.i.d. uniform
 *   over the n_c * k pairs; step ~ U[0,1).
 * - Borderline-1/2: m-NN on all rows; danger iff m/2 <= (number of other-class neighbours) < m;
 *   bases are danger points; Borderline-1 interpolates to class neighbours,
 *   Borderline-2 to neighbours among all rows with step ~ U[0,1)*U[0,0.5)
 *   toward other classes.  A class without danger points is skipped.
 * - ADASYN: g_i = rint(r_i * n_new) samples from base i (not balanced, as
 *   the paper and the anchor).
 * - NearMiss (under-sampler; `version`, `n_neighbors`, `n_neighbors_ver3`):
 *   each targeted class keeps its rows with the smallest sum of distances to
 *   their n_neighbors nearest (1) / min(n_neighbors, n_min) farthest (2; any
 *   n_neighbors >= 1, as imblearn) minority rows, or (3) among
 *   the union of each minority row's n_neighbors_ver3 nearest rows of the
 *   class, the largest sums to their n_neighbors nearest minority rows (may
 *   keep fewer than asked, as imblearn).  Kept rows in score order.
 * - RENN (`n_neighbors`, `kind_sel`, `max_iter`): ENN passes until one removes
 *   nothing, a non-minority class falls below the minority's size, a class
 *   vanishes, or max_iter passes.  AllKNN (`n_neighbors`, `kind_sel`,
 *   `allow_minority`): ENN passes with k = 1..n_neighbors with the last two
 *   stops (the size stop off when allow_minority is set).
 *   sampling_strategy is re-resolved on the remaining rows at every pass.
 * - NCL (`n_neighbors`, `kind_sel`, `threshold_cleaning`): removes the rows a
 *   majority-vote ENN removes, and the neighbours of every minority row its
 *   n_neighbors neighbours misclassify (MODE: by majority vote; ALL: any
 *   neighbour of another class) in targeted classes with at least
 *   threshold_cleaning * |minority| rows (the paper's rule; imbalanced-learn
 *   0.10 compares with threshold_cleaning * n_samples).  Original order.
 * - Neighbour counts (k_neighbors, m_neighbors, n_neighbors,
 *   n_neighbors_ver3) have no cap beyond the rows searched; more is
 *   EFFML_E_INVALID_ARG naming the count and the rows.
 * - SMOTE-NC cannot be planned (categorical values are votes, not
 *   interpolations): EFFML_E_UNSUPPORTED here, use effml_sampler_resample().
 *
 * @param x        [n_samples, n_features] f32 or f64, contiguous, finite
 *                 (integer x is refused with EFFML_E_DTYPE; random samplers
 *                 accept NaN).
 * @param y        [n_samples] i32 or i64.
 * @param base, neighbor  receive [n_out] i64 (owned).
 * @param step     receives [n_out] f64 (owned).
 * @return EFFML_E_INVALID_ARG (bad option; "k_neighbors=5 needs at least 6
 *         samples of class 3, got 5"; one class), EFFML_E_SHAPE (empty or
 *         mismatched inputs), EFFML_E_DTYPE, EFFML_E_NUMERIC (NaN/inf; ADASYN
 *         with no other-class neighbour or nothing to generate),
 *         EFFML_E_NOMEM.  Outputs untouched on error.
 */
EFFML_API effml_status effml_sampler_resample_plan(effml_context *ctx, const effml_sampler_resample_options *opt,
                                           const effml_tensor *x, const effml_tensor *y,
                                           effml_tensor **base, effml_tensor **neighbor,
                                           effml_tensor **step);

/**
 * Materialise a plan: `x_out[r] = x[base[r]] + step[r] * (x[neighbor[r]] -
 * x[base[r]])` in double precision, stored in x's dtype; `y_out[r] =
 * y[base[r]]` in y's dtype.
 * @param x_out, y_out  receive [n_out, n_features] and [n_out] (owned).
 * @return EFFML_E_INVALID_ARG, EFFML_E_SHAPE, EFFML_E_DTYPE, EFFML_E_RANGE
 *         (an index outside [0, n_samples)), EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_sampler_resample_apply(effml_context *ctx, const effml_tensor *x,
                                            const effml_tensor *y, const effml_tensor *base,
                                            const effml_tensor *neighbor,
                                            const effml_tensor *step, effml_tensor **x_out,
                                            effml_tensor **y_out);

/**
 * effml_sampler_resample_apply() into caller-owned outputs: rows 0..m-1 of
 * `x_out` / `y_out` are overwritten (m = the plan's length), later rows are
 * left as they are.
 * @param x_out  `[cap, n_features]` in x's dtype, contiguous, writable, cap >= m
 * @param y_out  `[cap]` in y's dtype, contiguous, writable
 * @return as effml_sampler_resample_apply(); EFFML_E_SHAPE when cap < m or
 *         the outputs disagree.  On error the outputs are untouched.
 */
EFFML_API effml_status effml_sampler_resample_apply_into(effml_context *ctx, const effml_tensor *x,
                                                         const effml_tensor *y,
                                                         const effml_tensor *base,
                                                         const effml_tensor *neighbor,
                                                         const effml_tensor *step,
                                                         effml_tensor *x_out, effml_tensor *y_out);

/**
 * Re-sample `x`, `y` (plan + apply).  x_out keeps x's dtype (f32 stays f32),
 * y_out keeps y's dtype.  Errors as effml_sampler_resample_plan().
 *
 * SMOTE-NC (imblearn `SMOTENC`, 0.12+ semantics): the columns listed in
 * `categorical_features` hold category codes (any finite numbers, compared
 * exactly).  Per targeted class, neighbours are found on [continuous |
 * one-hot categories * med_c / sqrt(2)], med_c the median of the class's
 * continuous standard deviations (ddof 0; raw one-hot when med_c is 0), so a
 * differing category adds exactly med_c^2 to the squared distance.
 * Continuous columns are interpolated as in SMOTE; each categorical column
 * takes the most frequent value among the base row's k neighbours (ties
 * broken at random from the class stream).  Errors: no or only categorical
 * columns, an index out of range or repeated (EFFML_E_INVALID_ARG).
 */
EFFML_API effml_status effml_sampler_resample(effml_context *ctx, const effml_sampler_resample_options *opt,
                                      const effml_tensor *x, const effml_tensor *y,
                                      effml_tensor **x_out, effml_tensor **y_out);

/**
 * effml_sampler_resample() into caller-owned outputs: rows 0..*n_out-1 of
 * `x_out` / `y_out` are overwritten, later rows are left as they are.  When
 * the result has more rows than the outputs hold, the call fails with
 * EFFML_E_SHAPE, writes nothing but `*n_out` (the rows needed), and the
 * caller can allocate that many and call again (as with snprintf).  For
 * SMOTE-NC the result is built in library memory and copied.
 * @param x_out  `[cap, n_features]` in x's dtype, contiguous, writable
 * @param y_out  `[cap]` in y's dtype, contiguous, writable
 * @param n_out  receives the number of result rows (also on the EFFML_E_SHAPE
 *               "too small" error)
 * @return as effml_sampler_resample(); EFFML_E_SHAPE (outputs too small or
 *         disagreeing).  On any other error nothing is written.
 */
EFFML_API effml_status effml_sampler_resample_into(effml_context *ctx,
                                                   const effml_sampler_resample_options *opt,
                                                   const effml_tensor *x, const effml_tensor *y,
                                                   effml_tensor *x_out, effml_tensor *y_out,
                                                   int64_t *n_out);

/* ========================================================================
 * 2. Temperature sampling over K data sources
 * ====================================================================== */

/**
 * Temperature probabilities q_i = p_i^(1/T) / sum_j p_j^(1/T), p_i = n_i/N
 * (Arivazhagan et al. 2019, arXiv 1907.05019, §4.2).  T = 1 is proportional,
 * T = INFINITY uniform over sources with n_i > 0; sources with n_i = 0 get 0.
 * @param sizes  [n_sources] sizes n_i >= 0 (examples or tokens), sum > 0.
 * @param probs  receives [n_sources] probabilities (caller memory).
 * @return EFFML_E_INVALID_ARG (NULL, n_sources < 1, T <= 0 or NaN, a size
 *         negative/non-finite, all sizes 0).
 */
EFFML_API effml_status effml_sampler_temperature_probs(effml_context *ctx, const double *sizes,
                                               int64_t n_sources, double temperature,
                                               double *probs);

/** As effml_sampler_temperature_probs() in the alpha = 1/T form (XLM, mT5): q_i ∝ p_i^alpha, alpha >= 0 (0: uniform). */
EFFML_API effml_status effml_sampler_temperature_probs_alpha(effml_context *ctx, const double *sizes,
                                                     int64_t n_sources, double alpha,
                                                     double *probs);

/** Temperature schedule kinds. */
#define EFFML_SAMPLER_SCHEDULE_CONSTANT 0 /**< T = t_start */
#define EFFML_SAMPLER_SCHEDULE_LINEAR 1   /**< t_start -> t_end linearly over total_steps */
#define EFFML_SAMPLER_SCHEDULE_COSINE 2   /**< t_end + (t_start - t_end)(1 + cos(pi f))/2, f = step/total */
#define EFFML_SAMPLER_SCHEDULE_COOLDOWN 3 /**< t_start until switch_fraction*total_steps, then t_end (Li et al. 2025) */
#define EFFML_SAMPLER_SCHEDULE_CUSTOM 4   /**< fn(user_data, step, total_steps) */

/** Caller-supplied schedule: returns T > 0 for `step` of `total_steps`. */
typedef double (*effml_sampler_temperature_fn)(void *user_data, int64_t step, int64_t total_steps);

/** A schedule of T over training steps.  Fill with effml_sampler_temperature_schedule_init(). */
typedef struct effml_sampler_temperature_schedule {
  uint32_t struct_size;    /**< set by _init */
  int32_t kind;            /**< EFFML_SAMPLER_SCHEDULE_* (default CONSTANT) */
  double t_start;          /**< T at step 0 (default 1) */
  double t_end;            /**< T at the end (default 1) */
  int64_t total_steps;     /**< >= 1 (default 1) */
  double switch_fraction;  /**< COOLDOWN switch point in [0,1] (default 0.5) */
  effml_sampler_temperature_fn fn; /**< CUSTOM only */
  void *user_data;         /**< passed to fn */
} effml_sampler_temperature_schedule;

/** Fill `s` with defaults.  NULL is ignored. */
EFFML_API void effml_sampler_temperature_schedule_init(effml_sampler_temperature_schedule *s);

/**
 * T at `step` (steps past total_steps keep the final value).
 * @return EFFML_E_INVALID_ARG (NULL, unknown kind, total_steps < 1, step < 0,
 *         temperatures <= 0, fraction outside [0,1], CUSTOM without fn or
 *         returning T <= 0 / NaN).
 */
EFFML_API effml_status effml_sampler_temperature_at(effml_context *ctx,
                                            const effml_sampler_temperature_schedule *schedule,
                                            int64_t step, double *temperature);

/**
 * UniMax budget allocation (Chung et al., ICLR 2023, Alg. 1): sources sorted
 * by size ascending; the i-th of L gets U = min(B/(L-i), max_epochs * n),
 * B -= U.  probs = U / sum U.
 * @param sizes       [n_sources] > 0 (e.g. characters).
 * @param budget      total budget B > 0 (same unit).
 * @param max_epochs  maximum epochs per source N > 0.
 * @param allocation  NULL or receives [n_sources] U (caller memory).
 * @param probs       receives [n_sources] (caller memory).
 */
EFFML_API effml_status effml_sampler_unimax(effml_context *ctx, const double *sizes, int64_t n_sources,
                                    double budget, double max_epochs, double *allocation,
                                    double *probs);

/**
 * Per-epoch virtual sizes (fairseq `SampledMultiDataset`): the epoch has
 * V examples, V = `virtual_size` or, when 0, fairseq's default
 * int(min(sum_i (q_i / q_L) n_L, 1.5 N)) with L the largest source; source i
 * contributes floor(V q_i) plus one of the largest remainders (ties: lower
 * index) so the counts sum to V exactly (fairseq fills the remainder by
 * random draws; ceil(n * ratio) suffers float error, 1000*0.37 -> 371).
 * @param sizes   [n_sources] >= 0.
 * @param probs   [n_sources] >= 0, sum 1 (± 1e-9).
 * @param counts  receives [n_sources] (caller memory).
 * @param virtual_size_out  NULL or receives V.
 */
EFFML_API effml_status effml_sampler_virtual_sizes(effml_context *ctx, const int64_t *sizes,
                                           const double *probs, int64_t n_sources,
                                           int64_t virtual_size, int64_t *counts,
                                           int64_t *virtual_size_out);

/** Draws from a fixed discrete distribution in O(1) each (Walker/Vose alias method). */
typedef struct effml_sampler_alias effml_sampler_alias;

/**
 * Build an alias table for `weights` (>= 0, finite, sum > 0; normalised here)
 * with its own generator seeded by `seed`.  O(n) time and memory.
 * @param out  receives the sampler (owned; effml_sampler_alias_free()).
 */
EFFML_API effml_status effml_sampler_alias_create(effml_context *ctx, const double *weights,
                                                  int64_t n, uint64_t seed,
                                                  effml_sampler_alias **out);
/** Free a sampler; NULL is a no-op. */
EFFML_API void effml_sampler_alias_free(effml_sampler_alias *sampler);
/**
 * Write `count` draws (indices in [0, n)) to `out` (caller memory), continuing
 * the sampler's stream: the same seed gives the same sequence however the
 * draws are split into calls.  A zero-weight index is never drawn.
 */
EFFML_API effml_status effml_sampler_alias_draw(effml_context *ctx, effml_sampler_alias *sampler,
                                                int64_t count, int64_t *out);

/** Interleave stopping strategies (Hugging Face datasets `interleave_datasets`). */
#define EFFML_SAMPLER_STOP_FIRST_EXHAUSTED 0 /**< stop once any source has been used up */
#define EFFML_SAMPLER_STOP_ALL_EXHAUSTED 1   /**< stop once every source has been used up (sources wrap) */
#define EFFML_SAMPLER_STOP_ALL_EXHAUSTED_WITHOUT_REPLACEMENT 2 /**< each example once; skip exhausted sources */

/**
 * Interleave K sources of `lengths` examples: the sequence of (source,
 * example index).  probs NULL: round robin (first exhausted: min(len) rounds;
 * all exhausted: max(len) rounds, short sources wrap; without replacement:
 * exhausted sources skipped).  With probs: each step draws a source (alias
 * method, generator seeded by `seed`) and emits its next example; the stop
 * test runs before each draw, so the example that exhausts a source is
 * included.  Sources with probability 0 are never drawn and never block
 * stopping.
 * @param lengths  [n_sources] >= 1.
 * @param probs    NULL or [n_sources] >= 0 with sum 1 (± 1e-6).
 * @param max_len  safety cap on the output length (>= 1); EFFML_E_RANGE if reached.
 * @param source, index  receive [n_out] i64 (owned).
 */
EFFML_API effml_status effml_sampler_interleave(effml_context *ctx, const int64_t *lengths,
                                        int64_t n_sources, const double *probs,
                                        int32_t stopping_strategy, uint64_t seed,
                                        int64_t max_len, effml_tensor **source,
                                        effml_tensor **index);

/**
 * effml_sampler_interleave() into caller-owned arrays: the sequence fills
 * entries 0..*n_out-1 of `source` and `index`; their length plays the role of
 * max_len.
 * @param source, index  i64 `[cap]`, contiguous, writable, same cap >= 1
 * @param n_out  receives the sequence length
 * @return as effml_sampler_interleave() (EFFML_E_RANGE when the sequence does
 *         not fit in cap entries: the arrays' contents are then unspecified);
 *         EFFML_E_DTYPE / EFFML_E_SHAPE for unusable arrays (untouched).
 */
EFFML_API effml_status effml_sampler_interleave_into(effml_context *ctx, const int64_t *lengths,
                                                     int64_t n_sources, const double *probs,
                                                     int32_t stopping_strategy, uint64_t seed,
                                                     effml_tensor *source, effml_tensor *index,
                                                     int64_t *n_out);

/* ========================================================================
 * 3. lp sensitivity sampling
 * ====================================================================== */

/** Leverage score methods. */
#define EFFML_SAMPLER_LEVERAGE_EXACT 0  /**< CholeskyQR, refined (CholeskyQR2) unless a rounding bound shows it is not needed; Householder TSQR when cond(A) is too large */
#define EFFML_SAMPLER_LEVERAGE_SKETCH 1 /**< R from the QR of a CountSketch S A (Drineas et al. JMLR 2012), tau_i = ||a_i R^-1||^2 */

/** Options of the leverage / Lewis / sensitivity functions.  Fill with _init. */
typedef struct effml_sampler_leverage_options {
  uint32_t struct_size;  /**< set by _init */
  int32_t method;        /**< EFFML_SAMPLER_LEVERAGE_* (default EXACT) */
  int64_t sketch_rows;   /**< SKETCH: CountSketch rows (0: max(4 d^2, 64 d)) */
  uint64_t seed;         /**< SKETCH generator seed */
  double rank_tol;       /**< relative |R_jj| below which A counts as rank deficient (default 1e-12) */
  int64_t max_iter;      /**< Lewis fixed-point iterations (default 200) */
  double tol;            /**< Lewis convergence: max |log w_new - log w| (default 1e-12) */
} effml_sampler_leverage_options;

/** Fill `opt` with defaults.  NULL is ignored. */
EFFML_API void effml_sampler_leverage_options_init(effml_sampler_leverage_options *opt);

/**
 * Leverage scores tau_i = a_i^T (A^T A)^{-1} a_i = ||U_i||^2 (Woodruff &
 * Yasuda 2023, arXiv 2306.00732, §3); sum tau = d.  EXACT: R = chol(A^T A)
 * from one Gram pass, tau_i = ||a_i R^{-1}||^2 from a second pass when a
 * rounding-error bound shows this is as accurate as refining: kappa2 =
 * ||W||_2^2 <= 4 for W = (R D^{-1})^{-1}, D = R's column norms, i.e. the
 * columns' correlation matrix has no eigenvalue below 1/4 (column scaling
 * does not count).  Otherwise one CholeskyQR refinement
 * (CholeskyQR2, Fukaya et al. 2014: Q = U R2^{-1}, R2 = chol(U^T U),
 * U = A R^{-1}; three passes), and when cond(A)^2 eps is too large for it,
 * R from a tall-skinny Householder QR (TSQR: LAPACK dgelqf on fixed row
 * blocks, then on the stacked R factors) plus the same refinement.
 * Householder makes R backward stable for any condition number below 1/eps,
 * and the refinement restores the orthogonality a plain A R^{-1} loses
 * (error ~ cond(A) eps), so the scores match numpy's QR where a Cholesky of
 * A^T A (cond^2) already fails.  The progress callback is called once per
 * pass over A.  Row blocks are fixed (not per thread), so results are
 * identical for any thread count.
 * @param a    [n, d] f32 or f64 contiguous, n >= d >= 1, finite.
 * @param tau  receives [n] f64 (owned).
 * @return EFFML_E_NUMERIC (NaN/inf; rank deficient: "|R_jj|/max = ..."),
 *         EFFML_E_SHAPE (n < d, not 2-D), EFFML_E_DTYPE, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_sampler_leverage_scores(effml_context *ctx,
                                             const effml_sampler_leverage_options *opt,
                                             const effml_tensor *a, effml_tensor **tau);

/**
 * effml_sampler_leverage_scores() into a caller-owned `tau`: f64 `[n]`,
 * contiguous, writable.  Validation errors leave it untouched; a numerical
 * failure during the factorisation (EFFML_E_NUMERIC) or EFFML_E_NOMEM leaves
 * it unspecified.
 */
EFFML_API effml_status effml_sampler_leverage_scores_into(effml_context *ctx,
                                                          const effml_sampler_leverage_options *opt,
                                                          const effml_tensor *a, effml_tensor *tau);

/** Root leverage scores tau_i^(p/2) (Woodruff & Yasuda 2023, 1 <= p <= 2). */
EFFML_API effml_status effml_sampler_root_leverage_scores(effml_context *ctx,
                                                  const effml_sampler_leverage_options *opt,
                                                  const effml_tensor *a, double p,
                                                  effml_tensor **scores);

/**
 * lp Lewis weights (Cohen & Peng, STOC 2015, §3): the fixed point of
 * w_i^(2/p) = a_i^T (A^T W^{1-2/p} A)^{-1} a_i, iterated from w = 1 as
 * w_i <- w_i^{1-p/2} tau_i(W^{1/2-1/p} A)^{p/2}.  The map contracts in log
 * space with factor |1 - p/2| < 1, so it converges for 0 < p < 4 (p = 2:
 * leverage scores in one step); p >= 4 needs convex optimisation and is
 * refused.  sum w = d.
 * @param p           0 < p < 4 (else EFFML_E_INVALID_ARG).
 * @param weights     receives [n] f64 (owned).
 * @param iterations  NULL or receives the iterations used.
 * @return as effml_sampler_leverage_scores(); EFFML_E_NUMERIC if not converged in max_iter.
 */
EFFML_API effml_status effml_sampler_lewis_weights(effml_context *ctx, const effml_sampler_leverage_options *opt,
                                           const effml_tensor *a, double p,
                                           effml_tensor **weights, int64_t *iterations);

/**
 * Upper bounds s_i >= sigma_i^(p) on the lp sensitivities (WY23 §3.10):
 * 1 <= p <= 2: min(1, w_i, tau_i^(p/2)); 2 < p < 4: min(1, d^(p/2-1) w_i),
 * with w the lp Lewis weights.
 * @param p  1 <= p < 4.
 */
EFFML_API effml_status effml_sampler_sensitivity_upper_bounds(effml_context *ctx,
                                                      const effml_sampler_leverage_options *opt,
                                                      const effml_tensor *a, double p,
                                                      effml_tensor **scores);

/** Sampling schemes of effml_sampler_sensitivity_sample(). */
#define EFFML_SAMPLER_DRAW_BERNOULLI 0 /**< keep i with pi_i = min(1, m s_i / S) */
#define EFFML_SAMPLER_DRAW_IID 1       /**< m i.i.d. draws with q_i = s_i / S, duplicates merged */

/**
 * Sample rows by scores with lp importance weights, so that
 * E ||S A x||_p^p = ||A x||_p^p.  BERNOULLI: weight pi_i^(-1/p) (one
 * independent stream per row: same output for any thread count).  IID:
 * round(m) alias draws; a row drawn c_i times gets (c_i / (m q_i))^(1/p).
 * Indices are returned in ascending order.
 * @param scores   [n] f64 >= 0, finite, sum > 0.
 * @param m        target sample size > 0.
 * @param p        p >= 1 (1/p of the weight exponent; p = 2 for least squares).
 * @param indices  receives [k] i64 (owned); weights receives [k] f64 (owned).
 */
EFFML_API effml_status effml_sampler_sensitivity_sample(effml_context *ctx, const effml_tensor *scores,
                                                double m, double p, int32_t scheme,
                                                uint64_t seed, effml_tensor **indices,
                                                effml_tensor **weights);

/**
 * Merge two weighted samples (data arriving in parts): indices of b are
 * shifted by `offset_b` (the row count of the part before), the union is
 * sorted, and a row present in both gets (w_a^p + w_b^p)^(1/p).
 * @param idx_a, w_a  [k_a] i64 ascending, [k_a] f64; idx_b, w_b likewise.
 * @return EFFML_E_INVALID_ARG (p < 1, offset < 0, weights <= 0), EFFML_E_SHAPE,
 *         EFFML_E_DTYPE, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_sampler_weighted_sample_merge(effml_context *ctx, const effml_tensor *idx_a,
                                                   const effml_tensor *w_a,
                                                   const effml_tensor *idx_b,
                                                   const effml_tensor *w_b, int64_t offset_b,
                                                   double p, effml_tensor **indices,
                                                   effml_tensor **weights);

/** Score rules of effml_sampler_weighted_sample_reduce(). */
#define EFFML_SAMPLER_SCORE_LEVERAGE 0      /**< leverage scores (p = 2) */
#define EFFML_SAMPLER_SCORE_ROOT_LEVERAGE 1 /**< root leverage scores tau^(p/2) (1 <= p <= 2) */
#define EFFML_SAMPLER_SCORE_SENSITIVITY 2   /**< sensitivity upper bounds from Lewis weights (1 <= p < 4) */

/**
 * The "reduce" step of merge-and-reduce coresets (Har-Peled & Mazumdar,
 * STOC 2004, §3; lp sensitivities: Woodruff & Yasuda, ICML 2023, arXiv
 * 2301.10186): re-sample a weighted sample back to about `m` rows.  Row i of
 * `a` with weight w_i (an lp importance weight, as
 * effml_sampler_sensitivity_sample() returns) stands for w_i^p |a_i x|^p, i.e.
 * the row w_i a_i.  Scores s are computed on B = diag(w) A by `score`; row i
 * is kept with pi_i = min(1, m s_i / S) (Bernoulli, the coin a hash of
 * (seed, i): independent of threads and of how rows are split) and gets the
 * weight w_i pi_i^(-1/p), so E sum_kept w'^p |a x|^p = sum w^p |a x|^p for
 * every x.  Merging two samples (effml_sampler_weighted_sample_merge()) and
 * reducing the union is one node of a merge-and-reduce tree.
 *
 * Error growth: if every reduce is a (1 +- eps) approximation of its input
 * (with probability 1 - delta), a tree of depth L is a (1 +- eps)^L
 * approximation of the data (with probability 1 - (number of nodes) delta),
 * about 1 + L eps for small eps: keep m larger, or the tree shallower (fewer,
 * larger partitions), to hold the final error.
 *
 * @param opt      leverage options (NULL: defaults), as effml_sampler_leverage_scores().
 * @param a        [k, d] f32 or f64, finite, k >= d, diag(w) A of full column rank.
 * @param w        [k] f64 weights, finite and > 0.
 * @param m        target sample size > 0 (the expected size is sum pi_i <= m).
 * @param p        the lp norm (see `score`).
 * @param score    EFFML_SAMPLER_SCORE_*.
 * @param indices  receives [k'] i64 ascending row positions into `a` (owned).
 * @param weights  receives [k'] f64 new weights (owned).
 * @return EFFML_E_INVALID_ARG (bad m, p for the score, unknown score, weight
 *         <= 0 or not finite, NULL), EFFML_E_SHAPE (not 2-D, lengths differ,
 *         k < d), EFFML_E_DTYPE, EFFML_E_NUMERIC (NaN/inf, rank deficient, no
 *         row kept), EFFML_E_NOMEM.  Outputs untouched on error.
 * Threads: uses ctx's threads for the scores; same result for any count.
 */
EFFML_API effml_status effml_sampler_weighted_sample_reduce(effml_context *ctx,
                                                            const effml_sampler_leverage_options *opt,
                                                            const effml_tensor *a,
                                                            const effml_tensor *w, double m,
                                                            double p, int32_t score, uint64_t seed,
                                                            effml_tensor **indices,
                                                            effml_tensor **weights);

EFFML_END_DECLS

#endif /* EFFML_SAMPLER_H */
