/* Writes a simulated slide as a pyramidal tiled TIFF that OpenSlide reads
 * as "generic-tiff": one directory per level in the main chain, largest
 * first, 256x256 JPEG tiles (YCbCr 4:2:0, each tile a complete JPEG
 * stream), resolution in px/cm. The writer (sim_tiff_write) takes its
 * level-0 pixels from a callback, so every simulator that makes slides
 * (histo, mosaic) shares it; nic_histo_write_tiff plugs in the histo
 * renderer.
 *
 * Memory is bounded by a row of tiles. Level 0 is rendered one row of
 * tiles at a time (tiles in parallel) and compressed in parallel; while
 * it is written, its 2x2 average goes to a temporary raw file that becomes
 * the source of level 1, and so on down. libtiff writes one directory at a
 * time, so the lower levels cannot be interleaved with level 0 in the file;
 * the temporary files (1/4, 1/16, ... of the raw level-0 size, next to
 * the output and unlinked at once) carry them over instead. */
#include <errno.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>

#include "nic/version.h"
#include "sim/histo_internal.h"
#include "sim/sim_internal.h"

#define MAX_LEVELS 32

int nic_histo_levels(int width, int height, int dims[][2]) {
  int n = 0, w = width, h = height;
  for (;;) {
    if (dims) {
      dims[n][0] = w;
      dims[n][1] = h;
    }
    n++;
    if ((w > h ? w : h) < 1024 || n == MAX_LEVELS || w < 2 || h < 2) break;
    w /= 2;
    h /= 2;
  }
  return n;
}

/* libtiff messages go to this handle's buffer instead of stderr. */
typedef struct tiff_msgs {
  char msg[256];
} tiff_msgs;

static int tiff_error_cb(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
  (void)tif;
  tiff_msgs *m = user;
  if (!m->msg[0]) {
    int n = snprintf(m->msg, sizeof m->msg, "%s: ", module ? module : "libtiff");
    if (n > 0 && n < (int)sizeof m->msg) vsnprintf(m->msg + n, sizeof m->msg - (size_t)n, fmt, ap);
  }
  return 1; /* handled: do not call the global handler */
}

static int tiff_warning_cb(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
  (void)tif, (void)user, (void)module, (void)fmt, (void)ap;
  return 1;
}

/* An anonymous temporary file beside `path`: on the same disk as the
 * output (not a RAM-backed /tmp), gone when closed. */
static nic_status temp_file(FILE **f, const char *path, nic_error *err) {
  char tmpl[4200];
  if (snprintf(tmpl, sizeof tmpl, "%s.tmpXXXXXX", path) >= (int)sizeof tmpl)
    return nic_err(err, NIC_EINVAL, "path too long: %s", path);
  int fd = mkstemp(tmpl);
  if (fd < 0) return nic_err(err, NIC_EIO, "cannot create %s: %s", tmpl, strerror(errno));
  unlink(tmpl);
  *f = fdopen(fd, "w+b");
  if (!*f) {
    close(fd);
    return nic_err(err, NIC_EIO, "cannot open a temporary file beside %s", path);
  }
  return NIC_OK;
}

