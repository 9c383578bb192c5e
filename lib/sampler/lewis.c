/* lp scores built on leverage scores (Woodruff & Yasuda 2023, arXiv 2306.00732, §3): root leverage
 * tau^(p/2) (Woodruff & Yasuda 2023), lp Lewis weights by the Cohen-Peng
 * fixed point, and sensitivity upper bounds. */
#include <math.h>
#include <string.h>

#include "sampler_internal.h"

typedef struct {
  effml_sampler_leverage_options o;
  const double *a;
  double *own;
  int64_t n, d;
} lp_input;

static effml_status lp_open(effml_context *ctx, const effml_sampler_leverage_options *opt,
                            const effml_tensor *a, lp_input *in) {
  memset(in, 0, sizeof *in);
  EFFML__TRY(effml__leverage_read_options(ctx, opt, &in->o));
  EFFML__TRY(effml__sampler_x_f64(ctx, a, "a", 0, &in->a, &in->own));
  in->n = a->shape[0];
  in->d = a->shape[1];
  if (in->n < in->d) {
    effml__free(ctx, in->own);
    return effml__err(ctx, EFFML_E_SHAPE, "a is %lld x %lld: lp scores need n >= d",
                      (long long)in->n, (long long)in->d);
  }
  return EFFML_OK;
}

static effml_status finish(effml_context *ctx, lp_input *in, effml_status st, effml_tensor *t,
                           effml_tensor **out) {
  effml__free(ctx, in->own);
  if (st != EFFML_OK) {
    effml_tensor_free(t);
    return st;
  }
  *out = t;
  return EFFML_OK;
}

effml_status effml_sampler_root_leverage_scores(effml_context *ctx, const effml_sampler_leverage_options *opt,
                                        const effml_tensor *a, double p, effml_tensor **scores) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, scores);
  if (!(p >= 1 && p <= 2))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "p=%g: root leverage scores need 1 <= p <= 2", p);
  lp_input in;
  EFFML__TRY(lp_open(ctx, opt, a, &in));
  effml_tensor *t = NULL;
  effml_status st = effml_tensor_create(ctx, EFFML_F64, 1, &in.n, &t);
  if (st == EFFML_OK) st = effml__leverage_f64(ctx, &in.o, in.a, NULL, in.n, in.d, effml__f64(t));
  if (st == EFFML_OK)
    for (int64_t i = 0; i < in.n; ++i) effml__f64(t)[i] = pow(effml__f64(t)[i], p / 2);
  return finish(ctx, &in, st, t, scores);
}

/* Lewis weights into w [n]; *iters receives the iteration count. */
static effml_status lewis(effml_context *ctx, const lp_input *in, double p, double *w,
                          int64_t *iters) {
  const int64_t n = in->n;
  double *wt = (double *)effml__alloc_or_err(ctx, (size_t)n * sizeof(double) * 2, "Lewis weights");
  if (!wt) return EFFML_E_NOMEM;
  double *tau = wt + n;
  for (int64_t i = 0; i < n; ++i) w[i] = 1.0;
  effml_status st = EFFML_OK;
  int64_t it = 0;
  int converged = 0;
  while (!converged && it < in->o.max_iter) {
    st = effml__progress(ctx, it, in->o.max_iter, "iterations");
    if (st != EFFML_OK) break;
    ++it;
    /* B = W^{1/2 - 1/p} A, i.e. row weights wt = w^{1 - 2/p}; a zero row stays 0. */
    for (int64_t i = 0; i < n; ++i) wt[i] = w[i] > 0 ? pow(w[i], 1.0 - 2.0 / p) : 0.0;
    st = effml__leverage_f64(ctx, &in->o, in->a, wt, n, in->d, tau);
    if (st != EFFML_OK) break;
    double change = 0;
    for (int64_t i = 0; i < n; ++i) {
      double nw = w[i] > 0 && tau[i] > 0 ? pow(w[i], 1.0 - p / 2) * pow(tau[i], p / 2) : 0.0;
      if (nw > 0 && w[i] > 0) change = fmax(change, fabs(log(nw / w[i])));
      w[i] = nw;
    }
    converged = change <= in->o.tol;
  }
  effml__free(ctx, wt);
  if (st != EFFML_OK) return st;
  if (!converged)
    return effml__err(ctx, EFFML_E_NUMERIC,
                      "Lewis weights (p=%g) did not converge to tol=%g in max_iter=%lld iterations",
                      p, in->o.tol, (long long)in->o.max_iter);
  if (iters) *iters = it;
  return EFFML_OK;
}

effml_status effml_sampler_lewis_weights(effml_context *ctx, const effml_sampler_leverage_options *opt,
                                 const effml_tensor *a, double p, effml_tensor **weights,
                                 int64_t *iterations) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, weights);
  if (!(p > 0 && p < 4))
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "p=%g: the Lewis fixed point contracts only for 0 < p < 4", p);
  lp_input in;
  EFFML__TRY(lp_open(ctx, opt, a, &in));
  effml_tensor *t = NULL;
  effml_status st = effml_tensor_create(ctx, EFFML_F64, 1, &in.n, &t);
  if (st == EFFML_OK) st = lewis(ctx, &in, p, effml__f64(t), iterations);
  return finish(ctx, &in, st, t, weights);
}

effml_status effml_sampler_sensitivity_upper_bounds(effml_context *ctx, const effml_sampler_leverage_options *opt,
                                            const effml_tensor *a, double p,
                                            effml_tensor **scores) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, scores);
  if (!(p >= 1 && p < 4))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "p=%g: sensitivity bounds need 1 <= p < 4", p);
  lp_input in;
  EFFML__TRY(lp_open(ctx, opt, a, &in));
  const int64_t n = in.n;
  effml_tensor *t = NULL;
  double *tau = (double *)effml__alloc_or_err(ctx, (size_t)n * sizeof(double), "leverage");
  effml_status st = tau ? effml_tensor_create(ctx, EFFML_F64, 1, &n, &t) : EFFML_E_NOMEM;
  if (st == EFFML_OK) st = lewis(ctx, &in, p, effml__f64(t), NULL);
  if (st == EFFML_OK && p <= 2) st = effml__leverage_f64(ctx, &in.o, in.a, NULL, n, in.d, tau);
  if (st == EFFML_OK) {
    double *s = effml__f64(t);
    double scale = p > 2 ? pow((double)in.d, p / 2 - 1) : 1.0;
    for (int64_t i = 0; i < n; ++i) {
      double b = scale * s[i]; /* sigma_i <= w_i (p <= 2), d^{p/2-1} w_i (p > 2) */
      if (p <= 2) b = fmin(b, pow(tau[i], p / 2)); /* Hoelder: sigma_i <= tau_i^{p/2} */
      s[i] = fmin(1.0, b);
    }
  }
  effml__free(ctx, tau);
  return finish(ctx, &in, st, t, scores);
}
