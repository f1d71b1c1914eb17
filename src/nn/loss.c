/* Loss functions: softmax cross-entropy, binary cross-entropy on logits,
 * mean squared error and the Cox partial likelihood.
 *
 * Every loss returns the mean over the samples that contribute and, when
 * asked, d(loss)/d(input) in a freshly shaped plain tensor. Sums run in
 * double: batches are small and the cost is nothing next to the network,
 * while float accumulation would make finite-difference checks noisy.
 *
 * Samples with mask 0 contribute nothing and their labels/targets are not
 * validated: multitask batches mark missing labels that way and may leave
 * any placeholder value in the label slot. */
#include <math.h>
#include <stdlib.h>

#include "nic/nn.h"

/* ---- shared checks ------------------------------------------------------ */

/* Checks that `t` is a plain, non-empty-rank tensor with data. */
static nic_status check_input(const nic_tensor *t, const char *fn, const char *what,
                              nic_error *err) {
  if (!t) return nic_err(err, NIC_EINVAL, "%s: %s is NULL", fn, what);
  if (t->layout) return nic_err(err, NIC_EINVAL, "%s: %s must be a plain tensor", fn, what);
  if (t->ndim < 1 || t->ndim > NIC_MAX_DIMS)
    return nic_err(err, NIC_EINVAL, "%s: %s has rank %d", fn, what, t->ndim);
  if (!t->data && nic_tensor_numel(t) > 0)
    return nic_err(err, NIC_EINVAL, "%s: %s has no data", fn, what);
  return NIC_OK;
}

/* Accepts N x 1 or N (one score per sample), the shape of BCE and Cox inputs. */
static nic_status check_column(const nic_tensor *t, const char *fn, const char *what,
                               nic_error *err) {
  nic_status s = check_input(t, fn, what, err);
  if (s != NIC_OK) return s;
  if (t->ndim == 1 || (t->ndim == 2 && t->shape[1] == 1)) return NIC_OK;
  return nic_err(err, NIC_EINVAL, "%s: %s must be N x 1 or N, got rank %d with shape[1] = %lld", fn,
                 what, t->ndim, t->ndim > 1 ? (long long)t->shape[1] : 0LL);
}

/* Shapes grad like the input (zero-filled). The input is read after this
 * call, so the two must not be the same tensor. */
static nic_status prepare_grad(nic_tensor *grad, const nic_tensor *in, const char *fn,
                               nic_error *err) {
  if (!grad) return NIC_OK;
  if (grad == in) return nic_err(err, NIC_EINVAL, "%s: grad must not be the input tensor", fn);
  return nic_tensor_alloc(grad, in->ndim, in->shape, err);
}

/* A mask entry must be a finite non-negative weight (normally 0 or 1). */
static nic_status check_mask(const float *mask, int64_t n, const char *fn, nic_error *err) {
  if (!mask) return NIC_OK;
  for (int64_t i = 0; i < n; i++)
    if (!(mask[i] >= 0) || isinf(mask[i]))
      return nic_err(err, NIC_EINVAL, "%s: mask[%lld] = %g is not a finite weight >= 0", fn,
                     (long long)i, (double)mask[i]);
  return NIC_OK;
}

/* log(exp(a) + exp(b)) without overflow; a or b may be -inf. */
static double logaddexp(double a, double b) {
  double hi = a > b ? a : b, lo = a > b ? b : a;
  if (hi == -INFINITY) return -INFINITY;
  return hi + log1p(exp(lo - hi));
}

/* ---- softmax cross-entropy ---------------------------------------------- */

/* Weight of sample i (mask times class weight); validates the label of every
 * sample that contributes. */
static nic_status ce_weights(const int *labels, const float *class_weight, const float *mask,
                             int64_t n, int64_t k, double *w, double *wsum, nic_error *err) {
  const char *fn = "softmax cross-entropy";
  *wsum = 0;
  for (int64_t i = 0; i < n; i++) {
    w[i] = mask ? mask[i] : 1.0;
    if (w[i] == 0) continue;
    if (labels[i] < 0 || labels[i] >= k)
      return nic_err(err, NIC_EINVAL, "%s: label %d at index %lld is out of range [0, %lld)", fn,
                     labels[i], (long long)i, (long long)k);
    if (class_weight) w[i] *= class_weight[labels[i]];
    *wsum += w[i];
  }
  return NIC_OK;
}

