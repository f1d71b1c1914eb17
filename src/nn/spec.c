/* Layer spec constructors and the names used in model files. */
#include <string.h>

#include "nn/layer.h"

static nic_layer_spec base(nic_layer_kind kind) {
  nic_layer_spec s;
  memset(&s, 0, sizeof s);
  s.kind = kind;
  s.stride[0] = s.stride[1] = 1;
  s.groups = 1;
  return s;
}

nic_layer_spec nic_spec_conv(int filters, int k, int stride, int pad, nic_act act, float alpha) {
  nic_layer_spec s = base(NIC_LAYER_CONV2D);
  s.out = filters;
  s.kernel[0] = s.kernel[1] = k;
  s.stride[0] = s.stride[1] = stride;
  for (int i = 0; i < 4; i++) s.pad[i] = pad;
  s.bias = 1;
  s.act = act;
  s.alpha = alpha;
  return s;
}

nic_layer_spec nic_spec_dwconv(int k, int stride, int pad) {
  nic_layer_spec s = nic_spec_conv(0, k, stride, pad, NIC_ACT_NONE, 0);
  s.groups = 0; /* 0 = one group per input channel, filled in at add time */
  s.bias = 0;
  return s;
}

nic_layer_spec nic_spec_dense(int units, nic_act act, float alpha) {
  nic_layer_spec s = base(NIC_LAYER_DENSE);
  s.out = units;
  s.bias = 1;
  s.act = act;
  s.alpha = alpha;
  return s;
}

nic_layer_spec nic_spec_bn(float eps, float momentum) {
  nic_layer_spec s = base(NIC_LAYER_BATCHNORM);
  s.eps = eps;
  s.momentum = momentum;
  return s;
}

nic_layer_spec nic_spec_act(nic_act act, float alpha) {
  nic_layer_spec s = base(NIC_LAYER_ACT);
  s.act = act;
  s.alpha = alpha;
  return s;
}

nic_layer_spec nic_spec_pool(nic_pool_kind kind, int k, int stride, int pad) {
  nic_layer_spec s = base(NIC_LAYER_POOL);
  s.pool = kind;
  s.kernel[0] = s.kernel[1] = k;
  s.stride[0] = s.stride[1] = stride;
  for (int i = 0; i < 4; i++) s.pad[i] = pad;
  return s;
}

nic_layer_spec nic_spec_globalpool(nic_pool_kind kind) {
  nic_layer_spec s = base(NIC_LAYER_GLOBALPOOL);
  s.pool = kind;
  return s;
}

nic_layer_spec nic_spec_dropout(float p) {
  nic_layer_spec s = base(NIC_LAYER_DROPOUT);
  s.p = p;
  return s;
}

nic_layer_spec nic_spec_spatial_dropout(float p) {
  nic_layer_spec s = base(NIC_LAYER_SPATIAL_DROPOUT);
  s.p = p;
  return s;
}

nic_layer_spec nic_spec_flatten(nic_flatten_order order) {
  nic_layer_spec s = base(NIC_LAYER_FLATTEN);
  s.order = order;
  return s;
}

nic_layer_spec nic_spec_add(void) {
  return base(NIC_LAYER_ADD);
}

static const char *const kind_names[NIC_LAYER_KIND_COUNT] = {
    [NIC_LAYER_CONV2D] = "conv2d",       [NIC_LAYER_DENSE] = "dense",
    [NIC_LAYER_BATCHNORM] = "batchnorm", [NIC_LAYER_ACT] = "activation",
    [NIC_LAYER_POOL] = "pool",           [NIC_LAYER_GLOBALPOOL] = "globalpool",
    [NIC_LAYER_DROPOUT] = "dropout",     [NIC_LAYER_SPATIAL_DROPOUT] = "spatial_dropout",
    [NIC_LAYER_FLATTEN] = "flatten",     [NIC_LAYER_ADD] = "add",
};

const char *nic_layer_kind_name(nic_layer_kind k) {
  if (k <= 0 || k >= NIC_LAYER_KIND_COUNT) return "?";
  return kind_names[k];
}

int nic_layer_kind_from_name(const char *s) {
  for (int k = 1; k < NIC_LAYER_KIND_COUNT; k++)
    if (strcmp(kind_names[k], s) == 0) return k;
  return -1;
}

static const char *const act_names[] = {"none", "relu", "leaky_relu", "sigmoid", "tanh"};

const char *nic_act_name(nic_act a) {
  if ((int)a < 0 || (int)a > NIC_ACT_TANH) return "?";
  return act_names[a];
}

int nic_act_from_name(const char *s) {
  for (int a = 0; a <= NIC_ACT_TANH; a++)
    if (strcmp(act_names[a], s) == 0) return a;
  return -1;
}
