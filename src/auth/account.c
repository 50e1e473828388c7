/* account.c - roles, the security rules file, password policy and hashing, the account
 * table, the login decision and the demo accounts. */
#include "auth/account.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <sodium.h>

#include "auth/totp.h"
#include "fhir/searchparam.h"
#include "fhir/validate.h"
#include "core/log.h"
#include "core/rules.h"
#include "core/time.h"

_Static_assert(JK_PWHASH_MAX == crypto_pwhash_STRBYTES, "JK_PWHASH_MAX is the libsodium size");

#define MS_PER_DAY 86400000LL

/* ---- roles ---- */

#define STAFF_LINKS "Practitioner PractitionerRole"

static const struct jk_role_info roles[JK_N_ROLES] = {
    [JK_ROLE_RESIDENT] = {JK_ROLE_RESIDENT, "resident", "居民", 1, 0, "Patient",
                          "patient/*.rs patient/Consent.cud"},
    [JK_ROLE_DOCTOR] = {JK_ROLE_DOCTOR, "doctor", "医生", 1, 1, STAFF_LINKS, "user/*.cruds"},
    [JK_ROLE_NURSE] = {JK_ROLE_NURSE, "nurse", "护士", 1, 1, STAFF_LINKS, "user/*.cruds"},
    [JK_ROLE_PHARMACIST] = {JK_ROLE_PHARMACIST, "pharmacist", "药师", 1, 1, STAFF_LINKS,
                            "user/*.cruds"},
    [JK_ROLE_INSTITUTION_ADMIN] = {JK_ROLE_INSTITUTION_ADMIN, "institution-admin", "机构管理员", 1,
                                   1, STAFF_LINKS, "user/*.cruds"},
    [JK_ROLE_PUBLIC_HEALTH] = {JK_ROLE_PUBLIC_HEALTH, "public-health", "公共卫生人员", 1, 1,
                               STAFF_LINKS, "user/*.cruds"},
    [JK_ROLE_REGULATOR] = {JK_ROLE_REGULATOR, "regulator", "监管人员", 1, 1, STAFF_LINKS,
                           "user/*.rs"},
    [JK_ROLE_PLATFORM_ADMIN] = {JK_ROLE_PLATFORM_ADMIN, "platform-admin", "平台管理员", 1, 0,
                                STAFF_LINKS, "user/*.cruds"},
    [JK_ROLE_SYSTEM] = {JK_ROLE_SYSTEM, "system", "机构系统", 0, 1, "Device", "system/*.cruds"},
};

const struct jk_role_info *jk_role_info(enum jk_role role)
{
    return &roles[(unsigned)role < JK_N_ROLES ? role : JK_ROLE_RESIDENT];
}

const struct jk_role_info *jk_role_by_name(const char *name)
{
    for (int i = 0; name && i < JK_N_ROLES; i++)
        if (!strcmp(roles[i].name, name)) return &roles[i];
    return NULL;
}

/* ---- the rules file ---- */

enum rule_kind {
    R_INT,
    R_CLASSES,
    R_ROLES,     /* roles of people (who can give a one-time code) */
    R_ANY_ROLES, /* any roles */
    R_RATE,
    R_HASHCOST,
    R_CODES, /* codes, kept space separated */
    R_TYPES, /* resource types, kept space separated */
    R_RELS   /* access.treatment_relationships */
};

static const struct rule_def {
    const char *code;
    enum rule_kind kind;
    size_t offset;
    long min, max; /* R_INT and R_RATE's limit */
} rule_defs[] = {
#define OFF(f) offsetof(struct jk_security_rules, f)
    {"password.min_length", R_INT, OFF(password_min_length), 8, 128},
    {"password.required_classes", R_CLASSES, OFF(password_classes), 0, 0},
    {"password.max_age_days", R_INT, OFF(password_max_age_days), 0, 3650},
    {"password.hash_cost", R_HASHCOST, 0, 0, 0},
    {"login.lockout_threshold", R_INT, OFF(lockout_threshold), 1, 100},
    {"login.lockout_minutes", R_INT, OFF(lockout_minutes), 1, 10080},
    {"login.second_factor_roles", R_ROLES, OFF(second_factor_roles), 0, 0},
    {"token.lifetime_minutes", R_INT, OFF(token_lifetime_minutes), 1, 1440},
    {"rate.login.per_address", R_RATE, OFF(rate_login_addr), 1, 1000000},
    {"rate.login.per_account", R_RATE, OFF(rate_login_acct), 1, 1000000},
    {"rate.expensive.per_address", R_RATE, OFF(rate_costly_addr), 1, 1000000},
    {"rate.expensive.per_account", R_RATE, OFF(rate_costly_acct), 1, 1000000},
    {"access.treatment_relationships", R_RELS, 0, 0, 0},
    {"access.guardian_relationships", R_CODES, OFF(guardian_codes), 0, 0},
    {"access.break_glass_roles", R_ANY_ROLES, OFF(break_glass_roles), 0, 0},
    {"access.break_glass_min_reason", R_INT, OFF(break_glass_min_reason), 1, 1000},
    {"access.public_health_types", R_TYPES, OFF(public_health_types), 0, 0},
    {"access.show_identity_roles", R_ANY_ROLES, OFF(show_identity_roles), 0, 0},
    {"access.show_phone_roles", R_ANY_ROLES, OFF(show_phone_roles), 0, 0},
    {"access.context_cache_seconds", R_INT, OFF(context_cache_seconds), 0, 300},
    {"access.match_roles", R_ANY_ROLES, OFF(match_roles), 0, 0},
    {"access.match_candidates_roles", R_ANY_ROLES, OFF(match_candidates_roles), 0, 0},
    {"access.mpi_steward_roles", R_ANY_ROLES, OFF(mpi_steward_roles), 0, 0},
#undef OFF
};

