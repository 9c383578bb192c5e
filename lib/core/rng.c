/* The one random generator: xoshiro256** (Blackman & Vigna 2018) seeded by
 * splitmix64.  Same seed => same stream on every platform. */
#include <math.h>

#include "internal.h"

uint64_t effml__mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void effml__rng_seed(effml__rng *r, uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ effml__mix64(stream + 0x632be59bd9b4e019ULL);
  for (int i = 0; i < 4; ++i) {
    x += 0x9e3779b97f4a7c15ULL;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    r->s[i] = z ^ (z >> 31);
  }
  if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0) r->s[0] = 1;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t effml__rng_u64(effml__rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double effml__rng_uniform(effml__rng *r) {
  return (double)(effml__rng_u64(r) >> 11) * 0x1.0p-53;
}

uint64_t effml__rng_below(effml__rng *r, uint64_t n) {
  if (n <= 1) return 0;
  /* Lemire's nearly divisionless method with rejection. */
  uint64_t x = effml__rng_u64(r);
  __uint128_t m = (__uint128_t)x * n;
  uint64_t l = (uint64_t)m;
  if (l < n) {
    uint64_t t = (0 - n) % n;
    while (l < t) {
      x = effml__rng_u64(r);
      m = (__uint128_t)x * n;
      l = (uint64_t)m;
    }
  }
  return (uint64_t)(m >> 64);
}

double effml__rng_normal(effml__rng *r) {
  for (;;) {
    double u = 2.0 * effml__rng_uniform(r) - 1.0;
    double v = 2.0 * effml__rng_uniform(r) - 1.0;
    double s = u * u + v * v;
    if (s > 0.0 && s < 1.0) return u * sqrt(-2.0 * log(s) / s);
  }
}

void effml__fill_uniform_sym_f32(effml__rng *r, float *p, int64_t n, double bound) {
  for (int64_t i = 0; i < n; ++i) p[i] = (float)(bound * (2.0 * effml__rng_uniform(r) - 1.0));
}

void effml__fill_normal_f32(effml__rng *r, float *p, int64_t n, double sd) {
  for (int64_t i = 0; i < n; ++i) p[i] = (float)(sd * effml__rng_normal(r));
}
