/*
 * Dynamic sparse training: RigL (Evci et al., ICML 2020, §3) and SET
 * (Mocanu et al., Nat. Commun. 2018), with the schedule of cbsparse's
 * DynamicMaskOptimizer:
 *
 *   update at step t iff begin < t < end and t mod ΔT = 0, end = ⌊f·T⌋
 *   α(t) = α0·(1 + cos(π(t - begin)/(end - begin)))/2   (or constant α0)
 *   drop  n = ⌊α·nnz⌋ active weights with the smallest |w|
 *   grow  n positions outside the remaining mask with the largest score:
 *         |dense gradient| (RigL) or U(0,1) (SET); a just-dropped weight may
 *         come back and keeps its value; new ones start at 0 with zero state.
 *
 * Ties break towards the lower flat index, so an update depends only on the
 * values (never on the thread count).  The values live in stable slots
 * (sparse_internal.h): a kept weight keeps its slot and so its optimizer
 * state; a new connection takes a freed slot whose state is reset.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sparse_internal.h"

struct effml_dst {
  effml_context *ctx;
  effml_layer *model;
  effml_optimizer *opt;
  effml_dst_options o;
  int64_t end;
  int32_t n;
  effml_layer **owner; /* [n] layer holding matrix i */
  effml__spmat **mats; /* [n] */
  int64_t t, updates;
};

void effml_dst_options_init(effml_dst_options *opt) {
  if (!opt) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->method = EFFML_SPARSE_DST_RIGL;
  opt->delta_t = 100;
  opt->drop_fraction = 0.3;
  opt->decay = EFFML_SPARSE_DST_DECAY_COSINE;
  opt->total_steps = 0;
  opt->end_fraction = 0.75;
  opt->begin_step = 0;
  opt->seed = 0;
}

/* ---------------- selection (3-way quickselect, deterministic) ---------------- */

/* k-th smallest (0-based) of a[0..n), reordering a. */
static float select_kth(float *a, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n - 1;
  while (lo < hi) {
    /* median of three as pivot */
    float x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi];
    float piv = (x < y) ? ((y < z) ? y : (x < z ? z : x)) : ((x < z) ? x : (y < z ? z : y));
    int64_t lt = lo, i = lo, gt = hi;
    while (i <= gt) {
      if (a[i] < piv) {
        float t = a[lt]; a[lt] = a[i]; a[i] = t;
        ++lt; ++i;
      } else if (a[i] > piv) {
        float t = a[gt]; a[gt] = a[i]; a[i] = t;
        --gt;
      } else {
        ++i;
      }
    }
    if (k < lt) hi = lt - 1;
    else if (k > gt) lo = gt + 1;
    else return piv;
  }
  return a[k];
}

static float score_of(float g) { return isnan(g) ? 0.0f : fabsf(g); }

/* ---------------- one matrix ---------------- */

