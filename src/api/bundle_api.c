/* bundle_api.c - the FHIR handlers beyond single-resource REST: transaction and batch
 * Bundles, PATCH, and the operations $validate, $meta, $meta-add, $meta-delete and
 * Patient/$everything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"
#include "core/arena.h"
#include "core/time.h"
#include "fhir/bundle.h"
#include "fhir/patch.h"
#include "fhir/rest.h"
#include "fhir/validate.h"

#define EVERYTHING_DEFAULT_COUNT 50
#define EVERYTHING_MAX_COUNT     1000

static jk_rc parse_json_body(struct jk_http_req *rq, struct json_object **out)
{
    return jk_json_parse(rq->body, rq->body_len, &jk_api_app(rq)->json_limits, &rq->diag, out);
}

/* ---- POST /fhir/R4: transaction and batch ---- */

struct bundle_job {
    struct json_object *bundle;
    struct jk_bundle_ctx bx;
    struct jk_bundle_job *job;
    struct jk_fhir_write_hooks hooks;
    jk_rc rc;
};

static void bundle_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    ((struct bundle_job *)rq->state)->rc = rc;
    jk_http_wake(rq);
}

static jk_rc bundle_finish(struct jk_http_req *rq)
{
    struct bundle_job *bj = rq->state;
    const char *out;
    size_t len;
    jk_rc rc = jk_fhir_bundle_finish(bj->job, bj->rc, &out, &len);
    json_object_put(bj->bundle);
    bj->bundle = NULL;
    if (rc) return rc;
    return jk_api_send_fhir(rq, 200, out, len);
}

static enum jk_bundle_return prefer_return(struct jk_http_req *rq)
{
    const char *prefer = jk_http_header(rq, "Prefer");
    if (prefer && strstr(prefer, "return=minimal")) return JK_BUNDLE_RETURN_MINIMAL;
    if (prefer && strstr(prefer, "return=OperationOutcome")) return JK_BUNDLE_RETURN_OUTCOME;
    return JK_BUNDLE_RETURN_REPRESENTATION;
}

jk_rc jk_api_fhir_bundle(struct jk_http_req *rq)
{
    struct jk_app *app = jk_api_app(rq);
    struct jk_api_guard *g;
    jk_rc rc;
    if ((rc = jk_api_guard(rq, "operation", &g)) || (rc = jk_api_check_format(rq)) ||
        (rc = jk_api_check_content_type(rq)))
        return rc;
    g->is_bundle = 1;
    struct json_object *bundle;
    if ((rc = parse_json_body(rq, &bundle))) return rc;
    const char *rt = jk_json_str(bundle, "resourceType");
    struct json_object *entries;
    if (!rt || strcmp(rt, "Bundle")) {
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "invalid", "resourceType",
                         "POST to the base takes a Bundle of type transaction or batch, not "
                         "'%s'",
                         rt ? rt : "(missing resourceType)");
    } else if (json_object_object_get_ex(bundle, "entry", &entries) &&
               json_object_is_type(entries, json_type_array) &&
               json_object_array_length(entries) > app->max_bundle_entries) {
        rc = jk_diag_add(&rq->diag, JK_ETOOBIG, "too-costly", "Bundle.entry",
                         "the Bundle has %zu entries; the limit is %zu",
                         json_object_array_length(entries), app->max_bundle_entries);
    }
    struct bundle_job *bj = rc ? NULL : jk_arena_zalloc(rq->arena, sizeof *bj);
    if (!rc && !bj) rc = JK_ENOMEM;
    if (!rc) {
        bj->bundle = bundle;
        bj->bx.db = app->db;
        bj->bx.arena = rq->arena;
        bj->bx.diag = &rq->diag;
        bj->bx.base_url = app->base_url;
        bj->bx.now_ms = jk_time_now_ms();
        bj->bx.prefer = prefer_return(rq);
        bj->bx.json_limits = &app->json_limits;
        bj->bx.hooks = jk_api_write_hooks(rq, &bj->hooks);
        rc = jk_fhir_bundle_prepare(&bj->bx, bundle, &bj->job);
    }
    if (rc) {
        json_object_put(bundle);
        return rc;
    }
    rq->state = bj;
    jk_http_defer(rq, bundle_finish);
    jk_store_tx_async(app->db, jk_fhir_bundle_tx, bj->job, bundle_done, rq);
    return JK_OK;
}