#define N_RULES (sizeof rule_defs / sizeof rule_defs[0])

static const char *const class_names[] = {"lower", "upper", "digit", "symbol"};

const char *jk_security_rules_path(void)
{
    const char *p = getenv("JIANKANG_SECURITY_RULES");
    return p && *p ? p : "rules/security.json";
}

int jk_security_needs_totp(const struct jk_security_rules *r, enum jk_role role)
{
    return (unsigned)role < JK_N_ROLES && (r->second_factor_roles >> role & 1u);
}

/* Reads a whole number member of o in [min, max]. */
static jk_rc rules_int(struct json_object *v, const char *file, const char *ptr, long min, long max,
                       long *out, char *err, size_t errlen)
{
    if (!v || !json_object_is_type(v, json_type_int))
        return jk_rules_fail(err, errlen, file, ptr, "must be a whole number from %ld to %ld", min,
                             max);
    int64_t n = json_object_get_int64(v);
    if (n < min || n > max)
        return jk_rules_fail(err, errlen, file, ptr,
                             "must be a whole number from %ld to %ld, not %lld", min, max,
                             (long long)n);
    *out = (long)n;
    return JK_OK;
}

static jk_rc rules_value(const struct rule_def *d, struct json_object *v, const char *file,
                         const char *ptr, struct jk_security_rules *out, char *err, size_t errlen)
{
    char sub[256];
    long n = 0;
    jk_rc rc;
    switch (d->kind) {
    case R_INT:
        if ((rc = rules_int(v, file, ptr, d->min, d->max, &n, err, errlen))) return rc;
        *(int *)((char *)out + d->offset) = (int)n;
        return JK_OK;
    case R_CODES:
    case R_TYPES: {
        char *dst = (char *)out + d->offset;
        size_t cap = d->kind == R_CODES ? sizeof out->guardian_codes
                                        : sizeof out->public_health_types,
               len = 0;
        if (!json_object_is_type(v, json_type_array))
            return jk_rules_fail(err, errlen, file, ptr, "must be a list of %s",
                                 d->kind == R_CODES ? "codes" : "resource types");
        dst[0] = '\0';
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            struct json_object *e = json_object_array_get_idx(v, i);
            const char *s =
                json_object_is_type(e, json_type_string) ? json_object_get_string(e) : "";
            snprintf(sub, sizeof sub, "%.200s/%zu", ptr, i);
            int is_ok = *s && !strpbrk(s, " \t\r\n");
            if (d->kind == R_TYPES) is_ok = jk_fhir_is_resource_type(s, strlen(s));
            if (!is_ok)
                return jk_rules_fail(err, errlen, file, sub, "'%s' is not %s", s,
                                     d->kind == R_CODES ? "a code" : "a FHIR R4 resource type");
            size_t sn = strlen(s);
            if (len + sn + 2 > cap)
                return jk_rules_fail(err, errlen, file, sub, "the list is too long");
            if (len) dst[len++] = ' ';
            memcpy(dst + len, s, sn + 1);
            len += sn;
        }
        return JK_OK;
    }
    case R_RELS: {
        static const char *const keys[] = {"type", "actor", "patient", "status", "statuses", NULL};
        static const char *const names[] = {"actor", "patient", "status"};
        if (!json_object_is_type(v, json_type_array) ||
            json_object_array_length(v) > JK_MAX_RELATIONSHIPS)
            return jk_rules_fail(err, errlen, file, ptr,
                                 "must be a list of at most %d objects {type, actor, patient, "
                                 "status, statuses}",
                                 JK_MAX_RELATIONSHIPS);
        out->n_rels = 0;
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            struct json_object *e = json_object_array_get_idx(v, i), *m;
            struct jk_relationship_rule *rr = &out->rels[out->n_rels++];
            snprintf(sub, sizeof sub, "%.200s/%zu", ptr, i);
            if (!json_object_is_type(e, json_type_object))
                return jk_rules_fail(err, errlen, file, sub, "must be an object");
            if ((rc = jk_rules_known_keys(e, keys, file, sub, err, errlen))) return rc;
            const char *t =
                json_object_object_get_ex(e, "type", &m) ? json_object_get_string(m) : "";
            if (!jk_fhir_is_resource_type(t, strlen(t)) || strlen(t) >= sizeof rr->type)
                return jk_rules_fail(err, errlen, file, sub, "type '%s' is not a resource type", t);
            snprintf(rr->type, sizeof rr->type, "%s", t);
            char *fields[] = {rr->actor, rr->patient, rr->status};
            for (int k = 0; k < 3; k++) {
                const char *code = json_object_object_get_ex(e, names[k], &m) &&
                                           json_object_is_type(m, json_type_string)
                                       ? json_object_get_string(m)
                                       : "";
                const struct jk_sp *sp = jk_sp_find(t, code);
                enum jk_sp_type want = k < 2 ? JK_SP_REFERENCE : JK_SP_TOKEN;
                if (!sp || sp->type != want || strlen(code) >= sizeof rr->actor)
                    return jk_rules_fail(err, errlen, file, sub,
                                         "%s '%s' is not a %s search parameter of %s", names[k],
                                         code, k < 2 ? "reference" : "token", t);
                snprintf(fields[k], sizeof rr->actor, "%s", code);
            }
            struct json_object *st;
            if (!json_object_object_get_ex(e, "statuses", &st) ||
                !json_object_is_type(st, json_type_array) || !json_object_array_length(st))
                return jk_rules_fail(err, errlen, file, sub, "statuses must be a list of codes");
            size_t len = 0;
            for (size_t k = 0; k < json_object_array_length(st); k++) {
                const char *code = json_object_get_string(json_object_array_get_idx(st, k));
                size_t cn = code ? strlen(code) : 0;
                if (!cn || strchr(code, ' ') || len + cn + 2 > sizeof rr->statuses)
                    return jk_rules_fail(err, errlen, file, sub,
                                         "statuses must be a list of codes");
                if (len) rr->statuses[len++] = ' ';
                memcpy(rr->statuses + len, code, cn + 1);
                len += cn;
            }
        }
        return JK_OK;
    }
    case R_CLASSES:
    case R_ROLES:
    case R_ANY_ROLES: {
        unsigned bits = 0;
        if (!json_object_is_type(v, json_type_array))
            return jk_rules_fail(err, errlen, file, ptr, "must be a list of %s",
                                 d->kind == R_CLASSES ? "character classes (lower, upper, digit, "
                                                        "symbol)"
                                                      : "role names");
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            struct json_object *e = json_object_array_get_idx(v, i);
            const char *s =
                json_object_is_type(e, json_type_string) ? json_object_get_string(e) : NULL;
            snprintf(sub, sizeof sub, "%.200s/%zu", ptr, i);
            unsigned bit = 0;
            if (d->kind == R_CLASSES) {
                for (unsigned k = 0; s && k < 4; k++)
                    if (!strcmp(s, class_names[k])) bit = 1u << k;
                if (!bit)
                    return jk_rules_fail(err, errlen, file, sub,
                                         "'%s' is not a character class (lower, upper, digit, "
                                         "symbol)",
                                         s ? s : json_object_to_json_string(e));
            } else {
                const struct jk_role_info *ri = jk_role_by_name(s);
                if (!ri)
                    return jk_rules_fail(err, errlen, file, sub, "'%s' is not a role",
                                         s ? s : json_object_to_json_string(e));
                if (!ri->is_person && d->kind == R_ROLES)
                    return jk_rules_fail(err, errlen, file, sub,
                                         "role '%s' logs in with client credentials and cannot "
                                         "give a one-time code",
                                         s);
                bit = 1u << ri->role;
            }
            if (bits & bit) return jk_rules_fail(err, errlen, file, sub, "'%s' is listed twice", s);
            bits |= bit;
        }
        *(unsigned *)((char *)out + d->offset) = bits;
        return JK_OK;
    }
    case R_RATE: {
        static const char *const keys[] = {"limit", "window_seconds", NULL};
        struct jk_rate_rule *rr = (struct jk_rate_rule *)((char *)out + d->offset);
        struct json_object *m;
        if (!json_object_is_type(v, json_type_object))
            return jk_rules_fail(err, errlen, file, ptr,
                                 "must be an object {\"limit\": N, \"window_seconds\": S}");
        if ((rc = jk_rules_known_keys(v, keys, file, ptr, err, errlen))) return rc;
        snprintf(sub, sizeof sub, "%.200s/limit", ptr);
        m = NULL;
        json_object_object_get_ex(v, "limit", &m);
        if ((rc = rules_int(m, file, sub, d->min, d->max, &n, err, errlen))) return rc;
        rr->limit = (int)n;
        snprintf(sub, sizeof sub, "%.200s/window_seconds", ptr);
        m = NULL;
        json_object_object_get_ex(v, "window_seconds", &m);
        if ((rc = rules_int(m, file, sub, 1, 86400, &n, err, errlen))) return rc;
        rr->window_s = (int)n;
        return JK_OK;
    }
    case R_HASHCOST: {
        static const char *const keys[] = {"ops_limit", "mem_limit_kib", NULL};
        struct json_object *m;
        if (!json_object_is_type(v, json_type_object))
            return jk_rules_fail(err, errlen, file, ptr,
                                 "must be an object {\"ops_limit\": N, \"mem_limit_kib\": K}");
        if ((rc = jk_rules_known_keys(v, keys, file, ptr, err, errlen))) return rc;
        snprintf(sub, sizeof sub, "%.200s/ops_limit", ptr);
        m = NULL;
        json_object_object_get_ex(v, "ops_limit", &m);
        if ((rc = rules_int(m, file, sub, (long)crypto_pwhash_OPSLIMIT_MIN, 20, &n, err, errlen)))
            return rc;
        out->pwhash_opslimit = (unsigned long long)n;
        snprintf(sub, sizeof sub, "%.200s/mem_limit_kib", ptr);
        m = NULL;
        json_object_object_get_ex(v, "mem_limit_kib", &m);
        if ((rc = rules_int(m, file, sub, (long)(crypto_pwhash_MEMLIMIT_MIN / 1024), 1048576, &n,
                            err, errlen)))
            return rc;
        out->pwhash_memlimit = (size_t)n * 1024;
        return JK_OK;
    }
    }
    return JK_EINTERNAL;
}

