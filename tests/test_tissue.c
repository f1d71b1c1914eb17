/* Tissue detection and masks: synthetic slides with known tissue, borders
 * and pen marks; blank slides; morphology; contour tracing and GeoJSON
 * round trips; user masks; tissue fractions; the real slides in ../shared
 * when present. */
#include <dirent.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <vips/vips.h>

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

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- a synthetic slide ------------------------------------------------------ */

/* 2048 x 1536 at 2 um/px: glass with noise; two pieces of H&E-like tissue
 * (pink with purple nuclei), one with a large lumen; a black border on the
 * left, pure-white padding on top and a dark strip at the bottom; a blue pen
 * stroke and a green pen dot on the glass. truth (optional, W*H) receives
 * 1 for tissue pixels. */
enum { SW = 2048, SH = 1536 };
#define SLIDE_MPP 2.0

static int in_ellipse(int x, int y, double cx, double cy, double rx, double ry) {
  double dx = (x - cx) / rx, dy = (y - cy) / ry;
  return dx * dx + dy * dy <= 1;
}

/* Distance from (x, y) to the segment (ax, ay)-(bx, by). */
static double seg_dist(double x, double y, double ax, double ay, double bx, double by) {
  double vx = bx - ax, vy = by - ay, t = ((x - ax) * vx + (y - ay) * vy) / (vx * vx + vy * vy);
  t = t < 0 ? 0 : t > 1 ? 1 : t;
  double dx = x - (ax + t * vx), dy = y - (ay + t * vy);
  return sqrt(dx * dx + dy * dy);
}

static uint8_t clamp8(double v) {
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5);
}

static uint8_t *make_slide(int with_tissue, uint8_t *truth, int64_t *ink_pixels) {
  uint8_t *p = malloc((size_t)SW * SH * 3);
  nic_rng r;
  nic_rng_seed(&r, 42);
  int64_t ink = 0;
  for (int y = 0; y < SH; y++)
    for (int x = 0; x < SW; x++) {
      double n = nic_rng_uniform(&r) * 8 - 4;
      double c[3] = {242 + n, 240 + n, 244 + n}; /* glass */
      int tissue =
          with_tissue &&
          ((in_ellipse(x, y, 700, 800, 450, 350) && !in_ellipse(x, y, 650, 760, 120, 90)) ||
           in_ellipse(x, y, 1600, 420, 160, 110));
      if (tissue) {
        int nucleus = nic_rng_uniform(&r) < 0.2;
        double v = nic_rng_uniform(&r) * 20 - 10;
        c[0] = (nucleus ? 120 : 225) + v;
        c[1] = (nucleus ? 70 : 150) + v;
        c[2] = (nucleus ? 160 : 190) + v;
      }
      int pen = 0;
      if (seg_dist(x, y, 1300, 1000, 1950, 1300) < 12) { /* blue stroke, 48 um wide */
        c[0] = 40 + n;
        c[1] = 70 + n;
        c[2] = 170 + n;
        pen = 1;
      } else if (in_ellipse(x, y, 1800, 1100, 40, 40)) { /* green dot */
        c[0] = 60 + n;
        c[1] = 160 + n;
        c[2] = 90 + n;
        pen = 1;
      }
      if (x < 40) c[0] = c[1] = c[2] = 8 + n;        /* black border */
      if (y < 30) c[0] = c[1] = c[2] = 255;          /* white padding */
      if (y >= SH - 24) c[0] = c[1] = c[2] = 30 + n; /* dark strip */
      tissue = tissue && !pen && x >= 40 && y >= 30 && y < SH - 24;
      ink += pen && x >= 40 && y >= 30 && y < SH - 24;
      uint8_t *q = p + 3 * ((size_t)y * SW + x);
      for (int k = 0; k < 3; k++) q[k] = clamp8(c[k]);
      if (truth) truth[(size_t)y * SW + x] = (uint8_t)tissue;
    }
  if (ink_pixels) *ink_pixels = ink;
  return p;
}

