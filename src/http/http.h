/* http.h - the HTTP server: limits, routing, per-request arena, request ids, access log and
 * metrics, on libmicrohttpd's thread pool. It knows nothing of FHIR. */
#ifndef JK_HTTP_H
#define JK_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/diag.h"
#include "core/rc.h"

struct jk_arena;
struct jk_http_req;
struct jk_http_server;

/* Limits on what a client may send; exceeding one is a 4xx, never a crash. */
struct jk_http_limits {
    size_t max_body_bytes;   /* 413 */
    size_t max_url_bytes;    /* path plus query: 414 */
    size_t max_headers;      /* header count: 431 */
    size_t max_header_bytes; /* all header names and values: 431 */
};

/* Answers a request. Returns JK_OK after setting a response with jk_http_respond (or
 * after jk_http_defer); any other rc is turned into an error response by the error hook. */
typedef jk_rc (*jk_http_handler)(struct jk_http_req *rq);

struct jk_route {
    const char *method;  /* "GET", ...; "*" for any */
    const char *pattern; /* "/fhir/R4/:type/:id"; ":name" captures one path segment,
                          * "*name" at the end captures the rest */
    jk_http_handler handler;
};

struct jk_http_config {
    const char *listen_addr; /* "127.0.0.1" */
    uint16_t port;           /* 0 picks a free port */
    unsigned n_threads;
    struct jk_http_limits limits;
    const struct jk_route *routes; /* first match wins */
    size_t n_routes;
    /* Renders rc and the request's diagnostics as an error response (OperationOutcome). */
    void (*on_error)(struct jk_http_req *rq, jk_rc rc);
    /* Runs once when a request's response is set, before it is sent; may replace it, or park
     * the request with jk_http_defer (the API writes the audit record here). NULL: none. */
    jk_rc (*on_ready)(struct jk_http_req *rq);
    /* Runs when the request is over, before its arena is freed. NULL: none. */
    void (*on_done)(struct jk_http_req *rq);
    int is_access_log; /* one JSON line per request on standard error */
    void *app;         /* handed to handlers through jk_http_app() */
};

/* Starts listening. The caller owns *out and stops it with jk_http_stop(). */
jk_rc jk_http_start(const struct jk_http_config *cfg, struct jk_http_server **out);

/* The port actually bound (useful when the configured port was 0). */
uint16_t jk_http_port(const struct jk_http_server *s);

/* Stops accepting, lets in-flight requests finish (up to grace_ms), then stops. */
void jk_http_stop(struct jk_http_server *s, int grace_ms);

/* Writes the metrics in Prometheus text format. */
jk_rc jk_http_metrics(struct jk_http_server *s, struct jk_buf *out);

/* ---- inside a handler ---- */

struct jk_http_req {
    const char *method;
    const char *path; /* decoded path without the query */
    const char *body; /* NUL-terminated; body_len excludes the NUL */
    size_t body_len;
    struct jk_arena *arena; /* freed when the response has been sent */
    const char *request_id;
    const struct jk_route *route;
    struct jk_diag diag; /* problems to report; on_error turns them into the response */
    void *state;         /* the handler's own, across jk_http_defer */
    void *ctx;           /* the application's, for the whole request (NULL at first) */
};

/* Application pointer given in the configuration. */
void *jk_http_app(const struct jk_http_req *rq);

/* The value of request header name (case-insensitive), or NULL. */
const char *jk_http_header(struct jk_http_req *rq, const char *name);

/* The client's IP address as text ("127.0.0.1", "::1"), in the request arena; "unknown"
 * when the library cannot tell. The peer of the TCP connection: behind a proxy, the proxy. */
const char *jk_http_client_addr(struct jk_http_req *rq);

/* The value of path capture ":name", or NULL. */
const char *jk_http_param(const struct jk_http_req *rq, const char *name);

/* Query arguments in order, decoded. Returns how many; sets *keys and *values to arena
 * arrays. */
size_t jk_http_query(struct jk_http_req *rq, const char ***keys, const char ***values);

/* The first value of query argument name, or NULL. */
const char *jk_http_query_get(struct jk_http_req *rq, const char *name);

/* Splits a query string ("a=1&b=%20x") into decoded keys and values in the arena. */
size_t jk_http_parse_query(struct jk_arena *a, const char *text, const char ***keys,
                           const char ***values);

/* Adds a response header (name and value are copied). */
jk_rc jk_http_add_header(struct jk_http_req *rq, const char *name, const char *value);

/* Sets the response. body must live until the request ends (arena memory, or static). */
jk_rc jk_http_respond(struct jk_http_req *rq, int status, const char *content_type,
                      const char *body, size_t len);

/* The status of the response set so far (0: none yet). */
int jk_http_status(const struct jk_http_req *rq);

/* Tells the server the response will come later: the connection is parked until
 * jk_http_wake(rq), which may be called from any thread, even before jk_http_defer returns
 * to the server; then cont(rq) runs on a server thread and must respond. */
void jk_http_defer(struct jk_http_req *rq, jk_http_handler cont);
void jk_http_wake(struct jk_http_req *rq);

#endif
