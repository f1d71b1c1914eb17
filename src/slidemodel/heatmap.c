/* Heatmaps: which grid cells a slide model looked at.
 *
 * CNN: Grad-CAM (Selvaraju et al., ICCV 2017) on the output of the first
 * convolution block, as NIC shows it: the gradient of the class score with
 * respect to that feature map, averaged over space, weighs its channels;
 * the weighted sum, clipped at 0, is the map (at half the grid's
 * resolution: the block has stride 2). It runs on the model's twin with the
 * batch norms folded (see cnn.c), over crops that tile the grid; cells seen
 * by several crops average them. ABMIL: the attention weight of each cell.
 *
 * Memory is a few arrays of the grid's size plus one crop, whatever the
 * slide's resolution. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nic/plot.h"
#include "slidemodel/sm_internal.h"

/* Window starts along an axis of `size` cells: one centred window when the
 * grid fits, else windows every R/2 cells with the last flush with the end. */
static int window_starts(int size, int R, int *starts, int cap) {
  if (size <= R) {
    starts[0] = -((R - size) / 2);
    return 1;
  }
  int n = 0, step = R / 2 > 0 ? R / 2 : 1;
  for (int s = 0; n < cap; s += step) {
    if (s > size - R) s = size - R;
    starts[n++] = s;
    if (s == size - R) break;
  }
  return n;
}

/* The class to explain, and d(score)/d(outputs) for it. */
static nic_status target_grad(nic_slidemodel *m, nic_ctx *ctx, sm_data *d, int target, float *dout,
                              nic_error *err) {
  memset(dout, 0, sizeof(float) * (size_t)m->nout);
  if (m->task == NIC_TASK_BINARY) {
    int t = target < 0 ? 1 : target;
    if (t > 1) return nic_err(err, NIC_EINVAL, "class %d does not exist (binary task)", t);
    dout[t] = 1; /* the log-odds of t: logit_t - logit_other */
    dout[1 - t] = -1;
  } else if (m->task == NIC_TASK_MULTICLASS) {
    int t = target;
    if (t < 0) { /* the predicted class */
      double p[SM_ABMIL_MAX_DIM];
      nic_status st = sm_model_predict(m, ctx, d, 0, p, err);
      if (st != NIC_OK) return st;
      t = 0;
      for (int c = 1; c < m->K; c++)
        if (p[c] > p[t]) t = c;
    }
    if (t >= m->K) return nic_err(err, NIC_EINVAL, "class %d does not exist (%d classes)", t, m->K);
    dout[t] = 1;
  } else {
    dout[0] = 1;
  }
  return NIC_OK;
}

static nic_status ensure_twin(nic_slidemodel *m, nic_error *err) {
  if (m->twin) return NIC_OK;
  sm_cnn_arch a = {.C = m->C,
                   .R = m->crop,
                   .filters = m->filters,
                   .hidden = m->hidden,
                   .nout = m->nout,
                   .pool = (nic_pool_kind)m->pool,
                   .strided = m->strided,
                   .smooth = m->smooth};
  nic_status st = sm_cnn_build(&m->twin, &a, 1, err);
  if (st == NIC_OK) st = sm_cnn_fold_into(m->net, m->twin, err);
  if (st != NIC_OK) {
    nic_model_free(m->twin);
    m->twin = NULL;
  }
  return st;
}

