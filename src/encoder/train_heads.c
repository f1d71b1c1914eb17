/* Heads and objectives of encoder training.
 *
 * The trunk (the encoder) is one model; each head is a separate small model
 * whose input is the N x dim embedding viewed as N x dim x 1 x 1. A step
 * runs the trunk once, then every head on its output; each head's loss
 * gradient flows back through the head (nic_model_backward with dx) and the
 * input gradients of all heads are summed into one d(loss)/d(embedding)
 * that the trunk's backward takes. Separate head models, rather than one
 * model with a concatenated output, keep heads of any shape (a hidden layer,
 * a projection, a decoder) and let a head that has no sample in a batch sit
 * out of both the computation and the optimizer step.
 *
 *   supervised   head per task: [dense hidden + ReLU] -> dense K (softmax
 *                cross-entropy) or dense 1 (MSE on the standardised value);
 *                masked so each task's loss is the mean over its samples
 *   contrastive  shared projection dense dim + ReLU -> dense proj_dim and
 *                NT-Xent between the two views of each patch (SimCLR)
 *   autoencoder  shared decoder dense 512 + ReLU -> dense 3 x 32 x 32,
 *                MSE against the patch area-averaged to 32 x 32 and
 *                normalised like the input (the engine has no upsampling
 *                layer, so the decoder is dense rather than convolutional) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encoder/train_internal.h"

#define AE_SIDE 32
#define AE_HIDDEN 512

/* A head model: dim x 1 x 1 input, an optional hidden ReLU layer, then a
 * linear layer of `out` units; layer names start with prefix. */
static nic_status build_head(nic_model **out_m, nic_ctx *ctx, int dim, int hidden, int out,
                             const char *prefix, nic_error *err) {
  nic_model *m = NULL;
  nic_status s = nic_model_create(&m, dim, 1, 1, err);
  if (s != NIC_OK) return s;
  char name[64];
  if (hidden > 0) {
    snprintf(name, sizeof name, "%s_hidden", prefix);
    nic_layer_spec h = nic_spec_dense(hidden, NIC_ACT_RELU, 0);
    h.name = name;
    if (nic_model_add(m, h, -1, -1, err) < 0) goto fail;
  }
  snprintf(name, sizeof name, "%s_out", prefix);
  nic_layer_spec o = nic_spec_dense(out, NIC_ACT_NONE, 0);
  o.name = name;
  if (nic_model_add(m, o, -1, -1, err) < 0) goto fail;
  if ((s = nic_model_init_params(m, ctx, err)) != NIC_OK) goto fail;
  *out_m = m;
  return NIC_OK;
fail:
  nic_model_free(m);
  return err && err->code != NIC_OK ? err->code : NIC_EINVAL;
}

nic_status enc_heads_build(enc_run *r, nic_error *err) {
  const nic_enc_train_opts *o = r->o;
  if (o->objective == NIC_ENC_CONTRASTIVE)
    return build_head(&r->shared, r->ctx, r->dim, r->dim, o->proj_dim, "proj", err);
  if (o->objective == NIC_ENC_AUTOENCODER)
    return build_head(&r->shared, r->ctx, r->dim, AE_HIDDEN, 3 * AE_SIDE * AE_SIDE, "decoder", err);
  for (int i = 0; i < r->nt; i++) {
    enc_task *t = &r->t[i];
    char prefix[48];
    snprintf(prefix, sizeof prefix, "head_%s", t->spec.name);
    int out = t->kind == NIC_ENC_KIND_CLASS ? t->nclass : 1;
    nic_status s = build_head(&t->head, r->ctx, r->dim, o->head_hidden, out, prefix, err);
    if (s != NIC_OK) return s;
  }
  return NIC_OK;
}

/* dst += src over n floats. */
static void add_into(float *dst, const float *src, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

static void scale(nic_tensor *t, float f) {
  int64_t n = nic_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) t->data[i] *= f;
}

/* Runs head h on r->e4, takes the loss gradient in r->g (already scaled),
 * and adds d(loss)/d(embedding) into r->dsum. */
static nic_status head_backward(enc_run *r, nic_model *h, nic_error *err) {
  nic_status s = nic_model_backward(h, r->ctx, &r->g, &r->demb, err);
  if (s == NIC_OK) add_into(r->dsum.data, r->demb.data, nic_tensor_numel(&r->dsum));
  return s;
}

/* Counts correct argmax predictions of the masked rows. */
static void count_correct(enc_task *t, const nic_tensor *logits, const int *label,
                          const float *mask) {
  int64_t n = logits->shape[0], k = logits->shape[1];
  for (int64_t i = 0; i < n; i++) {
    if (mask[i] == 0) continue;
    const float *x = logits->data + i * k;
    int64_t best = 0;
    for (int64_t c = 1; c < k; c++)
      if (x[c] > x[best]) best = c;
    t->correct += best == label[i];
    t->seen++;
  }
}

