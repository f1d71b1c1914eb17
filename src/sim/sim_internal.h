/* Helpers shared by the simulators (src/sim/): seeded sub-streams, image
 * and CSV output, paths. Not part of the public API. */
#ifndef NIC_SIM_INTERNAL_H
#define NIC_SIM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nic/ctx.h"
#include "nic/sim.h"

/* ---- Seeded randomness ----
 * Every random decision is drawn from a stream derived from the user's seed
 * and a few integers naming what it is for (slide index, purpose, grid cell),
 * so that any part of a data set can be regenerated alone and in any order.
 * The mixing is splitmix64's finaliser, applied once per key. */

static inline uint64_t sim_mix(uint64_t h, uint64_t v) {
  uint64_t z = h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* A stream for (seed, a, b, c). */
static inline void sim_rng(nic_rng *r, uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  nic_rng_seed(r, sim_mix(sim_mix(sim_mix(seed, a), b), c));
}

/* Uniform in [0, 1) from a hash, for one-off decisions without a stream. */
static inline double sim_hash01(uint64_t h) {
  return (double)(h >> 11) * 0x1.0p-53;
}

static inline double sim_uniform(nic_rng *r, double lo, double hi) {
  return lo + (hi - lo) * nic_rng_uniform(r);
}

/* Poisson(lambda) draw; normal approximation above 50. */
int64_t sim_poisson(nic_rng *r, double lambda);

/* Shuffles a[0..n) in place (Fisher-Yates). */
void sim_shuffle_int(nic_rng *r, int *a, int n);

/* ---- Files ---- */

/* mkdir -p. */
nic_status sim_mkdirs(const char *dir, nic_error *err);

/* snprintf into buf, failing with NIC_EINVAL when it does not fit. */
nic_status sim_path(char *buf, size_t cap, nic_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* fopen for writing with an error naming the path. */
nic_status sim_fopen(FILE **f, const char *path, const char *mode, nic_error *err);
/* fclose that reports write errors (disk full) naming the path. */
nic_status sim_fclose(FILE *f, const char *path, nic_error *err);

/* Writes an 8-bit PNG: channels 1 (gray) or 3 (RGB), rows `stride` bytes
 * apart. zlevel is the zlib level (1 = fast, 6 = default). */
nic_status sim_png_write(const char *path, const uint8_t *px, int w, int h, int channels,
                         size_t stride, int zlevel, nic_error *err);

/* Compresses an 8-bit RGB image to a baseline JPEG in memory (YCbCr, 2x2
 * chroma subsampling); *out is malloc'd. */
nic_status sim_jpeg_encode(const uint8_t *rgb, int w, int h, size_t stride, int quality,
                           uint8_t **out, size_t *outlen, nic_error *err);

/* Writes a buffer to a file. */
nic_status sim_write_file(const char *path, const void *data, size_t n, nic_error *err);

/* Threads to use for a `threads` option: itself when > 0, else OpenMP's
 * default. */
int sim_threads(int threads);

/* ---- Pyramidal TIFF slides (histo_tiff.c) ----
 * The layout of the file is described at nic_histo_write_tiff (sim.h) and
 * in docs/simulate.md: 256x256 JPEG tiles, levels halved until the longer
 * side is under 1024 px, resolution in px/cm and "mpp=" in level 0's
 * ImageDescription. */

/* Fills the level-0 rectangle [x, x+w) x [y, y+h), which always lies inside
 * the slide, into rgb (3 bytes a pixel, `stride` bytes a row). Called from
 * several threads at once; `thread` (0 .. nthreads-1 of sim_tiff_write)
 * lets the callee keep per-thread scratch. */
typedef nic_status (*sim_tiff_fill_fn)(void *user, int thread, int x, int y, int w, int h,
                                       uint8_t *rgb, int stride, nic_error *err);

typedef struct sim_tiff_src {
  int width, height; /* level 0, px */
  double mpp;        /* um per px at level 0 */
  const char *what;  /* ImageDescription's lead, e.g. "nic simulated H&E slide" */
  sim_tiff_fill_fn fill;
  void *user;
} sim_tiff_src;

/* Writes the slide whose pixels come from slide->fill. Memory stays at a
 * few rows of tiles; lower levels go through temporary files beside path.
 * The file is removed on failure. threads <= 0 means OpenMP's default. */
nic_status sim_tiff_write(const sim_tiff_src *slide, const char *path, int jpeg_quality,
                          int threads, nic_error *err);

#endif
