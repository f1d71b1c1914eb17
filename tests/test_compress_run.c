/* nic compress over many slides: slide lists (folders, CSV), duplicate ids,
 * shards, resume and --overwrite, stale temporary files, the run report,
 * cancelling, and bad inputs (missing file, a text file named .svs, a
 * truncated and a corrupted TIFF, a slide without tissue, one without
 * spacing, outputs that cannot be written): each is a clear message in the
 * report and the others go on. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compress/compress_internal.h"
#include "slide/slide_internal.h"
#include "test_compress.h"
#include "testutil.h"

static const char *tmpdir;
static char model[512], slide[512];
static nic_ctx *ctx;

static const char *tmp_path(const char *name) {
  static char buf[8][600];
  static int k;
  char *p = buf[k++ & 7];
  snprintf(p, 600, "%s/%s", tmpdir, name);
  return p;
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  size_t got = fread(s, 1, (size_t)n, f);
  s[got] = '\0';
  fclose(f);
  return s;
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static ino_t inode_of(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* Copies the first `keep` bytes of src (all when keep < 0), overwriting
 * [from, to) with garbage. */
static void copy_damaged(const char *src, const char *dst, long keep, long from, long to) {
  FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
  if (!in || !out) {
    if (in) fclose(in);
    if (out) fclose(out);
    return;
  }
  long pos = 0;
  int c;
  while ((keep < 0 || pos < keep) && (c = fgetc(in)) != EOF) {
    if (pos >= from && pos < to) c = (int)(ct_hash((uint32_t)pos, 3) & 255);
    fputc(c, out);
    pos++;
  }
  fclose(in);
  fclose(out);
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static nic_compressor *make_compressor(int orientations) {
  nic_compressor *c = NULL;
  nic_error err = {0};
  nic_compress_opts o = nic_compress_default_opts();
  o.orientations = orientations;
  CHECK_OK(nic_compressor_create(&c, model, ctx, &o, &err));
  if (!c) fprintf(stderr, "  %s\n", err.msg);
  return c;
}

/* Results of a run, captured by the slide_end callback. */
typedef struct seen {
  int n;
  nic_compress_outcome outcome[32];
  char id[32][64];
  char error[32][NIC_ERRMSG_MAX];
} seen;

static void on_end(void *user, int index, int count, const nic_compress_result *r) {
  seen *s = user;
  if (s->n >= 32) return;
  s->outcome[s->n] = r->outcome;
  snprintf(s->id[s->n], sizeof s->id[0], "%s", r->entry->id);
  snprintf(s->error[s->n], sizeof s->error[0], "%s", r->error);
  s->n++;
  (void)index;
  (void)count;
}

static const char *error_of(const seen *s, const char *id) {
  for (int i = 0; i < s->n; i++)
    if (!strcmp(s->id[i], id)) return s->outcome[i] == NIC_COMPRESS_FAILED ? s->error[i] : NULL;
  return NULL;
}

static int outcome_of(const seen *s, const char *id) {
  for (int i = 0; i < s->n; i++)
    if (!strcmp(s->id[i], id)) return (int)s->outcome[i];
  return -1;
}

static nic_status run(nic_compressor *c, nic_slide_list *l, const char *outdir, const char *report,
                      int overwrite, seen *s, nic_compress_summary *sum) {
  memset(s, 0, sizeof *s);
  nic_compress_run_opts o = {outdir, report, overwrite, 0, NULL, NULL, on_end, s};
  nic_error err = {0};
  nic_status st = nic_compress_run(c, l, &o, sum, &err);
  if (st != NIC_OK) printf("  run: %s\n", err.msg);
  return st;
}

/* ---- slide lists ------------------------------------------------------------------ */

static void test_lists(void) {
  nic_error err = {0};
  const char *dir = tmp_path("listdir");
  mkdir(dir, 0755);
  const char *files[] = {"b.svs", "a.tif", "c.txt", "d.PNG", ".hidden.tif", "list.csv"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, files[i]);
    write_text(p, "x");
  }
  char sub[700];
  snprintf(sub, sizeof sub, "%s/folder.tif", dir);
  mkdir(sub, 0755);

  nic_slide_list l = {0};
  CHECK_OK(nic_slide_list_add(&l, dir, &err));
  CHECK(l.count == 3);
  if (l.count == 3) {
    CHECK(!strcmp(l.items[0].id, "a") && !strcmp(l.items[1].id, "b") &&
          !strcmp(l.items[2].id, "d"));
    CHECK(strstr(l.items[0].path, "listdir/a.tif") && l.items[0].mpp == 0 && !l.items[0].error);
  }
  nic_slide_list_free(&l);

  /* CSV with a header (columns by name), quotes, CRLF, relative paths */
  const char *csv = tmp_path("listdir/slides.csv");
  write_text(csv, "\xEF\xBB\xBFslide_id,label,path,mpp\r\n"
                  "s1,0,slides/x.tif,0.5\r\n"
                  "\"s,2\",1,\"/abs/y, z.svs\",\r\n"
                  "\r\n"
                  "s3,1,z.tif,abc\r\n"
                  ",1,q.tif,\r\n"
                  "s5,0,,0.25\r\n");
  CHECK_OK(nic_slide_list_add(&l, csv, &err));
  CHECK(l.count == 5);
  if (l.count == 5) {
    CHECK(!strcmp(l.items[0].id, "s1") && l.items[0].mpp == 0.5 && !l.items[0].error);
    char want[700];
    snprintf(want, sizeof want, "%s/slides/x.tif", dir);
    CHECK(!strcmp(l.items[0].path, want));
    CHECK(!strcmp(l.items[1].id, "s,2") && !strcmp(l.items[1].path, "/abs/y, z.svs") &&
          l.items[1].mpp == 0 && !l.items[1].error);
    CHECK(l.items[2].error && strstr(l.items[2].error, "mpp 'abc'") &&
          strstr(l.items[2].error, "line 5"));
    CHECK(l.items[3].error && strstr(l.items[3].error, "no slide_id"));
    CHECK(l.items[4].error && strstr(l.items[4].error, "no path"));
  }
  nic_slide_list_free(&l);

  /* CSV without a header: slide_id,path[,mpp] by position */
  const char *plain = tmp_path("plain.csv");
  write_text(plain, "a,/x/a.svs\nb,rel.svs,0.25\n");
  CHECK_OK(nic_slide_list_add(&l, plain, &err));
  CHECK(l.count == 2 && l.items[1].mpp == 0.25 && strstr(l.items[1].path, "/rel.svs"));
  nic_slide_list_free(&l);

  /* a missing CSV is an error for the run; a missing slide is not */
  CHECK(nic_slide_list_add(&l, tmp_path("none.csv"), &err) == NIC_EIO);
  CHECK(strstr(err.msg, "none.csv") != NULL);
  CHECK_OK(nic_slide_list_add(&l, tmp_path("none.svs"), &err));
  CHECK(l.count == 1 && !strcmp(l.items[0].id, "none"));
  nic_slide_list_free(&l);

  /* duplicate ids: the first keeps its id */
  CHECK_OK(nic_slide_list_add(&l, "x/a.tif", &err));
  CHECK_OK(nic_slide_list_add(&l, "y/a.svs", &err));
  CHECK_OK(nic_slide_list_add(&l, "z/b.svs", &err));
  nic_slide_list_mark_duplicates(&l);
  CHECK(!l.items[0].error && l.items[1].error && strstr(l.items[1].error, "x/a.tif") &&
        !l.items[2].error);
  nic_slide_list_free(&l);
}

