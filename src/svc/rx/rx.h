/* rx.h - e-prescriptions of the internet hospital (docs/internals/rx.md): the rules and the
 * formulary, the checks of a prescription, its canonical form and the doctor's SM2 signature.
 * The checks and the canonical form are pure functions; signing reads and writes the
 * doctor's key inside the caller's transaction. */
#ifndef JK_RX_H
#define JK_RX_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"
#include "store/store.h"

struct jk_arena;
struct json_object;

/* ---- rules (rules/prescription.json) and formulary (rules/formulary.json) ---- */

struct jk_rx_rules;

/* Reads both files completely ($JIANKANG_PRESCRIPTION_RULES, $JIANKANG_FORMULARY, else
 * rules/...); "FILE: /pointer: problem" in err. Install once with jk_rx_start. */
jk_rc jk_rx_rules_load(const char *rules_path, const char *formulary_path, struct jk_rx_rules **out,
                       char *err, size_t errlen);
void jk_rx_rules_free(struct jk_rx_rules *r);
jk_rc jk_rx_start(char *err, size_t errlen); /* loads the default paths, installs them */
void jk_rx_stop(void);
const struct jk_rx_rules *jk_rx_rules(void);

/* One drug of the formulary. */
struct jk_rx_drug {
    const char *code;      /* national drug code (https://jiankang.example/fhir/sid/drug-code) */
    const char *name;      /* generic name (通用名) */
    const char *form;      /* dosage form: tablet, capsule, injection, ... */
    const char *unit;      /* dose unit: mg, g, ml, IU, ... */
    const char *klass;     /* ordinary, narcotic, psychotropic-1, psychotropic-2, toxic,
                            * radioactive, antimicrobial */
    const char *group;     /* therapeutic group, for duplicate therapy (e.g. "ACEI") */
    const char *substance; /* the allergen code an AllergyIntolerance names */
    double dose_min, dose_max;        /* per administration, in unit */
    double daily_max;                 /* per day, in unit (0: none) */
    int age_min_years, age_max_years; /* -1: no bound */
    char sex;                         /* 'f' or 'm' only; 0: any */
    int is_chronic;                   /* may be on a long-term prescription */
    int64_t price_fen;                /* per package */
};

/* The drug code in the formulary of organisation org (an Organization id; the rules may give
 * an institution its own list), or NULL. */
const struct jk_rx_drug *jk_rx_drug(const struct jk_rx_rules *r, const char *org, const char *code);

/* ---- a prescription and its checks ---- */

#define JK_RX_MAX_ITEMS 16 /* items a request may carry (the rule's limit is lower) */

struct jk_rx_item {
    const char *drug_code;
    double dose;       /* per administration, in the drug's unit */
    int times_per_day; /* frequency */
    int days;          /* supply */
    int quantity;      /* packages */
    const char *route; /* "oral", ... (may be NULL) */
};

struct jk_rx_patient {
    int age_years, age_days;      /* at now */
    char sex;                     /* 'f', 'm' or 0 when unknown */
    const char *const *allergies; /* substance codes of the patient's active AllergyIntolerances */
    size_t n_allergies;
    const char *const *active_drugs; /* drug codes of their active MedicationRequests */
    size_t n_active;
};

enum jk_rx_severity { JK_RX_WARN, JK_RX_REFUSE };

struct jk_rx_finding {
    enum jk_rx_severity severity;
    const char *code;    /* stable: "rx.max_items", "rx.max_days", "rx.online_forbidden_classes",
                          * "dose.range", "dose.daily", "duplicate", "allergy", "age", "sex",
                          * "formulary" */
    int item;            /* the item (0-based), or -1 for the whole prescription */
    const char *message; /* Chinese or English (is_en), naming the rule */
};

/* Checks n items for org's formulary and patient under r; long_term: the doctor's reason for a
 * long-term prescription of a chronic condition (NULL: none). Findings into *out (arena). */
jk_rc jk_rx_check(const struct jk_rx_rules *r, const char *org, const struct jk_rx_item *items,
                  size_t n, const struct jk_rx_patient *patient, const char *long_term, int is_en,
                  struct jk_arena *a, struct jk_rx_finding **out, size_t *n_out);

/* ---- canonical form and signatures ---- */

/* The canonical text of a prescription's MedicationRequests (JSON objects, in item order):
 * each with sorted keys, no whitespace, and without id, meta, text and status (which change
 * through review and dispensing), joined by "\n". Into the arena. */
jk_rc jk_rx_canonical(struct json_object *const *requests, size_t n, struct jk_arena *a,
                      const char **out, size_t *len);

/* Inside a transaction: signs text with the SM2 key of practitioner (made and stored sealed
 * in rx_signer at the first signature): the SM3 digest (hex) and the signature (base64). */
jk_rc jk_rx_sign(jk_conn *c, const char *practitioner, const char *text, size_t len,
                 struct jk_arena *a, const char **digest_hex, const char **signature_b64);

/* Whether signature_b64 is practitioner's signature of text: JK_OK, JK_EINVAL (it is not, or
 * is malformed), JK_ENOTFOUND (no key for practitioner). A read. */
jk_rc jk_rx_verify(jk_conn *c, const char *practitioner, const char *text, size_t len,
                   const char *signature_b64);

#endif
