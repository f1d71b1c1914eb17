/* The linear probe: how well a frozen encoder's embeddings separate the
 * classes of a labelled patch dataset. Embeds the training and test items
 * (eval mode, batched, multi-threaded decoding), fits a multinomial
 * logistic regression on the training embeddings (probe_logreg.c; C by
 * stratified cross-validation unless given) and scores the test items. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nic/encoder_train.h"
#include "nic/metrics.h"

/* The grid searched for C (scikit-learn's convention: larger = weaker penalty). */
static const double c_grid[] = {1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0};
#define NGRID ((int)(sizeof c_grid / sizeof c_grid[0]))

nic_probe_opts nic_probe_default_opts(void) {
  nic_probe_opts o;
  memset(&o, 0, sizeof o);
  o.train_split = NIC_PROBE_SPLIT_AUTO;
  o.test_split = NIC_PROBE_SPLIT_AUTO;
  o.folds = 3;
  o.batch = 128;
  o.threads = 2;
  o.seed = 1;
  return o;
}

/* ---- embedding ------------------------------------------------------------------- */

nic_status nic_encoder_embed_dataset(nic_ctx *ctx, nic_model *m, nic_dataset *ds, int split,
                                     int batch, int threads, float **features, int **labels,
                                     int64_t *n, int *dim, nic_embed_progress_fn progress,
                                     void *user, nic_error *err) {
  *features = NULL;
  if (labels) *labels = NULL;
  *n = 0;
  const nic_input_info *in = nic_model_input_info(m);
  int nd;
  int64_t shp[NIC_MAX_DIMS];
  nic_model_node_shape(m, nic_model_num_nodes(m), &nd, shp);
  if (nd != 2) return nic_err(err, NIC_EINVAL, "the model's output is not a vector per patch");
  int d = (int)shp[1];
  *dim = d;
  nic_loader_opts lo = nic_loader_default_opts();
  lo.batch_size = batch > 0 ? batch : 128;
  lo.patch_size = in->patch_size;
  lo.mpp = in->mpp > 0 ? in->mpp : 0.5;
  lo.threads = threads;
  lo.sampling = NIC_SAMPLE_SEQUENTIAL;
  lo.split = split;
  nic_loader *l = NULL;
  nic_tensor x = NIC_TENSOR_INIT;
  int64_t total = nic_dataset_count_split(ds, split);
  float *f = malloc(sizeof *f * (size_t)(total > 0 ? total : 1) * (size_t)d);
  int *lab = malloc(sizeof *lab * (size_t)(total > 0 ? total : 1));
  nic_status s = !f || !lab ? nic_err(err, NIC_ENOMEM, "out of memory") : NIC_OK;
  if (s == NIC_OK) s = nic_loader_create(&l, &ds, 1, &lo, err);
  if (s == NIC_OK) s = nic_loader_start_epoch(l, 0, err);
  int64_t done = 0;
  size_t per = (size_t)in->patch_size * (size_t)in->patch_size * 3;
  while (s == NIC_OK) {
    const nic_batch *b = NULL;
    if ((s = nic_loader_next(l, &b, err)) != NIC_OK || !b) break;
    const nic_tensor *y = NULL;
    int start = 1;
    s = nic_model_prepare_rgb8(m, b->pixels, b->n, in->patch_size, (int64_t)in->patch_size * 3,
                               (int64_t)per, &x, &start, err);
    if (s == NIC_OK) s = nic_model_forward_from(m, ctx, &x, start, 0, &y, err);
    if (s != NIC_OK || done + b->n > total) break;
    memcpy(f + done * d, y->data, sizeof *f * (size_t)b->n * (size_t)d);
    memcpy(lab + done, b->label, sizeof *lab * (size_t)b->n);
    done += b->n;
    if (progress) progress(user, done, total);
  }
  nic_loader_free(l);
  nic_tensor_free(&x);
  if (s != NIC_OK) {
    free(f);
    free(lab);
    return nic_err_prefix(err, "embedding %s: ", nic_dataset_source(ds));
  }
  *features = f;
  if (labels)
    *labels = lab;
  else
    free(lab);
  *n = done;
  return NIC_OK;
}

/* ---- splits ------------------------------------------------------------------------- */

