/* test_card.c - the electronic health card's dynamic QR codes with the clock passed in: a code
 * is valid until its expiry second and refused after it; a change of any one character (card
 * number, expiry, nonce, signature) is refused; a code of other keys is refused; malformed
 * texts are refused as such; a code issued here is recognised by its fingerprint; each nonce
 * is accepted once (on SQLite), a revoked card's codes are refused, one active card per
 * person; the QR drawing; the rules file checked strictly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/account.h"
#include "core/buf.h"
#include "core/crypto.h"
#include "mpi/card.h"
#include "store/store.h"

#define NOW_MS 1795400000123LL /* 2026-11-22T22:13:20.123Z */
#define TTL_S  120

static jk_keys *keys, *other_keys;
static struct jk_card_keys ck, other_ck;

static int group_setup(void **state)
{
    (void)state;
    if (jk_keys_from(NULL, NULL, &keys) || jk_keys_from(NULL, NULL, &other_keys)) return -1;
    if (jk_card_keys_init(&ck, keys) || jk_card_keys_init(&other_ck, other_keys)) return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    jk_keys_free(keys);
    jk_keys_free(other_keys);
    return 0;
}

static void make(char *text, struct jk_card_code *code)
{
    char number[JK_CARD_NUMBER_LEN + 1];
    assert_int_equal(jk_card_new_number(number), JK_OK);
    assert_int_equal(jk_card_code_make(&ck, number, NOW_MS, TTL_S, text, JK_CARD_CODE_MAX, code),
                     JK_OK);
}

/* Parses and checks text at now_ms with the SM2 signature (no fingerprint shortcut). */
static enum jk_card_result check_at(const struct jk_card_keys *k, const char *text, int64_t now_ms)
{
    struct jk_card_code c;
    enum jk_card_result r = jk_card_code_parse(text, strlen(text), &c);
    return r ? r : jk_card_code_check(k, text, &c, 0, now_ms, TTL_S);
}

static void test_number_and_format(void **state)
{
    (void)state;
    char a[JK_CARD_NUMBER_LEN + 1], b[JK_CARD_NUMBER_LEN + 1];
    assert_int_equal(jk_card_new_number(a), JK_OK);
    assert_int_equal(jk_card_new_number(b), JK_OK);
    assert_int_equal(strlen(a), 64);
    assert_int_equal(strspn(a, "0123456789ABCDEF"), 64);
    assert_string_not_equal(a, b);
    char text[JK_CARD_CODE_MAX];
    struct jk_card_code code;
    assert_int_equal(jk_card_code_make(&ck, a, NOW_MS, TTL_S, text, sizeof text, &code), JK_OK);
    /* JKHC1.<number>.<expiry>.<nonce>.<signature> */
    char head[128];
    snprintf(head, sizeof head, "JKHC1.%s.%lld.", a, (NOW_MS / 1000) + TTL_S);
    assert_int_equal(strncmp(text, head, strlen(head)), 0);
    assert_string_equal(code.number, a);
    assert_int_equal(code.expires_s, NOW_MS / 1000 + TTL_S);
    assert_int_equal(strlen(code.nonce), JK_CARD_NONCE_LEN);
    assert_true(strlen(text) < 220);
    /* Two codes of one card differ (their nonces). */
    char text2[JK_CARD_CODE_MAX];
    struct jk_card_code code2;
    assert_int_equal(jk_card_code_make(&ck, a, NOW_MS, TTL_S, text2, sizeof text2, &code2), JK_OK);
    assert_string_not_equal(code.nonce, code2.nonce);
    /* Not a card number: refused. */
    assert_int_equal(jk_card_code_make(&ck, "abc", NOW_MS, TTL_S, text, sizeof text, NULL),
                     JK_EINVAL);
}

