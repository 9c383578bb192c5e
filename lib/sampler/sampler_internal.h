/* Internal helpers shared by the sampler files (lib/sampler/). Hidden. */
#ifndef EFFML_SAMPLER_INTERNAL_H
#define EFFML_SAMPLER_INTERNAL_H

#include "../tensor/tensor_internal.h"

/* Default rows per kNN query block and reference block. */
#define EFFML__KNN_QBLOCK 256
#define EFFML__KNN_RBLOCK 2048
/* effml_sampler_knn's cancellation interval: a progress report before each round of this many
 * query blocks per worker thread (docs/conventions.md; tests derive their counts from it). */
#define EFFML__KNN_BLOCKS_PER_ROUND 8
/* Re-sampling writes its output in rounds of this many rows, a progress report before each. */
#define EFFML__RESAMPLE_ROUND_ROWS ((int64_t)1 << 16)

/* Exact kNN on f64 row-major data.  ref [n_ref, d], q [n_q, d].  When
 * `self_index` is non-NULL, query i never returns reference row
 * self_index[i] (the query's own row).  idx receives [n_q, k], dist2 (may be
 * NULL) squared exact distances.  Needs n_ref - (self_index != NULL) >= k;
 * the caller checks this.  Candidates come from the expansion
 * |r|^2 - 2 q.r (register tiles, knn.c) and are re-ranked with exact
 * distances; ties by index. */
EFFML__HIDDEN effml_status effml__knn_f64(effml_context *ctx, const double *ref, int64_t n_ref,
                                          const double *q, int64_t n_q, int64_t d, int64_t k,
                                          const int64_t *self_index, int64_t block_rows,
                                          int64_t *idx, double *dist2);

/* Exact kNN of every row of a set among the set's own rows (never itself):
 * the set is rows[0..nc) of x ([*, d] row-major f64); nn receives [nc, k]
 * positions into `rows`, nearest first, ties to the smaller position -- the
 * same answer as effml__knn_f64 with ref = q = the gathered rows and
 * self_index = 0..nc-1.  f32 or i16 candidate search over the upper triangle
 * with an exact f64 re-rank and a per-row certificate (knn_within.c);
 * *n_fallback (may be NULL) receives how many rows needed the f64
 * brute-force search. */
EFFML__HIDDEN effml_status effml__knn_within_f64(effml_context *ctx, const double *x,
                                                 const int64_t *rows, int64_t nc, int64_t d,
                                                 int64_t k, int64_t *nn, int64_t *n_fallback);
/* The same with the kernel chosen (for tests): isa 0 f32 portable, 1 f32
 * AVX-512, 2 i16 portable, 3 i16 AVX-512 VNNI (1 and 3 fall back to 0 and 2
 * where the context's ISA level or the CPU lacks them), -1 the library's
 * choice (effml__knn_within_f64). */
EFFML__HIDDEN effml_status effml__knn_within_f64_isa(effml_context *ctx, const double *x,
                                                     const int64_t *rows, int64_t nc, int64_t d,
                                                     int64_t k, int64_t *nn, int64_t *n_fallback,
                                                     int isa);

/* k in-class neighbours of the Borderline-SMOTE-1 danger rows (smote.c): nnk
 * [nd, k] positions into rows[0..nc) for the rows at positions dpos[] (ascending).
 * path 1 = certified within-class search, 0 = the f64 search (effml__knn_f64), -1 = by size;
 * both give the same lists. */
EFFML__HIDDEN effml_status effml__danger_knn(effml_context *ctx, const double *x, int64_t d,
                                             const int64_t *rows, int64_t nc,
                                             const int64_t *dpos, int64_t nd, int64_t k,
                                             int64_t block_rows, int64_t *nnk, int path);

/* Neighbour lists kept across passes over a shrinking row set
 * (knn_shrink.c): rows are ids 0..n-1 of the caller's x.
 * effml__knn_cache_fill computes the lists of rows q[0..nq) (live) against
 * the live rows live[0..m) in that order (ties to the earlier one), tagged
 * with order_epoch (the caller changes it whenever the live order stops
 * being a sub-order of the previous one).  effml__knn_cache_get writes the k
 * nearest live rows of row i (dead[id] != 0 for removed rows) into out[k],
 * nearest first, and returns 1 when the list determines them exactly as a
 * fresh search over the live rows would, else 0 (then fill it). */
typedef struct effml__knn_cache {
  int64_t n, L;     /* rows, entries per list */
  int64_t *nb;      /* [n, L] neighbour ids, nearest first */
  double *dv;       /* [n, L] exact squared distances */
  int64_t *len;     /* [n] entries held (0: no list yet) */
  int64_t *epoch;   /* [n] order epoch of the list */
  int64_t *pos;     /* [n] scratch: position of a live row */
  char *complete;   /* [n] the list held every other live row */
} effml__knn_cache;
EFFML__HIDDEN effml_status effml__knn_cache_init(effml_context *ctx, effml__knn_cache *S, int64_t n,
                                                 int64_t L);
