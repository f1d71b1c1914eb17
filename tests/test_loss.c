/* Losses: forward values against hand computations, gradients against
 * central finite differences, and argument validation. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- helpers ------------------------------------------------------------- */

/* A loss evaluated at x (grad NULL: value only). */
typedef nic_status (*loss_fn)(const nic_tensor *x, const void *arg, float *loss, nic_tensor *grad,
                              nic_error *err);

/* Compares the analytic gradient of f at x with central differences of the
 * loss value, element by element. Returns the max error relative to
 * max(1, |analytic|); the loss is float, so h is not tiny. */
static double gradcheck(loss_fn f, nic_tensor *x, const void *arg, float h) {
  nic_tensor g = NIC_TENSOR_INIT;
  float l0 = 0;
  nic_error err = {0};
  if (f(x, arg, &l0, &g, &err) != NIC_OK) {
    fprintf(stderr, "gradcheck: %s\n", err.msg);
    return INFINITY;
  }
  CHECK(nic_tensor_same_shape(&g, x));
  double worst = 0;
  int64_t n = nic_tensor_numel(x);
  for (int64_t i = 0; i < n; i++) {
    float keep = x->data[i], lp = 0, lm = 0;
    x->data[i] = keep + h;
    f(x, arg, &lp, NULL, NULL);
    x->data[i] = keep - h;
    f(x, arg, &lm, NULL, NULL);
    x->data[i] = keep;
    double num = ((double)lp - lm) / (2.0 * h), ana = g.data[i];
    double e = fabs(num - ana) / fmax(1.0, fabs(ana));
    if (e > worst) worst = e;
  }
  nic_tensor_free(&g);
  return worst;
}

static int has(const nic_error *err, const char *s) {
  return strstr(err->msg, s) != NULL;
}

/* ---- softmax cross-entropy ----------------------------------------------- */

/* logits [[1,2,3],[1,0,-1]], labels [2,1]:
 *   lse(row0) = 3 + log(1 + e^-1 + e^-2) = 3.40760596, loss0 = 0.40760596
 *   lse(row1) = 1.40760596,                           loss1 = 1.40760596
 *   mean = 0.90760596
 * grad = (softmax - onehot) / 2; softmax(row0) = [0.09003057, 0.24472847, 0.66524096]. */
static void test_ce_forward(void) {
  float v[6] = {1, 2, 3, 1, 0, -1};
  int64_t shape[2] = {2, 3};
  nic_tensor x, g = NIC_TENSOR_INIT;
  nic_tensor_wrap(&x, v, 2, shape);
  int labels[2] = {2, 1};
  float loss = -1;
  CHECK_OK(nic_loss_softmax_ce(&x, labels, NULL, NULL, &loss, &g, NULL));
  CHECK_NEAR(loss, 0.9076059644, 1e-6);
  CHECK(g.ndim == 2 && g.shape[0] == 2 && g.shape[1] == 3 && g.layout == NULL);
  const double eg[6] = {0.0450152866, 0.1223642355,  -0.1673795221,
                        0.3326204779, -0.3776357645, 0.0450152866};
  for (int i = 0; i < 6; i++) CHECK_NEAR(g.data[i], eg[i], 1e-6);

  /* grad is optional */
  loss = -1;
  CHECK_OK(nic_loss_softmax_ce(&x, labels, NULL, NULL, &loss, NULL, NULL));
  CHECK_NEAR(loss, 0.9076059644, 1e-6);
  nic_tensor_free(&g);
}

/* Class weights [1, 2, 0.5]: w = [0.5 (class 2), 2 (class 1)], W = 2.5:
 *   loss = (0.5*0.40760596 + 2*1.40760596) / 2.5 = 1.20760596
 *   grad row i = w_i / W * (softmax - onehot). */
