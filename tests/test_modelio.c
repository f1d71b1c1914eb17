/* src/io: model files (safetensors + metadata) and image files.
 *
 * Model files: a round trip of a model using every layer kind keeps the
 * architecture, params, buffers, metadata and input description exactly;
 * the files follow the safetensors layout; every kind of corruption is
 * reported as NIC_EFORMAT with the file named, and random damage to the
 * header never crashes the loader (run under ASan by `make test-asan`).
 * Images: decoding through libvips to RGB8 and area resampling. */
#include <fcntl.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vips/vips.h>

#include "nic/image.h"
#include "nn/layer.h"
#include "testutil.h"

static char tmpdir[256];

static const char *tmp_path(const char *name) {
  static char buf[8][512];
  static int next;
  char *p = buf[next++ % 8];
  snprintf(p, 512, "%s/%s", tmpdir, name);
  return p;
}

/* ---- a model with every layer kind ------------------------------------------ */

static nic_layer_spec named(nic_layer_spec s, const char *name) {
  s.name = name;
  return s;
}

static nic_model *build_all_kinds(void) {
  nic_error err = {0};
  nic_model *m = NULL;
  if (nic_model_create(&m, 3, 16, 16, &err) != NIC_OK) return NULL;
  int ok = 1;
  nic_layer_spec pool = named(nic_spec_pool(NIC_POOL_AVG, 2, 1, 0), "avgpool");
  pool.pad[2] = pool.pad[3] = 1; /* asymmetric padding: 16x16 -> 16x16 */
  ok &= nic_model_add(m, pool, -1, -1, &err) == 1;
  ok &= nic_model_add(m, named(nic_spec_conv(8, 3, 1, 1, NIC_ACT_RELU, 0), "conv1"), -1, -1,
                      &err) == 2;
  ok &= nic_model_add(m, named(nic_spec_bn(1e-3f, 0.9f), "bn1"), -1, -1, &err) == 3;
  ok &= nic_model_add(m, named(nic_spec_act(NIC_ACT_LEAKY_RELU, 0.1f), "act1"), -1, -1, &err) == 4;
  ok &= nic_model_add(m, named(nic_spec_dwconv(3, 1, 1), "dw1"), -1, -1, &err) == 5;
  ok &= nic_model_add(m, named(nic_spec_add(), "res1"), 5, 4, &err) == 6;
  ok &= nic_model_add(m, named(nic_spec_pool(NIC_POOL_MAX, 2, 2, 0), "maxpool"), -1, -1, &err) == 7;
  ok &= nic_model_add(m, named(nic_spec_spatial_dropout(0.1f), "sdrop"), -1, -1, &err) == 8;
  ok &= nic_model_add(m, named(nic_spec_flatten(NIC_FLATTEN_NHWC), "flat"), -1, -1, &err) == 9;
  ok &= nic_model_add(m, named(nic_spec_dense(12, NIC_ACT_TANH, 0), "fc1"), -1, -1, &err) == 10;
  ok &= nic_model_add(m, named(nic_spec_bn(1e-5f, 0.99f), "bn2"), -1, -1, &err) == 11;
  ok &= nic_model_add(m, named(nic_spec_dropout(0.25f), "drop"), -1, -1, &err) == 12;
  nic_layer_spec fc2 = named(nic_spec_dense(5, NIC_ACT_SIGMOID, 0), "fc2");
  fc2.bias = 0;
  ok &= nic_model_add(m, fc2, -1, -1, &err) == 13;
  ok &= nic_model_add(m, named(nic_spec_globalpool(NIC_POOL_AVG), "gpool"), 7, -1, &err) == 14;
  ok &= nic_model_add(m, named(nic_spec_dense(5, NIC_ACT_NONE, 0), "gfc"), -1, -1, &err) == 15;
  ok &= nic_model_add(m, named(nic_spec_add(), "sum"), 13, 15, &err) == 16;
  if (!ok) {
    fprintf(stderr, "building the test model failed: %s\n", err.msg);
    nic_model_free(m);
    return NULL;
  }
  /* Distinct random values everywhere; variances positive. */
  int np;
  nic_param **ps = nic_model_params(m, &np);
  for (int i = 0; i < np; i++) {
    int var = strstr(ps[i]->name, "running_var") != NULL;
    nic_test_fill_uniform(&ps[i]->value, 100 + (uint64_t)i, var ? 0.5f : -1, var ? 1.5f : 1);
  }
  nic_input_info *in = nic_model_input_info(m);
  in->patch_size = 32;
  in->mpp = 0.25;
  for (int c = 0; c < 3; c++) {
    in->mean[c] = 0.1f * (float)(c + 1);
    in->std[c] = 0.3f + 0.1f * (float)c;
  }
  nic_model_set_meta(m, "note", "{\"a\": [1, 2, 3], \"b\": null}");
  nic_model_set_meta(m, "title", "\"caf\xc3\xa9 \\\"quoted\\\"\"");
  nic_model_set_meta(m, "epochs", "42");
  return m;
}

static int same_spec(const nic_layer_spec *a, const nic_layer_spec *b) {
  return a->kind == b->kind && !strcmp(a->name, b->name) && a->out == b->out &&
         !memcmp(a->kernel, b->kernel, sizeof a->kernel) &&
         !memcmp(a->stride, b->stride, sizeof a->stride) &&
         !memcmp(a->pad, b->pad, sizeof a->pad) && a->groups == b->groups && a->bias == b->bias &&
         a->act == b->act && a->alpha == b->alpha && a->eps == b->eps &&
         a->momentum == b->momentum && a->pool == b->pool && a->p == b->p && a->order == b->order;
}

/* Architecture, params (by name: optimized models reorder them), metadata
 * and input description all identical. */
