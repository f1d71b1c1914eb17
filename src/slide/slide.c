/* Opening slides: OpenSlide first, libvips for plain images; levels,
 * properties, spacing and objective power. Pixel reading is in region.c. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <openslide/openslide.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <vips/vips.h>

#include "slide/slide_internal.h"

/* ---- libvips errors ------------------------------------------------------- */

void nic__vips_error(char *buf, size_t size) {
  /* libvips stacks one line per failing operation (a loader failing may
   * also try others); the first line is the cause. */
  char *e = vips_error_buffer_copy();
  size_t n = e ? strcspn(e, "\n") : 0;
  if (e) e[n] = '\0';
  snprintf(buf, size, "%s", n ? e : "unknown libvips error");
  g_free(e);
}

/* ---- small helpers --------------------------------------------------------- */

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* A strictly positive finite number filling the whole string, else 0. */
static double parse_positive(const char *s) {
  if (!s || !*s) return 0;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  while (end && isspace((unsigned char)*end)) end++;
  if (errno || !end || *end || !isfinite(v) || v <= 0) return 0;
  return v;
}

double nic__parse_description_mpp(const char *text) {
  if (!text) return 0;
  for (const char *p = text; (p = strpbrk(p, "mM")) != NULL; p++) {
    if (strncasecmp(p, "mpp", 3) != 0) continue;
    if (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '_' || p[-1] == '-')) continue;
    const char *q = p + 3;
    while (*q == ' ' || *q == '\t') q++;
    if (*q != '=' && *q != ':') continue;
    q++;
    while (*q == ' ' || *q == '\t') q++;
    char *end = NULL;
    double v = strtod(q, &end);
    if (end != q && isfinite(v) && v > 0 && v < 1000) return v;
  }
  return 0;
}

/* ---- properties -------------------------------------------------------- */

static nic_status add_property(nic_slide *s, int *cap, const char *name, const char *value,
                               nic_error *err) {
  if (s->nprops == *cap) {
    int nc = *cap ? *cap * 2 : 32;
    char **nn = realloc(s->prop_names, sizeof(char *) * (size_t)nc);
    if (nn) s->prop_names = nn;
    char **nv = nn ? realloc(s->prop_values, sizeof(char *) * (size_t)nc) : NULL;
    if (nv) s->prop_values = nv;
    if (!nn || !nv)
      return nic_err(err, NIC_ENOMEM, "%s: out of memory reading properties", s->path);
    *cap = nc;
  }
  char *n = xstrdup(name), *v = xstrdup(value ? value : "");
  if (!n || !v) {
    free(n);
    free(v);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory reading properties", s->path);
  }
  s->prop_names[s->nprops] = n;
  s->prop_values[s->nprops] = v;
  s->nprops++;
  return NIC_OK;
}

const char *nic_slide_property_value(const nic_slide *s, const char *name) {
  for (int i = 0; i < s->nprops; i++)
    if (!strcmp(s->prop_names[i], name)) return s->prop_values[i];
  return NULL;
}

int nic_slide_property_count(const nic_slide *s) {
  return s->nprops;
}

const char *nic_slide_property_name(const nic_slide *s, int i) {
  return i >= 0 && i < s->nprops ? s->prop_names[i] : NULL;
}

/* ---- spacing --------------------------------------------------------------- */

/* Microns per unit of a TIFF ResolutionUnit as OpenSlide spells it. */
static double tiff_unit_um(const char *unit) {
  if (!unit) return 0;
  if (!strcmp(unit, "centimeter")) return 1e4;
  if (!strcmp(unit, "inch")) return 25400;
  return 0; /* "none" or unknown: the numbers have no physical meaning */
}

static int plausible_resolution_mpp(double v) {
  return v > 0 && v <= NIC_SLIDE_MAX_RESOLUTION_MPP;
}

