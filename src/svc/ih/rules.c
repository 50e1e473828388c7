/* rules.c - rules/internet-hospital.json: the defaults, each institution's overrides, and the
 * calendar arithmetic of the visit gate (ages, years of practice, the diagnosis window). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "auth/account.h"
#include "core/rules.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "svc/ih/visit.h"

#define MS_PER_MIN 60000LL
#define MS_PER_DAY 86400000LL

struct org_policy {
    char *org;
    struct jk_ih_policy p;
};

struct licence {
    char *system, *code;
};

struct jk_ih_rules {
    struct jk_ih_policy defaults;
    struct org_policy *orgs;
    size_t n_orgs;
    struct licence *licences;
    size_t n_licences;
    unsigned roles[2]; /* patient, doctor: bit 1u << enum jk_role */
};

static const char *const role_lists[2] = {"patient", "doctor"};

/* Every rule of the file, in the order they are read; institutions last. */
static const char *const codes[] = {"time.utc_offset_minutes",
                                    "visit.prior_diagnosis_days",
                                    "visit.guardian_age_years",
                                    "doctor.min_practice_years",
                                    "visit.reply_hours",
                                    "visit.fee_fen",
                                    "visit.image_max_bytes",
                                    "retention.emr_years",
                                    "retention.chat_years",
                                    "doctor.licence_codes",
                                    "roles.patient",
                                    "roles.doctor",
                                    "institutions",
                                    NULL};

#define FEE_RULE 5 /* the one rule an institution may override */

struct ctx {
    const char *path;
    char *ptr;
    char *err;
    size_t errlen;
};

static jk_rc fail(const struct ctx *x, const char *msg)
{
    return jk_rules_fail(x->err, x->errlen, x->path, x->ptr, "%s", msg);
}

static jk_rc get_int(const struct ctx *x, struct json_object *v, long min, long max, int *out)
{
    return jk_rules_int(v, x->path, x->ptr, min, max, out, x->err, x->errlen);
}

/* Rule i of codes (a number) with value v into p. */
static jk_rc number_rule(const struct ctx *x, int i, struct json_object *v, struct jk_ih_policy *p)
{
    int n = 0;
    jk_rc rc;
    switch (i) {
    case 0: return get_int(x, v, -720, 840, &p->utc_offset_min);
    case 1: return get_int(x, v, 1, 36600, &p->prior_days);
    case 2: return get_int(x, v, 0, 18, &p->guardian_age_years);
    case 3: return get_int(x, v, 0, 60, &p->min_practice_years);
    case 4: return get_int(x, v, 1, 24 * 366, &p->reply_hours);
    case 5:
        if ((rc = get_int(x, v, 0, 100000000, &n))) return rc;
        p->fee_fen = n;
        return JK_OK;
    case 6:
        if ((rc = get_int(x, v, 1024, 64 << 20, &n))) return rc;
        p->image_max_bytes = n;
        return JK_OK;
    case 7: return get_int(x, v, 1, 200, &p->emr_years);
    default: return get_int(x, v, 1, 200, &p->chat_years);
    }
}

static const char *str_of(struct json_object *v)
{
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static jk_rc read_roles(const struct ctx *x, struct json_object *v, unsigned *out)
{
    *out = 0;
    if (!json_object_is_type(v, json_type_array)) return fail(x, "must be a list of role names");
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        const char *s = str_of(json_object_array_get_idx(v, i));
        const struct jk_role_info *ri = jk_role_by_name(s);
        if (!ri)
            return jk_rules_fail(x->err, x->errlen, x->path, x->ptr, "'%s' is not a role",
                                 s ? s : "");
        *out |= 1u << ri->role;
    }
    return JK_OK;
}

