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

/* Inside the caller's transaction: a notification of topic ("booking.confirmed",
 * "booking.reminder", "booking.cancelled", "booking.offer") about ref ("Appointment/x") for the
 * resident whose Patient is patient_id (its id, no "Patient/": the one whose phone receives
 * it), with payload (a JSON object's text, at most 4 KiB: the texts its template shows; see
 * docs/internals/booking.md for each topic's fields), due at due_ms (now_ms for at once).
 * JK_EINVAL for an unknown topic, an empty ref, a patient_id that is not an id or a payload
 * that is not a JSON object; JK_EDB. Needs no jk_outbox_init. */
jk_rc jk_outbox_put(jk_conn *c, const char *topic, const char *ref, const char *patient_id,
                    const char *payload, int64_t now_ms, int64_t due_ms);

/* Inside the caller's transaction: voids the pending notifications about ref of topic (NULL:
 * every topic), e.g. the reminders of a cancelled appointment. One being sent at that moment
 * may still go out; it stays void. JK_EINVAL for an empty ref; JK_EDB. */
jk_rc jk_outbox_void(jk_conn *c, const char *ref, const char *topic);

/* Reads the templates and retry rules (rules/notifications.json, or $JIANKANG_NOTIFY_RULES)
 * and picks the channels (channels: comma-separated names, "sms,wechat"; each sends through
 * the adapter its own setting names: jk_sms_init, jk_wechat_init). Once at start-up, before
 * the dispatcher runs. JK_EINVAL with "FILE: /rules/...: what is wrong" or the bad channel in
 * err; JK_ENOTFOUND when the file cannot be read. */
jk_rc jk_outbox_init(const char *channels, char *err, size_t errlen);

/* Starts the dispatcher thread on db (a pass every second, with the wall clock);
 * jk_outbox_stop ends it promptly, giving back what it claimed and did not send, and is
 * harmless when it is not running. JK_EINTERNAL before jk_outbox_init, JK_EINVAL when it is
 * running already. */
jk_rc jk_outbox_start(jk_store *db);
void jk_outbox_stop(void);

/* One pass at now_ms: claims the due rows (a conditional update: several dispatchers, in one
 * process or several servers, never claim one row together) and delivers them; *n_sent (may
 * be NULL) counts the rows marked sent. For the thread and for tests with an injected clock.
 * JK_EINTERNAL before jk_outbox_init; JK_EDB when a claim or a result could not be written
 * (a row whose result was lost is sent again after the claim's lease). */
jk_rc jk_outbox_run(jk_store *db, int64_t now_ms, size_t *n_sent);

#endif
