/* outbox.h - notifications that a transaction wants sent (booking confirmed, reminder,
 * cancelled, waiting-list offer): inserted in the transaction's own outbox row, delivered
 * afterwards by the dispatcher thread through the configured channels (SMS, WeChat), with
 * retries. Nothing is sent for a transaction that rolled back, nothing lost when a delivery
 * fails. docs/internals/booking.md. */
#ifndef JK_OUTBOX_H
#define JK_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"
#include "store/store.h"

/* Inside the caller's transaction: a notification of topic ("booking.confirmed", ...) about
 * ref ("Appointment/x") for the resident whose Patient is patient_id (the one whose phone
 * receives it), with payload (a JSON object's text: the template's fields), due at due_ms
 * (now_ms for at once). */
jk_rc jk_outbox_put(jk_conn *c, const char *topic, const char *ref, const char *patient_id,
                    const char *payload, int64_t now_ms, int64_t due_ms);

/* Inside the caller's transaction: voids the pending notifications about ref of topic (NULL:
 * every topic), e.g. the reminders of a cancelled appointment. */
jk_rc jk_outbox_void(jk_conn *c, const char *ref, const char *topic);

/* Reads the templates (rules/notifications.json, or $JIANKANG_NOTIFY_RULES) and picks the
 * channels (channels: comma-separated names, "sms,wechat"; each sends through the adapter its
 * own setting names). JK_EINVAL with a message in err. */
jk_rc jk_outbox_init(const char *channels, char *err, size_t errlen);

/* Starts the dispatcher thread on db (a pass every second); jk_outbox_stop ends it. */
jk_rc jk_outbox_start(jk_store *db);
void jk_outbox_stop(void);

/* One pass at now_ms: claims the due rows and delivers them; *n_sent (may be NULL) counts the
 * rows marked sent. For the thread and for tests with an injected clock. */
jk_rc jk_outbox_run(jk_store *db, int64_t now_ms, size_t *n_sent);

#endif
