/* Plots: series on numeric axes with ticks, grid, labels and a legend,
 * rendered through the coverage mask of raster.c and the bitmap font of
 * font.c.
 *
 * Rendering lays the figure out first: the data range (or the limits set)
 * gives the axis ranges, round-number ticks are chosen for the pixels
 * available, the margins are sized to the tick labels and titles, and the
 * remaining box is the plot area. Then come, back to front: grid, series
 * (clipped to the plot area), frame and ticks, text, legend. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "viz/viz_internal.h"

#define TEXT_SCALE 2 /* the 5x7 font drawn at 2x: 10x14 capitals */
#define TICK_LEN 5   /* outward tick marks, pixels */
#define MAX_TICKS 40
#define BACKGROUND 0xFFFFFF
#define GRID_RGB 0xE6E6E6
#define FRAME_RGB 0x404040
#define TEXT_RGB 0x202020

typedef struct plot_series {
  double *x, *y, *ylo, *yhi; /* owned copies */
  size_t n;
  char *label;
  uint32_t rgb;
  float line_width, marker_size;
  nic_line_style line;
  int step;
  nic_marker marker;
} plot_series;

struct nic_plot {
  int w, h;
  char *title, *xlabel, *ylabel;
  double xlim[2], ylim[2]; /* NAN = fit the data */
  int logx, logy;          /* logarithmic axes */
  nic_legend_pos legend;
  plot_series *series;
  int nseries, cap_series;
  char **notes;
  int nnotes, cap_notes;
  int next_color;
  /* The last layout, for nic_plot_to_pixel: the plot area spans pixel
   * columns L..R and rows T..B (frame included), showing [x0, x1] x
   * [y0, y1] (in log10 units on a log axis). */
  int laid_out;
  int L, R, T, B;
  double x0, x1, y0, y1;
};

/* Tableau's 10 categorical colours: distinct hues, readable on white. */
static const uint32_t palette[10] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd,
                                     0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf};

uint32_t viz_palette(int i) {
  return palette[((i % 10) + 10) % 10];
}

/* ---- Building a plot ---- */

nic_status nic_plot_create(nic_plot **out, int width, int height, nic_error *err) {
  if (!out) return nic_err(err, NIC_EINVAL, "plot_create: NULL argument");
  *out = NULL;
  if (width < 200 || height < 150 || width > 16384 || height > 16384)
    return nic_err(err, NIC_EINVAL, "plot size %dx%d is outside 200x150 .. 16384x16384", width,
                   height);
  nic_plot *p = calloc(1, sizeof *p);
  if (!p) return nic_err(err, NIC_ENOMEM, "out of memory");
  p->w = width, p->h = height;
  p->xlim[0] = p->xlim[1] = p->ylim[0] = p->ylim[1] = NAN;
  *out = p;
  return NIC_OK;
}

static void series_free(plot_series *s) {
  free(s->x);
  free(s->y);
  free(s->ylo);
  free(s->yhi);
  free(s->label);
}

void nic_plot_free(nic_plot *p) {
  if (!p) return;
  for (int i = 0; i < p->nseries; i++) series_free(&p->series[i]);
  for (int i = 0; i < p->nnotes; i++) free(p->notes[i]);
  free(p->series);
  free(p->notes);
  free(p->title);
  free(p->xlabel);
  free(p->ylabel);
  free(p);
}

/* Replaces *dst with a copy of src ("" clears it); NULL src keeps *dst. */
static nic_status set_text(char **dst, const char *src, nic_error *err) {
  if (!src) return NIC_OK;
  char *c = NULL;
  if (*src && !(c = strdup(src))) return nic_err(err, NIC_ENOMEM, "out of memory");
  free(*dst);
  *dst = c;
  return NIC_OK;
}

nic_status nic_plot_set_labels(nic_plot *p, const char *title, const char *xlabel,
                               const char *ylabel, nic_error *err) {
  if (!p) return nic_err(err, NIC_EINVAL, "plot_set_labels: NULL plot");
  nic_status s = set_text(&p->title, title, err);
  if (s == NIC_OK) s = set_text(&p->xlabel, xlabel, err);
  if (s == NIC_OK) s = set_text(&p->ylabel, ylabel, err);
  return s;
}

