/* The demo's learning stages: cross-validating the slide CNN, evaluating
 * its out-of-fold predictions, and Grad-CAM heatmaps of a few slides. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "demo/demo_internal.h"
#include "nic/features.h"
#include "nic/plot.h"
#include "nic/sim.h"
#include "nic/slide.h"
#include "nic/slidemodel.h"

/* ---- train -------------------------------------------------------------------- */

/* One epoch of one fold, for the learning curves. */
typedef struct curve_point {
  int fold, epoch;
  double loss, val_metric, val_loss;
} curve_point;

typedef struct train_view {
  const demo_run *d;
  curve_point *pts;
  int n, cap;
  int fold_shown;
  char label[64];
} train_view;

static void on_train(void *user, const nic_sm_progress *p) {
  train_view *v = user;
  if (v->fold_shown != p->fold) {
    v->fold_shown = p->fold;
    snprintf(v->label, sizeof v->label, "train fold %d/%d", p->fold + 1, p->folds);
  }
  demo_progress(v->d, NIC_DEMO_TRAIN, v->label, (int64_t)p->epoch * p->steps + p->step,
                (int64_t)p->epochs * p->steps, "steps");
  if (p->step < p->steps) return;
  if (v->n == v->cap) { /* a failed growth only loses curve points */
    int cap = v->cap ? 2 * v->cap : 64;
    curve_point *q = realloc(v->pts, (size_t)cap * sizeof *q);
    if (!q) return;
    v->pts = q;
    v->cap = cap;
  }
  v->pts[v->n++] = (curve_point){p->fold, p->epoch, p->loss, p->val_metric, p->val_loss};
  if (p->stopping)
    demo_log(v->d, "train: fold %d/%d stops early after epoch %d (best epoch %d)", p->fold + 1,
             p->folds, p->epoch + 1, p->best_epoch + 1);
}

static nic_status write_curves(const char *path, const train_view *v, nic_error *err) {
  FILE *f = fopen(path, "w");
  if (!f) return nic_err(err, NIC_EIO, "cannot write %s", path);
  fprintf(f, "fold,epoch,loss,val_auc,val_loss\n");
  for (int i = 0; i < v->n; i++)
    fprintf(f, "%d,%d,%.6g,%.6g,%.6g\n", v->pts[i].fold, v->pts[i].epoch, v->pts[i].loss,
            v->pts[i].val_metric, v->pts[i].val_loss);
  if (fclose(f) != 0) return nic_err(err, NIC_EIO, "cannot write %s", path);
  return NIC_OK;
}

static void cohort_warn(void *user, const char *msg) {
  demo_log(user, "train: %s", msg);
}

nic_status demo_train(demo_run *d, nic_error *err) {
  const nic_demo_opts *o = d->o;
  char labels[DEMO_PATH];
  snprintf(labels, sizeof labels, "%s/labels.csv", d->slides_dir);
  nic_cohort_opts co = nic_cohort_default_opts();
  co.warn = cohort_warn;
  co.warn_user = d;
  nic_cohort c;
  nic_status st = nic_cohort_load(&c, labels, d->features_dir, NIC_TASK_BINARY, &co, err);
  if (st != NIC_OK) return nic_err_prefix(err, "training: ");
  int per_class[2] = {0, 0};
  for (int i = 0; i < c.n; i++)
    if (c.slides[i].cls >= 0 && c.slides[i].cls < 2) per_class[c.slides[i].cls]++;
  if (per_class[0] < o->folds || per_class[1] < o->folds) {
    nic_cohort_free(&c);
    return nic_err(err, NIC_EINVAL,
                   "training: %d normal and %d tumour slides are too few for %d folds (at least "
                   "one of each class per fold); use more --slides or fewer --folds",
                   per_class[0], per_class[1], o->folds);
  }
  nic_splits s;
  st = nic_splits_kfold(&c, o->folds, 0.2, o->seed, &s, err);
  if (st != NIC_OK) {
    nic_cohort_free(&c);
    return nic_err_prefix(err, "training: ");
  }
  train_view v;
  memset(&v, 0, sizeof v);
  v.d = d;
  v.fold_shown = -1;
  nic_sm_opts so = nic_sm_default_opts();
  so.epochs = o->epochs;
  so.patience = o->patience;
  so.plateau_patience = o->patience / 2 > 0 ? o->patience / 2 : 1;
  so.seed = o->seed;
  /* The whole grid in one crop, padded to a multiple of 8 cells (the
   * default pads to 64, up to 4x the work for small slides). */
  int side = (int)ceil(o->size / (d->cell_px > 0 ? d->cell_px : 128));
  side = (side + 7) / 8 * 8;
  so.crop = side < so.crop ? side : so.crop;
  so.progress = on_train;
  so.progress_user = &v;
  demo_log(d, "train: NIC slide CNN, %d slides (%d normal, %d tumour), %d folds, at most %d epochs",
           c.n, per_class[0], per_class[1], o->folds, o->epochs);
  nic_eval e;
  memset(&e, 0, sizeof e);
  st = nic_sm_crossval(d->ctx, &c, &s, &so, d->run_dir, o->command_line, &e, err);
  if (st == NIC_OK) {
    char line[1024];
    nic_eval_line(&e, line, sizeof line);
    demo_log(d, "train: %s", line);
    nic_eval_free(&e);
    char path[DEMO_PATH];
    snprintf(path, sizeof path, "%s/curves.csv", d->run_dir);
    st = write_curves(path, &v, err);
  } else {
    nic_err_prefix(err, "training: ");
  }
  free(v.pts);
  nic_splits_free(&s);
  nic_cohort_free(&c);
  return st;
}

