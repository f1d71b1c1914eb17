/* Labelled patches for multitask encoder training (the MTL-NIC recipe of
 * Tellez et al., MIDL 2020, on simulated tissue): patches are cut from
 * virtual slides made by the histo generator, so every label is exact.
 *
 * Sampling: each patch first draws what it should show (glass, stroma,
 * tumour, lymphocytes or a mitotic figure) and then a centre with that
 * content, so rare content is not drowned by stroma; its labels are then
 * measured on what was rendered, not taken from the draw. Slides, not
 * patches, are split into train/val/test, so that no slide feeds two
 * splits. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "sim/histo_internal.h"
#include "sim/sim_internal.h"

enum { STREAM_PATCH = 30, STREAM_SPLIT = 31 };
enum { WANT_BACKGROUND, WANT_STROMA, WANT_TUMOUR, WANT_LYMPHO, WANT_MITOSIS, WANT_N };
/* Share of patches aimed at each kind of content. */
static const double want_weight[WANT_N] = {0.15, 0.25, 0.25, 0.2, 0.15};

nic_patch_opts nic_patch_default_opts(void) {
  nic_patch_opts o = {0};
  o.count = 1000;
  o.slides = 10;
  o.slide_size = 4096;
  o.patch_size = 128;
  o.mpp = 0.5;
  o.val_fraction = 0.15;
  o.test_fraction = 0.15;
  o.format = "png";
  o.jpeg_quality = 90;
  o.seed = 1;
  return o;
}

nic_status nic_patch_check(const nic_patch_opts *o, nic_error *err) {
  if (o->count < 1) return nic_err(err, NIC_EINVAL, "need at least one patch");
  if (o->slides < 1) return nic_err(err, NIC_EINVAL, "need at least one slide");
  if (o->patch_size < 8 || o->patch_size > 4096)
    return nic_err(err, NIC_EINVAL, "patch size %d out of range (8 to 4096)", o->patch_size);
  if (o->slide_size < 4 * o->patch_size || o->slide_size > 100000)
    return nic_err(err, NIC_EINVAL, "slide size %d: need 4 patches across, at most 100000",
                   o->slide_size);
  if (!(o->val_fraction >= 0 && o->test_fraction >= 0 && o->val_fraction + o->test_fraction < 1))
    return nic_err(err, NIC_EINVAL, "val and test fractions must be >= 0 and sum below 1");
  if (!o->format || (strcmp(o->format, "png") && strcmp(o->format, "jpg")))
    return nic_err(err, NIC_EINVAL, "patch format '%s' (png or jpg)", o->format ? o->format : "");
  if (o->jpeg_quality < 1 || o->jpeg_quality > 100)
    return nic_err(err, NIC_EINVAL, "JPEG quality %d not in 1..100", o->jpeg_quality);
  nic_histo_opts h = nic_histo_default_opts();
  h.mpp = o->mpp;
  return nic_histo_check(&h, err);
}

/* Labels of one patch, and where it came from. */
typedef struct patch_rec {
  int slide, x, y;
  int tissue, tumour, mitosis, nuclei;
} patch_rec;

/* A virtual slide for patches: always with tumour, and mitoses frequent
 * enough that patches showing one can be found. */
static nic_histo_opts patch_slide_opts(const nic_patch_opts *o) {
  nic_histo_opts h = nic_histo_default_opts();
  h.width = h.height = o->slide_size;
  h.mpp = o->mpp;
  h.lesion_min = 0.15;
  h.lesion_max = 0.40;
  h.mitosis_max = 150;
  h.mitosis_normal = 2;
  h.seed = sim_mix(o->seed, STREAM_PATCH);
  return h;
}

/* Picks the patch's top-left corner: a centre showing the wanted content,
 * by rejection sampling, or anywhere when the slide lacks it. */