void nic_plot_set_xlim(nic_plot *p, double lo, double hi) {
  if (p) p->xlim[0] = lo, p->xlim[1] = hi;
}

void nic_plot_set_ylim(nic_plot *p, double lo, double hi) {
  if (p) p->ylim[0] = lo, p->ylim[1] = hi;
}

void nic_plot_set_log(nic_plot *p, int log_x, int log_y) {
  if (p) p->logx = !!log_x, p->logy = !!log_y;
}

void nic_plot_set_legend(nic_plot *p, nic_legend_pos pos) {
  if (p) p->legend = pos;
}

/* A malloc'd copy of n doubles (NULL in, NULL out). */
static double *dup_doubles(const double *v, size_t n, int *oom) {
  if (!v) return NULL;
  double *c = malloc(n * sizeof *c);
  if (!c)
    *oom = 1;
  else
    memcpy(c, v, n * sizeof *c);
  return c;
}

nic_status nic_plot_add(nic_plot *p, const nic_series *s, nic_error *err) {
  if (!p || !s || !s->x || !s->y) return nic_err(err, NIC_EINVAL, "plot_add: NULL argument");
  if (s->n == 0) return nic_err(err, NIC_EINVAL, "plot_add: empty series");
  if (!s->ylo != !s->yhi)
    return nic_err(err, NIC_EINVAL, "plot_add: error bars need both ylo and yhi");
  if ((unsigned)s->line > NIC_LINE_NONE || (unsigned)s->marker > NIC_MARKER_CROSS)
    return nic_err(err, NIC_EINVAL, "plot_add: unknown line style or marker");
  if (!(s->line_width >= 0 && s->line_width <= 50 && s->marker_size >= 0 && s->marker_size <= 100))
    return nic_err(err, NIC_EINVAL, "plot_add: line width or marker size out of range");
  if (p->nseries == p->cap_series) {
    int cap = p->cap_series ? 2 * p->cap_series : 8;
    plot_series *ns = realloc(p->series, (size_t)cap * sizeof *ns);
    if (!ns) return nic_err(err, NIC_ENOMEM, "out of memory");
    p->series = ns, p->cap_series = cap;
  }
  plot_series c = {.n = s->n,
                   .line_width = s->line_width > 0 ? s->line_width : 2.5f,
                   .marker_size = s->marker_size > 0 ? s->marker_size : 9.0f,
                   .line = s->line,
                   .step = s->step,
                   .marker = s->marker};
  int oom = 0;
  c.x = dup_doubles(s->x, s->n, &oom);
  c.y = dup_doubles(s->y, s->n, &oom);
  c.ylo = dup_doubles(s->ylo, s->n, &oom);
  c.yhi = dup_doubles(s->yhi, s->n, &oom);
  if (s->label && *s->label && !(c.label = strdup(s->label))) oom = 1;
  if (oom) {
    series_free(&c);
    return nic_err(err, NIC_ENOMEM, "out of memory copying a series of %zu points", s->n);
  }
  c.rgb = s->color == NIC_COLOR_AUTO ? viz_palette(p->next_color++) : (s->color & 0xFFFFFF);
  p->series[p->nseries++] = c;
  return NIC_OK;
}

nic_status nic_plot_add_note(nic_plot *p, const char *text, nic_error *err) {
  if (!p || !text) return nic_err(err, NIC_EINVAL, "plot_add_note: NULL argument");
  if (p->nnotes == p->cap_notes) {
    int cap = p->cap_notes ? 2 * p->cap_notes : 4;
    char **nn = realloc(p->notes, (size_t)cap * sizeof *nn);
    if (!nn) return nic_err(err, NIC_ENOMEM, "out of memory");
    p->notes = nn, p->cap_notes = cap;
  }
  if (!(p->notes[p->nnotes] = strdup(text))) return nic_err(err, NIC_ENOMEM, "out of memory");
  p->nnotes++;
  return NIC_OK;
}

