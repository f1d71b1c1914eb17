/* nic compress, the library side: the grid and kept cells on a slide with a
 * known tissue layout, features against encoding the same patch directly,
 * the 8 orientations, pipeline settings that must not change the result,
 * the cell plan, and the real slides in ../shared when present. Runs,
 * resume, shards, slide lists and bad inputs are in test_compress_run.c.
 *
 * The test slide is a pyramidal JPEG TIFF made here with libvips: glass
 * with pink, speckled "tissue" on exactly the grid cells of three
 * rectangles, at 0.45 um/px, so that cells are 128 * 0.5 / 0.45 = 142.2
 * level-0 pixels (fractional, as on real slides) and 8 pixels of the 8 um/px
 * tissue mask. */
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "compress/compress_internal.h"
#include "nic/encoder.h"
#include "slide/slide_internal.h"
#include "test_compress.h"
#include "testutil.h"

static const char *tmpdir;
static char model[512], slide[512];
static nic_ctx *ctx;

/* ---- the reference: one patch read and encoded on its own ------------------------ */

/* A model loaded and optimised independently of the compressor. */
static nic_model *reference_model(void) {
  nic_model *m = NULL;
  nic_error err = {0};
  CHECK_OK(nic_model_load(&m, model, &err));
  if (m) CHECK_OK(nic_model_optimize_inference(m, &err));
  return m;
}

/* Embeds one 128 x 128 RGB patch (HWC) into out (C floats). */
static void embed(nic_model *m, const uint8_t *pix, float *out, int C) {
  nic_tensor x = NIC_TENSOR_INIT;
  nic_error err = {0};
  int start = 1;
  const nic_tensor *y = NULL;
  CHECK_OK(nic_model_prepare_rgb8(m, pix, 1, 128, 128 * 3, 128 * 128 * 3, &x, &start, &err));
  CHECK_OK(nic_model_forward_from(m, ctx, &x, start, 0, &y, &err));
  if (y) memcpy(out, y->data, sizeof(float) * (size_t)C);
  nic_tensor_free(&x);
}

/* The patch of cell (i, j) read directly at its exact corner. */
static void read_cell(nic_slide *s, const nic_features_meta *m, int i, int j, uint8_t *pix) {
  nic_error err = {0};
  double S = m->stride_level0;
  CHECK_OK(nic_slide_read_region_ds_rgb8(s, j * S, i * S, S / 128, 128, 128, pix, NULL, &err));
}

static float max_rel_diff(const float *a, const float *b, int n) {
  float worst = 0;
  for (int i = 0; i < n; i++) {
    float d = fabsf(a[i] - b[i]) / fmaxf(1.0f, fabsf(b[i]));
    if (d > worst || d != d) worst = d != d ? 1e30f : d;
  }
  return worst;
}

/* ---- tests ------------------------------------------------------------------------ */

/* The index tables against rotations and flips done the NumPy way. */
static void test_orient_source(void) {
  /* np.rot90([[1, 2], [3, 4]]) == [[2, 4], [1, 3]] */
  CHECK(nic__orient_source(1, 2, 0, 0) == 1 && nic__orient_source(1, 2, 0, 1) == 3);
  CHECK(nic__orient_source(1, 2, 1, 0) == 0 && nic__orient_source(1, 2, 1, 1) == 2);
  enum { Q = 5 };
  for (int o = 0; o < 8; o++) {
    int img[Q][Q], out[Q][Q];
    for (int i = 0; i < Q; i++)
      for (int j = 0; j < Q; j++) img[i][j] = i * Q + j;
    ct_orient_int(&img[0][0], &out[0][0], Q, o);
    int ok = 1;
    for (int i = 0; i < Q; i++)
      for (int j = 0; j < Q; j++) ok &= nic__orient_source(o, Q, i, j) == out[i][j];
    CHECK(ok);
  }
}

/* The plan reads every kept cell once, a band at a time, block by block,
 * and hands out chunks that never straddle a batch. */
