/* Early-exit cascades against the numpy reference
 * tests/ref/cascade_ref.py -> tests/ref/cascade_ref.txt: scores, calibrated
 * thresholds and windows, exit stages, costs and every metric; plus the
 * properties of the window (width 0, covering everything), the single
 * threshold's exit count, and the rows a callback sees. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- the reference file: lines "name count v0 v1 ..." ---- */

typedef struct {
  char name[48];
  int64_t n;
  double *v;
} ref_array;

static ref_array refs[128];
static int n_refs;

static void load_refs(void) {
  if (n_refs) return;
  FILE *f = fopen(EFFML_TEST_REF "/cascade_ref.txt", "r");
  ck_assert_msg(f != NULL, "missing " EFFML_TEST_REF "/cascade_ref.txt");
  char name[48];
  long long n;
  while (fscanf(f, "%47s %lld", name, &n) == 2) {
    ck_assert_int_lt(n_refs, 128);
    ref_array *r = &refs[n_refs++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->n = n;
    r->v = malloc((size_t)n * sizeof(double));
    for (long long i = 0; i < n; ++i) {
      char tok[64];
      ck_assert_int_eq(fscanf(f, "%63s", tok), 1);
      r->v[i] = strtod(tok, NULL); /* parses inf/-inf too */
    }
  }
  fclose(f);
}

static const ref_array *ref(const char *name) {
  load_refs();
  for (int i = 0; i < n_refs; ++i)
    if (strcmp(refs[i].name, name) == 0) return &refs[i];
  ck_abort_msg("reference %s not found", name);
  return NULL;
}

enum { K = 5, M = 3, N_VAL = 240, N_TEST = 300, N_OOD = 100 };
static const double COSTS[M] = {1.0e6, 2.5e6, 4.0e6};

static effml_tensor *logits_tensor(effml_context *ctx, const char *name, int64_t rows) {
  const ref_array *r = ref(name);
  ck_assert_int_eq(r->n, rows * K);
  float *tmp = malloc((size_t)r->n * sizeof(float));
  for (int64_t i = 0; i < r->n; ++i) tmp[i] = (float)r->v[i];
  effml_tensor *t = tu_f32(ctx, rows, K, tmp);
  free(tmp);
  return t;
}

static effml_tensor *vec(effml_context *ctx, int32_t dtype, int64_t n) {
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, dtype, 1, &n, &t), EFFML_OK);
  return t;
}

static effml_tensor *labels_tensor(effml_context *ctx, const char *name, int64_t n) {
  const ref_array *r = ref(name);
  ck_assert_int_eq(r->n, n);
  effml_tensor *t = vec(ctx, EFFML_I32, n);
  int32_t *p = effml_tensor_data(t);
  for (int64_t i = 0; i < n; ++i) p[i] = (int32_t)r->v[i];
  return t;
}

static void assert_close(double got, double want, double tol, const char *what, int64_t i) {
  if (isinf(want)) {
    ck_assert_msg(got == want, "%s[%lld]: got %.17g want %.17g", what, (long long)i, got, want);
    return;
  }
  ck_assert_msg(fabs(got - want) <= tol * (1.0 + fabs(want)), "%s[%lld]: got %.17g want %.17g",
                what, (long long)i, got, want);
}

/* Fixture: val/test logits of the three members. */
static effml_context *ctx;
static effml_tensor *val[M], *test[M], *y_val, *y_test;

static void setup(void) {
  ctx = tu_ctx(1);
  char name[32];
  for (int m = 0; m < M; ++m) {
    snprintf(name, sizeof name, "val_logits%d", m);
    val[m] = logits_tensor(ctx, name, N_VAL);
    snprintf(name, sizeof name, "test_logits%d", m);
    test[m] = logits_tensor(ctx, name, N_TEST);
  }
  y_val = labels_tensor(ctx, "val_labels", N_VAL);
  y_test = labels_tensor(ctx, "test_labels", N_TEST);
}

static void teardown(void) {
  for (int m = 0; m < M; ++m) {
    effml_tensor_free(val[m]);
    effml_tensor_free(test[m]);
  }
  effml_tensor_free(y_val);
  effml_tensor_free(y_test);
  effml_context_free(ctx);
}

/* ---- scores ---- */

static void check_scores(int32_t kind, int32_t agg, double T, const char *score_ref,
                         const char *pred_ref) {
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  opt.score = kind;
  opt.aggregation = agg;
  opt.temperature = T;
  const ref_array *rs = ref(score_ref), *rp = pred_ref ? ref(pred_ref) : NULL;
  ck_assert_int_eq(rs->n, M * N_TEST);
  effml_tensor *score = vec(ctx, EFFML_F64, N_TEST), *pred = vec(ctx, EFFML_I64, N_TEST);
  for (int m = 0; m < M; ++m) {
    ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &opt, m + 1, (const effml_tensor *const *)test,
                                            pred, score, NULL),
                     EFFML_OK);
    const double *s = effml_tensor_data(score);
    const int64_t *p = effml_tensor_data(pred);
    for (int64_t i = 0; i < N_TEST; ++i) {
      assert_close(s[i], rs->v[m * N_TEST + i], 1e-12, score_ref, m * N_TEST + i);
      if (rp) ck_assert_int_eq(p[i], (int64_t)rp->v[m * N_TEST + i]);
    }
  }
  effml_tensor_free(score);
  effml_tensor_free(pred);
}

START_TEST(test_scores_match_numpy) {
  static const struct {
    int32_t kind;
    const char *name;
  } kinds[] = {{EFFML_CASCADE_SCORE_MSP, "msp"},       {EFFML_CASCADE_SCORE_ENTROPY, "entropy"},
               {EFFML_CASCADE_SCORE_MAX_LOGIT, "max_logit"}, {EFFML_CASCADE_SCORE_ENERGY, "energy"},
               {EFFML_CASCADE_SCORE_MARGIN, "margin"}, {EFFML_CASCADE_SCORE_DOCTOR, "doctor"}};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; ++i) {
    char s[48], p[48];
    snprintf(s, sizeof s, "score_%s", kinds[i].name);
    snprintf(p, sizeof p, "pred_%s", kinds[i].name);
    check_scores(kinds[i].kind, EFFML_CASCADE_AGG_MEAN, 1.0, s, p);
  }
  check_scores(EFFML_CASCADE_SCORE_ENERGY, EFFML_CASCADE_AGG_MEAN, 2.5, "score_energy_t2.5", NULL);
  check_scores(EFFML_CASCADE_SCORE_ENTROPY, EFFML_CASCADE_AGG_LAST, 1.0, "score_entropy_last", NULL);
}
END_TEST

/* ---- calibration and runs ---- */

typedef struct {
  const char *name;
  int32_t kind, rule, target;
  double value;
  int32_t aggregation; /* 0: mean */
} cal_case;

static const cal_case CASES[] = {
    {"win_cov", EFFML_CASCADE_SCORE_MSP, EFFML_CASCADE_EXIT_WINDOW, EFFML_CASCADE_TARGET_COVERAGE, 0.8},
    {"win_risk", EFFML_CASCADE_SCORE_MSP, EFFML_CASCADE_EXIT_WINDOW, EFFML_CASCADE_TARGET_RISK, 0.1},
    {"thr_cov", EFFML_CASCADE_SCORE_MSP, EFFML_CASCADE_EXIT_THRESHOLD, EFFML_CASCADE_TARGET_COVERAGE,
     0.7},
    {"win_tpr_energy", EFFML_CASCADE_SCORE_ENERGY, EFFML_CASCADE_EXIT_WINDOW, EFFML_CASCADE_TARGET_TPR,
     0.95},
    {"win_risk_entropy_last", EFFML_CASCADE_SCORE_ENTROPY, EFFML_CASCADE_EXIT_WINDOW,
     EFFML_CASCADE_TARGET_RISK, 0.15, EFFML_CASCADE_AGG_LAST},
};

/* Callback stage: copies the rows of a precomputed f32 tensor and records what it saw. */
typedef struct {
  const effml_tensor *logits;
  int64_t seen_count;
  unsigned char seen[N_TEST];
  int64_t last_row; /* rows must be increasing */
} cb_stage;

static effml_status copy_rows(effml_context *c, void *stage_data, void *run_data, int32_t stage,
                              const int64_t *rows, int64_t n_rows, effml_tensor *out) {
  cb_stage *s = stage_data;
  ck_assert_ptr_eq(run_data, (void *)&CASES[0]);
  ck_assert_int_eq(effml_tensor_dim(out, 0), n_rows);
  ck_assert_int_eq(effml_tensor_dim(out, 1), K);
  const float *src = effml_tensor_data_const(s->logits);
  float *dst = effml_tensor_data(out);
  s->last_row = -1;
  for (int64_t i = 0; i < n_rows; ++i) {
    ck_assert_int_gt(rows[i], s->last_row);
    s->last_row = rows[i];
    s->seen[rows[i]] = 1;
    memcpy(dst + i * K, src + rows[i] * K, K * sizeof(float));
  }
  s->seen_count += n_rows;
  return EFFML_OK;
}

