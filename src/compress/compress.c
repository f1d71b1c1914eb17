/* The compressor and one slide, start to finish: open the slide, find its
 * spacing and tissue, lay the grid, choose the kept cells, run the
 * reader/encoder pipeline into a features writer, commit. */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compress/compress_internal.h"

/* Decoded pixels per side of one reading block (see nic_cell_plan): about
 * 4 x 4 tiles of 256 px, so a block's tiles stay in OpenSlide's cache
 * (32 MB) while its cells are read, and neighbouring blocks read at the
 * same time by other readers share few tiles. */
#define BLOCK_PIXELS 1024

/* Largest batch accepted: beyond it only memory grows. */
#define MAX_BATCH 4096

nic_compress_opts nic_compress_default_opts(void) {
  nic_compress_opts o;
  memset(&o, 0, sizeof o);
  o.batch = 128;
  o.min_tissue = 0.5;
  o.orientations = 1;
  o.tissue_mpp = 8;
  return o;
}

static char *dup_str(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* ---- the compressor ---------------------------------------------------------- */

static nic_status check_opts(const nic_compress_opts *o, nic_error *err) {
  if (o->batch < 1 || o->batch > MAX_BATCH)
    return nic_err(err, NIC_EINVAL, "batch must be 1..%d, got %d", MAX_BATCH, o->batch);
  if (o->readers < 0 || o->readers > 256)
    return nic_err(err, NIC_EINVAL, "readers must be 0..256, got %d", o->readers);
  if (o->encoders < 0 || o->encoders > 64)
    return nic_err(err, NIC_EINVAL, "encoders must be 0..64, got %d", o->encoders);
  if (o->ring < 0 || o->ring == 1 || o->ring > 64)
    return nic_err(err, NIC_EINVAL, "ring must be 0 (automatic) or 2..64, got %d", o->ring);
  if (!(o->min_tissue >= 0 && o->min_tissue <= 1))
    return nic_err(err, NIC_EINVAL, "min_tissue must be within 0..1, got %g", o->min_tissue);
  if (o->orientations != 1 && o->orientations != NIC_FEATURES_ORIENTATIONS)
    return nic_err(err, NIC_EINVAL, "orientations must be 1 or %d, got %d",
                   NIC_FEATURES_ORIENTATIONS, o->orientations);
  if (!(o->tissue_mpp > 0) || !isfinite(o->tissue_mpp))
    return nic_err(err, NIC_EINVAL, "tissue_mpp must be positive, got %g", o->tissue_mpp);
  if (o->gzip_level < 0 || o->gzip_level > 9)
    return nic_err(err, NIC_EINVAL, "gzip level must be 0..9, got %d", o->gzip_level);
  return NIC_OK;
}

/* The file name without directory and extension. */
static char *stem(const char *path) {
  const char *base = strrchr(path, '/');
  char *s = dup_str(base ? base + 1 : path);
  char *dot = s ? strrchr(s, '.') : NULL;
  if (dot && dot != s) *dot = '\0';
  return s;
}

/* The encoder's name: metadata encoder_name (a JSON string), else the
 * model file's stem. */
static char *encoder_name(const nic_model *m, const char *path) {
  const char *json = nic_model_get_meta(m, "encoder_name");
  if (json) {
    json_object *o = json_tokener_parse(json);
    char *name =
        o && json_object_is_type(o, json_type_string) ? dup_str(json_object_get_string(o)) : NULL;
    json_object_put(o);
    if (name && *name) return name;
    free(name);
  }
  return stem(path);
}

/* Checks that the model encodes RGB patches at a known spacing into
 * N x C rows, and records P, mpp and C. */
static nic_status check_model(nic_compressor *c, nic_model *m, const char *path, nic_error *err) {
  nic_input_info *in = nic_model_input_info(m);
  int ndim, n = nic_model_num_nodes(m);
  int64_t shp[NIC_MAX_DIMS];
  nic_model_node_shape(m, 0, &ndim, shp);
  if (ndim != 4 || shp[1] != 3 || shp[2] != shp[3])
    return nic_err(err, NIC_EINVAL, "%s: not a patch encoder: its input is not a square RGB image",
                   path);
  c->P = in->patch_size > 0 ? in->patch_size : (int)shp[2];
  if (c->P != shp[2])
    return nic_err(err, NIC_EINVAL, "%s: input.patch_size %d differs from the input size %lld",
                   path, c->P, (long long)shp[2]);
  c->mpp = in->mpp;
  if (!(c->mpp > 0))
    return nic_err(err, NIC_EINVAL,
                   "%s: the model does not say the spacing its patches are at (input.mpp)", path);
  if (n < 1) return nic_err(err, NIC_EINVAL, "%s: the model has no layers", path);
  nic_model_node_shape(m, n, &ndim, shp);
  if (ndim != 2 || shp[1] < 1 || shp[1] > (1 << 20))
    return nic_err(err, NIC_EINVAL, "%s: the model's output is not one embedding per patch", path);
  c->C = (int)shp[1];
  return NIC_OK;
}

static long online_cores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? n : 1;
}

