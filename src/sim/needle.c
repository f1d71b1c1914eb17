/* needle-mnist: the nMNIST "needles in haystacks" data set of Pawlowski et
 * al. (2019). A canvas is black with digits pasted on it; a positive holds
 * exactly one digit of the target class among N distractors of the other
 * nine classes, a negative holds N+1 distractors and no target.
 *
 * Placement: the canvas is cut into a g x g grid of cells, g = floor(S/28),
 * so every cell is at least 28 px wide; the digits go into distinct cells
 * drawn at random, each at a random offset inside its cell. Digits thus
 * never overlap, placement costs O(cells) whatever N is, and positions are
 * not stuck to a 28 px lattice. */
#include <stdlib.h>
#include <string.h>

#include "sim/sim_internal.h"

/* Purposes of the random streams (first key after the seed). */
enum { STREAM_LABELS = 1, STREAM_CANVAS = 2 };

static const int needle_sizes[][2] = {{64, 2},     {128, 6},     {256, 25},    {512, 100},
                                      {1024, 400}, {2048, 1600}, {4096, 6400}, {6144, 14400}};
#define NSIZES ((int)(sizeof needle_sizes / sizeof needle_sizes[0]))

nic_needle_opts nic_needle_default_opts(void) {
  nic_needle_opts o = {0};
  o.size = 256;
  o.distractors = -1;
  o.target = 3;
  o.count = 100;
  o.seed = 1;
  return o;
}

int nic_needle_default_distractors(int size) {
  for (int i = 0; i < NSIZES; i++)
    if (needle_sizes[i][0] == size) return needle_sizes[i][1];
  return -1;
}

static int grid_side(int size, int digit) {
  return size / digit;
}

static int distractors_of(const nic_needle_opts *o) {
  return o->distractors >= 0 ? o->distractors : nic_needle_default_distractors(o->size);
}

nic_status nic_needle_check(const nic_needle_opts *o, nic_error *err) {
  if (nic_needle_default_distractors(o->size) < 0)
    return nic_err(err, NIC_EINVAL,
                   "canvas size %d not allowed (64, 128, 256, 512, 1024, 2048, 4096 or 6144)",
                   o->size);
  if (o->target < 0 || o->target > 9)
    return nic_err(err, NIC_EINVAL, "target class %d is not a digit 0..9", o->target);
  if (o->count < 1) return nic_err(err, NIC_EINVAL, "need at least one canvas");
  int g = grid_side(o->size, 28);
  int n = distractors_of(o);
  if ((int64_t)n + 1 > (int64_t)g * g)
    return nic_err(err, NIC_EINVAL,
                   "%d distractors + 1 digits do not fit a %d px canvas (at most %d digits, "
                   "one per %dx%d cell)",
                   n, o->size, g * g, o->size / g, o->size / g);
  return NIC_OK;
}

nic_status nic_needle_labels(const nic_needle_opts *o, int *labels, nic_error *err) {
  if (o->count < 1) return nic_err(err, NIC_EINVAL, "need at least one canvas");
  for (int i = 0; i < o->count; i++) labels[i] = i < o->count / 2;
  nic_rng r;
  sim_rng(&r, o->seed, STREAM_LABELS, 0, 0);
  sim_shuffle_int(&r, labels, o->count);
  return NIC_OK;
}

/* A random sample of class cls: rejection over the whole set (about 10
 * tries for balanced classes), then a scan, so that a set lacking the class
 * fails instead of looping. */
static int pick_sample(nic_rng *r, const nic_digits *d, int cls) {
  for (int t = 0; t < 1000; t++) {
    int i = (int)nic_rng_below(r, (uint64_t)d->n);
    if (d->labels[i] == cls) return i;
  }
  int start = (int)nic_rng_below(r, (uint64_t)d->n);
  for (int k = 0; k < d->n; k++) {
    int i = (start + k) % d->n;
    if (d->labels[i] == cls) return i;
  }
  return -1;
}

void nic_needle_canvas_free(nic_needle_canvas *c) {
  if (!c) return;
  free(c->digits);
  free(c->pixels);
  memset(c, 0, sizeof *c);
}

/* Copies digit `sample` to (x, y). Cells are disjoint, so a plain copy. */
static void paste(uint8_t *canvas, int size, const nic_digits *d, int sample, int x, int y) {
  const uint8_t *src = d->pixels + (size_t)sample * d->rows * d->cols;
  for (int r = 0; r < d->rows; r++)
    memcpy(canvas + (size_t)(y + r) * size + x, src + (size_t)r * d->cols, (size_t)d->cols);
}

