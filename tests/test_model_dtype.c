/* Model files with half-precision storage (F16, BF16) and extra tensors:
 * what is stored in which dtype, round trips, the embeddings of an F16 copy
 * of resnet-small against the float32 model, and the errors. */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nic/encoder.h"
#include "testutil.h"

static const char *tmp;

/* resnet-small with every tensor random: weights He-style from the
 * context, then BN gamma/beta/statistics (gamma would be 0 or 1, and the
 * statistics 0 and 1, which every dtype stores exactly). */
static nic_model *random_resnet(nic_ctx *ctx) {
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_encoder_build_resnet_small(&m, 128, &err));
  if (!m) return NULL;
  CHECK_OK(nic_model_init_params(m, ctx, &err));
  int np;
  nic_param **ps = nic_model_params(m, &np);
  for (int i = 0; i < np; i++) {
    const char *dot = strrchr(ps[i]->name, '.');
    if (!strcmp(dot, ".gamma")) nic_test_fill_uniform(&ps[i]->value, 10 + i, 0.5f, 1.5f);
    if (!strcmp(dot, ".beta")) nic_test_fill_uniform(&ps[i]->value, 10 + i, -0.2f, 0.2f);
    if (!strcmp(dot, ".running_mean")) nic_test_fill_uniform(&ps[i]->value, 10 + i, -0.3f, 0.3f);
    if (!strcmp(dot, ".running_var")) nic_test_fill_uniform(&ps[i]->value, 10 + i, 1e-6f, 2.0f);
    if (!strcmp(dot, ".bias")) nic_test_fill_uniform(&ps[i]->value, 10 + i, -0.1f, 0.1f);
  }
  return m;
}

/* The safetensors header of a file, parsed (caller puts it). */
static json_object *read_header(const char *path) {
  FILE *f = fopen(path, "rb");
  unsigned char len8[8];
  json_object *h = NULL;
  if (f && fread(len8, 1, 8, f) == 8) {
    size_t n = 0;
    for (int i = 0; i < 8; i++) n |= (size_t)len8[i] << (8 * i);
    char *text = n < (1u << 26) ? calloc(n + 1, 1) : NULL;
    if (text && fread(text, 1, n, f) == n) h = json_tokener_parse(text);
    free(text);
  }
  if (f) fclose(f);
  CHECK(h != NULL);
  return h;
}

/* The dtype the header gives tensor name ("" when absent). */
static const char *dtype_of(json_object *h, const char *name) {
  json_object *e = NULL, *d = NULL;
  if (!h || !json_object_object_get_ex(h, name, &e) || !json_object_object_get_ex(e, "dtype", &d))
    return "";
  return json_object_get_string(d);
}

static float round_bf16(float v) { /* nearest even, as the writer does */
  uint32_t x;
  memcpy(&x, &v, 4);
  x += 0x7fffu + ((x >> 16) & 1u);
  x &= 0xffff0000u;
  memcpy(&v, &x, 4);
  return v;
}

/* Each tensor is stored in the dtype the rules give, and loads back as
 * that dtype's rounding of the value (exactly, for what stays F32). */
