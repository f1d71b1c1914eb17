/* Training a slide model on one fold.
 *
 * An epoch is ceil(train slides / batch) optimizer steps. Each step draws a
 * batch of training slides (classes equally often with balanced batches,
 * else a shuffled pass over the slides), augments them (one of the eight
 * rotations/flips with the matching orientation encodings, a random crop
 * centre and an occlusion box for the CNN; a random orientation and
 * instance dropout for ABMIL), and takes one Adam step on the task's loss
 * over the batch. After every epoch the validation slides are predicted as
 * at test time; the best epoch (validation main metric, ties broken by the
 * validation loss) is kept, the learning rate is halved on plateaus, and
 * training stops early after `patience` epochs without improvement. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "slidemodel/sm_internal.h"

/* Small cohorts still get this many optimizer steps between validations
 * (each with fresh crops and orientations) unless opts->steps says. */
#define SM_MIN_STEPS 20

typedef struct trainer {
  nic_ctx *ctx;
  const nic_cohort *c;
  const nic_sm_opts *o;
  nic_slidemodel *m;
  sm_data d; /* local slides: training ones first, then validation ones */
  int ntr, nva;
  int *cidx; /* local -> cohort index */
  int B;
  nic_rng rng;
  nic_optimizer *opt;
  /* drawing batches */
  int *by_class, *class_start, *class_count; /* training slides grouped by class */
  int *perm, pos;
  float *class_w;
  /* a batch */
  int *labels;
  float *target, *time;
  int *event;
  nic_tensor out, grad;
  float **bags; /* ABMIL: the batch's bags */
  int64_t *bag_n;
  size_t *bag_cap;
  uint8_t *keep;
  /* validation */
  int *vcls, *vevent;
  double *vvalue, *vscores;
  /* the best epoch's parameters */
  float *best;
  size_t best_n;
} trainer;

static int classify(nic_task t) {
  return t == NIC_TASK_BINARY || t == NIC_TASK_MULTICLASS;
}

static void trainer_free(trainer *t) {
  sm_data_free(&t->d);
  nic_optimizer_free(t->opt);
  free(t->cidx), free(t->by_class), free(t->class_start), free(t->class_count), free(t->perm);
  free(t->class_w), free(t->labels), free(t->target), free(t->time), free(t->event);
  nic_tensor_free(&t->out);
  nic_tensor_free(&t->grad);
  for (int b = 0; t->bags && b < t->B; b++) free(t->bags[b]);
  free(t->bags), free(t->bag_n), free(t->bag_cap), free(t->keep);
  free(t->vcls), free(t->vevent), free(t->vvalue), free(t->vscores), free(t->best);
}

static const nic_cohort_slide *entry(const trainer *t, int local) {
  return &t->c->slides[t->cidx[local]];
}

/* ---- setup ------------------------------------------------------------------ */

/* The cluster detector's output starts increasing in its pooled scores:
 * class 1 (binary), class f mod K (multiclass) or the value (regression,
 * survival) rises with score map f. With a zero start, gradient descent
 * picks the sign from the first batches, and "a positive slide has no
 * high score" is a dead end for a max over cells (seeds 2 and 3 of the
 * mosaic cohort ended near AUC 0.6 that way). */
static void cluster_output_init(nic_slidemodel *m) {
  nic_tensor *w = &nic_model_param(m->net, "out.weight")->value;
  int F = m->filters, K = m->nout;
  for (int c = 0; c < K; c++)
    for (int f = 0; f < F; f++) {
      float v = m->task == NIC_TASK_BINARY       ? (c == 1 ? 1.0f : 0.0f)
                : m->task == NIC_TASK_MULTICLASS ? (f % K == c ? 1.0f : 0.0f)
                                                 : 1.0f / (float)F;
      w->data[(int64_t)c * F + f] = v;
    }
}

