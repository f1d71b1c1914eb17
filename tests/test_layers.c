/* Every layer kind of the CPU backend: forward values against small
 * hand-computed cases and a naive reference convolution, backward against
 * finite differences (nic_test_gradcheck_model), and the statistics of the
 * dropout masks. Shapes are small so that the gradient checks stay fast. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static nic_ctx *ctx;

/* ---- helpers ------------------------------------------------------------------ */

/* A model with the given input and a single layer. */
static nic_model *one_layer(int c, int h, int w, nic_layer_spec s) {
  nic_model *m = NULL;
  nic_error err = {0};
  if (nic_model_create(&m, c, h, w, &err) != NIC_OK || nic_model_add(m, s, -1, -1, &err) < 0) {
    fprintf(stderr, "building a one-layer model failed: %s\n", err.msg);
    exit(1);
  }
  return m;
}

static void add_or_die(nic_model *m, nic_layer_spec s, int in, int in2) {
  nic_error err = {0};
  if (nic_model_add(m, s, in, in2, &err) < 0) {
    fprintf(stderr, "nic_model_add failed: %s\n", err.msg);
    exit(1);
  }
}

/* Uniform params in [-0.5, 0.5), batch-norm gamma in [0.5, 1.5), so that
 * biases and shifts are non-zero and every gradient path is exercised. */
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

/* Random values with |v| in [lo, 1]: away from the kinks of relu at 0. */
static void fill_away(nic_tensor *t, uint64_t seed, float lo) {
  nic_rng r;
  nic_rng_seed(&r, seed);
  int64_t n = nic_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) {
    float v = lo + (1 - lo) * (float)nic_rng_uniform(&r);
    t->data[i] = nic_rng_uniform(&r) < 0.5 ? -v : v;
  }
}

/* Distinct values spread over [-1, 1) in a scrambled order, so that every
 * max-pooling window has a unique maximum with a clear margin. */
static void fill_distinct(nic_tensor *t) {
  int64_t n = nic_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) t->data[i] = (float)((i * 7919) % n) * 2.0f / (float)n - 1.0f;
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

/* Gradient check of m on an input of batch n filled by `fill` (0: away
 * from zero, 1: distinct values); asserts the worst relative error. */
static void gradcheck(nic_model *m, int n, int fill, float h, int check_input, const char *what) {
  int nd;
  int64_t shape[NIC_MAX_DIMS];
  nic_model_node_shape(m, 0, &nd, shape);
  shape[0] = n;
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc(&x, nd, shape, NULL));
  if (fill)
    fill_distinct(&x);
  else
    fill_away(&x, 99, 0.1f);
  /* float32 rounding in the loss is ~1e-6, i.e. ~1e-4 in a derivative:
   * 2e-2 relative (floored at 1e-2) is the harness's own threshold. */
  double e = nic_test_gradcheck_model(m, ctx, &x, h, check_input, 24);
  if (e > 2e-2) fprintf(stderr, "  gradcheck %s: worst relative error %.3g\n", what, e);
  CHECK(e <= 2e-2);
  nic_tensor_free(&x);
}

static float act_ref(float v, nic_act a, float alpha) {
  switch (a) {
  case NIC_ACT_RELU:
    return v > 0 ? v : 0;
  case NIC_ACT_LEAKY_RELU:
    return v > 0 ? v : alpha * v;
  case NIC_ACT_SIGMOID:
    return 1.0f / (1.0f + expf(-v));
  case NIC_ACT_TANH:
    return tanhf(v);
  default:
    return v;
  }
}

/* The naive convolution: x N x C x H x W, weights [O, C/g, KH, KW]. */
static void conv_ref(const float *x, int n, int c, int h, int w, const nic_layer_spec *s,
                     const float *wt, const float *bias, float *y, int oh, int ow) {
  int o = s->out, g = s->groups, cg = c / g, og = o / g;
  for (int b = 0; b < n; b++)
    for (int oc = 0; oc < o; oc++)
      for (int i = 0; i < oh; i++)
        for (int j = 0; j < ow; j++) {
          double acc = bias ? bias[oc] : 0;
          int grp = oc / og;
          for (int ic = 0; ic < cg; ic++)
            for (int ky = 0; ky < s->kernel[0]; ky++)
              for (int kx = 0; kx < s->kernel[1]; kx++) {
                int yy = i * s->stride[0] - s->pad[0] + ky, xx = j * s->stride[1] - s->pad[1] + kx;
                if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                acc += (double)x[(((int64_t)b * c + grp * cg + ic) * h + yy) * w + xx] *
                       wt[(((int64_t)oc * cg + ic) * s->kernel[0] + ky) * s->kernel[1] + kx];
              }
          y[(((int64_t)b * o + oc) * oh + i) * ow + j] = act_ref((float)acc, s->act, s->alpha);
        }
}

/* ---- convolution ------------------------------------------------------------------- */

