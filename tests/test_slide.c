/* Slide reading: opening (OpenSlide and libvips), spacing rules, level
 * choice, exact box-filter resampling, transparency, thumbnails, concurrent
 * reads, bad inputs. Every slide is a small TIFF/PNG made here with libvips;
 * the real slides in ../shared are checked when present. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <vips/vips.h>

#include "nic/slide.h"
#include "slide/slide_internal.h"
#include "testutil.h"

static const char *tmpdir;

/* ---- making test images --------------------------------------------------- */

typedef struct tiff_opts {
  int tiled, pyramid;
  double mpp;     /* > 0: resolution tags for this spacing */
  int inch;       /* resolution unit inch instead of cm */
  int shrink_max; /* pyramid levels by max instead of mean (marks the level read) */
  const char *description;
} tiff_opts;

static VipsImage *image_from(const uint8_t *pix, int w, int h, int bands) {
  VipsImage *img =
      vips_image_new_from_memory_copy(pix, (size_t)w * h * bands, w, h, bands, VIPS_FORMAT_UCHAR);
  if (!img) {
    fprintf(stderr, "vips: %s\n", vips_error_buffer());
    exit(1);
  }
  img->Type = bands >= 3 ? VIPS_INTERPRETATION_sRGB : VIPS_INTERPRETATION_B_W;
  return img;
}

static const char *tmp_path(const char *name) {
  static char buf[8][512];
  static int k;
  char *p = buf[k++ & 7];
  snprintf(p, 512, "%s/%s", tmpdir, name);
  return p;
}

static void write_tiff(const char *path, const uint8_t *pix, int w, int h, int bands,
                       const tiff_opts *o) {
  VipsImage *img = image_from(pix, w, h, bands);
  if (o->mpp > 0) {
    img->Xres = img->Yres = 1000.0 / o->mpp; /* pixels per mm */
  }
  if (o->description) vips_image_set_string(img, "image-description", o->description);
  int rc = vips_tiffsave(
      img, path, "tile", o->tiled, "tile_width", 256, "tile_height", 256, "pyramid", o->pyramid,
      "compression", VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE, "resunit",
      o->inch ? VIPS_FOREIGN_TIFF_RESUNIT_INCH : VIPS_FOREIGN_TIFF_RESUNIT_CM, "region_shrink",
      o->shrink_max ? VIPS_REGION_SHRINK_MAX : VIPS_REGION_SHRINK_MEAN, NULL);
  g_object_unref(img);
  if (rc) {
    fprintf(stderr, "vips_tiffsave %s: %s\n", path, vips_error_buffer());
    exit(1);
  }
}

static void write_png(const char *path, const uint8_t *pix, int w, int h, int bands, double mpp) {
  VipsImage *img = image_from(pix, w, h, bands);
  if (mpp > 0) img->Xres = img->Yres = 1000.0 / mpp;
  int rc = vips_pngsave(img, path, NULL);
  g_object_unref(img);
  if (rc) {
    fprintf(stderr, "vips_pngsave %s: %s\n", path, vips_error_buffer());
    exit(1);
  }
}

/* 1-pixel checkerboard of 0 and 255 (grey in all three channels). */
static uint8_t *checkerboard(int w, int h) {
  uint8_t *p = malloc((size_t)w * h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) memset(p + 3 * ((size_t)y * w + x), ((x + y) & 1) ? 255 : 0, 3);
  return p;
}

/* Deterministic pseudo-random pixels. */
static uint8_t *noise(int w, int h, uint64_t seed) {
  nic_rng r;
  nic_rng_seed(&r, seed);
  uint8_t *p = malloc((size_t)w * h * 3);
  for (size_t i = 0; i < (size_t)w * h * 3; i++) p[i] = (uint8_t)(nic_rng_next(&r) >> 56);
  return p;
}

/* White with a pink "tissue" rectangle at [x0, x1) x [y0, y1). */
static uint8_t *tissue_rect(int w, int h, int x0, int y0, int x1, int y1) {
  uint8_t *p = malloc((size_t)w * h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t *q = p + 3 * ((size_t)y * w + x);
      int in = x >= x0 && x < x1 && y >= y0 && y < y1;
      q[0] = in ? 200 : 255;
      q[1] = in ? 100 : 255;
      q[2] = in ? 160 : 255;
    }
  return p;
}

