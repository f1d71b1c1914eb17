/* Raster plots written as PNG files: line, step and scatter series with
 * error bars on numeric axes, ROC and Kaplan-Meier presets, plus helpers
 * to write RGB8 images and to blend a heatmap of per-cell values (model
 * attention, tumour probability) over a slide thumbnail.
 *
 * Everything is drawn by libnic itself (anti-aliased coverage rasterizer,
 * an embedded 5x7 bitmap font) and written with libpng; there is no other
 * dependency and no global state. */
#ifndef NIC_PLOT_H
#define NIC_PLOT_H

#include <stddef.h>
#include <stdint.h>

#include "nic/metrics.h"
#include "nic/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Images ---- */

/* An 8-bit image in memory: w x h pixels of `channels` interleaved bytes
 * (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA), rows top to bottom, `stride`
 * bytes apart. */
typedef struct nic_png_image {
  const uint8_t *px;
  int w, h, channels;
  size_t stride;
} nic_png_image;

/* Writes an image as a PNG file with zlib level `zlevel` (0-9; -1 for the
 * default 6; levels up to 3 use the fast SUB filter). A failed write
 * removes the partial file and names it in the error. */
nic_status nic_png_write(const char *path, const nic_png_image *im, int zlevel, nic_error *err);

/* Writes w x h interleaved 8-bit RGB pixels (rows top to bottom, no
 * padding) as a PNG file. */
nic_status nic_png_write_rgb8(const char *path, const uint8_t *rgb, int w, int h, nic_error *err);

typedef enum nic_colormap {
  NIC_CMAP_VIRIDIS, /* perceptually uniform dark blue -> yellow (matplotlib's default) */
  NIC_CMAP_JET,     /* blue -> cyan -> yellow -> red */
  NIC_CMAP_GRAY     /* black -> white */
} nic_colormap;

/* Colour of t in [0, 1] (clamped; NaN gives the t = 0 colour). */
void nic_colormap_rgb(nic_colormap cm, double t, uint8_t rgb[3]);

typedef struct nic_heatmap_opts {
  nic_colormap cmap;
  float alpha;      /* opacity of the colour over the image, in [0, 1] */
  float vmin, vmax; /* values mapped to the ends of the colour map; when
                     * !(vmin < vmax) the finite min and max of the data */
} nic_heatmap_opts;

nic_heatmap_opts nic_heatmap_default_opts(void); /* viridis, alpha 0.5, auto range */

/* Blends a vw x vh grid of values over the w x h RGB image in place: the
 * grid is stretched over the whole image (each image pixel takes the value
 * of the cell it falls in), a value v becomes the colour c of
 * (v - vmin) / (vmax - vmin) and the pixel p becomes
 * round((1 - alpha) p + alpha c). NaN cells are transparent (the pixel is
 * left as it is), e.g. background outside the tissue. */
nic_status nic_heatmap_blend(uint8_t *rgb, int w, int h, const float *values, int vw, int vh,
                             const nic_heatmap_opts *opts, nic_error *err);

/* ---- Plots ---- */

/* Colours are 0xFFRRGGBB: NIC_RGB(r, g, b). 0 (NIC_COLOR_AUTO) takes the
 * next colour of a 10-colour palette of distinct hues. */
#define NIC_RGB(r, g, b)                                                                           \
  (0xFF000000u | ((uint32_t)(r) << 16) | ((uint32_t)(g) << 8) | (uint32_t)(b))
#define NIC_COLOR_AUTO 0u

typedef enum nic_line_style {
  NIC_LINE_SOLID,
  NIC_LINE_DASHED,
  NIC_LINE_DOTTED,
  NIC_LINE_NONE /* markers only: a scatter plot */
} nic_line_style;

typedef enum nic_marker {
  NIC_MARKER_NONE,
  NIC_MARKER_CIRCLE,
  NIC_MARKER_SQUARE,
  NIC_MARKER_DIAMOND,
  NIC_MARKER_PLUS, /* e.g. censoring marks on survival curves */
  NIC_MARKER_CROSS
} nic_marker;