/* ---- evaluate ------------------------------------------------------------------ */

/* "0.912 (0.850-0.970)" or "-" */
static void fmt_ci(char *buf, size_t size, const nic_eval_set *s, int j) {
  if (!s->ok[j])
    snprintf(buf, size, "-");
  else if (s->ci_ok[j])
    snprintf(buf, size, "%.3f (%.3f-%.3f)", s->ci[j].estimate, s->ci[j].lo, s->ci[j].hi);
  else
    snprintf(buf, size, "%.3f", s->ci[j].estimate);
}

static const char *metric_title(const char *name) {
  if (!strcmp(name, "auc")) return "AUC";
  if (!strcmp(name, "bacc")) return "balanced accuracy";
  if (!strcmp(name, "acc")) return "accuracy";
  if (!strcmp(name, "kappa")) return "Cohen's kappa";
  return name;
}

/* The metrics and per-fold tables of the report. */
static void eval_tables(demo_run *d, const nic_eval *e) {
  demo_text *m = &d->metrics_md, *f = &d->folds_md;
  char ci[96];
  demo_text_printf(m, "| metric | pooled out-of-fold (95%% CI) | mean ± sd over folds |\n"
                      "| --- | --- | --- |\n");
  for (int j = 0; j < e->nmetrics; j++) {
    fmt_ci(ci, sizeof ci, &e->pooled, j);
    demo_text_printf(m, "| %s | %s | ", metric_title(e->names[j]), ci);
    if (e->summary_ok[j])
      demo_text_printf(m, "%.3f ± %.3f |\n", e->summary[j].mean, e->summary[j].sd);
    else
      demo_text_printf(m, "- |\n");
  }
  demo_text_printf(f, "| fold | test slides | best epoch |");
  for (int j = 0; j < e->nmetrics; j++) demo_text_printf(f, " %s (95%% CI) |", e->names[j]);
  demo_text_printf(f, "\n| --- | --- | --- |");
  for (int j = 0; j < e->nmetrics; j++) demo_text_printf(f, " --- |");
  demo_text_printf(f, "\n");
  for (int q = 0; q < e->nfolds; q++) {
    const nic_eval_set *s = &e->folds[q];
    char path[DEMO_PATH];
    snprintf(path, sizeof path, "%s/fold_%d.safetensors", d->run_dir, s->fold);
    nic_slidemodel *sm = NULL;
    nic_error err2 = {0};
    int best = -1;
    if (nic_sm_load(&sm, path, &err2) == NIC_OK) best = nic_sm_best_epoch(sm);
    nic_sm_free(sm);
    demo_text_printf(f, "| %d | %d | ", s->fold, s->n);
    if (best >= 0)
      demo_text_printf(f, "%d |", best + 1);
    else
      demo_text_printf(f, "- |");
    for (int j = 0; j < e->nmetrics; j++) {
      fmt_ci(ci, sizeof ci, s, j);
      demo_text_printf(f, " %s |", ci);
    }
    demo_text_printf(f, "\n");
  }
}

