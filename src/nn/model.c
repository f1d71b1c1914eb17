/* The graph runtime: building a model from layer specs (with shape checks
 * and parameter creation), and running forward/backward over its nodes in
 * topological order on the context's backend. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/layer.h"

nic_status nic_model_create(nic_model **out, int c, int h, int w, nic_error *err) {
  *out = NULL;
  if (c < 1 || h < 1 || w < 1)
    return nic_err(err, NIC_EINVAL, "model input must be positive, got %dx%dx%d", c, h, w);
  nic_model *m = calloc(1, sizeof *m);
  if (!m) return nic_err(err, NIC_ENOMEM, "out of memory");
  m->c = c;
  m->h = h;
  m->w = w;
  m->input.channels = c;
  m->input.height = h;
  m->input.width = w;
  m->input.patch_size = h;
  for (int i = 0; i < 4; i++) {
    m->input.mean[i] = 0.5f;
    m->input.std[i] = 0.5f;
  }
  *out = m;
  return NIC_OK;
}

void nic_model_release_backend(nic_model *m) {
  for (int k = 0; k < m->nnodes; k++) {
    nic_layer *l = m->layers[k];
    if (l->be_state && l->be_owner) l->be_owner->ops->release(l->be_owner, l);
    l->be_state = NULL;
    l->be_owner = NULL;
  }
}

void nic_model_reset_runtime(nic_model *m) {
  if (m->outs)
    for (int k = 0; k <= m->nnodes; k++) nic_tensor_free(&m->outs[k]);
  if (m->douts)
    for (int k = 0; k <= m->nnodes; k++) nic_tensor_free(&m->douts[k]);
  free(m->outs);
  free(m->douts);
  free(m->grad_ready);
  m->outs = m->douts = NULL;
  m->grad_ready = NULL;
}

void nic_model_free(nic_model *m) {
  if (!m) return;
  nic_model_release_backend(m);
  nic_model_reset_runtime(m);
  for (int k = 0; k < m->nnodes; k++) free(m->layers[k]);
  free(m->layers);
  for (int i = 0; i < m->nparams; i++) {
    nic_tensor_free(&m->params[i]->value);
    nic_tensor_free(&m->params[i]->grad);
    free(m->params[i]);
  }
  free(m->params);
  for (int i = 0; i < m->nmeta; i++) {
    free(m->meta[i].key);
    free(m->meta[i].value);
  }
  free(m->meta);
  nic_tensor_free(&m->out_plain);
  nic_tensor_free(&m->pre);
  nic_tensor_free(&m->scratch[0]);
  nic_tensor_free(&m->scratch[1]);
  free(m);
}

/* ---- building ----------------------------------------------------------- */

static nic_param *new_param(nic_model *m, const char *layer, const char *what, int ndim,
                            const int64_t *shape, int trainable, nic_error *err) {
  if (m->nparams == m->cap_params) {
    int cap = m->cap_params ? m->cap_params * 2 : 16;
    nic_param **p = realloc(m->params, sizeof *p * (size_t)cap);
    if (!p) return NULL;
    m->params = p;
    m->cap_params = cap;
  }
  nic_param *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  snprintf(p->name, sizeof p->name, "%s.%s", layer, what);
  p->trainable = trainable;
  if (nic_tensor_alloc(&p->value, ndim, shape, err) != NIC_OK ||
      (trainable && nic_tensor_alloc(&p->grad, ndim, shape, err) != NIC_OK)) {
    nic_tensor_free(&p->value);
    free(p);
    return NULL;
  }
  m->params[m->nparams++] = p;
  return p;
}

static void node_shape(const nic_model *m, int k, int *ndim, int64_t *shape) {
  if (k == 0) {
    *ndim = 4;
    shape[0] = 1;
    shape[1] = m->c;
    shape[2] = m->h;
    shape[3] = m->w;
    return;
  }
  const nic_layer *l = m->layers[k - 1];
  *ndim = l->out_ndim;
  memcpy(shape, l->out_shape, sizeof l->out_shape);
}

static int64_t features(int ndim, const int64_t *s) {
  int64_t f = 1;
  for (int i = 1; i < ndim; i++) f *= s[i];
  return f;
}