static jk_rc read_licences(const struct ctx *x, struct json_object *v, struct jk_ih_rules *r)
{
    size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
    if (!n) return fail(x, "must be a non-empty list of {system, code}");
    if (!(r->licences = calloc(n, sizeof *r->licences))) return JK_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(v, i);
        const char *sys = jk_json_str(e, "system"), *code = jk_json_str(e, "code");
        if (!json_object_is_type(e, json_type_object) || json_object_object_length(e) != 2 ||
            !sys || !*sys || !code || !*code)
            return fail(x, "each licence code is {system, code}, both non-empty");
        r->licences[i].system = strdup(sys);
        r->licences[i].code = strdup(code);
        r->n_licences = i + 1;
        if (!r->licences[i].system || !r->licences[i].code) return JK_ENOMEM;
    }
    return JK_OK;
}

static jk_rc read_overrides(const struct ctx *x0, struct json_object *v, struct jk_ih_rules *r)
{
    struct ctx x = *x0;
    char ptr[256];
    x.ptr = ptr;
    if (!json_object_is_type(v, json_type_object))
        return fail(x0, "must be an object of Organization id: {rule: value}");
    r->orgs = calloc(json_object_object_length(v) + 1, sizeof *r->orgs);
    if (!r->orgs) return JK_ENOMEM;
    json_object_object_foreach(v, org, rules)
    {
        struct org_policy *op = &r->orgs[r->n_orgs];
        snprintf(ptr, sizeof ptr, "%s/%.100s", x0->ptr, org);
        if (!(op->org = strdup(org))) return JK_ENOMEM;
        r->n_orgs++;
        op->p = r->defaults;
        if (!json_object_is_type(rules, json_type_object))
            return fail(&x, "must be an object of rule: value");
        json_object_object_foreach(rules, code, val)
        {
            snprintf(ptr, sizeof ptr, "%s/%.100s/%.100s", x0->ptr, org, code);
            if (strcmp(code, codes[FEE_RULE]))
                return fail(&x, "is not a rule an institution may override (visit.fee_fen)");
            jk_rc rc = number_rule(&x, FEE_RULE, val, &op->p);
            if (rc) return rc;
        }
    }
    return JK_OK;
}

const char *jk_ih_rules_path(void)
{
    const char *p = getenv("JIANKANG_IH_RULES");
    return p && *p ? p : "rules/internet-hospital.json";
}

void jk_ih_rules_free(struct jk_ih_rules *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_orgs; i++)
        free(r->orgs[i].org);
    for (size_t i = 0; i < r->n_licences; i++) {
        free(r->licences[i].system);
        free(r->licences[i].code);
    }
    free(r->orgs);
    free(r->licences);
    free(r);
}

jk_rc jk_ih_rules_load(const char *path, struct jk_ih_rules **out, char *err, size_t errlen)
{
    struct json_object *root = NULL, *rules = NULL, *rule, *v;
    char ptr[256] = "/rules";
    struct ctx x = {path ? path : jk_ih_rules_path(), ptr, err, errlen};
    struct jk_ih_rules *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r) return JK_ENOMEM;
    jk_rc rc = jk_rules_parse(x.path, &root, err, errlen);
    if (!rc) rc = jk_rules_top(root, x.path, "internet-hospital", &rules, err, errlen);
    if (!rc) rc = jk_rules_known_keys(rules, codes, x.path, "/rules", err, errlen);
    for (int i = 0; !rc && codes[i]; i++) {
        if (!json_object_object_get_ex(rules, codes[i], &rule)) {
            rc = jk_rules_fail(err, errlen, x.path, "/rules", "the rule '%s' is missing", codes[i]);
            break;
        }
        if ((rc = jk_rules_rule(rule, x.path, codes[i], ptr, sizeof ptr, &v, err, errlen))) break;
        if (i <= 8)
            rc = number_rule(&x, i, v, &r->defaults);
        else if (i == 9)
            rc = read_licences(&x, v, r);
        else if (i == 10 || i == 11)
            rc = read_roles(&x, v, &r->roles[i - 10]);
        else
            rc = read_overrides(&x, v, r);
    }
    if (!rc && r->roles[1] >> JK_ROLE_RESIDENT & 1u)
        rc = jk_rules_fail(err, errlen, x.path, "/rules/roles.doctor/value",
                           "a resident is never the doctor of a visit");
    json_object_put(root);
    if (rc) {
        jk_ih_rules_free(r);
        return rc;
    }
    *out = r;
    return JK_OK;
}