static void test_ce_weights_mask(void) {
  float v[6] = {1, 2, 3, 1, 0, -1};
  int64_t shape[2] = {2, 3};
  nic_tensor x, g = NIC_TENSOR_INIT;
  nic_tensor_wrap(&x, v, 2, shape);
  int labels[2] = {2, 1};
  float cw[3] = {1, 2, 0.5f}, loss = 0;
  CHECK_OK(nic_loss_softmax_ce(&x, labels, cw, NULL, &loss, &g, NULL));
  CHECK_NEAR(loss, 1.2076059644, 1e-6);
  const double eg[6] = {0.0180061146, 0.0489456942,  -0.0669518088,
                        0.5321927646, -0.6042172232, 0.0720244585};
  for (int i = 0; i < 6; i++) CHECK_NEAR(g.data[i], eg[i], 1e-6);

  /* Mask [0, 1]: only row 1 counts; row 0's label may be anything. */
  int masked_labels[2] = {-1, 1};
  float mask[2] = {0, 1};
  CHECK_OK(nic_loss_softmax_ce(&x, masked_labels, NULL, mask, &loss, &g, NULL));
  CHECK_NEAR(loss, 1.4076059644, 1e-6);
  for (int i = 0; i < 3; i++) CHECK(g.data[i] == 0);
  CHECK_NEAR(g.data[3], 0.6652409558, 1e-6); /* softmax(row1)[0], weight 1/1 */
  CHECK_NEAR(g.data[4], 0.2447284711 - 1, 1e-6);

  /* Mask and class weight together: weight = mask * class weight. */
  CHECK_OK(nic_loss_softmax_ce(&x, masked_labels, cw, mask, &loss, &g, NULL));
  CHECK_NEAR(loss, 1.4076059644, 1e-6); /* one sample: its weight cancels */
  CHECK_NEAR(g.data[3], 0.6652409558, 1e-6);

  /* Nothing contributes: loss 0, gradient zero. */
  float none[2] = {0, 0};
  CHECK_OK(nic_loss_softmax_ce(&x, masked_labels, NULL, none, &loss, &g, NULL));
  CHECK(loss == 0);
  for (int i = 0; i < 6; i++) CHECK(g.data[i] == 0);
  nic_tensor_free(&g);
}

/* Huge logits must not overflow: the answer is shift invariant. */
static void test_ce_stable(void) {
  float v[3] = {1000, 1001, 1002}, w[3] = {1, 2, 3};
  int64_t shape[2] = {1, 3};
  nic_tensor x, y;
  nic_tensor_wrap(&x, v, 2, shape);
  nic_tensor_wrap(&y, w, 2, shape);
  int label = 0;
  float a = 0, b = 0;
  CHECK_OK(nic_loss_softmax_ce(&x, &label, NULL, NULL, &a, NULL, NULL));
  CHECK_OK(nic_loss_softmax_ce(&y, &label, NULL, NULL, &b, NULL, NULL));
  CHECK(isfinite(a));
  CHECK_NEAR(a, 2.4076059644, 1e-5);
  CHECK_NEAR(a, b, 1e-5);
}

typedef struct ce_arg {
  const int *labels;
  const float *cw, *mask;
} ce_arg;

static nic_status ce_fn(const nic_tensor *x, const void *arg, float *loss, nic_tensor *grad,
                        nic_error *err) {
  const ce_arg *a = arg;
  return nic_loss_softmax_ce(x, a->labels, a->cw, a->mask, loss, grad, err);
}

static void test_ce_gradcheck(void) {
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc2(&x, 5, 4, NULL));
  nic_test_fill_uniform(&x, 11, -3, 3);
  int labels[5] = {0, 3, 1, 2, 3};
  float cw[4] = {0.5f, 1.5f, 1, 2}, mask[5] = {1, 0, 1, 1, 0.5f};
  ce_arg plain = {labels, NULL, NULL}, weighted = {labels, cw, mask};
  CHECK(gradcheck(ce_fn, &x, &plain, 1e-2f) < 2e-3);
  CHECK(gradcheck(ce_fn, &x, &weighted, 1e-2f) < 2e-3);
  nic_tensor_free(&x);
}

