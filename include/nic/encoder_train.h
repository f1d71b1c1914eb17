/* Training patch encoders and measuring them with a linear probe.
 *
 * Training (nic_encoder_train) is supervised multitask learning in the way
 * of MTL-NIC (Tellez et al., MIDL 2020): one shared encoder (the trunk) and
 * one small head per labelled patch dataset (a task), trained together on
 * batches that mix the tasks; each task's loss only sees its own samples.
 * Two unsupervised baselines use the same machinery with a different head:
 * a SimCLR-style contrastive objective (NT-Xent on two augmented views) and
 * an autoencoder with a dense decoder. A run checkpoints every epoch, can be
 * resumed, stops early on its validation monitor, and writes the encoder
 * (the trunk alone, a normal nic model file) with a JSON model card.
 *
 * The probe (nic_probe) embeds two datasets with a frozen encoder, fits an
 * L2-regularised multinomial logistic regression on the first and reports
 * accuracy, balanced accuracy and AUC on the second.
 *
 * Everything is seeded. See docs/encoder-training.md. */
#ifndef NIC_ENCODER_TRAIN_H
#define NIC_ENCODER_TRAIN_H

#include <stdint.h>

#include "nic/data.h"
#include "nic/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- tasks ----------------------------------------------------------------- */

typedef enum nic_enc_kind {
  NIC_ENC_KIND_AUTO = 0,  /* from the dataset's labels */
  NIC_ENC_KIND_CLASS,     /* softmax cross-entropy over the classes */
  NIC_ENC_KIND_REGRESSION /* mean squared error on the standardised value */
} nic_enc_kind;

#define NIC_ENC_NAME_MAX 32

/* One task: a dataset and how to learn from it. */
typedef struct nic_enc_task {
  char name[NIC_ENC_NAME_MAX + 1]; /* letters, digits, '_' and '-' */
  char path[4096];                 /* anything nic_dataset_open reads */
  nic_enc_kind kind;
  double weight;         /* weight of the task's loss in the sum (1) */
  double mpp;            /* spacing of its items in um/px; 0 = what the dataset declares */
  double valid_fraction; /* share of the items without a split that become validation,
                            stratified (0.1); items with a split keep it */
  double holdout;        /* > 0: validate on this stratified share of the training items
                            instead of the dataset's own valid split (left unused, e.g. to
                            keep it for the probe) */
  int64_t max_train;     /* use a seeded random subset of this many training items (0 = all) */
  int64_t max_valid;     /* the same for validation items */
  int balanced;          /* class-balanced sampling: -1 = the run's setting, 0 or 1 */
} nic_enc_task;

nic_enc_task nic_enc_task_default(void);

/* Parses "NAME=PATH[,key=value...]" with keys kind (class|classification|
 * regression|auto), weight, mpp, valid, holdout, max-train, max-valid,
 * balanced (0|1). Fails with NIC_EINVAL and a message naming the problem. */
nic_status nic_enc_task_parse(const char *arg, nic_enc_task *t, nic_error *err);

/* ---- training ----------------------------------------------------------------- */

typedef enum nic_enc_objective {
  NIC_ENC_SUPERVISED = 0, /* one head per task (multitask) */
  NIC_ENC_CONTRASTIVE,    /* NT-Xent between two augmented views of each patch */
  NIC_ENC_AUTOENCODER     /* reconstruct a 32 x 32 thumbnail of the patch */
} nic_enc_objective;

typedef enum nic_enc_mix {
  NIC_ENC_MIX_PROPORTIONAL = 0, /* every batch holds tasks in proportion to their sizes */
  NIC_ENC_MIX_UNIFORM,          /* every batch holds the same number of samples of each task */
  NIC_ENC_MIX_ROUND_ROBIN       /* each batch comes from one task, in turn */
} nic_enc_mix;

const char *nic_enc_objective_name(nic_enc_objective o); /* "supervised", "contrastive", ... */
const char *nic_enc_mix_name(nic_enc_mix m);             /* "proportional", ... */

/* What a run reports: after every optimizer step (end == 0) and at the end
 * of every epoch, after validation (end == 1). */
typedef struct nic_enc_progress {
  int epoch, epochs;   /* 0-based epoch and the most there can be */
  int64_t step, steps; /* optimizer steps done in this epoch, of `steps` */
  int64_t samples;     /* patches seen in this epoch */
  double seconds;      /* training time of this epoch so far (validation excluded) */
  double loss;         /* mean training loss of the epoch so far */
  int end;             /* 1: the epoch is over and `summary` is set */
  const char *summary; /* one line: per-task validation metrics */
  double monitor;      /* the monitored value (NaN without validation) */
  int improved;        /* this epoch is the best so far (the encoder was written) */
  int stopping;        /* early stopping ends the run here */
} nic_enc_progress;

