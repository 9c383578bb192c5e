

/* The within-set kNN (f32 candidates over the upper triangle, exact f64
 * re-rank, certificate, brute-force fallback) against the f64 GEMM search
 * effml__knn_f64 and against a brute-force f64 search, on data that stress
 * it: an offset far from the origin, exact duplicates (ties broken by
 * index), near-ties, set sizes around the 8 x 32 tile edges, outliers, every
 * kernel (f32 and i16, portable and AVX-512) and 1..3 threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "../lib/sampler/sampler_internal.h"

static double unif(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(*s >> 11) * 0x1.0p-53;
}

/* brute force: k nearest of row i among rows[0..nc) by (exact sqdist, position) */
static void brute(const double *x, const int64_t *rows, int64_t nc, int64_t d, int64_t k, int64_t i,
                  int64_t *out) {
  double best[64];
  for (int64_t t = 0; t < k; ++t) {
    best[t] = INFINITY;
    out[t] = INT64_MAX;
  }
  for (int64_t j = 0; j < nc; ++j) {
    if (j == i) continue;
    double s = 0;
    for (int64_t t = 0; t < d; ++t) {
      double u = x[rows[i] * d + t] - x[rows[j] * d + t];
      s += u * u;
    }
    if (!(s < best[k - 1] || (s == best[k - 1] && j < out[k - 1]))) continue;
    int64_t p = k - 1;
    while (p > 0 && (best[p - 1] > s || (best[p - 1] == s && out[p - 1] > j))) {
      best[p] = best[p - 1];
      out[p] = out[p - 1];
      --p;
    }
    best[p] = s;
    out[p] = j;
  }
}

static void check_case(int64_t n_all, int64_t d, int64_t k, double offset, int dup_every,
                       uint64_t seed, int64_t *fallbacks_out) {
  effml_context *ctx = tu_ctx(1);
  double *x = malloc(sizeof(double) * (size_t)(n_all * d));
  uint64_t s = seed;
  for (int64_t i = 0; i < n_all; ++i)
    for (int64_t t = 0; t < d; ++t)
      x[i * d + t] = (dup_every > 0 && i % dup_every == 2) ? x[(i - 2) * d + t]
                     : dup_every < 0 ? floor(3.0 * unif(&s)) /* integer grid: many equal distances */
                                     : offset + unif(&s);
  /* the set: every other row */
  int64_t nc = (n_all + 1) / 2;
  int64_t *rows = malloc(sizeof(int64_t) * (size_t)nc);
  for (int64_t i = 0; i < nc; ++i) rows[i] = 2 * i;
  int64_t *ref = malloc(sizeof(int64_t) * (size_t)(nc * k));
  int64_t *got = malloc(sizeof(int64_t) * (size_t)(nc * k));
  for (int64_t i = 0; i < nc; ++i) brute(x, rows, nc, d, k, i, ref + i * k);
  /* kernels: 0 f32 portable, 1 f32 AVX-512, 2 i16 portable, 3 i16 AVX-512 VNNI
   * (1 and 3 fall back to 0 and 2 on a CPU without them), -1 the library's
   * choice (last: *fallbacks_out reports it) */
  for (int isa = 0; isa <= 4; ++isa)
    for (int32_t threads = 1; threads <= 3; ++threads) {
      ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
      int64_t fb = -1;
      memset(got, 0xff, sizeof(int64_t) * (size_t)(nc * k));
      ck_assert_int_eq(effml__knn_within_f64_isa(ctx, x, rows, nc, d, k, got, &fb, isa == 4 ? -1 : isa),
                       EFFML_OK);
      ck_assert_int_ge(fb, 0);
      for (int64_t q = 0; q < nc * k; ++q)
        ck_assert_msg(got[q] == ref[q], "n=%lld d=%lld k=%lld isa=%d threads=%d: row %lld nbr %lld: %lld vs %lld",
                      (long long)n_all, (long long)d, (long long)k, isa, threads, (long long)(q / k),
                      (long long)(q % k), (long long)got[q], (long long)ref[q]);
      if (fallbacks_out) *fallbacks_out = fb;
    }
  /* the GEMM path on the gathered set gives the same answer */
  double *xs = malloc(sizeof(double) * (size_t)(nc * d));
  int64_t *self = malloc(sizeof(int64_t) * (size_t)nc);
  for (int64_t i = 0; i < nc; ++i) {
    memcpy(xs + i * d, x + rows[i] * d, sizeof(double) * (size_t)d);
    self[i] = i;
  }
  if (dup_every == 0) { /* (the GEMM path is not certified for long runs of exact ties) */
    ck_assert_int_eq(effml__knn_f64(ctx, xs, nc, xs, nc, d, k, self, 0, got, NULL), EFFML_OK);
    for (int64_t q = 0; q < nc * k; ++q) ck_assert_int_eq(got[q], ref[q]);
  }
  free(xs);
  free(self);
  free(x);
  free(rows);
  free(ref);
  free(got);
  effml_context_free(ctx);
}

