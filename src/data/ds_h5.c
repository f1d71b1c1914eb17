/* PatchCamelyon HDF5 files: `x` (N x H x W x 3 uint8) in one file and `y`
 * (N x 1 x 1 x 1) in another. The labels are small and read at open; the
 * images (7.5 GB for the PCam training set) are read one item at a time by
 * hyperslab.
 *
 * Debian's hdf5-serial is built thread-safe (H5_HAVE_THREADSAFE): the
 * library serialises calls itself, so workers may read concurrently. Its
 * error-printing setting is per thread in such builds; every entry point
 * here turns printing off for its own calls and restores it. */
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

typedef struct h5_impl {
  hid_t file, dset;
  int64_t h, w, c; /* item geometry: c = 3 (RGB) or 1 (grey) */
} h5_impl;

/* Silences HDF5's error printing for the calling thread (see above). */
typedef struct h5_quiet {
  H5E_auto2_t func;
  void *data;
} h5_quiet;

static void quiet_begin(h5_quiet *q) {
  H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void quiet_end(const h5_quiet *q) {
  H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
}

static nic_status h5_read(const nic_dataset *ds, int64_t i, uint8_t **px, int *w, int *h,
                          nic_error *err) {
  const h5_impl *im = ds->impl;
  size_t n = (size_t)(im->h * im->w * im->c);
  uint8_t *buf = malloc(n * 3 / (size_t)im->c + 1); /* room for grey -> RGB */
  if (!buf) return nic_err(err, NIC_ENOMEM, "%s[%lld]: out of memory", ds->source, (long long)i);
  h5_quiet q;
  quiet_begin(&q);
  hsize_t start[4] = {(hsize_t)i, 0, 0, 0},
          count[4] = {1, (hsize_t)im->h, (hsize_t)im->w, (hsize_t)im->c};
  hsize_t mdim = n;
  hid_t space = H5Dget_space(im->dset);
  hid_t mem = H5Screate_simple(1, &mdim, NULL);
  int ok = space >= 0 && mem >= 0 &&
           H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
           H5Dread(im->dset, H5T_NATIVE_UINT8, mem, space, H5P_DEFAULT, buf) >= 0;
  if (mem >= 0) H5Sclose(mem);
  if (space >= 0) H5Sclose(space);
  quiet_end(&q);
  if (!ok) {
    free(buf);
    return nic_err(err, NIC_EIO, "%s: cannot read image %lld of dataset 'x'", ds->source,
                   (long long)i);
  }
  if (im->c == 1) /* grey: expand in place, from the end backwards */
    for (size_t k = n; k-- > 0;) buf[3 * k] = buf[3 * k + 1] = buf[3 * k + 2] = buf[k];
  *px = buf;
  *w = (int)im->w;
  *h = (int)im->h;
  return NIC_OK;
}

static void h5_close(nic_dataset *ds) {
  h5_impl *im = ds->impl;
  if (!im) return;
  h5_quiet q;
  quiet_begin(&q);
  if (im->dset >= 0) H5Dclose(im->dset);
  if (im->file >= 0) H5Fclose(im->file);
  quiet_end(&q);
  free(im);
  ds->impl = NULL;
}

static const ds_ops h5_ops = {h5_read, h5_close};

/* Opens `name` in `path` and checks it holds integers; returns the dataset
 * and its dimensions. */
static nic_status open_int_dataset(const char *path, hid_t *file, hid_t *dset, const char *name,
                                   int *rank, hsize_t dims[4], nic_error *err) {
  *file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (*file < 0) return nic_err(err, NIC_EIO, "%s: cannot open the HDF5 file", path);
  *dset = H5Dopen2(*file, name, H5P_DEFAULT);
  if (*dset < 0) return nic_err(err, NIC_EFORMAT, "%s: no dataset '%s'", path, name);
  hid_t type = H5Dget_type(*dset), space = H5Dget_space(*dset);
  int cls = type >= 0 ? (int)H5Tget_class(type) : -1;
  *rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
  if (*rank >= 1 && *rank <= 4) H5Sget_simple_extent_dims(space, dims, NULL);
  if (type >= 0) H5Tclose(type);
  if (space >= 0) H5Sclose(space);
  if (cls != H5T_INTEGER)
    return nic_err(err, NIC_EFORMAT, "%s: dataset '%s' is not of an integer type", path, name);
  if (*rank < 1 || *rank > 4)
    return nic_err(err, NIC_EFORMAT, "%s: dataset '%s' has %d dimensions", path, name, *rank);
  return NIC_OK;
}

/* Reads y (N integers, any trailing unit dimensions) as classes. */
static nic_status read_labels(nic_dataset *ds, const char *y_path, nic_error *err) {
  hid_t file = -1, dset = -1;
  int rank;
  hsize_t dims[4] = {0, 1, 1, 1};
  nic_status s = open_int_dataset(y_path, &file, &dset, "y", &rank, dims, err);
  int *y = NULL;
  if (s != NIC_OK) goto done;
  hsize_t total = 1;
  for (int d = 0; d < rank; d++) total *= dims[d];
  if (dims[0] != (hsize_t)ds->n || total != dims[0]) {
    s = nic_err(err, NIC_EFORMAT, "%s: 'y' has %llu labels (%d-D) for %lld images in %s", y_path,
                (unsigned long long)total, rank, (long long)ds->n, ds->source);
    goto done;
  }
  y = malloc(sizeof(int) * (size_t)(ds->n > 0 ? ds->n : 1));
  if (!y) {
    s = nic_err(err, NIC_ENOMEM, "%s: out of memory", y_path);
    goto done;
  }
  if (H5Dread(dset, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, y) < 0) {
    s = nic_err(err, NIC_EIO, "%s: cannot read 'y'", y_path);
    goto done;
  }
  int maxc = -1;
  for (int64_t i = 0; i < ds->n; i++) {
    if (y[i] < 0 || y[i] > 10000) {
      s = nic_err(err, NIC_EFORMAT, "%s: label %d of item %lld is not a class index", y_path, y[i],
                  (long long)i);
      goto done;
    }
    ds->label[i] = y[i];
    if (y[i] > maxc) maxc = y[i];
  }
  s = ds_set_numeric_classes(ds, maxc + 1, err);
done:
  free(y);
  if (dset >= 0) H5Dclose(dset);
  if (file >= 0) H5Fclose(file);
  return s;
}

/* x_path with its "_x.h5" replaced by "_y.h5". */
static int derive_y_path(const char *x_path, char *out, size_t n) {
  size_t len = strlen(x_path);
  if (len < 5 || len + 1 > n || strcmp(x_path + len - 5, "_x.h5")) return -1;
  memcpy(out, x_path, len + 1);
  out[len - 4] = 'y';
  return 0;
}

static nic_status open_h5(nic_dataset *ds, const char *x_path, const char *y_path, nic_error *err) {
  h5_impl *im = calloc(1, sizeof *im);
  if (!im) return nic_err(err, NIC_ENOMEM, "%s: out of memory", x_path);
  im->file = im->dset = -1;
  ds->impl = im;
  ds->ops = &h5_ops;
  int rank;
  hsize_t dims[4] = {0, 0, 0, 1};
  nic_status s = open_int_dataset(x_path, &im->file, &im->dset, "x", &rank, dims, err);
  if (s != NIC_OK) return s;
  if (rank < 3 || (rank == 4 && dims[3] != 3 && dims[3] != 1) || dims[1] < 1 || dims[2] < 1 ||
      dims[1] > 65536 || dims[2] > 65536)
    return nic_err(err, NIC_EFORMAT,
                   "%s: 'x' should be N x H x W x 3 (or N x H x W grey), not %d-D", x_path, rank);
  im->h = (int64_t)dims[1];
  im->w = (int64_t)dims[2];
  im->c = rank == 4 ? (int64_t)dims[3] : 1;
  if ((s = ds_alloc_items(ds, (int64_t)dims[0], err)) != NIC_OK) return s;
  if ((s = read_labels(ds, y_path, err)) != NIC_OK) return s;
  nic_split split = ds_split_from_name(x_path);
  for (int64_t i = 0; i < ds->n; i++) ds->split[i] = (uint8_t)split;
  return NIC_OK;
}

nic_status nic_dataset_open_pcam_h5(nic_dataset **out, const char *x_path, const char *y_path,
                                    const nic_dataset_opts *opts, nic_error *err) {
  *out = NULL;
  nic_dataset_opts o = opts ? *opts : nic_dataset_default_opts();
  char ybuf[4096];
  if (!y_path) {
    if (derive_y_path(x_path, ybuf, sizeof ybuf))
      return nic_err(err, NIC_EINVAL,
                     "%s: cannot find the labels file (expected a name ending in _x.h5, with "
                     "its _y.h5 next to it)",
                     x_path);
    y_path = ybuf;
  }
  nic_dataset *ds = ds_new("pcam-h5", x_path);
  if (!ds) return nic_err(err, NIC_ENOMEM, "%s: out of memory", x_path);
  ds->mpp = o.mpp > 0 ? o.mpp : NIC_PCAM_MPP;
  h5_quiet q;
  quiet_begin(&q);
  nic_status s = open_h5(ds, x_path, y_path, err);
  quiet_end(&q);
  if (s != NIC_OK) {
    nic_dataset_free(ds);
    return s;
  }
  *out = ds;
  return NIC_OK;
}