static effml_cascade *make_cascade_agg(int32_t kind, int32_t agg, int use_callbacks,
                                       cb_stage *cbs, effml_tensor *const *logits) {
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  opt.score = kind;
  if (agg) opt.aggregation = agg;
  effml_cascade *c = NULL;
  ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
  for (int m = 0; m < M; ++m) {
    if (use_callbacks) {
      memset(&cbs[m], 0, sizeof cbs[m]);
      cbs[m].logits = logits[m];
      ck_assert_int_eq(effml_cascade_add_stage_fn(ctx, c, copy_rows, &cbs[m], COSTS[m]),
                       EFFML_OK);
    } else {
      ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, logits[m], COSTS[m]), EFFML_OK);
    }
  }
  ck_assert_int_eq(effml_cascade_num_stages(c), M);
  return c;
}

static effml_cascade *make_cascade(int32_t kind, int use_callbacks, cb_stage *cbs,
                                   effml_tensor *const *logits) {
  return make_cascade_agg(kind, 0, use_callbacks, cbs, logits);
}

START_TEST(test_calibrate_and_run_match_numpy) {
  for (size_t ci = 0; ci < sizeof CASES / sizeof CASES[0]; ++ci) {
    const cal_case *cc = &CASES[ci];
    for (int use_cb = 0; use_cb < 2; ++use_cb) {
      static cb_stage cbs[M];
      effml_cascade *c = make_cascade_agg(cc->kind, cc->aggregation, use_cb, cbs, test);
      effml_cascade_threshold_options cal;
      effml_cascade_threshold_options_init(&cal);
      cal.rule = cc->rule;
      cal.target = cc->target;
      cal.target_value = cc->value;
      ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, use_cb ? M - 1 : M,
                                               (const effml_tensor *const *)val, y_val, &cal),
                       EFFML_OK);
      char nm[64];
      snprintf(nm, sizeof nm, "%s_rules", cc->name);
      const ref_array *rr = ref(nm);
      for (int m = 0; m < M - 1; ++m) {
        int32_t rule;
        double a, b, tau;
        ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, m, &rule, &a, &b, &tau), EFFML_OK);
        ck_assert_int_eq(rule, cc->rule);
        assert_close(a, rr->v[3 * m], 1e-12, nm, 3 * m);
        assert_close(b, rr->v[3 * m + 1], 1e-12, nm, 3 * m + 1);
        assert_close(tau, rr->v[3 * m + 2], 1e-12, nm, 3 * m + 2);
      }
      effml_cascade_workspace *ws = NULL;
      ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
      effml_tensor *score = vec(ctx, EFFML_F64, N_TEST), *pred = vec(ctx, EFFML_I32, N_TEST),
                   *stage = vec(ctx, EFFML_I64, N_TEST), *probs = NULL;
      int64_t shp[2] = {N_TEST, K};
      ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, shp, &probs), EFFML_OK);
      ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N_TEST, (void *)&CASES[0], pred, score,
                                         stage, probs),
                       EFFML_OK);
      const double *s = effml_tensor_data(score);
      const int32_t *p = effml_tensor_data(pred);
      const int64_t *st = effml_tensor_data(stage);
      snprintf(nm, sizeof nm, "%s_score", cc->name);
      const ref_array *rs = ref(nm);
      snprintf(nm, sizeof nm, "%s_pred", cc->name);
      const ref_array *rp = ref(nm);
      snprintf(nm, sizeof nm, "%s_stage", cc->name);
      const ref_array *rst = ref(nm);
      for (int64_t i = 0; i < N_TEST; ++i) {
        assert_close(s[i], rs->v[i], 1e-12, cc->name, i);
        ck_assert_int_eq(p[i], (int32_t)rp->v[i]);
        ck_assert_int_eq(st[i], (int64_t)rst->v[i]);
      }
      snprintf(nm, sizeof nm, "%s_reach", cc->name);
      const ref_array *rr2 = ref(nm);
      int64_t exited = 0;
      for (int m = 0; m < M; ++m) {
        ck_assert_int_eq(effml_cascade_workspace_reach_count(ws, m), (int64_t)rr2->v[m]);
        int64_t next = m + 1 < M ? (int64_t)rr2->v[m + 1] : 0;
        ck_assert_int_eq(effml_cascade_workspace_exit_count(ws, m), (int64_t)rr2->v[m] - next);
        exited += effml_cascade_workspace_exit_count(ws, m);
        assert_close(effml_cascade_workspace_exit_fraction(ws, m),
                     (double)((int64_t)rr2->v[m] - next) / N_TEST, 1e-15, "exit_fraction", m);
        if (use_cb) {
          /* the callback saw exactly the samples that reached its stage */
          ck_assert_int_eq(cbs[m].seen_count, (int64_t)rr2->v[m]);
          for (int64_t i = 0; i < N_TEST; ++i) ck_assert_int_eq(cbs[m].seen[i], st[i] >= m);
        }
      }
      ck_assert_int_eq(exited, N_TEST);
      ck_assert_int_eq(effml_cascade_workspace_num_samples(ws), N_TEST);
      snprintf(nm, sizeof nm, "%s_cost", cc->name);
      assert_close(effml_cascade_workspace_expected_cost(ws), ref(nm)->v[0], 1e-14, nm, 0);
      if (ci == 0) {
        const ref_array *rpb = ref("win_cov_probs");
        const double *pb = effml_tensor_data(probs);
        for (int64_t i = 0; i < N_TEST * K; ++i) assert_close(pb[i], rpb->v[i], 1e-12, "probs", i);
      }
      effml_tensor_free(score);
      effml_tensor_free(pred);
      effml_tensor_free(stage);
      effml_tensor_free(probs);
      effml_cascade_workspace_free(ws);
      effml_cascade_free(c);
    }
  }
}
END_TEST

/* ---- metrics ---- */

/* Final outputs of the reference window cascade (win_cov). */
static void win_cov_outputs(effml_tensor **score, effml_tensor **correct, effml_tensor **probs,
                            effml_tensor **pred) {
  effml_cascade *c = make_cascade(EFFML_CASCADE_SCORE_MSP, 0, NULL, test);
  effml_cascade_threshold_options cal;
  effml_cascade_threshold_options_init(&cal); /* window, coverage 0.8 */
  ck_assert_int_eq(
      effml_cascade_select_thresholds(ctx, c, M, (const effml_tensor *const *)val, NULL, &cal), EFFML_OK);
  effml_cascade_workspace *ws = NULL;
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
  *score = vec(ctx, EFFML_F32, N_TEST); /* f32 scores are accepted too */
  effml_tensor *s64 = vec(ctx, EFFML_F64, N_TEST);
  *pred = vec(ctx, EFFML_I64, N_TEST);
  int64_t shp[2] = {N_TEST, K};
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, shp, probs), EFFML_OK);
  ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N_TEST, NULL, *pred, s64, NULL, *probs), EFFML_OK);
  effml_tensor_free(*score);
  *score = s64;
  *correct = vec(ctx, EFFML_BOOL, N_TEST);
  unsigned char *ok = effml_tensor_data(*correct);
  const int64_t *p = effml_tensor_data(*pred);
  const int32_t *y = effml_tensor_data(y_test);
  for (int64_t i = 0; i < N_TEST; ++i) ok[i] = p[i] == y[i];
  effml_cascade_workspace_free(ws);
  effml_cascade_free(c);
}

/* ---- metrics: one point per distinct threshold, independent of the input order ---- */

