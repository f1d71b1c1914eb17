/* MNIST-style idx files. The header is two zero bytes, a type byte (0x08 =
 * unsigned byte) and the number of dimensions, then each dimension as a
 * big-endian 32-bit integer, then the data. Images are N x rows x cols
 * (grey) or N x rows x cols x 3 (RGB); labels are N bytes.
 *
 * Plain files are read lazily: each item is one pread at a computed offset
 * (pread is safe from several threads). Gzip files cannot be read at an
 * offset, so they are decompressed into memory once; MNIST-sized sets take
 * tens of megabytes. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data_internal.h"

typedef struct idx_file {
  int fd;        /* plain file, or -1 */
  uint8_t *mem;  /* gzip file, decompressed */
  uint64_t size; /* bytes of (decompressed) content */
  int ndim;
  uint32_t dims[4];
  uint64_t data_off; /* where the data starts */
} idx_file;

typedef struct idx_impl {
  idx_file img;
  int64_t rows, cols, ch;
} idx_impl;

static void idx_file_close(idx_file *f) {
  if (f->fd >= 0) close(f->fd);
  free(f->mem);
  f->fd = -1;
  f->mem = NULL;
}

/* Reads n bytes at off, from memory or with pread (looping on short reads). */
static int idx_read_at(const idx_file *f, void *buf, size_t n, uint64_t off) {
  if (off + n > f->size) return -1;
  if (f->mem) {
    memcpy(buf, f->mem + off, n);
    return 0;
  }
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(f->fd, (char *)buf + done, n - done, (off_t)(off + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    done += (size_t)r;
  }
  return 0;
}

/* Decompresses a whole gzip file into memory. */
static nic_status gunzip_all(const char *path, idx_file *f, nic_error *err) {
  gzFile gz = gzopen(path, "rb");
  if (!gz) return nic_err(err, NIC_EIO, "cannot open %s: %s", path, strerror(errno));
  size_t cap = 1 << 20, n = 0;
  uint8_t *buf = malloc(cap);
  nic_status s = NIC_OK;
  for (;;) {
    if (!buf) {
      s = nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
      break;
    }
    if (n == cap) {
      uint8_t *b = realloc(buf, cap * 2);
      if (!b) {
        free(buf);
        buf = NULL;
        continue;
      }
      buf = b;
      cap *= 2;
    }
    int r = gzread(gz, buf + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
    if (r < 0) {
      int code;
      s = nic_err(err, NIC_EFORMAT, "%s: corrupt gzip data: %s", path, gzerror(gz, &code));
      break;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  gzclose(gz);
  if (s != NIC_OK) {
    free(buf);
    return s;
  }
  f->mem = buf;
  f->size = n;
  return NIC_OK;
}

/* Opens an idx file and reads its header; checks the file holds all the
 * data the header announces. */
static nic_status idx_open(const char *path, idx_file *f, nic_error *err) {
  memset(f, 0, sizeof *f);
  f->fd = -1;
  uint8_t magic[2] = {0};
  int fd = open(path, O_RDONLY);
  if (fd < 0) return nic_err(err, NIC_EIO, "cannot open %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return nic_err(err, NIC_EIO, "cannot open %s: not a regular file", path);
  }
  ssize_t got = pread(fd, magic, 2, 0);
  if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
    close(fd);
    nic_status s = gunzip_all(path, f, err);
    if (s != NIC_OK) return s;
  } else {
    f->fd = fd;
    f->size = (uint64_t)st.st_size;
  }
  uint8_t head[4 + 16];
  if (idx_read_at(f, head, 4, 0) || head[0] != 0 || head[1] != 0 || head[3] < 1 || head[3] > 4) {
    idx_file_close(f);
    return nic_err(err, NIC_EFORMAT, "%s: not an idx file (bad magic number)", path);
  }
  if (head[2] != 0x08) {
    idx_file_close(f);
    return nic_err(err, NIC_EUNSUPPORTED, "%s: idx element type 0x%02x (only unsigned bytes)", path,
                   head[2]);
  }
  f->ndim = head[3];
  if (idx_read_at(f, head + 4, 4 * (size_t)f->ndim, 4)) {
    idx_file_close(f);
    return nic_err(err, NIC_EFORMAT, "%s: truncated idx header", path);
  }
  uint64_t total = 1;
  for (int d = 0; d < f->ndim; d++) {
    const uint8_t *p = head + 4 + 4 * d;
    f->dims[d] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    total *= f->dims[d]; /* at most 4 x 32 bits: checked against the size below */
    if (total > (1ULL << 40)) total = 1ULL << 40;
  }
  f->data_off = 4 + 4 * (uint64_t)f->ndim;
  if (f->size < f->data_off + total) {
    uint64_t have = f->size - f->data_off;
    idx_file_close(f);
    return nic_err(err, NIC_EFORMAT,
                   "%s: truncated: the header announces %llu bytes of data but the file has "
                   "%llu",
                   path, (unsigned long long)total, (unsigned long long)have);
  }
  return NIC_OK;
}

static nic_status idx_read(const nic_dataset *ds, int64_t i, uint8_t **px, int *w, int *h,
                           nic_error *err) {
  const idx_impl *im = ds->impl;
  size_t n = (size_t)(im->rows * im->cols * im->ch);
  uint8_t *buf = malloc((size_t)(im->rows * im->cols * 3) + 1);
  if (!buf) return nic_err(err, NIC_ENOMEM, "%s[%lld]: out of memory", ds->source, (long long)i);
  if (idx_read_at(&im->img, buf, n, im->img.data_off + (uint64_t)i * n)) {
    free(buf);
    return nic_err(err, NIC_EIO, "%s: cannot read image %lld", ds->source, (long long)i);
  }
  if (im->ch == 1) /* grey: replicate into RGB, from the end backwards */
    for (size_t k = n; k-- > 0;) buf[3 * k] = buf[3 * k + 1] = buf[3 * k + 2] = buf[k];
  *px = buf;
  *w = (int)im->cols;
  *h = (int)im->rows;
  return NIC_OK;
}

static void idx_close(nic_dataset *ds) {
  idx_impl *im = ds->impl;
  if (!im) return;
  idx_file_close(&im->img);
  free(im);
  ds->impl = NULL;
}

static const ds_ops idx_ops = {idx_read, idx_close};

static nic_status open_idx(nic_dataset *ds, const char *images, const char *labels,
                           nic_error *err) {
  idx_impl *im = calloc(1, sizeof *im);
  if (!im) return nic_err(err, NIC_ENOMEM, "%s: out of memory", images);
  im->img.fd = -1;
  ds->impl = im;
  ds->ops = &idx_ops;
  nic_status s = idx_open(images, &im->img, err);
  if (s != NIC_OK) return s;
  const idx_file *f = &im->img;
  if (f->ndim < 3 || (f->ndim == 4 && f->dims[3] != 3 && f->dims[3] != 1) || f->dims[1] == 0 ||
      f->dims[2] == 0 || f->dims[1] > 65536 || f->dims[2] > 65536)
    return nic_err(err, NIC_EFORMAT,
                   "%s: expected N x rows x cols (grey) or N x rows x cols x 3 images", images);
  im->rows = f->dims[1];
  im->cols = f->dims[2];
  im->ch = f->ndim == 4 ? f->dims[3] : 1;

  idx_file lf;
  if ((s = idx_open(labels, &lf, err)) != NIC_OK) return s;
  uint8_t *y = NULL;
  if (lf.ndim != 1 || lf.dims[0] != f->dims[0]) {
    s = nic_err(err, NIC_EFORMAT, "%s: expected %u labels (one per image of %s)", labels,
                f->dims[0], images);
  } else if (!(y = malloc((size_t)lf.dims[0] + 1))) {
    s = nic_err(err, NIC_ENOMEM, "%s: out of memory", labels);
  } else if (idx_read_at(&lf, y, lf.dims[0], lf.data_off)) {
    s = nic_err(err, NIC_EIO, "%s: cannot read the labels", labels);
  } else if ((s = ds_alloc_items(ds, (int64_t)f->dims[0], err)) == NIC_OK) {
    int maxc = -1;
    for (int64_t i = 0; i < ds->n; i++) {
      ds->label[i] = y[i];
      if (y[i] > maxc) maxc = y[i];
    }
    s = ds_set_numeric_classes(ds, maxc + 1, err);
  }
  free(y);
  idx_file_close(&lf);
  return s;
}

nic_status nic_dataset_open_idx(nic_dataset **out, const char *images_path, const char *labels_path,
                                const nic_dataset_opts *opts, nic_error *err) {
  *out = NULL;
  nic_dataset_opts o = opts ? *opts : nic_dataset_default_opts();
  nic_dataset *ds = ds_new("idx", images_path);
  if (!ds) return nic_err(err, NIC_ENOMEM, "%s: out of memory", images_path);
  ds->mpp = o.mpp > 0 ? o.mpp : 0;
  nic_status s = open_idx(ds, images_path, labels_path, err);
  if (s != NIC_OK) {
    nic_dataset_free(ds);
    return s;
  }
  /* Splits from the MNIST names: train-* and t10k-* (or *test*). */
  const char *base = strrchr(images_path, '/');
  base = base ? base + 1 : images_path;
  nic_split split = !strncmp(base, "train", 5)                            ? NIC_SPLIT_TRAIN
                    : (!strncmp(base, "t10k", 4) || strstr(base, "test")) ? NIC_SPLIT_TEST
                                                                          : NIC_SPLIT_NONE;
  for (int64_t i = 0; i < ds->n; i++) ds->split[i] = (uint8_t)split;
  *out = ds;
  return NIC_OK;
}
