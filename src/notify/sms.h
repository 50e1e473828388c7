/* sms.h - text messages to mobile phones (registration codes) through a gateway adapter, the
 * one the `sms` setting names (docs/configuration.md). */
#ifndef JK_SMS_H
#define JK_SMS_H

#include <stddef.h>

#include "core/rc.h"

/* A gateway: sends text (UTF-8) to phone (11 digits). Thread-safe. */
struct jk_sms_adapter {
    const char *name;
    jk_rc (*send)(const char *phone, const char *text);
};

/* Makes the adapter named name the one jk_sms_send uses. Once at start-up, before threads
 * use it. JK_EINVAL with the known names in err when there is no such adapter. Without a
 * call, "log" is used. */
jk_rc jk_sms_init(const char *name, char *err, size_t errlen);

/* Sends text to phone through the adapter. JK_EINTERNAL when the gateway refused it. */
jk_rc jk_sms_send(const char *phone, const char *text);

/* Writes phone masked (138****5678) into out (at least 16 bytes). Returns out. */
char *jk_sms_mask(const char *phone, char *out, size_t outlen);

#endif
