/* The multi-threaded batch loader: order and reproducibility whatever the
 * thread count, class-balanced sampling, unreadable items, epoch restarts
 * and shutdown, several datasets at once, and throughput. */
#include <errno.h>
#include <png.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "nic/data.h"
#include "testutil.h"

static const char *tmp;

static void die(const char *what, const char *path) {
  fprintf(stderr, "cannot write %s: %s\n", path, what);
  exit(1);
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, n, f) != n) die(strerror(errno), path);
  fclose(f);
}

static void write_png(const char *path, const uint8_t *px, int w, int h) {
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = (png_uint_32)w;
  img.height = (png_uint_32)h;
  img.format = PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&img, path, 0, px, 0, NULL)) die(img.message, path);
}

/* idx files of N grey 12 x 12 images. constant != 0: every pixel of item i
 * is i (so a patch names its item); else a per-item pattern. */
static void write_idx(const char *name, int N, int constant, int (*label)(int)) {
  char img[1024], lab[1024];
  snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte", tmp, name);
  snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte", tmp, name);
  size_t n = 16 + (size_t)N * 144;
  uint8_t *buf = malloc(n), *lb = malloc(8 + (size_t)N);
  uint32_t dims[3] = {(uint32_t)N, 12, 12};
  buf[0] = buf[1] = 0, buf[2] = 8, buf[3] = 3;
  for (int d = 0; d < 3; d++)
    for (int b = 0; b < 4; b++) buf[4 + 4 * d + b] = (uint8_t)(dims[d] >> (24 - 8 * b));
  for (int i = 0; i < N; i++)
    for (int p = 0; p < 144; p++)
      buf[16 + (size_t)i * 144 + p] =
          (uint8_t)(constant ? i : i * 7 + p * 13 + (p % 12) * (p / 12));
  lb[0] = lb[1] = 0, lb[2] = 8, lb[3] = 1;
  for (int b = 0; b < 4; b++) lb[4 + b] = (uint8_t)((uint32_t)N >> (24 - 8 * b));
  for (int i = 0; i < N; i++) lb[8 + i] = (uint8_t)label(i);
  write_bytes(img, buf, n);
  write_bytes(lab, lb, 8 + (size_t)N);
  free(buf);
  free(lb);
}

static nic_dataset *open_idx(const char *name) {
  char img[1024];
  snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte", tmp, name);
  nic_dataset *ds = NULL;
  nic_error e = {0};
  if (nic_dataset_open(&ds, img, NULL, &e) != NIC_OK) {
    fprintf(stderr, "%s\n", e.msg);
    exit(1);
  }
  return ds;
}

static int label_mod3(int i) {
  return i % 3;
}
static int label_imbalanced(int i) {
  return i < 90 ? 0 : 1;
}

/* Items of a whole epoch, in the order the loader gives them. */
static int64_t *epoch_items(nic_loader *l, int64_t epoch, int64_t *n) {
  int64_t cap = nic_loader_epoch_samples(l), k = 0;
  int64_t *items = malloc(sizeof(int64_t) * (size_t)cap);
  nic_error e = {0};
  nic_loader_start_epoch(l, epoch, &e);
  const nic_batch *b;
  while (nic_loader_next(l, &b, &e) == NIC_OK && b)
    for (int i = 0; i < b->n && k < cap; i++) items[k++] = b->item[i];
  *n = k;
  return items;
}

/* FNV-1a over every batch of an epoch: pixels and items. */
static uint64_t epoch_hash(nic_loader *l, int64_t epoch) {
  uint64_t h = 1469598103934665603ULL;
  nic_error e = {0};
  nic_loader_start_epoch(l, epoch, &e);
  const nic_batch *b;
  while (nic_loader_next(l, &b, &e) == NIC_OK && b) {
    size_t n = (size_t)b->n * (size_t)b->size * (size_t)b->size * 3;
    for (size_t i = 0; i < n; i++) h = (h ^ b->pixels[i]) * 1099511628211ULL;
    for (int i = 0; i < b->n; i++) h = (h ^ (uint64_t)b->item[i]) * 1099511628211ULL;
  }
  return h;
}

