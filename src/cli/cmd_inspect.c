/* nic inspect: what a file is and what is in it. Each kind of file nic
 * knows has an entry in `kinds` below: a test that claims the file and a
 * printer. Slides come last and take everything the others do not claim:
 * models (.safetensors), compressed slides (HDF5), slides. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "nic/features.h"
#include "nic/slide.h"

typedef struct inspect_opts {
  int all; /* every property, values untruncated */
} inspect_opts;

typedef struct inspect_kind {
  const char *name;
  int (*claims)(const char *path);                       /* 1: this kind handles the file */
  int (*print)(const char *path, const inspect_opts *o); /* exit code */
} inspect_kind;

static void usage(FILE *f) {
  fprintf(f, "usage: nic inspect FILE [--all]\n\n"
             "Describes FILE. For a slide (anything OpenSlide reads, or a plain image): the\n"
             "reader and vendor, the levels with their sizes, downsamples and spacing, the\n"
             "level-0 spacing and where it comes from (or 'unknown'), the objective power and\n"
             "the properties. For a compressed slide (.h5 from 'nic compress'): the slide, the\n"
             "grid, the rows kept, the encoder and its checksum, the slide's properties. For\n"
             "a model (.safetensors): its input, output, parameters and checksum.\n\n"
             "options:\n"
             "  --all       list every property with its full value (default: the first 20,\n"
             "              values cut at 100 characters)\n"
             "  -h, --help  this text\n");
}

/* ---- which kind of file ------------------------------------------------ */

static int has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcasecmp(s + n - k, suffix);
}

/* HDF5 files start with this signature (at offset 0 for files nic writes). */
static int has_hdf5_signature(const char *path) {
  static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  unsigned char buf[8];
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  return n == sizeof buf && !memcmp(buf, sig, sizeof sig);
}

static int claims_model(const char *path) {
  return has_suffix(path, ".safetensors");
}
static int claims_compressed(const char *path) {
  return has_suffix(path, ".h5") || has_hdf5_signature(path);
}
static int claims_anything(const char *path) {
  return 1;
}

/* ---- models ------------------------------------------------------------------ */

/* A metadata value (JSON text) for display: strings without their quotes. */
static void print_meta(const char *label, const char *json) {
  size_t n = json ? strlen(json) : 0;
  if (n >= 2 && json[0] == '"' && json[n - 1] == '"' && !memchr(json + 1, '\\', n - 2))
    printf("%-11s %.*s\n", label, (int)(n - 2), json + 1);
  else
    printf("%-11s %s\n", label, json ? json : "-");
}

static int print_model(const char *path, const inspect_opts *o) {
  nic_model *m = NULL;
  nic_error err = {0};
  if (nic_model_load(&m, path, &err) != NIC_OK) return cli_fail(&err);
  const nic_input_info *in = nic_model_input_info(m);
  int n = nic_model_num_nodes(m), ndim;
  int64_t out[NIC_MAX_DIMS];
  nic_model_node_shape(m, n, &ndim, out);
  char sha[65] = "?";
  nic_features_sha256_file(path, sha, NULL);
  printf("file        %s\n", path);
  printf("format      nic model (safetensors)\n");
  print_meta("name", nic_model_get_meta(m, "encoder_name"));
  printf("input       %d x %d x %d", in->channels, in->height, in->width);
  if (in->patch_size > 0) printf(", patches of %d px", in->patch_size);
  if (in->mpp > 0)
    printf(" at %g um/px\n", in->mpp);
  else
    printf(" (spacing unknown)\n");
  printf("normalise   (pixel/255 - mean) / std, mean %g %g %g, std %g %g %g\n", (double)in->mean[0],
         (double)in->mean[1], (double)in->mean[2], (double)in->std[0], (double)in->std[1],
         (double)in->std[2]);
  printf("layers      %d\n", n);
  if (ndim == 2)
    printf("output      %lld values per patch\n", (long long)out[1]);
  else
    printf("output      %lld x %lld x %lld\n", (long long)out[1], (long long)out[2],
           (long long)out[3]);
  printf("parameters  %lld trainable\n", (long long)nic_model_num_trainable(m));
  printf("sha256      %s\n", sha);
  print_meta("source", nic_model_get_meta(m, "source"));
  printf("(nic encoder info %s lists the layers and all metadata)\n", path);
  nic_model_free(m);
  (void)o;
  return 0;
}

/* ---- compressed slides ---------------------------------------------------------- */

static const char *or_unknown(const char *s) {
  return s && *s ? s : "unknown";
}

static void print_value(const char *v, size_t max);

static void print_features_properties(const nic_features_reader *r, const inspect_opts *o) {
  int n = nic_features_property_count(r), limit = o->all ? n : (n < 20 ? n : 20);
  if (n == limit)
    printf("properties  %d\n", n);
  else
    printf("properties  %d (first %d; --all for all)\n", n, limit);
  for (int i = 0; i < limit; i++) {
    const char *name = nic_features_property_name(r, i);
    printf("  %s = ", name);
    print_value(nic_features_property_value(r, name), o->all ? 0 : 100);
  }
}