static nic_status supervised_step(enc_run *r, float *loss, nic_error *err) {
  double total = 0;
  for (int i = 0; i < r->nt; i++) {
    enc_task *t = &r->t[i];
    if (!t->active) continue;
    const float *mask = r->mask + (size_t)i * (size_t)r->cap;
    double cnt = 0;
    for (int j = 0; j < r->n; j++) cnt += mask[j];
    const nic_tensor *y = NULL;
    float l = 0;
    nic_status s = nic_model_forward(t->head, r->ctx, &r->e4, 1, &y, err);
    if (s != NIC_OK) return s;
    if (t->kind == NIC_ENC_KIND_CLASS) {
      s = nic_loss_softmax_ce(y, r->label, NULL, mask, &l, &r->g, err);
      if (s == NIC_OK) count_correct(t, y, r->label, mask);
    } else {
      s = nic_loss_mse(y, r->value, mask, &l, &r->g, err);
    }
    if (s != NIC_OK) return nic_err_prefix(err, "task %s: ", t->spec.name);
    t->loss_sum += l * cnt;
    t->loss_w += cnt;
    total += t->spec.weight * l;
    if (t->spec.weight == 0) continue;
    scale(&r->g, (float)t->spec.weight);
    if ((s = head_backward(r, t->head, err)) != NIC_OK) return s;
  }
  *loss = (float)total;
  return NIC_OK;
}

static nic_status shared_step(enc_run *r, float *loss, nic_error *err) {
  const nic_tensor *y = NULL;
  nic_status s = nic_model_forward(r->shared, r->ctx, &r->e4, 1, &y, err);
  if (s != NIC_OK) return s;
  if (r->o->objective == NIC_ENC_CONTRASTIVE)
    s = nic_enc_ntxent(y, r->o->temperature, loss, &r->g, NULL, err);
  else
    s = nic_loss_mse(y, r->target.data, NULL, loss, &r->g, err);
  if (s != NIC_OK) return s;
  /* Per-task loss accounting: every task shares the one loss. */
  for (int i = 0; i < r->nt; i++) {
    double cnt = 0;
    for (int j = 0; j < r->n; j++) cnt += r->task_of[j] == i;
    r->t[i].loss_sum += *loss * cnt;
    r->t[i].loss_w += cnt;
  }
  return head_backward(r, r->shared, err);
}

nic_status enc_heads_step(enc_run *r, const nic_tensor *e, float *loss, nic_error *err) {
  int64_t shp[4] = {e->shape[0], e->shape[1], 1, 1};
  nic_tensor_wrap(&r->e4, e->data, 4, shp);
  nic_status s = nic_tensor_alloc2(&r->dsum, e->shape[0], e->shape[1], err);
  if (s != NIC_OK) return s;
  if (r->o->objective == NIC_ENC_SUPERVISED) return supervised_step(r, loss, err);
  return shared_step(r, loss, err);
}

/* ---- contrastive views and the autoencoder target ----------------------------- */

void enc_make_views(enc_run *r, int n, uint64_t seed, int64_t epoch, int64_t first) {
  size_t per = (size_t)r->P * (size_t)r->P * 3;
  /* View v of sample j is its own stream, so the views do not depend on
   * the thread that makes them. */
#pragma omp parallel for schedule(dynamic, 4)
  for (int k = 0; k < 2 * n; k++) {
    int j = k % n, v = k / n;
    uint8_t *dst = r->pix + (size_t)k * per;
    memcpy(dst, r->raw + (size_t)j * per, per);
    nic_rng rng;
    nic_rng_seed(&rng, nic_data_sample_seed(enc_seed(seed, 8, (uint64_t)v), epoch, first + j));
    nic_error e = {0};
    (void)nic_augment_patch(&r->o->augment, &rng, dst, r->P, &e); /* fails only on bad sizes */
  }
  r->n = 2 * n;
}

nic_status enc_ae_target(enc_run *r, nic_error *err) {
  int P = r->P, f = P / AE_SIDE;
  nic_status s = nic_tensor_alloc2(&r->target, r->n, 3 * AE_SIDE * AE_SIDE, err);
  if (s != NIC_OK) return s;
  const nic_input_info *in = nic_model_input_info(r->trunk);
  float sc[3], off[3];
  for (int c = 0; c < 3; c++) {
    sc[c] = 1.0f / (255.0f * (float)(f * f) * in->std[c]);
    off[c] = -in->mean[c] / in->std[c];
  }
  for (int i = 0; i < r->n; i++) {
    const uint8_t *img = r->pix + (size_t)i * (size_t)P * (size_t)P * 3;
    float *t = r->target.data + (size_t)i * 3 * AE_SIDE * AE_SIDE;
    for (int y = 0; y < AE_SIDE; y++)
      for (int x = 0; x < AE_SIDE; x++)
        for (int c = 0; c < 3; c++) {
          int sum = 0;
          for (int dy = 0; dy < f; dy++)
            for (int dx = 0; dx < f; dx++) sum += img[((y * f + dy) * P + x * f + dx) * 3 + c];
          t[c * AE_SIDE * AE_SIDE + y * AE_SIDE + x] = (float)sum * sc[c] + off[c];
        }
  }
  return NIC_OK;
}

