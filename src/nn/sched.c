/* Learning-rate schedules: constant, step decay, cosine with linear warmup,
 * and reduce-on-plateau with PyTorch's ReduceLROnPlateau rules.
 *
 * nic_sched_lr(s, epoch, metric) answers "which LR for this epoch". For
 * PLATEAU the metric is therefore the validation result of the epoch before:
 * at epoch 0 there is none, so the call ignores it and (re)starts the state;
 * a NaN metric (no validation that epoch) leaves the state unchanged. */
#include <math.h>
#include <string.h>

#include "nic/nn.h"

/* PyTorch's ReduceLROnPlateau defaults: relative threshold 1e-4, and LR
 * changes smaller than 1e-8 are not applied. */
#define PLATEAU_THRESHOLD 1e-4f
#define PLATEAU_EPS 1e-8

static nic_schedule blank(nic_sched_kind kind, float base) {
  nic_schedule s;
  memset(&s, 0, sizeof s);
  s.kind = kind;
  s.base_lr = base;
  s.cur_lr = base;
  return s;
}

nic_schedule nic_sched_step(float base, int step_size, float gamma) {
  nic_schedule s = blank(NIC_SCHED_STEP, base);
  s.step_size = step_size;
  s.gamma = gamma;
  return s;
}

nic_schedule nic_sched_cosine(float base, float min_lr, int total, int warmup) {
  nic_schedule s = blank(NIC_SCHED_COSINE, base);
  s.min_lr = min_lr;
  s.total = total;
  s.warmup = warmup;
  return s;
}

nic_schedule nic_sched_plateau(float base, float factor, int patience, float min_lr, int mode_max) {
  nic_schedule s = blank(NIC_SCHED_PLATEAU, base);
  s.factor = factor;
  s.patience = patience;
  s.min_lr = min_lr;
  s.threshold = PLATEAU_THRESHOLD;
  s.mode_max = mode_max;
  s.best = mode_max ? -INFINITY : INFINITY;
  return s;
}

/* base * gamma^floor(epoch / step_size); step_size <= 0 means no decay. */
static double step_lr(const nic_schedule *s, int epoch) {
  if (s->step_size <= 0 || epoch < 0) return s->base_lr;
  return s->base_lr * pow(s->gamma, epoch / s->step_size);
}

/* Warmup epochs 0..w-1 rise linearly to base ((e+1)/w * base), then the LR
 * follows half a cosine from base down to min_lr, reached at `total`. */
static double cosine_lr(const nic_schedule *s, int epoch) {
  if (epoch < 0) epoch = 0;
  if (epoch < s->warmup) return s->base_lr * (epoch + 1.0) / s->warmup;
  int span = s->total - (s->warmup > 0 ? s->warmup : 0);
  if (epoch >= s->total || span <= 0) return s->min_lr;
  double progress = (double)(epoch - (s->warmup > 0 ? s->warmup : 0)) / span;
  return s->min_lr + (s->base_lr - s->min_lr) * 0.5 * (1 + cos(M_PI * progress));
}

/* PyTorch's relative threshold: better means beyond best by a factor. */
static int plateau_better(const nic_schedule *s, float metric) {
  if (s->mode_max) return metric > s->best * (1 + s->threshold);
  return metric < s->best * (1 - s->threshold);
}

static double plateau_lr(nic_schedule *s, int epoch, float metric) {
  if (epoch <= 0 || !s->started) {
    s->cur_lr = s->base_lr;
    s->best = s->mode_max ? -INFINITY : INFINITY;
    s->bad_epochs = 0;
    s->started = 1;
    if (epoch <= 0) return s->cur_lr;
  }
  if (isnan(metric)) return s->cur_lr;
  if (plateau_better(s, metric)) {
    s->best = metric;
    s->bad_epochs = 0;
  } else {
    s->bad_epochs++;
  }
  if (s->bad_epochs > s->patience) {
    double lr = fmax((double)s->cur_lr * s->factor, s->min_lr);
    if (s->cur_lr - lr > PLATEAU_EPS) s->cur_lr = (float)lr;
    s->bad_epochs = 0;
  }
  return s->cur_lr;
}

float nic_sched_lr(nic_schedule *s, int epoch, float metric) {
  double lr = s->base_lr;
  switch (s->kind) {
  case NIC_SCHED_CONSTANT:
    break;
  case NIC_SCHED_STEP:
    lr = step_lr(s, epoch);
    break;
  case NIC_SCHED_COSINE:
    lr = cosine_lr(s, epoch);
    break;
  case NIC_SCHED_PLATEAU:
    return (float)plateau_lr(s, epoch, metric);
  }
  s->cur_lr = (float)lr;
  return s->cur_lr;
}
