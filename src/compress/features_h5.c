/* Compressed slides as HDF5 files: the writer, the validating reader and
 * the dense-grid reconstruction. The layout is in
 * docs/compressed-slide-format.md; the API in include/nic/features.h.
 *
 * Compatibility. CLAM and TRIDENT (mahmoodlab) keep patch features in
 * `<slide>.h5` with a float `features` (N x D) and an integer `coords`
 * (N x 2, level-0 top-left x, y) dataset; TRIDENT puts `patch_size` (at
 * the target magnification), `patch_size_level0`, `level0_magnification`,
 * `target_magnification`, `overlap`, `name`, `savetodir`, `level0_width`
 * and `level0_height` on coords, and `name`, `savetodir`, `encoder` on
 * features; CLAM's patching step writes `patch_level`, `downsample`,
 * `level_dim`, `downsampled_level_dim`, `name` and `save_path` on coords.
 * We write all of those with h5py's types (64-bit integers and floats,
 * variable-length UTF-8 strings), so both read our files as their own.
 * Everything nic needs beyond them lives in root attributes.
 *
 * Files use the HDF5 1.8 object format (readable by any HDF5 >= 1.8,
 * h5py included) rather than the 1.0 one, because 1.8 stores large
 * attributes (long slide descriptions) out of line instead of failing at
 * 64 KB.
 *
 * The reader treats files as untrusted: every shape, type and attribute it
 * relies on is checked on open, and every coords row is checked against
 * the grid, before anything sized by the file is allocated. */
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nic/features.h"
#include "nic/version.h"

/* Dataset and group names. */
#define DS_FEATURES "features"
#define DS_COORDS "coords"
#define DS_ORIENT "features_orientations"
#define DS_MASK "tissue_mask"
#define DS_FRACTION "tissue_fraction"
#define GROUP_PROPS "slide_properties"

#define FORMAT_NAME "nic-compressed-slide"
#define ORIENT_ORDER "identity,rot90,rot180,rot270,flip,flip+rot90,flip+rot180,flip+rot270"

/* Limits that keep a hostile file from asking for absurd allocations. A
 * 200k x 200k pixel slide at 0.25 um/px has a 782 x 782 grid; 2^26 cells
 * (a 64 MB mask) leaves a wide margin. */
#define MAX_CELLS ((int64_t)1 << 26)
#define MAX_EMBED_DIM (1 << 20)
#define MAX_STRING_BYTES ((size_t)64 << 20)
#define MAX_PROPERTIES 100000
/* Reads and validation go through buffers of about this many bytes. */
#define BLOCK_BYTES ((size_t)4 << 20)
/* Upper bound of one HDF5 chunk (HDF5 allows 4 GB; caches want far less). */
#define MAX_CHUNK_BYTES ((size_t)16 << 20)

/* ======================================================================
 * Small helpers
 * ====================================================================== */

/* HDF5 prints its error stack to stderr by default; libnic reports through
 * nic_error instead. Every public entry point that calls HDF5 silences the
 * printing and restores the caller's handler afterwards. */
typedef struct h5_quiet {
  H5E_auto2_t fn;
  void *data;
} h5_quiet;

static void quiet_begin(h5_quiet *q) {
  H5Eget_auto2(H5E_DEFAULT, &q->fn, &q->data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void quiet_end(const h5_quiet *q) {
  H5Eset_auto2(H5E_DEFAULT, q->fn, q->data);
}

/* The innermost message on HDF5's error stack ("truncated file: eof =
 * ..."), which says more than the outer "unable to open file". */
static herr_t first_error(unsigned n, const H5E_error2_t *e, void *client) {
  char *buf = client;
  if (n == 0 && e->desc) snprintf(buf, 200, "%s", e->desc);
  return 0;
}

static void h5_error_text(char buf[200]) {
  buf[0] = '\0';
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, first_error, buf);
  if (!buf[0]) snprintf(buf, 200, "HDF5 reported an error");
}

static void close_id(hid_t *id, herr_t (*fn)(hid_t)) {
  if (*id >= 0) fn(*id);
  *id = -1;
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* The directory part of path ("." when there is none). */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return dup_str(".");
  size_t n = slash == path ? 1 : (size_t)(slash - path);
  char *d = malloc(n + 1);
  if (!d) return NULL;
  memcpy(d, path, n);
  d[n] = '\0';
  return d;
}

/* The file name without directory and without a trailing ".h5". */
static char *stem_of(const char *path) {
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  size_t n = strlen(base);
  if (n > 3 && !strcmp(base + n - 3, ".h5")) n -= 3;
  char *d = malloc(n + 1);
  if (!d) return NULL;
  memcpy(d, base, n);
  d[n] = '\0';
  return d;
}

/* 1 for names a writer uses while writing: "<anything>.tmp.<digits>". */
static int is_temp_name(const char *path) {
  const char *p = NULL;
  for (const char *q = strstr(path, ".tmp."); q; q = strstr(q + 1, ".tmp.")) p = q;
  if (!p || !p[5]) return 0;
  for (p += 5; *p; p++)
    if (*p < '0' || *p > '9') return 0;
  return 1;
}

/* Length of the valid UTF-8 sequence at s, or 0 when s does not start one. */
static size_t utf8_seq_len(const unsigned char *s) {
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0; /* overlong */
    if (c == 0xED) hi = 0x9F; /* UTF-16 surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90; /* overlong */
    if (c == 0xF4) hi = 0x8F; /* beyond U+10FFFF */
  } else {
    return 0;
  }
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t k = 2; k < n; k++)
    if (s[k] < 0x80 || s[k] > 0xBF) return 0;
  return n;
}

/* A copy of s in which every byte that is not part of valid UTF-8 is '?':
 * attributes are stored as UTF-8, and Python refuses to decode anything
 * else. */
static char *utf8_clean(const char *s) {
  char *d = dup_str(s);
  if (!d) return NULL;
  unsigned char *p = (unsigned char *)d;
  while (*p) {
    size_t n = utf8_seq_len(p);
    if (n == 0) {
      *p++ = '?';
    } else {
      p += n;
    }
  }
  return d;
}

/* The name HDF5 users know a type by ("float32", "int64", "string"). */
static const char *type_name(hid_t t) {
  size_t size = H5Tget_size(t);
  switch (H5Tget_class(t)) {
  case H5T_INTEGER: {
    int sgn = H5Tget_sign(t) == H5T_SGN_2;
    switch (size) {
    case 1:
      return sgn ? "int8" : "uint8";
    case 2:
      return sgn ? "int16" : "uint16";
    case 4:
      return sgn ? "int32" : "uint32";
    case 8:
      return sgn ? "int64" : "uint64";
    default:
      return "integer";
    }
  }
  case H5T_FLOAT:
    return size == 2 ? "float16" : size == 4 ? "float32" : size == 8 ? "float64" : "float";
  case H5T_STRING:
    return "string";
  case H5T_COMPOUND:
    return "compound";
  case H5T_ENUM:
    return "enum";
  case H5T_VLEN:
    return "variable-length";
  case H5T_ARRAY:
    return "array";
  case H5T_REFERENCE:
    return "reference";
  case H5T_OPAQUE:
    return "opaque";
  case H5T_BITFIELD:
    return "bitfield";
  default:
    return "unknown";
  }
}

/* File access: the 1.8 object format (see the top of the file), and file
 * locking that is skipped where the file system does not support it (some
 * network file systems), instead of failing. */
static hid_t make_fapl(void) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0) return -1;
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
#if H5_VERSION_GE(1, 10, 7)
  H5Pset_file_locking(fapl, 1, 1);
#endif
  return fapl;
}

/* Rows per block when streaming rows of row_bytes bytes through a buffer. */
static int64_t block_rows(size_t row_bytes) {
  size_t n = BLOCK_BYTES / (row_bytes ? row_bytes : 1);
  return n < 1 ? 1 : (int64_t)n;
}

/* Reads (or writes) rows [start, start + n) of a dataset whose first axis
 * is the row; the other axes are taken whole, except that `slice` >= 0
 * picks that index of axis 1 (one orientation of N x 8 x C). */
static herr_t rows_io(hid_t ds, hid_t memtype, int64_t start, int64_t n, int slice, void *buf,
                      int write) {
  hid_t fs = H5Dget_space(ds);
  if (fs < 0) return -1;
  hsize_t dims[3] = {0, 0, 0}, off[3] = {0, 0, 0}, cnt[3];
  int rank = H5Sget_simple_extent_ndims(fs);
  herr_t r = -1;
  if (rank < 1 || rank > 3 || H5Sget_simple_extent_dims(fs, dims, NULL) < 0) goto done;
  off[0] = (hsize_t)start;
  for (int k = 0; k < rank; k++) cnt[k] = dims[k];
  cnt[0] = (hsize_t)n;
  if (slice >= 0) {
    off[1] = (hsize_t)slice;
    cnt[1] = 1;
  }
  if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL) < 0) goto done;
  hid_t ms = H5Screate_simple(rank, cnt, NULL);
  if (ms < 0) goto done;
  r = write ? H5Dwrite(ds, memtype, ms, fs, H5P_DEFAULT, buf)
            : H5Dread(ds, memtype, ms, fs, H5P_DEFAULT, buf);
  H5Sclose(ms);
done:
  H5Sclose(fs);
  return r;
}

/* ======================================================================
 * The grid
 * ====================================================================== */

nic_features_meta nic_features_default_meta(void) {
  nic_features_meta m;
  memset(&m, 0, sizeof m);
  m.grid_h = m.grid_w = 1;
  m.stride_level0 = 128;
  m.patch_size = 128;
  m.mpp = 0.5;
  m.tissue_threshold = 0.5;
  m.embed_dim = 128;
  return m;
}

