/* visit.c - the online follow-up visit: the gate (doctor, guardian, prior diagnosis), the
 * Encounter and ih_visit row of a visit, its chat as Communications, its end. The resources
 * are written as the service's own (held by the internet hospital's organisation) inside the
 * caller's transaction. docs/internals/rx.md. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <sodium.h>

#include "auth/authz.h"
#include "core/arena.h"
#include "core/diag.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "mpi/mpi.h"
#include "svc/ih/visit.h"

#define ACT_CODE   "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#define MAX_FOUND  50   /* candidate Conditions or Encounters of one code per Patient record */
#define MAX_MSGS   2000 /* messages a listing returns */
#define MAX_CHOICE 8    /* Patient records of one person looked at */

/* ---- SQL ---- */

/* ---- refusals ---- */

/* A refusal by a rule: 422 business-rule with the rule as details, in the request's
 * language. */
static jk_rc refuse(const struct jk_ih_call *k, jk_rc rc, const char *rule, const char *expr,
                    const char *zh, const char *en)
{
    jk_diag_add_text(k->d, rc, rc == JK_ERULE ? "business-rule" : NULL, expr, zh, en);
    if (k->d->tail) {
        k->d->tail->detail_system = JK_IH_REFUSAL_SYSTEM;
        k->d->tail->detail_code = rule;
    }
    return rc;
}

/* ---- JSON ---- */

/* The current version of type/id parsed (the caller puts it), or NULL when there is none. */
static struct json_object *read_json(jk_conn *c, struct jk_arena *a, const char *type,
                                     const char *id, jk_rc *rc)
{
    struct jk_res r;
    *rc = id && jk_fhir_id_ok(id) ? jk_res_read(c, a, type, id, &r) : JK_ENOTFOUND;
    if (*rc == JK_ENOTFOUND || *rc == JK_EGONE) {
        *rc = JK_OK;
        return NULL;
    }
    if (*rc) return NULL;
    struct json_object *o = json_tokener_parse(r.body);
    if (!o) *rc = JK_EDB;
    return o;
}

/* The id of a reference member key of o when it names type ("Organization/x" -> "x"). */
static const char *ref_of(struct json_object *o, const char *key, const char *type)
{
    struct json_object *r;
    const char *s = json_object_object_get_ex(o, key, &r) ? jk_json_str(r, "reference") : NULL;
    size_t n = strlen(type);
    if (!s || strncmp(s, type, n) || s[n] != '/' || !jk_fhir_id_ok(s + n + 1)) return NULL;
    return s + n + 1;
}

static int is_active(struct json_object *o)
{
    struct json_object *v;
    return !json_object_object_get_ex(o, "active", &v) || json_object_get_boolean(v);
}

/* Whether a CodeableConcept has a coding with code (and system, when system is set). */
static int concept_has(struct json_object *cc, const char *system, const char *code)
{
    struct json_object *codings;
    if (!json_object_object_get_ex(cc, "coding", &codings) ||
        !json_object_is_type(codings, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(codings); i++) {
        struct json_object *cd = json_object_array_get_idx(codings, i);
        const char *s = jk_json_str(cd, "system"), *c = jk_json_str(cd, "code");
        if (c && !strcmp(c, code) && (!system || (s && !strcmp(s, system)))) return 1;
    }
    return 0;
}

/* The first code of a CodeableConcept member key of o (or of the first of a list of them). */
static const char *first_code(struct json_object *o, const char *key)
{
    struct json_object *cc, *codings;
    if (!json_object_object_get_ex(o, key, &cc)) return NULL;
    if (json_object_is_type(cc, json_type_array)) cc = json_object_array_get_idx(cc, 0);
    if (!cc || !json_object_object_get_ex(cc, "coding", &codings) ||
        !json_object_is_type(codings, json_type_array) || !json_object_array_length(codings))
        return NULL;
    return jk_json_str(json_object_array_get_idx(codings, 0), "code");
}

static void add_str(struct json_object *o, const char *key, const char *v)
{
    json_object_object_add(o, key, json_object_new_string(v));
}

static struct json_object *ref(struct jk_arena *a, const char *type, const char *id)
{
    struct json_object *r = json_object_new_object();
    add_str(r, "reference", id ? jk_arena_printf(a, "%s/%s", type, id) : type);
    return r;
}

static struct json_object *one(struct json_object *v)
{
    struct json_object *arr = json_object_new_array();
    json_object_array_add(arr, v);
    return arr;
}

/* Writes res (type/id) as the service's; a new one is held by org. */
static jk_rc write_res(jk_conn *c, const struct jk_ih_call *k, struct json_object *res,
                       const char *type, const char *id, const char *org)
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
    if (!rc && org)
        rc = jk_authz_set_holder(c, type, id, jk_arena_printf(k->a, "Organization/%s", org));
    return rc;
}

/* ---- attachments ---- */

static const struct {
    const char *type;
    const char *magic;
    size_t n_magic;
    int is_record_only;
} kinds[] = {
    {"image/jpeg", "\xff\xd8\xff", 3, 0},
    {"image/png", "\x89PNG\r\n\x1a\n", 8, 0},
    {"application/pdf", "%PDF-", 5, 1},
};

