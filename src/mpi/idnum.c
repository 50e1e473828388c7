/* idnum.c - identity documents: validation, normalisation, what the number tells; the GB/T
 * 2260 table of rules/regions.json. */
#include "mpi/idnum.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "core/rules.h"

#define MAX_REGIONS   8192
#define MAX_INPUT     64
#define CST_OFFSET_MS (8LL * 3600 * 1000) /* China Standard Time, UTC+8, no summer time */
#define MS_PER_DAY    86400000LL
#define FIRST_YEAR    1900 /* no birth date before this is believed */

static const struct {
    const char *name, *label;
} doc_types[JK_N_DOC_TYPES] = {
    [JK_DOC_CITIZEN_ID] = {"citizen-id", "居民身份证"},
    [JK_DOC_HMT_PERMIT] = {"hmt-residence-permit", "港澳台居民居住证"},
    [JK_DOC_FOREIGNER] = {"foreigner-permanent-residence", "外国人永久居留身份证"},
    [JK_DOC_PASSPORT] = {"passport", "护照"},
    [JK_DOC_HKMO_PERMIT] = {"hk-macao-travel-permit", "港澳居民来往内地通行证"},
    [JK_DOC_TW_PERMIT] = {"taiwan-travel-permit", "台湾居民来往大陆通行证"},
};

const char *jk_idnum_type_name(enum jk_idnum_type t)
{
    return (unsigned)t < JK_N_DOC_TYPES ? doc_types[t].name : "";
}

const char *jk_idnum_type_label(enum jk_idnum_type t)
{
    return (unsigned)t < JK_N_DOC_TYPES ? doc_types[t].label : "";
}

int jk_idnum_type_by_name(const char *name, enum jk_idnum_type *out)
{
    for (int i = 0; name && i < JK_N_DOC_TYPES; i++)
        if (!strcmp(doc_types[i].name, name)) {
            *out = (enum jk_idnum_type)i;
            return 1;
        }
    return 0;
}

/* ---- the GB/T 2260 table ---- */

struct region {
    int code;           /* 350102 */
    int is_retired;     /* has an end date: accepted in numbers, which keep the code at issue */
    int is_prefs_known; /* a province whose prefecture-level codes the table lists in full */
};

static struct {
    pthread_mutex_t lock; /* guards the lazy load only */
    struct region *regions;
    size_t n;
    int is_ready, is_tried;
} tab = {.lock = PTHREAD_MUTEX_INITIALIZER};

const char *jk_idnum_rules_path(void)
{
    const char *p = getenv("JIANKANG_REGION_RULES");
    return p && *p ? p : "rules/regions.json";
}

static int region_cmp(const void *a, const void *b)
{
    int x = ((const struct region *)a)->code, y = ((const struct region *)b)->code;
    return (x > y) - (x < y);
}

static const struct region *region_find(int code)
{
    struct region key = {.code = code};
    return bsearch(&key, tab.regions, tab.n, sizeof key, region_cmp);
}

/* One rule "region.NNNNNN": {"name", "end"?, "prefectures_complete"?}. */
static jk_rc region_value(struct json_object *v, const char *path, const char *ptr, int code,
                          struct region *out, char *err, size_t errlen)
{
    static const char *const keys[] = {"name", "end", "prefectures_complete", NULL};
    struct json_object *m;
    jk_rc rc;
    if (!json_object_is_type(v, json_type_object))
        return jk_rules_fail(err, errlen, path, ptr, "must be an object {\"name\": ...}");
    if ((rc = jk_rules_known_keys(v, keys, path, ptr, err, errlen))) return rc;
    if (!json_object_object_get_ex(v, "name", &m) || !json_object_is_type(m, json_type_string) ||
        !json_object_get_string_len(m))
        return jk_rules_fail(err, errlen, path, ptr, "needs the division's name");
    memset(out, 0, sizeof *out);
    out->code = code;
    if (json_object_object_get_ex(v, "end", &m)) {
        if (!json_object_is_type(m, json_type_string) ||
            !jk_rules_is_date(json_object_get_string(m)))
            return jk_rules_fail(err, errlen, path, ptr, "end must be a date YYYY-MM-DD");
        out->is_retired = 1;
    }
    if (json_object_object_get_ex(v, "prefectures_complete", &m)) {
        if (!json_object_is_type(m, json_type_boolean) || code % 10000)
            return jk_rules_fail(err, errlen, path, ptr,
                                 "prefectures_complete is true or false, on a province only");
        out->is_prefs_known = json_object_get_boolean(m);
    }
    return JK_OK;
}

