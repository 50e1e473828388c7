/* mpi_population.c - a generated population of residents and their duplicate records (see
 * mpi_population.h and docs/internals/mpi.md, "Matching quality"). */
#include "mpi_population.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <opencc/opencc.h>

#include "core/buf.h"
#include "mpi/match.h"

#define CITIZEN_ID_SYSTEM "urn:oid:2.16.156.10011.1.3"
#define MAX_PERSONS       100000000u
#define FIRST_YEAR        1940
#define N_DAYS            31047 /* 1940-01-01 .. 2024-12-31 */
#define SLOTS_PER_DAY     16000 /* 32 county codes x 500 sequence numbers */
#define SLOTS             15000 /* of them for persons who are not a twin */
#define MAX_CHARS         128   /* characters of a given-name list */

/* ---- tables ----
 * Surnames by approximate share of the population per 100,000 (public rankings of the 2020
 * census, rounded; unverified), the rest spread over rarer ones not listed. */
static const struct {
    const char *s;
    int per_100k;
} surnames[] = {
    {"王", 7120}, {"李", 7000}, {"张", 6740}, {"刘", 5100}, {"陈", 4610}, {"杨", 3220},
    {"黄", 2450}, {"赵", 2190}, {"吴", 2050}, {"周", 1940}, {"徐", 1670}, {"孙", 1540},
    {"马", 1440}, {"朱", 1260}, {"胡", 1210}, {"郭", 1150}, {"何", 1130}, {"林", 1110},
    {"高", 1060}, {"罗", 1010}, {"郑", 930},  {"梁", 910},  {"谢", 750},  {"宋", 710},
    {"唐", 700},  {"韩", 650},  {"冯", 640},  {"于", 630},  {"董", 610},  {"肖", 600},
    {"程", 590},  {"曹", 580},  {"袁", 560},  {"邓", 550},  {"许", 540},  {"傅", 530},
    {"沈", 520},  {"曾", 510},  {"彭", 500},  {"吕", 490},  {"苏", 470},  {"卢", 460},
    {"蒋", 450},  {"蔡", 440},  {"贾", 430},  {"丁", 420},  {"魏", 410},  {"薛", 400},
    {"叶", 390},  {"阎", 380},  {"余", 370},  {"潘", 360},  {"杜", 350},  {"戴", 340},
    {"夏", 330},  {"钟", 320},  {"汪", 310},  {"田", 300},  {"任", 290},  {"姜", 280},
    {"范", 270},  {"方", 260},  {"石", 250},  {"姚", 240},  {"谭", 230},  {"廖", 220},
    {"邹", 210},  {"熊", 200},  {"金", 190},  {"陆", 180},  {"郝", 170},  {"孔", 160},
    {"白", 150},  {"崔", 140},  {"康", 130},  {"毛", 120},  {"邱", 110},  {"秦", 100},
    {"江", 100},  {"史", 90},   {"顾", 90},   {"侯", 90},   {"邵", 80},   {"孟", 80},
    {"龙", 80},   {"万", 80},   {"段", 70},   {"雷", 70},   {"钱", 70},   {"汤", 70},
    {"尹", 60},   {"黎", 60},   {"易", 60},   {"常", 60},   {"武", 60},   {"乔", 60},
    {"贺", 50},   {"赖", 50},   {"龚", 50},   {"文", 50},   {"单", 40},   {"欧阳", 30},
    {"司马", 10}, {"上官", 10}, {"诸葛", 10}, {"尉迟", 5},
};
#define N_SURNAMES (sizeof surnames / sizeof surnames[0])

/* Characters of given names, most common first (drawn with Zipf weights 1/(rank+3)). */
static const char male_chars[] =
    "伟强磊军勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆帅旭宁龙林欢阳建国志文海东峰亮成晨睿博子"
    "轩泽豪然航天毅坤伦翔锋彬琦康远新春荣德兵江立永岩瑞庆民晓世家振忠光清宏兴洋凡昊辰嘉佳一"
    "铭哲逸鸿";
static const char female_chars[] =
    "芳娜敏静丽艳娟霞秀英玲桂兰燕萍红梅琳雪婷慧莉洁倩颖琴云莹欣怡佳悦涵萱雨诗梓琪璐晶妍蕾薇月"
    "珊凤华玉丹宁露洋楠可馨欢彤思嘉晴岚亭婧雯淑惠晓子一心瑶茜琦";