static effml_status update_matrix(effml_dst *d, int32_t mi, double alpha) {
  effml_context *ctx = d->ctx;
  effml_layer *layer = d->owner[mi];
  effml__spmat *m = d->mats[mi];
  const int64_t nnz = m->nnz, cols = m->cols, numel = m->rows * m->cols;
  const int64_t n_drop = (int64_t)floor(alpha * (double)nnz);
  if (n_drop < 1) return EFFML_OK;
  effml__param *pe = effml__layer_param_entry(layer, m->param);
  float *val = effml__f32(pe->value), *grad = effml__f32(pe->grad);

  effml_status st = EFFML_OK;
  int64_t *pos = (int64_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int64_t));
  int32_t *slot = (int32_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int32_t));
  float *key = (float *)effml__malloc(ctx, (size_t)(numel > nnz ? numel : nnz) * sizeof(float));
  uint8_t *state = (uint8_t *)effml__calloc(ctx, (size_t)numel, 1); /* 1 kept, 2 dropped, 3 grown */
  int64_t *fresh = (int64_t *)effml__malloc(ctx, (size_t)n_drop * sizeof(int64_t));
  int32_t *old_slot = (int32_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int32_t));
  int64_t *old_pos = (int64_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int64_t));
  if (!pos || !slot || !key || !state || !fresh || !old_slot || !old_pos) {
    st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for a sparse mask update (%lld weights)",
                    (long long)numel);
    goto done;
  }
  /* old active set in position order */
  for (int64_t r = 0; r < m->rows; ++r)
    for (int64_t p = m->row_ptr[r]; p < m->row_ptr[r + 1]; ++p) {
      old_pos[p] = r * cols + m->col_idx[p];
      old_slot[p] = m->slot[p];
    }
  /* drop: the n_drop smallest |w|, ties to the lower position */
  for (int64_t p = 0; p < nnz; ++p) key[p] = score_of(val[old_slot[p]]);
  {
    float tau = select_kth(key, nnz, n_drop - 1);
    int64_t lt = 0;
    for (int64_t p = 0; p < nnz; ++p) lt += score_of(val[old_slot[p]]) < tau;
    int64_t eq_left = n_drop - lt;
    for (int64_t p = 0; p < nnz; ++p) {
      float w = score_of(val[old_slot[p]]);
      int drop = w < tau || (w == tau && eq_left > 0);
      if (w == tau && drop) --eq_left;
      state[old_pos[p]] = drop ? 2 : 1;
    }
  }
  /* grow: n_drop best-scoring positions that are not kept */
  int64_t ncand = numel - (nnz - n_drop);
  {
    effml__rng rng;
    effml__rng_seed(&rng, d->o.seed, (uint64_t)d->updates * 1000003ULL + (uint64_t)mi);
    int64_t c = 0;
    for (int64_t q = 0; q < numel; ++q) {
      if (state[q] == 1) continue;
      key[c++] = d->o.method == EFFML_SPARSE_DST_SET ? (float)effml__rng_uniform(&rng)
                                                : score_of(m->dense_grad[q]);
    }
    /* key[] holds candidate scores in position order; keep a copy order by re-deriving */
    float *sel = (float *)effml__malloc(ctx, (size_t)ncand * sizeof(float));
    if (!sel) {
      st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for a sparse mask update");
      goto done;
    }
    memcpy(sel, key, (size_t)ncand * sizeof(float));
    float tau = select_kth(sel, ncand, ncand - n_drop);
    effml__free(ctx, sel);
    int64_t gt = 0;
    for (int64_t i = 0; i < ncand; ++i) gt += key[i] > tau;
    int64_t eq_left = n_drop - gt;
    c = 0;
    for (int64_t q = 0; q < numel; ++q) {
      if (state[q] == 1) continue;
      float s = key[c++];
      int grow = s > tau || (s == tau && eq_left > 0);
      if (s == tau && grow) --eq_left;
      if (grow) state[q] = state[q] == 2 ? 1 : 3; /* a regrown dropped weight is simply kept */
      else if (state[q] == 2) state[q] = 4;       /* dropped for good: its slot is freed */
    }
  }
  /* slots: kept positions keep theirs; freed slots (in old position order) go to new ones */
  {
    int64_t nfree = 0;
    for (int64_t p = 0; p < nnz; ++p)
      if (state[old_pos[p]] == 4) fresh[nfree++] = old_slot[p];
    int64_t k = 0, f = 0, op = 0;
    for (int64_t q = 0; q < numel; ++q) {
      if (state[q] == 1) {
        while (old_pos[op] < q) ++op;
        pos[k] = q;
        slot[k++] = old_slot[op];
      } else if (state[q] == 3) {
        pos[k] = q;
        slot[k++] = (int32_t)fresh[f++];
      }
    }
    if (k != nnz || f != nfree) { /* internal invariant: nnz is exact */
      st = effml__err(ctx, EFFML_E_STATE, "sparse mask update lost count (%lld != %lld)",
                      (long long)k, (long long)nnz);
      goto done;
    }
    st = effml__spmat_rebuild(ctx, m, pos, slot);
    if (st != EFFML_OK) goto done;
    for (int64_t i = 0; i < nfree; ++i) {
      val[fresh[i]] = 0.0f;
      grad[fresh[i]] = 0.0f;
    }
    if (d->opt && nfree > 0) {
      st = effml_optimizer_reset_state(ctx, d->opt, pe->value, fresh, nfree);
      if (st == EFFML_E_NOT_FOUND) st = EFFML_OK; /* parameter not trained by this optimizer */
    }
  }
done:
  effml__free(ctx, pos);
  effml__free(ctx, slot);
  effml__free(ctx, key);
  effml__free(ctx, state);
  effml__free(ctx, fresh);
  effml__free(ctx, old_slot);
  effml__free(ctx, old_pos);
  return st;
}

/* ---------------- one block-sparse matrix (m->block > 1) ----------------
 *
 * Whole blocks are dropped and grown: a unit is one block (block-row br,
 * column c), i.e. rows br·B .. br·B + h - 1 of column c, h = B except in the
 * tail block-row (rows mod B rows).  Its drop score is Σ |w| over its
 * elements, its grow score Σ |dense gradient| (RigL) or one U(0,1) (SET).
 * Full block-rows and the tail are updated as two separate pools (⌊α·active⌋
 * units each), so every grown unit has as many elements as a dropped one and
 * nnz stays exact.  Ties break towards the lower unit index. */