/* Computes l's output shape from its input shape; checks the spec. */
static nic_status infer_shape(nic_model *m, nic_layer *l, nic_error *err) {
  const nic_layer_spec *s = &l->spec;
  const int64_t *in = l->in_shape;
  int64_t *o = l->out_shape;
  memset(o, 0, sizeof l->out_shape);
  o[0] = 1;
  l->out_ndim = l->in_ndim;
  int is4 = l->in_ndim == 4;
  switch (s->kind) {
  case NIC_LAYER_CONV2D:
  case NIC_LAYER_POOL: {
    if (!is4) return nic_err(err, NIC_EINVAL, "%s: needs a 4-D input", l->name);
    if (s->kernel[0] < 1 || s->kernel[1] < 1 || s->stride[0] < 1 || s->stride[1] < 1)
      return nic_err(err, NIC_EINVAL, "%s: kernel and stride must be >= 1", l->name);
    for (int i = 0; i < 4; i++)
      if (s->pad[i] < 0 || s->pad[i] >= s->kernel[i % 2])
        return nic_err(err, NIC_EINVAL, "%s: padding must be in [0, kernel)", l->name);
    int64_t oh = (in[2] + s->pad[0] + s->pad[2] - s->kernel[0]) / s->stride[0] + 1;
    int64_t ow = (in[3] + s->pad[1] + s->pad[3] - s->kernel[1]) / s->stride[1] + 1;
    if (in[2] + s->pad[0] + s->pad[2] < s->kernel[0] ||
        in[3] + s->pad[1] + s->pad[3] < s->kernel[1])
      return nic_err(err, NIC_EINVAL, "%s: input %lldx%lld smaller than the kernel", l->name,
                     (long long)in[2], (long long)in[3]);
    int64_t oc = in[1];
    if (s->kind == NIC_LAYER_CONV2D) {
      if (s->groups < 1 || in[1] % s->groups || s->out < 1 || s->out % s->groups)
        return nic_err(err, NIC_EINVAL,
                       "%s: groups %d must divide input channels %lld and filters %d", l->name,
                       s->groups, (long long)in[1], s->out);
      oc = s->out;
    }
    o[1] = oc;
    o[2] = oh;
    o[3] = ow;
    break;
  }
  case NIC_LAYER_DENSE:
    if (s->out < 1) return nic_err(err, NIC_EINVAL, "%s: units must be >= 1", l->name);
    l->out_ndim = 2;
    o[1] = s->out;
    break;
  case NIC_LAYER_BATCHNORM:
    if (l->in_ndim != 2 && !is4)
      return nic_err(err, NIC_EINVAL, "%s: needs a 2-D or 4-D input", l->name);
    if (s->eps <= 0) return nic_err(err, NIC_EINVAL, "%s: eps must be > 0", l->name);
    memcpy(o, in, sizeof l->in_shape);
    break;
  case NIC_LAYER_ACT:
  case NIC_LAYER_DROPOUT:
    if (s->p < 0 || s->p >= 1) return nic_err(err, NIC_EINVAL, "%s: p must be in [0, 1)", l->name);
    memcpy(o, in, sizeof l->in_shape);
    break;
  case NIC_LAYER_SPATIAL_DROPOUT:
    if (!is4) return nic_err(err, NIC_EINVAL, "%s: needs a 4-D input", l->name);
    if (s->p < 0 || s->p >= 1) return nic_err(err, NIC_EINVAL, "%s: p must be in [0, 1)", l->name);
    memcpy(o, in, sizeof l->in_shape);
    break;
  case NIC_LAYER_GLOBALPOOL:
    if (!is4) return nic_err(err, NIC_EINVAL, "%s: needs a 4-D input", l->name);
    l->out_ndim = 2;
    o[1] = in[1];
    break;
  case NIC_LAYER_FLATTEN:
    l->out_ndim = 2;
    o[1] = features(l->in_ndim, in);
    break;
  case NIC_LAYER_ADD: {
    int nd2;
    int64_t s2[NIC_MAX_DIMS];
    node_shape(m, l->inputs[1], &nd2, s2);
    if (nd2 != l->in_ndim || memcmp(s2, in, sizeof s2) != 0)
      return nic_err(err, NIC_EINVAL, "%s: the two inputs differ in shape", l->name);
    memcpy(o, in, sizeof l->in_shape);
    break;
  }
  default:
    return nic_err(err, NIC_EINVAL, "unknown layer kind %d", (int)s->kind);
  }
  return NIC_OK;
}