static void test_shards(void) {
  nic_error err = {0};
  for (int n = 1; n <= 3; n++) {
    int hits[7] = {0};
    for (int i = 0; i < n; i++) {
      nic_slide_list l = {0};
      char name[32];
      for (int k = 0; k < 7; k++) {
        snprintf(name, sizeof name, "s%d.svs", k);
        nic_slide_list_add(&l, name, &err);
      }
      CHECK_OK(nic_slide_list_shard(&l, i, n, &err));
      for (int k = 0; k < l.count; k++) {
        int id = atoi(l.items[k].id + 1);
        CHECK(id % n == i);
        hits[id]++;
      }
      nic_slide_list_free(&l);
    }
    int ok = 1;
    for (int k = 0; k < 7; k++) ok &= hits[k] == 1;
    CHECK(ok); /* disjoint, and together the whole list */
  }
  nic_slide_list l = {0};
  CHECK(nic_slide_list_shard(&l, 3, 3, &err) == NIC_EINVAL);
  CHECK(nic_slide_list_shard(&l, -1, 3, &err) == NIC_EINVAL);
}

/* ---- runs ------------------------------------------------------------------------ */

/* Three ids for one slide file, by CSV. */
static void three_slides(nic_slide_list *l) {
  nic_error err = {0};
  char text[2000];
  snprintf(text, sizeof text, "slide_id,path\ns1,%s\ns2,%s\ns3,%s\n", slide, slide, slide);
  const char *csv = tmp_path("three.csv");
  write_text(csv, text);
  CHECK_OK(nic_slide_list_add(l, csv, &err));
}

