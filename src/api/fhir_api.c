/* fhir_api.c - the FHIR R4 REST handlers under /fhir/R4: parse, check, hand the write to
 * the store, render. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"
#include "core/arena.h"
#include "core/time.h"
#include "fhir/rest.h"
#include "fhir/validate.h"

#define HISTORY_DEFAULT_COUNT 50
#define HISTORY_MAX_COUNT     1000

/* _format must name JSON: this server speaks FHIR JSON only. */
jk_rc jk_api_check_format(struct jk_http_req *rq)
{
    const char *f = jk_http_query_get(rq, "_format");
    if (!f || !strcmp(f, "json") || !strncmp(f, "application/fhir+json", 21) ||
        !strncmp(f, "application/json", 16))
        return JK_OK;
    return jk_diag_add(&rq->diag, JK_EMEDIA, "not-supported", NULL,
                       "_format '%s' is not supported; this server speaks FHIR JSON "
                       "(_format=json)",
                       f);
}

jk_rc jk_api_check_type(struct jk_http_req *rq, const char *type)
{
    if (type && jk_fhir_is_resource_type(type, strlen(type))) return JK_OK;
    return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-supported", NULL,
                       "'%s' is not a FHIR R4 resource type", type ? type : "");
}

jk_rc jk_api_check_id(struct jk_http_req *rq, const char *id)
{
    if (id && jk_fhir_id_ok(id)) return JK_OK;
    return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL,
                       "'%s' is not a valid id (1 to 64 letters, digits, '-' or '.')",
                       id ? id : "");
}

/* Adds ETag, Last-Modified and (for writes) Location for r. */
void jk_api_version_headers(struct jk_http_req *rq, const struct jk_res *r, int is_location)
{
    char etag[40], date[40];
    int64_t ms;
    snprintf(etag, sizeof etag, "W/\"%lld\"", (long long)r->version);
    jk_http_add_header(rq, "ETag", etag);
    if (!jk_time_parse_iso(r->last_updated, strlen(r->last_updated), &ms))
        jk_http_add_header(rq, "Last-Modified", jk_time_http(ms, date, sizeof date));
    if (is_location) {
        const char *loc =
            jk_arena_printf(rq->arena, "%s/fhir/R4/%s/%s/_history/%lld", jk_api_app(rq)->base_url,
                            r->type, r->id, (long long)r->version);
        if (loc) jk_http_add_header(rq, "Location", loc);
    }
}

static jk_rc send_resource(struct jk_http_req *rq, int status, const struct jk_res *r)
{
    jk_api_version_headers(rq, r, 0);
    return jk_api_send_fhir(rq, status, r->body, r->body_len);
}

static jk_rc read_common(struct jk_http_req *rq, int is_vread)
{
    const char *type = jk_http_param(rq, "type"), *id = jk_http_param(rq, "id");
    struct jk_api_guard *g;
    jk_rc rc;
    if ((rc = jk_api_guard(rq, is_vread ? "vread" : "read", &g)) ||
        (rc = jk_api_check_format(rq)) || (rc = jk_api_check_type(rq, type)) ||
        (rc = jk_api_check_id(rq, id)) || (rc = jk_api_allow_stored(rq, g, JK_AZ_READ, type, id)))
        return rc;
    int64_t vid = 0;
    if (is_vread) {
        const char *v = jk_http_param(rq, "vid");
        char *end;
        vid = strtoll(v, &end, 10);
        if (*end || vid <= 0)
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL, "'%s' is not a version number",
                               v);
    }
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    struct jk_res r;
    rc = is_vread ? jk_res_vread(c, rq->arena, type, id, vid, &r)
                  : jk_res_read(c, rq->arena, type, id, &r);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(&rq->diag, rc, "not-found", NULL, "%s/%s%s%s is not known", type, id,
                           is_vread ? "/_history/" : "", is_vread ? jk_http_param(rq, "vid") : "");
    if (rc == JK_EGONE) {
        jk_api_version_headers(rq, &r, 0);
        return jk_diag_add(&rq->diag, rc, "deleted", NULL, "%s/%s was deleted", type, id);
    }
    if (!rc && is_vread && !jk_api_may_read_version(rq, g, &r)) {
        g->recs[0].action = "refused";
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                           "%s/%s version %lld was about a patient this account may not see", type,
                           id, (long long)vid);
    }
    return rc ? rc : send_resource(rq, 200, &r);
}

