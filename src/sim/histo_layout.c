/* The layout of a simulated slide: where the tissue, tumour, lymphocyte
 * aggregates and mitotic figures are, plus the slide-level labels that
 * follow from it. Computed once per slide, before any pixel; the renderer
 * (histo_render.c) only reads it.
 *
 * Sizes are in micrometres and converted with the slide's mpp, so a slide
 * at 0.25 um/px shows the same tissue as one at 0.5 um/px, twice as large. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "sim/histo_internal.h"
#include "sim/sim_internal.h"

/* Random streams of a slide (first key after the set seed). */
enum { STREAM_SLIDE = 10, STREAM_LAYOUT, STREAM_MITOSES, STREAM_SURVIVAL, STREAM_TEXTURE };
/* Keys of the hashed noise fields. */
enum { NOISE_TISSUE = 1, NOISE_TUMOUR, NOISE_LYMPH };

/* Border roughness of each field, in field units (the field is 1 at a
 * blob's centre and 0 on its outline), and its feature size in um. */
#define TISSUE_NOISE 0.15f
#define TUMOUR_NOISE 0.30f
#define LYMPH_NOISE 0.20f
#define TISSUE_NOISE_UM 180.0
#define TUMOUR_NOISE_UM 45.0
#define LYMPH_NOISE_UM 25.0

const char *nic_tissue_class_name(nic_tissue_class c) {
  switch (c) {
  case NIC_TISSUE_BACKGROUND:
    return "background";
  case NIC_TISSUE_STROMA:
    return "stroma";
  case NIC_TISSUE_TUMOUR:
    return "tumour";
  case NIC_TISSUE_LYMPHOCYTES:
    return "lymphocytes";
  }
  return "unknown";
}

nic_histo_opts nic_histo_default_opts(void) {
  nic_histo_opts o = {0};
  o.width = o.height = 8192;
  o.mpp = 0.5;
  o.count = 4;
  o.tumour_ratio = 0.5;
  o.lesion_min = 0.02;
  o.lesion_max = 0.30;
  o.mitosis_max = 40;
  o.mitosis_normal = 0.5;
  o.weibull_shape = 1.5;
  o.median_months = 120;
  o.censor_months = 180;
  o.jpeg_quality = 85;
  o.seed = 1;
  return o;
}

nic_status nic_histo_check(const nic_histo_opts *o, nic_error *err) {
  if (o->width < 256 || o->height < 256 || o->width > 1000000 || o->height > 1000000)
    return nic_err(err, NIC_EINVAL, "slide size %dx%d out of range (256 to 1000000 px a side)",
                   o->width, o->height);
  if (!(o->mpp >= 0.1 && o->mpp <= 10))
    return nic_err(err, NIC_EINVAL, "mpp %g out of range (0.1 to 10 um/px)", o->mpp);
  if (o->count < 1) return nic_err(err, NIC_EINVAL, "need at least one slide");
  if (!(o->tumour_ratio >= 0 && o->tumour_ratio <= 1))
    return nic_err(err, NIC_EINVAL, "tumour ratio %g not in [0, 1]", o->tumour_ratio);
  if (!(o->lesion_min > 0 && o->lesion_min <= o->lesion_max && o->lesion_max <= 0.9))
    return nic_err(err, NIC_EINVAL, "lesion fraction range %g,%g: need 0 < min <= max <= 0.9",
                   o->lesion_min, o->lesion_max);
  if (!(o->mitosis_max >= 0 && o->mitosis_normal >= 0 && o->mitosis_max <= 1e4 &&
        o->mitosis_normal <= 1e4))
    return nic_err(err, NIC_EINVAL, "mitosis rates must be in [0, 10000] per mm^2");
  if (!(o->weibull_shape > 0.05 && o->weibull_shape < 20))
    return nic_err(err, NIC_EINVAL, "Weibull shape %g out of range (0.05 to 20)", o->weibull_shape);
  if (!(o->median_months > 0 && o->censor_months > 0))
    return nic_err(err, NIC_EINVAL, "median survival and censoring horizon must be positive");
  if (o->jpeg_quality < 1 || o->jpeg_quality > 100)
    return nic_err(err, NIC_EINVAL, "JPEG quality %d not in 1..100", o->jpeg_quality);
  return NIC_OK;
}