static void write_slide_tiff(const char *path, const uint8_t *pix, int w, int h, double mpp) {
  VipsImage *img = vips_image_new_from_memory(pix, (size_t)w * h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
  img->Type = VIPS_INTERPRETATION_sRGB;
  img->Xres = img->Yres = 1000.0 / mpp;
  int rc = vips_tiffsave(img, path, "tile", TRUE, "tile_width", 256, "tile_height", 256, "pyramid",
                         TRUE, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE, "resunit",
                         VIPS_FOREIGN_TIFF_RESUNIT_CM, NULL);
  g_object_unref(img);
  if (rc) {
    fprintf(stderr, "vips_tiffsave: %s\n", vips_error_buffer());
    exit(1);
  }
}

static nic_slide *open_or_die(const char *path, double override) {
  nic_slide_opts o = {override};
  nic_slide *s = NULL;
  nic_error err = {0};
  if (nic_slide_open(&s, path, &o, &err) != NIC_OK) {
    fprintf(stderr, "cannot open %s: %s\n", path, err.msg);
    exit(1);
  }
  return s;
}

/* Mask pixels (on m's grid) where the level-0 truth covers at least half. */
static uint8_t *truth_on_grid(const uint8_t *truth, const nic_mask *m) {
  uint8_t *g = calloc((size_t)m->width * m->height, 1);
  nic_mask t = {SW, SH, 1, 1, SLIDE_MPP, (uint8_t *)truth};
  for (int j = 0; j < m->height; j++)
    for (int i = 0; i < m->width; i++)
      g[(size_t)j * m->width + i] = nic_mask_tissue_fraction(&t, i * m->scale_x, j * m->scale_y,
                                                             m->scale_x, m->scale_y) >= 0.5;
  return g;
}

static double iou(const uint8_t *a, const uint8_t *b, size_t n) {
  size_t inter = 0, uni = 0;
  for (size_t i = 0; i < n; i++) {
    inter += a[i] && b[i];
    uni += a[i] || b[i];
  }
  return uni ? (double)inter / uni : 1.0;
}

/* ---- detection ------------------------------------------------------------------ */

static void test_detect_synthetic(void) {
  uint8_t *truth = malloc((size_t)SW * SH);
  int64_t ink = 0;
  uint8_t *pix = make_slide(1, truth, &ink);
  const char *path = tmp_path("synthetic.tif");
  write_slide_tiff(path, pix, SW, SH, SLIDE_MPP);
  free(pix);
  nic_slide *s = open_or_die(path, 0);
  nic_mask m = {0};
  nic_tissue_info info = {0};
  nic_error err = {0};
  double t0 = now_s();
  CHECK_OK(nic_tissue_detect(s, NULL, &m, &info, &err));
  double dt = now_s() - t0;
  if (!m.data) {
    fprintf(stderr, "%s\n", err.msg);
    return;
  }
  CHECK(m.width == 512 && m.height == 384);
  CHECK_NEAR(m.scale_x, 4.0, 1e-12);
  CHECK(m.mpp == 8.0);
  int64_t true_px = 0;
  for (size_t i = 0; i < (size_t)SW * SH; i++) true_px += truth[i];
  double true_frac = (double)true_px / ((double)SW * SH);
  double frac = nic_mask_tissue_area(&m) / ((double)SW * SH);
  uint8_t *g = truth_on_grid(truth, &m);
  double j = iou(g, m.data, (size_t)m.width * m.height);
  printf("  synthetic: tissue %.4f (truth %.4f), IoU %.3f, threshold %.3f (Otsu %.3f), "
         "%d pieces, ink px %lld, %.3f s\n",
         frac, true_frac, j, info.threshold, info.otsu, info.components, (long long)info.ink, dt);
  CHECK(fabs(frac - true_frac) < 0.03 * true_frac);
  CHECK(j > 0.95);
  CHECK(info.components == 2);
  CHECK(info.ink > 0);
  CHECK(info.dark > 0 && info.white > 0);
  /* Nothing on the borders or the pen marks. */
  CHECK(nic_mask_tissue_fraction(&m, 0, 0, 40, SH) == 0);        /* black border */
  CHECK(nic_mask_tissue_fraction(&m, 0, 0, SW, 30) == 0);        /* white padding */
  CHECK(nic_mask_tissue_fraction(&m, 0, SH - 24, SW, 24) == 0);  /* dark strip */
  CHECK(nic_mask_tissue_fraction(&m, 1300, 980, 650, 340) == 0); /* blue stroke's box */
  CHECK(nic_mask_tissue_fraction(&m, 1760, 1060, 80, 80) == 0);  /* green dot */
  /* Inside the tissue and in the lumen (a large hole stays a hole). */
  CHECK(nic_mask_tissue_fraction(&m, 400, 900, 128, 128) == 1);
  CHECK(nic_mask_tissue_fraction(&m, 610, 730, 64, 64) == 0);
  free(g);
  free(truth);
  nic_mask_free(&m);
  nic_slide_close(s);
}

static void test_detect_blank(void) {
  uint8_t *pix = make_slide(0, NULL, NULL);
  const char *path = tmp_path("blank.tif");
  write_slide_tiff(path, pix, SW, SH, SLIDE_MPP);
  free(pix);
  nic_slide *s = open_or_die(path, 0);
  nic_mask m = {0};
  nic_tissue_info info = {0};
  nic_error err = {0};
  CHECK_OK(nic_tissue_detect(s, NULL, &m, &info, &err));
  CHECK(info.tissue == 0 && info.components == 0);
  CHECK(m.data && nic_mask_tissue_area(&m) == 0);
  CHECK(info.threshold >= 0.07 - 1e-9); /* the floor, whatever Otsu found in the noise */
  nic_mask_free(&m);
  /* Uniform white and uniform black images: no tissue either. */
  uint8_t img[64 * 64 * 3], mask[64 * 64];
  for (int v = 0; v <= 255; v += 255) {
    memset(img, v, sizeof img);
    CHECK_OK(nic_tissue_detect_rgb8(img, 64, 64, 8.0, NULL, mask, &info, &err));
    CHECK(info.tissue == 0);
  }
  nic_slide_close(s);
}

/* Spacing matters: the same picture at another spacing gives the same
 * physical area (sizes are in um, not pixels). */
static void test_detect_resolution_independent(void) {
  nic_slide *s = open_or_die(tmp_path("synthetic.tif"), 0);
  nic_tissue_params p = nic_tissue_default_params();
  double area[2];
  for (int k = 0; k < 2; k++) {
    p.mpp = k ? 16.0 : 8.0;
    nic_mask m = {0};
    nic_error err = {0};
    CHECK_OK(nic_tissue_detect(s, &p, &m, NULL, &err));
    area[k] = nic_mask_tissue_area(&m);
    nic_mask_free(&m);
  }
  CHECK(fabs(area[0] - area[1]) < 0.04 * area[0]);
  /* Without a spacing detection refuses instead of guessing. */
  uint8_t *pix = make_slide(1, NULL, NULL);
  const char *path = tmp_path("nospacing.tif");
  write_slide_tiff(path, pix, SW, SH, 1000.0); /* 1 px/mm: libvips' "unknown" */
  free(pix);
  nic_slide *u = open_or_die(path, 0);
  nic_mask m = {0};
  nic_error err = {0};
  CHECK(nic_tissue_detect(u, NULL, &m, NULL, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, path) && strstr(err.msg, "spacing"));
  nic_slide_close(u);
  u = open_or_die(path, 2.0);
  CHECK_OK(nic_tissue_detect(u, NULL, &m, NULL, &err));
  CHECK(m.data && fabs(nic_mask_tissue_area(&m) - area[0]) < 1e-6 * area[0]);
  nic_mask_free(&m);
  nic_slide_close(u);
  nic_slide_close(s);
  nic_tissue_params bad = nic_tissue_default_params();
  bad.min_threshold = 0.5;
  bad.max_threshold = 0.2;
  uint8_t img[3] = {0}, mk[1];
  CHECK(nic_tissue_detect_rgb8(img, 1, 1, 8, &bad, mk, NULL, &err) == NIC_EINVAL);
}

/* ---- morphology ----------------------------------------------------------------- */

static int count(const uint8_t *m, size_t n) {
  int c = 0;
  for (size_t i = 0; i < n; i++) c += m[i] != 0;
  return c;
}

static void test_morphology(void) {
  uint8_t m[15 * 15];
  nic_error err = {0};
  memset(m, 0, sizeof m);
  m[7 * 15 + 7] = 1;
  CHECK_OK(nic__dilate(m, 15, 15, 1, &err));
  CHECK(count(m, sizeof m) == 5); /* plus sign */
  memset(m, 0, sizeof m);
  m[7 * 15 + 7] = 1;
  CHECK_OK(nic__dilate(m, 15, 15, 2, &err));
  CHECK(count(m, sizeof m) == 13);
  CHECK_OK(nic__erode(m, 15, 15, 2, &err));
  CHECK(count(m, sizeof m) == 1 && m[7 * 15 + 7]);
  /* The image border does not erode. */
  memset(m, 1, sizeof m);
  CHECK_OK(nic__erode(m, 15, 15, 3, &err));
  CHECK(count(m, sizeof m) == 15 * 15);
  /* Remove small pieces; diagonal contact makes one 8-connected piece. */
  memset(m, 0, sizeof m);
  m[0] = m[16] = m[32] = 1;              /* diagonal chain of 3 */
  m[10 * 15 + 10] = m[10 * 15 + 11] = 1; /* pair */
  CHECK_OK(nic__remove_small(m, 15, 15, 3, &err));
  CHECK(count(m, sizeof m) == 3 && m[16]);
  /* Holes: an enclosed one is filled, one open to the border is not. */
  memset(m, 0, sizeof m);
  for (int y = 2; y <= 6; y++)
    for (int x = 2; x <= 6; x++) m[y * 15 + x] = (x == 2 || x == 6 || y == 2 || y == 6);
  for (int y = 8; y < 15; y++) m[y * 15 + 8] = m[y * 15 + 12] = 1; /* a channel to the edge */
  int before = count(m, sizeof m);
  CHECK_OK(nic__fill_holes(m, 15, 15, 100, &err));
  CHECK(count(m, sizeof m) == before + 9);
  CHECK_OK(nic__fill_holes(m, 15, 15, 100, &err));
  CHECK(count(m, sizeof m) == before + 9);
}

/* ---- contours and GeoJSON ------------------------------------------------------------- */

/* Traces m, rasterises the polygons back and compares. */
static int trace_round_trip(const uint8_t *m, int w, int h) {
  nic_polygon *ps = NULL;
  int n = 0;
  nic_error err = {0};
  if (nic__trace_polygons(m, w, h, &ps, &n, &err) != NIC_OK) return 0;
  uint8_t *back = calloc((size_t)w * h, 1);
  int ok = 1;
  for (int i = 0; i < n; i++) {
    int nr = 1 + ps[i].nholes;
    double **rings = calloc((size_t)nr, sizeof(double *));
    int *counts = calloc((size_t)nr, sizeof(int));
    for (int k = 0; k < nr; k++) {
      const nic_ring *r = k ? &ps[i].holes[k - 1] : &ps[i].outer;
      ok &= r->n >= 4;
      rings[k] = malloc(sizeof(double) * 2 * (size_t)r->n);
      for (int v = 0; v < 2 * r->n; v++) rings[k][v] = r->xy[v];
      counts[k] = r->n;
    }
    uint8_t *piece = calloc((size_t)w * h, 1);
    ok &= nic__fill_polygon(piece, w, h, (const double *const *)rings, counts, nr, &err) == NIC_OK;
    for (size_t p = 0; p < (size_t)w * h; p++) {
      ok &= !(piece[p] && back[p]); /* pieces never overlap */
      back[p] |= piece[p];
    }
    free(piece);
    for (int k = 0; k < nr; k++) free(rings[k]);
    free(rings);
    free(counts);
  }
  ok &= !memcmp(back, m, (size_t)w * h);
  free(back);
  nic__free_polygons(ps, n);
  return ok;
}

static void test_contours(void) {
  /* A single pixel; an annulus; diagonal contacts; random noise (many
   * saddles); a full image. */
  uint8_t one[9] = {0, 0, 0, 0, 1, 0, 0, 0, 0};
  CHECK(trace_round_trip(one, 3, 3));
  uint8_t ann[7 * 7] = {0};
  for (int y = 1; y < 6; y++)
    for (int x = 1; x < 6; x++)
      ann[y * 7 + x] = !(x >= 2 && x <= 4 && y >= 2 && y <= 4) || (x == 3 && y == 3);
  CHECK(trace_round_trip(ann, 7, 7));
  nic_polygon *ps = NULL;
  int n = 0;
  nic_error err = {0};
  CHECK_OK(nic__trace_polygons(ann, 7, 7, &ps, &n, &err));
  CHECK(n == 2); /* the ring with one hole, and the island inside */
  if (n == 2) {
    CHECK(ps[0].nholes == 1 && ps[1].nholes == 0);
    CHECK(ps[0].outer.n == 4 && ps[0].holes[0].n == 4 && ps[1].outer.n == 4);
  }
  nic__free_polygons(ps, n);
  uint8_t diag[4 * 4] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0};
  CHECK(trace_round_trip(diag, 4, 4));
  CHECK_OK(nic__trace_polygons(diag, 4, 4, &ps, &n, &err));
  CHECK(n == 1);
  nic__free_polygons(ps, n);
  uint8_t hole_diag[5 * 5] = {1, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0,
                              1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1};
  CHECK(trace_round_trip(hole_diag, 5, 5));
  nic_rng r;
  nic_rng_seed(&r, 9);
  uint8_t *rnd = malloc(97 * 61);
  int all = 1;
  for (int t = 0; t < 20; t++) {
    double p = 0.2 + 0.03 * t;
    for (int i = 0; i < 97 * 61; i++) rnd[i] = nic_rng_uniform(&r) < p;
    all &= trace_round_trip(rnd, 97, 61);
  }
  CHECK(all);
  memset(rnd, 1, 97 * 61);
  CHECK(trace_round_trip(rnd, 97, 61));
  memset(rnd, 0, 97 * 61);
  CHECK(trace_round_trip(rnd, 97, 61));
  free(rnd);
}