static void test_valid_until_expiry(void **state)
{
    (void)state;
    char text[JK_CARD_CODE_MAX];
    struct jk_card_code code;
    make(text, &code);
    assert_int_equal(check_at(&ck, text, NOW_MS), JK_CARD_OK);
    assert_int_equal(check_at(&ck, text, NOW_MS + 60000), JK_CARD_OK);
    /* valid through its expiry second, refused from the next one */
    assert_int_equal(check_at(&ck, text, (NOW_MS / 1000 + TTL_S) * 1000 + 999), JK_CARD_OK);
    assert_int_equal(check_at(&ck, text, (NOW_MS / 1000 + TTL_S + 1) * 1000), JK_CARD_EXPIRED);
    assert_int_equal(check_at(&ck, text, NOW_MS + 86400000), JK_CARD_EXPIRED);
    /* A code that claims a far longer life than the rules give was not made here. */
    assert_int_equal(check_at(&ck, text, NOW_MS - 3600 * 1000), JK_CARD_EXPIRED);
    /* Other keys: not the platform's signature. */
    assert_int_equal(check_at(&other_ck, text, NOW_MS), JK_CARD_SIGNATURE);
    /* The fingerprint shortcut: only the exact text issued has it. */
    char mac[JK_CARD_MAC_HEX + 1], mac2[JK_CARD_MAC_HEX + 1];
    assert_int_equal(jk_card_code_mac(&ck, text, strlen(text), mac), JK_OK);
    text[6] = text[6] == 'A' ? 'B' : 'A';
    assert_int_equal(jk_card_code_mac(&ck, text, strlen(text), mac2), JK_OK);
    assert_string_not_equal(mac, mac2);
    /* An expired code stays expired even when known. */
    text[6] = code.number[0];
    assert_int_equal(jk_card_code_check(&ck, text, &code, 1, NOW_MS + 3600000, TTL_S),
                     JK_CARD_EXPIRED);
}

/* Another character of the same class as c (so the text stays well-formed). */
static char other_of(char c, const char *alphabet)
{
    const char *p = strchr(alphabet, c);
    assert_non_null(p);
    return p[1] ? p[1] : alphabet[0];
}

static void test_one_character_changed(void **state)
{
    (void)state;
    static const char hex[] = "0123456789ABCDEF", digits[] = "0123456789",
                      b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char text[JK_CARD_CODE_MAX];
    struct jk_card_code code;
    make(text, &code);
    size_t n = strlen(text);
    const char *dots[4];
    const char *p = text;
    for (int i = 0; i < 4; i++) {
        dots[i] = strchr(p, '.');
        assert_non_null(dots[i]);
        p = dots[i] + 1;
    }
    int n_changed[5] = {0};
    for (size_t i = 6; i < n; i++) {
        if (text[i] == '.') continue;
        int part = text + i < dots[1] ? 1 : text + i < dots[2] ? 2 : text + i < dots[3] ? 3 : 4;
        char was = text[i];
        text[i] = other_of(was, part == 1 ? hex : part == 2 ? digits : b64);
        enum jk_card_result r = check_at(&ck, text, NOW_MS);
        if (part < 3 || (part == 3 && text + i + 1 < dots[3])) {
            /* number, expiry, nonce: well-formed, but not what was signed */
            assert_int_equal(r, JK_CARD_SIGNATURE);
        } else {
            /* the nonce's last character also holds 4 unused bits, which must be zero */
            /* the signature: not a signature of the text, or (the unused low bits of its
             * last character) not canonical base64 */
            assert_true(r == JK_CARD_SIGNATURE || r == JK_CARD_MALFORMED);
        }
        text[i] = was;
        n_changed[part]++;
    }
    assert_int_equal(n_changed[1], 64);
    assert_int_equal(n_changed[2], 10);
    assert_int_equal(n_changed[3], JK_CARD_NONCE_LEN);
    assert_true(n_changed[4] >= 90);
    assert_int_equal(check_at(&ck, text, NOW_MS), JK_CARD_OK); /* restored */
}

