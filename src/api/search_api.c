/* search_api.c - the FHIR search interaction: GET /fhir/R4/:type and POST
 * /fhir/R4/:type/_search, answered with a searchset Bundle. Reads only, on the worker
 * thread's own connection. */
#include <string.h>
#include <strings.h>

#include "api/api_int.h"
#include "core/arena.h"
#include "core/time.h"
#include "fhir/search.h"
#include "fhir/validate.h"

#define MAX_SEARCH_BUNDLE_BYTES (256u << 20)

/* Prefer: handling=strict makes unknown parameters an error (lenient is the default). */
static unsigned prefer_flags(struct jk_http_req *rq)
{
    const char *p = jk_http_header(rq, "Prefer");
    while (p && *p) {
        p += strspn(p, " \t,;");
        size_t n = strcspn(p, ",;");
        size_t m = n;
        while (m && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == 15 && !strncasecmp(p, "handling=strict", 15)) return JK_SEARCH_STRICT;
        p += n;
    }
    return 0;
}

static jk_rc search(struct jk_http_req *rq, const char *const *keys, const char *const *values,
                    size_t n)
{
    struct jk_app *app = jk_api_app(rq);
    const char *type = jk_http_param(rq, "type");
    struct jk_api_guard *g;
    jk_rc rc = jk_api_guard(rq, "search", &g);
    if (rc || (rc = jk_api_check_format(rq))) return rc;
    if (!type || !jk_fhir_is_resource_type(type, strlen(type)))
        return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-supported", NULL,
                           "'%s' is not a FHIR R4 resource type", type ? type : "");
    jk_conn *c = jk_store_conn(app->db);
    if (!c) return JK_EDB;
    struct jk_search_opts o = {
        .flags = prefer_flags(rq), .base_url = app->base_url, .now_ms = jk_time_now_ms()};
    int is_count = 0; /* the search obeys the last _summary */
    for (size_t i = 0; i < n; i++)
        if (!strcmp(keys[i], "_summary")) is_count = !strcmp(values[i], "count");
    if ((rc = jk_api_search_scope(rq, g, is_count ? JK_AZ_COUNT : JK_AZ_SEARCH, type, &o)))
        return rc;
    struct jk_buf b;
    jk_buf_init(&b, MAX_SEARCH_BUNDLE_BYTES);
    rc = jk_fhir_search_bundle(c, rq->arena, &rq->diag, type, keys, values, n, &o, &b);
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return jk_api_send_buf(rq, 200, &b);
}

jk_rc jk_api_fhir_search(struct jk_http_req *rq)
{
    const char **keys, **values;
    size_t n = jk_http_query(rq, &keys, &values);
    return search(rq, keys, values, n);
}

/* POST _search: the parameters are a form body (application/x-www-form-urlencoded), plus any
 * in the URL. */
jk_rc jk_api_fhir_search_post(struct jk_http_req *rq)
{
    const char *ct = jk_http_header(rq, "Content-Type");
    if (rq->body_len && (!ct || strncasecmp(ct, "application/x-www-form-urlencoded", 33)))
        return jk_diag_add(&rq->diag, JK_EMEDIA, "not-supported", NULL,
                           "POST _search takes its parameters as application/x-www-form-urlencoded,"
                           " not '%s'",
                           ct ? ct : "(no Content-Type)");
    /* In a form body '+' stands for a space; make it %20 before the usual decoding. */
    char *form = jk_arena_alloc(rq->arena, 3 * rq->body_len + 1), *w = form;
    if (!form) return JK_ENOMEM;
    for (size_t i = 0; i < rq->body_len; i++) {
        if (rq->body[i] == '+') {
            memcpy(w, "%20", 3);
            w += 3;
        } else {
            *w++ = rq->body[i];
        }
    }
    *w = 0;
    const char **qk, **qv, **bk, **bv;
    size_t nq = jk_http_query(rq, &qk, &qv);
    size_t nb = jk_http_parse_query(rq->arena, form, &bk, &bv);
    const char **keys = jk_arena_alloc(rq->arena, (nq + nb + 1) * sizeof *keys);
    const char **values = jk_arena_alloc(rq->arena, (nq + nb + 1) * sizeof *values);
    if (!keys || !values) return JK_ENOMEM;
    if (nq) {
        memcpy(keys, qk, nq * sizeof *keys);
        memcpy(values, qv, nq * sizeof *values);
    }
    if (nb) {
        memcpy(keys + nq, bk, nb * sizeof *keys);
        memcpy(values + nq, bv, nb * sizeof *values);
    }
    return search(rq, keys, values, nq + nb);
}