static void test_sequential(void) {
  nic_dataset *ds = open_idx("seq");
  nic_loader_opts o = nic_loader_default_opts();
  o.batch_size = 10;
  o.patch_size = 16;
  o.sampling = NIC_SAMPLE_SEQUENTIAL;
  nic_loader *l = NULL;
  CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
  if (!l) return;
  CHECK(nic_loader_epoch_samples(l) == 103 && nic_loader_epoch_batches(l) == 11);
  const nic_batch *b = NULL;
  nic_error e = {0};
  CHECK(nic_loader_next(l, &b, &e) == NIC_EINVAL); /* no epoch started */
  CHECK_OK(nic_loader_start_epoch(l, 3, &_e));
  int64_t expect = 0, bad = 0, nb = 0;
  while (nic_loader_next(l, &b, &e) == NIC_OK && b) {
    CHECK(b->epoch == 3 && b->index == nb && b->size == 16 && b->ntasks == 1);
    CHECK(b->n == (nb < 10 ? 10 : 3));
    for (int i = 0; i < b->n; i++, expect++) {
      const uint8_t *p = b->pixels + (size_t)i * 16 * 16 * 3;
      bad += b->item[i] != expect || b->task[i] != 0;
      bad += p[0] != expect || p[16 * 16 * 3 - 1] != expect; /* constant items */
      bad += b->label[i] != expect % 3 || b->mask[i] != 1.0f || !isnan(b->value[i]);
    }
    nb++;
  }
  CHECK(bad == 0 && expect == 103 && nb == 11);
  CHECK(nic_loader_next(l, &b, &e) == NIC_OK && b == NULL); /* stays at the end */
  nic_loader_free(l);

  o.drop_last = 1;
  CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
  if (l) CHECK(nic_loader_epoch_batches(l) == 10);
  nic_loader_free(l);
  /* Only one split. */
  CHECK_OK(nic_dataset_split_stratified(ds, 0.3, 1, &_e));
  o.split = NIC_SPLIT_VALID;
  o.drop_last = 0;
  CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
  if (l) {
    int64_t n;
    int64_t *items = epoch_items(l, 0, &n);
    CHECK(n == nic_dataset_count_split(ds, NIC_SPLIT_VALID) && n == 31);
    int wrong = 0;
    for (int64_t i = 0; i < n; i++) wrong += nic_dataset_split(ds, items[i]) != NIC_SPLIT_VALID;
    CHECK(wrong == 0);
    free(items);
  }
  nic_loader_free(l);
  o.split = NIC_SPLIT_TEST;
  CHECK(nic_loader_create(&l, &ds, 1, &o, &e) == NIC_EINVAL && !l);
  nic_dataset_free(ds);
}

static void test_shuffle_reproducible(void) {
  nic_dataset *ds = open_idx("seq");
  nic_loader_opts o = nic_loader_default_opts();
  o.batch_size = 8;
  o.patch_size = 16;
  o.seed = 99;
  int64_t *ref = NULL, nref = 0;
  const int threads[4] = {1, 2, 0, 3}, prefetch[4] = {1, 0, 0, 2};
  for (int k = 0; k < 4; k++) {
    o.threads = threads[k];
    o.prefetch = prefetch[k];
    nic_loader *l = NULL;
    CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
    if (!l) continue;
    int64_t n;
    int64_t *items = epoch_items(l, 0, &n);
    if (k == 0) {
      ref = items, nref = n;
      /* A permutation, not the identity. */
      int seen[103] = {0}, ident = 1;
      for (int64_t i = 0; i < n; i++) seen[items[i]]++, ident &= items[i] == i;
      int perm = n == 103;
      for (int i = 0; i < 103; i++) perm &= seen[i] == 1;
      CHECK(perm && !ident);
      int64_t n1;
      int64_t *e1 = epoch_items(l, 1, &n1); /* another epoch, another order */
      CHECK(n1 == n && memcmp(e1, items, sizeof(int64_t) * (size_t)n) != 0);
      free(e1);
      int64_t n0;
      int64_t *e0 = epoch_items(l, 0, &n0); /* epoch 0 again: the same */
      CHECK(n0 == n && !memcmp(e0, items, sizeof(int64_t) * (size_t)n));
      free(e0);
    } else {
      CHECK(n == nref && !memcmp(items, ref, sizeof(int64_t) * (size_t)n));
      free(items);
    }
    nic_loader_free(l);
  }
  free(ref);
  nic_dataset_free(ds);
}

