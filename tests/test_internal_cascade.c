/* Cascade routing score: the one-register AVX-512 kernel that effml__stage_rows uses for raw
 * f32 rows of K <= 16 classes must give bit-identical scores and the same argmax as the
 * 4-lane kernel behind effml__route_score, for every K,
 * ties, wide ranges (exp clamped at -87) and signed zeros.
 * The last stage's routing-only prediction (effml__tail_rows): its f32 probabilities stay
 * within a quarter of the stated error bound on adversarial rows, and its certified argmax
 * equals the exact path's on every row, near-ties included (which it must recompute). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "../lib/cascade/cascade_internal.h"

START_TEST(test_route_kernels_bit_identical) {
  uint64_t s = 12345;
  enum { ROWS = 4003, RS = 19 }; /* not a multiple of 16 blocks; rows padded to 19 floats */
  float *z = malloc(sizeof(float) * ROWS * RS);
  double *score = malloc(sizeof(double) * ROWS);
  int32_t *pred = malloc(sizeof(int32_t) * ROWS);
  int64_t *idx = malloc(sizeof(int64_t) * ROWS);
  for (int64_t j = 0; j < ROWS; ++j) idx[j] = 2 * j + (j & 1); /* increasing, as compacted rows */
  for (int64_t K = 1; K <= 16; ++K)
    for (int layout = 0; layout < 3; ++layout) { /* dense; padded rows; every other row by index */
      const int64_t rs = layout == 1 ? RS : K, rows = layout == 2 ? ROWS / 2 : ROWS;
      for (int64_t i = 0; i < ROWS * rs; ++i) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        const double u = (double)(s >> 11) * 0x1.0p-53;
        const int64_t row = i / rs;
        /* scales from 1e-3 to 300 (the clamp), rows of equal logits, signed zeros */
        const double scale = row % 5 == 0 ? 300.0 : row % 5 == 1 ? 1e-3 : 4.0;
        z[i] = row % 7 == 3 ? 1.25f : row % 11 == 4 ? ((i & 1) ? 0.0f : -0.0f)
                                                     : (float)(scale * (2.0 * u - 1.0));
      }
      effml__stage_block b;
      memset(&b, 0, sizeof b);
      b.base = z;
      b.rs = rs;
      b.cs = 1;
      b.K = K;
      b.m = 1;
      b.route = 1;
      b.score = score;
      b.pred = pred;
      b.row_index = layout == 2 ? idx : NULL;
      /* the AVX-512 kernels (one row per register, 16 rows per register) run only when the
       * level allows them */
      for (int32_t isa = EFFML_CORE_ISA_PORTABLE; isa <= effml_core_isa_level(); ++isa) {
        b.isa = isa;
        ck_assert_int_eq(effml__stage_rows(&b, 0, rows), -1);
        ck_assert_int_eq(effml__stage_rows(&b, 5, rows), -1); /* blocks from another start */
        for (int64_t j = 0; j < rows; ++j) {
          const int64_t r = layout == 2 ? idx[j] : j;
          double zd[16];
          for (int64_t k = 0; k < K; ++k) zd[k] = z[r * rs + k];
          int32_t arg = -1;
          const double ref = effml__route_score(zd, K, &arg);
          ck_assert_msg(memcmp(&ref, &score[j], sizeof ref) == 0 && arg == pred[j],
                        "K %lld layout %d isa %d row %lld: score %.17g vs %.17g, argmax %d vs %d",
                        (long long)K, layout, (int)isa, (long long)j, score[j], ref, (int)pred[j],
                        (int)arg);
          ck_assert(ref >= 0.0 && ref <= (double)K); /* s = sum_{k != arg} e^(x_k) <= K - 1 */
        }
      }
      /* a non-finite logit is reported at its position (the first one in row order) */
      const int64_t r7 = layout == 2 ? idx[37] : 37;
      z[r7 * rs + (K - 1)] = NAN;
      z[(layout == 2 ? idx[40] : 40) * rs] = INFINITY;
      for (int32_t isa = EFFML_CORE_ISA_PORTABLE; isa <= effml_core_isa_level(); ++isa) {
        b.isa = isa;
        ck_assert_int_eq(effml__stage_rows(&b, 0, rows), 37 * K + (K - 1));
      }
    }
  free(z);
  free(score);
  free(pred);
  free(idx);
}
END_TEST

/* Rows for the tail tests: K classes, two members; scales from 1e-3 to 300, exact ties
 * (equal logits), swapped pairs (member 1 = member 0 with classes 0 and 1 exchanged: the
 * two top probabilities' sums tie to rounding) and near-ties 1 ulp apart. */
