/* The CPU backend's profiler: wall time per layer and phase (see
 * cpu_profile.h for what it measures and how to read it).
 *
 * Bookkeeping: cpu_exec and cpu_reorder add the time of every primitive to
 * the current row under the current phase (cpu_prof_add). A layer call is
 * bracketed by cpu_prof_begin/cpu_prof_end, which make the layer's row
 * current and book whatever the call spent outside primitives as "other".
 * b->prof.timed, the running total of cpu_prof_add, tells the end of a call
 * how much of its wall time the primitives already account for. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/cpu/cpu.h"

static const char *const phase_names[NIC_PROF_NPHASE] = {"fwd", "bwd_data", "bwd_w", "reorder",
                                                         "other"};

double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void cpu_prof_init(cpu_backend *b) {
  const char *e = getenv("NIC_PROFILE");
  b->prof.on = b->prof.from_env = e && *e && strcmp(e, "0") != 0;
  b->prof.cur = -1;
}

/* The row for (key, name), created on first use; -1 when out of memory
 * (the sample is dropped: profiling never fails a computation). */
static int find_row(cpu_prof *p, const void *key, const char *name, const char *kind) {
  for (int i = p->nrows - 1; i >= 0; i--)
    if (p->rows[i].key == key && !strcmp(p->rows[i].name, name)) return i;
  if (p->nrows == p->cap) {
    int cap = p->cap ? 2 * p->cap : 32;
    cpu_prof_row *r = realloc(p->rows, sizeof *r * (size_t)cap);
    if (!r) return -1;
    p->rows = r;
    p->cap = cap;
  }
  cpu_prof_row *r = &p->rows[p->nrows];
  memset(r, 0, sizeof *r);
  r->key = key;
  snprintf(r->name, sizeof r->name, "%s", name);
  snprintf(r->kind, sizeof r->kind, "%s", kind ? kind : "");
  return p->nrows++;
}

void cpu_prof_add(cpu_backend *b, nic_prof_phase phase, double sec) {
  cpu_prof *p = &b->prof;
  int row = p->cur >= 0 ? p->cur : find_row(p, NULL, "(backend)", "");
  if (row < 0) return;
  p->rows[row].sec[phase] += sec;
  p->timed += sec;
  p->printed = 0;
}

void cpu_prof_begin(cpu_backend *b, const void *key, const char *name, const char *kind,
                    nic_prof_phase phase, cpu_prof_mark *mk) {
  cpu_prof *p = &b->prof;
  mk->cur = p->cur;
  mk->phase = p->phase;
  p->cur = find_row(p, key, name, kind);
  p->phase = phase;
  mk->timed0 = p->timed;
  mk->t0 = cpu_now();
}

void cpu_prof_end(cpu_backend *b, const cpu_prof_mark *mk) {
  cpu_prof *p = &b->prof;
  double other = cpu_now() - mk->t0 - (p->timed - mk->timed0);
  if (other > 0) cpu_prof_add(b, NIC_PROF_OTHER, other);
  p->cur = mk->cur;
  p->phase = mk->phase;
}

/* ---- the public side (cpu_profile.h) ------------------------------------------ */

/* ctx's backend if it is this one, else NULL. */
static cpu_backend *cpu_backend_of(nic_ctx *ctx) {
  nic_backend *be = ctx ? nic_ctx_backend(ctx) : NULL;
  return be && !strcmp(be->ops->name, "cpu") ? cpu_of(be) : NULL;
}

int nic_profile_enabled(nic_ctx *ctx) {
  cpu_backend *b = cpu_backend_of(ctx);
  return b && b->prof.on;
}

void nic_profile_enable(nic_ctx *ctx, int on) {
  cpu_backend *b = cpu_backend_of(ctx);
  if (b) b->prof.on = on != 0;
}

void nic_profile_reset(nic_ctx *ctx) {
  cpu_backend *b = cpu_backend_of(ctx);
  if (!b) return;
  b->prof.nrows = 0;
  b->prof.cur = -1;
  b->prof.printed = 0;
}

void nic_profile_note(nic_ctx *ctx, const char *what, double seconds) {
  cpu_backend *b = cpu_backend_of(ctx);
  if (!b || !b->prof.on) return;
  int row = find_row(&b->prof, NULL, what, "(outside)");
  if (row < 0) return;
  b->prof.rows[row].sec[NIC_PROF_OTHER] += seconds;
  b->prof.printed = 0;
}

static double row_total(const cpu_prof_row *r) {
  double t = 0;
  for (int k = 0; k < NIC_PROF_NPHASE; k++) t += r->sec[k];
  return t;
}

static void print_table(cpu_prof *p, FILE *f, const char *title, long batches, double wall_s) {
  double per = batches > 0 ? 1e3 / (double)batches : 1e3; /* seconds -> ms (per batch) */
  double sum = 0;
  for (int i = 0; i < p->nrows; i++) sum += row_total(&p->rows[i]);
  double unacc = wall_s > sum ? wall_s - sum : 0;
  double all = sum + unacc;
  if (batches > 0)
    fprintf(f, "profile: %s, %ld batch%s, ms per batch\n", title ? title : "", batches,
            batches == 1 ? "" : "es");
  else
    fprintf(f, "profile: %s, total ms\n", title ? title : "");
  fprintf(f, "  %-18s %-11s", "layer", "kind");
  for (int k = 0; k < NIC_PROF_NPHASE; k++) fprintf(f, " %9s", phase_names[k]);
  fprintf(f, " %9s %6s\n", "total", "%");
  double col[NIC_PROF_NPHASE] = {0};
  for (int i = 0; i < p->nrows; i++) {
    const cpu_prof_row *r = &p->rows[i];
    double t = row_total(r);
    fprintf(f, "  %-18s %-11s", r->name, r->kind);
    for (int k = 0; k < NIC_PROF_NPHASE; k++) {
      fprintf(f, " %9.2f", r->sec[k] * per);
      col[k] += r->sec[k];
    }
    fprintf(f, " %9.2f %5.1f%%\n", t * per, all > 0 ? 100 * t / all : 0);
  }
  if (wall_s > 0)
    fprintf(f, "  %-18s %-11s %*s %9.2f %5.1f%%\n", "(unaccounted)", "", 10 * NIC_PROF_NPHASE - 1,
            "", unacc * per, all > 0 ? 100 * unacc / all : 0);
  fprintf(f, "  %-18s %-11s", "total", "");
  for (int k = 0; k < NIC_PROF_NPHASE; k++) fprintf(f, " %9.2f", col[k] * per);
  fprintf(f, " %9.2f %5.1f%%\n", all * per, all > 0 ? 100.0 : 0);
}

void nic_profile_print(nic_ctx *ctx, FILE *f, const char *title, long batches, double wall_s) {
  cpu_backend *b = cpu_backend_of(ctx);
  if (!b) return;
  print_table(&b->prof, f, title, batches, wall_s);
  b->prof.printed = 1;
}

void cpu_prof_free(cpu_backend *b) {
  cpu_prof *p = &b->prof;
  if (p->from_env && !p->printed && p->nrows > 0)
    print_table(p, stderr, "NIC_PROFILE, this context", 0, 0);
  free(p->rows);
  memset(p, 0, sizeof *p);
}
