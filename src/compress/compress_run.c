/* Runs over many slides: resume (skip complete outputs), stale temporary
 * files, user masks per slide, and the run report. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compress/compress_internal.h"

/* The report is rewritten at most this often while a run goes on. */
#define REPORT_INTERVAL_S 5.0

const char *nic_compress_outcome_str(nic_compress_outcome o) {
  switch (o) {
  case NIC_COMPRESS_DONE:
    return "ok";
  case NIC_COMPRESS_SKIPPED:
    return "skipped";
  default:
    return "failed";
  }
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static int regular_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- the report --------------------------------------------------------------- */

/* A CSV field, quoted when it needs to be. */
static void put_field(FILE *f, const char *s) {
  if (!strpbrk(s, ",\"\r\n")) {
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

nic_status nic_compress_write_report(const char *path, const nic_compress_result *r, int n,
                                     nic_error *err) {
  size_t len = strlen(path) + 32;
  char *tmp = malloc(len);
  if (!tmp) return nic_err(err, NIC_ENOMEM, "out of memory");
  snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "w");
  if (!f) {
    nic_status st = nic_err(err, NIC_EIO, "cannot write report %s: %s", tmp, strerror(errno));
    free(tmp);
    return st;
  }
  fputs("slide_id,path,status,n_patches,seconds,error\n", f);
  for (int i = 0; i < n; i++) {
    put_field(f, r[i].entry->id);
    fputc(',', f);
    put_field(f, r[i].entry->path);
    fprintf(f, ",%s,%lld,%.3f,", nic_compress_outcome_str(r[i].outcome), (long long)r[i].patches,
            r[i].seconds);
    put_field(f, r[i].error);
    fputc('\n', f);
  }
  int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
  int saved = errno;
  if (fclose(f) != 0) bad = 1;
  nic_status st = NIC_OK;
  if (bad)
    st = nic_err(err, NIC_EIO, "cannot write report %s: %s", tmp, strerror(saved));
  else if (rename(tmp, path) != 0)
    st = nic_err(err, NIC_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
  if (st != NIC_OK) unlink(tmp);
  free(tmp);
  return st;
}

/* ---- stale temporary files ------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "<id>.h5.tmp.<digits>": 1 with the id's length, else 0. */
static int temp_output_name(const char *name, size_t *id_len) {
  const char *t = strstr(name, ".h5.tmp.");
  if (!t || t == name) return 0;
  const char *d = t + 8;
  if (!*d) return 0;
  for (const char *p = d; *p; p++)
    if (*p < '0' || *p > '9') return 0;
  *id_len = (size_t)(t - name);
  return 1;
}

/* Removes the temporary outputs a crashed run left for the slides of this
 * list (and only those: other jobs of an array may be writing theirs). */
static void remove_stale_temps(const char *outdir, const nic_slide_list *l) {
  const char **ids = malloc(sizeof(char *) * (size_t)(l->count ? l->count : 1));
  DIR *d = ids ? opendir(outdir) : NULL;
  if (!d) {
    free(ids);
    return;
  }
  for (int i = 0; i < l->count; i++) ids[i] = l->items[i].id;
  qsort(ids, (size_t)l->count, sizeof *ids, cmp_str);
  struct dirent *de;
  char id[1024], path[4096];
  while ((de = readdir(d)) != NULL) {
    size_t n;
    if (!temp_output_name(de->d_name, &n) || n >= sizeof id) continue;
    memcpy(id, de->d_name, n);
    id[n] = '\0';
    const char *key = id;
    if (!bsearch(&key, ids, (size_t)l->count, sizeof *ids, cmp_str)) continue;
    if (snprintf(path, sizeof path, "%s/%s", outdir, de->d_name) < (int)sizeof path) unlink(path);
  }
  closedir(d);
  free(ids);
}

/* ---- one entry ------------------------------------------------------------------- */

/* The user's mask for entry e: the mask file, or the first of
 * <id>.geojson, <id>.json, <id>_mask.png in the mask folder. */
static nic_status find_mask(const nic_compress_run_opts *o, const nic_slide_entry *e, char *path,
                            size_t size, nic_error *err) {
  if (!is_dir(o->mask)) {
    snprintf(path, size, "%s", o->mask);
    return NIC_OK;
  }
  static const char *const suffixes[] = {".geojson", ".json", "_mask.png"};
  for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
    snprintf(path, size, "%s/%s%s", o->mask, e->id, suffixes[i]);
    if (regular_file(path)) return NIC_OK;
  }
  return nic_err(err, NIC_EIO, "%s: no mask %s.geojson, %s.json or %s_mask.png in %s", e->path,
                 e->id, e->id, e->id, o->mask);
}

/* An output already at the final name: 1 when it is complete and made the
 * way this run would make it (the entry is skipped), 0 when it is not a
 * complete file (it is redone), -1 when it is complete but made
 * differently (the entry fails, rather than silently replacing it). */
static int check_existing(const nic_compressor *c, const char *out, nic_compress_result *r) {
  nic_features_reader *rd = NULL;
  if (nic_features_open(&rd, out, NULL) != NIC_OK) return 0;
  const nic_features_meta *m = nic_features_meta_of(rd);
  const char *why = NULL;
  if (!m->encoder_sha256 || strcmp(m->encoder_sha256, c->sha) != 0)
    why = "another encoder";
  else if (m->has_orientations != (c->o.orientations == NIC_FEATURES_ORIENTATIONS))
    why = m->has_orientations ? "orientations" : "no orientations";
  else if (m->tissue_threshold != c->o.min_tissue)
    why = "another --min-tissue";
  int rc = 1;
  if (why) {
    snprintf(r->error, sizeof r->error,
             "%.300s exists, made with %s; give --overwrite to redo it, or another output folder",
             out, why);
    rc = -1;
  } else {
    r->patches = m->count;
  }
  nic_features_close(rd);
  return rc;
}

static void process_entry(nic_compressor *c, const nic_slide_entry *e,
                          const nic_compress_run_opts *o, nic_compress_result *r) {
  memset(r, 0, sizeof *r);
  r->entry = e;
  r->outcome = NIC_COMPRESS_FAILED;
  if (e->error) {
    snprintf(r->error, sizeof r->error, "%s", e->error);
    return;
  }
  char out[4096], mask[4096];
  if (snprintf(out, sizeof out, "%s/%s.h5", o->outdir, e->id) >= (int)sizeof out) {
    snprintf(r->error, sizeof r->error, "output path for '%s' is too long", e->id);
    return;
  }
  if (file_exists(out) && !regular_file(out)) { /* fail now, not after all the work */
    snprintf(r->error, sizeof r->error, "%.300s: the output name is taken by a folder or device",
             out);
    return;
  }
  if (!o->overwrite && file_exists(out)) {
    int k = check_existing(c, out, r);
    if (k != 0) {
      r->outcome = k > 0 ? NIC_COMPRESS_SKIPPED : NIC_COMPRESS_FAILED;
      return;
    }
  }
  nic_error err = {0};
  nic_compress_job job = {e->path, e->id, out, e->mpp > 0 ? e->mpp : o->slide_mpp, NULL};
  nic_status st = NIC_OK;
  if (o->mask) {
    st = find_mask(o, e, mask, sizeof mask, &err);
    job.mask_path = mask;
  }
  if (st == NIC_OK) st = nic_compress_slide(c, &job, &r->stats, &err);
  if (st == NIC_OK) {
    r->outcome = NIC_COMPRESS_DONE;
    r->patches = r->stats.patches;
  } else {
    snprintf(r->error, sizeof r->error, "%s", err.msg[0] ? err.msg : nic_status_str(st));
  }
}

/* ---- the run -------------------------------------------------------------------- */

nic_status nic_compress_run(nic_compressor *c, const nic_slide_list *l,
                            const nic_compress_run_opts *o, nic_compress_summary *sum,
                            nic_error *err) {
  nic_compress_summary local;
  if (!sum) sum = &local;
  memset(sum, 0, sizeof *sum);
  if (!o || !o->outdir) return nic_err(err, NIC_EINVAL, "nic_compress_run: an outdir is required");
  if (!is_dir(o->outdir))
    return nic_err(err, NIC_EIO, "output folder %s does not exist", o->outdir);
  char report[4096];
  snprintf(report, sizeof report, "%s", o->report ? o->report : "");
  if (!o->report) snprintf(report, sizeof report, "%s/compress_report.csv", o->outdir);
  nic_compress_result *res = calloc((size_t)(l->count ? l->count : 1), sizeof *res);
  if (!res) return nic_err(err, NIC_ENOMEM, "out of memory");

  double t0 = nic__compress_now(), last_report = t0;
  remove_stale_temps(o->outdir, l);
  /* Fail at once, not after hours, when the report cannot be written. */
  nic_status st = nic_compress_write_report(report, res, 0, err);
  int n = 0;
  for (; st == NIC_OK && n < l->count; n++) {
    const nic_slide_entry *e = &l->items[n];
    if (o->slide_begin) o->slide_begin(o->user, n, l->count, e);
    double ts = nic__compress_now();
    process_entry(c, e, o, &res[n]);
    res[n].seconds = nic__compress_now() - ts;
    if (o->slide_end) o->slide_end(o->user, n, l->count, &res[n]);
    sum->total++;
    if (res[n].outcome == NIC_COMPRESS_DONE) {
      sum->done++;
      sum->patches += res[n].patches;
    } else if (res[n].outcome == NIC_COMPRESS_SKIPPED) {
      sum->skipped++;
    } else {
      sum->failed++;
    }
    if (c->o.cancel && *c->o.cancel) {
      n++;
      st = nic_err(err, NIC_EINVAL, "interrupted");
      break;
    }
    if (nic__compress_now() - last_report >= REPORT_INTERVAL_S) {
      st = nic_compress_write_report(report, res, n + 1, err);
      last_report = nic__compress_now();
    }
  }
  /* The final report, also after an interruption. */
  nic_error err2 = {0};
  nic_status st2 = nic_compress_write_report(report, res, n, &err2);
  if (st == NIC_OK && st2 != NIC_OK) {
    st = st2;
    if (err) *err = err2;
  }
  sum->seconds = nic__compress_now() - t0;
  free(res);
  return st;
}

/* ---- the bundled encoder ---------------------------------------------------------- */

#define DEFAULT_MODEL "models/nic-default.safetensors"

int nic_compress_default_model(const char *exe_dir, char *path, size_t size) {
  char cand[2][4096];
  int n = 0;
  if (exe_dir) snprintf(cand[n++], sizeof cand[0], "%s/../share/nic/%s", exe_dir, DEFAULT_MODEL);
#ifdef NIC_SOURCE_DIR
  snprintf(cand[n++], sizeof cand[0], "%s/%s", NIC_SOURCE_DIR, DEFAULT_MODEL);
#endif
  for (int i = 0; i < n; i++)
    if (regular_file(cand[i]) && access(cand[i], R_OK) == 0) {
      snprintf(path, size, "%s", cand[i]);
      return 1;
    }
  /* Not found: say where we looked. */
  if (size) path[0] = '\0';
  for (int i = 0; i < n; i++) {
    size_t used = strlen(path);
    snprintf(path + used, size - used, "%s%s", i ? ", " : "", cand[i]);
  }
  return 0;
}
