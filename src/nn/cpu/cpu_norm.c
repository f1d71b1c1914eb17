/* BATCHNORM on 2-D (N x F) or 4-D (N x C x H x W) input, in the input's own
 * layout (blocked stays blocked).
 *
 * Training normalises with the batch statistics, which oneDNN returns and we
 * keep in B_MEAN/B_VAR for backward, and updates the running statistics the
 * Keras way: running = momentum * running + (1 - momentum) * batch, with the
 * unbiased batch variance (as PyTorch and Keras do). Evaluation normalises
 * with the running statistics. gamma and beta are passed as oneDNN's
 * separate scale and shift, so the plain parameter tensors are used as is.
 *
 * Buffers: B_MEAN, B_VAR, B_DDST, B_DW (d gamma), B_DB (d beta), B_TMP. */
#include "nn/cpu/cpu.h"

static void channel_md(dnnl_memory_desc_t *md, int64_t c) {
  cpu_tag_md(md, 1, &c, dnnl_a);
}

static nic_status build_forward(cpu_backend *b, const nic_layer *l, cpu_plan *p, int training,
                                nic_error *err) {
  unsigned flags = dnnl_use_scale | dnnl_use_shift;
  if (!training) flags |= dnnl_use_global_stats;
  dnnl_batch_normalization_desc_t d;
  nic_status s = cpu_check(dnnl_batch_normalization_forward_desc_init(
                               &d, training ? dnnl_forward_training : dnnl_forward_inference,
                               &p->in_md[0], l->spec.eps, flags),
                           "describing the batch norm", err);
  if (s != NIC_OK) return s;
  return cpu_make(b, &d, NULL, NULL, &p->pd[P_FWD], &p->prim[P_FWD], "creating the batch norm",
                  err);
}

/* running = m * running + (1 - m) * batch, with the unbiased variance. */
static void update_running(nic_layer *l, const float *mean, const float *var, int64_t count) {
  double m = l->spec.momentum, unbias = count > 1 ? (double)count / (double)(count - 1) : 1.0;
  float *rm = l->running_mean->value.data, *rv = l->running_var->value.data;
  int64_t c = l->running_mean->value.shape[0];
  for (int64_t i = 0; i < c; i++) {
    rm[i] = (float)(m * rm[i] + (1 - m) * mean[i]);
    rv[i] = (float)(m * rv[i] + (1 - m) * var[i] * unbias);
  }
}

nic_status cpu_bn_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                          const nic_tensor *const in[2], nic_tensor *out, int training,
                          nic_rng *rng, nic_error *err) {
  const nic_tensor *x = in[0];
  nic_status s = NIC_OK;
  if (!p->prim[P_FWD] && (s = build_forward(b, l, p, training, err)) != NIC_OK) return s;
  const dnnl_memory_desc_t *dmd = cpu_pd_md(p->pd[P_FWD], dnnl_query_dst_md, 0);
  int64_t c = x->shape[1];
  dnnl_memory_desc_t cmd;
  channel_md(&cmd, c);
  if ((s = cpu_tensor_set(out, x->ndim, x->shape, dmd, err)) != NIC_OK) return s;
  const float *mean = l->running_mean->value.data, *var = l->running_var->value.data;
  if (training) {
    if ((s = cpu_buf(&st->buf[B_MEAN], sizeof(float) * (size_t)c, err)) != NIC_OK ||
        (s = cpu_buf(&st->buf[B_VAR], sizeof(float) * (size_t)c, err)) != NIC_OK)
      return s;
    mean = st->buf[B_MEAN].data;
    var = st->buf[B_VAR].data;
  }
  cpu_arg args[6] = {{DNNL_ARG_SRC, &p->in_md[0], x->data},
                     {DNNL_ARG_DST, dmd, out->data},
                     {DNNL_ARG_SCALE, &cmd, l->gamma->value.data},
                     {DNNL_ARG_SHIFT, &cmd, l->beta->value.data},
                     {DNNL_ARG_MEAN, &cmd, mean},
                     {DNNL_ARG_VARIANCE, &cmd, var}};
  if ((s = cpu_exec(b, p->prim[P_FWD], 6, args, err)) != NIC_OK) return s;
  if (training) update_running(l, mean, var, nic_tensor_numel(x) / c);
  return NIC_OK;
}

