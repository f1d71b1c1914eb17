/* Binary morphology and connected components on small 0/1 masks (tissue
 * masks are a few thousand pixels on a side at 8 um/px). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "slide/slide_internal.h"

/* Row-wise prefix sums: P[y*(w+1) + x] = number of set pixels in row y
 * before column x, so any run's count is one subtraction. */
static int32_t *row_prefix(const uint8_t *m, int w, int h) {
  int32_t *P = malloc(sizeof(int32_t) * (size_t)(w + 1) * (size_t)h);
  if (!P) return NULL;
  for (int y = 0; y < h; y++) {
    int32_t *p = P + (size_t)y * (w + 1);
    const uint8_t *r = m + (size_t)y * w;
    p[0] = 0;
    for (int x = 0; x < w; x++) p[x + 1] = p[x] + (r[x] != 0);
  }
  return P;
}

/* Dilation and erosion by a disk, one run per disk row: O(pixels * (2r+1)). */
static nic_status disk_op(uint8_t *m, int w, int h, int r, int erode, nic_error *err) {
  if (r <= 0 || w <= 0 || h <= 0) return NIC_OK;
  int32_t *P = row_prefix(m, w, h);
  int *half = malloc(sizeof(int) * (size_t)(2 * r + 1));
  if (!P || !half) {
    free(P);
    free(half);
    return nic_err(err, NIC_ENOMEM, "out of memory in mask morphology");
  }
  for (int dy = -r; dy <= r; dy++) half[dy + r] = (int)floor(sqrt((double)(r * r - dy * dy)));
  for (int y = 0; y < h; y++) {
    for (int x = 0; x < w; x++) {
      int hit = erode; /* erosion: all set so far; dilation: none set so far */
      for (int dy = -r; dy <= r && hit == erode; dy++) {
        int yy = y + dy;
        if (yy < 0 || yy >= h) continue; /* outside: neutral for both */
        int x0 = x - half[dy + r], x1 = x + half[dy + r] + 1;
        if (x0 < 0) x0 = 0;
        if (x1 > w) x1 = w;
        const int32_t *p = P + (size_t)yy * (w + 1);
        int32_t count = p[x1] - p[x0];
        if (erode ? count != x1 - x0 : count > 0) hit = !erode;
      }
      m[(size_t)y * w + x] = (uint8_t)hit;
    }
  }
  free(P);
  free(half);
  return NIC_OK;
}

nic_status nic__dilate(uint8_t *m, int w, int h, int r, nic_error *err) {
  return disk_op(m, w, h, r, 0, err);
}

nic_status nic__erode(uint8_t *m, int w, int h, int r, nic_error *err) {
  return disk_op(m, w, h, r, 1, err);
}

/* Labels the components of pixels equal to `value` (8- or 4-connected)
 * with an explicit stack. sizes[k] and, if wanted, border[k] (the component
 * touches the image edge) are malloc'd with n+1 entries. Returns n, or -1
 * when out of memory. */
static int label(const uint8_t *m, int w, int h, uint8_t value, int conn8, int32_t *lab,
                 int64_t **sizes, uint8_t **border) {
  static const int dx[8] = {1, -1, 0, 0, 1, 1, -1, -1}, dy[8] = {0, 0, 1, -1, 1, -1, 1, -1};
  size_t npix = (size_t)w * h;
  int nconn = conn8 ? 8 : 4, n = 0, cap = 64;
  int32_t *stack = malloc(sizeof(int32_t) * (npix ? npix : 1));
  int64_t *sz = malloc(sizeof(int64_t) * (size_t)cap);
  uint8_t *bd = malloc((size_t)cap);
  if (!stack || !sz || !bd) goto oom;
  memset(lab, 0, sizeof(int32_t) * npix);
  sz[0] = 0;
  bd[0] = 0;
  for (size_t start = 0; start < npix; start++) {
    if (m[start] != value || lab[start]) continue;
    if (++n >= cap) {
      cap *= 2;
      int64_t *s2 = realloc(sz, sizeof(int64_t) * (size_t)cap);
      if (s2) sz = s2;
      uint8_t *b2 = s2 ? realloc(bd, (size_t)cap) : NULL;
      if (b2) bd = b2;
      if (!s2 || !b2) goto oom;
    }
    sz[n] = 0;
    bd[n] = 0;
    size_t top = 0;
    stack[top++] = (int32_t)start;
    lab[start] = n;
    while (top > 0) {
      int32_t q = stack[--top];
      int x = q % w, y = q / w;
      sz[n]++;
      if (x == 0 || y == 0 || x == w - 1 || y == h - 1) bd[n] = 1;
      for (int k = 0; k < nconn; k++) {
        int xx = x + dx[k], yy = y + dy[k];
        if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
        int32_t qq = yy * w + xx;
        if (m[qq] != value || lab[qq]) continue;
        lab[qq] = n;
        stack[top++] = qq;
      }
    }
  }
  free(stack);
  if (sizes)
    *sizes = sz;
  else
    free(sz);
  if (border)
    *border = bd;
  else
    free(bd);
  return n;
oom:
  free(stack);
  free(sz);
  free(bd);
  return -1;
}

