/* Whole-slide images: opening, spacing, region reading, tissue masks.
 *
 * A nic_slide is anything OpenSlide reads (Aperio SVS, Hamamatsu NDPI,
 * MIRAX, Leica SCN, generic tiled TIFF, ...) or, when OpenSlide does not
 * recognise the file, a plain image libvips reads (PNG, JPEG, TIFF, PPM...),
 * which then has a single level. Coordinates are always level-0 pixels;
 * spacing is micrometres per pixel (um/px, "mpp") at level 0.
 *
 * Concurrency: after nic_slide_open returns, every function taking a
 * `const nic_slide *` may be called from several threads at once on the
 * same slide (OpenSlide handles are thread-safe for reads, every libvips
 * read builds its own pipeline, and the direct JPEG-tile reader of TIFF
 * and SVS slides locks its tile cache). nic_slide_close must not race with
 * them. NIC_SLIDE_READER=openslide in the environment (read at open) turns
 * that reader off; see docs/slides.md.
 * A nic_mask is read-only after it is built, so nic_mask_tissue_fraction may
 * also be called concurrently. See docs/slides.md for the rules below. */
#ifndef NIC_SLIDE_H
#define NIC_SLIDE_H

#include <stdint.h>

#include "nic/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- opening and metadata --------------------------------------------- */

typedef struct nic_slide nic_slide;

typedef struct nic_slide_opts {
  /* > 0: the level-0 spacing in um/px for both axes, winning over whatever
   * the file says (for files with no or wrong calibration). */
  double mpp_override;
} nic_slide_opts;

/* Where the level-0 spacing came from, in order of precedence. */
typedef enum nic_spacing_source {
  NIC_SPACING_NONE = 0,   /* unknown: nic_slide_spacing fails */
  NIC_SPACING_OVERRIDE,   /* nic_slide_opts.mpp_override */
  NIC_SPACING_OPENSLIDE,  /* openslide.mpp-x / openslide.mpp-y */
  NIC_SPACING_RESOLUTION, /* resolution tags: tiff.XResolution/YResolution + ResolutionUnit
                           * (cm or inch); for libvips images the file's resolution */
  NIC_SPACING_DESCRIPTION /* "mpp=0.25" (or Aperio "MPP = 0.25") in the ImageDescription */
} nic_spacing_source;

/* Opens a slide or image. opts may be NULL (no override). Errors name the
 * file: missing, unreadable, or neither a slide nor an image. */
nic_status nic_slide_open(nic_slide **out, const char *path, const nic_slide_opts *opts,
                          nic_error *err);
void nic_slide_close(nic_slide *s);

const char *nic_slide_path(const nic_slide *s);
/* "openslide" or "libvips": which library reads the pixels. */
const char *nic_slide_backend(const nic_slide *s);
/* OpenSlide's vendor ("aperio", "generic-tiff", ...) or the libvips loader
 * ("pngload", "jpegload", "tiffload", ...). */
const char *nic_slide_vendor(const nic_slide *s);

int nic_slide_level_count(const nic_slide *s);
/* Level dimensions in that level's pixels; level 0 is the full resolution.
 * Out-of-range levels give 0 x 0. */
void nic_slide_level_dims(const nic_slide *s, int level, int64_t *w, int64_t *h);
/* Level-0 pixels per pixel of `level` (1 for level 0; 0 when out of range). */
double nic_slide_level_downsample(const nic_slide *s, int level);

/* The level-0 spacing in um/px. Fails with NIC_EINVAL and a message naming
 * the file when the spacing is unknown and no override was given: nic never
 * guesses a spacing. Either pointer may be NULL. */
nic_status nic_slide_spacing(const nic_slide *s, double *mpp_x, double *mpp_y, nic_error *err);
nic_spacing_source nic_slide_spacing_source(const nic_slide *s);
const char *nic_spacing_source_str(nic_spacing_source src);
/* Scanner objective magnification (openslide.objective-power), 0 = unknown. */
double nic_slide_objective_power(const nic_slide *s);

/* Properties as OpenSlide names them ("openslide.mpp-x", "tiff.ImageDescription",
 * "aperio.AppMag", ...) or, for libvips images, libvips' header fields. */
int nic_slide_property_count(const nic_slide *s);
const char *nic_slide_property_name(const nic_slide *s, int i);
const char *nic_slide_property_value(const nic_slide *s, const char *name); /* NULL if absent */

