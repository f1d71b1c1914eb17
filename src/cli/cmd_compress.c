/* nic compress: whole-slide images -> compressed slides (one HDF5 file of
 * patch embeddings per slide), for many slides, resumable and shardable.
 * The work is in src/compress/; this file parses flags, shows progress and
 * chooses the exit code. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "nic/compress.h"

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: nic compress [--model M] [options] SLIDE|DIR|LIST.csv ... -o OUTDIR\n\n"
      "Cuts each slide into a grid of patches at the encoder's spacing (128 px at 0.5 um/px\n"
      "for the NIC encoders), finds the tissue, encodes every tissue patch and writes one\n"
      "compressed slide per slide: OUTDIR/<slide_id>.h5 (features, coords and the grid,\n"
      "readable by CLAM and TRIDENT; docs/compressed-slide-format.md). Finished slides are\n"
      "skipped, so an interrupted run is resumed by running it again.\n\n"
      "slides:\n"
      "  SLIDE          anything OpenSlide reads (.svs .ndpi .mrxs .scn .tif ...) or a plain\n"
      "                 image; slide_id = its file name without the extension\n"
      "  DIR            every slide or image file in the folder (not recursive), by name\n"
      "  LIST.csv       rows slide_id,path[,mpp]; a header row 'slide_id,path,mpp' is\n"
      "                 optional (with it, other columns are ignored); relative paths are\n"
      "                 relative to the CSV's folder\n\n"
      "options:\n"
      "  -o, --output DIR       output folder (created if missing); required\n"
      "  -m, --model FILE       the patch encoder (.safetensors, 'nic encoder import'); default:\n"
      "                         the bundled models/nic-default.safetensors\n"
      "      --slide-mpp X      level-0 spacing in um/px for every slide, winning over the file\n"
      "                         (for slides without or with a wrong calibration); a list's mpp\n"
      "                         column wins over it. --mpp-override is the same\n"
      "      --mask FILE|DIR    tissue masks instead of detection: GeoJSON polygons in level-0\n"
      "                         pixels or a mask image (as 'nic tissue' writes); a folder is\n"
      "                         searched for <id>.geojson, <id>.json, <id>_mask.png\n"
      "      --min-tissue F     keep a patch when at least this fraction is tissue (0.5)\n"
      "      --tissue-mpp X     spacing of tissue detection, um/px (8)\n"
      "      --orientations N   1, or 8: also encode the 8 rotations/flips of every patch\n"
      "                         (features_orientations)\n"
      "  -b, --batch N          patches per forward pass (128)\n"
      "  -r, --readers N        patch-decoding threads (default: one per core)\n"
      "  -t, --threads N        encoder (oneDNN) threads (default: one per core)\n"
      "      --encoders N       encoder instances sharing those threads, each on its own\n"
      "                         batches (default: one per thread)\n"
      "      --shard I/N        only slides at list positions p with p %% N == I (0 <= I < N),\n"
      "                         for job arrays; the report is compress_report.I-of-N.csv\n"
      "      --overwrite        redo slides whose output is complete\n"
      "      --report FILE      the run report (default OUTDIR/compress_report.csv)\n"
      "      --gzip N           deflate level of the outputs, 0 (none) to 9 (0)\n"
      "  -v, --verbose          where each slide's time went (reading vs encoding)\n"
      "  -q, --quiet            no progress display\n"
      "  -h, --help             this text\n\n"
      "The report has one row per slide: slide_id,path,status (ok, skipped, failed),\n"
      "n_patches,seconds,error. A slide that fails (missing, not a slide, no spacing, no\n"
      "tissue, unreadable tiles) is recorded there and the others go on.\n"
      "Exit status: 0 when every slide is done (now or before), 1 when any failed, 2 on\n"
      "usage errors. See docs/compress.md.\n");
}

/* ---- options ---------------------------------------------------------------------- */

typedef struct compress_cli {
  const char *outdir, *model, *mask, *report;
  double slide_mpp;
  int shard_i, shard_n; /* shard_n 0 = no sharding */
  int overwrite, verbose, quiet;
  int threads;
  nic_compress_opts co;
} compress_cli;

enum {
  OPT_SLIDE_MPP = 1000,
  OPT_MASK,
  OPT_MIN_TISSUE,
  OPT_TISSUE_MPP,
  OPT_ORIENT,
  OPT_SHARD,
  OPT_OVERWRITE,
  OPT_REPORT,
  OPT_GZIP,
  OPT_ENCODERS
};

