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
 * label order, Tomek keeps the SMOTE order.  The cleaning sees the rows as
 * the output holds them (rounded to f32 for f32 x), so every entry point
 * gives the same rows.  Memory: effml_sampler_resample writes SMOTE's output
 * once in x's dtype, frees the plan and cleans those rows in place
 * (effml__combine_clean_rows; an f64 copy only for f32 x); the plan form
 * (effml__combine_clean) materialises the SMOTE rows once in f64. */
#include <string.h>

#include "sampler_internal.h"

/* Query rows per block of a single Tomek-link round (effml__tomek_pass). */
#define TOMEK_QBLOCK 4096

double *effml__plan_rows_f64(effml_context *ctx, const double *x, int64_t d,
                             const effml__plan *p, int round_f32) {
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
      if (round_f32) /* as resample_apply stores it for f32 x */
        for (int64_t t = 0; t < d; ++t) out[t] = (double)(float)out[t];
    }
  }
  return o;
}

/* effml__tomek_pass with repeat: rounds until no targeted link is left, each
 * row's nearest live row from its kept neighbour list (knn_shrink.c: the
 * live order never changes, so a list answers as long as one of its rows is
 * live), searching again only the rows that lost all of theirs. */
static effml_status tomek_repeated(effml_context *ctx, const double *xs, int64_t m, int64_t d,
                                   const int64_t *cls, const char *targeted, int64_t block_rows,
                                   int64_t *keep, int64_t *n_keep) {
  effml__knn_cache S;
  EFFML__TRY(effml__knn_cache_init(ctx, &S, m, 3));
  int64_t *cur = (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t) + 1, "rows");
  int64_t *q = cur ? (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t) + 1, "rows") : NULL;
  int64_t *nn = q ? (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t) + 1, "neighbours") : NULL;
  char *dead = nn ? (char *)effml__calloc(ctx, (size_t)m + 1, 1) : NULL;
  effml_status st = dead ? EFFML_OK : EFFML_E_NOMEM;
  int64_t mc = m;
  for (int64_t i = 0; cur && i < m; ++i) cur[i] = i;
  while (st == EFFML_OK && mc >= 2) {
    int64_t nq = 0;
    for (int64_t t = 0; t < mc; ++t)
      if (!effml__knn_cache_get(&S, dead, cur[t], 1, 0, nn + cur[t])) q[nq++] = cur[t];
    st = effml__knn_cache_fill(ctx, &S, xs, d, cur, mc, q, nq, 0, block_rows);
    for (int64_t t = 0; st == EFFML_OK && t < nq; ++t)
      if (!effml__knn_cache_get(&S, dead, q[t], 1, 0, nn + q[t]))
        st = effml__err(ctx, EFFML_E_STATE, "Tomek links: row %lld has no neighbour list (a bug)",
                        (long long)q[t]);
    if (st != EFFML_OK) break;
    int64_t nk = 0;
    for (int64_t t = 0; t < mc; ++t) {
      const int64_t i = cur[t], j = nn[i];
      const int linked = cls[i] != cls[j] && nn[j] == i;
      if (linked && targeted[cls[i]]) {
        dead[i] = 1; /* the decisions read nn[], never dead[]: same round, same lists */
        continue;
      }
      cur[nk++] = i;
    }
    const int changed = nk != mc;
    mc = nk;
    if (!changed) break;
  }
  if (st == EFFML_OK) {
    memcpy(keep, cur, (size_t)mc * sizeof(int64_t));
    *n_keep = mc;
  }
  effml__knn_cache_free(ctx, &S);
  effml__free(ctx, cur);
  effml__free(ctx, q);
  effml__free(ctx, nn);
  effml__free(ctx, dead);
  return st;
}

/* One round of Tomek links on compact rows xs [m, d] (m >= 2): drop[i] = 1
 * when row i forms a link (mutual 1-NN of different classes) and
 * targeted[cls[i]] is set, else 0.  Every row's nearest row is searched
 * TOMEK_QBLOCK rows at a time; memory: one neighbour index per row. */
static effml_status tomek_drop(effml_context *ctx, const double *xs, int64_t m, int64_t d,
                               const int64_t *cls, const char *targeted, int64_t block_rows,
                               char *drop) {
  const int64_t qb = m < TOMEK_QBLOCK ? m : TOMEK_QBLOCK;
  int64_t *nn = (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t), "neighbours");
  int64_t *self = nn ? (int64_t *)effml__alloc_or_err(ctx, (size_t)qb * sizeof(int64_t), "rows") : NULL;
  effml_status st = self ? EFFML_OK : EFFML_E_NOMEM;
  for (int64_t b0 = 0; st == EFFML_OK && b0 < m; b0 += qb) {
    const int64_t nq = m - b0 < qb ? m - b0 : qb;
    for (int64_t t = 0; t < nq; ++t) self[t] = b0 + t;
    st = effml__knn_f64(ctx, xs, m, xs + b0 * d, nq, d, 1, self, block_rows, nn + b0, NULL);
  }
  for (int64_t i = 0; st == EFFML_OK && i < m; ++i) {
    const int64_t j = nn[i];
    const int linked = cls[i] != cls[j] && nn[j] == i;
    drop[i] = (char)(linked && targeted[cls[i]]);
  }
  effml__free(ctx, self);
  effml__free(ctx, nn);
  return st;
}

