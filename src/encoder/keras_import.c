/* Importing the published NIC encoders from Keras 2 HDF5 files.
 *
 * A Keras file keeps the model description as JSON in the root attribute
 * "model_config" and the weights under model_weights/<top-level layer>/,
 * where the top-level layer's attribute "weight_names" lists its datasets
 * ("conv2d_1/kernel:0"). The two published encoders differ in naming and
 * nesting: encoder_multitask-4.h5 is a flat functional model (weights at
 * model_weights/conv2d_1/conv2d_1/kernel:0), encoder_bigan.h5 wraps the
 * same layers in a nested Sequential (model_weights/sequential_3/
 * conv2d_10/kernel:0). So nothing here is looked up by a hard-coded name:
 * the layers are found by walking model_config in order and by class, and
 * the datasets through weight_names.
 *
 * The architecture in the file is verified against the NIC encoder:
 * input 64x64x3 (the 128 px patch after its 2x2 average pool), 4 x
 * [Conv2D 128 3x3 stride 2 'valid' + bias, LeakyReLU(0.2),
 * BatchNormalization], Flatten, Dense (1152 -> units, linear). */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/json_util.h"
#include "nic/encoder.h"
#include "nn/layer.h"

/* One leaf layer of the Keras model, in order. */
typedef struct kr_layer {
  const char *cls;       /* class_name */
  const char *name;      /* the layer's own name */
  const char *container; /* top-level layer holding its weights (itself when not nested) */
  json_object *cfg;      /* its "config" */
} kr_layer;

typedef struct kr_import {
  const char *path;
  hid_t file;
  hid_t weights; /* the model_weights group (or the root of a weights-only file) */
  kr_layer *layers;
  int nlayers, cap;
  nic_error *err;
} kr_import;

