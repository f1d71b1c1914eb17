/* The mosaic simulator: layouts (connected tissue, separate connected
 * clusters of the right sizes), cohorts built from a patch folder made
 * here (every patch a unique flat colour with a black corner mark, so the
 * slide read back with OpenSlide shows which patch lies where, and how it
 * was turned), label files, patch reuse, determinism, bad inputs, and a
 * small cohort from PatchCamelyon when ../shared is present. */
#include <openslide.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

#include "nic/data.h"
#include "nic/sim.h"
#include "sim/mosaic_internal.h"
#include "sim/sim_internal.h"
#include "testutil.h"

#define P 32     /* patch side of the made-up folder */
#define MARK 10  /* side of the black mark in each patch's top-left corner */
#define NPAL 125 /* distinct colours: 5 levels per channel */

/* Colour k of the palette: channels from {30, 75, 120, 165, 210}, so two
 * colours differ by 45 or more in some channel, and none is near white. */
static void palette(int k, uint8_t rgb[3]) {
  rgb[0] = (uint8_t)(30 + 45 * (k % 5));
  rgb[1] = (uint8_t)(30 + 45 * (k / 5 % 5));
  rgb[2] = (uint8_t)(30 + 45 * (k / 25 % 5));
}

/* Writes dir/<name> as a P x P patch of colour k with the corner mark;
 * PNG, or JPEG (quality 95) when the name ends in .jpg. */
static void write_patch(const char *dir, const char *name, int k) {
  uint8_t px[P * P * 3], c[3];
  palette(k, c);
  for (int y = 0; y < P; y++)
    for (int x = 0; x < P; x++)
      for (int ch = 0; ch < 3; ch++) px[(y * P + x) * 3 + ch] = x < MARK && y < MARK ? 0 : c[ch];
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (strstr(name, ".jpg")) {
    uint8_t *jpg = NULL;
    size_t n = 0;
    CHECK_OK(sim_jpeg_encode(px, P, P, P * 3, 95, &jpg, &n, NULL));
    CHECK_OK(sim_write_file(path, jpg, n, NULL));
    free(jpg);
  } else {
    CHECK_OK(sim_png_write(path, px, P, P, 3, P * 3, 1, NULL));
  }
}

/* root/<neg>/nNNN.png (colours 0..nneg-1) and root/<pos>/tNNN.jpg (colours
 * 100..100+npos-1). */
static void make_folder(const char *root, const char *neg, const char *pos, int nneg, int npos) {
  char dir[500], name[64];
  snprintf(dir, sizeof dir, "%s/%s", root, neg);
  CHECK_OK(sim_mkdirs(dir, NULL));
  for (int i = 0; i < nneg; i++) {
    snprintf(name, sizeof name, "n%03d.png", i);
    write_patch(dir, name, i);
  }
  snprintf(dir, sizeof dir, "%s/%s", root, pos);
  CHECK_OK(sim_mkdirs(dir, NULL));
  for (int i = 0; i < npos; i++) {
    snprintf(name, sizeof name, "t%03d.jpg", i);
    write_patch(dir, name, 100 + i);
  }
}

/* The palette index a source path stands for (n017.png -> 17, t003.jpg
 * -> 103), -1 if it is not one of ours. */
static int colour_of(const char *source) {
  const char *b = strrchr(source, '/');
  b = b ? b + 1 : source;
  int k = -1;
  if (sscanf(b + 1, "%d", &k) != 1) return -1;
  return b[0] == 'n' ? k : b[0] == 't' ? 100 + k : -1;
}

typedef struct warnings {
  int n;
  char text[4096];
} warnings;

static void collect(void *user, const char *msg) {
  warnings *w = user;
  size_t len = strlen(w->text);
  snprintf(w->text + len, sizeof w->text - len, "%s\n", msg);
  w->n++;
}

