/* Leverage scores tau_i = ||a_i R^{-1}||^2 with R the triangular factor of
 * A = Q R (Woodruff & Yasuda 2023, arXiv 2306.00732, §3).
 *
 * EXACT: CholeskyQR -- R = chol(A^T A) from one pass over A (per row block
 * Gram matrices, summed in block order) -- and, when the rounding-error bound
 * in exact_r shows that refining would not make the scores more accurate,
 * tau_i = ||a_i R^{-1}||^2 in a second and last pass.  Otherwise one
 * CholeskyQR refinement (CholeskyQR2's second step): U = A R^{-1} is nearly
 * orthonormal (error ~ cond(A)^2 eps), so R2 = chol(U^T U) is safe and
 * Q = U R2^{-1} is orthonormal to working precision; tau_i = ||Q_i||^2, with
 * U recomputed block by block instead of stored.  When the Cholesky fails or
 * the refinement finds U far from orthonormal, R comes from TSQR -- A is cut
 * into fixed row blocks; each block's R comes from LAPACK dgelqf (a row-major
 * m x d block is the column-major d x m matrix A^T, whose LQ factor L = R^T
 * lies in memory exactly as the row-major R); the stacked block R's are
 * factored once more -- followed by the same refinement.
 * Block boundaries do not depend on the thread count, and per-block partial
 * results are combined in block order, so the output is identical for any
 * thread count.
 *
 * Kernels: on CPUs with AVX-512 (and d <= 64) each pass is one fused loop
 * over A, eight rows at a time with one row per vector lane: the rows are
 * gathered (scaled by sqrt(wt)), solved against R (and R2) by forward
 * substitution in registers -- the same arithmetic as dtrsm, which was the
 * bottleneck at these shapes -- and either accumulated into the block's Gram
 * matrix (passes 0 and 2) or reduced to tau (pass 3, R2 optional).  A is read once per
 * pass and nothing else is written; no row block is copied.  Other CPUs use
 * the OpenBLAS path (dsyrk / dtrsm on a copied block).
 *
 * SKETCH: S A with a CountSketch S (each row to one of s buckets with a
 * random sign, hashed from (seed, row)), R from the QR of S A, tau_i =
 * ||a_i R^{-1}||^2: a (1 +- eps) approximation when S embeds the column
 * space (s = O(d^2/eps^2); Clarkson & Woodruff 2013). */
#include "blas.h"
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "sampler_internal.h"

#define LEV_BLOCK 4096

void effml_sampler_leverage_options_init(effml_sampler_leverage_options *opt) {
  if (opt == NULL) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->method = EFFML_SAMPLER_LEVERAGE_EXACT;
  opt->rank_tol = 1e-12;
  opt->max_iter = 200;
  opt->tol = 1e-12;
}

effml_status effml__leverage_read_options(effml_context *ctx, const effml_sampler_leverage_options *opt,
                                          effml_sampler_leverage_options *o) {
  EFFML__TRY(EFFML__OPTIONS_READ(ctx, NULL, effml_sampler_leverage_options_init, opt, o,
                                 offsetof(effml_sampler_leverage_options, sketch_rows)));
  if (opt == NULL) return EFFML_OK;
  if (o->method != EFFML_SAMPLER_LEVERAGE_EXACT && o->method != EFFML_SAMPLER_LEVERAGE_SKETCH)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "method=%d is not an EFFML_SAMPLER_LEVERAGE_* value",
                      (int)o->method);
  if (o->sketch_rows < 0)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "sketch_rows=%lld must be >= 0", (long long)o->sketch_rows);
  if (!(o->rank_tol >= 0 && o->rank_tol < 1))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "rank_tol=%g must be in [0, 1)", o->rank_tol);
  if (o->max_iter < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "max_iter=%lld must be >= 1", (long long)o->max_iter);
  if (!(o->tol > 0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "tol=%g must be > 0", o->tol);
  return EFFML_OK;
}

/* R of an m x d row-major block (m >= d), overwriting `buf`; writes the d x d
 * upper-triangular row-major R to r. */
