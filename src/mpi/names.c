/* names.c - a person's name folded for matching: Traditional Han characters to Simplified
 * (OpenCC t2s), Han to toneless pinyin syllables (ICU Han-Latin/Names), Latin spellings
 * lower-cased without diacritics (docs/internals/mpi.md, "Matching"). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <opencc/opencc.h>
#include <unicode/uchar.h>
#include <unicode/uscript.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>
#include <unicode/utf8.h>
#include <unicode/utrans.h>

#include "mpi/match.h"

/* Han becomes pinyin one character at a time: the first with the readings of surnames
 * (单 shan, 曾 zeng, 解 xie), the others with the common readings; ICU's Han-Latin is slow (tens
 * of microseconds a character), so each thread keeps the syllables it has made. Other text
 * loses its diacritics (Zhāng, Müller) and fullwidth letters become ASCII. */
#define HAN_FIRST_ID  "Han-Latin/Names; Latin-ASCII; Lower"
#define HAN_REST_ID   "Han-Latin; Latin-ASCII; Lower"
#define OTHER_ID      "Fullwidth-Halfwidth; Latin-ASCII; Lower"
#define NAME_MAX      256  /* bytes of a name folded; longer names are refused */
#define USTR_MAX      1024 /* UTF-16 units of a name, or of a piece transliterated */
#define SYLLABLE_MAX  16   /* a syllable ("zhuang") made from one character, and its NUL */
#define CACHE_SLOTS   8192 /* syllables a thread keeps (characters of names are a few thousand) */
#define T2S_CONFIG    "t2s.json"
#define MAX_NAME_HANS (JK_MPI_HAN_MAX / 3)

enum { T_FIRST, T_REST, T_OTHER, N_TRANSLIT };

static const char *const translit_ids[N_TRANSLIT] = {HAN_FIRST_ID, HAN_REST_ID, OTHER_ID};

/* A thread's transliterators (clones) and the syllables of the characters it has seen, by
 * code point and whether it was first. */
struct thread_state {
    UTransliterator *t[N_TRANSLIT];
    uint32_t key[CACHE_SLOTS]; /* code point << 1 | is_first, plus 1; 0 empty */
    char syllable[CACHE_SLOTS][SYLLABLE_MAX];
};

/* The module's state: made by jk_mpi_names_init before threads use it. A transliterator is
 * not safe for concurrent use: each thread transliterates with its own clones (kept in the
 * thread's key, closed when the thread ends). OpenCC promises nothing about threads: every
 * conversion holds the lock. */
static struct {
    UTransliterator *t[N_TRANSLIT]; /* cloned, never used themselves after init */
    opencc_t t2s;
    pthread_key_t thread_key;
    pthread_mutex_t lock;
    int is_ready;
} st = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void thread_state_free(void *p)
{
    struct thread_state *ts = p;
    for (int i = 0; i < N_TRANSLIT; i++)
        if (ts->t[i]) utrans_close(ts->t[i]);
    free(ts);
}

static void translit_close_all(void)
{
    for (int i = 0; i < N_TRANSLIT; i++)
        if (st.t[i]) utrans_close(st.t[i]);
    memset(st.t, 0, sizeof st.t);
}

jk_rc jk_mpi_names_init(char *err, size_t errlen)
{
    if (st.is_ready) return JK_OK;
    for (int i = 0; i < N_TRANSLIT; i++) {
        UErrorCode ue = U_ZERO_ERROR;
        UChar id[64];
        u_uastrcpy(id, translit_ids[i]);
        st.t[i] = utrans_openU(id, -1, UTRANS_FORWARD, NULL, 0, NULL, &ue);
        if (U_FAILURE(ue)) {
            snprintf(err, errlen, "name folding: ICU transliterator \"%s\": %s", translit_ids[i],
                     u_errorName(ue));
            st.t[i] = NULL;
            translit_close_all();
            return JK_EINTERNAL;
        }
    }
    st.t2s = opencc_open(T2S_CONFIG);
    if (st.t2s == (opencc_t)-1) {
        snprintf(err, errlen, "name folding: OpenCC %s: %s", T2S_CONFIG, opencc_error());
        translit_close_all();
        return JK_EINTERNAL;
    }
    if (pthread_key_create(&st.thread_key, thread_state_free)) {
        snprintf(err, errlen, "name folding: no thread key");
        opencc_close(st.t2s);
        translit_close_all();
        return JK_EINTERNAL;
    }
    st.is_ready = 1;
    return JK_OK;
}

/* This thread's state, made on first use. NULL when out of memory. */
static struct thread_state *thread_state(void)
{
    struct thread_state *ts = pthread_getspecific(st.thread_key);
    if (ts) return ts;
    if (!(ts = calloc(1, sizeof *ts))) return NULL;
    UErrorCode ue = U_ZERO_ERROR;
    pthread_mutex_lock(&st.lock);
    for (int i = 0; i < N_TRANSLIT && !U_FAILURE(ue); i++)
        ts->t[i] = utrans_clone(st.t[i], &ue);
    pthread_mutex_unlock(&st.lock);
    if (U_FAILURE(ue) || pthread_setspecific(st.thread_key, ts)) {
        thread_state_free(ts);
        return NULL;
    }
    return ts;
}

