/* The raster layer: pixel blending and an anti-aliased coverage mask.
 *
 * Shapes are not drawn straight onto the image. Each computes, for every
 * pixel near it, the fraction of the pixel it covers (from the distance of
 * the pixel centre to the shape's outline: a pixel whose centre lies half
 * a pixel inside is fully covered, half a pixel outside not at all), and
 * the mask keeps the largest coverage seen. Compositing then blends one
 * colour through the mask. This gives smooth edges at any angle and width,
 * and a polyline's segments, which overlap at every joint, still blend
 * only once. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "viz/viz_internal.h"

void viz_blend(viz_canvas *c, int x, int y, uint32_t rgb, float a) {
  if (x < 0 || y < 0 || x >= c->w || y >= c->h || !(a > 0)) return;
  if (a > 1) a = 1;
  uint8_t *p = c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
  const uint8_t col[3] = {(uint8_t)(rgb >> 16), (uint8_t)(rgb >> 8), (uint8_t)rgb};
  for (int k = 0; k < 3; k++) p[k] = (uint8_t)lrintf((float)p[k] + a * ((float)col[k] - p[k]));
}

void viz_fill_rect(viz_canvas *c, int x0, int y0, int x1, int y1, uint32_t rgb, float a) {
  if (x0 < 0) x0 = 0;
  if (y0 < 0) y0 = 0;
  if (x1 > c->w) x1 = c->w;
  if (y1 > c->h) y1 = c->h;
  for (int y = y0; y < y1; y++)
    for (int x = x0; x < x1; x++) viz_blend(c, x, y, rgb, a);
}

nic_status viz_mask_init(viz_mask *m, int w, int h, nic_error *err) {
  memset(m, 0, sizeof *m);
  m->a = calloc((size_t)w * (size_t)h, sizeof *m->a);
  if (!m->a) return nic_err(err, NIC_ENOMEM, "out of memory for a %dx%d plot", w, h);
  m->w = w, m->h = h;
  viz_mask_clip(m, 0, 0, w, h);
  m->dx0 = w, m->dy0 = h; /* empty dirty box */
  return NIC_OK;
}

void viz_mask_free(viz_mask *m) {
  free(m->a);
  m->a = NULL;
}

void viz_mask_clip(viz_mask *m, int x0, int y0, int x1, int y1) {
  m->cx0 = x0 < 0 ? 0 : x0;
  m->cy0 = y0 < 0 ? 0 : y0;
  m->cx1 = x1 > m->w ? m->w : x1;
  m->cy1 = y1 > m->h ? m->h : y1;
}

/* The pixel box [x0, x1) x [y0, y1) around a shape spanning the continuous
 * box [lo_x, hi_x] x [lo_y, hi_y], cut to the clip. Returns 0 when empty.
 * Clamping in double first keeps far-off shapes from overflowing ints. */
static int pixel_box(const viz_mask *m, double lo_x, double lo_y, double hi_x, double hi_y, int *x0,
                     int *y0, int *x1, int *y1) {
  if (!(lo_x <= hi_x && lo_y <= hi_y)) return 0; /* also rejects NaN */
  double fx0 = fmax(floor(lo_x), m->cx0), fy0 = fmax(floor(lo_y), m->cy0);
  double fx1 = fmin(ceil(hi_x) + 1, m->cx1), fy1 = fmin(ceil(hi_y) + 1, m->cy1);
  if (fx0 >= fx1 || fy0 >= fy1) return 0;
  *x0 = (int)fx0, *y0 = (int)fy0, *x1 = (int)fx1, *y1 = (int)fy1;
  return 1;
}

/* Raises the coverage of pixel (x, y), inside the clip, to at least a. */
static void cover(viz_mask *m, int x, int y, float a) {
  if (a <= 0) return;
  float *p = &m->a[(size_t)y * (size_t)m->w + (size_t)x];
  if (a > *p) *p = a > 1 ? 1 : a;
  if (x < m->dx0) m->dx0 = x;
  if (y < m->dy0) m->dy0 = y;
  if (x >= m->dx1) m->dx1 = x + 1;
  if (y >= m->dy1) m->dy1 = y + 1;
}

