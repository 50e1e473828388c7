/* patch.c - JSON Patch (RFC 6902) on json-c documents, PATCH as a versioned update, and the
 * in-place $meta-add / $meta-delete. */
#include "fhir/patch.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "core/buf.h"
#include "fhir/search.h"
#include "fhir/validate.h"
#include "store/resource.h"

/* Stored bodies were accepted under the configured limits; reading them back needs only a
 * bound that no accepted body can reach. */
static const struct jk_json_limits stored_limits = {1000, (size_t)-1};

/* How often a patch is applied again when other writers keep getting in first. */
#define PATCH_MAX_ATTEMPTS 8

/* ---- parsing ---- */

jk_rc jk_fhir_patch_parse(const char *p, size_t n, const struct jk_json_limits *lim,
                          struct jk_diag *d, struct json_object **out)
{
    *out = NULL;
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (i == n) return jk_diag_add(d, JK_EINVAL, "structure", NULL, "the body is empty");
    if (p[i] != '[')
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "a JSON Patch document is a JSON array of operations such as "
                           "[{\"op\":\"replace\",\"path\":\"/active\",\"value\":false}]");
    /* Plain syntax first, so that an error names the client's own byte offset. */
    struct json_tokener *tok = json_tokener_new_ex(lim->max_depth);
    if (!tok) return JK_ENOMEM;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *probe = n <= 0x7fffffff ? json_tokener_parse_ex(tok, p, (int)n) : NULL;
    enum json_tokener_error err = json_tokener_get_error(tok);
    size_t offset = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    json_object_put(probe);
    if (err == json_tokener_continue)
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "the JSON Patch document ends before it is complete");
    if (err == json_tokener_error_depth)
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "the JSON Patch document nests deeper than %d levels", lim->max_depth);
    if (err != json_tokener_success && n <= 0x7fffffff)
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "the JSON Patch document is not valid JSON (%s at byte %zu)",
                           json_tokener_error_desc(err), offset);
    for (size_t k = offset; err == json_tokener_success && k < n; k++)
        if (!strchr(" \t\r\n", p[k]))
            return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                               "the JSON Patch document has data after its array, at byte %zu", k);
    /* jk_json_parse reads one object: wrap the array in one, to keep every check it makes
     * (UTF-8, NUL bytes, duplicate names, lone surrogates, depth and array limits). */
    static const char head[] = "{\"p\":";
    struct jk_buf b;
    jk_buf_init(&b, 0);
    jk_rc rc = jk_buf_append(&b, head, sizeof head - 1);
    if (!rc) rc = jk_buf_append(&b, p, n);
    if (!rc) rc = jk_buf_puts(&b, "}");
    struct json_object *wrap = NULL;
    if (!rc) {
        struct jk_json_limits l = *lim;
        l.max_depth++; /* the wrapper is one level more than the client sent */
        rc = jk_json_parse(b.p, b.len, &l, d, &wrap);
    }
    jk_buf_free(&b);
    if (rc) return rc;
    struct json_object *arr;
    if (!json_object_object_get_ex(wrap, "p", &arr) || !json_object_is_type(arr, json_type_array)) {
        json_object_put(wrap);
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "a JSON Patch document is a JSON array of operations");
    }
    *out = json_object_get(arr);
    json_object_put(wrap);
    return JK_OK;
}

/* ---- JSON Pointer (RFC 6901) ---- */

struct ptr {
    char **tok;
    size_t n;
};

/* One operation being applied, for messages. */
struct op_ctx {
    struct jk_diag *d;
    size_t index;
    const char *op, *path;
};