/* ---- PATCH ---- */

struct patch_job {
    struct jk_fhir_patch p;
    struct jk_fhir_write_hooks hooks;
    jk_rc rc;
};

static void patch_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    ((struct patch_job *)rq->state)->rc = rc;
    if (rc) jk_api_write_failed(rq);
    jk_http_wake(rq);
}

static jk_rc patch_finish(struct jk_http_req *rq)
{
    struct patch_job *pj = rq->state;
    struct jk_fhir_patch *p = &pj->p;
    json_object_put(p->ops);
    p->ops = NULL;
    jk_fhir_patch_release(p);
    if (pj->rc) return pj->rc;
    const struct jk_res *r = &p->w.out;
    jk_api_version_headers(rq, r, 1);
    const char *prefer = jk_http_header(rq, "Prefer");
    if (prefer && strstr(prefer, "return=minimal"))
        return jk_http_respond(rq, p->w.status, NULL, NULL, 0);
    if (prefer && strstr(prefer, "return=OperationOutcome")) {
        struct jk_buf b;
        jk_buf_init(&b, 0);
        jk_diag_add(&rq->diag, JK_OK, "informational", NULL, "%s/%s version %lld patched", r->type,
                    r->id, (long long)r->version);
        jk_rc rc = jk_api_outcome_text(rq, "information", &b);
        return rc ? (jk_buf_free(&b), rc) : jk_api_send_buf(rq, p->w.status, &b);
    }
    return jk_api_send_fhir(rq, p->w.status, r->body, r->body_len);
}

static jk_rc patch_common(struct jk_http_req *rq, int is_conditional)
{
    struct jk_app *app = jk_api_app(rq);
    const char *type = jk_http_param(rq, "type"), *id = jk_http_param(rq, "id");
    const char *ct = jk_http_header(rq, "Content-Type");
    struct jk_api_guard *g;
    jk_rc rc;
    if ((rc = jk_api_guard(rq, "patch", &g)) || (rc = jk_api_check_format(rq)) ||
        (rc = jk_api_check_type(rq, type)))
        return rc;
    if (!is_conditional && (rc = jk_api_check_id(rq, id))) return rc;
    if (!ct || strncasecmp(ct, "application/json-patch+json", 27))
        return jk_diag_add(&rq->diag, JK_EMEDIA, "not-supported", NULL,
                           "PATCH takes a JSON Patch document with Content-Type "
                           "application/json-patch+json%s%s%s",
                           ct ? ", not '" : "", ct ? ct : "",
                           ct ? "' (FHIRPath Patch is not supported)" : "");
    struct patch_job *pj = jk_arena_zalloc(rq->arena, sizeof *pj);
    if (!pj) return JK_ENOMEM;
    struct jk_fhir_patch *p = &pj->p;
    p->type = type;
    p->arena = rq->arena;
    p->diag = &rq->diag;
    p->now_ms = jk_time_now_ms();
    p->hooks = jk_api_write_hooks(rq, &pj->hooks);
    if ((rc = jk_api_if_match(rq, &p->if_match))) return rc;
    if (is_conditional) {
        const char **keys, **values;
        size_t n = jk_http_query(rq, &keys, &values), k = 0;
        for (size_t i = 0; i < n; i++) /* _format is not a search criterion */
            if (strcmp(keys[i], "_format") && strcmp(keys[i], "_pretty")) {
                keys[k] = keys[i];
                values[k++] = values[i];
            }
        if (!k)
            return jk_diag_add(&rq->diag, JK_EINVAL, "invalid", NULL,
                               "a conditional patch needs at least one search parameter");
        p->cond_keys = keys;
        p->cond_values = values;
        p->n_cond = k;
    } else {
        p->id = id;
    }
    if ((rc = jk_fhir_patch_parse(rq->body, rq->body_len, &app->json_limits, &rq->diag, &p->ops)))
        return rc;
    jk_conn *c = jk_store_conn(app->db);
    rc = c ? jk_fhir_patch_load(c, p) : JK_EDB;
    if (!rc) rc = jk_fhir_write_prepare(&p->w);
    if (rc) {
        json_object_put(p->ops);
        jk_fhir_patch_release(p);
        return rc;
    }
    rq->state = pj;
    jk_http_defer(rq, patch_finish);
    jk_store_tx_async(app->db, jk_fhir_patch_tx, p, patch_done, rq);
    return JK_OK;
}