static int contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

/* ---- opening and metadata ------------------------------------------------- */

static void test_open_pyramid(void) {
  const char *path = tmp_path("pyr.tif");
  uint8_t *pix = tissue_rect(2048, 1536, 512, 384, 1536, 1152);
  tiff_opts o = {1, 1, 0.25, 0, 0, NULL};
  write_tiff(path, pix, 2048, 1536, 3, &o);
  free(pix);
  nic_slide *s = NULL;
  nic_error err = {0};
  CHECK_OK(nic_slide_open(&s, path, NULL, &err));
  if (!s) {
    fprintf(stderr, "%s\n", err.msg);
    return;
  }
  CHECK(!strcmp(nic_slide_backend(s), "openslide"));
  CHECK(!strcmp(nic_slide_vendor(s), "generic-tiff"));
  CHECK(nic_slide_level_count(s) == 4); /* 2048, 1024, 512, 256 wide */
  int64_t w, h;
  nic_slide_level_dims(s, 0, &w, &h);
  CHECK(w == 2048 && h == 1536);
  nic_slide_level_dims(s, 2, &w, &h);
  CHECK(w == 512 && h == 384);
  CHECK_NEAR(nic_slide_level_downsample(s, 1), 2.0, 1e-9);
  CHECK_NEAR(nic_slide_level_downsample(s, 3), 8.0, 1e-9);
  nic_slide_level_dims(s, 9, &w, &h);
  CHECK(w == 0 && h == 0);
  double mx = 0, my = 0;
  CHECK_OK(nic_slide_spacing(s, &mx, &my, &err));
  CHECK_NEAR(mx, 0.25, 1e-6);
  CHECK_NEAR(my, 0.25, 1e-6);
  CHECK(nic_slide_spacing_source(s) == NIC_SPACING_RESOLUTION);
  CHECK(nic_slide_objective_power(s) == 0);
  CHECK(nic_slide_property_count(s) > 0);
  CHECK(nic_slide_property_value(s, "tiff.ResolutionUnit") != NULL);
  CHECK(nic_slide_property_value(s, "no.such.property") == NULL);
  /* Level choice at several spacings. */
  int level = -1;
  CHECK_OK(nic_slide_level_for_mpp(s, 0.25, &level, &err));
  CHECK(level == 0);
  CHECK_OK(nic_slide_level_for_mpp(s, 0.5, &level, &err));
  CHECK(level == 1);
  CHECK_OK(nic_slide_level_for_mpp(s, 0.499, &level, &err)); /* within 1% */
  CHECK(level == 1);
  CHECK_OK(nic_slide_level_for_mpp(s, 0.49, &level, &err)); /* not within 1% */
  CHECK(level == 0);
  CHECK_OK(nic_slide_level_for_mpp(s, 1.9, &level, &err));
  CHECK(level == 2);
  /* Level 3 (256 x 192) is shorter than its 256-pixel tiles, which
   * OpenSlide 3.4 with libtiff 4.5 decodes wrongly: never chosen. */
  CHECK_OK(nic_slide_level_for_mpp(s, 100, &level, &err));
  CHECK(level == 2);
  CHECK(nic_slide_best_level(s, 0.5) == 0); /* upsampling reads level 0 */
  /* Content: a region straddling the tissue corner at 1 um/px. */
  uint8_t rgb[8 * 8 * 3];
  CHECK_OK(nic_slide_read_region_rgb8(s, 512 - 16, 384 - 16, 1.0, 8, 8, rgb, &err));
  CHECK(rgb[0] == 255 && rgb[1] == 255 && rgb[2] == 255);                        /* (0,0): glass */
  CHECK(rgb[3 * 63] == 200 && rgb[3 * 63 + 1] == 100 && rgb[3 * 63 + 2] == 160); /* tissue */
  nic_slide_close(s);
}

/* Level choice proven by content: with max-shrunk levels, level 1 of a
 * checkerboard is white while area-averaging level 0 gives grey. */
