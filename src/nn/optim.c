/* Optimizers: SGD (momentum, Nesterov), Adam and AdamW, with PyTorch's
 * update rules so that hyper-parameters carry over from published recipes.
 *
 * Gradient clipping happens on the fly: the optimizer never rewrites the
 * caller's gradients, it folds the global-norm scale and the value clamp
 * into the effective gradient it reads. Norm clipping is applied first, then
 * the value clamp, then L2 weight decay (SGD/Adam) is added to the result.
 *
 * Per-param state (momentum buffer, Adam moments, step count) is created
 * lazily on the first step that sees a param and found again by the param's
 * address, which is stable for a model's lifetime. nic_optimizer_get_state
 * and nic_optimizer_set_state read and write it, for checkpoints. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "nn/layer.h"

/* Below this many elements a parallel loop costs more than it saves. */
#define PAR_MIN 65536

/* The public nic_opt_state: param (the key), numel, step (Adam: updates
 * applied, for bias correction), m (SGD momentum buffer or Adam first
 * moment), v (Adam second moment). */
typedef nic_opt_state opt_state;

struct opt_item;

struct nic_optimizer {
  nic_opt_config cfg;
  opt_state *st;
  int nst, cap;
  struct opt_item *items; /* the current step's work (see nic_optimizer_step_params) */
  int cap_items;
};

nic_opt_config nic_opt_default(nic_opt_kind kind, float lr) {
  nic_opt_config c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  c.lr = lr;
  c.momentum = kind == NIC_OPT_SGD ? 0.9f : 0.0f;
  c.beta1 = 0.9f;
  c.beta2 = 0.999f;
  c.eps = 1e-8f;
  return c;
}

/* A float option that must be finite and lie in [lo, hi] (hi_open: [lo, hi)). */
static nic_status check_range(float v, const char *name, double lo, double hi, int hi_open,
                              nic_error *err) {
  int ok = v >= lo && (hi_open ? v < hi : v <= hi) && isfinite(v);
  if (ok) return NIC_OK;
  return nic_err(err, NIC_EINVAL, "optimizer: %s = %g must be in [%g, %g%s", name, (double)v, lo,
                 hi, hi_open ? ")" : "]");
}

static nic_status check_config(const nic_opt_config *c, nic_error *err) {
  nic_status s;
  if (c->kind != NIC_OPT_SGD && c->kind != NIC_OPT_ADAM && c->kind != NIC_OPT_ADAMW)
    return nic_err(err, NIC_EINVAL, "optimizer: unknown kind %d", (int)c->kind);
  if ((s = check_range(c->lr, "lr", 0, HUGE_VAL, 0, err)) != NIC_OK) return s;
  if ((s = check_range(c->weight_decay, "weight_decay", 0, HUGE_VAL, 0, err)) != NIC_OK) return s;
  if ((s = check_range(c->clip_norm, "clip_norm", 0, HUGE_VAL, 0, err)) != NIC_OK) return s;
  if ((s = check_range(c->clip_value, "clip_value", 0, HUGE_VAL, 0, err)) != NIC_OK) return s;
  if (c->kind == NIC_OPT_SGD) {
    if ((s = check_range(c->momentum, "momentum", 0, 1, 1, err)) != NIC_OK) return s;
    if (c->nesterov && c->momentum <= 0)
      return nic_err(err, NIC_EINVAL, "optimizer: Nesterov momentum needs momentum > 0");
    return NIC_OK;
  }
  if ((s = check_range(c->beta1, "beta1", 0, 1, 1, err)) != NIC_OK) return s;
  if ((s = check_range(c->beta2, "beta2", 0, 1, 1, err)) != NIC_OK) return s;
  if (!(c->eps > 0) || isinf(c->eps))
    return nic_err(err, NIC_EINVAL, "optimizer: eps = %g must be finite and > 0", (double)c->eps);
  return NIC_OK;
}

