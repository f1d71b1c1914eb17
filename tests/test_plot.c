/* Plots and images: PNG files re-read with libpng, the ROC and
 * Kaplan-Meier presets, text, error bars, heatmap blending arithmetic. */
#include <png.h>
#include <stdlib.h>
#include <string.h>

#include "nic/metrics.h"
#include "nic/plot.h"
#include "testutil.h"
#include "viz/viz_internal.h"

static const char *outdir;

static const char *out_path(const char *name) {
  static char buf[512];
  snprintf(buf, sizeof buf, "%s/%s", outdir, name);
  return buf;
}

/* Reads a PNG as RGB8 with libpng's simplified API; NULL on failure. */
static uint8_t *read_png(const char *path, int *w, int *h) {
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path)) return NULL;
  img.format = PNG_FORMAT_RGB;
  uint8_t *px = malloc(PNG_IMAGE_SIZE(img));
  if (!px || !png_image_finish_read(&img, NULL, px, 0, NULL)) {
    free(px);
    png_image_free(&img);
    return NULL;
  }
  *w = (int)img.width, *h = (int)img.height;
  return px;
}

static const uint8_t *pixel(const uint8_t *px, int w, int x, int y) {
  return px + ((size_t)y * (size_t)w + (size_t)x) * 3;
}

static int is_rgb(const uint8_t *p, uint32_t rgb, int tol) {
  return abs(p[0] - (int)((rgb >> 16) & 255)) <= tol &&
         abs(p[1] - (int)((rgb >> 8) & 255)) <= tol && abs(p[2] - (int)(rgb & 255)) <= tol;
}

static int is_white(const uint8_t *p) {
  return p[0] == 255 && p[1] == 255 && p[2] == 255;
}

/* ---- PNG ---- */

static void test_png_roundtrip(void) {
  enum { w = 37, h = 23 };
  uint8_t img[w * h * 3];
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t *p = &img[(y * w + x) * 3];
      p[0] = (uint8_t)(x * 7), p[1] = (uint8_t)(y * 11), p[2] = (uint8_t)(x ^ y);
    }
  const char *path = out_path("roundtrip.png");
  CHECK_OK(nic_png_write_rgb8(path, img, w, h, NULL));
  int rw = 0, rh = 0;
  uint8_t *back = read_png(path, &rw, &rh);
  CHECK(back != NULL);
  CHECK(rw == w && rh == h);
  if (back && rw == w && rh == h) CHECK(memcmp(back, img, sizeof img) == 0);
  free(back);

  nic_error e = {0};
  CHECK(nic_png_write_rgb8("/nonexistent-dir/x.png", img, w, h, &e) == NIC_EIO);
  CHECK(strstr(e.msg, "/nonexistent-dir/x.png") != NULL);
  CHECK(nic_png_write_rgb8(path, img, 0, h, &e) == NIC_EINVAL);
  CHECK(nic_png_write_rgb8(path, NULL, w, h, &e) == NIC_EINVAL);
}

/* ---- Heatmaps ---- */

static void test_colormaps(void) {
  uint8_t c[3];
  nic_colormap_rgb(NIC_CMAP_VIRIDIS, 0, c);
  CHECK(c[0] == 0x44 && c[1] == 0x01 && c[2] == 0x54);
  nic_colormap_rgb(NIC_CMAP_VIRIDIS, 1, c);
  CHECK(c[0] == 0xfd && c[1] == 0xe7 && c[2] == 0x25);
  nic_colormap_rgb(NIC_CMAP_VIRIDIS, 7, c); /* clamped */
  CHECK(c[0] == 0xfd);
  nic_colormap_rgb(NIC_CMAP_JET, 0, c);
  CHECK(c[0] == 0 && c[1] == 0 && c[2] >= 127 && c[2] <= 128); /* dark blue */
  nic_colormap_rgb(NIC_CMAP_JET, 0.5, c);
  CHECK(c[1] == 255 && c[0] == c[2]); /* green, symmetric */
  nic_colormap_rgb(NIC_CMAP_JET, 1, c);
  CHECK(c[0] >= 127 && c[0] <= 128 && c[1] == 0 && c[2] == 0); /* dark red */
  nic_colormap_rgb(NIC_CMAP_GRAY, 0.5, c);
  CHECK(c[0] == 128 && c[1] == 128 && c[2] == 128);
  /* Viridis gets lighter all the way: luma increases. */
  double prev = -1;
  for (int i = 0; i <= 100; i++) {
    nic_colormap_rgb(NIC_CMAP_VIRIDIS, i / 100.0, c);
    double luma = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    CHECK(luma > prev);
    prev = luma;
  }
}

