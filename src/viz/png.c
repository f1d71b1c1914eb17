/* Writing RGB8 images as PNG with libpng. libpng reports errors by
 * longjmp from its error callback; the jump lands here, so a failure (a
 * full disk, say) becomes a nic_error naming the file. */
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include "viz/viz_internal.h"

typedef struct png_jmp {
  jmp_buf jmp;
  char msg[200];
} png_jmp;

static void on_png_error(png_structp png, png_const_charp msg) {
  png_jmp *j = png_get_error_ptr(png);
  snprintf(j->msg, sizeof j->msg, "%s", msg);
  longjmp(j->jmp, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) {
  (void)png, (void)msg;
}

/* Everything that runs between setjmp and a possible longjmp lives in this
 * function, whose locals are not modified after the setjmp, so nothing
 * needs to be volatile. */
static int write_rows(FILE *f, const uint8_t *rgb, int w, int h, png_jmp *j) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, j, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!png || !info) {
    png_destroy_write_struct(&png, &info);
    snprintf(j->msg, sizeof j->msg, "out of memory");
    return -1;
  }
  if (setjmp(j->jmp)) {
    png_destroy_write_struct(&png, &info);
    return -1;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 6);
  png_write_info(png, info);
  for (int y = 0; y < h; y++) png_write_row(png, rgb + (size_t)y * (size_t)w * 3);
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return 0;
}

nic_status nic_png_write_rgb8(const char *path, const uint8_t *rgb, int w, int h, nic_error *err) {
  if (!path || !rgb) return nic_err(err, NIC_EINVAL, "png_write: NULL argument");
  if (w <= 0 || h <= 0 || w > (1 << 20) || h > (1 << 20))
    return nic_err(err, NIC_EINVAL, "png_write %s: bad size %dx%d", path, w, h);
  FILE *f = fopen(path, "wb");
  if (!f) return nic_err(err, NIC_EIO, "cannot write %s: %s", path, strerror(errno));
  png_jmp j = {.msg = ""};
  int rc = write_rows(f, rgb, w, h, &j);
  if (fclose(f) != 0 && rc == 0) {
    snprintf(j.msg, sizeof j.msg, "%s", strerror(errno));
    rc = -1;
  }
  if (rc != 0) {
    remove(path); /* leave no truncated file behind */
    return nic_err(err, NIC_EIO, "writing %s: %s", path, j.msg);
  }
  return NIC_OK;
}
