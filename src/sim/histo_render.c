/* Renders any rectangle of a simulated slide from its layout.
 *
 * Colour follows the Beer-Lambert law of brightfield microscopy: each
 * pixel holds an amount of hematoxylin (blue-purple, binds chromatin) and
 * eosin (pink, binds cytoplasm and collagen); the optical density of a
 * channel is the sum of amount x absorbance, and the intensity is
 * 255 * exp(-density). Working in stain amounts makes overlapping
 * structures mix the way stains do.
 *
 * A rectangle is drawn in three passes: the background stain of each
 * pixel from its region (glass, stroma fibres, tumour or lymphoid
 * cytoplasm), the nuclei of every jittered-grid cell that reaches the
 * rectangle, then the mitotic figures. Cells and figures draw from their
 * own seeded streams, and everything is addressed in slide coordinates, so
 * the pixels do not depend on how the slide is cut into rectangles. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sim/histo_internal.h"
#include "sim/sim_internal.h"

/* Absorbance (natural-log optical density per unit amount) per RGB channel. */
static const float HEMA[3] = {0.70f, 0.95f, 0.38f};
static const float EOSIN[3] = {0.12f, 0.80f, 0.36f};
static const float GLASS[3] = {0.045f, 0.050f, 0.035f};

/* Nuclei and mitoses reach at most this far from their centre, so cells
 * whose centre is farther outside a rectangle cannot touch it. */
#define REACH_UM 16.0

enum { NUC_FIBRO, NUC_TUMOUR, NUC_LYMPHO, NUC_NTYPES };
/* Jittered-grid spacing per nucleus type, um: fibroblasts are sparse,
 * tumour cells crowded, lymphocytes packed. */
static const float nuc_spacing_um[NUC_NTYPES] = {20.0f, 11.0f, 7.5f};
enum { KEY_NUCLEI = 100, KEY_NEST = 200, KEY_MITOSIS = 300, KEY_PIXEL = 400 };

typedef struct nucleus {
  float x, y;       /* centre, slide px */
  float a, b;       /* semi-axes, px */
  float c, s;       /* orientation */
  float h;          /* hematoxylin amount */
  float irr;        /* outline roughness (fraction of the radius) */
  float contrast;   /* chromatin granularity */
  float nx, ny, nr; /* nucleolus offset and radius, px (nr = 0: none) */
} nucleus;

/* The region fields on the lattice around a rectangle. */
typedef struct region {
  int64_t i0, j0;
  int ni, nj;
  const histo_fields *lat;
  const uint8_t *piece;
} region;

static inline int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Same formula as nic_histo_class_at, on the precomputed lattice. */
static nic_tissue_class region_class(const region *rg, int64_t x, int64_t y) {
  int64_t i = floordiv(x, HISTO_LAT), j = floordiv(y, HISTO_LAT);
  float fx = (float)(x - i * HISTO_LAT) / HISTO_LAT, fy = (float)(y - j * HISTO_LAT) / HISTO_LAT;
  i -= rg->i0;
  j -= rg->j0;
  if (i < 0 || j < 0 || i + 1 >= rg->ni || j + 1 >= rg->nj) return NIC_TISSUE_BACKGROUND;
  const histo_fields *a = &rg->lat[j * rg->ni + i], *b = a + 1, *c = a + rg->ni, *d = c + 1;
  return histo_classify(histo_lerp2(a->tissue, b->tissue, c->tissue, d->tissue, fx, fy),
                        histo_lerp2(a->tumour, b->tumour, c->tumour, d->tumour, fx, fy),
                        histo_lerp2(a->lymph, b->lymph, c->lymph, d->lymph, fx, fy));
}

static inline uint8_t tex_at(const uint8_t *t, double x, double y) {
  int64_t i = (int64_t)floor(x), j = (int64_t)floor(y);
  return t[(j & (HISTO_TEX - 1)) * HISTO_TEX + (i & (HISTO_TEX - 1))];
}

