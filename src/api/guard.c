/* guard.c - what every FHIR request goes through: the bearer token, the authorisation
 * decision (src/auth/authz.c), and the audit record, committed before the response goes out
 * (docs/internals/authz.md). */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "api/api_int.h"
#include "auth/audit.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/time.h"
#include "fhir/extract.h"
#include "fhir/rest.h"
#include "fhir/searchparam.h"

#define MAX_RECS 101 /* audit records of one request: the access and up to 100 patients */

static struct jk_audit_rec *new_rec(struct jk_http_req *rq, struct jk_api_guard *g)
{
    if (g->n_recs == MAX_RECS) return NULL;
    if (!g->recs && !(g->recs = jk_arena_zalloc(rq->arena, MAX_RECS * sizeof *g->recs)))
        return NULL;
    struct jk_audit_rec *r = &g->recs[g->n_recs++];
    *r = g->recs[0]; /* the same actor, action and request */
    r->patient_id = NULL;
    return r;
}

jk_rc jk_api_guard(struct jk_http_req *rq, const char *action, struct jk_api_guard **out)
{
    struct jk_app *app = jk_api_app(rq);
    struct jk_api_guard *g = rq->ctx;
    if (g) {
        *out = g;
        return JK_OK;
    }
    if (!(g = jk_arena_zalloc(rq->arena, sizeof *g))) return JK_ENOMEM;
    rq->ctx = g;
    *out = g;
    if (app->is_security_off) {
        g->is_off = 1;
        g->show = JK_SHOW_IDENTITY | JK_SHOW_PHONE;
        return JK_OK;
    }
    if (!(g->recs = jk_arena_zalloc(rq->arena, MAX_RECS * sizeof *g->recs))) return JK_ENOMEM;
    g->n_recs = 1;
    struct jk_audit_rec *r = &g->recs[0];
    r->actor = "anonymous";
    r->action = action;
    r->res_type = jk_http_param(rq, "type");
    r->res_id = jk_http_param(rq, "id");
    r->client_addr = jk_http_client_addr(rq);
    r->request_id = rq->request_id;
    r->outcome = JK_EINTERNAL; /* until the response says otherwise */
    jk_rc rc = jk_api_principal(rq, &g->p);
    if (rc) return rc;
    r->actor = g->p.username;
    r->role = jk_role_info(g->p.role)->name;
    r->org = jk_api_ref_id(g->p.org, "Organization");
    const struct jk_security_rules *rules = jk_api_security_rules();
    if (!rules) return JK_EINTERNAL;
    jk_conn *c = jk_store_conn(app->db);
    if (!c) return JK_EDB;
    if ((rc = jk_authz_get(c, rules, &g->p, jk_time_now_ms(), &g->az))) return rc;
    g->show = ((rules->show_identity_roles >> g->p.role & 1u) ? JK_SHOW_IDENTITY : 0u) |
              ((rules->show_phone_roles >> g->p.role & 1u) ? JK_SHOW_PHONE : 0u);
    const char *bg = jk_http_header(rq, "X-Break-Glass-Reason");
    if (bg) {
        size_t n_chars = 0;
        for (const unsigned char *p = (const unsigned char *)bg; *p; p++)
            n_chars += (*p & 0xc0) != 0x80;
        if (n_chars < (size_t)rules->break_glass_min_reason || strlen(bg) > JK_AUDIT_MAX_REASON)
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL,
                               "X-Break-Glass-Reason must say why, in %d to %d characters "
                               "(access.break_glass_min_reason)",
                               rules->break_glass_min_reason, JK_AUDIT_MAX_REASON);
        g->bg_reason = bg;
    }
    return JK_OK;
}

void jk_api_note_patient(struct jk_http_req *rq, struct jk_api_guard *g, const char *patient)
{
    if (!patient || g->is_off) return;
    for (size_t i = 0; i < g->n_recs; i++)
        if (g->recs[i].patient_id && !strcmp(g->recs[i].patient_id, patient)) return;
    if (!g->recs[0].patient_id) {
        g->recs[0].patient_id = patient;
        return;
    }
    struct jk_audit_rec *r = new_rec(rq, g);
    if (r) r->patient_id = patient;
}

