/* O(1) draws from a discrete distribution: Walker's alias method with Vose's
 * numerically stable construction (Vose, IEEE TSE 1991).
 *
 * One 64-bit draw per sample: the high 32 bits pick a column by multiply-
 * shift (bias below n / 2^32), the low 32 bits are compared with the column's
 * 32-bit fixed-point threshold.  The generator is the library's xoshiro256**
 * (the same stream as effml__rng_u64), inlined here for speed. */
#include <math.h>
#include <string.h>

#include "sampler_internal.h"

typedef struct {
  uint32_t thresh; /* accept the column iff low32 < thresh */
  uint32_t alias;  /* otherwise take this index */
} alias_entry;

struct effml_sampler_alias {
  effml_context *ctx;
  int64_t n;
  alias_entry *table;
  effml__rng rng;
};

effml_status effml_sampler_alias_create(effml_context *ctx, const double *weights, int64_t n,
                                        uint64_t seed, effml_sampler_alias **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, weights);
  EFFML__CHECK_NULL(ctx, out);
  if (n < 1 || n > (int64_t)UINT32_MAX)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "n=%lld must be in [1, 2^32 - 1]", (long long)n);
  double total = 0;
  int64_t first_pos = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (!(weights[i] >= 0) || !isfinite(weights[i]))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "weights[%lld]=%g must be finite and >= 0",
                        (long long)i, weights[i]);
    total += weights[i];
    if (first_pos < 0 && weights[i] > 0) first_pos = i;
  }
  if (!(total > 0) || !isfinite(total))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "weights sum to %g, expected a finite value > 0", total);
  effml_sampler_alias *s = (effml_sampler_alias *)effml__calloc(ctx, 1, sizeof *s);
  double *scaled = (double *)effml__malloc(ctx, (size_t)n * sizeof(double));
  int64_t *work = (int64_t *)effml__malloc(ctx, (size_t)n * sizeof(int64_t));
  if (s) s->table = (alias_entry *)effml__malloc(ctx, (size_t)n * sizeof(alias_entry));
  if (!s || !s->table || !scaled || !work) {
    if (s) effml__free(ctx, s->table);
    effml__free(ctx, s);
    effml__free(ctx, scaled);
    effml__free(ctx, work);
    return effml__err(ctx, EFFML_E_NOMEM, "out of memory for an alias table of %lld entries",
                      (long long)n);
  }
  /* Vose: small entries fill from the front of `work`, large from the back. */
  int64_t ns = 0, nl = 0;
  for (int64_t i = 0; i < n; ++i) {
    scaled[i] = weights[i] / total * (double)n;
    if (scaled[i] < 1.0)
      work[ns++] = i;
    else
      work[n - 1 - nl++] = i;
  }
  while (ns > 0 && nl > 0) {
    int64_t sm = work[--ns], lg = work[n - nl];
    double t = ldexp(scaled[sm], 32);
    s->table[sm].thresh = t >= 4294967295.0 ? UINT32_MAX : (uint32_t)t;
    s->table[sm].alias = (uint32_t)lg;
    scaled[lg] = (scaled[lg] + scaled[sm]) - 1.0;
    if (scaled[lg] < 1.0) {
      --nl;
      work[ns++] = lg;
    }
  }
  /* Leftovers are full columns up to rounding; a zero weight is never full. */
  for (int64_t t = 0; t < ns; ++t) {
    int64_t i = work[t];
    s->table[i].thresh = weights[i] > 0 ? UINT32_MAX : 0;
    s->table[i].alias = (uint32_t)(weights[i] > 0 ? i : first_pos);
  }
  for (int64_t t = 0; t < nl; ++t) {
    int64_t i = work[n - 1 - t];
    s->table[i].thresh = UINT32_MAX;
    s->table[i].alias = (uint32_t)i;
  }
  effml__free(ctx, scaled);
  effml__free(ctx, work);
  s->ctx = ctx;
  s->n = n;
  effml__rng_seed(&s->rng, seed, 0x414c494153ULL);
  *out = s;
  return EFFML_OK;
}

void effml_sampler_alias_free(effml_sampler_alias *sampler) {
  if (sampler == NULL) return;
  effml_context *ctx = sampler->ctx;
  effml__free(ctx, sampler->table);
  effml__free(ctx, sampler);
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

effml_status effml_sampler_alias_draw(effml_context *ctx, effml_sampler_alias *sampler,
                                      int64_t count, int64_t *out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, sampler);
  if (count < 0) return effml__err(ctx, EFFML_E_INVALID_ARG, "count=%lld must be >= 0", (long long)count);
  if (count > 0) EFFML__CHECK_NULL(ctx, out);
  uint64_t s0 = sampler->rng.s[0], s1 = sampler->rng.s[1], s2 = sampler->rng.s[2],
           s3 = sampler->rng.s[3];
  const alias_entry *tab = sampler->table;
  const uint64_t n = (uint64_t)sampler->n;
  for (int64_t i = 0; i < count; ++i) {
    uint64_t x = rotl64(s1 * 5, 7) * 9; /* xoshiro256** */
    uint64_t t = s1 << 17;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl64(s3, 45);
    uint32_t col = (uint32_t)(((x >> 32) * n) >> 32);
    alias_entry e = tab[col];
    out[i] = (uint32_t)x < e.thresh ? (int64_t)col : (int64_t)e.alias;
  }
  sampler->rng.s[0] = s0;
  sampler->rng.s[1] = s1;
  sampler->rng.s[2] = s2;
  sampler->rng.s[3] = s3;
  return EFFML_OK;
}
