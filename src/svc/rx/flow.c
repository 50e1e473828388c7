/* flow.c - the prescription after its signature: review, redemption code, choice of pharmacy,
 * redemption, dispensing once, delivery orders, cancellation and expiry, each a conditional
 * update of the rx_prescription row plus the FHIR resources that follow from it
 * (docs/internals/rx.md). */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "auth/authz.h"
#include "core/arena.h"
#include "core/diag.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "store/resource.h"
#include "svc/pay/pay.h"
#include "svc/rx/flow.h"

#define MAX_REQUESTS 32 /* MedicationRequests of one prescription looked at */

/* ---- SQL helpers ---- */

/* ---- refusals ---- */

/* A refusal with the rule as a stable code, message in the request's language. */
static jk_rc refuse(const struct jk_rx_call *k, jk_rc rc, const char *rule, const char *expr,
                    const char *zh, const char *en)
{
    jk_diag_add_text(k->d, rc, rc == JK_ERULE ? "business-rule" : NULL, expr, zh, en);
    if (k->d->tail) {
        k->d->tail->detail_system = JK_RX_REFUSAL_SYSTEM;
        k->d->tail->detail_code = rule;
    }
    return rc;
}

/* Why a prescription in status st cannot be changed any more. */
static jk_rc refuse_status(const struct jk_rx_call *k, const char *st)
{
    if (!strcmp(st, "dispensed"))
        return refuse(k, JK_ECONFLICT, "dispensed", NULL, "处方已调配发药，不能再次调配或更改",
                      "the prescription has been dispensed already");
    if (!strcmp(st, "expired"))
        return refuse(k, JK_ERULE, "expired", NULL, "处方已过有效期",
                      "the prescription has expired");
    if (!strcmp(st, "cancelled"))
        return refuse(k, JK_ECONFLICT, "cancelled", NULL, "处方已取消",
                      "the prescription was cancelled");
    if (!strcmp(st, "rejected"))
        return refuse(k, JK_ECONFLICT, "rejected", NULL, "处方审核未通过",
                      "the prescription was rejected by the pharmacist");
    if (!strcmp(st, "pending"))
        return refuse(k, JK_ERULE, "not-reviewed", NULL, "处方尚未经药师审核通过，不得调配",
                      "the prescription has not been approved by a pharmacist: nothing is "
                      "dispensed before approval");
    return refuse(k, JK_ECONFLICT, "state", NULL, "处方状态不允许此操作",
                  "the prescription's state does not allow this");
}

static jk_rc refuse_expired(const struct jk_rx_call *k)
{
    return refuse(k, JK_ERULE, "expired", NULL,
                  "处方已过有效期（code.validity_days），不能取药；请重新就诊开方",
                  "the prescription's validity has ended (code.validity_days): it can no longer "
                  "be filled");
}

/* ---- references ---- */

static const char *ref_tail(const char *s)
{
    const char *slash = s ? strrchr(s, '/') : NULL;
    return slash ? slash + 1 : s;
}

int jk_rx_same_ref(const char *a, const char *b)
{
    if (!a || !b || !*a || !*b) return 0;
    const char *sa = strrchr(a, '/'), *sb = strrchr(b, '/');
    if (sa && sb && ((size_t)(sa - a) != (size_t)(sb - b) || strncmp(a, b, (size_t)(sa - a))))
        return 0; /* both typed, different types */
    return !strcmp(ref_tail(a), ref_tail(b));
}

/* ---- who may do what ---- */

int jk_rx_flow_is_patient(const struct jk_rx_actor *who, const struct jk_rx_presc *p)
{
    if (who->role != JK_ROLE_RESIDENT) return 0;
    for (size_t i = 0; i < who->n_patients; i++)
        if (jk_rx_same_ref(who->patients[i], p->patient_id)) return 1;
    return 0;
}

int jk_rx_flow_is_doctor(const struct jk_rx_actor *who, const struct jk_rx_presc *p)
{
    return who->role == JK_ROLE_DOCTOR && jk_rx_same_ref(who->link, p->doctor);
}

static int is_reviewer(const struct jk_rx_flow_rules *r, const struct jk_rx_actor *who,
                       const struct jk_rx_presc *p)
{
    if (!jk_rx_flow_role_may(r, "review", who->role)) return 0;
    for (size_t i = 0; i < who->n_review_orgs; i++)
        if (jk_rx_same_ref(who->review_orgs[i], p->org)) return 1;
    return 0;
}

static int is_pharmacy(const struct jk_rx_flow_rules *r, const struct jk_rx_actor *who,
                       const struct jk_rx_presc *p)
{
    return jk_rx_flow_role_may(r, "dispense", who->role) && p->pharmacy && *p->pharmacy &&
           jk_rx_same_ref(who->org, p->pharmacy);
}

jk_rc jk_rx_flow_may(const struct jk_rx_flow_rules *r, const struct jk_rx_actor *who,
                     const struct jk_rx_presc *p, enum jk_rx_act act, const char **why)
{
    int ok = 0;
    switch (act) {
    case JK_RX_READ:
        ok = jk_rx_flow_is_patient(who, p) || jk_rx_flow_is_doctor(who, p) ||
             is_reviewer(r, who, p) || (is_pharmacy(r, who, p) && p->presented_ms);
        *why = "only the patient, the prescribing doctor, the pharmacists who review for its "
               "institution and the pharmacy it was presented to see a prescription";
        break;
    case JK_RX_REVIEW:
        ok = is_reviewer(r, who, p);
        *why = "only pharmacists of the prescription's institution (or of a review centre of "
               "its region, review.centres) review it (review.roles)";
        break;
    case JK_RX_CHOOSE:
        ok = jk_rx_flow_is_patient(who, p);
        *why = "only the patient (or their guardian) chooses where a prescription is filled";
        break;
    case JK_RX_DISPENSE:
        ok = is_pharmacy(r, who, p) && p->presented_ms;
        *why = "only pharmacists of the pharmacy the prescription was presented to dispense it "
               "(dispense.roles)";
        break;
    case JK_RX_CANCEL:
        ok = jk_rx_flow_is_patient(who, p) || jk_rx_flow_is_doctor(who, p);
        *why = "only the patient or the prescribing doctor cancel a prescription";
        break;
    }
    if (ok) *why = NULL;
    return ok ? JK_OK : JK_EFORBIDDEN;
}

/* ---- codes ---- */

jk_rc jk_rx_flow_code(const struct jk_rx_flow_keys *k, const char *id, int64_t reviewed_ms,
                      char out[JK_RX_CODE_DIGITS + 1])
{
    unsigned char mac[JK_SM3_BYTES];
    char msg[160];
    int n = snprintf(msg, sizeof msg, "%s:%lld", id, (long long)reviewed_ms);
    if (n < 0 || (size_t)n >= sizeof msg) return JK_EINVAL;
    if (jk_crypto_hmac_sm3(k->code_prf, sizeof k->code_prf, msg, (size_t)n, mac))
        return JK_EINTERNAL;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | mac[i];
    v %= 1000000000000ULL;
    for (int i = JK_RX_CODE_DIGITS - 1; i >= 0; i--, v /= 10)
        out[i] = (char)('0' + v % 10);
    out[JK_RX_CODE_DIGITS] = '\0';
    return JK_OK;
}