static jk_rc op_fail(struct op_ctx *o, jk_rc rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static jk_rc op_fail(struct op_ctx *o, jk_rc rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = jk_arena_vprintf(o->d->arena, fmt, ap);
    va_end(ap);
    if (o->op)
        return jk_diag_add(o->d, rc, rc == JK_ERULE ? "processing" : "invalid", NULL,
                           "JSON Patch operation [%zu] (%s %s): %s", o->index, o->op,
                           o->path ? o->path : "", msg ? msg : "");
    return jk_diag_add(o->d, rc, rc == JK_ERULE ? "processing" : "invalid", NULL,
                       "JSON Patch operation [%zu]: %s", o->index, msg ? msg : "");
}

/* Splits pointer s into unescaped tokens. "" is the whole document (no tokens). */
static jk_rc ptr_parse(struct op_ctx *o, const char *what, const char *s, struct ptr *out)
{
    struct jk_arena *a = o->d->arena;
    out->n = 0;
    out->tok = NULL;
    if (!*s) return JK_OK;
    if (*s != '/')
        return op_fail(o, JK_EINVAL,
                       "%s '%s' is not a JSON Pointer: it must be empty or start "
                       "with '/'",
                       what, s);
    size_t n = 0;
    for (const char *q = s; *q; q++)
        n += *q == '/';
    out->tok = jk_arena_alloc(a, n * sizeof *out->tok);
    if (!out->tok) return JK_ENOMEM;
    const char *q = s + 1;
    for (;;) {
        const char *end = strchr(q, '/');
        size_t len = end ? (size_t)(end - q) : strlen(q);
        char *t = jk_arena_alloc(a, len + 1);
        if (!t) return JK_ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < len; i++) {
            if (q[i] != '~') {
                t[k++] = q[i];
            } else if (i + 1 < len && (q[i + 1] == '0' || q[i + 1] == '1')) {
                t[k++] = q[i + 1] == '0' ? '~' : '/';
                i++;
            } else {
                return op_fail(o, JK_EINVAL,
                               "%s '%s' is not a JSON Pointer: '~' must be followed by 0 or 1",
                               what, s);
            }
        }
        t[k] = '\0';
        out->tok[out->n++] = t;
        if (!end) break;
        q = end + 1;
    }
    return JK_OK;
}

/* The array index that token t names in an array of len elements: 0 when it is one, -1 when
 * it is not an index at all. "-" is len (only add accepts it). */
static int arr_index(const char *t, size_t *out)
{
    size_t v = 0;
    if (!*t || (t[0] == '0' && t[1])) return -1;
    for (const char *q = t; *q; q++) {
        if (*q < '0' || *q > '9' || v > ((size_t)-1 - 9) / 10) return -1;
        v = v * 10 + (size_t)(*q - '0');
    }
    *out = v;
    return 0;
}

/* The value that tokens [0, n) of p point at. Returns 1 when it exists (*out may be NULL for
 * a JSON null), 0 when it does not. */
static int walk(struct json_object *doc, const struct ptr *p, size_t n, struct json_object **out)
{
    struct json_object *cur = doc;
    for (size_t i = 0; i < n; i++) {
        if (json_object_is_type(cur, json_type_object)) {
            if (!json_object_object_get_ex(cur, p->tok[i], &cur)) return 0;
        } else if (json_object_is_type(cur, json_type_array)) {
            size_t idx;
            if (arr_index(p->tok[i], &idx) || idx >= json_object_array_length(cur)) return 0;
            cur = json_object_array_get_idx(cur, idx);
        } else {
            return 0;
        }
    }
    *out = cur;
    return 1;
}

/* Inserts value (a reference the array takes over) at idx of arr; json-c 0.16 has no insert. */
static jk_rc array_insert(struct json_object *arr, size_t idx, struct json_object *value)
{
    size_t len = json_object_array_length(arr);
    if (idx == len) return json_object_array_add(arr, value) ? JK_ENOMEM : JK_OK;
    size_t n_tail = len - idx;
    struct json_object **tail = malloc(n_tail * sizeof *tail);
    if (!tail) {
        json_object_put(value);
        return JK_ENOMEM;
    }
    for (size_t i = 0; i < n_tail; i++)
        tail[i] = json_object_get(json_object_array_get_idx(arr, idx + i));
    json_object_array_del_idx(arr, idx, n_tail);
    jk_rc rc = json_object_array_add(arr, value) ? JK_ENOMEM : JK_OK;
    for (size_t i = 0; i < n_tail; i++)
        if (json_object_array_add(arr, tail[i])) rc = JK_ENOMEM;
    free(tail);
    return rc;
}

