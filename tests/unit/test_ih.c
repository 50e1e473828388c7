/* test_ih.c - the pure parts of online follow-up visits: rules/internet-hospital.json as shipped
 * and what the strict loader refuses; the calendar arithmetic of the gate (a child's completed
 * years, a licence's years of practice, partial dates counted from their latest day, the
 * diagnosis window) at any date; the check of a chat image or uploaded record. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "core/arena.h"
#include "core/crypto.h"
#include "core/diag.h"
#include "svc/ih/visit.h"

#define DAY 86400000LL
#define CST 480

/* 2026-03-01T00:00:00+08:00 (2026-02-28T16:00:00Z): the day after 2026-02-28. */
#define MAR_1_2026 1772294400000LL

static struct jk_ih_rules *load(const char *path, char *err, size_t errlen)
{
    struct jk_ih_rules *r = NULL;
    jk_rc rc = jk_ih_rules_load(path, &r, err, errlen);
    if (rc) fprintf(stderr, "%s\n", err);
    return r;
}

/* The shipped file with rule code's value replaced by value (JSON text; NULL: the rule
 * removed), or with member extra added to the rules when code is NULL; loaded. Returns the rc
 * and err. */
static jk_rc load_with(const char *code, const char *value, char *err, size_t errlen)
{
    char dir[] = "/tmp/jk-test-ih-XXXXXX", path[64];
    struct json_object *root = json_object_from_file("rules/internet-hospital.json"), *rules, *rule;
    assert_non_null(root);
    assert_non_null(mkdtemp(dir));
    json_object_object_get_ex(root, "rules", &rules);
    if (!value)
        json_object_object_del(rules, code);
    else if (json_object_object_get_ex(rules, code, &rule))
        json_object_object_add(rule, "value", json_tokener_parse(value));
    else
        json_object_object_add(rules, code, json_tokener_parse(value));
    snprintf(path, sizeof path, "%s/ih.json", dir);
    json_object_to_file(path, root);
    json_object_put(root);
    struct jk_ih_rules *r = NULL;
    jk_rc rc = jk_ih_rules_load(path, &r, err, errlen);
    jk_ih_rules_free(r);
    unlink(path);
    rmdir(dir);
    return rc;
}

static void test_rules_file(void **state)
{
    (void)state;
    char err[512];
    struct jk_ih_rules *r = load("rules/internet-hospital.json", err, sizeof err);
    assert_non_null(r);
    struct jk_ih_policy p, fz;
    jk_ih_policy(r, NULL, &p);
    assert_int_equal(p.guardian_age_years, 6);
    assert_int_equal(p.min_practice_years, 3);
    assert_int_equal(p.prior_days, 365);
    assert_int_equal(p.reply_hours, 24);
    assert_int_equal(p.emr_years, 15);
    assert_int_equal(p.chat_years, 3);
    assert_int_equal(p.image_max_bytes, 2097152);
    assert_int_equal(p.fee_fen, 1000);
    jk_ih_policy(r, "Organization/hosp-fz-1", &fz); /* the institution's own fee */
    assert_int_equal(fz.fee_fen, 1500);
    assert_int_equal(fz.prior_days, 365);
    assert_true(jk_ih_role_may(r, "patient", "resident"));
    assert_false(jk_ih_role_may(r, "patient", "doctor"));
    assert_true(jk_ih_role_may(r, "doctor", "doctor"));
    assert_false(jk_ih_role_may(r, "doctor", "nurse"));
    assert_true(
        jk_ih_is_licence(r, "https://jiankang.example/fhir/CodeSystem/practitioner-qualification",
                         "practising-licence"));
    assert_false(jk_ih_is_licence(r, "http://example.org", "practising-licence"));
    jk_ih_rules_free(r);
}

static void test_rules_refused(void **state)
{
    (void)state;
    char err[512];
    assert_int_equal(load_with("visit.guardian_age_years", "\"six\"", err, sizeof err), JK_EINVAL);
    assert_non_null(strstr(err, "/rules/visit.guardian_age_years/value"));
    assert_int_equal(load_with("visit.prior_diagnosis_days", "0", err, sizeof err), JK_EINVAL);
    assert_int_equal(load_with("doctor.min_practice_years", NULL, err, sizeof err), JK_EINVAL);
    assert_non_null(strstr(err, "'doctor.min_practice_years' is missing"));
    assert_int_equal(load_with("visit.free_visits",
                               "{\"value\":1,\"source\":\"x\","
                               "\"effective\":\"2020-01-01\"}",
                               err, sizeof err),
                     JK_EINVAL);
    assert_non_null(strstr(err, "unknown member 'visit.free_visits'"));
    assert_int_equal(load_with("roles.doctor", "[\"resident\"]", err, sizeof err), JK_EINVAL);
    assert_int_equal(load_with("roles.patient", "[\"wizard\"]", err, sizeof err), JK_EINVAL);
    assert_int_equal(load_with("doctor.licence_codes", "[]", err, sizeof err), JK_EINVAL);
    assert_int_equal(load_with("institutions", "{\"hosp-x\":{\"visit.prior_diagnosis_days\":1}}",
                               err, sizeof err),
                     JK_EINVAL);
    assert_non_null(strstr(err, "/rules/institutions/value/hosp-x/visit.prior_diagnosis_days"));
    assert_int_equal(
        load_with("institutions", "{\"hosp-x\":{\"visit.fee_fen\":-1}}", err, sizeof err),
        JK_EINVAL);
    assert_int_equal(
        load_with("institutions", "{\"hosp-x\":{\"visit.fee_fen\":800}}", err, sizeof err), JK_OK);
}