static nic_mosaic_opts small_opts(const char *root) {
  nic_mosaic_opts o = nic_mosaic_default_opts();
  o.patches = root;
  o.slides = 8;
  o.tissue_patches = 10;
  o.tissue_spread = 0.2;
  o.cluster_min = 2;
  o.cluster_max = 4;
  o.margin = 1;
  o.threads = 2;
  o.seed = 3;
  return o;
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

/* ---- patches.csv and slides.csv, parsed ---- */

typedef struct placed {
  char slide[32], source[128];
  int gx, gy, x, y, cls, cluster, tf;
} placed;

typedef struct slide_row {
  char id[32], file[64];
  double mpp;
  int label, ntissue, ntumour, csize, nclusters, w, h, pw, ph;
} slide_row;

static placed *read_patches(const char *dir, int *n) {
  char path[600];
  snprintf(path, sizeof path, "%s/patches.csv", dir);
  size_t len = 0;
  char *s = slurp(path, &len);
  *n = 0;
  if (!s) return NULL;
  CHECK(!strncmp(s, "slide_id,grid_x,grid_y,x,y,source,class,cluster,transform\n", 58));
  int cap = 0;
  for (size_t i = 0; i < len; i++) cap += s[i] == '\n';
  placed *p = calloc((size_t)cap + 1, sizeof *p);
  for (char *q = strchr(s, '\n'); q && q[1]; q = strchr(q + 1, '\n')) {
    placed *r = &p[*n];
    int got = sscanf(q + 1, "%31[^,],%d,%d,%d,%d,%127[^,],%d,%d,%d", r->slide, &r->gx, &r->gy,
                     &r->x, &r->y, r->source, &r->cls, &r->cluster, &r->tf);
    CHECK(got == 9);
    if (got == 9) (*n)++;
  }
  free(s);
  return p;
}

static slide_row *read_slides(const char *dir, int *n) {
  char path[600];
  snprintf(path, sizeof path, "%s/slides.csv", dir);
  size_t len = 0;
  char *s = slurp(path, &len);
  *n = 0;
  if (!s) return NULL;
  const char *hdr = "slide_id,path,mpp,label,n_tissue_patches,n_tumour_patches,cluster_size,"
                    "n_clusters,width,height,patch_width,patch_height\n";
  CHECK(!strncmp(s, hdr, strlen(hdr)));
  slide_row *r = calloc(64, sizeof *r);
  for (char *q = strchr(s, '\n'); q && q[1] && *n < 64; q = strchr(q + 1, '\n')) {
    slide_row *x = &r[*n];
    int got = sscanf(q + 1, "%31[^,],%63[^,],%lf,%d,%d,%d,%d,%d,%d,%d,%d,%d", x->id, x->file,
                     &x->mpp, &x->label, &x->ntissue, &x->ntumour, &x->csize, &x->nclusters, &x->w,
                     &x->h, &x->pw, &x->ph);
    CHECK(got == 12);
    if (got == 12) (*n)++;
  }
  free(s);
  return r;
}

/* Is the set of cells (xs[i], ys[i]) 4-connected? */
static int connected(const int *xs, const int *ys, int n) {
  if (n == 0) return 1;
  int *seen = calloc((size_t)n, sizeof(int)), *stack = malloc(sizeof(int) * (size_t)n);
  int top = 0, count = 1;
  seen[0] = 1;
  stack[top++] = 0;
  while (top > 0) {
    int a = stack[--top];
    for (int b = 0; b < n; b++)
      if (!seen[b] && abs(xs[a] - xs[b]) + abs(ys[a] - ys[b]) == 1) {
        seen[b] = 1;
        count++;
        stack[top++] = b;
      }
  }
  free(seen);
  free(stack);
  return count == n;
}

/* ---- layouts, without files ---- */

static void test_layouts(void) {
  nic_mosaic_opts o = nic_mosaic_default_opts();
  o.patches = "unused";
  o.tissue_patches = 120;
  o.clusters = 3;
  o.cluster_min = 3;
  o.cluster_max = 9;
  int lo = (int)lround(120 * 0.8), hi = (int)lround(120 * 1.2), shapes[3] = {0, 0, 0};
  for (int i = 0; i < 40; i++) {
    mosaic_layout l;
    CHECK_OK(mosaic_layout_make(&l, &o, i, i % 2, NULL));
    shapes[l.shape]++;
    CHECK(l.ntissue >= lo && l.ntissue <= hi);
    /* The tissue: connected, inside the margin, the grid holds exactly it. */
    CHECK(connected(l.tx, l.ty, l.ntissue));
    int cells = 0;
    for (int k = 0; k < l.gw * l.gh; k++) cells += l.cell[k] >= 0;
    CHECK(cells == l.ntissue);
    for (int t = 0; t < l.ntissue; t++) {
      CHECK(l.tx[t] >= o.margin && l.tx[t] < l.gw - o.margin);
      CHECK(l.ty[t] >= o.margin && l.ty[t] < l.gh - o.margin);
      CHECK(l.cell[l.ty[t] * l.gw + l.tx[t]] == t);
    }
    /* Clusters: only on positives, sizes in range, each connected, no two
     * touching (not even diagonally). */
    CHECK(l.nclusters == (i % 2 ? 3 : 0));
    int total = 0;
    for (int c = 1; c <= l.nclusters; c++) {
      int xs[64], ys[64], n = 0;
      for (int t = 0; t < l.ntissue; t++)
        if (l.cluster[t] == c && n < 64) xs[n] = l.tx[t], ys[n++] = l.ty[t];
      CHECK(n == l.csize[c - 1] && n >= o.cluster_min && n <= o.cluster_max);
      CHECK(connected(xs, ys, n));
      total += n;
    }
    CHECK(total == l.ntumour);
    for (int a = 0; a < l.ntissue; a++)
      for (int b = 0; b < l.ntissue; b++)
        if (l.cluster[a] && l.cluster[b] && l.cluster[a] != l.cluster[b])
          CHECK(abs(l.tx[a] - l.tx[b]) > 1 || abs(l.ty[a] - l.ty[b]) > 1);
    /* The same slide again: the same layout. */
    mosaic_layout m;
    CHECK_OK(mosaic_layout_make(&m, &o, i, i % 2, NULL));
    CHECK(m.gw == l.gw && m.gh == l.gh && m.ntissue == l.ntissue);
    CHECK(!memcmp(m.cell, l.cell, sizeof(int) * (size_t)l.gw * l.gh));
    CHECK(!memcmp(m.cluster, l.cluster, sizeof(int) * (size_t)l.ntissue));
    mosaic_layout_free(&m);
    mosaic_layout_free(&l);
  }
  CHECK(shapes[NIC_MOSAIC_BLOB] > 5 && shapes[NIC_MOSAIC_RECT] > 5); /* mixed */
  /* A large blob and a large rectangle stay connected too. */
  o.tissue_patches = 2000;
  for (int s = NIC_MOSAIC_BLOB; s <= NIC_MOSAIC_RECT; s++) {
    o.shape = (nic_mosaic_shape)s;
    mosaic_layout l;
    CHECK_OK(mosaic_layout_make(&l, &o, 0, 1, NULL));
    CHECK(l.shape == (nic_mosaic_shape)s && connected(l.tx, l.ty, l.ntissue));
    mosaic_layout_free(&l);
  }
}

static void test_validation(void) {
  nic_mosaic_opts o = small_opts("somewhere");
  nic_error e = {0};
  CHECK(nic_mosaic_check(&o, &e) == NIC_OK);
  o.patches = NULL;
  CHECK(nic_mosaic_check(&o, &e) == NIC_EINVAL);
  o = small_opts("somewhere");
  o.cluster_min = 5;
  o.cluster_max = 4;
  CHECK(nic_mosaic_check(&o, &e) == NIC_EINVAL);
  o = small_opts("somewhere");
  o.clusters = 3; /* 3 x 4 > 8 / 2 */
  CHECK(nic_mosaic_check(&o, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "do not fit") != NULL);
  o = small_opts("somewhere");
  o.positive_class = "0";
  CHECK(nic_mosaic_check(&o, &e) == NIC_EINVAL);
  o = small_opts("somewhere");
  o.positive_fraction = 1.5;
  CHECK(nic_mosaic_check(&o, &e) == NIC_EINVAL);
  o = small_opts("somewhere");
  o.patch_mpp = 0;
  CHECK(nic_mosaic_check(&o, &e) == NIC_EINVAL);
  o = small_opts("somewhere");
  o.split = "../x";
  CHECK(nic_mosaic_check(&o, &e) == NIC_EINVAL);
}

/* ---- a cohort, read back ---- */

/* Reads a whole slide's level 0 as 0xAARRGGBB. */
static uint32_t *read_slide(const char *path, int64_t *w, int64_t *h) {
  openslide_t *os = openslide_open(path);
  CHECK(os && !openslide_get_error(os));
  if (!os) return NULL;
  openslide_get_level0_dimensions(os, w, h);
  uint32_t *buf = malloc(sizeof(uint32_t) * (size_t)(*w * *h));
  openslide_read_region(os, buf, 0, 0, 0, *w, *h);
  CHECK(!openslide_get_error(os));
  openslide_close(os);
  return buf;
}

/* Colours read back within TOL per channel: JPEG (of the tumour patches,
 * then of the tiles, with 4:2:0 chroma) moves saturated colours by up to
 * about 18 levels; palette colours are 45 apart, so TOL < 22.5 still tells
 * every patch from every other. */
#define TOL 20

static int near(uint32_t argb, const uint8_t rgb[3], int tol) {
  int r = (argb >> 16) & 255, g = (argb >> 8) & 255, b = argb & 255;
  return abs(r - rgb[0]) <= tol && abs(g - rgb[1]) <= tol && abs(b - rgb[2]) <= tol;
}

static void test_cohort(void) {
  const char *tmp = nic_test_tmpdir();
  char root[300], out[300];
  snprintf(root, sizeof root, "%s/patches", tmp);
  snprintf(out, sizeof out, "%s/out", tmp);
  make_folder(root, "0", "1", 100, 24);
  nic_mosaic_opts o = small_opts(root);
  o.augment = 1;
  warnings w = {0};
  o.warning = collect;
  o.warning_user = &w;
  CHECK_OK(nic_mosaic_generate(&o, out, NULL));
  CHECK(w.n == 0); /* enough patches: nothing to warn about */

  /* labels.csv: the CLAM columns, exactly half positive. */
  char path[600];
  size_t len = 0;
  snprintf(path, sizeof path, "%s/labels.csv", out);
  char *lab = slurp(path, &len);
  CHECK(lab && !strncmp(lab, "case_id,slide_id,label\n", 23));
  int rows = 0, pos = 0, label_of[8];
  for (char *q = lab ? strchr(lab, '\n') : NULL; q && q[1]; q = strchr(q + 1, '\n')) {
    char a[32], b[32];
    int y = -1;
    CHECK(sscanf(q + 1, "%31[^,],%31[^,],%d", a, b, &y) == 3 && !strcmp(a, b));
    if (rows < 8) label_of[rows] = y;
    rows++;
    pos += y == 1;
  }
  free(lab);
  CHECK(rows == 8 && pos == 4);

  int ns = 0, np = 0;
  slide_row *sl = read_slides(out, &ns);
  placed *pl = read_patches(out, &np);
  CHECK(ns == 8);
  /* No source twice in the cohort; no cell twice in a slide. */
  for (int a = 0; a < np; a++)
    for (int b = a + 1; b < np; b++) {
      CHECK(strcmp(pl[a].source, pl[b].source) != 0);
      if (!strcmp(pl[a].slide, pl[b].slide)) CHECK(pl[a].gx != pl[b].gx || pl[a].gy != pl[b].gy);
    }
  for (int i = 0; i < ns; i++) {
    slide_row *s = &sl[i];
    CHECK(s->label == label_of[i] && fabs(s->mpp - NIC_PCAM_MPP) < 1e-9 && s->pw == P &&
          s->ph == P);
    CHECK(s->ntissue >= 8 && s->ntissue <= 12);
    CHECK(s->label
              ? s->ntumour >= 2 && s->ntumour <= 4 && s->csize == s->ntumour && s->nclusters == 1
              : s->ntumour == 0 && s->csize == 0 && s->nclusters == 0);
    /* Its rows of patches.csv agree, and the tumour cluster is connected. */
    int xs[64], ys[64], nt = 0, ntis = 0;
    for (int k = 0; k < np; k++) {
      placed *p = &pl[k];
      if (strcmp(p->slide, s->id)) continue;
      ntis++;
      CHECK(p->x == p->gx * P && p->y == p->gy * P && p->tf >= 0 && p->tf < 8);
      CHECK(p->cls == (p->cluster > 0) && p->cluster <= 1);
      CHECK(!strncmp(p->source, p->cls ? "1/t" : "0/n", 3));
      if (p->cls && nt < 64) xs[nt] = p->gx, ys[nt++] = p->gy;
    }
    CHECK(ntis == s->ntissue && nt == s->ntumour);
    CHECK(connected(xs, ys, nt));

    /* The pixels: every placed patch has its source's colour, its mark
     * in the corner its transform says; every other cell is glass. */
    snprintf(path, sizeof path, "%s/%s", out, s->file);
    int64_t W = 0, H = 0;
    uint32_t *px = read_slide(path, &W, &H);
    if (!px) continue;
    CHECK(W == s->w && H == s->h && W % P == 0 && H % P == 0);
    int gw = (int)(W / P), gh = (int)(H / P);
    char *tissue = calloc((size_t)(gw * gh), 1);
    const uint8_t black[3] = {0, 0, 0}, white[3] = {241, 241, 241};
    for (int k = 0; k < np; k++) {
      placed *p = &pl[k];
      if (strcmp(p->slide, s->id)) continue;
      tissue[p->gy * gw + p->gx] = 1;
      uint8_t c[3];
      palette(colour_of(p->source), c);
      CHECK(near(px[(p->y + P / 2) * W + p->x + P / 2], c, TOL));
      /* Corners clockwise from top-left; the mark starts top-left, a
       * mirror moves it top-right, each quarter turn one corner on. */
      int mark = ((p->tf & 1) + (p->tf >> 1)) % 4;
      for (int corner = 0; corner < 4; corner++) {
        int cx = corner == 1 || corner == 2 ? P - 4 : 3, cy = corner >= 2 ? P - 4 : 3;
        uint32_t v = px[(p->y + cy) * W + p->x + cx];
        CHECK(corner == mark ? near(v, black, TOL + 4) : near(v, c, TOL));
      }
    }
    for (int gy = 0; gy < gh; gy++)
      for (int gx = 0; gx < gw; gx++)
        if (!tissue[gy * gw + gx]) CHECK(near(px[(gy * P + P / 2) * W + gx * P + 3], white, 10));
    free(tissue);
    free(px);
  }
  /* The spacing, as the histo slides carry it. */
  snprintf(path, sizeof path, "%s/mosaic_0000.tif", out);
  TIFF *t = TIFFOpen(path, "r");
  CHECK(t != NULL);
  if (t) {
    float xres = 0;
    uint16_t unit = 0;
    char *d = NULL;
    TIFFGetField(t, TIFFTAG_RESOLUTIONUNIT, &unit);
    TIFFGetField(t, TIFFTAG_XRESOLUTION, &xres);
    CHECK(unit == RESUNIT_CENTIMETER);
    CHECK_NEAR(xres, 1e4 / NIC_PCAM_MPP, 1e-2);
    CHECK(TIFFGetField(t, TIFFTAG_IMAGEDESCRIPTION, &d) && strstr(d, "mpp=0.972;"));
    TIFFClose(t);
  }
  free(sl);
  free(pl);
}

/* Same seed, same bytes: whatever the thread count and whether the
 * patches are cached; another seed, other slides. */
static void test_determinism(void) {
  const char *tmp = nic_test_tmpdir();
  char root[300], a[300], b[300], c[300];
  snprintf(root, sizeof root, "%s/patches", tmp);
  snprintf(a, sizeof a, "%s/a", tmp);
  snprintf(b, sizeof b, "%s/b", tmp);
  snprintf(c, sizeof c, "%s/c", tmp);
  make_folder(root, "0", "1", 40, 12);
  nic_mosaic_opts o = small_opts(root);
  o.slides = 4;
  o.augment = 1;
  CHECK_OK(nic_mosaic_generate(&o, a, NULL));
  o.threads = 1;
  o.cache_mb = 0;
  CHECK_OK(nic_mosaic_generate(&o, b, NULL));
  o.seed = 4;
  CHECK_OK(nic_mosaic_generate(&o, c, NULL));
  const char *files[] = {"labels.csv", "slides.csv", "patches.csv", "mosaic_0000.tif",
                         "mosaic_0003.tif"};
  for (int i = 0; i < 5; i++) {
    char pa[400], pb[400], pc[400];
    snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
    snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
    snprintf(pc, sizeof pc, "%s/%s", c, files[i]);
    CHECK(same_file(pa, pb));
    if (i >= 2) CHECK(!same_file(pa, pc));
  }
}

/* Too few patches for a cohort without reuse: reused across slides with a
 * warning, never within a slide; or an error with --reuse never. */
static void test_reuse(void) {
  const char *tmp = nic_test_tmpdir();
  char root[300], out[300];
  snprintf(root, sizeof root, "%s/patches", tmp);
  snprintf(out, sizeof out, "%s/out", tmp);
  make_folder(root, "0", "1", 20, 6);
  nic_mosaic_opts o = small_opts(root);
  warnings w = {0};
  o.warning = collect;
  o.warning_user = &w;
  CHECK_OK(nic_mosaic_generate(&o, out, NULL));
  CHECK(w.n == 2 && strstr(w.text, "20 negative patches") && strstr(w.text, "6 positive"));
  int np = 0;
  placed *pl = read_patches(out, &np);
  int reused = 0;
  for (int a = 0; a < np; a++)
    for (int b = a + 1; b < np; b++)
      if (!strcmp(pl[a].source, pl[b].source)) {
        CHECK(strcmp(pl[a].slide, pl[b].slide) != 0);
        reused++;
      }
  CHECK(reused > 0);
  free(pl);
  nic_error e = {0};
  o.reuse = NIC_MOSAIC_REUSE_NEVER;
  CHECK(nic_mosaic_generate(&o, out, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "reuse") != NULL);
  /* One slide needing more than the folder holds cannot be made at all. */
  o.reuse = NIC_MOSAIC_REUSE_AUTO;
  o.tissue_patches = 40;
  CHECK(nic_mosaic_generate(&o, out, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "only 20") != NULL);
}

/* <root>/<split>/<class>/ with named classes. */
static void test_split_folders(void) {
  const char *tmp = nic_test_tmpdir();
  char root[300], split[400], out[300];
  snprintf(root, sizeof root, "%s/patches", tmp);
  snprintf(split, sizeof split, "%s/valid", root);
  snprintf(out, sizeof out, "%s/out", tmp);
  make_folder(split, "normal", "tumor", 30, 8);
  nic_mosaic_opts o = small_opts(root);
  o.slides = 2;
  o.split = "valid";
  o.negative_class = "normal";
  o.positive_class = "tumor";
  o.prefix = "case";
  CHECK_OK(nic_mosaic_generate(&o, out, NULL));
  int np = 0;
  placed *pl = read_patches(out, &np);
  CHECK(np > 0);
  for (int k = 0; k < np; k++) {
    CHECK(!strncmp(pl[k].source, pl[k].cls ? "valid/tumor/t" : "valid/normal/n", 13));
    CHECK(!strncmp(pl[k].slide, "case_", 5));
  }
  free(pl);
  /* Without --split the classes are not found, and the message says why. */
  nic_error e = {0};
  o.split = NULL;
  CHECK(nic_mosaic_generate(&o, out, &e) == NIC_EIO);
  CHECK(strstr(e.msg, "'normal' not found") && strstr(e.msg, "valid") && strstr(e.msg, "--split"));
}

static void test_bad_inputs(void) {
  const char *tmp = nic_test_tmpdir();
  char root[300], out[300], dir[400];
  snprintf(root, sizeof root, "%s/patches", tmp);
  snprintf(out, sizeof out, "%s/out", tmp);
  nic_error e = {0};
  nic_mosaic_opts o = small_opts(root);
  o.slides = 2;

  /* A missing folder. */
  CHECK(nic_mosaic_generate(&o, out, &e) == NIC_EIO);
  CHECK(strstr(e.msg, root) != NULL);
  /* A missing class folder, named with what is there. */
  make_folder(root, "0", "x", 30, 8);
  CHECK(nic_mosaic_generate(&o, out, &e) == NIC_EIO);
  CHECK(strstr(e.msg, "positive class folder '1' not found") && strstr(e.msg, "0, x"));
  /* A missing split. */
  o.split = "test";
  CHECK(nic_mosaic_generate(&o, out, &e) == NIC_EIO);
  CHECK(strstr(e.msg, "no split folder 'test'") != NULL);
  o.split = NULL;
  o.positive_class = "x";
  /* A corrupt file and one of another size: reported by name and skipped. */
  snprintf(dir, sizeof dir, "%s/0/broken.png", root);
  CHECK_OK(sim_write_file(dir, "not a png at all", 16, NULL));
  snprintf(dir, sizeof dir, "%s/x", root);
  uint8_t small[16 * 16 * 3];
  memset(small, 90, sizeof small);
  char odd[500];
  snprintf(odd, sizeof odd, "%s/odd.png", dir);
  CHECK_OK(sim_png_write(odd, small, 16, 16, 3, 16 * 3, 1, NULL));
  warnings w = {0};
  o.warning = collect;
  o.warning_user = &w;
  CHECK_OK(nic_mosaic_generate(&o, out, &e));
  CHECK(w.n == 2 && strstr(w.text, "broken.png") && strstr(w.text, "odd.png: 16x16 px"));
  int np = 0;
  placed *pl = read_patches(out, &np);
  CHECK(np > 0);
  for (int k = 0; k < np; k++)
    CHECK(!strstr(pl[k].source, "broken") && !strstr(pl[k].source, "odd"));
  free(pl);
  /* A class folder without images. */
  snprintf(dir, sizeof dir, "%s/empty", root);
  CHECK_OK(sim_mkdirs(dir, NULL));
  o.positive_class = "empty";
  CHECK(nic_mosaic_generate(&o, out, &e) == NIC_EIO);
  CHECK(strstr(e.msg, "empty: no image files") != NULL);
  /* A class folder whose only image is unreadable. */
  snprintf(dir, sizeof dir, "%s/empty/bad.jpg", root);
  CHECK_OK(sim_write_file(dir, "garbage", 7, NULL));
  CHECK(nic_mosaic_generate(&o, out, &e) == NIC_EIO);
  CHECK(strstr(e.msg, "no usable positive patch") != NULL);
}

/* A few slides from the PatchCamelyon validation split in ../shared. */
static void test_pcam(void) {
  const char *shared = nic_test_shared_dir();
  char root[600], out[300];
  if (shared) snprintf(root, sizeof root, "%s/data/pcam", shared);
  struct stat st;
  if (!shared || stat(root, &st) != 0) {
    printf("  (skipped: no PatchCamelyon in ../shared)\n");
    return;
  }
  snprintf(out, sizeof out, "%s/pcam", nic_test_tmpdir());
  nic_mosaic_opts o = nic_mosaic_default_opts();
  o.patches = root;
  o.split = "valid";
  o.slides = 4;
  o.threads = 2;
  CHECK_OK(nic_mosaic_generate(&o, out, NULL));
  int ns = 0, np = 0;
  slide_row *sl = read_slides(out, &ns);
  placed *pl = read_patches(out, &np);
  CHECK(ns == 4);
  int pos = 0, total = 0;
  for (int i = 0; i < ns; i++) {
    pos += sl[i].label;
    total += sl[i].ntissue;
    CHECK(sl[i].pw == 96 && sl[i].ph == 96 && fabs(sl[i].mpp - NIC_PCAM_MPP) < 1e-9);
    CHECK(sl[i].ntissue >= 160 && sl[i].ntissue <= 240);
    CHECK(sl[i].label ? sl[i].csize >= 4 && sl[i].csize <= 8 : sl[i].ntumour == 0);
  }
  CHECK(pos == 2 && np == total);
  for (int k = 0; k < np; k++)
    CHECK(!strncmp(pl[k].source, pl[k].cls ? "valid/1/" : "valid/0/", 8));
  char path[400];
  snprintf(path, sizeof path, "%s/mosaic_0000.tif", out);
  openslide_t *os = openslide_open(path);
  CHECK(os && !openslide_get_error(os));
  if (os) openslide_close(os);
  free(sl);
  free(pl);
}

/* --cell-um: every cell is the central crop of its patch, the slide's
 * spacing makes a cell measure exactly cell_um, and too large a cell is an
 * error naming the sizes. */
static void test_cell_crop(void) {
  const char *tmp = nic_test_tmpdir();
  char root[300], out[300];
  snprintf(root, sizeof root, "%s/patches", tmp);
  snprintf(out, sizeof out, "%s/out", tmp);
  make_folder(root, "0", "1", 60, 12);
  nic_mosaic_opts o = small_opts(root);
  o.slides = 2;
  o.patch_mpp = 0.5;
  o.cell_um = 10.6; /* round(21.2) = 21 px of the 32, a cell of 10.6 / 21 um/px */
  CHECK_OK(nic_mosaic_generate(&o, out, NULL));
  int ns = 0, np = 0;
  slide_row *sr = read_slides(out, &ns);
  placed *pl = read_patches(out, &np);
  CHECK(ns == 2 && np > 0);
  for (int i = 0; i < ns; i++) {
    CHECK(sr[i].pw == 21 && sr[i].ph == 21);
    CHECK(fabs(sr[i].mpp - 10.6 / 21) < 1e-7);
    CHECK(sr[i].w % 21 == 0 && sr[i].h % 21 == 0);
  }
  /* The crop starts at (32 - 21) / 2 = 5: the 10 px corner mark leaves a
   * 5 px black corner; the rest of the cell is the patch's colour. */
  char path[600];
  snprintf(path, sizeof path, "%s/%s", out, sr[0].file);
  int64_t w = 0, h = 0;
  uint32_t *px = read_slide(path, &w, &h);
  int checked = 0;
  for (int i = 0; px && i < np; i++) {
    if (strcmp(pl[i].slide, sr[0].id)) continue;
    CHECK(pl[i].x == pl[i].gx * 21 && pl[i].y == pl[i].gy * 21);
    uint8_t c[3];
    palette(colour_of(pl[i].source), c);
    const uint8_t black[3] = {0, 0, 0};
    CHECK(near(px[(int64_t)(pl[i].y + 2) * w + pl[i].x + 2], black, TOL));
    CHECK(near(px[(int64_t)(pl[i].y + 7) * w + pl[i].x + 7], c, TOL));
    CHECK(near(px[(int64_t)(pl[i].y + 2) * w + pl[i].x + 15], c, TOL));
    checked++;
  }
  CHECK(checked > 5);
  free(px);
  free(sr);
  free(pl);

  nic_error e = {0};
  o.cell_um = 20; /* 40 px of a 32 px patch */
  CHECK(nic_mosaic_generate(&o, out, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "40 px") && strstr(e.msg, "32x32"));
  o.cell_um = -1;
  CHECK(nic_mosaic_check(&o, &e) == NIC_EINVAL);
}

int main(void) {
  RUN(test_layouts);
  RUN(test_validation);
  RUN(test_cohort);
  RUN(test_determinism);
  RUN(test_reuse);
  RUN(test_split_folders);
  RUN(test_bad_inputs);
  RUN(test_cell_crop);
  RUN(test_pcam);
  return nic_test_finish();
}
