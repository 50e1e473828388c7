/* resident_api.c - real-name registration (a code sent by SMS to the phone, then the Patient
 * and the resident account made in one transaction) and newborns registered by their guardian
 * (docs/internals/mpi.md, "Registration"). */
#include <ctype.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>
#include <sodium.h>

#include "api/api_int.h"
#include "auth/account.h"
#include "auth/audit.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/rules.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "mpi/idnum.h"
#include "mpi/mpi.h"
#include "notify/sms.h"

#define RESIDENT_JSON  "application/json; charset=utf-8"
#define CODE_MAX       10  /* digits of a code, at most */
#define NAME_MAX_CHARS 64  /* characters of a person's name */
#define MESSAGE_MAX    400 /* bytes of the SMS template */
#define HEX_KEY        (2 * JK_SM3_BYTES + 1)
#define MAX_SAME_ID    16 /* Patients with one document number looked at for an account */
#define GUARDIAN_CODE  "GUARD"
#define ROLE_CODES     "http://terminology.hl7.org/CodeSystem/v3-RoleCode"

/* ---- the rules (rules/registration.json) ---- */

struct reg_rules {
    char path[512];
    int code_length, ttl_s, resend_s, max_attempts, newborn_max_days;
    char message[MESSAGE_MAX];
    struct jk_rate_rule rate_code_addr, rate_code_phone, rate_register_addr;
};

enum rule_kind { R_INT, R_RATE, R_TEXT };

static const struct rule_def {
    const char *code;
    enum rule_kind kind;
    size_t offset;
    long min, max;
} rule_defs[] = {
#define OFF(f) offsetof(struct reg_rules, f)
    {"code.length", R_INT, OFF(code_length), 4, CODE_MAX},
    {"code.ttl_seconds", R_INT, OFF(ttl_s), 1, 86400},
    {"code.resend_seconds", R_INT, OFF(resend_s), 0, 3600},
    {"code.max_attempts", R_INT, OFF(max_attempts), 1, 100},
    {"code.message", R_TEXT, OFF(message), 0, 0},
    {"rate.code.per_address", R_RATE, OFF(rate_code_addr), 1, 1000000},
    {"rate.code.per_phone", R_RATE, OFF(rate_code_phone), 1, 1000000},
    {"rate.register.per_address", R_RATE, OFF(rate_register_addr), 1, 1000000},
    {"newborn.max_age_days", R_INT, OFF(newborn_max_days), 0, 36500},
#undef OFF
};

#define N_RULES (sizeof rule_defs / sizeof rule_defs[0])

const char *jk_registration_rules_path(void)
{
    const char *p = getenv("JIANKANG_REGISTRATION_RULES");
    return p && *p ? p : "rules/registration.json";
}

static jk_rc rule_value(const struct rule_def *d, struct json_object *v, const char *path,
                        const char *ptr, struct reg_rules *out, char *err, size_t errlen)
{
    char sub[300];
    char *field = (char *)out + d->offset;
    jk_rc rc;
    switch (d->kind) {
    case R_INT:
        return jk_rules_int(v, path, ptr, d->min, d->max, (int *)(void *)field, err, errlen);
    case R_TEXT: {
        const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
        if (!strstr(s, "{code}") || strlen(s) >= MESSAGE_MAX)
            return jk_rules_fail(err, errlen, path, ptr,
                                 "must be a text of fewer than %d bytes holding {code}",
                                 MESSAGE_MAX);
        snprintf(field, MESSAGE_MAX, "%s", s);
        return JK_OK;
    }
    case R_RATE: {
        static const char *const keys[] = {"limit", "window_seconds", NULL};
        struct jk_rate_rule *rr = (struct jk_rate_rule *)(void *)field;
        if (!json_object_is_type(v, json_type_object))
            return jk_rules_fail(err, errlen, path, ptr,
                                 "must be an object {\"limit\": N, \"window_seconds\": S}");
        if ((rc = jk_rules_known_keys(v, keys, path, ptr, err, errlen))) return rc;
        snprintf(sub, sizeof sub, "%.200s/limit", ptr);
        if ((rc = jk_rules_int(json_object_object_get(v, "limit"), path, sub, d->min, d->max,
                               &rr->limit, err, errlen)))
            return rc;
        snprintf(sub, sizeof sub, "%.200s/window_seconds", ptr);
        return jk_rules_int(json_object_object_get(v, "window_seconds"), path, sub, 1, 86400,
                            &rr->window_s, err, errlen);
    }
    }
    return JK_EINTERNAL;
}

static jk_rc rules_load(const char *path, struct reg_rules *out, char *err, size_t errlen)
{
    struct json_object *root, *rules, *v;
    char ptr[256];
    memset(out, 0, sizeof *out);
    snprintf(out->path, sizeof out->path, "%s", path);
    jk_rc rc = jk_rules_parse(path, &root, err, errlen);
    if (rc) return rc;
    if ((rc = jk_rules_top(root, path, "registration", &rules, err, errlen))) goto out;
    json_object_object_foreach(rules, code, rule)
    {
        size_t i = 0;
        while (i < N_RULES && strcmp(rule_defs[i].code, code))
            i++;
        snprintf(ptr, sizeof ptr, "/rules/%.200s", code);
        if (i == N_RULES) {
            rc = jk_rules_fail(err, errlen, path, ptr, "unknown rule '%.200s'", code);
            goto out;
        }
        if ((rc = jk_rules_rule(rule, path, code, ptr, sizeof ptr, &v, err, errlen)) ||
            (rc = rule_value(&rule_defs[i], v, path, ptr, out, err, errlen)))
            goto out;
    }
    for (size_t i = 0; i < N_RULES; i++)
        if (!json_object_object_get_ex(rules, rule_defs[i].code, &v)) {
            snprintf(ptr, sizeof ptr, "/rules/%s", rule_defs[i].code);
            rc = jk_rules_fail(err, errlen, path, ptr, "the rule is missing");
            goto out;
        }
out:
    json_object_put(root);
    return rc;
}

