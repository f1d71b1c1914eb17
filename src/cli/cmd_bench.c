/* nic bench encoder: inference and training throughput of an encoder
 * architecture (NIC's or resnet-small) on random patches, in the same shape as
 * bench/torch_encoder.py so the two can be compared in one run (bench/run_encoder_bench.sh). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli/cli.h"
#include "nic/encoder.h"
#include "nn/cpu/cpu_profile.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process (all threads), user + system. On a shared
 * machine it is steadier than wall time: waiting for a core costs none. */
static double cpu_s(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec * 1e-6;
}

/* The 1-minute load average, to print next to the results. */
static double load1(void) {
  double l = -1;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf", &l) != 1) l = -1;
    fclose(f);
  }
  return l;
}

/* What one measured phase produced. */
typedef struct bench_result {
  double rate;   /* patches per second (wall) */
  double cpu_ms; /* process CPU time per batch */
} bench_result;

/* The FP32 peak this machine reaches, measured: every thread runs
 * independent chains of 8-wide fused multiply-adds for a short while. Clock
 * boost and the vector units' real width are in the figure, which the
 * nominal "cpu MHz" x FLOP/cycle would miss. A reference for how well the
 * kernels use the CPU. */
typedef float v8f __attribute__((vector_size(32)));

static double fp32_peak_gflops(int threads) {
  double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    /* 12 independent chains in registers cover 2 FMA pipes x 4-5 cycles
     * of latency (an array would go through memory) */
    v8f a, b;
    for (int i = 0; i < 8; i++) {
      a[i] = 0.9999f;
      b[i] = 1e-4f;
    }
    v8f c0 = b, c1 = b * 2, c2 = b * 3, c3 = b * 4, c4 = b * 5, c5 = b * 6;
    v8f c6 = b * 7, c7 = b * 8, c8 = b * 9, c9 = b * 10, c10 = b * 11, c11 = b * 12;
    long iters = 0;
    double t0 = now_s(), dt;
    do {
      for (int r = 0; r < 4096; r++) {
        c0 = c0 * a + b, c1 = c1 * a + b, c2 = c2 * a + b, c3 = c3 * a + b;
        c4 = c4 * a + b, c5 = c5 * a + b, c6 = c6 * a + b, c7 = c7 * a + b;
        c8 = c8 * a + b, c9 = c9 * a + b, c10 = c10 * a + b, c11 = c11 * a + b;
        /* an empty asm that "uses" every chain stops the compiler from
         * folding the rounds together */
        __asm__ volatile("" : "+x"(c0), "+x"(c1), "+x"(c2), "+x"(c3), "+x"(c4), "+x"(c5));
        __asm__ volatile("" : "+x"(c6), "+x"(c7), "+x"(c8), "+x"(c9), "+x"(c10), "+x"(c11));
      }
      iters += 4096;
    } while ((dt = now_s() - t0) < 0.25);
    v8f sum = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;
    volatile float keep = sum[0] + sum[7]; /* the chains must not be optimised away */
    (void)keep;
    total += (double)iters * 12 * 8 * 2 / dt;
  }
  return total / 1e9;
}

/* With --profile: books the time since *t under `what`, restarts *t. */
static void note(nic_ctx *ctx, const char *what, double *t) {
  if (!nic_profile_enabled(ctx)) return;
  double t1 = now_s();
  nic_profile_note(ctx, what, t1 - *t);
  *t = t1;
}

/* Starts the measured part of a phase: the profile forgets the warm-up. */
static double start_measuring(nic_ctx *ctx) {
  nic_profile_reset(ctx);
  return now_s();
}

static void fill_random_u8(uint8_t *p, size_t n, uint64_t seed) {
  nic_rng r;
  nic_rng_seed(&r, seed);
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(nic_rng_next(&r) >> 56);
}

/* What the benchmark runs: a model file, or an architecture by name
 * (nic_encoder_build_arch: "nic", "resnet-small") with random weights. */
