/* json.h - reading untrusted JSON bodies with limits, and writing stored JSON. */
#ifndef JK_FHIR_JSON_H
#define JK_FHIR_JSON_H

#include <json-c/json.h>
#include <stddef.h>

#include "core/diag.h"

struct jk_arena;

struct jk_json_limits {
    int max_depth;    /* nesting of objects and arrays: 400 */
    size_t max_array; /* elements in one array: 413 */
};

/* Parses p[0..n) as one JSON object. Refuses NUL bytes, invalid UTF-8, duplicate keys,
 * trailing data, nesting past max_depth and arrays past max_array, each with an issue in d.
 * On success the caller owns *out (json_object_put). */
jk_rc jk_json_parse(const char *p, size_t n, const struct jk_json_limits *lim, struct jk_diag *d,
                    struct json_object **out);

/* Compact text of obj, copied into the arena (decimals keep their original digits). */
const char *jk_json_text(struct json_object *obj, struct jk_arena *a, size_t *len);

/* The string value of key in obj, or NULL when absent or not a string. */
const char *jk_json_str(struct json_object *obj, const char *key);

#endif
