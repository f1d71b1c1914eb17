/* Patch datasets (folder, CSV, PatchCamelyon HDF5, idx), the resampling
 * geometry and the augmentations. All data is written by the tests into a
 * temporary directory; the real PatchCamelyon folder in ../shared is used
 * when present. */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <png.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h>

#include "data/data_internal.h"
#include "nic/data.h"
#include "nic/image.h"
#include "testutil.h"

static const char *tmp;

/* ---- writing test files ---------------------------------------------------- */

static void die(const char *what, const char *path) {
  fprintf(stderr, "cannot write %s: %s\n", path, what);
  exit(1);
}

static void mkdirs(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void mkdirs(const char *fmt, ...) {
  char path[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(path, sizeof path, fmt, ap);
  va_end(ap);
  for (char *p = path + 1; *p; p++)
    if (*p == '/') {
      *p = '\0';
      mkdir(path, 0755);
      *p = '/';
    }
  mkdir(path, 0755);
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

static void write_jpeg(const char *path, const uint8_t *px, int w, int h, int quality) {
  FILE *f = fopen(path, "wb");
  if (!f) die(strerror(errno), path);
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr em;
  c.err = jpeg_std_error(&em);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, f);
  c.image_width = (JDIMENSION)w;
  c.image_height = (JDIMENSION)h;
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * (size_t)w * 3);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  fclose(f);
}

static void write_tiff(const char *path, const uint8_t *px, int w, int h) {
  TIFF *t = TIFFOpen(path, "w");
  if (!t) die("TIFFOpen", path);
  TIFFSetField(t, TIFFTAG_IMAGEWIDTH, (uint32_t)w);
  TIFFSetField(t, TIFFTAG_IMAGELENGTH, (uint32_t)h);
  TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3);
  TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
  TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
  TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
  TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_LZW);
  TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, (uint32_t)h);
  for (int y = 0; y < h; y++)
    if (TIFFWriteScanline(t, (void *)(px + (size_t)y * (size_t)w * 3), (uint32_t)y, 0) < 0)
      die("TIFFWriteScanline", path);
  TIFFClose(t);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) die(strerror(errno), path);
  fputs(text, f);
  fclose(f);
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, n, f) != n) die(strerror(errno), path);
  fclose(f);
}

/* A w x h image whose every pixel depends on (x, y, tag). */
static uint8_t *pattern(int w, int h, int tag) {
  uint8_t *px = malloc((size_t)w * (size_t)h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t *p = px + ((size_t)y * (size_t)w + (size_t)x) * 3;
      p[0] = (uint8_t)(x * 7 + tag * 31);
      p[1] = (uint8_t)(y * 5 + tag * 17);
      p[2] = (uint8_t)((x + y) * 3 + tag);
    }
  return px;
}

/* Mean absolute difference (for lossy JPEG round trips). */
static double mean_diff(const uint8_t *a, const uint8_t *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += abs((int)a[i] - (int)b[i]);
  return s / (double)n;
}

static int same_bytes(const uint8_t *a, const uint8_t *b, size_t n) {
  return !memcmp(a, b, n);
}

/* Largest absolute difference between two byte buffers. */
static int max_diff(const uint8_t *a, const uint8_t *b, size_t n) {
  int m = 0;
  for (size_t i = 0; i < n; i++) {
    int d = abs((int)a[i] - (int)b[i]);
    if (d > m) m = d;
  }
  return m;
}

/* ---- folder and CSV layouts ---------------------------------------------------- */

static void test_folder_classes(void) {
  char root[512], path[1024];
  snprintf(root, sizeof root, "%s/classes", tmp);
  const char *cls[3] = {"tumor", "normal", "stroma"};
  for (int c = 0; c < 3; c++) {
    mkdirs("%s/%s", root, cls[c]);
    for (int k = 0; k < 2 + c; k++) {
      uint8_t *px = pattern(20, 16, c * 10 + k);
      const char *ext = k % 3 == 0 ? "png" : k % 3 == 1 ? "jpg" : "tif";
      snprintf(path, sizeof path, "%s/%s/p%d.%s", root, cls[c], k, ext);
      if (k % 3 == 0)
        write_png(path, px, 20, 16);
      else if (k % 3 == 1)
        write_jpeg(path, px, 20, 16, 95);
      else
        write_tiff(path, px, 20, 16);
      free(px);
    }
  }
  snprintf(path, sizeof path, "%s/normal/notes.txt", root); /* not an image */
  write_text(path, "x");
  snprintf(path, sizeof path, "%s/normal/.hidden.png", root);
  write_text(path, "x");

  nic_dataset *ds = NULL;
  nic_dataset_opts o = nic_dataset_default_opts();
  o.mpp = 0.5;
  CHECK_OK(nic_dataset_open(&ds, root, &o, &_e));
  if (!ds) return;
  CHECK(!strcmp(nic_dataset_format(ds), "folder"));
  CHECK(nic_dataset_count(ds) == 2 + 3 + 4);
  CHECK(nic_dataset_num_classes(ds) == 3);
  CHECK(nic_dataset_label_kind(ds) == NIC_LABEL_CLASS);
  /* Sorted: normal, stroma, tumor; items in class then name order. */
  CHECK(!strcmp(nic_dataset_class_name(ds, 0), "normal"));
  CHECK(!strcmp(nic_dataset_class_name(ds, 2), "tumor"));
  CHECK(nic_dataset_mpp(ds) == 0.5);
  int counts[3] = {0, 0, 0};
  for (int64_t i = 0; i < nic_dataset_count(ds); i++) {
    counts[nic_dataset_label(ds, i)]++;
    CHECK(nic_dataset_split(ds, i) == NIC_SPLIT_NONE);
  }
  CHECK(counts[0] == 3 && counts[1] == 4 && counts[2] == 2);
  CHECK(nic_dataset_count_split(ds, NIC_SPLIT_ANY) == 9);
  /* Item 0 is normal/p0.png: lossless, so exactly the pattern. */
  uint8_t *px = NULL;
  int w = 0, h = 0;
  char name[1024];
  nic_dataset_item_name(ds, 0, name, sizeof name);
  CHECK(strstr(name, "normal/p0.png") != NULL);
  CHECK_OK(nic_dataset_read(ds, 0, &px, &w, &h, &_e));
  uint8_t *ref = pattern(20, 16, 10);
  CHECK(w == 20 && h == 16 && px && same_bytes(px, ref, 20 * 16 * 3));
  free(px);
  free(ref);
  /* normal/p1.jpg (JPEG, close) and normal/p2.tif (lossless). */
  CHECK_OK(nic_dataset_read(ds, 1, &px, &w, &h, &_e));
  ref = pattern(20, 16, 11);
  CHECK(w == 20 && h == 16 && px && mean_diff(px, ref, 20 * 16 * 3) < 8);
  free(px);
  free(ref);
  CHECK_OK(nic_dataset_read(ds, 2, &px, &w, &h, &_e));
  ref = pattern(20, 16, 12);
  CHECK(w == 20 && h == 16 && px && same_bytes(px, ref, 20 * 16 * 3));
  free(px);
  free(ref);
  nic_dataset_free(ds);
}