jk_rc jk_api_fhir_read(struct jk_http_req *rq)
{
    return read_common(rq, 0);
}

jk_rc jk_api_fhir_vread(struct jk_http_req *rq)
{
    return read_common(rq, 1);
}

/* ---- writes ---- */

struct write_job {
    struct jk_fhir_write w;
    struct jk_fhir_write_hooks hooks;
    jk_rc rc;
};

static void write_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    ((struct write_job *)rq->state)->rc = rc;
    if (rc) jk_api_write_failed(rq);
    jk_http_wake(rq);
}

/* Renders the outcome of a write, after its commit. */
static jk_rc write_finish(struct jk_http_req *rq)
{
    struct write_job *job = rq->state;
    struct jk_fhir_write *w = &job->w;
    json_object_put(w->res);
    w->res = NULL;
    if (job->rc) return job->rc;
    if (w->status == 204) return jk_http_respond(rq, 204, NULL, NULL, 0);
    jk_api_version_headers(rq, &w->out, 1);
    const char *prefer = jk_http_header(rq, "Prefer");
    if (prefer && strstr(prefer, "return=minimal"))
        return jk_http_respond(rq, w->status, NULL, NULL, 0);
    if (prefer && strstr(prefer, "return=OperationOutcome")) {
        struct jk_buf b;
        jk_buf_init(&b, 0);
        jk_diag_add(&rq->diag, JK_OK, "informational", NULL, "%s/%s version %lld %s", w->out.type,
                    w->out.id, (long long)w->out.version,
                    w->status == 201                                ? "created"
                    : w->status == 200 && w->kind == JK_FHIR_CREATE ? "already exists"
                                                                    : "updated");
        jk_rc rc = jk_api_outcome_text(rq, "information", &b);
        return rc ? (jk_buf_free(&b), rc) : jk_api_send_buf(rq, w->status, &b);
    }
    return jk_api_send_fhir(rq, w->status, w->out.body, w->out.body_len);
}

/* Hands job to the store and parks the request until the commit is durable. */
static jk_rc submit(struct jk_http_req *rq, struct write_job *job)
{
    job->w.arena = rq->arena;
    job->w.diag = &rq->diag;
    job->w.now_ms = jk_time_now_ms();
    job->w.hooks = jk_api_write_hooks(rq, &job->hooks);
    jk_rc rc = jk_fhir_write_prepare(&job->w);
    if (rc) {
        json_object_put(job->w.res);
        return rc;
    }
    rq->state = job;
    jk_http_defer(rq, write_finish);
    jk_store_tx_async(jk_api_app(rq)->db, jk_fhir_write_tx, &job->w, write_done, rq);
    return JK_OK;
}

jk_rc jk_api_check_content_type(struct jk_http_req *rq)
{
    const char *ct = jk_http_header(rq, "Content-Type");
    if (!ct || !strncasecmp(ct, "application/fhir+json", 21) ||
        !strncasecmp(ct, "application/json", 16))
        return JK_OK;
    return jk_diag_add(&rq->diag, JK_EMEDIA, "not-supported", NULL,
                       "Content-Type '%s' is not supported; send application/fhir+json", ct);
}

