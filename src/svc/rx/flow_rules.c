/* flow_rules.c - rules/dispensing.json: review roles, review centres and reasons, the
 * redemption code's validity, pharmacies, delivery states and supervision; and the keys of
 * redemption codes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "core/rules.h"
#include "fhir/json.h"
#include "svc/rx/flow.h"

#define MS_PER_MIN 60000LL
#define MS_PER_DAY 86400000LL

struct centre {
    char *org;
    char **regions;
    size_t n_regions;
};

struct reason {
    char *code, *text;
};

struct jk_rx_flow_rules {
    int utc_offset_min, validity_days, queue_max, sweep_s;
    unsigned roles[3]; /* review, dispense, supervise: bit 1u << enum jk_role */
    struct centre *centres;
    size_t n_centres;
    struct reason *reasons;
    size_t n_reasons;
    char **kinds;
    size_t n_kinds;
    char *states[JK_RX_MAX_DELIVERY_STATES];
    size_t n_states;
    int cancel_until; /* index in states */
};

static const char *const role_lists[3] = {"review", "dispense", "supervise"};

static const char *const known[] = {"time.utc_offset_minutes",
                                    "review.roles",
                                    "review.centres",
                                    "review.reasons",
                                    "review.queue_max",
                                    "code.validity_days",
                                    "pharmacy.kinds",
                                    "dispense.roles",
                                    "delivery.states",
                                    "delivery.cancel_until",
                                    "supervision.roles",
                                    "sweep.seconds",
                                    NULL};

struct ctx {
    const char *path;
    const char *ptr;
    char *err;
    size_t errlen;
};

static jk_rc fail(const struct ctx *x, const char *msg)
{
    return jk_rules_fail(x->err, x->errlen, x->path, x->ptr, "%s", msg);
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

/* A list of non-empty strings. */
static jk_rc read_strings(const struct ctx *x, struct json_object *v, char ***out, size_t *n)
{
    if (!json_object_is_type(v, json_type_array)) return fail(x, "must be a list of strings");
    size_t len = json_object_array_length(v);
    *out = calloc(len + 1, sizeof **out);
    *n = 0;
    if (!*out) return JK_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        struct json_object *e = json_object_array_get_idx(v, i);
        if (!json_object_is_type(e, json_type_string) || !json_object_get_string_len(e))
            return fail(x, "must be a list of non-empty strings");
        if (!((*out)[(*n)++] = dup_str(json_object_get_string(e)))) return JK_ENOMEM;
    }
    return JK_OK;
}

static jk_rc read_roles(const struct ctx *x, struct json_object *v, unsigned *out)
{
    if (!json_object_is_type(v, json_type_array)) return fail(x, "must be a list of role names");
    *out = 0;
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        struct json_object *e = json_object_array_get_idx(v, i);
        const struct jk_role_info *ri = json_object_is_type(e, json_type_string)
                                            ? jk_role_by_name(json_object_get_string(e))
                                            : NULL;
        if (!ri)
            return jk_rules_fail(x->err, x->errlen, x->path, x->ptr, "'%s' is not a role",
                                 json_object_get_string(e));
        if (ri->role == JK_ROLE_RESIDENT) return fail(x, "residents cannot be given this");
        *out |= 1u << ri->role;
    }
    return JK_OK;
}

static int is_org_ref(const char *s)
{
    return !strncmp(s, "Organization/", 13) && s[13];
}

static jk_rc read_centres(const struct ctx *x, struct json_object *v, struct jk_rx_flow_rules *r)
{
    static const char *const keys[] = {"centre", "regions", NULL};
    if (!json_object_is_type(v, json_type_array)) return fail(x, "must be a list of centres");
    size_t len = json_object_array_length(v);
    if (!(r->centres = calloc(len + 1, sizeof *r->centres))) return JK_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        struct json_object *e = json_object_array_get_idx(v, i), *regions;
        struct centre *ce = &r->centres[r->n_centres++];
        jk_rc rc = json_object_is_type(e, json_type_object)
                       ? jk_rules_known_keys(e, keys, x->path, x->ptr, x->err, x->errlen)
                       : fail(x, "each centre must be {centre, regions}");
        if (rc) return rc;
        const char *org = jk_json_str(e, "centre");
        if (!org || !is_org_ref(org)) return fail(x, "centre must be \"Organization/<id>\"");
        if (!(ce->org = dup_str(org))) return JK_ENOMEM;
        if (!json_object_object_get_ex(e, "regions", &regions))
            return fail(x, "a centre needs its regions");
        if ((rc = read_strings(x, regions, &ce->regions, &ce->n_regions))) return rc;
        for (size_t k = 0; k < ce->n_regions; k++)
            if (!is_org_ref(ce->regions[k])) return fail(x, "regions are \"Organization/<id>\"");
    }
    return JK_OK;
}

