/* json.c - json-c with the limits and strictness a server facing the network needs. */
#include "fhir/json.h"

#include <string.h>

#include "core/arena.h"

/* Members of every object in the tree, and whether an array is too long. */
static size_t count_members(struct json_object *o, size_t max_array, size_t *too_long)
{
    size_t n = 0;
    if (json_object_is_type(o, json_type_object)) {
        json_object_object_foreach(o, k, v)
        {
            (void)k;
            n += 1 + count_members(v, max_array, too_long);
        }
    } else if (json_object_is_type(o, json_type_array)) {
        size_t len = json_object_array_length(o);
        if (len > max_array && len > *too_long) *too_long = len;
        for (size_t i = 0; i < len; i++)
            n += count_members(json_object_array_get_idx(o, i), max_array, too_long);
    }
    return n;
}

/* The value of the four hex digits at p, or -1. */
static int hex4(const char *p, const char *end)
{
    int v = 0;
    if (end - p < 4) return -1;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* One pass over text the parser has already accepted (so strings and escapes are well
 * formed), for what json-c lets through:
 * - name separators outside strings, one per object member: json-c keeps only the last of
 *   duplicate keys, so fewer members in the tree than separators means a duplicate;
 * - \u escapes of UTF-16 surrogates that do not form a pair, which json-c would silently
 *   replace with U+FFFD. Returns the separator count, or (size_t)-1 for a lone surrogate. */
static size_t scan_text(const char *p, size_t n)
{
    size_t count = 0;
    int in_string = 0;
    const char *end = p + n;
    for (const char *q = p; q < end; q++) {
        if (!in_string) {
            if (*q == '"')
                in_string = 1;
            else if (*q == ':')
                count++;
            continue;
        }
        if (*q == '"') {
            in_string = 0;
        } else if (*q == '\\') {
            q++;
            if (q < end && *q == 'u') {
                int u = hex4(q + 1, end);
                if (u >= 0xDC00 && u <= 0xDFFF) return (size_t)-1;
                if (u >= 0xD800 && u <= 0xDBFF) {
                    int lo = (end - q > 6 && q[5] == '\\' && q[6] == 'u') ? hex4(q + 7, end) : -1;
                    if (lo < 0xDC00 || lo > 0xDFFF) return (size_t)-1;
                    q += 6;
                }
                q += 4;
            }
        }
    }
    return count;
}

jk_rc jk_json_parse(const char *p, size_t n, const struct jk_json_limits *lim, struct jk_diag *d,
                    struct json_object **out)
{
    *out = NULL;
    if (n == 0) return jk_diag_add(d, JK_EINVAL, "structure", NULL, "the body is empty");
    if (memchr(p, '\0', n))
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "the body contains a NUL byte, which JSON text cannot contain");
    if (n > 0x7fffffff)
        return jk_diag_add(d, JK_ETOOBIG, "too-long", NULL, "the body is too large");
    struct json_tokener *tok = json_tokener_new_ex(lim->max_depth);
    if (!tok) return JK_ENOMEM;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *obj = json_tokener_parse_ex(tok, p, (int)n);
    enum json_tokener_error err = json_tokener_get_error(tok);
    size_t offset = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (err == json_tokener_continue)
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "the JSON text ends before it is complete");
    if (err == json_tokener_error_depth) {
        json_object_put(obj);
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "the JSON text nests deeper than %d levels", lim->max_depth);
    }
    if (err != json_tokener_success) {
        json_object_put(obj);
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "the body is not valid JSON (%s at byte %zu)",
                           json_tokener_error_desc(err), offset);
    }
    for (size_t i = offset; i < n; i++) {
        if (!strchr(" \t\r\n", p[i])) {
            json_object_put(obj);
            return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                               "the body has data after the JSON value, at byte %zu", i);
        }
    }
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        return jk_diag_add(d, JK_EINVAL, "structure", NULL, "the body must be a JSON object");
    }
    size_t too_long = 0;
    size_t members = count_members(obj, lim->max_array, &too_long);
    if (too_long) {
        json_object_put(obj);
        return jk_diag_add(d, JK_ETOOBIG, "too-costly", NULL,
                           "an array has %zu elements; the limit is %zu", too_long, lim->max_array);
    }
    size_t separators = scan_text(p, offset);
    if (separators == (size_t)-1) {
        json_object_put(obj);
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "a string contains a \\u escape of a lone UTF-16 surrogate, which is "
                           "not a character");
    }
    if (members != separators) {
        json_object_put(obj);
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "an object has the same property name twice");
    }
    *out = obj;
    return JK_OK;
}

const char *jk_json_text(struct json_object *obj, struct jk_arena *a, size_t *len)
{
    size_t n = 0;
    const char *s = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    char *copy = s ? jk_arena_strndup(a, s, n) : NULL;
    *len = copy ? n : 0;
    return copy;
}

const char *jk_json_str(struct json_object *obj, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}