nic_status nic_features_meta_set_grid(nic_features_meta *m, int64_t width, int64_t height,
                                      double slide_mpp, nic_error *err) {
  if (width < 1 || height < 1 || !(slide_mpp > 0) || !isfinite(slide_mpp) || m->patch_size < 1 ||
      !(m->mpp > 0) || !isfinite(m->mpp))
    return nic_err(err, NIC_EINVAL,
                   "no grid for a %lld x %lld slide at %g um/px with %d px patches at %g um/px",
                   (long long)width, (long long)height, slide_mpp, m->patch_size, m->mpp);
  double stride = m->patch_size * m->mpp / slide_mpp;
  double gw = ceil((double)width / stride), gh = ceil((double)height / stride);
  if (!(stride >= 1) || gw * gh > (double)MAX_CELLS)
    return nic_err(err, NIC_EINVAL,
                   "a %lld x %lld slide at %g um/px makes a grid of %.0f x %.0f cells of %g "
                   "level-0 px; cells must be at least 1 px and at most %lld",
                   (long long)width, (long long)height, slide_mpp, gh, gw, stride,
                   (long long)MAX_CELLS);
  m->stride_level0 = stride;
  m->grid_w = (int)gw;
  m->grid_h = (int)gh;
  m->origin_x = m->origin_y = 0;
  m->slide_width = width;
  m->slide_height = height;
  return NIC_OK;
}

/* The stored corner of cell index k on one axis: round half up. Written
 * once here so that writer, validator and grid builder cannot disagree. */
static int64_t corner(double origin, double stride, int64_t k) {
  return (int64_t)floor(origin + (double)k * stride + 0.5);
}

int32_t nic_features_cell_x(const nic_features_meta *m, int j) {
  return (int32_t)corner(m->origin_x, m->stride_level0, j);
}

int32_t nic_features_cell_y(const nic_features_meta *m, int i) {
  return (int32_t)corner(m->origin_y, m->stride_level0, i);
}

/* Where v falls on one axis of n cells: 0 with *k set when v is the corner
 * of cell k, 1 when the nearest cell is outside [0, n), 2 when v is between
 * corners. The nearest index can be off by one when a rounded corner sits
 * exactly half way (stride 1 with a fractional origin), so the neighbours
 * are tried too. */
static int axis_cell(double origin, double stride, int n, int64_t v, int *k) {
  double t = floor(((double)v - origin) / stride + 0.5);
  if (!(t >= -1.0 && t <= (double)n)) return 1; /* NaN included */
  int64_t k0 = (int64_t)t;
  for (int64_t c = k0 - 1; c <= k0 + 1; c++) {
    if (c >= 0 && c < n && corner(origin, stride, c) == v) {
      *k = (int)c;
      return 0;
    }
  }
  return k0 < 0 || k0 >= n ? 1 : 2;
}

int nic_features_coord_cell(const nic_features_meta *m, int64_t x, int64_t y, int *i, int *j) {
  int ci = 0, cj = 0;
  if (axis_cell(m->origin_x, m->stride_level0, m->grid_w, x, &cj) != 0) return 0;
  if (axis_cell(m->origin_y, m->stride_level0, m->grid_h, y, &ci) != 0) return 0;
  if (i) *i = ci;
  if (j) *j = cj;
  return 1;
}

/* Checks the grid fields of m; 0 when fine, else 1 with the reason in why. */
static int grid_problem(const nic_features_meta *m, char *why, size_t len) {
  if (m->grid_h < 1 || m->grid_w < 1) {
    snprintf(why, len, "the grid is %d x %d; it needs at least one row and column", m->grid_h,
             m->grid_w);
    return 1;
  }
  if ((int64_t)m->grid_h * m->grid_w > MAX_CELLS) {
    snprintf(why, len, "the grid is %d x %d, more than %lld cells", m->grid_h, m->grid_w,
             (long long)MAX_CELLS);
    return 1;
  }
  if (!isfinite(m->stride_level0) || m->stride_level0 < 1) {
    snprintf(why, len, "stride_level0 is %g; it must be a finite number >= 1", m->stride_level0);
    return 1;
  }
  if (!isfinite(m->origin_x) || !isfinite(m->origin_y)) {
    snprintf(why, len, "the grid origin (%g, %g) is not finite", m->origin_x, m->origin_y);
    return 1;
  }
  /* Every corner must fit the int32 coords. */
  double lo = fmin(m->origin_x, m->origin_y) - 1;
  double hi =
      fmax(m->origin_x + m->grid_w * m->stride_level0, m->origin_y + m->grid_h * m->stride_level0) +
      1;
  if (lo < -2147483648.0 || hi > 2147483647.0) {
    snprintf(why, len, "the grid (%d x %d cells of %g px from (%g, %g)) does not fit int32 coords",
             m->grid_h, m->grid_w, m->stride_level0, m->origin_x, m->origin_y);
    return 1;
  }
  return 0;
}

/* ======================================================================
 * Writing attributes
 * ====================================================================== */

/* n == 0: a scalar; otherwise a 1-D array of n values. */
static int attr_write(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int n,
                      const void *buf) {
  hsize_t dim = (hsize_t)n;
  hid_t sp = n ? H5Screate_simple(1, &dim, NULL) : H5Screate(H5S_SCALAR);
  if (sp < 0) return -1;
  hid_t a = H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
  herr_t r = a >= 0 ? H5Awrite(a, mtype, buf) : -1;
  if (a >= 0 && H5Aclose(a) < 0) r = -1;
  H5Sclose(sp);
  return r < 0 ? -1 : 0;
}

static int attr_i64(hid_t obj, const char *name, int64_t v) {
  return attr_write(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &v);
}

static int attr_f64(hid_t obj, const char *name, double v) {
  return attr_write(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &v);
}

static int attr_i64_pair(hid_t obj, const char *name, int64_t a, int64_t b) {
  int64_t v[2] = {a, b};
  return attr_write(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 2, v);
}

static int attr_f64_pair(hid_t obj, const char *name, double a, double b) {
  double v[2] = {a, b};
  return attr_write(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, v);
}

/* Magnifications as h5py would store what TRIDENT computes: an integer
 * when the value is whole (20), a float otherwise (41.2). */
static int attr_number(hid_t obj, const char *name, double v) {
  if (v == floor(v) && fabs(v) < 9e15) return attr_i64(obj, name, (int64_t)v);
  return attr_f64(obj, name, v);
}

/* A scalar variable-length UTF-8 string, what h5py writes for a Python
 * str. NULL is stored as "" (unknown). */
static int attr_str(hid_t obj, const char *name, const char *v) {
  char *clean = utf8_clean(v ? v : "");
  if (!clean) return -1;
  hid_t t = H5Tcopy(H5T_C_S1);
  int r = -1;
  if (t >= 0 && H5Tset_size(t, H5T_VARIABLE) >= 0 && H5Tset_cset(t, H5T_CSET_UTF8) >= 0) {
    const char *p = clean;
    r = attr_write(obj, name, t, t, 0, &p);
  }
  if (t >= 0) H5Tclose(t);
  free(clean);
  return r;
}

/* ======================================================================
 * The writer
 * ====================================================================== */

struct nic_features_writer {
  char *path;             /* the final name */
  char *tmp;              /* the name written to */
  nic_features_meta meta; /* scalars only: the strings are not kept */
  hid_t file, features, coords, orient;
  int gzip;
  int64_t count;     /* rows written */
  int64_t last_cell; /* i * grid_w + j of the last row, -1 before the first */
  uint8_t *occupied; /* grid_h x grid_w: 1 where a row was written */
  int props_set, fraction_set;
  int failed; /* an HDF5 write failed: only abort is left */
};

nic_features_write_opts nic_features_default_write_opts(void) {
  nic_features_write_opts o = {1024, 0};
  return o;
}

/* Checks what a writer needs beyond the grid. */
static int writer_meta_problem(const nic_features_meta *m, const nic_features_write_opts *o,
                               char *why, size_t len) {
  if (grid_problem(m, why, len)) return 1;
  if (m->embed_dim < 1 || m->embed_dim > MAX_EMBED_DIM) {
    snprintf(why, len, "embed_dim is %d; it must be 1..%d", m->embed_dim, MAX_EMBED_DIM);
    return 1;
  }
  if (m->patch_size < 1) {
    snprintf(why, len, "patch_size is %d; it must be positive", m->patch_size);
    return 1;
  }
  if (!isfinite(m->mpp) || m->mpp <= 0) {
    snprintf(why, len, "mpp is %g; it must be a positive number", m->mpp);
    return 1;
  }
  if (!(m->tissue_threshold >= 0 && m->tissue_threshold <= 1)) {
    snprintf(why, len, "tissue_threshold is %g; it must be in [0, 1]", m->tissue_threshold);
    return 1;
  }
  if (m->slide_width < 0 || m->slide_height < 0 || !(m->slide_mpp_x >= 0) ||
      !(m->slide_mpp_y >= 0) || !isfinite(m->slide_mpp_x) || !isfinite(m->slide_mpp_y) ||
      !(m->level0_magnification >= 0) || !isfinite(m->level0_magnification)) {
    snprintf(why, len, "slide size, spacing and magnification must be >= 0 (0 = unknown)");
    return 1;
  }
  if (o->chunk_rows < 0 || o->gzip_level < 0 || o->gzip_level > 9) {
    snprintf(why, len, "chunk_rows must be >= 0 and gzip_level 0..9 (got %d, %d)", o->chunk_rows,
             o->gzip_level);
    return 1;
  }
  return 0;
}

/* An empty dataset of rows that grows along its first axis. row_shape
 * holds the other rank - 1 dimensions. The chunk cache holds a few chunks,
 * so a chunk filled by several appends is written (and compressed) once. */
