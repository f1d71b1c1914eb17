/* Optimizers and learning-rate schedules: single steps against hand
 * computations of PyTorch's update rules, convergence on convex problems
 * with a known optimum, clipping, state handling and schedules. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- helpers ------------------------------------------------------------- */

static void make_param(nic_param *p, const char *name, int n, const float *init) {
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", name);
  int64_t shape[1] = {n};
  CHECK_OK(nic_tensor_alloc(&p->value, 1, shape, NULL));
  CHECK_OK(nic_tensor_alloc(&p->grad, 1, shape, NULL));
  if (init) memcpy(p->value.data, init, (size_t)n * sizeof(float));
  p->trainable = 1;
}

static void free_param(nic_param *p) {
  nic_tensor_free(&p->value);
  nic_tensor_free(&p->grad);
}

static nic_optimizer *make_opt(nic_opt_config c) {
  nic_optimizer *o = NULL;
  nic_error err = {0};
  if (nic_optimizer_create(&o, &c, &err) != NIC_OK) {
    fprintf(stderr, "optimizer: %s\n", err.msg);
    exit(1);
  }
  return o;
}

/* Runs `steps` updates of one 2-element param from w = [1, -2] with the given
 * fixed gradients and checks the final values. */
static void run_fixed(nic_opt_config c, const float (*grads)[2], int steps, const double *want,
                      double tol) {
  const float w0[2] = {1, -2};
  nic_param p;
  make_param(&p, "w", 2, w0);
  nic_param *ps[1] = {&p};
  nic_optimizer *o = make_opt(c);
  for (int s = 0; s < steps; s++) {
    memcpy(p.grad.data, grads[s], sizeof grads[s]);
    CHECK_OK(nic_optimizer_step_params(o, ps, 1, NULL, NULL));
  }
  CHECK_NEAR(p.value.data[0], want[0], tol);
  CHECK_NEAR(p.value.data[1], want[1], tol);
  nic_optimizer_free(o);
  free_param(&p);
}

static const float G[2][2] = {{0.5f, 1}, {1, -1}};

/* ---- single steps (PyTorch semantics, by hand) --------------------------- */

static void test_defaults(void) {
  nic_opt_config s = nic_opt_default(NIC_OPT_SGD, 0.1f);
  CHECK(s.kind == NIC_OPT_SGD && s.lr == 0.1f && s.momentum == 0.9f && !s.nesterov);
  CHECK(s.weight_decay == 0 && s.clip_norm == 0 && s.clip_value == 0);
  nic_opt_config a = nic_opt_default(NIC_OPT_ADAM, 1e-3f);
  CHECK(a.beta1 == 0.9f && a.beta2 == 0.999f && a.eps == 1e-8f && a.weight_decay == 0);
  nic_opt_config w = nic_opt_default(NIC_OPT_ADAMW, 1e-3f);
  CHECK(w.kind == NIC_OPT_ADAMW && w.beta2 == 0.999f);

  nic_optimizer *o = make_opt(a);
  CHECK(nic_optimizer_lr(o) == 1e-3f);
  nic_optimizer_set_lr(o, 5e-4f);
  CHECK(nic_optimizer_lr(o) == 5e-4f);
  nic_optimizer_free(o);
  nic_optimizer_free(NULL);
}

/* w = [1, -2], g1 = [0.5, 1], g2 = [1, -1], lr 0.1.
 * Plain SGD: w - 0.1*g1 = [0.95, -2.1].
 * Momentum 0.9: buf1 = g1 -> [0.95, -2.1]; buf2 = 0.9*g1 + g2 = [1.45, -0.1]
 *   -> [0.95 - 0.145, -2.1 + 0.01] = [0.805, -2.09].
 * Nesterov: d1 = g1 + 0.9*buf1 = [0.95, 1.9] -> [0.905, -2.19];
 *   d2 = g2 + 0.9*buf2 = [2.305, -1.09] -> [0.6745, -2.081].
 * L2 0.1, no momentum: d = g1 + 0.1*w = [0.6, 0.8] -> [0.94, -2.08]. */
static void test_sgd_steps(void) {
  nic_opt_config c = nic_opt_default(NIC_OPT_SGD, 0.1f);
  c.momentum = 0;
  run_fixed(c, G, 1, (const double[]){0.95, -2.1}, 1e-6);
  c.momentum = 0.9f;
  run_fixed(c, G, 1, (const double[]){0.95, -2.1}, 1e-6);
  run_fixed(c, G, 2, (const double[]){0.805, -2.09}, 1e-6);
  c.nesterov = 1;
  run_fixed(c, G, 1, (const double[]){0.905, -2.19}, 1e-6);
  run_fixed(c, G, 2, (const double[]){0.6745, -2.081}, 1e-6);
  c = nic_opt_default(NIC_OPT_SGD, 0.1f);
  c.momentum = 0;
  c.weight_decay = 0.1f;
  run_fixed(c, G, 1, (const double[]){0.94, -2.08}, 1e-6);
}

