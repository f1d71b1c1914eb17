/* Weight averaging and warm starts for encoder training.
 *
 * EMA: an exponential moving average of every parameter (trunk, heads and
 * the shared head; batch-norm running statistics included, as timm's
 * ModelEmaV2 does) is updated after each optimizer step. Validation and the
 * written encoder use the averaged weights; training goes on from the live
 * ones. Averaging the last few thousand steps lands nearer the centre of the
 * flat region SGD wanders in, which is what generalises to unseen slides
 * (Polyak averaging; Izmailov et al. 2018). The decay warms up as
 * min(decay, (1 + t) / (10 + t)) so the early average is not dominated by
 * the random initialisation.
 *
 * Init: the trunk (and any head of the same name and size) starts from an
 * existing encoder or training checkpoint instead of random values, so a
 * run can refine an encoder (e.g. a short averaging phase after a long
 * schedule). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encoder/train_internal.h"
#include "nic/features.h"

nic_status enc_ema_setup(enc_run *r, nic_error *err) {
  if (!(r->o->ema > 0)) return NIC_OK;
  int total = enc_all_params(r, NULL);
  r->ema_p = calloc((size_t)total, sizeof *r->ema_p);
  r->ema_v = calloc((size_t)total, sizeof *r->ema_v);
  if (!r->ema_p || !r->ema_v) return nic_err(err, NIC_ENOMEM, "out of memory for EMA weights");
  r->ema_n = enc_all_params(r, r->ema_p);
  for (int i = 0; i < r->ema_n; i++) {
    size_t n = (size_t)nic_tensor_numel(&r->ema_p[i]->value);
    if (!(r->ema_v[i] = malloc(sizeof(float) * (n ? n : 1))))
      return nic_err(err, NIC_ENOMEM, "out of memory for EMA weights");
  }
  enc_ema_reset(r);
  return NIC_OK;
}

void enc_ema_reset(enc_run *r) {
  for (int i = 0; i < r->ema_n; i++)
    memcpy(r->ema_v[i], r->ema_p[i]->value.data,
           sizeof(float) * (size_t)nic_tensor_numel(&r->ema_p[i]->value));
  r->ema_steps = 0;
}

void enc_ema_update(enc_run *r) {
  if (!r->ema_n) return;
  double t = (double)r->ema_steps++;
  float d = (float)fmin((double)r->o->ema, (1.0 + t) / (10.0 + t)), a = 1.0f - d;
  for (int i = 0; i < r->ema_n; i++) {
    const float *p = r->ema_p[i]->value.data;
    float *v = r->ema_v[i];
    int64_t n = nic_tensor_numel(&r->ema_p[i]->value);
    for (int64_t j = 0; j < n; j++) v[j] = d * v[j] + a * p[j];
  }
}

void enc_ema_swap(enc_run *r) {
  for (int i = 0; i < r->ema_n; i++) {
    float *p = r->ema_p[i]->value.data, *v = r->ema_v[i];
    int64_t n = nic_tensor_numel(&r->ema_p[i]->value);
    for (int64_t j = 0; j < n; j++) {
      float x = p[j];
      p[j] = v[j];
      v[j] = x;
    }
  }
  r->ema_live = !r->ema_live;
}

void enc_ema_free(enc_run *r) {
  for (int i = 0; i < r->ema_n; i++) free(r->ema_v[i]);
  free(r->ema_v);
  free(r->ema_p);
  r->ema_v = NULL;
  r->ema_p = NULL;
  r->ema_n = 0;
}

/* Whether src has every parameter of dst, of the same size. */
static int same_params(nic_model *dst, nic_model *src) {
  int np;
  nic_param **ps = nic_model_params(dst, &np);
  for (int i = 0; i < np; i++) {
    nic_param *q = nic_model_param(src, ps[i]->name);
    if (!q || nic_tensor_numel(&q->value) != nic_tensor_numel(&ps[i]->value)) return 0;
  }
  return 1;
}

nic_status enc_init_from(enc_run *r, const char *path, nic_error *err) {
  nic_model *m = NULL;
  nic_param *ext = NULL;
  int next = 0;
  /* checkpoints carry optimizer tensors under "optim/": not wanted here */
  nic_status s = nic_model_load_extra(&m, path, "optim/", &ext, &next, err);
  nic_params_free(ext, next);
  if (s != NIC_OK) return nic_err_prefix(err, "--init: ");
  s = enc_copy_params(r->trunk, m, path, err);
  if (s != NIC_OK) {
    nic_model_free(m);
    return nic_err_prefix(err, "--init: the trunk: ");
  }
  int heads = 0;
  for (int i = 0; i < r->nt && s == NIC_OK; i++) {
    if (!r->t[i].head || !same_params(r->t[i].head, m)) continue; /* a new task: fresh head */
    if ((s = enc_copy_params(r->t[i].head, m, path, err)) == NIC_OK) heads++;
  }
  nic_model_free(m);
  r->init_heads = heads;
  snprintf(r->init_path, sizeof r->init_path, "%s", path);
  if (s == NIC_OK) s = nic_features_sha256_file(path, r->init_sha256, err);
  return s;
}
