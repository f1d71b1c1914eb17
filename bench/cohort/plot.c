/* bench_cohort_plot: AUC against tumour cluster size, one line per model,
 * from bench/cohort/run.sh's results.csv.
 *
 *   bench_cohort_plot results.csv auc_vs_cluster.png
 *
 * Uses the rows whose cluster_size is a plain integer and whose metric is
 * auc: x = cluster size (log2 axis), y = pooled out-of-fold AUC with its 95%
 * bootstrap interval as error bars. Columns are found by name in the header:
 * cluster_size, model, metric, pooled, pooled_lo, pooled_hi. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nic/plot.h"

#define MAX_ROWS 256
#define MAX_MODELS 8
#define MAX_COLS 32

typedef struct row {
  char model[64];
  double x, y, lo, hi;
} row;

/* Splits a CSV line (no quoting: the script writes none) in place. */
static int split(char *line, char **f, int max) {
  int n = 0;
  line[strcspn(line, "\r\n")] = 0;
  for (char *s = line; n < max;) {
    f[n++] = s;
    char *c = strchr(s, ',');
    if (!c) break;
    *c = 0;
    s = c + 1;
  }
  return n;
}

static int col(char **h, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (!strcmp(h[i], name)) return i;
  return -1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: bench_cohort_plot results.csv out.png\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "r");
  if (!f) {
    perror(argv[1]);
    return 1;
  }
  char hline[1024], line[1024];
  char *h[MAX_COLS], *v[MAX_COLS];
  if (!fgets(hline, sizeof hline, f)) {
    fprintf(stderr, "%s: empty\n", argv[1]);
    fclose(f);
    return 1;
  }
  int nh = split(hline, h, MAX_COLS);
  int cx = col(h, nh, "cluster_size"), cm = col(h, nh, "model"), cmet = col(h, nh, "metric"),
      cy = col(h, nh, "pooled"), clo = col(h, nh, "pooled_lo"), chi = col(h, nh, "pooled_hi");
  if (cx < 0 || cm < 0 || cmet < 0 || cy < 0 || clo < 0 || chi < 0) {
    fprintf(stderr,
            "%s: missing a column (cluster_size, model, metric, pooled, pooled_lo, "
            "pooled_hi)\n",
            argv[1]);
    fclose(f);
    return 1;
  }
  static row rows[MAX_ROWS];
  int nr = 0;
  while (nr < MAX_ROWS && fgets(line, sizeof line, f)) {
    int n = split(line, v, MAX_COLS);
    if (n < nh || strcmp(v[cmet], "auc")) continue;
    char *end;
    long k = strtol(v[cx], &end, 10);
    if (end == v[cx] || *end || k < 1) continue; /* "4-8", "-": not in the sweep */
    row *r = &rows[nr];
    snprintf(r->model, sizeof r->model, "%s", v[cm]);
    r->x = (double)k;
    r->y = strtod(v[cy], NULL);
    r->lo = strtod(v[clo], NULL);
    r->hi = strtod(v[chi], NULL);
    if (isfinite(r->y)) nr++;
  }
  fclose(f);
  if (nr == 0) {
    fprintf(stderr, "%s: no AUC rows with an integer cluster_size\n", argv[1]);
    return 1;
  }
  nic_error err;
  nic_plot *p = NULL;
  nic_status st = nic_plot_create(&p, 720, 480, &err);
  if (st == NIC_OK)
    st = nic_plot_set_labels(p, "AUC vs tumour cluster size (pooled out-of-fold, 95% CI)",
                             "tumour patches in the cluster", "AUC", &err);
  if (st == NIC_OK) {
    nic_plot_set_log(p, 1, 0);
    nic_plot_set_ylim(p, 0.4, 1.0);
    nic_plot_set_legend(p, NIC_LEGEND_LOWER_RIGHT);
  }
  /* the chance line */
  double cxs[2] = {1e9, 0}, cys[2] = {0.5, 0.5};
  for (int i = 0; i < nr; i++) {
    cxs[0] = fmin(cxs[0], rows[i].x);
    cxs[1] = fmax(cxs[1], rows[i].x);
  }
  nic_series chance = {.x = cxs,
                       .y = cys,
                       .n = 2,
                       .label = "chance",
                       .color = NIC_RGB(150, 150, 150),
                       .line = NIC_LINE_DASHED,
                       .line_width = 1.5f};
  if (st == NIC_OK) st = nic_plot_add(p, &chance, &err);
  int done[MAX_MODELS]; /* a row of each model drawn */
  int nd = 0;
  static const nic_marker marks[] = {NIC_MARKER_CIRCLE, NIC_MARKER_SQUARE, NIC_MARKER_DIAMOND};
  for (int i = 0; i < nr && st == NIC_OK && nd < MAX_MODELS; i++) {
    int seen = 0;
    for (int d = 0; d < nd; d++) seen |= !strcmp(rows[done[d]].model, rows[i].model);
    if (seen) continue;
    done[nd] = i;
    double x[MAX_ROWS], y[MAX_ROWS], lo[MAX_ROWS], hi[MAX_ROWS];
    size_t n = 0;
    for (int j = i; j < nr; j++) { /* this model's points, by cluster size */
      if (strcmp(rows[j].model, rows[i].model)) continue;
      size_t at = n++;
      while (at > 0 && x[at - 1] > rows[j].x) {
        x[at] = x[at - 1], y[at] = y[at - 1], lo[at] = lo[at - 1], hi[at] = hi[at - 1];
        at--;
      }
      x[at] = rows[j].x, y[at] = rows[j].y, lo[at] = rows[j].lo, hi[at] = rows[j].hi;
    }
    const char *label = !strcmp(rows[i].model, "nic")       ? "NIC slide CNN"
                        : !strcmp(rows[i].model, "abmil")   ? "ABMIL"
                        : !strcmp(rows[i].model, "cluster") ? "cluster detector"
                                                            : rows[i].model;
    nic_series s = {
        .x = x, .y = y, .n = n, .ylo = lo, .yhi = hi, .label = label, .marker = marks[nd % 3]};
    st = nic_plot_add(p, &s, &err);
    nd++;
  }
  if (st == NIC_OK) st = nic_plot_save_png(p, argv[2], &err);
  nic_plot_free(p);
  if (st != NIC_OK) {
    fprintf(stderr, "bench_cohort_plot: %s\n", err.msg);
    return 1;
  }
  return 0;
}
