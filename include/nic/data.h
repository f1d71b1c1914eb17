/* Patch datasets, augmentation and a multi-threaded batch loader for
 * training and evaluating patch encoders.
 *
 * A dataset is a list of labelled image patches with a physical pixel
 * spacing (micrometres per pixel). Every layout (folder per class, CSV,
 * PatchCamelyon HDF5, MNIST idx) presents the same interface: a count, a
 * label kind (classes or a regression value), per-item labels and splits,
 * and loading item i as 8-bit RGB at the encoder's input size and spacing.
 * See docs/datasets.md for the layouts, the geometry rules and the
 * augmentation parameters. */
#ifndef NIC_DATA_H
#define NIC_DATA_H

#include <stdint.h>

#include "nic/ctx.h"
#include "nic/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* PatchCamelyon's spacing: Camelyon16 level 2, 4 x 0.243 um/px (10x). */
#define NIC_PCAM_MPP 0.972

/* ---- datasets ------------------------------------------------------------ */

typedef struct nic_dataset nic_dataset;

typedef enum nic_label_kind {
  NIC_LABEL_AUTO = 0, /* options only: decide from the labels (CSV) */
  NIC_LABEL_CLASS,    /* a class index in [0, num_classes), -1 = unlabelled */
  NIC_LABEL_VALUE     /* a real number (regression), NaN = unlabelled */
} nic_label_kind;

typedef enum nic_split {
  NIC_SPLIT_NONE = 0, /* not assigned (see nic_dataset_split_stratified) */
  NIC_SPLIT_TRAIN,
  NIC_SPLIT_VALID,
  NIC_SPLIT_TEST
} nic_split;

/* Loader option meaning "every item, whatever its split". */
#define NIC_SPLIT_ANY (-1)

typedef struct nic_dataset_opts {
  /* Spacing of the items in um/px. 0 = the format's default: NIC_PCAM_MPP
   * for PatchCamelyon HDF5, unknown for the others (unknown-spacing items
   * are scaled to fill the patch, see nic_patch_from_image). */
  double mpp;
  nic_label_kind labels; /* CSV: AUTO (default), or force CLASS / VALUE */
} nic_dataset_opts;

nic_dataset_opts nic_dataset_default_opts(void);

/* Opens `path` by its layout: a directory (folder per class, optionally
 * split folders, or a labels.csv inside), a .csv file, a PatchCamelyon
 * `*_x.h5` (its `*_y.h5` next to it), or an idx image file (`*-images-*`,
 * its labels file found by replacing "images" with "labels"). opts may be
 * NULL for the defaults. */
nic_status nic_dataset_open(nic_dataset **out, const char *path, const nic_dataset_opts *opts,
                            nic_error *err);

/* root/<class>/<image>, or root/<split>/<class>/<image> when every
 * sub-directory of root is a split name (train, valid/val/validation,
 * test). Images are *.jpg, *.jpeg, *.png, *.tif, *.tiff (any case).
 * Classes are the class folder names, sorted (numerically when all are
 * integers). When root/labels.csv exists it is used instead of scanning
 * (columns path,label[,split], paths relative to root; labels are classes). */
nic_status nic_dataset_open_folder(nic_dataset **out, const char *root,
                                   const nic_dataset_opts *opts, nic_error *err);

/* A CSV of `path,label[,split]` (a header naming these columns in any
 * order is optional; quoted fields allowed; '#' lines skipped). Paths are
 * relative to the CSV's folder unless absolute. With labels AUTO, the
 * labels are regression values when every one is a number and at least one
 * is not an integer, class names otherwise (so 0/1 columns are classes).
 * Empty labels are unlabelled items. */
nic_status nic_dataset_open_csv(nic_dataset **out, const char *csv_path,
                                const nic_dataset_opts *opts, nic_error *err);

/* PatchCamelyon HDF5: dataset `x` (N x H x W x 3 uint8) in x_path and `y`
 * (N, or N x 1 x 1 x 1, integer class) in y_path (NULL = x_path with its
 * "_x.h5" replaced by "_y.h5"). Images are read one at a time by
 * hyperslab, never the whole file. The split is taken from the file name
 * (`_train_`, `_valid_`, `_test_`). */
nic_status nic_dataset_open_pcam_h5(nic_dataset **out, const char *x_path, const char *y_path,
                                    const nic_dataset_opts *opts, nic_error *err);

/* MNIST-style idx files: images (magic 0x0803, N x rows x cols uint8, grey,
 * replicated to RGB; or 0x0804 with a last dimension of 3, RGB) and labels
 * (0x0801, N uint8). Plain files are read lazily with pread; gzip files
 * (*.gz) are decompressed into memory once. A file shorter than its header
 * says is an error. */
nic_status nic_dataset_open_idx(nic_dataset **out, const char *images_path, const char *labels_path,
                                const nic_dataset_opts *opts, nic_error *err);

