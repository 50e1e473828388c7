/* diag.h - problems found while handling a request, each with a FHIR expression path.
 * They become OperationOutcome issues. */
#ifndef JK_DIAG_H
#define JK_DIAG_H

#include <stddef.h>

#include "core/rc.h"

struct jk_arena;

struct jk_issue {
    jk_rc rc;
    const char *code; /* OperationOutcome issue.code: "invalid", "structure", "required",
                       * "value", "code-invalid", "too-long", "not-found", ... */
    const char *expr; /* FHIRPath of the element ("Patient.birthDate"), or NULL */
    const char *msg;  /* what is wrong, in words a person can act on */
    struct jk_issue *next;
};

struct jk_diag {
    struct jk_arena *arena; /* where issues and their strings live */
    struct jk_issue *head, *tail;
    size_t n_issues;
    size_t max_issues; /* later issues are counted but not kept (0 = 100) */
    int is_en;         /* messages written in two languages are given in English (the request's
                        * Accept-Language prefers it), else in Simplified Chinese */
};

/* Starts an empty list whose issues live in arena. */
void jk_diag_init(struct jk_diag *d, struct jk_arena *arena);

/* Appends an issue. code NULL means jk_rc_issue_code(rc); expr may be NULL. The strings are
 * copied into the arena. Returns rc, so callers can write `return jk_diag_add(...)`. */
jk_rc jk_diag_add(struct jk_diag *d, jk_rc rc, const char *code, const char *expr, const char *fmt,
                  ...) __attribute__((format(printf, 5, 6)));

/* jk_diag_add with a message written in Simplified Chinese (zh) and English (en), of which
 * d->is_en picks one. */
jk_rc jk_diag_add_text(struct jk_diag *d, jk_rc rc, const char *code, const char *expr,
                       const char *zh, const char *en);

/* Whether an Accept-Language header value (RFC 9110 12.5.4; NULL when absent) ranks English
 * above Chinese: "en", "en-US,en;q=0.9" yes; "zh-CN,zh;q=0.9,en;q=0.8", "fr" or none no. */
int jk_diag_prefers_en(const char *accept_language);

/* The rc of the first issue, or JK_OK when there is none. */
jk_rc jk_diag_rc(const struct jk_diag *d);

#endif
