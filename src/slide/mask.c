/* Tissue masks: geometry queries (tissue fraction of a rectangle), the
 * output files (PNG, GeoJSON, thumbnail overlay) and user-supplied masks
 * (an image of any size, or GeoJSON polygons). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "io/json_util.h"
#include "slide/slide_internal.h"

/* GeoJSON files larger than this are refused rather than parsed. */
#define MAX_GEOJSON_BYTES ((size_t)1 << 30)

nic_status nic_mask_alloc(nic_mask *m, int w, int h, double scale_x, double scale_y, double mpp,
                          nic_error *err) {
  memset(m, 0, sizeof *m);
  if (w <= 0 || h <= 0 || (int64_t)w * h > INT32_MAX)
    return nic_err(err, NIC_EINVAL, "mask size %d x %d is out of range", w, h);
  if (!(scale_x > 0) || !(scale_y > 0))
    return nic_err(err, NIC_EINVAL, "mask scale must be positive");
  m->data = calloc((size_t)w * h, 1);
  if (!m->data) return nic_err(err, NIC_ENOMEM, "out of memory for a %d x %d mask", w, h);
  m->width = w;
  m->height = h;
  m->scale_x = scale_x;
  m->scale_y = scale_y;
  m->mpp = mpp;
  return NIC_OK;
}

void nic_mask_free(nic_mask *m) {
  if (!m) return;
  free(m->data);
  memset(m, 0, sizeof *m);
}

/* ---- queries ------------------------------------------------------------- */

/* Overlap of [a, b) with [i, i+1). */
static double overlap(double a, double b, int i) {
  double lo = a > i ? a : i, hi = b < i + 1 ? b : i + 1;
  return hi > lo ? hi - lo : 0;
}

double nic_mask_tissue_fraction(const nic_mask *m, double x0, double y0, double w, double h) {
  if (!m->data || !(w > 0) || !(h > 0)) return 0;
  double u0 = x0 / m->scale_x, u1 = (x0 + w) / m->scale_x;
  double v0 = y0 / m->scale_y, v1 = (y0 + h) / m->scale_y;
  int i0 = (int)fmax(0, floor(u0)), i1 = (int)fmin(m->width, ceil(u1));
  int j0 = (int)fmax(0, floor(v0)), j1 = (int)fmin(m->height, ceil(v1));
  double sum = 0;
  for (int j = j0; j < j1; j++) {
    double wy = overlap(v0, v1, j), row = 0;
    const uint8_t *r = m->data + (size_t)j * m->width;
    for (int i = i0; i < i1; i++)
      if (r[i]) row += overlap(u0, u1, i);
    sum += wy * row;
  }
  return sum / ((u1 - u0) * (v1 - v0));
}

double nic_mask_tissue_area(const nic_mask *m) {
  int64_t n = 0;
  for (size_t i = 0; i < (size_t)m->width * m->height; i++) n += m->data[i] != 0;
  return (double)n * m->scale_x * m->scale_y;
}

int nic_mask_components(const nic_mask *m) {
  int32_t *lab = malloc(sizeof(int32_t) * ((size_t)m->width * m->height + 1));
  int n = lab ? nic__label8(m->data, m->width, m->height, lab, NULL) : -1;
  free(lab);
  return n;
}

/* ---- writers ----------------------------------------------------------------- */

nic_status nic_mask_write_png(const nic_mask *m, const char *path, nic_error *err) {
  size_t n = (size_t)m->width * m->height;
  uint8_t *pix = malloc(n);
  if (!pix) return nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
  for (size_t i = 0; i < n; i++) pix[i] = m->data[i] ? 255 : 0;
  nic_status st = nic__write_png(path, pix, m->width, m->height, 1, m->mpp, err);
  free(pix);
  return st;
}

/* A coordinate with at most 3 decimals and no trailing zeros. */
static void put_coord(nic_strbuf *b, double v) {
  char s[48];
  snprintf(s, sizeof s, "%.3f", v);
  char *e = s + strlen(s) - 1;
  while (*e == '0') *e-- = '\0';
  if (*e == '.') *e = '\0';
  if (!strcmp(s, "-0")) strcpy(s, "0");
  nic__sb_printf(b, "%s", s);
}

static void put_ring(nic_strbuf *b, const nic_ring *r, double sx, double sy) {
  nic__sb_printf(b, "[");
  for (int i = 0; i <= r->n; i++) { /* GeoJSON rings repeat the first vertex */
    int k = i % r->n;
    nic__sb_printf(b, i ? ",[" : "[");
    put_coord(b, r->xy[2 * k] * sx);
    nic__sb_printf(b, ",");
    put_coord(b, r->xy[2 * k + 1] * sy);
    nic__sb_printf(b, "]");
  }
  nic__sb_printf(b, "]");
}