static jk_rc rules_check(struct json_object *root, const char *path, struct jk_security_rules *out,
                         char *err, size_t errlen)
{
    struct json_object *v, *rules;
    char ptr[256];
    jk_rc rc = jk_rules_top(root, path, "security", &rules, err, errlen);
    if (rc) return rc;
    json_object_object_foreach(rules, code, any_rule)
    {
        (void)any_rule;
        size_t i = 0;
        while (i < N_RULES && strcmp(rule_defs[i].code, code))
            i++;
        if (i == N_RULES) {
            snprintf(ptr, sizeof ptr, "/rules/%.200s", code);
            return jk_rules_fail(err, errlen, path, ptr, "unknown rule '%s'", code);
        }
    }
    for (size_t i = 0; i < N_RULES; i++) {
        const struct rule_def *d = &rule_defs[i];
        struct json_object *rule;
        snprintf(ptr, sizeof ptr, "/rules/%s", d->code);
        if (!json_object_object_get_ex(rules, d->code, &rule))
            return jk_rules_fail(err, errlen, path, ptr, "the rule is missing");
        if ((rc = jk_rules_rule(rule, path, d->code, ptr, sizeof ptr, &v, err, errlen))) return rc;
        if ((rc = rules_value(d, v, path, ptr, out, err, errlen))) return rc;
    }
    return JK_OK;
}

