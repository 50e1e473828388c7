/* fuzz_resource.c - libFuzzer harness: a request body through the JSON reader, the validator
 * and the write preparation, as the server runs them on every POST. Built with clang by
 * `make fuzz`; `make test` replays the seed corpus through the same entry point. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "core/diag.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "fhir/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Identity numbers are sealed on the way, with keys made from a fixed master secret. */
static void protect_init(void)
{
    static const unsigned char master[JK_MASTER_BYTES] = {1};
    static jk_keys *keys;
    char err[JK_PROTECT_ERR];
    if (keys) return;
    if (jk_keys_from(master, NULL, &keys) ||
        jk_protect_init(keys, "rules/identity.json", err, sizeof err)) {
        fprintf(stderr, "fuzz_resource: cannot start identity protection: %s\n", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct jk_json_limits limits = {64, 50000};
    protect_init();
    struct jk_arena *a = jk_arena_new(0);
    if (!a) return 0;
    struct jk_diag d;
    jk_diag_init(&d, a);
    struct json_object *res = NULL;
    if (!jk_json_parse((const char *)data, size, &limits, &d, &res) && !jk_fhir_validate(res, &d)) {
        struct jk_fhir_write w = {.kind = JK_FHIR_CREATE, .res = res, .arena = a, .diag = &d};
        w.type = jk_json_str(res, "resourceType");
        jk_fhir_write_prepare(&w);
    }
    json_object_put(res);
    jk_arena_free(a);
    return 0;
}
