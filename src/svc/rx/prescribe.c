/* prescribe.c - a prescription made in one transaction (docs/internals/rx.md): the patient's
 * facts read, the checks run, then the MedicationRequests, the doctor's signature over their
 * canonical form, its Provenance and the rx_prescription row; and the signature checked
 * again later against what is stored then. */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "auth/authz.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/diag.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "store/resource.h"
#include "svc/rx/flow.h"
#include "svc/rx/rx_int.h"

#define MAX_FACTS 64 /* allergies, active drugs read of one patient */

/* ---- reads ---- */

jk_rc jk_rx_visit_get(jk_conn *c, struct jk_arena *a, const char *id, struct jk_rx_visit *out)
{
    static const char sql[] =
        "SELECT id, patient_id, person, org, doctor, status FROM ih_visit WHERE id = ?";
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, id, strlen(id));
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && !has_row) rc = JK_ENOTFOUND;
    if (!rc) {
        *out = (struct jk_rx_visit){jk_stmt_col_dup(a, s, 0), jk_stmt_col_dup(a, s, 1),
                                    jk_stmt_col_dup(a, s, 2), jk_stmt_col_dup(a, s, 3),
                                    jk_stmt_col_dup(a, s, 4), jk_stmt_col_dup(a, s, 5)};
        if (!out->status) rc = JK_ENOMEM;
        /* the visits keep the PractitionerRole's id; a prescription names it as a reference */
        if (!rc && strncmp(out->doctor, "PractitionerRole/", 17) &&
            !(out->doctor = jk_arena_printf(a, "PractitionerRole/%s", out->doctor)))
            rc = JK_ENOMEM;
    }
    if (s) jk_stmt_reset(s);
    return rc;
}

/* Whether code (a CodeableConcept's coding[].code list member) is already in list. */
static int has(const char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], s)) return 1;
    return 0;
}

/* The codes of CodeableConcept cc (of system, or any when NULL) appended to list. */
static void add_codes(struct jk_arena *a, struct json_object *cc, const char *system,
                      const char **list, size_t *n)
{
    struct json_object *codings;
    if (!json_object_object_get_ex(cc, "coding", &codings)) return;
    for (size_t i = 0; i < json_object_array_length(codings) && *n < MAX_FACTS; i++) {
        struct json_object *cd = json_object_array_get_idx(codings, i);
        const char *code = jk_json_str(cd, "code"), *sys = jk_json_str(cd, "system");
        if (!code || (system && (!sys || strcmp(sys, system))) || has(list, *n, code)) continue;
        if ((list[*n] = jk_arena_strdup(a, code))) (*n)++;
    }
}

/* The first coding code of member key (a CodeableConcept), or NULL. */
static const char *concept_code(struct json_object *o, const char *key)
{
    struct json_object *cc, *codings;
    if (!json_object_object_get_ex(o, key, &cc) ||
        !json_object_object_get_ex(cc, "coding", &codings) || !json_object_array_length(codings))
        return NULL;
    return jk_json_str(json_object_array_get_idx(codings, 0), "code");
}

/* The current AllergyIntolerances of Patient patient_id; the active MedicationRequests (their
 * status from the index: a patient's drafts and completed requests are not read). */
static const char sql_allergies[] =
    "SELECT v.body FROM idx_reference x JOIN resource_version v ON v.type = x.type AND v.id = x.id"
    " AND v.is_current = 1 AND v.deleted = 0 WHERE x.type = ? AND x.param = 'patient' AND"
    " x.target_type = 'Patient' AND x.target_id = ? LIMIT 500";
static const char sql_active[] =
    "SELECT v.body FROM idx_reference x JOIN idx_token t ON t.type = x.type AND t.id = x.id AND"
    " t.param = 'status' AND t.code = 'active' JOIN resource_version v ON v.type = x.type AND"
    " v.id = x.id AND v.is_current = 1 AND v.deleted = 0 WHERE x.type = ? AND x.param ="
    " 'patient' AND x.target_type = 'Patient' AND x.target_id = ? LIMIT 500";

