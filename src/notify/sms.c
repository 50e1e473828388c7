/* sms.c - the SMS adapters: "log" writes each message to the server log (development and
 * `make run`; a province plugs its gateway in as another adapter). */
#include "notify/sms.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"

/* The phone stays out of the log but for its network prefix and last four digits; the text
 * (the code) is what a developer needs to read there. */
static jk_rc log_send(const char *phone, const char *text)
{
    char masked[24];
    jk_log_info("sms", "to %s: %s", jk_sms_mask(phone, masked, sizeof masked), text);
    return JK_OK;
}

static const struct jk_sms_adapter adapters[] = {
    {"log", log_send},
};

static const struct jk_sms_adapter *current = &adapters[0];

jk_rc jk_sms_init(const char *name, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof adapters / sizeof adapters[0]; i++)
        if (!strcmp(adapters[i].name, name)) {
            current = &adapters[i];
            if (current->send == log_send)
                jk_log_warn("sms", "sms = log: registration codes are written to this log "
                                   "(development only; set sms to a gateway adapter)");
            return JK_OK;
        }
    snprintf(err, errlen, "sms: unknown adapter '%.32s' (known: log)", name);
    return JK_EINVAL;
}

jk_rc jk_sms_send(const char *phone, const char *text)
{
    return current->send(phone, text);
}

char *jk_sms_mask(const char *phone, char *out, size_t outlen)
{
    size_t n = strlen(phone);
    if (n < 8) {
        snprintf(out, outlen, "****");
        return out;
    }
    snprintf(out, outlen, "%.3s****%.4s", phone, phone + n - 4);
    return out;
}