/* ---- reading pixels ------------------------------------------------------- */

/* Relative tolerance of level choice: a level whose spacing exceeds the
 * target by at most this fraction still counts as fine enough (pyramids
 * rarely have exact factors of 2: 2220 / 1110.5...). */
#define NIC_SLIDE_LEVEL_TOLERANCE 0.01

/* The level a read at `downsample` level-0 pixels per output pixel decodes:
 * the highest (smallest) level whose downsample is <= downsample * 1.01, so
 * the least data is decoded and nothing is upsampled by more than 1%.
 * Levels OpenSlide 3.4 cannot decode reliably (non-JPEG levels shorter than
 * one tile, see docs/slides.md) are never chosen. */
int nic_slide_best_level(const nic_slide *s, double downsample);
/* The same for a target spacing (needs the slide's spacing). */
nic_status nic_slide_level_for_mpp(const nic_slide *s, double target_mpp, int *level,
                                   nic_error *err);

/* Reads an out_w x out_h RGB image (3 bytes per pixel, rows packed) at
 * `target_mpp` um/px whose top-left corner is level-0 pixel (x0, y0): the
 * level-0 rectangle x0 .. x0 + out_w * target_mpp / mpp_x (same for y).
 * Decodes the level nic_slide_level_for_mpp picks and resamples it with an
 * exact box filter (each output pixel is the area-weighted mean of the
 * source pixels its footprint covers, fractional factors included).
 * Transparent pixels (alpha 0: outside the scanned area or the image) are
 * white; partly transparent ones are un-premultiplied. Positions may be
 * fractional and may extend beyond the slide (white there). */
nic_status nic_slide_read_region_rgb8(const nic_slide *s, double x0, double y0, double target_mpp,
                                      int out_w, int out_h, uint8_t *rgb, nic_error *err);
/* The same with the scale given as level-0 pixels per output pixel, which
 * needs no spacing; *level (may be NULL) receives the level decoded. */
nic_status nic_slide_read_region_ds_rgb8(const nic_slide *s, double x0, double y0,
                                         double downsample, int out_w, int out_h, uint8_t *rgb,
                                         int *level, nic_error *err);

/* The whole slide at low resolution, malloc'd into *rgb (free with free()):
 * either at `target_mpp` um/px (max_side 0) or with its longer side
 * max_side pixels (target_mpp 0). The image covers the slide (partial last
 * pixels included); *downsample receives level-0 pixels per thumbnail
 * pixel along x (the same along y unless the slide's pixels are not
 * square), *w / *h its size. Reads the lowest-resolution level that is fine
 * enough. */
nic_status nic_slide_thumbnail_rgb8(const nic_slide *s, int max_side, double target_mpp,
                                    uint8_t **rgb, int *w, int *h, double *downsample,
                                    nic_error *err);

/* ---- tissue masks ---------------------------------------------------------- */

/* A binary mask over the whole slide on a regular grid: mask pixel (i, j)
 * covers level-0 pixels [i*scale_x, (i+1)*scale_x) x [j*scale_y, (j+1)*scale_y). */
typedef struct nic_mask {
  int width, height;
  double scale_x, scale_y; /* level-0 pixels per mask pixel */
  double mpp;              /* um per mask pixel along x (0 = unknown) */
  uint8_t *data;           /* width * height, row-major: 1 = tissue, 0 = not */
} nic_mask;

/* Tissue detection parameters; lengths are in um and areas in um^2 so that
 * the result does not depend on the detection spacing. */
typedef struct nic_tissue_params {
  double mpp;             /* detection spacing, um/px (8) */
  double min_threshold;   /* saturation threshold floor, 0..1 (0.07): blank glass gives none */
  double max_threshold;   /* saturation threshold ceiling, 0..1 (0.25): keeps pale tissue */
  int dark_max;           /* max(R,G,B) < this: black border, black ink, dust (50) */
  int white_min;          /* min(R,G,B) >= this: padding, left out of Otsu (250) */
  double ink_hue_min;     /* hues in [min, max] degrees are ink, never tissue: */
  double ink_hue_max;     /* green, cyan and blue (70..230); H&E has G < R */
  double ink_min_sat;     /* ink pixels this saturated are also left out of Otsu (0.15) */
  double close_radius_um; /* morphological closing, disk radius (16) */
  double open_radius_um;  /* then opening by reconstruction, disk radius (16): drops
                           * pieces thinner than the disk, keeps the rest whole */
  double min_object_um2;  /* drop tissue pieces smaller than this (10000 = 0.01 mm^2) */
  double max_hole_um2;    /* fill holes smaller than this (10000) */
} nic_tissue_params;