/* Adam, lr 0.1, same w and gradients. Step 1: m_hat = g, v_hat = g^2, so the
 * step is lr*g/(|g| + eps) ~ lr*sign(g): [0.9, -2.1]. Step 2:
 *   m = 0.9*0.1*g1 + 0.1*g2,  v = 0.999*0.001*g1^2 + 0.001*g2^2
 *   w -= 0.1/(1-0.81) * m / (sqrt(v)/sqrt(1-0.998001) + 1e-8)
 *   -> [0.80348180, -2.09473684].
 * Adam with L2 0.1 (g += 0.1*w each step): [0.80250297, -2.07485905].
 * AdamW with wd 0.1: w *= 1 - 0.01 before each Adam step (no L2 in the
 * moments): step 1 [0.99 - 0.1, -1.98 - 0.1] = [0.89, -2.08]; step 2 [0.78458180, -2.05393684]. */
static void test_adam_steps(void) {
  nic_opt_config c = nic_opt_default(NIC_OPT_ADAM, 0.1f);
  run_fixed(c, G, 1, (const double[]){0.9, -2.1}, 1e-6);
  run_fixed(c, G, 2, (const double[]){0.8034818006, -2.0947368412}, 2e-6);
  c.weight_decay = 0.1f;
  run_fixed(c, G, 2, (const double[]){0.8025029703, -2.0748590454}, 2e-6);
  c = nic_opt_default(NIC_OPT_ADAMW, 0.1f);
  c.weight_decay = 0.1f;
  run_fixed(c, G, 1, (const double[]){0.89, -2.08}, 1e-6);
  run_fixed(c, G, 2, (const double[]){0.7845818006, -2.0539368412}, 2e-6);
}

/* With zero gradients AdamW is pure decoupled decay: w_t = w0 (1 - lr*wd)^t,
 * while Adam's L2 decay goes through the normalised moments instead. */
static void test_adamw_decay(void) {
  nic_opt_config c = nic_opt_default(NIC_OPT_ADAMW, 0.01f);
  c.weight_decay = 0.5f;
  const float zero[10][2] = {{0}};
  double f = pow(1 - 0.01 * 0.5, 10);
  run_fixed(c, zero, 10, (const double[]){f, -2 * f}, 1e-6);
}

/* ---- clipping ------------------------------------------------------------ */

/* Two params with grads [3] and [4]: the global norm is 5. clip_norm 1
 * scales both by 1/(5 + 1e-6) (PyTorch); SGD lr 1 then moves them by
 * [0.6] and [0.8]. The caller's gradients are left untouched. */
static void test_clip_norm(void) {
  nic_param a, b;
  const float wa[1] = {1}, wb[1] = {-2};
  make_param(&a, "a", 1, wa);
  make_param(&b, "b", 1, wb);
  a.grad.data[0] = 3;
  b.grad.data[0] = 4;
  nic_param *ps[2] = {&a, &b};
  nic_opt_config c = nic_opt_default(NIC_OPT_SGD, 1);
  c.momentum = 0;
  c.clip_norm = 1;
  nic_optimizer *o = make_opt(c);
  float norm = 0;
  CHECK_OK(nic_optimizer_step_params(o, ps, 2, &norm, NULL));
  CHECK_NEAR(norm, 5, 1e-6);
  CHECK_NEAR(a.value.data[0], 1 - 0.6, 1e-6);
  CHECK_NEAR(b.value.data[0], -2 - 0.8, 1e-6);
  CHECK(a.grad.data[0] == 3 && b.grad.data[0] == 4);

  /* Below the threshold nothing is scaled; the norm is still reported. */
  a.grad.data[0] = 0.3f;
  b.grad.data[0] = 0.4f;
  CHECK_OK(nic_optimizer_step_params(o, ps, 2, &norm, NULL));
  CHECK_NEAR(norm, 0.5, 1e-6);
  CHECK_NEAR(a.value.data[0], 0.4 - 0.3, 1e-6);
  CHECK_NEAR(b.value.data[0], -2.8 - 0.4, 1e-6);
  nic_optimizer_free(o);

  /* Without clipping the norm is reported and the full step taken. */
  c.clip_norm = 0;
  o = make_opt(c);
  a.grad.data[0] = 3;
  b.grad.data[0] = 4;
  CHECK_OK(nic_optimizer_step_params(o, ps, 2, &norm, NULL));
  CHECK_NEAR(norm, 5, 1e-6);
  CHECK_NEAR(a.value.data[0], 0.1 - 3, 1e-6);
  nic_optimizer_free(o);
  free_param(&a);
  free_param(&b);
}

