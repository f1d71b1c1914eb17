/* The reader/encoder pipeline of one slide.
 *
 * Reader threads decode patches into a ring of batch slots while encoder
 * threads (the calling thread and c->nworkers - 1 more) encode full
 * batches, and rows are written in order:
 *
 *   readers:  claim the next chunk (the kept cells of one block, all in
 *             one batch), wait until that batch's slot is free, read the
 *             patches into it, count them in;
 *   encoders: claim the next batch b, wait until slot b % ring holds all of
 *             it, encode it with the worker's own model copy, free the slot
 *             for batch b + ring; then, when it is b's turn (every earlier
 *             batch is written), scatter the embeddings to their rows and
 *             write every row whose band is complete.
 *
 * Why several single-threaded encoders rather than one multi-threaded
 * one: a oneDNN primitive splits its work among its OpenMP threads and
 * waits for the slowest at the end, so whenever one of them is preempted
 * (by a reader thread, or another program on a shared machine) the others
 * idle; independent encoders never wait for each other. On the 2-core
 * development machine under load, two 1-thread encoders did 1150
 * patches/s where one 2-thread encoder did 590.
 *
 * Chunks and batches are claimed in order, so when every reader waits for
 * a slot, all chunks of the oldest unread batch have been read, and the
 * batch holding that slot is being encoded, which waits for nothing: no
 * deadlock. Memory is the ring (ring x batch patches), the staging rows
 * (batch + 2 bands of embeddings) and one model's activations per encoder,
 * whatever the slide's size. The first failure (a tile that does not
 * decode, the encoder, the file, a cancel) stops every thread and is
 * returned. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compress/compress_internal.h"

double nic__compress_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One batch slot of the ring. */
typedef struct slot {
  int64_t batch;  /* the batch this slot is filled with now */
  int64_t filled; /* patches of it read so far */
} slot;

/* Rows between encoding and writing: a ring of `cap` rows indexed by row
 * number modulo cap. Rows pending at any time lie in the bands touched by
 * the batch being scattered, fewer than batch + 2 * max_band. Only the
 * encoder whose turn it is touches it. */
typedef struct staging {
  int64_t cap;
  float *feats;    /* cap x C */
  float *orient;   /* cap x 8 x C, or NULL */
  int32_t *coords; /* cap x 2 */
  int64_t written; /* rows [0, written) are in the file */
  int band;        /* bands [0, band) are complete */
} staging;

typedef struct pipeline {
  /* set up before the threads start, read-only after */
  nic_compressor *c;
  const nic_slide *slide;
  const nic_features_meta *meta;
  const nic_cell_plan *plan;
  nic_features_writer *w;
  int P, batch, ring;
  int64_t nbatches;
  double ds;          /* level-0 pixels per patch pixel */
  size_t patch_bytes; /* P * P * 3 */
  uint8_t *pix;       /* ring x batch patches */

  /* shared between the threads, under mu */
  pthread_mutex_t mu;
  pthread_cond_t slot_free;   /* a slot moved on to a new batch, or abort */
  pthread_cond_t batch_ready; /* a slot became full, or abort */
  pthread_cond_t turn_moved;  /* a batch was written, or abort */
  slot *slots;
  int64_t next_chunk; /* readers' next chunk */
  int64_t next_batch; /* encoders' next batch */
  int64_t turn;       /* the batch to be written next */
  int abort;
  int failed;
  nic_error err; /* the first failure */
  double read_s, stall_s, encode_s, wait_s, write_s;
  int level; /* the level decoded (-1 until known) */

  staging g; /* see above: the turn holder's */
} pipeline;

/* Patches in batch b. */
static int batch_size(const pipeline *p, int64_t b) {
  int64_t left = p->plan->n - b * p->batch;
  return (int)(left < p->batch ? left : p->batch);
}

static uint8_t *slot_pixels(const pipeline *p, int64_t b) {
  return p->pix + (size_t)(b % p->ring) * (size_t)p->batch * p->patch_bytes;
}

/* Records the first failure and wakes everybody up. Call with mu held. */
static void fail_locked(pipeline *p, const nic_error *err) {
  if (!p->failed) {
    p->err = *err;
    p->failed = 1;
  }
  p->abort = 1;
  pthread_cond_broadcast(&p->slot_free);
  pthread_cond_broadcast(&p->batch_ready);
  pthread_cond_broadcast(&p->turn_moved);
}

/* ---- readers ------------------------------------------------------------------ */

