/* rules.c - rules/prescription.json and rules/formulary.json, read and checked completely:
 * the limits of a prescription, the classes never prescribed online or long-term, the
 * severity of each clinical finding, the drugs and each institution's own list. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "core/arena.h"
#include "core/rules.h"
#include "core/time.h"
#include "svc/rx/rx_int.h"

#define MS_PER_DAY 86400000LL
#define MS_PER_MIN 60000LL

static const char *const class_names[] = {
    "ordinary", "antimicrobial", "narcotic",  "psychotropic-1",  "psychotropic-2",
    "toxic",    "radioactive",   "precursor", "special-storage", NULL};

const char *const jk_rx_graded[JK_RX_N_GRADED] = {
    "dose.range", "dose.daily", "quantity", "duplicate", "allergy", "age", "sex"};

struct ctx {
    const char *path;
    char ptr[256];
    char *err;
    size_t errlen;
};

static jk_rc fail(struct ctx *x, const char *msg)
{
    return jk_rules_fail(x->err, x->errlen, x->path, x->ptr, "%s", msg);
}

static int class_index(const char *s)
{
    for (int i = 0; s && class_names[i]; i++)
        if (!strcmp(class_names[i], s)) return i;
    return -1;
}

/* A list of class names into a bit set. */
static jk_rc read_classes(struct ctx *x, struct json_object *v, unsigned *out)
{
    *out = 0;
    if (!json_object_is_type(v, json_type_array)) return fail(x, "must be a list of drug classes");
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        struct json_object *e = json_object_array_get_idx(v, i);
        int k = class_index(json_object_is_type(e, json_type_string) ? json_object_get_string(e)
                                                                     : NULL);
        if (k < 0)
            return jk_rules_fail(x->err, x->errlen, x->path, x->ptr,
                                 "'%s' is not a drug class (ordinary, antimicrobial, narcotic, "
                                 "psychotropic-1, psychotropic-2, toxic, radioactive, precursor, "
                                 "special-storage)",
                                 json_object_get_string(e));
        *out |= 1u << k;
    }
    return JK_OK;
}

static jk_rc read_severity(struct ctx *x, struct json_object *v, struct jk_rx_rules *r)
{
    if (!json_object_is_type(v, json_type_object) || json_object_object_length(v) != JK_RX_N_GRADED)
        return fail(x, "must be an object of each of dose.range, dose.daily, quantity, "
                       "duplicate, allergy, age, sex: \"refuse\" or \"warn\"");
    for (int i = 0; i < JK_RX_N_GRADED; i++) {
        struct json_object *e;
        const char *s = json_object_object_get_ex(v, jk_rx_graded[i], &e) &&
                                json_object_is_type(e, json_type_string)
                            ? json_object_get_string(e)
                            : "";
        if (strcmp(s, "refuse") && strcmp(s, "warn"))
            return jk_rules_fail(x->err, x->errlen, x->path, x->ptr,
                                 "'%s' must be \"refuse\" or \"warn\"", jk_rx_graded[i]);
        r->severity[i] = strcmp(s, "refuse") ? JK_RX_WARN : JK_RX_REFUSE;
    }
    return JK_OK;
}

/* ---- prescription.json ---- */

static const char *const rx_codes[] = {"time.utc_offset_minutes",
                                       "rx.max_items",
                                       "rx.max_days",
                                       "rx.max_days_long_term",
                                       "rx.long_term_review_days",
                                       "rx.long_term_excluded_classes",
                                       "rx.online_forbidden_classes",
                                       "rx.validity_days",
                                       "rx.severity",
                                       NULL};

static jk_rc rx_rule(struct ctx *x, int i, struct json_object *v, struct jk_rx_rules *r)
{
    struct jk_rx_limits *l = &r->limits;
    switch (i) {
    case 0:
        return jk_rules_int(v, x->path, x->ptr, -720, 840, &l->utc_offset_min, x->err, x->errlen);
    case 1:
        return jk_rules_int(v, x->path, x->ptr, 1, JK_RX_MAX_ITEMS, &l->max_items, x->err,
                            x->errlen);
    case 2: return jk_rules_int(v, x->path, x->ptr, 1, 366, &l->max_days, x->err, x->errlen);
    case 3:
        return jk_rules_int(v, x->path, x->ptr, 1, 366, &l->max_days_long_term, x->err, x->errlen);
    case 4:
        return jk_rules_int(v, x->path, x->ptr, 1, 366, &l->long_term_review_days, x->err,
                            x->errlen);
    case 5: return read_classes(x, v, &r->long_term_excluded);
    case 6: return read_classes(x, v, &r->online_forbidden);
    case 7: return jk_rules_int(v, x->path, x->ptr, 1, 3, &l->validity_days, x->err, x->errlen);
    default: return read_severity(x, v, r);
    }
}

