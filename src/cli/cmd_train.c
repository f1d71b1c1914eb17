/* nic train: slide-level models on compressed slides, cross-validated.
 * The work is in src/slidemodel/; this file parses flags, shows progress
 * and prints the report. The last line of the output is the summary
 * "auc=0.912 auc_sd=0.031 ..." (the task's main metric first). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "nic/slidemodel.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: nic train --features DIR --labels CSV --task TASK [options] -o RUNDIR\n\n"
          "Trains a slide-level model on compressed slides ('nic compress' output) and, with\n"
          "--folds or --splits, cross-validates it. TASK is binary, multiclass, regression or\n"
          "survival. The labels CSV follows CLAM: case_id,slide_id,label (a number for\n"
          "regression), or case_id,slide_id,time,event for survival (event 1 = observed).\n"
          "Slides without DIR/<slide_id>.h5 are reported and left out.\n\n"
          "RUNDIR receives splits_<k>.csv (CLAM's format), one model per fold\n"
          "(fold_<k>.safetensors; model.safetensors without folds), predictions.csv (the\n"
          "out-of-fold predictions; without folds, those of the validation slides) and\n"
          "metrics.json. The report ends with one line of name=value pairs, the task's main\n"
          "metric first (auc, spearman or c_index; with folds the mean over folds).\n\n"
          "data:\n"
          "  -f, --features DIR     folder of <slide_id>.h5 compressed slides (required)\n"
          "  -l, --labels CSV       labels (required)\n"
          "  -T, --task TASK        binary, multiclass, regression or survival (required)\n"
          "      --label-col NAME   the label column (label); --time-col, --event-col likewise\n"
          "  -k, --folds K          K-fold cross-validation at case level, stratified by class,\n"
          "                         event or value quartile\n"
          "      --splits DIR       use DIR/splits_0.csv, splits_1.csv, ... (CLAM's format,\n"
          "                         columns train,val,test of slide ids) instead\n"
          "      --val-frac F       share of each fold's training cases kept for validation:\n"
          "                         model selection, learning-rate schedule, early stopping (0.2;\n"
          "                         0: train on all of them and keep the last epoch)\n"
          "  -o, --output RUNDIR    where results go (required; created if needed)\n\n"
          "model:\n"
          "  -m, --model KIND       nic (the NIC slide CNN, default), abmil (gated attention\n"
          "                         MIL) or cluster (a linear score per cell, averaged over\n"
          "                         --smooth x --smooth cells, the maximum over the crop:\n"
          "                         small lesions on few slides)\n"
          "      --crop R           CNN/cluster crop side in grid cells (400); grids that\n"
          "                         fit use the largest side rounded up to 64\n"
          "      --filters N        CNN filters per separable convolution (128)\n"
          "      --strided N        CNN blocks with stride 2, from the first (6, the paper's;\n"
          "                         0-8): fewer keep a finer map before the global pooling,\n"
          "                         for grids much smaller than the crop\n"
          "      --hidden N         CNN dense units / ABMIL instance embedding (128)\n"
          "      --attn-dim N       ABMIL attention dimension (128)\n"
          "      --pool max|avg     CNN global pooling (max for classification, else avg)\n"
          "      --dropout P        CNN spatial dropout (0.2)\n"
          "      --smooth K         cluster: side of the mean filter, odd (3)\n"
          "      --scores N         cluster: linear score maps (1)\n\n"
          "training:\n"
          "  -e, --epochs N         at most N epochs (60)\n"
          "      --steps N          optimizer steps per epoch (a pass over the training\n"
          "                         slides, at least 20)\n"
          "  -b, --batch N          slides per step (CNN 16, ABMIL 8)\n"
          "      --lr X             Adam learning rate (CNN 1e-3, ABMIL 2e-4, cluster 1e-2)\n"
          "      --weight-decay X   L2 weight decay (1e-4)\n"
          "      --patience N       stop after N epochs without a better validation metric\n"
          "                         (20; 0 = never)\n"
          "      --monitor WHAT     what picks the epoch and stops early: metric (the main\n"
          "                         validation metric, ties broken by the loss; default) or\n"
          "                         loss (the lowest validation loss, as CLAM; smoother on\n"
          "                         small validation sets)\n"
          "      --plateau N        halve the learning rate after N epochs without a lower\n"
          "                         validation loss (10)\n"
          "      --balance MODE     batches (classes drawn equally often, default), weights\n"
          "                         (class-weighted cross-entropy) or none\n"
          "      --occlusion P      CNN: chance of a zeroed box in a training crop (0.25)\n"
          "      --instance-drop P  ABMIL: share of instances dropped per training bag (0.1)\n"
          "      --max-instances N  ABMIL: instances per training bag at most (8192)\n"
          "      --no-orientations  ignore features_orientations (rotate the grid only)\n"
          "      --test-crops T     crops (CNN) or orientations (ABMIL) averaged at test time (8)\n"
          "      --cache-mb N       slide rows kept in memory (2048)\n"
          "  -s, --seed N           seeds splits, initialisation and augmentation (1)\n"
          "  -t, --threads N        compute threads (default: one per core)\n"
          "  -v, --verbose          a line per epoch\n"
          "  -q, --quiet            no progress display\n"
          "  -h, --help             this text\n\n"
          "See docs/slidemodel.md.\n");
}

typedef struct train_cli {
  const char *features, *labels, *outdir, *splits, *task;
  int folds, threads, verbose, quiet;
  double val_frac;
  nic_cohort_opts co;
  nic_sm_opts so;
  /* progress */
  cli_progress prog;
  int fold_shown;
} train_cli;