static nic_status make_params(nic_model *m, nic_layer *l, nic_error *err) {
  const nic_layer_spec *s = &l->spec;
  int64_t shp[4];
  int64_t c = l->in_shape[1];
  switch (s->kind) {
  case NIC_LAYER_CONV2D:
    shp[0] = s->out;
    shp[1] = c / s->groups;
    shp[2] = s->kernel[0];
    shp[3] = s->kernel[1];
    if (!(l->weight = new_param(m, l->name, "weight", 4, shp, 1, err))) goto oom;
    break;
  case NIC_LAYER_DENSE:
    shp[0] = s->out;
    shp[1] = features(l->in_ndim, l->in_shape);
    if (!(l->weight = new_param(m, l->name, "weight", 2, shp, 1, err))) goto oom;
    break;
  case NIC_LAYER_BATCHNORM:
    shp[0] = c;
    if (!(l->gamma = new_param(m, l->name, "gamma", 1, shp, 1, err)) ||
        !(l->beta = new_param(m, l->name, "beta", 1, shp, 1, err)) ||
        !(l->running_mean = new_param(m, l->name, "running_mean", 1, shp, 0, err)) ||
        !(l->running_var = new_param(m, l->name, "running_var", 1, shp, 0, err)))
      goto oom;
    nic_tensor_fill(&l->gamma->value, 1.0f);
    nic_tensor_fill(&l->running_var->value, 1.0f);
    return NIC_OK;
  default:
    return NIC_OK;
  }
  if (s->bias) {
    shp[0] = s->out;
    if (!(l->bias = new_param(m, l->name, "bias", 1, shp, 1, err))) goto oom;
  }
  return NIC_OK;
oom:
  if (err && err->code == NIC_OK) nic_err(err, NIC_ENOMEM, "out of memory for %s", l->name);
  return err ? err->code : NIC_ENOMEM;
}

int nic_model_add(nic_model *m, nic_layer_spec spec, int in, int in2, nic_error *err) {
  if (m->inference_only) {
    nic_err(err, NIC_EINVAL, "cannot add layers to a model optimized for inference");
    return -1;
  }
  if (in < 0) in = m->nnodes;
  int nin = spec.kind == NIC_LAYER_ADD ? 2 : 1;
  if (in > m->nnodes || (nin == 2 && (in2 < 0 || in2 > m->nnodes))) {
    nic_err(err, NIC_EINVAL, "layer input refers to node %d, but the model has %d",
            in > m->nnodes ? in : in2, m->nnodes);
    return -1;
  }
  if (m->nnodes == m->cap_nodes) {
    int cap = m->cap_nodes ? m->cap_nodes * 2 : 16;
    nic_layer **p = realloc(m->layers, sizeof *p * (size_t)cap);
    if (!p) {
      nic_err(err, NIC_ENOMEM, "out of memory");
      return -1;
    }
    m->layers = p;
    m->cap_nodes = cap;
  }
  nic_layer *l = calloc(1, sizeof *l);
  if (!l) {
    nic_err(err, NIC_ENOMEM, "out of memory");
    return -1;
  }
  l->spec = spec;
  if (spec.name && *spec.name)
    snprintf(l->name, sizeof l->name, "%s", spec.name);
  else
    snprintf(l->name, sizeof l->name, "%s_%d", nic_layer_kind_name(spec.kind), m->nnodes + 1);
  for (int k = 0; k < m->nnodes; k++)
    if (!strcmp(m->layers[k]->name, l->name)) {
      nic_err(err, NIC_EINVAL, "duplicate layer name '%s'", l->name);
      free(l);
      return -1;
    }
  l->spec.name = l->name;
  l->ninputs = nin;
  l->inputs[0] = in;
  l->inputs[1] = nin == 2 ? in2 : -1;
  node_shape(m, in, &l->in_ndim, l->in_shape);
  if (spec.kind == NIC_LAYER_CONV2D && spec.groups == 0) { /* depthwise */
    l->spec.groups = (int)l->in_shape[1];
    if (l->spec.out == 0) l->spec.out = (int)l->in_shape[1];
  }
  if (infer_shape(m, l, err) != NIC_OK || make_params(m, l, err) != NIC_OK) {
    nic_err_prefix(err, "adding layer %d: ", m->nnodes + 1);
    free(l); /* params already created stay owned by the model, harmlessly */
    return -1;
  }
  nic_model_reset_runtime(m); /* node count changed */
  m->layers[m->nnodes++] = l;
  return m->nnodes;
}

