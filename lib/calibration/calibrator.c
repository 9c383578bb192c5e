/* Post-hoc calibrators: temperature scaling and vector scaling (Guo et al.
 * 2017, Sec. 4.2) fitted by NLL with Newton steps, and the correctness-aware
 * calibrator of Liu et al. 2024 (arXiv 2404.13016, Sec. 3) fitted with Adam.
 *
 * Notation: z the logits of one row [K], y its label, p = softmax(·).
 * TS: NLL(β) = mean lse(βz) − βz_y, β = 1/T; dNLL/dβ = mean E_p[z] − z_y,
 *     d²/dβ² = mean Var_p[z] >= 0.
 * VS: u = a ⊙ z + b; ∂NLL/∂u = p − e_y; ∂u_k/∂a_k = z_k, ∂u_k/∂b_k = 1;
 *     Hessian J^T (diag p − p pᵀ) J, J = [diag z, I].
 * CA: h = ReLU(W1 f + b1), t = w2·h + b2, T = clamp(t, t_min, t_max),
 *     conf = max_k softmax(z/T)_k (the argmax of z), c = [argmax z = y],
 *     L = Σ ω (conf − c)² / Σ ω, and d log conf / dT = (E_p[z] − z_m) / T²
 *     (m the argmax). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "calibration_internal.h"

struct effml_calibrator {
  effml_context *ctx; /* allocator */
  effml_calibration_options o;
  int64_t np;  /* number of parameters */
  double *p;   /* parameters (layout: see calibration.h) */
};

void effml_calibration_options_init(effml_calibration_options *opt) {
  if (!opt) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->method = EFFML_CALIBRATION_TEMPERATURE;
  opt->num_features = 12;
  opt->hidden = 5;
  opt->t_min = 0.1;
  opt->t_max = 10.0;
  opt->balance = 0;  /* chosen on validation data (docs/calibration.md) */
  opt->lr = 1e-3;
  opt->epochs = 50;
  opt->batch_size = 1000;
  opt->max_iter = 100;
}

static int64_t ca_np(const effml_calibration_options *o) {
  return o->hidden * o->num_features + 2 * o->hidden + 1;
}

effml_status effml_calibration_create(effml_context *ctx, const effml_calibration_options *opt,
                                      effml_calibrator **out) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_calibration_create";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, opt);
  EFFML__CHECK_NULL(ctx, out);
  effml_calibration_options o;
  EFFML__TRY(EFFML__OPTIONS_READ(ctx, fn, effml_calibration_options_init, opt, &o,
                                 offsetof(effml_calibration_options, num_classes) + sizeof(int64_t)));
#define BAD(cond, ...) \
  if (cond) return effml__err(ctx, EFFML_E_INVALID_ARG, __VA_ARGS__)
  BAD(o.method < EFFML_CALIBRATION_TEMPERATURE || o.method > EFFML_CALIBRATION_CORRECTNESS_AWARE,
      "%s: opt->method=%d is not an EFFML_CALIBRATION_* method", fn, (int)o.method);
  BAD(o.num_classes < 2, "%s: opt->num_classes=%lld must be >= 2", fn, (long long)o.num_classes);
  BAD(o.max_iter < 1, "%s: opt->max_iter=%d must be >= 1", fn, (int)o.max_iter);
  if (o.method == EFFML_CALIBRATION_CORRECTNESS_AWARE) {
    BAD(o.num_features < 1, "%s: opt->num_features=%lld must be >= 1", fn, (long long)o.num_features);
    BAD(o.hidden < 1, "%s: opt->hidden=%lld must be >= 1", fn, (long long)o.hidden);
    BAD(!(o.t_min > 0) || !isfinite(o.t_min), "%s: opt->t_min=%g must be > 0", fn, o.t_min);
    BAD(!(o.t_max > o.t_min) || !isfinite(o.t_max), "%s: opt->t_max=%g must be finite and > t_min=%g",
        fn, o.t_max, o.t_min);
    BAD(!(o.lr > 0) || !isfinite(o.lr), "%s: opt->lr=%g must be > 0", fn, o.lr);
    BAD(o.epochs < 1, "%s: opt->epochs=%lld must be >= 1", fn, (long long)o.epochs);
    BAD(o.batch_size < 1, "%s: opt->batch_size=%lld must be >= 1", fn, (long long)o.batch_size);
  }
