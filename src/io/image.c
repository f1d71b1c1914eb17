/* Image files through libvips, and exact area-averaging resampling.
 *
 * libvips must be initialised once per process before any other call.
 * That is libvips' own global state, not ours: it is done lazily, the first
 * time an image is loaded, under pthread_once so that concurrent first
 * calls are safe. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "io/vips_init.h"
#include "nic/image.h"

/* The one libvips initialisation of the process (slides use it too). */
static pthread_once_t vips_once = PTHREAD_ONCE_INIT;
static int vips_init_failed; /* written only inside vips_once */

static void init_vips(void) {
  vips_init_failed = VIPS_INIT("nic") != 0;
}

nic_status nic__vips_init(nic_error *err) {
  pthread_once(&vips_once, init_vips);
  if (!vips_init_failed) return NIC_OK;
  char msg[256];
  snprintf(msg, sizeof msg, "%s", vips_error_buffer());
  vips_error_clear();
  return nic_err(err, NIC_EBACKEND, "cannot initialise libvips: %s", msg);
}

/* Turns libvips' accumulated error text into "PATH: message" (one line)
 * and clears it, so the next failure does not repeat this one. */
static nic_status vips_fail(nic_error *err, const char *path, const char *what) {
  char msg[NIC_ERRMSG_MAX];
  snprintf(msg, sizeof msg, "%s", vips_error_buffer());
  vips_error_clear();
  size_t n = strlen(msg);
  while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = '\0';
  for (size_t i = 0; i < n; i++)
    if (msg[i] == '\n') msg[i] = ' ';
  return nic_err(err, NIC_EIO, "%s: %s%s%s", path, what, n ? ": " : "", msg);
}

/* Reads a whole file; used for names that libvips would misparse. */
static void *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    char *b = realloc(buf, cap * 2);
    if (!b) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = b;
    cap *= 2;
  }
  if (buf && ferror(f)) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = n;
  return buf;
}

nic_status nic_image_load_rgb8(const char *path, uint8_t **pixels, int *width, int *height,
                               nic_error *err) {
  *pixels = NULL;
  *width = *height = 0;
  if (nic__vips_init(err) != NIC_OK) return nic_err_prefix(err, "%s: ", path);

  /* Fail early with the system's reason: libvips' own message for a
   * missing file is less direct. */
  FILE *probe = fopen(path, "rb");
  if (!probe) return nic_err(err, NIC_EIO, "cannot open %s: %s", path, strerror(errno));
  fclose(probe);

  /* vips_image_new_from_file treats a trailing "[...]" as load options;
   * such names are read into memory and loaded from there instead. */
  void *filebuf = NULL;
  size_t filelen = 0;
  size_t plen = strlen(path);
  VipsImage *in;
  if (plen > 0 && path[plen - 1] == ']') {
    filebuf = slurp(path, &filelen);
    if (!filebuf) return nic_err(err, NIC_EIO, "cannot read %s: %s", path, strerror(errno));
    in = vips_image_new_from_buffer(filebuf, filelen, "", "access", VIPS_ACCESS_SEQUENTIAL,
                                    "fail_on", VIPS_FAIL_ON_ERROR, NULL);
  } else {
    /* Sequential access: the pixels are read once, top to bottom. A
     * truncated or corrupt file is an error, not a grey bottom half. */
    in = vips_image_new_from_file(path, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on",
                                  VIPS_FAIL_ON_ERROR, NULL);
  }
  if (!in) {
    free(filebuf);
    return vips_fail(err, path, "cannot read the image");
  }

  /* Intermediate images belong to `ctx` and are released with it. */
  VipsObject *ctx = VIPS_OBJECT(vips_image_new());
  VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 8);
  t[0] = in;
  VipsImage *cur = in;
  nic_status s = NIC_OK;

  /* To sRGB: grey, CMYK, Lab, 16-bit RGB... all have a route; unusual
   * interpretations (multiband) are taken as they are. */
  if (vips_colourspace_issupported(cur) &&
      (cur->Type != VIPS_INTERPRETATION_sRGB || cur->BandFmt != VIPS_FORMAT_UCHAR)) {
    if (vips_colourspace(cur, &t[1], VIPS_INTERPRETATION_sRGB, NULL)) goto vfail;
    cur = t[1];
  }
  if (vips_image_hasalpha(cur)) {
    /* White in the image's own scale, which is also its alpha maximum. */
    double white = cur->BandFmt == VIPS_FORMAT_USHORT || cur->BandFmt == VIPS_FORMAT_SHORT   ? 65535
                   : cur->BandFmt == VIPS_FORMAT_FLOAT || cur->BandFmt == VIPS_FORMAT_DOUBLE ? 1.0
                                                                                             : 255;
    VipsArrayDouble *bg = vips_array_double_newv(1, white);
    int r = vips_flatten(cur, &t[2], "background", bg, "max_alpha", white, NULL);
    vips_area_unref(VIPS_AREA(bg));
    if (r) goto vfail;
    cur = t[2];
  }
  if (cur->Bands == 2 || cur->Bands > 3) { /* keep the first band, or the first three */
    if (vips_extract_band(cur, &t[3], 0, "n", cur->Bands == 2 ? 1 : 3, NULL)) goto vfail;
    cur = t[3];
  }
  if (cur->Bands == 1) {
    VipsImage *grey[3] = {cur, cur, cur};
    if (vips_bandjoin(grey, &t[4], 3, NULL)) goto vfail;
    cur = t[4];
  }
  if (cur->BandFmt != VIPS_FORMAT_UCHAR) {
    /* 16-bit keeps its top byte; other formats are clipped to 0..255. */
    int shift = cur->BandFmt == VIPS_FORMAT_USHORT || cur->BandFmt == VIPS_FORMAT_SHORT;
    if (vips_cast(cur, &t[5], VIPS_FORMAT_UCHAR, "shift", shift, NULL)) goto vfail;
    cur = t[5];
  }
  {
    int w = vips_image_get_width(cur), h = vips_image_get_height(cur);
    size_t len = 0;
    void *mem = vips_image_write_to_memory(cur, &len);
    if (!mem) goto vfail;
    if (len != (size_t)w * (size_t)h * 3) {
      g_free(mem);
      s = nic_err(err, NIC_EIO, "%s: unexpected decoded size", path);
      goto done;
    }
    /* Copied so that callers release it with free(), not g_free(). */
    uint8_t *px = malloc(len ? len : 1);
    if (!px) {
      g_free(mem);
      s = nic_err(err, NIC_ENOMEM, "%s: out of memory for %dx%d pixels", path, w, h);
      goto done;
    }
    memcpy(px, mem, len);
    g_free(mem);
    *pixels = px;
    *width = w;
    *height = h;
  }
  goto done;
