/* Inference rewrites: fold batch norm into a neighbouring conv/dense, fuse
 * standalone activations into the conv/dense before them, and drop dropout
 * (identity at inference). Each rewrite removes a node, so the oneDNN
 * backend runs fewer, fused primitives on the same layouts. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/layer.h"

/* Number of nodes reading node k's output (the last node also feeds the
 * caller, counted as one more). */
static int consumers(const nic_model *m, int k) {
  int n = k == m->nnodes ? 1 : 0;
  for (int j = 0; j < m->nnodes; j++)
    for (int i = 0; i < m->layers[j]->ninputs; i++)
      if (m->layers[j]->inputs[i] == k) n++;
  return n;
}

static int only_consumer(const nic_model *m, int k) {
  if (consumers(m, k) != 1 || k == m->nnodes) return -1;
  for (int j = 0; j < m->nnodes; j++)
    for (int i = 0; i < m->layers[j]->ninputs; i++)
      if (m->layers[j]->inputs[i] == k) return j + 1;
  return -1;
}

static void drop_param(nic_model *m, nic_param *p) {
  if (!p) return;
  for (int i = 0; i < m->nparams; i++)
    if (m->params[i] == p) {
      nic_tensor_free(&p->value);
      nic_tensor_free(&p->grad);
      free(p);
      memmove(&m->params[i], &m->params[i + 1], sizeof *m->params * (size_t)(m->nparams - i - 1));
      m->nparams--;
      return;
    }
}

/* Removes node k; its consumers read node k's input instead. */
static void remove_node(nic_model *m, int k) {
  nic_layer *l = m->layers[k - 1];
  int src = l->inputs[0];
  for (int j = 0; j < m->nnodes; j++)
    for (int i = 0; i < m->layers[j]->ninputs; i++) {
      int *in = &m->layers[j]->inputs[i];
      if (*in == k)
        *in = src;
      else if (*in > k)
        (*in)--;
    }
  drop_param(m, l->weight);
  drop_param(m, l->bias);
  drop_param(m, l->gamma);
  drop_param(m, l->beta);
  drop_param(m, l->running_mean);
  drop_param(m, l->running_var);
  free(l);
  memmove(&m->layers[k - 1], &m->layers[k], sizeof *m->layers * (size_t)(m->nnodes - k));
  m->nnodes--;
}

/* BN as y = a*x + b per channel. */
static void bn_affine(const nic_layer *bn, float *a, float *b) {
  int64_t c = bn->gamma->value.shape[0];
  for (int64_t i = 0; i < c; i++) {
    double s =
        bn->gamma->value.data[i] / sqrt((double)bn->running_var->value.data[i] + bn->spec.eps);
    a[i] = (float)s;
    b[i] = (float)(bn->beta->value.data[i] - bn->running_mean->value.data[i] * s);
  }
}

static nic_status ensure_bias(nic_model *m, nic_layer *l, nic_error *err) {
  if (l->bias) return NIC_OK;
  if (m->nparams == m->cap_params) {
    int cap = m->cap_params ? m->cap_params * 2 : 16;
    nic_param **p = realloc(m->params, sizeof *p * (size_t)cap);
    if (!p) return nic_err(err, NIC_ENOMEM, "out of memory");
    m->params = p;
    m->cap_params = cap;
  }
  nic_param *p = calloc(1, sizeof *p);
  if (!p) return nic_err(err, NIC_ENOMEM, "out of memory");
  snprintf(p->name, sizeof p->name, "%s.bias", l->name);
  p->trainable = 1;
  int64_t n = l->spec.out;
  if (nic_tensor_alloc(&p->value, 1, &n, err) != NIC_OK) {
    free(p);
    return err ? err->code : NIC_ENOMEM;
  }
  m->params[m->nparams++] = p;
  l->bias = p;
  l->spec.bias = 1;
  return NIC_OK;
}

/* BN right after a conv/dense with no activation: scale the producer. */
static int fold_into_producer(nic_layer *prod, const nic_layer *bn) {
  int64_t c = bn->gamma->value.shape[0];
  float *a = malloc(sizeof(float) * (size_t)c * 2), *b = a + c;
  if (!a) return -1;
  bn_affine(bn, a, b);
  nic_tensor *w = &prod->weight->value;
  int64_t per = nic_tensor_numel(w) / w->shape[0];
  for (int64_t o = 0; o < c; o++) {
    for (int64_t i = 0; i < per; i++) w->data[o * per + i] *= a[o];
    prod->bias->value.data[o] = prod->bias->value.data[o] * a[o] + b[o];
  }
  free(a);
  return 0;
}

/* Channel of input feature f of a dense layer fed through `flat` (or
 * directly, flat == NULL) by the BN's output of shape in[]. */
static int64_t feature_channel(const int64_t *shape, int ndim, const nic_layer *flat, int64_t f) {
  if (ndim == 2) return f;
  int64_t hw = shape[2] * shape[3];
  if (flat && flat->spec.order == NIC_FLATTEN_NHWC) return f % shape[1];
  return f / hw;
}

