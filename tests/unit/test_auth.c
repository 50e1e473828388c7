/* test_auth.c - who may log in: the rules file, password policy and hashing, lockout and
 * unlock, tokens (issue, resolve, expiry, revocation) at injected times, TOTP against the RFC
 * 6238 vectors, scopes, and the demo accounts; the database parts on SQLite and (with
 * JK_TEST_PG_URL) on PostgreSQL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <json-c/json.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/account.h"
#include "auth/token.h"
#include "auth/totp.h"
#include "core/log.h"
#include "store/store.h"

#define RULES_FILE "rules/security.json"
#define T0         1767225600000LL /* 2026-01-01T00:00:00Z */
#define MINUTE     60000LL
#define DAY        86400000LL

/* The shipped rules, with the cheapest hash so that tests run fast. */
static struct jk_security_rules rules;

static int load_rules(void)
{
    char err[JK_RULES_ERR];
    if (jk_security_rules_load(RULES_FILE, &rules, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    rules.pwhash_opslimit = crypto_pwhash_OPSLIMIT_MIN;
    rules.pwhash_memlimit = crypto_pwhash_MEMLIMIT_MIN;
    rules.lockout_threshold = 3;
    rules.lockout_minutes = 15;
    return 0;
}

/* ---- the rules file ---- */

static void shipped_rules_load(void **state)
{
    (void)state;
    struct jk_security_rules r;
    char err[JK_RULES_ERR] = "";
    assert_int_equal(jk_security_rules_load(RULES_FILE, &r, err, sizeof err), JK_OK);
    assert_string_equal(r.path, RULES_FILE);
    assert_true(r.password_min_length >= 8);
    assert_true(r.lockout_threshold > 0 && r.lockout_minutes > 0);
    assert_true(r.token_lifetime_minutes > 0);
    assert_true(r.rate_login_addr.limit > 0 && r.rate_login_addr.window_s > 0);
    /* Administrators and regulators need a second factor; residents and systems do not. */
    assert_true(jk_security_needs_totp(&r, JK_ROLE_PLATFORM_ADMIN));
    assert_true(jk_security_needs_totp(&r, JK_ROLE_REGULATOR));
    assert_true(jk_security_needs_totp(&r, JK_ROLE_INSTITUTION_ADMIN));
    assert_false(jk_security_needs_totp(&r, JK_ROLE_RESIDENT));
    assert_false(jk_security_needs_totp(&r, JK_ROLE_SYSTEM));
}

/* Writes the shipped rules with one change made by edit to a temporary file and loads it;
 * returns the rc and leaves the message in err. */
static jk_rc load_edited(void (*edit)(struct json_object *rules_obj), char *err, size_t errlen,
                         char *path, size_t pathlen)
{
    struct json_object *root = json_object_from_file(RULES_FILE), *r;
    assert_non_null(root);
    assert_true(json_object_object_get_ex(root, "rules", &r));
    edit(r);
    snprintf(path, pathlen, "/tmp/jk-test-rules.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(json_object_to_file(path, root), 0);
    json_object_put(root);
    struct jk_security_rules out;
    jk_rc rc = jk_security_rules_load(path, &out, err, errlen);
    unlink(path);
    return rc;
}

static struct json_object *rule_of(struct json_object *r, const char *code)
{
    struct json_object *o;
    assert_true(json_object_object_get_ex(r, code, &o));
    return o;
}

static void edit_short_min(struct json_object *r)
{
    json_object_object_add(rule_of(r, "password.min_length"), "value", json_object_new_int(4));
}

static void edit_missing_rule(struct json_object *r)
{
    json_object_object_del(r, "token.lifetime_minutes");
}

static void edit_unknown_rule(struct json_object *r)
{
    json_object_object_add(r, "password.max_length",
                           json_object_get(rule_of(r, "password.min_length")));
}

static void edit_no_source(struct json_object *r)
{
    json_object_object_del(rule_of(r, "login.lockout_minutes"), "source");
}

static void edit_bad_date(struct json_object *r)
{
    json_object_object_add(rule_of(r, "login.lockout_threshold"), "effective",
                           json_object_new_string("2025-13-01"));
}

static void edit_bad_role(struct json_object *r)
{
    struct json_object *v = json_object_new_array();
    json_object_array_add(v, json_object_new_string("regulator"));
    json_object_array_add(v, json_object_new_string("emperor"));
    json_object_object_add(rule_of(r, "login.second_factor_roles"), "value", v);
}

static void edit_bad_rate(struct json_object *r)
{
    struct json_object *v = json_object_new_object();
    json_object_object_add(v, "limit", json_object_new_int(5));
    json_object_object_add(v, "window_seconds", json_object_new_string("60"));
    json_object_object_add(rule_of(r, "rate.login.per_account"), "value", v);
}

static void edit_bad_class(struct json_object *r)
{
    struct json_object *v = json_object_new_array();
    json_object_array_add(v, json_object_new_string("emoji"));
    json_object_object_add(rule_of(r, "password.required_classes"), "value", v);
}

static void expect_rules_error(void (*edit)(struct json_object *), const char *pointer,
                               const char *what)
{
    char err[JK_RULES_ERR] = "", path[64];
    assert_int_equal(load_edited(edit, err, sizeof err, path, sizeof path), JK_EINVAL);
    /* The message names the file, the place inside it, and what is wrong. */
    if (strncmp(err, path, strlen(path)) || !strstr(err, pointer) || !strstr(err, what)) {
        fprintf(stderr, "unexpected message: %s (wanted %s ... %s)\n", err, pointer, what);
        fail();
    }
}

static void rules_errors_name_file_and_path(void **state)
{
    (void)state;
    expect_rules_error(edit_short_min,
                       ": /rules/password.min_length/value:", "from 8 to 128, not 4");
    expect_rules_error(edit_missing_rule, ": /rules/token.lifetime_minutes:", "missing");
    expect_rules_error(edit_unknown_rule, ": /rules/password.max_length:", "unknown rule");
    expect_rules_error(edit_no_source, ": /rules/login.lockout_minutes/source:", "where the rule");
    expect_rules_error(edit_bad_date, ": /rules/login.lockout_threshold/effective:", "YYYY-MM-DD");
    expect_rules_error(edit_bad_role,
                       ": /rules/login.second_factor_roles/value/1:", "'emperor' is not a role");
    expect_rules_error(edit_bad_rate,
                       ": /rules/rate.login.per_account/value/window_seconds:", "whole number");
    expect_rules_error(edit_bad_class,
                       ": /rules/password.required_classes/value/0:", "not a character class");
}

static void rules_file_not_json(void **state)
{
    (void)state;
    char path[64] = "/tmp/jk-test-rules.XXXXXX", err[JK_RULES_ERR];
    struct jk_security_rules out;
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\n  \"ruleSet\": \"security\",\n  \"rules\": {,}\n}\n", 44), 44);
    close(fd);
    assert_int_equal(jk_security_rules_load(path, &out, err, sizeof err), JK_EINVAL);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "line 3"));
    unlink(path);
    assert_int_equal(jk_security_rules_load("/nonexistent/security.json", &out, err, sizeof err),
                     JK_ENOTFOUND);
    assert_non_null(strstr(err, "/nonexistent/security.json: cannot read"));
}