static void test_plan(void) {
  enum { H = 13, W = 17 };
  uint8_t keep[H * W];
  nic_rng r;
  nic_rng_seed(&r, 5);
  for (int c = 0; c < H * W; c++) keep[c] = nic_rng_uniform(&r) < 0.6;
  nic_cell_plan p;
  nic_error err = {0};
  CHECK_OK(nic__plan_build(&p, keep, H, W, 3, 4, 5, &err));
  int64_t n = 0;
  for (int c = 0; c < H * W; c++) n += keep[c];
  CHECK(p.n == n && p.nbands == 5 && p.band_end[p.nbands - 1] == n);
  uint8_t *seen = calloc((size_t)n, 1);
  int ok = 1;
  int64_t band_start = 0;
  for (int b = 0; b < p.nbands; b++) {
    for (int64_t s = band_start; s < p.band_end[b]; s++) {
      int32_t k = p.order[s];
      ok &= k >= 0 && k < n && !seen[k];
      if (k >= 0 && k < n) seen[k] = 1;
      ok &= p.cells[k] / W / 3 == b; /* the row of the cell is in band b */
      ok &= keep[p.cells[k]] != 0;
    }
    band_start = p.band_end[b];
  }
  CHECK(ok);
  /* chunks: increasing, within a batch, one block each */
  int64_t s0 = 0;
  ok = p.chunk_end[p.nchunks - 1] == n;
  for (int64_t c = 0; c < p.nchunks; c++) {
    int64_t s1 = p.chunk_end[c];
    ok &= s1 > s0 && (s1 - 1) / 5 == s0 / 5;
    int32_t first = p.cells[p.order[s0]];
    for (int64_t s = s0; s < s1; s++) {
      int32_t cell = p.cells[p.order[s]];
      ok &= cell / W / 3 == first / W / 3 && cell % W / 4 == first % W / 4;
    }
    s0 = s1;
  }
  CHECK(ok);
  free(seen);
  nic__plan_free(&p);
}

/* Compresses the test slide with the given options into out. */
static void compress(const char *out, nic_compress_opts o, nic_compress_stats *st) {
  nic_compressor *c = NULL;
  nic_error err = {0};
  o.command_line = "test_compress";
  CHECK_OK(nic_compressor_create(&c, model, ctx, &o, &err));
  if (!c) {
    fprintf(stderr, "  %s\n", err.msg);
    return;
  }
  nic_compress_job job = {slide, "layout", out, 0, NULL};
  nic_status s = nic_compress_slide(c, &job, st, &err);
  CHECK(s == NIC_OK);
  if (s != NIC_OK) fprintf(stderr, "  %s\n", err.msg);
  nic_compressor_free(c);
}

/* Exact grid, coordinates and kept cells on the known layout, and the
 * metadata. */