static void test_heatmap_blend_math(void) {
  /* A 4x2 grey image under a 2x1 grid of values: the left half takes cell
   * 0, the right half cell 1. Grey map, range [0, 10], alpha 0.25:
   * pixel = round(0.75 p + 0.25 * 255 t). */
  enum { w = 4, h = 2 };
  uint8_t img[w * h * 3];
  memset(img, 100, sizeof img);
  float v[2] = {10, 4};
  nic_heatmap_opts o = {.cmap = NIC_CMAP_GRAY, .alpha = 0.25f, .vmin = 0, .vmax = 10};
  CHECK_OK(nic_heatmap_blend(img, w, h, v, 2, 1, &o, NULL));
  uint8_t t4 = (uint8_t)lrint(255 * 0.4); /* the grey of 4 on [0, 10] */
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t want = (uint8_t)lrint(x < 2 ? 0.75 * 100 + 0.25 * 255 : 0.75 * 100 + 0.25 * t4);
      for (int k = 0; k < 3; k++) CHECK(img[(y * w + x) * 3 + k] == want);
    }
  /* NaN cells are transparent; the range comes from the finite values
   * when vmin >= vmax (here 2 .. 6), and values outside are clamped. */
  uint8_t rgb[3 * 3] = {10, 20, 30, 40, 50, 60, 70, 80, 90}, orig[9];
  memcpy(orig, rgb, 9);
  float v3[3] = {NAN, 2, 6};
  nic_heatmap_opts a = {.cmap = NIC_CMAP_GRAY, .alpha = 1, .vmin = 0, .vmax = 0};
  CHECK_OK(nic_heatmap_blend(rgb, 3, 1, v3, 3, 1, &a, NULL));
  CHECK(memcmp(rgb, orig, 3) == 0);
  CHECK(rgb[3] == 0 && rgb[6] == 255);
  float big[1] = {1e6f};
  uint8_t one[3] = {0, 0, 0};
  nic_heatmap_opts fixed = {.cmap = NIC_CMAP_GRAY, .alpha = 0.5f, .vmin = 0, .vmax = 1};
  CHECK_OK(nic_heatmap_blend(one, 1, 1, big, 1, 1, &fixed, NULL));
  CHECK(one[0] == 128); /* 0.5 * 255, rounded */
  /* A grid larger than the image picks every other cell. */
  uint8_t two[6] = {0};
  float grid[4] = {0, 1, 0, 1};
  CHECK_OK(nic_heatmap_blend(two, 2, 1, grid, 4, 1, &a, NULL));
  CHECK(two[0] == 0 && two[3] == 0);
  nic_error e = {0};
  o.alpha = 2;
  CHECK(nic_heatmap_blend(img, w, h, v, 2, 1, &o, &e) == NIC_EINVAL);
  CHECK(nic_heatmap_blend(img, w, h, v, 0, 1, NULL, &e) == NIC_EINVAL);
}

