/* Classification metrics: ROC AUC (exact with ties), the ROC curve,
 * one-vs-rest macro AUC, accuracy, balanced accuracy, confusion matrix and
 * Cohen's kappa. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics_internal.h"

/* Sorts (score, sample) pairs for the AUC and the ROC curve. */
static nic_status sorted_scores(const double *scores, size_t stride, size_t n, metrics_key **out,
                                nic_error *err) {
  metrics_key *k = malloc(n * sizeof *k);
  if (!k) return nic_err(err, NIC_ENOMEM, "out of memory sorting %zu scores", n);
  for (size_t i = 0; i < n; i++) k[i] = (metrics_key){scores[i * stride], i};
  metrics_sort_keys(k, n);
  *out = k;
  return NIC_OK;
}

/* Counts positives, checking binary labels when asked. */
static nic_status count_positives(const int *labels, int positive, int binary, size_t n,
                                  size_t *npos, nic_error *err) {
  size_t p = 0;
  for (size_t i = 0; i < n; i++) {
    if (binary && labels[i] != 0 && labels[i] != 1)
      return nic_err(err, NIC_EINVAL, "labels[%zu] = %d is not 0 or 1", i, labels[i]);
    p += labels[i] == positive;
  }
  *npos = p;
  return NIC_OK;
}

nic_status metrics_auc_strided(const int *labels, int positive, int binary, const double *scores,
                               size_t stride, size_t n, double *auc, nic_error *err) {
  size_t npos = 0;
  nic_status s = count_positives(labels, positive, binary, n, &npos, err);
  if (s == NIC_OK) s = metrics_check_nan(scores, n, stride, "scores", err);
  if (s != NIC_OK) return s;
  size_t nneg = n - npos;
  if (npos == 0 || nneg == 0)
    return nic_err(err, NIC_EINVAL,
                   "AUC undefined: only one class present (%zu positive, %zu negative)", npos,
                   nneg);
  metrics_key *k = NULL;
  if ((s = sorted_scores(scores, stride, n, &k, err)) != NIC_OK) return s;
  /* Twice the Mann-Whitney U, as an exact integer: walking groups of equal
   * scores upwards, each positive beats every negative below its group and
   * ties with the negatives inside it (worth 1/2, hence the doubling). */
  uint64_t u2 = 0, neg_below = 0;
  for (size_t i = 0; i < n;) {
    uint64_t p = 0, q = 0;
    size_t j = i;
    for (; j < n && k[j].key == k[i].key; j++) {
      if (labels[k[j].idx] == positive)
        p++;
      else
        q++;
    }
    u2 += 2 * p * neg_below + p * q;
    neg_below += q;
    i = j;
  }
  free(k);
  *auc = (double)((long double)u2 / (2.0L * (long double)npos * (long double)nneg));
  return NIC_OK;
}

nic_status nic_auc(const int *labels, const double *scores, size_t n, double *auc, nic_error *err) {
  nic_status s = METRICS_CHECK("auc", n, err, labels, scores, auc);
  if (s != NIC_OK) return s;
  return metrics_auc_strided(labels, 1, 1, scores, 1, n, auc, err);
}

void nic_roc_free(nic_roc *roc) {
  if (!roc) return;
  free(roc->fpr);
  free(roc->tpr);
  free(roc->threshold);
  memset(roc, 0, sizeof *roc);
}

