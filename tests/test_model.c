/* Whole models on the CPU backend: residual blocks and separable
 * convolutions (gradients), shape errors, the primitive cache across batch
 * sizes and contexts, determinism, and the NIC encoder against a slow
 * plain-C reference implementation, including the fused RGB8 input path. */
#include <stdlib.h>
#include <string.h>

#include "nic/encoder.h"
#include "testutil.h"

static nic_ctx *ctx;

static int add_or_die(nic_model *m, nic_layer_spec s, int in, int in2) {
  nic_error err = {0};
  int k = nic_model_add(m, s, in, in2, &err);
  if (k < 0) {
    fprintf(stderr, "nic_model_add failed: %s\n", err.msg);
    exit(1);
  }
  return k;
}

static void randomize(nic_model *m, uint64_t seed) {
  int np = 0;
  nic_param **ps = nic_model_params(m, &np);
  for (int i = 0; i < np; i++) {
    if (!ps[i]->trainable) continue;
    int gamma = strstr(ps[i]->name, ".gamma") != NULL;
    nic_test_fill_uniform(&ps[i]->value, seed + (uint64_t)i, gamma ? 0.5f : -0.5f,
                          gamma ? 1.5f : 0.5f);
  }
}

static const nic_tensor *fwd(nic_model *m, const nic_tensor *x, int training) {
  const nic_tensor *y = NULL;
  nic_error err = {0};
  if (nic_model_forward(m, ctx, x, training, &y, &err) != NIC_OK) {
    fprintf(stderr, "forward failed: %s\n", err.msg);
    exit(1);
  }
  return y;
}

static double gradcheck(nic_model *m, int n, float h, uint64_t seed) {
  int nd;
  int64_t shape[NIC_MAX_DIMS];
  nic_model_node_shape(m, 0, &nd, shape);
  shape[0] = n;
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc(&x, nd, shape, NULL));
  nic_test_fill_uniform(&x, seed, -1, 1);
  double e = nic_test_gradcheck_model(m, ctx, &x, h, 1, 24);
  nic_tensor_free(&x);
  return e;
}

/* Largest |a - b| / (1 + |b|). */
static double max_diff(const float *a, const float *b, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]) / (1 + fabs(b[i]));
    if (d > worst || d != d) worst = d != d ? 1e30 : d;
  }
  return worst;
}

/* ---- residual blocks and separable convolutions ------------------------------------- */

/* x -> conv -> bn -> relu -> conv -> + x, on the model input (plain) and on
 * a stem convolution's output (blocked); the block input's gradient is the
 * sum of two paths in different layouts. Finite differences break where a
 * step moves a relu input across 0, so BN's shift puts each channel well
 * inside one side (beta = +-1.5, gamma <= 0.3, and a batch of 2 x 4 x 4
 * keeps |normalised| < 3): half the channels pass, half are cut off, and
 * no value is near the kink. */
static void test_residual(void) {
  for (int stem = 0; stem < 2; stem++) {
    nic_model *m = NULL;
    CHECK_OK(nic_model_create(&m, 4, 4, 4, NULL));
    int in = 0;
    if (stem) in = add_or_die(m, nic_spec_conv(8, 3, 1, 1, NIC_ACT_TANH, 0), -1, -1);
    int c = stem ? 8 : 4;
    add_or_die(m, nic_spec_conv(c, 3, 1, 1, NIC_ACT_NONE, 0), in, -1);
    int bn = add_or_die(m, nic_spec_bn(1e-3f, 0.9f), -1, -1);
    add_or_die(m, nic_spec_act(NIC_ACT_RELU, 0), -1, -1);
    int c2 = add_or_die(m, nic_spec_conv(c, 3, 1, 1, NIC_ACT_NONE, 0), -1, -1);
    add_or_die(m, nic_spec_add(), c2, in);
    randomize(m, 10 + (uint64_t)stem);
    char name[64];
    snprintf(name, sizeof name, "%s.gamma", nic_model_node_name(m, bn));
    nic_tensor *g = &nic_model_param(m, name)->value;
    snprintf(name, sizeof name, "%s.beta", nic_model_node_name(m, bn));
    nic_tensor *b = &nic_model_param(m, name)->value;
    for (int i = 0; i < c; i++) {
      g->data[i] = 0.2f + 0.1f * g->data[i] / 1.5f;
      b->data[i] = i % 2 ? -1.5f : 1.5f;
    }
    double e = gradcheck(m, 2, 1e-2f, 3);
    if (e > 2e-2) fprintf(stderr, "  residual (stem %d): %.3g\n", stem, e);
    CHECK(e <= 2e-2);
    nic_model_free(m);
  }
}