/* clip_value 0.5 clamps [3, -0.2] to [0.5, -0.2]; with clip_norm 1 as well,
 * [3, 4] is first scaled to [0.6, 0.8] and then clamped to [0.6, 0.7]. */
static void test_clip_value(void) {
  const float w0[2] = {0, 0};
  nic_param p;
  make_param(&p, "p", 2, w0);
  nic_param *ps[1] = {&p};
  nic_opt_config c = nic_opt_default(NIC_OPT_SGD, 1);
  c.momentum = 0;
  c.clip_value = 0.5f;
  nic_optimizer *o = make_opt(c);
  p.grad.data[0] = 3;
  p.grad.data[1] = -0.2f;
  float norm = 0;
  CHECK_OK(nic_optimizer_step_params(o, ps, 1, &norm, NULL));
  CHECK_NEAR(norm, sqrt(9 + 0.04), 1e-6);
  CHECK_NEAR(p.value.data[0], -0.5, 1e-7);
  CHECK_NEAR(p.value.data[1], 0.2, 1e-7);
  nic_optimizer_free(o);

  c.clip_value = 0.7f;
  c.clip_norm = 1;
  o = make_opt(c);
  p.value.data[0] = p.value.data[1] = 0;
  p.grad.data[0] = 3;
  p.grad.data[1] = 4;
  CHECK_OK(nic_optimizer_step_params(o, ps, 1, &norm, NULL));
  CHECK_NEAR(p.value.data[0], -0.6, 1e-6);
  CHECK_NEAR(p.value.data[1], -0.7, 1e-6);
  nic_optimizer_free(o);
  free_param(&p);
}

/* Params past the parallel threshold (64K elements) take the OpenMP path;
 * every element must still follow the scalar rule, and the norm sums all. */
static void test_large_param(void) {
  enum { N = 100003 };
  nic_param p;
  make_param(&p, "big", N, NULL);
  nic_param *ps[1] = {&p};
  double sq = 0;
  for (int i = 0; i < N; i++) {
    p.value.data[i] = 1;
    p.grad.data[i] = (float)(i % 7 - 3);
    sq += (double)(i % 7 - 3) * (i % 7 - 3);
  }
  nic_optimizer *o = make_opt(nic_opt_default(NIC_OPT_ADAM, 0.1f));
  float norm = 0;
  CHECK_OK(nic_optimizer_step_params(o, ps, 1, &norm, NULL));
  CHECK_NEAR(norm, sqrt(sq), 1e-6 * sqrt(sq));
  int bad = 0;
  for (int i = 0; i < N; i++) { /* step 1 of Adam: lr * sign(g) */
    double g = i % 7 - 3, want = 1 - 0.1 * ((g > 0) - (g < 0));
    bad += fabs(p.value.data[i] - want) > 1e-6;
  }
  CHECK(bad == 0);
  nic_optimizer_free(o);

  nic_opt_config c = nic_opt_default(NIC_OPT_SGD, 0.1f);
  c.nesterov = 1;
  o = make_opt(c);
  for (int i = 0; i < N; i++) p.value.data[i] = 1;
  CHECK_OK(nic_optimizer_step_params(o, ps, 1, NULL, NULL));
  bad = 0;
  for (int i = 0; i < N; i++) /* Nesterov step 1: lr * 1.9 * g */
    bad += fabs(p.value.data[i] - (1 - 0.19 * (i % 7 - 3))) > 1e-6;
  CHECK(bad == 0);
  nic_optimizer_free(o);
  free_param(&p);
}

/* ---- state and argument handling ----------------------------------------- */

/* Non-trainable params (buffers) are neither updated nor counted in the norm. */
static void test_skips_buffers(void) {
  const float w0[2] = {1, 1};
  nic_param p, buf;
  make_param(&p, "w", 2, w0);
  make_param(&buf, "bn.running_mean", 2, w0);
  buf.trainable = 0;
  buf.grad.data[0] = 100;
  p.grad.data[0] = 3;
  p.grad.data[1] = 4;
  nic_param *ps[2] = {&buf, &p};
  nic_optimizer *o = make_opt(nic_opt_default(NIC_OPT_ADAM, 0.1f));
  float norm = 0;
  CHECK_OK(nic_optimizer_step_params(o, ps, 2, &norm, NULL));
  CHECK_NEAR(norm, 5, 1e-6);
  CHECK(buf.value.data[0] == 1 && buf.value.data[1] == 1);
  CHECK_NEAR(p.value.data[0], 0.9, 1e-6);
  nic_optimizer_free(o);
  free_param(&p);
  free_param(&buf);
}

