/* Private to src/slidemodel/: CSV files, the slide cache and crops, the two
 * networks, and the slide model structure shared by training, prediction
 * and heatmaps. */
#ifndef NIC_SLIDEMODEL_INTERNAL_H
#define NIC_SLIDEMODEL_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include "nic/ctx.h"
#include "nic/nn.h"
#include "nic/slidemodel.h"

/* ---- sm_util.c: strings, CSV, files ------------------------------------- */

/* A CSV file in memory: row 0 is the header. Rows shorter than the header
 * are padded with "" (pandas writes none, spreadsheets do). */
typedef struct sm_csv {
  int nrows, ncols;
  char **cell; /* nrows x ncols, pointing into text */
  int *line;   /* 1-based line number of each row, for messages */
  char *text;  /* the unquoted fields, NUL-separated */
} sm_csv;

/* Reads and splits a CSV (RFC 4180 quoting, CRLF or LF, a UTF-8 BOM, blank
 * lines skipped, unquoted fields trimmed). NIC_EIO when unreadable,
 * NIC_EFORMAT (naming file and line) when a row has more fields than the
 * header or a quote is not closed. */
nic_status sm_csv_read(sm_csv *c, const char *path, nic_error *err);
void sm_csv_free(sm_csv *c);
/* Column of a header name, or -1. */
int sm_csv_col(const sm_csv *c, const char *name);
static inline const char *sm_csv_get(const sm_csv *c, int row, int col) {
  return c->cell[(int64_t)row * c->ncols + col];
}
/* Writes one field, quoted when it needs to be. */
void sm_csv_put(FILE *f, const char *s);

char *sm_strdup(const char *s); /* NULL stays NULL */
/* The whole of s is a finite number. */
int sm_parse_double(const char *s, double *v);
/* The whole of s is an integer (optional sign, digits). */
int sm_is_integer(const char *s);
/* Sorts class names: numerically when all are numbers, else by bytes. */
void sm_sort_names(char **names, int n);

/* mkdir -p. */
nic_status sm_mkdirs(const char *dir, nic_error *err);
/* Atomic file writing: open `<path>.tmp.<pid>`, then commit (flush, fsync,
 * rename) or abort (remove). */
typedef struct sm_out {
  FILE *f;
  char path[4096], tmp[4200];
} sm_out;
nic_status sm_out_open(sm_out *o, const char *path, nic_error *err);
nic_status sm_out_commit(sm_out *o, nic_error *err);
void sm_out_abort(sm_out *o);

/* 64-bit mixing (splitmix64), for deriving seeds from a seed and integers. */
uint64_t sm_mix(uint64_t x);

/* ---- orientations (docs/compressed-slide-format.md, "Orientations") -------- */

/* Grid size after orientation o (0..7): rows and columns swap for odd
 * rotations. */
void sm_orient_dims(int o, int H, int W, int *H2, int *W2);
/* Where cell (i, j) of an H x W grid goes under orientation o: a
 * left-right flip for o >= 4, then (o % 4) quarter turns counter-clockwise,
 * exactly as np.rot90(np.fliplr(grid)) moves array elements, so that the
 * grid and the patches in it (features_orientations[:, o]) turn together. */
void sm_orient_cell(int o, int H, int W, int i, int j, int *i2, int *j2);

/* ---- slides.c: the slide cache, crops, feature statistics ------------------- */

typedef struct sm_slide {
  char *path;
  int H, W;      /* grid */
  int64_t n;     /* tissue cells (rows) */
  int has_or;    /* features_orientations present */
  int32_t *cell; /* n: i * W + j of each row */
  double *cdf;   /* n: cumulative crop-centre weights (distance to background) */
  float *feat;   /* n x C rows, once cached (NULL otherwise) */
  float *orient; /* n x 8 x C, once cached */
} sm_slide;

typedef struct sm_data {
  int n;
  sm_slide *s;
  int C;          /* embedding dimension, common to all slides */
  int use_or;     /* read orientation encodings when a slide has them */
  int64_t budget; /* bytes of rows that may be cached */
  int cache_feat; /* every slide's features fit the budget */
  int cache_or;   /* ... and their orientations too */
  float *tmp;     /* rows of an uncached slide */
  size_t tmp_cap; /* floats */
  float *tmp8;    /* a block of n x 8 x C orientation rows */
  size_t tmp8_cap;
} sm_data;

