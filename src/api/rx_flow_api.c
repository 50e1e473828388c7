/* rx_flow_api.c - a prescription after its signature, over HTTP (docs/api.md "Internet
 * hospital", docs/internals/rx.md): the pharmacist's review queue and decision, the
 * prescription with its redemption code (text and QR), the patient's choice of pharmacy,
 * redemption, dispensing, delivery orders and cancellation; and the regulator's supervision
 * lists. Every change commits with its audit record in one transaction; reads and refusals are
 * recorded by the guard. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "api/api_int.h"
#include "core/arena.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "mpi/card.h"
#include "store/resource.h"
#include "svc/pay/pay.h"
#include "svc/rx/flow.h"

#define RX_JSON        "application/json; charset=utf-8"
#define QUEUE_DEFAULT  50
#define LIST_MAX       200  /* prescriptions one list returns */
#define SUPERVISE_MAX  2000 /* rows one supervision page returns */
#define MAX_DAYS       31   /* days one supervision request covers */
#define MAX_ORGS       500  /* institutions a review centre's regions hold */
#define MAX_ORG_DEPTH  8
#define MAX_REASON_LEN 200

static const struct jk_rx_flow_rules *rules(void)
{
    return jk_rx_flow_rules();
}

/* ---- small helpers ---- */

static void add_s(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v ? v : ""));
}

static void add_time(struct json_object *o, const char *k, int64_t ms)
{
    char t[32];
    if (ms) json_object_object_add(o, k, json_object_new_string(jk_time_iso(ms, t, sizeof t)));
}

static const char *typed(struct jk_arena *a, const char *type, const char *id)
{
    if (!id || !*id) return "";
    return strchr(id, '/') ? id : jk_arena_printf(a, "%s/%s", type, id);
}

static jk_rc send_json(struct jk_http_req *rq, int status, struct json_object *o)
{
    size_t n;
    const char *t = jk_json_text(o, rq->arena, &n);
    json_object_put(o);
    if (!t) return JK_ENOMEM;
    jk_http_add_header(rq, "Cache-Control", "no-store");
    return jk_http_respond(rq, status, RX_JSON, t, n);
}

/* The JSON object body (an empty body: an empty object). 400 when it is something else. */
static jk_rc body_object(struct jk_http_req *rq, struct json_object **out)
{
    *out = NULL;
    if (!rq->body_len) {
        *out = json_object_new_object();
        return JK_OK;
    }
    jk_rc rc = jk_json_parse(rq->body, rq->body_len, &jk_api_app(rq)->json_limits, &rq->diag, out);
    if (rc) return rc;
    if (!json_object_is_type(*out, json_type_object)) {
        json_object_put(*out);
        *out = NULL;
        return jk_diag_add(&rq->diag, JK_EINVAL, "structure", NULL, "the body must be an object");
    }
    return JK_OK;
}

/* A string member (copied into the arena), NULL when absent; 400 when not a string or too
 * long. */
static jk_rc member(struct jk_http_req *rq, struct json_object *o, const char *k, size_t max,
                    const char **out)
{
    struct json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(o, k, &v) || json_object_is_type(v, json_type_null))
        return JK_OK;
    if (!json_object_is_type(v, json_type_string))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", k, "%s must be a string", k);
    if ((size_t)json_object_get_string_len(v) > max)
        return jk_diag_add(&rq->diag, JK_EINVAL, "too-long", k, "%s is at most %zu bytes", k, max);
    *out = jk_arena_strdup(rq->arena, json_object_get_string(v));
    return *out ? JK_OK : JK_ENOMEM;
}

static jk_rc path_id(struct jk_http_req *rq, const char **out)
{
    const char *id = jk_http_param(rq, "id");
    *out = id;
    if (!id || !jk_fhir_id_ok(id))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL, "'%s' is not a prescription id",
                           id ? id : "");
    return JK_OK;
}

/* ---- who acts ---- */

/* Adds Organization/<id> of org and of every one below it (Organization.partOf) to list. */
static jk_rc add_subtree(jk_conn *c, struct jk_arena *a, const char *org, const char **list,
                         size_t *n)
{
    static const char sql[] = "SELECT id FROM idx_reference WHERE type = 'Organization' AND"
                              " param = 'partof' AND target_type = 'Organization' AND"
                              " target_id = ?";
    size_t from = *n;
    if (*n < MAX_ORGS) list[(*n)++] = org;
    for (int depth = 0; depth <= MAX_ORG_DEPTH && from < *n; depth++) {
        size_t to = *n;
        for (size_t i = from; i < to; i++) {
            jk_stmt *s;
            int has_row = 0;
            const char *id = strrchr(list[i], '/') ? strrchr(list[i], '/') + 1 : list[i];
            jk_rc rc = jk_conn_prepare(c, sql, &s);
            if (!rc) rc = jk_stmt_text_arg(s, 1, id, strlen(id));
            if (!rc) rc = jk_stmt_step(s, &has_row);
            while (!rc && has_row && *n < MAX_ORGS) {
                list[(*n)++] = jk_arena_printf(a, "Organization/%s", jk_stmt_col_text(s, 0, NULL));
                rc = jk_stmt_step(s, &has_row);
            }
            if (s) jk_stmt_reset(s);
            if (rc) return rc;
        }
        from = to;
    }
    return JK_OK;
}

