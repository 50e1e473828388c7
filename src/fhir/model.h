/* model.h - the FHIR R4 model: types, element definitions and required value sets, as tables
 * generated from the official StructureDefinitions by tools/gen_fhir.py. */
#ifndef JK_FHIR_MODEL_H
#define JK_FHIR_MODEL_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

/* "No such index" in the 16-bit table links, and the max of a 0..* element. */
#define JK_FHIR_NONE      0xFFFFu
#define JK_FHIR_UNBOUNDED 0xFFFFu

enum jk_fhir_kind { JK_FHIR_PRIMITIVE = 1, JK_FHIR_COMPLEX = 2, JK_FHIR_RESOURCE = 3 };

/* How a type is written in FHIR JSON. */
enum jk_fhir_json {
    JK_FHIR_JSON_OBJECT = 0, /* complex types and resources */
    JK_FHIR_JSON_STRING,     /* string-like primitives, checked with their regex */
    JK_FHIR_JSON_BOOL,       /* boolean */
    JK_FHIR_JSON_INT,        /* integer: -2^31 .. 2^31-1 */
    JK_FHIR_JSON_UINT,       /* unsignedInt: 0 .. 2^31-1 */
    JK_FHIR_JSON_PINT,       /* positiveInt: 1 .. 2^31-1 */
    JK_FHIR_JSON_DECIMAL,    /* decimal: a JSON number, its text checked with the regex */
    JK_FHIR_JSON_XHTML       /* xhtml: a string holding a <div> */
};

/* Element flags. */
#define JK_FHIR_EF_CHOICE   1u /* one typed variant of a choice element (valueQuantity) */
#define JK_FHIR_EF_SUMMARY  2u /* isSummary */
#define JK_FHIR_EF_MODIFIER 4u /* isModifier */

/* A primitive type, complex datatype or resource type. */
struct jk_fhir_type {
    uint32_t name;       /* string offset: "Patient", "HumanName", "date" */
    uint16_t node;       /* elements of a complex type or resource, JK_FHIR_NONE for primitives */
    uint16_t regex;      /* index of the value regex (jk_fhir_regex), JK_FHIR_NONE when none */
    uint8_t kind;        /* enum jk_fhir_kind */
    uint8_t json;        /* enum jk_fhir_json */
    uint8_t is_abstract; /* Resource, DomainResource, Element, BackboneElement */
    uint8_t name_len;    /* strlen of name */
};

/* The children of a type or of a backbone element (Patient.contact). */
struct jk_fhir_node {
    uint32_t path;       /* string offset: "Patient.contact" */
    uint16_t first_elem; /* its elements are elems[first_elem .. first_elem + n_elems) */
    uint16_t n_elems;    /* sorted by name (bytewise) */
    uint8_t n_required;  /* required bits 0 .. n_required-1 used by its elements */
};

/* One child element as it is named in JSON. A choice element value[x] appears once per type
 * (valueQuantity, valueString, ...), each variant linked to its choice. */
struct jk_fhir_elem {
    uint32_t name;    /* string offset: "birthDate", "valueQuantity" */
    uint16_t type;    /* index into the types */
    uint16_t node;    /* children for complex types, backbone elements and contentReference;
                       * JK_FHIR_NONE for primitives and resources */
    uint16_t binding; /* required value set index, JK_FHIR_NONE when none (or not expandable) */
    uint16_t choice;  /* choice index for variants, JK_FHIR_NONE otherwise */
    uint16_t max;     /* maximum cardinality, JK_FHIR_UNBOUNDED for * */
    uint8_t min;      /* minimum cardinality */
    uint8_t req_bit;  /* bit in the node's required set when min > 0, else 0xFF */
    uint8_t flags;    /* JK_FHIR_EF_* */
    uint8_t name_len; /* strlen of name */
};

/* A choice element such as Observation.value[x]. */
struct jk_fhir_choice {
    uint32_t name;  /* string offset: "value" */
    uint16_t node;  /* the node it belongs to */
    uint16_t first; /* variants: jk_fhir_choice_variant(c, 0 .. n_variants-1) */
    uint16_t n_variants;
};

/* A value set of a required binding, expanded at generation time. */
struct jk_fhir_valueset {
    uint32_t url;        /* string offset, without version */
    uint32_t first_code; /* codes sorted by code, then system */
    uint32_t n_codes;
};

