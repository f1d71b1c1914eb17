/* The end-to-end demo: stages, resuming, and the report (include/nic/demo.h). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "demo/demo_internal.h"
#include "nic/version.h"

static const char *const stage_names[NIC_DEMO_NSTAGES] = {"simulate", "compress", "train",
                                                          "evaluate", "heatmaps", "report"};

const char *nic_demo_stage_name(nic_demo_stage s) {
  return s >= 0 && s < NIC_DEMO_NSTAGES ? stage_names[s] : "?";
}

nic_demo_opts nic_demo_default_opts(void) {
  nic_demo_opts o;
  memset(&o, 0, sizeof o);
  o.outdir = "out/demo";
  o.slides = 48;
  o.size = 4096;
  o.lesion_min = 0.01;
  o.lesion_max = 0.10;
  o.folds = 4;
  o.epochs = 30;
  o.patience = 10;
  o.heatmaps = 4;
  o.seed = 1;
  return o;
}

/* ---- small helpers ----------------------------------------------------------------- */

void demo_text_printf(demo_text *t, const char *fmt, ...) {
  if (t->failed) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = t->s ? vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap) : -1;
    va_end(ap);
    if (n >= 0 && t->s && (size_t)n < t->cap - t->len) {
      t->len += (size_t)n;
      return;
    }
    size_t need = t->len + (n > 0 ? (size_t)n : 0) + 256;
    size_t cap = t->cap ? t->cap : 1024;
    while (cap < need) cap *= 2;
    char *s = realloc(t->s, cap);
    if (!s) {
      t->failed = 1;
      return;
    }
    t->s = s;
    t->cap = cap;
  }
}

void demo_text_free(demo_text *t) {
  free(t->s);
  memset(t, 0, sizeof *t);
}

static const char *text_of(const demo_text *t) {
  return t->s ? t->s : "";
}

void demo_log(const demo_run *d, const char *fmt, ...) {
  if (!d->o->log) return;
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  d->o->log(d->o->user, line);
}

void demo_progress(const demo_run *d, nic_demo_stage stage, const char *label, int64_t done,
                   int64_t total, const char *unit) {
  if (d->o->progress) d->o->progress(d->o->user, stage, label, done, total, unit);
}