static void check_same_model(nic_model *a, nic_model *b) {
  CHECK(nic_model_num_nodes(a) == nic_model_num_nodes(b));
  CHECK(a->c == b->c && a->h == b->h && a->w == b->w);
  CHECK(a->inference_only == b->inference_only);
  int n = nic_model_num_nodes(a) < nic_model_num_nodes(b) ? nic_model_num_nodes(a)
                                                          : nic_model_num_nodes(b);
  for (int k = 1; k <= n; k++) {
    CHECK(same_spec(nic_model_node_spec(a, k), nic_model_node_spec(b, k)));
    CHECK(nic_model_node_input(a, k, 0) == nic_model_node_input(b, k, 0));
    if (nic_model_node_kind(a, k) == NIC_LAYER_ADD)
      CHECK(nic_model_node_input(a, k, 1) == nic_model_node_input(b, k, 1));
    int na, nb;
    int64_t sa[NIC_MAX_DIMS], sb[NIC_MAX_DIMS];
    nic_model_node_shape(a, k, &na, sa);
    nic_model_node_shape(b, k, &nb, sb);
    CHECK(na == nb && !memcmp(sa, sb, sizeof sa));
  }
  int npa, npb;
  nic_param **pa = nic_model_params(a, &npa);
  nic_model_params(b, &npb);
  CHECK(npa == npb);
  for (int i = 0; i < npa; i++) {
    nic_param *q = nic_model_param(b, pa[i]->name);
    CHECK(q != NULL);
    if (!q) continue;
    CHECK(nic_tensor_same_shape(&pa[i]->value, &q->value));
    CHECK(pa[i]->trainable == q->trainable);
    CHECK(!memcmp(pa[i]->value.data, q->value.data,
                  sizeof(float) * (size_t)nic_tensor_numel(&pa[i]->value)));
  }
  CHECK(a->nmeta == b->nmeta);
  for (int i = 0; i < a->nmeta; i++) {
    const char *v = nic_model_get_meta(b, a->meta[i].key);
    CHECK(v && !strcmp(v, a->meta[i].value));
    if (v && strcmp(v, a->meta[i].value))
      fprintf(stderr, "  %s: '%s' != '%s'\n", a->meta[i].key, v, a->meta[i].value);
  }
  const nic_input_info *ia = nic_model_input_info(a), *ib = nic_model_input_info(b);
  CHECK(ia->channels == ib->channels && ia->height == ib->height && ia->width == ib->width);
  CHECK(ia->patch_size == ib->patch_size && ia->mpp == ib->mpp);
  CHECK(!memcmp(ia->mean, ib->mean, sizeof ia->mean) && !memcmp(ia->std, ib->std, sizeof ia->std));
}

/* ---- raw file helpers -------------------------------------------------------- */

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc((size_t)n + 1);
  if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  *len = (size_t)n;
  return b;
}

static void write_all(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(b, 1, n, f) != n) {
    perror(path);
    exit(1);
  }
  fclose(f);
}

static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A safetensors file taken apart: its header and each tensor's bytes, so
 * that tests can edit it and write it back. */
typedef struct raw_st {
  json_object *root;
  uint8_t *data;
  size_t dlen;
} raw_st;

static int raw_read(const char *path, raw_st *r) {
  size_t n;
  uint8_t *b = read_all(path, &n);
  if (!b) return -1;
  uint64_t h = get_u64(b);
  char *text = strndup((const char *)b + 8, (size_t)h);
  r->root = json_tokener_parse(text);
  free(text);
  r->dlen = n - 8 - (size_t)h;
  r->data = malloc(r->dlen + 1);
  memcpy(r->data, b + 8 + h, r->dlen);
  free(b);
  return r->root ? 0 : -1;
}

/* Writes root as the header (padded to 8) followed by data, as is. */
static void raw_write(const char *path, json_object *root, const uint8_t *data, size_t dlen) {
  size_t len;
  const char *t = json_object_to_json_string_length(root, JSON_C_TO_STRING_PLAIN, &len);
  size_t h = (len + 7) / 8 * 8;
  uint8_t *b = malloc(8 + h + dlen + 1);
  put_u64(b, h);
  memcpy(b + 8, t, len);
  memset(b + 8 + len, ' ', h - len);
  if (dlen) memcpy(b + 8 + h, data, dlen);
  write_all(path, b, 8 + h + dlen);
  free(b);
}

/* Re-lays the tensors out tightly in header order (after entries were
 * added, removed or resized), taking each one's bytes from `from(name)`
 * or, when NULL, from its old data_offsets. */
static void raw_repack(raw_st *r, uint8_t *(*from)(const char *, size_t *)) {
  size_t cap = r->dlen * 2 + 64, pos = 0;
  uint8_t *out = malloc(cap);
  json_object_object_foreach(r->root, key, e) {
    if (!strcmp(key, "__metadata__")) continue;
    json_object *offs = json_object_object_get(e, "data_offsets");
    size_t b = (size_t)json_object_get_int64(json_object_array_get_idx(offs, 0));
    size_t en = (size_t)json_object_get_int64(json_object_array_get_idx(offs, 1));
    size_t n = en - b;
    uint8_t *src = from ? from(key, &n) : NULL;
    while (pos + n > cap) out = realloc(out, cap *= 2);
    memcpy(out + pos, src ? src : r->data + b, n);
    free(src);
    json_object_array_put_idx(offs, 0, json_object_new_int64((int64_t)pos));
    json_object_array_put_idx(offs, 1, json_object_new_int64((int64_t)(pos + n)));
    pos += n;
  }
  free(r->data);
  r->data = out;
  r->dlen = pos;
}

static void raw_free(raw_st *r) {
  json_object_put(r->root);
  free(r->data);
}

/* Loading `path` must fail with `code`, naming the file, and the message
 * should contain `what` (NULL: anything). */
static void expect_fail(const char *path, nic_status code, const char *what) {
  nic_model *m = (nic_model *)0x1;
  nic_error err = {0};
  nic_status s = nic_model_load(&m, path, &err);
  CHECK(s == code);
  CHECK(m == NULL);
  CHECK(strstr(err.msg, path) != NULL);
  if (what && !strstr(err.msg, what)) {
    nic_test_failures++;
    fprintf(stderr, "  expected '%s' in: %s\n", what, err.msg);
  }
  if (s == NIC_OK) nic_model_free(m);
}