/* Reads the model once to check it and learn P, mpp, C and its name. */
static nic_status inspect_model(nic_compressor *c, const char *path, nic_error *err) {
  nic_model *m = NULL;
  nic_status st = nic_model_load(&m, path, err);
  if (st == NIC_OK) st = check_model(c, m, path, err);
  if (st == NIC_OK) {
    c->name = encoder_name(m, path);
    if (!c->name) st = nic_err(err, NIC_ENOMEM, "out of memory");
  }
  nic_model_free(m);
  return st;
}

/* The encoder workers: one copy of the model each. With one worker it
 * runs on the caller's context; with several, each gets a context with an
 * equal share of its threads. */
static nic_status start_workers(nic_compressor *c, const char *path, nic_error *err) {
  int n = c->o.encoders, threads = nic_ctx_threads(c->ctx) / n;
  c->workers = calloc((size_t)n, sizeof *c->workers);
  if (!c->workers) return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int i = 0; i < n; i++) {
    if (n == 1) c->workers[i].ctx = c->ctx;
    nic_status st = nic__worker_init(c, &c->workers[i], path, threads > 0 ? threads : 1, err);
    c->nworkers = i + 1; /* freed by nic_compressor_free, also when half made */
    if (st != NIC_OK) return st;
  }
  return NIC_OK;
}

nic_status nic_compressor_create(nic_compressor **out, const char *model_path, nic_ctx *ctx,
                                 const nic_compress_opts *opts, nic_error *err) {
  *out = NULL;
  nic_compress_opts o = opts ? *opts : nic_compress_default_opts();
  nic_status st = check_opts(&o, err);
  if (st != NIC_OK) return st;
  if (!ctx) return nic_err(err, NIC_EINVAL, "nic_compressor_create: a context is required");
  if (o.readers == 0) o.readers = (int)(online_cores() < 256 ? online_cores() : 256);
  if (o.encoders == 0) o.encoders = nic_ctx_threads(ctx) < 64 ? nic_ctx_threads(ctx) : 64;
  if (o.ring == 0) o.ring = o.readers + o.encoders + 1 < 64 ? o.readers + o.encoders + 1 : 64;

  nic_compressor *c = calloc(1, sizeof *c);
  if (!c) return nic_err(err, NIC_ENOMEM, "out of memory");
  c->ctx = ctx;
  c->o = o;
  c->cmdline = dup_str(o.command_line);
  c->o.command_line = c->cmdline;
  if (o.command_line && !c->cmdline) st = nic_err(err, NIC_ENOMEM, "out of memory");
  if (st == NIC_OK) st = inspect_model(c, model_path, err);
  if (st == NIC_OK) st = nic_features_sha256_file(model_path, c->sha, err);
  if (st == NIC_OK) st = start_workers(c, model_path, err);
  if (st != NIC_OK) {
    nic_compressor_free(c);
    return st;
  }
  *out = c;
  return NIC_OK;
}

void nic_compressor_free(nic_compressor *c) {
  if (!c) return;
  for (int i = 0; i < c->nworkers; i++) nic__worker_free(&c->workers[i]);
  free(c->workers);
  free(c->perm);
  free(c->name);
  free(c->cmdline);
  free(c);
}

const char *nic_compressor_encoder_name(const nic_compressor *c) {
  return c->name;
}
int nic_compressor_patch_size(const nic_compressor *c) {
  return c->P;
}
double nic_compressor_mpp(const nic_compressor *c) {
  return c->mpp;
}
int nic_compressor_embed_dim(const nic_compressor *c) {
  return c->C;
}
const char *nic_compressor_sha256(const nic_compressor *c) {
  return c->sha;
}
const nic_compress_opts *nic_compressor_opts(const nic_compressor *c) {
  return &c->o;
}

/* ---- one slide ------------------------------------------------------------------ */