/* Twice the signed area of a GeoJSON ring, y up. */
static double json_ring_area2(json_object *ring) {
  double a = 0;
  size_t n = json_object_array_length(ring);
  for (size_t i = 0; i + 1 < n; i++) {
    json_object *p = json_object_array_get_idx(ring, i),
                *q = json_object_array_get_idx(ring, i + 1);
    a += json_object_get_double(json_object_array_get_idx(p, 0)) *
             json_object_get_double(json_object_array_get_idx(q, 1)) -
         json_object_get_double(json_object_array_get_idx(q, 0)) *
             json_object_get_double(json_object_array_get_idx(p, 1));
  }
  return a;
}

static void check_geojson_structure(const char *path, int pieces) {
  json_object *root = json_object_from_file(path);
  CHECK(root != NULL);
  if (!root) return;
  json_object *v = NULL, *features = NULL;
  CHECK(json_object_object_get_ex(root, "type", &v) &&
        !strcmp(json_object_get_string(v), "FeatureCollection"));
  CHECK(json_object_object_get_ex(root, "features", &features) &&
        (int)json_object_array_length(features) == pieces);
  int ok = 1, holes = 0;
  for (size_t i = 0; features && i < json_object_array_length(features); i++) {
    json_object *f = json_object_array_get_idx(features, i), *props, *cls, *name, *geom, *coords,
                *type;
    ok &= json_object_object_get_ex(f, "properties", &props) &&
          json_object_object_get_ex(props, "objectType", &v) &&
          !strcmp(json_object_get_string(v), "annotation") &&
          json_object_object_get_ex(props, "classification", &cls) &&
          json_object_object_get_ex(cls, "name", &name) &&
          !strcmp(json_object_get_string(name), "Tissue");
    ok &= json_object_object_get_ex(f, "geometry", &geom) &&
          json_object_object_get_ex(geom, "type", &type) &&
          !strcmp(json_object_get_string(type), "Polygon") &&
          json_object_object_get_ex(geom, "coordinates", &coords);
    if (!ok) break;
    for (size_t k = 0; k < json_object_array_length(coords); k++) {
      json_object *ring = json_object_array_get_idx(coords, k);
      size_t n = json_object_array_length(ring);
      json_object *first = json_object_array_get_idx(ring, 0),
                  *last = json_object_array_get_idx(ring, n - 1);
      ok &= n >= 5; /* closed, at least a square */
      ok &= json_object_get_double(json_object_array_get_idx(first, 0)) ==
                json_object_get_double(json_object_array_get_idx(last, 0)) &&
            json_object_get_double(json_object_array_get_idx(first, 1)) ==
                json_object_get_double(json_object_array_get_idx(last, 1));
      ok &= k == 0 ? json_ring_area2(ring) > 0 : json_ring_area2(ring) < 0; /* RFC 7946 */
      holes += k > 0;
    }
  }
  CHECK(ok);
  CHECK(holes >= 1); /* the lumen */
  json_object_put(root);
}

