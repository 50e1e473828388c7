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
struct jk_diag;
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
    const char *code;          /* drug code (https://jiankang.example/fhir/sid/drug-code) */
    const char *name;          /* generic name (通用名) */
    const char *name_en;       /* its English name, for messages in English */
    const char *form;          /* dosage form: tablet, capsule, aerosol, ... */
    const char *package;       /* the package as sold: "5mg×28片" */
    const char *unit;          /* dose unit: mg, μg, ml, IU, ... */
    const char *klass;         /* ordinary, antimicrobial, narcotic, psychotropic-1, psychotropic-2,
                                * toxic, radioactive, precursor, special-storage */
    const char *group;         /* therapeutic group, for duplicate therapy (e.g. "ace-inhibitor") */
    const char *substance;     /* the allergen code an AllergyIntolerance names */
    double package_amount;     /* how much of unit one package holds (0: not counted) */
    double dose_min, dose_max; /* per administration, in unit */
    double daily_max;          /* per day, in unit (0: none) */
    int age_min_years, age_max_years; /* -1: no bound */
    char sex;                         /* 'f' or 'm' only; 0: any */
    int is_chronic;                   /* may be on a long-term prescription */
    int64_t price_fen;                /* per package */
};

/* The numbers of rules/prescription.json the other parts of the flow need. */
struct jk_rx_limits {
    int utc_offset_min;        /* time.utc_offset_minutes */
    int max_items;             /* rx.max_items */
    int max_days;              /* rx.max_days */
    int max_days_long_term;    /* rx.max_days_long_term */
    int long_term_review_days; /* rx.long_term_review_days */
    int validity_days;         /* rx.validity_days: the issue day counts as the first */
};
const struct jk_rx_limits *jk_rx_limits(const struct jk_rx_rules *r);

/* When a prescription issued at issued_ms stops being valid (the end of the last local day
 * of rx.validity_days). */
int64_t jk_rx_valid_until(const struct jk_rx_rules *r, int64_t issued_ms);

/* The patient's age on now_ms (local day) from a FHIR birthDate (YYYY, YYYY-MM or
 * YYYY-MM-DD; a partial date counts from its first day): JK_EINVAL when it is not one. */
jk_rc jk_rx_age(const struct jk_rx_rules *r, const char *birth_date, int64_t now_ms, int *age_years,
                int *age_days);

/* The drug code in the formulary of organisation org (an Organization id; the rules may give
 * an institution its own list), or NULL. */
const struct jk_rx_drug *jk_rx_drug(const struct jk_rx_rules *r, const char *org, const char *code);

/* The drugs of org's formulary (all of them when the rules give org no list of its own), in
 * code order, at most max into out; how many. */
size_t jk_rx_formulary(const struct jk_rx_rules *r, const char *org, const struct jk_rx_drug **out,
                       size_t max);

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
    int age_years, age_days;      /* at now; age_years -1 when unknown (no age checks) */
    char sex;                     /* 'f', 'm' or 0 when unknown */
    const char *const *allergies; /* substance codes of the patient's active AllergyIntolerances */
    size_t n_allergies;
    const char *const *active_drugs; /* drug codes of their active MedicationRequests */
    size_t n_active;
};

enum jk_rx_severity { JK_RX_WARN, JK_RX_REFUSE };

struct jk_rx_finding {
    enum jk_rx_severity severity;
    const char *code;    /* stable: "rx.max_items", "rx.max_days", "rx.max_days_long_term",
                          * "rx.long_term_review_days", "rx.long_term_excluded_classes",
                          * "rx.online_forbidden_classes", "dose.range", "dose.daily",
                          * "quantity", "duplicate", "allergy", "age", "sex", "formulary" */
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

/* ---- a prescription made, and checked later (src/svc/rx/prescribe.c) ---- */

#define JK_RX_SYSTEM       "https://jiankang.example/fhir/sid/prescription"
#define JK_RX_DRUG_SYSTEM  "https://jiankang.example/fhir/sid/drug-code"
#define JK_RX_CHECK_SYSTEM "https://jiankang.example/fhir/CodeSystem/prescription-check"

/* "refuse" or "warn". Static. */
const char *jk_rx_severity_name(enum jk_rx_severity s);

/* One online visit (a row of ih_visit), strings in the arena. */
struct jk_rx_visit {
    const char *id; /* the Encounter's id */
    const char *patient_id, *person, *org;
    const char *doctor; /* "PractitionerRole/<id>" */
    const char *status; /* "open", "finished", "redirected" */
};

/* The visit id: JK_ENOTFOUND when there is none. A read. */
jk_rc jk_rx_visit_get(jk_conn *c, struct jk_arena *a, const char *id, struct jk_rx_visit *out);

/* What the checks need to know of Patient patient_id on now_ms: age and sex (Patient
 * birthDate, gender), the substances of their active AllergyIntolerances and the drug codes
 * of their active MedicationRequests. JK_ENOTFOUND when the Patient is not there. A read. */
jk_rc jk_rx_patient_facts(jk_conn *c, const struct jk_rx_rules *r, struct jk_arena *a,
                          const char *patient_id, int64_t now_ms, struct jk_rx_patient *out);

struct jk_rx_new {
    /* in */
    const struct jk_rx_rules *rules;
    const struct jk_rx_visit *visit; /* the open visit; its doctor prescribes */
    const struct jk_rx_item *items;
    size_t n;
    const char *long_term; /* the doctor's reason for a long-term prescription, or NULL */
    int is_en;             /* messages in English */
    int64_t now_ms;
    struct jk_arena *a; /* everything made lives here */
    struct jk_diag *d;  /* every refusal, with its code as issue.details */
    /* out */
    const char *id;           /* the prescription (its groupIdentifier, Provenance id) */
    const char **request_ids; /* n MedicationRequest ids: "<id>-1" ... */
    struct jk_rx_finding *findings;
    size_t n_findings;
    const char *digest, *signature; /* SM3 hex, SM2 base64 */
    int64_t amount_fen, valid_until_ms;
};

/* Inside a transaction: reads the patient's facts, checks the items, and when nothing is
 * refused writes the MedicationRequests (draft), signs their canonical form with the
 * doctor's key, writes the Provenance of the signature and the rx_prescription row (pending,
 * with the warnings). JK_ERULE with every refusal in x->d (nothing written); JK_ENOTFOUND
 * when the Patient is gone; JK_ECONFLICT when the visit is no longer open. */
jk_rc jk_rx_create(jk_conn *c, struct jk_rx_new *x);

/* Reads prescription id's MedicationRequests again, makes their canonical form and checks
 * the doctor's signature of it: *is_valid, and when not, why (*reason, static English text);
 * *patient_id the prescription's patient. JK_ENOTFOUND when there is no such prescription.
 * A read. */
jk_rc jk_rx_verify_prescription(jk_conn *c, struct jk_arena *a, const char *id, int *is_valid,
                                const char **reason, const char **patient_id);

#endif
