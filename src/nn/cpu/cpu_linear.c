/* CONV2D and DENSE: the layers with weights. Both run the same way, only the
 * oneDNN operation differs (convolution vs inner product):
 *
 *   forward   src (any layout) -> [conv | ip] + bias -> fused activation
 *             (an eltwise post-op) -> dst in the layout oneDNN chose
 *   backward  dout -> eltwise backward on the saved output (the *_use_dst
 *             algorithms, so no pre-activation copy is kept) -> backward
 *             data (only when din is wanted) and backward weights, whose
 *             result is added into the plain weight/bias gradients.
 *
 * Weights are stored plain; they are reordered into the primitive's layout
 * on every call. That is a few hundred KB per layer, negligible next to the
 * convolution itself, and it can never go stale when an optimizer, a
 * gradient check or a weight import changes the values.
 *
 * Buffers: B_SRC (input in the forward layout, kept for backward weights),
 * B_SRC2, B_W, B_WB, B_DDST, B_DDST2, B_DPRE, B_DW, B_DB, B_TMP. */
#include <string.h>

#include "nn/cpu/cpu.h"

static int is_conv(const nic_layer *l) {
  return l->spec.kind == NIC_LAYER_CONV2D;
}

/* Weight dims as oneDNN sees them. A grouped convolution has a leading
 * group dimension; its plain bytes are those of [out, in/groups, kh, kw].
 * A dense layer on 4-D input has [out, c, h, w], which is [out, in] with the
 * input flattened in NCHW order. */
static int weight_dims(const nic_layer *l, const nic_tensor *x, int64_t *d) {
  const nic_layer_spec *s = &l->spec;
  if (is_conv(l)) {
    int64_t c = x->shape[1], g = s->groups;
    if (g == 1) {
      d[0] = s->out, d[1] = c, d[2] = s->kernel[0], d[3] = s->kernel[1];
      return 4;
    }
    d[0] = g, d[1] = s->out / g, d[2] = c / g, d[3] = s->kernel[0], d[4] = s->kernel[1];
    return 5;
  }
  d[0] = s->out;
  for (int i = 1; i < x->ndim; i++) d[i] = x->shape[i];
  return x->ndim;
}

static void any_md(dnnl_memory_desc_t *md, int ndim, const int64_t *shape) {
  cpu_tag_md(md, ndim, shape, dnnl_format_tag_any);
}

static void weight_plain_md(const nic_layer *l, const nic_tensor *x, dnnl_memory_desc_t *md) {
  static const dnnl_format_tag_t tags[] = {0, dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd, dnnl_abcde};
  int64_t d[5];
  int nd = weight_dims(l, x, d);
  cpu_tag_md(md, nd, d, tags[nd]);
}

/* The output shape for input x: [N, out_shape...]. */
static void out_shape(const nic_layer *l, const nic_tensor *x, int64_t *shape) {
  memcpy(shape, l->out_shape, sizeof l->out_shape);
  shape[0] = x->shape[0];
}

/* Memory descriptors of an operation with every layout left to oneDNN. */
typedef struct linear_mds {
  dnnl_memory_desc_t src, w, bias, dst;
  dnnl_dims_t strides, pad_l, pad_r;
} linear_mds;

static void linear_mds_init(const nic_layer *l, const nic_tensor *x, linear_mds *m) {
  int64_t d[5], os[NIC_MAX_DIMS], o = l->spec.out;
  any_md(&m->src, x->ndim, x->shape);
  any_md(&m->w, weight_dims(l, x, d), d);
  cpu_tag_md(&m->bias, 1, &o, dnnl_a);
  out_shape(l, x, os);
  any_md(&m->dst, l->out_ndim, os);
  for (int i = 0; i < 2; i++) {
    m->strides[i] = l->spec.stride[i];
    m->pad_l[i] = l->spec.pad[i];     /* top, left */
    m->pad_r[i] = l->spec.pad[i + 2]; /* bottom, right */
  }
}