/* Precedence: override, OpenSlide's mpp, resolution tags, description. */
static void find_spacing(nic_slide *s, double override) {
  if (override > 0) {
    s->mpp_x = s->mpp_y = override;
    s->spacing_src = NIC_SPACING_OVERRIDE;
    return;
  }
  double x = parse_positive(nic_slide_property_value(s, "openslide.mpp-x"));
  double y = parse_positive(nic_slide_property_value(s, "openslide.mpp-y"));
  if (x > 0 || y > 0) {
    s->mpp_x = x > 0 ? x : y;
    s->mpp_y = y > 0 ? y : x;
    s->spacing_src = NIC_SPACING_OPENSLIDE;
    return;
  }
  if (s->osr) {
    double um = tiff_unit_um(nic_slide_property_value(s, "tiff.ResolutionUnit"));
    double rx = parse_positive(nic_slide_property_value(s, "tiff.XResolution"));
    double ry = parse_positive(nic_slide_property_value(s, "tiff.YResolution"));
    if (um > 0 && rx > 0) {
      x = um / rx;
      y = ry > 0 ? um / ry : x;
    }
  } else if (s->rgba) {
    /* libvips converts every format's density to pixels per millimetre and
     * defaults to 1 px/mm when the file has none, which the plausibility
     * check rejects like any 72/96/300 dpi default. */
    double rx = vips_image_get_xres(s->rgba), ry = vips_image_get_yres(s->rgba);
    if (rx > 0) x = 1000.0 / rx;
    if (ry > 0) y = 1000.0 / ry;
  }
  if (plausible_resolution_mpp(x) && plausible_resolution_mpp(y)) {
    s->mpp_x = x;
    s->mpp_y = y;
    s->spacing_src = NIC_SPACING_RESOLUTION;
    return;
  }
  const char *desc = nic_slide_property_value(s, "tiff.ImageDescription");
  if (!desc) desc = nic_slide_property_value(s, "image-description");
  double d = nic__parse_description_mpp(desc);
  if (d > 0) {
    s->mpp_x = s->mpp_y = d;
    s->spacing_src = NIC_SPACING_DESCRIPTION;
  }
}

nic_status nic_slide_spacing(const nic_slide *s, double *mpp_x, double *mpp_y, nic_error *err) {
  if (s->spacing_src == NIC_SPACING_NONE)
    return nic_err(err, NIC_EINVAL,
                   "%s: the pixel spacing (um/px) is unknown: the file has no openslide.mpp, "
                   "resolution tags or mpp= description; give it with --mpp-override",
                   s->path);
  if (mpp_x) *mpp_x = s->mpp_x;
  if (mpp_y) *mpp_y = s->mpp_y;
  return NIC_OK;
}

nic_spacing_source nic_slide_spacing_source(const nic_slide *s) {
  return s->spacing_src;
}

const char *nic_spacing_source_str(nic_spacing_source src) {
  switch (src) {
  case NIC_SPACING_NONE:
    return "unknown";
  case NIC_SPACING_OVERRIDE:
    return "override";
  case NIC_SPACING_OPENSLIDE:
    return "openslide.mpp-x/y";
  case NIC_SPACING_RESOLUTION:
    return "resolution tags";
  case NIC_SPACING_DESCRIPTION:
    return "image description";
  }
  return "unknown";
}

nic_status nic__grid_scale(const nic_slide *s, double mpp, double *sx, double *sy, nic_error *err) {
  double mx = 0, my = 0;
  nic_status st = nic_slide_spacing(s, &mx, &my, err);
  if (st != NIC_OK) return st;
  if (!(mpp > 0) || !isfinite(mpp))
    return nic_err(err, NIC_EINVAL, "%s: spacing %g um/px is not positive", s->path, mpp);
  *sx = mpp / mx;
  *sy = mpp / my;
  return NIC_OK;
}

/* ---- levels ---------------------------------------------------------------- */

