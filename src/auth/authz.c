/* authz.c - the authorisation decision and the views it is made from (docs/internals/authz.md). */
#include "auth/authz.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "core/arena.h"
#include "core/log.h"
#include "fhir/searchparam.h"
#include "fhir/validate.h"

#define MAX_VIEW_IDS    2000 /* patients or organisations in one view */
#define MAX_ORG_DEPTH   8    /* levels of Organization.partOf below the principal's */
#define CACHE_SLOTS     512
#define MAX_GRANT_TYPES 32 /* distinct resource types named by one view's consents */

/* A growable list of distinct strings, sorted once built. */
struct strs {
    char **v;
    size_t n, cap;
};

static jk_rc strs_add(struct strs *s, const char *x, size_t n)
{
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->v[i]) == n && !memcmp(s->v[i], x, n)) return JK_OK;
    if (s->n == MAX_VIEW_IDS) return JK_OK; /* logged by the caller's total */
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v) return JK_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strndup(x, n))) return JK_ENOMEM;
    s->n++;
    return JK_OK;
}

static jk_rc strs_add_all(struct strs *s, const struct strs *from)
{
    jk_rc rc = JK_OK;
    for (size_t i = 0; i < from->n && !rc; i++)
        rc = strs_add(s, from->v[i], strlen(from->v[i]));
    return rc;
}

static void strs_free(struct strs *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* The patients visible for one resource type named by a consent, and for every other type. */
struct typed {
    char type[64];
    struct strs patients;
};

struct jk_authz {
    int refs;
    uint64_t gen;     /* the write generation it was made at */
    int64_t built_ms; /* when */
    const struct jk_security_rules *rules;
    struct jk_principal p;
    struct strs patients; /* resident: self and wards; staff: treatment relationships and
                           * consents without a type limit */
    struct typed typed[MAX_GRANT_TYPES]; /* staff: plus consents limited to a type */
    size_t n_typed;
    struct strs orgs;    /* organisations whose holdings it sees: its own, or its subtree */
    struct strs own_org; /* its own organisation alone */
};

/* ---- reading the store ---- */

/* Runs sql (prepared once) with text args and adds column 0 of each row to out. */
static jk_rc collect(jk_conn *c, const char *sql, const char *const *args, size_t n_args,
                     struct strs *out)
{
    jk_stmt *s;
    jk_rc rc = jk_conn_prepare_once(c, sql, &s);
    if (rc) return rc;
    for (size_t i = 0; i < n_args && !rc; i++)
        rc = jk_stmt_text_arg(s, (int)i + 1, args[i], strlen(args[i]));
    int has_row = 0;
    while (!rc && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        size_t n;
        const char *v = jk_stmt_col_text(s, 0, &n);
        if (v && n) rc = strs_add(out, v, n);
    }
    jk_stmt_finalize(s);
    return rc;
}

/* The string member key of obj, or "" when there is none. */
static const char *str_of(struct json_object *obj, const char *key)
{
    struct json_object *v;
    const char *s =
        json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_string)
            ? json_object_get_string(v)
            : NULL;
    return s ? s : "";
}

/* The current body of type/id parsed, or NULL when there is none. */
static struct json_object *read_json(jk_conn *c, const char *type, const char *id)
{
    static const char sql[] = "SELECT body FROM resource_version WHERE type = ? AND id = ?"
                              " AND is_current = 1 AND deleted = 0";
    jk_stmt *s;
    struct json_object *o = NULL;
    int has_row = 0;
    if (jk_conn_prepare(c, sql, &s)) return NULL;
    if (!jk_stmt_text_arg(s, 1, type, strlen(type)) && !jk_stmt_text_arg(s, 2, id, strlen(id)) &&
        !jk_stmt_step(s, &has_row) && has_row) {
        const char *body = jk_stmt_col_text(s, 0, NULL);
        if (body) o = json_tokener_parse(body);
    }
    jk_stmt_reset(s);
    return o;
}

