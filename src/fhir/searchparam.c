/* searchparam.c - lookups over the generated search parameter tables, and the normalisation of
 * strings, dates and numbers that index rows and queries share. */
#include "fhir/searchparam.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/time.h"
#include "fhir/searchparam_int.h"

const struct jk_sp_gen_type *jk_sp_gen_type_find(const char *name)
{
    size_t lo = 0, hi = jk_sp_gen_n_types;
    if (!name) return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, jk_sp_gen_types[mid].name);
        if (c == 0) return &jk_sp_gen_types[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const struct jk_sp *jk_sp_find(const char *resource_type, const char *code)
{
    const struct jk_sp_gen_type *t = jk_sp_gen_type_find(resource_type);
    if (!t || !code) return NULL;
    const struct jk_sp *const *list = jk_sp_gen_lists + t->first;
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(code, list[mid]->code);
        if (c == 0) return list[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

size_t jk_sp_list(const char *resource_type, const struct jk_sp *const **out)
{
    const struct jk_sp_gen_type *t = jk_sp_gen_type_find(resource_type);
    *out = t ? jk_sp_gen_lists + t->first : NULL;
    return t ? t->n : 0;
}

const char *const *jk_sp_patient_compartment(const char *resource_type)
{
    const struct jk_sp_gen_type *t = jk_sp_gen_type_find(resource_type);
    return t ? t->compartment : NULL;
}

/* ---- strings ------------------------------------------------------------------------------ */

/* U+00C0 .. U+017F (Latin-1 Supplement letters and Latin Extended-A) folded to lower-case ASCII;
 * "" keeps the character (the multiplication and division signs). Never longer than the two
 * UTF-8 bytes it replaces, so the output is never longer than the input. */
static const char latin_fold[192][3] = {
    "a", "a", "a",  "a",  "a", "a", "ae", "c",  /* U+00C0 */
    "e", "e", "e",  "e",  "i", "i", "i",  "i",  /* U+00C8 */
    "d", "n", "o",  "o",  "o", "o", "o",  "",   /* U+00D0 */
    "o", "u", "u",  "u",  "u", "y", "th", "ss", /* U+00D8 */
    "a", "a", "a",  "a",  "a", "a", "ae", "c",  /* U+00E0 */
    "e", "e", "e",  "e",  "i", "i", "i",  "i",  /* U+00E8 */
    "d", "n", "o",  "o",  "o", "o", "o",  "",   /* U+00F0 */
    "o", "u", "u",  "u",  "u", "y", "th", "y",  /* U+00F8 */
    "a", "a", "a",  "a",  "a", "a", "c",  "c",  /* U+0100 */
    "c", "c", "c",  "c",  "c", "c", "d",  "d",  /* U+0108 */
    "d", "d", "e",  "e",  "e", "e", "e",  "e",  /* U+0110 */
    "e", "e", "e",  "e",  "g", "g", "g",  "g",  /* U+0118 */
    "g", "g", "g",  "g",  "h", "h", "h",  "h",  /* U+0120 */
    "i", "i", "i",  "i",  "i", "i", "i",  "i",  /* U+0128 */
    "i", "i", "ij", "ij", "j", "j", "k",  "k",  /* U+0130 */
    "k", "l", "l",  "l",  "l", "l", "l",  "l",  /* U+0138 */
    "l", "l", "l",  "n",  "n", "n", "n",  "n",  /* U+0140 */
    "n", "n", "n",  "n",  "o", "o", "o",  "o",  /* U+0148 */
    "o", "o", "oe", "oe", "r", "r", "r",  "r",  /* U+0150 */
    "r", "r", "s",  "s",  "s", "s", "s",  "s",  /* U+0158 */
    "s", "s", "t",  "t",  "t", "t", "t",  "t",  /* U+0160 */
    "u", "u", "u",  "u",  "u", "u", "u",  "u",  /* U+0168 */
    "u", "u", "u",  "u",  "w", "w", "y",  "y",  /* U+0170 */
    "y", "z", "z",  "z",  "z", "z", "z",  "s",  /* U+0178 */
};

static char ascii_lower(unsigned char c)
{
    return (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
}

const char *jk_sp_norm_string(struct jk_arena *a, const char *s, size_t n)
{
    char *out = jk_arena_alloc(a, n + 1);
    if (!out) return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            out[o++] = ascii_lower(c);
            i++;
        } else if ((c == 0xC3 || c == 0xC4 || c == 0xC5) && i + 1 < n &&
                   (p[i + 1] & 0xC0) == 0x80) {
            unsigned cp = ((unsigned)(c & 0x1F) << 6) | (p[i + 1] & 0x3F);
            const char *f = cp >= 0xC0 && cp < 0x180 ? latin_fold[cp - 0xC0] : "";
            if (*f) {
                out[o++] = f[0];
                if (f[1]) out[o++] = f[1];
            } else {
                out[o++] = (char)c;
                out[o++] = (char)p[i + 1];
            }
            i += 2;
        } else if (c == 0xEF && i + 2 < n && (p[i + 1] == 0xBC || p[i + 1] == 0xBD) &&
                   (p[i + 2] & 0xC0) == 0x80) {
            /* Full-width forms U+FF01 .. U+FF5E are ASCII 0x21 .. 0x7E shifted by 0xFEE0. */
            unsigned cp = 0xF000u | ((unsigned)(p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
            if (cp >= 0xFF01 && cp <= 0xFF5E) {
                out[o++] = ascii_lower((unsigned char)(cp - 0xFEE0));
            } else {
                memcpy(out + o, p + i, 3);
                o += 3;
            }
            i += 3;
        } else {
            out[o++] = (char)c; /* CJK and everything else: byte for byte */
            i++;
        }
    }
    out[o] = '\0';
    return out;
}

/* ---- dates -------------------------------------------------------------------------------- */

static int days_in_month(int y, int m)
{
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

/* Reads exactly k digits. */
static int read_digits(const char **p, const char *end, int k, int *out)
{
    int v = 0;
    if (end - *p < k) return 0;
    for (int i = 0; i < k; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9') return 0;
        v = v * 10 + (c - '0');
    }
    *p += k;
    *out = v;
    return 1;
}

#define MS_DAY 86400000LL

int jk_sp_date_range(const char *s, size_t n, int64_t *lo, int64_t *hi)
{
    const char *p = s, *end = s + n;
    int y, mo = 1, d = 1, h = 0, mi = 0, sec = 0;
    int64_t frac_ms = 0, span_ms = 0;
    enum { YEAR, MONTH, DAY, TIME } prec = YEAR;
    if (!s || !read_digits(&p, end, 4, &y)) return -1;
    if (p < end && *p == '-') {
        p++;
        if (!read_digits(&p, end, 2, &mo) || mo < 1 || mo > 12) return -1;
        prec = MONTH;
        if (p < end && *p == '-') {
            p++;
            if (!read_digits(&p, end, 2, &d) || d < 1 || d > days_in_month(y, mo)) return -1;
            prec = DAY;
        }
    }
    int64_t off_min = 0;
    if (prec == DAY && p < end && *p == 'T') {
        p++;
        prec = TIME;
        if (!read_digits(&p, end, 2, &h) || p >= end || *p++ != ':' ||
            !read_digits(&p, end, 2, &mi) || h > 23 || mi > 59)
            return -1;
        span_ms = 60000; /* minute precision */
        if (p < end && *p == ':') {
            p++;
            if (!read_digits(&p, end, 2, &sec) || sec > 60) return -1;
            if (sec == 60) sec = 59; /* a leap second: the last second of that minute */
            span_ms = 1000;
            if (p < end && *p == '.') {
                p++;
                int k = 0;
                int64_t scale = 100;
                while (p < end && *p >= '0' && *p <= '9') {
                    frac_ms += (*p - '0') * scale;
                    scale /= 10;
                    p++;
                    k++;
                }
                if (!k) return -1;
                span_ms = k >= 3 ? 1 : k == 2 ? 10 : 100;
            }
        }
        if (p < end && *p == 'Z') {
            p++;
        } else if (p < end && (*p == '+' || *p == '-')) {
            int sign = *p++ == '-' ? -1 : 1, oh, om;
            if (!read_digits(&p, end, 2, &oh) || p >= end || *p++ != ':' ||
                !read_digits(&p, end, 2, &om) || oh > 14 || om > 59)
                return -1;
            off_min = sign * (oh * 60 + om);
        }
        /* no zone: taken as UTC (R4 requires one when there is a time; queries may omit it) */
    }
    if (p != end) return -1;
    int64_t start = jk_time_days_from_civil(y, mo, d) * MS_DAY;
    switch (prec) {
    case YEAR:
        span_ms =
            (jk_time_days_from_civil(y + 1, 1, 1) - jk_time_days_from_civil(y, 1, 1)) * MS_DAY;
        break;
    case MONTH: span_ms = (int64_t)days_in_month(y, mo) * MS_DAY; break;
    case DAY: span_ms = MS_DAY; break;
    case TIME:
        start += ((int64_t)h * 3600 + mi * 60 + sec) * 1000 + frac_ms - off_min * 60000;
        break;
    }
    *lo = start;
    *hi = start + span_ms - 1;
    return 0;
}

/* ---- numbers ------------------------------------------------------------------------------ */

int jk_sp_number_range(const char *s, size_t n, double *lo, double *hi)
{
    char buf[128];
    size_t i = 0;
    long frac = 0, exp = 0;
    if (!s || n == 0 || n >= sizeof buf) return -1;
    if (s[i] == '-' || s[i] == '+') i++;
    size_t int_start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == int_start) return -1;
    if (i < n && s[i] == '.') {
        size_t f0 = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        frac = (long)(i - f0);
        if (!frac) return -1;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int sign = 1;
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+')) sign = s[i++] == '-' ? -1 : 1;
        size_t e0 = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (exp < 100000) exp = exp * 10 + (s[i] - '0');
            i++;
        }
        if (i == e0) return -1;
        exp *= sign;
    }
    if (i != n) return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    double v = strtod(buf, NULL);
    if (!isfinite(v)) return -1;
    /* Half a unit of the last digit written: 1.50 -> 0.005, 100 -> 0.5, 1e2 -> 50. */
    double half = 0.5 * pow(10.0, (double)(exp - frac));
    *lo = v - half;
    *hi = v + half;
    if (!isfinite(*lo) || !isfinite(*hi)) return -1;
    return 0;
}
