/* nic encoder: import the published Keras encoders, embed image patches,
 * describe model files.
 *
 *   nic encoder import IN.h5 -o OUT.safetensors
 *   nic encoder embed --model M [--batch N] [--threads N] [--resize] IMAGE...
 *   nic encoder info M
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "nic/encoder.h"
#include "nic/image.h"
/* Private headers, for what the public API does not expose: quoting JSON
 * strings, and listing every metadata key in 'info'. */
#include "io/json_util.h"
#include "nn/layer.h"

static void usage(FILE *f) {
  fprintf(f, "usage: nic encoder <subcommand> [options]\n"
             "\n"
             "Patch encoders of Neural Image Compression: each maps a square RGB patch\n"
             "to an embedding vector.\n"
             "\n"
             "subcommands:\n"
             "  import   convert a published Keras encoder (.h5) to a nic model file\n"
             "  embed    print the embedding of each image patch\n"
             "  info     describe a model file: input, layers, parameters, metadata\n"
             "\n"
             "'nic encoder <subcommand> -h' explains each one's options.\n");
}

/* ---- import ---------------------------------------------------------------- */

static void import_usage(FILE *f) {
  fprintf(f, "usage: nic encoder import IN.h5 -o OUT.safetensors [--name NAME]\n"
             "\n"
             "Converts a published NIC encoder saved by Keras 2 (encoder_multitask-4.h5,\n"
             "encoder_bigan.h5) into a nic model file: the architecture is checked\n"
             "against the NIC encoder (2x2 average pool, 4 x [conv 3x3/2 + LeakyReLU(0.2)\n"
             "+ batch norm], flatten, dense), the weights are converted to nic's layout,\n"
             "and the input is described as 128 px patches at 0.5 um/px scaled to [-1, 1].\n"
             "\n"
             "options:\n"
             "  -o, --output FILE   the model file to write (required); written atomically\n"
             "  -n, --name NAME     the encoder_name stored in the metadata (default:\n"
             "                      derived from the file name, e.g. nic-multitask-4)\n"
             "  -h, --help          this text\n");
}