/* ---- passwords ---- */

static void expect_refused(const char *user, const char *pw, const char *code)
{
    char msg[300] = "";
    assert_int_equal(jk_password_check(&rules, user, pw, msg, sizeof msg), JK_ERULE);
    if (strncmp(msg, code, strlen(code))) {
        fprintf(stderr, "'%s': message '%s' does not start with %s\n", pw, msg, code);
        fail();
    }
}

static void policy_refuses_weak_passwords_naming_the_rule(void **state)
{
    (void)state;
    char msg[300];
    expect_refused("alice", "Short-1", "security.password.min_length");
    expect_refused("alice", "alllowercase-123", "security.password.required_classes");
    expect_refused("alice", "NoDigitsAtAll-x", "security.password.required_classes");
    expect_refused("alice", "ALLUPPER-12345", "security.password.required_classes");
    expect_refused("alice", "My-alice-Password-1", "security.password.not_username");
    expect_refused("alice", "Tab\there-Password-1", "security.password.characters");
    /* Characters, not bytes: these eleven characters are 27 bytes. */
    expect_refused("alice", "密码密码密码密码A1a", "security.password.min_length");
    assert_int_equal(jk_password_check(&rules, "alice", "Correct-Horse-9", msg, sizeof msg), JK_OK);
    assert_int_equal(jk_password_check(&rules, NULL, "健康平台-Password-2025", msg, sizeof msg),
                     JK_OK);
}

static void passwords_hash_and_verify(void **state)
{
    (void)state;
    char h1[JK_PWHASH_MAX], h2[JK_PWHASH_MAX];
    assert_int_equal(jk_password_hash(&rules, "Correct-Horse-9", h1, sizeof h1), JK_OK);
    assert_int_equal(jk_password_hash(&rules, "Correct-Horse-9", h2, sizeof h2), JK_OK);
    assert_int_equal(strncmp(h1, "$argon2id$", 10), 0);
    assert_null(strstr(h1, "Correct-Horse-9"));
    assert_string_not_equal(h1, h2); /* salted */
    assert_true(jk_password_verify(h1, "Correct-Horse-9"));
    assert_false(jk_password_verify(h1, "correct-Horse-9"));
    assert_false(jk_password_verify(h1, ""));
    assert_false(jk_password_verify("", "Correct-Horse-9"));
    assert_false(jk_password_verify("plain text", "plain text"));
    /* A hash made at another cost is remade at the next login. */
    struct jk_security_rules dearer = rules;
    dearer.pwhash_opslimit = rules.pwhash_opslimit + 1;
    assert_false(jk_password_needs_rehash(&rules, h1));
    assert_true(jk_password_needs_rehash(&dearer, h1));
}

static void generated_passwords_meet_the_policy(void **state)
{
    (void)state;
    char pw[64], prev[64] = "", msg[300];
    for (int i = 0; i < 50; i++) {
        assert_int_equal(jk_password_generate(&rules, "bob", pw, sizeof pw), JK_OK);
        assert_int_equal(jk_password_check(&rules, "bob", pw, msg, sizeof msg), JK_OK);
        assert_true(strlen(pw) >= 20);
        assert_string_not_equal(pw, prev);
        memcpy(prev, pw, sizeof pw);
    }
}

static void user_names_are_normalised(void **state)
{
    (void)state;
    char out[JK_USERNAME_MAX + 1];
    assert_int_equal(jk_account_norm_username("Dr.Li@Hosp-1", out, sizeof out), JK_OK);
    assert_string_equal(out, "dr.li@hosp-1");
    assert_int_equal(jk_account_norm_username("", out, sizeof out), JK_EINVAL);
    assert_int_equal(jk_account_norm_username("-lead", out, sizeof out), JK_EINVAL);
    assert_int_equal(jk_account_norm_username("a b", out, sizeof out), JK_EINVAL);
    assert_int_equal(jk_account_norm_username("李", out, sizeof out), JK_EINVAL);
    char longname[80];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(jk_account_norm_username(longname, out, sizeof out), JK_EINVAL);
}