struct jk_fhir_code {
    uint32_t code;   /* string offset */
    uint32_t system; /* string offset */
};

/* A primitive type's regex compiled by the generator into a DFA over bytes. */
struct jk_fhir_dfa {
    uint32_t classes; /* offset of its 256-entry byte -> class map */
    uint32_t trans;   /* offset of its transitions: n_classes next states per state */
    uint32_t accept;  /* offset of its accepting flags, one per state */
    uint16_t n_classes;
    uint16_t start; /* state 0 is the dead state */
};

/* The string at offset off in the model's string pool. Static storage. */
const char *jk_fhir_str(uint32_t off);

/* The type named name[0..len) (case-sensitive, "Patient", "string"), or NULL. Static. */
const struct jk_fhir_type *jk_fhir_type_find(const char *name, size_t len);

/* The type at index i (from jk_fhir_elem.type), or NULL when out of range. Static. */
const struct jk_fhir_type *jk_fhir_type_at(uint16_t i);

/* The index of type t in the type table. */
uint16_t jk_fhir_type_index(const struct jk_fhir_type *t);

/* The number of types. Types are sorted by name; jk_fhir_type_at(0 .. n-1) lists them. */
size_t jk_fhir_n_types(void);

/* The node at index i, or NULL when i is JK_FHIR_NONE or out of range. Static. */
const struct jk_fhir_node *jk_fhir_node_at(uint16_t i);

/* The element of node named name[0..len) as written in JSON ("given", "valueQuantity"), or
 * NULL. Binary search over the node's sorted children. Static. */
const struct jk_fhir_elem *jk_fhir_elem_find(const struct jk_fhir_node *node, const char *name,
                                             size_t len);

/* The i-th element of node (0 .. n_elems-1). Static. */
const struct jk_fhir_elem *jk_fhir_node_elem(const struct jk_fhir_node *node, size_t i);

/* The element at a dotted path: "Patient.contact.name", "Observation.valueQuantity",
 * "Questionnaire.item.item.text". A choice written "value[x]" gives its first variant. NULL
 * when any step is unknown. Static. */
const struct jk_fhir_elem *jk_fhir_elem_by_path(const char *path, size_t len);

/* The node holding elem's children (complex types, backbone elements), or NULL. Static. */
const struct jk_fhir_node *jk_fhir_elem_node(const struct jk_fhir_elem *elem);

/* The choice element that elem is a variant of, or NULL. Static. */
const struct jk_fhir_choice *jk_fhir_choice_of(const struct jk_fhir_elem *elem);

/* The i-th variant (0 .. n_variants-1) of choice c. Static. */
const struct jk_fhir_elem *jk_fhir_choice_variant(const struct jk_fhir_choice *c, size_t i);

/* The value set at index i (from jk_fhir_elem.binding), or NULL. Static. */
const struct jk_fhir_valueset *jk_fhir_valueset_at(uint16_t i);

/* Whether code[0..code_len) is in vs. With system NULL any system matches (for `code`
 * elements); otherwise system[0..system_len) must match too (Coding). */
int jk_fhir_valueset_has(const struct jk_fhir_valueset *vs, const char *system, size_t system_len,
                         const char *code, size_t code_len);

/* The i-th code of vs (0 .. n_codes-1; sorted by code), or NULL. Static. */
const char *jk_fhir_valueset_code(const struct jk_fhir_valueset *vs, size_t i);

/* Whether vs includes any code from system[0..system_len). */
int jk_fhir_valueset_has_system(const struct jk_fhir_valueset *vs, const char *system,
                                size_t system_len);

/* Whether s[0..n) matches the value regex of primitive type t (true when t has none). Uses
 * the DFA the generator compiled from the StructureDefinition regex: no locks, no allocation,
 * one table step per byte. Equivalent to regexec on jk_fhir_type_regex(t), which the unit
 * tests check. */
int jk_fhir_type_match(const struct jk_fhir_type *t, const char *s, size_t n);

/* The compiled regex for t's value (anchored POSIX ERE), or NULL when t has none. All regexes
 * are compiled once, on first use, under pthread_once; the result is shared by all threads
 * (regexec on it is thread-safe) and lives until exit. */
const regex_t *jk_fhir_type_regex(const struct jk_fhir_type *t);

/* The source text of t's value regex, or NULL. Static. */
const char *jk_fhir_type_regex_text(const struct jk_fhir_type *t);

#endif
