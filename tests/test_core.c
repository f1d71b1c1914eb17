/* Core pieces: errors, tensors, float16 helpers, the random stream, contexts. */
#include <float.h>
#include <string.h>

#include "testutil.h"

static void test_error_messages(void) {
  nic_error e = {0};
  CHECK(nic_err(&e, NIC_EIO, "cannot open %s", "a.svs") == NIC_EIO);
  CHECK(e.code == NIC_EIO);
  CHECK(!strcmp(e.msg, "cannot open a.svs"));
  nic_err_prefix(&e, "slide %d: ", 3);
  CHECK(!strcmp(e.msg, "slide 3: cannot open a.svs"));
  CHECK(nic_err(NULL, NIC_EINVAL, "ignored") == NIC_EINVAL); /* NULL err is allowed */
  CHECK(strcmp(nic_status_str(NIC_EFORMAT), "malformed file") == 0);
}

static void test_tensor_alloc_reuse_and_errors(void) {
  nic_tensor t = NIC_TENSOR_INIT;
  nic_error e = {0};
  CHECK_OK(nic_tensor_alloc4(&t, 2, 3, 4, 5, &e));
  CHECK(nic_tensor_numel(&t) == 120);
  CHECK(t.bytes == 480);
  CHECK(((uintptr_t)t.data & 63) == 0); /* 64-byte aligned for SIMD */
  for (int i = 0; i < 120; i++) CHECK(t.data[i] == 0.0f);
  float *p = t.data;
  CHECK_OK(nic_tensor_alloc2(&t, 4, 10, &e)); /* smaller: buffer reused */
  CHECK(t.data == p && t.ndim == 2 && t.shape[1] == 10);
  int64_t bad[2] = {2, -1};
  CHECK(nic_tensor_alloc(&t, 2, bad, &e) == NIC_EINVAL);
  CHECK(nic_tensor_alloc(&t, 5, bad, &e) == NIC_EINVAL);
  nic_tensor c = NIC_TENSOR_INIT;
  nic_tensor_fill(&t, 2.5f);
  CHECK_OK(nic_tensor_copy(&c, &t, &e));
  CHECK(nic_tensor_same_shape(&c, &t) && c.data != t.data && c.data[39] == 2.5f);
  nic_tensor_free(&c);
  nic_tensor_free(&t);
  CHECK(t.data == NULL && t.ndim == 0);
  float buf[6] = {1, 2, 3, 4, 5, 6};
  int64_t s[2] = {2, 3};
  nic_tensor w;
  nic_tensor_wrap(&w, buf, 2, s);
  nic_tensor_free(&w); /* borrowed memory is not freed */
  CHECK(buf[5] == 6);
}

static void test_f16(void) {
  /* exactly representable values round-trip */
  const float exact[] = {0.0f,
                         -0.0f,
                         1.0f,
                         -2.0f,
                         0.5f,
                         65504.0f,
                         6.103515625e-05f,
                         5.960464477539063e-08f /* smallest subnormal */};
  for (size_t i = 0; i < sizeof exact / sizeof *exact; i++)
    CHECK(nic_f16_to_f32(nic_f32_to_f16(exact[i])) == exact[i]);
  CHECK(nic_f32_to_f16(1.0f) == 0x3c00);
  CHECK(nic_f32_to_f16(-2.0f) == 0xc000);
  CHECK(nic_f32_to_f16(65520.0f) == 0x7c00); /* rounds to infinity */
  CHECK(nic_f32_to_f16(1e-9f) == 0);         /* underflow */
  /* round to nearest even: 1 + 2^-11 is halfway between 1 and 1+2^-10 */
  CHECK(nic_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);
  CHECK(nic_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);
  uint16_t nan = nic_f32_to_f16(NAN);
  CHECK((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff));
  /* relative error of random values within half an ulp (2^-11) */
  nic_rng r;
  nic_rng_seed(&r, 9);
  float src[1000], back[1000];
  uint16_t h[1000];
  for (int i = 0; i < 1000; i++) src[i] = (float)((nic_rng_uniform(&r) - 0.5) * 2000);
  nic_f32_to_f16_array(src, h, 1000);
  nic_f16_to_f32_array(h, back, 1000);
  double worst = 0;
  for (int i = 0; i < 1000; i++) {
    double e = fabs(back[i] - src[i]) / fmax(fabs(src[i]), 6.1e-5);
    if (e > worst) worst = e;
  }
  CHECK(worst <= 1.0 / 2048 + 1e-7);
}

static void test_rng(void) {
  nic_rng a, b;
  nic_rng_seed(&a, 123);
  nic_rng_seed(&b, 123);
  for (int i = 0; i < 100; i++) CHECK(nic_rng_next(&a) == nic_rng_next(&b));
  nic_rng_seed(&b, 124);
  CHECK(nic_rng_next(&a) != nic_rng_next(&b));
  double sum = 0, sq = 0;
  int counts[7] = {0};
  nic_rng_seed(&a, 5);
  const int n = 200000;
  for (int i = 0; i < n; i++) {
    double u = nic_rng_uniform(&a);
    CHECK(u >= 0 && u < 1);
    counts[nic_rng_below(&a, 7)]++;
    double z = nic_rng_normal(&a);
    sum += z;
    sq += z * z;
  }
  CHECK(fabs(sum / n) < 0.01);
  CHECK(fabs(sq / n - 1) < 0.02);
  for (int i = 0; i < 7; i++) CHECK(fabs(counts[i] / (double)n - 1.0 / 7) < 0.005);
}

static void test_ctx(void) {
  nic_ctx *c = NULL;
  nic_error e = {0};
  nic_ctx_opts o = nic_ctx_default_opts();
  o.backend = "tpu";
  CHECK(nic_ctx_create(&c, &o, &e) == NIC_EUNSUPPORTED);
  CHECK(strstr(e.msg, "tpu") != NULL);
  o.backend = NULL;
  o.threads = -1;
  CHECK(nic_ctx_create(&c, &o, &e) == NIC_EINVAL);
  o.threads = 1;
  o.seed = 77;
  CHECK_OK(nic_ctx_create(&c, &o, &e));
  CHECK(nic_ctx_threads(c) == 1);
  CHECK(!strcmp(nic_ctx_backend_name(c), "cpu"));
  nic_rng r;
  nic_rng_seed(&r, 77);
  CHECK(nic_rng_next(nic_ctx_rng(c)) == nic_rng_next(&r)); /* seeded from opts */
  /* two contexts coexist */
  nic_ctx *c2 = NULL;
  CHECK_OK(nic_ctx_create(&c2, NULL, &e));
  CHECK(nic_ctx_threads(c2) >= 1);
  nic_ctx_free(c2);
  nic_ctx_free(c);
}

int main(void) {
  RUN(test_error_messages);
  RUN(test_tensor_alloc_reuse_and_errors);
  RUN(test_f16);
  RUN(test_rng);
  RUN(test_ctx);
  return nic_test_finish();
}