static void test_grid_and_cells(void) {
  char out[600];
  snprintf(out, sizeof out, "%s/layout.h5", tmpdir);
  nic_compress_stats st;
  compress(out, nic_compress_default_opts(), &st);
  nic_features_reader *r = NULL;
  nic_error err = {0};
  CHECK_OK(nic_features_open(&r, out, &err));
  if (!r) return;
  const nic_features_meta *m = nic_features_meta_of(r);
  CHECK_NEAR(m->stride_level0, 64 / CT_MPP, 1e-4); /* TIFF stores the resolution as float */
  CHECK(m->grid_w == CT_GRID_W && m->grid_h == CT_GRID_H);
  CHECK(m->origin_x == 0 && m->origin_y == 0 && m->patch_size == 128 && m->mpp == 0.5);
  CHECK(m->slide_width == CT_W && m->slide_height == CT_H);
  CHECK_NEAR(m->slide_mpp_x, CT_MPP, 1e-6);
  CHECK(m->embed_dim == CT_DIM && m->tissue_threshold == 0.5 && !m->has_orientations);
  CHECK(m->encoder && !strcmp(m->encoder, "test-encoder"));
  char sha[65];
  CHECK_OK(nic_features_sha256_file(model, sha, &err));
  CHECK(m->encoder_sha256 && !strcmp(m->encoder_sha256, sha));
  CHECK(m->command_line && !strcmp(m->command_line, "test_compress"));
  CHECK(m->slide_id && !strcmp(m->slide_id, "layout"));
  CHECK(m->has_tissue_fraction);
  const char *vendor = nic_features_property_value(r, "openslide.vendor");
  CHECK(vendor && !strcmp(vendor, "generic-tiff"));
  CHECK(st.grid_h == m->grid_h && st.grid_w == m->grid_w && st.patches == m->count);
  CHECK(st.level == 0 && st.readers >= 1);

  /* kept cells = the layout, row-major, at the rounded exact corners */
  int64_t expect = 0;
  for (int i = 0; i < CT_GRID_H; i++)
    for (int j = 0; j < CT_GRID_W; j++) expect += ct_layout_kept(i, j);
  CHECK(m->count == expect);
  printf("  %d x %d grid, %lld kept cells (expected %lld)\n", m->grid_h, m->grid_w,
         (long long)m->count, (long long)expect);
  int32_t *coords = malloc(sizeof(int32_t) * 2 * (size_t)(m->count ? m->count : 1));
  CHECK_OK(nic_features_read(r, 0, m->count, NULL, coords, &err));
  int64_t k = 0;
  int ok = 1;
  for (int i = 0; i < CT_GRID_H; i++)
    for (int j = 0; j < CT_GRID_W; j++) {
      if (!ct_layout_kept(i, j)) continue;
      ok &= k < m->count && coords[2 * k] == (int32_t)floor(j * m->stride_level0 + 0.5) &&
            coords[2 * k + 1] == (int32_t)floor(i * m->stride_level0 + 0.5);
      k++;
    }
  CHECK(ok);
  /* tissue fraction: about 1 on layout cells, about 0 elsewhere */
  float *frac = malloc(sizeof(float) * CT_GRID_H * CT_GRID_W);
  CHECK_OK(nic_features_read_tissue_fraction(r, frac, &err));
  ok = 1;
  for (int i = 0; i < CT_GRID_H; i++)
    for (int j = 0; j < CT_GRID_W; j++) {
      float f = frac[i * CT_GRID_W + j];
      ok &= ct_layout_kept(i, j) ? f > 0.8f : f < 0.3f;
    }
  CHECK(ok);
  free(frac);
  free(coords);
  nic_features_close(r);
}

/* Rows hold the embedding of their own cell's patch: equal to reading
 * that patch with the slide API and encoding it alone. */
static void test_features_match_direct(void) {
  char out[600];
  snprintf(out, sizeof out, "%s/layout.h5", tmpdir);
  nic_features_reader *r = NULL;
  nic_error err = {0};
  CHECK_OK(nic_features_open(&r, out, &err));
  nic_slide *s = NULL;
  CHECK_OK(nic_slide_open(&s, slide, NULL, &err));
  nic_model *ref = reference_model();
  if (!r || !s || !ref) goto done;
  const nic_features_meta *m = nic_features_meta_of(r);
  int64_t rows[] = {0, m->count / 3, m->count / 2, m->count - 1};
  uint8_t pix[128 * 128 * 3];
  float got[CT_DIM], want[CT_DIM];
  float worst = 0;
  for (size_t t = 0; t < sizeof rows / sizeof rows[0]; t++) {
    int32_t xy[2];
    CHECK_OK(nic_features_read(r, rows[t], 1, got, xy, &err));
    int i, j;
    CHECK(nic_features_coord_cell(m, xy[0], xy[1], &i, &j));
    read_cell(s, m, i, j, pix);
    embed(ref, pix, want, CT_DIM);
    float d = max_rel_diff(got, want, CT_DIM);
    worst = d > worst ? d : worst;
  }
  printf("  features vs direct encoding: max relative difference %.2g\n", (double)worst);
  CHECK(worst < 1e-4f);
  /* Different cells give different embeddings (rows are not mixed up). */
  float a[CT_DIM], b[CT_DIM];
  CHECK_OK(nic_features_read(r, 0, 1, a, NULL, &err));
  CHECK_OK(nic_features_read(r, 1, 1, b, NULL, &err));
  CHECK(max_rel_diff(a, b, CT_DIM) > 1e-3f);
done:
  nic_model_free(ref);
  nic_slide_close(s);
  nic_features_close(r);
}