typedef void (*nic_enc_progress_fn)(void *user, const nic_enc_progress *p);
/* A line worth telling the user (setup, resume); no trailing newline. */
typedef void (*nic_enc_log_fn)(void *user, const char *line);

typedef struct nic_enc_train_opts {
  const char *output; /* the encoder file to write (required) */
  const char *name;   /* encoder_name in its metadata; NULL = the file's base name */
  const char *arch;   /* "nic" (default) or "resnet-small" */
  int embed_dim;      /* 128 */
  int head_hidden;    /* units of a hidden ReLU layer in each head; 0 = linear heads */
  float bn_momentum;  /* trunk batch norms, Keras sense (0.9 = PyTorch's 0.1) */
  nic_enc_objective objective;
  float temperature;       /* contrastive: NT-Xent temperature (0.2) */
  int proj_dim;            /* contrastive: projection size (64) */
  int epochs;              /* at most this many (10) */
  int64_t steps_per_epoch; /* optimizer steps per epoch; 0 = one pass over the training items */
  int batch;               /* patches per step (64) */
  nic_enc_mix mix;
  int balanced;             /* class-balanced sampling within each task (0) */
  nic_augment augment;      /* training augmentation (nic_augment_default) */
  nic_opt_config opt;       /* AdamW, lr 1e-3, weight decay 1e-4 */
  nic_sched_kind schedule;  /* CONSTANT, STEP (x0.1 every third of the run), COSINE (default)
                               or PLATEAU (x0.5 after 2 epochs without a better monitor) */
  int warmup;               /* cosine: linear warm-up epochs (0) */
  float min_lr;             /* cosine and plateau floor (0) */
  int patience;             /* stop after this many epochs without a better monitor; 0 = never */
  const char *monitor;      /* "loss" (weighted validation loss, default) or "TASK.METRIC"
                               with METRIC accuracy, balanced_accuracy, auc, mae or loss */
  int loader_threads;       /* decoding threads of each task's loader (1) */
  uint64_t seed;            /* initialisation, order, augmentation (1) */
  float ema;                /* > 0: validate and write an exponential moving average of the
                               weights with this decay per step (e.g. 0.999); 0 = off */
  const char *init;         /* start the trunk (and heads of the same tasks) from this
                               encoder or checkpoint instead of random values; NULL = off */
  int resume;               /* continue from the checkpoint next to the output */
  const char *command_line; /* recorded in the model card */
  nic_enc_progress_fn progress;
  nic_enc_log_fn log;
  void *user;
} nic_enc_train_opts;

nic_enc_train_opts nic_enc_train_default_opts(void);

/* Trains an encoder on the tasks (for the unsupervised objectives their
 * labels are ignored) and writes, next to each other:
 *   OUTPUT              the trunk with the best validation monitor (the last
 *                       epoch's without validation), model card in its
 *                       metadata key "model_card"
 *   OUTPUT.card.json    the model card (".safetensors" is dropped first)
 *   OUTPUT.ckpt.safetensors  the latest epoch: trunk, heads and the
 *                       training state (metadata key "train_state")
 * The context supplies the compute threads; its random stream is reseeded
 * from opts->seed. */
nic_status nic_encoder_train(nic_ctx *ctx, const nic_enc_task *tasks, int ntasks,
                             const nic_enc_train_opts *opts, nic_error *err);

/* The card and checkpoint paths for an output path. */
void nic_enc_card_path(const char *output, char *buf, size_t n);
void nic_enc_checkpoint_path(const char *output, char *buf, size_t n);

/* Uniform weight average of n >= 1 encoders or training checkpoints of one
 * architecture ("model soup" over runs fine-tuned from one start, or SWA
 * over the checkpoints of one run): every stored value, batch-norm
 * statistics included, becomes the mean over the inputs. A checkpoint that
 * carries a moving average (--ema) contributes that average unless live is
 * set; optimizer state is not kept. The first input's graph and metadata are
 * written to out (atomically) with "averaged_from" added: each input's path,
 * sha256 and which weights were taken. Averaging checkpoints gives a model
 * file with the trunk and the heads, which --init takes whole. Inputs whose
 * parameters differ in name or shape are refused. *from_ema (may be NULL)
 * receives how many inputs contributed their moving average. */
nic_status nic_enc_average(const char *const *paths, int n, int live, const char *out,
                           int *from_ema, nic_error *err);