static jk_rc read_facts(jk_conn *c, struct jk_arena *a, const char *type, const char *patient_id,
                        const char **list, size_t *n)
{
    jk_stmt *s;
    int has_row = 0;
    int is_allergy = !strcmp(type, "AllergyIntolerance");
    jk_rc rc = jk_conn_prepare(c, is_allergy ? sql_allergies : sql_active, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, type, strlen(type));
    if (!rc) rc = jk_stmt_text_arg(s, 2, patient_id, strlen(patient_id));
    if (!rc) rc = jk_stmt_step(s, &has_row);
    while (!rc && has_row) {
        struct json_object *o = json_tokener_parse(jk_stmt_col_text(s, 0, NULL));
        if (is_allergy) {
            /* recorded and not resolved, refuted or entered in error */
            const char *clinical = concept_code(o, "clinicalStatus");
            const char *verification = concept_code(o, "verificationStatus");
            struct json_object *cc;
            if ((!clinical || !strcmp(clinical, "active")) &&
                (!verification ||
                 (strcmp(verification, "refuted") && strcmp(verification, "entered-in-error"))) &&
                json_object_object_get_ex(o, "code", &cc))
                add_codes(a, cc, NULL, list, n);
        } else {
            const char *status = jk_json_str(o, "status");
            struct json_object *cc;
            if (status && !strcmp(status, "active") &&
                json_object_object_get_ex(o, "medicationCodeableConcept", &cc))
                add_codes(a, cc, JK_RX_DRUG_SYSTEM, list, n);
        }
        json_object_put(o);
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    return rc;
}

jk_rc jk_rx_patient_facts(jk_conn *c, const struct jk_rx_rules *r, struct jk_arena *a,
                          const char *patient_id, int64_t now_ms, struct jk_rx_patient *out)
{
    struct jk_res res;
    const char **allergies = jk_arena_zalloc(a, MAX_FACTS * sizeof *allergies);
    const char **active = jk_arena_zalloc(a, MAX_FACTS * sizeof *active);
    *out = (struct jk_rx_patient){.age_years = -1, .allergies = allergies, .active_drugs = active};
    if (!allergies || !active) return JK_ENOMEM;
    jk_rc rc = jk_res_read(c, a, "Patient", patient_id, &res);
    if (rc) return rc == JK_EGONE ? JK_ENOTFOUND : rc;
    struct json_object *p = json_tokener_parse(res.body);
    const char *birth = jk_json_str(p, "birthDate"), *gender = jk_json_str(p, "gender");
    if (!birth || jk_rx_age(r, birth, now_ms, &out->age_years, &out->age_days)) {
        out->age_years = -1;
        out->age_days = -1;
    }
    out->sex = !gender ? 0 : !strcmp(gender, "female") ? 'f' : !strcmp(gender, "male") ? 'm' : 0;
    json_object_put(p);
    rc = read_facts(c, a, "AllergyIntolerance", patient_id, allergies, &out->n_allergies);
    if (!rc) rc = read_facts(c, a, "MedicationRequest", patient_id, active, &out->n_active);
    return rc;
}

/* ---- the resources ---- */

static void add_s(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v));
}

static struct json_object *ref(struct jk_arena *a, const char *type, const char *id)
{
    struct json_object *r = json_object_new_object();
    add_s(r, "reference", type ? jk_arena_printf(a, "%s/%s", type, id) : id);
    return r;
}

static struct json_object *coding(const char *system, const char *code, const char *display)
{
    struct json_object *cd = json_object_new_object(), *arr = json_object_new_array();
    struct json_object *cc = json_object_new_object();
    add_s(cd, "system", system);
    add_s(cd, "code", code);
    if (display) add_s(cd, "display", display);
    json_object_array_add(arr, cd);
    json_object_object_add(cc, "coding", arr);
    return cc;
}

static struct json_object *list_of(struct json_object *v)
{
    struct json_object *arr = json_object_new_array();
    json_object_array_add(arr, v);
    return arr;
}

static struct json_object *quantity(double v, const char *unit, const char *code)
{
    struct json_object *q = json_object_new_object();
    if (v == (double)(int64_t)v)
        json_object_object_add(q, "value", json_object_new_int64((int64_t)v));
    else
        json_object_object_add(q, "value", json_object_new_double(v));
    add_s(q, "unit", unit);
    if (code) {
        add_s(q, "system", "http://unitsofmeasure.org");
        add_s(q, "code", code);
    }
    return q;
}

