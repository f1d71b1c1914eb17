/* nic predict: scores of compressed slides by a trained slide model, as a
 * predictions CSV (slide_id,label,score...) that 'nic eval' reads. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "nic/slidemodel.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: nic predict --model M --features DIR|FILE.h5 [--labels CSV] -o PREDS.csv\n\n"
          "Scores compressed slides with a model from 'nic train' and writes one row per\n"
          "slide: slide_id,label,score (binary: the probability of the second class;\n"
          "regression: the predicted value), slide_id,label,score_<class>... (multiclass:\n"
          "one probability per class), or slide_id,label,score,time,event (survival: the\n"
          "risk, higher = earlier event). The same model, slides and thread count always\n"
          "give the same numbers.\n\n"
          "Without --labels every .h5 file of DIR is scored and the label column is empty;\n"
          "with --labels (the CSV 'nic train' takes) only the listed slides, with their\n"
          "labels, so that 'nic eval' can score the predictions. Listed slides without a\n"
          "features file are reported and left out.\n\n"
          "options:\n"
          "  -m, --model FILE       the slide model (.safetensors from 'nic train'); required\n"
          "  -f, --features PATH    folder of <slide_id>.h5, or one .h5 file; required\n"
          "  -l, --labels CSV       labels of the slides (case_id,slide_id,label or time,event)\n"
          "      --label-col NAME   the label column (label); --time-col, --event-col likewise\n"
          "  -o, --output FILE      the predictions CSV (required; written atomically)\n"
          "  -t, --threads N        compute threads (default: one per core)\n"
          "  -q, --quiet            no progress display\n"
          "  -h, --help             this text\n");
}

static void warn(void *user, const char *msg) {
  cli_progress_clear(user);
  fprintf(stderr, "nic predict: warning: %s\n", msg);
}

static void on_count(void *user, int done, int total) {
  (void)total;
  cli_progress_update(user, done);
}

int cmd_predict(int argc, char **argv) {
  enum { O_LABEL_COL = 1000, O_TIME_COL, O_EVENT_COL };
  static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                       {"features", required_argument, NULL, 'f'},
                                       {"labels", required_argument, NULL, 'l'},
                                       {"label-col", required_argument, NULL, O_LABEL_COL},
                                       {"time-col", required_argument, NULL, O_TIME_COL},
                                       {"event-col", required_argument, NULL, O_EVENT_COL},
                                       {"output", required_argument, NULL, 'o'},
                                       {"threads", required_argument, NULL, 't'},
                                       {"quiet", no_argument, NULL, 'q'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *model = NULL, *features = NULL, *labels = NULL, *out = NULL;
  int threads = 0, quiet = 0, c;
  nic_cohort_opts co = nic_cohort_default_opts();
  while ((c = getopt_long(argc, argv, "m:f:l:o:t:qh", opts, NULL)) != -1) {
    switch (c) {
    case 'm':
      model = optarg;
      break;
    case 'f':
      features = optarg;
      break;
    case 'l':
      labels = optarg;
      break;
    case O_LABEL_COL:
      co.label_col = optarg;
      break;
    case O_TIME_COL:
      co.time_col = optarg;
      break;
    case O_EVENT_COL:
      co.event_col = optarg;
      break;
    case 'o':
      out = optarg;
      break;
    case 't':
      if (cli_parse_int("predict", "--threads", optarg, 0, &threads)) return 2;
      break;
    case 'q':
      quiet = 1;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      return cli_usage("predict", "unknown option");
    }
  }
  if (optind < argc) return cli_usage("predict", "unexpected argument '%s'", argv[optind]);
  if (!model) return cli_usage("predict", "missing --model FILE");
  if (!features) return cli_usage("predict", "missing --features DIR");
  if (!out) return cli_usage("predict", "missing -o PREDS.csv");

  nic_error err = {0};
  nic_slidemodel *m = NULL;
  if (nic_sm_load(&m, model, &err) != NIC_OK) return cli_fail(&err);
  cli_progress prog;
  cli_progress_init(&prog, stderr, quiet ? CLI_PROGRESS_NONE : CLI_PROGRESS_AUTO);
  co.warn = warn;
  co.warn_user = &prog;
  co.any_classes = 1;
  nic_cohort cohort;
  nic_status st = labels ? nic_cohort_load(&cohort, labels, features, nic_sm_task(m), &co, &err)
                         : nic_cohort_scan(&cohort, features, &err);
  if (st != NIC_OK) {
    nic_sm_free(m);
    return cli_fail(&err);
  }
  nic_ctx *ctx = cli_make_ctx(threads, 1);
  nic_preds p;
  int rc = 0;
  if (!ctx) {
    rc = 1;
  } else {
    cli_progress_start(&prog, "predicting", cohort.n, "slides");
    st = nic_sm_predict_cohort(m, ctx, &cohort, &p, on_count, &prog, &err);
    cli_progress_end(&prog);
    if (st == NIC_OK) {
      st = nic_preds_write(&p, out, &err);
      nic_preds_free(&p);
    }
    if (st == NIC_OK)
      printf("wrote %d prediction%s (%s, %s model) to %s\n", cohort.n, cohort.n == 1 ? "" : "s",
             nic_task_name(nic_sm_task(m)), nic_sm_kind_name(nic_sm_kind_of(m)), out);
    else
      rc = cli_fail(&err);
  }
  nic_sm_free(m); /* before the context: the network holds backend state */
  nic_ctx_free(ctx);
  nic_cohort_free(&cohort);
  return rc;
}