nic_status demo_mkdirs(const char *dir, nic_error *err) {
  char buf[DEMO_PATH];
  if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
    return nic_err(err, NIC_EINVAL, "path too long: %s", dir);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
      return nic_err(err, NIC_EIO, "cannot create %s: %s", buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST)
    return nic_err(err, NIC_EIO, "cannot create %s: %s", buf, strerror(errno));
  struct stat st;
  if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
    return nic_err(err, NIC_EIO, "%s is not a folder", buf);
  return NIC_OK;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of the process so far (user + system, all threads). */
static double cpu_s(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec * 1e-6;
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- stage keys: what a finished stage was made from --------------------------------- */

static void marker_path(const demo_run *d, nic_demo_stage s, char *buf, size_t size) {
  snprintf(buf, size, "%s/.demo/%s.done", d->o->outdir, stage_names[s]);
}

/* A marker holds the key, a separator line and the stage's seconds. */
#define MARK_SEP "\n--\n"

/* 1 when the stage finished before with exactly this key; seconds (when
 * not NULL) gets the wall and CPU time it took then. */
static int stage_done(const demo_run *d, nic_demo_stage s, const char *key, double *seconds) {
  char path[DEMO_PATH], buf[4096];
  marker_path(d, s, path, sizeof path);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  size_t k = strlen(key);
  if (strncmp(buf, key, k) != 0 || strncmp(buf + k, MARK_SEP, strlen(MARK_SEP)) != 0) return 0;
  if (seconds) sscanf(buf + k + strlen(MARK_SEP), "%lf %lf", &seconds[0], &seconds[1]);
  return 1;
}

/* Forgets stage s and every later one (before redoing s). */
static void stage_forget(const demo_run *d, nic_demo_stage s) {
  char path[DEMO_PATH];
  for (int k = s; k < NIC_DEMO_NSTAGES; k++) {
    marker_path(d, (nic_demo_stage)k, path, sizeof path);
    remove(path);
  }
}

/* Records stage s as finished with this key and its times. */
static nic_status stage_finish(const demo_run *d, nic_demo_stage s, const char *key,
                               nic_error *err) {
  char path[DEMO_PATH];
  snprintf(path, sizeof path, "%s/.demo", d->o->outdir);
  nic_status st = demo_mkdirs(path, err);
  if (st != NIC_OK) return st;
  marker_path(d, s, path, sizeof path);
  FILE *f = fopen(path, "w");
  int ok =
      f && fprintf(f, "%s%s%.2f %.2f\n", key, MARK_SEP, d->r->seconds[s], d->r->cpu_seconds[s]) > 0;
  if (f && fclose(f) != 0) ok = 0;
  if (!ok) return nic_err(err, NIC_EIO, "cannot write %s", path);
  return NIC_OK;
}

/* ---- the report ------------------------------------------------------------------------ */

static void report_timings(const demo_run *d, demo_text *t) {
  const nic_demo_result *r = d->r;
  demo_text_printf(t, "| stage | wall seconds | CPU seconds | |\n| --- | --- | --- | --- |\n");
  double cpu = 0;
  for (int s = 0; s < NIC_DEMO_REPORT; s++) {
    demo_text_printf(t, "| %s | %.1f | %.1f | %s |\n", stage_names[s], r->seconds[s],
                     r->cpu_seconds[s],
                     r->skipped[s] ? "done by an earlier run (its times), skipped now" : "");
    if (!r->skipped[s]) cpu += r->cpu_seconds[s];
  }
  demo_text_printf(t, "| **this run** | **%.1f** | **%.1f** | |\n", r->total_s, cpu);
}

static nic_status write_report(const demo_run *d, nic_error *err) {
  const nic_demo_opts *o = d->o;
  const nic_demo_result *r = d->r;
  double side_mm = o->size * 0.5e-3;
  demo_text t = {0};
  demo_text_printf(&t, "# nic demo\n\n");
  demo_text_printf(&t,
                   "Neural Image Compression end to end on a simulated cohort, made by nic %s.\n\n"
                   "```\n%s\n```\n\n",
                   nic_version(), o->command_line ? o->command_line : "nic demo");
  demo_text_printf(&t, "## Result\n\n");
  demo_text_printf(&t,
                   "**Slide-level AUC %.3f (95%% CI %.3f-%.3f)**, pooled over the out-of-fold "
                   "predictions of %d-fold cross-validation on %d slides.\n\n",
                   r->auc, r->auc_lo, r->auc_hi, o->folds, r->slides);
  demo_text_printf(&t, "![ROC curves per fold and pooled](roc.png)\n\n");
  demo_text_printf(&t, "## The pipeline\n\n");
  demo_text_printf(
      &t,
      "1. **simulate**: %d procedural H&E slides (`nic simulate histo`), %d x %d px at 0.5 um/px "
      "(%.1f x %.1f mm), half of them with tumour lesions covering %.0f-%.0f%% of the tissue "
      "(label 1 = tumour present): `slides/`.\n"
      "2. **compress**: tissue detection, then every 128 px tissue patch encoded by `%s` "
      "(sha256 %.12s..., %d values per patch): %lld patches, `features/<slide>.h5`.\n"
      "3. **train**: the NIC slide CNN (eight separable convolution blocks, global max "
      "pooling) on the embedding grids, %d-fold cross-validation stratified by label, at most "
      "%d epochs with early stopping on the validation AUC: `run/` (models, splits, "
      "`predictions.csv`, `metrics.json`).\n"
      "4. **evaluate**: metrics of the out-of-fold predictions with 95%% percentile bootstrap "
      "intervals (1000 resamples, stratified by class), ROC curves.\n"
      "5. **heatmaps**: Grad-CAM of the first convolution block for a few slides, each with "
      "the model of the fold that tested it.\n\n",
      o->slides, o->size, o->size, side_mm, side_mm, 100 * o->lesion_min, 100 * o->lesion_max,
      d->encoder_name, d->encoder_sha, d->embed_dim, (long long)r->patches, o->folds, o->epochs);
  demo_text_printf(&t, "## Metrics\n\n%s\n", text_of(&d->metrics_md));
  demo_text_printf(&t, "Summary line: `%s`\n\n", r->summary);
  demo_text_printf(&t, "## Folds\n\n%s\n", text_of(&d->folds_md));
  if (d->have_curves) demo_text_printf(&t, "![learning curves](learning_curves.png)\n\n");
  if (d->heatmaps_md.len)
    demo_text_printf(&t,
                     "## Heatmaps\n\nGrad-CAM (jet colours: red = most evidence for tumour) "
                     "over a thumbnail, beside the simulator's true tumour (red). The first rows "
                     "are the tumour slides the model was surest of, the last the normal slides "
                     "it found most suspicious.\n\n%s\n",
                     text_of(&d->heatmaps_md));
  demo_text_printf(&t, "## Timings\n\n");
  report_timings(d, &t);
  demo_text_printf(&t, "\nCPU seconds add up the time of all threads (on a busy machine "
                       "they also count threads waiting at barriers). Rerunning the same command "
                       "skips the finished stages; `--restart` redoes them.\n");
  nic_status st = NIC_OK;
  if (t.failed) st = nic_err(err, NIC_ENOMEM, "out of memory writing the report");
  char tmp[DEMO_PATH + 16];
  snprintf(tmp, sizeof tmp, "%s.tmp", r->report);
  if (st == NIC_OK) { /* atomically: a temporary file renamed into place */
    FILE *f = fopen(tmp, "w");
    int ok = f != NULL && fputs(text_of(&t), f) >= 0;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, r->report) != 0) {
      remove(tmp);
      st = nic_err(err, NIC_EIO, "cannot write %s", r->report);
    }
  }
  demo_text_free(&t);
  return st;
}