#undef BAD
  const int64_t np = o.method == EFFML_CALIBRATION_TEMPERATURE ? 1
                     : o.method == EFFML_CALIBRATION_VECTOR    ? 2 * o.num_classes
                                                               : ca_np(&o);
  effml_calibrator *c = (effml_calibrator *)effml__calloc_or_err(ctx, 1, sizeof *c, "calibrator");
  if (!c) return EFFML_E_NOMEM;
  c->p = (double *)effml__calloc_or_err(ctx, (size_t)np, sizeof(double), "calibrator parameters");
  if (!c->p) {
    effml__free(ctx, c);
    return EFFML_E_NOMEM;
  }
  c->ctx = ctx;
  c->o = o;
  c->np = np;
  if (o.method == EFFML_CALIBRATION_TEMPERATURE) {
    c->p[0] = 1.0;
  } else if (o.method == EFFML_CALIBRATION_VECTOR) {
    for (int64_t k = 0; k < o.num_classes; ++k) c->p[k] = 1.0;
  } else {
    effml__rng r;
    effml__rng_seed(&r, o.seed, 0xCA1Bu);
    const int64_t H = o.hidden, F = o.num_features;
    const double b1 = 1.0 / sqrt((double)F), b2 = 1.0 / sqrt((double)H);
    for (int64_t i = 0; i < H * F + H; ++i) c->p[i] = (2.0 * effml__rng_uniform(&r) - 1.0) * b1;
    for (int64_t i = 0; i < H; ++i) c->p[H * F + H + i] = (2.0 * effml__rng_uniform(&r) - 1.0) * b2;
    c->p[H * F + 2 * H] = 1.0;
  }
  *out = c;
  return EFFML_OK;
}

void effml_calibration_free(effml_calibrator *cal) {
  if (!cal) return;
  effml__free(cal->ctx, cal->p);
  effml__free(cal->ctx, cal);
}

int32_t effml_calibration_method(const effml_calibrator *cal) { return cal ? cal->o.method : 0; }
int64_t effml_calibration_num_params(const effml_calibrator *cal) { return cal ? cal->np : 0; }
int64_t effml_calibration_num_classes(const effml_calibrator *cal) {
  return cal ? cal->o.num_classes : 0;
}

effml_status effml_calibration_get_params(effml_context *ctx, const effml_calibrator *cal,
                                          double *params) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, cal);
  EFFML__CHECK_NULL(ctx, params);
  memcpy(params, cal->p, (size_t)cal->np * sizeof(double));
  return EFFML_OK;
}

effml_status effml_calibration_set_params(effml_context *ctx, effml_calibrator *cal,
                                          const double *params) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_calibration_set_params";
  EFFML__CHECK_NULL(ctx, cal);
  EFFML__CHECK_NULL(ctx, params);
  for (int64_t i = 0; i < cal->np; ++i)
    if (!isfinite(params[i]))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: params[%lld]=%g is not finite", fn,
                        (long long)i, params[i]);
  if (cal->o.method == EFFML_CALIBRATION_TEMPERATURE && !(params[0] > 0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: temperature params[0]=%g must be > 0", fn,
                      params[0]);
  memcpy(cal->p, params, (size_t)cal->np * sizeof(double));
  return EFFML_OK;
}

/* ---- shared pieces ---- */

