/* The progress display (see progress.h). */
#include "cli/progress.h"

#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* Seconds between redraws of a bar: often enough to look alive, rarely
 * enough to cost nothing. */
#define BAR_INTERVAL 0.1

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int term_width(FILE *f) {
  struct winsize ws;
  if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
  return 80;
}

void cli_format_duration(double s, char *buf, size_t size) {
  if (!(s >= 0) || s > 360000 * 24) {
    snprintf(buf, size, "?");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

void cli_progress_init(cli_progress *p, FILE *f, cli_progress_mode mode) {
  memset(p, 0, sizeof *p);
  p->f = f;
  p->log_every = 10;
  p->off = mode == CLI_PROGRESS_NONE;
  p->bar = mode == CLI_PROGRESS_BAR || (mode == CLI_PROGRESS_AUTO && isatty(fileno(f)));
}

void cli_progress_start(cli_progress *p, const char *label, int64_t total, const char *unit) {
  cli_progress_clear(p);
  snprintf(p->label, sizeof p->label, "%s", label ? label : "");
  snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "");
  p->total = total;
  p->done = 0;
  p->started = 0;
  p->t0 = p->last = now_s();
}

/* The rate is measured from the first update of a task, not from its
 * start, so that setup time (tissue detection, say) and a first batch
 * arriving all at once do not distort it. */
static double rate_of(const cli_progress *p, double t) {
  double el = t - p->t_first;
  return el >= 0.5 ? (double)(p->done - p->done_first) / el : 0;
}

/* The numbers after the bar: count, rate, time left. */
static void stats_text(const cli_progress *p, double t, char *buf, size_t size) {
  double rate = rate_of(p, t);
  char eta[32] = "?", rtext[32] = "?";
  if (rate > 0) snprintf(rtext, sizeof rtext, "%.0f", rate);
  if (p->total > 0 && rate > 0)
    cli_format_duration((double)(p->total - p->done) / rate, eta, sizeof eta);
  if (p->total > 0)
    snprintf(buf, size, "%lld/%lld %s  %s %s/s  ETA %s", (long long)p->done, (long long)p->total,
             p->unit, rtext, p->unit, eta);
  else
    snprintf(buf, size, "%lld %s  %s %s/s", (long long)p->done, p->unit, rtext, p->unit);
}

/* Columns kept for the numbers, so that the bar does not change width as
 * they grow. */
#define STATS_COLS 44

static void draw_bar(cli_progress *p, double t) {
  char stats[160], bar[64];
  stats_text(p, t, stats, sizeof stats);
  int width = term_width(p->f);
  int pct = p->total > 0 ? (int)(100.0 * (double)p->done / (double)p->total) : 0;
  /* label (shortened if it must), then the bar in what is left (10 to 40
   * cells), then the numbers */
  int avail = width - 1 - 8 - STATS_COLS, label_w = (int)strlen(p->label);
  if (label_w > avail - 10) label_w = avail - 10 > 0 ? avail - 10 : 0;
  int cells = avail - label_w;
  if (cells < 10) cells = 10;
  if (cells > 40) cells = 40;
  int full = p->total > 0 ? (int)((double)cells * (double)p->done / (double)p->total) : 0;
  for (int i = 0; i < cells; i++) bar[i] = i < full ? '#' : '.';
  bar[cells] = '\0';
  fprintf(p->f, "\r%.*s [%s] %3d%% %s\033[K", label_w, p->label, bar, pct, stats);
  fflush(p->f);
  p->shown = 1;
}

static void plain_line(cli_progress *p, double t) {
  char stats[160];
  stats_text(p, t, stats, sizeof stats);
  if (p->total > 0)
    fprintf(p->f, "%s: %.0f%%, %s\n", p->label, 100.0 * (double)p->done / (double)p->total, stats);
  else
    fprintf(p->f, "%s: %s\n", p->label, stats);
  fflush(p->f);
}

void cli_progress_update(cli_progress *p, int64_t done) {
  double t = now_s();
  if (!p->started) {
    p->started = 1;
    p->t_first = t;
    p->done_first = done;
  }
  p->done = done;
  if (p->off) return;
  if (p->bar) {
    if (t - p->last >= BAR_INTERVAL || !p->shown || (p->total > 0 && done >= p->total)) {
      draw_bar(p, t);
      p->last = t;
    }
  } else if (t - p->last >= p->log_every) {
    plain_line(p, t);
    p->last = t;
  }
}

void cli_progress_clear(cli_progress *p) {
  if (p->shown) {
    fputs("\r\033[K", p->f);
    fflush(p->f);
    p->shown = 0;
  }
}

void cli_progress_end(cli_progress *p) {
  cli_progress_clear(p);
  p->total = p->done = 0;
}