static void test_ce_errors(void) {
  float v[6] = {0};
  int64_t shape2[2] = {2, 3}, shape1[1] = {6};
  nic_tensor x, flat;
  nic_tensor_wrap(&x, v, 2, shape2);
  nic_tensor_wrap(&flat, v, 1, shape1);
  nic_error err = {0};
  float loss = 0;

  int bad[2] = {0, 5};
  CHECK(nic_loss_softmax_ce(&x, bad, NULL, NULL, &loss, NULL, &err) == NIC_EINVAL);
  CHECK(err.code == NIC_EINVAL);
  CHECK(has(&err, "label 5") && has(&err, "index 1"));

  int neg[2] = {-2, 0};
  memset(&err, 0, sizeof err);
  CHECK(nic_loss_softmax_ce(&x, neg, NULL, NULL, &loss, NULL, &err) == NIC_EINVAL);
  CHECK(has(&err, "label -2") && has(&err, "index 0"));

  int ok[6] = {0};
  memset(&err, 0, sizeof err);
  CHECK(nic_loss_softmax_ce(&flat, ok, NULL, NULL, &loss, NULL, &err) == NIC_EINVAL);
  CHECK(has(&err, "N x K"));

  float cw[3] = {1, -1, 1};
  memset(&err, 0, sizeof err);
  CHECK(nic_loss_softmax_ce(&x, ok, cw, NULL, &loss, NULL, &err) == NIC_EINVAL);
  CHECK(has(&err, "class_weight[1]"));

  float mask[2] = {1, NAN};
  memset(&err, 0, sizeof err);
  CHECK(nic_loss_softmax_ce(&x, ok, NULL, mask, &loss, NULL, &err) == NIC_EINVAL);
  CHECK(has(&err, "mask[1]"));

  CHECK(nic_loss_softmax_ce(&x, NULL, NULL, NULL, &loss, NULL, NULL) == NIC_EINVAL);
  CHECK(nic_loss_softmax_ce(NULL, ok, NULL, NULL, &loss, NULL, NULL) == NIC_EINVAL);
}

/* ---- binary cross-entropy ------------------------------------------------ */

/* logits [2, -1, 0.5], targets [1, 0, 0.25]:
 *   l0 = softplus(-2) = 0.12692801
 *   l1 = softplus(-1) = 0.31326169
 *   l2 = 0.25*softplus(-0.5) + 0.75*softplus(0.5) = 0.84907698
 *   mean = 0.42975556
 * With pos_weight 3 the positive parts triple: l0 = 0.38078403,
 * l2 = 0.75*softplus(-0.5) + 0.75*softplus(0.5) = 1.08611548, mean 0.59338707.
 * grad_i = (p*t*(sigmoid(x)-1) + (1-t)*sigmoid(x)) / 3. */
static void test_bce_forward(void) {
  float v[3] = {2, -1, 0.5f}, t[3] = {1, 0, 0.25f};
  int64_t shape[2] = {3, 1};
  nic_tensor x, g = NIC_TENSOR_INIT;
  nic_tensor_wrap(&x, v, 2, shape);
  float loss = 0;
  CHECK_OK(nic_loss_bce_logits(&x, t, 1, NULL, &loss, &g, NULL));
  CHECK_NEAR(loss, 0.4297555609, 1e-6);
  CHECK(g.ndim == 2 && g.shape[0] == 3 && g.shape[1] == 1);
  CHECK_NEAR(g.data[0], -0.0397343073, 1e-6);
  CHECK_NEAR(g.data[1], 0.0896471405, 1e-6);
  CHECK_NEAR(g.data[2], 0.1241531104, 1e-6);

  CHECK_OK(nic_loss_bce_logits(&x, t, 3, NULL, &loss, &g, NULL));
  CHECK_NEAR(loss, 0.5933870656, 1e-6);
  CHECK_NEAR(g.data[0], -0.1192029220, 1e-6);
  CHECK_NEAR(g.data[2], 0.0612296656, 1e-6);

  /* 1-D logits are accepted too; the mask drops sample 1. */
  nic_tensor flat;
  int64_t n = 3;
  nic_tensor_wrap(&flat, v, 1, &n);
  float mask[3] = {1, 0, 1};
  CHECK_OK(nic_loss_bce_logits(&flat, t, 1, mask, &loss, &g, NULL));
  CHECK_NEAR(loss, (0.1269280110 + 0.8490769841) / 2, 1e-6);
  CHECK(g.ndim == 1 && g.shape[0] == 3);
  CHECK(g.data[1] == 0);
  CHECK_NEAR(g.data[0], -0.0397343073 * 3 / 2, 1e-6);
  nic_tensor_free(&g);
}