/* Pseudo-random permutation (xorshift, Fisher-Yates) of n elements. */
static void shuffle_perm(int64_t *perm, int64_t n, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    int64_t j = (int64_t)(x % (uint64_t)(i + 1));
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

/* Every selective metric of (s[i], ok[i]); perm == NULL: identity order. */
typedef struct {
  int64_t npts;
  double cov[N_TEST + 1], risk[N_TEST + 1], thr[N_TEST + 1];
  double aurc, rac[4][3], car[4][2];
} metrics_out;
static const double RAC_C[4] = {0.25, 0.5, 0.8, 1.0}, CAR_R[4] = {0.02, 0.05, 0.1, 0.3};
static const char *RAC_NAME[4] = {"0.25", "0.5", "0.8", "1"},
                  *CAR_NAME[4] = {"0.02", "0.05", "0.1", "0.3"};

static void all_metrics(const double *s, const unsigned char *ok, int64_t n, const int64_t *perm,
                        metrics_out *o) {
  effml_tensor *ts = vec(ctx, EFFML_F64, n), *tc = vec(ctx, EFFML_U8, n);
  double *ps = effml_tensor_data(ts);
  unsigned char *pc = effml_tensor_data(tc);
  for (int64_t i = 0; i < n; ++i) {
    ps[i] = s[perm ? perm[i] : i];
    pc[i] = ok[perm ? perm[i] : i];
  }
  effml_tensor *cov = vec(ctx, EFFML_F64, n + 1), *risk = vec(ctx, EFFML_F64, n + 1),
               *thr = vec(ctx, EFFML_F64, n + 1);
  ck_assert_int_eq(effml_metrics_selective_risk_coverage_curve(ctx, ts, tc, cov, risk, thr, &o->npts),
                   EFFML_OK);
  memcpy(o->cov, effml_tensor_data(cov), (size_t)(n + 1) * sizeof(double));
  memcpy(o->risk, effml_tensor_data(risk), (size_t)(n + 1) * sizeof(double));
  memcpy(o->thr, effml_tensor_data(thr), (size_t)(n + 1) * sizeof(double));
  ck_assert_int_eq(effml_metrics_selective_aurc(ctx, ts, tc, &o->aurc), EFFML_OK);
  for (int i = 0; i < 4; ++i) {
    ck_assert_int_eq(effml_metrics_selective_risk_at_coverage(ctx, ts, tc, RAC_C[i], &o->rac[i][0],
                                                      &o->rac[i][1], &o->rac[i][2]),
                     EFFML_OK);
    ck_assert_int_eq(effml_metrics_selective_coverage_at_risk(ctx, ts, tc, CAR_R[i], &o->car[i][0],
                                                      &o->car[i][1]),
                     EFFML_OK);
  }
  /* every returned threshold selects exactly the coverage reported with it */
  for (int i = 0; i < 4; ++i) {
    int64_t sel = 0, sel2 = 0;
    for (int64_t k = 0; k < n; ++k) {
      sel += ps[k] >= o->rac[i][1];
      sel2 += ps[k] >= o->car[i][1];
    }
    ck_assert_msg((double)sel / (double)n == o->rac[i][2], "risk@%g: threshold selects %lld",
                  RAC_C[i], (long long)sel);
    ck_assert_msg((double)sel2 / (double)n == o->car[i][0], "cov@%g: threshold selects %lld",
                  CAR_R[i], (long long)sel2);
  }
  for (int64_t j = 0; j < o->npts; ++j) {
    int64_t sel = 0;
    for (int64_t k = 0; k < n; ++k) sel += ps[k] >= o->thr[j];
    ck_assert_msg((double)sel / (double)n == o->cov[j], "curve point %lld", (long long)j);
  }
  effml_tensor *all[] = {ts, tc, cov, risk, thr};
  for (int i = 0; i < 5; ++i) effml_tensor_free(all[i]);
}

/* Compare with the numpy reference `prefix`_*, then shuffle the pairs and demand
 * bit-identical results. */
static void check_metrics_ref(const char *prefix, const double *s, const unsigned char *ok,
                              int64_t n, double thr_tol) {
  static metrics_out o, p;
  all_metrics(s, ok, n, NULL, &o);
  char name[64];
  snprintf(name, sizeof name, "%s_coverage", prefix);
  const ref_array *rc = ref(name);
  snprintf(name, sizeof name, "%s_risk", prefix);
  const ref_array *rr = ref(name);
  snprintf(name, sizeof name, "%s_thr", prefix);
  const ref_array *rt = ref(name);
  ck_assert_int_eq(o.npts, rc->n);
  for (int64_t j = 0; j <= n; ++j) {
    int64_t jj = j < o.npts ? j : o.npts - 1; /* the tail repeats the last point */
    assert_close(o.cov[j], rc->v[jj], 1e-15, "coverage", j);
    assert_close(o.risk[j], rr->v[jj], 1e-15, "risk", j);
    assert_close(o.thr[j], rt->v[jj], thr_tol, "thresholds", j);
  }
  snprintf(name, sizeof name, "%s_aurc", prefix);
  assert_close(o.aurc, ref(name)->v[0], 1e-14, "aurc", 0);
  for (int i = 0; i < 4; ++i) {
    snprintf(name, sizeof name, "%s_risk_at_%s", prefix, RAC_NAME[i]);
    const ref_array *r = ref(name);
    for (int q = 0; q < 3; ++q) assert_close(o.rac[i][q], r->v[q], q == 1 ? thr_tol : 1e-15, name, q);
    snprintf(name, sizeof name, "%s_cov_at_%s", prefix, CAR_NAME[i]);
    r = ref(name);
    for (int q = 0; q < 2; ++q) assert_close(o.car[i][q], r->v[q], q == 1 ? thr_tol : 1e-15, name, q);
  }
  int64_t perm[N_TEST];
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    shuffle_perm(perm, n, seed);
    all_metrics(s, ok, n, perm, &p);
    ck_assert_int_eq(p.npts, o.npts);
    ck_assert_msg(memcmp(p.cov, o.cov, sizeof o.cov) == 0, "coverage depends on order");
    ck_assert_msg(memcmp(p.risk, o.risk, sizeof o.risk) == 0, "risk depends on order");
    ck_assert_msg(memcmp(p.thr, o.thr, sizeof o.thr) == 0, "thresholds depend on order");
    ck_assert_msg(p.aurc == o.aurc, "aurc depends on order: %.17g vs %.17g", p.aurc, o.aurc);
    ck_assert_msg(memcmp(p.rac, o.rac, sizeof o.rac) == 0, "risk@coverage depends on order");
    ck_assert_msg(memcmp(p.car, o.car, sizeof o.car) == 0, "coverage@risk depends on order");
  }
}

START_TEST(test_metrics_match_numpy) {
  effml_tensor *score, *correct, *probs, *pred;
  win_cov_outputs(&score, &correct, &probs, &pred);
  double v, t;
  /* scores computed here and in numpy differ in the last bits: thresholds to 1e-12 */
  check_metrics_ref("m", effml_tensor_data(score), effml_tensor_data(correct), N_TEST, 1e-12);
  /* without ties the reference's trapezoid from (0, 0) is ours minus error / (2N) */
  ck_assert_int_eq(effml_metrics_selective_aurc(ctx, score, correct, &v), EFFML_OK);
  assert_close(v - ref("m_top1_error")->v[0] / (2.0 * N_TEST), ref("m_aurc_reference_trapz")->v[0],
               1e-14, "aurc vs reference trapz", 0);
  /* heavy ties: the same scores rounded to 2 decimals */
  const ref_array *ts = ref("t_scores"), *tc = ref("t_correct");
  unsigned char okt[N_TEST];
  for (int64_t i = 0; i < N_TEST; ++i) okt[i] = tc->v[i] != 0;
  check_metrics_ref("t", ts->v, okt, N_TEST, 0);
  ck_assert_int_eq(effml_metrics_top1_error(ctx, pred, y_test, &v), EFFML_OK);
  assert_close(v, ref("m_top1_error")->v[0], 1e-15, "top1", 0);
  ck_assert_int_eq(effml_metrics_nll(ctx, probs, y_test, &v), EFFML_OK);
  assert_close(v, ref("m_nll")->v[0], 1e-6, "nll (f32 probs)", 0);

  /* OOD: stage-0 MSP of ID test vs OOD logits */
  effml_tensor *ood = logits_tensor(ctx, "ood_logits", N_OOD);
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  effml_tensor *s_id = vec(ctx, EFFML_F64, N_TEST), *s_ood = vec(ctx, EFFML_F64, N_OOD);
  ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &opt, 1, (const effml_tensor *const *)&test[0],
                                          NULL, s_id, NULL),
                   EFFML_OK);
  ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &opt, 1, (const effml_tensor *const *)&ood, NULL,
                                          s_ood, NULL),
                   EFFML_OK);
  effml_tensor *s_all = vec(ctx, EFFML_F64, N_TEST + N_OOD), *is_ood = vec(ctx, EFFML_I32, N_TEST + N_OOD);
  double *sa = effml_tensor_data(s_all);
  int32_t *io = effml_tensor_data(is_ood);
  memcpy(sa, effml_tensor_data(s_id), N_TEST * sizeof(double));
  memcpy(sa + N_TEST, effml_tensor_data(s_ood), N_OOD * sizeof(double));
  for (int i = 0; i < N_TEST + N_OOD; ++i) io[i] = i >= N_TEST;
  ck_assert_int_eq(effml_metrics_ood_auroc(ctx, s_all, is_ood, &v), EFFML_OK);
  assert_close(v, ref("o_auroc")->v[0], 1e-12, "auroc", 0);
  ck_assert_int_eq(effml_metrics_ood_fpr_at_tpr(ctx, s_all, is_ood, 0.95, &v, &t), EFFML_OK);
  assert_close(v, ref("o_fpr95")->v[0], 1e-15, "fpr95", 0);
  assert_close(t, ref("o_fpr95")->v[1], 1e-12, "fpr95 threshold", 0);

  effml_tensor *all[] = {score, correct, probs, pred, ood, s_id, s_ood, s_all, is_ood};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) effml_tensor_free(all[i]);
}
END_TEST

static void wrap_pairs(const float *conf, const int32_t *ok, int64_t n, effml_tensor **s,
                       effml_tensor **c) {
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_F32, 1, &n, NULL, (void *)conf,
                                     (size_t)n * sizeof(float), 1, s),
                   EFFML_OK);
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_I32, 1, &n, NULL, (void *)ok,
                                     (size_t)n * sizeof(int32_t), 1, c),
                   EFFML_OK);
}

/* conf [0.9, 0.8, 0.7, 0.6] (given shuffled), correct [1, 0, 1, 1]: no ties, so the
 * curve has a point per sample and AURC = mean of risk(top k). */