/* The rules and the key codes and phones are hashed under: installed by jk_api_resident_init
 * before the server starts; read on first use (with a key for this process only) when not. */
static struct {
    pthread_once_t once;
    int is_ready;
    struct reg_rules r;
    unsigned char key[JK_SM3_BYTES];
} reg = {.once = PTHREAD_ONCE_INIT};

/* The domain under which the key is made from the blind-index key: changing it makes every
 * pending code useless. */
static const char key_domain[] = "jiankang v1 registration code key";

jk_rc jk_api_resident_init(const struct jk_keys *keys, char *err, size_t errlen)
{
    jk_rc rc = rules_load(jk_registration_rules_path(), &reg.r, err, errlen);
    if (!rc) rc = jk_crypto_blind_index(keys, key_domain, "1", 1, reg.key);
    if (!rc) reg.is_ready = 1;
    return rc;
}

static void reg_lazy_init(void)
{
    char err[1024];
    if (reg.is_ready) return;
    if (rules_load(jk_registration_rules_path(), &reg.r, err, sizeof err)) {
        jk_log_error("register", "%s", err);
        return;
    }
    if (!jk_crypto_random(reg.key, sizeof reg.key)) reg.is_ready = 1;
}

static const struct reg_rules *reg_rules(void)
{
    pthread_once(&reg.once, reg_lazy_init);
    return reg.is_ready ? &reg.r : NULL;
}

/* HMAC-SM3 under the registration key of the parts a and b (b may be NULL), as hex. */
static jk_rc keyed_hex(const char *a, const char *b, char out[HEX_KEY])
{
    char in[160];
    unsigned char mac[JK_SM3_BYTES];
    int n = snprintf(in, sizeof in, "%s%c%s", a, 0, b ? b : "");
    if (n < 0 || (size_t)n >= sizeof in) return JK_EINVAL;
    jk_rc rc = jk_crypto_hmac_sm3(reg.key, sizeof reg.key, in, (size_t)n, mac);
    sodium_memzero(in, sizeof in);
    if (rc) return rc;
    jk_crypto_hex(mac, sizeof mac, out);
    return JK_OK;
}

/* ---- requests and answers ---- */

/* Refuses field with code and its words in both languages: "code: 中文" or "code: English". */
static jk_rc refuse(struct jk_http_req *rq, jk_rc rc, const char *field, const char *code,
                    const char *zh, const char *en)
{
    return jk_diag_add(&rq->diag, rc, rc == JK_ECONFLICT ? "duplicate" : "value", field, "%s: %s",
                       code, rq->diag.is_en ? en : zh);
}

static jk_rc refuse_idnum(struct jk_http_req *rq, const char *field, const struct jk_idnum_err *e)
{
    return refuse(rq, JK_EINVAL, field, e->code, e->zh, e->en);
}

/* The body as a JSON object (JK_EINVAL with an issue when it is not one). */
static jk_rc parse_body(struct jk_http_req *rq, struct json_object **out)
{
    const char *ct = jk_http_header(rq, "Content-Type");
    *out = NULL;
    if (ct && strncasecmp(ct, "application/json", 16) &&
        strncasecmp(ct, "application/fhir+json", 21))
        return jk_diag_add(&rq->diag, JK_EMEDIA, "not-supported", NULL,
                           "Content-Type '%s' is not supported; send application/json", ct);
    jk_rc rc = jk_json_parse(rq->body ? rq->body : "", rq->body ? rq->body_len : 0,
                             &jk_api_app(rq)->json_limits, &rq->diag, out);
    if (rc) return rc;
    if (json_object_is_type(*out, json_type_object)) return JK_OK;
    json_object_put(*out);
    *out = NULL;
    return refuse(rq, JK_EINVAL, NULL, "registration.body", "请求体应为 JSON 对象",
                  "the body must be a JSON object");
}

/* Sends obj (consumed) as JSON with status. */
static jk_rc send_obj(struct jk_http_req *rq, int status, struct json_object *obj)
{
    const char *text = obj ? json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                                     JSON_C_TO_STRING_NOSLASHESCAPE)
                           : NULL;
    char *body = text ? jk_arena_strdup(rq->arena, text) : NULL;
    json_object_put(obj);
    if (!body) return JK_ENOMEM;
    jk_http_add_header(rq, "Cache-Control", "no-store");
    return jk_http_respond(rq, status, RESIDENT_JSON, body, strlen(body));
}

/* 429 with the issue already in the diagnostics and Retry-After set. */
static jk_rc send_429(struct jk_http_req *rq)
{
    struct jk_buf b;
    jk_buf_init(&b, 0);
    jk_rc rc = jk_api_outcome_text(rq, NULL, &b);
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return jk_api_send_buf(rq, 429, &b);
}

static jk_rc throttled(struct jk_http_req *rq, int wait_s)
{
    char zh[96], en[96];
    snprintf(zh, sizeof zh, "请求过于频繁，请 %d 秒后再试", wait_s);
    snprintf(en, sizeof en, "too many requests; try again in %d seconds", wait_s);
    jk_diag_add(&rq->diag, JK_EINVAL, "throttled", NULL, "registration.rate: %s",
                rq->diag.is_en ? en : zh);
    return send_429(rq);
}

/* A mainland mobile number: 11 digits starting 1[3-9], with an optional +86 before it and
 * spaces or '-' between digits. Normalised into out (12 bytes). */
static int phone_norm(const char *in, char out[12])
{
    size_t k = 0;
    if (!in) return 0;
    if (!strncmp(in, "+86", 3)) in += 3;
    for (; *in; in++) {
        if (*in == ' ' || *in == '-') continue;
        if (!isdigit((unsigned char)*in) || k == 11) return 0;
        out[k++] = *in;
    }
    out[k] = '\0';
    return k == 11 && out[0] == '1' && out[1] >= '3';
}

static jk_rc refuse_phone(struct jk_http_req *rq)
{
    return refuse(rq, JK_EINVAL, "phone", "registration.phone", "手机号码应为 11 位中国大陆手机号",
                  "the phone must be a mainland mobile number of 11 digits");
}

