/* config.c - one table of keys drives the file, the environment and the flags alike. */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum key_kind { K_STR, K_LONG, K_BOOL };

static const struct key {
    const char *name;
    enum key_kind kind;
    size_t offset, size; /* size: buffer size for strings */
    long min, max;
    const char *help;
} keys[] = {
#define STR(n, h)                                                                                  \
    {                                                                                              \
#n, K_STR, offsetof(struct jk_config, n), sizeof(((struct jk_config *)0)->n), 0, 0, h      \
    }
#define NUM(n, lo, hi, h)                                                                          \
    {                                                                                              \
#n, K_LONG, offsetof(struct jk_config, n), 0, lo, hi, h                                    \
    }
    STR(listen, "address and port to listen on"),
    STR(db, "database URL: sqlite:PATH or postgresql://..."),
    STR(base_url, "public base URL used in links"),
    STR(log_level, "debug, info, warn or error"),
    STR(keys, "key file path (created at first start, mode 0600)"),
    STR(web_dir, "directory of the web pages (empty: no pages)"),
    NUM(threads, 0, 256, "HTTP worker threads (0: one per core)"),
    {"access_log", K_BOOL, offsetof(struct jk_config, access_log), 0, 0, 1, "on or off"},
    {"security", K_BOOL, offsetof(struct jk_config, security), 0, 0, 1,
     "on, or off for development only (no token, no check, no audit)"},
    STR(sms, "SMS gateway adapter for registration codes: log (writes them to the server log)"),
    STR(wechat, "WeChat adapter for notifications: log (writes topic and masked recipient)"),
    STR(video, "video adapter of online visits: log (writes the room to the server log)"),
    STR(notify_channels, "channels notifications are sent through: sms, wechat, comma-separated"),
    NUM(max_body_bytes, 1024, 1L << 30, "largest request body"),
    NUM(max_url_bytes, 256, 1L << 20, "longest URL"),
    NUM(max_headers, 8, 10000, "most request headers"),
    NUM(max_header_bytes, 1024, 1L << 20, "most bytes of request headers"),
    NUM(max_json_depth, 8, 1000, "deepest JSON nesting"),
    NUM(max_array, 16, 10000000, "longest JSON array"),
    NUM(max_bundle_entries, 1, 10000000, "most entries in a Bundle"),
#undef STR
#undef NUM
};

#define N_KEYS (sizeof keys / sizeof keys[0])

void jk_config_defaults(struct jk_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->listen, sizeof cfg->listen, "127.0.0.1:8080");
    snprintf(cfg->db, sizeof cfg->db, "sqlite:var/jiankang.db");
    snprintf(cfg->log_level, sizeof cfg->log_level, "info");
    snprintf(cfg->keys, sizeof cfg->keys, "var/jiankang.keys");
    snprintf(cfg->web_dir, sizeof cfg->web_dir, "web");
    cfg->access_log = 1;
    cfg->security = 1;
    snprintf(cfg->sms, sizeof cfg->sms, "log");
    snprintf(cfg->wechat, sizeof cfg->wechat, "log");
    snprintf(cfg->video, sizeof cfg->video, "log");
    snprintf(cfg->notify_channels, sizeof cfg->notify_channels, "sms");
    cfg->max_body_bytes = 16L << 20;
    cfg->max_url_bytes = 8192;
    cfg->max_headers = 100;
    cfg->max_header_bytes = 16384;
    cfg->max_json_depth = 64;
    cfg->max_array = 50000;
    cfg->max_bundle_entries = 10000;
}

jk_rc jk_config_set(struct jk_config *cfg, const char *key, const char *value, const char *origin,
                    char *err, size_t errlen)
{
    const struct key *k = NULL;
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, key) == 0) k = &keys[i];
    if (!k) {
        snprintf(err, errlen, "%s: unknown setting '%s'", origin, key);
        return JK_EINVAL;
    }
    char *field = (char *)cfg + k->offset;
    if (k->kind == K_STR) {
        if (strlen(value) >= k->size) {
            snprintf(err, errlen, "%s: %s is longer than %zu characters", origin, key, k->size - 1);
            return JK_EINVAL;
        }
        memcpy(field, value, strlen(value) + 1);
        return JK_OK;
    }
    long v;
    if (k->kind == K_BOOL) {
        if (!strcmp(value, "on") || !strcmp(value, "true") || !strcmp(value, "1")) {
            v = 1;
        } else if (!strcmp(value, "off") || !strcmp(value, "false") || !strcmp(value, "0")) {
            v = 0;
        } else {
            snprintf(err, errlen, "%s: %s must be on or off, not '%s'", origin, key, value);
            return JK_EINVAL;
        }
    } else {
        char *end;
        errno = 0;
        v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < k->min || v > k->max) {
            snprintf(err, errlen, "%s: %s must be a whole number from %ld to %ld, not '%s'", origin,
                     key, k->min, k->max, value);
            return JK_EINVAL;
        }
    }
    memcpy(field, &v, sizeof v);
    return JK_OK;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

jk_rc jk_config_load_file(struct jk_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return JK_EINVAL;
    }
    char line[2048], origin[1100];
    int lineno = 0;
    jk_rc rc = JK_OK;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        snprintf(origin, sizeof origin, "%s:%d", path, lineno);
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s: expected 'key = value'", origin);
            rc = JK_EINVAL;
            break;
        }
        *eq = '\0';
        rc = jk_config_set(cfg, trim(s), trim(eq + 1), origin, err, errlen);
    }
    fclose(f);
    return rc;
}

jk_rc jk_config_load_env(struct jk_config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        char name[64];
        size_t n = (size_t)snprintf(name, sizeof name, "JIANKANG_%s", keys[i].name);
        for (size_t j = 9; j < n; j++)
            name[j] = (char)toupper((unsigned char)name[j]);
        const char *v = getenv(name);
        if (!v) continue;
        jk_rc rc = jk_config_set(cfg, keys[i].name, v, name, err, errlen);
        if (rc) return rc;
    }
    return JK_OK;
}

jk_rc jk_config_listen(const struct jk_config *cfg, char *addr, size_t addrlen, unsigned *port)
{
    const char *colon = strrchr(cfg->listen, ':');
    if (!colon || colon == cfg->listen || (size_t)(colon - cfg->listen) >= addrlen)
        return JK_EINVAL;
    const char *a = cfg->listen;
    size_t n = (size_t)(colon - a);
    if (a[0] == '[' && n >= 2 && a[n - 1] == ']') { /* [::1]:8080 */
        a++;
        n -= 2;
    }
    memcpy(addr, a, n);
    addr[n] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535) return JK_EINVAL;
    *port = (unsigned)p;
    return JK_OK;
}