/* The direct decoders give exactly libvips' pixels. */
static void test_decode_matches_vips(void) {
  const char *files[3] = {"normal/p0.png", "normal/p1.jpg", "normal/p2.tif"};
  for (int k = 0; k < 3; k++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/classes/%s", tmp, files[k]);
    uint8_t *a = NULL, *b = NULL;
    int wa = 0, ha = 0, wb = 0, hb = 0;
    CHECK_OK(data_decode_file(path, &a, &wa, &ha, &_e));
    CHECK_OK(nic_image_load_rgb8(path, &b, &wb, &hb, &_e));
    CHECK(a && b && wa == wb && ha == hb && same_bytes(a, b, (size_t)wa * ha * 3));
    free(a);
    free(b);
  }
  /* Grey JPEG and PNG with alpha, by content whatever the extension. */
  char path[1024];
  snprintf(path, sizeof path, "%s/alpha.jpg", tmp);
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = 2, img.height = 1;
  img.format = PNG_FORMAT_RGBA;
  const uint8_t rgba[8] = {10, 20, 30, 255, 0, 0, 0, 0};
  CHECK(png_image_write_to_file(&img, path, 0, rgba, 0, NULL));
  uint8_t *a = NULL;
  int w, h;
  CHECK_OK(data_decode_file(path, &a, &w, &h, &_e));
  CHECK(a && w == 2 && a[0] == 10 && a[2] == 30 && a[3] == 255 && a[5] == 255); /* onto white */
  free(a);
}

static void test_folder_splits(void) {
  char root[512], path[1024];
  snprintf(root, sizeof root, "%s/splits", tmp);
  /* Class folders "2" and "10": numeric order puts 2 first. */
  const char *splits[2] = {"train", "valid"}, *cls[2] = {"10", "2"};
  for (int s = 0; s < 2; s++)
    for (int c = 0; c < 2; c++) {
      mkdirs("%s/%s/%s", root, splits[s], cls[c]);
      for (int k = 0; k < (s == 0 ? 3 : 1) + c; k++) {
        uint8_t *px = pattern(8, 8, k);
        snprintf(path, sizeof path, "%s/%s/%s/i%d.PNG", root, splits[s], cls[c], k);
        write_png(path, px, 8, 8);
        free(px);
      }
    }
  nic_dataset *ds = NULL;
  CHECK_OK(nic_dataset_open_folder(&ds, root, NULL, &_e));
  if (!ds) return;
  CHECK(nic_dataset_count(ds) == 3 + 4 + 1 + 2);
  CHECK(!strcmp(nic_dataset_class_name(ds, 0), "2") &&
        !strcmp(nic_dataset_class_name(ds, 1), "10"));
  CHECK(nic_dataset_count_split(ds, NIC_SPLIT_TRAIN) == 7);
  CHECK(nic_dataset_count_split(ds, NIC_SPLIT_VALID) == 3);
  CHECK(nic_dataset_mpp(ds) == 0);
  for (int64_t i = 0; i < nic_dataset_count(ds); i++) {
    char name[1024];
    nic_dataset_item_name(ds, i, name, sizeof name);
    int lab = nic_dataset_label(ds, i);
    CHECK(strstr(name, lab == 0 ? "/2/" : "/10/") != NULL);
    CHECK(strstr(name, nic_dataset_split(ds, i) == NIC_SPLIT_TRAIN ? "/train/" : "/valid/") !=
          NULL);
  }
  nic_dataset_free(ds);

  /* With a labels.csv, the file list comes from it. */
  snprintf(path, sizeof path, "%s/labels.csv", root);
  write_text(path, "path,label,split\ntrain/2/i0.PNG,2,train\nvalid/10/i0.PNG,10,valid\n");
  CHECK_OK(nic_dataset_open_folder(&ds, root, NULL, &_e));
  if (!ds) return;
  CHECK(nic_dataset_count(ds) == 2);
  CHECK(!strcmp(nic_dataset_format(ds), "folder"));
  CHECK(nic_dataset_label(ds, 0) == 0 && nic_dataset_label(ds, 1) == 1);
  CHECK(nic_dataset_split(ds, 1) == NIC_SPLIT_VALID);
  uint8_t *px;
  int w, h;
  CHECK_OK(nic_dataset_read(ds, 1, &px, &w, &h, &_e));
  free(px);
  nic_dataset_free(ds);

  /* A folder without images is an error naming it. */
  mkdirs("%s/empty/a", tmp);
  snprintf(path, sizeof path, "%s/empty", tmp);
  nic_error e = {0};
  CHECK(nic_dataset_open_folder(&ds, path, NULL, &e) == NIC_EFORMAT && !ds);
  CHECK(strstr(e.msg, "empty") != NULL);
}

static void test_csv(void) {
  char dir[512], path[1024];
  snprintf(dir, sizeof dir, "%s/csv", tmp);
  mkdirs("%s/img", dir);
  for (int k = 0; k < 4; k++) {
    uint8_t *px = pattern(10, 10, k);
    snprintf(path, sizeof path, "%s/img/%d.png", dir, k);
    write_png(path, px, 10, 10);
    free(px);
  }
  /* Classes, header in another order, a quoted field, comments, CRLF. */
  snprintf(path, sizeof path, "%s/classes.csv", dir);
  write_text(path, "# patches\r\nsplit,label,path\r\ntrain,benign,img/0.png\r\n"
                   "valid,\"malignant, high grade\",img/1.png\r\n\r\ntest,benign,img/2.png\r\n"
                   ",,img/3.png\r\n");
  nic_dataset *ds = NULL;
  CHECK_OK(nic_dataset_open(&ds, path, NULL, &_e));
  if (!ds) return;
  CHECK(!strcmp(nic_dataset_format(ds), "csv"));
  CHECK(nic_dataset_count(ds) == 4 && nic_dataset_num_classes(ds) == 2);
  CHECK(!strcmp(nic_dataset_class_name(ds, 1), "malignant, high grade"));
  CHECK(nic_dataset_label(ds, 0) == 0 && nic_dataset_label(ds, 1) == 1);
  CHECK(nic_dataset_label(ds, 3) == -1); /* empty label: unlabelled */
  CHECK(nic_dataset_split(ds, 0) == NIC_SPLIT_TRAIN && nic_dataset_split(ds, 1) == NIC_SPLIT_VALID);
  CHECK(nic_dataset_split(ds, 2) == NIC_SPLIT_TEST && nic_dataset_split(ds, 3) == NIC_SPLIT_NONE);
  uint8_t *px;
  int w, h;
  CHECK_OK(nic_dataset_read(ds, 2, &px, &w, &h, &_e)); /* relative to the CSV's folder */
  uint8_t *ref = pattern(10, 10, 2);
  CHECK(same_bytes(px, ref, 300));
  free(px);
  free(ref);
  nic_dataset_free(ds);

  /* Regression: numbers with a fraction; no header, two columns. */
  snprintf(path, sizeof path, "%s/values.csv", dir);
  write_text(path, "img/0.png,0.25\nimg/1.png,3\nimg/2.png,-1.5e1\nimg/3.png,\n");
  CHECK_OK(nic_dataset_open_csv(&ds, path, NULL, &_e));
  if (!ds) return;
  CHECK(nic_dataset_label_kind(ds) == NIC_LABEL_VALUE);
  CHECK(nic_dataset_num_classes(ds) == 0);
  CHECK_NEAR(nic_dataset_value(ds, 0), 0.25, 1e-7);
  CHECK_NEAR(nic_dataset_value(ds, 1), 3.0, 1e-7);
  CHECK_NEAR(nic_dataset_value(ds, 2), -15.0, 1e-7);
  CHECK(isnan(nic_dataset_value(ds, 3)));
  CHECK(nic_dataset_label(ds, 0) == -1);
  nic_dataset_free(ds);

  /* Integers alone are classes, numerically sorted; VALUE can be forced. */
  snprintf(path, sizeof path, "%s/ints.csv", dir);
  write_text(path, "img/0.png,10\nimg/1.png,9\nimg/2.png,10\n");
  CHECK_OK(nic_dataset_open_csv(&ds, path, NULL, &_e));
  if (!ds) return;
  CHECK(nic_dataset_label_kind(ds) == NIC_LABEL_CLASS && nic_dataset_num_classes(ds) == 2);
  CHECK(nic_dataset_label(ds, 0) == 1 && nic_dataset_label(ds, 1) == 0);
  nic_dataset_free(ds);
  nic_dataset_opts o = nic_dataset_default_opts();
  o.labels = NIC_LABEL_VALUE;
  CHECK_OK(nic_dataset_open_csv(&ds, path, &o, &_e));
  if (!ds) return;
  CHECK(nic_dataset_label_kind(ds) == NIC_LABEL_VALUE && nic_dataset_value(ds, 1) == 9.0f);
  nic_dataset_free(ds);

  /* Errors name the file and line. */
  nic_error e = {0};
  snprintf(path, sizeof path, "%s/bad.csv", dir);
  write_text(path, "path,label,split\nimg/0.png,a,train\nimg/1.png,b,holdout\n");
  CHECK(nic_dataset_open_csv(&ds, path, NULL, &e) == NIC_EFORMAT && !ds);
  CHECK(strstr(e.msg, "bad.csv:3") && strstr(e.msg, "holdout"));
  write_text(path, "img/0.png\n");
  CHECK(nic_dataset_open_csv(&ds, path, NULL, &e) == NIC_EFORMAT);
  CHECK(strstr(e.msg, "bad.csv:1") != NULL);
  o.labels = NIC_LABEL_VALUE;
  write_text(path, "img/0.png,abc\n");
  CHECK(nic_dataset_open_csv(&ds, path, &o, &e) == NIC_EFORMAT);
  CHECK(strstr(e.msg, "abc") != NULL);
  snprintf(path, sizeof path, "%s/missing.csv", dir);
  CHECK(nic_dataset_open_csv(&ds, path, NULL, &e) == NIC_EIO && strstr(e.msg, "missing.csv"));
}

