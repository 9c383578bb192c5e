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

/* ---------------- the states of one update ----------------
 *
 * Every position (update_matrix) or block (update_blocked) of the matrix goes
 * through these states in one update: active positions are first marked KEPT
 * or DROPPED; then every position not KEPT is a grow candidate, and the
 * winners become GROWN (a DROPPED winner is simply KEPT again, with its slot
 * and value), the DROPPED losers FREED.  Slots of FREED positions go to the
 * GROWN ones. */
enum {
  MASK_OFF = 0,     /* inactive: a grow candidate */
  MASK_KEPT = 1,    /* active after the update, in its old slot */
  MASK_DROPPED = 2, /* dropped, still a grow candidate */
  MASK_GROWN = 3,   /* new connection: takes a freed slot, value and state reset */
  MASK_FREED = 4    /* dropped for good: its slot is freed */
};

/* The cut of "the n_pick smallest (largest) of key[0..n), ties to the lower index":
 * tau the boundary value, eq_left how many keys equal to tau are still taken. */
typedef struct {
  float tau;
  int64_t eq_left;
  int largest;
} pick_cut;

/* sel is scratch holding a copy of key (reordered). */
static pick_cut cut_make(const float *key, float *sel, int64_t n, int64_t n_pick, int largest) {
  pick_cut c;
  c.largest = largest;
  c.tau = select_kth(sel, n, largest ? n - n_pick : n_pick - 1);
  int64_t beyond = 0;
  for (int64_t i = 0; i < n; ++i) beyond += largest ? key[i] > c.tau : key[i] < c.tau;
  c.eq_left = n_pick - beyond;
  return c;
}

/* Whether key s (visited in index order) is taken. */
static int cut_take(pick_cut *c, float s) {
  const int take = (c->largest ? s > c->tau : s < c->tau) || (s == c->tau && c->eq_left > 0);
  if (s == c->tau && take) --c->eq_left;
  return take;
}

/* A grow candidate's new state: a winner is GROWN (a DROPPED one KEPT), a DROPPED loser FREED. */
static uint8_t after_grow(uint8_t s, int grow) {
  if (grow) return s == MASK_DROPPED ? MASK_KEPT : MASK_GROWN;
  return s == MASK_DROPPED ? MASK_FREED : s;
}

/* Install the new mask (pos, slot: nnz entries in position order) and reset the
 * nfree freed slots fresh[]: value, gradient and optimizer state 0. */
static effml_status commit_mask(effml_dst *d, effml__spmat *m, effml__param *pe,
                                const int64_t *pos, const int32_t *slot, const int64_t *fresh,
                                int64_t nfree) {
  EFFML__TRY(effml__spmat_rebuild(d->ctx, m, pos, slot));
  float *val = effml__f32(pe->value), *grad = effml__f32(pe->grad);
  for (int64_t i = 0; i < nfree; ++i) {
    val[fresh[i]] = 0.0f;
    grad[fresh[i]] = 0.0f;
  }
  if (d->opt && nfree > 0) {
    effml_status st = effml_optimizer_reset_state(d->ctx, d->opt, pe->value, fresh, nfree);
    if (st == EFFML_E_NOT_FOUND) st = EFFML_OK; /* parameter not trained by this optimizer */
    return st;
  }
  return EFFML_OK;
}

/* ---------------- one matrix ---------------- */

/* Scratch of update_matrix. */
typedef struct {
  int64_t *pos, *fresh, *old_pos;
  int32_t *slot, *old_slot;
  float *key;
  uint8_t *state; /* [numel] MASK_* */
} elem_work;

/* drop: the n_drop active positions with the smallest |w| become DROPPED, the rest KEPT. */
static void mark_drops(const effml__spmat *m, const float *val, int64_t n_drop, elem_work *w) {
  const int64_t nnz = m->nnz;
  for (int64_t p = 0; p < nnz; ++p) w->key[p] = score_of(val[w->old_slot[p]]);
  pick_cut cut;
  cut.largest = 0;
  cut.tau = select_kth(w->key, nnz, n_drop - 1);
  int64_t lt = 0;
  for (int64_t p = 0; p < nnz; ++p) lt += score_of(val[w->old_slot[p]]) < cut.tau;
  cut.eq_left = n_drop - lt;
  for (int64_t p = 0; p < nnz; ++p)
    w->state[w->old_pos[p]] = cut_take(&cut, score_of(val[w->old_slot[p]])) ? MASK_DROPPED : MASK_KEPT;
}

