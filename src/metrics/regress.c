/* Regression metrics and correlations. Sums run in long double and, where
 * a variance is involved, in two passes (mean first, then centred
 * products), which avoids the cancellation of the one-pass formulas. */
#include <math.h>
#include <stdlib.h>

#include "metrics/metrics_internal.h"

nic_status nic_rank_average(const double *x, size_t n, double *ranks, nic_error *err) {
  nic_status s = METRICS_CHECK("rank_average", n, err, x, ranks);
  if (s == NIC_OK) s = metrics_check_nan(x, n, 1, "x", err);
  if (s != NIC_OK) return s;
  metrics_key *k = malloc(n * sizeof *k);
  if (!k) return nic_err(err, NIC_ENOMEM, "out of memory ranking %zu values", n);
  for (size_t i = 0; i < n; i++) k[i] = (metrics_key){x[i], i};
  metrics_sort_keys(k, n);
  /* Sorted positions i..j-1 hold one tied value: ranks i+1..j, mean (i+1+j)/2. */
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && k[j].key == k[i].key) j++;
    double r = 0.5 * ((double)(i + 1) + (double)j);
    for (size_t t = i; t < j; t++) ranks[k[t].idx] = r;
    i = j;
  }
  free(k);
  return NIC_OK;
}

/* Pearson's r without argument checks. */
static nic_status pearson_core(const double *x, const double *y, size_t n, double *r,
                               nic_error *err) {
  long double mx = 0, my = 0;
  for (size_t i = 0; i < n; i++) mx += x[i], my += y[i];
  mx /= n, my /= n;
  long double sxx = 0, syy = 0, sxy = 0;
  for (size_t i = 0; i < n; i++) {
    long double dx = x[i] - mx, dy = y[i] - my;
    sxx += dx * dx, syy += dy * dy, sxy += dx * dy;
  }
  if (sxx == 0 || syy == 0)
    return nic_err(err, NIC_EINVAL, "correlation undefined: %s is constant over %zu samples",
                   sxx == 0 ? "x" : "y", n);
  long double v = sxy / sqrtl(sxx * syy);
  *r = (double)(v > 1 ? 1 : v < -1 ? -1 : v); /* rounding may overshoot by an ulp */
  return NIC_OK;
}

static nic_status check_pair(const char *name, const double *x, const double *y, size_t n,
                             const void *out, nic_error *err) {
  nic_status s = METRICS_CHECK(name, n, err, x, y, out);
  if (s == NIC_OK) s = metrics_check_finite(x, n, "x", err);
  if (s == NIC_OK) s = metrics_check_finite(y, n, "y", err);
  return s;
}

nic_status nic_pearson(const double *x, const double *y, size_t n, double *r, nic_error *err) {
  nic_status s = check_pair("pearson", x, y, n, r, err);
  if (s != NIC_OK) return s;
  return pearson_core(x, y, n, r, err);
}

nic_status nic_spearman(const double *x, const double *y, size_t n, double *rho, nic_error *err) {
  nic_status s = check_pair("spearman", x, y, n, rho, err);
  if (s != NIC_OK) return s;
  double *rx = malloc(2 * n * sizeof *rx);
  if (!rx) return nic_err(err, NIC_ENOMEM, "out of memory ranking %zu pairs", n);
  double *ry = rx + n;
  s = nic_rank_average(x, n, rx, err);
  if (s == NIC_OK) s = nic_rank_average(y, n, ry, err);
  if (s == NIC_OK) s = pearson_core(rx, ry, n, rho, err);
  free(rx);
  return s;
}

nic_status nic_mae(const double *truth, const double *pred, size_t n, double *mae, nic_error *err) {
  nic_status s = check_pair("mae", truth, pred, n, mae, err);
  if (s != NIC_OK) return s;
  long double sum = 0;
  for (size_t i = 0; i < n; i++) sum += fabsl((long double)truth[i] - pred[i]);
  *mae = (double)(sum / n);
  return NIC_OK;
}

nic_status nic_mse(const double *truth, const double *pred, size_t n, double *mse, nic_error *err) {
  nic_status s = check_pair("mse", truth, pred, n, mse, err);
  if (s != NIC_OK) return s;
  long double sum = 0;
  for (size_t i = 0; i < n; i++) {
    long double d = (long double)truth[i] - pred[i];
    sum += d * d;
  }
  *mse = (double)(sum / n);
  return NIC_OK;
}

nic_status nic_r2(const double *truth, const double *pred, size_t n, double *r2, nic_error *err) {
  nic_status s = check_pair("r2", truth, pred, n, r2, err);
  if (s != NIC_OK) return s;
  long double mean = 0;
  for (size_t i = 0; i < n; i++) mean += truth[i];
  mean /= n;
  long double res = 0, tot = 0;
  for (size_t i = 0; i < n; i++) {
    long double d = (long double)truth[i] - pred[i], c = truth[i] - mean;
    res += d * d, tot += c * c;
  }
  if (tot == 0)
    return nic_err(err, NIC_EINVAL, "R^2 undefined: the true values are constant over %zu samples",
                   n);
  *r2 = (double)(1 - res / tot);
  return NIC_OK;
}
