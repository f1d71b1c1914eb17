/* The dataset object shared by every layout: items, labels, splits,
 * accessors, the stratified split helper and opening by layout. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_internal.h"

nic_dataset_opts nic_dataset_default_opts(void) {
  nic_dataset_opts o;
  memset(&o, 0, sizeof o);
  o.labels = NIC_LABEL_AUTO;
  return o;
}

/* ---- building ---------------------------------------------------------------- */

nic_dataset *ds_new(const char *format, const char *source) {
  nic_dataset *ds = calloc(1, sizeof *ds);
  if (!ds) return NULL;
  ds->format = format;
  ds->kind = NIC_LABEL_CLASS;
  ds->source = strdup(source ? source : "");
  if (!ds->source) {
    free(ds);
    return NULL;
  }
  return ds;
}

/* Grows the per-item arrays to hold at least `need` items. */
static int grow_items(nic_dataset *ds, int64_t need, int files) {
  if (need <= ds->cap) return 0;
  int64_t cap = ds->cap ? ds->cap : 256;
  while (cap < need) cap *= 2;
  int *label = realloc(ds->label, sizeof(int) * (size_t)cap);
  if (label) ds->label = label;
  float *value = realloc(ds->value, sizeof(float) * (size_t)cap);
  if (value) ds->value = value;
  uint8_t *split = realloc(ds->split, (size_t)cap);
  if (split) ds->split = split;
  if (!label || !value || !split) return -1;
  if (files) {
    size_t *po = realloc(ds->path_off, sizeof(size_t) * (size_t)cap);
    if (po) ds->path_off = po;
    size_t *lo = realloc(ds->label_off, sizeof(size_t) * (size_t)cap);
    if (lo) ds->label_off = lo;
    if (!po || !lo) return -1;
  }
  ds->cap = cap;
  return 0;
}

/* Copies s (with its terminator) into the pool; returns its offset. */
static size_t pool_add(nic_dataset *ds, const char *s) {
  size_t len = strlen(s) + 1;
  if (ds->pool_len + len > ds->pool_cap) {
    size_t cap = ds->pool_cap ? ds->pool_cap : 4096;
    while (cap < ds->pool_len + len) cap *= 2;
    char *p = realloc(ds->pool, cap);
    if (!p) return SIZE_MAX;
    ds->pool = p;
    ds->pool_cap = cap;
  }
  size_t off = ds->pool_len;
  memcpy(ds->pool + off, s, len);
  ds->pool_len += len;
  return off;
}

nic_status ds_add_file(nic_dataset *ds, const char *path, const char *label, nic_split split,
                       nic_error *err) {
  if (grow_items(ds, ds->n + 1, 1))
    return nic_err(err, NIC_ENOMEM, "%s: out of memory for the item list", ds->source);
  size_t po = pool_add(ds, path);
  size_t lo = label && *label ? pool_add(ds, label) : SIZE_MAX;
  if (po == SIZE_MAX || (label && *label && lo == SIZE_MAX))
    return nic_err(err, NIC_ENOMEM, "%s: out of memory for the item list", ds->source);
  int64_t i = ds->n++;
  ds->path_off[i] = po;
  ds->label_off[i] = lo;
  ds->label[i] = -1;
  ds->value[i] = NAN;
  ds->split[i] = (uint8_t)split;
  return NIC_OK;
}

nic_status ds_alloc_items(nic_dataset *ds, int64_t n, nic_error *err) {
  if (n < 0 || grow_items(ds, n > 0 ? n : 1, 0))
    return nic_err(err, NIC_ENOMEM, "%s: out of memory for %lld items", ds->source, (long long)n);
  for (int64_t i = 0; i < n; i++) {
    ds->label[i] = -1;
    ds->value[i] = NAN;
    ds->split[i] = NIC_SPLIT_NONE;
  }
  ds->n = n;
  return NIC_OK;
}

