/* Gated attention MIL (Ilse, Tomczak and Welling, "Attention-based Deep
 * Multiple Instance Learning", ICML 2018, eq. 9), forward and backward in
 * plain C.
 *
 * A bag is the n x C matrix of a slide's tissue cells. Per instance k:
 *
 *   h_k = relu(W1 x_k + b1)                          L values
 *   v_k = tanh(Wv h_k + bv),  u_k = sigmoid(Wu h_k + bu)   D values each
 *   s_k = wa . (v_k * u_k) + ba                      the attention logit
 *
 * then a = softmax(s) over the bag, z = sum_k a_k h_k, and y = Wc z + bc.
 *
 * The engine has no layer that mixes instances (the softmax over the bag),
 * so this file does the arithmetic itself; the parameters live in a nic
 * model used as a container, which gives them names, the optimizers and
 * the file format. Work is split over instances (forward) or over weight
 * rows (backward) with OpenMP; every sum runs in a fixed order, so results
 * do not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "slidemodel/sm_internal.h"

/* Below this many instances threads cost more than they save. */
#define PAR_MIN 256

nic_status sm_abmil_build(nic_model **out, int C, int L, int D, int K, nic_ctx *ctx,
                          nic_error *err) {
  if (L > SM_ABMIL_MAX_DIM || D > SM_ABMIL_MAX_DIM || K > SM_ABMIL_MAX_DIM || C < 1 || L < 1 ||
      D < 1 || K < 1)
    return nic_err(err, NIC_EINVAL, "ABMIL dimensions C=%d L=%d D=%d K=%d out of range", C, L, D,
                   K);
  nic_model *m = NULL;
  nic_status st = nic_model_create(&m, C, 1, 1, err);
  if (st != NIC_OK) return st;
  nic_layer_spec s[5] = {nic_spec_dense(L, NIC_ACT_RELU, 0), nic_spec_dense(D, NIC_ACT_TANH, 0),
                         nic_spec_dense(D, NIC_ACT_SIGMOID, 0), nic_spec_dense(1, NIC_ACT_NONE, 0),
                         nic_spec_dense(K, NIC_ACT_NONE, 0)};
  static const char *const names[5] = {"fc", "attn_v", "attn_u", "attn_w", "cls"};
  static const int inputs[5] = {0, 1, 1, 2, 1}; /* attn_w really reads v * u */
  for (int i = 0; i < 5; i++) {
    s[i].name = names[i];
    if (nic_model_add(m, s[i], inputs[i], -1, err) < 0) {
      nic_model_free(m);
      return err ? err->code : NIC_EINVAL;
    }
  }
  /* He-normal everywhere, then Glorot-uniform for the layers that feed
   * tanh, sigmoid and the linear outputs. */
  if ((st = nic_model_init_params(m, ctx, err)) != NIC_OK) {
    nic_model_free(m);
    return st;
  }
  nic_rng *r = nic_ctx_rng(ctx);
  for (int i = 1; i < 5; i++) {
    char n[64];
    snprintf(n, sizeof n, "%s.weight", names[i]);
    nic_param *p = nic_model_param(m, n);
    int64_t fo = p->value.shape[0], fi = p->value.shape[1], cnt = fo * fi;
    double lim = sqrt(6.0 / (double)(fi + fo));
    for (int64_t q = 0; q < cnt; q++)
      p->value.data[q] = (float)((2 * nic_rng_uniform(r) - 1) * lim);
  }
  *out = m;
  return NIC_OK;
}

static nic_param *want(nic_model *m, const char *name, int64_t d0, int64_t d1, nic_error *err) {
  nic_param *p = nic_model_param(m, name);
  int ok = p && p->trainable && p->value.shape[0] == d0 &&
           (d1 ? p->value.ndim == 2 && p->value.shape[1] == d1 : p->value.ndim == 1);
  if (!ok)
    nic_err(err, NIC_EFORMAT, "ABMIL parameter '%s' is missing or has the wrong shape", name);
  return ok ? p : NULL;
}

