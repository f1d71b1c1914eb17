/* Small helpers of the slide-model code: a CSV reader and writer, number
 * parsing, directories, atomic file output, seed mixing, and the grid
 * orientations. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "slidemodel/sm_internal.h"

/* ---- strings and numbers ------------------------------------------------- */

char *sm_strdup(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

int sm_parse_double(const char *s, double *v) {
  if (!s || !*s) return 0;
  char *end = NULL;
  errno = 0;
  double x = strtod(s, &end);
  if (*end || errno == ERANGE || !isfinite(x)) return 0;
  /* strtod takes "inf", "nan" and hex; finite decimal numbers only here */
  for (const char *p = s; *p; p++)
    if (isalpha((unsigned char)*p) && *p != 'e' && *p != 'E') return 0;
  *v = x;
  return 1;
}

int sm_is_integer(const char *s) {
  if (!s) return 0;
  if (*s == '-' || *s == '+') s++;
  if (!*s) return 0;
  for (; *s; s++)
    if (!isdigit((unsigned char)*s)) return 0;
  return 1;
}

static int cmp_bytes(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_numeric(const void *a, const void *b) {
  double x = 0, y = 0;
  sm_parse_double(*(char *const *)a, &x);
  sm_parse_double(*(char *const *)b, &y);
  return x < y ? -1 : x > y ? 1 : cmp_bytes(a, b);
}

void sm_sort_names(char **names, int n) {
  int numeric = 1;
  double v;
  for (int i = 0; i < n && numeric; i++) numeric = sm_parse_double(names[i], &v);
  qsort(names, (size_t)n, sizeof *names, numeric ? cmp_numeric : cmp_bytes);
}

uint64_t sm_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* ---- CSV ------------------------------------------------------------------ */

static nic_status slurp(const char *path, char **out, size_t *len, nic_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return nic_err(err, NIC_EIO, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (n < cap - 1) break;
    char *nb = realloc(buf, cap * 2);
    if (!nb) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = nb;
    cap *= 2;
  }
  int bad = ferror(f);
  fclose(f);
  if (!buf) return nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
  if (bad) {
    free(buf);
    return nic_err(err, NIC_EIO, "%s: read error", path);
  }
  buf[n] = 0;
  *out = buf;
  *len = n;
  return NIC_OK;
}

/* Appends a cell pointer, growing the array. */
static int push(char ***cells, int64_t *n, int64_t *cap, char *p) {
  if (*n == *cap) {
    int64_t c = *cap ? *cap * 2 : 256;
    char **q = realloc(*cells, sizeof *q * (size_t)c);
    if (!q) return -1;
    *cells = q;
    *cap = c;
  }
  (*cells)[(*n)++] = p;
  return 0;
}

static char *trim(char *s, char *end) {
  while (s < end && (*s == ' ' || *s == '\t')) s++;
  while (end > s && (end[-1] == ' ' || end[-1] == '\t')) end--;
  *end = 0;
  return s;
}

nic_status sm_csv_read(sm_csv *c, const char *path, nic_error *err) {
  memset(c, 0, sizeof *c);
  char *src = NULL;
  size_t len = 0;
  nic_status st = slurp(path, &src, &len, err);
  if (st != NIC_OK) return st;
  /* Fields are unquoted in place into a copy: never longer than the source. */
  char *text = malloc(len + 2);
  char **cells = NULL, **row = NULL;
  int64_t ncells = 0, cap = 0, rowcap = 0;
  int *lines = NULL;
  int nrows = 0, ncols = 0, line = 1;
  if (!text) {
    free(src);
    return nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
  }
  const char *p = src, *e = src + len;
  if (len >= 3 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB &&
      (unsigned char)p[2] == 0xBF)
    p += 3;
  char *w = text;
  int64_t rown = 0;
  while (p < e) {
    /* one record */
    int start_line = line;
    rown = 0;
    int blank = 1;
    for (;;) {
      char *f = w;
      int quoted = 0;
      while (p < e && (*p == ' ' || *p == '\t')) p++;
      if (p < e && *p == '"') {
        quoted = 1;
        blank = 0;
        p++;
        for (;;) {
          if (p >= e) {
            st = nic_err(err, NIC_EFORMAT, "%s: line %d: a quote is not closed", path, start_line);
            goto fail;
          }
          if (*p == '"') {
            if (p + 1 < e && p[1] == '"') {
              *w++ = '"';
              p += 2;
              continue;
            }
            p++;
            break;
          }
          if (*p == '\n') line++;
          *w++ = *p++;
        }
        while (p < e && *p != ',' && *p != '\n' && *p != '\r') p++; /* junk after the quote */
        *w++ = 0;
      } else {
        while (p < e && *p != ',' && *p != '\n' && *p != '\r') *w++ = *p++;
        char *end = w;
        *w++ = 0;
        f = trim(f, end);
        if (*f) blank = 0;
      }
      (void)quoted;
      if (row == NULL || rown == rowcap) {
        int64_t rc = rowcap ? rowcap * 2 : 16;
        char **q = realloc(row, sizeof *q * (size_t)rc);
        if (!q) goto oom;
        row = q;
        rowcap = rc;
      }
      row[rown++] = f;
      if (p < e && *p == ',') {
        p++;
        blank = 0;
        continue;
      }
      break;
    }
    if (p < e && *p == '\r') p++;
    if (p < e && *p == '\n') p++;
    line++;
    if (blank) continue;
    if (nrows == 0) ncols = (int)rown;
    if (rown > ncols) {
      st = nic_err(err, NIC_EFORMAT, "%s: line %d has %lld fields, the header %d", path, start_line,
                   (long long)rown, ncols);
      goto fail;
    }
    for (int64_t i = 0; i < ncols; i++)
      if (push(&cells, &ncells, &cap, i < rown ? row[i] : w - 1) != 0) goto oom;
    int *nl = realloc(lines, sizeof *nl * (size_t)(nrows + 1));
    if (!nl) goto oom;
    lines = nl;
    lines[nrows++] = start_line;
  }
  free(row);
  free(src);
  if (nrows == 0) {
    free(text);
    free(cells);
    free(lines);
    return nic_err(err, NIC_EFORMAT, "%s: the file is empty", path);
  }
  c->nrows = nrows;
  c->ncols = ncols;
  c->cell = cells;
  c->line = lines;
  c->text = text;
  return NIC_OK;
oom:
  st = nic_err(err, NIC_ENOMEM, "%s: out of memory", path);
fail:
  free(row);
  free(src);
  free(text);
  free(cells);
  free(lines);
  return st;
}

void sm_csv_free(sm_csv *c) {
  free(c->cell);
  free(c->line);
  free(c->text);
  memset(c, 0, sizeof *c);
}

int sm_csv_col(const sm_csv *c, const char *name) {
  for (int j = 0; j < c->ncols; j++)
    if (!strcmp(c->cell[j], name)) return j;
  return -1;
}

void sm_csv_put(FILE *f, const char *s) {
  if (!s) return;
  if (!strpbrk(s, ",\"\n\r") && s[0] != ' ' && (!*s || s[strlen(s) - 1] != ' ')) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

/* ---- files ------------------------------------------------------------------ */

nic_status sm_mkdirs(const char *dir, nic_error *err) {
  char buf[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof buf) return nic_err(err, NIC_EINVAL, "bad directory name '%s'", dir);
  memcpy(buf, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != 0) continue;
    char c = buf[i];
    buf[i] = 0;
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
      return nic_err(err, NIC_EIO, "%s: cannot create directory: %s", buf, strerror(errno));
    buf[i] = c;
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return nic_err(err, NIC_EIO, "%s: not a directory", dir);
  return NIC_OK;
}

nic_status sm_out_open(sm_out *o, const char *path, nic_error *err) {
  memset(o, 0, sizeof *o);
  if (strlen(path) >= sizeof o->path) return nic_err(err, NIC_EINVAL, "path too long: %s", path);
  snprintf(o->path, sizeof o->path, "%s", path);
  snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%ld", path, (long)getpid());
  o->f = fopen(o->tmp, "wb");
  if (!o->f) return nic_err(err, NIC_EIO, "%s: cannot create: %s", o->tmp, strerror(errno));
  return NIC_OK;
}

nic_status sm_out_commit(sm_out *o, nic_error *err) {
  int bad = ferror(o->f) || fflush(o->f) != 0 || fsync(fileno(o->f)) != 0;
  bad |= fclose(o->f) != 0;
  o->f = NULL;
  if (bad) {
    remove(o->tmp);
    return nic_err(err, NIC_EIO, "%s: write error", o->path);
  }
  if (rename(o->tmp, o->path) != 0) {
    int e = errno;
    remove(o->tmp);
    return nic_err(err, NIC_EIO, "%s: cannot rename into place: %s", o->path, strerror(e));
  }
  return NIC_OK;
}

void sm_out_abort(sm_out *o) {
  if (o->f) {
    fclose(o->f);
    o->f = NULL;
    remove(o->tmp);
  }
}

/* ---- orientations ------------------------------------------------------------ */

void sm_orient_dims(int o, int H, int W, int *H2, int *W2) {
  int odd = (o & 3) & 1;
  *H2 = odd ? W : H;
  *W2 = odd ? H : W;
}

void sm_orient_cell(int o, int H, int W, int i, int j, int *i2, int *j2) {
  if (o >= 4) j = W - 1 - j; /* np.fliplr */
  for (int k = 0; k < (o & 3); k++) {
    /* np.rot90 once: out[a, b] = in[b, W - 1 - a], so in (i, j) lands at
     * (W - 1 - j, i) in a W x H array */
    int ni = W - 1 - j, nj = i;
    int t = H;
    H = W;
    W = t;
    i = ni;
    j = nj;
  }
  *i2 = i;
  *j2 = j;
}
