/* Cross-validation: one model per fold, out-of-fold predictions, metrics. */
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/json_util.h"
#include "slidemodel/sm_internal.h"

/* What metrics.json records about a fold besides its metrics. */
typedef struct fold_info {
  int ntrain, nval, ntest, best_epoch;
} fold_info;

static json_object *num(double v) {
  return isfinite(v) ? nic_json_new_double(v) : NULL; /* null for undefined */
}

static json_object *set_json(const nic_eval *e, const nic_eval_set *s) {
  json_object *o = json_object_new_object();
  json_object_object_add(o, "n", json_object_new_int(s->n));
  for (int j = 0; j < e->nmetrics; j++) {
    json_object *m = json_object_new_object();
    json_object_object_add(m, "value", s->ok[j] ? num(s->ci[j].estimate) : NULL);
    json_object_object_add(m, "lo", s->ci_ok[j] ? num(s->ci[j].lo) : NULL);
    json_object_object_add(m, "hi", s->ci_ok[j] ? num(s->ci[j].hi) : NULL);
    json_object_object_add(o, e->names[j], m);
  }
  return o;
}

static nic_status write_metrics(const char *path, const nic_cohort *c, const nic_sm_opts *o,
                                const nic_eval *e, const fold_info *fi, int k,
                                const char *command_line, nic_error *err) {
  json_object *root = json_object_new_object();
  if (!root) return nic_err(err, NIC_ENOMEM, "out of memory");
  json_object_object_add(root, "task", json_object_new_string(nic_task_name(c->task)));
  json_object_object_add(root, "model", json_object_new_string(nic_sm_kind_name(o->kind)));
  json_object_object_add(root, "main_metric",
                         json_object_new_string(nic_task_main_metric(c->task)));
  json_object_object_add(root, "folds", json_object_new_int(k));
  json_object_object_add(root, "slides", json_object_new_int(c->n));
  json_object_object_add(root, "evaluated", json_object_new_int(e->pooled.n));
  if (c->task == NIC_TASK_BINARY || c->task == NIC_TASK_MULTICLASS)
    json_object_object_add(root, "kappa_weights",
                           json_object_new_string(e->kappa_quadratic ? "quadratic" : "none"));
  json_object *cl = json_object_new_array();
  for (int i = 0; i < c->num_classes; i++)
    json_object_array_add(cl, json_object_new_string(c->class_names[i]));
  json_object_object_add(root, "classes", cl);
  if (command_line) json_object_object_add(root, "command", json_object_new_string(command_line));
  json_object *op = json_object_new_object();
  json_object_object_add(op, "epochs", json_object_new_int(o->epochs));
  json_object_object_add(op, "batch", json_object_new_int(o->batch));
  json_object_object_add(op, "lr", nic_json_new_float(o->lr));
  json_object_object_add(op, "weight_decay", nic_json_new_float(o->weight_decay));
  json_object_object_add(op, "patience", json_object_new_int(o->patience));
  json_object_object_add(op, "monitor",
                         json_object_new_string(o->monitor_loss ? "loss" : "metric"));
  json_object_object_add(op, "crop", json_object_new_int(o->crop));
  if (o->kind == NIC_SM_CLUSTER) {
    json_object_object_add(op, "smooth", json_object_new_int(o->smooth));
    json_object_object_add(op, "scores", json_object_new_int(o->scores));
  }
  json_object_object_add(op, "test_crops", json_object_new_int(o->test_crops));
  json_object_object_add(op, "orientations", json_object_new_boolean(o->orientations));
  json_object_object_add(op, "seed", json_object_new_int64((int64_t)o->seed));
  json_object_object_add(root, "options", op);
  json_object *ms = json_object_new_object();
  for (int j = 0; j < e->nmetrics; j++) {
    json_object *m = json_object_new_object();
    json_object_object_add(m, "mean", e->summary_ok[j] ? num(e->summary[j].mean) : NULL);
    json_object_object_add(m, "sd", e->summary_ok[j] ? num(e->summary[j].sd) : NULL);
    json_object_object_add(m, "pooled", e->pooled.ok[j] ? num(e->pooled.ci[j].estimate) : NULL);
    json_object_object_add(m, "pooled_lo", e->pooled.ci_ok[j] ? num(e->pooled.ci[j].lo) : NULL);
    json_object_object_add(m, "pooled_hi", e->pooled.ci_ok[j] ? num(e->pooled.ci[j].hi) : NULL);
    json_object_object_add(ms, e->names[j], m);
  }
  json_object_object_add(root, "metrics", ms);
  json_object *pf = json_object_new_array();
  for (int f = 0; f < k; f++) {
    json_object *fo = NULL;
    for (int q = 0; q < e->nfolds && !fo; q++)
      if (e->folds[q].fold == f) fo = set_json(e, &e->folds[q]);
    if (!fo) fo = json_object_new_object();
    json_object_object_add(fo, "fold", json_object_new_int(f));
    json_object_object_add(fo, "train", json_object_new_int(fi[f].ntrain));
    json_object_object_add(fo, "val", json_object_new_int(fi[f].nval));
    json_object_object_add(fo, "test", json_object_new_int(fi[f].ntest));
    json_object_object_add(fo, "best_epoch", json_object_new_int(fi[f].best_epoch));
    json_object_array_add(pf, fo);
  }
  json_object_object_add(root, "per_fold", pf);
  json_object_object_add(root, "pooled", set_json(e, &e->pooled));
  const char *text =
      json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
  sm_out out;
  nic_status st = text ? sm_out_open(&out, path, err) : nic_err(err, NIC_ENOMEM, "out of memory");
  if (st == NIC_OK) {
    fputs(text, out.f);
    fputc('\n', out.f);
    st = sm_out_commit(&out, err);
  }
  json_object_put(root);
  return st;
}