jk_rc jk_api_fhir_patch(struct jk_http_req *rq)
{
    return patch_common(rq, 0);
}

jk_rc jk_api_fhir_cond_patch(struct jk_http_req *rq)
{
    return patch_common(rq, 1);
}

/* ---- $validate ---- */

/* The resource and mode of a $validate body: the resource itself, or Parameters. */
static jk_rc validate_input(struct jk_http_req *rq, const char *type, struct json_object *body,
                            struct json_object **res, const char **mode)
{
    struct json_object *params;
    const char *rt = jk_json_str(body, "resourceType");
    *res = body;
    *mode = NULL;
    if (!rt || strcmp(rt, "Parameters") || !strcmp(type, "Parameters")) return JK_OK;
    *res = NULL;
    if (!json_object_object_get_ex(body, "parameter", &params) ||
        !json_object_is_type(params, json_type_array))
        return JK_OK;
    for (size_t i = 0; i < json_object_array_length(params); i++) {
        struct json_object *p = json_object_array_get_idx(params, i), *v;
        const char *name = jk_json_str(p, "name");
        if (!name) continue;
        if (!strcmp(name, "resource") && json_object_object_get_ex(p, "resource", &v) &&
            json_object_is_type(v, json_type_object))
            *res = v;
        else if (!strcmp(name, "mode"))
            *mode = jk_json_str(p, "valueCode");
        else if (!strcmp(name, "profile"))
            return jk_diag_add(&rq->diag, JK_EINVAL, "not-supported",
                               jk_arena_printf(rq->arena, "Parameters.parameter[%zu]", i),
                               "validation against a profile is not supported; resources are "
                               "validated against the base R4 definition of their type");
    }
    return JK_OK;
}