static void place_patch(const nic_histo_layout *l, nic_rng *r, int P, int *x, int *y) {
  const nic_histo_info *in = nic_histo_layout_info(l);
  double u = nic_rng_uniform(r);
  int want = 0;
  while (want < WANT_N - 1 && (u -= want_weight[want]) > 0) want++;
  int nmit = 0;
  const double *mit = nic_histo_mitoses(l, &nmit);
  if (want == WANT_MITOSIS && nmit > 0) {
    /* Anywhere in the patch, at least 12 px from its border. */
    int k = (int)nic_rng_below(r, (uint64_t)nmit), slack = P / 2 - 12;
    if (slack < 0) slack = 0;
    *x = (int)mit[2 * k] - P / 2 + (int)nic_rng_below(r, 2 * (uint64_t)slack + 1) - slack;
    *y = (int)mit[2 * k + 1] - P / 2 + (int)nic_rng_below(r, 2 * (uint64_t)slack + 1) - slack;
    *x = *x < 0 ? 0 : *x > in->width - P ? in->width - P : *x;
    *y = *y < 0 ? 0 : *y > in->height - P ? in->height - P : *y;
    return;
  }
  nic_tissue_class cls = want == WANT_MITOSIS ? NIC_TISSUE_TUMOUR : (nic_tissue_class)want;
  int W = in->width - P, H = in->height - P;
  for (int t = 0; t < 5000; t++) {
    *x = (int)nic_rng_below(r, (uint64_t)W);
    *y = (int)nic_rng_below(r, (uint64_t)H);
    if (nic_histo_class_at(l, *x + P / 2, *y + P / 2) == cls) return;
  }
}

static nic_status write_patch(const nic_patch_opts *o, const char *path, const uint8_t *rgb,
                              nic_error *err) {
  int P = o->patch_size;
  if (!strcmp(o->format, "png")) return sim_png_write(path, rgb, P, P, 3, (size_t)P * 3, 1, err);
  uint8_t *jpg = NULL;
  size_t n = 0;
  nic_status s = sim_jpeg_encode(rgb, P, P, (size_t)P * 3, o->jpeg_quality, &jpg, &n, err);
  if (s == NIC_OK) s = sim_write_file(path, jpg, n, err);
  free(jpg);
  return s;
}

/* Renders and writes the patches [first, first+n) of slide l. */
static nic_status slide_patches(const nic_patch_opts *o, const nic_histo_layout *l, int slide,
                                int first, int n, const char *outdir, patch_rec *recs,
                                nic_error *err) {
  int P = o->patch_size, nthreads = o->threads > 0 ? o->threads : omp_get_max_threads();
  int failed = 0;
  nic_error first_err = {0};
#pragma omp parallel num_threads(nthreads)
  {
    histo_scratch scr = {0};
    uint8_t *rgb = malloc((size_t)P * P * 3), *cls = malloc((size_t)P * P);
#pragma omp for schedule(dynamic)
    for (int k = 0; k < n; k++) {
      int g = first + k;
      nic_error e = {0};
      nic_status s = (rgb && cls) ? NIC_OK : nic_err(&e, NIC_ENOMEM, "out of memory");
      nic_rng r;
      sim_rng(&r, o->seed, STREAM_PATCH, (uint64_t)g, 0);
      patch_rec *rec = &recs[g];
      rec->slide = slide;
      place_patch(l, &r, P, &rec->x, &rec->y);
      nic_histo_counts c;
      if (s == NIC_OK)
        s = histo_render_rect(l, rec->x, rec->y, P, P, rgb, 3 * P, cls, &c, &scr, &e);
      if (s == NIC_OK) {
        int best = 0;
        for (int q = 1; q < NIC_TISSUE_NCLASSES; q++)
          if (c.pixels[q] > c.pixels[best]) best = q;
        rec->tissue = best;
        rec->tumour = c.pixels[NIC_TISSUE_TUMOUR] * 20 >= (int64_t)P * P;
        rec->mitosis = c.mitoses > 0;
        rec->nuclei = c.nuclei;
        char path[4096];
        s = sim_path(path, sizeof path, &e, "%s/patches/%06d.%s", outdir, g, o->format);
        if (s == NIC_OK) s = write_patch(o, path, rgb, &e);
      }
      if (s != NIC_OK) {
#pragma omp critical(nic_sim_patch_err)
        if (!failed++) first_err = e;
      }
    }
    free(rgb);
    free(cls);
    histo_scratch_free(&scr);
  }
  if (failed) return nic_err(err, first_err.code, "%s", first_err.msg);
  return NIC_OK;
}