START_TEST(test_within_random) {
  int64_t fb = -1;
  check_case(1000, 32, 5, 0.0, 0, 1, &fb);
  ck_assert_int_lt(fb, 25); /* generic data: the certificate almost always holds */
  check_case(77, 5, 3, 0.0, 0, 2, NULL);   /* odd sizes: partial tiles */
  check_case(18, 3, 8, 0.0, 0, 3, NULL);   /* K = nc - 1: every row a candidate */
  check_case(130, 1, 4, 0.0, 0, 4, NULL);  /* d = 1 */
  check_case(600, 40, 10, 0.0, 0, 5, NULL);
}
END_TEST

START_TEST(test_within_offset) {
  /* rows 1e6 from the origin: the centering keeps f32 keys meaningful */
  int64_t fb = -1;
  check_case(800, 16, 5, 1e6, 0, 6, &fb);
  ck_assert_int_lt(fb, 400);
}
END_TEST

START_TEST(test_within_duplicates) {
  /* set rows 2, 8, 14, ... are twins of rows 0, 6, 12, ...: distance-0 neighbours */
  check_case(900, 8, 5, 0.0, 6, 7, NULL);
  check_case(300, 4, 3, 0.0, 4, 8, NULL); /* every other set row has a twin */
  /* values on {0, 1, 2}^d: many exact ties in distance, broken by index */
  check_case(700, 3, 6, 0.0, -1, 9, NULL);
  check_case(500, 6, 5, 0.0, -1, 10, NULL);
}
END_TEST

START_TEST(test_within_i16_outlier) {
  /* One row 1e4 away from unit-cube data: the i16 kernel's quantization step
   * (max |c| / Q) then swamps the other rows' differences, so forced i16
   * certifies almost nothing and falls back to brute force -- still the
   * exact answer, as is the library's own choice.  Two outliers of opposite
   * sign in a second set. */
  for (int variant = 0; variant < 2; ++variant) {
    effml_context *ctx = tu_ctx(2);
    const int64_t nc = 900, d = 12, k = 5;
    double *x = malloc(sizeof(double) * (size_t)(nc * d));
    int64_t *rows = malloc(sizeof(int64_t) * (size_t)nc);
    int64_t *ref = malloc(sizeof(int64_t) * (size_t)(nc * k)), *got = malloc(sizeof(int64_t) * (size_t)(nc * k));
    uint64_t s = 31 + (uint64_t)variant;
    for (int64_t i = 0; i < nc * d; ++i) x[i] = unif(&s);
    x[17 * d + 3] = 1e4;
    if (variant) x[400 * d + 7] = -3e4;
    for (int64_t i = 0; i < nc; ++i) rows[i] = i;
    for (int64_t i = 0; i < nc; ++i) brute(x, rows, nc, d, k, i, ref + i * k);
    int64_t fb_forced = -1, fb_auto = -1;
    ck_assert_int_eq(effml__knn_within_f64_isa(ctx, x, rows, nc, d, k, got, &fb_forced, 2), EFFML_OK);
    ck_assert_int_eq(memcmp(got, ref, sizeof(int64_t) * (size_t)(nc * k)), 0);
    ck_assert_int_gt(fb_forced, nc / 2);
    memset(got, 0xff, sizeof(int64_t) * (size_t)(nc * k));
    ck_assert_int_eq(effml__knn_within_f64_isa(ctx, x, rows, nc, d, k, got, &fb_auto, -1), EFFML_OK);
    ck_assert_int_eq(memcmp(got, ref, sizeof(int64_t) * (size_t)(nc * k)), 0);
    ck_assert_int_ge(fb_auto, 0);
    free(x); free(rows); free(ref); free(got);
    effml_context_free(ctx);
  }
}
END_TEST

