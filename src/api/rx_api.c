/* rx_api.c - prescribing over HTTP (docs/api.md "Internet hospital", docs/internals/rx.md):
 * the checks of a prescription with nothing written, the signed prescription made by the
 * doctor of an open visit in one transaction with its audit record, and anyone's check of a
 * prescription's signature against what is stored now. */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "api/api_int.h"
#include "auth/account.h"
#include "core/arena.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "svc/rx/rx.h"

#define RX_JSON       "application/json; charset=utf-8"
#define MAX_DRUG_CODE 32
#define MAX_ROUTE     64
#define MAX_REASON    500
#define MAX_TIMES_DAY 24
#define MAX_DAYS      366
#define MAX_QUANTITY  1000
#define MAX_DOSE      1e7

/* A prescription as the request gives it. */
struct rx_req {
    struct jk_rx_visit visit;
    struct jk_rx_item items[JK_RX_MAX_ITEMS];
    size_t n;
    const char *long_term;
};

struct job {
    struct jk_http_req *rq;
    struct jk_api_guard *g;
    struct rx_req req;
    struct jk_rx_new x;
    jk_rc rc;
};

static const struct jk_rx_rules *rules(void)
{
    return jk_rx_rules();
}

/* ---- the body ---- */

static jk_rc bad(struct jk_http_req *rq, const char *expr, const char *what)
{
    return jk_diag_add(&rq->diag, JK_EINVAL, "value", expr, "%s %s", expr, what);
}

static jk_rc known_members(struct jk_http_req *rq, struct json_object *o, const char *expr,
                           const char *const *known)
{
    json_object_object_foreach(o, key, val)
    {
        (void)val;
        int is_known = 0;
        for (size_t i = 0; known[i]; i++)
            is_known |= !strcmp(known[i], key);
        if (!is_known)
            return jk_diag_add(&rq->diag, JK_EINVAL, "structure", expr,
                               "%s has an unknown member '%s'", expr, key);
    }
    return JK_OK;
}

/* Member key of o as a whole number from min to max into *out. */
static jk_rc int_member(struct jk_http_req *rq, struct json_object *o, const char *key,
                        const char *expr, int min, int max, int *out)
{
    struct json_object *v;
    const char *e = jk_arena_printf(rq->arena, "%s.%s", expr, key);
    if (!json_object_object_get_ex(o, key, &v))
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", e, "%s is required", e);
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < min ||
        json_object_get_int64(v) > max)
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", e,
                           "%s must be a whole number from %d to %d", e, min, max);
    *out = (int)json_object_get_int64(v);
    return JK_OK;
}

/* Member key of o as text of 1 to max bytes, copied into the arena; NULL when absent and not
 * required. */
static jk_rc str_member(struct jk_http_req *rq, struct json_object *o, const char *key,
                        const char *expr, size_t max, int is_required, const char **out)
{
    struct json_object *v;
    const char *e = expr ? jk_arena_printf(rq->arena, "%s.%s", expr, key) : key;
    *out = NULL;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
        if (!is_required) return JK_OK;
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", e, "%s is required", e);
    }
    size_t n = json_object_is_type(v, json_type_string) ? (size_t)json_object_get_string_len(v) : 0;
    if (!n || n > max)
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", e, "%s must be text of 1 to %zu bytes", e,
                           max);
    *out = jk_arena_strndup(rq->arena, json_object_get_string(v), n);
    return *out ? JK_OK : JK_ENOMEM;
}