static nic_status build_forward(cpu_backend *b, const nic_layer *l, cpu_plan *p,
                                const nic_tensor *x, int training, nic_error *err) {
  linear_mds m;
  linear_mds_init(l, x, &m);
  const dnnl_memory_desc_t *bias = l->bias ? &m.bias : NULL;
  dnnl_prop_kind_t prop = training ? dnnl_forward_training : dnnl_forward_inference;
  union {
    dnnl_convolution_desc_t conv;
    dnnl_inner_product_desc_t ip;
  } d;
  nic_status s;
  if (is_conv(l))
    s = cpu_check(dnnl_convolution_forward_desc_init(&d.conv, prop, dnnl_convolution_direct, &m.src,
                                                     &m.w, bias, &m.dst, m.strides, m.pad_l,
                                                     m.pad_r),
                  "describing the convolution", err);
  else
    s = cpu_check(dnnl_inner_product_forward_desc_init(&d.ip, prop, &m.src, &m.w, bias, &m.dst),
                  "describing the inner product", err);
  if (s != NIC_OK) return s;
  /* The activation runs as a post-op on the freshly computed tile. */
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_alg_kind_t alg;
  float a;
  if (cpu_act_alg(l->spec.act, l->spec.alpha, 0, &alg, &a)) {
    s = cpu_check(dnnl_primitive_attr_create(&attr), "creating attributes", err);
    if (s == NIC_OK) s = cpu_check(dnnl_post_ops_create(&po), "creating post-ops", err);
    if (s == NIC_OK)
      s = cpu_check(dnnl_post_ops_append_eltwise(po, 1.0f, alg, a, 0.0f), "adding an eltwise", err);
    if (s == NIC_OK)
      s = cpu_check(dnnl_primitive_attr_set_post_ops(attr, po), "setting post-ops", err);
  }
  if (s == NIC_OK)
    s = cpu_make(b, &d, attr, NULL, &p->pd[P_FWD], &p->prim[P_FWD],
                 is_conv(l) ? "creating the convolution" : "creating the inner product", err);
  if (po) dnnl_post_ops_destroy(po);
  if (attr) dnnl_primitive_attr_destroy(attr);
  return s;
}

nic_status cpu_linear_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                              const nic_tensor *const in[2], nic_tensor *out, int training,
                              nic_rng *rng, nic_error *err) {
  const nic_tensor *x = in[0];
  dnnl_alg_kind_t alg;
  float a;
  if (training && l->spec.act != NIC_ACT_NONE &&
      !cpu_act_alg(l->spec.act, l->spec.alpha, 1, &alg, &a))
    return nic_err(err, NIC_EUNSUPPORTED,
                   "a fused activation with a negative slope cannot be trained; "
                   "use a separate activation layer");
  nic_status s = NIC_OK;
  if (!p->prim[P_FWD] && (s = build_forward(b, l, p, x, training, err)) != NIC_OK) return s;
  dnnl_primitive_desc_t pd = p->pd[P_FWD];
  const dnnl_memory_desc_t *smd = cpu_pd_md(pd, dnnl_query_src_md, 0);
  const dnnl_memory_desc_t *wmd = cpu_pd_md(pd, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *dmd = cpu_pd_md(pd, dnnl_query_dst_md, 0);
  dnnl_memory_desc_t wplain;
  weight_plain_md(l, x, &wplain);
  const void *src, *w;
  if ((s = cpu_ensure(b, &p->in_md[0], x->data, smd, &st->buf[B_SRC], &src, err)) != NIC_OK ||
      (s = cpu_ensure(b, &wplain, l->weight->value.data, wmd, &st->buf[B_W], &w, err)) != NIC_OK)
    return s;
  st->src_in_buf = src != (const void *)x->data;
  int64_t os[NIC_MAX_DIMS];
  out_shape(l, x, os);
  if ((s = cpu_tensor_set(out, l->out_ndim, os, dmd, err)) != NIC_OK) return s;
  cpu_arg args[4] = {
      {DNNL_ARG_SRC, smd, src}, {DNNL_ARG_WEIGHTS, wmd, w}, {DNNL_ARG_DST, dmd, out->data}};
  int n = 3;
  if (l->bias) {
    args[n].id = DNNL_ARG_BIAS;
    args[n].md = cpu_pd_md(pd, dnnl_query_weights_md, 1);
    args[n++].ptr = l->bias->value.data;
  }
  return cpu_exec(b, p->prim[P_FWD], n, args, err);
}

/* ---- backward ----------------------------------------------------------------- */

static nic_status build_act_backward(cpu_backend *b, const nic_layer *l, cpu_plan *p,
                                     const dnnl_memory_desc_t *omd, nic_error *err) {
  dnnl_alg_kind_t alg;
  float a;
  cpu_act_alg(l->spec.act, l->spec.alpha, 1, &alg, &a); /* checked by the forward */
  dnnl_eltwise_desc_t fd, bd;
  dnnl_primitive_desc_t hint = NULL;
  /* A backward primitive needs a forward one as a hint: describe the fused
   * activation as if it had run on its own. */
  nic_status s =
      cpu_check(dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training, alg, omd, a, 0),
                "describing the activation", err);
  if (s == NIC_OK) s = cpu_make(b, &fd, NULL, NULL, &hint, NULL, "creating the activation", err);
  if (s == NIC_OK)
    s = cpu_check(dnnl_eltwise_backward_desc_init(&bd, alg, omd, omd, a, 0),
                  "describing the activation backward", err);
  if (s == NIC_OK)
    s = cpu_make(b, &bd, NULL, hint, &p->pd[P_ACT_BWD], &p->prim[P_ACT_BWD],
                 "creating the activation backward", err);
  if (hint) dnnl_primitive_desc_destroy(hint);
  return s;
}

