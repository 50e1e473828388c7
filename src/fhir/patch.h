/* patch.h - changes to a stored resource that are not a whole new body: JSON Patch (RFC 6902)
 * as a FHIR update, and the $meta-add / $meta-delete operations. */
#ifndef JK_FHIR_PATCH_H
#define JK_FHIR_PATCH_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "core/diag.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "store/store.h"

struct jk_arena;

/* Parses p[0..n) as a JSON Patch document: a JSON array of operation objects, read with the
 * same strictness and limits as a resource (jk_json_parse). JK_EINVAL with an issue when it is
 * not JSON or not an array. On success the caller owns *out (json_object_put). */
jk_rc jk_fhir_patch_parse(const char *p, size_t n, const struct jk_json_limits *lim,
                          struct jk_diag *d, struct json_object **out);

/* Applies ops, an RFC 6902 JSON Patch document, to *doc: add, remove, replace, move, copy and
 * test, with RFC 6901 pointers (~0, ~1, "-" to append). *doc may be replaced (an operation on
 * the root); the old root is released. Operations apply in order and stop at the first that
 * fails, leaving *doc partly patched: patch a copy. Errors, each an issue naming the
 * operation by its index ("JSON Patch operation [2] (replace /name/0/family): ..."):
 * JK_EINVAL when the patch document is malformed (not an operation object, an unknown op, a
 * missing path/value/from, a pointer that is not a pointer): 400; JK_ERULE when a well-formed
 * operation cannot be applied (the path does not exist, an index is out of range, a test
 * fails): 422. */
jk_rc jk_fhir_patch_apply(struct json_object **doc, struct json_object *ops, struct jk_diag *d);

/* A PATCH interaction: the current version of type/id (or of the one resource that the
 * search cond_keys/cond_values matches) with a JSON Patch applied, written as an update. */
struct jk_fhir_patch {
    /* in */
    const char *type;
    const char *id; /* NULL for a conditional patch */
    const char *const *cond_keys, *const *cond_values;
    size_t n_cond;
    struct json_object *ops; /* the JSON Patch document; not owned */
    int64_t if_match;        /* expected current version, 0 for none */
    struct jk_arena *arena;
    struct jk_diag *diag;
    int64_t now_ms;
    /* called by jk_fhir_patch_tx on the patched resource before it is rendered (a
     * transaction Bundle rewrites its references there); may be NULL */
    jk_rc (*fixup)(void *fixup_arg, struct json_object *res);
    void *fixup_arg;
    const struct jk_fhir_write_hooks *hooks; /* given to the update; may be NULL */
    /* filled by jk_fhir_patch_load */
    const char *target_id;   /* the id patched */
    int64_t base_version;    /* the version the patch was applied to */
    struct json_object *res; /* the patched resource; released by jk_fhir_patch_release */
    struct jk_fhir_write w;  /* the update of target_id with res, not yet prepared */
};

/* Resolves the target (conditional: exactly one match, else 404 / 412), reads its current
 * version through c (404 unknown, 410 deleted, 412 If-Match mismatch), applies the patch to a
 * copy, and checks the result: the same resourceType and id (422 otherwise) and valid (422,
 * with the validator's issues). Fills p->w as the update but does not prepare it: the caller
 * may still change p->res, then calls jk_fhir_write_prepare(&p->w). Usable outside a
 * transaction (c from jk_store_conn) or inside one. */
jk_rc jk_fhir_patch_load(jk_conn *c, struct jk_fhir_patch *p);

/* The transaction function (jk_tx_fn) for p: loads and prepares it (unless
 * jk_fhir_patch_load and jk_fhir_write_prepare already ran before the transaction), then writes
 * the update on the condition that the version the patch was applied to is still current.
 * When another writer got in first (before or during the transaction) the patch is applied
 * again to the newer version, a few times at most (then JK_ECONFLICT): no concurrent update
 * is lost. p->w.out and p->w.status hold the result. */
jk_rc jk_fhir_patch_tx(jk_conn *c, void *p);

/* Releases p->res. Safe to call twice. */
void jk_fhir_patch_release(struct jk_fhir_patch *p);

/* $meta, $meta-add and $meta-delete. */
enum jk_fhir_meta_op { JK_FHIR_META_GET, JK_FHIR_META_ADD, JK_FHIR_META_DELETE };

struct jk_fhir_meta_change {
    /* in */
    enum jk_fhir_meta_op op;
    const char *type, *id;
    int64_t version;          /* 0: the current version */
    struct json_object *meta; /* the Meta whose profiles, tags and security labels are added
                               * or deleted; not owned; NULL for JK_FHIR_META_GET */
    struct jk_arena *arena;
    struct jk_diag *diag;
    /* out */
    const char *meta_text; /* the resulting Meta as JSON text, in the arena */
    size_t meta_len;
};

/* The transaction function (jk_tx_fn) for m; JK_FHIR_META_GET also works outside one. Adds
 * (sets: a tag or security label is one per system+code, a profile one per URL) or deletes
 * the profiles, tags and security labels of m->meta in the stored version itself: as R4
 * specifies, this creates no new version, so versionId and lastUpdated stay as they were;
 * when the version is the current one its search index rows are rewritten (_tag, _profile,
 * _security). JK_ENOTFOUND, JK_EGONE (a deleted resource or version) with an issue. */
jk_rc jk_fhir_meta_change_tx(jk_conn *c, void *m);

#endif
