/* Augmentation of 8-bit RGB patches for training.
 *
 * Every random parameter of one patch is drawn first (aug_draw_params), in
 * a fixed order and only for the transforms that are on, so a patch's
 * result depends only on the configuration and its stream's seed. The
 * transforms then run in a fixed order: (scale jitter,) dihedral, HED
 * stain jitter, HSV/brightness/contrast, blur, noise. A transform at zero
 * strength is skipped entirely, so it is an exact identity. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

nic_augment nic_augment_none(void) {
  nic_augment a;
  memset(&a, 0, sizeof a);
  return a;
}

nic_augment nic_augment_default(void) {
  nic_augment a = nic_augment_none();
  a.dihedral = 1;
  a.zoom = 0.1f;       /* 0.91x .. 1.1x */
  a.hed_scale = 0.05f; /* Tellez et al. 2018 "HED-light" */
  a.hed_shift = 0.05f;
  a.brightness = 0.1f;
  a.contrast = 0.1f;
  a.saturation = 0.1f;
  a.hue = 0.03f; /* about +-11 degrees */
  a.blur_prob = 0.2f;
  a.blur_min = 0.1f;
  a.blur_max = 1.0f;
  a.noise = 3.0f;
  return a;
}

/* ---- seeds -------------------------------------------------------------------- */

static uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t data_mix_seed(uint64_t seed, uint64_t tag, uint64_t a, uint64_t b) {
  uint64_t h = splitmix(seed);
  h = splitmix(h ^ tag);
  h = splitmix(h ^ a);
  return splitmix(h ^ b);
}

uint64_t nic_data_sample_seed(uint64_t seed, int64_t epoch, int64_t j) {
  return data_mix_seed(seed, 0xA46, (uint64_t)epoch, (uint64_t)j);
}

/* ---- parameters ------------------------------------------------------------ */

/* U(lo, hi) as float. */
static float uniform(nic_rng *rng, double lo, double hi) {
  return (float)(lo + (hi - lo) * nic_rng_uniform(rng));
}

void aug_draw_params(const nic_augment *a, nic_rng *rng, aug_draw *d) {
  memset(d, 0, sizeof *d);
  d->zoom = 1.0;
  d->bright = d->contrast = d->sat = 1.0f;
  if (a->dihedral) d->dihedral = (int)nic_rng_below(rng, 8);
  if (a->zoom > 0) {
    double l = log1p(a->zoom);
    d->zoom = exp(l * (2 * nic_rng_uniform(rng) - 1)); /* log-uniform, symmetric */
  }
  if (a->hed_scale > 0 || a->hed_shift > 0) {
    d->hed = 1;
    for (int c = 0; c < 3; c++) {
      d->hed_a[c] = uniform(rng, -a->hed_scale, a->hed_scale);
      d->hed_b[c] = uniform(rng, -a->hed_shift, a->hed_shift);
    }
  }
  /* Factors below zero would invert the image: clamped to 0. */
  if (a->brightness > 0) d->bright = fmaxf(0, uniform(rng, 1 - a->brightness, 1 + a->brightness));
  if (a->contrast > 0) d->contrast = fmaxf(0, uniform(rng, 1 - a->contrast, 1 + a->contrast));
  if (a->saturation > 0) d->sat = fmaxf(0, uniform(rng, 1 - a->saturation, 1 + a->saturation));
  if (a->hue > 0) d->hue = uniform(rng, -a->hue, a->hue);
  if (a->blur_prob > 0 && a->blur_max > 0) {
    double p = nic_rng_uniform(rng);
    float sigma = uniform(rng, a->blur_min, a->blur_max);
    if (p < a->blur_prob) d->blur_sigma = sigma;
  }
  if (a->noise > 0) d->noise_sigma = uniform(rng, 0, a->noise);
}

/* ---- pixel loops -------------------------------------------------------------- */

/* GCC at -O2 vectorises only loops that need no scalar remainder (see
 * data_axpy), so the pixel loops below run over fixed blocks of BLOCK
 * pixels, a short last block being padded. Clamping before a float-to-int
 * conversion also stops it, so those are kept in separate loops. */