static void test_broken_images(void) {
  char dir[512], path[1024];
  snprintf(dir, sizeof dir, "%s/broken", tmp);
  mkdirs("%s/a", dir);
  uint8_t *px = pattern(64, 64, 3);
  /* A JPEG cut in half: libjpeg would fill the rest with grey. */
  snprintf(path, sizeof path, "%s/a/cut.jpg", dir);
  write_jpeg(path, px, 64, 64, 90);
  FILE *f = fopen(path, "rb");
  static uint8_t buf[65536];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  write_bytes(path, buf, n / 2);
  snprintf(path, sizeof path, "%s/a/garbage.png", dir);
  write_bytes(path, "\x89PNG\r\n\x1a\nnot really", 19);
  snprintf(path, sizeof path, "%s/a/good.png", dir);
  write_png(path, px, 64, 64);
  snprintf(path, sizeof path, "%s/a/short.tif", dir);
  write_bytes(path, "II*\0\x08\0\0\0", 8);
  free(px);

  nic_dataset *ds = NULL;
  CHECK_OK(nic_dataset_open_folder(&ds, dir, NULL, &_e));
  if (!ds) return;
  CHECK(nic_dataset_count(ds) == 4); /* listing does not decode */
  const char *names[4] = {"cut.jpg", "garbage.png", "good.png", "short.tif"};
  for (int64_t i = 0; i < 4; i++) {
    uint8_t *p = NULL;
    int w, h;
    nic_error e = {0};
    nic_status s = nic_dataset_read(ds, i, &p, &w, &h, &e);
    if (i == 2) {
      CHECK(s == NIC_OK && w == 64);
    } else {
      CHECK(s == NIC_EIO && p == NULL);
      CHECK(strstr(e.msg, names[i]) != NULL);
    }
    free(p);
  }
  uint8_t out[16 * 16 * 3];
  nic_error e = {0};
  CHECK(nic_dataset_load(ds, 0, 16, 0.5, out, &e) == NIC_EIO && strstr(e.msg, "cut.jpg"));
  nic_dataset_free(ds);
}

/* ---- PatchCamelyon HDF5 ----------------------------------------------------------- */

/* Item i's pixel (y, x, c) in the test files. */
static uint8_t h5_pixel(int64_t i, int y, int x, int c) {
  return (uint8_t)(i * 13 + y * 7 + x * 3 + c * 101);
}

/* Writes name_x.h5 with N items of S x S x 3 (chunked one item per chunk,
 * only `nwritten` items actually stored) and name_y.h5 with N x 1 x 1 x 1
 * labels (i % 2). */