nic_status ds_set_numeric_classes(nic_dataset *ds, int nclasses, nic_error *err) {
  ds->classes = calloc((size_t)(nclasses > 0 ? nclasses : 1), sizeof(char *));
  if (!ds->classes) return nic_err(err, NIC_ENOMEM, "%s: out of memory", ds->source);
  ds->nclasses = nclasses;
  for (int c = 0; c < nclasses; c++) {
    char buf[16];
    snprintf(buf, sizeof buf, "%d", c);
    if (!(ds->classes[c] = strdup(buf)))
      return nic_err(err, NIC_ENOMEM, "%s: out of memory", ds->source);
  }
  ds->kind = NIC_LABEL_CLASS;
  return NIC_OK;
}

/* An optional sign and digits only. */
static int is_integer(const char *s) {
  if (*s == '-' || *s == '+') s++;
  if (!*s) return 0;
  for (; *s; s++)
    if (!isdigit((unsigned char)*s)) return 0;
  return 1;
}

/* A complete, finite number. */
static int parse_number(const char *s, double *v) {
  char *end;
  errno = 0;
  *v = strtod(s, &end);
  return end != s && *end == '\0' && errno == 0 && isfinite(*v);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_int_str(const void *a, const void *b) {
  long long x = strtoll(*(char *const *)a, NULL, 10), y = strtoll(*(char *const *)b, NULL, 10);
  return (x > y) - (x < y);
}

/* Index of `name` in the sorted class list (binary search), or -1. */
static int find_class(const nic_dataset *ds, const char *name, int numeric) {
  int lo = 0, hi = ds->nclasses - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    const char *m = ds->classes[mid];
    int c = numeric ? cmp_int_str(&name, &m) : strcmp(name, m);
    if (c == 0) return mid;
    if (c < 0)
      hi = mid - 1;
    else
      lo = mid + 1;
  }
  return -1;
}

/* Collects the distinct label strings as sorted class names (numerically
 * when all are integers, so "2" < "10"). */
static nic_status build_classes(nic_dataset *ds, int *numeric, nic_error *err) {
  char **names = malloc(sizeof(char *) * (size_t)(ds->n > 0 ? ds->n : 1));
  if (!names) return nic_err(err, NIC_ENOMEM, "%s: out of memory", ds->source);
  int64_t k = 0;
  *numeric = 1;
  for (int64_t i = 0; i < ds->n; i++) {
    if (ds->label_off[i] == SIZE_MAX) continue;
    names[k] = ds->pool + ds->label_off[i];
    if (!is_integer(names[k])) *numeric = 0;
    k++;
  }
  qsort(names, (size_t)k, sizeof(char *), *numeric ? cmp_int_str : cmp_str);
  /* Unique, in place. Integers equal in value ("01", "1") are one class. */
  int64_t u = 0;
  for (int64_t i = 0; i < k; i++)
    if (u == 0 ||
        (*numeric ? cmp_int_str(&names[i], &names[u - 1]) : strcmp(names[i], names[u - 1])) != 0)
      names[u++] = names[i];
  if (u > 100000) {
    free(names);
    return nic_err(err, NIC_EFORMAT, "%s: %lld distinct class labels (too many; regression?)",
                   ds->source, (long long)u);
  }
  ds->classes = calloc((size_t)(u > 0 ? u : 1), sizeof(char *));
  if (!ds->classes) {
    free(names);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", ds->source);
  }
  ds->nclasses = (int)u;
  for (int64_t c = 0; c < u; c++)
    if (!(ds->classes[c] = strdup(names[c]))) {
      free(names);
      return nic_err(err, NIC_ENOMEM, "%s: out of memory", ds->source);
    }
  free(names);
  return NIC_OK;
}