static jk_rc load_regions(struct json_object *rules, const char *path, struct region *regs,
                          size_t *n, char *err, size_t errlen)
{
    char ptr[256];
    *n = 0;
    json_object_object_foreach(rules, code, rule)
    {
        struct json_object *v;
        jk_rc rc = jk_rules_rule(rule, path, code, ptr, sizeof ptr, &v, err, errlen);
        if (rc) return rc;
        const char *c = code + 7;
        int ok = !strncmp(code, "region.", 7) && strlen(c) == 6;
        for (int i = 0; ok && i < 6; i++)
            ok = isdigit((unsigned char)c[i]) && !(i == 0 && c[i] == '0');
        if (!ok)
            return jk_rules_fail(err, errlen, path, ptr,
                                 "the rule code must be region.NNNNNN (a GB/T 2260 code)");
        if (*n == MAX_REGIONS)
            return jk_rules_fail(err, errlen, path, ptr, "more than %d codes", MAX_REGIONS);
        int num = (int)strtol(c, NULL, 10);
        if ((rc = region_value(v, path, ptr, num, &regs[*n], err, errlen))) return rc;
        (*n)++;
    }
    qsort(regs, *n, sizeof *regs, region_cmp);
    for (size_t i = 0; i < *n; i++) {
        int c = regs[i].code;
        if (c % 10000 && !bsearch(&(struct region){.code = c / 10000 * 10000}, regs, *n,
                                  sizeof *regs, region_cmp))
            return jk_rules_fail(err, errlen, path, "/rules",
                                 "region.%06d has no province region.%02d0000", c, c / 10000);
    }
    return JK_OK;
}

jk_rc jk_idnum_init(const char *path, char *err, size_t errlen)
{
    struct json_object *root = NULL, *rules;
    if (!path) path = jk_idnum_rules_path();
    jk_rc rc = jk_rules_parse(path, &root, err, errlen);
    if (rc) return rc;
    struct region *regs = malloc(MAX_REGIONS * sizeof *regs);
    size_t n = 0;
    if (!regs)
        rc = JK_ENOMEM;
    else if (!(rc = jk_rules_top(root, path, "regions", &rules, err, errlen)))
        rc = load_regions(rules, path, regs, &n, err, errlen);
    json_object_put(root);
    if (rc) {
        free(regs);
        return rc;
    }
    pthread_mutex_lock(&tab.lock);
    free(tab.regions);
    tab.regions = regs;
    tab.n = n;
    tab.is_ready = tab.is_tried = 1;
    pthread_mutex_unlock(&tab.lock);
    return JK_OK;
}

/* The table, read from the default path on first use when nobody installed one. */
static int table_ready(void)
{
    pthread_mutex_lock(&tab.lock);
    int is_tried = tab.is_tried;
    tab.is_tried = 1;
    pthread_mutex_unlock(&tab.lock);
    if (!is_tried) {
        char err[512];
        if (jk_idnum_init(NULL, err, sizeof err)) fprintf(stderr, "jiankang: %s\n", err);
    }
    pthread_mutex_lock(&tab.lock);
    int ok = tab.is_ready;
    pthread_mutex_unlock(&tab.lock);
    return ok;
}

/* ---- messages ---- */

/* Sets e to code and its message, zh and en being literal formats of the same arguments. */
#define FAIL(e, c, zf, ef, ...)                                                                    \
    ((void)(snprintf((e)->zh, sizeof(e)->zh, zf, __VA_ARGS__) < 0),                                \
     (void)(snprintf((e)->en, sizeof(e)->en, ef, __VA_ARGS__) < 0), (e)->code = (c), JK_EINVAL)
