/* fuzz_search_query.c - libFuzzer harness: a search URL's query string through the query
 * splitter and the search parser, as GET /fhir/R4/:type?... runs them. The first byte picks
 * the resource type. */
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/diag.h"
#include "fhir/search.h"
#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const types[] = {"Patient",           "Observation", "Encounter",
                                        "MedicationRequest", "Condition",   "Organization"};
    if (size < 1) return 0;
    struct jk_arena *a = jk_arena_new(0);
    if (!a) return 0;
    const char *type = types[data[0] % (sizeof types / sizeof types[0])];
    char *text = jk_arena_strndup(a, (const char *)data + 1, size - 1);
    const char **keys, **values;
    size_t n = text ? jk_http_parse_query(a, text, &keys, &values) : 0;
    struct jk_diag d;
    jk_diag_init(&d, a);
    struct jk_search_opts o = {.base_url = "http://127.0.0.1:8080", .now_ms = 1700000000000};
    struct jk_search *q;
    jk_fhir_search_parse(a, &d, type, keys, values, n, &o, &q);
    jk_arena_free(a);
    return 0;
}