jk_rc jk_ih_attachment(const struct jk_ih_call *k, const char *what, int is_record,
                       int64_t max_bytes, struct jk_ih_attachment *att)
{
    size_t i = 0, n_kinds = sizeof kinds / sizeof kinds[0];
    while (i < n_kinds && (!att->content_type || strcmp(kinds[i].type, att->content_type) ||
                           (kinds[i].is_record_only && !is_record)))
        i++;
    if (i == n_kinds)
        return jk_diag_add(k->d, JK_EINVAL, "code-invalid", what,
                           "%s.contentType must be image/jpeg or image/png%s", what,
                           is_record ? " or application/pdf" : "");
    size_t len = att->data_b64 ? strlen(att->data_b64) : 0;
    if (!len)
        return jk_diag_add(k->d, JK_EINVAL, "required", what, "%s.data (base64) is required", what);
    if ((int64_t)(len / 4 * 3) > max_bytes + 3)
        return refuse(k, JK_ETOOBIG, "visit.image_max_bytes", what, "附件过大",
                      "the attachment is larger than visit.image_max_bytes allows");
    unsigned char *bin = malloc(len / 4 * 3 + 3);
    size_t n = 0;
    if (!bin) return JK_ENOMEM;
    int bad = sodium_base642bin(bin, len / 4 * 3 + 3, att->data_b64, len, "\r\n", &n, NULL,
                                sodium_base64_VARIANT_ORIGINAL);
    int is_kind = !bad && n >= kinds[i].n_magic && !memcmp(bin, kinds[i].magic, kinds[i].n_magic);
    free(bin);
    if (bad) return jk_diag_add(k->d, JK_EINVAL, "value", what, "%s.data is not base64", what);
    if ((int64_t)n > max_bytes)
        return refuse(k, JK_ETOOBIG, "visit.image_max_bytes", what, "附件过大",
                      "the attachment is larger than visit.image_max_bytes allows");
    if (!is_kind)
        return jk_diag_add(k->d, JK_EINVAL, "value", what, "%s.data is not %s", what,
                           att->content_type);
    att->n_bytes = n;
    return JK_OK;
}

/* ---- the gate ---- */

/* The doctor: an active PractitionerRole of an institution, whose active Practitioner holds a
 * practising licence current now and held at least doctor.min_practice_years. */
static jk_rc gate_doctor(jk_conn *c, const struct jk_ih_call *k, struct jk_ih_open *o)
{
    jk_rc rc;
    struct jk_ih_policy p;
    struct json_object *role = read_json(c, k->a, "PractitionerRole", o->doctor, &rc), *pr = NULL;
    if (rc) return rc;
    const char *org = role ? ref_of(role, "organization", "Organization") : NULL;
    const char *prac = role ? ref_of(role, "practitioner", "Practitioner") : NULL;
    if (!role || !org || !prac) {
        json_object_put(role);
        return jk_diag_add(k->d, JK_EINVAL, "value", "doctor",
                           "doctor must be a PractitionerRole/<id> of an institution and a "
                           "practitioner");
    }
    o->org = jk_arena_strdup(k->a, org);
    pr = read_json(c, k->a, "Practitioner", prac, &rc);
    jk_ih_policy(k->rules, o->org, &p);
    int is_ok = 0, is_role_active = is_active(role);
    json_object_put(role);
    if (rc) return rc;
    struct json_object *quals;
    if (pr && is_role_active && is_active(pr) &&
        json_object_object_get_ex(pr, "qualification", &quals) &&
        json_object_is_type(quals, json_type_array)) {
        for (size_t i = 0; !is_ok && i < json_object_array_length(quals); i++) {
            struct json_object *qa = json_object_array_get_idx(quals, i), *cc, *codings, *per;
            if (!json_object_object_get_ex(qa, "code", &cc) ||
                !json_object_object_get_ex(cc, "coding", &codings) ||
                !json_object_is_type(codings, json_type_array))
                continue;
            int is_licence = 0;
            for (size_t j = 0; j < json_object_array_length(codings); j++) {
                struct json_object *cd = json_object_array_get_idx(codings, j);
                is_licence |=
                    jk_ih_is_licence(k->rules, jk_json_str(cd, "system"), jk_json_str(cd, "code"));
            }
            if (!is_licence || !json_object_object_get_ex(qa, "period", &per)) continue;
            const char *start = jk_json_str(per, "start"), *end = jk_json_str(per, "end");
            int64_t end_ms = 0;
            if (end && (jk_ih_instant(end, p.utc_offset_min, &end_ms) || end_ms < k->now_ms))
                continue;
            is_ok = jk_ih_years_since(start, k->now_ms, p.utc_offset_min) >= p.min_practice_years;
        }
    }
    json_object_put(pr);
    if (is_ok) return JK_OK;
    const char *zh = jk_arena_printf(k->a,
                                     "医生不具备互联网诊疗资质：需持有有效执业证书且独立执业满 %d "
                                     "年",
                                     p.min_practice_years);
    const char *en = jk_arena_printf(k->a,
                                     "the doctor is not qualified for online visits: a current "
                                     "practising licence held for at least %d years is required "
                                     "(doctor.min_practice_years)",
                                     p.min_practice_years);
    return refuse(k, JK_ERULE, "doctor-unqualified", "doctor", zh, en);
}

static int word_in(const char *list, const char *code)
{
    size_t n = code ? strlen(code) : 0;
    for (const char *p = list; n && p && (p = strstr(p, code)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || !p[n])) return 1;
    return 0;
}

static int is_in(const char *id, const char *const *ids, size_t n)
{
    for (size_t i = 0; id && i < n; i++)
        if (!strcmp(ids[i], id)) return 1;
    return 0;
}

/* Whether guardian (a reference) is a guardian of the person whose records are ids: the
 * requesting resident when the patient is their ward, or an active RelatedPerson of the child
 * whose relationship is a guardian's (access.guardian_relationships). */
