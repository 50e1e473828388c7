/* rules.h - what every file under rules/ shares: read and parsed strictly, and problems
 * reported as "FILE: /json/pointer: what is wrong". */
#ifndef JK_RULES_H
#define JK_RULES_H

#include <stddef.h>

#include "core/rc.h"

struct json_object;

#define JK_RULES_MAX_BYTES (1u << 20) /* a rules file is at most 1 MiB */

/* Reads and parses the JSON file at path into *root (the caller puts it). JK_ENOTFOUND when
 * it cannot be read, JK_EINVAL with "FILE: line N: not valid JSON: ..." in err. */
jk_rc jk_rules_parse(const char *path, struct json_object **root, char *err, size_t errlen);

/* Writes "FILE: POINTER: message" into err and returns JK_EINVAL. */
jk_rc jk_rules_fail(char *err, size_t errlen, const char *file, const char *ptr, const char *fmt,
                    ...) __attribute__((format(printf, 5, 6)));

/* JK_EINVAL ("unknown member 'x'") when object o has a member not in allowed (NULL-ended). */
jk_rc jk_rules_known_keys(struct json_object *o, const char *const *allowed, const char *file,
                          const char *ptr, char *err, size_t errlen);

/* Checks the top of a rules file: an object {ruleSet: rule_set, description, rules: {...}};
 * *rules is its rules object (owned by root). */
jk_rc jk_rules_top(struct json_object *root, const char *path, const char *rule_set,
                   struct json_object **rules, char *err, size_t errlen);

/* Checks one rule rules/<code> = {value, source (non-empty), effective (YYYY-MM-DD), note?};
 * *value is its value and ptr (at least 256 bytes) becomes "/rules/<code>/value". */
jk_rc jk_rules_rule(struct json_object *rule, const char *path, const char *code, char *ptr,
                    size_t ptrlen, struct json_object **value, char *err, size_t errlen);

/* The whole number v (from min to max) into *out; else "must be a whole number from MIN to
 * MAX" at ptr. */
jk_rc jk_rules_int(struct json_object *v, const char *path, const char *ptr, long min, long max,
                   int *out, char *err, size_t errlen);

/* Whether s is a real date written YYYY-MM-DD. */
int jk_rules_is_date(const char *s);

#endif