static effml_status update_blocked(effml_dst *d, int32_t mi, double alpha) {
  effml_context *ctx = d->ctx;
  effml_layer *layer = d->owner[mi];
  effml__spmat *m = d->mats[mi];
  const int64_t B = m->block, rows = m->rows, cols = m->cols, nnz = m->nnz;
  const int64_t nbr = (rows + B - 1) / B, nunits = nbr * cols, nfull = rows / B;
  effml__param *pe = effml__layer_param_entry(layer, m->param);
  float *val = effml__f32(pe->value), *grad = effml__f32(pe->grad);
  effml_status st = EFFML_OK;
  int32_t *uj = (int32_t *)effml__malloc(ctx, (size_t)nunits * sizeof(int32_t));
  uint8_t *state = (uint8_t *)effml__calloc(ctx, (size_t)nunits, 1);
  float *key = (float *)effml__malloc(ctx, (size_t)nunits * sizeof(float));
  float *sel = (float *)effml__malloc(ctx, (size_t)nunits * sizeof(float));
  int64_t *pos = (int64_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int64_t));
  int32_t *slot = (int32_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int32_t));
  int64_t *fresh = (int64_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int64_t));
  if (!uj || !state || !key || !sel || !pos || !slot || !fresh) {
    st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for a block mask update (%lld blocks)",
                    (long long)nunits);
    goto done;
  }
  for (int64_t u = 0; u < nunits; ++u) uj[u] = -1;
  for (int64_t br = 0; br < nbr; ++br) {
    const int64_t r0 = br * B;
    for (int64_t p = m->row_ptr[r0]; p < m->row_ptr[r0 + 1]; ++p)
      uj[br * cols + m->col_idx[p]] = (int32_t)(p - m->row_ptr[r0]);
  }
  effml__rng rng;
  effml__rng_seed(&rng, d->o.seed, (uint64_t)d->updates * 1000003ULL + (uint64_t)mi);
  for (int reg = 0; reg < 2; ++reg) {
    const int64_t b_lo = reg ? nfull : 0, b_hi = reg ? nbr : nfull;
    const int64_t u_lo = b_lo * cols, u_hi = b_hi * cols;
    if (u_lo >= u_hi) continue;
    const int64_t h = reg ? rows - nfull * B : B;
    /* drop scores of the active units, in unit order */
    int64_t nact = 0;
    for (int64_t u = u_lo; u < u_hi; ++u) {
      if (uj[u] < 0) continue;
      const int64_t r0 = u / cols * B;
      float w = 0.0f;
      for (int64_t k = 0; k < h; ++k) w += score_of(val[m->slot[m->row_ptr[r0 + k] + uj[u]]]);
      key[nact++] = w;
    }
    const int64_t n_drop = (int64_t)floor(alpha * (double)nact);
    if (n_drop < 1) {
      for (int64_t u = u_lo; u < u_hi; ++u)
        if (uj[u] >= 0) state[u] = 1;
      continue;
    }
    memcpy(sel, key, (size_t)nact * sizeof(float));
    float tau = select_kth(sel, nact, n_drop - 1);
    int64_t lt = 0;
    for (int64_t i = 0; i < nact; ++i) lt += key[i] < tau;
    int64_t eq_left = n_drop - lt, i = 0;
    for (int64_t u = u_lo; u < u_hi; ++u) {
      if (uj[u] < 0) continue;
      const float w = key[i++];
      const int drop = w < tau || (w == tau && eq_left > 0);
      if (w == tau && drop) --eq_left;
      state[u] = drop ? 2 : 1;
    }
    /* grow scores of every unit not kept */
    int64_t nc = 0;
    for (int64_t u = u_lo; u < u_hi; ++u) {
      if (state[u] == 1) continue;
      float g = 0.0f;
      if (d->o.method == EFFML_SPARSE_DST_SET) {
        g = (float)effml__rng_uniform(&rng);
      } else {
        const int64_t r0 = u / cols * B, c = u % cols;
        for (int64_t k = 0; k < h; ++k) g += score_of(m->dense_grad[(r0 + k) * cols + c]);
      }
      key[nc++] = g;
    }
    memcpy(sel, key, (size_t)nc * sizeof(float));
    tau = select_kth(sel, nc, nc - n_drop);
    int64_t gt = 0;
    for (int64_t q = 0; q < nc; ++q) gt += key[q] > tau;
    eq_left = n_drop - gt;
    i = 0;
    for (int64_t u = u_lo; u < u_hi; ++u) {
      if (state[u] == 1) continue;
      const float g = key[i++];
      const int grow = g > tau || (g == tau && eq_left > 0);
      if (g == tau && grow) --eq_left;
      if (grow) state[u] = state[u] == 2 ? 1 : 3;
      else if (state[u] == 2) state[u] = 4;
    }
  }
  {
    /* freed slots in old position order, then new positions row by row */
    int64_t nfree = 0, k = 0, f = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t p = m->row_ptr[r]; p < m->row_ptr[r + 1]; ++p)
        if (state[r / B * cols + m->col_idx[p]] == 4) fresh[nfree++] = m->slot[p];
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t br = r / B;
      for (int64_t c = 0; c < cols; ++c) {
        const uint8_t s = state[br * cols + c];
        if (s != 1 && s != 3) continue;
        if (k >= nnz) break;
        pos[k] = r * cols + c;
        slot[k++] = s == 1 ? m->slot[m->row_ptr[r] + uj[br * cols + c]] : (int32_t)fresh[f++];
      }
    }
    if (k != nnz || f != nfree) {
      st = effml__err(ctx, EFFML_E_STATE, "block mask update lost count (%lld != %lld)",
                      (long long)k, (long long)nnz);
      goto done;
    }
    st = effml__spmat_rebuild(ctx, m, pos, slot);
    if (st != EFFML_OK) goto done;
    for (int64_t q = 0; q < nfree; ++q) {
      val[fresh[q]] = 0.0f;
      grad[fresh[q]] = 0.0f;
    }
    if (d->opt && nfree > 0) {
      st = effml_optimizer_reset_state(ctx, d->opt, pe->value, fresh, nfree);
      if (st == EFFML_E_NOT_FOUND) st = EFFML_OK;
    }
  }