jk_rc jk_rx_flow_code_key(const struct jk_rx_flow_keys *k, const char *code,
                          char out[2 * JK_SM3_BYTES + 1])
{
    char digits[JK_RX_CODE_DIGITS];
    size_t n = 0;
    unsigned char mac[JK_SM3_BYTES];
    for (const char *p = code; p && *p; p++) {
        if (*p == ' ' || *p == '-') continue;
        if (*p < '0' || *p > '9' || n == JK_RX_CODE_DIGITS) return JK_EINVAL;
        digits[n++] = *p;
    }
    if (n != JK_RX_CODE_DIGITS) return JK_EINVAL;
    if (jk_crypto_hmac_sm3(k->code_key, sizeof k->code_key, digits, n, mac)) return JK_EINTERNAL;
    jk_crypto_hex(mac, sizeof mac, out);
    return JK_OK;
}

/* ---- rows ---- */

#define PRESC_COLS                                                                                 \
    "id, visit_id, patient_id, person, doctor, org, status, warnings, summary,"                    \
    " coalesce(reviewer, ''), review_codes, review_text, coalesce(pharmacy, ''), delivery,"        \
    " coalesce(code_key, ''), created_ms, coalesce(reviewed_ms, 0), valid_until_ms,"               \
    " coalesce(presented_ms, 0), coalesce(dispensed_ms, 0), amount_fen"

static void presc_row(struct jk_arena *a, jk_stmt *s, struct jk_rx_presc *p)
{
    const char **f[] = {&p->id,       &p->visit_id, &p->patient_id,   &p->person,
                        &p->doctor,   &p->org,      &p->status,       &p->warnings,
                        &p->summary,  &p->reviewer, &p->review_codes, &p->review_text,
                        &p->pharmacy, &p->delivery, &p->code_key};
    for (int i = 0; i < 15; i++)
        *f[i] = jk_stmt_col_dup(a, s, i);
    p->created_ms = jk_stmt_col_int(s, 15);
    p->reviewed_ms = jk_stmt_col_int(s, 16);
    p->valid_until_ms = jk_stmt_col_int(s, 17);
    p->presented_ms = jk_stmt_col_int(s, 18);
    p->dispensed_ms = jk_stmt_col_int(s, 19);
    p->amount_fen = jk_stmt_col_int(s, 20);
}

jk_rc jk_rx_flow_get(jk_conn *c, struct jk_arena *a, const char *id, struct jk_rx_presc *out)
{
    static const char sql[] = "SELECT " PRESC_COLS " FROM rx_prescription WHERE id = ?";
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "t", id);
    if (!rc && !has_row) rc = JK_ENOTFOUND;
    if (!rc) presc_row(a, s, out);
    if (s) jk_stmt_reset(s);
    return rc;
}

/* The row of id, or a not-found refusal. */
static jk_rc load(jk_conn *c, const struct jk_rx_call *k, const char *id, struct jk_rx_presc *p)
{
    jk_rc rc = jk_rx_flow_get(c, k->a, id, p);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(k->d, JK_ENOTFOUND, "not-found", NULL, "there is no prescription %s",
                           id);
    return rc;
}

/* ---- addresses, sealed at rest ---- */

static const char *address_aad(const struct jk_rx_call *k, const char *id)
{
    return jk_arena_printf(k->a, "rx_delivery.address:%s", id);
}

static jk_rc seal_address(const struct jk_rx_call *k, const char *id, const char *address,
                          const char **out)
{
    size_t n = strlen(address), len;
    const char *aad = address_aad(k, id);
    unsigned char *blob = jk_arena_alloc(k->a, n + JK_SEAL_OVERHEAD);
    char *hex = jk_arena_alloc(k->a, 2 * (n + JK_SEAL_OVERHEAD) + 1);
    if (!blob || !hex || !aad) return JK_ENOMEM;
    if (!k->keys || !k->keys->keys) return JK_EINTERNAL;
    jk_rc rc = jk_crypto_seal(k->keys->keys, aad, strlen(aad), address, n, blob,
                              n + JK_SEAL_OVERHEAD, &len);
    if (rc) return rc;
    *out = jk_crypto_hex(blob, len, hex);
    return JK_OK;
}

static jk_rc open_address(struct jk_arena *a, const struct jk_rx_flow_keys *k, const char *id,
                          const char *hex, const char **out)
{
    size_t n = strlen(hex), blen, len;
    *out = "";
    if (!n) return JK_OK;
    unsigned char *blob = jk_arena_alloc(a, n / 2 + 1);
    char *pt = jk_arena_alloc(a, n / 2 + 1);
    const char *aad = jk_arena_printf(a, "rx_delivery.address:%s", id);
    if (!blob || !pt || !aad) return JK_ENOMEM;
    if (jk_crypto_unhex(hex, n, blob, n / 2 + 1, &blen) ||
        jk_crypto_open(k->keys, aad, strlen(aad), blob, blen, (unsigned char *)pt, n / 2, &len))
        return JK_EINTERNAL; /* changed in the database, or other keys */
    pt[len] = '\0';
    *out = pt;
    return JK_OK;
}

jk_rc jk_rx_flow_delivery_get(jk_conn *c, struct jk_arena *a, const struct jk_rx_flow_keys *k,
                              const char *id, struct jk_rx_delivery *out)
{
    static const char sql[] = "SELECT prescription_id, pharmacy, status, carrier, waybill,"
                              " history, address_sealed, updated_ms FROM rx_delivery"
                              " WHERE prescription_id = ?";
    jk_stmt *s;
    int has_row = 0;
    const char *sealed = "";
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "t", id);
    if (!rc && !has_row) rc = JK_ENOTFOUND;
    if (!rc) {
        out->prescription_id = jk_stmt_col_dup(a, s, 0);
        out->pharmacy = jk_stmt_col_dup(a, s, 1);
        out->status = jk_stmt_col_dup(a, s, 2);
        out->carrier = jk_stmt_col_dup(a, s, 3);
        out->waybill = jk_stmt_col_dup(a, s, 4);
        out->history = jk_stmt_col_dup(a, s, 5);
        sealed = jk_stmt_col_dup(a, s, 6);
        out->updated_ms = jk_stmt_col_int(s, 7);
        out->address = "";
    }
    if (s) jk_stmt_reset(s);
    if (!rc && k && sealed) rc = open_address(a, k, id, sealed, &out->address);
    return rc;
}

/* ---- FHIR resources ---- */

static void add_str(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v ? v : ""));
}

/* A Reference: {reference} for "Type/id", {display} for anything else ("account:x"). */
static struct json_object *reference(const char *ref)
{
    struct json_object *r = json_object_new_object();
    add_str(r, strchr(ref, '/') && strncmp(ref, "account:", 8) ? "reference" : "display", ref);
    return r;
}