/* ---- Fields ---- */

/* Value noise in [-1, 1] on the integer lattice: hashed corner values,
 * smoothstep-interpolated. */
static float vnoise(uint64_t seed, double x, double y) {
  double fx = floor(x), fy = floor(y);
  int64_t i = (int64_t)fx, j = (int64_t)fy;
  double tx = x - fx, ty = y - fy;
  tx = tx * tx * (3 - 2 * tx);
  ty = ty * ty * (3 - 2 * ty);
  double v[4];
  for (int k = 0; k < 4; k++)
    v[k] = sim_hash01(sim_mix(sim_mix(seed, (uint64_t)(i + (k & 1))), (uint64_t)(j + (k >> 1))));
  double top = v[0] + (v[1] - v[0]) * tx, bot = v[2] + (v[3] - v[2]) * tx;
  return (float)(2 * (top + (bot - top) * ty) - 1);
}

/* Two octaves of value noise with features of about `scale` px. */
static float fractal(uint64_t seed, double x, double y, double scale) {
  return 0.65f * vnoise(seed, x / scale, y / scale) +
         0.35f * vnoise(seed ^ 0x5bd1e995u, 2.3 * x / scale + 17.1, 2.3 * y / scale + 3.7);
}

float histo_value_noise(uint64_t seed, double x, double y) {
  return vnoise(seed, x, y);
}

/* 1 at the centre, 0 on the outline, falling linearly with the distance
 * relative to the outline's radius in that direction, clamped at -1 (so
 * far points need no trigonometry). cos(k theta) and sin(k theta) come
 * from powers of the unit vector, not from atan2. */
static float blob_field(const histo_blob *b, float x, float y) {
  float dx = x - b->cx, dy = y - b->cy;
  float d2 = dx * dx + dy * dy;
  if (d2 >= 4.0f * b->rmax * b->rmax) return -1.0f;
  if (d2 < 1e-6f) return 1.0f;
  float d = sqrtf(d2);
  float c1 = dx / d, s1 = dy / d, ck = c1, sk = s1, rad = 1.0f;
  for (int k = 0; k < HISTO_HARM; k++) {
    rad += b->ca[k] * ck + b->sa[k] * sk;
    float nc = ck * c1 - sk * s1, ns = sk * c1 + ck * s1;
    ck = nc;
    sk = ns;
  }
  float f = 1.0f - d / (b->r * rad);
  return f < -1.0f ? -1.0f : f;
}

static float max_field(const histo_blob *b, int n, float x, float y, int *arg) {
  float best = -1.0f;
  int which = 0;
  for (int k = 0; k < n; k++) {
    float f = blob_field(&b[k], x, y);
    if (f > best) {
      best = f;
      which = k;
    }
  }
  if (arg) *arg = which;
  return best;
}

/* A field plus border noise. Noise only moves the border, so it is added
 * only where it can change the sign: the result is the same, cheaper. */
static float noisy(float base, float amp, uint64_t seed, float x, float y, double scale) {
  if (base <= -amp || base >= amp) return base;
  return base + amp * fractal(seed, x, y, scale);
}