static nic_status check_opts(const nic_sm_opts *o, nic_error *err) {
  if (o->kind != NIC_SM_CNN && o->kind != NIC_SM_ABMIL && o->kind != NIC_SM_CLUSTER)
    return nic_err(err, NIC_EINVAL, "unknown model kind %d", (int)o->kind);
  if (o->kind == NIC_SM_CLUSTER &&
      (o->crop < 1 || o->scores < 1 || o->smooth < 1 || o->smooth % 2 == 0 || o->smooth > 63))
    return nic_err(err, NIC_EINVAL,
                   "cluster model: crop and score maps must be >= 1, smooth odd in [1, 63] "
                   "(got %d, %d, %d)",
                   o->crop, o->scores, o->smooth);
  if (o->epochs < 1) return nic_err(err, NIC_EINVAL, "epochs must be >= 1, got %d", o->epochs);
  if (o->batch < 0 || (o->kind == NIC_SM_CNN && o->batch == 1))
    return nic_err(err, NIC_EINVAL, "batch must be >= 2 for the CNN (batch norm), got %d",
                   o->batch);
  if (o->kind == NIC_SM_CNN && (o->crop < 1 || o->filters < 1 || o->hidden < 1))
    return nic_err(err, NIC_EINVAL, "crop, filters and hidden units must be >= 1");
  if (o->kind == NIC_SM_CNN && (o->strided < 0 || o->strided > 8))
    return nic_err(err, NIC_EINVAL, "strided blocks must be 0-8, got %d", o->strided);
  if (o->kind == NIC_SM_ABMIL &&
      (o->hidden < 1 || o->attn_dim < 1 || o->hidden > SM_ABMIL_MAX_DIM ||
       o->attn_dim > SM_ABMIL_MAX_DIM || o->max_instances < 1))
    return nic_err(err, NIC_EINVAL, "ABMIL dimensions must be in [1, %d]", SM_ABMIL_MAX_DIM);
  if (!(o->dropout >= 0 && o->dropout < 1) || !(o->occlusion >= 0 && o->occlusion <= 1) ||
      !(o->instance_drop >= 0 && o->instance_drop < 1))
    return nic_err(err, NIC_EINVAL,
                   "dropout and instance dropout must be in [0, 1), occlusion in [0, 1]");
  if (o->lr < 0 || o->weight_decay < 0 || o->min_lr < 0)
    return nic_err(err, NIC_EINVAL, "learning rates and weight decay must be >= 0");
  if (o->pool > NIC_POOL_MAX) return nic_err(err, NIC_EINVAL, "unknown pooling %d", o->pool);
  return NIC_OK;
}

/* Training slides by class, for balanced batches, and class weights. */
static nic_status group_classes(trainer *t, nic_error *err) {
  int K = t->c->num_classes;
  t->by_class = malloc(sizeof(int) * (size_t)t->ntr);
  t->class_start = calloc((size_t)K + 1, sizeof(int));
  t->class_count = calloc((size_t)K, sizeof(int));
  t->class_w = malloc(sizeof(float) * (size_t)K);
  if (!t->by_class || !t->class_start || !t->class_count || !t->class_w)
    return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int l = 0; l < t->ntr; l++) t->class_count[entry(t, l)->cls]++;
  int present = 0;
  for (int k = 0; k < K; k++) {
    t->class_start[k + 1] = t->class_start[k] + t->class_count[k];
    present += t->class_count[k] > 0;
    t->class_w[k] = t->class_count[k] ? (float)t->ntr / ((float)K * t->class_count[k]) : 0.0f;
  }
  if (present < 2) return nic_err(err, NIC_EINVAL, "the training slides hold only one class");
  int *fill = calloc((size_t)K, sizeof(int));
  if (!fill) return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int l = 0; l < t->ntr; l++) {
    int k = entry(t, l)->cls;
    t->by_class[t->class_start[k] + fill[k]++] = l;
  }
  free(fill);
  return NIC_OK;
}

