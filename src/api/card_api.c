/* card_api.c - the electronic health card over HTTP: issue, list, bind numbers, the dynamic QR
 * code, verification at a desk, revocation and the use log (docs/internals/mpi.md). Every
 * change commits with its audit record in one transaction; refused verifications too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "api/api_int.h"
#include "auth/account.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "mpi/card.h"
#include "mpi/mpi.h"

#define CARD_JSON         "application/json; charset=utf-8"
#define CARD_RESULT_SYS   "https://jiankang.example/fhir/CodeSystem/health-card-verification"
#define CITIZEN_ID_SYSTEM "urn:oid:2.16.156.10011.1.3"
#define MAX_NUMBER        64  /* characters of a bound number */
#define MAX_REASON        200 /* bytes of a revocation reason */
#define USES_DEFAULT      50
#define USES_MAX          500
#define MAX_PERSONS       64 /* persons whose cards one list shows */

static struct {
    struct jk_card_keys keys;
    struct jk_card_rules rules;
    int is_ready;
} card_state;

jk_rc jk_api_card_init(const struct jk_keys *keys, char *err, size_t errlen)
{
    jk_rc rc = jk_card_rules_load(NULL, &card_state.rules, err, errlen);
    if (!rc && (rc = jk_card_keys_init(&card_state.keys, keys)))
        snprintf(err, errlen, "cannot derive the health card keys");
    card_state.is_ready = !rc;
    return rc;
}

/* ---- one request's work: checks on the request thread, the change in a transaction ---- */

struct card_job {
    struct jk_http_req *rq;
    struct jk_api_guard *g;
    jk_rc (*work)(jk_conn *c, struct card_job *j);
    jk_rc (*answer)(struct jk_http_req *rq, struct card_job *j);
    jk_rc rc; /* the transaction's */
    int64_t now_ms;
    struct jk_card card;
    const char *detail; /* the audit record's detail */
    jk_rc outcome;      /* the audit record's outcome (a refused verification) */
    /* bindings */
    struct jk_card_binding binding;
    /* codes */
    const char *content;
    size_t content_len;
    struct jk_card_code code;
    char mac[JK_CARD_MAC_HEX + 1];
    enum jk_card_result result;
    int is_card_known;
    const char *svg, *response; /* answers prepared before the transaction */
    size_t svg_len, response_len;
};

/* Appends the request's audit record inside the transaction (security on). */
static jk_rc record(jk_conn *c, struct card_job *j, const char *action)
{
    struct jk_api_guard *g = j->g;
    const struct jk_audit *au = jk_api_app(j->rq)->audit;
    if (g->is_off || !au) return JK_OK;
    struct jk_audit_rec r = g->recs[0];
    r.action = action;
    r.res_type = "HealthCard";
    r.res_id = j->card.id[0] ? j->card.id : NULL;
    r.patient_id = j->card.patient[0] ? j->card.patient : NULL;
    r.outcome = j->outcome;
    r.reason = j->detail;
    jk_rc rc = jk_audit_append(au, c, &r, NULL);
    if (!rc) g->is_recorded = 1;
    return rc;
}

static jk_rc job_tx(jk_conn *c, void *arg)
{
    struct card_job *j = arg;
    jk_rc rc = j->work(c, j);
    return rc ? rc : record(c, j, j->g->recs ? j->g->recs[0].action : "operation");
}

static void job_done(void *arg, jk_rc rc)
{
    struct card_job *j = arg;
    j->rc = rc;
    if (rc) j->g->is_recorded = 0; /* rolled back: on_ready records the failure */
    jk_http_wake(j->rq);
}

static jk_rc job_finish(struct jk_http_req *rq)
{
    struct card_job *j = rq->state;
    return j->rc ? j->rc : j->answer(rq, j);
}

static jk_rc job_submit(struct jk_http_req *rq, struct card_job *j)
{
    rq->state = j;
    jk_http_defer(rq, job_finish);
    jk_store_tx_async(jk_api_app(rq)->db, job_tx, j, job_done, j);
    return JK_OK;
}

/* The guard of a card request (action for its audit record), and a job. */
static jk_rc start(struct jk_http_req *rq, const char *action, struct card_job **out)
{
    struct jk_api_guard *g;
    if (!card_state.is_ready) return JK_EINTERNAL;
    jk_rc rc = jk_api_guard(rq, action, &g);
    if (rc) return rc;
    struct card_job *j = jk_arena_zalloc(rq->arena, sizeof *j);
    if (!j) return JK_ENOMEM;
    j->rq = rq;
    j->g = g;
    j->now_ms = jk_time_now_ms();
    if (!g->is_off) {
        g->recs[0].res_type = "HealthCard";
        g->recs[0].res_id = NULL;
    }
    *out = j;
    return JK_OK;
}

