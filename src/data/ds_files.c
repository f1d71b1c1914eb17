/* File-backed datasets: a folder per class (optionally inside split
 * folders) and CSV lists of `path,label[,split]`. Items are only listed
 * here; their images are decoded when loaded. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_internal.h"

/* ---- directory listing ------------------------------------------------------- */

typedef struct name_list {
  char **v;
  int n, cap;
} name_list;

static void names_free(name_list *l) {
  for (int i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  memset(l, 0, sizeof *l);
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_image_name(const char *name) {
  static const char *ext[] = {".jpg", ".jpeg", ".png", ".tif", ".tiff"};
  const char *dot = strrchr(name, '.');
  if (!dot) return 0;
  for (size_t k = 0; k < sizeof ext / sizeof ext[0]; k++)
    if (!strcasecmp(dot, ext[k])) return 1;
  return 0;
}

/* The entries of `dir` that are directories (want_dirs) or image files,
 * skipping hidden ones, sorted by name so the item order is the same on
 * every file system. */
static nic_status list_dir(const char *dir, int want_dirs, name_list *out, nic_error *err) {
  memset(out, 0, sizeof *out);
  DIR *d = opendir(dir);
  if (!d) return nic_err(err, NIC_EIO, "cannot read the folder %s: %s", dir, strerror(errno));
  nic_status s = NIC_OK;
  struct dirent *e;
  char path[4096];
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) {
      s = nic_err(err, NIC_EINVAL, "%s/%s: path too long", dir, e->d_name);
      break;
    }
    struct stat st;
    if (stat(path, &st) != 0) continue; /* a dangling link is not an item */
    if (want_dirs ? !S_ISDIR(st.st_mode) : !(S_ISREG(st.st_mode) && is_image_name(e->d_name)))
      continue;
    if (out->n == out->cap) {
      int cap = out->cap ? out->cap * 2 : 64;
      char **v = realloc(out->v, sizeof(char *) * (size_t)cap);
      if (!v) {
        s = nic_err(err, NIC_ENOMEM, "listing %s: out of memory", dir);
        break;
      }
      out->v = v;
      out->cap = cap;
    }
    if (!(out->v[out->n] = strdup(e->d_name))) {
      s = nic_err(err, NIC_ENOMEM, "listing %s: out of memory", dir);
      break;
    }
    out->n++;
  }
  closedir(d);
  if (s != NIC_OK)
    names_free(out);
  else if (out->n > 1)
    qsort(out->v, (size_t)out->n, sizeof(char *), cmp_name);
  return s;
}

/* Adds every image of dir/<class>/ with that class and split. */
static nic_status scan_classes(nic_dataset *ds, const char *dir, nic_split split, nic_error *err) {
  name_list classes;
  nic_status s = list_dir(dir, 1, &classes, err);
  if (s != NIC_OK) return s;
  char cdir[4096], path[4096];
  for (int c = 0; c < classes.n && s == NIC_OK; c++) {
    if (snprintf(cdir, sizeof cdir, "%s/%s", dir, classes.v[c]) >= (int)sizeof cdir) {
      s = nic_err(err, NIC_EINVAL, "%s/%s: path too long", dir, classes.v[c]);
      break;
    }
    name_list files;
    if ((s = list_dir(cdir, 0, &files, err)) != NIC_OK) break;
    for (int f = 0; f < files.n && s == NIC_OK; f++) {
      if (snprintf(path, sizeof path, "%s/%s", cdir, files.v[f]) >= (int)sizeof path)
        s = nic_err(err, NIC_EINVAL, "%s/%s: path too long", cdir, files.v[f]);
      else
        s = ds_add_file(ds, path, classes.v[c], split, err);
    }
    names_free(&files);
  }
  names_free(&classes);
  return s;
}

/* Splits if every sub-directory is named like one (and there is one). */
static int has_split_folders(const name_list *dirs) {
  if (dirs->n == 0) return 0;
  for (int i = 0; i < dirs->n; i++)
    if (ds_parse_split(dirs->v[i]) <= NIC_SPLIT_NONE) return 0;
  return 1;
}