/* ---- Axes: ranges, ticks, labels ---- */

/* A value as placed on an axis: log10 on a log axis, where values <= 0
 * have no place (NaN). */
static double axis_value(int log, double v) {
  return log ? (v > 0 ? log10(v) : NAN) : v;
}

typedef struct axis {
  int log;
  double lo, hi; /* the range shown, in axis units (log10 on a log axis) */
  double step;   /* tick spacing */
  int nticks;
  double tick[MAX_TICKS];
  char label[MAX_TICKS][32];
  int max_label_w; /* widest tick label, pixels */
} axis;

/* Extent of the finite values of the series along x (which = 0) or y
 * (1, error bars included). Returns 0 when there is none. */
static int data_extent(const nic_plot *p, int which, double *lo, double *hi) {
  int log = which ? p->logy : p->logx;
  *lo = INFINITY, *hi = -INFINITY;
  for (int i = 0; i < p->nseries; i++) {
    const plot_series *s = &p->series[i];
    const double *cols[3] = {which ? s->y : s->x, which ? s->ylo : NULL, which ? s->yhi : NULL};
    for (int c = 0; c < 3; c++)
      for (size_t k = 0; cols[c] && k < s->n; k++) {
        double v = axis_value(log, cols[c][k]);
        if (isfinite(v)) *lo = fmin(*lo, v), *hi = fmax(*hi, v);
      }
  }
  return *lo <= *hi;
}

/* The range of an axis: the limits set, with unset (NaN) ends fitted to
 * the data plus a 4% margin. */
static nic_status axis_range(const nic_plot *p, int which, double *lo, double *hi, nic_error *err) {
  int log = which ? p->logy : p->logx;
  const double *user = which ? p->ylim : p->xlim;
  double lim[2] = {axis_value(log, user[0]), axis_value(log, user[1])};
  for (int k = 0; k < 2; k++)
    if (!isnan(user[k]) && isnan(lim[k]))
      return nic_err(err, NIC_EINVAL, "plot: %s limit %g on a log axis", which ? "y" : "x",
                     user[k]);
  double dlo, dhi;
  if (!data_extent(p, which, &dlo, &dhi)) dlo = 0, dhi = 1;
  if (!isnan(lim[0]) && isnan(lim[1])) dlo = fmin(dlo, lim[0]), dhi = fmax(dhi, lim[0]);
  if (isnan(lim[0]) && !isnan(lim[1])) dlo = fmin(dlo, lim[1]), dhi = fmax(dhi, lim[1]);
  double pad = 0.04 * (dhi - dlo);
  if (!(pad > 0)) pad = fmax(0.5, 0.1 * fabs(dlo)); /* one value: centre it */
  *lo = isnan(lim[0]) ? dlo - pad : lim[0];
  *hi = isnan(lim[1]) ? dhi + pad : lim[1];
  if (!(*lo < *hi) || !isfinite(*lo) || !isfinite(*hi))
    return nic_err(err, NIC_EINVAL, "plot: empty or infinite %s range [%g, %g]", which ? "y" : "x",
                   *lo, *hi);
  return NIC_OK;
}

/* The round number (1, 2 or 5 times a power of ten) at or above raw. */
static double nice_step(double raw) {
  double e = pow(10, floor(log10(raw))), f = raw / e;
  return (f <= 1 + 1e-9 ? 1 : f <= 2 + 1e-9 ? 2 : f <= 5 + 1e-9 ? 5 : 10) * e;
}

/* Records tick i at axis position v with label text. */
static void add_tick(axis *a, double v, const char *text) {
  if (a->nticks >= MAX_TICKS) return;
  snprintf(a->label[a->nticks], sizeof a->label[0], "%s", text);
  int w = viz_text_width(text, TEXT_SCALE);
  if (w > a->max_label_w) a->max_label_w = w;
  a->tick[a->nticks++] = v;
}

/* Ticks of a log axis: every `every`-th power of ten, and when decades
 * are wide enough 2 and 5 times each (`fine`). Labels in %g (0.01, 1,
 * 1000, 1e+06). */