/* Parses and validates the body as a resource of the URL's type. */
static jk_rc parse_resource(struct jk_http_req *rq, const char *type, struct json_object **out)
{
    struct jk_app *app = jk_api_app(rq);
    jk_rc rc;
    *out = NULL;
    if ((rc = jk_api_check_format(rq)) || (rc = jk_api_check_type(rq, type)) ||
        (rc = jk_api_check_content_type(rq)))
        return rc;
    struct json_object *res;
    if ((rc = jk_json_parse(rq->body, rq->body_len, &app->json_limits, &rq->diag, &res))) return rc;
    const char *rt = jk_json_str(res, "resourceType");
    if (!rt || strcmp(rt, type)) {
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "invalid", "resourceType",
                         "resourceType is '%s' but the URL is for %s", rt ? rt : "(missing)", type);
        json_object_put(res); /* after the message: rt points into res */
        return rc;
    }
    struct json_object *entries;
    if (!strcmp(type, "Bundle") && json_object_object_get_ex(res, "entry", &entries) &&
        json_object_is_type(entries, json_type_array) &&
        json_object_array_length(entries) > app->max_bundle_entries) {
        size_t n = json_object_array_length(entries);
        json_object_put(res);
        return jk_diag_add(&rq->diag, JK_ETOOBIG, "too-costly", "Bundle.entry",
                           "the Bundle has %zu entries; the limit is %zu", n,
                           app->max_bundle_entries);
    }
    if ((rc = jk_fhir_validate(res, &rq->diag))) {
        json_object_put(res);
        return rc;
    }
    *out = res;
    return JK_OK;
}

/* Reads If-Match: W/"3" or "3". */
jk_rc jk_api_if_match(struct jk_http_req *rq, int64_t *version)
{
    const char *h = jk_http_header(rq, "If-Match");
    *version = 0;
    if (!h) return JK_OK;
    int64_t v = jk_fhir_parse_etag(h);
    if (v < 0)
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL,
                           "If-Match '%s' is not a version tag such as W/\"3\"", h);
    *version = v;
    return JK_OK;
}

static struct write_job *new_job(struct jk_http_req *rq, enum jk_fhir_write_kind kind,
                                 const char *type)
{
    struct write_job *job = jk_arena_zalloc(rq->arena, sizeof *job);
    if (job) {
        job->w.kind = kind;
        job->w.type = type;
    }
    return job;
}

/* Criteria from a query string (conditional update and delete) or If-None-Exist. */
static jk_rc criteria(struct jk_http_req *rq, const char *text, struct jk_fhir_criteria **out)
{
    const char **keys, **values;
    size_t n = text ? jk_http_parse_query(rq->arena, text, &keys, &values)
                    : jk_http_query(rq, &keys, &values);
    *out = jk_arena_zalloc(rq->arena, sizeof **out);
    if (!*out) return JK_ENOMEM;
    return jk_fhir_criteria_parse(rq->arena, &rq->diag, keys, values, n, *out);
}

jk_rc jk_api_fhir_create(struct jk_http_req *rq)
{
    const char *type = jk_http_param(rq, "type");
    struct json_object *res;
    struct jk_api_guard *g;
    jk_rc rc = jk_api_guard(rq, "create", &g);
    if (rc) return rc;
    if ((rc = parse_resource(rq, type, &res))) return rc;
    if (rc) return rc;
    struct write_job *job = new_job(rq, JK_FHIR_CREATE, type);
    const char *ine = jk_http_header(rq, "If-None-Exist");
    struct jk_fhir_criteria *cond = NULL;
    if (!job) rc = JK_ENOMEM;
    if (!rc && ine) rc = criteria(rq, ine, &cond);
    if (rc) {
        json_object_put(res);
        return rc;
    }
    job->w.res = res;
    job->w.cond = cond;
    return submit(rq, job);
}

