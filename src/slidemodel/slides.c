/* The slide cache and crops.
 *
 * A compressed slide is kept as its rows (one embedding per tissue cell)
 * and their cell indices, never as the dense grid: a crop is written
 * straight from the rows, so memory is the tissue, not H x W x C, and an
 * orientation costs nothing but index arithmetic. Rows are cached when
 * the whole cohort fits the budget, otherwise read from the file for every
 * use (HDF5 reads of a few MB). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "slidemodel/sm_internal.h"

/* ---- distance to the background ------------------------------------------ */

/* Chamfer (3-4) distance of every tissue cell to the nearest background cell
 * (cells outside the grid count as background), in cells; crop centres are
 * drawn in proportion to it, which favours the inside of tissue over its
 * edges and single stray cells. */
static nic_status distance_weights(sm_slide *s, nic_error *err) {
  int H = s->H, W = s->W, PW = W + 2;
  int64_t cells = (int64_t)(H + 2) * PW;
  int32_t *d = malloc(sizeof *d * (size_t)cells);
  s->cdf = malloc(sizeof *s->cdf * (size_t)(s->n ? s->n : 1));
  if (!d || !s->cdf) {
    free(d);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory for the distance map", s->path);
  }
  const int32_t far = INT32_MAX / 4;
  for (int64_t q = 0; q < cells; q++) d[q] = 0;
  for (int64_t k = 0; k < s->n; k++) {
    int i = s->cell[k] / W, j = s->cell[k] % W;
    d[(int64_t)(i + 1) * PW + j + 1] = far;
  }
#define RELAX(q, v)                                                                                \
  do {                                                                                             \
    if (d[q] > (v)) d[q] = (v);                                                                    \
  } while (0)
  for (int i = 1; i <= H; i++)
    for (int j = 1; j <= W; j++) {
      int64_t q = (int64_t)i * PW + j;
      if (!d[q]) continue;
      RELAX(q, d[q - 1] + 3);
      RELAX(q, d[q - PW] + 3);
      RELAX(q, d[q - PW - 1] + 4);
      RELAX(q, d[q - PW + 1] + 4);
    }
  for (int i = H; i >= 1; i--)
    for (int j = W; j >= 1; j--) {
      int64_t q = (int64_t)i * PW + j;
      if (!d[q]) continue;
      RELAX(q, d[q + 1] + 3);
      RELAX(q, d[q + PW] + 3);
      RELAX(q, d[q + PW + 1] + 4);
      RELAX(q, d[q + PW - 1] + 4);
    }
#undef RELAX
  double acc = 0;
  for (int64_t k = 0; k < s->n; k++) {
    int i = s->cell[k] / W, j = s->cell[k] % W;
    acc += d[(int64_t)(i + 1) * PW + j + 1] / 3.0;
    s->cdf[k] = acc;
  }
  free(d);
  return NIC_OK;
}

/* ---- opening ------------------------------------------------------------------ */

static nic_status open_slide(sm_slide *s, const char *path, int *C, nic_error *err) {
  nic_features_reader *r = NULL;
  nic_status st = nic_features_open(&r, path, err);
  if (st != NIC_OK) return st;
  const nic_features_meta *m = nic_features_meta_of(r);
  if (*C == 0) *C = m->embed_dim;
  if (m->embed_dim != *C) {
    nic_features_close(r);
    return nic_err(err, NIC_EFORMAT, "%s: embeddings have %d values, the other slides %d", path,
                   m->embed_dim, *C);
  }
  s->H = m->grid_h;
  s->W = m->grid_w;
  s->n = m->count;
  s->has_or = m->has_orientations;
  if (!(s->path = sm_strdup(path))) st = nic_err(err, NIC_ENOMEM, "out of memory");
  s->cell = malloc(sizeof *s->cell * (size_t)(s->n ? s->n : 1));
  int32_t *xy = malloc(sizeof *xy * 2 * 4096);
  if (st == NIC_OK && (!s->cell || !xy)) st = nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
  for (int64_t k = 0; k < s->n && st == NIC_OK; k += 4096) {
    int64_t b = s->n - k < 4096 ? s->n - k : 4096;
    st = nic_features_read(r, k, b, NULL, xy, err);
    for (int64_t q = 0; q < b && st == NIC_OK; q++) {
      int i, j;
      if (!nic_features_coord_cell(m, xy[2 * q], xy[2 * q + 1], &i, &j))
        st = nic_err(err, NIC_EFORMAT, "%s: row %lld is not on the grid", path, (long long)(k + q));
      else
        s->cell[k + q] = i * s->W + j;
    }
  }
  free(xy);
  nic_features_close(r);
  if (st == NIC_OK) st = distance_weights(s, err);
  return st;
}

static void free_slide(sm_slide *s) {
  free(s->path);
  free(s->cell);
  free(s->cdf);
  free(s->feat);
  free(s->orient);
}

void sm_data_free(sm_data *d) {
  if (!d) return;
  for (int i = 0; i < d->n && d->s; i++) free_slide(&d->s[i]);
  free(d->s);
  free(d->tmp);
  free(d->tmp8);
  memset(d, 0, sizeof *d);
}