static void warn(void *user, const char *msg) {
  train_cli *t = user;
  cli_progress_clear(&t->prog);
  fprintf(stderr, "nic train: warning: %s\n", msg);
}

static void on_progress(void *user, const nic_sm_progress *p) {
  train_cli *t = user;
  if (t->fold_shown != p->fold) { /* a new fold */
    char label[64];
    if (p->folds > 1)
      snprintf(label, sizeof label, "fold %d/%d", p->fold + 1, p->folds);
    else
      snprintf(label, sizeof label, "training");
    cli_progress_start(&t->prog, label, (int64_t)p->epochs * p->steps, "steps");
    t->fold_shown = p->fold;
  }
  cli_progress_update(&t->prog, (int64_t)p->epoch * p->steps + p->step);
  if (p->step < p->steps) return;
  if (t->verbose || p->stopping) {
    cli_progress_clear(&t->prog);
    fprintf(stderr, "  fold %d epoch %d: loss %.4f", p->fold, p->epoch, p->loss);
    if (p->val_metric == p->val_metric) fprintf(stderr, ", validation %.4f", p->val_metric);
    if (p->val_loss == p->val_loss) fprintf(stderr, " (loss %.4f)", p->val_loss);
    fprintf(stderr, ", lr %.2g, best epoch %d%s\n", (double)p->lr, p->best_epoch,
            p->stopping ? ": early stop" : "");
  }
}

