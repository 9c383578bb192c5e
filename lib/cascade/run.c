/*
 * Running a built cascade (cascade.h, effml_cascade_run): stage by stage, the
 * samples still in flight are scored, the exit rule splits them, and those
 * that go on are compacted to the front of the workspace arrays so the next
 * stage (and its callback) sees only them.  The cascade itself is only read
 * here: everything that changes lives in the caller's workspace.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cascade_internal.h"

/* Rows per thread below which the last stage's routing-only prediction runs on one thread:
 * about 25 ns a row (K = 10, AVX-512), so 8192 rows are ~200 us, ten times the 18 us a
 * thread start and join takes at best on the 2-core test VM (35-75 us under load). */
#define EFFML__CASCADE_TAIL_GRAIN 8192

effml_status effml_cascade_workspace_create(effml_context *ctx, const effml_cascade *cascade,
                                            effml_cascade_workspace **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, cascade);
  EFFML__CHECK_NULL(ctx, out);
  effml_cascade_workspace *ws = effml__calloc_or_err(ctx, 1, sizeof *ws, "cascade workspace");
  if (!ws) return EFFML_E_NOMEM;
  ws->ctx = ctx;
  ws->cascade = cascade;
  ws->expected_cost = NAN;
  *out = ws;
  return EFFML_OK;
}

static void free_arrays(effml_cascade_workspace *ws) {
  effml_context *c = ws->ctx;
  effml__free(c, ws->rows);
  effml__free(c, ws->logits);
  effml__free(c, ws->saved);
  effml__free(c, ws->acc);
  effml__free(c, ws->sacc);
  effml__free(c, ws->score_c);
  effml__free(c, ws->pred_c);
  effml__free(c, ws->out_score);
  effml__free(c, ws->out_pred);
  effml__free(c, ws->out_stage);
  ws->rows = NULL;
  ws->logits = ws->saved = NULL;
  ws->acc = ws->sacc = ws->score_c = ws->out_score = NULL;
  ws->pred_c = ws->out_pred = ws->out_stage = NULL;
  ws->cap_n = 0;
}

void effml_cascade_workspace_free(effml_cascade_workspace *ws) {
  if (!ws) return;
  free_arrays(ws);
  effml__free(ws->ctx, ws->out_probs);
  effml__free(ws->ctx, ws->reach);
  effml__free(ws->ctx, ws->exits);
  effml__free(ws->ctx, ws);
}

/* Grow the arrays to hold n samples (contents are not kept). */
static effml_status reserve(effml_context *ctx, effml_cascade_workspace *ws, int64_t n, int64_t K,
                            int need_logits, int need_probs, int32_t M) {
  size_t nk;
  if (!effml__mul_size((size_t)n, (size_t)K, &nk) || nk > SIZE_MAX / sizeof(double))
    return effml__err(ctx, EFFML_E_OVERFLOW, "n=%lld x num_classes=%lld overflows", (long long)n,
                      (long long)K);
  effml_context *a = ws->ctx;
  if (n > ws->cap_n || (need_logits && !ws->logits)) {
    free_arrays(ws);
    ws->rows = effml__malloc(a, (size_t)n * sizeof(int64_t));
    ws->acc = effml__malloc(a, nk * sizeof(double));
    ws->sacc = effml__malloc(a, (size_t)n * sizeof(double));
    ws->score_c = effml__malloc(a, (size_t)n * sizeof(double));
    ws->pred_c = effml__malloc(a, (size_t)n * sizeof(int32_t));
    ws->out_score = effml__malloc(a, (size_t)n * sizeof(double));
    ws->out_pred = effml__malloc(a, (size_t)n * sizeof(int32_t));
    ws->out_stage = effml__malloc(a, (size_t)n * sizeof(int32_t));
    if (need_logits) {
      ws->logits = effml__malloc(a, nk * sizeof(float));
      ws->saved = effml__malloc(a, nk * sizeof(float));
    }
    if (!ws->rows || !ws->acc || !ws->sacc || !ws->score_c || !ws->pred_c || !ws->out_score ||
        !ws->out_pred || !ws->out_stage || (need_logits && (!ws->logits || !ws->saved))) {
      free_arrays(ws);
      return effml__err(ctx, EFFML_E_NOMEM, "cascade workspace: out of memory for n=%lld",
                        (long long)n);
    }
    ws->cap_n = n;
  }
  if (need_probs && n > ws->cap_probs) {
    effml__free(a, ws->out_probs);
    ws->cap_probs = 0;
    ws->out_probs = effml__malloc(a, nk * sizeof(double));
    if (!ws->out_probs)
      return effml__err(ctx, EFFML_E_NOMEM, "cascade workspace: out of memory for probs");
    ws->cap_probs = n;
  }
  if (M != ws->num_stages || !ws->reach) {
    effml__free(a, ws->reach);
    effml__free(a, ws->exits);
    ws->num_stages = 0;
    ws->reach = effml__calloc(a, (size_t)M, sizeof(int64_t));
    ws->exits = effml__calloc(a, (size_t)M, sizeof(int64_t));
    if (!ws->reach || !ws->exits) {
      effml__free(a, ws->reach);
      effml__free(a, ws->exits);
      ws->reach = ws->exits = NULL;
      return effml__err(ctx, EFFML_E_NOMEM, "cascade workspace: out of memory");
    }
    ws->num_stages = M;
  }
  return EFFML_OK;
}

