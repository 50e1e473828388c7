/* wechat.h - WeChat template messages (公众号模板消息 / 小程序订阅消息) to residents through an
 * adapter, the one the `wechat` setting names (docs/configuration.md). */
#ifndef JK_WECHAT_H
#define JK_WECHAT_H

#include <stddef.h>

#include "core/rc.h"

struct json_object;

/* One message. The recipient is the resident's Patient: a real adapter maps it to the openid
 * the resident bound to the platform's official account (a binding this platform does not
 * keep yet) and fills the template's keywords from fields. */
struct jk_wechat_msg {
    const char *patient_id;     /* the Patient's id (no "Patient/") */
    const char *topic;          /* "booking.confirmed", ... */
    const char *text;           /* the rendered text (UTF-8), for adapters without templates */
    struct json_object *fields; /* the payload object: org, service, start, ... (not owned) */
};

/* An adapter: delivers m. JK_EINVAL when the recipient can never receive it (no binding),
 * JK_EINTERNAL when the service refused it for now. Thread-safe. */
struct jk_wechat_adapter {
    const char *name;
    jk_rc (*send)(const struct jk_wechat_msg *m);
};

/* Makes the adapter named name the one jk_wechat_send uses. Once at start-up, before threads
 * use it. JK_EINVAL with the known names in err when there is no such adapter. Without a
 * call, "log" is used. */
jk_rc jk_wechat_init(const char *name, char *err, size_t errlen);

/* Sends m through the adapter: its rc. */
jk_rc jk_wechat_send(const struct jk_wechat_msg *m);

/* Writes id masked (****a1b2: its last four characters) into out (at least 12 bytes).
 * Returns out. */
char *jk_wechat_mask(const char *id, char *out, size_t outlen);

#endif
