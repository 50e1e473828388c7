/* arena.c - a chain of blocks; large requests get a block of their own. */
#include "core/arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN         16
#define ARENA_DEFAULT_BLOCK 8192

struct block {
    struct block *next;
    size_t cap;
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

struct jk_arena {
    struct block *head;  /* current block, the first block is last in the chain */
    struct block *first; /* kept across resets */
    size_t block_bytes;
    size_t used_total;
};

static struct block *block_new(size_t cap)
{
    if (cap > SIZE_MAX - sizeof(struct block)) return NULL;
    struct block *b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    return b;
}

struct jk_arena *jk_arena_new(size_t block_bytes)
{
    struct jk_arena *a = malloc(sizeof *a);
    if (!a) return NULL;
    a->block_bytes = block_bytes ? block_bytes : ARENA_DEFAULT_BLOCK;
    a->first = block_new(a->block_bytes);
    if (!a->first) {
        free(a);
        return NULL;
    }
    a->head = a->first;
    a->used_total = 0;
    return a;
}

static void free_chain_until(struct block *b, const struct block *stop)
{
    while (b && b != stop) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
}

void jk_arena_free(struct jk_arena *a)
{
    if (!a) return;
    free_chain_until(a->head, a->first);
    free(a->first);
    free(a);
}

void jk_arena_reset(struct jk_arena *a)
{
    free_chain_until(a->head, a->first);
    a->head = a->first;
    a->first->used = 0;
    a->first->next = NULL;
    a->used_total = 0;
}

void *jk_arena_alloc(struct jk_arena *a, size_t n)
{
    if (n == 0) n = 1;
    if (n > SIZE_MAX - ARENA_ALIGN) return NULL;
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    struct block *b = a->head;
    if (b->cap - b->used < need) {
        size_t cap = need > a->block_bytes ? need : a->block_bytes;
        struct block *nb = block_new(cap);
        if (!nb) return NULL;
        nb->next = b;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->used_total += need;
    return p;
}

void *jk_arena_zalloc(struct jk_arena *a, size_t n)
{
    void *p = jk_arena_alloc(a, n);
    if (p) memset(p, 0, n);
    return p;
}

char *jk_arena_strndup(struct jk_arena *a, const char *p, size_t n)
{
    char *s = jk_arena_alloc(a, n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

char *jk_arena_strdup(struct jk_arena *a, const char *s)
{
    return s ? jk_arena_strndup(a, s, strlen(s)) : NULL;
}

char *jk_arena_vprintf(struct jk_arena *a, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) return NULL;
    char *s = jk_arena_alloc(a, (size_t)n + 1);
    if (!s) return NULL;
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *jk_arena_printf(struct jk_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = jk_arena_vprintf(a, fmt, ap);
    va_end(ap);
    return s;
}

size_t jk_arena_used(const struct jk_arena *a)
{
    return a->used_total;
}