static void test_heatmap_png(void) {
  /* A pink "tissue" thumbnail with attention over a disc, NaN outside. */
  enum { w = 240, h = 160, vw = 24, vh = 16 };
  uint8_t *img = malloc(w * h * 3);
  float v[vw * vh];
  for (int i = 0; i < w * h; i++) img[3 * i] = 230, img[3 * i + 1] = 190, img[3 * i + 2] = 215;
  for (int y = 0; y < vh; y++)
    for (int x = 0; x < vw; x++) {
      double d = hypot(x - 12, (y - 8) * 1.3);
      v[y * vw + x] = d < 8 ? (float)(1 - d / 8) : NAN;
    }
  nic_heatmap_opts o = nic_heatmap_default_opts();
  o.alpha = 0.6f;
  CHECK_OK(nic_heatmap_blend(img, w, h, v, vw, vh, &o, NULL));
  CHECK(img[0] == 230 && img[1] == 190); /* corner: NaN, untouched */
  uint8_t c[3];
  nic_colormap_rgb(NIC_CMAP_VIRIDIS, 1, c); /* the centre cell holds the maximum */
  const uint8_t *mid = &img[((8 * h / vh) * w + 12 * w / vw) * 3];
  CHECK(mid[0] == (uint8_t)lrint(0.4 * 230 + 0.6 * c[0]));
  CHECK_OK(nic_png_write_rgb8(out_path("heatmap.png"), img, w, h, NULL));
  free(img);
}

/* ---- Text ---- */

static void test_text(void) {
  CHECK(viz_text_width("", 2) == 0);
  CHECK(viz_text_width("A", 1) == 5);
  CHECK(viz_text_width("AB", 2) == 22);
  CHECK(viz_text_len("0.5 ± 0.1 µm") == 12); /* two-byte UTF-8 signs count once */
  CHECK(viz_text_ok("AUC 0.91 (95% CI)"));
  CHECK(!viz_text_ok("tab\there"));
  const char *s = "\t";
  const uint8_t *g = viz_glyph(&s), *q;
  s = "?";
  q = viz_glyph(&s);
  CHECK(g == q); /* unknown characters draw as '?' */
  /* Every printable character but space has ink; digits differ. */
  char buf[2] = {0, 0};
  for (int ch = 33; ch < 127; ch++) {
    buf[0] = (char)ch;
    s = buf;
    g = viz_glyph(&s);
    int ink = 0;
    for (int r = 0; r < VIZ_GLYPH_H; r++) ink += g[r] != 0;
    CHECK(ink > 0);
  }
  /* Drawn text: an "I" at scale 2 is a 2-pixel stem with serifs. */
  uint8_t px[40 * 30 * 3];
  memset(px, 255, sizeof px);
  viz_canvas c = {40, 30, px};
  viz_draw_text(&c, 0, 0, "I", 2, 0x000000, 0, 0);
  CHECK(px[(0 * 40 + 2) * 3] == 0 && px[(0 * 40 + 0) * 3] == 255); /* top serif .###. */
  CHECK(px[(4 * 40 + 4) * 3] == 0 && px[(4 * 40 + 2) * 3] == 255); /* stem ..#.. */
  /* Vertical text reads bottom to top: "I" keeps its shape turned, the
   * top serif on the left. */
  memset(px, 255, sizeof px);
  viz_draw_text(&c, 0, 0, "I", 2, 0x000000, 1, 0);
  CHECK(px[(2 * 40 + 0) * 3] == 0 && px[(4 * 40 + 4) * 3] == 0);
}

/* ---- Plots ---- */