/* The cities of the province (Zhejiang) by approximate share of its population, and county
 * codes of GB/T 2260 in each for identity numbers. */
static const struct {
    const char *name;
    int share;
} cities[] = {
    {"杭州", 18}, {"宁波", 14}, {"温州", 14}, {"嘉兴", 8},  {"湖州", 5}, {"绍兴", 8},
    {"金华", 11}, {"衢州", 4},  {"舟山", 2},  {"台州", 10}, {"丽水", 4},
};
#define N_CITIES (sizeof cities / sizeof cities[0])
static const char *const county_codes[32] = {
    "330102", "330105", "330106", "330108", "330109", "330110", "330203", "330205",
    "330206", "330211", "330212", "330302", "330303", "330304", "330381", "330382",
    "330402", "330411", "330481", "330502", "330503", "330602", "330603", "330604",
    "330702", "330703", "330782", "330802", "330803", "330902", "331002", "331003",
};

struct chars {
    char c[MAX_CHARS][4];
    double cum[MAX_CHARS];
    int homophone[MAX_CHARS]; /* the next character of this list with the same pinyin, or -1 */
    char pinyin[MAX_CHARS][8];
    size_t n;
};

struct jk_pop {
    struct jk_pop_params p;
    uint64_t perm_a, perm_b; /* person i's day and slot: (a * i + b) mod n_persons */
    double surname_cum[N_SURNAMES];
    double city_cum[N_CITIES];
    struct chars male, female;
    opencc_t s2t;
    pthread_mutex_t lock;
};

/* ---- randomness: splitmix64, one stream per person or record ---- */

struct rng {
    uint64_t s;
};

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static struct rng rng_of(uint64_t seed, uint64_t domain, uint64_t i)
{
    struct rng r = {mix(seed ^ mix(domain)) ^ mix(i + 0x9E3779B97F4A7C15ull)};
    return r;
}

static uint64_t next_u64(struct rng *r)
{
    r->s += 0x9E3779B97F4A7C15ull;
    return mix(r->s);
}

static double uniform(struct rng *r)
{
    return (double)(next_u64(r) >> 11) * 0x1.0p-53;
}

static size_t below(struct rng *r, size_t n)
{
    return (size_t)(next_u64(r) % n);
}

