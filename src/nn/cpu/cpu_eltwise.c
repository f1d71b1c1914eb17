/* The layers without weights that keep the input's layout: ACT, DROPOUT,
 * SPATIAL_DROPOUT and ADD, plus FLATTEN, which is where blocked layouts end
 * (its output is always plain, in NCHW or NHWC order).
 *
 * Buffers: B_SRC, B_SRC2 (ADD inputs converted), B_DDST, B_DDST2, B_MASK. */
#include <string.h>

#include "nn/cpu/cpu.h"

/* Bytes of t as laid out (padding included). */
static size_t phys_bytes(const nic_tensor *t) {
  dnnl_memory_desc_t md;
  cpu_tensor_md(t, &md);
  return dnnl_memory_desc_get_size(&md);
}

/* ---- ACT ------------------------------------------------------------------------ */

/* Training uses the *_use_dst algorithms, whose backward reads the output;
 * a negative leaky slope cannot, and reads the input instead. */
static int act_alg(const nic_layer *l, int training, dnnl_alg_kind_t *alg, float *a) {
  if (training && cpu_act_alg(l->spec.act, l->spec.alpha, 1, alg, a)) return 1;
  cpu_act_alg(l->spec.act, l->spec.alpha, 0, alg, a);
  return 0;
}

nic_status cpu_act_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                           const nic_tensor *const in[2], nic_tensor *out, int training,
                           nic_rng *rng, nic_error *err) {
  const nic_tensor *x = in[0];
  if (l->spec.act == NIC_ACT_NONE) return cpu_copy(x, out, err);
  nic_status s = NIC_OK;
  if (!p->prim[P_FWD]) {
    dnnl_alg_kind_t alg;
    float a;
    act_alg(l, training, &alg, &a);
    dnnl_eltwise_desc_t d;
    s = cpu_check(
        dnnl_eltwise_forward_desc_init(
            &d, training ? dnnl_forward_training : dnnl_forward_inference, alg, &p->in_md[0], a, 0),
        "describing the activation", err);
    if (s == NIC_OK)
      s = cpu_make(b, &d, NULL, NULL, &p->pd[P_FWD], &p->prim[P_FWD], "creating the activation",
                   err);
    if (s != NIC_OK) return s;
  }
  if ((s = cpu_tensor_set(out, x->ndim, x->shape, &p->in_md[0], err)) != NIC_OK) return s;
  cpu_arg args[2] = {{DNNL_ARG_SRC, &p->in_md[0], x->data},
                     {DNNL_ARG_DST, &p->in_md[0], out->data}};
  return cpu_exec(b, p->prim[P_FWD], 2, args, err);
}

nic_status cpu_act_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                            const nic_tensor *const in[2], const nic_tensor *out,
                            const nic_tensor *dout, nic_tensor *const din[2], nic_error *err) {
  const nic_tensor *x = in[0];
  if (!din[0]) return NIC_OK;
  if (l->spec.act == NIC_ACT_NONE) return cpu_copy(dout, din[0], err);
  const dnnl_memory_desc_t *xmd = &p->in_md[0];
  dnnl_alg_kind_t alg;
  float a;
  int use_dst = act_alg(l, 1, &alg, &a);
  nic_status s = NIC_OK;
  if (!p->prim[P_ACT_BWD]) {
    dnnl_eltwise_desc_t d;
    s = cpu_check(dnnl_eltwise_backward_desc_init(&d, alg, xmd, xmd, a, 0),
                  "describing the activation backward", err);
    if (s == NIC_OK)
      s = cpu_make(b, &d, NULL, p->pd[P_FWD], &p->pd[P_ACT_BWD], &p->prim[P_ACT_BWD],
                   "creating the activation backward", err);
    if (s != NIC_OK) return s;
  }
  dnnl_memory_desc_t dmd;
  cpu_tensor_md(dout, &dmd);
  const void *dd;
  if ((s = cpu_ensure(b, &dmd, dout->data, xmd, &st->buf[B_DDST], &dd, err)) != NIC_OK ||
      (s = cpu_tensor_set(din[0], x->ndim, x->shape, xmd, err)) != NIC_OK)
    return s;
  cpu_arg args[3] = {{use_dst ? DNNL_ARG_DST : DNNL_ARG_SRC, xmd, use_dst ? out->data : x->data},
                     {DNNL_ARG_DIFF_DST, xmd, dd},
                     {DNNL_ARG_DIFF_SRC, xmd, din[0]->data}};
  return cpu_exec(b, p->prim[P_ACT_BWD], 3, args, err);
}