static void tail_rows_fill(float *z0, float *z1, int64_t rows, int64_t K, uint64_t *s) {
  for (int64_t r = 0; r < rows; ++r) {
    const int kind = (int)(r % 6);
    const double scale = r % 5 == 0 ? 300.0 : r % 5 == 1 ? 1e-3 : 4.0;
    for (int64_t k = 0; k < K; ++k) {
      *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
      const double u = (double)(*s >> 11) * 0x1.0p-53;
      *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
      const double v = (double)(*s >> 11) * 0x1.0p-53;
      z0[r * K + k] = (float)(scale * (2.0 * u - 1.0));
      z1[r * K + k] = (float)(scale * (2.0 * v - 1.0));
    }
    if (kind == 1) /* exact tie of the two largest logits in both members */
      for (int64_t k = 0; k < K; ++k) z0[r * K + k] = z1[r * K + k] = k < 2 ? 2.5f : (float)(k % 3) - 3.0f;
    if (kind == 2 && K >= 2) { /* member 1 = member 0 with classes 0 and 1 swapped */
      for (int64_t k = 0; k < K; ++k) z1[r * K + k] = z0[r * K + k];
      z0[r * K] = 3.0f;
      z0[r * K + 1] = 1.0f;
      z1[r * K] = 1.0f;
      z1[r * K + 1] = 3.0f;
    }
    if (kind == 3 && K >= 2) { /* one member, top two 1 ulp apart */
      z1[r * K] = 5.0f;
      z1[r * K + 1] = nextafterf(5.0f, 6.0f);
    }
  }
}

START_TEST(test_tail_bound_and_exact_argmax) {
  uint64_t s = 777;
  enum { ROWS = 3000 };
  static const int64_t Ks[] = {1, 2, 3, 5, 10, 16, 17, 100, 256};
  float *z0 = malloc(sizeof(float) * ROWS * 256), *z1 = malloc(sizeof(float) * ROWS * 256);
  int32_t *pred = malloc(sizeof(int32_t) * ROWS);
  int64_t *idx = malloc(sizeof(int64_t) * ROWS);
  for (int64_t j = 0; j < ROWS; ++j) idx[j] = 2 * j + (j & 1); /* increasing, < ROWS for j < ROWS / 2 */
  for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ++ki) {
    const int64_t K = Ks[ki];
    tail_rows_fill(z0, z1, ROWS, K, &s);
    for (int32_t members = 1; members <= 2; ++members) {
      effml__tail_block t;
      memset(&t, 0, sizeof t);
      t.K = K;
      t.members = members;
      t.base[0] = members == 2 ? z0 : z1; /* the last member is z1 */
      t.base[1] = z1;
      t.rs[0] = t.rs[1] = K;
      t.pred = pred;
      /* the error of q~ against the exact sum of the members' f64 softmax */
      const double bound = effml__tail_bound(K);
      double worst = 0.0;
      for (int64_t j = 0; j < ROWS; ++j) {
        float q[256];
        ck_assert(effml__tail_fast_probs(&t, j, q));
        double exact[256];
        for (int64_t k = 0; k < K; ++k) exact[k] = 0.0;
        for (int32_t i = 0; i < members; ++i) {
          const float *z = t.base[i] + j * K;
          double zb[256], p[256];
          for (int64_t k = 0; k < K; ++k) zb[k] = z[k];
          (void)effml__softmax_row(zb, K, p);
          for (int64_t k = 0; k < K; ++k) exact[k] += p[k];
        }
        for (int64_t k = 0; k < K; ++k) {
          const double d = fabs((double)q[k] - exact[k]);
          if (d > worst) worst = d;
        }
      }
      ck_assert_msg(worst <= 0.25 * members * bound, "K %lld, %d members: error %.3g vs bound %.3g",
                    (long long)K, (int)members, worst, members * bound);
      /* the certified argmax equals the exact path's, at every ISA level the CPU has (one
       * row per register, 16 rows per register), rows in order or picked by an index (the
       * first member's as compacted rows, the last's as a callback's compact buffer); the
       * ties and near-ties must have been recomputed */
      for (int by_index = 0; by_index < 2; ++by_index) {
        const int64_t rows = by_index ? ROWS / 2 : ROWS;
        t.row_index[0] = by_index ? idx : NULL;
        for (int32_t isa = EFFML_CORE_ISA_PORTABLE; isa <= effml_core_isa_level(); ++isa) {
          t.isa = isa;
          for (int64_t j = 0; j < rows; ++j) pred[j] = -1;
          int64_t fallbacks = 0;
          ck_assert_int_eq(effml__tail_rows(&t, 0, rows, &fallbacks), -1);
          for (int64_t j = 0; j < rows; ++j)
            ck_assert_msg(pred[j] == effml__tail_exact_pred(&t, j),
                          "K %lld, %d members, isa %d, by index %d, row %lld: pred %d, exact %d",
                          (long long)K, (int)members, (int)isa, by_index, (long long)j,
                          (int)pred[j], (int)effml__tail_exact_pred(&t, j));
          if (K >= 2) ck_assert_int_ge(fallbacks, rows / 7); /* at least the exact ties */
          ck_assert_int_le(fallbacks, rows / 2);
        }
      }
      t.row_index[0] = NULL;
      /* a non-finite logit of the last member is reported at its position */
      const float keep = z1[9 * K + (K - 1)];
      z1[9 * K + (K - 1)] = INFINITY;
      int64_t fb = 0;
      for (int32_t isa = EFFML_CORE_ISA_PORTABLE; isa <= effml_core_isa_level(); ++isa) {
        t.isa = isa;
        ck_assert_int_eq(effml__tail_rows(&t, 0, ROWS, &fb), 9 * K + (K - 1));
      }
      z1[9 * K + (K - 1)] = keep;
    }
  }
  free(z0);
  free(z1);
  free(pred);
  free(idx);
}
END_TEST

