/* Private: the state of an encoder training run, shared by train.c (the
 * loop), train_tasks.c (datasets and splits), train_heads.c (heads and
 * objectives) and train_state.c (model card, checkpoints, resume). */
#ifndef NIC_ENCODER_TRAIN_INTERNAL_H
#define NIC_ENCODER_TRAIN_INTERNAL_H

#include <json-c/json.h>

#include "nic/encoder_train.h"

/* Validation results of one task for one epoch; NaN = not applicable. */
typedef struct enc_metrics {
  int64_t n; /* validation items seen (0: no validation) */
  double loss;
  double accuracy, balanced_accuracy, auc; /* classification */
  double mae;                              /* regression, in the label's units */
  double top1;                             /* contrastive: partner retrieval */
} enc_metrics;

typedef struct enc_task {
  nic_enc_task spec;
  int index;
  nic_dataset *ds;
  nic_enc_kind kind;      /* resolved: CLASS or REGRESSION (supervised runs) */
  int nclass;             /* CLASS: number of classes */
  double vmean, vsd;      /* REGRESSION: standardisation of the training targets */
  int64_t ntrain, nvalid; /* items used */
  int64_t *train_class;   /* CLASS: training items per class (nclass) */
  int64_t *valid_class;   /* CLASS: validation items per class */
  int64_t stratified;     /* items assigned to a split by the stratified fraction */
  int balanced;           /* class-balanced sampling (resolved) */
  /* the training stream */
  nic_loader *loader;
  int sub;           /* samples of this task per combined batch */
  int64_t sub_epoch; /* loader epochs begun during the current training epoch */
  /* supervised head (NULL otherwise) */
  nic_model *head;
  int active;      /* has samples in the current batch */
  int errors_told; /* the loader's unreadable items reported so far */
  /* training accumulators of the current epoch */
  double loss_sum, loss_w;
  int64_t correct, seen;
  enc_metrics val;
} enc_task;

typedef struct enc_run {
  nic_ctx *ctx;
  const nic_enc_train_opts *o;
  enc_task *t;
  int nt;
  nic_model *trunk;
  nic_model *shared; /* the contrastive projection or the autoencoder decoder */
  int P;             /* patch side */
  double mpp;        /* patch spacing */
  int dim;           /* embedding size */
  nic_optimizer *opt;
  nic_schedule sched;
  int64_t steps; /* optimizer steps per epoch */
  /* the combined batch */
  int cap;      /* samples it can hold (twice the batch for contrastive views) */
  int n;        /* samples in it now */
  uint8_t *pix; /* cap x P x P x 3 */
  uint8_t *raw; /* contrastive: the un-augmented patches (batch x P x P x 3) */
  int *task_of, *label;
  float *value; /* standardised regression targets */
  float *mask;  /* nt x cap, task-major */
  nic_tensor x, demb, dsum, g, e4, target;
  nic_param **params;
  int nparams, cap_params;
  /* progress of the run */
  int epoch;      /* the next epoch to run */
  double best;    /* the best monitored value so far (NaN: none yet) */
  int best_epoch; /* 0-based, -1 = none */
  int bad_epochs;
  int stopped;          /* early stopping ended the run */
  int64_t skipped;      /* steps skipped for a non-finite gradient */
  json_object *history; /* array of per-epoch records */
  int opt_restored;     /* resume: the checkpoint's optimizer state was restored */
  /* weight averaging (train_ema.c) */
  nic_param **ema_p; /* every parameter of trunk, heads and shared head */
  float **ema_v;     /* their averages (or, while swapped in, the live values) */
  int ema_n;
  int64_t ema_steps;                     /* updates so far (the decay warms up over them) */
  int ema_live;                          /* 1 while the averages are in the models (enc_ema_swap) */
  int init_heads;                        /* --init: heads taken from the file */
  char init_path[4096], init_sha256[65]; /* --init's file and checksum ("" = none) */
  char card_path[4200], ckpt_path[4200];
  char created[32]; /* when the run began (UTC, ISO 8601) */
} enc_run;

/* ---- train_tasks.c ---- */

/* Opens the dataset, resolves the kind, assigns and subsets the splits and
 * computes the label statistics; t->spec must be set. */