static void axis_ticks_log(axis *a, int every, int fine) {
  a->nticks = 0;
  a->max_label_w = 0;
  a->step = every;
  static const double mant[3] = {1, 2, 5};
  for (double k = floor(a->lo); k <= ceil(a->hi); k++) {
    if (fmod(k, every) != 0) continue;
    for (int m = 0; m < (fine ? 3 : 1); m++) {
      double v = k + log10(mant[m]);
      if (v < a->lo - 1e-9 || v > a->hi + 1e-9) continue;
      char buf[32];
      snprintf(buf, sizeof buf, "%g", mant[m] * pow(10, k));
      add_tick(a, v, buf);
    }
  }
}

/* Tick values and labels for `step`: every multiple of it in [lo, hi]. */
static void axis_ticks(axis *a, double step) {
  a->step = step;
  a->nticks = 0;
  a->max_label_w = 0;
  double k0 = ceil(a->lo / step - 1e-9), k1 = floor(a->hi / step + 1e-9);
  /* Decimals that show the step exactly: 0.2 -> 1, 0.05 -> 2. */
  int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
  int big = fmax(fabs(k0 * step), fabs(k1 * step)) >= 1e6 || dec > 6;
  for (double k = k0; k <= k1 && a->nticks < MAX_TICKS; k++) {
    double v = k * step;              /* from the integer k: no accumulated error */
    if (fabs(v) < 1e-9 * step) v = 0; /* no "-0.0" */
    char buf[32];
    if (big)
      snprintf(buf, sizeof buf, "%.3g", v);
    else
      snprintf(buf, sizeof buf, "%.*f", dec, v);
    add_tick(a, v, buf);
  }
}

/* Ticks about every `spacing` pixels along `pixels`; with horizontal
 * labels (x axis) the step grows until neighbouring labels do not touch. */
static void axis_layout(axis *a, int pixels, int spacing, int horizontal) {
  double target = fmax(2, (double)pixels / spacing);
  if (a->log) {
    double decades = a->hi - a->lo;
    int fine = pixels / decades >= 3.0 * spacing;
    int every = fine ? 1 : (int)fmax(1, ceil(decades / target));
    for (int tries = 0; tries < 12; tries++) {
      axis_ticks_log(a, every, fine);
      int gap = (int)(pixels / decades * (fine ? log10(2) : every));
      if (!horizontal || gap >= a->max_label_w + 2 * VIZ_ADVANCE * TEXT_SCALE) break;
      if (fine)
        fine = 0;
      else
        every++;
    }
    if (a->nticks >= 2) return;
    /* Less than a decade between round powers: linear ticks on the values. */
    axis v = {.lo = pow(10, a->lo), .hi = pow(10, a->hi)};
    axis_layout(&v, pixels, spacing, horizontal);
    a->nticks = 0;
    a->max_label_w = 0;
    for (int i = 0; i < v.nticks; i++)
      if (v.tick[i] > 0) add_tick(a, log10(v.tick[i]), v.label[i]);
    return;
  }
  double step = nice_step((a->hi - a->lo) / target);
  for (int tries = 0; tries < 12; tries++) {
    axis_ticks(a, step);
    double px_per_tick = pixels * step / (a->hi - a->lo);
    if (!horizontal || px_per_tick >= a->max_label_w + 3 * VIZ_ADVANCE * TEXT_SCALE) break;
    step = nice_step(step * 1.5);
  }
}

/* ---- Layout ---- */

typedef struct layout {
  axis x, y;
  int L, R, T, B;
} layout;

/* Pixel positions of axis positions (log10 already taken on log axes). */
static double axis_px(const nic_plot *p, double u) {
  return p->L + 0.5 + (u - p->x0) / (p->x1 - p->x0) * (p->R - p->L);
}

static double axis_py(const nic_plot *p, double u) {
  return p->B + 0.5 - (u - p->y0) / (p->y1 - p->y0) * (p->B - p->T);
}