/* The id of a "Type/id" reference member (obj.key.reference), or NULL. */
static const char *ref_id(struct json_object *obj, const char *key, const char *type)
{
    struct json_object *r, *v;
    if (!json_object_object_get_ex(obj, key, &r) || !json_object_object_get_ex(r, "reference", &v))
        return NULL;
    const char *s = json_object_get_string(v);
    size_t n = strlen(type);
    return s && !strncmp(s, type, n) && s[n] == '/' && s[n + 1] ? s + n + 1 : NULL;
}

/* Whether now_ms falls in the Period obj.key (an absent period, or absent ends, are open). */
static int period_covers(struct json_object *obj, const char *key, int64_t now_ms)
{
    struct json_object *p, *v;
    int64_t lo, hi;
    if (!json_object_object_get_ex(obj, key, &p)) return 1;
    if (json_object_object_get_ex(p, "start", &v)) {
        const char *s = json_object_get_string(v);
        if (!s || jk_sp_date_range(s, strlen(s), &lo, &hi) || now_ms < lo) return 0;
    }
    if (json_object_object_get_ex(p, "end", &v)) {
        const char *s = json_object_get_string(v);
        if (!s || jk_sp_date_range(s, strlen(s), &lo, &hi) || now_ms > hi) return 0;
    }
    return 1;
}

/* Whether code is one of the space-separated words of list. */
static int word_in(const char *list, const char *code)
{
    size_t n = strlen(code);
    for (const char *p = list; n && (p = strstr(p, code)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || !p[n])) return 1;
    return 0;
}

/* Wards: the patients of the RelatedPersons that the resident's Patient links to, when the
 * relationship makes the resident their guardian (access.guardian_relationships). */
static jk_rc add_wards(jk_conn *c, struct jk_authz *az, const char *self, int64_t now_ms)
{
    struct json_object *pat = read_json(c, "Patient", self), *links;
    jk_rc rc = JK_OK;
    if (!pat) return JK_OK;
    if (json_object_object_get_ex(pat, "link", &links) &&
        json_object_is_type(links, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(links) && !rc; i++) {
            struct json_object *l = json_object_array_get_idx(links, i);
            const char *rp_id = ref_id(l, "other", "RelatedPerson");
            if (!rp_id || strcmp(str_of(l, "type"), "seealso")) continue;
            struct json_object *rp = read_json(c, "RelatedPerson", rp_id), *rels, *act;
            if (!rp) continue;
            int is_guardian = 0;
            if (json_object_object_get_ex(rp, "relationship", &rels) &&
                json_object_is_type(rels, json_type_array))
                for (size_t k = 0; k < json_object_array_length(rels); k++) {
                    struct json_object *codings;
                    if (!json_object_object_get_ex(json_object_array_get_idx(rels, k), "coding",
                                                   &codings))
                        continue;
                    for (size_t j = 0; j < json_object_array_length(codings); j++) {
                        const char *code = str_of(json_object_array_get_idx(codings, j), "code");
                        if (word_in(az->rules->guardian_codes, code)) is_guardian = 1;
                    }
                }
            int is_active =
                !json_object_object_get_ex(rp, "active", &act) || json_object_get_boolean(act);
            const char *ward = ref_id(rp, "patient", "Patient");
            if (ward && is_guardian && is_active && period_covers(rp, "period", now_ms))
                rc = strs_add(&az->patients, ward, strlen(ward));
            json_object_put(rp);
        }
    }
    json_object_put(pat);
    return rc;
}

/* The patients with a current treatment relationship with one of actors
 * (access.treatment_relationships). */