#define FAIL0(e, c, zf, ef) FAIL(e, c, "%s" zf, "%s" ef, "")

void jk_idnum_err_birth_mismatch(struct jk_idnum_err *e, const char *given, const char *in_id)
{
    (void)FAIL(e, "idnum.birth_date_mismatch", "出生日期 %s 与证件号码中的出生日期 %s 不一致",
               "the birth date %s differs from the one in the document number (%s)", given, in_id);
}

void jk_idnum_err_sex_mismatch(struct jk_idnum_err *e, char given, char in_id)
{
    snprintf(e->zh, sizeof e->zh, "性别（%s）与证件号码中的性别（%s）不一致",
             given == 'M' ? "男" : "女", in_id == 'M' ? "男" : "女");
    snprintf(e->en, sizeof e->en, "the sex %s differs from the one in the document number (%s)",
             given == 'M' ? "male" : "female", in_id == 'M' ? "male" : "female");
    e->code = "idnum.sex_mismatch";
}

/* ---- dates ---- */

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

/* The civil date of a day count since 1970-01-01 as YYYYMMDD. */
static long ymd_of_days(int64_t z)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    return (long)((y + (m <= 2)) * 10000 + m * 100 + d);
}

/* The day count since 1970-01-01 of a civil date. */
static int64_t days_of_ymd(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400, mp = m > 2 ? m - 3 : m + 9;
    int64_t doy = (153 * mp + 2) / 5 + d - 1, doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t today_days_cst(int64_t now_ms)
{
    int64_t t = now_ms + CST_OFFSET_MS;
    return t >= 0 ? t / MS_PER_DAY : (t - MS_PER_DAY + 1) / MS_PER_DAY;
}

static long today_cst(int64_t now_ms)
{
    return ymd_of_days(today_days_cst(now_ms));
}

static int all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return 0;
    return 1;
}