nic_status enc_task_setup(enc_task *t, const nic_enc_train_opts *o, nic_error *err);
void enc_task_release(enc_task *t);
/* "tumour: 9000 train (0: 5000, 1: 4000), 1000 valid; classification" */
void enc_task_describe(const enc_task *t, const nic_enc_train_opts *o, char *buf, size_t n);

/* ---- train_heads.c ---- */

/* Builds the heads the objective needs (task heads or the shared head),
 * initialised from the context's stream. */
nic_status enc_heads_build(enc_run *r, nic_error *err);
/* Forward, loss and backward of every head on embeddings e (N x dim) of the
 * combined batch (training mode), summing d(loss)/d(e) into r->dsum and the
 * weighted loss into *loss. */
nic_status enc_heads_step(enc_run *r, const nic_tensor *e, float *loss, nic_error *err);
/* Makes two augmented views of the r->n raw patches for the contrastive
 * objective (stream per sample from seed, epoch and index). */
void enc_make_views(enc_run *r, int n, uint64_t seed, int64_t epoch, int64_t first);
/* Downsamples the batch to the autoencoder's 32 x 32 normalised target. */
nic_status enc_ae_target(enc_run *r, nic_error *err);

/* ---- train_eval.c ---- */

/* Runs every task's validation items through trunk and heads in eval mode
 * and fills t->val. */
nic_status enc_validate(enc_run *r, nic_error *err);
/* The monitored value of the last validation (NaN without validation) and
 * whether higher is better. */
double enc_monitor_value(const enc_run *r, int *higher_better);
/* Checks a monitor name ("loss" or "TASK.METRIC") against the tasks. */
nic_status enc_monitor_check(const enc_run *r, nic_error *err);

/* ---- train.c ---- */

/* Every parameter of the run: trunk, then the task heads, then the shared
 * head. Fills out when it is non-NULL; returns how many there are. */
int enc_all_params(const enc_run *r, nic_param **out);

/* ---- train_ema.c ---- */

/* Allocates the averages (when o->ema > 0) as copies of the current
 * parameters; call after the heads are built. */
nic_status enc_ema_setup(enc_run *r, nic_error *err);
/* Restarts the averages at the current parameters. */
void enc_ema_reset(enc_run *r);
/* One update after an optimizer step. */
void enc_ema_update(enc_run *r);
/* Exchanges live parameters and averages (call twice to undo). */
void enc_ema_swap(enc_run *r);
void enc_ema_free(enc_run *r);
/* Copies the trunk, and the heads it has, from an encoder or checkpoint. */
nic_status enc_init_from(enc_run *r, const char *path, nic_error *err);

/* ---- train_state.c ---- */

/* The model card of the run so far (caller frees with json_object_put). */
json_object *enc_card(const enc_run *r);
/* Writes the card next to the output and the trunk to the output. */
nic_status enc_save_encoder(enc_run *r, nic_error *err);
/* Writes the model card next to the output. */
nic_status enc_write_card(enc_run *r, nic_error *err);
/* Writes the checkpoint (trunk + heads + training state). */
nic_status enc_save_checkpoint(enc_run *r, nic_error *err);
/* The seed a checkpoint's run used. */
nic_status enc_checkpoint_seed(const char *path, uint64_t *seed, nic_error *err);
/* Restores parameters, optimizer state (r->opt_restored: 0 when the
 * checkpoint has none, as older ones) and training state from the
 * checkpoint. */
nic_status enc_load_checkpoint(enc_run *r, nic_error *err);
/* Appends src's layers to dst, src's input becoming dst's node map0; batch
 * norms get bn_momentum when it is > 0. Returns the last node, or -1. */
int enc_copy_nodes(nic_model *dst, nic_model *src, int map0, float bn_momentum, nic_error *err);
/* Copies every parameter of dst from src's parameter of the same name. */
nic_status enc_copy_params(nic_model *dst, nic_model *src, const char *what, nic_error *err);

/* A stream seed for purpose `what` and index i of a run seeded with seed. */
uint64_t enc_seed(uint64_t seed, uint64_t what, uint64_t i);

#endif