static int block_r(double *buf, int64_t m, int64_t d, double *tau, double *work, int64_t lwork,
                   double *r) {
  int64_t info = 0;
  /* Sizes are checked up front (effml__leverage_f64); a refusal here is info -1. */
  if (effml__dgelqf(NULL, d, m, buf, d, tau, work, lwork, &info) != EFFML_OK) return -1;
  if (info != 0) return (int)info;
  for (int64_t j = 0; j < d; ++j)
    for (int64_t i = 0; i < d; ++i) r[j * d + i] = i >= j ? buf[j * d + i] : 0.0;
  return 0;
}

typedef struct {
  const double *a, *wt;
  int64_t n, d, nb;
  int fused;     /* AVX-512 fused row kernels (see the top) */
  double *accs;  /* fused: [workers][lev_fused_scratch(d)] Gram tiles and panel */
  double *rinv;  /* fused: 1 / diag(R), 1 / diag(R2) */
  double *bufs;  /* [workers][2 LEV_BLOCK d] */
  double *taus;  /* [workers][d] */
  double *works; /* [workers][lwork] */
  int64_t lwork;
  double *rs;    /* [nb][d d] block R's (pass 1) or Gram matrices (pass 2) */
  const double *r;
  const double *r2; /* pass 3 of EXACT: U R2^{-1} after U = A R^{-1} (NULL: none) */
  double *out;   /* pass 3: tau */
  int pass;
  int64_t passes; /* passes over A so far (the progress count) */
  atomic_int bad; /* set by any worker whose BLAS call failed (relaxed: read after the join) */
} lev_job;

static void block_range(const lev_job *J, int64_t b, int64_t *r0, int64_t *m) {
  *r0 = b * LEV_BLOCK;
  *m = (b == J->nb - 1) ? J->n - *r0 : LEV_BLOCK;
}

/* Copy rows [r0, r0+m) scaled by sqrt(wt) into buf. */
static void load_rows(const lev_job *J, int64_t r0, int64_t m, double *buf) {
  const int64_t d = J->d;
  memcpy(buf, J->a + r0 * d, (size_t)(m * d) * sizeof(double));
  if (J->wt)
    for (int64_t i = 0; i < m; ++i) {
      double s = sqrt(J->wt[r0 + i]);
      for (int64_t t = 0; t < d; ++t) buf[i * d + t] *= s;
    }
}

#define LEV_FUSED_MAX_D 64
/* Rows per Gram panel of the fused kernels (a multiple of 8; d x LEV_PANEL
 * doubles stay in L1). */
#define LEV_PANEL 64

/* Doubles of one worker's fused-kernel scratch: the Gram tile accumulators
 * (4 x 4 tiles of eight-lane sums over the upper triangle) and the panel. */
static int64_t lev_gram_acc_len(int64_t d) {
  const int64_t nt = (d + 3) / 4;
  return nt * (nt + 1) / 2 * 16 * 8;
}
static int64_t lev_fused_scratch(int64_t d) {
  return lev_gram_acc_len(d) + ((d + 3) & ~(int64_t)3) * LEV_PANEL;
}

#if defined(__x86_64__)
/* acc[tile][p][q] (eight lanes) += sum over the panel's groups of
 * x_{4ta+p} * x_{4tb+q}, lane by lane, for the tiles ta <= tb: every lane
 * sums its rows in row order with one fused multiply-add each, exactly as a
 * per-pair accumulator would (the result does not depend on LEV_PANEL). */