/* The actor of the request: role, organisation, link; a resident's patients; a pharmacist's
 * institutions to review for (their own, and the regions of their review centre). */
static jk_rc actor_of(struct jk_http_req *rq, struct jk_api_guard *g, struct jk_rx_actor *a)
{
    memset(a, 0, sizeof *a);
    a->role = g->p.role;
    a->org = g->p.org;
    a->link = g->p.link;
    if (g->p.role == JK_ROLE_RESIDENT) {
        struct jk_az_scope sc;
        jk_authz_scope(g->az, JK_AZ_READ, "Patient", 0, &sc);
        if (sc.mode == JK_AZ_SOME) {
            a->patients = sc.patients;
            a->n_patients = sc.n_patients;
        }
        return JK_OK;
    }
    if (!jk_rx_flow_role_may(rules(), "review", g->p.role) || !g->p.org[0]) return JK_OK;
    const char *const *regions;
    size_t n_regions = jk_rx_flow_centre_regions(rules(), g->p.org, &regions), n = 0;
    const char **list = jk_arena_alloc(rq->arena, MAX_ORGS * sizeof *list);
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!list) return JK_ENOMEM;
    if (!c) return JK_EDB;
    list[n++] = g->p.org;
    for (size_t i = 0; i < n_regions; i++) {
        jk_rc rc = add_subtree(c, rq->arena, regions[i], list, &n);
        if (rc) return rc;
    }
    a->review_orgs = list;
    a->n_review_orgs = n;
    return JK_OK;
}

/* JK_OK, or 403 naming why. */
static jk_rc may(struct jk_http_req *rq, struct jk_api_guard *g, const struct jk_rx_actor *a,
                 const struct jk_rx_presc *p, enum jk_rx_act act)
{
    const char *why = NULL;
    if (g->is_off) return JK_OK;
    jk_api_note_patient(rq, g, p->patient_id);
    if (!jk_rx_flow_may(rules(), a, p, act, &why)) return JK_OK;
    g->recs[0].action = "refused";
    return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL, "prescription %s: %s", p->id,
                       why);
}

/* The request's organisation (a pharmacy): the principal's, or ?pharmacy= with security off. */
static const char *own_org(struct jk_http_req *rq, struct jk_api_guard *g, struct json_object *o)
{
    const char *org = g->is_off ? (o ? jk_json_str(o, "pharmacy") : NULL) : g->p.org;
    if (!org && g->is_off) org = jk_http_query_get(rq, "pharmacy");
    return org && *org ? jk_api_ref_id(org, "Organization") : NULL;
}

/* Whether Organization id is a pharmacy of the platform. */
static jk_rc is_pharmacy_org(struct jk_http_req *rq, const char *id, int *out)
{
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct jk_res r;
    *out = 0;
    if (!c) return JK_EDB;
    if (!id || !jk_fhir_id_ok(id)) return JK_OK;
    jk_rc rc = jk_res_read(c, rq->arena, "Organization", id, &r);
    if (rc == JK_ENOTFOUND || rc == JK_EGONE) return JK_OK;
    if (rc) return rc;
    struct json_object *o = json_tokener_parse(r.body);
    *out = jk_rx_flow_is_pharmacy(rules(), o);
    json_object_put(o);
    return JK_OK;
}

/* ---- a prescription as JSON ---- */

static struct json_object *parsed_or(const char *text, struct json_object *dflt)
{
    struct json_object *o = text && *text ? json_tokener_parse(text) : NULL;
    if (!o) return dflt;
    json_object_put(dflt);
    return o;
}

static struct json_object *review_json(struct jk_http_req *rq, const struct jk_rx_presc *p)
{
    struct json_object *o = json_object_new_object(), *codes = json_object_new_array();
    add_s(o, "reviewer", p->reviewer);
    add_time(o, "at", p->reviewed_ms);
    json_object_object_add(o, "turnaroundMs",
                           json_object_new_int64(p->reviewed_ms - p->created_ms));
    const char *s = p->review_codes;
    while (s && *s) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        const char *code = jk_arena_strndup(rq->arena, s, n);
        struct json_object *cd = json_object_new_object();
        add_s(cd, "system", JK_RX_REASON_SYSTEM);
        add_s(cd, "code", code);
        const char *d = jk_rx_flow_reason(rules(), code);
        if (d) add_s(cd, "display", d);
        json_object_array_add(codes, cd);
        s = comma ? comma + 1 : NULL;
    }
    json_object_object_add(o, "codes", codes);
    if (*p->review_text) add_s(o, "text", p->review_text);
    return o;
}

static const char *payment_state(jk_conn *c, const struct jk_rx_presc *p)
{
    struct jk_pay_item it = {"prescription", p->id, p->patient_id, p->org, p->amount_fen};
    enum jk_pay_state st = JK_PAY_UNPAID;
    if (c && jk_pay()->state(c, &it, &st)) st = JK_PAY_UNPAID;
    return jk_pay_state_name(st);
}