/* Softmax of s*z (length K) into p; returns log-sum-exp of s*z. */
static double softmax_scaled(const double *z, int64_t K, double s, double *p) {
  double m = s * z[0];
  for (int64_t k = 1; k < K; ++k) m = fmax(m, s * z[k]);
  double t = 0.0;
  for (int64_t k = 0; k < K; ++k) t += (p[k] = exp(s * z[k] - m));
  for (int64_t k = 0; k < K; ++k) p[k] /= t;
  return m + log(t);
}

static int64_t argmax(const double *z, int64_t K) {
  int64_t b = 0;
  for (int64_t k = 1; k < K; ++k)
    if (z[k] > z[b]) b = k;
  return b;
}

/* Inputs of fit / loss / apply, read and checked. */
typedef struct {
  int64_t n, K, F;
  double *z, *f;
  int64_t *y;
} cal_data;

static void data_free(effml_context *ctx, cal_data *d) {
  effml__free(ctx, d->z);
  effml__free(ctx, d->f);
  effml__free(ctx, d->y);
}

static effml_status data_read(effml_context *ctx, const char *fn, const effml_calibrator *cal,
                              const effml_tensor *logits, const effml_tensor *features,
                              const effml_tensor *labels, cal_data *d) {
  memset(d, 0, sizeof *d);
  const int ca = cal->o.method == EFFML_CALIBRATION_CORRECTNESS_AWARE;
  if (ca && !features)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: the correctness-aware calibrator needs features "
                      "(effml_calibration_ca_features())",
                      fn);
  if (!ca && features)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: features given to a %s calibrator, which takes none", fn,
                      cal->o.method == EFFML_CALIBRATION_TEMPERATURE ? "temperature" : "vector");
  effml_status st = effml__cal_read_matrix(ctx, fn, logits, "logits", -1, cal->o.num_classes,
                                           &d->z, &d->n, &d->K);
  if (st == EFFML_OK && ca)
    st = effml__cal_read_matrix(ctx, fn, features, "features", d->n, cal->o.num_features, &d->f,
                                NULL, &d->F);
  if (st == EFFML_OK && labels)
    st = effml__cal_read_labels(ctx, fn, labels, "labels", d->n, d->K, &d->y);
  if (st != EFFML_OK) data_free(ctx, d);
  return st;
}

/* ---- temperature scaling ---- */

/* Mean NLL at β, its first and second derivative in β. */
static double ts_eval(const cal_data *d, double beta, double *p, double *d1, double *d2) {
  double nll = 0.0, g = 0.0, h = 0.0;
  for (int64_t i = 0; i < d->n; ++i) {
    const double *z = d->z + i * d->K;
    const double lse = softmax_scaled(z, d->K, beta, p);
    double ez = 0.0, ez2 = 0.0;
    for (int64_t k = 0; k < d->K; ++k) ez += p[k] * z[k], ez2 += p[k] * z[k] * z[k];
    nll += lse - beta * z[d->y[i]];
    g += ez - z[d->y[i]];
    h += fmax(ez2 - ez * ez, 0.0);
  }
  if (d1) *d1 = g / (double)d->n;
  if (d2) *d2 = h / (double)d->n;
  return nll / (double)d->n;
}

static double ts_fit(const cal_data *d, int32_t max_iter, double *p) {
  const double lo0 = 1e-2, hi0 = 1e2; /* β = 1/T in [1e-2, 1e2] */
  double g_lo, g_hi;
  ts_eval(d, lo0, p, &g_lo, NULL);
  if (g_lo >= 0) return lo0;
  ts_eval(d, hi0, p, &g_hi, NULL);
  if (g_hi <= 0) return hi0;
  double lo = lo0, hi = hi0, beta = 1.0;
  for (int32_t it = 0; it < 4 * max_iter; ++it) {
    double g, h;
    ts_eval(d, beta, p, &g, &h);
    if (fabs(g) < 1e-12) break;
    if (g < 0) lo = beta;
    else hi = beta;
    double next = h > 0 ? beta - g / h : 0.5 * (lo + hi);
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    if (hi - lo < 1e-15 * hi) break;
    beta = next;
  }
  return beta;
}