static void test_roc_plot_perfect(void) {
  /* A perfect classifier: the ROC curve runs up the left edge, then along
   * the top. */
  int y[] = {0, 0, 0, 1, 1, 1};
  double s[] = {0.1, 0.2, 0.3, 0.7, 0.8, 0.9};
  nic_roc roc = {0};
  CHECK_OK(nic_roc_curve(y, s, 6, &roc, NULL));
  CHECK(roc.auc == 1.0);
  nic_plot *p = NULL;
  const char *labels[] = {"perfect"};
  CHECK_OK(nic_plot_roc(&p, &roc, labels, 1, NULL));
  if (!p) return;
  CHECK_OK(nic_plot_set_labels(p, "ROC of a perfect classifier", NULL, NULL, NULL));
  const char *path = out_path("roc_perfect.png");
  CHECK_OK(nic_plot_save_png(p, path, NULL));
  int w = 0, h = 0;
  uint8_t *px = read_png(path, &w, &h);
  CHECK(px && w == 680 && h == 640);
  if (!px) {
    nic_plot_free(p);
    nic_roc_free(&roc);
    return;
  }
  const uint32_t blue = 0x1f77b4; /* first palette colour */
  double fx, fy;
  int left = 0, top = 0, n = 0;
  for (double t = 0.05; t < 0.96; t += 0.05, n++) {
    CHECK(nic_plot_to_pixel(p, 0, t, &fx, &fy));
    left += is_rgb(pixel(px, w, (int)fx, (int)fy), blue, 8);
    CHECK(nic_plot_to_pixel(p, t, 1, &fx, &fy));
    top += is_rgb(pixel(px, w, (int)fx, (int)fy), blue, 8);
  }
  /* The legend may hide a little of the curve; nearly all must show. */
  CHECK(left >= n - 2);
  CHECK(top >= n - 2);
  /* Nothing of the curve in the middle of the square, where the grey
   * dashed diagonal runs. */
  nic_plot_to_pixel(p, 0.5, 0.3, &fx, &fy);
  CHECK(!is_rgb(pixel(px, w, (int)fx, (int)fy), blue, 40));
  int grey = 0;
  for (double t = 0.2; t < 0.8; t += 0.01) {
    nic_plot_to_pixel(p, t, t, &fx, &fy);
    const uint8_t *q = pixel(px, w, (int)fx, (int)fy);
    grey += q[0] < 200 && abs(q[0] - q[1]) < 6 && abs(q[1] - q[2]) < 6;
  }
  CHECK(grey > 20 && grey < 55); /* dashed: on more than off, not solid */
  /* The title band holds text; the right margin beside it does not. */
  int title_ink = 0;
  for (int yy = 0; yy < 40; yy++)
    for (int xx = 0; xx < w; xx++) title_ink += !is_white(pixel(px, w, xx, yy));
  CHECK(title_ink > 300);
  free(px);
  nic_plot_free(p);
  nic_roc_free(&roc);
}

static void test_roc_plot_several(void) {
  /* Two noisy classifiers of different quality, for the eye. */
  nic_rng r;
  nic_rng_seed(&r, 9);
  enum { n = 300 };
  int y[n];
  double a[n], b[n];
  for (int i = 0; i < n; i++) {
    y[i] = nic_rng_uniform(&r) < 0.5;
    a[i] = y[i] * 1.8 + nic_rng_normal(&r);
    b[i] = y[i] * 0.7 + nic_rng_normal(&r);
  }
  nic_roc rocs[2] = {{0}};
  CHECK_OK(nic_roc_curve(y, a, n, &rocs[0], NULL));
  CHECK_OK(nic_roc_curve(y, b, n, &rocs[1], NULL));
  nic_plot *p = NULL;
  const char *labels[] = {"MTL-NIC", "BiGAN"};
  CHECK_OK(nic_plot_roc(&p, rocs, labels, 2, NULL));
  if (p) {
    nic_plot_set_labels(p, "Tumour vs normal, test set", NULL, NULL, NULL);
    CHECK_OK(nic_plot_add_note(p, "95% CI 0.85-0.93", NULL));
    CHECK_OK(nic_plot_save_png(p, out_path("roc_two.png"), NULL));
  }
  nic_plot_free(p);
  nic_roc_free(&rocs[0]);
  nic_roc_free(&rocs[1]);
}