/* ---- POST /api/residents/register/code ---- */

struct code_job {
    const struct reg_rules *r;
    char phone[12], phone_key[HEX_KEY], code[CODE_MAX + 1], code_hash[HEX_KEY];
    int64_t now_ms;
    int wait_s; /* a code went out less than code.resend_seconds ago */
    jk_rc rc;
};

static const char sql_code_get[] =
    "SELECT code_hash, sent_ms, expires_ms, attempts FROM reg_code WHERE phone_key = ?";
static const char sql_code_del[] = "DELETE FROM reg_code WHERE phone_key = ?";
static const char sql_code_put[] =
    "INSERT INTO reg_code (phone_key, code_hash, sent_ms, expires_ms, attempts) "
    "VALUES (?, ?, ?, ?, 0)";
static const char sql_code_try[] =
    "UPDATE reg_code SET attempts = attempts + 1 WHERE phone_key = ?";

static jk_rc run_key(jk_conn *c, const char *sql, const char *key)
{
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, key, strlen(key));
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

/* The pending code of phone_key: found (1) or not (0), with its fields. */
struct pending {
    char hash[HEX_KEY];
    int64_t sent_ms, expires_ms;
    int attempts;
};

static jk_rc code_get(jk_conn *c, const char *phone_key, struct pending *p, int *is_found)
{
    jk_stmt *s;
    jk_rc rc = jk_conn_prepare(c, sql_code_get, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, phone_key, strlen(phone_key));
    rc = jk_stmt_step(s, is_found);
    if (!rc && *is_found) {
        size_t n;
        const char *h = jk_stmt_col_text(s, 0, &n);
        snprintf(p->hash, sizeof p->hash, "%.*s", (int)n, h ? h : "");
        p->sent_ms = jk_stmt_col_int(s, 1);
        p->expires_ms = jk_stmt_col_int(s, 2);
        p->attempts = (int)jk_stmt_col_int(s, 3);
    }
    jk_stmt_reset(s);
    return rc;
}

static jk_rc code_tx(jk_conn *c, void *arg)
{
    struct code_job *job = arg;
    struct pending p;
    int is_found = 0;
    jk_rc rc = code_get(c, job->phone_key, &p, &is_found);
    if (rc) return rc;
    int64_t next_ms = is_found ? p.sent_ms + job->r->resend_s * 1000LL : 0;
    if (is_found && job->now_ms < next_ms) {
        job->wait_s = (int)((next_ms - job->now_ms + 999) / 1000);
        return JK_OK;
    }
    if ((rc = run_key(c, sql_code_del, job->phone_key))) return rc;
    jk_stmt *s;
    int has_row;
    if ((rc = jk_conn_prepare(c, sql_code_put, &s))) return rc;
    jk_stmt_text_arg(s, 1, job->phone_key, strlen(job->phone_key));
    jk_stmt_text_arg(s, 2, job->code_hash, strlen(job->code_hash));
    jk_stmt_int_arg(s, 3, job->now_ms);
    jk_stmt_int_arg(s, 4, job->now_ms + job->r->ttl_s * 1000LL);
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

static void code_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    ((struct code_job *)rq->state)->rc = rc;
    jk_http_wake(rq);
}

/* The message of the rules with {code} and {minutes} filled in, into out. */
static void fill_message(const struct reg_rules *r, const char *code, char *out, size_t outlen)
{
    char minutes[16];
    size_t k = 0;
    snprintf(minutes, sizeof minutes, "%d", (r->ttl_s + 59) / 60);
    for (const char *p = r->message; *p && k + 1 < outlen;) {
        const char *v = !strncmp(p, "{code}", 6)      ? code
                        : !strncmp(p, "{minutes}", 9) ? minutes
                                                      : NULL;
        if (v) {
            size_t n = strlen(v);
            if (k + n >= outlen) break;
            memcpy(out + k, v, n);
            k += n;
            p += v == code ? 6 : 9;
        } else {
            out[k++] = *p++;
        }
    }
    out[k] = '\0';
}

static jk_rc code_finish(struct jk_http_req *rq)
{
    struct code_job *job = rq->state;
    jk_rc rc = job->rc;
    if (!rc && job->wait_s) {
        char v[24], zh[128], en[128];
        snprintf(v, sizeof v, "%d", job->wait_s);
        jk_http_add_header(rq, "Retry-After", v);
        snprintf(zh, sizeof zh, "验证码已发送，请 %d 秒后再重新获取", job->wait_s);
        snprintf(en, sizeof en, "a code was sent already; ask again in %d seconds", job->wait_s);
        refuse(rq, JK_EINVAL, "phone", "registration.code_resend", zh, en);
        rc = send_429(rq);
    } else if (!rc) {
        char text[MESSAGE_MAX + 32];
        fill_message(job->r, job->code, text, sizeof text);
        rc = jk_sms_send(job->phone, text);
        sodium_memzero(text, sizeof text);
        if (rc) {
            jk_log_error("register", "request %s: the SMS gateway did not take the code",
                         rq->request_id);
        } else {
            struct json_object *o = json_object_new_object();
            json_object_object_add(o, "expires_in", json_object_new_int(job->r->ttl_s));
            json_object_object_add(o, "resend_in", json_object_new_int(job->r->resend_s));
            rc = send_obj(rq, 202, o);
        }
    }
    sodium_memzero(job->code, sizeof job->code);
    return rc;
}

/* n random decimal digits into out (n + 1 bytes), uniformly. */
static jk_rc random_digits(char *out, int n)
{
    for (int i = 0; i < n;) {
        unsigned char b;
        jk_rc rc = jk_crypto_random(&b, 1);
        if (rc) return rc;
        if (b < 250) out[i++] = (char)('0' + b % 10);
    }
    out[n] = '\0';
    return JK_OK;
}