/* ---- vector scaling ---- */

/* Mean NLL of u = a z + b; gradient g [2K] and Hessian H [2K x 2K] if non-NULL. */
static double vs_eval(const cal_data *d, const double *ab, double *u, double *p, double *g,
                      double *H) {
  const int64_t K = d->K, P = 2 * K;
  const double *a = ab, *b = ab + K;
  double nll = 0.0;
  if (g) memset(g, 0, (size_t)P * sizeof(double));
  if (H) memset(H, 0, (size_t)(P * P) * sizeof(double));
  for (int64_t i = 0; i < d->n; ++i) {
    const double *z = d->z + i * K;
    const int64_t y = d->y[i];
    for (int64_t k = 0; k < K; ++k) u[k] = a[k] * z[k] + b[k];
    nll += softmax_scaled(u, K, 1.0, p) - u[y];
    if (g)
      for (int64_t k = 0; k < K; ++k) {
        const double r = p[k] - (k == y);
        g[k] += r * z[k];
        g[K + k] += r;
      }
    if (H) /* J^T (diag p − p pᵀ) J with J = [diag z, I] */
      for (int64_t k = 0; k < K; ++k)
        for (int64_t l = 0; l < K; ++l) {
          const double c = (k == l ? p[k] : 0.0) - p[k] * p[l];
          H[k * P + l] += c * z[k] * z[l];
          H[k * P + K + l] += c * z[k];
          H[(K + k) * P + l] += c * z[l];
          H[(K + k) * P + K + l] += c;
        }
  }
  const double inv = 1.0 / (double)d->n;
  if (g)
    for (int64_t j = 0; j < P; ++j) g[j] *= inv;
  if (H)
    for (int64_t j = 0; j < P * P; ++j) H[j] *= inv;
  return nll * inv;
}

/* Solve (A + mu I) x = r by Cholesky (A symmetric PSD, P x P); 0 on success. */
static int chol_solve(const double *A, double mu, const double *r, int64_t P, double *L,
                      double *x) {
  for (int64_t i = 0; i < P; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = A[i * P + j] + (i == j ? mu : 0.0);
      for (int64_t k = 0; k < j; ++k) s -= L[i * P + k] * L[j * P + k];
      if (i == j) {
        if (!(s > 0)) return -1;
        L[i * P + i] = sqrt(s);
      } else {
        L[i * P + j] = s / L[j * P + j];
      }
    }
  for (int64_t i = 0; i < P; ++i) { /* L w = r */
    double s = r[i];
    for (int64_t k = 0; k < i; ++k) s -= L[i * P + k] * x[k];
    x[i] = s / L[i * P + i];
  }
  for (int64_t i = P - 1; i >= 0; --i) { /* Lᵀ x = w */
    double s = x[i];
    for (int64_t k = i + 1; k < P; ++k) s -= L[k * P + i] * x[k];
    x[i] = s / L[i * P + i];
  }
  return 0;
}