nic_status nic_loss_softmax_ce(const nic_tensor *logits, const int *labels,
                               const float *class_weight, const float *mask, float *loss,
                               nic_tensor *grad, nic_error *err) {
  const char *fn = "softmax cross-entropy";
  nic_status s = check_input(logits, fn, "logits", err);
  if (s != NIC_OK) return s;
  if (logits->ndim != 2 || logits->shape[1] < 1)
    return nic_err(err, NIC_EINVAL, "%s: logits must be 2-D N x K with K >= 1, got rank %d", fn,
                   logits->ndim);
  int64_t n = logits->shape[0], k = logits->shape[1];
  if (n > 0 && !labels) return nic_err(err, NIC_EINVAL, "%s: labels are NULL", fn);
  if (class_weight)
    for (int64_t c = 0; c < k; c++)
      if (!(class_weight[c] >= 0) || isinf(class_weight[c]))
        return nic_err(err, NIC_EINVAL, "%s: class_weight[%lld] = %g is not a finite weight >= 0",
                       fn, (long long)c, (double)class_weight[c]);
  if ((s = check_mask(mask, n, fn, err)) != NIC_OK) return s;

  double *w = malloc((size_t)(n > 0 ? n : 1) * sizeof *w);
  if (!w) return nic_err(err, NIC_ENOMEM, "%s: out of memory", fn);
  double wsum = 0;
  s = ce_weights(labels, class_weight, mask, n, k, w, &wsum, err);
  if (s == NIC_OK) s = prepare_grad(grad, logits, fn, err);
  if (s != NIC_OK) {
    free(w);
    return s;
  }

  double total = 0;
  for (int64_t i = 0; i < n && wsum > 0; i++) {
    if (w[i] == 0) continue;
    const float *x = logits->data + i * k;
    double mx = x[0], se = 0;
    for (int64_t c = 1; c < k; c++) mx = x[c] > mx ? x[c] : mx;
    for (int64_t c = 0; c < k; c++) se += exp(x[c] - mx);
    double lse = mx + log(se);
    total += w[i] * (lse - x[labels[i]]);
    if (!grad) continue;
    /* d/dx_c = w_i / W * (softmax_c - [c == y]) */
    float *g = grad->data + i * k;
    double a = w[i] / wsum;
    for (int64_t c = 0; c < k; c++) g[c] = (float)(a * (exp(x[c] - lse) - (c == labels[i])));
  }
  free(w);
  if (loss) *loss = wsum > 0 ? (float)(total / wsum) : 0.0f;
  return NIC_OK;
}

/* ---- binary cross-entropy on logits -------------------------------------- */

/* softplus(x) = log(1 + exp(x)), stable for large |x|. */
static double softplus(double x) {
  return (x > 0 ? x : 0) + log1p(exp(-fabs(x)));
}

static double sigmoid(double x) {
  if (x >= 0) return 1 / (1 + exp(-x));
  double e = exp(x);
  return e / (1 + e);
}