jk_rc jk_security_rules_load(const char *path, struct jk_security_rules *out, char *err,
                             size_t errlen)
{
    struct json_object *root;
    jk_rc rc = jk_rules_parse(path, &root, err, errlen);
    if (rc) return rc;
    struct jk_security_rules r;
    memset(&r, 0, sizeof r);
    snprintf(r.path, sizeof r.path, "%s", path);
    rc = rules_check(root, path, &r, err, errlen);
    if (!rc) *out = r;
    json_object_put(root);
    return rc;
}

/* ---- passwords ---- */

jk_rc jk_password_check(const struct jk_security_rules *r, const char *username, const char *pw,
                        char *msg, size_t msglen)
{
    size_t n_bytes = strlen(pw), n_chars = 0;
    unsigned classes = 0;
    if (n_bytes > JK_PASSWORD_MAX) {
        snprintf(msg, msglen, "security.password.max_length: a password has at most %d bytes",
                 JK_PASSWORD_MAX);
        return JK_ERULE;
    }
    for (const unsigned char *p = (const unsigned char *)pw; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            snprintf(msg, msglen,
                     "security.password.characters: a password cannot hold control characters");
            return JK_ERULE;
        }
        if ((*p & 0xc0) != 0x80) n_chars++; /* count UTF-8 characters, not bytes */
        classes |= islower(*p)   ? JK_PWCLASS_LOWER
                   : isupper(*p) ? JK_PWCLASS_UPPER
                   : isdigit(*p) ? JK_PWCLASS_DIGIT
                                 : JK_PWCLASS_SYMBOL;
    }
    if (n_chars < (size_t)r->password_min_length) {
        snprintf(msg, msglen,
                 "security.password.min_length: a password needs at least %d characters, this "
                 "one has %zu",
                 r->password_min_length, n_chars);
        return JK_ERULE;
    }
    static const char *const needs[] = {"a lower-case letter", "an upper-case letter", "a digit",
                                        "a symbol"};
    for (unsigned k = 0; k < 4; k++)
        if ((r->password_classes & (1u << k)) && !(classes & (1u << k))) {
            snprintf(msg, msglen, "security.password.required_classes: a password needs %s",
                     needs[k]);
            return JK_ERULE;
        }
    if (username && strlen(username) >= 3 && strcasestr(pw, username)) {
        snprintf(msg, msglen,
                 "security.password.not_username: a password cannot contain the "
                 "user name");
        return JK_ERULE;
    }
    return JK_OK;
}

jk_rc jk_password_hash(const struct jk_security_rules *r, const char *pw, char *out, size_t outlen)
{
    if (outlen < crypto_pwhash_STRBYTES) return JK_ETOOBIG;
    if (sodium_init() < 0) return JK_EINTERNAL;
    if (crypto_pwhash_str(out, pw, strlen(pw), r->pwhash_opslimit, r->pwhash_memlimit))
        return JK_ENOMEM;
    return JK_OK;
}

int jk_password_verify(const char *hash, const char *pw)
{
    if (!hash || !pw || strncmp(hash, "$argon2", 7) || sodium_init() < 0) return 0;
    return crypto_pwhash_str_verify(hash, pw, strlen(pw)) == 0;
}

int jk_password_needs_rehash(const struct jk_security_rules *r, const char *hash)
{
    return crypto_pwhash_str_needs_rehash(hash, r->pwhash_opslimit, r->pwhash_memlimit) != 0;
}

