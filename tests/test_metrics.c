/* Metrics against hand-computed and textbook values, brute-force
 * references on random data, and degenerate inputs. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nic/metrics.h"
#include "testutil.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- AUC and ROC ---- */

static void test_auc_ties_by_hand(void) {
  /* Positives 0.9 0.8 0.5 0.5, negatives 0.7 0.5 0.3 0.2 0.5. Counting for
   * each positive the negatives below it plus half the tied ones:
   * 5 + 5 + (2 + 2/2) + (2 + 2/2) = 16 = U; AUC = U / (4 * 5) = 0.8. */
  int y[] = {1, 1, 1, 1, 0, 0, 0, 0, 0};
  double s[] = {0.9, 0.8, 0.5, 0.5, 0.7, 0.5, 0.3, 0.2, 0.5};
  double auc = 0;
  CHECK_OK(nic_auc(y, s, N_OF(y), &auc, NULL));
  CHECK_NEAR(auc, 0.8, 1e-15);

  /* The ROC curve: one point per distinct score, the tie at 0.5 as one
   * diagonal step from (0.2, 0.5) to (0.6, 1.0). */
  nic_roc roc = {0};
  CHECK_OK(nic_roc_curve(y, s, N_OF(y), &roc, NULL));
  double fpr[] = {0, 0, 0, 0.2, 0.6, 0.8, 1.0}, tpr[] = {0, 0.25, 0.5, 0.5, 1, 1, 1};
  double thr[] = {INFINITY, 0.9, 0.8, 0.7, 0.5, 0.3, 0.2};
  CHECK(roc.n == 7);
  for (size_t i = 0; i < roc.n && i < 7; i++) {
    CHECK_NEAR(roc.fpr[i], fpr[i], 1e-15);
    CHECK_NEAR(roc.tpr[i], tpr[i], 1e-15);
    CHECK(roc.threshold[i] == thr[i]);
  }
  double area = 0; /* trapezoids equal the rank statistic, ties included */
  for (size_t i = 1; i < roc.n; i++)
    area += (roc.fpr[i] - roc.fpr[i - 1]) * 0.5 * (roc.tpr[i] + roc.tpr[i - 1]);
  CHECK_NEAR(area, 0.8, 1e-15);
  CHECK_NEAR(roc.auc, 0.8, 1e-15);
  nic_roc_free(&roc);
  CHECK(roc.fpr == NULL && roc.n == 0);
}

static void test_auc_extremes(void) {
  int y[] = {0, 0, 1, 1, 0, 1};
  double up[] = {0.1, 0.2, 0.8, 0.9, 0.3, 0.7}, same[] = {3, 3, 3, 3, 3, 3};
  double down[6], auc = -1;
  for (int i = 0; i < 6; i++) down[i] = -up[i];
  CHECK_OK(nic_auc(y, up, 6, &auc, NULL));
  CHECK(auc == 1.0);
  CHECK_OK(nic_auc(y, down, 6, &auc, NULL));
  CHECK(auc == 0.0);
  CHECK_OK(nic_auc(y, same, 6, &auc, NULL));
  CHECK(auc == 0.5);
  /* Infinite scores still order. */
  double inf[] = {-INFINITY, 0, 1, INFINITY, 0.5, 2};
  CHECK_OK(nic_auc(y, inf, 6, &auc, NULL));
  CHECK(auc == 1.0);
}

/* O(n^2) Mann-Whitney reference. */
static double auc_brute(const int *y, const double *s, size_t n) {
  double u = 0, np = 0, nn = 0;
  for (size_t i = 0; i < n; i++) {
    np += y[i] == 1, nn += y[i] == 0;
    if (y[i] != 1) continue;
    for (size_t j = 0; j < n; j++)
      if (y[j] == 0) u += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
  }
  return u / (np * nn);
}

static void test_auc_random_vs_brute_force(void) {
  nic_rng r;
  nic_rng_seed(&r, 7);
  enum { n = 400 };
  int y[n];
  double s[n];
  for (int rep = 0; rep < 5; rep++) {
    for (int i = 0; i < n; i++) {
      y[i] = nic_rng_uniform(&r) < 0.3;
      /* Few distinct scores: many ties, shifted up for positives. */
      s[i] = floor(10 * nic_rng_uniform(&r) + 3 * y[i]) / 10;
    }
    double auc = 0;
    CHECK_OK(nic_auc(y, s, n, &auc, NULL));
    CHECK_NEAR(auc, auc_brute(y, s, n), 1e-12);
    nic_roc roc = {0};
    CHECK_OK(nic_roc_curve(y, s, n, &roc, NULL));
    double area = 0;
    for (size_t i = 1; i < roc.n; i++)
      area += (roc.fpr[i] - roc.fpr[i - 1]) * 0.5 * (roc.tpr[i] + roc.tpr[i - 1]);
    CHECK_NEAR(area, auc, 1e-12);
    CHECK(roc.fpr[roc.n - 1] == 1.0 && roc.tpr[roc.n - 1] == 1.0);
    nic_roc_free(&roc);
  }
}

static void test_auc_errors(void) {
  nic_error e = {0};
  int one[] = {1, 1, 1}, bad[] = {0, 2, 1}, y[] = {0, 1, 1};
  double s[] = {0.1, 0.2, 0.3}, nan[] = {0.1, NAN, 0.3}, auc = 0;
  CHECK(nic_auc(one, s, 3, &auc, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "only one class") != NULL);
  CHECK(nic_auc(bad, s, 3, &auc, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "labels[1]") != NULL);
  CHECK(nic_auc(y, nan, 3, &auc, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "scores[1] is NaN") != NULL);
  CHECK(nic_auc(y, s, 0, &auc, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "n = 0") != NULL);
  CHECK(nic_auc(NULL, s, 3, &auc, &e) == NIC_EINVAL);
  nic_roc roc = {0};
  CHECK(nic_roc_curve(one, s, 3, &roc, &e) == NIC_EINVAL);
  CHECK(roc.fpr == NULL);
}

