/* test_idnum.c - identity documents as a registration desk meets them: valid citizen IDs with
 * the birth date and sex they hold, a wrong check digit (naming the right one), impossible,
 * future and too early birth dates, unknown provinces and prefectures, retired codes kept,
 * lower-case x, the 15-digit legacy upgrade, residence permits, the foreigner's permanent
 * residence ID (2023 and 2017), passports and travel permits; each refusal with its stable
 * code and its messages in Chinese and English; the regions rules file checked strictly; and
 * the Accept-Language choice of message language. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/diag.h"
#include "mpi/idnum.h"

#define NOW_MS 1748736000000LL /* 2025-06-01T00:00:00Z: 08:00 in China */

static int setup(void **state)
{
    (void)state;
    char err[512] = "";
    jk_rc rc = jk_idnum_init("rules/regions.json", err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    return rc ? -1 : 0;
}

/* A case: type, number, country; the outcome (NULL: valid) and what a valid one holds. */
struct tcase {
    enum jk_idnum_type type;
    const char *number, *country;
    const char *code;                   /* expected refusal code, or NULL */
    const char *norm, *birth, *zh, *en; /* when valid: normalised number, birth; else words */
    char sex;
};

static void run_case(const struct tcase *c)
{
    struct jk_idnum d;
    struct jk_idnum_err e;
    jk_rc rc = jk_idnum_check(c->type, c->number, c->country, NOW_MS, &d, &e);
    if (!c->code) {
        if (rc) fprintf(stderr, "%s: refused: %s %s\n", c->number, e.code, e.en);
        assert_int_equal(rc, JK_OK);
        assert_string_equal(d.number, c->norm);
        assert_string_equal(d.birth, c->birth ? c->birth : "");
        assert_int_equal(d.sex, c->sex);
        return;
    }
    if (!rc) fprintf(stderr, "%s: accepted, expected %s\n", c->number, c->code);
    assert_int_equal(rc, JK_EINVAL);
    assert_string_equal(e.code, c->code);
    assert_true(e.zh[0] && e.en[0]);
    if (c->zh) assert_non_null(strstr(e.zh, c->zh));
    if (c->en) assert_non_null(strstr(e.en, c->en));
    assert_null(strstr(e.zh, c->number)); /* never the whole number */
    assert_null(strstr(e.en, c->number));
}

static void test_citizen_ids(void **state)
{
    (void)state;
    static const struct tcase cases[] = {
        {JK_DOC_CITIZEN_ID, "350102199003071234", NULL, NULL, "350102199003071234", "1990-03-07",
         NULL, NULL, 'M'},
        {JK_DOC_CITIZEN_ID, " 11010519491231002x ", NULL, NULL, "11010519491231002X", "1949-12-31",
         NULL, NULL, 'F'},
        /* 15-digit legacy number: 19 inserted, check character computed */
        {JK_DOC_CITIZEN_ID, "350102900307123", NULL, NULL, "350102199003071234", "1990-03-07", NULL,
         NULL, 'M'},
        /* retired codes stay valid: 崇文区 110103, 长乐市 350182, 宁德地区-era 3521xx */
        {JK_DOC_CITIZEN_ID, "110103198001010013", NULL, NULL, "110103198001010013", "1980-01-01",
         NULL, NULL, 'M'},
        {JK_DOC_CITIZEN_ID, "350182199003071236", NULL, NULL, "350182199003071236", "1990-03-07",
         NULL, NULL, 'M'},
        {JK_DOC_CITIZEN_ID, "352101198001010017", NULL, NULL, "352101198001010017", "1980-01-01",
         NULL, NULL, 'M'},
        /* refusals */
        {JK_DOC_CITIZEN_ID, "350102199003071235", NULL, "idnum.check_digit", NULL, NULL,
         "公民身份号码校验位错误，应为 4", "check digit is wrong: it should be 4", 0},
        {JK_DOC_CITIZEN_ID, "110105194912310021", NULL, "idnum.check_digit", NULL, NULL, "应为 X",
         "it should be X", 0},
        {JK_DOC_CITIZEN_ID, "350102199002301237", NULL, "idnum.birth_date", NULL, NULL, "19900230",
         "not a real date", 0},
        {JK_DOC_CITIZEN_ID, "350102203001011237", NULL, "idnum.birth_date_future", NULL, NULL,
         "晚于今天", "after today", 0},
        {JK_DOC_CITIZEN_ID, "350102189901011234", NULL, "idnum.birth_date_early", NULL, NULL,
         "1900", "before 1900", 0},
        {JK_DOC_CITIZEN_ID, "990102199003071233", NULL, "idnum.region_province", NULL, NULL, "99",
         "no known province", 0},
        {JK_DOC_CITIZEN_ID, "710000199001010015", NULL, "idnum.region_province", NULL, NULL, NULL,
         NULL, 0},
        {JK_DOC_CITIZEN_ID, "359902199003071236", NULL, "idnum.region_prefecture", NULL, NULL,
         "3599", "no known prefecture", 0},
        {JK_DOC_CITIZEN_ID, "35010219900307123", NULL, "idnum.length", NULL, NULL, "17", "not 17",
         0},
        {JK_DOC_CITIZEN_ID, "35010219900307Y234", NULL, "idnum.chars", NULL, NULL, NULL, NULL, 0},
        {JK_DOC_CITIZEN_ID, "35010290030712X", NULL, "idnum.chars", NULL, NULL, NULL, NULL, 0},
        {JK_DOC_CITIZEN_ID, "  ", NULL, "idnum.empty", NULL, NULL, NULL, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
}

static void test_other_documents(void **state)
{
    (void)state;
    static const struct tcase cases[] = {
        /* 港澳台居民居住证: citizen-ID layout, 810000/820000/830000, GB 11643 check */
        {JK_DOC_HMT_PERMIT, "810000199001010027", NULL, NULL, "810000199001010027", "1990-01-01",
         NULL, NULL, 'F'},
        {JK_DOC_HMT_PERMIT, "830000198505050048", NULL, NULL, "830000198505050048", "1985-05-05",
         NULL, NULL, 'F'},
        {JK_DOC_HMT_PERMIT, "810000199001010028", NULL, "idnum.check_digit", NULL, NULL,
         "居住证号码校验位错误，应为 7", "it should be 7", 0},
        {JK_DOC_HMT_PERMIT, "350102199003071234", NULL, "idnum.prefix", NULL, NULL, "810000",
         "810000", 0},
        /* 外国人永久居留身份证 2023: 9 + province + nationality + birth + sequence + check */
        {JK_DOC_FOREIGNER, "932682198501010017", NULL, NULL, "932682198501010017", "1985-01-01",
         NULL, NULL, 0},
        {JK_DOC_FOREIGNER, "932682198501010018", NULL, "idnum.check_digit", NULL, NULL, "应为 7",
         "it should be 7", 0},
        {JK_DOC_FOREIGNER, "992682198501010017", NULL, "idnum.region_province", NULL, NULL, NULL,
         NULL, 0},
        /* 2017: 3 letters and 12 digits, format only */
        {JK_DOC_FOREIGNER, "usa350090011234", NULL, NULL, "USA350090011234", NULL, NULL, NULL, 0},
        {JK_DOC_FOREIGNER, "US3350090011234", NULL, "idnum.format", NULL, NULL, NULL, NULL, 0},
        {JK_DOC_FOREIGNER, "832682198501010017", NULL, "idnum.format", NULL, NULL, NULL, NULL, 0},
        /* passports */
        {JK_DOC_PASSPORT, "e12345678", "chn", NULL, "E12345678", NULL, NULL, NULL, 0},
        {JK_DOC_PASSPORT, "EA1234567", "CHN", NULL, "EA1234567", NULL, NULL, NULL, 0},
        {JK_DOC_PASSPORT, "X1234567890", "USA", NULL, "X1234567890", NULL, NULL, NULL, 0},
        {JK_DOC_PASSPORT, "E1234567", "CHN", "idnum.format", NULL, NULL, "中国护照",
         "Chinese passport", 0},
        {JK_DOC_PASSPORT, "E12-45678", NULL, "idnum.format", NULL, NULL, NULL, NULL, 0},
        {JK_DOC_PASSPORT, "E12345678", "China", "idnum.country", NULL, NULL, NULL, "alpha-3", 0},
        /* travel permits */
        {JK_DOC_HKMO_PERMIT, "h12345678", NULL, NULL, "H12345678", NULL, NULL, NULL, 0},
        {JK_DOC_HKMO_PERMIT, "M1234567890", NULL, NULL, "M1234567890", NULL, NULL, NULL, 0},
        {JK_DOC_HKMO_PERMIT, "K12345678", NULL, "idnum.format", NULL, NULL, NULL, NULL, 0},
        {JK_DOC_TW_PERMIT, "12345678", NULL, NULL, "12345678", NULL, NULL, NULL, 0},
        {JK_DOC_TW_PERMIT, "1234567", NULL, "idnum.format", NULL, NULL, NULL, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
}

/* The day changes at midnight in China, not at midnight UTC. */
static void test_today_is_china_time(void **state)
{
    (void)state;
    struct jk_idnum d;
    struct jk_idnum_err e;
    /* 2025-05-31T16:30Z is 2025-06-01 00:30 in Beijing: born "today" is fine */
    int64_t now = NOW_MS - 7 * 3600 * 1000LL - 1800 * 1000LL;
    assert_int_equal(jk_idnum_check(JK_DOC_CITIZEN_ID, "350102202506010016", NULL, now, &d, &e),
                     JK_OK);
    assert_string_equal(d.birth, "2025-06-01");
    /* 2025-05-31T15:30Z is still 2025-05-31 in Beijing */
    now -= 3600 * 1000LL;
    assert_int_equal(jk_idnum_check(JK_DOC_CITIZEN_ID, "350102202506010016", NULL, now, &d, &e),
                     JK_EINVAL);
    assert_string_equal(e.code, "idnum.birth_date_future");
}

static void test_names_and_mismatch_messages(void **state)
{
    (void)state;
    enum jk_idnum_type t;
    for (int i = 0; i < JK_N_DOC_TYPES; i++) {
        assert_int_equal(jk_idnum_type_by_name(jk_idnum_type_name((enum jk_idnum_type)i), &t), 1);
        assert_int_equal(t, i);
    }
    assert_int_equal(jk_idnum_type_by_name("driving-licence", &t), 0);
    struct jk_idnum_err e;
    jk_idnum_err_birth_mismatch(&e, "1990-03-08", "1990-03-07");
    assert_string_equal(e.code, "idnum.birth_date_mismatch");
    assert_non_null(strstr(e.zh, "1990-03-07"));
    jk_idnum_err_sex_mismatch(&e, 'F', 'M');
    assert_string_equal(e.code, "idnum.sex_mismatch");
    assert_non_null(strstr(e.en, "female"));
    assert_non_null(strstr(e.zh, "男"));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_rules_file_checked(void **state)
{
    (void)state;
    char dir[] = "/tmp/jk-idnum-XXXXXX", path[64], err[512];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/regions.json", dir);
    static const struct {
        const char *text, *says;
    } bad[] = {
        {"{\"ruleSet\":\"regions\",\"description\":\"x\",\"rules\":{\"region.3501\":{\"value\":{"
         "\"name\":\"a\"},\"source\":\"s\",\"effective\":\"2020-01-01\"}}}",
         "region.NNNNNN"},
        {"{\"ruleSet\":\"regions\",\"description\":\"x\",\"rules\":{\"region.350100\":{\"value\":{"
         "\"name\":\"a\"},\"source\":\"s\",\"effective\":\"2020-01-01\"}}}",
         "no province"},
        {"{\"ruleSet\":\"regions\",\"description\":\"x\",\"rules\":{\"region.350000\":{\"value\":{"
         "\"name\":\"a\",\"end\":\"2020-1-1\"},\"source\":\"s\",\"effective\":\"2020-01-01\"}}}",
         "end must be a date"},
        {"{\"ruleSet\":\"regions\",\"description\":\"x\",\"rules\":{\"region.350000\":{\"value\":{"
         "\"name\":\"a\"},\"effective\":\"2020-01-01\"}}}",
         "source"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i].text);
        jk_rc rc = jk_idnum_init(path, err, sizeof err);
        if (rc != JK_EINVAL) fprintf(stderr, "case %zu accepted\n", i);
        assert_int_equal(rc, JK_EINVAL);
        if (!strstr(err, bad[i].says)) fprintf(stderr, "%s\n", err);
        assert_non_null(strstr(err, bad[i].says));
    }
    /* the table in use stays the good one */
    struct jk_idnum d;
    struct jk_idnum_err e;
    assert_int_equal(jk_idnum_check(JK_DOC_CITIZEN_ID, "350102199003071234", NULL, NOW_MS, &d, &e),
                     JK_OK);
    unlink(path);
    rmdir(dir);
}

static void test_accept_language(void **state)
{
    (void)state;
    assert_false(jk_diag_prefers_en(NULL));
    assert_false(jk_diag_prefers_en(""));
    assert_true(jk_diag_prefers_en("en"));
    assert_true(jk_diag_prefers_en("en-US,en;q=0.9"));
    assert_false(jk_diag_prefers_en("zh-CN,zh;q=0.9,en;q=0.8"));
    assert_true(jk_diag_prefers_en("zh;q=0.5, en-GB;q=0.8"));
    assert_false(jk_diag_prefers_en("fr"));
    assert_false(jk_diag_prefers_en("english"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_citizen_ids),
        cmocka_unit_test(test_other_documents),
        cmocka_unit_test(test_today_is_china_time),
        cmocka_unit_test(test_names_and_mismatch_messages),
        cmocka_unit_test(test_rules_file_checked),
        cmocka_unit_test(test_accept_language),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
