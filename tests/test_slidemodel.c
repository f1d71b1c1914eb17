/* Slide-level learning (nic/slidemodel.h): cohorts and their errors,
 * case-level stratified folds and CLAM's splits files, orientations, the
 * CNN's Grad-CAM twin, ABMIL's gradients, learnable toy tasks (binary,
 * regression, survival) for both models, deterministic prediction, the
 * cross-validation run directory, evaluation and heatmaps.
 *
 * `test_slidemodel --toy DIR` writes the toy cohort used by
 * tests/cli_slidemodel.sh instead of running the tests. */
#include <hdf5.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "nic/features.h"
#include "nic/slidemodel.h"
#include "slidemodel/sm_internal.h"
#include "testutil.h"

static int sanitized; /* NIC_SANITIZED=1: smaller sizes */

/* One compute thread: the networks here are tiny, and a lone thread does
 * not spin at barriers when the machine is busy with other work. */
static nic_ctx *test_ctx(uint64_t seed) {
  nic_ctx_opts o = nic_ctx_default_opts();
  o.threads = 1;
  o.seed = seed;
  nic_ctx *ctx = NULL;
  nic_error err = {0};
  if (nic_ctx_create(&ctx, &o, &err) != NIC_OK) {
    fprintf(stderr, "cannot create context: %s\n", err.msg);
    exit(1);
  }
  return ctx;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

/* ---- toy cohorts ------------------------------------------------------------------ */

/* Slides whose tissue is an ellipse of cells with N(0, 1) embeddings. A
 * binary positive holds one small cluster (a 3x3 block clipped to tissue)
 * whose channels 0 to 3 are shifted by +3; regression and survival slides
 * shift channels 0 and 1 by +1.5 in a random fraction of the cells, the
 * fraction being the target (regression) or driving the hazard (survival).
 * Two consecutive slides share a case. */
typedef struct toy {
  nic_task task;
  int n, C, hmin, hmax;
  int orientations;
  uint64_t seed;
} toy;

static nic_status write_toy_slide(const char *path, const toy *t, int index, int positive,
                                  double frac, nic_error *err) {
  nic_rng r;
  nic_rng_seed(&r, t->seed * 1000003u + (uint64_t)index);
  int H = t->hmin + (int)nic_rng_below(&r, (uint64_t)(t->hmax - t->hmin + 1));
  int W = t->hmin + (int)nic_rng_below(&r, (uint64_t)(t->hmax - t->hmin + 1));
  nic_features_meta m = nic_features_default_meta();
  m.embed_dim = t->C;
  m.has_orientations = t->orientations;
  nic_status st = nic_features_meta_set_grid(&m, (int64_t)W * 256, (int64_t)H * 256, 0.25, err);
  if (st != NIC_OK) return st;
  double cy = (H - 1) / 2.0 + nic_rng_uniform(&r) - 0.5,
         cx = (W - 1) / 2.0 + nic_rng_uniform(&r) - 0.5;
  double ry = 0.42 * H, rx = 0.42 * W;
  int C = t->C, n = 0;
  float *f = malloc(sizeof(float) * (size_t)H * W * C);
  float *orient = malloc(sizeof(float) * (size_t)H * W * 8 * C);
  int32_t *xy = malloc(sizeof(int32_t) * 2 * (size_t)H * W);
  int *cells = malloc(sizeof(int) * (size_t)H * W);
  for (int i = 0; i < H; i++)
    for (int j = 0; j < W; j++) {
      double dy = (i - cy) / ry, dx = (j - cx) / rx;
      if (dy * dy + dx * dx > 1) continue;
      cells[n] = i * W + j;
      xy[2 * n] = nic_features_cell_x(&m, j);
      xy[2 * n + 1] = nic_features_cell_y(&m, i);
      for (int c = 0; c < C; c++) f[n * C + c] = (float)nic_rng_normal(&r);
      if (t->task != NIC_TASK_BINARY && nic_rng_uniform(&r) < frac)
        f[n * C] += 1.5f, f[n * C + 1] += 1.5f;
      n++;
    }
  if (positive) { /* a 3x3 cluster around a random tissue cell */
    int centre = cells[nic_rng_below(&r, (uint64_t)n)], ci = centre / W, cj = centre % W;
    for (int k = 0; k < n; k++) {
      int i = cells[k] / W, j = cells[k] % W;
      if (abs(i - ci) <= 1 && abs(j - cj) <= 1)
        for (int c = 0; c < 4; c++) f[k * C + c] += 3.0f;
    }
  }
  for (int k = 0; k < n; k++)
    for (int o = 0; o < 8; o++)
      for (int c = 0; c < C; c++)
        orient[((size_t)k * 8 + o) * C + c] =
            f[k * C + c] + (o ? 0.05f * (float)nic_rng_normal(&r) : 0);
  nic_features_writer *w = NULL;
  st = nic_features_writer_create(&w, path, &m, NULL, err);
  if (st == NIC_OK)
    st = nic_features_writer_append(w, n, f, xy, t->orientations ? orient : NULL, err);
  if (st == NIC_OK)
    st = nic_features_writer_commit(w, err);
  else
    nic_features_writer_abort(w);
  free(f), free(orient), free(xy), free(cells);
  return st;
}

/* Writes <dir>/toy_NNN.h5 and <dir>/labels.csv. */
static nic_status write_toy(const char *dir, const toy *t, nic_error *err) {
  char path[512];
  snprintf(path, sizeof path, "%s/labels.csv", dir);
  FILE *lf = fopen(path, "w");
  if (!lf) return nic_err(err, NIC_EIO, "%s: cannot create", path);
  fprintf(lf, t->task == NIC_TASK_SURVIVAL ? "case_id,slide_id,time,event\n"
                                           : "case_id,slide_id,label\n");
  nic_rng r;
  nic_rng_seed(&r, t->seed ^ 0xabcdefu);
  nic_status st = NIC_OK;
  for (int i = 0; i < t->n && st == NIC_OK; i++) {
    int positive = i % 2 == (i / 2) % 2; /* half, and cases of mixed and same labels */
    double frac = nic_rng_uniform(&r) * 0.6;
    snprintf(path, sizeof path, "%s/toy_%03d.h5", dir, i);
    st = write_toy_slide(path, t, i, t->task == NIC_TASK_BINARY && positive, frac, err);
    fprintf(lf, "case_%03d,toy_%03d,", i / 2, i);
    if (t->task == NIC_TASK_BINARY)
      fprintf(lf, "%s\n", positive ? "tumour" : "normal");
    else if (t->task == NIC_TASK_REGRESSION)
      fprintf(lf, "%.6f\n", frac + 0.02 * nic_rng_normal(&r));
    else {
      double time = 10 * exp(-2.5 * frac / 0.6) * (0.9 + 0.2 * nic_rng_uniform(&r));
      int event = nic_rng_uniform(&r) > 0.2;
      if (!event) time *= 0.3 + 0.7 * nic_rng_uniform(&r);
      fprintf(lf, "%.5f,%d\n", time, event);
    }
  }
  fclose(lf);
  return st;
}

static const char *make_toy(const toy *t) {
  const char *dir = nic_test_tmpdir();
  nic_error err = {0};
  if (write_toy(dir, t, &err) != NIC_OK) {
    fprintf(stderr, "toy cohort: %s\n", err.msg);
    exit(1);
  }
  return dir;
}

static void load_cohort(nic_cohort *c, const char *dir, nic_task task) {
  char csv[512];
  snprintf(csv, sizeof csv, "%s/labels.csv", dir);
  nic_error err = {0};
  if (nic_cohort_load(c, csv, dir, task, NULL, &err) != NIC_OK) {
    fprintf(stderr, "cohort: %s\n", err.msg);
    exit(1);
  }
}

/* ---- cohorts and their errors ------------------------------------------------------- */

static int nwarn;
static char last_warn[1024];
static void count_warn(void *user, const char *msg) {
  (void)user;
  nwarn++;
  snprintf(last_warn, sizeof last_warn, "%s", msg);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
}

static void test_cohort(void) {
  toy t = {NIC_TASK_BINARY, 4, 4, 5, 6, 0, 3};
  const char *dir = make_toy(&t);
  char csv[512], bad[512];
  snprintf(csv, sizeof csv, "%s/l2.csv", dir);
  /* a header in another order, quotes, CRLF, a BOM, a missing features file */
  write_text(csv, "\xEF\xBB\xBFslide_id,label,case_id\r\n"
                  "toy_000,\"normal\",c0\r\n"
                  "\"toy_001\",tumour,c0\r\n"
                  "toy_002,normal,\"c,1\"\r\n"
                  "toy_099,tumour,c9\r\n"
                  "\r\n"
                  "toy_003,tumour,c1\r\n");
  nic_cohort c;
  nic_cohort_opts o = nic_cohort_default_opts();
  o.warn = count_warn;
  nwarn = 0;
  nic_error err = {0};
  CHECK_OK(nic_cohort_load(&c, csv, dir, NIC_TASK_BINARY, &o, &err));
  CHECK(c.n == 4 && c.skipped == 1 && nwarn == 1 && strstr(last_warn, "toy_099"));
  CHECK(c.num_classes == 2 && !strcmp(c.class_names[0], "normal") &&
        !strcmp(c.class_names[1], "tumour") && !c.ordinal);
  CHECK(c.slides[1].cls == 1 && !strcmp(c.slides[2].case_id, "c,1"));
  CHECK(c.slides[0].path && strstr(c.slides[0].path, "toy_000.h5"));
  nic_cohort_free(&c);

  /* as multiclass with numeric labels: sorted numerically, ordinal */
  write_text(csv, "case_id,slide_id,label\na,toy_000,10\nb,toy_001,2\nc,toy_002,2\nd,toy_003,1\n");
  CHECK_OK(nic_cohort_load(&c, csv, dir, NIC_TASK_MULTICLASS, NULL, &err));
  CHECK(c.num_classes == 3 && !strcmp(c.class_names[0], "1") && !strcmp(c.class_names[2], "10"));
  CHECK(c.ordinal && c.slides[0].cls == 2 && c.slides[3].cls == 0);
  nic_cohort_free(&c);

  /* errors name the file and the problem */
  snprintf(bad, sizeof bad, "%s/bad.csv", dir);
  write_text(bad, "case_id,slide,label\na,toy_000,1\n");
  CHECK(nic_cohort_load(&c, bad, dir, NIC_TASK_BINARY, NULL, &err) == NIC_EFORMAT);
  CHECK(strstr(err.msg, "bad.csv") && strstr(err.msg, "'slide_id'"));
  write_text(bad, "case_id,slide_id,time\na,toy_000,1\n");
  CHECK(nic_cohort_load(&c, bad, dir, NIC_TASK_SURVIVAL, NULL, &err) == NIC_EFORMAT);
  CHECK(strstr(err.msg, "'event'"));
  write_text(bad, "case_id,slide_id,label\na,toy_000,1.5\nb,toy_001,x\n");
  CHECK(nic_cohort_load(&c, bad, dir, NIC_TASK_REGRESSION, NULL, &err) == NIC_EFORMAT);
  CHECK(strstr(err.msg, "line 3") && strstr(err.msg, "'x'"));
  write_text(bad, "case_id,slide_id,label\na,toy_000,1\nb,toy_001,2\nc,toy_002,3\n");
  CHECK(nic_cohort_load(&c, bad, dir, NIC_TASK_BINARY, NULL, &err) == NIC_EFORMAT);
  CHECK(strstr(err.msg, "exactly two classes"));
  write_text(bad, "case_id,slide_id,label\na,toy_000,1\nb,toy_000,0\n");
  CHECK(nic_cohort_load(&c, bad, dir, NIC_TASK_BINARY, NULL, &err) == NIC_EFORMAT);
  CHECK(strstr(err.msg, "listed twice"));
  write_text(bad, "case_id,slide_id,label\na,nothing,1\n");
  CHECK(nic_cohort_load(&c, bad, dir, NIC_TASK_BINARY, NULL, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "no labelled slide has a features file"));
  CHECK(nic_cohort_load(&c, "/nonexistent/labels.csv", dir, NIC_TASK_BINARY, NULL, &err) ==
        NIC_EIO);
  CHECK(strstr(err.msg, "/nonexistent/labels.csv"));
  nic_task task;
  CHECK(nic_task_from_name("ordinal", &task, &err) == NIC_EINVAL &&
        strstr(err.msg, "unknown task 'ordinal'"));
  CHECK_OK(nic_task_from_name("survival", &task, &err));
  CHECK(task == NIC_TASK_SURVIVAL && !strcmp(nic_task_main_metric(task), "c_index"));

  CHECK_OK(nic_cohort_scan(&c, dir, &err));
  CHECK(c.n == 4 && !strcmp(c.slides[3].slide_id, "toy_003"));
  nic_cohort_free(&c);
}

/* ---- splits ----------------------------------------------------------------------------- */

/* A cohort of n slides, `per` per case, classes cycling over k, without files. */
static void synth_cohort(nic_cohort *c, int n, int per, int k) {
  memset(c, 0, sizeof *c);
  c->task = NIC_TASK_MULTICLASS;
  c->n = n;
  c->slides = calloc((size_t)n, sizeof *c->slides);
  c->num_classes = k;
  c->class_names = calloc((size_t)k, sizeof *c->class_names);
  char buf[64];
  for (int j = 0; j < k; j++) {
    snprintf(buf, sizeof buf, "%d", j);
    c->class_names[j] = sm_strdup(buf);
  }
  for (int i = 0; i < n; i++) {
    snprintf(buf, sizeof buf, "case%d", (i / per) * 7919 % n); /* cases not in slide order */
    c->slides[i].case_id = sm_strdup(buf);
    snprintf(buf, sizeof buf, "s%03d", i);
    c->slides[i].slide_id = sm_strdup(buf);
    c->slides[i].label = sm_strdup("");
    c->slides[i].cls = (i / per) % k;
  }
}

static int same_list(const int *a, int na, const int *b, int nb) {
  if (na != nb) return 0;
  for (int i = 0; i < na; i++) {
    int found = 0;
    for (int j = 0; j < nb && !found; j++) found = a[i] == b[j];
    if (!found) return 0;
  }
  return 1;
}

static void test_splits(void) {
  nic_cohort c;
  synth_cohort(&c, 90, 2, 3); /* 45 cases of 2 slides, 3 classes */
  nic_splits s;
  nic_error err = {0};
  CHECK_OK(nic_splits_kfold(&c, 5, 0.2, 7, &s, &err));
  CHECK(s.k == 5);
  int *tested = calloc((size_t)c.n, sizeof(int));
  int percls[5][3] = {{0}};
  for (int f = 0; f < s.k; f++) {
    nic_fold *fd = &s.folds[f];
    CHECK(fd->ntrain + fd->nval + fd->ntest == c.n);
    CHECK(fd->nval >= 3); /* one case per class at least */
    for (int a = 0; a < fd->ntest; a++) {
      tested[fd->test[a]]++;
      percls[f][c.slides[fd->test[a]].cls]++;
      /* a case's slides are all in the test set, never in train or val */
      for (int b = 0; b < fd->ntrain; b++)
        CHECK(strcmp(c.slides[fd->train[b]].case_id, c.slides[fd->test[a]].case_id));
      for (int b = 0; b < fd->nval; b++)
        CHECK(strcmp(c.slides[fd->val[b]].case_id, c.slides[fd->test[a]].case_id));
    }
    for (int a = 0; a < fd->nval; a++)
      for (int b = 0; b < fd->ntrain; b++)
        CHECK(strcmp(c.slides[fd->train[b]].case_id, c.slides[fd->val[a]].case_id));
  }
  for (int i = 0; i < c.n; i++) CHECK(tested[i] == 1);
  /* stratified: 15 cases of each class over 5 folds, 3 cases = 6 slides each */
  for (int f = 0; f < 5; f++)
    for (int k = 0; k < 3; k++) CHECK(percls[f][k] == 6);
  free(tested);

  /* CLAM's files round trip */
  const char *dir = nic_test_tmpdir();
  CHECK_OK(nic_splits_save(&s, &c, dir, &err));
  char path[512], line[256];
  snprintf(path, sizeof path, "%s/splits_0.csv", dir);
  FILE *f = fopen(path, "r");
  CHECK(f && fgets(line, sizeof line, f) && !strcmp(line, ",train,val,test\n"));
  CHECK(f && fgets(line, sizeof line, f) && !strncmp(line, "0,s", 3));
  if (f) fclose(f);
  nic_splits l;
  CHECK_OK(nic_splits_load(&l, &c, dir, NULL, NULL, &err));
  CHECK(l.k == 5);
  for (int q = 0; q < 5 && l.k == 5; q++) {
    CHECK(same_list(s.folds[q].train, s.folds[q].ntrain, l.folds[q].train, l.folds[q].ntrain));
    CHECK(same_list(s.folds[q].val, s.folds[q].nval, l.folds[q].val, l.folds[q].nval));
    CHECK(same_list(s.folds[q].test, s.folds[q].ntest, l.folds[q].test, l.folds[q].ntest));
  }
  nic_splits_free(&l);
  /* the same seed gives the same folds; another seed other folds */
  nic_splits s2;
  CHECK_OK(nic_splits_kfold(&c, 5, 0.2, 7, &s2, &err));
  CHECK(same_list(s.folds[2].test, s.folds[2].ntest, s2.folds[2].test, s2.folds[2].ntest));
  nic_splits_free(&s2);
  CHECK_OK(nic_splits_kfold(&c, 5, 0.2, 8, &s2, &err));
  CHECK(!same_list(s.folds[2].test, s.folds[2].ntest, s2.folds[2].test, s2.folds[2].ntest));
  nic_splits_free(&s2);
  nic_splits_free(&s);

  /* user files: no index column, unknown ids warned, leakage warned, a slide twice refused */
  const char *d2 = nic_test_tmpdir();
  snprintf(path, sizeof path, "%s/splits_0.csv", d2);
  /* s002 and s003 are one case: in train and test, that is leakage */
  write_text(path, "train,val,test\ns000,s004,s002\ns003,,\nzzz,,\n");
  nwarn = 0;
  CHECK_OK(nic_splits_load(&l, &c, d2, count_warn, NULL, &err));
  CHECK(l.k == 1 && l.folds[0].ntrain == 2 && l.folds[0].nval == 1 && l.folds[0].ntest == 1);
  CHECK(nwarn == 2 && strstr(last_warn, "both train and test"));
  nic_splits_free(&l);
  write_text(path, "train,val,test\ns000,s000,\n");
  CHECK(nic_splits_load(&l, &c, d2, NULL, NULL, &err) == NIC_EFORMAT && strstr(err.msg, "'s000'"));
  CHECK(nic_splits_load(&l, &c, "/nonexistent", NULL, NULL, &err) == NIC_EIO);

  /* a single split: no test, validation stratified */
  CHECK_OK(nic_splits_single(&c, 0.25, 3, &s, &err));
  CHECK(s.k == 1 && s.folds[0].ntest == 0 && s.folds[0].nval > 0 &&
        s.folds[0].ntrain + s.folds[0].nval == c.n);
  nic_splits_free(&s);
  CHECK(nic_splits_kfold(&c, 1, 0.2, 1, &s, &err) == NIC_EINVAL);
  nic_cohort_free(&c);
}

/* ---- orientations ---------------------------------------------------------------------- */

/* np.rot90(a) for an H x W array: out[p][q] = a[q][W - 1 - p], W x H. */
static void rot90(const int *a, int H, int W, int *out) {
  for (int p = 0; p < W; p++)
    for (int q = 0; q < H; q++) out[p * H + q] = a[q * W + (W - 1 - p)];
}

static void test_orientations(void) {
  int H = 3, W = 5, a[15], b[15], c[15];
  for (int o = 0; o < 8; o++) {
    /* the grid as numpy transforms it */
    for (int k = 0; k < H * W; k++) a[k] = k;
    int h = H, w = W;
    if (o >= 4)
      for (int i = 0; i < H; i++)
        for (int j = 0; j < W; j++) b[i * W + j] = a[i * W + (W - 1 - j)];
    else
      memcpy(b, a, sizeof a);
    for (int r = 0; r < (o & 3); r++) {
      rot90(b, h, w, c);
      int t = h;
      h = w;
      w = t;
      memcpy(b, c, sizeof c);
    }
    int H2, W2, ok = 1;
    sm_orient_dims(o, H, W, &H2, &W2);
    CHECK(H2 == h && W2 == w);
    for (int i = 0; i < H; i++)
      for (int j = 0; j < W; j++) {
        int i2, j2;
        sm_orient_cell(o, H, W, i, j, &i2, &j2);
        ok &= i2 >= 0 && i2 < h && j2 >= 0 && j2 < w && b[i2 * w + j2] == i * W + j;
      }
    CHECK(ok);
  }
  int i2, j2; /* o = 5 is the transpose, o = 6 the top-bottom mirror */
  sm_orient_cell(5, H, W, 1, 4, &i2, &j2);
  CHECK(i2 == 4 && j2 == 1);
  sm_orient_cell(6, H, W, 0, 2, &i2, &j2);
  CHECK(i2 == 2 && j2 == 2);
}

/* ---- the CNN's Grad-CAM twin ----------------------------------------------------------- */

/* The CNN with `strided` stride-2 blocks and its Grad-CAM twin. */
static void cnn_twin(int strided) {
  nic_ctx *ctx = nic_test_ctx(5);
  sm_cnn_arch a = {.C = 6,
                   .R = 32,
                   .filters = 8,
                   .hidden = 8,
                   .nout = 3,
                   .pool = NIC_POOL_MAX,
                   .strided = strided,
                   .dropout = 0.2f};
  nic_model *cnn = NULL, *twin = NULL;
  nic_error err = {0};
  CHECK_OK(sm_cnn_build(&cnn, &a, 0, &err));
  CHECK_OK(sm_cnn_build(&twin, &a, 1, &err));
  CHECK_OK(nic_model_init_params(cnn, ctx, &err));
  /* 8 separable convs: stride 2 `strided` times, then 1 */
  int nd;
  int64_t shp[4];
  nic_model_node_shape(cnn, nic_model_num_nodes(cnn), &nd, shp);
  CHECK(nd == 2 && shp[1] == 3);
  int nstrided = 0, sep = 0;
  for (int k = 1; k <= nic_model_num_nodes(cnn); k++) {
    const nic_layer_spec *s = nic_model_node_spec(cnn, k);
    if (s->kind == NIC_LAYER_CONV2D && s->groups > 1) sep++, nstrided += s->stride[0] == 2;
  }
  CHECK(sep == 8 && nstrided == strided);
  int pool = -1;
  for (int k = 1; k <= nic_model_num_nodes(cnn); k++)
    if (nic_model_node_spec(cnn, k)->kind == NIC_LAYER_GLOBALPOOL) pool = k;
  CHECK(pool > 0);
  if (pool > 0) {
    int side = strided >= 5 ? 1 : 32 >> strided;   /* halved per block, at least 1 */
    nic_model_node_shape(cnn, pool - 1, &nd, shp); /* the map the pooling sees */
    CHECK(nd == 4 && shp[2] == side && shp[3] == side);
  }
  /* batch-norm statistics that are not the identity */
  nic_rng r;
  nic_rng_seed(&r, 11);
  int np;
  nic_param **ps = nic_model_params(cnn, &np);
  for (int i = 0; i < np; i++) {
    const char *n = ps[i]->name;
    int64_t cnt = nic_tensor_numel(&ps[i]->value);
    for (int64_t q = 0; q < cnt; q++) {
      if (strstr(n, "running_var") || strstr(n, "gamma"))
        ps[i]->value.data[q] = (float)(0.5 + nic_rng_uniform(&r));
      else if (strstr(n, "running_mean") || strstr(n, "beta"))
        ps[i]->value.data[q] = (float)(nic_rng_uniform(&r) - 0.5);
    }
  }
  CHECK_OK(sm_cnn_fold_into(cnn, twin, &err));
  nic_tensor x = NIC_TENSOR_INIT;
  nic_tensor_alloc4(&x, 2, 6, 32, 32, NULL);
  nic_test_fill_uniform(&x, 3, -1, 1);
  const nic_tensor *y1 = NULL, *y2 = NULL;
  float ref[6];
  CHECK_OK(nic_model_forward(cnn, ctx, &x, 0, &y1, &err));
  memcpy(ref, y1->data, sizeof ref);
  CHECK_OK(nic_model_forward(twin, ctx, &x, 1, &y2, &err)); /* training mode: still inference */
  double worst = 0;
  for (int i = 0; i < 6; i++) worst = fmax(worst, fabs(ref[i] - y2->data[i]) / (1 + fabs(ref[i])));
  CHECK(worst < 1e-4);
  CHECK(sm_cnn_cam_node(twin) > 0);
  nic_tensor_free(&x);
  nic_model_free(cnn);
  nic_model_free(twin);
  nic_ctx_free(ctx);
}

static void test_cnn_twin(void) {
  cnn_twin(6); /* the paper's */
  cnn_twin(2); /* a finer map for small grids */
}

/* ---- ABMIL gradients ---------------------------------------------------------------------- */

static double abmil_loss(sm_abmil *a, const float *x, int n, const float *w, float *y) {
  nic_error err = {0};
  sm_abmil_forward(a, x, n, y, NULL, &err);
  double L = 0;
  for (int c = 0; c < a->K; c++) L += (double)w[c] * y[c];
  return L;
}

static void test_abmil_gradients(void) {
  nic_ctx *ctx = nic_test_ctx(9);
  nic_model *m = NULL;
  nic_error err = {0};
  int C = 5, L = 6, D = 4, K = 3, n = 7;
  CHECK_OK(sm_abmil_build(&m, C, L, D, K, ctx, &err));
  sm_abmil a;
  CHECK_OK(sm_abmil_bind(&a, m, &err));
  /* biases away from zero so that every path carries gradient */
  nic_rng r;
  nic_rng_seed(&r, 4);
  int np;
  nic_param **ps = nic_model_params(m, &np);
  for (int i = 0; i < np; i++)
    if (strstr(ps[i]->name, "bias"))
      for (int64_t q = 0; q < nic_tensor_numel(&ps[i]->value); q++)
        ps[i]->value.data[q] = (float)(nic_rng_uniform(&r) - 0.3);
  float x[35], y[3], attn[7], w[3] = {0.7f, -1.3f, 0.4f};
  for (int i = 0; i < n * C; i++) x[i] = (float)(2 * nic_rng_uniform(&r) - 1);
  sm_abmil_forward(&a, x, n, y, NULL, &err); /* sizes the workspace */
  /* keep every relu input away from its kink, where finite differences
   * are meaningless: nudge a unit's bias until no instance is near 0 */
  for (int l = 0; l < L; l++)
    for (int tries = 0; tries < 50; tries++) {
      int near = 0;
      for (int k = 0; k < n; k++) {
        double pre = a.b1->value.data[l];
        for (int c = 0; c < C; c++) pre += (double)a.w1->value.data[l * C + c] * x[k * C + c];
        near |= fabs(pre) < 0.05;
      }
      if (!near) break;
      a.b1->value.data[l] += 0.037f;
    }
  CHECK_OK(sm_abmil_forward(&a, x, n, y, attn, &err));
  double asum = 0;
  for (int k = 0; k < n; k++) asum += attn[k];
  CHECK_NEAR(asum, 1.0, 1e-5);
  nic_model_zero_grad(m);
  CHECK_OK(sm_abmil_backward(&a, x, n, w, &err));
  double worst = 0;
  const float h = 2e-3f; /* small: a relu kink must not fall inside the step */
  for (int i = 0; i < np; i++) {
    nic_param *p = ps[i];
    for (int64_t q = 0; q < nic_tensor_numel(&p->value); q++) {
      float keep = p->value.data[q];
      p->value.data[q] = keep + h;
      double lp = abmil_loss(&a, x, n, w, y);
      p->value.data[q] = keep - h;
      double lm = abmil_loss(&a, x, n, w, y);
      p->value.data[q] = keep;
      double num = (lp - lm) / (2 * h), ana = p->grad.data[q];
      double e = fabs(num - ana) / fmax(1e-2, fabs(num) + fabs(ana));
      if (e > worst) worst = e;
      if (e > 2e-2)
        fprintf(stderr, "  %s[%lld]: analytic %g numeric %g\n", p->name, (long long)q, ana, num);
    }
  }
  CHECK(worst < 2e-2);
  /* a bag is a set: permuting the instances changes nothing */
  float xp[35], y2[3];
  for (int k = 0; k < n; k++) memcpy(xp + k * C, x + ((k + 3) % n) * C, sizeof(float) * (size_t)C);
  sm_abmil_forward(&a, x, n, y, NULL, &err);
  sm_abmil_forward(&a, xp, n, y2, NULL, &err);
  for (int c = 0; c < K; c++) CHECK_NEAR(y[c], y2[c], 1e-5);
  sm_abmil_release(&a);
  nic_model_free(m);
  nic_ctx_free(ctx);
}

/* The Cox loss the survival task trains with (nic_loss_cox), checked
 * numerically on a batch with tied times and censoring. */
static void test_cox_gradient(void) {
  float r[6] = {0.3f, -0.2f, 1.1f, 0.0f, -0.7f, 0.5f}, tm[6] = {5, 3, 3, 8, 1, 5};
  int ev[6] = {1, 1, 0, 1, 1, 0};
  int64_t shp[2] = {6, 1};
  nic_tensor x, g = NIC_TENSOR_INIT;
  nic_tensor_wrap(&x, r, 2, shp);
  float loss = 0, lp = 0, lm = 0;
  CHECK_OK(nic_loss_cox(&x, tm, ev, &loss, &g, NULL));
  double worst = 0;
  for (int i = 0; i < 6; i++) {
    float keep = r[i];
    r[i] = keep + 1e-2f;
    nic_loss_cox(&x, tm, ev, &lp, NULL, NULL);
    r[i] = keep - 1e-2f;
    nic_loss_cox(&x, tm, ev, &lm, NULL, NULL);
    r[i] = keep;
    worst = fmax(worst, fabs((lp - lm) / 2e-2 - g.data[i]));
  }
  CHECK(worst < 1e-3);
  nic_tensor_free(&g);
}

/* ---- learnable toy tasks ------------------------------------------------------------------ */

static void show_progress(void *user, const nic_sm_progress *p) {
  (void)user;
  if (getenv("NIC_TEST_VERBOSE") && p->step == p->steps)
    printf("    epoch %d loss %.4f val %.4f val_loss %.4f lr %g best %d\n", p->epoch, p->loss,
           p->val_metric, p->val_loss, (double)p->lr, p->best_epoch);
}

static nic_sm_opts small_opts(nic_sm_kind kind) {
  nic_sm_opts o = nic_sm_default_opts();
  o.progress = show_progress;
  o.kind = kind;
  o.crop = 16; /* the toy grids are at most 16 cells wide */
  o.filters = 16;
  o.hidden = 16;
  o.attn_dim = 8;
  o.dropout = 0.1f; /* 20% of 16 filters is a lot */
  o.batch = 8;
  o.epochs = 30;
  o.steps = 20;
  o.patience = 15;
  o.lr = kind == NIC_SM_ABMIL ? 3e-3f : 1e-2f;
  o.test_crops = 4;
  o.seed = 5;
  return o;
}

/* The toy cohorts' folds: 3, a fifth of each fold's training cases validating. */
static void toy_splits(const nic_cohort *c, nic_splits *s) {
  nic_error err = {0};
  CHECK_OK(nic_splits_kfold(c, 3, 0.2, 2, s, &err));
}

/* Trains on fold 0 of toy_splits and scores its test slides with the task's metric. */
static double toy_metric(const char *dir, nic_task task, const nic_sm_opts *o, nic_ctx *ctx,
                         nic_slidemodel **keep) {
  nic_cohort c;
  load_cohort(&c, dir, task);
  nic_splits s;
  nic_error err = {0};
  toy_splits(&c, &s);
  nic_slidemodel *m = NULL;
  double t0 = now_s();
  nic_status st = nic_sm_train(&m, ctx, &c, &s.folds[0], o, &err);
  CHECK(st == NIC_OK);
  if (st != NIC_OK) fprintf(stderr, "train: %s\n", err.msg);
  double metric = NAN;
  if (st == NIC_OK) {
    nic_fold *f = &s.folds[0];
    double *scores = calloc((size_t)f->ntest, sizeof(double));
    int *cls = calloc((size_t)f->ntest, sizeof(int)), *ev = calloc((size_t)f->ntest, sizeof(int));
    double *val = calloc((size_t)f->ntest, sizeof(double));
    for (int a = 0; a < f->ntest; a++) {
      const nic_cohort_slide *e = &c.slides[f->test[a]];
      CHECK_OK(nic_sm_predict(m, ctx, e->path, &scores[a], &err));
      cls[a] = e->cls, ev[a] = e->event, val[a] = e->value;
    }
    metric = sm_main_metric(task, 2, cls, val, ev, scores, f->ntest);
    printf("  %s %s: %s %.3f on %d test slides (best epoch %d, %.1f s)\n",
           nic_sm_kind_name(o->kind), nic_task_name(task), nic_task_main_metric(task), metric,
           f->ntest, nic_sm_best_epoch(m), now_s() - t0);
    free(scores), free(cls), free(ev), free(val);
  }
  if (keep)
    *keep = m;
  else
    nic_sm_free(m);
  nic_splits_free(&s);
  nic_cohort_free(&c);
  return metric;
}

static const char *binary_dir;

/* The share of the first 10 positive toy slides whose heatmap peaks within
 * `tol` cells (Chebyshev) of the planted cluster, found from the features
 * themselves (channels 0-3 averaging above 1.5). */
static double heatmap_hits(nic_slidemodel *m, nic_ctx *ctx, const char *dir, int tol) {
  nic_cohort c;
  load_cohort(&c, dir, NIC_TASK_BINARY);
  nic_error err = {0};
  int tried = 0, hits = 0;
  for (int i = 0; i < c.n && tried < 10; i++) {
    if (c.slides[i].cls != 1) continue;
    tried++;
    float *v = NULL;
    int H, W;
    nic_features_reader *r = NULL;
    if (nic_sm_heatmap(m, ctx, c.slides[i].path, -1, &v, &H, &W, &err) != NIC_OK ||
        nic_features_open(&r, c.slides[i].path, &err) != NIC_OK) {
      fprintf(stderr, "heatmap: %s\n", err.msg);
      free(v);
      continue;
    }
    const nic_features_meta *meta = nic_features_meta_of(r);
    int64_t n = meta->count, C = meta->embed_dim;
    float *f = malloc(sizeof(float) * (size_t)(n * C));
    int32_t *xy = malloc(sizeof(int32_t) * 2 * (size_t)n);
    int best = -1, hit = 0;
    for (int q = 0; q < H * W; q++)
      if (isfinite(v[q]) && (best < 0 || v[q] > v[best])) best = q;
    if (nic_features_read(r, 0, n, f, xy, &err) == NIC_OK && best >= 0)
      for (int64_t k = 0; k < n && !hit; k++) {
        int ci, cj;
        nic_features_coord_cell(meta, xy[2 * k], xy[2 * k + 1], &ci, &cj);
        double s = (f[k * C] + f[k * C + 1] + f[k * C + 2] + f[k * C + 3]) / 4;
        hit = s > 1.5 && abs(ci - best / W) <= tol && abs(cj - best % W) <= tol;
      }
    hits += hit;
    free(f), free(xy), free(v);
    nic_features_close(r);
  }
  nic_cohort_free(&c);
  return tried ? (double)hits / tried : 0;
}

static void test_toy_binary(void) {
  toy t = {NIC_TASK_BINARY, 60, 8, 10, 16, 1, 21};
  binary_dir = make_toy(&t);
  nic_ctx *ctx = test_ctx(1);
  nic_sm_opts o = small_opts(NIC_SM_CNN);
  nic_slidemodel *m = NULL;
  double auc = toy_metric(binary_dir, NIC_TASK_BINARY, &o, ctx, &m);
  CHECK(auc > 0.9);
  /* Grad-CAM finds the cluster (at the first block's half resolution) */
  double hit = m ? heatmap_hits(m, ctx, binary_dir, 2) : 0;
  printf("  Grad-CAM peaks at the cluster in %.0f%% of positive slides\n", 100 * hit);
  CHECK(hit >= 0.8);
  nic_sm_free(m);
  o = small_opts(NIC_SM_ABMIL);
  auc = toy_metric(binary_dir, NIC_TASK_BINARY, &o, ctx, &m);
  CHECK(auc > 0.9);
  hit = m ? heatmap_hits(m, ctx, binary_dir, 0) : 0;
  printf("  attention peaks on the cluster in %.0f%% of positive slides\n", 100 * hit);
  CHECK(hit >= 0.8);
  nic_sm_free(m);
  /* the cluster detector: its output starts rising with the score map (so
   * that training cannot settle on "no high score means positive") */
  o = small_opts(NIC_SM_CLUSTER);
  o.epochs = 1;
  o.lr = 1e-9f; /* one epoch that changes nothing visible */
  CHECK(toy_metric(binary_dir, NIC_TASK_BINARY, &o, ctx, &m) >= 0);
  if (m) {
    nic_param *w = nic_model_param(m->net, "out.weight");
    CHECK(w && w->value.shape[0] == 2 && w->value.shape[1] == 1);
    CHECK(w && fabsf(w->value.data[0]) < 1e-6f && fabsf(w->value.data[1] - 1.0f) < 1e-6f);
    CHECK(nic_model_param(m->net, "conv1.weight") && !nic_model_param(m->net, "bn1.gamma"));
  }
  nic_sm_free(m);
  o = small_opts(NIC_SM_CLUSTER);
  auc = toy_metric(binary_dir, NIC_TASK_BINARY, &o, ctx, &m);
  CHECK(auc > 0.9);
  /* Grad-CAM on the smoothed score map, at the grid's resolution */
  hit = m ? heatmap_hits(m, ctx, binary_dir, 1) : 0;
  printf("  cluster Grad-CAM peaks at the cluster in %.0f%% of positive slides\n", 100 * hit);
  CHECK(hit >= 0.8);
  nic_sm_free(m);
  nic_ctx_free(ctx);
}

typedef struct epoch_log {
  int n;
  double metric[64], loss[64];
} epoch_log;

static void log_epochs(void *user, const nic_sm_progress *p) {
  epoch_log *l = user;
  if (p->step == p->steps && p->epoch < 64 && !isnan(p->val_loss)) {
    l->metric[p->epoch] = p->val_metric;
    l->loss[p->epoch] = p->val_loss;
    l->n = p->epoch + 1;
  }
}

/* The kept epoch is the best validation metric (ties to the lower loss) by
 * default, the lowest validation loss with monitor_loss. Short and noisy on
 * purpose, so that the two differ (epochs 6 and 5 on the development
 * machine). */
static void test_monitor(void) {
  nic_ctx *ctx = test_ctx(1);
  for (int by_loss = 0; by_loss <= 1; by_loss++) {
    nic_sm_opts o = small_opts(NIC_SM_CNN);
    epoch_log l = {0, {0}, {0}};
    o.epochs = 8;
    o.steps = 4;
    o.patience = 0;
    o.monitor_loss = by_loss;
    o.progress = log_epochs;
    o.progress_user = &l;
    nic_slidemodel *m = NULL;
    toy_metric(binary_dir, NIC_TASK_BINARY, &o, ctx, &m);
    int want = 0;
    for (int e = 1; e < l.n; e++) {
      int better =
          by_loss ? l.loss[e] < l.loss[want]
                  : l.metric[e] > l.metric[want] + 1e-9 ||
                        (fabs(l.metric[e] - l.metric[want]) <= 1e-9 && l.loss[e] < l.loss[want]);
      if (better) want = e;
    }
    CHECK(l.n == o.epochs);
    CHECK(m && nic_sm_best_epoch(m) == want);
    printf("  monitor %s: kept epoch %d of %d\n", by_loss ? "loss" : "metric",
           m ? nic_sm_best_epoch(m) : -1, l.n);
    nic_sm_free(m);
  }
  nic_ctx_free(ctx);
}

/* Cluster options out of range are refused with a message naming them. */
static void test_cluster_options(void) {
  if (!binary_dir) return;
  nic_ctx *ctx = test_ctx(1);
  nic_cohort c;
  load_cohort(&c, binary_dir, NIC_TASK_BINARY);
  nic_splits s;
  toy_splits(&c, &s);
  int bad[3][2] = {{4, 1}, {0, 1}, {3, 0}}; /* smooth, scores */
  for (int i = 0; i < 3; i++) {
    nic_sm_opts o = small_opts(NIC_SM_CLUSTER);
    o.smooth = bad[i][0];
    o.scores = bad[i][1];
    nic_slidemodel *m = NULL;
    nic_error err = {0};
    CHECK(nic_sm_train(&m, ctx, &c, &s.folds[0], &o, &err) == NIC_EINVAL && !m);
    CHECK(strstr(err.msg, "smooth odd") != NULL);
  }
  nic_sm_kind k;
  nic_error err = {0};
  CHECK_OK(nic_sm_kind_from_name("cluster", &k, &err));
  CHECK(k == NIC_SM_CLUSTER && !strcmp(nic_sm_kind_name(k), "cluster"));
  CHECK(nic_sm_kind_from_name("clusters", &k, &err) == NIC_EINVAL && strstr(err.msg, "cluster"));
  nic_splits_free(&s);
  nic_cohort_free(&c);
  nic_ctx_free(ctx);
}

static void test_toy_regression(void) {
  toy t = {NIC_TASK_REGRESSION, 60, 8, 10, 14, 0, 22};
  const char *dir = make_toy(&t);
  nic_ctx *ctx = test_ctx(1);
  nic_sm_opts o = small_opts(NIC_SM_CNN);
  double rho = toy_metric(dir, NIC_TASK_REGRESSION, &o, ctx, NULL);
  CHECK(rho > 0.7);
  o = small_opts(NIC_SM_ABMIL);
  rho = toy_metric(dir, NIC_TASK_REGRESSION, &o, ctx, NULL);
  CHECK(rho > 0.7);
  o = small_opts(NIC_SM_CLUSTER);
  rho = toy_metric(dir, NIC_TASK_REGRESSION, &o, ctx, NULL);
  CHECK(rho > 0.7);
  nic_ctx_free(ctx);
}

/* The mean risk of model m over the training slides of toy_metric's fold. */
static double mean_training_risk(nic_slidemodel *m, nic_ctx *ctx, const char *dir) {
  nic_cohort c;
  load_cohort(&c, dir, NIC_TASK_SURVIVAL);
  nic_splits s;
  nic_error err = {0};
  toy_splits(&c, &s);
  double sum = 0, r = 0;
  const nic_fold *f = &s.folds[0];
  for (int a = 0; a < f->ntrain; a++) {
    CHECK_OK(nic_sm_predict(m, ctx, c.slides[f->train[a]].path, &r, &err));
    sum += r;
  }
  int n = f->ntrain;
  nic_splits_free(&s);
  nic_cohort_free(&c);
  return n ? sum / n : NAN;
}

static void test_toy_survival(void) {
  toy t = {NIC_TASK_SURVIVAL, 60, 8, 10, 14, 0, 23};
  const char *dir = make_toy(&t);
  nic_ctx *ctx = test_ctx(1);
  nic_sm_kind kinds[3] = {NIC_SM_CNN, NIC_SM_ABMIL, NIC_SM_CLUSTER};
  for (int k = 0; k < 3; k++) {
    nic_sm_opts o = small_opts(kinds[k]);
    nic_slidemodel *m = NULL;
    double ci = toy_metric(dir, NIC_TASK_SURVIVAL, &o, ctx, &m);
    CHECK(ci > 0.7);
    if (!m) continue;
    /* risks are centred on the training slides (so that the folds' risks
     * pool), and the centring is kept in the model file */
    double mean = mean_training_risk(m, ctx, dir);
    printf("  %s: mean training risk %.2e (offset %.3f)\n", nic_sm_kind_name(o.kind), mean,
           m->risk_offset);
    CHECK(fabs(mean) < 1e-6 && fabs(m->risk_offset) > 1e-6);
    char path[4096];
    snprintf(path, sizeof path, "%s/surv_%d.safetensors", dir, k);
    nic_error err = {0};
    nic_slidemodel *l = NULL;
    CHECK_OK(nic_sm_save(m, path, &err));
    CHECK_OK(nic_sm_load(&l, path, &err));
    CHECK(l && l->risk_offset == m->risk_offset);
    nic_sm_free(l);
    nic_sm_free(m);
  }
  nic_ctx_free(ctx);
}

/* ---- prediction, model files, heatmaps ------------------------------------------------------ */

static void test_predict_and_heatmaps(void) {
  if (!binary_dir) return;
  nic_ctx *ctx = test_ctx(1);
  const char *out = nic_test_tmpdir();
  nic_error err = {0};
  for (int kind = 0; kind < 3; kind++) {
    nic_sm_opts o = small_opts((nic_sm_kind)kind);
    o.epochs = 4;
    /* three stride-2 blocks leave a 2 x 2 map: the file must keep that, or the
     * loaded model would pool a different map and predict differently */
    if (kind == NIC_SM_CNN) o.strided = 3;
    nic_slidemodel *m = NULL;
    toy_metric(binary_dir, NIC_TASK_BINARY, &o, ctx, &m);
    if (!m) continue;
    char model[512], slide[512], gj[512], png[512];
    snprintf(model, sizeof model, "%s/m%d.safetensors", out, kind);
    snprintf(slide, sizeof slide, "%s/toy_000.h5", binary_dir);
    double a = -1, b = -2, c = -3;
    CHECK_OK(nic_sm_predict(m, ctx, slide, &a, &err));
    CHECK_OK(nic_sm_predict(m, ctx, slide, &b, &err));
    CHECK(a == b && a >= 0 && a <= 1);
    CHECK_OK(nic_sm_save(m, model, &err));
    nic_slidemodel *l = NULL;
    CHECK_OK(nic_sm_load(&l, model, &err));
    if (l) {
      CHECK(nic_sm_kind_of(l) == (nic_sm_kind)kind && nic_sm_task(l) == NIC_TASK_BINARY);
      CHECK(nic_sm_num_classes(l) == 2 && !strcmp(nic_sm_class_name(l, 1), "tumour"));
      CHECK_OK(nic_sm_predict(l, ctx, slide, &c, &err));
      CHECK(c == a); /* bit for bit after a save and load */
      /* heatmap: finite exactly on tissue */
      float *v = NULL;
      int H = 0, W = 0;
      CHECK_OK(nic_sm_heatmap(l, ctx, slide, -1, &v, &H, &W, &err));
      nic_features_reader *r = NULL;
      CHECK_OK(nic_features_open(&r, slide, &err));
      if (v && r) {
        const nic_features_meta *meta = nic_features_meta_of(r);
        uint8_t *mask = malloc((size_t)H * W);
        CHECK(H == meta->grid_h && W == meta->grid_w);
        CHECK_OK(nic_features_read_tissue_mask(r, mask, &err));
        int ok = 1, tissue = 0;
        double sum = 0;
        for (int q = 0; q < H * W; q++) {
          ok &= mask[q] ? isfinite(v[q]) && v[q] >= 0 : isnan(v[q]);
          tissue += mask[q];
          if (mask[q]) sum += v[q];
        }
        CHECK(ok);
        if (kind == NIC_SM_ABMIL) CHECK_NEAR(sum, 1.0, 1e-4); /* attention sums to 1 */
        snprintf(gj, sizeof gj, "%s/h%d.geojson", out, kind);
        snprintf(png, sizeof png, "%s/h%d.png", out, kind);
        CHECK_OK(nic_heatmap_write_geojson(gj, meta, v, &err));
        CHECK_OK(nic_heatmap_write_png(png, meta, v, mask, NULL, 0, 0, 0, &err));
        CHECK(file_exists(png));
        json_object *doc = json_object_from_file(gj), *feats = NULL;
        CHECK(doc && json_object_object_get_ex(doc, "features", &feats));
        if (feats) {
          CHECK((int)json_object_array_length(feats) == tissue);
          json_object *f0 = json_object_array_get_idx(feats, 0), *props, *meas, *score, *geom;
          CHECK(json_object_object_get_ex(f0, "properties", &props) &&
                json_object_object_get_ex(props, "measurements", &meas) &&
                json_object_object_get_ex(meas, "score", &score));
          CHECK(json_object_object_get_ex(f0, "geometry", &geom));
        }
        json_object_put(doc);
        /* a thumbnail: the overlay keeps its size */
        uint8_t *thumb = malloc(40 * 30 * 3);
        memset(thumb, 200, 40 * 30 * 3);
        double ds = meta->stride_level0 * meta->grid_w / 40.0;
        CHECK_OK(nic_heatmap_write_png(png, meta, v, mask, thumb, 40, 30, ds, &err));
        free(thumb);
        free(mask);
      }
      nic_features_close(r);
      free(v);
      nic_sm_free(l);
    }
    nic_sm_free(m);
  }
  /* bad inputs */
  nic_slidemodel *l = NULL;
  char path[512];
  snprintf(path, sizeof path, "%s/labels.csv", binary_dir);
  CHECK(nic_sm_load(&l, path, &err) != NIC_OK && strstr(err.msg, "labels.csv"));
  nic_ctx_free(ctx);
}

/* ---- cross-validation run and evaluation ----------------------------------------------------- */

static void test_crossval(void) {
  if (!binary_dir) return;
  nic_ctx *ctx = test_ctx(1);
  nic_cohort c;
  load_cohort(&c, binary_dir, NIC_TASK_BINARY);
  nic_splits s;
  nic_error err = {0};
  CHECK_OK(nic_splits_kfold(&c, 2, 0.2, 1, &s, &err));
  nic_sm_opts o = small_opts(NIC_SM_ABMIL);
  o.epochs = 3;
  const char *run = nic_test_tmpdir();
  nic_eval e;
  CHECK_OK(nic_sm_crossval(ctx, &c, &s, &o, run, "nic train ...", &e, &err));
  char p[512];
  const char *files[] = {"splits_0.csv",       "splits_1.csv",    "fold_0.safetensors",
                         "fold_1.safetensors", "predictions.csv", "metrics.json"};
  for (int i = 0; i < 6; i++) {
    snprintf(p, sizeof p, "%s/%s", run, files[i]);
    CHECK(file_exists(p));
  }
  char line[512];
  nic_eval_line(&e, line, sizeof line);
  CHECK(!strncmp(line, "auc=", 4) && strstr(line, "auc_sd=") && strstr(line, "folds=2"));
  CHECK(e.nfolds == 2 && e.pooled.n == c.n);
  nic_eval_free(&e);
  nic_preds pr;
  snprintf(p, sizeof p, "%s/predictions.csv", run);
  CHECK_OK(nic_preds_read(&pr, p, -1, &err));
  CHECK(pr.task == NIC_TASK_BINARY && pr.n == c.n && pr.has_fold && pr.class_names &&
        !strcmp(pr.class_names[1], "tumour"));
  nic_preds_free(&pr);
  snprintf(p, sizeof p, "%s/metrics.json", run);
  json_object *doc = json_object_from_file(p), *x;
  CHECK(doc && json_object_object_get_ex(doc, "per_fold", &x) && json_object_array_length(x) == 2);
  CHECK(doc && json_object_object_get_ex(doc, "metrics", &x) &&
        json_object_object_get_ex(x, "auc", &x));
  json_object_put(doc);
  /* the splits of the run can be reused */
  nic_splits l;
  CHECK_OK(nic_splits_load(&l, &c, run, NULL, NULL, &err));
  CHECK(l.k == 2 && l.folds[1].ntest == s.folds[1].ntest);
  nic_splits_free(&l);
  nic_splits_free(&s);
  nic_cohort_free(&c);
  nic_ctx_free(ctx);
}

static void test_eval(void) {
  const char *dir = nic_test_tmpdir();
  char p[512], line[512];
  nic_error err = {0};
  nic_preds pr;
  nic_eval e;
  /* binary, two folds; fold 1 has one class: its AUC is undefined */
  snprintf(p, sizeof p, "%s/b.csv", dir);
  write_text(p, "slide_id,label,score,fold\n"
                "a,0,0.1,0\nb,0,0.4,0\nc,1,0.35,0\nd,1,0.8,0\n"
                "e,1,0.9,1\nf,1,0.2,1\ng,0,0.3,2\nh,1,0.7,2\n");
  CHECK_OK(nic_preds_read(&pr, p, -1, &err));
  CHECK(pr.task == NIC_TASK_BINARY && pr.n == 8);
  CHECK_OK(nic_evaluate(&pr, NULL, &e, &err));
  CHECK(e.nfolds == 3 && !strcmp(e.names[0], "auc"));
  CHECK_NEAR(e.folds[0].ci[0].estimate, 0.75, 1e-12); /* 3 of 4 pairs */
  CHECK(!e.folds[1].ok[0] && e.folds[2].ok[0]);
  /* pooled: positives {.35,.8,.9,.2,.7} against negatives {.1,.4,.3}:
   * 2 + 3 + 3 + 1 + 3 = 12 of 15 pairs ordered */
  CHECK_NEAR(e.pooled.ci[0].estimate, 12.0 / 15, 1e-12);
  CHECK(e.pooled.ci_ok[0] && e.pooled.ci[0].lo <= e.pooled.ci[0].estimate);
  CHECK_NEAR(e.summary[0].mean, (0.75 + 1.0) / 2, 1e-12);
  CHECK_NEAR(e.pooled.ci[2].estimate, 6.0 / 8, 1e-12); /* accuracy at 0.5: c and f wrong */
  nic_eval_line(&e, line, sizeof line);
  CHECK(!strncmp(line, "auc=0.8750 auc_sd=0.1768 bacc=", 30));
  snprintf(p, sizeof p, "%s/roc.png", dir);
  CHECK_OK(nic_eval_plot(&pr, p, &err));
  CHECK(file_exists(p));
  nic_eval_free(&e);
  nic_preds_free(&pr);

  /* multiclass with ordinal names: quadratic kappa; survival; regression */
  snprintf(p, sizeof p, "%s/m.csv", dir);
  write_text(p, "slide_id,label,score_1,score_2,score_3\n"
                "a,1,0.7,0.2,0.1\nb,2,0.2,0.5,0.3\nc,3,0.1,0.3,0.6\nd,3,0.3,0.4,0.3\n");
  CHECK_OK(nic_preds_read(&pr, p, -1, &err));
  CHECK(pr.task == NIC_TASK_MULTICLASS && pr.k == 3 && pr.cls[3] == 2);
  CHECK_OK(nic_evaluate(&pr, NULL, &e, &err));
  CHECK_NEAR(e.pooled.ci[2].estimate, 0.75, 1e-12);
  nic_eval_line(&e, line, sizeof line);
  CHECK(!strncmp(line, "auc=", 4) && strstr(line, "folds=0"));
  nic_eval_free(&e);
  nic_preds_free(&pr);

  snprintf(p, sizeof p, "%s/s.csv", dir);
  write_text(p, "slide_id,label,score,time,event\n"
                "a,,2.0,1,1\nb,,1.0,2,1\nc,,0.5,3,0\nd,,0.1,4,1\ne,,1.5,5,0\n");
  CHECK_OK(nic_preds_read(&pr, p, -1, &err));
  CHECK(pr.task == NIC_TASK_SURVIVAL);
  CHECK_OK(nic_evaluate(&pr, NULL, &e, &err));
  double ci;
  CHECK_OK(nic_cindex(pr.time, pr.event, pr.score, 5, &ci, NULL, &err));
  CHECK_NEAR(e.pooled.ci[0].estimate, ci, 1e-12);
  nic_eval_line(&e, line, sizeof line);
  CHECK(!strncmp(line, "c_index=", 8));
  snprintf(p, sizeof p, "%s/km.png", dir);
  CHECK_OK(nic_eval_plot(&pr, p, &err));
  nic_eval_free(&e);
  nic_preds_free(&pr);

  snprintf(p, sizeof p, "%s/r.csv", dir);
  write_text(p, "slide_id,label,score\na,1.5,1.2\nb,2.5,2.0\nc,0.5,0.9\nd,3.5,3.9\n");
  CHECK_OK(nic_preds_read(&pr, p, -1, &err));
  CHECK(pr.task == NIC_TASK_REGRESSION);
  CHECK_OK(nic_evaluate(&pr, NULL, &e, &err));
  CHECK_NEAR(e.pooled.ci[0].estimate, 1.0, 1e-12);
  nic_eval_free(&e);
  nic_preds_free(&pr);

  /* errors */
  write_text(p, "slide,label,score\na,1,0.5\n");
  CHECK(nic_preds_read(&pr, p, -1, &err) == NIC_EFORMAT && strstr(err.msg, "'slide_id'"));
  write_text(p, "slide_id,label,score\na,1,x\n");
  CHECK(nic_preds_read(&pr, p, -1, &err) == NIC_EFORMAT && strstr(err.msg, "line 2"));
}

/* ---- main -------------------------------------------------------------------------------------
 */

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--toy")) { /* for tests/cli_slidemodel.sh */
    nic_error err = {0};
    toy t = {NIC_TASK_BINARY, 40, 8, 10, 14, 1, 31};
    char sub[600];
    mkdir(argv[2], 0777); /* may exist */
    nic_status st = write_toy(argv[2], &t, &err);
    snprintf(sub, sizeof sub, "%s/survival", argv[2]);
    toy s = {NIC_TASK_SURVIVAL, 24, 8, 10, 12, 0, 32};
    if (st == NIC_OK && mkdir(sub, 0777) != 0)
      st = nic_err(&err, NIC_EIO, "%s: cannot create", sub);
    if (st == NIC_OK) st = write_toy(sub, &s, &err);
    if (st != NIC_OK) fprintf(stderr, "%s\n", err.msg);
    return st == NIC_OK ? 0 : 1;
  }
  const char *san = getenv("NIC_SANITIZED");
  sanitized = san && *san && strcmp(san, "0");
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* the bad-file tests expect HDF5 errors */
  RUN(test_cohort);
  RUN(test_splits);
  RUN(test_orientations);
  RUN(test_cnn_twin);
  RUN(test_abmil_gradients);
  RUN(test_cox_gradient);
  RUN(test_eval);
  RUN(test_toy_binary);
  RUN(test_monitor);
  RUN(test_cluster_options);
  RUN(test_toy_regression);
  RUN(test_toy_survival);
  RUN(test_predict_and_heatmaps);
  RUN(test_crossval);
  return nic_test_finish();
}