static nic_status alloc_levels(nic_slide *s, int n, nic_error *err) {
  s->level_w = calloc((size_t)n, sizeof(int64_t));
  s->level_h = calloc((size_t)n, sizeof(int64_t));
  s->level_ds = calloc((size_t)n, sizeof(double));
  s->level_ok = calloc((size_t)n, 1);
  if (!s->level_w || !s->level_h || !s->level_ds || !s->level_ok)
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", s->path);
  s->nlevels = n;
  return NIC_OK;
}

int nic_slide_level_count(const nic_slide *s) {
  return s->nlevels;
}

void nic_slide_level_dims(const nic_slide *s, int level, int64_t *w, int64_t *h) {
  int ok = level >= 0 && level < s->nlevels;
  if (w) *w = ok ? s->level_w[level] : 0;
  if (h) *h = ok ? s->level_h[level] : 0;
}

double nic_slide_level_downsample(const nic_slide *s, int level) {
  return level >= 0 && level < s->nlevels ? s->level_ds[level] : 0;
}

const char *nic_slide_path(const nic_slide *s) {
  return s->path;
}
const char *nic_slide_backend(const nic_slide *s) {
  return s->osr ? "openslide" : "libvips";
}
const char *nic_slide_vendor(const nic_slide *s) {
  return s->vendor;
}
double nic_slide_objective_power(const nic_slide *s) {
  return s->objective;
}

/* ---- the OpenSlide backend ------------------------------------------------ */

/* Debian 12's libtiff (4.5.0) returns garbage from TIFFReadRGBATile when an
 * image is shorter than one tile, and OpenSlide 3.4 decodes every non-JPEG
 * TIFF tile that way: such a level comes out shifted and partly transparent.
 * The level's compression is not visible through OpenSlide, so any level
 * shorter than its tiles is avoided (the next finer one is at most a few
 * tiles, so this costs little), and a generic TIFF whose level 0 is that
 * short is read through libvips instead. */
static int short_tile_level(openslide_t *osr, int level, int64_t height) {
  char key[64];
  snprintf(key, sizeof key, "openslide.level[%d].tile-height", level);
  const char *v = openslide_get_property_value(osr, key);
  return v && height < strtoll(v, NULL, 10);
}

/* Tries OpenSlide. Returns 1 with s->osr set on success, 0 when OpenSlide
 * does not take the file; `why` then holds OpenSlide's reason if it
 * recognised the format but could not open it. */
static int try_openslide(nic_slide *s, char *why, size_t whysize) {
  why[0] = '\0';
  const char *vendor = openslide_detect_vendor(s->path);
  if (!vendor) return 0;
  openslide_t *osr = openslide_open(s->path);
  const char *e = osr ? openslide_get_error(osr) : "openslide_open failed";
  if (e) {
    snprintf(why, whysize, "OpenSlide (%s): %s", vendor, e);
    if (osr) openslide_close(osr);
    return 0;
  }
  if (!strcmp(vendor, "generic-tiff") && openslide_get_level_count(osr) > 0) {
    int64_t w0 = 0, h0 = 0;
    openslide_get_level_dimensions(osr, 0, &w0, &h0);
    if (short_tile_level(osr, 0, h0)) { /* see above: libvips reads it right */
      openslide_close(osr);
      return 0;
    }
  }
  s->osr = osr;
  s->vendor = xstrdup(vendor);
  return 1;
}

static nic_status init_openslide(nic_slide *s, nic_error *err) {
  if (!s->vendor) return nic_err(err, NIC_ENOMEM, "%s: out of memory", s->path);
  int32_t n = openslide_get_level_count(s->osr);
  if (n < 1) return nic_err(err, NIC_EFORMAT, "%s: OpenSlide reports no levels", s->path);
  nic_status st = alloc_levels(s, n, err);
  if (st != NIC_OK) return st;
  for (int i = 0; i < n; i++) {
    openslide_get_level_dimensions(s->osr, i, &s->level_w[i], &s->level_h[i]);
    s->level_ds[i] = openslide_get_level_downsample(s->osr, i);
    if (s->level_w[i] <= 0 || s->level_h[i] <= 0 || !(s->level_ds[i] >= 1))
      return nic_err(err, NIC_EFORMAT, "%s: level %d has an invalid size or downsample", s->path,
                     i);
    s->level_ok[i] = i == 0 || !short_tile_level(s->osr, i, s->level_h[i]);
  }
  int cap = 0;
  for (const char *const *p = openslide_get_property_names(s->osr); p && *p; p++) {
    st = add_property(s, &cap, *p, openslide_get_property_value(s->osr, *p), err);
    if (st != NIC_OK) return st;
  }
  s->objective = parse_positive(nic_slide_property_value(s, "openslide.objective-power"));
  return NIC_OK;
}

