#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nic/ctx.h"
#include "nn/backend.h"

struct nic_ctx {
  int threads;
  nic_rng rng;
  nic_backend *be;
};

nic_ctx_opts nic_ctx_default_opts(void) {
  nic_ctx_opts o = {0, 42, NULL};
  return o;
}

nic_status nic_ctx_create(nic_ctx **out, const nic_ctx_opts *opts, nic_error *err) {
  nic_ctx_opts o = opts ? *opts : nic_ctx_default_opts();
  *out = NULL;
  if (o.threads < 0) return nic_err(err, NIC_EINVAL, "threads must be >= 0, got %d", o.threads);
  if (o.backend && strcmp(o.backend, "cpu") != 0)
    return nic_err(err, NIC_EUNSUPPORTED, "unknown backend '%s' (this build has: cpu)", o.backend);
  nic_ctx *c = calloc(1, sizeof *c);
  if (!c) return nic_err(err, NIC_ENOMEM, "out of memory creating context");
  c->threads = o.threads > 0 ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (c->threads < 1) c->threads = 1;
  nic_rng_seed(&c->rng, o.seed);
  nic_status s = nic_backend_cpu_create(&c->be, c->threads, err);
  if (s != NIC_OK) {
    free(c);
    return s;
  }
  *out = c;
  return NIC_OK;
}

void nic_ctx_free(nic_ctx *ctx) {
  if (!ctx) return;
  if (ctx->be) ctx->be->ops->destroy(ctx->be);
  free(ctx);
}

int nic_ctx_threads(const nic_ctx *ctx) {
  return ctx->threads;
}
const char *nic_ctx_backend_name(const nic_ctx *ctx) {
  return ctx->be->ops->name;
}
nic_rng *nic_ctx_rng(nic_ctx *ctx) {
  return &ctx->rng;
}
nic_backend *nic_ctx_backend(nic_ctx *ctx) {
  return ctx->be;
}