nic_status ds_finish_labels(nic_dataset *ds, nic_label_kind kind, nic_error *err) {
  if (kind == NIC_LABEL_AUTO) {
    /* Regression only when every label is a number and one is not an
     * integer: integer labels (0/1 tumour, digit classes) are classes. */
    int all_numbers = 1, any_fraction = 0;
    for (int64_t i = 0; i < ds->n && all_numbers; i++) {
      if (ds->label_off[i] == SIZE_MAX) continue;
      const char *s = ds->pool + ds->label_off[i];
      double v;
      if (!parse_number(s, &v))
        all_numbers = 0;
      else if (!is_integer(s))
        any_fraction = 1;
    }
    kind = all_numbers && any_fraction ? NIC_LABEL_VALUE : NIC_LABEL_CLASS;
  }
  ds->kind = kind;
  if (kind == NIC_LABEL_VALUE) {
    for (int64_t i = 0; i < ds->n; i++) {
      if (ds->label_off[i] == SIZE_MAX) continue;
      double v;
      if (!parse_number(ds->pool + ds->label_off[i], &v))
        return nic_err(err, NIC_EFORMAT, "%s: label '%s' of %s is not a number", ds->source,
                       ds->pool + ds->label_off[i], ds->pool + ds->path_off[i]);
      ds->value[i] = (float)v;
    }
  } else {
    int numeric = 0;
    nic_status s = build_classes(ds, &numeric, err);
    if (s != NIC_OK) return s;
    for (int64_t i = 0; i < ds->n; i++)
      if (ds->label_off[i] != SIZE_MAX)
        ds->label[i] = find_class(ds, ds->pool + ds->label_off[i], numeric);
  }
  /* The label strings stay in the pool (compacting it is not worth it). */
  free(ds->label_off);
  ds->label_off = NULL;
  return NIC_OK;
}

const char *ds_path(const nic_dataset *ds, int64_t i) {
  return ds->path_off ? ds->pool + ds->path_off[i] : NULL;
}

int ds_parse_split(const char *s) {
  static const struct {
    const char *name;
    nic_split split;
  } names[] = {{"", NIC_SPLIT_NONE},          {"train", NIC_SPLIT_TRAIN},
               {"training", NIC_SPLIT_TRAIN}, {"valid", NIC_SPLIT_VALID},
               {"val", NIC_SPLIT_VALID},      {"validation", NIC_SPLIT_VALID},
               {"test", NIC_SPLIT_TEST},      {"testing", NIC_SPLIT_TEST}};
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
    if (!strcasecmp(s, names[k].name)) return (int)names[k].split;
  return -1;
}

nic_split ds_split_from_name(const char *path) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  if (strstr(base, "_train_") || strstr(base, "_train.")) return NIC_SPLIT_TRAIN;
  if (strstr(base, "_valid_") || strstr(base, "_valid.")) return NIC_SPLIT_VALID;
  if (strstr(base, "_test_") || strstr(base, "_test.")) return NIC_SPLIT_TEST;
  return NIC_SPLIT_NONE;
}

/* ---- accessors ----------------------------------------------------------------- */

void nic_dataset_free(nic_dataset *ds) {
  if (!ds) return;
  if (ds->ops && ds->ops->close) ds->ops->close(ds);
  for (int c = 0; c < ds->nclasses; c++) free(ds->classes[c]);
  free(ds->classes);
  free(ds->label);
  free(ds->value);
  free(ds->split);
  free(ds->path_off);
  free(ds->label_off);
  free(ds->pool);
  free(ds->source);
  free(ds);
}

int64_t nic_dataset_count(const nic_dataset *ds) {
  return ds->n;
}
const char *nic_dataset_format(const nic_dataset *ds) {
  return ds->format;
}
const char *nic_dataset_source(const nic_dataset *ds) {
  return ds->source;
}
double nic_dataset_mpp(const nic_dataset *ds) {
  return ds->mpp;
}
void nic_dataset_set_mpp(nic_dataset *ds, double mpp) {
  ds->mpp = mpp > 0 ? mpp : 0;
}
nic_label_kind nic_dataset_label_kind(const nic_dataset *ds) {
  return ds->kind;
}
int nic_dataset_num_classes(const nic_dataset *ds) {
  return ds->nclasses;
}

const char *nic_dataset_class_name(const nic_dataset *ds, int c) {
  return c >= 0 && c < ds->nclasses ? ds->classes[c] : NULL;
}

int nic_dataset_label(const nic_dataset *ds, int64_t i) {
  return i >= 0 && i < ds->n ? ds->label[i] : -1;
}

float nic_dataset_value(const nic_dataset *ds, int64_t i) {
  return i >= 0 && i < ds->n ? ds->value[i] : NAN;
}

nic_split nic_dataset_split(const nic_dataset *ds, int64_t i) {
  return i >= 0 && i < ds->n ? (nic_split)ds->split[i] : NIC_SPLIT_NONE;
}