static int digits_at(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* Checks the 8 digits YYYYMMDD at s and writes YYYY-MM-DD into out->birth. */
static jk_rc birth_of(const char *s, int64_t now_ms, struct jk_idnum *out, struct jk_idnum_err *e)
{
    int y = digits_at(s, 4), m = digits_at(s + 4, 2), d = digits_at(s + 6, 2);
    if (m < 1 || m > 12 || d < 1 || d > days_in_month(y, m))
        return FAIL(e, "idnum.birth_date", "号码中的出生日期 %.8s 不是真实的日期",
                    "the birth date %.8s in the number is not a real date", s);
    if (y < FIRST_YEAR)
        return FAIL(e, "idnum.birth_date_early", "号码中的出生日期 %.8s 早于 1900 年",
                    "the birth date %.8s in the number is before 1900", s);
    if ((long)y * 10000 + m * 100 + d > today_cst(now_ms))
        return FAIL(e, "idnum.birth_date_future", "号码中的出生日期 %.8s 晚于今天",
                    "the birth date %.8s in the number is after today", s);
    memcpy(out->birth, s, 4); /* YYYY-MM-DD */
    out->birth[4] = '-';
    memcpy(out->birth + 5, s + 4, 2);
    out->birth[7] = '-';
    memcpy(out->birth + 8, s + 6, 2);
    out->birth[10] = '\0';
    return JK_OK;
}

jk_rc jk_idnum_birth_date(const char *iso, int64_t now_ms, long *age_days, struct jk_idnum_err *e)
{
    char d8[9];
    memset(e, 0, sizeof *e);
    if (!iso || strlen(iso) != 10 || iso[4] != '-' || iso[7] != '-' || !all_digits(iso, 4) ||
        !all_digits(iso + 5, 2) || !all_digits(iso + 8, 2))
        return FAIL0(e, "idnum.birth_date_format", "出生日期应写作 YYYY-MM-DD",
                     "the birth date is written YYYY-MM-DD");
    memcpy(d8, iso, 4);
    memcpy(d8 + 4, iso + 5, 2);
    memcpy(d8 + 6, iso + 8, 2);
    d8[8] = '\0';
    struct jk_idnum scratch;
    jk_rc rc = birth_of(d8, now_ms, &scratch, e);
    if (rc) {
        /* the same words, about the date given rather than the one in a number */
        if (!strcmp(e->code, "idnum.birth_date"))
            (void)FAIL(e, e->code, "出生日期 %s 不是真实的日期",
                       "the birth date %s is not a real date", iso);
        else if (!strcmp(e->code, "idnum.birth_date_future"))
            (void)FAIL(e, e->code, "出生日期 %s 晚于今天", "the birth date %s is after today", iso);
        else
            (void)FAIL(e, e->code, "出生日期 %s 早于 1900 年", "the birth date %s is before 1900",
                       iso);
        return rc;
    }
    if (age_days)
        *age_days =
            (long)(today_days_cst(now_ms) -
                   days_of_ymd(digits_at(d8, 4), digits_at(d8 + 4, 2), digits_at(d8 + 6, 2)));
    return JK_OK;
}

/* ---- GB 11643 ---- */

char jk_idnum_check_char(const char *d)
{
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    static const char map[] = "10X98765432";
    int s = 0;
    for (int i = 0; i < 17; i++)
        s += (d[i] - '0') * w[i];
    return map[s % 11];
}

/* 17 digits and a digit or X. */
static int is_gb11643_shape(const char *n)
{
    return all_digits(n, 17) && (isdigit((unsigned char)n[17]) || n[17] == 'X');
}

/* label: what the number is called in Chinese ("公民身份号码"). */
static jk_rc check_digit(const char *n, const char *label, struct jk_idnum_err *e)
{
    char want = jk_idnum_check_char(n);
    if (n[17] == want) return JK_OK;
    return FAIL(e, "idnum.check_digit", "%s校验位错误，应为 %c",
                "%.0scheck digit is wrong: it should be %c", label, want);
}

/* The address code of a citizen ID: its province must exist; its prefecture too when the
 * table knows the province's prefectures in full; the county code itself is not checked (the
 * code at issue may have been retired since, or be missing from the table). */
static jk_rc check_region(const char *n, struct jk_idnum_err *e)
{
    int code = digits_at(n, 6), prov = code / 10000 * 10000, pref = code / 100 * 100;
    const struct region *p = region_find(prov);
    if (!p || code / 10000 >= 71) /* 71, 81, 82: residence permits, not citizen IDs */
        return FAIL(e, "idnum.region_province", "地址码 %.6s 的省级代码 %.2s 不存在",
                    "the address code %.6s has no known province (%.2s)", n, n);
    if (p->is_prefs_known && pref != prov && !region_find(pref))
        return FAIL(e, "idnum.region_prefecture", "地址码 %.6s 的地级代码 %.4s 不存在",
                    "the address code %.6s has no known prefecture (%.4s)", n, n);
    return JK_OK;
}

/* The rest of an 18-character number laid out as a citizen ID (citizen IDs, residence
 * permits): a real birth date, the check character; the sex from the sequence. */
static jk_rc check_18(const char *n, const char *label, int64_t now_ms, struct jk_idnum *out,
                      struct jk_idnum_err *e)
{
    if (!is_gb11643_shape(n))
        return FAIL(e, "idnum.chars", "%s应为 17 位数字加 1 位数字或 X",
                    "%.0sthe number must be 17 digits and a digit or X", label);
    jk_rc rc = birth_of(n + 6, now_ms, out, e);
    if (!rc) rc = check_digit(n, label, e);
    if (!rc) out->sex = (n[16] - '0') % 2 ? 'M' : 'F';
    return rc;
}

static jk_rc check_citizen(char *n, size_t len, int64_t now_ms, struct jk_idnum *out,
                           struct jk_idnum_err *e)
{
    if (len == 15) { /* the legacy number: YYMMDD of the 1900s, no check character */
        if (!all_digits(n, 15))
            return FAIL0(e, "idnum.chars", "15 位旧号码应全为数字",
                         "a 15-digit legacy number has digits only");
        char up[19];
        memcpy(up, n, 6);
        memcpy(up + 6, "19", 2);
        memcpy(up + 8, n + 6, 9);
        up[17] = jk_idnum_check_char(up);
        up[18] = '\0';
        memcpy(n, up, sizeof up);
        out->is_upgraded = 1;
        len = 18;
    }
    if (len != 18)
        return FAIL(e, "idnum.length", "公民身份号码应为 18 位（或 15 位旧号码），实为 %zu 位",
                    "a citizen ID number has 18 characters (or 15 for a legacy number), not %zu",
                    len);
    if (!is_gb11643_shape(n))
        return FAIL0(e, "idnum.chars", "公民身份号码应为 17 位数字加 1 位数字或 X",
                     "a citizen ID number is 17 digits and a digit or X");
    jk_rc rc = check_region(n, e);
    return rc ? rc : check_18(n, "公民身份号码", now_ms, out, e);
}

static jk_rc check_hmt(const char *n, size_t len, int64_t now_ms, struct jk_idnum *out,
                       struct jk_idnum_err *e)
{
    if (len != 18)
        return FAIL(e, "idnum.length", "港澳台居民居住证号码应为 18 位，实为 %zu 位",
                    "a residence permit number has 18 characters, not %zu", len);
    if (strncmp(n, "810000", 6) && strncmp(n, "820000", 6) && strncmp(n, "830000", 6))
        return FAIL0(e, "idnum.prefix", "港澳台居民居住证号码应以 810000、820000 或 830000 开头",
                     "a residence permit number starts with 810000, 820000 or 830000");
    return check_18(n, "居住证号码", now_ms, out, e);
}

/* The 2023 card: 9, the province of issue, a 3-digit nationality code, the birth date, a
 * sequence and a GB 11643 check digit. The 2017 card: 3 letters and 12 digits, format only
 * (its check algorithm is not published; unverified). */
static jk_rc check_foreigner(const char *n, size_t len, int64_t now_ms, struct jk_idnum *out,
                             struct jk_idnum_err *e)
{
    if (len == 15) {
        if (!isupper((unsigned char)n[0]) || !isupper((unsigned char)n[1]) ||
            !isupper((unsigned char)n[2]) || !all_digits(n + 3, 12))
            return FAIL0(e, "idnum.format",
                         "2017 版外国人永久居留身份证号码应为 3 个字母加 12 位数字",
                         "a 2017 foreigner's permanent residence number is 3 letters and 12 "
                         "digits");
        return JK_OK;
    }
    if (len != 18 || n[0] != '9')
        return FAIL0(e, "idnum.format",
                     "外国人永久居留身份证号码应为以 9 开头的 18 位（2023 版）或 15 位（2017 版）",
                     "a foreigner's permanent residence number has 18 characters starting with "
                     "9 (2023) or 15 (2017)");
    if (!is_gb11643_shape(n))
        return FAIL0(e, "idnum.chars", "号码应为 17 位数字加 1 位数字或 X",
                     "the number must be 17 digits and a digit or X");
    if (!region_find(digits_at(n + 1, 2) * 10000) || digits_at(n + 1, 2) >= 71)
        return FAIL(e, "idnum.region_province", "号码中的受理省份代码 %.2s 不存在",
                    "the province of issue %.2s in the number is not known", n + 1);
    jk_rc rc = birth_of(n + 6, now_ms, out, e);
    return rc ? rc : check_digit(n, "永久居留身份证号码", e);
}

static int all_alnum(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isupper((unsigned char)s[i]) && !isdigit((unsigned char)s[i])) return 0;
    return 1;
}