/* learning_curves.png from run/curves.csv: training loss (solid) and
 * validation loss (dashed) per fold. Returns 0 when there is nothing. */
static int plot_curves(const demo_run *d, const char *out, nic_error *err) {
  char path[DEMO_PATH];
  snprintf(path, sizeof path, "%s/curves.csv", d->run_dir);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  enum { MAXF = 64, MAXE = 1000 };
  static const uint32_t palette[] = {
      NIC_RGB(31, 119, 180),  NIC_RGB(255, 127, 14), NIC_RGB(44, 160, 44),   NIC_RGB(214, 39, 40),
      NIC_RGB(148, 103, 189), NIC_RGB(140, 86, 75),  NIC_RGB(227, 119, 194), NIC_RGB(127, 127, 127),
      NIC_RGB(188, 189, 34),  NIC_RGB(23, 190, 207)};
  double *x = calloc((size_t)MAXF * MAXE, sizeof *x), *tl = calloc((size_t)MAXF * MAXE, sizeof *tl),
         *vl = calloc((size_t)MAXF * MAXE, sizeof *vl);
  int cnt[MAXF] = {0}, nf = 0, fold, epoch, ok = 0;
  double loss, vm, vloss;
  char line[256];
  if (!x || !tl || !vl || !fgets(line, sizeof line, f)) goto done; /* header */
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "%d,%d,%lf,%lf,%lf", &fold, &epoch, &loss, &vm, &vloss) == 5 && fold >= 0 &&
        fold < MAXF && cnt[fold] < MAXE) {
      size_t at = (size_t)fold * MAXE + (size_t)cnt[fold]++;
      x[at] = epoch + 1;
      tl[at] = loss;
      vl[at] = vloss;
      nf = fold + 1 > nf ? fold + 1 : nf;
    }
  nic_plot *p = NULL;
  if (nf == 0 || nic_plot_create(&p, 800, 520, err) != NIC_OK) goto done;
  nic_plot_set_labels(p, "Learning curves (solid: training loss, dashed: validation loss)", "epoch",
                      "cross-entropy", err);
  nic_status st = NIC_OK;
  for (int k = 0; k < nf && st == NIC_OK; k++) {
    if (!cnt[k]) continue;
    char label[32];
    snprintf(label, sizeof label, "fold %d", k);
    nic_series s;
    memset(&s, 0, sizeof s);
    s.x = x + (size_t)k * MAXE;
    s.y = tl + (size_t)k * MAXE;
    s.n = (size_t)cnt[k];
    s.label = label;
    s.color = palette[k % 10];
    st = nic_plot_add(p, &s, err);
    s.y = vl + (size_t)k * MAXE;
    s.label = NULL;
    s.line = NIC_LINE_DASHED;
    if (st == NIC_OK) st = nic_plot_add(p, &s, err);
  }
  if (st == NIC_OK && nic_plot_save_png(p, out, err) == NIC_OK) ok = 1;
  nic_plot_free(p);
done:
  fclose(f);
  free(x);
  free(tl);
  free(vl);
  return ok;
}

