/* What an encoder training run leaves behind: the model card (JSON next to
 * the encoder and in its metadata), the per-epoch checkpoint, and resuming
 * from it.
 *
 * The checkpoint is one model file (so it is written atomically, like any
 * model): the trunk's layers followed by every head's layers, each head
 * reading the trunk's embedding node. Heads do not feed the last node, so
 * the file is never run, only loaded for its parameters, which are matched
 * to the live trunk and heads by name. The optimizer's per-param state
 * travels as extra tensors "optim/<param>/m" and "optim/<param>/v" (float32
 * moments / momentum buffers, shaped like the param), its step counts in the
 * training state. The training state (next epoch, early-stopping counters,
 * schedule state, optimizer record, history) travels in its metadata key
 * "train_state". */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "encoder/train_internal.h"
#include "io/json_util.h"
#include "nic/encoder.h"
#include "nic/version.h"
#include "nic_revision.h" /* generated at build time: NIC_SOURCE_REVISION */

uint64_t enc_seed(uint64_t seed, uint64_t what, uint64_t i) {
  /* splitmix64 over the three words: independent streams per purpose */
  uint64_t x = seed;
  uint64_t words[2] = {what, i};
  for (int k = 0; k < 3; k++) {
    x += 0x9e3779b97f4a7c15ULL + (k < 2 ? words[k] * 0xd1b54a32d192ed03ULL : 0);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    x ^= x >> 31;
  }
  return x;
}

void nic_enc_card_path(const char *output, char *buf, size_t n) {
  size_t len = strlen(output);
  const char *ext = ".safetensors";
  size_t el = strlen(ext);
  if (len > el && !strcmp(output + len - el, ext)) len -= el;
  snprintf(buf, n, "%.*s.card.json", (int)len, output);
}

void nic_enc_checkpoint_path(const char *output, char *buf, size_t n) {
  snprintf(buf, n, "%s.ckpt.safetensors", output);
}

/* A JSON number, or null for NaN and infinities (JSON has neither). */
static json_object *jnum(double v) {
  return isfinite(v) ? nic_json_new_double(v) : NULL;
}

static json_object *jnumf(float v) {
  return isfinite(v) ? nic_json_new_float(v) : NULL;
}

static json_object *jstr(const char *s) {
  return json_object_new_string(s ? s : "");
}

static const char *kind_name(nic_enc_kind k) {
  return k == NIC_ENC_KIND_REGRESSION ? "regression" : "classification";
}

static const char *sched_name(nic_sched_kind k) {
  switch (k) {
  case NIC_SCHED_CONSTANT:
    return "constant";
  case NIC_SCHED_STEP:
    return "step";
  case NIC_SCHED_COSINE:
    return "cosine";
  case NIC_SCHED_PLATEAU:
    return "plateau";
  }
  return "?";
}

static const char *opt_name(nic_opt_kind k) {
  return k == NIC_OPT_SGD ? "sgd" : k == NIC_OPT_ADAM ? "adam" : "adamw";
}

/* ---- the model card ---------------------------------------------------------------- */

static json_object *card_task(const enc_run *r, const enc_task *t) {
  json_object *o = json_object_new_object();
  const nic_enc_task *sp = &t->spec;
  int sup = r->o->objective == NIC_ENC_SUPERVISED;
  json_object_object_add(o, "name", jstr(sp->name));
  json_object_object_add(o, "dataset", jstr(sp->path));
  json_object_object_add(o, "format", jstr(nic_dataset_format(t->ds)));
  double mpp = nic_dataset_mpp(t->ds);
  json_object_object_add(o, "dataset_mpp", jnum(mpp > 0 ? mpp : NAN)); /* null: unknown */
  json_object_object_add(o, "kind", sup ? jstr(kind_name(t->kind)) : jstr("unlabelled"));
  if (sup && t->kind == NIC_ENC_KIND_CLASS) {
    json_object *cl = json_object_new_array(), *tr = json_object_new_array(),
                *va = json_object_new_array();
    for (int c = 0; c < t->nclass; c++) {
      json_object_array_add(cl, jstr(nic_dataset_class_name(t->ds, c)));
      json_object_array_add(tr, json_object_new_int64(t->train_class[c]));
      json_object_array_add(va, json_object_new_int64(t->valid_class[c]));
    }
    json_object_object_add(o, "classes", cl);
    json_object_object_add(o, "train_per_class", tr);
    json_object_object_add(o, "valid_per_class", va);
  } else if (sup) {
    json_object_object_add(o, "target_mean", jnum(t->vmean));
    json_object_object_add(o, "target_sd", jnum(t->vsd));
  }
  json_object_object_add(o, "weight", jnum(sp->weight));
  json_object_object_add(o, "train_items", json_object_new_int64(t->ntrain));
  json_object_object_add(o, "valid_items", json_object_new_int64(t->nvalid));
  const char *how = sp->holdout > 0     ? "stratified holdout of the training items"
                    : t->stratified > 0 ? "stratified fraction of unsplit items, and the "
                                          "dataset's valid split"
                                        : "the dataset's valid split";
  json_object_object_add(o, "validation", jstr(how));
  json_object_object_add(o, "valid_fraction", jnum(sp->valid_fraction));
  json_object_object_add(o, "holdout", jnum(sp->holdout));
  json_object_object_add(o, "max_train", json_object_new_int64(sp->max_train));
  json_object_object_add(o, "max_valid", json_object_new_int64(sp->max_valid));
  json_object_object_add(o, "class_balanced", json_object_new_boolean(t->balanced));
  return o;
}