/* Ask a callback stage for the logits of the rows in flight. */
static effml_status call_stage(effml_context *ctx, const effml__cascade_stage *s, int32_t m,
                               effml_cascade_workspace *ws, int64_t n_act, int64_t K,
                               void *run_data) {
  int64_t shape[2] = {n_act, K};
  effml_tensor *t = NULL;
  EFFML__TRY(effml_tensor_wrap(ctx, EFFML_F32, 2, shape, NULL, ws->logits,
                               (size_t)n_act * (size_t)K * sizeof(float), 0, &t));
  effml_context_clear_error(ctx);
  effml_status st = s->fn(ctx, s->stage_data, run_data, m, ws->rows, n_act, t);
  effml_tensor_free(t);
  if (st != EFFML_OK && effml_context_last_status(ctx) != st)
    effml__err(ctx, st, "stage %d callback failed: %s", (int)m, effml_status_str(st));
  return st;
}

/* Arguments of effml_cascade_run: the sample count against the precomputed stages, the
 * outputs' dtypes and shapes; then the workspace grown and its counters zeroed. */
static effml_status prepare_run(effml_context *ctx, const effml_cascade *c,
                                effml_cascade_workspace *ws, int64_t n, const effml_tensor *pred,
                                const effml_tensor *score, const effml_tensor *exit_stage,
                                const effml_tensor *probs) {
  const int32_t M = c->num_stages;
  const int64_t K = c->num_classes;
  if (M < 1) return effml__err(ctx, EFFML_E_STATE, "the cascade has no stage");
  if (n < 1) return effml__err(ctx, EFFML_E_INVALID_ARG, "n=%lld must be >= 1", (long long)n);
  if (c->logits_rows && n != c->logits_rows)
    return effml__err(ctx, EFFML_E_SHAPE,
                      "n=%lld but the precomputed logits stages have %lld rows", (long long)n,
                      (long long)c->logits_rows);
  EFFML__TRY(effml__check_out(ctx, pred, "pred", EFFML_I32, EFFML_I64, 1, n, 0));
  EFFML__TRY(effml__check_out(ctx, score, "score", EFFML_F32, EFFML_F64, 1, n, 0));
  EFFML__TRY(effml__check_out(ctx, exit_stage, "exit_stage", EFFML_I32, EFFML_I64, 1, n, 0));
  EFFML__TRY(effml__check_out(ctx, probs, "probs", EFFML_F32, EFFML_F64, 2, n, K));
  int need_logits = 0;
  for (int32_t m = 0; m < M; ++m) need_logits |= c->stages[m].fn != NULL;
  EFFML__TRY(reserve(ctx, ws, n, K, need_logits, probs != NULL, M));
  memset(ws->reach, 0, (size_t)M * sizeof(int64_t));
  memset(ws->exits, 0, (size_t)M * sizeof(int64_t));
  return EFFML_OK;
}

