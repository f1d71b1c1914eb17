/* The direct JPEG-tile reader (src/slide/fastread.c) against the OpenSlide
 * path: the same pixels at every level, at tile borders, partly or wholly
 * outside the slide, resampled; YCbCr 4:2:0 and 4:4:4, RGB (Aperio-style),
 * with and without shared JPEGTables; fallback for non-JPEG levels; a
 * corrupt tile; concurrent reads; the NIC_SLIDE_READER switch. Slides are
 * written here with libtiff, libvips and the histo simulator; the real
 * slides in ../shared are checked when present. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>
#include <vips/vips.h>

#include "nic/sim.h"
#include "nic/slide.h"
#include "slide/slide_internal.h"
#include "testutil.h"

static const char *tmpdir;

static const char *tmp_path(const char *name) {
  static char buf[8][512];
  static int k;
  char *p = buf[k++ & 7];
  snprintf(p, 512, "%s/%s", tmpdir, name);
  return p;
}

static int contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

/* ---- making test slides ----------------------------------------------------------- */

/* Smooth colour gradients with some texture: JPEG-friendly but every
 * pixel different enough that misplaced tiles or rows show. */
static uint8_t *texture(int w, int h, uint64_t seed) {
  nic_rng r;
  nic_rng_seed(&r, seed);
  uint8_t *p = malloc((size_t)w * h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t *q = p + 3 * ((size_t)y * w + x);
      int n = (int)(nic_rng_next(&r) >> 59); /* 0..31 */
      q[0] = (uint8_t)(120 + (x * 97 / w) + n);
      q[1] = (uint8_t)(40 + ((x + y) % 160) + n / 2);
      q[2] = (uint8_t)(90 + (y * 131 / h) + ((x / 7 + y / 5) & 15));
    }
  return p;
}

/* 2x2 box average (floor sizes), as pyramid writers do. */
static uint8_t *halve(const uint8_t *p, int w, int h) {
  int W = w / 2, H = h / 2;
  uint8_t *q = malloc((size_t)W * H * 3);
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++)
      for (int c = 0; c < 3; c++) {
        const uint8_t *a = p + 3 * ((size_t)(2 * y) * w + 2 * x) + c;
        int s = a[0] + a[3] + a[3 * (size_t)w] + a[3 * (size_t)w + 3];
        q[3 * ((size_t)y * W + x) + c] = (uint8_t)((s + 2) / 4);
      }
  return q;
}

typedef struct jt_opts {
  int levels;
  int rgb;         /* photometric RGB (as Aperio) rather than YCbCr */
  int sub;         /* YCbCr subsampling: 2 (4:2:0) or 1 (4:4:4) */
  int tables;      /* shared JPEGTables (abbreviated tiles) or complete tiles */
  int deflate_min; /* levels >= this are deflate instead of JPEG (0: none) */
  const char *description;
} jt_opts;

/* Writes a tiled pyramidal TIFF with libtiff: 256 px tiles, level k the
 * 2x2 average of level k-1. */