static void test_level_selection(void) {
  const char *path = tmp_path("levels.tif");
  uint8_t *pix = checkerboard(512, 512);
  tiff_opts o = {1, 1, 0.5, 0, 1, NULL};
  write_tiff(path, pix, 512, 512, 3, &o);
  nic_slide *s = NULL;
  nic_error err = {0};
  CHECK_OK(nic_slide_open(&s, path, NULL, &err));
  if (!s) return;
  CHECK(nic_slide_level_count(s) == 2);
  uint8_t *out = malloc(64 * 64 * 3);
  /* At the base spacing: level 0, pixels exactly as written. */
  CHECK_OK(nic_slide_read_region_rgb8(s, 100, 50, 0.5, 64, 64, out, &err));
  int exact = 1;
  for (int y = 0; y < 64; y++)
    for (int x = 0; x < 64; x++)
      exact &= out[3 * (y * 64 + x)] == pix[3 * ((50 + y) * 512 + 100 + x)];
  CHECK(exact);
  /* At 2x the base spacing: level 1 (white), not level 0 averaged (128). */
  int level = -1;
  CHECK_OK(nic_slide_read_region_ds_rgb8(s, 100, 50, 2.0, 64, 64, out, &level, &err));
  CHECK(level == 1);
  int white = 1;
  for (int i = 0; i < 64 * 64 * 3; i++) white &= out[i] == 255;
  CHECK(white);
  CHECK_OK(nic_slide_read_region_rgb8(s, 0, 0, 1.0, 64, 64, out, &err));
  CHECK(out[0] == 255 && out[3 * 64 * 64 - 1] == 255);
  /* Just under 2x (beyond the 1% tolerance): level 0, averaged to grey. */
  CHECK_OK(nic_slide_read_region_ds_rgb8(s, 0, 0, 1.95, 16, 16, out, &level, &err));
  CHECK(level == 0);
  CHECK(out[3 * 17] > 90 && out[3 * 17] < 165);
  free(out);
  free(pix);
  nic_slide_close(s);
}

/* Reference box filter in double: the area integral over the footprint. */
static double ref_pixel(const uint8_t *src, int sw, int sh, double x0, double y0, double f, int i,
                        int j, int c) {
  double a = x0 + i * f, b = a + f, ya = y0 + j * f, yb = ya + f, sum = 0;
  for (int y = (int)floor(ya); y < (int)ceil(yb); y++)
    for (int x = (int)floor(a); x < (int)ceil(b); x++) {
      double ox = fmin(b, x + 1) - fmax(a, x), oy = fmin(yb, y + 1) - fmax(ya, y);
      int v = x >= 0 && y >= 0 && x < sw && y < sh ? src[3 * (y * sw + x) + c] : 255;
      sum += ox * oy * v;
    }
  return sum / (f * f);
}

