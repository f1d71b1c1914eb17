/* nic demo: the whole pipeline on a simulated cohort, with a report. The
 * work is in src/demo/ (include/nic/demo.h); this file parses flags, finds
 * the encoder, shows progress and prints the last line, name=value pairs
 * with the slide-level AUC first. */
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "nic/compress.h"
#include "nic/demo.h"

static void usage(FILE *f) {
  nic_demo_opts d = nic_demo_default_opts();
  fprintf(
      f,
      "usage: nic demo [options]\n\n"
      "Runs Neural Image Compression end to end on a simulated cohort and writes a report:\n"
      "  1. simulate   procedural H&E slides, half with tumour ('nic simulate histo')\n"
      "  2. compress   tissue detection + patch encoding with the encoder ('nic compress')\n"
      "  3. train      k-fold cross-validation of the NIC slide CNN ('nic train')\n"
      "  4. evaluate   metrics with 95%% bootstrap intervals, ROC curves ('nic eval')\n"
      "  5. heatmaps   Grad-CAM of a few slides ('nic heatmap')\n"
      "  6. report     OUTDIR/report.md: figures, metrics, per-fold results, timings\n"
      "Each stage is printed as it goes; the last line is name=value pairs: auc (pooled\n"
      "out-of-fold AUC), auc_lo and auc_hi (its 95%% interval), auc_mean and auc_sd (over\n"
      "folds), bacc, acc, kappa, n, folds, seconds, report.\n"
      "Running the same command again skips finished stages (compression resumes slide by\n"
      "slide); changing an option redoes the stages it affects and those after them.\n"
      "The defaults take a few minutes on 2 cores; --slides and --size scale it up.\n\n"
      "options:\n"
      "  -o, --output DIR       the demo folder (%s)\n"
      "  -m, --model FILE       the patch encoder (.safetensors); default: the bundled\n"
      "                         models/nic-default.safetensors, found as 'nic compress' finds it\n"
      "  -n, --slides N         slides in the cohort, half with tumour (%d)\n"
      "      --size PX          slide side in pixels at 0.5 um/px (%d: %.1f mm)\n"
      "      --lesion LO,HI     tumour area as a fraction of the tissue on tumour slides, drawn\n"
      "                         uniformly from [LO, HI] (%g,%g); smaller is harder\n"
      "  -k, --folds K          cross-validation folds (%d)\n"
      "  -e, --epochs N         slide CNN: at most N epochs per fold (%d)\n"
      "      --patience N       stop a fold after N epochs without a better validation AUC;\n"
      "                         the learning rate halves after N/2 without a lower loss (%d)\n"
      "      --heatmaps N       slides shown with heatmaps, 0 for none (%d)\n"
      "  -s, --seed N           seeds the cohort, the folds and the training (%llu)\n"
      "  -t, --threads N        compute threads (default: one per core)\n"
      "      --restart          redo every stage, ignoring earlier results\n"
      "  -q, --quiet            no progress bars (stage lines are still printed)\n"
      "  -h, --help             this text\n\n"
      "Exit status: 0 on success, 1 when a stage fails, 2 on usage errors.\n",
      d.outdir, d.slides, d.size, d.size * 0.5e-3, d.lesion_min, d.lesion_max, d.folds, d.epochs,
      d.patience, d.heatmaps, (unsigned long long)d.seed);
}

typedef struct demo_cli {
  nic_demo_opts o;
  int threads, quiet;
  cli_progress bar;
  char label[128];
} demo_cli;

/* Ctrl-C stops compression between batches; a second one kills at once. */
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

static void on_log(void *user, const char *line) {
  demo_cli *c = user;
  cli_progress_clear(&c->bar);
  printf("%s\n", line);
  fflush(stdout);
}

static void on_progress(void *user, nic_demo_stage stage, const char *label, int64_t done,
                        int64_t total, const char *unit) {
  demo_cli *c = user;
  (void)stage;
  if (strcmp(c->label, label) != 0 || c->bar.total != total) {
    snprintf(c->label, sizeof c->label, "%s", label);
    cli_progress_start(&c->bar, label, total, unit);
  }
  cli_progress_update(&c->bar, done);
}

/* "LO,HI" into two numbers. */
static int parse_range(const char *s, double *lo, double *hi) {
  char *end = NULL;
  *lo = strtod(s, &end);
  if (end == s || *end != ',') return -1;
  const char *t = end + 1;
  *hi = strtod(t, &end);
  return end == t || *end ? -1 : 0;
}

