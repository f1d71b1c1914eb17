/* A direct reader for the JPEG-tiled levels of TIFF-based slides (OpenSlide's
 * "generic-tiff" and "aperio" formats), which skips OpenSlide's cairo
 * compositing into premultiplied ARGB.
 *
 * At open, libtiff lists each level's tile offsets, byte counts and
 * JPEGTables. A read then fetches raw tiles with pread (thread-safe, no
 * TIFF handle or directory switch per read) and decodes them with libjpeg
 * (libjpeg-turbo) exactly as OpenSlide 3.4 does through libtiff's
 * TIFFRGBAImage: the tables first, then the abbreviated tile stream, default
 * settings (ISLOW DCT, fancy upsampling), YCbCr converted to RGB by libjpeg
 * for YCbCr photometric and no colour conversion for RGB photometric. So
 * level pixels are bit-identical to OpenSlide's; pixels beyond the level's
 * edge and missing (zero-length) tiles are white, as the OpenSlide path
 * makes of its transparent pixels.
 *
 * Decoded tiles go to a small LRU cache shared by every thread reading the
 * slide (neighbouring patches share tiles). Its mutex is held only for
 * lookups and bookkeeping: decoding and copying happen outside it, and a
 * slot in use is pinned by a reference count. */
#include <stdio.h> /* first: jpeglib.h needs FILE and size_t */

#include <errno.h>
#include <fcntl.h>
#include <jpeglib.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>

#include "slide/slide_internal.h"

/* Bytes of decoded tiles the cache keeps (RGB, 192 KiB per 256 px tile). */
#define CACHE_BYTES (24u << 20)
#define CACHE_MIN_SLOTS 8
#define CACHE_MAX_SLOTS 512
/* A raw tile larger than this is taken as a corrupt byte count. */
#define MAX_RAW_TILE (64u << 20)

/* One level read here. */
typedef struct fast_level {
  int ok;                  /* 1: this level is read here; 0: through OpenSlide */
  int ycbcr;               /* photometric YCbCr (libjpeg converts) rather than RGB */
  int64_t w, h;            /* level size */
  int tw, th;              /* tile size */
  int64_t across, down;    /* tiles per row, per column */
  uint64_t *offset, *size; /* per tile, row-major */
  uint8_t *tables;         /* JPEGTables (an abbreviated stream), or NULL */
  uint32_t ntables;
} fast_level;

/* One cached tile. */
typedef struct tile_slot {
  int level; /* -1: empty */
  int64_t index;
  uint8_t *rgb;  /* max_tile_bytes */
  int refs;      /* readers copying from it: not evicted while > 0 */
  uint64_t used; /* LRU clock */
} tile_slot;

struct nic__fast {
  int fd;
  int nlevels;
  fast_level *lv;
  size_t max_tile_bytes; /* largest tw * th * 3 of the levels read here */
  pthread_mutex_t mu;    /* guards everything below */
  int nslots;
  tile_slot *slots;
  uint64_t clock, hits, misses;
};

/* What one read needs beyond the shared state: a buffer for raw tile bytes
 * and one to decode into (swapped with a cache slot's when cached). */
typedef struct read_ctx {
  uint8_t *raw;
  size_t rawcap;
  uint8_t *scratch;
} read_ctx;

/* ---- libjpeg errors ------------------------------------------------------------ */