/* State is keyed by the param, not its position: reordering the list must
 * not mix up the momentum buffers. */
static void test_state_keyed_by_param(void) {
  const float w0[1] = {0};
  nic_param a, b;
  make_param(&a, "a", 1, w0);
  make_param(&b, "b", 1, w0);
  nic_opt_config c = nic_opt_default(NIC_OPT_SGD, 1);
  nic_optimizer *o = make_opt(c);
  a.grad.data[0] = 1;
  b.grad.data[0] = -1;
  nic_param *ab[2] = {&a, &b}, *ba[2] = {&b, &a};
  CHECK_OK(nic_optimizer_step_params(o, ab, 2, NULL, NULL)); /* a: -1, b: +1 */
  a.grad.data[0] = b.grad.data[0] = 0;
  CHECK_OK(nic_optimizer_step_params(o, ba, 2, NULL, NULL)); /* buf*0.9 */
  CHECK_NEAR(a.value.data[0], -1.9, 1e-6);
  CHECK_NEAR(b.value.data[0], 1.9, 1e-6);
  nic_optimizer_free(o);
  free_param(&a);
  free_param(&b);
}

/* A fresh optimizer given the exported state of another continues exactly
 * as the other would: same weights, bit for bit, after more steps. For
 * Adam (moments + step count, so the bias correction continues), AdamW and
 * SGD with momentum. */
static void check_state_transfer(nic_opt_config c) {
  const float w0[3] = {1, -2, 0.5f};
  nic_param a, b, f;
  make_param(&a, "w", 3, w0);
  nic_param *pa[1] = {&a}, *pb[1] = {&b}, *pf[1] = {&f};
  nic_optimizer *o1 = make_opt(c), *o2 = make_opt(c), *o3 = make_opt(c);
  nic_error err = {0};
  for (int s = 0; s < 4; s++) {
    for (int i = 0; i < 3; i++) a.grad.data[i] = 0.3f * (float)(s + 1) - 0.7f * (float)i;
    CHECK_OK(nic_optimizer_step_params(o1, pa, 1, NULL, NULL));
  }
  CHECK(nic_optimizer_num_states(o1) == 1);
  nic_opt_state st;
  CHECK_OK(nic_optimizer_get_state(o1, 0, &st, &err));
  CHECK(st.param == &a && st.numel == 3);
  CHECK(st.step == (c.kind == NIC_OPT_SGD ? 0 : 4));
  int hm, hv;
  nic_optimizer_slots(o1, &hm, &hv);
  CHECK((st.m != NULL) == hm && (st.v != NULL) == hv);
  /* b: a copy of a's weights with a's state imported into o2; f: a copy
   * whose optimizer o3 starts afresh */
  make_param(&b, "w", 3, a.value.data);
  make_param(&f, "w", 3, a.value.data);
  CHECK(!nic_optimizer_find_state(o2, &b, NULL));
  CHECK_OK(nic_optimizer_set_state(o2, &b, st.step, st.m, st.v, &err));
  nic_opt_state st2;
  CHECK(nic_optimizer_find_state(o2, &b, &st2) && st2.step == st.step);
  CHECK(st2.m != st.m || !st.m); /* a copy, not the same arrays */
  for (int s = 0; s < 3; s++) {
    for (int i = 0; i < 3; i++)
      a.grad.data[i] = b.grad.data[i] = f.grad.data[i] = 0.2f * (float)i - 0.1f * (float)s;
    CHECK_OK(nic_optimizer_step_params(o1, pa, 1, NULL, NULL));
    CHECK_OK(nic_optimizer_step_params(o2, pb, 1, NULL, NULL));
    CHECK_OK(nic_optimizer_step_params(o3, pf, 1, NULL, NULL));
  }
  CHECK(!memcmp(a.value.data, b.value.data, 3 * sizeof(float)));
  /* with state to lose, starting afresh gives other weights */
  CHECK((memcmp(a.value.data, f.value.data, 3 * sizeof(float)) != 0) == hm);
  nic_optimizer_free(o1);
  nic_optimizer_free(o2);
  nic_optimizer_free(o3);
  free_param(&a);
  free_param(&b);
  free_param(&f);
}

static void test_state_transfer(void) {
  check_state_transfer(nic_opt_default(NIC_OPT_ADAM, 0.1f));
  nic_opt_config w = nic_opt_default(NIC_OPT_ADAMW, 0.1f);
  w.weight_decay = 0.1f;
  check_state_transfer(w);
  check_state_transfer(nic_opt_default(NIC_OPT_SGD, 0.1f));
  nic_opt_config plain = nic_opt_default(NIC_OPT_SGD, 0.1f);
  plain.momentum = 0;
  check_state_transfer(plain);
}

