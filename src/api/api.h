/* api.h - the HTTP API of the platform: routes and the state its handlers share. */
#ifndef JK_API_H
#define JK_API_H

#include <stddef.h>

struct jk_audit;

#include "fhir/json.h"
#include "http/http.h"
#include "store/store.h"

struct jk_app {
    jk_store *db;
    struct jk_http_server *srv; /* for /metrics; set after the server starts */
    struct jk_json_limits json_limits;
    size_t max_bundle_entries;
    const char *base_url;         /* "http://127.0.0.1:8080" */
    const struct jk_audit *audit; /* the audit trail every access is appended to */
    int is_security_off;          /* security = off (development only): no token, no check,
                                   * no audit record */
    const char *web_dir;          /* the web pages served at / and /web/ (NULL: none) */
};

/* The route table and its length. */
const struct jk_route *jk_api_routes(size_t *n);

/* The server's hooks: commit the request's audit records before its response goes out;
 * release what the request held (api/guard.c). */
jk_rc jk_api_on_ready(struct jk_http_req *rq);
void jk_api_guard_release(struct jk_http_req *rq);

/* Renders rq's diagnostics (or a message for rc) as an OperationOutcome response. */
void jk_api_error(struct jk_http_req *rq, jk_rc rc);

#endif
