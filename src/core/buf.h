/* buf.h - a growable byte buffer with a hard maximum. */
#ifndef JK_BUF_H
#define JK_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "core/rc.h"

struct jk_buf {
    char *p; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    size_t max; /* growing past this fails with JK_ETOOBIG */
};

/* An empty buffer that may grow to max bytes (0 = unlimited). No allocation yet. */
void jk_buf_init(struct jk_buf *b, size_t max);

/* Frees the storage; the buffer is empty and reusable afterwards. */
void jk_buf_free(struct jk_buf *b);

/* Appends n bytes. JK_ETOOBIG past the maximum, JK_ENOMEM when out of memory; on error the
 * buffer is unchanged. */
jk_rc jk_buf_append(struct jk_buf *b, const void *p, size_t n);
jk_rc jk_buf_puts(struct jk_buf *b, const char *s);
jk_rc jk_buf_printf(struct jk_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends s as the inside of a JSON string (quotes not included), escaping as JSON needs. */
jk_rc jk_buf_json_escape(struct jk_buf *b, const char *s, size_t n);

#endif