__attribute__((target("avx512f"))) static void lev_gram_tiles_avx512(const double *panel,
                                                                     int64_t groups, int64_t dp,
                                                                     double *acc) {
  const int64_t nt = dp / 4;
  for (int64_t ta = 0; ta < nt; ++ta) {
    const double *xa = panel + 4 * ta * LEV_PANEL;
    for (int64_t tb = ta; tb < nt; ++tb, acc += 128) {
      const double *xb = panel + 4 * tb * LEV_PANEL;
      __m512d c[16];
      for (int q = 0; q < 16; ++q) c[q] = _mm512_loadu_pd(acc + 8 * q);
      for (int64_t g = 0; g < 8 * groups; g += 8) {
        __m512d x0 = _mm512_loadu_pd(xa + g), x1 = _mm512_loadu_pd(xa + LEV_PANEL + g);
        __m512d x2 = _mm512_loadu_pd(xa + 2 * LEV_PANEL + g), x3 = _mm512_loadu_pd(xa + 3 * LEV_PANEL + g);
        __m512d y0 = _mm512_loadu_pd(xb + g), y1 = _mm512_loadu_pd(xb + LEV_PANEL + g);
        __m512d y2 = _mm512_loadu_pd(xb + 2 * LEV_PANEL + g), y3 = _mm512_loadu_pd(xb + 3 * LEV_PANEL + g);
        c[0] = _mm512_fmadd_pd(x0, y0, c[0]);
        c[1] = _mm512_fmadd_pd(x0, y1, c[1]);
        c[2] = _mm512_fmadd_pd(x0, y2, c[2]);
        c[3] = _mm512_fmadd_pd(x0, y3, c[3]);
        c[4] = _mm512_fmadd_pd(x1, y0, c[4]);
        c[5] = _mm512_fmadd_pd(x1, y1, c[5]);
        c[6] = _mm512_fmadd_pd(x1, y2, c[6]);
        c[7] = _mm512_fmadd_pd(x1, y3, c[7]);
        c[8] = _mm512_fmadd_pd(x2, y0, c[8]);
        c[9] = _mm512_fmadd_pd(x2, y1, c[9]);
        c[10] = _mm512_fmadd_pd(x2, y2, c[10]);
        c[11] = _mm512_fmadd_pd(x2, y3, c[11]);
        c[12] = _mm512_fmadd_pd(x3, y0, c[12]);
        c[13] = _mm512_fmadd_pd(x3, y1, c[13]);
        c[14] = _mm512_fmadd_pd(x3, y2, c[14]);
        c[15] = _mm512_fmadd_pd(x3, y3, c[15]);
      }
      for (int q = 0; q < 16; ++q) _mm512_storeu_pd(acc + 8 * q, c[q]);
    }
  }
}

/* The block's Gram matrix from the tile accumulators: upper triangle,
 * row-major d x d, zeros below. */
__attribute__((target("avx512f"))) static void lev_gram_finish_avx512(const double *acc,
                                                                      int64_t d, double *g) {
  const int64_t nt = (d + 3) / 4;
  for (int64_t a = 0; a < d; ++a)
    for (int64_t b = 0; b < d; ++b) {
      if (b < a) {
        g[a * d + b] = 0.0;
        continue;
      }
      const int64_t ta = a / 4, tb = b / 4;
      const int64_t tile = ta * nt - ta * (ta - 1) / 2 + (tb - ta);
      g[a * d + b] = _mm512_reduce_add_pd(_mm512_loadu_pd(acc + tile * 128 + 8 * (4 * (a % 4) + b % 4)));
    }
}

/* Rows r0 .. r0 + m of A (scaled by sqrt(wt)), eight per step, one per lane.
 * mode 0: Gram of A; 2: Gram of A R^{-1}; 3: tau = ||A R^{-1} R2^{-1}||^2
 * (rows) -- r2 NULL: ||A R^{-1}||^2.  Gram results (upper triangle,
 * row-major d x d) go to g. */
/* Instantiation: the body in leverage_fused.inc is compiled twice,
 * for d = 32 with every loop unrolled (the rows stay in registers) and for
 * any d <= LEV_FUSED_MAX_D. */
#define LEV_NAME lev_fused_avx512_32
#define LEV_D 32
#define LEV_UNROLL _Pragma("GCC unroll 64")
#include "leverage_fused.inc"

#undef LEV_NAME
#undef LEV_D
#undef LEV_UNROLL
#define LEV_NAME lev_fused_avx512_any
#define LEV_D J->d
#define LEV_UNROLL
#include "leverage_fused.inc"

#undef LEV_NAME
#undef LEV_D
#undef LEV_UNROLL

static void lev_fused_avx512(const lev_job *J, int64_t r0, int64_t m, int mode, double *acc,
                             double *g) {
  if (J->d == 32)
    lev_fused_avx512_32(J, r0, m, mode, acc, g);
  else
    lev_fused_avx512_any(J, r0, m, mode, acc, g);
}
#endif

