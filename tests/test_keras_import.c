/* Importing the published Keras encoders (../shared/models/nic-published):
 * the multitask-4 encoder must reproduce the reference embedding of
 * example_128.jpg computed by an independent implementation; the BiGAN
 * encoder imports too and embeds differently; files that are not Keras
 * encoders, or lack pieces, fail with clear errors. Skipped (77) when
 * ../shared is absent. */
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

#include "nic/encoder.h"
#include "nic/image.h"
#include "nn/layer.h"
#include "testutil.h"

static char dir[1024], tmpdir[256];
static char mt4[1200], bigan[1200], example[1200], reference[1200];

/* Embeds the RGB8 image file with model m (eval mode). out: m's units. */
static int embed_file(nic_model *m, nic_ctx *ctx, const char *img, float *out, int n) {
  uint8_t *px = NULL;
  int w, h, start = 1;
  nic_error err = {0};
  nic_tensor x = NIC_TENSOR_INIT;
  const nic_tensor *y = NULL;
  int rc = -1;
  if (nic_image_load_rgb8(img, &px, &w, &h, &err) != NIC_OK) {
    fprintf(stderr, "  %s\n", err.msg);
    return -1;
  }
  if (w == 128 && h == 128 &&
      nic_model_prepare_rgb8(m, px, 1, 128, 128 * 3, 128 * 128 * 3, &x, &start, &err) == NIC_OK &&
      nic_model_forward_from(m, ctx, &x, start, 0, &y, &err) == NIC_OK &&
      nic_tensor_numel(y) == n) {
    memcpy(out, y->data, sizeof(float) * (size_t)n);
    rc = 0;
  } else {
    fprintf(stderr, "  embedding %s failed: %s\n", img, err.msg);
  }
  nic_tensor_free(&x);
  free(px);
  return rc;
}

static int read_reference(float *ref, int n) {
  FILE *f = fopen(reference, "r");
  if (!f) return -1;
  int i = 0;
  while (i < n && fscanf(f, "%f", &ref[i]) == 1) i++;
  fclose(f);
  return i == n ? 0 : -1;
}

static double max_abs_diff(const float *a, const float *b, int n) {
  double w = 0;
  for (int i = 0; i < n; i++) w = fmax(w, fabs((double)a[i] - b[i]));
  return w;
}

static void test_multitask(void) {
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_encoder_import_keras(&m, mt4, &err));
  if (!m) {
    fprintf(stderr, "  %s\n", err.msg);
    return;
  }
  /* architecture, hyper-parameters from the file, metadata */
  CHECK(nic_model_num_nodes(m) == 11);
  for (int k = 1; k <= nic_model_num_nodes(m); k++) {
    const nic_layer_spec *s = nic_model_node_spec(m, k);
    if (s->kind == NIC_LAYER_BATCHNORM) CHECK(s->eps == 1e-3f && s->momentum == 0.8f);
    if (s->kind == NIC_LAYER_CONV2D) CHECK(s->act == NIC_ACT_LEAKY_RELU && s->alpha == 0.2f);
    if (s->kind == NIC_LAYER_FLATTEN) CHECK(s->order == NIC_FLATTEN_NHWC);
  }
  const nic_input_info *in = nic_model_input_info(m);
  CHECK(in->patch_size == 128 && in->mpp == 0.5 && in->mean[0] == 0.5f && in->std[2] == 0.5f);
  const char *v = nic_model_get_meta(m, "encoder_name");
  CHECK(v && !strcmp(v, "\"nic-multitask-4\""));
  v = nic_model_get_meta(m, "source");
  CHECK(v && !strcmp(v, "\"encoder_multitask-4.h5\""));
  v = nic_model_get_meta(m, "imported_from");
  CHECK(v && !strcmp(v, "\"keras\""));
  /* a BN statistic and a transposed dense weight land where they belong */
  nic_param *rv = nic_model_param(m, "bn4.running_var");
  CHECK(rv && rv->value.data[0] > 0);

  float ref[128], got[128], opt[128], back[128];
  CHECK(read_reference(ref, 128) == 0);
  nic_ctx *ctx = nic_test_ctx(1);
  CHECK(embed_file(m, ctx, example, got, 128) == 0);
  double e = max_abs_diff(got, ref, 128);
  printf("  multitask-4 vs reference embedding: max abs error %.3g\n", e);
  CHECK(e <= 1e-3);

  /* through a model file: bit-identical */
  char path[512];
  snprintf(path, sizeof path, "%s/mt4.safetensors", tmpdir);
  CHECK_OK(nic_model_save(m, path, &err));
  nic_model *l = NULL;
  CHECK_OK(nic_model_load(&l, path, &err));
  if (l) {
    CHECK(embed_file(l, ctx, example, back, 128) == 0);
    CHECK(!memcmp(back, got, sizeof got));
    /* inference-optimized (BN folded): same up to rounding */
    CHECK_OK(nic_model_optimize_inference(l, &err));
    CHECK(embed_file(l, ctx, example, opt, 128) == 0);
    double eo = max_abs_diff(opt, ref, 128);
    printf("  multitask-4 optimized for inference: max abs error %.3g\n", eo);
    CHECK(eo <= 1e-3);
  }
  nic_model_free(l);
  nic_model_free(m);
  nic_ctx_free(ctx);
}