static struct json_object *typed_ref(struct jk_arena *a, const char *type, const char *id)
{
    return reference(strchr(id, '/') ? id : jk_arena_printf(a, "%s/%s", type, id));
}

static struct json_object *coding(const char *system, const char *code, const char *display)
{
    struct json_object *cc = json_object_new_object(), *arr = json_object_new_array();
    struct json_object *cd = json_object_new_object();
    add_str(cd, "system", system);
    add_str(cd, "code", code);
    if (display) add_str(cd, "display", display);
    json_object_array_add(arr, cd);
    json_object_object_add(cc, "coding", arr);
    return cc;
}

/* Writes res as type/id (a new resource held by org when is_new), inside the transaction. */
static jk_rc write_res(jk_conn *c, const struct jk_rx_call *k, struct json_object *res,
                       const char *type, const char *id, int is_new, const char *org)
{
    struct jk_fhir_write w = {.kind = JK_FHIR_UPDATE,
                              .is_owner = 1,
                              .type = type,
                              .id = id,
                              .res = res,
                              .arena = k->a,
                              .diag = k->d,
                              .now_ms = k->now_ms};
    jk_rc rc = jk_fhir_write_prepare(&w);
    if (!rc) rc = jk_fhir_write_tx(c, &w);
    if (!rc && is_new && org && *org)
        rc = jk_authz_set_holder(
            c, type, id, strchr(org, '/') ? org : jk_arena_printf(k->a, "Organization/%s", org));
    return rc;
}

/* The MedicationRequests of p (with groupIdentifier prescription|p->id): found through their
 * encounter (the visit), else their subject; parsed (the caller puts each) with their ids. */
struct requests {
    struct json_object *res[MAX_REQUESTS];
    const char *ids[MAX_REQUESTS];
    size_t n;
};

static void requests_put(struct requests *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        json_object_put(rs->res[i]);
    rs->n = 0;
}

static int is_of(struct json_object *mr, const char *id)
{
    struct json_object *g;
    if (!json_object_object_get_ex(mr, "groupIdentifier", &g)) return 0;
    const char *sys = jk_json_str(g, "system"), *v = jk_json_str(g, "value");
    return sys && v && !strcmp(sys, JK_RX_GROUP_SYSTEM) && !strcmp(v, id);
}

static jk_rc requests_by(jk_conn *c, const struct jk_rx_call *k, const struct jk_rx_presc *p,
                         const char *param, const char *target_type, const char *target,
                         struct requests *rs)
{
    static const char sql[] = "SELECT DISTINCT id FROM idx_reference WHERE type ="
                              " 'MedicationRequest' AND param = ? AND target_id = ? AND"
                              " target_type = ? ORDER BY id";
    const char *ids[MAX_REQUESTS * 4];
    size_t n = 0;
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "ttt", param, ref_tail(target), target_type);
    while (!rc && has_row && n < sizeof ids / sizeof ids[0]) {
        ids[n++] = jk_stmt_col_dup(k->a, s, 0);
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    for (size_t i = 0; !rc && i < n && rs->n < MAX_REQUESTS; i++) {
        struct jk_res r;
        jk_rc rr = jk_res_read(c, k->a, "MedicationRequest", ids[i], &r);
        if (rr == JK_ENOTFOUND || rr == JK_EGONE) continue;
        if (rr) return rr;
        struct json_object *o = json_tokener_parse(r.body);
        if (o && is_of(o, p->id)) {
            rs->res[rs->n] = o;
            rs->ids[rs->n++] = ids[i];
        } else {
            json_object_put(o);
        }
    }
    return rc;
}

static jk_rc requests_of(jk_conn *c, const struct jk_rx_call *k, const struct jk_rx_presc *p,
                         struct requests *rs)
{
    rs->n = 0;
    jk_rc rc = requests_by(c, k, p, "encounter", "Encounter", p->visit_id, rs);
    if (!rc && !rs->n) rc = requests_by(c, k, p, "subject", "Patient", p->patient_id, rs);
    if (rc) requests_put(rs);
    return rc;
}

/* Sets every request's status (and, when reason is given, its statusReason) and writes it. */
static jk_rc set_status(jk_conn *c, const struct jk_rx_call *k, struct requests *rs,
                        const char *status, struct json_object *reason)
{
    jk_rc rc = JK_OK;
    for (size_t i = 0; !rc && i < rs->n; i++) {
        add_str(rs->res[i], "status", status);
        if (reason) json_object_object_add(rs->res[i], "statusReason", json_object_get(reason));
        rc = write_res(c, k, rs->res[i], "MedicationRequest", rs->ids[i], 0, NULL);
    }
    return rc;
}

/* The Provenance of a pharmacist's approval: the requests as its target. */
static jk_rc provenance(jk_conn *c, const struct jk_rx_call *k, const struct jk_rx_presc *p,
                        const struct jk_rx_decision *dec, const struct requests *rs)
{
    char when[32];
    struct json_object *pv = json_object_new_object(), *arr = json_object_new_array();
    add_str(pv, "resourceType", "Provenance");
    for (size_t i = 0; i < rs->n; i++)
        json_object_array_add(arr, typed_ref(k->a, "MedicationRequest", rs->ids[i]));
    json_object_object_add(pv, "target", arr);
    add_str(pv, "recorded", jk_time_iso(k->now_ms, when, sizeof when));
    struct json_object *act =
        coding("http://terminology.hl7.org/CodeSystem/v3-DataOperation", "UPDATE", "revise");
    add_str(act, "text", "处方审核通过 / pharmacist review approved");
    json_object_object_add(pv, "activity", act);
    struct json_object *agent = json_object_new_object();
    json_object_object_add(
        agent, "type",
        coding("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "verifier",
               "Verifier"));
    json_object_object_add(agent, "who", reference(dec->reviewer));
    if (dec->reviewer_org && *dec->reviewer_org)
        json_object_object_add(agent, "onBehalfOf",
                               typed_ref(k->a, "Organization", dec->reviewer_org));
    arr = json_object_new_array();
    json_object_array_add(arr, agent);
    json_object_object_add(pv, "agent", arr);
    struct json_object *ent = json_object_new_object(), *what = json_object_new_object();
    struct json_object *idf = json_object_new_object();
    add_str(idf, "system", JK_RX_GROUP_SYSTEM);
    add_str(idf, "value", p->id);
    json_object_object_add(what, "identifier", idf);
    add_str(ent, "role", "source");
    json_object_object_add(ent, "what", what);
    arr = json_object_new_array();
    json_object_array_add(arr, ent);
    json_object_object_add(pv, "entity", arr);
    const char *id = jk_fhir_new_id(k->a);
    jk_rc rc = id ? write_res(c, k, pv, "Provenance", id, 1,
                              dec->reviewer_org && *dec->reviewer_org ? dec->reviewer_org : p->org)
                  : JK_ENOMEM;
    json_object_put(pv);
    return rc;
}

