#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "nic/status.h"
#include "nic/version.h"

nic_status nic_err(nic_error *err, nic_status code, const char *fmt, ...) {
  if (!err) return code;
  err->code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  return code;
}

nic_status nic_err_prefix(nic_error *err, const char *fmt, ...) {
  if (!err) return NIC_OK;
  char prefix[NIC_ERRMSG_MAX], old[NIC_ERRMSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  old[sizeof old - 1] = '\0';
  /* Concatenated by hand: snprintf("%s%s") trips gcc's -Wformat-truncation
   * at -O2, and truncating a long message is exactly what is wanted. */
  size_t n = strlen(prefix), m = strnlen(old, sizeof err->msg - 1 - n);
  memmove(err->msg + n, old, m);
  memcpy(err->msg, prefix, n);
  err->msg[n + m] = '\0';
  return err->code;
}

const char *nic_status_str(nic_status s) {
  switch (s) {
  case NIC_OK:
    return "ok";
  case NIC_EINVAL:
    return "invalid argument";
  case NIC_ENOMEM:
    return "out of memory";
  case NIC_EIO:
    return "I/O error";
  case NIC_EFORMAT:
    return "malformed file";
  case NIC_EBACKEND:
    return "backend error";
  case NIC_EUNSUPPORTED:
    return "unsupported";
  }
  return "unknown error";
}

const char *nic_version(void) {
  return NIC_VERSION_STRING;
}
