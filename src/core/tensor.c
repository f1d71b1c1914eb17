#include <stdlib.h>
#include <string.h>

#include "nic/tensor.h"

int64_t nic_tensor_numel(const nic_tensor *t) {
  if (t->ndim == 0) return 0;
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

int nic_tensor_same_shape(const nic_tensor *a, const nic_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

nic_status nic_tensor_reserve(nic_tensor *t, size_t bytes, nic_error *err) {
  if (t->owns && t->cap >= bytes && t->data) return NIC_OK;
  if (!t->owns) t->data = NULL; /* never free borrowed memory */
  free(t->data);
  t->data = NULL;
  t->cap = 0;
  size_t alloc = (bytes + 63) & ~(size_t)63;
  if (alloc == 0) alloc = 64;
  void *p = aligned_alloc(64, alloc);
  if (!p) return nic_err(err, NIC_ENOMEM, "cannot allocate %zu bytes for a tensor", bytes);
  t->data = p;
  t->cap = alloc;
  t->owns = 1;
  return NIC_OK;
}

void nic_tensor_set_layout(nic_tensor *t, void *layout) {
  if (t->layout != layout) free(t->layout);
  t->layout = layout;
}

nic_status nic_tensor_alloc(nic_tensor *t, int ndim, const int64_t *shape, nic_error *err) {
  if (ndim < 1 || ndim > NIC_MAX_DIMS)
    return nic_err(err, NIC_EINVAL, "tensor rank %d out of range 1..%d", ndim, NIC_MAX_DIMS);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return nic_err(err, NIC_EINVAL, "negative tensor dimension");
    n *= shape[i];
  }
  nic_status s = nic_tensor_reserve(t, (size_t)n * sizeof(float), err);
  if (s != NIC_OK) return s;
  t->ndim = ndim;
  for (int i = 0; i < NIC_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 0;
  t->bytes = (size_t)n * sizeof(float);
  nic_tensor_set_layout(t, NULL);
  memset(t->data, 0, t->bytes);
  return NIC_OK;
}

nic_status nic_tensor_alloc4(nic_tensor *t, int64_t n, int64_t c, int64_t h, int64_t w,
                             nic_error *err) {
  int64_t s[4] = {n, c, h, w};
  return nic_tensor_alloc(t, 4, s, err);
}

nic_status nic_tensor_alloc2(nic_tensor *t, int64_t n, int64_t f, nic_error *err) {
  int64_t s[2] = {n, f};
  return nic_tensor_alloc(t, 2, s, err);
}

void nic_tensor_wrap(nic_tensor *t, float *data, int ndim, const int64_t *shape) {
  memset(t, 0, sizeof *t);
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->data = data;
  t->bytes = (size_t)nic_tensor_numel(t) * sizeof(float);
}

nic_status nic_tensor_copy(nic_tensor *dst, const nic_tensor *src, nic_error *err) {
  if (src->layout) return nic_err(err, NIC_EINVAL, "nic_tensor_copy needs a plain tensor");
  nic_status s = nic_tensor_alloc(dst, src->ndim, src->shape, err);
  if (s != NIC_OK) return s;
  memcpy(dst->data, src->data, src->bytes);
  return NIC_OK;
}

void nic_tensor_zero(nic_tensor *t) {
  if (t->data) memset(t->data, 0, t->bytes);
}

void nic_tensor_fill(nic_tensor *t, float v) {
  int64_t n = nic_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) t->data[i] = v;
}

void nic_tensor_free(nic_tensor *t) {
  if (!t) return;
  if (t->owns) free(t->data);
  free(t->layout);
  memset(t, 0, sizeof *t);
}

/* binary16 conversion by bit manipulation (round to nearest even). */
uint16_t nic_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t exp = (x >> 23) & 0xffu;
  uint32_t man = x & 0x7fffffu;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0)); /* inf/nan */
  int32_t e = (int32_t)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
  if (e <= 0) {                                   /* subnormal or zero */
    if (e < -10) return (uint16_t)sign;
    man |= 0x800000u;
    uint32_t shift = (uint32_t)(14 - e);
    uint32_t half = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t half = sign | ((uint32_t)e << 10) | (man >> 13);
  uint32_t rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++; /* may carry into exp: fine */
  return (uint16_t)half;
}

float nic_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (man == 0) {
      x = sign;
    } else { /* subnormal: normalise */
      int e = -1;
      do {
        e++;
        man <<= 1;
      } while (!(man & 0x400u));
      x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (man << 13);
  } else {
    x = sign | ((exp - 15 + 127) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &x, 4);
  return f;
}

void nic_f32_to_f16_array(const float *src, uint16_t *dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = nic_f32_to_f16(src[i]);
}

void nic_f16_to_f32_array(const uint16_t *src, float *dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = nic_f16_to_f32(src[i]);
}
