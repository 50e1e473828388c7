/* searchparam_int.h - the layout of the generated search parameter tables (search_gen.c),
 * shared by the lookups (searchparam.c) and the extraction of index rows (extract.c). */
#ifndef JK_FHIR_SEARCHPARAM_INT_H
#define JK_FHIR_SEARCHPARAM_INT_H

#include <stddef.h>
#include <stdint.h>

#include "fhir/searchparam.h"

/* How the value at the end of a path is read (the FHIR type found there). */
enum jk_sp_vtype {
    JK_SPV_ELEMENT,   /* a composite's base element: its components are read from it */
    JK_SPV_STR,       /* a string-like primitive: string, code, id, uri, markdown ... */
    JK_SPV_HUMANNAME, /* family, given, prefix, suffix, text */
    JK_SPV_ADDRESS,   /* line, city, district, state, postalCode, country, text */
    JK_SPV_BOOL,      /* boolean: token "true" / "false" */
    JK_SPV_CODING,
    JK_SPV_CC, /* CodeableConcept */
    JK_SPV_IDENT,
    JK_SPV_CONTACT, /* ContactPoint: its value */
    JK_SPV_DATE,    /* date, dateTime, instant */
    JK_SPV_PERIOD,
    JK_SPV_TIMING, /* each event, and repeat.boundsPeriod */
    JK_SPV_NUM,    /* decimal, integer, unsignedInt, positiveInt */
    JK_SPV_QTY,    /* Quantity, Age, Duration, Count, Distance, SimpleQuantity */
    JK_SPV_MONEY,  /* value and currency (system urn:iso:std:iso:4217) */
    JK_SPV_RANGE,  /* low .. high */
    JK_SPV_REF,    /* Reference */
    JK_SPV_CANON,  /* canonical or uri searched as a reference: the text only */
    JK_SPV_URI,
    JK_SPV_DECEASED /* Patient.deceased.exists() and Patient.deceased != false */
};

/* A filter on a step's element: where(system='phone'), extension('url') (url = 'url'),
 * where(hasExtension('url')). */
enum jk_sp_where { JK_SP_WHERE_NONE, JK_SP_WHERE_EQ, JK_SP_WHERE_HAS_EXT };

/* One step of a path: a member name as written in JSON ("valueQuantity"). */
struct jk_sp_step {
    const char *name;
    const char *where_elem;  /* JK_SP_WHERE_EQ: the child compared ("system", "url") */
    const char *where_value; /* the string it must equal, or the extension url */
    uint8_t where;           /* enum jk_sp_where */
};

/* A path from the resource root (or from a composite's base element) to values. */
struct jk_sp_path {
    uint16_t first_step; /* jk_sp_gen_steps[first_step .. first_step + n_steps) */
    uint8_t n_steps;     /* 0: the element itself */
    uint8_t vtype;       /* enum jk_sp_vtype */
    const char *target;  /* where(resolve() is X): only references to resource type X */
    const char *system;  /* a code's implicit system (its required value set's), or NULL */
};

/* A parameter and how its rows are extracted. Pointers to .sp are what jk_sp_find returns. */
struct jk_sp_def {
    struct jk_sp sp;
    const char *aux_param; /* token with Identifier values: "<code>:of-type" rows; reference:
                            * "<code>:identifier" rows; NULL */
    uint16_t first_path;   /* jk_sp_gen_paths[first_path .. first_path + n_paths) */
    uint8_t n_paths;
    /* composite: the first n_base paths reach the base elements, the next n_c1 read the first
     * component from a base element, the rest the second component */
    uint8_t n_base, n_c1;
    uint8_t c1_type, c2_type; /* enum jk_sp_type of the components */
    uint8_t is_table;         /* _id, _lastUpdated: answered from the resource table, no rows */
};

/* A path that starts at the resource root, filed under its first member name. */
struct jk_sp_gen_entry {
    const char *name; /* "name", "valueQuantity"; "" for a path with no step */
    uint16_t def;     /* jk_sp_gen_defs[def] */
    uint16_t path;    /* jk_sp_gen_paths[path] */
};

/* A resource type: its parameters (own and common) sorted by code, and the paths of all of
 * them by first member name, so that extraction looks at the members a resource has rather
 * than at every parameter. */
struct jk_sp_gen_type {
    const char *name;
    uint16_t first; /* jk_sp_gen_lists[first .. first + n) */
    uint16_t n;
    const char *const *compartment; /* Patient compartment parameter codes, or NULL */
    uint16_t first_entry;           /* jk_sp_gen_entries[first_entry .. + n_entries), sorted
                                     * by name bytewise; the first n_root have name "" */
    uint16_t n_entries;
    uint16_t n_root;
};

extern const struct jk_sp_step jk_sp_gen_steps[];
extern const struct jk_sp_path jk_sp_gen_paths[];
extern const struct jk_sp_def jk_sp_gen_defs[];
extern const struct jk_sp *const jk_sp_gen_lists[];
extern const struct jk_sp_gen_type jk_sp_gen_types[];
extern const struct jk_sp_gen_entry jk_sp_gen_entries[];
extern const size_t jk_sp_gen_n_types, jk_sp_gen_n_defs;

/* The generated row of resource_type, or NULL. Binary search. */
const struct jk_sp_gen_type *jk_sp_gen_type_find(const char *resource_type);

/* The definition behind a parameter from jk_sp_find or jk_sp_list. */
static inline const struct jk_sp_def *jk_sp_def_of(const struct jk_sp *sp)
{
    return (const struct jk_sp_def *)(const void *)sp; /* sp is the first member */
}

#endif