static void test_resume_overwrite(void) {
  nic_compressor *c = make_compressor(1);
  if (!c) return;
  const char *out = tmp_path("resume");
  mkdir(out, 0755);
  nic_slide_list l = {0};
  three_slides(&l);
  seen s;
  nic_compress_summary sum;
  CHECK_OK(run(c, &l, out, NULL, 0, &s, &sum));
  CHECK(sum.total == 3 && sum.done == 3 && sum.skipped == 0 && sum.failed == 0);
  CHECK(sum.patches == 150);
  char path[700];
  snprintf(path, sizeof path, "%s/compress_report.csv", out);
  char *rep = read_text(path);
  CHECK(rep && !strncmp(rep, "slide_id,path,status,n_patches,seconds,error\n", 45));
  CHECK(rep && strstr(rep, "\ns2,") && strstr(rep, ",ok,50,"));
  free(rep);
  snprintf(path, sizeof path, "%s/s1.h5", out);
  ino_t before = inode_of(path);
  CHECK(nic_features_is_complete(path));

  /* stale temporary files: ours go, another job's stay */
  char mine[700], other[700];
  snprintf(mine, sizeof mine, "%s/s2.h5.tmp.99999", out);
  snprintf(other, sizeof other, "%s/zz.h5.tmp.99999", out);
  write_text(mine, "partial");
  write_text(other, "partial");
  CHECK_OK(run(c, &l, out, NULL, 0, &s, &sum));
  CHECK(sum.done == 0 && sum.skipped == 3 && sum.failed == 0);
  CHECK(inode_of(path) == before); /* not rewritten */
  CHECK(!exists(mine) && exists(other));
  snprintf(path, sizeof path, "%s/compress_report.csv", out);
  rep = read_text(path);
  CHECK(rep && strstr(rep, ",skipped,50,"));
  free(rep);

  /* --overwrite redoes them */
  CHECK_OK(run(c, &l, out, NULL, 1, &s, &sum));
  CHECK(sum.done == 3 && sum.skipped == 0);
  snprintf(path, sizeof path, "%s/s1.h5", out);
  CHECK(inode_of(path) != before);
  nic_compressor_free(c);

  /* an output made differently is not silently skipped or replaced */
  c = make_compressor(8);
  if (c) {
    CHECK_OK(run(c, &l, out, NULL, 0, &s, &sum));
    CHECK(sum.failed == 3);
    const char *e = error_of(&s, "s1");
    CHECK(e && strstr(e, "no orientations") && strstr(e, "--overwrite"));
    nic_compressor_free(c);
  }
  nic_slide_list_free(&l);
}

/* Two shards of one list into one folder: every slide once. */
static void test_shard_runs(void) {
  nic_compressor *c = make_compressor(1);
  if (!c) return;
  const char *out = tmp_path("shards");
  mkdir(out, 0755);
  int done = 0;
  for (int i = 0; i < 2; i++) {
    nic_slide_list l = {0};
    nic_error err = {0};
    three_slides(&l);
    CHECK_OK(nic_slide_list_shard(&l, i, 2, &err));
    char report[700];
    snprintf(report, sizeof report, "%s/report-%d.csv", out, i);
    seen s;
    nic_compress_summary sum;
    CHECK_OK(run(c, &l, out, report, 0, &s, &sum));
    CHECK(sum.done == (i == 0 ? 2 : 1));
    done += sum.done;
    CHECK(exists(report));
    nic_slide_list_free(&l);
  }
  CHECK(done == 3);
  char p[700];
  for (int k = 1; k <= 3; k++) {
    snprintf(p, sizeof p, "%s/s%d.h5", out, k);
    CHECK(nic_features_is_complete(p));
  }
  nic_compressor_free(c);
}

