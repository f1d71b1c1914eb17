/* Validation of an encoder training run: every task's validation items go
 * through the trunk and heads in eval mode (batch norms on their running
 * statistics, no augmentation) once per epoch, giving the per-task metrics
 * of the history and the value early stopping watches. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "encoder/train_internal.h"
#include "nic/metrics.h"

/* What a task's validation pass collects. */
typedef struct val_acc {
  int64_t n, cap;
  int *label;    /* CLASS: truth */
  double *score; /* CLASS: n x K probabilities; REGRESSION: prediction in label units */
  double *truth; /* REGRESSION */
  double loss_sum, top1_sum;
} val_acc;

static void val_acc_free(val_acc *a) {
  free(a->label);
  free(a->score);
  free(a->truth);
}

/* Softmax of each logit row, stored with the labels. */
static void collect_class(val_acc *a, const nic_tensor *y, const nic_batch *b) {
  int64_t k = y->shape[1];
  for (int i = 0; i < b->n; i++) {
    const float *x = y->data + (int64_t)i * k;
    double mx = x[0], se = 0;
    for (int64_t c = 1; c < k; c++) mx = x[c] > mx ? x[c] : mx;
    for (int64_t c = 0; c < k; c++) se += exp(x[c] - mx);
    for (int64_t c = 0; c < k; c++) a->score[(a->n + i) * k + c] = exp(x[c] - mx) / se;
    a->label[a->n + i] = b->label[i];
  }
}

/* Runs one batch of validation patches (r->pix, r->n of them) through the
 * trunk in eval mode and views the embeddings as the heads' input. */
static nic_status embed_batch(enc_run *r, nic_error *err) {
  int start = 1;
  size_t per = (size_t)r->P * (size_t)r->P * 3;
  const nic_tensor *e = NULL;
  nic_status s = nic_model_prepare_rgb8(r->trunk, r->pix, r->n, r->P, (int64_t)r->P * 3,
                                        (int64_t)per, &r->x, &start, err);
  if (s == NIC_OK) s = nic_model_forward_from(r->trunk, r->ctx, &r->x, start, 0, &e, err);
  if (s != NIC_OK) return s;
  int64_t shp[4] = {e->shape[0], e->shape[1], 1, 1};
  nic_tensor_wrap(&r->e4, e->data, 4, shp);
  return NIC_OK;
}

static nic_status batch_supervised(enc_run *r, enc_task *t, const nic_batch *b, val_acc *a,
                                   nic_error *err) {
  const nic_tensor *y = NULL;
  nic_status s = nic_model_forward(t->head, r->ctx, &r->e4, 0, &y, err);
  if (s != NIC_OK) return s;
  float l = 0;
  if (t->kind == NIC_ENC_KIND_CLASS) {
    s = nic_loss_softmax_ce(y, b->label, NULL, NULL, &l, NULL, err);
    if (s == NIC_OK) collect_class(a, y, b);
  } else {
    for (int i = 0; i < b->n; i++) {
      r->value[i] = (float)((b->value[i] - t->vmean) / t->vsd);
      a->score[a->n + i] = y->data[i] * t->vsd + t->vmean;
      a->truth[a->n + i] = b->value[i];
    }
    s = nic_loss_mse(y, r->value, NULL, &l, NULL, err);
  }
  a->loss_sum += (double)l * b->n;
  return s;
}

static nic_status batch_shared(enc_run *r, val_acc *a, int m, nic_error *err) {
  const nic_tensor *y = NULL;
  nic_status s = nic_model_forward(r->shared, r->ctx, &r->e4, 0, &y, err);
  if (s != NIC_OK) return s;
  float l = 0;
  double top1 = NAN;
  if (r->o->objective == NIC_ENC_CONTRASTIVE)
    s = nic_enc_ntxent(y, r->o->temperature, &l, NULL, &top1, err);
  else
    s = nic_loss_mse(y, r->target.data, NULL, &l, NULL, err);
  a->loss_sum += (double)l * m;
  a->top1_sum += top1 * m;
  return s;
}