/* Everything one slide holds while it is compressed. */
typedef struct slide_work {
  nic_slide *slide;
  nic_mask mask;
  nic_features_meta meta;
  float *fraction; /* grid_h x grid_w */
  uint8_t *keep;   /* grid_h x grid_w */
  nic_cell_plan plan;
  nic_features_writer *w;
} slide_work;

static void work_free(slide_work *k) {
  nic_features_writer_abort(k->w);
  nic__plan_free(&k->plan);
  free(k->fraction);
  free(k->keep);
  nic_mask_free(&k->mask);
  nic_slide_close(k->slide);
}

/* Opens the slide and finds its spacing. */
static nic_status open_slide(const nic_compress_job *job, slide_work *k, double *mpp_x,
                             double *mpp_y, nic_error *err) {
  nic_slide_opts so = {job->mpp > 0 ? job->mpp : 0};
  nic_status st = nic_slide_open(&k->slide, job->slide_path, &so, err);
  if (st != NIC_OK) return st;
  if (nic_slide_spacing(k->slide, mpp_x, mpp_y, NULL) != NIC_OK)
    return nic_err(err, NIC_EINVAL,
                   "%s: the slide does not say its pixel spacing (um/px); give it with "
                   "--slide-mpp or an mpp column in the slide list",
                   job->slide_path);
  return NIC_OK;
}

/* The tissue mask: the user's, or detected. */
static nic_status find_tissue(const nic_compressor *c, const nic_compress_job *job, slide_work *k,
                              nic_error *err) {
  if (job->mask_path) {
    nic_status st = nic_mask_load(k->slide, job->mask_path, c->o.tissue_mpp, &k->mask, err);
    if (st != NIC_OK && err && strstr(err->msg, job->slide_path) == NULL)
      nic_err_prefix(err, "%s: mask %s: ", job->slide_path, job->mask_path);
    return st;
  }
  nic_tissue_params p = nic_tissue_default_params();
  p.mpp = c->o.tissue_mpp;
  return nic_tissue_detect(k->slide, &p, &k->mask, NULL, err);
}

/* The grid and its kept cells; fails when no cell has enough tissue. */
static nic_status choose_cells(const nic_compressor *c, const nic_compress_job *job, slide_work *k,
                               double mpp_x, nic_compress_stats *st, nic_error *err) {
  nic_features_meta *m = &k->meta;
  int64_t w0, h0;
  nic_slide_level_dims(k->slide, 0, &w0, &h0);
  *m = nic_features_default_meta();
  m->patch_size = c->P;
  m->mpp = c->mpp;
  nic_status s = nic_features_meta_set_grid(m, w0, h0, mpp_x, err);
  if (s != NIC_OK) return nic_err_prefix(err, "%s: ", job->slide_path);
  int64_t cells = (int64_t)m->grid_h * m->grid_w, kept = 0;
  k->fraction = malloc(sizeof(float) * (size_t)cells);
  k->keep = malloc((size_t)cells);
  if (!k->fraction || !k->keep)
    return nic_err(err, NIC_ENOMEM, "%s: out of memory for a %d x %d grid", job->slide_path,
                   m->grid_h, m->grid_w);
  double sum = 0, S = m->stride_level0;
  for (int i = 0; i < m->grid_h; i++)
    for (int j = 0; j < m->grid_w; j++) {
      double f = nic_mask_tissue_fraction(&k->mask, m->origin_x + j * S, m->origin_y + i * S, S, S);
      int64_t cell = (int64_t)i * m->grid_w + j;
      k->fraction[cell] = (float)f;
      k->keep[cell] = f >= c->o.min_tissue;
      kept += k->keep[cell];
      sum += f;
    }
  st->grid_h = m->grid_h;
  st->grid_w = m->grid_w;
  st->tissue_fraction = sum / (double)cells;
  if (kept == 0)
    return nic_err(err, NIC_EINVAL,
                   "%s: no tissue: none of the %d x %d cells is %g%% tissue or more (tissue "
                   "covers %.2f%% of the slide)",
                   job->slide_path, m->grid_h, m->grid_w, 100 * c->o.min_tissue,
                   100 * st->tissue_fraction);
  return NIC_OK;
}

/* Cuts the kept cells into reading blocks of about BLOCK_PIXELS decoded
 * pixels a side. */