int nic_model_add_sepconv(nic_model *m, const char *name, int filters, int k, int stride, int pad,
                          int bias, nic_error *err) {
  char n1[64], n2[64];
  snprintf(n1, sizeof n1, "%s.dw", name);
  snprintf(n2, sizeof n2, "%s.pw", name);
  nic_layer_spec dw = nic_spec_dwconv(k, stride, pad);
  dw.name = n1;
  if (nic_model_add(m, dw, -1, -1, err) < 0) return -1;
  nic_layer_spec pw = nic_spec_conv(filters, 1, 1, 0, NIC_ACT_NONE, 0);
  pw.name = n2;
  pw.bias = bias;
  return nic_model_add(m, pw, -1, -1, err);
}

int nic_model_num_nodes(const nic_model *m) {
  return m->nnodes;
}

void nic_model_node_shape(const nic_model *m, int k, int *ndim, int64_t shape[NIC_MAX_DIMS]) {
  node_shape(m, k, ndim, shape);
}

const char *nic_model_node_name(const nic_model *m, int k) {
  return k == 0 ? "input" : m->layers[k - 1]->name;
}

nic_layer_kind nic_model_node_kind(const nic_model *m, int k) {
  return m->layers[k - 1]->spec.kind;
}
const nic_layer_spec *nic_model_node_spec(const nic_model *m, int k) {
  return &m->layers[k - 1]->spec;
}
int nic_model_node_input(const nic_model *m, int k, int which) {
  return m->layers[k - 1]->inputs[which];
}

nic_param **nic_model_params(nic_model *m, int *count) {
  *count = m->nparams;
  return m->params;
}

nic_param *nic_model_param(nic_model *m, const char *name) {
  for (int i = 0; i < m->nparams; i++)
    if (!strcmp(m->params[i]->name, name)) return m->params[i];
  return NULL;
}

int64_t nic_model_num_trainable(const nic_model *m) {
  int64_t n = 0;
  for (int i = 0; i < m->nparams; i++)
    if (m->params[i]->trainable) n += nic_tensor_numel(&m->params[i]->value);
  return n;
}

int64_t nic_model_flops(const nic_model *m) {
  int64_t f = 0;
  for (int k = 0; k < m->nnodes; k++) {
    const nic_layer *l = m->layers[k];
    if (!l->weight) continue;
    int64_t per_out = nic_tensor_numel(&l->weight->value); /* MACs per output pixel, all filters */
    int64_t pix = l->out_ndim == 4 ? l->out_shape[2] * l->out_shape[3] : 1;
    f += 2 * per_out * pix;
  }
  return f;
}

nic_status nic_model_init_params(nic_model *m, nic_ctx *ctx, nic_error *err) {
  nic_rng *r = nic_ctx_rng(ctx);
  for (int k = 0; k < m->nnodes; k++) {
    nic_layer *l = m->layers[k];
    if (!l->weight) continue;
    nic_tensor *w = &l->weight->value;
    int64_t fan_in = features(w->ndim, w->shape);
    double sd = sqrt(2.0 / (double)fan_in);
    int64_t n = nic_tensor_numel(w);
    for (int64_t i = 0; i < n; i++) w->data[i] = (float)(sd * nic_rng_normal(r));
    if (l->bias) nic_tensor_zero(&l->bias->value);
  }
  (void)err;
  return NIC_OK;
}

/* ---- running ------------------------------------------------------------ */

