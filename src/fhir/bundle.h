/* bundle.h - transaction and batch Bundles (R4 http.html#transaction), and the searchset
 * Bundle of Patient/$everything. */
#ifndef JK_FHIR_BUNDLE_H
#define JK_FHIR_BUNDLE_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/diag.h"
#include "fhir/json.h"
#include "store/store.h"

struct jk_arena;
struct jk_fhir_write_hooks;

/* What the response Bundle carries for each entry that wrote a resource (Prefer: return=). */
enum jk_bundle_return {
    JK_BUNDLE_RETURN_REPRESENTATION, /* the resource as stored (the default) */
    JK_BUNDLE_RETURN_MINIMAL,        /* only response.status, location, etag, lastModified */
    JK_BUNDLE_RETURN_OUTCOME         /* an OperationOutcome in response.outcome */
};

struct jk_bundle_ctx {
    jk_store *db; /* used by jk_fhir_bundle_process only */
    struct jk_arena *arena;
    struct jk_diag *diag;
    const char *base_url; /* "http://127.0.0.1:8080": for fullUrl and location */
    int64_t now_ms;       /* lastUpdated of every version the Bundle writes */
    enum jk_bundle_return prefer;
    const struct jk_json_limits *json_limits; /* for JSON Patch documents in Binary entries;
                                               * NULL: 64 levels, 50,000 elements */
    /* Given to every write (authorisation and audit inside the transaction). With hooks,
     * GET entries are refused: reads go through the read and search interactions, where
     * they are authorised. NULL: none. */
    const struct jk_fhir_write_hooks *hooks;
};

/* Processes a parsed Bundle of type transaction or batch, blocking until the commit is
 * durable (for the command line: `jiankang import`). A transaction is all or nothing, in one
 * store transaction, in the order the specification gives (DELETE, POST, PUT/PATCH, GET),
 * with urn:uuid: and conditional references resolved; a failing entry makes the whole call
 * fail with issues naming the entry (Bundle.entry[3]...) and nothing is written. A batch
 * answers every entry on its own. On success *out is the response Bundle's JSON text, in the
 * arena. The caller keeps ownership of bundle, whose references are rewritten in place. */
jk_rc jk_fhir_bundle_process(struct jk_bundle_ctx *bx, struct json_object *bundle, const char **out,
                             size_t *out_len);

/* The same in three steps, so that a server thread never waits for a commit:
 *   jk_fhir_bundle_prepare   parse and check the entries, validate, assign ids, rewrite the
 *                            references that can be resolved now, render the resources;
 *   jk_fhir_bundle_tx        the transaction function (jk_tx_fn) for jk_store_tx_async: the
 *                            searches of conditional interactions and references, and every
 *                            write and read;
 *   jk_fhir_bundle_finish    after the commit (or rollback), with the transaction's rc: the
 *                            response Bundle, or the rc and bx->diag of the failure.
 * The job lives in bx->arena. bundle must stay alive until finish returns; finish must be
 * called once prepare has succeeded (it releases what the job holds), even if the
 * transaction was never run (pass its rc then). Prepare returns JK_EINVAL for a Bundle that
 * is not of type transaction or batch, has duplicate fullUrls, or (transaction) any entry
 * that is malformed or invalid. */
struct jk_bundle_job;
jk_rc jk_fhir_bundle_prepare(struct jk_bundle_ctx *bx, struct json_object *bundle,
                             struct jk_bundle_job **out);
jk_rc jk_fhir_bundle_tx(jk_conn *c, void *job);
jk_rc jk_fhir_bundle_finish(struct jk_bundle_job *job, jk_rc tx_rc, const char **out,
                            size_t *out_len);

/* Patient/$everything: one page of the patient, every resource of its compartment (the
 * official CompartmentDefinition, found through the reference search index) and the
 * resources those reference (search.mode "include"), as a searchset Bundle, ordered by type
 * and id with the patient first. */
struct jk_everything_req {
    const char *patient_id;
    const char *since;        /* lastUpdated >= since (an instant as stored), or NULL */
    const char *const *types; /* _type: only these resource types; NULL: all */
    size_t n_types;
    size_t count;       /* entries per page */
    const char *cursor; /* "Type/id" of the last entry of the previous page */
    const char *base_url;
    const char *next_query; /* query arguments the next link repeats (_since, _type) */
    /* Whether the caller may see type/id (authorisation); NULL: everything. */
    int (*is_visible)(void *arg, const char *type, const char *id);
    void *visible_arg;
};

/* Appends the page's Bundle to out, reading through c. JK_ENOTFOUND / JK_EGONE with an
 * issue when the patient is unknown or deleted. */
jk_rc jk_fhir_everything(jk_conn *c, struct jk_arena *a, struct jk_diag *d,
                         const struct jk_everything_req *q, struct jk_buf *out);

#endif