static nic_status setup(trainer *t, const nic_fold *f, nic_error *err) {
  const nic_cohort *c = t->c;
  const nic_sm_opts *o = t->o;
  t->ntr = f->ntrain;
  t->nva = f->nval;
  int n = t->ntr + t->nva;
  if (t->ntr < 2)
    return nic_err(err, NIC_EINVAL, "training needs 2 slides or more, got %d", t->ntr);
  t->cidx = malloc(sizeof(int) * (size_t)n);
  const char **paths = calloc((size_t)n, sizeof *paths);
  if (!t->cidx || !paths) {
    free(paths);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  for (int i = 0; i < n; i++) {
    t->cidx[i] = i < t->ntr ? f->train[i] : f->val[i - t->ntr];
    paths[i] = c->slides[t->cidx[i]].path;
    if (!paths[i]) {
      free(paths);
      return nic_err(err, NIC_EINVAL, "slide '%s' has no features file",
                     c->slides[t->cidx[i]].slide_id);
    }
  }
  nic_status st = sm_data_open(&t->d, paths, n, o->orientations, o->cache_mb << 20, err);
  free(paths);
  if (st != NIC_OK) return st;
  for (int i = 0; i < n; i++)
    if (t->d.s[i].n == 0) return nic_err(err, NIC_EINVAL, "%s: no tissue cell", t->d.s[i].path);
  if (classify(c->task) && (st = group_classes(t, err)) != NIC_OK) return st;
  if (c->task == NIC_TASK_SURVIVAL) {
    int events = 0;
    for (int l = 0; l < t->ntr; l++) events += entry(t, l)->event == 1;
    if (!events) return nic_err(err, NIC_EINVAL, "no event among the training slides");
  }
  t->perm = malloc(sizeof(int) * (size_t)t->ntr);
  if (!t->perm) return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int l = 0; l < t->ntr; l++) t->perm[l] = l;
  t->pos = t->ntr; /* shuffle before the first draw */
  return NIC_OK;
}

/* The model around the network: statistics, crop size, network, optimizer. */
static nic_status make_model(trainer *t, nic_error *err) {
  const nic_sm_opts *o = t->o;
  int C = t->d.C;
  nic_status st = sm_model_new(&t->m, t->c, o, C, err);
  if (st != NIC_OK) return st;
  nic_slidemodel *m = t->m;
  int *tr = malloc(sizeof(int) * (size_t)t->ntr);
  if (!tr) return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int l = 0; l < t->ntr; l++) tr[l] = l;
  st = sm_feature_stats(&t->d, tr, t->ntr, m->mean, m->istd, err);
  free(tr);
  if (st != NIC_OK) return st;
  if (t->c->task == NIC_TASK_REGRESSION) { /* standardised targets */
    double s = 0, ss = 0;
    for (int l = 0; l < t->ntr; l++) s += entry(t, l)->value;
    m->y_mean = s / t->ntr;
    for (int l = 0; l < t->ntr; l++) ss += pow(entry(t, l)->value - m->y_mean, 2);
    m->y_sd = sqrt(ss / (t->ntr > 1 ? t->ntr - 1 : 1));
    if (!(m->y_sd > 1e-12)) m->y_sd = 1;
  }
  /* the context's stream drives initialisation and dropout: seed it */
  nic_rng_seed(nic_ctx_rng(t->ctx), sm_mix(o->seed ^ 0x5eedull));
  nic_rng_seed(&t->rng, sm_mix(o->seed ^ 0xba7c4ull));
  if (o->kind != NIC_SM_ABMIL) {
    int side = 1;
    for (int i = 0; i < t->d.n; i++) {
      if (t->d.s[i].H > side) side = t->d.s[i].H;
      if (t->d.s[i].W > side) side = t->d.s[i].W;
    }
    int fit = (side + 63) / 64 * 64; /* small grids: whole, padded to a multiple of 64 */
    m->crop = fit < o->crop ? fit : o->crop;
    sm_cnn_arch a = {.C = C,
                     .R = m->crop,
                     .filters = m->filters,
                     .hidden = o->hidden,
                     .nout = m->nout,
                     .pool = (nic_pool_kind)m->pool,
                     .strided = m->strided,
                     .dropout = o->dropout,
                     .smooth = m->smooth};
    st = sm_cnn_build(&m->net, &a, 0, err);
    if (st == NIC_OK) st = nic_model_init_params(m->net, t->ctx, err);
    /* the output layer starts at zero: every class equally likely, and no
     * random initial logits for the deep, narrow network to unlearn (it
     * finds small lesions much sooner) */
    if (st == NIC_OK) nic_tensor_zero(&nic_model_param(m->net, "out.weight")->value);
    if (st == NIC_OK && m->kind == NIC_SM_CLUSTER) cluster_output_init(m);
  } else {
    m->crop = 0;
    st = sm_abmil_build(&m->net, C, o->hidden, o->attn_dim, m->nout, t->ctx, err);
    if (st == NIC_OK) st = sm_abmil_bind(&m->ab, m->net, err);
    m->ab.threads = nic_ctx_threads(t->ctx);
  }
  if (st != NIC_OK) return st;
  float lr = o->lr > 0                   ? o->lr
             : o->kind == NIC_SM_CNN     ? 1e-3f
             : o->kind == NIC_SM_CLUSTER ? 1e-2f
                                         : 2e-4f;
  nic_opt_config oc = nic_opt_default(NIC_OPT_ADAM, lr);
  oc.weight_decay = o->weight_decay;
  oc.clip_norm = 5.0f; /* a bad batch must not wreck a small model */
  return nic_optimizer_create(&t->opt, &oc, err);
}

