/* Condensed nearest neighbour (Hart, "The condensed nearest neighbor rule",
 * IEEE Trans. Inf. Theory 14(3), 1968) and one-sided selection (Kubat &
 * Matwin, "Addressing the curse of imbalanced training sets: one-sided
 * selection", ICML 1997), per targeted class as imbalanced-learn 0.10's
 * `CondensedNearestNeighbour` / `OneSidedSelection`:
 *
 * - C starts as the minority rows plus n_seeds_S random rows of the class
 *   (drawn without replacement from the class stream; imblearn draws with
 *   replacement, so a seed can appear twice in its output);
 * - CNN: the class rows are visited in order, and a row that the
 *   n_neighbors-NN vote over C misclassifies joins C; the passes repeat until
 *   one adds nothing (Hart's rule; imblearn 0.10 stops after one pass, so
 *   rows it skipped early can end up misclassified).  Hence every row of the
 *   class is classified correctly by C, and for two classes the kept set
 *   1-NN-classifies every original row;
 * - OSS: the class rows outside C that C's n_neighbors-NN vote misclassifies
 *   join the seeds; then Tomek links with a member in a targeted class are
 *   removed from the union, repeatedly until none is left (imblearn removes
 *   one round of links; new links can appear after it);
 * - output: classes in label order, a targeted class as seeds then added rows
 *   (in the order they were added), other classes whole in original order;
 *   OSS's Tomek step keeps that order.
 * The kNN vote ties go to the smaller label (scikit-learn's argmax). */
#include <math.h>
#include <string.h>

#include "sampler_internal.h"

#define TAG_CNN 0x434e4eULL
#define TAG_OSS 0x4f5353ULL

/* n_seeds distinct positions in [0, nc) from the class stream, in draw order. */
static effml_status draw_seeds(effml_context *ctx, uint64_t seed, uint64_t tag, int64_t label,
                               int64_t nc, int64_t n_seeds, int64_t *out) {
  int64_t *perm = (int64_t *)effml__alloc_or_err(ctx, (size_t)nc * sizeof(int64_t), "seeds");
  if (!perm) return EFFML_E_NOMEM;
  for (int64_t i = 0; i < nc; ++i) perm[i] = i;
  effml__rng r;
  effml__class_rng(&r, seed, tag, label);
  for (int64_t i = 0; i < n_seeds; ++i) {
    int64_t j = i + (int64_t)effml__rng_below(&r, (uint64_t)(nc - i));
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
    out[i] = perm[i];
  }
  effml__free(ctx, perm);
  return EFFML_OK;
}

static effml_status check_common(effml_context *ctx, const effml__resample_in *in, int64_t *mino) {
  const effml__classes *c = in->c;
  const effml_sampler_resample_options *o = in->o;
  if (o->n_neighbors < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "n_neighbors=%lld must be >= 1",
                      (long long)o->n_neighbors);
  int64_t m = 0;
  for (int64_t k = 1; k < c->n_classes; ++k)
    if (c->counts[k] < c->counts[m]) m = k;
  *mino = m;
  for (int64_t cl = 0; cl < c->n_classes; ++cl) {
    if (in->values[cl] <= 0) continue;
    if (o->n_seeds_S < 1 || o->n_seeds_S > c->counts[cl])
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "n_seeds_S=%lld must be in [1, %lld] (class %lld has %lld samples)",
                        (long long)o->n_seeds_S, (long long)c->counts[cl],
                        (long long)c->labels[cl], (long long)c->counts[cl]);
    if (c->counts[m] + o->n_seeds_S < o->n_neighbors)
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "n_neighbors=%lld exceeds the %lld minority samples plus %lld seeds",
                        (long long)o->n_neighbors, (long long)c->counts[m],
                        (long long)o->n_seeds_S);
  }
  return EFFML_OK;
}

/* ---- CNN ---- */