/* ---- DROPOUT and SPATIAL_DROPOUT --------------------------------------------------- */

/* Inverted dropout: kept values are scaled by 1/(1-p) during training, so
 * evaluation is the identity. The mask holds 0 or 1/(1-p) per element
 * (DROPOUT: one per physical float, padding included, harmlessly, since
 * padding is zero) or per sample and channel (SPATIAL_DROPOUT, applied with
 * a broadcasting binary multiply that works on any layout). */
static void draw_mask(float *mask, int64_t n, float p, nic_rng *rng) {
  float keep = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < n; i++) mask[i] = nic_rng_uniform(rng) < p ? 0.0f : keep;
}

static void mul_floats(cpu_backend *b, float *dst, const float *x, const float *m, size_t n) {
  long long nn = (long long)n;
#pragma omp parallel for num_threads(b->threads) schedule(static) if (nn > 65536)
  for (long long i = 0; i < nn; i++) dst[i] = x[i] * m[i];
}

/* The channel mask's descriptor: N x C x 1 x 1, plain. */
static void channel_mask_md(const nic_tensor *x, dnnl_memory_desc_t *md) {
  int64_t d[4] = {x->shape[0], x->shape[1], 1, 1};
  cpu_plain_md(md, 4, d);
}

static nic_status build_channel_mul(cpu_backend *b, cpu_plan *p, const nic_tensor *x,
                                    nic_error *err) {
  dnnl_memory_desc_t mmd;
  channel_mask_md(x, &mmd);
  dnnl_binary_desc_t d;
  nic_status s =
      cpu_check(dnnl_binary_desc_init(&d, dnnl_binary_mul, &p->in_md[0], &mmd, &p->in_md[0]),
                "describing the channel mask", err);
  if (s != NIC_OK) return s;
  return cpu_make(b, &d, NULL, NULL, &p->pd[P_FWD], &p->prim[P_FWD], "creating the channel mask",
                  err);
}

/* dst = x * mask, x and dst laid out as the layer's input. */
static nic_status apply_mask(cpu_backend *b, const nic_layer *l, cpu_state *st, cpu_plan *p,
                             const nic_tensor *xt, const void *x, void *dst, nic_error *err) {
  if (l->spec.kind == NIC_LAYER_DROPOUT) {
    mul_floats(b, dst, x, st->buf[B_MASK].data, dnnl_memory_desc_get_size(&p->in_md[0]) / 4);
    return NIC_OK;
  }
  nic_status s = NIC_OK;
  if (!p->prim[P_FWD] && (s = build_channel_mul(b, p, xt, err)) != NIC_OK) return s;
  dnnl_memory_desc_t mmd;
  channel_mask_md(xt, &mmd);
  cpu_arg args[3] = {{DNNL_ARG_SRC_0, &p->in_md[0], x},
                     {DNNL_ARG_SRC_1, &mmd, st->buf[B_MASK].data},
                     {DNNL_ARG_DST, &p->in_md[0], dst}};
  return cpu_exec(b, p->prim[P_FWD], 3, args, err);
}

nic_status cpu_dropout_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                               const nic_tensor *const in[2], nic_tensor *out, int training,
                               nic_rng *rng, nic_error *err) {
  const nic_tensor *x = in[0];
  float prob = l->spec.p;
  st->mask_identity = !training || prob <= 0;
  if (st->mask_identity) return cpu_copy(x, out, err);
  int64_t n = l->spec.kind == NIC_LAYER_DROPOUT ? (int64_t)(phys_bytes(x) / sizeof(float))
                                                : x->shape[0] * x->shape[1];
  nic_status s = cpu_buf(&st->buf[B_MASK], sizeof(float) * (size_t)n, err);
  if (s != NIC_OK) return s;
  draw_mask(st->buf[B_MASK].data, n, prob, rng);
  if ((s = cpu_tensor_set(out, x->ndim, x->shape, &p->in_md[0], err)) != NIC_OK) return s;
  return apply_mask(b, l, st, p, x, x->data, out->data, err);
}

