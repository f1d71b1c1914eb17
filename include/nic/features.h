/* Compressed slides: the HDF5 file that holds the patch embeddings of one
 * whole-slide image, written by `nic compress` and read by everything after
 * it (training, prediction, heatmaps).
 *
 * A slide is cut into a non-overlapping grid of cells of `stride_level0`
 * level-0 pixels (one patch_size patch at the encoder's spacing each), and
 * every kept (tissue) cell is encoded into C floats. The file stores the
 * kept cells only, as CLAM and TRIDENT do:
 *
 *   features              N x C      float32   one embedding per kept cell
 *   coords                N x 2      int32     level-0 top-left (x, y) of each
 *   features_orientations N x 8 x C  float32   optional: the 8 rotations/flips
 *   tissue_mask           H x W      uint8     1 where a cell has a row
 *   tissue_fraction       H x W      float32   optional: tissue cover per cell
 *
 * rows in row-major grid order, plus attributes describing the grid, the
 * slide and the encoder. The dense C x H x W grid (zeros where nothing was
 * kept) is rebuilt from coords by nic_features_read_grid. The full layout,
 * every attribute, and how to read a file from Python are in
 * docs/compressed-slide-format.md.
 *
 * The grid: cell (i, j) (row i, column j) covers level-0 pixels
 *   x in [origin_x + j * stride_level0, origin_x + (j + 1) * stride_level0)
 *   y in [origin_y + i * stride_level0, origin_y + (i + 1) * stride_level0)
 * and its coords row holds the top-left corner rounded to the nearest
 * integer (halves up): nic_features_cell_x / nic_features_cell_y. stride may
 * be fractional (128 px at 0.5 um/px on a 0.2428 um/px slide is 263.6
 * level-0 px); the exact corner is always origin + index * stride.
 *
 * Writing is atomic: a writer fills `<path>.tmp.<pid>` and commit renames it
 * over `path`, so a file at its final name is always complete. Reading
 * treats the file as untrusted and checks it fully on open.
 *
 * One writer or reader must not be used by two threads at once, and the
 * HDF5 library (hdf5-serial) is not thread-safe: serialise all HDF5 work in
 * a process. */
#ifndef NIC_FEATURES_H
#define NIC_FEATURES_H

#include <stdint.h>

#include "nic/status.h"
#include "nic/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the layout written here (root attribute `format_version`). */
#define NIC_FEATURES_FORMAT_VERSION 1
/* Number of orientations in features_orientations, in this order:
 *   0 identity, 1 rot90, 2 rot180, 3 rot270,
 *   4 flip (left-right mirror), 5 flip then rot90 (= transpose),
 *   6 flip then rot180 (= top-bottom mirror), 7 flip then rot270
 * where rotk turns the patch counter-clockwise by k*90 degrees as seen on
 * screen (numpy: np.rot90(p, k) and np.rot90(np.fliplr(p), k), p in H x W x 3). */
#define NIC_FEATURES_ORIENTATIONS 8

/* Everything known about a compressed slide except the arrays. Writers fill
 * it (start from nic_features_default_meta); readers return one whose
 * strings belong to the reader. */
typedef struct nic_features_meta {
  /* the slide */
  const char *slide_id;   /* name; NULL on write = the file name without ".h5" */
  const char *slide_path; /* the slide file compressed (NULL = unknown) */
  int64_t slide_width;    /* level-0 pixels (0 = unknown) */
  int64_t slide_height;
  double slide_mpp_x; /* level-0 um/px (0 = unknown) */
  double slide_mpp_y;
  double level0_magnification; /* objective power, e.g. 40 (0 = unknown) */

  /* the grid */
  int grid_h, grid_w;        /* rows and columns, >= 1 */
  double stride_level0;      /* cell side in level-0 px (>= 1), may be fractional */
  double origin_x, origin_y; /* level-0 position of cell (0, 0)'s corner (0, 0) */
  int patch_size;            /* patch side in pixels at `mpp` (128) */
  double mpp;                /* the encoder's spacing in um/px (0.5) */
  double tissue_threshold;   /* kept cells have tissue fraction >= this (0.5) */

  /* the encoder */
  int embed_dim;              /* C (128) */
  const char *encoder;        /* e.g. "nic-multitask-4" (NULL = unknown) */
  const char *encoder_sha256; /* hex SHA-256 of the model file (NULL = unknown) */
  int has_orientations;       /* 1: features_orientations is present */

  /* provenance */
  const char *command_line; /* how the file was made (NULL = none) */
  const char *nic_version;  /* read only: the nic version that wrote the file */

  /* read only: what the file holds */
  int64_t count;           /* N, the number of kept cells */
  int has_tissue_fraction; /* 1: tissue_fraction is present */
} nic_features_meta;