/* --orientations 8: slice o is the embedding of the patch turned and
 * flipped as np.rot90(np.fliplr?(p), k); slice 0 equals features. */
static void test_orientations(void) {
  char out[600];
  snprintf(out, sizeof out, "%s/orient.h5", tmpdir);
  nic_compress_opts o = nic_compress_default_opts();
  o.orientations = 8;
  compress(out, o, NULL);
  nic_features_reader *r = NULL;
  nic_error err = {0};
  CHECK_OK(nic_features_open(&r, out, &err));
  nic_slide *s = NULL;
  CHECK_OK(nic_slide_open(&s, slide, NULL, &err));
  nic_model *ref = reference_model();
  if (!r || !s || !ref) goto done;
  const nic_features_meta *m = nic_features_meta_of(r);
  CHECK(m->has_orientations);
  int64_t n = m->count;
  float *f = malloc(sizeof(float) * (size_t)n * CT_DIM);
  float *fo = malloc(sizeof(float) * (size_t)n * 8 * CT_DIM);
  CHECK_OK(nic_features_read(r, 0, n, f, NULL, &err));
  CHECK_OK(nic_features_read_orientations(r, 0, n, fo, &err));
  int same = 1;
  for (int64_t k = 0; k < n; k++)
    same &= !memcmp(f + k * CT_DIM, fo + k * 8 * CT_DIM, sizeof(float) * CT_DIM);
  CHECK(same);
  uint8_t pix[128 * 128 * 3], turned[128 * 128 * 3];
  float want[CT_DIM], worst = 0, spread = 0;
  int64_t rows[] = {0, n - 1};
  for (size_t t = 0; t < 2; t++) {
    int32_t xy[2];
    int i, j;
    CHECK_OK(nic_features_read(r, rows[t], 1, NULL, xy, &err));
    CHECK(nic_features_coord_cell(m, xy[0], xy[1], &i, &j));
    read_cell(s, m, i, j, pix);
    for (int oi = 0; oi < 8; oi++) {
      ct_orient_rgb(pix, turned, 128, oi);
      embed(ref, turned, want, CT_DIM);
      const float *got = fo + (rows[t] * 8 + oi) * CT_DIM;
      float d = max_rel_diff(got, want, CT_DIM);
      worst = d > worst ? d : worst;
      float e = max_rel_diff(got, fo + rows[t] * 8 * CT_DIM, CT_DIM);
      spread = e > spread ? e : spread;
    }
  }
  printf("  orientations vs encoding the turned patch: max relative difference %.2g\n",
         (double)worst);
  CHECK(worst < 1e-4f);
  CHECK(spread > 1e-3f); /* the 8 embeddings do differ */
  free(f);
  free(fo);
done:
  nic_model_free(ref);
  nic_slide_close(s);
  nic_features_close(r);
}

/* Readers, encoders, ring and batch only change speed: tiny batches
 * (chunks split at every batch end), one reader, one encoder and the
 * smallest ring give the rows of many readers and encoders finishing
 * batches out of order. */