static void check_round_trip(nic_store_dtype dt, const char *dtname) {
  nic_ctx *ctx = nic_test_ctx(3);
  nic_model *m = random_resnet(ctx), *back = NULL;
  char path[600];
  snprintf(path, sizeof path, "%s/rt_%s.safetensors", tmp, dtname);
  nic_error err = {0};
  nic_save_opts so = {dt, NULL, 0};
  CHECK_OK(nic_model_save_opts(m, path, &so, &err));
  CHECK_OK(nic_model_load(&back, path, &err));
  json_object *h = read_header(path);
  int np, bad_dtype = 0, bad_value = 0, half = 0;
  nic_param **ps = nic_model_params(m, &np);
  for (int i = 0; m && back && i < np; i++) {
    const char *dot = strrchr(ps[i]->name, '.');
    int stat = !strcmp(dot, ".running_mean") || !strcmp(dot, ".running_var");
    const char *want = stat || dt == NIC_STORE_F32 ? "F32" : dtname;
    bad_dtype += strcmp(dtype_of(h, ps[i]->name), want) != 0;
    half += !stat && dt != NIC_STORE_F32;
    CHECK(nic_model_param_storage(m, ps[i], dt) ==
          (stat || dt == NIC_STORE_F32 ? NIC_STORE_F32 : dt));
    nic_param *q = nic_model_param(back, ps[i]->name);
    int64_t n = nic_tensor_numel(&ps[i]->value);
    for (int64_t k = 0; q && k < n; k++) {
      float v = ps[i]->value.data[k], want_v = v;
      if (!stat && dt == NIC_STORE_F16) want_v = nic_f16_to_f32(nic_f32_to_f16(v));
      if (!stat && dt == NIC_STORE_BF16) want_v = round_bf16(v);
      bad_value += q->value.data[k] != want_v;
    }
  }
  CHECK(bad_dtype == 0);
  CHECK(bad_value == 0);
  printf("  %s: %d of %d tensors stored as %s\n", dtname, half, np, dtname);
  /* metadata and input description survive */
  if (back) {
    const char *an = nic_model_get_meta(back, "architecture_name");
    CHECK(an && strstr(an, "resnet-small"));
    CHECK(nic_model_input_info(back)->patch_size == 128);
  }
  /* writing the loaded copy again gives the same file (a fixed point) */
  char again[620];
  snprintf(again, sizeof again, "%s.again", path);
  if (back) CHECK_OK(nic_model_save_opts(back, again, &so, &err));
  FILE *a = fopen(path, "rb"), *b = fopen(again, "rb");
  int same = a && b;
  while (same) {
    int ca = fgetc(a), cb = fgetc(b);
    same = ca == cb;
    if (ca == EOF) break;
  }
  CHECK(same);
  if (a) fclose(a);
  if (b) fclose(b);
  json_object_put(h);
  nic_model_free(back);
  nic_model_free(m);
  nic_ctx_free(ctx);
}

static void test_round_trip_f16(void) {
  check_round_trip(NIC_STORE_F16, "F16");
}
static void test_round_trip_bf16(void) {
  check_round_trip(NIC_STORE_BF16, "BF16");
}
static void test_round_trip_f32(void) {
  check_round_trip(NIC_STORE_F32, "F32");
}

/* An F16 file is a little over half the size of the F32 one. */
static void test_size(void) {
  char p32[600], p16[600];
  snprintf(p32, sizeof p32, "%s/rt_F32.safetensors", tmp);
  snprintf(p16, sizeof p16, "%s/rt_F16.safetensors", tmp);
  FILE *a = fopen(p32, "rb"), *b = fopen(p16, "rb");
  CHECK(a && b);
  if (!a || !b) return;
  fseek(a, 0, SEEK_END);
  fseek(b, 0, SEEK_END);
  double r = (double)ftell(b) / (double)ftell(a);
  printf("  F16 file / F32 file = %.3f (%ld / %ld bytes)\n", r, ftell(b), ftell(a));
  CHECK(r > 0.5 && r < 0.52);
  fclose(a);
  fclose(b);
}

/* Max |a - b| over max |a| of two embeddings batches, and their lowest
 * cosine similarity per row. */
static void compare(const nic_tensor *a, const nic_tensor *b, double *rel, double *cos_min) {
  int64_t n = a->shape[0], d = a->shape[1];
  double maxa = 0, maxd = 0;
  *cos_min = 1;
  for (int64_t i = 0; i < n; i++) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t j = 0; j < d; j++) {
      double x = a->data[i * d + j], y = b->data[i * d + j];
      maxa = fmax(maxa, fabs(x));
      maxd = fmax(maxd, fabs(x - y));
      ab += x * y;
      aa += x * x;
      bb += y * y;
    }
    *cos_min = fmin(*cos_min, ab / sqrt(aa * bb));
  }
  *rel = maxd / maxa;
}