static void lev_blocks(void *arg, int64_t b0, int64_t b1, int32_t worker) {
  lev_job *J = (lev_job *)arg;
  const int64_t d = J->d;
#if defined(__x86_64__)
  if (J->fused && J->pass != 1) {
    double *acc = J->accs + (size_t)worker * (size_t)lev_fused_scratch(d);
    for (int64_t b = b0; b < b1; ++b) {
      int64_t r0, m;
      block_range(J, b, &r0, &m);
      lev_fused_avx512(J, r0, m, J->pass, acc, J->rs + b * d * d);
    }
    return;
  }
#endif
  double *buf = J->bufs + (size_t)worker * (size_t)(2 * LEV_BLOCK * d);
  for (int64_t b = b0; b < b1; ++b) {
    int64_t r0, m;
    block_range(J, b, &r0, &m);
    load_rows(J, r0, m, buf);
    if (J->pass == 0) { /* Gram matrix of the block (upper, row-major) */
      if (effml__dsyrk(NULL, CblasUpper, CblasTrans, d, m, 1.0, buf, d, 0.0, J->rs + b * d * d, d))
        atomic_store_explicit(&J->bad, 1, memory_order_relaxed);
      continue;
    }
    if (J->pass == 1) {
      if (block_r(buf, m, d, J->taus + worker * d, J->works + worker * J->lwork, J->lwork,
                  J->rs + b * d * d) != 0)
        atomic_store_explicit(&J->bad, 1, memory_order_relaxed);
      continue;
    }
    /* The sizes were checked up front (effml__leverage_f64): this flag is unreachable. */
    if (effml__dtrsm(NULL, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, m, d, 1.0, J->r, d,
                     buf, d) != EFFML_OK ||
        (J->pass == 3 && J->r2 &&
         effml__dtrsm(NULL, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, m, d, 1.0, J->r2, d,
                      buf, d) != EFFML_OK)) {
      atomic_store_explicit(&J->bad, 1, memory_order_relaxed);
      continue;
    }
    if (J->pass == 2) {
      if (effml__dsyrk(NULL, CblasUpper, CblasTrans, d, m, 1.0, buf, d, 0.0, J->rs + b * d * d, d))
        atomic_store_explicit(&J->bad, 1, memory_order_relaxed);
    } else {
      for (int64_t i = 0; i < m; ++i) {
        double s = 0;
        for (int64_t t = 0; t < d; ++t) s += buf[i * d + t] * buf[i * d + t];
        J->out[r0 + i] = s;
      }
    }
  }
}

/* One parallel pass over the row blocks, after a progress report (cancellation point). */
static effml_status lev_pass(effml_context *ctx, lev_job *J) {
  EFFML__TRY(effml__progress(ctx, J->passes++, 0, "passes over the rows"));
  EFFML__TRY(effml__parallel_for(ctx, J->nb, 1, lev_blocks, J));
  /* pass 1: a dgelqf info, reported by the caller */
  if (atomic_load_explicit(&J->bad, memory_order_relaxed) && J->pass != 1)
    return effml__err(ctx, EFFML_E_NUMERIC, "a BLAS call on a row block failed (pass %d)", J->pass);
  return EFFML_OK;
}

/* Reciprocal diagonals of R and R2 (R2 may be NULL) for the fused kernels. */
static void set_rinv(lev_job *J, const double *r, const double *r2) {
  if (!J->fused) return;
  for (int64_t k = 0; k < J->d; ++k) {
    J->rinv[k] = 1.0 / r[k * J->d + k];
    J->rinv[J->d + k] = r2 ? 1.0 / r2[k * J->d + k] : 0.0;
  }
}

static effml_status check_rank(effml_context *ctx, const double *r, int64_t d, double tol) {
  double mx = 0;
  for (int64_t j = 0; j < d; ++j) mx = fmax(mx, fabs(r[j * d + j]));
  for (int64_t j = 0; j < d; ++j) {
    double v = fabs(r[j * d + j]);
    if (!(v > tol * mx) || !isfinite(v))
      return effml__err(ctx, EFFML_E_NUMERIC,
                        "A is rank deficient: |R_jj|/max|R_ii| = %.3g at column %lld "
                        "(rank_tol %.3g); leverage scores need full column rank",
                        mx > 0 ? v / mx : 0.0, (long long)j, tol);
  }
  return EFFML_OK;
}