done:
  effml__free(ctx, uj);
  effml__free(ctx, state);
  effml__free(ctx, key);
  effml__free(ctx, sel);
  effml__free(ctx, pos);
  effml__free(ctx, slot);
  effml__free(ctx, fresh);
  return st;
}

/* ---------------- controller ---------------- */

/* Visitor: list the matrices of every sparse layer nested anywhere in the model. */
static effml_status collect(effml_context *ctx, effml_layer *l, void *arg) {
  effml_dst *d = (effml_dst *)arg;
  effml__sparse_layer *s = effml__sparse_of(l);
  if (s) {
    for (int32_t i = 0; i < s->n_mats; ++i) {
      effml_layer **o = (effml_layer **)effml__malloc(ctx, (size_t)(d->n + 1) * sizeof *o);
      effml__spmat **m = (effml__spmat **)effml__malloc(ctx, (size_t)(d->n + 1) * sizeof *m);
      if (!o || !m) {
        effml__free(ctx, o);
        effml__free(ctx, m);
        return effml__err(ctx, EFFML_E_NOMEM, "out of memory listing sparse matrices");
      }
      if (d->n) {
        memcpy(o, d->owner, (size_t)d->n * sizeof *o);
        memcpy(m, d->mats, (size_t)d->n * sizeof *m);
      }
      effml__free(ctx, d->owner);
      effml__free(ctx, d->mats);
      d->owner = o;
      d->mats = m;
      d->owner[d->n] = l;
      d->mats[d->n] = &s->mats[i];
      d->n++;
    }
  }
  return EFFML_OK;
}

static int due(const effml_dst *d, int64_t t) {
  return d->o.method != EFFML_SPARSE_DST_STATIC && t > d->o.begin_step && t < d->end &&
         t % d->o.delta_t == 0;
}

double effml_dst_drop_fraction(const effml_dst *d, int64_t t) {
  if (!d || !(t > d->o.begin_step && t < d->end)) return 0.0;
  if (d->o.decay == EFFML_SPARSE_DST_DECAY_CONSTANT) return d->o.drop_fraction;
  const double pi = 3.14159265358979323846;
  double x = (double)(t - d->o.begin_step) / (double)(d->end - d->o.begin_step);
  return d->o.drop_fraction * (0.5 + 0.5 * cos(pi * x));
}

/* RigL: dense gradients for exactly the backward passes before an update. */
static effml_status arm(effml_dst *d, int on) {
  for (int32_t i = 0; i < d->n; ++i) {
    effml__spmat *m = d->mats[i];
    if (on && !m->dense_grad) {
      m->dense_grad = (float *)effml__malloc(d->ctx, (size_t)(m->rows * m->cols) * sizeof(float));
      if (!m->dense_grad)
        return effml__err(d->ctx, EFFML_E_NOMEM, "out of memory for a dense gradient");
    }
    m->dense_grad_on = on;
    m->dense_grad_valid = 0;
  }
  return EFFML_OK;
}

