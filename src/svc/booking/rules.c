/* rules.c - rules/booking.json: the defaults, each institution's overrides, and the local
 * time and place arithmetic that follows from them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "auth/account.h"
#include "core/rules.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "svc/booking/booking.h"

#define MS_PER_MIN 60000LL
#define MS_PER_DAY 86400000LL

static const char *const channel_names[JK_BK_N_CHANNELS] = {"window", "online", "phone", "referral",
                                                            "family"};

const char *jk_bk_channel_name(enum jk_bk_channel ch)
{
    return (unsigned)ch < JK_BK_N_CHANNELS ? channel_names[ch] : "?";
}

int jk_bk_channel_parse(const char *s)
{
    for (int i = 0; s && i < JK_BK_N_CHANNELS; i++)
        if (!strcmp(channel_names[i], s)) return i;
    return -1;
}

/* ---- the file ---- */

struct org_policy {
    char *org;
    struct jk_bk_policy p;
};

struct jk_bk_rules {
    struct jk_bk_policy defaults;
    struct org_policy *orgs;
    size_t n_orgs;
    unsigned roles[4]; /* staff, schedule, desk, stats: bit 1u << enum jk_role */
    char **kinds;      /* reserve.primary_care_kinds */
    size_t n_kinds;
    char (*holidays)[11]; /* holiday.dates, sorted */
    size_t n_holidays;
};

static const char *const role_lists[4] = {"staff", "schedule", "desk", "stats"};

/* The rules an institution may override, in the order policy_rule handles them. */
static const char *const policy_codes[] = {"time.utc_offset_minutes",
                                           "release.days_ahead",
                                           "release.time",
                                           "slot.max_minutes",
                                           "quota.percent",
                                           "reserve.channels",
                                           "reserve.advance_days",
                                           "reserve.return_hours",
                                           "hold.seconds",
                                           "waitlist.offer_seconds",
                                           "cancel.deadline",
                                           "limit.session_scope",
                                           "limit.counts",
                                           "noshow.after_minutes",
                                           "noshow.ladder",
                                           "reminder.before_minutes",
                                           "holiday.open",
                                           NULL};

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

static jk_rc get_int(const struct ctx *x, struct json_object *v, int min, int max, int *out)
{
    return jk_rules_int(v, x->path, x->ptr, min, max, out, x->err, x->errlen);
}

static jk_rc get_member_int(const struct ctx *x, struct json_object *o, const char *key, int min,
                            int max, int *out)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return jk_rules_fail(x->err, x->errlen, x->path, x->ptr, "'%s' is missing", key);
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < min ||
        json_object_get_int64(v) > max)
        return jk_rules_fail(x->err, x->errlen, x->path, x->ptr,
                             "'%s' must be a whole number from %d to %d", key, min, max);
    *out = (int)json_object_get_int64(v);
    return JK_OK;
}

/* "HH:MM" into minutes after midnight. */
static jk_rc get_time(const struct ctx *x, struct json_object *v, int *out)
{
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
    if (strlen(s) != 5 || s[2] != ':' || s[0] < '0' || s[0] > '2' || s[1] < '0' || s[1] > '9' ||
        s[3] < '0' || s[3] > '5' || s[4] < '0' || s[4] > '9' || (s[0] - '0') * 10 + s[1] - '0' > 23)
        return fail(x, "must be a time HH:MM (00:00 to 23:59)");
    *out = ((s[0] - '0') * 10 + s[1] - '0') * 60 + (s[3] - '0') * 10 + s[4] - '0';
    return JK_OK;
}

static int name_index(const char *const *names, int n, struct json_object *v)
{
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
    for (int i = 0; s && i < n; i++)
        if (!strcmp(names[i], s)) return i;
    return -1;
}

static const char *const scope_names[] = {"department", "institution", "all"};
static const char *const period_names[] = {"day", "week", "month", "quarter"};

static jk_rc get_limits(const struct ctx *x, struct json_object *v, struct jk_bk_policy *p)
{
    size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
    if (!json_object_is_type(v, json_type_array) || n > JK_BK_MAX_LIMITS)
        return fail(x, "must be a list of at most 8 {scope, period, max}");
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(v, i), *s = NULL, *pe = NULL;
        json_object_object_get_ex(e, "scope", &s);
        json_object_object_get_ex(e, "period", &pe);
        int si = name_index(scope_names, 3, s), pi = name_index(period_names, 4, pe);
        if (!json_object_is_type(e, json_type_object) || si < 0 || pi < 0)
            return fail(x, "each limit has a scope (department, institution, all) and a period "
                           "(day, week, month, quarter)");
        p->limits[i].scope = (enum jk_bk_scope)si;
        p->limits[i].period = (enum jk_bk_period)pi;
        jk_rc rc = get_member_int(x, e, "max", 1, 1000, &p->limits[i].max);
        if (rc) return rc;
    }
    p->n_limits = n;
    return JK_OK;
}