nic_status nic_dataset_open_folder(nic_dataset **out, const char *root,
                                   const nic_dataset_opts *opts, nic_error *err) {
  *out = NULL;
  nic_dataset_opts o = opts ? *opts : nic_dataset_default_opts();
  char path[4096];
  size_t rl = strlen(root);
  while (rl > 1 && root[rl - 1] == '/') rl--; /* "pcam/" -> "pcam" for joined paths */
  if (rl + 32 > sizeof path) return nic_err(err, NIC_EINVAL, "%s: path too long", root);

  /* A labels.csv lists the items itself; listing thousands of files is
   * then unnecessary. Its labels are class names like the folders. */
  snprintf(path, sizeof path, "%.*s/labels.csv", (int)rl, root);
  struct stat st;
  if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
    char base[4096];
    snprintf(base, sizeof base, "%.*s", (int)rl, root);
    nic_status s = ds_open_csv(out, path, base, "folder", NIC_LABEL_CLASS, err);
    if (s == NIC_OK && o.mpp > 0) (*out)->mpp = o.mpp;
    return s;
  }

  snprintf(path, sizeof path, "%.*s", (int)rl, root);
  nic_dataset *ds = ds_new("folder", root);
  if (!ds) return nic_err(err, NIC_ENOMEM, "%s: out of memory", root);
  ds->mpp = o.mpp > 0 ? o.mpp : 0;
  name_list dirs;
  nic_status s = list_dir(path, 1, &dirs, err);
  if (s != NIC_OK) {
    nic_dataset_free(ds);
    return s;
  }
  if (has_split_folders(&dirs)) {
    char sdir[4096];
    for (int i = 0; i < dirs.n && s == NIC_OK; i++) {
      if (snprintf(sdir, sizeof sdir, "%s/%s", path, dirs.v[i]) >= (int)sizeof sdir)
        s = nic_err(err, NIC_EINVAL, "%s/%s: path too long", path, dirs.v[i]);
      else
        s = scan_classes(ds, sdir, (nic_split)ds_parse_split(dirs.v[i]), err);
    }
  } else {
    s = scan_classes(ds, path, NIC_SPLIT_NONE, err);
  }
  names_free(&dirs);
  if (s == NIC_OK && ds->n == 0)
    s = nic_err(err, NIC_EFORMAT,
                "%s: no images found (expected <class>/*.jpg|png|tif or "
                "<split>/<class>/*.jpg|png|tif)",
                root);
  if (s == NIC_OK) s = ds_finish_labels(ds, NIC_LABEL_CLASS, err);
  if (s != NIC_OK) {
    nic_dataset_free(ds);
    return s;
  }
  *out = ds;
  return NIC_OK;
}

/* ---- CSV ------------------------------------------------------------------------- */

#define CSV_MAX_FIELDS 16

/* Splits one line into fields in place (RFC 4180 quoting: "a,b" and ""
 * for a quote). Returns the field count, or -1 for an unterminated quote.
 * Unquoted fields are trimmed of surrounding blanks. */
static int csv_split(char *line, char **fields, int max) {
  int n = 0;
  char *p = line;
  for (;;) {
    while (*p == ' ' || *p == '\t') p++;
    char *start = p, *w = p;
    if (*p == '"') {
      p++;
      for (;;) {
        if (!*p) return -1;
        if (*p == '"' && p[1] == '"') {
          *w++ = '"';
          p += 2;
        } else if (*p == '"') {
          p++;
          break;
        } else {
          *w++ = *p++;
        }
      }
      while (*p && *p != ',') p++; /* anything after the closing quote is dropped */
    } else {
      while (*p && *p != ',') w = ++p;
      while (w > start && (w[-1] == ' ' || w[-1] == '\t')) w--;
    }
    int more = *p == ',';
    *w = '\0';
    if (n < max) fields[n++] = start;
    if (!more) break;
    p++;
  }
  return n;
}

/* Reads the next line into *buf (growing it), without the line end.
 * Returns 0 at end of file. */
static int read_line(FILE *f, char **buf, size_t *cap) {
  size_t n = 0;
  int c;
  while ((c = fgetc(f)) != EOF && c != '\n') {
    if (n + 2 > *cap) {
      size_t nc = *cap ? *cap * 2 : 256;
      char *b = realloc(*buf, nc);
      if (!b) return -1;
      *buf = b;
      *cap = nc;
    }
    (*buf)[n++] = (char)c;
  }
  if (c == EOF && n == 0) return 0;
  if (!*buf) {
    *buf = malloc(1);
    if (!*buf) return -1;
    *cap = 1;
  }
  if (n > 0 && (*buf)[n - 1] == '\r') n--;
  (*buf)[n] = '\0';
  return 1;
}

/* Which columns hold path, label and split: from a header row naming
 * them, or 0, 1, 2. Returns 1 when the row was a header. */