/* A MedicationDispense of request mr (id mr_id) of p, at pharmacy by dispenser. */
static jk_rc dispense_res(jk_conn *c, const struct jk_rx_call *k, const struct jk_rx_presc *p,
                          struct json_object *mr, const char *mr_id, const char *pharmacy,
                          const char *dispenser)
{
    char when[32];
    struct json_object *md = json_object_new_object(), *v, *dr, *arr;
    add_str(md, "resourceType", "MedicationDispense");
    struct json_object *idf = json_object_new_object();
    add_str(idf, "system", JK_RX_GROUP_SYSTEM);
    add_str(idf, "value", p->id);
    arr = json_object_new_array();
    json_object_array_add(arr, idf);
    json_object_object_add(md, "identifier", arr);
    add_str(md, "status", "completed");
    if (json_object_object_get_ex(mr, "medicationCodeableConcept", &v))
        json_object_object_add(md, "medicationCodeableConcept", json_object_get(v));
    else if (json_object_object_get_ex(mr, "medicationReference", &v))
        json_object_object_add(md, "medicationReference", json_object_get(v));
    else
        json_object_object_add(md, "medicationCodeableConcept", json_object_new_object());
    if (json_object_object_get_ex(mr, "subject", &v))
        json_object_object_add(md, "subject", json_object_get(v));
    else
        json_object_object_add(md, "subject", typed_ref(k->a, "Patient", p->patient_id));
    json_object_object_add(md, "context", typed_ref(k->a, "Encounter", p->visit_id));
    arr = json_object_new_array();
    struct json_object *perf = json_object_new_object();
    json_object_object_add(
        perf, "function",
        coding("http://terminology.hl7.org/CodeSystem/medicationdispense-performer-function",
               "finalchecker", "Final Checker"));
    json_object_object_add(perf, "actor", reference(dispenser));
    json_object_array_add(arr, perf);
    perf = json_object_new_object();
    json_object_object_add(perf, "actor", typed_ref(k->a, "Organization", pharmacy));
    json_object_array_add(arr, perf);
    json_object_object_add(md, "performer", arr);
    arr = json_object_new_array();
    json_object_array_add(arr, typed_ref(k->a, "MedicationRequest", mr_id));
    json_object_object_add(md, "authorizingPrescription", arr);
    if (json_object_object_get_ex(mr, "dispenseRequest", &dr)) {
        if (json_object_object_get_ex(dr, "quantity", &v))
            json_object_object_add(md, "quantity", json_object_get(v));
        if (json_object_object_get_ex(dr, "expectedSupplyDuration", &v))
            json_object_object_add(md, "daysSupply", json_object_get(v));
    }
    add_str(md, "whenHandedOver", jk_time_iso(k->now_ms, when, sizeof when));
    if (json_object_object_get_ex(mr, "dosageInstruction", &v))
        json_object_object_add(md, "dosageInstruction", json_object_get(v));
    const char *id = jk_fhir_new_id(k->a);
    jk_rc rc = id ? write_res(c, k, md, "MedicationDispense", id, 1, pharmacy) : JK_ENOMEM;
    json_object_put(md);
    return rc;
}

/* statusReason: the reason codes (a rejection's) or a text. */
static struct json_object *status_reason(const struct jk_rx_call *k, const char *const *codes,
                                         size_t n, const char *text)
{
    struct json_object *cc = json_object_new_object(), *arr = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        struct json_object *cd = json_object_new_object();
        add_str(cd, "system", JK_RX_REASON_SYSTEM);
        add_str(cd, "code", codes[i]);
        const char *d = jk_rx_flow_reason(k->rules, codes[i]);
        if (d) add_str(cd, "display", d);
        json_object_array_add(arr, cd);
    }
    if (n)
        json_object_object_add(cc, "coding", arr);
    else
        json_object_put(arr);
    if (text && *text) add_str(cc, "text", text);
    return cc;
}

static void pay_item(const struct jk_rx_presc *p, struct jk_pay_item *it)
{
    *it = (struct jk_pay_item){"prescription", p->id, p->patient_id, p->org, p->amount_fen};
}

/* ---- review ---- */

static jk_rc check_decision(const struct jk_rx_call *k, const struct jk_rx_decision *dec)
{
    if (dec->n_codes > JK_RX_MAX_REASONS)
        return jk_diag_add(k->d, JK_EINVAL, "value", "codes", "at most %d reason codes",
                           JK_RX_MAX_REASONS);
    for (size_t i = 0; i < dec->n_codes; i++)
        if (!jk_rx_flow_reason(k->rules, dec->codes[i]))
            return jk_diag_add(k->d, JK_EINVAL, "code-invalid", "codes",
                               "'%s' is not a reason code of review.reasons (处方点评 1-x "
                               "不规范处方, 2-x 用药不适宜, 3-x 超常处方)",
                               dec->codes[i]);
    if (!dec->is_approve && !dec->n_codes)
        return refuse(k, JK_EINVAL, "reason-required", "codes", "审核不通过须注明原因代码",
                      "a rejection names at least one reason code (review.reasons)");
    if (dec->text && strlen(dec->text) > JK_RX_MAX_REVIEW_TEXT)
        return jk_diag_add(k->d, JK_EINVAL, "too-long", "text", "text is at most %d bytes",
                           JK_RX_MAX_REVIEW_TEXT);
    return JK_OK;
}

static const char *join_codes(struct jk_arena *a, const char *const *codes, size_t n)
{
    const char *s = "";
    for (size_t i = 0; i < n && s; i++)
        s = jk_arena_printf(a, "%s%s%s", s, i ? "," : "", codes[i]);
    return s;
}

