/* Cascade routing score: the one-register AVX-512 kernel that effml__stage_rows uses for raw
 * f32 rows of K <= 16 classes must give bit-identical scores and the same argmax as the
 * 4-lane kernel behind effml__route_score (on which thresholds are selected), for every K,
 * ties, wide ranges (exp clamped at -87) and signed zeros. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "../lib/cascade/cascade_internal.h"

START_TEST(test_route_kernels_bit_identical) {
  uint64_t s = 12345;
  enum { ROWS = 4000 };
  float *z = malloc(sizeof(float) * ROWS * 16);
  double *score = malloc(sizeof(double) * ROWS);
  int32_t *pred = malloc(sizeof(int32_t) * ROWS);
  for (int64_t K = 1; K <= 16; ++K) {
    for (int64_t i = 0; i < ROWS * K; ++i) {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      const double u = (double)(s >> 11) * 0x1.0p-53;
      const int64_t row = i / K;
      /* scales from 1e-3 to 300 (the clamp), rows of equal logits, signed zeros */
      const double scale = row % 5 == 0 ? 300.0 : row % 5 == 1 ? 1e-3 : 4.0;
      z[i] = row % 7 == 3 ? 1.25f : row % 11 == 4 ? ((i & 1) ? 0.0f : -0.0f)
                                                   : (float)(scale * (2.0 * u - 1.0));
    }
    effml__stage_block b;
    memset(&b, 0, sizeof b);
    b.base = z;
    b.rs = K;
    b.cs = 1;
    b.K = K;
    b.m = 1;
    b.route = 1;
    b.score = score;
    b.pred = pred;
    ck_assert_int_eq(effml__stage_rows(&b, 0, ROWS), -1);
    for (int64_t r = 0; r < ROWS; ++r) {
      double zd[16];
      for (int64_t k = 0; k < K; ++k) zd[k] = z[r * K + k];
      int32_t arg = -1;
      const double ref = effml__route_score(zd, K, &arg);
      ck_assert_msg(memcmp(&ref, &score[r], sizeof ref) == 0 && arg == pred[r],
                    "K %lld row %lld: score %.17g vs %.17g, argmax %d vs %d", (long long)K,
                    (long long)r, score[r], ref, (int)pred[r], (int)arg);
      ck_assert(ref > 0.0 && ref <= 1.0);
    }
    /* a non-finite logit is reported at its position */
    z[7 * K + (K - 1)] = NAN;
    ck_assert_int_eq(effml__stage_rows(&b, 0, ROWS), 7 * K + (K - 1));
  }
  free(z);
  free(score);
  free(pred);
}
END_TEST

int main(void) {
  Suite *su = suite_create("internal_cascade");
  TCase *tc = tcase_create("route");
  tcase_add_test(tc, test_route_kernels_bit_identical);
  suite_add_tcase(su, tc);
  return tu_run(su) ? 1 : 0;
}