static hid_t create_rows_dataset(hid_t file, const char *name, hid_t type, int rank,
                                 const hsize_t *row_shape, int64_t chunk_rows, int gzip) {
  hsize_t dims[3] = {0, 0, 0}, maxdims[3] = {H5S_UNLIMITED, 0, 0}, chunk[3] = {0, 0, 0};
  size_t row_bytes = H5Tget_size(type);
  for (int k = 1; k < rank; k++) {
    dims[k] = maxdims[k] = chunk[k] = row_shape[k - 1];
    row_bytes *= row_shape[k - 1];
  }
  if ((size_t)chunk_rows * row_bytes > MAX_CHUNK_BYTES) chunk_rows = MAX_CHUNK_BYTES / row_bytes;
  chunk[0] = (hsize_t)(chunk_rows < 1 ? 1 : chunk_rows);
  size_t chunk_bytes = chunk[0] * row_bytes;

  hid_t space = H5Screate_simple(rank, dims, maxdims);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
  hid_t ds = -1;
  if (space < 0 || dcpl < 0 || dapl < 0) goto done;
  if (H5Pset_chunk(dcpl, rank, chunk) < 0) goto done;
  /* Every byte is written before it is read: no fill values. */
  H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
  if (gzip && (H5Pset_shuffle(dcpl) < 0 || H5Pset_deflate(dcpl, (unsigned)gzip) < 0)) goto done;
  size_t cache = 4 * chunk_bytes > ((size_t)1 << 20) ? 4 * chunk_bytes : ((size_t)1 << 20);
  H5Pset_chunk_cache(dapl, 521, cache, 1.0);
  ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, dapl);
done:
  if (dapl >= 0) H5Pclose(dapl);
  if (dcpl >= 0) H5Pclose(dcpl);
  if (space >= 0) H5Sclose(space);
  return ds;
}