static jk_rc add_relationships(jk_conn *c, struct jk_authz *az, const struct strs *actors)
{
    jk_rc rc = JK_OK;
    for (int i = 0; i < az->rules->n_rels && !rc; i++) {
        const struct jk_relationship_rule *rr = &az->rules->rels[i];
        char sql[2048];
        const char *args[64];
        size_t n_args = 0;
        int len = snprintf(sql, sizeof sql,
                           "SELECT DISTINCT p.target_id FROM idx_reference a"
                           " JOIN idx_token s ON s.type = a.type AND s.id = a.id AND s.param = ?"
                           " JOIN idx_reference p ON p.type = a.type AND p.id = a.id"
                           " AND p.param = ? AND p.target_type = 'Patient'"
                           " WHERE a.type = ? AND a.param = ? AND s.code IN (");
        args[n_args++] = rr->status;
        args[n_args++] = rr->patient;
        args[n_args++] = rr->type;
        args[n_args++] = rr->actor;
        char words[sizeof rr->statuses];
        memcpy(words, rr->statuses, sizeof words);
        char *save = NULL;
        int first = 1;
        for (char *w = strtok_r(words, " ", &save); w && n_args < 40;
             w = strtok_r(NULL, " ", &save)) {
            len += snprintf(sql + len, sizeof sql - (size_t)len, "%s?", first ? "" : ", ");
            args[n_args++] = w;
            first = 0;
        }
        len += snprintf(sql + len, sizeof sql - (size_t)len, ") AND (");
        char ids[8][JK_REF_MAX + 1];
        for (size_t k = 0; k < actors->n && k < 8; k++) {
            const char *slash = strchr(actors->v[k], '/');
            snprintf(ids[k], sizeof ids[k], "%.*s", (int)(slash - actors->v[k]), actors->v[k]);
            len += snprintf(sql + len, sizeof sql - (size_t)len,
                            "%s(a.target_type = ? AND a.target_id = ?)", k ? " OR " : "");
            args[n_args++] = ids[k];
            args[n_args++] = slash + 1;
        }
        snprintf(sql + len, sizeof sql - (size_t)len, ")");
        rc = collect(c, sql, args, n_args, &az->patients);
    }
    return rc;
}

/* Adds patient to the view for the types of a consent (NULL: all types). */
static jk_rc add_grant(struct jk_authz *az, const char *patient, const char *type)
{
    if (!type) return strs_add(&az->patients, patient, strlen(patient));
    size_t i = 0;
    while (i < az->n_typed && strcmp(az->typed[i].type, type))
        i++;
    if (i == az->n_typed) {
        if (i == MAX_GRANT_TYPES || strlen(type) >= sizeof az->typed[i].type) return JK_OK;
        snprintf(az->typed[i].type, sizeof az->typed[i].type, "%s", type);
        az->n_typed++;
    }
    return strs_add(&az->typed[i].patients, patient, strlen(patient));
}

/* Consents in force that permit one of actors to see a patient's records: status active,
 * provision.type permit (or absent), provision.period covering now, limited to the resource
 * types of provision.class when it names any. */
static jk_rc add_consents(jk_conn *c, struct jk_authz *az, const struct strs *actors,
                          int64_t now_ms)
{
    static const char sql[] = "SELECT DISTINCT a.id FROM idx_reference a"
                              " WHERE a.type = 'Consent' AND a.param = 'actor'"
                              " AND a.target_type = ? AND a.target_id = ?";
    struct strs ids = {0};
    jk_rc rc = JK_OK;
    for (size_t k = 0; k < actors->n && !rc; k++) {
        char type[JK_REF_MAX + 1];
        const char *slash = strchr(actors->v[k], '/');
        snprintf(type, sizeof type, "%.*s", (int)(slash - actors->v[k]), actors->v[k]);
        const char *args[] = {type, slash + 1};
        rc = collect(c, sql, args, 2, &ids);
    }
    for (size_t i = 0; i < ids.n && !rc; i++) {
        struct json_object *cs = read_json(c, "Consent", ids.v[i]), *prov, *classes;
        if (!cs) continue;
        const char *patient = ref_id(cs, "patient", "Patient");
        int is_in_force = patient && !strcmp(str_of(cs, "status"), "active") &&
                          json_object_object_get_ex(cs, "provision", &prov) &&
                          strcmp(str_of(prov, "type"), "deny") &&
                          period_covers(prov, "period", now_ms);
        size_t n_classes = 0;
        if (is_in_force && json_object_object_get_ex(prov, "class", &classes) &&
            json_object_is_type(classes, json_type_array))
            n_classes = json_object_array_length(classes);
        for (size_t k = 0; is_in_force && k < n_classes && !rc; k++) {
            const char *t = str_of(json_object_array_get_idx(classes, k), "code");
            if (jk_fhir_is_resource_type(t, strlen(t))) rc = add_grant(az, patient, t);
        }
        if (is_in_force && !n_classes && !rc) rc = add_grant(az, patient, NULL);
        json_object_put(cs);
    }
    strs_free(&ids);
    return rc;
}