effml_status effml_dst_create(effml_context *ctx, effml_layer *model, effml_optimizer *optimizer,
                              const effml_dst_options *opt, effml_dst **out) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_dst_create";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, model);
  EFFML__CHECK_NULL(ctx, out);
  effml_dst_options o;
  EFFML__TRY(EFFML__OPTIONS_READ(ctx, fn, effml_dst_options_init, opt, &o, sizeof(uint32_t)));
  if (o.method < EFFML_SPARSE_DST_RIGL || o.method > EFFML_SPARSE_DST_STATIC)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: method=%d is unknown", fn, (int)o.method);
  if (o.decay != EFFML_SPARSE_DST_DECAY_COSINE && o.decay != EFFML_SPARSE_DST_DECAY_CONSTANT)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: decay=%d is unknown", fn, (int)o.decay);
  if (o.delta_t < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: delta_t=%lld must be >= 1", fn,
                      (long long)o.delta_t);
  if (!(o.drop_fraction > 0.0 && o.drop_fraction <= 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: drop_fraction=%g must be in (0, 1]", fn,
                      o.drop_fraction);
  if (o.total_steps < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: total_steps=%lld must be >= 1", fn,
                      (long long)o.total_steps);
  if (!(o.end_fraction > 0.0 && o.end_fraction <= 1.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: end_fraction=%g must be in (0, 1]", fn,
                      o.end_fraction);
  if (o.begin_step < 0)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: begin_step=%lld must be >= 0", fn,
                      (long long)o.begin_step);
  effml_dst *d = (effml_dst *)effml__calloc_or_err(ctx, 1, sizeof *d, "dst controller");
  if (!d) return EFFML_E_NOMEM;
  d->ctx = ctx;
  d->model = model;
  d->opt = optimizer;
  d->o = o;
  d->end = (int64_t)floor(o.end_fraction * (double)o.total_steps);
  effml_status st = effml__layer_walk(ctx, model, collect, d);
  if (st == EFFML_OK && d->n == 0)
    st = effml__err(ctx, EFFML_E_INVALID_ARG, "%s: model (kind '%s') has no sparse matrix", fn,
                    effml_layer_kind(model));
  if (st == EFFML_OK && o.method == EFFML_SPARSE_DST_RIGL) st = arm(d, due(d, 1));
  if (st != EFFML_OK) {
    effml_dst_free(d);
    return st;
  }
  *out = d;
  return EFFML_OK;
}

void effml_dst_free(effml_dst *d) {
  if (!d) return;
  effml_context *ctx = d->ctx;
  effml__free(ctx, d->owner);
  effml__free(ctx, d->mats);
  effml__free(ctx, d);
}

effml_status effml_dst_step(effml_context *ctx, effml_dst *d, int32_t *updated) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, d);
  const int64_t t = d->t + 1;
  int did = 0;
  if (due(d, t)) {
    if (d->o.method == EFFML_SPARSE_DST_RIGL)
      for (int32_t i = 0; i < d->n; ++i)
        if (!d->mats[i]->dense_grad || !d->mats[i]->dense_grad_valid)
          return effml__err(ctx, EFFML_E_STATE,
                            "effml_dst_step: RigL update at step %lld needs the dense gradient "
                            "of matrix %d; call effml_dst_step once after every backward",
                            (long long)t, (int)i);
    const double alpha = effml_dst_drop_fraction(d, t);
    for (int32_t i = 0; i < d->n; ++i) {
      effml_status st = d->mats[i]->block > 1 ? update_blocked(d, i, alpha)
                                              : update_matrix(d, i, alpha);
      if (st != EFFML_OK) return st;
    }
    d->updates++;
    did = 1;
  }
  d->t = t;
  if (d->o.method == EFFML_SPARSE_DST_RIGL) EFFML__TRY(arm(d, due(d, t + 1)));
  if (updated) *updated = did;
  return EFFML_OK;
}

int32_t effml_dst_step_hook(void *user_data, int64_t step) {
  effml_dst *d = (effml_dst *)user_data;
  if (!d) return 1;
  return effml_dst_step(d->ctx, d, NULL) != EFFML_OK;
}

int64_t effml_dst_steps(const effml_dst *d) { return d ? d->t : 0; }
int64_t effml_dst_updates(const effml_dst *d) { return d ? d->updates : 0; }
