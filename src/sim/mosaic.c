/* The mosaic cohort: pseudo-slides tiled from a labelled patch folder.
 *
 * The run has three steps. The pool (mosaic_pool.c) decodes every patch
 * once. A first pass over the slides computes their layouts only, to know
 * how many patches of each class the cohort needs, and from that whether
 * patches can be used at most once in the whole cohort. A second pass
 * recomputes each layout (it is cheap and a function of the seed), draws
 * its patches, and writes the TIFF and the rows of the CSV files. One
 * slide's pixels are in memory at a time, as a strip of its tissue cells;
 * the TIFF writer composes tiles from them and the glass on the fly. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nic/data.h"
#include "sim/mosaic_internal.h"
#include "sim/sim_internal.h"

nic_mosaic_opts nic_mosaic_default_opts(void) {
  nic_mosaic_opts o;
  memset(&o, 0, sizeof o);
  o.negative_class = "0";
  o.positive_class = "1";
  o.slides = 20;
  o.positive_fraction = 0.5;
  o.tissue_patches = 200;
  o.tissue_spread = 0.2;
  o.shape = NIC_MOSAIC_MIXED;
  o.clusters = 1;
  o.cluster_min = 4;
  o.cluster_max = 8;
  o.margin = 2;
  o.patch_mpp = NIC_PCAM_MPP; /* the one PatchCamelyon spacing (data.h) */
  o.reuse = NIC_MOSAIC_REUSE_AUTO;
  o.jpeg_quality = 85;
  o.cache_mb = 1024;
  o.seed = 1;
  return o;
}

/* The fewest tissue cells a slide can get. */
static int min_tissue(const nic_mosaic_opts *o) {
  long v = lround(o->tissue_patches * (1 - o->tissue_spread));
  return v < 1 ? 1 : (int)v;
}

static int bad_class_name(const char *s) {
  return !s || !*s || strchr(s, '/') || !strcmp(s, ".") || !strcmp(s, "..");
}

nic_status nic_mosaic_check(const nic_mosaic_opts *o, nic_error *err) {
  if (!o->patches || !*o->patches) return nic_err(err, NIC_EINVAL, "no patch folder given");
  if (o->split && bad_class_name(o->split))
    return nic_err(err, NIC_EINVAL, "split '%s' must be a folder name", o->split);
  if (bad_class_name(o->negative_class) || bad_class_name(o->positive_class))
    return nic_err(err, NIC_EINVAL, "class names must be folder names");
  if (!strcmp(o->negative_class, o->positive_class))
    return nic_err(err, NIC_EINVAL, "the negative and positive classes are both '%s'",
                   o->negative_class);
  if (o->slides < 1 || o->slides > 1000000)
    return nic_err(err, NIC_EINVAL, "slides %d not in 1..1000000", o->slides);
  if (!(o->positive_fraction >= 0 && o->positive_fraction <= 1))
    return nic_err(err, NIC_EINVAL, "positive fraction %g not in [0, 1]", o->positive_fraction);
  if (o->tissue_patches < 1 || o->tissue_patches > 100000)
    return nic_err(err, NIC_EINVAL, "tissue patches %d not in 1..100000", o->tissue_patches);
  if (!(o->tissue_spread >= 0 && o->tissue_spread <= 0.9))
    return nic_err(err, NIC_EINVAL, "tissue spread %g not in [0, 0.9]", o->tissue_spread);
  if (o->shape != NIC_MOSAIC_MIXED && o->shape != NIC_MOSAIC_BLOB && o->shape != NIC_MOSAIC_RECT)
    return nic_err(err, NIC_EINVAL, "unknown tissue shape %d", (int)o->shape);
  if (o->clusters < 1) return nic_err(err, NIC_EINVAL, "clusters %d: need at least 1", o->clusters);
  if (o->cluster_min < 1 || o->cluster_max < o->cluster_min)
    return nic_err(err, NIC_EINVAL, "cluster size range %d..%d: need 1 <= min <= max",
                   o->cluster_min, o->cluster_max);
  /* Separate clusters need room: at most half the smallest tissue. */
  if ((double)o->clusters * o->cluster_max > min_tissue(o) / 2)
    return nic_err(err, NIC_EINVAL,
                   "%d clusters of up to %d patches do not fit in %d tissue patches (the "
                   "smallest slide's; tumour may take at most half of them)",
                   o->clusters, o->cluster_max, min_tissue(o));
  if (o->margin < 0 || o->margin > 64)
    return nic_err(err, NIC_EINVAL, "margin %d not in 0..64 cells", o->margin);
  if (!(o->patch_mpp > 0 && o->patch_mpp < 1000))
    return nic_err(err, NIC_EINVAL, "patch mpp %g must be positive", o->patch_mpp);
  if (!(o->cell_um >= 0 && o->cell_um < 1e5) || (o->cell_um > 0 && o->cell_um < o->patch_mpp))
    return nic_err(err, NIC_EINVAL,
                   "cell size %g um must be 0 (whole patches) or at least one "
                   "patch pixel (%g um)",
                   o->cell_um, o->patch_mpp);
  if (o->reuse != NIC_MOSAIC_REUSE_AUTO && o->reuse != NIC_MOSAIC_REUSE_NEVER &&
      o->reuse != NIC_MOSAIC_REUSE_ALWAYS)
    return nic_err(err, NIC_EINVAL, "unknown reuse mode %d", (int)o->reuse);
  if (o->jpeg_quality < 1 || o->jpeg_quality > 100)
    return nic_err(err, NIC_EINVAL, "JPEG quality %d not in 1..100", o->jpeg_quality);
  if (o->cache_mb < 0) return nic_err(err, NIC_EINVAL, "cache size %d MB < 0", o->cache_mb);
  if (o->threads < 0) return nic_err(err, NIC_EINVAL, "threads %d < 0", o->threads);
  return NIC_OK;
}

