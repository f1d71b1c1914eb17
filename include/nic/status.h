/* Error reporting for libnic: every fallible call returns a nic_status and,
 * when given a nic_error, fills it with a message naming what went wrong.
 * Library code never exits; only the CLI chooses exit codes. */
#ifndef NIC_STATUS_H
#define NIC_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nic_status {
  NIC_OK = 0,
  NIC_EINVAL,      /* bad argument or inconsistent configuration */
  NIC_ENOMEM,      /* allocation failed */
  NIC_EIO,         /* file could not be read or written */
  NIC_EFORMAT,     /* file exists but its content is malformed */
  NIC_EBACKEND,    /* the compute backend (oneDNN, CUDA) reported a failure */
  NIC_EUNSUPPORTED /* valid request that this build cannot do */
} nic_status;

#define NIC_ERRMSG_MAX 512

typedef struct nic_error {
  nic_status code;
  char msg[NIC_ERRMSG_MAX];
} nic_error;

/* Records code and a printf-style message in err (if non-NULL); returns code
 * so that callers can write `return nic_err(err, NIC_EIO, "...")`. */
nic_status nic_err(nic_error *err, nic_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends context ("loading model.safetensors: ") to an existing message. */
nic_status nic_err_prefix(nic_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *nic_status_str(nic_status s);

#ifdef __cplusplus
}
#endif
#endif