static int parse_shard(const char *s, int *i, int *n) {
  char *end = NULL;
  long a = strtol(s, &end, 10);
  if (end == s || *end != '/') return -1;
  const char *t = end + 1;
  long b = strtol(t, &end, 10);
  if (end == t || *end || b < 1 || b > 1000000 || a < 0 || a >= b) return -1;
  *i = (int)a;
  *n = (int)b;
  return 0;
}

/* Parses argv; returns -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, compress_cli *o) {
  static const struct option longopts[] = {{"output", required_argument, NULL, 'o'},
                                           {"model", required_argument, NULL, 'm'},
                                           {"slide-mpp", required_argument, NULL, OPT_SLIDE_MPP},
                                           {"mpp-override", required_argument, NULL, OPT_SLIDE_MPP},
                                           {"mask", required_argument, NULL, OPT_MASK},
                                           {"min-tissue", required_argument, NULL, OPT_MIN_TISSUE},
                                           {"tissue-mpp", required_argument, NULL, OPT_TISSUE_MPP},
                                           {"orientations", required_argument, NULL, OPT_ORIENT},
                                           {"batch", required_argument, NULL, 'b'},
                                           {"readers", required_argument, NULL, 'r'},
                                           {"threads", required_argument, NULL, 't'},
                                           {"encoders", required_argument, NULL, OPT_ENCODERS},
                                           {"shard", required_argument, NULL, OPT_SHARD},
                                           {"overwrite", no_argument, NULL, OPT_OVERWRITE},
                                           {"report", required_argument, NULL, OPT_REPORT},
                                           {"gzip", required_argument, NULL, OPT_GZIP},
                                           {"verbose", no_argument, NULL, 'v'},
                                           {"quiet", no_argument, NULL, 'q'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  const char *cmd = "compress";
  int c;
  while ((c = getopt_long(argc, argv, "o:m:b:r:t:vqh", longopts, NULL)) != -1) {
    switch (c) {
    case 'o':
      o->outdir = optarg;
      break;
    case 'm':
      o->model = optarg;
      break;
    case OPT_MASK:
      o->mask = optarg;
      break;
    case OPT_REPORT:
      o->report = optarg;
      break;
    case OPT_OVERWRITE:
      o->overwrite = 1;
      break;
    case 'v':
      o->verbose = 1;
      break;
    case 'q':
      o->quiet = 1;
      break;
    case OPT_SLIDE_MPP:
      if (cli_parse_double(cmd, "--slide-mpp", optarg, &o->slide_mpp)) return 2;
      if (!(o->slide_mpp > 0)) return cli_usage(cmd, "--slide-mpp must be positive");
      break;
    case OPT_MIN_TISSUE:
      if (cli_parse_double(cmd, "--min-tissue", optarg, &o->co.min_tissue)) return 2;
      if (!(o->co.min_tissue >= 0 && o->co.min_tissue <= 1))
        return cli_usage(cmd, "--min-tissue must be within 0..1");
      break;
    case OPT_TISSUE_MPP:
      if (cli_parse_double(cmd, "--tissue-mpp", optarg, &o->co.tissue_mpp)) return 2;
      if (!(o->co.tissue_mpp > 0)) return cli_usage(cmd, "--tissue-mpp must be positive");
      break;
    case OPT_ORIENT:
      if (cli_parse_int(cmd, "--orientations", optarg, 1, &o->co.orientations)) return 2;
      if (o->co.orientations != 1 && o->co.orientations != 8)
        return cli_usage(cmd, "--orientations must be 1 or 8");
      break;
    case 'b':
      if (cli_parse_int(cmd, "--batch", optarg, 1, &o->co.batch)) return 2;
      if (o->co.batch > 4096) return cli_usage(cmd, "--batch must be at most 4096");
      break;
    case 'r':
      if (cli_parse_int(cmd, "--readers", optarg, 1, &o->co.readers)) return 2;
      if (o->co.readers > 256) return cli_usage(cmd, "--readers must be at most 256");
      break;
    case 't':
      if (cli_parse_int(cmd, "--threads", optarg, 1, &o->threads)) return 2;
      break;
    case OPT_ENCODERS:
      if (cli_parse_int(cmd, "--encoders", optarg, 1, &o->co.encoders)) return 2;
      if (o->co.encoders > 64) return cli_usage(cmd, "--encoders must be at most 64");
      break;
    case OPT_GZIP:
      if (cli_parse_int(cmd, "--gzip", optarg, 0, &o->co.gzip_level)) return 2;
      if (o->co.gzip_level > 9) return cli_usage(cmd, "--gzip must be 0..9");
      break;
    case OPT_SHARD:
      if (parse_shard(optarg, &o->shard_i, &o->shard_n))
        return cli_usage(cmd, "--shard expects I/N with 0 <= I < N, got '%s'", optarg);
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      return cli_usage(cmd, "unknown option");
    }
  }
  if (optind >= argc) return cli_usage(cmd, "no slides given");
  if (!o->outdir) return cli_usage(cmd, "-o OUTDIR is required");
  return -1;
}

/* ---- helpers ------------------------------------------------------------------------- */