static void accounts_are_checked(void **state)
{
    (void)state;
    char msg[300];
    struct jk_account a;
    memset(&a, 0, sizeof a);
    snprintf(a.username, sizeof a.username, "li");
    a.role = JK_ROLE_DOCTOR;
    assert_int_equal(jk_account_check(&a, msg, sizeof msg), JK_EINVAL); /* no organization */
    snprintf(a.org, sizeof a.org, "Organization/hosp-fz-1");
    assert_int_equal(jk_account_check(&a, msg, sizeof msg), JK_OK);
    snprintf(a.link, sizeof a.link, "Patient/pat-1"); /* a doctor is not a patient */
    assert_int_equal(jk_account_check(&a, msg, sizeof msg), JK_EINVAL);
    snprintf(a.link, sizeof a.link, "PractitionerRole/prac-1-role");
    assert_int_equal(jk_account_check(&a, msg, sizeof msg), JK_OK);
    snprintf(a.org, sizeof a.org, "Patient/pat-1");
    assert_int_equal(jk_account_check(&a, msg, sizeof msg), JK_EINVAL);
    a.role = JK_ROLE_RESIDENT;
    a.org[0] = '\0';
    snprintf(a.link, sizeof a.link, "Patient/pat-1");
    assert_int_equal(jk_account_check(&a, msg, sizeof msg), JK_OK);
    snprintf(a.link, sizeof a.link, "Patient/bad id");
    assert_int_equal(jk_account_check(&a, msg, sizeof msg), JK_EINVAL);
    for (int i = 0; i < JK_N_ROLES; i++) {
        const struct jk_role_info *ri = jk_role_info((enum jk_role)i);
        assert_ptr_equal(jk_role_by_name(ri->name), ri);
    }
    assert_null(jk_role_by_name("emperor"));
}

/* ---- TOTP ---- */

static const char rfc_secret_b32[] = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; /* "1234567890" x2 */

static void totp_rfc6238_vectors(void **state)
{
    (void)state;
    static const struct {
        int64_t t;
        uint32_t code;
    } v[] = {{59, 94287082},         {1111111109, 7081804},  {1111111111, 14050471},
             {1234567890, 89005924}, {2000000000, 69279037}, {20000000000LL, 65353130}};
    uint8_t key[JK_TOTP_MAX_KEY];
    size_t n = 0;
    assert_int_equal(jk_base32_decode(rfc_secret_b32, key, sizeof key, &n), JK_OK);
    assert_int_equal(n, 20);
    assert_memory_equal(key, "12345678901234567890", 20);
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint32_t code = 0;
        int64_t step = jk_totp_step(v[i].t * 1000);
        assert_int_equal(step, v[i].t / 30);
        assert_int_equal(jk_hotp(key, n, (uint64_t)step, 8, &code), JK_OK);
        assert_int_equal(code, v[i].code);
        /* Six digits are the last six of the eight. */
        char six[8], want[8];
        assert_int_equal(jk_totp_code(rfc_secret_b32, v[i].t * 1000, six, sizeof six), JK_OK);
        snprintf(want, sizeof want, "%06u", (unsigned)(v[i].code % 1000000));
        assert_string_equal(six, want);
        int64_t matched = 0;
        assert_int_equal(jk_totp_verify(rfc_secret_b32, six, v[i].t * 1000, 1, 0, &matched), JK_OK);
        assert_int_equal(matched, step);
    }
}

static void totp_window_and_replay(void **state)
{
    (void)state;
    char code[8];
    int64_t t = 1111111111LL * 1000, step = jk_totp_step(t), got = 0;
    assert_int_equal(jk_totp_code(rfc_secret_b32, t, code, sizeof code), JK_OK);
    assert_string_equal(code, "050471");
    /* One step of drift either way is accepted, two are not. */
    assert_int_equal(jk_totp_verify(rfc_secret_b32, code, t + 30000, 1, 0, &got), JK_OK);
    assert_int_equal(got, step);
    assert_int_equal(jk_totp_verify(rfc_secret_b32, code, t - 30000, 1, 0, &got), JK_OK);
    assert_int_equal(jk_totp_verify(rfc_secret_b32, code, t + 60000, 1, 0, &got), JK_EUNAUTH);
    assert_int_equal(jk_totp_verify(rfc_secret_b32, code, t - 60000, 1, 0, &got), JK_EUNAUTH);
    /* A code whose step was used already is refused. */
    assert_int_equal(jk_totp_verify(rfc_secret_b32, code, t, 1, step, &got), JK_EUNAUTH);
    assert_int_equal(jk_totp_verify(rfc_secret_b32, code, t, 1, step - 1, &got), JK_OK);
    /* Malformed codes. */
    assert_int_equal(jk_totp_verify(rfc_secret_b32, "05047", t, 1, 0, &got), JK_EUNAUTH);
    assert_int_equal(jk_totp_verify(rfc_secret_b32, "0504711", t, 1, 0, &got), JK_EUNAUTH);
    assert_int_equal(jk_totp_verify(rfc_secret_b32, "05047a", t, 1, 0, &got), JK_EUNAUTH);
    assert_int_equal(jk_totp_verify(rfc_secret_b32, "", t, 1, 0, &got), JK_EUNAUTH);
    assert_int_equal(jk_totp_verify(rfc_secret_b32, NULL, t, 1, 0, &got), JK_EUNAUTH);
    assert_int_equal(jk_totp_verify("not base32!", code, t, 1, 0, &got), JK_EINVAL);
}