/* Every kind of bad input among good slides: each fails with a message
 * saying what is wrong; the good ones are done. */
static void test_bad_inputs(void) {
  nic_compressor *c = make_compressor(1);
  if (!c) return;
  char out[600];
  snprintf(out, sizeof out, "%s", tmp_path("bad"));
  mkdir(out, 0755);
  write_text(tmp_path("notes.svs"), "these are my notes, not a slide\n");
  long size = file_size(slide);
  copy_damaged(slide, tmp_path("truncated.tif"), size / 3, 0, 0);
  copy_damaged(slide, tmp_path("corrupt.tif"), -1, size / 8, size / 2);
  ct_write_layout_slide(tmp_path("blank.tif"), 0, 1);
  ct_write_layout_slide(tmp_path("nospacing.tif"), 1, 0);
  char dirout[700];
  snprintf(dirout, sizeof dirout, "%s/dirout.h5", out);
  mkdir(dirout, 0755); /* the output name is taken by a folder */

  char text[4000];
  snprintf(text, sizeof text,
           "slide_id,path,mpp\n"
           "good,%s,\nmissing,%s,\nnotes,%s,\ntruncated,%s,\ncorrupt,%s,\nblank,%s,\n"
           "nospacing,%s,\ndirout,%s,\nbadmpp,%s,-1\nwithmpp,%s,0.45\n",
           slide, tmp_path("missing.svs"), tmp_path("notes.svs"), tmp_path("truncated.tif"),
           tmp_path("corrupt.tif"), tmp_path("blank.tif"), tmp_path("nospacing.tif"), slide, slide,
           tmp_path("nospacing.tif"));
  const char *csv = tmp_path("bad.csv");
  write_text(csv, text);
  nic_slide_list l = {0};
  nic_error err = {0};
  CHECK_OK(nic_slide_list_add(&l, csv, &err));
  seen s;
  nic_compress_summary sum;
  CHECK_OK(run(c, &l, out, NULL, 0, &s, &sum));
  CHECK(sum.total == 10 && sum.done == 2 && sum.failed == 8);
  CHECK(outcome_of(&s, "good") == NIC_COMPRESS_DONE);
  CHECK(outcome_of(&s, "withmpp") == NIC_COMPRESS_DONE); /* the list's mpp gives the spacing */
  for (int i = 0; i < s.n; i++)
    if (s.outcome[i] == NIC_COMPRESS_FAILED) printf("  %s: %s\n", s.id[i], s.error[i]);
  const char *e;
  e = error_of(&s, "missing");
  CHECK(e && strstr(e, "missing.svs"));
  e = error_of(&s, "notes");
  CHECK(e && strstr(e, "notes.svs"));
  e = error_of(&s, "truncated");
  CHECK(e && strstr(e, "truncated.tif"));
  e = error_of(&s, "corrupt");
  CHECK(e && strstr(e, "corrupt.tif"));
  e = error_of(&s, "blank");
  CHECK(e && strstr(e, "blank.tif") && strstr(e, "no tissue"));
  e = error_of(&s, "nospacing");
  CHECK(e && strstr(e, "nospacing.tif") && strstr(e, "spacing") && strstr(e, "--slide-mpp"));
  e = error_of(&s, "dirout");
  CHECK(e && strstr(e, "dirout.h5"));
  e = error_of(&s, "badmpp");
  CHECK(e && strstr(e, "mpp '-1'"));
  /* the report has every slide, errors included; no temporary file is left */
  char path[700];
  snprintf(path, sizeof path, "%s/compress_report.csv", out);
  char *rep = read_text(path);
  CHECK(rep && strstr(rep, "\nblank,") && strstr(rep, ",failed,0,") && strstr(rep, "no tissue"));
  int lines = 0;
  for (const char *p = rep; p && *p; p++) lines += *p == '\n';
  CHECK(lines == 11);
  free(rep);
  CHECK(!exists(tmp_path("bad/blank.h5")) && exists(tmp_path("bad/good.h5")));
  nic_slide_list_free(&l);

  /* An output folder nothing can be written to (root may write anywhere
   * else, not in /proc): every slide fails saying so, the report (kept
   * elsewhere) lists them. */
  int probe = open("/proc/nic-test-probe", O_WRONLY | O_CREAT, 0644);
  if (probe >= 0) {
    close(probe);
    unlink("/proc/nic-test-probe");
    printf("  skip the unwritable-folder check: /proc is writable here\n");
  } else {
    nic_slide_list two = {0};
    CHECK_OK(nic_slide_list_add(&two, slide, &err));
    CHECK_OK(nic_slide_list_add(&two, tmp_path("blank.tif"), &err));
    const char *report = tmp_path("proc-report.csv");
    CHECK_OK(run(c, &two, "/proc", report, 0, &s, &sum));
    CHECK(sum.failed == 2);
    e = error_of(&s, "layout");
    CHECK(e && strstr(e, "/proc/layout.h5"));
    if (e) printf("  unwritable: %s\n", e);
    CHECK(exists(report));
    nic_slide_list_free(&two);
  }
  /* A report that cannot be written stops the run at once. */
  nic_slide_list one = {0};
  CHECK_OK(nic_slide_list_add(&one, slide, &err));
  CHECK(run(c, &one, out, "/proc/no/report.csv", 0, &s, &sum) == NIC_EIO);
  CHECK(s.n == 0);
  nic_slide_list_free(&one);
  nic_compressor_free(c);
}

