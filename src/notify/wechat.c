/* wechat.c - the WeChat adapters: "log" writes the topic and the masked recipient of each
 * message to the server log (development and `make run`; a province plugs its official
 * account in as another adapter). */
#include "notify/wechat.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"

/* Neither the text nor the recipient in clear: the log says only that a message of this
 * topic went to someone. */
static jk_rc log_send(const struct jk_wechat_msg *m)
{
    char masked[16];
    jk_log_info("wechat", "%s to %s", m->topic,
                jk_wechat_mask(m->patient_id, masked, sizeof masked));
    return JK_OK;
}

static const struct jk_wechat_adapter adapters[] = {
    {"log", log_send},
};

static const struct jk_wechat_adapter *current = &adapters[0];

jk_rc jk_wechat_init(const char *name, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof adapters / sizeof adapters[0]; i++)
        if (!strcmp(adapters[i].name, name)) {
            current = &adapters[i];
            return JK_OK;
        }
    snprintf(err, errlen, "wechat: unknown adapter '%.32s' (known: log)", name);
    return JK_EINVAL;
}

jk_rc jk_wechat_send(const struct jk_wechat_msg *m)
{
    return current->send(m);
}

char *jk_wechat_mask(const char *id, char *out, size_t outlen)
{
    size_t n = strlen(id);
    snprintf(out, outlen, "****%s", n > 8 ? id + n - 4 : "");
    return out;
}