typedef struct bench_model {
  const char *path; /* NULL: build `arch` */
  const char *arch;
} bench_model;

static nic_status load_or_build(const bench_model *bm, nic_ctx *ctx, nic_model **m,
                                nic_error *err) {
  if (bm->path) return nic_model_load(m, bm->path, err);
  nic_status s = nic_encoder_build_arch(m, bm->arch, 128, err);
  if (s == NIC_OK) s = nic_model_init_params(*m, ctx, err);
  return s;
}

/* Closes a measurement begun at wall time t0 / CPU time c0: rate, CPU per
 * batch and, with --profile, the per-layer table. */
static void finish_measuring(nic_ctx *ctx, const char *phase, int batch, long done_n, double t0,
                             double c0, bench_result *res) {
  double wall = now_s() - t0;
  res->rate = done_n / wall;
  res->cpu_ms = 1e3 * (cpu_s() - c0) / (double)(done_n / batch);
  if (nic_profile_enabled(ctx)) {
    char title[64];
    snprintf(title, sizeof title, "%s, batch %d", phase, batch);
    nic_profile_print(ctx, stdout, title, done_n / batch, wall);
  }
}

static int bench_inference(nic_ctx *ctx, const bench_model *bm, int batch, double seconds,
                           bench_result *res, nic_error *err) {
  nic_model *m = NULL;
  nic_tensor x = NIC_TENSOR_INIT;
  uint8_t *pix = NULL;
  int ps = 0, rc = -1;
  if (load_or_build(bm, ctx, &m, err) != NIC_OK) goto done;
  if (nic_model_optimize_inference(m, err) != NIC_OK) goto done;
  ps = nic_model_input_info(m)->patch_size;
  size_t per = (size_t)ps * ps * 3;
  pix = malloc(per * (size_t)batch);
  if (!pix) goto done;
  fill_random_u8(pix, per * (size_t)batch, 7);
  const nic_tensor *y = NULL;
  int start = 1;
  long done_n = 0;
  double t0 = 0, c0 = 0, t;
  for (int it = 0;; it++) {
    if (it == 2) { /* two warm-up batches build the primitives */
      t0 = start_measuring(ctx);
      c0 = cpu_s();
    }
    t = now_s();
    if (nic_model_prepare_rgb8(m, pix, batch, ps, (int64_t)ps * 3, (int64_t)per, &x, &start, err) !=
        NIC_OK)
      goto done;
    note(ctx, "prepare_rgb8", &t);
    if (nic_model_forward_from(m, ctx, &x, start, 0, &y, err) != NIC_OK) goto done;
    if (it >= 2) done_n += batch;
    if (it >= 3 && now_s() - t0 >= seconds) break;
  }
  finish_measuring(ctx, "inference", batch, done_n, t0, c0, res);
  rc = 0;
done:
  free(pix);
  nic_tensor_free(&x);
  nic_model_free(m);
  return rc;
}