nic_tissue_params nic_tissue_default_params(void);

/* What one detection saw (for reports and tests). */
typedef struct nic_tissue_info {
  double otsu;              /* Otsu's saturation threshold, 0..1 */
  double threshold;         /* the one used (Otsu clamped to [min, max]) */
  int64_t pixels;           /* pixels looked at */
  int64_t dark, white, ink; /* of those, excluded as dark / white padding / ink */
  int64_t tissue;           /* tissue pixels in the final mask */
  int components;           /* tissue pieces in the final mask (8-connected) */
} nic_tissue_info;

/* Detection on an in-memory RGB image at `mpp` um/px: writes w*h bytes of
 * 0/1 into mask. info may be NULL. See docs/slides.md for the algorithm. */
nic_status nic_tissue_detect_rgb8(const uint8_t *rgb, int w, int h, double mpp,
                                  const nic_tissue_params *p, uint8_t *mask, nic_tissue_info *info,
                                  nic_error *err);
/* Detection on a slide at p->mpp (p may be NULL for the defaults): reads a
 * thumbnail at that spacing and fills *mask (free with nic_mask_free). */
nic_status nic_tissue_detect(const nic_slide *s, const nic_tissue_params *p, nic_mask *mask,
                             nic_tissue_info *info, nic_error *err);

nic_status nic_mask_alloc(nic_mask *m, int w, int h, double scale_x, double scale_y, double mpp,
                          nic_error *err);
void nic_mask_free(nic_mask *m);

/* Fraction (0..1) of the level-0 rectangle [x0, x0+w) x [y0, y0+h) covered
 * by tissue, weighting mask pixels by their overlap; parts outside the mask
 * count as no tissue. compress keeps patches with a fraction >= 0.5. */
double nic_mask_tissue_fraction(const nic_mask *m, double x0, double y0, double w, double h);
/* Tissue area in level-0 pixels squared. */
double nic_mask_tissue_area(const nic_mask *m);
/* 8-connected tissue pieces. */
int nic_mask_components(const nic_mask *m);

/* Replaces detection with a user's mask for slide s:
 * - a GeoJSON file (.geojson / .json): Polygon and MultiPolygon geometries
 *   (bare, in Features or FeatureCollections) in level-0 pixel coordinates,
 *   QuPath's export; holes are respected; rasterised on a grid of `grid_mpp`
 *   um/px (the slide's spacing is needed); no polygons means no tissue;
 * - any image libvips reads, of any size: stretched over the whole slide,
 *   tissue where its first band (after conversion to grey) exceeds half of
 *   the image's maximum (so 0/1, 0/255 and noisy JPEG masks all work). */
nic_status nic_mask_load(const nic_slide *s, const char *path, double grid_mpp, nic_mask *m,
                         nic_error *err);

/* Writers; each writes a temporary file next to `path` and renames it, so a
 * reader never sees a partial file. */
/* 8-bit grey PNG, 255 = tissue, with the mask spacing in its pHYs chunk. */
nic_status nic_mask_write_png(const nic_mask *m, const char *path, nic_error *err);
/* QuPath-compatible GeoJSON FeatureCollection: one Polygon Feature per
 * 8-connected piece, holes as inner rings, vertices on mask-pixel corners in
 * level-0 pixel coordinates; properties {"objectType": "annotation",
 * "classification": {"name": "Tissue"}}. Rasterising it back on the same
 * grid gives the mask exactly. */
nic_status nic_mask_write_geojson(const nic_mask *m, const char *path, nic_error *err);
/* An RGB image (e.g. a thumbnail, w x h at `downsample` level-0 px per
 * pixel) with the mask outline drawn over it, as PNG. */
nic_status nic_mask_write_overlay_png(const nic_mask *m, const uint8_t *rgb, int w, int h,
                                      double downsample, const char *path, nic_error *err);

#ifdef __cplusplus
}
#endif
#endif