static effml_status vs_fit(effml_context *ctx, const cal_data *d, int32_t max_iter, double *ab) {
  const int64_t K = d->K, P = 2 * K;
  const size_t need = (size_t)(2 * K + 3 * P + 2 * P * P);
  double *w = (double *)effml__alloc_or_err(ctx, need * sizeof(double), "vector scaling workspace");
  if (!w) return EFFML_E_NOMEM;
  double *u = w, *p = u + K, *g = p + K, *step = g + P, *trial = step + P, *H = trial + P,
         *L = H + P * P;
  double f = vs_eval(d, ab, u, p, g, H);
  for (int32_t it = 0; it < max_iter; ++it) {
    const effml_status pst = effml__progress(ctx, it, max_iter, "Newton steps");
    if (pst != EFFML_OK) { /* the caller copies ab into the calibrator only on success */
      effml__free(ctx, w);
      return pst;
    }
    double gmax = 0.0, tr = 0.0;
    for (int64_t j = 0; j < P; ++j) gmax = fmax(gmax, fabs(g[j])), tr += H[j * P + j];
    if (gmax < 1e-11) break;
    /* damping: the bias direction (1, ..., 1) is flat, so never mu = 0 */
    double mu = 1e-10 * (tr / (double)P + 1e-12);
    while (chol_solve(H, mu, g, P, L, step) != 0) mu *= 10.0;
    double t = 1.0, fn = f;
    int accepted = 0;
    for (int ls = 0; ls < 40; ++ls, t *= 0.5) {
      double dec = 0.0;
      for (int64_t j = 0; j < P; ++j) trial[j] = ab[j] - t * step[j], dec += g[j] * step[j];
      fn = vs_eval(d, trial, u, p, NULL, NULL);
      if (fn <= f - 1e-4 * t * dec) {
        accepted = 1;
        break;
      }
    }
    if (!accepted) break;
    memcpy(ab, trial, (size_t)P * sizeof(double));
    f = vs_eval(d, ab, u, p, g, H);
    (void)fn;
  }
  double mb = 0.0;
  for (int64_t k = 0; k < K; ++k) mb += ab[K + k];
  for (int64_t k = 0; k < K; ++k) ab[K + k] -= mb / (double)K;
  effml__free(ctx, w);
  return EFFML_OK;
}

/* ---- correctness-aware calibrator ---- */

/* Per-row temperature; keeps the pre-activations for backward when asked. */
static double ca_temp(const effml_calibration_options *o, const double *th, const double *f,
                      double *pre, double *t_raw) {
  const int64_t H = o->hidden, F = o->num_features;
  const double *W1 = th, *b1 = th + H * F, *w2 = b1 + H, b2 = w2[H];
  double t = b2;
  for (int64_t h = 0; h < H; ++h) {
    double s = b1[h];
    for (int64_t j = 0; j < F; ++j) s += W1[h * F + j] * f[j];
    if (pre) pre[h] = s;
    t += w2[h] * (s > 0 ? s : 0.0);
  }
  if (t_raw) *t_raw = t;
  return t < o->t_min ? o->t_min : t > o->t_max ? o->t_max : t;
}

/* CA loss over rows idx[0..m) (all rows when idx is NULL) and its gradient (added to g, scaled). */
static double ca_eval(const effml_calibration_options *o, const cal_data *d, const double *th,
                      const int64_t *idx, int64_t m, double *g, double *ws) {
  const int64_t K = d->K, H = o->hidden, F = o->num_features;
  double *p = ws, *pre = ws + K;
  int64_t right = 0;
  for (int64_t r = 0; r < m; ++r) {
    const int64_t i = idx ? idx[r] : r;
    right += argmax(d->z + i * K, K) == d->y[i];
  }
  const double acc = (double)right / (double)m;
  double wr = 1.0, ww = 1.0; /* weights of right / wrong rows */
  if (o->balance && right > 0 && right < m) wr = 1.0 - acc, ww = acc;
  const double denom = wr * (double)right + ww * (double)(m - right);
  double loss = 0.0;
  if (g) memset(g, 0, (size_t)ca_np(o) * sizeof(double));
  for (int64_t r = 0; r < m; ++r) {
    const int64_t i = idx ? idx[r] : r;
    const double *z = d->z + i * K, *f = d->f + i * F;
    double traw;
    const double T = ca_temp(o, th, f, pre, &traw);
    softmax_scaled(z, K, 1.0 / T, p);
    const int64_t top = argmax(z, K);
    const int c = top == d->y[i];
    const double conf = p[top], om = c ? wr : ww;
    loss += om * (conf - c) * (conf - c);
    if (!g || !(traw > o->t_min && traw < o->t_max)) continue;
    double ez = 0.0;
    for (int64_t k = 0; k < K; ++k) ez += p[k] * z[k];
    /* dL/dT = 2 ω (conf − c) / denom · conf (E_p[z] − z_top) / T² */
    const double gT = 2.0 * om * (conf - c) / denom * conf * (ez - z[top]) / (T * T);
    double *gW1 = g, *gb1 = g + H * F, *gw2 = gb1 + H;
    const double *w2 = th + H * F + H;
    for (int64_t h = 0; h < H; ++h) {
      const double a = pre[h] > 0 ? pre[h] : 0.0;
      gw2[h] += gT * a;
      if (pre[h] > 0) {
        const double gp = gT * w2[h];
        gb1[h] += gp;
        for (int64_t j = 0; j < F; ++j) gW1[h * F + j] += gp * f[j];
      }
    }
    gw2[H] += gT; /* b2 */
  }
  return loss / denom;
}