/* Pixel positions of data values. */
static double to_px(const nic_plot *p, double x) {
  return axis_px(p, axis_value(p->logx, x));
}
static double to_py(const nic_plot *p, double y) {
  return axis_py(p, axis_value(p->logy, y));
}

int nic_plot_to_pixel(const nic_plot *p, double x, double y, double *px, double *py) {
  if (!p || !p->laid_out) return 0;
  if (px) *px = to_px(p, x);
  if (py) *py = to_py(p, y);
  return 1;
}

static nic_status lay_out(nic_plot *p, layout *lo, nic_error *err) {
  int th = viz_text_height(TEXT_SCALE);
  lo->x.log = p->logx, lo->y.log = p->logy;
  nic_status s = axis_range(p, 0, &lo->x.lo, &lo->x.hi, err);
  if (s == NIC_OK) s = axis_range(p, 1, &lo->y.lo, &lo->y.hi, err);
  if (s != NIC_OK) return s;
  int top = p->title ? 12 + th + 14 : 16;
  int bottom = TICK_LEN + 6 + th + (p->xlabel ? 10 + th : 0) + 12;
  lo->T = top, lo->B = p->h - 1 - bottom;
  axis_layout(&lo->y, lo->B - lo->T, 60, 0);
  int left = 12 + (p->ylabel ? th + 12 : 0) + lo->y.max_label_w + 6 + TICK_LEN;
  lo->L = left;
  axis_layout(&lo->x, p->w - 20 - left, 90, 1);
  /* The last x label may hang over the right edge of the plot area. */
  int last_w = lo->x.nticks ? viz_text_width(lo->x.label[lo->x.nticks - 1], TEXT_SCALE) : 0;
  int right = last_w / 2 + 6 > 20 ? last_w / 2 + 6 : 20;
  lo->R = p->w - 1 - right;
  if (lo->R - lo->L < 40 || lo->B - lo->T < 40)
    return nic_err(err, NIC_EINVAL, "plot %dx%d is too small for its labels", p->w, p->h);
  p->L = lo->L, p->R = lo->R, p->T = lo->T, p->B = lo->B;
  p->x0 = lo->x.lo, p->x1 = lo->x.hi, p->y0 = lo->y.lo, p->y1 = lo->y.hi;
  p->laid_out = 1;
  return NIC_OK;
}

/* ---- Drawing ---- */

static void draw_grid(const nic_plot *p, viz_canvas *c, const layout *lo) {
  for (int i = 0; i < lo->x.nticks; i++) {
    int X = (int)floor(axis_px(p, lo->x.tick[i]));
    if (X > p->L && X < p->R) viz_fill_rect(c, X, p->T, X + 1, p->B + 1, GRID_RGB, 1);
  }
  for (int i = 0; i < lo->y.nticks; i++) {
    int Y = (int)floor(axis_py(p, lo->y.tick[i]));
    if (Y > p->T && Y < p->B) viz_fill_rect(c, p->L, Y, p->R + 1, Y + 1, GRID_RGB, 1);
  }
}

static void draw_frame_and_ticks(const nic_plot *p, viz_canvas *c, const layout *lo) {
  int L = p->L, R = p->R, T = p->T, B = p->B, s = TEXT_SCALE;
  viz_fill_rect(c, L, T, R + 1, T + 1, FRAME_RGB, 1);
  viz_fill_rect(c, L, B, R + 1, B + 1, FRAME_RGB, 1);
  viz_fill_rect(c, L, T, L + 1, B + 1, FRAME_RGB, 1);
  viz_fill_rect(c, R, T, R + 1, B + 1, FRAME_RGB, 1);
  for (int i = 0; i < lo->x.nticks; i++) {
    int X = (int)floor(axis_px(p, lo->x.tick[i]));
    viz_fill_rect(c, X, B + 1, X + 1, B + 1 + TICK_LEN, FRAME_RGB, 1);
    int w = viz_text_width(lo->x.label[i], s);
    viz_draw_text(c, X - w / 2, B + TICK_LEN + 6, lo->x.label[i], s, TEXT_RGB, 0, 0);
  }
  for (int i = 0; i < lo->y.nticks; i++) {
    int Y = (int)floor(axis_py(p, lo->y.tick[i]));
    viz_fill_rect(c, L - TICK_LEN, Y, L, Y + 1, FRAME_RGB, 1);
    int w = viz_text_width(lo->y.label[i], s);
    /* Centre the capitals (not the descenders) on the tick. */
    viz_draw_text(c, L - TICK_LEN - 6 - w, Y - VIZ_CAP_H * s / 2, lo->y.label[i], s, TEXT_RGB, 0,
                  0);
  }
}

