/* Output files: atomic writes (temp file + rename), PNG encoding through
 * libvips, and a growable text buffer for the GeoJSON writer. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vips/vips.h>

#include "slide/slide_internal.h"

nic_status nic__write_file_atomic(const char *path, const void *data, size_t len, nic_error *err) {
  /* The temporary file lives in the destination directory so that rename
   * stays within one file system and is atomic. */
  size_t n = strlen(path);
  char *tmp = malloc(n + 16);
  if (!tmp) return nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
  snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    nic_status st =
        nic_err(err, NIC_EIO, "%s: cannot create a temporary file: %s", path, strerror(errno));
    free(tmp);
    return st;
  }
  const uint8_t *p = data;
  size_t left = len;
  int ok = 1;
  while (ok && left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      ok = 0;
    else {
      p += w;
      left -= (size_t)w;
    }
  }
  int saved = errno;
  /* mkstemp creates 0600; outputs are ordinary files. */
  if (ok && (fchmod(fd, 0644) != 0 || fsync(fd) != 0)) ok = 0, saved = errno;
  if (close(fd) != 0 && ok) ok = 0, saved = errno;
  if (ok && rename(tmp, path) != 0) ok = 0, saved = errno;
  if (!ok) {
    unlink(tmp);
    free(tmp);
    return nic_err(err, NIC_EIO, "%s: cannot write: %s", path, strerror(saved));
  }
  free(tmp);
  return NIC_OK;
}

nic_status nic__write_png(const char *path, const uint8_t *pix, int w, int h, int bands, double mpp,
                          nic_error *err) {
  nic_status st = nic__vips_init(err);
  if (st != NIC_OK) return st;
  VipsImage *img =
      vips_image_new_from_memory(pix, (size_t)w * h * bands, w, h, bands, VIPS_FORMAT_UCHAR);
  if (!img) return nic_err(err, NIC_ENOMEM, "%s: out of memory encoding PNG", path);
  img->Type = bands == 1 ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB;
  if (mpp > 0) { /* pixels per millimetre, stored in PNG's pHYs chunk */
    img->Xres = 1000.0 / mpp;
    img->Yres = 1000.0 / mpp;
  }
  void *buf = NULL;
  size_t len = 0;
  int rc = vips_pngsave_buffer(img, &buf, &len, "compression", 6, NULL);
  g_object_unref(img);
  if (rc) {
    char msg[256];
    nic__vips_error(msg, sizeof msg);
    return nic_err(err, NIC_EIO, "%s: cannot encode PNG: %s", path, msg);
  }
  st = nic__write_file_atomic(path, buf, len, err);
  g_free(buf);
  return st;
}

void nic__sb_printf(nic_strbuf *b, const char *fmt, ...) {
  if (b->failed) return;
  for (;;) {
    size_t room = b->cap - b->len;
    va_list ap;
    va_start(ap, fmt);
    int n = b->s ? vsnprintf(b->s + b->len, room, fmt, ap) : -1;
    va_end(ap);
    if (b->s && n >= 0 && (size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    size_t need = b->len + (n > 0 ? (size_t)n : 0) + 1;
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < need) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
      b->failed = 1;
      return;
    }
    b->s = s;
    b->cap = cap;
  }
}

void nic__sb_free(nic_strbuf *b) {
  free(b->s);
  memset(b, 0, sizeof *b);
}