/* A fixed H x W dataset written at once (tissue mask and fraction). */
static int write_grid_dataset(nic_features_writer *w, const char *name, hid_t ftype, hid_t mtype,
                              const void *data) {
  hsize_t dims[2] = {(hsize_t)w->meta.grid_h, (hsize_t)w->meta.grid_w};
  hid_t space = H5Screate_simple(2, dims, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  hid_t ds = -1;
  int r = -1;
  if (space < 0 || dcpl < 0) goto done;
  if (w->gzip) {
    /* Chunks may not exceed the dimensions of a fixed-size dataset. */
    hsize_t chunk[2] = {dims[0] < 256 ? dims[0] : 256, dims[1] < 256 ? dims[1] : 256};
    if (H5Pset_chunk(dcpl, 2, chunk) < 0 || H5Pset_shuffle(dcpl) < 0 ||
        H5Pset_deflate(dcpl, (unsigned)w->gzip) < 0)
      goto done;
  }
  ds = H5Dcreate2(w->file, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (ds < 0) goto done;
  r = H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
  if (H5Dclose(ds) < 0) r = -1;
done:
  if (dcpl >= 0) H5Pclose(dcpl);
  if (space >= 0) H5Sclose(space);
  return r;
}

/* nic's own description of the slide, on the root group. */
static int write_root_attrs(hid_t f, const nic_features_meta *m, const char *name) {
  int bad = 0;
  bad |= attr_str(f, "format", FORMAT_NAME);
  bad |= attr_i64(f, "format_version", NIC_FEATURES_FORMAT_VERSION);
  bad |= attr_str(f, "nic_version", nic_version());
  bad |= attr_str(f, "command_line", m->command_line);
  bad |= attr_str(f, "name", name);
  bad |= attr_str(f, "slide_path", m->slide_path);
  bad |= attr_i64(f, "slide_width", m->slide_width);
  bad |= attr_i64(f, "slide_height", m->slide_height);
  bad |= attr_f64(f, "slide_mpp_x", m->slide_mpp_x);
  bad |= attr_f64(f, "slide_mpp_y", m->slide_mpp_y);
  bad |= attr_f64(f, "level0_magnification", m->level0_magnification);
  bad |= attr_i64(f, "grid_h", m->grid_h);
  bad |= attr_i64(f, "grid_w", m->grid_w);
  bad |= attr_f64(f, "stride_level0", m->stride_level0);
  bad |= attr_f64(f, "origin_x", m->origin_x);
  bad |= attr_f64(f, "origin_y", m->origin_y);
  bad |= attr_i64(f, "patch_size", m->patch_size);
  bad |= attr_i64(f, "stride", m->patch_size); /* non-overlapping: stride = patch at target */
  bad |= attr_f64(f, "mpp", m->mpp);
  bad |= attr_f64(f, "tissue_threshold", m->tissue_threshold);
  bad |= attr_i64(f, "embed_dim", m->embed_dim);
  bad |= attr_str(f, "encoder", m->encoder);
  bad |= attr_str(f, "encoder_sha256", m->encoder_sha256);
  return bad;
}

/* CLAM's and TRIDENT's attributes on coords (see the top of the file).
 * Where the two disagree, TRIDENT wins: `patch_size` is in pixels at the
 * target spacing, not at patch_level. `level0_magnification` is left out
 * when unknown, which makes TRIDENT fall back to its legacy reader; that
 * one reads `patch_size` pixels at level `patch_level` downsampled by
 * `custom_downsample`, which we set so that it lands on the target spacing
 * too. */
static int write_coords_attrs(hid_t ds, const nic_features_meta *m, const char *name,
                              const char *dir) {
  int bad = 0;
  double target_mag = 10.0 / m->mpp; /* TRIDENT: mpp = 10 / magnification */
  bad |= attr_i64(ds, "patch_size", m->patch_size);
  bad |= attr_i64(ds, "patch_size_level0", (int64_t)floor(m->stride_level0 + 0.5));
  if (m->level0_magnification > 0)
    bad |= attr_number(ds, "level0_magnification", m->level0_magnification);
  bad |= attr_number(ds, "target_magnification", floor(target_mag * 1e6 + 0.5) / 1e6);
  bad |= attr_i64(ds, "overlap", 0);
  bad |= attr_str(ds, "name", name);
  bad |= attr_str(ds, "savetodir", dir);
  bad |= attr_i64(ds, "level0_width", m->slide_width);
  bad |= attr_i64(ds, "level0_height", m->slide_height);
  bad |= attr_i64(ds, "patch_level", 0);
  bad |= attr_f64(ds, "custom_downsample", m->stride_level0 / m->patch_size);
  bad |= attr_f64_pair(ds, "downsample", 1.0, 1.0);
  bad |= attr_i64_pair(ds, "level_dim", m->slide_width, m->slide_height);
  bad |= attr_i64_pair(ds, "downsampled_level_dim", m->slide_width, m->slide_height);
  bad |= attr_str(ds, "save_path", dir);
  return bad;
}

/* TRIDENT's attributes on features, and the encoder's identity. */
static int write_features_attrs(hid_t ds, const nic_features_meta *m, const char *name,
                                const char *dir) {
  int bad = 0;
  bad |= attr_str(ds, "name", name);
  bad |= attr_str(ds, "savetodir", dir);
  bad |= attr_str(ds, "encoder", m->encoder);
  bad |= attr_str(ds, "encoder_sha256", m->encoder_sha256);
  bad |= attr_f64(ds, "mpp", m->mpp);
  bad |= attr_i64(ds, "patch_size", m->patch_size);
  bad |= attr_i64(ds, "stride", m->patch_size);
  return bad;
}

static void writer_close_handles(nic_features_writer *w) {
  close_id(&w->orient, H5Dclose);
  close_id(&w->coords, H5Dclose);
  close_id(&w->features, H5Dclose);
  close_id(&w->file, H5Fclose);
}

static void writer_free(nic_features_writer *w) {
  free(w->occupied);
  free(w->tmp);
  free(w->path);
  free(w);
}

/* Creates the temporary file with its empty datasets and attributes. */
static nic_status writer_open_file(nic_features_writer *w, const nic_features_meta *m,
                                   const nic_features_write_opts *o, nic_error *err) {
  /* Create the file through the OS first: HDF5 does not say why a
   * creation failed, and "Permission denied" is what a user needs. */
  int fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) return nic_err(err, NIC_EIO, "cannot create %s: %s", w->tmp, strerror(errno));
  close(fd);

  char *name = m->slide_id ? dup_str(m->slide_id) : stem_of(w->path);
  char *dir = dir_of(w->path);
  nic_status s = NIC_OK;
  if (!name || !dir) {
    s = nic_err(err, NIC_ENOMEM, "creating %s: out of memory", w->tmp);
    goto done;
  }
  hid_t fapl = make_fapl();
  w->file = fapl >= 0 ? H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl) : -1;
  char h5[200];
  h5_error_text(h5); /* before the next call clears the error stack */
  if (fapl >= 0) H5Pclose(fapl);
  if (w->file < 0) {
    s = nic_err(err, NIC_EIO, "cannot create HDF5 file %s: %s", w->tmp, h5);
    goto done;
  }
  int64_t chunk = o->chunk_rows ? o->chunk_rows : 1024;
  hsize_t feat_row[1] = {(hsize_t)m->embed_dim};
  hsize_t coord_row[1] = {2};
  hsize_t orient_row[2] = {NIC_FEATURES_ORIENTATIONS, (hsize_t)m->embed_dim};
  w->features =
      create_rows_dataset(w->file, DS_FEATURES, H5T_IEEE_F32LE, 2, feat_row, chunk, w->gzip);
  /* coords rows are tiny (8 bytes): bigger chunks keep the index small. */
  w->coords = create_rows_dataset(w->file, DS_COORDS, H5T_STD_I32LE, 2, coord_row,
                                  chunk < 4096 ? 4096 : chunk, w->gzip);
  int ok = w->features >= 0 && w->coords >= 0;
  if (ok && m->has_orientations) {
    int64_t ochunk = chunk / NIC_FEATURES_ORIENTATIONS;
    w->orient = create_rows_dataset(w->file, DS_ORIENT, H5T_IEEE_F32LE, 3, orient_row,
                                    ochunk < 1 ? 1 : ochunk, w->gzip);
    ok = w->orient >= 0 && attr_str(w->orient, "order", ORIENT_ORDER) == 0;
  }
  if (ok) {
    hid_t g = H5Gcreate2(w->file, GROUP_PROPS, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ok = g >= 0 && H5Gclose(g) >= 0;
  }
  ok = ok && write_root_attrs(w->file, m, name) == 0 &&
       write_coords_attrs(w->coords, m, name, dir) == 0 &&
       write_features_attrs(w->features, m, name, dir) == 0;
  if (!ok) {
    h5_error_text(h5);
    s = nic_err(err, NIC_EIO, "cannot write %s: %s", w->tmp, h5);
  }
done:
  free(name);
  free(dir);
  return s;
}

nic_status nic_features_writer_create(nic_features_writer **out, const char *path,
                                      const nic_features_meta *meta,
                                      const nic_features_write_opts *opts, nic_error *err) {
  *out = NULL;
  if (!path || !*path || !meta)
    return nic_err(err, NIC_EINVAL, "nic_features_writer_create: a path and meta are required");
  nic_features_write_opts o = opts ? *opts : nic_features_default_write_opts();
  char why[300];
  if (writer_meta_problem(meta, &o, why, sizeof why))
    return nic_err(err, NIC_EINVAL, "cannot write %s: %s", path, why);

  nic_features_writer *w = calloc(1, sizeof *w);
  size_t tlen = strlen(path) + 32;
  if (w) {
    w->path = dup_str(path);
    w->tmp = malloc(tlen);
    w->occupied = calloc((size_t)meta->grid_h * (size_t)meta->grid_w, 1);
  }
  if (!w || !w->path || !w->tmp || !w->occupied) {
    if (w) writer_free(w);
    return nic_err(err, NIC_ENOMEM, "cannot write %s: out of memory", path);
  }
  snprintf(w->tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
  w->meta = *meta;
  /* The strings belong to the caller and are written now; drop them so
   * nothing dangles. */
  w->meta.slide_id = w->meta.slide_path = w->meta.encoder = w->meta.encoder_sha256 = NULL;
  w->meta.command_line = w->meta.nic_version = NULL;
  w->file = w->features = w->coords = w->orient = -1;
  w->gzip = o.gzip_level;
  w->last_cell = -1;

  h5_quiet q;
  quiet_begin(&q);
  nic_status s = writer_open_file(w, meta, &o, err);
  if (s != NIC_OK) {
    writer_close_handles(w);
    unlink(w->tmp);
  }
  quiet_end(&q);
  if (s != NIC_OK) {
    writer_free(w);
    return s;
  }
  *out = w;
  return NIC_OK;
}

/* Checks a batch before anything is written, so that a rejected batch
 * leaves the file as it was. */
static nic_status check_batch(const nic_features_writer *w, int64_t n, const int32_t *coords,
                              nic_error *err) {
  int64_t last = w->last_cell;
  int W = w->meta.grid_w;
  for (int64_t k = 0; k < n; k++) {
    int32_t x = coords[2 * k], y = coords[2 * k + 1];
    int i, j;
    if (!nic_features_coord_cell(&w->meta, x, y, &i, &j))
      return nic_err(err, NIC_EINVAL,
                     "appending to %s: row %lld (x=%d, y=%d) is not the corner of a cell of the "
                     "%d x %d grid (stride %g level-0 px); use nic_features_cell_x/y",
                     w->path, (long long)(w->count + k), x, y, w->meta.grid_h, W,
                     w->meta.stride_level0);
    int64_t cell = (int64_t)i * W + j;
    if (cell <= last)
      return nic_err(err, NIC_EINVAL,
                     "appending to %s: row %lld is cell (%d, %d), which does not come after cell "
                     "(%lld, %lld): rows must follow row-major grid order, each cell once",
                     w->path, (long long)(w->count + k), i, j, (long long)(last / W),
                     (long long)(last % W));
    last = cell;
  }
  return NIC_OK;
}

/* Grows one rows dataset to `total` rows and writes the new ones. */
static int append_rows(hid_t ds, hid_t memtype, int64_t start, int64_t n, const void *buf) {
  hsize_t dims[3] = {0, 0, 0};
  hid_t fs = H5Dget_space(ds);
  if (fs < 0) return -1;
  int rank = H5Sget_simple_extent_dims(fs, dims, NULL);
  H5Sclose(fs);
  if (rank < 1) return -1;
  dims[0] = (hsize_t)(start + n);
  if (H5Dset_extent(ds, dims) < 0) return -1;
  return rows_io(ds, memtype, start, n, -1, (void *)buf, 1) < 0 ? -1 : 0;
}

nic_status nic_features_writer_append(nic_features_writer *w, int64_t n, const float *features,
                                      const int32_t *coords, const float *orientations,
                                      nic_error *err) {
  if (!w) return nic_err(err, NIC_EINVAL, "nic_features_writer_append: no writer");
  if (w->failed) return nic_err(err, NIC_EIO, "appending to %s: an earlier write failed", w->path);
  if (n < 0 || (n > 0 && (!features || !coords)))
    return nic_err(err, NIC_EINVAL, "appending to %s: %lld rows need features and coords", w->path,
                   (long long)n);
  if (n > 0 && !orientations != !w->meta.has_orientations)
    return nic_err(err, NIC_EINVAL, "appending to %s: orientations are %s for this file", w->path,
                   w->meta.has_orientations ? "required" : "not expected");
  if (n == 0) return NIC_OK;
  nic_status s = check_batch(w, n, coords, err);
  if (s != NIC_OK) return s;

  h5_quiet q;
  quiet_begin(&q);
  int bad = append_rows(w->features, H5T_NATIVE_FLOAT, w->count, n, features) ||
            append_rows(w->coords, H5T_NATIVE_INT32, w->count, n, coords) ||
            (w->orient >= 0 && append_rows(w->orient, H5T_NATIVE_FLOAT, w->count, n, orientations));
  char h5[200];
  if (bad) h5_error_text(h5);
  quiet_end(&q);
  if (bad) {
    w->failed = 1;
    return nic_err(err, NIC_EIO, "cannot write rows %lld..%lld to %s: %s", (long long)w->count,
                   (long long)(w->count + n - 1), w->tmp, h5);
  }
  for (int64_t k = 0; k < n; k++) {
    int i, j;
    nic_features_coord_cell(&w->meta, coords[2 * k], coords[2 * k + 1], &i, &j);
    w->occupied[(size_t)i * (size_t)w->meta.grid_w + (size_t)j] = 1;
    w->last_cell = (int64_t)i * w->meta.grid_w + j;
  }
  w->count += n;
  return NIC_OK;
}

static int cmp_str_ptr(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The property names as they will be stored (UTF-8-cleaned), checked for
 * duplicates before anything is written. *out is freed by the caller
 * with free_names. */
static void free_names(char **names, int n) {
  for (int k = 0; k < n; k++) free(names[k]);
  free(names);
}

static nic_status clean_names(const nic_features_writer *w, int n, const char *const *names,
                              char ***out, nic_error *err) {
  *out = NULL;
  char **clean = calloc((size_t)(n ? n : 1), sizeof *clean);
  char **sorted = calloc((size_t)(n ? n : 1), sizeof *sorted);
  nic_status s = NIC_OK;
  for (int k = 0; k < n && clean && sorted; k++) {
    if (!(clean[k] = utf8_clean(names[k]))) break;
    sorted[k] = clean[k];
  }
  if (!clean || !sorted || (n > 0 && !clean[n - 1])) {
    s = nic_err(err, NIC_ENOMEM, "writing %s: out of memory", w->path);
  } else {
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str_ptr);
    for (int k = 1; k < n && s == NIC_OK; k++)
      if (!strcmp(sorted[k - 1], sorted[k]))
        s = nic_err(err, NIC_EINVAL, "writing %s: property '%s' is given twice", w->path,
                    sorted[k]);
  }
  free(sorted);
  if (s != NIC_OK) {
    if (clean) free_names(clean, n);
    return s;
  }
  *out = clean;
  return NIC_OK;
}

nic_status nic_features_writer_set_properties(nic_features_writer *w, int n,
                                              const char *const *names, const char *const *values,
                                              nic_error *err) {
  if (!w) return nic_err(err, NIC_EINVAL, "nic_features_writer_set_properties: no writer");
  if (w->failed) return nic_err(err, NIC_EIO, "writing %s: an earlier write failed", w->path);
  if (w->props_set)
    return nic_err(err, NIC_EINVAL, "writing %s: slide properties were already set", w->path);
  if (n < 0 || n > MAX_PROPERTIES || (n > 0 && (!names || !values)))
    return nic_err(err, NIC_EINVAL, "writing %s: bad property list (%d entries)", w->path, n);
  for (int k = 0; k < n; k++)
    if (!names[k] || !*names[k] || !values[k])
      return nic_err(err, NIC_EINVAL, "writing %s: property %d has no name or value", w->path, k);
  char **clean = NULL;
  nic_status s = clean_names(w, n, names, &clean, err);
  if (s != NIC_OK) return s;

  h5_quiet q;
  quiet_begin(&q);
  hid_t g = H5Gopen2(w->file, GROUP_PROPS, H5P_DEFAULT);
  int k = 0;
  if (g >= 0)
    for (; k < n; k++)
      if (attr_str(g, clean[k], values[k]) != 0) break;
  if (g < 0 || k < n) {
    char h5[200];
    h5_error_text(h5);
    w->failed = 1;
    s = nic_err(err, NIC_EIO, "cannot write property '%s' to %s: %s", k < n ? clean[k] : "", w->tmp,
                h5);
  }
  if (g >= 0) H5Gclose(g);
  quiet_end(&q);
  free_names(clean, n);
  w->props_set = 1;
  return s;
}

nic_status nic_features_writer_set_tissue_fraction(nic_features_writer *w, const float *fraction,
                                                   nic_error *err) {
  if (!w || !fraction)
    return nic_err(err, NIC_EINVAL, "nic_features_writer_set_tissue_fraction: no writer or data");
  if (w->failed) return nic_err(err, NIC_EIO, "writing %s: an earlier write failed", w->path);
  if (w->fraction_set)
    return nic_err(err, NIC_EINVAL, "writing %s: the tissue fraction was already set", w->path);
  size_t cells = (size_t)w->meta.grid_h * (size_t)w->meta.grid_w;
  for (size_t c = 0; c < cells; c++)
    if (!(fraction[c] >= 0 && fraction[c] <= 1))
      return nic_err(err, NIC_EINVAL,
                     "writing %s: tissue fraction %g of cell (%zu, %zu) is not in "
                     "[0, 1]",
                     w->path, fraction[c], c / (size_t)w->meta.grid_w, c % (size_t)w->meta.grid_w);
  h5_quiet q;
  quiet_begin(&q);
  int bad = write_grid_dataset(w, DS_FRACTION, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, fraction);
  char h5[200];
  if (bad) h5_error_text(h5);
  quiet_end(&q);
  if (bad) {
    w->failed = 1;
    return nic_err(err, NIC_EIO, "cannot write the tissue fraction to %s: %s", w->tmp, h5);
  }
  w->fraction_set = 1;
  return NIC_OK;
}

int64_t nic_features_writer_count(const nic_features_writer *w) {
  return w ? w->count : 0;
}

const char *nic_features_writer_temp_path(const nic_features_writer *w) {
  return w ? w->tmp : NULL;
}

/* fsync of a file that is already closed. */
static int fsync_path(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int r = fsync(fd);
  if (close(fd) != 0) r = -1;
  return r;
}

/* Makes a rename durable. Some file systems refuse fsync on a directory;
 * the data is safe then anyway, so failures are ignored. */
static void sync_parent_dir(const char *path) {
  char *dir = dir_of(path);
  if (!dir) return;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

nic_status nic_features_writer_commit(nic_features_writer *w, nic_error *err) {
  if (!w) return nic_err(err, NIC_EINVAL, "nic_features_writer_commit: no writer");
  nic_status s = NIC_OK;
  h5_quiet q;
  quiet_begin(&q);
  if (w->failed) {
    s = nic_err(err, NIC_EIO, "%s was not written: an earlier write failed", w->path);
  } else if (write_grid_dataset(w, DS_MASK, H5T_STD_U8LE, H5T_NATIVE_UINT8, w->occupied) != 0) {
    char h5[200];
    h5_error_text(h5);
    s = nic_err(err, NIC_EIO, "cannot write the tissue mask to %s: %s", w->tmp, h5);
  }
  /* Closing the file flushes it; a failure there is a failed write too. */
  close_id(&w->orient, H5Dclose);
  close_id(&w->coords, H5Dclose);
  close_id(&w->features, H5Dclose);
  if (w->file >= 0 && H5Fclose(w->file) < 0 && s == NIC_OK)
    s = nic_err(err, NIC_EIO, "cannot write %s: closing the HDF5 file failed", w->tmp);
  w->file = -1;
  quiet_end(&q);

  if (s == NIC_OK && fsync_path(w->tmp) != 0)
    s = nic_err(err, NIC_EIO, "cannot write %s: %s", w->tmp, strerror(errno));
  if (s == NIC_OK && rename(w->tmp, w->path) != 0)
    s = nic_err(err, NIC_EIO, "cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
  if (s == NIC_OK)
    sync_parent_dir(w->path);
  else
    unlink(w->tmp);
  writer_free(w);
  return s;
}

void nic_features_writer_abort(nic_features_writer *w) {
  if (!w) return;
  h5_quiet q;
  quiet_begin(&q);
  writer_close_handles(w);
  quiet_end(&q);
  unlink(w->tmp);
  writer_free(w);
}

/* ======================================================================
 * Reading attributes
 * ====================================================================== */

/* Reads the string attribute `a` (scalar or one element, fixed or
 * variable length) into a malloc'd string: 1 on success, -1 when it is
 * not a string or cannot be read. */
static int read_str_attr_id(hid_t a, char **out) {
  *out = NULL;
  hid_t ft = H5Aget_type(a), sp = H5Aget_space(a), mt = -1;
  int r = -1;
  if (ft < 0 || sp < 0 || H5Tget_class(ft) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1)
    goto done;
  mt = H5Tcopy(H5T_C_S1);
  if (mt < 0 || H5Tset_cset(mt, H5Tget_cset(ft)) < 0) goto done;
  if (H5Tis_variable_str(ft) > 0) {
    char *p = NULL;
    if (H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Aread(a, mt, &p) < 0) goto done;
    if (p && strlen(p) < MAX_STRING_BYTES)
      *out = dup_str(p);
    else if (!p)
      *out = dup_str("");
    if (p) H5free_memory(p);
  } else {
    size_t sz = H5Tget_size(ft);
    if (sz == 0 || sz > MAX_STRING_BYTES || H5Tset_size(mt, sz + 1) < 0 ||
        H5Tset_strpad(mt, H5T_STR_NULLTERM) < 0)
      goto done;
    char *buf = calloc(sz + 1, 1);
    if (buf && H5Aread(a, mt, buf) >= 0) {
      *out = buf;
    } else {
      free(buf);
    }
  }
  r = *out ? 1 : -1;
done:
  if (mt >= 0) H5Tclose(mt);
  if (sp >= 0) H5Sclose(sp);
  if (ft >= 0) H5Tclose(ft);
  return r;
}

/* 1 with *out set, 0 when the attribute is absent, -1 when it is not a
 * readable string. */
static int read_str_attr(hid_t obj, const char *name, char **out) {
  *out = NULL;
  if (H5Aexists(obj, name) <= 0) return 0;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) return -1;
  int r = read_str_attr_id(a, out);
  H5Aclose(a);
  return r;
}

/* 1 with *v set, 0 when absent, -1 when it is not one number. */
static int read_num_attr(hid_t obj, const char *name, double *v) {
  if (H5Aexists(obj, name) <= 0) return 0;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) return -1;
  hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
  int r = -1;
  if (ft >= 0 && sp >= 0 && H5Sget_simple_extent_npoints(sp) == 1) {
    H5T_class_t c = H5Tget_class(ft);
    if ((c == H5T_INTEGER || c == H5T_FLOAT) && H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0) r = 1;
  }
  if (sp >= 0) H5Sclose(sp);
  if (ft >= 0) H5Tclose(ft);
  H5Aclose(a);
  return r;
}

/* ======================================================================
 * The reader
 * ====================================================================== */

enum { S_SLIDE_ID, S_SLIDE_PATH, S_ENCODER, S_SHA, S_COMMAND, S_VERSION, S_COUNT };

struct nic_features_reader {
  char *path;
  hid_t file, features, coords, orient, mask, fraction;
  nic_features_meta meta;
  char *strs[S_COUNT]; /* the strings meta points to */
  int nprops, props_cap;
  char **prop_names, **prop_values;
};

/* The error for a malformed file: NIC_EFORMAT, "<path>: <problem>". */
static nic_status bad_file(const nic_features_reader *r, nic_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static nic_status bad_file(const nic_features_reader *r, nic_error *err, const char *fmt, ...) {
  char msg[NIC_ERRMSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return nic_err(err, NIC_EFORMAT, "%s: %s", r->path, msg);
}

/* Opens dataset `name`, checking its rank and type class; dims receives
 * its shape. Absent and optional: returns NIC_OK with *ds = -1. */
static nic_status open_dataset(nic_features_reader *r, const char *name, int required, int rank,
                               H5T_class_t cls, const char *expected, hid_t *ds, hsize_t dims[3],
                               nic_error *err) {
  *ds = -1;
  htri_t e = H5Lexists(r->file, name, H5P_DEFAULT);
  if (e <= 0) {
    if (!required) return NIC_OK;
    return bad_file(r, err, "dataset '%s' is missing (expected %s)", name, expected);
  }
  /* H5Oopen + H5Iget_type rather than H5Oget_info, whose signature
   * changed between HDF5 1.10 and 1.12. */
  hid_t obj = H5Oopen(r->file, name, H5P_DEFAULT);
  if (obj < 0) return bad_file(r, err, "'%s' cannot be opened (corrupt file?)", name);
  if (H5Iget_type(obj) != H5I_DATASET) {
    H5Oclose(obj);
    return bad_file(r, err, "'%s' is not a dataset (expected %s)", name, expected);
  }
  *ds = obj;
  hid_t sp = H5Dget_space(*ds), t = H5Dget_type(*ds);
  nic_status s = NIC_OK;
  int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
  if (sp < 0 || t < 0) {
    s = bad_file(r, err, "dataset '%s' cannot be read", name);
  } else if (nd != rank) {
    s = bad_file(r, err, "'%s' has %d dimensions, expected %d (%s)", name, nd, rank, expected);
  } else if (H5Tget_class(t) != cls) {
    s = bad_file(r, err, "'%s' holds %s values, expected %s", name, type_name(t), expected);
  } else {
    H5Sget_simple_extent_dims(sp, dims, NULL);
  }
  if (t >= 0) H5Tclose(t);
  if (sp >= 0) H5Sclose(sp);
  return s;
}

/* Reads an integer root attribute that must be present. */
static nic_status required_int(nic_features_reader *r, const char *name, int *v, nic_error *err) {
  double d = 0;
  int got = read_num_attr(r->file, name, &d);
  if (got == 0)
    return bad_file(r, err, "attribute '%s' is missing (not a nic compressed slide?)", name);
  if (got < 0 || d != floor(d) || fabs(d) > 2147483647.0)
    return bad_file(r, err, "attribute '%s' is not an integer", name);
  *v = (int)d;
  return NIC_OK;
}

/* Optional number attribute of the root: the default when absent. */
static nic_status optional_num(nic_features_reader *r, const char *name, double dflt, double *v,
                               nic_error *err) {
  *v = dflt;
  int got = read_num_attr(r->file, name, v);
  if (got < 0 || (got > 0 && !isfinite(*v)))
    return bad_file(r, err, "attribute '%s' is not a finite number", name);
  return NIC_OK;
}

/* Optional string attribute of the root into strs[slot] and *field. */
static nic_status optional_str(nic_features_reader *r, const char *name, int slot,
                               const char **field, nic_error *err) {
  int got = read_str_attr(r->file, name, &r->strs[slot]);
  if (got < 0) return bad_file(r, err, "attribute '%s' is not a string", name);
  *field = r->strs[slot];
  return NIC_OK;
}

/* The grid and everything else described by root attributes. */
static nic_status read_meta(nic_features_reader *r, nic_error *err) {
  nic_features_meta *m = &r->meta;
  nic_status s;
  double d;
  if ((s = optional_num(r, "format_version", 1, &d, err)) != NIC_OK) return s;
  if (d > NIC_FEATURES_FORMAT_VERSION)
    return nic_err(err, NIC_EUNSUPPORTED,
                   "%s: format_version %g is newer than this nic reads (%d); upgrade nic", r->path,
                   d, NIC_FEATURES_FORMAT_VERSION);
  if ((s = required_int(r, "grid_h", &m->grid_h, err)) != NIC_OK) return s;
  if ((s = required_int(r, "grid_w", &m->grid_w, err)) != NIC_OK) return s;
  int got = read_num_attr(r->file, "stride_level0", &m->stride_level0);
  if (got == 0)
    return bad_file(r, err, "attribute 'stride_level0' is missing (not a nic compressed slide?)");
  if (got < 0) return bad_file(r, err, "attribute 'stride_level0' is not a number");
  if ((s = optional_num(r, "origin_x", 0, &m->origin_x, err)) != NIC_OK) return s;
  if ((s = optional_num(r, "origin_y", 0, &m->origin_y, err)) != NIC_OK) return s;
  char why[300];
  if (grid_problem(m, why, sizeof why)) return bad_file(r, err, "%s", why);

  struct {
    const char *name;
    double *dst;
  } nums[] = {{"slide_mpp_x", &m->slide_mpp_x},
              {"slide_mpp_y", &m->slide_mpp_y},
              {"level0_magnification", &m->level0_magnification},
              {"mpp", &m->mpp},
              {"tissue_threshold", &m->tissue_threshold}};
  for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++)
    if ((s = optional_num(r, nums[k].name, 0, nums[k].dst, err)) != NIC_OK) return s;
  struct {
    const char *name;
    int64_t *dst;
  } ints[] = {{"slide_width", &m->slide_width}, {"slide_height", &m->slide_height}};
  for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
    if ((s = optional_num(r, ints[k].name, 0, &d, err)) != NIC_OK) return s;
    if (d < 0 || d > 9e15) return bad_file(r, err, "attribute '%s' is out of range", ints[k].name);
    *ints[k].dst = (int64_t)d;
  }
  if ((s = optional_num(r, "embed_dim", (double)m->embed_dim, &d, err)) != NIC_OK) return s;
  if (d != m->embed_dim)
    return bad_file(r, err, "attribute 'embed_dim' is %g but 'features' has %d columns", d,
                    m->embed_dim);
  if ((s = optional_num(r, "patch_size", 0, &d, err)) != NIC_OK) return s;
  if (d < 0 || d > 1e9) return bad_file(r, err, "attribute 'patch_size' is out of range");
  m->patch_size = (int)d;

  if ((s = optional_str(r, "name", S_SLIDE_ID, &m->slide_id, err)) != NIC_OK) return s;
  if ((s = optional_str(r, "slide_path", S_SLIDE_PATH, &m->slide_path, err)) != NIC_OK) return s;
  if ((s = optional_str(r, "encoder", S_ENCODER, &m->encoder, err)) != NIC_OK) return s;
  if ((s = optional_str(r, "encoder_sha256", S_SHA, &m->encoder_sha256, err)) != NIC_OK) return s;
  if ((s = optional_str(r, "command_line", S_COMMAND, &m->command_line, err)) != NIC_OK) return s;
  if ((s = optional_str(r, "nic_version", S_VERSION, &m->nic_version, err)) != NIC_OK) return s;
  return NIC_OK;
}

/* Opens features, coords and features_orientations and checks their
 * shapes against each other. */
static nic_status open_row_datasets(nic_features_reader *r, nic_error *err) {
  nic_features_meta *m = &r->meta;
  hsize_t fd[3] = {0, 0, 0}, cd[3] = {0, 0, 0}, od[3] = {0, 0, 0};
  nic_status s;
  if ((s = open_dataset(r, DS_FEATURES, 1, 2, H5T_FLOAT, "N x C float32", &r->features, fd, err)) !=
      NIC_OK)
    return s;
  if ((s = open_dataset(r, DS_COORDS, 1, 2, H5T_INTEGER, "N x 2 int32", &r->coords, cd, err)) !=
      NIC_OK)
    return s;
  if (fd[1] < 1 || fd[1] > MAX_EMBED_DIM)
    return bad_file(r, err, "'features' has %llu columns, expected 1..%d",
                    (unsigned long long)fd[1], MAX_EMBED_DIM);
  if (cd[1] != 2)
    return bad_file(r, err, "'coords' has %llu columns, expected 2 (x, y)",
                    (unsigned long long)cd[1]);
  if (fd[0] != cd[0])
    return bad_file(r, err, "'features' has %llu rows but 'coords' has %llu",
                    (unsigned long long)fd[0], (unsigned long long)cd[0]);
  if (fd[0] > (hsize_t)MAX_CELLS)
    return bad_file(r, err, "'features' has %llu rows, more than %lld", (unsigned long long)fd[0],
                    (long long)MAX_CELLS);
  m->count = (int64_t)fd[0];
  m->embed_dim = (int)fd[1];

  if ((s = open_dataset(r, DS_ORIENT, 0, 3, H5T_FLOAT, "N x 8 x C float32", &r->orient, od, err)) !=
      NIC_OK)
    return s;
  if (r->orient >= 0 && (od[0] != fd[0] || od[1] != NIC_FEATURES_ORIENTATIONS || od[2] != fd[1]))
    return bad_file(r, err, "'%s' is %llu x %llu x %llu, expected %lld x %d x %d", DS_ORIENT,
                    (unsigned long long)od[0], (unsigned long long)od[1], (unsigned long long)od[2],
                    (long long)m->count, NIC_FEATURES_ORIENTATIONS, m->embed_dim);
  m->has_orientations = r->orient >= 0;
  return NIC_OK;
}

/* Opens tissue_mask and tissue_fraction (both optional) once the grid is
 * known, and checks their shapes against it. */
static nic_status open_grid_datasets(nic_features_reader *r, nic_error *err) {
  nic_features_meta *m = &r->meta;
  hsize_t md[3] = {0, 0, 0}, rd[3] = {0, 0, 0};
  nic_status s;
  if ((s = open_dataset(r, DS_MASK, 0, 2, H5T_INTEGER, "grid_h x grid_w uint8", &r->mask, md,
                        err)) != NIC_OK)
    return s;
  if (r->mask >= 0 && (md[0] != (hsize_t)m->grid_h || md[1] != (hsize_t)m->grid_w))
    return bad_file(r, err, "'%s' is %llu x %llu but the grid is %d x %d", DS_MASK,
                    (unsigned long long)md[0], (unsigned long long)md[1], m->grid_h, m->grid_w);
  if ((s = open_dataset(r, DS_FRACTION, 0, 2, H5T_FLOAT, "grid_h x grid_w float32", &r->fraction,
                        rd, err)) != NIC_OK)
    return s;
  if (r->fraction >= 0 && (rd[0] != (hsize_t)m->grid_h || rd[1] != (hsize_t)m->grid_w))
    return bad_file(r, err, "'%s' is %llu x %llu but the grid is %d x %d", DS_FRACTION,
                    (unsigned long long)rd[0], (unsigned long long)rd[1], m->grid_h, m->grid_w);
  m->has_tissue_fraction = r->fraction >= 0;
  return NIC_OK;
}

/* Explains why coords row k, (x, y), is not a grid cell. */
static nic_status bad_coord(const nic_features_reader *r, int64_t k, int64_t x, int64_t y,
                            nic_error *err) {
  const nic_features_meta *m = &r->meta;
  int i, j;
  int ax = axis_cell(m->origin_x, m->stride_level0, m->grid_w, x, &j);
  int ay = axis_cell(m->origin_y, m->stride_level0, m->grid_h, y, &i);
  if (ax == 1 || ay == 1)
    return bad_file(r, err, "coords row %lld (x=%lld, y=%lld) lies outside the %d x %d grid",
                    (long long)k, (long long)x, (long long)y, m->grid_h, m->grid_w);
  return bad_file(r, err,
                  "coords row %lld (x=%lld, y=%lld) is not on the grid: coordinates must be "
                  "origin + a multiple of the stride (%g level-0 px), rounded",
                  (long long)k, (long long)x, (long long)y, m->stride_level0);
}

/* Reads tissue_mask whole (grid-sized, bounded by MAX_CELLS) and checks
 * it holds only 0 and 1; *ones receives the count of 1s. */
static nic_status load_mask(nic_features_reader *r, uint8_t **out, int64_t *ones, nic_error *err) {
  size_t cells = (size_t)r->meta.grid_h * (size_t)r->meta.grid_w;
  uint8_t *mask = malloc(cells);
  if (!mask) return nic_err(err, NIC_ENOMEM, "%s: out of memory for the tissue mask", r->path);
  if (H5Dread(r->mask, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, mask) < 0) {
    free(mask);
    return bad_file(r, err, "'%s' cannot be read (truncated or corrupt?)", DS_MASK);
  }
  int64_t n = 0;
  for (size_t c = 0; c < cells; c++) {
    if (mask[c] > 1) {
      int v = mask[c];
      free(mask);
      return bad_file(r, err, "'%s' holds %d at cell (%zu, %zu); only 0 and 1 are allowed", DS_MASK,
                      v, c / (size_t)r->meta.grid_w, c % (size_t)r->meta.grid_w);
    }
    n += mask[c];
  }
  *out = mask;
  *ones = n;
  return NIC_OK;
}

/* Every coords row must be a cell corner inside the grid, cells must
 * strictly increase in row-major order, and tissue_mask (when present)
 * must be 1 exactly at those cells. Streams coords in blocks. */
static nic_status validate_coords(nic_features_reader *r, nic_error *err) {
  const nic_features_meta *m = &r->meta;
  uint8_t *mask = NULL;
  int64_t ones = 0;
  nic_status s = NIC_OK;
  if (r->mask >= 0 && (s = load_mask(r, &mask, &ones, err)) != NIC_OK) return s;
  int64_t rows = block_rows(2 * sizeof(int64_t));
  int64_t *buf = malloc((size_t)rows * 2 * sizeof(int64_t));
  if (!buf) {
    free(mask);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", r->path);
  }
  int64_t last = -1;
  for (int64_t start = 0; start < m->count && s == NIC_OK; start += rows) {
    int64_t n = m->count - start < rows ? m->count - start : rows;
    if (rows_io(r->coords, H5T_NATIVE_INT64, start, n, -1, buf, 0) < 0) {
      s = bad_file(r, err, "'coords' rows %lld..%lld cannot be read (truncated or corrupt?)",
                   (long long)start, (long long)(start + n - 1));
      break;
    }
    for (int64_t k = 0; k < n; k++) {
      int64_t row = start + k, x = buf[2 * k], y = buf[2 * k + 1];
      int i, j;
      if (!nic_features_coord_cell(m, x, y, &i, &j)) {
        s = bad_coord(r, row, x, y, err);
        break;
      }
      int64_t cell = (int64_t)i * m->grid_w + j;
      if (cell <= last) {
        s = cell == last
                ? bad_file(r, err, "coords row %lld repeats cell (%d, %d)", (long long)row, i, j)
                : bad_file(r, err,
                           "coords row %lld (cell (%d, %d)) comes after cell (%lld, "
                           "%lld): rows must be in row-major grid order",
                           (long long)row, i, j, (long long)(last / m->grid_w),
                           (long long)(last % m->grid_w));
        break;
      }
      if (mask && !mask[cell]) {
        s = bad_file(r, err, "'%s' is 0 at cell (%d, %d) but coords row %lld is there", DS_MASK, i,
                     j, (long long)row);
        break;
      }
      last = cell;
    }
  }
  if (s == NIC_OK && mask && ones != m->count)
    s = bad_file(r, err, "'%s' marks %lld cells but there are %lld rows", DS_MASK, (long long)ones,
                 (long long)m->count);
  free(buf);
  free(mask);
  return s;
}

/* Collects one slide property (H5Aiterate2 callback). Non-string
 * attributes are skipped: the group only ever holds strings. */
static herr_t collect_property(hid_t g, const char *name, const H5A_info_t *info, void *client) {
  nic_features_reader *r = client;
  if (r->nprops >= MAX_PROPERTIES) return -1;
  hid_t a = H5Aopen(g, name, H5P_DEFAULT);
  if (a < 0) return -1;
  char *value = NULL;
  int got = read_str_attr_id(a, &value);
  H5Aclose(a);
  if (got < 0) return 0;
  if (r->nprops == r->props_cap) {
    int cap = r->props_cap ? 2 * r->props_cap : 64;
    char **nn = realloc(r->prop_names, sizeof(char *) * (size_t)cap);
    if (nn) r->prop_names = nn;
    char **nv = realloc(r->prop_values, sizeof(char *) * (size_t)cap);
    if (nv) r->prop_values = nv;
    if (!nn || !nv) {
      free(value);
      return -1;
    }
    r->props_cap = cap;
  }
  char *key = dup_str(name);
  if (!key) {
    free(value);
    return -1;
  }
  r->prop_names[r->nprops] = key;
  r->prop_values[r->nprops] = value;
  r->nprops++;
  return 0;
}

static nic_status read_properties(nic_features_reader *r, nic_error *err) {
  if (H5Lexists(r->file, GROUP_PROPS, H5P_DEFAULT) <= 0) return NIC_OK;
  hid_t g = H5Gopen2(r->file, GROUP_PROPS, H5P_DEFAULT);
  if (g < 0) return bad_file(r, err, "'%s' is not a group", GROUP_PROPS);
  hsize_t idx = 0;
  herr_t e = H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_property, r);
  H5Gclose(g);
  if (e < 0) return bad_file(r, err, "the slide properties cannot be read");
  return NIC_OK;
}

static nic_status reader_load(nic_features_reader *r, nic_error *err) {
  if (H5Fis_hdf5(r->path) <= 0) return bad_file(r, err, "not an HDF5 file");
  hid_t fapl = make_fapl();
  r->file = fapl >= 0 ? H5Fopen(r->path, H5F_ACC_RDONLY, fapl) : -1;
  char h5[200];
  h5_error_text(h5); /* before the next call clears the error stack */
  if (fapl >= 0) H5Pclose(fapl);
  if (r->file < 0)
    return bad_file(r, err, "the HDF5 file cannot be opened (truncated or corrupt?): %s", h5);
  /* The datasets first: a file without them is not a feature file at all,
   * which says more than a missing grid attribute. */
  nic_status s;
  if ((s = open_row_datasets(r, err)) != NIC_OK) return s;
  if ((s = read_meta(r, err)) != NIC_OK) return s;
  if ((s = open_grid_datasets(r, err)) != NIC_OK) return s;
  if ((s = validate_coords(r, err)) != NIC_OK) return s;
  return read_properties(r, err);
}

static void reader_close_handles(nic_features_reader *r) {
  close_id(&r->fraction, H5Dclose);
  close_id(&r->mask, H5Dclose);
  close_id(&r->orient, H5Dclose);
  close_id(&r->coords, H5Dclose);
  close_id(&r->features, H5Dclose);
  close_id(&r->file, H5Fclose);
}

void nic_features_close(nic_features_reader *r) {
  if (!r) return;
  h5_quiet q;
  quiet_begin(&q);
  reader_close_handles(r);
  quiet_end(&q);
  for (int k = 0; k < r->nprops; k++) {
    free(r->prop_names[k]);
    free(r->prop_values[k]);
  }
  free(r->prop_names);
  free(r->prop_values);
  for (int k = 0; k < S_COUNT; k++) free(r->strs[k]);
  free(r->path);
  free(r);
}

nic_status nic_features_open(nic_features_reader **out, const char *path, nic_error *err) {
  *out = NULL;
  if (!path) return nic_err(err, NIC_EINVAL, "nic_features_open: no path");
  /* Missing or unreadable files are I/O errors, not format errors, and
   * HDF5 would not say which. */
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nic_err(err, NIC_EIO, "cannot open %s: %s", path, strerror(errno));
  struct stat st;
  int regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  close(fd);
  if (!regular) return nic_err(err, NIC_EIO, "cannot open %s: not a regular file", path);

  nic_features_reader *r = calloc(1, sizeof *r);
  if (!r || !(r->path = dup_str(path))) {
    free(r);
    return nic_err(err, NIC_ENOMEM, "cannot open %s: out of memory", path);
  }
  r->file = r->features = r->coords = r->orient = r->mask = r->fraction = -1;
  h5_quiet q;
  quiet_begin(&q);
  nic_status s = reader_load(r, err);
  quiet_end(&q);
  if (s != NIC_OK) {
    nic_features_close(r);
    return s;
  }
  *out = r;
  return NIC_OK;
}

const nic_features_meta *nic_features_meta_of(const nic_features_reader *r) {
  return &r->meta;
}

const char *nic_features_path(const nic_features_reader *r) {
  return r->path;
}

/* Checks that [start, start + n) lies within the rows. */
static nic_status check_range(const nic_features_reader *r, int64_t start, int64_t n,
                              nic_error *err) {
  if (start < 0 || n < 0 || start > r->meta.count || n > r->meta.count - start)
    return nic_err(err, NIC_EINVAL, "%s: rows [%lld, %lld) are outside the %lld rows", r->path,
                   (long long)start, (long long)(start + n), (long long)r->meta.count);
  return NIC_OK;
}

nic_status nic_features_read(nic_features_reader *r, int64_t start, int64_t n, float *features,
                             int32_t *coords, nic_error *err) {
  nic_status s = check_range(r, start, n, err);
  if (s != NIC_OK || n == 0) return s;
  h5_quiet q;
  quiet_begin(&q);
  if (features && rows_io(r->features, H5T_NATIVE_FLOAT, start, n, -1, features, 0) < 0)
    s = bad_file(r, err, "'features' rows %lld..%lld cannot be read (truncated or corrupt?)",
                 (long long)start, (long long)(start + n - 1));
  if (s == NIC_OK && coords && rows_io(r->coords, H5T_NATIVE_INT32, start, n, -1, coords, 0) < 0)
    s = bad_file(r, err, "'coords' rows %lld..%lld cannot be read (truncated or corrupt?)",
                 (long long)start, (long long)(start + n - 1));
  quiet_end(&q);
  return s;
}

nic_status nic_features_read_orientations(nic_features_reader *r, int64_t start, int64_t n,
                                          float *out, nic_error *err) {
  if (r->orient < 0)
    return nic_err(err, NIC_EINVAL, "%s: the file has no '%s'", r->path, DS_ORIENT);
  nic_status s = check_range(r, start, n, err);
  if (s != NIC_OK || n == 0) return s;
  h5_quiet q;
  quiet_begin(&q);
  if (rows_io(r->orient, H5T_NATIVE_FLOAT, start, n, -1, out, 0) < 0)
    s = bad_file(r, err, "'%s' rows %lld..%lld cannot be read (truncated or corrupt?)", DS_ORIENT,
                 (long long)start, (long long)(start + n - 1));
  quiet_end(&q);
  return s;
}

/* Scatters rows block by block into the C x H x W grid. */
static nic_status scatter_grid(nic_features_reader *r, int orientation, float *grid,
                               nic_error *err) {
  const nic_features_meta *m = &r->meta;
  size_t C = (size_t)m->embed_dim, HW = (size_t)m->grid_h * (size_t)m->grid_w;
  memset(grid, 0, sizeof(float) * C * HW);
  int64_t rows = block_rows(C * sizeof(float));
  float *fb = malloc(sizeof(float) * C * (size_t)rows);
  int32_t *cb = malloc(sizeof(int32_t) * 2 * (size_t)rows);
  nic_status s = NIC_OK;
  if (!fb || !cb) s = nic_err(err, NIC_ENOMEM, "%s: out of memory", r->path);
  for (int64_t start = 0; start < m->count && s == NIC_OK; start += rows) {
    int64_t n = m->count - start < rows ? m->count - start : rows;
    hid_t src = orientation < 0 ? r->features : r->orient;
    if (rows_io(src, H5T_NATIVE_FLOAT, start, n, orientation, fb, 0) < 0 ||
        rows_io(r->coords, H5T_NATIVE_INT32, start, n, -1, cb, 0) < 0) {
      s = bad_file(r, err, "rows %lld..%lld cannot be read (truncated or corrupt?)",
                   (long long)start, (long long)(start + n - 1));
      break;
    }
    for (int64_t k = 0; k < n; k++) {
      int i, j;
      /* Checked on open; checked again in case the file changed since. */
      if (!nic_features_coord_cell(m, cb[2 * k], cb[2 * k + 1], &i, &j)) {
        s = bad_coord(r, start + k, cb[2 * k], cb[2 * k + 1], err);
        break;
      }
      size_t cell = (size_t)i * (size_t)m->grid_w + (size_t)j;
      const float *f = fb + (size_t)k * C;
      for (size_t c = 0; c < C; c++) grid[c * HW + cell] = f[c];
    }
  }
  free(fb);
  free(cb);
  return s;
}

nic_status nic_features_read_grid(nic_features_reader *r, int orientation, float *grid,
                                  nic_error *err) {
  if (!grid) return nic_err(err, NIC_EINVAL, "nic_features_read_grid: no output buffer");
  if (orientation < -1 || orientation >= NIC_FEATURES_ORIENTATIONS)
    return nic_err(err, NIC_EINVAL, "%s: orientation %d is not -1 (features) or 0..%d", r->path,
                   orientation, NIC_FEATURES_ORIENTATIONS - 1);
  if (orientation >= 0 && r->orient < 0)
    return nic_err(err, NIC_EINVAL, "%s: the file has no '%s'", r->path, DS_ORIENT);
  h5_quiet q;
  quiet_begin(&q);
  nic_status s = scatter_grid(r, orientation, grid, err);
  quiet_end(&q);
  return s;
}

nic_status nic_features_read_grid_tensor(nic_features_reader *r, int orientation, nic_tensor *t,
                                         nic_error *err) {
  const nic_features_meta *m = &r->meta;
  nic_status s = nic_tensor_alloc4(t, 1, m->embed_dim, m->grid_h, m->grid_w, err);
  if (s != NIC_OK) return nic_err_prefix(err, "%s: ", r->path);
  return nic_features_read_grid(r, orientation, t->data, err);
}

nic_status nic_features_read_tissue_mask(nic_features_reader *r, uint8_t *mask, nic_error *err) {
  const nic_features_meta *m = &r->meta;
  size_t cells = (size_t)m->grid_h * (size_t)m->grid_w;
  nic_status s = NIC_OK;
  h5_quiet q;
  quiet_begin(&q);
  if (r->mask >= 0) {
    if (H5Dread(r->mask, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, mask) < 0)
      s = bad_file(r, err, "'%s' cannot be read (truncated or corrupt?)", DS_MASK);
  } else {
    /* No mask stored: the rows say where the kept cells are. */
    memset(mask, 0, cells);
    int64_t rows = block_rows(2 * sizeof(int32_t));
    int32_t *cb = malloc(sizeof(int32_t) * 2 * (size_t)rows);
    if (!cb) s = nic_err(err, NIC_ENOMEM, "%s: out of memory", r->path);
    for (int64_t start = 0; start < m->count && s == NIC_OK; start += rows) {
      int64_t n = m->count - start < rows ? m->count - start : rows;
      if (rows_io(r->coords, H5T_NATIVE_INT32, start, n, -1, cb, 0) < 0) {
        s = bad_file(r, err, "'coords' cannot be read (truncated or corrupt?)");
        break;
      }
      for (int64_t k = 0; k < n; k++) {
        int i, j;
        if (nic_features_coord_cell(m, cb[2 * k], cb[2 * k + 1], &i, &j))
          mask[(size_t)i * (size_t)m->grid_w + (size_t)j] = 1;
      }
    }
    free(cb);
  }
  quiet_end(&q);
  return s;
}

nic_status nic_features_read_tissue_fraction(nic_features_reader *r, float *fraction,
                                             nic_error *err) {
  if (r->fraction < 0)
    return nic_err(err, NIC_EINVAL, "%s: the file has no '%s'", r->path, DS_FRACTION);
  nic_status s = NIC_OK;
  h5_quiet q;
  quiet_begin(&q);
  if (H5Dread(r->fraction, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, fraction) < 0)
    s = bad_file(r, err, "'%s' cannot be read (truncated or corrupt?)", DS_FRACTION);
  quiet_end(&q);
  return s;
}

int nic_features_property_count(const nic_features_reader *r) {
  return r->nprops;
}

const char *nic_features_property_name(const nic_features_reader *r, int i) {
  return i >= 0 && i < r->nprops ? r->prop_names[i] : NULL;
}

const char *nic_features_property_value(const nic_features_reader *r, const char *name) {
  for (int k = 0; k < r->nprops; k++)
    if (!strcmp(r->prop_names[k], name)) return r->prop_values[k];
  return NULL;
}

int nic_features_is_complete(const char *path) {
  if (!path || is_temp_name(path)) return 0;
  nic_features_reader *r = NULL;
  if (nic_features_open(&r, path, NULL) != NIC_OK) return 0;
  nic_features_close(r);
  return 1;
}

/* ======================================================================
 * SHA-256 (FIPS 180-4), for encoder_sha256
 * ====================================================================== */

typedef struct sha256 {
  uint32_t h[8];
  uint64_t bytes;
  uint8_t buf[64];
  size_t used;
} sha256;

static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n) {
  return (x >> n) | (x << (32 - n));
}