static void test_years(void **state)
{
    (void)state;
    /* a child born 2020-03-01 turns 6 on 2026-03-01 local time, not a day earlier */
    assert_int_equal(jk_ih_years_since("2020-03-01", MAR_1_2026, CST), 6);
    assert_int_equal(jk_ih_years_since("2020-03-01", MAR_1_2026 - 1, CST), 5);
    /* at 23:00 UTC on 2026-02-28 it is already 1 March in China */
    assert_int_equal(jk_ih_years_since("2020-03-01", MAR_1_2026 + 7 * 3600000LL, 0), 5);
    /* born on 29 February: a year completes on 1 March in common years */
    assert_int_equal(jk_ih_years_since("2020-02-29", MAR_1_2026 - 1, CST), 5);
    assert_int_equal(jk_ih_years_since("2020-02-29", MAR_1_2026, CST), 6);
    /* partial dates count from their latest day: never early */
    assert_int_equal(jk_ih_years_since("2023", MAR_1_2026, CST), 2);    /* from 2023-12-31 */
    assert_int_equal(jk_ih_years_since("2023-02", MAR_1_2026, CST), 3); /* from 2023-02-28 */
    assert_int_equal(jk_ih_years_since("2023-03", MAR_1_2026, CST), 2); /* from 2023-03-31 */
    assert_int_equal(jk_ih_years_since("2023-03-01T09:00:00+08:00", MAR_1_2026, CST), 3);
    /* the future is 0 years; nonsense is -1 */
    assert_int_equal(jk_ih_years_since("2030-01-01", MAR_1_2026, CST), 0);
    assert_int_equal(jk_ih_years_since("2023-02-30", MAR_1_2026, CST), -1);
    assert_int_equal(jk_ih_years_since("20-1-1", MAR_1_2026, CST), -1);
    assert_int_equal(jk_ih_years_since("", MAR_1_2026, CST), -1);
    assert_int_equal(jk_ih_years_since(NULL, MAR_1_2026, CST), -1);
    assert_int_equal(jk_ih_years_since("2023-13", MAR_1_2026, CST), -1);
}

static void test_window(void **state)
{
    (void)state;
    int64_t ms;
    /* a date ends with its last local millisecond */
    assert_int_equal(jk_ih_instant("2026-02-28", CST, &ms), JK_OK);
    assert_true(ms == MAR_1_2026 - 1);
    assert_int_equal(jk_ih_instant("2026-02", CST, &ms), JK_OK);
    assert_true(ms == MAR_1_2026 - 1);
    assert_int_equal(jk_ih_instant("2026-02-28T10:00:00Z", CST, &ms), JK_OK);
    assert_true(ms == MAR_1_2026 - 6 * 3600000LL);
    assert_int_equal(jk_ih_instant("yesterday", CST, &ms), JK_EINVAL);
    assert_int_equal(jk_ih_instant(NULL, CST, &ms), JK_EINVAL);
    /* within 365 days: the bound itself counts, a millisecond before does not */
    assert_true(jk_ih_within_days(MAR_1_2026 - 365 * DAY, MAR_1_2026, 365));
    assert_false(jk_ih_within_days(MAR_1_2026 - 365 * DAY - 1, MAR_1_2026, 365));
    assert_true(jk_ih_within_days(MAR_1_2026, MAR_1_2026, 365));
    assert_false(jk_ih_within_days(MAR_1_2026 + 2 * DAY, MAR_1_2026, 365)); /* not yet */
}

static void test_attachments(void **state)
{
    (void)state;
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag d;
    jk_diag_init(&d, a);
    struct jk_ih_call k = {a, &d, MAR_1_2026, NULL};
    /* "\x89PNG\r\n\x1a\n" and four more bytes */
    struct jk_ih_attachment png = {"image/png", "iVBORw0KGgoAAAAA", NULL, 0};
    assert_int_equal(jk_ih_attachment(&k, "image", 0, 1024, &png), JK_OK);
    assert_int_equal(png.n_bytes, 12);
    struct jk_ih_attachment small = png;
    assert_int_equal(jk_ih_attachment(&k, "image", 0, 11, &small), JK_ETOOBIG);
    struct jk_ih_attachment lying = {"image/jpeg", "iVBORw0KGgoAAAAA", NULL, 0};
    assert_int_equal(jk_ih_attachment(&k, "image", 0, 1024, &lying), JK_EINVAL);
    struct jk_ih_attachment pdf = {"application/pdf", "JVBERi0xLjQK", NULL, 0}; /* %PDF-1.4 */
    assert_int_equal(jk_ih_attachment(&k, "image", 0, 1024, &pdf), JK_EINVAL);  /* chat: no */
    assert_int_equal(jk_ih_attachment(&k, "record", 1, 1024, &pdf), JK_OK);     /* record: yes */
    struct jk_ih_attachment bad = {"image/png", "iVBORw0KGgo*AAAA", NULL, 0};
    assert_int_equal(jk_ih_attachment(&k, "image", 0, 1024, &bad), JK_EINVAL);
    struct jk_ih_attachment none = {NULL, "iVBORw0KGgoAAAAA", NULL, 0};
    assert_int_equal(jk_ih_attachment(&k, "image", 0, 1024, &none), JK_EINVAL);
    assert_string_equal(d.head->expr, "image");
    jk_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules_file),  cmocka_unit_test(test_rules_refused),
        cmocka_unit_test(test_years),       cmocka_unit_test(test_window),
        cmocka_unit_test(test_attachments),
    };
    if (jk_crypto_init()) return 1;
    return cmocka_run_group_tests_name("internet hospital visits", tests, NULL, NULL);
}