static jk_rc is_guardian(jk_conn *c, const struct jk_ih_call *k, const struct jk_ih_open *o,
                         const char *const *ids, size_t n, int *out)
{
    jk_rc rc = JK_OK;
    *out = 0;
    if (!strncmp(o->guardian, "Patient/", 8)) {
        *out = o->is_ward && o->requester && !strcmp(o->guardian + 8, o->requester);
        return JK_OK;
    }
    if (strncmp(o->guardian, "RelatedPerson/", 14)) return JK_OK;
    struct json_object *rp = read_json(c, k->a, "RelatedPerson", o->guardian + 14, &rc), *rels;
    if (!rp) return rc;
    int is_code = 0;
    if (json_object_object_get_ex(rp, "relationship", &rels) &&
        json_object_is_type(rels, json_type_array))
        for (size_t i = 0; i < json_object_array_length(rels); i++) {
            struct json_object *codings;
            if (!json_object_object_get_ex(json_object_array_get_idx(rels, i), "coding", &codings))
                continue;
            for (size_t j = 0; j < json_object_array_length(codings); j++)
                is_code |= word_in(o->guardian_codes,
                                   jk_json_str(json_object_array_get_idx(codings, j), "code"));
        }
    struct json_object *per;
    const char *end =
        json_object_object_get_ex(rp, "period", &per) ? jk_json_str(per, "end") : NULL;
    int64_t end_ms = INT64_MAX;
    if (end && jk_ih_instant(end, 0, &end_ms)) end_ms = 0;
    *out = is_code && is_active(rp) && end_ms >= k->now_ms &&
           is_in(ref_of(rp, "patient", "Patient"), ids, n);
    json_object_put(rp);
    return JK_OK;
}

/* A young child needs a guardian present; a guardian named for anyone must be one. */
static jk_rc gate_guardian(jk_conn *c, const struct jk_ih_call *k, struct jk_ih_open *o,
                           const char *const *ids, size_t n)
{
    jk_rc rc;
    struct jk_ih_policy p;
    jk_ih_policy(k->rules, o->org, &p);
    struct json_object *pat = read_json(c, k->a, "Patient", o->patient_id, &rc);
    if (rc) return rc;
    if (!pat)
        return jk_diag_add(k->d, JK_EINVAL, "value", "patient", "Patient/%s is not known",
                           o->patient_id);
    int age = jk_ih_years_since(jk_json_str(pat, "birthDate"), k->now_ms, p.utc_offset_min);
    json_object_put(pat);
    int is_child = age >= 0 && age < p.guardian_age_years, ok = 0;
    o->guardian_ref = "";
    if (o->guardian && (rc = is_guardian(c, k, o, ids, n, &ok))) return rc;
    if (ok) {
        o->guardian_ref = o->guardian;
        return JK_OK;
    }
    if (!is_child && !o->guardian) return JK_OK;
    if (!is_child)
        return jk_diag_add(k->d, JK_EINVAL, "value", "guardian",
                           "%s is not a guardian of Patient/%s", o->guardian, o->patient_id);
    const char *zh =
        jk_arena_printf(k->a,
                        "%d 岁以下儿童在线复诊须有监护人陪同：请在 guardian 中写明在场的"
                        "监护人（监护人本人的 Patient 或儿童的 RelatedPerson）",
                        p.guardian_age_years);
    const char *en = jk_arena_printf(
        k->a,
        "a child under %d years needs a guardian present (visit.guardian_age_years): name them "
        "in guardian (the guardian's own Patient, or a RelatedPerson of the child)%s",
        p.guardian_age_years, o->guardian ? "; the one named is not the child's guardian" : "");
    return refuse(k, JK_ERULE, "guardian-required", "guardian", zh, en);
}

enum verdict { V_NONE, V_STALE, V_OK };

/* The organisation (id) that recorded a clinical resource: its encounter's service provider
 * (none when that encounter was online), else its recorder's institution, else its holder. */
static jk_rc institution_of(jk_conn *c, const struct jk_ih_call *k, const char *type,
                            const char *id, struct json_object *o, const char **org)
{
    jk_rc rc = JK_OK;
    const char *enc = ref_of(o, "encounter", "Encounter"), *role;
    *org = NULL;
    if (enc) {
        struct json_object *e = read_json(c, k->a, "Encounter", enc, &rc), *cls;
        if (!e) return rc;
        const char *cl =
            json_object_object_get_ex(e, "class", &cls) ? jk_json_str(cls, "code") : NULL;
        const char *sp = ref_of(e, "serviceProvider", "Organization");
        if (sp && (!cl || strcmp(cl, "VR"))) *org = jk_arena_strdup(k->a, sp);
        json_object_put(e);
        return JK_OK;
    }
    if ((role = ref_of(o, "recorder", "PractitionerRole"))) {
        struct json_object *r = read_json(c, k->a, "PractitionerRole", role, &rc);
        const char *ro = r ? ref_of(r, "organization", "Organization") : NULL;
        if (ro) *org = jk_arena_strdup(k->a, ro);
        json_object_put(r);
        if (rc || *org) return rc;
    }
    struct jk_az_facts f;
    if ((rc = jk_authz_facts(c, k->a, type, id, &f))) return rc;
    if (f.org && !strncmp(f.org, "Organization/", 13)) *org = f.org + 13;
    return JK_OK;
}

/* Whether Condition id (o) is a definite diagnosis of the code, recorded at a physical
 * institution within the window. */
