/* The mosaic's patch pool: the images of the two class folders, decoded
 * once up front so that unreadable files are found (and skipped) before any
 * slide is drawn, which keeps the cohort a function of the seed and of the
 * readable files alone. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "nic/image.h"
#include "sim/mosaic_internal.h"
#include "sim/sim_internal.h"

/* A growing list of malloc'd strings. */
typedef struct names {
  char **v;
  int n, cap;
} names;

static void names_free(names *l) {
  for (int i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  memset(l, 0, sizeof *l);
}

static int names_add(names *l, const char *s) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 64;
    char **v = realloc(l->v, sizeof(char *) * (size_t)cap);
    if (!v) return -1;
    l->v = v;
    l->cap = cap;
  }
  if (!(l->v[l->n] = strdup(s))) return -1;
  l->n++;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Image files by extension; anything libvips reads would do, but a folder
 * may also hold notes or thumbnails databases that should not be warned
 * about. */
static int is_image_name(const char *name) {
  static const char *ext[] = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".ppm"};
  const char *dot = strrchr(name, '.');
  if (!dot) return 0;
  for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
    if (!strcasecmp(dot, ext[i])) return 1;
  return 0;
}

/* Sorted names of the entries of dir that are directories (want_dirs) or
 * image files, hidden ones excluded. */
static nic_status list_dir(const char *dir, int want_dirs, names *out, nic_error *err) {
  DIR *d = opendir(dir);
  if (!d) return nic_err(err, NIC_EIO, "cannot open %s: %s", dir, strerror(errno));
  nic_status s = NIC_OK;
  struct dirent *e;
  char path[4096];
  while (s == NIC_OK && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    if (!want_dirs && !is_image_name(e->d_name)) continue;
    if ((s = sim_path(path, sizeof path, err, "%s/%s", dir, e->d_name)) != NIC_OK) break;
    struct stat st;
    if (stat(path, &st) != 0) continue; /* a dangling link */
    if (want_dirs ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) continue;
    if (names_add(out, e->d_name)) s = nic_err(err, NIC_ENOMEM, "out of memory listing %s", dir);
  }
  closedir(d);
  if (s == NIC_OK && out->n > 1) qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_str);
  return s;
}

/* "a, b, c" (at most cap bytes) naming the sub-folders of dir, for messages. */
static void describe_subdirs(const char *dir, char *buf, size_t cap) {
  names l = {0};
  buf[0] = '\0';
  if (list_dir(dir, 1, &l, NULL) != NIC_OK || l.n == 0) {
    snprintf(buf, cap, "none");
  } else {
    size_t len = 0;
    for (int i = 0; i < l.n && len + 1 < cap; i++)
      len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", l.v[i]);
  }
  names_free(&l);
}

/* One image as found on disk, before and after decoding. */
typedef struct found {
  char *rel; /* [split/]class/name */
  int cls;
  uint8_t *px;
  int w, h;
  char *fail; /* the decoder's message, NULL when it decoded */
} found;