static void test_augmented_determinism(void) {
  nic_dataset *ds = open_idx("pat");
  nic_augment a = nic_augment_default();
  a.blur_prob = 0.5f;
  nic_loader_opts o = nic_loader_default_opts();
  o.batch_size = 7;
  o.patch_size = 24;
  o.seed = 5;
  o.augment = &a;
  uint64_t h[4];
  const int threads[4] = {1, 2, 0, 4};
  for (int k = 0; k < 4; k++) {
    o.threads = threads[k];
    nic_loader *l = NULL;
    CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
    if (!l) return;
    h[k] = epoch_hash(l, 2);
    nic_loader_free(l);
  }
  CHECK(h[0] == h[1] && h[0] == h[2] && h[0] == h[3]);
  o.seed = 6;
  nic_loader *l = NULL;
  CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
  if (l) CHECK(epoch_hash(l, 2) != h[0]);
  nic_loader_free(l);

  /* The loader's sample equals loading the item and augmenting it by hand
   * with the sample's seed, when there is no zoom (the loader zooms while
   * resampling, nic_augment_patch after). */
  a.zoom = 0;
  o.seed = 5;
  o.threads = 2;
  o.sampling = NIC_SAMPLE_SEQUENTIAL;
  CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
  if (!l) return;
  CHECK_OK(nic_loader_start_epoch(l, 4, &_e));
  const nic_batch *b = NULL;
  CHECK_OK(nic_loader_next(l, &b, &_e));
  CHECK_OK(nic_loader_next(l, &b, &_e)); /* samples 7..13 */
  if (b) {
    uint8_t patch[24 * 24 * 3];
    CHECK_OK(nic_dataset_load(ds, b->item[3], 24, 0.5, patch, &_e));
    nic_rng r;
    nic_rng_seed(&r, nic_data_sample_seed(5, 4, 10));
    CHECK_OK(nic_augment_patch(&a, &r, patch, 24, &_e));
    CHECK(!memcmp(patch, b->pixels + 3 * sizeof patch, sizeof patch));
  }
  nic_loader_free(l);
  nic_dataset_free(ds);
}

static void test_balanced(void) {
  nic_dataset *ds = open_idx("imbal");
  nic_loader_opts o = nic_loader_default_opts();
  o.batch_size = 100;
  o.patch_size = 8;
  o.sampling = NIC_SAMPLE_BALANCED;
  o.epoch_size = 4000;
  o.seed = 3;
  nic_loader *l = NULL;
  CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
  if (!l) return;
  CHECK(nic_loader_epoch_samples(l) == 4000 && nic_loader_epoch_batches(l) == 40);
  CHECK_OK(nic_loader_start_epoch(l, 0, &_e));
  const nic_batch *b;
  nic_error e = {0};
  int64_t count[2] = {0, 0}, seen[100] = {0}, wrong = 0;
  while (nic_loader_next(l, &b, &e) == NIC_OK && b)
    for (int i = 0; i < b->n; i++) {
      count[b->label[i]]++;
      seen[b->item[i]]++;
      wrong += b->label[i] != nic_dataset_label(ds, b->item[i]);
    }
  CHECK(wrong == 0 && count[0] + count[1] == 4000);
  double frac = count[1] / 4000.0; /* 10% of the items, half the samples */
  printf("  balanced: class 1 fraction %.3f (items: 10%%)\n", frac);
  CHECK(frac > 0.45 && frac < 0.55);
  int all_minority_seen = 1;
  for (int i = 90; i < 100; i++) all_minority_seen &= seen[i] > 100;
  CHECK(all_minority_seen);
  nic_loader_free(l);
  nic_dataset_free(ds);
}