static jk_rc role_in(struct jk_http_req *rq, struct card_job *j, unsigned roles, const char *what)
{
    if (j->g->is_off || (roles >> j->g->p.role & 1u)) return JK_OK;
    return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL, "a %s may not %s",
                       jk_role_info(j->g->p.role)->name, what);
}

/* Only the card holder (a resident, for themself or a ward) sees its code and its use log. */
static jk_rc holder_only(struct jk_http_req *rq, struct card_job *j, const char *what)
{
    if (j->g->is_off || j->g->p.role == JK_ROLE_RESIDENT) return JK_OK;
    return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                       "only the card holder (a resident) may %s", what);
}

/* The Patient patient_id may be acted for: the caller's view reads it, and it exists. */
static jk_rc allow_patient(struct jk_http_req *rq, struct card_job *j, const char *patient_id)
{
    jk_rc rc = jk_api_allow_stored(rq, j->g, JK_AZ_READ, "Patient", patient_id);
    if (rc) return rc;
    if (!j->g->is_off) {
        j->g->recs[0].res_type = "HealthCard"; /* the decision noted the Patient */
        j->g->recs[0].patient_id = patient_id;
    }
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct jk_res r;
    if (!c) return JK_EDB;
    rc = jk_res_read(c, rq->arena, "Patient", patient_id, &r);
    if (rc == JK_ENOTFOUND || rc == JK_EGONE)
        return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", "patient",
                           "Patient/%s is not known", patient_id);
    return rc;
}

/* The card of the path's :id, which the caller may act on. */
static jk_rc load_card(struct jk_http_req *rq, struct card_job *j)
{
    const char *id = jk_http_param(rq, "id");
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!id || !jk_fhir_id_ok(id))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL, "'%s' is not a card id",
                           id ? id : "");
    if (!c) return JK_EDB;
    jk_rc rc = jk_card_get(c, id, &j->card);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", NULL, "card %s is not known", id);
    if (rc) return rc;
    if (!j->g->is_off) j->g->recs[0].res_id = j->card.id;
    return allow_patient(rq, j, j->card.patient);
}

static jk_rc active_only(struct jk_http_req *rq, struct card_job *j)
{
    if (!strcmp(j->card.status, "active")) return JK_OK;
    return jk_diag_add(&rq->diag, JK_EGONE, "deleted", NULL,
                       "card %s was revoked; issue a new one (POST /api/cards)", j->card.id);
}

/* The request body as a JSON object (an empty body is {}), members limited to allowed. */
static jk_rc body_object(struct jk_http_req *rq, const char *const *allowed,
                         struct json_object **out)
{
    *out = NULL;
    if (!rq->body_len) {
        *out = json_object_new_object();
        return *out ? JK_OK : JK_ENOMEM;
    }
    jk_rc rc = jk_json_parse(rq->body, rq->body_len, &jk_api_app(rq)->json_limits, &rq->diag, out);
    if (rc) return rc;
    json_object_object_foreach(*out, key, val)
    {
        (void)val;
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key))
            i++;
        if (!allowed[i]) {
            jk_rc rc_unknown =
                jk_diag_add(&rq->diag, JK_EINVAL, "structure", key, "unknown member '%s'", key);
            json_object_put(*out);
            *out = NULL;
            return rc_unknown;
        }
    }
    return JK_OK;
}

/* The string member key of o copied into the arena; NULL when absent. JK_EINVAL when it is
 * not a string, is empty, or is longer than max bytes. */
static jk_rc body_str(struct jk_http_req *rq, struct json_object *o, const char *key, size_t max,
                      const char **out)
{
    struct json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(o, key, &v)) return JK_OK;
    if (!json_object_is_type(v, json_type_string) || !json_object_get_string_len(v) ||
        (size_t)json_object_get_string_len(v) > max)
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", key,
                           "%s must be a non-empty string of at most %zu bytes", key, max);
    *out = jk_arena_strdup(rq->arena, json_object_get_string(v));
    return *out ? JK_OK : JK_ENOMEM;
}

/* ---- rendering ---- */

static jk_rc json_member(struct jk_buf *b, const char *name, const char *v)
{
    jk_rc rc = jk_buf_printf(b, ",\"%s\":\"", name);
    if (!rc) rc = jk_buf_json_escape(b, v, strlen(v));
    if (!rc) rc = jk_buf_puts(b, "\"");
    return rc;
}

struct list_ctx {
    jk_conn *c;
    struct jk_buf *b;
    size_t n;
};

/* One binding as a JSON object; its number a marker, masked by send(). */
static jk_rc binding_obj(struct jk_buf *b, const struct jk_card_binding *bd)
{
    jk_rc rc = jk_buf_printf(b, "{\"kind\":\"%s\"", bd->kind);
    if (!rc && bd->org[0]) rc = json_member(b, "organization", bd->org);
    if (!rc) rc = json_member(b, "number", bd->marker);
    if (!rc) rc = jk_buf_puts(b, "}");
    return rc;
}