/* RFC 6902 4.1 add: value is a reference that the document takes over (or that is released). */
static jk_rc do_add(struct op_ctx *o, struct json_object **doc, const struct ptr *p,
                    struct json_object *value)
{
    if (p->n == 0) {
        json_object_put(*doc);
        *doc = value;
        return JK_OK;
    }
    struct json_object *parent;
    const char *last = p->tok[p->n - 1];
    if (!walk(*doc, p, p->n - 1, &parent) || !parent) {
        json_object_put(value);
        return op_fail(o, JK_ERULE, "the parent of the target location does not exist");
    }
    if (json_object_is_type(parent, json_type_object))
        return json_object_object_add(parent, last, value) ? JK_ENOMEM : JK_OK;
    if (json_object_is_type(parent, json_type_array)) {
        size_t len = json_object_array_length(parent), idx = len;
        if (strcmp(last, "-") && (arr_index(last, &idx) || idx > len)) {
            json_object_put(value);
            return op_fail(o, JK_ERULE,
                           "'%s' is not an index of the array, which has %zu elements (use "
                           "0..%zu, or '-' to append)",
                           last, len, len);
        }
        return array_insert(parent, idx, value);
    }
    json_object_put(value);
    return op_fail(o, JK_ERULE,
                   "the parent of the target location is neither an object nor an "
                   "array");
}

/* RFC 6902 4.2 remove. When taken is not NULL the removed value is handed there (a reference
 * the caller owns) instead of being released. */
static jk_rc do_remove(struct op_ctx *o, struct json_object **doc, const struct ptr *p,
                       struct json_object **taken)
{
    struct json_object *parent, *target;
    if (p->n == 0) return op_fail(o, JK_ERULE, "the whole document cannot be removed");
    if (!walk(*doc, p, p->n, &target)) return op_fail(o, JK_ERULE, "the path does not exist");
    walk(*doc, p, p->n - 1, &parent);
    if (taken) *taken = json_object_get(target);
    const char *last = p->tok[p->n - 1];
    if (json_object_is_type(parent, json_type_object)) {
        json_object_object_del(parent, last);
    } else {
        size_t idx = 0;
        arr_index(last, &idx); /* walk() proved it is one */
        json_object_array_del_idx(parent, idx, 1);
    }
    return JK_OK;
}

/* RFC 6902 4.6 test equality: numbers by value, objects regardless of member order. */
static int json_equal(struct json_object *a, struct json_object *b)
{
    enum json_type ta = json_object_get_type(a), tb = json_object_get_type(b);
    int na = ta == json_type_int || ta == json_type_double,
        nb = tb == json_type_int || tb == json_type_double;
    if (na && nb) {
        if (ta == json_type_int && tb == json_type_int)
            return json_object_get_int64(a) == json_object_get_int64(b);
        return json_object_get_double(a) == json_object_get_double(b);
    }
    if (ta != tb) return 0;
    switch (ta) {
    case json_type_null: return 1;
    case json_type_boolean: return json_object_get_boolean(a) == json_object_get_boolean(b);
    case json_type_string:
        return json_object_get_string_len(a) == json_object_get_string_len(b) &&
               memcmp(json_object_get_string(a), json_object_get_string(b),
                      (size_t)json_object_get_string_len(a)) == 0;
    case json_type_array: {
        size_t n = json_object_array_length(a);
        if (n != json_object_array_length(b)) return 0;
        for (size_t i = 0; i < n; i++)
            if (!json_equal(json_object_array_get_idx(a, i), json_object_array_get_idx(b, i)))
                return 0;
        return 1;
    }
    case json_type_object: {
        if (json_object_object_length(a) != json_object_object_length(b)) return 0;
        json_object_object_foreach(a, k, va)
        {
            struct json_object *vb;
            if (!json_object_object_get_ex(b, k, &vb) || !json_equal(va, vb)) return 0;
        }
        return 1;
    }
    default: return 0;
    }
}

static const char *type_name(struct json_object *v)
{
    return v ? json_type_to_name(json_object_get_type(v)) : "null";
}