nic_status sm_abmil_bind(sm_abmil *a, nic_model *m, nic_error *err) {
  memset(a, 0, sizeof *a);
  a->threads = 1;
  nic_param *w1 = nic_model_param(m, "fc.weight"), *wv = nic_model_param(m, "attn_v.weight"),
            *wc = nic_model_param(m, "cls.weight");
  if (!w1 || !wv || !wc || w1->value.ndim != 2 || wv->value.ndim != 2 || wc->value.ndim != 2)
    return nic_err(err, NIC_EFORMAT, "not an ABMIL model: fc, attn_v or cls is missing");
  a->L = (int)w1->value.shape[0];
  a->C = (int)w1->value.shape[1];
  a->D = (int)wv->value.shape[0];
  a->K = (int)wc->value.shape[0];
  if (a->L > SM_ABMIL_MAX_DIM || a->D > SM_ABMIL_MAX_DIM || a->K > SM_ABMIL_MAX_DIM)
    return nic_err(err, NIC_EFORMAT, "ABMIL dimensions too large");
  int L = a->L, D = a->D;
  if (!(a->w1 = want(m, "fc.weight", L, a->C, err)) || !(a->b1 = want(m, "fc.bias", L, 0, err)) ||
      !(a->wv = want(m, "attn_v.weight", D, L, err)) ||
      !(a->bv = want(m, "attn_v.bias", D, 0, err)) ||
      !(a->wu = want(m, "attn_u.weight", D, L, err)) ||
      !(a->bu = want(m, "attn_u.bias", D, 0, err)) ||
      !(a->wa = want(m, "attn_w.weight", 1, D, err)) ||
      !(a->ba = want(m, "attn_w.bias", 1, 0, err)) ||
      !(a->wc = want(m, "cls.weight", a->K, L, err)) ||
      !(a->bc = want(m, "cls.bias", a->K, 0, err)))
    return NIC_EFORMAT;
  return NIC_OK;
}

void sm_abmil_release(sm_abmil *a) {
  free(a->h), free(a->v), free(a->u), free(a->s), free(a->a);
  free(a->wt), free(a->dh), free(a->dg);
  a->h = a->v = a->u = a->s = a->a = a->wt = a->dh = a->dg = NULL;
  a->cap = 0;
  a->wt_cap = 0;
}

static nic_status reserve(sm_abmil *a, int64_t n, nic_error *err) {
  if (n <= a->cap) return NIC_OK;
  size_t N = (size_t)n;
  float *h = realloc(a->h, sizeof(float) * N * (size_t)a->L);
  if (h) a->h = h;
  float *v = realloc(a->v, sizeof(float) * N * (size_t)a->D);
  if (v) a->v = v;
  float *u = realloc(a->u, sizeof(float) * N * (size_t)a->D);
  if (u) a->u = u;
  float *s = realloc(a->s, sizeof(float) * N);
  if (s) a->s = s;
  float *w = realloc(a->a, sizeof(float) * N);
  if (w) a->a = w;
  if (!h || !v || !u || !s || !w)
    return nic_err(err, NIC_ENOMEM, "ABMIL: out of memory for %lld instances", (long long)n);
  a->cap = n;
  return NIC_OK;
}

/* dst (in x out) = transpose of w (out x in). */
static void transpose(const float *w, int out, int in, float *dst) {
  for (int o = 0; o < out; o++)
    for (int i = 0; i < in; i++) dst[(int64_t)i * out + o] = w[(int64_t)o * in + i];
}

/* y (out) = b + sum_i x[i] * wt[i, :] */
static void affine(const float *x, int in, const float *wt, const float *b, int out, float *y) {
  memcpy(y, b, sizeof(float) * (size_t)out);
  for (int i = 0; i < in; i++) {
    float xv = x[i];
    if (xv == 0.0f) continue;
    const float *w = wt + (int64_t)i * out;
    for (int o = 0; o < out; o++) y[o] += xv * w[o];
  }
}

