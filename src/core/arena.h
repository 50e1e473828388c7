/* arena.h - region allocator: everything made for one request dies in one call. */
#ifndef JK_ARENA_H
#define JK_ARENA_H

#include <stdarg.h>
#include <stddef.h>

struct jk_arena;

/* A new arena whose first block holds block_bytes (0 = default). NULL when out of memory.
 * The caller owns it and frees it with jk_arena_free(). */
struct jk_arena *jk_arena_new(size_t block_bytes);

/* Frees the arena and everything allocated from it. NULL is allowed. */
void jk_arena_free(struct jk_arena *a);

/* Forgets every allocation but keeps the first block, for reuse. */
void jk_arena_reset(struct jk_arena *a);

/* n bytes aligned for any type, or NULL when out of memory. Owned by the arena. */
void *jk_arena_alloc(struct jk_arena *a, size_t n);

/* n zeroed bytes, or NULL. */
void *jk_arena_zalloc(struct jk_arena *a, size_t n);

/* A NUL-terminated copy of the first n bytes of p (which need not be NUL-terminated). */
char *jk_arena_strndup(struct jk_arena *a, const char *p, size_t n);

/* A NUL-terminated copy of s; NULL gives NULL. */
char *jk_arena_strdup(struct jk_arena *a, const char *s);

/* A formatted string, or NULL when out of memory. */
char *jk_arena_printf(struct jk_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
char *jk_arena_vprintf(struct jk_arena *a, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Bytes handed out since creation or the last reset (for tests and metrics). */
size_t jk_arena_used(const struct jk_arena *a);

#endif