static void test_box_filter(void) {
  const char *path = tmp_path("flat.tif");
  uint8_t *pix = checkerboard(256, 256);
  tiff_opts o = {1, 0, 0.25, 0, 0, NULL};
  write_tiff(path, pix, 256, 256, 3, &o);
  nic_slide *s = NULL;
  nic_error err = {0};
  CHECK_OK(nic_slide_open(&s, path, NULL, &err));
  if (!s) return;
  uint8_t out[40 * 40 * 3];
  /* 2x2 checkerboard cells average to a flat 127.5 -> 128. */
  CHECK_OK(nic_slide_read_region_rgb8(s, 0, 0, 0.5, 40, 40, out, &err));
  int flat = 1;
  for (int i = 0; i < 40 * 40 * 3; i++) flat &= out[i] == 128;
  CHECK(flat);
  /* 3x3 blocks: 5 or 4 white of 9 -> 141.67 / 113.33. */
  CHECK_OK(nic_slide_read_region_rgb8(s, 0, 0, 0.75, 40, 40, out, &err));
  CHECK(out[0] == 113 && out[3] == 142 && out[3 * 40] == 142);
  nic_slide_close(s);
  free(pix);
  /* Fractional factors and offsets on noise, against the reference. */
  path = tmp_path("noise.tif");
  pix = noise(300, 200, 7);
  write_tiff(path, pix, 300, 200, 3, &o);
  CHECK_OK(nic_slide_open(&s, path, NULL, &err));
  if (!s) return;
  /* Shorter than one tile: read through libvips (see slide.c). */
  CHECK(!strcmp(nic_slide_backend(s), "libvips"));
  static const double factors[] = {1.0, 1.5, 2.37, 3.0, 0.8};
  static const double offsets[][2] = {{0, 0}, {10.25, 3.5}, {7.9, 100.1}, {-3.5, -2}};
  double worst = 0;
  for (size_t fi = 0; fi < sizeof factors / sizeof *factors; fi++)
    for (size_t oi = 0; oi < sizeof offsets / sizeof *offsets; oi++) {
      double f = factors[fi], x0 = offsets[oi][0], y0 = offsets[oi][1];
      CHECK_OK(nic_slide_read_region_ds_rgb8(s, x0, y0, f, 40, 40, out, NULL, &err));
      for (int j = 0; j < 40; j++)
        for (int i = 0; i < 40; i++)
          for (int c = 0; c < 3; c++) {
            double d =
                fabs(out[3 * (j * 40 + i) + c] - ref_pixel(pix, 300, 200, x0, y0, f, i, j, c));
            if (d > 0.501 && worst <= 0.501)
              fprintf(stderr, "  factor %g offset (%g, %g): pixel (%d, %d) differs by %g\n", f, x0,
                      y0, i, j, d);
            worst = d > worst ? d : worst;
          }
    }
  CHECK(worst <= 0.5 + 1e-3); /* only the final rounding */
  nic_slide_close(s);
  free(pix);
}

/* ---- transparency -------------------------------------------------------------- */

static void test_alpha(void) {
  /* OpenSlide's premultiplied ARGB. */
  uint32_t argb[4] = {0x00000000u, 0xff102030u, 0x80402010u, 0x80ffffffu};
  uint8_t rgb[12];
  nic__argb_to_rgb(argb, rgb, 4);
  CHECK(rgb[0] == 255 && rgb[1] == 255 && rgb[2] == 255); /* alpha 0: white */
  CHECK(rgb[3] == 0x10 && rgb[4] == 0x20 && rgb[5] == 0x30);
  CHECK(rgb[6] == 128 && rgb[7] == 64 && rgb[8] == 32);     /* 0x40 * 255 / 128 */
  CHECK(rgb[9] == 255 && rgb[10] == 255 && rgb[11] == 255); /* clamped */
  /* In place, as region reading uses it. */
  memcpy(rgb, argb, sizeof argb < sizeof rgb ? sizeof argb : sizeof rgb);
  nic__argb_to_rgb((const uint32_t *)rgb, rgb, 3);
  CHECK(rgb[0] == 255 && rgb[3] == 0x10 && rgb[6] == 128);
  /* Outside an OpenSlide slide: alpha 0 -> white. */
  const char *path = tmp_path("black.tif");
  uint8_t *pix = calloc(256 * 256 * 3, 1);
  tiff_opts o = {1, 0, 1.0, 0, 0, NULL};
  write_tiff(path, pix, 256, 256, 3, &o);
  nic_slide *s = NULL;
  nic_error err = {0};
  CHECK_OK(nic_slide_open(&s, path, NULL, &err));
  uint8_t out[16 * 8 * 3]; /* the largest read below */
  if (s) {
    CHECK_OK(nic_slide_read_region_rgb8(s, 246, 0, 1.0, 20, 4, out, &err));
    CHECK(out[0] == 0 && out[3 * 9] == 0);           /* inside: black */
    CHECK(out[3 * 10] == 255 && out[3 * 19] == 255); /* beyond the edge: white */
    CHECK_OK(nic_slide_read_region_rgb8(s, 254, 0, 2.0, 2, 1, out, &err));
    CHECK(out[0] == 0 && out[3] == 255); /* half-outside pixels would be mixed; these are not */
    CHECK_OK(nic_slide_read_region_rgb8(s, 255, 0, 2.0, 1, 1, out, &err));
    CHECK(out[0] == 128); /* one black, one white pixel */
    nic_slide_close(s);
  }
  /* A PNG with a transparent half, through libvips. */
  path = tmp_path("alpha.png");
  uint8_t rgba[16 * 8 * 4];
  for (int i = 0; i < 16 * 8; i++) {
    rgba[4 * i] = 10;
    rgba[4 * i + 1] = 20;
    rgba[4 * i + 2] = 30;
    rgba[4 * i + 3] = (i % 16) < 8 ? 255 : 0;
  }
  write_png(path, rgba, 16, 8, 4, 0.5);
  CHECK_OK(nic_slide_open(&s, path, NULL, &err));
  if (s) {
    CHECK(!strcmp(nic_slide_backend(s), "libvips"));
    CHECK(nic_slide_level_count(s) == 1);
    CHECK_OK(nic_slide_read_region_rgb8(s, 0, 0, 0.5, 16, 8, out, &err));
    CHECK(out[0] == 10 && out[1] == 20 && out[2] == 30);
    CHECK(out[3 * 8] == 255 && out[3 * 15 + 2] == 255);
    /* Beyond the image: white as well. */
    CHECK_OK(nic_slide_read_region_ds_rgb8(s, -4, 0, 1.0, 8, 1, out, NULL, &err));
    CHECK(out[0] == 255 && out[3 * 4] == 10);
    nic_slide_close(s);
  }
  free(pix);
}

