/* Encoder training and probing (nic_encoder_train, nic_probe) on small
 * synthetic patch folders the test writes itself: task specs, the NT-Xent
 * gradient, logistic regression, resnet-small, a two-task run that learns,
 * exact resumption, the model card, the probe, and the unsupervised
 * objectives. Sizes shrink under the sanitizers (NIC_SANITIZED=1). */
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "nic/encoder.h"
#include "nic/encoder_train.h"
#include "nic/features.h"
#include "testutil.h"

static const char *tmp;
static int sanitized;

/* ---- synthetic datasets ----------------------------------------------------------- */

static void write_png(const char *path, const uint8_t *px, int w, int h) {
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = (png_uint_32)w;
  img.height = (png_uint_32)h;
  img.format = PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&img, path, 0, px, 0, NULL)) {
    fprintf(stderr, "cannot write %s: %s\n", path, img.message);
    exit(1);
  }
}

static void mkdir_p(const char *path) {
  if (mkdir(path, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "mkdir %s: %s\n", path, strerror(errno));
    exit(1);
  }
}

#define SIDE 32

/* A 32 x 32 patch. kind 0 (colour): class 0 reddish, 1 bluish, any
 * texture. kind 1 (texture): class 0 smooth, 1 a 2-px checkerboard, any
 * colour. A little noise on everything. */
