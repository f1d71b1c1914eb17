/* Compressed-slide files (nic/features.h): round trips, the grid, atomic
 * writing, validation of broken files, h5py compatibility, and bounded
 * memory for large slides. */
#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nic/features.h"
#include "testutil.h"

static const char *tmpdir;
static int sanitized; /* NIC_SANITIZED=1: smaller sizes */

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

static long file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static void path_in_tmp(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "%s/%s", tmpdir, name);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- a synthetic slide ---------------------------------------------------- */

/* Deterministic embedding of a cell, and of its orientations; the Python
 * check computes the same values. Both products are exact, so the result
 * does not depend on whether the compiler fuses multiply and add. */
static float feat_value(int64_t cell, int c) {
  return (float)cell * 0.25f + (float)c * 0.0009765625f - 3.0f;
}

static float orient_value(int64_t cell, int o, int c) {
  return feat_value(cell, c) + 100.0f * (float)(o + 1);
}

/* Which cells hold tissue: a fixed, irregular pattern. */
static int kept(int i, int j) {
  return (i * 7 + j * 3) % 5 != 0;
}

/* 128 px at 0.5 um/px on a 0.2428 um/px slide: a fractional stride. */
#define SLIDE_MPP 0.2428

static nic_features_meta test_meta(int H, int W, int C, int orientations) {
  nic_features_meta m = nic_features_default_meta();
  m.slide_id = "slide-1";
  m.slide_path = "/data/slide-1.svs";
  m.stride_level0 = 128 * 0.5 / SLIDE_MPP;
  m.grid_h = H;
  m.grid_w = W;
  m.slide_width = (int64_t)(W * m.stride_level0) - 10;
  m.slide_height = (int64_t)(H * m.stride_level0) - 3;
  m.slide_mpp_x = m.slide_mpp_y = SLIDE_MPP;
  m.level0_magnification = 40;
  m.embed_dim = C;
  m.encoder = "nic-multitask-4";
  m.encoder_sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  m.has_orientations = orientations;
  m.command_line = "nic compress slide-1.svs -o out/";
  return m;
}

/* The rows of a slide: every kept cell in row-major order. */
typedef struct rows {
  int64_t n;
  float *features;     /* n x C */
  int32_t *coords;     /* n x 2 */
  float *orientations; /* n x 8 x C, or NULL */
} rows;

static rows make_rows(const nic_features_meta *m, int all_cells) {
  rows r = {0, NULL, NULL, NULL};
  int64_t cap = (int64_t)m->grid_h * m->grid_w, C = m->embed_dim;
  r.features = malloc(sizeof(float) * (size_t)(cap * C));
  r.coords = malloc(sizeof(int32_t) * 2 * (size_t)cap);
  if (m->has_orientations) r.orientations = malloc(sizeof(float) * 8 * (size_t)(cap * C));
  for (int i = 0; i < m->grid_h; i++) {
    for (int j = 0; j < m->grid_w; j++) {
      if (!all_cells && !kept(i, j)) continue;
      int64_t cell = (int64_t)i * m->grid_w + j, k = r.n++;
      r.coords[2 * k] = nic_features_cell_x(m, j);
      r.coords[2 * k + 1] = nic_features_cell_y(m, i);
      for (int c = 0; c < C; c++) r.features[k * C + c] = feat_value(cell, c);
      if (r.orientations)
        for (int o = 0; o < 8; o++)
          for (int c = 0; c < C; c++)
            r.orientations[(k * 8 + o) * C + c] = orient_value(cell, o, c);
    }
  }
  return r;
}

static void free_rows(rows *r) {
  free(r->features);
  free(r->coords);
  free(r->orientations);
}

/* Appends rows in batches whose sizes cycle through 1, batch and 3, so
 * that batch edges fall everywhere relative to the HDF5 chunks. */
static nic_status append_all(nic_features_writer *w, const nic_features_meta *m, const rows *r,
                             int batch, nic_error *err) {
  int sizes[3] = {1, batch, 3};
  int64_t C = m->embed_dim;
  for (int64_t k = 0, b = 0; k < r->n; b++) {
    int64_t n = sizes[b % 3];
    if (n > r->n - k) n = r->n - k;
    nic_status s =
        nic_features_writer_append(w, n, r->features + k * C, r->coords + 2 * k,
                                   r->orientations ? r->orientations + k * 8 * C : NULL, err);
    if (s != NIC_OK) return s;
    k += n;
  }
  return NIC_OK;
}

/* Writes and commits a whole slide. */
static nic_status write_slide(const char *path, const nic_features_meta *m, const rows *r,
                              int batch, const nic_features_write_opts *o, nic_error *err) {
  nic_features_writer *w = NULL;
  nic_status s = nic_features_writer_create(&w, path, m, o, err);
  if (s != NIC_OK) return s;
  s = append_all(w, m, r, batch, err);
  if (s != NIC_OK) {
    nic_features_writer_abort(w);
    return s;
  }
  return nic_features_writer_commit(w, err);
}

/* 1 when the C x H x W grid holds exactly the embedding of every kept cell
 * (orientation -1 = features) and zeros elsewhere. */