/* ---- spacing --------------------------------------------------------------------- */

static void check_spacing(const char *path, const nic_slide_opts *so, nic_spacing_source src,
                          double mpp) {
  nic_slide *s = NULL;
  nic_error err = {0};
  CHECK_OK(nic_slide_open(&s, path, so, &err));
  if (!s) {
    fprintf(stderr, "  %s: %s\n", path, err.msg);
    return;
  }
  double mx = -1;
  nic_status st = nic_slide_spacing(s, &mx, NULL, &err);
  CHECK(nic_slide_spacing_source(s) == src);
  if (src == NIC_SPACING_NONE) {
    CHECK(st == NIC_EINVAL);
    CHECK(contains(err.msg, path) && contains(err.msg, "--mpp-override"));
    int level = 0;
    CHECK(nic_slide_level_for_mpp(s, 1.0, &level, NULL) != NIC_OK);
    uint8_t px[3];
    CHECK(nic_slide_read_region_rgb8(s, 0, 0, 1.0, 1, 1, px, NULL) != NIC_OK);
  } else {
    CHECK(st == NIC_OK);
    CHECK_NEAR(mx, mpp, 1e-6);
  }
  nic_slide_close(s);
}

static void test_spacing(void) {
  uint8_t *pix = tissue_rect(256, 256, 0, 0, 0, 0);
  tiff_opts o = {1, 0, 0.5, 1, 0, NULL}; /* inch */
  write_tiff(tmp_path("inch.tif"), pix, 256, 256, 3, &o);
  check_spacing(tmp_path("inch.tif"), NULL, NIC_SPACING_RESOLUTION, 0.5);
  nic_slide_opts ov = {0.3};
  check_spacing(tmp_path("inch.tif"), &ov, NIC_SPACING_OVERRIDE, 0.3);
  /* libvips' default 1 px/mm is written as 10 px/cm: no calibration. */
  tiff_opts none = {1, 0, 0, 0, 0, NULL};
  write_tiff(tmp_path("nores.tif"), pix, 256, 256, 3, &none);
  check_spacing(tmp_path("nores.tif"), NULL, NIC_SPACING_NONE, 0);
  check_spacing(tmp_path("nores.tif"), &ov, NIC_SPACING_OVERRIDE, 0.3);
  tiff_opts desc = {1, 0, 0, 0, 0, "Scanner X|AppMag = 40|mpp=0.2431|Filtered"};
  write_tiff(tmp_path("desc.tif"), pix, 256, 256, 3, &desc);
  check_spacing(tmp_path("desc.tif"), NULL, NIC_SPACING_DESCRIPTION, 0.2431);
  /* 72 dpi (353 um/px) is a screen default, not a calibration. */
  tiff_opts dpi = {1, 0, 25.4 / 72 * 1000, 1, 0, NULL};
  write_tiff(tmp_path("dpi.tif"), pix, 256, 256, 3, &dpi);
  check_spacing(tmp_path("dpi.tif"), NULL, NIC_SPACING_NONE, 0);
  /* Plain images through libvips: PNG pHYs, and PNG without. */
  write_png(tmp_path("phys.png"), pix, 256, 256, 3, 0.5);
  check_spacing(tmp_path("phys.png"), NULL, NIC_SPACING_RESOLUTION, 0.5);
  write_png(tmp_path("plain.png"), pix, 256, 256, 3, 0);
  check_spacing(tmp_path("plain.png"), NULL, NIC_SPACING_NONE, 0);
  free(pix);
  CHECK_NEAR(nic__parse_description_mpp("Aperio Image|AppMag = 20|MPP = 0.4990|Left = 1"), 0.499,
             1e-12);
  CHECK_NEAR(nic__parse_description_mpp("mpp: 0.25"), 0.25, 1e-12);
  CHECK(nic__parse_description_mpp("ampp=3") == 0);
  CHECK(nic__parse_description_mpp("mpp") == 0);
  CHECK(nic__parse_description_mpp("mpp=-1") == 0);
  CHECK(nic__parse_description_mpp(NULL) == 0);
  nic_error err = {0};
  nic_slide *s = NULL;
  nic_slide_opts bad = {-1};
  CHECK(nic_slide_open(&s, tmp_path("inch.tif"), &bad, &err) == NIC_EINVAL && !s);
}