static int csv_columns(char **f, int nf, int col[3]) {
  int is_header = 0;
  col[0] = 0, col[1] = 1, col[2] = 2;
  for (int i = 0; i < nf; i++)
    if (!strcasecmp(f[i], "path") || !strcasecmp(f[i], "filename") || !strcasecmp(f[i], "file"))
      is_header = 1;
  if (!is_header) return 0;
  col[0] = col[1] = col[2] = -1;
  for (int i = 0; i < nf; i++) {
    if (!strcasecmp(f[i], "path") || !strcasecmp(f[i], "filename") || !strcasecmp(f[i], "file"))
      col[0] = i;
    else if (!strcasecmp(f[i], "label") || !strcasecmp(f[i], "class") ||
             !strcasecmp(f[i], "value") || !strcasecmp(f[i], "target"))
      col[1] = i;
    else if (!strcasecmp(f[i], "split") || !strcasecmp(f[i], "set"))
      col[2] = i;
  }
  return 1;
}

nic_status ds_open_csv(nic_dataset **out, const char *csv_path, const char *base_dir,
                       const char *format, nic_label_kind kind, nic_error *err) {
  *out = NULL;
  FILE *f = fopen(csv_path, "r");
  if (!f) return nic_err(err, NIC_EIO, "cannot open %s: %s", csv_path, strerror(errno));
  nic_dataset *ds = ds_new(format, strcmp(format, "csv") ? base_dir : csv_path);
  if (!ds) {
    fclose(f);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", csv_path);
  }
  char *line = NULL, path[4096];
  size_t cap = 0;
  int col[3] = {0, 1, 2}, lineno = 0, first = 1, r;
  nic_status s = NIC_OK;
  while (s == NIC_OK && (r = read_line(f, &line, &cap)) > 0) {
    lineno++;
    char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '\0' || *p == '#') continue;
    char *fld[CSV_MAX_FIELDS];
    int nf = csv_split(p, fld, CSV_MAX_FIELDS);
    if (nf < 0) {
      s = nic_err(err, NIC_EFORMAT, "%s:%d: unterminated quoted field", csv_path, lineno);
      break;
    }
    if (first) {
      first = 0;
      if (csv_columns(fld, nf, col)) {
        if (col[0] < 0 || col[1] < 0)
          s = nic_err(err, NIC_EFORMAT, "%s:%d: the header needs 'path' and 'label' columns",
                      csv_path, lineno);
        continue;
      }
    }
    if (nf <= col[0] || nf <= col[1] || !*fld[col[0]]) {
      s = nic_err(err, NIC_EFORMAT, "%s:%d: expected path,label[,split]", csv_path, lineno);
      break;
    }
    const char *split_name = col[2] >= 0 && nf > col[2] ? fld[col[2]] : "";
    int split = ds_parse_split(split_name);
    if (split < 0) {
      s = nic_err(err, NIC_EFORMAT,
                  "%s:%d: unknown split '%s' (expected train, valid or test, or empty)", csv_path,
                  lineno, split_name);
      break;
    }
    const char *item = fld[col[0]];
    if (item[0] == '/')
      snprintf(path, sizeof path, "%s", item);
    else if (snprintf(path, sizeof path, "%s/%s", base_dir, item) >= (int)sizeof path) {
      s = nic_err(err, NIC_EINVAL, "%s:%d: path too long", csv_path, lineno);
      break;
    }
    s = ds_add_file(ds, path, fld[col[1]], (nic_split)split, err);
  }
  if (s == NIC_OK && r < 0) s = nic_err(err, NIC_ENOMEM, "%s: out of memory", csv_path);
  if (s == NIC_OK && ferror(f)) s = nic_err(err, NIC_EIO, "%s: read error", csv_path);
  fclose(f);
  free(line);
  if (s == NIC_OK && ds->n == 0) s = nic_err(err, NIC_EFORMAT, "%s: no items", csv_path);
  if (s == NIC_OK) s = ds_finish_labels(ds, kind, err);
  if (s != NIC_OK) {
    nic_dataset_free(ds);
    return s;
  }
  *out = ds;
  return NIC_OK;
}

nic_status nic_dataset_open_csv(nic_dataset **out, const char *csv_path,
                                const nic_dataset_opts *opts, nic_error *err) {
  nic_dataset_opts o = opts ? *opts : nic_dataset_default_opts();
  /* Relative paths are relative to the CSV's own folder. */
  char base[4096];
  const char *slash = strrchr(csv_path, '/');
  if (!slash)
    snprintf(base, sizeof base, ".");
  else if (slash == csv_path)
    snprintf(base, sizeof base, "/");
  else
    snprintf(base, sizeof base, "%.*s", (int)(slash - csv_path), csv_path);
  nic_status s = ds_open_csv(out, csv_path, base, "csv", o.labels, err);
  if (s == NIC_OK) (*out)->mpp = o.mpp > 0 ? o.mpp : 0;
  return s;
}