static jk_rc update_common(struct jk_http_req *rq, int is_conditional)
{
    const char *type = jk_http_param(rq, "type"), *id = jk_http_param(rq, "id");
    struct json_object *res;
    struct jk_api_guard *g;
    jk_rc rc = jk_api_guard(rq, "update", &g);
    if (rc) return rc;
    if (!is_conditional && (rc = jk_api_check_id(rq, id))) return rc;
    if ((rc = parse_resource(rq, type, &res))) return rc;
    const char *body_id = jk_json_str(res, "id");
    struct write_job *job = new_job(rq, JK_FHIR_UPDATE, type);
    if (!job) {
        rc = JK_ENOMEM;
    } else if (!is_conditional && !body_id) {
        rc = jk_diag_add(
            &rq->diag, JK_EINVAL, "required", jk_arena_printf(rq->arena, "%s.id", type),
            "the resource has no id; an update must carry the id of the URL ('%s')", id);
    } else if (!is_conditional && strcmp(body_id, id)) {
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "invalid", "id",
                         "the resource id '%s' differs from the id in the URL ('%s')", body_id, id);
    } else if (!(rc = jk_api_if_match(rq, &job->w.if_match)) && is_conditional) {
        rc = criteria(rq, NULL, (struct jk_fhir_criteria **)&job->w.cond);
    }
    if (rc) {
        json_object_put(res);
        return rc;
    }
    job->w.id = is_conditional ? NULL : id;
    job->w.res = res;
    return submit(rq, job);
}

jk_rc jk_api_fhir_update(struct jk_http_req *rq)
{
    return update_common(rq, 0);
}

jk_rc jk_api_fhir_cond_update(struct jk_http_req *rq)
{
    return update_common(rq, 1);
}

static jk_rc delete_common(struct jk_http_req *rq, int is_conditional)
{
    const char *type = jk_http_param(rq, "type"), *id = jk_http_param(rq, "id");
    struct jk_api_guard *g;
    jk_rc rc = jk_api_guard(rq, "delete", &g);
    if (rc) return rc;
    if ((rc = jk_api_check_type(rq, type))) return rc;
    if (!is_conditional && (rc = jk_api_check_id(rq, id))) return rc;
    struct write_job *job = new_job(rq, JK_FHIR_DELETE, type);
    if (!job) return JK_ENOMEM;
    if ((rc = jk_api_if_match(rq, &job->w.if_match))) return rc;
    if (is_conditional && (rc = criteria(rq, NULL, (struct jk_fhir_criteria **)&job->w.cond)))
        return rc;
    job->w.id = is_conditional ? NULL : id;
    return submit(rq, job);
}

jk_rc jk_api_fhir_delete(struct jk_http_req *rq)
{
    return delete_common(rq, 0);
}

jk_rc jk_api_fhir_cond_delete(struct jk_http_req *rq)
{
    return delete_common(rq, 1);
}

/* ---- history ---- */

static const char *response_status(const struct jk_res *r)
{
    if (r->is_deleted) return "204 No Content";
    return r->version == 1 ? "201 Created" : "200 OK";
}

static jk_rc history_entry(struct jk_buf *b, const char *base, const struct jk_res *r, int first)
{
    char date[40];
    int64_t ms;
    const char *lm = jk_time_parse_iso(r->last_updated, strlen(r->last_updated), &ms)
                         ? r->last_updated
                         : jk_time_iso(ms, date, sizeof date);
    jk_rc rc = jk_buf_printf(b, "%s{\"fullUrl\":\"%s/fhir/R4/%s/%s\"", first ? "" : ",", base,
                             r->type, r->id);
    if (!rc && r->body) {
        rc = jk_buf_puts(b, ",\"resource\":");
        if (!rc) rc = jk_buf_append(b, r->body, r->body_len);
    }
    if (!rc)
        rc = jk_buf_printf(b,
                           ",\"request\":{\"method\":\"%s\",\"url\":\"%s%s%s\"},"
                           "\"response\":{\"status\":\"%s\",\"etag\":\"W/\\\"%lld\\\"\","
                           "\"lastModified\":\"%s\"}}",
                           r->method, r->type, strcmp(r->method, "POST") ? "/" : "",
                           strcmp(r->method, "POST") ? r->id : "", response_status(r),
                           (long long)r->version, lm);
    return rc;
}

/* The history of one resource follows the read decision; the history of a whole type only
 * for who may see every resource of the type; the history of the whole server for nobody
 * (it is not filtered). */