void nic_dataset_free(nic_dataset *ds);

int64_t nic_dataset_count(const nic_dataset *ds);
const char *nic_dataset_format(const nic_dataset *ds); /* "folder", "csv", "pcam-h5", "idx" */
const char *nic_dataset_source(const nic_dataset *ds); /* the path it was opened from */
double nic_dataset_mpp(const nic_dataset *ds);         /* 0 = unknown */
void nic_dataset_set_mpp(nic_dataset *ds, double mpp);
nic_label_kind nic_dataset_label_kind(const nic_dataset *ds);
int nic_dataset_num_classes(const nic_dataset *ds); /* 0 for VALUE datasets */
const char *nic_dataset_class_name(const nic_dataset *ds, int c);
int nic_dataset_label(const nic_dataset *ds, int64_t i);   /* class, or -1 */
float nic_dataset_value(const nic_dataset *ds, int64_t i); /* regression value, or NaN */
nic_split nic_dataset_split(const nic_dataset *ds, int64_t i);
void nic_dataset_set_split(nic_dataset *ds, int64_t i, nic_split s);
int64_t nic_dataset_count_split(const nic_dataset *ds, int split); /* split or NIC_SPLIT_ANY */
/* A printable name for item i, for messages: its path, or "file.h5[17]". */
void nic_dataset_item_name(const nic_dataset *ds, int64_t i, char *buf, size_t n);

/* Item i's pixels as stored (interleaved RGB8, malloc'd; release with
 * free()). Safe to call from several threads at once. */
nic_status nic_dataset_read(const nic_dataset *ds, int64_t i, uint8_t **pixels, int *width,
                            int *height, nic_error *err);
/* Item i as a size x size RGB8 patch at `mpp` um/px (nic_patch_from_image),
 * written to out (size*size*3 bytes). Thread-safe. */
nic_status nic_dataset_load(const nic_dataset *ds, int64_t i, int size, double mpp, uint8_t *out,
                            nic_error *err);

/* Deterministic stratified train/validation split for items whose split is
 * NONE: within each class (for VALUE datasets, each decile of the value;
 * unlabelled items form their own stratum) the items are shuffled with a
 * stream seeded from (seed, stratum) and round(valid_fraction * count)
 * become VALID, the rest TRAIN. Items that already have a split keep it. */
nic_status nic_dataset_split_stratified(nic_dataset *ds, double valid_fraction, uint64_t seed,
                                        nic_error *err);

/* ---- geometry ------------------------------------------------------------ */

/* Resamples the w x h RGB8 image `src` at src_mpp um/px into a size x size
 * patch at dst_mpp um/px, centred on the image centre: the patch covers
 * size*dst_mpp/zoom um, i.e. r = dst_mpp/(src_mpp*zoom) source pixels per
 * output pixel. r > 1 averages the covered source area (exact fractional
 * box), r < 1 interpolates bilinearly, r == 1 copies (centre crop). Parts of
 * the patch beyond the image are mirrored (reflect, edge not repeated).
 * src_mpp <= 0 means unknown: the shorter side is scaled to `size` and the
 * longer one centre-cropped (then divided by zoom). zoom > 1 magnifies. */
nic_status nic_patch_from_image(const uint8_t *src, int w, int h, double src_mpp, uint8_t *dst,
                                int size, double dst_mpp, double zoom, nic_error *err);

/* ---- augmentation ------------------------------------------------------- */

/* Each transform is off at zero strength. Applied in this order: scale
 * jitter, dihedral, HED stain jitter, HSV/brightness/contrast, blur, noise. */
typedef struct nic_augment {
  int dihedral;             /* 1: one of the 8 flips/90-degree rotations, uniformly */
  float zoom;               /* scale jitter: zoom factor log-uniform in [1/(1+zoom), 1+zoom] */
  float hed_scale;          /* HED: concentration * (1+a), a ~ U(-hed_scale, hed_scale) per stain */
  float hed_shift;          /* HED: + b, b ~ U(-hed_shift, hed_shift) (optical density units) */
  float brightness;         /* RGB * f, f ~ U(1-brightness, 1+brightness) */
  float contrast;           /* (x - mean grey) * f + mean grey, f ~ U(1-contrast, 1+contrast) */
  float saturation;         /* HSV S * f, f ~ U(1-saturation, 1+saturation) */
  float hue;                /* HSV H + d, d ~ U(-hue, hue) in turns (1 = 360 degrees) */
  float blur_prob;          /* probability of a Gaussian blur ... */
  float blur_min, blur_max; /* ... with sigma ~ U(blur_min, blur_max) pixels */
  float noise;              /* additive Gaussian noise, sigma ~ U(0, noise) grey levels */
} nic_augment;

nic_augment nic_augment_none(void);    /* everything off */
nic_augment nic_augment_default(void); /* the training default (docs/datasets.md) */

