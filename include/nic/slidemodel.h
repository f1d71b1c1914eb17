/* Slide-level learning on compressed slides: step 3 of Neural Image
 * Compression. A model learns slide labels (a class, a number, or a
 * survival time) from the C x H x W embedding grids that `nic compress`
 * writes, and nothing else.
 *
 * The pieces, in the order a run uses them:
 *
 *   cohort       a labels CSV in CLAM's convention (case_id,slide_id,label;
 *                time,event for survival) joined with a folder of
 *                <slide_id>.h5 compressed slides
 *   splits       k folds at case level, stratified where the task allows,
 *                stored as CLAM's splits_<k>.csv (columns train,val,test)
 *   slide model  the NIC slide CNN on R x R crops of the grid, or gated
 *                attention MIL (ABMIL) on the grid's cells; trained with
 *                Adam, reduce-on-plateau and early stopping on the
 *                validation metric
 *   predictions  slide_id,label,score... CSV files, and their evaluation
 *                (AUC, accuracy, kappa, correlations, c-index, each with a
 *                bootstrap interval, per fold and mean +- sd) and plots
 *   heatmaps     Grad-CAM on the CNN's first convolution block, or ABMIL's
 *                attention, per grid cell: PNG overlay and QuPath GeoJSON
 *
 * Everything is seeded: the same inputs, options and thread count give the
 * same models and predictions. Design and formats: docs/slidemodel.md. */
#ifndef NIC_SLIDEMODEL_H
#define NIC_SLIDEMODEL_H

#include <stdint.h>
#include <stdio.h>

#include "nic/ctx.h"
#include "nic/features.h"
#include "nic/metrics.h"
#include "nic/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- tasks ------------------------------------------------------------- */

typedef enum nic_task {
  NIC_TASK_BINARY = 0, /* two classes; score = probability of the second */
  NIC_TASK_MULTICLASS, /* k >= 2 classes; one probability per class */
  NIC_TASK_REGRESSION, /* a number per slide */
  NIC_TASK_SURVIVAL    /* time and event per slide; score = risk (log hazard) */
} nic_task;

/* "binary", "multiclass", "regression", "survival". */
const char *nic_task_name(nic_task t);
nic_status nic_task_from_name(const char *name, nic_task *t, nic_error *err);
/* The metric a task is judged by: "auc", "spearman" or "c_index". */
const char *nic_task_main_metric(nic_task t);

/* A warning that does not stop a run (a labelled slide without features
 * file); msg is one line without a newline. */
typedef void (*nic_sm_warn_fn)(void *user, const char *msg);

/* ---- cohorts: labels joined with compressed slides ---------------------- */

typedef struct nic_cohort_slide {
  char *case_id;  /* patient; folds never split a case */
  char *slide_id; /* the file <features_dir>/<slide_id>.h5 */
  char *path;     /* that file, or NULL without a features folder */
  char *label;    /* the label column's text ("" when absent) */
  int cls;        /* classification: class index in [0, num_classes); else -1 */
  double value;   /* regression: the target; survival: the time */
  int event;      /* survival: 1 = event observed, 0 = censored */
} nic_cohort_slide;

typedef struct nic_cohort {
  nic_task task;
  int n; /* slides */
  nic_cohort_slide *slides;
  int num_classes;    /* classification tasks */
  char **class_names; /* class index -> label text: sorted numerically when
                       * every label is a number, else by bytes */
  int ordinal;        /* every class name is an integer (grades): kappa is
                       * then quadratically weighted */
  int skipped;        /* labelled slides left out for want of a features file */
} nic_cohort;

typedef struct nic_cohort_opts {
  const char *label_col; /* NULL = "label" (classification, regression) */
  const char *time_col;  /* NULL = "time" (survival) */
  const char *event_col; /* NULL = "event" (survival) */
  nic_sm_warn_fn warn;   /* missing features files; NULL = silent */
  void *warn_user;
  int any_classes; /* 1: accept any number of classes, one included (for
                    * labels of slides to predict, not to train on) */
} nic_cohort_opts;

nic_cohort_opts nic_cohort_default_opts(void);

