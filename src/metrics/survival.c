/* Survival metrics: Harrell's c-index (O(n log n) with a Fenwick tree),
 * the Kaplan-Meier estimator, the log-rank test for k groups, and the
 * chi-square tail probability the test needs. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics_internal.h"

/* Times must be finite, events 0 or 1. */
static nic_status check_survival(const double *time, const int *event, size_t n, nic_error *err) {
  nic_status s = metrics_check_finite(time, n, "time", err);
  if (s != NIC_OK) return s;
  for (size_t i = 0; i < n; i++)
    if (event[i] != 0 && event[i] != 1)
      return nic_err(err, NIC_EINVAL, "event[%zu] = %d is not 0 (censored) or 1 (event)", i,
                     event[i]);
  return NIC_OK;
}

/* Subjects sorted by time, ascending. */
static nic_status sort_by_time(const double *time, size_t n, metrics_key **out, nic_error *err) {
  metrics_key *k = malloc(n * sizeof *k);
  if (!k) return nic_err(err, NIC_ENOMEM, "out of memory sorting %zu times", n);
  for (size_t i = 0; i < n; i++) k[i] = (metrics_key){time[i], i};
  metrics_sort_keys(k, n);
  *out = k;
  return NIC_OK;
}

/* ---- Harrell's c-index ---- */

/* Fenwick (binary indexed) tree of counts over risk ranks 1..m: adding a
 * subject and counting subjects with rank <= r both cost O(log m). */
static void fenwick_add(int64_t *t, size_t m, size_t r) {
  for (; r <= m; r += r & (~r + 1)) t[r]++;
}

static int64_t fenwick_prefix(const int64_t *t, size_t r) {
  int64_t s = 0;
  for (; r > 0; r -= r & (~r + 1)) s += t[r];
  return s;
}

/* rank[i] in 1..m: the position of risk[i] among the distinct risks. */
static nic_status risk_ranks(const double *risk, size_t n, size_t *rank, size_t *m,
                             nic_error *err) {
  metrics_key *k = malloc(n * sizeof *k);
  if (!k) return nic_err(err, NIC_ENOMEM, "out of memory ranking %zu risks", n);
  for (size_t i = 0; i < n; i++) k[i] = (metrics_key){risk[i], i};
  metrics_sort_keys(k, n);
  size_t r = 0;
  for (size_t i = 0; i < n; i++) {
    if (i == 0 || k[i].key != k[i - 1].key) r++;
    rank[k[i].idx] = r;
  }
  free(k);
  *m = r;
  return NIC_OK;
}

/* Counts the pairs of subjects sorted by time (k) with risk ranks in
 * 1..m. Walks groups of equal time from the latest down. The tree holds
 * every subject known to outlive the current event time: those with a
 * later time, and the current group's censored subjects, which are
 * inserted before its events are counted. The group's events go in
 * afterwards, so tied events are never paired with each other. */
static nic_cindex_counts count_pairs(const metrics_key *k, const int *event, const size_t *rank,
                                     size_t n, size_t m, int64_t *tree) {
  nic_cindex_counts cc = {0};
  int64_t in_tree = 0;
  for (size_t end = n; end > 0;) {
    size_t beg = end;
    while (beg > 0 && k[beg - 1].key == k[end - 1].key) beg--;
    for (size_t t = beg; t < end; t++)
      if (!event[k[t].idx]) fenwick_add(tree, m, rank[k[t].idx]), in_tree++;
    for (size_t t = beg; t < end; t++) {
      size_t i = k[t].idx;
      if (!event[i]) continue;
      int64_t below = fenwick_prefix(tree, rank[i] - 1); /* outlivers with lower risk */
      int64_t tied = fenwick_prefix(tree, rank[i]) - below;
      cc.comparable += in_tree;
      cc.concordant += below;
      cc.tied_risk += tied;
      cc.discordant += in_tree - below - tied;
    }
    for (size_t t = beg; t < end; t++)
      if (event[k[t].idx]) fenwick_add(tree, m, rank[k[t].idx]), in_tree++;
    end = beg;
  }
  return cc;
}

