/* One interface over all metrics (nic_metric_data), the percentile
 * bootstrap over any metric callback, and summaries over folds. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics_internal.h"
#include "nic/ctx.h"

static const char *const metric_names[NIC_METRIC_COUNT] = {
    [NIC_METRIC_AUC] = "auc",
    [NIC_METRIC_AUC_MACRO] = "auc_macro",
    [NIC_METRIC_ACCURACY] = "accuracy",
    [NIC_METRIC_BALANCED_ACCURACY] = "balanced_accuracy",
    [NIC_METRIC_KAPPA] = "kappa",
    [NIC_METRIC_KAPPA_LINEAR] = "kappa_linear",
    [NIC_METRIC_KAPPA_QUADRATIC] = "kappa_quadratic",
    [NIC_METRIC_PEARSON] = "pearson",
    [NIC_METRIC_SPEARMAN] = "spearman",
    [NIC_METRIC_MAE] = "mae",
    [NIC_METRIC_MSE] = "mse",
    [NIC_METRIC_R2] = "r2",
    [NIC_METRIC_CINDEX] = "cindex",
};

const char *nic_metric_name(nic_metric m) {
  return (int)m >= 0 && (int)m < NIC_METRIC_COUNT ? metric_names[m] : "unknown";
}

nic_status nic_metric_from_name(const char *name, nic_metric *m, nic_error *err) {
  for (int i = 0; name && i < NIC_METRIC_COUNT; i++)
    if (!strcmp(name, metric_names[i])) {
      *m = (nic_metric)i;
      return NIC_OK;
    }
  return nic_err(err, NIC_EINVAL, "unknown metric '%s'", name ? name : "(null)");
}

/* ---- Evaluating a metric on a subset ---- */

/* The rows idx[0..m) of a column of `width` values per sample, copied into
 * *out; with idx NULL the column itself is used (nothing to free). */
static nic_status gather(const void *src, size_t elem, size_t width, const size_t *idx, size_t m,
                         const void **out, void **owned, nic_error *err) {
  *owned = NULL;
  *out = src;
  if (!idx || !src) return NIC_OK;
  size_t row = elem * width;
  char *dst = malloc(m * row + 1);
  if (!dst) return nic_err(err, NIC_ENOMEM, "out of memory gathering %zu samples", m);
  for (size_t i = 0; i < m; i++) memcpy(dst + i * row, (const char *)src + idx[i] * row, row);
  *out = dst;
  *owned = dst;
  return NIC_OK;
}

/* Column slots of nic_metric_data, in gather order. */
enum { COL_LABELS, COL_PRED, COL_EVENT, COL_SCORE, COL_YTRUE, COL_YPRED, COL_TIME, COL_RISK, NCOL };

static nic_status dispatch(const nic_metric_data *d, const void *const *c, size_t m, double *v,
                           nic_error *err) {
  const int *lab = c[COL_LABELS], *pred = c[COL_PRED], *ev = c[COL_EVENT];
  const double *sc = c[COL_SCORE], *yt = c[COL_YTRUE], *yp = c[COL_YPRED];
  switch (d->metric) {
  case NIC_METRIC_AUC:
    return nic_auc(lab, sc, m, v, err);
  case NIC_METRIC_AUC_MACRO:
    return nic_auc_ovr_macro(lab, sc, m, d->k, v, NULL, err);
  case NIC_METRIC_ACCURACY:
    return nic_accuracy(lab, pred, m, v, err);
  case NIC_METRIC_BALANCED_ACCURACY:
    return nic_balanced_accuracy(lab, pred, m, d->k, v, err);
  case NIC_METRIC_KAPPA:
    return nic_cohen_kappa(lab, pred, m, d->k, NIC_KAPPA_UNWEIGHTED, v, err);
  case NIC_METRIC_KAPPA_LINEAR:
    return nic_cohen_kappa(lab, pred, m, d->k, NIC_KAPPA_LINEAR, v, err);
  case NIC_METRIC_KAPPA_QUADRATIC:
    return nic_cohen_kappa(lab, pred, m, d->k, NIC_KAPPA_QUADRATIC, v, err);
  case NIC_METRIC_PEARSON:
    return nic_pearson(yt, yp, m, v, err);
  case NIC_METRIC_SPEARMAN:
    return nic_spearman(yt, yp, m, v, err);
  case NIC_METRIC_MAE:
    return nic_mae(yt, yp, m, v, err);
  case NIC_METRIC_MSE:
    return nic_mse(yt, yp, m, v, err);
  case NIC_METRIC_R2:
    return nic_r2(yt, yp, m, v, err);
  case NIC_METRIC_CINDEX:
    return nic_cindex(c[COL_TIME], ev, c[COL_RISK], m, v, NULL, err);
  default:
    return nic_err(err, NIC_EINVAL, "unknown metric %d", (int)d->metric);
  }
}