static void test_auc_macro(void) {
  /* Three classes; each column's one-vs-rest AUC checked separately. */
  int y[] = {0, 0, 1, 1, 2, 2, 2};
  double p[] = {0.7,      0.2, 0.1, /**/ 0.4, 0.4, 0.2, /**/ 0.3, 0.5, 0.2, /**/ 0.1, 0.8, 0.1,
                /**/ 0.2, 0.2, 0.6, /**/ 0.3, 0.3, 0.4, /**/ 0.5, 0.1, 0.4};
  double macro = 0, per[3] = {0}, sum = 0;
  CHECK_OK(nic_auc_ovr_macro(y, p, 7, 3, &macro, per, NULL));
  for (int c = 0; c < 3; c++) {
    int yc[7];
    double sc[7], a = 0;
    for (int i = 0; i < 7; i++) yc[i] = y[i] == c, sc[i] = p[i * 3 + c];
    CHECK_OK(nic_auc(yc, sc, 7, &a, NULL));
    CHECK_NEAR(per[c], a, 1e-15);
    sum += a;
  }
  CHECK_NEAR(macro, sum / 3, 1e-15);
  /* Class 0 by hand: positives 0.7, 0.4 against 0.3, 0.1, 0.2, 0.3, 0.5:
   * 0.7 beats all 5, 0.4 beats 4 -> 9 / 10. */
  CHECK_NEAR(per[0], 0.9, 1e-15);
  nic_error e = {0};
  int missing[] = {0, 0, 1, 1, 0, 1, 1}; /* class 2 absent */
  CHECK(nic_auc_ovr_macro(missing, p, 7, 3, &macro, NULL, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "class 2") != NULL);
  CHECK(nic_auc_ovr_macro(y, p, 7, 1, &macro, NULL, &e) == NIC_EINVAL);
}

/* ---- Accuracy, confusion, kappa ---- */

static void test_accuracy_confusion(void) {
  int t[] = {0, 0, 0, 0, 1, 1, 2, 2, 2, 2};
  int p[] = {0, 0, 1, 0, 1, 0, 2, 2, 1, 2};
  double acc = 0, bacc = 0;
  CHECK_OK(nic_accuracy(t, p, 10, &acc, NULL));
  CHECK_NEAR(acc, 0.7, 1e-15);
  /* Recalls 3/4, 1/2, 3/4 -> mean 2/3. */
  CHECK_OK(nic_balanced_accuracy(t, p, 10, 3, &bacc, NULL));
  CHECK_NEAR(bacc, 2.0 / 3.0, 1e-15);
  /* A class absent from truth is left out of the mean: recalls 1 and 1/2. */
  int t2[] = {0, 0, 1, 1}, p2[] = {0, 0, 1, 3};
  CHECK_OK(nic_balanced_accuracy(t2, p2, 4, 4, &bacc, NULL));
  CHECK_NEAR(bacc, 0.75, 1e-15);
  int64_t cm[9];
  CHECK_OK(nic_confusion_matrix(t, p, 10, 3, cm, NULL));
  int64_t want[9] = {3, 1, 0, 1, 1, 0, 0, 1, 3};
  CHECK(memcmp(cm, want, sizeof cm) == 0);
  nic_error e = {0};
  int bad[] = {0, 3};
  CHECK(nic_confusion_matrix(bad, bad, 2, 3, cm, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "truth[1] = 3") != NULL);
  CHECK(nic_accuracy(t, p, 0, &acc, &e) == NIC_EINVAL);
}

static void test_kappa_literature(void) {
  /* Wikipedia's example (50 applications): yes/yes 20, yes/no 5, no/yes 10,
   * no/no 15; p_o = 0.7, p_e = 0.5, kappa = 0.4. */
  double wiki[] = {20, 5, 10, 15}, kappa = 0;
  CHECK_OK(nic_cohen_kappa_table(wiki, 2, NIC_KAPPA_UNWEIGHTED, &kappa, NULL));
  CHECK_NEAR(kappa, 0.4, 1e-14);
  /* Altman, Practical Statistics for Medical Research (1991), sec. 14.3:
   * two radiologists grading 85 xeromammograms (normal, benign, suspected
   * cancer, cancer). Reported kappa = 0.47 and, with linear weights
   * (1, 2/3, 1/3, 0 agreement), weighted kappa = 0.57. */
  double alt[] = {21, 12, 0, 0, 4, 17, 1, 0, 3, 9, 15, 2, 0, 0, 0, 1};
  CHECK_OK(nic_cohen_kappa_table(alt, 4, NIC_KAPPA_UNWEIGHTED, &kappa, NULL));
  CHECK_NEAR(kappa, 0.4727891156462586, 1e-12);
  CHECK(fabs(kappa - 0.47) < 0.005);
  CHECK_OK(nic_cohen_kappa_table(alt, 4, NIC_KAPPA_LINEAR, &kappa, NULL));
  CHECK_NEAR(kappa, 0.5683990442054958, 1e-12);
  CHECK(fabs(kappa - 0.57) < 0.005);
  CHECK_OK(nic_cohen_kappa_table(alt, 4, NIC_KAPPA_QUADRATIC, &kappa, NULL));
  CHECK_NEAR(kappa, 0.6713705780011598, 1e-12);
  /* Proportions give the same kappa as counts. */
  double prop[16];
  for (int i = 0; i < 16; i++) prop[i] = alt[i] / 85.0;
  CHECK_OK(nic_cohen_kappa_table(prop, 4, NIC_KAPPA_LINEAR, &kappa, NULL));
  CHECK_NEAR(kappa, 0.5683990442054958, 1e-12);
}