static void test_sepconv(void) {
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_model_create(&m, 5, 7, 7, NULL));
  int k = nic_model_add_sepconv(m, "sep", 6, 3, 2, 1, 1, &err);
  CHECK(k == 2);
  CHECK(nic_model_node_spec(m, 1)->groups == 5 && nic_model_node_spec(m, 1)->out == 5);
  CHECK(nic_model_node_spec(m, 2)->kernel[0] == 1 && nic_model_node_spec(m, 2)->out == 6);
  nic_param *dw = nic_model_param(m, "sep.dw.weight"), *pw = nic_model_param(m, "sep.pw.weight");
  CHECK(dw && pw && !nic_model_param(m, "sep.dw.bias") && nic_model_param(m, "sep.pw.bias"));
  CHECK(dw && dw->value.shape[0] == 5 && dw->value.shape[1] == 1 && dw->value.shape[2] == 3);
  CHECK(pw && pw->value.shape[0] == 6 && pw->value.shape[1] == 5 && pw->value.shape[2] == 1);
  int nd;
  int64_t shp[NIC_MAX_DIMS];
  nic_model_node_shape(m, 2, &nd, shp);
  CHECK(nd == 4 && shp[1] == 6 && shp[2] == 4 && shp[3] == 4);
  randomize(m, 20);
  /* forward: depthwise then pointwise, by hand */
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 2, 5, 7, 7, NULL));
  nic_test_fill_uniform(&x, 21, -1, 1);
  const nic_tensor *y = fwd(m, &x, 0);
  const float *pb = nic_model_param(m, "sep.pw.bias")->value.data;
  double worst = 0;
  for (int n = 0; n < 2; n++)
    for (int o = 0; o < 6; o++)
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
          double acc = pb[o];
          for (int c = 0; c < 5; c++) {
            double d = 0;
            for (int ky = 0; ky < 3; ky++)
              for (int kx = 0; kx < 3; kx++) {
                int yy = 2 * i - 1 + ky, xx = 2 * j - 1 + kx;
                if (yy < 0 || yy >= 7 || xx < 0 || xx >= 7) continue;
                d += (double)dw->value.data[c * 9 + ky * 3 + kx] *
                     x.data[((n * 5 + c) * 7 + yy) * 7 + xx];
              }
            acc += pw->value.data[o * 5 + c] * d;
          }
          double got = y->data[((n * 6 + o) * 4 + i) * 4 + j];
          if (fabs(got - acc) > worst) worst = fabs(got - acc);
        }
  CHECK(worst < 1e-5);
  nic_tensor_free(&x);
  double e = gradcheck(m, 2, 5e-3f, 22);
  CHECK(e <= 2e-2);
  nic_model_free(m);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void expect_add_error(int c, int h, int w, nic_layer_spec s) {
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_model_create(&m, c, h, w, NULL));
  CHECK(nic_model_add(m, s, -1, -1, &err) < 0);
  CHECK(err.code == NIC_EINVAL);
  CHECK(strlen(err.msg) > 0);
  CHECK(nic_model_num_nodes(m) == 0);
  nic_model_free(m);
}

