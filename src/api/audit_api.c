/* audit_api.c - the audit trail through HTTP: AuditEvent read and search for regulators, the
 * access log of a resident (who looked at my records), and refusals of every attempt to
 * change the trail. Each of these requests is itself recorded before it is answered. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "auth/account.h"
#include "auth/audit.h"
#include "auth/token.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"

#define TRAIL_DEFAULT_COUNT 50
#define TRAIL_MAX_COUNT     1000 /* jk_audit_find's limit */
#define PSEUDONYM_HEX       12   /* hex digits of an actor's pseudonym (48 bits) */
#define ACCESS_LOG_JSON     "application/json; charset=utf-8"

/* The key of the actor pseudonyms residents see, derived from the platform keys at start-up
 * (jk_api_audit_init); a random one, stable for this process only, when nobody installed it
 * (tests that do not start a server). */
static struct {
    pthread_once_t once;
    int is_set;
    unsigned char key[JK_SM3_BYTES];
} pseudonym = {.once = PTHREAD_ONCE_INIT};

/* The domain under which the pseudonym key is made from the blind-index key: changing it
 * changes every pseudonym residents have seen. */
static const char pseudonym_domain[] = "jiankang v1 audit actor pseudonym key";

jk_rc jk_api_audit_init(const struct jk_keys *keys)
{
    jk_rc rc = jk_crypto_blind_index(keys, pseudonym_domain, "1", 1, pseudonym.key);
    if (!rc) pseudonym.is_set = 1;
    return rc;
}

static void pseudonym_fallback(void)
{
    if (!pseudonym.is_set && !jk_crypto_random(pseudonym.key, sizeof pseudonym.key))
        pseudonym.is_set = 1;
}

/* The stable pseudonym of actor ("actor-1a2b3c4d5e6f") into out (at least 32 bytes). Without
 * the key, the actor is hidden altogether. */
static const char *actor_pseudonym(const char *actor, char *out, size_t outlen)
{
    unsigned char mac[JK_SM3_BYTES];
    char hex[2 * JK_SM3_BYTES + 1];
    pthread_once(&pseudonym.once, pseudonym_fallback);
    if (!pseudonym.is_set ||
        jk_crypto_hmac_sm3(pseudonym.key, sizeof pseudonym.key, actor, strlen(actor), mac))
        return "actor-unknown";
    jk_crypto_hex(mac, sizeof mac, hex);
    snprintf(out, outlen, "actor-%.*s", PSEUDONYM_HEX, hex);
    return out;
}

const char *jk_api_ref_id(const char *ref, const char *type)
{
    size_t n = strlen(type);
    if (ref && !strncmp(ref, type, n) && ref[n] == '/') return ref + n + 1;
    return ref;
}

/* ---- one audit record per request, committed before the answer goes out ---- */

struct trail_job {
    const struct jk_audit *au; /* NULL: security is off, nothing is recorded */
    struct jk_principal p;
    struct jk_audit_rec rec;
    jk_rc outcome; /* the request's own: an error is rendered after the record */
    int status;    /* else this response */
    const char *ctype, *body;
    size_t len;
    jk_rc rc; /* the record's transaction */
};

static jk_rc trail_tx(jk_conn *c, void *arg)
{
    struct trail_job *job = arg;
    return jk_audit_append(job->au, c, &job->rec, NULL);
}

static void trail_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    ((struct trail_job *)rq->state)->rc = rc;
    jk_http_wake(rq);
}

static jk_rc trail_answer(struct jk_http_req *rq, struct trail_job *job)
{
    if (job->outcome) return job->outcome; /* its diagnostics are in rq->diag */
    return jk_http_respond(rq, job->status, job->ctype, job->body, job->len);
}

static jk_rc trail_finish(struct jk_http_req *rq)
{
    struct trail_job *job = rq->state;
    if (job->rc) return job->rc; /* unrecorded, so unanswered: a 500 */
    return trail_answer(rq, job);
}

/* Records the request with outcome, then answers: the error outcome (with the diagnostics
 * already added) or the response prepared in job. */
static jk_rc trail_submit(struct jk_http_req *rq, struct trail_job *job, jk_rc outcome)
{
    job->outcome = outcome;
    job->rec.outcome = outcome;
    if (!job->au) return trail_answer(rq, job);
    rq->state = job;
    jk_http_defer(rq, trail_finish);
    jk_store_tx_async(jk_api_app(rq)->db, trail_tx, job, trail_done, rq);
    return JK_OK;
}

