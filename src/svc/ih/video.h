/* video.h - video rooms of online visits through an adapter, the one the `video` setting names
 * (docs/configuration.md). The platform records that a room was opened (a Communication of
 * the visit); the provider behind the adapter carries and keeps the audio and video. */
#ifndef JK_IH_VIDEO_H
#define JK_IH_VIDEO_H

#include <stddef.h>

#include "core/rc.h"

#define JK_IH_ROOM_MAX 65  /* a room id and its NUL */
#define JK_IH_URL_MAX  512 /* a room's URL and its NUL */

/* A room of a video service. */
struct jk_ih_room {
    char id[JK_IH_ROOM_MAX];
    char url[JK_IH_URL_MAX]; /* where both sides join */
};

/* A video service: opens (or finds) the room of visit (an Encounter id). Thread-safe. */
struct jk_ih_video_adapter {
    const char *name;
    jk_rc (*open_room)(const char *visit, struct jk_ih_room *out);
};

/* Makes the adapter named name the one jk_ih_video_room uses. Once at start-up, before threads
 * use it. JK_EINVAL with the known names in err when there is no such adapter. Without a call,
 * "log" is used. */
jk_rc jk_ih_video_init(const char *name, char *err, size_t errlen);

/* A room for visit through the adapter. JK_EINTERNAL when the service refused. */
jk_rc jk_ih_video_room(const char *visit, struct jk_ih_room *out);

#endif