static jk_rc get_ladder(const struct ctx *x, struct json_object *v, struct jk_bk_policy *p)
{
    size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
    if (!json_object_is_type(v, json_type_array) || n > JK_BK_MAX_LADDER)
        return fail(x, "must be a list of at most 8 {count, days}");
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(v, i);
        jk_rc rc = get_member_int(x, e, "count", 1, 366, &p->ladder[i].count);
        if (!rc) rc = get_member_int(x, e, "days", 1, 3660, &p->ladder[i].days);
        if (rc) return rc;
        if (i && p->ladder[i].count <= p->ladder[i - 1].count)
            return fail(x, "the steps' counts must rise");
    }
    p->n_ladder = n;
    return JK_OK;
}

/* Applies rule code (index i of policy_codes) with value v to p. */
static jk_rc policy_rule(const struct ctx *x, int i, struct json_object *v, struct jk_bk_policy *p)
{
    struct json_object *e;
    jk_rc rc = JK_OK;
    switch (i) {
    case 0: return get_int(x, v, -720, 840, &p->utc_offset_min);
    case 1: return get_int(x, v, 0, 366, &p->days_ahead);
    case 2: return get_time(x, v, &p->release_min);
    case 3: return get_int(x, v, 5, 240, &p->slot_max_min);
    case 4: {
        int sum = 0;
        if (!json_object_is_type(v, json_type_object))
            return fail(x, "must be an object of channel: percent");
        for (int ch = 0; ch < JK_BK_N_CHANNELS; ch++) {
            if (!json_object_object_get_ex(v, channel_names[ch], &e))
                return jk_rules_fail(x->err, x->errlen, x->path, x->ptr,
                                     "the channel '%s' is missing", channel_names[ch]);
            if ((rc = get_int(x, e, 0, 100, &p->quota[ch]))) return rc;
            sum += p->quota[ch];
        }
        if (json_object_object_length(v) != JK_BK_N_CHANNELS)
            return fail(x, "has a channel other than window, online, phone, referral, family");
        return sum == 100 ? JK_OK : fail(x, "the percentages must sum to 100");
    }
    case 5:
        if (!json_object_is_type(v, json_type_array)) return fail(x, "must be a list of channels");
        p->reserved = 0;
        for (size_t k = 0; k < json_object_array_length(v); k++) {
            int ch = name_index(channel_names, JK_BK_N_CHANNELS, json_object_array_get_idx(v, k));
            if (ch < 0 || ch == JK_BK_ONLINE)
                return fail(x,
                            "lists channels other than online (window, phone, referral, family)");
            p->reserved |= 1u << ch;
        }
        return JK_OK;
    case 6: return get_int(x, v, 0, 366, &p->reserve_advance_days);
    case 7: return get_int(x, v, 0, 24 * 366, &p->reserve_return_h);
    case 8: return get_int(x, v, 30, 86400, &p->hold_s);
    case 9: return get_int(x, v, 60, 7 * 86400, &p->offer_s);
    case 10:
        if (!json_object_is_type(v, json_type_object) ||
            !json_object_object_get_ex(v, "time", &e) || json_object_object_length(v) != 2)
            return fail(x, "must be {days_before, time}");
        if ((rc = get_member_int(x, v, "days_before", 0, 30, &p->cancel_days_before))) return rc;
        return get_time(x, e, &p->cancel_min);
    case 11: {
        int s = name_index(scope_names, 3, v);
        if (s < 0) return fail(x, "must be department, institution or all");
        p->session_scope = (enum jk_bk_scope)s;
        return JK_OK;
    }
    case 12: return get_limits(x, v, p);
    case 13: return get_int(x, v, 0, 7 * 24 * 60, &p->noshow_after_min);
    case 14: return get_ladder(x, v, p);
    case 15: {
        size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 99;
        if (n > JK_BK_MAX_REMINDERS) return fail(x, "must be a list of at most 4 minute counts");
        for (size_t k = 0; k < n; k++)
            if ((rc = get_int(x, json_object_array_get_idx(v, k), 1, 30 * 24 * 60,
                              &p->reminders_min[k])))
                return rc;
        p->n_reminders = n;
        return JK_OK;
    }
    default:
        if (!json_object_is_type(v, json_type_boolean)) return fail(x, "must be true or false");
        p->holiday_open = json_object_get_boolean(v);
        return JK_OK;
    }
}

