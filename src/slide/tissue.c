/* Tissue detection at low resolution: HSV saturation with Otsu's threshold
 * (clamped), dark/white/ink exclusions, closing then opening, small-piece
 * removal and hole filling. Every size is in micrometres, converted to
 * pixels at the detection spacing. docs/slides.md explains the choices. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "slide/slide_internal.h"

nic_tissue_params nic_tissue_default_params(void) {
  nic_tissue_params p;
  p.mpp = 8.0;
  p.min_threshold = 0.07;
  p.max_threshold = 0.25;
  p.dark_max = 50;
  p.white_min = 250;
  p.ink_hue_min = 70;
  p.ink_hue_max = 230;
  p.ink_min_sat = 0.15;
  p.close_radius_um = 16;
  p.open_radius_um = 16;
  p.min_object_um2 = 10000;
  p.max_hole_um2 = 10000;
  return p;
}

/* What a pixel is before thresholding. */
enum { PX_PLAIN = 0, PX_DARK, PX_WHITE, PX_INK, PX_INK_HUE };

/* Hue in degrees (0..360) of a pixel with max > min. */
static double hue_deg(int r, int g, int b, int max, int min) {
  double d = max - min, h;
  if (max == r)
    h = (g - b) / d;
  else if (max == g)
    h = (b - r) / d + 2;
  else
    h = (r - g) / d + 4;
  h *= 60;
  return h < 0 ? h + 360 : h;
}

/* Saturation (0..255) and class of every pixel. */
static void classify(const uint8_t *rgb, size_t n, const nic_tissue_params *p, uint8_t *sat,
                     uint8_t *cls) {
  for (size_t i = 0; i < n; i++) {
    int r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
    int max = r > g ? (r > b ? r : b) : (g > b ? g : b);
    int min = r < g ? (r < b ? r : b) : (g < b ? g : b);
    double s = max ? (double)(max - min) / max : 0;
    sat[i] = (uint8_t)(s * 255 + 0.5);
    if (max < p->dark_max)
      cls[i] = PX_DARK;
    else if (min >= p->white_min)
      cls[i] = PX_WHITE;
    else if (max > min && (double)(max - min) >= 4) {
      /* Hue needs a few levels of chroma to mean anything. */
      double h = hue_deg(r, g, b, max, min);
      int inky = h >= p->ink_hue_min && h <= p->ink_hue_max;
      cls[i] = !inky ? PX_PLAIN : s >= p->ink_min_sat ? PX_INK : PX_INK_HUE;
    } else {
      cls[i] = PX_PLAIN;
    }
  }
}

/* Otsu's threshold of a 256-bin histogram: the t maximising the
 * between-class variance of {<= t} and {> t}. */
static int otsu(const int64_t hist[256]) {
  double total = 0, sum = 0;
  for (int i = 0; i < 256; i++) {
    total += (double)hist[i];
    sum += (double)i * hist[i];
  }
  if (total == 0) return 255;
  double w0 = 0, sum0 = 0, best = -1;
  int t = 0;
  for (int i = 0; i < 255; i++) {
    w0 += (double)hist[i];
    sum0 += (double)i * hist[i];
    double w1 = total - w0;
    if (w0 == 0 || w1 == 0) continue;
    double m0 = sum0 / w0, m1 = (sum - sum0) / w1;
    double between = w0 * w1 * (m0 - m1) * (m0 - m1);
    if (between > best) {
      best = between;
      t = i;
    }
  }
  return t;
}

static nic_status check_params(const nic_tissue_params *p, double mpp, nic_error *err) {
  if (!(mpp > 0) || !isfinite(mpp))
    return nic_err(err, NIC_EINVAL, "tissue detection needs a positive spacing, got %g", mpp);
  if (!(p->min_threshold >= 0 && p->min_threshold <= p->max_threshold && p->max_threshold <= 1))
    return nic_err(err, NIC_EINVAL, "tissue thresholds must satisfy 0 <= min <= max <= 1");
  if (p->close_radius_um < 0 || p->open_radius_um < 0 || p->min_object_um2 < 0 ||
      p->max_hole_um2 < 0)
    return nic_err(err, NIC_EINVAL, "tissue radii and areas must not be negative");
  return NIC_OK;
}

