/* Lists of slides: arguments, folders and CSV files, duplicate ids, and
 * shards for job arrays. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "compress/compress_internal.h"

/* CSV lists larger than this are refused rather than read. */
#define MAX_CSV_BYTES ((size_t)256 << 20)

/* Extensions of the files a folder argument contributes. */
static const char *const slide_exts[] = {".svs", ".tif", ".tiff", ".ndpi", ".vms",
                                         ".vmu", ".scn", ".mrxs", ".bif",  ".svslide",
                                         ".png", ".jpg", ".jpeg", ".ppm",  ".webp"};

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static char *dup_printf(const char *fmt, const char *a, const char *b) {
  size_t n = strlen(fmt) + strlen(a) + strlen(b) + 1;
  char *d = malloc(n);
  if (d) snprintf(d, n, fmt, a, b);
  return d;
}

static int has_slide_ext(const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot || dot == name) return 0;
  for (size_t i = 0; i < sizeof slide_exts / sizeof slide_exts[0]; i++)
    if (!strcasecmp(dot, slide_exts[i])) return 1;
  return 0;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The file name without directory and last extension. */
static char *id_of(const char *path) {
  const char *base = strrchr(path, '/');
  char *id = dup_str(base && base[1] ? base + 1 : path);
  char *dot = id ? strrchr(id, '.') : NULL;
  if (dot && dot != id) *dot = '\0';
  return id;
}

/* Ids become file names: "<id>.h5". */
static int id_usable(const char *id) {
  return *id && !strchr(id, '/') && strcmp(id, ".") && strcmp(id, "..");
}

/* ---- entries ------------------------------------------------------------------ */

static nic_slide_entry *new_entry(nic_slide_list *l, nic_error *err) {
  if (l->count == l->cap) {
    int nc = l->cap ? 2 * l->cap : 64;
    nic_slide_entry *p = realloc(l->items, sizeof *p * (size_t)nc);
    if (!p) {
      nic_err(err, NIC_ENOMEM, "out of memory for the slide list");
      return NULL;
    }
    l->items = p;
    l->cap = nc;
  }
  nic_slide_entry *e = &l->items[l->count++];
  memset(e, 0, sizeof *e);
  return e;
}

static void entry_free(nic_slide_entry *e) {
  free(e->id);
  free(e->path);
  free(e->error);
}

/* Adds one slide; id NULL = derived from the path. Takes nothing over. */
static nic_status add_slide(nic_slide_list *l, const char *id, const char *path, double mpp,
                            const char *error, nic_error *err) {
  nic_slide_entry *e = new_entry(l, err);
  if (!e) return NIC_ENOMEM;
  e->id = id ? dup_str(id) : id_of(path);
  e->path = dup_str(path);
  e->mpp = mpp;
  if (error) e->error = dup_str(error);
  if (!e->id || !e->path || (error && !e->error)) {
    entry_free(e);
    l->count--;
    return nic_err(err, NIC_ENOMEM, "out of memory for the slide list");
  }
  if (!e->error && !id_usable(e->id))
    e->error = dup_printf("slide id '%s' cannot be a file name (%s)", e->id, "no '/', not empty");
  return NIC_OK;
}

void nic_slide_list_free(nic_slide_list *l) {
  if (!l) return;
  for (int i = 0; i < l->count; i++) entry_free(&l->items[i]);
  free(l->items);
  memset(l, 0, sizeof *l);
}

/* ---- folders ------------------------------------------------------------------ */

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static nic_status add_dir(nic_slide_list *l, const char *dir, nic_error *err) {
  DIR *d = opendir(dir);
  if (!d) return nic_err(err, NIC_EIO, "cannot read folder %s: %s", dir, strerror(errno));
  char **names = NULL;
  size_t n = 0, cap = 0;
  nic_status st = NIC_OK;
  struct dirent *de;
  while (st == NIC_OK && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.' || !has_slide_ext(de->d_name)) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 64;
      char **p = realloc(names, sizeof *p * cap);
      if (!p) {
        st = nic_err(err, NIC_ENOMEM, "out of memory listing %s", dir);
        break;
      }
      names = p;
    }
    names[n] = dup_printf("%s/%s", dir, de->d_name);
    if (!names[n])
      st = nic_err(err, NIC_ENOMEM, "out of memory listing %s", dir);
    else
      n++;
  }
  closedir(d);
  /* Sorted, so every job of an array sees the same list. */
  qsort(names, n, sizeof *names, cmp_names);
  for (size_t i = 0; i < n; i++) {
    if (st == NIC_OK && !is_dir(names[i])) st = add_slide(l, NULL, names[i], 0, NULL, err);
    free(names[i]);
  }
  free(names);
  return st;
}

/* ---- CSV ----------------------------------------------------------------------- */

/* A CSV reader over a whole file in memory (RFC 4180: quoted fields may
 * hold commas, quotes doubled, and line breaks). */
