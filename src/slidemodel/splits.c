/* Splits: k folds at case level, stratified, and CLAM's splits_<i>.csv
 * files.
 *
 * A case (patient) may have several slides; they always travel together, so
 * that no patient is in the training and the test set of a fold. Cases are
 * grouped into strata (class, event, or value quartile), shuffled within a
 * stratum, and dealt round robin over the folds, continuing the deal from
 * one stratum to the next so that the fold sizes stay within one case. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "slidemodel/sm_internal.h"

void nic_splits_free(nic_splits *s) {
  if (!s) return;
  for (int f = 0; f < s->k && s->folds; f++) {
    free(s->folds[f].train);
    free(s->folds[f].val);
    free(s->folds[f].test);
  }
  free(s->folds);
  memset(s, 0, sizeof *s);
}

/* ---- cases -------------------------------------------------------------------- */

typedef struct sm_cases {
  int n;        /* cases */
  int *of;      /* slide -> case */
  int *stratum; /* case -> stratum */
  int nstrata;
} sm_cases;

static void cases_free(sm_cases *k) {
  free(k->of);
  free(k->stratum);
}

typedef struct name_ix {
  const char *name;
  int ix;
} name_ix;

static int cmp_name_ix(const void *a, const void *b) {
  const name_ix *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : x->ix - y->ix;
}

typedef struct val_ix {
  double v;
  int ix;
} val_ix;

static int cmp_val_ix(const void *a, const void *b) {
  const val_ix *x = a, *y = b;
  return x->v < y->v ? -1 : x->v > y->v ? 1 : x->ix - y->ix;
}

/* Groups the slides into cases (numbered by first appearance) and gives
 * each case its stratum. */
