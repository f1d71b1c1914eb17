/* nic encoder: import the published Keras encoders, embed image patches,
 * describe model files.
 *
 *   nic encoder import IN.h5 -o OUT.safetensors
 *   nic encoder embed --model M [--batch N] [--threads N] [--resize] IMAGE...
 *   nic encoder info M
 *   nic encoder convert IN -o OUT [--dtype f16|bf16|f32]
 *   nic encoder average IN... -o OUT [--live]
 *   nic encoder train --task NAME=DATASET[,key=value...] ... -o OUT.safetensors
 *   nic encoder probe --model M --train DATASET --test DATASET
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "nic/encoder.h"
#include "nic/encoder_train.h"
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
             "  convert  rewrite a model file with its weights stored as float16 (or\n"
             "           bfloat16, float32): half the size\n"
             "  average  the mean of the weights of several encoders or training\n"
             "           checkpoints (model soup, SWA)\n"
             "  train    train an encoder on labelled patch datasets (multitask), or\n"
             "           unsupervised (contrastive, autoencoder)\n"
             "  probe    linear-probe accuracy of an encoder's embeddings on a dataset\n"
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

/* ---- convert ------------------------------------------------------------------- */

static void convert_usage(FILE *f) {
  fprintf(f, "usage: nic encoder convert IN -o OUT [--dtype f16|bf16|f32]\n"
             "\n"
             "Rewrites the model file IN with its float parameters stored in another\n"
             "dtype; architecture, input description and metadata are kept. Every nic\n"
             "command reads all three dtypes (converted to float32 on load), and so does\n"
             "PyTorch's safetensors.\n"
             "\n"
             "f16 and bf16 store the conv and dense weights and biases and the batch-norm\n"
             "gamma and beta in 2 bytes instead of 4; the batch-norm running statistics\n"
             "stay float32 (a few KB), as does any tensor with a value the dtype cannot\n"
             "hold (beyond +-65504 for f16). f16 keeps ~3 significant digits and is the\n"
             "better choice for trained weights; bf16 keeps float32's range with ~2\n"
             "digits. Embeddings of an f16 copy differ from the float32 model's by ~1e-3\n"
             "of their scale (docs/model-format.md). f32 converts back (exactly what was\n"
             "stored, not the original values).\n"
             "\n"
             "options:\n"
             "  -o, --output FILE   the model file to write (required); written\n"
             "                      atomically, and may be IN itself\n"
             "  -d, --dtype D       f16 (default), bf16 or f32\n"
             "  -h, --help          this text\n");
}

static double file_mb(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (double)st.st_size / 1e6 : 0;
}

static int cmd_convert(int argc, char **argv) {
  static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                       {"dtype", required_argument, NULL, 'd'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *out = NULL, *dt = "f16";
  int c;
  while ((c = getopt_long(argc, argv, "o:d:h", opts, NULL)) != -1) {
    switch (c) {
    case 'o':
      out = optarg;
      break;
    case 'd':
      dt = optarg;
      break;
    case 'h':
      convert_usage(stdout);
      return 0;
    default:
      return cli_usage("encoder convert", "unknown option");
    }
  }
  if (optind != argc - 1)
    return cli_usage("encoder convert", "expected one input model file, got %d", argc - optind);
  if (!out) return cli_usage("encoder convert", "missing -o OUT.safetensors");
  nic_save_opts so = {NIC_STORE_F32, NULL, 0};
  if (!strcmp(dt, "f16"))
    so.dtype = NIC_STORE_F16;
  else if (!strcmp(dt, "bf16"))
    so.dtype = NIC_STORE_BF16;
  else if (strcmp(dt, "f32"))
    return cli_usage("encoder convert", "--dtype must be f16, bf16 or f32, got '%s'", dt);
  const char *in = argv[optind];
  double in_mb = file_mb(in);
  nic_error err = {0};
  nic_model *m = NULL;
  if (nic_model_load(&m, in, &err) != NIC_OK) return cli_fail(&err);
  int np, half = 0;
  nic_param **ps = nic_model_params(m, &np);
  for (int i = 0; i < np; i++) half += nic_model_param_storage(m, ps[i], so.dtype) != NIC_STORE_F32;
  nic_status s = nic_model_save_opts(m, out, &so, &err);
  nic_model_free(m);
  if (s != NIC_OK) return cli_fail(&err);
  if (so.dtype == NIC_STORE_F32)
    printf("wrote %s: all %d tensors as F32; %.2f MB (%s: %.2f MB)\n", out, np, file_mb(out), in,
           in_mb);
  else
    printf("wrote %s: %d of %d tensors as %s, the rest F32; %.2f MB (%s: %.2f MB)\n", out, half, np,
           so.dtype == NIC_STORE_F16 ? "F16" : "BF16", file_mb(out), in, in_mb);
  return 0;
}

/* ---- average ------------------------------------------------------------------- */

static void average_usage(FILE *f) {
  fprintf(f, "usage: nic encoder average IN... -o OUT [--live]\n"
             "\n"
             "Writes the uniform mean of the weights of the model files IN (encoders, or\n"
             "the training checkpoints `nic encoder train` writes beside them): every\n"
             "stored value, batch-norm statistics included. Runs fine-tuned from one\n"
             "starting point (e.g. with --init, other seeds or settings) average into a\n"
             "network that usually generalises better than each (a \"model soup\"); the\n"
             "checkpoints of one run average into its SWA weights. All inputs must have\n"
             "the same parameters (names and shapes). A checkpoint trained with --ema\n"
             "contributes its moving average, the weights its run validated and wrote.\n"
             "\n"
             "The first input's architecture and metadata are kept, with averaged_from\n"
             "added (each input's path, sha256 and which weights were taken); optimizer\n"
             "state is not. Averaged checkpoints give a file with the trunk and the task\n"
             "heads: pass it to `nic encoder train --init` (e.g. one epoch with --lr 0\n"
             "recomputes the batch-norm statistics and validates it, and writes the\n"
             "encoder with its card).\n"
             "\n"
             "options:\n"
             "  -o, --output FILE   the model file to write (required; atomically)\n"
             "      --live          take a checkpoint's live weights, not its moving average\n"
             "  -h, --help          this text\n");
}

static int cmd_average(int argc, char **argv) {
  static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                       {"live", no_argument, NULL, 'l'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *out = NULL;
  int live = 0, c;
  while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
    switch (c) {
    case 'o':
      out = optarg;
      break;
    case 'l':
      live = 1;
      break;
    case 'h':
      average_usage(stdout);
      return 0;
    default:
      return cli_usage("encoder average", "unknown option");
    }
  }
  int n = argc - optind;
  if (n < 1) return cli_usage("encoder average", "expected one or more input model files");
  if (!out) return cli_usage("encoder average", "missing -o OUT.safetensors");
  nic_error err = {0};
  int ema = 0;
  if (nic_enc_average((const char *const *)(argv + optind), n, live, out, &ema, &err) != NIC_OK)
    return cli_fail(&err);
  printf("wrote %s: the mean of %d model file%s (%d contributed a moving average)\n", out, n,
         n == 1 ? "" : "s", ema);
  return 0;
}

/* train and probe: see the end of this file */
static int cmd_train(int argc, char **argv);
static int cmd_probe(int argc, char **argv);

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
  if (!strcmp(sub, "convert")) return cmd_convert(argc - 1, argv + 1);
  if (!strcmp(sub, "average")) return cmd_average(argc - 1, argv + 1);
  if (!strcmp(sub, "train")) return cmd_train(argc - 1, argv + 1);
  if (!strcmp(sub, "probe")) return cmd_probe(argc - 1, argv + 1);
  fprintf(stderr, "nic encoder: unknown subcommand '%s'\n\n", sub);
  usage(stderr);
  return 2;
}