/* The routing-only exit of a routed stage, fused with its scoring: each thread scores a
 * run of rows (effml__stage_rows, 512 at a time, so the scores are read back from L1),
 * writes the outputs of the rows that exit and compacts those going on to the front of its
 * own range of ws->rows; the ranges are then joined in order.  ws->n_fused receives the
 * count going on. */
typedef struct {
  const effml__stage_block *b;
  effml_cascade_workspace *ws;
  int32_t m;
  int32_t identity; /* stage 0 of precomputed logits: row j is sample j, ws->rows unset */
  effml__route_cuts cuts;
  int64_t begin[64], kept[64], bad[64];
} route_job;

static void route_job_fn(void *arg, int64_t begin, int64_t end, int32_t worker) {
  route_job *job = (route_job *)arg;
  effml_cascade_workspace *ws = job->ws;
  const effml__stage_block *b = job->b;
  /* the scores of a run of rows stay on the stack: b2 is b shifted to the run's first row */
  double sc[512];
  int32_t pr[512];
  effml__stage_block b2 = *b;
  b2.score = sc;
  b2.pred = pr;
  int64_t w = begin;
  job->begin[worker] = begin;
  for (int64_t j0 = begin; j0 < end; j0 += 512) {
    const int64_t j1 = end - j0 < 512 ? end : j0 + 512;
    if (b->row_index)
      b2.row_index = b->row_index + j0;
    else
      b2.base = (const char *)b->base + (size_t)(j0 * b->rs) * (b->is_f64 ? sizeof(double) : sizeof(float));
    if (b->name_index) b2.name_index = b->name_index + j0;
    const int64_t bad = effml__stage_rows(&b2, 0, j1 - j0);
    if (bad >= 0) {
      job->bad[worker] = j0 * b->K + bad;
      job->kept[worker] = 0;
      return;
    }
    if (job->identity) { /* row j is sample j (vectorised where the ISA allows) */
      w = effml__route_exit_identity(b, &job->cuts, sc, pr, j0, j1, job->m, ws->out_pred,
                                     ws->out_stage, ws->rows, w);
      continue;
    }
    for (int64_t j = j0; j < j1; ++j) {
      int ex = effml__route_decide(&job->cuts, sc[j - j0]);
      const int64_t r = ws->rows[j];
      if (ex < 0) /* near a bound: the exact MSP decides (logits row r, or j: compact) */
        ex = effml__route_exit_exact(&job->cuts, effml__route_exact_msp(b, b->row_index ? r : j));
      /* written whatever the exit, without branches: a row that goes on gets both outputs
       * again at the stage where it exits (every row exits at some stage, the last at
       * the latest, and stages run in order) */
      ws->out_pred[r] = pr[j - j0];
      ws->out_stage[r] = job->m;
      ws->rows[w] = r; /* w <= j: rows not read yet are never overwritten */
      w += !ex;
    }
  }
  job->kept[worker] = w - begin;
}