/* Per class-row neighbour lists over C: k best (dist2, order, is_minority). */
typedef struct cnn_state {
  const double *xg; /* class rows in groups of 8, feature-major (effml__sqdist_groups) */
  int isa;          /* 1: the AVX-512 build of the distance kernel */
  int64_t ns, d, k;
  double *dv;   /* [ns, k] ascending */
  int64_t *di;  /* [ns, k] order in C (ties) */
  char *dm;     /* [ns, k] 1 = minority row */
  int64_t *len; /* [ns] entries filled */
  /* row being added */
  const double *xa;
  int64_t order;
  char minority;
} cnn_state;

static inline void cnn_insert(cnn_state *S, int64_t i, double v, int64_t ord, char mnr) {
  const int64_t k = S->k;
  double *dv = S->dv + i * k;
  int64_t *di = S->di + i * k;
  char *dm = S->dm + i * k;
  int64_t n = S->len[i];
  if (n == k && (v > dv[k - 1] || (v == dv[k - 1] && ord > di[k - 1]))) return;
  int64_t p = n < k ? n : k - 1;
  while (p > 0 && (dv[p - 1] > v || (dv[p - 1] == v && di[p - 1] > ord))) {
    dv[p] = dv[p - 1];
    di[p] = di[p - 1];
    dm[p] = dm[p - 1];
    --p;
  }
  dv[p] = v;
  di[p] = ord;
  dm[p] = mnr;
  if (n < k) S->len[i] = n + 1;
}

/* Squared distances of the class rows to the row being added, each summed
 * over the features in order from 0.0 (as a scalar loop would: vector
 * extensions are element-wise), 16 rows at a time from the grouped copy
 * (effml__sqdist_groups: groups of 8 rows, feature-major); the same bytes
 * from the portable and the AVX-512 build. */
typedef double cnn_v8 __attribute__((vector_size(64)));

static inline __attribute__((always_inline)) void cnn_dist_body(const double *xg, const double *xa,
                                                                int64_t d, int64_t g0, int64_t g1,
                                                                double *out) {
  int64_t g = g0;
  for (; g + 2 <= g1; g += 2) {
    const double *c = xg + g * d * 8;
    cnn_v8 a0 = {0}, a1 = {0};
    for (int64_t t = 0; t < d; ++t) {
      cnn_v8 c0, c1;
      memcpy(&c0, c + t * 8, sizeof c0);
      memcpy(&c1, c + (d + t) * 8, sizeof c1);
      const cnn_v8 u0 = c0 - xa[t], u1 = c1 - xa[t];
      a0 += u0 * u0;
      a1 += u1 * u1;
    }
    memcpy(out + (g - g0) * 8, &a0, sizeof a0);
    memcpy(out + (g - g0) * 8 + 8, &a1, sizeof a1);
  }
  if (g < g1) {
    const double *c = xg + g * d * 8;
    cnn_v8 a0 = {0};
    for (int64_t t = 0; t < d; ++t) {
      cnn_v8 c0;
      memcpy(&c0, c + t * 8, sizeof c0);
      const cnn_v8 u0 = c0 - xa[t];
      a0 += u0 * u0;
    }
    memcpy(out + (g - g0) * 8, &a0, sizeof a0);
  }
}