static void test_malformed(void **state)
{
    (void)state;
    char text[JK_CARD_CODE_MAX], bad[2 * JK_CARD_CODE_MAX];
    struct jk_card_code code;
    make(text, &code);
    size_t n = strlen(text);
    const char *cases[] = {
        "", "JKHC1", "JKHC1....", "hello world", "JKHC2" /* the rest below */,
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(jk_card_code_parse(cases[i], strlen(cases[i]), &code), JK_CARD_MALFORMED);
    /* another version */
    snprintf(bad, sizeof bad, "JKHC2%s", text + 5);
    assert_int_equal(jk_card_code_parse(bad, strlen(bad), &code), JK_CARD_MALFORMED);
    /* a lower-case card number */
    snprintf(bad, sizeof bad, "%s", text);
    for (size_t i = 6; i < 70; i++)
        if (bad[i] >= 'A' && bad[i] <= 'F') {
            bad[i] = (char)(bad[i] - 'A' + 'a');
            break;
        }
    assert_int_equal(jk_card_code_parse(bad, strlen(bad), &code), JK_CARD_MALFORMED);
    /* truncated: missing the signature, or cut inside it */
    assert_int_equal(jk_card_code_parse(text, (size_t)(strrchr(text, '.') - text), &code),
                     JK_CARD_MALFORMED);
    assert_int_equal(jk_card_code_parse(text, (size_t)(strrchr(text, '.') - text) + 1, &code),
                     JK_CARD_MALFORMED);
    /* something after it, a sixth part, a padded signature */
    snprintf(bad, sizeof bad, "%s.x", text);
    assert_int_equal(jk_card_code_parse(bad, strlen(bad), &code), JK_CARD_MALFORMED);
    snprintf(bad, sizeof bad, "%s==", text);
    assert_int_equal(jk_card_code_parse(bad, strlen(bad), &code), JK_CARD_MALFORMED);
    /* a sign or a letter in the expiry */
    snprintf(bad, sizeof bad, "%s", text);
    bad[71] = '-';
    assert_int_equal(jk_card_code_parse(bad, strlen(bad), &code), JK_CARD_MALFORMED);
    /* a NUL inside */
    snprintf(bad, sizeof bad, "%s", text);
    bad[20] = '\0';
    assert_int_equal(jk_card_code_parse(bad, n, &code), JK_CARD_MALFORMED);
    assert_int_equal(jk_card_code_parse(text, n, &code), JK_CARD_OK);
}

static void test_qr_svg(void **state)
{
    (void)state;
    char text[JK_CARD_CODE_MAX];
    struct jk_card_code code;
    make(text, &code);
    struct jk_buf b;
    jk_buf_init(&b, 0);
    assert_int_equal(jk_card_qr_svg(text, &b), JK_OK);
    assert_non_null(strstr(b.p, "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 "));
    assert_non_null(strstr(b.p, "<path fill=\"#000\" d=\"M4 4h7v1h-7z")); /* finder pattern */
    assert_int_equal(strcmp(b.p + b.len - 9, "\"/></svg>"), 0);
    jk_buf_free(&b);
}

static void test_rules_file(void **state)
{
    (void)state;
    struct jk_card_rules r;
    char err[1024] = "";
    jk_rc rc = jk_card_rules_load("rules/card.json", &r, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, JK_OK);
    assert_true(r.ttl_s >= 60 && r.ttl_s <= 300);
    assert_true(r.refresh_margin_s < r.ttl_s);
    assert_true(r.manage_roles >> JK_ROLE_RESIDENT & 1u);
    assert_false(r.verify_roles >> JK_ROLE_RESIDENT & 1u);
    assert_true(r.verify_roles >> JK_ROLE_NURSE & 1u);
    /* strict: a bad value, residents as verifiers */
    char dir[] = "/tmp/jk-test-card-rules.XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/card.json", dir);
    static const char *const bad[] = {
        "\"card.code.ttl_seconds\": {\"value\": 0,",
        "\"card.verify_roles\": {\"value\": [\"resident\"],",
    };
    for (size_t i = 0; i < 2; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "{\"ruleSet\":\"card\",\"description\":\"t\",\"rules\":{"
                   "\"card.code.ttl_seconds\":{\"value\":120,\"source\":\"s\",\"effective\":"
                   "\"2025-01-01\"},"
                   "\"card.code.refresh_margin_seconds\":{\"value\":30,\"source\":\"s\","
                   "\"effective\":\"2025-01-01\"},"
                   "\"card.code.keep_seconds\":{\"value\":600,\"source\":\"s\",\"effective\":"
                   "\"2025-01-01\"},"
                   "\"card.manage_roles\":{\"value\":[\"resident\"],\"source\":\"s\","
                   "\"effective\":\"2025-01-01\"},"
                   "\"card.verify_roles\":{\"value\":[\"nurse\"],\"source\":\"s\",\"effective\":"
                   "\"2025-01-01\"}}}");
        fclose(f);
        assert_int_equal(jk_card_rules_load(path, &r, err, sizeof err), JK_OK);
        /* now break one rule */
        f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f,
                "{\"ruleSet\":\"card\",\"description\":\"t\",\"rules\":{"
                "%s\"source\":\"s\",\"effective\":\"2025-01-01\"},"
                "\"card.code.refresh_margin_seconds\":{\"value\":30,\"source\":\"s\","
                "\"effective\":\"2025-01-01\"},"
                "\"card.code.keep_seconds\":{\"value\":600,\"source\":\"s\",\"effective\":"
                "\"2025-01-01\"},"
                "\"card.manage_roles\":{\"value\":[\"resident\"],\"source\":\"s\","
                "\"effective\":\"2025-01-01\"}%s}}",
                bad[i],
                i == 0 ? ",\"card.verify_roles\":{\"value\":[\"nurse\"],\"source\":\"s\","
                         "\"effective\":\"2025-01-01\"}"
                       : ",\"card.code.ttl_seconds\":{\"value\":120,\"source\":\"s\","
                         "\"effective\":\"2025-01-01\"}");
        fclose(f);
        assert_int_equal(jk_card_rules_load(path, &r, err, sizeof err), JK_EINVAL);
        assert_non_null(strstr(err, i == 0 ? "card.code.ttl_seconds" : "card.verify_roles"));
    }
    unlink(path);
    rmdir(dir);
}

