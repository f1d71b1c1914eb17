/* The CPU backend on oneDNN 2.x: the engine and stream, the operations table
 * the graph runtime calls, the per-layer plan cache, and the helpers shared
 * by the layer kinds (see cpu.h for the layout policy). */
#include <dnnl_debug.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cpu/cpu.h"

/* ---- small helpers -------------------------------------------------------- */

nic_status cpu_check(dnnl_status_t st, const char *what, nic_error *err) {
  if (st == dnnl_success) return NIC_OK;
  if (st == dnnl_out_of_memory) return nic_err(err, NIC_ENOMEM, "oneDNN: out of memory %s", what);
  return nic_err(err, NIC_EBACKEND, "oneDNN: %s failed (%s)", what, dnnl_status2str(st));
}

void cpu_tag_md(dnnl_memory_desc_t *md, int ndim, const int64_t *shape, dnnl_format_tag_t tag) {
  dnnl_dims_t dims;
  for (int i = 0; i < ndim; i++) dims[i] = shape[i];
  /* Cannot fail for f32 with a tag matching ndim; a zeroed md would make the
   * next oneDNN call fail with a message, which is the right outcome. */
  if (dnnl_memory_desc_init_by_tag(md, ndim, dims, dnnl_f32, tag) != dnnl_success)
    memset(md, 0, sizeof *md);
}

void cpu_plain_md(dnnl_memory_desc_t *md, int ndim, const int64_t *shape) {
  static const dnnl_format_tag_t tags[] = {dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc,
                                           dnnl_abcd};
  cpu_tag_md(md, ndim, shape, tags[ndim]);
}

void cpu_tensor_md(const nic_tensor *t, dnnl_memory_desc_t *md) {
  if (t->layout)
    *md = *(const dnnl_memory_desc_t *)t->layout;
  else
    cpu_plain_md(md, t->ndim, t->shape);
}

nic_status cpu_buf(nic_tensor *buf, size_t bytes, nic_error *err) {
  nic_status s = nic_tensor_reserve(buf, bytes, err);
  if (s == NIC_OK) buf->bytes = bytes;
  return s;
}