START_TEST(test_rc_curve_small_example) {
  float conf[4] = {0.7f, 0.9f, 0.6f, 0.8f};
  int32_t ok[4] = {1, 1, 1, 0};
  effml_tensor *s, *c;
  wrap_pairs(conf, ok, 4, &s, &c);
  effml_tensor *cov = vec(ctx, EFFML_F64, 5), *risk = vec(ctx, EFFML_F64, 5), *thr = vec(ctx, EFFML_F64, 5);
  const double want_risk[5] = {0, 0, 0.5, 1.0 / 3.0, 0.25}, want_cov[5] = {0, .25, .5, .75, 1};
  const double want_thr[5] = {INFINITY, (double)0.9f, (double)0.8f, (double)0.7f, (double)0.6f};
  int64_t np = 0;
  ck_assert_int_eq(effml_metrics_selective_risk_coverage_curve(ctx, s, c, cov, risk, thr, &np), EFFML_OK);
  ck_assert_int_eq(np, 5);
  const double *r = effml_tensor_data(risk), *cv = effml_tensor_data(cov), *th = effml_tensor_data(thr);
  for (int k = 0; k < 5; ++k) {
    assert_close(r[k], want_risk[k], 1e-15, "risk", k);
    assert_close(cv[k], want_cov[k], 1e-15, "coverage", k);
    assert_close(th[k], want_thr[k], 0, "thresholds", k);
  }
  double a;
  ck_assert_int_eq(effml_metrics_selective_aurc(ctx, s, c, &a), EFFML_OK);
  assert_close(a, (0 + 0.5 + 1.0 / 3.0 + 0.25) / 4, 1e-15, "aurc", 0);
  effml_tensor *all[] = {s, c, cov, risk, thr};
  for (int i = 0; i < 5; ++i) effml_tensor_free(all[i]);
}
END_TEST

/* The tie cases found by the adversarial trial, in every order of the pairs. */
START_TEST(test_ties_exact_cases) {
  /* scores [.9, .9, .5, .5]: correct [1, 0, 1, 0] and [0, 1, 0, 1] are the same multiset */
  float conf[4] = {0.9f, 0.9f, 0.5f, 0.5f};
  int32_t ok_a[4] = {1, 0, 1, 0}, ok_b[4] = {0, 1, 0, 1};
  for (int v = 0; v < 2; ++v) {
    effml_tensor *s, *c;
    wrap_pairs(conf, v ? ok_b : ok_a, 4, &s, &c);
    double aurc, r, t, sc;
    ck_assert_int_eq(effml_metrics_selective_aurc(ctx, s, c, &aurc), EFFML_OK);
    assert_close(aurc, 0.5, 0, "aurc (0.5 * 0.5 + 0.5 * 0.5)", v);
    ck_assert_int_eq(effml_metrics_selective_risk_at_coverage(ctx, s, c, 0.25, &r, &t, &sc), EFFML_OK);
    ck_assert(r == 0.5 && t == (double)0.9f && sc == 0.5);
    effml_tensor *cov = vec(ctx, EFFML_F64, 5), *risk = vec(ctx, EFFML_F64, 5);
    int64_t np;
    ck_assert_int_eq(effml_metrics_selective_risk_coverage_curve(ctx, s, c, cov, risk, NULL, &np), EFFML_OK);
    ck_assert_int_eq(np, 3);
    const double *cv = effml_tensor_data(cov), *rk = effml_tensor_data(risk);
    const double wc[5] = {0, 0.5, 1, 1, 1}, wr[5] = {0.5, 0.5, 0.5, 0.5, 0.5};
    for (int k = 0; k < 5; ++k) ck_assert(cv[k] == wc[k] && rk[k] == wr[k]);
    effml_tensor *all[] = {s, c, cov, risk};
    for (int i = 0; i < 4; ++i) effml_tensor_free(all[i]);
  }
  /* MSP [.9, .8, .8, .8], rows 0-1 correct, target risk 0.34: the top set of 0.8 has risk
   * 0.5, so coverage 0.25 at threshold 0.9, in all 24 orders */
  const float sc4[4] = {0.9f, 0.8f, 0.8f, 0.8f};
  const int32_t ok4[4] = {1, 1, 0, 0};
  int64_t perm[4];
  for (int p = 0; p < 24; ++p) {
    int rest[4] = {0, 1, 2, 3}, q = p;
    for (int i = 0; i < 4; ++i) {
      int f = 1;
      for (int j = 2; j < 4 - i; ++j) f *= j;
      int pick = q / f;
      q %= f;
      perm[i] = rest[pick];
      for (int j = pick; j < 3 - i; ++j) rest[j] = rest[j + 1];
    }
    float s_p[4];
    int32_t ok_p[4];
    for (int i = 0; i < 4; ++i) {
      s_p[i] = sc4[perm[i]];
      ok_p[i] = ok4[perm[i]];
    }
    effml_tensor *s, *c;
    wrap_pairs(s_p, ok_p, 4, &s, &c);
    double cv, t;
    ck_assert_int_eq(effml_metrics_selective_coverage_at_risk(ctx, s, c, 0.34, &cv, &t), EFFML_OK);
    ck_assert_msg(cv == 0.25 && t == (double)0.9f, "order %d: coverage %g threshold %g", p, cv, t);
    ck_assert_int_eq(effml_metrics_selective_coverage_at_risk(ctx, s, c, 0.5, &cv, &t), EFFML_OK);
    ck_assert(cv == 1.0 && t == (double)0.8f);
    effml_tensor_free(s);
    effml_tensor_free(c);
  }
}
END_TEST

/* Two-class logits [log(p / (1 - p)), 0] have MSP p (for p >= 0.5), exactly equal for equal p. */
static effml_tensor *msp_logits(const double *p, int64_t n) {
  float *z = calloc((size_t)n * 2, sizeof(float));
  for (int64_t i = 0; i < n; ++i) z[2 * i] = (float)log(p[i] / (1.0 - p[i]));
  effml_tensor *t = tu_f32(ctx, n, 2, z);
  free(z);
  return t;
}

/* Calibrate a 2-stage threshold cascade on (val, labels); the stage-0 exit count on the
 * validation set itself must equal the coverage the metric reports for the same target, and
 * tau must be the metric's threshold. */
static void check_calibration_selects(const effml_tensor *v, const effml_tensor *lab, int64_t n,
                                      int32_t target, double value, int32_t rule) {
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = effml_tensor_dim(v, 1);
  effml_cascade *c = NULL;
  ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, v, 1), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, v, 2), EFFML_OK);
  effml_cascade_threshold_options cal;
  effml_cascade_threshold_options_init(&cal);
  cal.rule = rule;
  cal.target = target;
  cal.target_value = value;
  const effml_tensor *vv[1] = {v};
  ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, 1, vv, lab, &cal), EFFML_OK);
  double tau;
  ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, 0, NULL, NULL, NULL, &tau), EFFML_OK);
  /* the metric on the stage-0 scores */
  effml_tensor *sc = vec(ctx, EFFML_F64, n), *pr = vec(ctx, EFFML_I32, n), *ok = vec(ctx, EFFML_U8, n);
  ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &opt, 1, vv, pr, sc, NULL), EFFML_OK);
  const int32_t *pp = effml_tensor_data(pr), *yy = effml_tensor_data_const(lab);
  unsigned char *po = effml_tensor_data(ok);
  for (int64_t i = 0; i < n; ++i) po[i] = pp[i] == yy[i];
  double want_cov, want_t, r;
  if (target == EFFML_CASCADE_TARGET_RISK)
    ck_assert_int_eq(effml_metrics_selective_coverage_at_risk(ctx, sc, ok, value, &want_cov, &want_t), EFFML_OK);
  else
    ck_assert_int_eq(effml_metrics_selective_risk_at_coverage(ctx, sc, ok, value, &r, &want_t, &want_cov), EFFML_OK);
  ck_assert_msg(tau == want_t, "target %d value %g: tau %.17g, metric threshold %.17g",
                (int)target, value, tau, want_t);
  int64_t sel = 0;
  const double *ps = effml_tensor_data(sc);
  for (int64_t i = 0; i < n; ++i) sel += ps[i] >= tau;
  ck_assert_msg((double)sel / (double)n == want_cov, "target %d value %g: tau selects %lld of %lld, metric says %g",
                (int)target, value, (long long)sel, (long long)n, want_cov);
  if (rule == EFFML_CASCADE_EXIT_THRESHOLD) {
    effml_cascade_workspace *ws = NULL;
    ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
    ck_assert_int_eq(effml_cascade_run(ctx, c, ws, n, NULL, NULL, NULL, NULL, NULL), EFFML_OK);
    ck_assert_int_eq(effml_cascade_workspace_exit_count(ws, 0), sel);
    effml_cascade_workspace_free(ws);
  }
  effml_cascade_free(c);
  effml_tensor_free(sc);
  effml_tensor_free(pr);
  effml_tensor_free(ok);
}