/* ---- NT-Xent -------------------------------------------------------------------- */

nic_status nic_enc_ntxent(const nic_tensor *z, float temperature, float *loss, nic_tensor *grad,
                          double *top1, nic_error *err) {
  const char *fn = "NT-Xent";
  if (!z || z->layout || z->ndim != 2 || !z->data)
    return nic_err(err, NIC_EINVAL, "%s: z must be a plain 2-D tensor", fn);
  int64_t R = z->shape[0], D = z->shape[1], M = R / 2;
  if (R < 2 || R % 2 || D < 1)
    return nic_err(err, NIC_EINVAL, "%s: z must have an even number of rows (two views), got %lld",
                   fn, (long long)R);
  if (!(temperature > 0)) return nic_err(err, NIC_EINVAL, "%s: temperature must be > 0", fn);
  double *u = malloc(sizeof *u * (size_t)(R * D)), *nrm = malloc(sizeof *nrm * (size_t)R);
  double *S = malloc(sizeof *S * (size_t)(R * R));
  if (!u || !nrm || !S) {
    free(u);
    free(nrm);
    free(S);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", fn);
  }
  /* u = z / max(||z||, 1e-12) (PyTorch's F.normalize) */
  for (int64_t i = 0; i < R; i++) {
    double ss = 0;
    for (int64_t d = 0; d < D; d++) ss += (double)z->data[i * D + d] * z->data[i * D + d];
    nrm[i] = fmax(sqrt(ss), 1e-12);
    for (int64_t d = 0; d < D; d++) u[i * D + d] = z->data[i * D + d] / nrm[i];
  }
  double inv_t = 1.0 / temperature;
  for (int64_t i = 0; i < R; i++)
    for (int64_t k = i; k < R; k++) {
      double dot = 0;
      for (int64_t d = 0; d < D; d++) dot += u[i * D + d] * u[k * D + d];
      S[i * R + k] = S[k * R + i] = dot * inv_t;
    }
  /* Row i: log-softmax over k != i; S becomes G = (softmax - onehot) / R. */
  double total = 0;
  int64_t hits = 0;
  for (int64_t i = 0; i < R; i++) {
    int64_t p = i < M ? i + M : i - M, arg = -1;
    double mx = -INFINITY, se = 0;
    for (int64_t k = 0; k < R; k++)
      if (k != i && S[i * R + k] > mx) mx = S[i * R + k], arg = k;
    for (int64_t k = 0; k < R; k++)
      if (k != i) se += exp(S[i * R + k] - mx);
    double lse = mx + log(se);
    total += lse - S[i * R + p];
    hits += arg == p;
    /* the row is needed again for the gradient: store it in place */
    for (int64_t k = 0; k < R; k++)
      S[i * R + k] = k == i ? 0 : (exp(S[i * R + k] - lse) - (k == p)) / (double)R;
  }
  if (loss) *loss = (float)(total / (double)R);
  if (top1) *top1 = (double)hits / (double)R;
  nic_status s = NIC_OK;
  if (grad && (s = nic_tensor_alloc2(grad, R, D, err)) == NIC_OK) {
    /* s_ik = u_i.u_k / t is symmetric, so dL/du_i = sum_k (G_ik + G_ki) u_k / t;
     * through the normalisation dL/dz_i = (g - (g.u_i) u_i) / ||z_i||. */
    double *g = malloc(sizeof *g * (size_t)D);
    if (!g) {
      s = nic_err(err, NIC_ENOMEM, "%s: out of memory", fn);
    } else {
      for (int64_t i = 0; i < R; i++) {
        memset(g, 0, sizeof *g * (size_t)D);
        for (int64_t k = 0; k < R; k++) {
          double c = (S[i * R + k] + S[k * R + i]) * inv_t;
          if (c == 0) continue;
          for (int64_t d = 0; d < D; d++) g[d] += c * u[k * D + d];
        }
        double gu = 0;
        for (int64_t d = 0; d < D; d++) gu += g[d] * u[i * D + d];
        for (int64_t d = 0; d < D; d++)
          grad->data[i * D + d] = (float)((g[d] - gu * u[i * D + d]) / nrm[i]);
      }
      free(g);
    }
  }
  free(u);
  free(nrm);
  free(S);
  return s;
}
