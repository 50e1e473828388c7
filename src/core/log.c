/* log.c - one JSON object per line, written with a single stdio call so lines never mix. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/time.h"

static enum jk_log_level log_level = JK_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void jk_log_set_level(enum jk_log_level level)
{
    log_level = level;
}

enum jk_log_level jk_log_get_level(void)
{
    return log_level;
}

void jk_log(enum jk_log_level level, const char *module, const char *fmt, ...)
{
    if (level < log_level) return;
    char msg[1024], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct jk_buf b;
    jk_buf_init(&b, 8192);
    jk_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"",
                  jk_time_iso(jk_time_now_ms(), ts, sizeof ts), level_names[level]);
    jk_buf_json_escape(&b, module, strlen(module));
    jk_buf_puts(&b, "\",\"msg\":\"");
    jk_buf_json_escape(&b, msg, strlen(msg));
    if (!jk_buf_puts(&b, "\"}")) jk_log_json(b.p, b.len);
    jk_buf_free(&b);
}

void jk_log_json(const char *json, unsigned long len)
{
    flockfile(stderr);
    fwrite(json, 1, len, stderr);
    fputc('\n', stderr);
    funlockfile(stderr);
}