#define BLOCK 256

/* Calls fn on px in blocks of BLOCK pixels, the last one padded. */
static void for_blocks(uint8_t *px, int64_t n, void (*fn)(uint8_t *block, const void *arg),
                       const void *arg) {
  int64_t full = n / BLOCK * BLOCK;
  for (int64_t i = 0; i < full; i += BLOCK) fn(px + 3 * i, arg);
  if (full < n) {
    uint8_t tail[3 * BLOCK] = {0};
    size_t bytes = (size_t)(n - full) * 3;
    memcpy(tail, px + 3 * full, bytes);
    fn(tail, arg);
    memcpy(px + 3 * full, tail, bytes);
  }
}

/* Splits BLOCK interleaved pixels into channel planes, and back. */
static void planes_from(const uint8_t *px, float *r, float *g, float *b) {
  for (int i = 0; i < BLOCK; i++) r[i] = px[3 * i], g[i] = px[3 * i + 1], b[i] = px[3 * i + 2];
}

static void planes_to(uint8_t *px, const float *r, const float *g, const float *b) {
  for (int i = 0; i < BLOCK; i++) {
    px[3 * i] = data_to_u8(r[i]);
    px[3 * i + 1] = data_to_u8(g[i]);
    px[3 * i + 2] = data_to_u8(b[i]);
  }
}

/* ---- dihedral group ----------------------------------------------------------- */

void aug_dihedral(const uint8_t *in, uint8_t *out, int size, int k) {
  if ((k & 7) == 0) {
    memcpy(out, in, (size_t)size * (size_t)size * 3);
    return;
  }
  for (int y = 0; y < size; y++) {
    uint8_t *o = out + (size_t)y * (size_t)size * 3;
    for (int x = 0; x < size; x++, o += 3) {
      int sx = x, sy = y;
      if (k & 4) sx = y, sy = x;
      if (k & 1) sx = size - 1 - sx;
      if (k & 2) sy = size - 1 - sy;
      const uint8_t *p = in + ((size_t)sy * (size_t)size + (size_t)sx) * 3;
      o[0] = p[0], o[1] = p[1], o[2] = p[2];
    }
  }
}

/* The lookup is flip(transpose(p)). Without the transpose a flip is its own
 * inverse; with it, (F P)^-1 = P F = F' P where F' mirrors the other axis. */
int aug_dihedral_inverse(int k) {
  k &= 7;
  if (!(k & 4)) return k;
  return 4 | ((k & 1) << 1) | ((k & 2) >> 1);
}

/* ---- HED stain jitter ---------------------------------------------------------- */

/* Ruifrok & Johnston (2001) optical-density vectors of haematoxylin, eosin
 * and DAB (rows), normalised to unit length when used. */
static const double stain_rgb[3][3] = {
    {0.650, 0.704, 0.286}, {0.072, 0.990, 0.105}, {0.268, 0.570, 0.776}};

/* M (rows = unit stain vectors) and its inverse. */
static void stain_matrices(double m[3][3], double inv[3][3]) {
  for (int i = 0; i < 3; i++) {
    double n = sqrt(stain_rgb[i][0] * stain_rgb[i][0] + stain_rgb[i][1] * stain_rgb[i][1] +
                    stain_rgb[i][2] * stain_rgb[i][2]);
    for (int j = 0; j < 3; j++) m[i][j] = stain_rgb[i][j] / n;
  }
  double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
               m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
               m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      /* Cofactor of (j, i), i.e. the adjugate's entry (i, j). */
      int r0 = (j + 1) % 3, r1 = (j + 2) % 3, c0 = (i + 1) % 3, c1 = (i + 2) % 3;
      inv[i][j] = (m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]) / det;
    }
}

float aug_od(int v) {
  return (float)-log10((v + 1) / 256.0);
}

