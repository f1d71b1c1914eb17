/* The NIC slide CNN (Tellez et al., TPAMI 2019, sec. 3.3) and its Grad-CAM
 * twin.
 *
 * Eight blocks of [depthwise-separable 3x3 convolution with `filters`
 * filters, batch norm, LeakyReLU(0.2), spatial dropout], stride 2 in the
 * first six and 1 in the last two (`strided` sets how many have stride 2), then global pooling,
 * dense `hidden` + batch norm + LeakyReLU, and the output layer. The paper flattens the last
 * feature map; here the grid sizes vary from cohort to cohort and the crops are zero padded, so a
 * global pooling makes the head independent of the crop size: max pooling (a small lesion anywhere
 * decides) for classification, average pooling (a property of all the tissue) for regression and
 * survival.
 *
 * The twin exists because the engine runs backward only after a
 * training-mode forward, which normalises with batch statistics and drops
 * channels: Grad-CAM needs the inference network's gradients. The twin has
 * no batch norm (folded into the convolution or dense layer before it) and
 * no dropout, so its training forward is the CNN's inference forward. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "slidemodel/sm_internal.h"

#define SM_BN_EPS 1e-3f
#define SM_BN_MOMENTUM 0.9f
#define SM_LEAKY 0.2f

static int add(nic_model *m, nic_layer_spec s, const char *name, nic_error *err) {
  s.name = name;
  return nic_model_add(m, s, -1, -1, err);
}

/* The cluster detector: a 1x1 convolution to `filters` score maps, their
 * mean over smooth x smooth cells, the global pooling and the output layer.
 * A lesion of a few cells raises the mean score of its neighbourhood while
 * a single stray cell does not; with a few dozen slides the NIC CNN's
 * ~150,000 weights overfit where these C + 1 per map do not. No batch
 * norm and no dropout: the Grad-CAM twin is the model itself. */
static nic_status cluster_build(nic_model *m, const sm_cnn_arch *a, nic_error *err) {
  int ok = add(m, nic_spec_conv(a->filters, 1, 1, 0, NIC_ACT_NONE, 0), "conv1", err) > 0;
  if (ok) ok = add(m, nic_spec_pool(NIC_POOL_AVG, a->smooth, 1, a->smooth / 2), "smooth", err) > 0;
  if (ok) ok = add(m, nic_spec_globalpool(a->pool), "pool", err) > 0;
  if (ok) ok = add(m, nic_spec_dense(a->nout, NIC_ACT_NONE, 0), "out", err) > 0;
  return ok ? NIC_OK : err && err->code ? err->code : NIC_EINVAL;
}

nic_status sm_cnn_build(nic_model **out, const sm_cnn_arch *a, int explain, nic_error *err) {
  nic_model *m = NULL;
  nic_status st = nic_model_create(&m, a->C, a->R, a->R, err);
  if (st != NIC_OK) return st;
  if (a->smooth > 0) {
    if ((st = cluster_build(m, a, err)) != NIC_OK) {
      nic_model_free(m);
      return st;
    }
    *out = m;
    return NIC_OK;
  }
  char name[64];
  int ok = 1;
  for (int b = 1; b <= 8 && ok; b++) {
    snprintf(name, sizeof name, "conv%d", b);
    ok =
        nic_model_add_sepconv(m, name, a->filters, 3, b <= a->strided ? 2 : 1, 1, explain, err) > 0;
    if (ok && !explain) {
      snprintf(name, sizeof name, "bn%d", b);
      ok = add(m, nic_spec_bn(SM_BN_EPS, SM_BN_MOMENTUM), name, err) > 0;
    }
    snprintf(name, sizeof name, "act%d", b);
    if (ok) ok = add(m, nic_spec_act(NIC_ACT_LEAKY_RELU, SM_LEAKY), name, err) > 0;
    if (ok && !explain && a->dropout > 0) {
      snprintf(name, sizeof name, "drop%d", b);
      ok = add(m, nic_spec_spatial_dropout(a->dropout), name, err) > 0;
    }
  }
  if (ok) ok = add(m, nic_spec_globalpool(a->pool), "pool", err) > 0;
  if (ok) ok = add(m, nic_spec_dense(a->hidden, NIC_ACT_NONE, 0), "fc", err) > 0;
  if (ok && !explain) ok = add(m, nic_spec_bn(SM_BN_EPS, SM_BN_MOMENTUM), "bn_fc", err) > 0;
  if (ok) ok = add(m, nic_spec_act(NIC_ACT_LEAKY_RELU, SM_LEAKY), "act_fc", err) > 0;
  if (ok) ok = add(m, nic_spec_dense(a->nout, NIC_ACT_NONE, 0), "out", err) > 0;
  if (!ok) {
    nic_model_free(m);
    return err ? err->code : NIC_EINVAL;
  }
  *out = m;
  return NIC_OK;
}