nic_status nic_metric_eval(const nic_metric_data *d, const size_t *idx, size_t m, double *value,
                           nic_error *err) {
  if (!d || !value) return nic_err(err, NIC_EINVAL, "metric_eval: NULL argument");
  if (!idx) m = d->n;
  for (size_t i = 0; idx && i < m; i++)
    if (idx[i] >= d->n)
      return nic_err(err, NIC_EINVAL, "metric_eval: index %zu out of range (n = %zu)", idx[i],
                     d->n);
  /* Per-class scores have k per sample, but only for the macro AUC. */
  size_t sw = d->metric == NIC_METRIC_AUC_MACRO && d->k > 0 ? (size_t)d->k : 1;
  const void *src[NCOL] = {d->labels, d->pred,   d->event, d->score,
                           d->y_true, d->y_pred, d->time,  d->risk};
  const size_t elem[NCOL] = {sizeof(int),    sizeof(int),    sizeof(int),    sizeof(double),
                             sizeof(double), sizeof(double), sizeof(double), sizeof(double)};
  const void *col[NCOL];
  void *owned[NCOL] = {0};
  nic_status s = NIC_OK;
  for (int c = 0; c < NCOL && s == NIC_OK; c++)
    s = gather(src[c], elem[c], c == COL_SCORE ? sw : 1, idx, m, &col[c], &owned[c], err);
  if (s == NIC_OK) s = dispatch(d, col, m, value, err);
  for (int c = 0; c < NCOL; c++) free(owned[c]);
  return s;
}

nic_status nic_metric_fn_data(void *user, const size_t *idx, size_t m, double *value,
                              nic_error *err) {
  return nic_metric_eval(user, idx, m, value, err);
}

/* ---- Bootstrap ---- */

nic_bootstrap_opts nic_bootstrap_default_opts(void) {
  return (nic_bootstrap_opts){.resamples = 1000, .seed = 1, .level = 0.95, .max_undefined = -1};
}

/* Samples grouped by stratum: order[] lists sample indices stratum by
 * stratum, stratum s spanning order[start[s] .. start[s + 1]). */
typedef struct strata_index {
  size_t *order, *start;
  size_t count;
} strata_index;

static nic_status strata_build(const int *strata, size_t n, strata_index *si, nic_error *err) {
  metrics_key *k = malloc(n * sizeof *k);
  si->order = malloc(n * sizeof *si->order);
  si->start = malloc((n + 1) * sizeof *si->start);
  if (!k || !si->order || !si->start) {
    free(k);
    return nic_err(err, NIC_ENOMEM, "out of memory for bootstrap strata");
  }
  for (size_t i = 0; i < n; i++) k[i] = (metrics_key){(double)strata[i], i};
  metrics_sort_keys(k, n);
  si->count = 0;
  for (size_t i = 0; i < n; i++) {
    if (i == 0 || k[i].key != k[i - 1].key) si->start[si->count++] = i;
    si->order[i] = k[i].idx;
  }
  si->start[si->count] = n;
  free(k);
  return NIC_OK;
}

/* Fills idx[0..n) with one resample: n draws with replacement, or, with
 * strata, as many draws from each stratum as it has members. */
static void draw_resample(nic_rng *r, const strata_index *si, size_t n, size_t *idx) {
  if (!si->order) {
    for (size_t i = 0; i < n; i++) idx[i] = (size_t)nic_rng_below(r, n);
    return;
  }
  for (size_t s = 0; s < si->count; s++) {
    size_t b = si->start[s], len = si->start[s + 1] - b;
    for (size_t j = b; j < b + len; j++) idx[j] = si->order[b + (size_t)nic_rng_below(r, len)];
  }
}

static int cmp_double(const void *pa, const void *pb) {
  double a = *(const double *)pa, b = *(const double *)pb;
  return (a > b) - (a < b);
}

/* Quantile p of sorted v[0..m) with linear interpolation between order
 * statistics (numpy's default, R's type 7). */
static double quantile_sorted(const double *v, size_t m, double p) {
  double h = (double)(m - 1) * p;
  size_t i = (size_t)floor(h);
  if (i + 1 >= m) return v[m - 1];
  return v[i] + (h - (double)i) * (v[i + 1] - v[i]);
}

static nic_status check_opts(const nic_bootstrap_opts *o, nic_error *err) {
  if (o->resamples < 2)
    return nic_err(err, NIC_EINVAL, "bootstrap: need at least 2 resamples, got %d", o->resamples);
  if (!(o->level > 0 && o->level < 1))
    return nic_err(err, NIC_EINVAL, "bootstrap: level %g is not in (0, 1)", o->level);
  return NIC_OK;
}