/* The list form: what the queue and the lists show, from the row only. */
static struct json_object *presc_json(struct jk_http_req *rq, const struct jk_rx_presc *p)
{
    struct json_object *o = json_object_new_object();
    add_s(o, "id", p->id);
    add_s(o, "status", p->status);
    add_time(o, "created", p->created_ms);
    add_s(o, "visit", typed(rq->arena, "Encounter", p->visit_id));
    add_s(o, "patient", typed(rq->arena, "Patient", p->patient_id));
    add_s(o, "doctor", typed(rq->arena, "PractitionerRole", p->doctor));
    add_s(o, "org", typed(rq->arena, "Organization", p->org));
    json_object_object_add(o, "warnings", parsed_or(p->warnings, json_object_new_array()));
    json_object_object_add(o, "summary", parsed_or(p->summary, json_object_new_object()));
    json_object_object_add(o, "amountFen", json_object_new_int64(p->amount_fen));
    if (p->reviewed_ms) json_object_object_add(o, "review", review_json(rq, p));
    add_time(o, "validUntil", p->valid_until_ms);
    if (*p->pharmacy) add_s(o, "pharmacy", typed(rq->arena, "Organization", p->pharmacy));
    if (*p->delivery) add_s(o, "delivery", p->delivery);
    add_time(o, "presented", p->presented_ms);
    add_time(o, "dispensed", p->dispensed_ms);
    return o;
}

/* The full form: with payment, the code (to the patient) and the delivery order. */
static jk_rc detail_json(struct jk_http_req *rq, struct jk_api_guard *g,
                         const struct jk_rx_actor *a, const struct jk_rx_presc *p,
                         struct json_object **out)
{
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct json_object *o = presc_json(rq, p);
    int64_t now = jk_time_now_ms();
    add_s(o, "payment", payment_state(c, p));
    int is_patient = g->is_off || jk_rx_flow_is_patient(a, p);
    const struct jk_rx_flow_keys *k = jk_rx_flow_keys();
    if (is_patient && !strcmp(p->status, "approved") && p->valid_until_ms > now && k) {
        char code[JK_RX_CODE_DIGITS + 1];
        struct jk_buf svg;
        jk_buf_init(&svg, 0);
        jk_rc rc = jk_rx_flow_code(k, p->id, p->reviewed_ms, code);
        if (!rc) rc = jk_card_qr_svg(code, &svg);
        if (!rc) {
            add_s(o, "code", code);
            add_s(o, "qrSvg", jk_arena_strndup(rq->arena, svg.p, svg.len));
        }
        jk_buf_free(&svg);
        if (rc) {
            json_object_put(o);
            return rc;
        }
    }
    struct jk_rx_delivery d;
    int sees_address = is_patient || (!g->is_off && jk_rx_same_ref(a->org, p->pharmacy));
    jk_rc rc =
        c ? jk_rx_flow_delivery_get(c, rq->arena, sees_address ? k : NULL, p->id, &d) : JK_EDB;
    if (!rc) {
        struct json_object *dv = json_object_new_object();
        add_s(dv, "status", d.status);
        if (*d.carrier) add_s(dv, "carrier", d.carrier);
        if (*d.waybill) add_s(dv, "waybill", d.waybill);
        if (sees_address) add_s(dv, "address", d.address);
        json_object_object_add(dv, "history", parsed_or(d.history, json_object_new_array()));
        add_time(dv, "updated", d.updated_ms);
        json_object_object_add(o, "deliveryOrder", dv);
    } else if (rc != JK_ENOTFOUND) {
        json_object_put(o);
        return rc;
    }
    *out = o;
    return JK_OK;
}

/* ---- the review queue ---- */