static void warn(const nic_mosaic_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void warn(const nic_mosaic_opts *o, const char *fmt, ...) {
  if (!o->warning) return;
  char msg[NIC_ERRMSG_MAX + 200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  o->warning(o->warning_user, msg);
}

static nic_status decode(const char *root, const char *rel, uint8_t **px, int *w, int *h,
                         nic_error *err) {
  char path[4096];
  nic_status s = sim_path(path, sizeof path, err, "%s/%s", root, rel);
  if (s == NIC_OK) s = nic_image_load_rgb8(path, px, w, h, err);
  return s;
}

void mosaic_pool_free(mosaic_pool *p) {
  for (int c = 0; c < 2; c++) {
    for (int i = 0; i < p->n[c]; i++) {
      free(p->img[c][i].rel);
      free(p->img[c][i].px);
    }
    free(p->img[c]);
  }
  memset(p, 0, sizeof *p);
}

nic_status mosaic_pool_load(mosaic_pool *p, const nic_mosaic_opts *o, nic_error *err) {
  memset(p, 0, sizeof *p);
  p->root = o->patches;
  const char *root = o->patches;
  if (!root || !*root) return nic_err(err, NIC_EINVAL, "no patch folder given");
  if (!is_dir(root)) {
    struct stat st;
    return nic_err(err, NIC_EIO, "patch folder %s: %s", root,
                   stat(root, &st) != 0 ? strerror(errno) : "not a directory");
  }
  char base[4096], dir[4096], subs[300];
  nic_status s = NIC_OK;
  if (o->split) {
    if ((s = sim_path(base, sizeof base, err, "%s/%s", root, o->split)) != NIC_OK) return s;
    if (!is_dir(base)) {
      describe_subdirs(root, subs, sizeof subs);
      return nic_err(err, NIC_EIO, "no split folder '%s' in %s (its folders: %s)", o->split, root,
                     subs);
    }
  } else {
    snprintf(base, sizeof base, "%s", root);
  }

  /* List both classes: negative first, each sorted by name. */
  const char *cls[2] = {o->negative_class, o->positive_class};
  names files[2] = {{0}, {0}};
  found *f = NULL;
  int nf = 0;
  for (int c = 0; c < 2 && s == NIC_OK; c++) {
    if ((s = sim_path(dir, sizeof dir, err, "%s/%s", base, cls[c])) != NIC_OK) break;
    if (!is_dir(dir)) {
      describe_subdirs(base, subs, sizeof subs);
      s = nic_err(err, NIC_EIO, "%s class folder '%s' not found in %s (its folders: %s)%s",
                  c ? "positive" : "negative", cls[c], base, subs,
                  o->split ? "" : "; for <split>/<class>/ layouts pick a split with --split");
      break;
    }
    s = list_dir(dir, 0, &files[c], err);
    if (s == NIC_OK && files[c].n == 0)
      s = nic_err(err, NIC_EIO, "%s: no image files (.jpg, .png, .tif, ...)", dir);
  }
  if (s == NIC_OK) {
    f = calloc((size_t)(files[0].n + files[1].n), sizeof *f);
    if (!f) s = nic_err(err, NIC_ENOMEM, "out of memory listing the patches");
  }
  for (int c = 0; c < 2 && s == NIC_OK; c++)
    for (int i = 0; i < files[c].n && s == NIC_OK; i++) {
      char rel[4096];
      if (o->split)
        s = sim_path(rel, sizeof rel, err, "%s/%s/%s", o->split, cls[c], files[c].v[i]);
      else
        s = sim_path(rel, sizeof rel, err, "%s/%s", cls[c], files[c].v[i]);
      if (s == NIC_OK && !(f[nf].rel = strdup(rel)))
        s = nic_err(err, NIC_ENOMEM, "out of memory listing the patches");
      f[nf++].cls = c;
    }
  names_free(&files[0]);
  names_free(&files[1]);
  if (s != NIC_OK) goto done;

  /* The reference size: the first image, in listing order, that decodes.
   * Whether the pixels are kept is decided from it and the file count. */
  int ref = -1;
  for (int i = 0; i < nf && ref < 0; i++) {
    nic_error e = {0};
    if (decode(root, f[i].rel, &f[i].px, &f[i].w, &f[i].h, &e) == NIC_OK)
      ref = i;
    else if (!(f[i].fail = strdup(e.msg)))
      s = nic_err(err, NIC_ENOMEM, "out of memory");
  }
  if (s != NIC_OK) goto done;
  if (ref < 0) {
    s = nic_err(err, NIC_EIO, "none of the %d patch files under %s could be read (first: %s)", nf,
                base, f[0].fail);
    goto done;
  }
  p->pw = f[ref].w;
  p->ph = f[ref].h;
  double need = (double)nf * p->pw * p->ph * 3;
  int keep = need <= (double)o->cache_mb * 1048576.0;

  /* Everything after the reference, in parallel. */
  int nthreads = sim_threads(o->threads), oom = 0;
#pragma omp parallel for schedule(dynamic, 16) num_threads(nthreads)
  for (int i = ref + 1; i < nf; i++) {
    nic_error e = {0};
    if (decode(root, f[i].rel, &f[i].px, &f[i].w, &f[i].h, &e) != NIC_OK) {
      if (!(f[i].fail = strdup(e.msg))) {
#pragma omp atomic write
        oom = 1;
      }
    } else if (!keep) {
      free(f[i].px);
      f[i].px = NULL;
    }
  }
  if (oom) {
    s = nic_err(err, NIC_ENOMEM, "out of memory");
    goto done;
  }
  if (!keep) {
    free(f[ref].px);
    f[ref].px = NULL;
  }

  /* Report the rejects in listing order; move the rest into the pool. */
  for (int c = 0; c < 2; c++) {
    p->img[c] = calloc((size_t)nf, sizeof(mosaic_image));
    if (!p->img[c]) {
      s = nic_err(err, NIC_ENOMEM, "out of memory");
      goto done;
    }
  }
  for (int i = 0; i < nf; i++) {
    if (f[i].fail) {
      warn(o, "skipping an unreadable patch: %s", f[i].fail); /* the message names the file */
      continue;
    }
    if (f[i].w != p->pw || f[i].h != p->ph) {
      warn(o, "skipping %s/%s: %dx%d px, not %dx%d like %s", root, f[i].rel, f[i].w, f[i].h, p->pw,
           p->ph, f[ref].rel);
      continue;
    }
    mosaic_image *m = &p->img[f[i].cls][p->n[f[i].cls]++];
    m->rel = f[i].rel;
    m->px = f[i].px;
    f[i].rel = NULL;
    f[i].px = NULL;
  }
  for (int c = 0; c < 2; c++)
    if (p->n[c] == 0) {
      s = nic_err(err, NIC_EIO, "no usable %s patch in %s/%s", c ? "positive" : "negative", base,
                  cls[c]);
      goto done;
    }
done:
  for (int i = 0; i < nf; i++) {
    free(f[i].rel);
    free(f[i].px);
    free(f[i].fail);
  }
  free(f);
  if (s != NIC_OK) mosaic_pool_free(p);
  return s;
}

nic_status mosaic_pool_get(const mosaic_pool *p, int c, int i, const uint8_t **px, uint8_t **owned,
                           nic_error *err) {
  const mosaic_image *m = &p->img[c][i];
  *owned = NULL;
  if (m->px) {
    *px = m->px;
    return NIC_OK;
  }
  int w = 0, h = 0;
  nic_status s = decode(p->root, m->rel, owned, &w, &h, err);
  if (s == NIC_OK && (w != p->pw || h != p->ph)) {
    free(*owned);
    *owned = NULL;
    return nic_err(err, NIC_EIO, "%s/%s changed size while the cohort was written", p->root,
                   m->rel);
  }
  *px = *owned;
  return s;
}