EFFML__HIDDEN void effml__knn_cache_free(effml_context *ctx, effml__knn_cache *S);
EFFML__HIDDEN int effml__knn_cache_get(const effml__knn_cache *S, const char *dead, int64_t i,
                                       int64_t k, int64_t order_epoch, int64_t *out);
EFFML__HIDDEN effml_status effml__knn_cache_fill(effml_context *ctx, effml__knn_cache *S,
                                                 const double *x, int64_t d, const int64_t *live,
                                                 int64_t m, const int64_t *q, int64_t nq,
                                                 int64_t order_epoch, int64_t block_rows);

/* EFFML_E_NUMERIC naming `arg` and the first (row, column) of p ([n, d]
 * row-major) that is NaN or infinite; EFFML_OK if every value is finite. */
EFFML__HIDDEN effml_status effml__sampler_check_finite(effml_context *ctx, const double *p,
                                                       int64_t n, int64_t d, const char *arg);

/* X as f64 row-major: borrowed when x is contiguous f64, else a converted
 * copy in *owned (free with effml__free).  Checks 2-D, dtype f32/f64, and
 * (unless allow_nonfinite) finiteness.  `arg` names the argument. */
EFFML__HIDDEN effml_status effml__sampler_x_f64(effml_context *ctx, const effml_tensor *x,
                                                const char *arg, int allow_nonfinite,
                                                const double **xd, double **owned);

/* Labels of y ([n] i32/i64, contiguous) as int64 (allocated copy). */
EFFML__HIDDEN effml_status effml__sampler_labels(effml_context *ctx, const effml_tensor *y,
                                                 int64_t n, int64_t **y64);
/* The checks of effml__sampler_labels alone (n < 0: any length). */
EFFML__HIDDEN effml_status effml__sampler_labels_check(effml_context *ctx, const effml_tensor *y,
                                                       int64_t n);

/* Class table: sorted distinct labels, counts, and the rows of each class in
 * original order (rows[start[c] .. start[c+1])). */
typedef struct effml__classes {
  int64_t n_classes;
  int64_t *labels;  /* [n_classes] */
  int64_t *counts;  /* [n_classes] */
  int64_t *start;   /* [n_classes + 1] */
  int64_t *rows;    /* [n] */
  int64_t *cls;     /* [n] class position of each row */
} effml__classes;

EFFML__HIDDEN effml_status effml__classes_build(effml_context *ctx, const int64_t *y, int64_t n,
                                                effml__classes *c);
EFFML__HIDDEN void effml__classes_free(effml_context *ctx, effml__classes *c);
/* The class table's labels and counts only (start, rows, cls NULL, unless y
 * has more than 256 classes: then the full table), read straight from y
 * (checked by effml__sampler_labels_check): no O(n) allocation. */
EFFML__HIDDEN effml_status effml__classes_count(effml_context *ctx, const effml_tensor *y,
                                                effml__classes *c);

/* Strategy kinds by method family. */
#define EFFML__FAMILY_OVER 0
#define EFFML__FAMILY_UNDER 1
#define EFFML__FAMILY_CLEAN 2
EFFML__HIDDEN int effml__method_family(int32_t method);

/* values[c]: over = to generate, under = to keep, clean = 1 if targeted; -1 not targeted. */
EFFML__HIDDEN effml_status effml__strategy_resolve(effml_context *ctx,
                                                   const effml_sampler_resample_options *o,
                                                   const effml__classes *c, int64_t *values);

/* Growing plan: base, neighbor, step. */
typedef struct effml__plan {
  int64_t lead;   /* output rows [0, lead) are x's rows 0 .. lead - 1, not stored below */
  int64_t n, cap; /* stored rows: output rows lead .. lead + n - 1 */
  int64_t *base;
  int64_t *nbr;
  double *step;
} effml__plan;

EFFML__HIDDEN effml_status effml__plan_reserve(effml_context *ctx, effml__plan *p, int64_t extra);
static inline void effml__plan_push(effml__plan *p, int64_t base, int64_t nbr, double step) {
  p->base[p->n] = base;
  p->nbr[p->n] = nbr;
  p->step[p->n] = step;
  p->n++;
}
EFFML__HIDDEN void effml__plan_free(effml_context *ctx, effml__plan *p);