/* Collects o->resamples values of fn over resamples into vals, redrawing
 * undefined ones (counted in *undefined). */
static nic_status collect(nic_metric_fn fn, void *user, size_t n, const nic_bootstrap_opts *o,
                          const strata_index *si, size_t *idx, double *vals, long *undefined,
                          nic_error *err) {
  long max_undef = o->max_undefined < 0 ? o->resamples : o->max_undefined;
  nic_rng rng;
  nic_rng_seed(&rng, o->seed);
  *undefined = 0;
  for (int got = 0; got < o->resamples;) {
    draw_resample(&rng, si, n, idx);
    nic_error e = {0};
    double v = NAN;
    nic_status s = fn(user, idx, n, &v, &e);
    if (s == NIC_OK && !isnan(v)) {
      vals[got++] = v;
      continue;
    }
    if (s != NIC_OK && s != NIC_EINVAL) /* a real failure, not an undefined resample */
      return nic_err(err, s, "bootstrap: %s", e.msg);
    if (++*undefined > max_undef)
      return nic_err(
          err, NIC_EINVAL,
          "bootstrap: the metric was undefined on %ld resamples (%d collected), last: %s",
          *undefined, got, s == NIC_OK ? "NaN" : e.msg);
  }
  return NIC_OK;
}

/* The percentile interval and standard error of R resampled values
 * (sorted here). */
static void summarize_resamples(double *vals, size_t R, double level, nic_interval *out) {
  qsort(vals, R, sizeof *vals, cmp_double);
  long double mean = 0, ss = 0;
  for (size_t i = 0; i < R; i++) mean += vals[i];
  mean /= R;
  for (size_t i = 0; i < R; i++) ss += (vals[i] - mean) * (vals[i] - mean);
  out->lo = quantile_sorted(vals, R, 0.5 * (1 - level));
  out->hi = quantile_sorted(vals, R, 0.5 * (1 + level));
  out->se = (double)sqrtl(ss / (R - 1));
  out->level = level;
  out->resamples = (int)R;
}

nic_status nic_bootstrap(nic_metric_fn fn, void *user, size_t n, const nic_bootstrap_opts *opts,
                         nic_interval *out, nic_error *err) {
  nic_bootstrap_opts o = opts ? *opts : nic_bootstrap_default_opts();
  if (!fn || !out) return nic_err(err, NIC_EINVAL, "bootstrap: NULL argument");
  if (n == 0) return nic_err(err, NIC_EINVAL, "bootstrap: no samples (n = 0)");
  nic_status s = check_opts(&o, err);
  if (s != NIC_OK) return s;
  size_t *idx = malloc(n * sizeof *idx);
  double *vals = malloc((size_t)o.resamples * sizeof *vals), est = 0;
  strata_index si = {0};
  long undefined = 0;
  if (!idx || !vals) s = nic_err(err, NIC_ENOMEM, "bootstrap: out of memory");
  if (s == NIC_OK) {
    for (size_t i = 0; i < n; i++) idx[i] = i;
    if ((s = fn(user, idx, n, &est, err)) != NIC_OK)
      nic_err_prefix(err, "bootstrap: on the full sample: ");
  }
  if (s == NIC_OK && o.strata) s = strata_build(o.strata, n, &si, err);
  if (s == NIC_OK) s = collect(fn, user, n, &o, &si, idx, vals, &undefined, err);
  if (s == NIC_OK) {
    summarize_resamples(vals, (size_t)o.resamples, o.level, out);
    out->estimate = est;
    out->undefined = (int)undefined;
  }
  free(idx);
  free(vals);
  free(si.order);
  free(si.start);
  return s;
}

/* ---- Summaries over folds ---- */

nic_status nic_summarize(const double *values, int n, nic_summary *out, nic_error *err) {
  if (!values || !out) return nic_err(err, NIC_EINVAL, "summarize: NULL argument");
  if (n <= 0) return nic_err(err, NIC_EINVAL, "summarize: no values");
  nic_status s = metrics_check_finite(values, (size_t)n, "values", err);
  if (s != NIC_OK) return s;
  long double mean = 0, ss = 0;
  double lo = values[0], hi = values[0];
  for (int i = 0; i < n; i++) {
    mean += values[i];
    lo = fmin(lo, values[i]), hi = fmax(hi, values[i]);
  }
  mean /= n;
  for (int i = 0; i < n; i++) ss += (values[i] - mean) * (values[i] - mean);
  *out = (nic_summary){.n = n,
                       .mean = (double)mean,
                       .sd = n > 1 ? (double)sqrtl(ss / (n - 1)) : 0.0,
                       .min = lo,
                       .max = hi};
  return NIC_OK;
}
