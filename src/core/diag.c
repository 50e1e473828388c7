/* diag.c - an arena-backed list of OperationOutcome issues. */
#include "core/diag.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
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

jk_rc jk_diag_add_text(struct jk_diag *d, jk_rc rc, const char *code, const char *expr,
                       const char *zh, const char *en)
{
    return jk_diag_add(d, rc, code, expr, "%s", d->is_en ? en : zh);
}

/* The weight of one language-range "tag;q=0.8" of len bytes (1 without a q). */
static double range_weight(const char *p, size_t len)
{
    const char *semi = memchr(p, ';', len);
    if (!semi) return 1.0;
    for (const char *q = semi + 1; q < p + len; q++) {
        if (*q == ' ') continue;
        if ((*q != 'q' && *q != 'Q') || q + 1 >= p + len || q[1] != '=') return 1.0;
        char num[8] = {0};
        size_t n = (size_t)(p + len - (q + 2));
        memcpy(num, q + 2, n < sizeof num - 1 ? n : sizeof num - 1);
        return strtod(num, NULL);
    }
    return 1.0;
}

int jk_diag_prefers_en(const char *accept_language)
{
    double en = 0, zh = 0;
    const char *p = accept_language;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        double w = range_weight(p, len);
        if (len >= 2 && tolower((unsigned char)p[0]) == 'e' &&
            tolower((unsigned char)p[1]) == 'n' &&
            (len == 2 || p[2] == '-' || p[2] == ';' || p[2] == ' ')) {
            if (w > en) en = w;
        } else if (len >= 2 && tolower((unsigned char)p[0]) == 'z' &&
                   tolower((unsigned char)p[1]) == 'h') {
            if (w > zh) zh = w;
        }
        p = end;
    }
    return en > zh;
}
