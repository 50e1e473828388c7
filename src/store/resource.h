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

/* Inserts r as a new version. Run inside a transaction. JK_ECONFLICT when that version
 * already exists (a concurrent writer won). */
jk_rc jk_res_insert(jk_conn *c, const struct jk_res *r);

/* History, newest first: of one resource (type and id), one type (id NULL) or the whole
 * server (both NULL). Only versions with seq < before_seq (0: no bound) and last_updated >=
 * since (NULL: no bound). At most max entries; *n is how many were found. */
jk_rc jk_res_history(jk_conn *c, struct jk_arena *a, const char *type, const char *id,
                     const char *since, int64_t before_seq, size_t max, struct jk_res **out,
                     size_t *n);

/* A token search value of a resource. */
struct jk_token {
    const char *param, *system, *code;
};

/* Replaces the token index rows of type/id with tokens[0..n). Inside a transaction. */
jk_rc jk_res_index_tokens(jk_conn *c, const char *type, const char *id,
                          const struct jk_token *tokens, size_t n);

/* Ids of current, non-deleted resources of type with token param = [system|]code (system
 * NULL matches any system). At most max ids are returned; *n is how many were found. */
jk_rc jk_res_find_token(jk_conn *c, struct jk_arena *a, const char *type, const char *param,
                        const char *system, const char *code, size_t max, const char ***ids,
                        size_t *n);

#endif