static void test_kappa_by_hand(void) {
  /* 3x3 table, rows rater a: [10 3 1; 2 8 4; 0 3 9], N = 40; row sums
   * 14 14 12, column sums 12 14 14. Linear weights 0, 1/2, 1: observed
   * disagreement ((3 + 2 + 4 + 3)/2 + 1 + 0) / 40 = 7/40; expected
   * ((14*14 + 14*12 + 14*14 + 12*14)/2 + 14*14 + 12*12) / 1600 = 704/1600;
   * kappa = 1 - (7/40) / (704/1600) = 53/88. */
  double t[] = {10, 3, 1, 2, 8, 4, 0, 3, 9}, kappa = 0;
  CHECK_OK(nic_cohen_kappa_table(t, 3, NIC_KAPPA_LINEAR, &kappa, NULL));
  CHECK_NEAR(kappa, 53.0 / 88.0, 1e-14);
  /* Quadratic: observed (12/4 + 1) / 40 = 4/40; expected
   * (728/4 + 340) / 1600 = 522/1600; kappa = 1 - 160/522 = 181/261. */
  CHECK_OK(nic_cohen_kappa_table(t, 3, NIC_KAPPA_QUADRATIC, &kappa, NULL));
  CHECK_NEAR(kappa, 181.0 / 261.0, 1e-14);
  /* Unweighted: p_o = 27/40, p_e = (14*12 + 14*14 + 12*14)/1600 = 532/1600. */
  CHECK_OK(nic_cohen_kappa_table(t, 3, NIC_KAPPA_UNWEIGHTED, &kappa, NULL));
  CHECK_NEAR(kappa, (27.0 / 40 - 532.0 / 1600) / (1 - 532.0 / 1600), 1e-14);

  /* The same table from individual ratings. */
  int a[40], b[40], m = 0;
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++)
      for (int c = 0; c < (int)t[i * 3 + j]; c++) a[m] = i, b[m] = j, m++;
  double kq = 0;
  CHECK_OK(nic_cohen_kappa(a, b, 40, 3, NIC_KAPPA_QUADRATIC, &kq, NULL));
  CHECK_NEAR(kq, 181.0 / 261.0, 1e-14);
  /* Two classes: all three weightings coincide. */
  int x[] = {0, 1, 1, 0, 1, 1, 0}, z[] = {0, 1, 0, 0, 1, 1, 1};
  double ku = 0, kl = 0;
  CHECK_OK(nic_cohen_kappa(x, z, 7, 2, NIC_KAPPA_UNWEIGHTED, &ku, NULL));
  CHECK_OK(nic_cohen_kappa(x, z, 7, 2, NIC_KAPPA_LINEAR, &kl, NULL));
  CHECK_OK(nic_cohen_kappa(x, z, 7, 2, NIC_KAPPA_QUADRATIC, &kq, NULL));
  CHECK_NEAR(ku, kl, 1e-15);
  CHECK_NEAR(ku, kq, 1e-15);
  CHECK_OK(nic_cohen_kappa(x, x, 7, 2, NIC_KAPPA_UNWEIGHTED, &ku, NULL));
  CHECK_NEAR(ku, 1.0, 1e-15);
  /* One class used by both raters: undefined. */
  nic_error e = {0};
  int same[] = {1, 1, 1};
  CHECK(nic_cohen_kappa(same, same, 3, 3, NIC_KAPPA_UNWEIGHTED, &ku, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "undefined") != NULL);
  double neg[] = {1, -1, 0, 1};
  CHECK(nic_cohen_kappa_table(neg, 2, NIC_KAPPA_UNWEIGHTED, &ku, &e) == NIC_EINVAL);
}

/* ---- Correlation and regression ---- */

static void test_ranks_and_spearman(void) {
  double x[] = {1, 2, 2, 3, 4, 4, 4, 5}, y[] = {2, 1, 3, 3, 5, 4, 4, 6};
  double rx[8], ry[8];
  double want_x[] = {1, 2.5, 2.5, 4, 6, 6, 6, 8}, want_y[] = {2, 1, 3.5, 3.5, 7, 5.5, 5.5, 8};
  CHECK_OK(nic_rank_average(x, 8, rx, NULL));
  CHECK_OK(nic_rank_average(y, 8, ry, NULL));
  for (int i = 0; i < 8; i++) CHECK(rx[i] == want_x[i] && ry[i] == want_y[i]);
  /* Pearson of those ranks by hand: both have mean 4.5; centred
   * x: -3.5 -2 -2 -.5 1.5 1.5 1.5 3.5, y: -2.5 -3.5 -1 -1 2.5 1 1 3.5;
   * sxy = 8.75+7+2+.5+3.75+1.5+1.5+12.25 = 37.25, sxx = 39.5, syy = 41. */
  double rho = 0;
  CHECK_OK(nic_spearman(x, y, 8, &rho, NULL));
  CHECK_NEAR(rho, 37.25 / sqrt(39.5 * 41.0), 1e-14);
  CHECK_NEAR(rho, 0.925626545313669, 1e-12);
  /* Without ties Spearman is 1 - 6 sum d^2 / (n (n^2 - 1)). */
  double a[] = {3.1, 1.2, 5.5, 4.0, 2.2, 9.9}, b[] = {2, 1, 6, 3, 5, 4};
  /* ranks a: 3 1 5 4 2 6; b: 2 1 6 3 5 4; d^2: 1 0 1 1 9 4 = 16 */
  CHECK_OK(nic_spearman(a, b, 6, &rho, NULL));
  CHECK_NEAR(rho, 1 - 6.0 * 16 / (6 * 35), 1e-14);
  /* Monotone but non-linear: rho = 1. */
  double c[] = {1, 2, 3, 4, 5}, d[] = {1, 8, 27, 64, 125};
  CHECK_OK(nic_spearman(c, d, 5, &rho, NULL));
  CHECK_NEAR(rho, 1.0, 1e-15);
}

