/* Weight averaging of encoders and training checkpoints ("model soups",
 * Wortsman et al. 2022; stochastic weight averaging over checkpoints,
 * Izmailov et al. 2018).
 *
 * Runs fine-tuned from one starting point stay in one basin of the loss, so
 * the mean of their weights is itself a good network, and usually a more
 * robust one than any member: it generalises better to slides and sites the
 * members were not trained on. The mean is taken over every stored value,
 * batch-norm statistics included; a checkpoint that carries a moving
 * average (--ema) contributes that average, the weights its run validated
 * and wrote. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nic/encoder_train.h"
#include "nic/features.h"

/* The moving average of param name in a checkpoint's extra tensors, or NULL. */
static const nic_param *ema_of(const nic_param *ext, int next, const char *name) {
  char key[sizeof ext->name + 16];
  snprintf(key, sizeof key, "optim/%s/e", name);
  for (int i = 0; i < next; i++)
    if (!strcmp(ext[i].name, key)) return &ext[i];
  return NULL;
}

/* Refuses a model whose parameters differ from the first input's in number,
 * name or shape: their mean would mean nothing. */
static nic_status check_same(nic_model *first, const char *first_path, nic_model *m,
                             const char *path, nic_error *err) {
  int n0, n;
  nic_param **p0 = nic_model_params(first, &n0);
  nic_model_params(m, &n);
  if (n != n0)
    return nic_err(err, NIC_EFORMAT, "%s has %d parameter tensors, %s has %d: not the same model",
                   path, n, first_path, n0);
  for (int i = 0; i < n0; i++) {
    nic_param *q = nic_model_param(m, p0[i]->name);
    if (!q) return nic_err(err, NIC_EFORMAT, "%s has no tensor '%s'", path, p0[i]->name);
    if (!nic_tensor_same_shape(&q->value, &p0[i]->value))
      return nic_err(err, NIC_EFORMAT, "%s: tensor '%s' differs in shape from %s's", path,
                     p0[i]->name, first_path);
  }
  return NIC_OK;
}

/* Adds input m's values (or its moving averages) into acc; *ema says
 * whether the averages were taken. */
static void accumulate(nic_model *first, nic_model *m, const nic_param *ext, int next, int live,
                       double **acc, int *ema) {
  int np;
  nic_param **p0 = nic_model_params(first, &np);
  *ema = 0;
  for (int i = 0; i < np; i++) {
    const nic_param *q = nic_model_param(m, p0[i]->name);
    const nic_param *e = live ? NULL : ema_of(ext, next, p0[i]->name);
    const float *src = e && nic_tensor_numel(&e->value) == nic_tensor_numel(&q->value)
                           ? e->value.data
                           : q->value.data;
    if (src != q->value.data) *ema = 1;
    int64_t n = nic_tensor_numel(&q->value);
    for (int64_t j = 0; j < n; j++) acc[i][j] += src[j];
  }
}

/* One JSON record of an input for the "averaged_from" metadata. */
static nic_status input_record(json_object *arr, const char *path, int ema, nic_error *err) {
  char hex[65];
  nic_status s = nic_features_sha256_file(path, hex, err);
  if (s != NIC_OK) return s;
  json_object *o = json_object_new_object();
  json_object_object_add(o, "path", json_object_new_string(path));
  json_object_object_add(o, "sha256", json_object_new_string(hex));
  json_object_object_add(o, "weights", json_object_new_string(ema ? "moving average" : "stored"));
  json_object_array_add(arr, o);
  return NIC_OK;
}

nic_status nic_enc_average(const char *const *paths, int n, int live, const char *out,
                           int *from_ema, nic_error *err) {
  if (n < 1 || !paths || !out) return nic_err(err, NIC_EINVAL, "average: no input models");
  nic_model *first = NULL;
  nic_param *ext = NULL;
  int next = 0, np = 0, nema = 0;
  double **acc = NULL;
  json_object *from = json_object_new_array();
  nic_status s = nic_model_load_extra(&first, paths[0], "optim/", &ext, &next, err);
  if (s == NIC_OK) {
    nic_param **p0 = nic_model_params(first, &np);
    if (!(acc = calloc((size_t)np, sizeof *acc))) s = nic_err(err, NIC_ENOMEM, "out of memory");
    for (int i = 0; i < np && s == NIC_OK; i++) {
      size_t k = (size_t)nic_tensor_numel(&p0[i]->value);
      if (!(acc[i] = calloc(k ? k : 1, sizeof **acc)))
        s = nic_err(err, NIC_ENOMEM, "out of memory");
    }
  }
  for (int k = 0; k < n && s == NIC_OK; k++) {
    nic_model *m = first;
    if (k > 0) {
      nic_params_free(ext, next);
      ext = NULL, next = 0;
      s = nic_model_load_extra(&m, paths[k], "optim/", &ext, &next, err);
      if (s == NIC_OK) s = check_same(first, paths[0], m, paths[k], err);
    }
    int ema = 0;
    if (s == NIC_OK) accumulate(first, m, ext, next, live, acc, &ema);
    if (m != first) nic_model_free(m);
    nema += ema;
    if (s == NIC_OK) s = input_record(from, paths[k], ema, err);
  }
  if (s == NIC_OK) {
    nic_param **p0 = nic_model_params(first, &np);
    for (int i = 0; i < np; i++) {
      int64_t k = nic_tensor_numel(&p0[i]->value);
      for (int64_t j = 0; j < k; j++) p0[i]->value.data[j] = (float)(acc[i][j] / n);
    }
    nic_model_set_meta(first, "averaged_from",
                       json_object_to_json_string_ext(from, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE));
    s = nic_model_save(first, out, err);
  }
  if (s == NIC_OK && from_ema) *from_ema = nema;
  for (int i = 0; acc && i < np; i++) free(acc[i]);
  free(acc);
  json_object_put(from);
  nic_params_free(ext, next);
  nic_model_free(first);
  return s;
}
