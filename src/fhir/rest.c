/* rest.c - create, update and delete with versions, If-Match and conditions, inside one
 * transaction so that a concurrent writer can never slip in between check and write. */
#include "fhir/rest.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "core/arena.h"
#include "core/time.h"
#include "fhir/json.h"

#define MAX_MATCHES 1000

int jk_fhir_id_ok(const char *s)
{
    size_t n = strlen(s);
    /* "." and ".." match the id pattern but are path segments no URL can address. */
    if (n == 0 || n > 64 || !strcmp(s, ".") || !strcmp(s, "..")) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

const char *jk_fhir_new_id(struct jk_arena *a)
{
    /* A UUID version 7 (RFC 9562): 48 bits of milliseconds, then random bits. Ids made
     * later sort later, so index inserts land at the right edge of the B-trees. */
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) return NULL;
    uint64_t ms = (uint64_t)jk_time_now_ms();
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x70);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    return jk_arena_printf(
        a, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
        b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

jk_rc jk_fhir_criteria_parse(struct jk_arena *a, struct jk_diag *d, const char *const *keys,
                             const char *const *values, size_t n, struct jk_fhir_criteria *out)
{
    out->items = jk_arena_zalloc(a, (n ? n : 1) * sizeof *out->items);
    out->n = 0;
    if (!out->items) return JK_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *k = keys[i], *v = values[i];
        if (strcmp(k, "_format") == 0 || strcmp(k, "_pretty") == 0) continue;
        struct jk_fhir_criterion *c = &out->items[out->n];
        if (strcmp(k, "_id") == 0) {
            c->param = "_id";
            c->code = v;
        } else if (strcmp(k, "identifier") == 0) {
            const char *bar = strchr(v, '|');
            c->param = "identifier";
            c->system = bar ? jk_arena_strndup(a, v, (size_t)(bar - v)) : NULL;
            c->code = bar ? bar + 1 : v;
        } else {
            return jk_diag_add(d, JK_EINVAL, "not-supported", NULL,
                               "conditional operations support the parameters _id and "
                               "identifier; '%s' is not supported",
                               k);
        }
        if (!*c->code)
            return jk_diag_add(d, JK_EINVAL, "invalid", NULL, "search parameter '%s' needs a value",
                               k);
        out->n++;
    }
    if (!out->n)
        return jk_diag_add(d, JK_EINVAL, "invalid", NULL,
                           "a conditional operation needs at least one search parameter");
    return JK_OK;
}

/* Ids of current resources of type that meet every criterion (at most MAX_MATCHES). */
static jk_rc match(jk_conn *c, struct jk_fhir_write *w, const char ***ids, size_t *n)
{
    const char **set = NULL;
    size_t n_set = 0;
    for (size_t i = 0; i < w->cond->n; i++) {
        const struct jk_fhir_criterion *cr = &w->cond->items[i];
        const char **found;
        size_t n_found;
        jk_rc rc;
        if (strcmp(cr->param, "_id") == 0) {
            int64_t v;
            int is_deleted;
            if ((rc = jk_res_current_version(c, w->type, cr->code, &v, &is_deleted))) return rc;
            found = jk_arena_alloc(w->arena, sizeof *found);
            if (!found) return JK_ENOMEM;
            found[0] = cr->code;
            n_found = v && !is_deleted;
        } else if ((rc = jk_res_find_token(c, w->arena, w->type, cr->param, cr->system, cr->code,
                                           MAX_MATCHES, &found, &n_found))) {
            return rc;
        }
        if (i == 0) {
            set = found;
            n_set = n_found;
            continue;
        }
        size_t k = 0; /* intersect in place */
        for (size_t a = 0; a < n_set; a++)
            for (size_t b = 0; b < n_found; b++)
                if (strcmp(set[a], found[b]) == 0) {
                    set[k++] = set[a];
                    break;
                }
        n_set = k;
    }
    *ids = set;
    *n = n_set;
    return JK_OK;
}

/* The members of obj except those named in skip, as JSON text without the opening brace:
 * `"a":1,"b":2}`, or `}` when none is left. In the arena. */
static const char *members_text(struct jk_arena *a, struct json_object *obj,
                                const char *const *skip, size_t n_skip, size_t *len)
{
    struct json_object *copy = json_object_new_object();
    if (!copy) return NULL;
    if (obj && json_object_is_type(obj, json_type_object)) {
        json_object_object_foreach(obj, k, v)
        {
            size_t i = 0;
            while (i < n_skip && strcmp(k, skip[i]))
                i++;
            if (i == n_skip) json_object_object_add(copy, k, json_object_get(v));
        }
    }
    const char *text = jk_json_text(copy, a, len);
    json_object_put(copy);
    if (!text) return NULL;
    (*len)--;
    return text + 1;
}

/* Search index rows of res: its identifiers (full extraction comes with search). */
static jk_rc index_rows(struct jk_arena *a, struct json_object *res, struct jk_idx_row **out,
                        size_t *n)
{
    struct json_object *ids;
    *out = NULL;
    *n = 0;
    if (!json_object_object_get_ex(res, "identifier", &ids) ||
        !json_object_is_type(ids, json_type_array))
        return JK_OK;
    size_t len = json_object_array_length(ids);
    struct jk_idx_row *t = jk_arena_zalloc(a, (len ? len : 1) * sizeof *t);
    if (!t) return JK_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        struct json_object *ident = json_object_array_get_idx(ids, i);
        const char *value = jk_json_str(ident, "value");
        if (!value) continue;
        t[*n].kind = JK_IDX_TOKEN;
        t[*n].param = "identifier";
        t[*n].s1 = jk_json_str(ident, "system");
        t[*n].s2 = value;
        (*n)++;
    }
    *out = t;
    return JK_OK;
}