jk_rc jk_api_fhir_validate(struct jk_http_req *rq)
{
    const char *type = jk_http_param(rq, "type"), *id = jk_http_param(rq, "id");
    struct jk_api_guard *g;
    jk_rc rc;
    if ((rc = jk_api_guard(rq, "operation", &g)) || (rc = jk_api_check_format(rq)) ||
        (rc = jk_api_check_type(rq, type)) || (rc = jk_api_check_content_type(rq)))
        return rc;
    if (id && (rc = jk_api_check_id(rq, id))) return rc;
    const char *mode_q = jk_http_query_get(rq, "mode");
    struct json_object *body = NULL, *res;
    const char *mode;
    if ((rc = parse_json_body(rq, &body))) return rc;
    if ((rc = validate_input(rq, type, body, &res, &mode))) goto out;
    if (!mode) mode = mode_q;
    if (mode && strcmp(mode, "create") && strcmp(mode, "update") && strcmp(mode, "delete")) {
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "code-invalid", NULL,
                         "mode '%s' is not one of create, update, delete", mode);
        goto out;
    }
    if (mode && strcmp(mode, "create") && !id) {
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "invalid", NULL,
                         "mode %s validates against an existing resource: call "
                         "%s/[id]/$validate",
                         mode, type);
        goto out;
    }
    if (mode && !strcmp(mode, "delete")) {
        jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
        int64_t v;
        int is_deleted;
        if (!c) {
            rc = JK_EDB;
            goto out;
        }
        if ((rc = jk_res_current_version(c, type, id, &v, &is_deleted))) goto out;
        if (!v || is_deleted)
            jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", NULL,
                        "%s/%s %s: there is nothing to delete", type, id,
                        v ? "is already deleted" : "is not known");
    } else if (!res) {
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "required", NULL,
                         "Parameters needs a parameter 'resource' holding the resource to "
                         "validate");
        goto out;
    } else {
        const char *rt = jk_json_str(res, "resourceType");
        const char *rid = jk_json_str(res, "id");
        if (rt && strcmp(rt, type))
            jk_diag_add(&rq->diag, JK_EINVAL, "invalid", "resourceType",
                        "resourceType is '%s' but the URL is for %s", rt, type);
        else
            jk_fhir_validate(res, &rq->diag);
        if (mode && !strcmp(mode, "update") && (!rid || strcmp(rid, id)))
            jk_diag_add(&rq->diag, JK_EINVAL, "invalid", jk_arena_printf(rq->arena, "%s.id", type),
                        "an update of %s/%s needs the resource id '%s', not '%s'", type, id, id,
                        rid ? rid : "(none)");
    }
    struct jk_buf b;
    jk_buf_init(&b, 0);
    int is_ok = rq->diag.head == NULL;
    if (is_ok) jk_diag_add(&rq->diag, JK_OK, "informational", NULL, "All OK");
    rc = jk_api_outcome_text(rq, is_ok ? "information" : NULL, &b);
    if (!rc)
        rc = jk_api_send_buf(rq, 200, &b);
    else
        jk_buf_free(&b);
out:
    json_object_put(body);
    return rc;
}

/* ---- $meta, $meta-add, $meta-delete ---- */

struct meta_job {
    struct jk_fhir_meta_change m;
    struct json_object *params;
    jk_rc rc;
};

static jk_rc meta_respond(struct jk_http_req *rq, const struct jk_fhir_meta_change *m)
{
    struct jk_buf b;
    jk_buf_init(&b, 0);
    jk_rc rc = jk_buf_puts(&b, "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":"
                               "\"return\",\"valueMeta\":");
    if (!rc) rc = jk_buf_append(&b, m->meta_text, m->meta_len);
    if (!rc) rc = jk_buf_puts(&b, "}]}");
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return jk_api_send_buf(rq, 200, &b);
}

static void meta_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    ((struct meta_job *)rq->state)->rc = rc;
    jk_http_wake(rq);
}

static jk_rc meta_finish(struct jk_http_req *rq)
{
    struct meta_job *mj = rq->state;
    json_object_put(mj->params);
    mj->params = NULL;
    return mj->rc ? mj->rc : meta_respond(rq, &mj->m);
}

/* Type, id and version of the URL into m. */
static jk_rc meta_target(struct jk_http_req *rq, struct jk_fhir_meta_change *m)
{
    const char *vid = jk_http_param(rq, "vid");
    m->type = jk_http_param(rq, "type");
    m->id = jk_http_param(rq, "id");
    m->arena = rq->arena;
    m->diag = &rq->diag;
    int is_change = m->op != JK_FHIR_META_GET;
    struct jk_api_guard *g;
    jk_rc rc;
    if ((rc = jk_api_guard(rq, is_change ? "update" : "read", &g)) ||
        (rc = jk_api_check_format(rq)) || (rc = jk_api_check_type(rq, m->type)) ||
        (rc = jk_api_check_id(rq, m->id)) ||
        (rc = jk_api_allow_stored(rq, g, is_change ? JK_AZ_UPDATE : JK_AZ_READ, m->type, m->id)))
        return rc;
    if (vid) {
        char *end;
        m->version = strtoll(vid, &end, 10);
        if (*end || m->version <= 0)
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL, "'%s' is not a version number",
                               vid);
    }
    return JK_OK;
}