/* QR of a stacked (rows x d) row-major matrix in place; R to r. */
static effml_status small_r(effml_context *ctx, double *stack, int64_t rows, int64_t d, double *r) {
  double q;
  int64_t info = 0;
  EFFML__TRY(effml__dgelqf(ctx, d, rows, stack, d, &q, &q, -1, &info));
  int64_t lwork = info == 0 ? (int64_t)q + d : 64 * d;
  {
    const int64_t dims[] = {lwork};
    EFFML__TRY(effml__blas_check_dims(ctx, "LAPACKE_dgelqf_work", __func__, EFFML__LAPACK_INT_MAX,
                                      1, dims, "lwork"));
  }
  double *work = (double *)effml__alloc_or_err(ctx, (size_t)(lwork + d) * sizeof(double), "QR work");
  if (!work) return EFFML_E_NOMEM;
  int bad = block_r(stack, rows, d, work + lwork, work, lwork, r);
  effml__free(ctx, work);
  if (bad) return effml__err(ctx, EFFML_E_NUMERIC, "LAPACK dgelqf failed (info %d)", bad);
  return EFFML_OK;
}

/* Largest kappa2 (below) for which EXACT stops after one CholeskyQR step. */
#define LEV_ONE_STEP_KAPPA2 4.0

/* The one-step test (see exact_r): is kappa2 = ||W||_2^2 <= LEV_ONE_STEP_KAPPA2
 * for W = (R D^{-1})^{-1}, D = diag(column norms of R), i.e. R with its
 * columns scaled to unit length?  ||W||_2^2 = 1 / lambda_min(C) with
 * C = D^{-1} R^T R D^{-1} (unit diagonal), so the test is whether
 * C - (1 / LEV_ONE_STEP_KAPPA2 + 1e-3) I has a Cholesky factor: success
 * means that matrix is positive definite up to rounding of order d eps,
 * far inside the 1e-3 margin.  R is row-major upper triangular; w is d x d
 * scratch.  O(d^3 / 3). */
static int one_step_ok(effml_context *ctx, const double *r, int64_t d, double *w) {
  for (int64_t i = 0; i < d; ++i) { /* w[i][i] = |column i|^2 of R */
    double c = 0;
    for (int64_t k = 0; k <= i; ++k) c += r[k * d + i] * r[k * d + i];
    w[i * d + i] = c;
  }
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < i; ++j) { /* lower triangle: (R^T R)_ij / (c_i c_j) */
      double s = 0;
      for (int64_t k = 0; k <= j; ++k) s += r[k * d + i] * r[k * d + j];
      w[i * d + j] = s / sqrt(w[i * d + i] * w[j * d + j]);
    }
  for (int64_t i = 0; i < d; ++i) w[i * d + i] = 1.0 - (1.0 / LEV_ONE_STEP_KAPPA2 + 1e-3);
  int64_t info = 0;
  /* row-major lower = column-major upper */
  if (effml__dpotrf(ctx, 'U', d, w, d, &info) != EFFML_OK) {
    effml_context_clear_error(ctx);
    return 0;
  }
  return info == 0;
}

/* R of A for EXACT (r; r2 = the refinement's R2, applied in pass 3 through
 * J->r2, or J->r2 NULL when the one-step test passes).  Fast path,
 * CholeskyQR (Fukaya et al. 2014) with at most one refinement, else
 * Householder TSQR. */