START_TEST(test_calibration_under_ties) {
  /* the issue case: MSP [.9, .8, .8, .8], rows 0-1 correct, risk 0.34 -> tau = 0.9 */
  const double p4[4] = {0.9, 0.8, 0.8, 0.8};
  int64_t four = 4;
  int64_t perm[4];
  for (uint64_t seed = 0; seed < 6; ++seed) {
    shuffle_perm(perm, 4, seed);
    double pp[4];
    effml_tensor *lab = vec(ctx, EFFML_I32, four);
    int32_t *y = effml_tensor_data(lab);
    for (int i = 0; i < 4; ++i) {
      pp[i] = p4[perm[i]];
      y[i] = perm[i] < 2 ? 0 : 1; /* predicted class is 0: rows 0-1 right */
    }
    effml_tensor *v = msp_logits(pp, 4);
    for (int rule = 1; rule <= 2; ++rule) {
      check_calibration_selects(v, lab, 4, EFFML_CASCADE_TARGET_RISK, 0.34, rule);
      check_calibration_selects(v, lab, 4, EFFML_CASCADE_TARGET_COVERAGE, 0.5, rule);
      check_calibration_selects(v, lab, 4, EFFML_CASCADE_TARGET_TPR, 0.3, rule);
    }
    effml_tensor_free(v);
    effml_tensor_free(lab);
  }
  /* many ties: 400 samples on 12 distinct MSP values, random labels; every target */
  enum { NT = 400 };
  double pt[NT];
  effml_tensor *lab = vec(ctx, EFFML_I32, NT);
  int32_t *y = effml_tensor_data(lab);
  uint64_t x = 12345;
  for (int i = 0; i < NT; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    int level = (int)((x >> 33) % 12);
    pt[i] = 0.5 + 0.04 * level;
    y[i] = ((x >> 20) % 100) < (uint64_t)(50 + 4 * level) ? 0 : 1; /* confident: more often right */
  }
  effml_tensor *v = msp_logits(pt, NT);
  static const double vals[] = {0.01, 0.1, 0.25, 0.3, 0.5, 0.77, 0.9, 1.0};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; ++i)
    for (int rule = 1; rule <= 2; ++rule) {
      check_calibration_selects(v, lab, NT, EFFML_CASCADE_TARGET_COVERAGE, vals[i], rule);
      check_calibration_selects(v, lab, NT, EFFML_CASCADE_TARGET_TPR, vals[i], rule);
      if (vals[i] >= 0.25) /* the top level is right about 94 % of the time */
        check_calibration_selects(v, lab, NT, EFFML_CASCADE_TARGET_RISK, vals[i], rule);
    }
  effml_tensor_free(v);
  effml_tensor_free(lab);
}
END_TEST

/* ---- properties ---- */

static void run_outputs(effml_cascade *c, int64_t n, effml_tensor *score, effml_tensor *pred,
                        effml_tensor *stage, effml_cascade_workspace **ws_out) {
  effml_cascade_workspace *ws = NULL;
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
  ck_assert_int_eq(effml_cascade_run(ctx, c, ws, n, NULL, pred, score, stage, NULL), EFFML_OK);
  *ws_out = ws;
}

/* A calibrated MSP stage 0 routes on the f32 routing score (exact MSP where the score is
 * too close to a bound to be sure); a run asked for probs routes on the exact score.
 * Every output agrees, the exit stage of every sample included. */
START_TEST(test_routing_score_matches_exact_routing) {
  for (int use_cb = 0; use_cb < 2; ++use_cb) {
    cb_stage cbs[M];
    effml_cascade *c = make_cascade(EFFML_CASCADE_SCORE_MSP, use_cb, cbs, test);
    effml_cascade_threshold_options cal;
    effml_cascade_threshold_options_init(&cal); /* window, coverage 0.8 */
    ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, M, (const effml_tensor *const *)val, y_val, &cal),
                     EFFML_OK);
    effml_tensor *p1 = vec(ctx, EFFML_I32, N_TEST), *s1 = vec(ctx, EFFML_F64, N_TEST),
                 *e1 = vec(ctx, EFFML_I32, N_TEST), *p2 = vec(ctx, EFFML_I32, N_TEST),
                 *s2 = vec(ctx, EFFML_F64, N_TEST), *e2 = vec(ctx, EFFML_I32, N_TEST),
                 *s0 = vec(ctx, EFFML_F64, N_TEST);
    effml_cascade_workspace *ws = NULL;
    ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
    ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N_TEST, (void *)&CASES[0], p1, s1, e1, NULL), EFFML_OK);
    /* the same cascade asked for probs: the exact path */
    double a[M], b[M];
    for (int m = 0; m < M - 1; ++m)
      ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, m, NULL, &a[m], &b[m], NULL), EFFML_OK);
    int64_t pshape[2] = {N_TEST, K};
    effml_tensor *pr = NULL;
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 2, pshape, &pr), EFFML_OK);
    ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N_TEST, (void *)&CASES[0], p2, s2, e2, pr), EFFML_OK);
    effml_tensor_free(pr);
    effml_cascade_options opt;
    effml_cascade_options_init(&opt);
    opt.num_classes = K;
    ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &opt, 1, (const effml_tensor *const *)test, NULL, s0, NULL),
                     EFFML_OK);
    const int32_t *pp1 = effml_tensor_data(p1), *pp2 = effml_tensor_data(p2),
                  *ee1 = effml_tensor_data(e1), *ee2 = effml_tensor_data(e2);
    const double *ss1 = effml_tensor_data(s1), *ss2 = effml_tensor_data(s2), *ss0 = effml_tensor_data(s0);
    for (int64_t i = 0; i < N_TEST; ++i) {
      ck_assert_msg(ee1[i] == ee2[i],
                    "sample %lld: exit stage %d (routing score) vs %d (exact), MSP %.17g, window [%.17g, %.17g]",
                    (long long)i, ee1[i], ee2[i], ss0[i], a[0], b[0]);
      ck_assert_int_eq(pp1[i], pp2[i]);
      ck_assert_msg(ss1[i] == ss2[i], "sample %lld: score %.17g vs %.17g", (long long)i, ss1[i], ss2[i]);
      if (ee1[i] == 0) ck_assert_msg(ss1[i] == ss0[i], "stage-0 exit %lld: exact MSP expected", (long long)i);
    }
    effml_tensor *all[] = {p1, s1, e1, p2, s2, e2, s0};
    for (int i = 0; i < 7; ++i) effml_tensor_free(all[i]);
    effml_cascade_workspace_free(ws);
    effml_cascade_free(c);
  }
}
END_TEST

START_TEST(test_window_width_zero_is_stage_one) {
  effml_cascade *c = make_cascade(EFFML_CASCADE_SCORE_MSP, 0, NULL, test);
  effml_cascade_threshold_options cal;
  effml_cascade_threshold_options_init(&cal);
  cal.window_below = cal.window_above = 0.0;
  ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, M, (const effml_tensor *const *)val, NULL, &cal), EFFML_OK);
  double a, b;
  ck_assert_int_eq(effml_cascade_get_exit_rule(ctx, c, 0, NULL, &a, &b, NULL), EFFML_OK);
  ck_assert(a == b);
  effml_tensor *s = vec(ctx, EFFML_F64, N_TEST), *p = vec(ctx, EFFML_I32, N_TEST), *st = vec(ctx, EFFML_I32, N_TEST);
  effml_tensor *s1 = vec(ctx, EFFML_F64, N_TEST), *p1 = vec(ctx, EFFML_I32, N_TEST);
  effml_cascade_workspace *ws;
  run_outputs(c, N_TEST, s, p, st, &ws);
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &opt, 1, (const effml_tensor *const *)test, p1, s1, NULL), EFFML_OK);
  ck_assert_int_eq(effml_cascade_workspace_exit_count(ws, 0), N_TEST);
  assert_close(effml_cascade_workspace_expected_cost(ws), COSTS[0], 0, "cost", 0);
  for (int64_t i = 0; i < N_TEST; ++i) {
    ck_assert(((double *)effml_tensor_data(s))[i] == ((double *)effml_tensor_data(s1))[i]);
    ck_assert_int_eq(((int32_t *)effml_tensor_data(p))[i], ((int32_t *)effml_tensor_data(p1))[i]);
    ck_assert_int_eq(((int32_t *)effml_tensor_data(st))[i], 0);
  }
  effml_cascade_workspace_free(ws);
  effml_cascade_free(c);
  effml_tensor *all[] = {s, p, st, s1, p1};
  for (int i = 0; i < 5; ++i) effml_tensor_free(all[i]);
}
END_TEST

