/* Private to src/slide/: the slide structure and helpers shared by the
 * reader, the tissue detector and the mask writers. Tests include it to
 * reach the pieces that have no public entry point. */
#ifndef NIC_SLIDE_INTERNAL_H
#define NIC_SLIDE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "io/vips_init.h"
#include "nic/slide.h"

typedef struct _openslide openslide_t; /* <openslide/openslide.h> */
typedef struct _VipsImage VipsImage;   /* <vips/vips.h> */
typedef struct nic__fast nic__fast;    /* fastread.c */

struct nic_slide {
  char *path;
  char *vendor;
  openslide_t *osr; /* the OpenSlide backend, or NULL */
  VipsImage *rgba;  /* the libvips backend: the image as 4-band uchar RGBA, or NULL */
  nic__fast *fast;  /* direct JPEG tile reader for some OpenSlide levels, or NULL */
  int nlevels;
  int64_t *level_w, *level_h;
  double *level_ds;
  uint8_t *level_ok;   /* 0: never chosen for reading (see short_tile_level in slide.c) */
  double mpp_x, mpp_y; /* 0 when unknown */
  nic_spacing_source spacing_src;
  double objective;
  int nprops;
  char **prop_names, **prop_values;
};

/* Resolution tags implying a coarser spacing than this are screen or print
 * defaults (72 dpi = 353 um/px), not a microscope's calibration. */
#define NIC_SLIDE_MAX_RESOLUTION_MPP 25.0

/* libvips' pending error text (cleared), without the trailing newline, in
 * buf; "unknown libvips error" when there is none. */
void nic__vips_error(char *buf, size_t size);

/* Converts n OpenSlide pixels (premultiplied ARGB, native-endian uint32)
 * to packed RGB: alpha 0 becomes white, partial alpha is un-premultiplied.
 * dst may alias src (it is written front to back, 3 bytes per 4 read). */
void nic__argb_to_rgb(const uint32_t *src, uint8_t *dst, size_t n);

/* ---- the direct JPEG-tile reader (fastread.c) ---- */

/* Sets up s->fast for a generic-tiff or aperio slide opened by OpenSlide
 * whose levels include JPEG-tiled ones (left NULL otherwise, or when the
 * environment says NIC_SLIDE_READER=openslide). Fails only when out of
 * memory or for an unknown NIC_SLIDE_READER value. */
nic_status nic__fast_open(nic_slide *s, nic_error *err);
void nic__fast_close(nic_slide *s);
/* 1 when `level` is read by the fast reader rather than OpenSlide. */
int nic__fast_level(const nic_slide *s, int level);
/* Decodes the w x h window of `level` at level pixel (lx, ly) into rgb
 * (packed RGB, white outside the level), as OpenSlide's pixels would be
 * with transparency made white. Needs nic__fast_level(s, level). */
nic_status nic__fast_read(const nic_slide *s, int level, int64_t lx, int64_t ly, int64_t w,
                          int64_t h, uint8_t *rgb, nic_error *err);
/* Tile cache hits and misses so far (0 without a fast reader). */
void nic__fast_stats(const nic_slide *s, uint64_t *hits, uint64_t *misses);

/* Parses "mpp=0.25" / "MPP = 0.4990" / "mpp: 0.5" in free text; returns the
 * value or 0 when absent or not positive. */
double nic__parse_description_mpp(const char *text);

/* Level-0 pixels per pixel of a grid at `mpp` um/px (needs the spacing). */
nic_status nic__grid_scale(const nic_slide *s, double mpp, double *sx, double *sy, nic_error *err);

/* ---- binary-image operations on w x h 0/1 masks (morph.c) ---- */

/* Disk of radius r pixels (dx^2 + dy^2 <= r^2). Pixels outside the image
 * count as background for dilation and as foreground for erosion, so
 * neither operation moves the image border. Return NIC_ENOMEM on failure. */
nic_status nic__dilate(uint8_t *m, int w, int h, int r, nic_error *err);
nic_status nic__erode(uint8_t *m, int w, int h, int r, nic_error *err);
/* Opening by reconstruction: removes the 8-connected pieces that an
 * opening with a disk of radius r would erase completely and keeps the
 * others whole, so thin tissue attached to a larger piece survives. */
nic_status nic__open_reconstruct(uint8_t *m, int w, int h, int r, nic_error *err);
/* Labels 8-connected foreground components 1..n into labels (w*h int32,
 * 0 = background); returns n or -1 when out of memory. sizes (optional,
 * malloc'd, n+1 entries) receives each component's pixel count. */
int nic__label8(const uint8_t *m, int w, int h, int32_t *labels, int64_t **sizes);
/* Removes foreground components smaller than min_px pixels. */
nic_status nic__remove_small(uint8_t *m, int w, int h, int64_t min_px, nic_error *err);
/* Fills holes (4-connected background components not touching the image
 * border) smaller than max_px pixels. */
nic_status nic__fill_holes(uint8_t *m, int w, int h, int64_t max_px, nic_error *err);

/* ---- contours (contour.c) ---- */

/* A closed ring of vertices on pixel corners (x, y in mask pixels); the
 * last vertex is not repeated. */
typedef struct nic_ring {
  int n;
  int32_t *xy; /* 2n values */
} nic_ring;

/* One 8-connected piece: its outer ring and its holes. */
typedef struct nic_polygon {
  nic_ring outer;
  int nholes;
  nic_ring *holes;
} nic_polygon;

/* Traces the boundary of every 8-connected component of a 0/1 mask along
 * pixel edges. Outer rings run counterclockwise and holes clockwise in a
 * y-up reading of the coordinates (GeoJSON's right-hand rule). */
nic_status nic__trace_polygons(const uint8_t *m, int w, int h, nic_polygon **polys, int *npolys,
                               nic_error *err);
void nic__free_polygons(nic_polygon *polys, int n);

/* Fills (ORs 1 into) mask pixels whose centres lie inside a polygon given
 * by rings in mask-pixel coordinates (doubles, even-odd rule, so inner rings
 * cut holes). rings[k] has counts[k] (x, y) pairs. */
nic_status nic__fill_polygon(uint8_t *m, int w, int h, const double *const *rings,
                             const int *counts, int nrings, nic_error *err);

/* ---- files (fileio.c) ---- */

/* Writes len bytes to a temporary file in path's directory and renames it
 * to path (mode 0644). */
nic_status nic__write_file_atomic(const char *path, const void *data, size_t len, nic_error *err);
/* Encodes a w x h image with `bands` (1 or 3) uchar channels as PNG and
 * writes it atomically; mpp > 0 is recorded as the pixel density. */
nic_status nic__write_png(const char *path, const uint8_t *pix, int w, int h, int bands, double mpp,
                          nic_error *err);

/* A growable text buffer for writers. */
typedef struct nic_strbuf {
  char *s;
  size_t len, cap;
  int failed; /* an allocation failed; the text is incomplete */
} nic_strbuf;
void nic__sb_printf(nic_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nic__sb_free(nic_strbuf *b);

#endif