static void test_pearson_and_errors(void) {
  /* x 1..5, y 2 4 5 4 5: sxy = 6, sxx = 10, syy = 6, r = sqrt(0.6). */
  double x[] = {1, 2, 3, 4, 5}, y[] = {2, 4, 5, 4, 5}, r = 0;
  CHECK_OK(nic_pearson(x, y, 5, &r, NULL));
  CHECK_NEAR(r, sqrt(0.6), 1e-15);
  /* Large offsets: two-pass sums keep the precision a one-pass formula loses. */
  double xo[5], yo[5];
  for (int i = 0; i < 5; i++) xo[i] = x[i] + 1e9, yo[i] = y[i] - 1e9;
  CHECK_OK(nic_pearson(xo, yo, 5, &r, NULL));
  CHECK_NEAR(r, sqrt(0.6), 1e-9);
  nic_error e = {0};
  double cst[] = {2, 2, 2, 2, 2}, nan[] = {1, 2, NAN, 4, 5};
  CHECK(nic_pearson(x, cst, 5, &r, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "constant") != NULL);
  CHECK(nic_spearman(cst, y, 5, &r, &e) == NIC_EINVAL);
  CHECK(nic_pearson(x, nan, 5, &r, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "y[2]") != NULL);
  CHECK(nic_pearson(x, y, 1, &r, &e) == NIC_EINVAL);
}

static void test_regression(void) {
  /* scikit-learn's documentation example. */
  double t[] = {3, -0.5, 2, 7}, p[] = {2.5, 0.0, 2, 8}, v = 0;
  CHECK_OK(nic_mae(t, p, 4, &v, NULL));
  CHECK_NEAR(v, 0.5, 1e-15);
  CHECK_OK(nic_mse(t, p, 4, &v, NULL));
  CHECK_NEAR(v, 0.375, 1e-15);
  /* R^2 = 1 - 1.5 / 29.1875 */
  CHECK_OK(nic_r2(t, p, 4, &v, NULL));
  CHECK_NEAR(v, 1 - 1.5 / 29.1875, 1e-15);
  CHECK_NEAR(v, 0.9486081370449679, 1e-15);
  double cst[] = {1, 1, 1, 1};
  nic_error e = {0};
  CHECK(nic_r2(cst, p, 4, &v, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "constant") != NULL);
  double inf[] = {1, INFINITY, 1, 1};
  CHECK(nic_mse(t, inf, 4, &v, &e) == NIC_EINVAL);
  CHECK(nic_mae(t, p, 0, &v, &e) == NIC_EINVAL);
}

/* ---- Survival ---- */

static void cindex_brute(const double *time, const int *event, const double *risk, size_t n,
                         nic_cindex_counts *c) {
  memset(c, 0, sizeof *c);
  for (size_t i = 0; i < n; i++) {
    if (!event[i]) continue;
    for (size_t j = 0; j < n; j++) {
      if (j == i) continue;
      if (!(time[i] < time[j] || (time[i] == time[j] && !event[j]))) continue;
      c->comparable++;
      if (risk[i] > risk[j])
        c->concordant++;
      else if (risk[i] == risk[j])
        c->tied_risk++;
      else
        c->discordant++;
    }
  }
}

static void test_cindex_by_hand(void) {
  /* Subject 0 (t 1, event, risk .9) is comparable with all 5 others and
   * concordant with each. Subject 1 (t 2, event, .5): with subject 2
   * (censored at 2, outlives it; .5 < .7 discordant), 3 (tied risk, 1/2),
   * 4 (concordant); not with 5, an event at the same time. Subject 3 (t 3):
   * with 4, concordant. Subject 5 (t 2, event, .2): with 2 and 3
   * (discordant), 4 (concordant). 12 pairs, 8 concordant, 1 tied:
   * C = 8.5 / 12. */
  double t[] = {1, 2, 2, 3, 4, 2}, r[] = {0.9, 0.5, 0.7, 0.5, 0.1, 0.2};
  int ev[] = {1, 1, 0, 1, 0, 1};
  double c = 0;
  nic_cindex_counts k = {0};
  CHECK_OK(nic_cindex(t, ev, r, 6, &c, &k, NULL));
  CHECK(k.comparable == 12 && k.concordant == 8 && k.discordant == 3 && k.tied_risk == 1);
  CHECK_NEAR(c, 8.5 / 12, 1e-15);
  /* Perfect and reversed risks. */
  double tt[] = {1, 2, 3, 4}, up[] = {4, 3, 2, 1}, down[] = {1, 2, 3, 4};
  int all[] = {1, 1, 1, 1};
  CHECK_OK(nic_cindex(tt, all, up, 4, &c, NULL, NULL));
  CHECK(c == 1.0);
  CHECK_OK(nic_cindex(tt, all, down, 4, &c, NULL, NULL));
  CHECK(c == 0.0);
  /* No event, or events only at the last time: no comparable pair. */
  nic_error e = {0};
  int none[] = {0, 0, 0, 0}, last[] = {0, 0, 0, 1};
  CHECK(nic_cindex(tt, none, up, 4, &c, NULL, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "no comparable pair") != NULL);
  CHECK(nic_cindex(tt, last, up, 4, &c, NULL, &e) == NIC_EINVAL);
  int bad[] = {0, 2, 1, 1};
  CHECK(nic_cindex(tt, bad, up, 4, &c, NULL, &e) == NIC_EINVAL);
  double nan[] = {1, NAN, 2, 3};
  CHECK(nic_cindex(nan, all, up, 4, &c, NULL, &e) == NIC_EINVAL);
  CHECK(nic_cindex(tt, all, nan, 4, &c, NULL, &e) == NIC_EINVAL);
}

