/* Patch encoders: the NIC / MTL-NIC architecture, and importing the
 * published Keras weights. */
#ifndef NIC_ENCODER_H
#define NIC_ENCODER_H

#include "nic/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The NIC encoder of Tellez et al. (TPAMI 2019; MIDL 2020): input a 128x128
 * RGB patch at 0.5 um/px, 2x2 average pool to 64x64, then 4 x [conv 3x3
 * stride 2 'valid' with 128 filters + bias, LeakyReLU(0.2), batch norm
 * (eps 1e-3)], flatten in NHWC order, dense 1152 -> embed_dim (linear).
 * Layer names: pool, conv1..conv4, bn1..bn4, flatten, embedding. Params
 * are zero; call nic_model_init_params or load weights. */
nic_status nic_encoder_build_nic(nic_model **out, int embed_dim, nic_error *err);

/* Converts a Keras HDF5 encoder (the published encoder_multitask-4.h5 or
 * encoder_bigan.h5, whose layer names differ) into a NIC encoder with the
 * weights, BN statistics and metadata set. */
nic_status nic_encoder_import_keras(nic_model **out, const char *h5_path, nic_error *err);

/* resnet-small: a ResNet-18-style encoder sized for CPUs, with the NIC
 * encoder's input (128x128 RGB at 0.5 um/px, [-1, 1], 2x2 average pool to
 * 64x64): a 3x3/2 stem of 32 filters, then four stages of two residual
 * blocks (32, 64, 128, 256 filters at 32, 16, 8, 4 px; each block conv 3x3
 * + BN + ReLU, conv 3x3 + BN, plus the input or a 1x1/2 projection + BN,
 * then ReLU), global average pooling and a linear dense layer to embed_dim.
 * About 3x the NIC encoder's compute. The last batch norm of each residual
 * branch starts with gamma 0, so every block starts as the identity. */
nic_status nic_encoder_build_resnet_small(nic_model **out, int embed_dim, nic_error *err);

/* An untrained encoder by architecture name: "nic" or "resnet-small"; the
 * weights still need nic_model_init_params. Sets the metadata
 * architecture_name. */
nic_status nic_encoder_build_arch(nic_model **out, const char *arch, int embed_dim, nic_error *err);

#ifdef __cplusplus
}
#endif
#endif