static nic_status ensure_runtime(nic_model *m, nic_ctx *ctx, nic_error *err) {
  nic_backend *be = nic_ctx_backend(ctx);
  if (m->be != be) { /* another context: rebuild backend state */
    nic_model_release_backend(m);
    m->be = be;
  }
  if (!m->outs) {
    m->outs = calloc((size_t)m->nnodes + 1, sizeof *m->outs);
    m->douts = calloc((size_t)m->nnodes + 1, sizeof *m->douts);
    m->grad_ready = calloc((size_t)m->nnodes + 1, sizeof *m->grad_ready);
    if (!m->outs || !m->douts || !m->grad_ready) {
      nic_model_reset_runtime(m);
      return nic_err(err, NIC_ENOMEM, "out of memory");
    }
  }
  return NIC_OK;
}

/* The tensor node j produced in the current pass; node start-1 is x. */
static const nic_tensor *node_out(nic_model *m, int j) {
  return j == m->last_start - 1 ? m->x : &m->outs[j];
}

nic_status nic_model_forward_from(nic_model *m, nic_ctx *ctx, const nic_tensor *x, int start,
                                  int training, const nic_tensor **out, nic_error *err) {
  return nic_model_forward_span(m, ctx, x, start, m->nnodes, training, out, err);
}

nic_status nic_model_forward_span(nic_model *m, nic_ctx *ctx, const nic_tensor *x, int start,
                                  int upto, int training, const nic_tensor **out, nic_error *err) {
  if (m->nnodes == 0) return nic_err(err, NIC_EINVAL, "the model has no layers");
  if (start < 1 || start > m->nnodes || upto < start || upto > m->nnodes)
    return nic_err(err, NIC_EINVAL, "invalid node range %d..%d", start, upto);
  if (training && m->inference_only)
    return nic_err(err, NIC_EINVAL, "model was optimized for inference and cannot be trained");
  int nd;
  int64_t want[NIC_MAX_DIMS];
  node_shape(m, start - 1, &nd, want);
  if (x->layout || x->ndim != nd || x->shape[0] < 1)
    return nic_err(err, NIC_EINVAL, "input must be a plain %d-D tensor", nd);
  for (int i = 1; i < nd; i++)
    if (x->shape[i] != want[i])
      return nic_err(err, NIC_EINVAL, "input dimension %d is %lld, the model expects %lld", i,
                     (long long)x->shape[i], (long long)want[i]);
  nic_status s = ensure_runtime(m, ctx, err);
  if (s != NIC_OK) return s;
  memset(m->grad_ready, 0, sizeof *m->grad_ready * ((size_t)m->nnodes + 1));
  m->x = x;
  m->last_start = start;
  m->last_upto = upto;
  m->trained_forward = training;
  nic_backend *be = m->be;
  for (int k = start; k <= upto; k++) {
    nic_layer *l = m->layers[k - 1];
    const nic_tensor *in[2] = {NULL, NULL};
    for (int i = 0; i < l->ninputs; i++) {
      if (l->inputs[i] < start - 1)
        return nic_err(err, NIC_EINVAL, "%s reads node %d, before the start node %d", l->name,
                       l->inputs[i], start);
      in[i] = node_out(m, l->inputs[i]);
    }
    s = be->ops->forward(be, l, in, &m->outs[k], training, nic_ctx_rng(ctx), err);
    if (s != NIC_OK) return nic_err_prefix(err, "%s forward: ", l->name);
  }
  const nic_tensor *y = &m->outs[upto];
  if (y->layout) {
    s = be->ops->to_plain(be, y, &m->out_plain, err);
    if (s != NIC_OK) return s;
    y = &m->out_plain;
  }
  *out = y;
  return NIC_OK;
}

nic_status nic_model_forward(nic_model *m, nic_ctx *ctx, const nic_tensor *x, int training,
                             const nic_tensor **out, nic_error *err) {
  return nic_model_forward_span(m, ctx, x, 1, m->nnodes, training, out, err);
}

nic_status nic_model_forward_to(nic_model *m, nic_ctx *ctx, const nic_tensor *x, int training,
                                int upto, const nic_tensor **out, nic_error *err) {
  return nic_model_forward_span(m, ctx, x, 1, upto, training, out, err);
}

void nic_model_zero_grad(nic_model *m) {
  for (int i = 0; i < m->nparams; i++)
    if (m->params[i]->trainable) nic_tensor_zero(&m->params[i]->grad);
}