nic_status nic_loss_bce_logits(const nic_tensor *logits, const float *targets, float pos_weight,
                               const float *mask, float *loss, nic_tensor *grad, nic_error *err) {
  const char *fn = "binary cross-entropy";
  nic_status s = check_column(logits, fn, "logits", err);
  if (s != NIC_OK) return s;
  int64_t n = logits->shape[0];
  if (n > 0 && !targets) return nic_err(err, NIC_EINVAL, "%s: targets are NULL", fn);
  if (!(pos_weight >= 0) || isinf(pos_weight))
    return nic_err(err, NIC_EINVAL, "%s: pos_weight %g must be finite and >= 0", fn,
                   (double)pos_weight);
  if ((s = check_mask(mask, n, fn, err)) != NIC_OK) return s;
  double msum = 0;
  for (int64_t i = 0; i < n; i++) {
    double m = mask ? mask[i] : 1.0;
    if (m == 0) continue;
    if (!(targets[i] >= 0 && targets[i] <= 1))
      return nic_err(err, NIC_EINVAL, "%s: target %g at index %lld is outside [0, 1]", fn,
                     (double)targets[i], (long long)i);
    msum += m;
  }
  if ((s = prepare_grad(grad, logits, fn, err)) != NIC_OK) return s;

  /* With pos_weight p (PyTorch's BCEWithLogits):
   *   l = p*t*softplus(-x) + (1-t)*softplus(x),  dl/dx = p*t*(sigmoid(x)-1) + (1-t)*sigmoid(x).
   * For p = 1 this is the familiar max(x,0) - x*t + log1p(exp(-|x|)). */
  double total = 0, pw = pos_weight;
  for (int64_t i = 0; i < n && msum > 0; i++) {
    double m = mask ? mask[i] : 1.0;
    if (m == 0) continue;
    double x = logits->data[i], t = targets[i];
    total += m * (pw * t * softplus(-x) + (1 - t) * softplus(x));
    if (grad) {
      double sg = sigmoid(x);
      grad->data[i] = (float)(m / msum * (pw * t * (sg - 1) + (1 - t) * sg));
    }
  }
  if (loss) *loss = msum > 0 ? (float)(total / msum) : 0.0f;
  return NIC_OK;
}

/* ---- mean squared error -------------------------------------------------- */

nic_status nic_loss_mse(const nic_tensor *pred, const float *target, const float *mask, float *loss,
                        nic_tensor *grad, nic_error *err) {
  const char *fn = "mean squared error";
  nic_status s = check_input(pred, fn, "pred", err);
  if (s != NIC_OK) return s;
  int64_t n = pred->shape[0], numel = nic_tensor_numel(pred);
  int64_t d = n > 0 ? numel / n : 0;
  if (numel > 0 && !target) return nic_err(err, NIC_EINVAL, "%s: target is NULL", fn);
  if ((s = check_mask(mask, n, fn, err)) != NIC_OK) return s;
  if ((s = prepare_grad(grad, pred, fn, err)) != NIC_OK) return s;

  double msum = 0;
  for (int64_t i = 0; i < n; i++) msum += mask ? mask[i] : 1.0;
  double denom = msum * (double)d, total = 0;
  for (int64_t i = 0; i < n && denom > 0; i++) {
    double m = mask ? mask[i] : 1.0;
    if (m == 0) continue;
    const float *p = pred->data + i * d, *t = target + i * d;
    for (int64_t j = 0; j < d; j++) {
      double diff = (double)p[j] - t[j];
      total += m * diff * diff;
      if (grad) grad->data[i * d + j] = (float)(2 * m * diff / denom);
    }
  }
  if (loss) *loss = denom > 0 ? (float)(total / denom) : 0.0f;
  return NIC_OK;
}

/* ---- Cox partial likelihood (Breslow ties) ------------------------------- */

typedef struct cox_item {
  float time;
  int64_t index;
} cox_item;

/* Descending time; the index breaks ties so the order is deterministic. */
static int cox_cmp(const void *pa, const void *pb) {
  const cox_item *a = pa, *b = pb;
  if (a->time != b->time) return a->time < b->time ? 1 : -1;
  return (a->index > b->index) - (a->index < b->index);
}

/* Walks the samples in descending time, one group of equal times at a time,
 * and stores in lse[g] = log sum_{j: t_j >= t_g} exp(r_j) for each group:
 * the risk set of a tied group includes the whole group (Breslow). Returns
 * the number of groups; gstart[g] is the first sorted position of group g. */