/* Thresholds selected on data X give exactly the promised coverage when the cascade routes
 * the same X, and the routed run exits exactly the samples the exact path (a run asked for
 * probabilities) exits.  The promise is computed here from the exact MSP of every row (f64
 * softmax, libm exp: the stage kernel's arithmetic; sorted independently of the library),
 * for coverage, risk and window targets, routing-only and with exact scores, on 1 and 2
 * threads and every ISA level, on three data sets: ordinary logits (K = 10); large logits
 * (K = 2, N(0, 30^2): many MSPs within 6e-8 of 1, where an f32 MSP is 1.0, and many exactly
 * 1.0 in f64, a tie group); and logit gaps of 17..25 (K = 2) whose f64 MSPs are all distinct
 * although 80 % of them are above 1 - 6e-8, so every coverage target is exactly ceil(c N). */
static int cmp_desc(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}
typedef struct {
  double msp;
  int64_t row;
} msp_row;
static int cmp_msp_row(const void *a, const void *b) {
  const msp_row *x = a, *y = b;
  return x->msp < y->msp ? 1 : x->msp > y->msp ? -1 : (x->row > y->row) - (x->row < y->row);
}
/* The exact path's MSP of one row and its argmax (first maximum of p). */
static double ref_msp(const float *z, int64_t K, int32_t *arg) {
  double zmax = -INFINITY, e[16], sum = 0.0, top = -1.0;
  for (int64_t k = 0; k < K; ++k)
    if ((double)z[k] > zmax) zmax = z[k];
  for (int64_t k = 0; k < K; ++k) sum += (e[k] = exp((double)z[k] - zmax));
  const double inv = 1.0 / sum;
  for (int64_t k = 0; k < K; ++k)
    if (e[k] * inv > top) {
      top = e[k] * inv;
      *arg = (int32_t)k;
    }
  return top;
}
static double gauss(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  const double u = ((double)(*s >> 11) + 0.5) * 0x1.0p-53;
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  const double v = (double)(*s >> 11) * 0x1.0p-53;
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static double unif(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(*s >> 11) * 0x1.0p-53;
}

START_TEST(test_calibrated_coverage_is_exact) {
  const int data = _i; /* 0: ordinary K = 10; 1: large logits K = 2; 2: distinct MSPs near 1 */
  const int64_t N = data == 0 ? 10000 : data == 1 ? 4000 : 3000, KC = data == 0 ? 10 : 2;
  effml_context *ctx = tu_ctx(3);
  effml_tensor *x0 = tu_f32(ctx, N, KC, NULL), *x1 = tu_f32(ctx, N, KC, NULL);
  int64_t n = N;
  effml_tensor *lab = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &n, &lab), EFFML_OK);
  float *a = effml_tensor_data(x0), *b = effml_tensor_data(x1);
  int32_t *y = effml_tensor_data(lab);
  uint64_t s = 99 + (uint64_t)data;
  for (int64_t i = 0; i < N; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    y[i] = (int32_t)((s >> 33) % KC);
    const double boost = 4.0 * (double)((s >> 11) & 0xFFFF) / 65536.0;
    if (data == 2) {
      /* gaps on a grid 8 / N apart (f64 MSPs at least ~4e-14 apart), shuffled */
      const double u = (double)((i * 7919) % N) / (double)N;
      const double gap = i % 5 ? 17.0 + 8.0 * u : 5.0 * u;
      a[i * KC + (y[i] & 1)] = (float)gap;
      a[i * KC + 1 - (y[i] & 1)] = 0.0f;
      if (i % 9 == 0) y[i] ^= 1; /* some confident errors */
    }
    for (int64_t k = 0; k < KC; ++k) {
      const double g = gauss(&s);
      if (data == 0) a[i * KC + k] = (float)(1.5 * g + (k == y[i] ? boost : 0.0));
      if (data == 1) a[i * KC + k] = (float)(30.0 * g);
      b[i * KC + k] = (float)(a[i * KC + k] + 0.5 * g * g - 0.5);
    }
  }
  /* the exact MSP and prediction of every row, and the MSPs in descending order */
  double *msp = malloc(sizeof(double) * N), *desc = malloc(sizeof(double) * N);
  int32_t *mpred = malloc(sizeof(int32_t) * N);
  for (int64_t i = 0; i < N; ++i) desc[i] = msp[i] = ref_msp(a + i * KC, KC, &mpred[i]);
  qsort(desc, N, sizeof(double), cmp_desc);
  int64_t ones = 0, near_one = 0, ties = 0;
  for (int64_t i = 0; i < N; ++i) {
    ones += msp[i] == 1.0;
    near_one += msp[i] > 1.0 - 6e-8;
    ties += i > 0 && desc[i] == desc[i - 1];
  }
  if (data == 1) ck_assert(ones > N / 5 && near_one > ones + N / 20); /* the hard cases are there */
  if (data == 2) ck_assert(ties == 0 && near_one > N / 2);
  msp_row *bymsp = malloc(sizeof(msp_row) * N);
  for (int64_t i = 0; i < N; ++i) {
    bymsp[i].msp = msp[i];
    bymsp[i].row = i;
  }
  qsort(bymsp, N, sizeof(msp_row), cmp_msp_row);
  unsigned char *want = malloc((size_t)N);
  effml_tensor *pred = NULL, *stage = NULL, *score = NULL, *probs = NULL;
  int64_t nk[2] = {N, KC};
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &n, &pred), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &n, &stage), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, &n, &score), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, nk, &probs), EFFML_OK);
  static const double covs[] = {0.05, 0.2, 1.0 / 3.0, 0.5, 0.8, 0.95, 0.999, 1.0};
  static const double risks[] = {0.02, 0.05, 0.1, 0.3};
  int exact_k = 0, cases = 0;
  for (int32_t rule = EFFML_CASCADE_EXIT_THRESHOLD; rule <= EFFML_CASCADE_EXIT_WINDOW; ++rule)
    for (int32_t target = EFFML_CASCADE_TARGET_COVERAGE;
         target <= (data == 0 ? EFFML_CASCADE_TARGET_RISK : EFFML_CASCADE_TARGET_COVERAGE); ++target)
      for (size_t vi = 0; vi < (target == EFFML_CASCADE_TARGET_RISK ? 4u : 8u); ++vi) {
        const double value = target == EFFML_CASCADE_TARGET_RISK ? risks[vi] : covs[vi];
        /* the promise: tau's rank k in the exact MSP order, extended over its tie group */
        int64_t k = 0;
        if (target == EFFML_CASCADE_TARGET_RISK) { /* the largest top set (whole tie groups) of risk <= value */
          int64_t wrong = 0;
          for (int64_t g = 0; g < N;) {
            int64_t e = g;
            while (e + 1 < N && bymsp[e + 1].msp == bymsp[g].msp) ++e;
            for (int64_t i = g; i <= e; ++i) wrong += mpred[bymsp[i].row] != y[bymsp[i].row];
            if ((double)wrong / (double)(e + 1) <= value) k = e + 1;
            g = e + 1;
          }
          ck_assert_int_gt(k, 0);
        } else {
          k = (int64_t)ceil(value * N - 1e-9);
          while (k < N && desc[k] == desc[k - 1]) ++k;
          if (k == (int64_t)ceil(value * N - 1e-9)) ++exact_k;
        }
        ++cases;
        const double tau = desc[k - 1];
        int64_t want_exit = 0;
        if (rule == EFFML_CASCADE_EXIT_THRESHOLD) {
          for (int64_t i = 0; i < N; ++i) want_exit += want[i] = msp[i] >= tau;
          ck_assert_int_eq(want_exit, k);
        } else { /* numpy quantiles of the exact MSPs around tau's percentile rank */
          int64_t below = 0, upto = 0;
          for (int64_t i = 0; i < N; ++i) {
            below += msp[i] < tau;
            upto += msp[i] <= tau;
          }
          const double q = (double)(below + upto + (below < upto)) * (50.0 / (double)N) / 100.0;
          double lim[2], qq[2] = {q - 0.1 < 0.0 ? 0.0 : q - 0.1, q + 0.1 > 1.0 ? 1.0 : q + 0.1};
          for (int h = 0; h < 2; ++h) {
            const double v = (double)(N - 1) * qq[h], fl = floor(v);
            const int64_t i0 = (int64_t)fl;
            const double lo = desc[N - 1 - i0], hi = i0 + 1 < N ? desc[N - 2 - i0] : lo;
            const double t = v - fl, d = hi - lo;
            lim[h] = i0 >= N - 1 ? desc[0] : t >= 0.5 ? hi - d * (1.0 - t) : lo + d * t;
          }
          for (int64_t i = 0; i < N; ++i) want_exit += want[i] = msp[i] < lim[0] || msp[i] > lim[1];
        }
        effml_cascade_options opt;
        effml_cascade_options_init(&opt);
        opt.num_classes = KC;
        effml_cascade *c = NULL;
        ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
        ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, x0, 1.0), EFFML_OK);
        ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, x1, 2.0), EFFML_OK);
        effml_cascade_threshold_options cal;
        effml_cascade_threshold_options_init(&cal);
        cal.rule = rule;
        cal.target = target;
        cal.target_value = value;
        const effml_tensor *val[1] = {x0};
        ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, 1, val, lab, &cal), EFFML_OK);
        effml_cascade_workspace *ws = NULL;
        ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
        for (int32_t threads = 1; threads <= 2; ++threads)
          for (int32_t isa = EFFML_CORE_ISA_PORTABLE; isa <= effml_core_isa_level();
               isa = isa < effml_core_isa_level() ? effml_core_isa_level() : isa + 1)
            for (int outputs = 0; outputs < 3; ++outputs) { /* routing only; + score; + probs (exact path) */
              ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
              ck_assert_int_eq(effml_context_set_isa_level(ctx, isa), EFFML_OK);
              ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N, NULL, pred, outputs ? score : NULL,
                                                 stage, outputs == 2 ? probs : NULL),
                               EFFML_OK);
              ck_assert_msg(effml_cascade_workspace_exit_count(ws, 0) == want_exit,
                            "data %d rule %d target %d value %g (threads %d, isa %d, outputs %d): "
                            "%lld exit at stage 0, promised %lld",
                            data, (int)rule, (int)target, value, (int)threads, (int)isa, outputs,
                            (long long)effml_cascade_workspace_exit_count(ws, 0), (long long)want_exit);
              const int32_t *st = effml_tensor_data(stage);
              for (int64_t i = 0; i < N; ++i) /* ck_assert only on failure: each one is a syscall */
                if ((st[i] == 0) != want[i])
                  ck_abort_msg(
                              "data %d rule %d value %g outputs %d: sample %lld (MSP %.17g) exit "
                              "stage %d", data, (int)rule, value, outputs, (long long)i, msp[i],
                              (int)st[i]);
            }
        effml_cascade_workspace_free(ws);
        effml_cascade_free(c);
      }
  /* most coverage targets fall on no tie: exactly ceil(c N); all of them on data set 2 */
  if (data == 0) ck_assert_int_ge(exact_k, 12);
  if (data == 2) ck_assert_int_eq(exact_k, cases);
  free(msp);
  free(desc);
  free(mpred);
  free(bymsp);
  free(want);
  effml_tensor *all[] = {x0, x1, lab, pred, stage, score, probs};
  for (int i = 0; i < 7; ++i) effml_tensor_free(all[i]);
  effml_context_free(ctx);
}
END_TEST