/* ---- train ------------------------------------------------------------------------ */

static void train_usage(FILE *f) {
  fprintf(f, "usage: nic encoder train --task NAME=DATASET[,key=value...] [--task ...]\n"
             "                         -o OUT.safetensors [options]\n"
             "\n"
             "Trains a patch encoder on one or more labelled patch datasets at once (multitask:\n"
             "a shared encoder with one head per task, as the MTL-NIC encoder), or without\n"
             "labels (--unsupervised). Writes OUT (the encoder with the best validation result),\n"
             "OUT's model card (.card.json, also in OUT's metadata) and a checkpoint\n"
             "(OUT.ckpt.safetensors) after every epoch. See docs/encoder-training.md.\n"
             "\n"
             "tasks (repeat --task; DATASET is anything 'nic' reads: a folder per class, split\n"
             "folders, a CSV path,label[,split], PatchCamelyon *_x.h5, MNIST idx files):\n"
             "  --task NAME=DATASET[,kind=class|regression|auto][,weight=W][,mpp=UM_PER_PX]\n"
             "         [,valid=FRACTION][,holdout=FRACTION][,max-train=N][,max-valid=N]\n"
             "         [,balanced=0|1]\n"
             "      kind      default auto: from the labels (CSV numbers with a fraction:\n"
             "                regression; anything else: classes)\n"
             "      weight    the task's loss weight (1)\n"
             "      mpp       the items' spacing when the dataset does not declare it\n"
             "                (PatchCamelyon folders: 0.972); items are resampled to the\n"
             "                encoder's 128 px at 0.5 um/px\n"
             "      valid     share of items without a split that validate, stratified (0.1)\n"
             "      holdout   validate on this share of the training items instead of the\n"
             "                dataset's valid split (keeps that split unseen, e.g. for probing)\n"
             "      max-train, max-valid   seeded random subsets (0 = all)\n"
             "      balanced  class-balanced sampling for this task (default: --balanced)\n"
             "\n"
             "model:\n"
             "  -o, --output FILE        the encoder to write (required)\n"
             "      --arch NAME          nic (default; the published NIC/MTL-NIC encoder's\n"
             "                           architecture and input) or resnet-small\n"
             "      --embed-dim N        embedding size (128)\n"
             "      --head-hidden N      a hidden ReLU layer of N units in each task head\n"
             "                           (0 = linear heads, default)\n"
             "      --bn-momentum M      batch-norm running-average momentum, Keras sense (0.9)\n"
             "      --unsupervised KIND  contrastive (SimCLR NT-Xent on two augmented views)\n"
             "                           or autoencoder (dense decoder to a 32x32 thumbnail);\n"
             "                           the tasks' labels are then ignored\n"
             "      --temperature T      contrastive temperature (0.2)\n"
             "      --proj-dim N         contrastive projection size (64)\n"
             "      --name NAME          encoder_name in the metadata (default: file name)\n"
             "\n"
             "training:\n"
             "      --epochs N           at most N epochs (10)\n"
             "      --steps-per-epoch N  optimizer steps per epoch (default: one pass over the\n"
             "                           training items)\n"
             "      --batch N            patches per step (64; contrastive: images, 2 views each)\n"
             "      --sampling MODE      how batches mix tasks: proportional (to their training\n"
             "                           items; default), uniform (equal shares) or round-robin\n"
             "                           (each batch from one task in turn)\n"
             "      --balanced           class-balanced sampling within each task\n"
             "      --optimizer NAME     adamw (default), adam or sgd\n"
             "      --lr X               learning rate (1e-3)\n"
             "      --weight-decay X     (1e-4; decoupled for adamw)\n"
             "      --momentum X         sgd momentum (0.9)\n"
             "      --clip-norm X        clip the global gradient norm (0 = off)\n"
             "      --schedule NAME      cosine (default), constant, step (x0.1 every third of\n"
             "                           the epochs) or plateau (x0.5 after 2 epochs without a\n"
             "                           better monitor)\n"
             "      --warmup N           cosine: linear warm-up epochs (0)\n"
             "      --min-lr X           cosine/plateau floor (0)\n"
             "      --patience N         stop after N epochs without a better monitor (0 = never)\n"
             "      --monitor WHAT       loss (weighted validation loss; default) or\n"
             "                           TASK.METRIC with METRIC accuracy, balanced_accuracy,\n"
             "                           auc, mae, loss or top1 (contrastive)\n"
             "      --ema DECAY          validate and write an exponential moving average of\n"
             "                           the weights (decay per step, e.g. 0.999; 0 = off)\n"
             "      --init MODEL         start from this encoder (or a training checkpoint,\n"
             "                           whose heads are taken for tasks of the same name)\n"
             "                           instead of random weights; same --arch\n"
             "      --resume             continue from OUT.ckpt.safetensors (same tasks,\n"
             "                           architecture and optimizer; weights, optimizer state\n"
             "                           and seed are taken from the checkpoint)\n"
             "      --seed N             initialisation, order, augmentation (1)\n"
             "      --threads N          compute threads (0 = all cores)\n"
             "      --loader-threads N   decoding threads per task (1)\n"
             "      --progress MODE      auto (bar on a terminal), bar, plain or none\n"
             "\n"
             "augmentation (training only; each off at 0):\n"
             "      --augment PRESET     default, none or strong (the contrastive default)\n"
             "      --aug-dihedral 0|1   random flips and 90-degree rotations (1)\n"
             "      --aug-zoom Z         scale jitter, zoom in [1/(1+Z), 1+Z] (0.1)\n"
             "      --aug-hed X          HED stain jitter: scale and shift both X (0.05)\n"
             "      --aug-hed-scale X, --aug-hed-shift X   the two separately\n"
             "      --aug-brightness X, --aug-contrast X, --aug-saturation X   (0.1 each)\n"
             "      --aug-hue X          hue shift in turns (0.03)\n"
             "      --aug-blur P         probability of a Gaussian blur (0.2)\n"
             "      --aug-blur-sigma LO:HI  its sigma range in pixels (0.1:1)\n"
             "      --aug-noise X        Gaussian noise sigma up to X grey levels (3)\n"
             "  -h, --help               this text\n");
}