jk_rc jk_api_register_code(struct jk_http_req *rq)
{
    const struct reg_rules *r = reg_rules();
    struct json_object *body;
    if (!r) return JK_EINTERNAL;
    jk_rc rc = parse_body(rq, &body);
    if (rc) return rc;
    struct code_job *job = jk_arena_zalloc(rq->arena, sizeof *job);
    int is_phone = job && phone_norm(jk_json_str(body, "phone"), job->phone);
    json_object_put(body);
    if (!job) return JK_ENOMEM;
    if (!is_phone) return refuse_phone(rq);
    int wait =
        jk_api_rate_take(rq, "register-code/address", jk_http_client_addr(rq), &r->rate_code_addr);
    if (!wait && (rc = keyed_hex("phone", job->phone, job->phone_key))) return rc;
    if (!wait)
        wait = jk_api_rate_take(rq, "register-code/phone", job->phone_key, &r->rate_code_phone);
    if (wait) return throttled(rq, wait);
    if ((rc = random_digits(job->code, r->code_length)) ||
        (rc = keyed_hex(job->phone_key, job->code, job->code_hash)))
        return rc;
    job->r = r;
    job->now_ms = jk_time_now_ms();
    rq->state = job;
    jk_http_defer(rq, code_finish);
    jk_store_tx_async(jk_api_app(rq)->db, code_tx, job, code_done, rq);
    return JK_OK;
}

/* ---- POST /api/residents/register ---- */

enum reg_outcome {
    REG_OK,
    REG_NO_CODE,
    REG_CODE_EXPIRED,
    REG_CODE_WRONG,
    REG_CODE_SPENT, /* too many wrong tries */
    REG_USERNAME_TAKEN,
    REG_DUPLICATE
};

struct reg_job {
    const struct reg_rules *r;
    const struct jk_audit *au;
    char phone_key[HEX_KEY], code_hash[HEX_KEY];
    char username[JK_USERNAME_MAX + 1], pw_hash[JK_PWHASH_MAX];
    const char *ident_query; /* "system|number" */
    struct jk_fhir_write w;
    const char *addr, *request_id;
    int64_t now_ms;
    enum reg_outcome outcome;
    int tries_left;
    char person[JK_MPI_ID_MAX]; /* the golden person the new Patient was linked to */
    jk_rc rc;
};

static jk_rc audit_reg(const struct reg_job *job, jk_conn *c, const char *actor, const char *res_id,
                       jk_rc outcome, const char *detail)
{
    if (!job->au) return JK_OK;
    struct jk_audit_rec r = {.actor = actor ? actor : "anonymous",
                             .role = actor ? "resident" : NULL,
                             .action = "register",
                             .res_type = res_id ? "Patient" : NULL,
                             .res_id = res_id,
                             .patient_id = res_id,
                             .client_addr = job->addr,
                             .outcome = outcome,
                             .request_id = job->request_id,
                             .reason = detail};
    return jk_audit_append(job->au, c, &r, NULL);
}

/* The code sent to the phone, checked: a wrong one counts as a try (committed, with its audit
 * record); job->outcome says what was wrong. */
static jk_rc reg_check_code(jk_conn *c, struct reg_job *job, int *is_ok)
{
    struct pending p;
    int is_found = 0;
    *is_ok = 0;
    jk_rc rc = code_get(c, job->phone_key, &p, &is_found);
    if (rc) return rc;
    if (!is_found)
        job->outcome = REG_NO_CODE;
    else if (p.attempts >= job->r->max_attempts)
        job->outcome = REG_CODE_SPENT;
    else if (p.expires_ms <= job->now_ms)
        job->outcome = REG_CODE_EXPIRED;
    else if (strlen(p.hash) != strlen(job->code_hash) ||
             !jk_crypto_equal(p.hash, job->code_hash, strlen(p.hash))) {
        job->outcome = p.attempts + 1 >= job->r->max_attempts ? REG_CODE_SPENT : REG_CODE_WRONG;
        job->tries_left = job->r->max_attempts - p.attempts - 1;
        if ((rc = run_key(c, sql_code_try, job->phone_key))) return rc;
    } else {
        *is_ok = 1;
        return JK_OK;
    }
    static const char *const details[] = {[REG_NO_CODE] = "no_code",
                                          [REG_CODE_EXPIRED] = "code_expired",
                                          [REG_CODE_WRONG] = "code_wrong",
                                          [REG_CODE_SPENT] = "code_attempts"};
    return audit_reg(job, c, NULL, NULL, JK_EUNAUTH, details[job->outcome]);
}

/* Whether a resident account is linked to a Patient with the document's number already. */
static jk_rc reg_is_registered(jk_conn *c, struct reg_job *job, int *is_dup)
{
    static const char *const keys[] = {"identifier"};
    const char *values[] = {job->ident_query};
    const char **ids;
    size_t n;
    *is_dup = 0;
    jk_rc rc = jk_fhir_search_match(c, job->w.arena, job->w.diag, "Patient", keys, values, 1,
                                    MAX_SAME_ID, &ids, &n);
    for (size_t i = 0; i < n && !rc && !*is_dup; i++) {
        char link[JK_REF_MAX + 1];
        struct jk_account a;
        snprintf(link, sizeof link, "Patient/%s", ids[i]);
        rc = jk_account_find_link(c, link, &a);
        if (!rc) *is_dup = a.role == JK_ROLE_RESIDENT;
        if (rc == JK_ENOTFOUND) rc = JK_OK;
    }
    return rc;
}

