/* Decoding patch files for training. libvips (nic_image_load_rgb8) costs
 * close to a millisecond per small image in setup alone; libjpeg-turbo
 * decodes a 96x96 JPEG in well under a tenth of that. So the common patch
 * formats go straight to their libraries, and everything else to libvips.
 * Each call has its own decoder state: safe from several threads. */
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>

/* jpeglib.h needs size_t and FILE first. */
#include <jpeglib.h>

#include "data/data_internal.h"
#include "nic/image.h"

/* ---- JPEG ------------------------------------------------------------------------ */

typedef struct jpeg_fail {
  struct jpeg_error_mgr mgr;
  jmp_buf jump;
  char msg[JMSG_LENGTH_MAX]; /* the first error or warning */
  int warnings;
} jpeg_fail;

static void jpeg_on_error(j_common_ptr cinfo) {
  jpeg_fail *f = (jpeg_fail *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, f->msg);
  longjmp(f->jump, 1);
}

/* Warnings (level -1) are corrupt data, e.g. "Premature end of JPEG
 * file": libjpeg would fill the rest with grey. We count them and fail,
 * as libvips does with fail_on=error. Trace messages are dropped. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
  jpeg_fail *f = (jpeg_fail *)cinfo->err;
  if (level >= 0) return;
  if (f->warnings++ == 0) (*cinfo->err->format_message)(cinfo, f->msg);
}

static nic_status decode_jpeg(FILE *file, const char *path, uint8_t **px, int *w, int *h,
                              int *fallback, nic_error *err) {
  struct jpeg_decompress_struct cinfo;
  jpeg_fail fail;
  memset(&fail, 0, sizeof fail);
  cinfo.err = jpeg_std_error(&fail.mgr);
  fail.mgr.error_exit = jpeg_on_error;
  fail.mgr.emit_message = jpeg_on_message;
  uint8_t *volatile buf = NULL; /* volatile: survives the longjmp */
  if (setjmp(fail.jump)) {
    jpeg_destroy_decompress(&cinfo);
    free(buf);
    return nic_err(err, NIC_EIO, "%s: cannot decode the JPEG: %s", path, fail.msg);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, file);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo); /* rare in patches; libvips converts them */
    *fallback = 1;
    return NIC_OK;
  }
  cinfo.out_color_space = JCS_RGB; /* grey is expanded too */
  jpeg_start_decompress(&cinfo);
  size_t stride = (size_t)cinfo.output_width * 3;
  buf = malloc(stride * cinfo.output_height + 1);
  if (!buf) {
    jpeg_destroy_decompress(&cinfo);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = buf + stride * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  *w = (int)cinfo.output_width;
  *h = (int)cinfo.output_height;
  jpeg_destroy_decompress(&cinfo);
  if (fail.warnings) {
    free(buf);
    return nic_err(err, NIC_EIO, "%s: corrupt JPEG data: %s", path, fail.msg);
  }
  *px = buf;
  return NIC_OK;
}

/* ---- PNG ------------------------------------------------------------------------- */

static nic_status decode_png(FILE *file, const char *path, uint8_t **px, int *w, int *h,
                             int *fallback, nic_error *err) {
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_stdio(&img, file))
    return nic_err(err, NIC_EIO, "%s: cannot decode the PNG: %s", path, img.message);
  if (img.format & PNG_FORMAT_FLAG_LINEAR) {
    /* 16-bit: libpng would treat it as linear light; libvips keeps the
     * top byte, as the rest of nic does. */
    png_image_free(&img);
    *fallback = 1;
    return NIC_OK;
  }
  img.format = PNG_FORMAT_RGB;
  uint8_t *buf = malloc(PNG_IMAGE_SIZE(img) + 1);
  if (!buf) {
    png_image_free(&img);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
  }
  png_color white = {255, 255, 255}; /* alpha is flattened onto white, as nic_image does */
  if (!png_image_finish_read(&img, &white, buf, 0, NULL)) {
    free(buf);
    nic_status s = nic_err(err, NIC_EIO, "%s: cannot decode the PNG: %s", path, img.message);
    png_image_free(&img);
    return s;
  }
  *w = (int)img.width;
  *h = (int)img.height;
  *px = buf;
  return NIC_OK;
}

/* ---- TIFF ------------------------------------------------------------------------ */

typedef struct tiff_msg {
  char text[256];
} tiff_msg;