/* ---- tests --------------------------------------------------------------------- */

static char saved[512]; /* the reference file written by test_round_trip */

static void test_round_trip(void) {
  nic_model *m = build_all_kinds();
  CHECK(m != NULL);
  if (!m) return;
  nic_error err = {0};
  snprintf(saved, sizeof saved, "%s", tmp_path("all.safetensors"));
  CHECK_OK(nic_model_save(m, saved, &err));
  nic_model *l = NULL;
  CHECK_OK(nic_model_load(&l, saved, &err));
  if (l) check_same_model(m, l);
  /* saving the loaded model gives the same bytes */
  const char *again = tmp_path("again.safetensors");
  CHECK_OK(nic_model_save(l, again, &err));
  size_t n1, n2;
  uint8_t *b1 = read_all(saved, &n1), *b2 = read_all(again, &n2);
  CHECK(b1 && b2 && n1 == n2 && !memcmp(b1, b2, n1));
  free(b1);
  free(b2);
  /* no temporary file left behind */
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", saved, (long)getpid());
  CHECK(access(tmp, F_OK) != 0);
  nic_model_free(l);
  nic_model_free(m);
}

/* The layout PyTorch's safetensors expects. */
static void test_layout(void) {
  size_t n;
  uint8_t *b = read_all(saved, &n);
  CHECK(b && n > 8);
  if (!b) return;
  uint64_t h = get_u64(b);
  CHECK(8 + h <= n);
  CHECK((8 + h) % 8 == 0);
  CHECK(b[8] == '{');
  char *text = strndup((const char *)b + 8, (size_t)h);
  json_object *root = json_tokener_parse(text);
  CHECK(root && json_object_is_type(root, json_type_object));
  json_object *meta = NULL;
  CHECK(json_object_object_get_ex(root, "__metadata__", &meta));
  int strings = 1;
  json_object_object_foreach(meta, k, v) {
    (void)k;
    strings &= json_object_is_type(v, json_type_string);
  }
  CHECK(strings);
  CHECK(!strcmp(json_object_get_string(json_object_object_get(meta, "format")), "nic"));
  json_object *arch =
      json_tokener_parse(json_object_get_string(json_object_object_get(meta, "architecture")));
  CHECK(arch && json_object_array_length(json_object_object_get(arch, "nodes")) == 16);
  json_object_put(arch);
  uint64_t total = 0;
  int tensors = 0, f32 = 1;
  json_object_object_foreach(root, key, e) {
    if (!strcmp(key, "__metadata__")) continue;
    tensors++;
    f32 &= !strcmp(json_object_get_string(json_object_object_get(e, "dtype")), "F32");
    json_object *o = json_object_object_get(e, "data_offsets");
    total += (uint64_t)(json_object_get_int64(json_object_array_get_idx(o, 1)) -
                        json_object_get_int64(json_object_array_get_idx(o, 0)));
  }
  CHECK(f32);
  CHECK(tensors == 2 + 4 + 1 + 2 + 4 + 1 + 2); /* conv1 bn1 dw1 fc1 bn2 fc2 gfc */
  CHECK(total == n - 8 - h);
  /* a named tensor holds its param's values */
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_model_load(&m, saved, &err));
  json_object *rv = json_object_object_get(root, "bn1.running_var");
  if (m && rv) {
    int64_t off = json_object_get_int64(
        json_object_array_get_idx(json_object_object_get(rv, "data_offsets"), 0));
    nic_param *p = nic_model_param(m, "bn1.running_var");
    CHECK(!memcmp(b + 8 + h + off, p->value.data, 8 * sizeof(float)));
  }
  nic_model_free(m);
  json_object_put(root);
  free(text);
  free(b);
}

static void test_truncated(void) {
  size_t n;
  uint8_t *b = read_all(saved, &n);
  uint64_t h = get_u64(b);
  const char *p = tmp_path("trunc.safetensors");
  size_t cuts[] = {
      0, 3, 7, 8, 9, 8 + (size_t)h / 2, 8 + (size_t)h - 1, 8 + (size_t)h, n / 2 + 3, n - 4, n - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    write_all(p, b, cuts[i]);
    expect_fail(p, NIC_EFORMAT, NULL);
  }
  write_all(p, b, 5);
  expect_fail(p, NIC_EFORMAT, "too short");
  free(b);
}

static void test_header_length(void) {
  size_t n;
  uint8_t *b = read_all(saved, &n);
  const char *p = tmp_path("hlen.safetensors");
  put_u64(b, n); /* one past the end */
  write_all(p, b, n);
  expect_fail(p, NIC_EFORMAT, "past the end");
  put_u64(b, (uint64_t)1 << 40);
  write_all(p, b, n);
  expect_fail(p, NIC_EFORMAT, "100 MB");
  put_u64(b, UINT64_MAX);
  write_all(p, b, n);
  expect_fail(p, NIC_EFORMAT, NULL);
  /* a header claimed larger than 100 MB in a file that is even larger
   * (sparse, so cheap) */
  put_u64(b, 150u * 1000 * 1000);
  write_all(p, b, n);
  CHECK(truncate(p, 200l * 1000 * 1000) == 0);
  expect_fail(p, NIC_EFORMAT, "100 MB");
  unlink(p);
  free(b);
}

static void test_garbage_json(void) {
  size_t n;
  uint8_t *b = read_all(saved, &n);
  uint64_t h = get_u64(b);
  const char *p = tmp_path("garbage.safetensors");
  memset(b + 8, ' ', (size_t)h);
  memcpy(b + 8, "{garbage", 8);
  write_all(p, b, n);
  expect_fail(p, NIC_EFORMAT, "JSON");
  memcpy(b + 8, "[1, 2]  ", 8);
  write_all(p, b, n);
  expect_fail(p, NIC_EFORMAT, NULL);
  memcpy(b + 8, "{}  {}  ", 8);
  write_all(p, b, n);
  expect_fail(p, NIC_EFORMAT, NULL);
  b[8] = '\0';
  write_all(p, b, n);
  expect_fail(p, NIC_EFORMAT, NULL);
  free(b);
}