static jk_rc load_rx(const char *path, struct jk_rx_rules *r, char *err, size_t errlen)
{
    struct json_object *root = NULL, *rules = NULL, *rule, *v;
    struct ctx x = {.path = path, .err = err, .errlen = errlen};
    jk_rc rc = jk_rules_parse(path, &root, err, errlen);
    if (!rc) rc = jk_rules_top(root, path, "prescription", &rules, err, errlen);
    if (!rc) rc = jk_rules_known_keys(rules, rx_codes, path, "/rules", err, errlen);
    for (int i = 0; !rc && rx_codes[i]; i++) {
        if (!json_object_object_get_ex(rules, rx_codes[i], &rule))
            rc =
                jk_rules_fail(err, errlen, path, "/rules", "the rule '%s' is missing", rx_codes[i]);
        else if (!(rc = jk_rules_rule(rule, path, rx_codes[i], x.ptr, sizeof x.ptr, &v, err,
                                      errlen)))
            rc = rx_rule(&x, i, v, r);
    }
    const struct jk_rx_limits *l = &r->limits;
    if (!rc && l->max_days_long_term < l->max_days)
        rc = jk_rules_fail(err, errlen, path, "/rules/rx.max_days_long_term/value",
                           "must not be below rx.max_days (%d)", l->max_days);
    if (!rc && (l->long_term_review_days < l->max_days ||
                l->long_term_review_days > l->max_days_long_term))
        rc = jk_rules_fail(err, errlen, path, "/rules/rx.long_term_review_days/value",
                           "must be from rx.max_days (%d) to rx.max_days_long_term (%d)",
                           l->max_days, l->max_days_long_term);
    json_object_put(root);
    return rc;
}

/* ---- formulary.json ---- */

static const char *const drug_keys[] = {
    "code",        "name",        "nameEn",   "form",     "package", "unit",      "packageAmount",
    "doseMin",     "doseMax",     "dailyMax", "class",    "group",   "substance", "chronic",
    "ageMinYears", "ageMaxYears", "sex",      "priceFen", NULL};

static int is_code(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (!n || n > 32) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return 0;
    return 1;
}

/* Member key of drug o as a non-empty string copied into the arena. */
static jk_rc drug_str(struct ctx *x, struct jk_arena *a, struct json_object *o, const char *key,
                      int is_required, const char **out)
{
    struct json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(o, key, &v)) {
        if (!is_required) return JK_OK;
        return jk_rules_fail(x->err, x->errlen, x->path, x->ptr, "'%s' is missing", key);
    }
    if (!json_object_is_type(v, json_type_string) || !json_object_get_string_len(v) ||
        json_object_get_string_len(v) > 200)
        return jk_rules_fail(x->err, x->errlen, x->path, x->ptr,
                             "'%s' must be text of 1 to 200 bytes", key);
    return (*out = jk_arena_strdup(a, json_object_get_string(v))) ? JK_OK : JK_ENOMEM;
}

/* Member key as a number from min to max (absent: dflt, or missing when dflt < 0). */
static jk_rc drug_num(struct ctx *x, struct json_object *o, const char *key, double min, double max,
                      double dflt, double *out)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v)) {
        if (dflt >= 0) {
            *out = dflt;
            return JK_OK;
        }
        return jk_rules_fail(x->err, x->errlen, x->path, x->ptr, "'%s' is missing", key);
    }
    if ((!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double)) ||
        json_object_get_double(v) < min || json_object_get_double(v) > max)
        return jk_rules_fail(x->err, x->errlen, x->path, x->ptr,
                             "'%s' must be a number from %g to %g", key, min, max);
    *out = json_object_get_double(v);
    return JK_OK;
}