static void test_conv_hand(void) {
  /* x[r][c] = 4r + c + 1; w = [[1,2,0],[0,1,0],[0,0,-1]]; bias 0.5 */
  nic_layer_spec s = nic_spec_conv(1, 3, 1, 0, NIC_ACT_NONE, 0);
  nic_model *m = one_layer(1, 4, 4, s);
  nic_param *w = nic_model_param(m, "conv2d_1.weight"), *b = nic_model_param(m, "conv2d_1.bias");
  CHECK(w && b);
  const float wv[9] = {1, 2, 0, 0, 1, 0, 0, 0, -1};
  memcpy(w->value.data, wv, sizeof wv);
  b->value.data[0] = 0.5f;
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 1, 1, 4, 4, NULL));
  for (int i = 0; i < 16; i++) x.data[i] = (float)(i + 1);
  const nic_tensor *y = fwd(m, &x, 0);
  CHECK(y->ndim == 4 && y->shape[1] == 1 && y->shape[2] == 2 && y->shape[3] == 2);
  CHECK_NEAR(y->data[0], 0.5, 1e-5);
  CHECK_NEAR(y->data[1], 3.5, 1e-5);
  CHECK_NEAR(y->data[2], 12.5, 1e-5);
  CHECK_NEAR(y->data[3], 15.5, 1e-5);
  nic_model_free(m);

  /* Padding 1, stride 2: the top-left window sees x00 * 1 and x11 * -1. */
  s = nic_spec_conv(1, 3, 2, 1, NIC_ACT_NONE, 0);
  m = one_layer(1, 4, 4, s);
  w = nic_model_param(m, "conv2d_1.weight");
  b = nic_model_param(m, "conv2d_1.bias");
  memcpy(w->value.data, wv, sizeof wv);
  b->value.data[0] = 0.5f;
  y = fwd(m, &x, 0);
  CHECK(y->shape[2] == 2 && y->shape[3] == 2);
  CHECK_NEAR(y->data[0], 1 - 6 + 0.5, 1e-5);
  nic_model_free(m);
  nic_tensor_free(&x);
}

typedef struct conv_case {
  int c, h, w, out, kh, kw, stride, pad[4], groups, bias;
  nic_act act;
  float alpha;
} conv_case;

static nic_layer_spec conv_spec(const conv_case *k) {
  nic_layer_spec s = nic_spec_conv(k->out, k->kh, k->stride, 0, k->act, k->alpha);
  s.kernel[1] = k->kw;
  memcpy(s.pad, k->pad, sizeof s.pad);
  s.groups = k->groups;
  s.bias = k->bias;
  return s;
}

static const conv_case conv_cases[] = {
    /* c  h  w  out kh kw s  pad        g  b  act                 alpha */
    {3, 5, 5, 4, 3, 3, 1, {1, 1, 1, 1}, 1, 1, NIC_ACT_NONE, 0}, /* symmetric pad */
    {3, 6, 7, 5, 3, 3, 2, {1, 0, 0, 1}, 1, 1, NIC_ACT_NONE, 0}, /* stride 2, asymmetric */
    {4, 5, 5, 6, 3, 3, 1, {1, 1, 1, 1}, 2, 1, NIC_ACT_NONE, 0}, /* 2 groups */
    {4, 6, 6, 4, 3, 3, 1, {1, 1, 1, 1}, 4, 0, NIC_ACT_NONE, 0}, /* depthwise, no bias */
    {4, 7, 7, 8, 3, 3, 2, {0, 0, 0, 0}, 4, 1, NIC_ACT_NONE, 0}, /* depthwise x2, s2 */
    {3, 5, 5, 4, 3, 3, 1, {0, 0, 0, 0}, 1, 0, NIC_ACT_NONE, 0}, /* no bias, valid */
    {3, 5, 6, 4, 2, 3, 1, {1, 1, 0, 1}, 1, 1, NIC_ACT_RELU, 0}, /* 2x3 kernel, relu */
    {3, 6, 6, 5, 3, 3, 2, {0, 0, 0, 0}, 1, 1, NIC_ACT_LEAKY_RELU, 0.2f},
    {3, 5, 5, 4, 3, 3, 1, {1, 1, 1, 1}, 1, 1, NIC_ACT_SIGMOID, 0},
    {3, 5, 5, 4, 3, 3, 1, {1, 1, 1, 1}, 1, 1, NIC_ACT_TANH, 0},
    {8, 4, 4, 16, 1, 1, 1, {0, 0, 0, 0}, 1, 1, NIC_ACT_NONE, 0}, /* pointwise */
};

#define NCASES (int)(sizeof conv_cases / sizeof conv_cases[0])

/* Forward of each case, and a larger one, against the naive loop. */
static void check_conv_against_ref(const conv_case *k, int n, int training) {
  nic_model *m = one_layer(k->c, k->h, k->w, conv_spec(k));
  randomize(m, 7);
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, n, k->c, k->h, k->w, NULL));
  nic_test_fill_uniform(&x, 3, -1, 1);
  const nic_tensor *y = fwd(m, &x, training);
  const nic_layer_spec *s = nic_model_node_spec(m, 1);
  int oh = (int)y->shape[2], ow = (int)y->shape[3];
  float *ref = malloc(sizeof(float) * (size_t)nic_tensor_numel(y));
  nic_param *b = nic_model_param(m, "conv2d_1.bias");
  conv_ref(x.data, n, k->c, k->h, k->w, s, nic_model_param(m, "conv2d_1.weight")->value.data,
           b ? b->value.data : NULL, ref, oh, ow);
  double worst = 0;
  for (int64_t i = 0; i < nic_tensor_numel(y); i++) {
    double d = fabs(y->data[i] - ref[i]) / (1 + fabs(ref[i]));
    if (d > worst) worst = d;
  }
  if (worst > 1e-5)
    fprintf(stderr, "  conv %dx%d g%d: worst error %.3g\n", k->kh, k->kw, k->groups, worst);
  CHECK(worst <= 1e-5);
  free(ref);
  nic_tensor_free(&x);
  nic_model_free(m);
}