nic_status nic_model_backward(nic_model *m, nic_ctx *ctx, const nic_tensor *dout, nic_tensor *dx,
                              nic_error *err) {
  if (!m->outs || !m->trained_forward)
    return nic_err(err, NIC_EINVAL, "backward needs a preceding training-mode forward");
  if (nic_ctx_backend(ctx) != m->be)
    return nic_err(err, NIC_EINVAL, "backward must use the context of the forward");
  int start = m->last_start, upto = m->last_upto;
  const nic_tensor *y = &m->outs[upto];
  if (dout->layout || !nic_tensor_same_shape(dout, y))
    return nic_err(err, NIC_EINVAL, "dout must be plain and shaped like the output");
  nic_backend *be = m->be;
  int first = start - 1; /* the node whose output is x */
  /* dptr[j]: the gradient of node j's output, once some consumer wrote it */
  const nic_tensor **dptr = calloc((size_t)m->nnodes + 1, sizeof *dptr);
  if (!dptr) return nic_err(err, NIC_ENOMEM, "out of memory");
  /* a copy of dout keeps every node's gradient readable afterwards
   * (nic_model_node_grad); outputs are small */
  nic_status s = nic_tensor_copy(&m->douts[upto], dout, err);
  if (s != NIC_OK) {
    free(dptr);
    return s;
  }
  dptr[upto] = &m->douts[upto];
  for (int k = upto; k >= start && s == NIC_OK; k--) {
    nic_layer *l = m->layers[k - 1];
    if (!dptr[k]) continue; /* does not reach the output */
    const nic_tensor *in[2] = {NULL, NULL};
    nic_tensor *din[2] = {NULL, NULL};
    int direct[2] = {0, 0};
    for (int i = 0; i < l->ninputs; i++) {
      int j = l->inputs[i];
      in[i] = node_out(m, j);
      if (j == first && !dx) continue; /* input gradient not wanted */
      /* Write straight into douts[j] when it holds nothing yet; else into
       * scratch and accumulate, so several consumers sum their gradients. */
      int claimed = i == 1 && l->inputs[0] == j && direct[0];
      if (!dptr[j] && !claimed) {
        din[i] = &m->douts[j];
        direct[i] = 1;
      } else {
        din[i] = &m->scratch[i];
      }
    }
    s = be->ops->backward(be, l, in, &m->outs[k], dptr[k], din, err);
    if (s != NIC_OK) {
      nic_err_prefix(err, "%s backward: ", l->name);
      break;
    }
    for (int i = 0; i < l->ninputs && s == NIC_OK; i++) {
      int j = l->inputs[i];
      if (!din[i]) continue;
      if (direct[i])
        dptr[j] = &m->douts[j];
      else
        s = be->ops->accumulate(be, &m->douts[j], din[i], err);
    }
  }
  if (s == NIC_OK && dx) {
    if (dptr[first])
      s = be->ops->to_plain(be, dptr[first], dx, err);
    else { /* the output does not depend on the input */
      int nd;
      int64_t shp[NIC_MAX_DIMS];
      node_shape(m, first, &nd, shp);
      shp[0] = m->x->shape[0];
      s = nic_tensor_alloc(dx, nd, shp, err);
    }
  }
  for (int j = 0; j <= m->nnodes; j++) m->grad_ready[j] = s == NIC_OK && dptr[j] != NULL;
  free(dptr);
  return s;
}

nic_status nic_model_node_output(nic_model *m, nic_ctx *ctx, int k, nic_tensor *dst,
                                 nic_error *err) {
  if (!m->outs || k < m->last_start || k > m->last_upto)
    return nic_err(err, NIC_EINVAL, "node %d was not computed by the last forward", k);
  nic_backend *be = nic_ctx_backend(ctx);
  if (be != m->be) return nic_err(err, NIC_EINVAL, "use the context of the forward");
  return be->ops->to_plain(be, &m->outs[k], dst, err);
}

nic_status nic_model_node_grad(nic_model *m, nic_ctx *ctx, int k, nic_tensor *dst, nic_error *err) {
  if (!m->grad_ready || k < 0 || k > m->nnodes || !m->grad_ready[k])
    return nic_err(err, NIC_EINVAL, "no gradient for node %d: run backward first (node 0 needs dx)",
                   k);
  nic_backend *be = nic_ctx_backend(ctx);
  if (be != m->be) return nic_err(err, NIC_EINVAL, "use the context of the backward");
  return be->ops->to_plain(be, &m->douts[k], dst, err);
}