static void test_geojson_round_trip(void) {
  nic_slide *s = open_or_die(tmp_path("synthetic.tif"), 0);
  nic_mask m = {0}, back = {0};
  nic_error err = {0};
  CHECK_OK(nic_tissue_detect(s, NULL, &m, NULL, &err));
  const char *gj = tmp_path("synthetic.geojson");
  CHECK_OK(nic_mask_write_geojson(&m, gj, &err));
  check_geojson_structure(gj, nic_mask_components(&m));
  CHECK_OK(nic_mask_load(s, gj, 8.0, &back, &err));
  CHECK(back.width == m.width && back.height == m.height);
  CHECK(back.data && !memcmp(back.data, m.data, (size_t)m.width * m.height));
  nic_mask_free(&back);
  /* Noise on the slide's grid: every saddle and hole survives the file. */
  nic_rng r;
  nic_rng_seed(&r, 5);
  for (size_t i = 0; i < (size_t)m.width * m.height; i++) m.data[i] = nic_rng_uniform(&r) < 0.45;
  CHECK_OK(nic_mask_write_geojson(&m, gj, &err));
  CHECK_OK(nic_mask_load(s, gj, 8.0, &back, &err));
  CHECK(back.data && !memcmp(back.data, m.data, (size_t)m.width * m.height));
  nic_mask_free(&back);
  /* On a finer grid the polygons are rasterised at the new grid's pixel
   * centres: the area stays within a pixel's width along the outline. */
  memset(m.data, 0, (size_t)m.width * m.height);
  for (int y = 100; y < 200; y++)
    for (int x = 50; x < 300; x++) m.data[(size_t)y * m.width + x] = 1;
  CHECK_OK(nic_mask_write_geojson(&m, gj, &err));
  CHECK_OK(nic_mask_load(s, gj, 3.0, &back, &err));
  CHECK_NEAR(nic_mask_tissue_area(&back), nic_mask_tissue_area(&m),
             0.02 * nic_mask_tissue_area(&m));
  nic_mask_free(&back);
  /* Hand-written GeoJSON: a MultiPolygon with a hole, a bare Feature, and
   * things to ignore. */
  const char *hand = tmp_path("hand.geojson");
  FILE *f = fopen(hand, "w");
  fputs("{\"type\":\"FeatureCollection\",\"features\":[\n"
        "{\"type\":\"Feature\",\"properties\":{},\"geometry\":{\"type\":\"MultiPolygon\","
        "\"coordinates\":[[[[0,0],[400,0],[400,400],[0,400],[0,0]],"
        "[[100,100],[100,300],[300,300],[300,100],[100,100]]],"
        "[[[1000,1000],[1080,1000],[1080,1080],[1000,1080]]]]}},\n"
        "{\"type\":\"Feature\",\"properties\":{},\"geometry\":{\"type\":\"Point\",\"coordinates\":["
        "5,5]}}]}",
        f);
  fclose(f);
  CHECK_OK(nic_mask_load(s, hand, 8.0, &back, &err));
  CHECK_NEAR(nic_mask_tissue_fraction(&back, 0, 0, 400, 400), 0.75, 1e-9);
  CHECK(nic_mask_tissue_fraction(&back, 100, 100, 200, 200) == 0);
  CHECK(nic_mask_tissue_fraction(&back, 1000, 1000, 80, 80) == 1);
  CHECK(nic_mask_components(&back) == 2);
  nic_mask_free(&back);
  /* Broken GeoJSON names the file. */
  f = fopen(hand, "w");
  fputs("{\"type\":\"Polygon\",\"coordinates\":[[[0,0],[1,\"x\"],[2,2]]]}", f);
  fclose(f);
  CHECK(nic_mask_load(s, hand, 8.0, &back, &err) == NIC_EFORMAT && strstr(err.msg, hand));
  f = fopen(hand, "w");
  fputs("{\"type\":", f);
  fclose(f);
  CHECK(nic_mask_load(s, hand, 8.0, &back, &err) == NIC_EFORMAT && strstr(err.msg, hand));
  CHECK(nic_mask_load(s, tmp_path("none.geojson"), 8.0, &back, &err) == NIC_EIO);
  f = fopen(hand, "w");
  fputs("{\"objects\": []}", f);
  fclose(f);
  CHECK(nic_mask_load(s, hand, 8.0, &back, &err) == NIC_EFORMAT && strstr(err.msg, "GeoJSON"));
  /* An empty collection: a valid mask with no tissue (what a blank slide's
   * own GeoJSON holds). */
  f = fopen(hand, "w");
  fputs("{\"type\": \"FeatureCollection\", \"features\": []}", f);
  fclose(f);
  CHECK_OK(nic_mask_load(s, hand, 8.0, &back, &err));
  CHECK(back.data && nic_mask_tissue_area(&back) == 0);
  nic_mask_free(&back);
  nic_mask_free(&m);
  nic_slide_close(s);
}

