/* diag.c - an arena-backed list of OperationOutcome issues. */
#include "core/diag.h"

#include <stdarg.h>
#include <string.h>

#include "core/arena.h"

void jk_diag_init(struct jk_diag *d, struct jk_arena *arena)
{
    memset(d, 0, sizeof *d);
    d->arena = arena;
    d->max_issues = 100;
}

jk_rc jk_diag_add(struct jk_diag *d, jk_rc rc, const char *code, const char *expr, const char *fmt,
                  ...)
{
    d->n_issues++;
    size_t max = d->max_issues ? d->max_issues : 100;
    if (d->n_issues > max) return rc;
    struct jk_issue *is = jk_arena_zalloc(d->arena, sizeof *is);
    if (!is) return rc;
    va_list ap;
    va_start(ap, fmt);
    is->msg = jk_arena_vprintf(d->arena, fmt, ap);
    va_end(ap);
    is->rc = rc;
    is->code = code ? code : jk_rc_issue_code(rc);
    is->expr = jk_arena_strdup(d->arena, expr);
    if (d->tail)
        d->tail->next = is;
    else
        d->head = is;
    d->tail = is;
    return rc;
}

jk_rc jk_diag_rc(const struct jk_diag *d)
{
    return d->head ? d->head->rc : JK_OK;
}