histo_fields histo_fields_at_lattice(const nic_histo_layout *l, int64_t i, int64_t j) {
  float x = (float)(i * HISTO_LAT), y = (float)(j * HISTO_LAT);
  histo_fields f = {-1.0f, -1.0f, -1.0f};
  if (x < l->bbox[0] || x > l->bbox[2] || y < l->bbox[1] || y > l->bbox[3]) return f;
  double um = l->px_per_um;
  f.tissue = noisy(max_field(l->pieces, l->npieces, x, y, NULL), TISSUE_NOISE,
                   sim_mix(l->seed, NOISE_TISSUE), x, y, TISSUE_NOISE_UM * um);
  if (f.tissue <= 0) return f; /* the others only matter inside tissue */
  if (l->nlesions)
    f.tumour = noisy(max_field(l->lesions, l->nlesions, x, y, NULL), TUMOUR_NOISE,
                     sim_mix(l->seed, NOISE_TUMOUR), x, y, TUMOUR_NOISE_UM * um);
  if (l->naggs)
    f.lymph = noisy(max_field(l->aggs, l->naggs, x, y, NULL), LYMPH_NOISE,
                    sim_mix(l->seed, NOISE_LYMPH), x, y, LYMPH_NOISE_UM * um);
  return f;
}

int histo_piece_at_lattice(const nic_histo_layout *l, int64_t i, int64_t j) {
  int arg = 0;
  max_field(l->pieces, l->npieces, (float)(i * HISTO_LAT), (float)(j * HISTO_LAT), &arg);
  return arg;
}

nic_tissue_class nic_histo_class_at(const nic_histo_layout *l, int x, int y) {
  int64_t i = (int64_t)floor((double)x / HISTO_LAT), j = (int64_t)floor((double)y / HISTO_LAT);
  float fx = (float)(x - i * HISTO_LAT) / HISTO_LAT, fy = (float)(y - j * HISTO_LAT) / HISTO_LAT;
  histo_fields a = histo_fields_at_lattice(l, i, j), b = histo_fields_at_lattice(l, i + 1, j);
  histo_fields c = histo_fields_at_lattice(l, i, j + 1),
               d = histo_fields_at_lattice(l, i + 1, j + 1);
  return histo_classify(histo_lerp2(a.tissue, b.tissue, c.tissue, d.tissue, fx, fy),
                        histo_lerp2(a.tumour, b.tumour, c.tumour, d.tumour, fx, fy),
                        histo_lerp2(a.lymph, b.lymph, c.lymph, d.lymph, fx, fy));
}

/* Counts lattice points per class on a grid of `step` px (a multiple of
 * HISTO_LAT, where the interpolated field equals the lattice value) over
 * the slide: an unbiased estimate of the pixel areas. */
static void measure(const nic_histo_layout *l, int step, int64_t counts[NIC_TISSUE_NCLASSES]) {
  int W = l->info.width, H = l->info.height, k = step / HISTO_LAT;
  int64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
  int ny = (H + step - 1) / step, nx = (W + step - 1) / step;
  int nt = l->threads > 0 ? l->threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 4) reduction(+ : c0, c1, c2, c3) num_threads(nt)
  for (int gy = 0; gy < ny; gy++) {
    for (int gx = 0; gx < nx; gx++) {
      histo_fields f = histo_fields_at_lattice(l, (int64_t)gx * k, (int64_t)gy * k);
      switch (histo_classify(f.tissue, f.tumour, f.lymph)) {
      case NIC_TISSUE_BACKGROUND:
        c0++;
        break;
      case NIC_TISSUE_STROMA:
        c1++;
        break;
      case NIC_TISSUE_TUMOUR:
        c2++;
        break;
      case NIC_TISSUE_LYMPHOCYTES:
        c3++;
        break;
      }
    }
  }
  counts[0] = c0;
  counts[1] = c1;
  counts[2] = c2;
  counts[3] = c3;
}

/* ---- Layout ---- */

/* A blob of mean radius r at (cx, cy) with random outline harmonics of
 * amplitude amp/k (so low frequencies dominate: lobes, not spikes). */
static histo_blob make_blob(nic_rng *r, float cx, float cy, float rad, float amp) {
  histo_blob b = {0};
  b.cx = cx;
  b.cy = cy;
  b.r = rad;
  float sum = 0;
  for (int k = 0; k < HISTO_HARM; k++) {
    float a = (float)(amp / (k + 1) * sim_uniform(r, 0.3, 1.0));
    float ph = (float)sim_uniform(r, 0, 2 * M_PI);
    b.ca[k] = a * cosf(ph);
    b.sa[k] = a * sinf(ph);
    sum += a;
  }
  b.rmax = rad * (1 + sum);
  b.angle = (float)sim_uniform(r, 0, M_PI);
  b.dir_c = cosf(b.angle);
  b.dir_s = sinf(b.angle);
  return b;
}