/* Replaces the first occurrence of `from` in the header by `to` (same
 * length), keeping every offset valid. */
static void patch_header(const char *out, const char *from, const char *to) {
  size_t n;
  uint8_t *b = read_all(saved, &n);
  uint64_t h = get_u64(b);
  size_t fl = strlen(from);
  for (size_t i = 8; i + fl <= 8 + h; i++)
    if (!memcmp(b + i, from, fl)) {
      memcpy(b + i, to, fl);
      break;
    }
  write_all(out, b, n);
  free(b);
}

static void test_dtype(void) {
  const char *p = tmp_path("dtype.safetensors");
  patch_header(p, "\"F32\"", "\"I32\"");
  expect_fail(p, NIC_EFORMAT, "dtype 'I32'");
  patch_header(p, "\"F32\"", "\"BF6\"");
  expect_fail(p, NIC_EFORMAT, "dtype");
  /* F16 with F32-sized data: the offsets no longer match the shape */
  patch_header(p, "\"F32\"", "\"F16\"");
  expect_fail(p, NIC_EFORMAT, "data_offsets");
}

static json_object *entry(raw_st *r, const char *name) {
  return json_object_object_get(r->root, name);
}

static void set_shape(json_object *e, int n, const int64_t *dims) {
  json_object *a = json_object_new_array();
  for (int i = 0; i < n; i++) json_object_array_add(a, json_object_new_int64(dims[i]));
  json_object_object_add(e, "shape", a);
}

static void test_shape_mismatch(void) {
  const char *p = tmp_path("shape.safetensors");
  raw_st r;
  CHECK(raw_read(saved, &r) == 0);
  /* same number of elements, other shape */
  set_shape(entry(&r, "conv1.bias"), 2, (int64_t[]){2, 4});
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, "shape [2, 4], the architecture needs [8]");
  /* more elements than the offsets cover */
  set_shape(entry(&r, "conv1.bias"), 1, (int64_t[]){9});
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, "data_offsets");
  /* absurd dimensions must not overflow */
  set_shape(entry(&r, "conv1.bias"), 4, (int64_t[]){INT64_MAX, INT64_MAX, 4, 0});
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, NULL);
  set_shape(entry(&r, "conv1.bias"), 3, (int64_t[]){INT64_MAX / 2, 3, 3});
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, NULL);
  set_shape(entry(&r, "conv1.bias"), 1, (int64_t[]){-8});
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, "shape");
  raw_free(&r);
}

static void test_missing_extra(void) {
  const char *p = tmp_path("missing.safetensors");
  raw_st r;
  CHECK(raw_read(saved, &r) == 0);
  json_object_object_del(r.root, "bn2.running_mean");
  raw_repack(&r, NULL);
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, "'bn2.running_mean' is missing");
  raw_free(&r);

  CHECK(raw_read(saved, &r) == 0);
  json_object *e = json_object_new_object();
  json_object_object_add(e, "dtype", json_object_new_string("F32"));
  set_shape(e, 1, (int64_t[]){3});
  json_object *o = json_object_new_array();
  json_object_array_add(o, json_object_new_int64((int64_t)r.dlen));
  json_object_array_add(o, json_object_new_int64((int64_t)r.dlen + 12));
  json_object_object_add(e, "data_offsets", o);
  json_object_object_add(r.root, "bogus.weight", e);
  r.data = realloc(r.data, r.dlen + 12);
  memset(r.data + r.dlen, 0, 12);
  raw_write(p, r.root, r.data, r.dlen + 12);
  expect_fail(p, NIC_EFORMAT, "unexpected tensor 'bogus.weight'");
  raw_free(&r);
}

static void test_offsets(void) {
  const char *p = tmp_path("offsets.safetensors");
  raw_st r;
  CHECK(raw_read(saved, &r) == 0);
  /* The first tensor starts at 0; move conv1.bias (8 floats) to overlap it. */
  json_object *o = json_object_object_get(entry(&r, "conv1.bias"), "data_offsets");
  int64_t b0 = json_object_get_int64(json_object_array_get_idx(o, 0));
  int64_t b1 = json_object_get_int64(json_object_array_get_idx(o, 1));
  json_object_array_put_idx(o, 0, json_object_new_int64(4));
  json_object_array_put_idx(o, 1, json_object_new_int64(4 + b1 - b0));
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, "overlap");
  /* past the end of the data */
  json_object_array_put_idx(o, 0, json_object_new_int64((int64_t)r.dlen));
  json_object_array_put_idx(o, 1, json_object_new_int64((int64_t)r.dlen + b1 - b0));
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, "past the data");
  /* reversed */
  json_object_array_put_idx(o, 0, json_object_new_int64(b1));
  json_object_array_put_idx(o, 1, json_object_new_int64(b0));
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, "before they begin");
  /* not integers */
  json_object_array_put_idx(o, 0, json_object_new_double(0.5));
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, "data_offsets");
  json_object_array_put_idx(o, 0, json_object_new_int64(b0));
  json_object_array_put_idx(o, 1, json_object_new_int64(b1));
  /* trailing bytes */
  r.data = realloc(r.data, r.dlen + 16);
  memset(r.data + r.dlen, 0, 16);
  raw_write(p, r.root, r.data, r.dlen + 16);
  expect_fail(p, NIC_EFORMAT, "trailing");
  /* restored, it loads again */
  raw_write(p, r.root, r.data, r.dlen);
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_model_load(&m, p, &err));
  nic_model_free(m);
  /* a hole: every tensor moved 4 bytes up, 4 unused bytes first */
  json_object_object_foreach(r.root, key, e) {
    if (!strcmp(key, "__metadata__")) continue;
    json_object *d = json_object_object_get(e, "data_offsets");
    for (size_t i = 0; i < 2; i++)
      json_object_array_put_idx(
          d, i, json_object_new_int64(json_object_get_int64(json_object_array_get_idx(d, i)) + 4));
  }
  uint8_t *shifted = calloc(1, r.dlen + 4);
  memcpy(shifted + 4, r.data, r.dlen);
  raw_write(p, r.root, shifted, r.dlen + 4);
  free(shifted);
  expect_fail(p, NIC_EFORMAT, "unused bytes");
  raw_free(&r);
}

