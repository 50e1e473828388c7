/* match.h - what the master patient index compares: a Patient record's features, their
 * Fellegi-Sunter score against another record, the blocking keys that find candidates, and
 * the decision for a new record (docs/internals/mpi.md). Pure functions: no database. */
#ifndef JK_MPI_MATCH_H
#define JK_MPI_MATCH_H

#include <stddef.h>

#include "core/rc.h"

struct json_object;

#define JK_MPI_KEY_MAX    80  /* a blind-index code "bi:<64 hex>" and a NUL, with room */
#define JK_MPI_HAN_MAX    64  /* a Han name, UTF-8 */
#define JK_MPI_PY_MAX     128 /* a pinyin key */
#define JK_MPI_REGION_MAX 48  /* a folded place name, UTF-8 */
#define JK_MPI_N_BLOCKS   3
#define JK_MPI_BLOCK_MAX  160

/* The features of one Patient record; "" (or 0) when unknown. */
struct jk_mpi_rec {
    char id_key[JK_MPI_KEY_MAX];    /* index code of a valid identity number, or "" */
    char han[JK_MPI_HAN_MAX];       /* the name in Simplified Han characters, no spaces */
    char pinyin[JK_MPI_PY_MAX];     /* the name's pinyin key: "zhang wei" */
    char birth[11];                 /* YYYY-MM-DD */
    char sex;                       /* 'M', 'F' or 0 */
    char phone_key[JK_MPI_KEY_MAX]; /* index code of a personal phone number, or "" */
    char region[JK_MPI_REGION_MAX]; /* the address's city (or district), in Simplified Han */
};

/* Score bands (grades of Patient/$match). */
enum jk_mpi_grade { JK_MPI_NONE, JK_MPI_POSSIBLE, JK_MPI_PROBABLE, JK_MPI_CERTAIN };

/* The weights and thresholds of rules/mpi.json. */
struct jk_mpi_rules;

/* The rules file: $JIANKANG_MPI_RULES, else "rules/mpi.json". Static. */
const char *jk_mpi_rules_path(void);

/* Reads and checks the rules at path (NULL: jk_mpi_rules_path()). *out is allocated; free it
 * with jk_mpi_rules_free. JK_EINVAL with "FILE: /pointer: what is wrong" in err. */
jk_rc jk_mpi_rules_load(const char *path, struct jk_mpi_rules **out, char *err, size_t errlen);
void jk_mpi_rules_free(struct jk_mpi_rules *r);

/* Thresholds: a score at or above auto_link links without review; at or above review (and
 * below auto_link) queues the pair for review. */
double jk_mpi_threshold_auto(const struct jk_mpi_rules *r);
double jk_mpi_threshold_review(const struct jk_mpi_rules *r);
enum jk_mpi_grade jk_mpi_grade_of(const struct jk_mpi_rules *r, double score);
const char *jk_mpi_grade_name(enum jk_mpi_grade g); /* "certain", ... "certainly-not" */

/* Starts the name folding (ICU Han-Latin, OpenCC t2s). Once, before threads use it. */
jk_rc jk_mpi_names_init(char *err, size_t errlen);

/* Folds a person's name (family and given together, as written) into rec->han and
 * rec->pinyin: Traditional to Simplified, Han to toneless pinyin syllables, Latin spellings
 * lower-cased without diacritics, so 張偉, 张伟 and "Zhang Wei" give pinyin "zhang wei". */
jk_rc jk_mpi_fold_name(const char *name, struct jk_mpi_rec *rec);

/* Folds a place name (a city or district, rec->region) into region: Traditional to
 * Simplified, without spaces or the trailing 市 ("杭州市", "杭 州" and "杭州" are one),
 * Latin lower-cased. "" for NULL or a name that does not fit. JK_OK; JK_ENOMEM. */
jk_rc jk_mpi_fold_region(const char *place, char region[JK_MPI_REGION_MAX]);

/* The features of a Patient resource (identifiers and phone numbers are sealed markers, whose
 * index codes are taken; see auth/protect.h). JK_OK; JK_ENOMEM. */
jk_rc jk_mpi_rec_of_patient(struct json_object *patient, struct jk_mpi_rec *rec);

/* The fields compared, and how well a pair agrees on each (a level of rules/mpi.json). */
enum jk_mpi_field {
    JK_MPI_NAME,
    JK_MPI_BIRTH,
    JK_MPI_SEX,
    JK_MPI_PHONE,
    JK_MPI_REGION,
    JK_MPI_IDENTITY,
    JK_MPI_N_FIELDS
};
#define JK_MPI_MISSING  (-1) /* one side does not have the field: weight 0 */
#define JK_MPI_DISAGREE 0    /* levels 1.. are the field's agreement levels, best first */
/* Name: 1 the Han names are equal, 2 the pinyin is equal (the Han differs or is missing),
 * 3 near: pinyin one letter (or two adjacent letters swapped) apart, or family and given name
 * in the other order. Birth date: 1 equal, 2 day and month swapped, 3 one digit differs,
 * 4 year only: one date is partial (YYYY or YYYY-MM) and agrees as far as it goes. Sex,
 * phone, region, identity: 1 equal. */
#define JK_MPI_MAX_LEVELS 4

/* The agreement level of a and b on each field into levels[JK_MPI_N_FIELDS]. */
void jk_mpi_levels(const struct jk_mpi_rec *a, const struct jk_mpi_rec *b,
                   int levels[JK_MPI_N_FIELDS]);

/* The name of a field ("name", "birth", ...) and of its level (NULL past the last one). */
const char *jk_mpi_field_name(enum jk_mpi_field f);
const char *jk_mpi_level_name(enum jk_mpi_field f, int level);

/* The weight (log2 likelihood ratio) of agreement level on field f: log2(m/u) for a level,
 * log2((1-sum m)/(1-sum u)) for JK_MPI_DISAGREE, 0 for JK_MPI_MISSING. */
double jk_mpi_weight(const struct jk_mpi_rules *r, enum jk_mpi_field f, int level);

/* The log2 likelihood ratio that a and b are the same person: the sum of the weights of
 * jk_mpi_levels. */
double jk_mpi_score(const struct jk_mpi_rules *r, const struct jk_mpi_rec *a,
                    const struct jk_mpi_rec *b);

/* The blocking keys of rec ("" when a key cannot be made): candidates share at least one. */
void jk_mpi_blocks(const struct jk_mpi_rec *rec, char keys[JK_MPI_N_BLOCKS][JK_MPI_BLOCK_MAX]);

/* A candidate record for a new one: its person and its score. */
struct jk_mpi_cand {
    const char *person;
    double score;
};
/* What to do with a new record given its scored candidates (any order; several may share a
 * person, whose score is their best): JK_MPI_CERTAIN with *person when one person alone scores
 * at or above auto_link; JK_MPI_POSSIBLE or JK_MPI_PROBABLE with the best *person when the best
 * is at or above review (the pair is queued); JK_MPI_NONE (a new person) otherwise. */
enum jk_mpi_grade jk_mpi_decide(const struct jk_mpi_rules *r, const struct jk_mpi_cand *c, size_t n,
                                const char **person, double *score);

#endif
