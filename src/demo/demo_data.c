/* The demo's data stages: simulating the cohort and compressing it. */
#include <stdio.h>
#include <string.h>

#include "demo/demo_internal.h"
#include "nic/compress.h"
#include "nic/sim.h"

/* ---- simulate ------------------------------------------------------------------ */

typedef struct sim_view {
  const demo_run *d;
} sim_view;

static void on_sim_progress(void *user, int done, int total) {
  const sim_view *v = user;
  demo_progress(v->d, NIC_DEMO_SIMULATE, "simulate", done, total, "slides");
}

nic_histo_opts demo_histo_opts(const demo_run *d) {
  const nic_demo_opts *o = d->o;
  nic_histo_opts ho = nic_histo_default_opts();
  ho.width = ho.height = o->size;
  ho.count = o->slides;
  ho.lesion_min = o->lesion_min;
  ho.lesion_max = o->lesion_max;
  ho.seed = o->seed;
  ho.threads = nic_ctx_threads(d->ctx);
  return ho;
}

nic_status demo_simulate(demo_run *d, nic_error *err) {
  nic_histo_opts ho = demo_histo_opts(d);
  sim_view v = {d};
  ho.progress = on_sim_progress;
  ho.progress_user = &v;
  nic_status st = nic_histo_generate(&ho, d->slides_dir, err);
  if (st != NIC_OK) return nic_err_prefix(err, "simulating the cohort: ");
  return NIC_OK;
}

/* ---- compress -------------------------------------------------------------------- */

/* The compressor options of the demo (the stage keys depend on them). */
static nic_compress_opts demo_compress_opts(const demo_run *d) {
  nic_compress_opts co = nic_compress_default_opts();
  co.command_line = d->o->command_line;
  co.cancel = d->o->cancel;
  return co;
}

nic_status demo_encoder_info(demo_run *d, nic_error *err) {
  nic_compress_opts co = demo_compress_opts(d);
  co.encoders = 1; /* one model copy is enough to describe it */
  nic_compressor *c = NULL;
  nic_status st = nic_compressor_create(&c, d->o->model, d->ctx, &co, err);
  if (st != NIC_OK) return nic_err_prefix(err, "loading the encoder: ");
  snprintf(d->encoder_name, sizeof d->encoder_name, "%s", nic_compressor_encoder_name(c));
  snprintf(d->encoder_sha, sizeof d->encoder_sha, "%s", nic_compressor_sha256(c));
  d->embed_dim = nic_compressor_embed_dim(c);
  d->cell_px = nic_compressor_patch_size(c) * nic_compressor_mpp(c) / 0.5; /* slides: 0.5 um/px */
  nic_compressor_free(c);
  return NIC_OK;
}

typedef struct comp_view {
  const demo_run *d;
  char label[128];
  int64_t patches; /* in the outputs of the slides done now or before */
} comp_view;

static void on_patches(void *user, int64_t done, int64_t total) {
  const comp_view *v = user;
  demo_progress(v->d, NIC_DEMO_COMPRESS, v->label, done, total, "patches");
}

static void on_slide_begin(void *user, int index, int count, const nic_slide_entry *e) {
  comp_view *v = user;
  snprintf(v->label, sizeof v->label, "compress [%d/%d] %s", index + 1, count, e->id);
}

static void on_slide_end(void *user, int index, int count, const nic_compress_result *r) {
  comp_view *v = user;
  const char *id = r->entry->id;
  if (r->outcome != NIC_COMPRESS_FAILED) v->patches += r->patches;
  if (r->outcome == NIC_COMPRESS_DONE)
    demo_log(v->d, "compress: [%d/%d] %s: %lld patches in %.2f s (%.0f patches/s)", index + 1,
             count, id, (long long)r->patches, r->seconds,
             r->seconds > 0 ? (double)r->patches / r->seconds : 0);
  else if (r->outcome == NIC_COMPRESS_FAILED) /* skipped slides: only in the summary */
    demo_log(v->d, "compress: [%d/%d] %s: FAILED (left out): %s", index + 1, count, id, r->error);
}

nic_status demo_compress(demo_run *d, int overwrite, nic_error *err) {
  nic_status st = demo_mkdirs(d->features_dir, err);
  if (st != NIC_OK) return st;
  comp_view v;
  memset(&v, 0, sizeof v);
  v.d = d;
  nic_compress_opts co = demo_compress_opts(d);
  co.progress = on_patches;
  co.progress_user = &v;
  nic_compressor *c = NULL;
  st = nic_compressor_create(&c, d->o->model, d->ctx, &co, err);
  if (st != NIC_OK) return nic_err_prefix(err, "loading the encoder: ");
  char csv[DEMO_PATH];
  snprintf(csv, sizeof csv, "%s/slides.csv", d->slides_dir);
  nic_slide_list l = {0};
  st = nic_slide_list_add(&l, csv, err);
  nic_compress_summary sum;
  memset(&sum, 0, sizeof sum);
  if (st == NIC_OK) {
    nic_slide_list_mark_duplicates(&l);
    nic_compress_run_opts ro = {d->features_dir, NULL,         overwrite, 0, NULL,
                                on_slide_begin,  on_slide_end, &v};
    st = nic_compress_run(c, &l, &ro, &sum, err);
  }
  if (st == NIC_OK) {
    /* Patches of every slide now in the folder, done now or before. */
    d->r->slides = sum.done + sum.skipped;
    d->r->patches = v.patches;
    demo_log(d,
             "compress: %d slides, %d compressed, %d already done, %d failed; %lld patches "
             "encoded in %.1f s (%.0f patches/s)",
             sum.total, sum.done, sum.skipped, sum.failed, (long long)sum.patches, sum.seconds,
             sum.seconds > 0 ? (double)sum.patches / sum.seconds : 0);
  }
  nic_slide_list_free(&l);
  nic_compressor_free(c);
  if (st != NIC_OK) return nic_err_prefix(err, "compressing the cohort: ");
  return NIC_OK;
}
