/* api_int.h - helpers shared by the handlers of src/api. */
#ifndef JK_API_INT_H
#define JK_API_INT_H

#include "api/api.h"
#include "core/buf.h"

#define JK_FHIR_JSON "application/fhir+json; charset=utf-8"

/* The application state of the request's server. */
struct jk_app *jk_api_app(struct jk_http_req *rq);

/* Responds with b's contents as FHIR JSON (copied into the request arena; b is freed). */
jk_rc jk_api_send_buf(struct jk_http_req *rq, int status, struct jk_buf *b);

/* Appends rq's diagnostics as an OperationOutcome; severity NULL picks error or fatal. */
jk_rc jk_api_outcome_text(struct jk_http_req *rq, const char *severity, struct jk_buf *b);

/* JK_EMEDIA unless _format is absent or names JSON. */
jk_rc jk_api_check_format(struct jk_http_req *rq);

/* Handlers. */
jk_rc jk_api_healthz(struct jk_http_req *rq);
jk_rc jk_api_metrics(struct jk_http_req *rq);
jk_rc jk_api_fhir_metadata(struct jk_http_req *rq);
jk_rc jk_api_fhir_read(struct jk_http_req *rq);
jk_rc jk_api_fhir_vread(struct jk_http_req *rq);
jk_rc jk_api_fhir_create(struct jk_http_req *rq);
jk_rc jk_api_fhir_update(struct jk_http_req *rq);
jk_rc jk_api_fhir_delete(struct jk_http_req *rq);
jk_rc jk_api_fhir_cond_update(struct jk_http_req *rq);
jk_rc jk_api_fhir_cond_delete(struct jk_http_req *rq);
jk_rc jk_api_fhir_history(struct jk_http_req *rq);

#endif