static jk_rc read_item(struct jk_http_req *rq, struct json_object *o, size_t i,
                       struct jk_rx_item *it)
{
    static const char *const known[] = {"drug",     "dose",  "timesPerDay", "days",
                                        "quantity", "route", NULL};
    const char *expr = jk_arena_printf(rq->arena, "items[%zu]", i);
    struct json_object *dose;
    if (!json_object_is_type(o, json_type_object)) return bad(rq, expr, "must be an object");
    jk_rc rc = known_members(rq, o, expr, known);
    if (!rc) rc = str_member(rq, o, "drug", expr, MAX_DRUG_CODE, 1, &it->drug_code);
    if (rc) return rc;
    const char *e = jk_arena_printf(rq->arena, "%s.dose", expr);
    if (!json_object_object_get_ex(o, "dose", &dose))
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", e, "%s is required", e);
    if ((!json_object_is_type(dose, json_type_int) &&
         !json_object_is_type(dose, json_type_double)) ||
        !(json_object_get_double(dose) > 0) || json_object_get_double(dose) > MAX_DOSE)
        return bad(rq, e, "must be a number above 0 (in the drug's unit)");
    it->dose = json_object_get_double(dose);
    rc = int_member(rq, o, "timesPerDay", expr, 1, MAX_TIMES_DAY, &it->times_per_day);
    if (!rc) rc = int_member(rq, o, "days", expr, 1, MAX_DAYS, &it->days);
    if (!rc) rc = int_member(rq, o, "quantity", expr, 1, MAX_QUANTITY, &it->quantity);
    if (!rc) rc = str_member(rq, o, "route", expr, MAX_ROUTE, 0, &it->route);
    return rc;
}

/* The body {visit, items, longTermReason?} into req, the visit read and checked: it exists,
 * it is open, and the principal is its doctor. */
static jk_rc read_body(struct jk_http_req *rq, struct jk_api_guard *g, struct rx_req *req)
{
    static const char *const known[] = {"visit", "items", "longTermReason", NULL};
    struct json_object *o = NULL, *items;
    const char *visit = NULL;
    jk_rc rc = jk_json_parse(rq->body, rq->body_len, &jk_api_app(rq)->json_limits, &rq->diag, &o);
    if (rc) return rc;
    if (!json_object_is_type(o, json_type_object))
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "structure", NULL, "the body must be an object");
    if (!rc) rc = known_members(rq, o, "body", known);
    if (!rc) rc = str_member(rq, o, "visit", NULL, 200, 1, &visit);
    if (!rc) rc = str_member(rq, o, "longTermReason", NULL, MAX_REASON, 0, &req->long_term);
    if (!rc && (!json_object_object_get_ex(o, "items", &items) ||
                !json_object_is_type(items, json_type_array) || !json_object_array_length(items) ||
                json_object_array_length(items) > JK_RX_MAX_ITEMS))
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "required", "items",
                         "items must be a list of 1 to %d drugs", JK_RX_MAX_ITEMS);
    for (size_t i = 0; !rc && i < json_object_array_length(items); i++)
        rc = read_item(rq, json_object_array_get_idx(items, i), i, &req->items[req->n++]);
    json_object_put(o);
    if (rc) return rc;
    const char *id = jk_api_ref_id(visit, "Encounter");
    if (!jk_fhir_id_ok(id)) return bad(rq, "visit", "must be a reference Encounter/<id>");
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    if (!g->is_off) {
        g->recs[0].res_type = "Encounter";
        g->recs[0].res_id = id;
    }
    rc = jk_rx_visit_get(c, rq->arena, id, &req->visit);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", "visit",
                           "there is no online visit Encounter/%s", id);
    if (rc) return rc;
    jk_api_note_patient(rq, g, req->visit.patient_id);
    /* Only the doctor of the visit prescribes (互联网诊疗监管细则: the receiving doctor in
     * person, never generated automatically). */
    if (!g->is_off && (g->p.role != JK_ROLE_DOCTOR ||
                       strcmp(jk_api_ref_id(g->p.link, "PractitionerRole"),
                              jk_api_ref_id(req->visit.doctor, "PractitionerRole")) ||
                       strncmp(g->p.link, "PractitionerRole/", 17))) {
        g->recs[0].action = "refused";
        return jk_diag_add_text(&rq->diag, JK_EFORBIDDEN, "forbidden", "visit",
                                "只有本次问诊的医师可以开具处方",
                                "only the doctor of the visit prescribes");
    }
    if (strcmp(req->visit.status, "open"))
        return jk_diag_add_text(&rq->diag, JK_ECONFLICT, "conflict", "visit",
                                "问诊已结束，不能再开处方", "the visit has ended: no prescription");
    return JK_OK;
}

static jk_rc begin(struct jk_http_req *rq, const char *action, struct job **out)
{
    struct jk_api_guard *g;
    jk_rc rc = jk_api_guard(rq, action, &g);
    if (rc) return rc;
    if (!rules()) return JK_EINTERNAL;
    struct job *j = jk_arena_zalloc(rq->arena, sizeof *j);
    if (!j) return JK_ENOMEM;
    j->rq = rq;
    j->g = g;
    if ((rc = read_body(rq, g, &j->req))) return rc;
    *out = j;
    return JK_OK;
}