jk_rc jk_password_generate(const struct jk_security_rules *r, const char *username, char *out,
                           size_t outlen)
{
    /* No look-alikes (0 O 1 l I), so a password read off a screen is typed right. */
    static const char alphabet[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
                                   "-_.@~";
    size_t n = r->password_min_length > 20 ? (size_t)r->password_min_length + 4 : 20;
    char msg[200];
    if (outlen < n + 1) return JK_ETOOBIG;
    if (sodium_init() < 0) return JK_EINTERNAL;
    for (int tries = 0; tries < 1000; tries++) {
        for (size_t i = 0; i < n; i++)
            out[i] = alphabet[randombytes_uniform(sizeof alphabet - 1)];
        out[n] = '\0';
        unsigned classes = 0;
        for (size_t i = 0; i < n; i++)
            classes |= islower((unsigned char)out[i])   ? JK_PWCLASS_LOWER
                       : isupper((unsigned char)out[i]) ? JK_PWCLASS_UPPER
                       : isdigit((unsigned char)out[i]) ? JK_PWCLASS_DIGIT
                                                        : JK_PWCLASS_SYMBOL;
        if (classes == 15 && !jk_password_check(r, username, out, msg, sizeof msg)) return JK_OK;
    }
    return JK_EINTERNAL;
}

/* ---- accounts ---- */

jk_rc jk_account_norm_username(const char *in, char *out, size_t outlen)
{
    size_t n = in ? strlen(in) : 0;
    if (!n || n > JK_USERNAME_MAX || outlen < n + 1) return JK_EINVAL;
    for (size_t i = 0; i < n; i++) {
        char ch = (char)tolower((unsigned char)in[i]);
        int is_alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!is_alnum && (i == 0 || !strchr("._-@", ch))) return JK_EINVAL;
        out[i] = ch;
    }
    out[n] = '\0';
    return JK_OK;
}