typedef struct jpeg_err {
  struct jpeg_error_mgr pub;
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_err_exit(j_common_ptr ci) {
  jpeg_err *e = (jpeg_err *)ci->err;
  ci->err->format_message(ci, e->msg);
  longjmp(e->jb, 1);
}

/* Warnings (such as extraneous bytes before a marker) do not stop libtiff's
 * decoder either; they are not printed. */
static void jpeg_err_emit(j_common_ptr ci, int level) {
  (void)ci, (void)level;
}

/* ---- raw tiles ------------------------------------------------------------------ */

/* Reads the raw bytes of tile idx of level L into c->raw. */
static nic_status read_raw(const nic__fast *f, const char *path, int L, int64_t idx, read_ctx *c,
                           size_t *n, nic_error *err) {
  const fast_level *lv = &f->lv[L];
  uint64_t off = lv->offset[idx], size = lv->size[idx];
  int64_t col = idx % lv->across, row = idx / lv->across;
  if (size > MAX_RAW_TILE)
    return nic_err(err, NIC_EFORMAT, "%s: level %d tile (%lld, %lld): implausible size %llu bytes",
                   path, L, (long long)col, (long long)row, (unsigned long long)size);
  if (c->rawcap < size) {
    uint8_t *p = realloc(c->raw, (size_t)size);
    if (!p) return nic_err(err, NIC_ENOMEM, "%s: out of memory reading a tile", path);
    c->raw = p;
    c->rawcap = (size_t)size;
  }
  size_t got = 0;
  while (got < size) {
    ssize_t r = pread(f->fd, c->raw + got, (size_t)size - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0)
      return nic_err(err, NIC_EIO,
                     "%s: level %d tile (%lld, %lld): cannot read %llu bytes at offset %llu: %s",
                     path, L, (long long)col, (long long)row, (unsigned long long)size,
                     (unsigned long long)off, r < 0 ? strerror(errno) : "the file is truncated");
    got += (size_t)r;
  }
  *n = (size_t)size;
  return NIC_OK;
}

/* ---- decoding ---------------------------------------------------------------------- */

/* Decodes one JPEG tile stream (after lv's tables) into out (tw x th
 * packed RGB), or with header_only just checks that it is a 3-component
 * tw x th JPEG. Returns NULL, or why it failed (static text or je->msg). */
static const char *jpeg_decode(const fast_level *lv, const uint8_t *raw, size_t n, uint8_t *out,
                               int header_only, jpeg_err *je) {
  struct jpeg_decompress_struct ci;
  const char *volatile what = NULL;
  ci.err = jpeg_std_error(&je->pub);
  je->pub.error_exit = jpeg_err_exit;
  je->pub.emit_message = jpeg_err_emit;
  je->msg[0] = '\0';
  jpeg_create_decompress(&ci);
  if (setjmp(je->jb)) {
    jpeg_destroy_decompress(&ci);
    return je->msg;
  }
  if (lv->tables) { /* the shared tables, loaded first as libtiff does */
    jpeg_mem_src(&ci, lv->tables, lv->ntables);
    jpeg_read_header(&ci, FALSE);
  }
  jpeg_mem_src(&ci, raw, (unsigned long)n);
  if (jpeg_read_header(&ci, TRUE) != JPEG_HEADER_OK)
    what = "no image in the tile";
  else if (ci.num_components != 3)
    what = "not a 3-component JPEG";
  else if ((int64_t)ci.image_width != lv->tw || (int64_t)ci.image_height != lv->th)
    what = "the JPEG's size is not the tile size";
  if (!what && !header_only) {
    /* TIFFRGBAImage's settings (JPEGCOLORMODE_RGB for YCbCr; colour
     * handling suppressed otherwise), libjpeg's defaults for the rest. */
    ci.jpeg_color_space = lv->ycbcr ? JCS_YCbCr : JCS_UNKNOWN;
    ci.out_color_space = lv->ycbcr ? JCS_RGB : JCS_UNKNOWN;
    jpeg_start_decompress(&ci);
    if (ci.output_components != 3 || (int64_t)ci.output_width != lv->tw) {
      what = "unexpected decoded layout";
    } else {
      size_t stride = (size_t)lv->tw * 3;
      while (ci.output_scanline < ci.output_height) {
        JSAMPROW rows[16];
        JDIMENSION k = 0;
        for (; k < 16 && ci.output_scanline + k < ci.output_height; k++)
          rows[k] = out + (size_t)(ci.output_scanline + k) * stride;
        jpeg_read_scanlines(&ci, rows, k);
      }
      jpeg_finish_decompress(&ci);
    }
  }
  jpeg_destroy_decompress(&ci);
  return what;
}

/* Decodes tile idx of level L into out (tw x th packed RGB); header_only
 * as for jpeg_decode. Missing (zero-length) tiles are white. */
static nic_status decode_tile(const nic__fast *f, const char *path, int L, int64_t idx, read_ctx *c,
                              uint8_t *out, int header_only, nic_error *err) {
  const fast_level *lv = &f->lv[L];
  if (lv->size[idx] == 0) { /* nothing scanned there */
    if (!header_only) memset(out, 255, (size_t)lv->tw * lv->th * 3);
    return NIC_OK;
  }
  size_t n = 0;
  nic_status st = read_raw(f, path, L, idx, c, &n, err);
  if (st != NIC_OK) return st;
  jpeg_err je;
  const char *why = jpeg_decode(lv, c->raw, n, out, header_only, &je);
  if (why)
    return nic_err(err, NIC_EFORMAT, "%s: level %d tile (%lld, %lld): JPEG decoding failed: %s",
                   path, L, (long long)(idx % lv->across), (long long)(idx / lv->across), why);
  return NIC_OK;
}

/* ---- the tile cache ------------------------------------------------------------------ */

/* The slot holding (L, idx), or -1. Call with mu held. */
static int cache_find(const nic__fast *f, int L, int64_t idx) {
  for (int k = 0; k < f->nslots; k++)
    if (f->slots[k].level == L && f->slots[k].index == idx) return k;
  return -1;
}

/* An empty slot, else the least recently used unpinned one, else -1. Call
 * with mu held. */
static int cache_victim(const nic__fast *f) {
  int best = -1;
  for (int k = 0; k < f->nslots; k++) {
    const tile_slot *t = &f->slots[k];
    if (t->level < 0) return k;
    if (t->refs == 0 && (best < 0 || t->used < f->slots[best].used)) best = k;
  }
  return best;
}

/* Pins slot k for the caller. Call with mu held. */
static const uint8_t *cache_pin(nic__fast *f, int k) {
  f->slots[k].refs++;
  f->slots[k].used = ++f->clock;
  return f->slots[k].rgb;
}

/* The decoded tile idx of level L: *pix points at it, pinned in slot *slot
 * (release with cache_release), or at c->scratch with *slot = -1 when every
 * slot is pinned. */
static nic_status get_tile(nic__fast *f, const char *path, int L, int64_t idx, read_ctx *c,
                           const uint8_t **pix, int *slot, nic_error *err) {
  pthread_mutex_lock(&f->mu);
  int k = cache_find(f, L, idx);
  if (k >= 0) {
    f->hits++;
    *pix = cache_pin(f, k);
    *slot = k;
    pthread_mutex_unlock(&f->mu);
    return NIC_OK;
  }
  f->misses++;
  pthread_mutex_unlock(&f->mu);
  if (!c->scratch && !(c->scratch = malloc(f->max_tile_bytes)))
    return nic_err(err, NIC_ENOMEM, "%s: out of memory for a tile", path);
  nic_status st = decode_tile(f, path, L, idx, c, c->scratch, 0, err);
  if (st != NIC_OK) return st;
  pthread_mutex_lock(&f->mu);
  k = cache_find(f, L, idx); /* another thread may have decoded it meanwhile */
  if (k < 0 && (k = cache_victim(f)) >= 0) {
    /* The slot takes the decoded tile; its old buffer becomes our scratch
     * (NULL for a never used slot: allocated again when needed). */
    uint8_t *old = f->slots[k].rgb;
    f->slots[k].rgb = c->scratch;
    f->slots[k].level = L;
    f->slots[k].index = idx;
    c->scratch = old;
  }
  if (k >= 0) {
    *pix = cache_pin(f, k);
    *slot = k;
  } else {
    *pix = c->scratch;
    *slot = -1;
  }
  pthread_mutex_unlock(&f->mu);
  return NIC_OK;
}

static void cache_release(nic__fast *f, int slot) {
  if (slot < 0) return;
  pthread_mutex_lock(&f->mu);
  f->slots[slot].refs--;
  pthread_mutex_unlock(&f->mu);
}

/* ---- reading a window ------------------------------------------------------------------ */

int nic__fast_level(const nic_slide *s, int level) {
  return s->fast && level >= 0 && level < s->fast->nlevels && s->fast->lv[level].ok;
}

nic_status nic__fast_read(const nic_slide *s, int level, int64_t lx, int64_t ly, int64_t w,
                          int64_t h, uint8_t *rgb, nic_error *err) {
  nic__fast *f = s->fast;
  const fast_level *lv = &f->lv[level];
  memset(rgb, 255, (size_t)(w * h * 3)); /* beyond the level: white */
  int64_t x0 = lx < 0 ? 0 : lx, y0 = ly < 0 ? 0 : ly;
  int64_t x1 = lx + w < lv->w ? lx + w : lv->w, y1 = ly + h < lv->h ? ly + h : lv->h;
  if (x0 >= x1 || y0 >= y1) return NIC_OK;
  read_ctx c = {0};
  nic_status st = NIC_OK;
  for (int64_t tr = y0 / lv->th; st == NIC_OK && tr <= (y1 - 1) / lv->th; tr++) {
    for (int64_t tc = x0 / lv->tw; st == NIC_OK && tc <= (x1 - 1) / lv->tw; tc++) {
      const uint8_t *pix = NULL;
      int slot = -1;
      st = get_tile(f, s->path, level, tr * lv->across + tc, &c, &pix, &slot, err);
      if (st != NIC_OK) break;
      /* The part of the tile inside both the window and the level. */
      int64_t ax = tc * lv->tw, ay = tr * lv->th;
      int64_t cx0 = ax > x0 ? ax : x0, cx1 = ax + lv->tw < x1 ? ax + lv->tw : x1;
      int64_t cy0 = ay > y0 ? ay : y0, cy1 = ay + lv->th < y1 ? ay + lv->th : y1;
      size_t len = (size_t)(cx1 - cx0) * 3;
      for (int64_t y = cy0; y < cy1; y++)
        memcpy(rgb + (size_t)(((y - ly) * w + (cx0 - lx)) * 3),
               pix + (size_t)(((y - ay) * lv->tw + (cx0 - ax)) * 3), len);
      cache_release(f, slot);
    }
  }
  free(c.raw);
  free(c.scratch);
  return st;
}

void nic__fast_stats(const nic_slide *s, uint64_t *hits, uint64_t *misses) {
  uint64_t h = 0, m = 0;
  if (s->fast) {
    pthread_mutex_lock(&s->fast->mu);
    h = s->fast->hits;
    m = s->fast->misses;
    pthread_mutex_unlock(&s->fast->mu);
  }
  if (hits) *hits = h;
  if (misses) *misses = m;
}

/* ---- opening ----------------------------------------------------------------------------- */

static int tiff_quiet(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
  (void)tif, (void)user, (void)module, (void)fmt, (void)ap;
  return 1; /* handled: OpenSlide reports what matters */
}

/* Fills lv from the current directory when it is a tiled, 8-bit, 3-sample,
 * contiguous, top-left JPEG image with YCbCr or RGB photometric; returns 0
 * (lv->ok stays 0) for anything else, -1 when out of memory. */
static int describe_dir(TIFF *tif, fast_level *lv) {
  uint32_t w = 0, h = 0, tw = 0, th = 0;
  uint16_t comp = 0, photo = 0, spp = 0, bps = 0, planar = 0, orient = 0;
  if (!TIFFIsTiled(tif) || !TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w) ||
      !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h) || !TIFFGetField(tif, TIFFTAG_TILEWIDTH, &tw) ||
      !TIFFGetField(tif, TIFFTAG_TILELENGTH, &th) ||
      !TIFFGetField(tif, TIFFTAG_COMPRESSION, &comp) ||
      !TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photo))
    return 0;
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
  TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bps);
  TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
  TIFFGetFieldDefaulted(tif, TIFFTAG_ORIENTATION, &orient);
  if (comp != COMPRESSION_JPEG || spp != 3 || bps != 8 || planar != PLANARCONFIG_CONTIG ||
      orient != ORIENTATION_TOPLEFT || (photo != PHOTOMETRIC_YCBCR && photo != PHOTOMETRIC_RGB) ||
      w == 0 || h == 0 || tw == 0 || th == 0 || tw > 8192 || th > 8192)
    return 0;
  int64_t across = ((int64_t)w + tw - 1) / tw, down = ((int64_t)h + th - 1) / th;
  if ((int64_t)TIFFNumberOfTiles(tif) != across * down) return 0;
  uint64_t *off = NULL, *size = NULL;
  if (!TIFFGetField(tif, TIFFTAG_TILEOFFSETS, &off) ||
      !TIFFGetField(tif, TIFFTAG_TILEBYTECOUNTS, &size) || !off || !size)
    return 0;
  size_t n = (size_t)(across * down);
  lv->offset = malloc(sizeof(uint64_t) * n);
  lv->size = malloc(sizeof(uint64_t) * n);
  if (!lv->offset || !lv->size) return -1;
  memcpy(lv->offset, off, sizeof(uint64_t) * n);
  memcpy(lv->size, size, sizeof(uint64_t) * n);
  uint32_t ntab = 0;
  void *tab = NULL;
  if (TIFFGetField(tif, TIFFTAG_JPEGTABLES, &ntab, &tab) && tab && ntab > 2) {
    if (!(lv->tables = malloc(ntab))) return -1;
    memcpy(lv->tables, tab, ntab);
    lv->ntables = ntab;
  }
  lv->ycbcr = photo == PHOTOMETRIC_YCBCR;
  lv->w = w;
  lv->h = h;
  lv->tw = (int)tw;
  lv->th = (int)th;
  lv->across = across;
  lv->down = down;
  return 1;
}

