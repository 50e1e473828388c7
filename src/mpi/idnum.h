/* idnum.h - identity documents: the citizen ID number (GB 11643-1999: check digit, real birth
 * date, GB/T 2260 address code from rules/regions.json, the 15-digit legacy number upgraded to
 * 18), the residence permits of Hong Kong, Macao and Taiwan residents, the foreigner's
 * permanent residence ID card, passports and travel permits: validated, normalised, and the
 * birth date and sex derived where the number holds them (docs/internals/mpi.md). */
#ifndef JK_MPI_IDNUM_H
#define JK_MPI_IDNUM_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"

#define JK_IDNUM_MAX     32  /* a normalised document number and its NUL */
#define JK_IDNUM_MSG_MAX 256 /* one message, UTF-8 */

/* The document types; their names are those of the identity.system.<name> rules of
 * rules/identity.json and of the registration API's document.type. */
enum jk_idnum_type {
    JK_DOC_CITIZEN_ID,  /* "citizen-id": 居民身份证 */
    JK_DOC_HMT_PERMIT,  /* "hmt-residence-permit": 港澳台居民居住证 */
    JK_DOC_FOREIGNER,   /* "foreigner-permanent-residence": 外国人永久居留身份证 */
    JK_DOC_PASSPORT,    /* "passport" (with the issuing country) */
    JK_DOC_HKMO_PERMIT, /* "hk-macao-travel-permit": 港澳居民来往内地通行证 */
    JK_DOC_TW_PERMIT,   /* "taiwan-travel-permit": 台湾居民来往大陆通行证 */
    JK_N_DOC_TYPES
};

/* A valid document, normalised. */
struct jk_idnum {
    enum jk_idnum_type type;
    char number[JK_IDNUM_MAX]; /* upper case, 15-digit citizen IDs made 18 */
    char birth[11];            /* YYYY-MM-DD from the number, or "" */
    char sex;                  /* 'M' or 'F' from the number, or 0 */
    char country[4];           /* a passport's issuing country (ISO 3166-1 alpha-3), or "" */
    int is_upgraded;           /* a 15-digit number was made 18 */
};

/* Why a number was refused: a stable code ("idnum.check_digit") and what is wrong, in
 * Simplified Chinese and in English (never the whole number). */
struct jk_idnum_err {
    const char *code;
    char zh[JK_IDNUM_MSG_MAX], en[JK_IDNUM_MSG_MAX];
};

/* The name of t ("citizen-id"), its Chinese name ("居民身份证"). Static. */
const char *jk_idnum_type_name(enum jk_idnum_type t);
const char *jk_idnum_type_label(enum jk_idnum_type t);

/* The type named name into *out: 1, or 0 when name is no document type. */
int jk_idnum_type_by_name(const char *name, enum jk_idnum_type *out);

/* The regions rules file: $JIANKANG_REGION_RULES, else "rules/regions.json". Static. */
const char *jk_idnum_rules_path(void);

/* Reads and checks the GB/T 2260 table at path (NULL: jk_idnum_rules_path()) and makes it the
 * table of every check below. Once at start-up, before threads use the module; again replaces
 * it (tests). JK_EINVAL with "FILE: /json/pointer: what is wrong" in err, JK_ENOTFOUND when it
 * cannot be read; the previous table stays then. Without a call, the first check reads the
 * default path (and refuses every citizen ID with JK_EINTERNAL when that fails). */
jk_rc jk_idnum_init(const char *path, char *err, size_t errlen);

/* Checks number (of at most 64 bytes; surrounding white space ignored) as a document of type
 * t on the day of now_ms (China Standard Time) and fills *out. country is a passport's issuing
 * country (ISO 3166-1 alpha-3, either case), or NULL when not known (then not checked).
 * JK_EINVAL with *err filled when it is not valid; JK_EINTERNAL when the regions table could
 * not be read. */
jk_rc jk_idnum_check(enum jk_idnum_type t, const char *number, const char *country, int64_t now_ms,
                     struct jk_idnum *out, struct jk_idnum_err *err);

/* The GB 11643 check character of the 17 digits d ('0'..'9' or 'X'). */
char jk_idnum_check_char(const char *d);

/* Checks a birth date given as YYYY-MM-DD: a real date, not before 1900, not after the day of
 * now_ms in China; *age_days (may be NULL) is how many days ago it was. JK_EINVAL with *err
 * ("idnum.birth_date", "idnum.birth_date_future", ...) otherwise. */
jk_rc jk_idnum_birth_date(const char *iso, int64_t now_ms, long *age_days,
                          struct jk_idnum_err *err);

/* Fills err as a disagreement between a document and a given birth date ("idnum.birth_date
 * _mismatch": what appears in the number) or sex ("idnum.sex_mismatch"). */
void jk_idnum_err_birth_mismatch(struct jk_idnum_err *err, const char *given, const char *in_id);
void jk_idnum_err_sex_mismatch(struct jk_idnum_err *err, char given, char in_id);

#endif