static void test_shape_errors(void) {
  nic_layer_spec s = nic_spec_conv(6, 3, 1, 1, NIC_ACT_NONE, 0);
  s.groups = 4; /* does not divide 6 input channels */
  expect_add_error(6, 8, 8, s);
  s.groups = 3;
  s.out = 4; /* does not divide the filters */
  expect_add_error(6, 8, 8, s);
  expect_add_error(3, 5, 5, nic_spec_conv(4, 7, 1, 0, NIC_ACT_NONE, 0)); /* kernel > input */
  expect_add_error(3, 2, 2, nic_spec_pool(NIC_POOL_MAX, 3, 1, 0));
  expect_add_error(3, 8, 8, nic_spec_conv(4, 3, 0, 0, NIC_ACT_NONE, 0)); /* stride 0 */

  /* wrong input channels at run time */
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_model_create(&m, 3, 8, 8, NULL));
  add_or_die(m, nic_spec_conv(4, 3, 1, 1, NIC_ACT_NONE, 0), -1, -1);
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 2, 4, 8, 8, NULL));
  const nic_tensor *y = NULL;
  CHECK(nic_model_forward(m, ctx, &x, 0, &y, &err) == NIC_EINVAL);
  CHECK(strlen(err.msg) > 0);
  /* backward without a training forward */
  CHECK_OK(nic_tensor_alloc4(&x, 2, 3, 8, 8, NULL));
  fwd(m, &x, 0);
  nic_tensor dout = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&dout, 2, 4, 8, 8, NULL));
  memset(&err, 0, sizeof err);
  CHECK(nic_model_backward(m, ctx, &dout, NULL, &err) == NIC_EINVAL);
  CHECK(strlen(err.msg) > 0);
  nic_tensor_free(&dout);
  nic_tensor_free(&x);
  nic_model_free(m);
}

/* ---- the primitive cache, determinism --------------------------------------------------- */

static nic_model *small_net(void) {
  nic_model *m = NULL;
  CHECK_OK(nic_model_create(&m, 3, 12, 12, NULL));
  add_or_die(m, nic_spec_conv(16, 3, 1, 1, NIC_ACT_RELU, 0), -1, -1);
  add_or_die(m, nic_spec_pool(NIC_POOL_MAX, 2, 2, 0), -1, -1);
  add_or_die(m, nic_spec_conv(8, 3, 2, 0, NIC_ACT_LEAKY_RELU, 0.1f), -1, -1);
  add_or_die(m, nic_spec_flatten(NIC_FLATTEN_NHWC), -1, -1);
  add_or_die(m, nic_spec_dense(5, NIC_ACT_NONE, 0), -1, -1);
  randomize(m, 30);
  return m;
}

/* More batch sizes than the per-layer plan cache holds, revisited in a
 * scrambled order: every result must equal the batch-1 result per sample. */