static void draw_titles(const nic_plot *p, viz_canvas *c) {
  int s = TEXT_SCALE, th = viz_text_height(s), mid_x = (p->L + p->R) / 2;
  if (p->title) {
    int w = viz_text_width(p->title, s) + 1; /* bold adds a column */
    int x = mid_x - w / 2;
    if (x + w > p->w - 4) x = p->w - 4 - w;
    viz_draw_text(c, x < 4 ? 4 : x, 12, p->title, s, TEXT_RGB, 0, 1);
  }
  if (p->xlabel) {
    int w = viz_text_width(p->xlabel, s);
    viz_draw_text(c, mid_x - w / 2, p->B + TICK_LEN + 6 + th + 10, p->xlabel, s, TEXT_RGB, 0, 0);
  }
  if (p->ylabel) {
    int w = viz_text_width(p->ylabel, s), y = (p->T + p->B) / 2 - w / 2;
    viz_draw_text(c, 12, y < 2 ? 2 : y, p->ylabel, s, TEXT_RGB, 1, 0);
  }
}

/* Dash pattern of a line style at a given width. */
static viz_dash dash_for(nic_line_style st, double width) {
  viz_dash d = {0, 0, 0};
  if (st == NIC_LINE_DASHED) d.on = 3.5 * width + 2, d.off = 2.5 * width + 2;
  if (st == NIC_LINE_DOTTED) d.on = 1, d.off = 1.5 * width + 2;
  return d;
}

/* The line through the points of s (post-steps if asked); NaN points and
 * points whose pixel position is not finite break it. */
static void trace_line(const nic_plot *p, viz_mask *m, const plot_series *s) {
  viz_dash dash = dash_for(s->line, s->line_width);
  int have_prev = 0;
  double qx = 0, qy = 0;
  for (size_t i = 0; i < s->n; i++) {
    double px = to_px(p, s->x[i]), py = to_py(p, s->y[i]);
    if (!isfinite(px) || !isfinite(py)) {
      have_prev = 0;
      continue;
    }
    if (have_prev && s->step) {
      viz_mask_line(m, qx, qy, px, qy, s->line_width, &dash);
      viz_mask_line(m, px, qy, px, py, s->line_width, &dash);
    } else if (have_prev) {
      viz_mask_line(m, qx, qy, px, py, s->line_width, &dash);
    }
    qx = px, qy = py, have_prev = 1;
  }
}

static void trace_error_bars(const nic_plot *p, viz_mask *m, const plot_series *s) {
  double cap = fmax(4, 0.5 * s->marker_size), w = fmax(1.5, 0.6 * s->line_width);
  for (size_t i = 0; i < s->n; i++) {
    double px = to_px(p, s->x[i]), lo = to_py(p, s->ylo[i]), hi = to_py(p, s->yhi[i]);
    if (!isfinite(px) || !isfinite(lo) || !isfinite(hi)) continue;
    viz_mask_line(m, px, lo, px, hi, w, NULL);
    viz_mask_line(m, px - cap, lo, px + cap, lo, w, NULL);
    viz_mask_line(m, px - cap, hi, px + cap, hi, w, NULL);
  }
}

static void draw_series(const nic_plot *p, viz_canvas *c, viz_mask *m, const plot_series *s,
                        uint8_t *ink) {
  if (s->line != NIC_LINE_NONE) trace_line(p, m, s);
  if (s->ylo) trace_error_bars(p, m, s);
  for (size_t i = 0; s->marker != NIC_MARKER_NONE && i < s->n; i++) {
    double px = to_px(p, s->x[i]), py = to_py(p, s->y[i]);
    if (isfinite(px) && isfinite(py)) viz_mask_marker(m, s->marker, px, py, s->marker_size);
  }
  viz_mask_composite(m, c, s->rgb, ink);
}