static jk_rc binding_json(void *arg, const struct jk_card_binding *bd)
{
    struct list_ctx *x = arg;
    jk_rc rc = x->n++ ? jk_buf_puts(x->b, ",") : JK_OK;
    return rc ? rc : binding_obj(x->b, bd);
}

/* One card as JSON, with its bindings (markers, masked by send()). */
static jk_rc card_json(jk_conn *c, struct jk_buf *b, const struct jk_card *card)
{
    char when[40];
    jk_rc rc = jk_buf_printf(b, "{\"id\":\"%s\",\"number\":\"%s\"", card->id, card->number);
    if (!rc) rc = json_member(b, "person", card->person);
    if (!rc) rc = jk_buf_printf(b, ",\"patient\":\"Patient/");
    if (!rc) rc = jk_buf_json_escape(b, card->patient, strlen(card->patient));
    if (!rc) rc = jk_buf_printf(b, "\",\"status\":\"%s\"", card->status);
    if (!rc) rc = json_member(b, "issued", jk_time_iso(card->issued_ms, when, sizeof when));
    if (!rc && card->revoked_ms)
        rc = json_member(b, "revoked", jk_time_iso(card->revoked_ms, when, sizeof when));
    if (!rc && card->revoked_ms) rc = json_member(b, "revoke_reason", card->reason);
    struct list_ctx x = {.c = c, .b = b};
    if (!rc) rc = jk_buf_puts(b, ",\"bindings\":[");
    if (!rc) rc = jk_card_bindings(c, card->id, binding_json, &x);
    if (!rc) rc = jk_buf_puts(b, "]}");
    return rc;
}

/* Sends b (JSON) with every sealed number masked; b is freed. */
static jk_rc send(struct jk_http_req *rq, int status, struct jk_buf *b)
{
    const char *out;
    size_t out_len;
    jk_rc rc = jk_protect_view(rq->arena, b->p ? b->p : "{}", b->p ? b->len : 2, 0, &out, &out_len);
    if (!rc && out == b->p) out = jk_arena_strndup(rq->arena, b->p, b->len);
    jk_buf_free(b);
    if (rc) return rc;
    if (!out) return JK_ENOMEM;
    jk_http_add_header(rq, "Cache-Control", "no-store");
    return jk_http_respond(rq, status, CARD_JSON, out, out_len);
}

static jk_rc send_card(struct jk_http_req *rq, int status, const struct jk_card *card)
{
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct jk_buf b;
    jk_buf_init(&b, 0);
    jk_rc rc = c ? card_json(c, &b, card) : JK_EDB;
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return send(rq, status, &b);
}

/* ---- POST /api/cards ---- */

static jk_rc issue_work(jk_conn *c, struct card_job *j)
{
    char patient[JK_CARD_ID_MAX];
    snprintf(patient, sizeof patient, "%s", j->card.patient);
    jk_rc rc = jk_card_issue(c, patient, j->now_ms, &j->card);
    if (rc == JK_ECONFLICT)
        return jk_diag_add(&j->rq->diag, JK_ECONFLICT, "duplicate", "patient",
                           "this person already has an active health card; revoke it first "
                           "(POST /api/cards/{id}/revoke) to issue a new one");
    return rc;
}

static jk_rc issue_answer(struct jk_http_req *rq, struct card_job *j)
{
    char loc[128];
    snprintf(loc, sizeof loc, "/api/cards/%s", j->card.id);
    jk_http_add_header(rq, "Location", loc);
    return send_card(rq, 201, &j->card);
}

jk_rc jk_api_card_issue(struct jk_http_req *rq)
{
    static const char *const members[] = {"patient", NULL};
    struct card_job *j;
    struct json_object *body = NULL;
    const char *ref = NULL;
    jk_rc rc = start(rq, "card-issue", &j);
    if (rc || (rc = role_in(rq, j, card_state.rules.manage_roles, "issue health cards")) ||
        (rc = body_object(rq, members, &body)))
        return rc;
    rc = body_str(rq, body, "patient", JK_REF_MAX, &ref);
    json_object_put(body);
    if (rc) return rc;
    if (!ref && !j->g->is_off && j->g->p.role == JK_ROLE_RESIDENT) ref = j->g->p.link;
    const char *id = ref ? jk_api_ref_id(ref, "Patient") : NULL;
    if (!ref || !*ref)
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "patient",
                           "patient is required: the Patient the card is for (Patient/<id>)");
    if (id == ref || !jk_fhir_id_ok(id))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "patient",
                           "patient must be a reference Patient/<id>");
    if ((rc = allow_patient(rq, j, id))) return rc;
    snprintf(j->card.patient, sizeof j->card.patient, "%s", id);
    j->work = issue_work;
    j->answer = issue_answer;
    return job_submit(rq, j);
}