START_TEST(test_within_errors) {
  effml_context *ctx = tu_ctx(1);
  double x[12] = {0};
  int64_t rows[3] = {0, 1, 2}, nn[9];
  ck_assert_int_eq(effml__knn_within_f64(ctx, x, rows, 3, 4, 3, nn, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml__knn_within_f64(ctx, x, rows, 3, 4, 0, nn, NULL), EFFML_E_INVALID_ARG);
  /* all-equal rows: ties by index */
  ck_assert_int_eq(effml__knn_within_f64(ctx, x, rows, 3, 4, 2, nn, NULL), EFFML_OK);
  ck_assert_int_eq(nn[0], 1);
  ck_assert_int_eq(nn[1], 2);
  ck_assert_int_eq(nn[2], 0);
  ck_assert_int_eq(nn[3], 2);
  ck_assert_int_eq(nn[4], 0);
  ck_assert_int_eq(nn[5], 1);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_danger_knn_paths_identical) {
  /* Borderline-SMOTE-1's danger-row neighbours: the certified within-class
   * search and the f64 GEMM search return identical lists, for sparse and
   * dense danger sets, duplicates and 1..2 threads. */
  for (int32_t threads = 1; threads <= 2; ++threads)
    for (int variant = 0; variant < 3; ++variant) {
      effml_context *ctx = tu_ctx(4);
      ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
      const int64_t n_all = 700, d = 9, k = 5;
      double *x = malloc(sizeof(double) * (size_t)(n_all * d));
      uint64_t s = 77 + (uint64_t)variant;
      for (int64_t i = 0; i < n_all; ++i)
        for (int64_t t = 0; t < d; ++t)
          x[i * d + t] = variant == 2 && i % 9 == 4 ? x[(i - 3) * d + t] : 100.0 + unif(&s);
      const int64_t nc = n_all / 2;
      int64_t *rows = malloc(sizeof(int64_t) * (size_t)nc), *dpos = malloc(sizeof(int64_t) * (size_t)nc);
      for (int64_t i = 0; i < nc; ++i) rows[i] = 2 * i + 1;
      int64_t nd = 0;
      for (int64_t i = 0; i < nc; ++i)
        if (variant == 0 ? i % 7 == 3 : i % 3 != 0) dpos[nd++] = i;
      int64_t *a = malloc(sizeof(int64_t) * (size_t)(nd * k)), *b = malloc(sizeof(int64_t) * (size_t)(nd * k));
      ck_assert_int_eq(effml__danger_knn(ctx, x, d, rows, nc, dpos, nd, k, 0, a, 1), EFFML_OK);
      ck_assert_int_eq(effml__danger_knn(ctx, x, d, rows, nc, dpos, nd, k, 0, b, 0), EFFML_OK);
      for (int64_t t = 0; t < nd * k; ++t) {
        ck_assert_int_ne(a[t], dpos[t / k]);
        ck_assert_msg(a[t] == b[t], "variant %d, danger %lld, neighbour %lld: %lld vs %lld",
                      variant, (long long)(t / k), (long long)(t % k), (long long)a[t],
                      (long long)b[t]);
      }
      int64_t bf[8];
      brute(x, rows, nc, d, k, dpos[nd / 2], bf);
      for (int64_t t = 0; t < k; ++t) ck_assert_int_eq(a[(nd / 2) * k + t], bf[t]);
      free(x); free(rows); free(dpos); free(a); free(b);
      effml_context_free(ctx);
    }
}
END_TEST

START_TEST(test_knn_f64_each_level) {
  /* The blocked kNN (effml__knn_f64): the fused AVX-512 and AVX2 register-tile
   * searches and the portable tile search all return the brute-force answer (exact
   * squared distances, ties to the smaller index): reference counts around
   * the 16-wide panels and the 2048-row blocks, queries with and without a
   * self index, k from 1 to past the panel width, data far from the origin,
   * exact duplicates and grid data full of ties, 1 and 2 threads. */
  const int64_t nrefs[] = {2, 15, 17, 300, 2048 + 37};
  for (size_t a = 0; a < sizeof nrefs / sizeof nrefs[0]; ++a)
    for (int kind = 0; kind < 3; ++kind)
      for (int32_t threads = 1; threads <= 2; ++threads) {
        const int64_t nr = nrefs[a], d = kind == 2 ? 3 : 7, nq = nr < 200 ? nr : 200;
        effml_context *ctx = tu_ctx(0);
        ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
        double *x = malloc(sizeof(double) * (size_t)(nr * d));
        uint64_t s = 1234 + (uint64_t)(a * 7 + (size_t)kind);
        for (int64_t i = 0; i < nr; ++i)
          for (int64_t t = 0; t < d; ++t) {
            const double u = unif(&s);
            x[i * d + t] = kind == 0 ? 1000.0 + u               /* far from the origin */
                           : kind == 1 ? (i % 5 == 3 ? x[(i - 2) * d + t] : u) /* duplicates */
                                       : floor(4.0 * u);        /* grid: ties */
          }
        int64_t *self = malloc(sizeof(int64_t) * (size_t)nq), rows[4096];
        for (int64_t i = 0; i < nr; ++i) rows[i] = i;
        for (int64_t i = 0; i < nq; ++i) self[i] = (i * 13) % nr;
        double *q = malloc(sizeof(double) * (size_t)(nq * d));
        for (int64_t i = 0; i < nq; ++i) memcpy(q + i * d, x + self[i] * d, sizeof(double) * (size_t)d);
        const int64_t kmax = nr - 1 < 61 ? nr - 1 : 61;
        const int64_t kk[3] = {1, kmax < 5 ? kmax : 5, kmax};
        for (int ki = 0; ki < 3; ++ki) {
          const int64_t k = kk[ki];
          int64_t *got = malloc(sizeof(int64_t) * (size_t)(nq * k)), want[64];
          double *dist = malloc(sizeof(double) * (size_t)(nq * k));
          for (int lvl = EFFML_CORE_ISA_PORTABLE; lvl <= effml_context_isa_level(NULL); ++lvl) {
            ck_assert_int_eq(effml_context_set_isa_level(ctx, lvl), EFFML_OK);
            ck_assert_int_eq(effml__knn_f64(ctx, x, nr, q, nq, d, k, self, 0, got, dist), EFFML_OK);
            for (int64_t i = 0; i < nq; ++i) {
              brute(x, rows, nr, d, k, self[i], want);
              for (int64_t t = 0; t < k; ++t)
                ck_assert_msg(got[i * k + t] == want[t],
                              "refs %lld kind %d k %lld level %d query %lld, neighbour %lld: %lld vs %lld",
                              (long long)nr, kind, (long long)k, lvl, (long long)i, (long long)t,
                              (long long)got[i * k + t], (long long)want[t]);
            }
          }
          free(got);
          free(dist);
        }
        free(x); free(self); free(q);
        effml_context_free(ctx);
      }
}
END_TEST

START_TEST(test_kmeans_assign_each_level) {
  /* k-means assignment (the 4 x 8 tile kernel, portable and AVX-512) against a
   * scalar loop: bit-identical squared distances (summed over the features in
   * order), nearest centre with ties to the smaller index (duplicated
   * centres), every centre count around the group edges and past the direct
   * limit (257: the kNN path), row counts not a multiple of 4, 1 and 2 threads. */
  const int64_t ks[] = {1, 2, 7, 8, 9, 31, 100, 256, 257};
  for (size_t a = 0; a < sizeof ks / sizeof ks[0]; ++a)
    for (int64_t d = 3; d <= 17; d += 14)
      for (int32_t threads = 1; threads <= 2; ++threads) {
        const int64_t k = ks[a], n = 4099 + (int64_t)a;
        effml_context *ctx = tu_ctx(3);
        ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
        double *x = malloc(sizeof(double) * (size_t)(n * d)), *c = malloc(sizeof(double) * (size_t)(k * d));
        uint64_t s = 11 + (uint64_t)(a * 31 + (size_t)d);
        for (int64_t i = 0; i < n * d; ++i) x[i] = 50.0 + unif(&s);
        for (int64_t j = 0; j < k; ++j)
          for (int64_t t = 0; t < d; ++t) /* every third centre repeats the one before */
            c[j * d + t] = j % 3 == 2 ? c[(j - 1) * d + t] : x[((j * 37) % n) * d + t];
        int64_t *lab = malloc(sizeof(int64_t) * (size_t)n);
        double *dist = malloc(sizeof(double) * (size_t)n);
        for (int isa = 0; isa <= 1; ++isa) {
          ck_assert_int_eq(effml__kmeans_assign_isa(ctx, c, k, x, n, d, 0, lab, dist, isa), EFFML_OK);
          for (int64_t i = 0; i < n; ++i) {
            double best = INFINITY;
            int64_t bj = -1;
            for (int64_t j = 0; j < k; ++j) {
              double q = 0;
              for (int64_t t = 0; t < d; ++t) {
                double u = x[i * d + t] - c[j * d + t];
                q += u * u;
              }
              if (q < best) {
                best = q;
                bj = j;
              }
            }
            ck_assert_msg(lab[i] == bj && dist[i] == best,
                          "k %lld d %lld isa %d row %lld: centre %lld (%.17g) vs %lld (%.17g)",
                          (long long)k, (long long)d, isa, (long long)i, (long long)lab[i],
                          dist[i], (long long)bj, best);
          }
        }
        /* a row equal to a duplicated centre: distance 0, the first copy */
        if (k >= 3) {
          memcpy(x, c + d, sizeof(double) * (size_t)d);
          ck_assert_int_eq(effml__kmeans_assign_isa(ctx, c, k, x, n, d, 0, lab, dist, 1), EFFML_OK);
          ck_assert_int_eq(lab[0], 1);
          ck_assert(dist[0] == 0.0);
        }
        free(x); free(c); free(lab); free(dist);
        effml_context_free(ctx);
      }
}
END_TEST

START_TEST(test_kmeans_runs_over_threads) {
  /* k-means with several runs on few rows runs whole runs on the context's
   * threads (each on its own scratch, no threads inside a run); the centres,
   * labels and the chosen run are those of the runs one after the other. */
  const int64_t n = 1500, d = 6, k = 40;
  double *x = malloc(sizeof(double) * (size_t)(n * d));
  uint64_t s = 321;
  for (int64_t i = 0; i < n * d; ++i) x[i] = unif(&s) + (double)((i / d) % 5);
  double *c1 = malloc(sizeof(double) * (size_t)(k * d)), *c2 = malloc(sizeof(double) * (size_t)(k * d));
  int64_t *l1 = malloc(sizeof(int64_t) * (size_t)n), *l2 = malloc(sizeof(int64_t) * (size_t)n);
  for (int64_t n_init = 1; n_init <= 7; n_init += 3) {
    effml_context *ctx = tu_ctx(0);
    ck_assert_int_eq(effml_context_set_num_threads(ctx, 1), EFFML_OK);
    ck_assert_int_eq(effml__kmeans(ctx, x, n, d, k, n_init, 300, 1e-4, 9, 2, 0, c1, l1), EFFML_OK);
    for (int32_t threads = 2; threads <= 3; ++threads) {
      ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
      ck_assert_int_eq(effml__kmeans(ctx, x, n, d, k, n_init, 300, 1e-4, 9, 2, 0, c2, l2), EFFML_OK);
      ck_assert_mem_eq(c1, c2, sizeof(double) * (size_t)(k * d));
      ck_assert_mem_eq(l1, l2, sizeof(int64_t) * (size_t)n);
    }
    effml_context_free(ctx);
  }
  free(x); free(c1); free(c2); free(l1); free(l2);
}
END_TEST

START_TEST(test_tomek_repeated_matches_rounds) {
  /* Repeated Tomek-link removal (kept neighbour lists, knn_shrink.c) gives
   * the rows of single rounds applied until none removes a row, each round a
   * fresh 1-NN search over the rows left; on a small integer grid (many
   * exact ties, broken by position) and on continuous data; with every class
   * targeted and with one class left alone; 1 and 2 threads. */
  for (int data = 0; data < 2; ++data)
    for (int tg = 0; tg < 2; ++tg)
      for (int32_t threads = 1; threads <= 2; ++threads) {
        effml_context *ctx = tu_ctx(0);
        ck_assert_int_eq(effml_context_set_num_threads(ctx, threads), EFFML_OK);
        const int64_t m = data ? 1200 : 700, d = data ? 3 : 2;
        double *x = malloc(sizeof(double) * (size_t)(m * d));
        int64_t *cls = malloc(sizeof(int64_t) * (size_t)m);
        uint64_t s = 5 + (uint64_t)data;
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t t = 0; t < d; ++t) x[i * d + t] = data ? unif(&s) : floor(8.0 * unif(&s));
          const double u = unif(&s);
          cls[i] = u < 0.5 ? 0 : u < 0.8 ? 1 : 2;
        }
        const char targeted[3] = {1, 1, (char)!tg};
        int64_t *keep = malloc(sizeof(int64_t) * (size_t)m), nk = 0;
        ck_assert_int_eq(effml__tomek_pass(ctx, x, m, d, cls, targeted, 0, 1, keep, &nk), EFFML_OK);
        /* reference: single rounds on the gathered rows */
        int64_t *cur = malloc(sizeof(int64_t) * (size_t)m), *k1 = malloc(sizeof(int64_t) * (size_t)m);
        int64_t *cc = malloc(sizeof(int64_t) * (size_t)m), mc = m, rounds = 0;
        double *xc = malloc(sizeof(double) * (size_t)(m * d));
        for (int64_t i = 0; i < m; ++i) cur[i] = i;
        for (;;) {
          for (int64_t t = 0; t < mc; ++t) {
            memcpy(xc + t * d, x + cur[t] * d, sizeof(double) * (size_t)d);
            cc[t] = cls[cur[t]];
          }
          int64_t n1 = 0;
          ck_assert_int_eq(effml__tomek_pass(ctx, xc, mc, d, cc, targeted, 0, 0, k1, &n1), EFFML_OK);
          ++rounds;
          for (int64_t t = 0; t < n1; ++t) k1[t] = cur[k1[t]];
          memcpy(cur, k1, sizeof(int64_t) * (size_t)n1);
          if (n1 == mc) break;
          mc = n1;
        }
        ck_assert_int_ge(rounds, 3);
        ck_assert_msg(nk == mc, "data %d tg %d threads %d: %lld rows, rounds give %lld", data, tg,
                      threads, (long long)nk, (long long)mc);
        ck_assert_mem_eq(keep, cur, sizeof(int64_t) * (size_t)mc);
        free(x); free(cls); free(keep); free(cur); free(k1); free(cc); free(xc);
        effml_context_free(ctx);
      }
}
END_TEST

int main(void) {
  Suite *s = suite_create("internal_knn");
  TCase *tc = tcase_create("within");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, test_within_random);
  tcase_add_test(tc, test_within_offset);
  tcase_add_test(tc, test_within_duplicates);
  tcase_add_test(tc, test_within_i16_outlier);
  tcase_add_test(tc, test_within_errors);
  tcase_add_test(tc, test_danger_knn_paths_identical);
  tcase_add_test(tc, test_knn_f64_each_level);
  tcase_add_test(tc, test_kmeans_assign_each_level);
  tcase_add_test(tc, test_tomek_repeated_matches_rounds);
  tcase_add_test(tc, test_kmeans_runs_over_threads);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
