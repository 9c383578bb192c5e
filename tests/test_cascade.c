/* Early-exit cascades (issue 7) against the numpy reference
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

START_TEST(test_metrics_match_numpy) {
  effml_tensor *score, *correct, *probs, *pred;
  win_cov_outputs(&score, &correct, &probs, &pred);
  effml_tensor *cov = vec(ctx, EFFML_F64, N_TEST + 1), *risk = vec(ctx, EFFML_F64, N_TEST + 1),
               *thr = vec(ctx, EFFML_F64, N_TEST + 1);
  for (int conv = 0; conv < 2; ++conv) {
    ck_assert_int_eq(effml_metrics_selective_risk_coverage_curve(ctx, score, correct, conv, cov, risk, thr),
                     EFFML_OK);
    const ref_array *rr = ref("m_risk"), *rc = ref("m_coverage"),
                    *rt = ref(conv == EFFML_METRICS_RC_EXACT ? "m_thr_exact" : "m_thr_reference");
    for (int64_t k = 0; k <= N_TEST; ++k) {
      assert_close(((double *)effml_tensor_data(risk))[k], rr->v[k], 1e-15, "risk", k);
      assert_close(((double *)effml_tensor_data(cov))[k], rc->v[k], 1e-15, "coverage", k);
      assert_close(((double *)effml_tensor_data(thr))[k], rt->v[k], 1e-12, "thresholds", k);
    }
  }
  double v, t;
  ck_assert_int_eq(effml_metrics_selective_aurc(ctx, score, correct, &v), EFFML_OK);
  assert_close(v, ref("m_aurc")->v[0], 1e-13, "aurc", 0);
  ck_assert_int_eq(effml_metrics_selective_risk_at_coverage(ctx, score, correct, 0.8, &v, &t), EFFML_OK);
  assert_close(v, ref("m_risk_at_80")->v[0], 1e-15, "risk@80", 0);
  assert_close(t, ref("m_risk_at_80")->v[1], 1e-12, "risk@80 threshold", 0);
  ck_assert_int_eq(effml_metrics_selective_coverage_at_risk(ctx, score, correct, 0.05, &v, &t), EFFML_OK);
  assert_close(v, ref("m_cov_at_5")->v[0], 1e-15, "cov@5", 0);
  assert_close(t, ref("m_cov_at_5")->v[1], 1e-12, "cov@5 threshold", 0);
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

  effml_tensor *all[] = {cov, risk, thr, score, correct, probs, pred, ood, s_id, s_ood, s_all, is_ood};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) effml_tensor_free(all[i]);
}
END_TEST

/* REFERENCES.md 6.3: conf [0.9, 0.8, 0.7, 0.6], correct [1, 0, 1, 1]. */
START_TEST(test_rc_curve_reference_example) {
  float conf[4] = {0.7f, 0.9f, 0.6f, 0.8f}; /* shuffled on purpose */
  int32_t ok[4] = {1, 1, 1, 0};
  int64_t four = 4;
  effml_tensor *s = NULL, *c = NULL;
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_F32, 1, &four, NULL, conf, sizeof conf, 1, &s), EFFML_OK);
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_I32, 1, &four, NULL, ok, sizeof ok, 1, &c), EFFML_OK);
  effml_tensor *cov = vec(ctx, EFFML_F64, 5), *risk = vec(ctx, EFFML_F64, 5), *thr = vec(ctx, EFFML_F64, 5);
  const double want_risk[5] = {0, 0, 0.5, 1.0 / 3.0, 0.25}, want_cov[5] = {0, .25, .5, .75, 1};
  const double ref_thr[5] = {(double)0.9f, (double)0.8f, (double)0.7f, (double)0.6f, -INFINITY};
  const double exact_thr[5] = {INFINITY, (double)0.9f, (double)0.8f, (double)0.7f, (double)0.6f};
  ck_assert_int_eq(effml_metrics_selective_risk_coverage_curve(ctx, s, c, EFFML_METRICS_RC_REFERENCE, cov, risk, thr), EFFML_OK);
  const double *r = effml_tensor_data(risk), *cv = effml_tensor_data(cov), *th = effml_tensor_data(thr);
  for (int k = 0; k < 5; ++k) {
    assert_close(r[k], want_risk[k], 1e-15, "risk", k);
    assert_close(cv[k], want_cov[k], 1e-15, "coverage", k);
    assert_close(th[k], ref_thr[k], 0, "reference thresholds", k);
  }
  ck_assert_int_eq(effml_metrics_selective_risk_coverage_curve(ctx, s, c, EFFML_METRICS_RC_EXACT, NULL, NULL, thr), EFFML_OK);
  for (int k = 0; k < 5; ++k) assert_close(th[k], exact_thr[k], 0, "exact thresholds", k);
  double a;
  ck_assert_int_eq(effml_metrics_selective_aurc(ctx, s, c, &a), EFFML_OK);
  /* trapz: 0.25 * (0/2 + 0.25 + (0.5 + 1/3)/2 + (1/3 + 0.25)/2) */
  assert_close(a, 0.25 * (0.25 + (0.5 + 1.0 / 3.0) / 2 + (1.0 / 3.0 + 0.25) / 2), 1e-15, "aurc", 0);
  effml_tensor *all[] = {s, c, cov, risk, thr};
  for (int i = 0; i < 5; ++i) effml_tensor_free(all[i]);
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

int main(void) {
  Suite *s = suite_create("cascade");
  TCase *tc = tcase_create("reference");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_scores_match_numpy);
  tcase_add_test(tc, test_calibrate_and_run_match_numpy);
  tcase_add_test(tc, test_metrics_match_numpy);
  tcase_add_test(tc, test_rc_curve_reference_example);
  tcase_add_test(tc, test_window_width_zero_is_stage_one);
  tcase_add_test(tc, test_window_covering_all_is_ensemble);
  tcase_add_test(tc, test_threshold_exits_ceil_cn);
  tcase_add_test(tc, test_agg_last_multi_exit);
  suite_add_tcase(s, tc);
  int failed = tu_run(s);
  for (int i = 0; i < n_refs; ++i) free(refs[i].v);
  return failed ? 1 : 0;
}