/* The organisation org and every one below it through Organization.partOf. */
static jk_rc add_subtree(jk_conn *c, struct strs *orgs, const char *org)
{
    static const char sql[] = "SELECT id FROM idx_reference WHERE type = 'Organization'"
                              " AND param = 'partof' AND target_type = 'Organization'"
                              " AND target_id = ?";
    jk_rc rc = strs_add(orgs, org, strlen(org));
    for (size_t from = 0, depth = 0; !rc && from < orgs->n && depth <= MAX_ORG_DEPTH; depth++) {
        size_t to = orgs->n;
        struct strs kids = {0};
        for (size_t i = from; i < to && !rc; i++) {
            const char *args[] = {orgs->v[i] + strlen("Organization/")};
            rc = collect(c, sql, args, 1, &kids);
        }
        for (size_t i = 0; i < kids.n && !rc; i++) {
            char ref[JK_REF_MAX + 1];
            int n = snprintf(ref, sizeof ref, "Organization/%s", kids.v[i]);
            rc = strs_add(orgs, ref, (size_t)n);
        }
        strs_free(&kids);
        from = to;
    }
    return rc;
}

static jk_rc build(jk_conn *c, const struct jk_security_rules *r, const struct jk_principal *p,
                   int64_t now_ms, struct jk_authz *az)
{
    jk_rc rc = JK_OK;
    az->rules = r;
    az->p = *p;
    az->built_ms = now_ms;
    if (p->org[0]) rc = strs_add(&az->own_org, p->org, strlen(p->org));
    switch (p->role) {
    case JK_ROLE_RESIDENT:
        if (!strncmp(p->link, "Patient/", 8) && p->link[8]) {
            rc = strs_add(&az->patients, p->link + 8, strlen(p->link + 8));
            if (!rc) rc = add_wards(c, az, p->link + 8, now_ms);
        }
        break;
    case JK_ROLE_DOCTOR:
    case JK_ROLE_NURSE:
    case JK_ROLE_PHARMACIST: {
        struct strs actors = {0};
        if (p->link[0]) rc = strs_add(&actors, p->link, strlen(p->link));
        if (!rc && !strncmp(p->link, "PractitionerRole/", 17)) {
            struct json_object *pr = read_json(c, "PractitionerRole", p->link + 17);
            const char *prac = pr ? ref_id(pr, "practitioner", "Practitioner") : NULL;
            char ref[JK_REF_MAX + 1];
            if (prac) {
                int n = snprintf(ref, sizeof ref, "Practitioner/%s", prac);
                rc = strs_add(&actors, ref, (size_t)n);
            }
            json_object_put(pr);
        }
        if (!rc && p->org[0]) rc = strs_add(&actors, p->org, strlen(p->org));
        if (!rc) rc = add_relationships(c, az, &actors);
        if (!rc) rc = add_consents(c, az, &actors, now_ms);
        for (size_t i = 0; i < az->n_typed && !rc; i++)
            rc = strs_add_all(&az->typed[i].patients, &az->patients);
        if (!rc) rc = strs_add_all(&az->orgs, &az->own_org);
        strs_free(&actors);
        break;
    }
    case JK_ROLE_PUBLIC_HEALTH:
    case JK_ROLE_REGULATOR:
        if (p->org[0]) rc = add_subtree(c, &az->orgs, p->org);
        break;
    default: rc = strs_add_all(&az->orgs, &az->own_org); break;
    }
    if (az->patients.n == MAX_VIEW_IDS || az->orgs.n == MAX_VIEW_IDS)
        jk_log_warn("authz",
                    "account %lld sees more than %d patients or organisations; the "
                    "view is cut there",
                    (long long)p->account_id, MAX_VIEW_IDS);
    return rc;
}