nic_status cpu_tensor_set(nic_tensor *t, int ndim, const int64_t *shape,
                          const dnnl_memory_desc_t *md, nic_error *err) {
  dnnl_memory_desc_t plain;
  cpu_plain_md(&plain, ndim, shape);
  if (md && dnnl_memory_desc_equal(md, &plain)) md = NULL; /* plain is stored as NULL */
  size_t bytes = dnnl_memory_desc_get_size(md ? md : &plain);
  nic_status s = nic_tensor_reserve(t, bytes, err);
  if (s != NIC_OK) return s;
  t->ndim = ndim;
  for (int i = 0; i < NIC_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 0;
  t->bytes = bytes;
  if (!md) {
    nic_tensor_set_layout(t, NULL);
    return NIC_OK;
  }
  if (!t->layout) { /* reuse the descriptor allocation across calls */
    void *p = malloc(sizeof *md);
    if (!p) return nic_err(err, NIC_ENOMEM, "out of memory");
    t->layout = p;
  }
  memcpy(t->layout, md, sizeof *md);
  return NIC_OK;
}

nic_status cpu_copy(const nic_tensor *src, nic_tensor *dst, nic_error *err) {
  dnnl_memory_desc_t md;
  cpu_tensor_md(src, &md);
  nic_status s = cpu_tensor_set(dst, src->ndim, src->shape, &md, err);
  if (s == NIC_OK) memcpy(dst->data, src->data, dst->bytes);
  return s;
}

void cpu_add_floats(cpu_backend *b, float *dst, const float *src, size_t n) {
  long long nn = (long long)n;
#pragma omp parallel for num_threads(b->threads) schedule(static) if (nn > 65536)
  for (long long i = 0; i < nn; i++) dst[i] += src[i];
}

int cpu_act_alg(nic_act act, float alpha, int use_dst, dnnl_alg_kind_t *alg, float *a) {
  *a = 0;
  switch (act) {
  case NIC_ACT_RELU:
    *alg = use_dst ? dnnl_eltwise_relu_use_dst_for_bwd : dnnl_eltwise_relu;
    return 1;
  case NIC_ACT_LEAKY_RELU:
    /* With a negative slope the input's sign cannot be read off the output. */
    if (use_dst && alpha < 0) return 0;
    *alg = use_dst ? dnnl_eltwise_relu_use_dst_for_bwd : dnnl_eltwise_relu;
    *a = alpha;
    return 1;
  case NIC_ACT_SIGMOID:
    *alg = use_dst ? dnnl_eltwise_logistic_use_dst_for_bwd : dnnl_eltwise_logistic;
    return 1;
  case NIC_ACT_TANH:
    *alg = use_dst ? dnnl_eltwise_tanh_use_dst_for_bwd : dnnl_eltwise_tanh;
    return 1;
  default:
    return 0;
  }
}

const dnnl_memory_desc_t *cpu_pd_md(dnnl_primitive_desc_t pd, dnnl_query_t what, int index) {
  return dnnl_primitive_desc_query_md(pd, what, index);
}

nic_status cpu_make(cpu_backend *b, const void *op_desc, const_dnnl_primitive_attr_t attr,
                    const_dnnl_primitive_desc_t hint, dnnl_primitive_desc_t *pd,
                    dnnl_primitive_t *prim, const char *what, nic_error *err) {
  nic_status s =
      cpu_check(dnnl_primitive_desc_create(pd, op_desc, attr, b->engine, hint), what, err);
  if (s != NIC_OK) {
    *pd = NULL;
    return s;
  }
  if (!prim) return NIC_OK;
  s = cpu_check(dnnl_primitive_create(prim, *pd), what, err);
  if (s != NIC_OK) {
    dnnl_primitive_desc_destroy(*pd);
    *pd = NULL;
    *prim = NULL;
  }
  return s;
}

/* ---- execution ------------------------------------------------------------ */

#define CPU_MAX_ARGS 12

nic_status cpu_exec(cpu_backend *b, dnnl_primitive_t prim, int nargs, const cpu_arg *args,
                    nic_error *err) {
  /* Memory objects are thin wrappers around our buffers; creating them per
   * call is cheap, and their creation zeroes the padding of padded blocked
   * layouts (e.g. 3 channels in 8-wide blocks) as oneDNN requires. */
  dnnl_exec_arg_t ea[CPU_MAX_ARGS];
  memset(ea, 0, sizeof ea);
  if (nargs > CPU_MAX_ARGS) return nic_err(err, NIC_EINVAL, "too many primitive arguments");
  nic_status s = NIC_OK;
  int made = 0;
  for (; made < nargs && s == NIC_OK; made++) {
    ea[made].arg = args[made].id;
    s = cpu_check(
        dnnl_memory_create(&ea[made].memory, args[made].md, b->engine, (void *)args[made].ptr),
        "creating a memory object", err);
    if (s != NIC_OK) ea[made].memory = NULL;
  }
  double t0 = b->prof.on ? cpu_now() : 0;
  if (s == NIC_OK)
    s = cpu_check(dnnl_primitive_execute(prim, b->stream, nargs, ea), "executing a primitive", err);
  if (s == NIC_OK) s = cpu_check(dnnl_stream_wait(b->stream), "waiting for the stream", err);
  if (b->prof.on) cpu_prof_add(b, b->prof.phase, cpu_now() - t0);
  for (int i = 0; i < made; i++)
    if (ea[i].memory) dnnl_memory_destroy(ea[i].memory);
  return s;
}

/* Finds or creates the reorder primitive smd -> dmd (LRU cache). */
static nic_status reorder_prim(cpu_backend *b, const dnnl_memory_desc_t *smd,
                               const dnnl_memory_desc_t *dmd, int accumulate, dnnl_primitive_t *out,
                               nic_error *err) {
  cpu_reorder_entry *victim = &b->reorders[0];
  for (int i = 0; i < CPU_REORDER_CACHE; i++) {
    cpu_reorder_entry *e = &b->reorders[i];
    if (e->prim && e->accumulate == accumulate && dnnl_memory_desc_equal(&e->src, smd) &&
        dnnl_memory_desc_equal(&e->dst, dmd)) {
      e->stamp = ++b->clock;
      *out = e->prim;
      return NIC_OK;
    }
    if (!e->prim || (victim->prim && e->stamp < victim->stamp)) victim = e;
  }
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t prim = NULL;
  nic_status s = cpu_check(dnnl_primitive_attr_create(&attr), "creating reorder attributes", err);
  if (s == NIC_OK && accumulate) { /* dst = src + 1.0 * dst */
    s = cpu_check(dnnl_post_ops_create(&po), "creating post-ops", err);
    if (s == NIC_OK) s = cpu_check(dnnl_post_ops_append_sum(po, 1.0f), "adding a sum", err);
    if (s == NIC_OK)
      s = cpu_check(dnnl_primitive_attr_set_post_ops(attr, po), "setting post-ops", err);
  }
  if (s == NIC_OK)
    s = cpu_check(dnnl_reorder_primitive_desc_create(&pd, smd, b->engine, dmd, b->engine, attr),
                  "creating a reorder", err);
  if (s == NIC_OK) s = cpu_check(dnnl_primitive_create(&prim, pd), "creating a reorder", err);
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (po) dnnl_post_ops_destroy(po);
  if (attr) dnnl_primitive_attr_destroy(attr);
  if (s != NIC_OK) return s;
  if (victim->prim) dnnl_primitive_destroy(victim->prim);
  victim->src = *smd;
  victim->dst = *dmd;
  victim->accumulate = accumulate;
  victim->prim = prim;
  victim->stamp = ++b->clock;
  *out = prim;
  return NIC_OK;
}

static nic_status reorder(cpu_backend *b, const dnnl_memory_desc_t *smd, const void *src,
                          const dnnl_memory_desc_t *dmd, void *dst, int accumulate,
                          nic_error *err) {
  if (dnnl_memory_desc_equal(smd, dmd)) { /* same bytes: no primitive needed */
    size_t bytes = dnnl_memory_desc_get_size(dmd);
    if (accumulate)
      cpu_add_floats(b, dst, src, bytes / sizeof(float));
    else if (dst != src)
      memcpy(dst, src, bytes);
    return NIC_OK;
  }
  dnnl_primitive_t prim;
  nic_status s = reorder_prim(b, smd, dmd, accumulate, &prim, err);
  if (s != NIC_OK) return s;
  cpu_arg a[2] = {{DNNL_ARG_FROM, smd, src}, {DNNL_ARG_TO, dmd, dst}};
  return cpu_exec(b, prim, 2, a, err);
}

nic_status cpu_reorder(cpu_backend *b, const dnnl_memory_desc_t *smd, const void *src,
                       const dnnl_memory_desc_t *dmd, void *dst, int accumulate, nic_error *err) {
  if (!b->prof.on) return reorder(b, smd, src, dmd, dst, accumulate, err);
  /* Book the whole conversion (primitive or copy) as a reorder. */
  nic_prof_phase saved = b->prof.phase;
  double t0 = cpu_now(), timed0 = b->prof.timed;
  b->prof.phase = NIC_PROF_REORDER;
  nic_status s = reorder(b, smd, src, dmd, dst, accumulate, err);
  double rest = cpu_now() - t0 - (b->prof.timed - timed0);
  if (rest > 0) cpu_prof_add(b, NIC_PROF_REORDER, rest);
  b->prof.phase = saved;
  return s;
}

nic_status cpu_ensure(cpu_backend *b, const dnnl_memory_desc_t *have, const void *data,
                      const dnnl_memory_desc_t *want, nic_tensor *buf, const void **out,
                      nic_error *err) {
  if (dnnl_memory_desc_equal(have, want)) {
    *out = data;
    return NIC_OK;
  }
  nic_status s = cpu_buf(buf, dnnl_memory_desc_get_size(want), err);
  if (s == NIC_OK) s = cpu_reorder(b, have, data, want, buf->data, 0, err);
  *out = buf->data;
  return s;
}

nic_status cpu_plain_data(cpu_backend *b, const nic_tensor *t, nic_tensor *buf, const float **out,
                          nic_error *err) {
  dnnl_memory_desc_t have, want;
  cpu_tensor_md(t, &have);
  cpu_plain_md(&want, t->ndim, t->shape);
  const void *p = NULL;
  nic_status s = cpu_ensure(b, &have, t->data, &want, buf, &p, err);
  *out = p;
  return s;
}

/* ---- layer state and plans --------------------------------------------------- */

static void plan_clear(cpu_plan *p) {
  for (int i = 0; i < P_NPRIM; i++) {
    if (p->prim[i]) dnnl_primitive_destroy(p->prim[i]);
    if (p->pd[i]) dnnl_primitive_desc_destroy(p->pd[i]);
  }
  memset(p, 0, sizeof *p);
}

static void state_free(cpu_state *st) {
  if (!st) return;
  for (int i = 0; i < CPU_NPLANS; i++) plan_clear(&st->plans[i]);
  for (int i = 0; i < B_NBUF; i++) nic_tensor_free(&st->buf[i]);
  free(st);
}

/* The plan for this call's configuration: a cached one, or a fresh (empty)
 * slot that the layer kind fills with primitives. */
static cpu_plan *plan_for(cpu_state *st, const nic_layer *l, const nic_tensor *const in[2],
                          int training) {
  dnnl_memory_desc_t md[2];
  memset(md, 0, sizeof md);
  for (int i = 0; i < l->ninputs; i++) cpu_tensor_md(in[i], &md[i]);
  int64_t n = in[0]->shape[0];
  int has_bias = l->bias != NULL;
  cpu_plan *victim = &st->plans[0];
  for (int k = 0; k < CPU_NPLANS; k++) {
    cpu_plan *p = &st->plans[k];
    if (p->valid && p->n == n && p->training == training && p->has_bias == has_bias &&
        p->act == l->spec.act && p->alpha == l->spec.alpha &&
        dnnl_memory_desc_equal(&p->in_md[0], &md[0]) &&
        (l->ninputs < 2 || dnnl_memory_desc_equal(&p->in_md[1], &md[1]))) {
      p->stamp = ++st->clock;
      return p;
    }
    if (!p->valid || (victim->valid && p->stamp < victim->stamp)) victim = p;
  }
  if (victim == st->last) st->last = NULL;
  plan_clear(victim);
  victim->valid = 1;
  victim->stamp = ++st->clock;
  victim->n = n;
  victim->training = training;
  victim->has_bias = has_bias;
  victim->act = l->spec.act;
  victim->alpha = l->spec.alpha;
  memcpy(victim->in_md, md, sizeof md);
  return victim;
}

/* ---- the operations table -------------------------------------------------- */

/* oneDNN's OpenMP runtime uses the calling thread's team size. */
static void enter(cpu_backend *b) {
  if (omp_get_max_threads() != b->threads) omp_set_num_threads(b->threads);
}

static const cpu_fwd_fn fwd_fns[NIC_LAYER_KIND_COUNT] = {
    [NIC_LAYER_CONV2D] = cpu_linear_forward,   [NIC_LAYER_DENSE] = cpu_linear_forward,
    [NIC_LAYER_BATCHNORM] = cpu_bn_forward,    [NIC_LAYER_ACT] = cpu_act_forward,
    [NIC_LAYER_POOL] = cpu_pool_forward,       [NIC_LAYER_GLOBALPOOL] = cpu_pool_forward,
    [NIC_LAYER_DROPOUT] = cpu_dropout_forward, [NIC_LAYER_SPATIAL_DROPOUT] = cpu_dropout_forward,
    [NIC_LAYER_FLATTEN] = cpu_flatten_forward, [NIC_LAYER_ADD] = cpu_add_forward,
};

static const cpu_bwd_fn bwd_fns[NIC_LAYER_KIND_COUNT] = {
    [NIC_LAYER_CONV2D] = cpu_linear_backward,   [NIC_LAYER_DENSE] = cpu_linear_backward,
    [NIC_LAYER_BATCHNORM] = cpu_bn_backward,    [NIC_LAYER_ACT] = cpu_act_backward,
    [NIC_LAYER_POOL] = cpu_pool_backward,       [NIC_LAYER_GLOBALPOOL] = cpu_pool_backward,
    [NIC_LAYER_DROPOUT] = cpu_dropout_backward, [NIC_LAYER_SPATIAL_DROPOUT] = cpu_dropout_backward,
    [NIC_LAYER_FLATTEN] = cpu_flatten_backward, [NIC_LAYER_ADD] = cpu_add_backward,
};

static void cpu_release(nic_backend *be, nic_layer *l) {
  (void)be;
  state_free(l->be_state);
  l->be_state = NULL;
  l->be_owner = NULL;
}

/* Checks that in has l's per-sample input shape. */
static nic_status check_input(const nic_layer *l, const nic_tensor *in, int which, nic_error *err) {
  if (!in || !in->data || in->ndim != l->in_ndim || in->shape[0] < 1)
    return nic_err(err, NIC_EINVAL, "input %d is missing or not %d-D", which, l->in_ndim);
  for (int i = 1; i < l->in_ndim; i++)
    if (in->shape[i] != l->in_shape[i])
      return nic_err(err, NIC_EINVAL, "input %d dimension %d is %lld, expected %lld", which, i,
                     (long long)in->shape[i], (long long)l->in_shape[i]);
  return NIC_OK;
}

static nic_status cpu_forward(nic_backend *be, nic_layer *l, const nic_tensor *const in[2],
                              nic_tensor *out, int training, nic_rng *rng, nic_error *err) {
  cpu_backend *b = cpu_of(be);
  nic_layer_kind k = l->spec.kind;
  if (k <= 0 || k >= NIC_LAYER_KIND_COUNT || !fwd_fns[k])
    return nic_err(err, NIC_EINVAL, "layer kind %d has no CPU implementation", (int)k);
  for (int i = 0; i < l->ninputs; i++) {
    nic_status s = check_input(l, in[i], i, err);
    if (s != NIC_OK) return s;
  }
  if (l->ninputs == 2 && in[1]->shape[0] != in[0]->shape[0])
    return nic_err(err, NIC_EINVAL, "the two inputs have different batch sizes");
  if (l->be_state && l->be_owner != be) { /* built by another backend */
    if (l->be_owner) l->be_owner->ops->release(l->be_owner, l);
    l->be_state = NULL;
  }
  if (!l->be_state) {
    l->be_state = calloc(1, sizeof(cpu_state));
    if (!l->be_state) return nic_err(err, NIC_ENOMEM, "out of memory");
    l->be_owner = be;
  }
  enter(b);
  cpu_state *st = l->be_state;
  cpu_plan *p = plan_for(st, l, in, training);
  st->last = NULL;
  st->last_training = 0;
  cpu_prof_mark mk;
  if (b->prof.on) cpu_prof_begin(b, l, l->name, nic_layer_kind_name(k), NIC_PROF_FWD, &mk);
  nic_status s = fwd_fns[k](b, l, st, p, in, out, training, rng, err);
  if (b->prof.on) cpu_prof_end(b, &mk);
  if (s != NIC_OK) return s;
  st->last = p;
  st->last_training = training;
  return NIC_OK;
}

static nic_status cpu_backward(nic_backend *be, nic_layer *l, const nic_tensor *const in[2],
                               const nic_tensor *out, const nic_tensor *dout,
                               nic_tensor *const din[2], nic_error *err) {
  cpu_backend *b = cpu_of(be);
  cpu_state *st = l->be_state;
  if (!st || l->be_owner != be || !st->last || !st->last_training)
    return nic_err(err, NIC_EINVAL, "backward needs a training-mode forward on this backend");
  if (!nic_tensor_same_shape(dout, out))
    return nic_err(err, NIC_EINVAL, "dout is not shaped like the layer's output");
  for (int i = 0; i < l->ninputs; i++) {
    dnnl_memory_desc_t md;
    cpu_tensor_md(in[i], &md);
    if (!dnnl_memory_desc_equal(&md, &st->last->in_md[i]))
      return nic_err(err, NIC_EINVAL, "backward input %d differs from the forward's", i);
  }
  enter(b);
  if (!b->prof.on) return bwd_fns[l->spec.kind](b, l, st, st->last, in, out, dout, din, err);
  cpu_prof_mark mk;
  cpu_prof_begin(b, l, l->name, nic_layer_kind_name(l->spec.kind), NIC_PROF_BWD_DATA, &mk);
  nic_status s = bwd_fns[l->spec.kind](b, l, st, st->last, in, out, dout, din, err);
  cpu_prof_end(b, &mk);
  return s;
}

static nic_status cpu_to_plain(nic_backend *be, const nic_tensor *src, nic_tensor *dst,
                               nic_error *err) {
  cpu_backend *b = cpu_of(be);
  if (src == dst) return src->layout ? nic_err(err, NIC_EINVAL, "to_plain in place") : NIC_OK;
  enter(b);
  dnnl_memory_desc_t smd, dmd;
  cpu_tensor_md(src, &smd);
  cpu_plain_md(&dmd, src->ndim, src->shape);
  cpu_prof_mark mk;
  if (b->prof.on) cpu_prof_begin(b, NULL, "(to_plain)", "", NIC_PROF_REORDER, &mk);
  nic_status s = cpu_tensor_set(dst, src->ndim, src->shape, NULL, err);
  if (s == NIC_OK) s = cpu_reorder(b, &smd, src->data, &dmd, dst->data, 0, err);
  if (b->prof.on) cpu_prof_end(b, &mk);
  return s;
}

static nic_status cpu_accumulate(nic_backend *be, nic_tensor *dst, const nic_tensor *src,
                                 nic_error *err) {
  cpu_backend *b = cpu_of(be);
  if (!dst->data) return cpu_copy(src, dst, err);
  if (!nic_tensor_same_shape(dst, src))
    return nic_err(err, NIC_EINVAL, "accumulate: tensors differ in shape");
  enter(b);
  dnnl_memory_desc_t smd, dmd;
  cpu_tensor_md(src, &smd);
  cpu_tensor_md(dst, &dmd);
  cpu_prof_mark mk;
  if (b->prof.on) cpu_prof_begin(b, NULL, "(accumulate)", "", NIC_PROF_REORDER, &mk);
  nic_status s = cpu_reorder(b, &smd, src->data, &dmd, dst->data, 1, err);
  if (b->prof.on) cpu_prof_end(b, &mk);
  return s;
}

static void cpu_destroy(nic_backend *be) {
  if (!be) return;
  cpu_backend *b = cpu_of(be);
  cpu_prof_free(b);
  for (int i = 0; i < CPU_REORDER_CACHE; i++)
    if (b->reorders[i].prim) dnnl_primitive_destroy(b->reorders[i].prim);
  if (b->stream) dnnl_stream_destroy(b->stream);
  if (b->engine) dnnl_engine_destroy(b->engine);
  free(b);
}

static const nic_backend_ops cpu_ops = {
    "cpu", cpu_forward, cpu_backward, cpu_release, cpu_to_plain, cpu_accumulate, cpu_destroy,
};

nic_status nic_backend_cpu_create(nic_backend **out, int threads, nic_error *err) {
  *out = NULL;
  cpu_backend *b = calloc(1, sizeof *b);
  if (!b) return nic_err(err, NIC_ENOMEM, "out of memory creating the CPU backend");
  b->base.ops = &cpu_ops;
  b->base.impl = b;
  b->base.threads = threads > 0 ? threads : 1;
  b->threads = b->base.threads;
  cpu_prof_init(b);
  nic_status s = cpu_check(dnnl_engine_create(&b->engine, dnnl_cpu, 0), "creating the engine", err);
  if (s == NIC_OK)
    s = cpu_check(dnnl_stream_create(&b->stream, b->engine, dnnl_stream_default_flags),
                  "creating the stream", err);
  if (s != NIC_OK) {
    cpu_destroy(&b->base);
    return s;
  }
  *out = &b->base;
  return NIC_OK;
}