void aug_rgb_to_hed(const uint8_t rgb[3], float hed[3]) {
  double m[3][3], inv[3][3];
  stain_matrices(m, inv);
  /* Row-vector convention: od = c M, so c = od M^-1. */
  for (int j = 0; j < 3; j++) {
    double acc = 0;
    for (int c = 0; c < 3; c++) acc += aug_od(rgb[c]) * inv[c][j];
    hed[j] = (float)acc;
  }
}

/* 2^y for y in [-1, 9): 2^floor(y) exactly, as a product of powers chosen
 * by the bits of floor(y) + 1 (selects vectorise without AVX2's variable
 * shifts), times a degree-6 Taylor polynomial for the fraction (relative
 * error below 2e-5, under 0.01 grey levels). */
static inline float exp2_small(float y) {
  int k = (int)(y + 1.0f); /* floor(y) + 1, in 0..9 */
  float f = y + 1.0f - (float)k;
  float p = 1.0f +
            f * (0.69314718f +
                 f * (0.24022651f +
                      f * (0.05550411f + f * (0.00961813f + f * (0.00133336f + f * 0.00015404f)))));
  float s = (k & 1 ? 2.0f : 1.0f) * (k & 2 ? 4.0f : 1.0f) * (k & 4 ? 16.0f : 1.0f) *
            (k & 8 ? 256.0f : 1.0f);
  return p * s * 0.5f;
}

typedef struct hed_args {
  float od[256]; /* optical density of each byte value */
  float T[3][3], t[3];
} hed_args;

/* One output channel: v = 256 * 10^-(od T[:, j] + t[j]) - 1. */
static void hed_channel(float *restrict out, const float *restrict o0, const float *restrict o1,
                        const float *restrict o2, const hed_args *h, int j) {
  float a = h->T[0][j], b = h->T[1][j], c = h->T[2][j], d = h->t[j], y[BLOCK];
  /* 256 * 10^-o = 2^(8 - o log2(10)); outside [-1, 8.5] the result rounds
   * to 0 or clips at 255 anyway. */
  for (int i = 0; i < BLOCK; i++)
    y[i] = data_min(data_max(8.0f - 3.32192809f * (o0[i] * a + o1[i] * b + o2[i] * c + d), -1.0f),
                    8.5f);
  for (int i = 0; i < BLOCK; i++) out[i] = exp2_small(y[i]) - 1.0f;
}

static void hed_block(uint8_t *px, const void *arg) {
  const hed_args *h = arg;
  float o0[BLOCK], o1[BLOCK], o2[BLOCK], r[BLOCK], g[BLOCK], b[BLOCK];
  for (int i = 0; i < BLOCK; i++)
    o0[i] = h->od[px[3 * i]], o1[i] = h->od[px[3 * i + 1]], o2[i] = h->od[px[3 * i + 2]];
  hed_channel(r, o0, o1, o2, h, 0);
  hed_channel(g, o0, o1, o2, h, 1);
  hed_channel(b, o0, o1, o2, h, 2);
  planes_to(px, r, g, b);
}

void aug_hed(uint8_t *px, int64_t n, const float a[3], const float b[3]) {
  /* c' = c diag(1+a) + b with c = od M^-1 and od' = c' M is linear in od:
   *   od' = od T + t,  T = M^-1 diag(1+a) M,  t = b M,
   * so each pixel costs a 3x3 product and three exponentials. */
  double m[3][3], inv[3][3];
  stain_matrices(m, inv);
  hed_args h;
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      double acc = 0;
      for (int k = 0; k < 3; k++) acc += inv[i][k] * (1.0 + a[k]) * m[k][j];
      h.T[i][j] = (float)acc;
    }
  for (int j = 0; j < 3; j++) {
    double acc = 0;
    for (int k = 0; k < 3; k++) acc += b[k] * m[k][j];
    h.t[j] = (float)acc;
  }
  for (int v = 0; v < 256; v++) h.od[v] = aug_od(v);
  for_blocks(px, n, hed_block, &h);
}

/* ---- HSV, brightness, contrast ---------------------------------------------- */

typedef struct hsv_args {
  float bright, sat, hue6; /* hue6: the hue shift in sixths of a turn, in [0, 6) */
} hsv_args;