static nic_status build_backward_data(cpu_backend *b, const nic_layer *l, cpu_plan *p,
                                      const nic_tensor *x, nic_error *err) {
  linear_mds m;
  linear_mds_init(l, x, &m);
  union {
    dnnl_convolution_desc_t conv;
    dnnl_inner_product_desc_t ip;
  } d;
  nic_status s;
  if (is_conv(l))
    s = cpu_check(dnnl_convolution_backward_data_desc_init(&d.conv, dnnl_convolution_direct, &m.src,
                                                           &m.w, &m.dst, m.strides, m.pad_l,
                                                           m.pad_r),
                  "describing the convolution backward data", err);
  else
    s = cpu_check(dnnl_inner_product_backward_data_desc_init(&d.ip, &m.src, &m.w, &m.dst),
                  "describing the inner product backward data", err);
  if (s != NIC_OK) return s;
  return cpu_make(b, &d, NULL, p->pd[P_FWD], &p->pd[P_BWD_DATA], &p->prim[P_BWD_DATA],
                  "creating the backward data primitive", err);
}

static nic_status build_backward_weights(cpu_backend *b, const nic_layer *l, cpu_plan *p,
                                         const nic_tensor *x, nic_error *err) {
  linear_mds m;
  linear_mds_init(l, x, &m);
  const dnnl_memory_desc_t *bias = l->bias ? &m.bias : NULL;
  union {
    dnnl_convolution_desc_t conv;
    dnnl_inner_product_desc_t ip;
  } d;
  nic_status s;
  if (is_conv(l))
    s = cpu_check(dnnl_convolution_backward_weights_desc_init(&d.conv, dnnl_convolution_direct,
                                                              &m.src, &m.w, bias, &m.dst, m.strides,
                                                              m.pad_l, m.pad_r),
                  "describing the convolution backward weights", err);
  else
    s = cpu_check(dnnl_inner_product_backward_weights_desc_init(&d.ip, &m.src, &m.w, bias, &m.dst),
                  "describing the inner product backward weights", err);
  if (s != NIC_OK) return s;
  return cpu_make(b, &d, NULL, p->pd[P_FWD], &p->pd[P_BWD_W], &p->prim[P_BWD_W],
                  "creating the backward weights primitive", err);
}

/* d(loss)/d(pre-activation): dout through the fused activation's backward,
 * or dout itself without one. */