jk_rc jk_fhir_write_prepare(struct jk_fhir_write *w)
{
    static const char *const top[] = {"resourceType", "id", "meta"};
    static const char *const stamped[] = {"versionId", "lastUpdated"};
    if (!w->res) return JK_OK; /* a delete */
    struct json_object *meta = NULL;
    json_object_object_get_ex(w->res, "meta", &meta);
    w->meta_rest = members_text(w->arena, meta, stamped, 2, &w->meta_rest_len);
    w->rest = members_text(w->arena, w->res, top, 3, &w->rest_len);
    if (!w->meta_rest || !w->rest) return JK_ENOMEM;
    return index_rows(w->arena, w->res, &w->rows, &w->n_rows);
}

/* The stored text: resourceType, id and meta first (readers find them at once), then the
 * rest as submitted. Only id, version and time are decided inside the transaction. */
static const char *render(struct jk_fhir_write *w, const char *id, int64_t version,
                          const char *last_updated, size_t *len)
{
    int has_meta_rest = w->meta_rest_len > 1, has_rest = w->rest_len > 1;
    char *text = jk_arena_printf(w->arena,
                                 "{\"resourceType\":\"%s\",\"id\":\"%s\",\"meta\":{\"versionId\":"
                                 "\"%lld\",\"lastUpdated\":\"%s\"%s%.*s%s%.*s",
                                 w->type, id, (long long)version, last_updated,
                                 has_meta_rest ? "," : "", (int)w->meta_rest_len, w->meta_rest,
                                 has_rest ? "," : "", (int)w->rest_len, w->rest);
    *len = text ? strlen(text) : 0;
    return text;
}

static jk_rc put_version(jk_conn *c, struct jk_fhir_write *w, const char *id, int64_t version)
{
    char now[40];
    jk_time_iso(w->now_ms, now, sizeof now);
    struct jk_res *r = &w->out;
    memset(r, 0, sizeof *r);
    r->type = w->type;
    r->id = id;
    r->version = version;
    r->last_updated = jk_arena_strdup(w->arena, now);
    r->is_deleted = w->kind == JK_FHIR_DELETE;
    r->method = w->kind == JK_FHIR_CREATE ? "POST" : w->kind == JK_FHIR_UPDATE ? "PUT" : "DELETE";
    if (!r->is_deleted && !(r->body = render(w, id, version, now, &r->body_len))) return JK_ENOMEM;
    jk_rc rc = jk_res_insert(c, r);
    if (!rc)
        rc = jk_res_index(c, w->type, id, r->is_deleted ? NULL : w->rows,
                          r->is_deleted ? 0 : w->n_rows, version == 1);
    if (rc == JK_ECONFLICT)
        jk_diag_add(w->diag, JK_ECONFLICT, "conflict", NULL,
                    "%s/%s was changed by someone else at the same time; read it and try again",
                    w->type, id);
    return rc;
}

jk_rc jk_fhir_write_tx(jk_conn *c, void *arg)
{
    struct jk_fhir_write *w = arg;
    const char *id = w->id;
    jk_rc rc;
    if (w->cond) {
        const char **ids;
        size_t n;
        if ((rc = match(c, w, &ids, &n))) return rc;
        if (n > 1)
            return jk_diag_add(w->diag, JK_EPRECOND, "multiple-matches", NULL,
                               "the condition matches %zu %s resources; it must match at most "
                               "one",
                               n, w->type);
        if (n == 1 && w->kind == JK_FHIR_CREATE) {
            w->status = 200; /* If-None-Exist: the existing resource stands */
            rc = jk_res_read(c, w->arena, w->type, ids[0], &w->out);
            return rc;
        }
        if (n == 1) {
            const char *body_id = w->res ? jk_json_str(w->res, "id") : NULL;
            if (body_id && strcmp(body_id, ids[0]))
                return jk_diag_add(w->diag, JK_EINVAL, "invalid", "id",
                                   "the resource id '%s' differs from the matched %s/%s", body_id,
                                   w->type, ids[0]);
            id = ids[0];
        } else if (w->kind == JK_FHIR_DELETE) {
            w->status = 204;
            return JK_OK; /* nothing matched: nothing to delete */
        } else if (w->kind == JK_FHIR_UPDATE) {
            id = w->res ? jk_json_str(w->res, "id") : NULL;
            w->kind = id ? JK_FHIR_UPDATE : JK_FHIR_CREATE;
        }
    }
    if (w->kind == JK_FHIR_CREATE) {
        if (!id && !(id = jk_fhir_new_id(w->arena))) return JK_EINTERNAL;
        w->status = 201;
        return put_version(c, w, id, 1);
    }
    int64_t current;
    int is_deleted;
    if ((rc = jk_res_current_version(c, w->type, id, &current, &is_deleted))) return rc;
    if (w->if_match && w->if_match != current)
        return jk_diag_add(w->diag, JK_EPRECOND, "conflict", NULL,
                           "If-Match expects version %lld of %s/%s but the current version is "
                           "%lld",
                           (long long)w->if_match, w->type, id, (long long)current);
    if (w->kind == JK_FHIR_DELETE) {
        w->status = 204;
        if (!current || is_deleted) return JK_OK; /* deleting twice is not an error */
        return put_version(c, w, id, current + 1);
    }
    w->status = current && !is_deleted ? 200 : 201;
    return put_version(c, w, id, current + 1);
}