START_TEST(test_window_covering_all_is_ensemble) {
  /* on the validation set itself, a full-width calibrated window [Q(0), Q(1)] passes
   * every sample; on any data, [-inf, inf] does */
  for (int variant = 0; variant < 2; ++variant) {
    effml_tensor **data = variant == 0 ? val : test;
    int64_t n = variant == 0 ? N_VAL : N_TEST;
    effml_cascade *c = make_cascade(EFFML_CASCADE_SCORE_ENTROPY, 0, NULL, data);
    if (variant == 0) {
      effml_cascade_threshold_options cal;
      effml_cascade_threshold_options_init(&cal);
      cal.window_below = cal.window_above = 1.0;
      ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, M, (const effml_tensor *const *)val, NULL, &cal), EFFML_OK);
    } else {
      for (int m = 0; m < M - 1; ++m)
        ck_assert_int_eq(effml_cascade_set_exit_rule(ctx, c, m, EFFML_CASCADE_EXIT_WINDOW, -INFINITY, INFINITY), EFFML_OK);
    }
    effml_tensor *s = vec(ctx, EFFML_F64, n), *p = vec(ctx, EFFML_I32, n), *st = vec(ctx, EFFML_I32, n);
    effml_tensor *se = vec(ctx, EFFML_F64, n), *pe = vec(ctx, EFFML_I32, n);
    effml_cascade_workspace *ws;
    run_outputs(c, n, s, p, st, &ws);
    effml_cascade_options opt;
    effml_cascade_options_init(&opt);
    opt.num_classes = K;
    opt.score = EFFML_CASCADE_SCORE_ENTROPY;
    ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &opt, M, (const effml_tensor *const *)data, pe, se, NULL), EFFML_OK);
    for (int64_t i = 0; i < n; ++i) {
      ck_assert(((double *)effml_tensor_data(s))[i] == ((double *)effml_tensor_data(se))[i]);
      ck_assert_int_eq(((int32_t *)effml_tensor_data(p))[i], ((int32_t *)effml_tensor_data(pe))[i]);
      ck_assert_int_eq(((int32_t *)effml_tensor_data(st))[i], M - 1);
    }
    assert_close(effml_cascade_workspace_expected_cost(ws), COSTS[0] + COSTS[1] + COSTS[2], 1e-15, "cost", 0);
    effml_cascade_workspace_free(ws);
    effml_cascade_free(c);
    effml_tensor *all[] = {s, p, st, se, pe};
    for (int i = 0; i < 5; ++i) effml_tensor_free(all[i]);
  }
}
END_TEST

START_TEST(test_threshold_exits_ceil_cn) {
  /* calibrated and run on the same (tie-free) validation scores: exactly ceil(c*N) exit at
   * stage 0.  With ties at the threshold, every tied sample exits (score >= tau), so the
   * count can exceed ceil(c*N). */
  static const double cs[] = {0.05, 1.0 / 3.0, 0.5, 0.7, 0.8, 0.999, 1.0};
  effml_cascade *c = make_cascade(EFFML_CASCADE_SCORE_MSP, 0, NULL, val);
  effml_cascade_workspace *ws = NULL;
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; ++i) {
    effml_cascade_threshold_options cal;
    effml_cascade_threshold_options_init(&cal);
    cal.rule = EFFML_CASCADE_EXIT_THRESHOLD;
    cal.target_value = cs[i];
    ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, M, (const effml_tensor *const *)val, y_val, &cal), EFFML_OK);
    ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N_VAL, NULL, NULL, NULL, NULL, NULL), EFFML_OK);
    int64_t want = (int64_t)ceil(cs[i] * N_VAL - 1e-9);
    ck_assert_int_eq(effml_cascade_workspace_exit_count(ws, 0), want);
  }
  /* ties: constant logits give equal scores, so all exit at a threshold equal to them */
  float zero[4 * K] = {0};
  effml_tensor *z = tu_f32(ctx, 4, K, zero);
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  effml_cascade *ct = NULL;
  ck_assert_int_eq(effml_cascade_create(ctx, &opt, &ct), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, ct, z, 1), EFFML_OK);
  ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, ct, z, 1), EFFML_OK);
  effml_cascade_threshold_options cal;
  effml_cascade_threshold_options_init(&cal);
  cal.rule = EFFML_CASCADE_EXIT_THRESHOLD;
  cal.target_value = 0.5;
  const effml_tensor *vz[1] = {z};
  ck_assert_int_eq(effml_cascade_select_thresholds(ctx, ct, 1, vz, NULL, &cal), EFFML_OK);
  effml_cascade_workspace *wt = NULL;
  ck_assert_int_eq(effml_cascade_workspace_create(ctx, ct, &wt), EFFML_OK);
  ck_assert_int_eq(effml_cascade_run(ctx, ct, wt, 4, NULL, NULL, NULL, NULL, NULL), EFFML_OK);
  ck_assert_int_eq(effml_cascade_workspace_exit_count(wt, 0), 4);
  effml_cascade_workspace_free(wt);
  effml_cascade_free(ct);
  effml_tensor_free(z);
  effml_cascade_workspace_free(ws);
  effml_cascade_free(c);
}
END_TEST

START_TEST(test_agg_last_multi_exit) {
  /* multi-exit network: stage m uses its own logits; the window rule still routes */
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  opt.aggregation = EFFML_CASCADE_AGG_LAST;
  effml_cascade *c = NULL;
  ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
  for (int m = 0; m < M; ++m) ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, test[m], COSTS[m]), EFFML_OK);
  ck_assert_int_eq(effml_cascade_set_exit_rule(ctx, c, 0, EFFML_CASCADE_EXIT_THRESHOLD, 0.6, 0), EFFML_OK);
  ck_assert_int_eq(effml_cascade_set_exit_rule(ctx, c, 1, EFFML_CASCADE_EXIT_NEVER, 0, 0), EFFML_OK);
  effml_tensor *s = vec(ctx, EFFML_F64, N_TEST), *st = vec(ctx, EFFML_I32, N_TEST);
  effml_cascade_workspace *ws;
  run_outputs(c, N_TEST, s, NULL, st, &ws);
  const ref_array *r = ref("score_msp"); /* stage 0 MSP = member 0 */
  effml_tensor *s2 = vec(ctx, EFFML_F64, N_TEST);
  ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &opt, 3, (const effml_tensor *const *)test, NULL, s2, NULL), EFFML_OK);
  effml_cascade_options o1 = opt;
  effml_tensor *s3 = vec(ctx, EFFML_F64, N_TEST);
  o1.aggregation = EFFML_CASCADE_AGG_MEAN;
  ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &o1, 1, (const effml_tensor *const *)&test[2], NULL, s3, NULL), EFFML_OK);
  for (int64_t i = 0; i < N_TEST; ++i) {
    double s0 = r->v[i];
    int32_t e = ((int32_t *)effml_tensor_data(st))[i];
    ck_assert_int_eq(e, s0 >= 0.6 ? 0 : 2);
    double want = e == 0 ? s0 : ((double *)effml_tensor_data(s3))[i];
    assert_close(((double *)effml_tensor_data(s))[i], want, 1e-15, "last score", i);
    assert_close(((double *)effml_tensor_data(s2))[i], ((double *)effml_tensor_data(s3))[i], 0, "agg last", i);
  }
  effml_cascade_workspace_free(ws);
  effml_cascade_free(c);
  effml_tensor_free(s);
  effml_tensor_free(st);
  effml_tensor_free(s2);
  effml_tensor_free(s3);
}
END_TEST

/* Routing-only runs (pred and exit stage; no score, no probs) take the last stage's
 * prediction from the certified f32 path.  It must equal the exact path's (the same run
 * also asked for the exact score) and the ensemble's argmax, for a 2-stage mean cascade, a
 * 3-stage LAST cascade and a single stage, precomputed and callback.  Every 7th row of the
 * second member is the first member's row with classes 0 and 1 swapped, so the two top
 * mean probabilities tie to rounding and the row must be recomputed exactly. */