static effml_status ca_fit(effml_context *ctx, effml_calibrator *cal, const cal_data *d) {
  const effml_calibration_options *o = &cal->o;
  const int64_t P = cal->np, n = d->n, bs = o->batch_size < n ? o->batch_size : n;
  double *w = (double *)effml__alloc_or_err(
      ctx, (size_t)(4 * P + d->K + o->hidden) * sizeof(double), "calibrator workspace");
  int64_t *perm = (int64_t *)effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), "permutation");
  if (!w || !perm) {
    effml__free(ctx, w);
    effml__free(ctx, perm);
    return EFFML_E_NOMEM;
  }
  double *th = w, *g = th + P, *m1 = g + P, *m2 = m1 + P, *ws = m2 + P;
  memcpy(th, cal->p, (size_t)P * sizeof(double));
  memset(m1, 0, (size_t)(2 * P) * sizeof(double));
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  int64_t t = 0;
  effml__rng r;
  for (int64_t e = 0; e < o->epochs; ++e) {
    const effml_status pst = effml__progress(ctx, e, o->epochs, "epochs"); /* cancellation point */
    if (pst != EFFML_OK) { /* cal->p is written only after the last epoch: unchanged */
      effml__free(ctx, w);
      effml__free(ctx, perm);
      return pst;
    }
    effml__rng_seed(&r, o->seed, 1000u + (uint64_t)e);
    for (int64_t i = 0; i < n; ++i) perm[i] = i;
    for (int64_t i = n - 1; i > 0; --i) {
      const int64_t j = (int64_t)effml__rng_below(&r, (uint64_t)(i + 1));
      const int64_t s = perm[i];
      perm[i] = perm[j];
      perm[j] = s;
    }
    for (int64_t s = 0; s < n; s += bs) {
      const int64_t m = n - s < bs ? n - s : bs;
      ca_eval(o, d, th, perm + s, m, g, ws);
      ++t;
      const double c1 = 1.0 - pow(b1, (double)t), c2 = 1.0 - pow(b2, (double)t);
      for (int64_t j = 0; j < P; ++j) {
        m1[j] = b1 * m1[j] + (1 - b1) * g[j];
        m2[j] = b2 * m2[j] + (1 - b2) * g[j] * g[j];
        th[j] -= o->lr * (m1[j] / c1) / (sqrt(m2[j] / c2) + eps);
      }
    }
  }
  memcpy(cal->p, th, (size_t)P * sizeof(double));
  effml__free(ctx, w);
  effml__free(ctx, perm);
  return EFFML_OK;
}

/* ---- public entry points ---- */