/* Embeddings of the F16 (and BF16) copy against the float32 model, in eval
 * mode and after the inference rewrite. The documented tolerance
 * (docs/model-format.md): F16 within 5e-3 of the embeddings' scale. */
static void test_embeddings(void) {
  nic_ctx *ctx = nic_test_ctx(5);
  nic_error err = {0};
  nic_model *ref = random_resnet(ctx);
  const char *names[2] = {"F16", "BF16"};
  nic_store_dtype dts[2] = {NIC_STORE_F16, NIC_STORE_BF16};
  double tol[2] = {5e-3, 4e-2};
  nic_tensor x = NIC_TENSOR_INIT, ya = NIC_TENSOR_INIT, yb = NIC_TENSOR_INIT;
  CHECK_OK(nic_tensor_alloc4(&x, 16, 3, 128, 128, &err));
  nic_test_fill_uniform(&x, 77, -1, 1);
  const nic_tensor *out = NULL;
  for (int opt = 0; opt < 2 && ref; opt++) {
    if (opt) CHECK_OK(nic_model_optimize_inference(ref, &err));
    CHECK_OK(nic_model_forward(ref, ctx, &x, 0, &out, &err));
    if (out) CHECK_OK(nic_tensor_copy(&ya, out, &err));
    for (int k = 0; k < 2; k++) {
      char path[600];
      snprintf(path, sizeof path, "%s/emb_%s_%d.safetensors", tmp, names[k], opt);
      nic_save_opts so = {dts[k], NULL, 0};
      nic_model *m = NULL;
      CHECK_OK(nic_model_save_opts(ref, path, &so, &err));
      CHECK_OK(nic_model_load(&m, path, &err));
      if (!m) continue;
      CHECK_OK(nic_model_forward(m, ctx, &x, 0, &out, &err));
      if (out) CHECK_OK(nic_tensor_copy(&yb, out, &err));
      double rel = 1, cmin = 0;
      compare(&ya, &yb, &rel, &cmin);
      printf("  %s copy%s: max |diff| / max |embedding| = %.2e, min cosine %.7f\n", names[k],
             opt ? " (BN folded)" : "", rel, cmin);
      CHECK(rel < tol[k]);
      CHECK(cmin > 1 - tol[k]);
      nic_model_free(m);
    }
  }
  nic_tensor_free(&x);
  nic_tensor_free(&ya);
  nic_tensor_free(&yb);
  nic_model_free(ref);
  nic_ctx_free(ctx);
}

/* A value F16 cannot hold keeps its tensor in F32; BF16 holds it. */
static void test_out_of_range(void) {
  nic_model *m = NULL, *back = NULL;
  nic_error err = {0};
  CHECK_OK(nic_encoder_build_nic(&m, 8, &err));
  if (!m) return;
  nic_param *w = nic_model_param(m, "embedding.weight");
  nic_param *b = nic_model_param(m, "embedding.bias");
  CHECK(w && b);
  if (!w || !b) return;
  w->value.data[3] = 1e5f;
  b->value.data[0] = 0.1f;
  CHECK(nic_model_param_storage(m, w, NIC_STORE_F16) == NIC_STORE_F32);
  CHECK(nic_model_param_storage(m, b, NIC_STORE_F16) == NIC_STORE_F16);
  CHECK(nic_model_param_storage(m, w, NIC_STORE_BF16) == NIC_STORE_BF16);
  char path[600];
  snprintf(path, sizeof path, "%s/range.safetensors", tmp);
  nic_save_opts so = {NIC_STORE_F16, NULL, 0};
  CHECK_OK(nic_model_save_opts(m, path, &so, &err));
  CHECK_OK(nic_model_load(&back, path, &err));
  if (back) {
    CHECK(nic_model_param(back, "embedding.weight")->value.data[3] == 1e5f);
    CHECK(nic_model_param(back, "embedding.bias")->value.data[0] ==
          nic_f16_to_f32(nic_f32_to_f16(0.1f)));
    CHECK(nic_model_param(back, "embedding.bias")->value.data[0] != 0.1f);
  }
  /* an unknown dtype is refused */
  so.dtype = (nic_store_dtype)7;
  err = (nic_error){0};
  CHECK(nic_model_save_opts(m, path, &so, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "unknown storage dtype") != NULL);
  nic_model_free(back);
  nic_model_free(m);
}

