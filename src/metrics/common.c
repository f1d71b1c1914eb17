/* Input checks and sorting shared by the metrics. */
#include <math.h>
#include <stdlib.h>

#include "metrics/metrics_internal.h"

static int cmp_key(const void *pa, const void *pb) {
  const metrics_key *a = pa, *b = pb;
  if (a->key < b->key) return -1;
  if (a->key > b->key) return 1;
  return (a->idx > b->idx) - (a->idx < b->idx);
}

void metrics_sort_keys(metrics_key *k, size_t n) {
  if (n > 1) qsort(k, n, sizeof *k, cmp_key);
}

nic_status metrics_check_nan(const double *x, size_t n, size_t stride, const char *what,
                             nic_error *err) {
  for (size_t i = 0; i < n; i++)
    if (isnan(x[i * stride])) return nic_err(err, NIC_EINVAL, "%s[%zu] is NaN", what, i);
  return NIC_OK;
}

nic_status metrics_check_finite(const double *x, size_t n, const char *what, nic_error *err) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i]))
      return nic_err(err, NIC_EINVAL, "%s[%zu] = %g is not finite", what, i, x[i]);
  return NIC_OK;
}

nic_status metrics_check_classes(const int *x, size_t n, int k, const char *what, nic_error *err) {
  for (size_t i = 0; i < n; i++)
    if (x[i] < 0 || x[i] >= k)
      return nic_err(err, NIC_EINVAL, "%s[%zu] = %d is not a class in [0, %d)", what, i, x[i], k);
  return NIC_OK;
}

nic_status metrics_check_args(const char *name, size_t n, int nptr, const void *const *ptrs,
                              nic_error *err) {
  for (int i = 0; i < nptr; i++)
    if (!ptrs[i]) return nic_err(err, NIC_EINVAL, "%s: NULL argument", name);
  if (n == 0) return nic_err(err, NIC_EINVAL, "%s: no samples (n = 0)", name);
  return NIC_OK;
}
