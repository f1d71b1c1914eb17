/* nic tissue: tissue masks for slides, as PNG, thumbnail overlay and
 * QuPath GeoJSON. One slide failing does not stop the others. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "nic/slide.h"

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: nic tissue SLIDE... -o DIR [options]\n\n"
      "Finds the tissue on each slide at low resolution and writes, per slide:\n"
      "  DIR/<id>_mask.png    binary mask (255 = tissue) at --level-mpp um/px\n"
      "  DIR/<id>_thumb.png   thumbnail at the same spacing with the mask outline in green\n"
      "  DIR/<id>.geojson     tissue polygons in level-0 pixels (QuPath: File > Import objects)\n"
      "<id> is the slide's file name without its extension. Slides are anything OpenSlide\n"
      "reads, or plain images (PNG, JPEG, TIFF) through libvips.\n\n"
      "options:\n"
      "  -o, --output DIR       output directory (created if missing)\n"
      "      --mpp-override X   level-0 spacing in um/px, for slides without (or with wrong)\n"
      "                         calibration; wins over the file\n"
      "      --mask FILE|DIR    use this mask instead of detecting: GeoJSON (.geojson/.json,\n"
      "                         polygons in level-0 pixels) or an image of any size stretched\n"
      "                         over the slide (tissue = brighter than half its maximum).\n"
      "                         A directory is searched for <id>.geojson, then <id>_mask.png\n"
      "      --level-mpp X      spacing of detection and outputs, um/px (default 8)\n"
      "  -h, --help             this text\n\n"
      "Exit status: 0 when every slide succeeded, 1 when any failed, 2 on usage errors.\n"
      "See docs/slides.md for the detection algorithm.\n");
}

typedef struct tissue_opts {
  const char *outdir;
  const char *mask;
  int mask_is_dir;
  double mpp_override;
  double level_mpp;
} tissue_opts;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The slide's file name without directory and last extension. */
static void slide_id(const char *path, char *id, size_t size) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  snprintf(id, size, "%s", base);
  char *dot = strrchr(id, '.');
  if (dot && dot != id) *dot = '\0';
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* mkdir -p */
static int make_dirs(const char *dir) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return -1;
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
  return is_dir(buf) ? 0 : -1;
}

/* The user's mask for this slide: the file itself, or the first match in
 * the mask directory. */
static int find_user_mask(const tissue_opts *o, const char *id, char *path, size_t size) {
  if (!o->mask_is_dir) {
    snprintf(path, size, "%s", o->mask);
    return 0;
  }
  static const char *const suffixes[] = {".geojson", ".json", "_mask.png"};
  for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
    snprintf(path, size, "%s/%s%s", o->mask, id, suffixes[i]);
    if (file_exists(path)) return 0;
  }
  return -1;
}

static nic_status write_outputs(const tissue_opts *o, const char *id, const nic_mask *mask,
                                const uint8_t *thumb, int tw, int th, double ds, nic_error *err) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s_mask.png", o->outdir, id);
  nic_status st = nic_mask_write_png(mask, path, err);
  if (st != NIC_OK) return st;
  snprintf(path, sizeof path, "%s/%s_thumb.png", o->outdir, id);
  st = nic_mask_write_overlay_png(mask, thumb, tw, th, ds, path, err);
  if (st != NIC_OK) return st;
  snprintf(path, sizeof path, "%s/%s.geojson", o->outdir, id);
  return nic_mask_write_geojson(mask, path, err);
}

/* The slide's mask: the user's (its path in *source) or detected on the
 * thumbnail, on the thumbnail's grid. */
static nic_status make_mask(const tissue_opts *o, const nic_slide *s, const char *id,
                            const uint8_t *thumb, int tw, int th, nic_mask *mask,
                            nic_tissue_info *info, char *source, size_t size, nic_error *err) {
  if (o->mask) {
    if (find_user_mask(o, id, source, size) != 0)
      return nic_err(err, NIC_EIO, "no %s.geojson, %s.json or %s_mask.png in %s", id, id, id,
                     o->mask);
    return nic_mask_load(s, source, o->level_mpp, mask, err);
  }
  snprintf(source, size, "detected");
  double mpp_x = 0, mpp_y = 0;
  nic_status st = nic_slide_spacing(s, &mpp_x, &mpp_y, err);
  if (st == NIC_OK)
    st =
        nic_mask_alloc(mask, tw, th, o->level_mpp / mpp_x, o->level_mpp / mpp_y, o->level_mpp, err);
  nic_tissue_params p = nic_tissue_default_params();
  p.mpp = o->level_mpp;
  if (st == NIC_OK) st = nic_tissue_detect_rgb8(thumb, tw, th, p.mpp, &p, mask->data, info, err);
  return st;
}

