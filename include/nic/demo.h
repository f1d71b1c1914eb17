/* The end-to-end demo behind `nic demo` and `make demo`: the whole Neural
 * Image Compression pipeline on a simulated cohort, with a report.
 *
 * Stages, in order (each one's outputs live under the demo folder):
 *
 *   simulate   procedural H&E slides with a tumour-present label
 *              (nic_histo_generate)                       slides/
 *   compress   tissue detection and patch encoding with the encoder
 *              (nic_compress_run, itself resumable)       features/
 *   train      k-fold cross-validation of the NIC slide CNN
 *              (nic_sm_crossval)                          run/
 *   evaluate   metrics with bootstrap intervals, ROC and learning curves
 *   heatmaps   Grad-CAM of a few test slides over their thumbnails
 *   report     report.md: figures, metrics, timings, the command line
 *
 * Resuming: a finished stage leaves a key (its options and those of the
 * stages before it) in <outdir>/.demo/<stage>.done; running again with the
 * same options skips it, any change redoes it and everything after it.
 * Evaluation, heatmaps and the report are cheap and always redone. */
#ifndef NIC_DEMO_H
#define NIC_DEMO_H

#include <signal.h>
#include <stdint.h>

#include "nic/ctx.h"
#include "nic/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nic_demo_stage {
  NIC_DEMO_SIMULATE = 0,
  NIC_DEMO_COMPRESS,
  NIC_DEMO_TRAIN,
  NIC_DEMO_EVALUATE,
  NIC_DEMO_HEATMAPS,
  NIC_DEMO_REPORT,
  NIC_DEMO_NSTAGES
} nic_demo_stage;

/* "simulate", "compress", ... */
const char *nic_demo_stage_name(nic_demo_stage s);

/* A line of news for the user (no newline), e.g. "compress: [3/40] ...". */
typedef void (*nic_demo_log_fn)(void *user, const char *line);
/* Progress within a stage: done of total units ("slides", "steps", ...). */
typedef void (*nic_demo_progress_fn)(void *user, nic_demo_stage stage, const char *label,
                                     int64_t done, int64_t total, const char *unit);

typedef struct nic_demo_opts {
  const char *outdir;                  /* the demo folder (created if needed) */
  const char *model;                   /* the patch encoder (.safetensors); required */
  int slides;                          /* cohort size, half with tumour (48) */
  int size;                            /* slide side in px at 0.5 um/px (4096) */
  double lesion_min;                   /* tumour area / tissue area on tumour slides is */
  double lesion_max;                   /*   drawn from [lesion_min, lesion_max] (0.01, 0.10) */
  int folds;                           /* cross-validation folds (4) */
  int epochs;                          /* slide CNN: at most this many epochs (30) */
  int patience;                        /* early stopping patience in epochs (10) */
  int heatmaps;                        /* slides shown with Grad-CAM heatmaps (4) */
  uint64_t seed;                       /* the cohort, the folds, the training (1) */
  int restart;                         /* 1: redo every stage */
  const char *command_line;            /* recorded in the report and the outputs (may be NULL) */
  const volatile sig_atomic_t *cancel; /* stops compression between batches (Ctrl-C) */
  nic_demo_log_fn log;                 /* may be NULL */
  nic_demo_progress_fn progress;       /* may be NULL */
  void *user;
} nic_demo_opts;

nic_demo_opts nic_demo_default_opts(void);

typedef struct nic_demo_result {
  double seconds[NIC_DEMO_NSTAGES];     /* wall time of each stage */
  double cpu_seconds[NIC_DEMO_NSTAGES]; /* CPU time (user + system, all threads) */
  int skipped[NIC_DEMO_NSTAGES];        /* 1: done by an earlier run (times are that run's) */
  double total_s;
  int slides;      /* slides in the cohort that were compressed and evaluated */
  int64_t patches; /* patches in the compressed cohort */
  double auc;      /* pooled out-of-fold AUC */
  double auc_lo;   /* and its 95% bootstrap interval */
  double auc_hi;
  char summary[1024]; /* the evaluation's name=value line (mean over folds first) */
  char report[4096];  /* path of report.md */
} nic_demo_result;

/* Runs (or resumes) the demo in o->outdir on ctx's threads. Errors name
 * the stage. A slide that fails to compress is reported through o->log and
 * left out; the run fails when fewer than two slides per class remain. */
nic_status nic_demo_run(nic_ctx *ctx, const nic_demo_opts *o, nic_demo_result *r, nic_error *err);

#ifdef __cplusplus
}
#endif
#endif
