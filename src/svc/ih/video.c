/* video.c - the video adapters: "log" makes a room id, writes it to the server log and gives
 * a URL under the reserved .invalid domain (development and `make run`; a province plugs its
 * video service in as another adapter). */
#include "svc/ih/video.h"

#include <stdio.h>
#include <string.h>

#include "core/crypto.h"
#include "core/log.h"

static jk_rc log_open(const char *visit, struct jk_ih_room *out)
{
    unsigned char raw[12];
    jk_rc rc = jk_crypto_random(raw, sizeof raw);
    if (rc) return rc;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(out->id + 2 * i, 3, "%02x", raw[i]);
    snprintf(out->url, sizeof out->url, "https://video.invalid/rooms/%s", out->id);
    jk_log_info("video", "room %s for visit %s (video = log: no real video)", out->id, visit);
    return JK_OK;
}

static const struct jk_ih_video_adapter adapters[] = {
    {"log", log_open},
};

static const struct jk_ih_video_adapter *current = &adapters[0];

jk_rc jk_ih_video_init(const char *name, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof adapters / sizeof adapters[0]; i++)
        if (!strcmp(adapters[i].name, name)) {
            current = &adapters[i];
            if (current->open_room == log_open)
                jk_log_warn("video", "video = log: video rooms are only written to this log "
                                     "(development only; set video to a video service adapter)");
            return JK_OK;
        }
    snprintf(err, errlen, "video: unknown adapter '%.32s' (known: log)", name);
    return JK_EINVAL;
}

jk_rc jk_ih_video_room(const char *visit, struct jk_ih_room *out)
{
    memset(out, 0, sizeof *out);
    return current->open_room(visit, out);
}