static double clamp01(double v) {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

/* Coverage of a point at along-track distance u under a dash pattern:
 * 1 well inside a dash, 0 well inside a gap, a ramp one pixel wide at
 * each dash end. */
static double dash_cover(const viz_dash *d, double u) {
  double period = d->on + d->off, pos = fmod(u, period);
  double edge = pos < d->on ? fmin(pos, d->on - pos) : -fmin(pos - d->on, period - pos);
  return clamp01(edge + 0.5);
}

void viz_mask_line(viz_mask *m, double x0, double y0, double x1, double y1, double width,
                   viz_dash *dash) {
  double hw = 0.5 * width, dx = x1 - x0, dy = y1 - y0;
  double len2 = dx * dx + dy * dy, len = sqrt(len2);
  int use_dash = dash && dash->on > 0 && dash->off > 0;
  int bx0, by0, bx1, by1;
  if (pixel_box(m, fmin(x0, x1) - hw - 1, fmin(y0, y1) - hw - 1, fmax(x0, x1) + hw + 1,
                fmax(y0, y1) + hw + 1, &bx0, &by0, &bx1, &by1)) {
    for (int y = by0; y < by1; y++)
      for (int x = bx0; x < bx1; x++) {
        /* Distance from the pixel centre to the nearest point of the segment. */
        double px = x + 0.5 - x0, py = y + 0.5 - y0;
        double t = len2 > 0 ? clamp01((px * dx + py * dy) / len2) : 0;
        double ex = px - t * dx, ey = py - t * dy;
        double a = clamp01(hw + 0.5 - sqrt(ex * ex + ey * ey));
        if (a > 0 && use_dash) a *= dash_cover(dash, dash->phase + t * len);
        cover(m, x, y, (float)a);
      }
  }
  if (dash && isfinite(len)) dash->phase += len;
}

void viz_mask_disc(viz_mask *m, double cx, double cy, double r) {
  int x0, y0, x1, y1;
  if (!pixel_box(m, cx - r - 1, cy - r - 1, cx + r + 1, cy + r + 1, &x0, &y0, &x1, &y1)) return;
  for (int y = y0; y < y1; y++)
    for (int x = x0; x < x1; x++)
      cover(m, x, y, (float)clamp01(r + 0.5 - hypot(x + 0.5 - cx, y + 0.5 - cy)));
}

void viz_mask_square(viz_mask *m, double cx, double cy, double half) {
  int x0, y0, x1, y1;
  if (!pixel_box(m, cx - half - 1, cy - half - 1, cx + half + 1, cy + half + 1, &x0, &y0, &x1, &y1))
    return;
  for (int y = y0; y < y1; y++)
    for (int x = x0; x < x1; x++) {
      double ax = clamp01(half + 0.5 - fabs(x + 0.5 - cx));
      double ay = clamp01(half + 0.5 - fabs(y + 0.5 - cy));
      cover(m, x, y, (float)(ax * ay));
    }
}

void viz_mask_diamond(viz_mask *m, double cx, double cy, double r) {
  int x0, y0, x1, y1;
  if (!pixel_box(m, cx - r - 1, cy - r - 1, cx + r + 1, cy + r + 1, &x0, &y0, &x1, &y1)) return;
  for (int y = y0; y < y1; y++)
    for (int x = x0; x < x1; x++) {
      /* |dx| + |dy| = r is the outline; the distance to it is that / sqrt 2. */
      double d = (fabs(x + 0.5 - cx) + fabs(y + 0.5 - cy) - r) * M_SQRT1_2;
      cover(m, x, y, (float)clamp01(0.5 - d));
    }
}

void viz_mask_marker(viz_mask *m, nic_marker mk, double cx, double cy, double size) {
  double r = 0.5 * size, stroke = fmax(1.5, size / 6);
  switch (mk) {
  case NIC_MARKER_CIRCLE:
    viz_mask_disc(m, cx, cy, r);
    break;
  case NIC_MARKER_SQUARE:
    viz_mask_square(m, cx, cy, r * 0.85);
    break;
  case NIC_MARKER_DIAMOND:
    viz_mask_diamond(m, cx, cy, r * 1.15);
    break;
  case NIC_MARKER_PLUS:
    viz_mask_line(m, cx - r, cy, cx + r, cy, stroke, NULL);
    viz_mask_line(m, cx, cy - r, cx, cy + r, stroke, NULL);
    break;
  case NIC_MARKER_CROSS:
    r *= 0.8;
    viz_mask_line(m, cx - r, cy - r, cx + r, cy + r, stroke, NULL);
    viz_mask_line(m, cx - r, cy + r, cx + r, cy - r, stroke, NULL);
    break;
  default:
    break;
  }
}

void viz_mask_composite(viz_mask *m, viz_canvas *c, uint32_t rgb, uint8_t *ink) {
  for (int y = m->dy0; y < m->dy1; y++)
    for (int x = m->dx0; x < m->dx1; x++) {
      float *a = &m->a[(size_t)y * (size_t)m->w + (size_t)x];
      if (*a <= 0) continue;
      viz_blend(c, x, y, rgb, *a);
      if (ink && *a > 0.25f) ink[(size_t)y * (size_t)m->w + (size_t)x] = 1;
      *a = 0;
    }
  m->dx0 = m->w, m->dy0 = m->h, m->dx1 = 0, m->dy1 = 0;
}