/* Makes the job of a request on the trail: authenticates (unless security is off) and fills
 * in who, from where, and action. JK_EUNAUTH (not recorded: nobody to name) when there is no
 * valid token and one is needed. */
static jk_rc trail_start(struct jk_http_req *rq, const char *action, int is_token_needed,
                         struct trail_job **out)
{
    struct jk_app *app = jk_api_app(rq);
    struct trail_job *job = jk_arena_zalloc(rq->arena, sizeof *job);
    if (!job) return JK_ENOMEM;
    if (is_token_needed) {
        jk_rc rc = jk_api_principal(rq, &job->p);
        if (rc) return rc;
    }
    job->au = app->is_security_off ? NULL : app->audit;
    job->rec =
        (struct jk_audit_rec){.actor = job->p.username[0] ? job->p.username : NULL,
                              .role = job->p.username[0] ? jk_role_info(job->p.role)->name : NULL,
                              .org = jk_api_ref_id(job->p.org, "Organization"),
                              .action = action,
                              .res_type = "AuditEvent",
                              .client_addr = jk_http_client_addr(rq),
                              .request_id = rq->request_id};
    *out = job;
    return JK_OK;
}

/* Keeps b's text as the response to send once the record has committed. */
static jk_rc trail_keep(struct jk_http_req *rq, struct trail_job *job, int status,
                        const char *ctype, struct jk_buf *b)
{
    job->body = jk_arena_strndup(rq->arena, b->p ? b->p : "", b->len);
    job->len = b->len;
    jk_buf_free(b);
    if (!job->body) return JK_ENOMEM;
    job->status = status;
    job->ctype = ctype;
    jk_http_add_header(rq, "Cache-Control", "no-store"); /* names patients and staff */
    return JK_OK;
}

/* Only regulators read the trail: it names every professional and every patient. */
static jk_rc regulator_only(struct jk_http_req *rq, const struct trail_job *job)
{
    if (jk_api_app(rq)->is_security_off) return JK_OK;
    if (job->p.role == JK_ROLE_REGULATOR) return JK_OK;
    return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                       "only a regulator may read the audit trail; a resident sees who read "
                       "their records at GET /api/me/access-log");
}

/* ---- GET /fhir/R4/AuditEvent and /fhir/R4/AuditEvent/:id ---- */

/* A whole number from min to max in s, else -1. */
static long long whole(const char *s, long long min, long long max)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ') return -1;
    long long v = strtoll(s, &end, 10);
    return *end || v < min || v > max ? -1 : v;
}

struct bundle_ctx {
    struct jk_http_req *rq;
    struct jk_buf *b;
    const char *base;
    size_t n;
    int64_t last_seq;
    const char *patient_id; /* read: the record's patient, copied into the arena */
};

static jk_rc bundle_row(void *arg, const struct jk_audit_rec *r)
{
    struct bundle_ctx *x = arg;
    struct json_object *ev = NULL;
    jk_rc rc = jk_audit_to_fhir(r, x->base, &ev);
    if (rc) return rc;
    size_t len = 0;
    const char *text = jk_json_text(ev, x->rq->arena, &len);
    json_object_put(ev);
    if (!text) return JK_ENOMEM;
    rc = jk_buf_printf(x->b, "%s{\"fullUrl\":\"%s/fhir/R4/AuditEvent/%lld\",\"resource\":",
                       x->n ? "," : "", x->base, (long long)r->seq);
    if (!rc) rc = jk_buf_append(x->b, text, len);
    if (!rc) rc = jk_buf_puts(x->b, ",\"search\":{\"mode\":\"match\"}}");
    x->n++;
    x->last_seq = r->seq;
    return rc;
}

/* The query of a search request: patient, _count, _cursor, _format; anything else is a 400
 * naming the parameter. */