static void base32_rfc4648_vectors(void **state)
{
    (void)state;
    static const char *const v[][2] = {{"", ""},
                                       {"f", "MY"},
                                       {"fo", "MZXQ"},
                                       {"foo", "MZXW6"},
                                       {"foob", "MZXW6YQ"},
                                       {"fooba", "MZXW6YTB"},
                                       {"foobar", "MZXW6YTBOI"}};
    char text[32];
    uint8_t bin[16];
    size_t n;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        assert_int_equal(
            jk_base32_encode((const uint8_t *)v[i][0], strlen(v[i][0]), text, sizeof text), JK_OK);
        assert_string_equal(text, v[i][1]);
        assert_int_equal(jk_base32_decode(v[i][1], bin, sizeof bin, &n), JK_OK);
        assert_int_equal(n, strlen(v[i][0]));
        assert_memory_equal(bin, v[i][0], n);
    }
    assert_int_equal(jk_base32_decode("mzxw 6ytb-oi======", bin, sizeof bin, &n), JK_OK);
    assert_int_equal(n, 6);
    assert_int_equal(jk_base32_decode("MZXW1", bin, sizeof bin, &n), JK_EINVAL);
    assert_int_equal(jk_base32_decode("MZ", bin, sizeof bin, &n), JK_EINVAL); /* stray bits */
    assert_int_equal(jk_base32_decode("MY=A", bin, sizeof bin, &n), JK_EINVAL);
    assert_int_equal(jk_base32_decode("MZXW6YTBOI", bin, 3, &n), JK_ETOOBIG);
    assert_int_equal(jk_base32_encode((const uint8_t *)"foobar", 6, text, 10), JK_ETOOBIG);
}

static void totp_secrets_and_uri(void **state)
{
    (void)state;
    char s1[40], s2[40], uri[300];
    uint8_t key[JK_TOTP_MAX_KEY];
    size_t n = 0;
    assert_int_equal(jk_totp_new_secret(s1, sizeof s1), JK_OK);
    assert_int_equal(jk_totp_new_secret(s2, sizeof s2), JK_OK);
    assert_int_equal(strlen(s1), 32);
    assert_string_not_equal(s1, s2);
    assert_int_equal(jk_base32_decode(s1, key, sizeof key, &n), JK_OK);
    assert_int_equal(n, JK_TOTP_KEY_BYTES);
    assert_int_equal(jk_totp_uri("JBSWY3DPEHPK3PXP", "Jiankang", "li wei@hosp", uri, sizeof uri),
                     JK_OK);
    assert_string_equal(uri, "otpauth://totp/Jiankang:li%20wei%40hosp?secret=JBSWY3DPEHPK3PXP"
                             "&issuer=Jiankang&algorithm=SHA1&digits=6&period=30");
    assert_int_equal(jk_totp_uri("JBSWY3DPEHPK3PXP", "Jiankang", "x", uri, 20), JK_ETOOBIG);
}

/* ---- scopes ---- */

static void scopes_are_narrowed_never_widened(void **state)
{
    (void)state;
    char out[JK_SCOPES_MAX + 1];
    assert_true(jk_scope_covers("user/*.cruds", "user/Observation.rs"));
    assert_true(jk_scope_covers("user/*.cruds", "user/Patient.r user/Observation.cu"));
    assert_false(jk_scope_covers("user/*.rs", "user/Observation.c"));
    assert_false(jk_scope_covers("patient/*.rs", "user/Patient.r"));
    assert_false(jk_scope_covers("user/Observation.rs", "user/*.r"));
    assert_false(jk_scope_covers("user/*.cruds", "user/Observation.sr")); /* order matters */
    assert_false(jk_scope_covers("user/*.cruds", "user/observation.r"));
    assert_false(jk_scope_covers("user/*.cruds", "openid"));
    assert_int_equal(jk_scope_grant("user/*.cruds", NULL, out, sizeof out), JK_OK);
    assert_string_equal(out, "user/*.cruds");
    assert_int_equal(jk_scope_grant("user/*.cruds", "  ", out, sizeof out), JK_OK);
    assert_string_equal(out, "user/*.cruds");
    assert_int_equal(
        jk_scope_grant("user/*.cruds", " user/Patient.rs  user/Encounter.r ", out, sizeof out),
        JK_OK);
    assert_string_equal(out, "user/Patient.rs user/Encounter.r");
    assert_int_equal(jk_scope_grant("patient/*.rs", "patient/*.cruds", out, sizeof out), JK_EINVAL);
    assert_int_equal(jk_scope_grant("user/*.cruds", NULL, out, 5), JK_ETOOBIG);
}

/* ---- the database parts ---- */

struct fixture {
    char url[512];
    char dir[64];
    jk_store *st;
};

#define PG_TEST_SCHEMA "jk_test_auth"

static jk_rc pg_schema_tx(jk_conn *c, void *arg)
{
    jk_rc rc = jk_conn_exec(c, "DROP SCHEMA IF EXISTS " PG_TEST_SCHEMA " CASCADE");
    if (!rc && arg) rc = jk_conn_exec(c, "CREATE SCHEMA " PG_TEST_SCHEMA);
    return rc;
}

static int fixture_open(struct fixture *f, int is_pg)
{
    char err[256] = "";
    if (jk_store_open(f->url, &f->st, err, sizeof err)) {
        fprintf(stderr, "cannot open the store: %s\n", err);
        return -1;
    }
    if (is_pg && jk_store_tx(f->st, pg_schema_tx, f)) return -1;
    return jk_store_migrate(f->st, NULL) ? -1 : 0;
}

static int sqlite_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/jk-test-auth.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->url, sizeof f->url, "sqlite:%s/auth.db", f->dir);
    *state = f;
    return fixture_open(f, 0);
}

static int sqlite_teardown(void **state)
{
    struct fixture *f = *state;
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    jk_store_close(f->st);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/auth.db%s", f->dir, suffixes[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static int pg_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    const char *url = getenv("JK_TEST_PG_URL");
    snprintf(f->url, sizeof f->url, "%s%soptions=-csearch_path%%3D" PG_TEST_SCHEMA, url,
             strchr(url, '?') ? "&" : "?");
    *state = f;
    return fixture_open(f, 1);
}

static int pg_teardown(void **state)
{
    struct fixture *f = *state;
    if (f->st) jk_store_tx(f->st, pg_schema_tx, NULL);
    jk_store_close(f->st);
    free(f);
    return 0;
}

static jk_rc insert_tx(jk_conn *c, void *arg)
{
    return jk_account_insert(c, arg);
}

