/* outcome.c - errors as OperationOutcome resources; the one place rc becomes a status. */
#include <string.h>

#include "api/api_int.h"
#include "core/arena.h"
#include "core/log.h"

struct jk_app *jk_api_app(struct jk_http_req *rq)
{
    return jk_http_app(rq);
}

jk_rc jk_api_send_buf(struct jk_http_req *rq, int status, struct jk_buf *b)
{
    char *body = jk_arena_strndup(rq->arena, b->p ? b->p : "", b->len);
    size_t len = b->len;
    jk_buf_free(b);
    if (!body) return JK_ENOMEM;
    return jk_api_send_fhir(rq, status, body, len);
}

jk_rc jk_api_outcome_text(struct jk_http_req *rq, const char *severity, struct jk_buf *b)
{
    jk_rc rc = jk_buf_puts(b, "{\"resourceType\":\"OperationOutcome\",\"issue\":[");
    for (struct jk_issue *is = rq->diag.head; is && !rc; is = is->next) {
        const char *sev = severity ? severity : is->rc >= JK_ENOMEM ? "fatal" : "error";
        rc = jk_buf_printf(b, "%s{\"severity\":\"%s\",\"code\":\"%s\"",
                           is == rq->diag.head ? "" : ",", sev, is->code);
        if (!rc && is->detail_code)
            rc = jk_buf_printf(b, ",\"details\":{\"coding\":[{\"system\":\"%s\",\"code\":\"%s\"}]}",
                               is->detail_system, is->detail_code);
        if (!rc && is->msg) {
            rc = jk_buf_puts(b, ",\"diagnostics\":\"");
            if (!rc) rc = jk_buf_json_escape(b, is->msg, strlen(is->msg));
            if (!rc) rc = jk_buf_puts(b, "\"");
        }
        if (!rc && is->expr) {
            rc = jk_buf_puts(b, ",\"expression\":[\"");
            if (!rc) rc = jk_buf_json_escape(b, is->expr, strlen(is->expr));
            if (!rc) rc = jk_buf_puts(b, "\"]");
        }
        if (!rc) rc = jk_buf_puts(b, "}");
    }
    if (!rc) rc = jk_buf_puts(b, "]}");
    return rc;
}

void jk_api_error(struct jk_http_req *rq, jk_rc rc)
{
    int status = jk_rc_http_status(rc);
    if (status >= 500) {
        jk_log_error("api", "request %s failed with %s on %s %s", rq->request_id, jk_rc_name(rc),
                     rq->method, rq->route ? rq->route->pattern : "(none)");
        /* Whatever the diagnostics say, a client sees only that it was our fault. */
        jk_diag_init(&rq->diag, rq->arena);
        jk_diag_add(&rq->diag, rc, NULL, NULL,
                    "an internal error occurred; quote request id %s to the operators",
                    rq->request_id);
    } else if (!rq->diag.head) {
        jk_diag_add(&rq->diag, rc, NULL, NULL, "the request cannot be processed (%s)",
                    jk_rc_name(rc));
    }
    struct jk_buf b;
    jk_buf_init(&b, 0);
    if (jk_api_outcome_text(rq, NULL, &b) || jk_api_send_buf(rq, status, &b)) {
        static const char fallback[] =
            "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"fatal\","
            "\"code\":\"exception\"}]}";
        jk_buf_free(&b);
        jk_http_respond(rq, 500, JK_FHIR_JSON, fallback, sizeof fallback - 1);
    }
}