/* ---- Legend ---- */

#define LEGEND_PAD 10
#define LEGEND_SAMPLE 36 /* length of the line sample */
#define LEGEND_GAP 10
#define LEGEND_ROW_GAP 6

typedef struct legend_box {
  int x, y, w, h, rows, text_x;
} legend_box;

/* Sizes the legend; returns 0 when it has nothing to show. */
static int legend_size(const nic_plot *p, legend_box *b) {
  int s = TEXT_SCALE, entries = 0, w_entries = 0, w_notes = 0;
  for (int i = 0; i < p->nseries; i++) {
    if (!p->series[i].label) continue;
    entries++;
    int w = viz_text_width(p->series[i].label, s);
    if (w > w_entries) w_entries = w;
  }
  for (int i = 0; i < p->nnotes; i++) {
    int w = viz_text_width(p->notes[i], s);
    if (w > w_notes) w_notes = w;
  }
  b->rows = entries + p->nnotes;
  if (b->rows == 0) return 0;
  b->text_x = entries ? LEGEND_SAMPLE + LEGEND_GAP : 0;
  int inner = b->text_x + w_entries > w_notes ? b->text_x + w_entries : w_notes;
  b->w = 2 * LEGEND_PAD + inner;
  b->h = 2 * LEGEND_PAD - 2 + b->rows * viz_text_height(s) + (b->rows - 1) * LEGEND_ROW_GAP;
  return 1;
}

/* Data pixels (ink) under a candidate legend box. */
static long ink_under(const nic_plot *p, const uint8_t *ink, const legend_box *b) {
  long n = 0;
  for (int y = b->y; y < b->y + b->h; y++)
    for (int x = b->x; x < b->x + b->w; x++)
      if (x >= 0 && y >= 0 && x < p->w && y < p->h) n += ink[(size_t)y * (size_t)p->w + (size_t)x];
  return n;
}

static void legend_place(const nic_plot *p, const uint8_t *ink, legend_box *b) {
  const int inset = 10;
  int xr = p->R - inset - b->w, xl = p->L + inset, yt = p->T + inset, yb = p->B - inset - b->h;
  /* Candidates in order of preference when they hide equally much. */
  const nic_legend_pos order[4] = {NIC_LEGEND_UPPER_RIGHT, NIC_LEGEND_LOWER_RIGHT,
                                   NIC_LEGEND_UPPER_LEFT, NIC_LEGEND_LOWER_LEFT};
  nic_legend_pos pick = p->legend;
  if (pick == NIC_LEGEND_AUTO) {
    long best = -1;
    for (int i = 0; i < 4; i++) {
      legend_box t = *b;
      t.x = order[i] == NIC_LEGEND_UPPER_RIGHT || order[i] == NIC_LEGEND_LOWER_RIGHT ? xr : xl;
      t.y = order[i] == NIC_LEGEND_UPPER_RIGHT || order[i] == NIC_LEGEND_UPPER_LEFT ? yt : yb;
      long n = ink_under(p, ink, &t);
      if (best < 0 || n < best) best = n, pick = order[i];
    }
  }
  b->x = pick == NIC_LEGEND_UPPER_RIGHT || pick == NIC_LEGEND_LOWER_RIGHT ? xr : xl;
  b->y = pick == NIC_LEGEND_UPPER_RIGHT || pick == NIC_LEGEND_UPPER_LEFT ? yt : yb;
}