static void test_conv_reference(void) {
  for (int i = 0; i < NCASES; i++) {
    check_conv_against_ref(&conv_cases[i], 2, 0);
    check_conv_against_ref(&conv_cases[i], 3, 1);
  }
  /* Larger: channel counts that fill several SIMD blocks, with a ragged end. */
  conv_case big[] = {
      {3, 33, 31, 20, 3, 3, 2, {1, 0, 1, 1}, 1, 1, NIC_ACT_LEAKY_RELU, 0.2f},
      {24, 17, 17, 40, 3, 3, 1, {1, 1, 1, 1}, 2, 1, NIC_ACT_RELU, 0},
      {19, 16, 16, 19, 5, 5, 2, {2, 2, 2, 2}, 19, 1, NIC_ACT_NONE, 0},
      {32, 15, 15, 64, 3, 3, 2, {0, 0, 0, 0}, 1, 0, NIC_ACT_TANH, 0},
  };
  for (int i = 0; i < (int)(sizeof big / sizeof big[0]); i++) {
    check_conv_against_ref(&big[i], 4, 0);
    check_conv_against_ref(&big[i], 3, 1);
  }
}

/* Kinks (relu at 0) break finite differences when a perturbation crosses
 * one; the relu cases use a small step, and composite models use smooth
 * activations. Fused relu/leaky in longer chains are checked exactly
 * against the unfused layers instead (test_fused_vs_unfused). */
static float step_for(nic_act a) {
  return a == NIC_ACT_RELU || a == NIC_ACT_LEAKY_RELU ? 1e-3f : 5e-3f;
}

static void test_conv_gradcheck(void) {
  for (int i = 0; i < NCASES; i++) {
    nic_model *m =
        one_layer(conv_cases[i].c, conv_cases[i].h, conv_cases[i].w, conv_spec(&conv_cases[i]));
    randomize(m, 11 + (uint64_t)i);
    char what[32];
    snprintf(what, sizeof what, "conv case %d", i);
    gradcheck(m, 2, 0, step_for(conv_cases[i].act), 1, what);
    nic_model_free(m);
  }
  /* Without the input gradient: the backward-data primitive is skipped. */
  nic_model *m = one_layer(3, 6, 6, conv_spec(&conv_cases[9]));
  randomize(m, 5);
  gradcheck(m, 3, 0, 5e-3f, 0, "conv, no input gradient");
  nic_model_free(m);
}

/* Two convolutions in a row: the second one consumes (and returns gradients
 * in) the first one's blocked layout. */
static void test_conv_chain(void) {
  nic_model *m = NULL;
  CHECK_OK(nic_model_create(&m, 3, 9, 9, NULL));
  add_or_die(m, nic_spec_conv(16, 3, 2, 1, NIC_ACT_TANH, 0), -1, -1);
  add_or_die(m, nic_spec_conv(8, 3, 1, 0, NIC_ACT_SIGMOID, 0), -1, -1);
  randomize(m, 21);
  gradcheck(m, 2, 0, 5e-3f, 1, "conv chain");
  nic_model_free(m);
}

static nic_layer_spec named(nic_layer_spec s, const char *name) {
  s.name = name;
  return s;
}

/* Runs forward (training) and backward with a fixed dout; returns the output
 * (copied into y) and leaves gradients in the params and dx. */
static void fwd_bwd(nic_model *m, const nic_tensor *x, nic_tensor *y, nic_tensor *dx) {
  const nic_tensor *out = fwd(m, x, 1);
  CHECK_OK(nic_tensor_copy(y, out, NULL));
  nic_tensor dout = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc(&dout, out->ndim, out->shape, NULL));
  nic_test_fill_uniform(&dout, 5, -1, 1);
  nic_model_zero_grad(m);
  CHECK_OK(nic_model_backward(m, ctx, &dout, dx, NULL));
  nic_tensor_free(&dout);
}

static double max_rel_diff(const float *a, const float *b, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]) / (1e-3 + fabs(a[i]) + fabs(b[i]));
    if (d > worst) worst = d;
  }
  return worst;
}

/* A fused activation (conv/dense post-op, backward through the saved
 * output) gives exactly what a separate activation layer gives, kinks
 * included; dout reaches the first conv in the second conv's layout. */