/* BN before a 'valid' conv or a dense: scale the consumer's inputs. */
static int fold_into_consumer(nic_layer *cons, const nic_layer *bn, const nic_layer *flat) {
  int64_t c = bn->gamma->value.shape[0];
  float *a = malloc(sizeof(float) * (size_t)c * 2), *b = a + c;
  if (!a) return -1;
  bn_affine(bn, a, b);
  nic_tensor *w = &cons->weight->value;
  int64_t outs = w->shape[0], per = nic_tensor_numel(w) / outs;
  for (int64_t o = 0; o < outs; o++) {
    double shift = 0;
    float *wo = w->data + o * per;
    if (cons->spec.kind == NIC_LAYER_CONV2D) {
      int64_t cin = w->shape[1], ksz = w->shape[2] * w->shape[3];
      int64_t group = o / (outs / cons->spec.groups);
      for (int64_t ci = 0; ci < cin; ci++) {
        int64_t ch = group * cin + ci;
        for (int64_t t = 0; t < ksz; t++) {
          shift += (double)wo[ci * ksz + t] * b[ch];
          wo[ci * ksz + t] *= a[ch];
        }
      }
    } else {
      for (int64_t f = 0; f < per; f++) {
        int64_t ch = feature_channel(bn->out_shape, bn->out_ndim, flat, f);
        shift += (double)wo[f] * b[ch];
        wo[f] *= a[ch];
      }
    }
    cons->bias->value.data[o] += (float)shift;
  }
  free(a);
  return 0;
}

static int zero_pad(const nic_layer_spec *s) {
  return !s->pad[0] && !s->pad[1] && !s->pad[2] && !s->pad[3];
}

/* Tries to remove BN node k; returns 1 when done. */
static int fold_bn(nic_model *m, int k, nic_error *err) {
  nic_layer *bn = m->layers[k - 1];
  int src = bn->inputs[0];
  if (src >= 1) {
    nic_layer *p = m->layers[src - 1];
    if ((p->spec.kind == NIC_LAYER_CONV2D || p->spec.kind == NIC_LAYER_DENSE) &&
        p->spec.act == NIC_ACT_NONE && consumers(m, src) == 1) {
      if (ensure_bias(m, p, err) != NIC_OK) return -1;
      if (fold_into_producer(p, bn) < 0) return nic_err(err, NIC_ENOMEM, "out of memory"), -1;
      remove_node(m, k);
      return 1;
    }
  }
  int c = only_consumer(m, k);
  if (c < 0) return 0;
  nic_layer *cons = m->layers[c - 1], *flat = NULL;
  if (cons->spec.kind == NIC_LAYER_FLATTEN) {
    int c2 = only_consumer(m, c);
    if (c2 < 0) return 0;
    flat = cons;
    cons = m->layers[c2 - 1];
    if (cons->spec.kind != NIC_LAYER_DENSE) return 0;
  }
  int ok = cons->spec.kind == NIC_LAYER_DENSE ||
           (cons->spec.kind == NIC_LAYER_CONV2D && zero_pad(&cons->spec));
  if (!ok) return 0;
  if (ensure_bias(m, cons, err) != NIC_OK) return -1;
  if (fold_into_consumer(cons, bn, flat) < 0) return nic_err(err, NIC_ENOMEM, "out of memory"), -1;
  remove_node(m, k);
  return 1;
}

/* Activation after a conv/dense with none: make it the producer's post-op. */
static int fuse_act(nic_model *m, int k) {
  nic_layer *act = m->layers[k - 1];
  int src = act->inputs[0];
  if (src < 1 || consumers(m, src) != 1) return 0;
  nic_layer *p = m->layers[src - 1];
  if ((p->spec.kind != NIC_LAYER_CONV2D && p->spec.kind != NIC_LAYER_DENSE) ||
      p->spec.act != NIC_ACT_NONE)
    return 0;
  p->spec.act = act->spec.act;
  p->spec.alpha = act->spec.alpha;
  remove_node(m, k);
  return 1;
}

nic_status nic_model_optimize_inference(nic_model *m, nic_error *err) {
  nic_model_release_backend(m);
  nic_model_reset_runtime(m);
  int changed = 1;
  while (changed) { /* each rewrite may enable another (act then BN) */
    changed = 0;
    for (int k = 1; k <= m->nnodes && !changed; k++) {
      nic_layer_kind kind = m->layers[k - 1]->spec.kind;
      int r = 0;
      if (kind == NIC_LAYER_DROPOUT || kind == NIC_LAYER_SPATIAL_DROPOUT) {
        if (m->nnodes > 1) {
          remove_node(m, k);
          r = 1;
        }
      } else if (kind == NIC_LAYER_ACT) {
        r = fuse_act(m, k);
      } else if (kind == NIC_LAYER_BATCHNORM) {
        r = fold_bn(m, k, err);
      }
      if (r < 0) return err ? err->code : NIC_ENOMEM;
      changed = r;
    }
  }
  for (int i = 0; i < m->nparams; i++) { /* no training from here: drop grads */
    m->params[i]->trainable = 0;
    nic_tensor_free(&m->params[i]->grad);
  }
  m->inference_only = 1;
  return NIC_OK;
}