nic_status sm_data_open(sm_data *d, const char *const *paths, int n, int use_or,
                        int64_t cache_bytes, nic_error *err) {
  memset(d, 0, sizeof *d);
  d->s = calloc((size_t)(n ? n : 1), sizeof *d->s);
  if (!d->s) return nic_err(err, NIC_ENOMEM, "out of memory");
  d->use_or = use_or;
  d->budget = cache_bytes;
  nic_status st = NIC_OK;
  for (int i = 0; i < n && st == NIC_OK; i++, d->n++)
    st = open_slide(&d->s[i], paths[i], &d->C, err);
  if (st != NIC_OK) {
    sm_data_free(d);
    return st;
  }
  double feat = 0, orient = 0;
  for (int i = 0; i < n; i++) {
    feat += (double)d->s[i].n * d->C * sizeof(float);
    if (d->s[i].has_or) orient += 7.0 * (double)d->s[i].n * d->C * sizeof(float);
  }
  d->cache_feat = feat <= (double)d->budget;
  d->cache_or = use_or && d->cache_feat && feat + orient <= (double)d->budget;
  return NIC_OK;
}

/* ---- rows ---------------------------------------------------------------------- */

int sm_rows_orientation(const sm_data *d, int i, int o) {
  return o >= 1 && o < 8 && d->use_or && d->s[i].has_or ? o : 0;
}

static nic_status grow(float **buf, size_t *cap, size_t want, nic_error *err) {
  if (*cap >= want) return NIC_OK;
  float *p = realloc(*buf, sizeof *p * want);
  if (!p) return nic_err(err, NIC_ENOMEM, "out of memory for %zu floats", want);
  *buf = p;
  *cap = want;
  return NIC_OK;
}

/* Reads features (o = 0) or orientation o of every row into dst (n x C);
 * with all7 set, orientations 1..7 into dst (7 x n x C) instead. */
static nic_status read_rows(sm_data *d, sm_slide *s, int o, int all7, float *dst, nic_error *err) {
  nic_features_reader *r = NULL;
  nic_status st = nic_features_open(&r, s->path, err);
  if (st != NIC_OK) return st;
  int C = d->C;
  if (o == 0 && !all7) {
    if (s->n) st = nic_features_read(r, 0, s->n, dst, NULL, err);
    nic_features_close(r);
    return st;
  }
  const int64_t block = 1024;
  st = grow(&d->tmp8, &d->tmp8_cap, (size_t)(block * 8 * C), err);
  for (int64_t k = 0; k < s->n && st == NIC_OK; k += block) {
    int64_t b = s->n - k < block ? s->n - k : block;
    st = nic_features_read_orientations(r, k, b, d->tmp8, err);
    for (int64_t q = 0; q < b && st == NIC_OK; q++)
      for (int oo = all7 ? 1 : o; oo <= (all7 ? 7 : o); oo++) {
        float *to = all7 ? dst + ((int64_t)(oo - 1) * s->n + k + q) * C : dst + (k + q) * C;
        memcpy(to, d->tmp8 + (q * 8 + oo) * C, sizeof(float) * (size_t)C);
      }
  }
  nic_features_close(r);
  return st;
}

nic_status sm_rows(sm_data *d, int i, int o, const float **rows, nic_error *err) {
  sm_slide *s = &d->s[i];
  int C = d->C;
  size_t per = (size_t)(s->n ? s->n : 1) * (size_t)C;
  o = sm_rows_orientation(d, i, o);
  nic_status st = NIC_OK;
  if (o == 0) {
    if (s->feat) {
      *rows = s->feat;
      return NIC_OK;
    }
    if (d->cache_feat) {
      if (!(s->feat = malloc(sizeof(float) * per)))
        return nic_err(err, NIC_ENOMEM, "out of memory caching %s", s->path);
      if ((st = read_rows(d, s, 0, 0, s->feat, err)) != NIC_OK) {
        free(s->feat);
        s->feat = NULL;
        return st;
      }
      *rows = s->feat;
      return NIC_OK;
    }
  } else {
    if (!s->orient && d->cache_or) {
      if (!(s->orient = malloc(sizeof(float) * 7 * per)))
        return nic_err(err, NIC_ENOMEM, "out of memory caching %s", s->path);
      if ((st = read_rows(d, s, 0, 1, s->orient, err)) != NIC_OK) {
        free(s->orient);
        s->orient = NULL;
        return st;
      }
    }
    if (s->orient) {
      *rows = s->orient + (size_t)(o - 1) * per;
      return NIC_OK;
    }
  }
  if ((st = grow(&d->tmp, &d->tmp_cap, per, err)) != NIC_OK) return st;
  if ((st = read_rows(d, s, o, 0, d->tmp, err)) != NIC_OK) return st;
  *rows = d->tmp;
  return NIC_OK;
}

/* ---- feature statistics ---------------------------------------------------------- */

