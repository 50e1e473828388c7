/* time.h - wall-clock time in milliseconds and its ISO 8601 text. */
#ifndef JK_TIME_H
#define JK_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds since 1970-01-01T00:00:00Z. */
int64_t jk_time_now_ms(void);

/* Milliseconds from a monotonic clock, for durations. */
int64_t jk_time_mono_us(void);

/* Writes ms as "2026-11-22T08:30:00.123Z" (FHIR instant, UTC) into out (at least 25 bytes).
 * Returns out. */
char *jk_time_iso(int64_t ms, char *out, size_t outlen);

/* Writes ms as an HTTP date ("Sun, 22 Nov 2026 08:30:00 GMT") into out (at least 30 bytes). */
char *jk_time_http(int64_t ms, char *out, size_t outlen);

/* Parses a FHIR instant or dateTime with a time zone (or a date, taken as its first moment
 * in UTC) into ms. JK_EINVAL when the text is not one. */
int jk_time_parse_iso(const char *s, size_t n, int64_t *ms);

/* Days since 1970-01-01 of the proleptic Gregorian date y-m-d, and back (H. Hinnant's
 * algorithms; any y, m 1-12, d 1-31). */
int64_t jk_time_days_from_civil(int64_t y, int m, int d);
void jk_time_civil_from_days(int64_t z, int *y, int *m, int *d);

#endif
