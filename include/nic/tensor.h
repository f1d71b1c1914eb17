/* Tensors: float32 compute, logical shape always NCHW (or N x F for 2-D).
 *
 * A tensor's bytes may be in a backend-private physical layout (oneDNN's
 * blocked nChw8c, say), so that consecutive layers exchange data without
 * reordering. `layout` is NULL for the dense row-major layout of `shape`;
 * anything else belongs to the backend that produced it, and only that
 * backend may interpret or convert it (nic_backend_to_plain). Code outside
 * nn/ should ask for a plain tensor before touching `data`. */
#ifndef NIC_TENSOR_H
#define NIC_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "nic/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NIC_MAX_DIMS 4

typedef struct nic_tensor {
  int ndim;
  int64_t shape[NIC_MAX_DIMS];
  float *data;  /* host memory for the CPU backend */
  size_t bytes; /* physical size of data (>= numel*4 for padded layouts) */
  size_t cap;   /* allocated bytes, when owned */
  void *layout; /* backend-private layout descriptor; NULL = plain */
  int owns;     /* data is freed with the tensor */
} nic_tensor;

#define NIC_TENSOR_INIT                                                                            \
  { 0, {0, 0, 0, 0}, NULL, 0, 0, NULL, 0 }

int64_t nic_tensor_numel(const nic_tensor *t);
int nic_tensor_same_shape(const nic_tensor *a, const nic_tensor *b);

/* (Re)allocates t as a plain, zero-filled tensor of the given shape,
 * reusing its buffer when large enough. */
nic_status nic_tensor_alloc(nic_tensor *t, int ndim, const int64_t *shape, nic_error *err);
nic_status nic_tensor_alloc4(nic_tensor *t, int64_t n, int64_t c, int64_t h, int64_t w,
                             nic_error *err);
nic_status nic_tensor_alloc2(nic_tensor *t, int64_t n, int64_t f, nic_error *err);
/* Ensures capacity for `bytes` physical bytes (contents undefined). */
nic_status nic_tensor_reserve(nic_tensor *t, size_t bytes, nic_error *err);
/* Wraps caller memory (not freed by nic_tensor_free). */
void nic_tensor_wrap(nic_tensor *t, float *data, int ndim, const int64_t *shape);
/* Deep copy of a plain tensor into dst (allocating). */
nic_status nic_tensor_copy(nic_tensor *dst, const nic_tensor *src, nic_error *err);
void nic_tensor_zero(nic_tensor *t);
void nic_tensor_fill(nic_tensor *t, float v);
void nic_tensor_free(nic_tensor *t);
/* Drops the private layout descriptor (after a backend rewrote data as plain). */
void nic_tensor_set_layout(nic_tensor *t, void *layout);

/* float16 storage helpers (IEEE binary16, round to nearest even). */
uint16_t nic_f32_to_f16(float f);
float nic_f16_to_f32(uint16_t h);
void nic_f32_to_f16_array(const float *src, uint16_t *dst, size_t n);
void nic_f16_to_f32_array(const uint16_t *src, float *dst, size_t n);

#ifdef __cplusplus
}
#endif
#endif
