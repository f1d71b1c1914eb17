/* POOL (average excluding padding, or max) and GLOBALPOOL (a pooling whose
 * window is the whole image) on the input's own layout. Max pooling in
 * training keeps oneDNN's workspace (where each maximum came from) in B_WS
 * for backward. GLOBALPOOL's result is N x C x 1 x 1 in the input's layout;
 * it is converted to the plain N x C the layer promises.
 *
 * Buffers: B_WS, B_TMP (global result before conversion), B_DDST, B_DDST2. */
#include "nn/cpu/cpu.h"

typedef struct pool_geom {
  dnnl_alg_kind_t alg;
  dnnl_dims_t kernel, strides, pad_l, pad_r;
  int64_t out[4]; /* N, C, OH, OW */
} pool_geom;

static void geometry(const nic_layer *l, const nic_tensor *x, pool_geom *g) {
  const nic_layer_spec *s = &l->spec;
  int global = s->kind == NIC_LAYER_GLOBALPOOL;
  g->alg = s->pool == NIC_POOL_MAX ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding;
  for (int i = 0; i < 2; i++) {
    g->kernel[i] = global ? x->shape[2 + i] : s->kernel[i];
    g->strides[i] = global ? 1 : s->stride[i];
    g->pad_l[i] = global ? 0 : s->pad[i];
    g->pad_r[i] = global ? 0 : s->pad[i + 2];
  }
  g->out[0] = x->shape[0];
  g->out[1] = x->shape[1];
  g->out[2] = global ? 1 : l->out_shape[2];
  g->out[3] = global ? 1 : l->out_shape[3];
}

static int is_max_training(const nic_layer *l, int training) {
  return training && l->spec.pool == NIC_POOL_MAX;
}

static nic_status build_forward(cpu_backend *b, const nic_layer *l, cpu_plan *p,
                                const nic_tensor *x, int training, nic_error *err) {
  pool_geom g;
  geometry(l, x, &g);
  dnnl_memory_desc_t dst;
  cpu_tag_md(&dst, 4, g.out, dnnl_format_tag_any); /* follows the input's layout */
  dnnl_pooling_desc_t d;
  nic_status s = cpu_check(dnnl_pooling_forward_desc_init(
                               &d, training ? dnnl_forward_training : dnnl_forward_inference, g.alg,
                               &p->in_md[0], &dst, g.strides, g.kernel, g.pad_l, g.pad_r),
                           "describing the pooling", err);
  if (s != NIC_OK) return s;
  return cpu_make(b, &d, NULL, NULL, &p->pd[P_FWD], &p->prim[P_FWD], "creating the pooling", err);
}

nic_status cpu_pool_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                            const nic_tensor *const in[2], nic_tensor *out, int training,
                            nic_rng *rng, nic_error *err) {
  const nic_tensor *x = in[0];
  int global = l->spec.kind == NIC_LAYER_GLOBALPOOL;
  nic_status s = NIC_OK;
  if (!p->prim[P_FWD] && (s = build_forward(b, l, p, x, training, err)) != NIC_OK) return s;
  pool_geom g;
  geometry(l, x, &g);
  const dnnl_memory_desc_t *dmd = cpu_pd_md(p->pd[P_FWD], dnnl_query_dst_md, 0);
  void *dst;
  if (global) {
    if ((s = cpu_buf(&st->buf[B_TMP], dnnl_memory_desc_get_size(dmd), err)) != NIC_OK) return s;
    dst = st->buf[B_TMP].data;
  } else {
    if ((s = cpu_tensor_set(out, 4, g.out, dmd, err)) != NIC_OK) return s;
    dst = out->data;
  }
  cpu_arg args[3] = {{DNNL_ARG_SRC, &p->in_md[0], x->data}, {DNNL_ARG_DST, dmd, dst}};
  int n = 2;
  if (is_max_training(l, training)) {
    const dnnl_memory_desc_t *wmd = cpu_pd_md(p->pd[P_FWD], dnnl_query_workspace_md, 0);
    if ((s = cpu_buf(&st->buf[B_WS], dnnl_memory_desc_get_size(wmd), err)) != NIC_OK) return s;
    args[n].id = DNNL_ARG_WORKSPACE;
    args[n].md = wmd;
    args[n++].ptr = st->buf[B_WS].data;
  }
  if ((s = cpu_exec(b, p->prim[P_FWD], n, args, err)) != NIC_OK || !global) return s;
  /* N x C x 1 x 1 in whatever layout -> plain N x C (the same bytes as a
   * plain N x C x 1 x 1). */
  dnnl_memory_desc_t plain4;
  cpu_plain_md(&plain4, 4, g.out);
  if ((s = cpu_tensor_set(out, 2, g.out, NULL, err)) != NIC_OK) return s;
  return cpu_reorder(b, dmd, dst, &plain4, out->data, 0, err);
}

