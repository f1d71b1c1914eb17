/* Evaluation of slide-level predictions: the task's metrics with bootstrap
 * intervals per fold and pooled, their mean +- sd over folds, the report
 * table and one-line summary, and the ROC / Kaplan-Meier / scatter plot.
 * The metrics themselves are libnic's (include/nic/metrics.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nic/plot.h"
#include "slidemodel/sm_internal.h"

nic_eval_opts nic_eval_default_opts(void) {
  nic_eval_opts o;
  memset(&o, 0, sizeof o);
  o.resamples = 1000;
  o.seed = 1;
  o.level = 0.95;
  o.threshold = 0.5;
  o.ordinal = -1;
  return o;
}

void nic_eval_free(nic_eval *e) {
  if (!e) return;
  free(e->folds);
  memset(e, 0, sizeof *e);
}

/* The metrics of a task, the main one first. */
static int task_metrics(nic_task t, int ordinal, nic_metric *m, const char **names) {
  switch (t) {
  case NIC_TASK_BINARY:
  case NIC_TASK_MULTICLASS:
    m[0] = t == NIC_TASK_BINARY ? NIC_METRIC_AUC : NIC_METRIC_AUC_MACRO;
    m[1] = NIC_METRIC_BALANCED_ACCURACY;
    m[2] = NIC_METRIC_ACCURACY;
    m[3] = ordinal && t == NIC_TASK_MULTICLASS ? NIC_METRIC_KAPPA_QUADRATIC : NIC_METRIC_KAPPA;
    names[0] = "auc", names[1] = "bacc", names[2] = "acc", names[3] = "kappa";
    return 4;
  case NIC_TASK_REGRESSION:
    m[0] = NIC_METRIC_SPEARMAN, m[1] = NIC_METRIC_PEARSON, m[2] = NIC_METRIC_MAE;
    names[0] = "spearman", names[1] = "pearson", names[2] = "mae";
    return 3;
  case NIC_TASK_SURVIVAL:
    m[0] = NIC_METRIC_CINDEX;
    names[0] = "c_index";
    return 1;
  }
  return 0;
}

/* ---- one set of rows ---------------------------------------------------------------- */

typedef struct set_data {
  int n, k;
  int *labels, *pred, *event;
  double *score, *ytrue, *ypred, *time;
} set_data;

static void set_free(set_data *s) {
  free(s->labels), free(s->pred), free(s->event);
  free(s->score), free(s->ytrue), free(s->ypred), free(s->time);
}

static int row_known(const nic_preds *p, int i) {
  switch (p->task) {
  case NIC_TASK_BINARY:
  case NIC_TASK_MULTICLASS:
    return p->cls[i] >= 0;
  case NIC_TASK_REGRESSION:
    return isfinite(p->value[i]);
  case NIC_TASK_SURVIVAL:
    return isfinite(p->time[i]) && p->event[i] >= 0;
  }
  return 0;
}