/* ---- GET /api/cards ---- */

struct person_set {
    const char *ids[MAX_PERSONS];
    size_t n;
};

static jk_rc add_person_of(struct jk_http_req *rq, jk_conn *c, const char *patient,
                           struct person_set *ps)
{
    char person[JK_MPI_ID_MAX];
    jk_rc rc = jk_mpi_person_find(c, patient, person);
    if (rc == JK_ENOTFOUND) return JK_OK; /* the index has not seen it: no card */
    if (rc || ps->n == MAX_PERSONS) return rc;
    for (size_t i = 0; i < ps->n; i++)
        if (!strcmp(ps->ids[i], person)) return JK_OK;
    ps->ids[ps->n] = jk_arena_strdup(rq->arena, person);
    return ps->ids[ps->n++] ? JK_OK : JK_ENOMEM;
}

static jk_rc list_card(void *arg, const struct jk_card *card)
{
    struct list_ctx *x = arg;
    jk_rc rc = x->n++ ? jk_buf_puts(x->b, ",") : JK_OK;
    return rc ? rc : card_json(x->c, x->b, card);
}

jk_rc jk_api_card_list(struct jk_http_req *rq)
{
    struct card_job *j;
    jk_rc rc = start(rq, "search", &j);
    if (rc) return rc;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    const char *ref = jk_http_query_get(rq, "patient");
    struct person_set ps = {.n = 0};
    if (ref) {
        const char *id = jk_api_ref_id(ref, "Patient");
        if (!jk_fhir_id_ok(id))
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", "patient",
                               "patient must be Patient/<id> or <id>");
        if ((rc = allow_patient(rq, j, id)) || (rc = add_person_of(rq, c, id, &ps))) return rc;
    } else if (!j->g->is_off && j->g->p.role == JK_ROLE_RESIDENT) {
        struct jk_az_scope s;
        jk_authz_scope(j->g->az, JK_AZ_READ, "Patient", 0, &s);
        for (size_t i = 0; s.mode == JK_AZ_SOME && i < s.n_patients && !rc; i++)
            rc = add_person_of(rq, c, s.patients[i], &ps);
        if (rc) return rc;
    } else {
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "patient",
                           "give patient=Patient/<id>: the cards of which person");
    }
    struct jk_buf b;
    jk_buf_init(&b, 0);
    struct list_ctx x = {.c = c, .b = &b};
    rc = jk_buf_puts(&b, "{\"cards\":[");
    for (size_t i = 0; i < ps.n && !rc; i++)
        rc = jk_card_list(c, ps.ids[i], list_card, &x);
    if (!rc) rc = jk_buf_puts(&b, "]}");
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return send(rq, 200, &b);
}

/* ---- GET /api/cards/:id/qr ---- */

static jk_rc qr_work(jk_conn *c, struct card_job *j)
{
    return jk_card_code_record(c, j->card.id, &j->code, j->mac, j->now_ms, card_state.rules.keep_s);
}

static jk_rc qr_answer(struct jk_http_req *rq, struct card_job *j)
{
    char exp[40], refresh[40];
    int64_t exp_ms = j->code.expires_s * 1000;
    struct jk_buf b;
    jk_buf_init(&b, 0);
    jk_rc rc =
        jk_buf_printf(&b, "{\"card\":\"%s\",\"content\":\"%s\",\"svg\":\"", j->card.id, j->content);
    if (!rc) rc = jk_buf_json_escape(&b, j->svg, j->svg_len);
    if (!rc)
        rc = jk_buf_printf(&b, "\",\"expires_at\":\"%s\",\"refresh_at\":\"%s\",\"ttl_seconds\":%d}",
                           jk_time_iso(exp_ms, exp, sizeof exp),
                           jk_time_iso(exp_ms - card_state.rules.refresh_margin_s * 1000LL, refresh,
                                       sizeof refresh),
                           card_state.rules.ttl_s);
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return send(rq, 200, &b);
}

jk_rc jk_api_card_qr(struct jk_http_req *rq)
{
    struct card_job *j;
    jk_rc rc = start(rq, "card-qr", &j);
    if (rc || (rc = holder_only(rq, j, "show a card's QR code")) || (rc = load_card(rq, j)) ||
        (rc = active_only(rq, j)))
        return rc;
    char *text = jk_arena_alloc(rq->arena, JK_CARD_CODE_MAX);
    if (!text) return JK_ENOMEM;
    if ((rc = jk_card_code_make(&card_state.keys, j->card.number, j->now_ms, card_state.rules.ttl_s,
                                text, JK_CARD_CODE_MAX, &j->code)) ||
        (rc = jk_card_code_mac(&card_state.keys, text, strlen(text), j->mac)))
        return rc;
    j->content = text;
    struct jk_buf svg;
    jk_buf_init(&svg, 0);
    if ((rc = jk_card_qr_svg(text, &svg))) {
        jk_buf_free(&svg);
        return rc == JK_EINVAL ? JK_EINTERNAL : rc;
    }
    j->svg = jk_arena_strndup(rq->arena, svg.p, svg.len);
    j->svg_len = svg.len;
    jk_buf_free(&svg);
    if (!j->svg) return JK_ENOMEM;
    j->work = qr_work;
    j->answer = qr_answer;
    return job_submit(rq, j);
}