static void write_jpeg_tiff(const char *path, const uint8_t *pix, int w, int h, const jt_opts *o) {
  TIFF *t = TIFFOpen(path, "w");
  if (!t) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(1);
  }
  uint8_t *cur = malloc((size_t)w * h * 3), *tile = malloc(256 * 256 * 3);
  memcpy(cur, pix, (size_t)w * h * 3);
  for (int L = 0; L < o->levels; L++) {
    int deflate = o->deflate_min > 0 && L >= o->deflate_min;
    TIFFSetField(t, TIFFTAG_SUBFILETYPE, L ? FILETYPE_REDUCEDIMAGE : 0);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, (uint32_t)w);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, (uint32_t)h);
    TIFFSetField(t, TIFFTAG_TILEWIDTH, 256u);
    TIFFSetField(t, TIFFTAG_TILELENGTH, 256u);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    if (o->description) TIFFSetField(t, TIFFTAG_IMAGEDESCRIPTION, o->description);
    if (deflate) {
      TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_ADOBE_DEFLATE);
      TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
    } else {
      TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_JPEG);
      TIFFSetField(t, TIFFTAG_PHOTOMETRIC, o->rgb ? PHOTOMETRIC_RGB : PHOTOMETRIC_YCBCR);
      if (!o->rgb) TIFFSetField(t, TIFFTAG_YCBCRSUBSAMPLING, o->sub, o->sub);
      TIFFSetField(t, TIFFTAG_JPEGQUALITY, 85);
      if (!o->rgb) TIFFSetField(t, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB);
      TIFFSetField(t, TIFFTAG_JPEGTABLESMODE,
                   o->tables ? JPEGTABLESMODE_QUANT | JPEGTABLESMODE_HUFF : 0);
    }
    for (int ty = 0; ty < h; ty += 256)
      for (int tx = 0; tx < w; tx += 256) {
        /* Beyond the image: the edge pixel repeated (never shown). */
        for (int y = 0; y < 256; y++)
          for (int x = 0; x < 256; x++) {
            int sx = tx + x < w ? tx + x : w - 1, sy = ty + y < h ? ty + y : h - 1;
            memcpy(tile + 3 * (y * 256 + x), cur + 3 * ((size_t)sy * w + sx), 3);
          }
        if (TIFFWriteTile(t, tile, (uint32_t)tx, (uint32_t)ty, 0, 0) < 0) {
          fprintf(stderr, "TIFFWriteTile failed on %s\n", path);
          exit(1);
        }
      }
    TIFFWriteDirectory(t);
    uint8_t *next = halve(cur, w, h);
    free(cur);
    cur = next;
    w /= 2;
    h /= 2;
  }
  TIFFClose(t);
  free(cur);
  free(tile);
}

/* A JPEG pyramid through libvips (YCbCr 4:2:0 with JPEGTables, as
 * bench/compress/make_slides.sh makes them). */
static void write_vips_jpeg(const char *path, const uint8_t *pix, int w, int h) {
  VipsImage *img =
      vips_image_new_from_memory_copy(pix, (size_t)w * h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
  img->Type = VIPS_INTERPRETATION_sRGB;
  int rc = vips_tiffsave(img, path, "tile", TRUE, "tile_width", 256, "tile_height", 256, "pyramid",
                         TRUE, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_JPEG, "Q", 90, NULL);
  g_object_unref(img);
  if (rc) {
    fprintf(stderr, "vips_tiffsave %s: %s\n", path, vips_error_buffer());
    exit(1);
  }
}

/* ---- comparing the two readers ----------------------------------------------------- */

/* Opens path with the given NIC_SLIDE_READER. */
static nic_slide *open_with(const char *path, const char *reader) {
  setenv("NIC_SLIDE_READER", reader, 1);
  nic_slide *s = NULL;
  nic_error err = {0};
  if (nic_slide_open(&s, path, NULL, &err) != NIC_OK) fprintf(stderr, "%s\n", err.msg);
  unsetenv("NIC_SLIDE_READER");
  return s;
}

/* Bytes that differ, and the largest difference. */
static int64_t ndiff(const uint8_t *a, const uint8_t *b, size_t n, int *maxd) {
  int64_t nd = 0;
  *maxd = 0;
  for (size_t i = 0; i < n; i++) {
    int d = abs(a[i] - b[i]);
    nd += d != 0;
    if (d > *maxd) *maxd = d;
  }
  return nd;
}

/* Mean absolute difference. */
static double mean_diff(const uint8_t *a, const uint8_t *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += abs(a[i] - b[i]);
  return s / (double)n;
}

/* The w x h window at (lx, ly) of a full lw x lh level image, white outside. */
static void crop(const uint8_t *full, int64_t lw, int64_t lh, int64_t lx, int64_t ly, int w, int h,
                 uint8_t *out) {
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      int64_t sx = lx + x, sy = ly + y;
      uint8_t *o = out + 3 * ((size_t)y * w + x);
      if (sx < 0 || sy < 0 || sx >= lw || sy >= lh)
        memset(o, 255, 3);
      else
        memcpy(o, full + 3 * ((size_t)sy * lw + sx), 3);
    }
}