/* Method bodies: append to the plan (originals already pushed for over-samplers). */
typedef struct effml__resample_in {
  const effml_sampler_resample_options *o;
  const double *x; /* [n, d] (NULL for methods that need no geometry) */
  int64_t n, d;
  const int64_t *y;
  const effml__classes *c;
  const int64_t *values; /* strategy */
  int x_f32;             /* the caller's x is f32: rows a cleaning step sees are rounded to f32 */
} effml__resample_in;

EFFML__HIDDEN effml_status effml__smote_plan(effml_context *ctx, const effml__resample_in *in,
                                             effml__plan *p);
EFFML__HIDDEN effml_status effml__borderline_plan(effml_context *ctx,
                                                  const effml__resample_in *in, effml__plan *p);
EFFML__HIDDEN effml_status effml__adasyn_plan(effml_context *ctx, const effml__resample_in *in,
                                              effml__plan *p);
EFFML__HIDDEN effml_status effml__random_over_plan(effml_context *ctx,
                                                   const effml__resample_in *in, effml__plan *p);
EFFML__HIDDEN effml_status effml__random_under_plan(effml_context *ctx,
                                                    const effml__resample_in *in, effml__plan *p);
EFFML__HIDDEN effml_status effml__tomek_plan(effml_context *ctx, const effml__resample_in *in,
                                             effml__plan *p);
EFFML__HIDDEN effml_status effml__enn_plan(effml_context *ctx, const effml__resample_in *in,
                                           effml__plan *p);

/* NearMiss 1/2/3 (nearmiss.c); RENN, AllKNN, NCL (enn_family.c). */
EFFML__HIDDEN effml_status effml__nearmiss_plan(effml_context *ctx, const effml__resample_in *in,
                                                effml__plan *p);
EFFML__HIDDEN effml_status effml__renn_plan(effml_context *ctx, const effml__resample_in *in,
                                            effml__plan *p);
EFFML__HIDDEN effml_status effml__allknn_plan(effml_context *ctx, const effml__resample_in *in,
                                              effml__plan *p);
EFFML__HIDDEN effml_status effml__ncl_plan(effml_context *ctx, const effml__resample_in *in,
                                           effml__plan *p);
/* One ENN pass on compact rows xs [m, d] with labels ys: kept positions into
 * keep [m] (grouped by class in label order), count into *n_keep.  Targeted
 * classes from o's sampling_strategy resolved on ys as a cleaning rule. */
EFFML__HIDDEN effml_status effml__enn_pass(effml_context *ctx, const effml_sampler_resample_options *o,
                                           const double *xs, const int64_t *ys, int64_t m,
                                           int64_t d, int64_t k, int32_t kind_sel, int64_t *keep,
                                           int64_t *n_keep);
/* CNN, OSS (cnn.c); SMOTEENN / SMOTETomek cleaning of a SMOTE plan (combine.c). */
EFFML__HIDDEN effml_status effml__cnn_plan(effml_context *ctx, const effml__resample_in *in,
                                           effml__plan *p);
EFFML__HIDDEN effml_status effml__oss_plan(effml_context *ctx, const effml__resample_in *in,
                                           effml__plan *p);
/* SMOTEENN / SMOTETomek on materialised SMOTE output: clean xo [m, d] (f32
 * or f64) / yo [m] (i32 or i64) in place -- the kept rows are moved to the
 * front in the cleaning's order and both shapes shrink to the kept count.
 * No f64 copy when xo is f64 (an f64 copy when f32); on error xo / yo are
 * unspecified (the caller frees them). */
EFFML__HIDDEN effml_status effml__combine_clean_rows(effml_context *ctx,
                                                     const effml_sampler_resample_options *o,
                                                     effml_tensor *xo, effml_tensor *yo);
EFFML__HIDDEN effml_status effml__combine_clean(effml_context *ctx, const effml__resample_in *in,
                                                effml__plan *p);
/* The rows of plan p as f64 [p->n, d] (owned). */
EFFML__HIDDEN double *effml__plan_rows_f64(effml_context *ctx, const double *x, int64_t d,
                                           const effml__plan *p, int round_f32);
/* Tomek-link removal on compact rows xs [m, d]: a row goes when it forms a
 * link (mutual 1-NN of different classes) and targeted[cls[row]] is set;
 * `repeat` repeats until no such link is left.  Kept positions (ascending)
 * into keep [m]. */
EFFML__HIDDEN effml_status effml__tomek_pass(effml_context *ctx, const double *xs, int64_t m,
                                             int64_t d, const int64_t *cls, const char *targeted,
                                             int64_t block_rows, int repeat, int64_t *keep,
                                             int64_t *n_keep);
/* k-means++ / Lloyd on x [n, d] into centers [k, d] (labels [n] or NULL);
 * stream separates independent uses of the same seed (kmeans.c). */
