/*
 * Internals of the early-exit cascade (include/effml/cascade.h): the cascade
 * and workspace structs, the per-row scoring kernel shared by run, calibration
 * and effml_cascade_ensemble_predict(), and readers that turn the small 1-D argument
 * tensors of the metrics into plain arrays.
 */
#ifndef EFFML_CASCADE_INTERNAL_H
#define EFFML_CASCADE_INTERNAL_H

#include "../tensor/tensor_internal.h"

typedef struct effml__cascade_stage {
  effml_cascade_stage_fn fn;  /* NULL for a precomputed-logits stage */
  void *stage_data;
  const effml_tensor *logits; /* precomputed [rows, K], borrowed */
  double cost;                /* MACs per sample */
  int32_t rule;               /* EFFML_CASCADE_EXIT_* */
  double a, b;                /* threshold (a) or window [a, b] */
  double tau;                 /* calibrated task threshold, NaN if none */
  double *cal;                /* NULL, or [2K] probability calibration z' = cal[k] z + cal[K + k] */
} effml__cascade_stage;

struct effml_cascade {
  effml_context *ctx; /* allocator */
  int64_t num_classes;
  int32_t score;
  int32_t aggregation;
  double temperature;
  int32_t num_stages, cap_stages;
  effml__cascade_stage *stages;
  int64_t logits_rows; /* rows of the precomputed stages, 0 if none */
};

struct effml_cascade_workspace {
  effml_context *ctx; /* allocator */
  const effml_cascade *cascade;
  int64_t cap_n;        /* capacity of the per-sample arrays */
  int64_t *rows;        /* [cap_n] samples still in flight (compacted) */
  float *logits;        /* [cap_n, K] callback output */
  float *saved;         /* [cap_n, K] a callback stage 0's logits of the samples going on to
                         * the last stage, when its prediction is left to effml__tail_rows */
  double *acc;          /* [cap_n, K] running sum of member probabilities (compacted) */
  double *sacc;         /* [cap_n] running sum of member scores (compacted) */
  double *score_c;      /* [cap_n] score of the current stage (compacted) */
  int32_t *pred_c;      /* [cap_n] prediction of the current stage (compacted) */
  int64_t *bad;         /* per worker: first bad element index (flattened), or -1 */
  int32_t cap_workers;
  double *out_score;    /* [cap_n] by sample */
  int32_t *out_pred;    /* [cap_n] */
  int32_t *out_stage;   /* [cap_n] */
  double *out_probs;    /* [cap_n, K] when probabilities are requested */
  int64_t cap_probs;
  int64_t n_fused;      /* samples going on after a fused routing exit (run.c) */
  /* statistics of the last run */
  int64_t n;
  int32_t num_stages;
  int64_t *reach;       /* [num_stages] */
  int64_t *exits;       /* [num_stages] */
  double expected_cost;
};

/* One stage over a block of rows (the kernel of run, calibration and ensemble_predict).
 * Row j's logits: base + j*rs + k*cs elements of dtype f32 (is_f64 = 0) or f64.
 * m = how many members the running sums hold after this stage (1-based).
 * acc (K per row) and sacc accumulate when aggregation is MEAN; with LAST they are
 * overwritten.  score[j], pred[j] receive the stage's outputs.  Returns the index
 * j*K + k of the first non-finite logit, or -1. */
