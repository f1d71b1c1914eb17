/* Evaluation metrics for slide-level models: classification (ROC AUC,
 * accuracy, Cohen's kappa), regression (correlations, errors), survival
 * (Harrell's c-index, Kaplan-Meier, log-rank), bootstrap confidence
 * intervals and summaries over folds.
 *
 * Conventions shared by every function here:
 *   - n is the number of samples; arrays are parallel and of length n
 *     (n * k for per-class score matrices, row-major: sample i, class c at
 *     [i * k + c]).
 *   - class labels are ints in [0, k); binary labels are 0 or 1.
 *   - scores, predictions and times are doubles; NaN is rejected with
 *     NIC_EINVAL naming the offending index (so are infinities where a
 *     value enters a sum: regression values, times).
 *   - a metric that is undefined on its input (a single class for AUC, a
 *     constant variable for a correlation, no comparable pair for the
 *     c-index) fails with NIC_EINVAL and a message saying why; the
 *     bootstrap relies on that to recognise undefined resamples.
 * Definitions and tie handling are documented in docs/metrics.md. */
#ifndef NIC_METRICS_H
#define NIC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "nic/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Binary and multiclass classification ---- */

/* Area under the ROC curve of scores for binary labels (1 = positive,
 * higher score = more positive). Exact with ties: AUC = U / (n1 * n0), the
 * Mann-Whitney U statistic where a tied positive-negative pair counts 1/2.
 * O(n log n). */
nic_status nic_auc(const int *labels, const double *scores, size_t n, double *auc, nic_error *err);

/* The ROC curve: one point per distinct score, from (0, 0) to (1, 1).
 * Point i is the (false, true) positive rate when every sample with
 * score >= threshold[i] is called positive; threshold[0] is +inf. Tied
 * scores give one diagonal step, so the trapezoidal area under the points
 * equals nic_auc exactly. */
typedef struct nic_roc {
  size_t n;          /* number of points */
  double *fpr;       /* false positive rate, non-decreasing */
  double *tpr;       /* true positive rate, non-decreasing */
  double *threshold; /* score threshold of each point */
  double auc;        /* nic_auc of the same data */
} nic_roc;

nic_status nic_roc_curve(const int *labels, const double *scores, size_t n, nic_roc *roc,
                         nic_error *err);
void nic_roc_free(nic_roc *roc); /* releases the arrays; the struct is zeroed */

/* Macro-averaged one-vs-rest AUC for k >= 2 classes: the mean over classes
 * c of the AUC of scores[:, c] for "label == c" against the rest (as
 * scikit-learn's roc_auc_score(multi_class="ovr", average="macro")).
 * scores is n x k row-major. Fails when a class has no sample (its AUC is
 * undefined). per_class (k values) may be NULL. */
nic_status nic_auc_ovr_macro(const int *labels, const double *scores, size_t n, int k, double *auc,
                             double *per_class, nic_error *err);

/* Fraction of samples with pred == truth. */
nic_status nic_accuracy(const int *truth, const int *pred, size_t n, double *acc, nic_error *err);

/* Mean over the classes present in truth of the recall of that class (as
 * scikit-learn's balanced_accuracy_score). Classes in [0, k). */
nic_status nic_balanced_accuracy(const int *truth, const int *pred, size_t n, int k, double *bacc,
                                 nic_error *err);

/* k x k counts, row = true class, column = predicted class. */
nic_status nic_confusion_matrix(const int *truth, const int *pred, size_t n, int k, int64_t *cm,
                                nic_error *err);

typedef enum nic_kappa_weights {
  NIC_KAPPA_UNWEIGHTED, /* Cohen (1960): any disagreement weighs 1 */
  NIC_KAPPA_LINEAR,     /* disagreement weight |i - j| / (k - 1), for ordinal classes */
  NIC_KAPPA_QUADRATIC   /* (i - j)^2 / (k - 1)^2, for ordinal classes */
} nic_kappa_weights;

/* Cohen's kappa between two ratings (truth and prediction, or two raters)
 * of n samples into k classes: 1 - sum(w * observed) / sum(w * expected)
 * with disagreement weights w and expected = outer product of the
 * marginals. Undefined (NIC_EINVAL) when the expected disagreement is 0,
 * i.e. both raters use a single, common class. */
nic_status nic_cohen_kappa(const int *a, const int *b, size_t n, int k, nic_kappa_weights w,
                           double *kappa, nic_error *err);

/* The same from a k x k contingency table (counts or proportions, row =
 * rater a, column = rater b), e.g. one printed in a paper. */
nic_status nic_cohen_kappa_table(const double *table, int k, nic_kappa_weights w, double *kappa,
                                 nic_error *err);

/* ---- Regression and correlation ---- */

/* Average ranks (1-based): tied values share the mean of the ranks they
 * span, e.g. {10, 20, 20, 30} -> {1, 2.5, 2.5, 4}. */