nic_status demo_evaluate(demo_run *d, nic_error *err) {
  char path[DEMO_PATH], plot[DEMO_PATH];
  snprintf(path, sizeof path, "%s/predictions.csv", d->run_dir);
  nic_preds p;
  nic_status st = nic_preds_read(&p, path, NIC_TASK_BINARY, err);
  if (st != NIC_OK) return nic_err_prefix(err, "evaluating: ");
  nic_eval_opts eo = nic_eval_default_opts();
  eo.seed = d->o->seed;
  nic_eval e;
  st = nic_evaluate(&p, &eo, &e, err);
  if (st != NIC_OK) {
    nic_preds_free(&p);
    return nic_err_prefix(err, "evaluating: ");
  }
  snprintf(plot, sizeof plot, "%s/roc.png", d->o->outdir);
  st = nic_eval_plot(&p, plot, err);
  nic_preds_free(&p);
  if (st != NIC_OK) {
    nic_eval_free(&e);
    return nic_err_prefix(err, "the ROC plot: ");
  }
  nic_demo_result *r = d->r;
  r->auc = e.pooled.ok[0] ? e.pooled.ci[0].estimate : NAN;
  r->auc_lo = e.pooled.ci_ok[0] ? e.pooled.ci[0].lo : NAN;
  r->auc_hi = e.pooled.ci_ok[0] ? e.pooled.ci[0].hi : NAN;
  nic_eval_line(&e, r->summary, sizeof r->summary);
  eval_tables(d, &e);
  nic_eval_free(&e);
  snprintf(plot, sizeof plot, "%s/learning_curves.png", d->o->outdir);
  nic_error perr = {0};
  d->have_curves = plot_curves(d, plot, &perr);
  if (!d->have_curves && perr.msg[0]) demo_log(d, "evaluate: no learning curves: %s", perr.msg);
  demo_log(d, "evaluate: pooled AUC %.3f (95%% CI %.3f-%.3f); %s", r->auc, r->auc_lo, r->auc_hi,
           r->summary);
  return NIC_OK;
}

/* ---- heatmaps ------------------------------------------------------------------- */

/* A thumbnail of the slide (NULL when it cannot be read). */
static uint8_t *slide_thumbnail(const char *path, int side, int *w, int *h, double *ds) {
  nic_slide *s = NULL;
  uint8_t *rgb = NULL;
  nic_error err = {0};
  if (nic_slide_open(&s, path, NULL, &err) == NIC_OK &&
      nic_slide_thumbnail_rgb8(s, side, 0, &rgb, w, h, ds, &err) != NIC_OK)
    rgb = NULL;
  nic_slide_close(s);
  return rgb;
}

/* The ground truth: the thumbnail with the simulator's tumour pixels
 * tinted red, from the slide's layout (slide ids are <prefix>_<index>). */