nic_status nic_optimizer_create(nic_optimizer **out, const nic_opt_config *cfg, nic_error *err) {
  if (!out || !cfg) return nic_err(err, NIC_EINVAL, "optimizer: NULL argument");
  *out = NULL;
  nic_status s = check_config(cfg, err);
  if (s != NIC_OK) return s;
  nic_optimizer *o = calloc(1, sizeof *o);
  if (!o) return nic_err(err, NIC_ENOMEM, "optimizer: out of memory");
  o->cfg = *cfg;
  *out = o;
  return NIC_OK;
}

void nic_optimizer_free(nic_optimizer *o) {
  if (!o) return;
  for (int i = 0; i < o->nst; i++) {
    free(o->st[i].m);
    free(o->st[i].v);
  }
  free(o->st);
  free(o->items);
  free(o);
}

void nic_optimizer_set_lr(nic_optimizer *o, float lr) {
  o->cfg.lr = lr;
}
float nic_optimizer_lr(const nic_optimizer *o) {
  return o->cfg.lr;
}

/* ---- per-param state ----------------------------------------------------- */

/* Finds the state of p, trying slot `hint` first: params come in the same
 * order every step, so the hint almost always hits and lookup stays O(1). */
static opt_state *find_state(nic_optimizer *o, const nic_param *p, int hint) {
  if (hint < o->nst && o->st[hint].param == p) return &o->st[hint];
  for (int i = 0; i < o->nst; i++)
    if (o->st[i].param == p) return &o->st[i];
  return NULL;
}

static int need_m(const nic_opt_config *c) {
  return c->kind != NIC_OPT_SGD || c->momentum > 0;
}
static int need_v(const nic_opt_config *c) {
  return c->kind != NIC_OPT_SGD;
}

/* Zeroed buffers, as many as the optimizer kind needs. */
static nic_status new_state(nic_optimizer *o, const nic_param *p, int64_t numel, opt_state **out,
                            nic_error *err) {
  if (o->nst == o->cap) {
    int cap = o->cap ? 2 * o->cap : 16;
    opt_state *st = realloc(o->st, (size_t)cap * sizeof *st);
    if (!st) return nic_err(err, NIC_ENOMEM, "optimizer: out of memory");
    o->st = st;
    o->cap = cap;
  }
  opt_state s = {p, numel, 0, NULL, NULL};
  int hm = need_m(&o->cfg), hv = need_v(&o->cfg);
  size_t n = (size_t)(numel > 0 ? numel : 1);
  if (hm) s.m = calloc(n, sizeof(float));
  if (hv) s.v = calloc(n, sizeof(float));
  if ((hm && !s.m) || (hv && !s.v)) {
    free(s.m);
    free(s.v);
    return nic_err(err, NIC_ENOMEM, "optimizer: out of memory for the state of '%s'", p->name);
  }
  o->st[o->nst] = s;
  *out = &o->st[o->nst++];
  return NIC_OK;
}

static nic_status get_state(nic_optimizer *o, const nic_param *p, int hint, opt_state **out,
                            nic_error *err) {
  int64_t numel = nic_tensor_numel(&p->value);
  opt_state *s = find_state(o, p, hint);
  if (!s) return new_state(o, p, numel, out, err);
  if (s->numel != numel)
    return nic_err(err, NIC_EINVAL, "optimizer: param '%s' changed size from %lld to %lld", p->name,
                   (long long)s->numel, (long long)numel);
  *out = s;
  return NIC_OK;
}

/* ---- state export and import (checkpoints) -------------------------------- */

void nic_optimizer_slots(const nic_optimizer *o, int *has_m, int *has_v) {
  if (has_m) *has_m = o ? need_m(&o->cfg) : 0;
  if (has_v) *has_v = o ? need_v(&o->cfg) : 0;
}

int nic_optimizer_num_states(const nic_optimizer *o) {
  return o ? o->nst : 0;
}

nic_status nic_optimizer_get_state(const nic_optimizer *o, int i, nic_opt_state *out,
                                   nic_error *err) {
  if (!o || !out) return nic_err(err, NIC_EINVAL, "optimizer: NULL argument");
  if (i < 0 || i >= o->nst)
    return nic_err(err, NIC_EINVAL, "optimizer: state %d out of range (%d states)", i, o->nst);
  *out = o->st[i];
  return NIC_OK;
}