/* HSV with H in sixths of a turn, [0, 6): the sextant formulas without
 * branches, so they vectorise. Grey pixels (max == min) get H = 0, S = 0. */
static void hsv_block(uint8_t *px, const void *arg) {
  const hsv_args *a = arg;
  float r[BLOCK], g[BLOCK], b[BLOCK], h[BLOCK], s[BLOCK], v[BLOCK];
  planes_from(px, r, g, b);
  for (int i = 0; i < BLOCK; i++) {
    float mx = data_max(r[i], data_max(g[i], b[i])), mn = data_min(r[i], data_min(g[i], b[i])),
          d = mx - mn;
    float inv = 1.0f / (d > 0 ? d : 1.0f);
    float hh = mx == r[i]   ? (g[i] - b[i]) * inv
               : mx == g[i] ? (b[i] - r[i]) * inv + 2
                            : (r[i] - g[i]) * inv + 4; /* in [-1, 5) */
    hh += a->hue6;                                     /* in [-1, 11) */
    hh = hh < 0 ? hh + 6 : hh;
    h[i] = hh >= 6 ? hh - 6 : hh;
    s[i] = data_min(1.0f, (mx > 0 ? d / mx : 0) * a->sat);
    /* Brightness scales V; RGB is linear in V for fixed H and S, so this
     * equals scaling RGB, clipped when stored. */
    v[i] = mx * a->bright;
  }
  /* Back: channel n = V - V S clamp(min(k, 4 - k), 0, 1), k = (n + H) mod 6,
   * with n = 5, 3, 1 for R, G, B. */
  for (int i = 0; i < BLOCK; i++) {
    float vs = v[i] * s[i], k;
    k = 5 + h[i], k = k >= 6 ? k - 6 : k;
    r[i] = v[i] - vs * data_max(0.0f, data_min(data_min(k, 4 - k), 1.0f));
    k = 3 + h[i], k = k >= 6 ? k - 6 : k;
    g[i] = v[i] - vs * data_max(0.0f, data_min(data_min(k, 4 - k), 1.0f));
    k = 1 + h[i], k = k >= 6 ? k - 6 : k;
    b[i] = v[i] - vs * data_max(0.0f, data_min(data_min(k, 4 - k), 1.0f));
  }
  planes_to(px, r, g, b);
}

void aug_hsv(uint8_t *px, int64_t n, float bright, float sat, float hue) {
  hsv_args a = {bright, sat, (float)(6 * (hue - floor(hue)))};
  if (a.hue6 >= 6) a.hue6 = 0;
  for_blocks(px, n, hsv_block, &a);
}

/* Maps every byte through a table built from f(x) = x * scale + offset. */
static void apply_linear(uint8_t *px, int64_t n, float scale, float offset) {
  uint8_t lut[256];
  for (int x = 0; x < 256; x++) lut[x] = data_to_u8(x * scale + offset);
  for (int64_t i = 0; i < n * 3; i++) px[i] = lut[px[i]];
}

void aug_color(uint8_t *px, int64_t n, float bright, float contrast, float sat, float hue) {
  if (sat != 1 || hue != 0)
    aug_hsv(px, n, bright, sat, hue);
  else if (bright != 1)
    apply_linear(px, n, bright, 0);
  if (contrast != 1) {
    /* Around the mean grey (Rec. 601 luma), as torchvision does. */
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
      sum += 0.299 * px[3 * i] + 0.587 * px[3 * i + 1] + 0.114 * px[3 * i + 2];
    float mean = n > 0 ? (float)(sum / (double)n) : 0;
    apply_linear(px, n, contrast, mean * (1 - contrast));
  }
}

/* ---- blur and noise ------------------------------------------------------------- */