/* The index drawn from cumulative weights cum[0..n) (cum[n-1] is 1). */
static size_t draw(const double *cum, size_t n, struct rng *r)
{
    double u = uniform(r);
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cum[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void cumulate(double *cum, const double *w, size_t n)
{
    double sum = 0, acc = 0;
    for (size_t i = 0; i < n; i++)
        sum += w[i];
    for (size_t i = 0; i < n; i++)
        cum[i] = (acc += w[i]) / sum;
    cum[n - 1] = 1;
}

/* ---- set-up ---- */

static jk_rc chars_init(struct chars *cs, const char *list)
{
    double w[MAX_CHARS];
    struct jk_mpi_rec rec;
    cs->n = 0;
    for (const char *p = list; *p && cs->n < MAX_CHARS; p += 3) {
        memcpy(cs->c[cs->n], p, 3);
        cs->c[cs->n][3] = '\0';
        w[cs->n] = 1.0 / (double)(cs->n + 3);
        jk_rc rc = jk_mpi_fold_name(cs->c[cs->n], &rec);
        if (rc) return rc;
        size_t len = strlen(rec.pinyin);
        if (len >= sizeof cs->pinyin[0]) len = sizeof cs->pinyin[0] - 1;
        memcpy(cs->pinyin[cs->n], rec.pinyin, len);
        cs->pinyin[cs->n][len] = '\0';
        cs->n++;
    }
    cumulate(cs->cum, w, cs->n);
    for (size_t i = 0; i < cs->n; i++) {
        cs->homophone[i] = -1;
        for (size_t k = 1; k < cs->n; k++) {
            size_t j = (i + k) % cs->n;
            if (!strcmp(cs->pinyin[i], cs->pinyin[j]) && strcmp(cs->c[i], cs->c[j])) {
                cs->homophone[i] = (int)j;
                break;
            }
        }
    }
    return JK_OK;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

jk_rc jk_pop_new(const struct jk_pop_params *p, struct jk_pop **out)
{
    double w[N_SURNAMES > N_CITIES ? N_SURNAMES : N_CITIES];
    *out = NULL;
    if (!p->n_persons || p->n_persons > MAX_PERSONS) return JK_EINVAL;
    struct jk_pop *pop = calloc(1, sizeof *pop);
    if (!pop) return JK_ENOMEM;
    pop->p = *p;
    pthread_mutex_init(&pop->lock, NULL);
    struct rng r = rng_of(p->seed, 1, 0);
    pop->perm_a = next_u64(&r) % p->n_persons | 1;
    while (gcd(pop->perm_a, p->n_persons) != 1)
        pop->perm_a = (pop->perm_a + 2) % p->n_persons;
    pop->perm_b = next_u64(&r) % p->n_persons;
    for (size_t i = 0; i < N_SURNAMES; i++)
        w[i] = surnames[i].per_100k;
    cumulate(pop->surname_cum, w, N_SURNAMES);
    for (size_t i = 0; i < N_CITIES; i++)
        w[i] = cities[i].share;
    cumulate(pop->city_cum, w, N_CITIES);
    jk_rc rc = chars_init(&pop->male, male_chars);
    if (!rc) rc = chars_init(&pop->female, female_chars);
    pop->s2t = opencc_open("s2t.json");
    if (!rc && pop->s2t == (opencc_t)-1) rc = JK_EINTERNAL;
    if (rc) {
        jk_pop_free(pop);
        return rc;
    }
    *out = pop;
    return JK_OK;
}

void jk_pop_free(struct jk_pop *pop)
{
    if (!pop) return;
    if (pop->s2t && pop->s2t != (opencc_t)-1) opencc_close(pop->s2t);
    pthread_mutex_destroy(&pop->lock);
    free(pop);
}

/* ---- persons ---- */

/* Days since 1970-01-01 of year-01-01, and the civil date of days since 1970-01-01
 * (H. Hinnant's algorithms). */
static long days_from_civil(long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long)doe - 719468;
}

static void civil_from_days(long z, int *y, int *m, int *d)
{
    z += 719468;
    long era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)((long)yoe + era * 400 + (*m <= 2));
}

/* y-m-d as YYYY-MM-DD (y in 0..9999). */
static void format_date(char out[11], int y, int m, int d)
{
    const int v[3] = {y, m, d}, width[3] = {4, 2, 2};
    size_t o = 0;
    for (int k = 0; k < 3; k++) {
        if (k) out[o++] = '-';
        for (int w = width[k] - 1, x = v[k]; w >= 0; w--, x /= 10)
            out[o + (size_t)w] = (char)('0' + x % 10);
        o += (size_t)width[k];
    }
    out[o] = '\0';
}

static int is_real_date(int y, int m, int d)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < FIRST_YEAR || y > 2024 || m < 1 || m > 12 || d < 1) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d <= mdays[m - 1] + (m == 2 && leap);
}

/* About one birth in 200 is a twin: person i (not after another twin) is the twin of i-1. */
static int is_twin_draw(const struct jk_pop *pop, size_t i)
{
    struct rng r = rng_of(pop->p.seed, 2, i);
    return i > 0 && uniform(&r) < 0.005;
}

static int is_twin(const struct jk_pop *pop, size_t i)
{
    return is_twin_draw(pop, i) && !is_twin_draw(pop, i - 1);
}

/* Some people give a family member's phone (a child's record, a spouse): person i shares the
 * number of i-1 (a twin always). */
static size_t phone_owner(const struct jk_pop *pop, size_t i)
{
    while (i > 0) {
        struct rng r = rng_of(pop->p.seed, 3, i);
        if (!is_twin(pop, i) && uniform(&r) >= 0.05) break;
        i--;
    }
    return i;
}

static void given_name(const struct chars *cs, int n_chars, struct rng *r, char *out)
{
    for (int k = 0; k < n_chars; k++)
        memcpy(out + 3 * k, cs->c[draw(cs->cum, cs->n, r)], 3);
    out[3 * n_chars] = '\0';
}

static char gb11643_check(const char *s)
{
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    for (int i = 0; i < 17; i++)
        sum += (s[i] - '0') * w[i];
    return "10X98765432"[sum % 11];
}

