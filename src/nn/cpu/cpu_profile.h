/* Private: the CPU backend's profiler, as the CLI sees it.
 *
 * With NIC_PROFILE=1 in the environment when a context is created (or after
 * nic_profile_enable), the backend adds up the wall time of every layer,
 * split into phases: forward, backward-data, backward-weights, layout
 * reorders, and "other" (the rest of the layer's call: memory objects,
 * gradient sums, BN running statistics). Work outside the backend (the
 * optimizer step, input preparation, the loss) is added by the caller with
 * nic_profile_note. The numbers live in the backend, not in globals, so
 * several contexts profile independently.
 *
 * Every primitive is waited for before its time is read (the backend always
 * does), so the split is exact up to the cost of reading the clock, about
 * 20 ns per primitive. When a context was created with NIC_PROFILE=1 the
 * table is printed to stderr when the context is freed, so that any command
 * can be profiled without changes; `nic bench encoder --profile` prints one
 * per measured phase instead. */
#ifndef NIC_NN_CPU_PROFILE_H
#define NIC_NN_CPU_PROFILE_H

#include <stdio.h>

#include "nic/ctx.h"

/* Phases of a layer's time; the table's columns. */
typedef enum nic_prof_phase {
  NIC_PROF_FWD,
  NIC_PROF_BWD_DATA, /* includes the fused activation's and BN's backward */
  NIC_PROF_BWD_W,
  NIC_PROF_REORDER,
  NIC_PROF_OTHER,
  NIC_PROF_NPHASE
} nic_prof_phase;

/* Whether ctx's backend is profiling (0 for backends without a profiler). */
int nic_profile_enabled(nic_ctx *ctx);
/* Turns profiling on or off (a no-op for backends without a profiler). */
void nic_profile_enable(nic_ctx *ctx, int on);
/* Forgets what was measured so far (e.g. after warm-up). */
void nic_profile_reset(nic_ctx *ctx);
/* Adds `seconds` of work done outside the backend to the row `what`
 * (created on first use; `what` is copied). */
void nic_profile_note(nic_ctx *ctx, const char *what, double seconds);
/* Prints the table: one row per layer and noted item, in milliseconds per
 * batch (totals divided by `batches`; batches <= 0: totals) and percent of
 * the sum of all rows.
 * wall_s > 0 adds a row for the wall time no row accounts for. Marks the
 * profile as printed, so freeing the context prints nothing more. */
void nic_profile_print(nic_ctx *ctx, FILE *f, const char *title, long batches, double wall_s);

#endif