/* NT-Xent (SimCLR's normalised temperature-scaled cross-entropy) on z,
 * 2M x P: rows i and i+M are the two views of one patch. Each row is
 * L2-normalised; row i's loss is -log(exp(s(i,j)/t) / sum_{k != i}
 * exp(s(i,k)/t)) with j its partner and s the cosine similarity; *loss is
 * the mean over the 2M rows. grad (optional) receives d(loss)/d(z). *top1
 * (optional) gets the share of rows whose most similar other row is their
 * partner. */
nic_status nic_enc_ntxent(const nic_tensor *z, float temperature, float *loss, nic_tensor *grad,
                          double *top1, nic_error *err);

/* ---- embedding and probing ------------------------------------------------------- */

/* Embeddings of the items of `split` (a nic_split or NIC_SPLIT_ANY) of ds,
 * in dataset order: each item as the model's patch (nic_dataset_load at the
 * model's patch size and spacing), in batches of `batch`, decoded by
 * `threads` loader threads, run in eval mode. *features is n x dim (malloc),
 * *labels n class labels (malloc; may be NULL). For speed optimize the model
 * for inference first. */
typedef void (*nic_embed_progress_fn)(void *user, int64_t done, int64_t total);
nic_status nic_encoder_embed_dataset(nic_ctx *ctx, nic_model *m, nic_dataset *ds, int split,
                                     int batch, int threads, float **features, int **labels,
                                     int64_t *n, int *dim, nic_embed_progress_fn progress,
                                     void *user, nic_error *err);

/* Multinomial logistic regression with L2 penalty on standardised
 * features: minimises sum_i CE_i + ||W||^2 / (2C) over W (k x d) and
 * biases (not penalised), as scikit-learn's LogisticRegression(C=C,
 * multi_class="multinomial"), by L-BFGS. Features are standardised with
 * the training mean and standard deviation. */
typedef struct nic_logreg {
  int d, k;
  double *w;     /* k x (d + 1): weights, then the bias */
  double *mean;  /* d */
  double *scale; /* d: 1 / standard deviation (1 for constant features) */
  int iterations;
} nic_logreg;

nic_status nic_logreg_fit(const float *x, const int *y, int64_t n, int d, int k, double C,
                          nic_logreg *out, nic_error *err);
/* n x k class probabilities. */
void nic_logreg_predict(const nic_logreg *lr, const float *x, int64_t n, double *proba);
void nic_logreg_free(nic_logreg *lr);

/* Split value for nic_probe_opts meaning "choose" (see nic_probe). */
#define NIC_PROBE_SPLIT_AUTO (-2)

typedef struct nic_probe_opts {
  int train_split;   /* nic_split, NIC_SPLIT_ANY or NIC_PROBE_SPLIT_AUTO (default) */
  int test_split;    /* likewise */
  int64_t max_train; /* seeded random subsets; 0 = all */
  int64_t max_test;
  double C;      /* <= 0 (default): chosen by cross-validation on the training embeddings */
  int folds;     /* cross-validation folds (3) */
  int batch;     /* patches per forward pass (128) */
  int threads;   /* loader threads (2) */
  uint64_t seed; /* subsets and folds (1) */
  nic_embed_progress_fn progress;
  void *user;
} nic_probe_opts;

nic_probe_opts nic_probe_default_opts(void);

typedef struct nic_probe_class {
  char name[64];
  int64_t n_train, n_test;
  double recall, precision; /* on the test items (NaN when undefined) */
  double auc;               /* one-vs-rest on the test items (NaN when undefined) */
} nic_probe_class;

typedef struct nic_probe_result {
  int k, dim;
  int64_t n_train, n_test;
  int train_split, test_split; /* the splits used */
  double C;                    /* the regularisation used */
  double cv_accuracy;          /* cross-validated accuracy of that C (NaN when C was given) */
  double accuracy, balanced_accuracy, auc; /* on the test items; auc macro one-vs-rest for k > 2 */
  nic_probe_class *classes;                /* k */
} nic_probe_result;

/* Embeds the chosen splits of train and test with m (eval mode; optimise it
 * for inference beforehand), fits the probe on train and evaluates it on
 * test. Both datasets must be classification datasets with the same
 * classes; their splits may be reassigned (they are the caller's, opened
 * for this). Automatic splits: train uses its "train" items when it has
 * some, else all; test uses "test", else "valid", else all, and is refused
 * when it would be the very same items as train. */
nic_status nic_probe(nic_ctx *ctx, nic_model *m, nic_dataset *train, nic_dataset *test,
                     const nic_probe_opts *opts, nic_probe_result *res, nic_error *err);
void nic_probe_result_free(nic_probe_result *res);

#ifdef __cplusplus
}
#endif
#endif
