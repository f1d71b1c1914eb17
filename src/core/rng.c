/* xoshiro256** seeded through splitmix64: fast, and identical on every
 * platform, so seeded runs reproduce bit for bit. */
#include <math.h>

#include "nic/ctx.h"

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void nic_rng_seed(nic_rng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

uint64_t nic_rng_next(nic_rng *r) {
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

double nic_rng_uniform(nic_rng *r) {
  return (double)(nic_rng_next(r) >> 11) * 0x1.0p-53;
}

double nic_rng_normal(nic_rng *r) {
  /* Box-Muller; one value per call keeps the stream position simple. */
  double u1 = nic_rng_uniform(r), u2 = nic_rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t nic_rng_below(nic_rng *r, uint64_t n) {
  if (n == 0) return 0;
  uint64_t lim = UINT64_MAX - UINT64_MAX % n; /* reject to avoid modulo bias */
  uint64_t x;
  do x = nic_rng_next(r);
  while (x >= lim);
  return x % n;
}