/* Counts callback reports (called from worker threads). */
typedef struct reports {
  pthread_mutex_t mu;
  int n;
  char last[1024];
} reports;

static void on_error(void *user, const char *item, const char *msg) {
  reports *r = user;
  pthread_mutex_lock(&r->mu);
  r->n++;
  snprintf(r->last, sizeof r->last, "%s", item);
  pthread_mutex_unlock(&r->mu);
  (void)msg;
}

static void test_broken(void) {
  /* 30 PNGs in two classes; 4 of class a and 1 of class b are garbage. */
  char dir[512], path[1024];
  snprintf(dir, sizeof dir, "%s/broken", tmp);
  mkdir(dir, 0755);
  snprintf(path, sizeof path, "%s/list.csv", dir);
  FILE *csv = fopen(path, "w");
  uint8_t px[10 * 10 * 3];
  for (int i = 0; i < 30; i++) {
    const char *cls = i < 20 ? "a" : "b";
    int broken = i == 3 || i == 7 || i == 8 || i == 15 || i == 25;
    snprintf(path, sizeof path, "%s/%02d.png", dir, i);
    if (broken) {
      write_bytes(path, "\x89PNG\r\n\x1a\n broken", 16);
    } else {
      memset(px, i, sizeof px);
      write_png(path, px, 10, 10);
    }
    fprintf(csv, "%02d.png,%s\n", i, cls);
  }
  /* A listed file that does not exist counts as unreadable too. */
  fprintf(csv, "missing.png,b\n");
  fclose(csv);
  nic_dataset *ds = NULL;
  snprintf(path, sizeof path, "%s/list.csv", dir);
  CHECK_OK(nic_dataset_open_csv(&ds, path, NULL, &_e));
  if (!ds) return;
  reports rep;
  memset(&rep, 0, sizeof rep);
  pthread_mutex_init(&rep.mu, NULL);
  nic_loader_opts o = nic_loader_default_opts();
  o.batch_size = 8;
  o.patch_size = 10;
  o.on_error = on_error;
  o.on_error_user = &rep;
  nic_loader *l = NULL;
  CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
  if (!l) return;
  uint64_t h0 = 0;
  for (int epoch = 0; epoch < 2; epoch++) {
    CHECK_OK(nic_loader_start_epoch(l, epoch, &_e));
    const nic_batch *b;
    nic_error e = {0};
    int total = 0, bad_item = 0, cls[2] = {0, 0};
    uint64_t h = 0;
    while (nic_loader_next(l, &b, &e) == NIC_OK && b)
      for (int i = 0; i < b->n; i++) {
        int64_t it = b->item[i];
        total++;
        cls[b->label[i]]++;
        bad_item += it == 3 || it == 7 || it == 8 || it == 15 || it == 25 || it == 30;
        bad_item += b->pixels[(size_t)i * 300] != it; /* the pixels are the item's */
        h = h * 31 + (uint64_t)it;
      }
    CHECK(e.code == NIC_OK);
    /* Every sample delivered, none broken, each replaced within its class. */
    CHECK(total == 31 && bad_item == 0 && cls[0] == 20 && cls[1] == 11);
    if (epoch == 0)
      h0 = h;
    else
      CHECK(h != h0);
  }
  /* Each unreadable item reported once, naming its file. */
  CHECK(nic_loader_num_errors(l) == 6 && rep.n == 6);
  char msg[1024];
  int named = 0;
  for (int k = 0; k < 6; k++) {
    nic_loader_error(l, k, msg, sizeof msg);
    named += strstr(msg, ".png") != NULL;
  }
  CHECK(named == 6);
  nic_loader_error(l, 6, msg, sizeof msg);
  CHECK(msg[0] == '\0');
  nic_loader_free(l);

  /* The same epoch with another thread count: the same replacements. */
  uint64_t hs[2];
  for (int t = 0; t < 2; t++) {
    o.threads = t + 1;
    o.on_error = NULL;
    CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
    if (!l) return;
    int64_t n;
    int64_t *items = epoch_items(l, 0, &n);
    hs[t] = 0;
    for (int64_t i = 0; i < n; i++) hs[t] = hs[t] * 31 + (uint64_t)items[i];
    free(items);
    nic_loader_free(l);
  }
  CHECK(hs[0] == hs[1] && hs[0] == h0);
  nic_dataset_free(ds);
  pthread_mutex_destroy(&rep.mu);

  /* Nothing readable: the batch fails with a message, nothing crashes. */
  snprintf(path, sizeof path, "%s/none.csv", dir);
  FILE *f = fopen(path, "w");
  fprintf(f, "03.png,a\n07.png,a\n");
  fclose(f);
  CHECK_OK(nic_dataset_open_csv(&ds, path, NULL, &_e));
  if (!ds) return;
  o.threads = 2;
  CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
  if (l) {
    CHECK_OK(nic_loader_start_epoch(l, 0, &_e));
    const nic_batch *b = NULL;
    nic_error e = {0};
    CHECK(nic_loader_next(l, &b, &e) == NIC_EIO && b == NULL);
    CHECK(strstr(e.msg, "unreadable") && strstr(e.msg, ".png"));
    CHECK(nic_loader_next(l, &b, &e) == NIC_OK && b == NULL); /* epoch over */
    CHECK(nic_loader_num_errors(l) == 2);
  }
  nic_loader_free(l);
  nic_dataset_free(ds);
}