/* Member key of operation op as a string, or NULL. *present tells whether it is there. */
static const char *op_str(struct json_object *op, const char *key, int *present)
{
    struct json_object *v;
    *present = json_object_object_get_ex(op, key, &v);
    return *present && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static jk_rc apply_one(struct op_ctx *o, struct json_object **doc, struct json_object *op)
{
    static const char *const ops[] = {"add", "remove", "replace", "move", "copy", "test"};
    int present;
    if (!json_object_is_type(op, json_type_object))
        return op_fail(o, JK_EINVAL, "an operation must be a JSON object, not %s", type_name(op));
    const char *name = op_str(op, "op", &present);
    if (!name)
        return op_fail(o, JK_EINVAL,
                       "'op' %s; it must be one of add, remove, replace, move, "
                       "copy, test",
                       present ? "must be a string" : "is missing");
    size_t k = 0;
    while (k < sizeof ops / sizeof ops[0] && strcmp(name, ops[k]))
        k++;
    if (k == sizeof ops / sizeof ops[0])
        return op_fail(o, JK_EINVAL,
                       "'%s' is not a JSON Patch operation (add, remove, replace, move, copy, "
                       "test)",
                       name);
    o->op = ops[k];
    const char *path = op_str(op, "path", &present);
    if (!path)
        return op_fail(o, JK_EINVAL, "'path' %s", present ? "must be a string" : "is missing");
    o->path = path;
    struct ptr p, from_p;
    jk_rc rc = ptr_parse(o, "path", path, &p);
    if (rc) return rc;
    struct json_object *value = NULL;
    int has_value = json_object_object_get_ex(op, "value", &value);
    if (!has_value && (k == 0 || k == 2 || k == 5))
        return op_fail(o, JK_EINVAL, "'value' is missing");
    const char *from = NULL;
    if (k == 3 || k == 4) {
        if (!(from = op_str(op, "from", &present)))
            return op_fail(o, JK_EINVAL, "'from' %s", present ? "must be a string" : "is missing");
        if ((rc = ptr_parse(o, "from", from, &from_p))) return rc;
    }
    struct json_object *target, *moved = NULL;
    switch (k) {
    case 0: return do_add(o, doc, &p, json_object_get(value));
    case 1: return do_remove(o, doc, &p, NULL);
    case 2:
        if (!walk(*doc, &p, p.n, &target)) return op_fail(o, JK_ERULE, "the path does not exist");
        if (p.n && (rc = do_remove(o, doc, &p, NULL))) return rc;
        return do_add(o, doc, &p, json_object_get(value));
    case 3: {
        size_t fl = strlen(from);
        if (strncmp(path, from, fl) == 0 && path[fl] == '/')
            return op_fail(o, JK_ERULE,
                           "a value cannot be moved into one of its own children "
                           "('%s' is inside '%s')",
                           path, from);
        if (!walk(*doc, &from_p, from_p.n, &target))
            return op_fail(o, JK_ERULE, "'from' %s does not exist", from);
        if (from_p.n == 0) return JK_OK; /* moving the root onto itself */
        if ((rc = do_remove(o, doc, &from_p, &moved))) return rc;
        return do_add(o, doc, &p, moved);
    }
    case 4: {
        if (!walk(*doc, &from_p, from_p.n, &target))
            return op_fail(o, JK_ERULE, "'from' %s does not exist", from);
        struct json_object *copy = NULL;
        if (target && json_object_deep_copy(target, &copy, NULL)) return JK_ENOMEM;
        return do_add(o, doc, &p, copy);
    }
    default:
        if (!walk(*doc, &p, p.n, &target)) return op_fail(o, JK_ERULE, "the path does not exist");
        if (!json_equal(target, value))
            return op_fail(o, JK_ERULE, "test failed: the value at the path is not the one given");
        return JK_OK;
    }
}

jk_rc jk_fhir_patch_apply(struct json_object **doc, struct json_object *ops, struct jk_diag *d)
{
    if (!json_object_is_type(ops, json_type_array))
        return jk_diag_add(d, JK_EINVAL, "structure", NULL,
                           "a JSON Patch document is a JSON array of operations");
    size_t n = json_object_array_length(ops);
    for (size_t i = 0; i < n; i++) {
        struct op_ctx o = {d, i, NULL, NULL};
        jk_rc rc = apply_one(&o, doc, json_object_array_get_idx(ops, i));
        if (rc) return rc;
    }
    return JK_OK;
}

/* ---- PATCH as an update ---- */

void jk_fhir_patch_release(struct jk_fhir_patch *p)
{
    json_object_put(p->res);
    p->res = NULL;
    p->w.res = NULL;
}

/* The one id that p's condition matches. */
static jk_rc patch_resolve(jk_conn *c, struct jk_fhir_patch *p, const char **id)
{
    const char **ids;
    size_t n;
    jk_rc rc = jk_fhir_search_match(c, p->arena, p->diag, p->type, p->cond_keys, p->cond_values,
                                    p->n_cond, 2, &ids, &n);
    if (rc) return rc;
    if (n == 0)
        return jk_diag_add(p->diag, JK_ENOTFOUND, "not-found", NULL,
                           "the conditional patch matches no %s resource", p->type);
    if (n > 1)
        return jk_diag_add(p->diag, JK_EPRECOND, "multiple-matches", NULL,
                           "the conditional patch matches more than one %s resource; it must "
                           "match exactly one",
                           p->type);
    *id = ids[0];
    return JK_OK;
}

jk_rc jk_fhir_patch_load(jk_conn *c, struct jk_fhir_patch *p)
{
    jk_fhir_patch_release(p);
    const char *id = p->id;
    jk_rc rc;
    if (!id && (rc = patch_resolve(c, p, &id))) return rc;
    struct jk_res cur;
    rc = jk_res_read(c, p->arena, p->type, id, &cur);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(p->diag, rc, "not-found", NULL, "%s/%s is not known", p->type, id);
    if (rc == JK_EGONE)
        return jk_diag_add(p->diag, rc, "deleted", NULL, "%s/%s was deleted", p->type, id);
    if (rc) return rc;
    if (p->if_match && p->if_match != cur.version)
        return jk_diag_add(p->diag, JK_EPRECOND, "conflict", NULL,
                           "If-Match expects version %lld of %s/%s but the current version is "
                           "%lld",
                           (long long)p->if_match, p->type, id, (long long)cur.version);
    struct json_object *res;
    if ((rc = jk_json_parse(cur.body, cur.body_len, &stored_limits, p->diag, &res))) return rc;
    /* The patch applies to the clear values (a "test" of an identifier works); the update
     * seals them again, and refuses a sealed value the patch itself brings. */
    if ((rc = jk_protect_unseal(res, p->diag)) ||
        (rc = jk_fhir_patch_apply(&res, p->ops, p->diag))) {
        json_object_put(res);
        return rc;
    }
    p->res = res; /* owned from here on, whatever happens */
    p->target_id = id;
    p->base_version = cur.version;
    const char *rt =
        json_object_is_type(res, json_type_object) ? jk_json_str(res, "resourceType") : NULL;
    const char *new_id = rt ? jk_json_str(res, "id") : NULL;
    if (!rt || strcmp(rt, p->type))
        return jk_diag_add(p->diag, JK_ERULE, "processing", "resourceType",
                           "the patch changes the resourceType of %s/%s; a patch must keep it",
                           p->type, id);
    if (!new_id || strcmp(new_id, id))
        return jk_diag_add(p->diag, JK_ERULE, "processing", jk_arena_printf(p->arena, "%s.id", rt),
                           "the patch changes or removes the id of %s/%s; a patch must keep it",
                           p->type, id);
    if (jk_fhir_validate(res, p->diag)) {
        jk_diag_add(p->diag, JK_ERULE, "processing", NULL,
                    "%s/%s would not be valid after the patch (see the issues above)", p->type, id);
        return JK_ERULE;
    }
    memset(&p->w, 0, sizeof p->w);
    p->w.kind = JK_FHIR_UPDATE;
    p->w.type = p->type;
    p->w.id = id;
    p->w.res = res;
    p->w.if_match = p->if_match;
    p->w.arena = p->arena;
    p->w.diag = p->diag;
    p->w.now_ms = p->now_ms;
    return JK_OK;
}

jk_rc jk_fhir_patch_tx(jk_conn *c, void *arg)
{
    struct jk_fhir_patch *p = arg;
    jk_rc rc;
    int is_ready = p->res != NULL; /* loaded and prepared before the transaction */
    if (is_ready && !p->id) {
        const char *id;
        if ((rc = patch_resolve(c, p, &id))) return rc;
        is_ready = !strcmp(id, p->target_id);
    }
    for (int attempt = 0;; attempt++) {
        if (!is_ready) {
            if ((rc = jk_fhir_patch_load(c, p))) return rc;
            if (p->fixup && (rc = p->fixup(p->fixup_arg, p->res))) return rc;
            if ((rc = jk_fhir_write_prepare(&p->w))) return rc;
        }
        /* The write must land on the version the patch was applied to. The check is the
         * write's own (If-Match): a separate read before it could see an older version than
         * the write does under PostgreSQL's read committed. */
        struct jk_diag scratch;
        jk_diag_init(&scratch, p->arena);
        p->w.if_match = p->base_version;
        p->w.diag = &scratch;
        p->w.hooks = p->hooks;
        rc = jk_fhir_write_tx(c, &p->w);
        p->w.diag = p->diag;
        if (rc != JK_EPRECOND) {
            for (const struct jk_issue *is = scratch.head; is; is = is->next)
                jk_diag_add(p->diag, is->rc, is->code, is->expr, "%s", is->msg);
            return rc;
        }
        if (attempt + 1 == PATCH_MAX_ATTEMPTS)
            return jk_diag_add(p->diag, JK_ECONFLICT, "conflict", NULL,
                               "%s/%s kept changing while the patch was applied; try again",
                               p->type, p->target_id);
        is_ready = 0; /* another writer got in first: patch what is current now */
    }
}

/* ---- $meta-add, $meta-delete ---- */

static const char sql_set_body[] = "UPDATE resource_version SET body = ?"
                                   " WHERE type = ? AND id = ? AND version = ? AND body = ?";

/* Whether two Coding objects are the same tag: system and code (version, display ignored). */
static int same_coding(struct json_object *a, struct json_object *b)
{
    const char *sa = jk_json_str(a, "system"), *sb = jk_json_str(b, "system");
    const char *ca = jk_json_str(a, "code"), *cb = jk_json_str(b, "code");
    return (sa ? sb && !strcmp(sa, sb) : !sb) && (ca ? cb && !strcmp(ca, cb) : !cb);
}

static int same_item(struct json_object *a, struct json_object *b, int is_profile)
{
    if (is_profile)
        return json_object_is_type(a, json_type_string) &&
               json_object_is_type(b, json_type_string) &&
               !strcmp(json_object_get_string(a), json_object_get_string(b));
    return json_object_is_type(a, json_type_object) && json_object_is_type(b, json_type_object) &&
           same_coding(a, b);
}

/* Adds to (or deletes from) meta[key] the items of change[key]. */
static jk_rc merge_set(struct json_object *meta, struct json_object *change, const char *key,
                       int is_delete)
{
    int is_profile = strcmp(key, "profile") == 0;
    struct json_object *items, *have = NULL;
    if (!json_object_object_get_ex(change, key, &items) ||
        !json_object_is_type(items, json_type_array))
        return JK_OK;
    json_object_object_get_ex(meta, key, &have);
    if (have && !json_object_is_type(have, json_type_array)) have = NULL;
    size_t n = json_object_array_length(items);
    for (size_t i = 0; i < n; i++) {
        struct json_object *it = json_object_array_get_idx(items, i);
        size_t len = have ? json_object_array_length(have) : 0, j = 0;
        while (j < len && !same_item(json_object_array_get_idx(have, j), it, is_profile))
            j++;
        if (is_delete) {
            if (j < len) json_object_array_del_idx(have, j, 1);
            continue;
        }
        if (j < len) continue; /* sets: no duplicates */
        if (!have) {
            if (!(have = json_object_new_array())) return JK_ENOMEM;
            json_object_object_add(meta, key, have);
        }
        struct json_object *copy = NULL;
        if (json_object_deep_copy(it, &copy, NULL) || json_object_array_add(have, copy))
            return JK_ENOMEM;
    }
    if (have && json_object_array_length(have) == 0) json_object_object_del(meta, key);
    return JK_OK;
}

/* Reads the version m names (current or m->version). */
static jk_rc meta_read(jk_conn *c, struct jk_fhir_meta_change *m, struct jk_res *r)
{
    jk_rc rc = m->version ? jk_res_vread(c, m->arena, m->type, m->id, m->version, r)
                          : jk_res_read(c, m->arena, m->type, m->id, r);
    if (rc == JK_ENOTFOUND)
        return m->version ? jk_diag_add(m->diag, rc, "not-found", NULL, "%s/%s has no version %lld",
                                        m->type, m->id, (long long)m->version)
                          : jk_diag_add(m->diag, rc, "not-found", NULL, "%s/%s is not known",
                                        m->type, m->id);
    if (rc == JK_EGONE)
        return jk_diag_add(m->diag, rc, "deleted", NULL, "%s/%s %s deleted", m->type, m->id,
                           m->version ? "was at that version" : "was");
    return rc;
}

/* Stores body as version r's text, provided r's text is still what was read: *changed tells.
 * Under PostgreSQL the row lock also orders this against a concurrent update of the resource,
 * whose is_current change must wait for it. */
static jk_rc meta_store(jk_conn *c, const struct jk_res *r, const char *body, size_t len,
                        int *changed)
{
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql_set_body, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, body, len);
    jk_stmt_text_arg(s, 2, r->type, strlen(r->type));
    jk_stmt_text_arg(s, 3, r->id, strlen(r->id));
    jk_stmt_int_arg(s, 4, r->version);
    jk_stmt_text_arg(s, 5, r->body, r->body_len);
    rc = jk_stmt_step(s, &has_row);
    *changed = !rc && jk_stmt_changes(s) > 0;
    jk_stmt_reset(s);
    return rc;
}

