/* libnic: Neural Image Compression for whole-slide images. */
#ifndef NIC_NIC_H
#define NIC_NIC_H
#include "nic/ctx.h"
#include "nic/nn.h"
#include "nic/status.h"
#include "nic/tensor.h"
#include "nic/version.h"
#endif