nic_status sm_feature_stats(sm_data *d, const int *idx, int n, float *mean, float *istd,
                            nic_error *err) {
  int C = d->C;
  double *sum = calloc((size_t)C, sizeof *sum), *ss = calloc((size_t)C, sizeof *ss);
  if (!sum || !ss) {
    free(sum), free(ss);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  nic_status st = NIC_OK;
  double count = 0;
  /* two passes (mean, then squared deviations) for precision */
  for (int pass = 0; pass < 2 && st == NIC_OK; pass++) {
    for (int a = 0; a < n && st == NIC_OK; a++) {
      const float *rows = NULL;
      sm_slide *s = &d->s[idx[a]];
      if ((st = sm_rows(d, idx[a], 0, &rows, err)) != NIC_OK) break;
      for (int64_t k = 0; k < s->n; k++)
        for (int c = 0; c < C; c++) {
          double v = rows[k * C + c];
          if (pass == 0)
            sum[c] += v;
          else
            ss[c] += (v - mean[c]) * (v - mean[c]);
        }
      if (pass == 0) count += (double)s->n;
    }
    if (pass == 0)
      for (int c = 0; c < C; c++) mean[c] = count > 0 ? (float)(sum[c] / count) : 0.0f;
  }
  for (int c = 0; c < C; c++) {
    double sd = count > 1 ? sqrt(ss[c] / (count - 1)) : 1.0;
    istd[c] = sd > 1e-6 ? (float)(1.0 / sd) : 1.0f;
  }
  free(sum), free(ss);
  return st;
}

/* ---- crops ----------------------------------------------------------------------- */

int sm_test_orientation(int t, int T) {
  return T < 8 ? (t * 8 / T) % 8 : t % 8;
}

/* Window start along one axis of `size` cells for a crop of R around c. */
static int axis_start(int size, int R, int c, int train, nic_rng *rng) {
  if (size <= R) {
    int slack = R - size;
    int off = train ? (int)nic_rng_below(rng, (uint64_t)slack + 1) : slack / 2;
    return -off;
  }
  int start = c - R / 2;
  if (start < 0) start = 0;
  if (start > size - R) start = size - R;
  return start;
}

void sm_crop_choose(const sm_slide *s, int R, int o, int train, float occlusion, nic_rng *rng,
                    sm_crop *cr) {
  memset(cr, 0, sizeof *cr);
  cr->o = o;
  int H2, W2, ci = 0, cj = 0;
  sm_orient_dims(o, s->H, s->W, &H2, &W2);
  if ((H2 > R || W2 > R) && s->n > 0) {
    double u = nic_rng_uniform(rng) * s->cdf[s->n - 1];
    int64_t lo = 0, hi = s->n - 1; /* first row with cdf > u */
    while (lo < hi) {
      int64_t mid = (lo + hi) / 2;
      if (s->cdf[mid] > u)
        hi = mid;
      else
        lo = mid + 1;
    }
    int cell = s->cell[lo];
    sm_orient_cell(o, s->H, s->W, cell / s->W, cell % s->W, &ci, &cj);
  }
  cr->y0 = axis_start(H2, R, ci, train, rng);
  cr->x0 = axis_start(W2, R, cj, train, rng);
  if (!train || occlusion <= 0 || nic_rng_uniform(rng) >= occlusion) return;
  /* the part of the output the grid covers, and a box of 1/8 to 1/4 of it */
  int ylo = cr->y0 < 0 ? -cr->y0 : 0, xlo = cr->x0 < 0 ? -cr->x0 : 0;
  int yhi = H2 - cr->y0 < R ? H2 - cr->y0 : R, xhi = W2 - cr->x0 < R ? W2 - cr->x0 : R;
  int eh = yhi - ylo, ew = xhi - xlo;
  if (eh < 1 || ew < 1) return;
  int bh = (int)(eh * (0.125 + 0.125 * nic_rng_uniform(rng)) + 0.5);
  int bw = (int)(ew * (0.125 + 0.125 * nic_rng_uniform(rng)) + 0.5);
  if (bh < 1) bh = 1;
  if (bw < 1) bw = 1;
  cr->occ = 1;
  cr->by0 = ylo + (int)nic_rng_below(rng, (uint64_t)(eh - bh) + 1);
  cr->bx0 = xlo + (int)nic_rng_below(rng, (uint64_t)(ew - bw) + 1);
  cr->by1 = cr->by0 + bh;
  cr->bx1 = cr->bx0 + bw;
}

void sm_crop_place(const sm_slide *s, const float *rows, int C, const float *mean,
                   const float *istd, int R, const sm_crop *cr, float *dst) {
  int64_t plane = (int64_t)R * R;
  for (int64_t k = 0; k < s->n; k++) {
    int i2, j2, cell = s->cell[k];
    sm_orient_cell(cr->o, s->H, s->W, cell / s->W, cell % s->W, &i2, &j2);
    int y = i2 - cr->y0, x = j2 - cr->x0;
    if (y < 0 || y >= R || x < 0 || x >= R) continue;
    if (cr->occ && y >= cr->by0 && y < cr->by1 && x >= cr->bx0 && x < cr->bx1) continue;
    const float *v = rows + k * C;
    float *o = dst + (int64_t)y * R + x;
    for (int c = 0; c < C; c++) o[c * plane] = (v[c] - mean[c]) * istd[c];
  }
}