/* mkdir -p */
static int make_dirs(const char *dir) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) {
    errno = ENAMETOOLONG;
    return -1;
  }
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
  struct stat st;
  if (stat(buf, &st) != 0) return -1;
  if (!S_ISDIR(st.st_mode)) {
    errno = ENOTDIR;
    return -1;
  }
  return 0;
}

/* The command as typed, for the outputs' command_line attribute: words
 * with anything but safe characters are single-quoted. malloc'd. */
static char *command_line(int argc, char **argv) {
  size_t n = 8;
  for (int i = 0; i < argc; i++) n += 4 * strlen(argv[i]) + 3;
  char *s = malloc(n), *p = s;
  if (!s) return NULL;
  p += sprintf(p, "nic");
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    int plain = *a && strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                "-_./=:,+@%") == strlen(a);
    *p++ = ' ';
    if (plain) {
      p += sprintf(p, "%s", a);
      continue;
    }
    *p++ = '\'';
    for (; *a; a++) {
      if (*a == '\'') {
        memcpy(p, "'\\''", 4);
        p += 4;
      } else {
        *p++ = *a;
      }
    }
    *p++ = '\'';
  }
  *p = '\0';
  return s;
}

/* The model to use: --model, or the bundled default. */
static const char *pick_model(const compress_cli *o, char *buf, size_t size) {
  if (o->model) return o->model;
  if (cli_default_model(buf, size)) return buf;
  fprintf(stderr,
          "nic compress: no --model given and no bundled default encoder found (looked for "
          "%s).\nGive an encoder with --model FILE, e.g. one made by 'nic encoder import "
          "encoder_multitask-4.h5 -o mtl4.safetensors'.\n",
          buf);
  return NULL;
}

/* ---- progress and per-slide lines ------------------------------------------------------ */

/* Ctrl-C: finish cleanly (the slide in progress is dropped, its temporary
 * file removed, the report written). A second Ctrl-C kills at once. */
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

typedef struct run_view {
  const compress_cli *o;
  cli_progress bar;
  char label[128];
} run_view;

static void on_progress(void *user, int64_t done, int64_t total) {
  run_view *v = user;
  if (done == 0 || v->bar.total != total) cli_progress_start(&v->bar, v->label, total, "patches");
  cli_progress_update(&v->bar, done);
}

static void on_slide_begin(void *user, int index, int count, const nic_slide_entry *e) {
  run_view *v = user;
  snprintf(v->label, sizeof v->label, "[%d/%d] %s", index + 1, count, e->id);
  v->bar.total = -1; /* the next progress call starts the bar */
}

static void print_breakdown(const nic_compress_stats *s) {
  printf("    grid %d x %d, %lld patches (%.1f%% tissue), level %d (downsample %.3g), %d reader%s, "
         "%d encoder%s\n",
         s->grid_h, s->grid_w, (long long)s->patches, 100 * s->tissue_fraction, s->level,
         s->level_downsample, s->readers, s->readers == 1 ? "" : "s", s->encoders,
         s->encoders == 1 ? "" : "s");
  printf("    time: open %.2f s, tissue+grid %.2f s, read/decode %.2f s, encode %.2f s, "
         "write %.2f s (read and encode summed over their threads)\n",
         s->open_s, s->tissue_s, s->read_s, s->encode_s, s->write_s);
  printf("    waits: encoders waited for patches %.2f s, readers waited for a free batch %.2f s\n",
         s->wait_s, s->stall_s);
}

static void on_slide_end(void *user, int index, int count, const nic_compress_result *r) {
  run_view *v = user;
  cli_progress_end(&v->bar);
  const char *id = r->entry->id;
  switch (r->outcome) {
  case NIC_COMPRESS_DONE:
    printf("[%d/%d] %s: %lld patches in %.2f s (%.0f patches/s) -> %s/%s.h5\n", index + 1, count,
           id, (long long)r->patches, r->seconds,
           r->seconds > 0 ? (double)r->patches / r->seconds : 0, v->o->outdir, id);
    if (v->o->verbose) print_breakdown(&r->stats);
    break;
  case NIC_COMPRESS_SKIPPED:
    printf("[%d/%d] %s: already done (%lld patches), skipped\n", index + 1, count, id,
           (long long)r->patches);
    break;
  default:
    fflush(stdout);
    fprintf(stderr, "[%d/%d] %s: FAILED: %s\n", index + 1, count, id, r->error);
  }
  fflush(stdout);
}