nic_status nic_cindex(const double *time, const int *event, const double *risk, size_t n, double *c,
                      nic_cindex_counts *counts, nic_error *err) {
  nic_status s = METRICS_CHECK("cindex", n, err, time, event, risk, c);
  if (s == NIC_OK) s = check_survival(time, event, n, err);
  if (s == NIC_OK) s = metrics_check_nan(risk, n, 1, "risk", err);
  if (s != NIC_OK) return s;
  size_t *rank = malloc(n * sizeof *rank), m = 0;
  int64_t *tree = calloc(n + 1, sizeof *tree);
  metrics_key *k = NULL;
  if (!rank || !tree)
    s = nic_err(err, NIC_ENOMEM, "out of memory for the c-index of %zu subjects", n);
  if (s == NIC_OK) s = risk_ranks(risk, n, rank, &m, err);
  if (s == NIC_OK) s = sort_by_time(time, n, &k, err);
  if (s == NIC_OK) {
    nic_cindex_counts cc = count_pairs(k, event, rank, n, m, tree);
    if (counts) *counts = cc;
    if (cc.comparable > 0)
      *c = (double)(((long double)cc.concordant + 0.5L * cc.tied_risk) / cc.comparable);
    else
      s = nic_err(err, NIC_EINVAL,
                  "c-index undefined: no comparable pair (no event before another subject's time)");
  }
  free(rank);
  free(tree);
  free(k);
  return s;
}

/* ---- Kaplan-Meier ---- */

void nic_km_free(nic_km *km) {
  if (!km) return;
  free(km->time);
  free(km->at_risk);
  free(km->events);
  free(km->censored);
  free(km->surv);
  free(km->se);
  memset(km, 0, sizeof *km);
}

static nic_status km_alloc(nic_km *km, size_t rows, nic_error *err) {
  km->time = malloc(rows * sizeof *km->time);
  km->at_risk = malloc(rows * sizeof *km->at_risk);
  km->events = malloc(rows * sizeof *km->events);
  km->censored = malloc(rows * sizeof *km->censored);
  km->surv = malloc(rows * sizeof *km->surv);
  km->se = malloc(rows * sizeof *km->se);
  if (km->time && km->at_risk && km->events && km->censored && km->surv && km->se) return NIC_OK;
  nic_km_free(km);
  return nic_err(err, NIC_ENOMEM, "out of memory for a Kaplan-Meier table of %zu rows", rows);
}

nic_status nic_km_fit(const double *time, const int *event, size_t n, nic_km *km, nic_error *err) {
  nic_status s = METRICS_CHECK("km_fit", n, err, time, event, km);
  if (s != NIC_OK) return s;
  memset(km, 0, sizeof *km);
  if ((s = check_survival(time, event, n, err)) != NIC_OK) return s;
  metrics_key *k = NULL;
  if ((s = sort_by_time(time, n, &k, err)) != NIC_OK) return s;
  size_t rows = 0;
  for (size_t i = 0; i < n; i++) rows += i == 0 || k[i].key != k[i - 1].key;
  if ((s = km_alloc(km, rows, err)) != NIC_OK) {
    free(k);
    return s;
  }
  /* S(t) = prod over event times t_i <= t of (1 - d_i / n_i); Greenwood:
   * Var S = S^2 sum d_i / (n_i (n_i - d_i)). */
  long double surv = 1, green = 0;
  size_t row = 0;
  int64_t at_risk = (int64_t)n;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    int64_t d = 0;
    for (; j < n && k[j].key == k[i].key; j++) d += event[k[j].idx];
    int64_t all = (int64_t)(j - i);
    if (d > 0) {
      surv *= 1 - (long double)d / at_risk;
      green += d < at_risk ? (long double)d / ((long double)at_risk * (at_risk - d)) : INFINITY;
    }
    km->time[row] = k[i].key;
    km->at_risk[row] = at_risk;
    km->events[row] = d;
    km->censored[row] = all - d;
    km->surv[row] = (double)surv;
    km->se[row] = isinf(green) ? NAN : (double)(surv * sqrtl(green));
    row++;
    at_risk -= all;
    i = j;
  }
  free(k);
  km->n = rows;
  km->total = (int64_t)n;
  return NIC_OK;
}

