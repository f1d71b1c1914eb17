#ifndef NIC_VERSION_H
#define NIC_VERSION_H
#define NIC_VERSION_STRING "0.1.0"
const char *nic_version(void);
#endif