/* grow: the n_drop best-scoring positions not KEPT (|dense gradient| for RigL, U(0,1)
 * for SET, in position order) win. */
static effml_status mark_grows(effml_dst *d, int32_t mi, const effml__spmat *m, int64_t n_drop,
                               elem_work *w) {
  const int64_t numel = m->rows * m->cols, ncand = numel - (m->nnz - n_drop);
  effml__rng rng;
  effml__rng_seed(&rng, d->o.seed, (uint64_t)d->updates * 1000003ULL + (uint64_t)mi);
  int64_t c = 0;
  for (int64_t q = 0; q < numel; ++q) {
    if (w->state[q] == MASK_KEPT) continue;
    w->key[c++] = d->o.method == EFFML_SPARSE_DST_SET ? (float)effml__rng_uniform(&rng)
                                                      : score_of(m->dense_grad[q]);
  }
  float *sel = (float *)effml__malloc(d->ctx, (size_t)ncand * sizeof(float));
  if (!sel) return effml__err(d->ctx, EFFML_E_NOMEM, "out of memory for a sparse mask update");
  memcpy(sel, w->key, (size_t)ncand * sizeof(float));
  pick_cut cut = cut_make(w->key, sel, ncand, n_drop, 1);
  effml__free(d->ctx, sel);
  c = 0;
  for (int64_t q = 0; q < numel; ++q) {
    if (w->state[q] == MASK_KEPT) continue;
    w->state[q] = after_grow(w->state[q], cut_take(&cut, w->key[c++]));
  }
  return EFFML_OK;
}

/* slots: KEPT positions keep theirs; FREED slots (in old position order) go to the GROWN. */
static effml_status assign_slots(effml_context *ctx, const effml__spmat *m, elem_work *w,
                                 int64_t *nfree) {
  const int64_t nnz = m->nnz, numel = m->rows * m->cols;
  *nfree = 0;
  for (int64_t p = 0; p < nnz; ++p)
    if (w->state[w->old_pos[p]] == MASK_FREED) w->fresh[(*nfree)++] = w->old_slot[p];
  int64_t k = 0, f = 0, op = 0;
  for (int64_t q = 0; q < numel; ++q) {
    if (w->state[q] == MASK_KEPT) {
      while (w->old_pos[op] < q) ++op;
      w->pos[k] = q;
      w->slot[k++] = w->old_slot[op];
    } else if (w->state[q] == MASK_GROWN) {
      w->pos[k] = q;
      w->slot[k++] = (int32_t)w->fresh[f++];
    }
  }
  if (k != nnz || f != *nfree) /* internal invariant: nnz is exact */
    return effml__err(ctx, EFFML_E_STATE, "sparse mask update lost count (%lld != %lld)",
                      (long long)k, (long long)nnz);
  return EFFML_OK;
}

/* Phases: the old active set in position order; mark_drops; mark_grows; assign_slots;
 * commit_mask. */