jk_rc jk_api_allow(struct jk_http_req *rq, struct jk_api_guard *g, enum jk_az_action act,
                   const struct jk_az_facts *f, const char *id)
{
    if (g->is_off) return JK_OK;
    for (size_t i = 0; i < f->n_patients; i++)
        jk_api_note_patient(rq, g, f->patients[i]);
    if (!g->recs[0].res_type) g->recs[0].res_type = f->type;
    if (!g->recs[0].res_id) g->recs[0].res_id = id;
    const char *why = NULL;
    int was_bg = 0;
    jk_rc rc = jk_authz_decide(g->az, act, f, g->bg_reason != NULL, &was_bg, &why);
    if (was_bg) {
        g->recs[0].action = "break-glass";
        g->recs[0].reason = g->bg_reason;
    }
    if (!rc) return JK_OK;
    g->recs[0].action = "refused";
    g->recs[0].res_type = f->type;
    g->recs[0].res_id = id;
    return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL, "%s/%s: %s", f->type,
                       id ? id : "", why);
}

jk_rc jk_api_allow_stored(struct jk_http_req *rq, struct jk_api_guard *g, enum jk_az_action act,
                          const char *type, const char *id)
{
    if (g->is_off) return JK_OK;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    struct jk_az_facts f;
    jk_rc rc = jk_authz_facts(c, rq->arena, type, id, &f);
    return rc ? rc : jk_api_allow(rq, g, act, &f, id);
}

/* The patients of content about to be written (or of an old version), from its index rows. */
static jk_rc facts_of_rows(struct jk_http_req *rq, const char *type, const char *id,
                           const struct jk_idx_row *rows, size_t n_rows, struct jk_az_facts *f)
{
    const char *const *comp = jk_sp_patient_compartment(type);
    const char **ids = jk_arena_alloc(rq->arena, 17 * sizeof *ids);
    if (!ids) return JK_ENOMEM;
    f->type = type;
    f->patients = ids;
    f->n_patients = 0;
    if (!strcmp(type, "Patient") && id) ids[f->n_patients++] = id;
    for (size_t i = 0; comp && i < n_rows && f->n_patients < 16; i++) {
        const struct jk_idx_row *r = &rows[i];
        if (r->kind != JK_IDX_REFERENCE || strcmp(r->s1, "Patient") || !*r->s2) continue;
        for (size_t k = 0; comp[k]; k++)
            if (!strcmp(comp[k], r->param)) {
                ids[f->n_patients++] = r->s2;
                break;
            }
    }
    return JK_OK;
}

int jk_api_may_read_version(struct jk_http_req *rq, struct jk_api_guard *g, const struct jk_res *r)
{
    if (g->is_off || r->is_deleted || !r->body) return 1;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct jk_az_facts held, f;
    struct json_object *res = json_tokener_parse(r->body);
    struct jk_idx_row *rows = NULL;
    size_t n_rows = 0;
    const char *why;
    int ok = c && res && !jk_authz_facts(c, rq->arena, r->type, r->id, &held) &&
             !jk_fhir_extract(rq->arena, res, &rows, &n_rows) &&
             !facts_of_rows(rq, r->type, r->id, rows, n_rows, &f);
    json_object_put(res);
    if (!ok) return 0;
    f.org = held.org;
    return !jk_authz_decide(g->az, JK_AZ_READ, &f, g->bg_reason != NULL, NULL, &why);
}

jk_rc jk_api_allow_new(struct jk_http_req *rq, struct jk_api_guard *g, const char *type,
                       const char *id, const struct jk_idx_row *rows, size_t n_rows)
{
    if (g->is_off) return JK_OK;
    struct jk_az_facts f;
    jk_rc rc = facts_of_rows(rq, type, id, rows, n_rows, &f);
    if (rc) return rc;
    f.org = g->p.org[0] ? g->p.org : NULL;
    const char **ids = (const char **)f.patients;
    g->new_patient = f.n_patients ? ids[0] : NULL;
    return jk_api_allow(rq, g, JK_AZ_CREATE, &f, id);
}

