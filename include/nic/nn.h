/* The neural-network engine: layers, models (a DAG of layers in topological
 * order, enough for sequential nets and residual blocks), losses, optimizers
 * and learning-rate schedules. Compute runs on the context's backend. */
#ifndef NIC_NN_H
#define NIC_NN_H

#include <stdint.h>

#include "nic/ctx.h"
#include "nic/status.h"
#include "nic/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- layers ------------------------------------------------------------ */

typedef enum nic_layer_kind {
  NIC_LAYER_CONV2D = 1,      /* stride, padding, groups (depthwise when groups == C) */
  NIC_LAYER_DENSE,           /* fully connected on N x F (flattens 4-D input itself) */
  NIC_LAYER_BATCHNORM,       /* per channel (4-D) or per feature (2-D) */
  NIC_LAYER_ACT,             /* elementwise activation */
  NIC_LAYER_POOL,            /* average or max pooling */
  NIC_LAYER_GLOBALPOOL,      /* global average or max -> N x C */
  NIC_LAYER_DROPOUT,         /* inverted dropout, identity in eval */
  NIC_LAYER_SPATIAL_DROPOUT, /* drops whole channels */
  NIC_LAYER_FLATTEN,         /* N x C x H x W -> N x (C*H*W), NCHW or NHWC order */
  NIC_LAYER_ADD,             /* elementwise sum of two inputs (residuals) */
  NIC_LAYER_KIND_COUNT
} nic_layer_kind;

typedef enum nic_act {
  NIC_ACT_NONE = 0, /* identity */
  NIC_ACT_RELU,
  NIC_ACT_LEAKY_RELU, /* slope `alpha` for x < 0 */
  NIC_ACT_SIGMOID,
  NIC_ACT_TANH
} nic_act;

typedef enum nic_pool_kind { NIC_POOL_AVG = 0, NIC_POOL_MAX = 1 } nic_pool_kind;
typedef enum nic_flatten_order { NIC_FLATTEN_NCHW = 0, NIC_FLATTEN_NHWC = 1 } nic_flatten_order;

/* Everything a layer can be configured with; unused fields stay zero.
 * Build with the nic_spec_* helpers below. */
typedef struct nic_layer_spec {
  nic_layer_kind kind;
  const char *name; /* parameter prefix; NULL = automatic ("conv2d_3") */
  int out;          /* conv: filters; dense: units */
  int kernel[2];    /* conv/pool: kh, kw */
  int stride[2];
  int pad[4];     /* top, left, bottom, right */
  int groups;     /* conv: 1 = dense conv, in_channels = depthwise */
  int bias;       /* conv/dense: has a bias */
  nic_act act;    /* conv/dense: fused activation; ACT layer: which one */
  float alpha;    /* leaky slope */
  float eps;      /* batch norm epsilon */
  float momentum; /* batch norm running-average momentum (Keras style: new = m*old + (1-m)*batch) */
  nic_pool_kind pool;
  float p; /* dropout probability */
  nic_flatten_order order;
} nic_layer_spec;

nic_layer_spec nic_spec_conv(int filters, int k, int stride, int pad, nic_act act, float alpha);
nic_layer_spec nic_spec_dwconv(int k, int stride, int pad); /* groups filled in at add time */
nic_layer_spec nic_spec_dense(int units, nic_act act, float alpha);
nic_layer_spec nic_spec_bn(float eps, float momentum);
nic_layer_spec nic_spec_act(nic_act act, float alpha);
nic_layer_spec nic_spec_pool(nic_pool_kind kind, int k, int stride, int pad);
nic_layer_spec nic_spec_globalpool(nic_pool_kind kind);
nic_layer_spec nic_spec_dropout(float p);
nic_layer_spec nic_spec_spatial_dropout(float p);
nic_layer_spec nic_spec_flatten(nic_flatten_order order);
nic_layer_spec nic_spec_add(void);