/* set_state refuses slots the kind does not keep (or lacks ones it does),
 * a negative step, a state of another size; get_state an index out of
 * range. */
static void test_state_errors(void) {
  const float w0[2] = {1, 2}, m[4] = {0}, v[4] = {0};
  nic_param p;
  make_param(&p, "w", 2, w0);
  nic_optimizer *adam = make_opt(nic_opt_default(NIC_OPT_ADAM, 0.1f));
  nic_opt_config pc = nic_opt_default(NIC_OPT_SGD, 0.1f);
  pc.momentum = 0;
  nic_optimizer *plain = make_opt(pc);
  nic_error err = {0};
  CHECK(nic_optimizer_set_state(adam, &p, 1, m, NULL, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "needs slot v") != NULL);
  CHECK(nic_optimizer_set_state(plain, &p, 0, m, NULL, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "has no slot m") != NULL);
  CHECK(nic_optimizer_set_state(adam, &p, -1, m, v, &err) == NIC_EINVAL);
  CHECK(nic_optimizer_num_states(adam) == 0);
  CHECK_OK(nic_optimizer_set_state(adam, &p, 2, m, v, &err));
  CHECK_OK(nic_optimizer_set_state(adam, &p, 3, m, v, &err)); /* overwrites */
  CHECK(nic_optimizer_num_states(adam) == 1);
  nic_opt_state st;
  CHECK(nic_optimizer_get_state(adam, 1, &st, &err) == NIC_EINVAL);
  CHECK(nic_optimizer_get_state(adam, -1, &st, &err) == NIC_EINVAL);
  CHECK_OK(nic_optimizer_get_state(adam, 0, &st, &err));
  CHECK(st.step == 3);
  /* the param grows: its old state no longer fits */
  free_param(&p);
  make_param(&p, "w", 4, NULL);
  CHECK(nic_optimizer_set_state(adam, &p, 1, m, v, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "changed size") != NULL);
  nic_optimizer_free(adam);
  nic_optimizer_free(plain);
  free_param(&p);
}

static void test_errors(void) {
  nic_error err = {0};
  nic_optimizer *o = NULL;
  nic_opt_config c = nic_opt_default(NIC_OPT_SGD, 0.1f);
  c.momentum = 1.5f;
  CHECK(nic_optimizer_create(&o, &c, &err) == NIC_EINVAL && o == NULL);
  CHECK(strstr(err.msg, "momentum") != NULL);
  c.momentum = 0;
  c.nesterov = 1;
  CHECK(nic_optimizer_create(&o, &c, &err) == NIC_EINVAL);
  c = nic_opt_default(NIC_OPT_ADAM, 0.1f);
  c.eps = 0;
  CHECK(nic_optimizer_create(&o, &c, &err) == NIC_EINVAL);
  c = nic_opt_default(NIC_OPT_ADAM, -1);
  CHECK(nic_optimizer_create(&o, &c, &err) == NIC_EINVAL);
  c = nic_opt_default(NIC_OPT_ADAM, 0.1f);
  c.beta2 = 1;
  CHECK(nic_optimizer_create(&o, &c, &err) == NIC_EINVAL);
  c = nic_opt_default((nic_opt_kind)7, 0.1f);
  CHECK(nic_optimizer_create(&o, &c, &err) == NIC_EINVAL);

  /* A param whose size changes between steps is an error, and the step
   * leaves every param untouched. */
  const float w0[3] = {1, 2, 3};
  nic_param a, p;
  make_param(&a, "a", 1, w0);
  make_param(&p, "grows", 2, w0);
  a.grad.data[0] = 1;
  nic_param *ps[2] = {&a, &p};
  o = make_opt(nic_opt_default(NIC_OPT_ADAM, 0.1f));
  CHECK_OK(nic_optimizer_step_params(o, ps, 2, NULL, NULL));
  float a_after = a.value.data[0];
  free_param(&p);
  make_param(&p, "grows", 3, w0);
  memset(&err, 0, sizeof err);
  CHECK(nic_optimizer_step_params(o, ps, 2, NULL, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "grows") != NULL);
  CHECK(a.value.data[0] == a_after);

  /* A non-finite gradient refuses the step and reports the norm. */
  free_param(&p);
  make_param(&p, "bad", 2, w0);
  p.grad.data[1] = NAN;
  nic_param *pn[2] = {&a, &p};
  float norm = 0;
  CHECK(nic_optimizer_step_params(o, pn, 2, &norm, &err) == NIC_EINVAL);
  CHECK(isnan(norm));
  CHECK(a.value.data[0] == a_after && p.value.data[0] == 1);

  /* A trainable param without a gradient. */
  nic_tensor_free(&p.grad);
  CHECK(nic_optimizer_step_params(o, pn, 2, NULL, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "'bad'") != NULL);
  nic_optimizer_free(o);
  free_param(&a);
  free_param(&p);
}