static void view_free(struct jk_authz *az)
{
    strs_free(&az->patients);
    strs_free(&az->orgs);
    strs_free(&az->own_org);
    for (size_t i = 0; i < az->n_typed; i++)
        strs_free(&az->typed[i].patients);
    free(az);
}

void jk_authz_release(struct jk_authz *az)
{
    if (az && __atomic_sub_fetch(&az->refs, 1, __ATOMIC_ACQ_REL) == 0) view_free(az);
}

/* ---- the cache ---- */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct jk_authz *cache[CACHE_SLOTS];
static uint64_t generation = 1;

void jk_authz_touch(void)
{
    __atomic_add_fetch(&generation, 1, __ATOMIC_ACQ_REL);
}

jk_rc jk_authz_get(jk_conn *c, const struct jk_security_rules *r, const struct jk_principal *p,
                   int64_t now_ms, struct jk_authz **out)
{
    uint64_t gen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
    size_t slot = (size_t)((uint64_t)p->token_id % CACHE_SLOTS);
    int64_t ttl_ms = (int64_t)r->context_cache_seconds * 1000;
    pthread_mutex_lock(&cache_lock);
    struct jk_authz *hit = cache[slot];
    if (hit && hit->p.token_id == p->token_id && hit->gen == gen && hit->rules == r &&
        now_ms - hit->built_ms < ttl_ms && !strcmp(hit->p.scopes, p->scopes)) {
        __atomic_add_fetch(&hit->refs, 1, __ATOMIC_ACQ_REL);
        pthread_mutex_unlock(&cache_lock);
        *out = hit;
        return JK_OK;
    }
    pthread_mutex_unlock(&cache_lock);
    struct jk_authz *az = calloc(1, sizeof *az);
    if (!az) return JK_ENOMEM;
    az->refs = 1;
    az->gen = gen;
    jk_rc rc = build(c, r, p, now_ms, az);
    if (rc) {
        view_free(az);
        return rc;
    }
    if (ttl_ms > 0) {
        __atomic_add_fetch(&az->refs, 1, __ATOMIC_ACQ_REL);
        pthread_mutex_lock(&cache_lock);
        struct jk_authz *old = cache[slot];
        cache[slot] = az;
        pthread_mutex_unlock(&cache_lock);
        jk_authz_release(old);
    }
    *out = az;
    return JK_OK;
}

/* ---- the decision ---- */

int jk_authz_is_patient_data(const char *type)
{
    /* A Schedule is an institution's roster of a department, doctor or device (the booking
     * pool's source), although FHIR puts it in the Patient compartment through its actor. */
    if (!strcmp(type, "Schedule")) return 0;
    return !strcmp(type, "Patient") || jk_sp_patient_compartment(type) != NULL;
}

static void some(struct jk_az_scope *s, const struct strs *patients, const struct strs *orgs)
{
    s->mode = JK_AZ_SOME;
    if (patients) {
        s->patients = (const char *const *)patients->v;
        s->n_patients = patients->n;
    }
    if (orgs) {
        s->orgs = (const char *const *)orgs->v;
        s->n_orgs = orgs->n;
    }
}

static void none(struct jk_az_scope *s, const char *why)
{
    s->mode = JK_AZ_NONE;
    s->why = why;
}

