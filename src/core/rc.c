/* rc.c - one table from jk_rc to HTTP status and OperationOutcome issue code. */
#include "core/rc.h"

static const struct {
    int status;
    const char *issue_code;
    const char *name;
} rc_table[] = {
    [JK_OK] = {200, "informational", "OK"},
    [JK_EINVAL] = {400, "invalid", "EINVAL"},
    [JK_ENOTFOUND] = {404, "not-found", "ENOTFOUND"},
    [JK_EGONE] = {410, "deleted", "EGONE"},
    [JK_ECONFLICT] = {409, "conflict", "ECONFLICT"},
    [JK_EPRECOND] = {412, "conflict", "EPRECOND"},
    [JK_EFORBIDDEN] = {403, "forbidden", "EFORBIDDEN"},
    [JK_EUNAUTH] = {401, "login", "EUNAUTH"},
    [JK_ETOOBIG] = {413, "too-costly", "ETOOBIG"},
    [JK_ERULE] = {422, "business-rule", "ERULE"},
    [JK_EMETHOD] = {405, "not-supported", "EMETHOD"},
    [JK_EMEDIA] = {415, "not-supported", "EMEDIA"},
    [JK_ENOMEM] = {500, "exception", "ENOMEM"},
    [JK_EDB] = {500, "exception", "EDB"},
    [JK_EINTERNAL] = {500, "exception", "EINTERNAL"},
};

#define N_RC (sizeof rc_table / sizeof rc_table[0])

int jk_rc_http_status(jk_rc rc)
{
    return (unsigned)rc < N_RC ? rc_table[rc].status : 500;
}

const char *jk_rc_issue_code(jk_rc rc)
{
    return (unsigned)rc < N_RC ? rc_table[rc].issue_code : "exception";
}

const char *jk_rc_name(jk_rc rc)
{
    return (unsigned)rc < N_RC ? rc_table[rc].name : "EUNKNOWN";
}
