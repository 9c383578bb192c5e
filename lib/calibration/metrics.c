/* Calibration metrics: reliability bins, ECE (equal-width and adaptive bins,
 * L1 or L2), multiclass Brier score.  Bins depend on confidence values only,
 * so the results do not depend on the order of the samples. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calibration_internal.h"

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sort indices by (s, ok) ascending; merge sort, O(n log n), no global state. */
static int pair_less(const double *s, const unsigned char *ok, int64_t a, int64_t b) {
  return s[a] < s[b] || (s[a] == s[b] && ok[a] < ok[b]);
}

static void sort_pairs(const double *s, const unsigned char *ok, int64_t n, int64_t *ord,
                       int64_t *tmp) {
  for (int64_t i = 0; i < n; ++i) ord[i] = i;
  /* insertion sort for short runs of 16, then bottom-up merges through a scratch half */
  for (int64_t lo = 0; lo < n; lo += 16) {
    const int64_t hi = lo + 16 < n ? lo + 16 : n;
    for (int64_t i = lo + 1; i < hi; ++i) {
      const int64_t v = ord[i];
      int64_t j = i;
      while (j > lo && pair_less(s, ok, v, ord[j - 1])) ord[j] = ord[j - 1], --j;
      ord[j] = v;
    }
  }
  for (int64_t w = 16; w < n; w *= 2) {
    for (int64_t lo = 0; lo < n; lo += 2 * w) {
      const int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
      int64_t a = lo, b = mid, k = lo;
      while (a < mid && b < hi) tmp[k++] = pair_less(s, ok, ord[b], ord[a]) ? ord[b++] : ord[a++];
      while (a < mid) tmp[k++] = ord[a++];
      while (b < hi) tmp[k++] = ord[b++];
    }
    memcpy(ord, tmp, (size_t)n * sizeof(int64_t));
  }
}

/* Per-bin sums: count, Σ conf, Σ correct; upper edges. */
static effml_status bin_sums(effml_context *ctx, const char *fn, const effml_tensor *confidences,
                             const effml_tensor *correct, int32_t num_bins, int32_t binning,
                             int64_t *n_out, int64_t *cnt, double *sconf, double *sacc,
                             double *upper) {
  if (num_bins < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: num_bins=%d must be >= 1", fn, (int)num_bins);
  if (binning != EFFML_CALIBRATION_BINS_EQUAL_WIDTH && binning != EFFML_CALIBRATION_BINS_ADAPTIVE)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: binning=%d is not EFFML_CALIBRATION_BINS_EQUAL_WIDTH (0) or _ADAPTIVE (1)",
                      fn, (int)binning);
  double *s = NULL, *sorted = NULL;
  unsigned char *ok = NULL;
  int64_t n = 0;
  EFFML__TRY(effml__cal_read_vector(ctx, fn, confidences, "confidences", -1, &s, &n));
  effml_status st = effml__cal_read_flags(ctx, fn, correct, "correct", n, &ok);
  for (int64_t i = 0; i < n && st == EFFML_OK; ++i)
    if (!(s[i] >= 0.0 && s[i] <= 1.0))
      st = effml__err(ctx, EFFML_E_INVALID_ARG, "%s: confidences[%lld]=%g is outside [0, 1]", fn,
                      (long long)i, s[i]);
  const int64_t B = num_bins;
  if (st == EFFML_OK) {
    if (binning == EFFML_CALIBRATION_BINS_EQUAL_WIDTH) {
      for (int64_t b = 0; b < B; ++b) upper[b] = (double)(b + 1) / (double)B;
    } else {
      sorted = (double *)effml__alloc_or_err(ctx, (size_t)n * sizeof(double), "sorted confidences");
      if (!sorted) st = EFFML_E_NOMEM;
      if (st == EFFML_OK) {
        for (int64_t i = 0; i < n; ++i) sorted[i] = s[i];
        qsort(sorted, (size_t)n, sizeof(double), cmp_double);
        for (int64_t b = 0; b < B; ++b) {
          /* u_b = s_(ceil((b+1) n / B)), 1-based order statistic */
          int64_t k = ((b + 1) * n + B - 1) / B;
          if (k < 1) k = 1;
          upper[b] = sorted[k - 1];
        }
      }
    }
  }
  /* accumulate in ascending (confidence, correct) order: the sums, hence the results, are
   * bit-identical for every order of the same pairs */
  int64_t *ord = NULL;
  if (st == EFFML_OK) {
    ord = (int64_t *)effml__alloc_or_err(ctx, (size_t)(2 * n) * sizeof(int64_t), "order");
    if (!ord) st = EFFML_E_NOMEM;
  }
  if (st == EFFML_OK) {
    sort_pairs(s, ok, n, ord, ord + n);
    for (int64_t b = 0; b < B; ++b) cnt[b] = 0, sconf[b] = 0.0, sacc[b] = 0.0;
    for (int64_t r = 0; r < n; ++r) {
      const int64_t i = ord[r];
      int64_t b;
      if (binning == EFFML_CALIBRATION_BINS_EQUAL_WIDTH) {
        /* bin b = (b/B, (b+1)/B]: the first b with conf <= (b+1)/B */
        b = (int64_t)ceil(s[i] * (double)B) - 1;
        if (b < 0) b = 0;
        if (b > B - 1) b = B - 1;
        while (b > 0 && !(s[i] > (double)b / (double)B)) --b;
        while (b < B - 1 && s[i] > (double)(b + 1) / (double)B) ++b;
      } else {
        int64_t lo = 0, hi = B - 1; /* first b with s <= upper[b]; upper[B-1] = max */
        while (lo < hi) {
          const int64_t mid = (lo + hi) / 2;
          if (s[i] <= upper[mid]) hi = mid;
          else lo = mid + 1;
        }
        b = lo;
      }
      ++cnt[b];
      sconf[b] += s[i];
      sacc[b] += ok[i];
    }
    *n_out = n;
  }
  effml__free(ctx, s);
  effml__free(ctx, ok);
  effml__free(ctx, sorted);
  effml__free(ctx, ord);
  return st;
}