static effml_status route_exits(effml_context *ctx, const effml_cascade *c,
                                effml_cascade_workspace *ws, int32_t m, int64_t n_act,
                                effml__stage_block *b, const effml_tensor *logits,
                                const char *name) {
  const effml__cascade_stage *s = &c->stages[m];
  effml__stage_prepare(ctx, b, logits);
  route_job job;
  job.b = b;
  job.ws = ws;
  job.m = m;
  job.identity = m == 0 && !s->fn;
  if (job.identity) b->row_index = NULL;
  effml__route_cuts_init(&job.cuts, s->rule, s->a, s->b, c->num_classes);
  for (int i = 0; i < 64; ++i) {
    job.kept[i] = -1;
    job.bad[i] = -1;
  }
  EFFML__TRY(effml__parallel_for(ctx, n_act, EFFML__CASCADE_ROUTE_GRAIN, route_job_fn, &job));
  int64_t bad = -1;
  for (int i = 0; i < 64; ++i)
    if (job.bad[i] >= 0 && (bad < 0 || job.bad[i] < bad)) bad = job.bad[i];
  if (bad >= 0) return effml__stage_bad(ctx, b, bad, name);
  int64_t w = 0;
  for (int i = 0; i < 64; ++i)
    if (job.kept[i] >= 0) {
      if (job.begin[i] != w)
        memmove(ws->rows + w, ws->rows + job.begin[i], (size_t)job.kept[i] * sizeof(int64_t));
      w += job.kept[i];
    }
  ws->n_fused = w;
  return EFFML_OK;
}

/* Score the n_act samples in flight at stage m into ws->score_c / ws->pred_c (and the
 * running sums ws->acc / ws->sacc); *b is left describing the stage's logits. */
static effml_status score_stage(effml_context *ctx, const effml_cascade *c,
                                effml_cascade_workspace *ws, int32_t m, int64_t n_act,
                                int route, int fused, void *run_data, effml__stage_block *b) {
  const effml__cascade_stage *s = &c->stages[m];
  const int64_t K = c->num_classes;
  memset(b, 0, sizeof *b);
  b->K = K;
  b->score_kind = c->score;
  b->aggregation = c->aggregation;
  b->temperature = c->temperature;
  b->m = m + 1;
  b->cal = s->cal;
  b->acc = ws->acc;
  b->sacc = ws->sacc;
  b->score = ws->score_c;
  b->pred = ws->pred_c;
  b->route = route;
  char name[48];
  if (s->fn) {
    EFFML__TRY(call_stage(ctx, s, m, ws, n_act, K, run_data));
    b->base = ws->logits;
    b->rs = K;
    b->cs = 1;
    snprintf(name, sizeof name, "stage %d callback", (int)m);
    /* the buffer is compact: row j is sample rows[j] (used in messages) */
    b->row_index = NULL;
    b->name_index = ws->rows;
    if (fused) return route_exits(ctx, c, ws, m, n_act, b, NULL, name);
    return effml__stage_tensor(ctx, b, NULL, n_act, name);
  }
  b->row_index = ws->rows;
  snprintf(name, sizeof name, "stage %d precomputed logits", (int)m);
  if (fused) return route_exits(ctx, c, ws, m, n_act, b, s->logits, name);
  return effml__stage_tensor(ctx, b, s->logits, n_act, name);
}

/* Exit rule of a routing stage on the routing score (certified cuts, effml__route_cuts; the
 * exact MSP for a row the cuts leave undecided); the exact softmax only where it is
 * needed (exiting samples' score when `want_score`; survivors' probabilities for a mean
 * aggregation, unless `defer`: the last stage's prediction is then left to
 * effml__tail_rows, which reads this stage's logits itself; a callback's rows are kept in
 * ws->saved for it).  Survivors are compacted to the front; returns their count. */
static int64_t exit_routed(const effml_cascade *c, effml_cascade_workspace *ws, int32_t m,
                           int64_t n_act, const effml__stage_block *b, int want_score,
                           int defer) {
  const effml__cascade_stage *s = &c->stages[m];
  const int64_t K = c->num_classes;
  const int keep_probs = c->aggregation == EFFML_CASCADE_AGG_MEAN && !defer;
  const int save = defer && c->aggregation == EFFML_CASCADE_AGG_MEAN && s->fn;
  double zb[256];
  effml__route_cuts cuts;
  effml__route_cuts_init(&cuts, s->rule, s->a, s->b, K);
  int64_t w = 0;
  for (int64_t j = 0; j < n_act; ++j) {
    int ex = effml__route_decide(&cuts, ws->score_c[j]);
    const int64_t r = ws->rows[j];
    /* the logits row: compact callback buffer row j, or precomputed row r */
    const int64_t lr = s->fn ? j : r;
    if (ex < 0) ex = effml__route_exit_exact(&cuts, effml__route_exact_msp(b, lr));
    if (ex) {
      ws->out_pred[r] = ws->pred_c[j];
      ws->out_stage[r] = m;
      if (want_score) {
        effml__load_row(b, lr, zb);
        ws->out_score[r] = effml__softmax_row(zb, K, ws->acc + w * K); /* scratch row w */
      }
    } else {
      ws->rows[w] = r;
      if (keep_probs) {
        effml__load_row(b, lr, zb);
        (void)effml__softmax_row(zb, K, ws->acc + w * K);
      } else if (save) {
        memcpy(ws->saved + w * K, ws->logits + j * K, (size_t)K * sizeof(float));
      }
      ++w;
    }
  }
  return w;
}