/* Traditional characters of s to Simplified, into out (cap bytes). JK_ENOMEM; JK_EINVAL
 * when the result does not fit. */
static jk_rc to_simplified(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    while (k < n && !(s[k] & 0x80))
        k++;
    if (k == n) { /* ASCII: nothing to convert, and no lock */
        if (n >= cap) return JK_EINVAL;
        memcpy(out, s, n);
        out[n] = '\0';
        return JK_OK;
    }
    pthread_mutex_lock(&st.lock);
    char *r = opencc_convert_utf8(st.t2s, s, n);
    pthread_mutex_unlock(&st.lock);
    if (!r) return JK_ENOMEM;
    size_t len = strlen(r);
    jk_rc rc = len < cap ? JK_OK : JK_EINVAL;
    if (!rc) memcpy(out, r, len + 1);
    opencc_convert_utf8_free(r);
    return rc;
}

/* Whether code point c separates the parts of a name: white space (also the ideographic
 * space), the middle dots of transcribed names (买买提·艾力), hyphens, commas, apostrophes. */
static int is_separator(UChar32 c)
{
    return u_isUWhiteSpace(c) || c == 0x00B7 || c == 0x30FB || c == 0xFF0E || c == 0x2027 ||
           c == '.' || c == '-' || c == ',' || c == '\'' || c == 0xFF0C || c == 0x3001;
}

/* The Han characters of s, without separators, into han (JK_MPI_HAN_MAX bytes): "" when s
 * holds anything else (a Latin or mixed name has no Han form) or is too long. */
static void han_of(const char *s, size_t n, char han[JK_MPI_HAN_MAX])
{
    size_t i = 0, o = 0;
    int n_hans = 0;
    han[0] = '\0';
    while (i < n) {
        size_t start = i;
        UChar32 c;
        U8_NEXT(s, i, n, c);
        if (c < 0) return;
        if (is_separator(c)) continue;
        UErrorCode ue = U_ZERO_ERROR;
        if (uscript_getScript(c, &ue) != USCRIPT_HAN || U_FAILURE(ue)) {
            han[0] = '\0';
            return;
        }
        if (o + (i - start) >= JK_MPI_HAN_MAX || ++n_hans > MAX_NAME_HANS) {
            han[0] = '\0';
            return;
        }
        memcpy(han + o, s + start, i - start);
        o += i - start;
        han[o] = '\0';
    }
}

/* Rewrites the start of a pinyin word written for ü (lyu, lv, nyu, nv; passports write 吕 as
 * Lyu) as the transliteration writes it (lu, nu). */
static size_t fold_umlaut(const char *w, size_t n, char *out)
{
    static const struct {
        const char *from, *to;
    } forms[] = {{"lyu", "lu"}, {"nyu", "nu"}, {"lv", "lu"}, {"nv", "nu"}};
    for (size_t k = 0; k < sizeof forms / sizeof forms[0]; k++) {
        size_t fl = strlen(forms[k].from), tl = strlen(forms[k].to);
        if (n >= fl && !memcmp(w, forms[k].from, fl)) {
            memcpy(out, forms[k].to, tl);
            memcpy(out + tl, w + fl, n - fl);
            return tl + n - fl;
        }
    }
    memcpy(out, w, n);
    return n;
}

/* The pinyin key of the ASCII text s: its words of letters a-z, single spaces between them
 * (anything else separates words). Words that do not fit are left out. */
static void pinyin_key(const char *s, size_t n, char py[JK_MPI_PY_MAX])
{
    size_t o = 0, i = 0;
    py[0] = '\0';
    while (i < n) {
        while (i < n && !(s[i] >= 'a' && s[i] <= 'z'))
            i++;
        size_t start = i;
        while (i < n && s[i] >= 'a' && s[i] <= 'z')
            i++;
        size_t wn = i - start;
        if (!wn) break;
        if (o + 1 + wn >= JK_MPI_PY_MAX) break;
        if (o) py[o++] = ' ';
        o += fold_umlaut(s + start, wn, py + o);
        py[o] = '\0';
    }
}

/* Transliterates the UTF-16 text u[0..len) with t into out (cap bytes) at *o. */
static jk_rc translit_append(UTransliterator *t, UChar *u, int32_t len, char *out, size_t cap,
                             size_t *o)
{
    UErrorCode ue = U_ZERO_ERROR;
    int32_t limit = len, olen = 0;
    utrans_transUChars(t, u, &len, USTR_MAX, 0, &limit, &ue);
    if (U_FAILURE(ue)) return JK_EINVAL;
    u_strToUTF8(out + *o, (int32_t)(cap - *o), &olen, u, len, &ue);
    if (U_FAILURE(ue) || *o + (size_t)olen >= cap) return JK_EINVAL;
    *o += (size_t)olen;
    out[*o] = '\0';
    return JK_OK;
}