static void cnn_dist_portable(const double *xg, const double *xa, int64_t d, int64_t g0,
                              int64_t g1, double *out) {
  cnn_dist_body(xg, xa, d, g0, g1, out);
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void cnn_dist_avx512(const double *xg, const double *xa,
                                                               int64_t d, int64_t g0, int64_t g1,
                                                               double *out) {
  cnn_dist_body(xg, xa, d, g0, g1, out);
}
#endif

/* Groups [b, e) of 8 class rows: their distances to the row being added
 * enter their lists. */
#define CNN_GROUPS 8
static void cnn_add_range(void *arg, int64_t b, int64_t e, int32_t worker) {
  (void)worker;
  cnn_state *S = (cnn_state *)arg;
  double out[CNN_GROUPS * 8];
  for (int64_t g0 = b; g0 < e; g0 += CNN_GROUPS) {
    const int64_t g1 = e - g0 < CNN_GROUPS ? e : g0 + CNN_GROUPS;
#if defined(__x86_64__)
    if (S->isa)
      cnn_dist_avx512(S->xg, S->xa, S->d, g0, g1, out);
    else
#endif
      cnn_dist_portable(S->xg, S->xa, S->d, g0, g1, out);
    const int64_t r1 = g1 * 8 < S->ns ? g1 * 8 : S->ns;
    for (int64_t i = g0 * 8; i < r1; ++i) cnn_insert(S, i, out[i - g0 * 8], S->order, S->minority);
  }
}

/* Rows per thread of one addition's update: a thread only pays off when its
 * share (rows x d multiply-adds, ~1 ns each) dwarfs starting it (60 us to a
 * few ms on a 2-core VM); an addition to a class of a few thousand rows runs
 * on the calling thread. */
static int64_t cnn_min_chunk(int64_t d) { /* in groups of 8 rows */
  const int64_t c = ((int64_t)1 << 15) / (d > 0 ? d : 1);
  return c < 32 ? 32 : c;
}

/* 1 if the vote over row i's list picks the class (minority label vs class label). */
static int cnn_correct(const cnn_state *S, int64_t i, int minority_label_smaller) {
  const char *dm = S->dm + i * S->k;
  int64_t n = S->len[i], vm = 0;
  for (int64_t t = 0; t < n; ++t) vm += dm[t];
  int64_t vc = n - vm;
  if (vc != vm) return vc > vm;
  return !minority_label_smaller; /* tie: the smaller label wins */
}

static effml_status cnn_class(effml_context *ctx, const effml__resample_in *in, int64_t cl,
                              int64_t mino, const double *xmin, effml__plan *p) {
  const effml__classes *c = in->c;
  const effml_sampler_resample_options *o = in->o;
  const int64_t d = in->d, ns = c->counts[cl], n_min = c->counts[mino], k = o->n_neighbors;
  const int64_t *rows = c->rows + c->start[cl];
  cnn_state S;
  memset(&S, 0, sizeof S);
  S.ns = ns;
  S.d = d;
  S.k = k;
  double *xs = effml__gather_rows(ctx, in->x, d, rows, ns);
  S.dv = (double *)effml__malloc(ctx, (size_t)(ns * k) * sizeof(double));
  S.di = (int64_t *)effml__malloc(ctx, (size_t)(ns * k) * sizeof(int64_t));
  S.dm = (char *)effml__malloc(ctx, (size_t)(ns * k));
  S.len = (int64_t *)effml__calloc(ctx, (size_t)ns, sizeof(int64_t));
  int64_t *added = (int64_t *)effml__malloc(ctx, (size_t)ns * sizeof(int64_t));
  char *inC = (char *)effml__calloc(ctx, (size_t)ns, 1);
  const int64_t km = k < n_min ? k : n_min;
  int64_t *ki = (int64_t *)effml__malloc(ctx, (size_t)(ns * km) * sizeof(int64_t));
  double *kd = (double *)effml__malloc(ctx, (size_t)(ns * km) * sizeof(double));
  effml_status st = EFFML_OK;
  if (!xs || !S.dv || !S.di || !S.dm || !S.len || !added || !inC || !ki || !kd)
    st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for CNN on class %lld",
                    (long long)c->labels[cl]);
  /* C = minority rows (order 0..n_min-1), then seeds, then additions. */
  if (st == EFFML_OK)
    st = effml__knn_f64(ctx, xmin, n_min, xs, ns, d, km, NULL, o->block_rows, ki, kd);
  /* the class rows grouped for the additions (replacing the row-major copy) */
  double *xg = NULL;
  if (st == EFFML_OK) {
    xg = effml__sqdist_groups(ctx, xs, ns, d);
    if (!xg) st = EFFML_E_NOMEM;
    S.xg = xg;
    S.isa = effml__sqdist_isa(ctx, -1);
  }
  effml__free(ctx, xs);
  int64_t n_added = 0;
  if (st == EFFML_OK) {
    for (int64_t i = 0; i < ns; ++i)
      for (int64_t t = 0; t < km; ++t) cnn_insert(&S, i, kd[i * km + t], ki[i * km + t], 1);
    st = draw_seeds(ctx, o->seed, TAG_CNN, c->labels[cl], ns, o->n_seeds_S, added);
  }
  int64_t order = n_min;
  for (int64_t s = 0; st == EFFML_OK && s < o->n_seeds_S; ++s) {
    inC[added[s]] = 1;
    S.xa = in->x + rows[added[s]] * d;
    S.order = order++;
    S.minority = cl == mino;
    st = effml__parallel_for(ctx, (ns + 7) / 8, cnn_min_chunk(d), cnn_add_range, &S);
    n_added++;
  }
  const int min_smaller = c->labels[mino] < c->labels[cl];
  /* A targeted minority class is C's only class: every row is classified right. */
  for (int changed = cl != mino; st == EFFML_OK && changed;) {
    changed = 0;
    for (int64_t i = 0; st == EFFML_OK && i < ns; ++i) {
      if (inC[i] || cnn_correct(&S, i, min_smaller)) continue;
      inC[i] = 1;
      added[n_added++] = i;
      S.xa = in->x + rows[i] * d;
      S.order = order++;
      S.minority = cl == mino;
      st = effml__parallel_for(ctx, (ns + 7) / 8, cnn_min_chunk(d), cnn_add_range, &S);
      changed = 1;
    }
  }
  for (int64_t t = 0; st == EFFML_OK && t < n_added; ++t) effml__plan_push(p, rows[added[t]], -1, 0.0);
  effml__free(ctx, xg);
  effml__free(ctx, S.dv);
  effml__free(ctx, S.di);
  effml__free(ctx, S.dm);
  effml__free(ctx, S.len);
  effml__free(ctx, added);
  effml__free(ctx, inC);
  effml__free(ctx, ki);
  effml__free(ctx, kd);
  return st;
}