static void test_restart_and_shutdown(void) {
  nic_dataset *ds = open_idx("seq");
  nic_loader_opts o = nic_loader_default_opts();
  o.batch_size = 4;
  o.patch_size = 64;
  o.threads = 2;
  o.prefetch = 3;
  nic_augment a = nic_augment_default();
  o.augment = &a;
  /* Freed while the workers are busy mid-epoch. */
  for (int k = 0; k < 3; k++) {
    nic_loader *l = NULL;
    CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
    if (!l) return;
    CHECK_OK(nic_loader_start_epoch(l, 0, &_e));
    const nic_batch *b;
    for (int i = 0; i < k; i++) CHECK_OK(nic_loader_next(l, &b, &_e));
    nic_loader_free(l);
  }
  nic_loader *l = NULL;
  CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e)); /* never started */
  nic_loader_free(l);
  /* Restarting mid-epoch gives exactly a fresh loader's epoch. */
  o.augment = NULL;
  CHECK_OK(nic_loader_create(&l, &ds, 1, &o, &_e));
  if (!l) return;
  int64_t nref;
  int64_t *ref = epoch_items(l, 1, &nref);
  const nic_batch *b;
  CHECK_OK(nic_loader_start_epoch(l, 0, &_e));
  for (int i = 0; i < 5; i++) CHECK_OK(nic_loader_next(l, &b, &_e));
  int64_t n;
  int64_t *items = epoch_items(l, 1, &n);
  CHECK(n == nref && !memcmp(items, ref, sizeof(int64_t) * (size_t)n));
  free(items);
  free(ref);
  nic_loader_free(l);
  nic_error e = {0};
  o.batch_size = 0;
  CHECK(nic_loader_create(&l, &ds, 1, &o, &e) == NIC_EINVAL && !l);
  o.batch_size = 4;
  a.noise = -1;
  o.augment = &a;
  CHECK(nic_loader_create(&l, &ds, 1, &o, &e) == NIC_EINVAL && !l);
  nic_dataset_free(ds);
}

