/*
 * Training dropouts of LoHa, LoKr (rank_dropout, module_dropout, rank_dropout_scale) and VeRA
 * (vera_dropout), PEFT 0.21 semantics:
 *   - inference with dropouts set equals the layer without them, bit for bit, and draws nothing;
 *   - p = 0 in training equals no dropout bit for bit and draws nothing from the generator;
 *   - in training, the output equals a direct computation from the mask the layer drew (read
 *     through the internal probe): rows of the delta zeroed, kept rows divided by the mask mean
 *     (LoHa; LoKr with rank_dropout_scale) or not (LoKr), the whole delta skipped (module
 *     dropout), or the adapter fed x .* mask (VeRA);
 *   - the masks' frequencies match p (binomial bounds);
 *   - input and parameter gradients of a TRAIN forward/backward equal central finite differences
 *     of L = sum g .* y under the same, fixed mask.
 * The direct computation uses INFER forwards of the same layer (no dropout there) and the base
 * weights in double: delta(x) = y_infer(x) - (x W^T + b).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"
#include "../lib/adapter/adapter_internal.h"

enum { B = 3, IN = 8, OUT = 12 };

enum { K_LOHA, K_LOKR, K_LOKR_SCALED, K_VERA };

static effml_layer *make_layer(effml_context *ctx, int kind) {
  effml_layer *d = NULL, *l = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, IN, OUT, 1, &d), EFFML_OK);
  if (kind == K_LOHA) {
    ck_assert_int_eq(effml_adapter_loha_create(ctx, d, 2, 3.0, &l), EFFML_OK);
  } else if (kind == K_VERA) {
    ck_assert_int_eq(effml_adapter_vera_create(ctx, d, 3, 0.1, &l), EFFML_OK);
  } else {
    effml_adapter_lokr_options o;
    effml_adapter_lokr_options_init(&o);
    o.rank = 2;
    o.alpha = 3.0;
    o.decompose_both = 1;
    ck_assert_int_eq(effml_adapter_lokr_create(ctx, d, &o, &l), EFFML_OK);
  }
  /* every parameter random (the zero-initialised factor would hide the delta) */
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
    tu_fill_uniform(effml_layer_param(l, i), 40u + 7u * (uint64_t)i, -0.8f, 0.8f);
  ck_assert_int_eq(effml_layer_set_trainable(ctx, l, NULL, 1), EFFML_OK); /* VeRA's projections stay frozen */
  return l;
}

static void set_dropout(effml_context *ctx, effml_layer *l, int kind, double rank_p, double module_p) {
  effml_status st = kind == K_LOHA   ? effml_adapter_loha_set_dropout(ctx, l, rank_p, module_p)
                    : kind == K_VERA ? effml_adapter_vera_set_dropout(ctx, l, rank_p)
                                     : effml_adapter_lokr_set_dropout(ctx, l, rank_p, module_p, kind == K_LOKR_SCALED);
  ck_assert_msg(st == EFFML_OK, "%s", effml_context_last_error(ctx));
}

static int32_t pidx(effml_layer *l, const char *name) {
  for (int32_t i = 0; i < effml_layer_num_params(l); ++i)
    if (strcmp(effml_layer_param_name(l, i), name) == 0) return i;
  ck_abort_msg("no parameter %s", name);
  return -1;
}

/* y = x W^T + b in double, x [B, IN]. */
static void base_y(effml_layer *l, const float *x, double *y) {
  const float *w = (const float *)effml_tensor_data_const(effml_layer_param(l, pidx(l, "base_layer.weight")));
  const float *bias = (const float *)effml_tensor_data_const(effml_layer_param(l, pidx(l, "base_layer.bias")));
  for (int i = 0; i < B; ++i)
    for (int j = 0; j < OUT; ++j) {
      double s = bias[j];
      for (int k = 0; k < IN; ++k) s += (double)x[i * IN + k] * w[j * IN + k];
      y[i * OUT + j] = s;
    }
}