static void test_bigan(void) {
  nic_model *m = NULL, *mt = NULL;
  nic_error err = {0};
  CHECK_OK(nic_encoder_import_keras(&m, bigan, &err));
  CHECK_OK(nic_encoder_import_keras(&mt, mt4, &err));
  if (!m || !mt) {
    fprintf(stderr, "  %s\n", err.msg);
    nic_model_free(m);
    nic_model_free(mt);
    return;
  }
  const char *v = nic_model_get_meta(m, "encoder_name");
  CHECK(v && !strcmp(v, "\"nic-bigan\""));
  float a[128], b[128];
  nic_ctx *ctx = nic_test_ctx(1);
  CHECK(embed_file(m, ctx, example, a, 128) == 0);
  CHECK(embed_file(mt, ctx, example, b, 128) == 0);
  int finite = 1;
  for (int i = 0; i < 128; i++) finite &= isfinite(a[i]);
  CHECK(finite);
  double d = max_abs_diff(a, b, 128);
  printf("  bigan vs multitask-4 embedding: max abs difference %.3g\n", d);
  CHECK(d > 0.1);
  nic_model_free(m);
  nic_model_free(mt);
  nic_ctx_free(ctx);
}

/* ---- malformed inputs -------------------------------------------------------- */

static void expect_fail(const char *path, nic_status code, const char *what) {
  nic_model *m = NULL;
  nic_error err = {0};
  nic_status s = nic_encoder_import_keras(&m, path, &err);
  CHECK(s == code);
  CHECK(m == NULL);
  CHECK(strstr(err.msg, path) != NULL);
  if (what && !strstr(err.msg, what)) {
    nic_test_failures++;
    fprintf(stderr, "  expected '%s' in: %s\n", what, err.msg);
  }
  nic_model_free(m);
}

static char *read_config(void) {
  hid_t f = H5Fopen(mt4, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t a = H5Aopen(f, "model_config", H5P_DEFAULT);
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  char *p = NULL, *r = NULL;
  if (H5Aread(a, t, &p) >= 0 && p) {
    r = strdup(p);
    H5free_memory(p);
  }
  H5Tclose(t);
  H5Aclose(a);
  H5Fclose(f);
  return r;
}

/* An HDF5 file with `config` as model_config (none when NULL) and, when
 * copy_weights, the multitask weights minus the dataset `drop`. */
static void make_h5(const char *path, const char *config, int copy_weights, const char *drop) {
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (config) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "model_config", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, &config);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
  }
  if (copy_weights) {
    hid_t src = H5Fopen(mt4, H5F_ACC_RDONLY, H5P_DEFAULT);
    H5Ocopy(src, "model_weights", f, "model_weights", H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(src);
    if (drop) H5Ldelete(f, drop, H5P_DEFAULT);
  }
  H5Fclose(f);
}

