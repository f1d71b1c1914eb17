/* Private: the layer and model structures shared by the graph runtime
 * (model.c), model files (io/), and the compute backends (nn/cpu/). */
#ifndef NIC_NN_LAYER_H
#define NIC_NN_LAYER_H

#include "nic/nn.h"

struct nic_backend;

/* Which params a layer owns (NULL when absent). Values are plain:
 *   conv2d  weight [out, in/groups, kh, kw], bias [out]
 *   dense   weight [out, in], bias [out]   (in = flattened input, NCHW order)
 *   batchnorm gamma [C], beta [C], running_mean [C], running_var [C] (buffers) */
struct nic_layer {
  nic_layer_spec spec; /* spec.name points at name[] */
  char name[64];
  int ninputs;
  int inputs[2]; /* node indices feeding this layer */
  int in_ndim, out_ndim;
  int64_t in_shape[NIC_MAX_DIMS]; /* per-sample: shape[0] is the batch, stored as 1 */
  int64_t out_shape[NIC_MAX_DIMS];
  nic_param *weight, *bias;
  nic_param *gamma, *beta, *running_mean, *running_var;
  struct nic_backend *be_owner; /* backend that built be_state */
  void *be_state;               /* primitives, saved masks, workspaces */
};

typedef struct nic_meta_kv {
  char *key, *value; /* value is JSON text */
} nic_meta_kv;

struct nic_model {
  int c, h, w; /* input, per sample */
  int nnodes;  /* layers; node k (1..nnodes) is layers[k-1] */
  int cap_nodes;
  struct nic_layer **layers;
  nic_param **params;
  int nparams, cap_params;
  int inference_only; /* set by nic_model_optimize_inference */
  nic_input_info input;
  nic_meta_kv *meta;
  int nmeta;
  /* runtime, per batch */
  nic_tensor *outs;      /* [nnodes + 1]: outs[0] unused (input is borrowed) */
  nic_tensor *douts;     /* [nnodes + 1] */
  int *grad_ready;       /* [nnodes + 1]: douts[k] holds node k's gradient */
  const nic_tensor *x;   /* input of the last forward */
  int last_start;        /* first node run by the last forward */
  int last_upto;         /* last node run by the last forward */
  nic_tensor scratch[2]; /* gradients awaiting accumulation */
  int trained_forward;   /* last forward was in training mode */
  nic_tensor out_plain;  /* plain copy of the output when the backend's is blocked */
  nic_tensor pre;        /* buffer for nic_model_prepare_rgb8 */
  struct nic_backend *be;
};

const char *nic_layer_kind_name(nic_layer_kind k);
int nic_layer_kind_from_name(const char *s); /* -1 if unknown */
const char *nic_act_name(nic_act a);
int nic_act_from_name(const char *s); /* -1 if unknown */

/* Releases backend state of every layer (e.g. before changing params' shapes). */
void nic_model_release_backend(struct nic_model *m);
/* Frees the per-batch activation/gradient buffers (after graph edits). */
void nic_model_reset_runtime(struct nic_model *m);

#endif
