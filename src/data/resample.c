/* From a stored image at its spacing to a patch at the encoder's spacing.
 *
 * Along each axis, output pixel x covers the source interval
 *   [c + (x - size/2) * r, c + (x + 1 - size/2) * r),  c = source size / 2,
 * where r = source pixels per output pixel. Each axis gets a list of taps
 * (source index, weight) per output pixel:
 *   r > 1  area average: the overlap of each source pixel with the interval
 *          divided by r (exact for fractional boxes);
 *   r < 1  bilinear interpolation at the interval's centre;
 *   r = 1  a plain copy at an integer offset (a centre crop).
 * Source indices outside the image are mirrored without repeating the edge
 * (... c b | a b c ... ), which pads small images with reflected content.
 * The two axes are applied one after the other in float. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

typedef struct taps {
  int max;  /* taps reserved per output pixel */
  int *n;   /* size: taps of each output pixel */
  int *idx; /* size * max: source indices, already mirrored */
  float *w; /* size * max: weights, summing to 1 */
} taps;

/* Mirrors i into [0, len): -1 -> 1, len -> len - 2, periodic beyond. */
static int mirror(int64_t i, int len) {
  if (len == 1) return 0;
  int64_t period = 2 * (int64_t)len - 2;
  i %= period;
  if (i < 0) i += period;
  return (int)(i < len ? i : period - i);
}

static void taps_free(taps *t) {
  free(t->n);
  free(t->idx);
  free(t->w);
}

/* Taps of `size` output pixels from `len` source pixels at r source pixels
 * per output pixel, centred. */
static int taps_init(taps *t, int len, int size, double r) {
  int copy = fabs(r - 1.0) < 1e-9;
  t->max = r > 1 && !copy ? (int)ceil(r) + 2 : 2;
  t->n = malloc(sizeof(int) * (size_t)size);
  t->idx = malloc(sizeof(int) * (size_t)size * (size_t)t->max);
  t->w = malloc(sizeof(float) * (size_t)size * (size_t)t->max);
  if (!t->n || !t->idx || !t->w) return -1;
  double c = len / 2.0, half = size / 2.0;
  /* Integer offset for copies: (len - size) / 2 rounded down, so an odd
   * difference never blends two source pixels. */
  int64_t off = (int64_t)floor((len - size) / 2.0);
  for (int x = 0; x < size; x++) {
    int *idx = t->idx + (size_t)x * (size_t)t->max;
    float *w = t->w + (size_t)x * (size_t)t->max;
    int n = 0;
    if (copy) {
      idx[n] = mirror(off + x, len);
      w[n++] = 1.0f;
    } else if (r > 1) {
      double a = c + (x - half) * r, b = a + r;
      for (int64_t i = (int64_t)floor(a); (double)i < b && n < t->max; i++) {
        double lo = (double)i > a ? (double)i : a, hi = (double)(i + 1) < b ? (double)(i + 1) : b;
        if (hi <= lo) continue;
        idx[n] = mirror(i, len);
        w[n++] = (float)((hi - lo) / r);
      }
    } else {
      /* Centre of the output pixel, in source pixel-centre coordinates. */
      double u = c + (x + 0.5 - half) * r - 0.5;
      double i0 = floor(u), f = u - i0;
      idx[n] = mirror((int64_t)i0, len);
      w[n++] = (float)(1.0 - f);
      if (f > 0) {
        idx[n] = mirror((int64_t)i0 + 1, len);
        w[n++] = (float)f;
      }
    }
    /* Unused slots get weight 0 on a valid index, so two-tap loops may
     * always read both. */
    for (int k = n; k < t->max; k++) idx[k] = idx[0], w[k] = 0;
    t->n[x] = n;
  }
  return 0;
}