jk_rc jk_api_fhir_meta(struct jk_http_req *rq)
{
    struct jk_fhir_meta_change m;
    memset(&m, 0, sizeof m);
    m.op = JK_FHIR_META_GET;
    jk_rc rc = meta_target(rq, &m);
    if (rc) return rc;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    if ((rc = jk_fhir_meta_change_tx(c, &m))) return rc;
    return meta_respond(rq, &m);
}

static jk_rc meta_change(struct jk_http_req *rq, enum jk_fhir_meta_op op)
{
    struct meta_job *mj = jk_arena_zalloc(rq->arena, sizeof *mj);
    if (!mj) return JK_ENOMEM;
    mj->m.op = op;
    jk_rc rc = meta_target(rq, &mj->m);
    if (rc || (rc = jk_api_check_content_type(rq)) || (rc = parse_json_body(rq, &mj->params)))
        return rc;
    struct json_object *params, *meta = NULL;
    const char *rt = jk_json_str(mj->params, "resourceType");
    if (!rt || strcmp(rt, "Parameters")) {
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "invalid", "resourceType",
                         "$meta-%s takes a Parameters resource with a parameter 'meta' "
                         "(valueMeta), not '%s'",
                         op == JK_FHIR_META_ADD ? "add" : "delete", rt ? rt : "(missing)");
    } else if (!(rc = jk_fhir_validate(mj->params, &rq->diag)) &&
               json_object_object_get_ex(mj->params, "parameter", &params) &&
               json_object_is_type(params, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(params); i++) {
            struct json_object *p = json_object_array_get_idx(params, i), *v;
            const char *name = jk_json_str(p, "name");
            if (name && !strcmp(name, "meta") && json_object_object_get_ex(p, "valueMeta", &v))
                meta = v;
        }
    }
    if (!rc && !meta)
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "required", "Parameters.parameter",
                         "Parameters needs a parameter 'meta' with a valueMeta holding the "
                         "profiles, tags and security labels");
    if (rc) {
        json_object_put(mj->params);
        return rc;
    }
    mj->m.meta = meta;
    rq->state = mj;
    jk_http_defer(rq, meta_finish);
    jk_store_tx_async(jk_api_app(rq)->db, jk_fhir_meta_change_tx, &mj->m, meta_done, rq);
    return JK_OK;
}

jk_rc jk_api_fhir_meta_add(struct jk_http_req *rq)
{
    return meta_change(rq, JK_FHIR_META_ADD);
}

jk_rc jk_api_fhir_meta_delete(struct jk_http_req *rq)
{
    return meta_change(rq, JK_FHIR_META_DELETE);
}

/* ---- Patient/$everything ---- */

/* Appends "&key=value" with value percent-encoded where a URL needs it. */
static jk_rc query_arg(struct jk_buf *b, const char *key, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    jk_rc rc = jk_buf_printf(b, "%s%s=", b->len ? "&" : "", key);
    for (const unsigned char *p = (const unsigned char *)value; *p && !rc; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~,:", *p)) {
            rc = jk_buf_append(b, p, 1);
        } else {
            char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            rc = jk_buf_append(b, esc, 3);
        }
    }
    return rc;
}

/* $everything's members pass the read decision one by one. */
static int everything_visible(void *arg, const char *type, const char *id)
{
    struct jk_http_req *rq = arg;
    struct jk_api_guard *g = rq->ctx;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct jk_az_facts f;
    const char *why;
    return c && !jk_authz_facts(c, rq->arena, type, id, &f) &&
           !jk_authz_decide(g->az, JK_AZ_READ, &f, g->bg_reason != NULL, NULL, &why);
}