effml_status effml_calibration_reliability(effml_context *ctx, const effml_tensor *confidences,
                                           const effml_tensor *correct, int32_t num_bins,
                                           int32_t binning, int64_t *count,
                                           double *mean_confidence, double *accuracy,
                                           double *upper_edge) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_calibration_reliability";
  EFFML__CHECK_NULL(ctx, ctx);
  if (num_bins < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: num_bins=%d must be >= 1", fn, (int)num_bins);
  const size_t B = (size_t)num_bins;
  int64_t *cnt = (int64_t *)effml__alloc_or_err(ctx, B * sizeof(int64_t), "bins");
  double *buf = (double *)effml__alloc_or_err(ctx, 3 * B * sizeof(double), "bins");
  effml_status st = cnt && buf ? EFFML_OK : EFFML_E_NOMEM;
  int64_t n = 0;
  if (st == EFFML_OK)
    st = bin_sums(ctx, fn, confidences, correct, num_bins, binning, &n, cnt, buf, buf + B,
                  buf + 2 * B);
  if (st == EFFML_OK)
    for (size_t b = 0; b < B; ++b) {
      if (count) count[b] = cnt[b];
      if (mean_confidence) mean_confidence[b] = cnt[b] ? buf[b] / (double)cnt[b] : 0.0;
      if (accuracy) accuracy[b] = cnt[b] ? buf[B + b] / (double)cnt[b] : 0.0;
      if (upper_edge) upper_edge[b] = buf[2 * B + b];
    }
  effml__free(ctx, cnt);
  effml__free(ctx, buf);
  return st;
}

effml_status effml_calibration_ece(effml_context *ctx, const effml_tensor *confidences,
                                   const effml_tensor *correct, int32_t num_bins, int32_t binning,
                                   int32_t norm, double *ece) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_calibration_ece";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, ece);
  if (norm != 1 && norm != 2)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: norm=%d must be 1 or 2", fn, (int)norm);
  if (num_bins < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: num_bins=%d must be >= 1", fn, (int)num_bins);
  const size_t B = (size_t)num_bins;
  int64_t *cnt = (int64_t *)effml__alloc_or_err(ctx, B * sizeof(int64_t), "bins");
  double *buf = (double *)effml__alloc_or_err(ctx, 3 * B * sizeof(double), "bins");
  effml_status st = cnt && buf ? EFFML_OK : EFFML_E_NOMEM;
  int64_t n = 0;
  if (st == EFFML_OK)
    st = bin_sums(ctx, fn, confidences, correct, num_bins, binning, &n, cnt, buf, buf + B,
                  buf + 2 * B);
  if (st == EFFML_OK) {
    double e = 0.0;
    for (size_t b = 0; b < B; ++b) {
      if (!cnt[b]) continue;
      const double gap = fabs(buf[B + b] - buf[b]) / (double)cnt[b]; /* |Σacc − Σconf| / n_b */
      const double wgt = (double)cnt[b] / (double)n;
      e += norm == 1 ? wgt * gap : wgt * gap * gap;
    }
    *ece = norm == 1 ? e : sqrt(e);
  }
  effml__free(ctx, cnt);
  effml__free(ctx, buf);
  return st;
}

/* Row-sum tolerance of effml_calibration_brier() per class (calibration.h). */
#define BRIER_ROW_TOL 1e-6

effml_status effml_calibration_brier(effml_context *ctx, const effml_tensor *probs,
                                     const effml_tensor *labels, double *brier) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_calibration_brier";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, brier);
  double *p = NULL;
  int64_t n = 0, K = 0, *y = NULL;
  EFFML__TRY(effml__cal_read_matrix(ctx, fn, probs, "probs", -1, -1, &p, &n, &K));
  effml_status st = effml__cal_read_labels(ctx, fn, labels, "labels", n, K, &y);
  /* each probability in [0, 1]; each row sums to 1 within BRIER_ROW_TOL * K (header) */
  for (int64_t i = 0; i < n && st == EFFML_OK; ++i) {
    double sum = 0.0;
    for (int64_t k = 0; k < K && st == EFFML_OK; ++k) {
      const double v = p[i * K + k];
      if (!(v >= 0.0 && v <= 1.0))
        st = effml__err(ctx, EFFML_E_INVALID_ARG, "%s: probs[%lld, %lld]=%g is outside [0, 1]", fn,
                        (long long)i, (long long)k, v);
      sum += v;
    }
    const double tol = BRIER_ROW_TOL * (double)K;
    if (st == EFFML_OK && !(fabs(sum - 1.0) <= tol))
      st = effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: row %lld of probs sums to %.9g, not 1 (tolerance 1e-6 * K = %g)", fn,
                      (long long)i, sum, tol);
  }
  if (st == EFFML_OK) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < K; ++k) {
        const double d = p[i * K + k] - (k == y[i] ? 1.0 : 0.0);
        total += d * d;
      }
    *brier = total / (double)n;
  }
  effml__free(ctx, p);
  effml__free(ctx, y);
  return st;
}
