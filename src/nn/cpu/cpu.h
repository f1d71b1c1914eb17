/* Private to the CPU backend (src/nn/cpu/): the oneDNN engine and stream,
 * per-layer state with cached primitives, and the helpers every layer kind
 * shares (memory descriptors of tensors, reorders, primitive execution).
 *
 * Layout policy. A tensor whose `layout` is NULL is dense row-major in its
 * logical shape; otherwise `layout` points at a heap copy of the
 * dnnl_memory_desc_t that describes its bytes (a blocked nChw8c on AVX2, say),
 * with the same number of dimensions and the same dims as the logical shape.
 * A descriptor equal to the plain one is always stored as NULL, so code
 * outside the backend sees plain tensors whenever no conversion is needed.
 * Convolutions choose their layouts (format_tag_any); pooling, batch norm,
 * activations and dropout work in whatever layout their input has, so
 * activations stay blocked from one convolution to the next and reorders
 * happen only where a consumer needs something else. */
#ifndef NIC_NN_CPU_H
#define NIC_NN_CPU_H

#include <dnnl.h>

#include "nn/backend.h"
#include "nn/cpu/cpu_profile.h"

/* The backend instance: everything oneDNN needs lives here, never in
 * globals, so that several contexts can coexist. */
typedef struct cpu_reorder_entry {
  dnnl_memory_desc_t src, dst;
  int accumulate; /* dst += src (a sum post-op) instead of dst = src */
  unsigned long stamp;
  dnnl_primitive_t prim; /* NULL = free slot */
} cpu_reorder_entry;

#define CPU_REORDER_CACHE 32

/* The profiler (cpu_profile.c, NIC_PROFILE=1): seconds per row and phase.
 * A row is a layer (key = the layer's address) or something the backend or
 * its caller does outside any layer (key = NULL, told apart by name). */
typedef struct cpu_prof_row {
  const void *key;
  char name[64];
  char kind[24];
  double sec[NIC_PROF_NPHASE];
} cpu_prof_row;

typedef struct cpu_prof {
  int on;
  int from_env; /* print the table when the backend is destroyed */
  int printed;  /* nic_profile_print ran since the last sample */
  cpu_prof_row *rows;
  int nrows, cap;
  int cur;              /* row that primitive times go to; -1: none */
  nic_prof_phase phase; /* ... and the phase */
  double timed;         /* seconds recorded by cpu_prof_add, ever */
} cpu_prof;

typedef struct cpu_backend {
  nic_backend base; /* base.impl points back at this struct */
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  int threads;
  unsigned long clock; /* LRU stamps of the reorder cache */
  cpu_reorder_entry reorders[CPU_REORDER_CACHE];
  cpu_prof prof;
} cpu_backend;

/* Primitive slots of a plan. Which ones a layer kind uses is up to it;
 * backward slots are filled by the first backward that needs them. */
enum { P_FWD, P_BWD_DATA, P_BWD_W, P_ACT_BWD, P_NPRIM };

/* The primitives of one layer for one input configuration. A layer keeps a
 * few plans so that alternating training and evaluation, or a smaller last
 * batch, do not rebuild primitives every time. */
typedef struct cpu_plan {
  int valid;
  unsigned long stamp;
  int64_t n;    /* batch size */
  int training; /* forward_training vs forward_inference */
  int has_bias; /* spec parts that optimize_inference may change */
  nic_act act;
  float alpha;
  dnnl_memory_desc_t in_md[2]; /* input layouts */
  dnnl_primitive_desc_t pd[P_NPRIM];
  dnnl_primitive_t prim[P_NPRIM];
} cpu_plan;

#define CPU_NPLANS 4

/* Buffers a layer keeps between calls (what backward needs, and reordered
 * copies). Each kind uses the slots it needs; see the kind's file. */
enum {
  B_SRC,   /* input reordered to the forward primitive's layout */
  B_SRC2,  /* second input reordered (ADD), or input for backward weights */
  B_W,     /* weights in the forward primitive's layout */
  B_WB,    /* weights in the backward-data primitive's layout */
  B_DDST,  /* dout reordered */
  B_DDST2, /* dout reordered for a second consumer */
  B_DPRE,  /* gradient before the fused activation */
  B_DW,    /* weight (or scale) gradient in the primitive's layout */
  B_DB,    /* bias (or shift) gradient */
  B_MEAN,  /* batch-norm batch mean */
  B_VAR,   /* batch-norm batch variance */
  B_WS,    /* max-pooling workspace */
  B_MASK,  /* dropout mask */
  B_TMP,   /* anything short-lived */
  B_NBUF
};