static void set_level_tags(TIFF *tif, int level, int w, int h, double mpp, const char *desc) {
  TIFFSetField(tif, TIFFTAG_SUBFILETYPE, level ? FILETYPE_REDUCEDIMAGE : 0);
  TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, (uint32_t)w);
  TIFFSetField(tif, TIFFTAG_IMAGELENGTH, (uint32_t)h);
  TIFFSetField(tif, TIFFTAG_TILEWIDTH, (uint32_t)HISTO_TILE);
  TIFFSetField(tif, TIFFTAG_TILELENGTH, (uint32_t)HISTO_TILE);
  TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, 8);
  TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, 3);
  TIFFSetField(tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
  TIFFSetField(tif, TIFFTAG_COMPRESSION, COMPRESSION_JPEG);
  /* The tiles are complete JPEG streams with their own tables; libtiff
   * reserves a placeholder JPEGTables tag for a new directory, which we
   * never fill (we write raw tiles), so drop it. */
  TIFFUnsetField(tif, TIFFTAG_JPEGTABLES);
  TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_YCBCR);
  TIFFSetField(tif, TIFFTAG_YCBCRSUBSAMPLING, 2, 2);
  TIFFSetField(tif, TIFFTAG_RESOLUTIONUNIT, RESUNIT_CENTIMETER);
  double level_mpp = mpp * (double)(1 << level);
  TIFFSetField(tif, TIFFTAG_XRESOLUTION, 1e4 / level_mpp);
  TIFFSetField(tif, TIFFTAG_YRESOLUTION, 1e4 / level_mpp);
  TIFFSetField(tif, TIFFTAG_SOFTWARE, "nic " NIC_VERSION_STRING);
  if (desc) TIFFSetField(tif, TIFFTAG_IMAGEDESCRIPTION, desc);
}

/* Whites out the part of a tile slot that lies past the level's edge. */
static void pad_tile(uint8_t *tile, size_t stride, int w, int h) {
  for (int r = 0; r < HISTO_TILE; r++) {
    uint8_t *row = tile + (size_t)r * stride;
    if (r >= h)
      memset(row, 255, 3 * HISTO_TILE);
    else if (w < HISTO_TILE)
      memset(row + 3 * w, 255, 3 * (size_t)(HISTO_TILE - w));
  }
}

/* 2x2 box average of `rows` rows of width w into the next level's file;
 * rows in parallel into `half`, then one write. */
static nic_status downsample_rows(const uint8_t *src, size_t stride, int w, int rows, FILE *f,
                                  uint8_t *half, int nthreads, nic_error *err) {
  int ow = w / 2, oh = rows / 2;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int r = 0; r < oh; r++) {
    const uint8_t *a = src + (size_t)(2 * r) * stride, *b = a + stride;
    uint8_t *o = half + (size_t)r * 3 * ow;
    for (int x = 0; x < ow; x++)
      for (int c = 0; c < 3; c++) {
        int k = 6 * x + c;
        o[3 * x + c] = (uint8_t)((a[k] + a[k + 3] + b[k] + b[k + 3] + 2) >> 2);
      }
  }
  size_t n = (size_t)oh * ow;
  if (fwrite(half, 3, n, f) != n)
    return nic_err(err, NIC_EIO, "cannot write a temporary pyramid file: %s", strerror(errno));
  return NIC_OK;
}

typedef struct writer {
  TIFF *tif;
  tiff_msgs msgs;
  const char *path;
  int nthreads;
  int quality;
  uint8_t *row;  /* one row of tiles, padded to whole tiles */
  size_t stride; /* bytes per row of `row` */
  uint8_t *half; /* the row of tiles downsampled */
  uint8_t **jpg; /* compressed tiles of the row */
  size_t *jlen;
  const sim_tiff_src *slide; /* where level 0 comes from */
} writer;

/* Fills (level 0: renders; lower levels: already read) and compresses the
 * ntx tiles of a row in parallel, then appends them to the directory. */