static jk_rc reg_tx(jk_conn *c, void *arg)
{
    struct reg_job *job = arg;
    struct jk_account a;
    int is_ok, is_dup;
    jk_rc rc = reg_check_code(c, job, &is_ok);
    if (rc || !is_ok) return rc;
    rc = jk_account_find(c, job->username, &a);
    if (!rc) {
        job->outcome = REG_USERNAME_TAKEN;
        return JK_OK;
    }
    if (rc != JK_ENOTFOUND || (rc = reg_is_registered(c, job, &is_dup))) return rc;
    if (is_dup) {
        job->outcome = REG_DUPLICATE;
        return audit_reg(job, c, NULL, NULL, JK_ECONFLICT, "duplicate_document");
    }
    if ((rc = jk_fhir_write_tx(c, &job->w))) return rc;
    memset(&a, 0, sizeof a);
    memcpy(a.username, job->username, sizeof a.username);
    a.role = JK_ROLE_RESIDENT;
    snprintf(a.link, sizeof a.link, "Patient/%s", job->w.out.id);
    memcpy(a.pw_hash, job->pw_hash, sizeof a.pw_hash);
    a.password_set_ms = a.created_ms = job->now_ms;
    if ((rc = jk_account_insert(c, &a)) || (rc = run_key(c, sql_code_del, job->phone_key)) ||
        (rc = jk_mpi_person_of(c, job->w.out.id, job->person)))
        return rc;
    job->outcome = REG_OK;
    return audit_reg(job, c, job->username, job->w.out.id, JK_OK, "resident");
}

static void reg_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    ((struct reg_job *)rq->state)->rc = rc;
    jk_http_wake(rq);
}

static jk_rc reg_finish(struct jk_http_req *rq)
{
    struct reg_job *job = rq->state;
    json_object_put(job->w.res);
    job->w.res = NULL;
    sodium_memzero(job->pw_hash, sizeof job->pw_hash);
    if (job->rc) return job->rc;
    char zh[128], en[128];
    switch (job->outcome) {
    case REG_OK: {
        struct json_object *o = json_object_new_object();
        char ref[JK_REF_MAX + 1];
        snprintf(ref, sizeof ref, "Patient/%s", job->w.out.id);
        json_object_object_add(o, "username", json_object_new_string(job->username));
        json_object_object_add(o, "patient", json_object_new_string(ref));
        json_object_object_add(o, "person", json_object_new_string(job->person));
        return send_obj(rq, 201, o);
    }
    case REG_NO_CODE:
        return refuse(rq, JK_EINVAL, "code", "registration.code_missing",
                      "该手机号没有待用的验证码，请先获取验证码",
                      "no code is waiting for this phone: ask for one first");
    case REG_CODE_EXPIRED:
        return refuse(rq, JK_EINVAL, "code", "registration.code_expired",
                      "验证码已过期，请重新获取", "the code has expired: ask for a new one");
    case REG_CODE_WRONG:
        snprintf(zh, sizeof zh, "验证码错误，还可尝试 %d 次", job->tries_left);
        snprintf(en, sizeof en, "the code is wrong; %d more tries", job->tries_left);
        return refuse(rq, JK_EINVAL, "code", "registration.code_wrong", zh, en);
    case REG_CODE_SPENT:
        return refuse(rq, JK_EINVAL, "code", "registration.code_attempts",
                      "验证码错误次数过多，请重新获取", "too many wrong codes: ask for a new one");
    case REG_USERNAME_TAKEN:
        return refuse(rq, JK_ECONFLICT, "username", "registration.username_taken", "用户名已被使用",
                      "the user name is taken");
    case REG_DUPLICATE:
        return refuse(rq, JK_ECONFLICT, "document.number", "registration.duplicate",
                      "该证件号码已注册", "a resident is registered with this document already");
    }
    return JK_EINTERNAL;
}

/* A person's name: 1 to NAME_MAX_CHARS characters, no control characters. */
static int name_ok(const char *s)
{
    size_t n_chars = 0;
    if (!s) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) return 0;
        n_chars += (*p & 0xc0) != 0x80;
    }
    while (*s == ' ')
        s++;
    return *s && n_chars <= NAME_MAX_CHARS;
}

static jk_rc refuse_name(struct jk_http_req *rq)
{
    return refuse(rq, JK_EINVAL, "name", "registration.name", "姓名应为 1 至 64 个字符",
                  "the name must be 1 to 64 characters");
}

/* sex "male" or "female" into 'M' or 'F'; 0 when absent; -1 when something else. */
static int sex_of(const char *s)
{
    return !s ? 0 : !strcmp(s, "male") ? 'M' : !strcmp(s, "female") ? 'F' : -1;
}

/* The person's facts from the document, the given sex and birth date checked against it (and
 * required when it holds none). Adds issues; returns their count. */
static int check_person(struct jk_http_req *rq, const struct jk_idnum *doc, int sex,
                        const char *birth, int64_t now_ms, char out_sex[2], char out_birth[11])
{
    struct jk_idnum_err e = {0};
    int n_bad = 0;
    if (sex < 0 || (!sex && !doc->sex)) {
        n_bad++;
        refuse(rq, JK_EINVAL, "sex", "registration.sex", "性别应为 male 或 female",
               "sex must be male or female");
    } else if (sex && doc->sex && sex != doc->sex) {
        n_bad++;
        jk_idnum_err_sex_mismatch(&e, (char)sex, doc->sex);
        refuse_idnum(rq, "sex", &e);
    }
    out_sex[0] = (char)(sex > 0 ? sex : doc->sex);
    out_sex[1] = '\0';
    if (birth && jk_idnum_birth_date(birth, now_ms, NULL, &e)) {
        n_bad++;
        refuse_idnum(rq, "birthDate", &e);
    } else if (!birth && !doc->birth[0]) {
        n_bad++;
        refuse(rq, JK_EINVAL, "birthDate", "registration.birth_date", "需要出生日期（YYYY-MM-DD）",
               "the birth date (YYYY-MM-DD) is needed");
    } else if (birth && doc->birth[0] && strcmp(birth, doc->birth)) {
        n_bad++;
        jk_idnum_err_birth_mismatch(&e, birth, doc->birth);
        refuse_idnum(rq, "birthDate", &e);
    }
    snprintf(out_birth, 11, "%s", birth ? birth : doc->birth);
    return n_bad;
}