static json_object *card_augment(const nic_augment *a) {
  json_object *o = json_object_new_object();
  json_object_object_add(o, "dihedral", json_object_new_boolean(a->dihedral));
  json_object_object_add(o, "zoom", jnumf(a->zoom));
  json_object_object_add(o, "hed_scale", jnumf(a->hed_scale));
  json_object_object_add(o, "hed_shift", jnumf(a->hed_shift));
  json_object_object_add(o, "brightness", jnumf(a->brightness));
  json_object_object_add(o, "contrast", jnumf(a->contrast));
  json_object_object_add(o, "saturation", jnumf(a->saturation));
  json_object_object_add(o, "hue", jnumf(a->hue));
  json_object_object_add(o, "blur_prob", jnumf(a->blur_prob));
  json_object_object_add(o, "blur_min", jnumf(a->blur_min));
  json_object_object_add(o, "blur_max", jnumf(a->blur_max));
  json_object_object_add(o, "noise", jnumf(a->noise));
  return o;
}

static json_object *card_training(const enc_run *r) {
  const nic_enc_train_opts *o = r->o;
  json_object *t = json_object_new_object();
  json_object_object_add(t, "epochs", json_object_new_int(o->epochs));
  json_object_object_add(t, "epochs_run", json_object_new_int(r->epoch));
  json_object_object_add(t, "steps_per_epoch", json_object_new_int64(r->steps));
  json_object_object_add(t, "batch", json_object_new_int(o->batch));
  json_object_object_add(t, "task_mixing", jstr(nic_enc_mix_name(o->mix)));
  json_object_object_add(t, "class_balanced", json_object_new_boolean(o->balanced));
  json_object_object_add(t, "head_hidden", json_object_new_int(o->head_hidden));
  json_object_object_add(t, "bn_momentum", jnumf(o->bn_momentum));
  if (o->objective == NIC_ENC_CONTRASTIVE) {
    json_object_object_add(t, "temperature", jnumf(o->temperature));
    json_object_object_add(t, "proj_dim", json_object_new_int(o->proj_dim));
  }
  json_object *op = json_object_new_object();
  json_object_object_add(op, "kind", jstr(opt_name(o->opt.kind)));
  json_object_object_add(op, "lr", jnumf(o->opt.lr));
  json_object_object_add(op, "weight_decay", jnumf(o->opt.weight_decay));
  if (o->opt.kind == NIC_OPT_SGD) {
    json_object_object_add(op, "momentum", jnumf(o->opt.momentum));
  } else {
    json_object_object_add(op, "beta1", jnumf(o->opt.beta1));
    json_object_object_add(op, "beta2", jnumf(o->opt.beta2));
  }
  json_object_object_add(op, "clip_norm", jnumf(o->opt.clip_norm));
  json_object_object_add(t, "optimizer", op);
  json_object *sc = json_object_new_object();
  json_object_object_add(sc, "kind", jstr(sched_name(o->schedule)));
  json_object_object_add(sc, "warmup_epochs", json_object_new_int(o->warmup));
  json_object_object_add(sc, "min_lr", jnumf(o->min_lr));
  json_object_object_add(t, "schedule", sc);
  json_object_object_add(t, "augmentation", card_augment(&o->augment));
  json_object_object_add(t, "patience", json_object_new_int(o->patience));
  json_object_object_add(t, "monitor", jstr(o->monitor ? o->monitor : "loss"));
  json_object_object_add(t, "seed", json_object_new_uint64(o->seed));
  json_object_object_add(t, "compute_threads", json_object_new_int(nic_ctx_threads(r->ctx)));
  json_object_object_add(t, "loader_threads", json_object_new_int(o->loader_threads));
  json_object_object_add(t, "steps_skipped", json_object_new_int64(r->skipped));
  json_object_object_add(t, "ema_decay", jnumf(o->ema));
  if (r->init_path[0]) {
    json_object_object_add(t, "init", jstr(r->init_path));
    json_object_object_add(t, "init_sha256", jstr(r->init_sha256));
  }
  return t;
}