/* The strong preset: colour and scale jitter for contrastive views. */
static nic_augment augment_strong(void) {
  nic_augment a = nic_augment_default();
  a.zoom = 0.3f;
  a.hed_scale = a.hed_shift = 0.1f;
  a.brightness = a.contrast = a.saturation = 0.3f;
  a.hue = 0.08f;
  a.blur_prob = 0.5f;
  a.blur_min = 0.1f;
  a.blur_max = 2.0f;
  a.noise = 5.0f;
  return a;
}

/* "nic encoder train ..." for the model card; arguments with spaces quoted. */
static char *join_command(int argc, char **argv) {
  size_t n = 32;
  for (int i = 0; i < argc; i++) n += strlen(argv[i]) + 3;
  char *s = malloc(n);
  if (!s) return NULL;
  size_t len = (size_t)snprintf(s, n, "nic encoder");
  for (int i = 0; i < argc; i++)
    len +=
        (size_t)snprintf(s + len, n - len, strpbrk(argv[i], " \t'\"") ? " '%s'" : " %s", argv[i]);
  return s;
}

typedef struct train_ui {
  cli_progress bar;
  int epochs;
  int patches_per_step;
  double run_seconds; /* training seconds of the epochs seen */
  int epochs_seen;
} train_ui;

static void train_log(void *user, const char *line) {
  train_ui *ui = user;
  cli_progress_clear(&ui->bar);
  printf("%s\n", line);
  fflush(stdout);
}

static void train_progress(void *user, const nic_enc_progress *p) {
  train_ui *ui = user;
  if (!p->end) {
    if (p->step == 1) {
      char label[64];
      snprintf(label, sizeof label, "epoch %d/%d", p->epoch + 1, p->epochs);
      cli_progress_start(&ui->bar, label, p->steps * ui->patches_per_step, "patches");
    }
    cli_progress_update(&ui->bar, p->samples);
    return;
  }
  cli_progress_end(&ui->bar);
  ui->run_seconds += p->seconds;
  ui->epochs_seen++;
  char eta[48] = "";
  int left = p->stopping ? 0 : p->epochs - p->epoch - 1;
  if (left > 0) {
    char d[24];
    cli_format_duration(left * ui->run_seconds / ui->epochs_seen, d, sizeof d);
    snprintf(eta, sizeof eta, ", run ETA %s", d);
  }
  char mon[48] = "";
  if (!isnan(p->monitor))
    snprintf(mon, sizeof mon, " | monitor %.4f%s", p->monitor, p->improved ? " (best)" : "");
  printf("epoch %d/%d: train loss %.4f, %.0f s, %.1f patches/s%s | %s%s\n", p->epoch + 1, p->epochs,
         p->loss, p->seconds, p->seconds > 0 ? (double)p->samples / p->seconds : 0.0, eta,
         p->summary, mon);
  if (p->stopping) printf("early stopping: no better monitor for the last epochs\n");
  fflush(stdout);
}