/* ---- user masks, fractions, files -------------------------------------------------------------
 */

static void test_user_mask_image(void) {
  nic_slide *s = open_or_die(tmp_path("synthetic.tif"), 0);
  /* 128 x 96 for a 2048 x 1536 slide: 16 level-0 pixels per mask pixel.
   * Values 0/1, as label images have them. */
  uint8_t px[128 * 96] = {0};
  for (int y = 10; y < 30; y++)
    for (int x = 20; x < 60; x++) px[y * 128 + x] = 1;
  VipsImage *img = vips_image_new_from_memory(px, sizeof px, 128, 96, 1, VIPS_FORMAT_UCHAR);
  const char *path = tmp_path("user_mask.png");
  CHECK(vips_pngsave(img, path, NULL) == 0);
  g_object_unref(img);
  nic_mask m = {0};
  nic_error err = {0};
  CHECK_OK(nic_mask_load(s, path, 8.0, &m, &err));
  CHECK(m.width == 128 && m.height == 96);
  CHECK_NEAR(m.scale_x, 16.0, 1e-12);
  CHECK_NEAR(m.mpp, 32.0, 1e-12);
  CHECK(nic_mask_tissue_fraction(&m, 320, 160, 640, 320) == 1);
  CHECK(nic_mask_tissue_fraction(&m, 0, 0, 320, 160) == 0);
  CHECK_NEAR(nic_mask_tissue_fraction(&m, 320 - 64, 160, 128, 128), 0.5, 1e-12);
  CHECK_NEAR(nic_mask_tissue_area(&m), 640.0 * 320.0, 1e-6);
  nic_mask_free(&m);
  /* Not an image: the error names it. */
  const char *bad = tmp_path("bad_mask.png");
  FILE *f = fopen(bad, "w");
  fputs("nope", f);
  fclose(f);
  CHECK(nic_mask_load(s, bad, 8.0, &m, &err) != NIC_OK && strstr(err.msg, bad));
  nic_slide_close(s);
}

