/* The read path of `nic compress` alone: reads every patch of a grid over
 * a slide (P x P pixels at a spacing, row by row) with each slide reader,
 * NIC_SLIDE_READER=openslide (OpenSlide's read_region) and =auto (the
 * direct JPEG-tile reader where it applies), alternately, RUNS times each,
 * and prints the medians and their ratio. Opening the slide is not timed.
 *
 *   bench_slide_read [--mpp 0.5] [--mpp-override X] [--patch 128]
 *                    [--runs 5] [--threads 1] SLIDE...
 *
 * With --threads N the grid rows are dealt to N threads sharing the slide,
 * as compress's readers share it. bench/slide_read.sh runs it on the real
 * CMU-1 pyramid and a larger slide made from it. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nic/slide.h"
#include "slide/slide_internal.h"

typedef struct grid {
  const nic_slide *s;
  double ds;         /* level-0 pixels per patch pixel */
  int P, cols, rows; /* patch size, grid */
  int nthreads;
} grid;

typedef struct worker {
  const grid *g;
  int id;
  int failed;
  char msg[NIC_ERRMSG_MAX];
  unsigned checksum; /* keeps the reads from being optimised away */
} worker;

static double clock_s(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Reads grid rows id, id + nthreads, ... */
static void *work(void *arg) {
  worker *w = arg;
  const grid *g = w->g;
  uint8_t *pix = malloc((size_t)g->P * g->P * 3);
  nic_error err = {0};
  for (int i = w->id; pix && i < g->rows && !w->failed; i += g->nthreads)
    for (int j = 0; j < g->cols; j++) {
      double x0 = j * g->P * g->ds, y0 = i * g->P * g->ds;
      if (nic_slide_read_region_ds_rgb8(g->s, x0, y0, g->ds, g->P, g->P, pix, NULL, &err)) {
        snprintf(w->msg, sizeof w->msg, "%s", err.msg);
        w->failed = 1;
        break;
      }
      w->checksum += pix[(size_t)(j % g->P) * 3 * g->P];
    }
  if (!pix) w->failed = 1;
  free(pix);
  return NULL;
}

/* One timed pass over the grid with the given reader: wall and CPU
 * seconds (all threads) in *cpu; returns the wall seconds, or a negative
 * number on failure. */
static double one_run(const char *path, const char *reader, double mpp, double override, int P,
                      int nthreads, int *npatches, int *fast_level0, double *cpu) {
  setenv("NIC_SLIDE_READER", reader, 1);
  nic_slide *s = NULL;
  nic_error err = {0};
  nic_slide_opts so = {override};
  if (nic_slide_open(&s, path, &so, &err) != NIC_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return -1;
  }
  double mx = 0, my = 0;
  if (nic_slide_spacing(s, &mx, &my, &err) != NIC_OK) {
    fprintf(stderr, "%s\n", err.msg);
    nic_slide_close(s);
    return -1;
  }
  int64_t W, H;
  nic_slide_level_dims(s, 0, &W, &H);
  grid g = {s, mpp / mx, P, 0, 0, nthreads};
  g.cols = (int)(W / (P * g.ds));
  g.rows = (int)(H / (P * g.ds));
  *npatches = g.cols * g.rows;
  *fast_level0 = nic__fast_level(s, nic_slide_best_level(s, g.ds));
  worker *w = calloc((size_t)nthreads, sizeof *w);
  pthread_t *tid = calloc((size_t)nthreads, sizeof *tid);
  double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
  for (int i = 0; i < nthreads; i++) {
    w[i] = (worker){.g = &g, .id = i};
    pthread_create(&tid[i], NULL, work, &w[i]);
  }
  int failed = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(tid[i], NULL);
    if (w[i].failed) {
      fprintf(stderr, "%s\n", w[i].msg);
      failed = 1;
    }
  }
  double t = clock_s(CLOCK_MONOTONIC) - t0;
  *cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
  free(w);
  free(tid);
  nic_slide_close(s);
  return failed ? -1 : t;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
  double mpp = 0.5, override = 0;
  int P = 128, runs = 5, nthreads = 1, first = 1;
  for (; first < argc && argv[first][0] == '-' && first + 1 < argc; first += 2) {
    const char *o = argv[first], *v = argv[first + 1];
    if (!strcmp(o, "--mpp"))
      mpp = atof(v);
    else if (!strcmp(o, "--mpp-override"))
      override = atof(v);
    else if (!strcmp(o, "--patch"))
      P = atoi(v);
    else if (!strcmp(o, "--runs"))
      runs = atoi(v);
    else if (!strcmp(o, "--threads"))
      nthreads = atoi(v);
    else
      break;
  }
  if (first >= argc || mpp <= 0 || P < 1 || runs < 1 || runs > 99 || nthreads < 1) {
    fprintf(stderr, "usage: bench_slide_read [--mpp 0.5] [--mpp-override X] [--patch 128] "
                    "[--runs 5] [--threads 1] SLIDE...\n");
    return 2;
  }
  printf("%-32s %7s | %9s %9s %6s | %9s %9s %6s | %s\n", "slide", "patches", "openslide", "direct",
         "ratio", "openslide", "direct", "ratio", "direct reader");
  printf("%-32s %7s | %26s | %26s |\n", "", "", "wall seconds (median)", "CPU seconds (median)");
  for (int a = first; a < argc; a++) {
    double w_os[99], w_fast[99], c_os[99], c_fast[99];
    int n = 0, fast = 0, dummy = 0;
    for (int r = 0; r < runs; r++) { /* alternate, so load drifts hit both */
      w_os[r] = one_run(argv[a], "openslide", mpp, override, P, nthreads, &n, &dummy, &c_os[r]);
      w_fast[r] = one_run(argv[a], "auto", mpp, override, P, nthreads, &n, &fast, &c_fast[r]);
      if (w_os[r] < 0 || w_fast[r] < 0) return 1;
    }
    double wo = median(w_os, runs), wf = median(w_fast, runs);
    double co = median(c_os, runs), cf = median(c_fast, runs);
    const char *name = strrchr(argv[a], '/') ? strrchr(argv[a], '/') + 1 : argv[a];
    printf("%-32s %7d | %9.3f %9.3f %5.2fx | %9.3f %9.3f %5.2fx | %s\n", name, n, wo, wf, wo / wf,
           co, cf, co / cf, fast ? "used" : "not used");
    printf("%-32s %7s | %7.0f/s %7.0f/s %6s | %6.3f ms %6.3f ms %6s |\n", "", "", n / wo, n / wf,
           "", 1e3 * co / n, 1e3 * cf / n, "");
  }
  printf("(%d runs each, alternating; %d reader thread%s; per-patch lines: patches/s of wall time, "
         "CPU ms per patch)\n",
         runs, nthreads, nthreads > 1 ? "s" : "");
  return 0;
}
