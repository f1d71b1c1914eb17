/* Tasks of an encoder training run: parsing "NAME=PATH,key=value" specs,
 * opening each dataset, resolving its kind, and fixing which items train
 * and which validate (the dataset's own splits, a stratified fraction for
 * items without one, optional seeded subsets). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encoder/train_internal.h"

nic_enc_task nic_enc_task_default(void) {
  nic_enc_task t;
  memset(&t, 0, sizeof t);
  t.kind = NIC_ENC_KIND_AUTO;
  t.weight = 1.0;
  t.valid_fraction = 0.1;
  t.balanced = -1;
  return t;
}

/* ---- parsing ----------------------------------------------------------------- */

static int valid_name(const char *s, size_t n) {
  if (n == 0 || n > NIC_ENC_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-') return 0;
  return 1;
}

/* A finite number filling the whole of s. */
static int parse_num(const char *s, double *out) {
  char *end = NULL;
  double v = strtod(s, &end);
  if (!*s || *end || !isfinite(v)) return 0;
  *out = v;
  return 1;
}

static int parse_count(const char *s, int64_t *out) {
  char *end = NULL;
  long long v = strtoll(s, &end, 10);
  if (!*s || *end || v < 0) return 0;
  *out = (int64_t)v;
  return 1;
}

/* Applies one "key=value" option of a task spec. */
static nic_status parse_option(nic_enc_task *t, const char *key, const char *val, nic_error *err) {
  const char *who = t->name;
  double d;
  if (!strcmp(key, "kind")) {
    if (!strcmp(val, "class") || !strcmp(val, "classification"))
      t->kind = NIC_ENC_KIND_CLASS;
    else if (!strcmp(val, "regression"))
      t->kind = NIC_ENC_KIND_REGRESSION;
    else if (!strcmp(val, "auto"))
      t->kind = NIC_ENC_KIND_AUTO;
    else
      return nic_err(err, NIC_EINVAL, "task %s: kind must be class, regression or auto, got '%s'",
                     who, val);
  } else if (!strcmp(key, "weight")) {
    if (!parse_num(val, &d) || d < 0)
      return nic_err(err, NIC_EINVAL, "task %s: weight must be a number >= 0, got '%s'", who, val);
    t->weight = d;
  } else if (!strcmp(key, "mpp")) {
    if (!parse_num(val, &d) || d <= 0 || d > 1000)
      return nic_err(err, NIC_EINVAL, "task %s: mpp must be a spacing in um/px > 0, got '%s'", who,
                     val);
    t->mpp = d;
  } else if (!strcmp(key, "valid")) {
    if (!parse_num(val, &d) || d < 0 || d >= 1)
      return nic_err(err, NIC_EINVAL, "task %s: valid must be a fraction in [0, 1), got '%s'", who,
                     val);
    t->valid_fraction = d;
  } else if (!strcmp(key, "holdout")) {
    if (!parse_num(val, &d) || d < 0 || d >= 1)
      return nic_err(err, NIC_EINVAL, "task %s: holdout must be a fraction in [0, 1), got '%s'",
                     who, val);
    t->holdout = d;
  } else if (!strcmp(key, "max-train") || !strcmp(key, "max-valid")) {
    int64_t v;
    if (!parse_count(val, &v))
      return nic_err(err, NIC_EINVAL, "task %s: %s must be a count >= 0, got '%s'", who, key, val);
    *(key[4] == 't' ? &t->max_train : &t->max_valid) = v;
  } else if (!strcmp(key, "balanced")) {
    if (strcmp(val, "0") && strcmp(val, "1"))
      return nic_err(err, NIC_EINVAL, "task %s: balanced must be 0 or 1, got '%s'", who, val);
    t->balanced = val[0] == '1';
  } else {
    return nic_err(err, NIC_EINVAL,
                   "task %s: unknown option '%s' (known: kind, weight, mpp, valid, holdout, "
                   "max-train, max-valid, balanced)",
                   who, key);
  }
  return NIC_OK;
}

nic_status nic_enc_task_parse(const char *arg, nic_enc_task *t, nic_error *err) {
  *t = nic_enc_task_default();
  const char *eq = arg ? strchr(arg, '=') : NULL;
  if (!eq)
    return nic_err(err, NIC_EINVAL, "task '%s' must look like NAME=PATH[,key=value...]",
                   arg ? arg : "");
  size_t nlen = (size_t)(eq - arg);
  if (!valid_name(arg, nlen))
    return nic_err(err, NIC_EINVAL, "task name '%.*s' must be 1 to %d letters, digits, '_' or '-'",
                   (int)(nlen < 64 ? nlen : 64), arg, NIC_ENC_NAME_MAX);
  memcpy(t->name, arg, nlen);
  t->name[nlen] = 0;
  const char *rest = eq + 1, *comma = strchr(rest, ',');
  size_t plen = comma ? (size_t)(comma - rest) : strlen(rest);
  if (plen == 0) return nic_err(err, NIC_EINVAL, "task %s: no dataset path", t->name);
  if (plen >= sizeof t->path) return nic_err(err, NIC_EINVAL, "task %s: path too long", t->name);
  memcpy(t->path, rest, plen);
  t->path[plen] = 0;
  while (comma) {
    const char *opt = comma + 1;
    comma = strchr(opt, ',');
    size_t olen = comma ? (size_t)(comma - opt) : strlen(opt);
    char buf[256];
    if (olen == 0 || olen >= sizeof buf)
      return nic_err(err, NIC_EINVAL, "task %s: empty or overlong option in '%s'", t->name, arg);
    memcpy(buf, opt, olen);
    buf[olen] = 0;
    char *oeq = strchr(buf, '=');
    if (!oeq || oeq == buf || !oeq[1])
      return nic_err(err, NIC_EINVAL, "task %s: option '%s' must be key=value", t->name, buf);
    *oeq = 0;
    nic_status s = parse_option(t, buf, oeq + 1, err);
    if (s != NIC_OK) return s;
  }
  return NIC_OK;
}

/* ---- splits ------------------------------------------------------------------- */

/* Keeps a seeded random `keep` of the items in split s; the others leave
 * every split. */
static nic_status subset_split(nic_dataset *ds, nic_split s, int64_t keep, uint64_t seed,
                               nic_error *err) {
  int64_t n = nic_dataset_count(ds), m = 0;
  if (keep <= 0 || nic_dataset_count_split(ds, (int)s) <= keep) return NIC_OK;
  int64_t *idx = malloc(sizeof *idx * (size_t)(n > 0 ? n : 1));
  if (!idx) return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int64_t i = 0; i < n; i++)
    if (nic_dataset_split(ds, i) == s) idx[m++] = i;
  nic_rng rng;
  nic_rng_seed(&rng, seed);
  for (int64_t i = 0; i < keep; i++) { /* partial Fisher-Yates: idx[0..keep) are chosen */
    int64_t j = i + (int64_t)nic_rng_below(&rng, (uint64_t)(m - i));
    int64_t tmp = idx[i];
    idx[i] = idx[j];
    idx[j] = tmp;
  }
  for (int64_t i = keep; i < m; i++) nic_dataset_set_split(ds, idx[i], NIC_SPLIT_NONE);
  free(idx);
  return NIC_OK;
}