static void test_cindex_random_vs_brute_force(void) {
  nic_rng r;
  nic_rng_seed(&r, 11);
  enum { n = 600 };
  double t[n], risk[n];
  int ev[n];
  for (int rep = 0; rep < 6; rep++) {
    for (int i = 0; i < n; i++) {
      /* Coarse times and risks for many ties of both kinds. */
      risk[i] = floor(nic_rng_uniform(&r) * (rep < 3 ? 8 : 1000));
      t[i] = floor(nic_rng_uniform(&r) * 30 * exp(-0.2 * risk[i] / (rep < 3 ? 1 : 125)));
      ev[i] = nic_rng_uniform(&r) < 0.6;
    }
    nic_cindex_counts fast = {0}, slow;
    double c = 0;
    CHECK_OK(nic_cindex(t, ev, risk, n, &c, &fast, NULL));
    cindex_brute(t, ev, risk, n, &slow);
    CHECK(fast.comparable == slow.comparable);
    CHECK(fast.concordant == slow.concordant);
    CHECK(fast.discordant == slow.discordant);
    CHECK(fast.tied_risk == slow.tied_risk);
    CHECK_NEAR(c, (slow.concordant + 0.5 * slow.tied_risk) / (double)slow.comparable, 1e-15);
    CHECK(c > 0.5); /* risk shortens time */
  }
}

/* Freireich et al. (1963): remission times in weeks of 21 leukaemia
 * patients on 6-mercaptopurine (+ = censored) and 21 on placebo. */
static const double mp_time[] = {6,  6,  6,  6,  7,  9,  10, 10, 11, 13, 16,
                                 17, 19, 20, 22, 23, 25, 32, 32, 34, 35};
static const int mp_event[] = {1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0};
static const double pl_time[] = {1, 1, 2,  2,  3,  4,  4,  5,  5,  8, 8,
                                 8, 8, 11, 11, 12, 12, 15, 17, 22, 23};

static void test_km_6mp(void) {
  nic_km km = {0};
  CHECK_OK(nic_km_fit(mp_time, mp_event, 21, &km, NULL));
  CHECK(km.n == 16 && km.total == 21);
  /* Event times with at-risk counts, survival and Greenwood standard errors
   * as tabulated (e.g. Klein & Moeschberger, Survival Analysis, table
   * 4.1A; Kleinbaum & Klein, Survival Analysis, ch. 2). */
  struct {
    double t;
    int risk, dead;
    double s, se;
  } want[] = {{6, 21, 3, 0.8571, 0.0764},  {7, 17, 1, 0.8067, 0.0869},  {10, 15, 1, 0.7529, 0.0963},
              {13, 12, 1, 0.6902, 0.1068}, {16, 11, 1, 0.6275, 0.1141}, {22, 7, 1, 0.5378, 0.1282},
              {23, 6, 1, 0.4482, 0.1346}};
  for (size_t w = 0; w < N_OF(want); w++) {
    size_t i = 0;
    while (i < km.n && km.time[i] != want[w].t) i++;
    CHECK(i < km.n);
    if (i == km.n) continue;
    CHECK(km.at_risk[i] == want[w].risk && km.events[i] == want[w].dead);
    CHECK_NEAR(km.surv[i], want[w].s, 5e-5);
    CHECK_NEAR(km.se[i], want[w].se, 5e-5);
  }
  /* Exact products: S(23) = 18/21 * 16/17 * 14/15 * 11/12 * 10/11 * 6/7 * 5/6. */
  CHECK_NEAR(nic_km_surv_at(&km, 23),
             18.0 / 21 * 16 / 17 * 14 / 15 * 11 / 12 * 10 / 11 * 6 / 7 * 5 / 6, 1e-15);
  CHECK(nic_km_surv_at(&km, 5.9) == 1.0);
  CHECK_NEAR(nic_km_surv_at(&km, 8), 0.8067, 5e-5);   /* a step holds until the next event */
  CHECK_NEAR(nic_km_surv_at(&km, 100), 0.4482, 5e-5); /* and past the last time */
  CHECK(nic_km_at_risk_at(&km, 0) == 21);
  CHECK(nic_km_at_risk_at(&km, 6) == 21);
  CHECK(nic_km_at_risk_at(&km, 6.5) == 17);
  CHECK(nic_km_at_risk_at(&km, 35) == 1);
  CHECK(nic_km_at_risk_at(&km, 36) == 0);
  CHECK(nic_km_median(&km) == 23); /* the known median remission time */
  /* Censorings are recorded where they happen: 6+ 9+ 10+ 11+ 17+ ... */
  CHECK(km.censored[0] == 1 && km.events[0] == 3);
  nic_km_free(&km);
  CHECK(km.time == NULL);

  /* Placebo: no censoring, median 8, S reaches 0 at 23 (se NaN there). */
  int all[21];
  for (int i = 0; i < 21; i++) all[i] = 1;
  CHECK_OK(nic_km_fit(pl_time, all, 21, &km, NULL));
  CHECK(nic_km_median(&km) == 8);
  CHECK(km.surv[km.n - 1] == 0.0 && isnan(km.se[km.n - 1]));
  CHECK_NEAR(nic_km_surv_at(&km, 8), 8.0 / 21, 1e-15);
  nic_km_free(&km);

  nic_error e = {0};
  CHECK(nic_km_fit(mp_time, mp_event, 0, &km, &e) == NIC_EINVAL);
  double nan[] = {1, NAN};
  CHECK(nic_km_fit(nan, all, 2, &km, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "time[1]") != NULL);
}

