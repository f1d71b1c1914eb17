#include <stdio.h>

#include "nic/encoder.h"

nic_status nic_encoder_build_nic(nic_model **out, int embed_dim, nic_error *err) {
  *out = NULL;
  if (embed_dim < 1) return nic_err(err, NIC_EINVAL, "embedding size must be >= 1");
  nic_model *m = NULL;
  nic_status s = nic_model_create(&m, 3, 128, 128, err);
  if (s != NIC_OK) return s;
  nic_layer_spec sp = nic_spec_pool(NIC_POOL_AVG, 2, 2, 0);
  sp.name = "pool";
  if (nic_model_add(m, sp, -1, -1, err) < 0) goto fail;
  for (int i = 1; i <= 4; i++) {
    char cn[16], bn[16];
    snprintf(cn, sizeof cn, "conv%d", i);
    snprintf(bn, sizeof bn, "bn%d", i);
    nic_layer_spec c = nic_spec_conv(128, 3, 2, 0, NIC_ACT_LEAKY_RELU, 0.2f);
    c.name = cn;
    nic_layer_spec b = nic_spec_bn(1e-3f, 0.99f);
    b.name = bn;
    if (nic_model_add(m, c, -1, -1, err) < 0 || nic_model_add(m, b, -1, -1, err) < 0) goto fail;
  }
  nic_layer_spec f = nic_spec_flatten(NIC_FLATTEN_NHWC);
  f.name = "flatten";
  nic_layer_spec d = nic_spec_dense(embed_dim, NIC_ACT_NONE, 0);
  d.name = "embedding";
  if (nic_model_add(m, f, -1, -1, err) < 0 || nic_model_add(m, d, -1, -1, err) < 0) goto fail;
  nic_input_info *in = nic_model_input_info(m);
  in->patch_size = 128;
  in->mpp = 0.5;
  for (int c = 0; c < 3; c++) {
    in->mean[c] = 0.5f;
    in->std[c] = 0.5f;
  }
  nic_model_set_meta(m, "architecture_name", "\"nic\"");
  *out = m;
  return NIC_OK;
fail:
  nic_model_free(m);
  return err ? err->code : NIC_EINVAL;
}