int nic_optimizer_find_state(const nic_optimizer *o, const nic_param *p, nic_opt_state *out) {
  if (!o || !p) return 0;
  for (int i = 0; i < o->nst; i++)
    if (o->st[i].param == p) {
      if (out) *out = o->st[i];
      return 1;
    }
  return 0;
}

/* A slot given where the kind keeps none, or missing where it keeps one. */
static nic_status check_slot(const char *slot, int given, int needed, const nic_param *p,
                             nic_error *err) {
  if (given == needed) return NIC_OK;
  return nic_err(err, NIC_EINVAL, "optimizer: state of '%s': this optimizer %s slot %s", p->name,
                 needed ? "needs" : "has no", slot);
}

nic_status nic_optimizer_set_state(nic_optimizer *o, const nic_param *p, int64_t step,
                                   const float *m, const float *v, nic_error *err) {
  if (!o || !p) return nic_err(err, NIC_EINVAL, "optimizer: NULL argument");
  if (step < 0)
    return nic_err(err, NIC_EINVAL, "optimizer: state of '%s': step %lld is negative", p->name,
                   (long long)step);
  nic_status s = check_slot("m", m != NULL, need_m(&o->cfg), p, err);
  if (s == NIC_OK) s = check_slot("v", v != NULL, need_v(&o->cfg), p, err);
  opt_state *st = NULL;
  if (s == NIC_OK) s = get_state(o, p, o->nst, &st, err);
  if (s != NIC_OK) return s;
  size_t n = (size_t)st->numel;
  if (m) memcpy(st->m, m, n * sizeof(float));
  if (v) memcpy(st->v, v, n * sizeof(float));
  st->step = o->cfg.kind == NIC_OPT_SGD ? 0 : step;
  return NIC_OK;
}

/* ---- the work of one step ------------------------------------------------ */

/* Elements per work item. A step is cut into chunks of at most CHUNK
 * elements of one param, and one parallel loop covers the chunks of every
 * param: the four 147k-element weights and a dozen 128-element vectors of
 * the NIC encoder then cost one fork/join, not one per param. A chunk's
 * moments and weights (4 x 2 KB) stay in L1 between the passes of an
 * update. */
#define CHUNK 512

/* One trainable param of this step, with the constants of its update. */
typedef struct opt_item {
  float *w;
  const float *g;
  float *m, *v;
  int64_t n;
  float step_size, bc2_sqrt, decay; /* Adam: see adam_chunk */
} opt_item;

static int64_t nchunks(const opt_item *it) {
  return (it->n + CHUNK - 1) / CHUNK;
}

/* A trainable param must have a plain value and a plain grad of its shape. */
static nic_status check_param(const nic_param *p, nic_error *err) {
  if (!p->grad.data || !nic_tensor_same_shape(&p->value, &p->grad))
    return nic_err(err, NIC_EINVAL, "optimizer: trainable param '%s' has no gradient of its shape",
                   p->name);
  if (p->value.layout || p->grad.layout)
    return nic_err(err, NIC_EINVAL, "optimizer: param '%s' is not in plain layout", p->name);
  return NIC_OK;
}

/* Sum of squares of every gradient, in double. Each thread adds up the
 * chunks it is given; the thread sums are added at the end. */
static double sum_squares(const opt_item *items, int nitems, int64_t total) {
  double acc = 0;
#pragma omp parallel reduction(+ : acc) if (total >= PAR_MIN)
  for (int k = 0; k < nitems; k++) {
    const opt_item *it = &items[k];
    int64_t nc = nchunks(it);
#pragma omp for schedule(static) nowait
    for (int64_t c = 0; c < nc; c++) {
      const float *g = it->g + c * CHUNK;
      int64_t len = it->n - c * CHUNK < CHUNK ? it->n - c * CHUNK : CHUNK;
      double part = 0;
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < len; i++) part += (double)g[i] * g[i];
      acc += part;
    }
  }
  return acc;
}