static void test_logrank(void) {
  double t[42];
  int ev[42], g[42];
  for (int i = 0; i < 21; i++) {
    t[i] = mp_time[i], ev[i] = mp_event[i], g[i] = 0;
    t[21 + i] = pl_time[i], ev[21 + i] = 1, g[21 + i] = 1;
  }
  nic_logrank_result res = {0};
  double obs[2], exp_[2];
  CHECK_OK(nic_logrank(t, ev, g, 42, 2, &res, obs, exp_, NULL));
  /* The textbook result: chi2 = 16.79 on 1 df, p = 4.2e-5; E = 19.25 and
   * 10.75 for O = 9 and 21 (R survdiff on the gehan data). */
  CHECK_NEAR(res.chi2, 16.792940989216532, 1e-9);
  CHECK(res.df == 1);
  CHECK_NEAR(res.p, 4.17e-5, 0.01e-5);
  CHECK_NEAR(res.p, erfc(sqrt(res.chi2 / 2)), 1e-15);
  CHECK(obs[0] == 9 && obs[1] == 21);
  CHECK_NEAR(exp_[0], 19.25050094803113, 1e-9);
  CHECK_NEAR(exp_[1], 10.74949905196887, 1e-9);

  /* An empty group is dropped: same test with k = 3 and group 2 unused. */
  nic_logrank_result r3 = {0};
  int g2[42];
  for (int i = 0; i < 42; i++) g2[i] = g[i] ? 2 : 0;
  CHECK_OK(nic_logrank(t, ev, g2, 42, 3, &r3, NULL, NULL, NULL));
  CHECK_NEAR(r3.chi2, res.chi2, 1e-9);
  CHECK(r3.df == 1);

  /* Three groups, against an independent computation in exact rational
   * arithmetic (O, E and the hypergeometric covariances summed over event
   * times, then z' V^-1 z over groups 0 and 1). */
  double t3[] = {5, 8, 8, 12, 3, 9, 9, 15, 20, 2, 4, 4, 6, 7, 11, 13, 1, 10, 10, 14};
  int e3[] = {1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0};
  int gr3[] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0, 1, 2, 2};
  double o3[3], x3[3];
  CHECK_OK(nic_logrank(t3, e3, gr3, 20, 3, &r3, o3, x3, NULL));
  CHECK_NEAR(r3.chi2, 3.195870238172527, 1e-9);
  CHECK(r3.df == 2);
  CHECK_NEAR(r3.p, exp(-r3.chi2 / 2), 1e-14); /* chi-square(2) tail */
  CHECK(o3[0] == 5 && o3[1] == 4 && o3[2] == 5);
  CHECK_NEAR(x3[0], 2.5879514018832905, 1e-9);
  CHECK_NEAR(x3[1] + x3[2], 14 - x3[0], 1e-9); /* E sums to the events */
  /* Relabelling groups changes nothing. */
  int perm[20];
  for (int i = 0; i < 20; i++) perm[i] = (gr3[i] + 1) % 3;
  nic_logrank_result rp = {0};
  CHECK_OK(nic_logrank(t3, e3, perm, 20, 3, &rp, NULL, NULL, NULL));
  CHECK_NEAR(rp.chi2, r3.chi2, 1e-9);

  nic_error e = {0};
  int one[42] = {0};
  CHECK(nic_logrank(t, ev, one, 42, 2, &res, NULL, NULL, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "two non-empty groups") != NULL);
  int none[42] = {0};
  CHECK(nic_logrank(t, none, g, 42, 2, &res, NULL, NULL, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "no events") != NULL);
  CHECK(nic_logrank(t, ev, g, 42, 1, &res, NULL, NULL, &e) == NIC_EINVAL);
}

static void test_chi2_sf(void) {
  CHECK_NEAR(nic_chi2_sf(3.841458820694124, 1), 0.05, 1e-12);
  CHECK_NEAR(nic_chi2_sf(7.814727903251178, 3), 0.05, 1e-12);
  CHECK_NEAR(nic_chi2_sf(18.307038053275146, 10), 0.05, 1e-12);
  CHECK_NEAR(nic_chi2_sf(6.634896601021214, 1), 0.01, 1e-12);
  for (double x = 0.01; x < 80; x *= 1.7) {
    CHECK_NEAR(nic_chi2_sf(x, 1), erfc(sqrt(x / 2)), 1e-13 + 1e-12 * erfc(sqrt(x / 2)));
    CHECK_NEAR(nic_chi2_sf(x, 2), exp(-x / 2), 1e-13 + 1e-12 * exp(-x / 2));
  }
  CHECK(nic_chi2_sf(0, 3) == 1.0);
  CHECK(nic_chi2_sf(INFINITY, 3) == 0.0);
  CHECK(isnan(nic_chi2_sf(1, 0)));
}

/* ---- Bootstrap, metric interface, summaries ---- */

