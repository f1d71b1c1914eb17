/* Minimal test harness: CHECK macros count failures; a test program exits 0
 * when all passed, 1 on failure, 77 when skipped (CTest SKIP_RETURN_CODE). */
#ifndef NIC_TESTUTIL_H
#define NIC_TESTUTIL_H

#include <math.h>
#include <stdio.h>

#include "nic/nic.h"

extern int nic_test_failures;
extern int nic_test_checks;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    nic_test_checks++;                                                                             \
    if (!(cond)) {                                                                                 \
      nic_test_failures++;                                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                     \
    }                                                                                              \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
  do {                                                                                             \
    nic_test_checks++;                                                                             \
    double _a = (a), _b = (b);                                                                     \
    if (!(fabs(_a - _b) <= (tol)) || _a != _a || _b != _b) {                                       \
      nic_test_failures++;                                                                         \
      fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.9g, %s = %.9g (tol %g)\n", __FILE__,       \
              __LINE__, #a, _a, #b, _b, (double)(tol));                                            \
    }                                                                                              \
  } while (0)

/* Asserts a nic call succeeded, printing the error message otherwise. */
#define CHECK_OK(call)                                                                             \
  do {                                                                                             \
    nic_error _e = {0};                                                                            \
    (void)_e;                                                                                      \
    nic_test_checks++;                                                                             \
    nic_status _s = (call);                                                                        \
    if (_s != NIC_OK) {                                                                            \
      nic_test_failures++;                                                                         \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, nic_status_str(_s));    \
    }                                                                                              \
  } while (0)

/* Runs a test function, printing its name. */
#define RUN(fn)                                                                                    \
  do {                                                                                             \
    int _before = nic_test_failures;                                                               \
    fn();                                                                                          \
    printf("%s %s\n", nic_test_failures == _before ? "ok  " : "FAIL", #fn);                        \
    fflush(stdout);                                                                                \
  } while (0)

/* Prints the summary and returns the exit code. */
int nic_test_finish(void);
/* Exits with 77 (skip) after printing why. */
void nic_test_skip(const char *why);
/* Path to ../shared (NIC_SHARED env or the default), or NULL when absent. */
const char *nic_test_shared_dir(void);

/* The two CMU-1 small-region slides in ../shared (the Aperio SVS and its
 * pyramidal TIFF) into svs and tif (n bytes each): 1 when both are
 * readable, else 0 after printing why the caller's checks are skipped. */
int nic_test_shared_slides(char *svs, char *tif, size_t n);
/* A fresh directory under /tmp, removed by nic_test_finish when every check
 * passed (set NIC_KEEP_TMP=1 to keep it). */
const char *nic_test_tmpdir(void);
/* A context with 2 threads and a fixed seed; aborts on failure. */
nic_ctx *nic_test_ctx(uint64_t seed);
/* Fills t with uniform values in [lo, hi) from a private stream. */
void nic_test_fill_uniform(nic_tensor *t, uint64_t seed, float lo, float hi);

/* Finite-difference gradient check of a whole model in training mode with
 * the scalar loss L = sum(out * w) for fixed random weights w: compares the
 * backward gradients of every trainable param and of the input with central
 * differences (double-sided, step h). Dropout layers must be absent or p=0.
 * Returns the max relative error seen (|a-n| / max(1e-2, |a|+|n|)). */
double nic_test_gradcheck_model(nic_model *m, nic_ctx *ctx, const nic_tensor *x, float h,
                                int check_input, int max_per_param);

#endif