/* ---- convergence on convex problems -------------------------------------- */

/* Least squares with an exact solution: A (6x3) x* = b, x* = [1, -2, 0.5].
 * f(x) = |Ax - b|^2 / (2*6), grad = A^T (Ax - b) / 6. */
static const float A[6][3] = {{1, 0.5f, -0.3f},    {0.2f, 1, 0.4f},     {-0.5f, 0.3f, 1},
                              {0.7f, -0.6f, 0.2f}, {0.1f, 0.8f, -0.9f}, {1, 1, 1}};
static const float XSTAR[3] = {1, -2, 0.5f};

static void lsq_grad(const float *x, float *g) {
  double r[6];
  for (int i = 0; i < 6; i++) {
    r[i] = 0;
    for (int j = 0; j < 3; j++) r[i] += A[i][j] * ((double)x[j] - XSTAR[j]);
  }
  for (int j = 0; j < 3; j++) {
    double s = 0;
    for (int i = 0; i < 6; i++) s += A[i][j] * r[i];
    g[j] = (float)(s / 6);
  }
}

/* Runs `steps` steps from x = 0, optionally decaying the LR with a cosine
 * schedule (Adam oscillates at constant LR), and returns the distance to x*. */
static double lsq_run(nic_opt_config c, int steps, int cosine) {
  nic_param p;
  make_param(&p, "x", 3, NULL);
  nic_param *ps[1] = {&p};
  nic_optimizer *o = make_opt(c);
  nic_schedule s = nic_sched_cosine(c.lr, 0, steps, 0);
  int failed = 0;
  for (int t = 0; t < steps; t++) {
    if (cosine) nic_optimizer_set_lr(o, nic_sched_lr(&s, t, 0));
    lsq_grad(p.value.data, p.grad.data);
    failed += nic_optimizer_step_params(o, ps, 1, NULL, NULL) != NIC_OK;
  }
  CHECK(failed == 0);
  double d = 0;
  for (int j = 0; j < 3; j++) d = fmax(d, fabs(p.value.data[j] - XSTAR[j]));
  nic_optimizer_free(o);
  free_param(&p);
  return d;
}

static void test_converge_lsq(void) {
  nic_opt_config c = nic_opt_default(NIC_OPT_SGD, 0.5f);
  c.momentum = 0;
  CHECK(lsq_run(c, 3000, 0) < 1e-5);
  c = nic_opt_default(NIC_OPT_SGD, 0.1f);
  CHECK(lsq_run(c, 1000, 0) < 1e-5);
  c.nesterov = 1;
  CHECK(lsq_run(c, 1000, 0) < 1e-5);
  c = nic_opt_default(NIC_OPT_ADAM, 0.05f);
  CHECK(lsq_run(c, 3000, 1) < 1e-4);
  c = nic_opt_default(NIC_OPT_ADAMW, 0.05f);
  c.weight_decay = 1e-4f;
  CHECK(lsq_run(c, 3000, 1) < 1e-4);
  /* Clipping only slows the far-away phase; the optimum is the same. */
  c = nic_opt_default(NIC_OPT_SGD, 0.1f);
  c.clip_norm = 0.1f;
  CHECK(lsq_run(c, 2000, 0) < 1e-5);
  c.clip_norm = 0;
  c.clip_value = 0.05f;
  CHECK(lsq_run(c, 2000, 0) < 1e-5);
}

/* Diagonal quadratic f = sum a_i (w_i - c_i)^2 / 2 with L2 decay lambda:
 * the optimum moves to w_i = a_i c_i / (a_i + lambda). */
static double quad_run(nic_opt_config cfg, int steps, int cosine) {
  const float a[4] = {1, 4, 0.5f, 2}, ctr[4] = {1, -2, 3, 0.5f};
  nic_param p;
  make_param(&p, "w", 4, NULL);
  nic_param *ps[1] = {&p};
  nic_optimizer *o = make_opt(cfg);
  nic_schedule s = nic_sched_cosine(cfg.lr, 0, steps, 0);
  int failed = 0;
  for (int t = 0; t < steps; t++) {
    if (cosine) nic_optimizer_set_lr(o, nic_sched_lr(&s, t, 0));
    for (int i = 0; i < 4; i++) p.grad.data[i] = a[i] * (p.value.data[i] - ctr[i]);
    failed += nic_optimizer_step_params(o, ps, 1, NULL, NULL) != NIC_OK;
  }
  CHECK(failed == 0);
  double d = 0;
  for (int i = 0; i < 4; i++) {
    double want = a[i] * ctr[i] / (a[i] + cfg.weight_decay);
    d = fmax(d, fabs(p.value.data[i] - want));
  }
  nic_optimizer_free(o);
  free_param(&p);
  return d;
}