/* Person i without its phone and without leaving out what records may lack. */
static void person_core(const struct jk_pop *pop, size_t i, struct jk_pop_rec *out)
{
    struct rng r = rng_of(pop->p.seed, 4, i);
    int twin = is_twin(pop, i);
    struct jk_pop_rec sib;
    memset(out, 0, sizeof *out);
    out->person = i;
    if (twin) person_core(pop, i - 1, &sib);
    /* The birth date is random, yet no two persons share a date and a slot (a county code and a
     * sequence number), so no two share an identity number: person i is p = perm(i); slot
     * r = p mod SLOTS, q = p / SLOTS; day = H(r) + q. Two persons with one slot have different
     * q, so different days. A twin takes its sibling's day and a slot kept for twins. */
    uint64_t p = (pop->perm_a * (uint64_t)(twin ? i - 1 : i) + pop->perm_b) % pop->p.n_persons;
    long slot = (long)(p % SLOTS), q = (long)(p / SLOTS);
    struct rng rd = rng_of(pop->p.seed, 9, (uint64_t)slot);
    long day = (long)((below(&rd, N_DAYS) + (uint64_t)q) % N_DAYS);
    if (twin) slot = SLOTS + slot % (SLOTS_PER_DAY - SLOTS);
    int y, m, d;
    civil_from_days(days_from_civil(FIRST_YEAR, 1, 1) + day, &y, &m, &d);
    format_date(out->birth, y, m, d);
    out->sex = uniform(&r) < 0.5 ? 'M' : 'F';
    const struct chars *cs = out->sex == 'M' ? &pop->male : &pop->female;
    int n_given = uniform(&r) < (y < 1990 ? 0.35 : 0.15) ? 1 : 2;
    if (twin) {
        memcpy(out->family, sib.family, sizeof out->family);
        memcpy(out->city, sib.city, sizeof out->city);
        for (int k = 0; k < 20; k++) {
            given_name(cs, n_given, &r, out->given);
            if (strcmp(out->given, sib.given)) break;
        }
    } else {
        snprintf(out->family, sizeof out->family, "%s",
                 surnames[draw(pop->surname_cum, N_SURNAMES, &r)].s);
        snprintf(out->city, sizeof out->city, "%s", cities[draw(pop->city_cum, N_CITIES, &r)].name);
        given_name(cs, n_given, &r, out->given);
    }
    snprintf(out->idnum, sizeof out->idnum, "%.6s%04u%02u%02u%03u", county_codes[(slot + day) % 32],
             (unsigned)y % 10000u, (unsigned)m % 100u, (unsigned)d % 100u,
             (unsigned)(((slot / 32) * 2 + (out->sex == 'M')) % 1000));
    out->idnum[17] = gb11643_check(out->idnum);
    out->idnum[18] = '\0';
}

static void phone_of(const struct jk_pop *pop, size_t owner, uint64_t domain, char out[12])
{
    static const char *const prefixes[] = {"13", "15", "17", "18", "19"};
    struct rng r = rng_of(pop->p.seed, domain, owner);
    snprintf(out, 12, "%s%09llu", prefixes[below(&r, 5)],
             (unsigned long long)(next_u64(&r) % 1000000000ull));
}

void jk_pop_person(const struct jk_pop *pop, size_t i, struct jk_pop_rec *out)
{
    struct rng r = rng_of(pop->p.seed, 5, i);
    person_core(pop, i, out);
    phone_of(pop, phone_owner(pop, i), 6, out->phone);
    if (uniform(&r) < 0.30) out->idnum[0] = '\0';
    if (uniform(&r) < 0.05) out->phone[0] = '\0';
}

/* ---- duplicates ---- */

static void to_traditional(struct jk_pop *pop, char *s, size_t cap)
{
    pthread_mutex_lock(&pop->lock);
    char *t = opencc_convert_utf8(pop->s2t, s, strlen(s));
    pthread_mutex_unlock(&pop->lock);
    if (t && strlen(t) < cap) memcpy(s, t, strlen(t) + 1);
    if (t) opencc_convert_utf8_free(t);
}

/* Word w (n letters) into out capitalised (or upper-cased). */
static size_t cap_word(const char *w, size_t n, int is_upper, int is_first, char *out)
{
    for (size_t k = 0; k < n; k++)
        out[k] = (char)((is_upper || (k == 0 && is_first)) ? w[k] - 32 : w[k]);
    return n;
}

/* The name of rec in pinyin (rec->text), family and given each one word: "Zhang Xiuying",
 * "ZHANG XIUYING", "Xiuying Zhang", or the syllables apart "zhang xiu ying". */
