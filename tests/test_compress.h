/* Shared by test_compress.c and test_compress_run.c: the test encoder, the
 * test slide with a known tissue layout, and rotations/flips done the
 * NumPy way. Header-only (static inline), since every tests/test_*.c is
 * its own program. */
#ifndef NIC_TEST_COMPRESS_H
#define NIC_TEST_COMPRESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "nic/encoder.h"
#include "nic/nic.h"

/* The test slide: CT_W x CT_H px at CT_MPP um/px, so a cell (128 px at
 * 0.5 um/px) is 64 / 0.45 = 142.2 level-0 px and the grid is 13 x 17
 * cells, the last row and column reaching past the slide. */
#define CT_MPP 0.45
#define CT_W 2300
#define CT_H 1720
#define CT_GRID_W 17
#define CT_GRID_H 13
#define CT_DIM 32 /* embedding size of the test encoder */

/* Cells painted with tissue: three rectangles of whole cells, the third
 * running into the partial last column. */
static inline int ct_layout_tissue(int i, int j) {
  return (i >= 2 && i <= 5 && j >= 2 && j <= 6) || (i >= 7 && i <= 10 && j >= 9 && j <= 14) ||
         (i >= 1 && i <= 3 && j >= 14 && j <= 16);
}

/* Cells that must be kept: the painted ones except those of the last
 * column, whose 24 px inside the slide are 17% of the cell. */
static inline int ct_layout_kept(int i, int j) {
  return ct_layout_tissue(i, j) && j < CT_GRID_W - 1;
}

static inline uint32_t ct_hash(uint32_t x, uint32_t y) {
  uint32_t h = x * 0x9E3779B1u ^ (y + 0x7F4A7C15u) * 0x85EBCA77u;
  h ^= h >> 15;
  h *= 0x2C1B3C6Du;
  h ^= h >> 12;
  return h;
}

static inline uint8_t ct_clamp(int v) {
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Writes the test slide as a tiled pyramidal JPEG TIFF: glass, plus
 * speckled pink tissue on the layout's cells when `tissue`; resolution
 * tags for CT_MPP when `spacing` (else none that count). Exits on
 * failure. */
static inline void ct_write_layout_slide(const char *path, int tissue, int spacing) {
  uint8_t *p = malloc((size_t)CT_W * CT_H * 3);
  double S = 64 / CT_MPP;
  for (int y = 0; y < CT_H; y++)
    for (int x = 0; x < CT_W; x++) {
      uint32_t h = ct_hash((uint32_t)x, (uint32_t)y);
      int n = (int)(h % 9) - 4;
      int c[3] = {242 + n, 240 + n, 244 + n};
      int i = (int)((y + 0.5) / S), j = (int)((x + 0.5) / S);
      if (tissue && ct_layout_tissue(i, j)) {
        int nucleus = (h >> 8) % 5 == 0, v = (int)((h >> 12) % 21) - 10;
        c[0] = (nucleus ? 120 : 225) + v;
        c[1] = (nucleus ? 70 : 150) + v;
        c[2] = (nucleus ? 160 : 190) + v;
      }
      uint8_t *q = p + 3 * ((size_t)y * CT_W + x);
      for (int k = 0; k < 3; k++) q[k] = ct_clamp(c[k]);
    }
  VipsImage *img =
      vips_image_new_from_memory(p, (size_t)CT_W * CT_H * 3, CT_W, CT_H, 3, VIPS_FORMAT_UCHAR);
  int rc = -1;
  if (img) {
    img->Type = VIPS_INTERPRETATION_sRGB;
    img->Xres = img->Yres = spacing ? 1000.0 / CT_MPP : 1.0; /* px per mm */
    rc = vips_tiffsave(img, path, "tile", TRUE, "tile_width", 256, "tile_height", 256, "pyramid",
                       TRUE, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_JPEG, "Q", 90, "resunit",
                       VIPS_FOREIGN_TIFF_RESUNIT_CM, NULL);
    g_object_unref(img);
  }
  free(p);
  if (rc) {
    fprintf(stderr, "writing %s: %s\n", path, vips_error_buffer());
    exit(1);
  }
}

/* A NIC encoder with CT_DIM outputs, random weights and batch-norm
 * statistics (so that folding them is exercised), saved to path. */
static inline void ct_write_model(const char *path, nic_ctx *ctx) {
  nic_model *m = NULL;
  nic_error err = {0};
  if (nic_encoder_build_nic(&m, CT_DIM, &err) != NIC_OK ||
      nic_model_init_params(m, ctx, &err) != NIC_OK) {
    fprintf(stderr, "building the test encoder: %s\n", err.msg);
    exit(1);
  }
  nic_rng r;
  nic_rng_seed(&r, 77);
  int np = 0;
  nic_param **ps = nic_model_params(m, &np);
  for (int i = 0; i < np; i++) {
    const char *dot = strrchr(ps[i]->name, '.');
    double lo = 0, hi = 0;
    if (!strcmp(dot, ".running_var"))
      lo = 0.5, hi = 2;
    else if (!strcmp(dot, ".running_mean") || !strcmp(dot, ".beta"))
      lo = -0.1, hi = 0.1;
    else if (!strcmp(dot, ".gamma"))
      lo = 0.5, hi = 1.5;
    else
      continue;
    int64_t n = nic_tensor_numel(&ps[i]->value);
    for (int64_t k = 0; k < n; k++)
      ps[i]->value.data[k] = (float)(lo + (hi - lo) * nic_rng_uniform(&r));
  }
  nic_model_set_meta(m, "encoder_name", "\"test-encoder\"");
  if (nic_model_save(m, path, &err) != NIC_OK) {
    fprintf(stderr, "saving the test encoder: %s\n", err.msg);
    exit(1);
  }
  nic_model_free(m);
}

/* out = orientation o of the q x q image `in` (one int per pixel), built
 * from whole-array steps as NumPy does: fliplr when o >= 4, then rot90
 * (o % 4) times, rot90 being out[i][j] = in[j][q-1-i]. */
static inline void ct_orient_int(const int *in, int *out, int q, int o) {
  int *a = malloc(sizeof(int) * (size_t)q * q), *b = malloc(sizeof(int) * (size_t)q * q);
  memcpy(a, in, sizeof(int) * (size_t)q * q);
  if (o >= 4) {
    for (int i = 0; i < q; i++)
      for (int j = 0; j < q; j++) b[i * q + j] = a[i * q + (q - 1 - j)];
    memcpy(a, b, sizeof(int) * (size_t)q * q);
  }
  for (int k = 0; k < o % 4; k++) {
    for (int i = 0; i < q; i++)
      for (int j = 0; j < q; j++) b[i * q + j] = a[j * q + (q - 1 - i)];
    memcpy(a, b, sizeof(int) * (size_t)q * q);
  }
  memcpy(out, a, sizeof(int) * (size_t)q * q);
  free(a);
  free(b);
}

/* The same for a q x q RGB patch (H x W x 3 bytes). */
static inline void ct_orient_rgb(const uint8_t *in, uint8_t *out, int q, int o) {
  int *idx = malloc(sizeof(int) * (size_t)q * q), *src = malloc(sizeof(int) * (size_t)q * q);
  for (int k = 0; k < q * q; k++) idx[k] = k;
  ct_orient_int(idx, src, q, o);
  for (int k = 0; k < q * q; k++) memcpy(out + 3 * k, in + 3 * src[k], 3);
  free(idx);
  free(src);
}

#endif