/* Rewrites one metadata value and expects the load to fail with `what`. */
static void meta_case(const char *key, const char *value, const char *what) {
  const char *p = tmp_path("meta.safetensors");
  raw_st r;
  CHECK(raw_read(saved, &r) == 0);
  json_object *meta = entry(&r, "__metadata__");
  if (value)
    json_object_object_add(meta, key, json_object_new_string(value));
  else
    json_object_object_del(meta, key);
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, what);
  raw_free(&r);
}

/* Edits the architecture JSON: node k's field set to a JSON value. */
static void arch_case(int k, const char *field, const char *json, const char *what) {
  raw_st r;
  CHECK(raw_read(saved, &r) == 0);
  json_object *meta = entry(&r, "__metadata__");
  json_object *arch =
      json_tokener_parse(json_object_get_string(json_object_object_get(meta, "architecture")));
  json_object *node =
      k == 0 ? arch
             : json_object_array_get_idx(json_object_object_get(arch, "nodes"), (size_t)k - 1);
  if (json)
    json_object_object_add(node, field, json_tokener_parse(json));
  else
    json_object_object_del(node, field);
  json_object_object_add(meta, "architecture",
                         json_object_new_string(json_object_to_json_string(arch)));
  json_object_put(arch);
  const char *p = tmp_path("arch.safetensors");
  raw_write(p, r.root, r.data, r.dlen);
  expect_fail(p, NIC_EFORMAT, what);
  raw_free(&r);
}

static void test_bad_metadata(void) {
  {
    const char *p = tmp_path("nometa.safetensors");
    raw_st r;
    CHECK(raw_read(saved, &r) == 0);
    json_object_object_del(r.root, "__metadata__");
    raw_write(p, r.root, r.data, r.dlen);
    expect_fail(p, NIC_EFORMAT, "__metadata__");
    json_object_object_add(r.root, "__metadata__", json_object_new_int(3));
    raw_write(p, r.root, r.data, r.dlen);
    expect_fail(p, NIC_EFORMAT, "__metadata__");
    raw_free(&r);
  }
  meta_case("format", "pt", "not a nic model");
  meta_case("format", NULL, "not a nic model");
  meta_case("architecture", NULL, "architecture");
  meta_case("architecture", "{\"input\": [3, 16", "architecture");
  meta_case("architecture", "[]", "architecture");
  meta_case("input", NULL, "input");
  meta_case("input", "{\"patch_size\": 32}", "input");
  meta_case("input", "{\"patch_size\": 32, \"mpp\": 0.5, \"mean\": [0], \"std\": [0]}", "std");
  meta_case("input",
            "{\"channels\": 4, \"patch_size\": 32, \"mpp\": 0.5, \"mean\": [0], \"std\": [1]}",
            "channels");
  meta_case("inference_only", "maybe", "inference_only");
  arch_case(3, "kind", "\"conv9d\"", "unknown layer kind 'conv9d'");
  arch_case(3, "kind", NULL, "unknown layer kind");
  arch_case(2, "act", "\"swish\"", "unknown activation");
  arch_case(2, "out", "16", "conv1.weight");
  arch_case(2, "out", "-1", "out");
  arch_case(2, "out", "\"8\"", "out");
  arch_case(2, "groups", "0", "groups");
  arch_case(2, "groups", "3", NULL);
  arch_case(2, "kernel", "[3]", "kernel");
  arch_case(2, "kernel", "[1000000000, 1000000000]", NULL);
  arch_case(2, "name", "\"bn1\"", NULL);
  arch_case(2, "name", "\"\"", "name");
  arch_case(6, "inputs", "[5, 6]", "inputs");
  arch_case(6, "inputs", "[5]", "inputs");
  arch_case(2, "inputs", "[-1]", "inputs");
  arch_case(2, "inputs", "[2]", "inputs");
  arch_case(4, "pool", "\"min\"", "pool");
  arch_case(9, "order", "\"chwn\"", "order");
  arch_case(12, "p", "1.5", NULL);
  arch_case(2, "bias", "false", "unexpected tensor 'conv1.bias'");
  arch_case(0, "input", "[3, 16]", "input");
  arch_case(0, "input", "[3, 1048576, 1048576]", "input");
  arch_case(0, "input", "[3, 17, 16]", NULL);
  arch_case(0, "nodes", NULL, "nodes");
}

/* Loading the same file converted to F16 (by hand, here) gives the values
 * rounded to half precision. f16_bytes converts one tensor for raw_repack. */
static raw_st *f16_src;

static uint8_t *f16_bytes(const char *name, size_t *n) {
  json_object *e = json_object_object_get(f16_src->root, name);
  json_object *o = json_object_object_get(e, "data_offsets");
  size_t b = (size_t)json_object_get_int64(json_object_array_get_idx(o, 0));
  size_t cnt = *n / 4;
  float *f = malloc(cnt * 4 + 1);
  memcpy(f, f16_src->data + b, cnt * 4);
  uint16_t *h = malloc(cnt * 2 + 1);
  nic_f32_to_f16_array(f, h, cnt);
  uint8_t *out = malloc(cnt * 2 + 1);
  for (size_t i = 0; i < cnt; i++) { /* little-endian */
    out[2 * i] = (uint8_t)(h[i] & 0xff);
    out[2 * i + 1] = (uint8_t)(h[i] >> 8);
  }
  free(f);
  free(h);
  *n = cnt * 2;
  return out;
}