typedef struct effml__stage_block {
  const void *base;
  int is_f64;
  int64_t rs, cs;     /* element strides of rows and classes */
  const int64_t *row_index; /* NULL: row j is base row j; else base row row_index[j] */
  const int64_t *name_index; /* NULL, or the sample of row j for error messages */
  int64_t K;
  int32_t score_kind;
  int32_t aggregation;
  double temperature;
  int32_t m;          /* members aggregated after this stage (>= 1) */
  const double *cal;  /* NULL, or [2K] affine calibration applied to every logit read */
  int32_t route;      /* 1: score[j] = the routing score, pred[j] = the exact path's
                       * prediction (the first maximal logit; where another logit is within
                       * 2^-40 of it, the argmax of the f64 probabilities, which can tie:
                       * scores.c); acc, sacc untouched (MSP stages with one member only) */
  double *acc;        /* [rows, K] */
  double *sacc;       /* [rows] */
  double *score;      /* [rows] */
  int32_t *pred;      /* [rows] */
  int32_t isa;        /* EFFML_CORE_ISA_* of the call's context (set by effml__stage_tensor) */
} effml__stage_block;

EFFML__HIDDEN int64_t effml__stage_rows(const effml__stage_block *b, int64_t begin, int64_t end);
/* Score + prediction of one row from probabilities psum[k] * scale (scale = 1/m turns the
 * running sum of m members into their mean). */
EFFML__HIDDEN void effml__probs_score(const double *psum, int64_t K, double scale,
                                      int32_t score_kind, double *score, int32_t *pred);

/* Routing score of one row of K logits (z as doubles): s = sum_{k != arg} exp(z_k - max z)
 * computed in f32 with a short exp polynomial (arg: the first maximal logit; the MSP is
 * 1 / (1 + s), so s decreases strictly with it and does not saturate where the MSP rounds
 * to 1).  Relative error below ROUTE_ER (scores.c) plus a K 2^-120 floor; one fixed function,
 * the same number wherever it is computed.  *arg receives arg.  Returns a negative value for
 * a non-finite logit. */
EFFML__HIDDEN double effml__route_score(const double *z, int64_t K, int32_t *arg);
/* The exact path's exit rule in routing-score space, certified (derivation in scores.c):
 * s~ < ge_a: MSP >= a for sure; s~ > lt_a: MSP < a for sure; s~ < gt_b: MSP > b for sure;
 * s~ > le_b: MSP <= b for sure (MSP: the exact path's f64 score).  A row the cuts leave
 * undecided is decided on its exact MSP (effml__route_exact_msp), so the exits are always
 * the exact path's. */
typedef struct effml__route_cuts {
  int32_t threshold; /* 1: exit iff MSP >= a; 0 (window): exit iff MSP < a or MSP > b */
  double a, b;
  double ge_a, lt_a, gt_b, le_b;
  /* the same cuts as one rule for both kinds: exits for sure iff s~ < e_lo or s~ > e_hi,
   * goes on for sure iff s~ < g_lo and s~ > g_hi (threshold: e_lo = ge_a, e_hi = +inf,
   * g_lo = +inf, g_hi = lt_a; window: e_lo = gt_b, e_hi = lt_a, g_lo = ge_a, g_hi = le_b) */
  double e_lo, e_hi, g_lo, g_hi;
} effml__route_cuts;
EFFML__HIDDEN void effml__route_cuts_init(effml__route_cuts *c, int32_t rule, double a, double b,
                                          int64_t K);
/* 1: exits, 0: goes on, -1: undecided by s~ (decide on the exact MSP).  Without branches:
 * whether a routed row exits is data-dependent, and mispredicted branches took a fifth of
 * the routing-only run. */
static inline int effml__route_decide(const effml__route_cuts *c, double s) {
  const int ex = (s < c->e_lo) | (s > c->e_hi), on = (s < c->g_lo) & (s > c->g_hi);
  return ex - !(ex | on);
}
/* The routed exits of rows j0..j1-1 of stage m whose logits row, sample and position agree
 * (stage 0 of precomputed logits; b unshifted): sc, pr = their routing scores and
 * predictions (from row j0); out_pred/out_stage[j] written for every row (a row that goes
 * on gets them again where it exits), the rows that go on appended to rows[w..] in order.
 * Returns the new w (<= j1: rows are written at or before the row being read). */