/* ---- the libvips backend ---------------------------------------------------- */

/* in -> 4-band uchar RGBA (straight alpha; 255 added when absent). Takes
 * over the reference to `in`. */
static VipsImage *to_rgba8(VipsImage *in) {
  VipsImage *t = NULL;
  int bands = in->Bands;
  int has_alpha = bands == 2 || bands == 4;
  /* 16-bit and float images first become 8 bits per channel. */
  if (in->BandFmt == VIPS_FORMAT_USHORT) {
    if (vips_rshift_const1(in, &t, 8, NULL)) goto fail;
    g_object_unref(in);
    in = t;
  }
  if (in->BandFmt != VIPS_FORMAT_UCHAR) {
    if (vips_cast_uchar(in, &t, NULL)) goto fail;
    g_object_unref(in);
    in = t;
  }
  if (in->Type == VIPS_INTERPRETATION_CMYK && bands >= 4) {
    if (vips_colourspace(in, &t, VIPS_INTERPRETATION_sRGB, NULL)) goto fail;
    g_object_unref(in);
    in = t;
    bands = in->Bands;
    has_alpha = bands == 4;
  }
  if (bands == 1 || bands == 2) { /* grey (+ alpha): replicate */
    VipsImage *g = NULL, *parts[4];
    if (vips_extract_band(in, &g, 0, NULL)) goto fail;
    parts[0] = parts[1] = parts[2] = g;
    int np = 3;
    VipsImage *a = NULL;
    if (has_alpha) {
      if (vips_extract_band(in, &a, 1, NULL)) {
        g_object_unref(g);
        goto fail;
      }
      parts[np++] = a;
    }
    int rc = vips_bandjoin(parts, &t, np, NULL);
    g_object_unref(g);
    if (a) g_object_unref(a);
    if (rc) goto fail;
    g_object_unref(in);
    in = t;
  } else if (bands > 4 || (bands == 4 && !has_alpha)) {
    if (vips_extract_band(in, &t, 0, "n", 4, NULL)) goto fail;
    g_object_unref(in);
    in = t;
  }
  if (in->Bands == 3) {
    if (vips_bandjoin_const1(in, &t, 255, NULL)) goto fail;
    g_object_unref(in);
    in = t;
  }
  return in;
fail:
  g_object_unref(in);
  return NULL;
}