static void test_fraction(void) {
  nic_mask m = {0};
  nic_error err = {0};
  CHECK_OK(nic_mask_alloc(&m, 4, 4, 10, 10, 5, &err));
  m.data[1 * 4 + 1] = 1;
  CHECK(nic_mask_tissue_fraction(&m, 10, 10, 10, 10) == 1);
  CHECK_NEAR(nic_mask_tissue_fraction(&m, 5, 10, 10, 10), 0.5, 1e-12);
  CHECK_NEAR(nic_mask_tissue_fraction(&m, 15, 15, 10, 10), 0.25, 1e-12);
  CHECK_NEAR(nic_mask_tissue_fraction(&m, 0, 0, 40, 40), 1.0 / 16, 1e-12);
  CHECK(nic_mask_tissue_fraction(&m, 100, 100, 10, 10) == 0); /* outside */
  CHECK_NEAR(nic_mask_tissue_fraction(&m, -10, 0, 40, 40), 1.0 / 16, 1e-12);
  CHECK(nic_mask_tissue_fraction(&m, 10, 10, 0, 10) == 0);
  CHECK(nic_mask_tissue_area(&m) == 100);
  nic_mask_free(&m);
  CHECK(nic_mask_alloc(&m, 0, 4, 1, 1, 0, &err) == NIC_EINVAL);
}