/* Reads a labels CSV (a header naming case_id, slide_id and the task's
 * columns in any order; quoted fields allowed) and, when features_dir is
 * not NULL, keeps the slides whose <features_dir>/<slide_id>.h5 exists,
 * reporting each missing one through opts->warn. Fails with NIC_EFORMAT,
 * naming the file and line, on a missing column, an empty id, a slide
 * listed twice, a regression label or survival time that is not a finite
 * number, an event that is not 0/1, a binary task without exactly two
 * classes; with NIC_EINVAL when no slide is left. opts may be NULL. */
nic_status nic_cohort_load(nic_cohort *c, const char *labels_csv, const char *features_dir,
                           nic_task task, const nic_cohort_opts *opts, nic_error *err);
/* Every *.h5 file of a folder, sorted, or one .h5 file, without labels
 * (for prediction): slide_id = file name without ".h5", case_id = slide_id. */
nic_status nic_cohort_scan(nic_cohort *c, const char *features_dir, nic_error *err);
void nic_cohort_free(nic_cohort *c);

/* ---- splits --------------------------------------------------------------- */

/* Indices into the cohort's slides. */
typedef struct nic_fold {
  int ntrain, nval, ntest;
  int *train, *val, *test;
} nic_fold;

typedef struct nic_splits {
  int k;
  nic_fold *folds;
} nic_splits;

/* k >= 2 folds at case level: every case (all its slides) is in the test
 * set of exactly one fold; of the other cases, a stratified val_frac is the
 * fold's validation set and the rest its training set. Strata: the class
 * (a case with several classes takes its largest) for classification, the
 * event for survival, quartiles of the case's mean value for regression.
 * Within a stratum cases are shuffled with `seed` and dealt round robin,
 * so fold sizes differ by at most one case per stratum. */
nic_status nic_splits_kfold(const nic_cohort *c, int k, double val_frac, uint64_t seed,
                            nic_splits *s, nic_error *err);
/* One split without a test set: a stratified val_frac of the cases for
 * validation, the rest for training (for a final model). */
nic_status nic_splits_single(const nic_cohort *c, double val_frac, uint64_t seed, nic_splits *s,
                             nic_error *err);
/* Writes <dir>/splits_<i>.csv for each fold exactly as CLAM does (pandas'
 * to_csv with its index): a header ",train,val,test", then row r holding
 * r and the r-th slide id of each column, empty where a column is shorter.
 * Written atomically. */
nic_status nic_splits_save(const nic_splits *s, const nic_cohort *c, const char *dir,
                           nic_error *err);
/* Reads <dir>/splits_0.csv, splits_1.csv, ... (until one is missing),
 * with or without the index column. Slide ids not in the cohort (no label,
 * or no features file) are reported through warn and skipped; a slide in
 * two columns of one file is NIC_EFORMAT. A case with slides in both train
 * and test is reported through warn (the user's splits are taken as given). */
nic_status nic_splits_load(nic_splits *s, const nic_cohort *c, const char *dir, nic_sm_warn_fn warn,
                           void *warn_user, nic_error *err);
void nic_splits_free(nic_splits *s);

/* ---- slide models ---------------------------------------------------------- */

typedef enum nic_sm_kind {
  NIC_SM_CNN = 0, /* the NIC slide CNN on crops of the grid */
  NIC_SM_ABMIL,   /* gated attention MIL on the grid's tissue cells */
  NIC_SM_CLUSTER  /* cluster detector on crops of the grid: a linear score per cell,
                   * its mean over `smooth` x `smooth` cells, the maximum over the crop */
} nic_sm_kind;

const char *nic_sm_kind_name(nic_sm_kind k); /* "nic", "abmil", "cluster" */
nic_status nic_sm_kind_from_name(const char *name, nic_sm_kind *k, nic_error *err);

typedef enum nic_sm_balance {
  NIC_BALANCE_BATCHES = 0, /* classes drawn equally often into batches */
  NIC_BALANCE_WEIGHTS,     /* cross-entropy weighted by n / (k * n_class) */
  NIC_BALANCE_NONE
} nic_sm_balance;

/* What a training run reports after every step and at the end of every
 * epoch (step == steps). */