/* ---- POST /api/cards/:id/bindings ---- */

static jk_rc bind_work(jk_conn *c, struct card_job *j)
{
    jk_rc rc = jk_card_bind(c, &j->card, &j->binding, j->now_ms);
    if (rc == JK_ECONFLICT)
        return jk_diag_add(&j->rq->diag, JK_ECONFLICT, "duplicate", "number",
                           "this number is bound to another person's health card");
    return rc;
}

static jk_rc bind_answer(struct jk_http_req *rq, struct card_job *j)
{
    struct jk_buf b;
    jk_buf_init(&b, 0);
    jk_rc rc = jk_buf_printf(&b, "{\"card\":\"%s\",\"binding\":", j->card.id);
    if (!rc) rc = binding_obj(&b, &j->binding);
    if (!rc) rc = jk_buf_puts(&b, "}");
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return send(rq, 201, &b);
}

/* Whether a bound number has at least one digit or letter, and only digits, letters and the
 * separators people type. */
static int number_ok(const char *s)
{
    int has_alnum = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
            has_alnum = 1;
        else if (*p != ' ' && *p != '-')
            return 0;
    }
    return has_alnum;
}

jk_rc jk_api_card_bind(struct jk_http_req *rq)
{
    static const char *const members[] = {"kind", "number", "organization", NULL};
    struct card_job *j;
    struct json_object *body = NULL;
    const char *kind = NULL, *number = NULL, *org = NULL;
    jk_rc rc = start(rq, "card-bind", &j);
    if (rc || (rc = role_in(rq, j, card_state.rules.manage_roles, "bind numbers to cards")) ||
        (rc = body_object(rq, members, &body)))
        return rc;
    if (!(rc = body_str(rq, body, "kind", 32, &kind)) &&
        !(rc = body_str(rq, body, "number", MAX_NUMBER, &number)))
        rc = body_str(rq, body, "organization", JK_REF_MAX, &org);
    json_object_put(body);
    if (rc) return rc;
    if (!kind || !jk_card_binding_kind_ok(kind))
        return jk_diag_add(&rq->diag, JK_EINVAL, kind ? "code-invalid" : "required", "kind",
                           "kind must be hospital-card, social-security or medical-insurance");
    if (!number || !number_ok(number))
        return jk_diag_add(&rq->diag, JK_EINVAL, number ? "value" : "required", "number",
                           "number must be the card's number: digits and letters (spaces and "
                           "'-' are ignored)");
    int is_hospital = !strcmp(kind, "hospital-card");
    if (is_hospital && !org && !j->g->is_off && j->g->p.org[0]) org = j->g->p.org;
    if (is_hospital && !org)
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "organization",
                           "a hospital card needs its hospital: organization "
                           "Organization/<id>");
    if (!is_hospital && org)
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "organization",
                           "only a hospital card names an organization");
    if (org && (jk_api_ref_id(org, "Organization") == org ||
                !jk_fhir_id_ok(jk_api_ref_id(org, "Organization"))))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "organization",
                           "organization must be a reference Organization/<id>");
    if ((rc = load_card(rq, j)) || (rc = active_only(rq, j))) return rc;
    /* The blind index is made per kind and hospital: a number is unique only there. */
    const char *domain =
        jk_arena_printf(rq->arena, "health-card-binding|%s|%s", kind, org ? org : "");
    const char *marker = NULL;
    char *code = jk_arena_alloc(rq->arena, JK_PROTECT_CODE_LEN + 1);
    if (!domain || !code) return JK_ENOMEM;
    if ((rc = jk_protect_seal_value(rq->arena, domain, number, &marker)))
        return rc == JK_EINVAL ? jk_diag_add(&rq->diag, JK_EINVAL, "value", "number",
                                             "number cannot be bound as it is")
                               : rc;
    if (!jk_protect_index_code(marker, strlen(marker), code)) return JK_EINTERNAL;
    j->binding = (struct jk_card_binding){
        .kind = kind, .org = org ? org : "", .code = code, .marker = marker};
    j->detail = kind;
    j->work = bind_work;
    j->answer = bind_answer;
    return job_submit(rq, j);
}

/* ---- POST /api/cards/:id/revoke ---- */

