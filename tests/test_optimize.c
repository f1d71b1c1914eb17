/* nic_model_optimize_inference must leave eval outputs unchanged (up to
 * rounding) while removing the folded nodes. */
#include <string.h>

#include "nic/encoder.h"
#include "testutil.h"

/* Gives BN layers non-trivial statistics and affine params. */
static void randomize_bn(nic_model *m, uint64_t seed) {
  int np = 0;
  nic_param **ps = nic_model_params(m, &np);
  nic_rng r;
  nic_rng_seed(&r, seed);
  for (int i = 0; i < np; i++) {
    const char *n = ps[i]->name;
    int64_t k = nic_tensor_numel(&ps[i]->value);
    for (int64_t j = 0; j < k; j++) {
      float u = (float)nic_rng_uniform(&r);
      if (strstr(n, "running_var") || strstr(n, "gamma"))
        ps[i]->value.data[j] = 0.5f + u;
      else if (strstr(n, "running_mean") || strstr(n, "beta") || strstr(n, "bias"))
        ps[i]->value.data[j] = u - 0.5f;
    }
  }
}

/* Runs m in eval mode before and after optimization; returns max abs diff. */
static double compare(nic_model *m, nic_ctx *ctx, int64_t n, int expect_nodes) {
  int nd;
  int64_t shp[NIC_MAX_DIMS];
  nic_model_node_shape(m, 0, &nd, shp);
  nic_tensor x = NIC_TENSOR_INIT, before = NIC_TENSOR_INIT;
  shp[0] = n;
  nic_tensor_alloc(&x, nd, shp, NULL);
  nic_test_fill_uniform(&x, 5, -1, 1);
  const nic_tensor *y = NULL;
  nic_error err = {0};
  CHECK_OK(nic_model_forward(m, ctx, &x, 0, &y, &err));
  nic_tensor_copy(&before, y, NULL);
  CHECK_OK(nic_model_optimize_inference(m, &err));
  CHECK(nic_model_num_nodes(m) == expect_nodes);
  CHECK_OK(nic_model_forward(m, ctx, &x, 0, &y, &err));
  double worst = 0;
  for (int64_t i = 0; i < nic_tensor_numel(y); i++) {
    double d = fabs(y->data[i] - before.data[i]);
    if (d > worst) worst = d;
  }
  /* training is refused afterwards */
  CHECK(nic_model_forward(m, ctx, &x, 1, &y, &err) == NIC_EINVAL);
  nic_tensor_free(&x);
  nic_tensor_free(&before);
  return worst;
}

static void test_bn_after_conv_folds_backward(void) {
  nic_ctx *ctx = nic_test_ctx(1);
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_model_create(&m, 3, 9, 9, &err));
  nic_layer_spec c = nic_spec_conv(8, 3, 1, 1, NIC_ACT_NONE, 0);
  c.bias = 0; /* folding must create the bias */
  CHECK(nic_model_add(m, c, -1, -1, &err) == 1);
  CHECK(nic_model_add(m, nic_spec_bn(1e-3f, 0.9f), -1, -1, &err) == 2);
  CHECK(nic_model_add(m, nic_spec_act(NIC_ACT_RELU, 0), -1, -1, &err) == 3);
  CHECK(nic_model_add(m, nic_spec_dropout(0.3f), -1, -1, &err) == 4);
  CHECK_OK(nic_model_init_params(m, ctx, &err));
  randomize_bn(m, 3);
  double d = compare(m, ctx, 3, 1); /* conv with fused relu remains */
  CHECK(d < 1e-4);
  CHECK(nic_model_node_spec(m, 1)->act == NIC_ACT_RELU);
  nic_model_free(m);
  nic_ctx_free(ctx);
}

static void test_nic_encoder_folds_forward(void) {
  nic_ctx *ctx = nic_test_ctx(2);
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_encoder_build_nic(&m, 128, &err));
  CHECK(nic_model_num_nodes(m) == 11);
  CHECK_OK(nic_model_init_params(m, ctx, &err));
  randomize_bn(m, 4);
  /* pool, conv1..4 (leaky fused), flatten, embedding: the 4 BNs are gone */
  double d = compare(m, ctx, 2, 7);
  CHECK(d < 1e-3);
  CHECK(nic_model_param(m, "bn1.gamma") == NULL);
  nic_model_free(m);
  nic_ctx_free(ctx);
}

static void test_bn_into_dense_nchw_and_2d(void) {
  nic_ctx *ctx = nic_test_ctx(3);
  nic_error err = {0};
  for (int variant = 0; variant < 3; variant++) {
    nic_model *m = NULL;
    CHECK_OK(nic_model_create(&m, 4, 5, 5, &err));
    nic_model_add(m, nic_spec_conv(6, 3, 1, 0, NIC_ACT_TANH, 0), -1, -1, &err);
    nic_model_add(m, nic_spec_bn(1e-3f, 0.9f), -1, -1, &err);
    int expect = 2;
    if (variant == 0) { /* BN -> flatten NCHW -> dense */
      nic_model_add(m, nic_spec_flatten(NIC_FLATTEN_NCHW), -1, -1, &err);
      expect = 3;
    } else if (variant == 2) { /* BN on 2-D features -> dense */
      nic_model_add(m, nic_spec_globalpool(NIC_POOL_AVG), -1, -1, &err);
      nic_model_add(m, nic_spec_bn(1e-3f, 0.9f), -1, -1, &err);
      expect = 4;
    }
    nic_layer_spec d = nic_spec_dense(3, NIC_ACT_NONE, 0);
    d.bias = 0;
    nic_model_add(m, d, -1, -1, &err);
    CHECK_OK(nic_model_init_params(m, ctx, &err));
    randomize_bn(m, 10 + (uint64_t)variant);
    double diff = compare(m, ctx, 2, expect);
    CHECK(diff < 1e-4);
    nic_model_free(m);
  }
  nic_ctx_free(ctx);
}

static void test_padded_conv_is_not_folded_into(void) {
  nic_ctx *ctx = nic_test_ctx(4);
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_model_create(&m, 2, 6, 6, &err));
  nic_model_add(m, nic_spec_conv(4, 3, 1, 1, NIC_ACT_LEAKY_RELU, 0.2f), -1, -1, &err);
  nic_model_add(m, nic_spec_bn(1e-3f, 0.9f), -1, -1, &err);
  nic_model_add(m, nic_spec_conv(4, 3, 1, 1, NIC_ACT_NONE, 0), -1, -1, &err);
  CHECK_OK(nic_model_init_params(m, ctx, &err));
  randomize_bn(m, 5);
  /* zero padding after BN is not an affine of the input: BN must stay */
  double d = compare(m, ctx, 2, 3);
  CHECK(d < 1e-5);
  nic_model_free(m);
  nic_ctx_free(ctx);
}

int main(void) {
  RUN(test_bn_after_conv_folds_backward);
  RUN(test_nic_encoder_folds_forward);
  RUN(test_bn_into_dense_nchw_and_2d);
  RUN(test_padded_conv_is_not_folded_into);
  return nic_test_finish();
}