static int64_t cox_risk_sets(const cox_item *it, int64_t n, const float *r, double *lse,
                             int64_t *gstart) {
  double acc = -INFINITY;
  int64_t ng = 0;
  for (int64_t a = 0; a < n;) {
    int64_t b = a;
    while (b < n && it[b].time == it[a].time) acc = logaddexp(acc, r[it[b++].index]);
    gstart[ng] = a;
    lse[ng++] = acc;
    a = b;
  }
  gstart[ng] = n;
  return ng;
}

/* d(loss)/d(r_k) = (1/E) * (sum_{events i: t_i <= t_k} exp(r_k - lse_i) - event_k).
 * The sum is carried in the log domain (logc) walking times upwards; every
 * term is <= 1, so exp(r_k + logc) <= E and nothing overflows. */
static void cox_grad(const cox_item *it, int64_t ng, const int64_t *gstart, const double *lse,
                     const float *r, const int *event, double nev, float *g) {
  double logc = -INFINITY;
  for (int64_t q = ng - 1; q >= 0; q--) {
    int64_t d = 0;
    for (int64_t p = gstart[q]; p < gstart[q + 1]; p++) d += event[it[p].index] != 0;
    if (d > 0) logc = logaddexp(logc, log((double)d) - lse[q]);
    for (int64_t p = gstart[q]; p < gstart[q + 1]; p++) {
      int64_t k = it[p].index;
      g[k] = (float)((exp(r[k] + logc) - (event[k] != 0)) / nev);
    }
  }
}

static nic_status cox_check(const nic_tensor *risk, const float *time, const int *event,
                            int64_t *nev, nic_error *err) {
  const char *fn = "Cox loss";
  nic_status s = check_column(risk, fn, "risk", err);
  if (s != NIC_OK) return s;
  int64_t n = risk->shape[0];
  if (n > 0 && (!time || !event)) return nic_err(err, NIC_EINVAL, "%s: time or event is NULL", fn);
  *nev = 0;
  for (int64_t i = 0; i < n; i++) {
    if (isnan(time[i]))
      return nic_err(err, NIC_EINVAL, "%s: time at index %lld is NaN", fn, (long long)i);
    if (event[i] != 0 && event[i] != 1)
      return nic_err(err, NIC_EINVAL, "%s: event %d at index %lld must be 0 or 1", fn, event[i],
                     (long long)i);
    *nev += event[i];
  }
  return NIC_OK;
}

nic_status nic_loss_cox(const nic_tensor *risk, const float *time, const int *event, float *loss,
                        nic_tensor *grad, nic_error *err) {
  const char *fn = "Cox loss";
  int64_t nev = 0;
  nic_status s = cox_check(risk, time, event, &nev, err);
  if (s != NIC_OK) return s;
  if ((s = prepare_grad(grad, risk, fn, err)) != NIC_OK) return s;
  if (loss) *loss = 0;
  if (nev == 0) return NIC_OK; /* nothing to rank against: zero loss, zero gradient */

  int64_t n = risk->shape[0];
  cox_item *it = malloc((size_t)n * sizeof *it);
  double *lse = malloc((size_t)n * sizeof *lse);
  int64_t *gstart = malloc((size_t)(n + 1) * sizeof *gstart);
  if (!it || !lse || !gstart) {
    free(it), free(lse), free(gstart);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", fn);
  }
  for (int64_t i = 0; i < n; i++) it[i] = (cox_item){time[i], i};
  qsort(it, (size_t)n, sizeof *it, cox_cmp);
  const float *r = risk->data;
  int64_t ng = cox_risk_sets(it, n, r, lse, gstart);

  /* loss = -(1/E) * sum over events of (r_i - log sum_{t_j >= t_i} exp(r_j)) */
  double total = 0;
  for (int64_t q = 0; q < ng; q++)
    for (int64_t p = gstart[q]; p < gstart[q + 1]; p++)
      if (event[it[p].index]) total += r[it[p].index] - lse[q];
  if (loss) *loss = (float)(-total / (double)nev);
  if (grad) cox_grad(it, ng, gstart, lse, r, event, (double)nev, grad->data);
  free(it), free(lse), free(gstart);
  return NIC_OK;
}