/* The certified decision: on rows of every scale (logit gaps up to 60, where the MSP is 1
 * in f64; ties; K from 2 to 100) and bounds taken at the exact MSPs of other rows and their
 * f64 neighbours, 1 and 1 - 2^-53, every row the cuts decide (effml__route_decide >= 0) is
 * decided as the exact rule on the exact MSP decides it; the undecided rows stay few.  The
 * routing score itself is within the stated error of s = sum_{k != arg} e^(x_k) computed in
 * long double. */
START_TEST(test_route_cuts_certified) {
  enum { ROWS = 4000 };
  static const int64_t Ks[] = {2, 3, 10, 17, 100};
  uint64_t s = 4242;
  float *z = malloc(sizeof(float) * ROWS * 100);
  double *rs = malloc(sizeof(double) * ROWS), *msp = malloc(sizeof(double) * ROWS);
  int32_t *pred = malloc(sizeof(int32_t) * ROWS);
  for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ++ki) {
    const int64_t K = Ks[ki];
    for (int64_t r = 0; r < ROWS; ++r) {
      const double scale = r % 4 == 0 ? 30.0 : r % 4 == 1 ? 3.0 : r % 4 == 2 ? 0.1 : 0.0;
      const double gap = 60.0 * unif(&s);
      for (int64_t k = 0; k < K; ++k) z[r * K + k] = (float)(scale * gauss(&s));
      if (r % 4 == 3) z[r * K + (r % K)] = (float)gap; /* one large logit, the rest 0 */
      if (r % 13 == 5) z[r * K + (K - 1)] = z[r * K]; /* a tie at the maximum, maybe */
    }
    effml__stage_block b;
    memset(&b, 0, sizeof b);
    b.base = z;
    b.rs = K;
    b.cs = 1;
    b.K = K;
    b.m = 1;
    b.route = 1;
    b.score = rs;
    b.pred = pred;
    b.isa = effml_core_isa_level();
    ck_assert_int_eq(effml__stage_rows(&b, 0, ROWS), -1);
    const double er = 1e-5 + 2.0 * (double)K * 0x1.0p-24, ea = (double)K * 0x1.0p-120;
    double worst = 0.0;
    for (int64_t r = 0; r < ROWS; ++r) {
      msp[r] = effml__route_exact_msp(&b, r);
      long double zmax = z[r * K], se = 0.0L;
      for (int64_t k = 0; k < K; ++k)
        if (z[r * K + k] > zmax) zmax = z[r * K + k];
      int64_t first = -1;
      for (int64_t k = 0; k < K; ++k) {
        if (first < 0 && z[r * K + k] == zmax) { /* the first maximum is left out */
          first = k;
          continue;
        }
        se += expl((long double)z[r * K + k] - zmax);
      }
      const double err = fabs(rs[r] - (double)se);
      if (!(err <= er * (double)se + ea)) ck_abort_msg("K %lld row %lld: s~ %.9g, s %.9Lg", (long long)K,
                    (long long)r, rs[r], se);
      if (se > 1e-30L && err / (double)se > worst) worst = err / (double)se;
      if (pred[r] != (int32_t)first) ck_abort_msg("K %lld row %lld: argmax %d, first maximum %lld", (long long)K, (long long)r, (int)pred[r], (long long)first);
    }
    ck_assert_msg(worst < 0.5 * er, "K %lld: relative error %.3g vs stated %.3g", (long long)K, worst, er);
    int64_t undecided = 0, decided = 0;
    for (int64_t t = 0; t < 200; ++t) {
      const double base = msp[(t * 7919) % ROWS];
      const double vs[4] = {base, nextafter(base, 0.0), nextafter(base, 2.0), t % 2 ? 1.0 : 1.0 - 0x1.0p-53};
      for (int vi = 0; vi < 4; ++vi)
        for (int32_t rule = EFFML_CASCADE_EXIT_THRESHOLD; rule <= EFFML_CASCADE_EXIT_WINDOW; ++rule) {
          const double lo = vs[vi], hi = rule == EFFML_CASCADE_EXIT_WINDOW ? msp[(t * 104729 + 3) % ROWS] : INFINITY;
          effml__route_cuts cuts;
          effml__route_cuts_init(&cuts, rule, lo < hi ? lo : hi, lo < hi ? hi : lo, K);
          for (int64_t r = 0; r < ROWS; ++r) {
            const int d = effml__route_decide(&cuts, rs[r]);
            if (d < 0) {
              ++undecided;
              continue;
            }
            ++decided;
            if (d != effml__route_exit_exact(&cuts, msp[r]))
              ck_abort_msg(
                          "K %lld rule %d [%.17g, %.17g]: row %lld s~ %.9g MSP %.17g decided %d",
                          (long long)K, (int)rule, cuts.a, cuts.b, (long long)r, rs[r], msp[r], d);
          }
        }
    }
    /* the bounds sit on rows, so each cut leaves the rows within ~1e-5 (relatively, in s) of
     * its bound undecided, and a bound at 1 those with s in [2^-54, ~(4K + 16) 2^-53] */
    ck_assert_msg(undecided < decided / 20, "K %lld: %lld undecided of %lld", (long long)K,
                  (long long)undecided, (long long)(decided + undecided));
  }
  free(z);
  free(rs);
  free(msp);
  free(pred);
}
END_TEST

