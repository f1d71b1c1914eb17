/* Helpers shared by the metric implementations: input checks and sorting
 * of (key, index) pairs. Private to src/metrics/. */
#ifndef NIC_METRICS_INTERNAL_H
#define NIC_METRICS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "nic/metrics.h"

/* A value and the sample it came from; sorting these instead of indices
 * keeps qsort free of any context pointer. */
typedef struct metrics_key {
  double key;
  size_t idx;
} metrics_key;

/* Sorts by key ascending, ties by index (so results never depend on the
 * qsort implementation). */
void metrics_sort_keys(metrics_key *k, size_t n);

/* NIC_EINVAL naming the first NaN in x[i * stride], i < n. */
nic_status metrics_check_nan(const double *x, size_t n, size_t stride, const char *what,
                             nic_error *err);

/* NIC_EINVAL naming the first NaN or infinity in x[0..n). */
nic_status metrics_check_finite(const double *x, size_t n, const char *what, nic_error *err);

/* NIC_EINVAL naming the first value outside [0, k). */
nic_status metrics_check_classes(const int *x, size_t n, int k, const char *what, nic_error *err);

/* NIC_EINVAL unless every pointer is non-NULL and n > 0; name says which
 * function complains. */
nic_status metrics_check_args(const char *name, size_t n, int nptr, const void *const *ptrs,
                              nic_error *err);

#define METRICS_CHECK(name, n, err, ...)                                                           \
  metrics_check_args(name, n, (int)(sizeof((const void *[]){__VA_ARGS__}) / sizeof(void *)),       \
                     (const void *[]){__VA_ARGS__}, err)

/* AUC of scores[i * stride] for "labels[i] == positive" against the rest;
 * when binary, labels must all be 0 or 1. Shared by nic_auc and the
 * one-vs-rest macro average. */
nic_status metrics_auc_strided(const int *labels, int positive, int binary, const double *scores,
                               size_t stride, size_t n, double *auc, nic_error *err);

#endif