static void test_batch_sizes(void) {
  nic_model *m = small_net();
  const int maxn = 6;
  nic_tensor x = NIC_TENSOR_INIT, one = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, maxn, 3, 12, 12, NULL));
  nic_test_fill_uniform(&x, 31, -1, 1);
  float ref[6][5];
  int64_t per = 3 * 12 * 12;
  for (int i = 0; i < maxn; i++) {
    CHECK_OK(nic_tensor_alloc4(&one, 1, 3, 12, 12, NULL));
    memcpy(one.data, x.data + i * per, sizeof(float) * (size_t)per);
    const nic_tensor *y = fwd(m, &one, 0);
    memcpy(ref[i], y->data, sizeof ref[i]);
  }
  const int order[] = {5, 1, 3, 6, 2, 4, 5, 1, 6, 3};
  for (int t = 0; t < (int)(sizeof order / sizeof order[0]); t++) {
    int n = order[t];
    nic_tensor sub = NIC_TENSOR_INIT;
    int64_t shp[4] = {n, 3, 12, 12};
    nic_tensor_wrap(&sub, x.data, 4, shp);
    const nic_tensor *y = fwd(m, &sub, 0);
    CHECK(y->shape[0] == n);
    for (int i = 0; i < n; i++) CHECK(max_diff(y->data + i * 5, ref[i], 5) < 1e-5);
  }
  /* training passes at changing batch sizes: the same batch gives the same
   * gradients after others ran in between */
  nic_tensor dout = NIC_TENSOR_INIT;
  float *g1 = NULL;
  nic_param *w = nic_model_param(m, "conv2d_1.weight");
  int64_t nw = nic_tensor_numel(&w->grad);
  nic_tensor sub = NIC_TENSOR_INIT; /* the model keeps pointing at its input */
  for (int t = 0; t < 3; t++) {
    int n = t == 1 ? 5 : 2;
    int64_t shp[4] = {n, 3, 12, 12};
    nic_tensor_wrap(&sub, x.data, 4, shp);
    const nic_tensor *y = fwd(m, &sub, 1);
    CHECK_OK(nic_tensor_alloc(&dout, y->ndim, y->shape, NULL));
    nic_tensor_fill(&dout, 0.5f);
    nic_model_zero_grad(m);
    CHECK_OK(nic_model_backward(m, ctx, &dout, NULL, NULL));
    if (t == 0) {
      g1 = malloc(sizeof(float) * (size_t)nw);
      memcpy(g1, w->grad.data, sizeof(float) * (size_t)nw);
    }
  }
  CHECK(g1 && memcmp(g1, w->grad.data, sizeof(float) * (size_t)nw) == 0);
  /* without zero_grad, a second backward adds the same gradient again */
  CHECK_OK(nic_model_backward(m, ctx, &dout, NULL, NULL));
  int doubled = 1;
  for (int64_t i = 0; i < nw; i++)
    doubled &= fabsf(w->grad.data[i] - 2 * g1[i]) <= 1e-5f * (1 + fabsf(g1[i]));
  CHECK(doubled);
  free(g1);
  nic_tensor_free(&dout);
  nic_tensor_free(&one);
  nic_tensor_free(&x);
  nic_model_free(m);
}

static void test_determinism(void) {
  nic_model *m = small_net();
  nic_tensor x = NIC_TENSOR_INIT, y1 = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 4, 3, 12, 12, NULL));
  nic_test_fill_uniform(&x, 40, -1, 1);
  CHECK_OK(nic_tensor_copy(&y1, fwd(m, &x, 0), NULL));
  const nic_tensor *y = fwd(m, &x, 0);
  CHECK(memcmp(y->data, y1.data, y1.bytes) == 0);
  /* no BN or dropout: training and evaluation compute the same function */
  y = fwd(m, &x, 1);
  CHECK(max_diff(y->data, y1.data, nic_tensor_numel(&y1)) < 1e-5);
  y = fwd(m, &x, 0);
  CHECK(memcmp(y->data, y1.data, y1.bytes) == 0);
  /* another context (another backend instance) gives the same result */
  nic_ctx *c2 = nic_test_ctx(7);
  const nic_tensor *y2 = NULL;
  CHECK_OK(nic_model_forward(m, c2, &x, 0, &y2, NULL));
  CHECK(max_diff(y2->data, y1.data, nic_tensor_numel(&y1)) < 1e-5);
  y = fwd(m, &x, 0); /* and back */
  CHECK(max_diff(y->data, y1.data, nic_tensor_numel(&y1)) < 1e-5);
  nic_model_free(m); /* before its last context: releases the backend state */
  nic_ctx_free(c2);
  nic_tensor_free(&x);
  nic_tensor_free(&y1);
}

/* ---- the NIC encoder against a plain-C reference ----------------------------------------- */

/* 3x3 stride-2 valid convolution + bias + LeakyReLU(0.2), NCHW. */
static void ref_conv_leaky(const float *x, int n, int c, int h, int w, const float *wt,
                           const float *b, int o, float *y) {
  int oh = (h - 3) / 2 + 1, ow = (w - 3) / 2 + 1;
  for (int s = 0; s < n; s++)
    for (int f = 0; f < o; f++)
      for (int i = 0; i < oh; i++)
        for (int j = 0; j < ow; j++) {
          double acc = b[f];
          for (int ch = 0; ch < c; ch++)
            for (int ky = 0; ky < 3; ky++)
              for (int kx = 0; kx < 3; kx++)
                acc += (double)wt[((f * c + ch) * 3 + ky) * 3 + kx] *
                       x[(((int64_t)s * c + ch) * h + 2 * i + ky) * w + 2 * j + kx];
          y[(((int64_t)s * o + f) * oh + i) * ow + j] = (float)(acc > 0 ? acc : 0.2 * acc);
        }
}

