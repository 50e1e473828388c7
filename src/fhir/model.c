/* model.c - lookups over the generated FHIR R4 tables (model_gen.c). */
#include "fhir/model.h"

#include <pthread.h>
#include <string.h>

#include "fhir/model_gen.h"

/* Compares name[0..len) with s[0..n), bytewise, as the generator sorted. */
static int cmp_len(const char *name, size_t len, const char *s, size_t n)
{
    int c = memcmp(name, s, len < n ? len : n);
    if (c) return c;
    return len < n ? -1 : len > n ? 1 : 0;
}

/* Compares name[0..len) with the NUL-terminated s. */
static int cmp_name(const char *name, size_t len, const char *s)
{
    return cmp_len(name, len, s, strlen(s));
}

const char *jk_fhir_str(uint32_t off)
{
    return off < JK_FHIR_STR_BYTES ? jk_fhir_gen_str + off : "";
}

const struct jk_fhir_type *jk_fhir_type_find(const char *name, size_t len)
{
    size_t lo = 0, hi = JK_FHIR_N_TYPES;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct jk_fhir_type *t = &jk_fhir_gen_types[mid];
        int c = cmp_len(name, len, jk_fhir_gen_str + t->name, t->name_len);
        if (c == 0) return &jk_fhir_gen_types[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const struct jk_fhir_type *jk_fhir_type_at(uint16_t i)
{
    return i < JK_FHIR_N_TYPES ? &jk_fhir_gen_types[i] : NULL;
}

uint16_t jk_fhir_type_index(const struct jk_fhir_type *t)
{
    return (uint16_t)(t - jk_fhir_gen_types);
}

size_t jk_fhir_n_types(void)
{
    return JK_FHIR_N_TYPES;
}

const struct jk_fhir_node *jk_fhir_node_at(uint16_t i)
{
    return i < JK_FHIR_N_NODES ? &jk_fhir_gen_nodes[i] : NULL;
}

const struct jk_fhir_elem *jk_fhir_elem_find(const struct jk_fhir_node *node, const char *name,
                                             size_t len)
{
    const struct jk_fhir_elem *e = jk_fhir_gen_elems + node->first_elem;
    size_t lo = 0, hi = node->n_elems;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_len(name, len, jk_fhir_gen_str + e[mid].name, e[mid].name_len);
        if (c == 0) return &e[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const struct jk_fhir_elem *jk_fhir_node_elem(const struct jk_fhir_node *node, size_t i)
{
    return i < node->n_elems ? &jk_fhir_gen_elems[node->first_elem + i] : NULL;
}

const struct jk_fhir_node *jk_fhir_elem_node(const struct jk_fhir_elem *elem)
{
    if (elem->node != JK_FHIR_NONE) return &jk_fhir_gen_nodes[elem->node];
    return NULL;
}

const struct jk_fhir_choice *jk_fhir_choice_of(const struct jk_fhir_elem *elem)
{
    return elem->choice < JK_FHIR_N_CHOICES ? &jk_fhir_gen_choices[elem->choice] : NULL;
}

const struct jk_fhir_elem *jk_fhir_choice_variant(const struct jk_fhir_choice *c, size_t i)
{
    if (i >= c->n_variants) return NULL;
    return &jk_fhir_gen_elems[jk_fhir_gen_choice_elems[c->first + i]];
}

/* The first variant of the choice named stem[0..len) in node, or NULL. */
static const struct jk_fhir_elem *choice_first(const struct jk_fhir_node *node, const char *stem,
                                               size_t len)
{
    for (size_t i = 0; i < JK_FHIR_N_CHOICES; i++) {
        const struct jk_fhir_choice *c = &jk_fhir_gen_choices[i];
        if (&jk_fhir_gen_nodes[c->node] != node) continue;
        if (cmp_name(stem, len, jk_fhir_gen_str + c->name) == 0)
            return jk_fhir_choice_variant(c, 0);
    }
    return NULL;
}

const struct jk_fhir_elem *jk_fhir_elem_by_path(const char *path, size_t len)
{
    const char *dot = memchr(path, '.', len);
    size_t n = dot ? (size_t)(dot - path) : len;
    const struct jk_fhir_type *t = jk_fhir_type_find(path, n);
    if (!t || t->node == JK_FHIR_NONE || !dot) return NULL;
    const struct jk_fhir_node *node = &jk_fhir_gen_nodes[t->node];
    const struct jk_fhir_elem *e = NULL;
    size_t pos = n + 1;
    while (pos <= len) {
        if (!node) return NULL;
        const char *seg = path + pos;
        const char *end = memchr(seg, '.', len - pos);
        size_t seg_len = end ? (size_t)(end - seg) : len - pos;
        if (seg_len > 3 && memcmp(seg + seg_len - 3, "[x]", 3) == 0)
            e = choice_first(node, seg, seg_len - 3);
        else
            e = jk_fhir_elem_find(node, seg, seg_len);
        if (!e) return NULL;
        if (!end) return e;
        node = jk_fhir_elem_node(e);
        pos += seg_len + 1;
    }
    return NULL;
}

const struct jk_fhir_valueset *jk_fhir_valueset_at(uint16_t i)
{
    return i < JK_FHIR_N_VALUESETS ? &jk_fhir_gen_valuesets[i] : NULL;
}

int jk_fhir_valueset_has(const struct jk_fhir_valueset *vs, const char *system, size_t system_len,
                         const char *code, size_t code_len)
{
    const struct jk_fhir_code *codes = jk_fhir_gen_codes + vs->first_code;
    size_t lo = 0, hi = vs->n_codes;
    /* Lower bound of code: the same code may be listed under several systems. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_name(code, code_len, jk_fhir_gen_str + codes[mid].code) > 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < vs->n_codes; i++) {
        if (cmp_name(code, code_len, jk_fhir_gen_str + codes[i].code) != 0) break;
        if (!system) return 1;
        if (cmp_name(system, system_len, jk_fhir_gen_str + codes[i].system) == 0) return 1;
    }
    return 0;
}

const char *jk_fhir_valueset_code(const struct jk_fhir_valueset *vs, size_t i)
{
    if (i >= vs->n_codes) return NULL;
    return jk_fhir_gen_str + jk_fhir_gen_codes[vs->first_code + i].code;
}

int jk_fhir_valueset_has_system(const struct jk_fhir_valueset *vs, const char *system,
                                size_t system_len)
{
    const struct jk_fhir_code *codes = jk_fhir_gen_codes + vs->first_code;
    for (size_t i = 0; i < vs->n_codes; i++)
        if (cmp_name(system, system_len, jk_fhir_gen_str + codes[i].system) == 0) return 1;
    return 0;
}

int jk_fhir_type_match(const struct jk_fhir_type *t, const char *s, size_t n)
{
    if (t->regex >= JK_FHIR_N_REGEX) return 1;
    const struct jk_fhir_dfa *d = &jk_fhir_gen_dfas[t->regex];
    const uint8_t *classes = jk_fhir_gen_dfa_classes + d->classes;
    const uint16_t *trans = jk_fhir_gen_dfa_trans + d->trans;
    unsigned st = d->start;
    for (size_t i = 0; i < n; i++) {
        st = trans[st * d->n_classes + classes[(unsigned char)s[i]]];
        if (st == 0) return 0;
    }
    return jk_fhir_gen_dfa_accept[d->accept + st];
}

/* The compiled regexes, owned here for the life of the process. */
static regex_t regexes[JK_FHIR_N_REGEX];
static int regex_ok[JK_FHIR_N_REGEX];
static pthread_once_t regex_once = PTHREAD_ONCE_INIT;

static void compile_regexes(void)
{
    for (size_t i = 0; i < JK_FHIR_N_REGEX; i++)
        regex_ok[i] = regcomp(&regexes[i], jk_fhir_gen_str + jk_fhir_gen_regex[i],
                              REG_EXTENDED | REG_NOSUB) == 0;
}

const regex_t *jk_fhir_type_regex(const struct jk_fhir_type *t)
{
    if (t->regex >= JK_FHIR_N_REGEX) return NULL;
    pthread_once(&regex_once, compile_regexes);
    return regex_ok[t->regex] ? &regexes[t->regex] : NULL;
}

const char *jk_fhir_type_regex_text(const struct jk_fhir_type *t)
{
    if (t->regex >= JK_FHIR_N_REGEX) return NULL;
    return jk_fhir_gen_str + jk_fhir_gen_regex[t->regex];
}