jk_rc jk_rx_flow_review(jk_conn *c, const struct jk_rx_call *k, const char *id,
                        const struct jk_rx_decision *dec, struct jk_rx_presc *out,
                        char code[JK_RX_CODE_DIGITS + 1])
{
    static const char sql[] =
        "UPDATE rx_prescription SET status = ?, reviewer = ?, reviewed_ms = ?, review_codes = ?,"
        " review_text = ?, code_key = ?, valid_until_ms = ? WHERE id = ? AND status = 'pending'";
    struct jk_rx_presc p;
    struct requests rs = {0};
    char the_code[JK_RX_CODE_DIGITS + 1] = "", key[2 * JK_SM3_BYTES + 1];
    int64_t changes = 0, valid_until = 0;
    jk_rc rc = check_decision(k, dec);
    if (!rc) rc = load(c, k, id, &p);
    if (rc) return rc;
    if (strcmp(p.status, "pending"))
        return refuse(k, JK_ECONFLICT, "already-reviewed", NULL, "处方已审核，不能重复审核",
                      "the prescription has been reviewed already");
    if (dec->is_approve) {
        /* the prescribing service's validity when it set one (dispenseRequest.validityPeriod
         * says the same), else the rules' from the day of issue */
        valid_until =
            p.valid_until_ms ? p.valid_until_ms : jk_rx_flow_valid_until(k->rules, p.created_ms);
        if (valid_until <= k->now_ms) return refuse_expired(k);
        if (!k->keys) return JK_EINTERNAL;
        if ((rc = jk_rx_flow_code(k->keys, p.id, k->now_ms, the_code)) ||
            (rc = jk_rx_flow_code_key(k->keys, the_code, key)))
            return rc;
    }
    const char *codes = join_codes(k->a, dec->codes, dec->n_codes);
    if (!codes) return JK_ENOMEM;
    rc = jk_conn_run(c, sql, &changes, "ttitttit", dec->is_approve ? "approved" : "rejected",
                     dec->reviewer, k->now_ms, codes, dec->text ? dec->text : "",
                     dec->is_approve ? key : NULL, valid_until, id);
    if (!rc && !changes)
        return refuse(k, JK_ECONFLICT, "already-reviewed", NULL, "处方已由其他药师审核",
                      "another pharmacist reviewed the prescription first");
    if (!rc) rc = requests_of(c, k, &p, &rs);
    if (!rc && dec->is_approve) {
        rc = set_status(c, k, &rs, "active", NULL);
        if (!rc) rc = provenance(c, k, &p, dec, &rs);
    } else if (!rc) {
        struct json_object *reason = status_reason(k, dec->codes, dec->n_codes, dec->text);
        rc = set_status(c, k, &rs, "cancelled", reason);
        json_object_put(reason);
    }
    requests_put(&rs);
    if (!rc && dec->is_approve) {
        struct jk_pay_item it;
        enum jk_pay_state st;
        pay_item(&p, &it);
        rc = jk_pay()->charge(c, &it, k->now_ms, &st); /* due now: review comes before charging */
    }
    if (!rc) rc = jk_rx_flow_get(c, k->a, id, out);
    if (!rc && code) memcpy(code, the_code, sizeof the_code);
    return rc;
}

/* ---- the patient's choice ---- */

/* Whether p may still be filled now: approved and within its validity. */
static jk_rc fillable(const struct jk_rx_call *k, const struct jk_rx_presc *p)
{
    if (strcmp(p->status, "approved")) return refuse_status(k, p->status);
    if (p->valid_until_ms <= k->now_ms) return refuse_expired(k);
    return JK_OK;
}

static const char *history_add(const struct jk_rx_call *k, const char *history, const char *status,
                               const char *carrier, const char *waybill)
{
    char when[32];
    struct json_object *h = json_tokener_parse(history && *history ? history : "[]");
    if (!h || !json_object_is_type(h, json_type_array)) {
        json_object_put(h);
        h = json_object_new_array();
    }
    struct json_object *e = json_object_new_object();
    add_str(e, "status", status);
    add_str(e, "at", jk_time_iso(k->now_ms, when, sizeof when));
    if (carrier && *carrier) add_str(e, "carrier", carrier);
    if (waybill && *waybill) add_str(e, "waybill", waybill);
    json_object_array_add(h, e);
    size_t n;
    const char *t = jk_json_text(h, k->a, &n);
    json_object_put(h);
    return t;
}

jk_rc jk_rx_flow_choose(jk_conn *c, const struct jk_rx_call *k, const char *id,
                        const char *pharmacy, const char *mode, const char *address,
                        struct jk_rx_presc *out)
{
    static const char sql[] =
        "UPDATE rx_prescription SET pharmacy = ?, delivery = ?,"
        " presented_ms = NULLIF(CAST(? AS BIGINT), 0) WHERE id = ? AND status ="
        " 'approved' AND"
        " presented_ms IS NULL";
    static const char del_sql[] = "DELETE FROM rx_delivery WHERE prescription_id = ?";
    static const char ins_sql[] =
        "INSERT INTO rx_delivery (prescription_id, pharmacy, status, address_sealed, updated_ms,"
        " history) VALUES (?, ?, 'requested', ?, ?, ?)";
    struct jk_rx_presc p;
    int64_t changes = 0;
    int is_delivery = !strcmp(mode, "delivery");
    const char *sealed = NULL;
    jk_rc rc = load(c, k, id, &p);
    if (!rc) rc = fillable(k, &p);
    if (rc) return rc;
    if (p.presented_ms)
        return refuse(k, JK_ECONFLICT, "presented", NULL, "处方已提交药房，不能更换",
                      "the prescription was presented to its pharmacy already: cancel it to "
                      "choose again");
    if (is_delivery && (!address || !*address))
        return jk_diag_add(k->d, JK_EINVAL, "required", "address",
                           "a delivery needs the address to deliver to");
    if (is_delivery && (rc = seal_address(k, id, address, &sealed))) return rc;
    rc = jk_conn_run(c, sql, &changes, "ttit", ref_tail(pharmacy), mode,
                     is_delivery ? k->now_ms : 0, id);
    if (!rc && !changes)
        return refuse(k, JK_ECONFLICT, "presented", NULL, "处方状态已变化，请刷新",
                      "the prescription changed meanwhile");
    if (!rc) rc = jk_conn_run(c, del_sql, NULL, "t", id);
    if (!rc && is_delivery) {
        const char *hist = history_add(k, "[]", "requested", NULL, NULL);
        rc = hist ? jk_conn_run(c, ins_sql, NULL, "tttit", id, ref_tail(pharmacy), sealed,
                                k->now_ms, hist)
                  : JK_ENOMEM;
    }
    if (!rc) rc = jk_rx_flow_get(c, k->a, id, out);
    return rc;
}

/* ---- redemption and dispensing ---- */

jk_rc jk_rx_flow_redeem(jk_conn *c, const struct jk_rx_call *k, const char *code,
                        const char *pharmacy, struct jk_rx_presc *out)
{
    static const char find_sql[] = "SELECT id FROM rx_prescription WHERE code_key = ?";
    static const char sql[] =
        "UPDATE rx_prescription SET pharmacy = ?, delivery = CASE WHEN delivery = '' THEN"
        " 'pickup' ELSE delivery END, presented_ms = ? WHERE id = ? AND status = 'approved' AND"
        " presented_ms IS NULL AND (pharmacy IS NULL OR pharmacy = '' OR pharmacy = ?)";
    char key[2 * JK_SM3_BYTES + 1];
    struct jk_rx_presc p;
    jk_stmt *s;
    int has_row = 0;
    int64_t changes = 0;
    const char *id = NULL, *ph = ref_tail(pharmacy);
    if (!k->keys) return JK_EINTERNAL;
    jk_rc rc = jk_rx_flow_code_key(k->keys, code, key);
    if (rc == JK_EINVAL)
        return jk_diag_add(k->d, JK_EINVAL, "value", "code", "a redemption code is %d digits",
                           JK_RX_CODE_DIGITS);
    if (rc) return rc;
    rc = jk_conn_query(c, find_sql, &s, &has_row, "t", key);
    if (!rc && has_row) id = jk_stmt_col_dup(k->a, s, 0);
    if (s) jk_stmt_reset(s);
    if (rc) return rc;
    if (!id)
        return refuse(k, JK_ENOTFOUND, "unknown-code", "code", "取药码无效",
                      "no prescription has this code");
    if ((rc = load(c, k, id, &p)) || (rc = fillable(k, &p))) return rc;
    if (*p.pharmacy && !jk_rx_same_ref(p.pharmacy, ph))
        return refuse(k, JK_EFORBIDDEN, "other-pharmacy", NULL, "患者已选择其他药房取药",
                      "the patient chose another pharmacy for this prescription");
    if (p.presented_ms) { /* presented here already (a second scan, or a delivery order) */
        *out = p;
        return JK_OK;
    }
    rc = jk_conn_run(c, sql, &changes, "titt", ph, k->now_ms, id, ph);
    if (!rc && !changes)
        return refuse(k, JK_ECONFLICT, "state", NULL, "处方状态已变化，请重试",
                      "the prescription changed meanwhile");
    if (!rc) rc = jk_rx_flow_get(c, k->a, id, out);
    return rc;
}