EFFML__HIDDEN int64_t effml__route_exit_identity(const effml__stage_block *b,
                                                 const struct effml__route_cuts *c,
                                                 const double *sc, const int32_t *pr,
                                                 int64_t j0, int64_t j1, int32_t m,
                                                 int32_t *out_pred, int32_t *out_stage,
                                                 int64_t *rows, int64_t w);
/* The exact path's rule on the exact MSP. */
static inline int effml__route_exit_exact(const effml__route_cuts *c, double msp) {
  return c->threshold ? msp >= c->a : (msp < c->a || msp > c->b);
}
/* Exact softmax of one row (z as doubles) into p[K] (f64, the stage kernel's arithmetic);
 * returns the maximum probability (the exact MSP). */
EFFML__HIDDEN double effml__softmax_row(const double *z, int64_t K, double *p);
/* Row r of a stage block's logits as doubles into zb[K]. */
EFFML__HIDDEN void effml__load_row(const effml__stage_block *b, int64_t r, double *zb);
/* The exact path's MSP of logits row r of a stage block (K <= 256): effml__load_row, then
 * effml__softmax_row (the stage kernel's arithmetic, bit for bit). */
EFFML__HIDDEN double effml__route_exact_msp(const effml__stage_block *b, int64_t r);

/* The last stage's prediction when a run is asked only for pred and exit_stage (the
 * routing-only path): argmax over classes of q_k = sum over the members of their softmax
 * p_k, computed in f32 with the routing score's exp polynomial and certified: where the
 * gap between the top two q~ exceeds twice the members' error bound (effml__tail_bound)
 * the exact q has the same unique argmax; otherwise the row is recomputed exactly (f64,
 * libm exp, the arithmetic of the stage kernel), so pred is always the exact path's.
 * Members are f32 logits with contiguous classes, uncalibrated; row j of member i is
 * base[i] + (row_index[i] ? row_index[i][j] : j) * rs[i].  Only the last member's rows are
 * checked for non-finite values (the earlier member was checked by the routing score). */
typedef struct effml__tail_block {
  int64_t K;
  int32_t members;             /* 1 (one member aggregated) or 2 (mean of two) */
  const float *base[2];
  int64_t rs[2];
  const int64_t *row_index[2];
  int32_t *pred;               /* [rows] out */
  int32_t isa;                 /* EFFML_CORE_ISA_* */
} effml__tail_block;
/* Absolute error bound of one member's f32 probability p~_k against the exact p_k, for K
 * classes (derivation in scores.c). */
EFFML__HIDDEN double effml__tail_bound(int64_t K);
/* Rows [begin, end): pred[j] as above; *fallbacks += rows recomputed exactly.  Returns
 * j * K + k of the first non-finite logit of the last member, or -1. */
EFFML__HIDDEN int64_t effml__tail_rows(const effml__tail_block *t, int64_t begin, int64_t end,
                                       int64_t *fallbacks);
/* The f32 q~[K] of row j (portable arithmetic; for tests of the bound).  Returns 0 if a
 * member's row has a non-finite logit. */
EFFML__HIDDEN int effml__tail_fast_probs(const effml__tail_block *t, int64_t j, float *q);
/* The exact path's prediction for row j (f64 softmax of each member, libm exp). */
EFFML__HIDDEN int32_t effml__tail_exact_pred(const effml__tail_block *t, int64_t j);

/* 1 if stage m (not the last) can route on the routing score: MSP score, one member's
 * logits at that stage (stage 0, or EFFML_CASCADE_AGG_LAST), K <= 256.  Its threshold or
 * window rule, calibrated or set by hand, is then decided on the routing score where the
 * certified cuts (effml__route_cuts) are sure and on the exact MSP elsewhere: the exits
 * are the exact path's for any bounds. */
static inline int effml__cascade_routes(const effml_cascade *c, int32_t m) {
  return c->score == EFFML_CASCADE_SCORE_MSP && m < c->num_stages - 1 && c->num_classes <= 256 &&
         (m == 0 || c->aggregation == EFFML_CASCADE_AGG_LAST);
}