static int grid_matches(const float *grid, const nic_features_meta *m, int orientation,
                        int all_cells) {
  int64_t HW = (int64_t)m->grid_h * m->grid_w;
  for (int i = 0; i < m->grid_h; i++)
    for (int j = 0; j < m->grid_w; j++) {
      int64_t cell = (int64_t)i * m->grid_w + j;
      for (int c = 0; c < m->embed_dim; c++) {
        float want = !all_cells && !kept(i, j) ? 0.0f
                     : orientation < 0         ? feat_value(cell, c)
                                               : orient_value(cell, orientation, c);
        if (grid[c * HW + cell] != want) {
          fprintf(stderr, "  grid[%d, %d, %d] = %g, want %g\n", c, i, j, grid[c * HW + cell], want);
          return 0;
        }
      }
    }
  return 1;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_cell_math(void) {
  nic_features_meta m = test_meta(5, 6, 4, 0);
  for (int j = 0; j < m.grid_w; j++) {
    double exact = j * m.stride_level0;
    int32_t x = nic_features_cell_x(&m, j);
    CHECK(x == (int32_t)floor(exact + 0.5));
    int i = -1, jj = -1;
    CHECK(nic_features_coord_cell(&m, x, 0, &i, &jj) && i == 0 && jj == j);
    CHECK(!nic_features_coord_cell(&m, x + 1, 0, NULL, NULL)); /* between corners */
  }
  CHECK(!nic_features_coord_cell(&m, nic_features_cell_x(&m, 6), 0, NULL, NULL)); /* outside */
  CHECK(!nic_features_coord_cell(&m, -264, 0, NULL, NULL));
  CHECK(!nic_features_coord_cell(&m, 0, nic_features_cell_y(&m, 5), NULL, NULL));

  /* The awkward case: stride 1 with a half-pixel origin puts every corner
   * exactly half way; each must still map back to its own cell. */
  m.stride_level0 = 1;
  m.origin_x = 0.5;
  m.origin_y = 10;
  for (int j = 0; j < m.grid_w; j++) {
    int i = -1, jj = -1;
    CHECK(nic_features_coord_cell(&m, nic_features_cell_x(&m, j), nic_features_cell_y(&m, 4), &i,
                                  &jj));
    CHECK(i == 4 && jj == j);
  }
}

static void test_grid_for_slide(void) {
  nic_features_meta m = nic_features_default_meta();
  nic_error err = {0};
  CHECK_OK(nic_features_meta_set_grid(&m, 100000, 80000, SLIDE_MPP, &err));
  CHECK(m.stride_level0 == 128 * 0.5 / SLIDE_MPP);
  CHECK(m.grid_w == 380 && m.grid_h == 304); /* ceil(100000 / 263.59), ceil(80000 / 263.59) */
  CHECK(m.slide_width == 100000 && m.slide_height == 80000);
  CHECK(nic_features_cell_x(&m, m.grid_w - 1) < 100000);
  CHECK_OK(nic_features_meta_set_grid(&m, 128, 1, 0.5, &err));
  CHECK(m.grid_w == 1 && m.grid_h == 1 && m.stride_level0 == 128);
  CHECK_OK(nic_features_meta_set_grid(&m, 129, 256, 0.5, &err));
  CHECK(m.grid_w == 2 && m.grid_h == 2);
  CHECK(nic_features_meta_set_grid(&m, 0, 10, 0.5, &err) == NIC_EINVAL);
  CHECK(nic_features_meta_set_grid(&m, 10, 10, 0, &err) == NIC_EINVAL);
  CHECK(nic_features_meta_set_grid(&m, 10, 10, 100, &err) == NIC_EINVAL); /* stride < 1 */
}

static void test_roundtrip(void) {
  char path[512];
  path_in_tmp(path, sizeof path, "roundtrip.h5");
  const int H = 7, W = 9, C = 16;
  nic_features_meta m = test_meta(H, W, C, 0);
  rows r = make_rows(&m, 0);
  nic_error err = {0};

  nic_features_writer *w = NULL;
  CHECK_OK(nic_features_writer_create(&w, path, &m, NULL, &err));
  if (!w) {
    fprintf(stderr, "  %s\n", err.msg);
    free_rows(&r);
    return;
  }
  CHECK_OK(append_all(w, &m, &r, 5, &err));
  CHECK(nic_features_writer_count(w) == r.n);

  /* A long description (more than HDF5's 64 KB inline attribute limit), an
   * ordinary property, and one with a byte that is not UTF-8. */
  size_t big_len = 200000;
  char *big = malloc(big_len + 1);
  for (size_t k = 0; k < big_len; k++) big[k] = (char)('a' + k % 26);
  big[big_len] = '\0';
  const char *names[3] = {"tiff.ImageDescription", "openslide.mpp-x", "vendor.note"};
  const char *values[3] = {big, "0.2428", "caf\xc3\xa9 \xff!"};
  CHECK_OK(nic_features_writer_set_properties(w, 3, names, values, &err));

  float *fraction = malloc(sizeof(float) * H * W);
  for (int i = 0; i < H; i++)
    for (int j = 0; j < W; j++) fraction[i * W + j] = kept(i, j) ? 0.75f : 0.125f * (i % 2);
  CHECK_OK(nic_features_writer_set_tissue_fraction(w, fraction, &err));
  CHECK(!file_exists(path));
  CHECK_OK(nic_features_writer_commit(w, &err));
  CHECK(file_exists(path));

  nic_features_reader *rd = NULL;
  CHECK_OK(nic_features_open(&rd, path, &err));
  if (!rd) {
    fprintf(stderr, "  %s\n", err.msg);
    goto out;
  }
  const nic_features_meta *g = nic_features_meta_of(rd);
  CHECK(g->count == r.n && g->embed_dim == C);
  CHECK(g->grid_h == H && g->grid_w == W);
  CHECK(g->stride_level0 == m.stride_level0); /* exact: stored as float64 */
  CHECK(g->origin_x == 0 && g->origin_y == 0);
  CHECK(g->slide_width == m.slide_width && g->slide_height == m.slide_height);
  CHECK(g->slide_mpp_x == SLIDE_MPP && g->slide_mpp_y == SLIDE_MPP);
  CHECK(g->level0_magnification == 40);
  CHECK(g->patch_size == 128 && g->mpp == 0.5 && g->tissue_threshold == 0.5);
  CHECK(!g->has_orientations && g->has_tissue_fraction);
  CHECK(g->slide_id && !strcmp(g->slide_id, "slide-1"));
  CHECK(g->slide_path && !strcmp(g->slide_path, "/data/slide-1.svs"));
  CHECK(g->encoder && !strcmp(g->encoder, "nic-multitask-4"));
  CHECK(g->encoder_sha256 && !strcmp(g->encoder_sha256, m.encoder_sha256));
  CHECK(g->command_line && !strcmp(g->command_line, m.command_line));
  CHECK(g->nic_version && !strcmp(g->nic_version, nic_version()));
  CHECK(!strcmp(nic_features_path(rd), path));

  /* Everything, then a range in the middle. */
  float *f = malloc(sizeof(float) * (size_t)(r.n * C));
  int32_t *xy = malloc(sizeof(int32_t) * 2 * (size_t)r.n);
  CHECK_OK(nic_features_read(rd, 0, r.n, f, xy, &err));
  CHECK(!memcmp(f, r.features, sizeof(float) * (size_t)(r.n * C)));
  CHECK(!memcmp(xy, r.coords, sizeof(int32_t) * 2 * (size_t)r.n));
  memset(f, 0, sizeof(float) * (size_t)(r.n * C));
  CHECK_OK(nic_features_read(rd, 5, 7, f, NULL, &err));
  CHECK(!memcmp(f, r.features + 5 * C, sizeof(float) * 7 * C));
  CHECK_OK(nic_features_read(rd, r.n, 0, f, xy, &err));
  CHECK(nic_features_read(rd, r.n - 2, 3, f, xy, &err) == NIC_EINVAL);
  CHECK(nic_features_read(rd, -1, 1, f, xy, &err) == NIC_EINVAL);
  CHECK(nic_features_read_orientations(rd, 0, 1, f, &err) == NIC_EINVAL);

  /* The dense grid puts each embedding at its cell. */
  float *grid = malloc(sizeof(float) * C * H * W);
  CHECK_OK(nic_features_read_grid(rd, -1, grid, &err));
  CHECK(grid_matches(grid, &m, -1, 0));
  CHECK(nic_features_read_grid(rd, 0, grid, &err) == NIC_EINVAL); /* no orientations */
  nic_tensor t = NIC_TENSOR_INIT;
  CHECK_OK(nic_features_read_grid_tensor(rd, -1, &t, &err));
  CHECK(t.ndim == 4 && t.shape[0] == 1 && t.shape[1] == C && t.shape[2] == H && t.shape[3] == W);
  CHECK(t.data && !memcmp(t.data, grid, sizeof(float) * C * H * W));
  nic_tensor_free(&t);

  uint8_t *mask = malloc((size_t)H * W);
  float *frac = malloc(sizeof(float) * H * W);
  CHECK_OK(nic_features_read_tissue_mask(rd, mask, &err));
  CHECK_OK(nic_features_read_tissue_fraction(rd, frac, &err));
  int mask_ok = 1;
  for (int i = 0; i < H; i++)
    for (int j = 0; j < W; j++) mask_ok &= mask[i * W + j] == kept(i, j);
  CHECK(mask_ok);
  CHECK(!memcmp(frac, fraction, sizeof(float) * H * W));

  /* Properties come back sorted by name, the bad byte replaced. */
  CHECK(nic_features_property_count(rd) == 3);
  CHECK(!strcmp(nic_features_property_name(rd, 0), "openslide.mpp-x"));
  CHECK(!strcmp(nic_features_property_name(rd, 2), "vendor.note"));
  CHECK(nic_features_property_name(rd, 3) == NULL);
  const char *v = nic_features_property_value(rd, "tiff.ImageDescription");
  CHECK(v && strlen(v) == big_len && !strcmp(v, big));
  v = nic_features_property_value(rd, "vendor.note");
  CHECK(v && !strcmp(v, "caf\xc3\xa9 ?!"));
  CHECK(nic_features_property_value(rd, "absent") == NULL);
  nic_features_close(rd);
  CHECK(nic_features_is_complete(path));

  free(f);
  free(xy);
  free(grid);
  free(mask);
  free(frac);
out:
  free(big);
  free(fraction);
  free_rows(&r);
}

static void test_orientations(void) {
  char path[512];
  path_in_tmp(path, sizeof path, "orient.h5");
  const int H = 4, W = 6, C = 8;
  nic_features_meta m = test_meta(H, W, C, 1);
  rows r = make_rows(&m, 0);
  nic_error err = {0};
  CHECK_OK(write_slide(path, &m, &r, 4, NULL, &err));
  nic_features_reader *rd = NULL;
  CHECK_OK(nic_features_open(&rd, path, &err));
  if (!rd) {
    fprintf(stderr, "  %s\n", err.msg);
    free_rows(&r);
    return;
  }
  CHECK(nic_features_meta_of(rd)->has_orientations);
  CHECK(!nic_features_meta_of(rd)->has_tissue_fraction);
  float *o = malloc(sizeof(float) * 8 * C * (size_t)r.n);
  CHECK_OK(nic_features_read_orientations(rd, 0, r.n, o, &err));
  CHECK(!memcmp(o, r.orientations, sizeof(float) * 8 * C * (size_t)r.n));
  CHECK_OK(nic_features_read_orientations(rd, 3, 2, o, &err));
  CHECK(!memcmp(o, r.orientations + 3 * 8 * C, sizeof(float) * 8 * C * 2));

  float *grid = malloc(sizeof(float) * C * H * W);
  for (int k = -1; k < 8; k++) {
    CHECK_OK(nic_features_read_grid(rd, k, grid, &err));
    CHECK(grid_matches(grid, &m, k, 0));
  }
  CHECK(nic_features_read_grid(rd, 8, grid, &err) == NIC_EINVAL);
  CHECK(nic_features_read_grid(rd, -2, grid, &err) == NIC_EINVAL);
  nic_features_close(rd);
  free(grid);
  free(o);
  free_rows(&r);
}

/* gzip with odd chunk sizes reads back the same, and is smaller. */
static void test_compression(void) {
  char plain[512], packed[512];
  path_in_tmp(plain, sizeof plain, "plain.h5");
  path_in_tmp(packed, sizeof packed, "packed.h5");
  nic_features_meta m = test_meta(30, 40, 64, 1);
  rows r = make_rows(&m, 0);
  nic_error err = {0};
  nic_features_write_opts o = nic_features_default_write_opts();
  CHECK_OK(write_slide(plain, &m, &r, 50, &o, &err));
  o.gzip_level = 6;
  o.chunk_rows = 37;
  CHECK_OK(write_slide(packed, &m, &r, 50, &o, &err));
  CHECK(file_size(packed) > 0 && file_size(packed) < file_size(plain));

  nic_features_reader *rd = NULL;
  CHECK_OK(nic_features_open(&rd, packed, &err));
  if (rd) {
    size_t fsz = sizeof(float) * (size_t)(r.n * m.embed_dim);
    float *f = malloc(fsz), *o8 = malloc(8 * fsz);
    CHECK_OK(nic_features_read(rd, 0, r.n, f, NULL, &err));
    CHECK(!memcmp(f, r.features, fsz));
    CHECK_OK(nic_features_read_orientations(rd, 0, r.n, o8, &err));
    CHECK(!memcmp(o8, r.orientations, 8 * fsz));
    uint8_t *mask = malloc(30 * 40);
    CHECK_OK(nic_features_read_tissue_mask(rd, mask, &err));
    int ok = 1;
    for (int c = 0; c < 30 * 40; c++) ok &= mask[c] == kept(c / 40, c % 40);
    CHECK(ok);
    free(mask);
    free(f);
    free(o8);
    nic_features_close(rd);
  }
  free_rows(&r);
}

/* A slide without tissue is a valid, empty file. */
static void test_empty(void) {
  char path[512];
  path_in_tmp(path, sizeof path, "empty.h5");
  nic_features_meta m = test_meta(3, 4, 8, 1);
  nic_error err = {0};
  nic_features_writer *w = NULL;
  CHECK_OK(nic_features_writer_create(&w, path, &m, NULL, &err));
  CHECK_OK(nic_features_writer_append(w, 0, NULL, NULL, NULL, &err));
  CHECK_OK(nic_features_writer_commit(w, &err));
  nic_features_reader *rd = NULL;
  CHECK_OK(nic_features_open(&rd, path, &err));
  if (!rd) return;
  CHECK(nic_features_meta_of(rd)->count == 0);
  float grid[8 * 3 * 4];
  for (int k = 0; k < 8 * 3 * 4; k++) grid[k] = 1;
  CHECK_OK(nic_features_read_grid(rd, 2, grid, &err));
  int zero = 1;
  for (int k = 0; k < 8 * 3 * 4; k++) zero &= grid[k] == 0;
  CHECK(zero);
  nic_features_close(rd);
  CHECK(nic_features_is_complete(path));
}

static void test_atomicity(void) {
  char path[512], tmp[600], gone[512];
  path_in_tmp(path, sizeof path, "atomic.h5");
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  nic_features_meta m = test_meta(4, 5, 4, 0);
  rows r = make_rows(&m, 0);
  nic_error err = {0};

  /* Until commit, only the temporary file exists. */
  nic_features_writer *w = NULL;
  CHECK_OK(nic_features_writer_create(&w, path, &m, NULL, &err));
  if (!w) goto out;
  CHECK(!strcmp(nic_features_writer_temp_path(w), tmp));
  CHECK(file_exists(tmp) && !file_exists(path));
  CHECK_OK(append_all(w, &m, &r, 2, &err));
  CHECK(!file_exists(path) && !nic_features_is_complete(path) && !nic_features_is_complete(tmp));
  CHECK_OK(nic_features_writer_commit(w, &err));
  CHECK(file_exists(path) && !file_exists(tmp) && nic_features_is_complete(path));

  /* Rewriting keeps the old file readable until the new one replaces it. */
  CHECK_OK(nic_features_writer_create(&w, path, &m, NULL, &err));
  if (!w) goto out;
  CHECK_OK(nic_features_writer_append(w, 2, r.features, r.coords, NULL, &err));
  nic_features_reader *rd = NULL;
  CHECK_OK(nic_features_open(&rd, path, &err));
  CHECK(rd && nic_features_meta_of(rd)->count == r.n);
  nic_features_close(rd);
  CHECK_OK(nic_features_writer_commit(w, &err));
  rd = NULL;
  CHECK_OK(nic_features_open(&rd, path, &err));
  CHECK(rd && nic_features_meta_of(rd)->count == 2);
  nic_features_close(rd);

  /* Abort leaves nothing behind. */
  path_in_tmp(gone, sizeof gone, "aborted.h5");
  CHECK_OK(nic_features_writer_create(&w, gone, &m, NULL, &err));
  if (!w) goto out;
  CHECK_OK(append_all(w, &m, &r, 3, &err));
  char gone_tmp[600];
  snprintf(gone_tmp, sizeof gone_tmp, "%s", nic_features_writer_temp_path(w));
  nic_features_writer_abort(w);
  CHECK(!file_exists(gone) && !file_exists(gone_tmp));
  nic_features_writer_abort(NULL);

  /* A crash (a process that exits without committing) leaves only its
   * temporary file, which never counts as finished. */
  char crashed[512], crashed_tmp[600];
  path_in_tmp(crashed, sizeof crashed, "crashed.h5");
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    nic_features_writer *cw = NULL;
    if (nic_features_writer_create(&cw, crashed, &m, NULL, NULL) != NIC_OK) _exit(2);
    if (append_all(cw, &m, &r, 3, NULL) != NIC_OK) _exit(3);
    _exit(0); /* no commit, no cleanup */
  }
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
        WEXITSTATUS(status) == 0);
  snprintf(crashed_tmp, sizeof crashed_tmp, "%s.tmp.%ld", crashed, (long)pid);
  CHECK(file_exists(crashed_tmp) && !file_exists(crashed));
  CHECK(!nic_features_is_complete(crashed) && !nic_features_is_complete(crashed_tmp));
  unlink(crashed_tmp);

  /* A failing rename (the target is a directory) removes the temporary
   * file and leaves the target alone. */
  char dir[512];
  path_in_tmp(dir, sizeof dir, "a-directory.h5");
  CHECK(mkdir(dir, 0777) == 0);
  CHECK_OK(nic_features_writer_create(&w, dir, &m, NULL, &err));
  if (!w) goto out;
  snprintf(gone_tmp, sizeof gone_tmp, "%s", nic_features_writer_temp_path(w));
  CHECK(nic_features_writer_commit(w, &err) == NIC_EIO);
  CHECK(strstr(err.msg, "cannot rename") != NULL);
  CHECK(!file_exists(gone_tmp));
  rmdir(dir);

  /* A directory that does not exist: an I/O error naming the file. */
  char nowhere[512];
  path_in_tmp(nowhere, sizeof nowhere, "no/such/dir/x.h5");
  w = NULL;
  CHECK(nic_features_writer_create(&w, nowhere, &m, NULL, &err) == NIC_EIO && !w);
  CHECK(strstr(err.msg, "no/such/dir/x.h5.tmp.") != NULL);