static nic_status fail(kr_import *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static nic_status fail(kr_import *k, const char *fmt, ...) {
  char msg[NIC_ERRMSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return nic_err(k->err, NIC_EFORMAT, "%s: %s", k->path, msg);
}

/* ---- HDF5 helpers ------------------------------------------------------------ */

/* A scalar string attribute (fixed or variable length), malloc'd; NULL when
 * absent or not a string. */
static char *read_str_attr(hid_t obj, const char *name) {
  if (H5Aexists(obj, name) <= 0) return NULL;
  char *out = NULL;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  hid_t ft = a >= 0 ? H5Aget_type(a) : -1;
  hid_t sp = a >= 0 ? H5Aget_space(a) : -1;
  hid_t mt = -1;
  if (ft < 0 || sp < 0 || H5Tget_class(ft) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1)
    goto done;
  mt = H5Tcopy(H5T_C_S1);
  if (H5Tis_variable_str(ft) > 0) {
    char *p = NULL;
    if (H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Aread(a, mt, &p) < 0 || !p) goto done;
    out = strdup(p);
    H5free_memory(p);
  } else {
    size_t sz = H5Tget_size(ft);
    if (sz == 0 || sz > ((size_t)1 << 30) || H5Tset_size(mt, sz) < 0) goto done;
    out = calloc(1, sz + 1);
    if (out && H5Aread(a, mt, out) < 0) {
      free(out);
      out = NULL;
    }
  }
done:
  if (mt >= 0) H5Tclose(mt);
  if (sp >= 0) H5Sclose(sp);
  if (ft >= 0) H5Tclose(ft);
  if (a >= 0) H5Aclose(a);
  return out;
}

/* A 1-D string-array attribute such as weight_names: *n strings, each
 * malloc'd, in a malloc'd array. An absent or empty (Keras writes an empty
 * float array) attribute gives *n = 0. Returns -1 on a read error. */
static int read_str_list_attr(hid_t obj, const char *name, char ***list, int *n) {
  *list = NULL;
  *n = 0;
  if (H5Aexists(obj, name) <= 0) return 0;
  int rc = -1;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  hid_t ft = a >= 0 ? H5Aget_type(a) : -1;
  hid_t sp = a >= 0 ? H5Aget_space(a) : -1;
  hid_t mt = -1;
  if (ft < 0 || sp < 0) goto done;
  hssize_t cnt = H5Sget_simple_extent_npoints(sp);
  if (cnt == 0) { /* an empty list, whatever its type */
    rc = 0;
    goto done;
  }
  if (cnt < 0 || cnt > 100000 || H5Tget_class(ft) != H5T_STRING) goto done;
  char **v = calloc((size_t)cnt, sizeof *v);
  if (!v) goto done;
  mt = H5Tcopy(H5T_C_S1);
  int ok = 1;
  if (H5Tis_variable_str(ft) > 0) {
    char **raw = calloc((size_t)cnt, sizeof *raw);
    ok = raw && H5Tset_size(mt, H5T_VARIABLE) >= 0 && H5Aread(a, mt, raw) >= 0;
    for (hssize_t i = 0; raw && i < cnt; i++) {
      if (ok) ok = (v[i] = strdup(raw[i] ? raw[i] : "")) != NULL;
      H5free_memory(raw[i]);
    }
    free(raw);
  } else {
    size_t sz = H5Tget_size(ft);
    char *buf = sz && sz < 65536 ? calloc((size_t)cnt, sz) : NULL;
    ok = buf && H5Tset_size(mt, sz) >= 0 && H5Aread(a, mt, buf) >= 0;
    for (hssize_t i = 0; ok && i < cnt; i++) {
      /* fixed-length strings are NUL-padded but need not be terminated */
      v[i] = calloc(1, sz + 1);
      if (!(ok = v[i] != NULL)) break;
      memcpy(v[i], buf + (size_t)i * sz, sz);
    }
    free(buf);
  }
  if (!ok) {
    for (hssize_t i = 0; i < cnt; i++) free(v[i]);
    free(v);
    goto done;
  }
  *list = v;
  *n = (int)cnt;
  rc = 0;
done:
  if (mt >= 0) H5Tclose(mt);
  if (sp >= 0) H5Sclose(sp);
  if (ft >= 0) H5Tclose(ft);
  if (a >= 0) H5Aclose(a);
  return rc;
}

static void free_list(char **v, int n) {
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* Reads the float dataset holding weight `what` ("kernel", "gamma", ...)
 * of leaf layer l, checking that its shape is exactly dims[0..nd). Returns
 * a malloc'd array. */
static nic_status read_weight(kr_import *k, const kr_layer *l, const char *what, int nd,
                              const hsize_t *dims, float **out) {
  *out = NULL;
  char path[512], want[256];
  snprintf(want, sizeof want, "%s/%s:0", l->name, what);
  /* The dataset path relative to the container group: from weight_names
   * when the file has it (the name may carry a scope prefix), else the
   * conventional <layer>/<weight>:0. */
  snprintf(path, sizeof path, "%s/%s", l->container, want);
  hid_t g = H5Gopen2(k->weights, l->container, H5P_DEFAULT);
  if (g < 0) return fail(k, "no weight group '%s' for layer '%s'", l->container, l->name);
  char **names;
  int nn;
  if (read_str_list_attr(g, "weight_names", &names, &nn) == 0) {
    size_t wl = strlen(want);
    for (int i = 0; i < nn; i++) {
      size_t sl = strlen(names[i]);
      if (!strcmp(names[i], want) ||
          (sl > wl && names[i][sl - wl - 1] == '/' && !strcmp(names[i] + sl - wl, want))) {
        snprintf(path, sizeof path, "%s/%s", l->container, names[i]);
        break;
      }
    }
    free_list(names, nn);
  }
  H5Gclose(g);

  nic_status s = NIC_OK;
  hid_t ds = H5Dopen2(k->weights, path, H5P_DEFAULT);
  if (ds < 0) return fail(k, "layer '%s' has no weight '%s' (dataset %s)", l->name, what, path);
  hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds);
  hsize_t got[8] = {0};
  int gnd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
  if (ty < 0 || H5Tget_class(ty) != H5T_FLOAT) {
    s = fail(k, "weight %s is not floating point", path);
    goto done;
  }
  if (gnd < 0 || gnd > 8 || H5Sget_simple_extent_dims(sp, got, NULL) < 0) {
    s = fail(k, "cannot read the shape of %s", path);
    goto done;
  }
  int same = gnd == nd;
  for (int d = 0; same && d < nd; d++) same = got[d] == dims[d];
  if (!same) {
    char a[96] = "", b[96] = "";
    for (int d = 0; d < gnd; d++)
      snprintf(a + strlen(a), sizeof a - strlen(a), "%s%llu", d ? "x" : "",
               (unsigned long long)got[d]);
    for (int d = 0; d < nd; d++)
      snprintf(b + strlen(b), sizeof b - strlen(b), "%s%llu", d ? "x" : "",
               (unsigned long long)dims[d]);
    s = fail(k, "weight %s has shape %s, the NIC encoder needs %s", path, a, b);
    goto done;
  }
  size_t n = 1;
  for (int d = 0; d < nd; d++) n *= (size_t)dims[d];
  float *buf = malloc(n * sizeof *buf);
  if (!buf) {
    s = nic_err(k->err, NIC_ENOMEM, "%s: out of memory", k->path);
    goto done;
  }
  /* HDF5 converts from the stored type (float16/64, either byte order). */
  if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
    free(buf);
    s = fail(k, "cannot read %s", path);
    goto done;
  }
  for (size_t i = 0; i < n; i++)
    if (!isfinite(buf[i])) {
      free(buf);
      s = fail(k, "weight %s contains non-finite values", path);
      goto done;
    }
  *out = buf;
done:
  if (ty >= 0) H5Tclose(ty);
  if (sp >= 0) H5Sclose(sp);
  H5Dclose(ds);
  return s;
}

/* ---- the model config ------------------------------------------------------- */

static nic_status add_layer(kr_import *k, const char *cls, const char *name, const char *container,
                            json_object *cfg) {
  if (k->nlayers == k->cap) {
    int cap = k->cap ? 2 * k->cap : 32;
    kr_layer *p = realloc(k->layers, sizeof *p * (size_t)cap);
    if (!p) return nic_err(k->err, NIC_ENOMEM, "%s: out of memory", k->path);
    k->layers = p;
    k->cap = cap;
  }
  k->layers[k->nlayers++] = (kr_layer){cls, name, container, cfg};
  return NIC_OK;
}

/* Appends the leaf layers of a model config ({"class_name", "config"}) in
 * order. Nested models (Sequential/Model layers) are flattened; their
 * leaves keep the top-level layer's name as container, which is where
 * Keras stores their weights. */
static nic_status walk_model(kr_import *k, json_object *model, const char *container, int depth) {
  if (depth > 8) return fail(k, "model_config nests models too deeply");
  json_object *cfg = NULL, *list = NULL;
  if (!json_object_object_get_ex(model, "config", &cfg))
    return fail(k, "model_config: a model has no 'config'");
  /* Keras 2.0 writes a Sequential's config as the bare layer list; later
   * versions and functional models as {"layers": [...]}. */
  if (json_object_is_type(cfg, json_type_array))
    list = cfg;
  else if (!json_object_object_get_ex(cfg, "layers", &list) ||
           !json_object_is_type(list, json_type_array))
    return fail(k, "model_config: a model has no layer list");
  size_t n = json_object_array_length(list);
  for (size_t i = 0; i < n; i++) {
    json_object *e = json_object_array_get_idx(list, i), *lc = NULL;
    const char *cls = nic_json_get_str(e, "class_name");
    if (!cls || !json_object_object_get_ex(e, "config", &lc))
      return fail(k, "model_config: layer %zu has no class_name or config", i);
    const char *name = nic_json_get_str(e, "name");
    if (!name) name = nic_json_get_str(lc, "name");
    if (!name || strlen(name) > 200) return fail(k, "model_config: layer %zu has no valid name", i);
    nic_status s;
    if (!strcmp(cls, "Sequential") || !strcmp(cls, "Model") || !strcmp(cls, "Functional"))
      s = walk_model(k, e, container ? container : name, depth + 1);
    else
      s = add_layer(k, cls, name, container ? container : name, lc);
    if (s != NIC_OK) return s;
  }
  return NIC_OK;
}

/* Checks member `key` of a layer config against an expected JSON value
 * (given as text), comparing the parsed forms. */
static int cfg_is(json_object *cfg, const char *key, const char *want_json) {
  json_object *v = NULL;
  if (!json_object_object_get_ex(cfg, key, &v)) return 0;
  const char *got = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
  return got && !strcmp(got, want_json);
}

static nic_status check_input_shape(kr_import *k, json_object *cfg) {
  json_object *shape = NULL;
  if (!json_object_object_get_ex(cfg, "batch_input_shape", &shape)) return NIC_OK;
  if (!cfg_is(cfg, "batch_input_shape", "[null,64,64,3]"))
    return fail(k,
                "the model input is %s, the NIC encoder takes [null, 64, 64, 3] "
                "(a 128 px patch pooled 2x)",
                json_object_to_json_string_ext(shape, JSON_C_TO_STRING_PLAIN));
  return NIC_OK;
}

/* Parameters taken from the Keras config. */
typedef struct kr_arch {
  const kr_layer *conv[4], *bn[4], *dense;
  float alpha[4], eps[4], momentum[4];
  int units;
} kr_arch;

static nic_status verify_arch(kr_import *k, kr_arch *a) {
  static const char *const seq[3] = {"Conv2D", "LeakyReLU", "BatchNormalization"};
  int pos = 0;
  /* Skip the input layer(s), checking their shape. */
  while (pos < k->nlayers && !strcmp(k->layers[pos].cls, "InputLayer")) {
    nic_status s = check_input_shape(k, k->layers[pos].cfg);
    if (s != NIC_OK) return s;
    pos++;
  }
  int expected = 3 * 4 + 2;
  if (k->nlayers - pos != expected)
    return fail(k,
                "expected the NIC encoder's %d layers (4 x Conv2D, LeakyReLU, "
                "BatchNormalization; Flatten; Dense), found %d",
                expected, k->nlayers - pos);
  for (int b = 0; b < 4; b++) {
    for (int j = 0; j < 3; j++) {
      const kr_layer *l = &k->layers[pos + 3 * b + j];
      if (strcmp(l->cls, seq[j]))
        return fail(k, "layer %d ('%s') is %s, the NIC encoder has %s there", pos + 3 * b + j,
                    l->name, l->cls, seq[j]);
    }
    const kr_layer *c = &k->layers[pos + 3 * b], *lr = c + 1, *bn = c + 2;
    nic_status s = check_input_shape(k, c->cfg);
    if (s != NIC_OK) return s;
    if (!cfg_is(c->cfg, "filters", "128") || !cfg_is(c->cfg, "kernel_size", "[3,3]") ||
        !cfg_is(c->cfg, "strides", "[2,2]") || !cfg_is(c->cfg, "padding", "\"valid\"") ||
        !cfg_is(c->cfg, "activation", "\"linear\"") || !cfg_is(c->cfg, "use_bias", "true") ||
        (json_object_object_get_ex(c->cfg, "data_format", NULL) &&
         !cfg_is(c->cfg, "data_format", "\"channels_last\"")) ||
        (json_object_object_get_ex(c->cfg, "dilation_rate", NULL) &&
         !cfg_is(c->cfg, "dilation_rate", "[1,1]")))
      return fail(k,
                  "Conv2D layer '%s' is not 128 filters 3x3 stride 2 'valid' with bias, "
                  "linear, channels_last",
                  c->name);
    double alpha;
    if (nic_json_get_num(lr->cfg, "alpha", &alpha) != 0 || fabs(alpha - 0.2) > 1e-6)
      return fail(k, "LeakyReLU layer '%s' does not have alpha 0.2", lr->name);
    double eps, mom = 0.99;
    json_object *axis = NULL;
    if (nic_json_get_num(bn->cfg, "epsilon", &eps) != 0 || !(eps > 0 && eps < 1))
      return fail(k, "BatchNormalization layer '%s' has no valid epsilon", bn->name);
    if (json_object_object_get_ex(bn->cfg, "momentum", NULL) &&
        (nic_json_get_num(bn->cfg, "momentum", &mom) != 0 || mom < 0 || mom > 1))
      return fail(k, "BatchNormalization layer '%s' has an invalid momentum", bn->name);
    if ((json_object_object_get_ex(bn->cfg, "axis", &axis) && !cfg_is(bn->cfg, "axis", "-1") &&
         !cfg_is(bn->cfg, "axis", "3") && !cfg_is(bn->cfg, "axis", "[3]")) ||
        !cfg_is(bn->cfg, "center", "true") || !cfg_is(bn->cfg, "scale", "true"))
      return fail(k,
                  "BatchNormalization layer '%s' must normalise the channel axis with "
                  "center and scale",
                  bn->name);
    a->conv[b] = c;
    a->bn[b] = bn;
    a->alpha[b] = (float)alpha;
    a->eps[b] = (float)eps;
    a->momentum[b] = (float)mom;
  }
  const kr_layer *fl = &k->layers[pos + 12], *d = &k->layers[pos + 13];
  if (strcmp(fl->cls, "Flatten") || (json_object_object_get_ex(fl->cfg, "data_format", NULL) &&
                                     !cfg_is(fl->cfg, "data_format", "\"channels_last\"")))
    return fail(k, "layer '%s' is %s, the NIC encoder has a channels_last Flatten there", fl->name,
                fl->cls);
  int64_t units;
  if (strcmp(d->cls, "Dense") || nic_json_get_int(d->cfg, "units", 1, 1 << 20, &units) != 0 ||
      !cfg_is(d->cfg, "activation", "\"linear\"") || !cfg_is(d->cfg, "use_bias", "true"))
    return fail(k, "layer '%s' (%s) is not the linear Dense embedding layer with bias", d->name,
                d->cls);
  a->dense = d;
  a->units = (int)units;
  return NIC_OK;
}

/* ---- weights ------------------------------------------------------------------ */

static nic_status copy_to(kr_import *k, nic_model *m, const char *param, const float *src,
                          size_t n) {
  nic_param *p = nic_model_param(m, param);
  if (!p || (size_t)nic_tensor_numel(&p->value) != n)
    return nic_err(k->err, NIC_EINVAL, "%s: internal error: param %s", k->path, param);
  memcpy(p->value.data, src, n * sizeof *src);
  return NIC_OK;
}

static nic_status load_weights(kr_import *k, const kr_arch *a, nic_model *m) {
  nic_status s = NIC_OK;
  float *w = NULL, *t = NULL;
  char pn[96];
  for (int b = 0; b < 4 && s == NIC_OK; b++) {
    /* Conv kernel: Keras [kh, kw, in, out] -> ours [out, in, kh, kw]. */
    hsize_t cin = b == 0 ? 3 : 128, kd[4] = {3, 3, cin, 128}, vd[1] = {128};
    if ((s = read_weight(k, a->conv[b], "kernel", 4, kd, &w)) != NIC_OK) break;
    t = malloc(sizeof *t * 9 * cin * 128);
    if (!t) {
      s = nic_err(k->err, NIC_ENOMEM, "%s: out of memory", k->path);
      break;
    }
    for (size_t o = 0; o < 128; o++)
      for (size_t i = 0; i < cin; i++)
        for (size_t y = 0; y < 3; y++)
          for (size_t x = 0; x < 3; x++)
            t[((o * cin + i) * 3 + y) * 3 + x] = w[((y * 3 + x) * cin + i) * 128 + o];
    snprintf(pn, sizeof pn, "conv%d.weight", b + 1);
    s = copy_to(k, m, pn, t, 9 * cin * 128);
    free(w);
    free(t);
    w = t = NULL;
    if (s != NIC_OK) break;
    if ((s = read_weight(k, a->conv[b], "bias", 1, vd, &w)) != NIC_OK) break;
    snprintf(pn, sizeof pn, "conv%d.bias", b + 1);
    s = copy_to(k, m, pn, w, 128);
    free(w);
    w = NULL;
    /* Batch norm: same vectors, our names. */
    static const char *const kn[4] = {"gamma", "beta", "moving_mean", "moving_variance"};
    static const char *const on[4] = {"gamma", "beta", "running_mean", "running_var"};
    for (int j = 0; j < 4 && s == NIC_OK; j++) {
      if ((s = read_weight(k, a->bn[b], kn[j], 1, vd, &w)) != NIC_OK) break;
      if (j == 3)
        for (int i = 0; i < 128; i++)
          if (w[i] < 0) s = fail(k, "layer '%s' has a negative moving variance", a->bn[b]->name);
      snprintf(pn, sizeof pn, "bn%d.%s", b + 1, on[j]);
      if (s == NIC_OK) s = copy_to(k, m, pn, w, 128);
      free(w);
      w = NULL;
    }
  }
  if (s != NIC_OK) return s;
  /* Dense kernel: Keras [in, out] -> ours [out, in]. Keras flattened the
   * 3x3x128 NHWC map as (h, w, c), and our flatten layer uses the same
   * NHWC order, so the transpose is the only change. */
  size_t U = (size_t)a->units, F = 1152;
  hsize_t dd[2] = {F, U}, bd[1] = {U};
  if ((s = read_weight(k, a->dense, "kernel", 2, dd, &w)) != NIC_OK) return s;
  t = malloc(sizeof *t * F * U);
  if (!t) {
    free(w);
    return nic_err(k->err, NIC_ENOMEM, "%s: out of memory", k->path);
  }
  for (size_t o = 0; o < U; o++)
    for (size_t i = 0; i < F; i++) t[o * F + i] = w[i * U + o];
  s = copy_to(k, m, "embedding.weight", t, F * U);
  free(w);
  free(t);
  if (s != NIC_OK) return s;
  if ((s = read_weight(k, a->dense, "bias", 1, bd, &w)) != NIC_OK) return s;
  s = copy_to(k, m, "embedding.bias", w, U);
  free(w);
  return s;
}

/* "encoder_multitask-4.h5" -> "nic-multitask-4". */
static void derive_name(const char *path, char *out, size_t n) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  char stem[200];
  snprintf(stem, sizeof stem, "%s", base);
  char *dot = strrchr(stem, '.');
  if (dot && (!strcmp(dot, ".h5") || !strcmp(dot, ".hdf5") || !strcmp(dot, ".keras"))) *dot = '\0';
  const char *s = stem;
  if (!strncmp(s, "encoder_", 8) && s[8]) s += 8;
  snprintf(out, n, "nic-%s", s);
}

