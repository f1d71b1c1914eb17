/* libnic: Neural Image Compression for whole-slide images. The umbrella
 * header: every public header, so one include serves a program that uses
 * several modules (and the build checks that they never clash). */
#ifndef NIC_NIC_H
#define NIC_NIC_H
#include "nic/compress.h"
#include "nic/ctx.h"
#include "nic/data.h"
#include "nic/demo.h"
#include "nic/encoder.h"
#include "nic/encoder_train.h"
#include "nic/features.h"
#include "nic/image.h"
#include "nic/metrics.h"
#include "nic/nn.h"
#include "nic/plot.h"
#include "nic/sim.h"
#include "nic/slide.h"
#include "nic/slidemodel.h"
#include "nic/status.h"
#include "nic/tensor.h"
#include "nic/version.h"
#endif
