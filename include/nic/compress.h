/* Slide compression: turning whole-slide images into compressed slides
 * (include/nic/features.h), the work behind `nic compress`.
 *
 * A compressor holds one patch encoder, made ready for inference once, and
 * encodes any number of slides with it, one after the other:
 *
 *   1. open the slide, find its spacing (or take an override);
 *   2. find the tissue (nic_tissue_detect) or load the user's mask;
 *   3. lay the non-overlapping grid of the compressed-slide format over it
 *      (cells of patch_size * model_mpp / slide_mpp level-0 pixels,
 *      anchored at (0, 0)) and keep the cells whose tissue fraction reaches
 *      min_tissue;
 *   4. read every kept patch at the model's spacing in reader threads (the
 *      pyramid level needing the least decoding, exact area averaging) into
 *      a bounded ring of batches, while encoder threads (the calling thread
 *      among them) encode full batches and append the rows, in order, to
 *      `<out>.tmp.<pid>`;
 *   5. commit: rename the file into place.
 *
 * Memory is bounded by the ring (ring x batch patches) and the models'
 * activations, whatever the slide's size; see docs/compress.md.
 *
 * Around that, slide lists (arguments, folders, CSV files), sharding for
 * job arrays, resuming, and the run report. Everything is per-object: two
 * compressors (one per MPI rank or GPU) can live in one process, but one
 * compressor must be used by one thread at a time, and since HDF5 is not
 * thread-safe, only one slide of a process is written at a time. */
#ifndef NIC_COMPRESS_H
#define NIC_COMPRESS_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "nic/ctx.h"
#include "nic/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the compressor ---------------------------------------------------------- */

/* Called after each batch is written: `done` of `total` patches of the
 * current slide. It runs on one of the encoder threads (never two at
 * once), so it must not block for long. */
typedef void (*nic_compress_progress_fn)(void *user, int64_t done, int64_t total);

typedef struct nic_compress_opts {
  int batch;    /* patches per forward pass (128) */
  int readers;  /* patch-reading threads (0 = one per online core) */
  int encoders; /* encoder threads, each with its own copy of the model and an
                 * equal share of the context's threads (0 = one per thread) */
  int ring;     /* batches in flight between readers and encoders (0 = readers + encoders + 1) */
  double min_tissue;        /* keep cells whose tissue fraction is >= this, 0..1 (0.5) */
  int orientations;         /* 1, or 8: also encode the 8 rotations/flips of every patch */
  double tissue_mpp;        /* spacing of tissue detection and of rasterised masks, um/px (8) */
  int gzip_level;           /* HDF5 deflate level of the output, 0 = none (0) */
  const char *command_line; /* stored in every output (NULL = none); copied */
  nic_compress_progress_fn progress; /* may be NULL */
  void *progress_user;
  /* Polled between batches: when it points to a non-zero value the slide
   * stops with NIC_EINVAL "interrupted" and its temporary file is removed
   * (for Ctrl-C). May be NULL. */
  const volatile sig_atomic_t *cancel;
} nic_compress_opts;

nic_compress_opts nic_compress_default_opts(void);

typedef struct nic_compressor nic_compressor;

/* Loads the encoder at model_path (a nic .safetensors model whose input is
 * an RGB patch_size x patch_size patch at a known spacing, and whose output
 * is N x C) once per encoder thread, rewrites it for inference, and
 * checksums the file for the outputs' encoder_sha256. ctx is borrowed and
 * must outlive the compressor: its backend and thread count are the
 * encoders' (with one encoder it is used as is; with several, each gets a
 * context of its own with an equal share of the threads). */
nic_status nic_compressor_create(nic_compressor **out, const char *model_path, nic_ctx *ctx,
                                 const nic_compress_opts *opts, nic_error *err);
void nic_compressor_free(nic_compressor *c);

/* What the encoder is: name (metadata encoder_name, else the file name),
 * input patch side and spacing, embedding size, file checksum. */