static jk_rc history_allowed(struct jk_http_req *rq, struct jk_api_guard *g, const char *type,
                             const char *id)
{
    if (g->is_off) return JK_OK;
    if (id) return jk_api_allow_stored(rq, g, JK_AZ_READ, type, id);
    struct jk_az_scope s = {0};
    if (type) jk_authz_scope(g->az, JK_AZ_SEARCH, type, 0, &s);
    if (s.mode == JK_AZ_ALL) return JK_OK;
    g->recs[0].action = "refused";
    return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                       "the history of %s is only for accounts that may see all of it; "
                       "search instead, or read the history of one resource",
                       type ? type : "the whole server");
}

jk_rc jk_api_fhir_history(struct jk_http_req *rq)
{
    struct jk_app *app = jk_api_app(rq);
    const char *type = jk_http_param(rq, "type"), *id = jk_http_param(rq, "id");
    struct jk_api_guard *g;
    jk_rc rc;
    if ((rc = jk_api_guard(rq, "history", &g)) || (rc = jk_api_check_format(rq))) return rc;
    if (type && (rc = jk_api_check_type(rq, type))) return rc;
    if (id && (rc = jk_api_check_id(rq, id))) return rc;
    if ((rc = history_allowed(rq, g, type, id))) return rc;
    const char *count_s = jk_http_query_get(rq, "_count");
    const char *since = jk_http_query_get(rq, "_since");
    const char *before_s = jk_http_query_get(rq, "_before_seq");
    long long count = HISTORY_DEFAULT_COUNT, before = 0;
    char *end;
    int64_t since_ms;
    char since_iso[40];
    if (count_s) {
        count = strtoll(count_s, &end, 10);
        if (*end || count < 0)
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL,
                               "_count '%s' is not a whole number", count_s);
        if (count > HISTORY_MAX_COUNT) count = HISTORY_MAX_COUNT;
    }
    if (before_s) {
        before = strtoll(before_s, &end, 10);
        if (*end || before <= 0)
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL,
                               "_before_seq '%s' is not a page position", before_s);
    }
    if (since) {
        if (jk_time_parse_iso(since, strlen(since), &since_ms))
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL,
                               "_since '%s' is not an instant such as 2026-01-31T08:00:00Z", since);
        since = jk_time_iso(since_ms, since_iso, sizeof since_iso);
    }
    jk_conn *c = jk_store_conn(app->db);
    if (!c) return JK_EDB;
    struct jk_res *list;
    size_t n;
    if ((rc = jk_res_history(c, rq->arena, type, id, since, before, (size_t)count, &list, &n)))
        return rc;
    if (id && n == 0 && !before) {
        int64_t v;
        int is_deleted;
        if ((rc = jk_res_current_version(c, type, id, &v, &is_deleted))) return rc;
        if (!v)
            return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", NULL, "%s/%s is not known",
                               type, id);
    }
    const char *self =
        jk_arena_printf(rq->arena, "%s/fhir/R4%s%s%s%s/_history", app->base_url, type ? "/" : "",
                        type ? type : "", id ? "/" : "", id ? id : "");
    struct jk_buf b;
    jk_buf_init(&b, 0);
    rc = jk_buf_printf(&b,
                       "{\"resourceType\":\"Bundle\",\"type\":\"history\",\"link\":[{\"relation\":"
                       "\"self\",\"url\":\"%s?_count=%lld\"}",
                       self, count);
    if (!rc && n == (size_t)count && n > 0)
        rc = jk_buf_printf(
            &b, ",{\"relation\":\"next\",\"url\":\"%s?_count=%lld&_before_seq=%lld%s%s\"}", self,
            count, (long long)list[n - 1].seq, since ? "&_since=" : "", since ? since : "");
    if (!rc) rc = jk_buf_puts(&b, "],\"entry\":[");
    for (size_t i = 0, first = 1; i < n && !rc; i++) {
        if (id && !jk_api_may_read_version(rq, g, &list[i])) continue; /* about someone else */
        rc = history_entry(&b, app->base_url, &list[i], first);
        first = 0;
    }
    if (!rc) rc = jk_buf_puts(&b, "]}");
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return jk_api_send_buf(rq, 200, &b);
}