static void finish_metrics(enc_run *r, enc_task *t, val_acc *a) {
  enc_metrics *v = &t->val;
  nic_error e = {0};
  v->n = a->n;
  v->loss = a->n > 0 ? a->loss_sum / (double)a->n : NAN;
  if (r->o->objective == NIC_ENC_CONTRASTIVE) v->top1 = a->n > 0 ? a->top1_sum / (double)a->n : NAN;
  if (r->o->objective != NIC_ENC_SUPERVISED || a->n == 0) return;
  if (t->kind == NIC_ENC_KIND_REGRESSION) {
    if (nic_mae(a->truth, a->score, (size_t)a->n, &v->mae, &e) != NIC_OK) v->mae = NAN;
    return;
  }
  int k = t->nclass;
  int *pred = malloc(sizeof *pred * (size_t)a->n);
  double *p1 = malloc(sizeof *p1 * (size_t)a->n);
  if (!pred || !p1) {
    free(pred);
    free(p1);
    return;
  }
  for (int64_t i = 0; i < a->n; i++) {
    int best = 0;
    for (int c = 1; c < k; c++)
      if (a->score[i * k + c] > a->score[i * k + best]) best = c;
    pred[i] = best;
    p1[i] = a->score[i * k + (k > 1)];
  }
  if (nic_accuracy(a->label, pred, (size_t)a->n, &v->accuracy, &e) != NIC_OK) v->accuracy = NAN;
  if (nic_balanced_accuracy(a->label, pred, (size_t)a->n, k, &v->balanced_accuracy, &e) != NIC_OK)
    v->balanced_accuracy = NAN;
  /* AUC is undefined when a class is missing from the validation items. */
  nic_status s = k == 2 ? nic_auc(a->label, p1, (size_t)a->n, &v->auc, &e)
                        : nic_auc_ovr_macro(a->label, a->score, (size_t)a->n, k, &v->auc, NULL, &e);
  if (s != NIC_OK) v->auc = NAN;
  free(pred);
  free(p1);
}

static nic_status alloc_acc(val_acc *a, const enc_task *t, nic_error *err) {
  memset(a, 0, sizeof *a);
  a->cap = t->nvalid;
  size_t n = (size_t)(a->cap > 0 ? a->cap : 1);
  int k = t->nclass > 0 ? t->nclass : 1;
  a->label = malloc(sizeof *a->label * n);
  a->score = malloc(sizeof *a->score * n * (size_t)k);
  a->truth = malloc(sizeof *a->truth * n);
  if (!a->label || !a->score || !a->truth) return nic_err(err, NIC_ENOMEM, "out of memory");
  return NIC_OK;
}

static nic_status validate_task(enc_run *r, enc_task *t, nic_error *err) {
  const nic_enc_train_opts *o = r->o;
  nic_loader_opts lo = nic_loader_default_opts();
  lo.batch_size = o->batch;
  lo.patch_size = r->P;
  lo.mpp = r->mpp;
  lo.threads = o->loader_threads;
  lo.seed = enc_seed(o->seed, 9, (uint64_t)t->index);
  lo.sampling = NIC_SAMPLE_SEQUENTIAL;
  lo.split = NIC_SPLIT_VALID;
  nic_loader *l = NULL;
  val_acc a;
  nic_status s = alloc_acc(&a, t, err);
  if (s == NIC_OK) s = nic_loader_create(&l, &t->ds, 1, &lo, err);
  if (s == NIC_OK) s = nic_loader_start_epoch(l, 0, err);
  size_t per = (size_t)r->P * (size_t)r->P * 3;
  while (s == NIC_OK) {
    const nic_batch *b = NULL;
    if ((s = nic_loader_next(l, &b, err)) != NIC_OK || !b) break;
    if (a.n + b->n > a.cap) break; /* cannot happen: the loader holds nvalid items */
    if (o->objective == NIC_ENC_CONTRASTIVE) {
      /* fixed views, the same every epoch, so the loss is comparable */
      memcpy(r->raw, b->pixels, per * (size_t)b->n);
      enc_make_views(r, b->n, enc_seed(o->seed, 10, (uint64_t)t->index), 0, a.n);
    } else {
      memcpy(r->pix, b->pixels, per * (size_t)b->n);
      r->n = b->n;
    }
    if (o->objective == NIC_ENC_AUTOENCODER && (s = enc_ae_target(r, err)) != NIC_OK) break;
    if ((s = embed_batch(r, err)) != NIC_OK) break;
    s = o->objective == NIC_ENC_SUPERVISED ? batch_supervised(r, t, b, &a, err)
                                           : batch_shared(r, &a, b->n, err);
    a.n += b->n;
  }
  nic_loader_free(l);
  if (s == NIC_OK) finish_metrics(r, t, &a);
  val_acc_free(&a);
  if (s != NIC_OK) nic_err_prefix(err, "validating task %s: ", t->spec.name);
  return s;
}

