#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "nic/compress.h"

static const nic_cli_cmd commands[] = {
    {"encoder", "patch encoder: import published weights, embed images", cmd_encoder},
    {"bench", "measure engine throughput (inference and training)", cmd_bench},
    {"compress", "slides -> compressed slides (patch embeddings on the tissue grid, HDF5)",
     cmd_compress},
    {"tissue", "tissue masks of slides (PNG, thumbnail overlay, QuPath GeoJSON)", cmd_tissue},
    {"inspect", "describe a slide: levels, spacing, objective, properties", cmd_inspect},
    {"simulate", "synthetic data: nMNIST needles, H&E slides, labelled patches", cmd_simulate},
    {"train", "slide-level models on compressed slides, cross-validated", cmd_train_slides},
    {"predict", "score compressed slides with a slide model (predictions CSV)", cmd_predict},
    {"eval", "metrics of predictions with bootstrap intervals, ROC / Kaplan-Meier plot", cmd_eval},
    {"heatmap", "Grad-CAM / attention heatmaps of slides (PNG, QuPath GeoJSON)", cmd_heatmap},
    {"demo", "the whole pipeline on a simulated cohort, with a report (make demo)", cmd_demo},
};
static const int ncommands = (int)(sizeof commands / sizeof commands[0]);

static void usage(FILE *f) {
  fprintf(f,
          "nic %s - Neural Image Compression for whole-slide images\n\n"
          "usage: nic <command> [options]\n"
          "       nic <command> -h     help for one command\n"
          "       nic --version\n\ncommands:\n",
          nic_version());
  for (int i = 0; i < ncommands; i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "  %-10s %s\n", "help", "this text");
}

int cli_fail(const nic_error *err) {
  fprintf(stderr, "nic: %s\n", err && err->msg[0] ? err->msg : "failed");
  return 1;
}

int cli_usage(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "nic %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see 'nic %s -h')\n", cmd);
  return 2;
}

int cli_parse_int(const char *cmd, const char *flag, const char *s, int min, int *out) {
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < min || v > 1000000000L) {
    cli_usage(cmd, "%s expects an integer >= %d, got '%s'", flag, min, s);
    return -1;
  }
  *out = (int)v;
  return 0;
}

int cli_parse_double(const char *cmd, const char *flag, const char *s, double *out) {
  char *end = NULL;
  double v = strtod(s, &end);
  if (!*s || *end) {
    cli_usage(cmd, "%s expects a number, got '%s'", flag, s);
    return -1;
  }
  *out = v;
  return 0;
}

int cli_default_model(char *buf, size_t size) {
  char dir[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
  char *slash = NULL;
  if (n > 0) {
    dir[n] = '\0';
    slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
  }
  return nic_compress_default_model(slash ? dir : NULL, buf, size);
}

nic_ctx *cli_make_ctx(int threads, uint64_t seed) {
  nic_ctx_opts o = nic_ctx_default_opts();
  o.threads = threads;
  o.seed = seed;
  nic_ctx *ctx = NULL;
  nic_error err = {0};
  if (nic_ctx_create(&ctx, &o, &err) != NIC_OK) {
    cli_fail(&err);
    return NULL;
  }
  return ctx;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *c = argv[1];
  if (!strcmp(c, "help") || !strcmp(c, "-h") || !strcmp(c, "--help")) {
    if (argc > 2) { /* nic help CMD == nic CMD -h */
      for (int i = 0; i < ncommands; i++)
        if (!strcmp(argv[2], commands[i].name)) {
          char *hargv[] = {argv[2], "-h", NULL};
          return commands[i].run(2, hargv);
        }
    }
    usage(stdout);
    return 0;
  }
  if (!strcmp(c, "--version") || !strcmp(c, "version")) {
    printf("nic %s\n", nic_version());
    return 0;
  }
  for (int i = 0; i < ncommands; i++)
    if (!strcmp(c, commands[i].name)) {
      optind = 1; /* each subcommand parses its own argv */
      return commands[i].run(argc - 1, argv + 1);
    }
  fprintf(stderr, "nic: unknown command '%s'\n\n", c);
  usage(stderr);
  return 2;
}