static nic_status gradcam(nic_slidemodel *m, nic_ctx *ctx, sm_data *d, int target, float *values,
                          nic_error *err) {
  const sm_slide *s = &d->s[0];
  int R = m->crop, C = m->C, H = s->H, W = s->W;
  float dout_v[SM_ABMIL_MAX_DIM];
  nic_status st = ensure_twin(m, err);
  if (st == NIC_OK) st = target_grad(m, ctx, d, target, dout_v, err);
  if (st != NIC_OK) return st;
  int node = sm_cnn_cam_node(m->twin);
  int ys[4096], xs[4096];
  int ny = window_starts(H, R, ys, 4096), nx = window_starts(W, R, xs, 4096);
  double *sum = calloc((size_t)H * W, sizeof *sum);
  int *cnt = calloc((size_t)H * W, sizeof *cnt);
  nic_tensor A = NIC_TENSOR_INIT, G = NIC_TENSOR_INIT, dout = NIC_TENSOR_INIT;
  double *alpha = malloc(sizeof(double) * (size_t)m->filters);
  float *cam = NULL;
  const float *rows = NULL;
  if (!sum || !cnt || !alpha) st = nic_err(err, NIC_ENOMEM, "out of memory for the heatmap");
  if (st == NIC_OK) st = nic_tensor_alloc2(&dout, 1, m->nout, err);
  if (st == NIC_OK) {
    memcpy(dout.data, dout_v, sizeof(float) * (size_t)m->nout);
    st = sm_rows(d, 0, 0, &rows, err);
  }
  for (int wy = 0; wy < ny && st == NIC_OK; wy++)
    for (int wx = 0; wx < nx && st == NIC_OK; wx++) {
      sm_crop cr;
      memset(&cr, 0, sizeof cr);
      cr.y0 = ys[wy];
      cr.x0 = xs[wx];
      if ((st = nic_tensor_alloc4(&m->x, 1, C, R, R, err)) != NIC_OK) break;
      sm_crop_place(s, rows, C, m->mean, m->istd, R, &cr, m->x.data);
      const nic_tensor *y = NULL;
      /* training mode on the twin is the inference network, with backward */
      st = nic_model_forward(m->twin, ctx, &m->x, 1, &y, err);
      if (st == NIC_OK) st = nic_model_backward(m->twin, ctx, &dout, NULL, err);
      if (st == NIC_OK) st = nic_model_node_output(m->twin, ctx, node, &A, err);
      if (st == NIC_OK) st = nic_model_node_grad(m->twin, ctx, node, &G, err);
      if (st != NIC_OK) break;
      int F = (int)A.shape[1], h = (int)A.shape[2], w = (int)A.shape[3];
      int64_t plane = (int64_t)h * w;
      float *c2 = realloc(cam, sizeof(float) * (size_t)plane);
      if (!c2) {
        st = nic_err(err, NIC_ENOMEM, "out of memory for the heatmap");
        break;
      }
      cam = c2;
      for (int f = 0; f < F; f++) {
        double g = 0;
        for (int64_t q = 0; q < plane; q++) g += G.data[f * plane + q];
        alpha[f] = g / (double)plane;
      }
      for (int64_t q = 0; q < plane; q++) {
        double v = 0;
        for (int f = 0; f < F; f++) v += alpha[f] * A.data[f * plane + q];
        cam[q] = v > 0 ? (float)v : 0.0f;
      }
      /* the map may be coarser than the crop (the NIC CNN's first block has stride 2) */
      for (int64_t k = 0; k < s->n; k++) {
        int i = s->cell[k] / W, j = s->cell[k] % W, y0 = i - cr.y0, x0 = j - cr.x0;
        if (y0 < 0 || y0 >= R || x0 < 0 || x0 >= R) continue;
        int u = y0 * h / R, v = x0 * w / R;
        sum[s->cell[k]] += cam[(int64_t)u * w + v];
        cnt[s->cell[k]]++;
      }
    }
  if (st == NIC_OK)
    for (int64_t q = 0; q < (int64_t)H * W; q++)
      values[q] = cnt[q] ? (float)(sum[q] / cnt[q]) : NAN;
  free(sum), free(cnt), free(alpha), free(cam);
  nic_tensor_free(&A);
  nic_tensor_free(&G);
  nic_tensor_free(&dout);
  return st;
}

static nic_status attention(nic_slidemodel *m, nic_ctx *ctx, sm_data *d, float *values,
                            nic_error *err) {
  const sm_slide *s = &d->s[0];
  int64_t n = 0;
  float y[SM_ABMIL_MAX_DIM];
  float *a = malloc(sizeof(float) * (size_t)(s->n ? s->n : 1));
  if (!a) return nic_err(err, NIC_ENOMEM, "out of memory for the heatmap");
  m->ab.threads = nic_ctx_threads(ctx);
  nic_status st = sm_model_bag(m, d, 0, 0, NULL, &n, err);
  if (st == NIC_OK && n == 0) st = nic_err(err, NIC_EINVAL, "%s: no tissue cell", s->path);
  if (st == NIC_OK) st = sm_abmil_forward(&m->ab, m->bag, n, y, a, err);
  if (st == NIC_OK) {
    for (int64_t q = 0; q < (int64_t)s->H * s->W; q++) values[q] = NAN;
    for (int64_t k = 0; k < s->n; k++) values[s->cell[k]] = a[k];
  }
  free(a);
  return st;
}

nic_status nic_sm_heatmap(nic_slidemodel *m, nic_ctx *ctx, const char *path, int target,
                          float **values, int *grid_h, int *grid_w, nic_error *err) {
  *values = NULL;
  sm_data d;
  /* only the plain features are needed: no orientations, cache this slide */
  nic_status st = sm_data_open(&d, &path, 1, 0, INT64_MAX, err);
  if (st != NIC_OK) return st;
  if (d.C != m->C)
    st = nic_err(err, NIC_EINVAL, "%s: embeddings have %d values, the model takes %d", path, d.C,
                 m->C);
  float *v = NULL;
  if (st == NIC_OK && !(v = malloc(sizeof(float) * (size_t)d.s[0].H * (size_t)d.s[0].W)))
    st = nic_err(err, NIC_ENOMEM, "out of memory for the heatmap");
  if (st == NIC_OK)
    st = m->kind != NIC_SM_ABMIL ? gradcam(m, ctx, &d, target, v, err)
                                 : attention(m, ctx, &d, v, err);
  if (st == NIC_OK) {
    *values = v;
    *grid_h = d.s[0].H;
    *grid_w = d.s[0].W;
  } else {
    free(v);
  }
  sm_data_free(&d);
  return st;
}

