/* Predictions CSV files: slide_id,label,score... written by `nic predict`
 * and `nic train` (out-of-fold), read by `nic eval`. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "slidemodel/sm_internal.h"

void nic_preds_free(nic_preds *p) {
  if (!p) return;
  for (int i = 0; i < p->n; i++) {
    if (p->slide_id) free(p->slide_id[i]);
    if (p->label) free(p->label[i]);
  }
  int nc = p->task == NIC_TASK_MULTICLASS ? p->k : 2;
  for (int i = 0; p->class_names && i < nc; i++) free(p->class_names[i]);
  free(p->class_names);
  free(p->slide_id), free(p->label), free(p->cls), free(p->value), free(p->score);
  free(p->time), free(p->event), free(p->fold);
  memset(p, 0, sizeof *p);
}

nic_status nic_preds_alloc(nic_preds *p, nic_task task, int n, int k, nic_error *err) {
  memset(p, 0, sizeof *p);
  if (n < 0 || k < 1) return nic_err(err, NIC_EINVAL, "bad predictions size %d x %d", n, k);
  p->task = task;
  p->n = n;
  p->k = k;
  size_t N = (size_t)(n ? n : 1);
  p->slide_id = calloc(N, sizeof *p->slide_id);
  p->label = calloc(N, sizeof *p->label);
  p->cls = malloc(sizeof *p->cls * N);
  p->value = malloc(sizeof *p->value * N);
  p->score = calloc(N * (size_t)k, sizeof *p->score);
  p->time = malloc(sizeof *p->time * N);
  p->event = malloc(sizeof *p->event * N);
  p->fold = malloc(sizeof *p->fold * N);
  if (!p->slide_id || !p->label || !p->cls || !p->value || !p->score || !p->time || !p->event ||
      !p->fold) {
    nic_preds_free(p);
    return nic_err(err, NIC_ENOMEM, "out of memory");
  }
  for (int i = 0; i < n; i++) {
    p->cls[i] = -1;
    p->value[i] = p->time[i] = NAN;
    p->event[i] = -1;
    p->fold[i] = -1;
  }
  return NIC_OK;
}

/* ---- writing ------------------------------------------------------------------ */

static void put_num(FILE *f, double v) {
  if (isfinite(v)) fprintf(f, "%.9g", v);
}

nic_status nic_preds_write(const nic_preds *p, const char *path, nic_error *err) {
  sm_out o;
  nic_status st = sm_out_open(&o, path, err);
  if (st != NIC_OK) return st;
  FILE *f = o.f;
  fputs("slide_id,label", f);
  if (p->task == NIC_TASK_MULTICLASS) {
    for (int c = 0; c < p->k; c++) {
      char name[600];
      snprintf(name, sizeof name, "score_%s", p->class_names ? p->class_names[c] : "");
      if (!p->class_names) snprintf(name, sizeof name, "score_%d", c);
      fputc(',', f);
      sm_csv_put(f, name);
    }
  } else {
    fputs(",score", f);
  }
  if (p->task == NIC_TASK_SURVIVAL) fputs(",time,event", f);
  if (p->has_fold) fputs(",fold", f);
  fputc('\n', f);
  for (int i = 0; i < p->n; i++) {
    sm_csv_put(f, p->slide_id[i]);
    fputc(',', f);
    sm_csv_put(f, p->label[i] ? p->label[i] : "");
    for (int c = 0; c < p->k; c++) {
      fputc(',', f);
      put_num(f, p->score[(size_t)i * p->k + c]);
    }
    if (p->task == NIC_TASK_SURVIVAL) {
      fputc(',', f);
      put_num(f, p->time[i]);
      fputc(',', f);
      if (p->event[i] >= 0) fprintf(f, "%d", p->event[i]);
    }
    if (p->has_fold) {
      fputc(',', f);
      if (p->fold[i] >= 0) fprintf(f, "%d", p->fold[i]);
    }
    fputc('\n', f);
  }
  return sm_out_commit(&o, err);
}

/* ---- reading ------------------------------------------------------------------ */

/* Infers the task of a single-score file from its labels: names, or two
 * distinct numbers scored in [0, 1] (0/1, 1/2, ...), are binary; other
 * numbers regression. */