static void place_pieces(nic_histo_layout *l, nic_rng *r) {
  float W = (float)l->info.width, H = (float)l->info.height;
  double cover = sim_uniform(r, 0.22, 0.45); /* tissue share of the slide */
  int n = 1 + (int)nic_rng_below(r, 3);
  double w[HISTO_MAXPIECES], wsum = 0;
  for (int k = 0; k < n; k++) wsum += (w[k] = sim_uniform(r, 0.5, 1.5));
  for (int k = 0; k < n; k++) {
    float rad = (float)sqrt(cover * W * H * w[k] / wsum / M_PI);
    histo_blob b = make_blob(r, 0, 0, rad, 0.35f);
    /* Keep the outline (and its noise) on the slide when it fits. */
    float m = b.rmax * (1 + TISSUE_NOISE) + HISTO_LAT;
    for (int tries = 0; tries < 100; tries++) {
      b.cx = m < W / 2 ? (float)sim_uniform(r, m, W - m) : W / 2;
      b.cy = m < H / 2 ? (float)sim_uniform(r, m, H - m) : H / 2;
      int ok = 1;
      for (int q = 0; q < k; q++) {
        float dx = b.cx - l->pieces[q].cx, dy = b.cy - l->pieces[q].cy;
        if (sqrtf(dx * dx + dy * dy) < 0.9f * (b.r + l->pieces[q].r)) ok = 0;
      }
      if (ok) break;
    }
    l->pieces[k] = b;
  }
  l->npieces = n;
  /* Glass beyond this box: the fields there are negative by construction. */
  l->bbox[0] = l->bbox[1] = 1e30f;
  l->bbox[2] = l->bbox[3] = -1e30f;
  for (int k = 0; k < n; k++) {
    const histo_blob *b = &l->pieces[k];
    float m = b->rmax * (1 + TISSUE_NOISE) + 2 * HISTO_LAT;
    l->bbox[0] = fminf(l->bbox[0], b->cx - m);
    l->bbox[1] = fminf(l->bbox[1], b->cy - m);
    l->bbox[2] = fmaxf(l->bbox[2], b->cx + m);
    l->bbox[3] = fmaxf(l->bbox[3], b->cy + m);
  }
}

/* A point in tissue at least `depth` (field units) inside, for placing
 * lesions and aggregates; NULL-free: falls back to a piece centre. */
static void point_in_tissue(const nic_histo_layout *l, nic_rng *r, float depth, float *x,
                            float *y) {
  for (int tries = 0; tries < 200; tries++) {
    const histo_blob *p = &l->pieces[nic_rng_below(r, (uint64_t)l->npieces)];
    double a = sim_uniform(r, 0, 2 * M_PI), d = p->r * sqrt(nic_rng_uniform(r));
    float px = p->cx + (float)(d * cos(a)), py = p->cy + (float)(d * sin(a));
    if (max_field(l->pieces, l->npieces, px, py, NULL) > depth) {
      *x = px;
      *y = py;
      return;
    }
  }
  *x = l->pieces[0].cx;
  *y = l->pieces[0].cy;
}

static void place_aggregates(nic_histo_layout *l, nic_rng *r, double tissue_mm2) {
  /* About one per 2 mm^2 of tissue, and at least one, so that every
   * slide, with tumour or without, has lymphocytes to tell apart. */
  int n = 1 + (int)sim_poisson(r, 0.5 * tissue_mm2);
  if (n > HISTO_MAXAGGS) n = HISTO_MAXAGGS;
  for (int k = 0; k < n; k++) {
    float x, y;
    point_in_tissue(l, r, 0.25f, &x, &y);
    float rad = (float)(sim_uniform(r, 40, 140) * l->px_per_um);
    l->aggs[k] = make_blob(r, x, y, rad, 0.12f);
  }
  l->naggs = n;
}

