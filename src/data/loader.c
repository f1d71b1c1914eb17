/* The batch loader: a fixed pool of worker threads decodes, resamples and
 * augments samples into a ring of K preallocated batches; the consumer
 * takes them in order.
 *
 * Scheduling. Each epoch has a sample list (the order) fixed when the epoch
 * starts, from a stream seeded by (seed, epoch). Batch b of the epoch lives
 * in slot b % K. A worker claims the next batch number, waits until its
 * slot is free and due for batch b (the consumer has given back batch
 * b - K), copies the
 * batch's samples into the slot, and fills it without holding the lock.
 * The consumer waits for slot b to be READY with the right number. Sample
 * j of epoch e draws its augmentation from a stream seeded by (seed, e, j),
 * so which thread fills it, and when, changes nothing.
 *
 * Epoch changes. Every start bumps a generation counter. Claims and filled
 * batches of an older generation are dropped; a slot still being filled
 * for an old generation stays busy until its worker notices, so two
 * workers never write one slot.
 *
 * Unreadable items are replaced by another item of the same dataset and
 * class, chosen from a stream seeded by (seed, epoch, j, attempt), so the
 * replacement too is reproducible. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

#define TAG_ORDER 0x0D
#define TAG_REPLACE 0xE7
#define MAX_ATTEMPTS 32     /* reads per sample before its batch fails */
#define SAME_CLASS_TRIES 16 /* replacements from the same class first */
#define MAX_MESSAGES 1000   /* error messages kept (all are counted) */

typedef enum slot_state { SLOT_FREE = 0, SLOT_FILLING, SLOT_READY, SLOT_TAKEN } slot_state;

typedef struct sample {
  int task;
  int64_t item;
} sample;

typedef struct slot {
  nic_batch b;
  int64_t *pos; /* position of each sample in the epoch (its seed) */
  slot_state state;
  int64_t gen, number;
  int64_t expect; /* the batch number it takes next: batches k, k+K, k+2K... in turn */
  nic_error err;  /* why the batch could not be filled, when it could not */
} slot;

/* One dataset's items in the loader's split, grouped: classes 0..K-1 then
 * unlabelled (CLASS datasets), or labelled then unlabelled (VALUE). */
typedef struct task_items {
  int64_t *ordered; /* in dataset order */
  int64_t *items;   /* grouped */
  int64_t *off;     /* ngroups + 1 offsets into items */
  int ngroups;      /* labelled groups are 0..ngroups-2, the last is unlabelled */
  int *nonempty;    /* labelled groups with items (for balanced sampling) */
  int nnonempty;
  uint8_t *reported; /* per dataset item: already reported as unreadable */
} task_items;

struct nic_loader {
  nic_loader_opts o;
  nic_augment aug;
  int has_aug;
  nic_dataset **ds;
  int ntasks;
  task_items *tasks;
  int64_t total;  /* items over all tasks */
  int usable[64]; /* tasks with labelled items (balanced sampling) */
  int nusable;

  /* The current epoch; guarded by mu. */
  sample *order;
  int64_t nsamples, nbatches, epoch, gen;
  int started;
  int64_t next_claim, next_take;
  int taken; /* slot held by the consumer, or -1 */

  slot *slots;
  int K;
  pthread_t *threads;
  int nthreads;
  pthread_mutex_t mu;
  pthread_cond_t cv_work, cv_slot, cv_ready;
  int quit;
  /* Copies of quit and gen that workers read between samples without the
   * lock, to drop a batch nobody will take as soon as possible. */
  atomic_int stopping;
  atomic_llong live_gen;

  char **messages;
  int nmessages, nerrors;
};

nic_loader_opts nic_loader_default_opts(void) {
  nic_loader_opts o;
  memset(&o, 0, sizeof o);
  o.batch_size = 64;
  o.patch_size = 128;
  o.mpp = 0.5;
  o.threads = 2;
  o.sampling = NIC_SAMPLE_SHUFFLE;
  o.split = NIC_SPLIT_ANY;
  return o;
}