static void draw(uint8_t *px, int kind, int cls, nic_rng *r) {
  int base[3];
  for (int c = 0; c < 3; c++) base[c] = 90 + (int)nic_rng_below(r, 80);
  if (kind == 0) {
    base[0] = cls ? 70 : 200;
    base[2] = cls ? 200 : 70;
  }
  int checks = kind == 1 ? cls : (int)nic_rng_below(r, 2);
  for (int y = 0; y < SIDE; y++)
    for (int x = 0; x < SIDE; x++)
      for (int c = 0; c < 3; c++) {
        int v = base[c] + (int)nic_rng_below(r, 21) - 10;
        if (checks && ((x / 2 + y / 2) & 1)) v -= 50;
        px[(y * SIDE + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
}

/* root/<split>/<class>/NNN.png with n[split] patches per class. */
static void make_folder(const char *root, int kind, const int n[3], uint64_t seed) {
  static const char *const splits[3] = {"train", "valid", "test"};
  char path[1024];
  uint8_t px[SIDE * SIDE * 3];
  nic_rng r;
  nic_rng_seed(&r, seed);
  mkdir_p(root);
  for (int s = 0; s < 3; s++) {
    if (n[s] == 0) continue;
    snprintf(path, sizeof path, "%s/%s", root, splits[s]);
    mkdir_p(path);
    for (int cls = 0; cls < 2; cls++) {
      snprintf(path, sizeof path, "%s/%s/%d", root, splits[s], cls);
      mkdir_p(path);
      for (int i = 0; i < n[s]; i++) {
        draw(px, kind, cls, &r);
        snprintf(path, sizeof path, "%s/%s/%d/%03d.png", root, splits[s], cls, i);
        write_png(path, px, SIDE, SIDE);
      }
    }
  }
}

static char colour_dir[512], texture_dir[512];

static void make_datasets(void) {
  int n[3] = {sanitized ? 16 : 24, 12, 24};
  snprintf(colour_dir, sizeof colour_dir, "%s/colour", tmp);
  snprintf(texture_dir, sizeof texture_dir, "%s/texture", tmp);
  make_folder(colour_dir, 0, n, 11);
  make_folder(texture_dir, 1, n, 12);
}

/* ---- small helpers ------------------------------------------------------------------ */

static json_object *read_json(const char *path) {
  json_object *o = json_object_from_file(path);
  if (!o) fprintf(stderr, "cannot read JSON %s\n", path);
  return o;
}

/* o[a][b]... for object keys; NULL when absent. */
static json_object *jget(json_object *o, const char *key) {
  json_object *v = NULL;
  return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static double jnum(json_object *o) {
  return o && (json_object_is_type(o, json_type_double) || json_object_is_type(o, json_type_int))
             ? json_object_get_double(o)
             : NAN;
}

static nic_enc_task task(const char *spec) {
  nic_enc_task t;
  nic_error err = {0};
  if (nic_enc_task_parse(spec, &t, &err) != NIC_OK) {
    fprintf(stderr, "task '%s': %s\n", spec, err.msg);
    exit(1);
  }
  return t;
}

/* Options for quick runs: no augmentation, small batches. */
static nic_enc_train_opts quick_opts(const char *out) {
  nic_enc_train_opts o = nic_enc_train_default_opts();
  o.output = out;
  o.batch = 16;
  o.epochs = 2;
  o.augment = nic_augment_none();
  o.loader_threads = 1;
  o.command_line = "test_encoder_train";
  return o;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_task_parse(void) {
  nic_enc_task t;
  nic_error err = {0};
  CHECK_OK(
      nic_enc_task_parse("pcam=/data/pcam,mpp=0.972,weight=2,kind=class,max-train=100", &t, &err));
  CHECK(!strcmp(t.name, "pcam") && !strcmp(t.path, "/data/pcam"));
  CHECK_NEAR(t.mpp, 0.972, 1e-12);
  CHECK_NEAR(t.weight, 2, 0);
  CHECK(t.kind == NIC_ENC_KIND_CLASS && t.max_train == 100 && t.max_valid == 0);
  CHECK(t.balanced == -1 && fabs(t.valid_fraction - 0.1) < 1e-12);
  CHECK_OK(
      nic_enc_task_parse("n_1=a=b.csv,kind=regression,valid=0.2,balanced=1,holdout=0.3", &t, &err));
  CHECK(!strcmp(t.path, "a=b.csv") && t.kind == NIC_ENC_KIND_REGRESSION && t.balanced == 1);
  CHECK(t.valid_fraction == 0.2 && t.holdout == 0.3);
  /* bad specs, each with a message naming the problem */
  static const struct {
    const char *spec, *says;
  } bad[] = {{"nopath", "NAME=PATH"},
             {"=x", "task name"},
             {"bad name=x", "task name"},
             {"t=", "no dataset path"},
             {"t=x,kind=maybe", "kind must be"},
             {"t=x,weight=-1", "weight"},
             {"t=x,mpp=0", "mpp"},
             {"t=x,valid=1.5", "valid"},
             {"t=x,holdout=1", "holdout"},
             {"t=x,max-train=ten", "max-train"},
             {"t=x,colour=red", "unknown option 'colour'"},
             {"t=x,weight", "key=value"},
             {"t=x,,weight=1", "empty"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err = (nic_error){0};
    nic_status s = nic_enc_task_parse(bad[i].spec, &t, &err);
    CHECK(s == NIC_EINVAL);
    if (!strstr(err.msg, bad[i].says))
      fprintf(stderr, "spec '%s': message '%s' lacks '%s'\n", bad[i].spec, err.msg, bad[i].says);
    CHECK(strstr(err.msg, bad[i].says) != NULL);
  }
}

/* NT-Xent's analytic gradient against central differences, and its value
 * on a case worked out by hand. */
static void test_ntxent(void) {
  nic_tensor z = NIC_TENSOR_INIT, g = NIC_TENSOR_INIT;
  nic_error err = {0};
  CHECK_OK(nic_tensor_alloc2(&z, 6, 5, &err));
  nic_test_fill_uniform(&z, 3, -1, 1);
  float loss = 0, lp, lm;
  double top1 = 0;
  const float t = 0.5f;
  CHECK_OK(nic_enc_ntxent(&z, t, &loss, &g, &top1, &err));
  double worst = 0;
  for (int64_t i = 0; i < 30; i++) {
    float keep = z.data[i], h = 1e-3f;
    z.data[i] = keep + h;
    nic_enc_ntxent(&z, t, &lp, NULL, NULL, &err);
    z.data[i] = keep - h;
    nic_enc_ntxent(&z, t, &lm, NULL, NULL, &err);
    z.data[i] = keep;
    double num = ((double)lp - lm) / (2.0 * h), ana = g.data[i];
    double rel = fabs(num - ana) / fmax(1e-2, fabs(num) + fabs(ana));
    worst = fmax(worst, rel);
  }
  printf("  NT-Xent gradient: max relative error %.2e\n", worst);
  CHECK(worst < 2e-2);
  /* Scaling a row does not change the loss (it is normalised) and its
   * gradient is orthogonal to the row. */
  double dotp = 0;
  for (int d = 0; d < 5; d++) dotp += (double)g.data[d] * z.data[d];
  CHECK(fabs(dotp) < 1e-5);
  /* Two views, two patches, identical partners and orthogonal pairs:
   * s(i, partner) = 1, s(i, others) = 0: loss = -1/t + log(e^{1/t} + 2). */
  float v[4][2] = {{1, 0}, {0, 1}, {1, 0}, {0, 1}};
  nic_tensor w = NIC_TENSOR_INIT;
  int64_t shp[2] = {4, 2};
  nic_tensor_wrap(&w, &v[0][0], 2, shp);
  CHECK_OK(nic_enc_ntxent(&w, t, &loss, NULL, &top1, &err));
  CHECK_NEAR(loss, -1.0 / t + log(exp(1.0 / t) + 2.0), 1e-5);
  CHECK_NEAR(top1, 1.0, 0);
  /* odd rows are refused */
  nic_tensor_wrap(&w, &v[0][0], 2, (int64_t[]){3, 2});
  CHECK(nic_enc_ntxent(&w, t, &loss, NULL, NULL, &err) == NIC_EINVAL);
  nic_tensor_free(&z);
  nic_tensor_free(&g);
}

/* Logistic regression: separable blobs are separated; probabilities are
 * normalised; stronger penalties shrink the weights. */
static void test_logreg(void) {
  const int n = 300, d = 4, k = 3;
  float *x = malloc(sizeof *x * n * d);
  int *y = malloc(sizeof *y * n);
  double *p = malloc(sizeof *p * n * k);
  nic_rng r;
  nic_rng_seed(&r, 5);
  for (int i = 0; i < n; i++) {
    y[i] = i % k;
    for (int j = 0; j < d; j++)
      x[i * d + j] = (float)(nic_rng_normal(&r) * 0.5 + (j == y[i] ? 3 : 0) + 10);
  }
  nic_logreg lr, weak;
  nic_error err = {0};
  CHECK_OK(nic_logreg_fit(x, y, n, d, k, 1.0, &lr, &err));
  nic_logreg_predict(&lr, x, n, p);
  int hit = 0;
  double sum_err = 0;
  for (int i = 0; i < n; i++) {
    int best = 0;
    double s = 0;
    for (int c = 0; c < k; c++) {
      s += p[i * k + c];
      if (p[i * k + c] > p[i * k + best]) best = c;
    }
    sum_err = fmax(sum_err, fabs(s - 1));
    hit += best == y[i];
  }
  CHECK(hit >= n - 3);
  CHECK(sum_err < 1e-9);
  CHECK_OK(nic_logreg_fit(x, y, n, d, k, 1e-4, &weak, &err));
  double nw = 0, ns = 0;
  for (int c = 0; c < k; c++)
    for (int j = 0; j < d; j++) {
      nw += weak.w[c * (d + 1) + j] * weak.w[c * (d + 1) + j];
      ns += lr.w[c * (d + 1) + j] * lr.w[c * (d + 1) + j];
    }
  CHECK(nw < ns);
  nic_logreg bad;
  CHECK(nic_logreg_fit(x, y, n, d, 1, 1.0, &bad, &err) == NIC_EINVAL && !bad.w);
  nic_logreg_free(&lr);
  nic_logreg_free(&weak);
  free(x);
  free(y);
  free(p);
}

static void test_resnet_small(void) {
  nic_model *m = NULL;
  nic_error err = {0};
  nic_ctx *ctx = nic_test_ctx(1);
  CHECK_OK(nic_encoder_build_arch(&m, "resnet-small", 32, &err));
  if (!m) {
    nic_ctx_free(ctx);
    return;
  }
  CHECK_OK(nic_model_init_params(m, ctx, &err));
  int nd;
  int64_t shp[NIC_MAX_DIMS];
  nic_model_node_shape(m, nic_model_num_nodes(m), &nd, shp);
  CHECK(nd == 2 && shp[1] == 32);
  CHECK(nic_model_input_info(m)->mpp == 0.5 && nic_model_input_info(m)->patch_size == 128);
  int64_t params = nic_model_num_trainable(m);
  printf("  resnet-small: %lld parameters, %.0f MFLOP/patch\n", (long long)params,
         (double)nic_model_flops(m) / 1e6);
  CHECK(params > 1000000 && params < 4000000);
  nic_param *g = nic_model_param(m, "s1b1_c2_bn.gamma");
  CHECK(g && g->value.data[0] == 0); /* residual branches start silent */
  /* a training step runs: forward, backward through the residual adds */
  uint8_t *px = calloc(4 * 128 * 128 * 3, 1);
  for (int i = 0; i < 4 * 128 * 128 * 3; i++) px[i] = (uint8_t)(i * 7);
  nic_tensor x = NIC_TENSOR_INIT, dy = NIC_TENSOR_INIT;
  int start = 1;
  const nic_tensor *y = NULL;
  CHECK_OK(nic_model_prepare_rgb8(m, px, 4, 128, 128 * 3, 128 * 128 * 3, &x, &start, &err));
  CHECK(start == 2); /* the 2x2 pool was fused */
  CHECK_OK(nic_model_forward_from(m, ctx, &x, start, 1, &y, &err));
  CHECK_OK(nic_tensor_alloc2(&dy, 4, 32, &err));
  nic_tensor_fill(&dy, 0.1f);
  CHECK_OK(nic_model_backward(m, ctx, &dy, NULL, &err));
  nic_param *w = nic_model_param(m, "stem.weight");
  double gsum = 0;
  for (int64_t i = 0; i < nic_tensor_numel(&w->grad); i++) gsum += fabs(w->grad.data[i]);
  CHECK(gsum > 0);
  nic_model *none = NULL;
  CHECK(nic_encoder_build_arch(&none, "vgg", 32, &err) == NIC_EINVAL && !none);
  free(px);
  nic_tensor_free(&x);
  nic_tensor_free(&dy);
  nic_model_free(m);
  nic_ctx_free(ctx);
}

/* Two tasks, a few epochs: validation accuracy of both rises well above
 * chance, and the model card records the run. */
static void test_two_tasks(void) {
  char out[600], card[700], spec1[600], spec2[600];
  snprintf(out, sizeof out, "%s/mt.safetensors", tmp);
  snprintf(spec1, sizeof spec1, "colour=%s", colour_dir);
  snprintf(spec2, sizeof spec2, "texture=%s,weight=2", texture_dir);
  nic_enc_task tasks[2] = {task(spec1), task(spec2)};
  nic_enc_train_opts o = quick_opts(out);
  o.name = "two-task-test";
  nic_ctx *ctx = nic_test_ctx(1);
  nic_error err = {0};
  nic_status s = nic_encoder_train(ctx, tasks, 2, &o, &err);
  if (s != NIC_OK) fprintf(stderr, "train: %s\n", err.msg);
  CHECK(s == NIC_OK);
  nic_enc_card_path(out, card, sizeof card);
  CHECK(!strcmp(card + strlen(card) - 12, "mt.card.json"));
  json_object *c = read_json(card);
  json_object *hist = jget(c, "history");
  CHECK(hist && json_object_array_length(hist) == 2);
  double best_col = 0, best_tex = 0;
  for (size_t e = 0; hist && e < json_object_array_length(hist); e++) {
    json_object *h = jget(json_object_array_get_idx(hist, e), "tasks");
    double a = jnum(jget(jget(h, "colour"), "accuracy")),
           b = jnum(jget(jget(h, "texture"), "accuracy"));
    printf("  epoch %zu: colour accuracy %.3f, texture accuracy %.3f\n", e + 1, a, b);
    best_col = fmax(best_col, a);
    best_tex = fmax(best_tex, b);
  }
  CHECK(best_col >= 0.8);
  CHECK(best_tex >= 0.7);
  /* the card's required fields */
  CHECK(!strcmp(json_object_get_string(jget(c, "encoder_name")), "two-task-test"));
  CHECK(!strcmp(json_object_get_string(jget(jget(c, "architecture"), "name")), "nic"));
  CHECK(jnum(jget(jget(c, "architecture"), "embed_dim")) == 128);
  CHECK(jnum(jget(jget(c, "input"), "mpp")) == 0.5);
  CHECK(jnum(jget(jget(c, "input"), "patch_size")) == 128);
  CHECK(json_object_array_length(jget(jget(c, "input"), "mean")) == 3);
  json_object *t0 = json_object_array_get_idx(jget(c, "tasks"), 0);
  CHECK(!strcmp(json_object_get_string(jget(t0, "dataset")), colour_dir));
  CHECK(!strcmp(json_object_get_string(jget(t0, "kind")), "classification"));
  CHECK(jnum(jget(t0, "train_items")) == (sanitized ? 32 : 48));
  CHECK(jnum(jget(t0, "valid_items")) == 24);
  CHECK(jnum(jget(json_object_array_get_idx(jget(c, "tasks"), 1), "weight")) == 2);
  CHECK(jget(jget(c, "training"), "augmentation") != NULL);
  CHECK(jget(jget(jget(c, "training"), "optimizer"), "lr") != NULL);
  CHECK(jnum(jget(c, "best_epoch")) >= 1);
  CHECK(jget(jget(c, "metrics"), "tasks") != NULL);
  CHECK(!strcmp(json_object_get_string(jget(c, "command_line")), "test_encoder_train"));
  CHECK(jget(c, "source_revision") && jget(c, "nic_version") && jget(c, "written"));
  CHECK(jnum(jget(json_object_array_get_idx(hist, 0), "patches_per_s")) > 0);
  json_object_put(c);
  /* the encoder: a plain NIC encoder with the card in its metadata */
  nic_model *m = NULL;
  CHECK_OK(nic_model_load(&m, out, &err));
  if (m) {
    const char *mc = nic_model_get_meta(m, "model_card");
    CHECK(mc && strstr(mc, "\"history\""));
    CHECK(nic_model_param(m, "conv4.weight") && !nic_model_param(m, "head_colour_out.weight"));
    nic_model_free(m);
  }
  /* the checkpoint holds the heads as well, and the optimizer's state */
  char ck[700];
  nic_enc_checkpoint_path(out, ck, sizeof ck);
  nic_param *ext = NULL;
  int next = 0;
  CHECK_OK(nic_model_load_extra(&m, ck, "optim/", &ext, &next, &err));
  CHECK(next > 0);
  nic_params_free(ext, next);
  if (m) {
    CHECK(nic_model_param(m, "head_colour_out.weight") &&
          nic_model_param(m, "head_texture_out.bias"));
    CHECK(nic_model_get_meta(m, "train_state") != NULL);
    nic_model_free(m);
  }
  nic_ctx_free(ctx);
}

/* The float tensors of two arrays of params are identical (same names). */
static int same_tensors(nic_param *const *pa, int np, nic_param *(*find)(void *, const char *),
                        void *other) {
  for (int i = 0; i < np; i++) {
    nic_param *q = find(other, pa[i]->name);
    if (!q || nic_tensor_numel(&q->value) != nic_tensor_numel(&pa[i]->value) ||
        memcmp(q->value.data, pa[i]->value.data,
               sizeof(float) * (size_t)nic_tensor_numel(&q->value)))
      return 0;
  }
  return 1;
}

static nic_param *find_model_param(void *m, const char *name) {
  return nic_model_param(m, name);
}

typedef struct extras {
  nic_param *p;
  int n;
} extras;

static nic_param *find_extra_param(void *e, const char *name) {
  extras *x = e;
  for (int i = 0; i < x->n; i++)
    if (!strcmp(x->p[i].name, name)) return &x->p[i];
  return NULL;
}

/* Float parameters of two model files are identical, and so are their
 * optimizer states (checkpoints). */
static int same_params(const char *a, const char *b) {
  nic_model *ma = NULL, *mb = NULL;
  extras ea = {NULL, 0}, eb = {NULL, 0};
  nic_error err = {0};
  int same = nic_model_load_extra(&ma, a, "optim/", &ea.p, &ea.n, &err) == NIC_OK &&
             nic_model_load_extra(&mb, b, "optim/", &eb.p, &eb.n, &err) == NIC_OK;
  int np = 0, nq = 0;
  nic_param **pa = same ? nic_model_params(ma, &np) : NULL;
  if (same) nic_model_params(mb, &nq);
  same = same && np == nq && ea.n == eb.n && same_tensors(pa, np, find_model_param, mb);
  for (int i = 0; same && i < ea.n; i++) {
    nic_param *pe = &ea.p[i];
    same = same_tensors(&pe, 1, find_extra_param, &eb);
  }
  nic_params_free(ea.p, ea.n);
  nic_params_free(eb.p, eb.n);
  nic_model_free(ma);
  nic_model_free(mb);
  return same;
}

/* Interrupted after 2 epochs and resumed to 3 = 3 epochs in one go, to the
 * bit, with a stateless optimizer (SGD without momentum); test_resume_adam
 * does the same with optimizer state. */
static void test_resume(void) {
  char full[600], part[600], spec[600], ck1[700], ck2[700];
  snprintf(full, sizeof full, "%s/full.safetensors", tmp);
  snprintf(part, sizeof part, "%s/part.safetensors", tmp);
  snprintf(spec, sizeof spec, "colour=%s,max-train=16,max-valid=8", colour_dir);
  nic_enc_task t = task(spec);
  nic_enc_train_opts o = quick_opts(full);
  o.batch = 8;
  o.epochs = 3;
  o.opt = nic_opt_default(NIC_OPT_SGD, 0.01f);
  o.opt.momentum = 0;
  o.schedule = NIC_SCHED_CONSTANT;
  o.augment = nic_augment_default(); /* augmentation streams must resume too */
  nic_ctx *ctx = nic_test_ctx(1);
  nic_error err = {0};
  CHECK_OK(nic_encoder_train(ctx, &t, 1, &o, &err));
  o.output = part;
  o.epochs = 2;
  CHECK_OK(nic_encoder_train(ctx, &t, 1, &o, &err));
  o.epochs = 3;
  o.resume = 1;
  o.seed = 99; /* ignored: the checkpoint's seed wins */
  CHECK_OK(nic_encoder_train(ctx, &t, 1, &o, &err));
  nic_enc_checkpoint_path(full, ck1, sizeof ck1);
  nic_enc_checkpoint_path(part, ck2, sizeof ck2);
  CHECK(same_params(ck1, ck2));
  char card[700];
  nic_enc_card_path(part, card, sizeof card);
  json_object *c = read_json(card);
  CHECK(jnum(jget(jget(c, "training"), "epochs_run")) == 3);
  CHECK(json_object_array_length(jget(c, "history")) == 3);
  json_object_put(c);
  /* resuming a finished run does nothing and succeeds */
  CHECK_OK(nic_encoder_train(ctx, &t, 1, &o, &err));
  CHECK(same_params(ck1, ck2));
  /* a checkpoint of other tasks is refused */
  char spec2[600];
  snprintf(spec2, sizeof spec2, "other=%s,max-train=24", colour_dir);
  nic_enc_task t2 = task(spec2);
  err = (nic_error){0};
  CHECK(nic_encoder_train(ctx, &t2, 1, &o, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "different run") != NULL);
  /* no checkpoint at all */
  char none[600];
  snprintf(none, sizeof none, "%s/none.safetensors", tmp);
  o.output = none;
  CHECK(nic_encoder_train(ctx, &t, 1, &o, &err) != NIC_OK);
  nic_ctx_free(ctx);
}

/* Rewrites checkpoint ck with its optimizer state changed: drop_record
 * removes the train_state's "optimizer" record (as checkpoints written
 * before it existed), keep_tensors (>= 0) keeps only that many optimizer
 * tensors. */
static void edit_checkpoint(const char *ck, int drop_record, int keep_tensors) {
  nic_model *m = NULL;
  nic_param *ext = NULL;
  int next = 0;
  nic_error err = {0};
  CHECK_OK(nic_model_load_extra(&m, ck, "optim/", &ext, &next, &err));
  if (!m) return;
  if (drop_record) {
    const char *text = nic_model_get_meta(m, "train_state");
    json_object *st = json_tokener_parse(text);
    json_object_object_del(st, "optimizer");
    nic_model_set_meta(m, "train_state", json_object_to_json_string(st));
    json_object_put(st);
  }
  nic_save_opts so = {NIC_STORE_F32, ext, keep_tensors >= 0 ? keep_tensors : next};
  if (drop_record) so.nextra = 0;
  CHECK_OK(nic_model_save_opts(m, ck, &so, &err));
  nic_params_free(ext, next);
  nic_model_free(m);
}

/* Copies file a to b. */
static void copy_file(const char *a, const char *b) {
  FILE *f = fopen(a, "rb"), *g = fopen(b, "wb");
  CHECK(f && g);
  char buf[65536];
  size_t n;
  while (f && g && (n = fread(buf, 1, sizeof buf, f)) > 0) CHECK(fwrite(buf, 1, n, g) == n);
  if (f) fclose(f);
  if (g) fclose(g);
}

/* With AdamW (moments, step counts, decoupled decay, a cosine schedule)
 * and two heads, a run interrupted after epoch 1 and resumed to 3 equals
 * the uninterrupted run to the bit: the checkpoint carries the optimizer's
 * state. Checkpoints with missing or mismatched optimizer state are
 * refused, or (no state at all: older checkpoints) resumed afresh. */
static void test_resume_adam(void) {
  char full[600], part[600], spec1[600], spec2[600], ck1[700], ck2[700], saved[720];
  snprintf(full, sizeof full, "%s/afull.safetensors", tmp);
  snprintf(part, sizeof part, "%s/apart.safetensors", tmp);
  snprintf(spec1, sizeof spec1, "colour=%s,max-train=16,max-valid=8", colour_dir);
  snprintf(spec2, sizeof spec2, "texture=%s,max-train=16,max-valid=8", texture_dir);
  nic_enc_task t[2] = {task(spec1), task(spec2)};
  nic_enc_train_opts o = quick_opts(full);
  o.batch = 8;
  o.epochs = 3;
  o.opt = nic_opt_default(NIC_OPT_ADAMW, 1e-3f);
  o.opt.weight_decay = 1e-2f;
  o.schedule = NIC_SCHED_COSINE;
  o.augment = nic_augment_default();
  nic_ctx *ctx = nic_test_ctx(1);
  nic_error err = {0};
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  o.output = part;
  o.epochs = 1;
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  nic_enc_checkpoint_path(full, ck1, sizeof ck1);
  nic_enc_checkpoint_path(part, ck2, sizeof ck2);
  snprintf(saved, sizeof saved, "%s.epoch1", ck2);
  copy_file(ck2, saved);
  /* the checkpoint holds both moments of every trained param, and the steps */
  nic_model *m = NULL;
  nic_param *ext = NULL;
  int next = 0;
  CHECK_OK(nic_model_load_extra(&m, ck2, "optim/", &ext, &next, &err));
  if (m) {
    int np = 0, trainable = 0;
    nic_param **ps = nic_model_params(m, &np);
    for (int i = 0; i < np; i++) trainable += ps[i]->trainable;
    CHECK(next == 2 * trainable);
    nic_param *w = nic_model_param(m, "conv1.weight");
    int found = 0;
    for (int i = 0; i < next; i++)
      if (!strcmp(ext[i].name, "optim/conv1.weight/v")) {
        found = 1;
        CHECK(w && nic_tensor_same_shape(&ext[i].value, &w->value));
        CHECK(ext[i].value.data[0] > 0); /* a second moment after some steps */
      }
    CHECK(found);
    const char *text = nic_model_get_meta(m, "train_state");
    CHECK(text && strstr(text, "\"optimizer\":{\"kind\":\"adamw\",\"slots\":\"mv\""));
    nic_params_free(ext, next);
    nic_model_free(m);
  }
  /* a plain load refuses the extra tensors */
  CHECK(nic_model_load(&m, ck2, &err) == NIC_EFORMAT && strstr(err.msg, "unexpected tensor"));
  o.epochs = 3;
  o.resume = 1;
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  CHECK(same_params(ck1, ck2));
  /* another optimizer kind is refused */
  copy_file(saved, ck2);
  o.opt = nic_opt_default(NIC_OPT_SGD, 0.01f);
  err = (nic_error){0};
  CHECK(nic_encoder_train(ctx, t, 2, &o, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "optimizer adamw") && strstr(err.msg, "this run uses sgd"));
  o.opt = nic_opt_default(NIC_OPT_ADAMW, 1e-3f);
  o.opt.weight_decay = 1e-2f;
  /* a missing state tensor is a format error naming it */
  edit_checkpoint(ck2, 0, 3);
  err = (nic_error){0};
  CHECK(nic_encoder_train(ctx, t, 2, &o, &err) == NIC_EFORMAT);
  CHECK(strstr(err.msg, "optimizer state tensor") && strstr(err.msg, "is missing"));
  /* without any optimizer state (an older checkpoint) the run resumes with a
   * fresh optimizer, and so no longer matches the uninterrupted run */
  copy_file(saved, ck2);
  edit_checkpoint(ck2, 1, 0);
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  CHECK(!same_params(ck1, ck2));
  remove(saved);
  nic_ctx_free(ctx);
}

/* Appends every log line to the char[4096] at user. */
static void keep_log(void *user, const char *line) {
  char *buf = user;
  size_t n = strlen(buf);
  snprintf(buf + n, 4096 - n, "%s\n", line);
}

/* The float values of param name in a model or checkpoint file (malloc),
 * or NULL. */
static float *file_param(const char *path, const char *name, int64_t *n) {
  nic_model *m = NULL;
  nic_param *ext = NULL;
  int next = 0;
  nic_error err = {0};
  float *v = NULL;
  if (nic_model_load_extra(&m, path, "optim/", &ext, &next, &err) != NIC_OK) return NULL;
  nic_param *p = nic_model_param(m, name);
  for (int i = 0; !p && i < next; i++)
    if (!strcmp(ext[i].name, name)) p = &ext[i];
  if (p && (v = malloc(sizeof *v * (size_t)nic_tensor_numel(&p->value)))) {
    *n = nic_tensor_numel(&p->value);
    memcpy(v, p->value.data, sizeof *v * (size_t)*n);
  }
  nic_params_free(ext, next);
  nic_model_free(m);
  return v;
}

/* --init starts from another run's weights (with its heads when given a
 * checkpoint), and --ema writes the moving average: after one step from
 * W0 to W1 the encoder is 0.1 W0 + 0.9 W1 (the decay's warm-up caps it at
 * 1/10 on the first step), batch-norm statistics included, while the
 * checkpoint keeps the live W1 and the average beside it. A run with EMA
 * resumes to the bit. */
static void test_ema_init(void) {
  char a[600], b[600], c[600], full[600], part[600], spec1[600], spec2[600];
  char cka[700], ckb[700], ckf[700], ckp[700], log[4096] = "";
  snprintf(a, sizeof a, "%s/ia.safetensors", tmp);
  snprintf(b, sizeof b, "%s/ib.safetensors", tmp);
  snprintf(c, sizeof c, "%s/ic.safetensors", tmp);
  snprintf(full, sizeof full, "%s/efull.safetensors", tmp);
  snprintf(part, sizeof part, "%s/epart.safetensors", tmp);
  snprintf(spec1, sizeof spec1, "colour=%s,max-train=16,max-valid=8", colour_dir);
  snprintf(spec2, sizeof spec2, "texture=%s,max-train=16,max-valid=8", texture_dir);
  nic_enc_task t[2] = {task(spec1), task(spec2)};
  nic_ctx *ctx = nic_test_ctx(1);
  nic_error err = {0};
  nic_enc_train_opts o = quick_opts(a);
  o.batch = 8;
  o.epochs = 1;
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  nic_enc_checkpoint_path(a, cka, sizeof cka);
  /* one step from A's checkpoint, heads included */
  o.output = b;
  o.init = cka;
  o.ema = 0.5f;
  o.steps_per_epoch = 1;
  o.seed = 7;
  o.log = keep_log;
  o.user = log;
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  CHECK(strstr(log, "the trunk and 2 of 2 task heads") != NULL);
  char card[700], sha[65];
  nic_enc_card_path(b, card, sizeof card);
  json_object *jc = read_json(card);
  CHECK_OK(nic_features_sha256_file(cka, sha, &err));
  CHECK(!strcmp(json_object_get_string(jget(jget(jc, "training"), "init_sha256")), sha));
  CHECK(jnum(jget(jget(jc, "training"), "ema_decay")) == 0.5);
  json_object_put(jc);
  nic_enc_checkpoint_path(b, ckb, sizeof ckb);
  const char *names[] = {"conv1.weight", "bn1.running_mean", "bn4.running_var"};
  for (int k = 0; k < 3; k++) {
    char ename[200];
    snprintf(ename, sizeof ename, "optim/%s/e", names[k]);
    int64_t n0 = 0, n1 = 0, ne = 0, nc = 0;
    float *w0 = file_param(cka, names[k], &n0), *w1 = file_param(ckb, names[k], &n1);
    float *e = file_param(b, names[k], &ne), *ce = file_param(ckb, ename, &nc);
    CHECK(w0 && w1 && e && ce && n0 == n1 && n1 == ne && ne == nc);
    double worst = 0, moved = 0;
    for (int64_t i = 0; w0 && w1 && e && ce && n0 == ne && nc == ne && i < ne; i++) {
      double want = 0.1 * w0[i] + 0.9 * w1[i];
      worst = fmax(worst, fabs(e[i] - want) / (1e-6 + fabs(want)));
      moved = fmax(moved, fabs(w1[i] - w0[i]));
      CHECK(ce[i] == e[i]);
    }
    CHECK(worst < 1e-5);
    CHECK(moved > 0); /* the step (or the batch statistics) changed it */
    free(w0);
    free(w1);
    free(e);
    free(ce);
  }
  /* from an encoder file: the trunk only */
  log[0] = 0;
  o.output = c;
  o.init = a;
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  CHECK(strstr(log, "the trunk and 0 of 2 task heads") != NULL);
  o.log = NULL;
  /* resuming a run with EMA equals the uninterrupted run */
  o = quick_opts(full);
  o.batch = 8;
  o.epochs = 2;
  o.ema = 0.9f;
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  o.output = part;
  o.epochs = 1;
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  o.epochs = 2;
  o.resume = 1;
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  nic_enc_checkpoint_path(full, ckf, sizeof ckf);
  nic_enc_checkpoint_path(part, ckp, sizeof ckp);
  CHECK(same_params(ckf, ckp));
  CHECK(same_params(full, part));
  CHECK(!same_params(full, ckf)); /* the encoder is the average, not the live weights */
  /* bad settings */
  o = quick_opts(c);
  o.ema = 1.0f;
  err = (nic_error){0};
  CHECK(nic_encoder_train(ctx, t, 2, &o, &err) == NIC_EINVAL && strstr(err.msg, "EMA"));
  o.ema = 0;
  o.arch = "resnet-small";
  o.init = a;
  err = (nic_error){0};
  CHECK(nic_encoder_train(ctx, t, 2, &o, &err) == NIC_EFORMAT);
  CHECK(strstr(err.msg, "--init") && strstr(err.msg, a));
  o.arch = "nic";
  snprintf(spec1, sizeof spec1, "%s/no-such.safetensors", tmp);
  o.init = spec1;
  err = (nic_error){0};
  CHECK(nic_encoder_train(ctx, t, 2, &o, &err) != NIC_OK && strstr(err.msg, "no-such"));
  nic_ctx_free(ctx);
}

/* Spec and setup errors that must be reported clearly. */
static void test_bad_runs(void) {
  char out[600], spec[600];
  snprintf(out, sizeof out, "%s/bad.safetensors", tmp);
  nic_ctx *ctx = nic_test_ctx(1);
  nic_error err = {0};
  nic_enc_train_opts o = quick_opts(out);
  snprintf(spec, sizeof spec, "c=%s,kind=regression", colour_dir);
  nic_enc_task t = task(spec);
  CHECK(nic_encoder_train(ctx, &t, 1, &o, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "regression") && strstr(err.msg, "classes"));
  snprintf(spec, sizeof spec, "c=%s/nothing-here", tmp);
  t = task(spec);
  CHECK(nic_encoder_train(ctx, &t, 1, &o, &err) != NIC_OK);
  CHECK(strstr(err.msg, "task c") != NULL);
  snprintf(spec, sizeof spec, "c=%s", colour_dir);
  t = task(spec);
  nic_enc_task two[2] = {t, t};
  CHECK(nic_encoder_train(ctx, two, 2, &o, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "used twice") != NULL);
  o.monitor = "c.mae";
  CHECK(nic_encoder_train(ctx, &t, 1, &o, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "no such metric") != NULL);
  o.monitor = "d.accuracy";
  CHECK(nic_encoder_train(ctx, &t, 1, &o, &err) == NIC_EINVAL);
  o.monitor = "loss";
  o.arch = "vgg";
  CHECK(nic_encoder_train(ctx, &t, 1, &o, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "resnet-small") != NULL);
  nic_ctx_free(ctx);
}

/* The probe separates the colour classes with a random encoder already,
 * and reports per-class numbers. */
static void test_probe(void) {
  nic_ctx *ctx = nic_test_ctx(1);
  nic_error err = {0};
  nic_model *m = NULL;
  CHECK_OK(nic_encoder_build_arch(&m, "nic", 128, &err));
  CHECK_OK(nic_model_init_params(m, ctx, &err));
  CHECK_OK(nic_model_optimize_inference(m, &err));
  nic_dataset *tr = NULL, *te = NULL;
  CHECK_OK(nic_dataset_open(&tr, colour_dir, NULL, &err));
  CHECK_OK(nic_dataset_open(&te, colour_dir, NULL, &err));
  nic_probe_opts po = nic_probe_default_opts();
  nic_probe_result res;
  CHECK_OK(nic_probe(ctx, m, tr, te, &po, &res, &err));
  printf("  probe: accuracy %.3f, balanced %.3f, auc %.3f, C %g\n", res.accuracy,
         res.balanced_accuracy, res.auc, res.C);
  CHECK(res.accuracy > 0.9 && res.auc > 0.9);
  CHECK(res.train_split == NIC_SPLIT_TRAIN && res.test_split == NIC_SPLIT_TEST);
  CHECK(res.n_test == 48 && res.k == 2 && res.dim == 128);
  CHECK(res.classes && res.classes[0].n_test == 24 && !strcmp(res.classes[1].name, "1"));
  nic_probe_result_free(&res);
  /* the same items for training and testing are refused */
  nic_dataset_free(tr);
  nic_dataset_free(te);
  CHECK_OK(nic_dataset_open(&tr, colour_dir, NULL, &err));
  CHECK_OK(nic_dataset_open(&te, colour_dir, NULL, &err));
  po.test_split = NIC_SPLIT_TRAIN;
  CHECK(nic_probe(ctx, m, tr, te, &po, &res, &err) == NIC_EINVAL);
  /* a fixed C and subsets */
  nic_dataset_free(tr);
  nic_dataset_free(te);
  CHECK_OK(nic_dataset_open(&tr, colour_dir, NULL, &err));
  CHECK_OK(nic_dataset_open(&te, texture_dir, NULL, &err));
  po = nic_probe_default_opts();
  po.C = 0.5;
  po.max_train = 20;
  po.max_test = 10;
  CHECK_OK(nic_probe(ctx, m, tr, te, &po, &res, &err));
  CHECK(res.n_train == 20 && res.n_test == 10 && res.C == 0.5 && isnan(res.cv_accuracy));
  nic_probe_result_free(&res);
  nic_dataset_free(tr);
  nic_dataset_free(te);
  nic_model_free(m);
  nic_ctx_free(ctx);
}

/* The unsupervised objectives learn: the training loss falls. */
static void test_unsupervised(void) {
  static const nic_enc_objective objs[2] = {NIC_ENC_CONTRASTIVE, NIC_ENC_AUTOENCODER};
  for (int k = 0; k < 2; k++) {
    char out[600], spec1[600], spec2[600], card[700];
    snprintf(out, sizeof out, "%s/unsup%d.safetensors", tmp, k);
    snprintf(spec1, sizeof spec1, "colour=%s,max-valid=6", colour_dir);
    snprintf(spec2, sizeof spec2, "texture=%s,max-valid=6", texture_dir);
    nic_enc_task tasks[2] = {task(spec1), task(spec2)};
    nic_enc_train_opts o = quick_opts(out);
    o.objective = objs[k];
    o.epochs = 3;
    o.steps_per_epoch = sanitized ? 3 : 4;
    o.batch = 8;
    if (objs[k] == NIC_ENC_CONTRASTIVE) o.augment = nic_augment_default();
    nic_ctx *ctx = nic_test_ctx(1);
    nic_error err = {0};
    nic_status s = nic_encoder_train(ctx, tasks, 2, &o, &err);
    if (s != NIC_OK) fprintf(stderr, "train: %s\n", err.msg);
    CHECK(s == NIC_OK);
    nic_enc_card_path(out, card, sizeof card);
    json_object *c = read_json(card), *h = jget(c, "history");
    double first = jnum(jget(json_object_array_get_idx(h, 0), "train_loss"));
    double later = fmin(jnum(jget(json_object_array_get_idx(h, 1), "train_loss")),
                        jnum(jget(json_object_array_get_idx(h, 2), "train_loss")));
    printf("  %s: training loss %.4f, then down to %.4f\n", nic_enc_objective_name(objs[k]), first,
           later);
    CHECK(later < first);
    CHECK(!strcmp(json_object_get_string(jget(c, "objective")), nic_enc_objective_name(objs[k])));
    json_object_put(c);
    nic_ctx_free(ctx);
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* RUN with the wall time, to keep an eye on the suite's budget. */
#define TIMED(fn)                                                                                  \
  do {                                                                                             \
    double _t = now_s();                                                                           \
    RUN(fn);                                                                                       \
    printf("     (%.1f s)\n", now_s() - _t);                                                       \
  } while (0)

/* Worst relative difference between got[i] and (x[i] + y[i]) / 2. */
static double mean_error(const float *got, const float *x, const float *y, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double want = 0.5 * ((double)x[i] + (double)y[i]);
    worst = fmax(worst, fabs(got[i] - want) / (1e-6 + fabs(want)));
  }
  return worst;
}

/* nic_enc_average: the mean of two checkpoints (the moving average of the
 * one that has it, or the live weights), of two encoders, a single
 * checkpoint's average, the metadata, --init with the result, bad inputs. */
static void test_average(void) {
  char a[600], b[600], soup[600], live[600], enc[600], one[600], spec1[600], spec2[600];
  char cka[700], ckb[700], c[600], log[4096] = "";
  snprintf(a, sizeof a, "%s/aa.safetensors", tmp);
  snprintf(b, sizeof b, "%s/ab.safetensors", tmp);
  snprintf(c, sizeof c, "%s/ac.safetensors", tmp);
  snprintf(soup, sizeof soup, "%s/soup.safetensors", tmp);
  snprintf(live, sizeof live, "%s/soup-live.safetensors", tmp);
  snprintf(enc, sizeof enc, "%s/soup-enc.safetensors", tmp);
  snprintf(one, sizeof one, "%s/soup-one.safetensors", tmp);
  snprintf(spec1, sizeof spec1, "colour=%s,max-train=16,max-valid=8", colour_dir);
  snprintf(spec2, sizeof spec2, "texture=%s,max-train=16,max-valid=8", texture_dir);
  nic_enc_task t[2] = {task(spec1), task(spec2)};
  nic_ctx *ctx = nic_test_ctx(1);
  nic_error err = {0};
  nic_enc_train_opts o = quick_opts(a);
  o.batch = 8;
  o.epochs = 1;
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  o.output = b;
  o.seed = 2;
  o.ema = 0.5f;
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  nic_enc_checkpoint_path(a, cka, sizeof cka);
  nic_enc_checkpoint_path(b, ckb, sizeof ckb);
  int ema = -1;
  const char *cks[] = {cka, ckb}, *encs[] = {a, b};
  CHECK_OK(nic_enc_average(cks, 2, 0, soup, &ema, &err));
  CHECK(ema == 1); /* b's moving average; a has none */
  CHECK_OK(nic_enc_average(cks, 2, 1, live, &ema, &err));
  CHECK(ema == 0);
  CHECK_OK(nic_enc_average(encs, 2, 0, enc, &ema, &err));
  CHECK(ema == 0);
  CHECK_OK(nic_enc_average(cks + 1, 1, 0, one, &ema, &err));
  CHECK(ema == 1);
  /* a trunk weight, batch-norm statistics and a head weight */
  const char *names[] = {"conv1.weight", "bn2.running_var", "head_colour_out.weight"};
  for (int k = 0; k < 3; k++) {
    char ename[200];
    snprintf(ename, sizeof ename, "optim/%s/e", names[k]);
    int64_t na = 0, nb = 0, ne = 0, ns = 0, nl = 0, no = 0;
    float *wa = file_param(cka, names[k], &na), *wb = file_param(ckb, names[k], &nb);
    float *eb = file_param(ckb, ename, &ne), *ws = file_param(soup, names[k], &ns);
    float *wl = file_param(live, names[k], &nl), *wo = file_param(one, names[k], &no);
    CHECK(wa && wb && eb && ws && wl && wo);
    CHECK(na == nb && nb == ne && ne == ns && ns == nl && nl == no && na > 0);
    if (wa && wb && eb && ws && wl && wo && na == nb && nb == ne && ne == ns && ns == nl &&
        nl == no) {
      CHECK(mean_error(ws, wa, eb, na) < 1e-6);
      CHECK(mean_error(wl, wa, wb, na) < 1e-6);
      CHECK(memcmp(wo, eb, sizeof *wo * (size_t)no) == 0);
      double apart = 0;
      for (int64_t i = 0; i < na; i++) apart = fmax(apart, fabs(wa[i] - eb[i]));
      CHECK(apart > 0); /* the two runs differ, so the mean is a new point */
    }
    free(wa), free(wb), free(eb), free(ws), free(wl), free(wo);
    if (k < 2) { /* the encoders' trunks average alike */
      float *xa = file_param(a, names[k], &na), *xb = file_param(b, names[k], &nb);
      float *xe = file_param(enc, names[k], &ne);
      CHECK(xa && xb && xe && na == nb && nb == ne);
      if (xa && xb && xe && na == nb && nb == ne) CHECK(mean_error(xe, xa, xb, na) < 1e-6);
      free(xa), free(xb), free(xe);
    }
  }
  /* the metadata names the inputs, their checksums and the weights taken */
  nic_model *m = NULL;
  CHECK_OK(nic_model_load(&m, soup, &err));
  const char *from = m ? nic_model_get_meta(m, "averaged_from") : NULL;
  char sha[65];
  CHECK_OK(nic_features_sha256_file(ckb, sha, &err));
  CHECK(from && strstr(from, cka) && strstr(from, ckb) && strstr(from, sha));
  CHECK(from && strstr(from, "moving average") && strstr(from, "stored"));
  nic_model_free(m);
  m = NULL;
  CHECK_OK(nic_model_load(&m, enc, &err)); /* an averaged encoder is an encoder */
  nic_model_free(m);
  /* the soup starts a run with its heads */
  o = quick_opts(c);
  o.batch = 8;
  o.epochs = 1;
  o.steps_per_epoch = 1;
  o.init = soup;
  o.log = keep_log;
  o.user = log;
  CHECK_OK(nic_encoder_train(ctx, t, 2, &o, &err));
  CHECK(strstr(log, "the trunk and 2 of 2 task heads") != NULL);
  /* refused: different models, a missing file, no input */
  const char *mixed[] = {a, cka};
  err = (nic_error){0};
  CHECK(nic_enc_average(mixed, 2, 0, one, NULL, &err) == NIC_EFORMAT);
  CHECK(strstr(err.msg, cka) && strstr(err.msg, "not the same model"));
  snprintf(spec1, sizeof spec1, "%s/no-such.safetensors", tmp);
  const char *missing[] = {a, spec1};
  err = (nic_error){0};
  CHECK(nic_enc_average(missing, 2, 0, one, NULL, &err) != NIC_OK && strstr(err.msg, spec1));
  err = (nic_error){0};
  CHECK(nic_enc_average(encs, 0, 0, one, NULL, &err) == NIC_EINVAL);
  nic_ctx_free(ctx);
}

int main(void) {
  sanitized = getenv("NIC_SANITIZED") != NULL;
  tmp = nic_test_tmpdir();
  make_datasets();
  TIMED(test_task_parse);
  TIMED(test_ntxent);
  TIMED(test_logreg);
  TIMED(test_resnet_small);
  TIMED(test_bad_runs);
  TIMED(test_probe);
  TIMED(test_two_tasks);
  TIMED(test_resume);
  TIMED(test_resume_adam);
  TIMED(test_ema_init);
  TIMED(test_average);
  TIMED(test_unsupervised);
  return nic_test_finish();
}