static void infer(effml_context *ctx, effml_layer *l, const float *x, float *y) {
  effml_tensor *xt = tu_f32(ctx, B, IN, x), *yt = tu_f32(ctx, B, OUT, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, l, xt, yt, EFFML_LAYER_MODE_INFER), EFFML_OK);
  memcpy(y, effml_tensor_data_const(yt), sizeof(float) * B * OUT);
  effml_tensor_free(xt);
  effml_tensor_free(yt);
}

/* The mask state of one TRAIN forward, copied out of the layer. */
typedef struct drawn {
  int skipped, masked, dropped;
  float row[OUT], in[B * IN];
} drawn;

static drawn probe(const effml_layer *l) {
  effml__dropout_probe p;
  ck_assert(effml__adapter_dropout_probe(l, &p));
  drawn d;
  memset(&d, 0, sizeof d);
  d.skipped = p.skipped;
  d.masked = p.masked;
  d.dropped = p.dropped;
  if (p.masked) memcpy(d.row, p.row_mask, sizeof d.row);
  if (p.dropped) memcpy(d.in, p.in_mask, sizeof d.in);
  return d;
}

/* What a TRAIN forward with mask state `d` must give, from INFER forwards and the base. */
static void expected_y(effml_context *ctx, effml_layer *l, const drawn *d, const float *x, double *y) {
  double yb[B * OUT];
  float yi[B * OUT];
  base_y(l, x, yb);
  if (d->skipped) {
    memcpy(y, yb, sizeof yb);
  } else if (d->dropped) { /* y_base(x) + delta(x .* M) */
    float xm[B * IN];
    double ybm[B * OUT];
    for (int i = 0; i < B * IN; ++i) xm[i] = x[i] * d->in[i];
    infer(ctx, l, xm, yi);
    base_y(l, xm, ybm);
    for (int i = 0; i < B * OUT; ++i) y[i] = yb[i] + ((double)yi[i] - ybm[i]);
  } else {
    infer(ctx, l, x, yi);
    for (int i = 0; i < B * OUT; ++i)
      y[i] = d->masked ? yb[i] + d->row[i % OUT] * ((double)yi[i] - yb[i]) : (double)yi[i];
  }
}

static double loss(effml_context *ctx, effml_layer *l, const drawn *d, const float *x, const float *g) {
  double y[B * OUT], s = 0;
  expected_y(ctx, l, d, x, y);
  for (int i = 0; i < B * OUT; ++i) s += g[i] * y[i];
  return s;
}

static void expect_near(const char *what, int64_t i, double got, double want, double tol) {
  ck_assert_msg(fabs(got - want) <= tol * (1.0 + fabs(want)), "%s[%lld]: got %.8g, want %.8g", what, (long long)i, got,
                want);
}

static const char *kind_name(int kind) {
  return kind == K_LOHA ? "loha" : kind == K_LOKR ? "lokr" : kind == K_LOKR_SCALED ? "lokr scaled" : "vera";
}

/* ---- inference and p = 0 ---- */