nic_status nic_mask_write_geojson(const nic_mask *m, const char *path, nic_error *err) {
  nic_polygon *ps = NULL;
  int n = 0;
  nic_status st = nic__trace_polygons(m->data, m->width, m->height, &ps, &n, err);
  if (st != NIC_OK) {
    nic_err_prefix(err, "%s: ", path);
    return st;
  }
  nic_strbuf b = {0};
  nic__sb_printf(&b, "{\"type\":\"FeatureCollection\",\"features\":[");
  for (int i = 0; i < n; i++) {
    nic__sb_printf(&b,
                   "%s\n{\"type\":\"Feature\",\"geometry\":{\"type\":\"Polygon\","
                   "\"coordinates\":[",
                   i ? "," : "");
    put_ring(&b, &ps[i].outer, m->scale_x, m->scale_y);
    for (int k = 0; k < ps[i].nholes; k++) {
      nic__sb_printf(&b, ",");
      put_ring(&b, &ps[i].holes[k], m->scale_x, m->scale_y);
    }
    nic__sb_printf(&b, "]},\"properties\":{\"objectType\":\"annotation\","
                       "\"classification\":{\"name\":\"Tissue\"}}}");
  }
  nic__sb_printf(&b, "\n]}\n");
  nic__free_polygons(ps, n);
  if (b.failed)
    st = nic_err(err, NIC_ENOMEM, "%s: out of memory writing GeoJSON", path);
  else
    st = nic__write_file_atomic(path, b.s, b.len, err);
  nic__sb_free(&b);
  return st;
}

nic_status nic_mask_write_overlay_png(const nic_mask *m, const uint8_t *rgb, int w, int h,
                                      double downsample, const char *path, nic_error *err) {
  /* The mask as seen on the image's grid (nearest mask pixel to each image
   * pixel centre), then its outline: tissue pixels with a 4-neighbour that
   * is not tissue. */
  uint8_t *mt = malloc((size_t)w * h), *out = malloc((size_t)w * h * 3);
  if (!mt || !out) {
    free(mt);
    free(out);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
  }
  for (int y = 0; y < h; y++) {
    int j = (int)floor((y + 0.5) * downsample / m->scale_y);
    for (int x = 0; x < w; x++) {
      int i = (int)floor((x + 0.5) * downsample / m->scale_x);
      mt[(size_t)y * w + x] =
          i >= 0 && j >= 0 && i < m->width && j < m->height && m->data[(size_t)j * m->width + i];
    }
  }
  memcpy(out, rgb, (size_t)w * h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      size_t p = (size_t)y * w + x;
      if (!mt[p]) continue;
      int edge = (x > 0 && !mt[p - 1]) || (x < w - 1 && !mt[p + 1]) || (y > 0 && !mt[p - w]) ||
                 (y < h - 1 && !mt[p + w]);
      if (!edge) continue;
      out[3 * p] = 0; /* green: absent from H&E, visible on tissue and glass */
      out[3 * p + 1] = 220;
      out[3 * p + 2] = 0;
    }
  double mpp = m->mpp > 0 ? m->mpp * downsample / m->scale_x : 0;
  nic_status st = nic__write_png(path, out, w, h, 3, mpp, err);
  free(mt);
  free(out);
  return st;
}

/* ---- user masks: images ------------------------------------------------------ */

static nic_status load_mask_image(const nic_slide *s, const char *path, nic_mask *m,
                                  nic_error *err) {
  nic_status st = nic__vips_init(err);
  if (st != NIC_OK) return st;
  VipsImage *img = vips_image_new_from_file(path, "access", VIPS_ACCESS_SEQUENTIAL, NULL);
  VipsImage *grey = NULL, *band = NULL, *flt = NULL;
  float *pix = NULL;
  size_t size = 0;
  if (!img) goto vips_fail;
  /* Colour masks become grey first (alpha, if any, is dropped below). */
  if (img->Bands >= 3) {
    if (vips_colourspace(img, &grey, VIPS_INTERPRETATION_B_W, NULL)) goto vips_fail;
  } else {
    grey = img;
    g_object_ref(grey);
  }
  if (vips_extract_band(grey, &band, 0, NULL) || vips_cast_float(band, &flt, NULL)) goto vips_fail;
  pix = vips_image_write_to_memory(flt, &size);
  if (!pix) goto vips_fail;
  int w = flt->Xsize, h = flt->Ysize;
  double max = 0;
  for (size_t i = 0; i < (size_t)w * h; i++) max = pix[i] > max ? pix[i] : max;
  /* The mask is stretched over the whole slide, whatever its size. */
  double sx = (double)s->level_w[0] / w, sy = (double)s->level_h[0] / h;
  st = nic_mask_alloc(m, w, h, sx, sy, s->mpp_x > 0 ? sx * s->mpp_x : 0, err);
  if (st == NIC_OK)
    for (size_t i = 0; i < (size_t)w * h; i++) m->data[i] = max > 0 && pix[i] > max / 2;
  goto done;
vips_fail : {
  char msg[256];
  nic__vips_error(msg, sizeof msg);
  st = nic_err(err, NIC_EFORMAT, "%s: cannot read the mask image: %s", path, msg);
}
done:
  g_free(pix);
  if (flt) g_object_unref(flt);
  if (band) g_object_unref(band);
  if (grey) g_object_unref(grey);
  if (img) g_object_unref(img);
  return st;
}