void nic_dataset_set_split(nic_dataset *ds, int64_t i, nic_split s) {
  if (i >= 0 && i < ds->n) ds->split[i] = (uint8_t)s;
}

int64_t nic_dataset_count_split(const nic_dataset *ds, int split) {
  if (split == NIC_SPLIT_ANY) return ds->n;
  int64_t k = 0;
  for (int64_t i = 0; i < ds->n; i++) k += ds->split[i] == split;
  return k;
}

void nic_dataset_item_name(const nic_dataset *ds, int64_t i, char *buf, size_t n) {
  const char *p = ds_path(ds, i);
  if (p)
    snprintf(buf, n, "%s", p);
  else
    snprintf(buf, n, "%s[%lld]", ds->source, (long long)i);
}

nic_status nic_dataset_read(const nic_dataset *ds, int64_t i, uint8_t **pixels, int *width,
                            int *height, nic_error *err) {
  *pixels = NULL;
  *width = *height = 0;
  if (i < 0 || i >= ds->n)
    return nic_err(err, NIC_EINVAL, "%s: item %lld out of range (%lld items)", ds->source,
                   (long long)i, (long long)ds->n);
  if (ds->ops && ds->ops->read) return ds->ops->read(ds, i, pixels, width, height, err);
  return data_decode_file(ds_path(ds, i), pixels, width, height, err);
}

nic_status nic_dataset_load(const nic_dataset *ds, int64_t i, int size, double mpp, uint8_t *out,
                            nic_error *err) {
  uint8_t *px;
  int w, h;
  nic_status s = nic_dataset_read(ds, i, &px, &w, &h, err);
  if (s != NIC_OK) return s;
  s = nic_patch_from_image(px, w, h, ds->mpp, out, size, mpp, 1.0, err);
  free(px);
  return s;
}

/* ---- stratified split ---------------------------------------------------------- */

/* Stratum of item i: its class, a value decile, or the last stratum for
 * unlabelled items. `rank` holds each item's position in value order. */
static int stratum_of(const nic_dataset *ds, int64_t i, const int64_t *rank, int64_t nvalued) {
  if (ds->kind == NIC_LABEL_VALUE) {
    if (isnan(ds->value[i])) return 10;
    return (int)(rank[i] * 10 / (nvalued > 0 ? nvalued : 1));
  }
  return ds->label[i] >= 0 ? ds->label[i] : ds->nclasses;
}

typedef struct value_idx {
  float v;
  int64_t i;
} value_idx;

static int cmp_value_idx(const void *a, const void *b) {
  const value_idx *x = a, *y = b;
  if (x->v != y->v) return x->v < y->v ? -1 : 1;
  return (x->i > y->i) - (x->i < y->i); /* stable: equal values by index */
}

/* Ranks of the labelled values (rank[i] for items with a value). */
static nic_status value_ranks(const nic_dataset *ds, int64_t *rank, int64_t *nvalued,
                              nic_error *err) {
  value_idx *v = malloc(sizeof(value_idx) * (size_t)(ds->n > 0 ? ds->n : 1));
  if (!v) return nic_err(err, NIC_ENOMEM, "%s: out of memory", ds->source);
  int64_t k = 0;
  for (int64_t i = 0; i < ds->n; i++)
    if (!isnan(ds->value[i])) v[k++] = (value_idx){ds->value[i], i};
  qsort(v, (size_t)k, sizeof *v, cmp_value_idx);
  for (int64_t r = 0; r < k; r++) rank[v[r].i] = r;
  *nvalued = k;
  free(v);
  return NIC_OK;
}