/* |x| = 100 would overflow a naive exp in float; the stable form gives 100. */
static void test_bce_stable(void) {
  float v[2] = {100, -100}, t[2] = {0, 1};
  int64_t n = 2;
  nic_tensor x, g = NIC_TENSOR_INIT;
  nic_tensor_wrap(&x, v, 1, &n);
  float loss = 0;
  CHECK_OK(nic_loss_bce_logits(&x, t, 1, NULL, &loss, &g, NULL));
  CHECK_NEAR(loss, 100, 1e-4);
  CHECK_NEAR(g.data[0], 0.5, 1e-6);
  CHECK_NEAR(g.data[1], -0.5, 1e-6);
  nic_tensor_free(&g);
}

typedef struct bce_arg {
  const float *t, *mask;
  float pw;
} bce_arg;

static nic_status bce_fn(const nic_tensor *x, const void *arg, float *loss, nic_tensor *grad,
                         nic_error *err) {
  const bce_arg *a = arg;
  return nic_loss_bce_logits(x, a->t, a->pw, a->mask, loss, grad, err);
}

static void test_bce_gradcheck(void) {
  nic_tensor x = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc2(&x, 6, 1, NULL));
  nic_test_fill_uniform(&x, 5, -4, 4);
  float t[6] = {0, 1, 0.3f, 1, 0, 0.8f}, mask[6] = {1, 1, 0, 1, 0.5f, 1};
  bce_arg a = {t, NULL, 1}, b = {t, mask, 2.5f};
  CHECK(gradcheck(bce_fn, &x, &a, 1e-2f) < 2e-3);
  CHECK(gradcheck(bce_fn, &x, &b, 1e-2f) < 2e-3);
  nic_tensor_free(&x);
}

static void test_bce_errors(void) {
  float v[6] = {0}, t[6] = {0, 1, 0.5f, 1.5f, 0, 0};
  int64_t s2[2] = {3, 2}, s1 = 6;
  nic_tensor wide, x;
  nic_tensor_wrap(&wide, v, 2, s2);
  nic_tensor_wrap(&x, v, 1, &s1);
  nic_error err = {0};
  float loss = 0;
  CHECK(nic_loss_bce_logits(&wide, t, 1, NULL, &loss, NULL, &err) == NIC_EINVAL);
  CHECK(has(&err, "N x 1"));
  memset(&err, 0, sizeof err);
  CHECK(nic_loss_bce_logits(&x, t, 1, NULL, &loss, NULL, &err) == NIC_EINVAL);
  CHECK(has(&err, "index 3"));
  float mask[6] = {1, 1, 1, 0, 1, 1}; /* the bad target is masked out */
  CHECK_OK(nic_loss_bce_logits(&x, t, 1, mask, &loss, NULL, NULL));
  CHECK(nic_loss_bce_logits(&x, t, -1, mask, &loss, NULL, &err) == NIC_EINVAL);
  CHECK(nic_loss_bce_logits(&x, NULL, 1, NULL, &loss, NULL, &err) == NIC_EINVAL);
  /* grad must not alias the logits */
  CHECK(nic_loss_bce_logits(&x, t, 1, mask, &loss, &x, &err) == NIC_EINVAL);
}