nic_status nic_needle_render(const nic_needle_opts *o, const nic_digits *d, int index, int label,
                             nic_needle_canvas *c, nic_error *err) {
  memset(c, 0, sizeof *c);
  nic_status s = nic_needle_check(o, err);
  if (s != NIC_OK) return s;
  if (!d || d->n < 1 || d->rows < 1 || d->cols < 1 || d->rows > o->size / 2 ||
      d->cols > o->size / 2)
    return nic_err(err, NIC_EINVAL, "empty digit set or digits too large for the canvas");
  int dig = d->rows > d->cols ? d->rows : d->cols;
  int g = grid_side(o->size, dig > 28 ? dig : 28);
  int ncell = g * g, ndig = distractors_of(o) + 1;
  if (ndig > ncell) return nic_err(err, NIC_EINVAL, "%d digits do not fit %d cells", ndig, ncell);
  int *cells = malloc(sizeof(int) * (size_t)ncell);
  c->digits = malloc(sizeof(nic_needle_digit) * (size_t)ndig);
  c->pixels = calloc((size_t)o->size * o->size, 1);
  if (!cells || !c->digits || !c->pixels) {
    free(cells);
    nic_needle_canvas_free(c);
    return nic_err(err, NIC_ENOMEM, "out of memory for a %d px canvas", o->size);
  }
  c->size = o->size;
  c->label = label ? 1 : 0;
  c->target_x = c->target_y = -1;
  nic_rng r;
  sim_rng(&r, o->seed, STREAM_CANVAS, (uint64_t)index, (uint64_t)c->label);
  /* The first ndig entries of a partial Fisher-Yates are distinct random cells. */
  for (int i = 0; i < ncell; i++) cells[i] = i;
  for (int i = 0; i < ndig; i++) {
    int j = i + (int)nic_rng_below(&r, (uint64_t)(ncell - i));
    int t = cells[i];
    cells[i] = cells[j];
    cells[j] = t;
  }
  for (int k = 0; k < ndig; k++) {
    int cx = cells[k] % g, cy = cells[k] / g;
    /* Cell edges at floor(i*S/g): widths differ by at most 1, all >= dig. */
    int x0 = (int)((int64_t)cx * o->size / g), x1 = (int)((int64_t)(cx + 1) * o->size / g);
    int y0 = (int)((int64_t)cy * o->size / g), y1 = (int)((int64_t)(cy + 1) * o->size / g);
    int x = x0 + (int)nic_rng_below(&r, (uint64_t)(x1 - x0 - d->cols + 1));
    int y = y0 + (int)nic_rng_below(&r, (uint64_t)(y1 - y0 - d->rows + 1));
    /* Cells come in random order, so making the first one the target
     * puts the needle at a uniformly random place. */
    int cls;
    if (c->label && k == 0) {
      cls = o->target;
    } else {
      cls = (int)nic_rng_below(&r, 9);
      if (cls >= o->target) cls++; /* any class but the target */
    }
    int sample = pick_sample(&r, d, cls);
    if (sample < 0) {
      free(cells);
      nic_needle_canvas_free(c);
      return nic_err(err, NIC_EINVAL, "the digit set has no samples of class %d", cls);
    }
    paste(c->pixels, o->size, d, sample, x, y);
    c->digits[k] = (nic_needle_digit){x, y, cls, sample};
    if (c->label && k == 0) {
      c->target_x = x;
      c->target_y = y;
    }
  }
  c->ndigits = ndig;
  free(cells);
  return NIC_OK;
}

nic_status nic_needle_generate(const nic_needle_opts *o, const nic_digits *d, const char *outdir,
                               nic_error *err) {
  nic_status s = nic_needle_check(o, err);
  if (s != NIC_OK) return s;
  const char *prefix = o->prefix ? o->prefix : "nmnist";
  char path[4096], lpath[4096], npath[4096];
  if ((s = sim_mkdirs(outdir, err)) != NIC_OK) return s;
  if ((s = sim_path(lpath, sizeof lpath, err, "%s/labels.csv", outdir)) != NIC_OK) return s;
  if ((s = sim_path(npath, sizeof npath, err, "%s/needles.csv", outdir)) != NIC_OK) return s;
  int *labels = malloc(sizeof(int) * (size_t)o->count);
  if (!labels) return nic_err(err, NIC_ENOMEM, "out of memory");
  FILE *lf = NULL, *nf = NULL;
  nic_needle_canvas c = {0};
  if ((s = nic_needle_labels(o, labels, err)) != NIC_OK) goto done;
  if ((s = sim_fopen(&lf, lpath, "w", err)) != NIC_OK) goto done;
  if ((s = sim_fopen(&nf, npath, "w", err)) != NIC_OK) goto done;
  fprintf(lf, "case_id,slide_id,label\n");
  fprintf(nf, "slide_id,label,target_x,target_y,digits\n");
  for (int i = 0; i < o->count; i++) {
    char id[256];
    snprintf(id, sizeof id, "%s_%05d", prefix, i);
    if ((s = nic_needle_render(o, d, i, labels[i], &c, err)) != NIC_OK) goto done;
    if ((s = sim_path(path, sizeof path, err, "%s/%s.png", outdir, id)) != NIC_OK) goto done;
    /* zlib level 3: the canvases are mostly zeros, and level 6 is slower for
     * next to no gain on them. */
    s = sim_png_write(path, c.pixels, c.size, c.size, 1, (size_t)c.size, 3, err);
    if (s != NIC_OK) goto done;
    fprintf(lf, "%s,%s,%d\n", id, id, c.label);
    fprintf(nf, "%s,%d,%d,%d,%d\n", id, c.label, c.target_x, c.target_y, c.ndigits);
    nic_needle_canvas_free(&c);
    if (o->progress) o->progress(o->progress_user, i + 1, o->count);
  }
done:
  nic_needle_canvas_free(&c);
  free(labels);
  if (nf) {
    nic_status s2 = sim_fclose(nf, npath, s == NIC_OK ? err : NULL);
    if (s == NIC_OK) s = s2;
  }
  if (lf) {
    nic_status s2 = sim_fclose(lf, lpath, s == NIC_OK ? err : NULL);
    if (s == NIC_OK) s = s2;
  }
  return s;
}