/* A named parameter or buffer. Buffers (batch-norm running statistics) are
 * saved with the model but not trained. Values are always plain layout. */
typedef struct nic_param {
  char name[96]; /* "conv1.weight", "bn1.running_mean" */
  nic_tensor value;
  nic_tensor grad; /* allocated for trainable params only */
  int trainable;
} nic_param;

typedef struct nic_layer nic_layer; /* opaque; see src/nn/layer.h */

/* ---- models ------------------------------------------------------------- */

typedef struct nic_model nic_model;

/* How pixels become the model's input: x = (pixel/255 - mean[c]) / std[c].
 * The published NIC encoders use mean 0.5, std 0.5 (range [-1, 1]). */
typedef struct nic_input_info {
  int channels, height, width; /* the model's input tensor (C, H, W) */
  int patch_size;              /* pixels of the patch at `mpp` (e.g. 128) */
  double mpp;                  /* micrometres per pixel of that patch (0 = unknown) */
  float mean[4], std[4];
} nic_input_info;

/* An empty model whose input is N x C x H x W. */
nic_status nic_model_create(nic_model **out, int c, int h, int w, nic_error *err);
/* Frees the model. A context must outlive every model it ran (the model's
 * cached primitives belong to the context's backend), as with a cuDNN
 * handle: free models first, then the context. */
void nic_model_free(nic_model *m);

/* Appends a layer fed by node `in` (-1 = the previous node, 0 = the model
 * input, k = output of the k-th added layer counting from 1); ADD also takes
 * `in2`. Shapes are checked at once. Returns the new node's index (>= 1), or
 * a negative value with err set. */
int nic_model_add(nic_model *m, nic_layer_spec spec, int in, int in2, nic_error *err);
/* Depthwise (k x k, stride) then pointwise 1x1 conv with `filters`: the
 * depthwise-separable convolution. Returns the pointwise node. */
int nic_model_add_sepconv(nic_model *m, const char *name, int filters, int k, int stride, int pad,
                          int bias, nic_error *err);

int nic_model_num_nodes(const nic_model *m); /* layers, excluding the input */
/* Output shape of node k (0 = input). */
void nic_model_node_shape(const nic_model *m, int k, int *ndim, int64_t shape[NIC_MAX_DIMS]);
const char *nic_model_node_name(const nic_model *m, int k);
nic_layer_kind nic_model_node_kind(const nic_model *m, int k);
const nic_layer_spec *nic_model_node_spec(const nic_model *m, int k);
int nic_model_node_input(const nic_model *m, int k, int which);

/* All params and buffers, in creation order; pointers stay valid for the
 * model's lifetime. */
nic_param **nic_model_params(nic_model *m, int *count);
nic_param *nic_model_param(nic_model *m, const char *name);
int64_t nic_model_num_trainable(const nic_model *m); /* number of trainable scalars */
/* Forward floating-point operations per sample (2 per multiply-add),
 * counting conv and dense layers. */
int64_t nic_model_flops(const nic_model *m);

/* Deterministic initialisation from the context's random stream:
 * He-normal for conv/dense weights, zero biases, BN gamma 1 / beta 0. */
nic_status nic_model_init_params(nic_model *m, nic_ctx *ctx, nic_error *err);

/* Forward pass. `x` must be plain N x C x H x W (any batch size N).
 * `out` receives a pointer to the model's output (plain layout), owned by the
 * model and valid until the next forward. training != 0 uses batch
 * statistics, dropout, and keeps what backward needs. */
nic_status nic_model_forward(nic_model *m, nic_ctx *ctx, const nic_tensor *x, int training,
                             const nic_tensor **out, nic_error *err);
/* Forward up to and including node `upto` (e.g. an embedding layer). */
nic_status nic_model_forward_to(nic_model *m, nic_ctx *ctx, const nic_tensor *x, int training,
                                int upto, const nic_tensor **out, nic_error *err);