static json_object *card_input(const enc_run *r) {
  const nic_input_info *in = nic_model_input_info(r->trunk);
  json_object *o = json_object_new_object(), *mean = json_object_new_array(),
              *sd = json_object_new_array();
  for (int c = 0; c < in->channels && c < 4; c++) {
    json_object_array_add(mean, jnumf(in->mean[c]));
    json_object_array_add(sd, jnumf(in->std[c]));
  }
  json_object_object_add(o, "patch_size", json_object_new_int(in->patch_size));
  json_object_object_add(o, "mpp", jnum(in->mpp));
  json_object_object_add(o, "channels", jstr("RGB"));
  json_object_object_add(o, "normalisation", jstr("x = (pixel / 255 - mean) / std"));
  json_object_object_add(o, "mean", mean);
  json_object_object_add(o, "std", sd);
  return o;
}

static void utc_now(char *buf, size_t n) {
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_object *enc_card(const enc_run *r) {
  const nic_enc_train_opts *o = r->o;
  json_object *c = json_object_new_object();
  char buf[256];
  json_object_object_add(c, "card_version", json_object_new_int(1));
  const char *base = strrchr(o->output, '/');
  base = base ? base + 1 : o->output;
  char stem[256];
  snprintf(stem, sizeof stem, "%s", base);
  char *dot = strstr(stem, ".safetensors");
  if (dot && dot != stem && !dot[12]) *dot = 0;
  json_object_object_add(c, "encoder_name", jstr(o->name ? o->name : stem));
  json_object_object_add(c, "file", jstr(base));
  json_object *a = json_object_new_object();
  json_object_object_add(a, "name", jstr(o->arch ? o->arch : "nic"));
  json_object_object_add(a, "embed_dim", json_object_new_int(r->dim));
  json_object_object_add(a, "trainable_parameters",
                         json_object_new_int64(nic_model_num_trainable(r->trunk)));
  json_object_object_add(a, "mflop_per_patch", jnum((double)nic_model_flops(r->trunk) / 1e6));
  json_object_object_add(c, "architecture", a);
  json_object_object_add(c, "input", card_input(r));
  json_object_object_add(c, "objective", jstr(nic_enc_objective_name(o->objective)));
  json_object *tasks = json_object_new_array();
  for (int i = 0; i < r->nt; i++) json_object_array_add(tasks, card_task(r, &r->t[i]));
  json_object_object_add(c, "tasks", tasks);
  json_object_object_add(c, "training", card_training(r));
  json_object_object_add(c, "best_epoch",
                         r->best_epoch >= 0 ? json_object_new_int(r->best_epoch + 1) : NULL);
  json_object_object_add(c, "best_monitor", jnum(r->best));
  json_object_object_add(c, "stopped_early", json_object_new_boolean(r->stopped));
  json_object *best = NULL;
  size_t nh = r->history ? json_object_array_length(r->history) : 0;
  for (size_t i = 0; i < nh; i++) {
    json_object *h = json_object_array_get_idx(r->history, i), *e = NULL;
    if (json_object_object_get_ex(h, "epoch", &e) && json_object_get_int(e) == r->best_epoch + 1)
      best = h;
  }
  json_object_object_add(c, "metrics", best ? json_object_get(best) : NULL);
  json_object_object_add(c, "history",
                         r->history ? json_object_get(r->history) : json_object_new_array());
  json_object_object_add(c, "command_line", jstr(o->command_line));
  json_object_object_add(c, "nic_version", jstr(nic_version()));
  /* `git describe` of the tree the library was built from */
  json_object_object_add(c, "source_revision", jstr(NIC_SOURCE_REVISION));
  json_object_object_add(c, "training_started", jstr(r->created));
  utc_now(buf, sizeof buf);
  json_object_object_add(c, "written", jstr(buf));
  return c;
}

/* Writes text to path through a temporary file and a rename. */
static nic_status write_atomic(const char *path, const char *text, nic_error *err) {
  char tmp[4400];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) return nic_err(err, NIC_EIO, "%s: %s", tmp, strerror(errno));
  size_t n = strlen(text);
  int bad = fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF;
  bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
  bad |= fclose(f) != 0;
  if (bad || rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    return nic_err(err, NIC_EIO, "writing %s: %s", path, strerror(e));
  }
  return NIC_OK;
}