/* How each raw gradient element becomes the one the update uses. */
typedef struct grad_xform {
  float scale; /* global-norm clipping (1 = none) */
  float clip;  /* value clamp (INFINITY = none, which leaves every value, inf included, as is) */
  float l2;    /* L2 weight decay added to the gradient (0 = none) */
} grad_xform;

/* Branch-free, so that the loops around it vectorise. */
static inline float eff_grad(const grad_xform *x, float g, float p) {
  g *= x->scale;
  g = g > x->clip ? x->clip : (g < -x->clip ? -x->clip : g);
  return g + x->l2 * p;
}

/* dst[i] = sqrtf(src[i]). GCC vectorises sqrtf only under -fno-math-errno
 * (a negative argument must be able to set errno), so the loops that call it
 * stay scalar, and Adam is several times slower than memory allows. The
 * packed square root gives the same correctly rounded results. */
static void sqrt_floats(float *dst, const float *src, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_sqrt_ps(_mm512_loadu_ps(src + i)));
#elif defined(__AVX__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_sqrt_ps(_mm256_loadu_ps(src + i)));
#elif defined(__SSE2__)
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(dst + i, _mm_sqrt_ps(_mm_loadu_ps(src + i)));
#endif
  for (; i < n; i++) dst[i] = sqrtf(src[i]);
}

/* ---- update rules -------------------------------------------------------- */

/* PyTorch SGD: buf = momentum*buf + g; step along g + momentum*buf (Nesterov)
 * or buf. A zero-initialised buf makes the first step buf = g, as PyTorch. */
static void sgd_chunk(const nic_opt_config *c, const grad_xform *x, float *w, const float *g,
                      float *buf, int64_t n) {
  float lr = c->lr, mu = c->momentum;
  if (!buf) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) w[i] -= lr * eff_grad(x, g[i], w[i]);
    return;
  }
  int nesterov = c->nesterov;
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    float d = eff_grad(x, g[i], w[i]);
    buf[i] = mu * buf[i] + d;
    d = nesterov ? d + mu * buf[i] : buf[i];
    w[i] -= lr * d;
  }
}

/* PyTorch Adam/AdamW with bias correction:
 *   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
 *   w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * AdamW first shrinks w by (1 - lr*wd), independent of the gradient. Three
 * passes over the chunk (moments, square roots, weights) so that each one
 * vectorises; the gradient's L2 term reads w before the third pass writes
 * it, as in a single pass. */
static void adam_chunk(const nic_opt_config *c, const grad_xform *x, const opt_item *it,
                       int64_t off, int64_t n) {
  float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
  float step_size = it->step_size, bc2_sqrt = it->bc2_sqrt, decay = it->decay;
  float *w = it->w + off, *m = it->m + off, *v = it->v + off;
  const float *g = it->g + off;
  float den[CHUNK];
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    float d = eff_grad(x, g[i], w[i]);
    m[i] = b1 * m[i] + (1 - b1) * d;
    v[i] = b2 * v[i] + (1 - b2) * d * d;
  }
  sqrt_floats(den, v, n);
#pragma omp simd
  for (int64_t i = 0; i < n; i++)
    w[i] = w[i] * decay - step_size * m[i] / (den[i] / bc2_sqrt + eps);
}

/* Applies the update to every chunk of every item, in one parallel loop
 * (see CHUNK). Chunks are independent, so no thread waits between params. */
static void update_all(const nic_opt_config *c, const grad_xform *x, const opt_item *items,
                       int nitems, int64_t total) {
#pragma omp parallel if (total >= PAR_MIN)
  for (int k = 0; k < nitems; k++) {
    const opt_item *it = &items[k];
    int64_t nc = nchunks(it);
#pragma omp for schedule(static) nowait
    for (int64_t ch = 0; ch < nc; ch++) {
      int64_t off = ch * CHUNK, len = it->n - off < CHUNK ? it->n - off : CHUNK;
      if (c->kind == NIC_OPT_SGD)
        sgd_chunk(c, x, it->w + off, it->g + off, it->m ? it->m + off : NULL, len);
      else
        adam_chunk(c, x, it, off, len);
    }
  }
}