static jk_rc read_drug(struct ctx *x, struct jk_arena *a, struct json_object *o,
                       struct jk_rx_drug *d)
{
    double age_min, age_max, price;
    struct json_object *v;
    if (!json_object_is_type(o, json_type_object)) return fail(x, "must be an object");
    jk_rc rc = jk_rules_known_keys(o, drug_keys, x->path, x->ptr, x->err, x->errlen);
    if (!rc) rc = drug_str(x, a, o, "code", 1, &d->code);
    if (!rc && !is_code(d->code))
        rc = fail(x, "'code' must be 1 to 32 capital letters, digits and '-'");
    if (!rc) rc = drug_str(x, a, o, "name", 1, &d->name);
    if (!rc) rc = drug_str(x, a, o, "nameEn", 1, &d->name_en);
    if (!rc) rc = drug_str(x, a, o, "form", 1, &d->form);
    if (!rc) rc = drug_str(x, a, o, "package", 1, &d->package);
    if (!rc) rc = drug_str(x, a, o, "unit", 1, &d->unit);
    if (!rc) rc = drug_str(x, a, o, "group", 1, &d->group);
    if (!rc) rc = drug_str(x, a, o, "substance", 1, &d->substance);
    if (!rc) rc = drug_str(x, a, o, "class", 1, &d->klass);
    if (!rc && class_index(d->klass) < 0) rc = fail(x, "'class' is not a drug class");
    if (!rc) rc = drug_num(x, o, "packageAmount", 0, 1e9, 0, &d->package_amount);
    if (!rc) rc = drug_num(x, o, "doseMin", 0, 1e9, -1, &d->dose_min);
    if (!rc) rc = drug_num(x, o, "doseMax", 0, 1e9, -1, &d->dose_max);
    if (!rc) rc = drug_num(x, o, "dailyMax", 0, 1e9, 0, &d->daily_max);
    if (!rc && (d->dose_min <= 0 || d->dose_max < d->dose_min))
        rc = fail(x, "'doseMin' must be above 0 and not above 'doseMax'");
    if (!rc && d->daily_max && d->daily_max < d->dose_max)
        rc = fail(x, "'dailyMax' must not be below 'doseMax'");
    if (!rc) rc = drug_num(x, o, "ageMinYears", 0, 150, 0, &age_min);
    if (!rc) rc = drug_num(x, o, "ageMaxYears", 0, 150, 150, &age_max);
    if (!rc && age_max < age_min) rc = fail(x, "'ageMaxYears' must not be below 'ageMinYears'");
    if (!rc) rc = drug_num(x, o, "priceFen", 0, 1e9, -1, &price);
    if (rc) return rc;
    if ((int64_t)price != price) return fail(x, "'priceFen' must be a whole number of fen");
    d->age_min_years = age_min > 0 ? (int)age_min : -1;
    d->age_max_years = age_max < 150 ? (int)age_max : -1;
    d->price_fen = (int64_t)price;
    if (json_object_object_get_ex(o, "sex", &v)) {
        const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
        if (strcmp(s, "f") && strcmp(s, "m")) return fail(x, "'sex' must be \"f\" or \"m\"");
        d->sex = s[0];
    }
    if (!json_object_object_get_ex(o, "chronic", &v) || !json_object_is_type(v, json_type_boolean))
        return fail(x, "'chronic' must be true or false");
    d->is_chronic = json_object_get_boolean(v);
    return JK_OK;
}