void jk_authz_scope(const struct jk_authz *az, enum jk_az_action act, const char *type,
                    int is_break_glass, struct jk_az_scope *out)
{
    static const char perms[] = {[JK_AZ_READ] = 'r',   [JK_AZ_SEARCH] = 's', [JK_AZ_COUNT] = 's',
                                 [JK_AZ_CREATE] = 'c', [JK_AZ_UPDATE] = 'u', [JK_AZ_DELETE] = 'd'};
    const struct jk_principal *p = &az->p;
    int is_read = act == JK_AZ_READ || act == JK_AZ_SEARCH || act == JK_AZ_COUNT;
    int is_pd = jk_authz_is_patient_data(type);
    memset(out, 0, sizeof *out);
    char want[128];
    snprintf(want, sizeof want, "%s/%s.%c",
             p->role == JK_ROLE_RESIDENT ? "patient"
             : p->role == JK_ROLE_SYSTEM ? "system"
                                         : "user",
             type, perms[act]);
    if (!jk_scope_covers(p->scopes, want))
        return none(out, "the token's scopes do not allow this interaction on this type");
    if (!strcmp(type, "AuditEvent"))
        return none(out, "the audit trail is read at /fhir/R4/AuditEvent and cannot be written");
    if (!is_pd && is_read && p->role != JK_ROLE_SYSTEM) {
        out->mode = JK_AZ_ALL; /* the directory: organisations, practitioners, ... */
        return;
    }
    switch (p->role) {
    case JK_ROLE_RESIDENT:
        if (!is_pd) return none(out, "residents cannot change directory records");
        if (!is_read && strcmp(type, "Consent"))
            return none(out, "residents may grant and revoke consents, not change records");
        return some(out, &az->patients, NULL);
    case JK_ROLE_DOCTOR:
    case JK_ROLE_NURSE:
    case JK_ROLE_PHARMACIST: {
        if (!is_pd) return none(out, "clinicians cannot change directory records");
        if (is_read && is_break_glass && (az->rules->break_glass_roles >> p->role & 1u)) {
            out->mode = JK_AZ_ALL;
            out->is_break_glass = 1;
            return;
        }
        const struct strs *pats = &az->patients;
        for (size_t i = 0; i < az->n_typed; i++)
            if (!strcmp(az->typed[i].type, type)) pats = &az->typed[i].patients;
        if (act == JK_AZ_CREATE) return some(out, pats, NULL);
        if (act == JK_AZ_UPDATE || act == JK_AZ_DELETE) return some(out, NULL, &az->own_org);
        return some(out, pats, &az->orgs);
    }
    case JK_ROLE_INSTITUTION_ADMIN:
        if (is_pd) return none(out, "institution administrators do not see patients' records");
        return some(out, NULL, &az->own_org);
    case JK_ROLE_PUBLIC_HEALTH:
        if (!is_read) return none(out, "public-health staff read records, they do not write them");
        if (!word_in(az->rules->public_health_types, type))
            return none(out, "this type is not among the public-health programmes' records "
                             "(access.public_health_types)");
        return some(out, NULL, &az->orgs);
    case JK_ROLE_REGULATOR:
        if (act != JK_AZ_COUNT)
            return none(out, "regulators see aggregates (_summary=count) and the audit trail, "
                             "not records");
        return some(out, NULL, &az->orgs);
    case JK_ROLE_PLATFORM_ADMIN:
        if (is_pd) return none(out, "platform administrators do not see patients' records");
        out->mode = JK_AZ_ALL;
        return;
    case JK_ROLE_SYSTEM:
        if (!is_pd && is_read) {
            out->mode = JK_AZ_ALL;
            return;
        }
        return some(out, NULL, &az->own_org);
    case JK_N_ROLES: break;
    }
    none(out, "unknown role");
}