jk_rc jk_fhir_meta_change_tx(jk_conn *c, void *arg)
{
    static const char *const keys[] = {"profile", "tag", "security"};
    struct jk_fhir_meta_change *m = arg;
    if (m->op != JK_FHIR_META_GET && m->meta) {
        jk_rc rc = jk_protect_seal(m->meta, m->diag); /* refuses a tag holding a sealed value */
        if (rc) return rc;
    }
    for (int attempt = 0;; attempt++) {
        struct jk_res r;
        struct json_object *res, *meta = NULL;
        jk_rc rc = meta_read(c, m, &r);
        if (rc || (rc = jk_json_parse(r.body, r.body_len, &stored_limits, m->diag, &res)))
            return rc;
        if (!json_object_object_get_ex(res, "meta", &meta) ||
            !json_object_is_type(meta, json_type_object))
            rc = JK_EINTERNAL; /* every stored version has meta.versionId */
        int changed = 1;
        if (!rc && m->op != JK_FHIR_META_GET) {
            for (size_t i = 0; i < 3 && !rc; i++)
                rc = merge_set(meta, m->meta, keys[i], m->op == JK_FHIR_META_DELETE);
            size_t len;
            const char *body = rc ? NULL : jk_json_text(res, m->arena, &len);
            if (!rc && !body) rc = JK_ENOMEM;
            if (!rc) rc = meta_store(c, &r, body, len, &changed);
            int64_t current = 0;
            int is_deleted;
            if (!rc && changed)
                rc = jk_res_current_version(c, m->type, m->id, &current, &is_deleted);
            if (!rc && changed && current == r.version) {
                /* _tag, _profile and _security search the current version. */
                struct jk_fhir_write w;
                memset(&w, 0, sizeof w);
                w.kind = JK_FHIR_UPDATE;
                w.type = m->type;
                w.id = m->id;
                w.res = res;
                w.arena = m->arena;
                w.diag = m->diag;
                /* The stored text keeps its sealed values; they are sealed afresh only to
                 * make the index rows, which do not depend on the seal. */
                if (!(rc = jk_protect_unseal(res, m->diag)) && !(rc = jk_fhir_write_prepare(&w)))
                    rc = jk_res_index(c, m->type, m->id, w.rows, w.n_rows, 0);
            }
        }
        if (!rc && changed && !(m->meta_text = jk_json_text(meta, m->arena, &m->meta_len)))
            rc = JK_ENOMEM;
        json_object_put(res);
        if (rc || changed) return rc;
        /* Someone changed the text in between (another $meta-add): merge into theirs. */
        if (attempt + 1 == PATCH_MAX_ATTEMPTS)
            return jk_diag_add(m->diag, JK_ECONFLICT, "conflict", NULL,
                               "%s/%s kept changing while its meta was changed; try again", m->type,
                               m->id);
    }
}