static int cmp_drug(const void *a, const void *b)
{
    return strcmp(((const struct jk_rx_drug *)a)->code, ((const struct jk_rx_drug *)b)->code);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const struct jk_rx_drug *drug_find(const struct jk_rx_rules *r, const char *code)
{
    struct jk_rx_drug key = {.code = code};
    return code ? bsearch(&key, r->drugs, r->n_drugs, sizeof *r->drugs, cmp_drug) : NULL;
}

static jk_rc read_drugs(struct ctx *x, struct json_object *v, struct jk_rx_rules *r)
{
    size_t base = strlen(x->ptr);
    if (!json_object_is_type(v, json_type_array) || !json_object_array_length(v))
        return fail(x, "must be a non-empty list of drugs");
    r->n_drugs = json_object_array_length(v);
    if (!(r->drugs = jk_arena_zalloc(r->arena, r->n_drugs * sizeof *r->drugs))) return JK_ENOMEM;
    for (size_t i = 0; i < r->n_drugs; i++) {
        snprintf(x->ptr + base, sizeof x->ptr - base, "/%zu", i);
        jk_rc rc = read_drug(x, r->arena, json_object_array_get_idx(v, i), &r->drugs[i]);
        if (rc) return rc;
    }
    qsort(r->drugs, r->n_drugs, sizeof *r->drugs, cmp_drug);
    for (size_t i = 1; i < r->n_drugs; i++)
        if (!strcmp(r->drugs[i].code, r->drugs[i - 1].code)) {
            x->ptr[base] = 0;
            return jk_rules_fail(x->err, x->errlen, x->path, x->ptr,
                                 "the code '%s' is listed twice", r->drugs[i].code);
        }
    x->ptr[base] = 0;
    return JK_OK;
}

static jk_rc read_institutions(struct ctx *x, struct json_object *v, struct jk_rx_rules *r)
{
    size_t base = strlen(x->ptr);
    if (!json_object_is_type(v, json_type_object))
        return fail(x, "must be an object of Organization id: [drug code, ...]");
    r->orgs = jk_arena_zalloc(r->arena, (json_object_object_length(v) + 1) * sizeof *r->orgs);
    if (!r->orgs) return JK_ENOMEM;
    json_object_object_foreach(v, org, list)
    {
        struct jk_rx_org *o = &r->orgs[r->n_orgs++];
        snprintf(x->ptr + base, sizeof x->ptr - base, "/%s", org);
        if (!json_object_is_type(list, json_type_array))
            return fail(x, "must be a list of drug codes");
        o->org = jk_arena_strdup(r->arena, org);
        o->n_codes = json_object_array_length(list);
        o->codes = jk_arena_zalloc(r->arena, (o->n_codes + 1) * sizeof *o->codes);
        if (!o->org || !o->codes) return JK_ENOMEM;
        for (size_t i = 0; i < o->n_codes; i++) {
            struct json_object *e = json_object_array_get_idx(list, i);
            const char *code =
                json_object_is_type(e, json_type_string) ? json_object_get_string(e) : NULL;
            if (!drug_find(r, code))
                return jk_rules_fail(x->err, x->errlen, x->path, x->ptr,
                                     "'%s' is not a drug of formulary.drugs", code ? code : "");
            o->codes[i] = drug_find(r, code)->code;
        }
        qsort(o->codes, o->n_codes, sizeof *o->codes, cmp_str);
    }
    return JK_OK;
}

static const char *const formulary_codes[] = {"formulary.drugs", "formulary.institutions", NULL};

static jk_rc load_formulary(const char *path, struct jk_rx_rules *r, char *err, size_t errlen)
{
    struct json_object *root = NULL, *rules = NULL, *rule, *v;
    struct ctx x = {.path = path, .err = err, .errlen = errlen};
    jk_rc rc = jk_rules_parse(path, &root, err, errlen);
    if (!rc) rc = jk_rules_top(root, path, "formulary", &rules, err, errlen);
    if (!rc) rc = jk_rules_known_keys(rules, formulary_codes, path, "/rules", err, errlen);
    for (int i = 0; !rc && formulary_codes[i]; i++) {
        if (!json_object_object_get_ex(rules, formulary_codes[i], &rule))
            rc = jk_rules_fail(err, errlen, path, "/rules", "the rule '%s' is missing",
                               formulary_codes[i]);
        else if (!(rc = jk_rules_rule(rule, path, formulary_codes[i], x.ptr, sizeof x.ptr, &v, err,
                                      errlen)))
            rc = i == 0 ? read_drugs(&x, v, r) : read_institutions(&x, v, r);
    }
    json_object_put(root);
    return rc;
}

/* ---- the installed rules ---- */

static const char *env_or(const char *name, const char *dflt)
{
    const char *p = getenv(name);
    return p && *p ? p : dflt;
}

void jk_rx_rules_free(struct jk_rx_rules *r)
{
    if (!r) return;
    jk_arena_free(r->arena);
    free(r);
}

jk_rc jk_rx_rules_load(const char *rules_path, const char *formulary_path, struct jk_rx_rules **out,
                       char *err, size_t errlen)
{
    struct jk_rx_rules *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r || !(r->arena = jk_arena_new(0))) {
        free(r);
        return JK_ENOMEM;
    }
    jk_rc rc = load_rx(
        rules_path ? rules_path : env_or("JIANKANG_PRESCRIPTION_RULES", "rules/prescription.json"),
        r, err, errlen);
    if (!rc)
        rc = load_formulary(formulary_path ? formulary_path
                                           : env_or("JIANKANG_FORMULARY", "rules/formulary.json"),
                            r, err, errlen);
    if (rc) {
        jk_rx_rules_free(r);
        return rc;
    }
    *out = r;
    return JK_OK;
}