static void test_fused_vs_unfused(void) {
  nic_act acts[] = {NIC_ACT_RELU, NIC_ACT_LEAKY_RELU, NIC_ACT_SIGMOID, NIC_ACT_TANH};
  for (int k = 0; k < 4; k++)
    for (int dense = 0; dense < 2; dense++) {
      nic_model *a = NULL, *b = NULL;
      CHECK_OK(nic_model_create(&a, 3, 7, 7, NULL));
      CHECK_OK(nic_model_create(&b, 3, 7, 7, NULL));
      nic_layer_spec l1 =
          dense ? nic_spec_dense(10, acts[k], 0.2f) : nic_spec_conv(12, 3, 2, 1, acts[k], 0.2f);
      nic_layer_spec l2 =
          dense ? nic_spec_dense(4, NIC_ACT_NONE, 0) : nic_spec_conv(5, 3, 1, 1, NIC_ACT_NONE, 0);
      add_or_die(a, named(l1, "l1"), -1, -1);
      add_or_die(a, named(l2, "l2"), -1, -1);
      l1.act = NIC_ACT_NONE;
      add_or_die(b, named(l1, "l1"), -1, -1);
      add_or_die(b, named(nic_spec_act(acts[k], 0.2f), "act"), -1, -1);
      add_or_die(b, named(l2, "l2"), -1, -1);
      randomize(a, 100 + (uint64_t)k);
      int na = 0, nb = 0;
      nic_param **pa = nic_model_params(a, &na), **pb = nic_model_params(b, &nb);
      CHECK(na == nb);
      for (int i = 0; i < na && i < nb; i++)
        CHECK_OK(nic_tensor_copy(&pb[i]->value, &pa[i]->value, NULL));
      nic_tensor x = NIC_TENSOR_INIT, ya = NIC_TENSOR_INIT, yb = NIC_TENSOR_INIT,
                 dxa = NIC_TENSOR_INIT, dxb = NIC_TENSOR_INIT;
      CHECK_OK(nic_tensor_alloc4(&x, 3, 3, 7, 7, NULL));
      nic_test_fill_uniform(&x, 6, -1, 1);
      fwd_bwd(a, &x, &ya, &dxa);
      fwd_bwd(b, &x, &yb, &dxb);
      CHECK(max_rel_diff(ya.data, yb.data, nic_tensor_numel(&ya)) < 1e-4);
      CHECK(max_rel_diff(dxa.data, dxb.data, nic_tensor_numel(&dxa)) < 1e-4);
      for (int i = 0; i < na && i < nb; i++) {
        double d = max_rel_diff(pa[i]->grad.data, pb[i]->grad.data, nic_tensor_numel(&pa[i]->grad));
        if (d >= 1e-4) fprintf(stderr, "  %s differs by %.3g (act %d)\n", pa[i]->name, d, k);
        CHECK(d < 1e-4);
      }
      nic_tensor_free(&x);
      nic_tensor_free(&ya);
      nic_tensor_free(&yb);
      nic_tensor_free(&dxa);
      nic_tensor_free(&dxb);
      nic_model_free(a);
      nic_model_free(b);
    }
}

/* ---- dense ---------------------------------------------------------------------------- */

static void test_dense(void) {
  /* 2-D input (after a flatten): y = W x + b, by hand. */
  nic_model *m = NULL;
  CHECK_OK(nic_model_create(&m, 3, 1, 1, NULL));
  add_or_die(m, nic_spec_flatten(NIC_FLATTEN_NCHW), -1, -1);
  add_or_die(m, nic_spec_dense(2, NIC_ACT_LEAKY_RELU, 0.5f), -1, -1);
  nic_param *w = nic_model_param(m, "dense_2.weight"), *b = nic_model_param(m, "dense_2.bias");
  CHECK(w && b && w->value.shape[0] == 2 && w->value.shape[1] == 3);
  const float wv[6] = {1, 2, 3, -1, 0, -2};
  memcpy(w->value.data, wv, sizeof wv);
  b->value.data[0] = 0.25f;
  b->value.data[1] = -0.5f;
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 2, 3, 1, 1, NULL));
  const float xv[6] = {1, 1, 1, 0.5f, -1, 2};
  memcpy(x.data, xv, sizeof xv);
  const nic_tensor *y = fwd(m, &x, 0);
  CHECK(y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 2);
  CHECK_NEAR(y->data[0], 6.25, 1e-5);           /* 1+2+3+0.25 */
  CHECK_NEAR(y->data[1], 0.5f * (-3.5f), 1e-5); /* -1-2-0.5 -> leaky */
  CHECK_NEAR(y->data[2], 0.5 - 2 + 6 + 0.25, 1e-5);
  CHECK_NEAR(y->data[3], 0.5f * (-0.5f - 4 - 0.5f), 1e-5);
  nic_model_free(m);
  nic_tensor_free(&x);

  /* 4-D input: weights are [out, C*H*W] in NCHW order. */
  m = one_layer(3, 4, 5, nic_spec_dense(7, NIC_ACT_NONE, 0));
  randomize(m, 3);
  CHECK_OK(nic_tensor_alloc4(&x, 2, 3, 4, 5, NULL));
  nic_test_fill_uniform(&x, 4, -1, 1);
  y = fwd(m, &x, 0);
  w = nic_model_param(m, "dense_1.weight");
  b = nic_model_param(m, "dense_1.bias");
  for (int n = 0; n < 2; n++)
    for (int o = 0; o < 7; o++) {
      double acc = b->value.data[o];
      for (int f = 0; f < 60; f++) acc += (double)w->value.data[o * 60 + f] * x.data[n * 60 + f];
      CHECK_NEAR(y->data[n * 7 + o], acc, 1e-4);
    }
  nic_tensor_free(&x);
  gradcheck(m, 3, 0, 5e-3f, 1, "dense 4-D");
  nic_model_free(m);

  /* 4-D input in a blocked layout (after a conv), and 2-D with activations. */
  nic_act acts[] = {NIC_ACT_NONE, NIC_ACT_RELU, NIC_ACT_SIGMOID, NIC_ACT_TANH};
  for (int i = 0; i < 4; i++) {
    CHECK_OK(nic_model_create(&m, 3, 5, 5, NULL));
    add_or_die(m, nic_spec_conv(8, 3, 1, 0, NIC_ACT_NONE, 0), -1, -1);
    add_or_die(m, nic_spec_dense(6, acts[i], 0), -1, -1);
    add_or_die(m, nic_spec_dense(4, NIC_ACT_NONE, 0), -1, -1);
    randomize(m, 30 + (uint64_t)i);
    gradcheck(m, 3, 0, 5e-3f, 1, "conv -> dense -> dense");
    nic_model_free(m);
  }
}