START_TEST(test_routing_only_pred_is_exact) {
  effml_tensor *tie1 = tu_f32(ctx, N_TEST, K, effml_tensor_data(test[1]));
  float *t1 = effml_tensor_data(tie1);
  const float *t0 = effml_tensor_data(test[0]);
  for (int64_t i = 0; i < N_TEST; i += 7)
    for (int64_t k = 0; k < K; ++k) t1[i * K + k] = t0[i * K + (k < 2 ? 1 - k : k)];
  struct {
    int32_t agg, stages;
    effml_tensor *member[M];
  } cfg[] = {{EFFML_CASCADE_AGG_MEAN, 2, {test[0], tie1, NULL}},
             {EFFML_CASCADE_AGG_LAST, 3, {test[0], test[1], test[2]}},
             {EFFML_CASCADE_AGG_MEAN, 1, {tie1, NULL, NULL}}};
  for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ++ci)
    for (int use_cb = 0; use_cb < 2; ++use_cb)
      for (int everyone_on = 0; everyone_on < 2; ++everyone_on) {
        const int32_t ns = cfg[ci].stages;
        effml_cascade_options opt;
        effml_cascade_options_init(&opt);
        opt.num_classes = K;
        opt.aggregation = cfg[ci].agg;
        effml_cascade *c = NULL;
        ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
        static cb_stage cbs[M];
        for (int32_t m = 0; m < ns; ++m) {
          memset(&cbs[m], 0, sizeof cbs[m]);
          cbs[m].logits = cfg[ci].member[m];
          ck_assert_int_eq(use_cb ? effml_cascade_add_stage_fn(ctx, c, copy_rows, &cbs[m], COSTS[m])
                                  : effml_cascade_add_stage_logits(ctx, c, cfg[ci].member[m], COSTS[m]),
                           EFFML_OK);
        }
        if (ns > 1) { /* routed windows: coverage 0.8, or a window over every score */
          effml_cascade_threshold_options cal;
          effml_cascade_threshold_options_init(&cal);
          if (everyone_on) cal.window_below = cal.window_above = 1.0;
          ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, ns - 1, (const effml_tensor *const *)val,
                                                           NULL, &cal),
                           EFFML_OK);
        }
        effml_tensor *p1 = vec(ctx, EFFML_I32, N_TEST), *e1 = vec(ctx, EFFML_I32, N_TEST),
                     *p2 = vec(ctx, EFFML_I64, N_TEST), *e2 = vec(ctx, EFFML_I32, N_TEST),
                     *s2 = vec(ctx, EFFML_F64, N_TEST), *pe = vec(ctx, EFFML_I32, N_TEST);
        effml_cascade_workspace *ws = NULL;
        ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
        ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N_TEST, (void *)&CASES[0], p1, NULL, e1, NULL), EFFML_OK);
        const int64_t last_reach = effml_cascade_workspace_reach_count(ws, ns - 1);
        ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N_TEST, (void *)&CASES[0], p2, s2, e2, NULL), EFFML_OK);
        ck_assert_int_eq(effml_cascade_workspace_reach_count(ws, ns - 1), last_reach);
        /* a window over every validation score keeps all test rows but the few outside it */
        if (ns == 1) ck_assert_int_eq(last_reach, N_TEST);
        else ck_assert_int_ge(last_reach, everyone_on ? N_TEST * 9 / 10 : 1);
        /* the ensemble of the last stage's members: all of them (mean), or the last (LAST) */
        effml_cascade_options eo = opt;
        eo.aggregation = EFFML_CASCADE_AGG_MEAN;
        const int32_t first = cfg[ci].agg == EFFML_CASCADE_AGG_LAST ? ns - 1 : 0;
        ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &eo, ns - first,
                                                        (const effml_tensor *const *)&cfg[ci].member[first],
                                                        pe, NULL, NULL),
                         EFFML_OK);
        const int32_t *pp1 = effml_tensor_data(p1), *ee1 = effml_tensor_data(e1),
                      *ee2 = effml_tensor_data(e2), *ppe = effml_tensor_data(pe);
        const int64_t *pp2 = effml_tensor_data(p2);
        int64_t ties_at_last = 0;
        for (int64_t i = 0; i < N_TEST; ++i) {
          ck_assert_int_eq(ee1[i], ee2[i]);
          ck_assert_msg(pp1[i] == pp2[i], "config %d cb %d row %lld: routing-only pred %d, exact %lld",
                        (int)ci, use_cb, (long long)i, (int)pp1[i], (long long)pp2[i]);
          if (ee1[i] == ns - 1) {
            ck_assert_int_eq(pp1[i], ppe[i]);
            ties_at_last += i % 7 == 0;
          }
        }
        if (everyone_on && cfg[ci].member[ns - 1] == tie1) ck_assert_int_ge(ties_at_last, 35); /* of 43 */
        effml_tensor *all[] = {p1, e1, p2, e2, s2, pe};
        for (int i = 0; i < 6; ++i) effml_tensor_free(all[i]);
        effml_cascade_workspace_free(ws);
        effml_cascade_free(c);
      }
  effml_tensor_free(tie1);
}
END_TEST

/* Near ties at the top of a row: two largest logits so close (relatively below 1e-16) that
 * their f64 softmax probabilities are equal.  The exact path then predicts the lower class
 * (argmax of the probabilities, lowest index on ties) although the higher one has the
 * larger logit; a routed stage must predict the same.  Rows i % 3 == 0 have such a pair
 * (the larger logit in the higher class); i % 3 == 1 a pair 1e-6 apart (distinct
 * probabilities: the larger logit wins); i % 3 == 2 random logits. */
enum { NT_ROWS = 70 };
static double nt_unif(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(*s >> 11) * 0x1.0p-53;
}
static void near_tie_logits(int f32_values, double *z, int32_t *lo, int32_t *hi) {
  uint64_t s = 99;
  for (int64_t i = 0; i < NT_ROWS; ++i) {
    const int64_t l = i % (K - 1), h = l + 1 + (i / 3) % (K - 1 - l); /* l < h */
    lo[i] = (int32_t)l;
    hi[i] = (int32_t)h;
    double *r = z + i * K;
    if (i % 3 == 2) {
      for (int64_t k = 0; k < K; ++k) r[k] = (double)(float)(6.0 * nt_unif(&s) - 3.0);
      continue;
    }
    for (int64_t k = 0; k < K; ++k) r[k] = (double)(float)(-1.0 - 2.0 * nt_unif(&s));
    if (f32_values) { /* f32 values 1e-20 apart: exp(-1e-20) = 1 in f64 */
      r[l] = (double)(float)(1e-20 * (double)(1 + i % 5));
      r[h] = i % 3 == 0 ? (double)(float)(2.0 * r[l]) : (double)(float)(r[l] + 1e-6);
    } else { /* c in [2^-10, 2^-9) and its f64 neighbour, 2^-62 above: exp(-2^-62) = 1 */
      r[l] = 0x1.0p-10 * (1.0 + (double)i / 128.0);
      r[h] = i % 3 == 0 ? nextafter(r[l], 1.0) : r[l] + 1e-6;
    }
    ck_assert(r[h] > r[l]);
  }
}

/* Every run of the same cascade (routing only; with scores; with probs: the exact path), the
 * ensemble's prediction and the exit stages agree, for f32 and f64 logits, precomputed and
 * callback stages, threshold and window rules, calibrated and set by hand, at every ISA
 * level, on enough rows for the 16-row kernels and the row-by-row remainder. */
START_TEST(test_routed_pred_near_ties_is_exact) {
  double zd[NT_ROWS * K];
  float zf[NT_ROWS * K];
  int32_t lo[NT_ROWS], hi[NT_ROWS];
  int64_t shape[2] = {NT_ROWS, K};
  for (int is_f64 = 0; is_f64 < 2; ++is_f64) {
    near_tie_logits(!is_f64, zd, lo, hi);
    for (int64_t i = 0; i < NT_ROWS * K; ++i) zf[i] = (float)zd[i];
    effml_tensor *z = NULL;
    if (is_f64) {
      ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, shape, &z), EFFML_OK);
      memcpy(effml_tensor_data(z), zd, sizeof zd);
    } else {
      z = tu_f32(ctx, NT_ROWS, K, zf);
    }
    /* the exact probabilities tie where intended: the ensemble (metrics path) predicts the
     * lower class there, the larger logit elsewhere */
    effml_cascade_options opt;
    effml_cascade_options_init(&opt);
    opt.num_classes = K;
    effml_tensor *pe = vec(ctx, EFFML_I32, NT_ROWS), *pp = NULL;
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, shape, &pp), EFFML_OK);
    const effml_tensor *members[1] = {z};
    ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &opt, 1, members, pe, NULL, pp), EFFML_OK);
    const int32_t *ppe = effml_tensor_data(pe);
    const double *ppp = effml_tensor_data(pp);
    for (int64_t i = 0; i < NT_ROWS; ++i) {
      if (i % 3 == 2) continue;
      const double pl = ppp[i * K + lo[i]], ph = ppp[i * K + hi[i]];
      if (i % 3 == 0) {
        ck_assert_msg(pl == ph, "f64 %d row %lld: p %.17g vs %.17g should tie", is_f64, (long long)i, pl, ph);
        ck_assert_int_eq(ppe[i], lo[i]);
      } else {
        ck_assert(ph > pl);
        ck_assert_int_eq(ppe[i], hi[i]);
      }
    }
    for (int use_cb = 0; use_cb < 2 - is_f64; ++use_cb)
      for (int rule = 0; rule < 4; ++rule) {
        effml_cascade *c = NULL;
        ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
        static cb_stage cbs[2];
        for (int32_t m = 0; m < 2; ++m) {
          memset(&cbs[m], 0, sizeof cbs[m]);
          cbs[m].logits = z;
          ck_assert_int_eq(use_cb ? effml_cascade_add_stage_fn(ctx, c, copy_rows, &cbs[m], COSTS[m])
                                  : effml_cascade_add_stage_logits(ctx, c, z, COSTS[m]),
                           EFFML_OK);
        }
        /* calibrated on the rows themselves: a threshold at coverage 1 (every row exits at
         * stage 0), a window of width 0; by hand: a threshold every row passes, a window */
        effml_cascade_threshold_options cal;
        effml_cascade_threshold_options_init(&cal);
        if (rule == 0) {
          cal.rule = EFFML_CASCADE_EXIT_THRESHOLD;
          cal.target_value = 1.0;
        } else if (rule == 1) {
          cal.window_below = cal.window_above = 0.0;
        }
        if (rule < 2)
          ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, 1, members, NULL, &cal), EFFML_OK);
        else if (rule == 2)
          ck_assert_int_eq(effml_cascade_set_exit_rule(ctx, c, 0, EFFML_CASCADE_EXIT_THRESHOLD, 0.0, 0.0), EFFML_OK);
        else
          ck_assert_int_eq(effml_cascade_set_exit_rule(ctx, c, 0, EFFML_CASCADE_EXIT_WINDOW, 0.6, 0.9), EFFML_OK);
        effml_cascade_workspace *ws = NULL;
        ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
        for (int32_t isa = EFFML_CORE_ISA_PORTABLE; isa <= effml_core_isa_level(); ++isa) {
          ck_assert_int_eq(effml_context_set_isa_level(ctx, isa), EFFML_OK);
          effml_tensor *p[3], *e[3], *sc[2], *pr = NULL;
          for (int r = 0; r < 3; ++r) {
            p[r] = vec(ctx, EFFML_I32, NT_ROWS);
            e[r] = vec(ctx, EFFML_I32, NT_ROWS);
          }
          sc[0] = vec(ctx, EFFML_F64, NT_ROWS);
          sc[1] = vec(ctx, EFFML_F64, NT_ROWS);
          ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, shape, &pr), EFFML_OK);
          void *rd = (void *)&CASES[0];
          ck_assert_int_eq(effml_cascade_run(ctx, c, ws, NT_ROWS, rd, p[0], NULL, e[0], NULL), EFFML_OK);
          ck_assert_int_eq(effml_cascade_run(ctx, c, ws, NT_ROWS, rd, p[1], sc[0], e[1], NULL), EFFML_OK);
          ck_assert_int_eq(effml_cascade_run(ctx, c, ws, NT_ROWS, rd, p[2], sc[1], e[2], pr), EFFML_OK);
          const int64_t exits0 = effml_cascade_workspace_exit_count(ws, 0);
          ck_assert_int_ge(exits0, rule == 0 || rule == 2 ? NT_ROWS : rule == 1 ? NT_ROWS - 1 : 20);
          int64_t ties_exited = 0;
          for (int64_t i = 0; i < NT_ROWS; ++i) {
            const int32_t want_e = ((int32_t *)effml_tensor_data(e[2]))[i];
            const int32_t want_p = ((int32_t *)effml_tensor_data(p[2]))[i];
            for (int r = 0; r < 2; ++r) {
              ck_assert_int_eq(((int32_t *)effml_tensor_data(e[r]))[i], want_e);
              ck_assert_msg(((int32_t *)effml_tensor_data(p[r]))[i] == want_p,
                            "f64 %d cb %d rule %d isa %d run %d row %lld (exit %d): pred %d, exact path %d",
                            is_f64, use_cb, rule, (int)isa, r, (long long)i, want_e,
                            ((int32_t *)effml_tensor_data(p[r]))[i], want_p);
            }
            ck_assert(((double *)effml_tensor_data(sc[0]))[i] == ((double *)effml_tensor_data(sc[1]))[i]);
            if (want_e == 0) {
              ck_assert_int_eq(want_p, ppe[i]);
              ties_exited += i % 3 == 0;
            }
          }
          ck_assert_int_ge(ties_exited, rule == 3 ? 20 : 23);
          for (int r = 0; r < 3; ++r) {
            effml_tensor_free(p[r]);
            effml_tensor_free(e[r]);
          }
          effml_tensor_free(sc[0]);
          effml_tensor_free(sc[1]);
          effml_tensor_free(pr);
        }
        ck_assert_int_eq(effml_context_set_isa_level(ctx, effml_core_isa_level()), EFFML_OK);
        effml_cascade_workspace_free(ws);
        effml_cascade_free(c);
      }
    effml_tensor_free(pe);
    effml_tensor_free(pp);
    effml_tensor_free(z);
  }
}
END_TEST

