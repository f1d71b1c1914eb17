/* json-c helpers: strict parsing of untrusted text and typed getters that
 * report a wrong type instead of silently converting it. */
#include "io/json_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_object *nic_json_parse(const char *text, size_t len, char *msg, size_t msgsize) {
  /* Trailing whitespace is legal JSON and is how safetensors pads its
   * header; json-c's strict mode would call it trailing garbage, so it is
   * trimmed here and everything before it must parse completely. */
  while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t' || text[len - 1] == '\n' ||
                     text[len - 1] == '\r'))
    len--;
  if (len == 0) {
    snprintf(msg, msgsize, "empty JSON text");
    return NULL;
  }
  if (memchr(text, '\0', len)) {
    snprintf(msg, msgsize, "JSON text contains a NUL byte");
    return NULL;
  }
  if (len > (size_t)INT32_MAX) { /* json_tokener_parse_ex takes an int length */
    snprintf(msg, msgsize, "JSON text too long");
    return NULL;
  }
  json_tokener *tok = json_tokener_new_ex(64); /* nesting depth limit */
  if (!tok) {
    snprintf(msg, msgsize, "out of memory");
    return NULL;
  }
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  json_object *obj = json_tokener_parse_ex(tok, text, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  if (jerr == json_tokener_continue) {
    /* All input consumed, value unfinished. A top-level number or literal
     * ("42", "true") needs a delimiter to end; one more space gives it. */
    obj = json_tokener_parse_ex(tok, " ", 1);
    jerr = json_tokener_get_error(tok);
  }
  json_tokener_free(tok);
  if (jerr == json_tokener_continue) {
    json_object_put(obj);
    snprintf(msg, msgsize, "JSON text ends unexpectedly");
    return NULL;
  }
  if (jerr != json_tokener_success) {
    json_object_put(obj);
    snprintf(msg, msgsize, "invalid JSON at byte %zu: %s", end, json_tokener_error_desc(jerr));
    return NULL;
  }
  if (end != len) {
    json_object_put(obj);
    snprintf(msg, msgsize, "unexpected text after the JSON value at byte %zu", end);
    return NULL;
  }
  if (!obj) snprintf(msg, msgsize, "the document is null");
  return obj;
}

json_object *nic_json_new_float(float f) {
  char buf[32];
  /* The shortest %g form that converts back to the same float keeps files
   * readable (0.2, 1e-05) while staying exact. */
  for (int prec = 1; prec <= 9; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
    if (strtof(buf, NULL) == f) break;
  }
  return json_object_new_double_s((double)f, buf);
}

json_object *nic_json_new_double(double d) {
  char buf[40];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (strtod(buf, NULL) == d) break;
  }
  return json_object_new_double_s(d, buf);
}

int nic_json_int_value(json_object *v, int64_t lo, int64_t hi, int64_t *out) {
  if (!v || !json_object_is_type(v, json_type_int)) return -1;
  /* json-c keeps integers above INT64_MAX as uint64; get_int64 would clamp
   * them, which the range check below then rejects unless hi is INT64_MAX. */
  int64_t x = json_object_get_int64(v);
  if (x == INT64_MAX && json_object_get_uint64(v) != (uint64_t)INT64_MAX) return -1;
  if (x < lo || x > hi) return -1;
  *out = x;
  return 0;
}

int nic_json_get_int(json_object *obj, const char *key, int64_t lo, int64_t hi, int64_t *out) {
  json_object *v = NULL;
  if (!obj || !json_object_is_type(obj, json_type_object) ||
      !json_object_object_get_ex(obj, key, &v))
    return -1;
  return nic_json_int_value(v, lo, hi, out);
}

int nic_json_get_num(json_object *obj, const char *key, double *out) {
  json_object *v = NULL;
  if (!obj || !json_object_is_type(obj, json_type_object) ||
      !json_object_object_get_ex(obj, key, &v))
    return -1;
  if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
    return -1;
  double d = json_object_get_double(v);
  if (!isfinite(d)) return -1;
  *out = d;
  return 0;
}

const char *nic_json_str_value(json_object *v) {
  if (!v || !json_object_is_type(v, json_type_string)) return NULL;
  const char *s = json_object_get_string(v);
  /* "\u0000" inside a JSON string would silently cut a C string short. */
  if ((size_t)json_object_get_string_len(v) != strlen(s)) return NULL;
  return s;
}

const char *nic_json_get_str(json_object *obj, const char *key) {
  json_object *v = NULL;
  if (!obj || !json_object_is_type(obj, json_type_object) ||
      !json_object_object_get_ex(obj, key, &v))
    return NULL;
  return nic_json_str_value(v);
}

int nic_json_get_bool(json_object *obj, const char *key, int *out) {
  json_object *v = NULL;
  if (!obj || !json_object_is_type(obj, json_type_object) ||
      !json_object_object_get_ex(obj, key, &v))
    return -1;
  if (json_object_is_type(v, json_type_boolean)) {
    *out = json_object_get_boolean(v) ? 1 : 0;
    return 0;
  }
  int64_t x;
  if (nic_json_int_value(v, 0, 1, &x) != 0) return -1;
  *out = (int)x;
  return 0;
}

char *nic_json_quote(const char *s) {
  json_object *o = json_object_new_string(s);
  if (!o) return NULL;
  const char *t =
      json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  char *r = t ? strdup(t) : NULL;
  json_object_put(o);
  return r;
}