/* The syllable of Han character c (first: the name's first character) into out. */
static jk_rc syllable_of(struct thread_state *ts, UChar32 c, int is_first, char *out, size_t cap,
                         size_t *o)
{
    uint32_t key = ((uint32_t)c << 1 | (uint32_t)is_first) + 1;
    size_t slot = (key * 2654435761u) % CACHE_SLOTS;
    for (size_t k = 0; k < 16 && ts->key[slot]; k++, slot = (slot + 1) % CACHE_SLOTS)
        if (ts->key[slot] == key) {
            size_t n = strlen(ts->syllable[slot]);
            if (*o + n + 1 >= cap) return JK_EINVAL;
            memcpy(out + *o, ts->syllable[slot], n + 1);
            *o += n;
            return JK_OK;
        }
    UChar u[USTR_MAX];
    int32_t len = 0;
    U16_APPEND_UNSAFE(u, len, c);
    size_t start = *o;
    jk_rc rc = translit_append(ts->t[is_first ? T_FIRST : T_REST], u, len, out, cap, o);
    if (!rc && !ts->key[slot] && *o - start < SYLLABLE_MAX) {
        ts->key[slot] = key;
        memcpy(ts->syllable[slot], out + start, *o - start + 1);
    }
    return rc;
}

/* The UTF-8 text s (valid) into lower-case ASCII (out, cap bytes): each Han character its
 * syllable between spaces, the rest without diacritics. */
static jk_rc transliterate(const char *s, size_t n, char *out, size_t cap)
{
    struct thread_state *ts = thread_state();
    if (!ts) return JK_ENOMEM;
    UChar u[USTR_MAX];
    int32_t ulen = 0;
    size_t i = 0, o = 0;
    int is_first = 1;
    jk_rc rc = JK_OK;
    out[0] = '\0';
    while (!rc && i < n) {
        UChar32 c;
        U8_NEXT(s, i, n, c);
        UErrorCode ue = U_ZERO_ERROR;
        int is_han = uscript_getScript(c, &ue) == USCRIPT_HAN && !U_FAILURE(ue);
        if (is_han || ulen + 2 >= USTR_MAX) {
            if (ulen) rc = translit_append(ts->t[T_OTHER], u, ulen, out, cap, &o);
            ulen = 0;
        }
        if (rc) break;
        if (!is_han) {
            U16_APPEND_UNSAFE(u, ulen, c);
            continue;
        }
        if (o + 2 >= cap) return JK_EINVAL;
        out[o++] = ' ';
        if ((rc = syllable_of(ts, c, is_first, out, cap, &o))) break;
        out[o++] = ' ';
        out[o] = '\0';
        is_first = 0;
    }
    if (!rc && ulen) rc = translit_append(ts->t[T_OTHER], u, ulen, out, cap, &o);
    return rc;
}

jk_rc jk_mpi_fold_name(const char *name, struct jk_mpi_rec *rec)
{
    char simp[NAME_MAX * 2], ascii[NAME_MAX * 8];
    rec->han[0] = rec->pinyin[0] = '\0';
    if (!st.is_ready) return JK_EINTERNAL;
    size_t n = name ? strlen(name) : 0;
    if (!n) return JK_OK;
    int32_t i = 0;
    while (i < (int32_t)n) {
        UChar32 c;
        U8_NEXT(name, i, (int32_t)n, c);
        if (c < 0) return JK_EINVAL;
    }
    if (n > NAME_MAX) return JK_EINVAL;
    jk_rc rc = to_simplified(name, n, simp, sizeof simp);
    if (!rc) rc = transliterate(simp, strlen(simp), ascii, sizeof ascii);
    if (rc) return rc;
    han_of(simp, strlen(simp), rec->han);
    pinyin_key(ascii, strlen(ascii), rec->pinyin);
    return JK_OK;
}

jk_rc jk_mpi_fold_region(const char *place, char region[JK_MPI_REGION_MAX])
{
    static const char city[] = "市";
    char simp[NAME_MAX * 2];
    region[0] = '\0';
    size_t n = place ? strlen(place) : 0;
    if (!n || n > NAME_MAX || !st.is_ready) return JK_OK;
    jk_rc rc = to_simplified(place, n, simp, sizeof simp);
    if (rc) return rc == JK_ENOMEM ? rc : JK_OK;
    size_t i = 0, o = 0;
    n = strlen(simp);
    while (i < n) {
        size_t start = i;
        UChar32 c;
        U8_NEXT(simp, i, n, c);
        if (c < 0) return JK_OK;
        if (is_separator(c)) continue;
        if (o + (i - start) >= JK_MPI_REGION_MAX) {
            region[0] = '\0';
            return JK_OK;
        }
        for (size_t k = start; k < i; k++)
            region[o++] = c < 0x80 && simp[k] >= 'A' && simp[k] <= 'Z' ? simp[k] + 32 : simp[k];
    }
    region[o] = '\0';
    if (o > sizeof city - 1 && !strcmp(region + o - (sizeof city - 1), city))
        region[o - (sizeof city - 1)] = '\0';
    return JK_OK;
}