/* Both readers on one slide: every fast level read whole through each
 * (bit-identical), then windows at tile borders and beyond the edges at
 * the level's own scale, and resampled reads. The fast reader must equal
 * the crop of the whole level exactly; so must the OpenSlide reader where
 * the level's downsample is an integer. Otherwise OpenSlide positions a
 * window by a level-0 integer, a fraction of a pixel off, and cairo
 * interpolates (blurring by up to half a pixel, and smearing the edge
 * pixels into the transparent margin), so only the mean difference is
 * bounded there. Returns the number of fast levels read. */
static int compare_readers(const char *path, int tile) {
  nic_slide *a = open_with(path, "openslide"), *b = open_with(path, "auto");
  CHECK(a && b);
  if (!a || !b) {
    nic_slide_close(a);
    nic_slide_close(b);
    return 0;
  }
  int nfast = 0;
  nic_error err = {0};
  for (int L = 0; L < nic_slide_level_count(b); L++) {
    CHECK(!nic__fast_level(a, L));
    if (!nic__fast_level(b, L) || nic_slide_best_level(b, nic_slide_level_downsample(b, L)) != L)
      continue;
    nfast++;
    int64_t lw, lh;
    nic_slide_level_dims(b, L, &lw, &lh);
    double ds = nic_slide_level_downsample(b, L);
    int integer_ds = ds == (double)(int64_t)ds;
    uint8_t *fa = malloc((size_t)(lw * lh * 3)), *fb = malloc((size_t)(lw * lh * 3));
    int la = -1, lb = -1, maxd = 0;
    CHECK_OK(nic_slide_read_region_ds_rgb8(a, 0, 0, ds, (int)lw, (int)lh, fa, &la, &err));
    CHECK_OK(nic_slide_read_region_ds_rgb8(b, 0, 0, ds, (int)lw, (int)lh, fb, &lb, &err));
    CHECK(la == L && lb == L);
    int64_t nd = ndiff(fa, fb, (size_t)(lw * lh * 3), &maxd);
    if (nd)
      printf("  %s level %d whole: %lld bytes differ (max %d)\n", path, L, (long long)nd, maxd);
    CHECK(nd == 0);
    /* Windows: across tile corners, partly and wholly outside. */
    const int W = 300, H = 200;
    int64_t pos[][2] = {{0, 0},      {tile - 7, tile - 5}, {2 * tile - 150, tile - 100},
                        {-40, -30},  {lw - 120, lh - 50},  {lw - 10, 3},
                        {5, lh - 3}, {lw + 20, lh + 20},   {-W - 5, 10}};
    uint8_t *want = malloc(W * H * 3), *ga = malloc(W * H * 3), *gb = malloc(W * H * 3);
    for (size_t k = 0; k < sizeof pos / sizeof pos[0]; k++) {
      int64_t lx = pos[k][0], ly = pos[k][1];
      crop(fa, lw, lh, lx, ly, W, H, want);
      CHECK_OK(nic_slide_read_region_ds_rgb8(b, (double)lx * ds, (double)ly * ds, ds, W, H, gb, &lb,
                                             &err));
      CHECK_OK(nic_slide_read_region_ds_rgb8(a, (double)lx * ds, (double)ly * ds, ds, W, H, ga, &la,
                                             &err));
      nd = ndiff(want, gb, W * H * 3, &maxd);
      if (nd)
        printf("  %s level %d window (%lld, %lld): %lld bytes differ (max %d)\n", path, L,
               (long long)lx, (long long)ly, (long long)nd, maxd);
      CHECK(nd == 0);
      nd = ndiff(ga, gb, W * H * 3, &maxd);
      if (integer_ds)
        CHECK(nd == 0);
      else
        CHECK(mean_diff(ga, gb, W * H * 3) < 8); /* see above */
    }
    /* Resampled reads: fractional scale and position, a patch at about
     * 0.5 um/px from 0.499, and a coarse average. */
    double scales[] = {ds * 1.5, ds * 1.002, ds * 3.3};
    double x0s[] = {tile * ds * 0.9 + 0.37, tile * ds - 64.25, 17.5};
    for (int k = 0; k < 3; k++) {
      CHECK_OK(nic_slide_read_region_ds_rgb8(b, x0s[k], x0s[k] * 0.7, scales[k], 128, 96, gb, &lb,
                                             &err));
      CHECK_OK(nic_slide_read_region_ds_rgb8(a, x0s[k], x0s[k] * 0.7, scales[k], 128, 96, ga, &la,
                                             &err));
      CHECK(la == lb);
      nd = ndiff(ga, gb, 128 * 96 * 3, &maxd);
      if (integer_ds && la == L)
        CHECK(nd == 0);
      else
        CHECK(mean_diff(ga, gb, 128 * 96 * 3) < 8);
    }
    free(want);
    free(ga);
    free(gb);
    free(fa);
    free(fb);
  }
  nic_slide_close(a);
  nic_slide_close(b);
  return nfast;
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_libtiff_pyramids(void) {
  const int w = 2048, h = 1536;
  uint8_t *pix = texture(w, h, 1);
  struct {
    const char *name;
    jt_opts o;
  } cases[] = {
      {"ycbcr420_tables.tif", {4, 0, 2, 1, 0, NULL}}, /* level 3 (192 high) never chosen */
      {"ycbcr444_complete.tif", {3, 0, 1, 0, 0, NULL}},
      {"rgb_aperio.svs",
       {3, 1, 1, 1, 0, "Aperio Image Library test\r\n2048x1536|AppMag = 20|MPP = 0.25"}},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    const char *path = tmp_path(cases[k].name);
    write_jpeg_tiff(path, pix, w, h, &cases[k].o);
    nic_slide *s = open_with(path, "auto");
    CHECK(s != NULL);
    if (!s) continue;
    printf("  %s: vendor %s, %d levels\n", cases[k].name, nic_slide_vendor(s),
           nic_slide_level_count(s));
    CHECK(!strcmp(nic_slide_vendor(s), k == 2 ? "aperio" : "generic-tiff"));
    CHECK(nic_slide_level_count(s) == cases[k].o.levels);
    nic_slide_close(s);
    CHECK(compare_readers(path, 256) == (k == 0 ? 3 : cases[k].o.levels));
  }
  free(pix);
}

/* Odd sizes: partial edge tiles and non-integer downsamples (1500 ->
 * 750 -> 375 -> 187: 8.02). */
static void test_vips_pyramid(void) {
  const int w = 1500, h = 1100;
  uint8_t *pix = texture(w, h, 2);
  const char *path = tmp_path("vips.tif");
  write_vips_jpeg(path, pix, w, h);
  free(pix);
  int n = compare_readers(path, 256);
  printf("  vips pyramid: %d fast levels\n", n);
  CHECK(n >= 3);
}

/* Complete JPEG streams per tile (no JPEGTables), as the simulator writes. */
static void test_histo_slide(void) {
  nic_histo_opts o = nic_histo_default_opts();
  o.width = 2560;
  o.height = 2048;
  o.threads = 2;
  nic_histo_layout *l = NULL;
  nic_error err = {0};
  const char *path = tmp_path("histo.tif");
  CHECK_OK(nic_histo_layout_create(&l, &o, 0, 1, &err));
  if (!l) return;
  CHECK_OK(nic_histo_write_tiff(l, path, 80, 2, &err));
  nic_histo_layout_free(l);
  CHECK(compare_readers(path, 256) == nic_histo_levels(o.width, o.height, NULL));
}

/* Non-JPEG levels go through OpenSlide, level by level. */
static void test_fallback(void) {
  const int w = 1280, h = 1024;
  uint8_t *pix = texture(w, h, 3);
  /* Level 0 JPEG, levels 1-2 deflate. */
  const char *mixed = tmp_path("mixed.tif");
  jt_opts d = {3, 1, 1, 0, 1, NULL};
  write_jpeg_tiff(mixed, pix, w, h, &d);
  /* Everything deflate: a JPEG-less pyramid through libvips. */
  const char *path = tmp_path("deflate.tif");
  VipsImage *img =
      vips_image_new_from_memory_copy(pix, (size_t)w * h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
  img->Type = VIPS_INTERPRETATION_sRGB;
  CHECK(vips_tiffsave(img, path, "tile", TRUE, "tile_width", 256, "tile_height", 256, "pyramid",
                      TRUE, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE, NULL) == 0);
  g_object_unref(img);
  free(pix);
  nic_slide *s = open_with(path, "auto");
  CHECK(s != NULL);
  if (s) {
    for (int L = 0; L < nic_slide_level_count(s); L++) CHECK(!nic__fast_level(s, L));
    CHECK(s->fast == NULL);
    nic_slide_close(s);
  }
  s = open_with(mixed, "auto");
  CHECK(s != NULL);
  if (s) {
    CHECK(nic_slide_level_count(s) == 3);
    CHECK(nic__fast_level(s, 0) && !nic__fast_level(s, 1) && !nic__fast_level(s, 2));
    nic_slide_close(s);
  }
  CHECK(compare_readers(mixed, 256) == 1);
  /* Whole-slide thumbnails agree whichever levels read them. */
  nic_slide *a = open_with(mixed, "openslide"), *b = open_with(mixed, "auto");
  if (a && b) {
    uint8_t *ta = NULL, *tb = NULL;
    int wa, ha, wb, hb, maxd;
    nic_error err = {0};
    CHECK_OK(nic_slide_thumbnail_rgb8(a, 300, 0, &ta, &wa, &ha, NULL, &err));
    CHECK_OK(nic_slide_thumbnail_rgb8(b, 300, 0, &tb, &wb, &hb, NULL, &err));
    CHECK(wa == wb && ha == hb);
    if (ta && tb && wa == wb && ha == hb) CHECK(ndiff(ta, tb, (size_t)wa * ha * 3, &maxd) == 0);
    free(ta);
    free(tb);
  }
  nic_slide_close(a);
  nic_slide_close(b);
}

/* A tile whose bytes are destroyed: a clear error naming the file and the
 * tile, and the rest of the slide still reads. */
static void test_corrupt_tile(void) {
  const int w = 1024, h = 768;
  uint8_t *pix = texture(w, h, 4);
  const char *path = tmp_path("corrupt.tif");
  jt_opts o = {2, 0, 2, 1, 0, NULL};
  write_jpeg_tiff(path, pix, w, h, &o);
  free(pix);
  /* Level 0, tile (2, 1): its offset and size from libtiff. */
  TIFF *t = TIFFOpen(path, "r");
  uint64_t *off = NULL, *size = NULL;
  CHECK(t && TIFFGetField(t, TIFFTAG_TILEOFFSETS, &off) &&
        TIFFGetField(t, TIFFTAG_TILEBYTECOUNTS, &size));
  int idx = 1 * 4 + 2;
  uint64_t o0 = off[idx], n = size[idx];
  TIFFClose(t);
  FILE *f = fopen(path, "r+b");
  CHECK(f != NULL);
  if (!f) return;
  uint8_t *junk = calloc(1, (size_t)n);
  for (uint64_t i = 0; i < n; i++) junk[i] = (uint8_t)(i * 37 + 11);
  fseek(f, (long)o0, SEEK_SET);
  fwrite(junk, 1, (size_t)n, f);
  fclose(f);
  free(junk);
  nic_slide *s = open_with(path, "auto");
  CHECK(s && nic__fast_level(s, 0));
  if (!s) return;
  uint8_t *rgb = malloc(256 * 256 * 3);
  nic_error err = {0};
  nic_status st =
      nic_slide_read_region_ds_rgb8(s, 2 * 256 + 10, 256 + 10, 1.0, 64, 64, rgb, NULL, &err);
  CHECK(st != NIC_OK);
  CHECK(contains(err.msg, path) && contains(err.msg, "tile (2, 1)"));
  printf("  corrupt tile: %s\n", err.msg);
  /* Another tile still reads. */
  CHECK_OK(nic_slide_read_region_ds_rgb8(s, 10, 10, 1.0, 64, 64, rgb, NULL, &err));
  /* A tile whose bytes lie beyond the end of the file. */
  CHECK(truncate(path, (off_t)o0 + 10) == 0);
  st = nic_slide_read_region_ds_rgb8(s, 2 * 256 + 10, 256 + 10, 1.0, 64, 64, rgb, NULL, &err);
  CHECK(st != NIC_OK && contains(err.msg, path));
  printf("  truncated tile: %s\n", err.msg);
  free(rgb);
  nic_slide_close(s);
}

/* ---- concurrent reads --------------------------------------------------------------- */

typedef struct thread_arg {
  nic_slide *s;
  int id, n;
  const uint8_t *want; /* n reference patches */
  int bad;
} thread_arg;

static void patch_pos(int k, double *x, double *y) {
  *x = (k % 20) * 201.3 - 60.5; /* 20 x 15 patches over the whole slide */
  *y = (k / 20) * 207.7 - 40.25;
}

static void *reader_thread(void *p) {
  thread_arg *a = p;
  uint8_t *got = malloc(128 * 128 * 3);
  nic_error err = {0};
  for (int r = 0; r < 3; r++)
    for (int i = 0; i < a->n; i++) {
      int k = (i * 5 + a->id * 11 + r) % a->n; /* each thread its own order */
      double x, y;
      patch_pos(k, &x, &y);
      if (nic_slide_read_region_ds_rgb8(a->s, x, y, 1.002, 128, 128, got, NULL, &err) != NIC_OK ||
          memcmp(got, a->want + (size_t)k * 128 * 128 * 3, 128 * 128 * 3) != 0)
        a->bad++;
    }
  free(got);
  return NULL;
}

/* Four threads on one slide, far more tiles than the cache holds: every
 * patch equals the single-threaded read. */
static void test_threads(void) {
  const int w = 4096, h = 3072, n = 300;
  uint8_t *pix = texture(w, h, 5);
  const char *path = tmp_path("threads.tif");
  jt_opts o = {1, 0, 2, 1, 0, NULL};
  write_jpeg_tiff(path, pix, w, h, &o);
  free(pix);
  nic_slide *s = open_with(path, "auto");
  CHECK(s && nic__fast_level(s, 0));
  if (!s) return;
  uint8_t *want = malloc((size_t)n * 128 * 128 * 3);
  nic_error err = {0};
  for (int k = 0; k < n; k++) {
    double x, y;
    patch_pos(k, &x, &y);
    CHECK_OK(nic_slide_read_region_ds_rgb8(s, x, y, 1.002, 128, 128,
                                           want + (size_t)k * 128 * 128 * 3, NULL, &err));
  }
  pthread_t tid[4];
  thread_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (thread_arg){s, i, n, want, 0};
    CHECK(pthread_create(&tid[i], NULL, reader_thread, &args[i]) == 0);
  }
  int bad = 0;
  for (int i = 0; i < 4; i++) {
    pthread_join(tid[i], NULL);
    bad += args[i].bad;
  }
  CHECK(bad == 0);
  uint64_t hits = 0, misses = 0;
  nic__fast_stats(s, &hits, &misses);
  printf("  4 threads x 3 x %d patches: %d wrong; cache %llu hits, %llu misses\n", n, bad,
         (unsigned long long)hits, (unsigned long long)misses);
  CHECK(hits > 0 && misses > 128); /* more decodes than the 128 slots: evictions */
  free(want);
  nic_slide_close(s);
}

/* NIC_SLIDE_READER: openslide turns the fast reader off; nonsense is an
 * error naming the variable. */
static void test_switch(void) {
  const char *path = tmp_path("ycbcr420_tables.tif");
  nic_slide *s = open_with(path, "openslide");
  CHECK(s && !nic__fast_level(s, 0) && s->fast == NULL);
  nic_slide_close(s);
  s = open_with(path, "");
  CHECK(s && nic__fast_level(s, 0));
  nic_slide_close(s);
  setenv("NIC_SLIDE_READER", "turbo", 1);
  nic_error err = {0};
  s = NULL;
  CHECK(nic_slide_open(&s, path, NULL, &err) == NIC_EINVAL && !s);
  CHECK(contains(err.msg, "NIC_SLIDE_READER") && contains(err.msg, path));
  unsetenv("NIC_SLIDE_READER");
  /* Plain images never get it. */
  const char *png = tmp_path("plain.png");
  uint8_t *pix = texture(64, 64, 6);
  VipsImage *img = vips_image_new_from_memory_copy(pix, 64 * 64 * 3, 64, 64, 3, VIPS_FORMAT_UCHAR);
  CHECK(vips_pngsave(img, png, NULL) == 0);
  g_object_unref(img);
  free(pix);
  s = open_with(png, "auto");
  CHECK(s && s->fast == NULL && !nic__fast_level(s, 0));
  nic_slide_close(s);
}

/* ---- the real slides ------------------------------------------------------------------ */

static void test_shared_slides(void) {
  char svs[1024], tif[1024];
  if (!nic_test_shared_slides(svs, tif, sizeof svs)) return;
  /* SVS: one level of 240 px RGB JPEG tiles; the pyramid: 256 px YCbCr
   * tiles, levels 0-3 (level 4 is shorter than a tile and never chosen). */
  int n = compare_readers(svs, 240);
  printf("  %s: %d fast levels\n", svs, n);
  CHECK(n == 1);
  n = compare_readers(tif, 256);
  printf("  %s: %d fast levels\n", tif, n);
  CHECK(n == 4);
  /* A compress-like grid of 128 px patches at 0.5 um/px (0.499 level 0):
   * identical through both readers. */
  nic_slide *a = open_with(tif, "openslide"), *b = open_with(tif, "auto");
  if (a && b) {
    uint8_t *pa = malloc(128 * 128 * 3), *pb = malloc(128 * 128 * 3);
    nic_error err = {0};
    double step = 128 * 0.5 / 0.499;
    int64_t bad = 0;
    for (double y = 0; y < 2967; y += step * 3)
      for (double x = 0; x < 2220; x += step * 2) {
        if (nic_slide_read_region_ds_rgb8(a, x, y, 0.5 / 0.499, 128, 128, pa, NULL, &err) ||
            nic_slide_read_region_ds_rgb8(b, x, y, 0.5 / 0.499, 128, 128, pb, NULL, &err) ||
            memcmp(pa, pb, 128 * 128 * 3))
          bad++;
      }
    CHECK(bad == 0);
    free(pa);
    free(pb);
  }
  nic_slide_close(a);
  nic_slide_close(b);
}

int main(void) {
  nic_error err = {0};
  if (nic__vips_init(&err) != NIC_OK) nic_test_skip(err.msg);
  TIFFSetWarningHandler(NULL);
  tmpdir = nic_test_tmpdir();
  RUN(test_libtiff_pyramids);
  RUN(test_vips_pyramid);
  RUN(test_histo_slide);
  RUN(test_fallback);
  RUN(test_corrupt_tile);
  RUN(test_threads);
  RUN(test_switch);
  RUN(test_shared_slides);
  return nic_test_finish();
}