static nic_status copy_param(nic_model *src, nic_model *dst, const char *name, nic_error *err) {
  nic_param *a = nic_model_param(src, name), *b = nic_model_param(dst, name);
  if (!a || !b || nic_tensor_numel(&a->value) != nic_tensor_numel(&b->value))
    return nic_err(err, NIC_EINVAL, "parameter '%s' is missing or differs in shape", name);
  memcpy(b->value.data, a->value.data, sizeof(float) * (size_t)nic_tensor_numel(&a->value));
  return NIC_OK;
}

/* Folds batch norm `bn` into layer `layer` of the twin: rows of the weight
 * scale by g = gamma / sqrt(var + eps), and the bias becomes
 * (bias - mean) * g + beta (bias 0 when the CNN's layer has none). */
static nic_status fold(nic_model *cnn, nic_model *twin, const char *layer, const char *bn,
                       nic_error *err) {
  char n[96];
  snprintf(n, sizeof n, "%s.weight", layer);
  nic_param *w = nic_model_param(cnn, n), *tw = nic_model_param(twin, n);
  snprintf(n, sizeof n, "%s.bias", layer);
  nic_param *b = nic_model_param(cnn, n), *tb = nic_model_param(twin, n);
  snprintf(n, sizeof n, "%s.gamma", bn);
  nic_param *ga = nic_model_param(cnn, n);
  snprintf(n, sizeof n, "%s.beta", bn);
  nic_param *be = nic_model_param(cnn, n);
  snprintf(n, sizeof n, "%s.running_mean", bn);
  nic_param *mu = nic_model_param(cnn, n);
  snprintf(n, sizeof n, "%s.running_var", bn);
  nic_param *var = nic_model_param(cnn, n);
  if (!w || !tw || !tb || !ga || !be || !mu || !var)
    return nic_err(err, NIC_EINVAL, "cannot fold '%s' into '%s': parameters missing", bn, layer);
  int64_t out = tb->value.shape[0], per = nic_tensor_numel(&w->value) / out;
  for (int64_t o = 0; o < out; o++) {
    double g = ga->value.data[o] / sqrt((double)var->value.data[o] + SM_BN_EPS);
    for (int64_t i = 0; i < per; i++)
      tw->value.data[o * per + i] = (float)(w->value.data[o * per + i] * g);
    double bias = b ? b->value.data[o] : 0.0;
    tb->value.data[o] = (float)((bias - mu->value.data[o]) * g + be->value.data[o]);
  }
  return NIC_OK;
}

nic_status sm_cnn_fold_into(nic_model *cnn, nic_model *twin, nic_error *err) {
  char a[64], b[64];
  nic_status st = NIC_OK;
  if (nic_model_param(cnn, "conv1.weight")) { /* the cluster detector: nothing to fold */
    const char *names[] = {"conv1.weight", "conv1.bias", "out.weight", "out.bias"};
    for (int i = 0; i < 4 && st == NIC_OK; i++)
      if (nic_model_param(cnn, names[i])) st = copy_param(cnn, twin, names[i], err);
    return st;
  }
  for (int k = 1; k <= 8 && st == NIC_OK; k++) {
    snprintf(a, sizeof a, "conv%d.dw.weight", k);
    st = copy_param(cnn, twin, a, err);
    snprintf(a, sizeof a, "conv%d.pw", k);
    snprintf(b, sizeof b, "bn%d", k);
    if (st == NIC_OK) st = fold(cnn, twin, a, b, err);
  }
  if (st == NIC_OK) st = fold(cnn, twin, "fc", "bn_fc", err);
  if (st == NIC_OK) st = copy_param(cnn, twin, "out.weight", err);
  if (st == NIC_OK) st = copy_param(cnn, twin, "out.bias", err);
  return st;
}

int sm_cnn_cam_node(const nic_model *twin) {
  int n = nic_model_num_nodes(twin);
  for (int k = 1; k <= n; k++)
    if (!strcmp(nic_model_node_name(twin, k), "act1") ||
        !strcmp(nic_model_node_name(twin, k), "smooth"))
      return k;
  return -1;
}