nic_status enc_validate(enc_run *r, nic_error *err) {
  for (int i = 0; i < r->nt; i++) {
    enc_task *t = &r->t[i];
    t->val = (enc_metrics){0, NAN, NAN, NAN, NAN, NAN, NAN};
    if (t->nvalid == 0) continue;
    nic_status s = validate_task(r, t, err);
    if (s != NIC_OK) return s;
  }
  return NIC_OK;
}

/* ---- the monitor ------------------------------------------------------------------ */

static const char *const metric_names[] = {"loss", "accuracy", "balanced_accuracy",
                                           "auc",  "mae",      "top1"};

static double metric_of(const enc_metrics *v, int which) {
  const double vals[] = {v->loss, v->accuracy, v->balanced_accuracy, v->auc, v->mae, v->top1};
  return vals[which];
}

/* Splits "TASK.METRIC"; returns the task index and metric index, or -1. */
static int parse_monitor(const enc_run *r, const char *mon, int *metric) {
  const char *dot = strrchr(mon, '.');
  if (!dot) return -1;
  *metric = -1;
  for (int m = 0; m < (int)(sizeof metric_names / sizeof *metric_names); m++)
    if (!strcmp(dot + 1, metric_names[m])) *metric = m;
  for (int i = 0; i < r->nt; i++)
    if (strlen(r->t[i].spec.name) == (size_t)(dot - mon) &&
        !strncmp(r->t[i].spec.name, mon, (size_t)(dot - mon)))
      return *metric >= 0 ? i : -1;
  return -1;
}

nic_status enc_monitor_check(const enc_run *r, nic_error *err) {
  const char *mon = r->o->monitor;
  if (!mon || !strcmp(mon, "loss")) return NIC_OK;
  int metric;
  int t = parse_monitor(r, mon, &metric);
  if (t < 0)
    return nic_err(err, NIC_EINVAL,
                   "--monitor '%s' must be 'loss' or TASK.METRIC with a task of this run and "
                   "METRIC one of loss, accuracy, balanced_accuracy, auc, mae, top1",
                   mon);
  const enc_task *tk = &r->t[t];
  int cls = r->o->objective == NIC_ENC_SUPERVISED && tk->kind == NIC_ENC_KIND_CLASS;
  int reg = r->o->objective == NIC_ENC_SUPERVISED && tk->kind == NIC_ENC_KIND_REGRESSION;
  int ok = metric == 0 || (cls && metric >= 1 && metric <= 3) || (reg && metric == 4) ||
           (r->o->objective == NIC_ENC_CONTRASTIVE && metric == 5);
  if (!ok)
    return nic_err(err, NIC_EINVAL, "--monitor %s: task %s has no such metric", mon, tk->spec.name);
  if (tk->nvalid == 0)
    return nic_err(err, NIC_EINVAL, "--monitor %s: task %s has no validation items", mon,
                   tk->spec.name);
  return NIC_OK;
}

double enc_monitor_value(const enc_run *r, int *higher_better) {
  const char *mon = r->o->monitor;
  *higher_better = 0;
  if (!mon || !strcmp(mon, "loss")) {
    double sum = 0, w = 0;
    int any = 0;
    for (int i = 0; i < r->nt; i++) {
      const enc_task *t = &r->t[i];
      if (t->val.n == 0 || !isfinite(t->val.loss)) continue;
      /* unsupervised runs weigh datasets equally */
      double wt = r->o->objective == NIC_ENC_SUPERVISED ? t->spec.weight : 1.0;
      sum += wt * t->val.loss;
      w += wt;
      any = 1;
    }
    return any && w > 0 ? sum / w : NAN;
  }
  int metric = 0;
  int t = parse_monitor(r, mon, &metric);
  if (t < 0 || r->t[t].val.n == 0) return NAN;
  *higher_better = metric != 0 && metric != 4;
  return metric_of(&r->t[t].val, metric);
}