static nic_status alloc_batch(trainer *t, nic_error *err) {
  int B = t->B, ns = nic_sm_num_scores(t->m);
  t->labels = malloc(sizeof(int) * (size_t)B);
  t->target = malloc(sizeof(float) * (size_t)B);
  t->time = malloc(sizeof(float) * (size_t)B);
  t->event = malloc(sizeof(int) * (size_t)B);
  int nv = t->nva ? t->nva : 1;
  t->vcls = malloc(sizeof(int) * (size_t)nv);
  t->vevent = malloc(sizeof(int) * (size_t)nv);
  t->vvalue = malloc(sizeof(double) * (size_t)nv);
  t->vscores = malloc(sizeof(double) * (size_t)nv * (size_t)ns);
  if (!t->labels || !t->target || !t->time || !t->event || !t->vcls || !t->vevent || !t->vvalue ||
      !t->vscores)
    return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int v = 0; v < t->nva; v++) {
    const nic_cohort_slide *e = entry(t, t->ntr + v);
    t->vcls[v] = e->cls;
    t->vevent[v] = e->event;
    t->vvalue[v] = e->value;
  }
  if (t->o->kind == NIC_SM_ABMIL) {
    int64_t most = 1;
    for (int i = 0; i < t->d.n; i++) most = t->d.s[i].n > most ? t->d.s[i].n : most;
    t->bags = calloc((size_t)B, sizeof *t->bags);
    t->bag_n = calloc((size_t)B, sizeof *t->bag_n);
    t->bag_cap = calloc((size_t)B, sizeof *t->bag_cap);
    t->keep = malloc((size_t)most);
    if (!t->bags || !t->bag_n || !t->bag_cap || !t->keep)
      return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  int np;
  nic_param **ps = nic_model_params(t->m->net, &np);
  for (int i = 0; i < np; i++) t->best_n += (size_t)nic_tensor_numel(&ps[i]->value);
  if (!(t->best = malloc(sizeof(float) * (t->best_n ? t->best_n : 1))))
    return nic_err(err, NIC_ENOMEM, "out of memory");
  return NIC_OK;
}

/* Copies every parameter and buffer to (save) or from (restore) t->best. */
static void snapshot(trainer *t, int save) {
  int np;
  nic_param **ps = nic_model_params(t->m->net, &np);
  size_t at = 0;
  for (int i = 0; i < np; i++) {
    size_t n = (size_t)nic_tensor_numel(&ps[i]->value);
    if (save)
      memcpy(t->best + at, ps[i]->value.data, sizeof(float) * n);
    else
      memcpy(ps[i]->value.data, t->best + at, sizeof(float) * n);
    at += n;
  }
}

/* ---- batches --------------------------------------------------------------------- */

static void shuffle(int *a, int n, nic_rng *r) {
  for (int i = n - 1; i > 0; i--) {
    int j = (int)nic_rng_below(r, (uint64_t)i + 1);
    int x = a[i];
    a[i] = a[j];
    a[j] = x;
  }
}

/* The next training slide (local index) of a batch. */
static int draw(trainer *t) {
  if (classify(t->c->task) && t->o->balance == NIC_BALANCE_BATCHES) {
    int K = t->c->num_classes, k;
    do k = (int)nic_rng_below(&t->rng, (uint64_t)K);
    while (t->class_count[k] == 0);
    return t
        ->by_class[t->class_start[k] + (int)nic_rng_below(&t->rng, (uint64_t)t->class_count[k])];
  }
  if (t->pos == t->ntr) {
    shuffle(t->perm, t->ntr, &t->rng);
    t->pos = 0;
  }
  return t->perm[t->pos++];
}

/* The batch's targets for slide `local` at position b. */
static void set_target(trainer *t, int b, int local) {
  const nic_cohort_slide *e = entry(t, local);
  t->labels[b] = e->cls;
  t->target[b] = (float)((e->value - t->m->y_mean) / t->m->y_sd);
  t->time[b] = (float)e->value;
  t->event[b] = e->event;
}