out:
  free_rows(&r);
}

static void test_writer_misuse(void) {
  char path[512];
  path_in_tmp(path, sizeof path, "misuse.h5");
  nic_features_meta m = test_meta(4, 5, 4, 0);
  rows r = make_rows(&m, 0);
  nic_error err = {0};
  nic_features_writer *w = NULL;

  nic_features_meta bad = m;
  bad.grid_h = 0;
  CHECK(nic_features_writer_create(&w, path, &bad, NULL, &err) == NIC_EINVAL && !w);
  CHECK(strstr(err.msg, path) && strstr(err.msg, "grid"));
  bad = m;
  bad.stride_level0 = 0.5;
  CHECK(nic_features_writer_create(&w, path, &bad, NULL, &err) == NIC_EINVAL);
  bad = m;
  bad.embed_dim = 0;
  CHECK(nic_features_writer_create(&w, path, &bad, NULL, &err) == NIC_EINVAL);
  bad = m;
  bad.stride_level0 = 1e9; /* corners beyond int32 */
  CHECK(nic_features_writer_create(&w, path, &bad, NULL, &err) == NIC_EINVAL);
  nic_features_write_opts o = {0, 10};
  CHECK(nic_features_writer_create(&w, path, &m, &o, &err) == NIC_EINVAL);
  CHECK(!file_exists(path));

  CHECK_OK(nic_features_writer_create(&w, path, &m, NULL, &err));
  if (!w) goto out;
  /* Rejected batches write nothing; the writer stays usable. */
  int32_t off_grid[2] = {r.coords[0] + 1, r.coords[1]};
  CHECK(nic_features_writer_append(w, 1, r.features, off_grid, NULL, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "not the corner") != NULL);
  int32_t outside[2] = {nic_features_cell_x(&m, 5), 0};
  CHECK(nic_features_writer_append(w, 1, r.features, outside, NULL, &err) == NIC_EINVAL);
  CHECK_OK(nic_features_writer_append(w, 3, r.features, r.coords, NULL, &err));
  CHECK(nic_features_writer_append(w, 1, r.features, r.coords + 2, NULL, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "row-major") != NULL);
  CHECK(nic_features_writer_append(w, 1, r.features, r.coords + 4, NULL, &err) == NIC_EINVAL);
  float o8[8 * 4] = {0};
  CHECK(nic_features_writer_append(w, 1, r.features, r.coords + 6, o8, &err) == NIC_EINVAL);
  CHECK(nic_features_writer_append(w, 2, NULL, r.coords + 6, NULL, &err) == NIC_EINVAL);
  CHECK(nic_features_writer_count(w) == 3);
  CHECK_OK(nic_features_writer_append(w, r.n - 3, r.features + 3 * 4, r.coords + 6, NULL, &err));

  const char *names[2] = {"a", "a"}, *values[2] = {"1", "2"};
  CHECK(nic_features_writer_set_properties(w, 2, names, values, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "twice") != NULL);
  CHECK_OK(nic_features_writer_set_properties(w, 1, names, values, &err)); /* nothing was kept */
  CHECK(nic_features_writer_set_properties(w, 1, names, values, &err) == NIC_EINVAL);
  float frac[20] = {0};
  frac[7] = NAN;
  CHECK(nic_features_writer_set_tissue_fraction(w, frac, &err) == NIC_EINVAL);
  frac[7] = 1.5f;
  CHECK(nic_features_writer_set_tissue_fraction(w, frac, &err) == NIC_EINVAL);
  frac[7] = 1;
  CHECK_OK(nic_features_writer_set_tissue_fraction(w, frac, &err));
  CHECK(nic_features_writer_set_tissue_fraction(w, frac, &err) == NIC_EINVAL);
  CHECK_OK(nic_features_writer_commit(w, &err));

  nic_features_reader *rd = NULL;
  CHECK_OK(nic_features_open(&rd, path, &err));
  if (rd) {
    CHECK(nic_features_meta_of(rd)->count == r.n);
    CHECK(nic_features_property_count(rd) == 1);
    nic_features_close(rd);
  }
out:
  free_rows(&r);
}