nic_status nic_roc_curve(const int *labels, const double *scores, size_t n, nic_roc *roc,
                         nic_error *err) {
  nic_status s = METRICS_CHECK("roc_curve", n, err, labels, scores, roc);
  if (s != NIC_OK) return s;
  memset(roc, 0, sizeof *roc);
  double auc;
  if ((s = metrics_auc_strided(labels, 1, 1, scores, 1, n, &auc, err)) != NIC_OK) return s;
  metrics_key *k = NULL;
  if ((s = sorted_scores(scores, 1, n, &k, err)) != NIC_OK) return s;
  size_t npos = 0;
  for (size_t i = 0; i < n; i++) npos += labels[i] == 1;
  size_t nneg = n - npos, cap = n + 1;
  roc->fpr = malloc(cap * sizeof(double));
  roc->tpr = malloc(cap * sizeof(double));
  roc->threshold = malloc(cap * sizeof(double));
  if (!roc->fpr || !roc->tpr || !roc->threshold) {
    free(k);
    nic_roc_free(roc);
    return nic_err(err, NIC_ENOMEM, "out of memory for a ROC curve of %zu points", cap);
  }
  /* Lower the threshold one distinct score at a time, from the top. */
  size_t m = 0, tp = 0, fp = 0;
  roc->fpr[m] = 0, roc->tpr[m] = 0, roc->threshold[m] = INFINITY;
  m++;
  for (size_t end = n; end > 0;) {
    size_t j = end;
    double v = k[end - 1].key;
    for (; j > 0 && k[j - 1].key == v; j--) {
      if (labels[k[j - 1].idx] == 1)
        tp++;
      else
        fp++;
    }
    roc->fpr[m] = (double)fp / (double)nneg;
    roc->tpr[m] = (double)tp / (double)npos;
    roc->threshold[m] = v;
    m++;
    end = j;
  }
  free(k);
  roc->n = m;
  roc->auc = auc;
  return NIC_OK;
}

nic_status nic_auc_ovr_macro(const int *labels, const double *scores, size_t n, int k, double *auc,
                             double *per_class, nic_error *err) {
  nic_status s = METRICS_CHECK("auc_ovr_macro", n, err, labels, scores, auc);
  if (s != NIC_OK) return s;
  if (k < 2) return nic_err(err, NIC_EINVAL, "auc_ovr_macro: need k >= 2 classes, got %d", k);
  if ((s = metrics_check_classes(labels, n, k, "labels", err)) != NIC_OK) return s;
  long double sum = 0;
  for (int c = 0; c < k; c++) {
    double a = 0;
    s = metrics_auc_strided(labels, c, 0, scores + c, (size_t)k, n, &a, err);
    if (s != NIC_OK) {
      nic_err_prefix(err, "class %d: ", c);
      return s;
    }
    if (per_class) per_class[c] = a;
    sum += a;
  }
  *auc = (double)(sum / k);
  return NIC_OK;
}

nic_status nic_accuracy(const int *truth, const int *pred, size_t n, double *acc, nic_error *err) {
  nic_status s = METRICS_CHECK("accuracy", n, err, truth, pred, acc);
  if (s != NIC_OK) return s;
  size_t hit = 0;
  for (size_t i = 0; i < n; i++) hit += truth[i] == pred[i];
  *acc = (double)hit / (double)n;
  return NIC_OK;
}

nic_status nic_confusion_matrix(const int *truth, const int *pred, size_t n, int k, int64_t *cm,
                                nic_error *err) {
  nic_status s = METRICS_CHECK("confusion_matrix", n, err, truth, pred, cm);
  if (s != NIC_OK) return s;
  if (k < 1) return nic_err(err, NIC_EINVAL, "confusion_matrix: need k >= 1 classes, got %d", k);
  if ((s = metrics_check_classes(truth, n, k, "truth", err)) != NIC_OK) return s;
  if ((s = metrics_check_classes(pred, n, k, "pred", err)) != NIC_OK) return s;
  memset(cm, 0, (size_t)k * (size_t)k * sizeof *cm);
  for (size_t i = 0; i < n; i++) cm[(size_t)truth[i] * (size_t)k + (size_t)pred[i]]++;
  return NIC_OK;
}

/* The confusion matrix in a fresh buffer (callers free it). */
static nic_status confusion_alloc(const int *truth, const int *pred, size_t n, int k, int64_t **out,
                                  nic_error *err) {
  if (k < 1 || k > 65536) return nic_err(err, NIC_EINVAL, "bad number of classes %d", k);
  int64_t *cm = malloc((size_t)k * (size_t)k * sizeof *cm);
  if (!cm) return nic_err(err, NIC_ENOMEM, "out of memory for a %dx%d confusion matrix", k, k);
  nic_status s = nic_confusion_matrix(truth, pred, n, k, cm, err);
  if (s != NIC_OK) {
    free(cm);
    return s;
  }
  *out = cm;
  return NIC_OK;
}