static void sha_block(sha256 *s, const uint8_t *p) {
  uint32_t w[64];
  for (int t = 0; t < 16; t++)
    w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 |
           p[4 * t + 3];
  for (int t = 16; t < 64; t++) {
    uint32_t s0 = ror(w[t - 15], 7) ^ ror(w[t - 15], 18) ^ (w[t - 15] >> 3);
    uint32_t s1 = ror(w[t - 2], 17) ^ ror(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
  uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
  for (int t = 0; t < 64; t++) {
    uint32_t t1 =
        h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + SHA_K[t] + w[t];
    uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  s->h[0] += a;
  s->h[1] += b;
  s->h[2] += c;
  s->h[3] += d;
  s->h[4] += e;
  s->h[5] += f;
  s->h[6] += g;
  s->h[7] += h;
}

static void sha_init(sha256 *s) {
  static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, h0, sizeof h0);
  s->bytes = 0;
  s->used = 0;
}

static void sha_update(sha256 *s, const uint8_t *p, size_t n) {
  s->bytes += n;
  while (n > 0) {
    if (s->used == 0 && n >= 64) {
      sha_block(s, p);
      p += 64;
      n -= 64;
      continue;
    }
    size_t take = 64 - s->used < n ? 64 - s->used : n;
    memcpy(s->buf + s->used, p, take);
    s->used += take;
    p += take;
    n -= take;
    if (s->used == 64) {
      sha_block(s, s->buf);
      s->used = 0;
    }
  }
}

static void sha_final(sha256 *s, char hex[65]) {
  uint64_t bits = s->bytes * 8;
  uint8_t pad[72] = {0x80};
  size_t padlen = (s->used < 56 ? 56 : 120) - s->used;
  for (int k = 0; k < 8; k++) pad[padlen + (size_t)k] = (uint8_t)(bits >> (56 - 8 * k));
  sha_update(s, pad, padlen + 8);
  for (int k = 0; k < 8; k++) snprintf(hex + 8 * k, 9, "%08x", s->h[k]);
}

nic_status nic_features_sha256_file(const char *path, char hex[65], nic_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return nic_err(err, NIC_EIO, "cannot open %s: %s", path, strerror(errno));
  sha256 s;
  sha_init(&s);
  uint8_t *buf = malloc(1 << 16);
  if (!buf) {
    fclose(f);
    return nic_err(err, NIC_ENOMEM, "hashing %s: out of memory", path);
  }
  size_t n;
  while ((n = fread(buf, 1, 1 << 16, f)) > 0) sha_update(&s, buf, n);
  int bad = ferror(f);
  int saved = errno;
  free(buf);
  fclose(f);
  if (bad) return nic_err(err, NIC_EIO, "cannot read %s: %s", path, strerror(saved));
  sha_final(&s, hex);
  return NIC_OK;
}
