/* match.c - the features of a Patient record, their Fellegi-Sunter score, blocking keys and
 * the link decision; weights and thresholds from rules/mpi.json (docs/internals/mpi.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "auth/protect.h"
#include "core/rules.h"
#include "mpi/match.h"

/* The identity number of a person (GB 11643), preferred over other identity documents: the
 * blind index is keyed over the system, so a passport and a citizen ID of one person have
 * different codes. The same value as identity.system.citizen-id of rules/identity.json. */
#define CITIZEN_ID_SYSTEM "urn:oid:2.16.156.10011.1.3"
#define MARKER_ID         "jkenc:1:id:"
#define MARKER_PHONE      "jkenc:1:ph:"
#define NAME_BUF          512

/* ---- the rules ---- */

static const struct {
    const char *name, *code;
    const char *levels[JK_MPI_MAX_LEVELS + 1]; /* NULL-ended */
} fields[JK_MPI_N_FIELDS] = {
    [JK_MPI_NAME] = {"name", "field.name", {"han", "pinyin", "near", NULL}},
    [JK_MPI_BIRTH] = {"birth", "field.birth", {"exact", "swapped", "digit", "year", NULL}},
    [JK_MPI_SEX] = {"sex", "field.sex", {"agree", NULL}},
    [JK_MPI_PHONE] = {"phone", "field.phone", {"agree", NULL}},
    [JK_MPI_REGION] = {"region", "field.region", {"agree", NULL}},
    [JK_MPI_IDENTITY] = {"identity", "field.identity", {"agree", NULL}},
};

static const char *const threshold_codes[] = {"threshold.certain", "threshold.probable",
                                              "threshold.possible"};
#define N_THRESHOLDS  3
#define CERTAIN_NEEDS "certain.requires"

struct jk_mpi_rules {
    double w[JK_MPI_N_FIELDS][JK_MPI_MAX_LEVELS + 1]; /* [f][0] disagreement, [f][k] level k */
    double threshold[N_THRESHOLDS];                   /* certain, probable, possible */
    unsigned certain_needs; /* bits of the fields a certain pair must not disagree on */
};

const char *jk_mpi_rules_path(void)
{
    const char *p = getenv("JIANKANG_MPI_RULES");
    return p && *p ? p : "rules/mpi.json";
}

const char *jk_mpi_field_name(enum jk_mpi_field f)
{
    return (unsigned)f < JK_MPI_N_FIELDS ? fields[f].name : NULL;
}

static int n_levels(enum jk_mpi_field f)
{
    int n = 0;
    while (fields[f].levels[n])
        n++;
    return n;
}

const char *jk_mpi_level_name(enum jk_mpi_field f, int level)
{
    if ((unsigned)f >= JK_MPI_N_FIELDS || level < JK_MPI_MISSING || level > n_levels(f))
        return NULL;
    if (level == JK_MPI_MISSING) return "missing";
    return level == JK_MPI_DISAGREE ? "disagree" : fields[f].levels[level - 1];
}

/* A probability strictly between 0 and 1 at o's member key. */
static jk_rc probability(struct json_object *o, const char *key, const char *path, const char *ptr,
                         double *p, char *err, size_t errlen)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) ||
        !(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)) ||
        !(json_object_get_double(v) > 0 && json_object_get_double(v) < 1))
        return jk_rules_fail(err, errlen, path, ptr,
                             "'%s' must be a probability greater than 0 and less than 1", key);
    *p = json_object_get_double(v);
    return JK_OK;
}