static struct json_object *dosage(struct jk_arena *a, const struct jk_rx_item *it,
                                  const struct jk_rx_drug *d)
{
    struct json_object *ds = json_object_new_object(), *timing = json_object_new_object();
    struct json_object *repeat = json_object_new_object(), *dr = json_object_new_object();
    add_s(ds, "text",
          jk_arena_printf(a, "%g%s，每日 %d 次，%d 天 / %g %s, %d times a day, %d days", it->dose,
                          d->unit, it->times_per_day, it->days, it->dose, d->unit,
                          it->times_per_day, it->days));
    json_object_object_add(repeat, "frequency", json_object_new_int(it->times_per_day));
    json_object_object_add(repeat, "period", json_object_new_int(1));
    add_s(repeat, "periodUnit", "d");
    json_object_object_add(timing, "repeat", repeat);
    json_object_object_add(ds, "timing", timing);
    if (it->route && *it->route) {
        struct json_object *route = json_object_new_object();
        add_s(route, "text", it->route);
        json_object_object_add(ds, "route", route);
    }
    json_object_object_add(dr, "doseQuantity", quantity(it->dose, d->unit, NULL));
    json_object_object_add(ds, "doseAndRate", list_of(dr));
    return list_of(ds);
}

static struct json_object *request_new(const struct jk_rx_new *x, size_t i,
                                       const struct jk_rx_drug *d, const char *now,
                                       const char *until)
{
    const struct jk_rx_item *it = &x->items[i];
    struct jk_arena *a = x->a;
    struct json_object *m = json_object_new_object(), *gid = json_object_new_object();
    struct json_object *disp = json_object_new_object(), *period = json_object_new_object();
    struct json_object *med = coding(JK_RX_DRUG_SYSTEM, d->code, d->name);
    add_s(m, "resourceType", "MedicationRequest");
    add_s(m, "status", "draft");
    add_s(m, "intent", "order");
    json_object_object_add(
        m, "category",
        list_of(coding("http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                       "outpatient", "Outpatient")));
    add_s(med, "text", jk_arena_printf(a, "%s %s", d->name, d->package));
    json_object_object_add(m, "medicationCodeableConcept", med);
    json_object_object_add(m, "subject", ref(a, "Patient", x->visit->patient_id));
    json_object_object_add(m, "encounter", ref(a, "Encounter", x->visit->id));
    add_s(m, "authoredOn", now);
    json_object_object_add(m, "requester", ref(a, NULL, x->visit->doctor));
    add_s(gid, "system", JK_RX_SYSTEM);
    add_s(gid, "value", x->id);
    json_object_object_add(m, "groupIdentifier", gid);
    json_object_object_add(
        m, "courseOfTherapyType",
        coding("http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
               x->long_term && *x->long_term ? "continuous" : "acute", NULL));
    if (x->long_term && *x->long_term) {
        struct json_object *note = json_object_new_object();
        add_s(note, "text",
              jk_arena_printf(a, "长期处方理由 / long-term reason: %s", x->long_term));
        json_object_object_add(m, "note", list_of(note));
    }
    json_object_object_add(m, "dosageInstruction", dosage(a, it, d));
    add_s(period, "start", now);
    add_s(period, "end", until);
    json_object_object_add(disp, "validityPeriod", period);
    json_object_object_add(disp, "quantity", quantity(it->quantity, d->package, NULL));
    json_object_object_add(disp, "expectedSupplyDuration", quantity(it->days, "d", "d"));
    json_object_object_add(m, "dispenseRequest", disp);
    return m;
}

static struct json_object *provenance_new(const struct jk_rx_new *x, const char *now)
{
    struct jk_arena *a = x->a;
    struct json_object *p = json_object_new_object(), *targets = json_object_new_array();
    struct json_object *agent = json_object_new_object(), *sig = json_object_new_object();
    struct json_object *sig_type = json_object_new_object();
    add_s(p, "resourceType", "Provenance");
    for (size_t i = 0; i < x->n; i++)
        json_object_array_add(targets, ref(a, "MedicationRequest", x->request_ids[i]));
    json_object_object_add(p, "target", targets);
    add_s(p, "recorded", now);
    json_object_object_add(
        p, "activity",
        coding("http://terminology.hl7.org/CodeSystem/v3-DataOperation", "CREATE", "create"));
    json_object_object_add(
        agent, "type",
        coding("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "author",
               "Author"));
    json_object_object_add(agent, "who", ref(a, NULL, x->visit->doctor));
    json_object_object_add(p, "agent", list_of(agent));
    add_s(sig_type, "system", "urn:iso-astm:E1762-95:2013");
    add_s(sig_type, "code", "1.2.840.10065.1.12.1.1");
    add_s(sig_type, "display", "Author's Signature");
    json_object_object_add(sig, "type", list_of(sig_type));
    add_s(sig, "when", now);
    json_object_object_add(sig, "who", ref(a, NULL, x->visit->doctor));
    add_s(sig, "sigFormat", "application/sm2-signature");
    add_s(sig, "data", x->signature);
    json_object_object_add(p, "signature", list_of(sig));
    return p;
}

/* Writes res as type/id (new), held by the visit's institution. */
static jk_rc write_new(jk_conn *c, const struct jk_rx_new *x, struct json_object *res,
                       const char *type, const char *id)
{
    struct jk_fhir_write w = {.kind = JK_FHIR_UPDATE,
                              .type = type,
                              .id = id,
                              .res = res,
                              .arena = x->a,
                              .diag = x->d,
                              .now_ms = x->now_ms};
    jk_rc rc = jk_fhir_write_prepare(&w);
    if (!rc) rc = jk_fhir_write_tx(c, &w);
    if (!rc)
        rc = jk_authz_set_holder(c, type, id,
                                 jk_arena_printf(x->a, "Organization/%s", x->visit->org));
    return rc;
}

/* ---- the checks' outcome ---- */

/* Each refusal as an issue naming the item and carrying its code. */
static jk_rc refusals(const struct jk_rx_new *x)
{
    jk_rc rc = JK_OK;
    for (size_t i = 0; i < x->n_findings; i++) {
        const struct jk_rx_finding *f = &x->findings[i];
        if (f->severity != JK_RX_REFUSE) continue;
        const char *expr = f->item < 0 ? "items" : jk_arena_printf(x->a, "items[%d]", f->item);
        rc = jk_diag_add(x->d, JK_ERULE, "business-rule", expr, "%s", f->message);
        if (x->d->tail) {
            x->d->tail->detail_system = JK_RX_CHECK_SYSTEM;
            x->d->tail->detail_code = f->code;
        }
    }
    return rc;
}

/* The findings as stored for the pharmacist: code, severity, item and the message in both
 * languages. */
static jk_rc warnings_json(const struct jk_rx_new *x, const struct jk_rx_patient *p,
                           const char **out)
{
    struct jk_rx_finding *other;
    size_t n_other;
    jk_rc rc = jk_rx_check(x->rules, x->visit->org, x->items, x->n, p, x->long_term, !x->is_en,
                           x->a, &other, &n_other);
    if (rc) return rc;
    struct json_object *arr = json_object_new_array();
    for (size_t i = 0; i < x->n_findings && i < n_other; i++) {
        const struct jk_rx_finding *f = &x->findings[i];
        struct json_object *o = json_object_new_object();
        add_s(o, "code", f->code);
        add_s(o, "severity", jk_rx_severity_name(f->severity));
        json_object_object_add(o, "item", json_object_new_int(f->item));
        add_s(o, "message", x->is_en ? other[i].message : f->message);
        add_s(o, "messageEn", x->is_en ? f->message : other[i].message);
        json_object_array_add(arr, o);
    }
    size_t len;
    *out = jk_json_text(arr, x->a, &len);
    json_object_put(arr);
    return *out ? JK_OK : JK_ENOMEM;
}

/* ---- the transaction ---- */

static jk_rc insert_row(jk_conn *c, const struct jk_rx_new *x, const char *warnings)
{
    static const char sql[] =
        "INSERT INTO rx_prescription (id, visit_id, patient_id, person, doctor, org, status,"
        " created_ms, digest, signature, warnings, valid_until_ms, amount_fen) VALUES (?, ?, ?,"
        " ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)";
    const struct jk_rx_visit *v = x->visit;
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, x->id, strlen(x->id));
    if (!rc) rc = jk_stmt_text_arg(s, 2, v->id, strlen(v->id));
    if (!rc) rc = jk_stmt_text_arg(s, 3, v->patient_id, strlen(v->patient_id));
    if (!rc) rc = jk_stmt_text_arg(s, 4, v->person, strlen(v->person));
    if (!rc) rc = jk_stmt_text_arg(s, 5, v->doctor, strlen(v->doctor));
    if (!rc) rc = jk_stmt_text_arg(s, 6, v->org, strlen(v->org));
    if (!rc) rc = jk_stmt_int_arg(s, 7, x->now_ms);
    if (!rc) rc = jk_stmt_text_arg(s, 8, x->digest, strlen(x->digest));
    if (!rc) rc = jk_stmt_text_arg(s, 9, x->signature, strlen(x->signature));
    if (!rc) rc = jk_stmt_text_arg(s, 10, warnings, strlen(warnings));
    if (!rc) rc = jk_stmt_int_arg(s, 11, x->valid_until_ms);
    if (!rc) rc = jk_stmt_int_arg(s, 12, x->amount_fen);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (s) jk_stmt_reset(s);
    return rc;
}

/* The visit again, inside the transaction: it must still be open. */
static jk_rc visit_still_open(jk_conn *c, const struct jk_rx_new *x)
{
    struct jk_rx_visit now;
    jk_rc rc = jk_rx_visit_get(c, x->a, x->visit->id, &now);
    if (rc == JK_ENOTFOUND || (!rc && strcmp(now.status, "open")))
        return jk_diag_add_text(x->d, JK_ECONFLICT, "conflict", "visit", "问诊已结束，不能再开处方",
                                "the visit has ended: no prescription");
    return rc;
}

/* Writes the MedicationRequests, returning them parsed back as stored (for the canonical
 * form) in reqs. */
static jk_rc write_requests(jk_conn *c, struct jk_rx_new *x, struct json_object **reqs)
{
    char now[32], until[32];
    jk_time_iso(x->now_ms, now, sizeof now);
    jk_time_iso(x->valid_until_ms, until, sizeof until);
    jk_rc rc = JK_OK;
    for (size_t i = 0; !rc && i < x->n; i++) {
        const struct jk_rx_drug *d = jk_rx_drug(x->rules, x->visit->org, x->items[i].drug_code);
        x->amount_fen += d->price_fen * x->items[i].quantity;
        reqs[i] = request_new(x, i, d, now, until);
        rc = write_new(c, x, reqs[i], "MedicationRequest", x->request_ids[i]);
    }
    return rc;
}

jk_rc jk_rx_create(jk_conn *c, struct jk_rx_new *x)
{
    struct jk_rx_patient p;
    const char *warnings = NULL, *text = NULL;
    size_t len = 0;
    char now[32];
    jk_rc rc = visit_still_open(c, x);
    if (!rc) rc = jk_rx_patient_facts(c, x->rules, x->a, x->visit->patient_id, x->now_ms, &p);
    if (!rc)
        rc = jk_rx_check(x->rules, x->visit->org, x->items, x->n, &p, x->long_term, x->is_en, x->a,
                         &x->findings, &x->n_findings);
    if (rc) return rc;
    if ((rc = refusals(x))) return rc;
    x->id = jk_fhir_new_id(x->a);
    x->request_ids = jk_arena_zalloc(x->a, x->n * sizeof *x->request_ids);
    struct json_object **reqs = jk_arena_zalloc(x->a, x->n * sizeof *reqs);
    if (!x->id || !x->request_ids || !reqs) return JK_ENOMEM;
    for (size_t i = 0; i < x->n; i++)
        if (!(x->request_ids[i] = jk_arena_printf(x->a, "%s-%zu", x->id, i + 1))) return JK_ENOMEM;
    x->valid_until_ms = jk_rx_valid_until(x->rules, x->now_ms);
    x->amount_fen = 0;
    rc = write_requests(c, x, reqs);
    if (!rc) rc = jk_rx_canonical(reqs, x->n, x->a, &text, &len);
    for (size_t i = 0; i < x->n; i++)
        json_object_put(reqs[i]);
    if (!rc) rc = jk_rx_sign(c, x->visit->doctor, text, len, x->a, &x->digest, &x->signature);
    if (rc) return rc;
    struct json_object *prov = provenance_new(x, jk_time_iso(x->now_ms, now, sizeof now));
    rc = write_new(c, x, prov, "Provenance", x->id);
    json_object_put(prov);
    if (!rc) rc = warnings_json(x, &p, &warnings);
    if (!rc) rc = insert_row(c, x, warnings);
    struct jk_rx_call k = {x->a, x->d, x->now_ms, jk_rx_flow_rules(), NULL};
    if (!rc) rc = jk_rx_flow_summarize(c, &k, x->id); /* what the review queue shows */
    return rc;
}

/* ---- the signature checked again ---- */

static jk_rc prescription_row(jk_conn *c, struct jk_arena *a, const char *id, const char **doctor,
                              const char **signature, const char **digest, const char **patient)
{
    static const char sql[] =
        "SELECT doctor, signature, digest, patient_id FROM rx_prescription WHERE id = ?";
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, id, strlen(id));
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && !has_row) rc = JK_ENOTFOUND;
    if (!rc) {
        *doctor = jk_stmt_col_dup(a, s, 0);
        *signature = jk_stmt_col_dup(a, s, 1);
        *digest = jk_stmt_col_dup(a, s, 2);
        if (!(*patient = jk_stmt_col_dup(a, s, 3))) rc = JK_ENOMEM;
    }
    if (s) jk_stmt_reset(s);
    return rc;
}