effml_status effml__tomek_pass(effml_context *ctx, const double *xs, int64_t m, int64_t d,
                               const int64_t *cls, const char *targeted, int64_t block_rows,
                               int repeat, int64_t *keep, int64_t *n_keep) {
  if (repeat && m >= 2) return tomek_repeated(ctx, xs, m, d, cls, targeted, block_rows, keep, n_keep);
  if (m < 2) {
    for (int64_t i = 0; i < m; ++i) keep[i] = i;
    *n_keep = m;
    return EFFML_OK;
  }
  char *drop = (char *)effml__alloc_or_err(ctx, (size_t)m, "row flags");
  if (!drop) return EFFML_E_NOMEM;
  effml_status st = tomek_drop(ctx, xs, m, d, cls, targeted, block_rows, drop);
  if (st == EFFML_OK) {
    int64_t nk = 0;
    for (int64_t i = 0; i < m; ++i)
      if (!drop[i]) keep[nk++] = i;
    *n_keep = nk;
  }
  effml__free(ctx, drop);
  return st;
}

effml_status effml__combine_clean(effml_context *ctx, const effml__resample_in *in,
                                  effml__plan *p) {
  const effml_sampler_resample_options *o = in->o;
  const effml__classes *c = in->c;
  const int64_t m = p->n, d = in->d;
  double *xs = effml__plan_rows_f64(ctx, in->x, d, p, in->x_f32);
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

/* Rows of xb (esz bytes each) and yb (ysz bytes each), m of them: make row t
 * the old row keep[t] for t < nk (keep distinct; it is overwritten), in
 * place: the kept rows move to the front in ascending order (forward moves),
 * keep[] becomes positions among them, and that permutation is applied by
 * cycles with a bitmap of finished rows and one row of scratch. */
static effml_status gather_in_place(effml_context *ctx, char *xb, size_t esz, char *yb, size_t ysz,
                                    int64_t m, int64_t *keep, int64_t nk) {
  const int64_t words = (m + 63) / 64;
  uint64_t *bits = (uint64_t *)effml__calloc(ctx, (size_t)words + 1, sizeof(uint64_t));
  int64_t *rank = bits ? (int64_t *)effml__malloc(ctx, (size_t)(words + 1) * sizeof(int64_t)) : NULL;
  char *tmp = rank ? (char *)effml__malloc(ctx, esz + ysz) : NULL;
  if (!tmp) {
    effml__free(ctx, bits);
    effml__free(ctx, rank);
    return effml__err(ctx, EFFML_E_NOMEM, "out of memory for compacting the kept rows");
  }
  for (int64_t t = 0; t < nk; ++t) bits[keep[t] >> 6] |= (uint64_t)1 << (keep[t] & 63);
  int64_t s = 0;
  for (int64_t w = 0; w < words; ++w) {
    rank[w] = s;
    for (uint64_t b = bits[w]; b; b &= b - 1) {
      const int64_t i = w * 64 + (int64_t)__builtin_ctzll(b);
      if (i != s) {
        memmove(xb + (size_t)s * esz, xb + (size_t)i * esz, esz);
        memmove(yb + (size_t)s * ysz, yb + (size_t)i * ysz, ysz);
      }
      ++s;
    }
  }
  for (int64_t t = 0; t < nk; ++t) {
    const int64_t i = keep[t], w = i >> 6;
    keep[t] = rank[w] + (int64_t)__builtin_popcountll(bits[w] & (((uint64_t)1 << (i & 63)) - 1));
  }
  memset(bits, 0, (size_t)words * sizeof(uint64_t)); /* now: slot finished */
#define DONE(j) ((bits[(j) >> 6] >> ((j) & 63)) & 1)
#define MARK(j) (bits[(j) >> 6] |= (uint64_t)1 << ((j) & 63))
  for (int64_t t = 0; t < nk; ++t) {
    if (DONE(t)) continue;
    if (keep[t] == t) {
      MARK(t);
      continue;
    }
    memcpy(tmp, xb + (size_t)t * esz, esz);
    memcpy(tmp + esz, yb + (size_t)t * ysz, ysz);
    int64_t j = t;
    for (;;) {
      const int64_t k = keep[j];
      MARK(j);
      if (k == t) {
        memcpy(xb + (size_t)j * esz, tmp, esz);
        memcpy(yb + (size_t)j * ysz, tmp + esz, ysz);
        break;
      }
      memcpy(xb + (size_t)j * esz, xb + (size_t)k * esz, esz);
      memcpy(yb + (size_t)j * ysz, yb + (size_t)k * ysz, ysz);
      j = k;
    }
  }
#undef DONE
#undef MARK
  effml__free(ctx, tmp);
  effml__free(ctx, rank);
  effml__free(ctx, bits);
  return EFFML_OK;
}

effml_status effml__combine_clean_rows(effml_context *ctx, const effml_sampler_resample_options *o,
                                       effml_tensor *xo, effml_tensor *yo) {
  const int64_t m = xo->shape[0], d = xo->shape[1];
  const int f64 = xo->dtype == EFFML_F64, i64 = yo->dtype == EFFML_I64;
  double *xs_own = NULL;
  int64_t *ys_own = NULL;
  const double *xs = f64 ? (const double *)(const void *)xo->data : NULL;
  const int64_t *ys = i64 ? (const int64_t *)(const void *)yo->data : NULL;
  if (!f64) {
    xs_own = (double *)effml__alloc_or_err(ctx, (size_t)(m * d) * sizeof(double) + 1, "re-sampled rows");
    if (!xs_own) return EFFML_E_NOMEM;
    const float *xf = (const float *)(const void *)xo->data;
    for (int64_t t = 0; t < m * d; ++t) xs_own[t] = (double)xf[t];
    xs = xs_own;
  }
  effml_status st = EFFML_OK;
  if (!i64) {
    ys_own = (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t) + 1, "labels");
    if (!ys_own) st = EFFML_E_NOMEM;
    const int32_t *yi = (const int32_t *)(const void *)yo->data;
    for (int64_t t = 0; ys_own && t < m; ++t) ys_own[t] = yi[t];
    ys = ys_own;
  }
  /* ENN lists the kept rows grouped by class (a permutation: keep[]); Tomek
   * keeps the SMOTE order, so a drop flag per row is all it needs. */
  int64_t *keep = NULL;
  char *drop = NULL;
  int64_t nk = 0;
  if (st == EFFML_OK && o->method == EFFML_SAMPLER_RESAMPLE_SMOTEENN) {
    keep = (int64_t *)effml__alloc_or_err(ctx, (size_t)m * sizeof(int64_t) + 1, "kept rows");
    if (!keep) st = EFFML_E_NOMEM;
    effml_sampler_resample_options oe = *o;
    oe.sampling_strategy = EFFML_SAMPLER_STRATEGY_ALL;
    if (keep) st = effml__enn_pass(ctx, &oe, xs, ys, m, d, o->n_neighbors, o->kind_sel, keep, &nk);
  } else if (st == EFFML_OK) {
    effml__classes c;
    memset(&c, 0, sizeof c);
    st = effml__classes_build(ctx, ys, m, &c);
    if (st == EFFML_OK) {
      char *targeted = (char *)effml__alloc_or_err(ctx, (size_t)c.n_classes, "classes");
      drop = targeted ? (char *)effml__calloc(ctx, (size_t)m + 1, 1) : NULL;
      if (!drop) st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for Tomek links");
      if (drop) {
        memset(targeted, 1, (size_t)c.n_classes);
        effml__free(ctx, c.rows); /* not needed: free it before the search */
        c.rows = NULL;
        if (m >= 2) st = tomek_drop(ctx, xs, m, d, c.cls, targeted, o->block_rows, drop);
      }
      effml__free(ctx, targeted);
      effml__classes_free(ctx, &c);
    }
  }
  effml__free(ctx, xs_own);
  effml__free(ctx, ys_own);
  if (st == EFFML_OK && keep) {
    const size_t esz = (size_t)d * (f64 ? sizeof(double) : sizeof(float));
    st = gather_in_place(ctx, xo->data, esz, yo->data, i64 ? sizeof(int64_t) : sizeof(int32_t), m,
                         keep, nk);
  } else if (st == EFFML_OK) { /* Tomek: the kept rows forward, in order */
    const size_t esz = (size_t)d * (f64 ? sizeof(double) : sizeof(float));
    const size_t ysz = i64 ? sizeof(int64_t) : sizeof(int32_t);
    char *xb = (char *)xo->data, *yb = (char *)yo->data;
    for (int64_t i = 0; i < m; ++i) {
      if (drop[i]) continue;
      if (i != nk) {
        memcpy(xb + (size_t)nk * esz, xb + (size_t)i * esz, esz);
        memcpy(yb + (size_t)nk * ysz, yb + (size_t)i * ysz, ysz);
      }
      ++nk;
    }
  }
  effml__free(ctx, drop);
  effml__free(ctx, keep);
  if (st == EFFML_OK) {
    xo->shape[0] = nk;
    yo->shape[0] = nk;
  }
  return st;
}