static nic_task infer_task(const sm_csv *t, int lc, int sc) {
  int numeric = 1, any = 0, distinct = 0, unit = 1;
  const char *a = NULL, *b = NULL;
  for (int r = 1; r < t->nrows && lc >= 0; r++) {
    const char *s = sm_csv_get(t, r, lc);
    double v, score;
    if (sm_parse_double(sm_csv_get(t, r, sc), &score) && (score < 0 || score > 1)) unit = 0;
    if (!*s) continue;
    any = 1;
    if (!sm_parse_double(s, &v)) numeric = 0;
    if (!a)
      a = s, distinct = 1;
    else if (strcmp(a, s) && (!b || strcmp(b, s))) {
      if (!b)
        b = s, distinct = 2;
      else
        distinct = 3;
    }
  }
  if (!any || !numeric) return NIC_TASK_BINARY;
  return distinct <= 2 && unit ? NIC_TASK_BINARY : NIC_TASK_REGRESSION;
}

/* Binary classes from the labels: 0/1, or two names sorted as the
 * training code sorts them (the second is the positive class). */
static nic_status binary_classes(nic_preds *p, const char *path, nic_error *err) {
  char *names[3] = {NULL, NULL, NULL};
  int k = 0, numeric01 = 1;
  for (int i = 0; i < p->n; i++) {
    const char *s = p->label[i];
    if (!*s) continue;
    if (strcmp(s, "0") && strcmp(s, "1")) numeric01 = 0;
    int seen = 0;
    for (int j = 0; j < k; j++) seen |= !strcmp(names[j], s);
    if (seen) continue;
    if (k == 2)
      return nic_err(err, NIC_EFORMAT, "%s: more than two labels for a binary task", path);
    names[k++] = (char *)s;
  }
  if (numeric01) {
    names[0] = "0";
    names[1] = "1";
    k = 2;
  } else if (k == 1) {
    return nic_err(err, NIC_EFORMAT,
                   "%s: one label ('%s') only: cannot tell which class the score is for", path,
                   names[0]);
  }
  if (k == 0) return NIC_OK;
  sm_sort_names(names, 2);
  p->class_names = calloc(2, sizeof *p->class_names);
  if (!p->class_names) return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int j = 0; j < 2; j++)
    if (!(p->class_names[j] = sm_strdup(names[j])))
      return nic_err(err, NIC_ENOMEM, "out of memory");
  for (int i = 0; i < p->n; i++)
    for (int j = 0; j < 2; j++)
      if (!strcmp(p->label[i], p->class_names[j])) p->cls[i] = j;
  return NIC_OK;
}

static nic_status bad_num(const char *path, int line, const char *what, const char *s,
                          nic_error *err) {
  return nic_err(err, NIC_EFORMAT, "%s: line %d: %s '%s' is not a number", path, line, what, s);
}