static effml_status update_matrix(effml_dst *d, int32_t mi, double alpha) {
  effml_context *ctx = d->ctx;
  effml__spmat *m = d->mats[mi];
  const int64_t nnz = m->nnz, cols = m->cols, numel = m->rows * m->cols;
  const int64_t n_drop = (int64_t)floor(alpha * (double)nnz);
  if (n_drop < 1) return EFFML_OK;
  effml__param *pe = effml__layer_param_entry(d->owner[mi], m->param);
  const float *val = effml__f32(pe->value);

  effml_status st = EFFML_OK;
  elem_work w;
  w.pos = (int64_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int64_t));
  w.slot = (int32_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int32_t));
  w.key = (float *)effml__malloc(ctx, (size_t)(numel > nnz ? numel : nnz) * sizeof(float));
  w.state = (uint8_t *)effml__calloc(ctx, (size_t)numel, 1);
  w.fresh = (int64_t *)effml__malloc(ctx, (size_t)n_drop * sizeof(int64_t));
  w.old_slot = (int32_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int32_t));
  w.old_pos = (int64_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int64_t));
  if (!w.pos || !w.slot || !w.key || !w.state || !w.fresh || !w.old_slot || !w.old_pos)
    st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for a sparse mask update (%lld weights)",
                    (long long)numel);
  if (st == EFFML_OK) {
    for (int64_t r = 0; r < m->rows; ++r)
      for (int64_t p = m->row_ptr[r]; p < m->row_ptr[r + 1]; ++p) {
        w.old_pos[p] = r * cols + m->col_idx[p];
        w.old_slot[p] = m->slot[p];
      }
    mark_drops(m, val, n_drop, &w);
    st = mark_grows(d, mi, m, n_drop, &w);
  }
  int64_t nfree = 0;
  if (st == EFFML_OK) st = assign_slots(ctx, m, &w, &nfree);
  if (st == EFFML_OK) st = commit_mask(d, m, pe, w.pos, w.slot, w.fresh, nfree);
  effml__free(ctx, w.pos);
  effml__free(ctx, w.slot);
  effml__free(ctx, w.key);
  effml__free(ctx, w.state);
  effml__free(ctx, w.fresh);
  effml__free(ctx, w.old_slot);
  effml__free(ctx, w.old_pos);
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

/* Scratch of update_blocked. */
typedef struct {
  int32_t *uj;    /* [units] index of the unit's column within its block-row, -1 inactive */
  uint8_t *state; /* [units] MASK_* */
  float *key, *sel;
  int64_t *pos, *fresh;
  int32_t *slot;
} block_work;

/* Drop and grow within units [u_lo, u_hi) of blocks of h rows (one pool). */
static void update_pool(effml_dst *d, const effml__spmat *m, const float *val, double alpha,
                        int64_t u_lo, int64_t u_hi, int64_t h, effml__rng *rng, block_work *w) {
  const int64_t B = m->block, cols = m->cols;
  /* drop scores of the active units, in unit order */
  int64_t nact = 0;
  for (int64_t u = u_lo; u < u_hi; ++u) {
    if (w->uj[u] < 0) continue;
    const int64_t r0 = u / cols * B;
    float s = 0.0f;
    for (int64_t k = 0; k < h; ++k) s += score_of(val[m->slot[m->row_ptr[r0 + k] + w->uj[u]]]);
    w->key[nact++] = s;
  }
  const int64_t n_drop = (int64_t)floor(alpha * (double)nact);
  if (n_drop < 1) {
    for (int64_t u = u_lo; u < u_hi; ++u)
      if (w->uj[u] >= 0) w->state[u] = MASK_KEPT;
    return;
  }
  memcpy(w->sel, w->key, (size_t)nact * sizeof(float));
  pick_cut cut = cut_make(w->key, w->sel, nact, n_drop, 0);
  int64_t i = 0;
  for (int64_t u = u_lo; u < u_hi; ++u) {
    if (w->uj[u] < 0) continue;
    w->state[u] = cut_take(&cut, w->key[i++]) ? MASK_DROPPED : MASK_KEPT;
  }
  /* grow scores of every unit not kept */
  int64_t nc = 0;
  for (int64_t u = u_lo; u < u_hi; ++u) {
    if (w->state[u] == MASK_KEPT) continue;
    float g = 0.0f;
    if (d->o.method == EFFML_SPARSE_DST_SET) {
      g = (float)effml__rng_uniform(rng);
    } else {
      const int64_t r0 = u / cols * B, c = u % cols;
      for (int64_t k = 0; k < h; ++k) g += score_of(m->dense_grad[(r0 + k) * cols + c]);
    }
    w->key[nc++] = g;
  }
  memcpy(w->sel, w->key, (size_t)nc * sizeof(float));
  cut = cut_make(w->key, w->sel, nc, n_drop, 1);
  i = 0;
  for (int64_t u = u_lo; u < u_hi; ++u) {
    if (w->state[u] == MASK_KEPT) continue;
    w->state[u] = after_grow(w->state[u], cut_take(&cut, w->key[i++]));
  }
}

