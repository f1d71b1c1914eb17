/* nic heatmap: where a slide model looked, per grid cell (Grad-CAM for the
 * CNN, attention for ABMIL), as a PNG overlay and QuPath GeoJSON tiles. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "nic/features.h"
#include "nic/slide.h"
#include "nic/slidemodel.h"

static void usage(FILE *f) {
  fprintf(f, "usage: nic heatmap --model M --features DIR|FILE.h5 [options] -o OUTDIR\n\n"
             "For each compressed slide, the relevance of every grid cell to the model's\n"
             "output: for the NIC CNN, Grad-CAM of the class score on the first convolution\n"
             "block (over crops tiling the grid); for ABMIL, the attention weight. Writes\n"
             "  OUTDIR/<slide_id>_heatmap.png      the map over a thumbnail of the slide, or\n"
             "                                     over a drawing of the tissue when the slide\n"
             "                                     file cannot be opened\n"
             "  OUTDIR/<slide_id>_heatmap.geojson  one square tile per tissue cell in level-0\n"
             "                                     pixels, measurement 'score' (QuPath: File >\n"
             "                                     Import objects)\n"
             "Memory follows the grid, not the slide's resolution.\n\n"
             "options:\n"
             "  -m, --model FILE       the slide model (required)\n"
             "  -f, --features PATH    folder of <slide_id>.h5 or one .h5 file (required)\n"
             "  -o, --output DIR       output folder (required; created if needed)\n"
             "      --slide ID         only this slide (repeatable)\n"
             "  -c, --class NAME       class to explain (binary: the second class; multiclass:\n"
             "                         the predicted class)\n"
             "      --slides DIR       where the whole-slide images are, for thumbnails (looked\n"
             "                         up by the file name the compressed slide records; the\n"
             "                         recorded path itself is tried as well)\n"
             "      --thumbnail N      thumbnail's longer side in pixels (1024)\n"
             "  -t, --threads N        compute threads (default: one per core)\n"
             "  -q, --quiet            no progress display\n"
             "  -h, --help             this text\n");
}

static int readable(const char *path) {
  struct stat st;
  return path && *path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* A thumbnail of the slide the compressed slide came from, when found. */
static uint8_t *thumbnail(const nic_features_meta *meta, const char *slides_dir, int side, int *w,
                          int *h, double *ds) {
  char path[4096] = "";
  if (meta->slide_path && *meta->slide_path) {
    const char *base = strrchr(meta->slide_path, '/');
    base = base ? base + 1 : meta->slide_path;
    if (slides_dir) snprintf(path, sizeof path, "%s/%s", slides_dir, base);
    if (!readable(path)) snprintf(path, sizeof path, "%s", meta->slide_path);
  }
  if (!readable(path)) return NULL;
  nic_slide *s = NULL;
  uint8_t *rgb = NULL;
  nic_error err = {0};
  if (nic_slide_open(&s, path, NULL, &err) == NIC_OK &&
      nic_slide_thumbnail_rgb8(s, side, 0, &rgb, w, h, ds, &err) != NIC_OK)
    rgb = NULL;
  nic_slide_close(s);
  return rgb;
}

/* One slide: values, GeoJSON, PNG. */
static nic_status one_slide(nic_slidemodel *m, nic_ctx *ctx, const nic_cohort_slide *e,
                            const char *outdir, int target, const char *slides_dir, int side,
                            int *with_thumb, nic_error *err) {
  float *v = NULL;
  int H, W;
  nic_status st = nic_sm_heatmap(m, ctx, e->path, target, &v, &H, &W, err);
  if (st != NIC_OK) return st;
  nic_features_reader *r = NULL;
  uint8_t *mask = NULL, *rgb = NULL;
  st = nic_features_open(&r, e->path, err);
  if (st == NIC_OK && !(mask = malloc((size_t)H * W)))
    st = nic_err(err, NIC_ENOMEM, "out of memory");
  if (st == NIC_OK) st = nic_features_read_tissue_mask(r, mask, err);
  char path[4096];
  if (st == NIC_OK) {
    const nic_features_meta *meta = nic_features_meta_of(r);
    snprintf(path, sizeof path, "%s/%s_heatmap.geojson", outdir, e->slide_id);
    st = nic_heatmap_write_geojson(path, meta, v, err);
    int tw = 0, th = 0;
    double ds = 0;
    if (st == NIC_OK) rgb = thumbnail(meta, slides_dir, side, &tw, &th, &ds);
    *with_thumb = rgb != NULL;
    snprintf(path, sizeof path, "%s/%s_heatmap.png", outdir, e->slide_id);
    if (st == NIC_OK) st = nic_heatmap_write_png(path, meta, v, mask, rgb, tw, th, ds, err);
  }
  free(rgb);
  free(mask);
  free(v);
  nic_features_close(r);
  return st;
}