/* ---- batch norm ------------------------------------------------------------------------ */

static void test_bn_eval(void) {
  nic_model *m = one_layer(2, 2, 2, nic_spec_bn(1e-3f, 0.9f));
  float mean[2] = {0.5f, -1}, var[2] = {4, 0.25f}, gamma[2] = {2, 0.5f}, beta[2] = {0.1f, -0.2f};
  memcpy(nic_model_param(m, "batchnorm_1.running_mean")->value.data, mean, sizeof mean);
  memcpy(nic_model_param(m, "batchnorm_1.running_var")->value.data, var, sizeof var);
  memcpy(nic_model_param(m, "batchnorm_1.gamma")->value.data, gamma, sizeof gamma);
  memcpy(nic_model_param(m, "batchnorm_1.beta")->value.data, beta, sizeof beta);
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 2, 2, 2, 2, NULL));
  nic_test_fill_uniform(&x, 8, -2, 2);
  const nic_tensor *y = fwd(m, &x, 0);
  for (int i = 0; i < 16; i++) {
    int c = (i / 4) % 2;
    double want = (x.data[i] - mean[c]) / sqrt(var[c] + 1e-3) * gamma[c] + beta[c];
    CHECK_NEAR(y->data[i], want, 1e-5);
  }
  nic_tensor_free(&x);
  nic_model_free(m);
}

/* Training normalises with batch statistics and moves the running ones. */
static void test_bn_training_stats(void) {
  nic_model *m = NULL;
  CHECK_OK(nic_model_create(&m, 2, 1, 3, NULL));
  add_or_die(m, nic_spec_bn(1e-5f, 0.75f), -1, -1);
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 2, 2, 1, 3, NULL));
  /* channel 0: 1 2 3 | 4 5 6 (mean 3.5); channel 1: all 2 except one 8 */
  const float xv[12] = {1, 2, 3, 2, 2, 2, 4, 5, 6, 2, 2, 8};
  memcpy(x.data, xv, sizeof xv);
  const nic_tensor *y = fwd(m, &x, 1);
  double var0 = (6.25 + 2.25 + 0.25 + 0.25 + 2.25 + 6.25) / 6; /* biased */
  CHECK_NEAR(y->data[0], (1 - 3.5) / sqrt(var0 + 1e-5), 1e-4);
  CHECK_NEAR(y->data[8], (6 - 3.5) / sqrt(var0 + 1e-5), 1e-4);
  const float *rm = nic_model_param(m, "batchnorm_1.running_mean")->value.data;
  const float *rv = nic_model_param(m, "batchnorm_1.running_var")->value.data;
  CHECK_NEAR(rm[0], 0.25 * 3.5, 1e-5);
  CHECK_NEAR(rm[1], 0.25 * 3.0, 1e-5);
  CHECK_NEAR(rv[0], 0.75 * 1 + 0.25 * var0 * 6 / 5, 1e-5); /* unbiased batch variance */
  CHECK_NEAR(rv[1], 0.75 * 1 + 0.25 * (5 * 1.0 + 25) / 5, 1e-5);
  nic_tensor_free(&x);
  nic_model_free(m);
}

static void test_bn_gradcheck(void) {
  nic_model *m = one_layer(3, 4, 4, nic_spec_bn(1e-3f, 0.99f));
  randomize(m, 40);
  gradcheck(m, 2, 0, 1e-2f, 1, "bn 4-D");
  nic_model_free(m);
  /* 2-D: per feature */
  CHECK_OK(nic_model_create(&m, 2, 2, 2, NULL));
  add_or_die(m, nic_spec_flatten(NIC_FLATTEN_NCHW), -1, -1);
  add_or_die(m, nic_spec_bn(1e-3f, 0.99f), -1, -1);
  randomize(m, 41);
  gradcheck(m, 4, 0, 1e-2f, 1, "bn 2-D");
  nic_model_free(m);
  /* after a convolution: blocked layout, and 2-D after a dense */
  CHECK_OK(nic_model_create(&m, 3, 5, 5, NULL));
  add_or_die(m, nic_spec_conv(10, 3, 1, 1, NIC_ACT_TANH, 0), -1, -1);
  add_or_die(m, nic_spec_bn(1e-3f, 0.99f), -1, -1);
  add_or_die(m, nic_spec_dense(5, NIC_ACT_NONE, 0), -1, -1);
  add_or_die(m, nic_spec_bn(1e-3f, 0.99f), -1, -1);
  randomize(m, 42);
  gradcheck(m, 3, 0, 1e-2f, 1, "conv -> bn -> dense -> bn");
  nic_model_free(m);
}

/* ---- activations -------------------------------------------------------------------------- */