/* "1-1" ... "3-4": a category digit, a dash, a number. */
static int is_reason_code(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 5 || s[0] < '1' || s[0] > '9' || s[1] != '-') return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return s[2] != '0';
}

static jk_rc read_reasons(const struct ctx *x, struct json_object *v, struct jk_rx_flow_rules *r)
{
    if (!json_object_is_type(v, json_type_object) || !json_object_object_length(v))
        return fail(x, "must be an object of reason texts by code (\"2-7\": \"...\")");
    if (!(r->reasons = calloc((size_t)json_object_object_length(v), sizeof *r->reasons)))
        return JK_ENOMEM;
    json_object_object_foreach(v, key, val)
    {
        if (!is_reason_code(key))
            return jk_rules_fail(x->err, x->errlen, x->path, x->ptr,
                                 "'%s' is not a reason code like 2-7", key);
        if (!json_object_is_type(val, json_type_string) || !json_object_get_string_len(val))
            return jk_rules_fail(x->err, x->errlen, x->path, x->ptr, "'%s' needs its text", key);
        struct reason *re = &r->reasons[r->n_reasons++];
        if (!(re->code = dup_str(key)) || !(re->text = dup_str(json_object_get_string(val))))
            return JK_ENOMEM;
    }
    return JK_OK;
}

static jk_rc read_states(const struct ctx *x, struct json_object *v, struct jk_rx_flow_rules *r)
{
    char **list = NULL;
    size_t n = 0;
    jk_rc rc = read_strings(x, v, &list, &n);
    if (!rc && (n < 2 || n > JK_RX_MAX_DELIVERY_STATES))
        rc = jk_rules_fail(x->err, x->errlen, x->path, x->ptr, "must list 2 to %d states",
                           JK_RX_MAX_DELIVERY_STATES);
    for (size_t i = 0; !rc && i < n; i++)
        if (!strcmp(list[i], "requested") || !strcmp(list[i], "cancelled"))
            rc = fail(x, "requested and cancelled are not steps of the order");
    for (size_t i = 0; !rc && i < n; i++)
        r->states[r->n_states++] = list[i];
    for (size_t i = rc ? 0 : n; i < n; i++)
        free(list[i]);
    free(list);
    return rc;
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *e = getenv(name);
    return e && *e ? e : dflt;
}

const char *jk_rx_flow_rules_path(void)
{
    return env_or("JIANKANG_DISPENSING_RULES", "rules/dispensing.json");
}

/* rx.validity_days of rules/prescription.json, when that file exists and has it: 0 otherwise. */
static int rx_validity_days(const char *path)
{
    struct json_object *root = NULL, *rules, *rule, *v;
    char err[256];
    int days = 0;
    if (jk_rules_parse(path, &root, err, sizeof err)) return 0;
    if (json_object_object_get_ex(root, "rules", &rules) &&
        json_object_object_get_ex(rules, "rx.validity_days", &rule) &&
        json_object_object_get_ex(rule, "value", &v) && json_object_is_type(v, json_type_int) &&
        json_object_get_int64(v) >= 1 && json_object_get_int64(v) <= 30)
        days = (int)json_object_get_int64(v);
    json_object_put(root);
    return days;
}

