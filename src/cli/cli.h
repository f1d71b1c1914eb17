/* The nic command line: a thin layer of subcommands over libnic. Each
 * subcommand lives in its own cmd_*.c, parses its flags with getopt_long,
 * prints its own -h, and returns the process exit code (0 ok, 1 failure,
 * 2 usage error). */
#ifndef NIC_CLI_H
#define NIC_CLI_H

#include "nic/nic.h"

typedef struct nic_cli_cmd {
  const char *name;
  const char *summary;
  int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
} nic_cli_cmd;

int cmd_encoder(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tissue(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_simulate(int argc, char **argv);
int cmd_train_slides(int argc,
                     char **argv); /* cmd_train.c (cmd_encoder.c has a static cmd_train) */
int cmd_predict(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_heatmap(int argc, char **argv);
int cmd_compress(int argc, char **argv);
int cmd_demo(int argc, char **argv);

/* Prints "nic: <msg>" for a library error and returns 1. */
int cli_fail(const nic_error *err);
/* Prints a usage error and returns 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parses a positive int flag value or reports a usage error (returns -1). */
int cli_parse_int(const char *cmd, const char *flag, const char *s, int min, int *out);
int cli_parse_double(const char *cmd, const char *flag, const char *s, double *out);
/* The bundled default encoder, looked up next to the running executable
 * (an installed nic) and in the source tree (nic_compress_default_model).
 * Returns 1 with its path in buf, or 0 with the places looked at in buf. */
int cli_default_model(char *buf, size_t size);
/* A context from --threads/--seed values; prints and returns NULL on error. */
nic_ctx *cli_make_ctx(int threads, uint64_t seed);

#endif