/* Ctrl-C: the slide in progress stops, its temporary file goes, the run
 * ends with the report written. */
static void test_cancel(void) {
  static volatile sig_atomic_t stop = 1;
  nic_compressor *c = NULL;
  nic_error err = {0};
  nic_compress_opts o = nic_compress_default_opts();
  o.cancel = &stop;
  CHECK_OK(nic_compressor_create(&c, model, ctx, &o, &err));
  if (!c) return;
  const char *out = tmp_path("cancel");
  mkdir(out, 0755);
  nic_slide_list l = {0};
  three_slides(&l);
  seen s;
  nic_compress_summary sum;
  nic_compress_run_opts ro = {out, NULL, 0, 0, NULL, NULL, on_end, &s};
  memset(&s, 0, sizeof s);
  CHECK(nic_compress_run(c, &l, &ro, &sum, &err) == NIC_EINVAL);
  CHECK(strstr(err.msg, "interrupted") != NULL);
  CHECK(s.n == 1 && sum.failed == 1);
  char path[700];
  snprintf(path, sizeof path, "%s/compress_report.csv", out);
  char *rep = read_text(path);
  CHECK(rep && strstr(rep, "interrupted"));
  free(rep);
  snprintf(path, sizeof path, "%s/s1.h5", out);
  CHECK(!exists(path));
  char cmd[800];
  snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp", out);
  CHECK(system(cmd) != 0);
  nic_slide_list_free(&l);
  nic_compressor_free(c);
}

static void test_default_model(void) {
  char path[10000];
  int found = nic_compress_default_model("/nonexistent/bin", path, sizeof path);
  const char *src = getenv("NIC_SRC");
  char bundled[4200];
  snprintf(bundled, sizeof bundled, "%s/models/nic-default.safetensors", src ? src : ".");
  if (src) CHECK(found == exists(bundled));
  if (!found) {
    CHECK(strstr(path, "/nonexistent/bin/../share/nic/models/nic-default.safetensors") != NULL);
    CHECK(strstr(path, "models/nic-default.safetensors, ") != NULL || !src);
  }
}

int main(void) {
  nic_error err = {0};
  if (nic__vips_init(&err) != NIC_OK) nic_test_skip(err.msg);
  tmpdir = nic_test_tmpdir();
  ctx = nic_test_ctx(1);
  snprintf(model, sizeof model, "%s/encoder.safetensors", tmpdir);
  snprintf(slide, sizeof slide, "%s/layout.tif", tmpdir);
  ct_write_model(model, ctx);
  ct_write_layout_slide(slide, 1, 1);
  RUN(test_lists);
  RUN(test_shards);
  RUN(test_resume_overwrite);
  RUN(test_shard_runs);
  RUN(test_bad_inputs);
  RUN(test_cancel);
  RUN(test_default_model);
  nic_ctx_free(ctx);
  return nic_test_finish();
}