/* Creates an account named name (unique per test) with password pw. */
static int64_t make_account(jk_store *st, const char *name, enum jk_role role, const char *pw,
                            const char *totp_secret, struct jk_account *out)
{
    struct jk_account a;
    memset(&a, 0, sizeof a);
    snprintf(a.username, sizeof a.username, "%s", name);
    a.role = role;
    if (jk_role_info(role)->is_org_required)
        snprintf(a.org, sizeof a.org, "Organization/hosp-fz-1");
    if (role == JK_ROLE_RESIDENT) snprintf(a.link, sizeof a.link, "Patient/pat-1");
    snprintf(a.totp_secret, sizeof a.totp_secret, "%s", totp_secret ? totp_secret : "");
    a.password_set_ms = a.created_ms = T0;
    assert_int_equal(jk_password_hash(&rules, pw, a.pw_hash, sizeof a.pw_hash), JK_OK);
    assert_int_equal(jk_store_tx(st, insert_tx, &a), JK_OK);
    assert_true(a.id > 0);
    if (out) *out = a;
    return a.id;
}

static void reload(jk_store *st, struct jk_account *a)
{
    jk_conn *c = jk_store_conn(st);
    assert_non_null(c);
    assert_int_equal(jk_account_get(c, a->id, a), JK_OK);
}

struct fail_tx {
    int64_t id, now_ms;
    int is_locked_now;
};

static jk_rc fail_tx_fn(jk_conn *c, void *arg)
{
    struct fail_tx *t = arg;
    return jk_account_note_failure(c, t->id, &rules, t->now_ms, &t->is_locked_now);
}

struct success_tx {
    int64_t id, step;
};

static jk_rc success_tx_fn(jk_conn *c, void *arg)
{
    struct success_tx *t = arg;
    return jk_account_note_success(c, t->id, t->step);
}

/* One login attempt the way the token endpoint makes it: decide, then record. */
static enum jk_login_outcome attempt(jk_store *st, struct jk_account *a, const char *pw,
                                     const char *totp, int64_t now_ms, int *is_locked_now)
{
    int64_t step = 0;
    reload(st, a);
    enum jk_login_outcome o = jk_account_authenticate(&rules, a, pw, totp, now_ms, &step);
    struct fail_tx t = {a->id, now_ms, 0};
    if (o == JK_LOGIN_BAD_SECRET || o == JK_LOGIN_BAD_TOTP)
        assert_int_equal(jk_store_tx(st, fail_tx_fn, &t), JK_OK);
    if (o == JK_LOGIN_OK) {
        struct success_tx s = {a->id, step};
        assert_int_equal(jk_store_tx(st, success_tx_fn, &s), JK_OK);
    }
    if (is_locked_now) *is_locked_now = t.is_locked_now;
    return o;
}

static void duplicate_names_conflict(void **state)
{
    struct fixture *f = *state;
    struct jk_account a, b;
    make_account(f->st, "dup", JK_ROLE_NURSE, "Correct-Horse-9", NULL, &a);
    a.id = 0;
    assert_int_equal(jk_store_tx(f->st, insert_tx, &a), JK_ECONFLICT);
    jk_conn *c = jk_store_conn(f->st);
    assert_int_equal(jk_account_find(c, "nobody", &b), JK_ENOTFOUND);
    assert_int_equal(jk_account_find(c, "dup", &b), JK_OK);
    assert_string_equal(b.username, "dup");
    assert_int_equal(b.role, JK_ROLE_NURSE);
    assert_string_equal(b.org, "Organization/hosp-fz-1");
    assert_int_equal(b.password_set_ms, T0);
    assert_false(b.is_disabled);
}

struct disable_tx {
    int64_t id;
    int is_disabled;
};

static jk_rc disable_tx_fn(jk_conn *c, void *arg)
{
    struct disable_tx *t = arg;
    jk_rc rc = jk_account_set_disabled(c, t->id, t->is_disabled);
    if (!rc && t->is_disabled) rc = jk_token_revoke_account(c, t->id);
    return rc;
}

static void lockout_after_failures_and_unlock(void **state)
{
    struct fixture *f = *state;
    struct jk_account a;
    int is_locked = 0;
    const char *pw = "Correct-Horse-9";
    make_account(f->st, "lock-me", JK_ROLE_DOCTOR, pw, NULL, &a);
    int64_t t = T0 + DAY;
    /* Threshold 3: two failures leave the account open... */
    assert_int_equal(attempt(f->st, &a, "wrong-1", NULL, t, &is_locked), JK_LOGIN_BAD_SECRET);
    assert_false(is_locked);
    assert_int_equal(attempt(f->st, &a, "wrong-2", NULL, t + 1000, &is_locked),
                     JK_LOGIN_BAD_SECRET);
    assert_false(is_locked);
    reload(f->st, &a);
    assert_int_equal(a.failed_count, 2);
    /* ... a success clears the count ... */
    assert_int_equal(attempt(f->st, &a, pw, NULL, t + 2000, NULL), JK_LOGIN_OK);
    reload(f->st, &a);
    assert_int_equal(a.failed_count, 0);
    /* ... and the third failure in a row locks it. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(attempt(f->st, &a, "wrong", NULL, t + 3000 + i, &is_locked),
                         JK_LOGIN_BAD_SECRET);
    assert_true(is_locked);
    reload(f->st, &a);
    assert_int_equal(a.locked_until_ms, t + 3002 + 15 * MINUTE);
    /* Locked: even the right password is refused, and nothing more is counted. */
    assert_int_equal(attempt(f->st, &a, pw, NULL, t + 10 * MINUTE, NULL), JK_LOGIN_LOCKED);
    assert_int_equal(attempt(f->st, &a, "wrong", NULL, t + 10 * MINUTE, NULL), JK_LOGIN_LOCKED);
    /* After the lockout time it opens by itself. */
    assert_int_equal(attempt(f->st, &a, pw, NULL, t + 3002 + 15 * MINUTE, NULL), JK_LOGIN_OK);
    reload(f->st, &a);
    assert_int_equal(a.locked_until_ms, 0);

    /* Locked out again, then unlocked by an administrator before the time is up. */
    for (int i = 0; i < 3; i++)
        attempt(f->st, &a, "wrong", NULL, t + 20 * MINUTE, NULL);
    assert_int_equal(attempt(f->st, &a, pw, NULL, t + 21 * MINUTE, NULL), JK_LOGIN_LOCKED);
    struct disable_tx u = {a.id, 0};
    assert_int_equal(jk_store_tx(f->st, disable_tx_fn, &u), JK_OK);
    assert_int_equal(attempt(f->st, &a, pw, NULL, t + 21 * MINUTE, NULL), JK_LOGIN_OK);

    /* An administrator's lock holds until unlocked, whatever the time. */
    struct disable_tx l = {a.id, 1};
    assert_int_equal(jk_store_tx(f->st, disable_tx_fn, &l), JK_OK);
    assert_int_equal(attempt(f->st, &a, pw, NULL, t + 365 * DAY, NULL), JK_LOGIN_DISABLED);
    assert_int_equal(jk_store_tx(f->st, disable_tx_fn, &u), JK_OK);
    assert_int_equal(attempt(f->st, &a, pw, NULL, t + 22 * MINUTE, NULL), JK_LOGIN_OK);
}