/* Whether ref is "Type/id" with an allowed type (types: space separated) and a FHIR id. */
static int ref_ok(const char *ref, const char *types)
{
    const char *slash = strchr(ref, '/');
    if (!slash || slash == ref) return 0;
    size_t tl = (size_t)(slash - ref), idl = strlen(slash + 1);
    int is_type = 0;
    for (const char *t = types; *t;) {
        size_t n = strcspn(t, " ");
        if (n == tl && !strncmp(t, ref, n)) is_type = 1;
        t += n;
        while (*t == ' ')
            t++;
    }
    if (!is_type || !idl || idl > 64) return 0;
    for (const char *p = slash + 1; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.') return 0;
    return 1;
}

jk_rc jk_account_check(const struct jk_account *a, char *msg, size_t msglen)
{
    char norm[JK_USERNAME_MAX + 1];
    const struct jk_role_info *ri = jk_role_info(a->role);
    if ((unsigned)a->role >= JK_N_ROLES) {
        snprintf(msg, msglen, "unknown role");
        return JK_EINVAL;
    }
    if (jk_account_norm_username(a->username, norm, sizeof norm) || strcmp(norm, a->username)) {
        snprintf(msg, msglen,
                 "a user name has 1 to %d characters of a-z, 0-9, '.', '_', '-' and '@', "
                 "starting with a letter or digit",
                 JK_USERNAME_MAX);
        return JK_EINVAL;
    }
    if (a->org[0] && !ref_ok(a->org, "Organization")) {
        snprintf(msg, msglen, "the organization must be a reference Organization/<id>, not '%s'",
                 a->org);
        return JK_EINVAL;
    }
    if (!a->org[0] && ri->is_org_required) {
        snprintf(msg, msglen, "a %s account needs its organization (Organization/<id>)", ri->name);
        return JK_EINVAL;
    }
    if (a->link[0] && !ref_ok(a->link, ri->link_types)) {
        snprintf(msg, msglen, "a %s account links to a %s (Type/<id>), not '%s'", ri->name,
                 ri->link_types, a->link);
        return JK_EINVAL;
    }
    return JK_OK;
}

#define ACCOUNT_COLS                                                                               \
    "id, username, role, org, link, pw_hash, totp_secret, totp_last_step, failed_count,"           \
    " locked_until_ms, password_set_ms, created_ms, is_disabled"

static const char sql_insert[] =
    "INSERT INTO account (username, role, org, link, pw_hash, totp_secret, totp_last_step,"
    " failed_count, locked_until_ms, password_set_ms, created_ms, is_disabled)"
    " VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?, ?)";
static const char sql_find[] = "SELECT " ACCOUNT_COLS " FROM account WHERE username = ?";
static const char sql_get[] = "SELECT " ACCOUNT_COLS " FROM account WHERE id = ?";
static const char sql_find_link[] =
    "SELECT " ACCOUNT_COLS " FROM account WHERE link = ? ORDER BY id LIMIT 1";
static const char sql_list[] = "SELECT " ACCOUNT_COLS " FROM account ORDER BY username";
static const char sql_set_password[] =
    "UPDATE account SET pw_hash = ?, password_set_ms = ?, failed_count = 0, locked_until_ms = 0"
    " WHERE id = ?";
static const char sql_set_totp[] =
    "UPDATE account SET totp_secret = ?, totp_last_step = 0 WHERE id = ?";
static const char sql_disable[] = "UPDATE account SET is_disabled = 1 WHERE id = ?";
static const char sql_enable[] =
    "UPDATE account SET is_disabled = 0, failed_count = 0, locked_until_ms = 0 WHERE id = ?";
static const char sql_fail_count[] =
    "UPDATE account SET failed_count = failed_count + 1 WHERE id = ?";
static const char sql_fail_lock[] = "UPDATE account SET locked_until_ms = ?, failed_count = 0"
                                    " WHERE id = ? AND failed_count >= ?";
static const char sql_success[] =
    "UPDATE account SET failed_count = 0, locked_until_ms = 0 WHERE id = ?";
static const char sql_totp_step[] =
    "UPDATE account SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?";
static const char sql_set_role[] = "UPDATE account SET role = ?, org = ?, link = ? WHERE id = ?";

static jk_rc col_copy(jk_stmt *s, int i, char *out, size_t outlen)
{
    size_t n = 0;
    const char *p = jk_stmt_col_text(s, i, &n);
    if (n >= outlen) return JK_EDB; /* longer than anything we write: not our row */
    if (n) memcpy(out, p, n);
    out[n] = '\0';
    return JK_OK;
}

static jk_rc read_row(jk_stmt *s, struct jk_account *a)
{
    char role[32];
    jk_rc rc;
    memset(a, 0, sizeof *a);
    a->id = jk_stmt_col_int(s, 0);
    if ((rc = col_copy(s, 1, a->username, sizeof a->username)) ||
        (rc = col_copy(s, 2, role, sizeof role)) || (rc = col_copy(s, 3, a->org, sizeof a->org)) ||
        (rc = col_copy(s, 4, a->link, sizeof a->link)) ||
        (rc = col_copy(s, 5, a->pw_hash, sizeof a->pw_hash)) ||
        (rc = col_copy(s, 6, a->totp_secret, sizeof a->totp_secret)))
        return rc;
    const struct jk_role_info *ri = jk_role_by_name(role);
    if (!ri) return JK_EDB;
    a->role = ri->role;
    a->totp_last_step = jk_stmt_col_int(s, 7);
    a->failed_count = (int)jk_stmt_col_int(s, 8);
    a->locked_until_ms = jk_stmt_col_int(s, 9);
    a->password_set_ms = jk_stmt_col_int(s, 10);
    a->created_ms = jk_stmt_col_int(s, 11);
    a->is_disabled = jk_stmt_col_int(s, 12) != 0;
    return JK_OK;
}

static jk_rc text_arg(jk_stmt *s, int i, const char *p)
{
    return jk_stmt_text_arg(s, i, p, strlen(p));
}

/* Runs an UPDATE whose arguments are bound by the caller; *changes (may be NULL) gets the
 * number of rows changed. */
static jk_rc run_update(jk_stmt *s, int64_t *changes)
{
    int has_row = 0;
    jk_rc rc = jk_stmt_step(s, &has_row);
    if (!rc && changes) *changes = jk_stmt_changes(s);
    jk_stmt_reset(s);
    return rc;
}

jk_rc jk_account_insert(jk_conn *c, struct jk_account *a)
{
    jk_stmt *s;
    jk_rc rc = jk_conn_prepare(c, sql_insert, &s);
    if (rc) return rc;
    text_arg(s, 1, a->username);
    text_arg(s, 2, jk_role_info(a->role)->name);
    text_arg(s, 3, a->org);
    text_arg(s, 4, a->link);
    text_arg(s, 5, a->pw_hash);
    text_arg(s, 6, a->totp_secret);
    jk_stmt_int_arg(s, 7, a->password_set_ms);
    jk_stmt_int_arg(s, 8, a->created_ms);
    jk_stmt_int_arg(s, 9, a->is_disabled ? 1 : 0);
    if ((rc = run_update(s, NULL))) return rc;
    struct jk_account back;
    if ((rc = jk_account_find(c, a->username, &back))) return rc;
    a->id = back.id;
    return JK_OK;
}

static jk_rc find_one(jk_conn *c, const char *sql, const char *name, int64_t id,
                      struct jk_account *out)
{
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (rc) return rc;
    if (name)
        text_arg(s, 1, name);
    else
        jk_stmt_int_arg(s, 1, id);
    rc = jk_stmt_step(s, &has_row);
    if (!rc) rc = has_row ? read_row(s, out) : JK_ENOTFOUND;
    jk_stmt_reset(s);
    return rc;
}

jk_rc jk_account_find(jk_conn *c, const char *username, struct jk_account *out)
{
    return find_one(c, sql_find, username, 0, out);
}

jk_rc jk_account_find_link(jk_conn *c, const char *link, struct jk_account *out)
{
    return find_one(c, sql_find_link, link, 0, out);
}

jk_rc jk_account_get(jk_conn *c, int64_t id, struct jk_account *out)
{
    return find_one(c, sql_get, NULL, id, out);
}

/* Runs an UPDATE by id that must change exactly one row (else JK_ENOTFOUND). */
static jk_rc update_one(jk_stmt *s)
{
    int64_t n = 0;
    jk_rc rc = run_update(s, &n);
    return rc ? rc : n ? JK_OK : JK_ENOTFOUND;
}

jk_rc jk_account_set_password(jk_conn *c, int64_t id, const char *pw_hash, int64_t now_ms)
{
    jk_stmt *s;
    jk_rc rc = jk_conn_prepare(c, sql_set_password, &s);
    if (rc) return rc;
    text_arg(s, 1, pw_hash);
    jk_stmt_int_arg(s, 2, now_ms);
    jk_stmt_int_arg(s, 3, id);
    return update_one(s);
}

jk_rc jk_account_set_totp(jk_conn *c, int64_t id, const char *secret_b32)
{
    jk_stmt *s;
    jk_rc rc = jk_conn_prepare(c, sql_set_totp, &s);
    if (rc) return rc;
    text_arg(s, 1, secret_b32);
    jk_stmt_int_arg(s, 2, id);
    return update_one(s);
}

jk_rc jk_account_set_disabled(jk_conn *c, int64_t id, int is_disabled)
{
    jk_stmt *s;
    jk_rc rc = jk_conn_prepare(c, is_disabled ? sql_disable : sql_enable, &s);
    if (rc) return rc;
    jk_stmt_int_arg(s, 1, id);
    return update_one(s);
}

jk_rc jk_account_note_failure(jk_conn *c, int64_t id, const struct jk_security_rules *r,
                              int64_t now_ms, int *is_locked_now)
{
    jk_stmt *s;
    int64_t n = 0;
    if (is_locked_now) *is_locked_now = 0;
    /* Two statements in one transaction: the first holds the row (PostgreSQL) or the database
     * (SQLite) until the commit, so concurrent failures are all counted and lock once. */
    jk_rc rc = jk_conn_prepare(c, sql_fail_count, &s);
    if (rc) return rc;
    jk_stmt_int_arg(s, 1, id);
    if ((rc = update_one(s))) return rc;
    if ((rc = jk_conn_prepare(c, sql_fail_lock, &s))) return rc;
    jk_stmt_int_arg(s, 1, now_ms + (int64_t)r->lockout_minutes * 60000);
    jk_stmt_int_arg(s, 2, id);
    jk_stmt_int_arg(s, 3, r->lockout_threshold);
    if ((rc = run_update(s, &n))) return rc;
    if (is_locked_now) *is_locked_now = n > 0;
    return JK_OK;
}

jk_rc jk_account_note_success(jk_conn *c, int64_t id, int64_t totp_step)
{
    jk_stmt *s;
    jk_rc rc;
    if (totp_step > 0) { /* first, so that a replayed code leaves nothing written */
        if ((rc = jk_conn_prepare(c, sql_totp_step, &s))) return rc;
        jk_stmt_int_arg(s, 1, totp_step);
        jk_stmt_int_arg(s, 2, id);
        jk_stmt_int_arg(s, 3, totp_step);
        if ((rc = update_one(s))) return rc == JK_ENOTFOUND ? JK_EUNAUTH : rc;
    }
    if ((rc = jk_conn_prepare(c, sql_success, &s))) return rc;
    jk_stmt_int_arg(s, 1, id);
    return update_one(s);
}

jk_rc jk_account_list(jk_conn *c, int (*fn)(void *arg, const struct jk_account *a), void *arg)
{
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql_list, &s);
    if (rc) return rc;
    while (!(rc = jk_stmt_step(s, &has_row)) && has_row) {
        struct jk_account a;
        if ((rc = read_row(s, &a)) || fn(arg, &a)) break;
    }
    jk_stmt_reset(s);
    return rc;
}