static nic_status make_plan(const nic_compressor *c, slide_work *k, nic_compress_stats *st,
                            nic_error *err) {
  double ds = k->meta.stride_level0 / c->P;
  st->level = nic_slide_best_level(k->slide, ds);
  st->level_downsample = nic_slide_level_downsample(k->slide, st->level);
  double cell_px = k->meta.stride_level0 / st->level_downsample; /* decoded px per cell */
  int side = (int)floor(BLOCK_PIXELS / cell_px + 0.5);
  if (side < 1) side = 1;
  return nic__plan_build(&k->plan, k->keep, k->meta.grid_h, k->meta.grid_w, side, side, c->o.batch,
                         err);
}

/* Fills the slide's part of the metadata and creates the writer. */
static nic_status start_output(const nic_compressor *c, const nic_compress_job *job, slide_work *k,
                               double mpp_x, double mpp_y, nic_error *err) {
  nic_features_meta *m = &k->meta;
  /* An absolute path still finds the slide when the file is used from
   * elsewhere. */
  char *abs = realpath(job->slide_path, NULL);
  m->slide_id = job->slide_id;
  m->slide_path = abs ? abs : job->slide_path;
  m->slide_mpp_x = mpp_x;
  m->slide_mpp_y = mpp_y;
  m->level0_magnification = nic_slide_objective_power(k->slide);
  m->tissue_threshold = c->o.min_tissue;
  m->embed_dim = c->C;
  m->encoder = c->name;
  m->encoder_sha256 = c->sha;
  m->has_orientations = c->o.orientations == NIC_FEATURES_ORIENTATIONS;
  m->command_line = c->o.command_line;
  nic_features_write_opts wo = nic_features_default_write_opts();
  wo.gzip_level = c->o.gzip_level;
  nic_status st = nic_features_writer_create(&k->w, job->out_path, m, &wo, err);
  free(abs); /* the writer has written it */
  m->slide_path = job->slide_path;
  if (st != NIC_OK) return st;
  int n = nic_slide_property_count(k->slide);
  const char **names = malloc(sizeof(char *) * (size_t)(n ? n : 1));
  const char **values = malloc(sizeof(char *) * (size_t)(n ? n : 1));
  if (!names || !values) st = nic_err(err, NIC_ENOMEM, "out of memory");
  for (int i = 0; st == NIC_OK && i < n; i++) {
    names[i] = nic_slide_property_name(k->slide, i);
    values[i] = nic_slide_property_value(k->slide, names[i]);
  }
  if (st == NIC_OK)
    st = nic_features_writer_set_properties(k->w, n, (const char *const *)names,
                                            (const char *const *)values, err);
  free(names);
  free(values);
  if (st == NIC_OK) st = nic_features_writer_set_tissue_fraction(k->w, k->fraction, err);
  return st;
}

nic_status nic_compress_slide(nic_compressor *c, const nic_compress_job *job,
                              nic_compress_stats *stats, nic_error *err) {
  nic_compress_stats local;
  nic_compress_stats *st = stats ? stats : &local;
  memset(st, 0, sizeof *st);
  if (!job || !job->slide_path || !job->out_path)
    return nic_err(err, NIC_EINVAL, "nic_compress_slide: a slide path and an output are required");
  double t0 = nic__compress_now();
  slide_work k;
  memset(&k, 0, sizeof k);
  double mpp_x = 0, mpp_y = 0;
  nic_status s = open_slide(job, &k, &mpp_x, &mpp_y, err);
  double t1 = nic__compress_now();
  st->open_s = t1 - t0;
  if (s == NIC_OK) s = find_tissue(c, job, &k, err);
  if (s == NIC_OK) s = choose_cells(c, job, &k, mpp_x, st, err);
  if (s == NIC_OK) s = make_plan(c, &k, st, err);
  st->tissue_s = nic__compress_now() - t1;
  if (s == NIC_OK) {
    st->patches = k.plan.n;
    s = start_output(c, job, &k, mpp_x, mpp_y, err);
  }
  if (s == NIC_OK) s = nic__pipeline_run(c, k.slide, &k.meta, &k.plan, k.w, st, err);
  if (s == NIC_OK) {
    double t2 = nic__compress_now();
    nic_features_writer *w = k.w;
    k.w = NULL; /* commit frees it, whatever happens */
    s = nic_features_writer_commit(w, err);
    st->write_s += nic__compress_now() - t2;
  }
  /* Every message names the slide. */
  if (s != NIC_OK && err && !strstr(err->msg, job->slide_path))
    nic_err_prefix(err, "%s: ", job->slide_path);
  work_free(&k);
  st->total_s = nic__compress_now() - t0;
  return s;
}