jk_rc jk_rx_flow_dispense(jk_conn *c, const struct jk_rx_call *k, const char *id,
                          const char *pharmacy, const char *dispenser, struct jk_rx_presc *out)
{
    static const char sql[] = "UPDATE rx_prescription SET status = 'dispensed', dispensed_ms = ?"
                              " WHERE id = ? AND status = 'approved' AND pharmacy = ? AND"
                              " presented_ms IS NOT NULL AND valid_until_ms > ?";
    struct jk_rx_presc p;
    struct requests rs = {0};
    int64_t changes = 0;
    const char *ph = ref_tail(pharmacy);
    jk_rc rc = load(c, k, id, &p);
    if (!rc) rc = fillable(k, &p);
    if (rc) return rc;
    if (!p.presented_ms || !jk_rx_same_ref(p.pharmacy, ph))
        return refuse(k, JK_EFORBIDDEN, "not-presented", NULL, "处方未提交本药房：请先核验取药码",
                      "the prescription was not presented to this pharmacy: verify its code "
                      "first");
    rc = jk_conn_run(c, sql, &changes, "itti", k->now_ms, id, ph, k->now_ms);
    if (!rc && !changes) /* a concurrent dispensing (or cancellation) committed first */
        return refuse(k, JK_ECONFLICT, "dispensed", NULL, "处方已调配发药，不能再次调配",
                      "the prescription has been dispensed already");
    if (!rc) rc = requests_of(c, k, &p, &rs);
    for (size_t i = 0; !rc && i < rs.n; i++)
        rc = dispense_res(c, k, &p, rs.res[i], rs.ids[i], ph, dispenser);
    if (!rc) rc = set_status(c, k, &rs, "completed", NULL);
    requests_put(&rs);
    if (!rc) rc = jk_rx_flow_get(c, k->a, id, out);
    return rc;
}

/* ---- delivery ---- */

jk_rc jk_rx_flow_deliver(jk_conn *c, const struct jk_rx_call *k, const char *id,
                         const char *pharmacy, const char *status, const char *carrier,
                         const char *waybill, struct jk_rx_delivery *out)
{
    static const char sql[] =
        "UPDATE rx_delivery SET status = ?, carrier = ?, waybill = ?, history = ?, updated_ms = ?"
        " WHERE prescription_id = ? AND status = ?";
    struct jk_rx_presc p;
    struct jk_rx_delivery d;
    int64_t changes = 0;
    jk_rc rc = load(c, k, id, &p);
    if (rc) return rc;
    if (!jk_rx_same_ref(p.pharmacy, pharmacy) || !p.presented_ms)
        return refuse(k, JK_EFORBIDDEN, "not-presented", NULL, "处方未提交本药房",
                      "the prescription was not presented to this pharmacy");
    rc = jk_rx_flow_delivery_get(c, k->a, NULL, id, &d);
    if (rc == JK_ENOTFOUND)
        return refuse(k, JK_ENOTFOUND, "no-delivery", NULL, "该处方没有配送单",
                      "the patient chose pickup: there is no delivery order");
    if (rc) return rc;
    if (!jk_rx_flow_delivery_next(k->rules, d.status, status))
        return refuse(k, JK_ERULE, "delivery-step", "status",
                      jk_arena_printf(k->a, "配送单状态不能从 %s 变为 %s（delivery.states）",
                                      d.status, status),
                      jk_arena_printf(k->a,
                                      "a delivery order goes one step at a time along "
                                      "delivery.states: not from %s to %s",
                                      d.status, status));
    if (strcmp(status, "accepted") && strcmp(p.status, "dispensed"))
        return refuse(k, JK_ERULE, "not-dispensed", "status", "处方调配发药后才能打包配送",
                      "the prescription is packed and shipped after it is dispensed");
    if (!strcmp(status, "shipped") && (!carrier || !*carrier || !waybill || !*waybill))
        return jk_diag_add(k->d, JK_EINVAL, "required",
                           !carrier || !*carrier ? "carrier" : "waybill",
                           "shipped needs the carrier and the waybill number");
    const char *car = carrier && *carrier ? carrier : d.carrier;
    const char *way = waybill && *waybill ? waybill : d.waybill;
    const char *hist = history_add(k, d.history, status, carrier, waybill);
    if (!hist) return JK_ENOMEM;
    rc = jk_conn_run(c, sql, &changes, "ttttitt", status, car, way, hist, k->now_ms, id, d.status);
    if (!rc && !changes)
        return refuse(k, JK_ECONFLICT, "delivery-step", "status", "配送单状态已变化，请刷新",
                      "the delivery order changed meanwhile");
    if (!rc) rc = jk_rx_flow_delivery_get(c, k->a, NULL, id, out);
    return rc;
}

/* ---- cancellation and expiry ---- */

/* Ends p in status st (cancelled, expired): its order cancelled, its requests stopped. */
static jk_rc release(jk_conn *c, const struct jk_rx_call *k, const struct jk_rx_presc *p,
                     const char *st, const char *reason)
{
    static const char del_sql[] = "UPDATE rx_delivery SET status = 'cancelled', history = ?,"
                                  " updated_ms = ? WHERE prescription_id = ? AND status = ?";
    struct jk_rx_delivery d;
    struct requests rs = {0};
    jk_rc rc = jk_rx_flow_delivery_get(c, k->a, NULL, p->id, &d);
    if (!rc && strcmp(d.status, "cancelled")) {
        const char *hist = history_add(k, d.history, "cancelled", NULL, NULL);
        rc = hist ? jk_conn_run(c, del_sql, NULL, "titt", hist, k->now_ms, p->id, d.status)
                  : JK_ENOMEM;
    } else if (rc == JK_ENOTFOUND) {
        rc = JK_OK;
    }
    if (!rc) rc = requests_of(c, k, p, &rs);
    if (!rc) {
        struct json_object *why = status_reason(k, NULL, 0, reason);
        rc = set_status(c, k, &rs, "stopped", why);
        json_object_put(why);
    }
    requests_put(&rs);
    if (!rc && !strcmp(st, "cancelled") && strcmp(p->status, "pending")) {
        struct jk_pay_item it;
        enum jk_pay_state ps;
        pay_item(p, &it);
        rc = jk_pay()->refund(c, &it, k->now_ms, &ps);
    }
    return rc;
}