static int code_index(const char *code)
{
    for (int i = 0; policy_codes[i]; i++)
        if (!strcmp(policy_codes[i], code)) return i;
    return -1;
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

static jk_rc read_strings(const struct ctx *x, struct json_object *v, char ***out, size_t *n)
{
    if (!json_object_is_type(v, json_type_array)) return fail(x, "must be a list of codes");
    *n = json_object_array_length(v);
    *out = calloc(*n ? *n : 1, sizeof **out);
    if (!*out) return JK_ENOMEM;
    for (size_t i = 0; i < *n; i++) {
        const char *s = str_of(json_object_array_get_idx(v, i));
        if (!s || !*s) return fail(x, "must be a list of codes");
        if (!((*out)[i] = strdup(s))) return JK_ENOMEM;
    }
    return JK_OK;
}

static int cmp_day(const void *a, const void *b)
{
    return strcmp(a, b);
}

static jk_rc read_holidays(const struct ctx *x, struct json_object *v, struct jk_bk_rules *r)
{
    if (!json_object_is_type(v, json_type_array)) return fail(x, "must be a list of {date, name}");
    r->n_holidays = json_object_array_length(v);
    r->holidays = calloc(r->n_holidays ? r->n_holidays : 1, sizeof *r->holidays);
    if (!r->holidays) return JK_ENOMEM;
    for (size_t i = 0; i < r->n_holidays; i++) {
        const char *d = jk_json_str(json_object_array_get_idx(v, i), "date");
        if (!d || !jk_rules_is_date(d) || !jk_json_str(json_object_array_get_idx(v, i), "name"))
            return fail(x, "each holiday has a date (YYYY-MM-DD) and a name");
        memcpy(r->holidays[i], d, 11);
    }
    qsort(r->holidays, r->n_holidays, sizeof *r->holidays, cmp_day);
    return JK_OK;
}

static jk_rc read_overrides(const struct ctx *x0, struct json_object *v, struct jk_bk_rules *r)
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
        struct org_policy *op = &r->orgs[r->n_orgs++];
        op->p = r->defaults;
        if (!(op->org = strdup(org))) return JK_ENOMEM;
        if (!json_object_is_type(rules, json_type_object)) {
            snprintf(ptr, sizeof ptr, "%s/%s", x0->ptr, org);
            return fail(&x, "must be an object of rule: value");
        }
        json_object_object_foreach(rules, code, val)
        {
            int i = code_index(code);
            snprintf(ptr, sizeof ptr, "%s/%s/%s", x0->ptr, org, code);
            if (i < 0) return fail(&x, "is not a rule an institution may override");
            jk_rc rc = policy_rule(&x, i, val, &op->p);
            if (rc) return rc;
        }
    }
    return JK_OK;
}

const char *jk_bk_rules_path(void)
{
    const char *p = getenv("JIANKANG_BOOKING_RULES");
    return p && *p ? p : "rules/booking.json";
}

void jk_bk_rules_free(struct jk_bk_rules *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_orgs; i++)
        free(r->orgs[i].org);
    for (size_t i = 0; r->kinds && i < r->n_kinds; i++)
        free(r->kinds[i]);
    free(r->orgs);
    free(r->kinds);
    free(r->holidays);
    free(r);
}