/* Reads the patch at read position s into dst. */
static nic_status read_patch(const pipeline *p, int64_t s, uint8_t *dst, int *level,
                             nic_error *err) {
  int32_t cell = p->plan->cells[p->plan->order[s]];
  int i = cell / p->meta->grid_w, j = cell % p->meta->grid_w;
  /* The exact, fractional corner: the stored coords are its rounding. */
  double x0 = p->meta->origin_x + j * p->meta->stride_level0;
  double y0 = p->meta->origin_y + i * p->meta->stride_level0;
  nic_status st =
      nic_slide_read_region_ds_rgb8(p->slide, x0, y0, p->ds, p->P, p->P, dst, level, err);
  if (st != NIC_OK) {
    char msg[NIC_ERRMSG_MAX];
    memcpy(msg, err->msg, sizeof msg);
    msg[sizeof msg - 1] = '\0';
    nic_err(err, st, "%s (patch at level-0 x %.0f, y %.0f)", msg, x0, y0);
  }
  return st;
}

static void *reader_main(void *arg) {
  pipeline *p = arg;
  const nic_cell_plan *plan = p->plan;
  double read_s = 0, stall_s = 0;
  int level = -1;
  nic_error err = {0};
  pthread_mutex_lock(&p->mu);
  while (!p->abort && p->next_chunk < plan->nchunks) {
    int64_t c = p->next_chunk++;
    int64_t s0 = c ? plan->chunk_end[c - 1] : 0, s1 = plan->chunk_end[c];
    int64_t b = s0 / p->batch;
    slot *sl = &p->slots[b % p->ring];
    double t0 = nic__compress_now();
    while (!p->abort && sl->batch != b) pthread_cond_wait(&p->slot_free, &p->mu);
    stall_s += nic__compress_now() - t0;
    if (p->abort) break;
    pthread_mutex_unlock(&p->mu);

    /* The slot belongs to batch b until all of b is counted in, so the
     * pixels can be written without the lock. */
    uint8_t *base = slot_pixels(p, b);
    nic_status st = NIC_OK;
    t0 = nic__compress_now();
    for (int64_t s = s0; s < s1 && st == NIC_OK; s++)
      st = read_patch(p, s, base + (size_t)(s - b * p->batch) * p->patch_bytes, &level, &err);
    read_s += nic__compress_now() - t0;

    pthread_mutex_lock(&p->mu);
    if (st != NIC_OK) {
      fail_locked(p, &err);
      break;
    }
    sl->filled += s1 - s0;
    if (sl->filled == batch_size(p, b)) pthread_cond_broadcast(&p->batch_ready);
  }
  p->read_s += read_s;
  p->stall_s += stall_s;
  if (level >= 0) p->level = level;
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* ---- staging and writing ------------------------------------------------------- */

static void staging_free(staging *g) {
  free(g->feats);
  free(g->orient);
  free(g->coords);
}

static nic_status staging_init(staging *g, const pipeline *p, nic_error *err) {
  memset(g, 0, sizeof *g);
  int C = p->c->C, O = p->c->o.orientations == NIC_FEATURES_ORIENTATIONS;
  g->cap = p->batch + 2 * p->plan->max_band + 1;
  g->feats = malloc(sizeof(float) * (size_t)g->cap * C);
  g->coords = malloc(sizeof(int32_t) * (size_t)g->cap * 2);
  if (O) g->orient = malloc(sizeof(float) * (size_t)g->cap * NIC_FEATURES_ORIENTATIONS * C);
  if (!g->feats || !g->coords || (O && !g->orient))
    return nic_err(err, NIC_ENOMEM, "out of memory for %lld staging rows", (long long)g->cap);
  return NIC_OK;
}

/* Moves the embeddings of batch b (n patches at read positions b * batch
 * ..), encoded by worker w, to the staging rows they belong to. */
static void scatter(pipeline *p, const nic_encoder_worker *w, int64_t b, int n) {
  staging *g = &p->g;
  int64_t C = p->c->C, OC = NIC_FEATURES_ORIENTATIONS * C;
  for (int i = 0; i < n; i++) {
    int64_t k = p->plan->order[b * p->batch + i], r = k % g->cap;
    memcpy(g->feats + r * C, w->feats + i * C, sizeof(float) * (size_t)C);
    if (g->orient) memcpy(g->orient + r * OC, w->orient + i * OC, sizeof(float) * (size_t)OC);
  }
}

/* Appends staging rows [k0, k1), which do not wrap around the ring. */
static nic_status append_span(pipeline *p, int64_t k0, int64_t k1, nic_error *err) {
  const nic_features_meta *m = p->meta;
  staging *g = &p->g;
  int64_t r0 = k0 % g->cap, C = p->c->C;
  for (int64_t k = k0; k < k1; k++) {
    int32_t cell = p->plan->cells[k];
    int32_t *xy = g->coords + 2 * (r0 + k - k0);
    xy[0] = nic_features_cell_x(m, cell % m->grid_w);
    xy[1] = nic_features_cell_y(m, cell / m->grid_w);
  }
  return nic_features_writer_append(
      p->w, k1 - k0, g->feats + r0 * C, g->coords + 2 * r0,
      g->orient ? g->orient + r0 * NIC_FEATURES_ORIENTATIONS * C : NULL, err);
}

/* Writes every row of the bands that reading has passed (read positions
 * [0, done) are encoded and scattered). */
static nic_status write_complete(pipeline *p, int64_t done, nic_error *err) {
  const nic_cell_plan *plan = p->plan;
  staging *g = &p->g;
  while (g->band < plan->nbands && plan->band_end[g->band] <= done) g->band++;
  int64_t upto = g->band ? plan->band_end[g->band - 1] : 0;
  while (g->written < upto) {
    /* up to the end of the ring, then from its start */
    int64_t room = g->cap - g->written % g->cap;
    int64_t end = upto - g->written < room ? upto : g->written + room;
    nic_status st = append_span(p, g->written, end, err);
    if (st != NIC_OK) return st;
    g->written = end;
  }
  return NIC_OK;
}

/* ---- encoders ------------------------------------------------------------------ */

/* Waits, with mu held, until batch b is read; 0, or -1 on abort. */
static int wait_batch_locked(pipeline *p, int64_t b, double *wait_s) {
  slot *sl = &p->slots[b % p->ring];
  double t0 = nic__compress_now();
  while (!p->abort && sl->filled < batch_size(p, b)) pthread_cond_wait(&p->batch_ready, &p->mu);
  *wait_s += nic__compress_now() - t0;
  return p->abort ? -1 : 0;
}

/* Batch b is encoded (its pixels are no longer needed): hand its slot on
 * to batch b + ring. Call with mu held. */
static void release_slot_locked(pipeline *p, int64_t b) {
  p->slots[b % p->ring].batch = b + p->ring;
  p->slots[b % p->ring].filled = 0;
  pthread_cond_broadcast(&p->slot_free);
}

/* Scatters and writes batch b when its turn comes (every earlier batch is
 * written), in the order of the file. Called and returns with mu held;
 * the writing itself runs unlocked, which is safe because only the turn
 * holder touches the staging rows and the writer. */
static nic_status write_in_turn(pipeline *p, nic_encoder_worker *w, int64_t b, int n,
                                double *write_s, nic_error *err) {
  while (!p->abort && p->turn != b) pthread_cond_wait(&p->turn_moved, &p->mu);
  if (p->abort) return NIC_OK; /* the failure is recorded already */
  pthread_mutex_unlock(&p->mu);
  double t0 = nic__compress_now();
  scatter(p, w, b, n);
  int64_t done = b * p->batch + n;
  nic_status st = write_complete(p, done, err);
  *write_s += nic__compress_now() - t0;
  nic_compressor *c = p->c;
  if (st == NIC_OK && c->o.progress) c->o.progress(c->o.progress_user, done, p->plan->n);
  pthread_mutex_lock(&p->mu);
  p->turn = b + 1;
  pthread_cond_broadcast(&p->turn_moved);
  return st;
}

typedef struct encoder_arg {
  pipeline *p;
  nic_encoder_worker *w;
} encoder_arg;

static void *encoder_main(void *arg) {
  pipeline *p = ((encoder_arg *)arg)->p;
  nic_encoder_worker *w = ((encoder_arg *)arg)->w;
  nic_compressor *c = p->c;
  double encode_s = 0, wait_s = 0, write_s = 0;
  nic_error err = {0};
  pthread_mutex_lock(&p->mu);
  while (!p->abort && p->next_batch < p->nbatches) {
    if (c->o.cancel && *c->o.cancel) {
      nic_err(&err, NIC_EINVAL, "interrupted");
      fail_locked(p, &err);
      break;
    }
    int64_t b = p->next_batch++;
    if (wait_batch_locked(p, b, &wait_s) != 0) break;
    pthread_mutex_unlock(&p->mu);
    int n = batch_size(p, b);
    double t0 = nic__compress_now();
    nic_status st = nic__encode_batch(c, w, slot_pixels(p, b), n, &err);
    encode_s += nic__compress_now() - t0;
    pthread_mutex_lock(&p->mu);
    if (st == NIC_OK) {
      release_slot_locked(p, b);
      st = write_in_turn(p, w, b, n, &write_s, &err);
    }
    if (st != NIC_OK) {
      fail_locked(p, &err);
      break;
    }
  }
  p->encode_s += encode_s;
  p->wait_s += wait_s;
  p->write_s += write_s;
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* ---- the whole ----------------------------------------------------------------- */

static nic_status pipeline_init(pipeline *p, nic_compressor *c, const nic_slide *s,
                                const nic_features_meta *meta, const nic_cell_plan *plan,
                                nic_features_writer *w, nic_error *err) {
  memset(p, 0, sizeof *p);
  p->c = c;
  p->slide = s;
  p->meta = meta;
  p->plan = plan;
  p->w = w;
  p->P = c->P;
  p->batch = c->o.batch;
  p->ring = c->o.ring;
  p->nbatches = (plan->n + p->batch - 1) / p->batch;
  p->ds = meta->stride_level0 / c->P;
  p->patch_bytes = (size_t)c->P * c->P * 3;
  p->level = -1;
  nic_status st = staging_init(&p->g, p, err);
  p->pix = malloc((size_t)p->ring * (size_t)p->batch * p->patch_bytes);
  p->slots = malloc(sizeof(slot) * (size_t)p->ring);
  if (st == NIC_OK && (!p->pix || !p->slots))
    st = nic_err(err, NIC_ENOMEM, "out of memory for %d batches of %d patches", p->ring, p->batch);
  if (st != NIC_OK) return st;
  for (int i = 0; i < p->ring; i++) p->slots[i] = (slot){i, 0};
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->slot_free, NULL);
  pthread_cond_init(&p->batch_ready, NULL);
  pthread_cond_init(&p->turn_moved, NULL);
  return NIC_OK;
}

static void pipeline_free(pipeline *p, int sync_made) {
  if (sync_made) {
    pthread_cond_destroy(&p->slot_free);
    pthread_cond_destroy(&p->batch_ready);
    pthread_cond_destroy(&p->turn_moved);
    pthread_mutex_destroy(&p->mu);
  }
  staging_free(&p->g);
  free(p->pix);
  free(p->slots);
}

/* Starts n threads running fn; returns how many started. */
static int start_threads(pthread_t *tids, int n, void *(*fn)(void *), void *args, size_t arg_size) {
  int i = 0;
  for (; i < n; i++)
    if (pthread_create(&tids[i], NULL, fn, (char *)args + (size_t)i * arg_size) != 0) break;
  return i;
}

nic_status nic__pipeline_run(nic_compressor *c, const nic_slide *s, const nic_features_meta *meta,
                             const nic_cell_plan *plan, nic_features_writer *w,
                             nic_compress_stats *st, nic_error *err) {
  pipeline p;
  nic_status rc = pipeline_init(&p, c, s, meta, plan, w, err);
  if (rc != NIC_OK) {
    pipeline_free(&p, 0);
    return rc;
  }
  int readers = c->o.readers;
  if (readers > plan->nchunks) readers = (int)plan->nchunks;
  int encoders = c->nworkers;
  if (encoders > p.nbatches) encoders = (int)p.nbatches;
  pthread_t *tids = malloc(sizeof(pthread_t) * (size_t)(readers + encoders));
  encoder_arg *eargs = malloc(sizeof(encoder_arg) * (size_t)encoders);
  int nr = 0, ne = 0;
  if (!tids || !eargs) {
    rc = nic_err(err, NIC_ENOMEM, "out of memory for threads");
  } else {
    for (int i = 0; i < encoders; i++) eargs[i] = (encoder_arg){&p, &c->workers[i]};
    nr = start_threads(tids, readers, reader_main, &p, 0);
    /* the calling thread is encoder 0; encoders 1.. get threads */
    if (nr > 0) ne = start_threads(tids + nr, encoders - 1, encoder_main, eargs + 1, sizeof *eargs);
    if (nr == 0) {
      nic_error e;
      nic_err(&e, NIC_ENOMEM, "cannot start reader threads");
      pthread_mutex_lock(&p.mu);
      fail_locked(&p, &e);
      pthread_mutex_unlock(&p.mu);
    } else {
      encoder_main(&eargs[0]);
    }
  }
  /* Everybody ends by itself: on success every chunk is read and every
   * batch written (the calling thread's encoder leaves only when all
   * batches are claimed, so encoder threads that did not start cost speed,
   * not rows); a failure sets abort and wakes every waiting thread. */
  for (int i = 0; i < nr + ne; i++) pthread_join(tids[i], NULL);

  if (rc == NIC_OK && p.failed) {
    if (err) *err = p.err;
    rc = p.err.code ? p.err.code : NIC_EIO;
  } else if (rc == NIC_OK && p.g.written != plan->n) {
    rc = nic_err(err, NIC_EINVAL, "internal error: %lld of %lld rows written",
                 (long long)p.g.written, (long long)plan->n);
  }
  st->read_s = p.read_s;
  st->stall_s = p.stall_s;
  st->encode_s = p.encode_s;
  st->wait_s = p.wait_s;
  st->write_s = p.write_s;
  st->readers = nr;
  st->encoders = nr ? ne + 1 : 0;
  if (p.level >= 0) st->level = p.level;
  free(tids);
  free(eargs);
  pipeline_free(&p, 1);
  return rc;
}