static void test_multitask(void) {
  /* A class dataset (idx) and a regression dataset (CSV of PNGs). */
  nic_dataset *ds[2] = {open_idx("seq"), NULL};
  char dir[512], path[1024];
  snprintf(dir, sizeof dir, "%s/reg", tmp);
  mkdir(dir, 0755);
  snprintf(path, sizeof path, "%s/values.csv", dir);
  FILE *csv = fopen(path, "w");
  uint8_t px[20 * 20 * 3];
  for (int i = 0; i < 12; i++) {
    char img[1024];
    snprintf(img, sizeof img, "%s/%d.png", dir, i);
    memset(px, 200 + i, sizeof px);
    write_png(img, px, 20, 20);
    if (i == 5)
      fprintf(csv, "%d.png,\n", i); /* unlabelled */
    else
      fprintf(csv, "%d.png,%d.5\n", i, i);
  }
  fclose(csv);
  CHECK_OK(nic_dataset_open_csv(&ds[1], path, NULL, &_e));
  if (!ds[1]) return;
  nic_dataset_set_mpp(ds[1], 1.0);
  nic_loader_opts o = nic_loader_default_opts();
  o.batch_size = 16;
  o.patch_size = 8;
  o.mpp = 2.0;
  o.sampling = NIC_SAMPLE_SEQUENTIAL;
  nic_loader *l = NULL;
  CHECK_OK(nic_loader_create(&l, ds, 2, &o, &_e));
  if (!l) return;
  CHECK(nic_loader_epoch_samples(l) == 115);
  CHECK_OK(nic_loader_start_epoch(l, 0, &_e));
  const nic_batch *b;
  nic_error e = {0};
  int64_t j = 0, bad = 0;
  while (nic_loader_next(l, &b, &e) == NIC_OK && b) {
    CHECK(b->ntasks == 2);
    for (int i = 0; i < b->n; i++, j++) {
      int t = j < 103 ? 0 : 1;
      int64_t item = j < 103 ? j : j - 103;
      bad += b->task[i] != t || b->item[i] != item;
      if (t == 0) {
        bad += b->label[i] != item % 3 || !isnan(b->value[i]);
        bad += b->mask[i] != 1 || b->mask[b->n + i] != 0;
      } else {
        bad += b->label[i] != -1 || b->pixels[(size_t)i * 8 * 8 * 3] != 200 + item;
        if (item == 5)
          bad += !isnan(b->value[i]) || b->mask[b->n + i] != 0;
        else
          bad += b->value[i] != item + 0.5f || b->mask[b->n + i] != 1;
        bad += b->mask[i] != 0;
      }
    }
  }
  CHECK(bad == 0 && j == 115);
  nic_loader_free(l);
  /* Balanced over tasks: each dataset gets half the samples. */
  o.sampling = NIC_SAMPLE_BALANCED;
  o.epoch_size = 2000;
  o.batch_size = 50;
  CHECK_OK(nic_loader_create(&l, ds, 2, &o, &_e));
  if (l) {
    CHECK_OK(nic_loader_start_epoch(l, 0, &_e));
    int64_t per[2] = {0, 0}, unlabelled = 0;
    while (nic_loader_next(l, &b, &e) == NIC_OK && b)
      for (int i = 0; i < b->n; i++) {
        per[b->task[i]]++;
        unlabelled += b->task[i] == 1 && b->item[i] == 5;
      }
    CHECK(per[0] > 900 && per[1] > 900 && unlabelled == 0);
  }
  nic_loader_free(l);
  nic_dataset_free(ds[0]);
  nic_dataset_free(ds[1]);
}

int main(void) {
  tmp = nic_test_tmpdir();
  write_idx("seq", 103, 1, label_mod3);
  write_idx("pat", 40, 0, label_mod3);
  write_idx("imbal", 100, 1, label_imbalanced);
  RUN(test_sequential);
  RUN(test_shuffle_reproducible);
  RUN(test_augmented_determinism);
  RUN(test_balanced);
  RUN(test_broken);
  RUN(test_restart_and_shutdown);
  RUN(test_multitask);
  return nic_test_finish();
}
