/* Private: the compute backend boundary. A backend implements each layer
 * kind's forward and backward on tensors in layouts it chooses, and
 * converts its layouts back to plain. The graph runtime (model.c), losses
 * and optimizers never look inside a backend; a cuDNN/cuBLAS backend plugs
 * in by providing another nic_backend_ops table. */
#ifndef NIC_NN_BACKEND_H
#define NIC_NN_BACKEND_H

#include "nic/ctx.h"
#include "nic/tensor.h"
#include "nn/layer.h"

typedef struct nic_backend nic_backend;

typedef struct nic_backend_ops {
  const char *name;
  /* out is (re)shaped by the backend: shape [N, layer out_shape...], in any
   * layout the backend likes. in[1] is used by ADD only. In training mode
   * the backend keeps in its layer state what backward needs (BN batch
   * statistics, dropout masks, pooling workspaces) and updates BN running
   * statistics in the layer's params. */
  nic_status (*forward)(nic_backend *be, struct nic_layer *l, const nic_tensor *const in[2],
                        nic_tensor *out, int training, nic_rng *rng, nic_error *err);
  /* Given dout (any layout this backend produced, or plain) computes din[i]
   * for each non-NULL din[i] (overwritten, same logical shape as in[i]), and
   * ADDS parameter gradients into l->weight->grad etc. (plain). */
  nic_status (*backward)(nic_backend *be, struct nic_layer *l, const nic_tensor *const in[2],
                         const nic_tensor *out, const nic_tensor *dout, nic_tensor *const din[2],
                         nic_error *err);
  /* Frees l->be_state. */
  void (*release)(nic_backend *be, struct nic_layer *l);
  /* dst = plain copy of src (dst allocated as needed; src may be plain). */
  nic_status (*to_plain)(nic_backend *be, const nic_tensor *src, nic_tensor *dst, nic_error *err);
  /* dst += src, both the same logical shape, any layouts (dst keeps its own). */
  nic_status (*accumulate)(nic_backend *be, nic_tensor *dst, const nic_tensor *src, nic_error *err);
  void (*destroy)(nic_backend *be);
} nic_backend_ops;

struct nic_backend {
  const nic_backend_ops *ops;
  void *impl;
  int threads;
};

nic_status nic_backend_cpu_create(nic_backend **out, int threads, nic_error *err);

/* From the context (ctx.c). */
nic_backend *nic_ctx_backend(nic_ctx *ctx);

#endif