static nic_status write_csvs(const nic_patch_opts *o, const char *outdir, const patch_rec *recs,
                             const char *const *split_of, nic_error *err) {
  static const char *tasks[4] = {"tissue", "tumour", "mitosis", "nuclei"};
  char path[4096];
  nic_status s = NIC_OK;
  for (int t = 0; t < 5 && s == NIC_OK; t++) {
    FILE *f = NULL;
    s = sim_path(path, sizeof path, err, "%s/%s.csv", outdir, t < 4 ? tasks[t] : "patches");
    if (s == NIC_OK) s = sim_fopen(&f, path, "w", err);
    if (s != NIC_OK) break;
    fprintf(f,
            t < 4 ? "path,label,split\n" : "path,tissue,tumour,mitosis,nuclei,split,slide,x,y\n");
    for (int g = 0; g < o->count; g++) {
      const patch_rec *p = &recs[g];
      int v[4] = {p->tissue, p->tumour, p->mitosis, p->nuclei};
      fprintf(f, "patches/%06d.%s,", g, o->format);
      if (t < 4)
        fprintf(f, "%d,%s\n", v[t], split_of[p->slide]);
      else
        fprintf(f, "%d,%d,%d,%d,%s,%d,%d,%d\n", v[0], v[1], v[2], v[3], split_of[p->slide],
                p->slide, p->x, p->y);
    }
    s = sim_fclose(f, path, err);
  }
  return s;
}

nic_status nic_patch_generate(const nic_patch_opts *o, const char *outdir, nic_error *err) {
  nic_status s = nic_patch_check(o, err);
  if (s != NIC_OK) return s;
  char dir[4096];
  if ((s = sim_path(dir, sizeof dir, err, "%s/patches", outdir)) != NIC_OK) return s;
  if ((s = sim_mkdirs(dir, err)) != NIC_OK) return s;
  patch_rec *recs = calloc((size_t)o->count, sizeof *recs);
  int *order = malloc(sizeof(int) * (size_t)o->slides);
  const char **split_of = malloc(sizeof(char *) * (size_t)o->slides);
  if (!recs || !order || !split_of) {
    free(recs);
    free(order);
    free(split_of);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  /* Slides in a seeded order: the first go to test, the next to val. A
   * non-zero fraction gets at least one slide while train keeps one. */
  int K = o->slides;
  int ntest = (int)(K * o->test_fraction + 0.5), nval = (int)(K * o->val_fraction + 0.5);
  if (o->test_fraction > 0 && ntest == 0 && K >= 3) ntest = 1;
  if (o->val_fraction > 0 && nval == 0 && K >= 3) nval = 1;
  while (ntest + nval >= K && (ntest || nval)) {
    if (nval >= ntest && nval)
      nval--;
    else
      ntest--;
  }
  for (int i = 0; i < K; i++) order[i] = i;
  nic_rng r;
  sim_rng(&r, o->seed, STREAM_SPLIT, 0, 0);
  sim_shuffle_int(&r, order, K);
  for (int i = 0; i < K; i++)
    split_of[order[i]] = i < ntest ? "test" : i < ntest + nval ? "val" : "train";

  nic_histo_opts ho = patch_slide_opts(o);
  ho.threads = o->threads;
  int first = 0;
  for (int sl = 0; sl < K && s == NIC_OK; sl++) {
    int n = o->count / K + (sl < o->count % K);
    nic_histo_layout *l = NULL;
    s = nic_histo_layout_create(&l, &ho, sl, 1, err);
    if (s == NIC_OK && n > 0) s = slide_patches(o, l, sl, first, n, outdir, recs, err);
    nic_histo_layout_free(l);
    first += n;
    if (o->progress) o->progress(o->progress_user, first, o->count);
  }
  if (s == NIC_OK) s = write_csvs(o, outdir, recs, split_of, err);
  free(recs);
  free(order);
  free(split_of);
  return s;
}