jk_rc jk_bk_rules_load(const char *path, struct jk_bk_rules **out, char *err, size_t errlen)
{
    static const char *const others[] = {"reserve.primary_care_kinds",
                                         "roles.staff",
                                         "roles.schedule",
                                         "roles.desk",
                                         "roles.stats",
                                         "holiday.dates",
                                         "institutions"};
    const char *known[sizeof policy_codes / sizeof policy_codes[0] + 7];
    size_t n_known = 0;
    for (int i = 0; policy_codes[i]; i++)
        known[n_known++] = policy_codes[i];
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        known[n_known++] = others[i];
    known[n_known] = NULL;

    struct json_object *root = NULL, *rules = NULL, *rule, *v;
    char ptr[256] = "/rules";
    struct ctx x = {path ? path : jk_bk_rules_path(), ptr, err, errlen};
    struct jk_bk_rules *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r) return JK_ENOMEM;
    jk_rc rc = jk_rules_parse(x.path, &root, err, errlen);
    if (!rc) rc = jk_rules_top(root, x.path, "booking", &rules, err, errlen);
    if (!rc) rc = jk_rules_known_keys(rules, known, x.path, "/rules", err, errlen);
    for (size_t i = 0; !rc && i < n_known; i++) {
        if (!json_object_object_get_ex(rules, known[i], &rule)) {
            rc = jk_rules_fail(err, errlen, x.path, "/rules", "the rule '%s' is missing", known[i]);
            break;
        }
        if ((rc = jk_rules_rule(rule, x.path, known[i], ptr, sizeof ptr, &v, err, errlen))) break;
        int pi = code_index(known[i]);
        if (pi >= 0)
            rc = policy_rule(&x, pi, v, &r->defaults);
        else if (!strncmp(known[i], "roles.", 6)) {
            for (int k = 0; k < 4; k++)
                if (!strcmp(known[i] + 6, role_lists[k])) rc = read_roles(&x, v, &r->roles[k]);
        } else if (!strcmp(known[i], "reserve.primary_care_kinds"))
            rc = read_strings(&x, v, &r->kinds, &r->n_kinds);
        else if (!strcmp(known[i], "holiday.dates"))
            rc = read_holidays(&x, v, r);
        else
            rc = read_overrides(&x, v, r); /* institutions: last, after every default */
    }
    if (!rc && r->roles[0] >> JK_ROLE_RESIDENT & 1u)
        rc = jk_rules_fail(err, errlen, x.path, "/rules/roles.staff/value",
                           "residents book online, not as staff");
    json_object_put(root);
    if (rc) {
        jk_bk_rules_free(r);
        return rc;
    }
    *out = r;
    return JK_OK;
}

static struct jk_bk_rules *installed;

jk_rc jk_bk_start(const char *path, char *err, size_t errlen)
{
    struct jk_bk_rules *r;
    jk_rc rc = jk_bk_rules_load(path, &r, err, errlen);
    if (rc) return rc;
    jk_bk_rules_free(installed);
    installed = r;
    jk_fhir_set_owner("Appointment", jk_bk_owned);
    jk_fhir_set_owner("Slot", jk_bk_owned);
    return JK_OK;
}

void jk_bk_stop(void)
{
    jk_bk_rules_free(installed);
    installed = NULL;
}

const struct jk_bk_rules *jk_bk_rules(void)
{
    return installed;
}

void jk_bk_policy(const struct jk_bk_rules *r, const char *org, struct jk_bk_policy *out)
{
    if (org && !strncmp(org, "Organization/", 13)) org += 13;
    for (size_t i = 0; org && i < r->n_orgs; i++)
        if (!strcmp(r->orgs[i].org, org)) {
            *out = r->orgs[i].p;
            return;
        }
    *out = r->defaults;
}

int jk_bk_role_may(const struct jk_bk_rules *r, const char *list, const char *role)
{
    const struct jk_role_info *ri = jk_role_by_name(role);
    for (int k = 0; ri && k < 4; k++)
        if (!strcmp(list, role_lists[k])) return (int)(r->roles[k] >> ri->role & 1u);
    return 0;
}

int jk_bk_is_primary_care(const struct jk_bk_rules *r, struct json_object *organization)
{
    struct json_object *types, *codings;
    if (!json_object_object_get_ex(organization, "type", &types)) return 0;
    for (size_t i = 0; i < json_object_array_length(types); i++) {
        if (!json_object_object_get_ex(json_object_array_get_idx(types, i), "coding", &codings))
            continue;
        for (size_t j = 0; j < json_object_array_length(codings); j++) {
            struct json_object *cd = json_object_array_get_idx(codings, j);
            const char *sys = jk_json_str(cd, "system"), *code = jk_json_str(cd, "code");
            if (!sys || !code || strcmp(sys, JK_BK_KIND_SYSTEM)) continue;
            for (size_t k = 0; k < r->n_kinds; k++)
                if (!strcmp(r->kinds[k], code)) return 1;
        }
    }
    return 0;
}

int jk_bk_is_holiday(const struct jk_bk_rules *r, const struct jk_bk_policy *p, const char *day)
{
    return !p->holiday_open &&
           bsearch(day, r->holidays, r->n_holidays, sizeof *r->holidays, cmp_day) != NULL;
}