/* The value of field f: {"<level>": {"m": p, "u": p}, ...} with every level of the field. */
static jk_rc field_value(enum jk_mpi_field f, struct json_object *v, const char *path,
                         const char *ptr, struct jk_mpi_rules *r, char *err, size_t errlen)
{
    static const char *const mu_keys[] = {"m", "u", NULL};
    char sub[320];
    double sum_m = 0, sum_u = 0;
    jk_rc rc;
    if (!json_object_is_type(v, json_type_object))
        return jk_rules_fail(err, errlen, path, ptr,
                             "must be an object of agreement levels, each {\"m\": p, \"u\": p}");
    if ((rc = jk_rules_known_keys(v, fields[f].levels, path, ptr, err, errlen))) return rc;
    for (int k = 0; fields[f].levels[k]; k++) {
        struct json_object *lv;
        double m, u;
        snprintf(sub, sizeof sub, "%s/%s", ptr, fields[f].levels[k]);
        if (!json_object_object_get_ex(v, fields[f].levels[k], &lv) ||
            !json_object_is_type(lv, json_type_object))
            return jk_rules_fail(err, errlen, path, sub,
                                 "the level is missing (an object {\"m\": p, \"u\": p})");
        if ((rc = jk_rules_known_keys(lv, mu_keys, path, sub, err, errlen)) ||
            (rc = probability(lv, "m", path, sub, &m, err, errlen)) ||
            (rc = probability(lv, "u", path, sub, &u, err, errlen)))
            return rc;
        sum_m += m;
        sum_u += u;
        r->w[f][k + 1] = log2(m / u);
    }
    if (sum_m >= 1 || sum_u >= 1)
        return jk_rules_fail(err, errlen, path, ptr,
                             "the m (and the u) of the levels must add up to less than 1: the "
                             "rest is the probability of disagreement");
    r->w[f][0] = log2((1 - sum_m) / (1 - sum_u));
    return JK_OK;
}

static int is_known_rule(const char *code)
{
    for (int f = 0; f < JK_MPI_N_FIELDS; f++)
        if (!strcmp(code, fields[f].code)) return 1;
    for (int i = 0; i < N_THRESHOLDS; i++)
        if (!strcmp(code, threshold_codes[i])) return 1;
    return !strcmp(code, CERTAIN_NEEDS);
}

/* The value of certain.requires: a list of field names, each once. */
static jk_rc needs_value(struct json_object *v, const char *path, const char *ptr,
                         struct jk_mpi_rules *r, char *err, size_t errlen)
{
    if (!json_object_is_type(v, json_type_array))
        return jk_rules_fail(err, errlen, path, ptr, "must be a list of field names");
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        struct json_object *e = json_object_array_get_idx(v, i);
        const char *name =
            json_object_is_type(e, json_type_string) ? json_object_get_string(e) : "";
        int f = 0;
        while (f < JK_MPI_N_FIELDS && strcmp(name, fields[f].name))
            f++;
        if (f == JK_MPI_N_FIELDS || (r->certain_needs & (1u << f)))
            return jk_rules_fail(err, errlen, path, ptr,
                                 "entry %zu is not a field (name, birth, sex, phone, region, "
                                 "identity) or is listed twice",
                                 i);
        r->certain_needs |= 1u << f;
    }
    return JK_OK;
}

static jk_rc rule_value(const char *code, struct json_object *v, const char *path, const char *ptr,
                        struct jk_mpi_rules *r, char *err, size_t errlen)
{
    for (int f = 0; f < JK_MPI_N_FIELDS; f++)
        if (!strcmp(code, fields[f].code))
            return field_value((enum jk_mpi_field)f, v, path, ptr, r, err, errlen);
    for (int i = 0; i < N_THRESHOLDS; i++)
        if (!strcmp(code, threshold_codes[i])) {
            if (!(json_object_is_type(v, json_type_double) ||
                  json_object_is_type(v, json_type_int)) ||
                !isfinite(json_object_get_double(v)))
                return jk_rules_fail(err, errlen, path, ptr, "must be a number (a log2 score)");
            r->threshold[i] = json_object_get_double(v);
            return JK_OK;
        }
    return needs_value(v, path, ptr, r, err, errlen);
}