static jk_rc search_query(struct jk_http_req *rq, struct jk_audit_query *q)
{
    const char **keys, **values;
    size_t n = jk_http_query(rq, &keys, &values);
    int seen[3] = {0, 0, 0};
    memset(q, 0, sizeof *q);
    q->limit = TRAIL_DEFAULT_COUNT;
    for (size_t i = 0; i < n; i++) {
        const char *k = keys[i], *v = values[i] ? values[i] : "";
        int which = !strcmp(k, "patient")   ? 0
                    : !strcmp(k, "_count")  ? 1
                    : !strcmp(k, "_cursor") ? 2
                                            : -1;
        if (which < 0 && !strcmp(k, "_format")) continue; /* checked by jk_api_check_format */
        if (which < 0)
            return jk_diag_add(&rq->diag, JK_EINVAL, "not-supported", k,
                               "AuditEvent cannot be searched by '%s'; the parameters are "
                               "patient, _count and _cursor",
                               k);
        if (seen[which]++)
            return jk_diag_add(&rq->diag, JK_EINVAL, "invalid", k, "%s is given more than once", k);
        if (which == 0) {
            const char *id = jk_api_ref_id(v, "Patient");
            if (!jk_fhir_id_ok(id))
                return jk_diag_add(&rq->diag, JK_EINVAL, "value", k,
                                   "patient '%s' is not a patient id or Patient/id", v);
            q->patient_id = id;
        } else if (which == 1) {
            long long c = whole(v, 1, INT64_MAX);
            if (c < 0)
                return jk_diag_add(&rq->diag, JK_EINVAL, "value", k,
                                   "_count '%s' is not a whole number from 1", v);
            q->limit = c > TRAIL_MAX_COUNT ? TRAIL_MAX_COUNT : (int)c;
        } else {
            long long c = whole(v, 1, INT64_MAX);
            if (c < 0)
                return jk_diag_add(&rq->diag, JK_EINVAL, "invalid", k,
                                   "_cursor '%s' is not a page position of this search; follow "
                                   "the Bundle's next link",
                                   v);
            q->before_seq = c;
        }
    }
    return JK_OK;
}

/* The searchset Bundle of the records q finds, newest first, into job. */
static jk_rc search_bundle(struct jk_http_req *rq, struct trail_job *job,
                           const struct jk_audit_query *q)
{
    struct jk_app *app = jk_api_app(rq);
    jk_conn *c = jk_store_conn(app->db);
    if (!c) return JK_EDB;
    const char *self =
        jk_arena_printf(rq->arena, "%s/fhir/R4/AuditEvent?%s%s%s_count=%d", app->base_url,
                        q->patient_id ? "patient=" : "", q->patient_id ? q->patient_id : "",
                        q->patient_id ? "&" : "", q->limit);
    if (!self) return JK_ENOMEM;
    struct jk_buf b, entries;
    jk_buf_init(&b, 0);
    jk_buf_init(&entries, 0);
    struct bundle_ctx x = {.rq = rq, .b = &entries, .base = app->base_url};
    jk_rc rc = jk_audit_find(c, q, bundle_row, &x);
    if (!rc)
        rc = jk_buf_printf(&b,
                           "{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"link\":["
                           "{\"relation\":\"self\",\"url\":\"%s",
                           self);
    if (!rc && q->before_seq) rc = jk_buf_printf(&b, "&_cursor=%lld", (long long)q->before_seq);
    if (!rc) rc = jk_buf_puts(&b, "\"}");
    if (!rc && x.n == (size_t)q->limit) /* perhaps more: the page after the last one shown */
        rc = jk_buf_printf(&b, ",{\"relation\":\"next\",\"url\":\"%s&_cursor=%lld\"}", self,
                           (long long)x.last_seq);
    if (!rc) rc = jk_buf_puts(&b, "],\"entry\":[");
    if (!rc) rc = jk_buf_append(&b, entries.p ? entries.p : "", entries.len);
    if (!rc) rc = jk_buf_puts(&b, "]}");
    jk_buf_free(&entries);
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return trail_keep(rq, job, 200, JK_FHIR_JSON, &b);
}

jk_rc jk_api_audit_search(struct jk_http_req *rq)
{
    struct trail_job *job;
    struct jk_audit_query q;
    jk_rc rc = jk_api_check_format(rq);
    if (rc || (rc = trail_start(rq, "search", !jk_api_app(rq)->is_security_off, &job))) return rc;
    if (!(rc = regulator_only(rq, job)) && !(rc = search_query(rq, &q))) {
        job->rec.patient_id = q.patient_id;
        rc = search_bundle(rq, job, &q);
    }
    return trail_submit(rq, job, rc);
}

static jk_rc read_row(void *arg, const struct jk_audit_rec *r)
{
    struct bundle_ctx *x = arg;
    struct json_object *ev = NULL;
    jk_rc rc = jk_audit_to_fhir(r, x->base, &ev);
    if (rc) return rc;
    size_t len = 0;
    const char *text = jk_json_text(ev, x->rq->arena, &len);
    json_object_put(ev);
    if (!text) return JK_ENOMEM;
    x->patient_id = r->patient_id[0] ? jk_arena_strdup(x->rq->arena, r->patient_id) : NULL;
    x->n = 1;
    x->last_seq = r->seq;
    return jk_buf_append(x->b, text, len);
}

