/* validate.h - checks a FHIR R4 JSON resource against the StructureDefinition of its type. */
#ifndef JK_FHIR_VALIDATE_H
#define JK_FHIR_VALIDATE_H

#include <stddef.h>

#include "core/diag.h"
#include "core/rc.h"

struct json_object;

/* Whether name[0..len) is an R4 resource type name (Patient, Observation, ...). */
int jk_fhir_is_resource_type(const char *name, size_t len);

/* Validates res, a parsed JSON resource (json-c object), against the R4 StructureDefinition of
 * its resourceType. Appends one issue per problem to d (jk_diag_add with JK_EINVAL, an
 * OperationOutcome issue code such as "structure", "required", "value", "code-invalid",
 * "invalid", and the element's FHIRPath expression such as "Patient.birthDate" or
 * "Patient.name[0].given[1]", and a message a person can act on, in English, e.g.
 * "birthDate '1990-13-01' is not a valid date (expected YYYY, YYYY-MM or YYYY-MM-DD)").
 * Returns JK_OK when valid, JK_EINVAL otherwise. */
jk_rc jk_fhir_validate(struct json_object *res, struct jk_diag *d);

#endif