static void test_metric_names_and_eval(void) {
  for (int m = 0; m < NIC_METRIC_COUNT; m++) {
    nic_metric back;
    CHECK_OK(nic_metric_from_name(nic_metric_name((nic_metric)m), &back, NULL));
    CHECK((int)back == m);
  }
  nic_metric m;
  CHECK(nic_metric_from_name("bogus", &m, NULL) == NIC_EINVAL);
  CHECK(strcmp(nic_metric_name(NIC_METRIC_CINDEX), "cindex") == 0);

  /* Evaluating on an index list equals evaluating on the gathered rows. */
  int y[] = {1, 1, 1, 1, 0, 0, 0, 0, 0};
  double s[] = {0.9, 0.8, 0.5, 0.5, 0.7, 0.5, 0.3, 0.2, 0.5};
  nic_metric_data d = {.metric = NIC_METRIC_AUC, .n = 9, .labels = y, .score = s};
  double v = 0;
  CHECK_OK(nic_metric_eval(&d, NULL, 0, &v, NULL));
  CHECK_NEAR(v, 0.8, 1e-15);
  size_t idx[] = {0, 0, 4, 8, 2};
  int ys[] = {1, 1, 0, 0, 1};
  double ss[] = {0.9, 0.9, 0.7, 0.5, 0.5}, direct = 0;
  CHECK_OK(nic_auc(ys, ss, 5, &direct, NULL));
  CHECK_OK(nic_metric_eval(&d, idx, 5, &v, NULL));
  CHECK(v == direct);
  size_t bad[] = {9};
  CHECK(nic_metric_eval(&d, bad, 1, &v, NULL) == NIC_EINVAL);

  /* Macro AUC gathers whole rows of k scores. */
  int y3[] = {0, 1, 2, 0, 1, 2};
  double p3[] = {.8, .1, .1, .2, .7, .1, .1, .2, .7, .6, .3, .1, .3, .4, .3, .2, .2, .6};
  nic_metric_data d3 = {.metric = NIC_METRIC_AUC_MACRO, .n = 6, .k = 3, .labels = y3, .score = p3};
  size_t rev[] = {5, 4, 3, 2, 1, 0};
  double a = 0, b = 0;
  CHECK_OK(nic_metric_eval(&d3, NULL, 0, &a, NULL));
  CHECK_OK(nic_metric_eval(&d3, rev, 6, &b, NULL));
  CHECK(a == b && a == 1.0);

  /* The survival and regression paths. */
  double t[] = {1, 2, 3, 4}, risk[] = {4, 3, 2, 1};
  int ev[] = {1, 1, 1, 1};
  nic_metric_data dc = {.metric = NIC_METRIC_CINDEX, .n = 4, .time = t, .event = ev, .risk = risk};
  CHECK_OK(nic_metric_eval(&dc, NULL, 0, &v, NULL));
  CHECK(v == 1.0);
  nic_metric_data dr = {.metric = NIC_METRIC_MAE, .n = 4, .y_true = t, .y_pred = risk};
  CHECK_OK(nic_metric_eval(&dr, NULL, 0, &v, NULL));
  CHECK_NEAR(v, 2.0, 1e-15);
  nic_metric_data dk = {
      .metric = NIC_METRIC_KAPPA_QUADRATIC, .n = 6, .k = 3, .labels = y3, .pred = y3};
  CHECK_OK(nic_metric_eval(&dk, NULL, 0, &v, NULL));
  CHECK(v == 1.0);
}

/* Random binary problem with a fixed signal: score = label + noise. */
static void make_binary(nic_rng *r, int n, int *y, double *s) {
  for (int i = 0; i < n; i++) {
    y[i] = nic_rng_uniform(r) < 0.4;
    s[i] = y[i] + 1.2 * nic_rng_normal(r);
  }
}

static void test_bootstrap_auc(void) {
  nic_rng r;
  nic_rng_seed(&r, 3);
  enum { big = 2000, small = 100 };
  static int y[big];
  static double s[big];
  make_binary(&r, big, y, s);
  nic_bootstrap_opts o = nic_bootstrap_default_opts();
  o.resamples = 300;
  o.seed = 42;
  nic_interval ci_small = {0}, ci_big = {0}, again = {0};
  nic_metric_data d = {.metric = NIC_METRIC_AUC, .n = small, .labels = y, .score = s};
  CHECK_OK(nic_bootstrap(nic_metric_fn_data, &d, small, &o, &ci_small, NULL));
  d.n = big;
  CHECK_OK(nic_bootstrap(nic_metric_fn_data, &d, big, &o, &ci_big, NULL));
  double auc = 0;
  CHECK_OK(nic_auc(y, s, big, &auc, NULL));
  CHECK(ci_big.estimate == auc);
  CHECK(ci_small.lo < ci_small.estimate && ci_small.estimate < ci_small.hi);
  CHECK(ci_big.lo < ci_big.estimate && ci_big.estimate < ci_big.hi);
  /* Width shrinks like 1/sqrt(n): 20x the data, about 1/4.5 the width. */
  double w_small = ci_small.hi - ci_small.lo, w_big = ci_big.hi - ci_big.lo;
  CHECK(w_big < 0.5 * w_small);
  CHECK(w_big > 0.1 * w_small);
  CHECK(ci_big.se > 0 && ci_big.se < w_big); /* +-1.96 se spans about the interval */
  CHECK_NEAR(ci_big.hi - ci_big.lo, 2 * 1.96 * ci_big.se, 0.3 * w_big);
  CHECK(ci_big.resamples == 300 && ci_big.level == 0.95);
  /* The same seed reproduces the interval exactly. */
  CHECK_OK(nic_bootstrap(nic_metric_fn_data, &d, big, &o, &again, NULL));
  CHECK(again.lo == ci_big.lo && again.hi == ci_big.hi);
  /* A lower level gives a narrower interval. */
  o.level = 0.5;
  CHECK_OK(nic_bootstrap(nic_metric_fn_data, &d, big, &o, &again, NULL));
  CHECK(again.hi - again.lo < w_big);
}