/* ---- items and groups ---------------------------------------------------------- */

static int group_of(const nic_dataset *ds, int64_t item) {
  if (ds->kind == NIC_LABEL_VALUE) return isnan(ds->value[item]) ? 1 : 0;
  return ds->label[item] >= 0 ? ds->label[item] : ds->nclasses;
}

static int is_labelled(const nic_dataset *ds, int64_t item) {
  return ds->kind == NIC_LABEL_VALUE ? !isnan(ds->value[item]) : ds->label[item] >= 0;
}

/* Collects the items of `split` of one dataset, grouped (counting sort,
 * so each group keeps dataset order). */
static nic_status build_task(task_items *t, const nic_dataset *ds, int split, nic_error *err) {
  t->ngroups = ds->kind == NIC_LABEL_VALUE ? 2 : ds->nclasses + 1;
  t->off = calloc((size_t)t->ngroups + 1, sizeof(int64_t));
  t->reported = calloc((size_t)(ds->n > 0 ? ds->n : 1), 1);
  if (!t->off || !t->reported) return nic_err(err, NIC_ENOMEM, "loader: out of memory");
  for (int64_t i = 0; i < ds->n; i++)
    if (split == NIC_SPLIT_ANY || ds->split[i] == split) t->off[group_of(ds, i) + 1]++;
  for (int g = 0; g < t->ngroups; g++) t->off[g + 1] += t->off[g];
  int64_t n = t->off[t->ngroups];
  t->ordered = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
  t->items = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
  t->nonempty = malloc(sizeof(int) * (size_t)t->ngroups);
  int64_t *fill = malloc(sizeof(int64_t) * (size_t)t->ngroups);
  if (!t->ordered || !t->items || !t->nonempty || !fill) {
    free(fill);
    return nic_err(err, NIC_ENOMEM, "loader: out of memory");
  }
  memcpy(fill, t->off, sizeof(int64_t) * (size_t)t->ngroups);
  int64_t k = 0;
  for (int64_t i = 0; i < ds->n; i++)
    if (split == NIC_SPLIT_ANY || ds->split[i] == split) {
      t->ordered[k++] = i;
      t->items[fill[group_of(ds, i)]++] = i;
    }
  free(fill);
  for (int g = 0; g < t->ngroups - 1; g++)
    if (t->off[g + 1] > t->off[g]) t->nonempty[t->nnonempty++] = g;
  return NIC_OK;
}

static int64_t task_count(const task_items *t) {
  return t->off[t->ngroups];
}
static int64_t task_labelled(const task_items *t) {
  return t->off[t->ngroups - 1];
}

/* ---- the epoch's order ------------------------------------------------------ */

/* Balanced: a dataset with labelled items uniformly, then one of its
 * non-empty labelled groups (classes) uniformly, then an item uniformly. */
static sample draw_balanced(const nic_loader *l, nic_rng *rng) {
  int t = l->usable[nic_rng_below(rng, (uint64_t)l->nusable)];
  const task_items *ti = &l->tasks[t];
  int g = ti->nonempty[nic_rng_below(rng, (uint64_t)ti->nnonempty)];
  int64_t k = ti->off[g] + (int64_t)nic_rng_below(rng, (uint64_t)(ti->off[g + 1] - ti->off[g]));
  return (sample){t, ti->items[k]};
}

/* Fills l->order for `epoch`. Called with mu held (workers read the order
 * only under it). */