nic_status nic_preds_read(nic_preds *p, const char *path, int task, nic_error *err) {
  memset(p, 0, sizeof *p);
  sm_csv t;
  nic_status st = sm_csv_read(&t, path, err);
  if (st != NIC_OK) return st;
  int ic = sm_csv_col(&t, "slide_id"), lc = sm_csv_col(&t, "label"), sc = sm_csv_col(&t, "score");
  int tc = sm_csv_col(&t, "time"), ec = sm_csv_col(&t, "event"), fc = sm_csv_col(&t, "fold");
  int scol[SM_ABMIL_MAX_DIM], k = 0;
  for (int j = 0; j < t.ncols && k < SM_ABMIL_MAX_DIM; j++)
    if (!strncmp(t.cell[j], "score_", 6)) scol[k++] = j;
  if (ic < 0)
    st = nic_err(err, NIC_EFORMAT, "%s: no column 'slide_id' in the header", path);
  else if (sc < 0 && k == 0)
    st = nic_err(err, NIC_EFORMAT, "%s: no 'score' column in the header", path);
  if (st == NIC_OK && task < 0)
    task = (tc >= 0 && ec >= 0) ? NIC_TASK_SURVIVAL
           : (sc < 0 && k >= 2) ? NIC_TASK_MULTICLASS
                                : (int)infer_task(&t, lc, sc);
  if (st == NIC_OK && task > NIC_TASK_SURVIVAL)
    st = nic_err(err, NIC_EINVAL, "unknown task %d", task);
  if (st == NIC_OK && task == NIC_TASK_MULTICLASS && k < 2)
    st = nic_err(err, NIC_EFORMAT, "%s: a multiclass file needs score_<class> columns", path);
  if (st == NIC_OK && task != NIC_TASK_MULTICLASS && sc < 0)
    st =
        nic_err(err, NIC_EFORMAT, "%s: no 'score' column for a %s task", path, nic_task_name(task));
  if (st == NIC_OK && task == NIC_TASK_SURVIVAL && (tc < 0 || ec < 0))
    st = nic_err(err, NIC_EFORMAT, "%s: a survival file needs 'time' and 'event' columns", path);
  if (st == NIC_OK)
    st = nic_preds_alloc(p, (nic_task)task, t.nrows - 1, task == NIC_TASK_MULTICLASS ? k : 1, err);
  if (st != NIC_OK) {
    sm_csv_free(&t);
    return st;
  }
  p->has_fold = fc >= 0;
  if (task == NIC_TASK_MULTICLASS) {
    if (!(p->class_names = calloc((size_t)k, sizeof *p->class_names)))
      st = nic_err(err, NIC_ENOMEM, "out of memory");
    for (int c = 0; c < k && st == NIC_OK; c++)
      if (!(p->class_names[c] = sm_strdup(t.cell[scol[c]] + 6)))
        st = nic_err(err, NIC_ENOMEM, "out of memory");
  }
  for (int r = 1; r < t.nrows && st == NIC_OK; r++) {
    int i = r - 1, line = t.line[r];
    const char *lab = lc >= 0 ? sm_csv_get(&t, r, lc) : "";
    p->slide_id[i] = sm_strdup(sm_csv_get(&t, r, ic));
    p->label[i] = sm_strdup(lab);
    if (!p->slide_id[i] || !p->label[i]) {
      st = nic_err(err, NIC_ENOMEM, "out of memory");
      break;
    }
    for (int c = 0; c < p->k && st == NIC_OK; c++) {
      const char *s = sm_csv_get(&t, r, task == NIC_TASK_MULTICLASS ? scol[c] : sc);
      if (!sm_parse_double(s, &p->score[(size_t)i * p->k + c]))
        st = bad_num(path, line, "score", s, err);
    }
    if (st != NIC_OK) break;
    if (task == NIC_TASK_MULTICLASS && *lab) {
      for (int c = 0; c < k; c++)
        if (!strcmp(lab, p->class_names[c])) p->cls[i] = c;
      if (p->cls[i] < 0)
        st = nic_err(err, NIC_EFORMAT, "%s: line %d: label '%s' has no score_%s column", path, line,
                     lab, lab);
    }
    if (task == NIC_TASK_REGRESSION && *lab && !sm_parse_double(lab, &p->value[i]))
      st = bad_num(path, line, "label", lab, err);
    if (task == NIC_TASK_SURVIVAL) {
      const char *ts = sm_csv_get(&t, r, tc), *es = sm_csv_get(&t, r, ec);
      double ev;
      if (*ts && !sm_parse_double(ts, &p->time[i]))
        st = bad_num(path, line, "time", ts, err);
      else if (*es && (!sm_parse_double(es, &ev) || (ev != 0 && ev != 1)))
        st = nic_err(err, NIC_EFORMAT, "%s: line %d: event '%s' is not 0 or 1", path, line, es);
      else if (*es)
        p->event[i] = (int)ev;
    }
    if (st == NIC_OK && fc >= 0) {
      const char *fs = sm_csv_get(&t, r, fc);
      double fv;
      if (*fs && (!sm_parse_double(fs, &fv) || fv < 0 || fv != floor(fv) || fv > 1e6))
        st = nic_err(err, NIC_EFORMAT, "%s: line %d: fold '%s' is not a fold number", path, line,
                     fs);
      else if (*fs)
        p->fold[i] = (int)fv;
    }
  }
  if (st == NIC_OK && task == NIC_TASK_BINARY) st = binary_classes(p, path, err);
  sm_csv_free(&t);
  if (st != NIC_OK) nic_preds_free(p);
  return st;
}
