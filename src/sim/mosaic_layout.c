/* The layout of one mosaic slide on its grid of cells.
 *
 * Tissue. Every cell of a working grid gets a shape score: for a blob, the
 * distance from the centre (in a stretched, rotated frame) divided by a
 * radius that varies with the angle through three random harmonics; for a
 * rough rectangle, the larger of the two axis distances divided by the
 * half-sides. Scores are in cells, and uniform noise of up to 0.6 cell
 * roughens the border. The
 * tissue is then grown from the centre cell like Prim's algorithm: the
 * frontier cell with the lowest score joins next, until the slide has its
 * number of tissue cells. The region is connected by construction and
 * follows the level sets of the score, i.e. the shape.
 *
 * Tumour. A cluster starts at a random tissue cell and grows by accretion
 * (Eden growth): a uniformly random cell of its frontier (tissue cells
 * 4-adjacent to it) joins, until it has its size. Clusters never touch one
 * another, not even diagonally, so each stays a separate connected set. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sim/mosaic_internal.h"
#include "sim/sim_internal.h"

#define SHAPE_NOISE 0.6 /* amplitude of the per-cell score noise, in cells */
#define CLUSTER_TRIES 200

void mosaic_layout_free(mosaic_layout *l) {
  if (!l) return;
  free(l->cell);
  free(l->tx);
  free(l->ty);
  free(l->cluster);
  free(l->csize);
  memset(l, 0, sizeof *l);
}

/* ---- a binary min-heap of (score, cell) for the tissue growth ---- */

typedef struct heap {
  double *key;
  int *val;
  int n;
} heap;

static void heap_push(heap *h, double key, int val) {
  int i = h->n++;
  while (i > 0) {
    int up = (i - 1) / 2;
    if (h->key[up] <= key) break;
    h->key[i] = h->key[up];
    h->val[i] = h->val[up];
    i = up;
  }
  h->key[i] = key;
  h->val[i] = val;
}

static int heap_pop(heap *h) {
  int top = h->val[0];
  double key = h->key[--h->n];
  int val = h->val[h->n], i = 0;
  for (;;) {
    int c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && h->key[c + 1] < h->key[c]) c++;
    if (key <= h->key[c]) break;
    h->key[i] = h->key[c];
    h->val[i] = h->val[c];
    i = c;
  }
  h->key[i] = key;
  h->val[i] = val;
  return top;
}

/* Shape scores of a W x W working grid centred on (W/2, W/2). */
static void shape_scores(double *score, int W, nic_mosaic_shape shape, nic_rng *r) {
  double c = W / 2;
  if (shape == NIC_MOSAIC_BLOB) {
    /* Radius 1 + sum_k a_k cos(k theta + phi_k), k = 2..4, at least 0.45;
     * the frame is stretched by an aspect in [0.65, 1.55] and rotated. */
    double amp[3], phase[3];
    for (int k = 0; k < 3; k++) {
      amp[k] = sim_uniform(r, 0, 0.3 / (k + 1));
      phase[k] = sim_uniform(r, 0, 2 * M_PI);
    }
    double aspect = sim_uniform(r, 0.65, 1.55), rot = sim_uniform(r, 0, M_PI);
    double sx = sqrt(aspect), sy = 1 / sx, cr = cos(rot), sr = sin(rot);
    for (int y = 0; y < W; y++)
      for (int x = 0; x < W; x++) {
        double dx = x - c, dy = y - c;
        double u = (cr * dx + sr * dy) / sx, v = (-sr * dx + cr * dy) / sy;
        double th = atan2(v, u), rad = 1;
        for (int k = 0; k < 3; k++) rad += amp[k] * cos((k + 2) * th + phase[k]);
        score[y * W + x] = sqrt(u * u + v * v) / rad + SHAPE_NOISE * sim_uniform(r, -1, 1);
      }
  } else {
    /* max(|dx| / a, |dy| / b) with a / b in [0.5, 2]. */
    double aspect = sim_uniform(r, 0.5, 2.0), a = sqrt(aspect), b = 1 / a;
    for (int y = 0; y < W; y++)
      for (int x = 0; x < W; x++) {
        double u = fabs(x - c) / a, v = fabs(y - c) / b;
        score[y * W + x] = (u > v ? u : v) + SHAPE_NOISE * sim_uniform(r, -1, 1);
      }
  }
}