static int parse_choice(const char *flag, const char *v, const char *const *names, int n) {
  for (int i = 0; i < n; i++)
    if (!strcmp(v, names[i])) return i;
  cli_usage("encoder train", "%s: unknown value '%s'", flag, v);
  return -1;
}

/* Parses "LO:HI". */
static int parse_range(const char *v, float *lo, float *hi) {
  char *end = NULL;
  double a = strtod(v, &end);
  if (end == v || *end != ':') return -1;
  const char *b = end + 1;
  double c = strtod(b, &end);
  if (end == b || *end || a < 0 || c < a) return -1;
  *lo = (float)a;
  *hi = (float)c;
  return 0;
}

enum {
  T_ARCH = 1000,
  T_EMBED,
  T_HEAD,
  T_BNMOM,
  T_UNSUP,
  T_TEMP,
  T_PROJ,
  T_NAME,
  T_EPOCHS,
  T_STEPS,
  T_BATCH,
  T_SAMPLING,
  T_BALANCED,
  T_OPTIM,
  T_LR,
  T_WD,
  T_MOM,
  T_CLIP,
  T_SCHED,
  T_WARMUP,
  T_MINLR,
  T_PATIENCE,
  T_MONITOR,
  T_RESUME,
  T_EMA,
  T_INIT,
  T_SEED,
  T_THREADS,
  T_LTHREADS,
  T_PROGRESS,
  T_AUG,
  T_DIHEDRAL,
  T_ZOOM,
  T_HED,
  T_HEDSC,
  T_HEDSH,
  T_BRIGHT,
  T_CONTRAST,
  T_SAT,
  T_HUE,
  T_BLUR,
  T_BLURSIG,
  T_NOISE
};

/* Augmentation flags apply on top of the preset, in any order. */
typedef struct aug_flag {
  int code;
  float value;
} aug_flag;

static int apply_aug_flag(nic_augment *a, const aug_flag *f) {
  float v = f->value;
  switch (f->code) {
  case T_DIHEDRAL:
    a->dihedral = v != 0;
    break;
  case T_ZOOM:
    a->zoom = v;
    break;
  case T_HED:
    a->hed_scale = a->hed_shift = v;
    break;
  case T_HEDSC:
    a->hed_scale = v;
    break;
  case T_HEDSH:
    a->hed_shift = v;
    break;
  case T_BRIGHT:
    a->brightness = v;
    break;
  case T_CONTRAST:
    a->contrast = v;
    break;
  case T_SAT:
    a->saturation = v;
    break;
  case T_HUE:
    a->hue = v;
    break;
  case T_BLUR:
    a->blur_prob = v;
    break;
  case T_NOISE:
    a->noise = v;
    break;
  default:
    return -1;
  }
  return 0;
}