/* ---- user masks: GeoJSON -------------------------------------------------------- */

typedef struct geo_ctx {
  const char *path;
  nic_mask *m;
  int polygons;
  nic_error *err;
} geo_ctx;

/* One ring: an array of >= 3 [x, y] positions, converted to mask pixels. */
static nic_status ring_coords(geo_ctx *g, json_object *ring, double **out, int *n) {
  size_t len = json_object_is_type(ring, json_type_array) ? json_object_array_length(ring) : 0;
  if (len < 3 || len > INT32_MAX / 2)
    return nic_err(g->err, NIC_EFORMAT, "%s: polygon %d: a ring needs at least 3 positions",
                   g->path, g->polygons + 1);
  double *xy = malloc(sizeof(double) * 2 * len);
  if (!xy) return nic_err(g->err, NIC_ENOMEM, "%s: out of memory", g->path);
  for (size_t i = 0; i < len; i++) {
    json_object *pt = json_object_array_get_idx(ring, i);
    json_object *jx =
        json_object_is_type(pt, json_type_array) ? json_object_array_get_idx(pt, 0) : NULL;
    json_object *jy = jx ? json_object_array_get_idx(pt, 1) : NULL;
    int numeric =
        jx && jy &&
        (json_object_is_type(jx, json_type_int) || json_object_is_type(jx, json_type_double)) &&
        (json_object_is_type(jy, json_type_int) || json_object_is_type(jy, json_type_double));
    double x = numeric ? json_object_get_double(jx) : NAN;
    double y = numeric ? json_object_get_double(jy) : NAN;
    if (!isfinite(x) || !isfinite(y)) {
      free(xy);
      return nic_err(g->err, NIC_EFORMAT, "%s: polygon %d: position %zu is not [x, y] numbers",
                     g->path, g->polygons + 1, i);
    }
    xy[2 * i] = x / g->m->scale_x;
    xy[2 * i + 1] = y / g->m->scale_y;
  }
  *out = xy;
  *n = (int)len;
  return NIC_OK;
}

/* A Polygon's coordinates: shell then holes, filled even-odd. */
static nic_status fill_geo_polygon(geo_ctx *g, json_object *coords) {
  size_t nr = json_object_is_type(coords, json_type_array) ? json_object_array_length(coords) : 0;
  if (nr == 0)
    return nic_err(g->err, NIC_EFORMAT, "%s: polygon %d has no rings", g->path, g->polygons + 1);
  double **rings = calloc(nr, sizeof(double *));
  int *counts = calloc(nr, sizeof(int));
  nic_status st = rings && counts ? NIC_OK : nic_err(g->err, NIC_ENOMEM, "out of memory");
  for (size_t k = 0; k < nr && st == NIC_OK; k++)
    st = ring_coords(g, json_object_array_get_idx(coords, k), &rings[k], &counts[k]);
  if (st == NIC_OK)
    st = nic__fill_polygon(g->m->data, g->m->width, g->m->height, (const double *const *)rings,
                           counts, (int)nr, g->err);
  for (size_t k = 0; rings && k < nr; k++) free(rings[k]);
  free(rings);
  free(counts);
  g->polygons++;
  return st;
}

/* Walks any GeoJSON object; areal geometries are filled, points and lines
 * (and unknown members) ignored. */