int nic__label8(const uint8_t *m, int w, int h, int32_t *labels, int64_t **sizes) {
  return label(m, w, h, 1, 1, labels, sizes, NULL);
}

nic_status nic__remove_small(uint8_t *m, int w, int h, int64_t min_px, nic_error *err) {
  if (min_px <= 1) return NIC_OK;
  int32_t *lab = malloc(sizeof(int32_t) * ((size_t)w * h + 1));
  int64_t *sz = NULL;
  int n = lab ? label(m, w, h, 1, 1, lab, &sz, NULL) : -1;
  if (n < 0) {
    free(lab);
    return nic_err(err, NIC_ENOMEM, "out of memory labelling the mask");
  }
  for (size_t i = 0; i < (size_t)w * h; i++)
    if (lab[i] && sz[lab[i]] < min_px) m[i] = 0;
  free(lab);
  free(sz);
  return NIC_OK;
}

nic_status nic__fill_holes(uint8_t *m, int w, int h, int64_t max_px, nic_error *err) {
  if (max_px <= 0) return NIC_OK;
  /* Background is 4-connected where tissue is 8-connected, so that a
   * diagonal chain of tissue pixels closes a hole. */
  int32_t *lab = malloc(sizeof(int32_t) * ((size_t)w * h + 1));
  int64_t *sz = NULL;
  uint8_t *bd = NULL;
  int n = lab ? label(m, w, h, 0, 0, lab, &sz, &bd) : -1;
  if (n < 0) {
    free(lab);
    return nic_err(err, NIC_ENOMEM, "out of memory labelling the mask");
  }
  for (size_t i = 0; i < (size_t)w * h; i++)
    if (lab[i] && !bd[lab[i]] && sz[lab[i]] < max_px) m[i] = 1;
  free(lab);
  free(sz);
  free(bd);
  return NIC_OK;
}

nic_status nic__open_reconstruct(uint8_t *m, int w, int h, int r, nic_error *err) {
  if (r <= 0) return NIC_OK;
  /* A piece survives an opening iff its erosion is not empty (the disk
   * around an eroded pixel lies inside the same piece), so erosion alone
   * decides which pieces stay. */
  size_t n = (size_t)w * h;
  uint8_t *er = malloc(n ? n : 1);
  int32_t *lab = malloc(sizeof(int32_t) * (n + 1));
  nic_status st = er && lab ? NIC_OK : nic_err(err, NIC_ENOMEM, "out of memory in mask opening");
  if (st == NIC_OK) {
    memcpy(er, m, n);
    st = nic__erode(er, w, h, r, err);
  }
  int k = st == NIC_OK ? label(m, w, h, 1, 1, lab, NULL, NULL) : 0;
  uint8_t *keep = k >= 0 && st == NIC_OK ? calloc((size_t)k + 1, 1) : NULL;
  if (st == NIC_OK && !keep) st = nic_err(err, NIC_ENOMEM, "out of memory in mask opening");
  if (st == NIC_OK) {
    for (size_t i = 0; i < n; i++)
      if (er[i]) keep[lab[i]] = 1;
    for (size_t i = 0; i < n; i++)
      if (m[i] && !keep[lab[i]]) m[i] = 0;
  }
  free(keep);
  free(lab);
  free(er);
  return st;
}
