/* search.h - FHIR search: from query parameters to matching resources, and the searchset
 * Bundle of the search interaction. How a query becomes SQL: docs/internals/search.md. */
#ifndef JK_FHIR_SEARCH_H
#define JK_FHIR_SEARCH_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/diag.h"
#include "store/store.h"

struct jk_arena;

/* Limits of one search. Past a limit the request is refused (400), except _count (lowered to
 * the maximum) and included resources (cut, with a warning in the Bundle). */
#define JK_SEARCH_DEFAULT_COUNT 20   /* _count when absent */
#define JK_SEARCH_MAX_COUNT     1000 /* largest page */
#define JK_SEARCH_MAX_PARAMS    64   /* query parameters in one request */
#define JK_SEARCH_MAX_VALUES    32   /* comma-separated (OR) values of one parameter */
#define JK_SEARCH_MAX_CHAIN     3    /* links in a chain: subject:Patient.organization.name */
#define JK_SEARCH_MAX_HAS       2    /* nested _has */
#define JK_SEARCH_MAX_SORT      4    /* _sort keys */
#define JK_SEARCH_MAX_INCLUDES  16   /* _include and _revinclude parameters */
#define JK_SEARCH_MAX_INCLUDED  1000 /* resources included in one page */
#define JK_SEARCH_MAX_ITERATE   3    /* rounds of _include:iterate / _revinclude:iterate */

/* Ids of the current, non-deleted resources of type that match every parameter in
 * keys/values (percent-decoded, as in a search URL; result parameters such as _count or
 * _sort are refused here). At most max ids; *n_ids is how many. Used by conditional create,
 * update and delete and by conditional references in transactions. JK_EINVAL with an issue
 * naming the parameter for an unknown or malformed one. */
jk_rc jk_fhir_search_match(jk_conn *c, struct jk_arena *a, struct jk_diag *d, const char *type,
                           const char *const *keys, const char *const *values, size_t n, size_t max,
                           const char ***ids, size_t *n_ids);

/* How a search is parsed and rendered. */
#define JK_SEARCH_STRICT 1u /* Prefer: handling=strict: unknown parameters are a 400 */
#define JK_SEARCH_CRITERIA                                                                         \
    2u /* criteria only (conditional operations): no result parameters,                            \
        * unknown parameters are a 400 */

/* Which resources of one type a search may return (authorisation, docs/internals/authz.md). */
struct jk_search_scope {
    enum { JK_SCOPE_NONE, JK_SCOPE_ALL, JK_SCOPE_SOME } mode;
    const char *const *patients; /* SOME: in the Patient compartment of one of these ids ... */
    size_t n_patients;
    const char *const *orgs; /* ... or held by one of these organisations (res_owner.org) */
    size_t n_orgs;
};

/* Fills out with the scope of type. */
typedef void (*jk_search_scope_fn)(void *arg, const char *type, struct jk_search_scope *out);

struct jk_search_opts {
    unsigned flags;       /* JK_SEARCH_* */
    const char *base_url; /* "http://127.0.0.1:8080": links, fullUrl, local absolute references */
    int64_t now_ms;       /* the clock, for the ap prefix */
    jk_search_scope_fn scope; /* NULL: every resource may be returned */
    void *scope_arg;
    /* Called with scope_arg for each resource put in the Bundle (matches and includes); may
     * be NULL. */
    void (*on_entry)(void *arg, const char *type, const char *id);
};

/* A parsed search (the plan's input): parameters, result parameters, paging position. Lives
 * in the arena it was parsed into. */
struct jk_search;

/* Parses a search of resource type over n percent-decoded query parameters. Unknown
 * parameters are ignored with a warning (rendered in the Bundle) unless o->flags has
 * JK_SEARCH_STRICT or JK_SEARCH_CRITERIA; malformed values, unknown modifiers and bad prefixes
 * are JK_EINVAL with an issue in d naming the parameter; a search over a limit is JK_EINVAL
 * too. *out is in the arena. */
jk_rc jk_fhir_search_parse(struct jk_arena *a, struct jk_diag *d, const char *type,
                           const char *const *keys, const char *const *values, size_t n,
                           const struct jk_search_opts *o, struct jk_search **out);

/* Runs a parsed search on c (reads only) and renders the searchset Bundle into out (which
 * the caller initialised and frees): the page of matches in _sort order (default: the order
 * of their last change), self/next/previous links whose cursor neither skips nor repeats a
 * result when resources are added meanwhile, total when asked (_total) or free, included
 * resources, and an OperationOutcome entry for ignored parameters. JK_EINVAL (with an
 * issue) for a cursor that does not fit the search; JK_EDB when the store fails. */
jk_rc jk_fhir_search_run(jk_conn *c, struct jk_search *q, struct jk_buf *out);

/* jk_fhir_search_parse then jk_fhir_search_run. */
jk_rc jk_fhir_search_bundle(jk_conn *c, struct jk_arena *a, struct jk_diag *d, const char *type,
                            const char *const *keys, const char *const *values, size_t n,
                            const struct jk_search_opts *o, struct jk_buf *out);

#endif