/* Index of the last row with time <= t, or -1 when t precedes them all. */
static long km_row_at(const nic_km *km, double t) {
  size_t lo = 0, hi = km->n; /* first row with time > t is in [lo, hi] */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (km->time[mid] <= t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return (long)lo - 1;
}

double nic_km_surv_at(const nic_km *km, double t) {
  if (!km || km->n == 0 || isnan(t)) return NAN;
  long r = km_row_at(km, t);
  return r < 0 ? 1.0 : km->surv[r];
}

int64_t nic_km_at_risk_at(const nic_km *km, double t) {
  if (!km || km->n == 0) return 0;
  long r = km_row_at(km, t);
  /* At risk at t: subjects whose time is >= t, i.e. those of the first
   * row with time >= t and every later one. */
  size_t first = r >= 0 && km->time[r] == t ? (size_t)r : (size_t)(r + 1);
  return first < km->n ? km->at_risk[first] : 0;
}

double nic_km_median(const nic_km *km) {
  if (!km) return NAN;
  for (size_t i = 0; i < km->n; i++)
    if (km->surv[i] <= 0.5) return km->time[i];
  return NAN;
}

/* ---- Log-rank ---- */

/* Solves A x = b (A: m x m, row-major, overwritten) by Gaussian elimination
 * with partial pivoting; b becomes x. Fails when A is (near) singular. */
static int solve(long double *a, long double *b, int m) {
  long double scale = 0;
  for (int i = 0; i < m * m; i++) scale = fmaxl(scale, fabsl(a[i]));
  for (int c = 0; c < m; c++) {
    int p = c;
    for (int r = c + 1; r < m; r++)
      if (fabsl(a[r * m + c]) > fabsl(a[p * m + c])) p = r;
    if (!(fabsl(a[p * m + c]) > scale * 1e-12L)) return -1;
    if (p != c) {
      for (int j = 0; j < m; j++) {
        long double t = a[c * m + j];
        a[c * m + j] = a[p * m + j], a[p * m + j] = t;
      }
      long double t = b[c];
      b[c] = b[p], b[p] = t;
    }
    for (int r = c + 1; r < m; r++) {
      long double f = a[r * m + c] / a[c * m + c];
      for (int j = c; j < m; j++) a[r * m + j] -= f * a[c * m + j];
      b[r] -= f * b[c];
    }
  }
  for (int c = m - 1; c >= 0; c--) {
    for (int j = c + 1; j < m; j++) b[c] -= a[c * m + j] * b[j];
    b[c] /= a[c * m + c];
  }
  return 0;
}

/* Working state of the log-rank test over the G non-empty groups. */
typedef struct logrank_acc {
  int G;
  int *map;                     /* group in [0, k) -> its index in 0..G-1, or -1 if empty */
  int64_t *risk;                /* at risk per group */
  int64_t *dead, *gone;         /* events and all exits per group at the current time */
  long double *obs, *exp, *var; /* O, E (G), V (G x G) */
  long double *work;            /* G * (G + 1) for the solve */
} logrank_acc;

static void logrank_free(logrank_acc *a) {
  free(a->map);
  free(a->risk);
  free(a->obs);
  free(a->work);
}

/* Finds the non-empty groups and sizes the accumulators for them. */
static nic_status logrank_init(logrank_acc *a, const int *group, size_t n, int k, nic_error *err) {
  memset(a, 0, sizeof *a);
  int64_t *size = calloc((size_t)k, sizeof *size);
  a->map = malloc((size_t)k * sizeof *a->map);
  if (!size || !a->map) {
    free(size);
    return nic_err(err, NIC_ENOMEM, "logrank: out of memory");
  }
  for (size_t i = 0; i < n; i++) size[group[i]]++;
  for (int g = 0; g < k; g++) a->map[g] = size[g] ? a->G++ : -1;
  size_t G = (size_t)a->G;
  if (G < 2) {
    free(size);
    return nic_err(err, NIC_EINVAL, "logrank: need two non-empty groups, have %zu", G);
  }
  a->risk = calloc(3 * G, sizeof *a->risk);
  a->obs = calloc(G * (G + 2), sizeof *a->obs);
  a->work = malloc(G * (G + 1) * sizeof *a->work);
  if (!a->risk || !a->obs || !a->work) {
    free(size);
    return nic_err(err, NIC_ENOMEM, "logrank: out of memory");
  }
  a->dead = a->risk + G, a->gone = a->dead + G;
  a->exp = a->obs + G, a->var = a->exp + G;
  for (int g = 0; g < k; g++)
    if (a->map[g] >= 0) a->risk[a->map[g]] = size[g];
  free(size);
  return NIC_OK;
}

/* Adds the contribution of one distinct time with d events among N at risk. */
static void logrank_step(logrank_acc *a, int64_t d, int64_t N) {
  int G = a->G;
  for (int g = 0; g < G; g++) {
    long double fg = (long double)a->risk[g] / N;
    a->obs[g] += a->dead[g];
    a->exp[g] += d * fg;
    if (N < 2) continue;
    /* Hypergeometric covariance of the event counts: d (N - d) / (N - 1)
     * times the multinomial covariance of the at-risk fractions. */
    long double h = (long double)d * (N - d) / (N - 1);
    for (int j = 0; j < G; j++) {
      long double fj = (long double)a->risk[j] / N;
      a->var[g * G + j] += h * fg * ((g == j) - fj);
    }
  }
}

/* Walks the subjects sorted by time (k), one distinct time at a time;
 * returns the number of events. */
static int64_t logrank_walk(logrank_acc *a, const metrics_key *k, const int *event,
                            const int *group, size_t n) {
  int64_t N = (int64_t)n, total = 0;
  for (size_t i = 0; i < n;) {
    memset(a->dead, 0, 2 * (size_t)a->G * sizeof *a->dead); /* dead and gone */
    int64_t d = 0;
    size_t j = i;
    for (; j < n && k[j].key == k[i].key; j++) {
      size_t idx = k[j].idx;
      int g = a->map[group[idx]];
      a->dead[g] += event[idx];
      a->gone[g]++;
      d += event[idx];
    }
    if (d > 0) logrank_step(a, d, N);
    for (int g = 0; g < a->G; g++) a->risk[g] -= a->gone[g];
    N -= (int64_t)(j - i);
    total += d;
    i = j;
  }
  return total;
}

/* chi2 = z' V^-1 z over the first G - 1 groups (the last is implied: O - E
 * sums to 0 over all groups). Returns -1 when V is singular. */
static int logrank_chi2(logrank_acc *a, long double *chi2) {
  int G = a->G, m = G - 1;
  long double *v = a->work, *x = v + (size_t)m * m, *z = x + m;
  for (int g = 0; g < m; g++) {
    z[g] = x[g] = a->obs[g] - a->exp[g];
    for (int j = 0; j < m; j++) v[g * m + j] = a->var[g * G + j];
  }
  if (solve(v, x, m) != 0) return -1;
  *chi2 = 0;
  for (int g = 0; g < m; g++) *chi2 += z[g] * x[g];
  return 0;
}

nic_status nic_logrank(const double *time, const int *event, const int *group, size_t n, int k,
                       nic_logrank_result *res, double *observed, double *expected,
                       nic_error *err) {
  nic_status s = METRICS_CHECK("logrank", n, err, time, event, group, res);
  if (s != NIC_OK) return s;
  if (k < 2 || k > 4096) return nic_err(err, NIC_EINVAL, "logrank: bad number of groups %d", k);
  if ((s = check_survival(time, event, n, err)) != NIC_OK) return s;
  if ((s = metrics_check_classes(group, n, k, "group", err)) != NIC_OK) return s;
  logrank_acc a;
  metrics_key *keys = NULL;
  long double chi2 = 0;
  s = logrank_init(&a, group, n, k, err);
  if (s == NIC_OK) s = sort_by_time(time, n, &keys, err);
  if (s == NIC_OK && logrank_walk(&a, keys, event, group, n) == 0)
    s = nic_err(err, NIC_EINVAL, "logrank: no events, the test is undefined");
  if (s == NIC_OK && logrank_chi2(&a, &chi2) != 0)
    s = nic_err(err, NIC_EINVAL,
                "logrank: singular variance (a group has no one at risk at any event time)");
  if (s == NIC_OK) {
    res->chi2 = (double)(chi2 < 0 ? 0 : chi2);
    res->df = a.G - 1;
    res->p = nic_chi2_sf(res->chi2, res->df);
    for (int g = 0; g < k; g++) {
      if (observed) observed[g] = a.map[g] >= 0 ? (double)a.obs[a.map[g]] : 0;
      if (expected) expected[g] = a.map[g] >= 0 ? (double)a.exp[a.map[g]] : 0;
    }
  }
  logrank_free(&a);
  free(keys);
  return s;
}

/* ---- Chi-square tail ---- */

/* Regularized upper incomplete gamma Q(a, x) for a > 0, x > 0: the power
 * series of P = 1 - Q when x < a + 1, where it converges fast, else the
 * continued fraction for Q (modified Lentz), which does there. */
static double gamma_q(double a, double x) {
  int sign;
  double lg = lgamma_r(a, &sign); /* lgamma() would write the global signgam */
  double front = exp(-x + a * log(x) - lg);
  if (x < a + 1) {
    double term = 1 / a, sum = term;
    for (int n = 1; n < 10000; n++) {
      term *= x / (a + n);
      sum += term;
      if (fabs(term) < fabs(sum) * DBL_EPSILON) break;
    }
    double q = 1 - sum * front;
    return q < 0 ? 0 : q;
  }
  const double tiny = DBL_MIN / DBL_EPSILON;
  double b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
  for (int i = 1; i < 10000; i++) {
    double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (fabs(c) < tiny) c = tiny;
    d = 1 / d;
    double del = d * c;
    h *= del;
    if (fabs(del - 1) < DBL_EPSILON) break;
  }
  return front * h;
}

double nic_chi2_sf(double x, double df) {
  if (isnan(x) || !(df > 0)) return NAN;
  if (x <= 0) return 1;
  if (isinf(x)) return 0;
  return gamma_q(0.5 * df, 0.5 * x);
}
