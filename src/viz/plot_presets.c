/* Ready-made plots over the metric results: ROC curves and Kaplan-Meier
 * survival curves. Both return the plot so that callers can add a title
 * or notes (an AUC interval, a log-rank p-value) before saving it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "viz/viz_internal.h"

/* Axes a little wider than [0, 1] so lines along the edges stay whole. */
#define UNIT_LO -0.02
#define UNIT_HI 1.02

nic_status nic_plot_roc(nic_plot **out, const nic_roc *curves, const char *const *labels, int n,
                        nic_error *err) {
  if (!out || (!curves && n > 0) || n < 0)
    return nic_err(err, NIC_EINVAL, "plot_roc: bad arguments");
  *out = NULL;
  nic_plot *p = NULL;
  nic_status s = nic_plot_create(&p, 680, 640, err);
  if (s != NIC_OK) return s;
  s = nic_plot_set_labels(p, NULL, "False positive rate", "True positive rate", err);
  nic_plot_set_xlim(p, UNIT_LO, UNIT_HI);
  nic_plot_set_ylim(p, UNIT_LO, UNIT_HI);
  /* The chance diagonal, first so that the curves lie over it. */
  const double diag[2] = {0, 1};
  nic_series d = {.x = diag,
                  .y = diag,
                  .n = 2,
                  .color = NIC_RGB(150, 150, 150),
                  .line_width = 1.5f,
                  .line = NIC_LINE_DASHED};
  if (s == NIC_OK) s = nic_plot_add(p, &d, err);
  for (int i = 0; i < n && s == NIC_OK; i++) {
    const nic_roc *r = &curves[i];
    if (!r->fpr || !r->tpr || r->n == 0) {
      s = nic_err(err, NIC_EINVAL, "plot_roc: curve %d is empty", i);
      break;
    }
    char label[256];
    if (labels && labels[i])
      snprintf(label, sizeof label, "%s (AUC %.3f)", labels[i], r->auc);
    else
      snprintf(label, sizeof label, "AUC %.3f", r->auc);
    nic_series c = {.x = r->fpr, .y = r->tpr, .n = r->n, .label = label};
    s = nic_plot_add(p, &c, err);
  }
  if (s != NIC_OK) {
    nic_plot_free(p);
    return s;
  }
  *out = p;
  return NIC_OK;
}

/* Adds one Kaplan-Meier curve as a step series from (0, 1) and its
 * censoring marks as '+' markers on the curve. */
static nic_status add_km(nic_plot *p, const nic_km *km, const char *label, uint32_t color,
                         nic_error *err) {
  size_t n = km->n + 1;
  double *x = malloc(2 * n * sizeof *x), *y = x ? x + n : NULL;
  double *cx = malloc(2 * n * sizeof *cx), *cy = cx ? cx + n : NULL;
  if (!x || !cx) {
    free(x);
    free(cx);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  /* Start at time 0 (or the first time, when it is earlier) with S = 1. */
  x[0] = km->n && km->time[0] < 0 ? km->time[0] : 0;
  y[0] = 1;
  size_t nc = 0;
  for (size_t i = 0; i < km->n; i++) {
    x[i + 1] = km->time[i];
    y[i + 1] = km->surv[i];
    if (km->censored[i] > 0) cx[nc] = km->time[i], cy[nc] = km->surv[i], nc++;
  }
  char buf[256];
  snprintf(buf, sizeof buf, "%s (n = %lld)", label, (long long)km->total);
  nic_series line = {.x = x, .y = y, .n = n, .label = buf, .color = color, .step = 1};
  nic_status s = nic_plot_add(p, &line, err);
  if (s == NIC_OK && nc > 0) {
    nic_series marks = {.x = cx,
                        .y = cy,
                        .n = nc,
                        .color = color,
                        .line = NIC_LINE_NONE,
                        .marker = NIC_MARKER_PLUS,
                        .marker_size = 11};
    s = nic_plot_add(p, &marks, err);
  }
  free(x);
  free(cx);
  return s;
}

nic_status nic_plot_km(nic_plot **out, const nic_km *curves, const char *const *labels, int n,
                       nic_error *err) {
  if (!out || (!curves && n > 0) || n < 0)
    return nic_err(err, NIC_EINVAL, "plot_km: bad arguments");
  *out = NULL;
  nic_plot *p = NULL;
  nic_status s = nic_plot_create(&p, 760, 560, err);
  if (s != NIC_OK) return s;
  s = nic_plot_set_labels(p, NULL, "Time", "Survival probability", err);
  double tmax = 0;
  for (int i = 0; i < n; i++)
    if (curves[i].n) tmax = fmax(tmax, curves[i].time[curves[i].n - 1]);
  if (!(tmax > 0)) tmax = 1;
  nic_plot_set_xlim(p, -0.02 * tmax, 1.03 * tmax);
  nic_plot_set_ylim(p, UNIT_LO, 1.04);
  for (int i = 0; i < n && s == NIC_OK; i++) {
    char name[32];
    snprintf(name, sizeof name, "group %d", i);
    s = add_km(p, &curves[i], labels && labels[i] ? labels[i] : name,
               NIC_RGB(0, 0, 0) | viz_palette(i), err);
  }
  if (s != NIC_OK) {
    nic_plot_free(p);
    return s;
  }
  *out = p;
  return NIC_OK;
}