static effml_status exact_r(effml_context *ctx, const effml_sampler_leverage_options *o,
                            lev_job *J, double *r, double *r2) {
  const int64_t d = J->d;
  effml_status st = EFFML_OK;
  /* One step (two passes over A in all) when its error bound is provably
   * within a factor LEV_ONE_STEP_KAPPA2 of the refinement's.  With G = fl(A^T A), its Cholesky factor R and U = A R^{-1}:
   * the rounding errors E of the Gram sums (at most gamma_K |a_j| |a_k|
   * over K terms) and of the Cholesky (gamma_{d+1} |R^T| |R|, Higham 2002,
   * Thm 10.3) give U^T U = I - W^T F W with |F_jk| <= gamma_K + gamma_{d+1}
   * and W = D R^{-1} as above, so each score ||u_i||^2 is within a relative
   * kappa2 d (gamma_K + gamma_{d+1}) of a_i (A^T A)^{-1} a_i^T.  The
   * refinement's own Gram of U has the same bound with kappa2 ~ 1, so below
   * LEV_ONE_STEP_KAPPA2 the one-step scores' bound is within that factor of
   * the refined ones' (column scaling costs nothing: both bounds are in the
   * equilibrated columns, van der Sluis 1969).  Otherwise the refinement
   * pass runs as before. */
  /* Fast path, CholeskyQR2 (Fukaya et al. 2014): R = chol(A^T A).  It is
   * accepted only if the refinement step finds U = A R^{-1} nearly
   * orthonormal (max |R2 - I| <= 0.1, i.e. cond(A)^2 eps small); otherwise
   * R comes from Householder TSQR, which is stable for any cond < 1/eps. */
  int tsqr = 0, ok = 0;
  J->pass = 0;
  st = lev_pass(ctx, J);
  if (st == EFFML_OK) {
    int finite = 1;
    for (int64_t t = 0; t < d * d; ++t) {
      double g = 0;
      for (int64_t b = 0; b < J->nb; ++b) g += J->rs[b * d * d + t]; /* fixed order */
      r[t] = g;
    }
    /* G_jj = sum_i a_ij^2 is NaN or infinite iff column j holds a NaN or an
     * infinity, or its squares overflow: the finiteness of A is checked here
     * (the callers skip their own read of A) and only then. */
    for (int64_t j = 0; j < d; ++j) finite &= isfinite(r[j * d + j]);
    if (!finite) {
      st = effml__sampler_check_finite(ctx, J->a, J->n, d, "a");
      if (st != EFFML_OK) return st;
    }
    int64_t info1 = 0;
    if (effml__dpotrf(ctx, 'L', d, r, d, &info1) != EFFML_OK || info1 != 0) tsqr = 1;
    for (int64_t j = 0; j < d; ++j)
      for (int64_t i = 0; i < j; ++i) r[j * d + i] = 0.0;
    if (!tsqr && check_rank(ctx, r, d, o->rank_tol) != EFFML_OK) tsqr = 1;
    effml_context_clear_error(ctx);
    if (!tsqr && one_step_ok(ctx, r, d, r2)) {
      J->r2 = NULL;
      return EFFML_OK;
    }
  }
  for (int attempt = 0; st == EFFML_OK && !ok && attempt < 2; ++attempt) {
    if (tsqr) {
      /* pass 1: block R's by Householder, then the R of the stacked R's */
      J->pass = 1;
      st = lev_pass(ctx, J);
      if (st == EFFML_OK && atomic_load_explicit(&J->bad, memory_order_relaxed))
        st = effml__err(ctx, EFFML_E_NUMERIC, "LAPACK dgelqf failed on a row block");
      if (st == EFFML_OK) {
        if (J->nb == 1)
          memcpy(r, J->rs, (size_t)(d * d) * sizeof(double));
        else
          st = small_r(ctx, J->rs, J->nb * d, d, r);
      }
      if (st == EFFML_OK) st = check_rank(ctx, r, d, o->rank_tol);
      if (st != EFFML_OK) break;
    }
    /* pass 2: R2 = chol(U^T U), U = A R^{-1} */
    J->pass = 2;
    J->r = r;
    set_rinv(J, r, NULL);
    st = lev_pass(ctx, J);
    if (st != EFFML_OK) break;
    for (int64_t t = 0; t < d * d; ++t) {
      double g = 0;
      for (int64_t b = 0; b < J->nb; ++b) g += J->rs[b * d * d + t]; /* fixed order */
      r2[t] = g;
    }
    /* Row-major upper G = column-major lower; its Cholesky factor L lies in
     * memory as the row-major upper R2 with G = R2^T R2. */
    int64_t pinfo = 0;
    st = effml__dpotrf(ctx, 'L', d, r2, d, &pinfo);
    if (st != EFFML_OK) break;
    double dev = pinfo == 0 ? 0.0 : INFINITY;
    for (int64_t j = 0; j < d; ++j)
      for (int64_t i = 0; i < d; ++i) {
        if (i < j) r2[j * d + i] = 0.0;
        else dev = fmax(dev, fabs(r2[j * d + i] - (i == j ? 1.0 : 0.0)));
      }
    ok = dev <= 0.1;
    if (!ok && tsqr)
      st = effml__err(ctx, EFFML_E_NUMERIC,
                      "A is numerically rank deficient (refinement Cholesky %s)",
                      pinfo ? "failed" : "far from the identity");
    tsqr = 1;
  }
  /* Apply R2 to the *same* computed U (same trsm, same bits) rather than
   * folding it into R: A (R2 R)^{-1} would bring back U's cond(A) eps error. */
  if (st == EFFML_OK) J->r2 = r2;
  return st;
}

