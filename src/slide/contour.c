/* Mask <-> polygons. Tracing follows pixel edges ("crack following"), so
 * every vertex is a pixel corner and rasterising the rings back at pixel
 * centres reproduces the mask exactly. Tissue is 8-connected: where two
 * tissue pixels touch only diagonally, the ring passes through the shared
 * corner and both belong to one polygon. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "slide/slide_internal.h"

/* Edge directions in image coordinates (y down). Walking an edge, tissue is
 * on the left; turning right is d+1. */
enum { DIR_E = 0, DIR_S = 1, DIR_W = 2, DIR_N = 3 };
static const int DX[4] = {1, 0, -1, 0}, DY[4] = {0, 1, 0, -1};

static int popcount4(uint8_t b) {
  return (b & 1) + ((b >> 1) & 1) + ((b >> 2) & 1) + ((b >> 3) & 1);
}

/* Outgoing boundary edges of every corner vertex ((w+1) x (h+1) grid). */
static uint8_t *boundary_edges(const uint8_t *m, int w, int h) {
  size_t W1 = (size_t)w + 1;
  uint8_t *bits = calloc(W1 * ((size_t)h + 1), 1);
  if (!bits) return NULL;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      if (!m[(size_t)y * w + x]) continue;
      if (y == 0 || !m[(size_t)(y - 1) * w + x]) bits[y * W1 + x + 1] |= 1 << DIR_W;
      if (y == h - 1 || !m[(size_t)(y + 1) * w + x]) bits[(y + 1) * W1 + x] |= 1 << DIR_E;
      if (x == 0 || !m[(size_t)y * w + x - 1]) bits[y * W1 + x] |= 1 << DIR_S;
      if (x == w - 1 || !m[(size_t)y * w + x + 1]) bits[(y + 1) * W1 + x + 1] |= 1 << DIR_N;
    }
  return bits;
}

static int ring_push(nic_ring *r, int *cap, int x, int y) {
  if (r->n == *cap) {
    int nc = *cap ? *cap * 2 : 64;
    int32_t *p = realloc(r->xy, sizeof(int32_t) * 2 * (size_t)nc);
    if (!p) return -1;
    r->xy = p;
    *cap = nc;
  }
  r->xy[2 * r->n] = x;
  r->xy[2 * r->n + 1] = y;
  r->n++;
  return 0;
}

/* The outgoing edge to take at a vertex with edges `b`, arriving along
 * `prev` (-1 at the start): the only one, or at a saddle (two outgoing
 * edges where tissue touches diagonally) the right turn, which keeps the
 * diagonal pixels in one ring. -1 when there is none. */
static int next_dir(uint8_t b, int prev) {
  int right = (prev + 1) & 3;
  if (popcount4(b) == 2 && prev >= 0 && (b & (1 << right))) return right;
  for (int d = 0; d < 4; d++)
    if (b & (1 << d)) return d;
  return -1;
}

/* The tissue pixel on the left of the edge leaving (x, y) along d. */
static int left_pixel(int x, int y, int d, int w) {
  static const int LX[4] = {0, 0, -1, -1}, LY[4] = {-1, 0, 0, -1};
  return (y + LY[d]) * w + x + LX[d];
}

/* Follows one ring from vertex (x, y), consuming its edges; keeps only the
 * corners. *left_px receives the tissue pixel left of the first edge. */
static int trace_ring(uint8_t *bits, int w, int x, int y, nic_ring *r, int *left_px) {
  size_t W1 = (size_t)w + 1;
  int cap = 0, sx = x, sy = y, first = -1, prev = -1;
  r->n = 0;
  r->xy = NULL;
  do {
    uint8_t *b = &bits[(size_t)y * W1 + x];
    int d = next_dir(*b, prev);
    if (d < 0) return -2; /* a broken ring: impossible for the edges of a mask */
    *b &= (uint8_t) ~(1 << d);
    if (first < 0) {
      first = d;
      *left_px = left_pixel(x, y, d, w);
    }
    if (d != prev && ring_push(r, &cap, x, y)) return -1;
    prev = d;
    x += DX[d];
    y += DY[d];
  } while (x != sx || y != sy);
  /* The start is a corner unless the ring arrives in its first direction. */
  if (prev == first && r->n > 1) {
    memmove(r->xy, r->xy + 2, sizeof(int32_t) * 2 * (size_t)(r->n - 1));
    r->n--;
  }
  return 0;
}

/* Twice the signed area, y taken as up: positive for counterclockwise. */
static int64_t ring_area2(const nic_ring *r) {
  int64_t a = 0;
  for (int i = 0; i < r->n; i++) {
    int j = (i + 1) % r->n;
    a += (int64_t)r->xy[2 * i] * r->xy[2 * j + 1] - (int64_t)r->xy[2 * j] * r->xy[2 * i + 1];
  }
  return a;
}

static void ring_reverse(nic_ring *r) {
  for (int i = 0, j = r->n - 1; i < j; i++, j--) {
    int32_t tx = r->xy[2 * i], ty = r->xy[2 * i + 1];
    r->xy[2 * i] = r->xy[2 * j];
    r->xy[2 * i + 1] = r->xy[2 * j + 1];
    r->xy[2 * j] = tx;
    r->xy[2 * j + 1] = ty;
  }
}

static int add_hole(nic_polygon *p, nic_ring *ring) {
  nic_ring *h = realloc(p->holes, sizeof(nic_ring) * (size_t)(p->nholes + 1));
  if (!h) return -1;
  p->holes = h;
  p->holes[p->nholes++] = *ring;
  return 0;
}