/* The tile size OpenSlide reports for a level (0 when absent). */
static int64_t openslide_tile_prop(const nic_slide *s, int level, const char *what) {
  char key[64];
  snprintf(key, sizeof key, "openslide.level[%d].tile-%s", level, what);
  const char *v = nic_slide_property_value(s, key);
  return v ? strtoll(v, NULL, 10) : 0;
}

/* Checks the first stored tile of a level decodes as this reader expects;
 * otherwise the level is left to OpenSlide. */
static int first_tile_ok(const nic__fast *f, const char *path, int L) {
  const fast_level *lv = &f->lv[L];
  int64_t n = lv->across * lv->down, i = 0;
  while (i < n && lv->size[i] == 0) i++;
  if (i == n) return 1;
  read_ctx c = {0};
  nic_error e = {0};
  int ok = decode_tile(f, path, L, i, &c, NULL, 1, &e) == NIC_OK;
  free(c.raw);
  return ok;
}

/* Matches OpenSlide's levels with the file's TIFF directories: the first
 * tiled directory of the level's size (OpenSlide's levels are tiled
 * directories, in file order for Aperio and by width for generic TIFFs).
 * Returns -1 when out of memory. */
static int map_levels(nic__fast *f, const nic_slide *s, TIFF *tif) {
  int found = 0;
  tdir_t ndirs = TIFFNumberOfDirectories(tif);
  for (int L = 0; L < f->nlevels; L++) {
    for (tdir_t d = 0; d < ndirs; d++) {
      if (!TIFFSetDirectory(tif, d) || !TIFFIsTiled(tif)) continue;
      uint32_t w = 0, h = 0;
      TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w);
      TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h);
      if ((int64_t)w != s->level_w[L] || (int64_t)h != s->level_h[L]) continue;
      fast_level *lv = &f->lv[L];
      int r = describe_dir(tif, lv);
      if (r < 0) return -1;
      lv->ok = r == 1 && lv->tw == openslide_tile_prop(s, L, "width") &&
               lv->th == openslide_tile_prop(s, L, "height") && first_tile_ok(f, s->path, L);
      found += lv->ok;
      break;
    }
  }
  return found;
}