static void make_order(nic_loader *l, int64_t epoch) {
  nic_rng rng;
  nic_rng_seed(&rng, data_mix_seed(l->o.seed, TAG_ORDER, (uint64_t)epoch, 0));
  if (l->o.sampling == NIC_SAMPLE_BALANCED) {
    for (int64_t j = 0; j < l->nsamples; j++) l->order[j] = draw_balanced(l, &rng);
    return;
  }
  /* Every item once: the datasets in turn, each in its own order... */
  int64_t j = 0;
  for (int t = 0; t < l->ntasks; t++)
    for (int64_t k = 0; k < task_count(&l->tasks[t]); k++)
      l->order[j++] = (sample){t, l->tasks[t].ordered[k]};
  /* ... then, for SHUFFLE, a Fisher-Yates permutation. */
  if (l->o.sampling == NIC_SAMPLE_SHUFFLE)
    for (int64_t a = l->nsamples - 1; a > 0; a--) {
      int64_t b = (int64_t)nic_rng_below(&rng, (uint64_t)a + 1);
      sample s = l->order[a];
      l->order[a] = l->order[b];
      l->order[b] = s;
    }
}

/* ---- filling a batch ----------------------------------------------------------- */

/* Records that an item could not be read: once per item, in the message
 * list, then through the callback (outside the lock, so the callback may
 * call back into the loader). */
static void report(nic_loader *l, int t, int64_t item, const char *msg) {
  char name[1024];
  nic_dataset_item_name(l->ds[t], item, name, sizeof name);
  pthread_mutex_lock(&l->mu);
  int first = !l->tasks[t].reported[item];
  if (first) {
    l->tasks[t].reported[item] = 1;
    l->nerrors++;
    if (l->nmessages < MAX_MESSAGES) {
      size_t len = strlen(name) + strlen(msg) + 3;
      char *m = malloc(len);
      char **grown = realloc(l->messages, sizeof(char *) * (size_t)(l->nmessages + 1));
      if (grown) l->messages = grown;
      if (m && grown) {
        snprintf(m, len, "%s: %s", name, msg);
        l->messages[l->nmessages++] = m;
      } else {
        free(m);
      }
    }
  }
  pthread_mutex_unlock(&l->mu);
  if (first && l->o.on_error) l->o.on_error(l->o.on_error_user, name, msg);
}

/* Another item for a sample whose item failed: from the same class first,
 * then from anywhere in the dataset's split. */
static int64_t replacement(const nic_loader *l, int t, int64_t item, int64_t epoch, int64_t j,
                           int attempt) {
  const task_items *ti = &l->tasks[t];
  nic_rng rng;
  nic_rng_seed(&rng, data_mix_seed(l->o.seed, TAG_REPLACE, (uint64_t)epoch,
                                   (uint64_t)j * MAX_ATTEMPTS + (uint64_t)attempt));
  int g = group_of(l->ds[t], item);
  int64_t lo = 0, hi = task_count(ti);
  if (attempt < SAME_CLASS_TRIES) lo = ti->off[g], hi = ti->off[g + 1];
  return ti->items[lo + (int64_t)nic_rng_below(&rng, (uint64_t)(hi - lo))];
}

/* One sample: read, resample (with the drawn zoom) and augment into out. */
static nic_status load_one(const nic_loader *l, int t, int64_t item, int64_t epoch, int64_t j,
                           uint8_t *out, nic_error *err) {
  const nic_dataset *ds = l->ds[t];
  nic_rng rng;
  nic_rng_seed(&rng, nic_data_sample_seed(l->o.seed, epoch, j));
  aug_draw d;
  if (l->has_aug) aug_draw_params(&l->aug, &rng, &d);
  uint8_t *px;
  int w, h;
  nic_status s = nic_dataset_read(ds, item, &px, &w, &h, err);
  if (s != NIC_OK) return s;
  s = nic_patch_from_image(px, w, h, ds->mpp, out, l->o.patch_size, l->o.mpp,
                           l->has_aug ? d.zoom : 1.0, err);
  free(px);
  if (s == NIC_OK && l->has_aug) s = aug_apply(&d, &rng, out, l->o.patch_size, err);
  return s;
}

/* Fills every sample of a claimed slot. Runs without the lock: it touches
 * only the slot, the datasets (thread-safe reads) and report(). Stops
 * early when the loader is being freed or the epoch restarted (the batch
 * is then dropped anyway). */