static nic_status grad_before_act(cpu_backend *b, const nic_layer *l, cpu_state *st, cpu_plan *p,
                                  const nic_tensor *out, const nic_tensor *dout,
                                  dnnl_memory_desc_t *gmd, const void **g, nic_error *err) {
  cpu_tensor_md(dout, gmd);
  *g = dout->data;
  if (l->spec.act == NIC_ACT_NONE) return NIC_OK;
  dnnl_memory_desc_t omd;
  cpu_tensor_md(out, &omd);
  nic_status s = NIC_OK;
  if (!p->prim[P_ACT_BWD] && (s = build_act_backward(b, l, p, &omd, err)) != NIC_OK) return s;
  const void *dd;
  if ((s = cpu_ensure(b, gmd, dout->data, &omd, &st->buf[B_DDST], &dd, err)) != NIC_OK ||
      (s = cpu_buf(&st->buf[B_DPRE], dnnl_memory_desc_get_size(&omd), err)) != NIC_OK)
    return s;
  cpu_arg args[3] = {{DNNL_ARG_DST, &omd, out->data},
                     {DNNL_ARG_DIFF_DST, &omd, dd},
                     {DNNL_ARG_DIFF_SRC, &omd, st->buf[B_DPRE].data}};
  if ((s = cpu_exec(b, p->prim[P_ACT_BWD], 3, args, err)) != NIC_OK) return s;
  *gmd = omd;
  *g = st->buf[B_DPRE].data;
  return NIC_OK;
}

/* dout as a backward primitive wants it (`want`): g itself when its layout
 * `gmd` already is that, the copy `have` made for the other backward
 * primitive when that one wanted the same layout, or a new copy in buf. */
static nic_status dout_as(cpu_backend *b, const dnnl_memory_desc_t *gmd, const void *g,
                          const dnnl_memory_desc_t *have_md, const void *have,
                          const dnnl_memory_desc_t *want, nic_tensor *buf, const void **out,
                          nic_error *err) {
  if (have_md && dnnl_memory_desc_equal(have_md, want)) {
    *out = have;
    return NIC_OK;
  }
  return cpu_ensure(b, gmd, g, want, buf, out, err);
}

/* Adds d(loss)/d(weights) and d(loss)/d(bias) into the plain gradients, from
 * g (the gradient before the activation, laid out as gmd); gd_md/gd: g as
 * backward data read it, reused when this primitive wants the same layout. */
static nic_status backward_weights(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                                   const nic_tensor *x, const dnnl_memory_desc_t *gmd,
                                   const void *g, const dnnl_memory_desc_t *gd_md, const void *gd,
                                   nic_error *err) {
  nic_status s = NIC_OK;
  if (!p->prim[P_BWD_W] && (s = build_backward_weights(b, l, p, x, err)) != NIC_OK) return s;
  dnnl_primitive_desc_t pd = p->pd[P_BWD_W];
  const dnnl_memory_desc_t *smd = cpu_pd_md(pd, dnnl_query_src_md, 0);
  const dnnl_memory_desc_t *ddmd = cpu_pd_md(pd, dnnl_query_diff_dst_md, 0);
  const dnnl_memory_desc_t *dwmd = cpu_pd_md(pd, dnnl_query_diff_weights_md, 0);
  /* The input as this primitive wants it: often the forward already made
   * exactly that copy. */
  const void *src;
  const dnnl_memory_desc_t *fsmd = cpu_pd_md(p->pd[P_FWD], dnnl_query_src_md, 0);
  if (st->src_in_buf && dnnl_memory_desc_equal(fsmd, smd))
    src = st->buf[B_SRC].data;
  else if ((s = cpu_ensure(b, &p->in_md[0], x->data, smd, &st->buf[B_SRC2], &src, err)) != NIC_OK)
    return s;
  const void *gw;
  if ((s = dout_as(b, gmd, g, gd_md, gd, ddmd, &st->buf[B_TMP], &gw, err)) != NIC_OK ||
      (s = cpu_buf(&st->buf[B_DW], dnnl_memory_desc_get_size(dwmd), err)) != NIC_OK ||
      (s = cpu_buf(&st->buf[B_DB], sizeof(float) * (size_t)l->spec.out, err)) != NIC_OK)
    return s;
  cpu_arg args[4] = {{DNNL_ARG_SRC, smd, src},
                     {DNNL_ARG_DIFF_DST, ddmd, gw},
                     {DNNL_ARG_DIFF_WEIGHTS, dwmd, st->buf[B_DW].data}};
  int n = 3;
  if (l->bias) {
    args[n].id = DNNL_ARG_DIFF_BIAS;
    args[n].md = cpu_pd_md(pd, dnnl_query_diff_weights_md, 1);
    args[n++].ptr = st->buf[B_DB].data;
  }
  if ((s = cpu_exec(b, p->prim[P_BWD_W], n, args, err)) != NIC_OK) return s;
  /* Gradients are added, so that several backward passes accumulate. */
  dnnl_memory_desc_t wplain;
  weight_plain_md(l, x, &wplain);
  if ((s = cpu_reorder(b, dwmd, st->buf[B_DW].data, &wplain, l->weight->grad.data, 1, err)) !=
      NIC_OK)
    return s;
  if (l->bias) cpu_add_floats(b, l->bias->grad.data, st->buf[B_DB].data, (size_t)l->spec.out);
  return NIC_OK;
}