/* Encoder + dense classification head, Adam, softmax cross-entropy. */
static int bench_training(nic_ctx *ctx, const bench_model *bm, int batch, double seconds,
                          bench_result *res, nic_error *err) {
  nic_model *m = NULL;
  nic_optimizer *opt = NULL;
  nic_tensor x = NIC_TENSOR_INIT, g = NIC_TENSOR_INIT;
  uint8_t *pix = NULL;
  int *labels = NULL, rc = -1;
  if (load_or_build(bm, ctx, &m, err) != NIC_OK) goto done;
  nic_layer_spec head = nic_spec_dense(2, NIC_ACT_NONE, 0);
  head.name = "bench_head";
  if (nic_model_add(m, head, -1, -1, err) < 0) goto done;
  if (nic_model_init_params(m, ctx, err) != NIC_OK) goto done;
  nic_opt_config oc = nic_opt_default(NIC_OPT_ADAM, 1e-4f);
  if (nic_optimizer_create(&opt, &oc, err) != NIC_OK) goto done;
  int ps = nic_model_input_info(m)->patch_size;
  size_t per = (size_t)ps * ps * 3;
  pix = malloc(per * (size_t)batch);
  labels = malloc(sizeof(int) * (size_t)batch);
  if (!pix || !labels) goto done;
  fill_random_u8(pix, per * (size_t)batch, 11);
  for (int i = 0; i < batch; i++) labels[i] = i & 1;
  long done_n = 0;
  double t0 = 0, c0 = 0, t;
  for (int it = 0;; it++) {
    if (it == 2) {
      t0 = start_measuring(ctx);
      c0 = cpu_s();
    }
    const nic_tensor *y = NULL;
    int start = 1;
    float loss = 0;
    t = now_s();
    if (nic_model_prepare_rgb8(m, pix, batch, ps, (int64_t)ps * 3, (int64_t)per, &x, &start, err) !=
        NIC_OK)
      goto done;
    note(ctx, "prepare_rgb8", &t);
    if (nic_model_forward_from(m, ctx, &x, start, 1, &y, err) != NIC_OK) goto done;
    t = now_s();
    if (nic_loss_softmax_ce(y, labels, NULL, NULL, &loss, &g, err) != NIC_OK) goto done;
    note(ctx, "loss", &t);
    nic_model_zero_grad(m);
    note(ctx, "zero_grad", &t);
    if (nic_model_backward(m, ctx, &g, NULL, err) != NIC_OK) goto done;
    t = now_s();
    if (nic_optimizer_step(opt, m, NULL, err) != NIC_OK) goto done;
    note(ctx, "optimizer step", &t);
    if (it >= 2) done_n += batch;
    if (it >= 3 && now_s() - t0 >= seconds) break;
  }
  finish_measuring(ctx, "training", batch, done_n, t0, c0, res);
  rc = 0;
done:
  free(pix);
  free(labels);
  nic_tensor_free(&x);
  nic_tensor_free(&g);
  nic_optimizer_free(opt);
  nic_model_free(m);
  return rc;
}

static void bench_usage(FILE *f) {
  fprintf(f, "usage: nic bench encoder [options]\n\n"
             "Measures the patch encoder's throughput on random 8-bit RGB patches:\n"
             "inference (BN folded, eval mode) and training (encoder + dense 2-class head,\n"
             "softmax cross-entropy, Adam). Ends with the lines\n"
             "  inference_patches_per_s=N\n  training_patches_per_s=N\n\n"
             "options:\n"
             "  --model M        a nic model file (default: --arch with random weights)\n"
             "  --arch A         the architecture to build when no --model: nic (default,\n"
             "                   the NIC encoder) or resnet-small; bench/torch_encoder.py\n"
             "                   --arch builds the same network in PyTorch\n"
             "  --batch N        inference batch size (default 256)\n"
             "  --train-batch N  training batch size (default 64)\n"
             "  --seconds S      minimum measuring time per phase (default 10)\n"
             "  --threads N      compute threads (default: all cores)\n"
             "  --only WHAT      'inference' or 'training' (default both)\n"
             "  --profile        print where the time goes, per layer and phase (ms per\n"
             "                   batch); NIC_PROFILE=1 does the same for any command\n"
             "  -h, --help       this help\n");
}