/* ---- metadata ------------------------------------------------------------ */

nic_input_info *nic_model_input_info(nic_model *m) {
  return &m->input;
}

void nic_model_set_meta(nic_model *m, const char *key, const char *json_value) {
  for (int i = 0; i < m->nmeta; i++)
    if (!strcmp(m->meta[i].key, key)) {
      char *v = strdup(json_value);
      if (!v) return;
      free(m->meta[i].value);
      m->meta[i].value = v;
      return;
    }
  nic_meta_kv *p = realloc(m->meta, sizeof *p * (size_t)(m->nmeta + 1));
  if (!p) return;
  m->meta = p;
  p[m->nmeta].key = strdup(key);
  p[m->nmeta].value = strdup(json_value);
  if (!p[m->nmeta].key || !p[m->nmeta].value) {
    free(p[m->nmeta].key);
    free(p[m->nmeta].value);
    return;
  }
  m->nmeta++;
}

const char *nic_model_get_meta(const nic_model *m, const char *key) {
  for (int i = 0; i < m->nmeta; i++)
    if (!strcmp(m->meta[i].key, key)) return m->meta[i].value;
  return NULL;
}

/* ---- fused input path ------------------------------------------------------ */

static int first_is_avgpool2(const nic_model *m) {
  if (m->nnodes < 2) return 0;
  const nic_layer *l = m->layers[0];
  const nic_layer_spec *s = &l->spec;
  return s->kind == NIC_LAYER_POOL && s->pool == NIC_POOL_AVG && s->kernel[0] == 2 &&
         s->kernel[1] == 2 && s->stride[0] == 2 && s->stride[1] == 2 && !s->pad[0] && !s->pad[1] &&
         !s->pad[2] && !s->pad[3] && m->h % 2 == 0 && m->w % 2 == 0 && m->layers[1]->inputs[0] == 1;
}

nic_status nic_model_prepare_rgb8(nic_model *m, const uint8_t *pix, int n, int patch_size,
                                  int64_t stride, int64_t pstride, nic_tensor *x, int *start,
                                  nic_error *err) {
  if (m->c != 3 || m->h != patch_size || m->w != patch_size)
    return nic_err(err, NIC_EINVAL, "model input is %dx%dx%d, not RGB %dx%d", m->c, m->h, m->w,
                   patch_size, patch_size);
  if (n < 1) return nic_err(err, NIC_EINVAL, "no patches");
  float sc[3], off[3]; /* x = pixel*sc + off */
  for (int c = 0; c < 3; c++) {
    if (m->input.std[c] <= 0) return nic_err(err, NIC_EINVAL, "input std must be > 0");
    sc[c] = 1.0f / (255.0f * m->input.std[c]);
    off[c] = -m->input.mean[c] / m->input.std[c];
  }
  int pool = first_is_avgpool2(m);
  int P = patch_size, Q = pool ? P / 2 : P;
  nic_status s = nic_tensor_alloc4(x, n, 3, Q, Q, err);
  if (s != NIC_OK) return s;
  for (int i = 0; i < n; i++) {
    const uint8_t *img = pix + (int64_t)i * pstride;
    float *o = x->data + (int64_t)i * 3 * Q * Q;
    for (int yy = 0; yy < Q; yy++) {
      if (pool) {
        const uint8_t *r0 = img + (int64_t)(2 * yy) * stride, *r1 = r0 + stride;
        for (int xx = 0; xx < Q; xx++)
          for (int c = 0; c < 3; c++) {
            int sum = r0[6 * xx + c] + r0[6 * xx + 3 + c] + r1[6 * xx + c] + r1[6 * xx + 3 + c];
            o[(int64_t)c * Q * Q + yy * Q + xx] = (float)sum * 0.25f * sc[c] + off[c];
          }
      } else {
        const uint8_t *r0 = img + (int64_t)yy * stride;
        for (int xx = 0; xx < Q; xx++)
          for (int c = 0; c < 3; c++)
            o[(int64_t)c * Q * Q + yy * Q + xx] = r0[3 * xx + c] * sc[c] + off[c];
      }
    }
  }
  *start = pool ? 2 : 1;
  return NIC_OK;
}