static void test_bootstrap_undefined_resamples(void) {
  /* 2 positives among 20: about 1 resample in 8 has no positive at all. */
  int y[20] = {0};
  double s[20];
  y[3] = y[11] = 1;
  for (int i = 0; i < 20; i++) s[i] = i * 0.1 + (y[i] ? 0.5 : 0);
  nic_metric_data d = {.metric = NIC_METRIC_AUC, .n = 20, .labels = y, .score = s};
  nic_bootstrap_opts o = nic_bootstrap_default_opts();
  o.resamples = 200;
  nic_interval ci = {0};
  CHECK_OK(nic_bootstrap(nic_metric_fn_data, &d, 20, &o, &ci, NULL));
  CHECK(ci.resamples == 200);
  CHECK(ci.undefined > 5 && ci.undefined < 80); /* redrawn, not counted */
  CHECK(ci.lo <= ci.estimate && ci.estimate <= ci.hi);
  /* Refusing any undefined resample fails with a clear message. */
  nic_error e = {0};
  o.max_undefined = 0;
  CHECK(nic_bootstrap(nic_metric_fn_data, &d, 20, &o, &ci, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "undefined") != NULL && strstr(e.msg, "one class") != NULL);
  /* Stratifying by label keeps both classes in every resample. */
  o.strata = y;
  CHECK_OK(nic_bootstrap(nic_metric_fn_data, &d, 20, &o, &ci, &e));
  CHECK(ci.undefined == 0);
  /* An undefined full-sample metric is an error, not a redraw. */
  int one[20] = {0};
  d.labels = one;
  o.strata = NULL;
  o.max_undefined = -1;
  CHECK(nic_bootstrap(nic_metric_fn_data, &d, 20, &o, &ci, &e) == NIC_EINVAL);
  CHECK(strstr(e.msg, "full sample") != NULL);
  o.resamples = 1;
  d.labels = y;
  CHECK(nic_bootstrap(nic_metric_fn_data, &d, 20, &o, &ci, &e) == NIC_EINVAL);
  CHECK(nic_bootstrap(nic_metric_fn_data, &d, 0, NULL, &ci, &e) == NIC_EINVAL);
}

/* A custom callback: the mean of a sample, whose bootstrap distribution is
 * known (se = sd / sqrt(n)). */
static nic_status mean_fn(void *user, const size_t *idx, size_t m, double *value, nic_error *err) {
  const double *x = user;
  double s = 0;
  for (size_t i = 0; i < m; i++) s += x[idx[i]];
  *value = s / (double)m;
  return NIC_OK;
}

static void test_bootstrap_custom_mean(void) {
  enum { n = 400 };
  double x[n];
  nic_rng r;
  nic_rng_seed(&r, 5);
  for (int i = 0; i < n; i++) x[i] = nic_rng_normal(&r);
  nic_bootstrap_opts o = nic_bootstrap_default_opts();
  o.resamples = 1000;
  nic_interval ci = {0};
  CHECK_OK(nic_bootstrap(mean_fn, x, n, &o, &ci, NULL));
  nic_summary sm = {0};
  CHECK_OK(nic_summarize(x, n, &sm, NULL));
  CHECK_NEAR(ci.estimate, sm.mean, 1e-12);
  double se = sm.sd / sqrt(n);
  CHECK_NEAR(ci.se, se, 0.1 * se);
  CHECK_NEAR(ci.lo, sm.mean - 1.96 * se, 0.25 * se);
  CHECK_NEAR(ci.hi, sm.mean + 1.96 * se, 0.25 * se);
}

static void test_summarize(void) {
  double folds[] = {0.85, 0.90, 0.80, 0.95, 0.75};
  nic_summary s = {0};
  CHECK_OK(nic_summarize(folds, 5, &s, NULL));
  CHECK(s.n == 5);
  CHECK_NEAR(s.mean, 0.85, 1e-15);
  CHECK_NEAR(s.sd, sqrt(0.025 / 4), 1e-15); /* squares .0025*2 + .01*2 + 0 */
  CHECK(s.min == 0.75 && s.max == 0.95);
  CHECK_OK(nic_summarize(folds, 1, &s, NULL));
  CHECK(s.sd == 0 && s.mean == 0.85);
  nic_error e = {0};
  double nan[] = {1, NAN};
  CHECK(nic_summarize(nan, 2, &s, &e) == NIC_EINVAL);
  CHECK(nic_summarize(folds, 0, &s, &e) == NIC_EINVAL);
}

int main(void) {
  RUN(test_auc_ties_by_hand);
  RUN(test_auc_extremes);
  RUN(test_auc_random_vs_brute_force);
  RUN(test_auc_errors);
  RUN(test_auc_macro);
  RUN(test_accuracy_confusion);
  RUN(test_kappa_literature);
  RUN(test_kappa_by_hand);
  RUN(test_ranks_and_spearman);
  RUN(test_pearson_and_errors);
  RUN(test_regression);
  RUN(test_cindex_by_hand);
  RUN(test_cindex_random_vs_brute_force);
  RUN(test_km_6mp);
  RUN(test_logrank);
  RUN(test_chi2_sf);
  RUN(test_metric_names_and_eval);
  RUN(test_bootstrap_auc);
  RUN(test_bootstrap_undefined_resamples);
  RUN(test_bootstrap_custom_mean);
  RUN(test_summarize);
  return nic_test_finish();
}
