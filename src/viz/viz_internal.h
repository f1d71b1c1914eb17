/* The raster layer under the plots: an RGB canvas, an anti-aliasing
 * coverage mask that shapes are drawn into, and bitmap text. Private to
 * src/viz/. Colours here are plain 0xRRGGBB. */
#ifndef NIC_VIZ_INTERNAL_H
#define NIC_VIZ_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "nic/plot.h"

typedef struct viz_canvas {
  int w, h;
  uint8_t *px; /* w * h * 3, RGB */
} viz_canvas;

/* Blends colour rgb over pixel (x, y) with opacity a in [0, 1]; pixels
 * outside the canvas are ignored. */
void viz_blend(viz_canvas *c, int x, int y, uint32_t rgb, float a);
/* Fills the pixels x0 <= x < x1, y0 <= y < y1 (clipped to the canvas). */
void viz_fill_rect(viz_canvas *c, int x0, int y0, int x1, int y1, uint32_t rgb, float a);

/* A coverage mask the size of the canvas: shapes add coverage (the max of
 * what is there and the shape's own, so overlapping pieces of one series
 * do not darken where they meet), then the whole mask is composited in one
 * colour and cleared. Drawing is limited to the clip rectangle. */
typedef struct viz_mask {
  int w, h;
  float *a;
  int cx0, cy0, cx1, cy1; /* clip: cx0 <= x < cx1, cy0 <= y < cy1 */
  int dx0, dy0, dx1, dy1; /* dirty box, same convention; empty when dx0 >= dx1 */
} viz_mask;

nic_status viz_mask_init(viz_mask *m, int w, int h, nic_error *err);
void viz_mask_free(viz_mask *m);
void viz_mask_clip(viz_mask *m, int x0, int y0, int x1, int y1);

/* A dash pattern along a polyline: on/off lengths in pixels (on <= 0 for a
 * solid line) and the distance already travelled, carried from one segment
 * to the next so dashes flow around corners. */
typedef struct viz_dash {
  double on, off, phase;
} viz_dash;

/* A line of the given width from (x0, y0) to (x1, y1) with round caps, in
 * continuous pixel coordinates (pixel (i, j) covers [i, i+1) x [j, j+1)).
 * dash may be NULL. */
void viz_mask_line(viz_mask *m, double x0, double y0, double x1, double y1, double width,
                   viz_dash *dash);
void viz_mask_disc(viz_mask *m, double cx, double cy, double r);
void viz_mask_square(viz_mask *m, double cx, double cy, double half);
void viz_mask_diamond(viz_mask *m, double cx, double cy, double r);
/* Marker of `size` pixels across centred on (cx, cy). */
void viz_mask_marker(viz_mask *m, nic_marker mk, double cx, double cy, double size);

/* Composites the mask onto the canvas in colour rgb and clears it. When
 * ink is non-NULL (w * h bytes), pixels with visible coverage are marked
 * there (the legend avoids them). */
void viz_mask_composite(viz_mask *m, viz_canvas *c, uint32_t rgb, uint8_t *ink);

/* ---- Text: a 5x7 bitmap font (plus 2 rows of descenders) in 6x11 cells,
 * drawn at an integer scale. ---- */

#define VIZ_GLYPH_W 5
#define VIZ_GLYPH_H 9 /* 7 above the baseline, 2 below */
#define VIZ_CAP_H 7
#define VIZ_ADVANCE 6

/* Rows of the glyph of the UTF-8 character at *s (advancing *s past it);
 * bit 4 is the leftmost column. Unknown characters draw as '?'. */
const uint8_t *viz_glyph(const char **s);
/* Characters (not bytes) in a UTF-8 string. */
int viz_text_len(const char *s);
/* Width and height in pixels of s at the given scale. */
int viz_text_width(const char *s, int scale);
int viz_text_height(int scale);

/* Draws s with its top-left corner at (x, y). Vertical text reads bottom
 * to top (rotated 90 degrees counter-clockwise); (x, y) is then the
 * top-left of its rotated box, viz_text_height wide and viz_text_width
 * tall. bold thickens strokes by one pixel. */
void viz_draw_text(viz_canvas *c, int x, int y, const char *s, int scale, uint32_t rgb,
                   int vertical, int bold);

/* Colour i of the plots' categorical palette (0xRRGGBB). */
uint32_t viz_palette(int i);

/* Whether s holds only characters the font draws. */
int viz_text_ok(const char *s);

#endif