jk_rc jk_authz_decide(const struct jk_authz *az, enum jk_az_action act, const struct jk_az_facts *f,
                      int is_break_glass, int *was_break_glass, const char **why)
{
    struct jk_az_scope s;
    if (was_break_glass) *was_break_glass = 0;
    for (int pass = 0; pass < 1 + (is_break_glass != 0); pass++) {
        jk_authz_scope(az, act, f->type, pass, &s);
        int is_allowed = s.mode == JK_AZ_ALL;
        for (size_t i = 0; s.mode == JK_AZ_SOME && i < f->n_patients && !is_allowed; i++)
            for (size_t k = 0; k < s.n_patients && !is_allowed; k++)
                is_allowed = !strcmp(f->patients[i], s.patients[k]);
        for (size_t k = 0; s.mode == JK_AZ_SOME && f->org && k < s.n_orgs && !is_allowed; k++)
            is_allowed = !strcmp(f->org, s.orgs[k]);
        if (is_allowed) {
            if (was_break_glass) *was_break_glass = s.is_break_glass;
            return JK_OK;
        }
    }
    *why = s.mode == JK_AZ_NONE ? s.why
                                : "this account has no access to this patient's records (no "
                                  "treatment relationship, consent or guardianship) and its "
                                  "institution does not hold the record";
    return JK_EFORBIDDEN;
}

jk_rc jk_authz_facts(jk_conn *c, struct jk_arena *a, const char *type, const char *id,
                     struct jk_az_facts *out)
{
    static const char refs_sql[] = "SELECT param, target_id FROM idx_reference WHERE type = ?"
                                   " AND id = ? AND target_type = 'Patient'";
    static const char holder_sql[] = "SELECT org FROM res_owner WHERE type = ? AND id = ?";
    memset(out, 0, sizeof *out);
    out->type = type;
    const char **ids = jk_arena_alloc(a, 16 * sizeof *ids);
    if (!ids) return JK_ENOMEM;
    out->patients = ids;
    if (!strcmp(type, "Patient")) {
        ids[out->n_patients++] = id;
    } else {
        const char *const *comp = jk_sp_patient_compartment(type);
        jk_stmt *s;
        int has_row = 0;
        jk_rc rc = jk_conn_prepare(c, refs_sql, &s);
        if (rc) return rc;
        jk_stmt_text_arg(s, 1, type, strlen(type));
        jk_stmt_text_arg(s, 2, id, strlen(id));
        while (comp && !(rc = jk_stmt_step(s, &has_row)) && has_row && out->n_patients < 16) {
            const char *param = jk_stmt_col_text(s, 0, NULL);
            size_t n;
            const char *pid = jk_stmt_col_text(s, 1, &n);
            int is_comp = 0;
            for (size_t k = 0; param && comp[k] && !is_comp; k++)
                is_comp = !strcmp(comp[k], param);
            if (is_comp && pid && !(ids[out->n_patients++] = jk_arena_strndup(a, pid, n)))
                rc = JK_ENOMEM;
        }
        jk_stmt_reset(s);
        if (rc) return rc;
    }
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, holder_sql, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, type, strlen(type));
    jk_stmt_text_arg(s, 2, id, strlen(id));
    if (!(rc = jk_stmt_step(s, &has_row)) && has_row) {
        size_t n;
        const char *org = jk_stmt_col_text(s, 0, &n);
        if (org && !(out->org = jk_arena_strndup(a, org, n))) rc = JK_ENOMEM;
    }
    jk_stmt_reset(s);
    return rc;
}

jk_rc jk_authz_set_holder(jk_conn *c, const char *type, const char *id, const char *org)
{
    static const char sql[] = "INSERT INTO res_owner (type, id, org) VALUES (?, ?, ?)"
                              " ON CONFLICT (type, id) DO NOTHING";
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, type, strlen(type));
    jk_stmt_text_arg(s, 2, id, strlen(id));
    jk_stmt_text_arg(s, 3, org, strlen(org));
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}