/* Predicts the listed slides into rows [*row, ...) of p. */
static nic_status predict_rows(nic_slidemodel *m, nic_ctx *ctx, const nic_cohort *c, const int *ix,
                               int n, int fold, nic_preds *p, int *row, nic_error *err) {
  nic_status st = NIC_OK;
  for (int a = 0; a < n && st == NIC_OK; a++) {
    const nic_cohort_slide *e = &c->slides[ix[a]];
    int r = (*row)++;
    p->slide_id[r] = sm_strdup(e->slide_id);
    p->label[r] = sm_strdup(e->label);
    if (!p->slide_id[r] || !p->label[r]) return nic_err(err, NIC_ENOMEM, "out of memory");
    p->cls[r] = e->cls;
    p->fold[r] = fold;
    if (c->task == NIC_TASK_REGRESSION) p->value[r] = e->value;
    if (c->task == NIC_TASK_SURVIVAL) {
      p->time[r] = e->value;
      p->event[r] = e->event;
    }
    st = nic_sm_predict(m, ctx, e->path, p->score + (size_t)r * p->k, err);
  }
  return st;
}

nic_status nic_sm_crossval(nic_ctx *ctx, const nic_cohort *c, const nic_splits *s,
                           const nic_sm_opts *opts, const char *rundir, const char *command_line,
                           nic_eval *e, nic_error *err) {
  memset(e, 0, sizeof *e);
  if (s->k < 1) return nic_err(err, NIC_EINVAL, "no fold to train");
  nic_status st = sm_mkdirs(rundir, err);
  if (st == NIC_OK) st = nic_splits_save(s, c, rundir, err);
  if (st != NIC_OK) return st;
  /* out-of-fold predictions of the test slides; without any test set (a
   * final model), the validation slides are what can be evaluated */
  int ntest = 0, nval = 0;
  for (int f = 0; f < s->k; f++) ntest += s->folds[f].ntest, nval += s->folds[f].nval;
  int use_val = ntest == 0;
  int rows = use_val ? nval : ntest;
  int k = c->task == NIC_TASK_MULTICLASS ? c->num_classes : 1;
  nic_preds p;
  if ((st = nic_preds_alloc(&p, c->task, rows, k, err)) != NIC_OK) return st;
  p.has_fold = 1;
  if (c->num_classes) {
    int nc = c->task == NIC_TASK_MULTICLASS ? k : 2;
    if (!(p.class_names = calloc((size_t)nc, sizeof *p.class_names)))
      st = nic_err(err, NIC_ENOMEM, "out of memory");
    for (int i = 0; i < nc && st == NIC_OK; i++)
      if (!(p.class_names[i] = sm_strdup(c->class_names[i])))
        st = nic_err(err, NIC_ENOMEM, "out of memory");
  }
  fold_info *fi = calloc((size_t)s->k, sizeof *fi);
  if (!fi && st == NIC_OK) st = nic_err(err, NIC_ENOMEM, "out of memory");
  int row = 0;
  char path[4096];
  for (int f = 0; f < s->k && st == NIC_OK; f++) {
    const nic_fold *fd = &s->folds[f];
    nic_slidemodel *m = NULL;
    st = sm_train_fold(&m, ctx, c, fd, opts, f, s->k, err);
    if (st != NIC_OK) {
      nic_err_prefix(err, "fold %d: ", f);
      break;
    }
    if (s->k == 1 && use_val)
      snprintf(path, sizeof path, "%s/model.safetensors", rundir);
    else
      snprintf(path, sizeof path, "%s/fold_%d.safetensors", rundir, f);
    st = nic_sm_save(m, path, err);
    if (st == NIC_OK)
      st = use_val ? predict_rows(m, ctx, c, fd->val, fd->nval, f, &p, &row, err)
                   : predict_rows(m, ctx, c, fd->test, fd->ntest, f, &p, &row, err);
    fi[f] = (fold_info){fd->ntrain, fd->nval, fd->ntest, nic_sm_best_epoch(m)};
    nic_sm_free(m);
  }
  if (st == NIC_OK) {
    snprintf(path, sizeof path, "%s/predictions.csv", rundir);
    st = nic_preds_write(&p, path, err);
  }
  if (st == NIC_OK) /* nothing to evaluate without test or validation slides */
    st = rows ? nic_evaluate(&p, NULL, e, err) : sm_eval_empty(e, c->task, err);
  if (st == NIC_OK) {
    snprintf(path, sizeof path, "%s/metrics.json", rundir);
    st = write_metrics(path, c, opts, e, fi, s->k, command_line, err);
    if (st != NIC_OK) nic_eval_free(e);
  }
  free(fi);
  nic_preds_free(&p);
  return st;
}