static struct jk_rx_rules *installed;

jk_rc jk_rx_start(char *err, size_t errlen)
{
    struct jk_rx_rules *r;
    jk_rc rc = jk_rx_rules_load(NULL, NULL, &r, err, errlen);
    if (rc) return rc;
    jk_rx_rules_free(installed);
    installed = r;
    return JK_OK;
}

void jk_rx_stop(void)
{
    jk_rx_rules_free(installed);
    installed = NULL;
}

const struct jk_rx_rules *jk_rx_rules(void)
{
    return installed;
}

const struct jk_rx_limits *jk_rx_limits(const struct jk_rx_rules *r)
{
    return &r->limits;
}

const struct jk_rx_drug *jk_rx_drug(const struct jk_rx_rules *r, const char *org, const char *code)
{
    const struct jk_rx_drug *d = drug_find(r, code);
    if (!d) return NULL;
    if (org && !strncmp(org, "Organization/", 13)) org += 13;
    for (size_t i = 0; org && i < r->n_orgs; i++)
        if (!strcmp(r->orgs[i].org, org))
            return bsearch(&code, r->orgs[i].codes, r->orgs[i].n_codes, sizeof code, cmp_str)
                       ? d
                       : NULL;
    return d;
}

int jk_rx_class_in(unsigned set, const char *klass)
{
    int k = class_index(klass);
    return k >= 0 && (set >> k & 1u);
}

/* ---- local days ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

int64_t jk_rx_valid_until(const struct jk_rx_rules *r, int64_t issued_ms)
{
    int64_t off = (int64_t)r->limits.utc_offset_min * MS_PER_MIN;
    int64_t day = floor_div(issued_ms + off, MS_PER_DAY);
    return (day + r->limits.validity_days) * MS_PER_DAY - off - 1;
}

static int digits(const char *s, int n, int *out)
{
    *out = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        *out = *out * 10 + s[i] - '0';
    }
    return 1;
}

jk_rc jk_rx_age(const struct jk_rx_rules *r, const char *birth_date, int64_t now_ms, int *age_years,
                int *age_days)
{
    size_t n = birth_date ? strlen(birth_date) : 0;
    int by, bm = 1, bd = 1, y, m, d;
    if ((n != 4 && n != 7 && n != 10) || !digits(birth_date, 4, &by) ||
        (n >= 7 && (birth_date[4] != '-' || !digits(birth_date + 5, 2, &bm))) ||
        (n == 10 && (birth_date[7] != '-' || !digits(birth_date + 8, 2, &bd))) || bm < 1 ||
        bm > 12 || bd < 1 || bd > 31)
        return JK_EINVAL;
    int64_t birth = jk_time_days_from_civil(by, bm, bd);
    int64_t today = floor_div(now_ms + (int64_t)r->limits.utc_offset_min * MS_PER_MIN, MS_PER_DAY);
    jk_time_civil_from_days(today, &y, &m, &d);
    if (today < birth) return JK_EINVAL;
    *age_days = (int)(today - birth);
    *age_years = y - by - (m < bm || (m == bm && d < bd));
    return JK_OK;
}

size_t jk_rx_formulary(const struct jk_rx_rules *r, const char *org, const struct jk_rx_drug **out,
                       size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_drugs && n < max; i++)
        if (jk_rx_drug(r, org, r->drugs[i].code)) out[n++] = &r->drugs[i];
    return n;
}
