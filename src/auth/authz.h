/* authz.h - who may do what to which resource. One decision (jk_authz_decide) for every
 * endpoint, and the same decision as a search restriction (jk_authz_scope), both made from
 * the principal's view: the patients and institutions whose records it may see. See
 * docs/internals/authz.md. */
#ifndef JK_AUTHZ_H
#define JK_AUTHZ_H

#include <stddef.h>
#include <stdint.h>

#include "auth/account.h"
#include "auth/token.h"
#include "core/rc.h"
#include "store/store.h"

enum jk_az_action {
    JK_AZ_READ,   /* read, vread, history of one resource */
    JK_AZ_SEARCH, /* search, type and system history */
    JK_AZ_COUNT,  /* a search that returns only its total (_summary=count) */
    JK_AZ_CREATE, /* the content being written (create; the new content of an update) */
    JK_AZ_UPDATE, /* the stored resource an update, patch or $meta change replaces */
    JK_AZ_DELETE  /* the stored resource a delete removes */
};

/* What a principal may see of one resource type for one action. */
struct jk_az_scope {
    enum { JK_AZ_NONE, JK_AZ_ALL, JK_AZ_SOME } mode;
    const char *const *patients; /* SOME: resources in the compartment of one of these ... */
    size_t n_patients;
    const char *const *orgs; /* ... or held by one of these organisations ("Organization/x") */
    size_t n_orgs;
    int is_break_glass; /* ALL only because of a break-glass reason */
    const char *why;    /* NONE: why, for a person (static) */
};

/* What the decision needs to know of one resource. */
struct jk_az_facts {
    const char *type;
    const char *const *patients; /* ids of the patients whose compartment holds it */
    size_t n_patients;
    const char *org; /* the organisation holding it ("Organization/x"), or NULL */
};

/* A principal's view. Shared (reference counted) between the requests of one token. */
struct jk_authz;

/* The view of p at now_ms under rules r: reads on c (the calling thread's connection), or
 * takes it from the cache when it is recent and no write has touched what it was made of.
 * The caller releases it. JK_EDB when the database fails. */
jk_rc jk_authz_get(jk_conn *c, const struct jk_security_rules *r, const struct jk_principal *p,
                   int64_t now_ms, struct jk_authz **out);
void jk_authz_release(struct jk_authz *az);

/* Tells the cache that a write has committed: every cached view is made again (any
 * write may change a relationship, a consent or a guardianship; writes are rarer than
 * reads). */
void jk_authz_touch(void);

/* The scope of az for act on type. is_break_glass: a valid break-glass reason was given. */
void jk_authz_scope(const struct jk_authz *az, enum jk_az_action act, const char *type,
                    int is_break_glass, struct jk_az_scope *out);

/* The decision: JK_OK when allowed (*is_break_glass, may be NULL, tells whether only
 * because of break-glass), else JK_EFORBIDDEN with a reason in why (static text). */
jk_rc jk_authz_decide(const struct jk_authz *az, enum jk_az_action act, const struct jk_az_facts *f,
                      int is_break_glass, int *was_break_glass, const char **why);

/* The facts of the stored resource type/id: its patients (Patient: itself) and holder, into
 * the arena. */
struct jk_arena;
jk_rc jk_authz_facts(jk_conn *c, struct jk_arena *a, const char *type, const char *id,
                     struct jk_az_facts *out);

/* Whether type's records are about patients (Patient, or in the Patient compartment). */
int jk_authz_is_patient_data(const char *type);

/* Records the organisation that holds type/id (on create), inside the write's transaction.
 * Keeps an existing holder. */
jk_rc jk_authz_set_holder(jk_conn *c, const char *type, const char *id, const char *org);

#endif