static void test_f16(void) {
  raw_st r;
  CHECK(raw_read(saved, &r) == 0);
  f16_src = &r;
  json_object_object_foreach(r.root, key, e) {
    if (strcmp(key, "__metadata__"))
      json_object_object_add(e, "dtype", json_object_new_string("F16"));
  }
  raw_repack(&r, f16_bytes);
  const char *p = tmp_path("f16.safetensors");
  raw_write(p, r.root, r.data, r.dlen);
  raw_free(&r);
  nic_model *m = NULL, *ref = NULL;
  nic_error err = {0};
  CHECK_OK(nic_model_load(&m, p, &err));
  CHECK_OK(nic_model_load(&ref, saved, &err));
  if (m && ref) {
    int np;
    nic_param **ps = nic_model_params(ref, &np);
    int exact = 1;
    double worst = 0;
    for (int i = 0; i < np; i++) {
      nic_param *q = nic_model_param(m, ps[i]->name);
      for (int64_t j = 0; q && j < nic_tensor_numel(&ps[i]->value); j++) {
        float want = nic_f16_to_f32(nic_f32_to_f16(ps[i]->value.data[j]));
        exact &= q->value.data[j] == want;
        double d = fabs(q->value.data[j] - ps[i]->value.data[j]);
        if (d > worst) worst = d;
      }
    }
    CHECK(exact);
    CHECK(worst > 0 && worst < 1e-3);
  }
  nic_model_free(m);
  nic_model_free(ref);
}

static void test_missing_file(void) {
  const char *p = tmp_path("does-not-exist.safetensors");
  expect_fail(p, NIC_EIO, "does-not-exist");
  expect_fail(tmpdir, NIC_EIO, NULL); /* a directory */
}

static void test_save_errors(void) {
  nic_model *m = build_all_kinds();
  nic_error err = {0};
  CHECK(nic_model_save(m, "/nonexistent-dir/x.safetensors", &err) == NIC_EIO);
  CHECK(strstr(err.msg, "/nonexistent-dir/x.safetensors") != NULL);
  nic_model_set_meta(m, "architecture", "\"mine\"");
  CHECK(nic_model_save(m, tmp_path("reserved.safetensors"), &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "reserved") != NULL);
  nic_model_free(m);
  /* a metadata value that is not JSON (written by another tool) is kept
   * as a JSON string */
  raw_st r;
  CHECK(raw_read(saved, &r) == 0);
  json_object_object_add(entry(&r, "__metadata__"), "comment", json_object_new_string("first run"));
  const char *p = tmp_path("comment.safetensors");
  raw_write(p, r.root, r.data, r.dlen);
  raw_free(&r);
  CHECK_OK(nic_model_load(&m, p, &err));
  if (m) {
    const char *v = nic_model_get_meta(m, "comment");
    CHECK(v && !strcmp(v, "\"first run\""));
    CHECK(nic_model_get_meta(m, "format") == NULL); /* reserved keys stay in the file */
  }
  nic_model_free(m);
}

/* Random damage to the header (and sometimes the length or the data):
 * the loader must return cleanly, OK or a named error, never crash. */
static void test_fuzz(void) {
  size_t n;
  uint8_t *orig = read_all(saved, &n);
  uint64_t h = get_u64(orig);
  uint8_t *b = malloc(n);
  const char *p = tmp_path("fuzz.safetensors");
  nic_rng r;
  nic_rng_seed(&r, 2024);
  /* NIC_FUZZ_ITERS runs a longer campaign by hand */
  const char *env = getenv("NIC_FUZZ_ITERS");
  int iters = env ? atoi(env) : getenv("NIC_SANITIZED") ? 1500 : 4000, ok = 0, bad = 0;
  static const char tokens[] = "{}[]\":,0123456789-.eE ntfaslu\\\x80\xff";
  for (int it = 0; it < iters; it++) {
    memcpy(b, orig, n);
    int flips = 1 + (int)nic_rng_below(&r, 4);
    for (int f = 0; f < flips; f++) {
      size_t at;
      uint64_t where = nic_rng_below(&r, 20);
      if (where == 0)
        at = nic_rng_below(&r, 8); /* the length */
      else if (where == 1)
        at = 8 + (size_t)h + nic_rng_below(&r, n - 8 - (size_t)h); /* the data */
      else
        at = 8 + nic_rng_below(&r, h);
      if (nic_rng_below(&r, 2))
        b[at] ^= (uint8_t)(1u << nic_rng_below(&r, 8));
      else
        b[at] = (uint8_t)tokens[nic_rng_below(&r, sizeof tokens - 1)];
    }
    size_t len = nic_rng_below(&r, 10) == 0 ? nic_rng_below(&r, n + 1) : n;
    write_all(p, b, len);
    nic_model *m = NULL;
    nic_error err = {0};
    nic_status s = nic_model_load(&m, p, &err);
    if (s == NIC_OK) {
      ok++;
      nic_model_free(m);
    } else {
      bad++;
      if (!(s == NIC_EFORMAT || s == NIC_EIO) || !strstr(err.msg, p)) {
        nic_test_failures++;
        fprintf(stderr, "  fuzz %d: status %d: %s\n", it, (int)s, err.msg);
      }
    }
  }
  printf("  fuzz: %d loaded, %d rejected\n", ok, bad);
  CHECK(bad > iters / 2);
  free(b);
  free(orig);
}

/* With the compute backend: a loaded model computes the same outputs, bit
 * for bit, in eval mode; so does an inference-optimized one. */