static void test_km_plot(void) {
  static const double mp[] = {6,  6,  6,  6,  7,  9,  10, 10, 11, 13, 16,
                              17, 19, 20, 22, 23, 25, 32, 32, 34, 35};
  static const int mpe[] = {1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0};
  static const double pl[] = {1, 1, 2,  2,  3,  4,  4,  5,  5,  8, 8,
                              8, 8, 11, 11, 12, 12, 15, 17, 22, 23};
  int all[21];
  for (int i = 0; i < 21; i++) all[i] = 1;
  nic_km km[2] = {{0}};
  CHECK_OK(nic_km_fit(mp, mpe, 21, &km[0], NULL));
  CHECK_OK(nic_km_fit(pl, all, 21, &km[1], NULL));
  nic_plot *p = NULL;
  const char *labels[] = {"6-MP", "placebo"};
  CHECK_OK(nic_plot_km(&p, km, labels, 2, NULL));
  if (p) {
    nic_plot_set_labels(p, "Leukaemia remission (Freireich 1963)", "Weeks", NULL, NULL);
    CHECK_OK(nic_plot_add_note(p, "log-rank p = 4.2e-05", NULL));
    const char *path = out_path("km_6mp.png");
    CHECK_OK(nic_plot_save_png(p, path, NULL));
    int w = 0, h = 0;
    uint8_t *px = read_png(path, &w, &h);
    CHECK(px && w == 760 && h == 560);
    if (px) {
      double fx, fy;
      /* 6-MP (blue) holds S = 1 until week 6, then 0.857 until 7. */
      nic_plot_to_pixel(p, 3, 1, &fx, &fy);
      CHECK(is_rgb(pixel(px, w, (int)fx, (int)fy), 0x1f77b4, 8) ||
            is_rgb(pixel(px, w, (int)fx, (int)fy), 0xff7f0e, 8)); /* both start at 1 */
      nic_plot_to_pixel(p, 6.5, 18.0 / 21, &fx, &fy);
      CHECK(is_rgb(pixel(px, w, (int)fx, (int)fy), 0x1f77b4, 8));
      /* Placebo (orange) sits at 8/21 between weeks 8 and 11. */
      nic_plot_to_pixel(p, 9.5, 8.0 / 21, &fx, &fy);
      CHECK(is_rgb(pixel(px, w, (int)fx, (int)fy), 0xff7f0e, 8));
      /* A censoring '+' at week 25 (6-MP): ink above and below the curve. */
      nic_plot_to_pixel(p, 25, nic_km_surv_at(&km[0], 25), &fx, &fy);
      CHECK(!is_white(pixel(px, w, (int)fx, (int)fy - 4)));
      CHECK(!is_white(pixel(px, w, (int)fx, (int)fy + 4)));
      free(px);
    }
  }
  nic_plot_free(p);
  nic_km_free(&km[0]);
  nic_km_free(&km[1]);
}

