/* log.h - structured JSON log lines on standard error. Never log patient data. */
#ifndef JK_LOG_H
#define JK_LOG_H

enum jk_log_level { JK_LOG_DEBUG, JK_LOG_INFO, JK_LOG_WARN, JK_LOG_ERROR, JK_LOG_OFF };

/* Lines below level are dropped. Default JK_LOG_INFO. */
void jk_log_set_level(enum jk_log_level level);
enum jk_log_level jk_log_get_level(void);

/* Writes {"ts":...,"level":...,"module":...,"msg":...} as one line. */
void jk_log(enum jk_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes a prepared JSON object (without the trailing newline) as one line. */
void jk_log_json(const char *json, unsigned long len);

#define jk_log_info(m, ...)  jk_log(JK_LOG_INFO, m, __VA_ARGS__)
#define jk_log_warn(m, ...)  jk_log(JK_LOG_WARN, m, __VA_ARGS__)
#define jk_log_error(m, ...) jk_log(JK_LOG_ERROR, m, __VA_ARGS__)

#endif
