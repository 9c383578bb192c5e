/* SMOTE followed by a cleaning rule (imbalanced-learn `SMOTEENN`,
 * `SMOTETomek`; Batista, Prati & Monard, "A study of the behavior of several
 * methods for balancing machine learning training data", SIGKDD Explorations
 * 6(1), 2004), and the Tomek-link pass shared with one-sided selection.
 *
 * The SMOTE step is exactly effml_sampler_resample with method SMOTE and the same
 * options (same seed, same rows); the cleaning step then runs on the
 * resampled rows with sampling_strategy 'all', as imblearn's defaults:
 * ENN(n_neighbors, kind_sel) or Tomek links.  The result is a sub-plan of the
 * SMOTE plan, so it still streams: ENN lists kept rows grouped by class in
 * label order, Tomek keeps the SMOTE order.  Memory: the SMOTE output is
 * materialised once in f64 for the neighbour search. */
#include <string.h>

#include "sampler_internal.h"

double *effml__plan_rows_f64(effml_context *ctx, const double *x, int64_t d,
                             const effml__plan *p) {
  double *o = (double *)effml__alloc_or_err(ctx, (size_t)(p->n * d) * sizeof(double) + 1,
                                            "re-sampled rows");
  if (!o) return NULL;
  for (int64_t r = 0; r < p->n; ++r) {
    const double *xi = x + p->base[r] * d;
    double *out = o + r * d;
    if (p->nbr[r] < 0) {
      memcpy(out, xi, (size_t)d * sizeof(double));
    } else {
      const double *xj = x + p->nbr[r] * d;
      for (int64_t t = 0; t < d; ++t) out[t] = xi[t] + p->step[r] * (xj[t] - xi[t]);
    }
  }
  return o;
}

effml_status effml__tomek_pass(effml_context *ctx, const double *xs, int64_t m, int64_t d,
                               const int64_t *cls, const char *targeted, int64_t block_rows,
                               int repeat, int64_t *keep, int64_t *n_keep) {
  int64_t *nn = (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t) + 1, "neighbours");
  int64_t *self = nn ? (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t) + 1, "rows") : NULL;
  int64_t *cur = self ? (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t) + 1, "rows") : NULL;
  double *xc = NULL;
  effml_status st = cur ? EFFML_OK : EFFML_E_NOMEM;
  int64_t mc = m;
  for (int64_t i = 0; cur && i < m; ++i) cur[i] = i;
  while (st == EFFML_OK && mc >= 2) {
    const double *xv = xs;
    if (mc != m) {
      effml__free(ctx, xc);
      xc = effml__gather_rows(ctx, xs, d, cur, mc);
      if (!xc) {
        st = EFFML_E_NOMEM;
        break;
      }
      xv = xc;
    }
    for (int64_t i = 0; i < mc; ++i) self[i] = i;
    st = effml__knn_f64(ctx, xv, mc, xv, mc, d, 1, self, block_rows, nn, NULL);
    if (st != EFFML_OK) break;
    int64_t nk = 0;
    for (int64_t i = 0; i < mc; ++i) {
      int64_t j = nn[i];
      int64_t ci = cls[cur[i]], cj = cls[cur[j]];
      int linked = ci != cj && nn[j] == i;
      if (!(linked && targeted[ci])) self[nk++] = cur[i];
    }
    const int changed = nk != mc;
    memcpy(cur, self, (size_t)nk * sizeof(int64_t));
    mc = nk;
    if (!repeat || !changed) break;
  }
  if (st == EFFML_OK) {
    memcpy(keep, cur, (size_t)mc * sizeof(int64_t));
    *n_keep = mc;
  }
  effml__free(ctx, xc);
  effml__free(ctx, cur);
  effml__free(ctx, self);
  effml__free(ctx, nn);
  return st;
}

effml_status effml__combine_clean(effml_context *ctx, const effml__resample_in *in,
                                  effml__plan *p) {
  const effml_sampler_resample_options *o = in->o;
  const effml__classes *c = in->c;
  const int64_t m = p->n, d = in->d;
  double *xs = effml__plan_rows_f64(ctx, in->x, d, p);
  int64_t *ys = xs ? (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t) + 1, "labels") : NULL;
  int64_t *cls = ys ? (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t) + 1, "labels") : NULL;
  int64_t *keep = cls ? (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t) + 1, "kept rows") : NULL;
  char *targeted = keep ? (char *)effml__alloc_or_err(ctx, (size_t)c->n_classes, "classes") : NULL;
  effml_status st = targeted ? EFFML_OK : EFFML_E_NOMEM;
  int64_t nk = 0;
  if (st == EFFML_OK) {
    for (int64_t r = 0; r < m; ++r) {
      cls[r] = c->cls[p->base[r]];
      ys[r] = in->y[p->base[r]];
    }
    memset(targeted, 1, (size_t)c->n_classes);
    if (o->method == EFFML_SAMPLER_RESAMPLE_SMOTEENN) {
      effml_sampler_resample_options oe = *o;
      oe.sampling_strategy = EFFML_SAMPLER_STRATEGY_ALL;
      st = effml__enn_pass(ctx, &oe, xs, ys, m, d, o->n_neighbors, o->kind_sel, keep, &nk);
    } else {
      st = effml__tomek_pass(ctx, xs, m, d, cls, targeted, o->block_rows, 0, keep, &nk);
    }
  }
  if (st == EFFML_OK) {
    /* keep holds distinct positions: compact the plan in place via scratch ys/cls. */
    effml__plan q = *p;
    int64_t *nb = cls;
    double *sp = xs; /* m * d >= m doubles */
    for (int64_t t = 0; t < nk; ++t) {
      ys[t] = q.base[keep[t]];
      nb[t] = q.nbr[keep[t]];
      sp[t] = q.step[keep[t]];
    }
    memcpy(p->base, ys, (size_t)nk * sizeof(int64_t));
    memcpy(p->nbr, nb, (size_t)nk * sizeof(int64_t));
    memcpy(p->step, sp, (size_t)nk * sizeof(double));
    p->n = nk;
  }
  effml__free(ctx, xs);
  effml__free(ctx, ys);
  effml__free(ctx, cls);
  effml__free(ctx, keep);
  effml__free(ctx, targeted);
  return st;
}