jk_rc jk_api_audit_read(struct jk_http_req *rq)
{
    struct jk_app *app = jk_api_app(rq);
    struct trail_job *job;
    jk_rc rc = jk_api_check_format(rq);
    if (rc || (rc = trail_start(rq, "read", !app->is_security_off, &job))) return rc;
    const char *id = jk_http_param(rq, "id");
    if ((rc = jk_api_check_id(rq, id))) return trail_submit(rq, job, rc); /* not recorded as is */
    job->rec.res_id = id;
    if ((rc = regulator_only(rq, job))) return trail_submit(rq, job, rc);
    long long seq = whole(id, 1, INT64_MAX - 1);
    jk_conn *c = jk_store_conn(app->db);
    struct jk_buf b;
    jk_buf_init(&b, 0);
    struct bundle_ctx x = {.rq = rq, .b = &b, .base = app->base_url};
    if (seq > 0) {
        struct jk_audit_query q = {.before_seq = seq + 1, .limit = 1};
        rc = c ? jk_audit_find(c, &q, read_row, &x) : JK_EDB;
    }
    if (!rc && (!x.n || x.last_seq != seq))
        rc = jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", NULL, "AuditEvent/%s is not known",
                         id);
    if (rc) {
        jk_buf_free(&b);
        return trail_submit(rq, job, rc);
    }
    job->rec.patient_id = x.patient_id;
    rc = trail_keep(rq, job, 200, JK_FHIR_JSON, &b);
    return trail_submit(rq, job, rc);
}

/* ---- anything else on AuditEvent ---- */

jk_rc jk_api_audit_refuse(struct jk_http_req *rq)
{
    static const struct {
        const char *method, *action;
    } attempts[] = {
        {"POST", "create"}, {"PUT", "update"}, {"PATCH", "patch"}, {"DELETE", "delete"}};
    if (!strcmp(rq->method, "GET"))
        return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-supported", NULL,
                           "AuditEvent supports read (AuditEvent/ID) and search only");
    /* An attempt with a valid token is recorded: trying to change the trail is news. Without
     * one it is refused all the same. */
    struct trail_job *job = NULL;
    const char *action = "refused", *rest = jk_http_param(rq, "rest");
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++)
        if (!strcmp(rq->method, attempts[i].method)) action = attempts[i].action;
    if (jk_http_header(rq, "Authorization") && !jk_api_app(rq)->is_security_off &&
        trail_start(rq, action, 1, &job)) {
        job = NULL;
        jk_diag_init(&rq->diag, rq->arena); /* the refusal, not the token, is the answer */
    }
    jk_http_add_header(rq, "Allow", "GET");
    jk_rc refusal = jk_diag_add(&rq->diag, JK_EMETHOD, "not-supported", NULL,
                                "the audit trail cannot be changed through the API (%s %s)",
                                rq->method, rq->path);
    if (!job) return refusal;
    job->rec.res_id = rest && jk_fhir_id_ok(rest) ? rest : NULL;
    return trail_submit(rq, job, refusal);
}

/* ---- GET /api/me/access-log ---- */

struct log_ctx {
    struct jk_buf *b;
    const char *self; /* the resident's user name */
    size_t n;
    int64_t last_seq;
};

static jk_rc json_str(struct jk_buf *b, const char *name, const char *v)
{
    jk_rc rc = jk_buf_printf(b, ",\"%s\":\"", name);
    if (!rc) rc = jk_buf_json_escape(b, v, strlen(v));
    if (!rc) rc = jk_buf_puts(b, "\"");
    return rc;
}

/* One entry: when, who (pseudonym, role, institution), what, and how it ended; never the
 * user name, address or request id of the actor. */