/* Freed slots in old position order, then the new positions row by row: KEPT blocks
 * keep their slots, GROWN ones take freed slots. */
static effml_status assign_block_slots(effml_context *ctx, const effml__spmat *m, block_work *w,
                                       int64_t *nfree) {
  const int64_t B = m->block, rows = m->rows, cols = m->cols, nnz = m->nnz;
  int64_t k = 0, f = 0;
  *nfree = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t p = m->row_ptr[r]; p < m->row_ptr[r + 1]; ++p)
      if (w->state[r / B * cols + m->col_idx[p]] == MASK_FREED) w->fresh[(*nfree)++] = m->slot[p];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t br = r / B;
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t s = w->state[br * cols + c];
      if (s != MASK_KEPT && s != MASK_GROWN) continue;
      if (k >= nnz) break;
      w->pos[k] = r * cols + c;
      w->slot[k++] = s == MASK_KEPT ? m->slot[m->row_ptr[r] + w->uj[br * cols + c]]
                                    : (int32_t)w->fresh[f++];
    }
  }
  if (k != nnz || f != *nfree)
    return effml__err(ctx, EFFML_E_STATE, "block mask update lost count (%lld != %lld)",
                      (long long)k, (long long)nnz);
  return EFFML_OK;
}

/* Phases: the unit index of the active blocks; update_pool for the full block-rows,
 * then for the tail; assign_block_slots; commit_mask. */
static effml_status update_blocked(effml_dst *d, int32_t mi, double alpha) {
  effml_context *ctx = d->ctx;
  effml__spmat *m = d->mats[mi];
  const int64_t B = m->block, rows = m->rows, cols = m->cols, nnz = m->nnz;
  const int64_t nbr = (rows + B - 1) / B, nunits = nbr * cols, nfull = rows / B;
  effml__param *pe = effml__layer_param_entry(d->owner[mi], m->param);
  const float *val = effml__f32(pe->value);
  effml_status st = EFFML_OK;
  block_work w;
  w.uj = (int32_t *)effml__malloc(ctx, (size_t)nunits * sizeof(int32_t));
  w.state = (uint8_t *)effml__calloc(ctx, (size_t)nunits, 1);
  w.key = (float *)effml__malloc(ctx, (size_t)nunits * sizeof(float));
  w.sel = (float *)effml__malloc(ctx, (size_t)nunits * sizeof(float));
  w.pos = (int64_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int64_t));
  w.slot = (int32_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int32_t));
  w.fresh = (int64_t *)effml__malloc(ctx, (size_t)nnz * sizeof(int64_t));
  if (!w.uj || !w.state || !w.key || !w.sel || !w.pos || !w.slot || !w.fresh)
    st = effml__err(ctx, EFFML_E_NOMEM, "out of memory for a block mask update (%lld blocks)",
                    (long long)nunits);
  int64_t nfree = 0;
  if (st == EFFML_OK) {
    for (int64_t u = 0; u < nunits; ++u) w.uj[u] = -1;
    for (int64_t br = 0; br < nbr; ++br) {
      const int64_t r0 = br * B;
      for (int64_t p = m->row_ptr[r0]; p < m->row_ptr[r0 + 1]; ++p)
        w.uj[br * cols + m->col_idx[p]] = (int32_t)(p - m->row_ptr[r0]);
    }
    effml__rng rng;
    effml__rng_seed(&rng, d->o.seed, (uint64_t)d->updates * 1000003ULL + (uint64_t)mi);
    if (nfull > 0) update_pool(d, m, val, alpha, 0, nfull * cols, B, &rng, &w);
    if (nbr > nfull) update_pool(d, m, val, alpha, nfull * cols, nbr * cols, rows - nfull * B, &rng, &w);
    st = assign_block_slots(ctx, m, &w, &nfree);
  }
  if (st == EFFML_OK) st = commit_mask(d, m, pe, w.pos, w.slot, w.fresh, nfree);
  effml__free(ctx, w.uj);
  effml__free(ctx, w.state);
  effml__free(ctx, w.key);
  effml__free(ctx, w.sel);
  effml__free(ctx, w.pos);
  effml__free(ctx, w.slot);
  effml__free(ctx, w.fresh);
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