static jk_rc judge_condition(jk_conn *c, const struct jk_ih_call *k, const struct jk_ih_open *ro,
                             int days, int utc_off, const char *id, struct json_object *o,
                             enum verdict *v)
{
    static const char *const not_definite[] = {"refuted", "entered-in-error", "provisional",
                                               "differential", "unconfirmed"};
    struct json_object *cc;
    const char *org = NULL, *asserter;
    int64_t when;
    *v = V_NONE;
    if (!json_object_object_get_ex(o, "code", &cc) || !concept_has(cc, ro->system, ro->code))
        return JK_OK;
    const char *vs = first_code(o, "verificationStatus");
    for (size_t i = 0; vs && i < sizeof not_definite / sizeof not_definite[0]; i++)
        if (!strcmp(vs, not_definite[i])) return JK_OK;
    struct json_object *as;
    asserter = json_object_object_get_ex(o, "asserter", &as) ? jk_json_str(as, "reference") : NULL;
    if (asserter && (!strncmp(asserter, "Patient/", 8) || !strncmp(asserter, "RelatedPerson/", 14)))
        return JK_OK; /* what the patient says is not a diagnosis */
    jk_rc rc = institution_of(c, k, "Condition", id, o, &org);
    if (rc || !org) return rc;
    *v = jk_ih_instant(jk_json_str(o, "recordedDate"), utc_off, &when) ||
                 !jk_ih_within_days(when, k->now_ms, days)
             ? V_STALE
             : V_OK;
    return JK_OK;
}

/* Whether Encounter o was an in-person visit at an institution for the code within the
 * window. */
static enum verdict judge_encounter(const struct jk_ih_call *k, const struct jk_ih_open *ro,
                                    int days, int utc_off, struct json_object *o)
{
    static const char *const counted[] = {"finished", "in-progress", "arrived", "triaged",
                                          "onleave"};
    struct json_object *cls, *reasons, *per;
    const char *status = jk_json_str(o, "status");
    const char *cl = json_object_object_get_ex(o, "class", &cls) ? jk_json_str(cls, "code") : NULL;
    int is_reason = 0, is_counted = 0;
    if (json_object_object_get_ex(o, "reasonCode", &reasons) &&
        json_object_is_type(reasons, json_type_array))
        for (size_t i = 0; i < json_object_array_length(reasons); i++)
            is_reason |= concept_has(json_object_array_get_idx(reasons, i), ro->system, ro->code);
    for (size_t i = 0; status && i < sizeof counted / sizeof counted[0]; i++)
        is_counted |= !strcmp(status, counted[i]);
    if (!is_reason || !is_counted || (cl && !strcmp(cl, "VR")) ||
        !ref_of(o, "serviceProvider", "Organization"))
        return V_NONE;
    const char *when_s = NULL;
    if (json_object_object_get_ex(o, "period", &per))
        when_s = jk_json_str(per, "end") ? jk_json_str(per, "end") : jk_json_str(per, "start");
    int64_t when;
    if (jk_ih_instant(when_s, utc_off, &when) || !jk_ih_within_days(when, k->now_ms, days))
        return V_STALE;
    return V_OK;
}

/* The verdict on type/id (Condition or Encounter) as the basis of the visit. */
static jk_rc judge(jk_conn *c, const struct jk_ih_call *k, const struct jk_ih_open *o,
                   const char *type, const char *id, const char *const *ids, size_t n,
                   enum verdict *v)
{
    struct jk_ih_policy p;
    jk_rc rc;
    jk_ih_policy(k->rules, o->org, &p);
    *v = V_NONE;
    struct json_object *res = read_json(c, k->a, type, id, &rc);
    if (!res) return rc;
    if (is_in(ref_of(res, "subject", "Patient"), ids, n)) {
        if (!strcmp(type, "Condition"))
            rc = judge_condition(c, k, o, p.prior_days, p.utc_offset_min, id, res, v);
        else
            *v = judge_encounter(k, o, p.prior_days, p.utc_offset_min, res);
    }
    json_object_put(res);
    return rc;
}

/* The ids of type's current resources with token param = code about Patient patient. */
static jk_rc find(jk_conn *c, struct jk_arena *a, const char *type, const char *param,
                  const char *code, const char *patient, const char ***out, size_t *n)
{
    static const char sql[] =
        "SELECT DISTINCT t.id FROM idx_token t JOIN idx_reference r ON r.type = t.type AND"
        " r.id = t.id WHERE t.type = ? AND t.param = ? AND t.code = ? AND r.param = 'subject'"
        " AND r.target_type = 'Patient' AND r.target_id = ? ORDER BY t.id LIMIT 50";
    jk_stmt *s;
    int has_row;
    const char **ids = jk_arena_alloc(a, MAX_FOUND * sizeof *ids);
    *n = 0;
    if (!ids) return JK_ENOMEM;
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "tttt", type, param, code, patient);
    while (!rc && has_row && *n < MAX_FOUND) {
        if (!(ids[(*n)++] = jk_stmt_col_dup(a, s, 0))) rc = JK_ENOMEM;
        if (!rc) rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    *out = ids;
    return rc;
}

/* The basis of the follow-up: the one the patient named, else the first that counts of the
 * person's Conditions and Encounters of the code. */