void nic__free_polygons(nic_polygon *polys, int n) {
  for (int i = 0; polys && i < n; i++) {
    free(polys[i].outer.xy);
    for (int k = 0; k < polys[i].nholes; k++) free(polys[i].holes[k].xy);
    free(polys[i].holes);
  }
  free(polys);
}

nic_status nic__trace_polygons(const uint8_t *m, int w, int h, nic_polygon **polys, int *npolys,
                               nic_error *err) {
  *polys = NULL;
  *npolys = 0;
  int32_t *lab = malloc(sizeof(int32_t) * ((size_t)w * h + 1));
  uint8_t *bits = boundary_edges(m, w, h);
  int n = lab && bits ? nic__label8(m, w, h, lab, NULL) : -1;
  nic_polygon *ps = n >= 0 ? calloc((size_t)n + 1, sizeof(nic_polygon)) : NULL;
  if (!ps) goto oom;
  size_t W1 = (size_t)w + 1;
  /* Every ring has a vertex with a single outgoing edge (its top-left
   * corner), so starting only there never begins inside a saddle. */
  for (int y = 0; y <= h; y++)
    for (int x = 0; x <= w; x++)
      while (popcount4(bits[y * W1 + x]) == 1) {
        nic_ring ring;
        int px = 0;
        int rc = trace_ring(bits, w, x, y, &ring, &px);
        if (rc) {
          free(ring.xy);
          if (rc == -1) goto oom;
          nic__free_polygons(ps, n);
          free(lab);
          free(bits);
          return nic_err(err, NIC_EINVAL, "internal error: a mask contour does not close");
        }
        /* Edge-following leaves outer rings clockwise (y up) and holes
         * counterclockwise; GeoJSON wants the opposite. */
        int hole = ring_area2(&ring) > 0;
        ring_reverse(&ring);
        nic_polygon *p = &ps[lab[px] - 1];
        if (hole) {
          if (add_hole(p, &ring)) {
            free(ring.xy);
            goto oom;
          }
        } else {
          free(p->outer.xy); /* one outer ring per piece; defensive */
          p->outer = ring;
        }
      }
  free(lab);
  free(bits);
  *polys = ps;
  *npolys = n;
  return NIC_OK;
oom:
  nic__free_polygons(ps, n);
  free(lab);
  free(bits);
  return nic_err(err, NIC_ENOMEM, "out of memory tracing mask contours");
}

/* ---- rasterising ------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Rows whose centre y + 0.5 lies in [min(y1, y2), max(y1, y2)): the
 * half-open rule counts a vertex shared by two edges once. */
static void edge_rows(double y1, double y2, int h, int *j0, int *j1) {
  double lo = y1 < y2 ? y1 : y2, hi = y1 < y2 ? y2 : y1;
  double a = ceil(lo - 0.5), b = ceil(hi - 0.5);
  *j0 = a < 0 ? 0 : a > h ? h : (int)a;
  *j1 = b < 0 ? 0 : b > h ? h : (int)b;
}

nic_status nic__fill_polygon(uint8_t *m, int w, int h, const double *const *rings,
                             const int *counts, int nrings, nic_error *err) {
  /* Crossings of every edge with every row centre, bucketed by row (two
   * passes: count, then place), then even-odd spans per row. */
  int *start = calloc((size_t)h + 2, sizeof(int));
  if (!start) return nic_err(err, NIC_ENOMEM, "out of memory rasterising a polygon");
  for (int k = 0; k < nrings; k++)
    for (int i = 0; i < counts[k]; i++) {
      const double *p = rings[k] + 2 * i, *q = rings[k] + 2 * ((i + 1) % counts[k]);
      if (p[1] == q[1]) continue;
      int j0, j1;
      edge_rows(p[1], q[1], h, &j0, &j1);
      for (int j = j0; j < j1; j++) start[j + 2]++;
    }
  for (int j = 0; j < h; j++) start[j + 2] += start[j + 1];
  double *xs = malloc(sizeof(double) * ((size_t)start[h + 1] + 1));
  if (!xs) {
    free(start);
    return nic_err(err, NIC_ENOMEM, "out of memory rasterising a polygon");
  }
  for (int k = 0; k < nrings; k++)
    for (int i = 0; i < counts[k]; i++) {
      const double *p = rings[k] + 2 * i, *q = rings[k] + 2 * ((i + 1) % counts[k]);
      if (p[1] == q[1]) continue;
      int j0, j1;
      edge_rows(p[1], q[1], h, &j0, &j1);
      for (int j = j0; j < j1; j++) {
        double yc = j + 0.5;
        xs[start[j + 1]++] = p[0] + (yc - p[1]) * (q[0] - p[0]) / (q[1] - p[1]);
      }
    }
  /* start[j] is now the beginning of row j's crossings. */
  for (int j = 0; j < h; j++) {
    int a = start[j], b = start[j + 1];
    qsort(xs + a, (size_t)(b - a), sizeof(double), cmp_double);
    for (int i = a; i + 1 < b; i += 2) {
      double c0 = ceil(xs[i] - 0.5), c1 = ceil(xs[i + 1] - 0.5);
      int x0 = c0 < 0 ? 0 : c0 > w ? w : (int)c0;
      int x1 = c1 < 0 ? 0 : c1 > w ? w : (int)c1;
      if (x1 > x0) memset(m + (size_t)j * w + x0, 1, (size_t)(x1 - x0));
    }
  }
  free(xs);
  free(start);
  return NIC_OK;
}
