/* The histo simulator: layouts and their labels, region rendering that does
 * not depend on how the slide is cut, pyramidal TIFFs checked with
 * OpenSlide and libtiff, label files, determinism, bounded memory, and the
 * patch data set. Sizes stay small under the sanitizers (NIC_SANITIZED). */
#include <openslide.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <tiffio.h>
#include <unistd.h>

#include "nic/sim.h"
#include "testutil.h"

static int sanitized(void) {
  return getenv("NIC_SANITIZED") != NULL;
}

static nic_histo_opts small_opts(int w, int h) {
  nic_histo_opts o = nic_histo_default_opts();
  o.width = w;
  o.height = h;
  o.threads = 2;
  return o;
}

/* Peak memory of generating one big slide, in a child process so that
 * its peak RSS is its own. Run first: the child must fork before this
 * process starts OpenMP threads. */
static void test_bounded_memory(void) {
  int side = sanitized() ? 2048 : 16384;
  char path[300];
  snprintf(path, sizeof path, "%s/big.tif", nic_test_tmpdir());
  pid_t pid = fork();
  if (pid == 0) {
    nic_histo_opts o = small_opts(side, side);
    nic_histo_layout *l = NULL;
    nic_error e = {0};
    int ok = nic_histo_layout_create(&l, &o, 0, 1, &e) == NIC_OK &&
             nic_histo_write_tiff(l, path, 80, 2, &e) == NIC_OK;
    if (!ok) fprintf(stderr, "big slide: %s\n", e.msg);
    nic_histo_layout_free(l);
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  struct rusage ru;
  CHECK(pid > 0 && wait4(pid, &status, 0, &ru) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  double full_mb = 3.0 * side * side / 1048576.0, peak_mb = ru.ru_maxrss / 1024.0;
  printf("  %dx%d slide: peak RSS %.0f MB (full resolution %.0f MB)\n", side, side, peak_mb,
         full_mb);
  if (!sanitized()) CHECK(peak_mb < 200); /* 768 MB at full resolution */
  openslide_t *os = openslide_open(path);
  CHECK(os && !openslide_get_error(os));
  if (os) {
    int64_t w = 0, h = 0;
    openslide_get_level0_dimensions(os, &w, &h);
    CHECK(w == side && h == side);
    openslide_close(os);
  }
  unlink(path);
}

static void test_levels(void) {
  int d[32][2];
  CHECK(nic_histo_levels(8192, 8192, d) == 5);
  CHECK(d[4][0] == 512 && d[4][1] == 512);
  CHECK(nic_histo_levels(2048, 1536, d) == 3);
  CHECK(d[1][0] == 1024 && d[1][1] == 768 && d[2][0] == 512 && d[2][1] == 384);
  CHECK(nic_histo_levels(1000, 800, d) == 1);
  CHECK(nic_histo_levels(1024, 500, d) == 2);
  CHECK(d[1][0] == 512 && d[1][1] == 250);
  CHECK(nic_histo_levels(20000, 20000, NULL) == 6);
}

static void test_validation(void) {
  nic_histo_opts o = nic_histo_default_opts();
  nic_error e = {0};
  CHECK(nic_histo_check(&o, &e) == NIC_OK);
  o.width = 100;
  CHECK(nic_histo_check(&o, &e) == NIC_EINVAL);
  o = nic_histo_default_opts();
  o.mpp = 0;
  CHECK(nic_histo_check(&o, &e) == NIC_EINVAL);
  o = nic_histo_default_opts();
  o.lesion_min = 0.4;
  o.lesion_max = 0.2;
  CHECK(nic_histo_check(&o, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "lesion") != NULL);
  o = nic_histo_default_opts();
  o.jpeg_quality = 0;
  CHECK(nic_histo_check(&o, &e) == NIC_EINVAL);
}

static void test_layouts(void) {
  int side = 2048;
  nic_histo_opts o = small_opts(side, side);
  uint8_t *rgb = malloc((size_t)side * side * 3), *cls = malloc((size_t)side * side);
  for (int i = 0; i < 4; i++) {
    for (int tumour = 0; tumour < 2; tumour++) {
      nic_histo_layout *l = NULL;
      CHECK_OK(nic_histo_layout_create(&l, &o, i, tumour, NULL));
      if (!l) continue;
      const nic_histo_info *in = nic_histo_layout_info(l);
      CHECK(in->tumour == tumour && in->width == side && in->mpp == 0.5);
      CHECK(in->tissue_mm2 > 0.1 && in->tissue_mm2 < 1.05 * side * side * 0.25e-6);
      CHECK(in->survival_time > 0 && in->survival_time <= o.censor_months);
      CHECK(in->survival_event == 0 || in->survival_event == 1);
      int n = 0;
      const double *m = nic_histo_mitoses(l, &n);
      CHECK(n == in->mitoses);
      for (int k = 0; k < n; k++) {
        nic_tissue_class c = nic_histo_class_at(l, (int)m[2 * k], (int)m[2 * k + 1]);
        CHECK(c == (tumour ? c : NIC_TISSUE_STROMA) && c != NIC_TISSUE_BACKGROUND);
      }
      /* Every pixel, as rendered. */
      nic_histo_counts cnt;
      CHECK_OK(nic_histo_render(l, 0, 0, side, side, rgb, side * 3, cls, &cnt, NULL));
      int64_t tissue = cnt.pixels[1] + cnt.pixels[2] + cnt.pixels[3];
      if (!tumour) {
        /* Tumour-free: no lesion in the layout, no tumour pixel anywhere. */
        CHECK(in->lesions == 0 && in->tumour_fraction == 0 && in->prolif_score == 0);
        CHECK(cnt.pixels[NIC_TISSUE_TUMOUR] == 0);
        int found = 0;
        for (int y = 0; y < side; y += 7)
          for (int x = 0; x < side; x += 7) found += nic_histo_class_at(l, x, y) == 2;
        CHECK(found == 0);
      } else {
        CHECK(in->lesions >= 1 && cnt.pixels[NIC_TISSUE_TUMOUR] > 0);
        CHECK(in->tumour_fraction >= 0.5 * o.lesion_min && in->tumour_fraction <= 0.6);
        CHECK(in->prolif_score >= 0 && in->prolif_score <= 1);
      }
      /* The layout's estimates match the rendered pixels. */
      CHECK_NEAR((double)tissue * 0.25e-6, in->tissue_mm2, 0.03 * in->tissue_mm2 + 0.01);
      CHECK_NEAR((double)cnt.pixels[2] / tissue, in->tumour_fraction, 0.02);
      CHECK(cnt.mitoses == in->mitoses);
      /* class_at agrees with the rendered class map. */
      int agree = 0, total = 0;
      for (int y = 3; y < side; y += 37)
        for (int x = 5; x < side; x += 41, total++)
          agree += nic_histo_class_at(l, x, y) == cls[(size_t)y * side + x];
      CHECK(agree == total);
      /* Glass is near white, tissue is not. */
      int64_t glass_sum = 0, glass_n = 0;
      for (int64_t p = 0; p < (int64_t)side * side; p += 101)
        if (cls[p] == 0) {
          glass_sum += rgb[3 * p] + rgb[3 * p + 1] + rgb[3 * p + 2];
          glass_n++;
        }
      CHECK(glass_n > 0 && glass_sum / glass_n > 3 * 225);
      nic_histo_layout_free(l);
    }
  }
  free(rgb);
  free(cls);
}

/* Rendering a region in one go or in pieces gives the same bytes. */
static void test_render_independent(void) {
  nic_histo_opts o = small_opts(2048, 2048);
  nic_histo_layout *l = NULL;
  CHECK_OK(nic_histo_layout_create(&l, &o, 1, 1, NULL));
  if (!l) return;
  /* A window across tissue: around the middle of the first lesion. */
  int W = 700, H = 500, x0 = 700, y0 = 800;
  uint8_t *a = malloc((size_t)W * H * 3), *b = malloc((size_t)W * H * 3);
  nic_histo_counts ca, cb1, cb2;
  CHECK_OK(nic_histo_render(l, x0, y0, W, H, a, W * 3, NULL, &ca, NULL));
  CHECK_OK(nic_histo_render(l, x0, y0, 333, H, b, W * 3, NULL, &cb1, NULL));
  CHECK_OK(nic_histo_render(l, x0 + 333, y0, W - 333, H, b + 333 * 3, W * 3, NULL, &cb2, NULL));
  CHECK(memcmp(a, b, (size_t)W * H * 3) == 0);
  CHECK(ca.nuclei == cb1.nuclei + cb2.nuclei);
  CHECK(ca.nuclei > 0);
  /* Regions past the slide edge are defined too (glass there). */
  CHECK_OK(nic_histo_render(l, -100, -100, 64, 64, a, 64 * 3, NULL, &ca, NULL));
  CHECK(ca.pixels[0] == 64 * 64);
  free(a);
  free(b);
  nic_histo_layout_free(l);
}

static double prop_double(openslide_t *os, const char *name) {
  const char *v = openslide_get_property_value(os, name);
  return v ? atof(v) : -1;
}

static void test_tiff(void) {
  const char *dir = nic_test_tmpdir();
  char path[300];
  snprintf(path, sizeof path, "%s/s.tif", dir);
  nic_histo_opts o = small_opts(2048, 1536);
  o.mpp = 0.25;
  nic_histo_layout *l = NULL;
  CHECK_OK(nic_histo_layout_create(&l, &o, 0, 1, NULL));
  if (!l) return;
  CHECK_OK(nic_histo_write_tiff(l, path, 85, 2, NULL));
  openslide_t *os = openslide_open(path);
  CHECK(os != NULL && !openslide_get_error(os));
  if (os && !openslide_get_error(os)) {
    CHECK(!strcmp(openslide_get_property_value(os, "openslide.vendor"), "generic-tiff"));
    CHECK(openslide_get_level_count(os) == 3);
    int64_t w, h;
    openslide_get_level_dimensions(os, 0, &w, &h);
    CHECK(w == 2048 && h == 1536);
    openslide_get_level_dimensions(os, 2, &w, &h);
    CHECK(w == 512 && h == 384);
    CHECK_NEAR(openslide_get_level_downsample(os, 1), 2.0, 1e-9);
    /* The spacing, from the resolution tags and from the description. */
    const char *unit = openslide_get_property_value(os, "tiff.ResolutionUnit");
    CHECK(unit && !strcmp(unit, "centimeter"));
    CHECK_NEAR(1e4 / prop_double(os, "tiff.XResolution"), 0.25, 1e-6);
    CHECK_NEAR(1e4 / prop_double(os, "tiff.YResolution"), 0.25, 1e-6);
    const char *desc = openslide_get_property_value(os, "openslide.comment");
    CHECK(desc && strstr(desc, "mpp=0.25;"));
    if (openslide_get_property_value(os, "openslide.mpp-x")) /* OpenSlide >= 4 */
      CHECK_NEAR(prop_double(os, "openslide.mpp-x"), 0.25, 1e-6);
    /* Pixels decode, and match the renderer up to JPEG loss. */
    uint32_t *px = malloc(sizeof(uint32_t) * 300 * 300);
    uint8_t *ref = malloc(300 * 300 * 3);
    openslide_read_region(os, px, 900, 700, 0, 300, 300);
    CHECK(!openslide_get_error(os));
    CHECK_OK(nic_histo_render(l, 900, 700, 300, 300, ref, 900, NULL, NULL, NULL));
    double err = 0;
    for (int i = 0; i < 300 * 300; i++)
      for (int c = 0; c < 3; c++) err += abs((int)((px[i] >> (16 - 8 * c)) & 255) - ref[3 * i + c]);
    err /= 300 * 300 * 3;
    printf("  mean |TIFF - render| = %.2f grey levels\n", err);
    CHECK(err < 6);
    openslide_read_region(os, px, 0, 0, 2, 300, 300); /* a lower level decodes too */
    CHECK(!openslide_get_error(os));
    free(px);
    free(ref);
  }
  if (os) openslide_close(os);
  /* The same through libtiff: tiles, JPEG, resolution unit and value. */
  TIFF *t = TIFFOpen(path, "r");
  CHECK(t != NULL);
  if (t) {
    uint16_t comp = 0, unit = 0, photo = 0;
    uint32_t tw = 0;
    float xres = 0;
    char *d = NULL;
    TIFFGetField(t, TIFFTAG_COMPRESSION, &comp);
    TIFFGetField(t, TIFFTAG_PHOTOMETRIC, &photo);
    TIFFGetField(t, TIFFTAG_TILEWIDTH, &tw);
    TIFFGetField(t, TIFFTAG_RESOLUTIONUNIT, &unit);
    TIFFGetField(t, TIFFTAG_XRESOLUTION, &xres);
    CHECK(comp == COMPRESSION_JPEG && photo == PHOTOMETRIC_YCBCR && tw == 256);
    CHECK(unit == RESUNIT_CENTIMETER);
    CHECK_NEAR(xres, 40000, 1e-3);
    CHECK(TIFFGetField(t, TIFFTAG_IMAGEDESCRIPTION, &d) && strstr(d, "mpp=0.25"));
    CHECK(TIFFNumberOfDirectories(t) == 3);
    TIFFClose(t);
  }
  nic_histo_layout_free(l);
}

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)len + 1);
  *n = fread(b, 1, (size_t)len, f);
  b[*n] = '\0';
  fclose(f);
  return b;
}