/* ---- broken files ----------------------------------------------------------- */

static int copy_file(const char *src, const char *dst, long limit) {
  FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
  int ok = in && out;
  char buf[65536];
  long total = 0;
  size_t n;
  while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) {
    if (limit >= 0 && total + (long)n > limit) n = (size_t)(limit - total);
    ok = fwrite(buf, 1, n, out) == n;
    total += (long)n;
    if (limit >= 0 && total >= limit) break;
  }
  if (in) fclose(in);
  if (out && fclose(out) != 0) ok = 0;
  return ok;
}

/* Defects applied to a copy of a good file with HDF5 directly. */
typedef enum defect {
  NO_FEATURES,
  NO_COORDS,
  FEATURES_RANK3,
  FEATURES_INT,
  COORDS_FLOAT,
  COORDS_3COLS,
  COORDS_SHORT,
  COORD_OFF_GRID,
  COORD_OUTSIDE,
  NO_GRID_H,
  NO_STRIDE,
  ROWS_SWAPPED,
  ROW_REPEATED,
  MASK_EXTRA,
  MASK_MISSING,
  MASK_SHAPE,
  ORIENT_SHAPE,
  NEWER_FORMAT,
  EMBED_DIM_ATTR,
  FEATURES_GROUP,
  NDEFECTS
} defect;