static void test_line_plot_with_error_bars(void) {
  /* The kind of study plot the benchmarks make: accuracy (mean and 95%
   * interval) against the object-to-image ratio, two encoders. */
  double ratio[] = {0.01, 0.02, 0.05, 0.1, 0.2, 0.5};
  double acc_a[] = {0.52, 0.61, 0.74, 0.85, 0.91, 0.95},
         acc_b[] = {0.50, 0.55, 0.63, 0.71, 0.80, 0.88};
  double lo_a[6], hi_a[6], lo_b[6], hi_b[6];
  for (int i = 0; i < 6; i++) {
    lo_a[i] = acc_a[i] - 0.04, hi_a[i] = acc_a[i] + 0.03;
    lo_b[i] = acc_b[i] - 0.05, hi_b[i] = acc_b[i] + 0.05;
  }
  nic_plot *p = NULL;
  CHECK_OK(nic_plot_create(&p, 800, 520, NULL));
  if (!p) return;
  CHECK_OK(nic_plot_set_labels(p, "Accuracy vs object-to-image ratio", "Object-to-image ratio",
                               "Accuracy", NULL));
  nic_series a = {.x = ratio,
                  .y = acc_a,
                  .n = 6,
                  .ylo = lo_a,
                  .yhi = hi_a,
                  .label = "supervised MTL",
                  .marker = NIC_MARKER_CIRCLE};
  nic_series b = {.x = ratio,
                  .y = acc_b,
                  .n = 6,
                  .ylo = lo_b,
                  .yhi = hi_b,
                  .label = "BiGAN",
                  .marker = NIC_MARKER_SQUARE,
                  .line = NIC_LINE_DASHED};
  double chance[] = {0.5, 0.5}, ends[] = {0.01, 0.5};
  nic_series c = {.x = ends,
                  .y = chance,
                  .n = 2,
                  .label = "chance",
                  .line = NIC_LINE_DOTTED,
                  .color = NIC_RGB(120, 120, 120),
                  .line_width = 2};
  CHECK_OK(nic_plot_add(p, &a, NULL));
  CHECK_OK(nic_plot_add(p, &b, NULL));
  CHECK_OK(nic_plot_add(p, &c, NULL));
  nic_plot_set_ylim(p, 0.4, 1.0);
  nic_plot_set_log(p, 1, 0);
  nic_plot_set_legend(p, NIC_LEGEND_LOWER_RIGHT);
  uint8_t *px = NULL;
  CHECK_OK(nic_plot_render(p, &px, NULL));
  if (px) {
    /* Error bar of series a at x = 0.2: ink at its upper end, above the
     * marker, in the series colour. */
    double fx, fy;
    nic_plot_to_pixel(p, 0.2, hi_a[4], &fx, &fy);
    CHECK(is_rgb(pixel(px, 800, (int)fx, (int)fy), 0x1f77b4, 10));
    nic_plot_to_pixel(p, 0.2, acc_a[4], &fx, &fy);
    CHECK(is_rgb(pixel(px, 800, (int)fx, (int)fy), 0x1f77b4, 10));
    free(px);
  }
  CHECK_OK(nic_plot_save_png(p, out_path("accuracy_vs_ratio.png"), NULL));

  /* A scatter plot, auto limits, negative values. */
  nic_plot *q = NULL;
  CHECK_OK(nic_plot_create(&q, 640, 480, NULL));
  if (q) {
    nic_rng r;
    nic_rng_seed(&r, 4);
    double x[200], yv[200];
    for (int i = 0; i < 200; i++) {
      x[i] = nic_rng_normal(&r) * 3;
      yv[i] = 0.8 * x[i] + nic_rng_normal(&r);
    }
    nic_series sc = {.x = x,
                     .y = yv,
                     .n = 200,
                     .line = NIC_LINE_NONE,
                     .marker = NIC_MARKER_CIRCLE,
                     .marker_size = 7,
                     .label = "slides"};
    CHECK_OK(nic_plot_add(q, &sc, NULL));
    CHECK_OK(nic_plot_set_labels(q, "Predicted vs true", "true score", "predicted score", NULL));
    CHECK_OK(nic_plot_save_png(q, out_path("scatter.png"), NULL));
  }
  nic_plot_free(q);
  nic_plot_free(p);
}

static void test_log_axes(void) {
  /* Throughput against batch size, log-log over several decades. */
  double batch[] = {1, 4, 16, 64, 256, 1024, 4096}, ips[7];
  for (int i = 0; i < 7; i++) ips[i] = 900 * batch[i] / (batch[i] + 30);
  nic_plot *p = NULL;
  CHECK_OK(nic_plot_create(&p, 640, 420, NULL));
  if (!p) return;
  nic_series s = {.x = batch, .y = ips, .n = 7, .marker = NIC_MARKER_DIAMOND, .label = "encoder"};
  CHECK_OK(nic_plot_add(p, &s, NULL));
  CHECK_OK(nic_plot_set_labels(p, "Throughput", "batch size", "patches / s", NULL));
  nic_plot_set_log(p, 1, 1);
  uint8_t *px = NULL;
  CHECK_OK(nic_plot_render(p, &px, NULL));
  free(px);
  /* Equal ratios, equal distances. */
  double a, b, c;
  nic_plot_to_pixel(p, 1, 1, &a, NULL);
  nic_plot_to_pixel(p, 10, 1, &b, NULL);
  nic_plot_to_pixel(p, 100, 1, &c, NULL);
  CHECK_NEAR(c - b, b - a, 1e-9);
  CHECK(b > a);
  CHECK_OK(nic_plot_save_png(p, out_path("loglog.png"), NULL));
  /* Less than a decade without a round power inside: still ticks. */
  nic_plot_set_xlim(p, 0.3, 0.45);
  CHECK_OK(nic_plot_render(p, &px, NULL));
  free(px);
  CHECK_OK(nic_plot_save_png(p, out_path("log_narrow.png"), NULL));
  /* Limits at or below 0 have no place on a log axis. */
  nic_error e = {0};
  nic_plot_set_xlim(p, 0, 100);
  CHECK(nic_plot_render(p, &px, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "log axis") != NULL);
  nic_plot_free(p);
}

