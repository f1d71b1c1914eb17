/* nic_encoder_train: the training loop of patch encoders.
 *
 * Data: each task has its own loader (its dataset, its training split, its
 * sampling), and a step's batch is put together from them: with
 * proportional or uniform mixing every task contributes a fixed number of
 * samples to every batch (in proportion to its training items, or equally),
 * with round-robin each batch comes whole from one task in turn. Fixed
 * shares, rather than drawing each sample's task at random, keep every
 * task's gradient present in every step and its variance low. A task's
 * loader runs through its own epochs independently; the n-th one begun
 * during training epoch e is loader epoch (e, n), so everything a training
 * epoch sees is fixed by the seed and the epoch number alone. That is what
 * makes an interrupted run resumable at an epoch boundary.
 *
 * A step: the batch goes through the trunk once; the heads take the
 * embeddings (train_heads.c), and the sum of their input gradients goes
 * back through the trunk; one optimizer step updates the trunk and the
 * heads that had samples. After each epoch: validation (train_eval.c), the
 * encoder when the monitor improved, the checkpoint and the model card
 * (train_state.c). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "encoder/train_internal.h"
#include "nic/encoder.h"

/* Loader epochs per training epoch before their numbers would repeat. */
#define SUB_EPOCHS 1000003

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *nic_enc_objective_name(nic_enc_objective o) {
  switch (o) {
  case NIC_ENC_SUPERVISED:
    return "supervised";
  case NIC_ENC_CONTRASTIVE:
    return "contrastive";
  case NIC_ENC_AUTOENCODER:
    return "autoencoder";
  }
  return "?";
}

const char *nic_enc_mix_name(nic_enc_mix m) {
  switch (m) {
  case NIC_ENC_MIX_PROPORTIONAL:
    return "proportional";
  case NIC_ENC_MIX_UNIFORM:
    return "uniform";
  case NIC_ENC_MIX_ROUND_ROBIN:
    return "round-robin";
  }
  return "?";
}

nic_enc_train_opts nic_enc_train_default_opts(void) {
  nic_enc_train_opts o;
  memset(&o, 0, sizeof o);
  o.arch = "nic";
  o.embed_dim = 128;
  o.bn_momentum = 0.9f;
  o.objective = NIC_ENC_SUPERVISED;
  o.temperature = 0.2f;
  o.proj_dim = 64;
  o.epochs = 10;
  o.batch = 64;
  o.mix = NIC_ENC_MIX_PROPORTIONAL;
  o.augment = nic_augment_default();
  o.opt = nic_opt_default(NIC_OPT_ADAMW, 1e-3f);
  o.opt.weight_decay = 1e-4f;
  o.schedule = NIC_SCHED_COSINE;
  o.monitor = "loss";
  o.loader_threads = 1;
  o.seed = 1;
  return o;
}