static void write_pcam(const char *xpath, const char *ypath, int64_t N, int S,
                       const int64_t *written, int nwritten) {
  hid_t f = H5Fcreate(xpath, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t dims[4] = {(hsize_t)N, (hsize_t)S, (hsize_t)S, 3},
          chunk[4] = {1, (hsize_t)S, (hsize_t)S, 3};
  hid_t space = H5Screate_simple(4, dims, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, 4, chunk);
  H5Pset_deflate(dcpl, 1);
  hid_t d = H5Dcreate2(f, "x", H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  uint8_t *item = malloc((size_t)S * S * 3);
  hsize_t mdim = (hsize_t)S * S * 3;
  hid_t mem = H5Screate_simple(1, &mdim, NULL);
  for (int k = 0; k < nwritten; k++) {
    int64_t i = written[k];
    for (int y = 0; y < S; y++)
      for (int x = 0; x < S; x++)
        for (int c = 0; c < 3; c++) item[((size_t)y * S + x) * 3 + c] = h5_pixel(i, y, x, c);
    hsize_t start[4] = {(hsize_t)i, 0, 0, 0};
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, chunk, NULL);
    H5Dwrite(d, H5T_NATIVE_UINT8, mem, space, H5P_DEFAULT, item);
  }
  H5Sclose(mem);
  free(item);
  H5Dclose(d);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Fclose(f);

  f = H5Fcreate(ypath, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t ydims[4] = {(hsize_t)N, 1, 1, 1};
  space = H5Screate_simple(4, ydims, NULL);
  d = H5Dcreate2(f, "y", H5T_STD_U8LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  uint8_t *y = malloc((size_t)N);
  for (int64_t i = 0; i < N; i++) y[i] = (uint8_t)(i % 2);
  H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, y);
  free(y);
  H5Dclose(d);
  H5Sclose(space);
  H5Fclose(f);
}

typedef struct h5_reader {
  const nic_dataset *ds;
  const int64_t *idx;
  int n, bad;
} h5_reader;

/* Reads every listed item 20 times, counting wrong pixels. */
static void *read_h5_items(void *arg) {
  h5_reader *r = arg;
  for (int rep = 0; rep < 20; rep++)
    for (int k = 0; k < r->n; k++) {
      uint8_t *px = NULL;
      int w, h;
      nic_error e = {0};
      if (nic_dataset_read(r->ds, r->idx[(k + rep) % r->n], &px, &w, &h, &e) != NIC_OK) {
        r->bad++;
        continue;
      }
      r->bad += px[0] != h5_pixel(r->idx[(k + rep) % r->n], 0, 0, 0) ||
                px[96 * 96 * 3 - 1] != h5_pixel(r->idx[(k + rep) % r->n], 95, 95, 2);
      free(px);
    }
  return NULL;
}

static void test_pcam_h5(void) {
  /* A million 96x96 items would be 27 GB in memory: opening and reading
   * it works only if images are read one at a time. Only the items read
   * below are stored (HDF5 allocates chunks when written). */
  char xpath[1024], ypath[1024];
  snprintf(xpath, sizeof xpath, "%s/camelyonpatch_level_2_split_valid_x.h5", tmp);
  snprintf(ypath, sizeof ypath, "%s/camelyonpatch_level_2_split_valid_y.h5", tmp);
  const int64_t N = 1000000;
  const int64_t idx[5] = {0, 1, 123457, 654321, N - 1};
  write_pcam(xpath, ypath, N, 96, idx, 5);
  struct stat st;
  CHECK(stat(xpath, &st) == 0 && st.st_size < 10 * 1000 * 1000);

  nic_dataset *ds = NULL;
  CHECK_OK(nic_dataset_open(&ds, xpath, NULL, &_e));
  if (!ds) return;
  CHECK(!strcmp(nic_dataset_format(ds), "pcam-h5"));
  CHECK(nic_dataset_count(ds) == N);
  CHECK(nic_dataset_mpp(ds) == NIC_PCAM_MPP);
  CHECK(nic_dataset_num_classes(ds) == 2);
  CHECK(nic_dataset_label(ds, 123457) == 1 && nic_dataset_label(ds, 654321) == 1 &&
        nic_dataset_label(ds, 0) == 0);
  CHECK(nic_dataset_count_split(ds, NIC_SPLIT_VALID) == N);
  for (int k = 4; k >= 0; k--) { /* out of order on purpose */
    uint8_t *px = NULL;
    int w, h, bad = 0;
    CHECK_OK(nic_dataset_read(ds, idx[k], &px, &w, &h, &_e));
    if (!px) continue;
    CHECK(w == 96 && h == 96);
    for (int y = 0; y < 96; y++)
      for (int x = 0; x < 96; x++)
        for (int c = 0; c < 3; c++)
          bad += px[((size_t)y * 96 + x) * 3 + c] != h5_pixel(idx[k], y, x, c);
    CHECK(bad == 0);
    free(px);
  }
  /* Reads from several threads at once (as the loader's workers do). */
  pthread_t th[4];
  h5_reader rd[4];
  for (int t = 0; t < 4; t++) {
    rd[t] = (h5_reader){ds, idx, 5, 0};
    pthread_create(&th[t], NULL, read_h5_items, &rd[t]);
  }
  int bad_threads = 0;
  for (int t = 0; t < 4; t++) {
    pthread_join(th[t], NULL);
    bad_threads += rd[t].bad;
  }
  CHECK(bad_threads == 0);
  char name[1024];
  nic_dataset_item_name(ds, 654321, name, sizeof name);
  CHECK(strstr(name, "_valid_x.h5[654321]") != NULL);
  nic_dataset_free(ds);

  /* Labels that do not match the images, and a missing y file. */
  char x2[1024], y2[1024];
  snprintf(x2, sizeof x2, "%s/other_x.h5", tmp);
  snprintf(y2, sizeof y2, "%s/other_y.h5", tmp);
  write_pcam(x2, ypath, 10, 8, idx, 1); /* overwrites the valid y with 10 labels */
  nic_error e = {0};
  CHECK(nic_dataset_open_pcam_h5(&ds, xpath, NULL, NULL, &e) == NIC_EFORMAT && !ds);
  CHECK(strstr(e.msg, "_y.h5") != NULL);
  CHECK(nic_dataset_open_pcam_h5(&ds, x2, NULL, NULL, &e) == NIC_EIO && !ds);
  CHECK(strstr(e.msg, "other_y.h5") != NULL);
  CHECK(nic_dataset_open_pcam_h5(&ds, x2, ypath, NULL, &e) == NIC_OK && ds);
  if (ds) CHECK(nic_dataset_count(ds) == 10 && nic_dataset_split(ds, 0) == NIC_SPLIT_NONE);
  nic_dataset_free(ds);
}

/* ---- idx ---------------------------------------------------------------------------- */

static size_t idx_header(uint8_t *buf, int ndim, const uint32_t *dims) {
  buf[0] = buf[1] = 0;
  buf[2] = 0x08;
  buf[3] = (uint8_t)ndim;
  for (int d = 0; d < ndim; d++)
    for (int b = 0; b < 4; b++) buf[4 + 4 * d + b] = (uint8_t)(dims[d] >> (24 - 8 * b));
  return 4 + 4 * (size_t)ndim;
}

static uint8_t idx_pixel(int i, int r, int c) {
  return (uint8_t)(i * 11 + r * 5 + c);
}

/* N grey images of 7 rows x 5 columns (not square: catches swapped axes). */
static void write_idx(const char *images, const char *labels, int N, int gz) {
  size_t n = 16 + (size_t)N * 35;
  uint8_t *buf = malloc(n);
  uint32_t dims[3] = {(uint32_t)N, 7, 5};
  size_t off = idx_header(buf, 3, dims);
  for (int i = 0; i < N; i++)
    for (int r = 0; r < 7; r++)
      for (int c = 0; c < 5; c++) buf[off++] = idx_pixel(i, r, c);
  uint8_t lab[8 + 256];
  uint32_t ldim = (uint32_t)N;
  size_t loff = idx_header(lab, 1, &ldim);
  for (int i = 0; i < N; i++) lab[loff++] = (uint8_t)(i % 3);
  if (gz) {
    gzFile g = gzopen(images, "wb");
    gzwrite(g, buf, (unsigned)off);
    gzclose(g);
    g = gzopen(labels, "wb");
    gzwrite(g, lab, (unsigned)loff);
    gzclose(g);
  } else {
    write_bytes(images, buf, off);
    write_bytes(labels, lab, loff);
  }
  free(buf);
}

static void test_idx(void) {
  char img[1024], lab[1024];
  for (int gz = 0; gz < 2; gz++) {
    snprintf(img, sizeof img, "%s/train-images-idx3-ubyte%s", tmp, gz ? ".gz" : "");
    snprintf(lab, sizeof lab, "%s/train-labels-idx1-ubyte%s", tmp, gz ? ".gz" : "");
    write_idx(img, lab, 20, gz);
    nic_dataset *ds = NULL;
    CHECK_OK(nic_dataset_open(&ds, img, NULL, &_e)); /* finds the labels file itself */
    if (!ds) continue;
    CHECK(!strcmp(nic_dataset_format(ds), "idx"));
    CHECK(nic_dataset_count(ds) == 20 && nic_dataset_num_classes(ds) == 3);
    CHECK(nic_dataset_label(ds, 7) == 1 && nic_dataset_split(ds, 7) == NIC_SPLIT_TRAIN);
    CHECK(nic_dataset_mpp(ds) == 0);
    uint8_t *px = NULL;
    int w, h, bad = 0;
    CHECK_OK(nic_dataset_read(ds, 13, &px, &w, &h, &_e));
    CHECK(w == 5 && h == 7);
    for (int r = 0; r < 7 && px; r++)
      for (int c = 0; c < 5; c++)
        for (int k = 0; k < 3; k++) bad += px[(r * 5 + c) * 3 + k] != idx_pixel(13, r, c);
    CHECK(bad == 0);
    free(px);
    nic_dataset_free(ds);
  }
  /* Truncated: the header announces more than the file holds. */
  snprintf(img, sizeof img, "%s/cut-images-idx3-ubyte", tmp);
  snprintf(lab, sizeof lab, "%s/cut-labels-idx1-ubyte", tmp);
  write_idx(img, lab, 20, 0);
  CHECK(truncate(img, 16 + 35 * 19 + 3) == 0);
  nic_dataset *ds = NULL;
  nic_error e = {0};
  CHECK(nic_dataset_open_idx(&ds, img, lab, NULL, &e) == NIC_EFORMAT && !ds);
  CHECK(strstr(e.msg, "cut-images-idx3-ubyte") && strstr(e.msg, "truncated"));
  CHECK(truncate(img, 10) == 0); /* inside the header */
  CHECK(nic_dataset_open_idx(&ds, img, lab, NULL, &e) == NIC_EFORMAT && strstr(e.msg, "truncated"));
  write_bytes(img, "\x00\x00\x0D\x03", 4); /* float elements */
  CHECK(nic_dataset_open_idx(&ds, img, lab, NULL, &e) == NIC_EUNSUPPORTED);
  /* Labels for a different number of images. */
  write_idx(img, lab, 20, 0);
  char lab2[1024];
  snprintf(lab2, sizeof lab2, "%s/t10k-labels-idx1-ubyte", tmp);
  char img2[1024];
  snprintf(img2, sizeof img2, "%s/t10k-images-idx3-ubyte", tmp);
  write_idx(img2, lab2, 5, 0);
  CHECK(nic_dataset_open_idx(&ds, img, lab2, NULL, &e) == NIC_EFORMAT &&
        strstr(e.msg, "t10k-labels"));
  CHECK_OK(nic_dataset_open_idx(&ds, img2, lab2, NULL, &_e));
  if (ds) CHECK(nic_dataset_split(ds, 0) == NIC_SPLIT_TEST);
  nic_dataset_free(ds);
}

/* ---- geometry ------------------------------------------------------------------------ */

static void test_geometry(void) {
  /* 1.0 um/px -> 0.5 um/px: a 128 px patch covers 64 um = 64 source
   * pixels, each becoming 2x2. A pattern of 8x8 blocks gives 16x16 blocks
   * whose inner 14x14 pixels are exact (bilinear only mixes at edges). */
  uint8_t *src = malloc(64 * 64 * 3), *dst = malloc(128 * 128 * 3);
  for (int y = 0; y < 64; y++)
    for (int x = 0; x < 64; x++)
      for (int c = 0; c < 3; c++)
        src[(y * 64 + x) * 3 + c] = (uint8_t)((x / 8) * 30 + (y / 8) * 3 + c);
  CHECK_OK(nic_patch_from_image(src, 64, 64, 1.0, dst, 128, 0.5, 1.0, &_e));
  int bad = 0;
  for (int y = 0; y < 128; y++)
    for (int x = 0; x < 128; x++) {
      if (x % 16 == 0 || x % 16 == 15 || y % 16 == 0 || y % 16 == 15) continue;
      for (int c = 0; c < 3; c++)
        bad += dst[(y * 128 + x) * 3 + c] != (uint8_t)((x / 16) * 30 + (y / 16) * 3 + c);
    }
  CHECK(bad == 0);
  /* A horizontal ramp v = 2x upsampled by 2: output x samples source
   * x/2 - 1/4, so the value is x - 0.5 (rounded half up to x), except at
   * the mirrored left edge. */
  for (int y = 0; y < 64; y++)
    for (int x = 0; x < 64; x++)
      for (int c = 0; c < 3; c++) src[(y * 64 + x) * 3 + c] = (uint8_t)(2 * x);
  CHECK_OK(nic_patch_from_image(src, 64, 64, 1.0, dst, 128, 0.5, 1.0, &_e));
  bad = 0;
  for (int x = 1; x < 127; x++) bad += dst[(50 * 128 + x) * 3] != x;
  CHECK(bad == 0);

  /* Same spacing: a centre crop, exact; (100 - 64) / 2 = 18. */
  uint8_t *big = pattern(100, 90, 1), *crop = malloc(64 * 64 * 3);
  CHECK_OK(nic_patch_from_image(big, 100, 90, 0.5, crop, 64, 0.5, 1.0, &_e));
  bad = 0;
  for (int y = 0; y < 64; y++)
    bad += memcmp(crop + y * 64 * 3, big + ((size_t)(y + 13) * 100 + 18) * 3, 64 * 3) != 0;
  CHECK(bad == 0);

  /* 0.25 -> 0.5 um/px: the central 256 source pixels averaged 2x2, the
   * same as the exact area resize of that crop. */
  uint8_t *hi = pattern(300, 300, 2), *c256 = malloc(256 * 256 * 3), *ref = malloc(128 * 128 * 3);
  for (int y = 0; y < 256; y++)
    memcpy(c256 + y * 256 * 3, hi + ((size_t)(y + 22) * 300 + 22) * 3, 256 * 3);
  CHECK_OK(nic_image_resize_area(c256, 256, 256, 3, ref, 128, 128, &_e));
  CHECK_OK(nic_patch_from_image(hi, 300, 300, 0.25, dst, 128, 0.5, 1.0, &_e));
  CHECK(max_diff(dst, ref, 128 * 128 * 3) <= 1);

  /* Padding mirrors without repeating the edge: 4 px -> 8 px at the same
   * spacing is offset -2, so columns read 2 1 0 1 2 3 2 1. */
  uint8_t tiny[4 * 4 * 3], pad[8 * 8 * 3];
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 4; x++)
      for (int c = 0; c < 3; c++) tiny[(y * 4 + x) * 3 + c] = (uint8_t)(10 * x + 100 * (y == 0));
  CHECK_OK(nic_patch_from_image(tiny, 4, 4, 0.5, pad, 8, 0.5, 1.0, &_e));
  const int cols[8] = {2, 1, 0, 1, 2, 3, 2, 1};
  bad = 0;
  for (int x = 0; x < 8; x++) bad += pad[(3 * 8 + x) * 3] != 10 * cols[x] + 0;
  for (int x = 0; x < 8; x++) bad += pad[(2 * 8 + x) * 3] != 10 * cols[x] + 100; /* row 0 */
  CHECK(bad == 0);

  /* PatchCamelyon: 96 px at 0.972 um/px -> 128 px at 0.5 um/px covers
   * 64 um = 65.8 source pixels: a ring outside the central 68 pixels must
   * not reach the patch. */
  uint8_t *pc = malloc(96 * 96 * 3);
  for (int y = 0; y < 96; y++)
    for (int x = 0; x < 96; x++) {
      int inside = x >= 14 && x < 82 && y >= 14 && y < 82;
      uint8_t *p = pc + (y * 96 + x) * 3;
      p[0] = inside ? 40 : 255, p[1] = inside ? 80 : 0, p[2] = inside ? 120 : 0;
    }
  CHECK_OK(nic_patch_from_image(pc, 96, 96, NIC_PCAM_MPP, dst, 128, 0.5, 1.0, &_e));
  bad = 0;
  for (int i = 0; i < 128 * 128; i++) bad += dst[3 * i] != 40 || dst[3 * i + 2] != 120;
  CHECK(bad == 0);
  /* Zooming out by 1/1.5 covers 98.8 source pixels: the ring shows. */
  CHECK_OK(nic_patch_from_image(pc, 96, 96, NIC_PCAM_MPP, dst, 128, 0.5, 1 / 1.5, &_e));
  CHECK(dst[0] == 255 && dst[(64 * 128 + 64) * 3] == 40);

  /* Unknown spacing: the shorter side fills the patch (28 -> 128). */
  uint8_t g28[28 * 28 * 3];
  memset(g28, 7, sizeof g28);
  CHECK_OK(nic_patch_from_image(g28, 28, 28, 0, dst, 128, 0.5, 1.0, &_e));
  CHECK(dst[0] == 7 && dst[128 * 128 * 3 - 1] == 7);

  nic_error e = {0};
  CHECK(nic_patch_from_image(g28, 28, 28, 1.0, dst, 0, 0.5, 1.0, &e) == NIC_EINVAL);
  CHECK(nic_patch_from_image(g28, 28, 28, 1.0, dst, 16, 0, 1.0, &e) == NIC_EINVAL);
  free(src);
  free(dst);
  free(big);
  free(crop);
  free(hi);
  free(c256);
  free(ref);
  free(pc);
}

/* ---- stratified split ------------------------------------------------------------ */

static void test_split_stratified(void) {
  char path[1024];
  snprintf(path, sizeof path, "%s/strat.csv", tmp);
  FILE *f = fopen(path, "w");
  fprintf(f, "path,label,split\n");
  int sizes[3] = {10, 20, 30};
  for (int c = 0; c < 3; c++)
    for (int k = 0; k < sizes[c]; k++) fprintf(f, "x%d_%d.png,c%d,\n", c, k, c);
  fprintf(f, "fixed.png,c0,test\n");
  fclose(f);
  nic_dataset *a = NULL, *b = NULL, *c = NULL;
  CHECK_OK(nic_dataset_open_csv(&a, path, NULL, &_e));
  CHECK_OK(nic_dataset_open_csv(&b, path, NULL, &_e));
  CHECK_OK(nic_dataset_open_csv(&c, path, NULL, &_e));
  if (!a || !b || !c) return;
  CHECK_OK(nic_dataset_split_stratified(a, 0.2, 42, &_e));
  CHECK_OK(nic_dataset_split_stratified(b, 0.2, 42, &_e));
  CHECK_OK(nic_dataset_split_stratified(c, 0.2, 43, &_e));
  int valid[3] = {0, 0, 0}, same = 1, same_c = 1;
  for (int64_t i = 0; i < nic_dataset_count(a); i++) {
    if (nic_dataset_split(a, i) == NIC_SPLIT_VALID) valid[nic_dataset_label(a, i)]++;
    same &= nic_dataset_split(a, i) == nic_dataset_split(b, i);
    same_c &= nic_dataset_split(a, i) == nic_dataset_split(c, i);
    CHECK(nic_dataset_split(a, i) != NIC_SPLIT_NONE);
  }
  CHECK(valid[0] == 2 && valid[1] == 4 && valid[2] == 6);
  CHECK(same && !same_c);
  CHECK(nic_dataset_split(a, 60) == NIC_SPLIT_TEST); /* kept */
  CHECK(nic_dataset_count_split(a, NIC_SPLIT_TRAIN) == 48);
  nic_error e = {0};
  CHECK(nic_dataset_split_stratified(a, 1.5, 1, &e) == NIC_EINVAL);
  nic_dataset_free(a);
  nic_dataset_free(b);
  nic_dataset_free(c);

  /* Regression: strata are deciles of the value. */
  snprintf(path, sizeof path, "%s/strat_values.csv", tmp);
  f = fopen(path, "w");
  for (int k = 0; k < 100; k++) fprintf(f, "v%d.png,%d.5\n", k, 99 - k);
  fclose(f);
  CHECK_OK(nic_dataset_open_csv(&a, path, NULL, &_e));
  if (!a) return;
  CHECK_OK(nic_dataset_split_stratified(a, 0.1, 7, &_e));
  int per_decile[10] = {0};
  for (int64_t i = 0; i < 100; i++)
    if (nic_dataset_split(a, i) == NIC_SPLIT_VALID) per_decile[(int)nic_dataset_value(a, i) / 10]++;
  int ok = 1;
  for (int d = 0; d < 10; d++) ok &= per_decile[d] == 1;
  CHECK(ok);
  nic_dataset_free(a);
}

/* ---- augmentation ------------------------------------------------------------------ */

/* A noisy, asymmetric test patch. */
static uint8_t *random_patch(int size, uint64_t seed) {
  uint8_t *px = malloc((size_t)size * size * 3);
  nic_rng r;
  nic_rng_seed(&r, seed);
  for (int i = 0; i < size * size * 3; i++) px[i] = (uint8_t)nic_rng_below(&r, 256);
  return px;
}

static void test_augment_identity(void) {
  const int S = 32;
  uint8_t *px = random_patch(S, 1), *orig = malloc(S * S * 3);
  memcpy(orig, px, S * S * 3);
  nic_augment a = nic_augment_none();
  nic_rng r;
  nic_rng_seed(&r, 5);
  CHECK_OK(nic_augment_patch(&a, &r, px, S, &_e));
  CHECK(same_bytes(px, orig, S * S * 3));
  /* Every transform on its own changes the patch (for some seed)... */
  for (int t = 0; t < 9; t++) {
    nic_augment b = nic_augment_none();
    if (t == 0) b.dihedral = 1;
    if (t == 1) b.zoom = 0.5f;
    if (t == 2) b.hed_scale = 0.3f;
    if (t == 3) b.hed_shift = 0.3f;
    if (t == 4) b.brightness = 0.3f;
    if (t == 5) b.contrast = 0.3f;
    if (t == 6) b.saturation = 0.5f, b.hue = 0.2f;
    if (t == 7) b.blur_prob = 1, b.blur_min = 1, b.blur_max = 2;
    if (t == 8) b.noise = 10;
    int changed = 0;
    for (uint64_t seed = 0; seed < 4 && !changed; seed++) {
      memcpy(px, orig, S * S * 3);
      nic_rng_seed(&r, seed);
      CHECK_OK(nic_augment_patch(&b, &r, px, S, &_e));
      changed = !same_bytes(px, orig, S * S * 3);
    }
    CHECK(changed);
  }
  /* ... and the default is deterministic for a seed. */
  nic_augment d = nic_augment_default();
  uint8_t *p2 = malloc(S * S * 3);
  memcpy(px, orig, S * S * 3);
  memcpy(p2, orig, S * S * 3);
  nic_rng_seed(&r, nic_data_sample_seed(9, 2, 77));
  CHECK_OK(nic_augment_patch(&d, &r, px, S, &_e));
  nic_rng_seed(&r, nic_data_sample_seed(9, 2, 77));
  CHECK_OK(nic_augment_patch(&d, &r, p2, S, &_e));
  CHECK(same_bytes(px, p2, S * S * 3));
  CHECK(nic_data_sample_seed(9, 2, 77) != nic_data_sample_seed(9, 2, 78));
  CHECK(nic_data_sample_seed(9, 2, 77) != nic_data_sample_seed(9, 3, 77));
  nic_error e = {0};
  d.blur_min = 2, d.blur_max = 1;
  CHECK(nic_augment_patch(&d, &r, px, S, &e) == NIC_EINVAL);
  d = nic_augment_default();
  d.hue = -1;
  CHECK(nic_augment_patch(&d, &r, px, S, &e) == NIC_EINVAL);
  free(px);
  free(p2);
  free(orig);
}

static void test_dihedral(void) {
  const int S = 9;
  uint8_t *in = random_patch(S, 2), *out[8], *back = malloc(S * S * 3);
  for (int k = 0; k < 8; k++) {
    out[k] = malloc(S * S * 3);
    aug_dihedral(in, out[k], S, k);
  }
  /* Eight distinct images, k = 0 the identity. */
  CHECK(same_bytes(out[0], in, S * S * 3));
  int distinct = 1;
  for (int a = 0; a < 8; a++)
    for (int b = a + 1; b < 8; b++) distinct &= !same_bytes(out[a], out[b], S * S * 3);
  CHECK(distinct);
  /* Inverses undo each transform. */
  int inv_ok = 1;
  for (int k = 0; k < 8; k++) {
    aug_dihedral(out[k], back, S, aug_dihedral_inverse(k));
    inv_ok &= same_bytes(back, in, S * S * 3);
  }
  CHECK(inv_ok);
  /* Closure: any composition is one of the eight. */
  int closed = 1;
  for (int a = 0; a < 8; a++)
    for (int b = 0; b < 8; b++) {
      aug_dihedral(out[a], back, S, b);
      int found = 0;
      for (int k = 0; k < 8; k++) found |= same_bytes(back, out[k], S * S * 3);
      closed &= found;
    }
  CHECK(closed);
  /* k = 4|1 is a 90-degree rotation: applying it 4 times is the identity. */
  memcpy(back, in, S * S * 3);
  uint8_t *t = malloc(S * S * 3);
  for (int i = 0; i < 4; i++) {
    aug_dihedral(back, t, S, 5);
    memcpy(back, t, S * S * 3);
    if (i == 1) CHECK(same_bytes(back, out[3], S * S * 3)); /* twice = 180 degrees */
  }
  CHECK(same_bytes(back, in, S * S * 3));
  free(t);
  for (int k = 0; k < 8; k++) free(out[k]);
  free(in);
  free(back);
}

static void test_hed(void) {
  /* Optical density of known values. */
  CHECK_NEAR(aug_od(255), 0.0, 1e-6);
  CHECK_NEAR(aug_od(127), 0.30103, 1e-5);
  CHECK_NEAR(aug_od(25), -log10(26.0 / 256.0), 1e-6);
  /* The colour of one unit of haematoxylin (od = its unit stain vector)
   * decomposes into about (1, 0, 0). */
  const double hv[3] = {0.650, 0.704, 0.286};
  double norm = sqrt(hv[0] * hv[0] + hv[1] * hv[1] + hv[2] * hv[2]);
  uint8_t rgb[3];
  for (int c = 0; c < 3; c++) rgb[c] = (uint8_t)lrint(256 * pow(10, -hv[c] / norm) - 1);
  float hed[3];
  aug_rgb_to_hed(rgb, hed);
  CHECK_NEAR(hed[0], 1.0, 0.02);
  CHECK_NEAR(hed[1], 0.0, 0.02);
  CHECK_NEAR(hed[2], 0.0, 0.02);
  uint8_t white[3] = {255, 255, 255};
  aug_rgb_to_hed(white, hed);
  CHECK_NEAR(hed[0], 0, 1e-6);

  /* Zero jitter round trip: every 8-bit RGB on a grid comes back within 1. */
  int n = 0;
  uint8_t *px = malloc(52 * 52 * 52 * 3), *orig = malloc(52 * 52 * 52 * 3);
  for (int r = 0; r < 256; r += 5)
    for (int g = 0; g < 256; g += 5)
      for (int b = 0; b < 256; b += 5) {
        px[3 * n] = (uint8_t)r, px[3 * n + 1] = (uint8_t)g, px[3 * n + 2] = (uint8_t)b;
        n++;
      }
  memcpy(orig, px, (size_t)n * 3);
  const float zero[3] = {0, 0, 0};
  aug_hed(px, n, zero, zero);
  CHECK(max_diff(px, orig, (size_t)n * 3) <= 1);
  /* More haematoxylin darkens a haematoxylin-stained pixel in every channel;
   * more eosin shifts a pink pixel's green most (eosin absorbs green). */
  uint8_t p[3] = {rgb[0], rgb[1], rgb[2]};
  const float moreh[3] = {0.5f, 0, 0};
  aug_hed(p, 1, moreh, zero);
  CHECK(p[0] < rgb[0] && p[1] < rgb[1] && p[2] < rgb[2]);
  uint8_t pink[3] = {230, 150, 200}, q[3] = {230, 150, 200};
  const float shift_e[3] = {0, 0.1f, 0};
  aug_hed(q, 1, zero, shift_e);
  CHECK(pink[1] - q[1] > pink[0] - q[0] && pink[1] - q[1] > pink[2] - q[2] && q[1] < pink[1]);
  free(px);
  free(orig);
}

static void test_hsv(void) {
  /* RGB -> HSV -> RGB with neutral factors is the identity (grid of colours,
   * greys included). */
  int n = 0;
  uint8_t *grid = malloc(86 * 86 * 86 * 3), *orig = malloc(86 * 86 * 86 * 3);
  for (int r = 0; r < 256; r += 3)
    for (int g = 0; g < 256; g += 3)
      for (int b = 0; b < 256; b += 3) {
        grid[3 * n] = (uint8_t)r, grid[3 * n + 1] = (uint8_t)g, grid[3 * n + 2] = (uint8_t)b;
        n++;
      }
  memcpy(orig, grid, (size_t)n * 3);
  aug_hsv(grid, n, 1, 1, 0);
  CHECK(max_diff(grid, orig, (size_t)n * 3) == 0);
  /* A full turn of hue is the identity too, and six sixths compose to it. */
  aug_hsv(grid, n, 1, 1, 1.0f);
  CHECK(max_diff(grid, orig, (size_t)n * 3) <= 1);
  memcpy(grid, orig, (size_t)n * 3);
  for (int k = 0; k < 6; k++) aug_hsv(grid, n, 1, 1, 1 / 6.0f);
  CHECK(max_diff(grid, orig, (size_t)n * 3) <= 3);
  free(grid);
  free(orig);
  /* A hue shift of a third of a turn takes red to green, a saturation of
   * 0 takes colours to grey, brightness scales, contrast 0 flattens. */
  uint8_t px[6] = {255, 0, 0, 0, 0, 255};
  aug_color(px, 2, 1, 1, 1, 1 / 3.0f);
  CHECK(px[0] == 0 && px[1] == 255 && px[2] == 0 && px[3] == 255 && px[4] == 0 && px[5] == 0);
  uint8_t grey[3] = {200, 100, 50};
  aug_color(grey, 1, 1, 1, 0, 0);
  CHECK(grey[0] == 200 && grey[1] == 200 && grey[2] == 200);
  uint8_t br[3] = {100, 50, 10};
  aug_color(br, 1, 1.5f, 1, 1, 0);
  CHECK(br[0] == 150 && br[1] == 75 && br[2] == 15);
  uint8_t ct[6] = {0, 0, 0, 200, 200, 200};
  aug_color(ct, 2, 1, 0, 1, 0);
  CHECK(ct[0] == 100 && ct[3] == 100);
  /* Brightness folded into V matches scaling RGB; negative hue shifts wrap. */
  uint8_t sb[3] = {100, 50, 10}, sb2[3] = {100, 50, 10};
  aug_hsv(sb, 1, 1.5f, 1, 0);
  aug_color(sb2, 1, 1.5f, 1, 1, 0);
  CHECK(max_diff(sb, sb2, 3) <= 1);
  uint8_t green[3] = {0, 255, 0};
  aug_hsv(green, 1, 1, 1, -1 / 3.0f);
  CHECK(green[0] == 255 && green[1] == 0 && green[2] == 0);
  /* Known colours: dark yellow (200, 200, 40) is H = 60 degrees, S = 0.8,
   * V = 200/255; -60 degrees makes it (200, 40, 40); halving S, (200, 120, 120). */
  uint8_t yellow[6] = {200, 200, 40, 200, 200, 40};
  aug_hsv(yellow, 1, 1, 1, -60 / 360.0f);
  CHECK(yellow[0] == 200 && yellow[1] == 40 && yellow[2] == 40);
  aug_hsv(yellow + 3, 1, 1, 0.5f, -60 / 360.0f);
  CHECK(yellow[3] == 200 && yellow[4] == 120 && yellow[5] == 120);
}

static void test_blur_noise(void) {
  const int S = 32;
  uint8_t *flat = malloc(S * S * 3);
  memset(flat, 90, S * S * 3);
  CHECK_OK(aug_blur(flat, S, 1.5f, &_e));
  int bad = 0;
  for (int i = 0; i < S * S * 3; i++) bad += flat[i] != 90;
  CHECK(bad == 0);
  /* Blur lowers the variance of noise. */
  uint8_t *px = random_patch(S, 3);
  double v0 = 0, v1 = 0, m = 0;
  for (int i = 0; i < S * S * 3; i++) m += px[i];
  m /= S * S * 3;
  for (int i = 0; i < S * S * 3; i++) v0 += (px[i] - m) * (px[i] - m);
  CHECK_OK(aug_blur(px, S, 1.0f, &_e));
  for (int i = 0; i < S * S * 3; i++) v1 += (px[i] - m) * (px[i] - m);
  CHECK(v1 < v0 / 4);
  /* Noise: zero mean, the requested standard deviation. */
  memset(flat, 128, S * S * 3);
  nic_rng r;
  nic_rng_seed(&r, 4);
  aug_noise(flat, S * S, 5.0f, &r);
  double mean = 0, var = 0;
  for (int i = 0; i < S * S * 3; i++) mean += flat[i] - 128;
  mean /= S * S * 3;
  for (int i = 0; i < S * S * 3; i++) var += (flat[i] - 128 - mean) * (flat[i] - 128 - mean);
  var /= S * S * 3;
  CHECK_NEAR(mean, 0, 0.3);
  CHECK_NEAR(sqrt(var), 5.0, 0.3); /* rounding to integers adds 1/12 */
  free(flat);
  free(px);
}

/* ---- real data --------------------------------------------------------------------- */

static void test_shared_pcam(void) {
  const char *shared = nic_test_shared_dir();
  char root[1024];
  if (shared) snprintf(root, sizeof root, "%s/data/pcam", shared);
  struct stat st;
  if (!shared || stat(root, &st) != 0) {
    printf("  (skipped: no ../shared/data/pcam)\n");
    return;
  }
  nic_dataset *ds = NULL;
  nic_dataset_opts o = nic_dataset_default_opts();
  o.mpp = NIC_PCAM_MPP;
  CHECK_OK(nic_dataset_open(&ds, root, &o, &_e));
  if (!ds) return;
  CHECK(nic_dataset_count_split(ds, NIC_SPLIT_TRAIN) == 19171);
  CHECK(nic_dataset_count_split(ds, NIC_SPLIT_VALID) == 2907);
  CHECK(nic_dataset_num_classes(ds) == 2);
  int64_t per[2][2] = {{0, 0}, {0, 0}}, wrong = 0;
  for (int64_t i = 0; i < nic_dataset_count(ds); i++) {
    char name[1024];
    nic_dataset_item_name(ds, i, name, sizeof name);
    int lab = nic_dataset_label(ds, i), sp = nic_dataset_split(ds, i) == NIC_SPLIT_VALID;
    if (lab < 0 || lab > 1) {
      wrong++;
      continue;
    }
    per[sp][lab]++;
    /* The folder a file lies in is its label. */
    wrong += strstr(name, lab ? "/1/" : "/0/") == NULL;
  }
  CHECK(wrong == 0);
  CHECK(per[0][0] == 10000 && per[0][1] == 9171 && per[1][0] == 1500 && per[1][1] == 1407);
  /* A sample decodes at 96x96, exactly as libvips reads it, and loads at
   * 128 px, 0.5 um/px. */
  uint8_t *patch = malloc(128 * 128 * 3);
  int64_t step = getenv("NIC_SANITIZED") ? 997 : 97, failed = 0, differ = 0;
  for (int64_t i = 0; i < nic_dataset_count(ds); i += step) {
    uint8_t *px = NULL, *ref = NULL;
    int w = 0, h = 0, wr, hr;
    nic_error e = {0};
    if (nic_dataset_read(ds, i, &px, &w, &h, &e) != NIC_OK || w != 96 || h != 96) {
      fprintf(stderr, "  %s\n", e.msg);
      failed++;
      free(px);
      continue;
    }
    char name[1024];
    nic_dataset_item_name(ds, i, name, sizeof name);
    if (nic_image_load_rgb8(name, &ref, &wr, &hr, &e) == NIC_OK)
      differ += !same_bytes(px, ref, 96 * 96 * 3);
    free(ref);
    free(px);
    failed += nic_dataset_load(ds, i, 128, 0.5, patch, &e) != NIC_OK;
  }
  CHECK(failed == 0 && differ == 0);
  free(patch);
  nic_dataset_free(ds);
}

int main(void) {
  tmp = nic_test_tmpdir();
  RUN(test_folder_classes);
  RUN(test_decode_matches_vips);
  RUN(test_folder_splits);
  RUN(test_csv);
  RUN(test_broken_images);
  RUN(test_pcam_h5);
  RUN(test_idx);
  RUN(test_geometry);
  RUN(test_split_stratified);
  RUN(test_augment_identity);
  RUN(test_dihedral);
  RUN(test_hed);
  RUN(test_hsv);
  RUN(test_blur_noise);
  RUN(test_shared_pcam);
  return nic_test_finish();
}
