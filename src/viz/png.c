/* Writing 8-bit gray, RGB or RGBA images as PNG with libpng. libpng reports errors by
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
static int write_rows(FILE *f, const nic_png_image *im, int zlevel, png_jmp *j) {
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
  static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                               PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)im->w, (png_uint_32)im->h, 8, types[im->channels],
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, zlevel);
  /* For fast levels the SUB filter alone does well on flat backgrounds;
   * the adaptive search over all filters costs more than it saves. */
  if (zlevel <= 3) png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_SUB);
  png_write_info(png, info);
  for (int y = 0; y < im->h; y++) png_write_row(png, im->px + (size_t)y * im->stride);
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return 0;
}

nic_status nic_png_write(const char *path, const nic_png_image *im, int zlevel, nic_error *err) {
  if (!path || !im || !im->px) return nic_err(err, NIC_EINVAL, "png_write: NULL argument");
  if (im->w <= 0 || im->h <= 0 || im->w > (1 << 20) || im->h > (1 << 20))
    return nic_err(err, NIC_EINVAL, "png_write %s: bad size %dx%d", path, im->w, im->h);
  if (im->channels < 1 || im->channels > 4)
    return nic_err(err, NIC_EINVAL, "png_write %s: %d channels (1 to 4)", path, im->channels);
  if (im->stride < (size_t)im->w * (size_t)im->channels)
    return nic_err(err, NIC_EINVAL, "png_write %s: row stride %zu below the row size", path,
                   im->stride);
  if (zlevel < 0 || zlevel > 9) zlevel = 6;
  FILE *f = fopen(path, "wb");
  if (!f) return nic_err(err, NIC_EIO, "cannot write %s: %s", path, strerror(errno));
  png_jmp j = {.msg = ""};
  int rc = write_rows(f, im, zlevel, &j);
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

nic_status nic_png_write_rgb8(const char *path, const uint8_t *rgb, int w, int h, nic_error *err) {
  nic_png_image im = {rgb, w, h, 3, (size_t)(w > 0 ? w : 0) * 3};
  return nic_png_write(path, &im, -1, err);
}
