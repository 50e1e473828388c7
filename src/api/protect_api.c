/* protect_api.c - the one way out for FHIR JSON: sealed values opened or masked. */
#include "api/protect_api.h"

#include "api/api_int.h"
#include "auth/protect.h"

jk_rc jk_api_send_fhir(struct jk_http_req *rq, int status, const char *body, size_t len)
{
    const char *out;
    size_t out_len;
    jk_rc rc =
        jk_protect_view(rq->arena, body, len, JK_SHOW_IDENTITY | JK_SHOW_PHONE, &out, &out_len);
    return rc ? rc : jk_http_respond(rq, status, JK_FHIR_JSON, out, out_len);
}