/* ---- responses ---- */

static void add_s(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v ? v : ""));
}

static struct json_object *findings_json(const struct jk_rx_finding *f, size_t n)
{
    struct json_object *arr = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        struct json_object *o = json_object_new_object();
        add_s(o, "code", f[i].code);
        add_s(o, "severity", jk_rx_severity_name(f[i].severity));
        if (f[i].item >= 0) json_object_object_add(o, "item", json_object_new_int(f[i].item));
        add_s(o, "message", f[i].message);
        json_object_array_add(arr, o);
    }
    return arr;
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

/* ---- POST /api/rx/check ---- */

jk_rc jk_api_rx_check(struct jk_http_req *rq)
{
    struct job *j;
    jk_rc rc = begin(rq, "rx-check", &j);
    if (rc) return rc;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct jk_rx_patient p;
    struct jk_rx_finding *f;
    size_t n;
    int64_t amount = 0;
    int is_refused = 0;
    if (!c) return JK_EDB;
    rc = jk_rx_patient_facts(c, rules(), rq->arena, j->req.visit.patient_id, jk_time_now_ms(), &p);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", "visit",
                           "the visit's Patient/%s is gone", j->req.visit.patient_id);
    if (!rc)
        rc = jk_rx_check(rules(), j->req.visit.org, j->req.items, j->req.n, &p, j->req.long_term,
                         rq->diag.is_en, rq->arena, &f, &n);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++)
        is_refused |= f[i].severity == JK_RX_REFUSE;
    for (size_t i = 0; i < j->req.n; i++) {
        const struct jk_rx_drug *d =
            jk_rx_drug(rules(), j->req.visit.org, j->req.items[i].drug_code);
        if (d) amount += d->price_fen * j->req.items[i].quantity;
    }
    struct json_object *o = json_object_new_object();
    add_s(o, "visit", jk_arena_printf(rq->arena, "Encounter/%s", j->req.visit.id));
    json_object_object_add(o, "refused", json_object_new_boolean(is_refused));
    json_object_object_add(o, "amountFen", json_object_new_int64(amount));
    json_object_object_add(o, "findings", findings_json(f, n));
    return send_json(rq, 200, o);
}

/* ---- POST /api/rx/prescriptions ---- */

static jk_rc create_tx(jk_conn *c, void *arg)
{
    struct job *j = arg;
    jk_rc rc = jk_rx_create(c, &j->x);
    const struct jk_audit *au = jk_api_app(j->rq)->audit;
    if (rc || j->g->is_off || !au) return rc;
    struct jk_audit_rec r = j->g->recs[0];
    r.action = "rx-prescribe";
    r.res_type = "Provenance"; /* its id is the prescription's; it names every request */
    r.res_id = j->x.id;
    r.patient_id = j->req.visit.patient_id;
    r.outcome = JK_OK;
    if ((rc = jk_audit_append(au, c, &r, NULL))) return rc;
    j->g->is_recorded = 1;
    return JK_OK;
}

static void create_done(void *arg, jk_rc rc)
{
    struct job *j = arg;
    j->rc = rc;
    if (rc) j->g->is_recorded = 0; /* rolled back: on_ready records the refusal */
    jk_http_wake(j->rq);
}