static nic_status write_truth(const demo_run *d, const char *slide_id, int tumour,
                              const uint8_t *thumb, int w, int h, double ds, const char *path,
                              nic_error *err) {
  const char *us = strrchr(slide_id, '_');
  int index = us ? atoi(us + 1) : -1;
  if (index < 0) return nic_err(err, NIC_EINVAL, "%s: not a simulated slide id", slide_id);
  nic_histo_opts ho = demo_histo_opts(d);
  nic_histo_layout *l = NULL;
  nic_status st = nic_histo_layout_create(&l, &ho, index, tumour, err);
  if (st != NIC_OK) return st;
  uint8_t *rgb = malloc((size_t)w * h * 3);
  if (!rgb) {
    nic_histo_layout_free(l);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  memcpy(rgb, thumb, (size_t)w * h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      int cls = nic_histo_class_at(l, (int)((x + 0.5) * ds), (int)((y + 0.5) * ds));
      if (cls != NIC_TISSUE_TUMOUR) continue;
      uint8_t *px = rgb + ((size_t)y * w + x) * 3;
      px[0] = (uint8_t)(0.45 * px[0] + 0.55 * 230);
      px[1] = (uint8_t)(0.45 * px[1] + 0.55 * 30);
      px[2] = (uint8_t)(0.45 * px[2] + 0.55 * 30);
    }
  st = nic_png_write_rgb8(path, rgb, w, h, err);
  free(rgb);
  nic_histo_layout_free(l);
  return st;
}

/* Grad-CAM of one slide with the model of the fold that tested it. */
static nic_status heatmap_one(demo_run *d, const char *id, int fold, int tumour, double score,
                              nic_error *err) {
  char model[DEMO_PATH], feats[DEMO_PATH], slide[DEMO_PATH], out[DEMO_PATH], truth[DEMO_PATH];
  snprintf(model, sizeof model, "%s/fold_%d.safetensors", d->run_dir, fold);
  snprintf(feats, sizeof feats, "%s/%s.h5", d->features_dir, id);
  snprintf(slide, sizeof slide, "%s/%s.tif", d->slides_dir, id);
  snprintf(out, sizeof out, "%s/heatmaps/%s_heatmap.png", d->o->outdir, id);
  snprintf(truth, sizeof truth, "%s/heatmaps/%s_truth.png", d->o->outdir, id);
  nic_slidemodel *m = NULL;
  nic_features_reader *r = NULL;
  float *v = NULL;
  uint8_t *mask = NULL, *rgb = NULL;
  int H = 0, W = 0, tw = 0, th = 0;
  double ds = 0;
  nic_status st = nic_sm_load(&m, model, err);
  if (st == NIC_OK) st = nic_sm_heatmap(m, d->ctx, feats, -1, &v, &H, &W, err);
  if (st == NIC_OK) st = nic_features_open(&r, feats, err);
  if (st == NIC_OK && !(mask = malloc((size_t)H * W))) st = nic_err(err, NIC_ENOMEM, "no memory");
  if (st == NIC_OK) st = nic_features_read_tissue_mask(r, mask, err);
  if (st == NIC_OK) {
    rgb = slide_thumbnail(slide, 512, &tw, &th, &ds);
    st = nic_heatmap_write_png(out, nic_features_meta_of(r), v, mask, rgb, tw, th, ds, err);
  }
  int have_truth = 0;
  if (st == NIC_OK && rgb) {
    nic_error terr = {0};
    have_truth = write_truth(d, id, tumour, rgb, tw, th, ds, truth, &terr) == NIC_OK;
    if (!have_truth) demo_log(d, "heatmaps: %s: no ground truth image: %s", id, terr.msg);
  }
  if (st == NIC_OK) {
    demo_text_printf(&d->heatmaps_md,
                     "| %s | %s | %.3f | %d | ![Grad-CAM of %s](heatmaps/%s_heatmap.png) | ", id,
                     tumour ? "tumour" : "normal", score, fold, id, id);
    if (have_truth)
      demo_text_printf(&d->heatmaps_md, "![tumour of %s](heatmaps/%s_truth.png) |\n", id, id);
    else
      demo_text_printf(&d->heatmaps_md, "- |\n");
  }
  free(rgb);
  free(mask);
  free(v);
  nic_features_close(r);
  nic_sm_free(m);
  if (st != NIC_OK) return nic_err_prefix(err, "heatmap of %s: ", id);
  return NIC_OK;
}

/* Index of the row of class cls with the highest score not yet taken. */
static int pick(const nic_preds *p, int cls, const int *taken) {
  int best = -1;
  for (int i = 0; i < p->n; i++)
    if (p->cls[i] == cls && !taken[i] && (best < 0 || p->score[i] > p->score[best])) best = i;
  return best;
}

nic_status demo_heatmaps(demo_run *d, nic_error *err) {
  if (d->o->heatmaps <= 0) return NIC_OK;
  char path[DEMO_PATH];
  snprintf(path, sizeof path, "%s/heatmaps", d->o->outdir);
  nic_status st = demo_mkdirs(path, err);
  if (st != NIC_OK) return st;
  snprintf(path, sizeof path, "%s/predictions.csv", d->run_dir);
  nic_preds p;
  st = nic_preds_read(&p, path, NIC_TASK_BINARY, err);
  if (st != NIC_OK) return nic_err_prefix(err, "heatmaps: ");
  int *taken = calloc((size_t)p.n + 1, sizeof *taken);
  if (!taken) {
    nic_preds_free(&p);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  demo_text_printf(&d->heatmaps_md, "| slide | truth | score | fold | Grad-CAM | tumour (red) |\n"
                                    "| --- | --- | --- | --- | --- | --- |\n");
  /* The most confident tumour slides first, then the normal slides that
   * look most like tumour (the model's hardest negatives). */
  int want = d->o->heatmaps < p.n ? d->o->heatmaps : p.n, made = 0;
  for (int k = 0; k < want && st == NIC_OK; k++) {
    int cls = k < (want + 1) / 2 ? 1 : 0;
    int i = pick(&p, cls, taken);
    if (i < 0) i = pick(&p, 1 - cls, taken);
    if (i < 0) break;
    taken[i] = 1;
    demo_progress(d, NIC_DEMO_HEATMAPS, "heatmaps", k, want, "slides");
    st = heatmap_one(d, p.slide_id[i], p.has_fold ? p.fold[i] : 0, p.cls[i], p.score[i], err);
    made += st == NIC_OK;
  }
  if (st == NIC_OK) demo_log(d, "heatmaps: %d slides in %s/heatmaps", made, d->o->outdir);
  free(taken);
  nic_preds_free(&p);
  return st;
}