/* Per-handle handler (libtiff >= 4.5): the message is kept for our error
 * instead of going to libtiff's process-wide handler. Returning 1 stops
 * the global one from printing it. */
static int tiff_on_error(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
  tiff_msg *m = user;
  if (!m->text[0]) vsnprintf(m->text, sizeof m->text, fmt, ap);
  return 1;
}

static int tiff_on_warning(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
  return 1; /* unknown tags and the like: ignored */
}

static nic_status decode_tiff(const char *path, uint8_t **px, int *w, int *h, nic_error *err) {
  tiff_msg msg = {{0}};
  TIFFOpenOptions *opts = TIFFOpenOptionsAlloc();
  if (!opts) return nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
  TIFFOpenOptionsSetErrorHandlerExtR(opts, tiff_on_error, &msg);
  TIFFOpenOptionsSetWarningHandlerExtR(opts, tiff_on_warning, &msg);
  TIFF *tif = TIFFOpenExt(path, "r", opts);
  TIFFOpenOptionsFree(opts);
  if (!tif) return nic_err(err, NIC_EIO, "%s: cannot open the TIFF: %s", path, msg.text);
  uint32_t tw = 0, th = 0;
  TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &tw);
  TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &th);
  nic_status s = NIC_OK;
  uint32_t *raster = NULL;
  uint8_t *buf = NULL;
  if (tw == 0 || th == 0 || (uint64_t)tw * th > (1u << 28)) {
    s = nic_err(err, NIC_EFORMAT, "%s: unsupported TIFF size %ux%u", path, tw, th);
    goto done;
  }
  raster = malloc(sizeof(uint32_t) * tw * th);
  buf = malloc((size_t)tw * th * 3);
  if (!raster || !buf) {
    s = nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
    goto done;
  }
  /* The RGBA interface handles every photometric interpretation and
   * compression libtiff knows (YCbCr JPEG, palette, grey, 16-bit). */
  if (!TIFFReadRGBAImageOriented(tif, tw, th, raster, ORIENTATION_TOPLEFT, 1)) {
    s = nic_err(err, NIC_EIO, "%s: cannot decode the TIFF: %s", path,
                msg.text[0] ? msg.text : "read failed");
    goto done;
  }
  for (size_t i = 0; i < (size_t)tw * th; i++) {
    uint32_t v = raster[i];
    /* libtiff premultiplies by alpha; adding (255 - a) flattens onto white. */
    unsigned a = TIFFGetA(v), pad = 255 - a;
    unsigned r = TIFFGetR(v) + pad, g = TIFFGetG(v) + pad, b = TIFFGetB(v) + pad;
    buf[3 * i] = (uint8_t)(r > 255 ? 255 : r);
    buf[3 * i + 1] = (uint8_t)(g > 255 ? 255 : g);
    buf[3 * i + 2] = (uint8_t)(b > 255 ? 255 : b);
  }
  *px = buf;
  buf = NULL;
  *w = (int)tw;
  *h = (int)th;
done:
  TIFFClose(tif);
  free(raster);
  free(buf);
  return s;
}

/* ---- dispatch -------------------------------------------------------------------- */

nic_status data_decode_file(const char *path, uint8_t **px, int *w, int *h, nic_error *err) {
  *px = NULL;
  *w = *h = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return nic_err(err, NIC_EIO, "cannot open %s: %s", path, strerror(errno));
  /* By content, not by name: a .jpg that is really a PNG still loads. */
  unsigned char magic[4] = {0};
  size_t got = fread(magic, 1, 4, f);
  rewind(f);
  nic_status s = NIC_OK;
  int fallback = 0;
  if (got < 4) {
    s = nic_err(err, NIC_EIO, "%s: not an image (%zu bytes)", path, got);
  } else if (magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
    s = decode_jpeg(f, path, px, w, h, &fallback, err);
  } else if (magic[0] == 0x89 && magic[1] == 'P' && magic[2] == 'N' && magic[3] == 'G') {
    s = decode_png(f, path, px, w, h, &fallback, err);
  } else if ((magic[0] == 'I' && magic[1] == 'I' && (magic[2] == 42 || magic[2] == 43)) ||
             (magic[0] == 'M' && magic[1] == 'M' && (magic[3] == 42 || magic[3] == 43))) {
    fclose(f);
    return decode_tiff(path, px, w, h, err);
  } else {
    fallback = 1;
  }
  fclose(f);
  if (s == NIC_OK && fallback) return nic_image_load_rgb8(path, px, w, h, err);
  return s;
}