/* Backward from d(loss)/d(output) (plain, same shape as the output);
 * accumulates into parameter gradients. If dx is non-NULL it receives
 * d(loss)/d(input) (plain). Must follow a training forward. */
nic_status nic_model_backward(nic_model *m, nic_ctx *ctx, const nic_tensor *dout, nic_tensor *dx,
                              nic_error *err);
void nic_model_zero_grad(nic_model *m);
/* Plain copies of what the last forward computed at node k, and of the
 * gradient of the loss w.r.t. it after the last backward (Grad-CAM needs
 * both). Node 0's gradient exists only when backward was given dx. */
nic_status nic_model_node_output(nic_model *m, nic_ctx *ctx, int k, nic_tensor *dst,
                                 nic_error *err);
nic_status nic_model_node_grad(nic_model *m, nic_ctx *ctx, int k, nic_tensor *dst, nic_error *err);

/* Rewrites the model for inference, in place: folds each batch norm into the
 * neighbouring conv/dense (the one before it when nothing stands between,
 * else the following 'valid' conv or dense), and fuses standalone
 * activations into the preceding conv/dense. Outputs are unchanged up to
 * rounding; the model can no longer be trained. */
nic_status nic_model_optimize_inference(nic_model *m, nic_error *err);

/* Metadata carried in model files. Strings are owned by the model. */
nic_input_info *nic_model_input_info(nic_model *m);
void nic_model_set_meta(nic_model *m, const char *key, const char *json_value);
const char *nic_model_get_meta(const nic_model *m, const char *key); /* JSON text or NULL */

/* Fused input path for RGB8 patches: converts `n` interleaved RGB uint8
 * patches (patch_size x patch_size, `stride` bytes between rows, `pstride`
 * bytes between patches) into the model's input tensor, applying the
 * normalisation and, when the model's first layer is a 2x2/2 average pool,
 * that pool as well, so no float pass over the full-resolution patch is
 * needed. *start receives the first node to run (1, or 2 when the pool was
 * applied): pass it to nic_model_forward_from. */
nic_status nic_model_prepare_rgb8(nic_model *m, const uint8_t *pix, int n, int patch_size,
                                  int64_t stride, int64_t pstride, nic_tensor *x, int *start,
                                  nic_error *err);
/* Runs nodes start..last with x being the output of node start-1. */
nic_status nic_model_forward_from(nic_model *m, nic_ctx *ctx, const nic_tensor *x, int start,
                                  int training, const nic_tensor **out, nic_error *err);
/* Runs nodes start..upto (the general form of the calls above). */
nic_status nic_model_forward_span(nic_model *m, nic_ctx *ctx, const nic_tensor *x, int start,
                                  int upto, int training, const nic_tensor **out, nic_error *err);

/* ---- model files (safetensors + JSON metadata) -------------------------- */

/* Writes architecture, input info, metadata and all params/buffers to a
 * .safetensors file (atomically: temp file + rename). */
nic_status nic_model_save(const nic_model *m, const char *path, nic_error *err);
/* Reads and fully validates a model file: header bounds, dtypes, shapes
 * against the architecture, no missing or extra tensors. F16 and BF16
 * tensors are converted to float32. */
nic_status nic_model_load(nic_model **out, const char *path, nic_error *err);

/* How nic_model_save_opts stores float values on disk. */
typedef enum nic_store_dtype {
  NIC_STORE_F32 = 0, /* IEEE single precision (what nic_model_save writes) */
  NIC_STORE_F16,     /* IEEE half precision: half the size, ~3 significant digits */
  NIC_STORE_BF16     /* bfloat16: half the size, float32's range, ~2 digits */
} nic_store_dtype;