static nic_status build_backward(cpu_backend *b, const nic_layer *l, cpu_plan *p,
                                 const nic_tensor *x, nic_error *err) {
  pool_geom g;
  geometry(l, x, &g);
  const dnnl_memory_desc_t *dmd = cpu_pd_md(p->pd[P_FWD], dnnl_query_dst_md, 0);
  dnnl_pooling_desc_t d;
  nic_status s = cpu_check(dnnl_pooling_backward_desc_init(&d, g.alg, &p->in_md[0], dmd, g.strides,
                                                           g.kernel, g.pad_l, g.pad_r),
                           "describing the pooling backward", err);
  if (s != NIC_OK) return s;
  return cpu_make(b, &d, NULL, p->pd[P_FWD], &p->pd[P_BWD_DATA], &p->prim[P_BWD_DATA],
                  "creating the pooling backward", err);
}

nic_status cpu_pool_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                             const nic_tensor *const in[2], const nic_tensor *out,
                             const nic_tensor *dout, nic_tensor *const din[2], nic_error *err) {
  const nic_tensor *x = in[0];
  if (!din[0]) return NIC_OK; /* no parameters: nothing else to compute */
  nic_status s = NIC_OK;
  if (!p->prim[P_BWD_DATA] && (s = build_backward(b, l, p, x, err)) != NIC_OK) return s;
  const dnnl_memory_desc_t *ddmd = cpu_pd_md(p->pd[P_BWD_DATA], dnnl_query_diff_dst_md, 0);
  const dnnl_memory_desc_t *dsmd = cpu_pd_md(p->pd[P_BWD_DATA], dnnl_query_diff_src_md, 0);
  dnnl_memory_desc_t have;
  const void *data = dout->data;
  if (l->spec.kind == NIC_LAYER_GLOBALPOOL) { /* N x C is a plain N x C x 1 x 1 */
    const float *plain;
    pool_geom g;
    geometry(l, x, &g);
    if ((s = cpu_plain_data(b, dout, &st->buf[B_DDST2], &plain, err)) != NIC_OK) return s;
    cpu_plain_md(&have, 4, g.out);
    data = plain;
  } else {
    cpu_tensor_md(dout, &have);
  }
  const void *dd;
  if ((s = cpu_ensure(b, &have, data, ddmd, &st->buf[B_DDST], &dd, err)) != NIC_OK ||
      (s = cpu_tensor_set(din[0], x->ndim, x->shape, dsmd, err)) != NIC_OK)
    return s;
  cpu_arg args[3] = {{DNNL_ARG_DIFF_DST, ddmd, dd}, {DNNL_ARG_DIFF_SRC, dsmd, din[0]->data}};
  int n = 2;
  if (l->spec.pool == NIC_POOL_MAX) {
    args[n].id = DNNL_ARG_WORKSPACE;
    args[n].md = cpu_pd_md(p->pd[P_FWD], dnnl_query_workspace_md, 0);
    args[n++].ptr = st->buf[B_WS].data;
  }
  return cpu_exec(b, p->prim[P_BWD_DATA], n, args, err);
}