nic_status nic_dataset_split_stratified(nic_dataset *ds, double valid_fraction, uint64_t seed,
                                        nic_error *err) {
  if (!(valid_fraction >= 0 && valid_fraction <= 1))
    return nic_err(err, NIC_EINVAL, "%s: validation fraction %g is not in [0, 1]", ds->source,
                   valid_fraction);
  int nstrata = ds->kind == NIC_LABEL_VALUE ? 11 : ds->nclasses + 1;
  int64_t *rank = calloc((size_t)(ds->n > 0 ? ds->n : 1), sizeof(int64_t));
  int64_t *members = malloc(sizeof(int64_t) * (size_t)(ds->n > 0 ? ds->n : 1));
  int64_t *off = calloc((size_t)nstrata + 1, sizeof(int64_t));
  int64_t *fill = malloc(sizeof(int64_t) * (size_t)nstrata);
  nic_status s = NIC_OK;
  if (!rank || !members || !off || !fill) {
    s = nic_err(err, NIC_ENOMEM, "%s: out of memory", ds->source);
    goto done;
  }
  int64_t nvalued = 0;
  if (ds->kind == NIC_LABEL_VALUE && (s = value_ranks(ds, rank, &nvalued, err)) != NIC_OK)
    goto done;
  /* The unassigned items grouped by stratum, each group in index order
   * (a counting sort)... */
  for (int64_t i = 0; i < ds->n; i++)
    if (ds->split[i] == NIC_SPLIT_NONE) off[stratum_of(ds, i, rank, nvalued) + 1]++;
  for (int st = 0; st < nstrata; st++) off[st + 1] += off[st];
  memcpy(fill, off, sizeof(int64_t) * (size_t)nstrata);
  for (int64_t i = 0; i < ds->n; i++)
    if (ds->split[i] == NIC_SPLIT_NONE) members[fill[stratum_of(ds, i, rank, nvalued)]++] = i;
  /* ... then each group shuffled (Fisher-Yates) with a stream of its own,
   * so the result for a stratum depends only on (seed, stratum). */
  for (int st = 0; st < nstrata; st++) {
    int64_t *g = members + off[st], k = off[st + 1] - off[st];
    nic_rng rng;
    nic_rng_seed(&rng, data_mix_seed(seed, 0x5B117, (uint64_t)st, 0));
    for (int64_t i = k - 1; i > 0; i--) {
      int64_t j = (int64_t)nic_rng_below(&rng, (uint64_t)i + 1);
      int64_t t = g[i];
      g[i] = g[j];
      g[j] = t;
    }
    int64_t nvalid = (int64_t)floor(valid_fraction * (double)k + 0.5);
    for (int64_t i = 0; i < k; i++)
      ds->split[g[i]] = i < nvalid ? NIC_SPLIT_VALID : NIC_SPLIT_TRAIN;
  }
done:
  free(rank);
  free(members);
  free(off);
  free(fill);
  return s;
}

/* ---- opening by layout -------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && !strcasecmp(s + n - m, suffix);
}

/* For an idx image file, the labels file: "images" -> "labels" in the
 * base name (train-images-idx3-ubyte -> train-labels-idx1-ubyte). */
static int idx_labels_path(const char *images, char *out, size_t n) {
  const char *base = strrchr(images, '/');
  base = base ? base + 1 : images;
  const char *p = strstr(base, "images");
  if (!p || strlen(images) + 1 > n) return -1;
  snprintf(out, n, "%s", images);
  memcpy(out + (p - images), "labels", 6);
  char *idx3 = strstr(out + (p - images), "idx3");
  if (idx3) idx3[3] = '1';
  return 0;
}

nic_status nic_dataset_open(nic_dataset **out, const char *path, const nic_dataset_opts *opts,
                            nic_error *err) {
  *out = NULL;
  struct stat st;
  if (stat(path, &st) != 0)
    return nic_err(err, NIC_EIO, "cannot open %s: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode)) return nic_dataset_open_folder(out, path, opts, err);
  if (ends_with(path, ".csv")) return nic_dataset_open_csv(out, path, opts, err);
  if (ends_with(path, ".h5") || ends_with(path, ".hdf5"))
    return nic_dataset_open_pcam_h5(out, path, NULL, opts, err);
  const char *base = strrchr(path, '/');
  if (strstr(base ? base + 1 : path, "images")) {
    char labels[4096];
    if (idx_labels_path(path, labels, sizeof labels))
      return nic_err(err, NIC_EINVAL, "%s: path too long", path);
    return nic_dataset_open_idx(out, path, labels, opts, err);
  }
  return nic_err(err, NIC_EUNSUPPORTED,
                 "%s: unknown dataset layout (expected a folder, a .csv, a PatchCamelyon "
                 "*_x.h5 or an idx *-images-* file)",
                 path);
}