static int resolve_split(const nic_dataset *ds, int want, int is_test) {
  if (want != NIC_PROBE_SPLIT_AUTO) return want;
  if (!is_test)
    return nic_dataset_count_split(ds, NIC_SPLIT_TRAIN) > 0 ? NIC_SPLIT_TRAIN : NIC_SPLIT_ANY;
  if (nic_dataset_count_split(ds, NIC_SPLIT_TEST) > 0) return NIC_SPLIT_TEST;
  if (nic_dataset_count_split(ds, NIC_SPLIT_VALID) > 0) return NIC_SPLIT_VALID;
  return NIC_SPLIT_ANY;
}

/* Keeps the labelled items of `split` (all of them, or a seeded random
 * `max` of them) as the TRAIN split and takes every other item out, so
 * that one loader split selects exactly them. Returns how many. */
static int64_t select_items(nic_dataset *ds, int split, int64_t max, uint64_t seed) {
  int64_t n = nic_dataset_count(ds), m = 0;
  int64_t *idx = malloc(sizeof *idx * (size_t)(n > 0 ? n : 1));
  if (!idx) return -1;
  for (int64_t i = 0; i < n; i++) {
    int in = split == NIC_SPLIT_ANY || (int)nic_dataset_split(ds, i) == split;
    if (in && nic_dataset_label(ds, i) >= 0) idx[m++] = i;
    nic_dataset_set_split(ds, i, NIC_SPLIT_NONE);
  }
  int64_t keep = max > 0 && max < m ? max : m;
  nic_rng rng;
  nic_rng_seed(&rng, seed);
  for (int64_t i = 0; i < keep && keep < m; i++) {
    int64_t j = i + (int64_t)nic_rng_below(&rng, (uint64_t)(m - i));
    int64_t t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
  for (int64_t i = 0; i < keep; i++) nic_dataset_set_split(ds, idx[i], NIC_SPLIT_TRAIN);
  free(idx);
  return keep;
}

static const char *split_name(int s) {
  switch (s) {
  case NIC_SPLIT_TRAIN:
    return "train";
  case NIC_SPLIT_VALID:
    return "valid";
  case NIC_SPLIT_TEST:
    return "test";
  case NIC_SPLIT_NONE:
    return "none";
  default:
    return "any";
  }
}

/* ---- choosing C ---------------------------------------------------------------------- */

/* Accuracy of argmax(proba) against y. */
static double accuracy_of(const double *proba, const int *y, int64_t n, int k) {
  int64_t hit = 0;
  for (int64_t i = 0; i < n; i++) {
    int best = 0;
    for (int c = 1; c < k; c++)
      if (proba[i * k + c] > proba[i * k + best]) best = c;
    hit += best == y[i];
  }
  return n > 0 ? (double)hit / (double)n : 0;
}

/* Stratified k-fold cross-validation over the grid; the best mean accuracy
 * wins, ties going to the stronger penalty. */
static nic_status choose_c(const float *x, const int *y, int64_t n, int d, int k, int folds,
                           uint64_t seed, double *best_c, double *best_acc, nic_error *err) {
  int *fold = malloc(sizeof *fold * (size_t)n);
  int64_t *order = malloc(sizeof *order * (size_t)n);
  float *xt = malloc(sizeof *xt * (size_t)n * (size_t)d);
  int *yt = malloc(sizeof *yt * (size_t)n);
  double *proba = malloc(sizeof *proba * (size_t)n * (size_t)k);
  double acc[NGRID] = {0};
  nic_status s = NIC_OK;
  if (!fold || !order || !xt || !yt || !proba) {
    s = nic_err(err, NIC_ENOMEM, "out of memory");
    goto done;
  }
  /* shuffle, then deal each class's items round the folds */
  nic_rng rng;
  nic_rng_seed(&rng, seed);
  for (int64_t i = 0; i < n; i++) order[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)nic_rng_below(&rng, (uint64_t)(i + 1)), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  for (int c = 0, next = 0; c < k; c++)
    for (int64_t i = 0; i < n; i++)
      if (y[order[i]] == c) fold[order[i]] = next++ % folds;
  for (int f = 0; f < folds && s == NIC_OK; f++) {
    int64_t nt = 0, nv = 0;
    for (int64_t i = 0; i < n; i++)
      if (fold[i] != f) {
        memcpy(xt + nt * d, x + i * d, sizeof *xt * (size_t)d);
        yt[nt++] = y[i];
      }
    float *xv = xt + nt * d;
    int *yv = yt + nt;
    for (int64_t i = 0; i < n; i++)
      if (fold[i] == f) {
        memcpy(xv + nv * d, x + i * d, sizeof *xv * (size_t)d);
        yv[nv++] = y[i];
      }
    for (int g = 0; g < NGRID && s == NIC_OK; g++) {
      nic_logreg lr;
      if ((s = nic_logreg_fit(xt, yt, nt, d, k, c_grid[g], &lr, err)) != NIC_OK) break;
      nic_logreg_predict(&lr, xv, nv, proba);
      acc[g] += accuracy_of(proba, yv, nv, k) * (double)nv / (double)n;
      nic_logreg_free(&lr);
    }
  }
  int best = 0;
  for (int g = 1; g < NGRID; g++)
    if (acc[g] > acc[best] + 1e-12) best = g;
  *best_c = c_grid[best];
  *best_acc = acc[best];
done:
  free(fold);
  free(order);
  free(xt);
  free(yt);
  free(proba);
  return s;
}

/* ---- scoring ----------------------------------------------------------------------------- */

static void score(nic_probe_result *res, const double *proba, const int *y, int64_t n, int k) {
  int *pred = malloc(sizeof *pred * (size_t)(n > 0 ? n : 1));
  int *bin = malloc(sizeof *bin * (size_t)(n > 0 ? n : 1));
  double *col = malloc(sizeof *col * (size_t)(n > 0 ? n : 1));
  nic_error e = {0};
  res->accuracy = res->balanced_accuracy = res->auc = NAN;
  if (!pred || !bin || !col) goto done;
  for (int64_t i = 0; i < n; i++) {
    int best = 0;
    for (int c = 1; c < k; c++)
      if (proba[i * k + c] > proba[i * k + best]) best = c;
    pred[i] = best;
  }
  if (nic_accuracy(y, pred, (size_t)n, &res->accuracy, &e) != NIC_OK) res->accuracy = NAN;
  if (nic_balanced_accuracy(y, pred, (size_t)n, k, &res->balanced_accuracy, &e) != NIC_OK)
    res->balanced_accuracy = NAN;
  if (k > 2 && nic_auc_ovr_macro(y, proba, (size_t)n, k, &res->auc, NULL, &e) != NIC_OK)
    res->auc = NAN;
  for (int c = 0; c < k; c++) {
    nic_probe_class *pc = &res->classes[c];
    int64_t tp = 0, fn = 0, fp = 0;
    for (int64_t i = 0; i < n; i++) {
      tp += y[i] == c && pred[i] == c;
      fn += y[i] == c && pred[i] != c;
      fp += y[i] != c && pred[i] == c;
      bin[i] = y[i] == c;
      col[i] = proba[i * k + c];
    }
    pc->n_test = tp + fn;
    pc->recall = tp + fn > 0 ? (double)tp / (double)(tp + fn) : NAN;
    pc->precision = tp + fp > 0 ? (double)tp / (double)(tp + fp) : NAN;
    if (nic_auc(bin, col, (size_t)n, &pc->auc, &e) != NIC_OK) pc->auc = NAN;
  }
  if (k == 2) res->auc = res->classes[1].auc;
done:
  free(pred);
  free(bin);
  free(col);
}

static nic_status check_datasets(nic_dataset *a, nic_dataset *b, nic_error *err) {
  if (nic_dataset_label_kind(a) != NIC_LABEL_CLASS || nic_dataset_label_kind(b) != NIC_LABEL_CLASS)
    return nic_err(err, NIC_EINVAL, "the probe needs classification datasets (class labels)");
  int k = nic_dataset_num_classes(a);
  if (k < 2)
    return nic_err(err, NIC_EINVAL, "%s has %d class(es); the probe needs 2 or more",
                   nic_dataset_source(a), k);
  if (nic_dataset_num_classes(b) != k)
    return nic_err(err, NIC_EINVAL, "%s has %d classes but %s has %d", nic_dataset_source(a), k,
                   nic_dataset_source(b), nic_dataset_num_classes(b));
  for (int c = 0; c < k; c++)
    if (strcmp(nic_dataset_class_name(a, c), nic_dataset_class_name(b, c)))
      return nic_err(err, NIC_EINVAL, "class %d is '%s' in %s but '%s' in %s", c,
                     nic_dataset_class_name(a, c), nic_dataset_source(a),
                     nic_dataset_class_name(b, c), nic_dataset_source(b));
  return NIC_OK;
}

nic_status nic_probe(nic_ctx *ctx, nic_model *m, nic_dataset *train, nic_dataset *test,
                     const nic_probe_opts *opts, nic_probe_result *res, nic_error *err) {
  memset(res, 0, sizeof *res);
  nic_probe_opts o = opts ? *opts : nic_probe_default_opts();
  nic_status s = check_datasets(train, test, err);
  if (s != NIC_OK) return s;
  int k = nic_dataset_num_classes(train);
  res->k = k;
  res->train_split = resolve_split(train, o.train_split, 0);
  res->test_split = resolve_split(test, o.test_split, 1);
  if (!strcmp(nic_dataset_source(train), nic_dataset_source(test)) &&
      (res->train_split == res->test_split || res->train_split == NIC_SPLIT_ANY ||
       res->test_split == NIC_SPLIT_ANY))
    return nic_err(err, NIC_EINVAL,
                   "the test items (%s split) would include the training items (%s split) of %s: "
                   "choose different splits or datasets",
                   split_name(res->test_split), split_name(res->train_split),
                   nic_dataset_source(train));
  int64_t ntr = select_items(train, res->train_split, o.max_train, o.seed * 2 + 1);
  int64_t nte = select_items(test, res->test_split, o.max_test, o.seed * 2 + 2);
  if (ntr < 0 || nte < 0) return nic_err(err, NIC_ENOMEM, "out of memory");
  if (ntr < 2 || nte < 1)
    return nic_err(err, NIC_EINVAL, "the probe has %lld labelled training and %lld test items",
                   (long long)ntr, (long long)nte);
  res->classes = calloc((size_t)k, sizeof *res->classes);
  if (!res->classes) return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int c = 0; c < k; c++)
    snprintf(res->classes[c].name, sizeof res->classes[c].name, "%s",
             nic_dataset_class_name(train, c));

  float *xtr = NULL, *xte = NULL;
  int *ytr = NULL, *yte = NULL, dim = 0;
  double *proba = NULL;
  nic_logreg lr;
  memset(&lr, 0, sizeof lr);
  s = nic_encoder_embed_dataset(ctx, m, train, NIC_SPLIT_TRAIN, o.batch, o.threads, &xtr, &ytr,
                                &res->n_train, &dim, o.progress, o.user, err);
  if (s == NIC_OK)
    s = nic_encoder_embed_dataset(ctx, m, test, NIC_SPLIT_TRAIN, o.batch, o.threads, &xte, &yte,
                                  &res->n_test, &dim, o.progress, o.user, err);
  res->dim = dim;
  if (s == NIC_OK) {
    for (int64_t i = 0; i < res->n_train; i++) res->classes[ytr[i]].n_train++;
    int present = 0;
    for (int c = 0; c < k; c++) present += res->classes[c].n_train > 0;
    if (present < 2) s = nic_err(err, NIC_EINVAL, "the training items hold a single class");
  }
  res->C = o.C;
  res->cv_accuracy = NAN;
  if (s == NIC_OK && !(o.C > 0))
    s = choose_c(xtr, ytr, res->n_train, dim, k, o.folds >= 2 ? o.folds : 3, o.seed, &res->C,
                 &res->cv_accuracy, err);
  if (s == NIC_OK) s = nic_logreg_fit(xtr, ytr, res->n_train, dim, k, res->C, &lr, err);
  if (s == NIC_OK) {
    proba = malloc(sizeof *proba * (size_t)res->n_test * (size_t)k);
    if (!proba) s = nic_err(err, NIC_ENOMEM, "out of memory");
  }
  if (s == NIC_OK) {
    nic_logreg_predict(&lr, xte, res->n_test, proba);
    score(res, proba, yte, res->n_test, k);
  }
  nic_logreg_free(&lr);
  free(proba);
  free(xtr);
  free(xte);
  free(ytr);
  free(yte);
  if (s != NIC_OK) nic_probe_result_free(res);
  return s;
}

void nic_probe_result_free(nic_probe_result *res) {
  free(res->classes);
  res->classes = NULL;
}