/* The task's loss of outputs y (B x nout) and its gradient. */
static nic_status batch_loss(trainer *t, const nic_tensor *y, float *loss, nic_error *err) {
  switch (t->c->task) {
  case NIC_TASK_BINARY:
  case NIC_TASK_MULTICLASS:
    return nic_loss_softmax_ce(y, t->labels,
                               t->o->balance == NIC_BALANCE_WEIGHTS ? t->class_w : NULL, NULL, loss,
                               &t->grad, err);
  case NIC_TASK_REGRESSION:
    return nic_loss_mse(y, t->target, NULL, loss, &t->grad, err);
  case NIC_TASK_SURVIVAL:
    return nic_loss_cox(y, t->time, t->event, loss, &t->grad, err);
  }
  return nic_err(err, NIC_EINVAL, "unknown task");
}

static nic_status cnn_step(trainer *t, float *loss, nic_error *err) {
  nic_slidemodel *m = t->m;
  int R = m->crop, C = m->C;
  int64_t per = (int64_t)C * R * R;
  nic_status st = nic_tensor_alloc4(&m->x, t->B, C, R, R, err);
  for (int b = 0; b < t->B && st == NIC_OK; b++) {
    int l = draw(t);
    set_target(t, b, l);
    int o = (int)nic_rng_below(&t->rng, 8);
    sm_crop cr;
    sm_crop_choose(&t->d.s[l], R, o, 1, t->o->occlusion, &t->rng, &cr);
    const float *rows = NULL;
    if ((st = sm_rows(&t->d, l, o, &rows, err)) == NIC_OK)
      sm_crop_place(&t->d.s[l], rows, C, m->mean, m->istd, R, &cr, m->x.data + b * per);
  }
  const nic_tensor *y = NULL;
  if (st == NIC_OK) st = nic_model_forward(m->net, t->ctx, &m->x, 1, &y, err);
  if (st == NIC_OK) st = batch_loss(t, y, loss, err);
  if (st == NIC_OK) {
    nic_model_zero_grad(m->net);
    st = nic_model_backward(m->net, t->ctx, &t->grad, NULL, err);
  }
  if (st == NIC_OK) st = nic_optimizer_step(t->opt, m->net, NULL, err);
  return st;
}

/* Instances kept in a training bag: each dropped with probability
 * instance_drop (at least one stays), then at most max_instances of them,
 * chosen uniformly (selection sampling). */
static void choose_instances(trainer *t, int64_t n) {
  int64_t kept = 0;
  for (int64_t k = 0; k < n; k++) {
    t->keep[k] = nic_rng_uniform(&t->rng) >= t->o->instance_drop;
    kept += t->keep[k];
  }
  if (kept == 0) {
    t->keep[nic_rng_below(&t->rng, (uint64_t)n)] = 1;
    kept = 1;
  }
  int64_t need = t->o->max_instances;
  if (kept <= need) return;
  for (int64_t k = 0, left = kept; k < n; k++) {
    if (!t->keep[k]) continue;
    if (nic_rng_uniform(&t->rng) * (double)left < (double)need)
      need--;
    else
      t->keep[k] = 0;
    left--;
  }
}

static nic_status abmil_step(trainer *t, float *loss, nic_error *err) {
  nic_slidemodel *m = t->m;
  int C = m->C, K = m->nout;
  nic_status st = nic_tensor_alloc2(&t->out, t->B, K, err);
  for (int b = 0; b < t->B && st == NIC_OK; b++) {
    int l = draw(t);
    set_target(t, b, l);
    int o = (int)nic_rng_below(&t->rng, 8);
    choose_instances(t, t->d.s[l].n);
    int64_t n = 0;
    if ((st = sm_model_bag(m, &t->d, l, o, t->keep, &n, err)) != NIC_OK) break;
    size_t want = (size_t)n * (size_t)C;
    if (t->bag_cap[b] < want) {
      float *p = realloc(t->bags[b], sizeof *p * want);
      if (!p) {
        st = nic_err(err, NIC_ENOMEM, "out of memory");
        break;
      }
      t->bags[b] = p;
      t->bag_cap[b] = want;
    }
    memcpy(t->bags[b], m->bag, sizeof(float) * want);
    t->bag_n[b] = n;
    st = sm_abmil_forward(&m->ab, t->bags[b], n, t->out.data + b * K, NULL, err);
  }
  if (st == NIC_OK) st = batch_loss(t, &t->out, loss, err);
  if (st == NIC_OK) nic_model_zero_grad(m->net);
  /* the workspace holds one bag: run each forward again before its backward */
  float y[SM_ABMIL_MAX_DIM];
  for (int b = 0; b < t->B && st == NIC_OK; b++) {
    st = sm_abmil_forward(&m->ab, t->bags[b], t->bag_n[b], y, NULL, err);
    if (st == NIC_OK)
      st = sm_abmil_backward(&m->ab, t->bags[b], t->bag_n[b], t->grad.data + b * K, err);
  }
  if (st == NIC_OK) st = nic_optimizer_step(t->opt, m->net, NULL, err);
  return st;
}