EFFML__HIDDEN effml_status effml__kmeans(effml_context *ctx, const double *x, int64_t n,
                                         int64_t d, int64_t k, int64_t n_init, int64_t max_iter,
                                         double tol, uint64_t seed, uint64_t stream,
                                         int64_t block_rows, double *centers, int64_t *labels);
/* Exact squared distances, 4 rows against many (kmeans.c): each summed over
 * the features in order from 0.0, as a scalar loop would, on every kernel.
 * effml__sqdist_groups copies rows c [k, d] into the kernel's layout
 * (ceil(k / 8) groups of 8, transposed, zero-padded; owned, NULL on no
 * memory).  effml__sqdist_tile writes |xr[r] - c_j|^2 into out[r * 8 * ng + j]
 * for r < 4 and every j < 8 * ng (padding columns are garbage).
 * effml__sqdist_isa: the kernel to pass (isa -1 the best the context allows). */
EFFML__HIDDEN double *effml__sqdist_groups(effml_context *ctx, const double *c, int64_t k,
                                           int64_t d);
EFFML__HIDDEN int effml__sqdist_isa(const effml_context *ctx, int isa);
EFFML__HIDDEN void effml__sqdist_tile(int isa, const double *const *xr, const double *cg,
                                      int64_t d, int64_t ng, double *out);
/* Nearest centre of every row of x [n, d] among c [k, d]: lab [n], exact
 * squared distance dist [n], ties to the smaller centre (kmeans.c).  isa: 1
 * the AVX-512 kernel when the context allows it, 0 portable, -1 the best
 * allowed; all give the same bytes. */
EFFML__HIDDEN effml_status effml__kmeans_assign_isa(effml_context *ctx, const double *c, int64_t k,
                                                    const double *x, int64_t n, int64_t d,
                                                    int64_t block_rows, int64_t *lab, double *dist,
                                                    int isa);
EFFML__HIDDEN effml_status effml__cluster_centroids_plan(effml_context *ctx,
                                                         const effml__resample_in *in,
                                                         effml__plan *p);
EFFML__HIDDEN effml_status effml__cluster_centroids_resample(
    effml_context *ctx, const effml_sampler_resample_options *o, const effml_tensor *x,
    const effml_tensor *y, effml_tensor **x_out, effml_tensor **y_out);
EFFML__HIDDEN effml_status effml__iht_plan(effml_context *ctx, const effml__resample_in *in,
                                           effml__plan *p);
EFFML__HIDDEN effml_status effml__svmsmote_plan(effml_context *ctx, const effml__resample_in *in,
                                                effml__plan *p);
EFFML__HIDDEN effml_status effml__kmeans_smote_plan(effml_context *ctx,
                                                    const effml__resample_in *in, effml__plan *p);
EFFML__HIDDEN effml_status effml__smoten_resample(effml_context *ctx,
                                                  const effml_sampler_resample_options *o,
                                                  const effml_tensor *x, const effml_tensor *y,
                                                  effml_tensor **x_out, effml_tensor **y_out);
/* numpy.percentile(v, q) with linear interpolation; sorts v in place. */
EFFML__HIDDEN double effml__np_percentile(double *v, int64_t n, double q);
/* numpy's pairwise summation order (np.sum of a contiguous run). */
EFFML__HIDDEN double effml__np_sum(const double *a, int64_t n);

/* SMOTE-NC writes rows directly (no plan form). */
EFFML__HIDDEN effml_status effml__smotenc_resample(effml_context *ctx,
                                                   const effml_sampler_resample_options *o,
                                                   const effml_tensor *x, const effml_tensor *y,
                                                   effml_tensor **x_out, effml_tensor **y_out);

/* Per-class generator stream: independent of thread count and of other classes. */
EFFML__HIDDEN void effml__class_rng(effml__rng *r, uint64_t seed, uint64_t method_tag,
                                    int64_t label);

/* Gather rows of x (d columns) into a new contiguous block. */
EFFML__HIDDEN double *effml__gather_rows(effml_context *ctx, const double *x, int64_t d,
                                         const int64_t *rows, int64_t n_rows);

/* ---- linear algebra for leverage / Lewis (leverage.c) ---- */

/* Leverage scores of diag(sqrt(wt)) A (wt NULL: A), A [n, d] row-major f64,
 * by the method in o; tau [n].  EFFML_E_NUMERIC when rank deficient. */
EFFML__HIDDEN effml_status effml__leverage_f64(effml_context *ctx,
                                               const effml_sampler_leverage_options *o, const double *a,
                                               const double *wt, int64_t n, int64_t d,
                                               double *tau);
/* Read an options prefix into *o (defaults for the rest). */
EFFML__HIDDEN effml_status effml__leverage_read_options(effml_context *ctx,
                                                        const effml_sampler_leverage_options *opt,
                                                        effml_sampler_leverage_options *o);

#endif