typedef struct nic_sm_progress {
  int fold, folds;   /* fold being trained (0-based) and how many */
  int epoch, epochs; /* 0-based epoch, and the most there can be */
  int step, steps;   /* optimizer steps done in this epoch, of `steps` */
  double loss;       /* mean training loss of the epoch so far */
  double val_metric; /* at epoch end: the validation main metric (NaN: none) */
  double val_loss;   /* at epoch end: validation loss (NaN: none) */
  float lr;
  int best_epoch; /* epoch of the best validation result so far (-1: none) */
  int stopping;   /* at epoch end: early stopping ends training here */
} nic_sm_progress;

typedef void (*nic_sm_progress_fn)(void *user, const nic_sm_progress *p);

typedef struct nic_sm_opts {
  nic_sm_kind kind;
  /* architecture */
  int crop;      /* CNN: crop side R in grid cells (400); smaller when every
                  * grid fits: the largest grid side rounded up to 64 */
  int filters;   /* CNN: filters of each separable convolution (128) */
  int strided;   /* CNN: how many of the eight blocks, from the first, have
                  * stride 2 (6, the paper's); fewer keep a finer map before
                  * the global pooling on grids much smaller than the crop */
  int hidden;    /* CNN: dense units; ABMIL: instance embedding L (128) */
  int attn_dim;  /* ABMIL: attention dimension D (128) */
  int pool;      /* CNN global pooling: -1 = by task (max for classification,
                  * average for regression and survival), or nic_pool_kind */
  float dropout; /* CNN: spatial dropout after each convolution block (0.2) */
  int scores;    /* cluster: linear score maps (1) */
  int smooth;    /* cluster: side of the mean filter over the score maps, odd (3) */
  /* training */
  int epochs;           /* at most this many (60) */
  int steps;            /* optimizer steps per epoch; 0 = one pass over the
                         * training slides, but at least 20 */
  int batch;            /* slides per optimizer step (CNN 16, ABMIL 8) */
  float lr;             /* Adam learning rate; 0 = by model (CNN 1e-3, ABMIL 2e-4, cluster 1e-2) */
  float weight_decay;   /* L2 (1e-4) */
  int patience;         /* early stopping after this many epochs without a
                         * better validation result (20; 0 = never) */
  int monitor_loss;     /* choose the epoch (and stop early) by the lowest
                         * validation loss instead of the main metric, as
                         * CLAM does: smoother on small validation sets (0) */
  int plateau_patience; /* halve the LR after this many epochs without a
                         * lower validation loss (10) */
  float min_lr;         /* (1e-6) */
  nic_sm_balance balance;
  int orientations;    /* 1: use features_orientations when the slides have it (1) */
  float occlusion;     /* CNN: probability of one zeroed box per training crop (0.25) */
  float instance_drop; /* ABMIL: fraction of instances dropped per training bag (0.1) */
  int max_instances;   /* ABMIL: training bags keep at most this many (8192) */
  int test_crops;      /* T: test-time crops (CNN) or orientations (ABMIL) averaged (8) */
  int64_t cache_mb;    /* slide rows kept in memory, MB (2048) */
  uint64_t seed;       /* initialisation, sampling, augmentation (1) */
  nic_sm_progress_fn progress;
  void *progress_user;
} nic_sm_opts;

nic_sm_opts nic_sm_default_opts(void);

typedef struct nic_slidemodel nic_slidemodel;

/* Trains a model on fold->train, choosing the epoch by the validation main
 * metric on fold->val (ties broken by the validation loss; without a
 * validation set, the last epoch). Runs on the context's backend and
 * threads, and reseeds the context's random stream from opts->seed, so
 * that a run is reproducible. The slides must share one embedding
 * dimension. */
nic_status nic_sm_train(nic_slidemodel **out, nic_ctx *ctx, const nic_cohort *c,
                        const nic_fold *fold, const nic_sm_opts *opts, nic_error *err);
void nic_sm_free(nic_slidemodel *m);

/* A model file is a nic model (.safetensors, docs/model-format.md) whose
 * metadata key "slidemodel" describes the task, classes, crop, feature
 * standardisation and target scaling. ABMIL's weights are stored as the
 * dense layers of a parameter-only graph. */
nic_status nic_sm_save(nic_slidemodel *m, const char *path, nic_error *err);
nic_status nic_sm_load(nic_slidemodel **out, const char *path, nic_error *err);