static void test_writers(void) {
  nic_slide *s = open_or_die(tmp_path("synthetic.tif"), 0);
  nic_mask m = {0};
  nic_error err = {0};
  CHECK_OK(nic_tissue_detect(s, NULL, &m, NULL, &err));
  const char *png = tmp_path("mask.png"), *thumb = tmp_path("thumb.png");
  CHECK_OK(nic_mask_write_png(&m, png, &err));
  uint8_t *rgb = NULL;
  int w = 0, h = 0;
  double ds = 0;
  CHECK_OK(nic_slide_thumbnail_rgb8(s, 0, 8.0, &rgb, &w, &h, &ds, &err));
  CHECK_OK(nic_mask_write_overlay_png(&m, rgb, w, h, ds, thumb, &err));
  /* The mask PNG reads back as the same mask (it is a valid --mask). */
  nic_mask back = {0};
  CHECK_OK(nic_mask_load(s, png, 8.0, &back, &err));
  CHECK(back.width == m.width && back.data &&
        !memcmp(back.data, m.data, (size_t)m.width * m.height));
  VipsImage *img = vips_image_new_from_file(png, NULL);
  CHECK(img && img->Bands == 1 && fabs(vips_image_get_xres(img) - 1000.0 / 8) < 0.01);
  if (img) g_object_unref(img);
  img = vips_image_new_from_file(thumb, NULL);
  CHECK(img && img->Bands == 3 && img->Xsize == w && img->Ysize == h);
  if (img) g_object_unref(img);
  /* No temporary files left behind. */
  DIR *d = opendir(tmpdir);
  int tmps = 0;
  for (struct dirent *e; d && (e = readdir(d));) tmps += strstr(e->d_name, ".tmp.") != NULL;
  if (d) closedir(d);
  CHECK(tmps == 0);
  /* Writing into a missing directory fails with the path. */
  const char *nowhere = tmp_path("no/such/dir/mask.png");
  CHECK(nic_mask_write_png(&m, nowhere, &err) == NIC_EIO && strstr(err.msg, nowhere));
  free(rgb);
  nic_mask_free(&back);
  nic_mask_free(&m);
  nic_slide_close(s);
}