static nic_status make_cases(const nic_cohort *c, sm_cases *k, nic_error *err) {
  memset(k, 0, sizeof *k);
  int n = c->n;
  name_ix *ni = malloc(sizeof *ni * (size_t)n);
  int *first = malloc(sizeof *first * (size_t)n); /* case id -> first slide */
  k->of = malloc(sizeof *k->of * (size_t)n);
  k->stratum = calloc((size_t)n, sizeof *k->stratum);
  double *sum = calloc((size_t)n, sizeof *sum);
  int *cnt = calloc((size_t)n, sizeof *cnt);
  if (!ni || !first || !k->of || !k->stratum || !sum || !cnt) {
    free(ni), free(first), free(sum), free(cnt);
    cases_free(k);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  for (int i = 0; i < n; i++) ni[i] = (name_ix){c->slides[i].case_id, i};
  qsort(ni, (size_t)n, sizeof *ni, cmp_name_ix);
  /* the first slide of each case (sorted by slide index within a name) */
  for (int i = 0; i < n; i++) {
    int head = (i > 0 && !strcmp(ni[i].name, ni[i - 1].name)) ? k->of[ni[i - 1].ix] : -1;
    k->of[ni[i].ix] = head < 0 ? ni[i].ix : head; /* temporarily: the case's first slide */
  }
  /* number cases by first appearance */
  for (int i = 0; i < n; i++) first[i] = -1;
  for (int i = 0; i < n; i++) {
    int f = k->of[i];
    if (first[f] < 0) first[f] = k->n++;
    k->of[i] = first[f];
  }
  for (int i = 0; i < n; i++) {
    const nic_cohort_slide *e = &c->slides[i];
    int q = k->of[i];
    switch (c->task) {
    case NIC_TASK_BINARY:
    case NIC_TASK_MULTICLASS:
      if (e->cls > k->stratum[q]) k->stratum[q] = e->cls; /* CLAM's "max" voting */
      break;
    case NIC_TASK_SURVIVAL:
      if (e->event > k->stratum[q]) k->stratum[q] = e->event;
      break;
    case NIC_TASK_REGRESSION:
      sum[q] += e->value;
      cnt[q]++;
      break;
    }
  }
  k->nstrata = c->task == NIC_TASK_SURVIVAL ? 2 : c->num_classes > 0 ? c->num_classes : 1;
  if (c->task == NIC_TASK_REGRESSION) {
    /* quartiles of the case means, by rank */
    val_ix *vi = malloc(sizeof *vi * (size_t)k->n);
    if (!vi) {
      free(ni), free(first), free(sum), free(cnt);
      cases_free(k);
      return nic_err(err, NIC_ENOMEM, "out of memory");
    }
    for (int q = 0; q < k->n; q++) vi[q] = (val_ix){sum[q] / (cnt[q] ? cnt[q] : 1), q};
    qsort(vi, (size_t)k->n, sizeof *vi, cmp_val_ix);
    k->nstrata = k->n >= 8 ? 4 : 1;
    for (int r = 0; r < k->n; r++) k->stratum[vi[r].ix] = (int)((int64_t)r * k->nstrata / k->n);
    free(vi);
  }
  free(ni), free(first), free(sum), free(cnt);
  return NIC_OK;
}

static void shuffle(int *a, int n, nic_rng *r) {
  for (int i = n - 1; i > 0; i--) {
    int j = (int)nic_rng_below(r, (uint64_t)i + 1);
    int t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

/* Slides of the cases marked `want` in part[], in slide order. */
static int *collect(const nic_cohort *c, const sm_cases *k, const int *part, int want, int *count) {
  int n = 0;
  for (int i = 0; i < c->n; i++) n += part[k->of[i]] == want;
  int *out = malloc(sizeof *out * (size_t)(n ? n : 1));
  if (!out) return NULL;
  n = 0;
  for (int i = 0; i < c->n; i++)
    if (part[k->of[i]] == want) out[n++] = i;
  *count = n;
  return out;
}

/* Marks a stratified val_frac of the cases with part == 0 (training) as
 * validation (part = 1). At least one case of each stratum with two or more
 * training cases goes to validation when val_frac > 0, so that the
 * validation metric is defined. */
static nic_status pick_val(const sm_cases *k, int *part, double val_frac, nic_rng *r,
                           nic_error *err) {
  if (val_frac <= 0) return NIC_OK;
  int *ids = malloc(sizeof *ids * (size_t)k->n);
  if (!ids) return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int s = 0; s < k->nstrata; s++) {
    int m = 0;
    for (int q = 0; q < k->n; q++)
      if (part[q] == 0 && k->stratum[q] == s) ids[m++] = q;
    shuffle(ids, m, r);
    int take = (int)floor(val_frac * m + 0.5);
    if (take == 0 && m >= 2) take = 1;
    if (take >= m) take = m > 1 ? m - 1 : 0; /* keep one for training */
    for (int i = 0; i < take; i++) part[ids[i]] = 1;
  }
  free(ids);
  return NIC_OK;
}

/* Fills a fold from a case partition (0 train, 1 val, 2 test). */
static nic_status fill_fold(const nic_cohort *c, const sm_cases *k, const int *part, nic_fold *f,
                            nic_error *err) {
  f->train = collect(c, k, part, 0, &f->ntrain);
  f->val = collect(c, k, part, 1, &f->nval);
  f->test = collect(c, k, part, 2, &f->ntest);
  if (!f->train || !f->val || !f->test) return nic_err(err, NIC_ENOMEM, "out of memory");
  return NIC_OK;
}

nic_status nic_splits_kfold(const nic_cohort *c, int k, double val_frac, uint64_t seed,
                            nic_splits *s, nic_error *err) {
  memset(s, 0, sizeof *s);
  if (val_frac < 0 || val_frac >= 1)
    return nic_err(err, NIC_EINVAL, "validation fraction %g is not in [0, 1)", val_frac);
  sm_cases cs;
  nic_status st = make_cases(c, &cs, err);
  if (st != NIC_OK) return st;
  if (k < 2 || k > cs.n) {
    cases_free(&cs);
    return nic_err(err, NIC_EINVAL, "%d folds need 2 to %d (the number of cases)", k, cs.n);
  }
  int *fold_of = malloc(sizeof *fold_of * (size_t)cs.n);
  int *ids = malloc(sizeof *ids * (size_t)cs.n);
  int *part = malloc(sizeof *part * (size_t)cs.n);
  s->folds = calloc((size_t)k, sizeof *s->folds);
  if (!fold_of || !ids || !part || !s->folds) {
    st = nic_err(err, NIC_ENOMEM, "out of memory");
    goto done;
  }
  s->k = k;
  nic_rng r;
  nic_rng_seed(&r, seed);
  int deal = 0;
  for (int st_ix = 0; st_ix < cs.nstrata; st_ix++) {
    int m = 0;
    for (int q = 0; q < cs.n; q++)
      if (cs.stratum[q] == st_ix) ids[m++] = q;
    shuffle(ids, m, &r);
    for (int i = 0; i < m; i++) fold_of[ids[i]] = deal++ % k;
  }
  for (int f = 0; f < k && st == NIC_OK; f++) {
    for (int q = 0; q < cs.n; q++) part[q] = fold_of[q] == f ? 2 : 0;
    nic_rng rv;
    nic_rng_seed(&rv, sm_mix(seed ^ sm_mix((uint64_t)f + 1)));
    st = pick_val(&cs, part, val_frac, &rv, err);
    if (st == NIC_OK) st = fill_fold(c, &cs, part, &s->folds[f], err);
  }
done:
  free(fold_of), free(ids), free(part);
  cases_free(&cs);
  if (st != NIC_OK) nic_splits_free(s);
  return st;
}

nic_status nic_splits_single(const nic_cohort *c, double val_frac, uint64_t seed, nic_splits *s,
                             nic_error *err) {
  memset(s, 0, sizeof *s);
  if (val_frac < 0 || val_frac >= 1)
    return nic_err(err, NIC_EINVAL, "validation fraction %g is not in [0, 1)", val_frac);
  sm_cases cs;
  nic_status st = make_cases(c, &cs, err);
  if (st != NIC_OK) return st;
  int *part = calloc((size_t)cs.n, sizeof *part);
  s->folds = calloc(1, sizeof *s->folds);
  if (!part || !s->folds) st = nic_err(err, NIC_ENOMEM, "out of memory");
  if (st == NIC_OK) {
    s->k = 1;
    nic_rng r;
    nic_rng_seed(&r, sm_mix(seed));
    st = pick_val(&cs, part, val_frac, &r, err);
  }
  if (st == NIC_OK) st = fill_fold(c, &cs, part, &s->folds[0], err);
  free(part);
  cases_free(&cs);
  if (st != NIC_OK) nic_splits_free(s);
  return st;
}

/* ---- files ------------------------------------------------------------------------ */

static const char *id_at(const nic_cohort *c, const int *ix, int n, int r) {
  return r < n ? c->slides[ix[r]].slide_id : "";
}

nic_status nic_splits_save(const nic_splits *s, const nic_cohort *c, const char *dir,
                           nic_error *err) {
  nic_status st = sm_mkdirs(dir, err);
  char path[4096];
  for (int f = 0; f < s->k && st == NIC_OK; f++) {
    const nic_fold *fd = &s->folds[f];
    snprintf(path, sizeof path, "%s/splits_%d.csv", dir, f);
    sm_out o;
    if ((st = sm_out_open(&o, path, err)) != NIC_OK) break;
    /* pandas' DataFrame.to_csv: an unnamed index column first */
    fputs(",train,val,test\n", o.f);
    int rows = fd->ntrain;
    if (fd->nval > rows) rows = fd->nval;
    if (fd->ntest > rows) rows = fd->ntest;
    for (int r = 0; r < rows; r++) {
      fprintf(o.f, "%d,", r);
      sm_csv_put(o.f, id_at(c, fd->train, fd->ntrain, r));
      fputc(',', o.f);
      sm_csv_put(o.f, id_at(c, fd->val, fd->nval, r));
      fputc(',', o.f);
      sm_csv_put(o.f, id_at(c, fd->test, fd->ntest, r));
      fputc('\n', o.f);
    }
    st = sm_out_commit(&o, err);
  }
  return st;
}

/* Cohort slide of an id, via the sorted index; -1 when absent. */
static int lookup(const name_ix *sorted, int n, const char *id) {
  int lo = 0, hi = n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    int c = strcmp(sorted[mid].name, id);
    if (c == 0) return sorted[mid].ix;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return -1;
}

static void warnf(nic_sm_warn_fn warn, void *user, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void warnf(nic_sm_warn_fn warn, void *user, const char *fmt, ...) {
  if (!warn) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  warn(user, msg);
}

/* Reads one splits file into f. */
static nic_status load_one(const char *path, const nic_cohort *c, const name_ix *sorted,
                           nic_fold *f, nic_sm_warn_fn warn, void *user, nic_error *err) {
  sm_csv t;
  nic_status st = sm_csv_read(&t, path, err);
  if (st != NIC_OK) return st;
  static const char *const names[3] = {"train", "val", "test"};
  int col[3];
  for (int j = 0; j < 3; j++)
    if ((col[j] = sm_csv_col(&t, names[j])) < 0) {
      sm_csv_free(&t);
      return nic_err(err, NIC_EFORMAT, "%s: no column '%s' in the header", path, names[j]);
    }
  int *where = malloc(sizeof *where * (size_t)c->n); /* slide -> column + 1 */
  int *lists[3] = {NULL, NULL, NULL}, counts[3] = {0, 0, 0};
  for (int j = 0; j < 3; j++) lists[j] = malloc(sizeof(int) * (size_t)(t.nrows + 1));
  if (!where || !lists[0] || !lists[1] || !lists[2]) {
    st = nic_err(err, NIC_ENOMEM, "out of memory");
    goto done;
  }
  memset(where, 0, sizeof *where * (size_t)c->n);
  int unknown = 0;
  const char *first_unknown = NULL;
  for (int r = 1; r < t.nrows && st == NIC_OK; r++)
    for (int j = 0; j < 3; j++) {
      const char *id = sm_csv_get(&t, r, col[j]);
      if (!*id) continue;
      int i = lookup(sorted, c->n, id);
      if (i < 0) {
        if (!unknown++) first_unknown = id;
        continue;
      }
      if (where[i]) {
        st = nic_err(err, NIC_EFORMAT, "%s: line %d: slide '%s' is in '%s' and '%s'", path,
                     t.line[r], id, names[where[i] - 1], names[j]);
        break;
      }
      where[i] = j + 1;
      lists[j][counts[j]++] = i;
    }
  if (st == NIC_OK && unknown)
    warnf(warn, user, "%s: %d slide id%s not in the cohort (no label or features file), e.g. '%s'",
          path, unknown, unknown > 1 ? "s" : "", first_unknown);
  if (st == NIC_OK) {
    /* case-level leakage: a case with slides in train and test */
    for (int a = 0; a < counts[2]; a++) {
      const char *cid = c->slides[lists[2][a]].case_id;
      for (int b = 0; b < counts[0]; b++)
        if (!strcmp(c->slides[lists[0][b]].case_id, cid)) {
          warnf(warn, user, "%s: case '%s' has slides in both train and test", path, cid);
          b = counts[0];
          a = counts[2];
        }
    }
    f->train = lists[0], f->ntrain = counts[0];
    f->val = lists[1], f->nval = counts[1];
    f->test = lists[2], f->ntest = counts[2];
    lists[0] = lists[1] = lists[2] = NULL;
  }
done:
  free(where);
  for (int j = 0; j < 3; j++) free(lists[j]);
  sm_csv_free(&t);
  return st;
}

nic_status nic_splits_load(nic_splits *s, const nic_cohort *c, const char *dir, nic_sm_warn_fn warn,
                           void *warn_user, nic_error *err) {
  memset(s, 0, sizeof *s);
  char path[4096];
  struct stat sb;
  int k = 0;
  for (;; k++) {
    snprintf(path, sizeof path, "%s/splits_%d.csv", dir, k);
    if (stat(path, &sb) != 0) break;
  }
  if (k == 0) return nic_err(err, NIC_EIO, "%s: no splits_0.csv", dir);
  name_ix *sorted = malloc(sizeof *sorted * (size_t)c->n);
  s->folds = calloc((size_t)k, sizeof *s->folds);
  if (!sorted || !s->folds) {
    free(sorted);
    free(s->folds);
    s->folds = NULL;
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  for (int i = 0; i < c->n; i++) sorted[i] = (name_ix){c->slides[i].slide_id, i};
  qsort(sorted, (size_t)c->n, sizeof *sorted, cmp_name_ix);
  s->k = k;
  nic_status st = NIC_OK;
  for (int f = 0; f < k && st == NIC_OK; f++) {
    snprintf(path, sizeof path, "%s/splits_%d.csv", dir, f);
    st = load_one(path, c, sorted, &s->folds[f], warn, warn_user, err);
    if (st == NIC_OK && s->folds[f].ntrain == 0)
      st = nic_err(err, NIC_EFORMAT, "%s: no training slide of the cohort", path);
  }
  free(sorted);
  if (st != NIC_OK) nic_splits_free(s);
  return st;
}