static jk_rc revoke_work(jk_conn *c, struct card_job *j)
{
    jk_rc rc = jk_card_revoke(c, j->card.id, j->detail, j->now_ms);
    if (rc == JK_EGONE)
        return jk_diag_add(&j->rq->diag, JK_EGONE, "deleted", NULL, "card %s is revoked already",
                           j->card.id);
    if (!rc) rc = jk_card_get(c, j->card.id, &j->card);
    return rc;
}

static jk_rc revoke_answer(struct jk_http_req *rq, struct card_job *j)
{
    return send_card(rq, 200, &j->card);
}

jk_rc jk_api_card_revoke(struct jk_http_req *rq)
{
    static const char *const members[] = {"reason", NULL};
    struct card_job *j;
    struct json_object *body = NULL;
    const char *reason = NULL;
    jk_rc rc = start(rq, "card-revoke", &j);
    if (rc || (rc = role_in(rq, j, card_state.rules.manage_roles, "revoke health cards")) ||
        (rc = body_object(rq, members, &body)))
        return rc;
    rc = body_str(rq, body, "reason", MAX_REASON, &reason);
    json_object_put(body);
    if (rc) return rc;
    if (!reason)
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "reason",
                           "reason is required: why the card is revoked (lost, stolen, ...)");
    if ((rc = load_card(rq, j)) || (rc = active_only(rq, j))) return rc;
    j->detail = reason;
    j->work = revoke_work;
    j->answer = revoke_answer;
    return job_submit(rq, j);
}

/* ---- GET /api/cards/:id/uses ---- */

static jk_rc use_json(void *arg, const struct jk_card_use *u)
{
    struct list_ctx *x = arg;
    char when[40];
    const struct jk_role_info *ri = jk_role_by_name(u->role);
    jk_rc rc = jk_buf_puts(x->b, x->n++ ? ",{" : "{");
    if (!rc) rc = jk_buf_printf(x->b, "\"at\":\"%s\"", jk_time_iso(u->at_ms, when, sizeof when));
    if (!rc && u->org[0]) rc = json_member(x->b, "organization", u->org);
    if (!rc && u->role[0]) rc = json_member(x->b, "role", u->role);
    if (!rc && ri) rc = json_member(x->b, "role_label", ri->label_zh);
    if (!rc) rc = json_member(x->b, "result", u->result);
    if (!rc) rc = jk_buf_puts(x->b, "}");
    return rc;
}

jk_rc jk_api_card_uses(struct jk_http_req *rq)
{
    struct card_job *j;
    jk_rc rc = start(rq, "search", &j);
    if (rc || (rc = holder_only(rq, j, "read a card's use log")) || (rc = load_card(rq, j)))
        return rc;
    int limit = USES_DEFAULT;
    const char *l = jk_http_query_get(rq, "limit");
    if (l) {
        char *end;
        long v = strtol(l, &end, 10);
        if (!*l || *end || v < 1)
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", "limit",
                               "limit must be a whole number from 1");
        limit = v > USES_MAX ? USES_MAX : (int)v;
    }
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    struct jk_buf b;
    jk_buf_init(&b, 0);
    struct list_ctx x = {.c = c, .b = &b};
    rc = jk_buf_printf(&b, "{\"card\":\"%s\",\"uses\":[", j->card.id);
    if (!rc) rc = jk_card_uses(c, j->card.id, limit, use_json, &x);
    if (!rc) rc = jk_buf_puts(&b, "]}");
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return send(rq, 200, &b);
}

/* ---- POST /api/cards/verify ---- */

/* What a registration desk needs of the person: from the card's Patient, then the other
 * records of the person for what it lacks. */
struct demographics {
    const char *name, *sex, *birth, *identity; /* identity: a sealed marker */
};

static const char *name_of(struct jk_arena *a, struct json_object *pat)
{
    struct json_object *names, *n, *v;
    if (!json_object_object_get_ex(pat, "name", &names) ||
        !json_object_is_type(names, json_type_array) || !json_object_array_length(names))
        return NULL;
    n = json_object_array_get_idx(names, 0);
    const char *text = jk_json_str(n, "text");
    if (text) return jk_arena_strdup(a, text);
    const char *family = jk_json_str(n, "family");
    const char *given = NULL;
    if (json_object_object_get_ex(n, "given", &v) && json_object_is_type(v, json_type_array) &&
        json_object_array_length(v))
        given = json_object_get_string(json_object_array_get_idx(v, 0));
    if (!family && !given) return NULL;
    /* Han names are written family first without a space; Latin ones given first. */
    int is_han = family && (unsigned char)family[0] >= 0x80;
    if (is_han || !given || !family)
        return jk_arena_printf(a, "%s%s", family ? family : "", given ? given : "");
    return jk_arena_printf(a, "%s %s", given, family);
}