/* ---- drawing patches ---- */

/* Which patches a slide gets, per class: either the next ones of a
 * cohort-wide shuffled order (each patch at most once in the cohort), or
 * a fresh draw without replacement for every slide (each at most once per
 * slide). */
typedef struct drawer {
  int n;      /* usable patches of the class */
  int unique; /* 1: cohort-wide order */
  int *order; /* the shuffled order (unique) or the scratch of a slide's draw */
  int next;   /* unique: the first unused entry of order */
} drawer;

/* Fills src[0..k) with patch indices for slide `index`. */
static void draw(drawer *d, const nic_mosaic_opts *o, int index, int cls, int k, int *src) {
  if (d->unique) {
    memcpy(src, d->order + d->next, sizeof(int) * (size_t)k);
    d->next += k;
    return;
  }
  /* A partial Fisher-Yates shuffle of 0..n-1: the first k entries. */
  nic_rng r;
  sim_rng(&r, o->seed, MOSAIC_STREAM_DRAW, (uint64_t)index, (uint64_t)cls);
  for (int i = 0; i < d->n; i++) d->order[i] = i;
  for (int i = 0; i < k; i++) {
    int j = i + (int)nic_rng_below(&r, (uint64_t)(d->n - i));
    int t = d->order[i];
    d->order[i] = d->order[j];
    d->order[j] = t;
    src[i] = d->order[i];
  }
}

/* ---- pixels ---- */

/* Copies a w x h patch into dst under transform t: mirrored left-right
 * when t is odd, then rotated clockwise by (t / 2) quarter turns. Odd
 * quarter turns need w == h. */
static void transform_patch(const uint8_t *src, uint8_t *dst, int w, int h, int t) {
  int rot = t >> 1;
  if (t == 0) {
    memcpy(dst, src, (size_t)w * h * 3);
    return;
  }
  for (int sy = 0; sy < h; sy++)
    for (int sx = 0; sx < w; sx++) {
      int x = t & 1 ? w - 1 - sx : sx, y = sy, dx, dy;
      switch (rot) {
      case 1:
        dx = w - 1 - y, dy = x;
        break;
      case 2:
        dx = w - 1 - x, dy = h - 1 - y;
        break;
      case 3:
        dx = y, dy = w - 1 - x;
        break;
      default:
        dx = x, dy = y;
        break;
      }
      memcpy(dst + ((size_t)dy * w + dx) * 3, src + ((size_t)sy * w + sx) * 3, 3);
    }
}

/* One slide being written: what the TIFF writer's callback reads. */
typedef struct slide_px {
  const mosaic_layout *l;
  const uint8_t *cells; /* tissue cell t at t * pw * ph * 3 */
  int pw, ph;
  uint8_t glass[3]; /* the background's colour */
  uint64_t grain;   /* its per-pixel noise seed */
} slide_px;

/* Near-white glass with a grain of +-2 levels per channel. */
static void glass(const slide_px *s, uint8_t *out, int x, int y, int n) {
  for (int i = 0; i < n; i++) {
    uint64_t h = sim_mix(s->grain, ((uint64_t)y << 32) | (uint32_t)(x + i));
    for (int c = 0; c < 3; c++)
      out[3 * i + c] = (uint8_t)(s->glass[c] + (int)((h >> (8 * c)) % 5) - 2);
  }
}

