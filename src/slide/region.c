/* Reading regions at a chosen spacing: pick the pyramid level, decode the
 * covering window in bands, convert to RGB and resample with an exact box
 * filter. Nothing here writes to the slide, so reads may run concurrently. */
#include <math.h>
#include <openslide/openslide.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "slide/slide_internal.h"

/* Source pixels decoded per band: bounds memory (4 bytes each) for reads of
 * any size while keeping OpenSlide calls large enough to be efficient. */
#define BAND_PIXELS (8 << 20)

/* ---- pixel conversion ------------------------------------------------------ */

void nic__argb_to_rgb(const uint32_t *src, uint8_t *dst, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t p = src[i]; /* read before dst[3i..3i+2] may overwrite it */
    uint32_t a = p >> 24, r = (p >> 16) & 255, g = (p >> 8) & 255, b = p & 255;
    if (a == 0) {
      r = g = b = 255; /* outside the scanned area: background, like glass */
    } else if (a < 255) {
      r = (r * 255 + a / 2) / a;
      g = (g * 255 + a / 2) / a;
      b = (b * 255 + a / 2) / a;
      r = r > 255 ? 255 : r;
      g = g > 255 ? 255 : g;
      b = b > 255 ? 255 : b;
    }
    dst[3 * i] = (uint8_t)r;
    dst[3 * i + 1] = (uint8_t)g;
    dst[3 * i + 2] = (uint8_t)b;
  }
}

/* ---- decoding one window of one level -------------------------------------- */

/* Decodes w x h pixels of `level` whose first pixel is at level coordinates
 * (lx, ly) into buf (w*h*4 bytes of room) as packed RGB. *ox / *oy receive
 * the exact level coordinates of buf's first pixel: OpenSlide positions
 * regions by a level-0 integer, which for non-integer downsamples lands a
 * fraction of a pixel before (lx, ly). */
static nic_status read_window(const nic_slide *s, int level, int64_t lx, int64_t ly, int64_t w,
                              int64_t h, uint8_t *buf, double *ox, double *oy, nic_error *err) {
  if (nic__fast_level(s, level)) { /* JPEG tiles decoded directly, at the exact position */
    *ox = (double)lx;
    *oy = (double)ly;
    return nic__fast_read(s, level, lx, ly, w, h, buf, err);
  }
  if (s->osr) {
    double ds = s->level_ds[level];
    int64_t X = (int64_t)floor((double)lx * ds), Y = (int64_t)floor((double)ly * ds);
    *ox = X / ds;
    *oy = Y / ds;
    openslide_read_region(s->osr, (uint32_t *)buf, X, Y, level, w, h);
    const char *e = openslide_get_error(s->osr);
    if (e) return nic_err(err, NIC_EIO, "%s: reading level %d failed: %s", s->path, level, e);
    nic__argb_to_rgb((const uint32_t *)buf, buf, (size_t)(w * h));
    return NIC_OK;
  }
  /* libvips: one level; the parts outside the image stay white. */
  *ox = (double)lx;
  *oy = (double)ly;
  memset(buf, 255, (size_t)(w * h * 3));
  int64_t W = s->level_w[0], H = s->level_h[0];
  int64_t x0 = lx < 0 ? 0 : lx, y0 = ly < 0 ? 0 : ly;
  int64_t x1 = lx + w > W ? W : lx + w, y1 = ly + h > H ? H : ly + h;
  if (x0 >= x1 || y0 >= y1) return NIC_OK;
  VipsImage *crop = NULL;
  size_t size = 0;
  uint8_t *pix = NULL;
  if (vips_crop(s->rgba, &crop, (int)x0, (int)y0, (int)(x1 - x0), (int)(y1 - y0), NULL) == 0) {
    pix = vips_image_write_to_memory(crop, &size);
    g_object_unref(crop);
  }
  if (!pix || size != (size_t)((x1 - x0) * (y1 - y0) * 4)) {
    char msg[256];
    nic__vips_error(msg, sizeof msg);
    g_free(pix);
    return nic_err(err, NIC_EIO, "%s: reading pixels failed: %s", s->path, msg);
  }
  for (int64_t y = y0; y < y1; y++) {
    const uint8_t *sp = pix + (size_t)((y - y0) * (x1 - x0) * 4);
    uint8_t *dp = buf + (size_t)(((y - ly) * w + (x0 - lx)) * 3);
    for (int64_t x = 0; x < x1 - x0; x++, sp += 4, dp += 3) {
      if (sp[3] == 0) continue; /* transparent: stays white */
      dp[0] = sp[0];
      dp[1] = sp[1];
      dp[2] = sp[2];
    }
  }
  g_free(pix);
  return NIC_OK;
}