/* Marks n connected cells of the W x W grid (in[] = 1), grown from the
 * centre in score order. */
static nic_status grow_tissue(uint8_t *in, int W, int n, nic_mosaic_shape shape, nic_rng *r,
                              nic_error *err) {
  size_t cells = (size_t)W * W;
  double *score = malloc(cells * sizeof *score);
  heap h = {malloc(cells * sizeof(double)), malloc(cells * sizeof(int)), 0};
  uint8_t *seen = calloc(cells, 1);
  nic_status s = NIC_OK;
  if (!score || !h.key || !h.val || !seen) {
    s = nic_err(err, NIC_ENOMEM, "out of memory laying out a slide");
    goto done;
  }
  shape_scores(score, W, shape, r);
  int start = (W / 2) * W + W / 2;
  heap_push(&h, score[start], start);
  seen[start] = 1;
  for (int got = 0; got < n && h.n > 0; got++) {
    int k = heap_pop(&h), x = k % W, y = k / W;
    in[k] = 1;
    const int nb[4][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}};
    for (int d = 0; d < 4; d++) {
      int xx = x + nb[d][0], yy = y + nb[d][1];
      if (xx < 0 || yy < 0 || xx >= W || yy >= W || seen[yy * W + xx]) continue;
      seen[yy * W + xx] = 1;
      heap_push(&h, score[yy * W + xx], yy * W + xx);
    }
  }
done:
  free(score);
  free(h.key);
  free(h.val);
  free(seen);
  return s;
}

/* 1 when tissue cell t touches (8-neighbourhood) a cell of a cluster other
 * than `self`. */
static int touches_other(const mosaic_layout *l, int t, int self) {
  for (int dy = -1; dy <= 1; dy++)
    for (int dx = -1; dx <= 1; dx++) {
      int x = l->tx[t] + dx, y = l->ty[t] + dy;
      if (x < 0 || y < 0 || x >= l->gw || y >= l->gh) continue;
      int u = l->cell[y * l->gw + x];
      if (u >= 0 && l->cluster[u] && l->cluster[u] != self) return 1;
    }
  return 0;
}

/* Grows cluster `id` of k cells; 0 when this attempt got stuck. `members`
 * and `front` have room for ntissue entries. */
static int grow_cluster(mosaic_layout *l, int id, int k, nic_rng *r, int *members, int *front) {
  /* The seed: a random free tissue cell away from the other clusters. */
  int nfree = 0;
  for (int t = 0; t < l->ntissue; t++)
    if (!l->cluster[t] && !touches_other(l, t, id)) front[nfree++] = t;
  if (nfree == 0) return 0;
  int n = 0;
  members[n++] = front[nic_rng_below(r, (uint64_t)nfree)];
  l->cluster[members[0]] = id;
  while (n < k) {
    /* The frontier, each cell once, in a deterministic order. */
    int nf = 0;
    for (int m = 0; m < n; m++) {
      const int nb[4][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}};
      for (int d = 0; d < 4; d++) {
        int x = l->tx[members[m]] + nb[d][0], y = l->ty[members[m]] + nb[d][1];
        if (x < 0 || y < 0 || x >= l->gw || y >= l->gh) continue;
        int u = l->cell[y * l->gw + x];
        if (u < 0 || l->cluster[u] || touches_other(l, u, id)) continue;
        int dup = 0;
        for (int f = 0; f < nf && !dup; f++) dup = front[f] == u;
        if (!dup) front[nf++] = u;
      }
    }
    if (nf == 0) break;
    int u = front[nic_rng_below(r, (uint64_t)nf)];
    l->cluster[u] = id;
    members[n++] = u;
  }
  if (n == k) return 1;
  for (int m = 0; m < n; m++) l->cluster[members[m]] = 0; /* undo */
  return 0;
}