static jk_rc one_rule(const struct ctx *x, const char *code, struct json_object *v,
                      struct jk_rx_flow_rules *r)
{
    if (!strcmp(code, "time.utc_offset_minutes"))
        return jk_rules_int(v, x->path, x->ptr, -720, 840, &r->utc_offset_min, x->err, x->errlen);
    if (!strcmp(code, "review.queue_max"))
        return jk_rules_int(v, x->path, x->ptr, 1, 1000, &r->queue_max, x->err, x->errlen);
    if (!strcmp(code, "code.validity_days"))
        return jk_rules_int(v, x->path, x->ptr, 1, 3, &r->validity_days, x->err, x->errlen);
    if (!strcmp(code, "sweep.seconds"))
        return jk_rules_int(v, x->path, x->ptr, 5, 3600, &r->sweep_s, x->err, x->errlen);
    if (!strcmp(code, "review.roles")) return read_roles(x, v, &r->roles[0]);
    if (!strcmp(code, "dispense.roles")) return read_roles(x, v, &r->roles[1]);
    if (!strcmp(code, "supervision.roles")) return read_roles(x, v, &r->roles[2]);
    if (!strcmp(code, "review.centres")) return read_centres(x, v, r);
    if (!strcmp(code, "review.reasons")) return read_reasons(x, v, r);
    if (!strcmp(code, "pharmacy.kinds")) return read_strings(x, v, &r->kinds, &r->n_kinds);
    if (!strcmp(code, "delivery.states")) return read_states(x, v, r);
    /* delivery.cancel_until: after delivery.states (the order of known[]) */
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
    for (size_t i = 0; i < r->n_states; i++)
        if (!strcmp(r->states[i], s)) {
            r->cancel_until = (int)i;
            return JK_OK;
        }
    return fail(x, "must be one of delivery.states");
}

jk_rc jk_rx_flow_rules_load(const char *path, const char *rx_rules_path,
                            struct jk_rx_flow_rules **out, char *err, size_t errlen)
{
    struct json_object *root = NULL, *rules = NULL, *rule, *v;
    char ptr[256] = "/rules";
    struct ctx x = {path ? path : jk_rx_flow_rules_path(), ptr, err, errlen};
    struct jk_rx_flow_rules *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r) return JK_ENOMEM;
    jk_rc rc = jk_rules_parse(x.path, &root, err, errlen);
    if (!rc) rc = jk_rules_top(root, x.path, "dispensing", &rules, err, errlen);
    if (!rc) rc = jk_rules_known_keys(rules, known, x.path, "/rules", err, errlen);
    for (size_t i = 0; !rc && known[i]; i++) {
        if (!json_object_object_get_ex(rules, known[i], &rule)) {
            rc = jk_rules_fail(err, errlen, x.path, "/rules", "the rule '%s' is missing", known[i]);
            break;
        }
        if (!(rc = jk_rules_rule(rule, x.path, known[i], ptr, sizeof ptr, &v, err, errlen)))
            rc = one_rule(&x, known[i], v, r);
    }
    json_object_put(root);
    if (rc) {
        jk_rx_flow_rules_free(r);
        return rc;
    }
    int days = rx_validity_days(
        rx_rules_path ? rx_rules_path
                      : env_or("JIANKANG_PRESCRIPTION_RULES", "rules/prescription.json"));
    if (days) r->validity_days = days;
    *out = r;
    return JK_OK;
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

void jk_rx_flow_rules_free(struct jk_rx_flow_rules *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_centres; i++) {
        free(r->centres[i].org);
        free_strings(r->centres[i].regions, r->centres[i].n_regions);
    }
    free(r->centres);
    for (size_t i = 0; i < r->n_reasons; i++) {
        free(r->reasons[i].code);
        free(r->reasons[i].text);
    }
    free(r->reasons);
    free_strings(r->kinds, r->n_kinds);
    for (size_t i = 0; i < r->n_states; i++)
        free(r->states[i]);
    free(r);
}

int jk_rx_flow_validity_days(const struct jk_rx_flow_rules *r)
{
    return r->validity_days;
}

int jk_rx_flow_utc_offset_min(const struct jk_rx_flow_rules *r)
{
    return r->utc_offset_min;
}

int jk_rx_flow_queue_max(const struct jk_rx_flow_rules *r)
{
    return r->queue_max;
}

int jk_rx_flow_sweep_seconds(const struct jk_rx_flow_rules *r)
{
    return r->sweep_s;
}

int jk_rx_flow_role_may(const struct jk_rx_flow_rules *r, const char *list, enum jk_role role)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(list, role_lists[i])) return (int)(r->roles[i] >> role & 1u);
    return 0;
}

const char *jk_rx_flow_reason(const struct jk_rx_flow_rules *r, const char *code)
{
    for (size_t i = 0; code && i < r->n_reasons; i++)
        if (!strcmp(r->reasons[i].code, code)) return r->reasons[i].text;
    return NULL;
}