static jk_rc gate_basis(jk_conn *c, const struct jk_ih_call *k, struct jk_ih_open *o,
                        const char *const *ids, size_t n)
{
    enum verdict best = V_NONE, v;
    jk_rc rc = JK_OK;
    struct jk_ih_policy p;
    jk_ih_policy(k->rules, o->org, &p);
    o->basis_ref = NULL;
    if (o->basis) {
        int is_cond = !strncmp(o->basis, "Condition/", 10);
        if (!is_cond && strncmp(o->basis, "Encounter/", 10))
            return jk_diag_add(k->d, JK_EINVAL, "value", "basis",
                               "basis must be a Condition/<id> or Encounter/<id>");
        if ((rc =
                 judge(c, k, o, is_cond ? "Condition" : "Encounter", o->basis + 10, ids, n, &best)))
            return rc;
        if (best == V_OK) o->basis_ref = o->basis;
    }
    for (int t = 0; !o->basis && t < 2 && best != V_OK; t++) {
        const char *type = t ? "Encounter" : "Condition";
        for (size_t i = 0; !rc && i < n && best != V_OK; i++) {
            const char **found;
            size_t n_found;
            rc = find(c, k->a, type, t ? "reason-code" : "code", o->code, ids[i], &found, &n_found);
            for (size_t j = 0; !rc && j < n_found && best != V_OK; j++) {
                if ((rc = judge(c, k, o, type, found[j], ids, n, &v))) break;
                if (v > best) best = v;
                if (v == V_OK) o->basis_ref = jk_arena_printf(k->a, "%s/%s", type, found[j]);
            }
        }
    }
    if (rc || best == V_OK || o->record) return rc;
    const char *book = jk_arena_printf(k->a, "GET /api/slots?org=Organization/%s", o->org);
    if (best == V_STALE || o->basis) {
        const char *zh = jk_arena_printf(k->a,
                                         "没有 %d 天内实体医疗机构对该病的诊断：请先到线下就诊"
                                         "（预约：%s），或上传近期病历由医生确认",
                                         p.prior_days, book);
        const char *en =
            jk_arena_printf(k->a,
                            "no diagnosis of this condition by a physical institution "
                            "in the last %d days (visit.prior_diagnosis_days): book an "
                            "in-person visit (%s) or upload a recent record for the "
                            "doctor to confirm",
                            p.prior_days, book);
        return refuse(k, JK_ERULE, "no-diagnosis", o->basis ? "basis" : "condition", zh, en);
    }
    const char *zh =
        jk_arena_printf(k->a,
                        "互联网医院只提供复诊，首诊须到实体医疗机构就诊：请预约线下门诊"
                        "（%s）",
                        book);
    const char *en = jk_arena_printf(k->a,
                                     "online visits are follow-ups only and this is a first "
                                     "visit for the condition: book an in-person visit (%s)",
                                     book);
    return refuse(k, JK_ERULE, "first-visit", "condition", zh, en);
}

jk_rc jk_ih_gate(jk_conn *c, const struct jk_ih_call *k, struct jk_ih_open *o)
{
    char person[JK_MPI_ID_MAX];
    const char **ids = NULL;
    size_t n = 0;
    jk_rc rc = gate_doctor(c, k, o);
    if (rc) return rc;
    struct jk_ih_policy p;
    jk_ih_policy(k->rules, o->org, &p);
    o->amount_fen = p.fee_fen;
    o->person = NULL;
    rc = jk_mpi_person_find(c, o->patient_id, person);
    if (!rc) {
        o->person = jk_arena_strdup(k->a, person);
        rc = jk_mpi_patients_of(c, k->a, person, &ids, &n);
    } else if (rc == JK_ENOTFOUND) {
        rc = JK_OK;
    }
    if (rc) return rc;
    if (!is_in(o->patient_id, ids, n)) { /* not linked yet: the record itself */
        const char **all = jk_arena_alloc(k->a, (n + 1) * sizeof *all);
        if (!all) return JK_ENOMEM;
        for (size_t i = 0; i < n; i++)
            all[i] = ids[i];
        all[n++] = o->patient_id;
        ids = all;
    }
    if (n > MAX_CHOICE) n = MAX_CHOICE;
    if ((rc = gate_guardian(c, k, o, ids, n))) return rc;
    return gate_basis(c, k, o, ids, n);
}

/* ---- visits ---- */

int jk_ih_is_live(const char *status)
{
    return status && (!strcmp(status, "pending") || !strcmp(status, "open"));
}

#define VISIT_COLS                                                                                 \
    "id, patient_id, person, account_id, org, doctor, condition_code, basis, guardian, status,"    \
    " started_ms, ended_ms, end_reason, amount_fen"

jk_rc jk_ih_visit_get(jk_conn *c, struct jk_arena *a, const char *id, struct jk_ih_visit *v)
{
    static const char sql[] = "SELECT " VISIT_COLS " FROM ih_visit WHERE id = ?";
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "t", id);
    if (!rc && !has_row) rc = JK_ENOTFOUND;
    if (!rc) {
        v->id = jk_stmt_col_dup(a, s, 0);
        v->patient_id = jk_stmt_col_dup(a, s, 1);
        v->person = jk_stmt_col_dup(a, s, 2);
        v->account_id = jk_stmt_col_int(s, 3);
        v->org = jk_stmt_col_dup(a, s, 4);
        v->doctor = jk_stmt_col_dup(a, s, 5);
        v->condition_code = jk_stmt_col_dup(a, s, 6);
        v->basis = jk_stmt_col_dup(a, s, 7);
        v->guardian = jk_stmt_col_dup(a, s, 8);
        v->status = jk_stmt_col_dup(a, s, 9);
        v->started_ms = jk_stmt_col_int(s, 10);
        v->ended_ms = jk_stmt_col_is_null(s, 11) ? 0 : jk_stmt_col_int(s, 11);
        v->end_reason = jk_stmt_col_dup(a, s, 12);
        v->amount_fen = jk_stmt_col_int(s, 13);
        if (!v->id || !v->end_reason) rc = JK_ENOMEM;
    }
    if (s) jk_stmt_reset(s);
    return rc;
}