/* GET /api/rx/review-queue[?order=oldest|newest][&limit=N][&after=MS:ID] */
jk_rc jk_api_rx_queue(struct jk_http_req *rq)
{
    struct jk_api_guard *g;
    struct jk_rx_actor a;
    jk_rc rc = jk_api_guard(rq, "rx-queue", &g);
    if (rc) return rc;
    if (!rules()) return JK_EINTERNAL;
    const char *order = jk_http_query_get(rq, "order"), *lim = jk_http_query_get(rq, "limit");
    const char *after = jk_http_query_get(rq, "after");
    int is_newest = order && !strcmp(order, "newest"), limit = QUEUE_DEFAULT;
    int64_t after_ms = 0;
    const char *after_id = NULL;
    if (order && !is_newest && strcmp(order, "oldest"))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "order", "order is oldest or newest");
    if (lim) {
        char *end;
        long v = strtol(lim, &end, 10);
        if (*end || v < 1 || v > jk_rx_flow_queue_max(rules()))
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", "limit",
                               "limit is a whole number from 1 to %d (review.queue_max)",
                               jk_rx_flow_queue_max(rules()));
        limit = (int)v;
    }
    if (after) {
        char *end;
        after_ms = strtoll(after, &end, 10);
        if (*end != ':' || !jk_fhir_id_ok(end + 1))
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", "after",
                               "after is the 'next' cursor of the previous page");
        after_id = end + 1;
    }
    const char *const *orgs;
    size_t n_orgs;
    const char *one;
    if (g->is_off) {
        one = jk_http_query_get(rq, "org");
        if (!one) return jk_diag_add(&rq->diag, JK_EINVAL, "required", "org", "which institution");
        orgs = &one;
        n_orgs = 1;
    } else {
        g->recs[0].res_type = "prescription";
        if ((rc = actor_of(rq, g, &a))) return rc;
        if (!a.n_review_orgs) {
            g->recs[0].action = "refused";
            return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                               "the review queue is for pharmacists of an institution or a "
                               "review centre (review.roles)");
        }
        orgs = a.review_orgs;
        n_orgs = a.n_review_orgs;
    }
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct jk_rx_presc *rows;
    size_t n;
    int64_t total;
    if (!c) return JK_EDB;
    rc = jk_rx_flow_queue(c, rq->arena, orgs, n_orgs, is_newest, after_ms, after_id, limit, &rows,
                          &n, &total);
    if (rc) return rc;
    struct json_object *out = json_object_new_object(), *arr = json_object_new_array();
    json_object_object_add(out, "total", json_object_new_int64(total));
    for (size_t i = 0; i < n; i++) {
        json_object_array_add(arr, presc_json(rq, &rows[i]));
        jk_api_note_patient(rq, g, rows[i].patient_id);
    }
    json_object_object_add(out, "prescriptions", arr);
    if (n == (size_t)limit)
        add_s(out, "next",
              jk_arena_printf(rq->arena, "%lld:%s", (long long)rows[n - 1].created_ms,
                              rows[n - 1].id));
    return send_json(rq, 200, out);
}

/* ---- reading prescriptions ---- */

/* GET /api/rx/prescriptions/{id} */
jk_rc jk_api_rx_get(struct jk_http_req *rq)
{
    struct jk_api_guard *g;
    struct jk_rx_actor a;
    struct jk_rx_presc p;
    const char *id;
    jk_rc rc = jk_api_guard(rq, "read", &g);
    if (!rc) rc = path_id(rq, &id);
    if (rc) return rc;
    if (!rules()) return JK_EINTERNAL;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    if (!g->is_off) {
        g->recs[0].res_type = "prescription";
        g->recs[0].res_id = id;
        if ((rc = actor_of(rq, g, &a))) return rc;
    }
    rc = jk_rx_flow_get(c, rq->arena, id, &p);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(&rq->diag, g->is_off ? JK_ENOTFOUND : JK_EFORBIDDEN,
                           g->is_off ? "not-found" : "forbidden", NULL,
                           "prescription %s: not found, or not yours to see", id);
    if (!rc) rc = may(rq, g, &a, &p, JK_RX_READ);
    struct json_object *o = NULL;
    if (!rc) rc = detail_json(rq, g, &a, &p, &o);
    return rc ? rc : send_json(rq, 200, o);
}

/* GET /api/rx/prescriptions[?patient=Patient/x]: a patient's (filtered by who may read each),
 * a resident's own and wards', or those presented to the caller's pharmacy. */
jk_rc jk_api_rx_list(struct jk_http_req *rq)
{
    static const char by_patient[] = "SELECT id FROM rx_prescription WHERE patient_id = ? ORDER"
                                     " BY created_ms DESC LIMIT 200";
    static const char by_pharmacy[] = "SELECT id FROM rx_prescription WHERE pharmacy = ? AND"
                                      " presented_ms IS NOT NULL ORDER BY presented_ms DESC"
                                      " LIMIT 200";
    struct jk_api_guard *g;
    struct jk_rx_actor a;
    jk_rc rc = jk_api_guard(rq, "search", &g);
    if (rc) return rc;
    if (!rules()) return JK_EINTERNAL;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    if (!g->is_off) {
        g->recs[0].res_type = "prescription";
        if ((rc = actor_of(rq, g, &a))) return rc;
    }
    const char *keys[64], *sql[64];
    size_t n_keys = 0;
    const char *ref = jk_http_query_get(rq, "patient");
    int is_pharmacy = 0;
    if (ref) {
        const char *pid = jk_api_ref_id(ref, "Patient");
        if (!jk_fhir_id_ok(pid))
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", "patient",
                               "patient must be Patient/<id>");
        keys[n_keys] = pid;
        sql[n_keys++] = by_patient;
    } else if (!g->is_off && g->p.role == JK_ROLE_RESIDENT) {
        for (size_t i = 0; i < a.n_patients && n_keys < 64; i++) {
            keys[n_keys] = a.patients[i];
            sql[n_keys++] = by_patient;
        }
    } else if (!g->is_off && jk_rx_flow_role_may(rules(), "dispense", g->p.role) && g->p.org[0] &&
               !(rc = is_pharmacy_org(rq, jk_api_ref_id(g->p.org, "Organization"), &is_pharmacy)) &&
               is_pharmacy) {
        keys[n_keys] = jk_api_ref_id(g->p.org, "Organization");
        sql[n_keys++] = by_pharmacy;
    } else if (!rc) {
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "patient",
                           "give patient=Patient/<id>: whose prescriptions");
    }
    if (rc) return rc;
    struct json_object *out = json_object_new_object(), *arr = json_object_new_array();
    json_object_object_add(out, "prescriptions", arr);
    for (size_t k = 0; !rc && k < n_keys; k++) {
        const char *ids[LIST_MAX];
        size_t n = 0;
        jk_stmt *s;
        int has_row = 0;
        rc = jk_conn_prepare(c, sql[k], &s);
        if (!rc) rc = jk_stmt_text_arg(s, 1, keys[k], strlen(keys[k]));
        if (!rc) rc = jk_stmt_step(s, &has_row);
        while (!rc && has_row && n < LIST_MAX) {
            ids[n++] = jk_arena_strdup(rq->arena, jk_stmt_col_text(s, 0, NULL));
            rc = jk_stmt_step(s, &has_row);
        }
        if (s) jk_stmt_reset(s);
        for (size_t i = 0; !rc && i < n && json_object_array_length(arr) < LIST_MAX; i++) {
            struct jk_rx_presc p;
            const char *why;
            if ((rc = jk_rx_flow_get(c, rq->arena, ids[i], &p))) break;
            if (!g->is_off && jk_rx_flow_may(rules(), &a, &p, JK_RX_READ, &why)) continue;
            jk_api_note_patient(rq, g, p.patient_id);
            json_object_array_add(arr, presc_json(rq, &p));
        }
    }
    if (rc) {
        json_object_put(out);
        return rc;
    }
    return send_json(rq, 200, out);
}