static nic_status build_backward(cpu_backend *b, const nic_layer *l, cpu_plan *p, nic_error *err) {
  dnnl_batch_normalization_desc_t d;
  nic_status s = cpu_check(
      dnnl_batch_normalization_backward_desc_init(&d, dnnl_backward, &p->in_md[0], &p->in_md[0],
                                                  l->spec.eps, dnnl_use_scale | dnnl_use_shift),
      "describing the batch norm backward", err);
  if (s != NIC_OK) return s;
  return cpu_make(b, &d, NULL, p->pd[P_FWD], &p->pd[P_BWD_DATA], &p->prim[P_BWD_DATA],
                  "creating the batch norm backward", err);
}

nic_status cpu_bn_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                           const nic_tensor *const in[2], const nic_tensor *out,
                           const nic_tensor *dout, nic_tensor *const din[2], nic_error *err) {
  const nic_tensor *x = in[0];
  nic_status s = NIC_OK;
  if (!p->prim[P_BWD_DATA] && (s = build_backward(b, l, p, err)) != NIC_OK) return s;
  const dnnl_memory_desc_t *xmd = &p->in_md[0];
  int64_t c = x->shape[1];
  dnnl_memory_desc_t cmd, dmd;
  channel_md(&cmd, c);
  cpu_tensor_md(dout, &dmd);
  const void *dd;
  if ((s = cpu_ensure(b, &dmd, dout->data, xmd, &st->buf[B_DDST], &dd, err)) != NIC_OK ||
      (s = cpu_buf(&st->buf[B_DW], sizeof(float) * (size_t)c, err)) != NIC_OK ||
      (s = cpu_buf(&st->buf[B_DB], sizeof(float) * (size_t)c, err)) != NIC_OK)
    return s;
  /* oneDNN always computes d(input); without a taker it goes to scratch. */
  void *dx;
  if (din[0]) {
    if ((s = cpu_tensor_set(din[0], x->ndim, x->shape, xmd, err)) != NIC_OK) return s;
    dx = din[0]->data;
  } else {
    if ((s = cpu_buf(&st->buf[B_TMP], dnnl_memory_desc_get_size(xmd), err)) != NIC_OK) return s;
    dx = st->buf[B_TMP].data;
  }
  /* oneDNN 2.x counts the shift as an input of backward too. */
  cpu_arg args[9] = {{DNNL_ARG_SRC, xmd, x->data},
                     {DNNL_ARG_MEAN, &cmd, st->buf[B_MEAN].data},
                     {DNNL_ARG_VARIANCE, &cmd, st->buf[B_VAR].data},
                     {DNNL_ARG_SCALE, &cmd, l->gamma->value.data},
                     {DNNL_ARG_SHIFT, &cmd, l->beta->value.data},
                     {DNNL_ARG_DIFF_DST, xmd, dd},
                     {DNNL_ARG_DIFF_SRC, xmd, dx},
                     {DNNL_ARG_DIFF_SCALE, &cmd, st->buf[B_DW].data},
                     {DNNL_ARG_DIFF_SHIFT, &cmd, st->buf[B_DB].data}};
  if ((s = cpu_exec(b, p->prim[P_BWD_DATA], 9, args, err)) != NIC_OK) return s;
  cpu_add_floats(b, l->gamma->grad.data, st->buf[B_DW].data, (size_t)c);
  cpu_add_floats(b, l->beta->grad.data, st->buf[B_DB].data, (size_t)c);
  return NIC_OK;
}