static void test_converge_weight_decay(void) {
  nic_opt_config c = nic_opt_default(NIC_OPT_SGD, 0.1f);
  c.weight_decay = 0.1f;
  CHECK(quad_run(c, 1000, 0) < 1e-5);
  c.nesterov = 1;
  CHECK(quad_run(c, 1000, 0) < 1e-5);
  c = nic_opt_default(NIC_OPT_ADAM, 0.05f);
  c.weight_decay = 0.1f;
  CHECK(quad_run(c, 4000, 1) < 1e-4);
}

/* nic_optimizer_step on a real model: every trainable param moves by
 * -lr*grad, and the global norm covers all of them. */
static void test_model_step(void) {
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_model_create(&m, 3, 1, 1, &err));
  if (!m) return;
  CHECK(nic_model_add(m, nic_spec_dense(2, NIC_ACT_NONE, 0), -1, -1, &err) >= 1);
  int n = 0;
  nic_param **ps = nic_model_params(m, &n);
  double sq = 0;
  for (int i = 0; i < n; i++) {
    if (!ps[i]->trainable) continue;
    int64_t k = nic_tensor_numel(&ps[i]->value);
    for (int64_t j = 0; j < k; j++) {
      ps[i]->value.data[j] = 1;
      ps[i]->grad.data[j] = (float)(j + 1);
      sq += (double)(j + 1) * (j + 1);
    }
  }
  nic_opt_config c = nic_opt_default(NIC_OPT_SGD, 0.5f);
  c.momentum = 0;
  nic_optimizer *o = make_opt(c);
  float norm = 0;
  CHECK_OK(nic_optimizer_step(o, m, &norm, &err));
  CHECK_NEAR(norm, sqrt(sq), 1e-4);
  for (int i = 0; i < n; i++)
    if (ps[i]->trainable)
      for (int64_t j = 0; j < nic_tensor_numel(&ps[i]->value); j++)
        CHECK_NEAR(ps[i]->value.data[j], 1 - 0.5 * (j + 1), 1e-6);
  nic_optimizer_free(o);
  nic_model_free(m);
}

/* ---- schedules ----------------------------------------------------------- */

static void test_sched_step(void) {
  nic_schedule s = nic_sched_step(0.1f, 3, 0.5f);
  const double want[8] = {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025};
  for (int e = 0; e < 8; e++) CHECK_NEAR(nic_sched_lr(&s, e, 0), want[e], 1e-8);
  nic_schedule k = nic_sched_step(0.3f, 0, 0.5f); /* no step size: constant */
  CHECK_NEAR(nic_sched_lr(&k, 10, 0), 0.3, 1e-7);
  nic_schedule c = {0};
  c.kind = NIC_SCHED_CONSTANT;
  c.base_lr = 0.2f;
  CHECK_NEAR(nic_sched_lr(&c, 5, 1), 0.2, 1e-7);
}

/* base 1, min 0.1, total 10, warmup 2:
 *   e0 = 1/2, e1 = 1 (warmup), then 0.1 + 0.45 (1 + cos(pi (e-2)/8)):
 *   e2 = 1, e3 = 0.1 + 0.45 (1 + cos(pi/8)) = 0.96574579, e6 = 0.55,
 *   e9 = 0.1 + 0.45 (1 + cos(7 pi/8)) = 0.13425421, e >= 10: 0.1. */
static void test_sched_cosine(void) {
  nic_schedule s = nic_sched_cosine(1, 0.1f, 10, 2);
  CHECK_NEAR(nic_sched_lr(&s, 0, 0), 0.5, 1e-7);
  CHECK_NEAR(nic_sched_lr(&s, 1, 0), 1.0, 1e-7);
  CHECK_NEAR(nic_sched_lr(&s, 2, 0), 1.0, 1e-7);
  CHECK_NEAR(nic_sched_lr(&s, 3, 0), 0.9657457896, 1e-7);
  CHECK_NEAR(nic_sched_lr(&s, 6, 0), 0.55, 1e-7);
  CHECK_NEAR(nic_sched_lr(&s, 9, 0), 0.1342542104, 1e-7);
  CHECK_NEAR(nic_sched_lr(&s, 10, 0), 0.1, 1e-7);
  CHECK_NEAR(nic_sched_lr(&s, 50, 0), 0.1, 1e-7);
  /* The LR never rises after warmup. */
  float prev = nic_sched_lr(&s, 2, 0);
  for (int e = 3; e < 12; e++) {
    float lr = nic_sched_lr(&s, e, 0);
    CHECK(lr <= prev);
    prev = lr;
  }
  /* No warmup: starts at base; halfway is the midpoint. */
  nic_schedule n = nic_sched_cosine(0.2f, 0, 4, 0);
  CHECK_NEAR(nic_sched_lr(&n, 0, 0), 0.2, 1e-7);
  CHECK_NEAR(nic_sched_lr(&n, 2, 0), 0.1, 1e-7);
  CHECK_NEAR(nic_sched_lr(&n, 4, 0), 0.0, 1e-7);
}