static void set_meta_string(nic_model *m, const char *key, const char *value) {
  char *q = nic_json_quote(value);
  if (q) nic_model_set_meta(m, key, q);
  free(q);
}

static nic_status import(kr_import *k, nic_model **out) {
  struct stat st;
  if (stat(k->path, &st) != 0)
    return nic_err(k->err, NIC_EIO, "cannot open %s: %s", k->path, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return nic_err(k->err, NIC_EIO, "cannot open %s: not a regular file", k->path);
  if (H5Fis_hdf5(k->path) <= 0) return fail(k, "not an HDF5 file");
  k->file = H5Fopen(k->path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (k->file < 0) return nic_err(k->err, NIC_EIO, "%s: cannot open the HDF5 file", k->path);
  char *cfg_text = read_str_attr(k->file, "model_config");
  if (!cfg_text) return fail(k, "no 'model_config' attribute (not a Keras model file?)");
  char msg[256];
  json_object *cfg = nic_json_parse(cfg_text, strlen(cfg_text), msg, sizeof msg);
  free(cfg_text);
  if (!cfg) return fail(k, "model_config is not valid JSON: %s", msg);
  nic_model *m = NULL;
  kr_arch arch;
  memset(&arch, 0, sizeof arch);
  nic_status s = walk_model(k, cfg, NULL, 0);
  if (s == NIC_OK) s = verify_arch(k, &arch);
  if (s != NIC_OK) goto done;
  /* Weights of a full model file are under model_weights; a file written
   * by save_weights keeps them at the root. */
  k->weights = H5Lexists(k->file, "model_weights", H5P_DEFAULT) > 0
                   ? H5Gopen2(k->file, "model_weights", H5P_DEFAULT)
                   : H5Gopen2(k->file, "/", H5P_DEFAULT);
  if (k->weights < 0) {
    s = fail(k, "cannot open the weights group");
    goto done;
  }
  if ((s = nic_encoder_build_nic(&m, arch.units, k->err)) != NIC_OK) goto done;
  /* Take the epsilon, momentum and slope of the file rather than the
   * builder's defaults (the published files train BN with momentum 0.8). */
  for (int b = 0; b < 4; b++) {
    char cn[16], bn[16];
    snprintf(cn, sizeof cn, "conv%d", b + 1);
    snprintf(bn, sizeof bn, "bn%d", b + 1);
    for (int j = 1; j <= m->nnodes; j++) {
      nic_layer *l = m->layers[j - 1];
      if (!strcmp(l->name, cn)) l->spec.alpha = arch.alpha[b];
      if (!strcmp(l->name, bn)) {
        l->spec.eps = arch.eps[b];
        l->spec.momentum = arch.momentum[b];
      }
    }
  }
  if ((s = load_weights(k, &arch, m)) != NIC_OK) goto done;

  const char *base = strrchr(k->path, '/');
  char name[256];
  derive_name(k->path, name, sizeof name);
  set_meta_string(m, "source", base ? base + 1 : k->path);
  set_meta_string(m, "imported_from", "keras");
  set_meta_string(m, "encoder_name", name);
  char *kv = read_str_attr(k->file, "keras_version");
  if (kv) set_meta_string(m, "keras_version", kv);
  free(kv);
done:
  json_object_put(cfg);
  if (s != NIC_OK) {
    nic_model_free(m);
    m = NULL;
  }
  *out = m;
  return s;
}

nic_status nic_encoder_import_keras(nic_model **out, const char *h5_path, nic_error *err) {
  *out = NULL;
  kr_import k;
  memset(&k, 0, sizeof k);
  k.path = h5_path;
  k.err = err;
  k.file = k.weights = -1;
  /* The HDF5 library prints its error stack to stderr by default; failures
   * here are reported through err instead. Saved and restored around the
   * call, as H5E_BEGIN_TRY does. */
  H5E_auto2_t efunc = NULL;
  void *edata = NULL;
  H5Eget_auto2(H5E_DEFAULT, &efunc, &edata);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  nic_status s = import(&k, out);
  if (k.weights >= 0) H5Gclose(k.weights);
  if (k.file >= 0) H5Fclose(k.file);
  H5Eset_auto2(H5E_DEFAULT, efunc, edata);
  free(k.layers);
  return s;
}
