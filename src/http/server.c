/* server.c - libmicrohttpd glue: limits, routing, deferred responses, access log, metrics. */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/log.h"
#include "core/time.h"

#define MAX_PARAMS      8
#define REQ_ARENA_BYTES 16384

static const int status_slots[] = {200, 201, 204, 304, 400, 401, 403, 404, 405, 409, 410,
                                   412, 413, 414, 415, 422, 429, 431, 500, 503, 0};
#define N_STATUS (sizeof status_slots / sizeof status_slots[0]) /* last: any other */

static const double bucket_le_ms[] = {0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000, 5000};
#define N_BUCKETS (sizeof bucket_le_ms / sizeof bucket_le_ms[0])

struct route_metrics {
    uint64_t by_status[N_STATUS];
    uint64_t buckets[N_BUCKETS + 1]; /* last: +Inf */
    uint64_t sum_us;
};

struct jk_http_server {
    struct jk_http_config cfg;
    struct MHD_Daemon *daemon;
    uint16_t port;
    uint64_t id_prefix;
    uint64_t n_requests; /* for request ids */
    int64_t n_active;
    int is_stopping; /* new requests get 503 instead of work that might outlive the daemon */
    struct route_metrics *metrics; /* n_routes + 1 (unmatched) */
};

struct resp_header {
    const char *name, *value;
    struct resp_header *next;
};

struct req {
    struct jk_http_req pub;
    struct jk_http_server *srv;
    struct MHD_Connection *conn;
    struct jk_buf body;
    int64_t t_start_us;
    int route_idx;
    jk_rc early_rc; /* a limit broken while reading the request */
    int early_status;
    const char *param_names[MAX_PARAMS], *param_values[MAX_PARAMS];
    int n_params;
    int status;
    const char *ctype, *resp_body;
    size_t resp_len;
    struct resp_header *headers;
    /* deferred responses */
    pthread_mutex_t lock;
    jk_http_handler cont;
    int is_deferred, is_suspended, is_woken;
    int is_ready; /* on_ready has run */
};

void *jk_http_app(const struct jk_http_req *rq)
{
    return ((const struct req *)rq)->srv->cfg.app;
}

const char *jk_http_header(struct jk_http_req *rq, const char *name)
{
    return MHD_lookup_connection_value(((struct req *)rq)->conn, MHD_HEADER_KIND, name);
}

const char *jk_http_client_addr(struct jk_http_req *rq)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(((struct req *)rq)->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char text[INET6_ADDRSTRLEN];
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    const char *s = NULL;
    if (sa && sa->sa_family == AF_INET)
        s = inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, text,
                      sizeof text);
    else if (sa && sa->sa_family == AF_INET6)
        s = inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, text,
                      sizeof text);
    s = s ? jk_arena_strdup(rq->arena, s) : NULL;
    return s ? s : "unknown";
}

const char *jk_http_param(const struct jk_http_req *rq, const char *name)
{
    const struct req *r = (const struct req *)rq;
    for (int i = 0; i < r->n_params; i++)
        if (strcmp(r->param_names[i], name) == 0) return r->param_values[i];
    return NULL;
}

struct query_collect {
    struct jk_arena *arena;
    size_t n, cap;
    const char **keys, **values;
};

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    struct query_collect *q = cls;
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 8;
        const char **k = jk_arena_alloc(q->arena, cap * sizeof *k);
        const char **v = jk_arena_alloc(q->arena, cap * sizeof *v);
        if (!k || !v) return MHD_NO;
        if (q->n) {
            memcpy(k, q->keys, q->n * sizeof *k);
            memcpy(v, q->values, q->n * sizeof *v);
        }
        q->keys = k;
        q->values = v;
        q->cap = cap;
    }
    q->keys[q->n] = key;
    q->values[q->n] = value ? value : "";
    q->n++;
    return MHD_YES;
}

size_t jk_http_query(struct jk_http_req *rq, const char ***keys, const char ***values)
{
    struct query_collect q = {rq->arena, 0, 0, NULL, NULL};
    MHD_get_connection_values(((struct req *)rq)->conn, MHD_GET_ARGUMENT_KIND, collect_arg, &q);
    *keys = q.keys;
    *values = q.values;
    return q.n;
}

const char *jk_http_query_get(struct jk_http_req *rq, const char *name)
{
    return MHD_lookup_connection_value(((struct req *)rq)->conn, MHD_GET_ARGUMENT_KIND, name);
}