/* Exit rule of stage m on the stage score (every sample exits at the last stage), then
 * compact the survivors (order kept: rows stay increasing); returns their count. */
static int64_t exit_scored(const effml_cascade *c, effml_cascade_workspace *ws, int32_t m,
                           int64_t n_act, int want_probs) {
  const effml__cascade_stage *s = &c->stages[m];
  const int64_t K = c->num_classes;
  const int last = m == c->num_stages - 1;
  const double inv = c->aggregation == EFFML_CASCADE_AGG_MEAN ? 1.0 / (double)(m + 1) : 1.0;
  int64_t w = 0;
  for (int64_t j = 0; j < n_act; ++j) {
    const double sc = ws->score_c[j];
    int ex = last;
    if (!last) {
      if (s->rule == EFFML_CASCADE_EXIT_THRESHOLD)
        ex = sc >= s->a;
      else if (s->rule == EFFML_CASCADE_EXIT_WINDOW)
        ex = sc < s->a || sc > s->b;
    }
    const int64_t r = ws->rows[j];
    if (ex) {
      ws->out_score[r] = sc;
      ws->out_pred[r] = ws->pred_c[j];
      ws->out_stage[r] = m;
      if (want_probs)
        for (int64_t k = 0; k < K; ++k) ws->out_probs[r * K + k] = ws->acc[j * K + k] * inv;
    } else {
      if (w != j) {
        ws->rows[w] = r;
        memmove(ws->acc + w * K, ws->acc + j * K, (size_t)K * sizeof(double));
        ws->sacc[w] = ws->sacc[j];
      }
      ++w;
    }
  }
  return w;
}

/* 1 if stage m decides its exits on the routing score in this run: a threshold or window
 * rule, however it was set (the certified cuts give the exact path's exits for any bounds),
 * on a stage that can route (effml__cascade_routes), unless probs are asked for. */
static int stage_routes(const effml_cascade *c, int32_t m, const effml_tensor *probs) {
  const effml__cascade_stage *s = &c->stages[m];
  return !probs && effml__cascade_routes(c, m) &&
         (s->rule == EFFML_CASCADE_EXIT_THRESHOLD || s->rule == EFFML_CASCADE_EXIT_WINDOW);
}

/* 1 if the member's logits suit effml__tail_rows: a callback (f32, compact) or
 * precomputed f32 logits with contiguous classes; no probability calibration. */
static int tail_member_ok(const effml__cascade_stage *s) {
  if (s->cal) return 0;
  return s->fn || (s->logits->dtype == EFFML_F32 && s->logits->strides[1] == 1);
}

/* Members of the last stage's prediction when effml__tail_rows can give it (0: the exact
 * stage kernel runs).  Only pred and exit_stage asked for; K <= 256; LAST aggregation: the
 * last stage alone; MEAN: one stage, or two whose first routes (its probabilities are then
 * never needed in f64). */
static int32_t tail_members(const effml_cascade *c, const effml_tensor *score,
                            const effml_tensor *probs) {
  const int32_t M = c->num_stages;
  if (score || probs || c->num_classes > 256) return 0;
  if (!tail_member_ok(&c->stages[M - 1])) return 0;
  if (c->aggregation == EFFML_CASCADE_AGG_LAST || M == 1) return 1;
  if (M == 2 && stage_routes(c, 0, probs) && tail_member_ok(&c->stages[0])) return 2;
  return 0;
}