nic_status enc_save_encoder(enc_run *r, nic_error *err) {
  json_object *card = enc_card(r);
  const char *text =
      json_object_to_json_string_ext(card, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  nic_model_set_meta(r->trunk, "model_card", text);
  json_object *nm = NULL;
  json_object_object_get_ex(card, "encoder_name", &nm);
  nic_model_set_meta(r->trunk, "encoder_name",
                     json_object_to_json_string_ext(nm, JSON_C_TO_STRING_PLAIN));
  nic_model_set_meta(r->trunk, "trained_by", "\"nic encoder train\"");
  nic_status s = nic_model_save(r->trunk, r->o->output, err);
  json_object_put(card);
  return s;
}

nic_status enc_write_card(enc_run *r, nic_error *err) {
  json_object *card = enc_card(r);
  const char *text = json_object_to_json_string_ext(
      card, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
  nic_status s = write_atomic(r->card_path, text, err);
  json_object_put(card);
  return s;
}

/* ---- copying architectures and parameters ------------------------------------------- */

int enc_copy_nodes(nic_model *dst, nic_model *src, int map0, float bn_momentum, nic_error *err) {
  int base = nic_model_num_nodes(dst), n = nic_model_num_nodes(src), node = map0;
  for (int k = 1; k <= n; k++) {
    nic_layer_spec sp = *nic_model_node_spec(src, k);
    sp.name = nic_model_node_name(src, k);
    if (sp.kind == NIC_LAYER_BATCHNORM && bn_momentum > 0) sp.momentum = bn_momentum;
    int in[2] = {-1, -1};
    for (int i = 0; i < (sp.kind == NIC_LAYER_ADD ? 2 : 1); i++) {
      int j = nic_model_node_input(src, k, i);
      in[i] = j == 0 ? map0 : base + j;
    }
    node = nic_model_add(dst, sp, in[0], in[1], err);
    if (node < 0) return -1;
  }
  return node;
}

nic_status enc_copy_params(nic_model *dst, nic_model *src, const char *what, nic_error *err) {
  int np;
  nic_param **ps = nic_model_params(dst, &np);
  for (int i = 0; i < np; i++) {
    nic_param *q = nic_model_param(src, ps[i]->name);
    if (!q)
      return nic_err(err, NIC_EFORMAT,
                     "%s has no tensor '%s': it was written by a run with "
                     "another architecture or other tasks",
                     what, ps[i]->name);
    if (nic_tensor_numel(&q->value) != nic_tensor_numel(&ps[i]->value))
      return nic_err(err, NIC_EFORMAT, "%s: tensor '%s' has %lld values, this run needs %lld", what,
                     ps[i]->name, (long long)nic_tensor_numel(&q->value),
                     (long long)nic_tensor_numel(&ps[i]->value));
    memcpy(ps[i]->value.data, q->value.data, sizeof(float) * (size_t)nic_tensor_numel(&q->value));
  }
  return NIC_OK;
}

/* ---- checkpoints -------------------------------------------------------------------------- */

#define OPTIM_PREFIX "optim/"

/* The names of the optimizer's slots this run keeps: "", "m" or "mv". */
static const char *opt_slots(const enc_run *r) {
  int hm, hv;
  nic_optimizer_slots(r->opt, &hm, &hv);
  return hm && hv ? "mv" : hm ? "m" : "";
}

/* The live parameter (trunk, heads, shared head) called name, or NULL. */
static nic_param *live_param(const enc_run *r, const char *name) {
  nic_param *q = nic_model_param(r->trunk, name);
  for (int t = 0; !q && t < r->nt; t++)
    if (r->t[t].head) q = nic_model_param(r->t[t].head, name);
  if (!q && r->shared) q = nic_model_param(r->shared, name);
  return q;
}

/* "optim/<param>/<slot>", or an error when the name would not fit. */
static nic_status optim_name(char *buf, size_t n, const char *param, char slot, nic_error *err) {
  if ((size_t)snprintf(buf, n, OPTIM_PREFIX "%s/%c", param, slot) < n) return NIC_OK;
  return nic_err(err, NIC_EINVAL, "parameter name '%s' is too long for a checkpoint", param);
}

/* The optimizer's state as checkpoint tensors (*ext, *next; the values
 * borrow the optimizer's arrays) and its record for train_state: kind,
 * slots and the step count of every param with state. */
static nic_status optim_export(const enc_run *r, nic_param **ext, int *next, json_object **rec,
                               nic_error *err) {
  int ns = nic_optimizer_num_states(r->opt), n = 0;
  *ext = calloc((size_t)(2 * ns + r->ema_n + 1), sizeof **ext);
  *next = 0;
  *rec = NULL;
  if (!*ext) return nic_err(err, NIC_ENOMEM, "out of memory");
  json_object *steps = json_object_new_object();
  nic_status s = NIC_OK;
  for (int i = 0; i < ns && s == NIC_OK; i++) {
    nic_opt_state st;
    if ((s = nic_optimizer_get_state(r->opt, i, &st, err)) != NIC_OK) break;
    const nic_tensor *pv = &st.param->value;
    float *slot[2] = {st.m, st.v};
    for (int k = 0; k < 2 && s == NIC_OK; k++) {
      if (!slot[k]) continue;
      s = optim_name((*ext)[n].name, sizeof(*ext)[n].name, st.param->name, "mv"[k], err);
      if (s == NIC_OK) nic_tensor_wrap(&(*ext)[n++].value, slot[k], pv->ndim, pv->shape);
    }
    json_object_object_add(steps, st.param->name, json_object_new_int64(st.step));
  }
  /* the weight averages travel with the optimizer's state, as slot 'e' */
  for (int i = 0; i < r->ema_n && s == NIC_OK; i++) {
    const nic_tensor *pv = &r->ema_p[i]->value;
    s = optim_name((*ext)[n].name, sizeof(*ext)[n].name, r->ema_p[i]->name, 'e', err);
    if (s == NIC_OK) nic_tensor_wrap(&(*ext)[n++].value, r->ema_v[i], pv->ndim, pv->shape);
  }
  if (s != NIC_OK) {
    json_object_put(steps);
    free(*ext);
    *ext = NULL;
    return s;
  }
  *rec = json_object_new_object();
  json_object_object_add(*rec, "kind", jstr(opt_name(r->o->opt.kind)));
  json_object_object_add(*rec, "slots", jstr(opt_slots(r)));
  json_object_object_add(*rec, "steps", steps);
  *next = n;
  return NIC_OK;
}

/* The extra tensor called name, or NULL. */
static const nic_param *find_extra(const nic_param *ext, int next, const char *name) {
  for (int i = 0; i < next; i++)
    if (!strcmp(ext[i].name, name)) return &ext[i];
  return NULL;
}

/* One slot's tensor for param p: present exactly when the run keeps the
 * slot, and of p's size. */
static nic_status optim_slot(const enc_run *r, const nic_param *ext, int next, const nic_param *p,
                             char slot, const float **out, nic_error *err) {
  char name[sizeof ext->name + 8];
  *out = NULL;
  nic_status s = optim_name(name, sizeof name, p->name, slot, err);
  if (s != NIC_OK || !strchr(opt_slots(r), slot)) return s;
  const nic_param *t = find_extra(ext, next, name);
  if (!t)
    return nic_err(err, NIC_EFORMAT, "%s: optimizer state tensor '%s' is missing", r->ckpt_path,
                   name);
  if (nic_tensor_numel(&t->value) != nic_tensor_numel(&p->value))
    return nic_err(err, NIC_EFORMAT,
                   "%s: optimizer state tensor '%s' has %lld values, '%s' has %lld", r->ckpt_path,
                   name, (long long)nic_tensor_numel(&t->value), p->name,
                   (long long)nic_tensor_numel(&p->value));
  *out = t->value.data;
  return NIC_OK;
}

/* Restores the optimizer's state from the checkpoint's record (train_state
 * key "optimizer") and tensors. A checkpoint without a record (written
 * before optimizer state was saved) leaves the optimizer fresh and
 * r->opt_restored 0; a record of another optimizer, or one whose tensors
 * are missing, mis-sized or unaccounted for, is an error. */
static nic_status optim_import(enc_run *r, json_object *st, const nic_param *ext, int next,
                               nic_error *err) {
  const char *what = r->ckpt_path;
  json_object *rec = NULL, *steps = NULL, *v = NULL;
  r->opt_restored = 0;
  if (!json_object_object_get_ex(st, "optimizer", &rec) || !rec) {
    if (next > 0)
      return nic_err(err, NIC_EFORMAT, "%s: optimizer tensors without an optimizer record", what);
    return NIC_OK;
  }
  const char *kind =
      json_object_object_get_ex(rec, "kind", &v) && v ? json_object_get_string(v) : "";
  const char *slots =
      json_object_object_get_ex(rec, "slots", &v) && v ? json_object_get_string(v) : "";
  if (strcmp(kind, opt_name(r->o->opt.kind)) || strcmp(slots, opt_slots(r)))
    return nic_err(err, NIC_EINVAL,
                   "%s holds the state of optimizer %s (slots '%s'); this run uses %s (slots "
                   "'%s'): resume with the same --optimizer (and --momentum on or off), or start "
                   "afresh without --resume",
                   what, kind, slots, opt_name(r->o->opt.kind), opt_slots(r));
  if (!json_object_object_get_ex(rec, "steps", &steps) ||
      !json_object_is_type(steps, json_type_object))
    return nic_err(err, NIC_EFORMAT, "%s: the optimizer record has no steps", what);
  int used = 0;
  json_object_object_foreach(steps, name, jstep) {
    nic_param *p = live_param(r, name);
    if (!p)
      return nic_err(err, NIC_EFORMAT, "%s: optimizer state for '%s', which this run does not have",
                     what, name);
    int64_t step = json_object_is_type(jstep, json_type_int) ? json_object_get_int64(jstep) : -1;
    const float *m = NULL, *vv = NULL;
    nic_status s = optim_slot(r, ext, next, p, 'm', &m, err);
    if (s == NIC_OK) s = optim_slot(r, ext, next, p, 'v', &vv, err);
    if (s == NIC_OK) s = nic_optimizer_set_state(r->opt, p, step, m, vv, err);
    if (s != NIC_OK) return nic_err_prefix(err, "%s: ", what);
    used += (m != NULL) + (vv != NULL);
  }
  if (used != next)
    return nic_err(err, NIC_EFORMAT, "%s: %d optimizer tensors belong to no recorded parameter",
                   what, next - used);
  r->opt_restored = 1;
  return NIC_OK;
}

/* What must match for a checkpoint to be resumed: the parameters' meaning. */
static json_object *fingerprint(const enc_run *r) {
  json_object *f = json_object_new_object(), *tasks = json_object_new_array();
  json_object_object_add(f, "arch", jstr(r->o->arch ? r->o->arch : "nic"));
  json_object_object_add(f, "embed_dim", json_object_new_int(r->dim));
  json_object_object_add(f, "objective", jstr(nic_enc_objective_name(r->o->objective)));
  json_object_object_add(f, "head_hidden", json_object_new_int(r->o->head_hidden));
  for (int i = 0; i < r->nt; i++) {
    json_object *t = json_object_new_object();
    json_object_object_add(t, "name", jstr(r->t[i].spec.name));
    json_object_object_add(t, "kind", jstr(kind_name(r->t[i].kind)));
    json_object_object_add(t, "classes", json_object_new_int(r->t[i].nclass));
    json_object_array_add(tasks, t);
  }
  json_object_object_add(f, "tasks", tasks);
  return f;
}

static json_object *train_state(const enc_run *r, json_object *optim) {
  json_object *s = json_object_new_object(), *sc = json_object_new_object();
  json_object_object_add(s, "epoch", json_object_new_int(r->epoch));
  json_object_object_add(s, "best", jnum(r->best));
  json_object_object_add(s, "best_epoch", json_object_new_int(r->best_epoch));
  json_object_object_add(s, "bad_epochs", json_object_new_int(r->bad_epochs));
  json_object_object_add(s, "stopped", json_object_new_boolean(r->stopped));
  json_object_object_add(s, "skipped", json_object_new_int64(r->skipped));
  if (r->ema_n) json_object_object_add(s, "ema_steps", json_object_new_int64(r->ema_steps));
  if (r->init_path[0]) {
    json_object_object_add(s, "init", jstr(r->init_path));
    json_object_object_add(s, "init_sha256", jstr(r->init_sha256));
  }
  json_object_object_add(s, "seed", json_object_new_uint64(r->o->seed));
  json_object_object_add(s, "created", jstr(r->created));
  json_object_object_add(sc, "cur_lr", jnumf(r->sched.cur_lr));
  json_object_object_add(sc, "best", jnumf(r->sched.best));
  json_object_object_add(sc, "bad_epochs", json_object_new_int(r->sched.bad_epochs));
  json_object_object_add(sc, "started", json_object_new_int(r->sched.started));
  json_object_object_add(s, "schedule", sc);
  json_object_object_add(s, "fingerprint", fingerprint(r));
  json_object_object_add(s, "optimizer", optim);
  json_object_object_add(s, "history",
                         r->history ? json_object_get(r->history) : json_object_new_array());
  return s;
}

nic_status enc_save_checkpoint(enc_run *r, nic_error *err) {
  nic_model *m = NULL;
  nic_status s = nic_model_create(&m, 3, r->P, r->P, err);
  if (s != NIC_OK) return s;
  *nic_model_input_info(m) = *nic_model_input_info(r->trunk);
  int emb = enc_copy_nodes(m, r->trunk, 0, 0, err);
  if (emb < 0) goto done;
  for (int i = 0; i < r->nt && emb >= 0; i++)
    if (r->t[i].head && enc_copy_nodes(m, r->t[i].head, emb, 0, err) < 0) emb = -1;
  if (emb >= 0 && r->shared && enc_copy_nodes(m, r->shared, emb, 0, err) < 0) emb = -1;
  if (emb < 0) goto done;
  /* Every parameter of m is in exactly one of the live models. */
  int np;
  nic_param **ps = nic_model_params(m, &np);
  for (int i = 0; i < np; i++) {
    nic_param *q = live_param(r, ps[i]->name);
    if (q)
      memcpy(ps[i]->value.data, q->value.data, sizeof(float) * (size_t)nic_tensor_numel(&q->value));
  }
  json_object *optim = NULL;
  nic_save_opts so = {NIC_STORE_F32, NULL, 0};
  nic_param *ext = NULL;
  s = optim_export(r, &ext, &so.nextra, &optim, err);
  if (s != NIC_OK) goto done;
  so.extra = ext;
  json_object *st = train_state(r, optim);
  nic_model_set_meta(m, "train_state", json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN));
  json_object_put(st);
  nic_model_set_meta(m, "architecture_name", "\"encoder-training-checkpoint\"");
  s = nic_model_save_opts(m, r->ckpt_path, &so, err);
  free(ext); /* the values borrowed the optimizer's arrays */
done:
  nic_model_free(m);
  if (emb < 0) return err && err->code != NIC_OK ? err->code : NIC_EINVAL;
  return s;
}

static double jget_num(json_object *o, const char *key, double dflt) {
  json_object *v = NULL;
  if (!json_object_object_get_ex(o, key, &v) || !v) return dflt;
  if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
    return dflt;
  return json_object_get_double(v);
}

static nic_status restore_state(enc_run *r, json_object *st, nic_error *err) {
  const char *what = r->ckpt_path;
  json_object *fp = NULL, *h = NULL, *sc = NULL;
  json_object *want = fingerprint(r);
  int same = json_object_object_get_ex(st, "fingerprint", &fp) && json_object_equal(fp, want);
  const char *wtext = json_object_to_json_string_ext(want, JSON_C_TO_STRING_PLAIN);
  if (!same) {
    nic_err(err, NIC_EINVAL,
            "%s was written by a different run (it has %s; this run is %s): resume with the "
            "same architecture, objective and tasks, or start afresh without --resume",
            what, fp ? json_object_to_json_string_ext(fp, JSON_C_TO_STRING_PLAIN) : "nothing",
            wtext);
    json_object_put(want);
    return NIC_EINVAL;
  }
  json_object_put(want);
  double ep = jget_num(st, "epoch", -1);
  if (!(ep >= 0 && ep < 1e6)) return nic_err(err, NIC_EFORMAT, "%s: bad train_state epoch", what);
  r->epoch = (int)ep;
  r->best = jget_num(st, "best", NAN);
  r->best_epoch = (int)jget_num(st, "best_epoch", -1);
  r->bad_epochs = (int)jget_num(st, "bad_epochs", 0);
  r->skipped = (int64_t)jget_num(st, "skipped", 0);
  r->ema_steps = (int64_t)jget_num(st, "ema_steps", 0);
  json_object *b = NULL;
  r->stopped = json_object_object_get_ex(st, "stopped", &b) && json_object_get_boolean(b);
  if (json_object_object_get_ex(st, "init", &b) && json_object_is_type(b, json_type_string))
    snprintf(r->init_path, sizeof r->init_path, "%s", json_object_get_string(b));
  if (json_object_object_get_ex(st, "init_sha256", &b) && json_object_is_type(b, json_type_string))
    snprintf(r->init_sha256, sizeof r->init_sha256, "%s", json_object_get_string(b));
  if (json_object_object_get_ex(st, "created", &b) && json_object_is_type(b, json_type_string))
    snprintf(r->created, sizeof r->created, "%s", json_object_get_string(b));
  if (json_object_object_get_ex(st, "schedule", &sc) && sc) {
    r->sched.cur_lr = (float)jget_num(sc, "cur_lr", r->sched.base_lr);
    r->sched.best = (float)jget_num(sc, "best", r->sched.mode_max ? -INFINITY : INFINITY);
    r->sched.bad_epochs = (int)jget_num(sc, "bad_epochs", 0);
    r->sched.started = (int)jget_num(sc, "started", 0);
  }
  if (json_object_object_get_ex(st, "history", &h) && json_object_is_type(h, json_type_array)) {
    json_object_put(r->history);
    r->history = json_object_get(h);
  }
  return NIC_OK;
}

nic_status enc_checkpoint_seed(const char *path, uint64_t *seed, nic_error *err) {
  nic_model *m = NULL;
  nic_param *ext = NULL;
  int next = 0;
  nic_status s = nic_model_load_extra(&m, path, OPTIM_PREFIX, &ext, &next, err);
  nic_params_free(ext, next);
  if (s != NIC_OK) return nic_err_prefix(err, "--resume: ");
  const char *text = nic_model_get_meta(m, "train_state");
  char msg[256];
  json_object *st = text ? nic_json_parse(text, strlen(text), msg, sizeof msg) : NULL, *v = NULL;
  if (st && json_object_object_get_ex(st, "seed", &v) && json_object_is_type(v, json_type_int))
    *seed = json_object_get_uint64(v);
  else
    s = nic_err(err, NIC_EFORMAT, "%s: no training state in its metadata (not a checkpoint?)",
                path);
  json_object_put(st);
  nic_model_free(m);
  return s;
}

/* Moves the weight averages (slot 'e') to the end of ext, restores them
 * into the run when it averages (a checkpoint without them restarts the
 * averages at the restored weights) and returns how many there were. */
static int ema_import(enc_run *r, nic_param *ext, int next) {
  int keep = 0;
  for (int i = 0; i < next; i++) {
    size_t len = strlen(ext[i].name);
    if (len > 2 && !strcmp(ext[i].name + len - 2, "/e")) continue;
    nic_param tmp = ext[keep];
    ext[keep++] = ext[i];
    ext[i] = tmp;
  }
  int found = 0;
  for (int i = 0; i < r->ema_n; i++) {
    char name[sizeof ext->name + 8];
    if (optim_name(name, sizeof name, r->ema_p[i]->name, 'e', NULL) != NIC_OK) continue;
    const nic_param *t = find_extra(ext + keep, next - keep, name);
    if (!t || nic_tensor_numel(&t->value) != nic_tensor_numel(&r->ema_p[i]->value)) continue;
    memcpy(r->ema_v[i], t->value.data, sizeof(float) * (size_t)nic_tensor_numel(&t->value));
    found++;
  }
  if (r->ema_n && found != r->ema_n) enc_ema_reset(r);
  return next - keep;
}

nic_status enc_load_checkpoint(enc_run *r, nic_error *err) {
  nic_model *m = NULL;
  nic_param *ext = NULL;
  int next = 0;
  nic_status s = nic_model_load_extra(&m, r->ckpt_path, OPTIM_PREFIX, &ext, &next, err);
  if (s != NIC_OK) return nic_err_prefix(err, "--resume: ");
  const char *text = nic_model_get_meta(m, "train_state");
  char msg[256];
  json_object *st = text ? nic_json_parse(text, strlen(text), msg, sizeof msg) : NULL;
  if (!st) {
    nic_model_free(m);
    nic_params_free(ext, next);
    return nic_err(err, NIC_EFORMAT, "%s: no training state in its metadata (not a checkpoint?)",
                   r->ckpt_path);
  }
  s = restore_state(r, st, err);
  if (s == NIC_OK) s = enc_copy_params(r->trunk, m, r->ckpt_path, err);
  for (int i = 0; i < r->nt && s == NIC_OK; i++)
    if (r->t[i].head) s = enc_copy_params(r->t[i].head, m, r->ckpt_path, err);
  if (s == NIC_OK && r->shared) s = enc_copy_params(r->shared, m, r->ckpt_path, err);
  int nema = next;
  if (s == NIC_OK) nema = ema_import(r, ext, next);
  if (s == NIC_OK) s = optim_import(r, st, ext, next - nema, err);
  json_object_put(st);
  nic_params_free(ext, next);
  nic_model_free(m);
  return s;
}