/* ---- mean squared error -------------------------------------------------- */

/* pred [[1,2],[3,4]] vs target [[0,2],[5,4]]: diffs 1, 0, -2, 0; sum of
 * squares 5 over 4 values = 1.25; grad = 2*diff/4. With mask [1,0]: 1/2. */
static void test_mse(void) {
  float p[4] = {1, 2, 3, 4}, t[4] = {0, 2, 5, 4};
  int64_t shape[2] = {2, 2};
  nic_tensor x, g = NIC_TENSOR_INIT;
  nic_tensor_wrap(&x, p, 2, shape);
  float loss = 0;
  CHECK_OK(nic_loss_mse(&x, t, NULL, &loss, &g, NULL));
  CHECK_NEAR(loss, 1.25, 1e-7);
  const float eg[4] = {0.5f, 0, -1, 0};
  for (int i = 0; i < 4; i++) CHECK_NEAR(g.data[i], eg[i], 1e-7);

  float mask[2] = {1, 0};
  CHECK_OK(nic_loss_mse(&x, t, mask, &loss, &g, NULL));
  CHECK_NEAR(loss, 0.5, 1e-7);
  CHECK_NEAR(g.data[0], 1.0, 1e-7); /* 2*1/(1*2) */
  CHECK(g.data[2] == 0);

  float none[2] = {0, 0};
  CHECK_OK(nic_loss_mse(&x, t, none, &loss, &g, NULL));
  CHECK(loss == 0 && g.data[0] == 0);

  /* 4-D prediction: D = C*H*W per sample; grad keeps the 4-D shape. */
  nic_tensor x4;
  int64_t s4[4] = {1, 1, 2, 2};
  nic_tensor_wrap(&x4, p, 4, s4);
  CHECK_OK(nic_loss_mse(&x4, t, NULL, &loss, &g, NULL));
  CHECK_NEAR(loss, 1.25, 1e-7);
  CHECK(g.ndim == 4 && g.shape[2] == 2);
  CHECK(nic_loss_mse(&x4, NULL, NULL, &loss, &g, NULL) == NIC_EINVAL);
  nic_tensor_free(&g);
}

typedef struct mse_arg {
  const float *t, *mask;
} mse_arg;

static nic_status mse_fn(const nic_tensor *x, const void *arg, float *loss, nic_tensor *grad,
                         nic_error *err) {
  const mse_arg *a = arg;
  return nic_loss_mse(x, a->t, a->mask, loss, grad, err);
}

static void test_mse_gradcheck(void) {
  nic_tensor x = NIC_TENSOR_INIT, t = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc2(&x, 4, 3, NULL));
  CHECK_OK(nic_tensor_alloc2(&t, 4, 3, NULL));
  nic_test_fill_uniform(&x, 1, -2, 2);
  nic_test_fill_uniform(&t, 2, -2, 2);
  float mask[4] = {1, 0, 1, 2};
  mse_arg a = {t.data, NULL}, b = {t.data, mask};
  CHECK(gradcheck(mse_fn, &x, &a, 1e-2f) < 1e-3);
  CHECK(gradcheck(mse_fn, &x, &b, 1e-2f) < 1e-3);
  nic_tensor_free(&x);
  nic_tensor_free(&t);
}

/* ---- Cox partial likelihood ---------------------------------------------- */

/* r = [0.2, -0.5, 0.4, 0.0, 1.0], t = [5, 3, 3, 1, 4], event = [1, 1, 1, 0, 0].
 * Events: sample 0 (t=5), risk set {0}: r0 - log(e^r0) = 0.
 * Samples 1 and 2 are tied at t=3 and share the risk set {0, 4, 1, 2}:
 *   S = e^0.2 + e^1 + e^-0.5 + e^0.4 = 6.03803994, log S = 1.79807945.
 * loss = -(1/3) * (0 + (-0.5 - log S) + (0.4 - log S)) = (0.1 + 2 log S)/3 = 1.23205296.
 * grad_k = (1/3) * (sum_{events i: t_i <= t_k} e^{r_k}/S_i - event_k):
 *   grad_0 = (e^0.2 (1/e^0.2 + 2/S) - 1)/3 = 2 e^0.2 / (3S) = 0.13485643
 *   grad_3 = 0 (t=1 lies in no event's risk set). */