/* ---- thumbnails and concurrency ----------------------------------------------------- */

static void test_thumbnail(void) {
  nic_slide *s = NULL;
  nic_error err = {0};
  CHECK_OK(nic_slide_open(&s, tmp_path("pyr.tif"), NULL, &err));
  if (!s) return;
  uint8_t *rgb = NULL;
  int w = 0, h = 0;
  double ds = 0;
  CHECK_OK(nic_slide_thumbnail_rgb8(s, 256, 0, &rgb, &w, &h, &ds, &err));
  CHECK(w == 256 && h == 192);
  CHECK_NEAR(ds, 8.0, 1e-12);
  if (rgb) {
    /* Tissue at [512, 1536) x [384, 1152) -> [64, 192) x [48, 144). */
    CHECK(rgb[3 * (100 * 256 + 100)] == 200 && rgb[3 * (10 * 256 + 10)] == 255);
    CHECK(rgb[3 * (48 * 256 + 64)] == 200 && rgb[3 * (47 * 256 + 63)] == 255);
  }
  free(rgb);
  CHECK_OK(nic_slide_thumbnail_rgb8(s, 0, 3.0, &rgb, &w, &h, &ds, &err));
  CHECK(w == 171 && h == 128); /* ceil(2048 / 12), 1536 / 12 */
  CHECK_NEAR(ds, 12.0, 1e-12);
  free(rgb);
  CHECK(nic_slide_thumbnail_rgb8(s, 0, 0, &rgb, &w, &h, &ds, &err) == NIC_EINVAL);
  nic_slide_close(s);
}

typedef struct reader_arg {
  const nic_slide *s;
  int seed;
  int mismatches;
  const uint8_t *expect; /* 16 regions of 48 x 48 */
} reader_arg;

static void region_of(int k, double *x, double *y, double *mpp) {
  *x = 37.0 * k + 11;
  *y = 53.0 * (k % 7) + 5;
  *mpp = 0.25 + 0.2 * (k % 5);
}

static void *reader(void *p) {
  reader_arg *a = p;
  uint8_t out[48 * 48 * 3];
  for (int rep = 0; rep < 3; rep++)
    for (int i = 0; i < 16; i++) {
      int k = (i + a->seed) % 16;
      double x, y, mpp;
      region_of(k, &x, &y, &mpp);
      if (nic_slide_read_region_rgb8(a->s, x, y, mpp, 48, 48, out, NULL) != NIC_OK ||
          memcmp(out, a->expect + (size_t)k * sizeof out, sizeof out))
        a->mismatches++;
    }
  return NULL;
}

