/* rc.h - the one error type of the project and its mapping to HTTP and FHIR. */
#ifndef JK_RC_H
#define JK_RC_H

typedef enum {
    JK_OK = 0,
    JK_EINVAL,     /* the client sent something wrong: 400 */
    JK_ENOTFOUND,  /* 404 */
    JK_EGONE,      /* deleted: 410 */
    JK_ECONFLICT,  /* 409 */
    JK_EPRECOND,   /* a precondition (If-Match, conditional match count) failed: 412 */
    JK_EFORBIDDEN, /* 403 */
    JK_EUNAUTH,    /* 401 */
    JK_ETOOBIG,    /* a named limit was exceeded: 413 */
    JK_ERULE,      /* a business rule refused the request: 422 */
    JK_EMETHOD,    /* method not allowed on this path: 405 */
    JK_EMEDIA,     /* unsupported media type: 415 */
    JK_ENOMEM,     /* 500 */
    JK_EDB,        /* 500 */
    JK_EINTERNAL   /* 500 */
} jk_rc;

/* The HTTP status for rc (200 for JK_OK). */
int jk_rc_http_status(jk_rc rc);

/* The OperationOutcome issue.code for rc ("invalid", "not-found", ...). Static string. */
const char *jk_rc_issue_code(jk_rc rc);

/* A short stable name for rc ("EINVAL"), for logs. Static string. */
const char *jk_rc_name(jk_rc rc);

#endif