static int cmd_train(int argc, char **argv) {
  static const struct option opts[] = {{"task", required_argument, NULL, 'T'},
                                       {"output", required_argument, NULL, 'o'},
                                       {"arch", required_argument, NULL, T_ARCH},
                                       {"embed-dim", required_argument, NULL, T_EMBED},
                                       {"head-hidden", required_argument, NULL, T_HEAD},
                                       {"bn-momentum", required_argument, NULL, T_BNMOM},
                                       {"unsupervised", required_argument, NULL, T_UNSUP},
                                       {"temperature", required_argument, NULL, T_TEMP},
                                       {"proj-dim", required_argument, NULL, T_PROJ},
                                       {"name", required_argument, NULL, T_NAME},
                                       {"epochs", required_argument, NULL, T_EPOCHS},
                                       {"steps-per-epoch", required_argument, NULL, T_STEPS},
                                       {"batch", required_argument, NULL, T_BATCH},
                                       {"sampling", required_argument, NULL, T_SAMPLING},
                                       {"balanced", no_argument, NULL, T_BALANCED},
                                       {"optimizer", required_argument, NULL, T_OPTIM},
                                       {"lr", required_argument, NULL, T_LR},
                                       {"weight-decay", required_argument, NULL, T_WD},
                                       {"momentum", required_argument, NULL, T_MOM},
                                       {"clip-norm", required_argument, NULL, T_CLIP},
                                       {"schedule", required_argument, NULL, T_SCHED},
                                       {"warmup", required_argument, NULL, T_WARMUP},
                                       {"min-lr", required_argument, NULL, T_MINLR},
                                       {"patience", required_argument, NULL, T_PATIENCE},
                                       {"monitor", required_argument, NULL, T_MONITOR},
                                       {"resume", no_argument, NULL, T_RESUME},
                                       {"ema", required_argument, NULL, T_EMA},
                                       {"init", required_argument, NULL, T_INIT},
                                       {"seed", required_argument, NULL, T_SEED},
                                       {"threads", required_argument, NULL, T_THREADS},
                                       {"loader-threads", required_argument, NULL, T_LTHREADS},
                                       {"progress", required_argument, NULL, T_PROGRESS},
                                       {"augment", required_argument, NULL, T_AUG},
                                       {"aug-dihedral", required_argument, NULL, T_DIHEDRAL},
                                       {"aug-zoom", required_argument, NULL, T_ZOOM},
                                       {"aug-hed", required_argument, NULL, T_HED},
                                       {"aug-hed-scale", required_argument, NULL, T_HEDSC},
                                       {"aug-hed-shift", required_argument, NULL, T_HEDSH},
                                       {"aug-brightness", required_argument, NULL, T_BRIGHT},
                                       {"aug-contrast", required_argument, NULL, T_CONTRAST},
                                       {"aug-saturation", required_argument, NULL, T_SAT},
                                       {"aug-hue", required_argument, NULL, T_HUE},
                                       {"aug-blur", required_argument, NULL, T_BLUR},
                                       {"aug-blur-sigma", required_argument, NULL, T_BLURSIG},
                                       {"aug-noise", required_argument, NULL, T_NOISE},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  static const char *const objectives[] = {"supervised", "contrastive", "autoencoder"};
  static const char *const samplings[] = {"proportional", "uniform", "round-robin"};
  static const char *const optims[] = {"sgd", "adam", "adamw"};
  static const char *const scheds[] = {"constant", "step", "cosine", "plateau"};
  static const char *const progs[] = {"auto", "bar", "plain", "none"};
  static const char *const presets[] = {"default", "none", "strong"};
  const char *cmd = "encoder train";
  nic_enc_train_opts o = nic_enc_train_default_opts();
  nic_enc_task *tasks = NULL;
  aug_flag augf[64];
  int ntasks = 0, naug = 0, threads = 0, preset = -1, progress = CLI_PROGRESS_AUTO, c, v, rc = 2;
  int lr_set = 0, mom_set = 0;
  double d;
  float blur_lo = -1, blur_hi = -1;
  nic_error err = {0};
  char *cmdline = join_command(argc, argv);
  while ((c = getopt_long(argc, argv, "T:o:h", opts, NULL)) != -1) {
    switch (c) {
    case 'T': {
      nic_enc_task *nt = realloc(tasks, sizeof *tasks * (size_t)(ntasks + 1));
      if (!nt) goto oom;
      tasks = nt;
      if (nic_enc_task_parse(optarg, &tasks[ntasks], &err) != NIC_OK) {
        cli_usage(cmd, "--task: %s", err.msg);
        goto done;
      }
      ntasks++;
      break;
    }
    case 'o':
      o.output = optarg;
      break;
    case T_ARCH:
      o.arch = optarg;
      break;
    case T_EMBED:
      if (cli_parse_int(cmd, "--embed-dim", optarg, 1, &o.embed_dim)) goto done;
      break;
    case T_HEAD:
      if (cli_parse_int(cmd, "--head-hidden", optarg, 0, &o.head_hidden)) goto done;
      break;
    case T_BNMOM:
      if (cli_parse_double(cmd, "--bn-momentum", optarg, &d)) goto done;
      o.bn_momentum = (float)d;
      break;
    case T_UNSUP:
      if ((v = parse_choice("--unsupervised", optarg, objectives, 3)) < 1) {
        if (v == 0) cli_usage(cmd, "--unsupervised takes contrastive or autoencoder");
        goto done;
      }
      o.objective = (nic_enc_objective)v;
      break;
    case T_TEMP:
      if (cli_parse_double(cmd, "--temperature", optarg, &d)) goto done;
      o.temperature = (float)d;
      break;
    case T_PROJ:
      if (cli_parse_int(cmd, "--proj-dim", optarg, 1, &o.proj_dim)) goto done;
      break;
    case T_NAME:
      o.name = optarg;
      break;
    case T_EPOCHS:
      if (cli_parse_int(cmd, "--epochs", optarg, 1, &o.epochs)) goto done;
      break;
    case T_STEPS:
      if (cli_parse_int(cmd, "--steps-per-epoch", optarg, 1, &v)) goto done;
      o.steps_per_epoch = v;
      break;
    case T_BATCH:
      if (cli_parse_int(cmd, "--batch", optarg, 2, &o.batch)) goto done;
      break;
    case T_SAMPLING:
      if ((v = parse_choice("--sampling", optarg, samplings, 3)) < 0) goto done;
      o.mix = (nic_enc_mix)v;
      break;
    case T_BALANCED:
      o.balanced = 1;
      break;
    case T_OPTIM:
      if ((v = parse_choice("--optimizer", optarg, optims, 3)) < 0) goto done;
      o.opt.kind = (nic_opt_kind)v;
      break;
    case T_LR:
      if (cli_parse_double(cmd, "--lr", optarg, &d)) goto done;
      o.opt.lr = (float)d;
      lr_set = 1;
      break;
    case T_WD:
      if (cli_parse_double(cmd, "--weight-decay", optarg, &d)) goto done;
      o.opt.weight_decay = (float)d;
      break;
    case T_MOM:
      if (cli_parse_double(cmd, "--momentum", optarg, &d)) goto done;
      o.opt.momentum = (float)d;
      mom_set = 1;
      break;
    case T_CLIP:
      if (cli_parse_double(cmd, "--clip-norm", optarg, &d)) goto done;
      o.opt.clip_norm = (float)d;
      break;
    case T_SCHED:
      if ((v = parse_choice("--schedule", optarg, scheds, 4)) < 0) goto done;
      o.schedule = (nic_sched_kind)v;
      break;
    case T_WARMUP:
      if (cli_parse_int(cmd, "--warmup", optarg, 0, &o.warmup)) goto done;
      break;
    case T_MINLR:
      if (cli_parse_double(cmd, "--min-lr", optarg, &d)) goto done;
      o.min_lr = (float)d;
      break;
    case T_PATIENCE:
      if (cli_parse_int(cmd, "--patience", optarg, 0, &o.patience)) goto done;
      break;
    case T_MONITOR:
      o.monitor = optarg;
      break;
    case T_EMA:
      if (cli_parse_double(cmd, "--ema", optarg, &d)) goto done;
      o.ema = (float)d;
      break;
    case T_INIT:
      o.init = optarg;
      break;
    case T_RESUME:
      o.resume = 1;
      break;
    case T_SEED:
      if (cli_parse_int(cmd, "--seed", optarg, 0, &v)) goto done;
      o.seed = (uint64_t)v;
      break;
    case T_THREADS:
      if (cli_parse_int(cmd, "--threads", optarg, 0, &threads)) goto done;
      break;
    case T_LTHREADS:
      if (cli_parse_int(cmd, "--loader-threads", optarg, 0, &o.loader_threads)) goto done;
      break;
    case T_PROGRESS:
      if ((progress = parse_choice("--progress", optarg, progs, 4)) < 0) goto done;
      break;
    case T_AUG:
      if ((preset = parse_choice("--augment", optarg, presets, 3)) < 0) goto done;
      break;
    case T_BLURSIG:
      if (parse_range(optarg, &blur_lo, &blur_hi)) {
        cli_usage(cmd, "--aug-blur-sigma expects LO:HI with 0 <= LO <= HI, got '%s'", optarg);
        goto done;
      }
      break;
    case 'h':
      train_usage(stdout);
      rc = 0;
      goto done;
    default:
      if (c >= T_DIHEDRAL && c <= T_NOISE && naug < 64) {
        const char *fl = "";
        for (int i = 0; opts[i].name; i++)
          if (opts[i].val == c) fl = opts[i].name;
        if (cli_parse_double(cmd, fl, optarg, &d)) goto done;
        if (d < 0 || (c == T_BLUR && d > 1)) {
          cli_usage(cmd, "--%s must be >= 0%s, got '%s'", fl, c == T_BLUR ? " and <= 1" : "",
                    optarg);
          goto done;
        }
        augf[naug++] = (aug_flag){c, (float)d};
        break;
      }
      cli_usage(cmd, "unknown option");
      goto done;
    }
  }
  if (optind != argc) {
    cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    goto done;
  }
  if (!o.output) {
    cli_usage(cmd, "missing -o OUT.safetensors");
    goto done;
  }
  if (ntasks == 0) {
    cli_usage(cmd, "no --task given");
    goto done;
  }
  if (preset < 0) preset = o.objective == NIC_ENC_CONTRASTIVE ? 2 : 0;
  o.augment = preset == 1   ? nic_augment_none()
              : preset == 2 ? augment_strong()
                            : nic_augment_default();
  for (int i = 0; i < naug; i++) apply_aug_flag(&o.augment, &augf[i]);
  if (blur_lo >= 0) {
    o.augment.blur_min = blur_lo;
    o.augment.blur_max = blur_hi;
  }
  if (o.opt.kind == NIC_OPT_SGD && !mom_set) o.opt.momentum = 0.9f;
  if (o.opt.kind != NIC_OPT_SGD && mom_set) {
    cli_usage(cmd, "--momentum applies to --optimizer sgd only");
    goto done;
  }
  if (o.opt.kind == NIC_OPT_SGD && !lr_set) o.opt.lr = 0.01f;
  o.command_line = cmdline;
  train_ui ui;
  memset(&ui, 0, sizeof ui);
  cli_progress_init(&ui.bar, stderr, (cli_progress_mode)progress);
  ui.patches_per_step = o.objective == NIC_ENC_CONTRASTIVE ? 2 * o.batch : o.batch;
  o.progress = train_progress;
  o.log = train_log;
  o.user = &ui;
  nic_ctx *ctx = cli_make_ctx(threads, o.seed);
  if (!ctx) {
    rc = 1;
    goto done;
  }
  nic_status s = nic_encoder_train(ctx, tasks, ntasks, &o, &err);
  cli_progress_end(&ui.bar);
  nic_ctx_free(ctx);
  if (s != NIC_OK) {
    rc = cli_fail(&err);
    goto done;
  }
  char card[4200];
  nic_enc_card_path(o.output, card, sizeof card);
  printf("wrote %s and %s\n", o.output, card);
  rc = 0;
  goto done;
oom:
  fprintf(stderr, "nic: out of memory\n");
  rc = 1;
done:
  free(tasks);
  free(cmdline);
  return rc;
}

/* ---- probe ------------------------------------------------------------------------ */

static void probe_usage(FILE *f) {
  fprintf(f, "usage: nic encoder probe --model M --train DATASET --test DATASET [options]\n"
             "\n"
             "Linear probe of a frozen encoder: embeds the training and test items (eval mode,\n"
             "batch norms folded), fits an L2-regularised multinomial logistic regression on\n"
             "the standardised training embeddings (C chosen by stratified cross-validation\n"
             "over 1e-4..10 unless --C is given) and evaluates it on the test items. Prints\n"
             "per-class statistics, then as the last line\n"
             "  accuracy=A balanced_accuracy=B auc=C\n"
             "(auc: binary, or the macro one-vs-rest mean for more classes).\n"
             "\n"
             "options:\n"
             "  -m, --model FILE       the encoder (required)\n"
             "      --train DATASET    the probe's training items (required)\n"
             "      --test DATASET     its test items (required; may be the same dataset\n"
             "                         with another split)\n"
             "      --train-split S    train, valid, test or any (default: train when the\n"
             "                         dataset has it, else any)\n"
             "      --test-split S     (default: test, else valid, else any)\n"
             "      --mpp X            spacing of both datasets' items in um/px when they do\n"
             "                         not declare it (PatchCamelyon folders: 0.972); items\n"
             "                         are resampled to the encoder's spacing (0.5 um/px)\n"
             "      --train-mpp X, --test-mpp X   the same for one dataset\n"
             "      --max-train N      a seeded random subset of the training items (0 = all)\n"
             "      --max-test N       the same for the test items\n"
             "      --C X              inverse L2 strength (scikit-learn's C); default: chosen\n"
             "      --folds K          cross-validation folds (3)\n"
             "      --batch N          patches per forward pass (128)\n"
             "      --threads N        compute threads (0 = all cores)\n"
             "      --loader-threads N decoding threads (2)\n"
             "      --seed N           subsets and folds (1)\n"
             "      --progress MODE    auto, bar, plain or none\n"
             "  -h, --help             this text\n");
}

static int parse_split(const char *v) {
  if (!strcmp(v, "train")) return NIC_SPLIT_TRAIN;
  if (!strcmp(v, "valid") || !strcmp(v, "val") || !strcmp(v, "validation")) return NIC_SPLIT_VALID;
  if (!strcmp(v, "test")) return NIC_SPLIT_TEST;
  if (!strcmp(v, "any") || !strcmp(v, "all")) return NIC_SPLIT_ANY;
  if (!strcmp(v, "auto")) return NIC_PROBE_SPLIT_AUTO;
  return -3;
}

static const char *split_text(int s) {
  return s == NIC_SPLIT_TRAIN   ? "train"
         : s == NIC_SPLIT_VALID ? "valid"
         : s == NIC_SPLIT_TEST  ? "test"
                                : "any";
}

static void mpp_text(double mpp, char *buf, size_t n) {
  if (mpp > 0)
    snprintf(buf, n, "%g um/px", mpp);
  else
    snprintf(buf, n, "spacing unknown");
}

typedef struct probe_ui {
  cli_progress bar;
  int64_t last_total;
  int phase;
} probe_ui;

static void probe_progress(void *user, int64_t done, int64_t total) {
  probe_ui *ui = user;
  if (done <= 0 || ui->bar.total != total || ui->bar.done > done) {
    ui->phase++;
    cli_progress_start(&ui->bar, ui->phase == 1 ? "embedding train" : "embedding test", total,
                       "patches");
  }
  cli_progress_update(&ui->bar, done);
}

static int open_probe_dataset(const char *path, double mpp, nic_dataset **ds) {
  nic_error err = {0};
  nic_dataset_opts o = nic_dataset_default_opts();
  if (mpp > 0) o.mpp = mpp;
  o.labels = NIC_LABEL_CLASS;
  if (nic_dataset_open(ds, path, &o, &err) != NIC_OK) return cli_fail(&err);
  if (mpp > 0) nic_dataset_set_mpp(*ds, mpp);
  return 0;
}

static int cmd_probe(int argc, char **argv) {
  enum {
    P_TRAIN = 1000,
    P_TEST,
    P_TRSPLIT,
    P_TESPLIT,
    P_MPP,
    P_TRMPP,
    P_TEMPP,
    P_MAXTR,
    P_MAXTE,
    P_C,
    P_FOLDS,
    P_BATCH,
    P_THREADS,
    P_LTHREADS,
    P_SEED,
    P_PROGRESS
  };
  static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                       {"train", required_argument, NULL, P_TRAIN},
                                       {"test", required_argument, NULL, P_TEST},
                                       {"train-split", required_argument, NULL, P_TRSPLIT},
                                       {"test-split", required_argument, NULL, P_TESPLIT},
                                       {"mpp", required_argument, NULL, P_MPP},
                                       {"train-mpp", required_argument, NULL, P_TRMPP},
                                       {"test-mpp", required_argument, NULL, P_TEMPP},
                                       {"max-train", required_argument, NULL, P_MAXTR},
                                       {"max-test", required_argument, NULL, P_MAXTE},
                                       {"C", required_argument, NULL, P_C},
                                       {"folds", required_argument, NULL, P_FOLDS},
                                       {"batch", required_argument, NULL, P_BATCH},
                                       {"threads", required_argument, NULL, P_THREADS},
                                       {"loader-threads", required_argument, NULL, P_LTHREADS},
                                       {"seed", required_argument, NULL, P_SEED},
                                       {"progress", required_argument, NULL, P_PROGRESS},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  static const char *const progs[] = {"auto", "bar", "plain", "none"};
  const char *cmd = "encoder probe", *model = NULL, *trpath = NULL, *tepath = NULL;
  nic_probe_opts po = nic_probe_default_opts();
  double trmpp = 0, tempp = 0, d;
  int threads = 0, progress = CLI_PROGRESS_AUTO, c, v;
  while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
    switch (c) {
    case 'm':
      model = optarg;
      break;
    case P_TRAIN:
      trpath = optarg;
      break;
    case P_TEST:
      tepath = optarg;
      break;
    case P_TRSPLIT:
    case P_TESPLIT:
      if ((v = parse_split(optarg)) == -3)
        return cli_usage(cmd, "%s must be train, valid, test or any, got '%s'",
                         c == P_TRSPLIT ? "--train-split" : "--test-split", optarg);
      *(c == P_TRSPLIT ? &po.train_split : &po.test_split) = v;
      break;
    case P_MPP:
    case P_TRMPP:
    case P_TEMPP:
      if (cli_parse_double(cmd, "--mpp", optarg, &d)) return 2;
      if (!(d > 0)) return cli_usage(cmd, "spacing must be > 0 um/px, got '%s'", optarg);
      if (c != P_TEMPP) trmpp = d;
      if (c != P_TRMPP) tempp = d;
      break;
    case P_MAXTR:
    case P_MAXTE:
      if (cli_parse_int(cmd, c == P_MAXTR ? "--max-train" : "--max-test", optarg, 0, &v)) return 2;
      *(c == P_MAXTR ? &po.max_train : &po.max_test) = v;
      break;
    case P_C:
      if (cli_parse_double(cmd, "--C", optarg, &po.C)) return 2;
      if (!(po.C > 0)) return cli_usage(cmd, "--C must be > 0");
      break;
    case P_FOLDS:
      if (cli_parse_int(cmd, "--folds", optarg, 2, &po.folds)) return 2;
      break;
    case P_BATCH:
      if (cli_parse_int(cmd, "--batch", optarg, 1, &po.batch)) return 2;
      break;
    case P_THREADS:
      if (cli_parse_int(cmd, "--threads", optarg, 0, &threads)) return 2;
      break;
    case P_LTHREADS:
      if (cli_parse_int(cmd, "--loader-threads", optarg, 0, &po.threads)) return 2;
      break;
    case P_SEED:
      if (cli_parse_int(cmd, "--seed", optarg, 0, &v)) return 2;
      po.seed = (uint64_t)v;
      break;
    case P_PROGRESS:
      if ((progress = parse_choice("--progress", optarg, progs, 4)) < 0) return 2;
      break;
    case 'h':
      probe_usage(stdout);
      return 0;
    default:
      return cli_usage(cmd, "unknown option");
    }
  }
  if (optind != argc) return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
  if (!model) return cli_usage(cmd, "missing --model FILE");
  if (!trpath || !tepath) return cli_usage(cmd, "both --train and --test datasets are needed");

  nic_error err = {0};
  nic_model *m = NULL;
  nic_dataset *tr = NULL, *te = NULL;
  nic_ctx *ctx = NULL;
  int rc = 1;
  if (nic_model_load(&m, model, &err) != NIC_OK) {
    rc = cli_fail(&err);
    goto done;
  }
  if (nic_model_optimize_inference(m, &err) != NIC_OK) {
    rc = cli_fail(&err);
    goto done;
  }
  if (open_probe_dataset(trpath, trmpp, &tr) || open_probe_dataset(tepath, tempp, &te)) goto done;
  if (!(ctx = cli_make_ctx(threads, po.seed))) goto done;
  probe_ui ui;
  memset(&ui, 0, sizeof ui);
  cli_progress_init(&ui.bar, stderr, (cli_progress_mode)progress);
  po.progress = probe_progress;
  po.user = &ui;
  nic_probe_result res;
  nic_status s = nic_probe(ctx, m, tr, te, &po, &res, &err);
  cli_progress_end(&ui.bar);
  if (s != NIC_OK) {
    rc = cli_fail(&err);
    goto done;
  }
  const nic_input_info *in = nic_model_input_info(m);
  printf("model: %s (%d-d embedding, %d px at %g um/px)\n", model, res.dim, in->patch_size,
         in->mpp);
  char mtr[32], mte[32];
  mpp_text(nic_dataset_mpp(tr), mtr, sizeof mtr);
  mpp_text(nic_dataset_mpp(te), mte, sizeof mte);
  printf("train: %s [%s] %lld items, %s; test: %s [%s] %lld items, %s\n", trpath,
         split_text(res.train_split), (long long)res.n_train, mtr, tepath,
         split_text(res.test_split), (long long)res.n_test, mte);
  if (isnan(res.cv_accuracy))
    printf("C = %g (given)\n", res.C);
  else
    printf("C = %g (%d-fold cross-validated accuracy %.4f)\n", res.C, po.folds, res.cv_accuracy);
  printf("%-16s %8s %8s %8s %9s %8s\n", "class", "n_train", "n_test", "recall", "precision", "auc");
  for (int k = 0; k < res.k; k++) {
    const nic_probe_class *pc = &res.classes[k];
    printf("%-16s %8lld %8lld %8.4f %9.4f %8.4f\n", pc->name, (long long)pc->n_train,
           (long long)pc->n_test, pc->recall, pc->precision, pc->auc);
  }
  printf("accuracy=%.4f balanced_accuracy=%.4f auc=%.4f\n", res.accuracy, res.balanced_accuracy,
         res.auc);
  nic_probe_result_free(&res);
  rc = 0;
done:
  nic_dataset_free(tr);
  nic_dataset_free(te);
  nic_model_free(m); /* before the context: it holds the backend's layer state */
  nic_ctx_free(ctx);
  return rc;
}