static void scope_of(void *arg, const char *type, struct jk_search_scope *out)
{
    struct jk_http_req *rq = arg;
    struct jk_api_guard *g = rq->ctx;
    struct jk_az_scope s;
    jk_authz_scope(g->az, g->search_act, type, g->bg_reason != NULL, &s);
    out->mode = s.mode == JK_AZ_ALL    ? JK_SCOPE_ALL
                : s.mode == JK_AZ_NONE ? JK_SCOPE_NONE
                                       : JK_SCOPE_SOME;
    out->patients = s.patients;
    out->n_patients = s.n_patients;
    out->orgs = s.orgs;
    out->n_orgs = s.n_orgs;
    if (s.is_break_glass && !strcmp(g->recs[0].action, "search")) {
        g->recs[0].action = "break-glass";
        g->recs[0].reason = g->bg_reason;
    }
}

/* Notes the patients of each resource a search returns, for their access logs. */
static void on_entry(void *arg, const char *type, const char *id)
{
    struct jk_http_req *rq = arg;
    struct jk_api_guard *g = rq->ctx;
    if (g->n_recs == MAX_RECS) return;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct jk_az_facts f;
    if (!c || jk_authz_facts(c, rq->arena, type, id, &f)) return;
    for (size_t i = 0; i < f.n_patients; i++)
        jk_api_note_patient(rq, g, f.patients[i]);
}

jk_rc jk_api_search_scope(struct jk_http_req *rq, struct jk_api_guard *g, enum jk_az_action act,
                          const char *type, struct jk_search_opts *o)
{
    if (g->is_off) return JK_OK;
    struct jk_az_scope s;
    jk_authz_scope(g->az, act, type, g->bg_reason != NULL, &s);
    if (s.mode == JK_AZ_NONE) {
        g->recs[0].action = "refused";
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL, "%s: %s", type, s.why);
    }
    g->search_act = act;
    o->scope = scope_of;
    o->scope_arg = rq;
    o->on_entry = on_entry;
    return JK_OK;
}

jk_rc jk_api_send_fhir(struct jk_http_req *rq, int status, const char *body, size_t len)
{
    const struct jk_api_guard *g = rq->ctx;
    const char *out;
    size_t out_len;
    jk_rc rc = jk_protect_view(rq->arena, body, len, g ? g->show : 0, &out, &out_len);
    return rc ? rc : jk_http_respond(rq, status, JK_FHIR_JSON, out, out_len);
}

/* ---- the audit record, before the response ---- */

static jk_rc outcome_of(int status)
{
    return status < 400    ? JK_OK
           : status == 401 ? JK_EUNAUTH
           : status == 403 ? JK_EFORBIDDEN
           : status == 404 ? JK_ENOTFOUND
           : status == 410 ? JK_EGONE
           : status == 409 ? JK_ECONFLICT
           : status == 412 ? JK_EPRECOND
           : status == 422 ? JK_ERULE
           : status < 500  ? JK_EINVAL
                           : JK_EINTERNAL;
}

jk_rc jk_api_audit_append(jk_conn *c, struct jk_http_req *rq, int status)
{
    struct jk_api_guard *g = rq->ctx;
    const struct jk_audit *au = jk_api_app(rq)->audit;
    if (!g || g->is_off || g->is_recorded || !g->n_recs || !au) return JK_OK;
    for (size_t i = 0; i < g->n_recs; i++) {
        struct jk_audit_rec *r = &g->recs[i];
        r->outcome = outcome_of(status);
        if (r->outcome == JK_EFORBIDDEN || r->outcome == JK_EUNAUTH) r->action = "refused";
        jk_rc rc = jk_audit_append(au, c, r, NULL);
        if (rc) return rc;
    }
    g->is_recorded = 1;
    return JK_OK;
}

static jk_rc audit_tx(jk_conn *c, void *arg)
{
    struct jk_http_req *rq = arg;
    return jk_api_audit_append(c, rq, ((struct jk_api_guard *)rq->ctx)->status);
}

static void audit_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    ((struct jk_api_guard *)rq->ctx)->audit_rc = rc;
    jk_http_wake(rq);
}

static jk_rc audit_finish(struct jk_http_req *rq)
{
    struct jk_api_guard *g = rq->ctx;
    if (!g->audit_rc) return JK_OK; /* the response set before stays */
    jk_log_error("audit",
                 "request %s: the audit record could not be written (%s); the "
                 "response is withheld",
                 rq->request_id, jk_rc_name(g->audit_rc));
    jk_diag_init(&rq->diag, rq->arena);
    return jk_diag_add(&rq->diag, JK_EDB, "transient", NULL,
                       "the access could not be recorded in the audit trail, so it was not "
                       "answered; try again");
}