jk_rc jk_rx_flow_cancel(jk_conn *c, const struct jk_rx_call *k, const char *id, const char *reason,
                        struct jk_rx_presc *out)
{
    static const char sql[] = "UPDATE rx_prescription SET status = 'cancelled', code_key = NULL"
                              " WHERE id = ? AND status = ?";
    struct jk_rx_presc p;
    struct jk_rx_delivery d;
    int64_t changes = 0;
    jk_rc rc = load(c, k, id, &p);
    if (rc) return rc;
    if (strcmp(p.status, "pending") && strcmp(p.status, "approved"))
        return refuse_status(k, p.status);
    rc = jk_rx_flow_delivery_get(c, k->a, NULL, id, &d);
    if (!rc && !jk_rx_flow_delivery_cancellable(k->rules, d.status))
        return refuse(k, JK_ECONFLICT, "shipped", NULL, "药品已发出，不能取消",
                      "the delivery order has been shipped: it can no longer be cancelled");
    if (rc && rc != JK_ENOTFOUND) return rc;
    rc = jk_conn_run(c, sql, &changes, "tt", id, p.status);
    if (!rc && !changes)
        return refuse(k, JK_ECONFLICT, "state", NULL, "处方状态已变化，请刷新",
                      "the prescription changed meanwhile");
    if (!rc)
        rc = release(c, k, &p, "cancelled",
                     reason && *reason ? reason : "处方已取消 / cancelled before dispensing");
    if (!rc) rc = jk_rx_flow_get(c, k->a, id, out);
    return rc;
}