static int print_compressed(const char *path, const inspect_opts *o) {
  nic_features_reader *r = NULL;
  nic_error err = {0};
  if (nic_features_open(&r, path, &err) != NIC_OK) return cli_fail(&err);
  const nic_features_meta *m = nic_features_meta_of(r);
  int64_t cells = (int64_t)m->grid_h * m->grid_w;
  printf("file        %s\n", path);
  printf("format      compressed slide (nic %s)\n", or_unknown(m->nic_version));
  printf("slide       %s (%s)\n", or_unknown(m->slide_id), or_unknown(m->slide_path));
  if (m->slide_width > 0)
    printf("size        %lld x %lld px\n", (long long)m->slide_width, (long long)m->slide_height);
  if (m->slide_mpp_x > 0) printf("spacing     %.4g x %.4g um/px\n", m->slide_mpp_x, m->slide_mpp_y);
  if (m->level0_magnification > 0) printf("objective   %gx\n", m->level0_magnification);
  printf("grid        %d x %d cells (rows x columns) of %.4f level-0 px, origin (%g, %g)\n",
         m->grid_h, m->grid_w, m->stride_level0, m->origin_x, m->origin_y);
  printf("patches     %d px at %g um/px; kept when >= %g%% tissue\n", m->patch_size, m->mpp,
         100 * m->tissue_threshold);
  printf("rows        %lld (%.1f%% of the cells)\n", (long long)m->count,
         cells ? 100.0 * (double)m->count / (double)cells : 0);
  printf("features    %lld x %d float32%s%s\n", (long long)m->count, m->embed_dim,
         m->has_orientations ? ", with the 8 orientations" : "",
         m->has_tissue_fraction ? ", tissue fraction per cell" : "");
  printf("encoder     %s\n", or_unknown(m->encoder));
  printf("sha256      %s\n", or_unknown(m->encoder_sha256));
  if (m->command_line && *m->command_line) printf("made by     %s\n", m->command_line);
  print_features_properties(r, o);
  nic_features_close(r);
  return 0;
}

/* ---- slides ------------------------------------------------------------------ */

/* A property value on one line: control characters escaped, cut at `max`
 * characters (0 = whole). */
static void print_value(const char *v, size_t max) {
  size_t n = 0;
  for (; *v && (!max || n < max); v++, n++) {
    if (*v == '\n')
      fputs("\\n", stdout);
    else if (*v == '\r')
      fputs("\\r", stdout);
    else if (*v == '\t')
      fputs("\\t", stdout);
    else if ((unsigned char)*v < 0x20)
      printf("\\x%02x", (unsigned char)*v);
    else
      putchar(*v);
  }
  if (*v) fputs("...", stdout);
  putchar('\n');
}

static void print_properties(const nic_slide *s, const inspect_opts *o) {
  int n = nic_slide_property_count(s), limit = o->all ? n : (n < 20 ? n : 20), shown = 0;
  if (n == limit)
    printf("properties  %d\n", n);
  else
    printf("properties  %d (first %d; --all for all)\n", n, limit);
  /* OpenSlide's own normalised properties first: they matter most. */
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < n && shown < limit; i++) {
      const char *name = nic_slide_property_name(s, i);
      int ours = !strncmp(name, "openslide.", 10);
      if (ours != (pass == 0)) continue;
      printf("  %s = ", name);
      print_value(nic_slide_property_value(s, name), o->all ? 0 : 100);
      shown++;
    }
}

static int print_slide(const char *path, const inspect_opts *o) {
  nic_slide *s = NULL;
  nic_error err = {0};
  if (nic_slide_open(&s, path, NULL, &err) != NIC_OK) return cli_fail(&err);
  int64_t w0, h0;
  nic_slide_level_dims(s, 0, &w0, &h0);
  double mx = 0, my = 0;
  int known = nic_slide_spacing(s, &mx, &my, NULL) == NIC_OK;
  printf("file        %s\n", path);
  printf("format      %s (%s: %s)\n",
         !strcmp(nic_slide_backend(s), "openslide") ? "slide" : "image", nic_slide_backend(s),
         nic_slide_vendor(s));
  printf("size        %lld x %lld px\n", (long long)w0, (long long)h0);
  if (known)
    printf("spacing     %.4g x %.4g um/px (%s)\n", mx, my,
           nic_spacing_source_str(nic_slide_spacing_source(s)));
  else
    printf("spacing     unknown (give --mpp-override to commands that need it)\n");
  double obj = nic_slide_objective_power(s);
  if (obj > 0)
    printf("objective   %gx\n", obj);
  else
    printf("objective   unknown\n");
  printf("levels      %d\n", nic_slide_level_count(s));
  printf("  %5s %10s %10s %11s %9s\n", "level", "width", "height", "downsample", "um/px");
  for (int l = 0; l < nic_slide_level_count(s); l++) {
    int64_t w, h;
    nic_slide_level_dims(s, l, &w, &h);
    double ds = nic_slide_level_downsample(s, l);
    printf("  %5d %10lld %10lld %11.4f", l, (long long)w, (long long)h, ds);
    if (known)
      printf(" %9.4f\n", mx * ds);
    else
      printf(" %9s\n", "-");
  }
  print_properties(s, o);
  nic_slide_close(s);
  return 0;
}

static const inspect_kind kinds[] = {
    {"model", claims_model, print_model},
    {"compressed slide", claims_compressed, print_compressed},
    {"slide", claims_anything, print_slide}, /* last: takes the rest */
};

int cmd_inspect(int argc, char **argv) {
  static const struct option longopts[] = {
      {"all", no_argument, NULL, 'a'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  inspect_opts o = {0};
  int c;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
    case 'a':
      o.all = 1;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      return cli_usage("inspect", "unknown option");
    }
  }
  if (argc - optind != 1) return cli_usage("inspect", "expects exactly one FILE");
  const char *path = argv[optind];
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (kinds[i].claims(path)) return kinds[i].print(path, &o);
  return 1; /* unreachable: the last kind claims everything */
}