static nic_status tile_row(writer *w, int level, int width, int ty, int ntx, int rows,
                           nic_error *err) {
  int failed = 0;
  nic_error first = {0};
#pragma omp parallel for schedule(dynamic) num_threads(w->nthreads)
  for (int tx = 0; tx < ntx; tx++) {
    int x = tx * HISTO_TILE, tw = width - x < HISTO_TILE ? width - x : HISTO_TILE;
    uint8_t *tile = w->row + (size_t)x * 3;
    nic_error e = {0};
    nic_status s = NIC_OK;
    if (level == 0)
      s = w->slide->fill(w->slide->user, omp_get_thread_num(), x, ty * HISTO_TILE, tw, rows, tile,
                         (int)w->stride, &e);
    pad_tile(tile, w->stride, tw, rows);
    if (s == NIC_OK)
      s = sim_jpeg_encode(tile, HISTO_TILE, HISTO_TILE, w->stride, w->quality, &w->jpg[tx],
                          &w->jlen[tx], &e);
    if (s != NIC_OK) {
#pragma omp critical(nic_sim_tiff_err)
      if (!failed++) first = e;
    }
  }
  nic_status s = NIC_OK;
  if (failed) s = nic_err(err, first.code, "%s: %s", w->path, first.msg);
  for (int tx = 0; tx < ntx; tx++) {
    if (s == NIC_OK) {
      ttile_t t =
          TIFFComputeTile(w->tif, (uint32_t)(tx * HISTO_TILE), (uint32_t)(ty * HISTO_TILE), 0, 0);
      if (TIFFWriteRawTile(w->tif, t, w->jpg[tx], (tmsize_t)w->jlen[tx]) < 0)
        s = nic_err(err, NIC_EIO, "writing %s: %s", w->path,
                    w->msgs.msg[0] ? w->msgs.msg : "cannot write a tile");
    }
    free(w->jpg[tx]);
    w->jpg[tx] = NULL;
  }
  return s;
}

/* Reads the next `rows` rows of a level from its temporary file. */
static nic_status read_rows(writer *w, FILE *f, int width, int rows, nic_error *err) {
  for (int r = 0; r < rows; r++)
    if (fread(w->row + (size_t)r * w->stride, 3, (size_t)width, f) != (size_t)width)
      return nic_err(err, NIC_EIO, "cannot read back a temporary pyramid file");
  return NIC_OK;
}