/* ---- validation -------------------------------------------------------------------- */

/* The validation main metric (NaN when undefined) and loss. */
static nic_status validate(trainer *t, double *metric, double *vloss, nic_error *err) {
  nic_slidemodel *m = t->m;
  int ns = nic_sm_num_scores(m);
  nic_status st = NIC_OK;
  for (int v = 0; v < t->nva && st == NIC_OK; v++)
    st = sm_model_predict(m, t->ctx, &t->d, t->ntr + v, t->vscores + (size_t)v * ns, err);
  if (st != NIC_OK) return st;
  *metric = sm_main_metric(t->c->task, m->K, t->vcls, t->vvalue, t->vevent, t->vscores, t->nva);
  double L = 0;
  switch (t->c->task) {
  case NIC_TASK_BINARY:
  case NIC_TASK_MULTICLASS:
    for (int v = 0; v < t->nva; v++) {
      double p = t->c->task == NIC_TASK_BINARY ? (t->vcls[v] ? t->vscores[v] : 1 - t->vscores[v])
                                               : t->vscores[(size_t)v * ns + t->vcls[v]];
      L -= log(p > 1e-7 ? p : 1e-7);
    }
    L /= t->nva;
    break;
  case NIC_TASK_REGRESSION:
    for (int v = 0; v < t->nva; v++) L += pow((t->vscores[v] - t->vvalue[v]) / m->y_sd, 2);
    L /= t->nva;
    break;
  case NIC_TASK_SURVIVAL: {
    nic_tensor r = NIC_TENSOR_INIT;
    float *risk = malloc(sizeof(float) * (size_t)t->nva),
          *tm = malloc(sizeof(float) * (size_t)t->nva);
    float l = 0;
    if (!risk || !tm) st = nic_err(err, NIC_ENOMEM, "out of memory");
    for (int v = 0; v < t->nva && st == NIC_OK; v++) {
      risk[v] = (float)t->vscores[v];
      tm[v] = (float)t->vvalue[v];
    }
    int64_t shp[2] = {t->nva, 1};
    if (st == NIC_OK) {
      nic_tensor_wrap(&r, risk, 2, shp);
      st = nic_loss_cox(&r, tm, t->vevent, &l, NULL, err);
    }
    free(risk), free(tm);
    L = l;
    break;
  }
  }
  *vloss = L;
  return st;
}

/* Survival: a Cox model's risk is defined up to a constant, so two models
 * (the folds of a cross-validation) put the same slide at different levels.
 * Centring each model's risk on its training slides (a log hazard ratio
 * against the average training slide, as survival packages report it)
 * makes out-of-fold risks of different folds comparable. */
static nic_status centre_risk(trainer *t, nic_error *err) {
  t->m->risk_offset = 0;
  double sum = 0, r = 0;
  nic_status st = NIC_OK;
  for (int l = 0; l < t->ntr && st == NIC_OK; l++) {
    st = sm_model_predict(t->m, t->ctx, &t->d, l, &r, err);
    sum += r;
  }
  if (st == NIC_OK && t->ntr > 0) t->m->risk_offset = sum / t->ntr;
  return st;
}

/* ---- the loop ------------------------------------------------------------------------- */

static void report(trainer *t, nic_sm_progress *p) {
  if (t->o->progress) t->o->progress(t->o->progress_user, p);
}

