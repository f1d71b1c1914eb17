/* Loader throughput: patches/s of the threaded patch loader with and
 * without the default augmentation, on a folder-per-class patch dataset
 * (e.g. ../shared/data/pcam). A benchmark, not a test: quote medians.
 *   build/bench_loader DIR [MPP] [SECONDS] */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "nic/data.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* CPU seconds used by this process so far (all threads). */
static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Patches per second over whole epochs of `l`, for about `seconds` of
 * wall time; *per_cpu gets patches per CPU second, which does not depend on
 * what else the machine runs (2 x that is the rate on 2 free cores). */
static double measure(nic_loader *l, double seconds, double *per_cpu) {
  double t0 = now(), c0 = cpu_seconds();
  int64_t n = 0;
  for (int64_t epoch = 0; now() - t0 < seconds; epoch++) {
    nic_error e = {0};
    nic_loader_start_epoch(l, epoch, &e);
    const nic_batch *b;
    while (nic_loader_next(l, &b, &e) == NIC_OK && b) n += b->n;
  }
  *per_cpu = (double)n / (cpu_seconds() - c0);
  return (double)n / (now() - t0);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_loader DIR [MPP] [SECONDS]\n");
    return 2;
  }
  double mpp = argc > 2 ? atof(argv[2]) : NIC_PCAM_MPP, secs = argc > 3 ? atof(argv[3]) : 5;
  nic_error e = {0};
  nic_dataset *ds = NULL;
  nic_dataset_opts dopt = nic_dataset_default_opts();
  dopt.mpp = mpp;
  if (nic_dataset_open(&ds, argv[1], &dopt, &e) != NIC_OK) {
    fprintf(stderr, "bench_loader: %s\n", e.msg);
    return 1;
  }
  nic_augment a = nic_augment_default();
  for (int aug = 1; aug >= 0; aug--) {
    nic_loader_opts o = nic_loader_default_opts();
    o.augment = aug ? &a : NULL;
    o.sampling = NIC_SAMPLE_BALANCED;
    o.epoch_size = 2048;
    nic_loader *l = NULL;
    if (nic_loader_create(&l, &ds, 1, &o, &e) != NIC_OK) {
      fprintf(stderr, "bench_loader: %s\n", e.msg);
      nic_dataset_free(ds);
      return 1;
    }
    double per_cpu, rate = measure(l, secs, &per_cpu);
    printf("%s: %.0f patches/s, %.0f per CPU second (128 px at 0.5 um/px, batch 64, %d threads)\n",
           aug ? "default augmentation" : "no augmentation", rate, per_cpu, o.threads);
    nic_loader_free(l);
  }
  nic_dataset_free(ds);
  return 0;
}