/* 201: the prescription, its findings and its MedicationRequests as stored. */
static jk_rc create_finish(struct jk_http_req *rq)
{
    struct job *j = rq->state;
    char until[32];
    if (j->rc) return j->rc;
    /* No cached view is made again: a MedicationRequest makes no treatment relationship
     * (access.treatment_relationships), and its holder is checked at each decision. */
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    struct json_object *o = json_object_new_object(), *reqs = json_object_new_array();
    add_s(o, "prescription", j->x.id);
    add_s(o, "status", "pending");
    add_s(o, "visit", jk_arena_printf(rq->arena, "Encounter/%s", j->req.visit.id));
    add_s(o, "patient", jk_arena_printf(rq->arena, "Patient/%s", j->req.visit.patient_id));
    add_s(o, "requester", j->req.visit.doctor);
    json_object_object_add(o, "amountFen", json_object_new_int64(j->x.amount_fen));
    add_s(o, "validUntil", jk_time_iso(j->x.valid_until_ms, until, sizeof until));
    add_s(o, "digest", j->x.digest);
    add_s(o, "signature", j->x.signature);
    add_s(o, "provenance", jk_arena_printf(rq->arena, "Provenance/%s", j->x.id));
    json_object_object_add(o, "findings", findings_json(j->x.findings, j->x.n_findings));
    json_object_object_add(o, "medicationRequests", reqs);
    jk_rc rc = JK_OK;
    for (size_t i = 0; !rc && i < j->x.n; i++) {
        struct jk_res r;
        rc = jk_res_read(c, rq->arena, "MedicationRequest", j->x.request_ids[i], &r);
        struct json_object *mr = rc ? NULL : json_tokener_parse(r.body);
        if (!rc && !mr) rc = JK_EDB;
        if (!rc) json_object_array_add(reqs, mr);
    }
    if (rc) {
        json_object_put(o);
        return rc;
    }
    jk_http_add_header(rq, "Location",
                       jk_arena_printf(rq->arena, "/api/rx/prescriptions/%s", j->x.id));
    return send_json(rq, 201, o);
}

jk_rc jk_api_rx_prescribe(struct jk_http_req *rq)
{
    struct job *j;
    jk_rc rc = begin(rq, "rx-prescribe", &j);
    if (rc) return rc;
    j->x = (struct jk_rx_new){.rules = rules(),
                              .visit = &j->req.visit,
                              .items = j->req.items,
                              .n = j->req.n,
                              .long_term = j->req.long_term,
                              .is_en = rq->diag.is_en,
                              .now_ms = jk_time_now_ms(),
                              .a = rq->arena,
                              .d = &rq->diag};
    rq->state = j;
    jk_http_defer(rq, create_finish);
    jk_store_tx_async(jk_api_app(rq)->db, create_tx, j, create_done, j);
    return JK_OK;
}

/* ---- POST /fhir/R4/MedicationRequest/$verify-signature ---- */

/* The prescription id of the Parameters body: parameter prescription as valueString,
 * valueId, valueIdentifier.value or valueReference.reference. */
static jk_rc prescription_param(struct jk_http_req *rq, const char **out)
{
    struct json_object *o = NULL, *arr, *v;
    const char *id = NULL;
    *out = NULL;
    jk_rc rc = jk_json_parse(rq->body, rq->body_len, &jk_api_app(rq)->json_limits, &rq->diag, &o);
    if (rc) return rc;
    const char *t = jk_json_str(o, "resourceType");
    if (!t || strcmp(t, "Parameters") || !json_object_object_get_ex(o, "parameter", &arr) ||
        !json_object_is_type(arr, json_type_array))
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "structure", "Parameters",
                         "the body must be a Parameters resource with a parameter prescription");
    for (size_t i = 0; !rc && !id && i < json_object_array_length(arr); i++) {
        struct json_object *p = json_object_array_get_idx(arr, i);
        const char *n = jk_json_str(p, "name");
        if (!n || strcmp(n, "prescription")) continue;
        id = jk_json_str(p, "valueString");
        if (!id) id = jk_json_str(p, "valueId");
        if (!id && json_object_object_get_ex(p, "valueIdentifier", &v))
            id = jk_json_str(v, "value");
        if (!id && json_object_object_get_ex(p, "valueReference", &v))
            id = jk_api_ref_id(jk_json_str(v, "reference"), "MedicationRequest");
        if (!id) id = "";
    }
    if (!rc && !id)
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "required", "Parameters.parameter",
                         "the parameter prescription is required");
    if (!rc && !jk_fhir_id_ok(id))
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "value", "Parameters.parameter",
                         "prescription must be a prescription id");
    if (!rc && !(*out = jk_arena_strdup(rq->arena, id))) rc = JK_ENOMEM;
    json_object_put(o);
    return rc;
}

static void add_param(struct json_object *params, const char *name, const char *kind,
                      struct json_object *v)
{
    struct json_object *arr, *p = json_object_new_object();
    if (!json_object_object_get_ex(params, "parameter", &arr)) {
        arr = json_object_new_array();
        json_object_object_add(params, "parameter", arr);
    }
    add_s(p, "name", name);
    json_object_object_add(p, kind, v);
    json_object_array_add(arr, p);
}