/* ---- changes: checks on the request thread, the change in one transaction ---- */

enum op { OP_REVIEW, OP_CHOOSE, OP_REDEEM, OP_DISPENSE, OP_DELIVER, OP_CANCEL };

static const char *const actions[] = {"rx-review",   "rx-choose",   "rx-redeem",
                                      "rx-dispense", "rx-delivery", "rx-cancel"};

struct job {
    struct jk_http_req *rq;
    struct jk_api_guard *g;
    enum op op;
    struct jk_rx_call k;
    struct jk_rx_actor a;
    const char *id, *pharmacy, *mode, *address, *code, *status, *carrier, *waybill, *reason;
    const char *dispenser;
    struct jk_rx_decision dec;
    struct jk_rx_presc out;
    struct jk_rx_delivery dout;
    char the_code[JK_RX_CODE_DIGITS + 1];
    jk_rc rc;
};

static jk_rc job_tx(jk_conn *c, void *arg)
{
    struct job *j = arg;
    jk_rc rc;
    jk_diag_init(j->k.d, j->k.a); /* a retried transaction starts over */
    switch (j->op) {
    case OP_REVIEW: rc = jk_rx_flow_review(c, &j->k, j->id, &j->dec, &j->out, j->the_code); break;
    case OP_CHOOSE:
        rc = jk_rx_flow_choose(c, &j->k, j->id, j->pharmacy, j->mode, j->address, &j->out);
        break;
    case OP_REDEEM: rc = jk_rx_flow_redeem(c, &j->k, j->code, j->pharmacy, &j->out); break;
    case OP_DISPENSE:
        rc = jk_rx_flow_dispense(c, &j->k, j->id, j->pharmacy, j->dispenser, &j->out);
        break;
    case OP_DELIVER:
        rc = jk_rx_flow_deliver(c, &j->k, j->id, j->pharmacy, j->status, j->carrier, j->waybill,
                                &j->dout);
        if (!rc) rc = jk_rx_flow_get(c, j->k.a, j->id, &j->out);
        break;
    default: rc = jk_rx_flow_cancel(c, &j->k, j->id, j->reason, &j->out); break;
    }
    const struct jk_audit *au = jk_api_app(j->rq)->audit;
    if (rc || j->g->is_off || !au) return rc;
    struct jk_audit_rec r = j->g->recs[0];
    r.action = actions[j->op];
    r.res_type = "prescription"; /* ours, not a FHIR type */
    r.res_id = j->out.id;
    r.patient_id = j->out.patient_id;
    r.outcome = JK_OK;
    if ((rc = jk_audit_append(au, c, &r, NULL))) return rc;
    j->g->is_recorded = 1;
    return JK_OK;
}

static void job_done(void *arg, jk_rc rc)
{
    struct job *j = arg;
    j->rc = rc;
    if (rc) j->g->is_recorded = 0; /* rolled back: on_ready records the refusal */
    jk_http_wake(j->rq);
}

static jk_rc job_finish(struct jk_http_req *rq)
{
    struct job *j = rq->state;
    struct json_object *o = NULL;
    if (j->rc) return j->rc;
    jk_api_note_patient(rq, j->g, j->out.patient_id);
    jk_authz_touch(); /* new MedicationRequest versions, MedicationDispense, Provenance */
    jk_rc rc = detail_json(rq, j->g, &j->a, &j->out, &o);
    if (rc) return rc;
    if (j->op == OP_REVIEW && j->dec.is_approve && j->g->is_off) add_s(o, "code", j->the_code);
    return send_json(rq, 200, o);
}