nic_status sim_tiff_write(const sim_tiff_src *slide, const char *path, int jpeg_quality,
                          int threads, nic_error *err) {
  int dims[MAX_LEVELS][2];
  int nlev = nic_histo_levels(slide->width, slide->height, dims);
  if (jpeg_quality < 1 || jpeg_quality > 100)
    return nic_err(err, NIC_EINVAL, "JPEG quality %d not in 1..100", jpeg_quality);
  writer w = {0};
  w.path = path;
  w.quality = jpeg_quality;
  w.nthreads = sim_threads(threads);
  w.slide = slide;
  int ntx0 = (slide->width + HISTO_TILE - 1) / HISTO_TILE;
  w.stride = (size_t)ntx0 * HISTO_TILE * 3;
  w.row = malloc(w.stride * HISTO_TILE);
  w.jpg = calloc((size_t)ntx0, sizeof *w.jpg);
  w.jlen = calloc((size_t)ntx0, sizeof *w.jlen);
  w.half = malloc(w.stride * HISTO_TILE / 4 + 3);
  FILE *src = NULL, *dst = NULL;
  nic_status s = NIC_OK;
  TIFFOpenOptions *oo = NULL;
  if (!w.row || !w.jpg || !w.jlen || !w.half) {
    s = nic_err(err, NIC_ENOMEM, "out of memory writing %s", path);
    goto done;
  }
  /* Classic TIFF offsets stop at 4 GiB; JPEG shrinks the pixels well
   * below their raw size, so switch to BigTIFF only past 4 GiB raw. */
  double raw = 0;
  for (int k = 0; k < nlev; k++) raw += 3.0 * dims[k][0] * dims[k][1];
  oo = TIFFOpenOptionsAlloc();
  if (!oo) {
    s = nic_err(err, NIC_ENOMEM, "out of memory writing %s", path);
    goto done;
  }
  TIFFOpenOptionsSetErrorHandlerExtR(oo, tiff_error_cb, &w.msgs);
  TIFFOpenOptionsSetWarningHandlerExtR(oo, tiff_warning_cb, &w.msgs);
  w.tif = TIFFOpenExt(path, raw > 4294967296.0 ? "w8" : "w", oo);
  if (!w.tif) {
    s = nic_err(err, NIC_EIO, "cannot create %s: %s", path, w.msgs.msg[0] ? w.msgs.msg : "");
    goto done;
  }
  char desc[256];
  snprintf(desc, sizeof desc, "%s; mpp=%.9g; width=%d; height=%d; levels=%d", slide->what,
           slide->mpp, slide->width, slide->height, nlev);

  for (int k = 0; k < nlev && s == NIC_OK; k++) {
    int lw = dims[k][0], lh = dims[k][1];
    int ntx = (lw + HISTO_TILE - 1) / HISTO_TILE, nty = (lh + HISTO_TILE - 1) / HISTO_TILE;
    set_level_tags(w.tif, k, lw, lh, slide->mpp, k == 0 ? desc : NULL);
    if (k + 1 < nlev && (s = temp_file(&dst, path, err)) != NIC_OK) break;
    if (src) rewind(src);
    for (int ty = 0; ty < nty && s == NIC_OK; ty++) {
      int rows = lh - ty * HISTO_TILE < HISTO_TILE ? lh - ty * HISTO_TILE : HISTO_TILE;
      if (k > 0) s = read_rows(&w, src, lw, rows, err);
      if (s == NIC_OK) s = tile_row(&w, k, lw, ty, ntx, rows, err);
      if (s == NIC_OK && dst)
        s = downsample_rows(w.row, w.stride, lw, rows, dst, w.half, w.nthreads, err);
    }
    if (s == NIC_OK && !TIFFWriteDirectory(w.tif))
      s = nic_err(err, NIC_EIO, "writing %s: %s", path,
                  w.msgs.msg[0] ? w.msgs.msg : "cannot write a directory");
    if (src) fclose(src);
    src = dst;
    dst = NULL;
    if (src && fflush(src) != 0 && s == NIC_OK)
      s = nic_err(err, NIC_EIO, "cannot write a temporary pyramid file: %s", strerror(errno));
  }
done:
  if (src) fclose(src);
  if (dst) fclose(dst);
  if (w.tif) {
    if (s == NIC_OK && !TIFFFlush(w.tif))
      s = nic_err(err, NIC_EIO, "writing %s: %s", path,
                  w.msgs.msg[0] ? w.msgs.msg : "flush failed");
    TIFFClose(w.tif);
  }
  if (oo) TIFFOpenOptionsFree(oo);
  free(w.row);
  free(w.jpg);
  free(w.jlen);
  free(w.half);
  if (s != NIC_OK) unlink(path);
  return s;
}

/* ---- the histo slides ---- */

typedef struct histo_fill_ctx {
  const nic_histo_layout *l;
  histo_scratch *scr; /* one per thread */
} histo_fill_ctx;

static nic_status histo_fill(void *user, int thread, int x, int y, int w, int h, uint8_t *rgb,
                             int stride, nic_error *err) {
  histo_fill_ctx *c = user;
  return histo_render_rect(c->l, x, y, w, h, rgb, stride, NULL, NULL, &c->scr[thread], err);
}

nic_status nic_histo_write_tiff(const nic_histo_layout *l, const char *path, int jpeg_quality,
                                int threads, nic_error *err) {
  int nthreads = sim_threads(threads);
  histo_fill_ctx c = {l, calloc((size_t)nthreads, sizeof(histo_scratch))};
  if (!c.scr) return nic_err(err, NIC_ENOMEM, "out of memory writing %s", path);
  sim_tiff_src src = {
      l->info.width, l->info.height, l->mpp, "nic simulated H&E slide", histo_fill, &c};
  nic_status s = sim_tiff_write(&src, path, jpeg_quality, nthreads, err);
  for (int t = 0; t < nthreads; t++) histo_scratch_free(&c.scr[t]);
  free(c.scr);
  return s;
}