/* Rules set by hand route too (stage 0's MSP, or every stage's with LAST aggregation): the
 * certified cuts decide each bound where the f32 routing score is sure and the exact MSP
 * decides the rest, so the exits are the exact path's (a run asked for probs) for any
 * bounds.  The hardest bounds are exact MSPs of the rows themselves and their f64
 * neighbours (a row exactly at a bound: threshold "MSP >= a" exits it, a window
 * [lo, hi] keeps it), plus 1, 1 - 2^-53, 1/K and the infinities.  The rows that exit are
 * also counted from the ensemble's exact MSP (the metrics path). */
START_TEST(test_hand_rules_route_exactly) {
  effml_cascade_options opt;
  effml_cascade_options_init(&opt);
  opt.num_classes = K;
  effml_tensor *s0 = vec(ctx, EFFML_F64, N_TEST);
  ck_assert_int_eq(effml_cascade_ensemble_predict(ctx, &opt, 1, (const effml_tensor *const *)test, NULL, s0, NULL),
                   EFFML_OK);
  const double *msp = effml_tensor_data(s0);
  int64_t pshape[2] = {N_TEST, K};
  effml_tensor *p1 = vec(ctx, EFFML_I32, N_TEST), *e1 = vec(ctx, EFFML_I32, N_TEST),
               *p2 = vec(ctx, EFFML_I32, N_TEST), *e2 = vec(ctx, EFFML_I32, N_TEST),
               *s2 = vec(ctx, EFFML_F64, N_TEST), *e3 = vec(ctx, EFFML_I32, N_TEST), *pr = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, pshape, &pr), EFFML_OK);
  for (int use_cb = 0; use_cb < 2; ++use_cb) {
    cb_stage cbs[M];
    effml_cascade *c = make_cascade(EFFML_CASCADE_SCORE_MSP, use_cb, cbs, test);
    effml_cascade_workspace *ws = NULL;
    ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
    int64_t at_bound = 0;
    for (int t = 0; t < 60; ++t) {
      const double base = msp[(t * 37) % N_TEST], base2 = msp[(t * 53 + 11) % N_TEST];
      const double specials[6] = {1.0, 1.0 - 0x1.0p-53, 1.0 / K, -INFINITY, INFINITY, 0.5};
      const double a = t % 3 == 0 ? base : t % 3 == 1 ? nextafter(base, 0.0) : nextafter(base, 2.0);
      double lo = a, hi = t % 2 ? base2 : nextafter(base2, 2.0);
      if (t >= 54) lo = specials[t - 54], hi = specials[(t - 54 + 3) % 6];
      if (lo > hi) {
        const double x = lo;
        lo = hi;
        hi = x;
      }
      const int thr = t % 4 < 2;
      if (thr)
        ck_assert_int_eq(effml_cascade_set_exit_rule(ctx, c, 0, EFFML_CASCADE_EXIT_THRESHOLD, lo, 0), EFFML_OK);
      else
        ck_assert_int_eq(effml_cascade_set_exit_rule(ctx, c, 0, EFFML_CASCADE_EXIT_WINDOW, lo, hi), EFFML_OK);
      ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N_TEST, (void *)&CASES[0], p1, NULL, e1, NULL), EFFML_OK);
      ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N_TEST, (void *)&CASES[0], p2, s2, e2, NULL), EFFML_OK);
      ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N_TEST, (void *)&CASES[0], NULL, NULL, e3, pr), EFFML_OK);
      int64_t want = 0;
      for (int64_t i = 0; i < N_TEST; ++i) {
        const int ex = thr ? msp[i] >= lo : msp[i] < lo || msp[i] > hi;
        want += ex;
        at_bound += msp[i] == lo || (!thr && msp[i] == hi);
        const int32_t x1 = ((int32_t *)effml_tensor_data(e1))[i], x2 = ((int32_t *)effml_tensor_data(e2))[i],
                      x3 = ((int32_t *)effml_tensor_data(e3))[i];
        ck_assert_msg(x1 == x3 && x2 == x3 && (x3 == 0) == ex,
                      "cb %d bound %d (%s [%.17g, %.17g]) row %lld, MSP %.17g: exit %d / %d, exact path %d",
                      use_cb, t, thr ? "threshold" : "window", lo, hi, (long long)i, msp[i], x1, x2, x3);
        ck_assert_int_eq(((int32_t *)effml_tensor_data(p1))[i], ((int32_t *)effml_tensor_data(p2))[i]);
      }
      ck_assert_int_eq(effml_cascade_workspace_exit_count(ws, 0), want);
    }
    ck_assert_int_ge(at_bound, 30); /* rows exactly at a bound were decided */
    effml_cascade_workspace_free(ws);
    effml_cascade_free(c);
  }
  effml_tensor *all[] = {s0, p1, e1, p2, e2, s2, e3, pr};
  for (int i = 0; i < 8; ++i) effml_tensor_free(all[i]);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cascade");
  TCase *tc = tcase_create("reference");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_scores_match_numpy);
  tcase_add_test(tc, test_calibrate_and_run_match_numpy);
  tcase_add_test(tc, test_metrics_match_numpy);
  tcase_add_test(tc, test_rc_curve_small_example);
  tcase_add_test(tc, test_ties_exact_cases);
  tcase_add_test(tc, test_calibration_under_ties);
  tcase_add_test(tc, test_routing_score_matches_exact_routing);
  tcase_add_test(tc, test_window_width_zero_is_stage_one);
  tcase_add_test(tc, test_window_covering_all_is_ensemble);
  tcase_add_test(tc, test_threshold_exits_ceil_cn);
  tcase_add_test(tc, test_agg_last_multi_exit);
  tcase_add_test(tc, test_routing_only_pred_is_exact);
  tcase_add_test(tc, test_routed_pred_near_ties_is_exact);
  tcase_add_test(tc, test_hand_rules_route_exactly);
  suite_add_tcase(s, tc);
  int failed = tu_run(s);
  for (int i = 0; i < n_refs; ++i) free(refs[i].v);
  return failed ? 1 : 0;
}