static void test_forward_identical(void) {
  nic_ctx *ctx = nic_test_ctx(3);
  nic_model *m = build_all_kinds();
  nic_error err = {0};
  nic_tensor x = NIC_TENSOR_INIT, y0 = NIC_TENSOR_INIT;
  nic_tensor_alloc4(&x, 4, 3, 16, 16, &err);
  nic_test_fill_uniform(&x, 9, -1, 1);
  const nic_tensor *y = NULL;
  CHECK_OK(nic_model_forward(m, ctx, &x, 0, &y, &err));
  CHECK_OK(nic_tensor_copy(&y0, y, &err));
  for (int pass = 0; pass < 2; pass++) {
    const char *p = tmp_path(pass ? "opt.safetensors" : "fwd.safetensors");
    CHECK_OK(nic_model_save(m, p, &err));
    nic_model *l = NULL;
    CHECK_OK(nic_model_load(&l, p, &err));
    if (!l) break;
    check_same_model(m, l);
    CHECK_OK(nic_model_forward(l, ctx, &x, 0, &y, &err));
    CHECK(y && nic_tensor_same_shape(y, &y0));
    if (pass == 0) {
      CHECK(!memcmp(y->data, y0.data, sizeof(float) * (size_t)nic_tensor_numel(&y0)));
    } else { /* optimized: compare with the optimized original, and loosely with y0 */
      double worst = 0;
      for (int64_t i = 0; i < nic_tensor_numel(&y0); i++)
        worst = fmax(worst, fabs(y->data[i] - y0.data[i]));
      CHECK(worst < 1e-4);
      CHECK(l->inference_only && nic_model_num_trainable(l) == 0);
      const nic_tensor *y2 = NULL;
      nic_tensor yl = NIC_TENSOR_INIT;
      nic_tensor_copy(&yl, y, &err);
      CHECK_OK(nic_model_forward(m, ctx, &x, 0, &y2, &err));
      CHECK(!memcmp(y2->data, yl.data, sizeof(float) * (size_t)nic_tensor_numel(&yl)));
      nic_tensor_free(&yl);
    }
    nic_model_free(l);
    if (pass == 0) CHECK_OK(nic_model_optimize_inference(m, &err));
  }
  nic_tensor_free(&x);
  nic_tensor_free(&y0);
  nic_model_free(m);
  nic_ctx_free(ctx);
}

/* ---- images ----------------------------------------------------------------------- */

/* Writes a w x h image of `bands` bands of `fmt` (uchar or ushort) through
 * libvips, pixel values from f(x, y, band). */
static void write_image(const char *path, int w, int h, int bands, VipsBandFormat fmt,
                        VipsInterpretation interp, unsigned (*f)(int, int, int)) {
  size_t es = fmt == VIPS_FORMAT_USHORT ? 2 : 1;
  uint8_t *buf = malloc((size_t)w * h * bands * es);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int b = 0; b < bands; b++) {
        size_t i = ((size_t)y * w + x) * bands + b;
        if (es == 2)
          ((uint16_t *)buf)[i] = (uint16_t)f(x, y, b);
        else
          buf[i] = (uint8_t)f(x, y, b);
      }
  VipsImage *im = vips_image_new_from_memory(buf, (size_t)w * h * bands * es, w, h, bands, fmt);
  im->Type = interp;
  if (vips_image_write_to_file(im, path, NULL)) {
    fprintf(stderr, "cannot write %s: %s\n", path, vips_error_buffer());
    exit(1);
  }
  g_object_unref(im);
  free(buf);
}

static unsigned pat_rgb(int x, int y, int b) {
  return (unsigned)((x * 7 + y * 13 + b * 50) % 256);
}
static unsigned pat_rgba(int x, int y, int b) {
  return b == 3 ? (x < 4 ? 0u : x < 8 ? 128u : 255u) : pat_rgb(x, y, b);
}
static unsigned pat_grey(int x, int y, int b) {
  return (unsigned)((x + y * 3 + b) % 256);
}
static unsigned pat_16(int x, int y, int b) {
  return pat_rgb(x, y, b) * 257u + 3u;
}