/* ReduceLROnPlateau, mode min, factor 0.5, patience 2, min_lr 0.1. The
 * metric passed at epoch e is epoch e-1's; epoch 0 has none.
 *   e1 1.0 best | e2 0.9 best | e3 0.9 bad 1 | e4 0.95 bad 2
 *   e5 0.89995: not better than 0.9*(1 - 1e-4) = 0.89991 -> bad 3 -> lr 0.5
 *   e6 0.5 best | e7..e9 0.6 -> bad 3 at e9 -> 0.25 | e10..e12 -> 0.125
 *   e13..e15 -> max(0.0625, 0.1) = 0.1 | then stays at 0.1. */
static void test_sched_plateau_min(void) {
  nic_schedule s = nic_sched_plateau(1, 0.5f, 2, 0.1f, 0);
  const float metric[20] = {123,  1.0f, 0.9f, 0.9f, 0.95f, 0.89995f, 0.5f, 0.6f, 0.6f, 0.6f,
                            0.6f, 0.6f, 0.6f, 0.6f, 0.6f,  0.6f,     0.6f, 0.6f, 0.6f, 0.6f};
  const double want[20] = {1,    1,    1,     1,     1,     0.5, 0.5, 0.5, 0.5, 0.25,
                           0.25, 0.25, 0.125, 0.125, 0.125, 0.1, 0.1, 0.1, 0.1, 0.1};
  for (int e = 0; e < 20; e++) CHECK_NEAR(nic_sched_lr(&s, e, metric[e]), want[e], 1e-7);
  CHECK(s.cur_lr == 0.1f);

  /* Epoch 0 restarts the schedule. */
  CHECK_NEAR(nic_sched_lr(&s, 0, 0), 1, 1e-7);
  CHECK(s.bad_epochs == 0);
}

/* Mode max (accuracy): improvements reset the count; a NaN metric (no
 * validation that epoch) changes nothing. */
static void test_sched_plateau_max(void) {
  nic_schedule s = nic_sched_plateau(0.01f, 0.1f, 1, 0, 1);
  CHECK_NEAR(nic_sched_lr(&s, 0, NAN), 0.01, 1e-9);
  CHECK_NEAR(nic_sched_lr(&s, 1, 0.5f), 0.01, 1e-9);  /* best 0.5 */
  CHECK_NEAR(nic_sched_lr(&s, 2, 0.6f), 0.01, 1e-9);  /* best 0.6 */
  CHECK_NEAR(nic_sched_lr(&s, 3, 0.55f), 0.01, 1e-9); /* bad 1 */
  CHECK_NEAR(nic_sched_lr(&s, 4, NAN), 0.01, 1e-9);   /* skipped */
  CHECK(s.bad_epochs == 1);
  CHECK_NEAR(nic_sched_lr(&s, 5, 0.6f), 0.001, 1e-9); /* equal is not better: bad 2 */
  CHECK_NEAR(nic_sched_lr(&s, 6, 0.7f), 0.001, 1e-9); /* best 0.7 */
  CHECK_NEAR(nic_sched_lr(&s, 7, 0.7f), 0.001, 1e-9);
  CHECK_NEAR(nic_sched_lr(&s, 8, 0.7f), 0.0001, 1e-9);

  /* A schedule first consulted after epoch 0 starts from base_lr. */
  nic_schedule late = nic_sched_plateau(0.01f, 0.1f, 0, 0, 1);
  CHECK_NEAR(nic_sched_lr(&late, 3, 0.5f), 0.01, 1e-9);
  CHECK_NEAR(nic_sched_lr(&late, 4, 0.4f), 0.001, 1e-9); /* patience 0 */
}

int main(void) {
  RUN(test_defaults);
  RUN(test_sgd_steps);
  RUN(test_adam_steps);
  RUN(test_adamw_decay);
  RUN(test_clip_norm);
  RUN(test_clip_value);
  RUN(test_large_param);
  RUN(test_skips_buffers);
  RUN(test_state_keyed_by_param);
  RUN(test_errors);
  RUN(test_state_transfer);
  RUN(test_state_errors);
  RUN(test_converge_lsq);
  RUN(test_converge_weight_decay);
  RUN(test_model_step);
  RUN(test_sched_step);
  RUN(test_sched_cosine);
  RUN(test_sched_plateau_min);
  RUN(test_sched_plateau_max);
  return nic_test_finish();
}