/* R of the CountSketch S A (SKETCH): one pass over the rows, then a small QR. */
static effml_status sketch_r(effml_context *ctx, const effml_sampler_leverage_options *o,
                             const double *a, const double *wt, int64_t n, int64_t d, double *r) {
  effml_status st = EFFML_OK;
  int64_t s = o->sketch_rows > 0 ? o->sketch_rows : (4 * d * d > 64 * d ? 4 * d * d : 64 * d);
  if (s < d) s = d;
  double *sa = (double *)effml__calloc(ctx, (size_t)(s * d), sizeof(double));
  if (!sa) st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for a %lld-row sketch", (long long)s);
  for (int64_t i = 0; st == EFFML_OK && i < n; ++i) {
    uint64_t h = effml__mix64(o->seed ^ effml__mix64((uint64_t)i + 0x5eedULL));
    int64_t bkt = (int64_t)(((h >> 32) * (uint64_t)s) >> 32);
    double sg = (h & 1) ? 1.0 : -1.0;
    if (wt) sg *= sqrt(wt[i]);
    const double *ai = a + i * d;
    double *o_ = sa + bkt * d;
    for (int64_t t = 0; t < d; ++t) o_[t] += sg * ai[t];
  }
  if (st == EFFML_OK) st = small_r(ctx, sa, s, d, r);
  effml__free(ctx, sa);
  if (st == EFFML_OK) st = check_rank(ctx, r, d, o->rank_tol);
  return st;
}

effml_status effml__leverage_f64(effml_context *ctx, const effml_sampler_leverage_options *o,
                                 const double *a, const double *wt, int64_t n, int64_t d,
                                 double *tau) {
  lev_job J;
  memset(&J, 0, sizeof J);
  atomic_init(&J.bad, 0);
  J.a = a;
  J.wt = wt;
  J.n = n;
  J.d = d;
  /* last block: between LEV_BLOCK and 2 LEV_BLOCK - 1 rows (or all n when small) */
  J.nb = n >= 2 * LEV_BLOCK ? n / LEV_BLOCK : 1;
  int64_t workers = effml__ctx_threads(ctx);
  if (workers > 64) workers = 64;
  if (workers > J.nb) workers = J.nb;
  int64_t maxrows = J.nb == 1 ? n : 2 * LEV_BLOCK;
  double q;
  int64_t info = 0;
  /* Every BLAS/LAPACK size of the passes, checked once here: the workers'
   * calls (m <= maxrows rows, d columns, lwork) cannot be refused. */
  EFFML__TRY(effml__dgelqf(ctx, d, maxrows, NULL, d, &q, &q, -1, &info));
  J.lwork = info == 0 && q >= (double)d ? (int64_t)q : 64 * d;
  {
    const int64_t dims[] = {maxrows, d, J.lwork};
    EFFML__TRY(effml__blas_check_dims(
        ctx, "cblas_dsyrk/cblas_dtrsm/LAPACKE_dgelqf_work", __func__,
        EFFML__BLAS_INT_MAX < EFFML__LAPACK_INT_MAX ? EFFML__BLAS_INT_MAX : EFFML__LAPACK_INT_MAX,
        3, dims, "rows per block, d, lwork"));
  }
  double *r = (double *)effml__malloc(ctx, (size_t)(2 * d * d) * sizeof(double));
  double *r2 = r ? r + d * d : NULL;
  J.bufs = (double *)effml__malloc(ctx, (size_t)(workers * maxrows * d) * sizeof(double));
  J.taus = (double *)effml__malloc(ctx, (size_t)(workers * d) * sizeof(double));
  J.works = (double *)effml__malloc(ctx, (size_t)(workers * J.lwork) * sizeof(double));
  J.rs = (double *)effml__malloc(ctx, (size_t)(J.nb * d * d) * sizeof(double));
#if defined(__x86_64__)
  J.fused = d <= LEV_FUSED_MAX_D && effml__ctx_isa(ctx) >= EFFML_CORE_ISA_AVX512;
#endif
  if (J.fused) {
    J.accs = (double *)effml__malloc(ctx, (size_t)(workers * lev_fused_scratch(d)) * sizeof(double));
    J.rinv = (double *)effml__malloc(ctx, (size_t)(2 * d) * sizeof(double));
  }
  effml_status st = EFFML_OK;
  if (!r || !J.bufs || !J.taus || !J.works || !J.rs || (J.fused && (!J.accs || !J.rinv)))
    st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for leverage scores (%lld x %lld)",
                    (long long)n, (long long)d);
  if (st == EFFML_OK)
    st = o->method == EFFML_SAMPLER_LEVERAGE_EXACT ? exact_r(ctx, o, &J, r, r2)
                                                    : sketch_r(ctx, o, a, wt, n, d, r);
  if (st == EFFML_OK) {
    J.pass = 3;
    J.r = r;
    set_rinv(&J, r, J.r2);
    J.out = tau;
    st = lev_pass(ctx, &J);
  }
  effml__free(ctx, r);
  effml__free(ctx, J.bufs);
  effml__free(ctx, J.taus);
  effml__free(ctx, J.works);
  effml__free(ctx, J.rs);
  effml__free(ctx, J.accs);
  effml__free(ctx, J.rinv);
  return st;
}