nic_status nic_sm_predict_cohort(nic_slidemodel *m, nic_ctx *ctx, const nic_cohort *c, nic_preds *p,
                                 nic_sm_count_fn progress, void *user, nic_error *err) {
  nic_status st = nic_preds_alloc(p, m->task, c->n, nic_sm_num_scores(m), err);
  if (st != NIC_OK) return st;
  if (m->K) {
    int nc = m->task == NIC_TASK_MULTICLASS ? m->K : 2;
    if (!(p->class_names = calloc((size_t)nc, sizeof *p->class_names)))
      st = nic_err(err, NIC_ENOMEM, "out of memory");
    for (int i = 0; i < nc && st == NIC_OK; i++)
      if (!(p->class_names[i] = sm_strdup(m->class_names[i])))
        st = nic_err(err, NIC_ENOMEM, "out of memory");
  }
  for (int i = 0; i < c->n && st == NIC_OK; i++) {
    const nic_cohort_slide *e = &c->slides[i];
    p->slide_id[i] = sm_strdup(e->slide_id);
    p->label[i] = sm_strdup(e->label ? e->label : "");
    if (!p->slide_id[i] || !p->label[i]) {
      st = nic_err(err, NIC_ENOMEM, "out of memory");
      break;
    }
    if (m->K && *p->label[i]) {
      for (int k = 0; k < m->K; k++)
        if (!strcmp(p->label[i], m->class_names[k])) p->cls[i] = k;
      if (p->cls[i] < 0) {
        st = nic_err(err, NIC_EINVAL, "slide '%s': label '%s' is not one of the model's %d classes",
                     e->slide_id, p->label[i], m->K);
        break;
      }
    }
    if (m->task == NIC_TASK_REGRESSION) p->value[i] = e->value;
    if (m->task == NIC_TASK_SURVIVAL) {
      p->time[i] = e->value;
      p->event[i] = e->event;
    }
    if (!e->path) {
      st = nic_err(err, NIC_EINVAL, "slide '%s' has no features file", e->slide_id);
      break;
    }
    st = nic_sm_predict(m, ctx, e->path, p->score + (size_t)i * p->k, err);
    if (progress) progress(user, i + 1, c->n);
  }
  if (st != NIC_OK) nic_preds_free(p);
  return st;
}