typedef struct {
  const effml__tail_block *t;
  int64_t bad[64], fallbacks[64];
} tail_job;

static void tail_job_fn(void *arg, int64_t begin, int64_t end, int32_t worker) {
  tail_job *job = (tail_job *)arg;
  job->bad[worker] = effml__tail_rows(job->t, begin, end, &job->fallbacks[worker]);
}

/* The last stage m on the routing-only path: its prediction by effml__tail_rows into
 * ws->pred_c (members: tail_members). */
static effml_status tail_stage(effml_context *ctx, const effml_cascade *c,
                               effml_cascade_workspace *ws, int32_t m, int64_t n_act,
                               int32_t members, void *run_data) {
  const int64_t K = c->num_classes;
  effml__tail_block t;
  memset(&t, 0, sizeof t);
  t.K = K;
  t.members = members;
  t.pred = ws->pred_c;
  t.isa = effml__ctx_isa(ctx);
  for (int32_t i = 0; i < members; ++i) {
    const int32_t sm = m - members + 1 + i; /* the stage of member i */
    const effml__cascade_stage *s = &c->stages[sm];
    if (s->fn && sm == m) {
      EFFML__TRY(call_stage(ctx, s, m, ws, n_act, K, run_data));
      t.base[i] = ws->logits; /* compact: row j is the j-th sample in flight */
      t.rs[i] = K;
    } else if (s->fn) {
      t.base[i] = ws->saved; /* kept by exit_routed, compact */
      t.rs[i] = K;
    } else {
      t.base[i] = (const float *)s->logits->data;
      t.rs[i] = s->logits->strides[0];
      t.row_index[i] = ws->rows;
    }
  }
  tail_job job;
  job.t = &t;
  for (int i = 0; i < 64; ++i) {
    job.bad[i] = -1;
    job.fallbacks[i] = 0;
  }
  EFFML__TRY(effml__parallel_for(ctx, n_act, EFFML__CASCADE_TAIL_GRAIN, tail_job_fn, &job));
  int64_t bad = -1;
  for (int i = 0; i < 64; ++i)
    if (job.bad[i] >= 0 && (bad < 0 || job.bad[i] < bad)) bad = job.bad[i];
  if (bad >= 0) {
    const int64_t j = bad / K, k = bad % K;
    const float z = t.base[members - 1][(t.row_index[members - 1] ? ws->rows[j] : j) * t.rs[members - 1] + k];
    return effml__err(ctx, EFFML_E_NUMERIC, "stage %d %s: logit of sample %lld, class %lld is %s",
                      (int)m, c->stages[m].fn ? "callback" : "precomputed logits",
                      (long long)ws->rows[j], (long long)k, isnan(z) ? "NaN" : "infinite");
  }
  return EFFML_OK;
}

/* Phases: arguments and workspace (prepare_run); per stage, score the samples in flight
 * (score_stage) and apply the exit rule (exit_routed / exit_scored); the outputs. */
