/* Private to src/compress/: the compressor, the cell plan of one slide and
 * the reader/encoder pipeline that fills it. Tests include it to reach the
 * pieces without a public entry point (orientation tables, the plan). */
#ifndef NIC_COMPRESS_INTERNAL_H
#define NIC_COMPRESS_INTERNAL_H

#include <stdint.h>

#include "nic/compress.h"
#include "nic/features.h"
#include "nic/nn.h"
#include "nic/slide.h"

/* One encoder: a copy of the model with its own context and buffers, run
 * by one thread. Several of them encode different batches at once (see
 * compress_pipeline.c). */
typedef struct nic_encoder_worker {
  nic_model *model; /* optimized for inference */
  nic_ctx *ctx;     /* its context: owned, or the compressor's when there is one worker */
  int own_ctx;
  nic_tensor x;  /* prepared input of the current batch */
  nic_tensor xo; /* the same, transformed (orientations) */
  int start;     /* first node to run after nic_model_prepare_rgb8 */
  float *feats;  /* batch x C: the batch's embeddings */
  float *orient; /* batch x 8 x C, with orientations */
} nic_encoder_worker;

struct nic_compressor {
  nic_compress_opts o; /* defaults resolved; command_line points to cmdline */
  char *cmdline;
  nic_ctx *ctx;  /* borrowed */
  char *name;    /* encoder name */
  char sha[65];  /* SHA-256 of the model file */
  int P;         /* patch side at mpp */
  double mpp;    /* the encoder's spacing */
  int C;         /* embedding size */
  int q;         /* side of the prepared input (P, or P/2 with a leading 2x2 pool) */
  int32_t *perm; /* 8 x q x q: source pixel of each output pixel per orientation */
  int nworkers;
  nic_encoder_worker *workers;
};

/* ---- encoding (compress_encode.c) ---------------------------------------- */

/* For a q x q image and orientation o (0..7, the order of
 * NIC_FEATURES_ORIENTATIONS), the source pixel (row * q + col) that lands
 * on output pixel (i, j): out[i][j] = in[src]. o = k (0..3) is np.rot90(p, k),
 * o = 4 + k is np.rot90(np.fliplr(p), k). */
int32_t nic__orient_source(int o, int q, int i, int j);

/* Loads worker w's model from `path` (threads: its context's), makes it
 * ready for inference and allocates its buffers; c->P, C, batch and
 * orientations must be set. Sets c->q and builds c->perm on the first
 * worker. */
nic_status nic__worker_init(nic_compressor *c, nic_encoder_worker *w, const char *path, int threads,
                            nic_error *err);
void nic__worker_free(nic_encoder_worker *w);

/* Encodes n patches (P x P x 3 bytes each, packed) into w->feats (n x C)
 * and, with orientations, w->orient (n x 8 x C). Workers may run this
 * concurrently: they share only read-only state of c. */
nic_status nic__encode_batch(const nic_compressor *c, nic_encoder_worker *w, const uint8_t *pix,
                             int n, nic_error *err);

/* ---- the plan of one slide (compress_plan.c) --------------------------- */

/* Which cells are read, in which order, and when rows can be written.
 *
 * Rows (kept cells in row-major order, k = 0..n-1) must reach the file in
 * that order, but reading them in that order makes every tile row of the
 * slide be decoded once per grid row it touches (a tile row of a wide
 * slide does not fit OpenSlide's tile cache). So cells are read block by
 * block: the grid is cut into bands of `band_rows` rows, each band into
 * blocks of `block_cols` columns, and the kept cells of a block (row-major
 * within it) are read together, by one reader, while its tiles are in the
 * cache. Reading stays within a band until the band is done, so the rows
 * of a band are complete when reading has passed its end. */
typedef struct nic_cell_plan {
  int64_t n;          /* kept cells */
  int32_t *cells;     /* n cell indices (i * grid_w + j), ascending */
  int32_t *order;     /* n: read position s -> row k (grids have < 2^31 cells) */
  int nbands;         /* bands of band_rows grid rows */
  int64_t *band_end;  /* nbands: one past the last row (and read position) of each band */
  int64_t max_band;   /* most kept cells in one band */
  int64_t nchunks;    /* units of work: the kept cells of one block within one batch */
  int64_t *chunk_end; /* nchunks: one past the last read position of each chunk */
  int band_rows, block_cols;
} nic_cell_plan;

/* Builds the plan for a grid of grid_h x grid_w cells where keep[cell] != 0
 * marks kept cells; batch is the encoder's batch size. */
nic_status nic__plan_build(nic_cell_plan *p, const uint8_t *keep, int grid_h, int grid_w,
                           int band_rows, int block_cols, int batch, nic_error *err);
void nic__plan_free(nic_cell_plan *p);

/* ---- the pipeline (compress_pipeline.c) -------------------------------- */

/* Reads the plan's patches from slide s with c->o.readers threads and
 * encodes them on the calling thread, appending rows to w in order. Fills
 * the read/encode/write/wait/stall times, the level and the readers of st. */
nic_status nic__pipeline_run(nic_compressor *c, const nic_slide *s, const nic_features_meta *meta,
                             const nic_cell_plan *plan, nic_features_writer *w,
                             nic_compress_stats *st, nic_error *err);

/* Monotonic seconds. */
double nic__compress_now(void);

#endif