jk_rc jk_api_fhir_everything(struct jk_http_req *rq)
{
    struct jk_app *app = jk_api_app(rq);
    const char *id = jk_http_param(rq, "id");
    struct jk_api_guard *g;
    jk_rc rc;
    if ((rc = jk_api_guard(rq, "export", &g)) || (rc = jk_api_check_format(rq)) ||
        (rc = jk_api_check_id(rq, id)) ||
        (rc = jk_api_allow_stored(rq, g, JK_AZ_READ, "Patient", id)))
        return rc;
    struct jk_everything_req q;
    memset(&q, 0, sizeof q);
    if (!g->is_off) {
        q.is_visible = everything_visible;
        q.visible_arg = rq;
    }
    q.patient_id = id;
    q.base_url = app->base_url;
    q.count = EVERYTHING_DEFAULT_COUNT;
    const char **keys, **values, *type_list = NULL;
    size_t n = jk_http_query(rq, &keys, &values);
    char since_iso[40];
    for (size_t i = 0; i < n; i++) {
        const char *k = keys[i], *v = values[i];
        char *end;
        if (!strcmp(k, "_count")) {
            long long c = strtoll(v, &end, 10);
            if (!*v || *end || c < 0)
                return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL,
                                   "_count '%s' is not a whole number", v);
            q.count = c > EVERYTHING_MAX_COUNT ? EVERYTHING_MAX_COUNT : (size_t)c;
        } else if (!strcmp(k, "_since")) {
            int64_t ms;
            if (jk_time_parse_iso(v, strlen(v), &ms))
                return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL,
                                   "_since '%s' is not an instant such as 2026-01-31T08:00:00Z", v);
            q.since = jk_time_iso(ms, since_iso, sizeof since_iso);
        } else if (!strcmp(k, "_type")) {
            type_list = v;
        } else if (!strcmp(k, "_cursor")) {
            size_t tl = strcspn(v, "/");
            if (!v[tl] || !jk_fhir_is_resource_type(v, tl) || !jk_fhir_id_ok(v + tl + 1))
                return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL,
                                   "_cursor '%s' is not a page position; follow the next link", v);
            q.cursor = v;
        } else if (strcmp(k, "_format") && strcmp(k, "_pretty")) {
            return jk_diag_add(&rq->diag, JK_EINVAL, "not-supported", NULL,
                               "parameter '%s' is not supported by $everything (supported: "
                               "_since, _type, _count)",
                               k);
        }
    }
    if (type_list) {
        size_t cap = 1;
        for (const char *p = type_list; *p; p++)
            cap += *p == ',';
        const char **types = jk_arena_alloc(rq->arena, cap * sizeof *types);
        if (!types) return JK_ENOMEM;
        const char *p = type_list;
        for (;;) {
            size_t len = strcspn(p, ",");
            if (!jk_fhir_is_resource_type(p, len))
                return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL,
                                   "_type: '%.*s' is not a FHIR R4 resource type", (int)len, p);
            if (!(types[q.n_types++] = jk_arena_strndup(rq->arena, p, len))) return JK_ENOMEM;
            if (!p[len]) break;
            p += len + 1;
        }
        q.types = types;
    }
    struct jk_buf nq;
    jk_buf_init(&nq, 0);
    rc = q.since ? query_arg(&nq, "_since", q.since) : JK_OK;
    if (!rc && type_list) rc = query_arg(&nq, "_type", type_list);
    q.next_query = rc ? NULL : jk_arena_strndup(rq->arena, nq.p ? nq.p : "", nq.len);
    jk_buf_free(&nq);
    if (rc || !q.next_query) return rc ? rc : JK_ENOMEM;
    jk_conn *c = jk_store_conn(app->db);
    if (!c) return JK_EDB;
    struct jk_buf b;
    jk_buf_init(&b, 0);
    if ((rc = jk_fhir_everything(c, rq->arena, &rq->diag, &q, &b))) {
        jk_buf_free(&b);
        return rc;
    }
    return jk_api_send_buf(rq, 200, &b);
}