nic_status nic_rank_average(const double *x, size_t n, double *ranks, nic_error *err);

/* Pearson's r. Undefined when either variable is constant. */
nic_status nic_pearson(const double *x, const double *y, size_t n, double *r, nic_error *err);

/* Spearman's rho: Pearson's r of the average ranks (the tie-corrected
 * form; equals 1 - 6 sum d^2 / (n (n^2 - 1)) when there are no ties). */
nic_status nic_spearman(const double *x, const double *y, size_t n, double *rho, nic_error *err);

nic_status nic_mae(const double *truth, const double *pred, size_t n, double *mae, nic_error *err);
nic_status nic_mse(const double *truth, const double *pred, size_t n, double *mse, nic_error *err);

/* Coefficient of determination 1 - SS_res / SS_tot (SS_tot about the mean
 * of truth); can be negative. Undefined when truth is constant. */
nic_status nic_r2(const double *truth, const double *pred, size_t n, double *r2, nic_error *err);

/* ---- Survival ----
 * time[i] is a finite follow-up time; event[i] = 1 when it is an observed
 * event (death, progression), 0 when the subject was censored then. */

typedef struct nic_cindex_counts {
  int64_t comparable; /* pairs that can be ordered */
  int64_t concordant; /* the earlier failure has the higher risk */
  int64_t discordant; /* the earlier failure has the lower risk */
  int64_t tied_risk;  /* equal risks, counted 1/2 */
} nic_cindex_counts;

/* Harrell's concordance index of risk scores (higher risk = earlier
 * failure, e.g. a Cox model's linear predictor):
 * (concordant + tied_risk / 2) / comparable. A pair (i, j) is comparable
 * when event[i] = 1 and time[i] < time[j], or time[i] == time[j] with
 * event[j] = 0 (a subject censored at an event time is taken to outlive
 * it); two events at the same time are not comparable. This is the rule of
 * lifelines' concordance_index and scikit-survival's
 * concordance_index_censored (which agree on it); risk ties are exact
 * equality. O(n log n) (a Fenwick tree over risk ranks). counts may be
 * NULL. Undefined when no pair is comparable (e.g. no event). */
nic_status nic_cindex(const double *time, const int *event, const double *risk, size_t n, double *c,
                      nic_cindex_counts *counts, nic_error *err);

/* The Kaplan-Meier product-limit estimate, one row per distinct observed
 * time (event or censoring). At time[i], at_risk[i] subjects have
 * time >= time[i]; surv[i] = S(time[i]) is the survival just after it
 * (right-continuous step function, S = 1 before time[0]). se is
 * Greenwood's standard error (NaN once S reaches 0). */
typedef struct nic_km {
  size_t n;          /* rows */
  int64_t total;     /* subjects */
  double *time;      /* ascending */
  int64_t *at_risk;  /* subjects at risk just before time[i] */
  int64_t *events;   /* events at time[i] */
  int64_t *censored; /* censorings at time[i] */
  double *surv;      /* S(time[i]) */
  double *se;        /* Greenwood standard error of surv[i] */
} nic_km;

nic_status nic_km_fit(const double *time, const int *event, size_t n, nic_km *km, nic_error *err);
void nic_km_free(nic_km *km);
/* S(t) of the fitted step function. */
double nic_km_surv_at(const nic_km *km, double t);
/* Subjects still at risk at t (time >= t). */
int64_t nic_km_at_risk_at(const nic_km *km, double t);
/* Median survival: the first time with S <= 0.5; NaN when S stays above. */
double nic_km_median(const nic_km *km);

typedef struct nic_logrank_result {
  double chi2; /* the log-rank statistic */
  int df;      /* degrees of freedom: non-empty groups - 1 */
  double p;    /* upper tail of chi-square(df) at chi2 */
} nic_logrank_result;

/* Log-rank (Mantel-Cox) test that the survival curves of groups in [0, k)
 * are equal: chi2 = (O - E)' V^-1 (O - E) over all non-empty groups but
 * one, with the hypergeometric variance (ties handled exactly as in R's
 * survdiff). Empty groups are dropped (df counts the others). observed and
 * expected (k values each, events per group) may be NULL. Fails with
 * NIC_EINVAL when fewer than two groups are non-empty or there is no
 * event. */
nic_status nic_logrank(const double *time, const int *event, const int *group, size_t n, int k,
                       nic_logrank_result *res, double *observed, double *expected, nic_error *err);

/* P(X > x) for X ~ chi-square with df > 0 degrees of freedom (the
 * regularized upper incomplete gamma Q(df/2, x/2)); 1 for x <= 0. */
double nic_chi2_sf(double x, double df);

/* ---- One interface over the metrics: bootstrap, summaries ---- */