static jk_rc rules_check(struct json_object *root, const char *path, struct jk_mpi_rules *r,
                         char *err, size_t errlen)
{
    struct json_object *rules, *v;
    char ptr[300];
    jk_rc rc = jk_rules_top(root, path, "mpi", &rules, err, errlen);
    if (rc) return rc;
    json_object_object_foreach(rules, code, rule)
    {
        if (!is_known_rule(code)) {
            snprintf(ptr, sizeof ptr, "/rules/%.200s", code);
            return jk_rules_fail(err, errlen, path, ptr,
                                 "unknown rule '%.200s' (known: field.name, field.birth, "
                                 "field.sex, field.phone, field.region, field.identity, "
                                 "threshold.certain, threshold.probable, threshold.possible, "
                                 "certain.requires)",
                                 code);
        }
        if ((rc = jk_rules_rule(rule, path, code, ptr, sizeof ptr, &v, err, errlen)) ||
            (rc = rule_value(code, v, path, ptr, r, err, errlen)))
            return rc;
    }
    for (int f = 0; f < JK_MPI_N_FIELDS; f++)
        if (!json_object_object_get_ex(rules, fields[f].code, &v)) {
            snprintf(ptr, sizeof ptr, "/rules/%s", fields[f].code);
            return jk_rules_fail(err, errlen, path, ptr, "the rule is missing");
        }
    for (int i = 0; i <= N_THRESHOLDS; i++)
        if (!json_object_object_get_ex(rules, i < N_THRESHOLDS ? threshold_codes[i] : CERTAIN_NEEDS,
                                       &v)) {
            snprintf(ptr, sizeof ptr, "/rules/%s",
                     i < N_THRESHOLDS ? threshold_codes[i] : CERTAIN_NEEDS);
            return jk_rules_fail(err, errlen, path, ptr, "the rule is missing");
        }
    if (!(r->threshold[0] >= r->threshold[1] && r->threshold[1] >= r->threshold[2]))
        return jk_rules_fail(err, errlen, path, "/rules",
                             "the thresholds must be certain >= probable >= possible");
    return JK_OK;
}

jk_rc jk_mpi_rules_load(const char *path, struct jk_mpi_rules **out, char *err, size_t errlen)
{
    struct json_object *root;
    *out = NULL;
    if (!path) path = jk_mpi_rules_path();
    jk_rc rc = jk_rules_parse(path, &root, err, errlen);
    if (rc) return rc;
    struct jk_mpi_rules *r = calloc(1, sizeof *r);
    if (!r)
        rc = JK_ENOMEM;
    else if ((rc = rules_check(root, path, r, err, errlen)))
        free(r);
    else
        *out = r;
    json_object_put(root);
    return rc;
}

void jk_mpi_rules_free(struct jk_mpi_rules *r)
{
    free(r);
}

double jk_mpi_threshold_auto(const struct jk_mpi_rules *r)
{
    return r->threshold[0];
}

double jk_mpi_threshold_review(const struct jk_mpi_rules *r)
{
    return r->threshold[2];
}

enum jk_mpi_grade jk_mpi_grade_of(const struct jk_mpi_rules *r, double score)
{
    if (score >= r->threshold[0]) return JK_MPI_CERTAIN;
    if (score >= r->threshold[1]) return JK_MPI_PROBABLE;
    return score >= r->threshold[2] ? JK_MPI_POSSIBLE : JK_MPI_NONE;
}

const char *jk_mpi_grade_name(enum jk_mpi_grade g)
{
    switch (g) {
    case JK_MPI_CERTAIN: return "certain";
    case JK_MPI_PROBABLE: return "probable";
    case JK_MPI_POSSIBLE: return "possible";
    case JK_MPI_NONE: break;
    }
    return "certainly-not";
}

double jk_mpi_weight(const struct jk_mpi_rules *r, enum jk_mpi_field f, int level)
{
    if ((unsigned)f >= JK_MPI_N_FIELDS || level <= JK_MPI_MISSING || level > n_levels(f)) return 0;
    return r->w[f][level];
}

/* ---- the features of a Patient ---- */

static const char *str_member(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static struct json_object *array_member(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_array))
        return NULL;
    return v;
}

/* Whether an element with this use says something about the person now. */
static int is_current_use(const char *use, int is_name)
{
    if (!use) return 1;
    if (!strcmp(use, "old")) return 0;
    return !is_name || (strcmp(use, "nickname") && strcmp(use, "anonymous"));
}

/* Appends s and a space to out (NAME_BUF bytes) at *n; 0 when it does not fit. */
static int name_append(char *out, size_t *n, const char *s)
{
    size_t len = strlen(s);
    if (!len) return 1;
    if (*n + len + 2 > NAME_BUF) return 0;
    memcpy(out + *n, s, len);
    *n += len;
    out[(*n)++] = ' ';
    out[*n] = '\0';
    return 1;
}