const char *nic_compressor_encoder_name(const nic_compressor *c);
int nic_compressor_patch_size(const nic_compressor *c);
double nic_compressor_mpp(const nic_compressor *c);
int nic_compressor_embed_dim(const nic_compressor *c);
const char *nic_compressor_sha256(const nic_compressor *c);
/* The options in use, with the defaults resolved (readers, ring). */
const nic_compress_opts *nic_compressor_opts(const nic_compressor *c);

/* One slide to compress. */
typedef struct nic_compress_job {
  const char *slide_path;
  const char *slide_id;  /* stored as the file's name; NULL = out_path's stem */
  const char *out_path;  /* the .h5 to write (atomically) */
  double mpp;            /* > 0: level-0 spacing in um/px, winning over the file */
  const char *mask_path; /* a mask image or GeoJSON replacing detection; NULL = detect */
} nic_compress_job;

/* What one slide took (all times in seconds). read_s, encode_s, wait_s and
 * stall_s are summed over the threads doing them, so with R readers
 * read_s can reach R x total_s. */
typedef struct nic_compress_stats {
  int grid_h, grid_w;     /* the grid */
  int64_t patches;        /* kept cells = rows written */
  double tissue_fraction; /* mean tissue fraction over all cells (0..1) */
  int level;              /* pyramid level decoded for the patches */
  double level_downsample;
  int readers;     /* reader threads used */
  int encoders;    /* encoder threads used */
  double total_s;  /* the whole call */
  double open_s;   /* opening the slide */
  double tissue_s; /* tissue detection or mask loading, and the grid */
  double read_s;   /* patch reading and decoding, summed over readers */
  double encode_s; /* input preparation and forward passes, summed over encoders */
  double write_s;  /* HDF5 appends and the commit */
  double wait_s;   /* encoders waiting for patches, summed */
  double stall_s;  /* readers waiting for a free batch slot, summed */
} nic_compress_stats;

/* Compresses one slide into job->out_path, replacing what is there. stats
 * may be NULL. Errors name the slide: missing or unreadable file, unknown
 * spacing (with the options that give one), a mask that cannot be used, no
 * tissue cell, failed tile decoding, an output that cannot be written. On
 * failure nothing is left at out_path's temporary name and an older file at
 * out_path is untouched. */
nic_status nic_compress_slide(nic_compressor *c, const nic_compress_job *job,
                              nic_compress_stats *stats, nic_error *err);

/* ---- lists of slides ------------------------------------------------------------ */

typedef struct nic_slide_entry {
  char *id;    /* output name: <id>.h5 */
  char *path;  /* the slide file */
  double mpp;  /* > 0: spacing override from the list's mpp column */
  char *error; /* set when the entry cannot be processed (e.g. a duplicate id) */
} nic_slide_entry;

typedef struct nic_slide_list {
  int count, cap;
  nic_slide_entry *items;
} nic_slide_list;

/* Adds what `arg` names, in this order of interpretation:
 *  - a directory: every file in it with a slide or image extension (.svs,
 *    .tif, .tiff, .ndpi, .vms, .vmu, .scn, .mrxs, .bif, .svslide, .png,
 *    .jpg, .jpeg, ...), sorted by name, not recursive;
 *  - a file ending in .csv: one slide per row, `slide_id,path[,mpp]`. A
 *    first row starting with `slide_id` is a header; with a header the
 *    columns are found by name (slide_id, path, mpp) and others are
 *    ignored. Relative paths are relative to the CSV's folder. An empty
 *    mpp means none. Fields may be double-quoted;
 *  - anything else: one slide (it need not exist: a missing slide is that
 *    slide's failure, reported when it is processed).
 * The id of a slide not from a CSV is its file name without the last
 * extension. Fails (NIC_EIO / NIC_EFORMAT), naming the file, for an
 * unreadable folder or CSV or a header without a path column; a bad row
 * (no id, no path, an mpp that is not a positive number) becomes that
 * entry's error, naming the file and line, and the others are added. */