static int labelled(const enc_task *t, int64_t i) {
  if (t->kind == NIC_ENC_KIND_REGRESSION) return !isnan(nic_dataset_value(t->ds, i));
  return nic_dataset_label(t->ds, i) >= 0;
}

/* Resolves the kind against the labels the dataset has. */
static nic_status resolve_kind(enc_task *t, const nic_enc_train_opts *o, nic_error *err) {
  nic_label_kind lk = nic_dataset_label_kind(t->ds);
  t->kind = t->spec.kind;
  if (t->kind == NIC_ENC_KIND_AUTO)
    t->kind = lk == NIC_LABEL_VALUE ? NIC_ENC_KIND_REGRESSION : NIC_ENC_KIND_CLASS;
  if (o->objective != NIC_ENC_SUPERVISED) return NIC_OK; /* labels are not used */
  if (t->kind == NIC_ENC_KIND_REGRESSION && lk != NIC_LABEL_VALUE)
    return nic_err(err, NIC_EINVAL,
                   "task %s: kind=regression needs numeric labels, but %s (%s) has classes "
                   "(a CSV dataset can be read as regression)",
                   t->spec.name, t->spec.path, nic_dataset_format(t->ds));
  if (t->kind == NIC_ENC_KIND_CLASS && lk != NIC_LABEL_CLASS)
    return nic_err(err, NIC_EINVAL, "task %s: kind=class, but %s has regression values",
                   t->spec.name, t->spec.path);
  if (t->kind == NIC_ENC_KIND_CLASS) {
    t->nclass = nic_dataset_num_classes(t->ds);
    if (t->nclass < 2)
      return nic_err(err, NIC_EINVAL, "task %s: %s has %d class(es); classification needs 2",
                     t->spec.name, t->spec.path, t->nclass);
  }
  return NIC_OK;
}

