/* extract.h - the search index rows of a resource, read along the compiled paths of every
 * search parameter of its type (src/fhir/search_gen.c). */
#ifndef JK_FHIR_EXTRACT_H
#define JK_FHIR_EXTRACT_H

#include <json-c/json.h>
#include <stddef.h>

#include "core/rc.h"
#include "store/resource.h"

struct jk_arena;

/* Every index row of res (a parsed resource, normally already validated): one or more per value
 * of each search parameter of its type and of the common ones (_tag, _profile, _security,
 * _source), identical rows once. _id and _lastUpdated have no rows (the resource table answers
 * them). Besides the parameters' own rows there are TOKEN rows "<code>:of-type" (identifier
 * type system and code in s1/s2, the identifier value in s3) and "<code>:identifier"
 * (Reference.identifier system and value in s1/s2); docs/internals/search.md lists them all.
 *
 * A value that cannot be indexed (a malformed date, a contained "#x" reference) is skipped,
 * never an error: a resource the validator accepted always gets its rows. A resource of an
 * unknown type, or no resourceType, gets none.
 *
 * *rows (and every string in them) is allocated from a; res is only read, so several threads may
 * extract from different resources at once. Returns JK_OK, or JK_ENOMEM. */
jk_rc jk_fhir_extract(struct jk_arena *a, struct json_object *res, struct jk_idx_row **rows,
                      size_t *n_rows);

#endif