/* The MedicationRequests the Provenance of prescription id signed, parsed, in order; their
 * count in *n. *why when they cannot all be read. */
static jk_rc signed_requests(jk_conn *c, struct jk_arena *a, const char *id,
                             struct json_object ***out, size_t *n, const char **why)
{
    struct jk_res r;
    struct json_object *prov, *targets;
    *n = 0;
    jk_rc rc = jk_res_read(c, a, "Provenance", id, &r);
    if (rc == JK_ENOTFOUND || rc == JK_EGONE) {
        *why = "the Provenance of the signature is gone";
        return JK_OK;
    }
    if (rc) return rc;
    if (!(prov = json_tokener_parse(r.body))) return JK_EDB;
    size_t m = json_object_object_get_ex(prov, "target", &targets) &&
                       json_object_is_type(targets, json_type_array)
                   ? json_object_array_length(targets)
                   : 0;
    *out = jk_arena_zalloc(a, (m + 1) * sizeof **out);
    for (size_t i = 0; *out && i < m && !*why && !rc; i++) {
        const char *want = jk_arena_printf(a, "MedicationRequest/%s-%zu", id, i + 1);
        const char *got = jk_json_str(json_object_array_get_idx(targets, i), "reference");
        if (!got || !want || strcmp(got, want)) {
            *why = "the Provenance of the signature was changed";
            break;
        }
        rc = jk_res_read(c, a, "MedicationRequest", want + 18, &r);
        if (rc == JK_ENOTFOUND || rc == JK_EGONE) {
            rc = JK_OK;
            *why = "a signed MedicationRequest is gone";
        } else if (!rc && !((*out)[(*n)++] = json_tokener_parse(r.body))) {
            rc = JK_EDB;
        }
    }
    json_object_put(prov);
    if (!*out) return JK_ENOMEM;
    if (!rc && !m && !*why) *why = "the Provenance of the signature names no MedicationRequest";
    return rc;
}