static nic_status run(trainer *t, int fold, int folds, nic_error *err) {
  const nic_sm_opts *o = t->o;
  int steps = o->steps > 0 ? o->steps : (t->ntr + t->B - 1) / t->B;
  if (o->steps == 0 && steps < SM_MIN_STEPS) steps = SM_MIN_STEPS;
  float lr0 = nic_optimizer_lr(t->opt);
  /* the LR follows the validation loss (the metric saturates on small
   * validation sets long before the model stops improving) */
  nic_schedule sched = nic_sched_plateau(lr0, 0.5f, o->plateau_patience, o->min_lr, 0);
  double best = -INFINITY, best_loss = INFINITY, vloss_prev = NAN;
  int since = 0;
  nic_sm_progress p;
  memset(&p, 0, sizeof p);
  p.fold = fold;
  p.folds = folds;
  p.epochs = o->epochs;
  p.steps = steps;
  p.best_epoch = -1;
  p.val_metric = p.val_loss = NAN;
  nic_status st = NIC_OK;
  for (int ep = 0; ep < o->epochs && st == NIC_OK; ep++) {
    float lr = nic_sched_lr(&sched, ep, (float)vloss_prev);
    nic_optimizer_set_lr(t->opt, lr);
    double sum = 0;
    p.epoch = ep;
    p.lr = lr;
    p.val_metric = p.val_loss = NAN;
    for (int s = 0; s < steps && st == NIC_OK; s++) {
      float loss = 0;
      st = o->kind != NIC_SM_ABMIL ? cnn_step(t, &loss, err) : abmil_step(t, &loss, err);
      sum += loss;
      p.step = s + 1;
      p.loss = sum / (s + 1);
      if (st == NIC_OK && s + 1 < steps) report(t, &p);
    }
    if (st != NIC_OK) break;
    if (t->nva > 0) {
      double metric, vloss;
      if ((st = validate(t, &metric, &vloss, err)) != NIC_OK) break;
      /* NaN ranks below any defined value */
      double crit =
          o->monitor_loss ? (isnan(vloss) ? -INFINITY : -vloss) : (isnan(metric) ? -2.0 : metric);
      p.val_metric = metric;
      p.val_loss = vloss;
      if (crit > best + 1e-9 ||
          (!o->monitor_loss && fabs(crit - best) <= 1e-9 && vloss < best_loss)) {
        best = crit;
        best_loss = vloss;
        p.best_epoch = ep;
        snapshot(t, 1);
        since = 0;
      } else {
        since++;
      }
      vloss_prev = vloss;
      p.stopping = o->patience > 0 && since >= o->patience && ep + 1 < o->epochs;
    } else {
      p.best_epoch = ep; /* no validation: the last epoch */
    }
    report(t, &p);
    if (p.stopping) break;
  }
  if (st == NIC_OK && t->nva > 0 && p.best_epoch >= 0) snapshot(t, 0);
  if (st == NIC_OK && t->c->task == NIC_TASK_SURVIVAL) st = centre_risk(t, err);
  t->m->best_epoch = p.best_epoch;
  return st;
}

nic_status sm_train_fold(nic_slidemodel **out, nic_ctx *ctx, const nic_cohort *c, const nic_fold *f,
                         const nic_sm_opts *o, int fold, int folds, nic_error *err) {
  *out = NULL;
  nic_status st = check_opts(o, err);
  if (st != NIC_OK) return st;
  trainer t;
  memset(&t, 0, sizeof t);
  t.ctx = ctx;
  t.c = c;
  t.o = o;
  t.out = (nic_tensor)NIC_TENSOR_INIT;
  t.grad = (nic_tensor)NIC_TENSOR_INIT;
  t.B = o->batch > 0 ? o->batch : o->kind != NIC_SM_ABMIL ? 16 : 8;
  st = setup(&t, f, err);
  if (st == NIC_OK) st = make_model(&t, err);
  if (st == NIC_OK) st = alloc_batch(&t, err);
  if (st == NIC_OK) st = run(&t, fold, folds, err);
  if (st == NIC_OK) {
    *out = t.m;
    t.m = NULL;
  }
  nic_sm_free(t.m);
  trainer_free(&t);
  return st;
}

nic_status nic_sm_train(nic_slidemodel **out, nic_ctx *ctx, const nic_cohort *c,
                        const nic_fold *fold, const nic_sm_opts *opts, nic_error *err) {
  return sm_train_fold(out, ctx, c, fold, opts, 0, 1, err);
}