size_t jk_http_parse_query(struct jk_arena *a, const char *text, const char ***keys,
                           const char ***values)
{
    struct query_collect q = {a, 0, 0, NULL, NULL};
    char *copy = jk_arena_strdup(a, text ? text : "");
    char *save = NULL;
    for (char *part = copy ? strtok_r(copy, "&", &save) : NULL; part;
         part = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(part, '=');
        if (eq) *eq++ = '\0';
        MHD_http_unescape(part);
        if (eq) MHD_http_unescape(eq);
        if (collect_arg(&q, MHD_GET_ARGUMENT_KIND, part, eq ? eq : "") != MHD_YES) break;
    }
    *keys = q.keys;
    *values = q.values;
    return q.n;
}

jk_rc jk_http_add_header(struct jk_http_req *rq, const char *name, const char *value)
{
    struct req *r = (struct req *)rq;
    struct resp_header *h = jk_arena_alloc(rq->arena, sizeof *h);
    if (!h) return JK_ENOMEM;
    h->name = jk_arena_strdup(rq->arena, name);
    h->value = jk_arena_strdup(rq->arena, value);
    if (!h->name || !h->value) return JK_ENOMEM;
    h->next = r->headers;
    r->headers = h;
    return JK_OK;
}

jk_rc jk_http_respond(struct jk_http_req *rq, int status, const char *content_type,
                      const char *body, size_t len)
{
    struct req *r = (struct req *)rq;
    r->status = status;
    r->ctype = content_type;
    r->resp_body = body;
    r->resp_len = len;
    return JK_OK;
}

int jk_http_status(const struct jk_http_req *rq)
{
    return ((const struct req *)rq)->status;
}

void jk_http_defer(struct jk_http_req *rq, jk_http_handler cont)
{
    struct req *r = (struct req *)rq;
    pthread_mutex_lock(&r->lock);
    r->cont = cont;
    r->is_deferred = 1;
    pthread_mutex_unlock(&r->lock);
}

void jk_http_wake(struct jk_http_req *rq)
{
    struct req *r = (struct req *)rq;
    pthread_mutex_lock(&r->lock);
    r->is_woken = 1;
    if (r->is_suspended) {
        r->is_suspended = 0;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&r->lock);
}

/* Matches path against pattern, capturing ":name" segments. */
static int route_match(struct req *r, const char *pattern, const char *path)
{
    int n = 0;
    const char *p = pattern, *u = path;
    while (*p && *u) {
        if (*p == ':' || *p == '*') {
            const char *pend = strchr(p, '/');
            size_t plen = pend ? (size_t)(pend - p) : strlen(p);
            const char *uend = *p == '*' ? u + strlen(u) : strchr(u, '/');
            if (!uend) uend = u + strlen(u);
            if (uend == u || n == MAX_PARAMS) return 0;
            r->param_names[n] = jk_arena_strndup(r->pub.arena, p + 1, plen - 1);
            r->param_values[n] = jk_arena_strndup(r->pub.arena, u, (size_t)(uend - u));
            n++;
            p += plen;
            u = uend;
            continue;
        }
        if (*p != *u) return 0;
        p++;
        u++;
    }
    if (*p || *u) return 0;
    r->n_params = n;
    return 1;
}

static void fail(struct req *r, jk_rc rc)
{
    r->srv->cfg.on_error(&r->pub, rc);
}

static void dispatch(struct req *r)
{
    const struct jk_http_config *cfg = &r->srv->cfg;
    int path_matched = 0;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct jk_route *rt = &cfg->routes[i];
        if (!route_match(r, rt->pattern, r->pub.path)) continue;
        if (strcmp(rt->method, "*") && strcmp(rt->method, r->pub.method)) {
            path_matched = 1;
            continue;
        }
        r->route_idx = (int)i;
        r->pub.route = rt;
        jk_rc rc = rt->handler(&r->pub);
        if (rc) fail(r, rc);
        return;
    }
    if (path_matched) {
        jk_diag_add(&r->pub.diag, JK_EMETHOD, NULL, NULL, "method %s is not allowed on %s",
                    r->pub.method, r->pub.path);
        fail(r, JK_EMETHOD);
    } else {
        jk_diag_add(&r->pub.diag, JK_ENOTFOUND, NULL, NULL, "no such endpoint: %s %s",
                    r->pub.method, r->pub.path);
        fail(r, JK_ENOTFOUND);
    }
}

