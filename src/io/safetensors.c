/* Model files: the safetensors container (so PyTorch and friends can read
 * the weights) with the architecture, input description and free-form
 * metadata carried in its "__metadata__" map. See docs/model-format.md.
 *
 * Layout on disk:
 *   8 bytes   N, little-endian u64: length of the JSON header
 *   N bytes   JSON header, padded with spaces so that the data starts at a
 *             multiple of 8 bytes
 *   ...       raw little-endian tensor data, tightly packed
 *
 * A model file is untrusted input. The loader checks every length, offset,
 * type and shape before it allocates or reads anything that depends on
 * them, so that no byte pattern makes it crash, read out of bounds or
 * allocate more than about the size of the file. Every error names the file
 * and the problem. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/json_util.h"
#include "nic/version.h"
#include "nn/layer.h"

/* The same cap as the reference implementation: a larger header is far
 * more likely a corrupt length than a real model. */
#define ST_MAX_HEADER (100ull * 1000 * 1000)
/* Bounds on architecture values; far beyond any real network, low enough
 * that shape arithmetic in int64 cannot overflow. */
#define ARCH_MAX_DIM (1 << 20)
#define ARCH_MAX_NODES 10000

/* Metadata keys written by the library itself; user metadata may not use
 * them, and on load they are not copied into the model's metadata. */
static const char *const reserved_keys[] = {"format", "nic_version", "architecture", "input",
                                            "inference_only"};

static int is_reserved(const char *key) {
  for (size_t i = 0; i < sizeof reserved_keys / sizeof reserved_keys[0]; i++)
    if (!strcmp(key, reserved_keys[i])) return 1;
  return 0;
}

static int host_is_little_endian(void) {
  const uint16_t one = 1;
  return *(const uint8_t *)&one == 1;
}

/* In-place byte swap of n elements of `size` bytes (big-endian hosts only:
 * the file is always little-endian). */
static void swap_bytes(void *p, size_t n, size_t size) {
  uint8_t *b = p;
  for (size_t i = 0; i < n; i++, b += size)
    for (size_t j = 0; j < size / 2; j++) {
      uint8_t t = b[j];
      b[j] = b[size - 1 - j];
      b[size - 1 - j] = t;
    }
}

/* bfloat16: the top half of a float32, rounded to nearest even; NaNs stay
 * NaNs (quiet). */
static uint16_t f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