static int same_file(const char *a, const char *b) {
  size_t na = 0, nb = 0;
  char *x = slurp(a, &na), *y = slurp(b, &nb);
  int same = x && y && na == nb && memcmp(x, y, na) == 0;
  free(x);
  free(y);
  return same;
}

static void test_generate(void) {
  char a[300], b[300], c[300], pa[400], pb[400], pc[400];
  snprintf(a, sizeof a, "%s/a", nic_test_tmpdir());
  snprintf(b, sizeof b, "%s/b", nic_test_tmpdir());
  snprintf(c, sizeof c, "%s/c", nic_test_tmpdir());
  nic_histo_opts o = small_opts(1024, 1024);
  o.count = 4;
  o.seed = 7;
  CHECK_OK(nic_histo_generate(&o, a, NULL));
  o.threads = 1; /* the bytes do not depend on the thread count either */
  CHECK_OK(nic_histo_generate(&o, b, NULL));
  o.seed = 8;
  CHECK_OK(nic_histo_generate(&o, c, NULL));
  const char *files[] = {"labels.csv", "slides.csv", "histo_0000.tif", "histo_0003.tif"};
  for (int i = 0; i < 4; i++) {
    snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
    snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
    snprintf(pc, sizeof pc, "%s/%s", c, files[i]);
    CHECK(same_file(pa, pb));
    if (i >= 1) CHECK(!same_file(pa, pc));
  }
  /* labels.csv: exactly the CLAM columns, half tumour. */
  size_t n = 0;
  snprintf(pa, sizeof pa, "%s/labels.csv", a);
  char *lab = slurp(pa, &n);
  CHECK(lab && !strncmp(lab, "case_id,slide_id,label\n", 23));
  int rows = 0, pos = 0;
  for (char *p = lab ? strchr(lab, '\n') : NULL; p && p[1]; p = strchr(p + 1, '\n')) {
    char id1[64], id2[64];
    int y = -1;
    CHECK(sscanf(p + 1, "%63[^,],%63[^,],%d", id1, id2, &y) == 3);
    CHECK(!strcmp(id1, id2) && (y == 0 || y == 1));
    rows++;
    pos += y == 1;
  }
  CHECK(rows == 4 && pos == 2);
  free(lab);
  /* slides.csv: its header and nine fields a row, consistent with labels. */
  snprintf(pa, sizeof pa, "%s/slides.csv", a);
  char *sl = slurp(pa, &n);
  const char *hdr = "slide_id,path,mpp,tumour,tumour_fraction,mitotic_density,prolif_score,"
                    "survival_time,survival_event\n";
  CHECK(sl && !strncmp(sl, hdr, strlen(hdr)));
  rows = 0;
  for (char *p = sl ? strchr(sl, '\n') : NULL; p && p[1]; p = strchr(p + 1, '\n')) {
    char id[64], file[64];
    double mpp, tf, md, ps, st;
    int tum, ev;
    CHECK(sscanf(p + 1, "%63[^,],%63[^,],%lf,%d,%lf,%lf,%lf,%lf,%d", id, file, &mpp, &tum, &tf, &md,
                 &ps, &st, &ev) == 9);
    CHECK(mpp == 0.5 && (tum ? tf > 0 : tf == 0 && ps == 0) && md >= 0 && st > 0);
    CHECK(ev == 0 || ev == 1);
    rows++;
  }
  CHECK(rows == 4);
  free(sl);
}