/* ---- steps --------------------------------------------------------------- */

/* Room for n items in o->items. */
static nic_status reserve_items(nic_optimizer *o, int n, nic_error *err) {
  if (n <= o->cap_items) return NIC_OK;
  opt_item *p = realloc(o->items, sizeof *p * (size_t)n);
  if (!p) return nic_err(err, NIC_ENOMEM, "optimizer: out of memory");
  o->items = p;
  o->cap_items = n;
  return NIC_OK;
}

nic_status nic_optimizer_step_params(nic_optimizer *o, nic_param **params, int count,
                                     float *grad_norm, nic_error *err) {
  if (!o || (count > 0 && !params)) return nic_err(err, NIC_EINVAL, "optimizer: NULL argument");
  nic_status s = reserve_items(o, count, err);
  if (s != NIC_OK) return s;
  /* The trainable params, checked, as items (the update's constants are
   * filled in once the step is known to go ahead). */
  int nitems = 0;
  int64_t total = 0;
  for (int i = 0; i < count; i++) {
    nic_param *p = params[i];
    if (!p || !p->trainable) continue;
    if ((s = check_param(p, err)) != NIC_OK) return s;
    opt_item *it = &o->items[nitems++];
    memset(it, 0, sizeof *it);
    it->w = p->value.data;
    it->g = p->grad.data;
    it->n = nic_tensor_numel(&p->value);
    total += it->n;
  }
  double norm = sqrt(sum_squares(o->items, nitems, total));
  if (grad_norm) *grad_norm = (float)norm;
  /* A NaN/inf gradient would poison every weight it touches: refuse the step
   * and leave the params as they were, so that the caller can skip the batch. */
  if (!isfinite(norm))
    return nic_err(err, NIC_EINVAL, "optimizer: gradient norm is %g; step skipped", norm);

  const nic_opt_config *c = &o->cfg;
  grad_xform x = {1.0f, c->clip_value > 0 ? c->clip_value : INFINITY,
                  c->kind == NIC_OPT_ADAMW ? 0.0f : c->weight_decay};
  /* PyTorch's clip_grad_norm_: scale by max_norm / (norm + 1e-6) when below 1. */
  if (c->clip_norm > 0 && norm > c->clip_norm) x.scale = (float)(c->clip_norm / (norm + 1e-6));

  /* Resolve every state before touching a weight, so that an error (a param
   * that changed size) leaves the model unchanged rather than half-stepped. */
  opt_state *st = NULL;
  for (int i = 0, k = 0; i < count; i++)
    if (params[i] && params[i]->trainable)
      if ((s = get_state(o, params[i], k++, &st, err)) != NIC_OK) return s;

  for (int i = 0, k = 0; i < count; i++) {
    nic_param *p = params[i];
    if (!p || !p->trainable) continue;
    opt_item *it = &o->items[k];
    st = find_state(o, p, k++); /* exists: resolved above */
    it->m = st->m;
    it->v = st->v;
    if (c->kind == NIC_OPT_SGD) continue;
    st->step++;
    double t = (double)st->step;
    it->step_size = (float)(c->lr / (1 - pow(c->beta1, t)));
    it->bc2_sqrt = (float)sqrt(1 - pow(c->beta2, t));
    it->decay = c->kind == NIC_OPT_ADAMW ? 1 - c->lr * c->weight_decay : 1;
  }
  update_all(c, &x, o->items, nitems, total);
  return NIC_OK;
}

nic_status nic_optimizer_step(nic_optimizer *o, nic_model *m, float *grad_norm, nic_error *err) {
  if (!o || !m) return nic_err(err, NIC_EINVAL, "optimizer: NULL argument");
  if (m->inference_only)
    return nic_err(err, NIC_EINVAL,
                   "optimizer: the model was rewritten for inference and cannot be trained");
  int count = 0;
  nic_param **params = nic_model_params(m, &count);
  return nic_optimizer_step_params(o, params, count, grad_norm, err);
}