/* ---- the run ---------------------------------------------------------------------------- */

static nic_status check_opts(const nic_demo_opts *o, nic_error *err) {
  if (!o->outdir || !*o->outdir) return nic_err(err, NIC_EINVAL, "no output folder");
  if (strlen(o->outdir) > 2048) return nic_err(err, NIC_EINVAL, "output folder name too long");
  if (!o->model || !*o->model) return nic_err(err, NIC_EINVAL, "no encoder model given");
  if (o->folds < 2) return nic_err(err, NIC_EINVAL, "need at least 2 folds, got %d", o->folds);
  if (o->slides < 2 * o->folds)
    return nic_err(err, NIC_EINVAL,
                   "%d slides are too few for %d folds: need at least %d (one per class and fold)",
                   o->slides, o->folds, 2 * o->folds);
  if (o->size < 512 || o->size > 200000)
    return nic_err(err, NIC_EINVAL, "slide size %d px out of range (512 to 200000)", o->size);
  if (o->epochs < 1) return nic_err(err, NIC_EINVAL, "need at least one epoch");
  if (!(o->lesion_min > 0 && o->lesion_min <= o->lesion_max && o->lesion_max <= 0.9))
    return nic_err(err, NIC_EINVAL, "lesion fraction %g,%g: need 0 < min <= max <= 0.9",
                   o->lesion_min, o->lesion_max);
  return NIC_OK;
}

/* Runs stage s when its key is new (or always, for the cheap ones);
 * returns whether it ran in *ran. */
typedef nic_status (*stage_fn)(demo_run *d, nic_error *err);

static nic_status run_stage(demo_run *d, nic_demo_stage s, const char *key, int always, stage_fn fn,
                            int *ran, nic_error *err) {
  double t0 = now_s(), c0 = cpu_s();
  *ran = 0;
  double before[2] = {0, 0};
  if (!always && !d->o->restart && stage_done(d, s, key, before)) {
    d->r->skipped[s] = 1;
    d->r->seconds[s] = before[0];
    d->r->cpu_seconds[s] = before[1];
    demo_log(d, "== %s: done before (%.1f s) with the same options, skipped", stage_names[s],
             before[0]);
    return NIC_OK;
  }
  demo_log(d, "== %s", stage_names[s]);
  stage_forget(d, s);
  nic_status st = fn(d, err);
  d->r->seconds[s] = now_s() - t0;
  d->r->cpu_seconds[s] = cpu_s() - c0;
  if (st == NIC_OK && !always) st = stage_finish(d, s, key, err);
  if (st == NIC_OK) {
    *ran = 1;
    demo_log(d, "== %s: %.1f s", stage_names[s], d->r->seconds[s]);
  }
  return st;
}