static int latin_name(struct jk_pop_rec *rec, struct rng *r)
{
    char han[96];
    struct jk_mpi_rec f;
    snprintf(han, sizeof han, "%s%s", rec->family, rec->given);
    if (jk_mpi_fold_name(han, &f) || !f.pinyin[0]) return 0;
    size_t n_family = strlen(rec->family) / 3, word = 0;
    double u = uniform(r);
    int is_upper = u < 0.25, is_given_first = u >= 0.25 && u < 0.5, is_apart = u >= 0.9;
    char part[2][64] = {"", ""};
    size_t plen[2] = {0, 0};
    for (const char *p = f.pinyin; *p;) {
        const char *e = strchr(p, ' ');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int is_given = word >= n_family;
        int is_first = is_apart ? 0 : (is_given ? word == n_family : word == 0);
        if (is_apart && plen[is_given]) part[is_given][plen[is_given]++] = ' ';
        if (plen[is_given] + n + 2 < sizeof part[0])
            plen[is_given] += cap_word(p, n, is_upper, is_first, part[is_given] + plen[is_given]);
        part[is_given][plen[is_given]] = '\0';
        word++;
        p = e ? e + 1 : p + n;
    }
    const char *first = part[is_given_first], *second = part[!is_given_first];
    snprintf(rec->text, sizeof rec->text, "%s %s", first, second);
    rec->family[0] = rec->given[0] = '\0';
    return is_given_first ? JK_POP_LATIN | JK_POP_GIVEN_FIRST : JK_POP_LATIN;
}

/* Replaces a character of rec's given name with a homophone (is_homophone) or another one. */
static int change_given(const struct jk_pop *pop, struct jk_pop_rec *rec, int is_homophone,
                        struct rng *r)
{
    const struct chars *cs = rec->sex == 'F' ? &pop->female : &pop->male;
    size_t n = strlen(rec->given) / 3, at = below(r, n);
    for (size_t k = 0; k < n; k++) {
        size_t pos = (at + k) % n;
        size_t i = 0;
        while (i < cs->n && memcmp(cs->c[i], rec->given + 3 * pos, 3))
            i++;
        if (i == cs->n) continue;
        size_t j;
        if (is_homophone) {
            if (cs->homophone[i] < 0) continue;
            j = (size_t)cs->homophone[i];
        } else {
            j = below(r, cs->n);
            if (!strcmp(cs->pinyin[i], cs->pinyin[j])) continue;
        }
        memcpy(rec->given + 3 * pos, cs->c[j], 3);
        return is_homophone ? JK_POP_HOMOPHONE : JK_POP_NAME_TYPO;
    }
    return 0;
}

static int change_date(struct jk_pop_rec *rec, int is_swap, struct rng *r)
{
    int y = (int)strtol(rec->birth, NULL, 10), m = (int)strtol(rec->birth + 5, NULL, 10),
        d = (int)strtol(rec->birth + 8, NULL, 10);
    if (is_swap) {
        if (d > 12 || d == m) return 0;
        format_date(rec->birth, y, d, m);
        return JK_POP_DATE_SWAP;
    }
    static const int positions[] = {2, 3, 5, 6, 8, 9};
    for (int tries = 0; tries < 20; tries++) {
        char b[11];
        memcpy(b, rec->birth, sizeof b);
        int at = positions[below(r, 6)];
        b[at] = (char)('0' + (b[at] - '0' + 1 + (int)below(r, 9)) % 10);
        if (is_real_date((int)strtol(b, NULL, 10), (int)strtol(b + 5, NULL, 10),
                         (int)strtol(b + 8, NULL, 10))) {
            memcpy(rec->birth, b, sizeof b);
            return JK_POP_DATE_DIGIT;
        }
    }
    return 0;
}