nic_status aug_blur(uint8_t *px, int size, float sigma, nic_error *err) {
  if (!(sigma > 0)) return NIC_OK;
  int radius = (int)ceilf(3 * sigma);
  if (radius < 1) radius = 1;
  if (radius > size - 1) radius = size - 1 > 0 ? size - 1 : 0;
  if (radius == 0) return NIC_OK;
  int taps = 2 * radius + 1;
  size_t stride = (size_t)size * 3, padded = (size_t)(size + 2 * radius) * 3;
  float *k = malloc(sizeof(float) * (size_t)taps);
  float *tmp = malloc(sizeof(float) * stride * (size_t)size);
  float *row = malloc(sizeof(float) * padded);
  float *acc = malloc(sizeof(float) * stride);
  if (!k || !tmp || !row || !acc) {
    free(k);
    free(tmp);
    free(row);
    free(acc);
    return nic_err(err, NIC_ENOMEM, "blur: out of memory");
  }
  float sum = 0;
  for (int i = 0; i < taps; i++) {
    float d = (float)(i - radius);
    k[i] = expf(-d * d / (2 * sigma * sigma));
    sum += k[i];
  }
  for (int i = 0; i < taps; i++) k[i] /= sum;
  /* Horizontal: each row is copied with mirrored borders, then every tap
   * is a contiguous multiply-add over the row (which vectorises). */
  for (int y = 0; y < size; y++) {
    const uint8_t *in = px + (size_t)y * stride;
    for (int x = -radius; x < size + radius; x++) {
      int m = x < 0 ? -x : x >= size ? 2 * size - 2 - x : x;
      for (int c = 0; c < 3; c++)
        row[(size_t)(x + radius) * 3 + (size_t)c] = in[(size_t)m * 3 + (size_t)c];
    }
    float *o = tmp + (size_t)y * stride;
    memset(o, 0, sizeof(float) * stride);
    for (int t = 0; t < taps; t++) data_axpy(o, row + (size_t)t * 3, k[t], stride);
  }
  /* Vertical: whole rows at a time, mirrored row indices. */
  for (int y = 0; y < size; y++) {
    memset(acc, 0, sizeof(float) * stride);
    for (int t = -radius; t <= radius; t++) {
      int yy = y + t;
      yy = yy < 0 ? -yy : yy >= size ? 2 * size - 2 - yy : yy;
      data_axpy(acc, tmp + (size_t)yy * stride, k[t + radius], stride);
    }
    data_store_u8(px + (size_t)y * stride, acc, stride);
  }
  free(k);
  free(tmp);
  free(row);
  free(acc);
  return NIC_OK;
}

typedef struct noise_args {
  uint64_t base; /* splitmix64 counter at the start of the block */
  float scale;
} noise_args;

/* Noise for one block: 3 * BLOCK values from 3 * BLOCK / 2 words of a
 * counter-based splitmix64 (word i is the mix of base + (i + 1) * gamma,
 * which vectorises, unlike a running state). Each word gives two values,
 * each the sum of four of its bytes. */
static void noise_block(uint8_t *px, const void *arg) {
  const noise_args *a = arg;
  enum { WORDS = 3 * BLOCK / 2 };
  float z[3 * BLOCK];
  for (int i = 0; i < WORDS; i++) {
    uint64_t r = a->base + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ULL;
    r = (r ^ (r >> 30)) * 0xbf58476d1ce4e5b9ULL;
    r = (r ^ (r >> 27)) * 0x94d049bb133111ebULL;
    r ^= r >> 31;
    /* Byte sums: pairs into 16-bit lanes, then lanes into 32-bit halves. */
    uint64_t pairs = (r & 0x00FF00FF00FF00FFULL) + (r >> 8 & 0x00FF00FF00FF00FFULL);
    uint64_t quads = (pairs & 0x0000FFFF0000FFFFULL) + (pairs >> 16 & 0x0000FFFF0000FFFFULL);
    z[i] = (float)((int)(quads & 0xFFFF) - 510) * a->scale;
    z[i + WORDS] = (float)((int)(quads >> 32) - 510) * a->scale;
  }
  for (int i = 0; i < 3 * BLOCK; i++) z[i] += (float)px[i];
  for (int i = 0; i < 3 * BLOCK; i++) px[i] = data_to_u8(z[i]);
}