nic_status nic_slide_list_add(nic_slide_list *l, const char *arg, nic_error *err);
/* Marks every entry whose id repeats an earlier one (error "slide id 'x'
 * is also used by PATH"): two slides must not write one output. */
void nic_slide_list_mark_duplicates(nic_slide_list *l);
/* Keeps the entries at positions p with p % count == index (0 <= index <
 * count): the same list on every job of an array gives disjoint shards
 * whose union is the list. */
nic_status nic_slide_list_shard(nic_slide_list *l, int index, int count, nic_error *err);
void nic_slide_list_free(nic_slide_list *l);

/* ---- runs: many slides, resume, report ------------------------------------------ */

typedef enum nic_compress_outcome {
  NIC_COMPRESS_DONE = 0, /* compressed now */
  NIC_COMPRESS_SKIPPED,  /* a complete output was already there */
  NIC_COMPRESS_FAILED
} nic_compress_outcome;

const char *nic_compress_outcome_str(nic_compress_outcome o); /* ok, skipped, failed */

/* One row of the run report. */
typedef struct nic_compress_result {
  const nic_slide_entry *entry;
  nic_compress_outcome outcome;
  int64_t patches; /* rows in the output (also for skipped slides) */
  double seconds;
  nic_compress_stats stats; /* for DONE */
  char error[NIC_ERRMSG_MAX];
} nic_compress_result;

typedef struct nic_compress_run_opts {
  const char *outdir; /* where <id>.h5 go (must exist) */
  const char *report; /* the report CSV; NULL = <outdir>/compress_report.csv */
  int overwrite;      /* 1: redo slides whose output is complete */
  double slide_mpp;   /* > 0: spacing for slides whose list entry has none */
  const char *mask;   /* NULL, a mask file (one slide), or a folder searched for
                       * <id>.geojson, <id>.json, <id>_mask.png */
  /* Called before and after each slide (may be NULL). */
  void (*slide_begin)(void *user, int index, int count, const nic_slide_entry *e);
  void (*slide_end)(void *user, int index, int count, const nic_compress_result *r);
  void *user;
} nic_compress_run_opts;

typedef struct nic_compress_summary {
  int total, done, skipped, failed;
  int64_t patches; /* encoded in this run */
  double seconds;
} nic_compress_summary;

/* Processes every entry of l in order. At the start it removes the
 * temporary outputs (<id>.h5.tmp.<digits>) a crashed run left for the
 * slides of l. A slide whose output is complete and made the same way
 * (encoder checksum, orientations, min_tissue) is skipped unless
 * overwrite; one made differently fails, asking for overwrite; the others
 * are compressed. Each outcome goes to the report, rewritten atomically as
 * the run goes (at most every few seconds, and at the end), so it is
 * always a complete CSV: slide_id,path,status,n_patches,seconds,error. A
 * failing slide never stops the others. The return value is about the run
 * itself (the report cannot be written, a cancel); per-slide failures are
 * in the summary. */
nic_status nic_compress_run(nic_compressor *c, const nic_slide_list *l,
                            const nic_compress_run_opts *o, nic_compress_summary *sum,
                            nic_error *err);

/* Writes a report of n results atomically (temporary file + rename). */
nic_status nic_compress_write_report(const char *path, const nic_compress_result *r, int n,
                                     nic_error *err);

/* The bundled default encoder: searched as models/nic-default.safetensors
 * under exe_dir/../share/nic (an installed nic; exe_dir may be NULL) and
 * under the source tree nic was built from. Returns 1 with the path, or 0
 * with the places searched in `path` (for the error message). */
int nic_compress_default_model(const char *exe_dir, char *path, size_t size);

#ifdef __cplusplus
}
#endif
#endif