static void test_plot_errors(void) {
  nic_error e = {0};
  nic_plot *p = NULL;
  CHECK(nic_plot_create(&p, 50, 50, &e) == NIC_EINVAL);
  CHECK(p == NULL);
  CHECK_OK(nic_plot_create(&p, 400, 300, &e));
  if (!p) return;
  double x[] = {1, 2}, y[] = {3, 4};
  nic_series s = {.x = x, .y = y, .n = 0};
  CHECK(nic_plot_add(p, &s, &e) == NIC_EINVAL);
  s.n = 2;
  s.ylo = y;
  CHECK(nic_plot_add(p, &s, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "ylo and yhi") != NULL);
  s.ylo = NULL;
  s.line = (nic_line_style)17;
  CHECK(nic_plot_add(p, &s, &e) == NIC_EINVAL);
  s.line = NIC_LINE_SOLID;
  CHECK_OK(nic_plot_add(p, &s, &e));
  double fx;
  CHECK(nic_plot_to_pixel(p, 1, 1, &fx, NULL) == 0); /* not laid out yet */
  nic_plot_set_xlim(p, 5, 1);
  uint8_t *px = NULL;
  CHECK(nic_plot_render(p, &px, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "x range") != NULL && px == NULL);
  nic_plot_set_xlim(p, NAN, NAN);
  /* A single point and an all-NaN series still render. */
  double one[] = {2}, nan[] = {NAN, NAN};
  nic_series pt = {.x = one, .y = one, .n = 1, .marker = NIC_MARKER_DIAMOND};
  nic_series nn = {.x = nan, .y = nan, .n = 2};
  CHECK_OK(nic_plot_add(p, &pt, &e));
  CHECK_OK(nic_plot_add(p, &nn, &e));
  CHECK_OK(nic_plot_render(p, &px, &e));
  CHECK(nic_plot_to_pixel(p, 1, 1, &fx, NULL) == 1);
  free(px);
  CHECK(nic_plot_save_png(p, "/nonexistent-dir/p.png", &e) == NIC_EIO);
  nic_plot_free(p);
  /* Far-off data with fixed limits must not blow up the rasterizer. */
  CHECK_OK(nic_plot_create(&p, 300, 200, &e));
  double fx2[] = {-1e300, 1e300}, fy2[] = {-1e300, 1e300};
  nic_series far = {.x = fx2, .y = fy2, .n = 2};
  CHECK_OK(nic_plot_add(p, &far, &e));
  nic_plot_set_xlim(p, 0, 1);
  nic_plot_set_ylim(p, 0, 1);
  CHECK_OK(nic_plot_render(p, &px, &e));
  free(px);
  nic_plot_free(p);
}

int main(void) {
  outdir = nic_test_tmpdir();
  RUN(test_png_roundtrip);
  RUN(test_colormaps);
  RUN(test_heatmap_blend_math);
  RUN(test_heatmap_png);
  RUN(test_text);
  RUN(test_roc_plot_perfect);
  RUN(test_roc_plot_several);
  RUN(test_km_plot);
  RUN(test_line_plot_with_error_bars);
  RUN(test_log_axes);
  RUN(test_plot_errors);
  printf("plots written to %s\n", outdir);
  return nic_test_finish();
}