static nic_status fill_slot(nic_loader *l, slot *sl, int64_t epoch, int64_t gen) {
  nic_batch *b = &sl->b;
  size_t patch = (size_t)b->size * (size_t)b->size * 3;
  for (int i = 0; i < b->n; i++) {
    if (atomic_load(&l->stopping) || atomic_load(&l->live_gen) != gen) return NIC_OK;
    int t = b->task[i];
    int64_t item = b->item[i];
    nic_error e = {0};
    int attempt = 0;
    while (load_one(l, t, item, epoch, sl->pos[i], b->pixels + (size_t)i * patch, &e) != NIC_OK) {
      report(l, t, item, e.msg);
      if (++attempt >= MAX_ATTEMPTS)
        return nic_err(&sl->err, NIC_EIO,
                       "loader: %d unreadable items in a row for sample %lld of epoch %lld "
                       "(last: %s)",
                       MAX_ATTEMPTS, (long long)sl->pos[i], (long long)epoch, e.msg);
      item = replacement(l, t, b->item[i], epoch, sl->pos[i], attempt);
    }
    const nic_dataset *ds = l->ds[t];
    b->item[i] = item;
    b->label[i] = ds->kind == NIC_LABEL_CLASS ? ds->label[item] : -1;
    b->value[i] = ds->kind == NIC_LABEL_VALUE ? ds->value[item] : NAN;
  }
  for (int t = 0; t < b->ntasks; t++)
    for (int i = 0; i < b->n; i++)
      b->mask[(size_t)t * (size_t)b->n + (size_t)i] =
          b->task[i] == t && is_labelled(l->ds[t], b->item[i]) ? 1.0f : 0.0f;
  return NIC_OK;
}

/* Takes batch `number` of the current epoch into a free slot. With mu held. */
static void claim_slot(nic_loader *l, slot *sl, int64_t number) {
  int64_t first = number * l->o.batch_size;
  int64_t n = l->nsamples - first < l->o.batch_size ? l->nsamples - first : l->o.batch_size;
  sl->state = SLOT_FILLING;
  sl->gen = l->gen;
  sl->number = number;
  sl->expect = number + l->K;
  memset(&sl->err, 0, sizeof sl->err);
  sl->b.n = (int)n;
  sl->b.epoch = l->epoch;
  sl->b.index = number;
  for (int64_t i = 0; i < n; i++) {
    sl->b.task[i] = l->order[first + i].task;
    sl->b.item[i] = l->order[first + i].item;
    sl->pos[i] = first + i;
  }
}

