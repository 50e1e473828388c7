/* searchparam.h - the R4 search parameters of every resource type, generated from the
 * official SearchParameter resources by tools/gen_search.py, and the value normalisation that
 * index rows and queries share. */
#ifndef JK_FHIR_SEARCHPARAM_H
#define JK_FHIR_SEARCHPARAM_H

#include <stddef.h>
#include <stdint.h>

struct jk_arena;

enum jk_sp_type {
    JK_SP_NUMBER,
    JK_SP_DATE,
    JK_SP_STRING,
    JK_SP_TOKEN,
    JK_SP_REFERENCE,
    JK_SP_COMPOSITE,
    JK_SP_QUANTITY,
    JK_SP_URI,
    JK_SP_SPECIAL
};

/* One search parameter as it applies to one resource type. */
struct jk_sp {
    const char *code;          /* "name", "birthdate", "code-value-quantity" */
    const char *resource_type; /* "Patient"; "Resource" for _id, _lastUpdated, _tag, ... */
    enum jk_sp_type type;
    const char *const *targets;    /* reference: allowed target types, NULL-terminated */
    const char *const *components; /* composite: codes of the component parameters (of the
                                    * same resource type), NULL-terminated */
};

/* The parameter code of resource_type (or of Resource/DomainResource, which every type
 * has), or NULL when there is none. Static storage. */
const struct jk_sp *jk_sp_find(const char *resource_type, const char *code);

/* All parameters of resource_type, including the common ones. *out is static storage. */
size_t jk_sp_list(const char *resource_type, const struct jk_sp *const **out);

/* Normalised form of a string for string search: lower case, Latin accents removed (é -> e),
 * full-width Latin letters and digits folded to ASCII (Ａ -> a, １ -> 1); Chinese characters
 * and everything else unchanged. In the arena. */
const char *jk_sp_norm_string(struct jk_arena *a, const char *s, size_t n);

/* The instant range [lo, hi] (ms since the epoch, inclusive) that a FHIR date, dateTime or
 * instant covers at its precision: "2024" -> 2024-01-01T00:00:00.000 .. 2024-12-31T23:59:
 * 59.999 (UTC when no zone is given). Returns 0, or -1 when the text is not one. */
int jk_sp_date_range(const char *s, size_t n, int64_t *lo, int64_t *hi);

/* The range [lo, hi] that a decimal's precision covers: "1.5" -> 1.45 .. 1.55, "100" ->
 * 99.5 .. 100.5, "1e2" -> 50 .. 150. Returns 0, or -1 when the text is not a number. */
int jk_sp_number_range(const char *s, size_t n, double *lo, double *hi);

/* The Patient compartment (from the official CompartmentDefinition): the parameter codes
 * of resource_type that link it to a Patient, NULL-terminated; NULL when resource_type is not
 * in the compartment. "Patient" itself gives {"_id"}-like handling by the caller. Static. */
const char *const *jk_sp_patient_compartment(const char *resource_type);

#endif
