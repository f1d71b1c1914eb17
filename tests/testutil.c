#define _XOPEN_SOURCE 700 /* nftw */
#include "testutil.h"

#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int nic_test_failures = 0;
int nic_test_checks = 0;

/* Temporary directories made by this test, removed when it finishes
 * (kept on failure, for inspection). Test-only state. */
static char tmpdirs[64][256];
static int ntmpdirs = 0;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

int nic_test_finish(void) {
  if (!nic_test_failures && !getenv("NIC_KEEP_TMP"))
    for (int i = 0; i < ntmpdirs; i++) nftw(tmpdirs[i], rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  int passed = nic_test_checks - nic_test_failures;
  printf("%d passed, %d failed\n", passed, nic_test_failures);
  return nic_test_failures ? 1 : 0;
}

void nic_test_skip(const char *why) {
  printf("SKIP: %s\n", why);
  exit(77);
}

const char *nic_test_shared_dir(void) {
  static char buf[4096]; /* test-only convenience */
  const char *env = getenv("NIC_SHARED");
  const char *dir = env && *env ? env : "../shared";
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return NULL;
  snprintf(buf, sizeof buf, "%s", dir);
  return buf;
}

int nic_test_shared_slides(char *svs, char *tif, size_t n) {
  const char *shared = nic_test_shared_dir();
  if (!shared) {
    printf("  (../shared absent: real-slide checks skipped)\n");
    return 0;
  }
  snprintf(svs, n, "%s/data/slides/CMU-1-Small-Region.svs", shared);
  snprintf(tif, n, "%s/data/slides/CMU-1-Small-Region.pyramid.tif", shared);
  if (access(svs, R_OK) || access(tif, R_OK)) {
    printf("  (%s or %s absent: real-slide checks skipped)\n", svs, tif);
    return 0;
  }
  return 1;
}

const char *nic_test_tmpdir(void) {
  if (ntmpdirs == 64) {
    fprintf(stderr, "too many temporary directories\n");
    exit(1);
  }
  char *buf = tmpdirs[ntmpdirs];
  snprintf(buf, sizeof tmpdirs[0], "/tmp/nic-test-XXXXXX");
  if (!mkdtemp(buf)) {
    perror("mkdtemp");
    exit(1);
  }
  ntmpdirs++;
  return buf;
}

nic_ctx *nic_test_ctx(uint64_t seed) {
  nic_ctx_opts o = nic_ctx_default_opts();
  o.threads = 2;
  o.seed = seed;
  nic_ctx *ctx = NULL;
  nic_error err = {0};
  if (nic_ctx_create(&ctx, &o, &err) != NIC_OK) {
    fprintf(stderr, "cannot create context: %s\n", err.msg);
    exit(1);
  }
  return ctx;
}

void nic_test_fill_uniform(nic_tensor *t, uint64_t seed, float lo, float hi) {
  nic_rng r;
  nic_rng_seed(&r, seed);
  int64_t n = nic_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) t->data[i] = lo + (hi - lo) * (float)nic_rng_uniform(&r);
}

/* L = sum(out * w), evaluated in double for stable differences. */
static double weighted_loss(nic_model *m, nic_ctx *ctx, const nic_tensor *x, const float *w) {
  const nic_tensor *out = NULL;
  nic_error err = {0};
  if (nic_model_forward(m, ctx, x, 1, &out, &err) != NIC_OK) {
    fprintf(stderr, "forward failed: %s\n", err.msg);
    exit(1);
  }
  double L = 0;
  int64_t n = nic_tensor_numel(out);
  for (int64_t i = 0; i < n; i++) L += (double)out->data[i] * w[i];
  return L;
}

static double rel_err(double a, double n) {
  double d = fabs(a - n), s = fabs(a) + fabs(n);
  return d / (s > 1e-2 ? s : 1e-2);
}

double nic_test_gradcheck_model(nic_model *m, nic_ctx *ctx, const nic_tensor *x, float h,
                                int check_input, int max_per_param) {
  nic_error err = {0};
  const nic_tensor *out = NULL;
  if (nic_model_forward(m, ctx, x, 1, &out, &err) != NIC_OK) {
    fprintf(stderr, "forward failed: %s\n", err.msg);
    exit(1);
  }
  int64_t nout = nic_tensor_numel(out);
  float *w = malloc(sizeof(float) * (size_t)nout);
  nic_rng r;
  nic_rng_seed(&r, 1234);
  for (int64_t i = 0; i < nout; i++) w[i] = (float)(nic_rng_uniform(&r) * 2 - 1);
  nic_tensor dout = NIC_TENSOR_INIT, dx = NIC_TENSOR_INIT;
  nic_tensor_alloc(&dout, out->ndim, out->shape, NULL);
  memcpy(dout.data, w, sizeof(float) * (size_t)nout);
  nic_model_zero_grad(m);
  if (nic_model_backward(m, ctx, &dout, check_input ? &dx : NULL, &err) != NIC_OK) {
    fprintf(stderr, "backward failed: %s\n", err.msg);
    exit(1);
  }
  double worst = 0;
  int np = 0;
  nic_param **ps = nic_model_params(m, &np);
  for (int p = 0; p < np; p++) {
    if (!ps[p]->trainable) continue;
    int64_t n = nic_tensor_numel(&ps[p]->value);
    int64_t step = n > max_per_param ? n / max_per_param : 1;
    for (int64_t i = 0; i < n; i += step) {
      float *v = &ps[p]->value.data[i];
      float old = *v;
      *v = old + h;
      double lp = weighted_loss(m, ctx, x, w);
      *v = old - h;
      double lm = weighted_loss(m, ctx, x, w);
      *v = old;
      double num = (lp - lm) / (2.0 * h);
      double e = rel_err(ps[p]->grad.data[i], num);
      if (e > worst) worst = e;
      if (e > 2e-2)
        fprintf(stderr, "  grad mismatch %s[%lld]: analytic %.6g numeric %.6g\n", ps[p]->name,
                (long long)i, ps[p]->grad.data[i], num);
    }
  }
  if (check_input) {
    nic_tensor xc = NIC_TENSOR_INIT;
    nic_tensor_copy(&xc, x, NULL);
    int64_t n = nic_tensor_numel(&xc);
    int64_t step = n > max_per_param ? n / max_per_param : 1;
    for (int64_t i = 0; i < n; i += step) {
      float old = xc.data[i];
      xc.data[i] = old + h;
      double lp = weighted_loss(m, ctx, &xc, w);
      xc.data[i] = old - h;
      double lm = weighted_loss(m, ctx, &xc, w);
      xc.data[i] = old;
      double num = (lp - lm) / (2.0 * h);
      double e = rel_err(dx.data[i], num);
      if (e > worst) worst = e;
      if (e > 2e-2)
        fprintf(stderr, "  grad mismatch input[%lld]: analytic %.6g numeric %.6g\n", (long long)i,
                dx.data[i], num);
    }
    nic_tensor_free(&xc);
  }
  nic_tensor_free(&dout);
  nic_tensor_free(&dx);
  free(w);
  return worst;
}