static struct json_object *extension(const char *url, const char *kind, struct json_object *v)
{
    struct json_object *e = json_object_new_object();
    add_str(e, "url", url);
    json_object_object_add(e, kind, v);
    return e;
}

/* Sets the extension url of resource o to (kind, v), replacing one there. */
static void set_extension(struct json_object *o, const char *url, const char *kind,
                          struct json_object *v)
{
    struct json_object *exts, *keep = json_object_new_array();
    if (json_object_object_get_ex(o, "extension", &exts) &&
        json_object_is_type(exts, json_type_array))
        for (size_t i = 0; i < json_object_array_length(exts); i++) {
            struct json_object *e = json_object_array_get_idx(exts, i);
            const char *u = jk_json_str(e, "url");
            if (!u || strcmp(u, url)) json_object_array_add(keep, json_object_get(e));
        }
    json_object_array_add(keep, extension(url, kind, v));
    json_object_object_add(o, "extension", keep);
}

static struct json_object *encounter_new(const struct jk_ih_call *k, const struct jk_ih_open *o,
                                         const char *id, const char *basis, int is_pending)
{
    char t[32];
    struct json_object *e = json_object_new_object(), *cls = json_object_new_object();
    struct json_object *cd = json_object_new_object(), *cc = json_object_new_object();
    struct json_object *parts = json_object_new_array(), *per = json_object_new_object();
    add_str(e, "resourceType", "Encounter");
    add_str(e, "id", id);
    if (!is_pending)
        json_object_object_add(
            e, "extension",
            one(extension(JK_IH_BASIS_URL, "valueReference", ref(k->a, basis, NULL))));
    add_str(e, "status", is_pending ? "planned" : "in-progress");
    add_str(cls, "system", ACT_CODE);
    add_str(cls, "code", "VR");
    add_str(cls, "display", "virtual");
    json_object_object_add(e, "class", cls);
    json_object_object_add(e, "subject", ref(k->a, "Patient", o->patient_id));
    struct json_object *doc = json_object_new_object();
    json_object_object_add(doc, "individual", ref(k->a, "PractitionerRole", o->doctor));
    json_object_array_add(parts, doc);
    if (!strncmp(o->guardian_ref, "RelatedPerson/", 14)) {
        struct json_object *g = json_object_new_object();
        json_object_object_add(g, "individual", ref(k->a, o->guardian_ref, NULL));
        json_object_array_add(parts, g);
    }
    json_object_object_add(e, "participant", parts);
    add_str(per, "start", jk_time_iso(k->now_ms, t, sizeof t));
    json_object_object_add(e, "period", per);
    if (o->system) add_str(cd, "system", o->system);
    add_str(cd, "code", o->code);
    if (o->display) add_str(cd, "display", o->display);
    json_object_object_add(cc, "coding", one(cd));
    json_object_object_add(e, "reasonCode", one(cc));
    json_object_object_add(e, "serviceProvider", ref(k->a, "Organization", o->org));
    return e;
}

static struct json_object *record_new(const struct jk_ih_call *k, const struct jk_ih_open *o,
                                      const char *id, const char *visit)
{
    char t[32];
    const struct jk_ih_attachment *r = o->record;
    struct json_object *d = json_object_new_object(), *type = json_object_new_object();
    struct json_object *att = json_object_new_object(), *content = json_object_new_object();
    struct json_object *ctx = json_object_new_object();
    add_str(d, "resourceType", "DocumentReference");
    add_str(d, "id", id);
    add_str(d, "status", "current");
    add_str(d, "docStatus", "preliminary");
    add_str(type, "text", "患者上传的既往病历 / record uploaded by the patient");
    json_object_object_add(d, "type", type);
    json_object_object_add(d, "subject", ref(k->a, "Patient", o->patient_id));
    add_str(d, "date", jk_time_iso(k->now_ms, t, sizeof t));
    if (o->requester) json_object_object_add(d, "author", one(ref(k->a, "Patient", o->requester)));
    add_str(att, "contentType", r->content_type);
    add_str(att, "data", r->data_b64);
    json_object_object_add(att, "size", json_object_new_int64((int64_t)r->n_bytes));
    if (r->title) add_str(att, "title", r->title);
    add_str(att, "creation", t);
    json_object_object_add(content, "attachment", att);
    json_object_object_add(d, "content", one(content));
    json_object_object_add(ctx, "encounter", one(ref(k->a, "Encounter", visit)));
    json_object_object_add(d, "context", ctx);
    return d;
}