static nic_status open_vips(nic_slide *s, const char *openslide_why, nic_error *err) {
  nic_status st = nic__vips_init(err);
  if (st != NIC_OK) return st;
  const char *loader = vips_foreign_find_load(s->path);
  VipsImage *img = NULL;
  if (loader)
    img = vips_image_new_from_file(s->path, "access", VIPS_ACCESS_RANDOM, "fail_on",
                                   VIPS_FAIL_ON_TRUNCATED, NULL);
  if (!img) {
    char msg[256];
    nic__vips_error(msg, sizeof msg);
    if (openslide_why[0])
      return nic_err(err, NIC_EFORMAT, "%s: cannot read the slide: %s; libvips: %s", s->path,
                     openslide_why, loader ? msg : "not a known image format");
    return nic_err(err, NIC_EFORMAT,
                   "%s: not a slide or image nic can read (OpenSlide does not recognise it; "
                   "libvips: %s)",
                   s->path, loader ? msg : "not a known image format");
  }
  /* Header fields become the properties; blobs (ICC, EXIF) as summaries. */
  int cap = 0;
  gchar **fields = vips_image_get_fields(img);
  for (int i = 0; fields && fields[i] && st == NIC_OK; i++) {
    /* Strings are copied as they are; other types as libvips prints them
     * (which would put strings in quotes). */
    GValue gv = G_VALUE_INIT;
    char *v = NULL;
    if (vips_image_get_typeof(img, fields[i]) == G_TYPE_STRING &&
        vips_image_get(img, fields[i], &gv) == 0) {
      st = add_property(s, &cap, fields[i], g_value_get_string(&gv), err);
      g_value_unset(&gv);
    } else if (vips_image_get_as_string(img, fields[i], &v) == 0) {
      st = add_property(s, &cap, fields[i], v, err);
      g_free(v);
    }
  }
  g_strfreev(fields);
  int64_t w = img->Xsize, h = img->Ysize;
  /* The loader's nickname ("pngload") rather than its class name. */
  const char *nick = nic_slide_property_value(s, "vips-loader");
  s->vendor = xstrdup(nick ? nick : loader);
  s->rgba = to_rgba8(img); /* takes img; spacing reads its resolution */
  if (st != NIC_OK) return st;
  if (!s->rgba) {
    char msg[256];
    nic__vips_error(msg, sizeof msg);
    return nic_err(err, NIC_EFORMAT, "%s: cannot convert the image to RGB: %s", s->path, msg);
  }
  if (!s->vendor) return nic_err(err, NIC_ENOMEM, "%s: out of memory", s->path);
  st = alloc_levels(s, 1, err);
  if (st != NIC_OK) return st;
  s->level_w[0] = w;
  s->level_h[0] = h;
  s->level_ds[0] = 1;
  s->level_ok[0] = 1;
  return NIC_OK;
}

/* ---- open / close ------------------------------------------------------- */

nic_status nic_slide_open(nic_slide **out, const char *path, const nic_slide_opts *opts,
                          nic_error *err) {
  *out = NULL;
  if (!path || !*path) return nic_err(err, NIC_EINVAL, "no slide path given");
  double override = opts ? opts->mpp_override : 0;
  if (opts && (override < 0 || !isfinite(override)))
    return nic_err(err, NIC_EINVAL, "%s: mpp override %g is not a positive number", path, override);
  struct stat st_;
  if (stat(path, &st_) != 0) return nic_err(err, NIC_EIO, "%s: %s", path, strerror(errno));
  if (S_ISDIR(st_.st_mode))
    return nic_err(err, NIC_EINVAL, "%s: is a directory, not a slide (for MIRAX give the .mrxs)",
                   path);
  nic_slide *s = calloc(1, sizeof *s);
  if (!s || !(s->path = xstrdup(path))) {
    free(s);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
  }
  char why[NIC_ERRMSG_MAX / 2];
  nic_status st =
      try_openslide(s, why, sizeof why) ? init_openslide(s, err) : open_vips(s, why, err);
  if (st != NIC_OK) {
    nic_slide_close(s);
    return st;
  }
  if (s->osr) st = nic__fast_open(s, err);
  if (st != NIC_OK) {
    nic_slide_close(s);
    return st;
  }
  find_spacing(s, override);
  *out = s;
  return NIC_OK;
}

void nic_slide_close(nic_slide *s) {
  if (!s) return;
  nic__fast_close(s);
  if (s->osr) openslide_close(s->osr);
  if (s->rgba) g_object_unref(s->rgba);
  for (int i = 0; i < s->nprops; i++) {
    free(s->prop_names[i]);
    free(s->prop_values[i]);
  }
  free(s->prop_names);
  free(s->prop_values);
  free(s->level_w);
  free(s->level_h);
  free(s->level_ds);
  free(s->level_ok);
  free(s->vendor);
  free(s->path);
  free(s);
}