/* Several threads reading one slide give what one thread reads alone. */
static void test_concurrent_reads(void) {
  const char *paths[2] = {tmp_path("pyr.tif"), tmp_path("conc.png")};
  uint8_t *pix = noise(700, 500, 3);
  write_png(paths[1], pix, 700, 500, 3, 0.25);
  free(pix);
  for (int f = 0; f < 2; f++) {
    nic_slide *s = NULL;
    nic_error err = {0};
    CHECK_OK(nic_slide_open(&s, paths[f], NULL, &err));
    if (!s) continue;
    uint8_t *expect = malloc(16 * 48 * 48 * 3);
    for (int k = 0; k < 16; k++) {
      double x, y, mpp;
      region_of(k, &x, &y, &mpp);
      CHECK_OK(nic_slide_read_region_rgb8(s, x, y, mpp, 48, 48, expect + k * 48 * 48 * 3, &err));
    }
    pthread_t th[4];
    reader_arg args[4];
    for (int t = 0; t < 4; t++) {
      args[t] = (reader_arg){s, t * 5, 0, expect};
      pthread_create(&th[t], NULL, reader, &args[t]);
    }
    int bad = 0;
    for (int t = 0; t < 4; t++) {
      pthread_join(th[t], NULL);
      bad += args[t].mismatches;
    }
    CHECK(bad == 0);
    free(expect);
    nic_slide_close(s);
  }
}

/* ---- bad inputs ----------------------------------------------------------------- */

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
}

static void test_bad_inputs(void) {
  nic_slide *s = NULL;
  nic_error err = {0};
  const char *missing = tmp_path("missing.svs");
  CHECK(nic_slide_open(&s, missing, NULL, &err) == NIC_EIO && !s);
  CHECK(contains(err.msg, missing) && contains(err.msg, "No such file"));
  const char *text = tmp_path("notes.svs");
  write_text(text, "this is not a slide\n");
  CHECK(nic_slide_open(&s, text, NULL, &err) == NIC_EFORMAT && !s);
  CHECK(contains(err.msg, text));
  CHECK(nic_slide_open(&s, tmpdir, NULL, &err) == NIC_EINVAL && !s);
  CHECK(contains(err.msg, tmpdir));
  /* A pyramid cut in half: either opening or reading fails, naming it. */
  const char *cut = tmp_path("cut.tif");
  uint8_t *pix = noise(1024, 1024, 5);
  tiff_opts o = {1, 1, 0.5, 0, 0, NULL};
  write_tiff(cut, pix, 1024, 1024, 3, &o);
  free(pix);
  struct stat st;
  stat(cut, &st);
  CHECK(truncate(cut, st.st_size / 2) == 0);
  nic_status rc = nic_slide_open(&s, cut, NULL, &err);
  if (rc == NIC_OK) {
    uint8_t *rgb = NULL;
    int w, h;
    rc = nic_slide_thumbnail_rgb8(s, 0, 0.5, &rgb, &w, &h, NULL, &err);
    free(rgb);
    nic_slide_close(s);
  }
  CHECK(rc != NIC_OK);
  CHECK(contains(err.msg, cut));
  printf("  truncated TIFF: %s\n", err.msg);
  /* A truncated PNG through libvips. */
  const char *cutpng = tmp_path("cut.png");
  pix = noise(256, 256, 9);
  write_png(cutpng, pix, 256, 256, 3, 0.5);
  free(pix);
  stat(cutpng, &st);
  CHECK(truncate(cutpng, st.st_size / 2) == 0);
  rc = nic_slide_open(&s, cutpng, NULL, &err);
  if (rc == NIC_OK) {
    uint8_t *rgb = NULL;
    int w, h;
    rc = nic_slide_thumbnail_rgb8(s, 64, 0, &rgb, &w, &h, NULL, &err);
    free(rgb);
    nic_slide_close(s);
  }
  CHECK(rc != NIC_OK);
  CHECK(contains(err.msg, cutpng));
  printf("  truncated PNG: %s\n", err.msg);
  /* Region arguments. */
  CHECK_OK(nic_slide_open(&s, tmp_path("pyr.tif"), NULL, &err));
  if (s) {
    uint8_t px[3];
    CHECK(nic_slide_read_region_rgb8(s, 0, 0, 1.0, 0, 1, px, &err) == NIC_EINVAL);
    CHECK(nic_slide_read_region_rgb8(s, 0, 0, -1.0, 1, 1, px, &err) == NIC_EINVAL);
    CHECK(nic_slide_read_region_ds_rgb8(s, NAN, 0, 1.0, 1, 1, px, NULL, &err) == NIC_EINVAL);
    nic_slide_close(s);
  }
}