static void fast_free(nic__fast *f) {
  if (!f) return;
  for (int L = 0; L < f->nlevels; L++) {
    free(f->lv[L].offset);
    free(f->lv[L].size);
    free(f->lv[L].tables);
  }
  free(f->lv);
  if (f->slots)
    for (int k = 0; k < f->nslots; k++) free(f->slots[k].rgb);
  free(f->slots);
  if (f->fd >= 0) close(f->fd);
  free(f);
}

void nic__fast_close(nic_slide *s) {
  if (s->fast) pthread_mutex_destroy(&s->fast->mu);
  fast_free(s->fast);
  s->fast = NULL;
}

/* NIC_SLIDE_READER: "auto" (or unset / empty) uses the fast reader where it
 * applies, "openslide" never. */
static nic_status reader_choice(const char *path, int *use_fast, nic_error *err) {
  const char *v = getenv("NIC_SLIDE_READER");
  *use_fast = 1;
  if (!v || !*v || !strcmp(v, "auto")) return NIC_OK;
  if (!strcmp(v, "openslide")) {
    *use_fast = 0;
    return NIC_OK;
  }
  return nic_err(err, NIC_EINVAL, "%s: NIC_SLIDE_READER=%s: expected auto or openslide", path, v);
}

nic_status nic__fast_open(nic_slide *s, nic_error *err) {
  int use = 0;
  nic_status st = reader_choice(s->path, &use, err);
  if (st != NIC_OK || !use || !s->osr || !s->vendor) return st;
  if (strcmp(s->vendor, "generic-tiff") != 0 && strcmp(s->vendor, "aperio") != 0) return NIC_OK;
  nic__fast *f = calloc(1, sizeof *f);
  if (!f) return nic_err(err, NIC_ENOMEM, "%s: out of memory", s->path);
  f->fd = -1;
  f->nlevels = s->nlevels;
  if (!(f->lv = calloc((size_t)s->nlevels, sizeof *f->lv))) {
    fast_free(f);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", s->path);
  }
  /* Anything libtiff cannot parse simply stays with OpenSlide. */
  f->fd = open(s->path, O_RDONLY | O_CLOEXEC);
  TIFFOpenOptions *opts = TIFFOpenOptionsAlloc();
  TIFF *tif = NULL;
  if (opts && f->fd >= 0) {
    TIFFOpenOptionsSetErrorHandlerExtR(opts, tiff_quiet, NULL);
    TIFFOpenOptionsSetWarningHandlerExtR(opts, tiff_quiet, NULL);
    tif = TIFFOpenExt(s->path, "r", opts);
  }
  int found = tif ? map_levels(f, s, tif) : 0;
  if (tif) TIFFClose(tif);
  if (opts) TIFFOpenOptionsFree(opts);
  if (found < 0) {
    fast_free(f);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", s->path);
  }
  if (found == 0) {
    fast_free(f);
    return NIC_OK;
  }
  for (int L = 0; L < f->nlevels; L++) {
    size_t b = (size_t)f->lv[L].tw * f->lv[L].th * 3;
    if (f->lv[L].ok && b > f->max_tile_bytes) f->max_tile_bytes = b;
  }
  size_t n = CACHE_BYTES / f->max_tile_bytes;
  f->nslots = n < CACHE_MIN_SLOTS   ? CACHE_MIN_SLOTS
              : n > CACHE_MAX_SLOTS ? CACHE_MAX_SLOTS
                                    : (int)n;
  if (!(f->slots = calloc((size_t)f->nslots, sizeof *f->slots)) ||
      pthread_mutex_init(&f->mu, NULL) != 0) {
    fast_free(f);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", s->path);
  }
  for (int k = 0; k < f->nslots; k++) f->slots[k].level = -1;
  s->fast = f;
  return NIC_OK;
}