/* The routing-only exit fused with the routing score splits over threads above
 * EFFML__CASCADE_ROUTE_GRAIN rows a thread, each compacting its own range: 1, 2 and 3
 * threads give the outputs of the unfused path (the same run asked for the exact score). */
START_TEST(test_fused_exit_threads) {
  enum { KC = 10 };
  const int64_t N = 2 * EFFML__CASCADE_ROUTE_GRAIN + 12345;
  effml_context *ctx = tu_ctx(5);
  effml_tensor *x0 = tu_f32(ctx, N, KC, NULL), *x1 = tu_f32(ctx, N, KC, NULL);
  tu_fill_uniform(x0, 1, -3.0f, 3.0f);
  tu_fill_uniform(x1, 2, -3.0f, 3.0f);
  effml_tensor *pr[2], *st[2], *sc = NULL;
  for (int i = 0; i < 2; ++i) {
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &N, &pr[i]), EFFML_OK);
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 1, &N, &st[i]), EFFML_OK);
  }
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 1, &N, &sc), EFFML_OK);
  for (int32_t agg = EFFML_CASCADE_AGG_MEAN; agg <= EFFML_CASCADE_AGG_LAST; ++agg) {
    effml_cascade_options opt;
    effml_cascade_options_init(&opt);
    opt.num_classes = KC;
    opt.aggregation = agg;
    effml_cascade *c = NULL;
    ck_assert_int_eq(effml_cascade_create(ctx, &opt, &c), EFFML_OK);
    ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, x0, 1.0), EFFML_OK);
    ck_assert_int_eq(effml_cascade_add_stage_logits(ctx, c, x1, 2.0), EFFML_OK);
    effml_cascade_threshold_options cal;
    effml_cascade_threshold_options_init(&cal); /* window, coverage 0.8 */
    const effml_tensor *val[1] = {x1};
    ck_assert_int_eq(effml_cascade_select_thresholds(ctx, c, 1, val, NULL, &cal), EFFML_OK);
    effml_cascade_workspace *ws = NULL;
    ck_assert_int_eq(effml_cascade_workspace_create(ctx, c, &ws), EFFML_OK);
    ck_assert_int_eq(effml_context_set_num_threads(ctx, 1), EFFML_OK);
    ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N, NULL, pr[0], sc, st[0], NULL), EFFML_OK);
    const int64_t reach = effml_cascade_workspace_reach_count(ws, 1);
    ck_assert_int_gt(reach, N / 20);
    ck_assert_int_lt(reach, N / 2);
    for (int32_t threads = 1; threads <= 3; ++threads) {
      ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
      ck_assert_int_eq(effml_cascade_run(ctx, c, ws, N, NULL, pr[1], NULL, st[1], NULL), EFFML_OK);
      ck_assert_int_eq(effml_cascade_workspace_reach_count(ws, 1), reach);
      ck_assert_msg(memcmp(effml_tensor_data(pr[0]), effml_tensor_data(pr[1]), (size_t)N * 4) == 0,
                    "agg %d, %d threads: pred differs", (int)agg, (int)threads);
      ck_assert_msg(memcmp(effml_tensor_data(st[0]), effml_tensor_data(st[1]), (size_t)N * 4) == 0,
                    "agg %d, %d threads: exit stage differs", (int)agg, (int)threads);
    }
    effml_cascade_workspace_free(ws);
    effml_cascade_free(c);
  }
  effml_tensor *all[] = {x0, x1, pr[0], pr[1], st[0], st[1], sc};
  for (int i = 0; i < 7; ++i) effml_tensor_free(all[i]);
  effml_context_free(ctx);
}
END_TEST

