/* Internals of the demo (include/nic/demo.h). The stages are split over
 * translation units by the public header they need (compress, or the slide
 * models).
 *
 *   demo.c        orchestration, stage keys (resume), report.md
 *   demo_data.c   simulate + compress    (sim.h, compress.h)
 *   demo_learn.c  train, evaluate, heatmaps (slidemodel.h, plot.h, sim.h) */
#ifndef NIC_DEMO_INTERNAL_H
#define NIC_DEMO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "nic/demo.h"
#include "nic/sim.h"

#define DEMO_PATH 4096 /* file paths */
#define DEMO_DIR 3072  /* folders, leaving room for file names in a DEMO_PATH */

/* A growing text buffer for the report's Markdown. */
typedef struct demo_text {
  char *s;
  size_t len, cap;
  int failed; /* an allocation failed: the text is truncated */
} demo_text;

void demo_text_printf(demo_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void demo_text_free(demo_text *t);

/* One demo run: options, where things go, what the stages found. */
typedef struct demo_run {
  nic_ctx *ctx;
  const nic_demo_opts *o;
  nic_demo_result *r;
  char slides_dir[DEMO_DIR];   /* <out>/slides */
  char features_dir[DEMO_DIR]; /* <out>/features */
  char run_dir[DEMO_DIR];      /* <out>/run */
  char encoder_name[256];
  char encoder_sha[80];
  int embed_dim;
  double cell_px; /* a grid cell's side in slide pixels (128 at 0.5 um/px) */
  /* evaluation, filled by demo_evaluate for the report */
  demo_text metrics_md;  /* the metrics table */
  demo_text folds_md;    /* the per-fold table */
  demo_text heatmaps_md; /* the heatmap table */
  int have_curves;       /* learning_curves.png was written */
} demo_run;

/* Reports a line through o->log (printf-style). */
void demo_log(const demo_run *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reports progress through o->progress. */
void demo_progress(const demo_run *d, nic_demo_stage stage, const char *label, int64_t done,
                   int64_t total, const char *unit);
/* mkdir -p */
nic_status demo_mkdirs(const char *dir, nic_error *err);

/* The encoder's name, checksum and embedding size, without compressing
 * anything (for the stage keys and the report). */
nic_status demo_encoder_info(demo_run *d, nic_error *err);
/* The simulator's options for the demo's cohort. */
nic_histo_opts demo_histo_opts(const demo_run *d);
/* Writes the cohort to slides_dir (replacing what is there). */
nic_status demo_simulate(demo_run *d, nic_error *err);
/* Compresses slides_dir/slides.csv into features_dir; overwrite redoes
 * finished slides. Sets r->slides and r->patches. */
nic_status demo_compress(demo_run *d, int overwrite, nic_error *err);
/* Cross-validates the slide CNN into run_dir (with curves.csv). */
nic_status demo_train(demo_run *d, nic_error *err);
/* Metrics of run_dir/predictions.csv, roc.png, learning_curves.png; fills
 * the result's AUC and summary and the report's tables. */
nic_status demo_evaluate(demo_run *d, nic_error *err);
/* Grad-CAM heatmaps of a few out-of-fold slides into <out>/heatmaps. */
nic_status demo_heatmaps(demo_run *d, nic_error *err);

#endif