effml_status effml_calibration_fit(effml_context *ctx, effml_calibrator *cal,
                                   const effml_tensor *logits, const effml_tensor *features,
                                   const effml_tensor *labels) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_calibration_fit";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, cal);
  EFFML__CHECK_NULL(ctx, labels);
  cal_data d;
  EFFML__TRY(data_read(ctx, fn, cal, logits, features, labels, &d));
  effml_status st = EFFML_OK;
  if (cal->o.method == EFFML_CALIBRATION_TEMPERATURE) {
    double *p = (double *)effml__alloc_or_err(ctx, (size_t)d.K * sizeof(double), "softmax");
    if (!p) st = EFFML_E_NOMEM;
    else cal->p[0] = 1.0 / ts_fit(&d, cal->o.max_iter, p);
    effml__free(ctx, p);
  } else if (cal->o.method == EFFML_CALIBRATION_VECTOR) {
    double *ab = (double *)effml__alloc_or_err(ctx, (size_t)cal->np * sizeof(double), "params");
    if (!ab) st = EFFML_E_NOMEM;
    if (st == EFFML_OK) {
      for (int64_t k = 0; k < d.K; ++k) ab[k] = 1.0, ab[d.K + k] = 0.0;
      st = vs_fit(ctx, &d, cal->o.max_iter, ab);
      if (st == EFFML_OK) memcpy(cal->p, ab, (size_t)cal->np * sizeof(double));
    }
    effml__free(ctx, ab);
  } else {
    st = ca_fit(ctx, cal, &d);
  }
  data_free(ctx, &d);
  return st;
}

effml_status effml_calibration_loss(effml_context *ctx, const effml_calibrator *cal,
                                    const effml_tensor *logits, const effml_tensor *features,
                                    const effml_tensor *labels, double *loss, double *grad) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_calibration_loss";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, cal);
  EFFML__CHECK_NULL(ctx, labels);
  EFFML__CHECK_NULL(ctx, loss);
  cal_data d;
  EFFML__TRY(data_read(ctx, fn, cal, logits, features, labels, &d));
  const int64_t K = d.K;
  double *w = (double *)effml__alloc_or_err(
      ctx, (size_t)(3 * K + cal->o.hidden + 4 * K * K + 2 * cal->np) * sizeof(double), "workspace");
  if (!w) {
    data_free(ctx, &d);
    return EFFML_E_NOMEM;
  }
  if (cal->o.method == EFFML_CALIBRATION_TEMPERATURE) {
    const double T = cal->p[0];
    double d1;
    *loss = ts_eval(&d, 1.0 / T, w, &d1, NULL);
    if (grad) grad[0] = d1 * (-1.0 / (T * T)); /* dβ/dT = −1/T² */
  } else if (cal->o.method == EFFML_CALIBRATION_VECTOR) {
    double *g = w + 2 * K;
    *loss = vs_eval(&d, cal->p, w, w + K, grad ? g : NULL, NULL);
    if (grad) memcpy(grad, g, (size_t)cal->np * sizeof(double));
  } else {
    double *g = w + K + cal->o.hidden;
    *loss = ca_eval(&cal->o, &d, cal->p, NULL, d.n, grad ? g : NULL, w);
    if (grad) memcpy(grad, g, (size_t)cal->np * sizeof(double));
  }
  effml__free(ctx, w);
  data_free(ctx, &d);
  return EFFML_OK;
}