static int cmd_import(int argc, char **argv) {
  static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                       {"name", required_argument, NULL, 'n'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *out = NULL, *name = NULL;
  int c;
  while ((c = getopt_long(argc, argv, "o:n:h", opts, NULL)) != -1) {
    switch (c) {
    case 'o':
      out = optarg;
      break;
    case 'n':
      name = optarg;
      break;
    case 'h':
      import_usage(stdout);
      return 0;
    default:
      return cli_usage("encoder import", "unknown option");
    }
  }
  if (optind != argc - 1)
    return cli_usage("encoder import", "expected one input .h5 file, got %d", argc - optind);
  if (!out) return cli_usage("encoder import", "missing -o OUT.safetensors");
  nic_error err = {0};
  nic_model *m = NULL;
  if (nic_encoder_import_keras(&m, argv[optind], &err) != NIC_OK) return cli_fail(&err);
  if (name) {
    char *q = nic_json_quote(name); /* metadata values are JSON texts */
    if (q) nic_model_set_meta(m, "encoder_name", q);
    free(q);
  }
  nic_status s = nic_model_save(m, out, &err);
  nic_model_free(m);
  if (s != NIC_OK) return cli_fail(&err);
  printf("wrote %s\n", out);
  return 0;
}

/* ---- embed ------------------------------------------------------------------ */

static void embed_usage(FILE *f) {
  fprintf(f, "usage: nic encoder embed --model M [--batch N] [--threads N] [--resize] IMAGE...\n"
             "\n"
             "Prints one line per image: its path, then the embedding values separated by\n"
             "spaces (%%.9g: exact float32). Lines follow the order of the arguments. Images\n"
             "are read with libvips (JPEG, PNG, TIFF, ...) as 8-bit sRGB; alpha is flattened\n"
             "onto white. Each must be the model's patch size square (128x128 for the NIC\n"
             "encoders, at the model's resolution, 0.5 um/px) unless --resize is given.\n"
             "An image that cannot be read or has the wrong size is reported on stderr\n"
             "and skipped; the others are still embedded, and the exit status is then 1.\n"
             "\n"
             "options:\n"
             "  -m, --model FILE    the encoder model file (from 'nic encoder import'); required\n"
             "  -b, --batch N       patches per forward pass (default 32, at most 4096);\n"
             "                      only speed and memory depend on it\n"
             "  -t, --threads N     compute threads (default 0 = all cores)\n"
             "  -r, --resize        resample images of any other size to the patch size by\n"
             "                      area averaging (each output pixel is the mean of the\n"
             "                      source area it covers); a non-square image is stretched,\n"
             "                      and the caller is responsible for the physical scale\n"
             "      --no-optimize   run the layers as stored instead of first folding batch\n"
             "                      norms into the convolutions (slower; the results differ\n"
             "                      only by float rounding)\n"
             "  -h, --help          this text\n");
}

typedef struct embed_job {
  nic_model *m;
  nic_ctx *ctx;
  int P;        /* patch size */
  int batch;    /* capacity */
  uint8_t *pix; /* batch x P x P x 3 */
  const char **paths;
  int n; /* patches waiting */
  nic_tensor x;
} embed_job;

/* Runs the waiting patches and prints their lines. */
static int flush_batch(embed_job *j) {
  if (j->n == 0) return 0;
  nic_error err = {0};
  int start = 1;
  const nic_tensor *y = NULL;
  size_t per = (size_t)j->P * (size_t)j->P * 3;
  if (nic_model_prepare_rgb8(j->m, j->pix, j->n, j->P, (int64_t)j->P * 3, (int64_t)per, &j->x,
                             &start, &err) != NIC_OK ||
      nic_model_forward_from(j->m, j->ctx, &j->x, start, 0, &y, &err) != NIC_OK)
    return cli_fail(&err);
  int64_t d = nic_tensor_numel(y) / j->n;
  for (int i = 0; i < j->n; i++) {
    fputs(j->paths[i], stdout);
    const float *v = y->data + (int64_t)i * d;
    for (int64_t k = 0; k < d; k++) printf(" %.9g", (double)v[k]);
    putchar('\n');
  }
  fflush(stdout);
  j->n = 0;
  return 0;
}

/* Loads one image into the next batch slot. Returns 0, or 1 after
 * reporting the problem. */
static int add_image(embed_job *j, const char *path, int resize) {
  nic_error err = {0};
  uint8_t *img = NULL;
  int w, h;
  if (nic_image_load_rgb8(path, &img, &w, &h, &err) != NIC_OK) return cli_fail(&err);
  uint8_t *slot = j->pix + (size_t)j->n * (size_t)j->P * (size_t)j->P * 3;
  int rc = 0;
  if (w == j->P && h == j->P) {
    memcpy(slot, img, (size_t)j->P * (size_t)j->P * 3);
  } else if (resize) {
    if (nic_image_resize_area(img, w, h, 3, slot, j->P, j->P, &err) != NIC_OK) rc = cli_fail(&err);
  } else {
    fprintf(stderr, "nic: %s: image is %dx%d, the model takes %dx%d patches (see --resize)\n", path,
            w, h, j->P, j->P);
    rc = 1;
  }
  free(img);
  if (rc == 0) j->paths[j->n++] = path;
  return rc;
}

static int cmd_embed(int argc, char **argv) {
  enum { OPT_NO_OPTIMIZE = 1000 };
  static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                       {"batch", required_argument, NULL, 'b'},
                                       {"threads", required_argument, NULL, 't'},
                                       {"resize", no_argument, NULL, 'r'},
                                       {"no-optimize", no_argument, NULL, OPT_NO_OPTIMIZE},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *model = NULL;
  int batch = 32, threads = 0, resize = 0, optimize = 1, c;
  while ((c = getopt_long(argc, argv, "m:b:t:rh", opts, NULL)) != -1) {
    switch (c) {
    case 'm':
      model = optarg;
      break;
    case 'b':
      if (cli_parse_int("encoder embed", "--batch", optarg, 1, &batch)) return 2;
      break;
    case 't':
      if (cli_parse_int("encoder embed", "--threads", optarg, 0, &threads)) return 2;
      break;
    case 'r':
      resize = 1;
      break;
    case OPT_NO_OPTIMIZE:
      optimize = 0;
      break;
    case 'h':
      embed_usage(stdout);
      return 0;
    default:
      return cli_usage("encoder embed", "unknown option");
    }
  }
  if (!model) return cli_usage("encoder embed", "missing --model FILE");
  if (optind >= argc) return cli_usage("encoder embed", "no images given");
  if (batch > 4096) batch = 4096; /* beyond this, only memory grows */

  nic_error err = {0};
  embed_job j;
  memset(&j, 0, sizeof j);
  j.x = (nic_tensor)NIC_TENSOR_INIT;
  if (nic_model_load(&j.m, model, &err) != NIC_OK) return cli_fail(&err);
  const nic_input_info *in = nic_model_input_info(j.m);
  int ndim, rc = 0;
  int64_t shp[NIC_MAX_DIMS];
  nic_model_node_shape(j.m, 0, &ndim, shp);
  j.P = in->patch_size;
  if (shp[1] != 3 || shp[2] != j.P || shp[3] != j.P) {
    fprintf(stderr, "nic: %s: input is %lldx%lldx%lld, not an RGB %dx%d patch encoder\n", model,
            (long long)shp[1], (long long)shp[2], (long long)shp[3], j.P, j.P);
    nic_model_free(j.m);
    return 1;
  }
  if (optimize && nic_model_optimize_inference(j.m, &err) != NIC_OK) {
    nic_model_free(j.m);
    return cli_fail(&err);
  }
  j.ctx = cli_make_ctx(threads, 42);
  j.batch = batch;
  j.pix = malloc((size_t)batch * (size_t)j.P * (size_t)j.P * 3);
  j.paths = malloc(sizeof *j.paths * (size_t)batch);
  if (!j.ctx || !j.pix || !j.paths) {
    if (j.ctx) fprintf(stderr, "nic: out of memory\n");
    rc = 1;
    goto done;
  }
  for (int i = optind; i < argc; i++) {
    if (add_image(&j, argv[i], resize)) rc = 1;
    if (j.n == j.batch && flush_batch(&j)) {
      rc = 1;
      goto done;
    }
  }
  if (flush_batch(&j)) rc = 1;
done:
  nic_tensor_free(&j.x);
  free(j.pix);
  free(j.paths);
  nic_model_free(j.m); /* before the context: it holds the backend's layer state */
  nic_ctx_free(j.ctx);
  return rc;
}

/* ---- info ---------------------------------------------------------------------- */

static void info_usage(FILE *f) {
  fprintf(f, "usage: nic encoder info MODEL\n"
             "\n"
             "Describes a nic model file: input and its normalisation, each layer with\n"
             "its inputs, output shape and parameter count, the number of trainable\n"
             "parameters, and the metadata.\n"
             "\n"
             "options:\n"
             "  -h, --help   this text\n");
}

/* Scalars in the params of layer `name` (params are "<layer>.<what>"). */
static int64_t layer_params(nic_model *m, const char *name) {
  static const char *const what[] = {"weight", "bias",         "gamma",
                                     "beta",   "running_mean", "running_var"};
  int64_t n = 0;
  char pn[160];
  for (size_t i = 0; i < sizeof what / sizeof what[0]; i++) {
    snprintf(pn, sizeof pn, "%s.%s", name, what[i]);
    nic_param *p = nic_model_param(m, pn);
    if (p) n += nic_tensor_numel(&p->value);
  }
  return n;
}

static void shape_text(char *buf, size_t n, int ndim, const int64_t *s) {
  if (ndim == 4)
    snprintf(buf, n, "%lldx%lldx%lld", (long long)s[1], (long long)s[2], (long long)s[3]);
  else
    snprintf(buf, n, "%lld", (long long)s[1]);
}

static int cmd_info(int argc, char **argv) {
  static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (c == 'h') {
      info_usage(stdout);
      return 0;
    }
    return cli_usage("encoder info", "unknown option");
  }
  if (optind != argc - 1) return cli_usage("encoder info", "expected one model file");
  const char *path = argv[optind];
  nic_error err = {0};
  nic_model *m = NULL;
  if (nic_model_load(&m, path, &err) != NIC_OK) return cli_fail(&err);
  const nic_input_info *in = nic_model_input_info(m);
  printf("model:  %s\n", path);
  printf("input:  %dx%dx%d; patch %d px at %g um/px; pixel/255 - mean / std with mean",
         in->channels, in->height, in->width, in->patch_size, in->mpp);
  int nc = in->channels < 4 ? in->channels : 4;
  for (int i = 0; i < nc; i++) printf(" %g", (double)in->mean[i]);
  printf(", std");
  for (int i = 0; i < nc; i++) printf(" %g", (double)in->std[i]);
  printf("\nlayers:\n  %3s  %-16s %-16s %-8s %-14s %s\n", "#", "name", "kind", "inputs", "output",
         "params");
  int n = nic_model_num_nodes(m);
  for (int k = 1; k <= n; k++) {
    const nic_layer_spec *s = nic_model_node_spec(m, k);
    char kind[64], inputs[32], shape[64];
    const char *kn = nic_layer_kind_name(s->kind);
    if (s->kind == NIC_LAYER_CONV2D)
      snprintf(kind, sizeof kind, "%s %dx%d/%d%s", kn, s->kernel[0], s->kernel[1], s->stride[0],
               s->groups > 1 ? " dw" : "");
    else if (s->kind == NIC_LAYER_POOL)
      snprintf(kind, sizeof kind, "%s %s %dx%d/%d", kn, s->pool == NIC_POOL_MAX ? "max" : "avg",
               s->kernel[0], s->kernel[1], s->stride[0]);
    else
      snprintf(kind, sizeof kind, "%s", kn);
    if (s->kind == NIC_LAYER_ADD)
      snprintf(inputs, sizeof inputs, "%d,%d", nic_model_node_input(m, k, 0),
               nic_model_node_input(m, k, 1));
    else
      snprintf(inputs, sizeof inputs, "%d", nic_model_node_input(m, k, 0));
    int ndim;
    int64_t shp[NIC_MAX_DIMS];
    nic_model_node_shape(m, k, &ndim, shp);
    shape_text(shape, sizeof shape, ndim, shp);
    printf("  %3d  %-16s %-16s %-8s %-14s %lld\n", k, nic_model_node_name(m, k), kind, inputs,
           shape, (long long)layer_params(m, nic_model_node_name(m, k)));
  }
  printf("trainable parameters: %lld\n", (long long)nic_model_num_trainable(m));
  int np;
  nic_param **ps = nic_model_params(m, &np);
  int64_t total = 0;
  for (int i = 0; i < np; i++) total += nic_tensor_numel(&ps[i]->value);
  printf("stored values:        %lld (incl. batch-norm statistics)\n", (long long)total);
  printf("inference only: %s\n", m->inference_only ? "yes (batch norms folded)" : "no");
  printf("metadata:%s\n", m->nmeta ? "" : " (none)");
  for (int i = 0; i < m->nmeta; i++) printf("  %s: %s\n", m->meta[i].key, m->meta[i].value);
  nic_model_free(m);
  return 0;
}

/* ---- dispatch ------------------------------------------------------------------ */

int cmd_encoder(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *sub = argv[1];
  if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help")) {
    usage(stdout);
    return 0;
  }
  optind = 1; /* the subcommand parses argv[1..] with its name as argv[0] */
  if (!strcmp(sub, "import")) return cmd_import(argc - 1, argv + 1);
  if (!strcmp(sub, "embed")) return cmd_embed(argc - 1, argv + 1);
  if (!strcmp(sub, "info")) return cmd_info(argc - 1, argv + 1);
  fprintf(stderr, "nic encoder: unknown subcommand '%s'\n\n", sub);
  usage(stderr);
  return 2;
}
