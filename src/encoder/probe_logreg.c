/* L2-regularised multinomial logistic regression, the linear probe of
 * encoder quality.
 *
 * Objective (scikit-learn's, divided by n for conditioning):
 *   F(W, b) = (1/n) sum_i -log softmax(W z_i + b)[y_i] + ||W||^2 / (2 C n)
 * with z the standardised features; the biases are not penalised. It is
 * smooth and strictly convex in W, so plain L-BFGS with a backtracking
 * (Armijo) line search converges reliably; with 128 standardised features
 * a few dozen iterations suffice. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nic/encoder_train.h"

#define LBFGS_M 10
#define MAX_ITER 300
#define GTOL 1e-5 /* on the largest gradient component */

typedef struct lr_problem {
  const double *z; /* n x d standardised */
  const int *y;
  int64_t n;
  int d, k;
  double inv_c; /* 1 / (C n) */
} lr_problem;

/* F and its gradient at theta (k x (d+1)). */
static double objective(const lr_problem *p, const double *theta, double *grad) {
  int d = p->d, k = p->k, w = d + 1;
  size_t np = (size_t)k * (size_t)w;
  memset(grad, 0, sizeof *grad * np);
  double f = 0;
  /* threads pay off only on large problems (a parallel region costs more
   * than 100 x 128 x 2 multiply-adds, and far more on a busy machine) */
#pragma omp parallel if ((double)p->n * d * k > 4e5)
  {
    double *g = calloc(np, sizeof *g), *logit = malloc(sizeof *logit * (size_t)k);
    double fl = 0;
    if (g && logit) {
#pragma omp for schedule(static)
      for (int64_t i = 0; i < p->n; i++) {
        const double *z = p->z + i * d;
        double mx = -INFINITY;
        for (int c = 0; c < k; c++) {
          const double *wc = theta + (size_t)c * w;
          double s = wc[d];
          for (int j = 0; j < d; j++) s += wc[j] * z[j];
          logit[c] = s;
          mx = s > mx ? s : mx;
        }
        double se = 0;
        for (int c = 0; c < k; c++) se += exp(logit[c] - mx);
        double lse = mx + log(se);
        fl += lse - logit[p->y[i]];
        for (int c = 0; c < k; c++) {
          double r = exp(logit[c] - lse) - (c == p->y[i]);
          double *gc = g + (size_t)c * w;
          for (int j = 0; j < d; j++) gc[j] += r * z[j];
          gc[d] += r;
        }
      }
#pragma omp critical
      {
        f += fl;
        for (size_t q = 0; q < np; q++) grad[q] += g[q];
      }
    }
    free(g);
    free(logit);
  }
  double inv_n = 1.0 / (double)p->n, reg = 0;
  f *= inv_n;
  for (int c = 0; c < k; c++)
    for (int j = 0; j <= d; j++) {
      size_t q = (size_t)c * w + j;
      grad[q] *= inv_n;
      if (j < d) {
        grad[q] += theta[q] * p->inv_c;
        reg += theta[q] * theta[q];
      }
    }
  return f + 0.5 * p->inv_c * reg;
}