/* Counts the items of each split and, for classes, of each class. */
static nic_status count_items(enc_task *t, const nic_enc_train_opts *o, nic_error *err) {
  int64_t n = nic_dataset_count(t->ds);
  if (t->nclass > 0) {
    t->train_class = calloc((size_t)t->nclass, sizeof *t->train_class);
    t->valid_class = calloc((size_t)t->nclass, sizeof *t->valid_class);
    if (!t->train_class || !t->valid_class) return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  double sum = 0, sum2 = 0;
  for (int64_t i = 0; i < n; i++) {
    nic_split s = nic_dataset_split(t->ds, i);
    if (s != NIC_SPLIT_TRAIN && s != NIC_SPLIT_VALID) continue;
    int c = t->nclass > 0 ? nic_dataset_label(t->ds, i) : -1;
    if (s == NIC_SPLIT_TRAIN) {
      t->ntrain++;
      if (c >= 0) t->train_class[c]++;
      if (t->kind == NIC_ENC_KIND_REGRESSION && o->objective == NIC_ENC_SUPERVISED) {
        double v = nic_dataset_value(t->ds, i);
        sum += v;
        sum2 += v * v;
      }
    } else {
      t->nvalid++;
      if (c >= 0) t->valid_class[c]++;
    }
  }
  if (t->ntrain == 0)
    return nic_err(err, NIC_EINVAL, "task %s: %s has no labelled training items", t->spec.name,
                   t->spec.path);
  t->vmean = sum / (double)t->ntrain;
  double var = sum2 / (double)t->ntrain - t->vmean * t->vmean;
  t->vsd = var > 1e-12 ? sqrt(var) : 1.0;
  return NIC_OK;
}

nic_status enc_task_setup(enc_task *t, const nic_enc_train_opts *o, nic_error *err) {
  const nic_enc_task *sp = &t->spec;
  nic_dataset_opts dopt = nic_dataset_default_opts();
  if (sp->mpp > 0) dopt.mpp = sp->mpp;
  if (o->objective == NIC_ENC_SUPERVISED && sp->kind == NIC_ENC_KIND_CLASS)
    dopt.labels = NIC_LABEL_CLASS;
  if (o->objective == NIC_ENC_SUPERVISED && sp->kind == NIC_ENC_KIND_REGRESSION)
    dopt.labels = NIC_LABEL_VALUE;
  nic_status s = nic_dataset_open(&t->ds, sp->path, &dopt, err);
  if (s != NIC_OK) return nic_err_prefix(err, "task %s: ", sp->name);
  if (sp->mpp > 0) nic_dataset_set_mpp(t->ds, sp->mpp);
  if ((s = resolve_kind(t, o, err)) != NIC_OK) return s;

  /* Items without a split: a stratified share validates. */
  int64_t n = nic_dataset_count(t->ds);
  t->stratified = nic_dataset_count_split(t->ds, NIC_SPLIT_NONE);
  if (t->stratified > 0 &&
      (s = nic_dataset_split_stratified(t->ds, sp->valid_fraction, enc_seed(o->seed, 1, t->index),
                                        err)) != NIC_OK)
    return nic_err_prefix(err, "task %s: ", sp->name);
  /* holdout: the dataset's validation items step aside (as test items,
   * which training never reads) and a share of the training items takes
   * their place. */
  if (sp->holdout > 0) {
    for (int64_t i = 0; i < n; i++) {
      nic_split si = nic_dataset_split(t->ds, i);
      if (si == NIC_SPLIT_VALID) nic_dataset_set_split(t->ds, i, NIC_SPLIT_TEST);
      if (si == NIC_SPLIT_TRAIN) nic_dataset_set_split(t->ds, i, NIC_SPLIT_NONE);
    }
    if ((s = nic_dataset_split_stratified(t->ds, sp->holdout, enc_seed(o->seed, 11, t->index),
                                          err)) != NIC_OK)
      return nic_err_prefix(err, "task %s: ", sp->name);
  }
  /* A supervised task learns nothing from unlabelled items. */
  if (o->objective == NIC_ENC_SUPERVISED)
    for (int64_t i = 0; i < n; i++)
      if (!labelled(t, i)) nic_dataset_set_split(t->ds, i, NIC_SPLIT_NONE);
  if ((s = subset_split(t->ds, NIC_SPLIT_TRAIN, sp->max_train, enc_seed(o->seed, 2, t->index),
                        err)) != NIC_OK ||
      (s = subset_split(t->ds, NIC_SPLIT_VALID, sp->max_valid, enc_seed(o->seed, 3, t->index),
                        err)) != NIC_OK)
    return s;
  if ((s = count_items(t, o, err)) != NIC_OK) return s;
  t->balanced = sp->balanced >= 0 ? sp->balanced : o->balanced;
  if (o->objective != NIC_ENC_SUPERVISED || t->kind != NIC_ENC_KIND_CLASS) t->balanced = 0;
  return NIC_OK;
}

void enc_task_release(enc_task *t) {
  nic_loader_free(t->loader);
  nic_model_free(t->head);
  nic_dataset_free(t->ds);
  free(t->train_class);
  free(t->valid_class);
  t->loader = NULL;
  t->head = NULL;
  t->ds = NULL;
  t->train_class = t->valid_class = NULL;
}

void enc_task_describe(const enc_task *t, const nic_enc_train_opts *o, char *buf, size_t n) {
  size_t len = 0;
#define ADD(...)                                                                                   \
  do {                                                                                             \
    if (len < n) len += (size_t)snprintf(buf + len, n - len, __VA_ARGS__);                         \
  } while (0)
  double mpp = nic_dataset_mpp(t->ds);
  ADD("%s: %s (%s, ", t->spec.name, t->spec.path, nic_dataset_format(t->ds));
  if (mpp > 0)
    ADD("%g um/px)", mpp);
  else
    ADD("spacing unknown: scaled to fill the patch)");
  if (o->objective == NIC_ENC_SUPERVISED && t->kind == NIC_ENC_KIND_CLASS) {
    ADD("; %d classes; train %lld (", t->nclass, (long long)t->ntrain);
    for (int c = 0; c < t->nclass && c < 12; c++)
      ADD("%s%s: %lld", c ? ", " : "", nic_dataset_class_name(t->ds, c),
          (long long)t->train_class[c]);
    ADD("%s)", t->nclass > 12 ? ", ..." : "");
  } else if (o->objective == NIC_ENC_SUPERVISED) {
    ADD("; regression, train %lld (mean %.4g, sd %.4g)", (long long)t->ntrain, t->vmean, t->vsd);
  } else {
    ADD("; train %lld", (long long)t->ntrain);
  }
  ADD(", valid %lld", (long long)t->nvalid);
  if (t->spec.holdout > 0)
    ADD(" (held out: %g of the training items)", t->spec.holdout);
  else if (t->stratified > 0)
    ADD(" (%g of unsplit items)", t->spec.valid_fraction);
  if (o->objective == NIC_ENC_SUPERVISED) ADD("; weight %g", t->spec.weight);
  if (t->balanced) ADD("; class-balanced");
#undef ADD
}