static void logf_(enc_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(enc_run *r, const char *fmt, ...) {
  if (!r->o->log) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  r->o->log(r->o->user, line);
}

/* ---- checks --------------------------------------------------------------------- */

static nic_status check_opts(const nic_enc_task *tasks, int nt, const nic_enc_train_opts *o,
                             nic_error *err) {
  if (!o->output || !*o->output) return nic_err(err, NIC_EINVAL, "no output file given");
  if (nt < 1) return nic_err(err, NIC_EINVAL, "no task given (at least one --task)");
  if (nt > 64) return nic_err(err, NIC_EINVAL, "at most 64 tasks, got %d", nt);
  for (int i = 0; i < nt; i++)
    for (int j = 0; j < i; j++)
      if (!strcmp(tasks[i].name, tasks[j].name))
        return nic_err(err, NIC_EINVAL, "task name '%s' is used twice", tasks[i].name);
  if (o->epochs < 1) return nic_err(err, NIC_EINVAL, "epochs must be >= 1");
  if (o->batch < 2) return nic_err(err, NIC_EINVAL, "batch must be >= 2 (batch norm)");
  if (o->mix != NIC_ENC_MIX_ROUND_ROBIN && o->batch < nt)
    return nic_err(err, NIC_EINVAL, "batch %d is smaller than the number of tasks (%d)", o->batch,
                   nt);
  if (o->embed_dim < 1 || o->embed_dim > 65536)
    return nic_err(err, NIC_EINVAL, "embedding size must be in [1, 65536]");
  if (o->head_hidden < 0) return nic_err(err, NIC_EINVAL, "head hidden units must be >= 0");
  if (!(o->bn_momentum > 0 && o->bn_momentum < 1))
    return nic_err(err, NIC_EINVAL, "batch-norm momentum must be in (0, 1)");
  if (o->objective == NIC_ENC_CONTRASTIVE && (!(o->temperature > 0) || o->proj_dim < 1))
    return nic_err(err, NIC_EINVAL, "contrastive: temperature must be > 0 and proj_dim >= 1");
  if (!(o->ema >= 0 && o->ema < 1))
    return nic_err(err, NIC_EINVAL, "EMA decay must be in [0, 1), got %g", (double)o->ema);
  if (o->patience < 0 || o->warmup < 0 || o->loader_threads < 0 || o->steps_per_epoch < 0)
    return nic_err(err, NIC_EINVAL, "patience, warmup, loader threads and steps must be >= 0");
  return NIC_OK;
}

/* ---- setup ------------------------------------------------------------------------ */

/* The trunk: the architecture, rebuilt with the run's batch-norm momentum,
 * initialised from the seed. */
static nic_status build_trunk(enc_run *r, nic_error *err) {
  nic_model *proto = NULL, *m = NULL;
  nic_status s = nic_encoder_build_arch(&proto, r->o->arch, r->o->embed_dim, err);
  if (s != NIC_OK) return s;
  const nic_input_info *pin = nic_model_input_info(proto);
  s = nic_model_create(&m, pin->channels, pin->height, pin->width, err);
  if (s == NIC_OK) {
    *nic_model_input_info(m) = *pin;
    if (enc_copy_nodes(m, proto, 0, r->o->bn_momentum, err) < 0)
      s = err && err->code ? err->code : NIC_EINVAL;
  }
  /* the prototype's parameters carry its initial batch-norm values */
  if (s == NIC_OK) s = enc_copy_params(m, proto, "the architecture", err);
  const char *an = nic_model_get_meta(proto, "architecture_name");
  if (s == NIC_OK && an) nic_model_set_meta(m, "architecture_name", an);
  nic_model_free(proto);
  if (s == NIC_OK) s = nic_model_init_params(m, r->ctx, err);
  if (s != NIC_OK) {
    nic_model_free(m);
    return s;
  }
  const nic_input_info *in = nic_model_input_info(m);
  int nd;
  int64_t shp[NIC_MAX_DIMS];
  nic_model_node_shape(m, nic_model_num_nodes(m), &nd, shp);
  r->trunk = m;
  r->P = in->patch_size;
  r->mpp = in->mpp > 0 ? in->mpp : 0.5;
  r->dim = (int)shp[1];
  return NIC_OK;
}

/* Samples per batch of each task, and steps per epoch. */
static void plan_batches(enc_run *r) {
  const nic_enc_train_opts *o = r->o;
  int B = o->batch, nt = r->nt;
  int64_t total = 0;
  for (int i = 0; i < nt; i++) total += r->t[i].ntrain;
  if (o->mix == NIC_ENC_MIX_ROUND_ROBIN) {
    for (int i = 0; i < nt; i++) r->t[i].sub = B;
  } else {
    /* largest remainder, at least one sample each */
    double frac[64];
    int given = 0;
    for (int i = 0; i < nt; i++) {
      double share =
          o->mix == NIC_ENC_MIX_UNIFORM ? 1.0 / nt : (double)r->t[i].ntrain / (double)total;
      double q = share * B;
      r->t[i].sub = (int)floor(q);
      frac[i] = q - floor(q);
      given += r->t[i].sub;
    }
    while (given < B) {
      int best = 0;
      for (int i = 1; i < nt; i++)
        if (frac[i] > frac[best]) best = i;
      r->t[best].sub++;
      frac[best] = -1;
      given++;
    }
    for (int i = 0; i < nt; i++)
      while (r->t[i].sub == 0) { /* take one from the largest share */
        int big = 0;
        for (int j = 1; j < nt; j++)
          if (r->t[j].sub > r->t[big].sub) big = j;
        r->t[big].sub--;
        r->t[i].sub++;
      }
  }
  r->steps = o->steps_per_epoch > 0 ? o->steps_per_epoch : (total + B - 1) / B;
}

static nic_status make_loaders(enc_run *r, nic_error *err) {
  const nic_enc_train_opts *o = r->o;
  for (int i = 0; i < r->nt; i++) {
    enc_task *t = &r->t[i];
    nic_loader_opts lo = nic_loader_default_opts();
    lo.batch_size = t->sub;
    lo.patch_size = r->P;
    lo.mpp = r->mpp;
    lo.threads = o->loader_threads;
    lo.seed = enc_seed(o->seed, 5, (uint64_t)i);
    lo.sampling = t->balanced ? NIC_SAMPLE_BALANCED : NIC_SAMPLE_SHUFFLE;
    lo.split = NIC_SPLIT_TRAIN;
    /* contrastive views are made from the clean patch, two per sample */
    lo.augment = o->objective == NIC_ENC_CONTRASTIVE ? NULL : &o->augment;
    nic_status s = nic_loader_create(&t->loader, &t->ds, 1, &lo, err);
    if (s != NIC_OK) return nic_err_prefix(err, "task %s: ", t->spec.name);
  }
  return NIC_OK;
}

/* Appends model m's parameters to out (when non-NULL) from index n; returns
 * the new count. */
static int append_params(nic_param **out, int n, nic_model *m) {
  int np;
  nic_param **ps = nic_model_params(m, &np);
  for (int i = 0; out && i < np; i++) out[n + i] = ps[i];
  return n + np;
}

int enc_all_params(const enc_run *r, nic_param **out) {
  int n = append_params(out, 0, r->trunk);
  for (int i = 0; i < r->nt; i++)
    if (r->t[i].head) n = append_params(out, n, r->t[i].head);
  if (r->shared) n = append_params(out, n, r->shared);
  return n;
}

static nic_status alloc_batch(enc_run *r, nic_error *err) {
  int B = r->o->batch;
  r->cap = r->o->objective == NIC_ENC_CONTRASTIVE ? 2 * B : B;
  size_t per = (size_t)r->P * (size_t)r->P * 3, cap = (size_t)r->cap;
  r->pix = malloc(per * cap);
  if (r->o->objective == NIC_ENC_CONTRASTIVE) r->raw = malloc(per * (size_t)B);
  r->task_of = malloc(sizeof *r->task_of * cap);
  r->label = malloc(sizeof *r->label * cap);
  r->value = malloc(sizeof *r->value * cap);
  r->mask = malloc(sizeof *r->mask * cap * (size_t)r->nt);
  int total = enc_all_params(r, NULL);
  r->params = malloc(sizeof *r->params * (size_t)total);
  r->cap_params = total;
  if (!r->pix || (r->o->objective == NIC_ENC_CONTRASTIVE && !r->raw) || !r->task_of || !r->label ||
      !r->value || !r->mask || !r->params)
    return nic_err(err, NIC_ENOMEM, "out of memory for batches of %d patches", r->cap);
  return NIC_OK;
}

static nic_schedule make_schedule(const nic_enc_train_opts *o, int higher_better) {
  float lr = o->opt.lr;
  switch (o->schedule) {
  case NIC_SCHED_STEP: {
    int step = o->epochs / 3 > 0 ? o->epochs / 3 : 1;
    return nic_sched_step(lr, step, 0.1f);
  }
  case NIC_SCHED_COSINE:
    return nic_sched_cosine(lr, o->min_lr, o->epochs, o->warmup);
  case NIC_SCHED_PLATEAU:
    return nic_sched_plateau(lr, 0.5f, 2, o->min_lr, higher_better);
  default: {
    nic_schedule s = nic_sched_step(lr, 1 << 30, 1.0f);
    s.kind = NIC_SCHED_CONSTANT;
    return s;
  }
  }
}

/* ---- one step --------------------------------------------------------------------- */

/* The next batch of task t's loader, starting its next loader epoch when
 * one ends. A batch whose items all failed to load is reported and skipped. */
static nic_status next_sub(enc_run *r, enc_task *t, int epoch, const nic_batch **b,
                           nic_error *err) {
  int restarts = 0, failures = 0;
  for (;;) {
    nic_status s = nic_loader_next(t->loader, b, err);
    if (s != NIC_OK) {
      if (++failures > 8) return nic_err_prefix(err, "task %s: ", t->spec.name);
      logf_(r, "task %s: skipping a batch: %s", t->spec.name, err ? err->msg : "");
      continue;
    }
    if (*b) return NIC_OK;
    if (++restarts > 2)
      return nic_err(err, NIC_EINVAL, "task %s: no training batches", t->spec.name);
    s = nic_loader_start_epoch(t->loader, (int64_t)epoch * SUB_EPOCHS + ++t->sub_epoch, err);
    if (s != NIC_OK) return s;
  }
}

/* Appends a loader batch of task ti to the combined batch. */
static void append(enc_run *r, int ti, const nic_batch *b, uint8_t *dst) {
  enc_task *t = &r->t[ti];
  size_t per = (size_t)r->P * (size_t)r->P * 3;
  memcpy(dst + per * (size_t)r->n, b->pixels, per * (size_t)b->n);
  for (int i = 0; i < b->n; i++) {
    int j = r->n + i;
    r->task_of[j] = ti;
    r->label[j] = b->label[i];
    r->value[j] = isnan(b->value[i]) ? 0.0f : (float)((b->value[i] - t->vmean) / t->vsd);
    r->mask[(size_t)ti * (size_t)r->cap + (size_t)j] = b->mask[i];
  }
  r->n += b->n;
  t->active = 1;
}

static nic_status assemble(enc_run *r, int epoch, int64_t step, nic_error *err) {
  int contrastive = r->o->objective == NIC_ENC_CONTRASTIVE;
  uint8_t *dst = contrastive ? r->raw : r->pix;
  r->n = 0;
  memset(r->mask, 0, sizeof *r->mask * (size_t)r->cap * (size_t)r->nt);
  for (int i = 0; i < r->nt; i++) r->t[i].active = 0;
  for (int i = 0; i < r->nt; i++) {
    if (r->o->mix == NIC_ENC_MIX_ROUND_ROBIN && i != (int)(step % r->nt)) continue;
    const nic_batch *b = NULL;
    nic_status s = next_sub(r, &r->t[i], epoch, &b, err);
    if (s != NIC_OK) return s;
    append(r, i, b, dst);
  }
  if (contrastive) enc_make_views(r, r->n, r->o->seed, epoch, step * r->o->batch);
  if (r->o->objective == NIC_ENC_AUTOENCODER) return enc_ae_target(r, err);
  return NIC_OK;
}

static void gather_params(enc_run *r, nic_model *m) {
  int np;
  nic_param **ps = nic_model_params(m, &np);
  for (int i = 0; i < np && r->nparams < r->cap_params; i++) r->params[r->nparams++] = ps[i];
}

/* Forward, backward and update on the assembled batch. */
static nic_status train_step(enc_run *r, float *loss, nic_error *err) {
  int start = 1;
  size_t per = (size_t)r->P * (size_t)r->P * 3;
  const nic_tensor *e = NULL;
  nic_status s = nic_model_prepare_rgb8(r->trunk, r->pix, r->n, r->P, (int64_t)r->P * 3,
                                        (int64_t)per, &r->x, &start, err);
  if (s == NIC_OK) s = nic_model_forward_from(r->trunk, r->ctx, &r->x, start, 1, &e, err);
  if (s != NIC_OK) return s;
  nic_model_zero_grad(r->trunk);
  r->nparams = 0;
  gather_params(r, r->trunk);
  for (int i = 0; i < r->nt; i++)
    if (r->t[i].head && r->t[i].active && r->t[i].spec.weight > 0) {
      nic_model_zero_grad(r->t[i].head);
      gather_params(r, r->t[i].head);
    }
  if (r->shared) {
    nic_model_zero_grad(r->shared);
    gather_params(r, r->shared);
  }
  if ((s = enc_heads_step(r, e, loss, err)) != NIC_OK) return s;
  if ((s = nic_model_backward(r->trunk, r->ctx, &r->dsum, NULL, err)) != NIC_OK) return s;
  float norm = 0;
  s = nic_optimizer_step_params(r->opt, r->params, r->nparams, &norm, err);
  if (s == NIC_EINVAL && !isfinite(norm)) { /* refused: the weights are untouched */
    if (r->skipped++ < 3) logf_(r, "skipped a step: %s", err ? err->msg : "");
    return NIC_OK;
  }
  if (s == NIC_OK) enc_ema_update(r);
  return s;
}

/* Reports the items the loaders could not read (they were replaced by
 * others of the same class), each once. */
static void tell_unreadable(enc_run *r) {
  for (int i = 0; i < r->nt; i++) {
    enc_task *t = &r->t[i];
    int n = nic_loader_num_errors(t->loader);
    for (; t->errors_told < n; t->errors_told++) {
      char msg[600];
      nic_loader_error(t->loader, t->errors_told, msg, sizeof msg);
      if (t->errors_told < 20)
        logf_(r, "task %s: skipped an unreadable item: %s", t->spec.name, msg);
    }
  }
}

/* ---- epochs ------------------------------------------------------------------------- */

static void add_metric(json_object *o, const char *key, double v) {
  json_object_object_add(o, key, isfinite(v) ? json_object_new_double(v) : NULL);
}

/* The history record of the epoch just finished, and the summary line. */
static json_object *epoch_record(enc_run *r, int epoch, float lr, double secs, int64_t samples,
                                 double train_loss, double monitor, char *line, size_t n) {
  json_object *h = json_object_new_object(), *tasks = json_object_new_object();
  json_object_object_add(h, "epoch", json_object_new_int(epoch + 1));
  add_metric(h, "lr", lr);
  add_metric(h, "train_loss", train_loss);
  add_metric(h, "seconds", secs);
  json_object_object_add(h, "patches", json_object_new_int64(samples));
  add_metric(h, "patches_per_s", secs > 0 ? (double)samples / secs : NAN);
  add_metric(h, "monitor", monitor);
  size_t len = 0;
  line[0] = 0;
  for (int i = 0; i < r->nt; i++) {
    enc_task *t = &r->t[i];
    json_object *o = json_object_new_object();
    const enc_metrics *v = &t->val;
    add_metric(o, "train_loss", t->loss_w > 0 ? t->loss_sum / t->loss_w : NAN);
    if (t->seen > 0) add_metric(o, "train_accuracy", (double)t->correct / (double)t->seen);
    json_object_object_add(o, "valid_items", json_object_new_int64(v->n));
    add_metric(o, "valid_loss", v->loss);
    int cls = r->o->objective == NIC_ENC_SUPERVISED && t->kind == NIC_ENC_KIND_CLASS;
    int reg = r->o->objective == NIC_ENC_SUPERVISED && t->kind == NIC_ENC_KIND_REGRESSION;
    if (cls) {
      add_metric(o, "accuracy", v->accuracy);
      add_metric(o, "balanced_accuracy", v->balanced_accuracy);
      add_metric(o, "auc", v->auc);
    }
    if (reg) add_metric(o, "mae", v->mae);
    if (r->o->objective == NIC_ENC_CONTRASTIVE) add_metric(o, "top1", v->top1);
    json_object_object_add(tasks, t->spec.name, o);
    if (len >= n) continue;
    if (v->n == 0)
      len +=
          (size_t)snprintf(line + len, n - len, "%s%s: loss %.4f (no validation)", i ? " | " : "",
                           t->spec.name, t->loss_w > 0 ? t->loss_sum / t->loss_w : NAN);
    else if (cls)
      len += (size_t)snprintf(line + len, n - len, "%s%s: loss %.4f acc %.4f bacc %.4f auc %.4f",
                              i ? " | " : "", t->spec.name, v->loss, v->accuracy,
                              v->balanced_accuracy, v->auc);
    else if (reg)
      len += (size_t)snprintf(line + len, n - len, "%s%s: loss %.4f mae %.4g", i ? " | " : "",
                              t->spec.name, v->loss, v->mae);
    else if (r->o->objective == NIC_ENC_CONTRASTIVE)
      len += (size_t)snprintf(line + len, n - len, "%s%s: loss %.4f top1 %.4f", i ? " | " : "",
                              t->spec.name, v->loss, v->top1);
    else
      len += (size_t)snprintf(line + len, n - len, "%s%s: loss %.4f", i ? " | " : "", t->spec.name,
                              v->loss);
  }
  json_object_object_add(h, "tasks", tasks);
  return h;
}

static void report(enc_run *r, int epoch, int64_t step, int64_t samples, double secs, double loss,
                   const char *summary, double monitor, int improved, int stopping) {
  if (!r->o->progress) return;
  nic_enc_progress p = {epoch, r->o->epochs,    step,    r->steps, samples,  secs,
                        loss,  summary != NULL, summary, monitor,  improved, stopping};
  r->o->progress(r->o->user, &p);
}

/* Decides whether this epoch's monitor is the best so far. */
static int improves(enc_run *r, double monitor, int higher) {
  if (!isfinite(monitor)) return 0;
  if (!isfinite(r->best)) return 1;
  return higher ? monitor > r->best : monitor < r->best;
}

static nic_status run_epoch(enc_run *r, int epoch, nic_error *err) {
  const nic_enc_train_opts *o = r->o;
  int higher = 0;
  double prev = NAN;
  if (r->history && json_object_array_length(r->history) > 0) {
    json_object *last =
                    json_object_array_get_idx(r->history, json_object_array_length(r->history) - 1),
                *m = NULL;
    if (json_object_object_get_ex(last, "monitor", &m) && m) prev = json_object_get_double(m);
  }
  float lr = nic_sched_lr(&r->sched, epoch, (float)prev);
  nic_optimizer_set_lr(r->opt, lr);
  /* dropout and anything else drawing from the context: a stream per epoch */
  nic_rng_seed(nic_ctx_rng(r->ctx), enc_seed(o->seed, 6, (uint64_t)epoch));
  nic_status s = NIC_OK;
  for (int i = 0; i < r->nt && s == NIC_OK; i++) {
    enc_task *t = &r->t[i];
    t->sub_epoch = 0;
    t->loss_sum = t->loss_w = 0;
    t->correct = t->seen = 0;
    s = nic_loader_start_epoch(t->loader, (int64_t)epoch * SUB_EPOCHS, err);
  }
  double t0 = now_s(), loss_sum = 0;
  int64_t samples = 0;
  for (int64_t step = 0; step < r->steps && s == NIC_OK; step++) {
    float loss = 0;
    s = assemble(r, epoch, step, err);
    if (s == NIC_OK) s = train_step(r, &loss, err);
    if (s != NIC_OK) break;
    loss_sum += loss;
    samples += r->n;
    report(r, epoch, step + 1, samples, now_s() - t0, loss_sum / (double)(step + 1), NULL, NAN, 0,
           0);
  }
  if (s != NIC_OK) return nic_err_prefix(err, "epoch %d: ", epoch + 1);
  double secs = now_s() - t0;
  tell_unreadable(r);
  /* validation and the encoder file see the averaged weights */
  if (r->ema_n) enc_ema_swap(r);
  s = enc_validate(r, err);
  if (s != NIC_OK) {
    if (r->ema_live) enc_ema_swap(r);
    return s;
  }
  double monitor = enc_monitor_value(r, &higher);
  int improved = improves(r, monitor, higher);
  int validates = 0;
  for (int i = 0; i < r->nt; i++) validates |= r->t[i].nvalid > 0;
  if (improved) {
    r->best = monitor;
    r->best_epoch = epoch;
    r->bad_epochs = 0;
  } else if (validates) {
    r->bad_epochs++; /* an undefined monitor counts as no improvement */
  } else {
    r->best_epoch = epoch; /* without validation the latest epoch is the one kept */
  }
  char line[2048];
  json_object *h = epoch_record(r, epoch, lr, secs, samples, loss_sum / (double)r->steps, monitor,
                                line, sizeof line);
  if (!r->history) r->history = json_object_new_array();
  json_object_array_add(r->history, h);
  r->epoch = epoch + 1;
  int stopping = o->patience > 0 && r->bad_epochs >= o->patience && r->epoch < o->epochs;
  r->stopped = stopping;
  if (improved || !validates) s = enc_save_encoder(r, err);
  if (r->ema_live) enc_ema_swap(r);
  if (s != NIC_OK) return s;
  if ((s = enc_save_checkpoint(r, err)) != NIC_OK || (s = enc_write_card(r, err)) != NIC_OK)
    return s;
  report(r, epoch, r->steps, samples, secs, loss_sum / (double)r->steps, line, monitor, improved,
         stopping);
  return NIC_OK;
}

/* ---- the run ------------------------------------------------------------------------- */

static void release(enc_run *r) {
  for (int i = 0; i < r->nt; i++) enc_task_release(&r->t[i]);
  free(r->t);
  nic_model_free(r->shared);
  nic_model_free(r->trunk);
  nic_optimizer_free(r->opt);
  free(r->pix);
  free(r->raw);
  free(r->task_of);
  free(r->label);
  free(r->value);
  free(r->mask);
  free(r->params);
  nic_tensor_free(&r->x);
  nic_tensor_free(&r->demb);
  nic_tensor_free(&r->dsum);
  nic_tensor_free(&r->g);
  nic_tensor_free(&r->target);
  enc_ema_free(r);
  json_object_put(r->history);
}

static nic_status setup(enc_run *r, const nic_enc_task *tasks, nic_error *err) {
  const nic_enc_train_opts *o = r->o;
  nic_status s = NIC_OK;
  for (int i = 0; i < r->nt && s == NIC_OK; i++) {
    r->t[i].spec = tasks[i];
    r->t[i].index = i;
    r->t[i].val = (enc_metrics){0, NAN, NAN, NAN, NAN, NAN, NAN};
    if ((s = enc_task_setup(&r->t[i], o, err)) == NIC_OK) {
      char line[1024];
      enc_task_describe(&r->t[i], o, line, sizeof line);
      logf_(r, "task %s", line);
    }
  }
  if (s != NIC_OK) return s;
  if ((s = enc_monitor_check(r, err)) != NIC_OK) return s;
  nic_rng_seed(nic_ctx_rng(r->ctx), enc_seed(o->seed, 4, 0));
  if ((s = build_trunk(r, err)) != NIC_OK || (s = enc_heads_build(r, err)) != NIC_OK) return s;
  if ((s = nic_optimizer_create(&r->opt, &o->opt, err)) != NIC_OK) return s;
  if (o->init && *o->init && !o->resume) {
    if ((s = enc_init_from(r, o->init, err)) != NIC_OK) return s;
    logf_(r, "initialised from %s: the trunk and %d of %d task heads", o->init, r->init_heads,
          r->nt);
  }
  if ((s = enc_ema_setup(r, err)) != NIC_OK) return s;
  /* the monitor's direction, for the plateau schedule */
  const char *dot = o->monitor ? strrchr(o->monitor, '.') : NULL;
  int higher = dot && strcmp(dot + 1, "loss") && strcmp(dot + 1, "mae");
  r->sched = make_schedule(o, higher);
  plan_batches(r);
  if ((s = alloc_batch(r, err)) != NIC_OK) return s;
  return make_loaders(r, err);
}

nic_status nic_encoder_train(nic_ctx *ctx, const nic_enc_task *tasks, int ntasks,
                             const nic_enc_train_opts *opts, nic_error *err) {
  nic_status s = check_opts(tasks, ntasks, opts, err);
  if (s != NIC_OK) return s;
  /* A resumed run continues the checkpoint's random streams, whatever seed
   * it was given now. */
  nic_enc_train_opts o = *opts;
  char ckpt[4200];
  nic_enc_checkpoint_path(opts->output, ckpt, sizeof ckpt);
  if (o.resume && (s = enc_checkpoint_seed(ckpt, &o.seed, err)) != NIC_OK) return s;
  enc_run r;
  memset(&r, 0, sizeof r);
  r.ctx = ctx;
  r.o = &o;
  r.nt = ntasks;
  r.best = NAN;
  r.best_epoch = -1;
  r.x = r.demb = r.dsum = r.g = r.e4 = r.target = (nic_tensor)NIC_TENSOR_INIT;
  nic_enc_card_path(opts->output, r.card_path, sizeof r.card_path);
  nic_enc_checkpoint_path(opts->output, r.ckpt_path, sizeof r.ckpt_path);
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(r.created, sizeof r.created, "%Y-%m-%dT%H:%M:%SZ", &tm);
  r.t = calloc((size_t)ntasks, sizeof *r.t);
  if (!r.t) return nic_err(err, NIC_ENOMEM, "out of memory");
  s = setup(&r, tasks, err);
  if (s == NIC_OK) {
    logf_(&r,
          "%s encoder '%s' (%d-d embedding, %lld parameters, %.0f MFLOP/patch), %s; "
          "%lld steps of %d patches per epoch (%s mixing)",
          opts->arch ? opts->arch : "nic", opts->output, r.dim,
          (long long)nic_model_num_trainable(r.trunk), (double)nic_model_flops(r.trunk) / 1e6,
          nic_enc_objective_name(opts->objective), (long long)r.steps, opts->batch,
          nic_enc_mix_name(opts->mix));
  }
  if (s == NIC_OK && o.resume) {
    s = enc_load_checkpoint(&r, err);
    if (s == NIC_OK)
      logf_(&r, "resuming %s after epoch %d of %d (seed %llu)%s", r.ckpt_path, r.epoch, o.epochs,
            (unsigned long long)o.seed, r.stopped ? "; it had stopped early" : "");
    if (s == NIC_OK && !r.opt_restored && r.epoch < o.epochs && !r.stopped)
      logf_(&r, "note: the checkpoint holds no optimizer state (written by an older nic); "
                "the optimizer starts afresh");
    if (s == NIC_OK && o.seed != opts->seed)
      logf_(&r, "note: the checkpoint's seed %llu replaces --seed %llu", (unsigned long long)o.seed,
            (unsigned long long)opts->seed);
  }
  for (int e = r.epoch; s == NIC_OK && e < opts->epochs && !r.stopped; e++)
    s = run_epoch(&r, e, err);
  /* The encoder file must exist, and its card must tell the whole story. */
  if (s == NIC_OK && r.best_epoch < 0) {
    if (r.ema_n) enc_ema_swap(&r);
    s = enc_save_encoder(&r, err);
    if (r.ema_live) enc_ema_swap(&r);
  }
  if (s == NIC_OK) s = enc_write_card(&r, err);
  if (s == NIC_OK && r.best_epoch >= 0) {
    nic_model *best = NULL;
    if ((s = nic_model_load(&best, opts->output, err)) == NIC_OK) {
      json_object *card = enc_card(&r);
      nic_model_set_meta(best, "model_card",
                         json_object_to_json_string_ext(card, JSON_C_TO_STRING_PLAIN |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
      json_object_put(card);
      s = nic_model_save(best, opts->output, err);
      nic_model_free(best);
    }
  }
  release(&r);
  return s;
}