/* ---- the real slides in ../shared ------------------------------------------------------ */

static void test_shared_slides(void) {
  char svs[1024], tif[1024];
  if (!nic_test_shared_slides(svs, tif, sizeof svs)) return;
  nic_slide *a = open_or_die(svs, 0), *b = open_or_die(tif, 0.499);
  nic_mask ma = {0}, mb = {0};
  nic_tissue_info ia = {0}, ib = {0};
  nic_error err = {0};
  double t0 = now_s();
  CHECK_OK(nic_tissue_detect(a, NULL, &ma, &ia, &err));
  double t1 = now_s();
  CHECK_OK(nic_tissue_detect(b, NULL, &mb, &ib, &err));
  double t2 = now_s();
  if (!ma.data || !mb.data) return;
  CHECK(ma.width == mb.width && ma.height == mb.height);
  /* Compare on a's grid, sampling b at a's pixel centres. */
  size_t inter = 0, uni = 0;
  for (int j = 0; j < ma.height; j++)
    for (int i = 0; i < ma.width; i++) {
      int x = (int)((i + 0.5) * ma.scale_x / mb.scale_x),
          y = (int)((j + 0.5) * ma.scale_y / mb.scale_y);
      int va = ma.data[(size_t)j * ma.width + i];
      int vb = x < mb.width && y < mb.height && mb.data[(size_t)y * mb.width + x];
      inter += va && vb;
      uni += va || vb;
    }
  double j = uni ? (double)inter / uni : 0;
  int64_t w0, h0;
  nic_slide_level_dims(a, 0, &w0, &h0);
  printf("  CMU-1-Small-Region at 8 um/px: SVS %.1f%% tissue (threshold %.3f, %.3f s), "
         "pyramid %.1f%% (%.3f s), IoU %.3f\n",
         100 * nic_mask_tissue_area(&ma) / ((double)w0 * h0), ia.threshold, t1 - t0,
         100 * nic_mask_tissue_area(&mb) / ((double)w0 * h0), t2 - t1, j);
  CHECK(j > 0.9);
  CHECK(nic_mask_tissue_area(&ma) > 0.2 * (double)w0 * h0); /* mostly tissue */
  nic_mask_free(&ma);
  nic_mask_free(&mb);
  nic_slide_close(a);
  nic_slide_close(b);
}

int main(void) {
  nic_error err = {0};
  if (nic__vips_init(&err) != NIC_OK) nic_test_skip(err.msg);
  tmpdir = nic_test_tmpdir();
  RUN(test_detect_synthetic);
  RUN(test_detect_blank);
  RUN(test_detect_resolution_independent);
  RUN(test_morphology);
  RUN(test_contours);
  RUN(test_geojson_round_trip);
  RUN(test_user_mask_image);
  RUN(test_fraction);
  RUN(test_writers);
  RUN(test_shared_slides);
  return nic_test_finish();
}