static const struct {
  const char *name;
  nic_status code;
  const char *expect; /* in the message */
} DEFECTS[NDEFECTS] = {
    [NO_FEATURES] = {"no-features", NIC_EFORMAT, "dataset 'features' is missing"},
    [NO_COORDS] = {"no-coords", NIC_EFORMAT, "dataset 'coords' is missing"},
    [FEATURES_RANK3] = {"features-rank3", NIC_EFORMAT, "'features' has 3 dimensions, expected 2"},
    [FEATURES_INT] = {"features-int", NIC_EFORMAT, "'features' holds int32 values"},
    [COORDS_FLOAT] = {"coords-float", NIC_EFORMAT, "'coords' holds float64 values"},
    [COORDS_3COLS] = {"coords-3cols", NIC_EFORMAT, "'coords' has 3 columns"},
    [COORDS_SHORT] = {"coords-short", NIC_EFORMAT, "rows but 'coords' has"},
    [COORD_OFF_GRID] = {"off-grid", NIC_EFORMAT, "is not on the grid"},
    [COORD_OUTSIDE] = {"outside", NIC_EFORMAT, "lies outside the 4 x 5 grid"},
    [NO_GRID_H] = {"no-grid-h", NIC_EFORMAT, "attribute 'grid_h' is missing"},
    [NO_STRIDE] = {"no-stride", NIC_EFORMAT, "attribute 'stride_level0' is missing"},
    [ROWS_SWAPPED] = {"swapped", NIC_EFORMAT, "row-major"},
    [ROW_REPEATED] = {"repeated", NIC_EFORMAT, "repeats cell"},
    [MASK_EXTRA] = {"mask-extra", NIC_EFORMAT, "'tissue_mask' marks"},
    [MASK_MISSING] = {"mask-missing", NIC_EFORMAT, "'tissue_mask' is 0 at cell"},
    [MASK_SHAPE] = {"mask-shape", NIC_EFORMAT, "'tissue_mask' is 5 x 4 but the grid is 4 x 5"},
    [ORIENT_SHAPE] = {"orient-shape", NIC_EFORMAT, "'features_orientations' is"},
    [NEWER_FORMAT] = {"newer", NIC_EUNSUPPORTED, "format_version 99"},
    [EMBED_DIM_ATTR] = {"embed-dim", NIC_EFORMAT, "attribute 'embed_dim' is 7"},
    [FEATURES_GROUP] = {"features-group", NIC_EFORMAT, "'features' is not a dataset"},
};

static void replace_dataset(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims) {
  H5Ldelete(f, name, H5P_DEFAULT);
  hid_t sp = H5Screate_simple(rank, dims, NULL);
  hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dclose(d);
  H5Sclose(sp);
}

static void set_root_int(hid_t f, const char *name, int64_t v) {
  if (H5Aexists(f, name) > 0) H5Adelete(f, name);
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a);
  H5Sclose(sp);
}

/* Overwrites coords row k with (x, y). */
static void set_coord(hid_t f, int64_t k, int32_t x, int32_t y) {
  hid_t d = H5Dopen2(f, "coords", H5P_DEFAULT), fs = H5Dget_space(d);
  hsize_t off[2] = {(hsize_t)k, 0}, cnt[2] = {1, 2};
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
  hid_t ms = H5Screate_simple(2, cnt, NULL);
  int32_t xy[2] = {x, y};
  H5Dwrite(d, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, xy);
  H5Sclose(ms);
  H5Sclose(fs);
  H5Dclose(d);
}