static nic_status fill(void *user, int thread, int x0, int y0, int w, int h, uint8_t *rgb,
                       int stride, nic_error *err) {
  (void)thread, (void)err;
  const slide_px *s = user;
  const mosaic_layout *l = s->l;
  for (int r = 0; r < h; r++) {
    int y = y0 + r, gy = y / s->ph, py = y - gy * s->ph;
    uint8_t *out = rgb + (size_t)r * stride;
    for (int x = x0; x < x0 + w;) {
      int gx = x / s->pw, px = x - gx * s->pw;
      int n = s->pw - px < x0 + w - x ? s->pw - px : x0 + w - x;
      int t = l->cell[gy * l->gw + gx];
      if (t >= 0)
        memcpy(out, s->cells + (((size_t)t * s->ph + py) * s->pw + px) * 3, (size_t)n * 3);
      else
        glass(s, out, x, y, n);
      out += 3 * n;
      x += n;
    }
  }
  return NIC_OK;
}

/* The central cw x ch pixels of a pw-wide patch. */
static void crop_centre(const uint8_t *px, int pw, int ph, uint8_t *dst, int cw, int ch) {
  int x0 = (pw - cw) / 2, y0 = (ph - ch) / 2;
  for (int y = 0; y < ch; y++)
    memcpy(dst + (size_t)y * cw * 3, px + ((size_t)(y0 + y) * pw + x0) * 3, (size_t)cw * 3);
}

/* Loads, crops to the cell (cw x ch) and transforms the patches of every
 * tissue cell into cells[]. */
static nic_status fill_cells(const mosaic_pool *p, const mosaic_layout *l, const int *src,
                             const uint8_t *tf, uint8_t *cells, int cw, int ch, int threads,
                             nic_error *err) {
  size_t psz = (size_t)cw * ch * 3;
  int crop = cw != p->pw || ch != p->ph;
  int failed = 0;
  nic_error first = {0};
#pragma omp parallel for schedule(dynamic, 8) num_threads(sim_threads(threads))
  for (int t = 0; t < l->ntissue; t++) {
    const uint8_t *px = NULL;
    uint8_t *owned = NULL, *tmp = NULL;
    nic_error e = {0};
    if (crop && !(tmp = malloc(psz))) {
      e.code = NIC_ENOMEM;
      snprintf(e.msg, sizeof e.msg, "out of memory");
    } else if (mosaic_pool_get(p, l->cluster[t] ? 1 : 0, src[t], &px, &owned, &e) == NIC_OK) {
      if (crop) crop_centre(px, p->pw, p->ph, tmp, cw, ch);
      transform_patch(crop ? tmp : px, cells + (size_t)t * psz, cw, ch, tf[t]);
    }
    if (e.code) {
#pragma omp critical(nic_mosaic_err)
      if (!failed++) first = e;
    }
    free(tmp);
    free(owned);
  }
  if (failed) return nic_err(err, first.code, "%s", first.msg);
  return NIC_OK;
}

/* ---- CSV ---- */