static void *worker(void *arg) {
  nic_loader *l = arg;
  pthread_mutex_lock(&l->mu);
  for (;;) {
    while (!l->quit && !(l->started && l->next_claim < l->nbatches))
      pthread_cond_wait(&l->cv_work, &l->mu);
    if (l->quit) break;
    int64_t number = l->next_claim++, gen = l->gen;
    slot *sl = &l->slots[number % l->K];
    /* Free is not enough: with more workers than slots, a later claim on
     * the same slot must not overtake this one (the consumer waits for
     * this number there). */
    while (!l->quit && l->gen == gen && !(sl->state == SLOT_FREE && sl->expect == number))
      pthread_cond_wait(&l->cv_slot, &l->mu);
    if (l->quit) break;
    if (l->gen != gen) continue; /* the epoch changed while waiting: drop the claim */
    claim_slot(l, sl, number);
    int64_t epoch = l->epoch;
    pthread_mutex_unlock(&l->mu);
    fill_slot(l, sl, epoch, gen); /* a failure is kept in sl->err for the consumer */
    pthread_mutex_lock(&l->mu);
    sl->state = l->gen == gen ? SLOT_READY : SLOT_FREE;
    pthread_cond_broadcast(&l->cv_ready);
    pthread_cond_broadcast(&l->cv_slot);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

/* ---- the consumer's side ------------------------------------------------------ */

nic_status nic_loader_start_epoch(nic_loader *l, int64_t epoch, nic_error *err) {
  if (epoch < 0) return nic_err(err, NIC_EINVAL, "loader: negative epoch %lld", (long long)epoch);
  pthread_mutex_lock(&l->mu);
  l->gen++;
  atomic_store(&l->live_gen, l->gen);
  l->epoch = epoch;
  l->started = 1;
  make_order(l, epoch);
  l->next_claim = l->next_take = 0;
  l->taken = -1;
  /* Finished batches of the old epoch are dropped; slots being filled
   * stay busy until their workers see the new generation. */
  for (int k = 0; k < l->K; k++) {
    if (l->slots[k].state == SLOT_READY || l->slots[k].state == SLOT_TAKEN)
      l->slots[k].state = SLOT_FREE;
    l->slots[k].expect = k;
  }
  pthread_cond_broadcast(&l->cv_work);
  pthread_cond_broadcast(&l->cv_slot);
  pthread_mutex_unlock(&l->mu);
  return NIC_OK;
}

nic_status nic_loader_next(nic_loader *l, const nic_batch **batch, nic_error *err) {
  *batch = NULL;
  pthread_mutex_lock(&l->mu);
  if (!l->started) {
    pthread_mutex_unlock(&l->mu);
    return nic_err(err, NIC_EINVAL, "loader: call nic_loader_start_epoch first");
  }
  if (l->taken >= 0) { /* give the previous batch back */
    l->slots[l->taken].state = SLOT_FREE;
    l->taken = -1;
    pthread_cond_broadcast(&l->cv_slot);
  }
  if (l->next_take >= l->nbatches) {
    pthread_mutex_unlock(&l->mu);
    return NIC_OK;
  }
  int64_t number = l->next_take++;
  int k = (int)(number % l->K);
  slot *sl = &l->slots[k];
  if (l->nthreads == 0) {
    /* No workers: fill it here (the slot is free, the previous batch in
     * it having been given back above). */
    l->next_claim = number + 1;
    claim_slot(l, sl, number);
    int64_t epoch = l->epoch, gen = l->gen;
    pthread_mutex_unlock(&l->mu);
    fill_slot(l, sl, epoch, gen);
    pthread_mutex_lock(&l->mu);
  } else {
    while (!(sl->state == SLOT_READY && sl->gen == l->gen && sl->number == number))
      pthread_cond_wait(&l->cv_ready, &l->mu);
  }
  nic_status s = sl->err.code;
  if (s != NIC_OK) {
    if (err) *err = sl->err;
    sl->state = SLOT_FREE;
    pthread_cond_broadcast(&l->cv_slot);
  } else {
    sl->state = SLOT_TAKEN;
    l->taken = k;
    *batch = &sl->b;
  }
  pthread_mutex_unlock(&l->mu);
  return s;
}

int64_t nic_loader_epoch_samples(const nic_loader *l) {
  return l->nsamples;
}
int64_t nic_loader_epoch_batches(const nic_loader *l) {
  return l->nbatches;
}

int nic_loader_num_errors(const nic_loader *l) {
  nic_loader *m = (nic_loader *)l; /* the lock is not part of the logical state */
  pthread_mutex_lock(&m->mu);
  int n = m->nerrors;
  pthread_mutex_unlock(&m->mu);
  return n;
}

void nic_loader_error(const nic_loader *l, int k, char *buf, size_t n) {
  nic_loader *m = (nic_loader *)l;
  pthread_mutex_lock(&m->mu);
  if (k >= 0 && k < m->nmessages)
    snprintf(buf, n, "%s", m->messages[k]);
  else if (k >= 0 && k < m->nerrors)
    snprintf(buf, n, "(message not kept)");
  else if (n)
    buf[0] = '\0';
  pthread_mutex_unlock(&m->mu);
}

/* ---- creation and shutdown ------------------------------------------------------ */

static void free_slot(slot *sl) {
  free(sl->b.pixels);
  free(sl->b.task);
  free(sl->b.item);
  free(sl->b.label);
  free(sl->b.value);
  free(sl->b.mask);
  free(sl->pos);
}

static int alloc_slot(slot *sl, const nic_loader *l) {
  size_t B = (size_t)l->o.batch_size, S = (size_t)l->o.patch_size;
  sl->b.size = l->o.patch_size;
  sl->b.ntasks = l->ntasks;
  sl->b.pixels = malloc(B * S * S * 3);
  sl->b.task = malloc(sizeof(int) * B);
  sl->b.item = malloc(sizeof(int64_t) * B);
  sl->b.label = malloc(sizeof(int) * B);
  sl->b.value = malloc(sizeof(float) * B);
  sl->b.mask = malloc(sizeof(float) * B * (size_t)l->ntasks);
  sl->pos = malloc(sizeof(int64_t) * B);
  return sl->b.pixels && sl->b.task && sl->b.item && sl->b.label && sl->b.value && sl->b.mask &&
                 sl->pos
             ? 0
             : -1;
}

static nic_status check_opts(const nic_loader_opts *o, int ntasks, nic_error *err) {
  if (ntasks < 1 || ntasks > 64)
    return nic_err(err, NIC_EINVAL, "loader: %d datasets (1 to 64)", ntasks);
  if (o->batch_size < 1 || o->batch_size > 65536)
    return nic_err(err, NIC_EINVAL, "loader: batch size %d", o->batch_size);
  if (o->patch_size < 1 || o->patch_size > 4096)
    return nic_err(err, NIC_EINVAL, "loader: patch size %d", o->patch_size);
  if (!(o->mpp > 0)) return nic_err(err, NIC_EINVAL, "loader: spacing %g um/px", o->mpp);
  if (o->threads < 0 || o->threads > 256)
    return nic_err(err, NIC_EINVAL, "loader: %d threads", o->threads);
  if (o->prefetch < 0 || o->prefetch > 1024)
    return nic_err(err, NIC_EINVAL, "loader: prefetch %d", o->prefetch);
  if (o->sampling < NIC_SAMPLE_SEQUENTIAL || o->sampling > NIC_SAMPLE_BALANCED)
    return nic_err(err, NIC_EINVAL, "loader: unknown sampling %d", (int)o->sampling);
  if (o->split != NIC_SPLIT_ANY && (o->split < NIC_SPLIT_NONE || o->split > NIC_SPLIT_TEST))
    return nic_err(err, NIC_EINVAL, "loader: unknown split %d", o->split);
  if (o->epoch_size < 0)
    return nic_err(err, NIC_EINVAL, "loader: epoch size %lld", (long long)o->epoch_size);
  return NIC_OK;
}

nic_status nic_loader_create(nic_loader **out, nic_dataset *const *datasets, int ntasks,
                             const nic_loader_opts *opts, nic_error *err) {
  *out = NULL;
  nic_loader_opts o = opts ? *opts : nic_loader_default_opts();
  nic_status s = check_opts(&o, ntasks, err);
  if (s != NIC_OK) return s;
  if (o.augment && (s = aug_check(o.augment, err)) != NIC_OK) return s;
  nic_loader *l = calloc(1, sizeof *l);
  if (!l) return nic_err(err, NIC_ENOMEM, "loader: out of memory");
  l->o = o;
  l->o.augment = NULL; /* copied below; the caller's struct is not kept */
  l->has_aug = o.augment != NULL;
  if (o.augment) l->aug = *o.augment;
  l->ntasks = ntasks;
  l->taken = -1;
  atomic_init(&l->stopping, 0);
  atomic_init(&l->live_gen, 0);
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->cv_work, NULL);
  pthread_cond_init(&l->cv_slot, NULL);
  pthread_cond_init(&l->cv_ready, NULL);
  l->ds = malloc(sizeof(nic_dataset *) * (size_t)ntasks);
  l->tasks = calloc((size_t)ntasks, sizeof(task_items));
  if (!l->ds || !l->tasks) {
    s = nic_err(err, NIC_ENOMEM, "loader: out of memory");
    goto fail;
  }
  for (int t = 0; t < ntasks; t++) {
    if (!datasets[t]) {
      s = nic_err(err, NIC_EINVAL, "loader: dataset %d is NULL", t);
      goto fail;
    }
    l->ds[t] = datasets[t];
    if ((s = build_task(&l->tasks[t], datasets[t], o.split, err)) != NIC_OK) goto fail;
    l->total += task_count(&l->tasks[t]);
    if (task_labelled(&l->tasks[t]) > 0) l->usable[l->nusable++] = t;
  }
  if (l->total == 0) {
    s = nic_err(err, NIC_EINVAL, "loader: no items%s",
                o.split == NIC_SPLIT_ANY ? "" : " in the split");
    goto fail;
  }
  if (o.sampling == NIC_SAMPLE_BALANCED && l->nusable == 0) {
    s = nic_err(err, NIC_EINVAL, "loader: balanced sampling needs labelled items");
    goto fail;
  }
  l->nsamples = o.sampling == NIC_SAMPLE_BALANCED && o.epoch_size > 0 ? o.epoch_size : l->total;
  l->nbatches =
      o.drop_last ? l->nsamples / o.batch_size : (l->nsamples + o.batch_size - 1) / o.batch_size;
  l->order = malloc(sizeof(sample) * (size_t)l->nsamples);
  l->K = o.prefetch > 0 ? o.prefetch : (2 * o.threads > 2 ? 2 * o.threads : 2);
  l->slots = calloc((size_t)l->K, sizeof(slot));
  if (!l->order || !l->slots) {
    s = nic_err(err, NIC_ENOMEM, "loader: out of memory");
    goto fail;
  }
  for (int k = 0; k < l->K; k++)
    if (alloc_slot(&l->slots[k], l)) {
      s = nic_err(err, NIC_ENOMEM, "loader: out of memory for %d batches of %d patches", l->K,
                  o.batch_size);
      goto fail;
    }
  l->threads = calloc((size_t)(o.threads > 0 ? o.threads : 1), sizeof(pthread_t));
  if (!l->threads) {
    s = nic_err(err, NIC_ENOMEM, "loader: out of memory");
    goto fail;
  }
  for (int i = 0; i < o.threads; i++) {
    if (pthread_create(&l->threads[i], NULL, worker, l) != 0) {
      s = nic_err(err, NIC_EINVAL, "loader: cannot start worker thread %d", i + 1);
      goto fail;
    }
    l->nthreads++;
  }
  *out = l;
  return NIC_OK;
fail:
  nic_loader_free(l);
  return s;
}

void nic_loader_free(nic_loader *l) {
  if (!l) return;
  pthread_mutex_lock(&l->mu);
  l->quit = 1;
  atomic_store(&l->stopping, 1);
  pthread_cond_broadcast(&l->cv_work);
  pthread_cond_broadcast(&l->cv_slot);
  pthread_mutex_unlock(&l->mu);
  for (int i = 0; i < l->nthreads; i++) pthread_join(l->threads[i], NULL);
  free(l->threads);
  if (l->slots)
    for (int k = 0; k < l->K; k++) free_slot(&l->slots[k]);
  free(l->slots);
  if (l->tasks)
    for (int t = 0; t < l->ntasks; t++) {
      free(l->tasks[t].ordered);
      free(l->tasks[t].items);
      free(l->tasks[t].nonempty);
      free(l->tasks[t].off);
      free(l->tasks[t].reported);
    }
  free(l->tasks);
  free(l->ds);
  free(l->order);
  for (int k = 0; k < l->nmessages; k++) free(l->messages[k]);
  free(l->messages);
  pthread_cond_destroy(&l->cv_work);
  pthread_cond_destroy(&l->cv_slot);
  pthread_cond_destroy(&l->cv_ready);
  pthread_mutex_destroy(&l->mu);
  free(l);
}