/* The Patient of a registration (in the job's arena-owned JSON). */
static struct json_object *reg_patient(const char *name, const struct jk_idnum *doc,
                                       const char *system, const char *phone, char sex,
                                       const char *birth)
{
    struct json_object *p = json_object_new_object(), *id = json_object_new_object();
    struct json_object *ids = json_object_new_array(), *nm = json_object_new_object();
    struct json_object *names = json_object_new_array(), *tel = json_object_new_object();
    struct json_object *tels = json_object_new_array();
    json_object_object_add(p, "resourceType", json_object_new_string("Patient"));
    json_object_object_add(id, "use", json_object_new_string("official"));
    json_object_object_add(id, "system", json_object_new_string(system));
    json_object_object_add(id, "value", json_object_new_string(doc->number));
    if (doc->country[0]) {
        struct json_object *as = json_object_new_object();
        json_object_object_add(as, "display", json_object_new_string(doc->country));
        json_object_object_add(id, "assigner", as);
    }
    json_object_array_add(ids, id);
    json_object_object_add(p, "identifier", ids);
    json_object_object_add(p, "active", json_object_new_boolean(1));
    json_object_object_add(nm, "use", json_object_new_string("official"));
    json_object_object_add(nm, "text", json_object_new_string(name));
    json_object_array_add(names, nm);
    json_object_object_add(p, "name", names);
    json_object_object_add(tel, "system", json_object_new_string("phone"));
    json_object_object_add(tel, "value", json_object_new_string(phone));
    json_object_object_add(tel, "use", json_object_new_string("mobile"));
    json_object_array_add(tels, tel);
    json_object_object_add(p, "telecom", tels);
    json_object_object_add(p, "gender", json_object_new_string(sex == 'M' ? "male" : "female"));
    json_object_object_add(p, "birthDate", json_object_new_string(birth));
    return p;
}

/* The document of the body: its type, number and (passports) country checked. Adds issues;
 * returns their count. */
static int check_document(struct jk_http_req *rq, struct json_object *body, int64_t now_ms,
                          struct jk_idnum *doc, const char **system)
{
    struct json_object *d = NULL;
    struct jk_idnum_err e = {0};
    enum jk_idnum_type t;
    json_object_object_get_ex(body, "document", &d);
    if (!d || !json_object_is_type(d, json_type_object)) {
        refuse(rq, JK_EINVAL, "document", "registration.document",
               "需要证件：{\"type\", \"number\"}", "the document {\"type\", \"number\"} is needed");
        return 1;
    }
    if (!jk_idnum_type_by_name(jk_json_str(d, "type"), &t) ||
        !(*system = jk_protect_system_of(jk_idnum_type_name(t)))) {
        refuse(rq, JK_EINVAL, "document.type", "registration.document_type",
               "证件类型应为 citizen-id、hmt-residence-permit、foreigner-permanent-residence、"
               "passport、hk-macao-travel-permit 或 taiwan-travel-permit",
               "the document type must be citizen-id, hmt-residence-permit, "
               "foreigner-permanent-residence, passport, hk-macao-travel-permit or "
               "taiwan-travel-permit");
        return 1;
    }
    const char *country = jk_json_str(d, "country");
    if (t == JK_DOC_PASSPORT && !country) {
        refuse(rq, JK_EINVAL, "document.country", "registration.country",
               "护照需要签发国家（ISO 3166-1 三字母代码，如 CHN）",
               "a passport needs its issuing country (ISO 3166-1 alpha-3, such as CHN)");
        return 1;
    }
    jk_rc rc = jk_idnum_check(t, jk_json_str(d, "number"), country, now_ms, doc, &e);
    if (rc == JK_EINVAL)
        refuse_idnum(rq, !strcmp(e.code, "idnum.country") ? "document.country" : "document.number",
                     &e);
    else if (rc)
        jk_diag_add(&rq->diag, rc, NULL, "document.number", "the document cannot be checked");
    return rc ? 1 : 0;
}

jk_rc jk_api_register(struct jk_http_req *rq)
{
    const struct reg_rules *r = reg_rules();
    const struct jk_security_rules *sec = jk_api_security_rules();
    struct json_object *body;
    if (!r || !sec) return JK_EINTERNAL;
    jk_rc rc = parse_body(rq, &body);
    if (rc) return rc;
    struct reg_job *job = jk_arena_zalloc(rq->arena, sizeof *job);
    if (!job) {
        json_object_put(body);
        return JK_ENOMEM;
    }
    int wait =
        jk_api_rate_take(rq, "register/address", jk_http_client_addr(rq), &r->rate_register_addr);
    if (wait) {
        json_object_put(body);
        return throttled(rq, wait);
    }
    job->now_ms = jk_time_now_ms();
    /* Every field checked, every problem reported at once. */
    struct jk_idnum doc;
    const char *system = NULL, *name = jk_json_str(body, "name");
    const char *code = jk_json_str(body, "code"), *password = jk_json_str(body, "password");
    char phone[12], sex[2] = "", birth[11] = "", msg[256];
    int n_bad = 0;
    if (!name_ok(name)) n_bad += refuse_name(rq) != JK_OK;
    int is_doc = !check_document(rq, body, job->now_ms, &doc, &system);
    if (!is_doc) n_bad++;
    if (is_doc)
        n_bad += check_person(rq, &doc, sex_of(jk_json_str(body, "sex")),
                              jk_json_str(body, "birthDate"), job->now_ms, sex, birth);
    if (!phone_norm(jk_json_str(body, "phone"), phone)) n_bad += refuse_phone(rq) != JK_OK;
    size_t code_len = code ? strlen(code) : 0;
    int is_code = code_len == (size_t)r->code_length;
    for (size_t i = 0; is_code && i < code_len; i++)
        is_code = isdigit((unsigned char)code[i]);
    if (!is_code) {
        char zh[96], en[96];
        snprintf(zh, sizeof zh, "验证码应为 %d 位数字", r->code_length);
        snprintf(en, sizeof en, "the code is %d digits", r->code_length);
        n_bad += refuse(rq, JK_EINVAL, "code", "registration.code", zh, en) != JK_OK;
    }
    if (jk_account_norm_username(jk_json_str(body, "username"), job->username,
                                 sizeof job->username))
        n_bad += refuse(rq, JK_EINVAL, "username", "registration.username",
                        "用户名应为 1 至 64 个字母、数字或 . _ - @，以字母或数字开头",
                        "the user name is 1 to 64 of a-z 0-9 . _ - @, starting with a letter or "
                        "digit") != JK_OK;
    else if (!password || jk_password_check(sec, job->username, password, msg, sizeof msg))
        n_bad +=
            jk_diag_add(&rq->diag, JK_EINVAL, "value", "password", "%s",
                        password ? msg : "registration.password: the password is needed") != JK_OK;
    if (n_bad) {
        json_object_put(body);
        return JK_EINVAL;
    }
    /* Argon2id runs here, on this worker thread, with no lock held. */
    if ((rc = keyed_hex("phone", phone, job->phone_key)) ||
        (rc = keyed_hex(job->phone_key, code, job->code_hash)) ||
        (rc = jk_password_hash(sec, password, job->pw_hash, sizeof job->pw_hash))) {
        json_object_put(body);
        return rc;
    }
    job->ident_query = jk_arena_printf(rq->arena, "%s|%s", system, doc.number);
    job->w.res = reg_patient(name, &doc, system, phone, sex[0], birth);
    json_object_put(body);
    if (!job->ident_query || !job->w.res) return JK_ENOMEM;
    job->r = r;
    job->au = jk_api_app(rq)->audit;
    job->addr = jk_http_client_addr(rq);
    job->request_id = rq->request_id;
    job->w.kind = JK_FHIR_CREATE;
    job->w.type = "Patient";
    job->w.arena = rq->arena;
    job->w.diag = &rq->diag;
    job->w.now_ms = job->now_ms;
    if ((rc = jk_fhir_write_prepare(&job->w))) { /* sealed and indexed like any Patient */
        json_object_put(job->w.res);
        return rc;
    }
    rq->state = job;
    jk_http_defer(rq, reg_finish);
    jk_store_tx_async(jk_api_app(rq)->db, reg_tx, job, reg_done, rq);
    return JK_OK;
}