/* The line-and-marker sample of a series, centred vertically on cy. */
static void legend_sample(viz_canvas *c, viz_mask *m, const plot_series *s, int x, double cy) {
  if (s->line != NIC_LINE_NONE) {
    viz_dash d = dash_for(s->line, s->line_width);
    viz_mask_line(m, x + 2, cy, x + LEGEND_SAMPLE - 2, cy, s->line_width, &d);
  } else if (s->ylo) { /* error bars only: a small bar */
    viz_mask_line(m, x + LEGEND_SAMPLE / 2.0, cy - 7, x + LEGEND_SAMPLE / 2.0, cy + 7, 1.5, NULL);
  }
  if (s->marker != NIC_MARKER_NONE)
    viz_mask_marker(m, s->marker, x + LEGEND_SAMPLE / 2.0, cy, s->marker_size);
  viz_mask_composite(m, c, s->rgb, NULL);
}

static void draw_legend(const nic_plot *p, viz_canvas *c, viz_mask *m, const uint8_t *ink) {
  legend_box b;
  if (p->legend == NIC_LEGEND_NONE || !legend_size(p, &b)) return;
  legend_place(p, ink, &b);
  viz_fill_rect(c, b.x, b.y, b.x + b.w, b.y + b.h, BACKGROUND, 0.9f);
  viz_fill_rect(c, b.x, b.y, b.x + b.w, b.y + 1, 0xB0B0B0, 1);
  viz_fill_rect(c, b.x, b.y + b.h - 1, b.x + b.w, b.y + b.h, 0xB0B0B0, 1);
  viz_fill_rect(c, b.x, b.y, b.x + 1, b.y + b.h, 0xB0B0B0, 1);
  viz_fill_rect(c, b.x + b.w - 1, b.y, b.x + b.w, b.y + b.h, 0xB0B0B0, 1);
  viz_mask_clip(m, 0, 0, p->w, p->h);
  int s = TEXT_SCALE, row_h = viz_text_height(s) + LEGEND_ROW_GAP;
  int x = b.x + LEGEND_PAD, y = b.y + LEGEND_PAD;
  for (int i = 0; i < p->nseries; i++) {
    const plot_series *ps = &p->series[i];
    if (!ps->label) continue;
    legend_sample(c, m, ps, x, y + VIZ_CAP_H * s / 2.0);
    viz_draw_text(c, x + b.text_x, y, ps->label, s, TEXT_RGB, 0, 0);
    y += row_h;
  }
  for (int i = 0; i < p->nnotes; i++, y += row_h)
    viz_draw_text(c, x, y, p->notes[i], s, TEXT_RGB, 0, 0);
}

/* ---- Rendering ---- */

nic_status nic_plot_render(nic_plot *p, uint8_t **rgb, nic_error *err) {
  if (!p || !rgb) return nic_err(err, NIC_EINVAL, "plot_render: NULL argument");
  *rgb = NULL;
  layout lo;
  nic_status s = lay_out(p, &lo, err);
  if (s != NIC_OK) return s;
  size_t npx = (size_t)p->w * (size_t)p->h;
  viz_canvas c = {p->w, p->h, malloc(npx * 3)};
  uint8_t *ink = calloc(npx, 1);
  viz_mask m;
  if (!c.px || !ink || viz_mask_init(&m, p->w, p->h, err) != NIC_OK) {
    free(c.px);
    free(ink);
    return nic_err(err, NIC_ENOMEM, "out of memory for a %dx%d plot", p->w, p->h);
  }
  memset(c.px, 0xFF, npx * 3); /* white */
  draw_grid(p, &c, &lo);
  /* Series stay inside the frame (which they may cover, half a line
   * width at most: the frame is drawn over them afterwards). */
  viz_mask_clip(&m, p->L, p->T, p->R + 1, p->B + 1);
  for (int i = 0; i < p->nseries; i++) draw_series(p, &c, &m, &p->series[i], ink);
  draw_frame_and_ticks(p, &c, &lo);
  draw_titles(p, &c);
  draw_legend(p, &c, &m, ink);
  viz_mask_free(&m);
  free(ink);
  *rgb = c.px;
  return NIC_OK;
}

nic_status nic_plot_save_png(nic_plot *p, const char *path, nic_error *err) {
  uint8_t *px = NULL;
  nic_status s = nic_plot_render(p, &px, err);
  if (s == NIC_OK) s = nic_png_write_rgb8(path, px, p->w, p->h, err);
  free(px);
  return s;
}