static void test_cox_forward(void) {
  float r[5] = {0.2f, -0.5f, 0.4f, 0.0f, 1.0f}, t[5] = {5, 3, 3, 1, 4};
  int ev[5] = {1, 1, 1, 0, 0};
  int64_t shape[2] = {5, 1};
  nic_tensor x, g = NIC_TENSOR_INIT;
  nic_tensor_wrap(&x, r, 2, shape);
  float loss = 0;
  CHECK_OK(nic_loss_cox(&x, t, ev, &loss, &g, NULL));
  CHECK_NEAR(loss, 1.2320529645, 1e-6);
  const double eg[5] = {0.1348564291, -0.2663656125, -0.1686193189, 0.0, 0.3001285024};
  CHECK(g.ndim == 2 && g.shape[0] == 5 && g.shape[1] == 1);
  for (int i = 0; i < 5; i++) CHECK_NEAR(g.data[i], eg[i], 1e-6);

  /* No events: loss 0, zero gradient. */
  int none[5] = {0};
  loss = 7;
  CHECK_OK(nic_loss_cox(&x, t, none, &loss, &g, NULL));
  CHECK(loss == 0);
  for (int i = 0; i < 5; i++) CHECK(g.data[i] == 0);
  nic_tensor_free(&g);
}

/* Straight O(N^2) evaluation of the definition, in double. */
static double cox_reference(const float *r, const float *t, const int *ev, int n) {
  double total = 0;
  int nev = 0;
  for (int i = 0; i < n; i++) {
    if (!ev[i]) continue;
    double s = 0;
    for (int j = 0; j < n; j++)
      if (t[j] >= t[i]) s += exp(r[j]);
    total += r[i] - log(s);
    nev++;
  }
  return nev ? -total / nev : 0;
}

typedef struct cox_arg {
  const float *t;
  const int *ev;
} cox_arg;

static nic_status cox_fn(const nic_tensor *x, const void *arg, float *loss, nic_tensor *grad,
                         nic_error *err) {
  const cox_arg *a = arg;
  return nic_loss_cox(x, a->t, a->ev, loss, grad, err);
}

/* Random batches with many ties: value against the reference, gradient
 * against finite differences. */
static void test_cox_random(void) {
  enum { N = 12 };
  nic_tensor x = NIC_TENSOR_INIT;
  int64_t n = N;
  CHECK_OK(nic_tensor_alloc(&x, 1, &n, NULL));
  nic_rng rng;
  nic_rng_seed(&rng, 99);
  for (int rep = 0; rep < 5; rep++) {
    float t[N];
    int ev[N];
    nic_test_fill_uniform(&x, 100 + rep, -2, 2);
    for (int i = 0; i < N; i++) {
      t[i] = (float)(1 + nic_rng_below(&rng, 4)); /* only 4 distinct times */
      ev[i] = nic_rng_uniform(&rng) < 0.6;
    }
    ev[rep] = 1; /* at least one event */
    float loss = 0;
    CHECK_OK(nic_loss_cox(&x, t, ev, &loss, NULL, NULL));
    CHECK_NEAR(loss, cox_reference(x.data, t, ev, N), 1e-5);
    cox_arg a = {t, ev};
    CHECK(gradcheck(cox_fn, &x, &a, 1e-2f) < 2e-3);
  }
  nic_tensor_free(&x);
}

/* Adding a constant to every risk leaves the loss unchanged; with +-800 a
 * naive exp would overflow to inf or underflow every risk set to zero. */