static int count_lines(const char *path) {
  size_t n = 0;
  char *s = slurp(path, &n);
  int lines = 0;
  for (size_t i = 0; s && i < n; i++) lines += s[i] == '\n';
  free(s);
  return lines;
}

static void test_patches(void) {
  char a[300], b[300], p[400];
  snprintf(a, sizeof a, "%s/a", nic_test_tmpdir());
  snprintf(b, sizeof b, "%s/b", nic_test_tmpdir());
  nic_patch_opts o = nic_patch_default_opts();
  o.count = 60;
  o.slides = 3;
  o.slide_size = 1536;
  o.threads = 2;
  CHECK_OK(nic_patch_generate(&o, a, NULL));
  o.format = "jpg";
  CHECK_OK(nic_patch_generate(&o, b, NULL));
  const char *tasks[] = {"tissue", "tumour", "mitosis", "nuclei"};
  for (int t = 0; t < 4; t++) {
    snprintf(p, sizeof p, "%s/%s.csv", a, tasks[t]);
    CHECK(count_lines(p) == o.count + 1);
  }
  snprintf(p, sizeof p, "%s/patches.csv", a);
  size_t n = 0;
  char *s = slurp(p, &n);
  CHECK(s && !strncmp(s, "path,tissue,tumour,mitosis,nuclei,split,slide,x,y\n", 50));
  int rows = 0, seen_class[4] = {0}, mit = 0;
  const char *split_of[3] = {NULL, NULL, NULL};
  char splits[3][8];
  for (char *q = s ? strchr(s, '\n') : NULL; q && q[1]; q = strchr(q + 1, '\n')) {
    char path[64], split[8];
    int tissue, tum, mi, nuc, slide, x, y;
    CHECK(sscanf(q + 1, "%63[^,],%d,%d,%d,%d,%7[^,],%d,%d,%d", path, &tissue, &tum, &mi, &nuc,
                 split, &slide, &x, &y) == 9);
    CHECK(tissue >= 0 && tissue < 4 && (tum == 0 || tum == 1) && (mi == 0 || mi == 1));
    CHECK(nuc >= 0 && slide >= 0 && slide < 3);
    if (tissue == 2) CHECK(tum == 1); /* a tumour majority is >= 5% tumour */
    seen_class[tissue]++;
    mit += mi;
    /* One split per slide. */
    if (!split_of[slide]) {
      snprintf(splits[slide], sizeof splits[slide], "%s", split);
      split_of[slide] = splits[slide];
    }
    CHECK(!strcmp(split_of[slide], split));
    char file[500];
    snprintf(file, sizeof file, "%s/%s", a, path);
    CHECK(access(file, R_OK) == 0);
    rows++;
  }
  CHECK(rows == o.count);
  for (int k = 0; k < 4; k++) CHECK(seen_class[k] > 0);
  CHECK(mit > 0);
  free(s);
  /* Same seed, other format: the same patches and labels, as .jpg. */
  char pb[400];
  snprintf(pb, sizeof pb, "%s/patches.csv", b);
  char *t = slurp(pb, &n);
  s = slurp(p, &n);
  int same = s && t;
  for (char *x = s, *y = t; same && x && y; x = strchr(x, '\n'), y = strchr(y, '\n')) {
    x++, y++;
    if (!*x || !*y) {
      same = !*x && !*y;
      break;
    }
    char *cx = strchr(x, ','), *cy = strchr(y, ','), *ex = strchr(x, '\n'), *ey = strchr(y, '\n');
    same = cx && cy && ex && ey && ex - cx == ey - cy && !memcmp(cx, cy, (size_t)(ex - cx));
  }
  CHECK(same);
  free(s);
  free(t);
  snprintf(pb, sizeof pb, "%s/patches/000000.jpg", b);
  CHECK(access(pb, R_OK) == 0);
}

int main(void) {
  RUN(test_bounded_memory); /* first: it forks */
  RUN(test_levels);
  RUN(test_validation);
  RUN(test_layouts);
  RUN(test_render_independent);
  RUN(test_tiff);
  RUN(test_generate);
  RUN(test_patches);
  return nic_test_finish();
}