/* The labelled rows of fold `fold` (-1: all) as metric arrays. */
static nic_status gather(const nic_preds *p, int fold, double threshold, set_data *s,
                         nic_error *err) {
  memset(s, 0, sizeof *s);
  int k = p->k;
  size_t N = (size_t)(p->n ? p->n : 1);
  s->k = p->task == NIC_TASK_MULTICLASS ? k : 2;
  s->labels = malloc(sizeof(int) * N);
  s->pred = malloc(sizeof(int) * N);
  s->event = malloc(sizeof(int) * N);
  s->score = malloc(sizeof(double) * N * (size_t)k);
  s->ytrue = malloc(sizeof(double) * N);
  s->ypred = malloc(sizeof(double) * N);
  s->time = malloc(sizeof(double) * N);
  if (!s->labels || !s->pred || !s->event || !s->score || !s->ytrue || !s->ypred || !s->time) {
    set_free(s);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  for (int i = 0; i < p->n; i++) {
    if ((fold >= 0 && p->fold[i] != fold) || !row_known(p, i)) continue;
    int j = s->n++;
    const double *sc = p->score + (size_t)i * k;
    memcpy(s->score + (size_t)j * k, sc, sizeof(double) * (size_t)k);
    s->labels[j] = p->cls[i];
    if (p->task == NIC_TASK_MULTICLASS) {
      int best = 0;
      for (int c = 1; c < k; c++)
        if (sc[c] > sc[best]) best = c;
      s->pred[j] = best;
    } else {
      s->pred[j] = sc[0] >= threshold;
    }
    s->ytrue[j] = p->value[i];
    s->ypred[j] = sc[0];
    s->time[j] = p->time[i];
    s->event[j] = p->event[i];
  }
  return NIC_OK;
}

static nic_metric_data metric_data(const set_data *s, nic_metric m) {
  nic_metric_data d;
  memset(&d, 0, sizeof d);
  d.metric = m;
  d.n = (size_t)s->n;
  d.k = s->k;
  d.labels = s->labels;
  d.pred = s->pred;
  d.score = s->score;
  d.y_true = s->ytrue;
  d.y_pred = s->ypred;
  d.time = s->time;
  d.event = s->event;
  d.risk = s->ypred;
  return d;
}

static void eval_set(const nic_eval *e, const nic_metric *ms, const set_data *s,
                     const nic_eval_opts *o, nic_eval_set *out) {
  for (int j = 0; j < e->nmetrics; j++) {
    out->ok[j] = out->ci_ok[j] = 0;
    if (s->n == 0) continue;
    nic_metric_data d = metric_data(s, ms[j]);
    nic_bootstrap_opts bo = nic_bootstrap_default_opts();
    bo.resamples = o->resamples;
    bo.seed = o->seed;
    bo.level = o->level;
    if (e->task == NIC_TASK_BINARY || e->task == NIC_TASK_MULTICLASS)
      bo.strata = s->labels;
    else if (e->task == NIC_TASK_SURVIVAL)
      bo.strata = s->event;
    nic_error err = {0};
    if (o->resamples > 0 &&
        nic_bootstrap(nic_metric_fn_data, &d, d.n, &bo, &out->ci[j], &err) == NIC_OK) {
      out->ok[j] = out->ci_ok[j] = 1;
      continue;
    }
    double v;
    memset(&out->ci[j], 0, sizeof out->ci[j]);
    if (nic_metric_eval(&d, NULL, 0, &v, &err) == NIC_OK && isfinite(v)) {
      out->ok[j] = 1;
      out->ci[j].estimate = v;
      out->ci[j].lo = out->ci[j].hi = NAN;
    }
  }
}

/* ---- the whole file ------------------------------------------------------------------- */

static int cmp_int(const void *a, const void *b) {
  return *(const int *)a - *(const int *)b;
}

nic_status nic_evaluate(const nic_preds *p, const nic_eval_opts *opts, nic_eval *e,
                        nic_error *err) {
  memset(e, 0, sizeof *e);
  nic_eval_opts o = opts ? *opts : nic_eval_default_opts();
  int ordinal = o.ordinal;
  if (ordinal < 0) {
    ordinal = p->task == NIC_TASK_MULTICLASS && p->class_names;
    for (int c = 0; ordinal && c < p->k; c++) ordinal = sm_is_integer(p->class_names[c]);
  }
  nic_metric ms[NIC_EVAL_MAX_METRICS];
  e->task = p->task;
  e->nmetrics = task_metrics(p->task, ordinal, ms, e->names);
  e->kappa_quadratic = ordinal && p->task == NIC_TASK_MULTICLASS;
  /* the folds present, in order */
  int *folds = malloc(sizeof(int) * (size_t)(p->n ? p->n : 1));
  if (!folds) return nic_err(err, NIC_ENOMEM, "out of memory");
  int nf = 0;
  for (int i = 0; p->has_fold && i < p->n; i++)
    if (p->fold[i] >= 0) folds[nf++] = p->fold[i];
  qsort(folds, (size_t)nf, sizeof(int), cmp_int);
  int u = 0;
  for (int i = 0; i < nf; i++)
    if (u == 0 || folds[u - 1] != folds[i]) folds[u++] = folds[i];
  nf = u;
  e->folds = calloc((size_t)(nf ? nf : 1), sizeof *e->folds);
  if (!e->folds) {
    free(folds);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  e->nfolds = nf;
  set_data s;
  nic_status st = NIC_OK;
  for (int f = -1; f < nf && st == NIC_OK; f++) {
    nic_eval_set *out = f < 0 ? &e->pooled : &e->folds[f];
    out->fold = f < 0 ? -1 : folds[f];
    if ((st = gather(p, out->fold, o.threshold, &s, err)) != NIC_OK) break;
    out->n = s.n;
    eval_set(e, ms, &s, &o, out);
    set_free(&s);
  }
  free(folds);
  if (st == NIC_OK && e->pooled.n == 0)
    st = nic_err(err, NIC_EINVAL, "no prediction has a known label to evaluate against");
  for (int j = 0; j < e->nmetrics && st == NIC_OK; j++) {
    double v[1024];
    int m = 0;
    for (int f = 0; f < nf && m < 1024; f++)
      if (e->folds[f].ok[j]) v[m++] = e->folds[f].ci[j].estimate;
    e->summary_ok[j] = m > 0 && nic_summarize(v, m, &e->summary[j], NULL) == NIC_OK;
  }
  if (st != NIC_OK) nic_eval_free(e);
  return st;
}

nic_status sm_eval_empty(nic_eval *e, nic_task task, nic_error *err) {
  nic_metric ms[NIC_EVAL_MAX_METRICS];
  memset(e, 0, sizeof *e);
  e->task = task;
  e->nmetrics = task_metrics(task, 0, ms, e->names);
  e->pooled.fold = -1;
  if (!(e->folds = calloc(1, sizeof *e->folds))) return nic_err(err, NIC_ENOMEM, "out of memory");
  return NIC_OK;
}

/* ---- reports ---------------------------------------------------------------------------- */

static void cell(char *buf, size_t n, const nic_eval_set *s, int j) {
  if (!s->ok[j])
    snprintf(buf, n, "n/a");
  else if (!s->ci_ok[j])
    snprintf(buf, n, "%.3f", s->ci[j].estimate);
  else
    snprintf(buf, n, "%.3f (%.3f-%.3f)", s->ci[j].estimate, s->ci[j].lo, s->ci[j].hi);
}

/* Appends one column of the table, padded. */
static void put_col(char *row, size_t size, const char *text) {
  size_t at = strlen(row);
  if (at < size) snprintf(row + at, size - at, "  %-22s", text);
}

/* Prints a row without the padding after its last column. */
static void put_row(FILE *f, char *row) {
  size_t n = strlen(row);
  while (n > 0 && row[n - 1] == ' ') row[--n] = 0;
  fprintf(f, "%s\n", row);
}

void nic_eval_print(const nic_eval *e, FILE *f) {
  char buf[64], row[512];
  fprintf(f, "%s task: %d slides with labels", nic_task_name(e->task), e->pooled.n);
  if (e->nfolds) fprintf(f, " in %d fold%s", e->nfolds, e->nfolds > 1 ? "s" : "");
  double level = e->pooled.ci_ok[0] ? e->pooled.ci[0].level : 0.95;
  fprintf(f, "; estimate (%g%% bootstrap interval)\n", 100 * level);
  snprintf(row, sizeof row, "%-10s %5s", "set", "n");
  for (int j = 0; j < e->nmetrics; j++) put_col(row, sizeof row, e->names[j]);
  put_row(f, row);
  for (int i = 0; i < e->nfolds; i++) {
    char name[32];
    snprintf(name, sizeof name, "fold %d", e->folds[i].fold);
    snprintf(row, sizeof row, "%-10s %5d", name, e->folds[i].n);
    for (int j = 0; j < e->nmetrics; j++) {
      cell(buf, sizeof buf, &e->folds[i], j);
      put_col(row, sizeof row, buf);
    }
    put_row(f, row);
  }
  if (e->nfolds > 1) {
    snprintf(row, sizeof row, "%-10s %5d", "mean +- sd", e->nfolds);
    for (int j = 0; j < e->nmetrics; j++) {
      if (e->summary_ok[j])
        snprintf(buf, sizeof buf, "%.3f +- %.3f", e->summary[j].mean, e->summary[j].sd);
      else
        snprintf(buf, sizeof buf, "n/a");
      put_col(row, sizeof row, buf);
    }
    put_row(f, row);
  }
  snprintf(row, sizeof row, "%-10s %5d", "pooled", e->pooled.n);
  for (int j = 0; j < e->nmetrics; j++) {
    cell(buf, sizeof buf, &e->pooled, j);
    put_col(row, sizeof row, buf);
  }
  put_row(f, row);
  if (e->kappa_quadratic) fprintf(f, "kappa is quadratically weighted (ordinal classes)\n");
}

void nic_eval_line(const nic_eval *e, char *buf, size_t size) {
  size_t at = 0;
  buf[0] = 0;
#define APPEND(...)                                                                                \
  do {                                                                                             \
    if (at < size) {                                                                               \
      int w_ = snprintf(buf + at, size - at, __VA_ARGS__);                                         \
      if (w_ > 0) at += (size_t)w_;                                                                \
    }                                                                                              \
  } while (0)
  for (int j = 0; j < e->nmetrics; j++) {
    const char *sep = at ? " " : "";
    if (e->nfolds > 1 && e->summary_ok[j]) {
      APPEND("%s%s=%.4f", sep, e->names[j], e->summary[j].mean);
      if (j == 0) APPEND(" %s_sd=%.4f", e->names[j], e->summary[j].sd);
    } else if (e->pooled.ok[j]) {
      APPEND("%s%s=%.4f", sep, e->names[j], e->pooled.ci[j].estimate);
    }
  }
  if (e->nfolds > 1 && e->pooled.ok[0])
    APPEND(" %s_pooled=%.4f", e->names[0], e->pooled.ci[0].estimate);
  APPEND("%sn=%d folds=%d", at ? " " : "", e->pooled.n, e->nfolds);
#undef APPEND
}

double sm_main_metric(nic_task task, int K, const int *cls, const double *value, const int *event,
                      const double *scores, int n) {
  double v = NAN;
  nic_status st = NIC_EINVAL;
  if (n < 2) return NAN;
  switch (task) {
  case NIC_TASK_BINARY:
    st = nic_auc(cls, scores, (size_t)n, &v, NULL);
    break;
  case NIC_TASK_MULTICLASS:
    st = nic_auc_ovr_macro(cls, scores, (size_t)n, K, &v, NULL, NULL);
    break;
  case NIC_TASK_REGRESSION:
    st = nic_spearman(value, scores, (size_t)n, &v, NULL);
    break;
  case NIC_TASK_SURVIVAL:
    st = nic_cindex(value, event, scores, (size_t)n, &v, NULL, NULL);
    break;
  }
  return st == NIC_OK ? v : NAN;
}

/* ---- plots ---------------------------------------------------------------------------------- */

static nic_status plot_roc(const nic_preds *p, const char *path, nic_error *err) {
  nic_eval_opts o = nic_eval_default_opts();
  int nf = 0, folds[64];
  for (int i = 0; p->has_fold && i < p->n; i++) {
    int seen = p->fold[i] < 0;
    for (int j = 0; j < nf && !seen; j++) seen = folds[j] == p->fold[i];
    if (!seen && nf < 64) folds[nf++] = p->fold[i];
  }
  qsort(folds, (size_t)nf, sizeof(int), cmp_int);
  nic_roc curves[80];
  char names[80][64];
  const char *labels[80];
  int nc = 0;
  nic_status st = NIC_OK;
  set_data s;
  int multi = p->task == NIC_TASK_MULTICLASS;
  /* binary: one curve per fold and the pooled one; multiclass: one per class */
  int sets = multi ? p->k : (nf > 1 ? nf + 1 : 1);
  if (sets > 79) sets = 79;
  if ((st = gather(p, -1, o.threshold, &s, err)) != NIC_OK) return st;
  for (int q = 0; q < sets && st == NIC_OK; q++) {
    set_data fs;
    int fold = multi || q == sets - 1 ? -1 : folds[q];
    if (fold >= 0 && (st = gather(p, fold, o.threshold, &fs, err)) != NIC_OK) break;
    const set_data *d = fold >= 0 ? &fs : &s;
    int *lab = malloc(sizeof(int) * (size_t)(d->n ? d->n : 1));
    double *sc = malloc(sizeof(double) * (size_t)(d->n ? d->n : 1));
    if (!lab || !sc) st = nic_err(err, NIC_ENOMEM, "out of memory");
    for (int i = 0; i < d->n && st == NIC_OK; i++) {
      lab[i] = multi ? d->labels[i] == q : d->labels[i];
      sc[i] = multi ? d->score[(size_t)i * p->k + q] : d->score[(size_t)i * p->k];
    }
    if (st == NIC_OK && nic_roc_curve(lab, sc, (size_t)d->n, &curves[nc], NULL) == NIC_OK) {
      if (multi)
        snprintf(names[nc], sizeof names[nc], "%.40s", p->class_names ? p->class_names[q] : "?");
      else if (fold >= 0)
        snprintf(names[nc], sizeof names[nc], "fold %d", fold);
      else
        snprintf(names[nc], sizeof names[nc], nf > 1 ? "pooled" : "ROC");
      labels[nc] = names[nc];
      nc++;
    }
    free(lab), free(sc);
    if (fold >= 0) set_free(&fs);
  }
  set_free(&s);
  nic_plot *pl = NULL;
  if (st == NIC_OK && nc == 0)
    st = nic_err(err, NIC_EINVAL, "no ROC curve can be drawn: the labels hold one class");
  if (st == NIC_OK) st = nic_plot_roc(&pl, curves, labels, nc, err);
  if (st == NIC_OK)
    st =
        nic_plot_set_labels(pl, multi ? "ROC, one class against the rest" : "ROC", NULL, NULL, err);
  if (st == NIC_OK) st = nic_plot_save_png(pl, path, err);
  nic_plot_free(pl);
  for (int i = 0; i < nc; i++) nic_roc_free(&curves[i]);
  return st;
}

/* Risk group: above the median risk of the row's fold (or of all rows). */
static nic_status risk_groups(const nic_preds *p, int *group, nic_error *err) {
  double *r = malloc(sizeof(double) * (size_t)(p->n ? p->n : 1));
  if (!r) return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int i = 0; i < p->n; i++) group[i] = -1;
  for (int i = 0; i < p->n; i++) {
    if (group[i] != -1 || !row_known(p, i)) continue;
    int f = p->has_fold ? p->fold[i] : -1, m = 0;
    for (int j = 0; j < p->n; j++)
      if (row_known(p, j) && (!p->has_fold || p->fold[j] == f)) r[m++] = p->score[j];
    double *sorted = r;
    for (int a = 1; a < m; a++) { /* insertion sort: folds are small */
      double x = sorted[a];
      int b = a - 1;
      while (b >= 0 && sorted[b] > x) sorted[b + 1] = sorted[b], b--;
      sorted[b + 1] = x;
    }
    double med = m % 2 ? sorted[m / 2] : 0.5 * (sorted[m / 2 - 1] + sorted[m / 2]);
    for (int j = 0; j < p->n; j++)
      if (row_known(p, j) && (!p->has_fold || p->fold[j] == f)) group[j] = p->score[j] > med;
  }
  free(r);
  return NIC_OK;
}

static nic_status plot_km(const nic_preds *p, const char *path, nic_error *err) {
  int *group = malloc(sizeof(int) * (size_t)(p->n ? p->n : 1));
  double *t = malloc(sizeof(double) * (size_t)(p->n ? p->n : 1));
  int *ev = malloc(sizeof(int) * (size_t)(p->n ? p->n : 1)),
      *g = malloc(sizeof(int) * (size_t)(p->n ? p->n : 1));
  nic_km km[2];
  memset(km, 0, sizeof km);
  nic_status st = group && t && ev && g ? NIC_OK : nic_err(err, NIC_ENOMEM, "out of memory");
  if (st == NIC_OK) st = risk_groups(p, group, err);
  int n = 0, counts[2] = {0, 0};
  for (int i = 0; i < p->n && st == NIC_OK; i++)
    if (group[i] >= 0)
      t[n] = p->time[i], ev[n] = p->event[i], g[n] = group[i], counts[group[i]]++, n++;
  const char *labels[2] = {"low risk", "high risk"};
  nic_km used[2];
  const char *ulabels[2];
  int nu = 0;
  for (int q = 0; q < 2 && st == NIC_OK; q++) {
    if (!counts[q]) continue;
    double *tq = malloc(sizeof(double) * (size_t)counts[q]);
    int *eq = malloc(sizeof(int) * (size_t)counts[q]), m = 0;
    if (!tq || !eq) st = nic_err(err, NIC_ENOMEM, "out of memory");
    for (int i = 0; i < n && st == NIC_OK; i++)
      if (g[i] == q) tq[m] = t[i], eq[m] = ev[i], m++;
    if (st == NIC_OK) st = nic_km_fit(tq, eq, (size_t)m, &km[q], err);
    if (st == NIC_OK) used[nu] = km[q], ulabels[nu++] = labels[q];
    free(tq), free(eq);
  }
  nic_plot *pl = NULL;
  if (st == NIC_OK && nu == 0) st = nic_err(err, NIC_EINVAL, "no survival data to plot");
  if (st == NIC_OK) st = nic_plot_km(&pl, used, ulabels, nu, err);
  if (st == NIC_OK) {
    nic_logrank_result lr;
    char note[64];
    if (nic_logrank(t, ev, g, (size_t)n, 2, &lr, NULL, NULL, NULL) == NIC_OK) {
      snprintf(note, sizeof note, "log-rank p = %.3g", lr.p);
      st = nic_plot_add_note(pl, note, err);
    }
  }
  if (st == NIC_OK)
    st = nic_plot_set_labels(pl, "Kaplan-Meier by predicted risk (median split)", "time",
                             "survival", err);
  if (st == NIC_OK) st = nic_plot_save_png(pl, path, err);
  nic_plot_free(pl);
  nic_km_free(&km[0]);
  nic_km_free(&km[1]);
  free(group), free(t), free(ev), free(g);
  return st;
}

static nic_status plot_scatter(const nic_preds *p, const char *path, nic_error *err) {
  set_data s;
  nic_status st = gather(p, -1, 0.5, &s, err);
  if (st != NIC_OK) return st;
  nic_plot *pl = NULL;
  if (s.n == 0) st = nic_err(err, NIC_EINVAL, "no labelled prediction to plot");
  if (st == NIC_OK) st = nic_plot_create(&pl, 640, 480, err);
  if (st == NIC_OK) {
    nic_series ser;
    memset(&ser, 0, sizeof ser);
    ser.x = s.ytrue;
    ser.y = s.ypred;
    ser.n = (size_t)s.n;
    ser.line = NIC_LINE_NONE;
    ser.marker = NIC_MARKER_CIRCLE;
    ser.label = "slides";
    st = nic_plot_add(pl, &ser, err);
  }
  if (st == NIC_OK)
    st = nic_plot_set_labels(pl, "Prediction against truth", "truth", "prediction", err);
  if (st == NIC_OK) st = nic_plot_save_png(pl, path, err);
  nic_plot_free(pl);
  set_free(&s);
  return st;
}

nic_status nic_eval_plot(const nic_preds *p, const char *path, nic_error *err) {
  switch (p->task) {
  case NIC_TASK_BINARY:
  case NIC_TASK_MULTICLASS:
    return plot_roc(p, path, err);
  case NIC_TASK_SURVIVAL:
    return plot_km(p, path, err);
  case NIC_TASK_REGRESSION:
    return plot_scatter(p, path, err);
  }
  return nic_err(err, NIC_EINVAL, "unknown task");
}