struct race {
    jk_store *st;
    int64_t id;
    int n_locks;
};

static void *race_thread(void *arg)
{
    struct race *r = arg;
    struct fail_tx t = {r->id, T0 + DAY, 0};
    if (jk_store_tx(r->st, fail_tx_fn, &t)) return (void *)1;
    __atomic_add_fetch(&r->n_locks, t.is_locked_now, __ATOMIC_SEQ_CST);
    return NULL;
}

static void concurrent_failures_are_all_counted(void **state)
{
    struct fixture *f = *state;
    struct jk_account a;
    make_account(f->st, "race", JK_ROLE_NURSE, "Correct-Horse-9", NULL, &a);
    struct race r = {f->st, a.id, 0};
    pthread_t th[10];
    for (int i = 0; i < 10; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &r), 0);
    for (int i = 0; i < 10; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
    }
    /* Ten failures at threshold 3: three lockouts and one failure counted since. */
    reload(f->st, &a);
    assert_int_equal(r.n_locks, 3);
    assert_int_equal(a.failed_count, 1);
}

static void expired_passwords_and_second_factor(void **state)
{
    struct fixture *f = *state;
    struct jk_account a, sys;
    const char *pw = "Correct-Horse-9";
    make_account(f->st, "old-pw", JK_ROLE_PHARMACIST, pw, NULL, &a);
    int64_t max_age = (int64_t)rules.password_max_age_days * DAY;
    assert_int_equal(attempt(f->st, &a, pw, NULL, T0 + max_age, NULL), JK_LOGIN_OK);
    assert_int_equal(attempt(f->st, &a, pw, NULL, T0 + max_age + 1, NULL), JK_LOGIN_EXPIRED);
    /* A wrong password is a wrong password, expired or not. */
    assert_int_equal(attempt(f->st, &a, "x", NULL, T0 + max_age + 1, NULL), JK_LOGIN_BAD_SECRET);
    /* Client secrets of systems do not expire. */
    make_account(f->st, "his-1", JK_ROLE_SYSTEM, pw, NULL, &sys);
    assert_int_equal(attempt(f->st, &sys, pw, NULL, T0 + 10 * max_age, NULL), JK_LOGIN_OK);

    /* A platform administrator needs the code of the moment, once. */
    struct jk_account adm, bare;
    char code[8], other[8];
    int64_t t = T0 + DAY;
    make_account(f->st, "root", JK_ROLE_PLATFORM_ADMIN, pw, rfc_secret_b32, &adm);
    assert_int_equal(jk_totp_code(rfc_secret_b32, t, code, sizeof code), JK_OK);
    assert_int_equal(jk_totp_code(rfc_secret_b32, t + 5 * MINUTE, other, sizeof other), JK_OK);
    assert_int_equal(attempt(f->st, &adm, pw, NULL, t, NULL), JK_LOGIN_TOTP_REQUIRED);
    assert_int_equal(attempt(f->st, &adm, "x", code, t, NULL), JK_LOGIN_BAD_SECRET);
    assert_int_equal(attempt(f->st, &adm, pw, other, t, NULL), JK_LOGIN_BAD_TOTP);
    assert_int_equal(attempt(f->st, &adm, pw, code, t, NULL), JK_LOGIN_OK);
    /* The same code again, even within its window, is refused: it was used. */
    assert_int_equal(attempt(f->st, &adm, pw, code, t + 10000, NULL), JK_LOGIN_BAD_TOTP);
    reload(f->st, &adm);
    assert_int_equal(adm.totp_last_step, jk_totp_step(t));
    /* Recording the same step twice (two requests with one code at once) fails. */
    struct success_tx again = {adm.id, jk_totp_step(t)};
    assert_int_equal(jk_store_tx(f->st, success_tx_fn, &again), JK_EUNAUTH);
    /* A role that needs a second factor, without one enrolled, cannot log in. */
    make_account(f->st, "regulator-1", JK_ROLE_REGULATOR, pw, NULL, &bare);
    assert_int_equal(attempt(f->st, &bare, pw, "123456", t, NULL), JK_LOGIN_TOTP_NOT_ENROLLED);
}

struct issue_tx {
    int64_t id, now_ms, life_ms;
    const char *scopes;
    char token[JK_TOKEN_TEXT_LEN + 1];
};

static jk_rc issue_tx_fn(jk_conn *c, void *arg)
{
    struct issue_tx *t = arg;
    return jk_token_issue(c, t->id, t->scopes, t->now_ms, t->life_ms, t->token, sizeof t->token);
}