/* The nucleus of grid cell (ci, cj) of a type, if the cell has one there:
 * a jittered candidate, kept with a probability that depends on the tissue
 * class under it. Everything is drawn from the cell's own stream. */
static int cell_nucleus(const nic_histo_layout *l, const region *rg, int type, int64_t ci,
                        int64_t cj, const int64_t lim[4], nucleus *n) {
  float sp = nuc_spacing_um[type] * l->px_per_um, um = l->px_per_um;
  nic_rng r;
  nic_rng_seed(&r,
               sim_mix(sim_mix(sim_mix(l->seed, KEY_NUCLEI + type), (uint64_t)ci), (uint64_t)cj));
  n->x = (float)((ci + nic_rng_uniform(&r)) * sp);
  n->y = (float)((cj + nic_rng_uniform(&r)) * sp);
  int64_t px = (int64_t)floorf(n->x), py = (int64_t)floorf(n->y);
  if (px < lim[0] || px >= lim[2] || py < lim[1] || py >= lim[3]) return 0;
  nic_tissue_class cls = region_class(rg, px, py);
  double p = 0;
  switch (type) {
  case NUC_FIBRO:
    p = cls == NIC_TISSUE_STROMA ? 0.45 : 0;
    break;
  case NUC_TUMOUR:
    if (cls == NIC_TISSUE_TUMOUR) {
      /* Tumour cells grow in nests separated by thin stroma. */
      float nest =
          histo_value_noise(sim_mix(l->seed, KEY_NEST), n->x / (45 * um), n->y / (45 * um));
      p = nest > -0.25f ? 0.92 : 0.2;
    }
    break;
  case NUC_LYMPHO:
    p = cls == NIC_TISSUE_LYMPHOCYTES ? 0.8
        : cls == NIC_TISSUE_STROMA    ? 0.012
        : cls == NIC_TISSUE_TUMOUR    ? 0.03
                                      : 0;
    break;
  }
  if (nic_rng_uniform(&r) >= p) return 0;
  double ang = sim_uniform(&r, 0, M_PI);
  n->nr = 0;
  n->nx = n->ny = 0;
  switch (type) {
  case NUC_FIBRO: {
    /* Spindle-shaped, aligned with the collagen. */
    const histo_blob *pc = &l->pieces[rg->piece[(floordiv(py, HISTO_LAT) - rg->j0) * rg->ni +
                                                (floordiv(px, HISTO_LAT) - rg->i0)]];
    ang = pc->angle + 0.25 * nic_rng_normal(&r);
    n->a = (float)(sim_uniform(&r, 4.5, 7.0) * um);
    n->b = (float)(sim_uniform(&r, 1.3, 2.0) * um);
    n->h = (float)sim_uniform(&r, 1.0, 1.4);
    n->irr = 0.05f;
    n->contrast = 0.3f;
    break;
  }
  case NUC_TUMOUR: {
    /* Large, pleomorphic, hyperchromatic, often with a nucleolus. */
    double a = 5.2 * exp(0.2 * nic_rng_normal(&r));
    if (a < 3.5) a = 3.5;
    if (a > 8.0) a = 8.0;
    n->a = (float)(a * um);
    n->b = (float)(a * sim_uniform(&r, 0.6, 0.95) * um);
    n->h = (float)sim_uniform(&r, 1.5, 2.3);
    n->irr = (float)sim_uniform(&r, 0.08, 0.25);
    n->contrast = 0.6f;
    if (nic_rng_uniform(&r) < 0.5) {
      n->nr = (float)(sim_uniform(&r, 0.6, 1.1) * um);
      n->nx = (float)(sim_uniform(&r, -0.4, 0.4) * n->b);
      n->ny = (float)(sim_uniform(&r, -0.4, 0.4) * n->b);
    }
    break;
  }
  default: {
    /* Small, round, dense. */
    double a = sim_uniform(&r, 2.6, 3.4);
    n->a = (float)(a * um);
    n->b = (float)(a * sim_uniform(&r, 0.85, 1.0) * um);
    n->h = (float)sim_uniform(&r, 2.0, 2.6);
    n->irr = 0.04f;
    n->contrast = 0.25f;
    break;
  }
  }
  n->c = (float)cos(ang);
  n->s = (float)sin(ang);
  return 1;
}