static void place_lesions(nic_histo_layout *l, nic_rng *r, double target, double tissue_px) {
  int n = 1 + (int)nic_rng_below(r, 3);
  double w[HISTO_MAXLESIONS], wsum = 0;
  for (int k = 0; k < n; k++) wsum += (w[k] = sim_uniform(r, 0.3, 1.0));
  for (int k = 0; k < n; k++) {
    float x, y;
    point_in_tissue(l, r, 0.3f, &x, &y);
    float rad = (float)sqrt(target * tissue_px * w[k] / wsum / M_PI);
    l->lesions[k] = make_blob(r, x, y, rad, 0.3f);
  }
  l->nlesions = n;
  /* Lesions overlap each other and the tissue border, so the area they
   * add is less than planned: measure and rescale, twice. */
  int step = 4 * HISTO_LAT;
  while ((int64_t)l->info.width * l->info.height / ((int64_t)step * step) > 4000000) step *= 2;
  for (int round = 0; round < 2; round++) {
    int64_t c[NIC_TISSUE_NCLASSES];
    measure(l, step, c);
    int64_t tissue = c[1] + c[2] + c[3];
    double got = tissue ? (double)c[2] / tissue : 0;
    double g = got > 0 ? sqrt(target / got) : 2.0;
    if (g < 0.5) g = 0.5;
    if (g > 2.0) g = 2.0;
    for (int k = 0; k < n; k++) {
      l->lesions[k].r *= (float)g;
      l->lesions[k].rmax *= (float)g;
    }
  }
}

/* Uniform point in a random blob's bounding disc that has class `want`. */
static int sample_in(const nic_histo_layout *l, nic_rng *r, const histo_blob *b, int n,
                     nic_tissue_class want, double *x, double *y) {
  double wsum = 0;
  for (int k = 0; k < n; k++) wsum += (double)b[k].rmax * b[k].rmax;
  for (int tries = 0; tries < 10000; tries++) {
    double u = nic_rng_uniform(r) * wsum;
    int k = 0;
    while (k < n - 1 && (u -= (double)b[k].rmax * b[k].rmax) > 0) k++;
    double a = sim_uniform(r, 0, 2 * M_PI), d = b[k].rmax * 1.2 * sqrt(nic_rng_uniform(r));
    double px = b[k].cx + d * cos(a), py = b[k].cy + d * sin(a);
    if (px < 0 || py < 0 || px >= l->info.width || py >= l->info.height) continue;
    if (nic_histo_class_at(l, (int)px, (int)py) == want) {
      *x = px;
      *y = py;
      return 1;
    }
  }
  return 0;
}

static int cmp_y(const void *a, const void *b) {
  const double *p = a, *q = b;
  if (p[1] != q[1]) return p[1] < q[1] ? -1 : 1;
  return p[0] < q[0] ? -1 : p[0] > q[0];
}

static nic_status place_mitoses(nic_histo_layout *l, const nic_histo_opts *o, int index,
                                double tumour_mm2, double normal_mm2, nic_error *err) {
  nic_rng r;
  sim_rng(&r, o->seed, STREAM_MITOSES, (uint64_t)index, 0);
  int64_t nt =
      l->nlesions ? sim_poisson(&r, o->mitosis_max * l->info.prolif_score * tumour_mm2) : 0;
  int64_t nn = sim_poisson(&r, o->mitosis_normal * normal_mm2);
  if (nt + nn > 1000000) return nic_err(err, NIC_EINVAL, "more than a million mitotic figures");
  l->mit = malloc(sizeof(double) * 2 * (size_t)(nt + nn + 1));
  if (!l->mit) return nic_err(err, NIC_ENOMEM, "out of memory for mitoses");
  int m = 0;
  for (int64_t k = 0; k < nt + nn; k++) {
    int tum = k < nt;
    double x, y;
    if (sample_in(l, &r, tum ? l->lesions : l->pieces, tum ? l->nlesions : l->npieces,
                  tum ? NIC_TISSUE_TUMOUR : NIC_TISSUE_STROMA, &x, &y)) {
      l->mit[2 * m] = floor(x) + 0.5;
      l->mit[2 * m + 1] = floor(y) + 0.5;
      m++;
    }
  }
  l->nmit = m;
  /* Sorted by y, so that a renderer finds the figures near a row quickly. */
  qsort(l->mit, (size_t)m, 2 * sizeof(double), cmp_y);
  return NIC_OK;
}