/* Batch norm in place; training uses the batch statistics (biased). */
static void ref_bn(float *x, int n, int c, int hw, const float *g, const float *be, const float *rm,
                   const float *rv, float eps, int training) {
  for (int ch = 0; ch < c; ch++) {
    double mean = rm[ch], var = rv[ch];
    if (training) {
      double s = 0, s2 = 0;
      for (int i = 0; i < n; i++)
        for (int p = 0; p < hw; p++) s += x[((int64_t)i * c + ch) * hw + p];
      mean = s / ((double)n * hw);
      for (int i = 0; i < n; i++)
        for (int p = 0; p < hw; p++) {
          double d = x[((int64_t)i * c + ch) * hw + p] - mean;
          s2 += d * d;
        }
      var = s2 / ((double)n * hw);
    }
    double inv = 1 / sqrt(var + eps);
    for (int i = 0; i < n; i++)
      for (int p = 0; p < hw; p++) {
        float *v = &x[((int64_t)i * c + ch) * hw + p];
        *v = (float)((*v - mean) * inv * g[ch] + be[ch]);
      }
  }
}

static const float *pval(nic_model *m, const char *layer, const char *what) {
  char name[64];
  snprintf(name, sizeof name, "%s.%s", layer, what);
  nic_param *p = nic_model_param(m, name);
  if (!p) {
    fprintf(stderr, "missing param %s\n", name);
    exit(1);
  }
  return p->value.data;
}

/* The whole encoder: avgpool 2x2, 4 x [conv + leaky, BN], flatten NHWC, dense. */
static void ref_encoder(nic_model *m, const float *x, int n, int training, float *out) {
  int c = 3, h = 64, w = 64;
  float *a = malloc(sizeof(float) * (size_t)n * 128 * 31 * 31);
  float *b = malloc(sizeof(float) * (size_t)n * 128 * 31 * 31);
  for (int s = 0; s < n; s++)
    for (int ch = 0; ch < 3; ch++)
      for (int i = 0; i < 64; i++)
        for (int j = 0; j < 64; j++) {
          const float *p = x + (((int64_t)s * 3 + ch) * 128 + 2 * i) * 128 + 2 * j;
          a[(((int64_t)s * 3 + ch) * 64 + i) * 64 + j] = (p[0] + p[1] + p[128] + p[129]) * 0.25f;
        }
  for (int l = 1; l <= 4; l++) {
    char cn[16], bn[16];
    snprintf(cn, sizeof cn, "conv%d", l);
    snprintf(bn, sizeof bn, "bn%d", l);
    ref_conv_leaky(a, n, c, h, w, pval(m, cn, "weight"), pval(m, cn, "bias"), 128, b);
    c = 128, h = (h - 3) / 2 + 1, w = (w - 3) / 2 + 1;
    ref_bn(b, n, c, h * w, pval(m, bn, "gamma"), pval(m, bn, "beta"), pval(m, bn, "running_mean"),
           pval(m, bn, "running_var"), 1e-3f, training);
    float *t = a;
    a = b;
    b = t;
  }
  /* flatten NHWC: feature (i*W + j)*C + ch */
  int f = c * h * w;
  for (int s = 0; s < n; s++)
    for (int ch = 0; ch < c; ch++)
      for (int p = 0; p < h * w; p++)
        b[(int64_t)s * f + p * c + ch] = a[((int64_t)s * c + ch) * h * w + p];
  const float *wd = pval(m, "embedding", "weight"), *bd = pval(m, "embedding", "bias");
  for (int s = 0; s < n; s++)
    for (int o = 0; o < 128; o++) {
      double acc = bd[o];
      for (int i = 0; i < f; i++) acc += (double)wd[(int64_t)o * f + i] * b[(int64_t)s * f + i];
      out[s * 128 + o] = (float)acc;
    }
  free(a);
  free(b);
}

