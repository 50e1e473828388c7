/* rest.h - the FHIR RESTful interactions that change data: create, update, delete, each
 * possibly conditional, as one store transaction. */
#ifndef JK_FHIR_REST_H
#define JK_FHIR_REST_H

#include <json-c/json.h>

#include "core/diag.h"
#include "store/resource.h"

struct jk_arena;
struct jk_mpi_rec;

/* Search criteria of a conditional interaction: search parameters (any that search
 * supports), matched with jk_fhir_search_match inside the write's transaction. */
struct jk_fhir_criteria {
    const char *const *keys, *const *values; /* percent-decoded; _format/_pretty left out */
    size_t n;
};

/* Collects n query arguments (already percent-decoded) as criteria. JK_EINVAL when none is
 * left or one has no value; the parameters themselves are checked when the write is
 * prepared (jk_fhir_write_prepare), against the write's type. */
jk_rc jk_fhir_criteria_parse(struct jk_arena *a, struct jk_diag *d, const char *const *keys,
                             const char *const *values, size_t n, struct jk_fhir_criteria *out);

enum jk_fhir_write_kind { JK_FHIR_CREATE, JK_FHIR_UPDATE, JK_FHIR_DELETE };

struct jk_fhir_write;

/* What the caller runs inside a write's transaction (authorisation, the audit record). */
struct jk_fhir_write_hooks {
    /* Before a version of w->type/id is written (is_existing: it replaces a current one) or
     * an existing match is returned (conditional create); a non-zero rc refuses the write. */
    jk_rc (*before)(jk_conn *c, void *arg, const struct jk_fhir_write *w, const char *id,
                    int is_existing);
    /* After w was written or matched (w->out, w->status set). */
    jk_rc (*after)(jk_conn *c, void *arg, const struct jk_fhir_write *w);
    void *arg;
};

struct jk_fhir_write {
    /* in */
    enum jk_fhir_write_kind kind;
    const char *type;
    const char *id;                      /* update and delete; NULL with cond */
    struct json_object *res;             /* create and update; its id/meta are set by the write */
    int64_t if_match;                    /* expected current version, 0 for none */
    const struct jk_fhir_criteria *cond; /* conditional create/update/delete, or NULL */
    struct jk_arena *arena;
    struct jk_diag *diag;
    int64_t now_ms;
    const struct jk_fhir_write_hooks *hooks; /* or NULL */
    int is_owner; /* written by the service that keeps the type's records (jk_fhir_set_owner) */
    /* filled by jk_fhir_write_prepare, outside the transaction */
    const char *meta_rest, *rest; /* JSON members after the stamped ones */
    size_t meta_rest_len, rest_len;
    struct jk_idx_row *rows; /* search index values */
    size_t n_rows;
    struct jk_mpi_rec *mpi; /* a Patient's features for the person index, or NULL */
    /* out */
    struct jk_res out; /* the version written, or the one matched by a conditional create */
    int status;        /* 200, 201 or 204 */
};

/* A service that keeps the records of type in step with tables of its own (the booking pool:
 * Appointment, Slot): is_owned tells whether type/id is one of its records and, if so, how to
 * change it (a static message). Any other write that would replace or delete such a record is
 * refused (JK_ERULE) with that message. Once at start-up, before threads write. */
typedef jk_rc (*jk_fhir_owned_fn)(jk_conn *c, const char *type, const char *id, int *is_owned,
                                  const char **how);
void jk_fhir_set_owner(const char *type, jk_fhir_owned_fn fn);

/* Renders what can be rendered of w's resource before the transaction (everything but id,
 * version and time), so the transaction itself does only SQL, and checks w->cond's search
 * parameters (JK_EINVAL naming a bad one). Call before jk_fhir_write_tx. */
jk_rc jk_fhir_write_prepare(struct jk_fhir_write *w);

/* The transaction function (jk_tx_fn) for w. */
jk_rc jk_fhir_write_tx(jk_conn *c, void *w);

/* A new server-assigned id (a time-ordered UUID, version 7) in the arena. */
const char *jk_fhir_new_id(struct jk_arena *a);

/* Whether s (or s[0..n)) is a valid FHIR id: [A-Za-z0-9-.]{1,64}, but not "." or "..". */
int jk_fhir_id_ok(const char *s);
int jk_fhir_id_okn(const char *s, size_t n);

/* The version in an ETag or If-Match value (W/"3" or "3"), or -1 when it is not one. */
int64_t jk_fhir_parse_etag(const char *h);

#endif