static void test_pipeline_settings(void) {
  char a[600], b[600];
  snprintf(a, sizeof a, "%s/settings-a.h5", tmpdir);
  snprintf(b, sizeof b, "%s/settings-b.h5", tmpdir);
  nic_compress_opts o = nic_compress_default_opts();
  o.readers = 1;
  o.encoders = 1;
  o.ring = 2;
  o.batch = 3;
  compress(a, o, NULL);
  o.readers = 5;
  o.encoders = 3; /* more encoders than free slots: they queue on batches */
  o.ring = 3;
  o.batch = 7;
  compress(b, o, NULL);
  nic_features_reader *ra = NULL, *rb = NULL;
  nic_error err = {0};
  CHECK_OK(nic_features_open(&ra, a, &err));
  CHECK_OK(nic_features_open(&rb, b, &err));
  if (ra && rb) {
    int64_t n = nic_features_meta_of(ra)->count;
    CHECK(n == nic_features_meta_of(rb)->count);
    float *fa = malloc(sizeof(float) * (size_t)n * CT_DIM);
    float *fb = malloc(sizeof(float) * (size_t)n * CT_DIM);
    int32_t *ca = malloc(sizeof(int32_t) * (size_t)n * 2);
    int32_t *cb = malloc(sizeof(int32_t) * (size_t)n * 2);
    CHECK_OK(nic_features_read(ra, 0, n, fa, ca, &err));
    CHECK_OK(nic_features_read(rb, 0, n, fb, cb, &err));
    CHECK(!memcmp(ca, cb, sizeof(int32_t) * (size_t)n * 2));
    CHECK(max_rel_diff(fa, fb, (int)(n * CT_DIM)) < 1e-4f);
    free(fa);
    free(fb);
    free(ca);
    free(cb);
  }
  nic_features_close(ra);
  nic_features_close(rb);
}

/* A user mask replaces detection: the left half of the slide only. */
static void test_user_mask(void) {
  char mask[600], out[600];
  snprintf(mask, sizeof mask, "%s/left.png", tmpdir);
  snprintf(out, sizeof out, "%s/masked.h5", tmpdir);
  /* 2 x 1 px mask stretched over the slide: left column tissue */
  uint8_t px[2] = {255, 0};
  VipsImage *img = vips_image_new_from_memory_copy(px, 2, 2, 1, 1, VIPS_FORMAT_UCHAR);
  CHECK(img && vips_pngsave(img, mask, NULL) == 0);
  if (img) g_object_unref(img);
  nic_compressor *c = NULL;
  nic_error err = {0};
  nic_compress_opts o = nic_compress_default_opts();
  CHECK_OK(nic_compressor_create(&c, model, ctx, &o, &err));
  nic_compress_job job = {slide, NULL, out, 0, mask};
  nic_compress_stats st;
  CHECK_OK(nic_compress_slide(c, &job, &st, &err));
  nic_compressor_free(c);
  /* The tissue fraction of a cell is its overlap with the left half of
   * the slide (outside the slide counts as no tissue). */
  int64_t expect = 0;
  double S = 64 / CT_MPP;
  for (int i = 0; i < CT_GRID_H; i++)
    for (int j = 0; j < CT_GRID_W; j++) {
      double fx = (fmin((j + 1) * S, CT_W / 2.0) - fmin(j * S, CT_W / 2.0)) / S;
      double fy = (fmin((i + 1) * S, CT_H) - i * S) / S;
      expect += fx * fy >= 0.5;
    }
  CHECK(st.patches == expect);
  printf("  left-half mask: %lld patches (expected %lld)\n", (long long)st.patches,
         (long long)expect);
  nic_features_reader *r = NULL;
  CHECK_OK(nic_features_open(&r, out, &err));
  if (r) CHECK(!strcmp(nic_features_meta_of(r)->slide_id, "masked"));
  nic_features_close(r);
}

/* The SVS and its generic-TIFF copy (with the same spacing given) give
 * grids that agree: same shape, the same kept cells up to a few on the
 * tissue border, close embeddings. */