/* ---- POST /api/residents/newborns ---- */

struct newborn_job {
    struct jk_fhir_write w[3]; /* the child, the RelatedPerson, the guardian's Patient */
    struct jk_api_guard *g;
    const struct jk_audit *au;
    const char *child, *guardian;
    char person[JK_MPI_ID_MAX]; /* the child's golden person */
    jk_rc rc;
};

static jk_rc newborn_tx(jk_conn *c, void *arg)
{
    struct newborn_job *job = arg;
    jk_rc rc = JK_OK;
    for (int i = 0; i < 3 && !rc; i++)
        rc = jk_fhir_write_tx(c, &job->w[i]);
    if (!rc) rc = jk_mpi_person_of(c, job->child, job->person);
    if (rc || !job->au) return rc;
    /* the record of the access, in the same transaction: one per patient */
    struct jk_audit_rec r = job->g->recs[0];
    r.action = "register";
    r.res_type = "Patient";
    r.res_id = job->child;
    r.patient_id = job->child;
    r.outcome = JK_OK;
    r.reason = "newborn";
    if ((rc = jk_audit_append(job->au, c, &r, NULL))) return rc;
    r.res_id = r.patient_id = job->guardian;
    r.reason = "newborn-guardian";
    rc = jk_audit_append(job->au, c, &r, NULL);
    if (!rc) job->g->is_recorded = 1;
    return rc;
}

static void newborn_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    struct newborn_job *job = rq->state;
    job->rc = rc;
    if (rc) job->g->is_recorded = 0; /* rolled back: on_ready records the failure */
    jk_http_wake(rq);
}

static jk_rc newborn_finish(struct jk_http_req *rq)
{
    struct newborn_job *job = rq->state;
    for (int i = 0; i < 3; i++) {
        json_object_put(job->w[i].res);
        job->w[i].res = NULL;
    }
    if (job->rc) return job->rc;
    job->g->is_written = 1; /* the guardian's wards changed: cached views are made again */
    struct json_object *o = json_object_new_object();
    json_object_object_add(
        o, "patient", json_object_new_string(jk_arena_printf(rq->arena, "Patient/%s", job->child)));
    json_object_object_add(
        o, "relatedPerson",
        json_object_new_string(jk_arena_printf(rq->arena, "RelatedPerson/%s", job->w[1].out.id)));
    json_object_object_add(o, "person", json_object_new_string(job->person));
    return send_obj(rq, 201, o);
}

/* The guardian's Patient, its numbers opened, with a link to the RelatedPerson rp. */
static jk_rc guardian_linked(struct jk_http_req *rq, const char *guardian, const char *rp,
                             struct json_object **out, int64_t *version)
{
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct jk_res cur;
    if (!c) return JK_EDB;
    jk_rc rc = jk_res_read(c, rq->arena, "Patient", guardian, &cur);
    if (rc == JK_ENOTFOUND || rc == JK_EGONE)
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                           "the account's Patient/%s does not exist", guardian);
    if (rc) return rc;
    struct json_object *p = json_tokener_parse(cur.body), *links, *l = json_object_new_object();
    struct json_object *ref = json_object_new_object();
    if (!p || (rc = jk_protect_unseal(p, &rq->diag))) {
        json_object_put(p);
        json_object_put(l);
        json_object_put(ref);
        return rc ? rc : JK_EINTERNAL;
    }
    json_object_object_add(
        ref, "reference",
        json_object_new_string(jk_arena_printf(rq->arena, "RelatedPerson/%s", rp)));
    json_object_object_add(l, "other", ref);
    json_object_object_add(l, "type", json_object_new_string("seealso"));
    if (!json_object_object_get_ex(p, "link", &links) ||
        !json_object_is_type(links, json_type_array)) {
        links = json_object_new_array();
        json_object_object_add(p, "link", links);
    }
    json_object_array_add(links, l);
    *out = p;
    *version = cur.version;
    return JK_OK;
}

