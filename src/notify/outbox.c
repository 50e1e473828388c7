/* outbox.c - notifications inserted by the transactions that cause them. */
#include <string.h>

#include "notify/outbox.h"

jk_rc jk_outbox_put(jk_conn *c, const char *topic, const char *ref, const char *patient_id,
                    const char *payload, int64_t now_ms, int64_t due_ms)
{
    static const char sql[] = "INSERT INTO outbox (topic, ref, patient_id, payload, created_ms,"
                              " due_ms) VALUES (?, ?, ?, ?, ?, ?)";
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, topic, strlen(topic));
    if (!rc) rc = jk_stmt_text_arg(s, 2, ref, strlen(ref));
    if (!rc) rc = jk_stmt_text_arg(s, 3, patient_id, strlen(patient_id));
    if (!rc) rc = jk_stmt_text_arg(s, 4, payload, strlen(payload));
    if (!rc) rc = jk_stmt_int_arg(s, 5, now_ms);
    if (!rc) rc = jk_stmt_int_arg(s, 6, due_ms);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc || s) jk_stmt_reset(s);
    return rc;
}

jk_rc jk_outbox_void(jk_conn *c, const char *ref, const char *topic)
{
    static const char sql[] = "UPDATE outbox SET state = 'void' WHERE ref = ? AND state = "
                              "'pending' AND (? = '' OR topic = ?)";
    jk_stmt *s;
    int has_row;
    const char *t = topic ? topic : "";
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, ref, strlen(ref));
    if (!rc) rc = jk_stmt_text_arg(s, 2, t, strlen(t));
    if (!rc) rc = jk_stmt_text_arg(s, 3, t, strlen(t));
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc) jk_stmt_reset(s);
    return rc;
}
