/* Internals of the mosaic simulator: the patch pool (mosaic_pool.c), the
 * layout of one slide on its grid of cells (mosaic_layout.c) and the cohort
 * writer (mosaic.c).
 *
 * A slide is a gw x gh grid of patch-sized cells. The tissue is a connected
 * set of cells grown from the grid's centre in the order of a shape score
 * (a star-shaped blob or a rough rectangle); tumour clusters are connected
 * sets of tissue cells grown by random accretion. Every cell that is not
 * tissue is glass. */
#ifndef NIC_MOSAIC_INTERNAL_H
#define NIC_MOSAIC_INTERNAL_H

#include <stdint.h>

#include "nic/sim.h"

/* Seeded streams, named by their first key (see sim_rng). */
enum {
  MOSAIC_STREAM_LABELS = 40, /* which slides are positive */
  MOSAIC_STREAM_LAYOUT,      /* slide i: shape, size, clusters */
  MOSAIC_STREAM_POOL,        /* class c: the cohort-wide order of its patches */
  MOSAIC_STREAM_DRAW,        /* slide i, class c: draws when patches are reused */
  MOSAIC_STREAM_AUG,         /* slide i: flips and rotations */
  MOSAIC_STREAM_GLASS        /* slide i: the background's tint and grain */
};

/* ---- the patch pool ---- */

typedef struct mosaic_image {
  char *rel;   /* path relative to the patch root: [split/]class/name */
  uint8_t *px; /* pw * ph * 3 decoded pixels when cached, else NULL */
} mosaic_image;

typedef struct mosaic_pool {
  const char *root; /* o->patches, borrowed */
  int pw, ph;       /* the size of every usable patch */
  int n[2];         /* usable patches per class: 0 negative, 1 positive */
  mosaic_image *img[2];
} mosaic_pool;

/* Lists <root>/[<split>/]<class>/ for both classes, decodes every image
 * once (in parallel), reports and drops the unreadable and the odd-sized
 * ones, and keeps the pixels when they fit in o->cache_mb. */
nic_status mosaic_pool_load(mosaic_pool *p, const nic_mosaic_opts *o, nic_error *err);
void mosaic_pool_free(mosaic_pool *p);

/* The pixels of patch i of class c: *px points at them; when they had to be
 * decoded again, *owned holds the buffer to free(). Thread-safe. */
nic_status mosaic_pool_get(const mosaic_pool *p, int c, int i, const uint8_t **px, uint8_t **owned,
                           nic_error *err);

/* ---- the layout of one slide ---- */

typedef struct mosaic_layout {
  int gw, gh;             /* grid, cells */
  int *cell;              /* gw * gh: index into the tissue list, -1 = glass */
  int ntissue;            /* tissue cells, tumour included */
  int *tx, *ty;           /* tissue cell coordinates, in raster order */
  int *cluster;           /* per tissue cell: 0 normal, k = tumour cluster k (1-based) */
  int nclusters;          /* tumour clusters (0 on negative slides) */
  int *csize;             /* their sizes */
  int ntumour;            /* tumour cells, the sum of csize */
  nic_mosaic_shape shape; /* BLOB or RECT */
} mosaic_layout;

/* The layout of slide `index` (a function of o->seed, index and positive). */
nic_status mosaic_layout_make(mosaic_layout *l, const nic_mosaic_opts *o, int index, int positive,
                              nic_error *err);
void mosaic_layout_free(mosaic_layout *l);

#endif