typedef struct nic_save_opts {
  /* F16/BF16 store the conv/dense weights and biases and the batch-norm
   * gamma/beta in that dtype; batch-norm running statistics stay F32 (a
   * variance below F16's normal range, 6.1e-5, would lose its precision),
   * and so does any tensor holding a finite value the dtype would turn
   * into an infinity. */
  nic_store_dtype dtype;
  /* Tensors stored beside the model's own (e.g. an optimizer's state in a
   * training checkpoint), always F32. Names must not be those of model
   * params and must be shorter than nic_param's name. */
  const nic_param *extra;
  int nextra;
} nic_save_opts;

/* nic_model_save with options; opts NULL = nic_model_save. */
nic_status nic_model_save_opts(const nic_model *m, const char *path, const nic_save_opts *opts,
                               nic_error *err);
/* The dtype nic_model_save_opts stores param p of m in when asked for `want`. */
nic_store_dtype nic_model_param_storage(const nic_model *m, const nic_param *p,
                                        nic_store_dtype want);
/* nic_model_load, except that tensors whose names begin with extra_prefix
 * (non-empty) are not model tensors: they are returned, as float32, in
 * *extra (*nextra of them; free with nic_params_free) instead of being
 * rejected. */
nic_status nic_model_load_extra(nic_model **out, const char *path, const char *extra_prefix,
                                nic_param **extra, int *nextra, nic_error *err);
/* Frees an array of n params (their values and gradients) and the array. */
void nic_params_free(nic_param *p, int n);

/* ---- losses -------------------------------------------------------------- */
/* Each returns the mean loss over the contributing samples and writes
 * d(loss)/d(input) into `grad` (allocated to the input's shape) when grad is
 * non-NULL. Inputs are plain. */

/* logits N x K, labels in [0, K). class_weight (K or NULL) weights each
 * sample by its class; mask (N or NULL): samples with mask 0 contribute
 * nothing (multitask batches). Mean is over the sum of weights. */
nic_status nic_loss_softmax_ce(const nic_tensor *logits, const int *labels,
                               const float *class_weight, const float *mask, float *loss,
                               nic_tensor *grad, nic_error *err);
/* logits N x 1 (or N), targets in [0,1]; pos_weight scales positives (1 = none); mask as above. */
nic_status nic_loss_bce_logits(const nic_tensor *logits, const float *targets, float pos_weight,
                               const float *mask, float *loss, nic_tensor *grad, nic_error *err);
/* pred N x D vs target N x D (row-major), mask per sample or NULL. */
nic_status nic_loss_mse(const nic_tensor *pred, const float *target, const float *mask, float *loss,
                        nic_tensor *grad, nic_error *err);
/* Cox partial likelihood, Breslow ties. risk N x 1 (log-hazard), time N,
 * event N (1 = event, 0 = censored). Mean over events. With no events in the
 * batch the loss is 0 and the gradient zero. */
nic_status nic_loss_cox(const nic_tensor *risk, const float *time, const int *event, float *loss,
                        nic_tensor *grad, nic_error *err);

/* ---- optimizers ---------------------------------------------------------- */

typedef enum nic_opt_kind { NIC_OPT_SGD = 0, NIC_OPT_ADAM, NIC_OPT_ADAMW } nic_opt_kind;

typedef struct nic_opt_config {
  nic_opt_kind kind;
  float lr;
  float momentum;     /* SGD */
  int nesterov;       /* SGD */
  float beta1, beta2; /* Adam */
  float eps;          /* Adam */
  float weight_decay; /* SGD/Adam: L2 added to the gradient; AdamW: decoupled */
  float clip_norm;    /* > 0: clip the global gradient norm to this */
  float clip_value;   /* > 0: clamp each gradient element to +-this */
} nic_opt_config;

nic_opt_config nic_opt_default(nic_opt_kind kind, float lr);

typedef struct nic_optimizer nic_optimizer;

nic_status nic_optimizer_create(nic_optimizer **out, const nic_opt_config *cfg, nic_error *err);
void nic_optimizer_free(nic_optimizer *o);
/* One update of every trainable param of m from its accumulated grad.
 * Returns the global gradient norm (before clipping) in *grad_norm if non-NULL. */