jk_rc jk_rx_verify_prescription(jk_conn *c, struct jk_arena *a, const char *id, int *is_valid,
                                const char **reason, const char **patient_id)
{
    const char *doctor, *signature, *digest, *text = NULL, *why = NULL;
    struct json_object **reqs = NULL;
    size_t n = 0, len = 0;
    unsigned char d[JK_SM3_BYTES];
    char hex[2 * JK_SM3_BYTES + 1];
    *is_valid = 0;
    *reason = NULL;
    jk_rc rc = prescription_row(c, a, id, &doctor, &signature, &digest, patient_id);
    if (!rc) rc = signed_requests(c, a, id, &reqs, &n, &why);
    if (!rc && !why) rc = jk_rx_canonical(reqs, n, a, &text, &len);
    for (size_t i = 0; reqs && i < n; i++)
        json_object_put(reqs[i]);
    if (rc || why) {
        *reason = why;
        return rc;
    }
    if ((rc = jk_crypto_sm3(text, len, d))) return rc;
    rc = jk_rx_verify(c, doctor, text, len, signature);
    if (rc == JK_EINVAL || rc == JK_ENOTFOUND) {
        *reason = rc == JK_ENOTFOUND ? "the doctor's signing key is gone"
                  : strcmp(jk_crypto_hex(d, sizeof d, hex), digest)
                      ? "the signed MedicationRequests were changed after signing"
                      : "the signature does not match the doctor's key";
        return JK_OK;
    }
    if (!rc) *is_valid = 1;
    return rc;
}