/* Blends an elliptic nucleus into the stain buffers of rectangle (x0, y0,
 * w, h), with an anti-aliased outline roughened by the grain texture. */
static void draw_nucleus(const nic_histo_layout *l, const nucleus *n, int x0, int y0, int w, int h,
                         float *ch, float *ce) {
  float ext = n->a * (1 + 2 * n->irr) + 1.5f;
  int bx0 = (int)floorf(n->x - ext), bx1 = (int)ceilf(n->x + ext);
  int by0 = (int)floorf(n->y - ext), by1 = (int)ceilf(n->y + ext);
  if (bx0 < x0) bx0 = x0;
  if (by0 < y0) by0 = y0;
  if (bx1 > x0 + w) bx1 = x0 + w;
  if (by1 > y0 + h) by1 = y0 + h;
  float ts = l->tex_scale, ia = 1 / n->a, ib = 1 / n->b, nr2 = n->nr * n->nr;
  for (int py = by0; py < by1; py++) {
    float dy = py + 0.5f - n->y;
    for (int px = bx0; px < bx1; px++) {
      float dx = px + 0.5f - n->x;
      float u = (dx * n->c + dy * n->s) * ia, v = (dy * n->c - dx * n->s) * ib;
      float d = sqrtf(u * u + v * v);
      float rough = tex_at(l->tex_fine, px * ts + 131, py * ts + 17) * (1 / 255.0f) - 0.5f;
      d *= 1 + 2 * n->irr * rough;
      float alpha = (1 - d) * n->b + 0.5f;
      if (alpha <= 0) continue;
      if (alpha > 1) alpha = 1;
      float grain = tex_at(l->tex_fine, px * ts * 1.7 + 37, py * ts * 1.7 + 91) * (1 / 255.0f);
      float hv = n->h * (1 - 0.5f * n->contrast + n->contrast * grain);
      if (d > 0.75f) hv += n->h * 0.4f * (d - 0.75f); /* darker nuclear membrane */
      if (nr2 > 0) {
        float ex = dx - n->nx, ey = dy - n->ny;
        if (ex * ex + ey * ey < nr2) hv += 1.0f;
      }
      size_t k = (size_t)(py - y0) * w + (px - x0);
      ch[k] += (hv - ch[k]) * alpha;
      ce[k] *= 1 - 0.65f * alpha;
    }
  }
}

/* A mitotic figure: a pale halo (the rounded-up cell) around condensed
 * chromosomes, drawn as a clump, a metaphase plate or two anaphase plates. */