vfail:
  s = vips_fail(err, path, "cannot decode the image");
done:
  g_object_unref(ctx);
  free(filebuf);
  return s;
}

/* ---- resampling ------------------------------------------------------------ */

/* Along one axis, output pixel o covers source coordinates
 * [o*src/dst, (o+1)*src/dst). Scaled by dst, source pixel i covers
 * [i*dst, (i+1)*dst) and output o covers [o*src, (o+1)*src), so all
 * overlaps are integers that sum to `src` per output pixel: the filter is
 * exact, with no floating-point drift. first[o] and the overlaps of the
 * source pixels first[o].. are stored in w (count[o] of them). */
typedef struct axis_map {
  int *first, *count;
  int64_t *w; /* at most src/dst + 2 weights per output pixel */
  int stride; /* weights reserved per output pixel */
} axis_map;

static int axis_init(axis_map *a, int src, int dst) {
  a->stride = src / dst + 2;
  a->first = malloc(sizeof(int) * (size_t)dst);
  a->count = malloc(sizeof(int) * (size_t)dst);
  a->w = malloc(sizeof(int64_t) * (size_t)dst * (size_t)a->stride);
  if (!a->first || !a->count || !a->w) return -1;
  for (int o = 0; o < dst; o++) {
    int64_t lo = (int64_t)o * src, hi = lo + src; /* in units of 1/dst source pixels */
    int i0 = (int)(lo / dst), n = 0;
    for (int i = i0; i < src && (int64_t)i * dst < hi; i++) {
      int64_t a0 = (int64_t)i * dst, a1 = a0 + dst;
      /* > 0: a0 < hi by the loop condition, a1 > lo since i >= i0 */
      a->w[(size_t)o * (size_t)a->stride + (size_t)n++] = (a1 < hi ? a1 : hi) - (a0 > lo ? a0 : lo);
    }
    a->first[o] = i0;
    a->count[o] = n;
  }
  return 0;
}

static void axis_free(axis_map *a) {
  free(a->first);
  free(a->count);
  free(a->w);
}

nic_status nic_image_resize_area(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst,
                                 int dw, int dh, nic_error *err) {
  if (sw < 1 || sh < 1 || dw < 1 || dh < 1 || channels < 1 || channels > 4)
    return nic_err(err, NIC_EINVAL, "resize: invalid sizes %dx%d -> %dx%d, %d channels", sw, sh, dw,
                   dh, channels);
  /* sum of weights is sw*sh; 255*sw*sh must fit in int64. */
  if (sw > (1 << 24) || sh > (1 << 24) || dw > (1 << 24) || dh > (1 << 24))
    return nic_err(err, NIC_EINVAL, "resize: image too large");
  axis_map ax = {0}, ay = {0};
  int64_t *rows = malloc(sizeof(int64_t) * (size_t)sh * (size_t)dw * (size_t)channels);
  nic_status s = NIC_OK;
  if (!rows || axis_init(&ax, sw, dw) || axis_init(&ay, sh, dh)) {
    s = nic_err(err, NIC_ENOMEM, "resize: out of memory");
    goto done;
  }
  /* Horizontal pass: rows[y][x][c] = sum of overlap * pixel. */
  for (int y = 0; y < sh; y++) {
    const uint8_t *in = src + (size_t)y * (size_t)sw * (size_t)channels;
    int64_t *out = rows + (size_t)y * (size_t)dw * (size_t)channels;
    for (int x = 0; x < dw; x++) {
      const int64_t *w = ax.w + (size_t)x * (size_t)ax.stride;
      for (int c = 0; c < channels; c++) {
        int64_t acc = 0;
        for (int k = 0; k < ax.count[x]; k++)
          acc += w[k] * in[(size_t)(ax.first[x] + k) * (size_t)channels + (size_t)c];
        out[(size_t)x * (size_t)channels + (size_t)c] = acc;
      }
    }
  }
  /* Vertical pass, then divide by the total weight sw*sh, rounding half up. */
  int64_t total = (int64_t)sw * sh;
  for (int y = 0; y < dh; y++) {
    const int64_t *w = ay.w + (size_t)y * (size_t)ay.stride;
    uint8_t *out = dst + (size_t)y * (size_t)dw * (size_t)channels;
    for (int i = 0; i < dw * channels; i++) {
      int64_t acc = 0;
      for (int k = 0; k < ay.count[y]; k++)
        acc += w[k] * rows[(size_t)(ay.first[y] + k) * (size_t)dw * (size_t)channels + (size_t)i];
      int64_t v = (acc + total / 2) / total;
      out[i] = (uint8_t)(v > 255 ? 255 : v);
    }
  }
done:
  axis_free(&ax);
  axis_free(&ay);
  free(rows);
  return s;
}