/* ---- box-filter taps --------------------------------------------------------- */

/* For each of n output pixels along one axis, the source pixels its
 * footprint [start + i*step, start + (i+1)*step) overlaps and the overlap
 * lengths divided by step (they sum to 1). */
typedef struct taps {
  int n, max;     /* outputs, taps per output */
  int64_t *first; /* n: first source index */
  int *count;     /* n */
  float *w;       /* n * max */
} taps;

static void taps_free(taps *t) {
  free(t->first);
  free(t->count);
  free(t->w);
}

static nic_status taps_make(taps *t, double start, double step, int n, int64_t limit,
                            nic_error *err) {
  t->n = n;
  t->max = (int)ceil(step) + 2;
  t->first = malloc(sizeof(int64_t) * (size_t)n);
  t->count = malloc(sizeof(int) * (size_t)n);
  t->w = calloc((size_t)n * (size_t)t->max, sizeof(float));
  if (!t->first || !t->count || !t->w)
    return nic_err(err, NIC_ENOMEM, "out of memory for resampling");
  for (int i = 0; i < n; i++) {
    double a = start + i * step, b = a + step;
    int64_t p0 = (int64_t)floor(a), p1 = (int64_t)ceil(b); /* [p0, p1) */
    /* Rounding can put an edge a hair outside the window: clamp, and let
     * the edge pixel take the sliver's weight. */
    if (p0 < 0) p0 = 0;
    if (p1 > limit) p1 = limit;
    if (p1 - p0 > t->max) p1 = p0 + t->max;
    if (p1 <= p0) p1 = p0 + 1;
    t->first[i] = p0;
    t->count[i] = (int)(p1 - p0);
    double sum = 0;
    for (int64_t p = p0; p < p1; p++) {
      double lo = a > (double)p ? a : (double)p, hi = b < (double)(p + 1) ? b : (double)(p + 1);
      double wt = hi > lo ? (hi - lo) / step : 0;
      t->w[(size_t)i * t->max + (p - p0)] = (float)wt;
      sum += wt;
    }
    /* Normalise so flat areas stay exactly flat whatever the rounding. */
    for (int k = 0; k < t->count[i]; k++)
      t->w[(size_t)i * t->max + k] =
          sum > 0 ? (float)(t->w[(size_t)i * t->max + k] / sum) : (k == 0 ? 1.0f : 0.0f);
  }
  return NIC_OK;
}

/* ---- level choice ------------------------------------------------------------ */

int nic_slide_best_level(const nic_slide *s, double downsample) {
  int best = 0;
  for (int i = 1; i < s->nlevels; i++)
    if (s->level_ok[i] && s->level_ds[i] <= downsample * (1.0 + NIC_SLIDE_LEVEL_TOLERANCE) &&
        s->level_ds[i] > s->level_ds[best])
      best = i;
  return best;
}

nic_status nic_slide_level_for_mpp(const nic_slide *s, double target_mpp, int *level,
                                   nic_error *err) {
  double sx, sy;
  nic_status st = nic__grid_scale(s, target_mpp, &sx, &sy, err);
  if (st != NIC_OK) return st;
  *level = nic_slide_best_level(s, sx < sy ? sx : sy);
  return NIC_OK;
}

/* ---- resampled reads ----------------------------------------------------------- */

/* One resampled read: the footprint in the chosen level's pixels, the
 * decoded window and the working buffers. */
typedef struct region_job {
  const nic_slide *s;
  int level;
  double u0, v0;  /* footprint origin, level pixels */
  double fx, fy;  /* level pixels per output pixel */
  int64_t bx, sw; /* decoded window: first column, width */
  int out_w;
  uint8_t *out; /* out_w x out_h x 3 */
  uint8_t *buf; /* the decoded window, RGB (room for ARGB) */
  float *tmp;   /* its rows filtered horizontally, out_w x 3 each */
  float *rowf;  /* one window row as floats, then zeros (see filter_rows) */
  int xtaps;    /* taps per output along x (taps.max) */
  float *acc;   /* one output row being accumulated */
} region_job;