/* The name of the first usable HumanName, as written: its text, else family and given names
 * in that order. "" when there is none. */
static void name_of(struct json_object *patient, char out[NAME_BUF])
{
    struct json_object *names = array_member(patient, "name");
    out[0] = '\0';
    for (size_t i = 0; names && i < json_object_array_length(names); i++) {
        struct json_object *hn = json_object_array_get_idx(names, i);
        if (!json_object_is_type(hn, json_type_object) || !is_current_use(str_member(hn, "use"), 1))
            continue;
        const char *text = str_member(hn, "text"), *family = str_member(hn, "family");
        size_t n = 0;
        if (text && *text) {
            if (!name_append(out, &n, text)) out[0] = '\0';
        } else {
            struct json_object *given = array_member(hn, "given");
            int is_ok = !family || name_append(out, &n, family);
            for (size_t k = 0; is_ok && given && k < json_object_array_length(given); k++) {
                struct json_object *g = json_object_array_get_idx(given, k);
                if (json_object_is_type(g, json_type_string))
                    is_ok = name_append(out, &n, json_object_get_string(g));
            }
            if (!is_ok) out[0] = '\0', n = 0;
        }
        if (n) {
            out[n - 1] = '\0';
            return;
        }
    }
}

static int two_digits(const char *s)
{
    return (s[0] - '0') * 10 + s[1] - '0';
}

/* A FHIR date of a real day, month or year: YYYY, YYYY-MM or YYYY-MM-DD. */
static int is_birth_date(const char *s)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    size_t n = s ? strlen(s) : 0;
    if (n != 4 && n != 7 && n != 10) return 0;
    for (size_t i = 0; i < n; i++)
        if ((i == 4 || i == 7) ? s[i] != '-' : !(s[i] >= '0' && s[i] <= '9')) return 0;
    if (n == 4) return 1;
    int y = two_digits(s) * 100 + two_digits(s + 2), m = two_digits(s + 5);
    if (m < 1 || m > 12) return 0;
    if (n == 7) return 1;
    int d = two_digits(s + 8), is_leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d >= 1 && d <= mdays[m - 1] && (m != 2 || d < 29 || is_leap);
}

/* The index code of the first sealed value of the kind (marker) among the elements of key:
 * one whose system is preferred_system when there is such, else the first one. */
static void code_of(struct json_object *patient, const char *key, const char *marker,
                    const char *preferred_system, char out[JK_MPI_KEY_MAX])
{
    struct json_object *list = array_member(patient, key);
    char code[JK_PROTECT_CODE_LEN + 1];
    out[0] = '\0';
    for (size_t i = 0; list && i < json_object_array_length(list); i++) {
        struct json_object *e = json_object_array_get_idx(list, i);
        const char *v = str_member(e, "value"), *sys = str_member(e, "system");
        if (!v || strncmp(v, marker, strlen(marker)) || !is_current_use(str_member(e, "use"), 0) ||
            !jk_protect_index_code(v, strlen(v), code))
            continue;
        int is_preferred = preferred_system && sys && !strcmp(sys, preferred_system);
        if (!out[0] || is_preferred) memcpy(out, code, sizeof code);
        if (is_preferred || !preferred_system) return;
    }
}

/* The city (else the district) of the home address, else of the first current one. */
static const char *region_of(struct json_object *patient)
{
    struct json_object *list = array_member(patient, "address");
    const char *found = NULL;
    for (size_t i = 0; list && i < json_object_array_length(list); i++) {
        struct json_object *a = json_object_array_get_idx(list, i);
        const char *use = str_member(a, "use"), *city = str_member(a, "city");
        if (!is_current_use(use, 0)) continue;
        if (!city || !*city) city = str_member(a, "district");
        if (!city || !*city) continue;
        if (use && !strcmp(use, "home")) return city;
        if (!found) found = city;
    }
    return found;
}