static double dot(const double *a, const double *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/* Minimises F from theta (a warm start, or zeros). Returns iterations. */
static int lbfgs(const lr_problem *p, double *theta, double *work) {
  size_t np = (size_t)p->k * (size_t)(p->d + 1);
  double *g = work, *gn = g + np, *dir = gn + np, *xn = dir + np;
  double *S = xn + np, *Y = S + LBFGS_M * np, rho[LBFGS_M], alpha[LBFGS_M];
  int hist = 0, head = 0, it;
  double f = objective(p, theta, g);
  for (it = 0; it < MAX_ITER; it++) {
    double gmax = 0;
    for (size_t q = 0; q < np; q++) gmax = fmax(gmax, fabs(g[q]));
    if (gmax < GTOL) break;
    /* two-loop recursion: dir = -H g */
    for (size_t q = 0; q < np; q++) dir[q] = -g[q];
    for (int h = 0; h < hist; h++) {
      int j = (head - 1 - h + LBFGS_M) % LBFGS_M;
      alpha[j] = rho[j] * dot(S + j * np, dir, np);
      for (size_t q = 0; q < np; q++) dir[q] -= alpha[j] * Y[j * np + q];
    }
    if (hist > 0) {
      int j = (head - 1 + LBFGS_M) % LBFGS_M;
      double gamma = dot(S + j * np, Y + j * np, np) / dot(Y + j * np, Y + j * np, np);
      for (size_t q = 0; q < np; q++) dir[q] *= gamma;
    } else {
      for (size_t q = 0; q < np; q++) dir[q] /= fmax(gmax, 1.0);
    }
    for (int h = hist - 1; h >= 0; h--) {
      int j = (head - 1 - h + LBFGS_M) % LBFGS_M;
      double beta = rho[j] * dot(Y + j * np, dir, np);
      for (size_t q = 0; q < np; q++) dir[q] += (alpha[j] - beta) * S[j * np + q];
    }
    double slope = dot(g, dir, np);
    if (slope >= 0) { /* not a descent direction: restart from the gradient */
      hist = 0;
      for (size_t q = 0; q < np; q++) dir[q] = -g[q] / fmax(gmax, 1.0);
      slope = dot(g, dir, np);
    }
    double a = 1, fn = f;
    int ok = 0;
    for (int ls = 0; ls < 40; ls++, a *= 0.5) {
      for (size_t q = 0; q < np; q++) xn[q] = theta[q] + a * dir[q];
      fn = objective(p, xn, gn);
      if (fn <= f + 1e-4 * a * slope) {
        ok = 1;
        break;
      }
    }
    if (!ok) break; /* no progress possible at double precision */
    double *s = S + head * np, *y = Y + head * np;
    for (size_t q = 0; q < np; q++) {
      s[q] = xn[q] - theta[q];
      y[q] = gn[q] - g[q];
    }
    double sy = dot(s, y, np);
    if (sy > 1e-12) {
      rho[head] = 1.0 / sy;
      head = (head + 1) % LBFGS_M;
      if (hist < LBFGS_M) hist++;
    }
    memcpy(theta, xn, sizeof *theta * np);
    memcpy(g, gn, sizeof *g * np);
    double df = f - fn;
    f = fn;
    if (df <= 1e-12 * fmax(1.0, fabs(f))) break;
  }
  return it;
}

nic_status nic_logreg_fit(const float *x, const int *y, int64_t n, int d, int k, double C,
                          nic_logreg *out, nic_error *err) {
  memset(out, 0, sizeof *out);
  if (n < 1 || d < 1 || k < 2 || !(C > 0))
    return nic_err(err, NIC_EINVAL, "logistic regression: need n >= 1, d >= 1, k >= 2, C > 0");
  for (int64_t i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= k)
      return nic_err(err, NIC_EINVAL, "logistic regression: label %d at %lld is not in [0, %d)",
                     y[i], (long long)i, k);
  size_t np = (size_t)k * (size_t)(d + 1);
  out->d = d;
  out->k = k;
  out->w = calloc(np, sizeof *out->w);
  out->mean = calloc((size_t)d, sizeof *out->mean);
  out->scale = calloc((size_t)d, sizeof *out->scale);
  double *z = malloc(sizeof *z * (size_t)n * (size_t)d);
  double *work = malloc(sizeof *work * np * (4 + 2 * LBFGS_M));
  if (!out->w || !out->mean || !out->scale || !z || !work) {
    free(z);
    free(work);
    nic_logreg_free(out);
    return nic_err(err, NIC_ENOMEM, "logistic regression: out of memory");
  }
  for (int j = 0; j < d; j++) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += x[i * d + j];
    double m = s / (double)n;
    for (int64_t i = 0; i < n; i++) s2 += (x[i * d + j] - m) * (x[i * d + j] - m);
    double sd = sqrt(s2 / (double)n);
    out->mean[j] = m;
    out->scale[j] = sd > 1e-12 ? 1.0 / sd : 1.0;
  }
  for (int64_t i = 0; i < n; i++)
    for (int j = 0; j < d; j++) z[i * d + j] = (x[i * d + j] - out->mean[j]) * out->scale[j];
  lr_problem p = {z, y, n, d, k, 1.0 / (C * (double)n)};
  out->iterations = lbfgs(&p, out->w, work);
  free(z);
  free(work);
  return NIC_OK;
}

void nic_logreg_predict(const nic_logreg *lr, const float *x, int64_t n, double *proba) {
  int d = lr->d, k = lr->k;
#pragma omp parallel for schedule(static) if ((double)n * d * k > 4e5)
  for (int64_t i = 0; i < n; i++) {
    double *pr = proba + i * k, mx = -INFINITY, se = 0;
    for (int c = 0; c < k; c++) {
      const double *wc = lr->w + (size_t)c * (size_t)(d + 1);
      double s = wc[d];
      for (int j = 0; j < d; j++) s += wc[j] * (x[i * d + j] - lr->mean[j]) * lr->scale[j];
      pr[c] = s;
      mx = s > mx ? s : mx;
    }
    for (int c = 0; c < k; c++) se += (pr[c] = exp(pr[c] - mx));
    for (int c = 0; c < k; c++) pr[c] /= se;
  }
}

void nic_logreg_free(nic_logreg *lr) {
  free(lr->w);
  free(lr->mean);
  free(lr->scale);
  memset(lr, 0, sizeof *lr);
}