/* patch_size 128, mpp 0.5, embed_dim 128, stride_level0 128, tissue_threshold
 * 0.5, a 1 x 1 grid; everything else zero/NULL. */
nic_features_meta nic_features_default_meta(void);

/* ---- the grid ------------------------------------------------------------ */

/* Sets the grid for a slide of width x height level-0 pixels at slide_mpp
 * um/px (its x spacing; cells are square in level-0 pixels):
 * stride_level0 = patch_size * mpp / slide_mpp, grid_w = ceil(width /
 * stride_level0), grid_h likewise (the last column and row may reach past
 * the slide), origin (0, 0), and slide_width/height. m->patch_size and
 * m->mpp must be set. NIC_EINVAL when the numbers make no grid. */
nic_status nic_features_meta_set_grid(nic_features_meta *m, int64_t width, int64_t height,
                                      double slide_mpp, nic_error *err);

/* Level-0 x (y) stored in coords for column j (row i):
 * floor(origin + index * stride_level0 + 0.5). compress must place patches
 * with these so that readers find them again. */
int32_t nic_features_cell_x(const nic_features_meta *m, int j);
int32_t nic_features_cell_y(const nic_features_meta *m, int i);
/* The cell whose stored corner is exactly (x, y): 1 and *i, *j set, or 0
 * when (x, y) is not the corner of a cell inside the grid. */
int nic_features_coord_cell(const nic_features_meta *m, int64_t x, int64_t y, int *i, int *j);

/* ---- writing ------------------------------------------------------------- */

typedef struct nic_features_write_opts {
  int chunk_rows; /* rows per HDF5 chunk of features (0 = 1024) */
  int gzip_level; /* 0 = no compression, 1..9 = deflate with byte shuffling */
} nic_features_write_opts;

nic_features_write_opts nic_features_default_write_opts(void);

typedef struct nic_features_writer nic_features_writer;

/* Creates `<path>.tmp.<pid>` (truncating a leftover one of that name) with
 * empty, extendible datasets and every attribute of meta. opts may be NULL.
 * Fails with NIC_EINVAL on an inconsistent meta (grid, stride, sizes) and
 * NIC_EIO when the file cannot be created. Only one writer per path per
 * process. */
nic_status nic_features_writer_create(nic_features_writer **out, const char *path,
                                      const nic_features_meta *meta,
                                      const nic_features_write_opts *opts, nic_error *err);

/* Appends n rows: features n x C, coords n x 2 (x, y per row), and, when
 * meta.has_orientations, orientations n x 8 x C (NULL otherwise). Every
 * coords row must be a cell corner (nic_features_cell_x/y) and the cells
 * must come in strictly increasing row-major order across all appends
 * (NIC_EINVAL, nothing of the batch written). Memory use does not grow with
 * the number of rows: batches go straight to the file. After an I/O error
 * the writer only accepts abort. */
nic_status nic_features_writer_append(nic_features_writer *w, int64_t n, const float *features,
                                      const int32_t *coords, const float *orientations,
                                      nic_error *err);

/* The slide's properties (OpenSlide's name -> value), stored in the group
 * `slide_properties`, one string attribute each. Bytes that are not UTF-8
 * are replaced by '?'. A name given twice is NIC_EINVAL and writes nothing;
 * after a successful call, further calls are refused. */
nic_status nic_features_writer_set_properties(nic_features_writer *w, int n,
                                              const char *const *names, const char *const *values,
                                              nic_error *err);

/* The tissue fraction of every cell, grid_h x grid_w row-major, stored as
 * `tissue_fraction`. Optional; at most once. */