static struct json_object *newborn_patient(const char *name, const char *sex, const char *birth)
{
    struct json_object *p = json_object_new_object(), *names = json_object_new_array();
    struct json_object *nm = json_object_new_object();
    json_object_object_add(p, "resourceType", json_object_new_string("Patient"));
    json_object_object_add(p, "active", json_object_new_boolean(1));
    json_object_object_add(nm, "use", json_object_new_string("official"));
    json_object_object_add(nm, "text", json_object_new_string(name));
    json_object_array_add(names, nm);
    json_object_object_add(p, "name", names);
    json_object_object_add(p, "gender", json_object_new_string(sex));
    json_object_object_add(p, "birthDate", json_object_new_string(birth));
    return p;
}

/* The RelatedPerson that makes the guardian (whose name it carries) the child's guardian. */
static struct json_object *guardian_rp(struct jk_arena *a, const char *child,
                                       struct json_object *guardian)
{
    struct json_object *rp = json_object_new_object(), *ref = json_object_new_object();
    struct json_object *rels = json_object_new_array(), *rel = json_object_new_object();
    struct json_object *codings = json_object_new_array(), *cd = json_object_new_object();
    struct json_object *names = NULL;
    json_object_object_add(rp, "resourceType", json_object_new_string("RelatedPerson"));
    json_object_object_add(rp, "active", json_object_new_boolean(1));
    json_object_object_add(ref, "reference",
                           json_object_new_string(jk_arena_printf(a, "Patient/%s", child)));
    json_object_object_add(rp, "patient", ref);
    json_object_object_add(cd, "system", json_object_new_string(ROLE_CODES));
    json_object_object_add(cd, "code", json_object_new_string(GUARDIAN_CODE));
    json_object_object_add(cd, "display", json_object_new_string("guardian"));
    json_object_array_add(codings, cd);
    json_object_object_add(rel, "coding", codings);
    json_object_array_add(rels, rel);
    json_object_object_add(rp, "relationship", rels);
    if (json_object_object_get_ex(guardian, "name", &names))
        json_object_object_add(rp, "name", json_object_get(names));
    return rp;
}

jk_rc jk_api_register_newborn(struct jk_http_req *rq)
{
    const struct reg_rules *r = reg_rules();
    struct jk_api_guard *g;
    struct json_object *body;
    jk_rc rc;
    if (!r) return JK_EINTERNAL;
    if ((rc = jk_api_guard(rq, "register", &g))) return rc;
    if (g->is_off || g->p.role != JK_ROLE_RESIDENT || strncmp(g->p.link, "Patient/", 8))
        return refuse(rq, JK_EFORBIDDEN, NULL, "registration.newborn_resident",
                      "只有关联本人档案的居民账户可以登记新生儿",
                      "only a resident account linked to its own Patient registers a newborn");
    if ((rc = parse_body(rq, &body))) return rc;
    const char *name = jk_json_str(body, "name"), *sex = jk_json_str(body, "sex");
    const char *birth = jk_json_str(body, "birthDate");
    struct jk_idnum_err e = {0};
    long age = 0;
    int n_bad = 0;
    int64_t now = jk_time_now_ms();
    if (!name_ok(name)) n_bad += refuse_name(rq) != JK_OK;
    if (sex_of(sex) <= 0)
        n_bad += refuse(rq, JK_EINVAL, "sex", "registration.sex", "性别应为 male 或 female",
                        "sex must be male or female") != JK_OK;
    if (jk_idnum_birth_date(birth, now, &age, &e)) {
        n_bad += refuse_idnum(rq, "birthDate", &e) != JK_OK;
    } else if (age > r->newborn_max_days) {
        char zh[160], en[160];
        snprintf(zh, sizeof zh, "出生超过 %d 天的儿童请用其公民身份号码注册", r->newborn_max_days);
        snprintf(en, sizeof en,
                 "a child more than %d days old is registered with its citizen ID number",
                 r->newborn_max_days);
        n_bad += refuse(rq, JK_EINVAL, "birthDate", "registration.newborn.max_age_days", zh, en) !=
                 JK_OK;
    }
    struct newborn_job *job = n_bad ? NULL : jk_arena_zalloc(rq->arena, sizeof *job);
    if (!n_bad && job) {
        job->g = g;
        job->au = jk_api_app(rq)->audit;
        job->guardian = g->p.link + 8;
        job->child = jk_fhir_new_id(rq->arena);
        const char *rp_id = jk_fhir_new_id(rq->arena);
        int64_t version = 0;
        struct json_object *guardian = NULL;
        if (!job->child || !rp_id) {
            rc = JK_EINTERNAL;
        } else if (!(rc = guardian_linked(rq, job->guardian, rp_id, &guardian, &version))) {
            job->w[0].res = newborn_patient(name, sex, birth);
            job->w[1].res = guardian_rp(rq->arena, job->child, guardian);
            job->w[2].res = guardian;
        }
        const char *types[3] = {"Patient", "RelatedPerson", "Patient"};
        const char *ids[3] = {job->child, rp_id, job->guardian};
        for (int i = 0; i < 3 && !rc; i++) {
            struct jk_fhir_write *w = &job->w[i];
            w->kind = i < 2 ? JK_FHIR_CREATE : JK_FHIR_UPDATE;
            w->type = types[i];
            w->id = ids[i];
            w->if_match = i == 2 ? version : 0; /* the guardian's record as it was read */
            w->arena = rq->arena;
            w->diag = &rq->diag;
            w->now_ms = now;
            rc = jk_fhir_write_prepare(w);
        }
    }
    json_object_put(body);
    if (n_bad || !job || rc) {
        for (int i = 0; job && i < 3; i++)
            json_object_put(job->w[i].res);
        return n_bad ? JK_EINVAL : job ? rc : JK_ENOMEM;
    }
    g->recs[0].res_type = "Patient";
    g->recs[0].res_id = job->child;
    g->recs[0].patient_id = job->child;
    g->recs[0].reason = "newborn";
    rq->state = job;
    jk_http_defer(rq, newborn_finish);
    jk_store_tx_async(jk_api_app(rq)->db, newborn_tx, job, newborn_done, rq);
    return JK_OK;
}