static void test_image_load(void) {
  if (VIPS_INIT("test_modelio")) {
    nic_test_failures++;
    return;
  }
  nic_error err = {0};
  uint8_t *px = NULL;
  int w, h;
  /* lossless formats round-trip exactly */
  const char *png = tmp_path("rgb.png"), *tif = tmp_path("rgb.tif");
  write_image(png, 12, 10, 3, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB, pat_rgb);
  write_image(tif, 12, 10, 3, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB, pat_rgb);
  const char *files[] = {png, tif};
  for (int f = 0; f < 2; f++) {
    CHECK_OK(nic_image_load_rgb8(files[f], &px, &w, &h, &err));
    CHECK(w == 12 && h == 10);
    int same = px != NULL;
    for (int y = 0; same && y < 10; y++)
      for (int x = 0; x < 12; x++)
        for (int b = 0; b < 3; b++) same &= px[(y * 12 + x) * 3 + b] == pat_rgb(x, y, b);
    CHECK(same);
    free(px);
  }
  /* JPEG: lossy, close */
  const char *jpg = tmp_path("rgb.jpg");
  write_image(jpg, 16, 16, 3, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB, pat_grey);
  CHECK_OK(nic_image_load_rgb8(jpg, &px, &w, &h, &err));
  CHECK(w == 16 && h == 16);
  free(px);
  /* alpha flattened onto white: a=0 -> 255, a=255 -> the colour */
  const char *rgba = tmp_path("rgba.png");
  write_image(rgba, 12, 2, 4, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB, pat_rgba);
  CHECK_OK(nic_image_load_rgb8(rgba, &px, &w, &h, &err));
  if (px) {
    CHECK(px[0] == 255 && px[1] == 255 && px[2] == 255);
    int x = 10, y = 1;
    for (int b = 0; b < 3; b++) CHECK(px[(y * 12 + x) * 3 + b] == pat_rgb(x, y, b));
    x = 5; /* half transparent: halfway to white */
    for (int b = 0; b < 3; b++)
      CHECK(abs((int)px[(y * 12 + x) * 3 + b] - (int)(pat_rgb(x, y, b) * 128 + 255 * 127) / 255) <=
            1);
  }
  free(px);
  /* grey -> three equal bands */
  const char *grey = tmp_path("grey.png");
  write_image(grey, 9, 7, 1, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_B_W, pat_grey);
  CHECK_OK(nic_image_load_rgb8(grey, &px, &w, &h, &err));
  if (px) {
    int same = 1;
    for (int i = 0; i < 9 * 7; i++)
      same &= px[3 * i] == pat_grey(i % 9, i / 9, 0) && px[3 * i + 1] == px[3 * i] &&
              px[3 * i + 2] == px[3 * i];
    CHECK(same);
  }
  free(px);
  /* 16-bit RGB -> the high byte */
  const char *p16 = tmp_path("rgb16.png");
  write_image(p16, 6, 5, 3, VIPS_FORMAT_USHORT, VIPS_INTERPRETATION_RGB16, pat_16);
  CHECK_OK(nic_image_load_rgb8(p16, &px, &w, &h, &err));
  if (px) {
    int close = 1;
    for (int i = 0; i < 6 * 5 * 3; i++)
      close &= abs((int)px[i] - (int)pat_rgb(i / 3 % 6, i / 18, i % 3)) <= 1;
    CHECK(close);
  }
  free(px);
  /* unreadable: garbage, truncated, missing; the message names the file */
  const char *junk = tmp_path("junk.jpg");
  write_all(junk, "this is not an image at all", 27);
  CHECK(nic_image_load_rgb8(junk, &px, &w, &h, &err) == NIC_EIO);
  CHECK(px == NULL && strstr(err.msg, junk) != NULL);
  size_t n;
  uint8_t *jb = read_all(jpg, &n);
  const char *trunc = tmp_path("trunc.jpg");
  write_all(trunc, jb, n / 2);
  free(jb);
  CHECK(nic_image_load_rgb8(trunc, &px, &w, &h, &err) == NIC_EIO);
  CHECK(strstr(err.msg, trunc) != NULL);
  free(px);
  px = NULL;
  const char *none = tmp_path("none.png");
  CHECK(nic_image_load_rgb8(none, &px, &w, &h, &err) == NIC_EIO);
  CHECK(strstr(err.msg, none) != NULL);
}

/* A name ending in ']' must not be taken for libvips load options. */
static void test_image_odd_name(void) {
  nic_error err = {0};
  const char *png = tmp_path("rgb.png"), *odd = tmp_path("copy[1]");
  size_t n;
  uint8_t *b = read_all(png, &n), *px = NULL;
  write_all(odd, b, n);
  free(b);
  int w, h;
  CHECK_OK(nic_image_load_rgb8(odd, &px, &w, &h, &err));
  CHECK(w == 12 && h == 10 && px && px[3] == pat_rgb(1, 0, 0));
  free(px);
}

static void test_resize(void) {
  nic_error err = {0};
  /* 4x4 -> 2x2 is the 2x2 block mean (rounded half up) */
  uint8_t src[16], dst[4];
  for (int i = 0; i < 16; i++) src[i] = (uint8_t)(i * 10 + (i % 3));
  CHECK_OK(nic_image_resize_area(src, 4, 4, 1, dst, 2, 2, &err));
  for (int y = 0; y < 2; y++)
    for (int x = 0; x < 2; x++) {
      int s = src[(2 * y) * 4 + 2 * x] + src[(2 * y) * 4 + 2 * x + 1] +
              src[(2 * y + 1) * 4 + 2 * x] + src[(2 * y + 1) * 4 + 2 * x + 1];
      CHECK(dst[y * 2 + x] == (s + 2) / 4);
    }
  /* same size: identity */
  uint8_t same[16];
  CHECK_OK(nic_image_resize_area(src, 4, 4, 1, same, 4, 4, &err));
  CHECK(!memcmp(src, same, 16));
  /* 3 -> 2: output 0 covers pixel 0 and half of pixel 1 */
  uint8_t row[3 * 3] = {0, 30, 60, 90, 120, 150, 180, 210, 240}, out[2 * 3];
  CHECK_OK(nic_image_resize_area(row, 3, 1, 3, out, 2, 1, &err));
  CHECK(out[0] == 30 && out[1] == 60 && out[2] == 90);    /* (2*0 + 90)/3, ... */
  CHECK(out[3] == 150 && out[4] == 180 && out[5] == 210); /* (90 + 2*180)/3 */
  /* enlarging replicates */
  uint8_t two[2] = {10, 200}, four[4];
  CHECK_OK(nic_image_resize_area(two, 2, 1, 1, four, 4, 1, &err));
  CHECK(four[0] == 10 && four[1] == 10 && four[2] == 200 && four[3] == 200);
  /* a constant image stays constant at any ratio */
  uint8_t c[7 * 5 * 3], d[3 * 4 * 3];
  memset(c, 77, sizeof c);
  CHECK_OK(nic_image_resize_area(c, 7, 5, 3, d, 3, 4, &err));
  int constant = 1;
  for (size_t i = 0; i < sizeof d; i++) constant &= d[i] == 77;
  CHECK(constant);
  CHECK(nic_image_resize_area(c, 0, 5, 3, d, 3, 4, &err) == NIC_EINVAL);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "%s", nic_test_tmpdir());
  RUN(test_round_trip);
  RUN(test_layout);
  RUN(test_truncated);
  RUN(test_header_length);
  RUN(test_garbage_json);
  RUN(test_dtype);
  RUN(test_shape_mismatch);
  RUN(test_missing_extra);
  RUN(test_offsets);
  RUN(test_bad_metadata);
  RUN(test_f16);
  RUN(test_missing_file);
  RUN(test_save_errors);
  RUN(test_fuzz);
  RUN(test_forward_identical);
  RUN(test_image_load);
  RUN(test_image_odd_name);
  RUN(test_resize);
  return nic_test_finish();
}