static void test_cox_stable(void) {
  float r[4] = {0.3f, -0.1f, 0.7f, 0.2f}, t[4] = {4, 3, 2, 1}, hi[4], lo[4];
  int ev[4] = {1, 0, 1, 1};
  for (int i = 0; i < 4; i++) hi[i] = r[i] + 800, lo[i] = r[i] - 800;
  int64_t n = 4;
  nic_tensor x, xh, xl, g = NIC_TENSOR_INIT, gl = NIC_TENSOR_INIT;
  nic_tensor_wrap(&x, r, 1, &n);
  nic_tensor_wrap(&xh, hi, 1, &n);
  nic_tensor_wrap(&xl, lo, 1, &n);
  float a = 0, b = 0, c = 0;
  CHECK_OK(nic_loss_cox(&x, t, ev, &a, &g, NULL));
  CHECK_OK(nic_loss_cox(&xh, t, ev, &b, NULL, NULL));
  CHECK_OK(nic_loss_cox(&xl, t, ev, &c, &gl, NULL));
  CHECK_NEAR(a, cox_reference(r, t, ev, 4), 1e-6);
  CHECK_NEAR(a, b, 1e-3); /* hi/lo lose float precision in the inputs */
  CHECK_NEAR(a, c, 1e-3);
  for (int i = 0; i < 4; i++) CHECK(isfinite(gl.data[i]));
  nic_tensor_free(&g);
  nic_tensor_free(&gl);
}

static void test_cox_errors(void) {
  float r[4] = {0}, t[4] = {1, 2, 3, 4};
  int ev[4] = {1, 0, 2, 0};
  int64_t s2[2] = {2, 2}, n = 4;
  nic_tensor wide, x;
  nic_tensor_wrap(&wide, r, 2, s2);
  nic_tensor_wrap(&x, r, 1, &n);
  nic_error err = {0};
  float loss = 0;
  int ok[4] = {1, 0, 1, 0};
  CHECK(nic_loss_cox(&wide, t, ok, &loss, NULL, &err) == NIC_EINVAL);
  CHECK(has(&err, "N x 1"));
  memset(&err, 0, sizeof err);
  CHECK(nic_loss_cox(&x, t, ev, &loss, NULL, &err) == NIC_EINVAL);
  CHECK(has(&err, "index 2"));
  float tn[4] = {1, NAN, 2, 3};
  CHECK(nic_loss_cox(&x, tn, ok, &loss, NULL, &err) == NIC_EINVAL);
  CHECK(nic_loss_cox(&x, NULL, ok, &loss, NULL, &err) == NIC_EINVAL);
}

/* A grad tensor of another shape is reshaped to the input's. */
static void test_grad_reshaped(void) {
  nic_tensor g = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&g, 2, 2, 2, 2, NULL));
  nic_tensor_fill(&g, 9);
  float v[3] = {0.5f, -0.5f, 1}, t[3] = {1, 0, 1};
  int64_t n = 3;
  nic_tensor x;
  nic_tensor_wrap(&x, v, 1, &n);
  float loss = 0;
  CHECK_OK(nic_loss_mse(&x, t, NULL, &loss, &g, NULL));
  CHECK(g.ndim == 1 && g.shape[0] == 3 && nic_tensor_numel(&g) == 3);
  CHECK_NEAR(g.data[2], 0, 1e-7);
  nic_tensor_free(&g);
}

int main(void) {
  RUN(test_ce_forward);
  RUN(test_ce_weights_mask);
  RUN(test_ce_stable);
  RUN(test_ce_gradcheck);
  RUN(test_ce_errors);
  RUN(test_bce_forward);
  RUN(test_bce_stable);
  RUN(test_bce_gradcheck);
  RUN(test_bce_errors);
  RUN(test_mse);
  RUN(test_mse_gradcheck);
  RUN(test_cox_forward);
  RUN(test_cox_random);
  RUN(test_cox_stable);
  RUN(test_cox_errors);
  RUN(test_grad_reshaped);
  return nic_test_finish();
}