static void test_act(void) {
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 1, 1, 1, 5, NULL));
  const float xv[5] = {-2, -0.5f, 0, 0.5f, 3};
  memcpy(x.data, xv, sizeof xv);
  nic_act kinds[] = {NIC_ACT_NONE, NIC_ACT_RELU, NIC_ACT_LEAKY_RELU, NIC_ACT_SIGMOID, NIC_ACT_TANH};
  for (int k = 0; k < 5; k++)
    for (int training = 0; training < 2; training++) {
      nic_model *m = one_layer(1, 1, 5, nic_spec_act(kinds[k], 0.1f));
      const nic_tensor *y = fwd(m, &x, training);
      for (int i = 0; i < 5; i++) CHECK_NEAR(y->data[i], act_ref(xv[i], kinds[k], 0.1f), 1e-6);
      nic_model_free(m);
    }
  CHECK_NEAR(act_ref(-2, NIC_ACT_LEAKY_RELU, 0.1f), -0.2, 1e-7); /* the reference itself */
  nic_tensor_free(&x);
  /* gradients, on plain input and on a conv's blocked output; a negative
   * leaky slope takes the backward path that reads the input */
  float alphas[] = {0, 0, 0.2f, 0, 0, -0.3f};
  nic_act acts[] = {NIC_ACT_NONE,    NIC_ACT_RELU, NIC_ACT_LEAKY_RELU,
                    NIC_ACT_SIGMOID, NIC_ACT_TANH, NIC_ACT_LEAKY_RELU};
  for (int k = 0; k < 6; k++) {
    nic_model *m = one_layer(3, 4, 4, nic_spec_act(acts[k], alphas[k]));
    gradcheck(m, 2, 0, 5e-3f, 1, "act");
    nic_model_free(m);
    if (acts[k] == NIC_ACT_RELU || acts[k] == NIC_ACT_LEAKY_RELU) continue; /* kinks */
    CHECK_OK(nic_model_create(&m, 3, 5, 5, NULL));
    add_or_die(m, nic_spec_conv(9, 3, 1, 1, NIC_ACT_NONE, 0), -1, -1);
    add_or_die(m, nic_spec_act(acts[k], alphas[k]), -1, -1);
    randomize(m, 50 + (uint64_t)k);
    gradcheck(m, 2, 0, 5e-3f, 1, "conv -> act");
    nic_model_free(m);
  }
}

/* ---- pooling ------------------------------------------------------------------------------- */

static void test_pool_values(void) {
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 1, 1, 4, 4, NULL));
  for (int i = 0; i < 16; i++) x.data[i] = (float)(i + 1);
  nic_model *m = one_layer(1, 4, 4, nic_spec_pool(NIC_POOL_AVG, 2, 2, 0));
  const nic_tensor *y = fwd(m, &x, 0);
  CHECK(y->shape[2] == 2 && y->shape[3] == 2);
  CHECK_NEAR(y->data[0], 3.5, 1e-6);
  CHECK_NEAR(y->data[1], 5.5, 1e-6);
  CHECK_NEAR(y->data[2], 11.5, 1e-6);
  CHECK_NEAR(y->data[3], 13.5, 1e-6);
  nic_model_free(m);
  /* max 3x3/1 pad 1: x grows with row and column, so the max is bottom-right */
  m = one_layer(1, 4, 4, nic_spec_pool(NIC_POOL_MAX, 3, 1, 1));
  for (int training = 0; training < 2; training++) {
    y = fwd(m, &x, training);
    CHECK(y->shape[2] == 4 && y->shape[3] == 4);
    CHECK_NEAR(y->data[0], 6, 1e-6);
    CHECK_NEAR(y->data[3], 8, 1e-6);
    CHECK_NEAR(y->data[12], 14, 1e-6);
    CHECK_NEAR(y->data[15], 16, 1e-6);
  }
  nic_model_free(m);
  /* average excluding padding: the corner averages its 4 real pixels */
  m = one_layer(1, 4, 4, nic_spec_pool(NIC_POOL_AVG, 3, 1, 1));
  y = fwd(m, &x, 0);
  CHECK_NEAR(y->data[0], 3.5, 1e-6);
  CHECK_NEAR(y->data[5], 6, 1e-6);
  nic_model_free(m);
  /* global */
  m = one_layer(1, 4, 4, nic_spec_globalpool(NIC_POOL_AVG));
  y = fwd(m, &x, 0);
  CHECK(y->ndim == 2 && y->shape[1] == 1);
  CHECK_NEAR(y->data[0], 8.5, 1e-6);
  nic_model_free(m);
  m = one_layer(1, 4, 4, nic_spec_globalpool(NIC_POOL_MAX));
  y = fwd(m, &x, 1);
  CHECK_NEAR(y->data[0], 16, 1e-6);
  nic_model_free(m);
  nic_tensor_free(&x);
}

static void test_pool_gradcheck(void) {
  nic_layer_spec specs[] = {
      nic_spec_pool(NIC_POOL_AVG, 3, 2, 1), nic_spec_pool(NIC_POOL_MAX, 3, 2, 1),
      nic_spec_pool(NIC_POOL_AVG, 2, 2, 0), nic_spec_pool(NIC_POOL_MAX, 2, 1, 0),
      nic_spec_globalpool(NIC_POOL_AVG),    nic_spec_globalpool(NIC_POOL_MAX)};
  specs[0].pad[2] = specs[0].pad[3] = 0; /* asymmetric */
  for (int i = 0; i < 6; i++) {
    nic_model *m = one_layer(3, 5, 6, specs[i]);
    gradcheck(m, 2, 1, 2e-3f, 1, "pool");
    nic_model_free(m);
    /* On a convolution's output (blocked layout, 12 channels: a ragged
     * block). The 1x1 conv copies input channel o % 2 scaled by 1 + o/10,
     * which keeps the pooled values apart by more than the step changes. */
    CHECK_OK(nic_model_create(&m, 2, 5, 5, NULL));
    add_or_die(m, nic_spec_conv(12, 1, 1, 0, NIC_ACT_NONE, 0), -1, -1);
    add_or_die(m, specs[i], -1, -1);
    if (specs[i].kind == NIC_LAYER_POOL) add_or_die(m, nic_spec_dense(3, NIC_ACT_NONE, 0), -1, -1);
    randomize(m, 60 + (uint64_t)i);
    nic_param *w = nic_model_param(m, "conv2d_1.weight");
    for (int o = 0; o < 12; o++)
      for (int c = 0; c < 2; c++) w->value.data[o * 2 + c] = c == o % 2 ? 1 + 0.1f * o : 0;
    nic_tensor_zero(&nic_model_param(m, "conv2d_1.bias")->value);
    gradcheck(m, 2, 1, 4e-3f, 1, "conv -> pool");
    nic_model_free(m);
  }
}