static enum MHD_Result queue(struct req *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        r->resp_len, (void *)(r->resp_body ? r->resp_body : ""), MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    if (r->ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
    MHD_add_response_header(resp, "X-Request-Id", r->pub.request_id);
    for (struct resp_header *h = r->headers; h; h = h->next)
        MHD_add_response_header(resp, h->name, h->value);
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Runs after the handler: either the response is ready, or the connection is parked. */
static enum MHD_Result finish_or_park(struct req *r)
{
    for (;;) {
        pthread_mutex_lock(&r->lock);
        if (!r->is_deferred) {
            pthread_mutex_unlock(&r->lock);
            if (r->srv->cfg.on_ready && !r->is_ready) {
                r->is_ready = 1;
                jk_rc rc = r->srv->cfg.on_ready(&r->pub);
                if (rc) fail(r, rc);
                continue; /* it may have parked the request */
            }
            return queue(r);
        }
        if (!r->is_woken) {
            r->is_suspended = 1;
            MHD_suspend_connection(r->conn);
            pthread_mutex_unlock(&r->lock);
            return MHD_YES;
        }
        jk_http_handler cont = r->cont;
        r->cont = NULL;
        r->is_deferred = r->is_woken = 0;
        pthread_mutex_unlock(&r->lock);
        jk_rc rc = cont(&r->pub);
        if (rc) fail(r, rc);
    }
}

static enum MHD_Result header_stats(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    size_t *st = cls;
    st[0]++;
    st[1] += strlen(key) + (value ? strlen(value) : 0);
    return MHD_YES;
}

static enum MHD_Result arg_bytes(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    *(size_t *)cls += strlen(key) + (value ? strlen(value) : 0) + 2;
    return MHD_YES;
}

static void check_limits(struct req *r)
{
    const struct jk_http_limits *lim = &r->srv->cfg.limits;
    size_t url_bytes = strlen(r->pub.path), hs[2] = {0, 0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, arg_bytes, &url_bytes);
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, header_stats, hs);
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    if (url_bytes > lim->max_url_bytes) {
        r->early_status = 414;
        r->early_rc = jk_diag_add(&r->pub.diag, JK_EINVAL, "too-long", NULL,
                                  "the URL is %zu bytes long; the limit is %zu bytes", url_bytes,
                                  lim->max_url_bytes);
    } else if (hs[0] > lim->max_headers || hs[1] > lim->max_header_bytes) {
        r->early_status = 431;
        r->early_rc = jk_diag_add(&r->pub.diag, JK_EINVAL, "too-long", NULL,
                                  "the request has %zu headers of %zu bytes; the limits are %zu "
                                  "headers and %zu bytes",
                                  hs[0], hs[1], lim->max_headers, lim->max_header_bytes);
    } else if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || end == cl || *end || n > lim->max_body_bytes)
            r->early_rc =
                jk_diag_add(&r->pub.diag, JK_ETOOBIG, "too-long", NULL,
                            "the body is larger than the limit of %zu bytes", lim->max_body_bytes);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct jk_http_server *srv = cls;
    struct req *r = *con_cls;
    if (!r) {
        struct jk_arena *a = jk_arena_new(REQ_ARENA_BYTES);
        if (!a) return MHD_NO;
        r = jk_arena_zalloc(a, sizeof *r);
        char *rid = jk_arena_alloc(a, 24);
        if (!r || !rid) {
            jk_arena_free(a);
            return MHD_NO;
        }
        uint64_t n = __atomic_add_fetch(&srv->n_requests, 1, __ATOMIC_RELAXED);
        snprintf(rid, 24, "%06llx%010llx", (unsigned long long)(srv->id_prefix & 0xffffff),
                 (unsigned long long)n);
        r->pub.arena = a;
        r->pub.request_id = rid;
        r->pub.method = method;
        r->pub.path = url;
        jk_diag_init(&r->pub.diag, a);
        r->pub.diag.is_en = jk_diag_prefers_en(
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept-Language"));
        r->srv = srv;
        r->conn = conn;
        r->route_idx = -1;
        r->t_start_us = jk_time_mono_us();
        pthread_mutex_init(&r->lock, NULL);
        jk_buf_init(&r->body, srv->cfg.limits.max_body_bytes);
        /* Counted before the stopping check: jk_http_stop sets the flag, then waits for the
         * count, so a request either is waited for or sees the flag. */
        __atomic_add_fetch(&srv->n_active, 1, __ATOMIC_SEQ_CST);
        *con_cls = r;
        if (__atomic_load_n(&srv->is_stopping, __ATOMIC_SEQ_CST)) {
            r->early_status = 503;
            r->early_rc = jk_diag_add(&r->pub.diag, JK_EINVAL, "transient", NULL,
                                      "the server is shutting down; try again in a moment");
        } else {
            check_limits(r);
        }
        if (r->early_rc) { /* answer now; the library closes instead of reading the body */
            fail(r, r->early_rc);
            if (r->early_status) r->status = r->early_status;
            return queue(r);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!r->early_rc) {
            jk_rc rc = jk_buf_append(&r->body, upload_data, *upload_data_size);
            if (rc == JK_ETOOBIG)
                r->early_rc = jk_diag_add(&r->pub.diag, JK_ETOOBIG, "too-long", NULL,
                                          "the body is larger than the limit of %zu bytes",
                                          srv->cfg.limits.max_body_bytes);
            else if (rc)
                r->early_rc = rc;
        }
        *upload_data_size = 0; /* consumed, or discarded after a broken limit */
        return MHD_YES;
    }
    if (r->is_woken && r->is_deferred) return finish_or_park(r); /* resumed */
    if (r->status) return queue(r); /* the response was queued and MHD asks again */
    if (r->early_rc) {
        fail(r, r->early_rc);
        if (r->early_status) r->status = r->early_status;
        return queue(r);
    }
    r->pub.body = r->body.p ? r->body.p : "";
    r->pub.body_len = r->body.len;
    dispatch(r);
    return finish_or_park(r);
}

static size_t status_slot(int status)
{
    for (size_t i = 0; i + 1 < N_STATUS; i++)
        if (status_slots[i] == status) return i;
    return N_STATUS - 1;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    struct jk_http_server *srv = cls;
    struct req *r = *con_cls;
    if (!r) return;
    int64_t us = jk_time_mono_us() - r->t_start_us;
    int status = r->status ? r->status : 499; /* 499: the client went away first */
    struct route_metrics *m =
        &srv->metrics[r->route_idx >= 0 ? (size_t)r->route_idx : srv->cfg.n_routes];
    __atomic_add_fetch(&m->by_status[status_slot(status)], 1, __ATOMIC_RELAXED);
    size_t b = 0;
    while (b < N_BUCKETS && (double)us / 1000.0 > bucket_le_ms[b])
        b++;
    __atomic_add_fetch(&m->buckets[b], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&m->sum_us, (uint64_t)us, __ATOMIC_RELAXED);
    if (srv->cfg.is_access_log) {
        char line[512], ts[40];
        int n =
            snprintf(line, sizeof line,
                     "{\"ts\":\"%s\",\"level\":\"info\",\"module\":\"access\",\"rid\":\"%s\","
                     "\"method\":\"%.16s\",\"route\":\"%s\",\"status\":%d,\"us\":%lld,"
                     "\"in\":%zu,\"out\":%zu,\"done\":%d}",
                     jk_time_iso(jk_time_now_ms(), ts, sizeof ts), r->pub.request_id, r->pub.method,
                     r->pub.route ? r->pub.route->pattern : "(none)", status, (long long)us,
                     r->body.len, r->resp_len, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
        if (n > 0) jk_log_json(line, (unsigned long)((size_t)n < sizeof line ? n : 0));
    }
    if (srv->cfg.on_done) srv->cfg.on_done(&r->pub);
    jk_buf_free(&r->body);
    pthread_mutex_destroy(&r->lock);
    *con_cls = NULL;
    jk_arena_free(r->pub.arena);
    __atomic_sub_fetch(&srv->n_active, 1, __ATOMIC_RELAXED);
}

/* Percent-decoding of paths and query arguments. A decoded NUL would silently cut a value
 * short (an id "a%00b" would name resource "a"), so text holding %00 is left undecoded and
 * fails validation later like any other bad character. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    if (strstr(s, "%00")) return strlen(s);
    return MHD_http_unescape(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    jk_log(JK_LOG_WARN, "http", "%s", msg);
}

jk_rc jk_http_start(const struct jk_http_config *cfg, struct jk_http_server **out)
{
    struct jk_http_server *srv = calloc(1, sizeof *srv);
    if (!srv) return JK_ENOMEM;
    srv->cfg = *cfg;
    srv->metrics = calloc(cfg->n_routes + 1, sizeof *srv->metrics);
    if (!srv->metrics) {
        free(srv);
        return JK_ENOMEM;
    }
    srv->id_prefix = (uint64_t)getpid() ^ (uint64_t)jk_time_now_ms();
    struct sockaddr_in sa4;
    struct sockaddr_in6 sa6;
    struct sockaddr *sa;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_TURBO | MHD_USE_ERROR_LOG;
    memset(&sa4, 0, sizeof sa4);
    memset(&sa6, 0, sizeof sa6);
    if (inet_pton(AF_INET, cfg->listen_addr, &sa4.sin_addr) == 1) {
        sa4.sin_family = AF_INET;
        sa4.sin_port = htons(cfg->port);
        sa = (struct sockaddr *)&sa4;
    } else if (inet_pton(AF_INET6, cfg->listen_addr, &sa6.sin6_addr) == 1) {
        sa6.sin6_family = AF_INET6;
        sa6.sin6_port = htons(cfg->port);
        sa = (struct sockaddr *)&sa6;
        flags |= MHD_USE_IPv6;
    } else {
        jk_log_error("http", "listen address '%s' is not an IP address", cfg->listen_addr);
        free(srv->metrics);
        free(srv);
        return JK_EINVAL;
    }
    srv->daemon = MHD_start_daemon(
        flags, cfg->port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->n_threads ? cfg->n_threads : 2),
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024), MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned)1024, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_END);
    if (!srv->daemon) {
        jk_log_error("http", "cannot listen on %s:%u", cfg->listen_addr, cfg->port);
        free(srv->metrics);
        free(srv);
        return JK_EINVAL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : cfg->port;
    *out = srv;
    return JK_OK;
}

uint16_t jk_http_port(const struct jk_http_server *s)
{
    return s->port;
}

void jk_http_stop(struct jk_http_server *s, int grace_ms)
{
    if (!s) return;
    __atomic_store_n(&s->is_stopping, 1, __ATOMIC_SEQ_CST);
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    for (int waited = 0; waited < grace_ms; waited += 10) {
        if (__atomic_load_n(&s->n_active, __ATOMIC_SEQ_CST) == 0) break;
        usleep(10000);
    }
    MHD_stop_daemon(s->daemon);
    free(s->metrics);
    free(s);
}

jk_rc jk_http_metrics(struct jk_http_server *s, struct jk_buf *out)
{
    jk_rc rc = jk_buf_puts(out, "# HELP jk_http_requests_total HTTP requests by route and status.\n"
                                "# TYPE jk_http_requests_total counter\n");
    for (size_t i = 0; i <= s->cfg.n_routes && !rc; i++) {
        const char *route = i < s->cfg.n_routes ? s->cfg.routes[i].pattern : "(none)";
        const char *method = i < s->cfg.n_routes ? s->cfg.routes[i].method : "*";
        for (size_t k = 0; k < N_STATUS && !rc; k++) {
            uint64_t n = __atomic_load_n(&s->metrics[i].by_status[k], __ATOMIC_RELAXED);
            if (!n) continue;
            if (status_slots[k])
                rc = jk_buf_printf(out,
                                   "jk_http_requests_total{method=\"%s\",route=\"%s\","
                                   "status=\"%d\"} %llu\n",
                                   method, route, status_slots[k], (unsigned long long)n);
            else
                rc = jk_buf_printf(out,
                                   "jk_http_requests_total{method=\"%s\",route=\"%s\","
                                   "status=\"other\"} %llu\n",
                                   method, route, (unsigned long long)n);
        }
    }
    if (!rc)
        rc = jk_buf_puts(out, "# HELP jk_http_request_duration_seconds Time to answer, by "
                              "route.\n# TYPE jk_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i <= s->cfg.n_routes && !rc; i++) {
        const char *route = i < s->cfg.n_routes ? s->cfg.routes[i].pattern : "(none)";
        const char *method = i < s->cfg.n_routes ? s->cfg.routes[i].method : "*";
        uint64_t cum = 0;
        for (size_t b = 0; b <= N_BUCKETS && !rc; b++) {
            cum += __atomic_load_n(&s->metrics[i].buckets[b], __ATOMIC_RELAXED);
            if (b < N_BUCKETS)
                rc =
                    jk_buf_printf(out,
                                  "jk_http_request_duration_seconds_bucket{method=\"%s\","
                                  "route=\"%s\",le=\"%g\"} %llu\n",
                                  method, route, bucket_le_ms[b] / 1000.0, (unsigned long long)cum);
            else
                rc = jk_buf_printf(
                    out,
                    "jk_http_request_duration_seconds_bucket{method=\"%s\","
                    "route=\"%s\",le=\"+Inf\"} %llu\n"
                    "jk_http_request_duration_seconds_sum{method=\"%s\","
                    "route=\"%s\"} %.6f\n"
                    "jk_http_request_duration_seconds_count{method=\"%s\","
                    "route=\"%s\"} %llu\n",
                    method, route, (unsigned long long)cum, method, route,
                    (double)__atomic_load_n(&s->metrics[i].sum_us, __ATOMIC_RELAXED) / 1e6, method,
                    route, (unsigned long long)cum);
        }
    }
    return rc;
}