/* Opens the slides (reading their coords and tissue layout, not their
 * features) and decides what can be cached. All must have the same
 * embedding dimension. */
nic_status sm_data_open(sm_data *d, const char *const *paths, int n, int use_or,
                        int64_t cache_bytes, nic_error *err);
void sm_data_free(sm_data *d);
/* The rows of slide i in orientation o (-1 or 0: features; 1..7 an
 * orientation encoding when the slide has them and use_or, else the
 * features), n x C; valid until the next call. */
nic_status sm_rows(sm_data *d, int i, int o, const float **rows, nic_error *err);
/* Orientation whose encodings sm_rows returns: o or 0. */
int sm_rows_orientation(const sm_data *d, int i, int o);

/* Per-channel mean and 1/sd over the tissue rows of the listed slides, so
 * that inputs are standardised (background cells stay 0). */
nic_status sm_feature_stats(sm_data *d, const int *idx, int n, float *mean, float *istd,
                            nic_error *err);

/* A crop of an oriented grid: output cell (y, x) shows oriented cell
 * (y + y0, x + x0); an optional box of the output is zeroed. */
typedef struct sm_crop {
  int o;                  /* orientation 0..7 */
  int y0, x0;             /* window origin in the oriented grid (negative: padding) */
  int occ;                /* an occlusion box is present */
  int by0, bx0, by1, bx1; /* the box, in output cells, [by0, by1) x [bx0, bx1) */
} sm_crop;

/* Chooses the crop window for orientation o. Along each axis a grid that
 * fits is placed whole (at a random offset when training, centred
 * otherwise); a larger one is cut around a centre cell drawn with
 * probability proportional to its distance to the background. occlusion is
 * the probability of an occlusion box (training only). */
void sm_crop_choose(const sm_slide *s, int R, int o, int train, float occlusion, nic_rng *rng,
                    sm_crop *cr);
/* Writes the crop into dst (C x R x R, zeroed by the caller) from rows in
 * orientation cr->o, standardised with mean/istd. */
void sm_crop_place(const sm_slide *s, const float *rows, int C, const float *mean,
                   const float *istd, int R, const sm_crop *cr, float *dst);
/* Orientation of test crop t of T: spread over the 8 when T < 8. */
int sm_test_orientation(int t, int T);

/* ---- cnn.c: the NIC slide CNN ---------------------------------------------- */

typedef struct sm_cnn_arch {
  int C, R, filters, hidden, nout;
  nic_pool_kind pool;
  int strided; /* blocks with stride 2, from the first */
  float dropout;
  int smooth; /* > 0: the cluster detector (filters = score maps) instead of the NIC CNN */
} sm_cnn_arch;

/* Builds the CNN (explain = 0), or its Grad-CAM twin (explain = 1): the
 * same layers without batch norm and dropout, whose pointwise convolutions
 * and dense layer carry biases so that the batch norms can be folded in. */
nic_status sm_cnn_build(nic_model **out, const sm_cnn_arch *a, int explain, nic_error *err);
/* Copies a trained CNN into its twin, folding each batch norm (running
 * statistics) into the layer before it: the twin's training-mode forward
 * equals the CNN's inference forward, and it can run backward. */
nic_status sm_cnn_fold_into(nic_model *cnn, nic_model *twin, nic_error *err);
/* Node of the twin whose output Grad-CAM uses: the first block's activation. */
int sm_cnn_cam_node(const nic_model *twin);

/* ---- abmil.c: gated attention MIL ------------------------------------------ */

typedef struct sm_abmil {
  int C, L, D, K;
  int threads;        /* OpenMP threads (the context's) */
  nic_param *w1, *b1; /* fc: L x C, L      h = relu(W1 x + b1) */
  nic_param *wv, *bv; /* attn_v: D x L, D  v = tanh(Wv h + bv) */
  nic_param *wu, *bu; /* attn_u: D x L, D  u = sigmoid(Wu h + bu) */
  nic_param *wa, *ba; /* attn_w: 1 x D, 1  s = wa . (v * u) + ba */
  nic_param *wc, *bc; /* cls: K x L, K     y = Wc (sum_k softmax(s)_k h_k) + bc */
  /* workspace of the last forward (n instances) */
  int64_t cap;
  float *h, *v, *u, *s, *a; /* n x L, n x D, n x D, n, n */
  float z[1024];            /* L <= 1024 */
  float *wt;                /* transposed weights, max(C, L) x max(L, D) */
  size_t wt_cap;
  float *dh, *dg; /* backward scratch: n x L, n x D */
} sm_abmil;