typedef struct csv {
  const char *p, *end;
  int line;
} csv;

/* Reads the next field into buf; returns 1 when it ends the record (line
 * break or end of file), 0 when a comma follows. */
static int csv_field(csv *c, char *buf, size_t size) {
  size_t n = 0;
  int quoted = 0;
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) c->p++;
  if (c->p < c->end && *c->p == '"') {
    quoted = 1;
    c->p++;
  }
  while (c->p < c->end) {
    char ch = *c->p;
    if (quoted) {
      if (ch == '"') {
        if (c->p + 1 < c->end && c->p[1] == '"') {
          c->p++;
        } else {
          quoted = 0;
          c->p++;
          continue;
        }
      } else if (ch == '\n') {
        c->line++;
      }
    } else if (ch == ',' || ch == '\n' || ch == '\r') {
      break;
    }
    if (n + 1 < size) buf[n++] = ch;
    c->p++;
  }
  while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t')) n--;
  buf[n] = '\0';
  if (c->p < c->end && *c->p == ',') {
    c->p++;
    return 0;
  }
  if (c->p < c->end && *c->p == '\r') c->p++;
  if (c->p < c->end && *c->p == '\n') c->p++;
  c->line++;
  return 1;
}

#define CSV_MAX_FIELDS 64
#define CSV_FIELD_BYTES 4096

/* One record: up to CSV_MAX_FIELDS fields (more are dropped). Returns the
 * number of fields, 0 for an empty line. */
static int csv_record(csv *c, char (*f)[CSV_FIELD_BYTES]) {
  int n = 0;
  char scratch[CSV_FIELD_BYTES];
  for (;;) {
    char *dst = n < CSV_MAX_FIELDS ? f[n] : scratch;
    int last = csv_field(c, dst, CSV_FIELD_BYTES);
    n++;
    if (last) break;
  }
  if (n == 1 && !f[0][0]) return 0;
  return n < CSV_MAX_FIELDS ? n : CSV_MAX_FIELDS;
}

static nic_status read_file(const char *path, char **text, size_t *len, nic_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return nic_err(err, NIC_EIO, "cannot open slide list %s: %s", path, strerror(errno));
  char *buf = NULL;
  size_t n = 0, cap = 0;
  nic_status st = NIC_OK;
  for (;;) {
    if (n + 65536 > cap) {
      cap = cap ? 2 * cap : 131072;
      char *p = cap > MAX_CSV_BYTES + 65536 ? NULL : realloc(buf, cap);
      if (!p) {
        st = nic_err(err, NIC_EFORMAT, "slide list %s is too large", path);
        break;
      }
      buf = p;
    }
    size_t got = fread(buf + n, 1, 65536, f);
    n += got;
    if (got < 65536) {
      if (ferror(f)) st = nic_err(err, NIC_EIO, "cannot read %s: %s", path, strerror(errno));
      break;
    }
  }
  fclose(f);
  if (st != NIC_OK) {
    free(buf);
    return st;
  }
  *text = buf;
  *len = n;
  return NIC_OK;
}

/* Column positions of slide_id, path and mpp (-1 = absent). */
typedef struct csv_cols {
  int id, path, mpp;
} csv_cols;

static int is_header(char (*f)[CSV_FIELD_BYTES], int n, csv_cols *cols) {
  if (n < 1 || strcasecmp(f[0], "slide_id") != 0) return 0;
  cols->id = cols->path = cols->mpp = -1;
  for (int i = 0; i < n; i++) {
    if (!strcasecmp(f[i], "slide_id"))
      cols->id = i;
    else if (!strcasecmp(f[i], "path"))
      cols->path = i;
    else if (!strcasecmp(f[i], "mpp"))
      cols->mpp = i;
  }
  return 1;
}

/* A positive finite number filling the text; 0 when empty; -1 when bad. */
static double parse_mpp(const char *s) {
  if (!*s) return 0;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v) || !(v > 0)) return -1;
  return v;
}

/* Adds the slide of one CSV record. Problems with the record become the
 * entry's error, so one bad row does not stop the others. */