/* ---- the command ----------------------------------------------------------------------- */

/* Builds the list from the arguments; exit code on failure, else -1. */
static int build_list(const compress_cli *o, int argc, char **argv, nic_slide_list *l) {
  nic_error err = {0};
  for (int i = optind; i < argc; i++)
    if (nic_slide_list_add(l, argv[i], &err) != NIC_OK) return cli_fail(&err);
  nic_slide_list_mark_duplicates(l); /* before sharding: every job marks the same ones */
  if (o->shard_n && nic_slide_list_shard(l, o->shard_i, o->shard_n, &err) != NIC_OK)
    return cli_fail(&err);
  if (o->mask && l->count > 1) {
    struct stat st;
    if (stat(o->mask, &st) != 0 || !S_ISDIR(st.st_mode))
      return cli_usage("compress", "--mask FILE works with one slide; give a folder for several");
  }
  return -1;
}

static int run(compress_cli *o, nic_slide_list *l, const char *model) {
  nic_ctx *ctx = cli_make_ctx(o->threads, 42);
  if (!ctx) return 1;
  run_view v;
  memset(&v, 0, sizeof v);
  v.o = o;
  cli_progress_init(&v.bar, stderr, o->quiet ? CLI_PROGRESS_NONE : CLI_PROGRESS_AUTO);
  o->co.progress = on_progress;
  o->co.progress_user = &v;
  o->co.cancel = &interrupted;
  nic_error err = {0};
  nic_compressor *c = NULL;
  if (nic_compressor_create(&c, model, ctx, &o->co, &err) != NIC_OK) {
    nic_ctx_free(ctx);
    return cli_fail(&err);
  }
  const nic_compress_opts *eff = nic_compressor_opts(c);
  printf("nic compress: %d slide%s with %s (%d px at %g um/px -> %d values); %d readers, %d "
         "encoders on %d threads, batch %d\n",
         l->count, l->count == 1 ? "" : "s", nic_compressor_encoder_name(c),
         nic_compressor_patch_size(c), nic_compressor_mpp(c), nic_compressor_embed_dim(c),
         eff->readers, eff->encoders, nic_ctx_threads(ctx), eff->batch);
  fflush(stdout);

  char report[4096];
  if (o->report)
    snprintf(report, sizeof report, "%s", o->report);
  else if (o->shard_n)
    snprintf(report, sizeof report, "%s/compress_report.%d-of-%d.csv", o->outdir, o->shard_i,
             o->shard_n);
  else
    snprintf(report, sizeof report, "%s/compress_report.csv", o->outdir);
  nic_compress_run_opts ro = {o->outdir, report,         o->overwrite, o->slide_mpp,
                              o->mask,   on_slide_begin, on_slide_end, &v};
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old);
  nic_compress_summary sum;
  nic_status st = nic_compress_run(c, l, &ro, &sum, &err);
  sigaction(SIGINT, &old, NULL);
  cli_progress_end(&v.bar);

  printf("nic compress: %d slide%s: %d compressed, %d already done, %d failed; %lld patches in "
         "%.1f s (%.0f patches/s); report %s\n",
         sum.total, sum.total == 1 ? "" : "s", sum.done, sum.skipped, sum.failed,
         (long long)sum.patches, sum.seconds,
         sum.seconds > 0 ? (double)sum.patches / sum.seconds : 0, report);
  int rc = sum.failed ? 1 : 0;
  if (st != NIC_OK) rc = cli_fail(&err);
  nic_compressor_free(c);
  nic_ctx_free(ctx);
  return rc;
}

int cmd_compress(int argc, char **argv) {
  compress_cli o;
  memset(&o, 0, sizeof o);
  o.co = nic_compress_default_opts();
  /* Before getopt, which reorders argv. */
  char *cmdline = command_line(argc, argv);
  o.co.command_line = cmdline;
  int rc = parse_args(argc, argv, &o);
  char model_buf[8192];
  const char *model = rc < 0 ? pick_model(&o, model_buf, sizeof model_buf) : NULL;
  if (rc < 0 && !model) rc = 1;
  nic_slide_list l = {0};
  if (rc < 0) rc = build_list(&o, argc, argv, &l);
  if (rc < 0 && make_dirs(o.outdir) != 0) {
    fprintf(stderr, "nic compress: cannot create output folder %s: %s\n", o.outdir,
            strerror(errno));
    rc = 1;
  }
  if (rc < 0) rc = run(&o, &l, model);
  free(cmdline);
  nic_slide_list_free(&l);
  return rc;
}