/* ---- the login decision ---- */

enum jk_login_outcome jk_account_authenticate(const struct jk_security_rules *r,
                                              const struct jk_account *a, const char *secret,
                                              const char *totp, int64_t now_ms, int64_t *totp_step)
{
    *totp_step = 0;
    if (a->is_disabled) return JK_LOGIN_DISABLED;
    if (a->locked_until_ms > now_ms) return JK_LOGIN_LOCKED;
    if (!secret || !jk_password_verify(a->pw_hash, secret)) return JK_LOGIN_BAD_SECRET;
    if (jk_role_info(a->role)->is_person && r->password_max_age_days > 0 &&
        now_ms - a->password_set_ms > (int64_t)r->password_max_age_days * MS_PER_DAY)
        return JK_LOGIN_EXPIRED;
    if (!jk_security_needs_totp(r, a->role)) return JK_LOGIN_OK;
    if (!a->totp_secret[0]) return JK_LOGIN_TOTP_NOT_ENROLLED;
    if (!totp || !*totp) return JK_LOGIN_TOTP_REQUIRED;
    if (jk_totp_verify(a->totp_secret, totp, now_ms, JK_TOTP_WINDOW, a->totp_last_step, totp_step))
        return JK_LOGIN_BAD_TOTP;
    return JK_LOGIN_OK;
}

const char *jk_login_outcome_name(enum jk_login_outcome o)
{
    static const char *const names[] = {
        [JK_LOGIN_OK] = "ok",
        [JK_LOGIN_BAD_SECRET] = "bad_secret",
        [JK_LOGIN_BAD_TOTP] = "bad_totp",
        [JK_LOGIN_TOTP_REQUIRED] = "totp_required",
        [JK_LOGIN_TOTP_NOT_ENROLLED] = "totp_not_enrolled",
        [JK_LOGIN_LOCKED] = "locked",
        [JK_LOGIN_DISABLED] = "disabled",
        [JK_LOGIN_EXPIRED] = "password_expired",
    };
    return (unsigned)o < sizeof names / sizeof names[0] ? names[o] : "unknown";
}

/* ---- the demo ---- */

/* One account per role, linked to demo/region.json: Patient pat-1, PractitionerRoles
 * prac-1-role (doctor), prac-2-role (nurse), prac-5-role (pharmacist), prac-7-role (pharmacist
 * reviewing 福州市第一医院's prescriptions), prac-6-role (pharmacist of the pharmacy pharm-fz-1),
 * and the Organizations of the region. */
