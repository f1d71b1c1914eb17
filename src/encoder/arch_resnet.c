/* resnet-small, a larger encoder than NIC's for the same patches, and the
 * lookup of encoder architectures by name.
 *
 * The layout follows ResNet-18 (two basic blocks per stage, four stages,
 * doubling width while halving resolution) at a quarter of its width and on
 * the NIC encoder's 64x64 pooled input, so that it trains on two CPU cores
 * at about a third of the NIC encoder's speed rather than a twentieth. */
#include <stdio.h>
#include <string.h>

#include "nic/encoder.h"

/* Appends conv (no bias: the batch norm after it has one) + batch norm,
 * and a ReLU when relu != 0. Returns the last node, or -1. */
static int conv_bn(nic_model *m, const char *name, int in, int filters, int k, int stride, int relu,
                   nic_error *err) {
  char n[64];
  nic_layer_spec c = nic_spec_conv(filters, k, stride, k / 2, NIC_ACT_NONE, 0);
  c.bias = 0;
  c.name = name;
  int node = nic_model_add(m, c, in, -1, err);
  if (node < 0) return -1;
  snprintf(n, sizeof n, "%s_bn", name);
  nic_layer_spec b = nic_spec_bn(1e-5f, 0.9f);
  b.name = n;
  node = nic_model_add(m, b, node, -1, err);
  if (node < 0 || !relu) return node;
  snprintf(n, sizeof n, "%s_relu", name);
  nic_layer_spec r = nic_spec_act(NIC_ACT_RELU, 0);
  r.name = n;
  return nic_model_add(m, r, node, -1, err);
}

/* A basic residual block from node `in` with cin channels. Returns its
 * output node, or -1. */
static int basic_block(nic_model *m, const char *name, int in, int cin, int cout, int stride,
                       nic_error *err) {
  char n[64];
  snprintf(n, sizeof n, "%s_c1", name);
  int a = conv_bn(m, n, in, cout, 3, stride, 1, err);
  if (a < 0) return -1;
  snprintf(n, sizeof n, "%s_c2", name);
  int b = conv_bn(m, n, a, cout, 3, 1, 0, err);
  if (b < 0) return -1;
  /* Zero gamma: the branch adds nothing at first, so the untrained network
   * is a shallow one and gradients reach the stem undamped (Goyal et al.
   * 2017). nic_model_init_params leaves batch-norm parameters alone. */
  snprintf(n, sizeof n, "%s_c2_bn.gamma", name);
  nic_param *g = nic_model_param(m, n);
  if (g) nic_tensor_zero(&g->value);
  int shortcut = in;
  if (stride != 1 || cin != cout) {
    snprintf(n, sizeof n, "%s_proj", name);
    shortcut = conv_bn(m, n, in, cout, 1, stride, 0, err);
    if (shortcut < 0) return -1;
  }
  snprintf(n, sizeof n, "%s_add", name);
  nic_layer_spec add = nic_spec_add();
  add.name = n;
  int s = nic_model_add(m, add, b, shortcut, err);
  if (s < 0) return -1;
  snprintf(n, sizeof n, "%s_out", name);
  nic_layer_spec r = nic_spec_act(NIC_ACT_RELU, 0);
  r.name = n;
  return nic_model_add(m, r, s, -1, err);
}

static void set_nic_input(nic_model *m) {
  nic_input_info *in = nic_model_input_info(m);
  in->patch_size = 128;
  in->mpp = 0.5;
  for (int c = 0; c < 3; c++) {
    in->mean[c] = 0.5f;
    in->std[c] = 0.5f;
  }
}

nic_status nic_encoder_build_resnet_small(nic_model **out, int embed_dim, nic_error *err) {
  *out = NULL;
  if (embed_dim < 1) return nic_err(err, NIC_EINVAL, "embedding size must be >= 1");
  nic_model *m = NULL;
  nic_status s = nic_model_create(&m, 3, 128, 128, err);
  if (s != NIC_OK) return s;
  /* The pool first, as in the NIC encoder, so nic_model_prepare_rgb8 fuses it. */
  nic_layer_spec sp = nic_spec_pool(NIC_POOL_AVG, 2, 2, 0);
  sp.name = "pool";
  int node = nic_model_add(m, sp, -1, -1, err);
  if (node >= 0) node = conv_bn(m, "stem", node, 32, 3, 2, 1, err);
  static const int width[4] = {32, 64, 128, 256};
  int cin = 32;
  for (int stage = 0; stage < 4 && node >= 0; stage++) {
    for (int blk = 0; blk < 2 && node >= 0; blk++) {
      char name[32];
      snprintf(name, sizeof name, "s%db%d", stage + 1, blk + 1);
      int stride = stage > 0 && blk == 0 ? 2 : 1;
      node = basic_block(m, name, node, cin, width[stage], stride, err);
      cin = width[stage];
    }
  }
  if (node >= 0) {
    nic_layer_spec gp = nic_spec_globalpool(NIC_POOL_AVG);
    gp.name = "gap";
    node = nic_model_add(m, gp, node, -1, err);
  }
  if (node >= 0) {
    nic_layer_spec d = nic_spec_dense(embed_dim, NIC_ACT_NONE, 0);
    d.name = "embedding";
    node = nic_model_add(m, d, node, -1, err);
  }
  if (node < 0) {
    nic_model_free(m);
    return err ? err->code : NIC_EINVAL;
  }
  set_nic_input(m);
  nic_model_set_meta(m, "architecture_name", "\"resnet-small\"");
  *out = m;
  return NIC_OK;
}

nic_status nic_encoder_build_arch(nic_model **out, const char *arch, int embed_dim,
                                  nic_error *err) {
  *out = NULL;
  if (!arch || !strcmp(arch, "nic")) return nic_encoder_build_nic(out, embed_dim, err);
  if (!strcmp(arch, "resnet-small")) return nic_encoder_build_resnet_small(out, embed_dim, err);
  return nic_err(err, NIC_EINVAL, "unknown architecture '%s' (known: nic, resnet-small)", arch);
}
