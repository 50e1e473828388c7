/* mpi_population.h - a generated population of residents of one province and duplicate
 * records of some of them, each with its true person: what the matching quality test and the
 * person index benchmark run on (docs/internals/mpi.md, "Matching quality").
 *
 * Deterministic: the same seed and sizes give the same people and records, and person i or
 * duplicate k can be made alone, in any order (random access, no table of people). Person i's
 * own record is its registration; a duplicate is the same person as another institution
 * recorded them, with realistic variation (see enum jk_pop_var). Needs jk_mpi_names_init. */
#ifndef JK_MPI_POPULATION_H
#define JK_MPI_POPULATION_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"

struct jk_buf;

/* What a duplicate record changed against its person's own record (bits of jk_pop_rec.var). */
enum jk_pop_var {
    JK_POP_TRADITIONAL = 1 << 0, /* the name in Traditional characters (OpenCC s2t) */
    JK_POP_LATIN = 1 << 1,       /* the name in pinyin: "Zhang Xiuying", "ZHANG XIUYING" */
    JK_POP_GIVEN_FIRST = 1 << 2, /* ... given name first: "Xiuying Zhang" */
    JK_POP_HOMOPHONE = 1 << 3,   /* one character of the given name a homophone (伟 for 玮) */
    JK_POP_NAME_TYPO = 1 << 4,   /* one character of the given name another one */
    JK_POP_DATE_SWAP = 1 << 5,   /* day and month of the birth date swapped */
    JK_POP_DATE_DIGIT = 1 << 6,  /* one digit of the birth date wrong */
    JK_POP_NO_DATE = 1 << 7,     /* no birth date */
    JK_POP_NO_SEX = 1 << 8,      /* no sex */
    JK_POP_NEW_PHONE = 1 << 9,   /* another phone number (the person changed it) */
    JK_POP_NO_PHONE = 1 << 10,   /* no phone number */
    JK_POP_NO_REGION = 1 << 11,  /* no address */
    JK_POP_MOVED = 1 << 12,      /* an address in another city */
    JK_POP_YEAR_ONLY = 1 << 13,  /* the birth year only */
    JK_POP_N_VARS = 14
};

/* One record of a person, as written. "" (or 0) for what the record does not have. */
struct jk_pop_rec {
    size_t person;   /* the true person: 0 .. n_persons-1 */
    unsigned var;    /* enum jk_pop_var bits (0 for a person's own record) */
    char text[64];   /* the whole name as one text (Latin forms), or "" */
    char family[32]; /* else the family name (张, 欧阳) */
    char given[48];  /* and the given name (伟, 秀英) */
    char birth[11];  /* YYYY-MM-DD */
    char sex;        /* 'M', 'F' or 0 */
    char phone[12];  /* a mobile number, 11 digits */
    char idnum[19];  /* a citizen ID number (GB 11643: region, birth date, sequence, check) */
    char city[24];   /* the city of the home address, Simplified */
};

struct jk_pop_params {
    uint64_t seed;
    size_t n_persons; /* at most 100,000,000 */
    size_t n_dups;    /* duplicate records, of persons drawn at random */
};

struct jk_pop;

/* A population. JK_EINVAL for sizes out of range, JK_EINTERNAL when OpenCC s2t cannot be
 * opened or the name folding is not started, JK_ENOMEM. Free with jk_pop_free. */
jk_rc jk_pop_new(const struct jk_pop_params *p, struct jk_pop **out);
void jk_pop_free(struct jk_pop *pop);

/* Person i's own record (i < n_persons). Fast (no Unicode library): for a million. Any
 * thread. */
void jk_pop_person(const struct jk_pop *pop, size_t i, struct jk_pop_rec *out);

/* Duplicate record k (k < n_dups) of person out->person. Any thread (s2t is locked). */
void jk_pop_dup(struct jk_pop *pop, size_t k, struct jk_pop_rec *out);

/* The name of rec as a Patient's HumanName would give it: text, else family and given. */
void jk_pop_name(const struct jk_pop_rec *rec, char out[128]);

/* rec as a FHIR R4 Patient (JSON), identity number and phone in clear (a server seals them):
 * HumanName text or family/given, gender, birthDate, identifier (citizen ID system), telecom
 * (phone, mobile), address (home, city). JK_OK, JK_ENOMEM, JK_ETOOBIG. */
jk_rc jk_pop_patient_json(const struct jk_pop_rec *rec, struct jk_buf *out);

#endif