nic_status nic_features_writer_set_tissue_fraction(nic_features_writer *w, const float *fraction,
                                                   nic_error *err);

/* Rows appended so far. */
int64_t nic_features_writer_count(const nic_features_writer *w);
/* The temporary file being written. */
const char *nic_features_writer_temp_path(const nic_features_writer *w);

/* Writes tissue_mask, closes and fsyncs the temporary file and renames it
 * over `path` (replacing an older file). Always frees w; on failure the
 * temporary file is removed and `path` is left as it was. */
nic_status nic_features_writer_commit(nic_features_writer *w, nic_error *err);

/* Closes and removes the temporary file and frees w. NULL is a no-op. */
void nic_features_writer_abort(nic_features_writer *w);

/* ---- reading ------------------------------------------------------------- */

typedef struct nic_features_reader nic_features_reader;

/* Opens and validates a compressed slide. NIC_EIO when the file cannot be
 * opened; NIC_EFORMAT, with a message naming the file and the problem, when
 * it is not HDF5, is truncated, lacks `features` or `coords` or a grid
 * attribute (grid_h, grid_w, stride_level0), has wrong ranks, dtypes or
 * shapes, disagrees on N, or has a coords row that is not a cell corner
 * inside the grid, repeats a cell or breaks row-major order, or a
 * tissue_mask that disagrees with coords. Reads coords (and tissue_mask)
 * once, in blocks; features are only read on request. */
nic_status nic_features_open(nic_features_reader **out, const char *path, nic_error *err);
void nic_features_close(nic_features_reader *r);

const nic_features_meta *nic_features_meta_of(const nic_features_reader *r);
const char *nic_features_path(const nic_features_reader *r);

/* Rows [start, start + n): features (n x C) and/or coords (n x 2); either
 * may be NULL. NIC_EINVAL when the range is outside [0, N). */
nic_status nic_features_read(nic_features_reader *r, int64_t start, int64_t n, float *features,
                             int32_t *coords, nic_error *err);
/* Rows [start, start + n) of features_orientations (n x 8 x C); NIC_EINVAL
 * when the file has none. */
nic_status nic_features_read_orientations(nic_features_reader *r, int64_t start, int64_t n,
                                          float *out, nic_error *err);

/* The dense grid, C x grid_h x grid_w floats (channel-major, rows
 * row-major): row k of features goes to the cell of coords row k, every
 * other cell is 0. orientation -1 uses `features`, 0..7 that slice of
 * features_orientations. Reads in blocks (a few MB beyond grid). */
nic_status nic_features_read_grid(nic_features_reader *r, int orientation, float *grid,
                                  nic_error *err);
/* The same into a plain tensor [1, C, H, W] (allocated by this call). */
nic_status nic_features_read_grid_tensor(nic_features_reader *r, int orientation, nic_tensor *t,
                                         nic_error *err);

/* grid_h x grid_w bytes: 1 where a cell has a row, else 0 (from tissue_mask,
 * or from coords when a file has none). */
nic_status nic_features_read_tissue_mask(nic_features_reader *r, uint8_t *mask, nic_error *err);
/* grid_h x grid_w floats; NIC_EINVAL when the file has no tissue_fraction. */
nic_status nic_features_read_tissue_fraction(nic_features_reader *r, float *fraction,
                                             nic_error *err);

/* The slide properties, sorted by name. */
int nic_features_property_count(const nic_features_reader *r);
const char *nic_features_property_name(const nic_features_reader *r, int i);
const char *nic_features_property_value(const nic_features_reader *r, const char *name);

/* 1 when `path` is a finished compressed slide (it opens and validates),
 * else 0. A temporary file (a name ending in ".tmp.<digits>") is never
 * finished. For resuming: slides whose output is complete are skipped. */
int nic_features_is_complete(const char *path);

/* ---- checksums ----------------------------------------------------------- */

/* SHA-256 of a file's bytes as 64 lowercase hex digits plus NUL, for the
 * encoder_sha256 attribute (`sha256sum` prints the same). */
nic_status nic_features_sha256_file(const char *path, char hex[65], nic_error *err);

#ifdef __cplusplus
}
#endif
#endif
