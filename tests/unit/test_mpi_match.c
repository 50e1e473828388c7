/* test_mpi_match.c - the matching core of the person index: names folded (Traditional,
 * Simplified and pinyin spellings of one name are one), the features of a sealed Patient,
 * Fellegi-Sunter scores at their edges, blocking keys shared by the variations of a record,
 * the link decision, the rules file checked strictly, and the quality of automatic links on a
 * generated population (pairwise precision >= 0.99 and recall >= 0.95; figures in
 * docs/internals/mpi.md, "Matching quality"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../mpi_population.c"
#include "auth/protect.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/diag.h"
#include "mpi/match.h"

#define RULES    "rules/mpi.json"
#define ID_RULES "rules/identity.json"
#define CITIZEN  "urn:oid:2.16.156.10011.1.3"
#define PASSPORT "https://jiankang.example/fhir/sid/passport"

static struct jk_mpi_rules *rules;

static jk_keys *platform_keys;

static int group_setup(void **state)
{
    (void)state;
    char err[1024] = "";
    unsigned char master[JK_MASTER_BYTES];
    memset(master, 0x33, sizeof master);
    if (jk_mpi_names_init(err, sizeof err) || jk_mpi_rules_load(RULES, &rules, err, sizeof err) ||
        jk_keys_from(master, NULL, &platform_keys) ||
        jk_protect_init(platform_keys, ID_RULES, err, sizeof err)) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    jk_mpi_rules_free(rules);
    jk_keys_free(platform_keys);
    return 0;
}

static struct jk_mpi_rec folded(const char *name)
{
    struct jk_mpi_rec r;
    memset(&r, 0, sizeof r);
    assert_int_equal(jk_mpi_fold_name(name, &r), JK_OK);
    return r;
}

/* ---- names ---- */

static void test_fold_han_and_pinyin(void **state)
{
    (void)state;
    static const char *const han_forms[] = {"张伟", "張偉", "张 伟", "張　偉"};
    for (size_t i = 0; i < sizeof han_forms / sizeof han_forms[0]; i++) {
        struct jk_mpi_rec r = folded(han_forms[i]);
        assert_string_equal(r.han, "张伟");
        assert_string_equal(r.pinyin, "zhang wei");
    }
    static const char *const latin_forms[] = {"Zhang Wei",    "ZHANG Wei", "zhang  wei",
                                              " Zhang\tWei ", "Zhāng Wěi", "Ｚｈａｎｇ Ｗｅｉ",
                                              "Zhang-Wei"};
    for (size_t i = 0; i < sizeof latin_forms / sizeof latin_forms[0]; i++) {
        struct jk_mpi_rec r = folded(latin_forms[i]);
        assert_string_equal(r.han, "");
        assert_string_equal(r.pinyin, "zhang wei");
    }
}

static void test_fold_special_names(void **state)
{
    (void)state;
    struct jk_mpi_rec r = folded("歐陽娜娜");
    assert_string_equal(r.han, "欧阳娜娜");
    assert_string_equal(r.pinyin, "ou yang na na");
    /* Surname readings of the first character: 单 shan, 曾 zeng. */
    assert_string_equal(folded("单雄信").pinyin, "shan xiong xin");
    assert_string_equal(folded("曾国藩").pinyin, "zeng guo fan");
    /* ü written as passports write it. */
    assert_string_equal(folded("吕布").pinyin, "lu bu");
    assert_string_equal(folded("Lyu Bu").pinyin, "lu bu");
    assert_string_equal(folded("LV Bu").pinyin, "lu bu");
    /* Transcribed names with a middle dot; Latin names with diacritics. */
    r = folded("买买提·艾力");
    assert_string_equal(r.han, "买买提艾力");
    assert_string_equal(r.pinyin, "mai mai ti ai li");
    assert_string_equal(folded("José Müller-Lüdenscheidt").pinyin, "jose muller ludenscheidt");
    /* A mixed name has no Han form. */
    r = folded("李a明");
    assert_string_equal(r.han, "");
    assert_string_equal(r.pinyin, "li a ming");
}

static void test_fold_empty_and_bad(void **state)
{
    (void)state;
    struct jk_mpi_rec r;
    memset(&r, 'x', sizeof r);
    assert_int_equal(jk_mpi_fold_name("", &r), JK_OK);
    assert_string_equal(r.han, "");
    assert_string_equal(r.pinyin, "");
    assert_int_equal(jk_mpi_fold_name(NULL, &r), JK_OK);
    assert_string_equal(r.pinyin, "");
    r = folded("  ·  ");
    assert_string_equal(r.pinyin, "");
    assert_string_equal(r.han, "");
    assert_int_equal(jk_mpi_fold_name("Zh\xff"
                                      "ang",
                                      &r),
                     JK_EINVAL);
    assert_string_equal(r.pinyin, "");
    char longname[400];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(jk_mpi_fold_name(longname, &r), JK_EINVAL);
    /* 30 Han characters: pinyin kept to what fits, no Han form past its limit. */
    char many[100] = "";
    for (int i = 0; i < 30; i++)
        memcpy(many + 3 * i, "张", 4);
    r = folded(many);
    assert_string_equal(r.han, "");
    assert_true(strlen(r.pinyin) > 0 && strlen(r.pinyin) < JK_MPI_PY_MAX);
}

static void test_fold_region(void **state)
{
    (void)state;
    char reg[JK_MPI_REGION_MAX];
    static const char *const forms[] = {"杭州", "杭州市", "杭 州", "杭州市 "};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        assert_int_equal(jk_mpi_fold_region(forms[i], reg), JK_OK);
        assert_string_equal(reg, "杭州");
    }
    assert_int_equal(jk_mpi_fold_region("臺北市", reg), JK_OK);
    assert_string_equal(reg, "台北");
    assert_int_equal(jk_mpi_fold_region("Hang Zhou", reg), JK_OK);
    assert_string_equal(reg, "hangzhou");
    assert_int_equal(jk_mpi_fold_region("市", reg), JK_OK);
    assert_string_equal(reg, "市");
    assert_int_equal(jk_mpi_fold_region(NULL, reg), JK_OK);
    assert_string_equal(reg, "");
}