#define SM_ABMIL_MAX_DIM 1024

/* The parameter container: a nic model with input C x 1 x 1 and dense
 * layers fc, attn_v, attn_u, attn_w, cls of the shapes above. It is never
 * run by the engine; it gives ABMIL named parameters, initialisation,
 * the optimizers and the model file format. */
nic_status sm_abmil_build(nic_model **out, int C, int L, int D, int K, nic_ctx *ctx,
                          nic_error *err);
/* Points a at the container's parameters (checking their shapes). */
nic_status sm_abmil_bind(sm_abmil *a, nic_model *m, nic_error *err);
void sm_abmil_release(sm_abmil *a);
/* y (K values) for a bag x of n x C instances; keeps what backward needs.
 * attn (n values, may be NULL) receives the attention weights. */
nic_status sm_abmil_forward(sm_abmil *a, const float *x, int64_t n, float *y, float *attn,
                            nic_error *err);
/* Adds d(loss)/d(params) for d(loss)/dy to the params' gradients; must
 * follow a forward on the same x. */
nic_status sm_abmil_backward(sm_abmil *a, const float *x, int64_t n, const float *dy,
                             nic_error *err);

/* ---- the slide model ---------------------------------------------------------- */

struct nic_slidemodel {
  nic_sm_kind kind;
  nic_task task;
  int C;              /* embedding dimension */
  int nout;           /* network outputs: classes, or 1 */
  int K;              /* classes (classification), else 0 */
  char **class_names; /* K */
  int ordinal;
  int crop, filters, strided, hidden, attn_dim, pool, test_crops, use_or;
  int smooth; /* cluster: mean filter side (filters = score maps); 0 otherwise */
  float dropout;
  float *mean, *istd;  /* C: feature standardisation */
  double y_mean, y_sd; /* regression target scaling */
  double risk_offset;  /* survival: mean training risk, subtracted from predictions */
  uint64_t seed;
  int best_epoch;
  nic_model *net;  /* the CNN, or ABMIL's parameter container */
  nic_model *twin; /* CNN: the Grad-CAM twin, built on first use */
  sm_abmil ab;     /* ABMIL: bound to net */
  nic_tensor x;    /* input batch */
  float *bag;      /* ABMIL: standardised instances */
  size_t bag_cap;
};

/* model.c */
/* An untrained model for a cohort's task (classes, outputs) and options;
 * net is built by the caller. */
nic_status sm_model_new(nic_slidemodel **out, const nic_cohort *c, const nic_sm_opts *o, int C,
                        nic_error *err);
/* Scores of slide i of d (as nic_sm_predict), and the mean network output
 * before the final transform (logits averaged as probabilities, etc.). */
nic_status sm_model_predict(nic_slidemodel *m, nic_ctx *ctx, sm_data *d, int i, double *scores,
                            nic_error *err);
/* Builds the standardised bag of slide i in orientation o into m->bag;
 * returns the instance count. keep (NULL = all) selects rows. */
nic_status sm_model_bag(nic_slidemodel *m, sm_data *d, int i, int o, const uint8_t *keep,
                        int64_t *n, nic_error *err);
/* Adds the probabilities (classification) or outputs to acc (nout values). */
void sm_model_accumulate(const nic_slidemodel *m, const float *out, double *acc);

/* train.c: nic_sm_train with fold / folds reported in the progress. */
nic_status sm_train_fold(nic_slidemodel **out, nic_ctx *ctx, const nic_cohort *c, const nic_fold *f,
                         const nic_sm_opts *o, int fold, int folds, nic_error *err);

/* evaluate.c: an evaluation of nothing (no rows), for runs without any
 * slide to evaluate. */
nic_status sm_eval_empty(nic_eval *e, nic_task task, nic_error *err);

/* evaluate.c: the main metric on scores for validation (NaN when undefined). */
double sm_main_metric(nic_task task, int K, const int *cls, const double *value, const int *event,
                      const double *scores, int n);

#endif