static void draw_mitosis(const nic_histo_layout *l, int index, double mx, double my, int x0, int y0,
                         int w, int h, float *ch, float *ce) {
  float um = l->px_per_um;
  nic_rng r;
  nic_rng_seed(&r, sim_mix(sim_mix(l->seed, KEY_MITOSIS), (uint64_t)index));
  float halo = (float)(sim_uniform(&r, 6.0, 8.0) * um);
  int hx0 = (int)floor(mx - halo), hx1 = (int)ceil(mx + halo);
  int hy0 = (int)floor(my - halo), hy1 = (int)ceil(my + halo);
  for (int py = hy0 > y0 ? hy0 : y0; py < (hy1 < y0 + h ? hy1 : y0 + h); py++)
    for (int px = hx0 > x0 ? hx0 : x0; px < (hx1 < x0 + w ? hx1 : x0 + w); px++) {
      float dx = (float)(px + 0.5 - mx), dy = (float)(py + 0.5 - my);
      float q = 1 - sqrtf(dx * dx + dy * dy) / halo;
      if (q <= 0) continue;
      q = q > 0.3f ? 1 : q / 0.3f;
      size_t k = (size_t)(py - y0) * w + (px - x0);
      ch[k] *= 1 - 0.7f * q;
      ce[k] *= 1 - 0.45f * q;
    }
  int kind = (int)nic_rng_below(&r, 3), pieces = 6 + (int)nic_rng_below(&r, 6);
  double ang = sim_uniform(&r, 0, M_PI), ca = cos(ang), sa = sin(ang);
  double gap = sim_uniform(&r, 2.5, 4.0) * um;
  for (int k = 0; k < pieces; k++) {
    double ox, oy;
    if (kind == 0) { /* prophase-like clump */
      double a = sim_uniform(&r, 0, 2 * M_PI), d = 3.2 * um * sqrt(nic_rng_uniform(&r));
      ox = d * cos(a);
      oy = d * sin(a);
    } else { /* plate(s) across the spindle axis */
      double along = sim_uniform(&r, -4.5, 4.5) * um, across = sim_uniform(&r, -0.8, 0.8) * um;
      if (kind == 2) across += (k & 1) ? gap : -gap;
      ox = along * -sa + across * ca;
      oy = along * ca + across * sa;
    }
    nucleus n = {0};
    n.x = (float)(mx + ox);
    n.y = (float)(my + oy);
    n.a = (float)(sim_uniform(&r, 0.9, 1.7) * um);
    n.b = (float)(sim_uniform(&r, 0.5, 0.9) * um);
    double t = sim_uniform(&r, 0, M_PI);
    n.c = (float)cos(t);
    n.s = (float)sin(t);
    n.h = (float)sim_uniform(&r, 3.0, 3.6);
    n.irr = 0.1f;
    n.contrast = 0.15f;
    draw_nucleus(l, &n, x0, y0, w, h, ch, ce);
  }
}

void histo_scratch_free(histo_scratch *s) {
  free(s->ch);
  free(s->ce);
  free(s->lat);
  free(s->lat_piece);
  memset(s, 0, sizeof *s);
}

static nic_status scratch_reserve(histo_scratch *s, int px, int lat, nic_error *err) {
  if (px > s->cap_px) {
    free(s->ch);
    free(s->ce);
    s->ch = malloc(sizeof(float) * (size_t)px);
    s->ce = malloc(sizeof(float) * (size_t)px);
    s->cap_px = px;
  }
  if (lat > s->cap_lat) {
    free(s->lat);
    free(s->lat_piece);
    s->lat = malloc(sizeof(histo_fields) * (size_t)lat);
    s->lat_piece = malloc((size_t)lat);
    s->cap_lat = lat;
  }
  if (!s->ch || !s->ce || !s->lat || !s->lat_piece) {
    histo_scratch_free(s);
    return nic_err(err, NIC_ENOMEM, "out of memory rendering a slide region");
  }
  return NIC_OK;
}

/* Pixel noise from a hash of the slide position (not of the rectangle). */
static inline float pixel_noise(uint32_t seed, int64_t x, int64_t y) {
  uint32_t h = (uint32_t)x * 0x9E3779B1u ^ (uint32_t)y * 0x85EBCA77u ^ seed;
  h ^= h >> 15;
  h *= 0x2C1B3C6Du;
  h ^= h >> 12;
  return (float)(h & 1023) * (1 / 1023.0f) - 0.5f;
}