/* A passport number: 5 to 17 letters and digits (ICAO Doc 9303 gives 9 in the machine
 * readable zone, longer numbers go on in its optional field); a Chinese passport (CHN) is a
 * letter, a letter or digit, and 7 digits (E12345678, EA1234567, G12345678; [P]). */
static jk_rc check_passport(const char *n, size_t len, const char *country, struct jk_idnum *out,
                            struct jk_idnum_err *e)
{
    if (len < 5 || len > 17 || !all_alnum(n, len))
        return FAIL0(e, "idnum.format", "护照号码应为 5 至 17 位字母或数字",
                     "a passport number is 5 to 17 letters and digits");
    if (!country) return JK_OK;
    if (strlen(country) != 3 || !isalpha((unsigned char)country[0]) ||
        !isalpha((unsigned char)country[1]) || !isalpha((unsigned char)country[2]))
        return FAIL0(e, "idnum.country", "签发国家应为 ISO 3166-1 三字母代码（如 CHN）",
                     "the issuing country is an ISO 3166-1 alpha-3 code (such as CHN)");
    for (size_t i = 0; i < 3; i++)
        out->country[i] = (char)toupper((unsigned char)country[i]);
    out->country[3] = '\0';
    if (!strcmp(out->country, "CHN") &&
        (len != 9 || !isupper((unsigned char)n[0]) || !all_digits(n + 2, 7)))
        return FAIL0(e, "idnum.format", "中国护照号码应为 1 个字母、1 位字母或数字和 7 位数字",
                     "a Chinese passport number is a letter, a letter or digit, and 7 digits");
    return JK_OK;
}