nic_sm_kind nic_sm_kind_of(const nic_slidemodel *m);
nic_task nic_sm_task(const nic_slidemodel *m);
/* Scores per slide: 1 (binary, regression, survival) or the class count. */
int nic_sm_num_scores(const nic_slidemodel *m);
int nic_sm_num_classes(const nic_slidemodel *m);
const char *nic_sm_class_name(const nic_slidemodel *m, int i);
int nic_sm_embed_dim(const nic_slidemodel *m);
int nic_sm_crop(const nic_slidemodel *m);       /* CNN crop side (0 for ABMIL) */
int nic_sm_best_epoch(const nic_slidemodel *m); /* -1 when unknown */

/* Scores one compressed slide: the probability of the second class
 * (binary), one probability per class (multiclass), the predicted value
 * (regression) or the risk (survival), averaged over the test-time crops
 * or orientations. Deterministic for a model, slide and thread count. */
nic_status nic_sm_predict(nic_slidemodel *m, nic_ctx *ctx, const char *path, double *scores,
                          nic_error *err);

/* Per-cell relevance, grid_h x grid_w floats (malloc'd into *values, NaN
 * where no tissue): CNN: Grad-CAM of the class score on the first
 * convolution block's output (batch norm folded, no dropout), over crops
 * tiling the grid; ABMIL: the attention weight of each cell. target is the
 * class to explain (-1: the second class for binary, the predicted class
 * for multiclass; ignored for regression and survival). Memory stays
 * proportional to the grid. */
nic_status nic_sm_heatmap(nic_slidemodel *m, nic_ctx *ctx, const char *path, int target,
                          float **values, int *grid_h, int *grid_w, nic_error *err);

/* QuPath GeoJSON: a FeatureCollection with one square Polygon "tile" per
 * finite value, in level-0 pixels of the slide meta describes, with the
 * value as measurement "score". Written atomically. */
nic_status nic_heatmap_write_geojson(const char *path, const nic_features_meta *meta,
                                     const float *values, nic_error *err);
/* A PNG of the values over an RGB image of the slide: `rgb` (w x h, at
 * `downsample` level-0 px per pixel) when given, else a drawing of the
 * tissue mask with cells of a few pixels. */
nic_status nic_heatmap_write_png(const char *path, const nic_features_meta *meta,
                                 const float *values, const uint8_t *mask, const uint8_t *rgb,
                                 int w, int h, double downsample, nic_error *err);

/* ---- predictions ------------------------------------------------------------ */

/* Called after each slide with the slides done so far and their number. */
typedef void (*nic_sm_count_fn)(void *user, int done, int total);

/* A predictions CSV: slide_id,label,score[,time,event][,fold], or
 * slide_id,label,score_<class>...[,fold] for multiclass. */
typedef struct nic_preds {
  nic_task task;
  int n;              /* rows */
  int k;              /* score columns */
  char **class_names; /* multiclass: the k classes (from score_<name>); binary: the
                       * two classes when known (NULL otherwise) */
  char **slide_id;    /* n */
  char **label;       /* n; "" = unknown */
  int *cls;           /* n: class index of label (classification), -1 = unknown */
  double *value;      /* n: regression target (NaN = unknown) */
  double *score;      /* n * k */
  double *time;       /* survival; NaN = unknown */
  int *event;         /* survival; -1 = unknown */
  int *fold;          /* n; -1 = none */
  int has_fold;
} nic_preds;

/* Allocates n rows with k scores each (everything unknown). */
nic_status nic_preds_alloc(nic_preds *p, nic_task task, int n, int k, nic_error *err);
nic_status nic_preds_write(const nic_preds *p, const char *path, nic_error *err);
/* Reads a predictions CSV. task < 0 infers it: time and event columns ->
 * survival; several score columns -> multiclass; labels that are names, or
 * two distinct numbers with every score in [0, 1] -> binary; other
 * numbers -> regression. */
nic_status nic_preds_read(nic_preds *p, const char *path, int task, nic_error *err);
void nic_preds_free(nic_preds *p);

