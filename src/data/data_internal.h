/* Private pieces of the data module, shared by its files and its tests. */
#ifndef NIC_DATA_INTERNAL_H
#define NIC_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "nic/data.h"

/* ---- datasets --------------------------------------------------------------- */

typedef struct ds_ops {
  /* Item i's stored pixels as malloc'd RGB8; must be thread-safe. NULL for
   * file-backed datasets, which decode item paths. */
  nic_status (*read)(const nic_dataset *ds, int64_t i, uint8_t **px, int *w, int *h,
                     nic_error *err);
  void (*close)(nic_dataset *ds); /* releases impl */
} ds_ops;

struct nic_dataset {
  const ds_ops *ops;
  void *impl; /* format-specific state (HDF5 handles, idx file) */
  char *source;
  const char *format;
  double mpp;
  nic_label_kind kind;
  int64_t n, cap;
  int nclasses;
  char **classes;
  int *label;     /* n: class or -1 (CLASS datasets; all -1 for VALUE) */
  float *value;   /* n: value or NaN (VALUE datasets; all NaN for CLASS) */
  uint8_t *split; /* n: nic_split */
  /* File-backed items: paths, and during building the label strings, as
   * offsets into one string pool (SIZE_MAX = none). */
  size_t *path_off, *label_off;
  char *pool;
  size_t pool_len, pool_cap;
};

/* An empty dataset of the given format (static string); NULL when out of memory. */
nic_dataset *ds_new(const char *format, const char *source);
/* Appends a file item with its raw label text (NULL or "" = unlabelled). */
nic_status ds_add_file(nic_dataset *ds, const char *path, const char *label, nic_split split,
                       nic_error *err);
/* Turns the raw label strings into classes or values (kind AUTO decides as
 * documented for CSVs) and drops the strings. */
nic_status ds_finish_labels(nic_dataset *ds, nic_label_kind kind, nic_error *err);
/* Sizes the per-item arrays for n items of a non-file dataset (labels -1,
 * values NaN, split NONE). */
nic_status ds_alloc_items(nic_dataset *ds, int64_t n, nic_error *err);
/* Sets nclasses classes named "0".."nclasses-1". */
nic_status ds_set_numeric_classes(nic_dataset *ds, int nclasses, nic_error *err);
const char *ds_path(const nic_dataset *ds, int64_t i); /* NULL for non-file datasets */
/* "train" -> TRAIN etc.; "" -> NONE; -1 for an unknown name. */
int ds_parse_split(const char *s);
/* The split named by a file name (`_train_`, `_valid_`, `_test_`), or NONE. */
nic_split ds_split_from_name(const char *path);

/* Format openers used by nic_dataset_open; each fills a new dataset. */
nic_status ds_open_csv(nic_dataset **out, const char *csv_path, const char *base_dir,
                       const char *format, nic_label_kind kind, nic_error *err);

/* ---- decoding ---------------------------------------------------------------- */

/* Decodes an image file as RGB8: JPEG, PNG and TIFF directly through
 * libjpeg, libpng and libtiff (fast enough to feed training), anything
 * else through nic_image_load_rgb8. Corrupt or truncated data is an error
 * naming the file. */
nic_status data_decode_file(const char *path, uint8_t **px, int *w, int *h, nic_error *err);

/* ---- augmentation ------------------------------------------------------------ */

/* Every random choice of one augmentation, drawn before any pixel is
 * touched so the stream's use does not depend on the image. */
typedef struct aug_draw {
  int dihedral; /* 0..7 */
  double zoom;  /* 1 = none */
  float hed_a[3], hed_b[3];
  int hed; /* apply HED jitter */
  float bright, contrast, sat, hue;
  float blur_sigma;  /* 0 = no blur */
  float noise_sigma; /* 0 = no noise */
} aug_draw;

/* Strengths non-negative and in range. */
nic_status aug_check(const nic_augment *a, nic_error *err);
void aug_draw_params(const nic_augment *a, nic_rng *rng, aug_draw *d);
/* Applies everything but the zoom; noise values come from rng. */
nic_status aug_apply(const aug_draw *d, nic_rng *rng, uint8_t *px, int size, nic_error *err);

/* Individual transforms (exposed for tests). */
/* out = in under dihedral transform k (0..7): bit 2 transposes, bit 0
 * mirrors left-right, bit 1 top-bottom, as a source lookup. out != in. */
void aug_dihedral(const uint8_t *in, uint8_t *out, int size, int k);
int aug_dihedral_inverse(int k);
/* Optical density of an 8-bit value: -log10((v + 1) / 256). */
float aug_od(int v);
/* RGB8 pixel -> HED concentrations (Ruifrok-Johnston stain vectors). */
void aug_rgb_to_hed(const uint8_t rgb[3], float hed[3]);
/* HED jitter of n pixels: c' = c * (1 + a) + b per stain. */
void aug_hed(uint8_t *px, int64_t n, const float a[3], const float b[3]);
/* Hue shift (turns), saturation and brightness factors in HSV, always
 * through the HSV conversion (aug_color skips it when they are neutral). */
void aug_hsv(uint8_t *px, int64_t n, float bright, float sat, float hue);
/* Hue/saturation/brightness in HSV, then contrast around the mean grey. */
void aug_color(uint8_t *px, int64_t n, float bright, float contrast, float sat, float hue);
nic_status aug_blur(uint8_t *px, int size, float sigma, nic_error *err);
void aug_noise(uint8_t *px, int64_t n, float sigma, nic_rng *rng);

/* ---- pixel loops ------------------------------------------------------------------ */

/* Plain comparisons: fminf/fmaxf are library calls without -ffast-math
 * (for their NaN rules), 15x slower in pixel loops and never vectorised. */
static inline float data_max(float a, float b) {
  return a > b ? a : b;
}
static inline float data_min(float a, float b) {
  return a < b ? a : b;
}

/* Rounds to nearest and clips to 0..255. */
static inline uint8_t data_to_u8(float v) {
  return (uint8_t)(int)data_min(data_max(v + 0.5f, 0.0f), 255.0f);
}

/* o += k * x. In runs of 8: GCC's -O2 cost model vectorises no loop that
 * needs a scalar remainder, but does vectorise fixed runs like these. */
static inline void data_axpy(float *restrict o, const float *restrict x, float k, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) o[i + j] += k * x[i + j];
  for (; i < n; i++) o[i] += k * x[i];
}

/* out = data_to_u8(x), in runs of 8. */
static inline void data_store_u8(uint8_t *restrict out, const float *restrict x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) out[i + j] = data_to_u8(x[i + j]);
  for (; i < n; i++) out[i] = data_to_u8(x[i]);
}

/* ---- seeds ------------------------------------------------------------------- */

/* Mixes a seed, a purpose tag and two counters into a stream seed. */
uint64_t data_mix_seed(uint64_t seed, uint64_t tag, uint64_t a, uint64_t b);

#endif
