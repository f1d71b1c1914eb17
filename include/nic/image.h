/* Reading image files (JPEG, PNG, TIFF and anything else libvips reads) as
 * 8-bit RGB, and area-averaging resampling of RGB8 buffers. */
#ifndef NIC_IMAGE_H
#define NIC_IMAGE_H

#include <stdint.h>

#include "nic/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Loads the image at `path` as interleaved 8-bit sRGB, rows top to bottom,
 * 3 bytes per pixel, no row padding. Grey images are expanded to three
 * equal bands, 16-bit images scaled to 8 bits, other colour spaces (CMYK,
 * Lab) converted to sRGB; an alpha channel is flattened onto white.
 * Embedded ICC profiles are not applied: pixel values are used as stored,
 * as the NIC encoders were trained. For multi-page files (pyramidal TIFF)
 * the first page is read at full resolution. *pixels is malloc'd (release
 * with free()). Fails with NIC_EIO, naming the file, when it cannot be read
 * or decoded. */
nic_status nic_image_load_rgb8(const char *path, uint8_t **pixels, int *width, int *height,
                               nic_error *err);

/* Resamples an interleaved 8-bit image of `channels` bands from sw x sh to
 * dw x dh by area averaging: each output pixel is the mean of the source
 * area it covers, partial pixels weighted by their covered fraction, then
 * rounded to nearest. For integer factors this is the plain block mean
 * (e.g. the 2x2 average pooling of the NIC encoders); enlarging replicates
 * pixels (a box filter). Rows are tightly packed in both buffers. */
nic_status nic_image_resize_area(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst,
                                 int dw, int dh, nic_error *err);

#ifdef __cplusplus
}
#endif
#endif