/* Predicts every slide of a cohort into p (allocated here; free with
 * nic_preds_free). Labels travel along: a classification label is matched
 * to the model's classes by name (NIC_EINVAL, naming the slide, when it is
 * none of them); survival times and events, regression targets as they
 * are. A cohort from nic_cohort_scan gives rows without labels. */
nic_status nic_sm_predict_cohort(nic_slidemodel *m, nic_ctx *ctx, const nic_cohort *c, nic_preds *p,
                                 nic_sm_count_fn progress, void *user, nic_error *err);

/* ---- evaluation --------------------------------------------------------------- */

#define NIC_EVAL_MAX_METRICS 6

/* One set of samples (a fold, or everything pooled). */
typedef struct nic_eval_set {
  int fold; /* -1 for the pooled set */
  int n;
  int ok[NIC_EVAL_MAX_METRICS];          /* 0: undefined on this set */
  nic_interval ci[NIC_EVAL_MAX_METRICS]; /* estimate and bootstrap interval */
  int ci_ok[NIC_EVAL_MAX_METRICS];       /* 0: no interval (too few samples) */
} nic_eval_set;

typedef struct nic_eval {
  nic_task task;
  int nmetrics;
  const char *names[NIC_EVAL_MAX_METRICS]; /* first = the task's main metric */
  int nfolds;
  nic_eval_set *folds; /* nfolds sets, in fold order */
  nic_eval_set pooled;
  int kappa_quadratic;                       /* kappa is quadratically weighted (ordinal classes) */
  nic_summary summary[NIC_EVAL_MAX_METRICS]; /* over the folds where defined */
  int summary_ok[NIC_EVAL_MAX_METRICS];
} nic_eval;

typedef struct nic_eval_opts {
  int resamples;    /* bootstrap resamples (1000) */
  uint64_t seed;    /* (1) */
  double level;     /* (0.95) */
  double threshold; /* binary: score >= threshold is class 1 (0.5) */
  int ordinal;      /* multiclass: -1 = when every class name is an integer; 0/1 */
} nic_eval_opts;

nic_eval_opts nic_eval_default_opts(void);

/* Metrics of the task, each with a percentile bootstrap interval (stratified
 * by class or event), per fold and pooled, and their mean +- sd over folds:
 *   binary      auc, balanced accuracy, accuracy, kappa
 *   multiclass  macro one-vs-rest auc, balanced accuracy, accuracy, kappa
 *               (quadratic when ordinal)
 *   regression  spearman, pearson, mae
 *   survival    c_index
 * Rows without a known label are left out. */
nic_status nic_evaluate(const nic_preds *p, const nic_eval_opts *opts, nic_eval *e, nic_error *err);
void nic_eval_free(nic_eval *e);
/* A table: per fold, mean +- sd, pooled, each value with its interval. */
void nic_eval_print(const nic_eval *e, FILE *f);
/* The one-line summary "auc=0.912 auc_sd=0.031 bacc=... n=80 folds=5":
 * the main metric first; with several folds the mean over folds (and _sd),
 * else the pooled value. Metrics that are undefined are left out. */
void nic_eval_line(const nic_eval *e, char *buf, size_t size);
/* The ROC curves (per fold and pooled; per class one-vs-rest for
 * multiclass), or for survival the Kaplan-Meier curves of the low- and
 * high-risk halves (split at the median risk within each fold) with the
 * log-rank p-value. Regression: a scatter plot of prediction against truth. */
nic_status nic_eval_plot(const nic_preds *p, const char *path, nic_error *err);

/* ---- cross-validation ---------------------------------------------------------- */

/* Trains one model per fold of s and evaluates the out-of-fold predictions.
 * Writes to rundir (created if needed): splits_<i>.csv, fold_<i>.safetensors
 * (model.safetensors for a single split), predictions.csv (test slides of
 * every fold, or the validation slides of a single split without test set)
 * and metrics.json; fills e (free with nic_eval_free; it has no rows when
 * there was nothing to evaluate). command_line, when not NULL, is recorded
 * in metrics.json. */
nic_status nic_sm_crossval(nic_ctx *ctx, const nic_cohort *c, const nic_splits *s,
                           const nic_sm_opts *opts, const char *rundir, const char *command_line,
                           nic_eval *e, nic_error *err);

#ifdef __cplusplus
}
#endif
#endif