/* Parses argv; returns -1 to go on, else the exit code. */
static int parse_args(demo_cli *c, int argc, char **argv) {
  enum { O_SIZE = 1000, O_LESION, O_PATIENCE, O_HEATMAPS, O_RESTART };
  static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                       {"model", required_argument, NULL, 'm'},
                                       {"slides", required_argument, NULL, 'n'},
                                       {"size", required_argument, NULL, O_SIZE},
                                       {"lesion", required_argument, NULL, O_LESION},
                                       {"folds", required_argument, NULL, 'k'},
                                       {"epochs", required_argument, NULL, 'e'},
                                       {"patience", required_argument, NULL, O_PATIENCE},
                                       {"heatmaps", required_argument, NULL, O_HEATMAPS},
                                       {"seed", required_argument, NULL, 's'},
                                       {"threads", required_argument, NULL, 't'},
                                       {"restart", no_argument, NULL, O_RESTART},
                                       {"quiet", no_argument, NULL, 'q'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *cmd = "demo";
  nic_demo_opts *o = &c->o;
  int ch, n;
  while ((ch = getopt_long(argc, argv, "o:m:n:k:e:s:t:qh", opts, NULL)) != -1) {
    switch (ch) {
    case 'o':
      o->outdir = optarg;
      break;
    case 'm':
      o->model = optarg;
      break;
    case 'n':
      if (cli_parse_int(cmd, "--slides", optarg, 4, &o->slides)) return 2;
      break;
    case O_SIZE:
      if (cli_parse_int(cmd, "--size", optarg, 512, &o->size)) return 2;
      break;
    case O_LESION:
      if (parse_range(optarg, &o->lesion_min, &o->lesion_max) ||
          !(o->lesion_min > 0 && o->lesion_min <= o->lesion_max && o->lesion_max <= 0.9))
        return cli_usage(cmd, "--lesion expects LO,HI with 0 < LO <= HI <= 0.9, got '%s'", optarg);
      break;
    case 'k':
      if (cli_parse_int(cmd, "--folds", optarg, 2, &o->folds)) return 2;
      break;
    case 'e':
      if (cli_parse_int(cmd, "--epochs", optarg, 1, &o->epochs)) return 2;
      break;
    case O_PATIENCE:
      if (cli_parse_int(cmd, "--patience", optarg, 0, &o->patience)) return 2;
      break;
    case O_HEATMAPS:
      if (cli_parse_int(cmd, "--heatmaps", optarg, 0, &o->heatmaps)) return 2;
      break;
    case 's':
      if (cli_parse_int(cmd, "--seed", optarg, 0, &n)) return 2;
      o->seed = (uint64_t)n;
      break;
    case 't':
      if (cli_parse_int(cmd, "--threads", optarg, 1, &c->threads)) return 2;
      break;
    case O_RESTART:
      o->restart = 1;
      break;
    case 'q':
      c->quiet = 1;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      return cli_usage(cmd, "unknown option");
    }
  }
  if (optind < argc) return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
  if (o->slides < 2 * o->folds)
    return cli_usage(cmd, "--slides %d is too few for %d folds (at least %d)", o->slides, o->folds,
                     2 * o->folds);
  return -1;
}

/* The command line as typed, for the report. */
static void command_line(int argc, char **argv, char *buf, size_t size) {
  size_t at = 0;
  buf[0] = '\0';
  for (int i = -1; i < argc && at < size; i++) {
    int w = snprintf(buf + at, size - at, "%s%s", i < 0 ? "nic" : " ", i < 0 ? "" : argv[i]);
    if (w > 0) at += (size_t)w;
  }
}

/* The encoder: --model, or the bundled default; NULL (with a message
 * saying where it looked and how to get one) when there is none. */
static const char *pick_model(const char *model, char *buf, size_t size) {
  if (model) return model;
  if (cli_default_model(buf, size)) return buf;
  fprintf(stderr,
          "nic demo: no --model given and no bundled default encoder found (looked for %s).\n"
          "Get one in either way:\n"
          "  - put the bundled encoder at models/nic-default.safetensors in the source tree\n"
          "    (or share/nic/models/ of an installed nic);\n"
          "  - import the published MTL-NIC encoder and pass it with --model:\n"
          "      nic encoder import encoder_multitask-4.h5 -o mtl4.safetensors\n"
          "      nic demo --model mtl4.safetensors\n"
          "  - or train one: 'nic encoder train --arch nic ...' (docs/encoder-training.md).\n",
          buf);
  return NULL;
}

/* The last line: the pooled AUC with its interval, then the evaluation's
 * summary with its fold mean renamed auc_mean (auc_pooled is auc). */
static void print_last_line(const nic_demo_result *r) {
  char rest[1024] = "";
  size_t at = 0;
  char summary[1024];
  snprintf(summary, sizeof summary, "%s", r->summary);
  char *save = NULL;
  for (char *tok = strtok_r(summary, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
    if (!strncmp(tok, "auc_pooled=", 11)) continue;
    const char *name = !strncmp(tok, "auc=", 4) ? "auc_mean=" : "";
    const char *val = *name ? tok + 4 : tok;
    int w = snprintf(rest + at, sizeof rest - at, " %s%s", name, val);
    if (w > 0 && (size_t)w < sizeof rest - at) at += (size_t)w;
  }
  printf("auc=%.4f auc_lo=%.4f auc_hi=%.4f%s seconds=%.1f report=%s\n", r->auc, r->auc_lo,
         r->auc_hi, rest, r->total_s, r->report);
}

int cmd_demo(int argc, char **argv) {
  demo_cli c;
  memset(&c, 0, sizeof c);
  c.o = nic_demo_default_opts();
  char cmdline[4096];
  command_line(argc, argv, cmdline, sizeof cmdline); /* before getopt reorders argv */
  int rc = parse_args(&c, argc, argv);
  if (rc >= 0) return rc;
  char model_buf[8192];
  c.o.model = pick_model(c.o.model, model_buf, sizeof model_buf);
  if (!c.o.model) return 1;
  nic_ctx *ctx = cli_make_ctx(c.threads, c.o.seed);
  if (!ctx) return 1;
  cli_progress_init(&c.bar, stderr, c.quiet ? CLI_PROGRESS_NONE : CLI_PROGRESS_AUTO);
  c.o.command_line = cmdline;
  c.o.cancel = &interrupted;
  c.o.log = on_log;
  c.o.progress = on_progress;
  c.o.user = &c;
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old);
  nic_demo_result r;
  nic_error err = {0};
  nic_status st = nic_demo_run(ctx, &c.o, &r, &err);
  sigaction(SIGINT, &old, NULL);
  cli_progress_end(&c.bar);
  nic_ctx_free(ctx);
  if (st != NIC_OK) return cli_fail(&err);
  printf("report: %s\n", r.report);
  print_last_line(&r);
  return isfinite(r.auc) ? 0 : 1;
}