jk_rc jk_api_on_ready(struct jk_http_req *rq)
{
    struct jk_api_guard *g = rq->ctx;
    struct jk_app *app = jk_api_app(rq);
    if (g && g->is_written) jk_authz_touch(); /* committed by now (or rolled back: harmless) */
    if (!g || g->is_off || g->is_recorded || !g->n_recs || !app->audit) return JK_OK;
    g->status = jk_http_status(rq);
    jk_http_defer(rq, audit_finish);
    jk_store_tx_async(app->db, audit_tx, rq, audit_done, rq);
    return JK_OK;
}

void jk_api_guard_release(struct jk_http_req *rq)
{
    struct jk_api_guard *g = rq->ctx;
    if (g) jk_authz_release(g->az);
}

/* ---- writes: decided and recorded inside their transaction ---- */

static jk_rc write_before(jk_conn *c, void *arg, const struct jk_fhir_write *w, const char *id,
                          int is_existing)
{
    struct jk_http_req *rq = arg;
    struct jk_api_guard *g = rq->ctx;
    jk_rc rc = JK_OK;
    if (g->is_off) return JK_OK;
    g->write_patient = NULL;
    if (is_existing) {
        struct jk_az_facts f;
        enum jk_az_action act = w->kind == JK_FHIR_DELETE   ? JK_AZ_DELETE
                                : w->kind == JK_FHIR_CREATE ? JK_AZ_READ /* If-None-Exist match */
                                                            : JK_AZ_UPDATE;
        if ((rc = jk_authz_facts(c, rq->arena, w->type, id, &f)) ||
            (rc = jk_api_allow(rq, g, act, &f, id)))
            return rc;
        if (f.n_patients) g->write_patient = f.patients[0];
        if (w->kind != JK_FHIR_UPDATE) return JK_OK;
    }
    rc = jk_api_allow_new(rq, g, w->type, id, w->rows, w->n_rows);
    if (!rc && !g->write_patient) g->write_patient = g->new_patient;
    return rc;
}

static jk_rc write_after(jk_conn *c, void *arg, const struct jk_fhir_write *w)
{
    struct jk_http_req *rq = arg;
    struct jk_api_guard *g = rq->ctx;
    const struct jk_audit *au = jk_api_app(rq)->audit;
    jk_rc rc = JK_OK;
    if (g->is_off) return JK_OK;
    if (w->status == 201 && g->p.org[0]) rc = jk_authz_set_holder(c, w->type, w->out.id, g->p.org);
    g->is_written = 1; /* on_ready, after the commit, makes cached views be made again */
    if (rc || !au) return rc;
    struct jk_audit_rec r = g->recs[0];
    r.action = w->status == 200 && w->kind == JK_FHIR_CREATE ? "read"
               : w->kind == JK_FHIR_DELETE                   ? "delete"
               : w->status == 201                            ? "create"
                                                             : g->recs[0].action;
    if (!strcmp(r.action, "operation") || !strcmp(r.action, "refused"))
        r.action = w->kind == JK_FHIR_CREATE ? "create" : "update";
    r.res_type = w->type;
    r.res_id = w->out.id;
    r.patient_id = g->write_patient;
    r.outcome = JK_OK;
    rc = jk_audit_append(au, c, &r, NULL);
    if (!rc && !g->is_bundle) g->is_recorded = 1;
    return rc;
}

static const struct jk_fhir_write_hooks write_hooks = {write_before, write_after, NULL};

const struct jk_fhir_write_hooks *jk_api_write_hooks(struct jk_http_req *rq,
                                                     struct jk_fhir_write_hooks *h)
{
    struct jk_api_guard *g = rq->ctx;
    if (!g || g->is_off) return NULL;
    *h = write_hooks;
    h->arg = rq;
    return h;
}

void jk_api_write_failed(struct jk_http_req *rq)
{
    struct jk_api_guard *g = rq->ctx;
    if (g) g->is_recorded = 0; /* rolled back with the write: on_ready records the failure */
}