static jk_rc begin(struct jk_http_req *rq, enum op op, struct json_object **body, struct job **out)
{
    struct jk_api_guard *g;
    *body = NULL;
    if (!rules()) return JK_EINTERNAL;
    jk_rc rc = jk_api_guard(rq, actions[op], &g);
    if (rc) return rc;
    struct job *j = jk_arena_zalloc(rq->arena, sizeof *j);
    if (!j) return JK_ENOMEM;
    j->rq = rq;
    j->g = g;
    j->op = op;
    j->k = (struct jk_rx_call){rq->arena, &rq->diag, jk_time_now_ms(), rules(), jk_rx_flow_keys()};
    if (!g->is_off) {
        g->recs[0].res_type = "prescription";
        if ((rc = actor_of(rq, g, &j->a))) return rc;
    }
    *out = j;
    return body_object(rq, body);
}

static jk_rc submit(struct jk_http_req *rq, struct job *j)
{
    rq->state = j;
    jk_http_defer(rq, job_finish);
    jk_store_tx_async(jk_api_app(rq)->db, job_tx, j, job_done, j);
    return JK_OK;
}

/* The stored prescription of the path and whether the actor may do act on it. */
static jk_rc load_for(struct jk_http_req *rq, struct job *j, enum jk_rx_act act)
{
    struct jk_rx_presc p;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    jk_rc rc = path_id(rq, &j->id);
    if (rc) return rc;
    if (!c) return JK_EDB;
    if (!j->g->is_off) j->g->recs[0].res_id = j->id;
    rc = jk_rx_flow_get(c, rq->arena, j->id, &p);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(&rq->diag, j->g->is_off ? JK_ENOTFOUND : JK_EFORBIDDEN,
                           j->g->is_off ? "not-found" : "forbidden", NULL,
                           "prescription %s: not found, or not yours", j->id);
    if (!rc) rc = may(rq, j->g, &j->a, &p, act);
    return rc;
}

/* The pharmacy the caller works at: a pharmacist of a pharmacy Organization (dispense.roles). */
static jk_rc pharmacy_of_caller(struct jk_http_req *rq, struct job *j, struct json_object *body)
{
    int ok = 0;
    j->pharmacy = own_org(rq, j->g, body);
    if (!j->g->is_off && !jk_rx_flow_role_may(rules(), "dispense", j->g->p.role)) {
        j->g->recs[0].action = "refused";
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                           "only pharmacists of a pharmacy do this (dispense.roles)");
    }
    if (!j->pharmacy)
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "pharmacy", "which pharmacy");
    jk_rc rc = is_pharmacy_org(rq, j->pharmacy, &ok);
    if (!rc && !ok) {
        if (!j->g->is_off) j->g->recs[0].action = "refused";
        return jk_diag_add(&rq->diag, j->g->is_off ? JK_EINVAL : JK_EFORBIDDEN,
                           j->g->is_off ? "value" : "forbidden", NULL,
                           "Organization/%s is not a pharmacy of the platform (pharmacy.kinds)",
                           j->pharmacy);
    }
    j->dispenser = j->g->is_off      ? "Organization/unknown"
                   : j->g->p.link[0] ? j->g->p.link
                                     : jk_arena_printf(rq->arena, "account:%s", j->g->p.username);
    return rc;
}

/* A list of reason codes. */
static jk_rc codes_of(struct jk_http_req *rq, struct json_object *body, struct jk_rx_decision *d)
{
    struct json_object *arr;
    if (!json_object_object_get_ex(body, "codes", &arr) || json_object_is_type(arr, json_type_null))
        return JK_OK;
    if (!json_object_is_type(arr, json_type_array) ||
        json_object_array_length(arr) > JK_RX_MAX_REASONS)
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "codes",
                           "codes is a list of at most %d reason codes (\"2-7\")",
                           JK_RX_MAX_REASONS);
    const char **v = jk_arena_alloc(rq->arena, (json_object_array_length(arr) + 1) * sizeof *v);
    if (!v) return JK_ENOMEM;
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        struct json_object *e = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(e, json_type_string))
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", "codes",
                               "each reason code is a string (\"2-7\")");
        v[i] = jk_arena_strdup(rq->arena, json_object_get_string(e));
    }
    d->codes = v;
    d->n_codes = json_object_array_length(arr);
    return JK_OK;
}

/* POST /api/rx/prescriptions/{id}/review {decision, codes?, text?} */
jk_rc jk_api_rx_review(struct jk_http_req *rq)
{
    struct job *j;
    struct json_object *body = NULL;
    const char *decision = NULL;
    jk_rc rc = begin(rq, OP_REVIEW, &body, &j);
    if (!rc) rc = load_for(rq, j, JK_RX_REVIEW);
    if (!rc) rc = member(rq, body, "decision", 16, &decision);
    if (!rc) rc = member(rq, body, "text", JK_RX_MAX_REVIEW_TEXT, &j->dec.text);
    if (!rc) rc = codes_of(rq, body, &j->dec);
    json_object_put(body);
    if (rc) return rc;
    if (!decision || (strcmp(decision, "approve") && strcmp(decision, "reject")))
        return jk_diag_add(&rq->diag, JK_EINVAL, decision ? "code-invalid" : "required", "decision",
                           "decision is approve or reject");
    j->dec.is_approve = !strcmp(decision, "approve");
    j->dec.reviewer = j->g->is_off ? "account:anonymous"
                      : j->g->p.link[0]
                          ? j->g->p.link
                          : jk_arena_printf(rq->arena, "account:%s", j->g->p.username);
    j->dec.reviewer_org = j->g->is_off ? NULL : j->g->p.org;
    return submit(rq, j);
}