static nic_status walk_geojson(geo_ctx *g, json_object *o, int depth) {
  if (!json_object_is_type(o, json_type_object) || depth > 16) return NIC_OK;
  const char *type = nic_json_get_str(o, "type");
  if (!type) return NIC_OK;
  json_object *v = NULL;
  nic_status st = NIC_OK;
  if (!strcmp(type, "FeatureCollection") && json_object_object_get_ex(o, "features", &v) &&
      json_object_is_type(v, json_type_array)) {
    for (size_t i = 0; i < json_object_array_length(v) && st == NIC_OK; i++)
      st = walk_geojson(g, json_object_array_get_idx(v, i), depth + 1);
  } else if (!strcmp(type, "Feature") && json_object_object_get_ex(o, "geometry", &v)) {
    st = walk_geojson(g, v, depth + 1);
  } else if (!strcmp(type, "GeometryCollection") &&
             json_object_object_get_ex(o, "geometries", &v) &&
             json_object_is_type(v, json_type_array)) {
    for (size_t i = 0; i < json_object_array_length(v) && st == NIC_OK; i++)
      st = walk_geojson(g, json_object_array_get_idx(v, i), depth + 1);
  } else if (!strcmp(type, "Polygon") && json_object_object_get_ex(o, "coordinates", &v)) {
    st = fill_geo_polygon(g, v);
  } else if (!strcmp(type, "MultiPolygon") && json_object_object_get_ex(o, "coordinates", &v) &&
             json_object_is_type(v, json_type_array)) {
    for (size_t i = 0; i < json_object_array_length(v) && st == NIC_OK; i++)
      st = fill_geo_polygon(g, json_object_array_get_idx(v, i));
  }
  return st;
}

static nic_status read_text_file(const char *path, char **text, size_t *len, nic_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return nic_err(err, NIC_EIO, "%s: %s", path, strerror(errno));
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n == cap) {
      cap = cap ? cap * 2 : 65536;
      char *nb = cap <= MAX_GEOJSON_BYTES ? realloc(buf, cap) : NULL;
      if (!nb) {
        free(buf);
        fclose(f);
        return nic_err(err, cap > MAX_GEOJSON_BYTES ? NIC_EFORMAT : NIC_ENOMEM,
                       "%s: too large to read", path);
      }
      buf = nb;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return nic_err(err, NIC_EIO, "%s: read error", path);
  }
  *text = buf;
  *len = n;
  return NIC_OK;
}

static nic_status load_mask_geojson(const nic_slide *s, const char *path, double grid_mpp,
                                    nic_mask *m, nic_error *err) {
  double sx, sy;
  nic_status st = nic__grid_scale(s, grid_mpp, &sx, &sy, err);
  if (st != NIC_OK) return st;
  char *text = NULL;
  size_t len = 0;
  st = read_text_file(path, &text, &len, err);
  if (st != NIC_OK) return st;
  char msg[256];
  json_object *root = nic_json_parse(text, len, msg, sizeof msg);
  free(text);
  if (!root) return nic_err(err, NIC_EFORMAT, "%s: not valid GeoJSON: %s", path, msg);
  /* An empty FeatureCollection is a valid "no tissue"; JSON that is not
   * GeoJSON at all is not. */
  const char *type =
      json_object_is_type(root, json_type_object) ? nic_json_get_str(root, "type") : NULL;
  static const char *const known[] = {"FeatureCollection", "Feature", "GeometryCollection",
                                      "Polygon", "MultiPolygon"};
  int geojson = 0;
  for (size_t i = 0; type && i < sizeof known / sizeof known[0]; i++)
    geojson |= !strcmp(type, known[i]);
  if (!geojson) {
    json_object_put(root);
    return nic_err(err, NIC_EFORMAT,
                   "%s: not a GeoJSON FeatureCollection, Feature or (Multi)Polygon", path);
  }
  int w = (int)ceil(s->level_w[0] / sx - 1e-9), h = (int)ceil(s->level_h[0] / sy - 1e-9);
  st = nic_mask_alloc(m, w, h, sx, sy, grid_mpp, err);
  geo_ctx g = {path, m, 0, err};
  if (st == NIC_OK) st = walk_geojson(&g, root, 0);
  json_object_put(root);

  if (st != NIC_OK) nic_mask_free(m);
  return st;
}

static int has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcasecmp(s + n - k, suffix);
}

nic_status nic_mask_load(const nic_slide *s, const char *path, double grid_mpp, nic_mask *m,
                         nic_error *err) {
  memset(m, 0, sizeof *m);
  FILE *f = fopen(path, "rb");
  if (!f) return nic_err(err, NIC_EIO, "%s: %s", path, strerror(errno));
  fclose(f);
  if (has_suffix(path, ".geojson") || has_suffix(path, ".json"))
    return load_mask_geojson(s, path, grid_mpp, m, err);
  return load_mask_image(s, path, m, err);
}
