/* resource.h - versioned FHIR resources and their token index, on either backend. */
#ifndef JK_RESOURCE_H
#define JK_RESOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct jk_arena;

/* One version of one resource. Strings live in the arena given to the call. */
struct jk_res {
    int64_t seq; /* position in the server's history */
    const char *type, *id;
    int64_t version;
    const char *last_updated; /* FHIR instant */
    int is_deleted;
    const char *method; /* "POST", "PUT" or "DELETE": how this version was made */
    const char *body;   /* NULL for a deletion */
    size_t body_len;
};

/* The current version of type/id. JK_ENOTFOUND when it never existed; JK_EGONE when its
 * current version is a deletion (out is filled either way when found). */
jk_rc jk_res_read(jk_conn *c, struct jk_arena *a, const char *type, const char *id,
                  struct jk_res *out);

/* Version vid of type/id. JK_ENOTFOUND, or JK_EGONE for a deletion version. */
jk_rc jk_res_vread(jk_conn *c, struct jk_arena *a, const char *type, const char *id, int64_t vid,
                   struct jk_res *out);

/* The current version number of type/id (0 when it never existed), and whether that version
 * is a deletion. */
jk_rc jk_res_current_version(jk_conn *c, const char *type, const char *id, int64_t *version,
                             int *is_deleted);

/* Inserts r as a new, current version (the previous one stops being current). Run inside a
 * transaction. JK_ECONFLICT when that version already exists (a concurrent writer won). */
jk_rc jk_res_insert(jk_conn *c, const struct jk_res *r);

/* History, newest first: of one resource (type and id), one type (id NULL) or the whole
 * server (both NULL). Only versions with seq < before_seq (0: no bound) and last_updated >=
 * since (NULL: no bound). At most max entries; *n is how many were found. */
jk_rc jk_res_history(jk_conn *c, struct jk_arena *a, const char *type, const char *id,
                     const char *since, int64_t before_seq, size_t max, struct jk_res **out,
                     size_t *n);

/* One search index value of a resource; which fields count depends on kind.
 *   STRING     s1 = normalised text (lower case, accents and full-width folded), s2 = exact
 *   TOKEN      s1 = system ("" when none), s2 = code, s3 = normalised display text ("")
 *   DATE       lo_ms .. hi_ms: the instant range the value covers, inclusive
 *   NUMBER     lo .. hi: the range the value's precision covers (1.5 -> 1.45 .. 1.55)
 *   QUANTITY   s1 = system, s2 = code (unit code, "" when none), lo .. hi as for NUMBER
 *   REFERENCE  s1 = target type, s2 = target id, s3 = the reference as written
 *   URI        s1 = the uri
 *   COMPOSITE  s1 = system and s2 = code of the first component; the second component in
 *              s3 = system, s4 = code (token), lo .. hi (quantity, number, date as ms) or
 *              s5 = normalised text (string); unused ones "" or 0. */
enum jk_idx_kind {
    JK_IDX_STRING,
    JK_IDX_TOKEN,
    JK_IDX_DATE,
    JK_IDX_NUMBER,
    JK_IDX_QUANTITY,
    JK_IDX_REFERENCE,
    JK_IDX_URI,
    JK_IDX_COMPOSITE
};

struct jk_idx_row {
    enum jk_idx_kind kind;
    const char *param; /* the search parameter's code: "name", "birthdate" */
    const char *s1, *s2, *s3, *s4, *s5;
    int64_t lo_ms, hi_ms;
    double lo, hi;
};

/* Replaces every index row of type/id with rows[0..n). Inside a transaction. When
 * is_new is set (version 1 of a never-seen resource) there is nothing to delete first. */
jk_rc jk_res_index(jk_conn *c, const char *type, const char *id, const struct jk_idx_row *rows,
                   size_t n, int is_new);

/* Ids of current, non-deleted resources of type with token param = [system|]code (system
 * NULL matches any system). At most max ids are returned; *n is how many were found. */
jk_rc jk_res_find_token(jk_conn *c, struct jk_arena *a, const char *type, const char *param,
                        const char *system, const char *code, size_t max, const char ***ids,
                        size_t *n);

#endif