int cmd_heatmap(int argc, char **argv) {
  enum { O_SLIDE = 1000, O_SLIDES, O_THUMB };
  static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                       {"features", required_argument, NULL, 'f'},
                                       {"output", required_argument, NULL, 'o'},
                                       {"slide", required_argument, NULL, O_SLIDE},
                                       {"class", required_argument, NULL, 'c'},
                                       {"slides", required_argument, NULL, O_SLIDES},
                                       {"thumbnail", required_argument, NULL, O_THUMB},
                                       {"threads", required_argument, NULL, 't'},
                                       {"quiet", no_argument, NULL, 'q'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *model = NULL, *features = NULL, *outdir = NULL, *cls = NULL, *slides_dir = NULL;
  const char **only = calloc((size_t)argc + 1, sizeof *only);
  int nonly = 0, threads = 0, quiet = 0, side = 1024, c, rc = 0;
  if (!only) return 1;
  while ((c = getopt_long(argc, argv, "m:f:o:c:t:qh", opts, NULL)) != -1) {
    switch (c) {
    case 'm':
      model = optarg;
      break;
    case 'f':
      features = optarg;
      break;
    case 'o':
      outdir = optarg;
      break;
    case O_SLIDE:
      only[nonly++] = optarg;
      break;
    case 'c':
      cls = optarg;
      break;
    case O_SLIDES:
      slides_dir = optarg;
      break;
    case O_THUMB:
      if (cli_parse_int("heatmap", "--thumbnail", optarg, 64, &side)) rc = 2;
      break;
    case 't':
      if (cli_parse_int("heatmap", "--threads", optarg, 0, &threads)) rc = 2;
      break;
    case 'q':
      quiet = 1;
      break;
    case 'h':
      usage(stdout);
      free(only);
      return 0;
    default:
      rc = cli_usage("heatmap", "unknown option");
    }
    if (rc) break;
  }
  if (!rc && optind < argc) rc = cli_usage("heatmap", "unexpected argument '%s'", argv[optind]);
  if (!rc && !model) rc = cli_usage("heatmap", "missing --model FILE");
  if (!rc && !features) rc = cli_usage("heatmap", "missing --features DIR");
  if (!rc && !outdir) rc = cli_usage("heatmap", "missing -o OUTDIR");
  if (rc) {
    free(only);
    return rc;
  }
  nic_error err = {0};
  nic_slidemodel *m = NULL;
  nic_cohort cohort;
  memset(&cohort, 0, sizeof cohort);
  nic_ctx *ctx = NULL;
  int target = -1;
  if (nic_sm_load(&m, model, &err) != NIC_OK ||
      nic_cohort_scan(&cohort, features, &err) != NIC_OK) {
    rc = cli_fail(&err);
    goto done;
  }
  if (cls) {
    for (int k = 0; k < nic_sm_num_classes(m); k++)
      if (!strcmp(cls, nic_sm_class_name(m, k))) target = k;
    if (target < 0) {
      rc = cli_usage("heatmap", "--class '%s' is not a class of the model", cls);
      goto done;
    }
  }
  for (int a = 0; a < nonly; a++) {
    int found = 0;
    for (int i = 0; i < cohort.n && !found; i++)
      found = !strcmp(cohort.slides[i].slide_id, only[a]);
    if (!found) {
      fprintf(stderr, "nic heatmap: no %s.h5 in %s\n", only[a], features);
      rc = 1;
      goto done;
    }
  }
  struct stat sb;
  mkdir(outdir, 0777); /* an existing folder is fine: checked next */
  if (stat(outdir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    fprintf(stderr, "nic heatmap: cannot create the folder %s\n", outdir);
    rc = 1;
    goto done;
  }
  if (!(ctx = cli_make_ctx(threads, 1))) {
    rc = 1;
    goto done;
  }
  cli_progress prog;
  cli_progress_init(&prog, stderr, quiet ? CLI_PROGRESS_NONE : CLI_PROGRESS_AUTO);
  int total = nonly ? nonly : cohort.n, done_n = 0, ok_n = 0, thumbs = 0;
  cli_progress_start(&prog, "heatmaps", total, "slides");
  for (int i = 0; i < cohort.n; i++) {
    const nic_cohort_slide *e = &cohort.slides[i];
    int want = nonly == 0;
    for (int a = 0; a < nonly && !want; a++) want = !strcmp(e->slide_id, only[a]);
    if (!want) continue;
    int with_thumb = 0;
    if (one_slide(m, ctx, e, outdir, target, slides_dir, side, &with_thumb, &err) != NIC_OK) {
      cli_progress_clear(&prog);
      fprintf(stderr, "nic heatmap: %s: %s\n", e->slide_id, err.msg);
      rc = 1; /* the others go on */
    } else {
      ok_n++;
      thumbs += with_thumb;
    }
    cli_progress_update(&prog, ++done_n);
  }
  cli_progress_end(&prog);
  printf("wrote heatmaps of %d slide%s to %s (%d over a slide thumbnail, %d over the tissue "
         "mask)\n",
         ok_n, ok_n == 1 ? "" : "s", outdir, thumbs, ok_n - thumbs);
done:
  nic_sm_free(m);
  nic_ctx_free(ctx);
  nic_cohort_free(&cohort);
  free(only);
  return rc;
}