/* ---- flatten -------------------------------------------------------------------------------- */

static void test_flatten(void) {
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 2, 2, 2, 3, NULL));
  for (int i = 0; i < 24; i++) x.data[i] = (float)i;
  nic_model *m = one_layer(2, 2, 3, nic_spec_flatten(NIC_FLATTEN_NCHW));
  const nic_tensor *y = fwd(m, &x, 0);
  CHECK(y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 12);
  for (int i = 0; i < 24; i++) CHECK(y->data[i] == (float)i);
  nic_model_free(m);
  /* NHWC: feature index (h*W + w)*C + c */
  m = one_layer(2, 2, 3, nic_spec_flatten(NIC_FLATTEN_NHWC));
  y = fwd(m, &x, 0);
  for (int n = 0; n < 2; n++)
    for (int c = 0; c < 2; c++)
      for (int h = 0; h < 2; h++)
        for (int w = 0; w < 3; w++)
          CHECK(y->data[n * 12 + (h * 3 + w) * 2 + c] == x.data[((n * 2 + c) * 2 + h) * 3 + w]);
  nic_model_free(m);
  nic_tensor_free(&x);

  /* after a convolution: flatten reads the blocked layout correctly */
  for (int order = 0; order < 2; order++) {
    CHECK_OK(nic_model_create(&m, 3, 6, 6, NULL));
    add_or_die(m, nic_spec_conv(12, 3, 1, 0, NIC_ACT_NONE, 0), -1, -1);
    add_or_die(m, nic_spec_flatten((nic_flatten_order)order), -1, -1);
    randomize(m, 70);
    CHECK_OK(nic_tensor_alloc4(&x, 2, 3, 6, 6, NULL));
    nic_test_fill_uniform(&x, 71, -1, 1);
    const nic_tensor *c = NULL;
    nic_tensor conv = NIC_TENSOR_INIT;
    CHECK_OK(nic_model_forward_to(m, ctx, &x, 0, 1, &c, NULL));
    CHECK_OK(nic_tensor_copy(&conv, c, NULL));
    y = fwd(m, &x, 0);
    int bad = 0;
    for (int n = 0; n < 2; n++)
      for (int ch = 0; ch < 12; ch++)
        for (int p = 0; p < 16; p++) {
          int f = order == NIC_FLATTEN_NHWC ? p * 12 + ch : ch * 16 + p;
          bad += y->data[n * 192 + f] != conv.data[(n * 12 + ch) * 16 + p];
        }
    CHECK(bad == 0);
    nic_tensor_free(&conv);
    nic_tensor_free(&x);
    add_or_die(m, nic_spec_dense(3, NIC_ACT_NONE, 0), -1, -1);
    randomize(m, 72);
    gradcheck(m, 2, 0, 5e-3f, 1, "conv -> flatten -> dense");
    nic_model_free(m);
  }
}

/* ---- add ---------------------------------------------------------------------------------------
 */

static void test_add(void) {
  nic_model *m = NULL;
  CHECK_OK(nic_model_create(&m, 2, 3, 3, NULL));
  add_or_die(m, nic_spec_act(NIC_ACT_NONE, 0), 0, -1);
  add_or_die(m, nic_spec_add(), 0, 1);
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 2, 2, 3, 3, NULL));
  nic_test_fill_uniform(&x, 80, -1, 1);
  const nic_tensor *y = fwd(m, &x, 0);
  for (int i = 0; i < 36; i++) CHECK_NEAR(y->data[i], 2 * x.data[i], 1e-6);
  nic_tensor_free(&x);
  gradcheck(m, 2, 0, 5e-3f, 1, "x + x");
  nic_model_free(m);
  /* plain input + blocked conv output, and two blocked branches */
  CHECK_OK(nic_model_create(&m, 4, 5, 5, NULL));
  add_or_die(m, nic_spec_conv(4, 3, 1, 1, NIC_ACT_NONE, 0), 0, -1);    /* 1 */
  add_or_die(m, nic_spec_add(), 0, 1);                                 /* 2 */
  add_or_die(m, nic_spec_conv(4, 1, 1, 0, NIC_ACT_SIGMOID, 0), 2, -1); /* 3 */
  add_or_die(m, nic_spec_add(), 3, 1);                                 /* 4 */
  randomize(m, 81);
  gradcheck(m, 2, 0, 5e-3f, 1, "add branches");
  nic_model_free(m);
}

/* ---- dropout ------------------------------------------------------------------------------------
 */

