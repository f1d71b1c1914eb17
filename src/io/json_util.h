/* Private: small json-c helpers shared by the model-file code
 * (safetensors.c) and the Keras importer. They exist so that every reader
 * checks types and ranges the same way instead of trusting json-c's
 * permissive getters (json_object_get_int turns a string or a missing key
 * into 0, which would hide malformed files). */
#ifndef NIC_IO_JSON_UTIL_H
#define NIC_IO_JSON_UTIL_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

/* Parses exactly `len` bytes of JSON text (strict syntax, UTF-8 checked;
 * trailing whitespace allowed, anything else after the value is not).
 * Returns the new object, or NULL with a description in msg. A literal
 * `null` document also yields NULL, with msg "the document is null". */
json_object *nic_json_parse(const char *text, size_t len, char *msg, size_t msgsize);

/* A JSON number that reads back as exactly `f`, in its shortest form
 * ("0.2" rather than 0.20000000298023224). f must be finite. */
json_object *nic_json_new_float(float f);
/* The same for doubles. */
json_object *nic_json_new_double(double d);

/* Integer member `key` within [lo, hi]. Returns 0 on success, -1 when the
 * member is missing, not an integer, or out of range. */
int nic_json_get_int(json_object *obj, const char *key, int64_t lo, int64_t hi, int64_t *out);
/* Integer value (not a member) within [lo, hi]; same convention. */
int nic_json_int_value(json_object *v, int64_t lo, int64_t hi, int64_t *out);
/* Numeric member (integer or floating point, finite). 0 or -1. */
int nic_json_get_num(json_object *obj, const char *key, double *out);
/* String member without embedded NUL bytes, or NULL. */
const char *nic_json_get_str(json_object *obj, const char *key);
/* String value without embedded NUL bytes, or NULL. */
const char *nic_json_str_value(json_object *v);
/* Boolean member: true/false or the integers 0/1. 0 or -1. */
int nic_json_get_bool(json_object *obj, const char *key, int *out);

/* The JSON string literal for s ("a\"b" for a"b), malloc'd; NULL when out
 * of memory. */
char *nic_json_quote(const char *s);

#endif