/* Morphology and cleaning, sizes converted from um to pixels at mpp. */
static nic_status clean_mask(uint8_t *m, int w, int h, double mpp, const nic_tissue_params *p,
                             nic_error *err) {
  int rc = (int)floor(p->close_radius_um / mpp + 0.5);
  int ro = (int)floor(p->open_radius_um / mpp + 0.5);
  double px_area = mpp * mpp;
  nic_status st = nic__dilate(m, w, h, rc, err);
  if (st == NIC_OK) st = nic__erode(m, w, h, rc, err);
  if (st == NIC_OK) st = nic__open_reconstruct(m, w, h, ro, err);
  if (st == NIC_OK)
    st = nic__remove_small(m, w, h, (int64_t)ceil(p->min_object_um2 / px_area), err);
  if (st == NIC_OK) st = nic__fill_holes(m, w, h, (int64_t)ceil(p->max_hole_um2 / px_area), err);
  return st;
}

nic_status nic_tissue_detect_rgb8(const uint8_t *rgb, int w, int h, double mpp,
                                  const nic_tissue_params *p, uint8_t *mask, nic_tissue_info *info,
                                  nic_error *err) {
  nic_tissue_params def = nic_tissue_default_params();
  if (!p) p = &def;
  nic_status st = check_params(p, mpp, err);
  if (st != NIC_OK) return st;
  if (w <= 0 || h <= 0 || (int64_t)w * h > INT32_MAX)
    return nic_err(err, NIC_EINVAL, "tissue detection: image size %d x %d out of range", w, h);
  size_t n = (size_t)w * h;
  uint8_t *sat = malloc(n), *cls = malloc(n);
  if (!sat || !cls) {
    free(sat);
    free(cls);
    return nic_err(err, NIC_ENOMEM, "out of memory detecting tissue");
  }
  classify(rgb, n, p, sat, cls);
  /* Otsu sees glass and tissue, not what would swamp or skew it: padding,
   * black borders and saturated ink. */
  int64_t hist[256] = {0}, counts[5] = {0};
  for (size_t i = 0; i < n; i++) {
    counts[cls[i]]++;
    if (cls[i] == PX_PLAIN || cls[i] == PX_INK_HUE) hist[sat[i]]++;
  }
  int t_otsu = otsu(hist);
  int t_min = (int)floor(p->min_threshold * 255 + 0.5),
      t_max = (int)floor(p->max_threshold * 255 + 0.5);
  int t = t_otsu < t_min ? t_min : t_otsu > t_max ? t_max : t_otsu;
  for (size_t i = 0; i < n; i++) mask[i] = cls[i] == PX_PLAIN && sat[i] > t;
  free(sat);
  free(cls);
  st = clean_mask(mask, w, h, mpp, p, err);
  if (st != NIC_OK) return st;
  if (info) {
    memset(info, 0, sizeof *info);
    info->otsu = t_otsu / 255.0;
    info->threshold = t / 255.0;
    info->pixels = (int64_t)n;
    info->dark = counts[PX_DARK];
    info->white = counts[PX_WHITE];
    info->ink = counts[PX_INK];
    for (size_t i = 0; i < n; i++) info->tissue += mask[i];
    nic_mask tmp = {w, h, 1, 1, mpp, mask};
    info->components = nic_mask_components(&tmp);
  }
  return NIC_OK;
}

nic_status nic_tissue_detect(const nic_slide *s, const nic_tissue_params *p, nic_mask *mask,
                             nic_tissue_info *info, nic_error *err) {
  nic_tissue_params def = nic_tissue_default_params();
  if (!p) p = &def;
  memset(mask, 0, sizeof *mask);
  double sx, sy;
  nic_status st = nic__grid_scale(s, p->mpp, &sx, &sy, err);
  if (st != NIC_OK) return st;
  uint8_t *rgb = NULL;
  int w = 0, h = 0;
  st = nic_slide_thumbnail_rgb8(s, 0, p->mpp, &rgb, &w, &h, NULL, err);
  if (st != NIC_OK) return st;
  st = nic_mask_alloc(mask, w, h, sx, sy, p->mpp, err);
  if (st == NIC_OK) st = nic_tissue_detect_rgb8(rgb, w, h, p->mpp, p, mask->data, info, err);
  free(rgb);
  if (st != NIC_OK) {
    nic_mask_free(mask);
    nic_err_prefix(err, "%s: ", s->path);
  }
  return st;
}