/* Survival: Weibull proportional hazards, S(t) = exp(-(t/lambda)^k e^eta),
 * with the linear predictor eta from what the slide shows, and independent
 * uniform censoring. */
static void draw_survival(nic_histo_info *in, const nic_histo_opts *o, int index) {
  nic_rng r;
  sim_rng(&r, o->seed, STREAM_SURVIVAL, (uint64_t)index, 0);
  double k = o->weibull_shape;
  double lambda = o->median_months / pow(log(2.0), 1.0 / k);
  double eta = in->tumour ? 1.0 + 3.0 * in->tumour_fraction + 1.5 * in->prolif_score : 0.0;
  double u = 1.0 - nic_rng_uniform(&r); /* (0, 1] */
  double t = lambda * pow(-log(u), 1.0 / k) * exp(-eta / k);
  double c = o->censor_months * nic_rng_uniform(&r);
  in->survival_event = t <= c;
  in->survival_time = round((t <= c ? t : c) * 100) / 100;
  if (in->survival_time < 0.01) in->survival_time = 0.01;
}

/* Periodic value noise: a lattice of (HISTO_TEX/px) x (HISTO_TEX/py) random
 * values, wrapped, smoothstep-interpolated; octaves halve the periods. */
static void make_texture(uint8_t *t, nic_rng *r, int px, int py, int octaves) {
  float *acc = calloc((size_t)HISTO_TEX * HISTO_TEX, sizeof(float));
  float *lat = malloc(sizeof(float) * HISTO_TEX * HISTO_TEX);
  if (!acc || !lat) { /* a flat texture still renders */
    memset(t, 128, (size_t)HISTO_TEX * HISTO_TEX);
    free(acc);
    free(lat);
    return;
  }
  float amp = 1.0f;
  for (int o = 0; o < octaves && px >= 1 && py >= 1; o++, px /= 2, py /= 2, amp *= 0.55f) {
    int nx = HISTO_TEX / px, ny = HISTO_TEX / py;
    for (int k = 0; k < nx * ny; k++) lat[k] = (float)nic_rng_uniform(r);
    for (int y = 0; y < HISTO_TEX; y++) {
      int j = y / py;
      float ty = (float)(y % py) / py;
      ty = ty * ty * (3 - 2 * ty);
      for (int x = 0; x < HISTO_TEX; x++) {
        int i = x / px;
        float tx = (float)(x % px) / px;
        tx = tx * tx * (3 - 2 * tx);
        float a = lat[j * nx + i], b = lat[j * nx + (i + 1) % nx];
        float c = lat[((j + 1) % ny) * nx + i], d = lat[((j + 1) % ny) * nx + (i + 1) % nx];
        acc[y * HISTO_TEX + x] += amp * histo_lerp2(a, b, c, d, tx, ty);
      }
    }
  }
  float lo = 1e30f, hi = -1e30f;
  for (int k = 0; k < HISTO_TEX * HISTO_TEX; k++) {
    lo = fminf(lo, acc[k]);
    hi = fmaxf(hi, acc[k]);
  }
  float s = hi > lo ? 255.0f / (hi - lo) : 0;
  for (int k = 0; k < HISTO_TEX * HISTO_TEX; k++) t[k] = (uint8_t)lrintf((acc[k] - lo) * s);
  free(acc);
  free(lat);
}

