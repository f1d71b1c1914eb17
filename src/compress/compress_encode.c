/* Encoding batches of patches: the encoder workers, the fused uint8 ->
 * model-input step, the forward pass, and the 8 orientations of NIC's
 * augmentation.
 *
 * Orientations are applied to the prepared input tensor rather than to
 * the 8-bit patches: a rotation or flip only permutes pixels, and the
 * model's leading 2x2 average pool (folded into nic_model_prepare_rgb8)
 * maps aligned 2x2 blocks onto aligned 2x2 blocks, summing the same four
 * integers either way. So permuting the prepared input gives bit for bit
 * the input of the transformed patch, at a quarter of the pixels. */
#include <stdlib.h>
#include <string.h>

#include "compress/compress_internal.h"

int32_t nic__orient_source(int o, int q, int i, int j) {
  /* out = rot90^k(flip?(p)); one counter-clockwise quarter turn reads
   * out[i][j] = in[j][q-1-i], so walk the turns back to the flipped image. */
  int r = i, col = j;
  for (int k = 0; k < (o & 3); k++) {
    int t = r;
    r = col;
    col = q - 1 - t;
  }
  if (o >= 4) col = q - 1 - col; /* fliplr: f[r][c] = p[r][q-1-c] */
  return (int32_t)(r * q + col);
}

/* The permutation tables for the q x q prepared input. */
static nic_status make_perm(nic_compressor *c, nic_error *err) {
  size_t qq = (size_t)c->q * (size_t)c->q;
  c->perm = malloc(sizeof(int32_t) * NIC_FEATURES_ORIENTATIONS * qq);
  if (!c->perm) return nic_err(err, NIC_ENOMEM, "out of memory for orientation tables");
  for (int o = 0; o < NIC_FEATURES_ORIENTATIONS; o++)
    for (int i = 0; i < c->q; i++)
      for (int j = 0; j < c->q; j++)
        c->perm[o * qq + (size_t)i * c->q + j] = nic__orient_source(o, c->q, i, j);
  return NIC_OK;
}

/* The prepared input's side, found by preparing one blank patch. */
static nic_status find_input_side(nic_compressor *c, nic_encoder_worker *w, nic_error *err) {
  uint8_t *blank = calloc((size_t)c->P * c->P * 3, 1);
  if (!blank) return nic_err(err, NIC_ENOMEM, "out of memory");
  int64_t P = c->P;
  nic_status s =
      nic_model_prepare_rgb8(w->model, blank, 1, c->P, P * 3, P * P * 3, &w->x, &w->start, err);
  free(blank);
  if (s != NIC_OK) return s;
  if (w->x.ndim != 4 || w->x.shape[2] != w->x.shape[3])
    return nic_err(err, NIC_EUNSUPPORTED, "the encoder's input is not a square image");
  c->q = (int)w->x.shape[2];
  return NIC_OK;
}

nic_status nic__worker_init(nic_compressor *c, nic_encoder_worker *w, const char *path, int threads,
                            nic_error *err) {
  w->x = (nic_tensor)NIC_TENSOR_INIT;
  w->xo = (nic_tensor)NIC_TENSOR_INIT;
  nic_status s = NIC_OK;
  if (!w->ctx) { /* a context of its own */
    nic_ctx_opts co = nic_ctx_default_opts();
    co.threads = threads;
    co.backend = nic_ctx_backend_name(c->ctx);
    s = nic_ctx_create(&w->ctx, &co, err);
    w->own_ctx = s == NIC_OK;
  }
  if (s == NIC_OK) s = nic_model_load(&w->model, path, err);
  if (s == NIC_OK) s = nic_model_optimize_inference(w->model, err);
  if (s == NIC_OK && !c->q) {
    s = find_input_side(c, w, err);
    if (s == NIC_OK && c->o.orientations == NIC_FEATURES_ORIENTATIONS) s = make_perm(c, err);
  }
  if (s != NIC_OK) return s;
  int O = c->o.orientations == NIC_FEATURES_ORIENTATIONS;
  w->feats = malloc(sizeof(float) * (size_t)c->o.batch * c->C);
  if (O) w->orient = malloc(sizeof(float) * (size_t)c->o.batch * NIC_FEATURES_ORIENTATIONS * c->C);
  if (!w->feats || (O && !w->orient)) return nic_err(err, NIC_ENOMEM, "out of memory");
  return NIC_OK;
}

void nic__worker_free(nic_encoder_worker *w) {
  nic_tensor_free(&w->x);
  nic_tensor_free(&w->xo);
  nic_model_free(w->model); /* before its context: it holds backend state */
  if (w->own_ctx) nic_ctx_free(w->ctx);
  free(w->feats);
  free(w->orient);
  memset(w, 0, sizeof *w);
}

/* xo = orientation o of every image and channel of x (N x ch x q x q). */
static void transform(const nic_tensor *x, nic_tensor *xo, const int32_t *perm) {
  int64_t q = x->shape[2], qq = q * q, planes = x->shape[0] * x->shape[1];
  for (int64_t p = 0; p < planes; p++) {
    const float *src = x->data + p * qq;
    float *dst = xo->data + p * qq;
    for (int64_t k = 0; k < qq; k++) dst[k] = src[perm[k]];
  }
}

/* Runs the model on `in` and copies the n x C output rows to dst with
 * `stride` floats between rows. */
static nic_status forward_rows(const nic_compressor *c, nic_encoder_worker *w, const nic_tensor *in,
                               int n, float *dst, int64_t stride, nic_error *err) {
  const nic_tensor *y = NULL;
  nic_status s = nic_model_forward_from(w->model, w->ctx, in, w->start, 0, &y, err);
  if (s != NIC_OK) return s;
  if (nic_tensor_numel(y) != (int64_t)n * c->C)
    return nic_err(err, NIC_EINVAL, "the encoder returned %lld values for %d patches of %d",
                   (long long)nic_tensor_numel(y), n, c->C);
  for (int i = 0; i < n; i++)
    memcpy(dst + (int64_t)i * stride, y->data + (int64_t)i * c->C, sizeof(float) * (size_t)c->C);
  return NIC_OK;
}

nic_status nic__encode_batch(const nic_compressor *c, nic_encoder_worker *w, const uint8_t *pix,
                             int n, nic_error *err) {
  int64_t P = c->P, C = c->C, OC = NIC_FEATURES_ORIENTATIONS * C;
  nic_status s =
      nic_model_prepare_rgb8(w->model, pix, n, c->P, P * 3, P * P * 3, &w->x, &w->start, err);
  if (s == NIC_OK) s = forward_rows(c, w, &w->x, n, w->feats, C, err);
  if (s != NIC_OK || c->o.orientations != NIC_FEATURES_ORIENTATIONS) return s;
  /* Orientation 0 is the plain patch: the rows just computed. */
  for (int i = 0; i < n; i++)
    memcpy(w->orient + i * OC, w->feats + i * C, sizeof(float) * (size_t)C);
  s = nic_tensor_alloc(&w->xo, w->x.ndim, w->x.shape, err);
  size_t qq = (size_t)c->q * c->q;
  for (int o = 1; o < NIC_FEATURES_ORIENTATIONS && s == NIC_OK; o++) {
    transform(&w->x, &w->xo, c->perm + o * qq);
    s = forward_rows(c, w, &w->xo, n, w->orient + o * C, OC, err);
  }
  return s;
}