struct revoke_tx {
    const char *token;
    int64_t account_id;
};

static jk_rc revoke_tx_fn(jk_conn *c, void *arg)
{
    struct revoke_tx *t = arg;
    return jk_token_revoke(c, t->token, &t->account_id);
}

static jk_rc resolve(jk_store *st, const char *token, int64_t now_ms, struct jk_principal *p)
{
    jk_conn *c = jk_store_conn(st);
    assert_non_null(c);
    return jk_token_resolve(c, token, now_ms, p);
}

static const char sql_count_hash[] = "SELECT COUNT(*) FROM auth_token WHERE hash = ?";
static const char sql_count_like[] = "SELECT COUNT(*) FROM auth_token WHERE account_id = ?"
                                     " AND hash LIKE 'sm3:%'";

static int64_t count_text(jk_store *st, const char *sql, const char *text, int64_t id)
{
    jk_conn *c = jk_store_conn(st);
    jk_stmt *s;
    int has_row = 0;
    assert_int_equal(jk_conn_prepare(c, sql, &s), JK_OK);
    if (text)
        jk_stmt_text_arg(s, 1, text, strlen(text));
    else
        jk_stmt_int_arg(s, 1, id);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    int64_t n = jk_stmt_col_int(s, 0);
    jk_stmt_reset(s);
    return n;
}