nic_status sm_abmil_forward(sm_abmil *a, const float *x, int64_t n, float *y, float *attn,
                            nic_error *err) {
  if (n < 1) return nic_err(err, NIC_EINVAL, "ABMIL: an empty bag");
  int C = a->C, L = a->L, D = a->D, K = a->K;
  nic_status st = reserve(a, n, err);
  if (st != NIC_OK) return st;
  size_t wt = (size_t)C * L + 2 * (size_t)L * D;
  if (a->wt_cap < wt) {
    float *p = realloc(a->wt, sizeof(float) * wt);
    if (!p) return nic_err(err, NIC_ENOMEM, "ABMIL: out of memory");
    a->wt = p;
    a->wt_cap = wt;
  }
  float *w1t = a->wt, *wvt = w1t + (size_t)C * L, *wut = wvt + (size_t)L * D;
  transpose(a->w1->value.data, L, C, w1t);
  transpose(a->wv->value.data, D, L, wvt);
  transpose(a->wu->value.data, D, L, wut);
  const float *wa = a->wa->value.data, ba = a->ba->value.data[0];
#pragma omp parallel for num_threads(a->threads) schedule(static) if (n >= PAR_MIN)
  for (int64_t k = 0; k < n; k++) {
    float *h = a->h + k * L, *v = a->v + k * D, *u = a->u + k * D;
    affine(x + k * C, C, w1t, a->b1->value.data, L, h);
    for (int l = 0; l < L; l++) h[l] = h[l] > 0 ? h[l] : 0;
    affine(h, L, wvt, a->bv->value.data, D, v);
    affine(h, L, wut, a->bu->value.data, D, u);
    double s = ba;
    for (int d = 0; d < D; d++) {
      v[d] = tanhf(v[d]);
      u[d] = 1.0f / (1.0f + expf(-u[d]));
      s += (double)wa[d] * v[d] * u[d];
    }
    a->s[k] = (float)s;
  }
  float mx = a->s[0];
  for (int64_t k = 1; k < n; k++) mx = a->s[k] > mx ? a->s[k] : mx;
  double sum = 0;
  for (int64_t k = 0; k < n; k++) sum += exp((double)a->s[k] - mx);
  for (int64_t k = 0; k < n; k++) a->a[k] = (float)(exp((double)a->s[k] - mx) / sum);
  double z[SM_ABMIL_MAX_DIM];
  for (int l = 0; l < L; l++) z[l] = 0;
  for (int64_t k = 0; k < n; k++) {
    double w = a->a[k];
    const float *h = a->h + k * L;
    for (int l = 0; l < L; l++) z[l] += w * h[l];
  }
  for (int l = 0; l < L; l++) a->z[l] = (float)z[l];
  for (int c = 0; c < K; c++) {
    double acc = a->bc->value.data[c];
    const float *w = a->wc->value.data + (int64_t)c * L;
    for (int l = 0; l < L; l++) acc += (double)w[l] * a->z[l];
    y[c] = (float)acc;
  }
  if (attn) memcpy(attn, a->a, sizeof(float) * (size_t)n);
  return NIC_OK;
}