size_t jk_rx_flow_centre_regions(const struct jk_rx_flow_rules *r, const char *org,
                                 const char *const **regions)
{
    for (size_t i = 0; org && i < r->n_centres; i++)
        if (!strcmp(r->centres[i].org, org)) {
            *regions = (const char *const *)r->centres[i].regions;
            return r->centres[i].n_regions;
        }
    *regions = NULL;
    return 0;
}

int jk_rx_flow_is_pharmacy(const struct jk_rx_flow_rules *r, struct json_object *org)
{
    struct json_object *active, *types;
    if (!org ||
        (json_object_object_get_ex(org, "active", &active) && !json_object_get_boolean(active)))
        return 0;
    if (!json_object_object_get_ex(org, "type", &types) ||
        !json_object_is_type(types, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(types); i++) {
        struct json_object *codings;
        if (!json_object_object_get_ex(json_object_array_get_idx(types, i), "coding", &codings) ||
            !json_object_is_type(codings, json_type_array))
            continue;
        for (size_t k = 0; k < json_object_array_length(codings); k++) {
            struct json_object *cd = json_object_array_get_idx(codings, k);
            const char *sys = jk_json_str(cd, "system"), *code = jk_json_str(cd, "code");
            if (!sys || !code || strcmp(sys, JK_RX_KIND_SYSTEM)) continue;
            for (size_t m = 0; m < r->n_kinds; m++)
                if (!strcmp(r->kinds[m], code)) return 1;
        }
    }
    return 0;
}

static int state_index(const struct jk_rx_flow_rules *r, const char *s)
{
    if (!strcmp(s, "requested")) return -1;
    for (size_t i = 0; i < r->n_states; i++)
        if (!strcmp(r->states[i], s)) return (int)i;
    return -2;
}

int jk_rx_flow_delivery_next(const struct jk_rx_flow_rules *r, const char *from, const char *to)
{
    int f = state_index(r, from), t = state_index(r, to);
    return f >= -1 && t >= 0 && t == f + 1;
}

int jk_rx_flow_delivery_cancellable(const struct jk_rx_flow_rules *r, const char *state)
{
    int i = state_index(r, state);
    return i >= -1 && i < r->cancel_until;
}

int64_t jk_rx_flow_valid_until(const struct jk_rx_flow_rules *r, int64_t created_ms)
{
    int64_t off = (int64_t)r->utc_offset_min * MS_PER_MIN;
    int64_t local = created_ms + off;
    int64_t day = local >= 0 ? local / MS_PER_DAY : -((-local + MS_PER_DAY - 1) / MS_PER_DAY);
    return (day + r->validity_days) * MS_PER_DAY - off;
}

/* ---- the installed rules and keys ---- */

static struct jk_rx_flow_rules *installed;
static struct jk_rx_flow_keys installed_keys;

jk_rc jk_rx_flow_keys_init(struct jk_rx_flow_keys *k, const jk_keys *keys)
{
    k->keys = keys;
    if (jk_crypto_blind_index(keys, "jiankang rx redemption code prf", "1", 1, k->code_prf) ||
        jk_crypto_blind_index(keys, "jiankang rx redemption code key", "1", 1, k->code_key))
        return JK_EINTERNAL;
    return JK_OK;
}

jk_rc jk_rx_flow_start(const jk_keys *keys, char *err, size_t errlen)
{
    struct jk_rx_flow_rules *r = NULL;
    jk_rc rc = jk_rx_flow_rules_load(NULL, NULL, &r, err, errlen);
    if (rc) return rc;
    if (keys && (rc = jk_rx_flow_keys_init(&installed_keys, keys))) {
        snprintf(err, errlen, "cannot derive the redemption code keys");
        jk_rx_flow_rules_free(r);
        return rc;
    }
    jk_rx_flow_rules_free(installed);
    installed = r;
    return JK_OK;
}

void jk_rx_flow_stop(void)
{
    jk_rx_flow_rules_free(installed);
    installed = NULL;
}

const struct jk_rx_flow_rules *jk_rx_flow_rules(void)
{
    return installed;
}

const struct jk_rx_flow_keys *jk_rx_flow_keys(void)
{
    return installed_keys.keys ? &installed_keys : NULL;
}