/* dx = d(loss)/d(input) from g (laid out as gmd). On return *gd_md and *gd
 * are g as this primitive read it, for backward weights to reuse. */
static nic_status backward_data(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                                const nic_tensor *x, nic_tensor *dx, const dnnl_memory_desc_t *gmd,
                                const void *g, const dnnl_memory_desc_t **gd_md, const void **gd,
                                nic_error *err) {
  nic_status s = NIC_OK;
  if (!p->prim[P_BWD_DATA] && (s = build_backward_data(b, l, p, x, err)) != NIC_OK) return s;
  dnnl_primitive_desc_t pd = p->pd[P_BWD_DATA];
  const dnnl_memory_desc_t *wmd = cpu_pd_md(pd, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *ddmd = cpu_pd_md(pd, dnnl_query_diff_dst_md, 0);
  const dnnl_memory_desc_t *dsmd = cpu_pd_md(pd, dnnl_query_diff_src_md, 0);
  dnnl_memory_desc_t wplain;
  weight_plain_md(l, x, &wplain);
  const void *w;
  if ((s = cpu_ensure(b, &wplain, l->weight->value.data, wmd, &st->buf[B_WB], &w, err)) != NIC_OK ||
      (s = cpu_ensure(b, gmd, g, ddmd, &st->buf[B_DDST2], gd, err)) != NIC_OK ||
      (s = cpu_tensor_set(dx, x->ndim, x->shape, dsmd, err)) != NIC_OK)
    return s;
  *gd_md = ddmd;
  cpu_arg args[3] = {{DNNL_ARG_DIFF_DST, ddmd, *gd},
                     {DNNL_ARG_WEIGHTS, wmd, w},
                     {DNNL_ARG_DIFF_SRC, dsmd, dx->data}};
  return cpu_exec(b, p->prim[P_BWD_DATA], 3, args, err);
}

/* Backward data (when d(input) is wanted), then backward weights. (The other
 * order, meant to leave d(input) in the last-level cache for the layer
 * below, measured no different on the NIC encoder.) */
nic_status cpu_linear_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                               const nic_tensor *const in[2], const nic_tensor *out,
                               const nic_tensor *dout, nic_tensor *const din[2], nic_error *err) {
  const nic_tensor *x = in[0];
  dnnl_memory_desc_t gmd;
  const void *g;
  nic_status s = grad_before_act(b, l, st, p, out, dout, &gmd, &g, err);
  if (s != NIC_OK) return s;
  const dnnl_memory_desc_t *gd_md = NULL;
  const void *gd = NULL;
  if (din[0] && (s = backward_data(b, l, st, p, x, din[0], &gmd, g, &gd_md, &gd, err)) != NIC_OK)
    return s;
  cpu_prof_phase(b, NIC_PROF_BWD_W);
  return backward_weights(b, l, st, p, x, &gmd, g, gd_md, gd, err);
}