nic_status nic_optimizer_step(nic_optimizer *o, nic_model *m, float *grad_norm, nic_error *err);
void nic_optimizer_set_lr(nic_optimizer *o, float lr);
float nic_optimizer_lr(const nic_optimizer *o);
/* Generic form on raw arrays, for tests and non-model parameters. */
nic_status nic_optimizer_step_params(nic_optimizer *o, nic_param **params, int count,
                                     float *grad_norm, nic_error *err);

/* ---- optimizer state (checkpoints) ---------------------------------------
 * The optimizer keeps, per trainable param, state that a step creates the
 * first time it updates the param: Adam/AdamW's first and second moments
 * ("m", "v") and step count (for the bias correction), SGD's momentum
 * buffer ("m"). States are keyed by the param's address; a checkpoint
 * names them by the param's name. */

/* The state of one param. Slots the optimizer kind does not keep are NULL:
 * v for SGD, and m too for SGD without momentum. */
typedef struct nic_opt_state {
  const nic_param *param; /* whose state it is */
  int64_t numel;          /* values in m and in v: the param's size */
  int64_t step;           /* Adam/AdamW: updates applied to the param; SGD: 0 */
  float *m, *v;
} nic_opt_state;

/* Whether this optimizer keeps the m and v slots (each 0 or 1). */
void nic_optimizer_slots(const nic_optimizer *o, int *has_m, int *has_v);
/* Number of params with state. */
int nic_optimizer_num_states(const nic_optimizer *o);
/* State i (0 <= i < nic_optimizer_num_states), in creation order. The
 * arrays belong to the optimizer and stay valid until it is freed. */
nic_status nic_optimizer_get_state(const nic_optimizer *o, int i, nic_opt_state *out,
                                   nic_error *err);
/* The state of param p: 1 and *out filled when p has state, else 0. */
int nic_optimizer_find_state(const nic_optimizer *o, const nic_param *p, nic_opt_state *out);
/* Creates or overwrites the state of p with copies of numel(p) values from
 * m and v and the step count. m must be given exactly when the optimizer
 * keeps m, v exactly when it keeps v; step must be >= 0 (Adam: the number
 * of updates the moments have seen; ignored by SGD). */
nic_status nic_optimizer_set_state(nic_optimizer *o, const nic_param *p, int64_t step,
                                   const float *m, const float *v, nic_error *err);

/* ---- learning-rate schedules ------------------------------------------- */

typedef enum nic_sched_kind {
  NIC_SCHED_CONSTANT = 0,
  NIC_SCHED_STEP,   /* lr = base * gamma^(epoch / step_size) */
  NIC_SCHED_COSINE, /* base -> min_lr over total epochs, optional warmup */
  NIC_SCHED_PLATEAU /* multiply by factor after `patience` epochs without improvement */
} nic_sched_kind;

typedef struct nic_schedule {
  nic_sched_kind kind;
  float base_lr, min_lr;
  int step_size;   /* STEP */
  float gamma;     /* STEP */
  int total;       /* COSINE: epochs */
  int warmup;      /* COSINE: linear warmup epochs */
  float factor;    /* PLATEAU */
  int patience;    /* PLATEAU */
  float threshold; /* PLATEAU: relative improvement that counts */
  int mode_max;    /* PLATEAU: 1 = metric should increase */
  /* state (PLATEAU) */
  float best, cur_lr;
  int bad_epochs, started;
} nic_schedule;

nic_schedule nic_sched_step(float base, int step_size, float gamma);
nic_schedule nic_sched_cosine(float base, float min_lr, int total, int warmup);
nic_schedule nic_sched_plateau(float base, float factor, int patience, float min_lr, int mode_max);
/* LR for `epoch` (0-based). For PLATEAU pass the last validation metric
 * (ignored by the other kinds); call once per epoch. */
float nic_sched_lr(nic_schedule *s, int epoch, float metric);

#ifdef __cplusplus
}
#endif
#endif
