/* Colour maps and heatmap blending over RGB images. */
#include <math.h>

#include "viz/viz_internal.h"

/* matplotlib's viridis sampled at 10 evenly spaced points; linear
 * interpolation between them stays within a couple of levels of the full
 * 256-entry table. */
static const uint8_t viridis[10][3] = {{0x44, 0x01, 0x54}, {0x48, 0x28, 0x78}, {0x3e, 0x49, 0x89},
                                       {0x31, 0x68, 0x8e}, {0x26, 0x82, 0x8e}, {0x1f, 0x9e, 0x89},
                                       {0x35, 0xb7, 0x79}, {0x6e, 0xce, 0x58}, {0xb5, 0xde, 0x2b},
                                       {0xfd, 0xe7, 0x25}};

static uint8_t to_u8(double v) {
  return (uint8_t)lrint(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Jet: each channel a trapezoid, peaking a quarter of the range apart. */
static double jet_channel(double t, double centre) {
  double v = 1.5 - 4 * fabs(t - centre);
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

void nic_colormap_rgb(nic_colormap cm, double t, uint8_t rgb[3]) {
  if (!(t >= 0)) t = 0; /* NaN too */
  if (t > 1) t = 1;
  switch (cm) {
  case NIC_CMAP_JET:
    rgb[0] = to_u8(255 * jet_channel(t, 0.75));
    rgb[1] = to_u8(255 * jet_channel(t, 0.5));
    rgb[2] = to_u8(255 * jet_channel(t, 0.25));
    return;
  case NIC_CMAP_GRAY:
    rgb[0] = rgb[1] = rgb[2] = to_u8(255 * t);
    return;
  default: {
    double f = t * 9;
    int i = f >= 9 ? 8 : (int)f;
    double u = f - i;
    for (int k = 0; k < 3; k++)
      rgb[k] = to_u8(viridis[i][k] + u * (viridis[i + 1][k] - viridis[i][k]));
    return;
  }
  }
}

nic_heatmap_opts nic_heatmap_default_opts(void) {
  return (nic_heatmap_opts){.cmap = NIC_CMAP_VIRIDIS, .alpha = 0.5f, .vmin = 0, .vmax = 0};
}

/* The finite min and max of the values; lo > hi when there is none. */
static void finite_range(const float *v, size_t n, float *lo, float *hi) {
  *lo = INFINITY, *hi = -INFINITY;
  for (size_t i = 0; i < n; i++)
    if (isfinite(v[i])) {
      if (v[i] < *lo) *lo = v[i];
      if (v[i] > *hi) *hi = v[i];
    }
}

nic_status nic_heatmap_blend(uint8_t *rgb, int w, int h, const float *values, int vw, int vh,
                             const nic_heatmap_opts *opts, nic_error *err) {
  nic_heatmap_opts o = opts ? *opts : nic_heatmap_default_opts();
  if (!rgb || !values) return nic_err(err, NIC_EINVAL, "heatmap_blend: NULL argument");
  if (w <= 0 || h <= 0 || vw <= 0 || vh <= 0)
    return nic_err(err, NIC_EINVAL, "heatmap_blend: bad sizes: image %dx%d, values %dx%d", w, h, vw,
                   vh);
  if (!(o.alpha >= 0 && o.alpha <= 1))
    return nic_err(err, NIC_EINVAL, "heatmap_blend: alpha %g is not in [0, 1]", o.alpha);
  float lo = o.vmin, hi = o.vmax;
  if (!(lo < hi)) finite_range(values, (size_t)vw * (size_t)vh, &lo, &hi);
  if (lo > hi) return NIC_OK; /* nothing but NaN: all transparent */
  double span = hi > lo ? (double)hi - lo : 0;
  for (int y = 0; y < h; y++) {
    /* The cell a pixel falls in: floor(y * vh / h), in 64 bits. */
    const float *row = values + (size_t)((int64_t)y * vh / h) * (size_t)vw;
    uint8_t *p = rgb + (size_t)y * (size_t)w * 3;
    for (int x = 0; x < w; x++, p += 3) {
      float v = row[(int64_t)x * vw / w];
      if (isnan(v)) continue;
      uint8_t c[3];
      /* A constant map (span 0) shows the middle of the colour map. */
      nic_colormap_rgb(o.cmap, span > 0 ? ((double)v - lo) / span : 0.5, c);
      for (int k = 0; k < 3; k++) p[k] = to_u8((1 - o.alpha) * p[k] + o.alpha * c[k]);
    }
  }
  return NIC_OK;
}
