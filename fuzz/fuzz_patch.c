/* fuzz_patch.c - libFuzzer harness: a JSON Patch body through the patch reader, applied to a
 * patient and the result validated, as PATCH /fhir/R4/Patient/:id does. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/arena.h"
#include "core/diag.h"
#include "fhir/json.h"
#include "fhir/patch.h"
#include "fhir/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct jk_json_limits limits = {64, 50000};
    static const char patient[] =
        "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"active\":true,\"name\":[{\"family\":"
        "\"王\",\"given\":[\"小明\",\"明\"]}],\"telecom\":[{\"system\":\"phone\",\"value\":"
        "\"13800001000\"}],\"birthDate\":\"1985-03-12\"}";
    struct jk_arena *a = jk_arena_new(0);
    if (!a) return 0;
    struct jk_diag d;
    jk_diag_init(&d, a);
    struct json_object *ops = NULL, *doc = NULL;
    if (!jk_fhir_patch_parse((const char *)data, size, &limits, &d, &ops) &&
        !jk_json_parse(patient, sizeof patient - 1, &limits, &d, &doc) &&
        !jk_fhir_patch_apply(&doc, ops, &d))
        jk_fhir_validate(doc, &d);
    json_object_put(doc);
    json_object_put(ops);
    jk_arena_free(a);
    return 0;
}