jk_rc jk_mpi_rec_of_patient(struct json_object *patient, struct jk_mpi_rec *rec)
{
    char name[NAME_BUF];
    memset(rec, 0, sizeof *rec);
    name_of(patient, name);
    jk_rc rc = jk_mpi_fold_name(name, rec);
    if (rc == JK_ENOMEM || rc == JK_EINTERNAL) return rc;
    const char *birth = str_member(patient, "birthDate");
    if (is_birth_date(birth)) memcpy(rec->birth, birth, strlen(birth) + 1);
    const char *gender = str_member(patient, "gender");
    if (gender && !strcmp(gender, "male")) rec->sex = 'M';
    if (gender && !strcmp(gender, "female")) rec->sex = 'F';
    code_of(patient, "identifier", MARKER_ID, CITIZEN_ID_SYSTEM, rec->id_key);
    code_of(patient, "telecom", MARKER_PHONE, NULL, rec->phone_key);
    rc = jk_mpi_fold_region(region_of(patient), rec->region);
    return rc == JK_ENOMEM ? rc : JK_OK;
}

/* ---- comparing two records ---- */

/* s without spaces into out (JK_MPI_PY_MAX bytes); its length. */
static size_t squeeze(const char *s, char *out)
{
    size_t n = 0;
    for (; *s; s++)
        if (*s != ' ') out[n++] = *s;
    out[n] = '\0';
    return n;
}

/* s with its last word moved to the front, without spaces ("wei zhang": "zhangwei"). */
static void last_word_first(const char *s, char *out)
{
    const char *sp = strrchr(s, ' ');
    if (!sp) {
        squeeze(s, out);
        return;
    }
    char head[JK_MPI_PY_MAX];
    size_t n = squeeze(sp + 1, out);
    memcpy(head, s, (size_t)(sp - s));
    head[sp - s] = '\0';
    squeeze(head, out + n);
}

/* Whether a and b are at most one insertion, deletion, substitution or swap of two adjacent
 * letters apart. */
static int within_one_edit(const char *a, size_t na, const char *b, size_t nb)
{
    if (na > nb) return within_one_edit(b, nb, a, na);
    if (nb - na > 1) return 0;
    size_t i = 0;
    while (i < na && a[i] == b[i])
        i++;
    if (na == nb)
        return i == na || !strcmp(a + i + 1, b + i + 1) ||
               (i + 1 < na && a[i] == b[i + 1] && a[i + 1] == b[i] &&
                !strcmp(a + i + 2, b + i + 2));
    return !strcmp(a + i, b + i + 1);
}

/* Shorter pinyin keys are too often one letter from another name (li na, li ma). */
#define NEAR_MIN_LETTERS 6

static int name_level(const struct jk_mpi_rec *a, const struct jk_mpi_rec *b)
{
    char sa[JK_MPI_PY_MAX], sb[JK_MPI_PY_MAX], ra[JK_MPI_PY_MAX], rb[JK_MPI_PY_MAX];
    if (!a->pinyin[0] || !b->pinyin[0]) return JK_MPI_MISSING;
    if (a->han[0] && !strcmp(a->han, b->han)) return 1;
    size_t na = squeeze(a->pinyin, sa), nb = squeeze(b->pinyin, sb);
    if (!strcmp(sa, sb)) return 2;
    last_word_first(a->pinyin, ra);
    last_word_first(b->pinyin, rb);
    if (!strcmp(ra, sb) || !strcmp(rb, sa)) return 3;
    if ((na < nb ? na : nb) >= NEAR_MIN_LETTERS && within_one_edit(sa, na, sb, nb)) return 3;
    return JK_MPI_DISAGREE;
}

static int birth_level(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (!na || !nb) return JK_MPI_MISSING;
    if (na == 10 && nb == 10) {
        if (!strcmp(a, b)) return 1;
        if (!memcmp(a, b, 5) && !memcmp(a + 5, b + 8, 2) && !memcmp(a + 8, b + 5, 2)) return 2;
        int n_diff = 0;
        for (size_t i = 0; i < 10; i++)
            n_diff += a[i] != b[i];
        if (n_diff == 1) return 3;
    }
    /* Two full dates that differ more are two dates, not one year: a namesake born the same
     * year is not evidence. */
    if (na == 10 && nb == 10) return JK_MPI_DISAGREE;
    return !memcmp(a, b, na < nb ? na : nb) ? 4 : JK_MPI_DISAGREE;
}

static int same_level(const char *a, const char *b)
{
    if (!a[0] || !b[0]) return JK_MPI_MISSING;
    return strcmp(a, b) ? JK_MPI_DISAGREE : 1;
}