/* config with the first occurrence of `from` replaced by `to`. */
static char *edit(const char *config, const char *from, const char *to) {
  const char *at = strstr(config, from);
  if (!at) return strdup(config);
  size_t n = strlen(config) + strlen(to) + 1;
  char *r = malloc(n);
  snprintf(r, n, "%.*s%s%s", (int)(at - config), config, to, at + strlen(from));
  return r;
}

static void test_bad_files(void) {
  char p[600];
  snprintf(p, sizeof p, "%s/missing.h5", tmpdir);
  expect_fail(p, NIC_EIO, "cannot open");
  snprintf(p, sizeof p, "%s/junk.h5", tmpdir);
  FILE *f = fopen(p, "wb");
  fputs("\x89HDF but not really", f);
  fclose(f);
  expect_fail(p, NIC_EFORMAT, "not an HDF5 file");
  expect_fail(example, NIC_EFORMAT, "not an HDF5 file");

  char *cfg = read_config();
  CHECK(cfg != NULL);
  if (!cfg) return;
  snprintf(p, sizeof p, "%s/empty.h5", tmpdir);
  make_h5(p, NULL, 1, NULL);
  expect_fail(p, NIC_EFORMAT, "model_config");
  make_h5(p, "{\"class_name\": \"Model\", \"config\": {\"layers\": [", 1, NULL);
  expect_fail(p, NIC_EFORMAT, "not valid JSON");
  make_h5(p, "{\"class_name\": \"Model\", \"config\": {\"layers\": []}}", 1, NULL);
  expect_fail(p, NIC_EFORMAT, "found 0");
  /* the right config but no weights */
  make_h5(p, cfg, 0, NULL);
  expect_fail(p, NIC_EFORMAT, "conv2d_1");
  /* one dataset missing */
  make_h5(p, cfg, 1, "model_weights/batch_normalization_3/batch_normalization_3/moving_mean:0");
  expect_fail(p, NIC_EFORMAT, "moving_mean");
  /* architectures that differ from the NIC encoder */
  struct {
    const char *from, *to, *what;
  } cases[] = {
      {"\"filters\": 128", "\"filters\": 64", "Conv2D layer 'conv2d_1'"},
      {"\"padding\": \"valid\"", "\"padding\": \"same\"", "Conv2D"},
      {"\"alpha\": 0.20000000298023224", "\"alpha\": 0.3", "LeakyReLU"},
      {"\"class_name\": \"LeakyReLU\"", "\"class_name\": \"ReLU\"", "is ReLU"},
      {"\"center\": true", "\"center\": false", "BatchNormalization"},
      {"\"batch_input_shape\": [null, 64, 64, 3]", "\"batch_input_shape\": [null, 128, 128, 3]",
       "input"},
      {"\"units\": 128, \"activation\": \"linear\"", "\"units\": 128, \"activation\": \"tanh\"",
       "Dense"},
      {"\"units\": 128", "\"units\": 64", "shape 1152x128"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *c = edit(cfg, cases[i].from, cases[i].to);
    CHECK(strcmp(c, cfg) != 0);
    make_h5(p, c, 1, NULL);
    expect_fail(p, NIC_EFORMAT, cases[i].what);
    free(c);
  }
  free(cfg);
}

int main(void) {
  const char *shared = nic_test_shared_dir();
  if (!shared) nic_test_skip("../shared is absent (set NIC_SHARED): no published models");
  snprintf(dir, sizeof dir, "%s/models/nic-published", shared);
  snprintf(mt4, sizeof mt4, "%s/encoder_multitask-4.h5", dir);
  snprintf(bigan, sizeof bigan, "%s/encoder_bigan.h5", dir);
  snprintf(example, sizeof example, "%s/example_128.jpg", dir);
  snprintf(reference, sizeof reference, "%s/example_128.multitask-4.embedding.txt", dir);
  FILE *f = fopen(mt4, "rb");
  if (!f) nic_test_skip("the published NIC encoders are not in ../shared/models/nic-published");
  fclose(f);
  snprintf(tmpdir, sizeof tmpdir, "%s", nic_test_tmpdir());
  RUN(test_multitask);
  RUN(test_bigan);
  RUN(test_bad_files);
  return nic_test_finish();
}