/* He-initialised weights plus random biases and BN statistics, so that no
 * part of the reference is trivially zero or one. */
static nic_model *encoder(void) {
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_encoder_build_nic(&m, 128, &err));
  CHECK_OK(nic_model_init_params(m, ctx, &err));
  int np = 0;
  nic_param **ps = nic_model_params(m, &np);
  for (int i = 0; i < np; i++) {
    const char *nm = ps[i]->name;
    if (strstr(nm, ".bias") || strstr(nm, ".beta") || strstr(nm, "running_mean"))
      nic_test_fill_uniform(&ps[i]->value, 50 + (uint64_t)i, -0.3f, 0.3f);
    else if (strstr(nm, ".gamma") || strstr(nm, "running_var"))
      nic_test_fill_uniform(&ps[i]->value, 50 + (uint64_t)i, 0.5f, 1.5f);
  }
  return m;
}

static void test_encoder_reference(void) {
  nic_model *m = encoder();
  const int n = 3;
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, n, 3, 128, 128, NULL));
  nic_test_fill_uniform(&x, 60, -1, 1);
  float ref[3 * 128];
  for (int training = 0; training < 2; training++) {
    ref_encoder(m, x.data, n, training, ref); /* before the forward moves BN statistics */
    const nic_tensor *y = fwd(m, &x, training);
    CHECK(y->ndim == 2 && y->shape[0] == n && y->shape[1] == 128);
    double d = max_diff(y->data, ref, n * 128);
    if (d > 1e-4) fprintf(stderr, "  encoder (training %d): max diff %.3g\n", training, d);
    CHECK(d <= 1e-4);
  }
  nic_tensor_free(&x);
  nic_model_free(m);
}

/* prepare_rgb8 (normalisation + the 2x2 pool fused in) then forward_from
 * equals forward on the normalised float image. */
static void test_encoder_rgb8(void) {
  nic_model *m = encoder();
  const int n = 3, P = 128;
  uint8_t *pix = malloc((size_t)n * P * P * 3);
  nic_rng r;
  nic_rng_seed(&r, 61);
  for (size_t i = 0; i < (size_t)n * P * P * 3; i++) pix[i] = (uint8_t)(nic_rng_next(&r) >> 56);
  nic_tensor x = NIC_TENSOR_INIT, pre = NIC_TENSOR_INIT, y1 = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, n, 3, P, P, NULL));
  for (int s = 0; s < n; s++)
    for (int i = 0; i < P; i++)
      for (int j = 0; j < P; j++)
        for (int c = 0; c < 3; c++)
          x.data[(((int64_t)s * 3 + c) * P + i) * P + j] =
              (pix[(((int64_t)s * P + i) * P + j) * 3 + c] / 255.0f - 0.5f) / 0.5f;
  CHECK_OK(nic_tensor_copy(&y1, fwd(m, &x, 0), NULL));
  int start = 0;
  CHECK_OK(
      nic_model_prepare_rgb8(m, pix, n, P, (int64_t)P * 3, (int64_t)P * P * 3, &pre, &start, NULL));
  CHECK(start == 2);
  const nic_tensor *y = NULL;
  CHECK_OK(nic_model_forward_from(m, ctx, &pre, start, 0, &y, NULL));
  CHECK(y && nic_tensor_same_shape(y, &y1));
  if (y) CHECK(max_diff(y->data, y1.data, nic_tensor_numel(&y1)) <= 1e-4);
  free(pix);
  nic_tensor_free(&x);
  nic_tensor_free(&pre);
  nic_tensor_free(&y1);
  nic_model_free(m);
}

int main(void) {
  ctx = nic_test_ctx(42);
  RUN(test_residual);
  RUN(test_sepconv);
  RUN(test_shape_errors);
  RUN(test_batch_sizes);
  RUN(test_determinism);
  RUN(test_encoder_reference);
  RUN(test_encoder_rgb8);
  nic_ctx_free(ctx);
  return nic_test_finish();
}