/* Extra tensors: written F32 after the model's, refused by a plain load,
 * returned by nic_model_load_extra; clashing names are refused. */
static void test_extra_tensors(void) {
  nic_model *m = NULL, *back = NULL;
  nic_error err = {0};
  CHECK_OK(nic_encoder_build_nic(&m, 8, &err));
  if (!m) return;
  float a[6] = {1, -2, 3.5f, 1e-30f, 0, 7}, b[2] = {0.25f, -0.5f};
  nic_param ext[2];
  memset(ext, 0, sizeof ext);
  int64_t sa[2] = {2, 3}, sb[1] = {2};
  snprintf(ext[0].name, sizeof ext[0].name, "optim/x/m");
  nic_tensor_wrap(&ext[0].value, a, 2, sa);
  snprintf(ext[1].name, sizeof ext[1].name, "optim/y/v");
  nic_tensor_wrap(&ext[1].value, b, 1, sb);
  char path[600];
  snprintf(path, sizeof path, "%s/extra.safetensors", tmp);
  nic_save_opts so = {NIC_STORE_F16, ext, 2};
  CHECK_OK(nic_model_save_opts(m, path, &so, &err));
  json_object *h = read_header(path);
  CHECK(!strcmp(dtype_of(h, "optim/x/m"), "F32") && !strcmp(dtype_of(h, "conv1.weight"), "F16"));
  json_object_put(h);
  CHECK(nic_model_load(&back, path, &err) == NIC_EFORMAT);
  CHECK(strstr(err.msg, "unexpected tensor 'optim/") != NULL);
  nic_param *got = NULL;
  int ngot = 0;
  CHECK(nic_model_load_extra(&back, path, "other/", &got, &ngot, &err) == NIC_EFORMAT);
  CHECK(got == NULL && ngot == 0);
  CHECK_OK(nic_model_load_extra(&back, path, "optim/", &got, &ngot, &err));
  CHECK(ngot == 2);
  for (int i = 0; i < ngot; i++) {
    int x = !strcmp(got[i].name, "optim/x/m");
    const float *want = x ? a : b;
    CHECK(got[i].value.ndim == (x ? 2 : 1) && nic_tensor_numel(&got[i].value) == (x ? 6 : 2));
    CHECK(!memcmp(got[i].value.data, want, sizeof(float) * (x ? 6 : 2)));
  }
  nic_params_free(got, ngot);
  nic_model_free(back);
  /* a name that is a model param's, or repeated, or empty */
  const char *badnames[3] = {"conv1.weight", "optim/x/m", ""};
  for (int i = 0; i < 3; i++) {
    snprintf(ext[1].name, sizeof ext[1].name, "%s", badnames[i]);
    err = (nic_error){0};
    CHECK(nic_model_save_opts(m, path, &so, &err) == NIC_EINVAL);
    CHECK(strstr(err.msg, "extra tensor name") != NULL);
  }
  nic_model_free(m);
}

int main(void) {
  tmp = nic_test_tmpdir();
  RUN(test_round_trip_f16);
  RUN(test_round_trip_bf16);
  RUN(test_round_trip_f32);
  RUN(test_size);
  RUN(test_embeddings);
  RUN(test_out_of_range);
  RUN(test_extra_tensors);
  return nic_test_finish();
}