jk_rc jk_ih_visit_open(jk_conn *c, const struct jk_ih_call *k, const struct jk_ih_open *o,
                       struct jk_ih_visit *out)
{
    static const char sql[] = "INSERT INTO ih_visit (" VISIT_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?,"
                              " ?, ?, ?, ?, NULL, '', ?)";
    char person[JK_MPI_ID_MAX];
    jk_rc rc = jk_mpi_person_of(c, o->patient_id, person);
    if (rc) return rc;
    const char *id = jk_fhir_new_id(k->a), *basis = o->basis_ref;
    int is_pending = basis == NULL;
    if (!id) return JK_ENOMEM;
    if (o->record) {
        const char *doc = jk_fhir_new_id(k->a);
        struct json_object *d = record_new(k, o, doc, id);
        rc = write_res(c, k, d, "DocumentReference", doc, o->org);
        json_object_put(d);
        if (rc) return rc;
        if (is_pending) basis = jk_arena_printf(k->a, "DocumentReference/%s", doc);
    }
    struct json_object *e = encounter_new(k, o, id, basis, is_pending);
    rc = write_res(c, k, e, "Encounter", id, o->org);
    json_object_put(e);
    if (rc) return rc;
    *out = (struct jk_ih_visit){.id = id,
                                .patient_id = o->patient_id,
                                .person = jk_arena_strdup(k->a, person),
                                .account_id = o->account_id,
                                .org = o->org,
                                .doctor = o->doctor,
                                .condition_code = o->code,
                                .basis = basis,
                                .guardian = o->guardian_ref,
                                .status = is_pending ? "pending" : "open",
                                .started_ms = k->now_ms,
                                .end_reason = "",
                                .amount_fen = o->amount_fen};
    jk_stmt *s;
    rc = jk_conn_query(c, sql, &s, NULL, "tttittttttii", out->id, out->patient_id, out->person,
                       out->account_id, out->org, out->doctor, out->condition_code, out->basis,
                       out->guardian, out->status, out->started_ms, out->amount_fen);
    if (s) jk_stmt_reset(s);
    return rc;
}

/* Moves visit v from status from (or, when from is NULL, either live status) to status;
 * JK_ECONFLICT when it is not there any more (a concurrent change). */
static jk_rc set_status(jk_conn *c, const struct jk_ih_call *k, struct jk_ih_visit *v,
                        const char *from, const char *status, const char *reason)
{
    static const char sql_open[] = "UPDATE ih_visit SET status = ? WHERE id = ? AND status = ?";
    static const char sql_end[] = "UPDATE ih_visit SET status = ?, ended_ms = ?, end_reason = ?"
                                  " WHERE id = ? AND status IN ('pending', 'open')";
    int is_end = from == NULL;
    jk_stmt *s;
    jk_rc rc = is_end ? jk_conn_query(c, sql_end, &s, NULL, "titt", status, k->now_ms,
                                      reason ? reason : "", v->id)
                      : jk_conn_query(c, sql_open, &s, NULL, "ttt", status, v->id, from);
    int64_t n = !rc ? jk_stmt_changes(s) : 0;
    if (s) jk_stmt_reset(s);
    if (rc) return rc;
    if (!n)
        return refuse(k, JK_ECONFLICT, "visit-ended", NULL, "该次在线复诊已结束或已变更",
                      "the visit has ended or changed meanwhile");
    v->status = status;
    if (is_end) {
        v->ended_ms = k->now_ms;
        v->end_reason = reason ? reason : "";
    }
    return JK_OK;
}

/* Reads Encounter v->id for a change (the caller puts *out). */
static jk_rc encounter_read(jk_conn *c, const struct jk_ih_call *k, const char *id,
                            struct json_object **out)
{
    jk_rc rc;
    *out = read_json(c, k->a, "Encounter", id, &rc);
    return rc ? rc : *out ? JK_OK : JK_ENOTFOUND;
}

jk_rc jk_ih_confirm(jk_conn *c, const struct jk_ih_call *k, struct jk_ih_visit *v)
{
    struct json_object *e, *d;
    if (strcmp(v->status, "pending"))
        return refuse(k, JK_ECONFLICT, "not-pending", NULL, "该次复诊没有待确认的病历",
                      "the visit has no uploaded record waiting for confirmation");
    jk_rc rc = set_status(c, k, v, "pending", "open", NULL);
    if (!rc) rc = encounter_read(c, k, v->id, &e);
    if (rc) return rc;
    add_str(e, "status", "in-progress");
    set_extension(e, JK_IH_BASIS_URL, "valueReference", ref(k->a, v->basis, NULL));
    rc = write_res(c, k, e, "Encounter", v->id, NULL);
    json_object_put(e);
    if (rc || strncmp(v->basis, "DocumentReference/", 18)) return rc;
    d = read_json(c, k->a, "DocumentReference", v->basis + 18, &rc);
    if (!d) return rc;
    add_str(d, "docStatus", "final");
    json_object_object_add(d, "authenticator", ref(k->a, "PractitionerRole", v->doctor));
    rc = write_res(c, k, d, "DocumentReference", v->basis + 18, NULL);
    json_object_put(d);
    return rc;
}

jk_rc jk_ih_end(jk_conn *c, const struct jk_ih_call *k, struct jk_ih_visit *v, int is_redirect,
                const char *reason)
{
    struct json_object *e, *per;
    char t[32];
    if (is_redirect && (!reason || !*reason))
        return jk_diag_add(k->d, JK_EINVAL, "required", "reason",
                           "reason is required when the patient is sent to in-person care");
    jk_rc rc = set_status(c, k, v, NULL, is_redirect ? "redirected" : "finished", reason);
    if (!rc) rc = encounter_read(c, k, v->id, &e);
    if (rc) return rc;
    add_str(e, "status", is_redirect ? "cancelled" : "finished");
    if (!json_object_object_get_ex(e, "period", &per)) {
        per = json_object_new_object();
        json_object_object_add(e, "period", per);
    }
    add_str(per, "end", jk_time_iso(k->now_ms, t, sizeof t));
    if (reason && *reason)
        set_extension(e, JK_IH_END_REASON_URL, "valueString", json_object_new_string(reason));
    rc = write_res(c, k, e, "Encounter", v->id, NULL);
    json_object_put(e);
    return rc;
}