int cmd_bench(int argc, char **argv) {
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'},   {"arch", required_argument, 0, 'a'},
      {"batch", required_argument, 0, 'b'},   {"train-batch", required_argument, 0, 'B'},
      {"seconds", required_argument, 0, 's'}, {"threads", required_argument, 0, 't'},
      {"only", required_argument, 0, 'o'},    {"profile", no_argument, 0, 'p'},
      {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  const char *only = NULL;
  bench_model bm = {NULL, "nic"};
  int arch_given = 0;
  int batch = 256, tbatch = 64, threads = 0, profile = 0, c;
  double seconds = 10;
  if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
    bench_usage(stdout);
    return 0;
  }
  if (argc < 2 || strcmp(argv[1], "encoder") != 0) {
    bench_usage(stderr);
    return 2;
  }
  argc--;
  argv++;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'm':
      bm.path = optarg;
      break;
    case 'a':
      bm.arch = optarg;
      arch_given = 1;
      break;
    case 'b':
      if (cli_parse_int("bench", "--batch", optarg, 1, &batch)) return 2;
      break;
    case 'B':
      if (cli_parse_int("bench", "--train-batch", optarg, 2, &tbatch)) return 2;
      break;
    case 's':
      if (cli_parse_double("bench", "--seconds", optarg, &seconds)) return 2;
      break;
    case 't':
      if (cli_parse_int("bench", "--threads", optarg, 0, &threads)) return 2;
      break;
    case 'o':
      only = optarg;
      break;
    case 'p':
      profile = 1;
      break;
    case 'h':
      bench_usage(stdout);
      return 0;
    default:
      return cli_usage("bench", "unknown option");
    }
  }
  if (only && strcmp(only, "inference") && strcmp(only, "training"))
    return cli_usage("bench", "--only must be 'inference' or 'training'");
  if (bm.path && arch_given) return cli_usage("bench", "--model and --arch exclude each other");
  if (strcmp(bm.arch, "nic") && strcmp(bm.arch, "resnet-small"))
    return cli_usage("bench", "--arch must be nic or resnet-small, got '%s'", bm.arch);
  nic_ctx *ctx = cli_make_ctx(threads, 42);
  if (!ctx) return 1;
  if (profile) nic_profile_enable(ctx, 1);
  nic_error err = {0};
  nic_model *probe = NULL;
  if (load_or_build(&bm, ctx, &probe, &err) != NIC_OK) {
    nic_ctx_free(ctx);
    return cli_fail(&err);
  }
  double flops = (double)nic_model_flops(probe);
  nic_model_free(probe);
  double peak = fp32_peak_gflops(nic_ctx_threads(ctx));
  printf("threads=%d backend=%s model=%s forward_mflop_per_patch=%.1f fp32_peak_gflops=%.0f\n",
         nic_ctx_threads(ctx), nic_ctx_backend_name(ctx), bm.path ? bm.path : bm.arch, flops / 1e6,
         peak);
  bench_result inf = {0, 0}, trn = {0, 0};
  int rc = 0;
  if (!only || !strcmp(only, "inference")) {
    if (bench_inference(ctx, &bm, batch, seconds, &inf, &err)) {
      rc = cli_fail(&err);
    } else {
      double gf = inf.rate * flops / 1e9;
      printf("inference: batch %d, %.1f patches/s, %.1f GFLOP/s, %.0f%% of FP32 peak, "
             "%.1f ms CPU per batch\n",
             batch, inf.rate, gf, peak > 0 ? 100 * gf / peak : 0, inf.cpu_ms);
    }
  }
  if (!rc && (!only || !strcmp(only, "training"))) {
    if (bench_training(ctx, &bm, tbatch, seconds, &trn, &err)) {
      rc = cli_fail(&err);
    } else { /* forward + backward-data + backward-weights ~ 3x forward */
      double gf = trn.rate * flops * 3 / 1e9;
      printf("training: batch %d, %.1f patches/s, ~%.1f GFLOP/s, ~%.0f%% of FP32 peak, "
             "%.1f ms CPU per batch\n",
             tbatch, trn.rate, gf, peak > 0 ? 100 * gf / peak : 0, trn.cpu_ms);
    }
  }
  if (!rc) {
    printf("load_1min=%.2f\n", load1());
    if (!only || !strcmp(only, "inference")) printf("inference_patches_per_s=%.1f\n", inf.rate);
    if (!only || !strcmp(only, "training")) printf("training_patches_per_s=%.1f\n", trn.rate);
  }
  nic_ctx_free(ctx);
  return rc;
}