nic_status sm_abmil_backward(sm_abmil *a, const float *x, int64_t n, const float *dy,
                             nic_error *err) {
  int C = a->C, L = a->L, D = a->D, K = a->K;
  if (n < 1 || n > a->cap) return nic_err(err, NIC_EINVAL, "ABMIL backward without its forward");
  float *dh = realloc(a->dh, sizeof(float) * (size_t)n * L);
  if (dh) a->dh = dh;
  float *dg = realloc(a->dg, sizeof(float) * (size_t)n * 2 * D);
  if (dg) a->dg = dg;
  if (!dh || !dg) return nic_err(err, NIC_ENOMEM, "ABMIL: out of memory");
  /* classifier: y = Wc z + bc */
  float dz[SM_ABMIL_MAX_DIM];
  for (int l = 0; l < L; l++) dz[l] = 0;
  for (int c = 0; c < K; c++) {
    a->bc->grad.data[c] += dy[c];
    float *gw = a->wc->grad.data + (int64_t)c * L;
    const float *w = a->wc->value.data + (int64_t)c * L;
    for (int l = 0; l < L; l++) {
      gw[l] += dy[c] * a->z[l];
      dz[l] += dy[c] * w[l];
    }
  }
  /* attention pooling: z = sum a_k h_k, a = softmax(s) */
  double dot = 0;
  float *ds = a->s; /* the logits are not needed any more: reuse for ds */
  for (int64_t k = 0; k < n; k++) {
    const float *h = a->h + k * L;
    double da = 0;
    for (int l = 0; l < L; l++) da += (double)dz[l] * h[l];
    ds[k] = (float)da;
    dot += a->a[k] * da;
  }
  for (int64_t k = 0; k < n; k++) ds[k] = (float)(a->a[k] * (ds[k] - dot));
  /* gate: s = wa . (v * u) + ba */
  const float *wa = a->wa->value.data;
  double gba = 0;
  for (int64_t k = 0; k < n; k++) gba += ds[k];
  a->ba->grad.data[0] += (float)gba;
#pragma omp parallel for num_threads(a->threads) schedule(static) if (n >= PAR_MIN)
  for (int d = 0; d < D; d++) {
    double g = 0;
    for (int64_t k = 0; k < n; k++) g += (double)ds[k] * a->v[k * D + d] * a->u[k * D + d];
    a->wa->grad.data[d] += (float)g;
  }
  /* pre-activation gradients of v (tanh) and u (sigmoid), n x 2D */
#pragma omp parallel for num_threads(a->threads) schedule(static) if (n >= PAR_MIN)
  for (int64_t k = 0; k < n; k++) {
    const float *v = a->v + k * D, *u = a->u + k * D;
    float *gv = a->dg + k * 2 * D, *gu = gv + D;
    for (int d = 0; d < D; d++) {
      float g = ds[k] * wa[d];
      gv[d] = g * u[d] * (1.0f - v[d] * v[d]);
      gu[d] = g * v[d] * u[d] * (1.0f - u[d]);
    }
  }
  /* Wv, Wu, bv, bu: rows in parallel, instances summed in order */
#pragma omp parallel for num_threads(a->threads) schedule(static) if (n >= PAR_MIN)
  for (int r = 0; r < 2 * D; r++) {
    int d = r % D;
    nic_param *w = r < D ? a->wv : a->wu, *b = r < D ? a->bv : a->bu;
    float *gw = w->grad.data + (int64_t)d * L;
    double gb = 0;
    for (int64_t k = 0; k < n; k++) {
      float g = a->dg[k * 2 * D + r];
      if (g == 0.0f) continue;
      gb += g;
      const float *h = a->h + k * L;
      for (int l = 0; l < L; l++) gw[l] += g * h[l];
    }
    b->grad.data[d] += (float)gb;
  }
  /* dh_k = a_k dz + Wv^T gv_k + Wu^T gu_k, masked by relu */
  const float *wv = a->wv->value.data, *wu = a->wu->value.data;
#pragma omp parallel for num_threads(a->threads) schedule(static) if (n >= PAR_MIN)
  for (int64_t k = 0; k < n; k++) {
    float *o = a->dh + k * L;
    const float *gv = a->dg + k * 2 * D, *gu = gv + D, *h = a->h + k * L;
    for (int l = 0; l < L; l++) o[l] = a->a[k] * dz[l];
    for (int d = 0; d < D; d++) {
      const float *rv = wv + (int64_t)d * L, *ru = wu + (int64_t)d * L;
      float cv = gv[d], cu = gu[d];
      for (int l = 0; l < L; l++) o[l] += cv * rv[l] + cu * ru[l];
    }
    for (int l = 0; l < L; l++)
      if (h[l] <= 0) o[l] = 0;
  }
  /* W1, b1 */
#pragma omp parallel for num_threads(a->threads) schedule(static) if (n >= PAR_MIN)
  for (int l = 0; l < L; l++) {
    float *gw = a->w1->grad.data + (int64_t)l * C;
    double gb = 0;
    for (int64_t k = 0; k < n; k++) {
      float g = a->dh[k * L + l];
      if (g == 0.0f) continue;
      gb += g;
      const float *xk = x + k * C;
      for (int c = 0; c < C; c++) gw[c] += g * xk[c];
    }
    a->b1->grad.data[l] += (float)gb;
  }
  return NIC_OK;
}