static const struct jk_demo_account demo_table[] = {
    {"demo-resident", "Jiankang-Resident-2025", "resident", "", "Patient/pat-1", NULL,
     "王小明, a resident of Fuzhou"},
    {"demo-doctor", "Jiankang-Doctor-2025", "doctor", "Organization/hosp-fz-1",
     "PractitionerRole/prac-1-role", NULL, "李建国, doctor at 福州市第一医院"},
    {"demo-nurse", "Jiankang-Nurse-2025", "nurse", "Organization/hosp-fz-1",
     "PractitionerRole/prac-2-role", NULL, "陈静, nurse at 福州市第一医院"},
    {"demo-pharmacist", "Jiankang-Pharmacist-2025", "pharmacist", "Organization/chc-xm-siming",
     "PractitionerRole/prac-5-role", NULL,
     "吴敏, pharmacist at 厦门市思明区鹭江街道社区卫生服务中心"},
    {"demo-rx-reviewer", "Jiankang-Reviewer-2025", "pharmacist", "Organization/hosp-fz-1",
     "PractitionerRole/prac-7-role", NULL,
     "周慧, pharmacist at 福州市第一医院: reviews its online prescriptions"},
    {"demo-pharmacy", "Jiankang-Pharmacy-2025", "pharmacist", "Organization/pharm-fz-1",
     "PractitionerRole/prac-6-role", NULL,
     "郑华, pharmacist at 福州市鼓楼区健康大药房: redeems codes, dispenses, delivers"},
    {"demo-institution-admin", "Jiankang-InstAdmin-2025", "institution-admin",
     "Organization/hosp-fz-1", "", NULL, "administrator of 福州市第一医院"},
    {"demo-public-health", "Jiankang-PublicHealth-2025", "public-health",
     "Organization/region-350100", "", NULL, "public-health officer, 福州市卫生健康委员会"},
    {"demo-regulator", "Jiankang-Regulator-2025", "regulator", "Organization/region-350000", "",
     NULL, "regulator, 福建省卫生健康委员会"},
    {"demo-platform-admin", "Jiankang-PlatformAdmin-2025", "platform-admin", "", "", NULL,
     "administrator of the platform"},
    {"demo-his", "Jiankang-HIS-Secret-2025", "system", "Organization/hosp-fz-1", "", NULL,
     "the hospital information system of 福州市第一医院 (client_credentials)"},
};

#define N_DEMO (sizeof demo_table / sizeof demo_table[0])

/* A fixed, readable secret per demo account: JIANKANGDEMO + the role's letters, filled
 * with 2..7 to 32 base32 characters (20 bytes). */
static void demo_secret(const char *role, char out[33])
{
    size_t k = 0;
    for (const char *p = "JIANKANGDEMO"; *p; p++)
        out[k++] = *p;
    for (const char *p = role; *p && k < 32; p++)
        if (isalpha((unsigned char)*p)) out[k++] = (char)toupper((unsigned char)*p);
    for (int d = 0; k < 32; d = (d + 1) % 6)
        out[k++] = (char)('2' + d);
    out[32] = '\0';
}

struct demo_tx {
    struct jk_account a;
};

static jk_rc demo_tx_fn(jk_conn *c, void *arg)
{
    struct demo_tx *d = arg;
    struct jk_account old;
    jk_rc rc = jk_account_find(c, d->a.username, &old);
    if (rc == JK_ENOTFOUND) return jk_account_insert(c, &d->a);
    if (rc) return rc;
    jk_stmt *s;
    if ((rc = jk_conn_prepare(c, sql_set_role, &s))) return rc;
    text_arg(s, 1, jk_role_info(d->a.role)->name);
    text_arg(s, 2, d->a.org);
    text_arg(s, 3, d->a.link);
    jk_stmt_int_arg(s, 4, old.id);
    if ((rc = update_one(s)) ||
        (rc = jk_account_set_password(c, old.id, d->a.pw_hash, d->a.password_set_ms)) ||
        (rc = jk_account_set_totp(c, old.id, d->a.totp_secret)) ||
        (rc = jk_account_set_disabled(c, old.id, 0)))
        return rc;
    d->a.id = old.id;
    return JK_OK;
}

jk_rc jk_account_create_demo(jk_store *db, const struct jk_security_rules *r, int64_t now_ms,
                             const struct jk_demo_account **out, size_t *n)
{
    static struct jk_demo_account table[N_DEMO];
    static char secrets[N_DEMO][33];
    char msg[256];
    for (size_t i = 0; i < N_DEMO; i++) {
        const struct jk_demo_account *d = &demo_table[i];
        struct demo_tx tx;
        memset(&tx, 0, sizeof tx);
        const struct jk_role_info *ri = jk_role_by_name(d->role);
        jk_rc rc;
        if (!ri) return JK_EINTERNAL;
        tx.a.role = ri->role;
        snprintf(tx.a.username, sizeof tx.a.username, "%s", d->username);
        snprintf(tx.a.org, sizeof tx.a.org, "%s", d->org);
        snprintf(tx.a.link, sizeof tx.a.link, "%s", d->link);
        tx.a.password_set_ms = tx.a.created_ms = now_ms;
        table[i] = *d;
        if (jk_security_needs_totp(r, ri->role)) {
            demo_secret(d->role, secrets[i]);
            memcpy(tx.a.totp_secret, secrets[i], sizeof secrets[i]);
            table[i].totp_secret = secrets[i];
        }
        if ((rc = jk_account_check(&tx.a, msg, sizeof msg)) ||
            (rc = jk_password_check(r, d->username, d->password, msg, sizeof msg))) {
            jk_log_error("auth", "demo account %s: %s", d->username, msg);
            return rc;
        }
        if ((rc = jk_password_hash(r, d->password, tx.a.pw_hash, sizeof tx.a.pw_hash)) ||
            (rc = jk_store_tx(db, demo_tx_fn, &tx)))
            return rc;
    }
    *out = table;
    *n = N_DEMO;
    return JK_OK;
}