nic_status mosaic_layout_make(mosaic_layout *l, const nic_mosaic_opts *o, int index, int positive,
                              nic_error *err) {
  memset(l, 0, sizeof *l);
  nic_rng r;
  sim_rng(&r, o->seed, MOSAIC_STREAM_LAYOUT, (uint64_t)index, 0);
  l->shape = o->shape;
  if (l->shape == NIC_MOSAIC_MIXED)
    l->shape = nic_rng_uniform(&r) < 0.5 ? NIC_MOSAIC_BLOB : NIC_MOSAIC_RECT;
  int n =
      (int)lround(o->tissue_patches * sim_uniform(&r, 1 - o->tissue_spread, 1 + o->tissue_spread));
  if (n < 1) n = 1;

  /* The working grid is large enough for any shape the scores allow (an
   * aspect of 2 and radii up to 1.55 times the mean). */
  int W = 4 * (int)ceil(sqrt((double)n)) + 8;
  uint8_t *in = calloc((size_t)W * W, 1);
  int *members = NULL, *front = NULL;
  if (!in) return nic_err(err, NIC_ENOMEM, "out of memory laying out a slide");
  nic_status s = grow_tissue(in, W, n, l->shape, &r, err);
  if (s != NIC_OK) goto done;

  /* The tissue's bounding box plus the margin of glass is the slide. */
  int x0 = W, y0 = W, x1 = -1, y1 = -1;
  for (int y = 0; y < W; y++)
    for (int x = 0; x < W; x++)
      if (in[y * W + x]) {
        x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1;
        y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1;
      }
  l->gw = x1 - x0 + 1 + 2 * o->margin;
  l->gh = y1 - y0 + 1 + 2 * o->margin;
  l->cell = malloc(sizeof(int) * (size_t)l->gw * l->gh);
  l->tx = malloc(sizeof(int) * (size_t)n);
  l->ty = malloc(sizeof(int) * (size_t)n);
  l->cluster = calloc((size_t)n, sizeof(int));
  l->csize = calloc((size_t)(o->clusters > 0 ? o->clusters : 1), sizeof(int));
  members = malloc(sizeof(int) * (size_t)n);
  front = malloc(sizeof(int) * (size_t)n);
  if (!l->cell || !l->tx || !l->ty || !l->cluster || !l->csize || !members || !front) {
    s = nic_err(err, NIC_ENOMEM, "out of memory laying out a slide");
    goto done;
  }
  for (int gy = 0; gy < l->gh; gy++)
    for (int gx = 0; gx < l->gw; gx++) {
      int x = gx - o->margin + x0, y = gy - o->margin + y0;
      int t = -1;
      if (x >= x0 && x <= x1 && y >= y0 && y <= y1 && in[y * W + x]) {
        t = l->ntissue++;
        l->tx[t] = gx;
        l->ty[t] = gy;
      }
      l->cell[gy * l->gw + gx] = t;
    }

  if (positive) {
    for (int c = 0; c < o->clusters; c++) {
      int k =
          o->cluster_min + (int)nic_rng_below(&r, (uint64_t)(o->cluster_max - o->cluster_min) + 1);
      int ok = 0;
      for (int tries = 0; tries < CLUSTER_TRIES && !ok; tries++)
        ok = grow_cluster(l, c + 1, k, &r, members, front);
      if (!ok) {
        s = nic_err(err, NIC_EINVAL,
                    "slide %d: cannot place %d separate tumour clusters of up to %d patches in "
                    "%d tissue patches; lower --clusters or --cluster-max, or raise "
                    "--tissue-patches",
                    index, o->clusters, o->cluster_max, n);
        goto done;
      }
      l->csize[c] = k;
      l->ntumour += k;
    }
    l->nclusters = o->clusters;
  }
done:
  free(in);
  free(members);
  free(front);
  if (s != NIC_OK) mosaic_layout_free(l);
  return s;
}