effml_status effml_cascade_run(effml_context *ctx, const effml_cascade *cascade,
                               effml_cascade_workspace *ws, int64_t n, void *run_data,
                               effml_tensor *pred, effml_tensor *score, effml_tensor *exit_stage,
                               effml_tensor *probs) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, cascade);
  EFFML__CHECK_NULL(ctx, ws);
  if (ws->cascade != cascade)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "ws was created for another cascade");
  ws->n = 0;
  ws->expected_cost = NAN;
  const effml_cascade *c = cascade;
  EFFML__TRY(prepare_run(ctx, c, ws, n, pred, score, exit_stage, probs));
  const int32_t M = c->num_stages;
  const int64_t K = c->num_classes;

  int64_t n_act = n;
  effml_status st = EFFML_OK;
  /* Routing-only runs (pred, exit_stage): the last stage's prediction comes from
   * effml__tail_rows, certified equal to the exact one, without an f64 softmax. */
  const int32_t tail = tail_members(c, score, probs);
  for (int32_t m = 0; m < M && n_act > 0; ++m) {
    st = effml__progress(ctx, m, M, "stages");
    if (st != EFFML_OK) goto fail;
    ws->reach[m] = n_act;
    const int route = stage_routes(c, m, probs);
    const int defer = tail && m == M - 2;
    /* routing only, nothing to keep for the samples going on: scoring and exit fused */
    const int fused = route && !score && (c->aggregation == EFFML_CASCADE_AGG_LAST ||
                                          (defer && !c->stages[m].fn));
    /* the samples in flight; a fused stage 0 of precomputed logits needs no list */
    if (m == 0 && !(fused && !c->stages[0].fn))
      for (int64_t i = 0; i < n; ++i) ws->rows[i] = i;
    if (tail && m == M - 1) {
      st = tail_stage(ctx, c, ws, m, n_act, tail, run_data);
      if (st != EFFML_OK) goto fail;
      for (int64_t j = 0; j < n_act; ++j) {
        const int64_t r = ws->rows[j];
        ws->out_pred[r] = ws->pred_c[j];
        ws->out_stage[r] = m;
      }
      ws->exits[m] = n_act;
      n_act = 0;
      break;
    }
    /* Routing path: a stage whose rule was selected on the routing score decides on that
     * score (f32, no softmax in f64); the exact softmax is then computed only where it is
     * needed: the exact score of the samples that exit here (when `score` is asked for)
     * and the probabilities the next stage averages (survivors, mean aggregation, unless
     * the next stage is the last and effml__tail_rows gives its prediction). */
    effml__stage_block b;
    st = score_stage(ctx, c, ws, m, n_act, route, fused, run_data, &b);
    if (st != EFFML_OK) goto fail;
    const int64_t w = fused   ? ws->n_fused
                      : route ? exit_routed(c, ws, m, n_act, &b, score != NULL, defer)
                              : exit_scored(c, ws, m, n_act, probs != NULL);
    ws->exits[m] = n_act - w;
    n_act = w;
  }

  if (pred) effml__write_i32_out(pred, ws->out_pred, n);
  if (score) effml__write_f64_out(score, ws->out_score, n);
  if (exit_stage) effml__write_i32_out(exit_stage, ws->out_stage, n);
  if (probs) effml__write_f64_out(probs, ws->out_probs, n * K);
  double cost = 0.0;
  for (int32_t m = 0; m < M; ++m) cost += (double)ws->reach[m] / (double)n * c->stages[m].cost;
  ws->n = n;
  ws->expected_cost = cost;
  return EFFML_OK;
fail:
  memset(ws->reach, 0, (size_t)M * sizeof(int64_t));
  memset(ws->exits, 0, (size_t)M * sizeof(int64_t));
  return st;
}

int64_t effml_cascade_workspace_num_samples(const effml_cascade_workspace *ws) {
  return ws ? ws->n : 0;
}

int64_t effml_cascade_workspace_reach_count(const effml_cascade_workspace *ws, int32_t stage) {
  if (!ws || !ws->n || stage < 0 || stage >= ws->num_stages) return 0;
  return ws->reach[stage];
}

int64_t effml_cascade_workspace_exit_count(const effml_cascade_workspace *ws, int32_t stage) {
  if (!ws || !ws->n || stage < 0 || stage >= ws->num_stages) return 0;
  return ws->exits[stage];
}

double effml_cascade_workspace_exit_fraction(const effml_cascade_workspace *ws, int32_t stage) {
  if (!ws || !ws->n) return NAN;
  if (stage < 0 || stage >= ws->num_stages) return 0.0;
  return (double)ws->exits[stage] / (double)ws->n;
}

double effml_cascade_workspace_expected_cost(const effml_cascade_workspace *ws) {
  return ws ? ws->expected_cost : NAN;
}