/* a as f64 with n >= d; *own is a converted copy to free (or NULL). */
static effml_status leverage_input(effml_context *ctx, const effml_sampler_leverage_options *o,
                                   const effml_tensor *a, const double **ad, double **own) {
  /* EXACT checks finiteness in its first pass (exact_r) */
  EFFML__TRY(effml__sampler_x_f64(ctx, a, "a", o->method == EFFML_SAMPLER_LEVERAGE_EXACT, ad, own));
  if (a->shape[0] < a->shape[1]) {
    effml__free(ctx, *own);
    *own = NULL;
    return effml__err(ctx, EFFML_E_SHAPE, "a is %lld x %lld: leverage scores need n >= d",
                      (long long)a->shape[0], (long long)a->shape[1]);
  }
  return EFFML_OK;
}

effml_status effml_sampler_leverage_scores(effml_context *ctx,
                                           const effml_sampler_leverage_options *opt,
                                           const effml_tensor *a, effml_tensor **tau) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, tau);
  effml_sampler_leverage_options o;
  EFFML__TRY(effml__leverage_read_options(ctx, opt, &o));
  const double *ad;
  double *own = NULL;
  EFFML__TRY(leverage_input(ctx, &o, a, &ad, &own));
  int64_t n = a->shape[0], d = a->shape[1];
  effml_tensor *t = NULL;
  effml_status st = effml_tensor_create(ctx, EFFML_F64, 1, &n, &t);
  if (st == EFFML_OK) st = effml__leverage_f64(ctx, &o, ad, NULL, n, d, effml__f64(t));
  effml__free(ctx, own);
  if (st != EFFML_OK) {
    effml_tensor_free(t);
    return st;
  }
  *tau = t;
  return EFFML_OK;
}

effml_status effml_sampler_leverage_scores_into(effml_context *ctx,
                                                const effml_sampler_leverage_options *opt,
                                                const effml_tensor *a, effml_tensor *tau) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  effml_sampler_leverage_options o;
  EFFML__TRY(effml__leverage_read_options(ctx, opt, &o));
  const double *ad;
  double *own = NULL;
  EFFML__TRY(leverage_input(ctx, &o, a, &ad, &own));
  int64_t n = a->shape[0], d = a->shape[1];
  effml_status st = effml__check_tensor(ctx, tau, "tau", EFFML_F64, 1, 1);
  if (st == EFFML_OK) st = effml__check_writable(ctx, tau, "tau");
  if (st == EFFML_OK) st = effml__check_dim(ctx, tau, "tau", 0, n);
  if (st == EFFML_OK) st = effml__leverage_f64(ctx, &o, ad, NULL, n, d, effml__f64(tau));
  effml__free(ctx, own);
  return st;
}