nic_status cpu_dropout_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                                const nic_tensor *const in[2], const nic_tensor *out,
                                const nic_tensor *dout, nic_tensor *const din[2], nic_error *err) {
  const nic_tensor *x = in[0];
  if (!din[0]) return NIC_OK;
  if (st->mask_identity) return cpu_copy(dout, din[0], err);
  dnnl_memory_desc_t dmd;
  cpu_tensor_md(dout, &dmd);
  const void *dd;
  nic_status s;
  if ((s = cpu_ensure(b, &dmd, dout->data, &p->in_md[0], &st->buf[B_DDST], &dd, err)) != NIC_OK ||
      (s = cpu_tensor_set(din[0], x->ndim, x->shape, &p->in_md[0], err)) != NIC_OK)
    return s;
  return apply_mask(b, l, st, p, x, dd, din[0]->data, err);
}

/* ---- FLATTEN ----------------------------------------------------------------------- */

/* The 4-D view of the flattened rows: N x C x H x W with NCHW (abcd) or NHWC
 * (acdb) strides, whose bytes are exactly the plain N x F output. */
static void flat_view_md(const nic_layer *l, const nic_tensor *x, dnnl_memory_desc_t *md) {
  if (x->ndim == 4 && l->spec.order == NIC_FLATTEN_NHWC)
    cpu_tag_md(md, 4, x->shape, dnnl_acdb);
  else
    cpu_plain_md(md, x->ndim, x->shape);
}

nic_status cpu_flatten_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                               const nic_tensor *const in[2], nic_tensor *out, int training,
                               nic_rng *rng, nic_error *err) {
  const nic_tensor *x = in[0];
  int64_t shape[2] = {x->shape[0], nic_tensor_numel(x) / x->shape[0]};
  dnnl_memory_desc_t view;
  flat_view_md(l, x, &view);
  nic_status s = cpu_tensor_set(out, 2, shape, NULL, err);
  if (s == NIC_OK) s = cpu_reorder(b, &p->in_md[0], x->data, &view, out->data, 0, err);
  return s;
}

nic_status cpu_flatten_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                                const nic_tensor *const in[2], const nic_tensor *out,
                                const nic_tensor *dout, nic_tensor *const din[2], nic_error *err) {
  const nic_tensor *x = in[0];
  if (!din[0]) return NIC_OK;
  const float *plain;
  dnnl_memory_desc_t view;
  flat_view_md(l, x, &view);
  /* d(input) goes back in the input's layout, ready for the layer below. */
  nic_status s = cpu_plain_data(b, dout, &st->buf[B_DDST2], &plain, err);
  if (s == NIC_OK) s = cpu_tensor_set(din[0], x->ndim, x->shape, &p->in_md[0], err);
  if (s == NIC_OK) s = cpu_reorder(b, &view, plain, &p->in_md[0], din[0]->data, 0, err);
  return s;
}

/* ---- ADD ------------------------------------------------------------------------------ */

/* The sum takes the layout of a non-plain input (a residual branch's blocked
 * output, typically), converting the other input when it differs. */
nic_status cpu_add_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                           const nic_tensor *const in[2], nic_tensor *out, int training,
                           nic_rng *rng, nic_error *err) {
  const dnnl_memory_desc_t *t = in[0]->layout || !in[1]->layout ? &p->in_md[0] : &p->in_md[1];
  const void *a, *c;
  nic_status s;
  if ((s = cpu_ensure(b, &p->in_md[0], in[0]->data, t, &st->buf[B_SRC], &a, err)) != NIC_OK ||
      (s = cpu_ensure(b, &p->in_md[1], in[1]->data, t, &st->buf[B_SRC2], &c, err)) != NIC_OK ||
      (s = cpu_tensor_set(out, in[0]->ndim, in[0]->shape, t, err)) != NIC_OK)
    return s;
  const float *x = a, *y = c;
  float *o = out->data;
  long long n = (long long)(dnnl_memory_desc_get_size(t) / sizeof(float));
#pragma omp parallel for num_threads(b->threads) schedule(static) if (n > 65536)
  for (long long i = 0; i < n; i++) o[i] = x[i] + y[i];
  return NIC_OK;
}

/* Both inputs receive dout unchanged, in dout's layout. */
nic_status cpu_add_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                            const nic_tensor *const in[2], const nic_tensor *out,
                            const nic_tensor *dout, nic_tensor *const din[2], nic_error *err) {
  for (int i = 0; i < 2; i++) {
    if (!din[i]) continue;
    nic_status s = cpu_copy(dout, din[i], err);
    if (s != NIC_OK) return s;
  }
  return NIC_OK;
}