/* The transliterator is cloned per thread: threads folding at once agree with one alone. */
static void *fold_many(void *arg)
{
    int *is_ok = arg;
    *is_ok = 1;
    for (int i = 0; i < 300; i++) {
        struct jk_mpi_rec r;
        if (jk_mpi_fold_name(i % 2 ? "張秀英" : "Xiuying Zhang", &r) ||
            strcmp(r.pinyin, i % 2 ? "zhang xiu ying" : "xiuying zhang"))
            *is_ok = 0;
    }
    return NULL;
}

static void test_fold_threads(void **state)
{
    (void)state;
    pthread_t t[4];
    int is_ok[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, fold_many, &is_ok[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_true(is_ok[i]);
    }
}

/* ---- the features of a Patient ---- */

static struct json_object *sealed(const char *text)
{
    char *s = strdup(text);
    assert_non_null(s);
    for (char *p = s; *p; p++)
        if (*p == '\'') *p = '"';
    struct json_object *o = json_tokener_parse(s);
    free(s);
    assert_non_null(o);
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag d;
    jk_diag_init(&d, a);
    assert_int_equal(jk_protect_seal(o, &d), JK_OK);
    jk_arena_free(a);
    return o;
}

static void test_rec_of_patient(void **state)
{
    (void)state;
    struct json_object *p = sealed(
        "{'resourceType':'Patient','identifier':["
        "{'system':'" PASSPORT "','value':'E12345678'},"
        "{'system':'" CITIZEN "','value':'330102199003071234'}],"
        "'name':[{'use':'old','text':'张三'},{'use':'official','family':'張','given':['秀','英']}],"
        "'gender':'female','birthDate':'1990-03-07',"
        "'telecom':[{'system':'email','value':'a@b.cn'},{'system':'phone','value':'13812345678',"
        "'use':'old'},{'system':'phone','value':'13900001111','use':'mobile'}],"
        "'address':[{'use':'work','city':'宁波市'},{'use':'home','district':'西湖区'},"
        "{'use':'home','city':'杭州市'}]}");
    struct jk_mpi_rec r;
    assert_int_equal(jk_mpi_rec_of_patient(p, &r), JK_OK);
    assert_string_equal(r.han, "张秀英");
    assert_string_equal(r.pinyin, "zhang xiu ying");
    assert_string_equal(r.birth, "1990-03-07");
    assert_int_equal(r.sex, 'F');
    assert_string_equal(r.region, "西湖区");
    assert_int_equal(strlen(r.id_key), JK_PROTECT_CODE_LEN);
    assert_int_equal(strlen(r.phone_key), JK_PROTECT_CODE_LEN);
    /* The citizen ID is the key, not the passport listed first; the mobile, not the old
     * number: the same numbers in another Patient give the same codes. */
    struct json_object *q =
        sealed("{'resourceType':'Patient','identifier':[{'system':'" CITIZEN
               "','value':'330102199003071234'}],'name':[{'text':'Zhang Xiuying'}],"
               "'gender':'male','birthDate':'1990','telecom':[{'system':'sms',"
               "'value':'13900001111'}],'address':[{'city':'杭州'}]}");
    struct jk_mpi_rec s;
    assert_int_equal(jk_mpi_rec_of_patient(q, &s), JK_OK);
    assert_string_equal(s.id_key, r.id_key);
    assert_string_equal(s.phone_key, r.phone_key);
    assert_string_equal(s.han, "");
    assert_string_equal(s.pinyin, "zhang xiuying");
    assert_string_equal(s.birth, "1990");
    assert_int_equal(s.sex, 'M');
    assert_string_equal(s.region, "杭州");
    json_object_put(p);
    json_object_put(q);
    /* Nothing usable: all empty, no error. Clear (unsealed) numbers are not keys. */
    struct json_object *e = json_tokener_parse(
        "{\"resourceType\":\"Patient\",\"gender\":\"unknown\",\"birthDate\":\"1990-02-30\","
        "\"name\":[{\"use\":\"nickname\",\"text\":\"小张\"},{\"given\":[]}],"
        "\"identifier\":[{\"system\":\"" CITIZEN "\",\"value\":\"330102199003071234\"}],"
        "\"telecom\":[{\"system\":\"phone\",\"value\":\"13900001111\"}]}");
    assert_int_equal(jk_mpi_rec_of_patient(e, &s), JK_OK);
    assert_string_equal(s.pinyin, "");
    assert_string_equal(s.birth, "");
    assert_int_equal(s.sex, 0);
    assert_string_equal(s.id_key, "");
    assert_string_equal(s.phone_key, "");
    assert_string_equal(s.region, "");
    json_object_put(e);
}

/* ---- scores ---- */

static struct jk_mpi_rec rec_of(const char *name, const char *birth, char sex, const char *phone,
                                const char *region, const char *id)
{
    struct jk_mpi_rec r = folded(name);
    snprintf(r.birth, sizeof r.birth, "%s", birth);
    r.sex = sex;
    snprintf(r.phone_key, sizeof r.phone_key, "%s", phone);
    snprintf(r.region, sizeof r.region, "%s", region);
    snprintf(r.id_key, sizeof r.id_key, "%s", id);
    return r;
}

static int level(enum jk_mpi_field f, const struct jk_mpi_rec *a, const struct jk_mpi_rec *b)
{
    int lv[JK_MPI_N_FIELDS], lv2[JK_MPI_N_FIELDS];
    jk_mpi_levels(a, b, lv);
    jk_mpi_levels(b, a, lv2);
    assert_memory_equal(lv, lv2, sizeof lv); /* symmetric */
    return lv[f];
}

static void test_name_levels(void **state)
{
    (void)state;
    struct jk_mpi_rec zw = folded("张伟"), zw_t = folded("張偉"), latin = folded("ZHANG Wei"),
                      swapped = folded("Wei Zhang"), homophone = folded("张玮"),
                      other = folded("张芳"), typo = folded("Zhang Wie"), empty = folded("");
    assert_int_equal(level(JK_MPI_NAME, &zw, &zw_t), 1);
    assert_int_equal(level(JK_MPI_NAME, &zw, &latin), 2);
    assert_int_equal(level(JK_MPI_NAME, &zw, &homophone), 2);
    assert_int_equal(level(JK_MPI_NAME, &zw, &swapped), 3);
    assert_int_equal(level(JK_MPI_NAME, &latin, &swapped), 3);
    assert_int_equal(level(JK_MPI_NAME, &zw, &typo), 3);
    assert_int_equal(level(JK_MPI_NAME, &zw, &other), JK_MPI_DISAGREE);
    assert_int_equal(level(JK_MPI_NAME, &zw, &empty), JK_MPI_MISSING);
    /* Compound surnames: the syllables, whatever the spelling splits them into. */
    struct jk_mpi_rec oy = folded("欧阳娜娜"), oy_l = folded("Ouyang Nana"),
                      oy_s = folded("Nana Ouyang");
    assert_int_equal(level(JK_MPI_NAME, &oy, &oy_l), 2);
    assert_int_equal(level(JK_MPI_NAME, &oy, &oy_s), 3);
    /* One character apart is another name (twins 王子涵 and 王子轩); short pinyin one letter
     * apart is another name (li na, li ma). */
    struct jk_mpi_rec a3 = folded("王子涵"), b3 = folded("王子轩");
    assert_int_equal(level(JK_MPI_NAME, &a3, &b3), JK_MPI_DISAGREE);
    struct jk_mpi_rec lina = folded("Li Na"), lima = folded("Li Ma");
    assert_int_equal(level(JK_MPI_NAME, &lina, &lima), JK_MPI_DISAGREE);
}

static void test_birth_levels(void **state)
{
    (void)state;
    struct jk_mpi_rec a = rec_of("", "1990-03-07", 0, "", "", ""),
                      same = rec_of("", "1990-03-07", 0, "", "", ""),
                      swap = rec_of("", "1990-07-03", 0, "", "", ""),
                      digit = rec_of("", "1991-03-07", 0, "", "", ""),
                      year = rec_of("", "1990-11-21", 0, "", "", ""),
                      partial = rec_of("", "1990", 0, "", "", ""),
                      month = rec_of("", "1990-03", 0, "", "", ""),
                      other_month = rec_of("", "1990-04", 0, "", "", ""),
                      other = rec_of("", "1985-03-07", 0, "", "", ""),
                      none = rec_of("", "", 0, "", "", "");
    assert_int_equal(level(JK_MPI_BIRTH, &a, &same), 1);
    assert_int_equal(level(JK_MPI_BIRTH, &a, &swap), 2);
    assert_int_equal(level(JK_MPI_BIRTH, &a, &digit), 3);
    assert_int_equal(level(JK_MPI_BIRTH, &a, &year), JK_MPI_DISAGREE);
    assert_int_equal(level(JK_MPI_BIRTH, &a, &partial), 4);
    assert_int_equal(level(JK_MPI_BIRTH, &a, &month), 4);
    assert_int_equal(level(JK_MPI_BIRTH, &a, &other_month), JK_MPI_DISAGREE);
    assert_int_equal(level(JK_MPI_BIRTH, &partial, &other_month), 4);
    assert_int_equal(level(JK_MPI_BIRTH, &a, &other), JK_MPI_DISAGREE);
    assert_int_equal(level(JK_MPI_BIRTH, &a, &none), JK_MPI_MISSING);
}

#define ID1 "bi:1111111111111111111111111111111111111111111111111111111111111111"
#define ID2 "bi:2222222222222222222222222222222222222222222222222222222222222222"
#define PH1 "bi:aaaa111111111111111111111111111111111111111111111111111111111111"
#define PH2 "bi:bbbb111111111111111111111111111111111111111111111111111111111111"

static void test_scores(void **state)
{
    (void)state;
    double t_auto = jk_mpi_threshold_auto(rules), t_review = jk_mpi_threshold_review(rules);
    assert_true(t_auto > t_review);
    struct jk_mpi_rec a = rec_of("张伟", "1990-03-07", 'M', PH1, "杭州", ID1);
    /* Everything agrees: certain, and the weights add up. */
    double full = jk_mpi_score(rules, &a, &a);
    assert_true(full >= t_auto);
    double sum = 0;
    int lv[JK_MPI_N_FIELDS];
    jk_mpi_levels(&a, &a, lv);
    for (int f = 0; f < JK_MPI_N_FIELDS; f++)
        sum += jk_mpi_weight(rules, (enum jk_mpi_field)f, lv[f]);
    assert_true(fabs(sum - full) < 1e-9);
    /* A missing field weighs nothing: the score of an empty record is 0. */
    struct jk_mpi_rec empty = rec_of("", "", 0, "", "", "");
    assert_true(fabs(jk_mpi_score(rules, &a, &empty)) < 1e-12);
    for (int f = 0; f < JK_MPI_N_FIELDS; f++) {
        assert_true(jk_mpi_weight(rules, (enum jk_mpi_field)f, JK_MPI_MISSING) == 0);
        assert_true(jk_mpi_weight(rules, (enum jk_mpi_field)f, JK_MPI_DISAGREE) < 0);
        assert_true(jk_mpi_weight(rules, (enum jk_mpi_field)f, 1) > 0);
        assert_true(jk_mpi_weight(rules, (enum jk_mpi_field)f, 9) == 0);
    }
    /* The same identity number alone links; another identity number keeps apart what agrees on
     * everything else (a twin with the family's phone, or a namesake born the same day). */
    struct jk_mpi_rec only_id = rec_of("", "", 0, "", "", ID1);
    assert_true(jk_mpi_score(rules, &a, &only_id) >= t_auto);
    struct jk_mpi_rec other_id = rec_of("张伟", "1990-03-07", 'M', PH1, "杭州", ID2);
    assert_true(jk_mpi_score(rules, &a, &other_id) < t_auto);
    /* The common variations of one person stay certain with the rest agreeing. */
    static const char *const names[] = {"張偉", "Zhang Wei", "ZHANG WEI", "Wei Zhang"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct jk_mpi_rec b = rec_of(names[i], "1990-03-07", 'M', PH2, "杭州", "");
        assert_true(jk_mpi_score(rules, &a, &b) >= t_auto);
    }
    struct jk_mpi_rec swapped = rec_of("张伟", "1990-07-03", 'M', PH1, "杭州", "");
    assert_true(jk_mpi_score(rules, &a, &swapped) >= t_auto);
    /* A namesake born the same year in the same city is not certain, nor a review. */
    struct jk_mpi_rec namesake = rec_of("张伟", "1990-11-21", 'M', PH2, "杭州", "");
    assert_true(jk_mpi_score(rules, &a, &namesake) < t_review);
    /* Another name, same date, same phone (a twin): not certain. */
    struct jk_mpi_rec twin = rec_of("张强", "1990-03-07", 'M', PH1, "杭州", "");
    assert_true(jk_mpi_score(rules, &a, &twin) < t_auto);
    /* Symmetric. */
    assert_true(jk_mpi_score(rules, &a, &twin) == jk_mpi_score(rules, &twin, &a));
}

static void test_grades_and_decide(void **state)
{
    (void)state;
    double t_auto = jk_mpi_threshold_auto(rules), t_review = jk_mpi_threshold_review(rules);
    assert_int_equal(jk_mpi_grade_of(rules, t_auto), JK_MPI_CERTAIN);
    assert_int_equal(jk_mpi_grade_of(rules, t_review), JK_MPI_POSSIBLE);
    assert_int_equal(jk_mpi_grade_of(rules, t_review - 0.01), JK_MPI_NONE);
    assert_string_equal(jk_mpi_grade_name(JK_MPI_CERTAIN), "certain");
    assert_string_equal(jk_mpi_grade_name(JK_MPI_PROBABLE), "probable");
    assert_string_equal(jk_mpi_grade_name(JK_MPI_POSSIBLE), "possible");
    assert_string_equal(jk_mpi_grade_name(JK_MPI_NONE), "certainly-not");
    const char *person;
    double score;
    /* Nothing: a new person. */
    assert_int_equal(jk_mpi_decide(rules, NULL, 0, &person, &score), JK_MPI_NONE);
    assert_null(person);
    /* One person certain (its best record counts), another below. */
    struct jk_mpi_cand c[] = {{"p1", t_review + 1}, {"p2", t_auto - 1}, {"p1", t_auto + 5}};
    assert_int_equal(jk_mpi_decide(rules, c, 3, &person, &score), JK_MPI_CERTAIN);
    assert_string_equal(person, "p1");
    assert_true(score == t_auto + 5);
    /* Two persons certain: review, with the best. */
    struct jk_mpi_cand two[] = {{"p1", t_auto + 1}, {"p2", t_auto + 3}};
    assert_int_equal(jk_mpi_decide(rules, two, 2, &person, &score), JK_MPI_PROBABLE);
    assert_string_equal(person, "p2");
    /* Below review: a new person, no person named. */
    struct jk_mpi_cand low[] = {{"p1", t_review - 1}};
    assert_int_equal(jk_mpi_decide(rules, low, 1, &person, &score), JK_MPI_NONE);
    assert_null(person);
    struct jk_mpi_cand mid[] = {{"p1", t_review}};
    assert_int_equal(jk_mpi_decide(rules, mid, 1, &person, &score), JK_MPI_POSSIBLE);
    assert_string_equal(person, "p1");
}

/* ---- blocking ---- */

static int share_block(const struct jk_mpi_rec *a, const struct jk_mpi_rec *b)
{
    char ka[JK_MPI_N_BLOCKS][JK_MPI_BLOCK_MAX], kb[JK_MPI_N_BLOCKS][JK_MPI_BLOCK_MAX];
    jk_mpi_blocks(a, ka);
    jk_mpi_blocks(b, kb);
    for (int i = 0; i < JK_MPI_N_BLOCKS; i++)
        for (int j = 0; j < JK_MPI_N_BLOCKS; j++)
            if (ka[i][0] && !strcmp(ka[i], kb[j])) return 1;
    return 0;
}

static void test_blocks(void **state)
{
    (void)state;
    struct jk_mpi_rec a = rec_of("张秀英", "1990-03-07", 'F', PH1, "杭州", "");
    /* Each common variation, with the phone changed too, still shares a block. */
    static const struct {
        const char *name, *birth;
    } vars[] = {
        {"張秀英", "1990-03-07"}, {"Xiuying Zhang", "1990-03-07"}, {"ZHANG XIUYING", "1990-03-07"},
        {"张秀莹", "1990-03-07"}, {"张秀英", "1990-07-03"},        {"张秀芳", "1990-03-07"},
        {"张秀英", "1990-03-17"}, {"Zhang Xiuyin", "1990-03-07"},  {"Xiuying Zhang", "1990-07-03"},
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        struct jk_mpi_rec b = rec_of(vars[i].name, vars[i].birth, 'F', PH2, "", "");
        if (!share_block(&a, &b))
            fail_msg("no block shared with %s %s", vars[i].name, vars[i].birth);
    }
    /* A changed name, or a wrong year, with the same phone: the phone block. */
    struct jk_mpi_rec y = rec_of("张秀英", "1980-03-07", 'F', PH1, "", "");
    assert_true(share_block(&a, &y));
    struct jk_mpi_rec c = rec_of("张芳", "1985-01-01", 'F', PH1, "", "");
    assert_true(share_block(&a, &c));
    /* What cannot be a key is "". */
    char k[JK_MPI_N_BLOCKS][JK_MPI_BLOCK_MAX];
    struct jk_mpi_rec empty = rec_of("", "", 0, "", "", "");
    jk_mpi_blocks(&empty, k);
    for (int i = 0; i < JK_MPI_N_BLOCKS; i++)
        assert_string_equal(k[i], "");
    struct jk_mpi_rec d = rec_of("", "", 0, "", "", ""), e = rec_of("", "", 0, "", "", "");
    assert_false(share_block(&d, &e));
}

/* ---- the rules file ---- */

static jk_rc load_text(const char *text, char *err, size_t errlen)
{
    char path[] = "/tmp/jk_mpi_rules_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct jk_mpi_rules *r = NULL;
    jk_rc rc = jk_mpi_rules_load(path, &r, err, errlen);
    unlink(path);
    jk_mpi_rules_free(r);
    return rc;
}

/* The value object of rule code in root (the shipped rules). */
static struct json_object *value_of(struct json_object *root, const char *code)
{
    struct json_object *list, *rule, *v;
    assert_true(json_object_object_get_ex(root, "rules", &list));
    assert_true(json_object_object_get_ex(list, code, &rule));
    assert_true(json_object_object_get_ex(rule, "value", &v));
    return v;
}

static struct json_object *level_of(struct json_object *root, const char *code, const char *lv)
{
    struct json_object *o;
    assert_true(json_object_object_get_ex(value_of(root, code), lv, &o));
    return o;
}

/* The shipped rules changed by case k; NULL past the last case. *expect: what err says. */
static struct json_object *broken_rules(int k, const char **expect)
{
    struct json_object *root = json_object_from_file(RULES), *list, *o;
    assert_non_null(root);
    assert_true(json_object_object_get_ex(root, "rules", &list));
    switch (k) {
    case 0:
        json_object_object_add(root, "ruleSet", json_object_new_string("identity"));
        *expect = "/ruleSet: must be \"mpi\"";
        break;
    case 1:
        json_object_object_get_ex(list, "field.sex", &o);
        json_object_object_add(list, "field.gender", json_object_get(o));
        json_object_object_del(list, "field.sex");
        *expect = "/rules/field.gender: unknown rule 'field.gender'";
        break;
    case 2:
        o = value_of(root, "field.sex");
        json_object_object_add(o, "same", json_object_get(level_of(root, "field.sex", "agree")));
        *expect = "/rules/field.sex/value: unknown member 'same'";
        break;
    case 3:
        json_object_object_add(level_of(root, "field.sex", "agree"), "m",
                               json_object_new_double(1.5));
        *expect = "/rules/field.sex/value/agree: 'm' must be a probability";
        break;
    case 4:
        json_object_object_add(level_of(root, "field.phone", "agree"), "u",
                               json_object_new_string("0.001"));
        *expect = "/rules/field.phone/value/agree: 'u' must be a probability";
        break;
    case 5:
        json_object_object_get_ex(list, "threshold.certain", &o);
        json_object_object_add(o, "value", json_object_new_string("x"));
        *expect = "/rules/threshold.certain/value: must be a number";
        break;
    case 6:
        json_object_object_get_ex(list, "field.name", &o);
        json_object_object_add(o, "effective", json_object_new_string("2025-13-01"));
        *expect = "/rules/field.name/effective";
        break;
    case 7:
        json_object_object_add(level_of(root, "field.name", "han"), "m",
                               json_object_new_double(0.9));
        json_object_object_add(level_of(root, "field.name", "pinyin"), "m",
                               json_object_new_double(0.2));
        *expect = "/rules/field.name/value: the m (and the u) of the levels must add up";
        break;
    case 8:
        json_object_object_get_ex(list, "threshold.possible", &o);
        json_object_object_add(o, "value", json_object_new_double(1000));
        *expect = "certain >= probable >= possible";
        break;
    case 9:
        json_object_object_del(list, "field.name");
        *expect = "/rules/field.name: the rule is missing";
        break;
    case 10:
        json_object_object_del(value_of(root, "field.birth"), "year");
        *expect = "/rules/field.birth/value/year: the level is missing";
        break;
    default: json_object_put(root); return NULL;
    }
    return root;
}

static void test_rules_file(void **state)
{
    (void)state;
    char err[1024];
    struct jk_mpi_rules *r = NULL;
    assert_int_equal(jk_mpi_rules_load(RULES, &r, err, sizeof err), JK_OK);
    jk_mpi_rules_free(r);
    assert_int_equal(jk_mpi_rules_load("/nonexistent/mpi.json", &r, err, sizeof err), JK_ENOTFOUND);
    assert_null(r);
    const char *expect = NULL;
    struct json_object *root;
    for (int k = 0; (root = broken_rules(k, &expect)); k++) {
        err[0] = '\0';
        jk_rc rc = load_text(json_object_to_json_string(root), err, sizeof err);
        if (rc != JK_EINVAL || !strstr(err, expect)) fail_msg("case %d: rc %d: %s", k, rc, err);
        json_object_put(root);
    }
}

/* ---- the quality of automatic links on a generated population ---- */

#define N_PERSONS 20000
#define N_DUPS    5000
#define SEED      20261123

struct table { /* block key -> records: open addressing, keys owned */
    char **keys;
    size_t **recs, *n_recs, *cap_recs, cap;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static size_t *table_get(struct table *t, const char *key, size_t *n, int is_insert)
{
    size_t i = hash_str(key) & (t->cap - 1);
    while (t->keys[i] && strcmp(t->keys[i], key))
        i = (i + 1) & (t->cap - 1);
    if (!t->keys[i]) {
        if (!is_insert) {
            *n = 0;
            return NULL;
        }
        t->keys[i] = strdup(key);
        assert_non_null(t->keys[i]);
    }
    *n = t->n_recs[i];
    return is_insert ? (size_t *)(uintptr_t)i : t->recs[i];
}

static void table_add(struct table *t, const char *key, size_t rec)
{
    size_t n;
    size_t i = (size_t)(uintptr_t)table_get(t, key, &n, 1);
    if (t->n_recs[i] == t->cap_recs[i]) {
        t->cap_recs[i] = t->cap_recs[i] ? 2 * t->cap_recs[i] : 4;
        t->recs[i] = realloc(t->recs[i], t->cap_recs[i] * sizeof *t->recs[i]);
        assert_non_null(t->recs[i]);
    }
    t->recs[i][t->n_recs[i]++] = rec;
}

static void table_free(struct table *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        free(t->keys[i]);
        free(t->recs[i]);
    }
    free(t->keys);
    free(t->recs);
    free(t->n_recs);
    free(t->cap_recs);
}

/* A stand-in for the blind index code of a number (the test has no keys to spare per record). */
static void fake_code(const char *s, char out[JK_MPI_KEY_MAX])
{
    out[0] = '\0';
    if (*s) snprintf(out, JK_MPI_KEY_MAX, "bi:%016llx", (unsigned long long)hash_str(s));
}

/* The features of a generated record as the index takes them from its Patient. */
static void features(const struct jk_pop_rec *p, struct jk_mpi_rec *r)
{
    char name[128];
    memset(r, 0, sizeof *r);
    jk_pop_name(p, name);
    assert_int_equal(jk_mpi_fold_name(name, r), JK_OK);
    memcpy(r->birth, p->birth, sizeof r->birth);
    r->sex = p->sex;
    fake_code(p->phone, r->phone_key);
    fake_code(p->idnum, r->id_key);
    assert_int_equal(jk_mpi_fold_region(p->city, r->region), JK_OK);
}

struct sim {
    size_t n;
    struct jk_pop_rec *pop;   /* [n]: the generated records */
    struct jk_mpi_rec *rec;   /* [n]: their features */
    size_t *cluster;          /* [n]: the person the index gave each record */
    char (*cluster_name)[16]; /* [n]: the names of persons */
    size_t n_grade[4];
    double seconds;
};

/* Adds every record, in a shuffled order, as the index does on every Patient write: the
 * candidates sharing a blocking key or the identity number, scored, decided; linked when
 * certain, else a new person. */
static void simulate(struct sim *s)
{
    struct table t = {0};
    t.cap = 1;
    while (t.cap < s->n * 8)
        t.cap <<= 1;
    t.keys = calloc(t.cap, sizeof *t.keys);
    t.recs = calloc(t.cap, sizeof *t.recs);
    t.n_recs = calloc(t.cap, sizeof *t.n_recs);
    t.cap_recs = calloc(t.cap, sizeof *t.cap_recs);
    size_t *order = malloc(s->n * sizeof *order), *seen = calloc(s->n, sizeof *seen);
    struct jk_mpi_cand *cands = malloc(s->n * sizeof *cands);
    assert_true(t.keys && t.recs && t.n_recs && t.cap_recs && order && seen && cands);
    struct rng r = rng_of(SEED, 99, 0);
    for (size_t i = 0; i < s->n; i++)
        order[i] = i;
    for (size_t i = s->n - 1; i > 0; i--) {
        size_t j = below(&r, i + 1), x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    for (size_t k = 0; k < s->n; k++) {
        size_t i = order[k], n_cands = 0;
        char keys[JK_MPI_N_BLOCKS + 1][JK_MPI_BLOCK_MAX];
        jk_mpi_blocks(&s->rec[i], keys);
        snprintf(keys[JK_MPI_N_BLOCKS], JK_MPI_BLOCK_MAX, "i:%s", s->rec[i].id_key);
        if (!s->rec[i].id_key[0]) keys[JK_MPI_N_BLOCKS][0] = '\0';
        for (int b = 0; b <= JK_MPI_N_BLOCKS; b++) {
            size_t n;
            const size_t *list = keys[b][0] ? table_get(&t, keys[b], &n, 0) : NULL;
            for (size_t x = 0; list && x < n; x++) {
                size_t j = list[x];
                if (seen[j] == k + 1) continue;
                seen[j] = k + 1;
                cands[n_cands].person = s->cluster_name[s->cluster[j]];
                cands[n_cands++].score = jk_mpi_score(rules, &s->rec[i], &s->rec[j]);
            }
        }
        const char *person;
        double score;
        enum jk_mpi_grade g = jk_mpi_decide(rules, cands, n_cands, &person, &score);
        s->n_grade[g]++;
        s->cluster[i] = g == JK_MPI_CERTAIN ? (size_t)strtoul(person + 1, NULL, 10) : i;
        snprintf(s->cluster_name[i], sizeof s->cluster_name[i], "p%zu", i);
        for (int b = 0; b <= JK_MPI_N_BLOCKS; b++)
            if (keys[b][0]) table_add(&t, keys[b], i);
    }
    table_free(&t);
    free(order);
    free(seen);
    free(cands);
}

static int cmp_pair(const void *x, const void *y)
{
    const size_t *a = x, *b = y;
    if (a[0] != b[0]) return a[0] < b[0] ? -1 : 1;
    return a[1] < b[1] ? -1 : a[1] > b[1];
}

/* The number of pairs of records sharing both keys (key2 NULL: key1 alone). */
static double pairs_sharing(size_t n, const size_t *key1, const size_t *key2)
{
    size_t *k = malloc(2 * n * sizeof *k);
    assert_non_null(k);
    for (size_t i = 0; i < n; i++) {
        k[2 * i] = key1[i];
        k[2 * i + 1] = key2 ? key2[i] : 0;
    }
    qsort(k, n, 2 * sizeof *k, cmp_pair);
    double pairs = 0;
    for (size_t i = 0, run = 1; i < n; i++, run++)
        if (i + 1 == n || cmp_pair(k + 2 * i, k + 2 * i + 2)) {
            pairs += (double)run * (double)(run - 1) / 2;
            run = 0;
        }
    free(k);
    return pairs;
}

static const struct jk_mpi_rec *han_base;

static int cmp_han(const void *x, const void *y)
{
    return strcmp(han_base[*(const size_t *)x].han, han_base[*(const size_t *)y].han);
}

/* The number of pairs of persons (own records) with the same Han name. */
static double pairs_sharing_han(const struct sim *s)
{
    size_t *idx = malloc(N_PERSONS * sizeof *idx);
    assert_non_null(idx);
    for (size_t i = 0; i < N_PERSONS; i++)
        idx[i] = i;
    han_base = s->rec;
    qsort(idx, N_PERSONS, sizeof *idx, cmp_han);
    double pairs = 0;
    for (size_t i = 0, run = 1; i < N_PERSONS; i++, run++)
        if (i + 1 == N_PERSONS || cmp_han(&idx[i], &idx[i + 1])) {
            pairs += (double)run * (double)(run - 1) / 2;
            run = 0;
        }
    free(idx);
    return pairs;
}

/* With JK_MPI_CALIBRATE set: the share of each agreement level among true pairs (a duplicate
 * and its person's own record: m) and among random pairs of different persons (u), the
 * figures rules/mpi.json is calibrated on. */
static void calibrate(const struct sim *s)
{
    double m[JK_MPI_N_FIELDS][JK_MPI_MAX_LEVELS + 2] = {{0}},
                                                  u[JK_MPI_N_FIELDS][JK_MPI_MAX_LEVELS + 2] = {{0}};
    double n_m = 0, n_u = 0;
    int lv[JK_MPI_N_FIELDS];
    for (size_t i = N_PERSONS; i < s->n; i++) {
        jk_mpi_levels(&s->rec[i], &s->rec[s->pop[i].person], lv);
        for (int f = 0; f < JK_MPI_N_FIELDS; f++)
            m[f][lv[f] + 1]++;
        n_m++;
    }
    struct rng r = rng_of(SEED, 98, 0);
    for (int k = 0; k < 2000000; k++) {
        size_t i = below(&r, s->n), j = below(&r, s->n);
        if (s->pop[i].person == s->pop[j].person) continue;
        jk_mpi_levels(&s->rec[i], &s->rec[j], lv);
        for (int f = 0; f < JK_MPI_N_FIELDS; f++)
            u[f][lv[f] + 1]++;
        n_u++;
    }
    for (int f = 0; f < JK_MPI_N_FIELDS; f++)
        for (int l = -1; jk_mpi_level_name((enum jk_mpi_field)f, l); l++) {
            double known_m = n_m - m[f][0], known_u = n_u - u[f][0];
            printf("calibrate %-8s %-8s m %.6f  u %.8f  (%.0f / %.0f)\n",
                   jk_mpi_field_name((enum jk_mpi_field)f),
                   jk_mpi_level_name((enum jk_mpi_field)f, l),
                   l < 0 ? m[f][0] / n_m : m[f][l + 1] / known_m,
                   l < 0 ? u[f][0] / n_u : u[f][l + 1] / known_u, m[f][l + 1], u[f][l + 1]);
        }
}

static void measure(const struct sim *s, double *precision, double *recall)
{
    size_t *truth = malloc(s->n * sizeof *truth);
    assert_non_null(truth);
    for (size_t i = 0; i < s->n; i++)
        truth[i] = s->pop[i].person;
    double right = pairs_sharing(s->n, s->cluster, truth);
    *precision = right / pairs_sharing(s->n, s->cluster, NULL);
    *recall = right / pairs_sharing(s->n, truth, NULL);
    free(truth);
}

/* With JK_MPI_CALIBRATE set: precision and recall for other values of threshold.certain. */
static void scan_thresholds(struct sim *s)
{
    struct jk_mpi_rules *saved = rules;
    for (int t = 14; t <= 32; t += 2) {
        struct json_object *root = json_object_from_file(RULES), *list, *o;
        assert_non_null(root);
        json_object_object_get_ex(root, "rules", &list);
        json_object_object_get_ex(list, "threshold.certain", &o);
        json_object_object_add(o, "value", json_object_new_int(t));
        json_object_object_get_ex(list, "threshold.probable", &o);
        json_object_object_add(o, "value", json_object_new_int(t - 4));
        json_object_object_get_ex(list, "threshold.possible", &o);
        json_object_object_add(o, "value", json_object_new_int(t - 8));
        char path[] = "/tmp/jk_mpi_rules_XXXXXX", err[1024];
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        assert_int_equal(json_object_to_file(path, root), 0);
        assert_int_equal(jk_mpi_rules_load(path, &rules, err, sizeof err), JK_OK);
        unlink(path);
        json_object_put(root);
        memset(s->n_grade, 0, sizeof s->n_grade);
        simulate(s);
        double precision, recall;
        measure(s, &precision, &recall);
        printf("threshold.certain %d: precision %.4f recall %.4f (review %zu)\n", t, precision,
               recall, s->n_grade[JK_MPI_PROBABLE] + s->n_grade[JK_MPI_POSSIBLE]);
        jk_mpi_rules_free(rules);
    }
    rules = saved;
}

static void test_population_quality(void **state)
{
    (void)state;
    struct jk_pop_params pp = {SEED, N_PERSONS, N_DUPS};
    struct jk_pop *pop;
    assert_int_equal(jk_pop_new(&pp, &pop), JK_OK);
    struct sim s = {0};
    s.n = N_PERSONS + N_DUPS;
    s.pop = calloc(s.n, sizeof *s.pop);
    s.rec = calloc(s.n, sizeof *s.rec);
    s.cluster = calloc(s.n, sizeof *s.cluster);
    s.cluster_name = calloc(s.n, sizeof *s.cluster_name);
    assert_true(s.pop && s.rec && s.cluster && s.cluster_name);
    clock_t t0 = clock();
    for (size_t i = 0; i < N_PERSONS; i++)
        jk_pop_person(pop, i, &s.pop[i]);
    for (size_t k = 0; k < N_DUPS; k++)
        jk_pop_dup(pop, k, &s.pop[N_PERSONS + k]);
    for (size_t i = 0; i < s.n; i++)
        features(&s.pop[i], &s.rec[i]);
    clock_t t1 = clock();
    simulate(&s);
    clock_t t2 = clock();

    size_t *truth = malloc(s.n * sizeof *truth);
    assert_non_null(truth);
    for (size_t i = 0; i < s.n; i++)
        truth[i] = s.pop[i].person;
    double true_pairs = pairs_sharing(s.n, truth, NULL);
    double linked_pairs = pairs_sharing(s.n, s.cluster, NULL);
    double right_pairs = pairs_sharing(s.n, s.cluster, truth);
    double precision = right_pairs / linked_pairs, recall = right_pairs / true_pairs;

    /* The name distribution: how many share the commonest names. */
    size_t n_same_name = 0;
    for (size_t i = 1; i < N_PERSONS; i++)
        if (!strcmp(s.rec[i].han, "张伟") || !strcmp(s.rec[i].han, "王芳")) n_same_name++;
    printf("population: %d persons, %d duplicate records (seed %d); 张伟 or 王芳: %zu persons; "
           "same Han name as another person: %.0f pairs\n",
           N_PERSONS, N_DUPS, SEED, n_same_name, pairs_sharing_han(&s));
    printf("decisions: certain %zu, probable %zu, possible %zu, new person %zu\n",
           s.n_grade[JK_MPI_CERTAIN], s.n_grade[JK_MPI_PROBABLE], s.n_grade[JK_MPI_POSSIBLE],
           s.n_grade[JK_MPI_NONE]);
    printf("pairs: true %.0f, linked %.0f, linked rightly %.0f: precision %.4f, recall %.4f\n",
           true_pairs, linked_pairs, right_pairs, precision, recall);
    /* Recall per variation: a duplicate is found when it is with its person's own record. */
    static const char *const var_names[JK_POP_N_VARS] = {
        "traditional", "latin",  "given-first", "homophone", "name-typo", "date-swap", "date-digit",
        "no-date",     "no-sex", "new-phone",   "no-phone",  "no-region", "moved",     "year-only"};
    for (int v = 0; v < JK_POP_N_VARS; v++) {
        size_t n = 0, found = 0;
        for (size_t i = N_PERSONS; i < s.n; i++)
            if (s.pop[i].var & (1u << v)) {
                n++;
                found += s.cluster[i] == s.cluster[s.pop[i].person];
            }
        printf("  %-12s %5zu duplicates, %5.1f%% linked\n", var_names[v], n,
               n ? 100.0 * (double)found / (double)n : 0);
    }
    printf("time: generating and folding %.2f s, indexing %.2f s\n",
           (double)(t1 - t0) / CLOCKS_PER_SEC, (double)(t2 - t1) / CLOCKS_PER_SEC);
    assert_true(precision >= 0.99);
    assert_true(recall >= 0.95);
    if (getenv("JK_MPI_CALIBRATE")) {
        calibrate(&s);
        scan_thresholds(&s);
    }
    free(truth);
    free(s.pop);
    free(s.rec);
    free(s.cluster);
    free(s.cluster_name);
    jk_pop_free(pop);
}

/* The generated records as Patients, sealed as a write seals them: the index takes from them
 * the features the quality test takes from the records, and the same numbers give the same
 * codes in a person's records. */
static void test_population_patients(void **state)
{
    (void)state;
    struct jk_pop_params pp = {SEED, 2000, 300};
    struct jk_pop *pop;
    assert_int_equal(jk_pop_new(&pp, &pop), JK_OK);
    struct jk_arena *a = jk_arena_new(0);
    assert_non_null(a);
    for (size_t k = 0; k < 300; k++) {
        struct jk_pop_rec g[2];
        struct jk_mpi_rec fast[2], slow[2];
        jk_pop_dup(pop, k, &g[0]);
        jk_pop_person(pop, g[0].person, &g[1]);
        for (int x = 0; x < 2; x++) {
            struct jk_buf b;
            jk_buf_init(&b, 0);
            assert_int_equal(jk_pop_patient_json(&g[x], &b), JK_OK);
            struct json_object *o = json_tokener_parse(b.p);
            if (!o) fail_msg("not JSON: %s", b.p);
            struct jk_diag d;
            jk_diag_init(&d, a);
            assert_int_equal(jk_protect_seal(o, &d), JK_OK);
            assert_int_equal(jk_mpi_rec_of_patient(o, &slow[x]), JK_OK);
            features(&g[x], &fast[x]);
            assert_string_equal(slow[x].han, fast[x].han);
            assert_string_equal(slow[x].pinyin, fast[x].pinyin);
            assert_string_equal(slow[x].birth, fast[x].birth);
            assert_int_equal(slow[x].sex, fast[x].sex);
            assert_string_equal(slow[x].region, fast[x].region);
            assert_int_equal(!slow[x].id_key[0], !g[x].idnum[0]);
            assert_int_equal(!slow[x].phone_key[0], !g[x].phone[0]);
            json_object_put(o);
            jk_buf_free(&b);
        }
        if (slow[0].id_key[0] && slow[1].id_key[0])
            assert_string_equal(slow[0].id_key, slow[1].id_key);
        if (!(g[0].var & JK_POP_NEW_PHONE) && slow[0].phone_key[0] && slow[1].phone_key[0])
            assert_string_equal(slow[0].phone_key, slow[1].phone_key);
        jk_arena_reset(a);
    }
    jk_arena_free(a);
    jk_pop_free(pop);
}

/* The generator is deterministic and random access: person i and duplicate k are the same
 * whenever and in whatever order they are made; identity numbers are valid and unique. */
static void test_population_generator(void **state)
{
    (void)state;
    struct jk_pop_params pp = {7, 50000, 100};
    struct jk_pop *p1, *p2;
    assert_int_equal(jk_pop_new(&pp, &p1), JK_OK);
    assert_int_equal(jk_pop_new(&pp, &p2), JK_OK);
    struct jk_pop_rec a, b;
    for (size_t i = 0; i < 100; i++) {
        jk_pop_dup(p1, i, &a);
        jk_pop_dup(p2, i, &b);
        assert_memory_equal(&a, &b, sizeof a);
        jk_pop_person(p1, 49999 - i, &a);
        jk_pop_person(p2, 49999 - i, &b);
        assert_memory_equal(&a, &b, sizeof a);
    }
    size_t n_id = 0;
    char(*ids)[19] = calloc(pp.n_persons, sizeof *ids);
    assert_non_null(ids);
    for (size_t i = 0; i < pp.n_persons; i++) {
        struct jk_pop_rec own;
        person_core(p1, i, &own);
        assert_int_equal(strlen(own.idnum), 18);
        assert_int_equal(own.idnum[17], gb11643_check(own.idnum));
        char birth[9];
        snprintf(birth, sizeof birth, "%.4s%.2s%.2s", own.birth, own.birth + 5, own.birth + 8);
        assert_memory_equal(own.idnum + 6, birth, 8);
        assert_int_equal((own.idnum[16] - '0') % 2, own.sex == 'M');
        memcpy(ids[n_id++], own.idnum, 19);
    }
    qsort(ids, n_id, sizeof *ids, (int (*)(const void *, const void *))strcmp);
    for (size_t i = 1; i < n_id; i++)
        if (!strcmp(ids[i - 1], ids[i])) fail_msg("identity number %zu repeated", i);
    free(ids);
    jk_pop_free(p1);
    jk_pop_free(p2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_han_and_pinyin),
        cmocka_unit_test(test_fold_special_names),
        cmocka_unit_test(test_fold_empty_and_bad),
        cmocka_unit_test(test_fold_region),
        cmocka_unit_test(test_fold_threads),
        cmocka_unit_test(test_rec_of_patient),
        cmocka_unit_test(test_name_levels),
        cmocka_unit_test(test_birth_levels),
        cmocka_unit_test(test_scores),
        cmocka_unit_test(test_grades_and_decide),
        cmocka_unit_test(test_blocks),
        cmocka_unit_test(test_rules_file),
        cmocka_unit_test(test_population_generator),
        cmocka_unit_test(test_population_patients),
        cmocka_unit_test(test_population_quality),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