/* Augments one size x size RGB8 patch in place, drawing every parameter
 * from rng in a fixed order. Scale jitter resamples the patch itself
 * (zooming out mirrors its borders); the loader instead applies it when
 * resampling from the source image, so zooming out shows real context. */
nic_status nic_augment_patch(const nic_augment *a, nic_rng *rng, uint8_t *px, int size,
                             nic_error *err);

/* The seed of the random stream for sample j of epoch e (the loader seeds
 * each sample's augmentation with it, so results do not depend on which
 * thread handles which sample). */
uint64_t nic_data_sample_seed(uint64_t seed, int64_t epoch, int64_t j);

/* ---- loader --------------------------------------------------------------- */

typedef enum nic_sampling {
  NIC_SAMPLE_SEQUENTIAL = 0, /* the items in order (evaluation) */
  NIC_SAMPLE_SHUFFLE,        /* a seeded permutation per epoch */
  NIC_SAMPLE_BALANCED        /* with replacement: a dataset uniformly, then a class uniformly */
} nic_sampling;

/* A batch of samples, valid until the next nic_loader_next / start / free. */
typedef struct nic_batch {
  int n;           /* samples in this batch */
  int size;        /* patch side in pixels */
  int ntasks;      /* datasets the loader draws from */
  uint8_t *pixels; /* n x size x size x 3, interleaved RGB */
  int *task;       /* n: which dataset each sample came from */
  int64_t *item;   /* n: the item within that dataset */
  int *label;      /* n: class, or -1 (unlabelled or a VALUE dataset) */
  float *value;    /* n: regression value, or NaN */
  float *mask;     /* ntasks x n: mask[t*n + i] = 1 when sample i has a label of task t */
  int64_t epoch;   /* the epoch it belongs to */
  int64_t index;   /* its number within the epoch */
} nic_batch;

/* Called from a worker thread, once per unreadable item, with the item's
 * name and the error message. */
typedef void (*nic_loader_error_fn)(void *user, const char *item, const char *msg);

typedef struct nic_loader_opts {
  int batch_size;             /* samples per batch (default 64) */
  int patch_size;             /* output patch side (default 128) */
  double mpp;                 /* output spacing in um/px (default 0.5) */
  int threads;                /* worker threads; 0 = fill batches in the calling thread */
  int prefetch;               /* batches in the ring (K >= 1; default 2 * threads, at least 2) */
  uint64_t seed;              /* order, sampling and augmentation */
  nic_sampling sampling;      /* default SHUFFLE */
  int split;                  /* use items of this nic_split only, or NIC_SPLIT_ANY (default) */
  int64_t epoch_size;         /* samples per epoch for BALANCED; 0 = the number of items */
  int drop_last;              /* drop a final short batch */
  const nic_augment *augment; /* NULL = none (copied at create) */
  nic_loader_error_fn on_error;
  void *on_error_user;
} nic_loader_opts;

nic_loader_opts nic_loader_default_opts(void);

typedef struct nic_loader nic_loader;

/* A loader over `ntasks` datasets (borrowed: they must outlive it; the
 * items of the chosen split are taken now). Each sample of an epoch is
 * decoded, resampled to patch_size at mpp and augmented by the workers into
 * a ring of `prefetch` preallocated batches; the consumer takes them in
 * order. Sample j of epoch e is augmented with the stream seeded by
 * nic_data_sample_seed(seed, e, j), so batches are identical whatever the
 * thread count. An unreadable item is reported (on_error, and
 * nic_loader_error) and replaced by another item of the same dataset and
 * class; only when replacements keep failing does nic_loader_next fail. */
nic_status nic_loader_create(nic_loader **out, nic_dataset *const *datasets, int ntasks,
                             const nic_loader_opts *opts, nic_error *err);
/* Starts (or restarts) epoch `epoch`, abandoning what is left of the
 * current one; the workers begin filling at once. */
nic_status nic_loader_start_epoch(nic_loader *l, int64_t epoch, nic_error *err);
/* The next batch of the epoch, or *batch = NULL after the last. Blocks
 * until it is ready. The previous batch is given back to the ring. A batch
 * whose samples kept failing (see above) returns that error; the next call
 * goes on with the following batch. */
nic_status nic_loader_next(nic_loader *l, const nic_batch **batch, nic_error *err);
int64_t nic_loader_epoch_samples(const nic_loader *l);
int64_t nic_loader_epoch_batches(const nic_loader *l);
/* Unreadable items seen so far, each reported once ("name: message"). */
int nic_loader_num_errors(const nic_loader *l);
/* The k-th message; a copy into buf (thread-safe). */
void nic_loader_error(const nic_loader *l, int k, char *buf, size_t n);
/* Stops the workers (mid-epoch is fine) and frees everything. */
void nic_loader_free(nic_loader *l);

#ifdef __cplusplus
}
#endif
#endif