static void tokens_issue_resolve_expire(void **state)
{
    struct fixture *f = *state;
    struct jk_account a;
    struct jk_principal p;
    make_account(f->st, "tok-resident", JK_ROLE_RESIDENT, "Correct-Horse-9", NULL, &a);
    struct issue_tx it = {a.id, T0, 60 * MINUTE, "patient/*.rs", ""};
    assert_int_equal(jk_store_tx(f->st, issue_tx_fn, &it), JK_OK);
    assert_int_equal(strlen(it.token), JK_TOKEN_TEXT_LEN);
    assert_int_equal(strspn(it.token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789-_"),
                     JK_TOKEN_TEXT_LEN);
    /* Only the hash is stored. */
    assert_int_equal(count_text(f->st, sql_count_hash, it.token, 0), 0);
    assert_int_equal(count_text(f->st, sql_count_like, NULL, a.id), 1);

    assert_int_equal(resolve(f->st, it.token, T0, &p), JK_OK);
    assert_int_equal(p.account_id, a.id);
    assert_string_equal(p.username, "tok-resident");
    assert_int_equal(p.role, JK_ROLE_RESIDENT);
    assert_string_equal(p.link, "Patient/pat-1");
    assert_string_equal(p.org, "");
    assert_string_equal(p.scopes, "patient/*.rs");
    assert_int_equal(p.issued_ms, T0);
    assert_int_equal(p.expires_ms, T0 + 60 * MINUTE);
    /* Valid up to its last millisecond, not after. */
    assert_int_equal(resolve(f->st, it.token, T0 + 60 * MINUTE - 1, &p), JK_OK);
    assert_int_equal(resolve(f->st, it.token, T0 + 60 * MINUTE, &p), JK_EUNAUTH);
    /* Tokens that are not ours, or not tokens at all. */
    char other[JK_TOKEN_TEXT_LEN + 1];
    memcpy(other, it.token, sizeof other);
    other[0] = other[0] == 'A' ? 'B' : 'A';
    assert_int_equal(resolve(f->st, other, T0, &p), JK_EUNAUTH);
    assert_int_equal(resolve(f->st, "", T0, &p), JK_EUNAUTH);
    assert_int_equal(resolve(f->st, NULL, T0, &p), JK_EUNAUTH);
    assert_int_equal(resolve(f->st, "abc", T0, &p), JK_EUNAUTH);
    char longer[JK_TOKEN_TEXT_LEN + 2];
    snprintf(longer, sizeof longer, "%sA", it.token);
    assert_int_equal(resolve(f->st, longer, T0, &p), JK_EUNAUTH);
    char bad[JK_TOKEN_TEXT_LEN + 1];
    memcpy(bad, it.token, sizeof bad);
    bad[5] = '=';
    assert_int_equal(resolve(f->st, bad, T0, &p), JK_EUNAUTH);

    /* Many tokens at once are all different. */
    struct issue_tx it2 = {a.id, T0, 60 * MINUTE, "patient/*.rs", ""};
    assert_int_equal(jk_store_tx(f->st, issue_tx_fn, &it2), JK_OK);
    assert_string_not_equal(it.token, it2.token);
    /* Expired tokens are forgotten a day later, when the account gets a new one. */
    struct issue_tx it3 = {a.id, T0 + 2 * DAY, 60 * MINUTE, "patient/*.rs", ""};
    assert_int_equal(jk_store_tx(f->st, issue_tx_fn, &it3), JK_OK);
    assert_int_equal(count_text(f->st, sql_count_like, NULL, a.id), 1);
}

static void tokens_are_revoked(void **state)
{
    struct fixture *f = *state;
    struct jk_account a;
    struct jk_principal p;
    make_account(f->st, "tok-doctor", JK_ROLE_DOCTOR, "Correct-Horse-9", NULL, &a);
    struct issue_tx t1 = {a.id, T0, 60 * MINUTE, "user/*.cruds", ""};
    struct issue_tx t2 = {a.id, T0, 60 * MINUTE, "user/*.cruds", ""};
    struct issue_tx t3 = {a.id, T0, 60 * MINUTE, "user/*.cruds", ""};
    assert_int_equal(jk_store_tx(f->st, issue_tx_fn, &t1), JK_OK);
    assert_int_equal(jk_store_tx(f->st, issue_tx_fn, &t2), JK_OK);
    /* Revoking one token (logout) leaves the others. */
    struct revoke_tx r = {t1.token, 0};
    assert_int_equal(jk_store_tx(f->st, revoke_tx_fn, &r), JK_OK);
    assert_int_equal(r.account_id, a.id);
    assert_int_equal(resolve(f->st, t1.token, T0 + 1, &p), JK_EUNAUTH);
    assert_int_equal(resolve(f->st, t2.token, T0 + 1, &p), JK_OK);
    /* Revoking twice, or a token nobody has, is not an error (RFC 7009). */
    assert_int_equal(jk_store_tx(f->st, revoke_tx_fn, &r), JK_OK);
    struct revoke_tx unknown = {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", -1};
    assert_int_equal(jk_store_tx(f->st, revoke_tx_fn, &unknown), JK_OK);
    assert_int_equal(unknown.account_id, 0);
    struct revoke_tx junk = {"junk", -1};
    assert_int_equal(jk_store_tx(f->st, revoke_tx_fn, &junk), JK_OK);
    /* An administrator's lock ends every token of the account, and new ones stay dead. */
    struct disable_tx l = {a.id, 1};
    assert_int_equal(jk_store_tx(f->st, disable_tx_fn, &l), JK_OK);
    assert_int_equal(resolve(f->st, t2.token, T0 + 1, &p), JK_EUNAUTH);
    assert_int_equal(jk_store_tx(f->st, issue_tx_fn, &t3), JK_OK);
    assert_int_equal(resolve(f->st, t3.token, T0 + 1, &p), JK_EUNAUTH);
    struct disable_tx u = {a.id, 0};
    assert_int_equal(jk_store_tx(f->st, disable_tx_fn, &u), JK_OK);
    assert_int_equal(resolve(f->st, t2.token, T0 + 1, &p), JK_EUNAUTH); /* revoked stays so */
    assert_int_equal(resolve(f->st, t3.token, T0 + 1, &p), JK_OK);
}

static void demo_accounts_log_in(void **state)
{
    struct fixture *f = *state;
    const struct jk_demo_account *d;
    size_t n = 0;
    int64_t ids[16];
    for (int round = 0; round < 2; round++) { /* twice: running the demo again is harmless */
        assert_int_equal(jk_account_create_demo(f->st, &rules, T0, &d, &n), JK_OK);
        assert_true(n >= JK_N_ROLES && n <= 16); /* every role, some twice */
        unsigned seen = 0;
        for (size_t i = 0; i < n; i++) {
            struct jk_account a;
            int64_t step = 0;
            char code[8];
            jk_conn *c = jk_store_conn(f->st);
            assert_int_equal(jk_account_find(c, d[i].username, &a), JK_OK);
            if (round == 0) ids[i] = a.id;
            assert_int_equal(a.id, ids[i]);
            seen |= 1u << a.role;
            assert_string_equal(jk_role_info(a.role)->name, d[i].role);
            assert_string_equal(a.link, d[i].link);
            int needs = jk_security_needs_totp(&rules, a.role);
            assert_int_equal(d[i].totp_secret != NULL, needs);
            if (!needs) {
                assert_int_equal(
                    jk_account_authenticate(&rules, &a, d[i].password, NULL, T0 + 1, &step),
                    JK_LOGIN_OK);
                continue;
            }
            assert_int_equal(jk_totp_code(d[i].totp_secret, T0 + 1, code, sizeof code), JK_OK);
            assert_int_equal(
                jk_account_authenticate(&rules, &a, d[i].password, code, T0 + 1, &step),
                JK_LOGIN_OK);
        }
        assert_int_equal(seen, (1u << JK_N_ROLES) - 1); /* an account of every role */
    }
}

#define DB_TESTS                                                                                   \
    cmocka_unit_test(duplicate_names_conflict),                                                    \
        cmocka_unit_test(lockout_after_failures_and_unlock),                                       \
        cmocka_unit_test(concurrent_failures_are_all_counted),                                     \
        cmocka_unit_test(expired_passwords_and_second_factor),                                     \
        cmocka_unit_test(tokens_issue_resolve_expire), cmocka_unit_test(tokens_are_revoked),       \
        cmocka_unit_test(demo_accounts_log_in)

int main(void)
{
    jk_log_set_level(JK_LOG_WARN);
    if (load_rules()) return 1;
    const struct CMUnitTest common[] = {
        cmocka_unit_test(shipped_rules_load),
        cmocka_unit_test(rules_errors_name_file_and_path),
        cmocka_unit_test(rules_file_not_json),
        cmocka_unit_test(policy_refuses_weak_passwords_naming_the_rule),
        cmocka_unit_test(passwords_hash_and_verify),
        cmocka_unit_test(generated_passwords_meet_the_policy),
        cmocka_unit_test(user_names_are_normalised),
        cmocka_unit_test(accounts_are_checked),
        cmocka_unit_test(totp_rfc6238_vectors),
        cmocka_unit_test(totp_window_and_replay),
        cmocka_unit_test(base32_rfc4648_vectors),
        cmocka_unit_test(totp_secrets_and_uri),
        cmocka_unit_test(scopes_are_narrowed_never_widened),
    };
    const struct CMUnitTest sqlite[] = {DB_TESTS};
    const struct CMUnitTest pg[] = {DB_TESTS};
    int failed = cmocka_run_group_tests_name("auth", common, NULL, NULL);
    failed += cmocka_run_group_tests_name("auth/sqlite", sqlite, sqlite_setup, sqlite_teardown);
    if (getenv("JK_TEST_PG_URL") && *getenv("JK_TEST_PG_URL"))
        failed += cmocka_run_group_tests_name("auth/postgresql", pg, pg_setup, pg_teardown);
    else
        fprintf(stderr, "[  SKIPPED ] auth/postgresql: set JK_TEST_PG_URL to run it"
                        " (tools/pg-test-cluster.sh start DIR prints one)\n");
    return failed ? 1 : 0;
}