typedef enum nic_metric {
  NIC_METRIC_AUC,               /* labels (0/1), score (n) */
  NIC_METRIC_AUC_MACRO,         /* labels, score (n x k), k */
  NIC_METRIC_ACCURACY,          /* labels, pred */
  NIC_METRIC_BALANCED_ACCURACY, /* labels, pred, k */
  NIC_METRIC_KAPPA,             /* labels, pred, k */
  NIC_METRIC_KAPPA_LINEAR,      /* labels, pred, k */
  NIC_METRIC_KAPPA_QUADRATIC,   /* labels, pred, k */
  NIC_METRIC_PEARSON,           /* y_true, y_pred */
  NIC_METRIC_SPEARMAN,          /* y_true, y_pred */
  NIC_METRIC_MAE,               /* y_true, y_pred */
  NIC_METRIC_MSE,               /* y_true, y_pred */
  NIC_METRIC_R2,                /* y_true, y_pred */
  NIC_METRIC_CINDEX,            /* time, event, risk */
  NIC_METRIC_COUNT
} nic_metric;

/* "auc", "auc_macro", "accuracy", "balanced_accuracy", "kappa",
 * "kappa_linear", "kappa_quadratic", "pearson", "spearman", "mae", "mse",
 * "r2", "cindex". */
const char *nic_metric_name(nic_metric m);
nic_status nic_metric_from_name(const char *name, nic_metric *m, nic_error *err);

/* The data one metric reads (only the fields its comment above names;
 * the rest may be NULL). The arrays are the caller's and are not copied. */
typedef struct nic_metric_data {
  nic_metric metric;
  size_t n;             /* samples */
  int k;                /* classes, for the multiclass metrics */
  const int *labels;    /* true classes */
  const int *pred;      /* predicted classes */
  const double *score;  /* AUC: one score per sample; AUC_MACRO: n x k */
  const double *y_true; /* regression targets */
  const double *y_pred; /* regression predictions */
  const double *time;   /* survival times */
  const int *event;     /* 1 = event, 0 = censored */
  const double *risk;   /* risk scores (higher = earlier failure) */
} nic_metric_data;

/* Evaluates d->metric on the samples idx[0..m) (repetition allowed), or on
 * all d->n samples when idx is NULL (m is then ignored). */
nic_status nic_metric_eval(const nic_metric_data *d, const size_t *idx, size_t m, double *value,
                           nic_error *err);

/* A metric evaluated on a resample: idx[0..m) index the caller's n samples
 * (with repetition). Return NIC_EINVAL (or a NaN value) when the metric is
 * undefined on that resample; any other failure aborts the bootstrap. */
typedef nic_status (*nic_metric_fn)(void *user, const size_t *idx, size_t m, double *value,
                                    nic_error *err);

/* A nic_metric_fn over a nic_metric_data (pass the data as user). */
nic_status nic_metric_fn_data(void *user, const size_t *idx, size_t m, double *value,
                              nic_error *err);

typedef struct nic_bootstrap_opts {
  int resamples;     /* valid resamples to collect (default 1000) */
  uint64_t seed;     /* seeds a private nic_rng: same seed, same interval */
  double level;      /* interval coverage (default 0.95) */
  int max_undefined; /* undefined resamples redrawn before giving up; -1 (the
                      * default) = resamples, 0 = fail on the first one */
  const int *strata; /* optional, n values: resample within each stratum, keeping its size */
} nic_bootstrap_opts;

nic_bootstrap_opts nic_bootstrap_default_opts(void);

typedef struct nic_interval {
  double estimate; /* the metric on the full sample */
  double lo, hi;   /* percentile interval of the resampled metric */
  double se;       /* standard deviation of the resampled metric */
  double level;    /* the coverage asked for */
  int resamples;   /* valid resamples used */
  int undefined;   /* resamples on which the metric was undefined (redrawn) */
} nic_interval;

/* Percentile bootstrap: draws opts->resamples samples of size n with
 * replacement (within strata when given), evaluates fn on each, and
 * reports the (1 - level)/2 and (1 + level)/2 quantiles (linear
 * interpolation between order statistics). A resample on which fn returns
 * NIC_EINVAL is undefined and is redrawn, so the interval always rests on
 * opts->resamples values; more than max_undefined of them fail the call.
 * The full-sample estimate must be defined. */
nic_status nic_bootstrap(nic_metric_fn fn, void *user, size_t n, const nic_bootstrap_opts *opts,
                         nic_interval *out, nic_error *err);

/* Mean and sample standard deviation (n - 1 denominator; 0 for one value)
 * of per-fold results, e.g. "0.871 +- 0.023" over 5 folds. */
typedef struct nic_summary {
  int n;
  double mean, sd, min, max;
} nic_summary;

nic_status nic_summarize(const double *values, int n, nic_summary *out, nic_error *err);

#ifdef __cplusplus
}
#endif
#endif