/* ---- the database: nonces used once, revocation, one active card per person ---- */

struct db {
    char dir[64];
    jk_store *st;
};

static void db_open(struct db *d)
{
    char url[128], err[256];
    snprintf(d->dir, sizeof d->dir, "/tmp/jk-test-card-db.XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    snprintf(url, sizeof url, "sqlite:%s/t.db", d->dir);
    assert_int_equal(jk_store_open(url, &d->st, err, sizeof err), JK_OK);
    assert_int_equal(jk_store_migrate(d->st, NULL), JK_OK);
}

static void db_close(struct db *d)
{
    char cmd[128];
    jk_store_close(d->st);
    snprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
    assert_int_equal(system(cmd), 0);
}

struct issue_tx {
    const char *patient;
    struct jk_card card;
};

static jk_rc issue_fn(jk_conn *c, void *arg)
{
    struct issue_tx *x = arg;
    return jk_card_issue(c, x->patient, NOW_MS, &x->card);
}

struct use_tx {
    const struct jk_card *card;
    struct jk_card_code code;
    char mac[JK_CARD_MAC_HEX + 1];
    int is_record; /* record the code as issued first */
    enum jk_card_result result;
};

static jk_rc use_fn(jk_conn *c, void *arg)
{
    struct use_tx *x = arg;
    jk_rc rc =
        x->is_record ? jk_card_code_record(c, x->card->id, &x->code, x->mac, NOW_MS, 600) : JK_OK;
    return rc ? rc : jk_card_code_use(c, x->card->id, &x->code, x->mac, NOW_MS, &x->result);
}

static enum jk_card_result use(struct db *d, const struct jk_card *card, const char *text,
                               int is_record)
{
    struct use_tx x = {.card = card, .is_record = is_record};
    assert_int_equal(jk_card_code_parse(text, strlen(text), &x.code), JK_CARD_OK);
    assert_int_equal(jk_card_code_mac(&ck, text, strlen(text), x.mac), JK_OK);
    assert_int_equal(jk_store_tx(d->st, use_fn, &x), JK_OK);
    return x.result;
}

static jk_rc revoke_fn(jk_conn *c, void *arg)
{
    return jk_card_revoke(c, ((struct jk_card *)arg)->id, "lost", NOW_MS);
}

static void test_nonce_once_and_revocation(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    struct issue_tx a = {.patient = "pat-a"}, again = {.patient = "pat-a"};
    assert_int_equal(jk_store_tx(d.st, issue_fn, &a), JK_OK);
    assert_string_equal(a.card.status, "active");
    /* one active card per person */
    assert_int_equal(jk_store_tx(d.st, issue_fn, &again), JK_ECONFLICT);
    char t1[JK_CARD_CODE_MAX], t2[JK_CARD_CODE_MAX];
    assert_int_equal(jk_card_code_make(&ck, a.card.number, NOW_MS, TTL_S, t1, sizeof t1, NULL),
                     JK_OK);
    assert_int_equal(jk_card_code_make(&ck, a.card.number, NOW_MS, TTL_S, t2, sizeof t2, NULL),
                     JK_OK);
    /* issued here: recognised by its fingerprint; a changed text is not */
    struct jk_card_code code;
    char mac[JK_CARD_MAC_HEX + 1];
    int is_known = 0;
    assert_int_equal(use(&d, &a.card, t1, 1), JK_CARD_OK);
    assert_int_equal(jk_card_code_parse(t2, strlen(t2), &code), JK_CARD_OK);
    assert_int_equal(jk_card_code_mac(&ck, t2, strlen(t2), mac), JK_OK);
    struct use_tx rec = {.card = &a.card, .code = code, .is_record = 1};
    memcpy(rec.mac, mac, sizeof mac);
    jk_conn *c = jk_store_conn(d.st);
    assert_int_equal(jk_card_code_known(c, &code, mac, &is_known), JK_OK);
    assert_int_equal(is_known, 0);
    /* each nonce once: the first use accepted, the second refused */
    assert_int_equal(use(&d, &a.card, t1, 0), JK_CARD_REPLAYED);
    /* a code that was never recorded (made elsewhere) is accepted once too */
    assert_int_equal(use(&d, &a.card, t2, 0), JK_CARD_OK);
    assert_int_equal(jk_card_code_known(c, &code, mac, &is_known), JK_OK);
    assert_int_equal(is_known, 1);
    assert_int_equal(use(&d, &a.card, t2, 0), JK_CARD_REPLAYED);
    /* revoked: its codes are refused; then a new card can be issued */
    char t3[JK_CARD_CODE_MAX];
    assert_int_equal(jk_card_code_make(&ck, a.card.number, NOW_MS, TTL_S, t3, sizeof t3, NULL),
                     JK_OK);
    assert_int_equal(jk_store_tx(d.st, revoke_fn, &a.card), JK_OK);
    assert_int_equal(jk_store_tx(d.st, revoke_fn, &a.card), JK_EGONE);
    assert_int_equal(use(&d, &a.card, t3, 1), JK_CARD_REVOKED);
    assert_int_equal(jk_store_tx(d.st, issue_fn, &again), JK_OK);
    assert_string_not_equal(again.card.number, a.card.number);
    assert_string_equal(again.card.person, a.card.person);
    db_close(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_number_and_format),
        cmocka_unit_test(test_valid_until_expiry),
        cmocka_unit_test(test_one_character_changed),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_qr_svg),
        cmocka_unit_test(test_rules_file),
        cmocka_unit_test(test_nonce_once_and_revocation),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