static nic_status add_csv_row(nic_slide_list *l, const char *csv_path, const char *dir,
                              char (*f)[CSV_FIELD_BYTES], int n, const csv_cols *cols, int line,
                              nic_error *err) {
  const char *id = cols->id >= 0 && cols->id < n ? f[cols->id] : "";
  const char *path = cols->path >= 0 && cols->path < n ? f[cols->path] : "";
  const char *mpp_text = cols->mpp >= 0 && cols->mpp < n ? f[cols->mpp] : "";
  double mpp = parse_mpp(mpp_text);
  char why[CSV_FIELD_BYTES + 200];
  why[0] = '\0';
  if (!*id)
    snprintf(why, sizeof why, "%s line %d: no slide_id", csv_path, line);
  else if (!*path)
    snprintf(why, sizeof why, "%s line %d: no path", csv_path, line);
  else if (mpp < 0)
    snprintf(why, sizeof why, "%s line %d: mpp '%s' is not a positive number", csv_path, line,
             mpp_text);
  char *full = NULL;
  if (*path && path[0] != '/' && strcmp(dir, ".") != 0) {
    full = dup_printf("%s/%s", dir, path);
    if (!full) return nic_err(err, NIC_ENOMEM, "out of memory reading %s", csv_path);
  }
  char fallback[64];
  snprintf(fallback, sizeof fallback, "line-%d", line);
  nic_status st = add_slide(l, *id ? id : fallback, full ? full : path, mpp > 0 ? mpp : 0,
                            why[0] ? why : NULL, err);
  free(full);
  return st;
}

static nic_status add_csv(nic_slide_list *l, const char *path, nic_error *err) {
  char *text = NULL;
  size_t len = 0;
  nic_status st = read_file(path, &text, &len, err);
  if (st != NIC_OK) return st;
  char(*f)[CSV_FIELD_BYTES] = malloc(sizeof(*f) * CSV_MAX_FIELDS);
  char *dir = dup_str(path);
  if (!f || !dir) st = nic_err(err, NIC_ENOMEM, "out of memory reading %s", path);
  if (dir) { /* relative paths in the list are relative to its folder */
    char *slash = strrchr(dir, '/');
    if (!slash)
      strcpy(dir, "."); /* dir has room: path is not empty */
    else if (slash == dir)
      dir[1] = '\0'; /* "/" */
    else
      *slash = '\0';
  }
  csv c = {text, text + len, 1};
  if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) c.p += 3; /* UTF-8 byte order mark */
  csv_cols cols = {0, 1, 2};
  int first = 1;
  while (st == NIC_OK && c.p < c.end) {
    int line = c.line;
    int n = csv_record(&c, f);
    if (n == 0) continue;
    if (first && is_header(f, n, &cols)) {
      if (cols.path < 0)
        st = nic_err(err, NIC_EFORMAT, "%s: the header has no 'path' column", path);
      first = 0;
      continue;
    }
    first = 0;
    st = add_csv_row(l, path, dir, f, n, &cols, line, err);
  }
  free(f);
  free(dir);
  free(text);
  return st;
}

static int has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcasecmp(s + n - k, suffix);
}

nic_status nic_slide_list_add(nic_slide_list *l, const char *arg, nic_error *err) {
  if (!arg || !*arg) return nic_err(err, NIC_EINVAL, "an empty slide argument");
  if (is_dir(arg)) return add_dir(l, arg, err);
  if (has_suffix(arg, ".csv")) return add_csv(l, arg, err);
  return add_slide(l, NULL, arg, 0, NULL, err);
}

/* ---- duplicates and shards ------------------------------------------------------ */

static int cmp_entry_id(const void *a, const void *b) {
  const nic_slide_entry *x = *(nic_slide_entry *const *)a, *y = *(nic_slide_entry *const *)b;
  int c = strcmp(x->id, y->id);
  return c ? c : (x < y ? -1 : x > y); /* list order among equal ids */
}

/* The first entry (in list order) of a run of equal ids that has no error
 * of its own keeps the id; the later ones get an error naming it. */
static void mark_run(nic_slide_entry **run, int n) {
  const nic_slide_entry *owner = NULL;
  for (int k = 0; k < n; k++) {
    if (run[k]->error) continue;
    if (!owner)
      owner = run[k];
    else
      run[k]->error = dup_printf("slide id '%s' is also used by %s", run[k]->id, owner->path);
  }
}

void nic_slide_list_mark_duplicates(nic_slide_list *l) {
  if (l->count < 2) return;
  nic_slide_entry **by_id = malloc(sizeof *by_id * (size_t)l->count);
  if (!by_id) return; /* out of memory: duplicates then overwrite each other's output */
  for (int i = 0; i < l->count; i++) by_id[i] = &l->items[i];
  qsort(by_id, (size_t)l->count, sizeof *by_id, cmp_entry_id);
  for (int i = 0; i < l->count;) {
    int j = i + 1;
    while (j < l->count && !strcmp(by_id[j]->id, by_id[i]->id)) j++;
    if (j - i > 1) mark_run(by_id + i, j - i);
    i = j;
  }
  free(by_id);
}

nic_status nic_slide_list_shard(nic_slide_list *l, int index, int count, nic_error *err) {
  if (count < 1 || index < 0 || index >= count)
    return nic_err(err, NIC_EINVAL, "shard %d/%d: need 0 <= I < N", index, count);
  int kept = 0;
  for (int i = 0; i < l->count; i++) {
    if (i % count == index)
      l->items[kept++] = l->items[i];
    else
      entry_free(&l->items[i]);
  }
  l->count = kept;
  return NIC_OK;
}