effml_status effml_calibration_apply(effml_context *ctx, const effml_calibrator *cal,
                                     const effml_tensor *logits, const effml_tensor *features,
                                     effml_tensor *out) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_calibration_apply";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, cal);
  cal_data d;
  EFFML__TRY(data_read(ctx, fn, cal, logits, features, NULL, &d));
  effml_status st = effml__cal_check_out(ctx, fn, out, "out", d.n, d.K);
  double *pre = NULL;
  if (st == EFFML_OK && cal->o.method == EFFML_CALIBRATION_CORRECTNESS_AWARE) {
    pre = (double *)effml__alloc_or_err(ctx, (size_t)cal->o.hidden * sizeof(double), "workspace");
    if (!pre) st = EFFML_E_NOMEM;
  }
  if (st == EFFML_OK) {
    for (int64_t i = 0; i < d.n; ++i) {
      double *z = d.z + i * d.K;
      if (cal->o.method == EFFML_CALIBRATION_TEMPERATURE) {
        for (int64_t k = 0; k < d.K; ++k) z[k] /= cal->p[0];
      } else if (cal->o.method == EFFML_CALIBRATION_VECTOR) {
        for (int64_t k = 0; k < d.K; ++k) z[k] = cal->p[k] * z[k] + cal->p[d.K + k];
      } else {
        const double T = ca_temp(&cal->o, cal->p, d.f + i * d.F, pre, NULL);
        for (int64_t k = 0; k < d.K; ++k) z[k] /= T;
      }
    }
    effml__cal_write(out, d.z, d.n * d.K);
  }
  effml__free(ctx, pre);
  data_free(ctx, &d);
  return st;
}

/* ---- features from transformed views ---- */

effml_status effml_calibration_ca_features(effml_context *ctx, const effml_tensor *logits,
                                           int32_t num_views, const effml_tensor *const *views,
                                           int64_t top_k, effml_tensor *features) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_calibration_ca_features";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, views);
  if (num_views < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: num_views=%d must be >= 1", fn, (int)num_views);
  double *z = NULL;
  int64_t n = 0, K = 0;
  EFFML__TRY(effml__cal_read_matrix(ctx, fn, logits, "logits", -1, -1, &z, &n, &K));
  effml_status st = EFFML_OK;
  if (top_k < 1 || top_k > K)
    st = effml__err(ctx, EFFML_E_INVALID_ARG, "%s: top_k=%lld must be in [1, K=%lld]", fn,
                    (long long)top_k, (long long)K);
  if (st == EFFML_OK) st = effml__cal_check_out(ctx, fn, features, "features", n, num_views * top_k);
  const int64_t F = num_views * top_k;
  double *out = NULL, *p = NULL;
  int64_t *top = NULL;
  if (st == EFFML_OK) {
    out = (double *)effml__alloc_or_err(ctx, (size_t)(n * F) * sizeof(double), "features");
    p = (double *)effml__alloc_or_err(ctx, (size_t)K * sizeof(double), "softmax");
    top = (int64_t *)effml__alloc_or_err(ctx, (size_t)(n * top_k) * sizeof(int64_t), "top-k");
    if (!out || !p || !top) st = EFFML_E_NOMEM;
  }
  if (st == EFFML_OK)
    for (int64_t i = 0; i < n; ++i) { /* top-k by selection: descending, ties to the lower index */
      const double *row = z + i * K;
      for (int64_t j = 0; j < top_k; ++j) {
        int64_t best = -1;
        for (int64_t k = 0; k < K; ++k) {
          int used = 0;
          for (int64_t q = 0; q < j; ++q) used |= top[i * top_k + q] == k;
          if (!used && (best < 0 || row[k] > row[best])) best = k;
        }
        top[i * top_k + j] = best;
      }
    }
  for (int32_t v = 0; v < num_views && st == EFFML_OK; ++v) {
    double *zv = NULL;
    char name[32];
    snprintf(name, sizeof name, "views[%d]", (int)v);
    st = effml__cal_read_matrix(ctx, fn, views[v], name, n, K, &zv, NULL, NULL);
    if (st != EFFML_OK) break;
    for (int64_t i = 0; i < n; ++i) {
      softmax_scaled(zv + i * K, K, 1.0, p);
      for (int64_t j = 0; j < top_k; ++j) out[i * F + v * top_k + j] = p[top[i * top_k + j]];
    }
    effml__free(ctx, zv);
  }
  if (st == EFFML_OK) effml__cal_write(features, out, n * F);
  effml__free(ctx, z);
  effml__free(ctx, out);
  effml__free(ctx, p);
  effml__free(ctx, top);
  return st;
}