typedef struct cpu_state {
  cpu_plan plans[CPU_NPLANS];
  cpu_plan *last;    /* plan of the last forward: backward runs on it */
  int last_training; /* the last forward kept what backward needs */
  int src_in_buf;    /* B_SRC holds the input in the forward pd's src layout */
  int mask_identity; /* dropout: the last forward did not drop anything */
  unsigned long clock;
  nic_tensor buf[B_NBUF];
} cpu_state;

/* ---- cpu_backend.c: shared helpers ------------------------------------- */

static inline cpu_backend *cpu_of(nic_backend *be) {
  return (cpu_backend *)be->impl;
}

/* Turns a oneDNN failure into NIC_EBACKEND with `what` in the message. */
nic_status cpu_check(dnnl_status_t st, const char *what, nic_error *err);

/* Plain (row-major) f32 descriptor of a shape; 4-D input may be given a
 * format tag (dnnl_abcd, dnnl_acdb) instead. */
void cpu_plain_md(dnnl_memory_desc_t *md, int ndim, const int64_t *shape);
void cpu_tag_md(dnnl_memory_desc_t *md, int ndim, const int64_t *shape, dnnl_format_tag_t tag);
/* The descriptor of t's bytes. */
void cpu_tensor_md(const nic_tensor *t, dnnl_memory_desc_t *md);
/* Shapes t as ndim/shape with bytes laid out as md (NULL = plain); the
 * contents are undefined. */
nic_status cpu_tensor_set(nic_tensor *t, int ndim, const int64_t *shape,
                          const dnnl_memory_desc_t *md, nic_error *err);
/* Ensures a raw buffer of at least `bytes`. */
nic_status cpu_buf(nic_tensor *buf, size_t bytes, nic_error *err);
/* Copies src (bytes and layout) into dst. */
nic_status cpu_copy(const nic_tensor *src, nic_tensor *dst, nic_error *err);

/* One primitive argument: memory descriptor and host pointer. */
typedef struct cpu_arg {
  int id;
  const dnnl_memory_desc_t *md;
  const void *ptr;
} cpu_arg;

/* Executes prim on the given arguments and waits for it. */
nic_status cpu_exec(cpu_backend *b, dnnl_primitive_t prim, int nargs, const cpu_arg *args,
                    nic_error *err);
/* dst = src (or dst += src when accumulate) converting layouts; reorder
 * primitives are cached in the backend. */
nic_status cpu_reorder(cpu_backend *b, const dnnl_memory_desc_t *smd, const void *src,
                       const dnnl_memory_desc_t *dmd, void *dst, int accumulate, nic_error *err);
/* *out = data laid out as `want`: `data` itself when its layout `have`
 * already is `want`, else a reordered copy in buf. */
nic_status cpu_ensure(cpu_backend *b, const dnnl_memory_desc_t *have, const void *data,
                      const dnnl_memory_desc_t *want, nic_tensor *buf, const void **out,
                      nic_error *err);
/* The plain bytes of t: t->data itself when t is plain, else a copy in buf. */
nic_status cpu_plain_data(cpu_backend *b, const nic_tensor *t, nic_tensor *buf, const float **out,
                          nic_error *err);
/* Queried descriptor of a primitive descriptor (never NULL for asked-for
 * kinds). */
const dnnl_memory_desc_t *cpu_pd_md(dnnl_primitive_desc_t pd, dnnl_query_t what, int index);
/* Creates pd from an op descriptor, and the primitive when prim != NULL. */
nic_status cpu_make(cpu_backend *b, const void *op_desc, const_dnnl_primitive_attr_t attr,
                    const_dnnl_primitive_desc_t hint, dnnl_primitive_desc_t *pd,
                    dnnl_primitive_t *prim, const char *what, nic_error *err);
/* dst[i] += src[i] for n floats, in parallel. */
void cpu_add_floats(cpu_backend *b, float *dst, const float *src, size_t n);

/* Activation as a oneDNN eltwise algorithm. use_dst selects the variant whose
 * backward reads the forward output (not available for a negative leaky
 * slope: returns 0 then). Returns 1 on success. */
int cpu_act_alg(nic_act act, float alpha, int use_dst, dnnl_alg_kind_t *alg, float *a);

/* ---- cpu_profile.c: the profiler ------------------------------------------ */