/* One data series. A zero-initialised struct with x, y and n set is a
 * solid line in the next palette colour. NaN points break the line. */
typedef struct nic_series {
  const double *x, *y; /* n points, copied by nic_plot_add */
  size_t n;
  const double *ylo, *yhi; /* optional (both or neither): error bar ends per
                            * point, absolute values, e.g. a bootstrap CI */
  const char *label;       /* legend entry; NULL or "" = not in the legend */
  uint32_t color;          /* NIC_RGB(...) or NIC_COLOR_AUTO */
  float line_width;        /* pixels; 0 = 2.5 */
  nic_line_style line;
  int step;          /* 1: post-step, y holds until the next x (survival curves) */
  nic_marker marker; /* drawn at every point */
  float marker_size; /* pixels across; 0 = 9 */
} nic_series;

typedef enum nic_legend_pos {
  NIC_LEGEND_AUTO, /* the inside corner that hides the least data */
  NIC_LEGEND_UPPER_RIGHT,
  NIC_LEGEND_UPPER_LEFT,
  NIC_LEGEND_LOWER_RIGHT,
  NIC_LEGEND_LOWER_LEFT,
  NIC_LEGEND_NONE
} nic_legend_pos;

typedef struct nic_plot nic_plot;

/* A blank plot of width x height pixels (at least 200 x 150). */
nic_status nic_plot_create(nic_plot **out, int width, int height, nic_error *err);
void nic_plot_free(nic_plot *p);

/* Sets the title and axis labels (copied); NULL leaves one unchanged, ""
 * removes it. Printable ASCII plus the UTF-8 signs ±, µ and °. */
nic_status nic_plot_set_labels(nic_plot *p, const char *title, const char *xlabel,
                               const char *ylabel, nic_error *err);

/* Axis limits; NAN for either end (the default) fits the data with a 4%
 * margin. Ticks fall on round numbers (1, 2, 5 x 10^k) inside the limits. */
void nic_plot_set_xlim(nic_plot *p, double lo, double hi);
void nic_plot_set_ylim(nic_plot *p, double lo, double hi);
/* Logarithmic x and/or y axis (values <= 0 are then left out); ticks at
 * powers of ten, with 2 and 5 between them when there is room. */
void nic_plot_set_log(nic_plot *p, int log_x, int log_y);
void nic_plot_set_legend(nic_plot *p, nic_legend_pos pos);

nic_status nic_plot_add(nic_plot *p, const nic_series *s, nic_error *err);

/* An extra line of text in the legend box, below the entries (e.g.
 * "log-rank p = 0.003"). */
nic_status nic_plot_add_note(nic_plot *p, const char *text, nic_error *err);

/* Draws the plot into a malloc'd width x height RGB8 buffer. */
nic_status nic_plot_render(nic_plot *p, uint8_t **rgb, nic_error *err);
nic_status nic_plot_save_png(nic_plot *p, const char *path, nic_error *err);

/* Pixel position (x right, y down, pixel centres at +0.5) of the data
 * point (x, y) in the last rendering; 0 before any rendering, else 1. */
int nic_plot_to_pixel(const nic_plot *p, double x, double y, double *px, double *py);

/* ROC curves on the unit square with the chance diagonal; legend entries
 * "<label> (AUC 0.912)", or "AUC 0.912" when labels is NULL. The caller
 * may add a title or notes, then saves and frees the plot. */
nic_status nic_plot_roc(nic_plot **out, const nic_roc *curves, const char *const *labels, int n,
                        nic_error *err);

/* Kaplan-Meier step curves from time 0 (S = 1), one per group, with a
 * '+' at each censoring time; legend entries "<label> (n = 21)". */
nic_status nic_plot_km(nic_plot **out, const nic_km *curves, const char *const *labels, int n,
                       nic_error *err);

#ifdef __cplusplus
}
#endif
#endif