static void print_summary(const tissue_opts *o, const nic_slide *s, const char *id,
                          const nic_mask *mask, const nic_tissue_info *info, const char *source,
                          double seconds) {
  int64_t w0, h0;
  double mpp_x = 0, mpp_y = 0;
  nic_slide_level_dims(s, 0, &w0, &h0);
  nic_slide_spacing(s, &mpp_x, &mpp_y, NULL);
  double area = nic_mask_tissue_area(mask); /* level-0 px^2 */
  int pieces = nic_mask_components(mask);
  printf("%s: %.1f%% tissue, %.2f mm^2 in %d piece%s (%s", nic_slide_path(s),
         100.0 * area / ((double)w0 * h0), area * mpp_x * mpp_y * 1e-6, pieces,
         pieces == 1 ? "" : "s", source);
  if (!o->mask) printf(", saturation threshold %.3f", info->threshold);
  printf(", %.2f s) -> %s/%s_{mask,thumb}.png, %s.geojson\n", seconds, o->outdir, id, id);
}

/* One slide, start to finish: open, thumbnail, mask, outputs, summary. */
static nic_status process_slide(const tissue_opts *o, const char *path, const char *id,
                                nic_error *err) {
  double t0 = now_s();
  nic_slide_opts so = {o->mpp_override};
  nic_slide *s = NULL;
  nic_mask mask = {0};
  nic_tissue_info info = {0};
  uint8_t *thumb = NULL;
  int tw = 0, th = 0;
  double ds = 0;
  char source[4096];
  nic_status st = nic_slide_open(&s, path, &so, err);
  /* Every output is on the --level-mpp grid, so the spacing is needed. */
  if (st == NIC_OK) st = nic_slide_spacing(s, NULL, NULL, err);
  if (st == NIC_OK) st = nic_slide_thumbnail_rgb8(s, 0, o->level_mpp, &thumb, &tw, &th, &ds, err);
  if (st == NIC_OK)
    st = make_mask(o, s, id, thumb, tw, th, &mask, &info, source, sizeof source, err);
  if (st == NIC_OK) st = write_outputs(o, id, &mask, thumb, tw, th, ds, err);
  if (st == NIC_OK) print_summary(o, s, id, &mask, &info, source, now_s() - t0);
  /* Every message names the slide, also those about its mask and outputs. */
  if (st != NIC_OK && strncmp(err->msg, path, strlen(path)) != 0) nic_err_prefix(err, "%s: ", path);
  free(thumb);
  nic_mask_free(&mask);
  nic_slide_close(s);
  return st;
}

int cmd_tissue(int argc, char **argv) {
  static const struct option longopts[] = {
      {"output", required_argument, NULL, 'o'}, {"mpp-override", required_argument, NULL, 'M'},
      {"mask", required_argument, NULL, 'k'},   {"level-mpp", required_argument, NULL, 'l'},
      {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
  tissue_opts o = {NULL, NULL, 0, 0, 8.0};
  int c;
  while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'o':
      o.outdir = optarg;
      break;
    case 'M':
      if (cli_parse_double("tissue", "--mpp-override", optarg, &o.mpp_override)) return 2;
      if (!(o.mpp_override > 0)) return cli_usage("tissue", "--mpp-override must be positive");
      break;
    case 'k':
      o.mask = optarg;
      break;
    case 'l':
      if (cli_parse_double("tissue", "--level-mpp", optarg, &o.level_mpp)) return 2;
      if (!(o.level_mpp > 0)) return cli_usage("tissue", "--level-mpp must be positive");
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      return cli_usage("tissue", "unknown option");
    }
  }
  int nslides = argc - optind;
  if (nslides < 1) return cli_usage("tissue", "no slides given");
  if (!o.outdir) return cli_usage("tissue", "-o DIR is required");
  if (o.mask) {
    o.mask_is_dir = is_dir(o.mask);
    if (!o.mask_is_dir && nslides > 1)
      return cli_usage("tissue", "--mask FILE works with one slide; give a directory for several");
  }
  if (make_dirs(o.outdir) != 0) {
    fprintf(stderr, "nic tissue: cannot create output directory %s: %s\n", o.outdir,
            strerror(errno));
    return 1;
  }
  int failed = 0;
  for (int i = 0; i < nslides; i++) {
    const char *path = argv[optind + i];
    char id[1024];
    slide_id(path, id, sizeof id);
    nic_error err = {0};
    nic_status st = NIC_OK;
    /* Two slides with one id would overwrite each other's outputs. */
    for (int k = 0; k < i && st == NIC_OK; k++) {
      char other[1024];
      slide_id(argv[optind + k], other, sizeof other);
      if (!strcmp(id, other))
        st = nic_err(&err, NIC_EINVAL, "%s: same output name '%s' as %s", path, id,
                     argv[optind + k]);
    }
    if (st == NIC_OK) st = process_slide(&o, path, id, &err);
    if (st != NIC_OK) {
      cli_fail(&err);
      failed++;
    }
  }
  if (failed && nslides > 1)
    fprintf(stderr, "nic tissue: %d of %d slides failed\n", failed, nslides);
  return failed ? 1 : 0;
}