nic_status nic_demo_run(nic_ctx *ctx, const nic_demo_opts *o, nic_demo_result *r, nic_error *err) {
  memset(r, 0, sizeof *r);
  r->auc = r->auc_lo = r->auc_hi = NAN;
  nic_status st = check_opts(o, err);
  if (st != NIC_OK) return st;
  double t0 = now_s();
  demo_run d;
  memset(&d, 0, sizeof d);
  d.ctx = ctx;
  d.o = o;
  d.r = r;
  snprintf(d.slides_dir, sizeof d.slides_dir, "%s/slides", o->outdir);
  snprintf(d.features_dir, sizeof d.features_dir, "%s/features", o->outdir);
  snprintf(d.run_dir, sizeof d.run_dir, "%s/run", o->outdir);
  snprintf(r->report, sizeof r->report, "%s/report.md", o->outdir);
  st = demo_mkdirs(o->outdir, err);
  if (st == NIC_OK) st = demo_encoder_info(&d, err);
  if (st != NIC_OK) return st;
  demo_log(&d, "nic demo -> %s: %d slides of %d px, encoder %s (%d values), %d folds, %d threads",
           o->outdir, o->slides, o->size, d.encoder_name, d.embed_dim, o->folds,
           nic_ctx_threads(ctx));

  /* Each key extends the one before, so a change redoes what follows. */
  char key_sim[512], key_comp[1024], key_train[1536];
  snprintf(key_sim, sizeof key_sim, "simulate slides=%d size=%d lesion=%.6g,%.6g seed=%llu",
           o->slides, o->size, o->lesion_min, o->lesion_max, (unsigned long long)o->seed);
  snprintf(key_comp, sizeof key_comp, "%s\ncompress encoder=%s", key_sim, d.encoder_sha);
  snprintf(key_train, sizeof key_train, "%s\ntrain folds=%d epochs=%d patience=%d seed=%llu",
           key_comp, o->folds, o->epochs, o->patience, (unsigned long long)o->seed);
  int ran = 0;
  st = run_stage(&d, NIC_DEMO_SIMULATE, key_sim, 0, demo_simulate, &ran, err);
  if (st == NIC_OK) {
    /* Compression always runs: nic_compress_run skips finished slides
     * itself. Every slide is redone when the slides or the encoder changed. */
    int same = !ran && !o->restart && stage_done(&d, NIC_DEMO_COMPRESS, key_comp, NULL);
    double tc = now_s(), cc = cpu_s();
    if (!same) stage_forget(&d, NIC_DEMO_COMPRESS);
    demo_log(&d, "== compress%s", same ? " (resuming: finished slides are skipped)" : "");
    st = demo_compress(&d, !same, err);
    r->seconds[NIC_DEMO_COMPRESS] = now_s() - tc;
    r->cpu_seconds[NIC_DEMO_COMPRESS] = cpu_s() - cc;
    if (st == NIC_OK && !same) st = stage_finish(&d, NIC_DEMO_COMPRESS, key_comp, err);
    if (st == NIC_OK) demo_log(&d, "== compress: %.1f s", r->seconds[NIC_DEMO_COMPRESS]);
  }
  if (st == NIC_OK) st = run_stage(&d, NIC_DEMO_TRAIN, key_train, 0, demo_train, &ran, err);
  if (st == NIC_OK) st = run_stage(&d, NIC_DEMO_EVALUATE, "", 1, demo_evaluate, &ran, err);
  if (st == NIC_OK) st = run_stage(&d, NIC_DEMO_HEATMAPS, "", 1, demo_heatmaps, &ran, err);
  r->total_s = now_s() - t0;
  if (st == NIC_OK) {
    demo_log(&d, "== report");
    st = write_report(&d, err); /* takes next to nothing: not timed */
    if (st == NIC_OK) demo_log(&d, "== report: %s", r->report);
  }
  demo_text_free(&d.metrics_md);
  demo_text_free(&d.folds_md);
  demo_text_free(&d.heatmaps_md);
  if (st == NIC_OK && !file_exists(r->report))
    st = nic_err(err, NIC_EIO, "the report %s was not written", r->report);
  return st;
}