static void set_mask_cell(hid_t f, int cell, uint8_t v, int W) {
  hid_t d = H5Dopen2(f, "tissue_mask", H5P_DEFAULT), fs = H5Dget_space(d);
  hsize_t off[2] = {(hsize_t)(cell / W), (hsize_t)(cell % W)}, cnt[2] = {1, 1};
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
  hid_t ms = H5Screate_simple(2, cnt, NULL);
  H5Dwrite(d, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, &v);
  H5Sclose(ms);
  H5Sclose(fs);
  H5Dclose(d);
}

static void apply_defect(const char *path, defect d, const nic_features_meta *m, const rows *r) {
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  hsize_t N = (hsize_t)r->n, C = (hsize_t)m->embed_dim;
  switch (d) {
  case NO_FEATURES:
    H5Ldelete(f, "features", H5P_DEFAULT);
    break;
  case NO_COORDS:
    H5Ldelete(f, "coords", H5P_DEFAULT);
    break;
  case FEATURES_RANK3: {
    hsize_t dims[3] = {N, C, 1};
    replace_dataset(f, "features", H5T_IEEE_F32LE, 3, dims);
    break;
  }
  case FEATURES_INT: {
    hsize_t dims[2] = {N, C};
    replace_dataset(f, "features", H5T_STD_I32LE, 2, dims);
    break;
  }
  case COORDS_FLOAT: {
    hsize_t dims[2] = {N, 2};
    replace_dataset(f, "coords", H5T_IEEE_F64LE, 2, dims);
    break;
  }
  case COORDS_3COLS: {
    hsize_t dims[2] = {N, 3};
    replace_dataset(f, "coords", H5T_STD_I32LE, 2, dims);
    break;
  }
  case COORDS_SHORT: {
    hid_t ds = H5Dopen2(f, "coords", H5P_DEFAULT);
    hsize_t dims[2] = {N - 1, 2};
    H5Dset_extent(ds, dims);
    H5Dclose(ds);
    break;
  }
  case COORD_OFF_GRID:
    set_coord(f, 3, r->coords[6] + 1, r->coords[7]);
    break;
  case COORD_OUTSIDE:
    set_coord(f, r->n - 1, nic_features_cell_x(m, m->grid_w + 3), 0);
    break;
  case NO_GRID_H:
    H5Adelete(f, "grid_h");
    break;
  case NO_STRIDE:
    H5Adelete(f, "stride_level0");
    break;
  case ROWS_SWAPPED:
    set_coord(f, 2, r->coords[6], r->coords[7]);
    set_coord(f, 3, r->coords[4], r->coords[5]);
    break;
  case ROW_REPEATED:
    set_coord(f, 3, r->coords[4], r->coords[5]);
    break;
  case MASK_EXTRA:
    set_mask_cell(f, 0, 1, m->grid_w);
    break; /* cell 0 is not kept */
  case MASK_MISSING:
    set_mask_cell(f, 1, 0, m->grid_w);
    break;
  case MASK_SHAPE: {
    hsize_t dims[2] = {(hsize_t)m->grid_w, (hsize_t)m->grid_h};
    replace_dataset(f, "tissue_mask", H5T_STD_U8LE, 2, dims);
    break;
  }
  case ORIENT_SHAPE: {
    hsize_t dims[3] = {N, 4, C};
    replace_dataset(f, "features_orientations", H5T_IEEE_F32LE, 3, dims);
    break;
  }
  case NEWER_FORMAT:
    set_root_int(f, "format_version", 99);
    break;
  case EMBED_DIM_ATTR:
    set_root_int(f, "embed_dim", 7);
    break;
  case FEATURES_GROUP:
    H5Ldelete(f, "features", H5P_DEFAULT);
    H5Gclose(H5Gcreate2(f, "features", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    break;
  case NDEFECTS:
    break;
  }
  H5Fclose(f);
}

static void expect_bad(const char *path, nic_status code, const char *expect, const char *what) {
  nic_error err = {0};
  nic_features_reader *rd = NULL;
  nic_status s = nic_features_open(&rd, path, &err);
  int ok = s == code && !rd && strstr(err.msg, path) && strstr(err.msg, expect);
  CHECK(ok);
  if (!ok || getenv("NIC_TEST_VERBOSE"))
    fprintf(stderr, "  %s: got %s: %s\n", what, nic_status_str(s), err.msg);
  if (rd) nic_features_close(rd);
  CHECK(!nic_features_is_complete(path));
}

static void test_broken_files(void) {
  char good[512], bad[512];
  path_in_tmp(good, sizeof good, "good.h5");
  nic_features_meta m = test_meta(4, 5, 4, 1);
  rows r = make_rows(&m, 0);
  nic_error err = {0};
  CHECK_OK(write_slide(good, &m, &r, 3, NULL, &err));
  CHECK(nic_features_is_complete(good));

  for (int d = 0; d < NDEFECTS; d++) {
    char name[64];
    snprintf(name, sizeof name, "bad-%s.h5", DEFECTS[d].name);
    path_in_tmp(bad, sizeof bad, name);
    CHECK(copy_file(good, bad, -1));
    apply_defect(bad, (defect)d, &m, &r);
    expect_bad(bad, DEFECTS[d].code, DEFECTS[d].expect, DEFECTS[d].name);
  }

  /* Truncated: the HDF5 library sees the end of file before its end of
   * allocation. */
  path_in_tmp(bad, sizeof bad, "truncated.h5");
  CHECK(copy_file(good, bad, file_size(good) / 2));
  expect_bad(bad, NIC_EFORMAT, "truncated", "truncated");

  path_in_tmp(bad, sizeof bad, "text.h5");
  FILE *f = fopen(bad, "w");
  fputs("slide_id,label\nA,1\n", f);
  fclose(f);
  expect_bad(bad, NIC_EFORMAT, "not an HDF5 file", "text");
  path_in_tmp(bad, sizeof bad, "zero.h5");
  fclose(fopen(bad, "w"));
  expect_bad(bad, NIC_EFORMAT, "not an HDF5 file", "empty");

  path_in_tmp(bad, sizeof bad, "missing.h5");
  nic_features_reader *rd = NULL;
  CHECK(nic_features_open(&rd, bad, &err) == NIC_EIO && !rd);
  CHECK(strstr(err.msg, bad) && strstr(err.msg, "No such file"));
  CHECK(!nic_features_is_complete(bad));
  CHECK(nic_features_open(&rd, tmpdir, &err) == NIC_EIO);
  free_rows(&r);
}

/* ---- h5py ------------------------------------------------------------------- */

/* What CLAM and TRIDENT do with our file, and the docs' recipe for the
 * dense grid; then two files made by h5py, read by nic. */
static const char *PY_CHECK =
    "import sys, json\n"
    "import numpy as np, h5py\n"
    "path, N, C, H, W, pyfile, clamfile = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6], "
    "sys.argv[7]\n"
    "f32 = np.float32\n"
    "def feat(cell, c): return f32(cell) * f32(0.25) + f32(c) * f32(2.0**-10) - f32(3.0)\n"
    "with h5py.File(path, 'r') as f:\n"
    "    feats, coords = f['features'][:], f['coords'][:]\n"
    "    assert feats.shape == (N, C) and feats.dtype == np.float32, (feats.shape, feats.dtype)\n"
    "    assert coords.shape == (N, 2) and coords.dtype == np.int32, (coords.shape, coords.dtype)\n"
    "    ca = dict(f['coords'].attrs)\n"
    "    stride = f.attrs['stride_level0']\n"
    "    assert ca['patch_size'] == 128 and ca['patch_level'] == 0 and ca['overlap'] == 0\n"
    "    assert ca['patch_size_level0'] == int(stride + 0.5), ca['patch_size_level0']\n"
    "    assert ca['level0_magnification'] == 40 and ca['target_magnification'] == 20\n"
    "    assert isinstance(ca['name'], str) and ca['name'] == 'slide-1'\n"
    "    assert isinstance(ca['savetodir'], str) and ca['savetodir'] == ca['save_path']\n"
    "    assert ca['level0_width'] == f.attrs['slide_width'] and list(ca['level_dim']) == "
    "[f.attrs['slide_width'], f.attrs['slide_height']]\n"
    "    assert abs(ca['custom_downsample'] * 128 - stride) < 1e-9\n"
    "    fa = dict(f['features'].attrs)\n"
    "    assert fa['encoder'] == 'nic-multitask-4' and fa['name'] == 'slide-1'\n"
    "    assert len(fa['encoder_sha256']) == 64 and fa['mpp'] == 0.5 and fa['patch_size'] == 128\n"
    "    a = dict(f.attrs)\n"
    "    assert a['format'] == 'nic-compressed-slide' and a['format_version'] == 1\n"
    "    assert (a['grid_h'], a['grid_w'], a['embed_dim']) == (H, W, C)\n"
    "    assert a['encoder'] == 'nic-multitask-4' and a['command_line'].startswith('nic "
    "compress')\n"
    "    # the dense grid, as docs/compressed-slide-format.md tells\n"
    "    ox, oy = f.attrs['origin_x'], f.attrs['origin_y']\n"
    "    j = np.rint((coords[:, 0] - ox) / stride).astype(np.int64)\n"
    "    i = np.rint((coords[:, 1] - oy) / stride).astype(np.int64)\n"
    "    assert (np.floor(ox + j * stride + 0.5) == coords[:, 0]).all()\n"
    "    grid = np.zeros((C, H, W), np.float32)\n"
    "    grid[:, i, j] = feats.T\n"
    "    for ii in range(H):\n"
    "        for jj in range(W):\n"
    "            cell = ii * W + jj\n"
    "            want = np.array([feat(cell, c) for c in range(C)]) if (ii * 7 + jj * 3) % 5 else "
    "np.zeros(C)\n"
    "            assert np.allclose(grid[:, ii, jj], want, atol=1e-6), (ii, jj)\n"
    "    mask = f['tissue_mask'][:]\n"
    "    assert mask.dtype == np.uint8 and mask.shape == (H, W) and mask.sum() == N and "
    "(mask[i, j] == 1).all()\n"
    "    o = f['features_orientations']\n"
    "    assert o.shape == (N, 8, C) and o.dtype == np.float32\n"
    "    assert o.attrs['order'].split(',')[5] == 'flip+rot90'\n"
    "    assert np.allclose(o[:, 2, :], feats + 300, atol=1e-4)\n"
    "    props = dict(f['slide_properties'].attrs)\n"
    "    assert props == {'openslide.mpp-x': '0.2428', 'openslide.objective-power': '40'}, props\n"
    "# a nic-style file made by h5py (int64 coords, float16 features, fractional origin)\n"
    "stride, ox, oy, Hp, Wp, Cp = 263.5, 10.25, -3.5, 3, 4, 5\n"
    "cells = [(0, 1), (1, 0), (1, 3), (2, 2)]\n"
    "xy = np.array([[np.floor(ox + j * stride + 0.5), np.floor(oy + i * stride + 0.5)] for i, j in "
    "cells], np.int64)\n"
    "fe = np.array([[10 * (i * Wp + j) + c for c in range(Cp)] for i, j in cells], np.float16)\n"
    "with h5py.File(pyfile, 'w') as f:\n"
    "    f['features'] = fe\n"
    "    f['coords'] = xy\n"
    "    f.attrs.update(grid_h=Hp, grid_w=Wp, stride_level0=stride, origin_x=ox, origin_y=oy)\n"
    "# a CLAM feature file: no grid\n"
    "with h5py.File(clamfile, 'w') as f:\n"
    "    f['features'] = np.zeros((3, 4), np.float32)\n"
    "    f['coords'] = np.array([[0, 0], [256, 0], [512, 0]])\n"
    "    f['coords'].attrs.update(patch_size=256, patch_level=0)\n"
    "print('h5py check passed')\n";

static void test_h5py(void) {
  if (system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") != 0) {
    printf("  (h5py not available: h5py cross-check skipped)\n");
    return;
  }
  char path[512], script[512], pyfile[512], clamfile[512], cmd[2600];
  path_in_tmp(path, sizeof path, "slide-1.h5");
  path_in_tmp(script, sizeof script, "check.py");
  path_in_tmp(pyfile, sizeof pyfile, "from-h5py.h5");
  path_in_tmp(clamfile, sizeof clamfile, "clam.h5");
  const int H = 6, W = 7, C = 12;
  nic_features_meta m = test_meta(H, W, C, 1);
  rows r = make_rows(&m, 0);
  nic_error err = {0};
  nic_features_writer *w = NULL;
  CHECK_OK(nic_features_writer_create(&w, path, &m, NULL, &err));
  if (!w) goto out;
  CHECK_OK(append_all(w, &m, &r, 4, &err));
  const char *names[2] = {"openslide.objective-power", "openslide.mpp-x"};
  const char *values[2] = {"40", "0.2428"};
  CHECK_OK(nic_features_writer_set_properties(w, 2, names, values, &err));
  CHECK_OK(nic_features_writer_commit(w, &err));

  FILE *f = fopen(script, "w");
  fputs(PY_CHECK, f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %lld %d %d %d %s %s", script, path,
           (long long)r.n, C, H, W, pyfile, clamfile);
  CHECK(system(cmd) == 0);

  /* The h5py-made nic file reads, with its grid in place. */
  nic_features_reader *rd = NULL;
  CHECK_OK(nic_features_open(&rd, pyfile, &err));
  if (rd) {
    const nic_features_meta *g = nic_features_meta_of(rd);
    CHECK(g->count == 4 && g->embed_dim == 5 && g->grid_h == 3 && g->grid_w == 4);
    CHECK(g->origin_x == 10.25 && g->origin_y == -3.5);
    float grid[5 * 3 * 4];
    CHECK_OK(nic_features_read_grid(rd, -1, grid, &err));
    int ok = 1, cells[4][2] = {{0, 1}, {1, 0}, {1, 3}, {2, 2}};
    for (int k = 0; k < 4; k++)
      for (int c = 0; c < 5; c++) {
        int cell = cells[k][0] * 4 + cells[k][1];
        ok &= grid[c * 12 + cell] == (float)(10 * cell + c);
      }
    CHECK(ok);
    int32_t xy[8];
    CHECK_OK(nic_features_read(rd, 0, 4, NULL, xy, &err));
    CHECK(xy[0] == nic_features_cell_x(g, 1) && xy[1] == nic_features_cell_y(g, 0));
    nic_features_close(rd);
  } else {
    fprintf(stderr, "  %s\n", err.msg);
  }
  /* CLAM's files have no grid: refused, saying so. */
  expect_bad(clamfile, NIC_EFORMAT, "attribute 'grid_h' is missing", "clam");
out:
  free_rows(&r);
}

/* ---- large slides ----------------------------------------------------------- */

static long max_rss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* 200k x 128 (100 MB of embeddings) streams through the writer without
 * the process growing by anything like the data size. Runs first, so
 * that the peak RSS it measures is its own. */
static void test_large(void) {
  char path[512];
  path_in_tmp(path, sizeof path, "large.h5");
  const int C = 128, W = 500, B = 4096;
  const int H = sanitized ? 40 : 400; /* 20k or 200k cells, all kept */
  nic_features_meta m = test_meta(H, W, C, 0);
  int64_t N = (int64_t)H * W;
  float *f = malloc(sizeof(float) * (size_t)B * C);
  int32_t *xy = malloc(sizeof(int32_t) * 2 * B);
  memset(f, 0, sizeof(float) * (size_t)B * C);
  memset(xy, 0, sizeof(int32_t) * 2 * B);
  nic_error err = {0};

  long rss0 = max_rss_kb();
  double t0 = now_s();
  nic_features_writer *w = NULL;
  CHECK_OK(nic_features_writer_create(&w, path, &m, NULL, &err));
  if (!w) goto out;
  for (int64_t start = 0; start < N; start += B) {
    int64_t n = N - start < B ? N - start : B;
    for (int64_t k = 0; k < n; k++) {
      int64_t cell = start + k;
      xy[2 * k] = nic_features_cell_x(&m, (int)(cell % W));
      xy[2 * k + 1] = nic_features_cell_y(&m, (int)(cell / W));
      for (int c = 0; c < C; c++) f[k * C + c] = feat_value(cell, c);
    }
    nic_status s = nic_features_writer_append(w, n, f, xy, NULL, &err);
    CHECK(s == NIC_OK);
    if (s != NIC_OK) {
      fprintf(stderr, "  %s\n", err.msg);
      nic_features_writer_abort(w);
      goto out;
    }
  }
  CHECK_OK(nic_features_writer_commit(w, &err));
  double t1 = now_s();
  long grew_kb = max_rss_kb() - rss0;
  double data_mb = (double)N * C * 4 / 1e6;
  printf("  wrote %lld x %d (%.0f MB) in %.2f s; peak RSS grew by %.1f MB\n", (long long)N, C,
         data_mb, t1 - t0, grew_kb / 1024.0);
  /* Sanitizers keep freed memory in quarantine, so RSS says little there. */
  if (!sanitized) CHECK(grew_kb / 1024.0 < data_mb / 4);

  nic_features_reader *rd = NULL;
  CHECK_OK(nic_features_open(&rd, path, &err)); /* validates every coords row */
  printf("  opened and validated in %.2f s\n", now_s() - t1);
  if (!rd) goto out;
  CHECK(nic_features_meta_of(rd)->count == N);
  int64_t probes[3] = {0, N / 2 + 17, N - 1};
  for (int p = 0; p < 3; p++) {
    float row[128];
    int32_t c2[2];
    CHECK_OK(nic_features_read(rd, probes[p], 1, row, c2, &err));
    CHECK(row[0] == feat_value(probes[p], 0) && row[127] == feat_value(probes[p], 127));
    CHECK(c2[0] == nic_features_cell_x(&m, (int)(probes[p] % W)));
  }
  /* The dense grid, across many read blocks. */
  float *grid = malloc(sizeof(float) * (size_t)C * (size_t)N);
  if (grid) {
    CHECK_OK(nic_features_read_grid(rd, -1, grid, &err));
    int ok = 1;
    for (int64_t cell = 0; cell < N; cell += 997)
      for (int c = 0; c < C; c += 31) ok &= grid[(int64_t)c * N + cell] == feat_value(cell, c);
    CHECK(ok);
    free(grid);
  }
  nic_features_close(rd);
  unlink(path);
out:
  free(f);
  free(xy);
}

static void test_sha256(void) {
  char path[512], hex[65];
  nic_error err = {0};
  struct {
    const char *data;
    size_t repeat;
    const char *want;
  } cases[] = {
      {"", 1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", 1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"a", 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
  path_in_tmp(path, sizeof path, "hashme.bin");
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    FILE *f = fopen(path, "wb");
    for (size_t r = 0; r < cases[k].repeat; r++) fputs(cases[k].data, f);
    fclose(f);
    CHECK_OK(nic_features_sha256_file(path, hex, &err));
    CHECK(!strcmp(hex, cases[k].want));
  }
  path_in_tmp(path, sizeof path, "no-such-model.safetensors");
  CHECK(nic_features_sha256_file(path, hex, &err) == NIC_EIO && strstr(err.msg, path));
}

int main(void) {
  const char *san = getenv("NIC_SANITIZED");
  sanitized = san && *san && strcmp(san, "0") != 0;
  tmpdir = nic_test_tmpdir();
  RUN(test_large);
  RUN(test_cell_math);
  RUN(test_grid_for_slide);
  RUN(test_roundtrip);
  RUN(test_orientations);
  RUN(test_compression);
  RUN(test_empty);
  RUN(test_atomicity);
  RUN(test_writer_misuse);
  RUN(test_broken_files);
  RUN(test_h5py);
  RUN(test_sha256);
  return nic_test_finish();
}
