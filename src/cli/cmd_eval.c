/* nic eval: metrics of a predictions CSV with bootstrap intervals, per fold
 * and pooled, a plot, and a last line of name=value pairs. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "nic/plot.h"
#include "nic/slidemodel.h"

static void usage(FILE *f) {
  fprintf(f, "usage: nic eval [options] PREDS.csv\n\n"
             "Evaluates predictions ('nic predict', or RUNDIR/predictions.csv of 'nic train'):\n"
             "  binary      AUC, balanced accuracy, accuracy, Cohen's kappa (score >= 0.5)\n"
             "  multiclass  macro one-vs-rest AUC, balanced accuracy, accuracy, kappa\n"
             "              (quadratically weighted when the class names are integers)\n"
             "  regression  Spearman, Pearson, mean absolute error\n"
             "  survival    Harrell's c-index\n"
             "each with a 95%% percentile bootstrap interval (stratified by class or event), per\n"
             "fold when the file has a fold column, with mean +- sd over the folds, and pooled.\n"
             "The task is inferred from the columns (time,event: survival; score_<class>...:\n"
             "multiclass; labels 0/1 or two names: binary; other numbers: regression).\n"
             "Writes a plot: ROC curves (per fold and pooled; per class for multiclass),\n"
             "Kaplan-Meier curves of the predicted low- and high-risk halves with the log-rank\n"
             "p-value (survival), or prediction against truth (regression). The last line of\n"
             "the output is name=value pairs, the main metric first (with folds: the mean).\n\n"
             "options:\n"
             "  -T, --task TASK        binary, multiclass, regression or survival (inferred)\n"
             "  -p, --plot FILE        the plot (default: PREDS with _roc.png, _km.png or\n"
             "                         _scatter.png in place of .csv); --no-plot for none\n"
             "      --no-plot          no plot\n"
             "      --threshold X      binary: score >= X is the second class (0.5)\n"
             "      --resamples N      bootstrap resamples (1000; 0 = no intervals)\n"
             "  -s, --seed N           bootstrap seed (1)\n"
             "  -h, --help             this text\n");
}

int cmd_eval(int argc, char **argv) {
  enum { O_NO_PLOT = 1000, O_THRESHOLD, O_RESAMPLES };
  static const struct option opts[] = {{"task", required_argument, NULL, 'T'},
                                       {"plot", required_argument, NULL, 'p'},
                                       {"no-plot", no_argument, NULL, O_NO_PLOT},
                                       {"threshold", required_argument, NULL, O_THRESHOLD},
                                       {"resamples", required_argument, NULL, O_RESAMPLES},
                                       {"seed", required_argument, NULL, 's'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *plot = NULL;
  int task = -1, no_plot = 0, c, n;
  nic_eval_opts eo = nic_eval_default_opts();
  nic_error err = {0};
  while ((c = getopt_long(argc, argv, "T:p:s:h", opts, NULL)) != -1) {
    switch (c) {
    case 'T': {
      nic_task t;
      if (nic_task_from_name(optarg, &t, &err) != NIC_OK) return cli_usage("eval", "%s", err.msg);
      task = (int)t;
      break;
    }
    case 'p':
      plot = optarg;
      break;
    case O_NO_PLOT:
      no_plot = 1;
      break;
    case O_THRESHOLD:
      if (cli_parse_double("eval", "--threshold", optarg, &eo.threshold)) return 2;
      break;
    case O_RESAMPLES:
      if (cli_parse_int("eval", "--resamples", optarg, 0, &eo.resamples)) return 2;
      break;
    case 's':
      if (cli_parse_int("eval", "--seed", optarg, 0, &n)) return 2;
      eo.seed = (uint64_t)n;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      return cli_usage("eval", "unknown option");
    }
  }
  if (optind != argc - 1) return cli_usage("eval", "expected one predictions CSV");
  const char *path = argv[optind];
  nic_preds p;
  if (nic_preds_read(&p, path, task, &err) != NIC_OK) return cli_fail(&err);
  nic_eval e;
  if (nic_evaluate(&p, &eo, &e, &err) != NIC_OK) {
    nic_preds_free(&p);
    return cli_fail(&err);
  }
  nic_eval_print(&e, stdout);
  int rc = 0;
  if (!no_plot) {
    char def[4200];
    if (!plot) {
      const char *suffix = p.task == NIC_TASK_SURVIVAL     ? "_km.png"
                           : p.task == NIC_TASK_REGRESSION ? "_scatter.png"
                                                           : "_roc.png";
      size_t len = strlen(path);
      if (len > 4 && !strcmp(path + len - 4, ".csv")) len -= 4;
      snprintf(def, sizeof def, "%.*s%s", (int)len, path, suffix);
      plot = def;
    }
    if (nic_eval_plot(&p, plot, &err) == NIC_OK)
      printf("plot: %s\n", plot);
    else
      fprintf(stderr, "nic eval: no plot: %s\n", err.msg); /* the metrics still stand */
  }
  char line[1024];
  nic_eval_line(&e, line, sizeof line);
  printf("%s\n", line);
  nic_eval_free(&e);
  nic_preds_free(&p);
  return rc;
}