/* Source rows r0..r1 of the window -> tmp rows 0..r1-r0. Each row is
 * converted to float once; every output then takes all tx->max taps (the
 * weights past its count are 0, and the zeros after the row keep the reads
 * in bounds), so the sums equal those over the counted taps exactly, and
 * the loop has a fixed trip count. */
static void filter_rows(const region_job *j, const taps *tx, int64_t r0, int64_t r1) {
  size_t m = (size_t)j->sw * 3;
  float *restrict f = j->rowf;
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t *restrict row = j->buf + (size_t)r * m;
#pragma omp simd
    for (size_t e = 0; e < m; e++) f[e] = row[e];
    float *t = j->tmp + (size_t)((r - r0) * j->out_w * 3);
    for (int i = 0; i < j->out_w; i++) {
      const float *p = f + tx->first[i] * 3;
      const float *w = tx->w + (size_t)i * tx->max;
      float a0 = 0, a1 = 0, a2 = 0;
      for (int k = 0; k < tx->max; k++, p += 3) {
        a0 += w[k] * p[0];
        a1 += w[k] * p[1];
        a2 += w[k] * p[2];
      }
      t[3 * i] = a0;
      t[3 * i + 1] = a1;
      t[3 * i + 2] = a2;
    }
  }
}

/* tmp rows -> output rows j0.., rounding to nearest. Each element is
 * w0 * t0 + w1 * t1 + ... in tap order, vectorised across the row. */
