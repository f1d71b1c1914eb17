/* Internals of the histo simulator, shared by the layout (histo_layout.c),
 * the renderer (histo_render.c) and the TIFF writer (histo_tiff.c).
 *
 * The model in one paragraph: a slide is a few tissue pieces on glass;
 * some carry tumour lesions and lymphocyte aggregates. Each of those is a
 * "blob", a star-shaped region whose radius varies with the angle, and the
 * region maps are scalar fields (positive inside) sampled on a lattice of
 * HISTO_LAT px and interpolated bilinearly, with seeded value noise that
 * roughens the borders. Nuclei come from jittered grids whose every cell
 * draws from its own hashed stream, so any rectangle of the slide can be
 * drawn alone, and the same pixel always comes out the same. */
#ifndef NIC_HISTO_INTERNAL_H
#define NIC_HISTO_INTERNAL_H

#include <stdint.h>

#include "nic/sim.h"

#define HISTO_LAT 8        /* lattice step of the region fields, px */
#define HISTO_HARM 5       /* harmonics of a blob outline */
#define HISTO_MAXPIECES 4  /* tissue pieces per slide */
#define HISTO_MAXLESIONS 6 /* tumour lesions per slide */
#define HISTO_MAXAGGS 16   /* lymphocyte aggregates per slide */
#define HISTO_TEX 256      /* side of the periodic texture tables (power of 2) */
#define HISTO_TILE 256     /* TIFF tile side */

/* A star-shaped region: radius(theta) = r * (1 + sum_k ca[k] cos(k theta)
 * + sa[k] sin(k theta)), k = 1..HISTO_HARM. */
typedef struct histo_blob {
  float cx, cy; /* centre, level-0 px */
  float r;      /* mean radius, px */
  float rmax;   /* bound on the radius, px */
  float ca[HISTO_HARM], sa[HISTO_HARM];
  float angle;        /* fibre direction (tissue pieces), radians */
  float dir_c, dir_s; /* its cosine and sine */
} histo_blob;

/* The three region fields at one point. */
typedef struct histo_fields {
  float tissue, tumour, lymph;
} histo_fields;

struct nic_histo_layout {
  nic_histo_info info;
  uint64_t seed; /* this slide's seed: nuclei, mitoses and textures hash from it */
  double mpp;
  int threads; /* for measuring the layout; 0 = OpenMP's default */
  float px_per_um;
  int npieces, nlesions, naggs;
  histo_blob pieces[HISTO_MAXPIECES];
  histo_blob lesions[HISTO_MAXLESIONS];
  histo_blob aggs[HISTO_MAXAGGS];
  float bbox[4]; /* x0, y0, x1, y1 of all tissue, margin included: glass outside */
  int nmit;
  double *mit;     /* 2 * nmit: mitotic figure centres */
  float tex_scale; /* texture px per slide px: keeps texture sizes in um */
  /* Periodic textures, HISTO_TEX^2 bytes each, 0..255. */
  uint8_t *tex_fine;    /* isotropic grain: chromatin, cytoplasm */
  uint8_t *tex_fibre;   /* streaks along x: collagen fibres */
  uint8_t *tex_warp;    /* smooth: bends the fibres */
  uint8_t od_lut[2048]; /* 255 * exp(-q / 256): optical density to intensity */
};

/* Region fields at a lattice point (lattice coordinates i, j: pixel 8i, 8j). */
histo_fields histo_fields_at_lattice(const nic_histo_layout *l, int64_t i, int64_t j);

/* Tissue piece (index) that dominates lattice point (i, j), for fibre direction. */
int histo_piece_at_lattice(const nic_histo_layout *l, int64_t i, int64_t j);

/* Class from interpolated field values; tumour wins over lymphocytes,
 * both only inside tissue. */
static inline nic_tissue_class histo_classify(float t, float u, float ly) {
  if (t <= 0) return NIC_TISSUE_BACKGROUND;
  if (u > 0) return NIC_TISSUE_TUMOUR;
  if (ly > 0) return NIC_TISSUE_LYMPHOCYTES;
  return NIC_TISSUE_STROMA;
}

/* Bilinear interpolation, written once so that every caller (the per-pixel
 * loop, class_at, nuclei acceptance) gets the same rounding. */
static inline float histo_lerp2(float a, float b, float c, float d, float fx, float fy) {
  float top = a + (b - a) * fx, bot = c + (d - c) * fx;
  return top + (bot - top) * fy;
}

/* Per-thread scratch for rendering a region. */
typedef struct histo_scratch {
  int cap_px, cap_lat;
  float *ch, *ce;     /* hematoxylin and eosin amounts per pixel */
  histo_fields *lat;  /* region fields on the lattice covering the region */
  uint8_t *lat_piece; /* dominant piece per lattice point */
} histo_scratch;

void histo_scratch_free(histo_scratch *s);

/* nic_histo_render with caller-owned scratch (grown as needed). */
nic_status histo_render_rect(const nic_histo_layout *l, int x0, int y0, int w, int h, uint8_t *rgb,
                             int stride, uint8_t *classes, nic_histo_counts *counts,
                             histo_scratch *s, nic_error *err);

/* Periodic value noise in [0, 1] sampled at lattice coordinates (seeded),
 * and non-periodic signed noise in [-1, 1] at a scale in px. */
float histo_value_noise(uint64_t seed, double x, double y);

#endif