static int parse_args(train_cli *t, int argc, char **argv) {
  enum {
    O_LABEL_COL = 1000,
    O_TIME_COL,
    O_EVENT_COL,
    O_SPLITS,
    O_VAL_FRAC,
    O_CROP,
    O_FILTERS,
    O_STRIDED,
    O_HIDDEN,
    O_ATTN,
    O_POOL,
    O_DROPOUT,
    O_SMOOTH,
    O_SCORES,
    O_STEPS,
    O_LR,
    O_WD,
    O_PATIENCE,
    O_MONITOR,
    O_PLATEAU,
    O_BALANCE,
    O_OCCLUSION,
    O_IDROP,
    O_MAXINST,
    O_NO_OR,
    O_TEST_CROPS,
    O_CACHE
  };
  static const struct option opts[] = {{"features", required_argument, NULL, 'f'},
                                       {"labels", required_argument, NULL, 'l'},
                                       {"task", required_argument, NULL, 'T'},
                                       {"label-col", required_argument, NULL, O_LABEL_COL},
                                       {"time-col", required_argument, NULL, O_TIME_COL},
                                       {"event-col", required_argument, NULL, O_EVENT_COL},
                                       {"folds", required_argument, NULL, 'k'},
                                       {"splits", required_argument, NULL, O_SPLITS},
                                       {"val-frac", required_argument, NULL, O_VAL_FRAC},
                                       {"output", required_argument, NULL, 'o'},
                                       {"model", required_argument, NULL, 'm'},
                                       {"crop", required_argument, NULL, O_CROP},
                                       {"filters", required_argument, NULL, O_FILTERS},
                                       {"strided", required_argument, NULL, O_STRIDED},
                                       {"hidden", required_argument, NULL, O_HIDDEN},
                                       {"attn-dim", required_argument, NULL, O_ATTN},
                                       {"pool", required_argument, NULL, O_POOL},
                                       {"dropout", required_argument, NULL, O_DROPOUT},
                                       {"smooth", required_argument, NULL, O_SMOOTH},
                                       {"scores", required_argument, NULL, O_SCORES},
                                       {"epochs", required_argument, NULL, 'e'},
                                       {"steps", required_argument, NULL, O_STEPS},
                                       {"batch", required_argument, NULL, 'b'},
                                       {"lr", required_argument, NULL, O_LR},
                                       {"weight-decay", required_argument, NULL, O_WD},
                                       {"patience", required_argument, NULL, O_PATIENCE},
                                       {"monitor", required_argument, NULL, O_MONITOR},
                                       {"plateau", required_argument, NULL, O_PLATEAU},
                                       {"balance", required_argument, NULL, O_BALANCE},
                                       {"occlusion", required_argument, NULL, O_OCCLUSION},
                                       {"instance-drop", required_argument, NULL, O_IDROP},
                                       {"max-instances", required_argument, NULL, O_MAXINST},
                                       {"no-orientations", no_argument, NULL, O_NO_OR},
                                       {"test-crops", required_argument, NULL, O_TEST_CROPS},
                                       {"cache-mb", required_argument, NULL, O_CACHE},
                                       {"seed", required_argument, NULL, 's'},
                                       {"threads", required_argument, NULL, 't'},
                                       {"verbose", no_argument, NULL, 'v'},
                                       {"quiet", no_argument, NULL, 'q'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *cmd = "train";
  nic_error err = {0};
  double d;
  int c, n;
  while ((c = getopt_long(argc, argv, "f:l:T:k:o:m:e:b:s:t:vqh", opts, NULL)) != -1) {
    switch (c) {
    case 'f':
      t->features = optarg;
      break;
    case 'l':
      t->labels = optarg;
      break;
    case 'T':
      t->task = optarg;
      break;
    case O_LABEL_COL:
      t->co.label_col = optarg;
      break;
    case O_TIME_COL:
      t->co.time_col = optarg;
      break;
    case O_EVENT_COL:
      t->co.event_col = optarg;
      break;
    case 'k':
      if (cli_parse_int(cmd, "--folds", optarg, 2, &t->folds)) return 2;
      break;
    case O_SPLITS:
      t->splits = optarg;
      break;
    case O_VAL_FRAC:
      if (cli_parse_double(cmd, "--val-frac", optarg, &t->val_frac)) return 2;
      if (t->val_frac < 0 || t->val_frac >= 1)
        return cli_usage(cmd, "--val-frac must be in [0, 1)");
      break;
    case 'o':
      t->outdir = optarg;
      break;
    case 'm':
      if (nic_sm_kind_from_name(optarg, &t->so.kind, &err) != NIC_OK)
        return cli_usage(cmd, "%s", err.msg);
      break;
    case O_CROP:
      if (cli_parse_int(cmd, "--crop", optarg, 1, &t->so.crop)) return 2;
      break;
    case O_FILTERS:
      if (cli_parse_int(cmd, "--filters", optarg, 1, &t->so.filters)) return 2;
      break;
    case O_STRIDED:
      if (cli_parse_int(cmd, "--strided", optarg, 0, &t->so.strided)) return 2;
      break;
    case O_HIDDEN:
      if (cli_parse_int(cmd, "--hidden", optarg, 1, &t->so.hidden)) return 2;
      break;
    case O_ATTN:
      if (cli_parse_int(cmd, "--attn-dim", optarg, 1, &t->so.attn_dim)) return 2;
      break;
    case O_POOL:
      if (!strcmp(optarg, "max"))
        t->so.pool = 1;
      else if (!strcmp(optarg, "avg"))
        t->so.pool = 0;
      else
        return cli_usage(cmd, "--pool is max or avg, got '%s'", optarg);
      break;
    case O_SMOOTH:
      if (cli_parse_int(cmd, "--smooth", optarg, 1, &t->so.smooth)) return 2;
      break;
    case O_SCORES:
      if (cli_parse_int(cmd, "--scores", optarg, 1, &t->so.scores)) return 2;
      break;
    case O_DROPOUT:
      if (cli_parse_double(cmd, "--dropout", optarg, &d)) return 2;
      t->so.dropout = (float)d;
      break;
    case 'e':
      if (cli_parse_int(cmd, "--epochs", optarg, 1, &t->so.epochs)) return 2;
      break;
    case O_STEPS:
      if (cli_parse_int(cmd, "--steps", optarg, 1, &t->so.steps)) return 2;
      break;
    case 'b':
      if (cli_parse_int(cmd, "--batch", optarg, 1, &t->so.batch)) return 2;
      break;
    case O_LR:
      if (cli_parse_double(cmd, "--lr", optarg, &d)) return 2;
      if (!(d > 0)) return cli_usage(cmd, "--lr must be > 0");
      t->so.lr = (float)d;
      break;
    case O_WD:
      if (cli_parse_double(cmd, "--weight-decay", optarg, &d)) return 2;
      t->so.weight_decay = (float)d;
      break;
    case O_PATIENCE:
      if (cli_parse_int(cmd, "--patience", optarg, 0, &t->so.patience)) return 2;
      break;
    case O_MONITOR:
      if (strcmp(optarg, "metric") && strcmp(optarg, "loss"))
        return cli_usage(cmd, "--monitor is metric or loss, got '%s'", optarg);
      t->so.monitor_loss = !strcmp(optarg, "loss");
      break;
    case O_PLATEAU:
      if (cli_parse_int(cmd, "--plateau", optarg, 0, &t->so.plateau_patience)) return 2;
      break;
    case O_BALANCE:
      if (!strcmp(optarg, "batches"))
        t->so.balance = NIC_BALANCE_BATCHES;
      else if (!strcmp(optarg, "weights"))
        t->so.balance = NIC_BALANCE_WEIGHTS;
      else if (!strcmp(optarg, "none"))
        t->so.balance = NIC_BALANCE_NONE;
      else
        return cli_usage(cmd, "--balance is batches, weights or none, got '%s'", optarg);
      break;
    case O_OCCLUSION:
      if (cli_parse_double(cmd, "--occlusion", optarg, &d)) return 2;
      t->so.occlusion = (float)d;
      break;
    case O_IDROP:
      if (cli_parse_double(cmd, "--instance-drop", optarg, &d)) return 2;
      t->so.instance_drop = (float)d;
      break;
    case O_MAXINST:
      if (cli_parse_int(cmd, "--max-instances", optarg, 1, &t->so.max_instances)) return 2;
      break;
    case O_NO_OR:
      t->so.orientations = 0;
      break;
    case O_TEST_CROPS:
      if (cli_parse_int(cmd, "--test-crops", optarg, 1, &t->so.test_crops)) return 2;
      break;
    case O_CACHE:
      if (cli_parse_int(cmd, "--cache-mb", optarg, 0, &n)) return 2;
      t->so.cache_mb = n;
      break;
    case 's':
      if (cli_parse_int(cmd, "--seed", optarg, 0, &n)) return 2;
      t->so.seed = (uint64_t)n;
      break;
    case 't':
      if (cli_parse_int(cmd, "--threads", optarg, 0, &t->threads)) return 2;
      break;
    case 'v':
      t->verbose = 1;
      break;
    case 'q':
      t->quiet = 1;
      break;
    case 'h':
      usage(stdout);
      return -1;
    default:
      return cli_usage(cmd, "unknown option");
    }
  }
  if (optind < argc) return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
  if (!t->features) return cli_usage(cmd, "missing --features DIR");
  if (!t->labels) return cli_usage(cmd, "missing --labels CSV");
  if (!t->task) return cli_usage(cmd, "missing --task (binary, multiclass, regression, survival)");
  if (!t->outdir) return cli_usage(cmd, "missing -o RUNDIR");
  if (t->folds && t->splits) return cli_usage(cmd, "--folds and --splits exclude each other");
  return 0;
}

int cmd_train_slides(int argc, char **argv) {
  train_cli t;
  memset(&t, 0, sizeof t);
  t.co = nic_cohort_default_opts();
  t.so = nic_sm_default_opts();
  t.val_frac = 0.2;
  t.fold_shown = -1;
  int rc = parse_args(&t, argc, argv);
  if (rc) return rc < 0 ? 0 : rc;
  nic_error err = {0};
  nic_task task;
  if (nic_task_from_name(t.task, &task, &err) != NIC_OK) return cli_usage("train", "%s", err.msg);
  cli_progress_init(&t.prog, stderr, t.quiet ? CLI_PROGRESS_NONE : CLI_PROGRESS_AUTO);
  t.co.warn = warn;
  t.co.warn_user = &t;
  t.so.progress = on_progress;
  t.so.progress_user = &t;

  nic_cohort c;
  if (nic_cohort_load(&c, t.labels, t.features, task, &t.co, &err) != NIC_OK) return cli_fail(&err);
  printf("%s task: %d slides", nic_task_name(task), c.n);
  if (c.skipped) printf(" (%d without features file left out)", c.skipped);
  if (c.num_classes) {
    printf("; classes");
    for (int i = 0; i < c.num_classes; i++) printf(" %d=%s", i, c.class_names[i]);
  }
  printf("\n");
  nic_splits s;
  nic_status st;
  if (t.splits)
    st = nic_splits_load(&s, &c, t.splits, warn, &t, &err);
  else if (t.folds)
    st = nic_splits_kfold(&c, t.folds, t.val_frac, t.so.seed, &s, &err);
  else
    st = nic_splits_single(&c, t.val_frac, t.so.seed, &s, &err);
  if (st != NIC_OK) {
    nic_cohort_free(&c);
    return cli_fail(&err);
  }
  printf("model %s, %d fold%s; results in %s\n", nic_sm_kind_name(t.so.kind), s.k,
         s.k > 1 ? "s" : "", t.outdir);
  fflush(stdout);
  /* the command line, for metrics.json */
  char line[4096];
  size_t at = 0;
  line[0] = 0;
  for (int i = -1; i < argc && at < sizeof line; i++) {
    int w =
        snprintf(line + at, sizeof line - at, "%s%s", i < 0 ? "nic" : " ", i < 0 ? "" : argv[i]);
    if (w > 0) at += (size_t)w;
  }
  nic_ctx *ctx = cli_make_ctx(t.threads, t.so.seed);
  nic_eval e;
  memset(&e, 0, sizeof e);
  st = ctx ? nic_sm_crossval(ctx, &c, &s, &t.so, t.outdir, line, &e, &err) : NIC_EINVAL;
  cli_progress_end(&t.prog);
  if (st == NIC_OK) {
    nic_eval_print(&e, stdout);
    char summary[1024];
    nic_eval_line(&e, summary, sizeof summary);
    printf("%s\n", summary);
    nic_eval_free(&e);
  } else if (ctx) {
    rc = cli_fail(&err);
  } else {
    rc = 1;
  }
  nic_ctx_free(ctx);
  nic_splits_free(&s);
  nic_cohort_free(&c);
  return rc;
}