static float bf16_to_f32(uint16_t h) {
  uint32_t x = (uint32_t)h << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

/* A value as it comes back after being stored as `dt`. */
static float store_round_trip(float v, nic_store_dtype dt) {
  if (dt == NIC_STORE_F16) return nic_f16_to_f32(nic_f32_to_f16(v));
  if (dt == NIC_STORE_BF16) return bf16_to_f32(f32_to_bf16(v));
  return v;
}

static const char *store_name(nic_store_dtype dt) {
  return dt == NIC_STORE_F16 ? "F16" : dt == NIC_STORE_BF16 ? "BF16" : "F32";
}

static const char *pool_name(nic_pool_kind p) {
  return p == NIC_POOL_MAX ? "max" : "avg";
}
static const char *order_name(nic_flatten_order o) {
  return o == NIC_FLATTEN_NHWC ? "nhwc" : "nchw";
}

/* ======================================================================
 * Saving
 * ====================================================================== */

static json_object *int_array(const int *v, int n) {
  json_object *a = json_object_new_array();
  for (int i = 0; i < n && a; i++) json_object_array_add(a, json_object_new_int(v[i]));
  return a;
}

/* The architecture as a JSON object: everything nic_model_add needs to
 * rebuild the graph. All spec fields are written for every node so that
 * the format does not depend on which fields a kind happens to use. */
static json_object *arch_json(const nic_model *m, nic_error *err) {
  json_object *root = json_object_new_object();
  int in[3] = {m->c, m->h, m->w};
  json_object_object_add(root, "input", int_array(in, 3));
  json_object *nodes = json_object_new_array();
  json_object_object_add(root, "nodes", nodes);
  for (int k = 1; k <= m->nnodes; k++) {
    const nic_layer *l = m->layers[k - 1];
    const nic_layer_spec *s = &l->spec;
    if (s->kind <= 0 || s->kind >= NIC_LAYER_KIND_COUNT || (int)s->act < 0 ||
        s->act > NIC_ACT_TANH) {
      json_object_put(root);
      nic_err(err, NIC_EINVAL, "layer '%s' has an invalid kind or activation", l->name);
      return NULL;
    }
    json_object *n = json_object_new_object();
    json_object_object_add(n, "name", json_object_new_string(l->name));
    json_object_object_add(n, "kind", json_object_new_string(nic_layer_kind_name(s->kind)));
    json_object_object_add(n, "inputs", int_array(l->inputs, l->ninputs));
    json_object_object_add(n, "out", json_object_new_int(s->out));
    json_object_object_add(n, "kernel", int_array(s->kernel, 2));
    json_object_object_add(n, "stride", int_array(s->stride, 2));
    json_object_object_add(n, "pad", int_array(s->pad, 4));
    json_object_object_add(n, "groups", json_object_new_int(s->groups));
    json_object_object_add(n, "bias", json_object_new_boolean(s->bias != 0));
    json_object_object_add(n, "act", json_object_new_string(nic_act_name(s->act)));
    json_object_object_add(n, "alpha", nic_json_new_float(s->alpha));
    json_object_object_add(n, "eps", nic_json_new_float(s->eps));
    json_object_object_add(n, "momentum", nic_json_new_float(s->momentum));
    json_object_object_add(n, "pool", json_object_new_string(pool_name(s->pool)));
    json_object_object_add(n, "p", nic_json_new_float(s->p));
    json_object_object_add(n, "order", json_object_new_string(order_name(s->order)));
    json_object_array_add(nodes, n);
  }
  return root;
}

static json_object *input_json(const nic_model *m) {
  const nic_input_info *in = &m->input;
  json_object *o = json_object_new_object();
  json_object_object_add(o, "channels", json_object_new_int(in->channels));
  json_object_object_add(o, "height", json_object_new_int(in->height));
  json_object_object_add(o, "width", json_object_new_int(in->width));
  json_object_object_add(o, "patch_size", json_object_new_int(in->patch_size));
  json_object_object_add(o, "mpp", nic_json_new_double(in->mpp));
  /* One mean/std per channel, at most the four the struct holds. */
  int nc = in->channels < 1 ? 1 : in->channels > 4 ? 4 : in->channels;
  json_object *mean = json_object_new_array(), *sd = json_object_new_array();
  for (int c = 0; c < nc; c++) {
    json_object_array_add(mean, nic_json_new_float(in->mean[c]));
    json_object_array_add(sd, nic_json_new_float(in->std[c]));
  }
  json_object_object_add(o, "mean", mean);
  json_object_object_add(o, "std", sd);
  return o;
}

/* Serialises a JSON object to a new json-c string object (the metadata
 * values are JSON texts stored as strings). */
static json_object *as_string(json_object *o) {
  if (!o) return NULL;
  const char *t = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
  json_object *s = t ? json_object_new_string(t) : NULL;
  json_object_put(o);
  return s;
}

/* One tensor of the file being written: the model's params, then any
 * extra tensors, in this order in the data section. */
typedef struct st_out {
  const char *name;
  const nic_tensor *t;
  nic_store_dtype dtype;
} st_out;

static size_t store_size(nic_store_dtype dt) {
  return dt == NIC_STORE_F32 ? 4 : 2;
}

/* Builds the complete header text, padded with spaces to a multiple of 8.
 * *header is malloc'd. */
static nic_status build_header(const nic_model *m, const st_out *outs, int nout, char **header,
                               size_t *hlen, nic_error *err) {
  *header = NULL;
  for (int i = 0; i < m->nmeta; i++)
    if (is_reserved(m->meta[i].key))
      return nic_err(err, NIC_EINVAL, "metadata key '%s' is reserved for the file format",
                     m->meta[i].key);
  for (int i = 0; i < nout; i++) {
    const nic_tensor *t = outs[i].t;
    if (t->layout || (!t->data && nic_tensor_numel(t) > 0))
      return nic_err(err, NIC_EINVAL, "tensor '%s' is not a plain host tensor", outs[i].name);
  }
  json_object *arch = arch_json(m, err);
  if (!arch) return err ? err->code : NIC_EINVAL;

  json_object *root = json_object_new_object();
  json_object *meta = json_object_new_object();
  /* __metadata__ first, as the Python implementation writes it: a reader
   * that only wants the description finds it at once. */
  json_object_object_add(root, "__metadata__", meta);
  json_object_object_add(meta, "format", json_object_new_string("nic"));
  json_object_object_add(meta, "nic_version", json_object_new_string(NIC_VERSION_STRING));
  json_object_object_add(meta, "architecture", as_string(arch));
  json_object_object_add(meta, "input", as_string(input_json(m)));
  json_object_object_add(meta, "inference_only",
                         json_object_new_string(m->inference_only ? "true" : "false"));
  for (int i = 0; i < m->nmeta; i++)
    json_object_object_add(meta, m->meta[i].key, json_object_new_string(m->meta[i].value));

  uint64_t off = 0;
  for (int i = 0; i < nout; i++) {
    const nic_tensor *t = outs[i].t;
    uint64_t bytes = (uint64_t)nic_tensor_numel(t) * store_size(outs[i].dtype);
    json_object *e = json_object_new_object();
    json_object_object_add(e, "dtype", json_object_new_string(store_name(outs[i].dtype)));
    json_object *shape = json_object_new_array();
    for (int d = 0; d < t->ndim; d++)
      json_object_array_add(shape, json_object_new_int64(t->shape[d]));
    json_object_object_add(e, "shape", shape);
    json_object *offs = json_object_new_array();
    json_object_array_add(offs, json_object_new_int64((int64_t)off));
    json_object_array_add(offs, json_object_new_int64((int64_t)(off + bytes)));
    json_object_object_add(e, "data_offsets", offs);
    json_object_object_add(root, outs[i].name, e);
    off += bytes;
  }

  size_t len = 0;
  const char *text = json_object_to_json_string_length(
      root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
  nic_status s = NIC_OK;
  if (!text) {
    s = nic_err(err, NIC_ENOMEM, "out of memory serialising the model header");
  } else {
    size_t padded = (len + 7) / 8 * 8; /* 8 + padded is then a multiple of 8 */
    char *h = malloc(padded);
    if (!h) {
      s = nic_err(err, NIC_ENOMEM, "out of memory serialising the model header");
    } else {
      memcpy(h, text, len);
      memset(h + len, ' ', padded - len);
      *header = h;
      *hlen = padded;
    }
  }
  json_object_put(root);
  return s;
}

static int write_all(int fd, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Writes one tensor as little-endian float32, float16 or bfloat16,
 * converting through a small buffer (float32 on a little-endian host goes
 * out as it is). */
static int write_tensor(int fd, const nic_tensor *t, nic_store_dtype dt) {
  size_t n = (size_t)nic_tensor_numel(t);
  int le = host_is_little_endian();
  if (dt == NIC_STORE_F32 && le) return write_all(fd, t->data, n * sizeof(float));
  union {
    float f[1024];
    uint16_t h[1024];
  } buf;
  size_t es = store_size(dt);
  for (size_t i = 0; i < n; i += 1024) {
    size_t c = n - i < 1024 ? n - i : 1024;
    if (dt == NIC_STORE_F32)
      memcpy(buf.f, t->data + i, c * sizeof(float));
    else if (dt == NIC_STORE_F16)
      nic_f32_to_f16_array(t->data + i, buf.h, c);
    else
      for (size_t j = 0; j < c; j++) buf.h[j] = f32_to_bf16(t->data[i + j]);
    if (!le) swap_bytes(&buf, c, es);
    if (write_all(fd, &buf, c * es)) return -1;
  }
  return 0;
}

/* Makes the rename itself durable. Some file systems refuse fsync on a
 * directory; the data is already safe then, so failures are ignored. */
static void sync_parent_dir(const char *path) {
  char dir[4096];
  const char *slash = strrchr(path, '/');
  if (!slash) {
    snprintf(dir, sizeof dir, ".");
  } else if (slash == path) {
    snprintf(dir, sizeof dir, "/");
  } else {
    size_t n = (size_t)(slash - path);
    if (n >= sizeof dir) return;
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)fsync(fd);
  close(fd);
}

nic_store_dtype nic_model_param_storage(const nic_model *m, const nic_param *p,
                                        nic_store_dtype want) {
  if (want != NIC_STORE_F16 && want != NIC_STORE_BF16) return NIC_STORE_F32;
  for (int k = 0; k < m->nnodes; k++) /* running statistics stay exact */
    if (m->layers[k]->running_mean == p || m->layers[k]->running_var == p) return NIC_STORE_F32;
  int64_t n = nic_tensor_numel(&p->value);
  for (int64_t i = 0; i < n; i++) { /* a finite value must stay finite */
    float v = p->value.data[i];
    if (isfinite(v) && !isfinite(store_round_trip(v, want))) return NIC_STORE_F32;
  }
  return want;
}

/* The tensors to write: the model's params in the dtype opts ask for, then
 * the extra tensors, whose names are checked. *outs is malloc'd. */
static nic_status plan_tensors(const nic_model *m, const nic_save_opts *o, st_out **outs, int *nout,
                               nic_error *err) {
  int nextra = o ? o->nextra : 0;
  if (nextra < 0 || (nextra > 0 && !o->extra))
    return nic_err(err, NIC_EINVAL, "invalid extra tensors");
  if (o && o->dtype != NIC_STORE_F32 && o->dtype != NIC_STORE_F16 && o->dtype != NIC_STORE_BF16)
    return nic_err(err, NIC_EINVAL, "unknown storage dtype %d", (int)o->dtype);
  for (int i = 0; i < m->nparams; i++)
    if (m->params[i]->value.layout || !m->params[i]->value.data)
      return nic_err(err, NIC_EINVAL, "param '%s' is not a plain host tensor", m->params[i]->name);
  st_out *v = malloc(sizeof *v * (size_t)(m->nparams + nextra + 1));
  if (!v) return nic_err(err, NIC_ENOMEM, "out of memory");
  int n = 0;
  for (int i = 0; i < m->nparams; i++, n++) {
    v[n].name = m->params[i]->name;
    v[n].t = &m->params[i]->value;
    v[n].dtype = nic_model_param_storage(m, m->params[i], o ? o->dtype : NIC_STORE_F32);
  }
  for (int i = 0; i < nextra; i++, n++) {
    const char *name = o->extra[i].name;
    size_t len = strnlen(name, sizeof o->extra[i].name);
    int clash = !strcmp(name, "__metadata__");
    for (int j = 0; j < n && !clash; j++) clash = !strcmp(v[j].name, name);
    if (len == 0 || len >= sizeof o->extra[i].name || clash) {
      free(v);
      return nic_err(err, NIC_EINVAL, "extra tensor name '%.*s' is empty, too long or taken",
                     (int)len, name);
    }
    v[n].name = name;
    v[n].t = &o->extra[i].value;
    v[n].dtype = NIC_STORE_F32;
  }
  *outs = v;
  *nout = n;
  return NIC_OK;
}

nic_status nic_model_save(const nic_model *m, const char *path, nic_error *err) {
  return nic_model_save_opts(m, path, NULL, err);
}

nic_status nic_model_save_opts(const nic_model *m, const char *path, const nic_save_opts *opts,
                               nic_error *err) {
  char *header = NULL;
  size_t hlen = 0;
  st_out *outs = NULL;
  int nout = 0;
  nic_status s = plan_tensors(m, opts, &outs, &nout, err);
  if (s == NIC_OK) s = build_header(m, outs, nout, &header, &hlen, err);
  if (s != NIC_OK) {
    free(outs);
    return nic_err_prefix(err, "saving %s: ", path);
  }

  /* Write a temporary file next to the target and rename it over, so that
   * readers never see a half-written model and a crash leaves the old one. */
  size_t tlen = strlen(path) + 32;
  char *tmp = malloc(tlen);
  if (!tmp) {
    free(header);
    free(outs);
    return nic_err(err, NIC_ENOMEM, "saving %s: out of memory", path);
  }
  snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    s = nic_err(err, NIC_EIO, "cannot create %s: %s", tmp, strerror(errno));
    goto done;
  }
  uint8_t len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
  int bad = write_all(fd, len8, 8) || write_all(fd, header, hlen);
  for (int i = 0; i < nout && !bad; i++) bad = write_tensor(fd, outs[i].t, outs[i].dtype);
  if (bad || fsync(fd) != 0) {
    s = nic_err(err, NIC_EIO, "cannot write %s: %s", tmp, strerror(errno));
    close(fd);
    unlink(tmp);
    goto done;
  }
  if (close(fd) != 0) {
    s = nic_err(err, NIC_EIO, "cannot write %s: %s", tmp, strerror(errno));
    unlink(tmp);
    goto done;
  }
  if (rename(tmp, path) != 0) {
    s = nic_err(err, NIC_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    unlink(tmp);
    goto done;
  }
  sync_parent_dir(path);
done:
  free(tmp);
  free(header);
  free(outs);
  return s;
}

/* ======================================================================
 * Loading
 * ====================================================================== */

enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2 };

typedef struct st_tensor {
  const char *name; /* points into the parsed header (lives as long as it) */
  int dtype;
  int ndim;
  int64_t shape[NIC_MAX_DIMS];
  uint64_t begin, end; /* relative to the data section */
  int used;            /* claimed by a model param */
} st_tensor;

typedef struct st_reader {
  const char *path;
  FILE *f;
  uint64_t size;       /* of the whole file */
  uint64_t data_start; /* 8 + header length */
  json_object *root;   /* the parsed header */
  json_object *meta;   /* its __metadata__ */
  st_tensor *t;
  int nt;
  const char *extra_prefix; /* tensors named so are returned, not rejected */
  nic_param *extra;
  int nextra;
  nic_error *err;
} st_reader;

/* Records "PATH: message" as a format error. */
static nic_status bad(st_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static nic_status bad(st_reader *r, const char *fmt, ...) {
  char msg[NIC_ERRMSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return nic_err(r->err, NIC_EFORMAT, "%s: %s", r->path, msg);
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
  size_t o = (size_t)snprintf(buf, n, "[");
  for (int d = 0; d < ndim && o < n; d++)
    o += (size_t)snprintf(buf + o, n - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
  if (o < n) snprintf(buf + o, n - o, "]");
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* r->t is sorted by name once parsed: a header may list very many
 * tensors, and every param is looked up. */
static st_tensor *find_tensor(st_reader *r, const char *name) {
  st_tensor key;
  key.name = name;
  return bsearch(&key, r->t, (size_t)r->nt, sizeof *r->t, cmp_name);
}

/* Parses one tensor entry of the header and checks it against the size of
 * the data section. */
static nic_status parse_entry(st_reader *r, const char *name, json_object *e, st_tensor *t,
                              uint64_t data_size) {
  t->name = name;
  if (!json_object_is_type(e, json_type_object))
    return bad(r, "header entry '%s' is not an object", name);
  if (strlen(name) >= sizeof(((nic_param *)0)->name))
    return bad(r, "tensor name '%.40s...' is too long", name);
  json_object_object_foreach(e, key, val) {
    (void)val;
    if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
      return bad(r, "tensor '%s' has an unknown field '%s'", name, key);
  }
  const char *dt = nic_json_get_str(e, "dtype");
  if (!dt) return bad(r, "tensor '%s' has no dtype string", name);
  uint64_t esize;
  if (!strcmp(dt, "F32")) {
    t->dtype = DT_F32;
    esize = 4;
  } else if (!strcmp(dt, "F16")) {
    t->dtype = DT_F16;
    esize = 2;
  } else if (!strcmp(dt, "BF16")) {
    t->dtype = DT_BF16;
    esize = 2;
  } else {
    return bad(r, "tensor '%s' has dtype '%s'; only F32, F16 and BF16 are supported", name, dt);
  }
  json_object *shape = NULL, *offs = NULL;
  if (!json_object_object_get_ex(e, "shape", &shape) ||
      !json_object_is_type(shape, json_type_array))
    return bad(r, "tensor '%s' has no shape array", name);
  size_t nd = json_object_array_length(shape);
  if (nd > NIC_MAX_DIMS)
    return bad(r, "tensor '%s' has %zu dimensions; at most %d are supported", name, nd,
               NIC_MAX_DIMS);
  t->ndim = (int)nd;
  int has_zero = 0;
  for (size_t d = 0; d < nd; d++) {
    int64_t v;
    if (nic_json_int_value(json_object_array_get_idx(shape, d), 0, INT64_MAX, &v) != 0)
      return bad(r, "tensor '%s': shape[%zu] is not a non-negative integer", name, d);
    t->shape[d] = v;
    has_zero |= v == 0;
  }
  /* numel * esize must equal the byte range, which lies inside the data;
   * a product beyond data_size / esize is wrong whatever it is, so the
   * multiplication stops there instead of overflowing. UINT64_MAX marks it. */
  uint64_t numel = has_zero ? 0 : 1, limit = data_size / esize;
  for (size_t d = 0; d < nd && numel != 0 && numel != UINT64_MAX; d++) {
    uint64_t v = (uint64_t)t->shape[d];
    numel = v > limit / numel ? UINT64_MAX : numel * v;
  }
  if (!json_object_object_get_ex(e, "data_offsets", &offs) ||
      !json_object_is_type(offs, json_type_array) || json_object_array_length(offs) != 2)
    return bad(r, "tensor '%s' has no data_offsets pair", name);
  int64_t b, en;
  if (nic_json_int_value(json_object_array_get_idx(offs, 0), 0, INT64_MAX, &b) != 0 ||
      nic_json_int_value(json_object_array_get_idx(offs, 1), 0, INT64_MAX, &en) != 0)
    return bad(r, "tensor '%s': data_offsets must be non-negative integers", name);
  t->begin = (uint64_t)b;
  t->end = (uint64_t)en;
  if (t->end < t->begin)
    return bad(r, "tensor '%s': data_offsets [%llu, %llu] end before they begin", name,
               (unsigned long long)t->begin, (unsigned long long)t->end);
  if (t->end > data_size)
    return bad(r, "tensor '%s': data_offsets [%llu, %llu] run past the data section (%llu bytes)",
               name, (unsigned long long)t->begin, (unsigned long long)t->end,
               (unsigned long long)data_size);
  if (numel == UINT64_MAX || numel * esize != t->end - t->begin) {
    char sh[128];
    shape_str(sh, sizeof sh, t->ndim, t->shape);
    return bad(r, "tensor '%s': data_offsets [%llu, %llu] span %llu bytes, but %s %s needs %s",
               name, (unsigned long long)t->begin, (unsigned long long)t->end,
               (unsigned long long)(t->end - t->begin), dt, sh,
               numel == UINT64_MAX ? "more than the file holds" : "a different size");
  }
  return NIC_OK;
}

static int cmp_begin(const void *a, const void *b) {
  const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

/* The tensors must tile the data section exactly: no overlaps, no gaps, no
 * trailing bytes (the reference implementation rejects all three). */
static nic_status check_tiling(st_reader *r, uint64_t data_size) {
  const st_tensor **v = malloc(sizeof *v * (size_t)(r->nt ? r->nt : 1));
  if (!v) return nic_err(r->err, NIC_ENOMEM, "%s: out of memory", r->path);
  for (int i = 0; i < r->nt; i++) v[i] = &r->t[i];
  qsort(v, (size_t)r->nt, sizeof *v, cmp_begin);
  uint64_t pos = 0;
  const st_tensor *prev = NULL;
  nic_status s = NIC_OK;
  for (int i = 0; i < r->nt && s == NIC_OK; i++) {
    const st_tensor *t = v[i];
    if (t->begin == t->end) continue; /* empty tensors occupy nothing */
    if (t->begin < pos)
      s = bad(r, "tensors '%s' and '%s' overlap (bytes %llu..%llu of the data)", prev->name,
              t->name, (unsigned long long)t->begin, (unsigned long long)pos);
    else if (t->begin > pos)
      s = bad(r, "%llu unused bytes in the data before tensor '%s'",
              (unsigned long long)(t->begin - pos), t->name);
    pos = t->end;
    prev = t;
  }
  if (s == NIC_OK && pos != data_size)
    s = bad(r, "%llu bytes of trailing data after the last tensor",
            (unsigned long long)(data_size - pos));
  free(v);
  return s;
}

/* Reads the length prefix and the header, parses and checks it. */
static nic_status read_header(st_reader *r) {
  struct stat st;
  if (fstat(fileno(r->f), &st) != 0)
    return nic_err(r->err, NIC_EIO, "%s: %s", r->path, strerror(errno));
  if (!S_ISREG(st.st_mode)) return nic_err(r->err, NIC_EIO, "%s: not a regular file", r->path);
  r->size = (uint64_t)st.st_size;
  if (r->size < 8)
    return bad(r, "file is %llu bytes, too short for a safetensors header",
               (unsigned long long)r->size);
  uint8_t len8[8];
  if (fread(len8, 1, 8, r->f) != 8)
    return nic_err(r->err, NIC_EIO, "%s: read error: %s", r->path, strerror(errno));
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++) hlen |= (uint64_t)len8[i] << (8 * i);
  if (hlen > ST_MAX_HEADER)
    return bad(r, "header length %llu exceeds the 100 MB limit (not a safetensors file?)",
               (unsigned long long)hlen);
  if (hlen > r->size - 8)
    return bad(r, "header length %llu runs past the end of the file (%llu bytes)",
               (unsigned long long)hlen, (unsigned long long)r->size);
  if (hlen < 2) return bad(r, "header length %llu is too short", (unsigned long long)hlen);
  r->data_start = 8 + hlen;
  char *text = malloc((size_t)hlen);
  if (!text) return nic_err(r->err, NIC_ENOMEM, "%s: out of memory for the header", r->path);
  if (fread(text, 1, (size_t)hlen, r->f) != (size_t)hlen) {
    free(text);
    return nic_err(r->err, NIC_EIO, "%s: read error: %s", r->path, strerror(errno));
  }
  if (text[0] != '{') {
    free(text);
    return bad(r, "header does not start with '{' (not a safetensors file?)");
  }
  char msg[256];
  r->root = nic_json_parse(text, (size_t)hlen, msg, sizeof msg);
  free(text);
  if (!r->root) return bad(r, "header is not valid JSON: %s", msg);
  if (!json_object_is_type(r->root, json_type_object)) return bad(r, "header is not a JSON object");

  uint64_t data_size = r->size - r->data_start;
  int n = json_object_object_length(r->root);
  r->t = calloc((size_t)(n ? n : 1), sizeof *r->t);
  if (!r->t) return nic_err(r->err, NIC_ENOMEM, "%s: out of memory", r->path);
  json_object_object_foreach(r->root, key, val) {
    if (!strcmp(key, "__metadata__")) {
      if (!json_object_is_type(val, json_type_object))
        return bad(r, "__metadata__ is not an object");
      json_object_object_foreach(val, mk, mv) {
        if (!nic_json_str_value(mv))
          return bad(r, "__metadata__ value of '%s' is not a string", mk);
      }
      r->meta = val;
      continue;
    }
    nic_status s = parse_entry(r, key, val, &r->t[r->nt], data_size);
    if (s != NIC_OK) return s;
    r->nt++;
  }
  qsort(r->t, (size_t)r->nt, sizeof *r->t, cmp_name);
  return check_tiling(r, data_size);
}

/* ---- architecture --------------------------------------------------------- */

static int get_int_array(json_object *o, const char *key, int n, int lo, int hi, int *out) {
  json_object *a = NULL;
  if (!json_object_object_get_ex(o, key, &a) || !json_object_is_type(a, json_type_array) ||
      json_object_array_length(a) != (size_t)n)
    return -1;
  for (int i = 0; i < n; i++) {
    int64_t v;
    if (nic_json_int_value(json_object_array_get_idx(a, (size_t)i), lo, hi, &v) != 0) return -1;
    out[i] = (int)v;
  }
  return 0;
}

/* Fills the spec of node k from its JSON description. Fields are optional
 * (defaults as in the nic_spec_* constructors) except name, kind, inputs;
 * when present they must have the right type and range. */
static nic_status parse_node(st_reader *r, json_object *n, int k, nic_layer_spec *s, int in[2]) {
  memset(s, 0, sizeof *s);
  s->stride[0] = s->stride[1] = 1;
  s->groups = 1;
  if (!json_object_is_type(n, json_type_object))
    return bad(r, "architecture node %d is not an object", k);
  const char *name = nic_json_get_str(n, "name");
  if (!name || !*name || strlen(name) >= sizeof(((nic_layer *)0)->name))
    return bad(r, "architecture node %d: missing or invalid name (1 to 63 characters)", k);
  s->name = name;
  const char *kind = nic_json_get_str(n, "kind");
  int kv = kind ? nic_layer_kind_from_name(kind) : -1;
  if (kv < 0)
    return bad(r, "architecture node %d ('%s'): unknown layer kind '%s'", k, name,
               kind ? kind : "(missing or not a string)");
  s->kind = (nic_layer_kind)kv;
  int nin = s->kind == NIC_LAYER_ADD ? 2 : 1;
  in[1] = -1;
  if (get_int_array(n, "inputs", nin, 0, k - 1, in) != 0)
    return bad(r, "architecture node %d ('%s'): inputs must be %d earlier node index%s (0..%d)", k,
               name, nin, nin == 2 ? "es" : "", k - 1);

  json_object *v = NULL;
  int64_t x;
#define OPT_INT(field, lo, hi)                                                                     \
  if (json_object_object_get_ex(n, #field, &v)) {                                                  \
    if (nic_json_int_value(v, lo, hi, &x) != 0)                                                    \
      return bad(r, "architecture node %d ('%s'): '" #field "' must be an integer in [%d, %d]", k, \
                 name, lo, hi);                                                                    \
    s->field = (int)x;                                                                             \
  }
#define OPT_ARR(field, cnt, lo, hi)                                                                \
  if (json_object_object_get_ex(n, #field, &v) &&                                                  \
      get_int_array(n, #field, cnt, lo, hi, s->field) != 0)                                        \
    return bad(r, "architecture node %d ('%s'): '" #field "' must be %d integers in [%d, %d]", k,  \
               name, cnt, lo, hi);
#define OPT_FLOAT(field)                                                                           \
  if (json_object_object_get_ex(n, #field, &v)) {                                                  \
    double d;                                                                                      \
    if (nic_json_get_num(n, #field, &d) != 0 || d < -1e30 || d > 1e30)                             \
      return bad(r, "architecture node %d ('%s'): '" #field "' must be a number", k, name);        \
    s->field = (float)d;                                                                           \
  }
  OPT_INT(out, 0, ARCH_MAX_DIM)
  OPT_ARR(kernel, 2, 0, ARCH_MAX_DIM)
  OPT_ARR(stride, 2, 0, ARCH_MAX_DIM)
  OPT_ARR(pad, 4, 0, ARCH_MAX_DIM)
  OPT_INT(groups, 0, ARCH_MAX_DIM)
  OPT_FLOAT(alpha)
  OPT_FLOAT(eps)
  OPT_FLOAT(momentum)
  OPT_FLOAT(p)
#undef OPT_INT
#undef OPT_ARR
#undef OPT_FLOAT
  /* 0 would ask nic_model_add for a depthwise conv: files store the
   * resolved group count. */
  if (s->kind == NIC_LAYER_CONV2D && s->groups < 1)
    return bad(r, "architecture node %d ('%s'): conv2d groups must be >= 1", k, name);
  if (json_object_object_get_ex(n, "bias", &v)) {
    int b;
    if (nic_json_get_bool(n, "bias", &b) != 0)
      return bad(r, "architecture node %d ('%s'): 'bias' must be true or false", k, name);
    s->bias = b;
  }
  if (json_object_object_get_ex(n, "act", &v)) {
    const char *a = nic_json_str_value(v);
    int av = a ? nic_act_from_name(a) : -1;
    if (av < 0)
      return bad(r, "architecture node %d ('%s'): unknown activation '%s'", k, name,
                 a ? a : "(not a string)");
    s->act = (nic_act)av;
  }
  if (json_object_object_get_ex(n, "pool", &v)) {
    const char *p = nic_json_str_value(v);
    if (!p || (strcmp(p, "avg") && strcmp(p, "max")))
      return bad(r, "architecture node %d ('%s'): pool must be \"avg\" or \"max\"", k, name);
    s->pool = strcmp(p, "max") ? NIC_POOL_AVG : NIC_POOL_MAX;
  }
  if (json_object_object_get_ex(n, "order", &v)) {
    const char *o = nic_json_str_value(v);
    if (!o || (strcmp(o, "nchw") && strcmp(o, "nhwc")))
      return bad(r, "architecture node %d ('%s'): order must be \"nchw\" or \"nhwc\"", k, name);
    s->order = strcmp(o, "nhwc") ? NIC_FLATTEN_NCHW : NIC_FLATTEN_NHWC;
  }
  return NIC_OK;
}

/* The params nic_model_add will create for this layer (mirrors
 * make_params in model.c). Checked against the header BEFORE the layer is
 * added, so that a hostile architecture cannot make the model allocate
 * more than the file itself holds. */
typedef struct want_param {
  char name[96];
  int ndim;
  int64_t shape[NIC_MAX_DIMS];
} want_param;

static int wanted_params(const nic_layer_spec *s, int in_ndim, const int64_t *in_shape,
                         want_param w[4]) {
  static const char *const bn_names[4] = {"gamma", "beta", "running_mean", "running_var"};
  int n = 0;
  int64_t c = in_shape[1];
  switch (s->kind) {
  case NIC_LAYER_CONV2D:
    snprintf(w[n].name, sizeof w[n].name, "%s.weight", s->name);
    w[n].ndim = 4;
    w[n].shape[0] = s->out;
    w[n].shape[1] = c / s->groups; /* conv groups >= 1: checked by parse_node */
    w[n].shape[2] = s->kernel[0];
    w[n].shape[3] = s->kernel[1];
    n++;
    break;
  case NIC_LAYER_DENSE: {
    int64_t f = 1;
    for (int d = 1; d < in_ndim; d++) f *= in_shape[d];
    snprintf(w[n].name, sizeof w[n].name, "%s.weight", s->name);
    w[n].ndim = 2;
    w[n].shape[0] = s->out;
    w[n].shape[1] = f;
    n++;
    break;
  }
  case NIC_LAYER_BATCHNORM:
    for (int i = 0; i < 4; i++) {
      snprintf(w[n].name, sizeof w[n].name, "%s.%s", s->name, bn_names[i]);
      w[n].ndim = 1;
      w[n].shape[0] = c;
      n++;
    }
    return n;
  default:
    return 0;
  }
  if (s->bias) {
    snprintf(w[n].name, sizeof w[n].name, "%s.bias", s->name);
    w[n].ndim = 1;
    w[n].shape[0] = s->out;
    n++;
  }
  return n;
}

/* Checks that tensor `name` exists in the header with exactly this shape. */
static nic_status check_tensor(st_reader *r, const char *name, int ndim, const int64_t *shape) {
  st_tensor *t = find_tensor(r, name);
  if (!t) return bad(r, "tensor '%s' is missing", name);
  if (t->ndim != ndim || memcmp(t->shape, shape, sizeof(int64_t) * (size_t)ndim) != 0) {
    char a[128], b[128];
    shape_str(a, sizeof a, t->ndim, t->shape);
    shape_str(b, sizeof b, ndim, shape);
    return bad(r, "tensor '%s' has shape %s, the architecture needs %s", name, a, b);
  }
  return NIC_OK;
}

static nic_status build_model(st_reader *r, json_object *arch, nic_model **out) {
  *out = NULL;
  if (!json_object_is_type(arch, json_type_object))
    return bad(r, "architecture is not a JSON object");
  int in[3];
  if (get_int_array(arch, "input", 3, 1, ARCH_MAX_DIM, in) != 0)
    return bad(r, "architecture: 'input' must be [channels, height, width], each in [1, %d]",
               ARCH_MAX_DIM);
  if ((int64_t)in[0] * in[1] * in[2] > ((int64_t)1 << 31))
    return bad(r, "architecture: input %dx%dx%d is too large", in[0], in[1], in[2]);
  json_object *nodes = NULL;
  if (!json_object_object_get_ex(arch, "nodes", &nodes) ||
      !json_object_is_type(nodes, json_type_array))
    return bad(r, "architecture has no 'nodes' array");
  size_t nn = json_object_array_length(nodes);
  if (nn > ARCH_MAX_NODES) return bad(r, "architecture has too many nodes (%zu)", nn);

  nic_error e2 = {0};
  nic_model *m = NULL;
  if (nic_model_create(&m, in[0], in[1], in[2], &e2) != NIC_OK)
    return bad(r, "architecture: %s", e2.msg);
  nic_status st = NIC_OK;
  for (size_t i = 0; i < nn && st == NIC_OK; i++) {
    int k = (int)i + 1, inputs[2];
    nic_layer_spec s;
    st = parse_node(r, json_object_array_get_idx(nodes, i), k, &s, inputs);
    if (st != NIC_OK) break;
    int ndim;
    int64_t shp[NIC_MAX_DIMS];
    nic_model_node_shape(m, inputs[0], &ndim, shp);
    want_param w[4];
    int nw = wanted_params(&s, ndim, shp, w);
    for (int j = 0; j < nw && st == NIC_OK; j++)
      st = check_tensor(r, w[j].name, w[j].ndim, w[j].shape);
    if (st == NIC_OK && nic_model_add(m, s, inputs[0], inputs[1], &e2) < 0)
      st = bad(r, "architecture node %d ('%s'): %s", k, s.name, e2.msg);
  }
  if (st != NIC_OK) {
    nic_model_free(m);
    return st;
  }
  *out = m;
  return NIC_OK;
}

/* ---- input description and metadata -------------------------------------- */

static nic_status parse_input(st_reader *r, const char *text, nic_model *m) {
  char msg[256];
  json_object *o = nic_json_parse(text, strlen(text), msg, sizeof msg);
  nic_status s = NIC_OK;
  nic_input_info *in = &m->input;
  int64_t v;
  double d;
  if (!o || !json_object_is_type(o, json_type_object)) {
    s = bad(r, "metadata 'input' is not a JSON object%s%s", o ? "" : ": ", o ? "" : msg);
    goto done;
  }
  const char *dims[3] = {"channels", "height", "width"};
  int want[3] = {m->c, m->h, m->w};
  for (int i = 0; i < 3; i++) {
    json_object *x = NULL;
    if (!json_object_object_get_ex(o, dims[i], &x)) continue;
    if (nic_json_int_value(x, want[i], want[i], &v) != 0) {
      s = bad(r, "metadata 'input': %s does not match the architecture's %d", dims[i], want[i]);
      goto done;
    }
  }
  if (nic_json_get_int(o, "patch_size", 1, ARCH_MAX_DIM, &v) != 0) {
    s = bad(r, "metadata 'input': patch_size must be a positive integer");
    goto done;
  }
  in->patch_size = (int)v;
  if (nic_json_get_num(o, "mpp", &d) != 0 || d < 0) {
    s = bad(r, "metadata 'input': mpp must be a number >= 0");
    goto done;
  }
  in->mpp = d;
  const char *arrs[2] = {"mean", "std"};
  float *dst[2] = {in->mean, in->std};
  for (int a = 0; a < 2; a++) {
    json_object *arr = NULL;
    size_t n = 0;
    if (json_object_object_get_ex(o, arrs[a], &arr) && json_object_is_type(arr, json_type_array))
      n = json_object_array_length(arr);
    if (n < 1 || n > 4) {
      s = bad(r, "metadata 'input': %s must be an array of 1 to 4 numbers", arrs[a]);
      goto done;
    }
    for (size_t i = 0; i < n; i++) {
      json_object *x = json_object_array_get_idx(arr, i);
      d = json_object_get_double(x);
      if ((!json_object_is_type(x, json_type_double) && !json_object_is_type(x, json_type_int)) ||
          !(d > -1e30 && d < 1e30) || (a == 1 && !(d > 0))) {
        s = bad(r, "metadata 'input': %s[%zu] is not a valid number%s", arrs[a], i,
                a == 1 ? " > 0" : "");
        goto done;
      }
      dst[a][i] = (float)d;
    }
  }
done:
  json_object_put(o);
  return s;
}

static nic_status apply_metadata(st_reader *r, nic_model *m) {
  const char *inf = nic_json_get_str(r->meta, "inference_only");
  if (inf && strcmp(inf, "true") && strcmp(inf, "false"))
    return bad(r, "metadata 'inference_only' must be \"true\" or \"false\", not '%s'", inf);
  m->inference_only = inf && !strcmp(inf, "true");
  if (m->inference_only) /* as nic_model_optimize_inference leaves it: nothing to train */
    for (int i = 0; i < m->nparams; i++) {
      m->params[i]->trainable = 0;
      nic_tensor_free(&m->params[i]->grad);
    }
  const char *input = nic_json_get_str(r->meta, "input");
  if (!input) return bad(r, "metadata has no 'input' description");
  nic_status s = parse_input(r, input, m);
  if (s != NIC_OK) return s;
  json_object_object_foreach(r->meta, key, val) {
    if (is_reserved(key)) continue;
    const char *text = json_object_get_string(val); /* a string: checked in read_header */
    /* Values are JSON texts; one written by another tool as a bare string
     * (say "first run") is kept as the JSON string "\"first run\"". */
    char msg[64];
    json_object *p = nic_json_parse(text, strlen(text), msg, sizeof msg);
    int valid = p != NULL || !strcmp(msg, "the document is null");
    json_object_put(p);
    if (valid) {
      nic_model_set_meta(m, key, text);
    } else {
      char *q = nic_json_quote(text);
      if (!q) return nic_err(r->err, NIC_ENOMEM, "%s: out of memory", r->path);
      nic_model_set_meta(m, key, q);
      free(q);
    }
    if (!nic_model_get_meta(m, key))
      return nic_err(r->err, NIC_ENOMEM, "%s: out of memory for metadata", r->path);
  }
  return NIC_OK;
}

/* ---- tensor data ----------------------------------------------------------- */

/* Reads tensor t's n values into dst as float32, whatever its dtype. */
static nic_status read_values(st_reader *r, const st_tensor *t, float *dst, size_t n) {
  size_t bytes = (size_t)(t->end - t->begin);
  if (n == 0) return NIC_OK;
  void *raw = t->dtype == DT_F32 ? (void *)dst : malloc(bytes);
  if (!raw) return nic_err(r->err, NIC_ENOMEM, "%s: out of memory", r->path);
  int ok = fseeko(r->f, (off_t)(r->data_start + t->begin), SEEK_SET) == 0 &&
           fread(raw, 1, bytes, r->f) == bytes;
  if (ok && !host_is_little_endian()) swap_bytes(raw, n, t->dtype == DT_F32 ? 4 : 2);
  if (ok && t->dtype == DT_F16) nic_f16_to_f32_array(raw, dst, n);
  if (ok && t->dtype == DT_BF16)
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(((const uint16_t *)raw)[i]);
  if (raw != dst) free(raw);
  if (!ok)
    return nic_err(r->err, NIC_EIO, "%s: cannot read tensor '%s' (file changed?)", r->path,
                   t->name);
  return NIC_OK;
}

/* Reads a tensor that is not a model param into r->extra (a scalar
 * becomes shape [1]). */
static nic_status read_extra(st_reader *r, st_tensor *t) {
  nic_param *p = &r->extra[r->nextra];
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", t->name); /* fits: checked by parse_entry */
  int64_t one = 1;
  nic_error e2 = {0};
  if (nic_tensor_alloc(&p->value, t->ndim ? t->ndim : 1, t->ndim ? t->shape : &one, &e2) != NIC_OK)
    return nic_err(r->err, e2.code, "%s: tensor '%s': %s", r->path, t->name, e2.msg);
  r->nextra++;
  t->used = 1;
  return read_values(r, t, p->value.data, (size_t)nic_tensor_numel(&p->value));
}

static nic_status read_params(st_reader *r, nic_model *m) {
  for (int i = 0; i < m->nparams; i++) {
    nic_param *p = m->params[i];
    st_tensor *t = find_tensor(r, p->name);
    nic_status s = t ? check_tensor(r, p->name, p->value.ndim, p->value.shape)
                     : bad(r, "tensor '%s' is missing", p->name);
    if (s != NIC_OK) return s;
    if (t->used) return bad(r, "tensor '%s' is claimed twice", p->name); /* cannot happen */
    t->used = 1;
    if ((s = read_values(r, t, p->value.data, (size_t)nic_tensor_numel(&p->value))) != NIC_OK)
      return s;
  }
  size_t plen = r->extra_prefix ? strlen(r->extra_prefix) : 0;
  for (int i = 0; i < r->nt; i++) {
    if (r->t[i].used) continue;
    if (plen == 0 || strncmp(r->t[i].name, r->extra_prefix, plen) != 0)
      return bad(r, "unexpected tensor '%s' (not part of the architecture)", r->t[i].name);
    if (!r->extra) {
      r->extra = calloc((size_t)r->nt, sizeof *r->extra);
      if (!r->extra) return nic_err(r->err, NIC_ENOMEM, "%s: out of memory", r->path);
    }
    nic_status s = read_extra(r, &r->t[i]);
    if (s != NIC_OK) return s;
  }
  return NIC_OK;
}

void nic_params_free(nic_param *p, int n) {
  if (!p) return;
  for (int i = 0; i < n; i++) {
    nic_tensor_free(&p[i].value);
    nic_tensor_free(&p[i].grad);
  }
  free(p);
}

nic_status nic_model_load(nic_model **out, const char *path, nic_error *err) {
  return nic_model_load_extra(out, path, NULL, NULL, NULL, err);
}

nic_status nic_model_load_extra(nic_model **out, const char *path, const char *extra_prefix,
                                nic_param **extra, int *nextra, nic_error *err) {
  *out = NULL;
  if (extra) *extra = NULL;
  if (nextra) *nextra = 0;
  if ((extra_prefix && *extra_prefix) != (extra != NULL && nextra != NULL))
    return nic_err(err, NIC_EINVAL, "loading %s: extra tensors need a prefix and both outputs",
                   path);
  st_reader r;
  memset(&r, 0, sizeof r);
  r.path = path;
  r.err = err;
  r.extra_prefix = extra_prefix && *extra_prefix ? extra_prefix : NULL;
  r.f = fopen(path, "rb");
  if (!r.f) return nic_err(err, NIC_EIO, "cannot open %s: %s", path, strerror(errno));
  nic_model *m = NULL;
  nic_status s = read_header(&r);
  if (s != NIC_OK) goto done;
  if (!r.meta) {
    s = bad(&r, "no __metadata__ (not a nic model file)");
    goto done;
  }
  const char *fmt = nic_json_get_str(r.meta, "format");
  if (!fmt || strcmp(fmt, "nic")) {
    s = bad(&r, "metadata 'format' is '%s', not 'nic' (not a nic model file)",
            fmt ? fmt : "(missing)");
    goto done;
  }
  const char *arch_text = nic_json_get_str(r.meta, "architecture");
  if (!arch_text) {
    s = bad(&r, "metadata has no 'architecture'");
    goto done;
  }
  char msg[256];
  json_object *arch = nic_json_parse(arch_text, strlen(arch_text), msg, sizeof msg);
  if (!arch) {
    s = bad(&r, "metadata 'architecture' is not valid JSON: %s", msg);
    goto done;
  }
  s = build_model(&r, arch, &m);
  json_object_put(arch);
  if (s == NIC_OK) s = apply_metadata(&r, m);
  if (s == NIC_OK) s = read_params(&r, m);
done:
  if (s == NIC_OK) {
    *out = m;
    if (extra) {
      *extra = r.extra;
      *nextra = r.nextra;
    }
  } else {
    nic_model_free(m);
    nic_params_free(r.extra, r.nextra);
  }
  json_object_put(r.root);
  free(r.t);
  fclose(r.f);
  return s;
}
