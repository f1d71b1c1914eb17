/* Tasks, and cohorts: a labels CSV in CLAM's convention joined with a
 * folder of compressed slides. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "slidemodel/sm_internal.h"

static const char *const task_names[] = {"binary", "multiclass", "regression", "survival"};
static const char *const main_metrics[] = {"auc", "auc", "spearman", "c_index"};

const char *nic_task_name(nic_task t) {
  return (unsigned)t < 4 ? task_names[t] : "unknown";
}

const char *nic_task_main_metric(nic_task t) {
  return (unsigned)t < 4 ? main_metrics[t] : "unknown";
}

nic_status nic_task_from_name(const char *name, nic_task *t, nic_error *err) {
  for (int i = 0; name && i < 4; i++)
    if (!strcmp(name, task_names[i])) {
      *t = (nic_task)i;
      return NIC_OK;
    }
  return nic_err(err, NIC_EINVAL,
                 "unknown task '%s' (expected binary, multiclass, regression or survival)",
                 name ? name : "(null)");
}

nic_cohort_opts nic_cohort_default_opts(void) {
  nic_cohort_opts o;
  memset(&o, 0, sizeof o);
  return o;
}

void nic_cohort_free(nic_cohort *c) {
  if (!c) return;
  for (int i = 0; i < c->n; i++) {
    free(c->slides[i].case_id);
    free(c->slides[i].slide_id);
    free(c->slides[i].path);
    free(c->slides[i].label);
  }
  free(c->slides);
  for (int i = 0; i < c->num_classes; i++) free(c->class_names[i]);
  free(c->class_names);
  memset(c, 0, sizeof *c);
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The distinct labels become the classes, sorted; each slide gets its index. */
static nic_status assign_classes(nic_cohort *c, const char *path, int any, nic_error *err) {
  char **names = malloc(sizeof *names * (size_t)c->n);
  if (!names) return nic_err(err, NIC_ENOMEM, "out of memory");
  int k = 0;
  for (int i = 0; i < c->n; i++) names[i] = c->slides[i].label;
  qsort(names, (size_t)c->n, sizeof *names, cmp_str);
  for (int i = 0; i < c->n; i++)
    if (k == 0 || strcmp(names[k - 1], names[i])) names[k++] = names[i];
  if (any) {
    /* labels of slides to predict: whatever classes they hold */
  } else if (c->task == NIC_TASK_BINARY && k != 2) {
    free(names);
    return nic_err(err, NIC_EFORMAT,
                   "%s: a binary task needs exactly two classes, the labels have %d", path, k);
  } else if (k < 2) {
    free(names);
    return nic_err(err, NIC_EFORMAT, "%s: a classification task needs two classes or more", path);
  }
  sm_sort_names(names, k);
  c->class_names = calloc((size_t)k, sizeof *c->class_names);
  if (!c->class_names) {
    free(names);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  c->num_classes = k;
  c->ordinal = 1;
  for (int j = 0; j < k; j++) {
    if (!(c->class_names[j] = sm_strdup(names[j]))) {
      free(names);
      return nic_err(err, NIC_ENOMEM, "out of memory");
    }
    if (!sm_is_integer(names[j])) c->ordinal = 0;
  }
  free(names);
  for (int i = 0; i < c->n; i++)
    for (int j = 0; j < k; j++)
      if (!strcmp(c->slides[i].label, c->class_names[j])) c->slides[i].cls = j;
  return NIC_OK;
}

/* Reads the task's columns of one row into e (ids already set). */
static nic_status parse_row(const sm_csv *t, int r, nic_task task, int lc, int tc, int ec,
                            const char *path, nic_cohort_slide *e, nic_error *err) {
  const char *lab = lc >= 0 ? sm_csv_get(t, r, lc) : "";
  if (!(e->label = sm_strdup(lab))) return nic_err(err, NIC_ENOMEM, "out of memory");
  e->cls = -1;
  e->value = NAN;
  e->event = -1;
  int line = t->line[r];
  switch (task) {
  case NIC_TASK_BINARY:
  case NIC_TASK_MULTICLASS:
    if (!*lab) return nic_err(err, NIC_EFORMAT, "%s: line %d: the label is empty", path, line);
    break;
  case NIC_TASK_REGRESSION:
    if (!sm_parse_double(lab, &e->value))
      return nic_err(err, NIC_EFORMAT, "%s: line %d: regression label '%s' is not a number", path,
                     line, lab);
    break;
  case NIC_TASK_SURVIVAL: {
    const char *ts = sm_csv_get(t, r, tc), *es = sm_csv_get(t, r, ec);
    double ev;
    if (!sm_parse_double(ts, &e->value) || e->value < 0)
      return nic_err(err, NIC_EFORMAT, "%s: line %d: time '%s' is not a number >= 0", path, line,
                     ts);
    if (!sm_parse_double(es, &ev) || (ev != 0 && ev != 1))
      return nic_err(err, NIC_EFORMAT, "%s: line %d: event '%s' is not 0 or 1", path, line, es);
    e->event = (int)ev;
    break;
  }
  }
  return NIC_OK;
}

static int find_col(const sm_csv *t, const char *name, const char *path, nic_error *err) {
  int j = sm_csv_col(t, name);
  if (j < 0) nic_err(err, NIC_EFORMAT, "%s: no column '%s' in the header", path, name);
  return j;
}

nic_status nic_cohort_load(nic_cohort *c, const char *labels_csv, const char *features_dir,
                           nic_task task, const nic_cohort_opts *opts, nic_error *err) {
  memset(c, 0, sizeof *c);
  nic_cohort_opts o = opts ? *opts : nic_cohort_default_opts();
  if ((unsigned)task > NIC_TASK_SURVIVAL) return nic_err(err, NIC_EINVAL, "unknown task %d", task);
  c->task = task;
  sm_csv t;
  nic_status st = sm_csv_read(&t, labels_csv, err);
  if (st != NIC_OK) return st;
  int cc = find_col(&t, "case_id", labels_csv, err), sc = -1, lc = -1, tc = -1, ec = -1;
  if (cc >= 0) sc = find_col(&t, "slide_id", labels_csv, err);
  if (sc >= 0) {
    if (task == NIC_TASK_SURVIVAL) {
      tc = find_col(&t, o.time_col ? o.time_col : "time", labels_csv, err);
      if (tc >= 0) ec = find_col(&t, o.event_col ? o.event_col : "event", labels_csv, err);
      lc = sm_csv_col(&t, o.label_col ? o.label_col : "label"); /* optional */
    } else {
      lc = find_col(&t, o.label_col ? o.label_col : "label", labels_csv, err);
    }
  }
  if (cc < 0 || sc < 0 || (task == NIC_TASK_SURVIVAL ? ec < 0 : lc < 0)) {
    sm_csv_free(&t);
    return NIC_EFORMAT;
  }
  c->slides = calloc((size_t)t.nrows, sizeof *c->slides);
  if (!c->slides) {
    sm_csv_free(&t);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  char path[4096];
  for (int r = 1; r < t.nrows && st == NIC_OK; r++) {
    const char *cid = sm_csv_get(&t, r, cc), *sid = sm_csv_get(&t, r, sc);
    if (!*cid || !*sid) {
      st = nic_err(err, NIC_EFORMAT, "%s: line %d: empty %s", labels_csv, t.line[r],
                   *cid ? "slide_id" : "case_id");
      break;
    }
    if (strchr(sid, '/')) {
      st = nic_err(err, NIC_EFORMAT, "%s: line %d: slide_id '%s' contains '/'", labels_csv,
                   t.line[r], sid);
      break;
    }
    for (int i = 0; i < c->n; i++)
      if (!strcmp(c->slides[i].slide_id, sid)) {
        st = nic_err(err, NIC_EFORMAT, "%s: line %d: slide '%s' is listed twice", labels_csv,
                     t.line[r], sid);
        break;
      }
    if (st != NIC_OK) break;
    nic_cohort_slide e;
    memset(&e, 0, sizeof e);
    st = parse_row(&t, r, task, lc, tc, ec, labels_csv, &e, err);
    if (st == NIC_OK && features_dir) {
      snprintf(path, sizeof path, "%s/%s.h5", features_dir, sid);
      if (!file_exists(path)) {
        if (o.warn) {
          char msg[4200];
          snprintf(msg, sizeof msg, "%s: no features file for slide '%s' (skipped)", path, sid);
          o.warn(o.warn_user, msg);
        }
        c->skipped++;
        free(e.label);
        continue;
      }
      if (!(e.path = sm_strdup(path))) st = nic_err(err, NIC_ENOMEM, "out of memory");
    }
    if (st == NIC_OK) {
      e.case_id = sm_strdup(cid);
      e.slide_id = sm_strdup(sid);
      if (!e.case_id || !e.slide_id) st = nic_err(err, NIC_ENOMEM, "out of memory");
    }
    c->slides[c->n++] = e; /* owned by c from here, even on failure */
  }
  sm_csv_free(&t);
  if (st == NIC_OK && c->n == 0)
    st = nic_err(err, NIC_EINVAL, "%s: no labelled slide%s", labels_csv,
                 features_dir ? " has a features file" : "");
  if (st == NIC_OK && (task == NIC_TASK_BINARY || task == NIC_TASK_MULTICLASS))
    st = assign_classes(c, labels_csv, o.any_classes, err);
  if (st != NIC_OK) nic_cohort_free(c);
  return st;
}

/* One .h5 file as a cohort of one. */
static nic_status scan_file(nic_cohort *c, const char *path, nic_error *err) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  size_t len = strlen(base);
  if (len <= 3 || strcmp(base + len - 3, ".h5") != 0)
    return nic_err(err, NIC_EINVAL, "%s: not a directory or a .h5 file", path);
  c->slides = calloc(1, sizeof *c->slides);
  if (!c->slides) return nic_err(err, NIC_ENOMEM, "out of memory");
  nic_cohort_slide *e = &c->slides[c->n++];
  e->slide_id = sm_strdup(base);
  e->case_id = sm_strdup(base);
  e->label = sm_strdup("");
  e->path = sm_strdup(path);
  e->cls = -1;
  e->value = NAN;
  e->event = -1;
  if (!e->slide_id || !e->case_id || !e->label || !e->path) {
    nic_cohort_free(c);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  e->slide_id[len - 3] = e->case_id[len - 3] = 0;
  return NIC_OK;
}

nic_status nic_cohort_scan(nic_cohort *c, const char *features_dir, nic_error *err) {
  memset(c, 0, sizeof *c);
  c->task = NIC_TASK_BINARY;
  struct stat sb;
  if (stat(features_dir, &sb) != 0)
    return nic_err(err, NIC_EIO, "%s: no such file or directory", features_dir);
  if (S_ISREG(sb.st_mode)) return scan_file(c, features_dir, err);
  DIR *d = opendir(features_dir);
  if (!d) return nic_err(err, NIC_EIO, "%s: cannot open directory", features_dir);
  char **names = NULL;
  int n = 0, cap = 0;
  nic_status st = NIC_OK;
  struct dirent *de;
  while ((de = readdir(d)) != NULL && st == NIC_OK) {
    size_t len = strlen(de->d_name);
    if (len <= 3 || strcmp(de->d_name + len - 3, ".h5") != 0) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      char **q = realloc(names, sizeof *q * (size_t)cap);
      if (!q) {
        st = nic_err(err, NIC_ENOMEM, "out of memory");
        break;
      }
      names = q;
    }
    if (!(names[n] = sm_strdup(de->d_name)))
      st = nic_err(err, NIC_ENOMEM, "out of memory");
    else
      names[n++][len - 3] = 0;
  }
  closedir(d);
  if (st == NIC_OK && n == 0) st = nic_err(err, NIC_EINVAL, "%s: no .h5 files", features_dir);
  if (st == NIC_OK) {
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    c->slides = calloc((size_t)n, sizeof *c->slides);
    if (!c->slides) st = nic_err(err, NIC_ENOMEM, "out of memory");
  }
  char path[4096];
  for (int i = 0; i < n && st == NIC_OK; i++) {
    nic_cohort_slide *e = &c->slides[c->n++];
    snprintf(path, sizeof path, "%s/%s.h5", features_dir, names[i]);
    e->slide_id = sm_strdup(names[i]);
    e->case_id = sm_strdup(names[i]);
    e->label = sm_strdup("");
    e->path = sm_strdup(path);
    e->cls = -1;
    e->value = NAN;
    e->event = -1;
    if (!e->slide_id || !e->case_id || !e->label || !e->path)
      st = nic_err(err, NIC_ENOMEM, "out of memory");
  }
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
  if (st != NIC_OK) nic_cohort_free(c);
  return st;
}