jk_rc jk_rx_flow_sweep(jk_conn *c, const struct jk_rx_call *k, size_t max, size_t *n_done)
{
    static const char due_sql[] = "SELECT " PRESC_COLS " FROM rx_prescription WHERE status ="
                                  " 'approved' AND valid_until_ms <= ? ORDER BY valid_until_ms"
                                  " LIMIT ?";
    static const char upd_sql[] = "UPDATE rx_prescription SET status = 'expired' WHERE id = ?"
                                  " AND status = 'approved' AND valid_until_ms <= ?";
    static const char new_sql[] = "SELECT id FROM rx_prescription WHERE summary = '' ORDER BY"
                                  " created_ms LIMIT ?";
    struct jk_rx_presc *due = jk_arena_alloc(k->a, max * sizeof *due);
    const char **fresh = jk_arena_alloc(k->a, max * sizeof *fresh);
    size_t n_due = 0, n_new = 0;
    jk_stmt *s;
    int has_row = 0;
    *n_done = 0;
    if (!due || !fresh) return JK_ENOMEM;
    jk_rc rc = jk_conn_query(c, due_sql, &s, &has_row, "ii", k->now_ms, (int64_t)max);
    while (!rc && has_row && n_due < max) {
        presc_row(k->a, s, &due[n_due++]);
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    for (size_t i = 0; !rc && i < n_due; i++) {
        int64_t changes = 0;
        rc = jk_conn_run(c, upd_sql, &changes, "ti", due[i].id, k->now_ms);
        if (!rc && changes)
            rc = release(c, k, &due[i], "expired", "处方已过有效期 / expired (code.validity_days)");
        if (!rc && changes) ++*n_done;
    }
    if (!rc) rc = jk_conn_query(c, new_sql, &s, &has_row, "i", (int64_t)max);
    while (!rc && has_row && n_new < max) {
        fresh[n_new++] = jk_stmt_col_dup(k->a, s, 0);
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    for (size_t i = 0; !rc && i < n_new; i++)
        if (!(rc = jk_rx_flow_summarize(c, k, fresh[i]))) ++*n_done;
    return rc;
}

/* ---- the summary the lists show ---- */

/* The first name's text (or family + given) of a resource with a name list. */
static const char *name_of(struct jk_arena *a, struct json_object *o)
{
    struct json_object *names, *given;
    if (!o || !json_object_object_get_ex(o, "name", &names) ||
        !json_object_is_type(names, json_type_array) || !json_object_array_length(names))
        return NULL;
    struct json_object *n = json_object_array_get_idx(names, 0);
    if (jk_json_str(n, "text")) return jk_arena_strdup(a, jk_json_str(n, "text"));
    const char *fam = jk_json_str(n, "family");
    const char *g = json_object_object_get_ex(n, "given", &given) &&
                            json_object_is_type(given, json_type_array) &&
                            json_object_array_length(given)
                        ? json_object_get_string(json_object_array_get_idx(given, 0))
                        : NULL;
    return jk_arena_printf(a, "%s%s", fam ? fam : "", g ? g : "");
}

static struct json_object *read_parsed(jk_conn *c, struct jk_arena *a, const char *type,
                                       const char *id)
{
    struct jk_res r;
    if (!id || !*id || jk_res_read(c, a, type, id, &r)) return NULL;
    return json_tokener_parse(r.body);
}

/* The doctor's name: the reference's display, else the Practitioner (through the role). */
static const char *doctor_name(jk_conn *c, struct jk_arena *a, struct json_object *mr,
                               const char *doctor)
{
    struct json_object *req, *pr;
    const char *ref = doctor, *out = NULL;
    if (mr && json_object_object_get_ex(mr, "requester", &req)) {
        if (jk_json_str(req, "display")) return jk_arena_strdup(a, jk_json_str(req, "display"));
        if (jk_json_str(req, "reference")) ref = jk_json_str(req, "reference");
    }
    if (!ref) return NULL;
    const char *slash = strchr(ref, '/');
    int is_role = !slash || !strncmp(ref, "PractitionerRole/", 17);
    struct json_object *o =
        read_parsed(c, a, is_role ? "PractitionerRole" : "Practitioner", ref_tail(ref));
    if (o && is_role && json_object_object_get_ex(o, "practitioner", &pr) &&
        jk_json_str(pr, "reference")) {
        const char *pid = jk_arena_strdup(a, ref_tail(jk_json_str(pr, "reference")));
        json_object_put(o); /* pid is the arena's copy */
        o = read_parsed(c, a, "Practitioner", pid);
    }
    out = name_of(a, o);
    json_object_put(o);
    return out;
}

/* Copies a number at path key1.key2 (into obj[name]) of the first element of array arr. */
static void copy_num(struct json_object *to, const char *name, struct json_object *v)
{
    if (v && (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)))
        json_object_object_add(to, name, json_object_get(v));
}

static struct json_object *get_path(struct json_object *o, const char *const *path)
{
    for (size_t i = 0; o && path[i]; i++) {
        if (json_object_is_type(o, json_type_array))
            o = json_object_array_length(o) ? json_object_array_get_idx(o, 0) : NULL;
        struct json_object *next = NULL;
        if (o && !json_object_object_get_ex(o, path[i], &next)) return NULL;
        o = next;
    }
    return o;
}

static struct json_object *item_of(struct json_object *mr)
{
    static const char *const code[] = {"medicationCodeableConcept", "coding", NULL};
    static const char *const dose[] = {"dosageInstruction", "doseAndRate", "doseQuantity", NULL};
    static const char *const freq[] = {"dosageInstruction", "timing", "repeat", "frequency", NULL};
    static const char *const days[] = {"dispenseRequest", "expectedSupplyDuration", "value", NULL};
    static const char *const qty[] = {"dispenseRequest", "quantity", "value", NULL};
    struct json_object *it = json_object_new_object(), *cd = get_path(mr, code);
    if (cd && json_object_is_type(cd, json_type_array) && json_object_array_length(cd))
        cd = json_object_array_get_idx(cd, 0);
    if (cd && jk_json_str(cd, "code")) add_str(it, "drug", jk_json_str(cd, "code"));
    if (cd && jk_json_str(cd, "display")) add_str(it, "name", jk_json_str(cd, "display"));
    struct json_object *dq = get_path(mr, dose), *v;
    if (dq && json_object_object_get_ex(dq, "value", &v)) copy_num(it, "dose", v);
    if (dq && jk_json_str(dq, "unit")) add_str(it, "unit", jk_json_str(dq, "unit"));
    copy_num(it, "timesPerDay", get_path(mr, freq));
    copy_num(it, "days", get_path(mr, days));
    copy_num(it, "quantity", get_path(mr, qty));
    return it;
}

jk_rc jk_rx_flow_summarize(jk_conn *c, const struct jk_rx_call *k, const char *id)
{
    static const char sql[] = "UPDATE rx_prescription SET summary = ? WHERE id = ?";
    struct jk_rx_presc p;
    struct requests rs = {0};
    jk_rc rc = jk_rx_flow_get(c, k->a, id, &p);
    if (!rc) rc = requests_of(c, k, &p, &rs);
    if (rc) return rc;
    struct json_object *sum = json_object_new_object(), *items = json_object_new_array();
    struct json_object *pat = read_parsed(c, k->a, "Patient", p.patient_id), *pt, *v;
    const char *pname = name_of(k->a, pat);
    pt = json_object_new_object();
    if (pname) add_str(pt, "name", pname);
    if (pat && json_object_object_get_ex(pat, "gender", &v))
        json_object_object_add(pt, "gender", json_object_get(v));
    if (pat && json_object_object_get_ex(pat, "birthDate", &v))
        json_object_object_add(pt, "birthDate", json_object_get(v));
    json_object_put(pat);
    json_object_object_add(sum, "patient", pt);
    const char *dname = doctor_name(c, k->a, rs.n ? rs.res[0] : NULL, p.doctor);
    if (dname) add_str(sum, "doctor", dname);
    for (size_t i = 0; i < rs.n; i++)
        json_object_array_add(items, item_of(rs.res[i]));
    json_object_object_add(sum, "items", items);
    requests_put(&rs);
    size_t n;
    const char *text = jk_json_text(sum, k->a, &n);
    json_object_put(sum);
    return text ? jk_conn_run(c, sql, NULL, "tt", text, id) : JK_ENOMEM;
}

/* ---- the review queue ---- */

/* The pending prescriptions of one institution (its id as stored), in order, after the
 * cursor: the index (org, status, created_ms, id) gives them in order. */
static jk_rc queue_one(jk_conn *c, struct jk_arena *a, const char *org, int is_newest,
                       int64_t after_ms, const char *after_id, int limit, struct jk_rx_presc *out,
                       size_t *n, int64_t *total)
{
    static const char asc_sql[] =
        "SELECT " PRESC_COLS " FROM rx_prescription WHERE org = ? AND status = 'pending' AND"
        " (created_ms, id) > (CAST(? AS BIGINT), ?) ORDER BY created_ms, id LIMIT ?";
    static const char desc_sql[] =
        "SELECT " PRESC_COLS " FROM rx_prescription WHERE org = ? AND status = 'pending' AND"
        " (created_ms, id) < (CAST(? AS BIGINT), ?) ORDER BY created_ms DESC, id DESC"
        " LIMIT ?";
    static const char count_sql[] =
        "SELECT count(*) FROM rx_prescription WHERE org = ? AND status = 'pending'";
    jk_stmt *s;
    int has_row = 0;
    if (!after_id) {
        after_ms = is_newest ? (int64_t)1 << 62 : -1; /* before or after every time */
        after_id = "";
    }
    jk_rc rc = jk_conn_query(c, is_newest ? desc_sql : asc_sql, &s, &has_row, "titi", org, after_ms,
                             after_id, (int64_t)limit);
    while (!rc && has_row && *n < (size_t)limit) {
        presc_row(a, s, &out[(*n)++]);
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    if (!rc) rc = jk_conn_query(c, count_sql, &s, &has_row, "t", org);
    if (!rc && has_row) *total += jk_stmt_col_int(s, 0);
    if (s) jk_stmt_reset(s);
    return rc;
}

static int before(const struct jk_rx_presc *x, const struct jk_rx_presc *y, int is_newest)
{
    int cmp = x->created_ms < y->created_ms   ? -1
              : x->created_ms > y->created_ms ? 1
                                              : strcmp(x->id, y->id);
    return is_newest ? cmp > 0 : cmp < 0;
}

jk_rc jk_rx_flow_queue(jk_conn *c, struct jk_arena *a, const char *const *orgs, size_t n_orgs,
                       int is_newest_first, int64_t after_ms, const char *after_id, int limit,
                       struct jk_rx_presc **out, size_t *n, int64_t *total)
{
    *n = 0;
    *total = 0;
    if (limit < 1) limit = 1;
    struct jk_rx_presc *all =
        jk_arena_alloc(a, (n_orgs ? n_orgs : 1) * (size_t)limit * sizeof *all);
    if (!all) return JK_ENOMEM;
    size_t n_all = 0;
    jk_rc rc = JK_OK;
    for (size_t i = 0; !rc && i < n_orgs; i++) {
        size_t got = 0;
        rc = queue_one(c, a, ref_tail(orgs[i]), is_newest_first, after_ms, after_id, limit,
                       all + n_all, &got, total);
        n_all += got;
    }
    if (rc) return rc;
    /* several institutions (a review centre): merge their pages, keep the first limit */
    for (size_t i = 1; n_orgs > 1 && i < n_all; i++) {
        struct jk_rx_presc x = all[i];
        size_t k = i;
        for (; k > 0 && before(&x, &all[k - 1], is_newest_first); k--)
            all[k] = all[k - 1];
        all[k] = x;
    }
    *out = all;
    *n = n_all < (size_t)limit ? n_all : (size_t)limit;
    return JK_OK;
}
