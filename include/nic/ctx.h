/* The explicit library context: compute backend, thread count and the
 * seeded random stream. libnic keeps no global state; everything that would
 * be global lives here, so that several contexts (one per MPI rank, one per
 * GPU) can coexist in a process. */
#ifndef NIC_CTX_H
#define NIC_CTX_H

#include <stdint.h>

#include "nic/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nic_ctx nic_ctx;

typedef struct nic_ctx_opts {
  int threads;         /* 0 = all cores */
  uint64_t seed;       /* seed of the context's random stream */
  const char *backend; /* "cpu" (oneDNN); NULL = default */
} nic_ctx_opts;

nic_ctx_opts nic_ctx_default_opts(void);
nic_status nic_ctx_create(nic_ctx **out, const nic_ctx_opts *opts, nic_error *err);
void nic_ctx_free(nic_ctx *ctx);

int nic_ctx_threads(const nic_ctx *ctx);
const char *nic_ctx_backend_name(const nic_ctx *ctx);

/* The context's random stream (xoshiro256**), used for init, dropout,
 * shuffling. Reseeding makes a run reproducible from that point. */
typedef struct nic_rng {
  uint64_t s[4];
} nic_rng;

void nic_rng_seed(nic_rng *r, uint64_t seed);
uint64_t nic_rng_next(nic_rng *r);
double nic_rng_uniform(nic_rng *r);             /* [0, 1) */
double nic_rng_normal(nic_rng *r);              /* N(0, 1) */
uint64_t nic_rng_below(nic_rng *r, uint64_t n); /* [0, n) */
nic_rng *nic_ctx_rng(nic_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