static struct jk_ih_rules *installed;

jk_rc jk_ih_start(const char *path, char *err, size_t errlen)
{
    struct jk_ih_rules *r;
    jk_rc rc = jk_ih_rules_load(path, &r, err, errlen);
    if (rc) return rc;
    jk_ih_rules_free(installed);
    installed = r;
    jk_fhir_set_owner("Encounter", jk_ih_owned);
    jk_fhir_set_owner("Communication", jk_ih_owned);
    return JK_OK;
}

void jk_ih_stop(void)
{
    jk_ih_rules_free(installed);
    installed = NULL;
}

const struct jk_ih_rules *jk_ih_rules(void)
{
    return installed;
}

void jk_ih_policy(const struct jk_ih_rules *r, const char *org, struct jk_ih_policy *out)
{
    if (org && !strncmp(org, "Organization/", 13)) org += 13;
    for (size_t i = 0; org && i < r->n_orgs; i++)
        if (!strcmp(r->orgs[i].org, org)) {
            *out = r->orgs[i].p;
            return;
        }
    *out = r->defaults;
}

int jk_ih_role_may(const struct jk_ih_rules *r, const char *list, const char *role)
{
    const struct jk_role_info *ri = jk_role_by_name(role);
    for (int k = 0; ri && k < 2; k++)
        if (!strcmp(list, role_lists[k])) return (int)(r->roles[k] >> ri->role & 1u);
    return 0;
}

int jk_ih_is_licence(const struct jk_ih_rules *r, const char *system, const char *code)
{
    for (size_t i = 0; system && code && i < r->n_licences; i++)
        if (!strcmp(r->licences[i].system, system) && !strcmp(r->licences[i].code, code)) return 1;
    return 0;
}

/* ---- calendar arithmetic ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + s[i] - '0';
    }
    return v;
}

static int days_in_month(int y, int m)
{
    static const int n[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int is_leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && is_leap ? 29 : n[m - 1];
}

/* The latest day a FHIR date, partial date or dateTime's date part can be. */
static int latest_day(const char *s, int *y, int *m, int *d)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 4 || (*y = digits(s, 4)) < 1) return -1;
    *m = 12;
    if (n > 4) {
        if (n < 7 || s[4] != '-' || (*m = digits(s + 5, 2)) < 1 || *m > 12) return -1;
    }
    *d = days_in_month(*y, *m);
    if (n > 7) {
        int dd;
        if (n < 10 || s[7] != '-' || (dd = digits(s + 8, 2)) < 1 || dd > *d) return -1;
        if (n > 10 && s[10] != 'T') return -1;
        *d = dd;
    } else if (n != 4 && n != 7) {
        return -1;
    }
    return 0;
}

int jk_ih_years_since(const char *date, int64_t now_ms, int utc_offset_min)
{
    int y, m, d, ny, nm, nd;
    if (latest_day(date, &y, &m, &d)) return -1;
    jk_time_civil_from_days(floor_div(now_ms + utc_offset_min * MS_PER_MIN, MS_PER_DAY), &ny, &nm,
                            &nd);
    int years = ny - y - (nm < m || (nm == m && nd < d));
    return years < 0 ? 0 : years;
}

jk_rc jk_ih_instant(const char *s, int utc_offset_min, int64_t *ms)
{
    size_t n = s ? strlen(s) : 0;
    int y, m, d;
    if (n > 10) return jk_time_parse_iso(s, n, ms) ? JK_EINVAL : JK_OK;
    if (latest_day(s, &y, &m, &d)) return JK_EINVAL;
    *ms = (jk_time_days_from_civil(y, m, d) + 1) * MS_PER_DAY - utc_offset_min * MS_PER_MIN - 1;
    return JK_OK;
}

int jk_ih_within_days(int64_t when_ms, int64_t now_ms, int days)
{
    return when_ms >= now_ms - (int64_t)days * MS_PER_DAY && when_ms <= now_ms + MS_PER_DAY;
}