void jk_mpi_levels(const struct jk_mpi_rec *a, const struct jk_mpi_rec *b,
                   int levels[JK_MPI_N_FIELDS])
{
    levels[JK_MPI_NAME] = name_level(a, b);
    levels[JK_MPI_BIRTH] = birth_level(a->birth, b->birth);
    levels[JK_MPI_SEX] = !a->sex || !b->sex ? JK_MPI_MISSING : a->sex == b->sex;
    levels[JK_MPI_PHONE] = same_level(a->phone_key, b->phone_key);
    levels[JK_MPI_REGION] = same_level(a->region, b->region);
    levels[JK_MPI_IDENTITY] = same_level(a->id_key, b->id_key);
}

double jk_mpi_score(const struct jk_mpi_rules *r, const struct jk_mpi_rec *a,
                    const struct jk_mpi_rec *b)
{
    int levels[JK_MPI_N_FIELDS];
    double score = 0;
    int is_vetoed = 0;
    jk_mpi_levels(a, b, levels);
    for (int f = 0; f < JK_MPI_N_FIELDS; f++) {
        score += jk_mpi_weight(r, (enum jk_mpi_field)f, levels[f]);
        is_vetoed |= levels[f] == JK_MPI_DISAGREE && (r->certain_needs & (1u << f));
    }
    /* Twins share a birth date, a surname, a home and often a phone: what tells them apart is
     * the name, whatever else agrees. */
    if (is_vetoed && score >= r->threshold[0]) score = nextafter(r->threshold[0], -INFINITY);
    return score;
}

/* ---- blocking ---- */

static int cmp_char(const void *x, const void *y)
{
    return *(const char *)x - *(const char *)y;
}

void jk_mpi_blocks(const struct jk_mpi_rec *rec, char keys[JK_MPI_N_BLOCKS][JK_MPI_BLOCK_MAX])
{
    char letters[JK_MPI_PY_MAX];
    for (int i = 0; i < JK_MPI_N_BLOCKS; i++)
        keys[i][0] = '\0';
    /* The letters of the pinyin in order, and the birth year: the same for Han, Traditional,
     * Latin in either order, and homophones; apart by a typo in the name or the year. */
    size_t n = squeeze(rec->pinyin, letters);
    if (n && strlen(rec->birth) >= 4) {
        qsort(letters, n, 1, cmp_char);
        snprintf(keys[0], JK_MPI_BLOCK_MAX, "n:%s:%.4s", letters, rec->birth);
    }
    /* The birth date with day and month in order: the same when they were swapped. */
    if (strlen(rec->birth) == 10) {
        const char *m = rec->birth + 5, *d = rec->birth + 8;
        int is_swap = memcmp(m, d, 2) > 0;
        snprintf(keys[1], JK_MPI_BLOCK_MAX, "d:%.4s-%.2s-%.2s", rec->birth, is_swap ? d : m,
                 is_swap ? m : d);
    }
    if (rec->phone_key[0]) snprintf(keys[2], JK_MPI_BLOCK_MAX, "p:%s", rec->phone_key);
}

/* ---- the decision ---- */

enum jk_mpi_grade jk_mpi_decide(const struct jk_mpi_rules *r, const struct jk_mpi_cand *c, size_t n,
                                const char **person, double *score)
{
    /* The best person holds the best candidate; the best other person is the best candidate
     * of any other. */
    size_t best = n;
    double other = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (c[i].person && (best == n || c[i].score > c[best].score)) best = i;
    *person = NULL;
    *score = 0;
    if (best == n) return JK_MPI_NONE;
    for (size_t i = 0; i < n; i++)
        if (c[i].person && c[i].score > other && strcmp(c[i].person, c[best].person))
            other = c[i].score;
    enum jk_mpi_grade g = jk_mpi_grade_of(r, c[best].score);
    /* Two persons certain: the record cannot be told apart, and they may be one person. */
    if (g == JK_MPI_CERTAIN && other >= jk_mpi_threshold_auto(r)) g = JK_MPI_PROBABLE;
    if (g != JK_MPI_NONE) *person = c[best].person;
    *score = c[best].score;
    return g;
}
