/* buf.c - bounded growable buffer. */
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jk_buf_init(struct jk_buf *b, size_t max)
{
    b->p = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

void jk_buf_free(struct jk_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static jk_rc buf_reserve(struct jk_buf *b, size_t extra)
{
    if (extra > (size_t)-1 - b->len - 1) return JK_ETOOBIG;
    size_t need = b->len + extra + 1;
    if (b->max && need - 1 > b->max) return JK_ETOOBIG;
    if (need <= b->cap) return JK_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
    if (b->max && cap > b->max + 1) cap = b->max + 1;
    char *p = realloc(b->p, cap);
    if (!p) return JK_ENOMEM;
    b->p = p;
    b->cap = cap;
    return JK_OK;
}

jk_rc jk_buf_append(struct jk_buf *b, const void *p, size_t n)
{
    jk_rc rc = buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return JK_OK;
}

jk_rc jk_buf_puts(struct jk_buf *b, const char *s)
{
    return jk_buf_append(b, s, strlen(s));
}

jk_rc jk_buf_printf(struct jk_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return JK_EINTERNAL;
    jk_rc rc = buf_reserve(b, (size_t)n);
    if (rc) return rc;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return JK_OK;
}

jk_rc jk_buf_json_escape(struct jk_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    jk_rc rc = JK_OK;
    size_t run = 0; /* bytes copied as they are, flushed in one append */
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        if (run) rc = jk_buf_append(b, s + i - run, run);
        run = 0;
        if (rc) break;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t len = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            len = 6;
        }
        rc = jk_buf_append(b, esc, len);
    }
    if (!rc && run) rc = jk_buf_append(b, s + n - run, run);
    return rc;
}