/* ---- the real slides in ../shared ------------------------------------------------------ */

static void test_shared_slides(void) {
  char svs[1024], tif[1024];
  if (!nic_test_shared_slides(svs, tif, sizeof svs)) return;
  nic_slide *s = NULL;
  nic_error err = {0};
  CHECK_OK(nic_slide_open(&s, svs, NULL, &err));
  if (s) {
    double mx = 0;
    CHECK_OK(nic_slide_spacing(s, &mx, NULL, &err));
    CHECK_NEAR(mx, 0.499, 1e-9);
    CHECK(nic_slide_spacing_source(s) == NIC_SPACING_OPENSLIDE);
    CHECK(!strcmp(nic_slide_vendor(s), "aperio"));
    CHECK(nic_slide_objective_power(s) == 20);
    CHECK(nic_slide_level_count(s) == 1);
    nic_slide_close(s);
  }
  CHECK_OK(nic_slide_open(&s, tif, NULL, &err));
  if (s) {
    /* OpenSlide has no mpp for it; its TIFF resolution tags (20040 px/cm)
     * give the spacing. */
    CHECK(nic_slide_property_value(s, "openslide.mpp-x") == NULL);
    CHECK(nic_slide_spacing_source(s) == NIC_SPACING_RESOLUTION);
    double mx = 0;
    CHECK_OK(nic_slide_spacing(s, &mx, NULL, &err));
    CHECK_NEAR(mx, 0.499, 1e-3);
    CHECK(nic_slide_level_count(s) == 5);
    int level = -1;
    CHECK_OK(nic_slide_level_for_mpp(s, 1.0, &level, &err)); /* downsample 2.0003 */
    CHECK(level == 1);
    nic_slide_close(s);
  }
  nic_slide_opts ov = {0.5};
  CHECK_OK(nic_slide_open(&s, tif, &ov, &err));
  if (s) {
    double mx = 0;
    CHECK_OK(nic_slide_spacing(s, &mx, NULL, &err));
    CHECK(mx == 0.5 && nic_slide_spacing_source(s) == NIC_SPACING_OVERRIDE);
    nic_slide_close(s);
  }
  /* The same pixels from both files, at 2 um/px (SVS: level 0 averaged;
   * pyramid: a JPEG-recompressed level 2). */
  nic_slide *a = NULL, *b = NULL;
  CHECK_OK(nic_slide_open(&a, svs, NULL, &err));
  nic_slide_opts same = {0.499};
  CHECK_OK(nic_slide_open(&b, tif, &same, &err));
  if (a && b) {
    uint8_t *ra = malloc(200 * 200 * 3), *rb = malloc(200 * 200 * 3);
    CHECK_OK(nic_slide_read_region_rgb8(a, 300, 400, 2.0, 200, 200, ra, &err));
    CHECK_OK(nic_slide_read_region_rgb8(b, 300, 400, 2.0, 200, 200, rb, &err));
    double mad = 0;
    for (int i = 0; i < 200 * 200 * 3; i++) mad += abs(ra[i] - rb[i]);
    mad /= 200 * 200 * 3;
    printf("  SVS vs pyramid at 2 um/px: mean |difference| %.2f\n", mad);
    CHECK(mad < 6);
    free(ra);
    free(rb);
  }
  nic_slide_close(a);
  nic_slide_close(b);
}

int main(void) {
  nic_error err = {0};
  if (nic__vips_init(&err) != NIC_OK) nic_test_skip(err.msg);
  tmpdir = nic_test_tmpdir();
  RUN(test_open_pyramid);
  RUN(test_level_selection);
  RUN(test_box_filter);
  RUN(test_alpha);
  RUN(test_spacing);
  RUN(test_thumbnail);
  RUN(test_concurrent_reads);
  RUN(test_bad_inputs);
  RUN(test_shared_slides);
  return nic_test_finish();
}