/* ---- local time ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

char *jk_bk_day(const struct jk_bk_policy *p, int64_t ms, char out[static 11])
{
    int y, m, d;
    jk_time_civil_from_days(floor_div(ms + p->utc_offset_min * MS_PER_MIN, MS_PER_DAY), &y, &m, &d);
    snprintf(out, 11, "%04u-%02u-%02u", (unsigned)y % 10000u, (unsigned)m % 100u,
             (unsigned)d % 100u);
    return out;
}

jk_rc jk_bk_at(const struct jk_bk_policy *p, const char *day, int min, int64_t *ms)
{
    if (!day || !jk_bk_day_ok(day)) return JK_EINVAL;
    int y = (day[0] - '0') * 1000 + (day[1] - '0') * 100 + (day[2] - '0') * 10 + day[3] - '0';
    int m = (day[5] - '0') * 10 + day[6] - '0', d = (day[8] - '0') * 10 + day[9] - '0';
    *ms = jk_time_days_from_civil(y, m, d) * MS_PER_DAY + (min - p->utc_offset_min) * MS_PER_MIN;
    return JK_OK;
}

int jk_bk_day_ok(const char *day)
{
    int y, m, d, y2, m2, d2;
    if (strlen(day) != 10 || day[4] != '-' || day[7] != '-') return 0;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (day[i] < '0' || day[i] > '9')) return 0;
    y = (day[0] - '0') * 1000 + (day[1] - '0') * 100 + (day[2] - '0') * 10 + day[3] - '0';
    m = (day[5] - '0') * 10 + day[6] - '0';
    d = (day[8] - '0') * 10 + day[9] - '0';
    if (m < 1 || m > 12 || d < 1 || d > 31) return 0;
    jk_time_civil_from_days(jk_time_days_from_civil(y, m, d), &y2, &m2, &d2);
    return y == y2 && m == m2 && d == d2;
}

int jk_bk_weekday(const char *day)
{
    int y = (day[0] - '0') * 1000 + (day[1] - '0') * 100 + (day[2] - '0') * 10 + day[3] - '0';
    int64_t z = jk_time_days_from_civil(y, (day[5] - '0') * 10 + day[6] - '0',
                                        (day[8] - '0') * 10 + day[9] - '0');
    return (int)((z % 7 + 7 + 3) % 7); /* 1970-01-01 was a Thursday: 0 = Monday */
}

const char *jk_bk_session(const struct jk_bk_policy *p, int64_t start_ms)
{
    int64_t min = floor_div(start_ms + p->utc_offset_min * MS_PER_MIN, MS_PER_MIN) % (24 * 60);
    return min < 12 * 60 ? "am" : min < 18 * 60 ? "pm" : "night";
}

char *jk_bk_day_add(const char *day, int days, char out[static 11])
{
    struct jk_bk_policy utc = {0};
    int64_t ms;
    if (jk_bk_at(&utc, day, 0, &ms)) return NULL;
    return jk_bk_day(&utc, ms + days * MS_PER_DAY, out);
}

/* ---- places ---- */

void jk_bk_split(const struct jk_bk_policy *p, int capacity, int counts[JK_BK_N_CHANNELS])
{
    int given = 0, rem[JK_BK_N_CHANNELS];
    for (int ch = 0; ch < JK_BK_N_CHANNELS; ch++) {
        counts[ch] = capacity * p->quota[ch] / 100;
        rem[ch] = capacity * p->quota[ch] % 100;
        given += counts[ch];
    }
    while (given < capacity) { /* largest remainder; ties to the lower channel */
        int best = 0;
        for (int ch = 1; ch < JK_BK_N_CHANNELS; ch++)
            if (rem[ch] > rem[best]) best = ch;
        counts[best]++;
        rem[best] = -1;
        given++;
    }
}

void jk_bk_place_times(const struct jk_bk_policy *p, enum jk_bk_channel ch, const char *day,
                       int64_t start_ms, int64_t *open_ms, int64_t *public_ms)
{
    int is_reserved = (int)(p->reserved >> ch & 1u);
    int64_t at = 0;
    if (jk_bk_at(p, day, p->release_min, &at)) at = start_ms;
    *open_ms =
        at - (int64_t)(p->days_ahead + (is_reserved ? p->reserve_advance_days : 0)) * MS_PER_DAY;
    *public_ms = is_reserved ? start_ms - (int64_t)p->reserve_return_h * 3600000LL : 0;
}