jk_rc jk_api_rx_verify(struct jk_http_req *rq)
{
    struct jk_api_guard *g;
    const char *id, *reason = NULL, *patient = NULL;
    int is_valid = 0;
    jk_rc rc = jk_api_guard(rq, "rx-verify", &g);
    if (!rc) rc = prescription_param(rq, &id);
    if (rc) return rc;
    if (!g->is_off) {
        g->recs[0].res_type = "Provenance";
        g->recs[0].res_id = id;
    }
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    /* a MedicationRequest id "<prescription>-<n>" names its prescription too */
    rc = jk_rx_verify_prescription(c, rq->arena, id, &is_valid, &reason, &patient);
    const char *dash = strrchr(id, '-');
    if (rc == JK_ENOTFOUND && dash && dash[1] &&
        strspn(dash + 1, "0123456789") == strlen(dash + 1)) {
        id = jk_arena_strndup(rq->arena, id, (size_t)(dash - id));
        rc = jk_rx_verify_prescription(c, rq->arena, id, &is_valid, &reason, &patient);
    }
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", "Parameters.parameter",
                           "there is no prescription %s", id);
    if (rc) return rc;
    jk_api_note_patient(rq, g, patient);
    struct json_object *o = json_object_new_object();
    add_s(o, "resourceType", "Parameters");
    add_param(o, "prescription", "valueString", json_object_new_string(id));
    add_param(o, "valid", "valueBoolean", json_object_new_boolean(is_valid));
    if (!is_valid) add_param(o, "reason", "valueString", json_object_new_string(reason));
    size_t n;
    const char *t = jk_json_text(o, rq->arena, &n);
    json_object_put(o);
    if (!t) return JK_ENOMEM;
    jk_http_add_header(rq, "Cache-Control", "no-store");
    return jk_http_respond(rq, 200, JK_FHIR_JSON, t, n);
}

/* ---- GET /api/rx/formulary?org= ---- */

jk_rc jk_api_rx_formulary(struct jk_http_req *rq)
{
    enum { MAX_DRUGS = 1000 };
    struct jk_api_guard *g;
    jk_rc rc = jk_api_guard(rq, "search", &g);
    if (rc) return rc;
    if (!rules()) return JK_EINTERNAL;
    const char *org = jk_http_query_get(rq, "org");
    if (!org && !g->is_off) org = g->p.org;
    org = org && *org ? jk_api_ref_id(org, "Organization") : NULL;
    if (org && !jk_fhir_id_ok(org))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "org", "org must be Organization/<id>");
    const struct jk_rx_drug **d = jk_arena_alloc(rq->arena, MAX_DRUGS * sizeof *d);
    if (!d) return JK_ENOMEM;
    size_t n = jk_rx_formulary(rules(), org, d, MAX_DRUGS);
    struct json_object *out = json_object_new_object(), *arr = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "code", json_object_new_string(d[i]->code));
        json_object_object_add(o, "name", json_object_new_string(d[i]->name));
        if (d[i]->name_en)
            json_object_object_add(o, "nameEn", json_object_new_string(d[i]->name_en));
        if (d[i]->package)
            json_object_object_add(o, "package", json_object_new_string(d[i]->package));
        json_object_object_add(o, "form", json_object_new_string(d[i]->form));
        json_object_object_add(o, "unit", json_object_new_string(d[i]->unit));
        json_object_object_add(o, "class", json_object_new_string(d[i]->klass));
        json_object_object_add(o, "doseMin", json_object_new_double(d[i]->dose_min));
        json_object_object_add(o, "doseMax", json_object_new_double(d[i]->dose_max));
        json_object_object_add(o, "priceFen", json_object_new_int64(d[i]->price_fen));
        json_object_object_add(o, "chronic", json_object_new_boolean(d[i]->is_chronic));
        json_object_array_add(arr, o);
    }
    json_object_object_add(out, "drugs", arr);
    size_t len;
    const char *text = jk_json_text(out, rq->arena, &len);
    json_object_put(out);
    if (!text) return JK_ENOMEM;
    return jk_http_respond(rq, 200, "application/json; charset=utf-8", text, len);
}
