/* config.h - settings from a file (key = value), the environment (JIANKANG_KEY) and flags,
 * each overriding the one before. */
#ifndef JK_CONFIG_H
#define JK_CONFIG_H

#include <stddef.h>

#include "core/rc.h"

struct jk_config {
    char listen[128];   /* ADDR:PORT */
    char db[1024];      /* sqlite:PATH or postgresql://... */
    char base_url[256]; /* how clients reach us; empty: http://<listen> */
    char log_level[8];  /* debug, info, warn, error */
    char keys[1024];    /* the key file (master secret, SM2 key): mode 0600 */
    char web_dir[1024]; /* the web pages served at / and /web/; empty: none */
    long threads;       /* HTTP worker threads; 0 = number of cores */
    long access_log;    /* 1: one JSON line per request */
    long security;      /* 1 (on): tokens, authorisation and audit; 0: development only */
    char sms[32];       /* the SMS gateway adapter (src/notify/sms.c): "log" */
    char wechat[32];    /* the WeChat adapter (src/notify/wechat.c): "log" */
    char video[32];     /* the video adapter of online visits (src/svc/ih/video.c): "log" */
    /* the outbox's channels, comma-separated: "sms", "sms,wechat" */
    char notify_channels[64];
    long max_body_bytes;
    long max_url_bytes;
    long max_headers;
    long max_header_bytes;
    long max_json_depth;
    long max_array;
    long max_bundle_entries;
};

/* The built-in defaults. */
void jk_config_defaults(struct jk_config *cfg);

/* Applies the settings of file path. An unknown key or a bad value is JK_EINVAL with
 * "PATH:LINE: ..." in err. */
jk_rc jk_config_load_file(struct jk_config *cfg, const char *path, char *err, size_t errlen);

/* Applies JIANKANG_<KEY> environment variables (JIANKANG_DB, JIANKANG_LISTEN, ...). */
jk_rc jk_config_load_env(struct jk_config *cfg, char *err, size_t errlen);

/* Sets one key from text; origin names where it came from, for the error message. */
jk_rc jk_config_set(struct jk_config *cfg, const char *key, const char *value, const char *origin,
                    char *err, size_t errlen);

/* Splits cfg->listen into address and port. */
jk_rc jk_config_listen(const struct jk_config *cfg, char *addr, size_t addrlen, unsigned *port);

#endif