static jk_rc log_row(void *arg, const struct jk_audit_rec *r)
{
    struct log_ctx *x = arg;
    char when[40], label[40];
    const struct jk_role_info *ri = jk_role_by_name(r->role);
    int is_self = !strcmp(r->actor, x->self);
    int is_anonymous = !r->actor[0] || !strcmp(r->actor, "anonymous");
    jk_rc rc = jk_buf_printf(x->b, "%s{\"seq\":%lld", x->n ? "," : "", (long long)r->seq);
    if (!rc) rc = json_str(x->b, "time", jk_time_iso(r->time_ms, when, sizeof when));
    if (!rc)
        rc = json_str(x->b, "actor",
                      is_self        ? "you"
                      : is_anonymous ? "anonymous"
                                     : actor_pseudonym(r->actor, label, sizeof label));
    if (!rc) rc = jk_buf_printf(x->b, ",\"is_self\":%s", is_self ? "true" : "false");
    if (!rc && r->role[0]) rc = json_str(x->b, "role", r->role);
    if (!rc && ri) rc = json_str(x->b, "role_label", ri->label_zh);
    if (!rc && r->org[0]) rc = jk_buf_printf(x->b, ",\"organization\":\"Organization/");
    if (!rc && r->org[0]) rc = jk_buf_json_escape(x->b, r->org, strlen(r->org));
    if (!rc && r->org[0]) rc = jk_buf_puts(x->b, "\"");
    if (!rc) rc = json_str(x->b, "action", r->action);
    if (!rc && r->res_type[0]) rc = json_str(x->b, "resource_type", r->res_type);
    if (!rc && r->res_id[0]) rc = json_str(x->b, "resource_id", r->res_id);
    if (!rc)
        rc = json_str(x->b, "outcome",
                      !r->outcome                            ? "success"
                      : jk_rc_http_status(r->outcome) >= 500 ? "failed"
                                                             : "refused");
    if (!rc && !strcmp(r->action, "break-glass") && r->reason[0])
        rc = json_str(x->b, "break_glass_reason", r->reason);
    if (!rc) rc = jk_buf_puts(x->b, "}");
    x->n++;
    x->last_seq = r->seq;
    return rc;
}

/* The access log's query (before, limit) into q. */
static jk_rc access_log_query(struct jk_http_req *rq, struct jk_audit_query *q)
{
    const char **keys, **values;
    size_t n = jk_http_query(rq, &keys, &values);
    for (size_t i = 0; i < n; i++) {
        long long v = whole(values[i], 1, INT64_MAX);
        int is_before = !strcmp(keys[i], "before"), is_limit = !strcmp(keys[i], "limit");
        if (!is_before && !is_limit)
            return jk_diag_add(&rq->diag, JK_EINVAL, "not-supported", keys[i],
                               "unknown parameter '%s': the access log takes before and limit",
                               keys[i]);
        if (v < 0)
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", keys[i],
                               "%s must be a whole number from 1, not '%s'", keys[i],
                               values[i] ? values[i] : "");
        if (is_before)
            q->before_seq = v;
        else
            q->limit = v > TRAIL_MAX_COUNT ? TRAIL_MAX_COUNT : (int)v;
    }
    return JK_OK;
}

static jk_rc access_log_body(struct jk_http_req *rq, struct trail_job *job,
                             const struct jk_audit_query *q)
{
    struct jk_app *app = jk_api_app(rq);
    jk_conn *c = jk_store_conn(app->db);
    struct jk_buf b, entries;
    jk_buf_init(&b, 0);
    jk_buf_init(&entries, 0);
    struct log_ctx x = {.b = &entries, .self = job->p.username};
    jk_rc rc = c ? jk_audit_find(c, q, log_row, &x) : JK_EDB;
    if (!rc) rc = jk_buf_puts(&b, "{\"patient\":\"");
    if (!rc) rc = jk_buf_json_escape(&b, q->patient_id, strlen(q->patient_id));
    if (!rc) rc = jk_buf_puts(&b, "\",\"entries\":[");
    if (!rc) rc = jk_buf_append(&b, entries.p ? entries.p : "", entries.len);
    if (!rc) rc = jk_buf_puts(&b, "]");
    if (!rc && x.n == (size_t)q->limit)
        rc = jk_buf_printf(&b, ",\"next\":\"%s/api/me/access-log?before=%lld&limit=%d\"",
                           app->base_url, (long long)x.last_seq, q->limit);
    if (!rc) rc = jk_buf_puts(&b, "}");
    jk_buf_free(&entries);
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return trail_keep(rq, job, 200, ACCESS_LOG_JSON, &b);
}

jk_rc jk_api_access_log(struct jk_http_req *rq)
{
    struct trail_job *job;
    jk_rc rc = trail_start(rq, "search", 1, &job); /* "me" needs a token, even security off */
    if (rc) return rc;
    const char *patient = jk_api_ref_id(job->p.link, "Patient");
    if (job->p.role != JK_ROLE_RESIDENT)
        rc = jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                         "the access log is a resident's view of their own records; a regulator "
                         "reads the whole trail at GET /fhir/R4/AuditEvent");
    else if (patient == job->p.link || !jk_fhir_id_ok(patient))
        rc = jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                         "this account is linked to no patient record");
    if (rc) return trail_submit(rq, job, rc);
    job->rec.patient_id = patient;
    struct jk_audit_query q = {.patient_id = patient, .limit = TRAIL_DEFAULT_COUNT};
    if (!(rc = access_log_query(rq, &q))) rc = access_log_body(rq, job, &q);
    return trail_submit(rq, job, rc);
}