static void test_shared_slides(void) {
  const char *shared = nic_test_shared_dir();
  if (!shared) {
    printf("  skip: no ../shared\n");
    return;
  }
  char svs[600], tif[600], a[600], b[600];
  snprintf(svs, sizeof svs, "%s/data/slides/CMU-1-Small-Region.svs", shared);
  snprintf(tif, sizeof tif, "%s/data/slides/CMU-1-Small-Region.pyramid.tif", shared);
  snprintf(a, sizeof a, "%s/cmu-svs.h5", tmpdir);
  snprintf(b, sizeof b, "%s/cmu-tif.h5", tmpdir);
  nic_compressor *c = NULL;
  nic_error err = {0};
  nic_compress_opts o = nic_compress_default_opts();
  CHECK_OK(nic_compressor_create(&c, model, ctx, &o, &err));
  if (!c) return;
  nic_compress_job ja = {svs, NULL, a, 0, NULL}, jb = {tif, NULL, b, 0.499, NULL};
  CHECK_OK(nic_compress_slide(c, &ja, NULL, &err));
  CHECK_OK(nic_compress_slide(c, &jb, NULL, &err));
  nic_compressor_free(c);
  nic_features_reader *ra = NULL, *rb = NULL;
  CHECK_OK(nic_features_open(&ra, a, &err));
  CHECK_OK(nic_features_open(&rb, b, &err));
  if (!ra || !rb) goto done;
  const nic_features_meta *ma = nic_features_meta_of(ra), *mb = nic_features_meta_of(rb);
  CHECK(ma->grid_h == mb->grid_h && ma->grid_w == mb->grid_w);
  CHECK_NEAR(ma->stride_level0, mb->stride_level0, 1e-9);
  if (ma->grid_h != mb->grid_h || ma->grid_w != mb->grid_w) goto done;
  int H = ma->grid_h, W = ma->grid_w;
  float *ga = malloc(sizeof(float) * (size_t)CT_DIM * H * W);
  float *gb = malloc(sizeof(float) * (size_t)CT_DIM * H * W);
  uint8_t *ka = malloc((size_t)H * W), *kb = malloc((size_t)H * W);
  CHECK_OK(nic_features_read_grid(ra, -1, ga, &err));
  CHECK_OK(nic_features_read_grid(rb, -1, gb, &err));
  CHECK_OK(nic_features_read_tissue_mask(ra, ka, &err));
  CHECK_OK(nic_features_read_tissue_mask(rb, kb, &err));
  int both = 0, differ = 0;
  double cos_sum = 0;
  for (int c = 0; c < H * W; c++) {
    if (ka[c] != kb[c]) differ++;
    if (!ka[c] || !kb[c]) continue;
    double dot = 0, na = 0, nb = 0;
    for (int d = 0; d < CT_DIM; d++) {
      double x = ga[(size_t)d * H * W + c], y = gb[(size_t)d * H * W + c];
      dot += x * y;
      na += x * x;
      nb += y * y;
    }
    cos_sum += dot / sqrt(na * nb + 1e-30);
    both++;
  }
  double cos_mean = both ? cos_sum / both : 0;
  printf("  SVS %lld rows, pyramid %lld rows, %d in common, %d differ; mean cosine %.4f\n",
         (long long)ma->count, (long long)mb->count, both, differ, cos_mean);
  CHECK(both > 100);
  CHECK(differ <= 12);
  CHECK(cos_mean > 0.98);
  free(ga);
  free(gb);
  free(ka);
  free(kb);
done:
  nic_features_close(ra);
  nic_features_close(rb);
}

int main(void) {
  nic_error err = {0};
  if (nic__vips_init(&err) != NIC_OK) nic_test_skip(err.msg);
  tmpdir = nic_test_tmpdir();
  ctx = nic_test_ctx(1);
  snprintf(model, sizeof model, "%s/encoder.safetensors", tmpdir);
  snprintf(slide, sizeof slide, "%s/layout.tif", tmpdir);
  ct_write_model(model, ctx);
  ct_write_layout_slide(slide, 1, 1);
  RUN(test_orient_source);
  RUN(test_plan);
  RUN(test_grid_and_cells);
  RUN(test_features_match_direct);
  RUN(test_orientations);
  RUN(test_pipeline_settings);
  RUN(test_user_mask);
  RUN(test_shared_slides);
  nic_ctx_free(ctx);
  return nic_test_finish();
}