void jk_pop_dup(struct jk_pop *pop, size_t k, struct jk_pop_rec *out)
{
    struct rng r = rng_of(pop->p.seed, 7, k);
    size_t person = below(&r, pop->p.n_persons);
    jk_pop_person(pop, person, out);
    unsigned var = 0;
    double u = uniform(&r);
    if (u < 0.15) {
        char before[sizeof out->family + sizeof out->given];
        snprintf(before, sizeof before, "%s%s", out->family, out->given);
        to_traditional(pop, out->family, sizeof out->family);
        to_traditional(pop, out->given, sizeof out->given);
        char after[sizeof before];
        snprintf(after, sizeof after, "%s%s", out->family, out->given);
        if (strcmp(before, after)) var |= JK_POP_TRADITIONAL;
    } else if (u < 0.33) {
        var |= (unsigned)latin_name(out, &r);
    } else if (u < 0.39) {
        var |= (unsigned)change_given(pop, out, 1, &r);
    } else if (u < 0.41) {
        var |= (unsigned)change_given(pop, out, 0, &r);
    }
    u = uniform(&r);
    if (u < 0.04)
        var |= (unsigned)change_date(out, 1, &r);
    else if (u < 0.07)
        var |= (unsigned)change_date(out, 0, &r);
    else if (u < 0.075)
        out->birth[0] = '\0', var |= JK_POP_NO_DATE;
    else if (u < 0.08)
        out->birth[4] = '\0', var |= JK_POP_YEAR_ONLY;
    if (uniform(&r) < 0.005) out->sex = 0, var |= JK_POP_NO_SEX;
    u = uniform(&r);
    if (u < 0.25)
        phone_of(pop, k, 8, out->phone), var |= JK_POP_NEW_PHONE;
    else if (u < 0.40)
        out->phone[0] = '\0', var |= JK_POP_NO_PHONE;
    u = uniform(&r);
    if (u < 0.10) {
        out->city[0] = '\0';
        var |= JK_POP_NO_REGION;
    } else if (u < 0.15) {
        const char *c = cities[draw(pop->city_cum, N_CITIES, &r)].name;
        if (strcmp(c, out->city)) var |= JK_POP_MOVED;
        snprintf(out->city, sizeof out->city, "%s", c);
    }
    struct jk_pop_rec own;
    person_core(pop, person, &own);
    memcpy(out->idnum, own.idnum, sizeof out->idnum);
    if (uniform(&r) < 0.5) out->idnum[0] = '\0';
    out->var = var;
}

/* ---- output ---- */

void jk_pop_name(const struct jk_pop_rec *rec, char out[128])
{
    if (rec->text[0])
        snprintf(out, 128, "%s", rec->text);
    else
        snprintf(out, 128, "%s%s%s", rec->family, rec->family[0] && rec->given[0] ? " " : "",
                 rec->given);
}

static jk_rc put_str(struct jk_buf *b, const char *key, const char *v)
{
    jk_rc rc = jk_buf_printf(b, "\"%s\":\"", key);
    if (!rc) rc = jk_buf_json_escape(b, v, strlen(v));
    return rc ? rc : jk_buf_puts(b, "\"");
}

jk_rc jk_pop_patient_json(const struct jk_pop_rec *rec, struct jk_buf *b)
{
    jk_rc rc = jk_buf_puts(b, "{\"resourceType\":\"Patient\"");
    if (!rc && rec->idnum[0]) {
        rc = jk_buf_puts(b, ",\"identifier\":[{\"system\":\"" CITIZEN_ID_SYSTEM "\",");
        if (!rc) rc = put_str(b, "value", rec->idnum);
        if (!rc) rc = jk_buf_puts(b, "}]");
    }
    if (!rc) rc = jk_buf_puts(b, ",\"name\":[{\"use\":\"official\",");
    if (!rc && rec->text[0]) rc = put_str(b, "text", rec->text);
    if (!rc && !rec->text[0]) {
        rc = put_str(b, "family", rec->family);
        if (!rc) rc = jk_buf_puts(b, ",\"given\":[\"");
        if (!rc) rc = jk_buf_json_escape(b, rec->given, strlen(rec->given));
        if (!rc) rc = jk_buf_puts(b, "\"]");
    }
    if (!rc) rc = jk_buf_puts(b, "}]");
    if (!rc && rec->sex)
        rc = jk_buf_printf(b, ",\"gender\":\"%s\"", rec->sex == 'M' ? "male" : "female");
    if (!rc && rec->birth[0]) rc = jk_buf_printf(b, ",\"birthDate\":\"%s\"", rec->birth);
    if (!rc && rec->phone[0])
        rc = jk_buf_printf(b,
                           ",\"telecom\":[{\"system\":\"phone\",\"value\":\"%s\","
                           "\"use\":\"mobile\"}]",
                           rec->phone);
    if (!rc && rec->city[0])
        rc = jk_buf_printf(b,
                           ",\"address\":[{\"use\":\"home\",\"city\":\"%s%s\",\"state\":"
                           "\"浙江省\",\"country\":\"CN\"}]",
                           rec->city, rec->person % 2 ? "市" : "");
    return rc ? rc : jk_buf_puts(b, "}");
}