/* Validation of options shared by create and ensemble_predict. */
EFFML__HIDDEN effml_status effml__cascade_check_options(effml_context *ctx,
                                                        const effml_cascade_options *opt,
                                                        effml_cascade_options *known);

/* Check a logits tensor: f32/f64, 2-D, K columns (rows >= 1); name used in messages. */
EFFML__HIDDEN effml_status effml__check_logits(effml_context *ctx, const effml_tensor *t,
                                               const char *name, int64_t K);
/* Run the kernel over all rows of a logits tensor, in parallel; on a non-finite value
 * reports EFFML_E_NUMERIC naming `name`, the row and the class. */
EFFML__HIDDEN effml_status effml__stage_tensor(effml_context *ctx, effml__stage_block *b,
                                               const effml_tensor *logits, int64_t rows,
                                               const char *name);

/* The parts of effml__stage_tensor: point b at the logits tensor (NULL: b->base etc. are
 * set already) and the context's ISA level; the error for the first non-finite logit
 * `bad` = j * K + k found by effml__stage_rows. */
EFFML__HIDDEN void effml__stage_prepare(effml_context *ctx, effml__stage_block *b,
                                        const effml_tensor *logits);
EFFML__HIDDEN effml_status effml__stage_bad(effml_context *ctx, const effml__stage_block *b,
                                            int64_t bad, const char *name);
/* Rows per thread below which the routing score runs on one thread (~0.5 ms of work: a
 * thread start and join costs 18 us at best on the 2-core test VM, 35-75 us under load;
 * the routing score takes ~7-16 ns a row with K = 10 on AVX-512, warm to cold cache). */
#define EFFML__CASCADE_ROUTE_GRAIN 65536

/* Readers for 1-D argument tensors (any strides).  Allocate with ctx; caller frees. */
EFFML__HIDDEN effml_status effml__read_scores(effml_context *ctx, const effml_tensor *t,
                                              const char *name, int64_t *n, double **out);
/* Flags: every value 0 or 1 (else EFFML_E_INVALID_ARG naming the element). */
/* Flags [n]: bool/u8/i32/i64, every value 0 or 1 (else EFFML_E_INVALID_ARG naming the element). */
EFFML__HIDDEN effml_status effml__read_flags(effml_context *ctx, const effml_tensor *t,
                                             const char *name, int64_t n, unsigned char **out);
/* Labels in [0, K) (K <= 0: no range check). */
EFFML__HIDDEN effml_status effml__read_labels(effml_context *ctx, const effml_tensor *t,
                                              const char *name, int64_t n, int64_t K,
                                              int64_t **out);
/* Write an i32/i64 or f32/f64 1-D output from an array (the tensor is pre-checked). */
EFFML__HIDDEN void effml__write_i32_out(effml_tensor *t, const int32_t *v, int64_t n);
EFFML__HIDDEN void effml__write_f64_out(effml_tensor *t, const double *v, int64_t n);
/* Check an optional output: NULL ok; dtypes allowed as two alternatives; shape [n] or [n, K]. */
EFFML__HIDDEN effml_status effml__check_out(effml_context *ctx, const effml_tensor *t,
                                            const char *name, int32_t dt1, int32_t dt2,
                                            int32_t ndim, int64_t n, int64_t K);
/* Order of scores: idx sorted by score descending, ties by lower index. */
EFFML__HIDDEN effml_status effml__sort_desc(effml_context *ctx, const double *s, int64_t n,
                                            int64_t **idx);
/* Number of leading elements (k >= 1) of the RC curve: k = ceil(c * n) with a tolerance
 * for c*n computed in floating point (0.7 * 10 = 7.000000000000001 -> 7). */
EFFML__HIDDEN int64_t effml__ceil_count(double c, int64_t n);

#endif /* EFFML_CASCADE_INTERNAL_H */