START_TEST(test_inference_and_zero_p) {
  const int kind = _i;
  effml_context *ctx = tu_ctx(3);
  effml_layer *l = make_layer(ctx, kind);
  const effml__rng before = *effml__ctx_rng(ctx); /* the generator must not move below */
  float x[B * IN], y0[B * OUT], y1[B * OUT];
  effml_tensor *xt = tu_f32(ctx, B, IN, NULL);
  tu_fill_uniform(xt, 9, -1, 1);
  memcpy(x, effml_tensor_data_const(xt), sizeof x);
  infer(ctx, l, x, y0);
  /* dropouts set: inference unchanged, bit for bit, and the generator untouched */
  set_dropout(ctx, l, kind, 0.5, 0.5);
  infer(ctx, l, x, y1);
  ck_assert_msg(memcmp(y0, y1, sizeof y0) == 0, "%s: inference changed with dropouts set", kind_name(kind));
  ck_assert_msg(memcmp(&before, effml__ctx_rng(ctx), sizeof before) == 0, "%s: a draw happened", kind_name(kind));
  /* p = 0 in training: the no-dropout output, bit for bit, nothing drawn */
  set_dropout(ctx, l, kind, 0.0, 0.0);
  effml_tensor *yt = tu_f32(ctx, B, OUT, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, l, xt, yt, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  ck_assert_msg(memcmp(y0, effml_tensor_data_const(yt), sizeof y0) == 0, "%s: p=0 training differs",
                kind_name(kind));
  drawn d = probe(l);
  ck_assert(!d.skipped && !d.masked && !d.dropped);
  ck_assert_msg(memcmp(&before, effml__ctx_rng(ctx), sizeof before) == 0, "%s: a draw happened", kind_name(kind));
  /* range checks name the value */
  effml_status st = kind == K_LOHA   ? effml_adapter_loha_set_dropout(ctx, l, 1.0, 0.0)
                    : kind == K_VERA ? effml_adapter_vera_set_dropout(ctx, l, 1.0)
                                     : effml_adapter_lokr_set_dropout(ctx, l, 1.0, 0.0, 0);
  ck_assert_int_eq(st, EFFML_E_INVALID_ARG);
  ck_assert(strstr(effml_context_last_error(ctx), "=1 must be in [0, 1)") != NULL);
  if (kind != K_VERA) {
    st = kind == K_LOHA ? effml_adapter_loha_set_dropout(ctx, l, 0.0, -0.1) : effml_adapter_lokr_set_dropout(ctx, l, 0.0, NAN, 0);
    ck_assert_int_eq(st, EFFML_E_INVALID_ARG);
    ck_assert(strstr(effml_context_last_error(ctx), "module_dropout") != NULL);
  }
  /* the wrong kind is refused */
  effml_layer *d2 = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, IN, OUT, 1, &d2), EFFML_OK);
  ck_assert_int_eq(effml_adapter_loha_set_dropout(ctx, d2, 0.1, 0.1), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_adapter_lokr_set_dropout(ctx, d2, 0.1, 0.1, 0), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_adapter_vera_set_dropout(ctx, d2, 0.1), EFFML_E_INVALID_ARG);
  ck_assert(effml_adapter_vera_dropout(d2) == 0.0);
  effml_layer_free(d2);
  effml_tensor_free(xt);
  effml_tensor_free(yt);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

/* ---- training: mask semantics, frequencies, gradients ---- */

/* One TRAIN forward + backward under the layer's dropouts; checks y against the direct
 * computation and the gradients against finite differences under the drawn mask. */