nic_status nic_patch_from_image(const uint8_t *src, int w, int h, double src_mpp, uint8_t *dst,
                                int size, double dst_mpp, double zoom, nic_error *err) {
  if (w < 1 || h < 1 || size < 1 || !(zoom > 0) || (src_mpp > 0 && !(dst_mpp > 0)))
    return nic_err(err, NIC_EINVAL,
                   "resampling: invalid geometry (%dx%d at %g um/px -> %d px at %g um/px, "
                   "zoom %g)",
                   w, h, src_mpp, size, dst_mpp, zoom);
  /* Source pixels per output pixel; unknown spacing fills the patch with
   * the image's shorter side. */
  double r = src_mpp > 0 ? dst_mpp / src_mpp : (double)(w < h ? w : h) / size;
  r /= zoom;
  if (r * size > 1e7 || r * size < 1e-3)
    return nic_err(err, NIC_EINVAL, "resampling: scale %g out of range", r);
  taps tx = {0}, ty = {0};
  float *hrows = NULL, *acc = NULL;
  nic_status s = NIC_OK;
  if (taps_init(&tx, w, size, r) || taps_init(&ty, h, size, r)) {
    s = nic_err(err, NIC_ENOMEM, "resampling: out of memory");
    goto done;
  }
  /* The source rows the patch uses. */
  int ymin = h, ymax = -1;
  for (int y = 0; y < size; y++)
    for (int j = 0; j < ty.n[y]; j++) {
      int i = ty.idx[(size_t)y * (size_t)ty.max + (size_t)j];
      ymin = i < ymin ? i : ymin;
      ymax = i > ymax ? i : ymax;
    }
  size_t stride = (size_t)size * 3;
  hrows = malloc(sizeof(float) * stride * (size_t)(ymax - ymin + 1));
  acc = malloc(sizeof(float) * stride);
  if (!hrows || !acc) {
    s = nic_err(err, NIC_ENOMEM, "resampling: out of memory");
    goto done;
  }
  /* Horizontal first, on those rows only: when enlarging (PatchCamelyon's
   * 66 rows become 128) that is the smaller pass. */
  for (int yy = ymin; yy <= ymax; yy++) {
    const uint8_t *in = src + (size_t)yy * (size_t)w * 3;
    float *o = hrows + (size_t)(yy - ymin) * stride;
    if (tx.max == 2) { /* bilinear or copy: two taps, the second maybe of weight 0 */
      for (int x = 0; x < size; x++) {
        const uint8_t *p = in + (size_t)tx.idx[2 * x] * 3, *q = in + (size_t)tx.idx[2 * x + 1] * 3;
        float w0 = tx.w[2 * x], w1 = tx.w[2 * x + 1];
        o[3 * x] = w0 * p[0] + w1 * q[0];
        o[3 * x + 1] = w0 * p[1] + w1 * q[1];
        o[3 * x + 2] = w0 * p[2] + w1 * q[2];
      }
      continue;
    }
    for (int x = 0; x < size; x++) {
      const int *ix = tx.idx + (size_t)x * (size_t)tx.max;
      const float *wx = tx.w + (size_t)x * (size_t)tx.max;
      float a0 = 0, a1 = 0, a2 = 0;
      for (int j = 0; j < tx.n[x]; j++) {
        const uint8_t *p = in + (size_t)ix[j] * 3;
        a0 += wx[j] * p[0], a1 += wx[j] * p[1], a2 += wx[j] * p[2];
      }
      o[3 * x] = a0, o[3 * x + 1] = a1, o[3 * x + 2] = a2;
    }
  }
  /* Vertical: whole rows at a time, then round to bytes. */
  for (int y = 0; y < size; y++) {
    const int *iy = ty.idx + (size_t)y * (size_t)ty.max;
    const float *wy = ty.w + (size_t)y * (size_t)ty.max;
    memset(acc, 0, sizeof(float) * stride);
    for (int j = 0; j < ty.n[y]; j++)
      data_axpy(acc, hrows + (size_t)(iy[j] - ymin) * stride, wy[j], stride);
    data_store_u8(dst + (size_t)y * stride, acc, stride);
  }
done:
  taps_free(&tx);
  taps_free(&ty);
  free(hrows);
  free(acc);
  return s;
}