static void filter_columns(const region_job *j, const taps *ty, int64_t r0, int j0) {
  size_t n = (size_t)j->out_w * 3;
  float *restrict acc = j->acc;
  for (int jj = 0; jj < ty->n; jj++) {
    const float *w = ty->w + (size_t)jj * ty->max;
    const float *restrict t = j->tmp + (size_t)(ty->first[jj] - r0) * n;
    float w0 = w[0];
#pragma omp simd
    for (size_t x = 0; x < n; x++) acc[x] = w0 * t[x];
    for (int k = 1; k < ty->count[jj]; k++) {
      const float *restrict tk = t + (size_t)k * n;
      float wk = w[k];
#pragma omp simd
      for (size_t x = 0; x < n; x++) acc[x] += wk * tk[x];
    }
    uint8_t *restrict o = j->out + (size_t)(j0 + jj) * n;
#pragma omp simd
    for (size_t x = 0; x < n; x++) {
      int v = (int)(acc[x] + 0.5f);
      o[x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
}

/* One band of output rows [j0, j1): decode the source rows it covers,
 * filter them horizontally, then vertically into the output. */
static nic_status read_band(const region_job *j, int j0, int j1, nic_error *err) {
  double va = j->v0 + j0 * j->fy, vb = j->v0 + j1 * j->fy;
  int64_t by = (int64_t)floor(va), sh = (int64_t)ceil(vb) - by + 1;
  double ox, oy;
  nic_status st = read_window(j->s, j->level, j->bx, by, j->sw, sh, j->buf, &ox, &oy, err);
  if (st != NIC_OK) return st;
  taps tx = {0}, ty = {0};
  st = taps_make(&tx, j->u0 - ox, j->fx, j->out_w, j->sw, err);
  if (st == NIC_OK) st = taps_make(&ty, va - oy, j->fy, j1 - j0, sh, err);
  if (st == NIC_OK) {
    int64_t r0 = ty.first[0], r1 = ty.first[ty.n - 1] + ty.count[ty.n - 1];
    filter_rows(j, &tx, r0, r1);
    filter_columns(j, &ty, r0, j0);
  }
  taps_free(&tx);
  taps_free(&ty);
  return st;
}

/* The general read: dsx / dsy level-0 pixels per output pixel. */
static nic_status read_scaled(const nic_slide *s, double x0, double y0, double dsx, double dsy,
                              int out_w, int out_h, uint8_t *out, int *level_out, nic_error *err) {
  if (out_w <= 0 || out_h <= 0)
    return nic_err(err, NIC_EINVAL, "%s: region size %d x %d is empty", s->path, out_w, out_h);
  if (!(dsx > 0) || !(dsy > 0) || !isfinite(dsx) || !isfinite(dsy) || !isfinite(x0) ||
      !isfinite(y0))
    return nic_err(err, NIC_EINVAL, "%s: invalid region position or scale", s->path);
  region_job j = {.s = s, .out_w = out_w, .out = out};
  j.level = nic_slide_best_level(s, dsx < dsy ? dsx : dsy);
  if (level_out) *level_out = j.level;
  double L = s->level_ds[j.level];
  j.fx = dsx / L;
  j.fy = dsy / L;
  j.u0 = x0 / L;
  j.v0 = y0 / L;
  /* One pixel of margin absorbs OpenSlide's fractional origin. */
  j.bx = (int64_t)floor(j.u0);
  j.sw = (int64_t)ceil(j.u0 + out_w * j.fx) - j.bx + 1;
  /* Bands of output rows bound the decoded window's size. */
  int band = (int)floor((double)BAND_PIXELS / (double)j.sw / j.fy);
  band = band < 1 ? 1 : band > out_h ? out_h : band;
  int64_t max_sh = (int64_t)ceil(band * j.fy) + 2;
  j.buf = malloc((size_t)(j.sw * max_sh * 4));
  j.tmp = malloc(sizeof(float) * (size_t)(max_sh * out_w * 3));
  j.acc = malloc(sizeof(float) * (size_t)out_w * 3);
  j.xtaps = (int)ceil(j.fx) + 2; /* taps_make's max for fx */
  j.rowf = calloc((size_t)(j.sw + j.xtaps + 1) * 3, sizeof(float));
  nic_status st = NIC_OK;
  if (!j.buf || !j.tmp || !j.acc || !j.rowf)
    st = nic_err(err, NIC_ENOMEM, "%s: out of memory reading a %d x %d region", s->path, out_w,
                 out_h);
  for (int j0 = 0; st == NIC_OK && j0 < out_h; j0 += band)
    st = read_band(&j, j0, j0 + band < out_h ? j0 + band : out_h, err);
  free(j.buf);
  free(j.tmp);
  free(j.rowf);
  free(j.acc);
  return st;
}

nic_status nic_slide_read_region_ds_rgb8(const nic_slide *s, double x0, double y0,
                                         double downsample, int out_w, int out_h, uint8_t *rgb,
                                         int *level, nic_error *err) {
  return read_scaled(s, x0, y0, downsample, downsample, out_w, out_h, rgb, level, err);
}

nic_status nic_slide_read_region_rgb8(const nic_slide *s, double x0, double y0, double target_mpp,
                                      int out_w, int out_h, uint8_t *rgb, nic_error *err) {
  double sx, sy;
  nic_status st = nic__grid_scale(s, target_mpp, &sx, &sy, err);
  if (st != NIC_OK) return st;
  return read_scaled(s, x0, y0, sx, sy, out_w, out_h, rgb, NULL, err);
}

nic_status nic_slide_thumbnail_rgb8(const nic_slide *s, int max_side, double target_mpp,
                                    uint8_t **rgb, int *w, int *h, double *downsample,
                                    nic_error *err) {
  *rgb = NULL;
  double sx, sy;
  int64_t W = s->level_w[0], H = s->level_h[0];
  if (target_mpp > 0) {
    nic_status st = nic__grid_scale(s, target_mpp, &sx, &sy, err);
    if (st != NIC_OK) return st;
  } else if (max_side > 0) {
    sx = sy = (double)(W > H ? W : H) / max_side;
    if (sx < 1) sx = sy = 1; /* never enlarge */
  } else {
    return nic_err(err, NIC_EINVAL, "%s: a thumbnail needs a size or a spacing", s->path);
  }
  /* Cover the whole slide: a partial last pixel is kept (white beyond). */
  double tw = ceil(W / sx - 1e-9), th = ceil(H / sy - 1e-9);
  if (tw * th > (double)(1 << 30))
    return nic_err(err, NIC_EINVAL, "%s: a %.0f x %.0f thumbnail is too large", s->path, tw, th);
  int iw = (int)tw, ih = (int)th;
  uint8_t *p = malloc((size_t)iw * ih * 3);
  if (!p) return nic_err(err, NIC_ENOMEM, "%s: out of memory for a thumbnail", s->path);
  nic_status st = read_scaled(s, 0, 0, sx, sy, iw, ih, p, NULL, err);
  if (st != NIC_OK) {
    free(p);
    return st;
  }
  *rgb = p;
  *w = iw;
  *h = ih;
  if (downsample) *downsample = sx;
  return NIC_OK;
}