/* First mitosis with y >= y (the list is sorted by y). */
static int mitosis_lower_bound(const nic_histo_layout *l, double y) {
  int lo = 0, hi = l->nmit;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (l->mit[2 * mid + 1] < y)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

nic_status histo_render_rect(const nic_histo_layout *l, int x0, int y0, int w, int h, uint8_t *rgb,
                             int stride, uint8_t *classes, nic_histo_counts *counts,
                             histo_scratch *s, nic_error *err) {
  if (w < 1 || h < 1 || stride < 3 * w)
    return nic_err(err, NIC_EINVAL, "bad region %dx%d (stride %d)", w, h, stride);
  int reach = (int)ceil(REACH_UM * l->px_per_um) + 2;
  /* Nucleus candidates centred within `reach` of the rectangle matter; the
   * lattice covers them plus one cell for the interpolation. */
  int64_t lim[4] = {(int64_t)x0 - reach, (int64_t)y0 - reach, (int64_t)x0 + w + reach,
                    (int64_t)y0 + h + reach};
  region rg;
  rg.i0 = floordiv(lim[0], HISTO_LAT);
  rg.j0 = floordiv(lim[1], HISTO_LAT);
  rg.ni = (int)(floordiv(lim[2], HISTO_LAT) - rg.i0 + 2);
  rg.nj = (int)(floordiv(lim[3], HISTO_LAT) - rg.j0 + 2);
  nic_status st = scratch_reserve(s, w * h, rg.ni * rg.nj, err);
  if (st != NIC_OK) return st;
  if (counts) memset(counts, 0, sizeof *counts);
  float *ch = s->ch, *ce = s->ce;

  /* Pass 0: the lattice, unless the rectangle (with reach) misses all tissue. */
  int any_tissue =
      lim[2] >= l->bbox[0] && lim[0] <= l->bbox[2] && lim[3] >= l->bbox[1] && lim[1] <= l->bbox[3];
  histo_fields *lat = s->lat;
  if (any_tissue) {
    any_tissue = 0;
    for (int j = 0; j < rg.nj; j++)
      for (int i = 0; i < rg.ni; i++) {
        histo_fields f = histo_fields_at_lattice(l, rg.i0 + i, rg.j0 + j);
        lat[j * rg.ni + i] = f;
        s->lat_piece[j * rg.ni + i] =
            f.tissue > -1.0f ? (uint8_t)histo_piece_at_lattice(l, rg.i0 + i, rg.j0 + j) : 0;
        if (f.tissue > 0) any_tissue = 1;
      }
  }
  rg.lat = lat;
  rg.piece = s->lat_piece;

  /* Pass 1: background stain per pixel. */
  float ts = l->tex_scale;
  for (int y = 0; y < h; y++) {
    int64_t gy = (int64_t)y0 + y, j = floordiv(gy, HISTO_LAT);
    float fy = (float)(gy - j * HISTO_LAT) / HISTO_LAT;
    float *chr = ch + (size_t)y * w, *cer = ce + (size_t)y * w;
    uint8_t *cls = classes ? classes + (size_t)y * w : NULL;
    if (!any_tissue) {
      memset(chr, 0, sizeof(float) * (size_t)w);
      memset(cer, 0, sizeof(float) * (size_t)w);
      if (cls) memset(cls, NIC_TISSUE_BACKGROUND, (size_t)w);
      if (counts) counts->pixels[NIC_TISSUE_BACKGROUND] += w;
      continue;
    }
    const histo_fields *row = lat + (j - rg.j0) * rg.ni;
    for (int x = 0; x < w; x++) {
      int64_t gx = (int64_t)x0 + x, i = floordiv(gx, HISTO_LAT);
      float fx = (float)(gx - i * HISTO_LAT) / HISTO_LAT;
      const histo_fields *a = row + (i - rg.i0), *b = a + 1, *c = a + rg.ni, *d = c + 1;
      float t = histo_lerp2(a->tissue, b->tissue, c->tissue, d->tissue, fx, fy);
      nic_tissue_class k = NIC_TISSUE_BACKGROUND;
      float vh = 0, ve = 0;
      if (t > 0) {
        k = histo_classify(t, histo_lerp2(a->tumour, b->tumour, c->tumour, d->tumour, fx, fy),
                           histo_lerp2(a->lymph, b->lymph, c->lymph, d->lymph, fx, fy));
        float g1 = tex_at(l->tex_fine, gx * ts, gy * ts) * (1 / 255.0f);
        if (k == NIC_TISSUE_STROMA) {
          /* Collagen: a streaky texture along the piece's fibre direction,
           * bent by a smooth warp, with pale gaps between bundles. */
          const histo_blob *pc = &l->pieces[s->lat_piece[(j - rg.j0) * rg.ni + (i - rg.i0)]];
          double ca = pc->dir_c, sa = pc->dir_s;
          double warp = tex_at(l->tex_warp, gx * ts * 0.5, gy * ts * 0.5) * (24.0 / 255.0);
          double u = (gx * ca + gy * sa) * ts, v = (gy * ca - gx * sa) * ts + warp;
          float f = tex_at(l->tex_fibre, u, v) * (1 / 255.0f);
          ve = 0.30f + 0.45f * f + 0.08f * g1;
          if (f < 0.22f) ve *= 0.4f + 2.7f * f;
          vh = 0.05f;
        } else if (k == NIC_TISSUE_TUMOUR) {
          float g2 = tex_at(l->tex_fine, gx * ts + 97, gy * ts + 61) * (1 / 255.0f);
          ve = 0.36f + 0.14f * g1;
          vh = 0.16f + 0.12f * g2;
        } else {
          ve = 0.28f + 0.1f * g1;
          vh = 0.28f;
        }
      }
      chr[x] = vh;
      cer[x] = ve;
      if (cls) cls[x] = (uint8_t)k;
      if (counts) counts->pixels[k]++;
    }
  }

  /* Pass 2: nuclei. */
  if (any_tissue) {
    for (int type = 0; type < NUC_NTYPES; type++) {
      double sp = nuc_spacing_um[type] * l->px_per_um;
      int64_t ci0 = (int64_t)floor(lim[0] / sp), ci1 = (int64_t)floor(lim[2] / sp);
      int64_t cj0 = (int64_t)floor(lim[1] / sp), cj1 = (int64_t)floor(lim[3] / sp);
      for (int64_t cj = cj0; cj <= cj1; cj++)
        for (int64_t ci = ci0; ci <= ci1; ci++) {
          nucleus n;
          if (!cell_nucleus(l, &rg, type, ci, cj, lim, &n)) continue;
          draw_nucleus(l, &n, x0, y0, w, h, ch, ce);
          if (counts && n.x >= x0 && n.x < (double)x0 + w && n.y >= y0 && n.y < (double)y0 + h)
            counts->nuclei++;
        }
    }
  }

  /* Pass 3: mitotic figures (sorted by y: only a slice is looked at). */
  for (int m = mitosis_lower_bound(l, (double)lim[1]); m < l->nmit; m++) {
    double mx = l->mit[2 * m], my = l->mit[2 * m + 1];
    if (my >= (double)lim[3]) break;
    if (mx < (double)lim[0] || mx >= (double)lim[2]) continue;
    draw_mitosis(l, m, mx, my, x0, y0, w, h, ch, ce);
    if (counts && mx >= x0 && mx < (double)x0 + w && my >= y0 && my < (double)y0 + h) {
      counts->mitoses++;
      counts->nuclei++;
    }
  }

  /* Pass 4: stains to RGB (optical density through a lookup table). */
  uint32_t ps = (uint32_t)sim_mix(l->seed, KEY_PIXEL);
  for (int y = 0; y < h; y++) {
    const float *chr = ch + (size_t)y * w, *cer = ce + (size_t)y * w;
    uint8_t *out = rgb + (size_t)y * stride;
    for (int x = 0; x < w; x++) {
      float nz = 0.025f * pixel_noise(ps, (int64_t)x0 + x, (int64_t)y0 + y);
      for (int c = 0; c < 3; c++) {
        float od = GLASS[c] + chr[x] * HEMA[c] + cer[x] * EOSIN[c] + nz;
        int q = (int)(od * 256.0f + 0.5f);
        if (q < 0) q = 0;
        if (q > 2047) q = 2047;
        out[3 * x + c] = l->od_lut[q];
      }
    }
  }
  return NIC_OK;
}

nic_status nic_histo_render(const nic_histo_layout *l, int x0, int y0, int w, int h, uint8_t *rgb,
                            int stride, uint8_t *classes, nic_histo_counts *counts,
                            nic_error *err) {
  histo_scratch s = {0};
  nic_status st = histo_render_rect(l, x0, y0, w, h, rgb, stride, classes, counts, &s, err);
  histo_scratch_free(&s);
  return st;
}