/* Monotonic wall clock in seconds. */
double cpu_now(void);
/* Reads NIC_PROFILE; called once when the backend is created. */
void cpu_prof_init(cpu_backend *b);
/* Prints the table if NIC_PROFILE asked for it, and frees the rows. */
void cpu_prof_free(cpu_backend *b);
/* Adds sec to the current row (or a "(backend)" row) under `phase`. */
void cpu_prof_add(cpu_backend *b, nic_prof_phase phase, double sec);

/* What a profiled call restores when it ends. */
typedef struct cpu_prof_mark {
  double t0, timed0;
  int cur;
  nic_prof_phase phase;
} cpu_prof_mark;

/* Makes row (key, name) current with the given default phase. The time of
 * the call that cpu_prof_end does not find in primitives or reorders is
 * booked as NIC_PROF_OTHER. Only call when b->prof.on. */
void cpu_prof_begin(cpu_backend *b, const void *key, const char *name, const char *kind,
                    nic_prof_phase phase, cpu_prof_mark *mk);
void cpu_prof_end(cpu_backend *b, const cpu_prof_mark *mk);

/* Primitives executed from now on count as `phase` (a layer's backward
 * switches from backward-data to backward-weights). */
static inline void cpu_prof_phase(cpu_backend *b, nic_prof_phase phase) {
  b->prof.phase = phase;
}

/* ---- per-kind entry points ---------------------------------------------- */

typedef nic_status (*cpu_fwd_fn)(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                                 const nic_tensor *const in[2], nic_tensor *out, int training,
                                 nic_rng *rng, nic_error *err);
typedef nic_status (*cpu_bwd_fn)(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                                 const nic_tensor *const in[2], const nic_tensor *out,
                                 const nic_tensor *dout, nic_tensor *const din[2], nic_error *err);

/* cpu_linear.c: CONV2D and DENSE */
nic_status cpu_linear_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                              const nic_tensor *const in[2], nic_tensor *out, int training,
                              nic_rng *rng, nic_error *err);
nic_status cpu_linear_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                               const nic_tensor *const in[2], const nic_tensor *out,
                               const nic_tensor *dout, nic_tensor *const din[2], nic_error *err);
/* cpu_norm.c: BATCHNORM */
nic_status cpu_bn_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                          const nic_tensor *const in[2], nic_tensor *out, int training,
                          nic_rng *rng, nic_error *err);
nic_status cpu_bn_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                           const nic_tensor *const in[2], const nic_tensor *out,
                           const nic_tensor *dout, nic_tensor *const din[2], nic_error *err);
/* cpu_pool.c: POOL and GLOBALPOOL */
nic_status cpu_pool_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                            const nic_tensor *const in[2], nic_tensor *out, int training,
                            nic_rng *rng, nic_error *err);
nic_status cpu_pool_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                             const nic_tensor *const in[2], const nic_tensor *out,
                             const nic_tensor *dout, nic_tensor *const din[2], nic_error *err);
/* cpu_eltwise.c: ACT, DROPOUT, SPATIAL_DROPOUT, FLATTEN, ADD */
nic_status cpu_act_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                           const nic_tensor *const in[2], nic_tensor *out, int training,
                           nic_rng *rng, nic_error *err);
nic_status cpu_act_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                            const nic_tensor *const in[2], const nic_tensor *out,
                            const nic_tensor *dout, nic_tensor *const din[2], nic_error *err);
nic_status cpu_dropout_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                               const nic_tensor *const in[2], nic_tensor *out, int training,
                               nic_rng *rng, nic_error *err);
nic_status cpu_dropout_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                                const nic_tensor *const in[2], const nic_tensor *out,
                                const nic_tensor *dout, nic_tensor *const din[2], nic_error *err);
nic_status cpu_flatten_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                               const nic_tensor *const in[2], nic_tensor *out, int training,
                               nic_rng *rng, nic_error *err);
nic_status cpu_flatten_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                                const nic_tensor *const in[2], const nic_tensor *out,
                                const nic_tensor *dout, nic_tensor *const din[2], nic_error *err);
nic_status cpu_add_forward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                           const nic_tensor *const in[2], nic_tensor *out, int training,
                           nic_rng *rng, nic_error *err);
nic_status cpu_add_backward(cpu_backend *b, nic_layer *l, cpu_state *st, cpu_plan *p,
                            const nic_tensor *const in[2], const nic_tensor *out,
                            const nic_tensor *dout, nic_tensor *const din[2], nic_error *err);

#endif