static drawn train_step_checked(effml_context *ctx, effml_layer *l, int kind, int check_grads) {
  float x[B * IN], g[B * OUT];
  effml_tensor *xt = tu_f32(ctx, B, IN, NULL), *yt = tu_f32(ctx, B, OUT, NULL);
  effml_tensor *gt = tu_f32(ctx, B, OUT, NULL), *dxt = tu_f32(ctx, B, IN, NULL);
  tu_fill_uniform(xt, 21, -1, 1);
  tu_fill_uniform(gt, 22, -1, 1);
  memcpy(x, effml_tensor_data_const(xt), sizeof x);
  memcpy(g, effml_tensor_data_const(gt), sizeof g);
  effml_layer_zero_grad(l);
  ck_assert_int_eq(effml_layer_forward(ctx, l, xt, yt, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
  drawn d = probe(l);
  double want[B * OUT];
  expected_y(ctx, l, &d, x, want); /* INFER forwards: the pending backward survives them */
  const float *y = (const float *)effml_tensor_data_const(yt);
  for (int i = 0; i < B * OUT; ++i) expect_near(kind_name(kind), i, y[i], want[i], 2e-5);
  ck_assert_int_eq(effml_layer_backward(ctx, l, gt, dxt), EFFML_OK);
  if (check_grads) {
    const float h = 2e-3f;
    const float *dx = (const float *)effml_tensor_data_const(dxt);
    for (int i = 0; i < B * IN; ++i) {
      float keep = x[i];
      x[i] = keep + h;
      double lp = loss(ctx, l, &d, x, g);
      x[i] = keep - h;
      double lm = loss(ctx, l, &d, x, g);
      x[i] = keep;
      expect_near("dx", i, dx[i], (lp - lm) / (2.0 * h), 2e-3);
    }
    for (int32_t p = 0; p < effml_layer_num_params(l); ++p) {
      if (!effml_layer_param_trainable(l, p)) continue;
      float *v = (float *)effml_tensor_data(effml_layer_param(l, p));
      const float *ag = (const float *)effml_tensor_data_const(effml_layer_param_grad(l, p));
      for (int64_t i = 0; i < effml_tensor_numel(effml_layer_param(l, p)); ++i) {
        float keep = v[i];
        v[i] = keep + h;
        double lp = loss(ctx, l, &d, x, g);
        v[i] = keep - h;
        double lm = loss(ctx, l, &d, x, g);
        v[i] = keep;
        expect_near(effml_layer_param_name(l, p), i, ag[i], (lp - lm) / (2.0 * h), 2e-3);
      }
    }
  }
  effml_tensor_free(xt);
  effml_tensor_free(yt);
  effml_tensor_free(gt);
  effml_tensor_free(dxt);
  return d;
}

/* LoHa / LoKr rank dropout: rows zeroed; kept rows 1, or out/kept when scaled. */
START_TEST(test_rank_dropout) {
  const int kind = _i; /* K_LOHA, K_LOKR, K_LOKR_SCALED */
  effml_context *ctx = tu_ctx(5);
  effml_layer *l = make_layer(ctx, kind);
  const double p = 0.4;
  set_dropout(ctx, l, kind, p, 0.0);
  int mixed = 0, gradded = 0;
  for (int it = 0; it < 40; ++it) {
    drawn d = train_step_checked(ctx, l, kind, !gradded);
    ck_assert(d.masked && !d.skipped);
    int kept = 0;
    float c = 0;
    for (int j = 0; j < OUT; ++j)
      if (d.row[j] != 0.0f) {
        ++kept;
        c = d.row[j];
      }
    for (int j = 0; j < OUT; ++j) ck_assert(d.row[j] == 0.0f || d.row[j] == c);
    if (kept > 0) {
      if (kind == K_LOKR) ck_assert_msg(c == 1.0f, "lokr without rank_dropout_scale: kept rows %g", c);
      else ck_assert_msg(fabs(c * kept / (double)OUT - 1.0) < 1e-6, "%s: kept rows %g, not out/kept", kind_name(kind), c);
    }
    if (kept > 0 && kept < OUT) {
      mixed = 1;
      gradded = 1; /* gradients checked once, under a mask with both kinds of rows */
    }
  }
  ck_assert_msg(mixed, "no mask with both dropped and kept rows in 40 draws");
  /* frequency of dropped rows: 4000 draws, p = 0.4, 5 sigma */
  int64_t zeros = 0, n = 0;
  effml_tensor *xt = tu_f32(ctx, B, IN, NULL), *yt = tu_f32(ctx, B, OUT, NULL);
  tu_fill_uniform(xt, 1, -1, 1);
  for (int it = 0; it < 4000 / OUT; ++it) {
    ck_assert_int_eq(effml_layer_forward(ctx, l, xt, yt, EFFML_LAYER_MODE_TRAIN), EFFML_OK);
    drawn d = probe(l);
    for (int j = 0; j < OUT; ++j) zeros += d.row[j] == 0.0f;
    n += OUT;
  }
  double sd = sqrt(p * (1 - p) / (double)n);
  ck_assert_msg(fabs((double)zeros / (double)n - p) < 5 * sd, "dropped fraction %g, p %g", (double)zeros / (double)n, p);
  effml_tensor_free(xt);
  effml_tensor_free(yt);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

/* LoHa / LoKr module dropout: the whole delta skipped with probability p; backward then gives
 * dx = dy W and no adapter gradient (finite differences of the base alone). */
START_TEST(test_module_dropout) {
  const int kind = _i; /* K_LOHA, K_LOKR */
  effml_context *ctx = tu_ctx(6);
  effml_layer *l = make_layer(ctx, kind);
  const double p = 0.3;
  set_dropout(ctx, l, kind, 0.0, p);
  int skipped = 0, kept = 0, n = 400;
  int checked_skip = 0, checked_keep = 0;
  for (int it = 0; it < n; ++it) {
    int want_grads = 0;
    drawn d;
    if (!checked_skip || !checked_keep) {
      d = train_step_checked(ctx, l, kind, 1);
      want_grads = 1;
    } else {
      d = train_step_checked(ctx, l, kind, 0);
    }
    ck_assert(!d.masked);
    skipped += d.skipped;
    kept += !d.skipped;
    if (want_grads && d.skipped) {
      checked_skip = 1;
      for (int32_t q = 0; q < effml_layer_num_params(l); ++q) { /* no adapter gradient at all */
        if (strncmp(effml_layer_param_name(l, q), "base_layer.", 11) == 0) continue;
        const effml_tensor *gr = effml_layer_param_grad(l, q);
        const float *gv = (const float *)effml_tensor_data_const(gr);
        for (int64_t i = 0; i < effml_tensor_numel(gr); ++i) ck_assert(gv[i] == 0.0f);
      }
    }
    if (want_grads && !d.skipped) checked_keep = 1;
  }
  ck_assert(checked_skip && checked_keep);
  double sd = sqrt(p * (1 - p) / n);
  ck_assert_msg(fabs((double)skipped / n - p) < 5 * sd, "skipped %d of %d, p %g", skipped, n, p);
  ck_assert_int_eq(skipped + kept, n);
  /* both at once: a skipped forward draws no row mask; the others do */
  set_dropout(ctx, l, kind, 0.5, 0.5);
  int both = 0;
  for (int it = 0; it < 30; ++it) {
    drawn d = train_step_checked(ctx, l, kind, 0);
    ck_assert(d.skipped != d.masked);
    both |= d.masked ? 1 : 2;
  }
  ck_assert_int_eq(both, 3);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

/* VeRA input dropout: x .* mask into the adapter, mask in {0, 1/(1-p)}. */
START_TEST(test_vera_dropout) {
  effml_context *ctx = tu_ctx(7);
  effml_layer *l = make_layer(ctx, K_VERA);
  const double p = 0.35;
  set_dropout(ctx, l, K_VERA, p, 0.0);
  ck_assert(effml_adapter_vera_dropout(l) == p);
  int64_t zeros = 0, n = 0;
  for (int it = 0; it < 60; ++it) {
    drawn d = train_step_checked(ctx, l, K_VERA, it == 0);
    ck_assert(d.dropped);
    for (int i = 0; i < B * IN; ++i) {
      ck_assert(d.in[i] == 0.0f || d.in[i] == (float)(1.0 / (1.0 - p)));
      zeros += d.in[i] == 0.0f;
      ++n;
    }
  }
  double sd = sqrt(p * (1 - p) / (double)n);
  ck_assert_msg(fabs((double)zeros / (double)n - p) < 5 * sd, "dropped fraction %g, p %g", (double)zeros / (double)n, p);
  /* a merged layer refuses training; inference of the merged layer ignores the dropout */
  float x[B * IN], y0[B * OUT], y1[B * OUT];
  for (int i = 0; i < B * IN; ++i) x[i] = 0.1f * (float)(i % 7) - 0.3f;
  infer(ctx, l, x, y0);
  ck_assert_int_eq(effml_adapter_vera_merge(ctx, l), EFFML_OK);
  infer(ctx, l, x, y1);
  ck_assert(tu_max_abs_diff_f32(y0, y1, B * OUT) < 1e-5);
  effml_tensor *xt = tu_f32(ctx, B, IN, x), *yt = tu_f32(ctx, B, OUT, NULL);
  ck_assert_int_eq(effml_layer_forward(ctx, l, xt, yt, EFFML_LAYER_MODE_TRAIN), EFFML_E_STATE);
  effml_tensor_free(xt);
  effml_tensor_free(yt);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

/* Every row dropped: the delta is zero (PEFT's 0/0 would give NaN), the gradients consistent. */
START_TEST(test_all_rows_dropped) {
  effml_context *ctx = tu_ctx(8);
  effml_layer *l = make_layer(ctx, K_LOHA);
  set_dropout(ctx, l, K_LOHA, 0.999, 0.0);
  int seen = 0;
  for (int it = 0; it < 20 && !seen; ++it) {
    drawn d = train_step_checked(ctx, l, K_LOHA, 0);
    int kept = 0;
    for (int j = 0; j < OUT; ++j) kept += d.row[j] != 0.0f;
    if (kept == 0) {
      seen = 1;
      const effml_tensor *gr = effml_layer_param_grad(l, pidx(l, "hada_w1_a"));
      const float *gv = (const float *)effml_tensor_data_const(gr);
      for (int64_t i = 0; i < effml_tensor_numel(gr); ++i) ck_assert(gv[i] == 0.0f && isfinite(gv[i]));
    }
  }
  ck_assert(seen);
  effml_layer_free(l);
  effml_context_free(ctx);
}
END_TEST

/* A PEFT-layout save writes the dropouts the layers carry, and refuses layers that disagree. */
START_TEST(test_save_writes_dropouts) {
  effml_context *ctx = tu_ctx(9);
  effml_layer *l[2] = {make_layer(ctx, K_LOHA), make_layer(ctx, K_LOHA)};
  const char *mn[2] = {"base_model.model.a", "base_model.model.b"};
  set_dropout(ctx, l[0], K_LOHA, 0.25, 0.125);
  set_dropout(ctx, l[1], K_LOHA, 0.25, 0.0);
  char dir[512];
  snprintf(dir, sizeof dir, "%s/adapter_dropout_save", EFFML_TEST_TMP);
  mkdir(dir, 0755);
  ck_assert_int_eq(effml_adapter_peft_save(ctx, dir, 2, l, mn, NULL), EFFML_E_INVALID_ARG);
  ck_assert(strstr(effml_context_last_error(ctx), "training dropouts") != NULL);
  set_dropout(ctx, l[1], K_LOHA, 0.25, 0.125);
  ck_assert_msg(effml_adapter_peft_save(ctx, dir, 2, l, mn, NULL) == EFFML_OK, "%s", effml_context_last_error(ctx));
  effml_adapter_peft *a = NULL;
  ck_assert_msg(effml_adapter_peft_open(ctx, dir, &a) == EFFML_OK, "%s", effml_context_last_error(ctx));
  effml_layer *d = NULL, *back = NULL;
  ck_assert_int_eq(effml_layer_dense_create(ctx, IN, OUT, 1, &d), EFFML_OK);
  ck_assert_msg(effml_adapter_peft_attach(ctx, a, 0, d, &back) == EFFML_OK, "%s", effml_context_last_error(ctx));
  double rd = 0, md = 0;
  ck_assert_int_eq(effml_adapter_loha_dropout(back, &rd, &md), EFFML_OK);
  ck_assert(rd == 0.25 && md == 0.125);
  effml_layer_free(back);
  effml_adapter_peft_free(a);
  effml_layer_free(l[0]);
  effml_layer_free(l[1]);
  effml_context_free(ctx);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("adapter_dropout");
  TCase *tc = tcase_create("dropout");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, test_inference_and_zero_p, K_LOHA, K_VERA + 1);
  tcase_add_loop_test(tc, test_rank_dropout, K_LOHA, K_LOKR_SCALED + 1);
  tcase_add_loop_test(tc, test_module_dropout, K_LOHA, K_LOKR + 1);
  tcase_add_test(tc, test_vera_dropout);
  tcase_add_test(tc, test_all_rows_dropped);
  tcase_add_test(tc, test_save_writes_dropouts);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(suite()); }
