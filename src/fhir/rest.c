/* rest.c - create, update and delete with versions, If-Match and conditions, inside one
 * transaction so that a concurrent writer can never slip in between check and write. */
#include "fhir/rest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "core/time.h"
#include "fhir/extract.h"
#include "fhir/json.h"
#include "fhir/search.h"
#include "mpi/idnum.h"
#include "mpi/mpi.h"

/* A conditional write needs to tell no match, one match and several apart: two is enough. */
#define MAX_MATCHES 2

int jk_fhir_id_okn(const char *s, size_t n)
{
    /* "." and ".." match the id pattern but are path segments no URL can address. */
    if (n == 0 || n > 64 || (s[0] == '.' && (n == 1 || (n == 2 && s[1] == '.')))) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

int jk_fhir_id_ok(const char *s)
{
    return jk_fhir_id_okn(s, strlen(s));
}

int64_t jk_fhir_parse_etag(const char *h)
{
    const char *p = h;
    if (!strncmp(p, "W/", 2)) p += 2;
    if (*p == '"') p++;
    char *end;
    long long v = strtoll(p, &end, 10);
    if (*end == '"') end++;
    return end == p || *end || v <= 0 ? -1 : v;
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
    const char **k = jk_arena_alloc(a, (n ? n : 1) * sizeof *k);
    const char **v = jk_arena_alloc(a, (n ? n : 1) * sizeof *v);
    out->keys = k;
    out->values = v;
    out->n = 0;
    if (!k || !v) return JK_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(keys[i], "_format") == 0 || strcmp(keys[i], "_pretty") == 0) continue;
        if (!*values[i])
            return jk_diag_add(d, JK_EINVAL, "invalid", keys[i],
                               "search parameter '%s' needs a value", keys[i]);
        k[out->n] = keys[i];
        v[out->n++] = values[i];
    }
    if (!out->n)
        return jk_diag_add(d, JK_EINVAL, "invalid", NULL,
                           "a conditional operation needs at least one search parameter");
    return JK_OK;
}

/* Ids of current resources of type that meet the criteria (at most MAX_MATCHES), found by
 * search inside the write's transaction, so nothing can slip in between match and write. */