nic_status nic_balanced_accuracy(const int *truth, const int *pred, size_t n, int k, double *bacc,
                                 nic_error *err) {
  nic_status s = METRICS_CHECK("balanced_accuracy", n, err, truth, pred, bacc);
  if (s != NIC_OK) return s;
  int64_t *cm = NULL;
  if ((s = confusion_alloc(truth, pred, n, k, &cm, err)) != NIC_OK) return s;
  long double sum = 0;
  int present = 0;
  for (int c = 0; c < k; c++) {
    int64_t row = 0;
    for (int j = 0; j < k; j++) row += cm[(size_t)c * (size_t)k + (size_t)j];
    if (row == 0) continue; /* a class absent from truth has no recall */
    sum += (long double)cm[(size_t)c * (size_t)k + (size_t)c] / row;
    present++;
  }
  free(cm);
  *bacc = (double)(sum / present); /* n > 0, so some class is present */
  return NIC_OK;
}

/* Disagreement weight of cell (i, j). */
static long double kappa_weight(nic_kappa_weights w, int i, int j, int k) {
  if (i == j) return 0;
  long double d = (long double)abs(i - j) / (k > 1 ? k - 1 : 1);
  switch (w) {
  case NIC_KAPPA_LINEAR:
    return d;
  case NIC_KAPPA_QUADRATIC:
    return d * d;
  default:
    return 1;
  }
}

nic_status nic_cohen_kappa_table(const double *table, int k, nic_kappa_weights w, double *kappa,
                                 nic_error *err) {
  if (!table || !kappa) return nic_err(err, NIC_EINVAL, "cohen_kappa: NULL argument");
  if (k < 1 || k > 65536)
    return nic_err(err, NIC_EINVAL, "cohen_kappa: bad number of classes %d", k);
  if (w != NIC_KAPPA_UNWEIGHTED && w != NIC_KAPPA_LINEAR && w != NIC_KAPPA_QUADRATIC)
    return nic_err(err, NIC_EINVAL, "cohen_kappa: unknown weighting %d", (int)w);
  size_t kk = (size_t)k;
  long double *row = calloc(2 * kk, sizeof *row), *col = row ? row + kk : NULL;
  if (!row) return nic_err(err, NIC_ENOMEM, "out of memory");
  long double total = 0;
  for (size_t i = 0; i < kk; i++)
    for (size_t j = 0; j < kk; j++) {
      double t = table[i * kk + j];
      if (!(t >= 0) || isinf(t)) {
        free(row);
        return nic_err(err, NIC_EINVAL, "cohen_kappa: table[%zu][%zu] = %g is not a count", i, j,
                       t);
      }
      row[i] += t, col[j] += t, total += t;
    }
  /* Observed and chance-expected disagreement, both as proportions. */
  long double obs = 0, exp = 0;
  for (size_t i = 0; i < kk; i++)
    for (size_t j = 0; j < kk; j++) {
      long double wij = kappa_weight(w, (int)i, (int)j, k);
      obs += wij * table[i * kk + j];
      exp += wij * row[i] * col[j];
    }
  free(row);
  if (total <= 0) return nic_err(err, NIC_EINVAL, "cohen_kappa: empty table");
  obs /= total;
  exp /= total * total;
  if (exp <= 0)
    return nic_err(
        err, NIC_EINVAL,
        "kappa undefined: no disagreement expected by chance (both raters use one class)");
  *kappa = (double)(1 - obs / exp);
  return NIC_OK;
}

nic_status nic_cohen_kappa(const int *a, const int *b, size_t n, int k, nic_kappa_weights w,
                           double *kappa, nic_error *err) {
  nic_status s = METRICS_CHECK("cohen_kappa", n, err, a, b, kappa);
  if (s != NIC_OK) return s;
  int64_t *cm = NULL;
  if ((s = confusion_alloc(a, b, n, k, &cm, err)) != NIC_OK) return s;
  size_t kk = (size_t)k * (size_t)k;
  double *t = malloc(kk * sizeof *t);
  if (!t) {
    free(cm);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < kk; i++) t[i] = (double)cm[i];
  free(cm);
  s = nic_cohen_kappa_table(t, k, w, kappa, err);
  free(t);
  return s;
}