effml_status effml__cnn_plan(effml_context *ctx, const effml__resample_in *in, effml__plan *p) {
  const effml__classes *c = in->c;
  int64_t mino = 0;
  EFFML__TRY(check_common(ctx, in, &mino));
  double *xmin = effml__gather_rows(ctx, in->x, in->d, c->rows + c->start[mino], c->counts[mino]);
  if (!xmin) return EFFML_E_NOMEM;
  effml_status st = effml__plan_reserve(ctx, p, in->n);
  for (int64_t cl = 0; st == EFFML_OK && cl < c->n_classes; ++cl) {
    const int64_t *rows = c->rows + c->start[cl];
    if (in->values[cl] <= 0) {
      for (int64_t i = 0; i < c->counts[cl]; ++i) effml__plan_push(p, rows[i], -1, 0.0);
      continue;
    }
    st = cnn_class(ctx, in, cl, mino, xmin, p);
  }
  effml__free(ctx, xmin);
  return st;
}

/* ---- OSS ---- */

effml_status effml__oss_plan(effml_context *ctx, const effml__resample_in *in, effml__plan *p) {
  const effml__classes *c = in->c;
  const effml_sampler_resample_options *o = in->o;
  const int64_t d = in->d, k = o->n_neighbors;
  int64_t mino = 0;
  EFFML__TRY(check_common(ctx, in, &mino));
  const int64_t n_min = c->counts[mino], ns_seed = o->n_seeds_S;
  const int64_t *mrows = c->rows + c->start[mino];
  int64_t *sel = (int64_t *)effml__alloc_or_err(ctx, (size_t)in->n * sizeof(int64_t), "rows");
  int64_t *crow = sel ? (int64_t *)effml__alloc_or_err(ctx, (size_t)(n_min + ns_seed) * sizeof(int64_t), "rows") : NULL;
  effml_status st = crow ? EFFML_OK : EFFML_E_NOMEM;
  int64_t nsel = 0;
  for (int64_t cl = 0; st == EFFML_OK && cl < c->n_classes; ++cl) {
    const int64_t *rows = c->rows + c->start[cl];
    const int64_t nc = c->counts[cl];
    if (in->values[cl] <= 0) {
      for (int64_t i = 0; i < nc; ++i) sel[nsel++] = rows[i];
      continue;
    }
    int64_t *seeds = (int64_t *)effml__alloc_or_err(ctx, (size_t)ns_seed * sizeof(int64_t), "seeds");
    char *is_seed = seeds ? (char *)effml__calloc(ctx, (size_t)nc, 1) : NULL;
    int64_t *srows = is_seed ? (int64_t *)effml__malloc(ctx, (size_t)nc * sizeof(int64_t)) : NULL;
    int64_t *nn = srows ? (int64_t *)effml__malloc(ctx, (size_t)(nc * k) * sizeof(int64_t) + 1) : NULL;
    double *xC = NULL, *xS = NULL;
    st = nn ? draw_seeds(ctx, o->seed, TAG_OSS, c->labels[cl], nc, ns_seed, seeds)
            : effml__err(ctx, EFFML_E_NOMEM, "out of memory for OSS");
    int64_t nS = 0;
    if (st == EFFML_OK) {
      memcpy(crow, mrows, (size_t)n_min * sizeof(int64_t));
      for (int64_t s = 0; s < ns_seed; ++s) {
        crow[n_min + s] = rows[seeds[s]];
        is_seed[seeds[s]] = 1;
        sel[nsel++] = rows[seeds[s]];
      }
      for (int64_t i = 0; i < nc; ++i)
        if (!is_seed[i]) srows[nS++] = rows[i];
      xC = effml__gather_rows(ctx, in->x, d, crow, n_min + ns_seed);
      xS = xC ? effml__gather_rows(ctx, in->x, d, srows, nS) : NULL;
      if (!xS) st = EFFML_E_NOMEM;
    }
    if (st == EFFML_OK && nS > 0)
      st = effml__knn_f64(ctx, xC, n_min + ns_seed, xS, nS, d, k, NULL, o->block_rows, nn, NULL);
    const int min_smaller = c->labels[mino] < c->labels[cl];
    for (int64_t i = 0; st == EFFML_OK && i < nS; ++i) {
      int64_t vm = 0;
      for (int64_t t = 0; t < k; ++t) vm += nn[i * k + t] < n_min && cl != mino;
      int64_t vc = k - vm;
      int correct = vc != vm ? vc > vm : !min_smaller;
      if (!correct) sel[nsel++] = srows[i];
    }
    effml__free(ctx, seeds);
    effml__free(ctx, is_seed);
    effml__free(ctx, srows);
    effml__free(ctx, nn);
    effml__free(ctx, xC);
    effml__free(ctx, xS);
  }
  /* Tomek links with a member in a targeted class, removed until none is left. */
  double *xs = NULL;
  int64_t *cls = NULL, *keep = NULL;
  char *targeted = NULL;
  int64_t nk = 0;
  if (st == EFFML_OK) {
    xs = effml__gather_rows(ctx, in->x, d, sel, nsel);
    cls = xs ? (int64_t *)effml__malloc(ctx, (size_t)nsel * sizeof(int64_t) + 1) : NULL;
    keep = cls ? (int64_t *)effml__malloc(ctx, (size_t)nsel * sizeof(int64_t) + 1) : NULL;
    targeted = keep ? (char *)effml__malloc(ctx, (size_t)c->n_classes) : NULL;
    if (!targeted) st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for OSS");
  }
  if (st == EFFML_OK) {
    for (int64_t i = 0; i < nsel; ++i) cls[i] = c->cls[sel[i]];
    for (int64_t cl = 0; cl < c->n_classes; ++cl) targeted[cl] = in->values[cl] > 0;
    st = effml__tomek_pass(ctx, xs, nsel, d, cls, targeted, o->block_rows, 1, keep, &nk);
  }
  if (st == EFFML_OK) st = effml__plan_reserve(ctx, p, nk);
  for (int64_t t = 0; st == EFFML_OK && t < nk; ++t) effml__plan_push(p, sel[keep[t]], -1, 0.0);
  effml__free(ctx, xs);
  effml__free(ctx, cls);
  effml__free(ctx, keep);
  effml__free(ctx, targeted);
  effml__free(ctx, sel);
  effml__free(ctx, crow);
  return st;
}