/* ---- outputs ------------------------------------------------------------------------ */

nic_status nic_heatmap_write_geojson(const char *path, const nic_features_meta *meta,
                                     const float *values, nic_error *err) {
  sm_out o;
  nic_status st = sm_out_open(&o, path, err);
  if (st != NIC_OK) return st;
  FILE *f = o.f;
  double sd = meta->stride_level0;
  fputs("{\"type\":\"FeatureCollection\",\"features\":[", f);
  int first = 1;
  for (int i = 0; i < meta->grid_h; i++)
    for (int j = 0; j < meta->grid_w; j++) {
      float v = values[(int64_t)i * meta->grid_w + j];
      if (!isfinite(v)) continue;
      double x0 = meta->origin_x + j * sd, y0 = meta->origin_y + i * sd;
      double x1 = x0 + sd, y1 = y0 + sd;
      fprintf(f,
              "%s\n{\"type\":\"Feature\",\"geometry\":{\"type\":\"Polygon\",\"coordinates\":"
              "[[[%.3f,%.3f],[%.3f,%.3f],[%.3f,%.3f],[%.3f,%.3f],[%.3f,%.3f]]]},"
              "\"properties\":{\"objectType\":\"tile\",\"name\":\"%d,%d\","
              "\"measurements\":{\"score\":%.7g}}}",
              first ? "" : ",", x0, y0, x1, y0, x1, y1, x0, y1, x0, y0, i, j, (double)v);
      first = 0;
    }
  fputs("\n]}\n", f);
  return sm_out_commit(&o, err);
}

nic_status nic_heatmap_write_png(const char *path, const nic_features_meta *meta,
                                 const float *values, const uint8_t *mask, const uint8_t *rgb,
                                 int w, int h, double downsample, nic_error *err) {
  int H = meta->grid_h, W = meta->grid_w;
  uint8_t *img = NULL;
  float *vals = NULL;
  int iw = w, ih = h, vw, vh;
  nic_status st = NIC_OK;
  if (rgb) {
    /* the value of the cell under each thumbnail pixel's centre */
    img = malloc((size_t)w * h * 3);
    vals = malloc(sizeof(float) * (size_t)w * h);
    if (!img || !vals) st = nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
    for (int y = 0; y < h && st == NIC_OK; y++) {
      int i = (int)floor(((y + 0.5) * downsample - meta->origin_y) / meta->stride_level0);
      for (int x = 0; x < w; x++) {
        int j = (int)floor(((x + 0.5) * downsample - meta->origin_x) / meta->stride_level0);
        vals[(size_t)y * w + x] =
            i >= 0 && j >= 0 && i < H && j < W ? values[(int64_t)i * W + j] : NAN;
      }
    }
    if (st == NIC_OK) memcpy(img, rgb, (size_t)w * h * 3);
    vw = w, vh = h;
  } else {
    /* a drawing of the tissue mask, cells of s x s pixels */
    int side = H > W ? H : W, s = 1024 / (side > 0 ? side : 1);
    if (s < 1) s = 1;
    if (s > 16) s = 16;
    iw = W * s, ih = H * s;
    img = malloc((size_t)iw * ih * 3);
    if (!img) st = nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
    for (int y = 0; y < ih && st == NIC_OK; y++)
      for (int x = 0; x < iw; x++) {
        int64_t q = (int64_t)(y / s) * W + x / s;
        int tissue = mask ? mask[q] != 0 : isfinite(values[q]);
        uint8_t *p = img + ((size_t)y * iw + x) * 3;
        p[0] = tissue ? 225 : 255, p[1] = tissue ? 200 : 255, p[2] = tissue ? 225 : 255;
      }
    vw = W, vh = H;
  }
  nic_heatmap_opts ho = nic_heatmap_default_opts();
  ho.cmap = NIC_CMAP_JET;
  ho.alpha = 0.6f;
  if (st == NIC_OK) st = nic_heatmap_blend(img, iw, ih, vals ? vals : values, vw, vh, &ho, err);
  if (st == NIC_OK) st = nic_png_write_rgb8(path, img, iw, ih, err);
  free(img);
  free(vals);
  return st;
}
