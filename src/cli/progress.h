/* A progress display for long loops in the nic command.
 *
 * On a terminal it is one line redrawn in place (at most 10 times a
 * second): label, bar, count, rate and time left. Anywhere else (a log
 * file, a pipe, a batch job's output) it prints a plain line every
 * `log_every` seconds instead, so logs stay readable. Messages printed
 * while a bar is shown should go through cli_progress_clear first.
 *
 *   cli_progress p;
 *   cli_progress_init(&p, stderr);
 *   cli_progress_start(&p, "slide-1", total, "patches");
 *   ... cli_progress_update(&p, done); ...
 *   cli_progress_end(&p);
 */
#ifndef NIC_CLI_PROGRESS_H
#define NIC_CLI_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef enum cli_progress_mode {
  CLI_PROGRESS_AUTO = 0, /* a bar on a terminal, plain lines otherwise */
  CLI_PROGRESS_BAR,
  CLI_PROGRESS_PLAIN,
  CLI_PROGRESS_NONE
} cli_progress_mode;

typedef struct cli_progress {
  FILE *f;
  int bar;          /* 1: redraw a bar in place; 0: plain lines */
  int off;          /* 1: show nothing */
  double log_every; /* seconds between plain lines (default 10) */
  char label[96];
  char unit[24];
  int64_t total, done;
  double t0;          /* when start was called */
  int started;        /* an update came since start */
  double t_first;     /* when the first update came */
  int64_t done_first; /* and what it said */
  double last;        /* last draw or line */
  int shown;          /* a bar is on the line now */
} cli_progress;

/* mode AUTO decides by whether f is a terminal. */
void cli_progress_init(cli_progress *p, FILE *f, cli_progress_mode mode);
/* Starts a new task of `total` units (0 = unknown). */
void cli_progress_start(cli_progress *p, const char *label, int64_t total, const char *unit);
void cli_progress_update(cli_progress *p, int64_t done);
/* Erases the bar so that the caller can print a line; the next update
 * draws it again. */
void cli_progress_clear(cli_progress *p);
/* Ends the task: erases the bar. */
void cli_progress_end(cli_progress *p);

/* "1:02:03", "2:03", "0:07": a duration for humans. */
void cli_format_duration(double seconds, char *buf, size_t size);

#endif