static void test_dropout_gradcheck(void) {
  nic_model *m = NULL;
  CHECK_OK(nic_model_create(&m, 3, 4, 4, NULL));
  add_or_die(m, nic_spec_conv(5, 3, 1, 1, NIC_ACT_NONE, 0), -1, -1);
  add_or_die(m, nic_spec_spatial_dropout(0), -1, -1);
  add_or_die(m, nic_spec_flatten(NIC_FLATTEN_NCHW), -1, -1);
  add_or_die(m, nic_spec_dropout(0), -1, -1);
  add_or_die(m, nic_spec_dense(3, NIC_ACT_NONE, 0), -1, -1);
  randomize(m, 90);
  gradcheck(m, 2, 0, 5e-3f, 1, "dropout p=0");
  nic_model_free(m);
}

/* Fraction dropped, inverted scaling, identity in eval, reproducibility,
 * and d(input) = dout * mask. */
static void check_dropout_stats(int spatial, int after_conv) {
  const float p = 0.3f;
  int c = 16, hw = 8, n = 24;
  nic_model *m = NULL;
  CHECK_OK(nic_model_create(&m, c, hw, hw, NULL));
  if (after_conv) { /* a blocked input: identity 1x1 conv */
    add_or_die(m, nic_spec_conv(c, 1, 1, 0, NIC_ACT_NONE, 0), -1, -1);
    nic_param *w = nic_model_param(m, "conv2d_1.weight");
    for (int i = 0; i < c; i++) w->value.data[i * c + i] = 1;
  }
  add_or_die(m, spatial ? nic_spec_spatial_dropout(p) : nic_spec_dropout(p), -1, -1);
  nic_tensor x = NIC_TENSOR_INIT, mask1 = NIC_TENSOR_INIT, dout = NIC_TENSOR_INIT,
             dx = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, n, c, hw, hw, NULL));
  nic_test_fill_uniform(&x, 91, 0.5f, 1.5f); /* never zero */
  const nic_tensor *y = fwd(m, &x, 0);
  int64_t total = nic_tensor_numel(&x);
  int ident = 1;
  for (int64_t i = 0; i < total; i++) ident &= fabsf(y->data[i] - x.data[i]) <= 1e-6f;
  CHECK(ident);

  nic_rng_seed(nic_ctx_rng(ctx), 1234);
  y = fwd(m, &x, 1);
  int64_t dropped = 0, badscale = 0, mixed = 0;
  for (int64_t i = 0; i < total; i++) {
    if (y->data[i] == 0)
      dropped++;
    else
      badscale += fabsf(y->data[i] - x.data[i] / (1 - p)) > 1e-5f;
  }
  for (int64_t pl = 0; pl < (int64_t)n * c; pl++) { /* whole planes for spatial */
    int z = 0;
    for (int i = 0; i < hw * hw; i++) z += y->data[pl * hw * hw + i] == 0;
    mixed += z != 0 && z != hw * hw;
  }
  double frac = (double)dropped / (double)total;
  double sd = sqrt(p * (1 - p) / (spatial ? (double)n * c : (double)total));
  CHECK(fabs(frac - p) < 4 * sd + 1e-3);
  CHECK(badscale == 0);
  if (spatial) CHECK(mixed == 0);
  if (!spatial) CHECK(mixed > 0);
  CHECK_OK(nic_tensor_copy(&mask1, y, NULL));

  /* backward: d(input) = dout * mask = y / x for dout = 1 */
  CHECK_OK(nic_tensor_alloc(&dout, y->ndim, y->shape, NULL));
  nic_tensor_fill(&dout, 1);
  CHECK_OK(nic_model_backward(m, ctx, &dout, &dx, NULL));
  int badgrad = 0;
  for (int64_t i = 0; i < total; i++)
    badgrad += fabsf(dx.data[i] * x.data[i] - mask1.data[i]) > 1e-5f;
  CHECK(badgrad == 0);

  /* same seed -> same mask; another seed -> another mask */
  nic_rng_seed(nic_ctx_rng(ctx), 1234);
  y = fwd(m, &x, 1);
  CHECK(memcmp(y->data, mask1.data, sizeof(float) * (size_t)total) == 0);
  nic_rng_seed(nic_ctx_rng(ctx), 4321);
  y = fwd(m, &x, 1);
  CHECK(memcmp(y->data, mask1.data, sizeof(float) * (size_t)total) != 0);
  nic_tensor_free(&x);
  nic_tensor_free(&mask1);
  nic_tensor_free(&dout);
  nic_tensor_free(&dx);
  nic_model_free(m);
}

static void test_dropout_stats(void) {
  for (int spatial = 0; spatial < 2; spatial++)
    for (int conv = 0; conv < 2; conv++) check_dropout_stats(spatial, conv);
}

int main(void) {
  ctx = nic_test_ctx(42);
  RUN(test_conv_hand);
  RUN(test_conv_reference);
  RUN(test_conv_gradcheck);
  RUN(test_conv_chain);
  RUN(test_fused_vs_unfused);
  RUN(test_dense);
  RUN(test_bn_eval);
  RUN(test_bn_training_stats);
  RUN(test_bn_gradcheck);
  RUN(test_act);
  RUN(test_pool_values);
  RUN(test_pool_gradcheck);
  RUN(test_flatten);
  RUN(test_add);
  RUN(test_dropout_gradcheck);
  RUN(test_dropout_stats);
  nic_ctx_free(ctx);
  return nic_test_finish();
}
