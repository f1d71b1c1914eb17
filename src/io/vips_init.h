/* Private: libvips must be initialised once per process before any other
 * call. It is libvips' own process-wide state, not ours; every module that
 * calls libvips goes through this one lazy, thread-safe initialisation. */
#ifndef NIC_IO_VIPS_INIT_H
#define NIC_IO_VIPS_INIT_H

#include "nic/status.h"

/* NIC_OK, or NIC_EBACKEND with libvips' message. */
nic_status nic__vips_init(nic_error *err);

#endif