/* ---- messages ---- */

jk_rc jk_ih_post(jk_conn *c, const struct jk_ih_call *k, const struct jk_ih_visit *v,
                 const struct jk_ih_message *m, const char **id)
{
    /* A write to the visit's row, not a read: it waits for a concurrent end to commit and
     * then sees it (PostgreSQL re-checks the row; SQLite has one writer), so no message lands
     * after the end. */
    static const char sql[] = "UPDATE ih_visit SET status = status WHERE id = ? AND status IN"
                              " ('pending', 'open')";
    char t[32];
    jk_stmt *s;
    jk_rc rc = jk_conn_query(c, sql, &s, NULL, "t", v->id);
    int is_live = !rc && jk_stmt_changes(s) > 0;
    if (s) jk_stmt_reset(s);
    if (rc) return rc;
    if (!is_live)
        return refuse(k, JK_ERULE, "visit-ended", NULL, "该次在线复诊已结束，不能再发送消息",
                      "the visit has ended: no more messages");
    int is_doctor = !strncmp(m->sender, "PractitionerRole/", 17);
    struct json_object *o = json_object_new_object(), *pl = json_object_new_object();
    *id = jk_fhir_new_id(k->a);
    add_str(o, "resourceType", "Communication");
    add_str(o, "id", *id);
    add_str(o, "status", "completed");
    json_object_object_add(o, "subject", ref(k->a, "Patient", v->patient_id));
    json_object_object_add(o, "encounter", ref(k->a, "Encounter", v->id));
    add_str(o, "sent", jk_time_iso(k->now_ms, t, sizeof t));
    json_object_object_add(o, "sender", ref(k->a, m->sender, NULL));
    json_object_object_add(o, "recipient",
                           one(is_doctor ? ref(k->a, "Patient", v->patient_id)
                                         : ref(k->a, "PractitionerRole", v->doctor)));
    if (m->text) {
        add_str(pl, "contentString", m->text);
    } else {
        struct json_object *att = json_object_new_object();
        if (m->image) {
            add_str(att, "contentType", m->image->content_type);
            add_str(att, "data", m->image->data_b64);
            json_object_object_add(att, "size", json_object_new_int64((int64_t)m->image->n_bytes));
            if (m->image->title) add_str(att, "title", m->image->title);
        } else {
            add_str(att, "url", m->video_url);
            add_str(att, "title", "视频问诊 / video consultation");
        }
        add_str(att, "creation", t);
        json_object_object_add(pl, "contentAttachment", att);
    }
    json_object_object_add(o, "payload", one(pl));
    rc = *id ? write_res(c, k, o, "Communication", *id, v->org) : JK_ENOMEM;
    json_object_put(o);
    return rc;
}

jk_rc jk_ih_messages(jk_conn *c, struct jk_arena *a, const char *id, struct json_object **out)
{
    static const char sql[] = "SELECT id FROM idx_reference WHERE type = 'Communication' AND"
                              " param = 'encounter' AND target_type = 'Encounter' AND"
                              " target_id = ? ORDER BY id LIMIT 2000";
    jk_stmt *s;
    int has_row;
    const char **ids = jk_arena_alloc(a, MAX_MSGS * sizeof *ids);
    size_t n = 0;
    if (!ids) return JK_ENOMEM;
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "t", id);
    while (!rc && has_row && n < MAX_MSGS) {
        if (!(ids[n++] = jk_stmt_col_dup(a, s, 0))) rc = JK_ENOMEM;
        if (!rc) rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    *out = rc ? NULL : json_object_new_array();
    for (size_t i = 0; !rc && i < n; i++) {
        struct json_object *m = read_json(c, a, "Communication", ids[i], &rc);
        if (m) json_object_array_add(*out, m);
    }
    if (rc) {
        json_object_put(*out);
        *out = NULL;
    }
    return rc;
}

jk_rc jk_ih_owned(jk_conn *c, const char *type, const char *id, int *is_owned, const char **how)
{
    static const char sql[] = "SELECT 1 FROM ih_visit WHERE id = ?";
    const char *visit = id;
    struct jk_arena *a = NULL;
    *is_owned = 0;
    *how = "is part of an online visit's record: it changes only through /api/ih/visits";
    if (!strcmp(type, "Communication")) { /* a message: whose visit? */
        struct jk_res r;
        struct json_object *o = NULL, *enc;
        if (!(a = jk_arena_new(0))) return JK_ENOMEM;
        jk_rc rc = jk_res_read(c, a, type, id, &r);
        const char *ref = NULL;
        if (!rc && (o = json_tokener_parse(r.body)) &&
            json_object_object_get_ex(o, "encounter", &enc))
            ref = jk_json_str(enc, "reference");
        visit = ref ? jk_arena_strdup(a, strncmp(ref, "Encounter/", 10) ? ref : ref + 10) : NULL;
        json_object_put(o);
        if (rc && rc != JK_ENOTFOUND && rc != JK_EGONE) {
            jk_arena_free(a);
            return rc;
        }
    }
    jk_stmt *s = NULL;
    int has_row = 0;
    jk_rc rc = visit ? jk_conn_prepare(c, sql, &s) : JK_OK;
    if (!rc && visit) rc = jk_stmt_text_arg(s, 1, visit, strlen(visit));
    if (!rc && visit) rc = jk_stmt_step(s, &has_row);
    if (s) jk_stmt_reset(s);
    *is_owned = has_row;
    jk_arena_free(a);
    return rc;
}