void nic_histo_layout_free(nic_histo_layout *l) {
  if (!l) return;
  free(l->mit);
  free(l->tex_fine);
  free(l->tex_fibre);
  free(l->tex_warp);
  free(l);
}

const nic_histo_info *nic_histo_layout_info(const nic_histo_layout *l) {
  return &l->info;
}

const double *nic_histo_mitoses(const nic_histo_layout *l, int *n) {
  *n = l->nmit;
  return l->mit;
}

nic_status nic_histo_layout_create(nic_histo_layout **out, const nic_histo_opts *o, int index,
                                   int tumour, nic_error *err) {
  *out = NULL;
  nic_status s = nic_histo_check(o, err);
  if (s != NIC_OK) return s;
  nic_histo_layout *l = calloc(1, sizeof *l);
  if (!l) return nic_err(err, NIC_ENOMEM, "out of memory");
  size_t tn = (size_t)HISTO_TEX * HISTO_TEX;
  l->tex_fine = malloc(tn);
  l->tex_fibre = malloc(tn);
  l->tex_warp = malloc(tn);
  if (!l->tex_fine || !l->tex_fibre || !l->tex_warp) {
    nic_histo_layout_free(l);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  l->seed = sim_mix(sim_mix(o->seed, STREAM_SLIDE), (uint64_t)index);
  l->mpp = o->mpp;
  l->threads = o->threads;
  l->px_per_um = (float)(1.0 / o->mpp);
  l->tex_scale = (float)(o->mpp / 0.5);
  l->info.width = o->width;
  l->info.height = o->height;
  l->info.mpp = o->mpp;
  l->info.tumour = tumour ? 1 : 0;
  for (int q = 0; q < 2048; q++) l->od_lut[q] = (uint8_t)lrint(255.0 * exp(-q / 256.0));

  nic_rng r;
  sim_rng(&r, o->seed, STREAM_TEXTURE, (uint64_t)index, 0);
  make_texture(l->tex_fine, &r, 16, 16, 3);
  make_texture(l->tex_fibre, &r, 64, 4, 2);
  make_texture(l->tex_warp, &r, 64, 64, 2);

  sim_rng(&r, o->seed, STREAM_LAYOUT, (uint64_t)index, 0);
  place_pieces(l, &r);
  /* Measure on a grid fine enough for a good estimate, capped at a few
   * million points so that huge slides stay quick to lay out. */
  int step = 2 * HISTO_LAT;
  while ((int64_t)o->width * o->height / ((int64_t)step * step) > 4000000) step *= 2;
  double cell_mm2 = (step * o->mpp) * (step * o->mpp) / 1e6;
  int64_t c[NIC_TISSUE_NCLASSES];
  measure(l, step, c);
  double tissue_mm2 = (double)(c[1] + c[2] + c[3]) * cell_mm2;
  double target = sim_uniform(&r, o->lesion_min, o->lesion_max);
  double prolif = nic_rng_uniform(&r);
  place_aggregates(l, &r, tissue_mm2);
  if (tumour) place_lesions(l, &r, target, tissue_mm2 / cell_mm2 * step * step);

  measure(l, step, c);
  int64_t tissue = c[1] + c[2] + c[3];
  l->info.lesions = l->nlesions;
  l->info.aggregates = l->naggs;
  l->info.tissue_mm2 = (double)tissue * cell_mm2;
  l->info.tumour_fraction = tissue ? (double)c[2] / tissue : 0;
  l->info.prolif_score = tumour ? prolif : 0;
  s = place_mitoses(l, o, index, (double)c[2] * cell_mm2, (double)(c[1] + c[3]) * cell_mm2, err);
  if (s != NIC_OK) {
    nic_histo_layout_free(l);
    return s;
  }
  l->info.mitoses = l->nmit;
  l->info.mitotic_density = l->info.tissue_mm2 > 0 ? l->nmit / l->info.tissue_mm2 : 0;
  draw_survival(&l->info, o, index);
  *out = l;
  return NIC_OK;
}