/* POST /api/rx/prescriptions/{id}/pharmacy {pharmacy, delivery: pickup|delivery, address?} */
jk_rc jk_api_rx_choose(struct jk_http_req *rq)
{
    struct job *j;
    struct json_object *body = NULL;
    const char *pharmacy = NULL;
    int ok = 0;
    jk_rc rc = begin(rq, OP_CHOOSE, &body, &j);
    if (!rc) rc = load_for(rq, j, JK_RX_CHOOSE);
    if (!rc) rc = member(rq, body, "pharmacy", 140, &pharmacy);
    if (!rc) rc = member(rq, body, "delivery", 16, &j->mode);
    if (!rc) rc = member(rq, body, "address", JK_RX_MAX_ADDRESS, &j->address);
    json_object_put(body);
    if (rc) return rc;
    if (!pharmacy || !jk_fhir_id_ok(jk_api_ref_id(pharmacy, "Organization")))
        return jk_diag_add(&rq->diag, JK_EINVAL, pharmacy ? "value" : "required", "pharmacy",
                           "pharmacy is Organization/<id> of a pharmacy on the platform");
    if (!j->mode) j->mode = "pickup";
    if (strcmp(j->mode, "pickup") && strcmp(j->mode, "delivery"))
        return jk_diag_add(&rq->diag, JK_EINVAL, "code-invalid", "delivery",
                           "delivery is pickup or delivery");
    j->pharmacy = jk_api_ref_id(pharmacy, "Organization");
    if ((rc = is_pharmacy_org(rq, j->pharmacy, &ok))) return rc;
    if (!ok)
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "pharmacy",
                           "Organization/%s is not a pharmacy of the platform (pharmacy.kinds)",
                           j->pharmacy);
    return submit(rq, j);
}

/* POST /api/rx/redeem {code} */
jk_rc jk_api_rx_redeem(struct jk_http_req *rq)
{
    struct job *j;
    struct json_object *body = NULL;
    jk_rc rc = begin(rq, OP_REDEEM, &body, &j);
    if (!rc) rc = member(rq, body, "code", 40, &j->code);
    if (!rc) rc = pharmacy_of_caller(rq, j, body);
    json_object_put(body);
    if (rc) return rc;
    if (!j->code) return jk_diag_add(&rq->diag, JK_EINVAL, "required", "code", "the code");
    /* codes are short: guessing is slowed like a login */
    int wait_s = j->g->is_off ? 0 : jk_api_rate_limit(rq, JK_RATE_EXPENSIVE, j->g->p.username);
    if (wait_s) return jk_api_send_throttled(rq, wait_s);
    return submit(rq, j);
}

/* POST /api/rx/prescriptions/{id}/dispense */
jk_rc jk_api_rx_dispense(struct jk_http_req *rq)
{
    struct job *j;
    struct json_object *body = NULL;
    jk_rc rc = begin(rq, OP_DISPENSE, &body, &j);
    if (!rc) rc = pharmacy_of_caller(rq, j, body);
    if (!rc) rc = load_for(rq, j, JK_RX_DISPENSE);
    json_object_put(body);
    return rc ? rc : submit(rq, j);
}

/* POST /api/rx/prescriptions/{id}/delivery {status, carrier?, waybill?} */
jk_rc jk_api_rx_delivery(struct jk_http_req *rq)
{
    struct job *j;
    struct json_object *body = NULL;
    jk_rc rc = begin(rq, OP_DELIVER, &body, &j);
    if (!rc) rc = pharmacy_of_caller(rq, j, body);
    if (!rc) rc = load_for(rq, j, JK_RX_DISPENSE);
    if (!rc) rc = member(rq, body, "status", 16, &j->status);
    if (!rc) rc = member(rq, body, "carrier", 64, &j->carrier);
    if (!rc) rc = member(rq, body, "waybill", 64, &j->waybill);
    json_object_put(body);
    if (rc) return rc;
    if (!j->status)
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "status",
                           "status: accepted, packed, shipped, delivered or signed");
    return submit(rq, j);
}

/* POST /api/rx/prescriptions/{id}/cancel {reason?} */
jk_rc jk_api_rx_cancel(struct jk_http_req *rq)
{
    struct job *j;
    struct json_object *body = NULL;
    jk_rc rc = begin(rq, OP_CANCEL, &body, &j);
    if (!rc) rc = load_for(rq, j, JK_RX_CANCEL);
    if (!rc) rc = member(rq, body, "reason", MAX_REASON_LEN, &j->reason);
    json_object_put(body);
    return rc ? rc : submit(rq, j);
}

/* ---- supervision ---- */