static jk_rc match(jk_conn *c, struct jk_fhir_write *w, const char ***ids, size_t *n)
{
    return jk_fhir_search_match(c, w->arena, w->diag, w->type, w->cond->keys, w->cond->values,
                                w->cond->n, MAX_MATCHES, ids, n);
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

/* Search index rows of res: every value of every search parameter of its type (extract.c).
 * Conditional create, update and delete find resources by the "identifier" rows among them. */
static jk_rc index_rows(struct jk_arena *a, struct json_object *res, struct jk_idx_row **out,
                        size_t *n)
{
    return jk_fhir_extract(a, res, out, n);
}

/* Adds the refusal e of element expr: "idnum.check_digit: 公民身份号码校验位错误，应为 X". */
static jk_rc doc_issue(struct jk_diag *d, const char *expr, const struct jk_idnum_err *e)
{
    return jk_diag_add(d, JK_EINVAL, "value", expr, "%s: %s", e->code, d->is_en ? e->en : e->zh);
}

/* What the identity documents of a person resource said: its birth date and sex. */
struct doc_facts {
    char birth[11], sex;
    int n_bad;
};

static void check_identifier(struct jk_fhir_write *w, struct json_object *ident, size_t i,
                             struct doc_facts *f)
{
    enum jk_idnum_type t;
    struct jk_idnum doc;
    struct jk_idnum_err e = {0};
    const char *name = jk_protect_system_name(jk_json_str(ident, "system"));
    const char *value = jk_json_str(ident, "value");
    if (!name || !value || !jk_idnum_type_by_name(name, &t) || !strncmp(value, "jkenc:", 6))
        return; /* not a document, no value (validation says so), or a marker (seal refuses) */
    char expr[96];
    snprintf(expr, sizeof expr, "%s.identifier[%zu].value", w->type, i);
    /* a writer that left now_ms unset (0) means now: a birth date is checked against today */
    jk_rc rc = jk_idnum_check(t, value, NULL, w->now_ms ? w->now_ms : jk_time_now_ms(), &doc, &e);
    if (rc) {
        f->n_bad++;
        if (rc == JK_EINVAL)
            doc_issue(w->diag, expr, &e);
        else
            jk_diag_add(w->diag, rc, NULL, expr, "the identity document cannot be checked");
        return;
    }
    if (strcmp(value, doc.number)) /* normalised: the blind index of both forms is the same */
        json_object_object_add(ident, "value", json_object_new_string(doc.number));
    if (doc.birth[0] && !f->birth[0]) memcpy(f->birth, doc.birth, sizeof f->birth);
    if (doc.sex && !f->sex) f->sex = doc.sex;
}

/* The identity documents of a Patient, RelatedPerson or Practitioner (identifiers whose system
 * is an identity.system rule naming a document type): each number valid (JK_EINVAL naming
 * the element otherwise) and normalised in place; birthDate and gender taken from the number
 * when absent, and refused when they contradict it. */
static jk_rc check_documents(struct jk_fhir_write *w)
{
    struct json_object *ids, *v;
    if (strcmp(w->type, "Patient") && strcmp(w->type, "RelatedPerson") &&
        strcmp(w->type, "Practitioner"))
        return JK_OK;
    if (!json_object_object_get_ex(w->res, "identifier", &ids) ||
        !json_object_is_type(ids, json_type_array))
        return JK_OK;
    struct doc_facts f = {{0}, 0, 0};
    for (size_t i = 0; i < json_object_array_length(ids); i++) {
        struct json_object *ident = json_object_array_get_idx(ids, i);
        if (json_object_is_type(ident, json_type_object)) check_identifier(w, ident, i, &f);
    }
    if (f.n_bad) return jk_diag_rc(w->diag);
    struct jk_idnum_err e = {0};
    char expr[64];
    const char *birth = jk_json_str(w->res, "birthDate");
    if (f.birth[0] && !json_object_object_get_ex(w->res, "birthDate", &v)) {
        json_object_object_add(w->res, "birthDate", json_object_new_string(f.birth));
    } else if (f.birth[0] && birth &&
               strncmp(birth, f.birth, strlen(birth) < 10 ? strlen(birth) : 10)) {
        jk_idnum_err_birth_mismatch(&e, birth, f.birth);
        snprintf(expr, sizeof expr, "%s.birthDate", w->type);
        return doc_issue(w->diag, expr, &e);
    }
    const char *gender = jk_json_str(w->res, "gender");
    char given = gender && !strcmp(gender, "male")     ? 'M'
                 : gender && !strcmp(gender, "female") ? 'F'
                                                       : 0;
    if (f.sex && !json_object_object_get_ex(w->res, "gender", &v)) {
        json_object_object_add(w->res, "gender",
                               json_object_new_string(f.sex == 'M' ? "male" : "female"));
    } else if (f.sex && given && given != f.sex) {
        jk_idnum_err_sex_mismatch(&e, given, f.sex);
        snprintf(expr, sizeof expr, "%s.gender", w->type);
        return doc_issue(w->diag, expr, &e);
    }
    return JK_OK;
}

jk_rc jk_fhir_write_prepare(struct jk_fhir_write *w)
{
    static const char *const top[] = {"resourceType", "id", "meta"};
    static const char *const stamped[] = {"versionId", "lastUpdated"};
    if (w->cond) { /* bad criteria are refused now, not inside the transaction */
        struct jk_search_opts o = {.flags = JK_SEARCH_CRITERIA, .now_ms = w->now_ms};
        struct jk_search *q;
        jk_rc rc = jk_fhir_search_parse(w->arena, w->diag, w->type, w->cond->keys, w->cond->values,
                                        w->cond->n, &o, &q);
        if (rc) return rc;
    }
    if (!w->res) return JK_OK; /* a delete */
    /* Identity and phone numbers are stored sealed, and indexed by blind index: every writer
     * comes through here, before anything is rendered or extracted. Identity documents are
     * checked and normalised first, so that every form of a number seals alike. */
    jk_rc rc = check_documents(w);
    if (!rc) rc = jk_protect_seal(w->res, w->diag);
    if (rc) return rc;
    struct json_object *meta = NULL;
    json_object_object_get_ex(w->res, "meta", &meta);
    w->meta_rest = members_text(w->arena, meta, stamped, 2, &w->meta_rest_len);
    w->rest = members_text(w->arena, w->res, top, 3, &w->rest_len);
    if (!w->meta_rest || !w->rest) return JK_ENOMEM;
    if (!strcmp(w->type, "Patient") && (rc = jk_mpi_prepare(w->arena, w->res, &w->mpi))) return rc;
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
    if (!rc && (w->mpi || r->is_deleted) && !strcmp(w->type, "Patient"))
        rc = jk_mpi_on_write(c, w->arena, id, r->is_deleted ? NULL : w->mpi, w->now_ms);
    if (rc == JK_ECONFLICT)
        jk_diag_add(w->diag, JK_ECONFLICT, "conflict", NULL,
                    "%s/%s was changed by someone else at the same time; read it and try again",
                    w->type, id);
    return rc;
}

static jk_rc write_tx(jk_conn *c, struct jk_fhir_write *w);

jk_rc jk_fhir_write_tx(jk_conn *c, void *arg)
{
    struct jk_fhir_write *w = arg;
    jk_rc rc = write_tx(c, w);
    if (!rc && w->hooks && w->hooks->after && w->out.type)
        rc = w->hooks->after(c, w->hooks->arg, w); /* not for a delete of nothing */
    return rc;
}

#define MAX_OWNERS 8

static struct {
    const char *type;
    jk_fhir_owned_fn fn;
} owners[MAX_OWNERS];

void jk_fhir_set_owner(const char *type, jk_fhir_owned_fn fn)
{
    for (size_t i = 0; i < MAX_OWNERS; i++)
        if (!owners[i].type || !strcmp(owners[i].type, type)) {
            owners[i].type = type;
            owners[i].fn = fn;
            return;
        }
}

/* A change of an existing record that a service keeps is that service's to make. */
static jk_rc check_owner(jk_conn *c, struct jk_fhir_write *w, const char *id)
{
    for (size_t i = 0; !w->is_owner && i < MAX_OWNERS && owners[i].type; i++) {
        if (strcmp(owners[i].type, w->type)) continue;
        int is_owned = 0;
        const char *how = "";
        jk_rc rc = owners[i].fn(c, w->type, id, &is_owned, &how);
        if (rc || !is_owned) return rc;
        return jk_diag_add(w->diag, JK_ERULE, "business-rule", NULL, "%s/%s %s", w->type, id, how);
    }
    return JK_OK;
}

static jk_rc before(jk_conn *c, struct jk_fhir_write *w, const char *id, int is_existing)
{
    if (is_existing) {
        jk_rc rc = check_owner(c, w, id);
        if (rc) return rc;
    }
    return w->hooks && w->hooks->before ? w->hooks->before(c, w->hooks->arg, w, id, is_existing)
                                        : JK_OK;
}

static jk_rc write_tx(jk_conn *c, struct jk_fhir_write *w)
{
    const char *id = w->id;
    jk_rc rc;
    if (w->cond) {
        const char **ids;
        size_t n;
        if ((rc = match(c, w, &ids, &n))) return rc;
        if (n > 1)
            return jk_diag_add(w->diag, JK_EPRECOND, "multiple-matches", NULL,
                               "the condition matches more than one %s resource; it must match "
                               "at most one",
                               w->type);
        if (n == 1 && w->kind == JK_FHIR_CREATE) {
            w->status = 200; /* If-None-Exist: the existing resource stands */
            if ((rc = before(c, w, ids[0], 1))) return rc;
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
        if ((rc = before(c, w, id, 0))) return rc;
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
        if ((rc = before(c, w, id, 1))) return rc;
        return put_version(c, w, id, current + 1);
    }
    w->status = current && !is_deleted ? 200 : 201;
    if ((rc = before(c, w, id, current && !is_deleted))) return rc;
    return put_version(c, w, id, current + 1);
}