/* The sealed identity number of pat: its citizen ID, else the first sealed identifier. */
static const char *identity_of(struct jk_arena *a, struct json_object *pat)
{
    struct json_object *ids;
    const char *best = NULL;
    if (!json_object_object_get_ex(pat, "identifier", &ids) ||
        !json_object_is_type(ids, json_type_array))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(ids); i++) {
        struct json_object *id = json_object_array_get_idx(ids, i);
        const char *v = jk_json_str(id, "value"), *sys = jk_json_str(id, "system");
        if (!v || strncmp(v, "jkenc:1:id:", 11)) continue;
        if (sys && !strcmp(sys, CITIZEN_ID_SYSTEM)) return jk_arena_strdup(a, v);
        if (!best) best = v;
    }
    return best ? jk_arena_strdup(a, best) : NULL;
}

static jk_rc fill_from(struct jk_arena *a, jk_conn *c, const char *patient_id,
                       struct demographics *d)
{
    struct jk_res r;
    jk_rc rc = jk_res_read(c, a, "Patient", patient_id, &r);
    if (rc == JK_ENOTFOUND || rc == JK_EGONE || (!rc && !r.body)) return JK_OK;
    if (rc) return rc;
    struct json_object *pat = json_tokener_parse(r.body);
    if (!pat) return JK_OK; /* stored text always parses; nothing to take otherwise */
    if (!d->name) d->name = name_of(a, pat);
    if (!d->sex && jk_json_str(pat, "gender"))
        d->sex = jk_arena_strdup(a, jk_json_str(pat, "gender"));
    if (!d->birth && jk_json_str(pat, "birthDate"))
        d->birth = jk_arena_strdup(a, jk_json_str(pat, "birthDate"));
    if (!d->identity) d->identity = identity_of(a, pat);
    json_object_put(pat);
    return JK_OK;
}

static jk_rc demographics_of(struct jk_arena *a, jk_conn *c, const struct jk_card *card,
                             struct demographics *d)
{
    static const char sql[] =
        "SELECT patient_id FROM mpi_record WHERE person_id = ? ORDER BY updated_ms, patient_id";
    memset(d, 0, sizeof *d);
    jk_rc rc = fill_from(a, c, card->patient, d);
    if (rc || (d->name && d->sex && d->birth && d->identity)) return rc;
    const char *others[8];
    size_t n = 0;
    jk_stmt *s;
    int has_row = 0;
    if ((rc = jk_conn_prepare(c, sql, &s))) return rc;
    rc = jk_stmt_text_arg(s, 1, card->person, strlen(card->person));
    while (!rc && n < 8 && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        size_t len;
        const char *p = jk_stmt_col_text(s, 0, &len);
        if (p && strcmp(p, card->patient) && !(others[n] = jk_arena_strndup(a, p, len)))
            rc = JK_ENOMEM;
        else if (p && strcmp(p, card->patient))
            n++;
    }
    jk_stmt_reset(s);
    for (size_t i = 0; i < n && !rc; i++)
        rc = fill_from(a, c, others[i], d);
    return rc;
}

static const struct {
    jk_rc rc;
    const char *issue, *msg;
} refusals[] = {
    [JK_CARD_OK] = {JK_OK, NULL, NULL},
    [JK_CARD_MALFORMED] = {JK_EINVAL, "structure",
                           "the content is not a health card code of this platform"},
    [JK_CARD_SIGNATURE] = {JK_EINVAL, "security",
                           "the code's signature is not the platform's: it was changed or forged"},
    [JK_CARD_EXPIRED] = {JK_ERULE, "expired",
                         "the code has expired; ask the resident to show the current code"},
    [JK_CARD_REVOKED] = {JK_EGONE, "deleted", "the card was revoked"},
    [JK_CARD_REPLAYED] = {JK_ECONFLICT, "duplicate",
                          "this code was already used once; ask the resident to show a new code"},
};

static jk_rc verify_work(jk_conn *c, struct card_job *j)
{
    jk_rc rc = JK_OK;
    if (j->result == JK_CARD_OK)
        rc = jk_card_code_use(c, j->card.id, &j->code, j->mac, j->now_ms, &j->result);
    struct jk_api_guard *g = j->g;
    struct jk_card_use u = {.at_ms = j->now_ms,
                            .org = g->is_off ? "" : g->p.org,
                            .role = g->is_off ? "" : jk_role_info(g->p.role)->name,
                            .result = jk_card_result_name(j->result)};
    if (!rc && j->is_card_known) rc = jk_card_use_log(c, j->card.id, &u);
    j->outcome = refusals[j->result].rc;
    j->detail = u.result;
    return rc;
}