/* A field, quoted when it holds a comma, quote or line break. */
static void csv_field(FILE *f, const char *s) {
  if (!strpbrk(s, ",\"\r\n")) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

/* ---- the cohort ---- */

enum { F_LABELS, F_SLIDES, F_PATCHES, NFILES };

nic_status nic_mosaic_generate(const nic_mosaic_opts *o, const char *outdir, nic_error *err) {
  nic_status s = nic_mosaic_check(o, err);
  if (s != NIC_OK) return s;
  const char *prefix = o->prefix ? o->prefix : "mosaic";
  const char *fname[NFILES] = {"labels.csv", "slides.csv", "patches.csv"};
  const char *cname[2] = {"negative", "positive"};
  char path[NFILES][4096], tpath[4096];
  FILE *f[NFILES] = {NULL, NULL, NULL};
  mosaic_pool pool = {0};
  mosaic_layout l = {0};
  drawer d[2] = {{0}, {0}};
  int *label = NULL, *need = NULL, *src = NULL, *draws[2] = {NULL, NULL};
  uint8_t *tf = NULL, *cells = NULL;
  int maxtissue = 0;

  if ((s = mosaic_pool_load(&pool, o, err)) != NIC_OK) return s;
  if ((s = sim_mkdirs(outdir, err)) != NIC_OK) goto done;
  for (int k = 0; k < NFILES; k++)
    if ((s = sim_path(path[k], sizeof path[k], err, "%s/%s", outdir, fname[k])) != NIC_OK)
      goto done;

  /* Exactly floor(slides * fraction) positives, in a seeded random order. */
  label = malloc(sizeof(int) * (size_t)o->slides);
  need = calloc(2 * (size_t)o->slides, sizeof(int));
  if (!label || !need) {
    s = nic_err(err, NIC_ENOMEM, "out of memory");
    goto done;
  }
  int npos = (int)(o->slides * o->positive_fraction + 1e-9);
  for (int i = 0; i < o->slides; i++) label[i] = i < npos;
  nic_rng r;
  sim_rng(&r, o->seed, MOSAIC_STREAM_LABELS, 0, 0);
  sim_shuffle_int(&r, label, o->slides);

  /* First pass: the patches every slide needs. */
  double total[2] = {0, 0};
  int most[2] = {0, 0}, most_at[2] = {0, 0};
  for (int i = 0; i < o->slides; i++) {
    if ((s = mosaic_layout_make(&l, o, i, label[i], err)) != NIC_OK) goto done;
    need[2 * i] = l.ntissue - l.ntumour;
    need[2 * i + 1] = l.ntumour;
    if (l.ntissue > maxtissue) maxtissue = l.ntissue;
    mosaic_layout_free(&l);
    for (int c = 0; c < 2; c++) {
      total[c] += need[2 * i + c];
      if (need[2 * i + c] > most[c]) most[c] = need[2 * i + c], most_at[c] = i;
    }
  }
  for (int c = 0; c < 2; c++) {
    d[c].n = pool.n[c];
    if (most[c] > pool.n[c]) {
      s = nic_err(err, NIC_EINVAL,
                  "slide %s_%04d needs %d %s patches but only %d are usable in %s; lower "
                  "--tissue-patches%s",
                  prefix, most_at[c], most[c], cname[c], pool.n[c], o->patches,
                  c ? ", --clusters or --cluster-max" : "");
      goto done;
    }
    d[c].unique = o->reuse != NIC_MOSAIC_REUSE_ALWAYS && total[c] <= pool.n[c];
    if (!d[c].unique && o->reuse == NIC_MOSAIC_REUSE_NEVER) {
      s = nic_err(err, NIC_EINVAL,
                  "the cohort needs %.0f %s patches but only %d are usable, and reuse is off",
                  total[c], cname[c], pool.n[c]);
      goto done;
    }
    if (!d[c].unique && o->reuse == NIC_MOSAIC_REUSE_AUTO && o->warning) {
      char msg[300];
      snprintf(msg, sizeof msg,
               "%d %s patches for %.0f placements: patches are reused across slides (each "
               "at most once per slide)",
               pool.n[c], cname[c], total[c]);
      o->warning(o->warning_user, msg);
    }
    d[c].order = malloc(sizeof(int) * (size_t)pool.n[c]);
    if (!d[c].order) {
      s = nic_err(err, NIC_ENOMEM, "out of memory");
      goto done;
    }
    if (d[c].unique) {
      for (int i = 0; i < pool.n[c]; i++) d[c].order[i] = i;
      sim_rng(&r, o->seed, MOSAIC_STREAM_POOL, (uint64_t)c, 0);
      sim_shuffle_int(&r, d[c].order, pool.n[c]);
    }
  }

  /* The cell: the whole patch, or its centre cropped to cell_um. */
  int cw = pool.pw, ch = pool.ph;
  double mpp = o->patch_mpp;
  if (o->cell_um > 0) {
    int c = (int)lround(o->cell_um / o->patch_mpp);
    if (c > pool.pw || c > pool.ph) {
      s = nic_err(err, NIC_EINVAL, "cells of %g um need %d px of the %dx%d px patches at %g um/px",
                  o->cell_um, c, pool.pw, pool.ph, o->patch_mpp);
      goto done;
    }
    cw = ch = c;
    mpp = o->cell_um / c;
  }
  size_t psz = (size_t)cw * ch * 3;
  src = malloc(sizeof(int) * (size_t)maxtissue);
  tf = malloc((size_t)maxtissue);
  cells = malloc(psz * (size_t)maxtissue);
  draws[0] = malloc(sizeof(int) * (size_t)maxtissue);
  draws[1] = malloc(sizeof(int) * (size_t)maxtissue);
  if (!src || !tf || !cells || !draws[0] || !draws[1]) {
    s = nic_err(err, NIC_ENOMEM, "out of memory for a slide of %d patches", maxtissue);
    goto done;
  }
  for (int k = 0; k < NFILES && s == NIC_OK; k++) s = sim_fopen(&f[k], path[k], "w", err);
  if (s != NIC_OK) goto done;
  fprintf(f[F_LABELS], "case_id,slide_id,label\n");
  fprintf(f[F_SLIDES], "slide_id,path,mpp,label,n_tissue_patches,n_tumour_patches,cluster_size,"
                       "n_clusters,width,height,patch_width,patch_height\n");
  fprintf(f[F_PATCHES], "slide_id,grid_x,grid_y,x,y,source,class,cluster,transform\n");

  /* Second pass: draw, render, write. */
  for (int i = 0; i < o->slides && s == NIC_OK; i++) {
    char id[256], file[300];
    snprintf(id, sizeof id, "%s_%04d", prefix, i);
    snprintf(file, sizeof file, "%s.tif", id);
    if ((s = sim_path(tpath, sizeof tpath, err, "%s/%s", outdir, file)) != NIC_OK) break;
    if ((s = mosaic_layout_make(&l, o, i, label[i], err)) != NIC_OK) break;

    /* Patches: normal cells take the negative draws in raster order,
     * tumour cells the positive ones. */
    int used[2] = {0, 0};
    for (int c = 0; c < 2; c++) draw(&d[c], o, i, c, need[2 * i + c], draws[c]);
    for (int t = 0; t < l.ntissue; t++) {
      int c = l.cluster[t] ? 1 : 0;
      src[t] = draws[c][used[c]++];
    }
    /* Flips and rotations: all eight on square patches, the four that
     * keep the shape on others. */
    nic_rng ra;
    sim_rng(&ra, o->seed, MOSAIC_STREAM_AUG, (uint64_t)i, 0);
    static const uint8_t keep_shape[4] = {0, 1, 4, 5};
    for (int t = 0; t < l.ntissue; t++)
      tf[t] = !o->augment ? 0
              : cw == ch  ? (uint8_t)nic_rng_below(&ra, 8)
                          : keep_shape[nic_rng_below(&ra, 4)];
    if ((s = fill_cells(&pool, &l, src, tf, cells, cw, ch, o->threads, err)) != NIC_OK) break;

    /* Glass: a grey of 236..246 with a slight tint per slide. */
    slide_px sp = {&l, cells, cw, ch, {0, 0, 0}, 0};
    nic_rng rg;
    sim_rng(&rg, o->seed, MOSAIC_STREAM_GLASS, (uint64_t)i, 0);
    double grey = sim_uniform(&rg, 236, 246);
    for (int c = 0; c < 3; c++) sp.glass[c] = (uint8_t)lround(grey + sim_uniform(&rg, -3, 3));
    sp.grain = nic_rng_next(&rg);
    sim_tiff_src ts = {l.gw * cw, l.gh * ch, mpp, "nic mosaic slide", fill, &sp};
    if ((s = sim_tiff_write(&ts, tpath, o->jpeg_quality, o->threads, err)) != NIC_OK) break;

    int csize = 0;
    for (int k = 0; k < l.nclusters; k++) csize = l.csize[k] > csize ? l.csize[k] : csize;
    fprintf(f[F_LABELS], "%s,%s,%d\n", id, id, label[i]);
    fprintf(f[F_SLIDES], "%s,%s,%.9g,%d,%d,%d,%d,%d,%d,%d,%d,%d\n", id, file, mpp, label[i],
            l.ntissue, l.ntumour, csize, l.nclusters, ts.width, ts.height, cw, ch);
    for (int t = 0; t < l.ntissue; t++) {
      int c = l.cluster[t] ? 1 : 0;
      fprintf(f[F_PATCHES], "%s,%d,%d,%d,%d,", id, l.tx[t], l.ty[t], l.tx[t] * cw, l.ty[t] * ch);
      csv_field(f[F_PATCHES], pool.img[c][src[t]].rel);
      fprintf(f[F_PATCHES], ",%d,%d,%d\n", c, l.cluster[t], tf[t]);
    }
    mosaic_layout_free(&l);
    if (o->progress) o->progress(o->progress_user, i + 1, o->slides);
  }
done:
  for (int k = NFILES - 1; k >= 0; k--)
    if (f[k]) {
      nic_status s2 = sim_fclose(f[k], path[k], s == NIC_OK ? err : NULL);
      if (s == NIC_OK) s = s2;
    }
  mosaic_layout_free(&l);
  mosaic_pool_free(&pool);
  free(d[0].order);
  free(d[1].order);
  free(label);
  free(need);
  free(src);
  free(tf);
  free(cells);
  free(draws[0]);
  free(draws[1]);
  return s;
}