/* H or M and 8 digits; the 10-digit form of newer cards is accepted too (unverified). */
static jk_rc check_hkmo(const char *n, size_t len, struct jk_idnum_err *e)
{
    if ((n[0] == 'H' || n[0] == 'M') && (len == 9 || len == 11) && all_digits(n + 1, len - 1))
        return JK_OK;
    return FAIL0(e, "idnum.format", "港澳居民来往内地通行证号码应为 H 或 M 加 8 位（或 10 位）数字",
                 "a Hong Kong or Macao travel permit number is H or M and 8 (or 10) digits");
}

static jk_rc check_tw(const char *n, size_t len, struct jk_idnum_err *e)
{
    if (len == 8 && all_digits(n, 8)) return JK_OK;
    return FAIL0(e, "idnum.format", "台湾居民来往大陆通行证号码应为 8 位数字",
                 "a Taiwan travel permit number is 8 digits");
}

jk_rc jk_idnum_check(enum jk_idnum_type t, const char *number, const char *country, int64_t now_ms,
                     struct jk_idnum *out, struct jk_idnum_err *err)
{
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    out->type = t;
    const char *p = number ? number : "";
    size_t len = strlen(p);
    while (len && isspace((unsigned char)*p)) {
        p++;
        len--;
    }
    while (len && isspace((unsigned char)p[len - 1]))
        len--;
    if (!len) return FAIL0(err, "idnum.empty", "证件号码为空", "the document number is empty");
    if (len > MAX_INPUT || len >= JK_IDNUM_MAX)
        return FAIL0(err, "idnum.length", "证件号码过长", "the document number is too long");
    char *n = out->number;
    for (size_t i = 0; i < len; i++)
        n[i] = (char)toupper((unsigned char)p[i]); /* x and X alike */
    n[len] = '\0';
    if ((t == JK_DOC_CITIZEN_ID || t == JK_DOC_FOREIGNER) && !table_ready()) return JK_EINTERNAL;
    switch (t) {
    case JK_DOC_CITIZEN_ID: return check_citizen(n, len, now_ms, out, err);
    case JK_DOC_HMT_PERMIT: return check_hmt(n, len, now_ms, out, err);
    case JK_DOC_FOREIGNER: return check_foreigner(n, len, now_ms, out, err);
    case JK_DOC_PASSPORT: return check_passport(n, len, country, out, err);
    case JK_DOC_HKMO_PERMIT: return check_hkmo(n, len, err);
    case JK_DOC_TW_PERMIT: return check_tw(n, len, err);
    case JK_N_DOC_TYPES: break;
    }
    return JK_EINTERNAL;
}