/* from/to (local dates YYYY-MM-DD, to inclusive; default today) as [from_ms, to_ms). */
static jk_rc day_range(struct jk_http_req *rq, int64_t *from_ms, int64_t *to_ms)
{
    const char *from = jk_http_query_get(rq, "from"), *to = jk_http_query_get(rq, "to");
    int64_t off = (int64_t)jk_rx_flow_utc_offset_min(rules()) * 60000, day = 86400000;
    int64_t a = 0, b = 0;
    if (!from) {
        int64_t now = jk_time_now_ms() + off;
        a = now - (now % day + day) % day - off;
    } else if (strlen(from) != 10 || jk_time_parse_iso(from, 10, &a)) {
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "from", "from is a date YYYY-MM-DD");
    } else {
        a -= off;
    }
    if (!to) {
        b = a;
    } else if (strlen(to) != 10 || jk_time_parse_iso(to, 10, &b)) {
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "to", "to is a date YYYY-MM-DD");
    } else {
        b -= off;
    }
    if (b < a || b - a >= (int64_t)MAX_DAYS * day)
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "to",
                           "to is on or after from, at most %d days", MAX_DAYS);
    *from_ms = a;
    *to_ms = b + day;
    return JK_OK;
}

/* The regulator's institutions: their organisation's subtree (NULL with security off: all). */
static jk_rc supervised(struct jk_http_req *rq, struct jk_api_guard *g, const char *const **orgs,
                        size_t *n)
{
    *orgs = NULL;
    *n = 0;
    if (g->is_off) return JK_OK;
    g->recs[0].res_type = "prescription";
    if (!jk_rx_flow_role_may(rules(), "supervise", g->p.role) || !g->p.org[0]) {
        g->recs[0].action = "refused";
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                           "supervision is for regulators (supervision.roles)");
    }
    const char **list = jk_arena_alloc(rq->arena, MAX_ORGS * sizeof *list);
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!list) return JK_ENOMEM;
    if (!c) return JK_EDB;
    jk_rc rc = add_subtree(c, rq->arena, g->p.org, list, n);
    *orgs = list;
    return rc;
}

/* Review turnaround over the rows: count, mean, median and 90th percentile (ms). */
static struct json_object *turnaround(struct json_object *arr)
{
    size_t n = 0, len = json_object_array_length(arr);
    int64_t *v = calloc(len + 1, sizeof *v), sum = 0;
    struct json_object *o = json_object_new_object(), *t;
    for (size_t i = 0; v && i < len; i++)
        if (json_object_object_get_ex(json_object_array_get_idx(arr, i), "turnaroundMs", &t))
            sum += v[n++] = json_object_get_int64(t);
    for (size_t i = 1; v && i < n; i++) /* insertion sort: a day's reviews */
        for (size_t k = i; k > 0 && v[k] < v[k - 1]; k--) {
            int64_t x = v[k];
            v[k] = v[k - 1];
            v[k - 1] = x;
        }
    json_object_object_add(o, "reviewed", json_object_new_int64((int64_t)n));
    if (n) {
        json_object_object_add(o, "meanMs", json_object_new_int64(sum / (int64_t)n));
        json_object_object_add(o, "medianMs", json_object_new_int64(v[n / 2]));
        json_object_object_add(o, "p90Ms",
                               json_object_new_int64(v[(n * 9) / 10 < n ? (n * 9) / 10 : n - 1]));
    }
    free(v);
    return o;
}

static jk_rc supervision(struct jk_http_req *rq, const char *kind)
{
    struct jk_api_guard *g;
    const char *const *orgs;
    size_t n_orgs;
    int64_t from_ms = 0, to_ms = 0;
    int more = 0;
    jk_rc rc = jk_api_guard(rq, "supervision-read", &g);
    if (rc) return rc;
    if (!rules()) return JK_EINTERNAL;
    if ((rc = supervised(rq, g, &orgs, &n_orgs)) || (rc = day_range(rq, &from_ms, &to_ms)))
        return rc;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    struct json_object *out = json_object_new_object(), *arr = json_object_new_array();
    rc = jk_rx_supervision_rows(c, rq->arena, kind, from_ms, to_ms, orgs, n_orgs, SUPERVISE_MAX,
                                arr, &more);
    if (rc) {
        json_object_put(arr);
        json_object_put(out);
        return rc;
    }
    add_time(out, "from", from_ms);
    add_time(out, "to", to_ms);
    json_object_object_add(out, "total",
                           json_object_new_int64((int64_t)json_object_array_length(arr)));
    if (more) json_object_object_add(out, "truncated", json_object_new_boolean(1));
    if (!strcmp(kind, "prescriptions")) json_object_object_add(out, "turnaround", turnaround(arr));
    json_object_object_add(out, kind, arr);
    return send_json(rq, 200, out);
}

/* GET /api/supervision/visits?from&to */
jk_rc jk_api_supervision_visits(struct jk_http_req *rq)
{
    return supervision(rq, "visits");
}

/* GET /api/supervision/prescriptions?from&to */
jk_rc jk_api_supervision_prescriptions(struct jk_http_req *rq)
{
    return supervision(rq, "prescriptions");
}