/* The routed exit of stage-0 rows (effml__route_exit_identity): the AVX-512 path (8 rows a
 * register, cuts as f64 compares, survivors compressed) and the portable loop give the same
 * survivors in order and the same pred and stage of every row, on runs starting at any row
 * and of any length (remainders), and every decision is the exact rule's on the exact MSP,
 * with bounds placed at rows' own exact MSPs and their neighbours (undecided lanes) and at
 * values that decide every row one way. */
START_TEST(test_route_exit_identity) {
  enum { ROWS = 1203, K5 = 5 };
  uint64_t s = 777;
  float *z = malloc(sizeof(float) * ROWS * K5);
  double *sc = malloc(sizeof(double) * ROWS), *msp = malloc(sizeof(double) * ROWS);
  int32_t *pr = malloc(sizeof(int32_t) * ROWS);
  int32_t *op[2], *os[2];
  int64_t *rows[2];
  for (int v = 0; v < 2; ++v) {
    op[v] = malloc(sizeof(int32_t) * ROWS);
    os[v] = malloc(sizeof(int32_t) * ROWS);
    rows[v] = malloc(sizeof(int64_t) * ROWS);
  }
  for (int64_t i = 0; i < ROWS * K5; ++i) z[i] = (float)((i / K5) % 3 == 0 ? 8.0 * gauss(&s) : gauss(&s));
  effml__stage_block b;
  memset(&b, 0, sizeof b);
  b.base = z;
  b.rs = K5;
  b.cs = 1;
  b.K = K5;
  b.m = 1;
  b.route = 1;
  b.score = sc;
  b.pred = pr;
  b.isa = effml_core_isa_level();
  ck_assert_int_eq(effml__stage_rows(&b, 0, ROWS), -1);
  for (int64_t r = 0; r < ROWS; ++r) msp[r] = effml__route_exact_msp(&b, r);
  int64_t undecided = 0;
  for (int t = 0; t < 24; ++t) {
    const double base = msp[(t * 389) % ROWS], other = msp[(t * 211 + 5) % ROWS];
    double a = t % 3 == 0 ? base : t % 3 == 1 ? nextafter(base, 0.0) : nextafter(base, 2.0);
    double hi = other > a ? other : a;
    if (t >= 20) a = t == 20 ? -1.0 : t == 21 ? 2.0 : 0.0, hi = a;
    effml__route_cuts cuts;
    effml__route_cuts_init(&cuts, t % 2 ? EFFML_CASCADE_EXIT_THRESHOLD : EFFML_CASCADE_EXIT_WINDOW, a, hi, K5);
    for (int64_t r = 0; r < ROWS; ++r) undecided += effml__route_decide(&cuts, sc[r]) < 0;
    const int64_t run = t % 4 == 0 ? 512 : t % 4 == 1 ? 37 : t % 4 == 2 ? 8 : ROWS;
    int64_t w[2] = {0, 0};
    for (int v = 0; v < 2; ++v) {
      b.isa = v ? effml_core_isa_level() : EFFML_CORE_ISA_PORTABLE;
      for (int64_t j0 = 0; j0 < ROWS; j0 += run) {
        const int64_t j1 = j0 + run < ROWS ? j0 + run : ROWS;
        w[v] = effml__route_exit_identity(&b, &cuts, sc + j0, pr + j0, j0, j1, 3, op[v], os[v], rows[v], w[v]);
      }
    }
    int64_t want = 0;
    for (int64_t r = 0; r < ROWS; ++r) {
      ck_assert_int_eq(op[0][r], pr[r]);
      ck_assert_int_eq(op[1][r], pr[r]);
      ck_assert_int_eq(os[0][r], 3);
      ck_assert_int_eq(os[1][r], 3);
      if (!effml__route_exit_exact(&cuts, msp[r])) {
        ck_assert_msg(want < w[0] && rows[0][want] == r && rows[1][want] == r,
                      "bound %d: row %lld goes on, survivor %lld is %lld / %lld", t, (long long)r,
                      (long long)want, (long long)rows[0][want], (long long)rows[1][want]);
        ++want;
      }
    }
    ck_assert_int_eq(w[0], want);
    ck_assert_int_eq(w[1], want);
    if (t >= 20) { /* window [-1, -1], [0, 0] and threshold 0: every row exits; threshold 2: none */
      const int64_t all_or_none = t == 21 ? ROWS : 0;
      ck_assert_int_eq(want, all_or_none);
    }
  }
  ck_assert_int_ge(undecided, 16);
  for (int v = 0; v < 2; ++v) {
    free(op[v]);
    free(os[v]);
    free(rows[v]);
  }
  free(z);
  free(sc);
  free(msp);
  free(pr);
}
END_TEST

int main(void) {
  Suite *su = suite_create("internal_cascade");
  TCase *tc = tcase_create("route");
  tcase_add_test(tc, test_route_kernels_bit_identical);
  tcase_add_test(tc, test_tail_bound_and_exact_argmax);
  tcase_add_loop_test(tc, test_calibrated_coverage_is_exact, 0, 3);
  tcase_add_test(tc, test_route_cuts_certified);
  tcase_add_test(tc, test_fused_exit_threads);
  tcase_add_test(tc, test_route_exit_identity);
  suite_add_tcase(su, tc);
  return tu_run(su) ? 1 : 0;
}
