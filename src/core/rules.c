/* rules.c - reading the files under rules/ (see rules.h). */
#include "core/rules.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "core/time.h"

jk_rc jk_rules_fail(char *err, size_t errlen, const char *file, const char *ptr, const char *fmt,
                    ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "%s: %s: %s", file, ptr, what);
    return JK_EINVAL;
}

jk_rc jk_rules_known_keys(struct json_object *o, const char *const *allowed, const char *file,
                          const char *ptr, char *err, size_t errlen)
{
    json_object_object_foreach(o, key, val)
    {
        (void)val;
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key))
            i++;
        if (!allowed[i]) return jk_rules_fail(err, errlen, file, ptr, "unknown member '%s'", key);
    }
    return JK_OK;
}

int jk_rules_is_date(const char *s)
{
    int64_t ms;
    if (strlen(s) != 10) return 0;
    for (int i = 0; i < 10; i++)
        if ((i == 4 || i == 7) ? s[i] != '-' : !isdigit((unsigned char)s[i])) return 0;
    return !jk_time_parse_iso(s, 10, &ms);
}

/* Reads the file into a NUL-terminated malloc'ed buffer. */
static jk_rc read_file(const char *path, char **out, size_t *n, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return JK_ENOTFOUND;
    }
    char *p = malloc(JK_RULES_MAX_BYTES + 1);
    size_t len = p ? fread(p, 1, JK_RULES_MAX_BYTES + 1, f) : 0;
    int is_err = ferror(f);
    fclose(f);
    if (!p) return JK_ENOMEM;
    if (is_err || len > JK_RULES_MAX_BYTES) {
        free(p);
        snprintf(err, errlen, "%s: %s", path,
                 is_err ? "cannot read the file" : "the file is larger than 1 MiB");
        return JK_EINVAL;
    }
    p[len] = '\0';
    *out = p;
    *n = len;
    return JK_OK;
}

jk_rc jk_rules_parse(const char *path, struct json_object **root, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    *root = NULL;
    jk_rc rc = read_file(path, &text, &len, err, errlen);
    if (rc) return rc;
    struct json_tokener *tok = json_tokener_new_ex(32);
    if (!tok) {
        free(text);
        return JK_ENOMEM;
    }
    struct json_object *r = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    while (r && end < len && isspace((unsigned char)text[end]))
        end++;
    if (!r || jerr != json_tokener_success || end < len) {
        size_t line = 1;
        for (size_t i = 0; i < end && i < len; i++)
            if (text[i] == '\n') line++;
        snprintf(err, errlen, "%s: line %zu: not valid JSON: %s", path, line,
                 r                               ? "something follows the JSON value"
                 : jerr == json_tokener_continue ? "the file ends inside the JSON value"
                                                 : json_tokener_error_desc(jerr));
        json_object_put(r);
        rc = JK_EINVAL;
    } else {
        *root = r;
    }
    json_tokener_free(tok);
    free(text);
    return rc;
}

jk_rc jk_rules_top(struct json_object *root, const char *path, const char *rule_set,
                   struct json_object **rules, char *err, size_t errlen)
{
    static const char *const top_keys[] = {"ruleSet", "description", "rules", NULL};
    struct json_object *v;
    jk_rc rc;
    if (!json_object_is_type(root, json_type_object))
        return jk_rules_fail(err, errlen, path, "/", "must be a JSON object");
    if ((rc = jk_rules_known_keys(root, top_keys, path, "/", err, errlen))) return rc;
    if (!json_object_object_get_ex(root, "ruleSet", &v) ||
        !json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), rule_set))
        return jk_rules_fail(err, errlen, path, "/ruleSet", "must be \"%s\"", rule_set);
    if (!json_object_object_get_ex(root, "rules", rules) ||
        !json_object_is_type(*rules, json_type_object))
        return jk_rules_fail(err, errlen, path, "/rules", "must be an object of rules by code");
    return JK_OK;
}

jk_rc jk_rules_rule(struct json_object *rule, const char *path, const char *code, char *ptr,
                    size_t ptrlen, struct json_object **value, char *err, size_t errlen)
{
    static const char *const rule_keys[] = {"value", "source", "effective", "note", NULL};
    struct json_object *v;
    jk_rc rc;
    snprintf(ptr, ptrlen, "/rules/%.200s", code);
    if (!json_object_is_type(rule, json_type_object))
        return jk_rules_fail(err, errlen, path, ptr,
                             "must be an object with value, source and effective");
    if ((rc = jk_rules_known_keys(rule, rule_keys, path, ptr, err, errlen))) return rc;
    if (!json_object_object_get_ex(rule, "source", &v) ||
        !json_object_is_type(v, json_type_string) || !json_object_get_string_len(v)) {
        snprintf(ptr, ptrlen, "/rules/%.200s/source", code);
        return jk_rules_fail(err, errlen, path, ptr,
                             "must say where the rule comes from (a non-empty string)");
    }
    if (!json_object_object_get_ex(rule, "effective", &v) ||
        !json_object_is_type(v, json_type_string) || !jk_rules_is_date(json_object_get_string(v))) {
        snprintf(ptr, ptrlen, "/rules/%.200s/effective", code);
        return jk_rules_fail(err, errlen, path, ptr,
                             "must be the date the rule took effect, as YYYY-MM-DD");
    }
    snprintf(ptr, ptrlen, "/rules/%.200s/value", code);
    if (!json_object_object_get_ex(rule, "value", value))
        return jk_rules_fail(err, errlen, path, ptr, "the value is missing");
    return JK_OK;
}

jk_rc jk_rules_int(struct json_object *v, const char *path, const char *ptr, long min, long max,
                   int *out, char *err, size_t errlen)
{
    if (!v || !json_object_is_type(v, json_type_int) || json_object_get_int64(v) < min ||
        json_object_get_int64(v) > max)
        return jk_rules_fail(err, errlen, path, ptr, "must be a whole number from %ld to %ld", min,
                             max);
    *out = (int)json_object_get_int64(v);
    return JK_OK;
}