static jk_rc verify_answer(struct jk_http_req *rq, struct card_job *j)
{
    if (j->result != JK_CARD_OK) {
        jk_rc rc =
            jk_diag_add(&rq->diag, refusals[j->result].rc, refusals[j->result].issue, "content",
                        "%s: %s", jk_card_result_name(j->result), refusals[j->result].msg);
        rq->diag.tail->detail_system = CARD_RESULT_SYS;
        rq->diag.tail->detail_code = jk_card_result_name(j->result);
        return rc;
    }
    const char *out;
    size_t out_len;
    jk_rc rc = jk_protect_view(rq->arena, j->response, j->response_len, 0, &out, &out_len);
    if (rc) return rc;
    jk_http_add_header(rq, "Cache-Control", "no-store");
    return jk_http_respond(rq, 200, CARD_JSON, out, out_len);
}

/* The answer for an accepted code, made before the transaction (reads only). */
static jk_rc verify_response(struct jk_http_req *rq, struct card_job *j)
{
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct demographics d;
    jk_rc rc = c ? demographics_of(rq->arena, c, &j->card, &d) : JK_EDB;
    if (rc) return rc;
    struct jk_buf b;
    jk_buf_init(&b, 0);
    rc = jk_buf_printf(&b, "{\"result\":\"accepted\",\"card\":\"%s\"", j->card.id);
    if (!rc) rc = json_member(&b, "person", j->card.person);
    if (!rc) rc = jk_buf_puts(&b, ",\"patient\":\"Patient/");
    if (!rc) rc = jk_buf_json_escape(&b, j->card.patient, strlen(j->card.patient));
    if (!rc) rc = jk_buf_puts(&b, "\"");
    if (!rc && d.name) rc = json_member(&b, "name", d.name);
    if (!rc && d.sex) rc = json_member(&b, "sex", d.sex);
    if (!rc && d.birth) rc = json_member(&b, "birthDate", d.birth);
    if (!rc && d.identity) rc = json_member(&b, "identity", d.identity); /* masked when sent */
    if (!rc) rc = jk_buf_puts(&b, "}");
    if (!rc && !(j->response = jk_arena_strndup(rq->arena, b.p, b.len))) rc = JK_ENOMEM;
    j->response_len = b.len;
    jk_buf_free(&b);
    return rc;
}

/* The checks of a well-formed code that need the database (reads only): the card, whether
 * the code is one issued here, its signature and expiry, the card's status, and the answer
 * if all is well. */
static jk_rc verify_reads(struct jk_http_req *rq, struct card_job *j, jk_conn *c)
{
    jk_rc rc = jk_card_by_number(c, j->code.number, &j->card);
    if (rc && rc != JK_ENOTFOUND) return rc;
    j->is_card_known = !rc;
    int is_known_mac = 0;
    rc = jk_card_code_mac(&card_state.keys, j->content, j->content_len, j->mac);
    if (!rc && j->is_card_known) rc = jk_card_code_known(c, &j->code, j->mac, &is_known_mac);
    if (rc) return rc;
    j->result = jk_card_code_check(&card_state.keys, j->content, &j->code, is_known_mac, j->now_ms,
                                   card_state.rules.ttl_s);
    if (j->result == JK_CARD_OK && !j->is_card_known) j->result = JK_CARD_REVOKED;
    if (j->result == JK_CARD_OK && strcmp(j->card.status, "active")) j->result = JK_CARD_REVOKED;
    if (!j->is_card_known) memset(&j->card, 0, sizeof j->card);
    if (j->is_card_known && !j->g->is_off) {
        j->g->recs[0].res_id = j->card.id;
        j->g->recs[0].patient_id = j->card.patient;
    }
    return j->result == JK_CARD_OK ? verify_response(rq, j) : JK_OK;
}

jk_rc jk_api_card_verify(struct jk_http_req *rq)
{
    static const char *const members[] = {"content", NULL};
    struct card_job *j;
    struct json_object *body = NULL;
    const char *content = NULL;
    jk_rc rc = start(rq, "card-verify", &j);
    if (rc || (rc = role_in(rq, j, card_state.rules.verify_roles, "verify health cards")) ||
        (rc = body_object(rq, members, &body)))
        return rc;
    rc = body_str(rq, body, "content", 4096, &content);
    json_object_put(body);
    if (rc) return rc;
    if (!content)
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "content",
                           "content is required: the text of the scanned QR code");
    j->content = content;
    j->content_len = strlen(content);
    j->result = jk_card_code_parse(content, j->content_len, &j->code);
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    if (j->result == JK_CARD_OK) {
        /* One read transaction for every read: a snapshot, and (on SQLite) one look at the
         * WAL instead of one per statement. */
        if ((rc = jk_conn_exec(c, "BEGIN"))) return rc;
        rc = verify_reads(rq, j, c);
        jk_rc end = jk_conn_exec(c, "COMMIT");
        if (rc || (rc = end)) return rc;
    }
    j->work = verify_work;
    j->answer = verify_answer;
    return job_submit(rq, j);
}