void aug_noise(uint8_t *px, int64_t n, float sigma, nic_rng *rng) {
  if (!(sigma > 0)) return;
  /* Nearly Gaussian and cheap: the sum of four random bytes has mean 510
   * and standard deviation 147.8; scaled, it is within 1% of the normal
   * distribution function and bounded at 3.46 sigma. The bytes come from
   * a splitmix64 sequence seeded from rng. */
  noise_args a = {nic_rng_next(rng), sigma / 147.8017f};
  int64_t full = n / BLOCK * BLOCK;
  for (int64_t i = 0; i < full; i += BLOCK) {
    noise_block(px + 3 * i, &a);
    a.base += (uint64_t)(3 * BLOCK / 2) * 0x9e3779b97f4a7c15ULL;
  }
  if (full < n) { /* the padded tail, as for_blocks does */
    uint8_t tail[3 * BLOCK] = {0};
    size_t bytes = (size_t)(n - full) * 3;
    memcpy(tail, px + 3 * full, bytes);
    noise_block(tail, &a);
    memcpy(px + 3 * full, tail, bytes);
  }
}

/* ---- the pipeline ------------------------------------------------------------- */

nic_status aug_apply(const aug_draw *d, nic_rng *rng, uint8_t *px, int size, nic_error *err) {
  int64_t n = (int64_t)size * size;
  if (d->dihedral) {
    uint8_t *tmp = malloc((size_t)n * 3);
    if (!tmp) return nic_err(err, NIC_ENOMEM, "augmentation: out of memory");
    aug_dihedral(px, tmp, size, d->dihedral);
    memcpy(px, tmp, (size_t)n * 3);
    free(tmp);
  }
  if (d->hed) aug_hed(px, n, d->hed_a, d->hed_b);
  if (d->bright != 1 || d->contrast != 1 || d->sat != 1 || d->hue != 0)
    aug_color(px, n, d->bright, d->contrast, d->sat, d->hue);
  if (d->blur_sigma > 0) {
    nic_status s = aug_blur(px, size, d->blur_sigma, err);
    if (s != NIC_OK) return s;
  }
  if (d->noise_sigma > 0) aug_noise(px, n, d->noise_sigma, rng);
  return NIC_OK;
}

nic_status aug_check(const nic_augment *a, nic_error *err) {
  if (a->zoom < 0 || a->hed_scale < 0 || a->hed_shift < 0 || a->brightness < 0 || a->contrast < 0 ||
      a->saturation < 0 || a->hue < 0 || a->noise < 0 || a->blur_min < 0 ||
      a->blur_max < a->blur_min || !(a->blur_prob >= 0 && a->blur_prob <= 1))
    return nic_err(err, NIC_EINVAL,
                   "augmentation: strengths must be >= 0, blur_min <= blur_max and blur_prob "
                   "in [0, 1]");
  if (a->zoom > 10 || a->blur_max > 20)
    return nic_err(err, NIC_EINVAL, "augmentation: zoom %g or blur sigma %g too large", a->zoom,
                   a->blur_max);
  return NIC_OK;
}

nic_status nic_augment_patch(const nic_augment *a, nic_rng *rng, uint8_t *px, int size,
                             nic_error *err) {
  if (size < 1) return nic_err(err, NIC_EINVAL, "augmentation: patch size %d", size);
  nic_status s = aug_check(a, err);
  if (s != NIC_OK) return s;
  aug_draw d;
  aug_draw_params(a, rng, &d);
  if (d.zoom != 1.0) {
    /* Zoom about the centre of the patch itself (r = 1/zoom). */
    size_t bytes = (size_t)size * (size_t)size * 3;
    uint8_t *copy = malloc(bytes);
    if (!copy) return nic_err(err, NIC_ENOMEM, "augmentation: out of memory");
    memcpy(copy, px, bytes);
    s = nic_patch_from_image(copy, size, size, 1.0, px, size, 1.0, d.zoom, err);
    free(copy);
    if (s != NIC_OK) return s;
  }
  return aug_apply(&d, rng, px, size, err);
}
