/* names.c - a person's name folded for matching: Traditional Han characters to Simplified
 * (OpenCC t2s), Han to toneless pinyin syllables (ICU Han-Latin/Names), Latin spellings
 * lower-cased without diacritics (docs/internals/mpi.md, "Matching"). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <opencc/opencc.h>
#include <unicode/uchar.h>
#include <unicode/uscript.h>
#include <unicode/ustring.h>
#include <unicode/utf8.h>
#include <unicode/utrans.h>

#include "mpi/match.h"

/* Fullwidth letters become ASCII, Han becomes pinyin with the readings of surnames for the
 * first character (单 shan, 曾 zeng, 解 xie), Latin loses its diacritics (Zhāng, Müller). */
#define TRANSLIT_ID   "Fullwidth-Halfwidth; Han-Latin/Names; Latin-ASCII; Lower"
#define NAME_MAX      256  /* bytes of a name folded; longer names are refused */
#define USTR_MAX      2048 /* UTF-16 units: one Han character becomes at most 7 ("zhuang ") */
#define T2S_CONFIG    "t2s.json"
#define MAX_NAME_HANS (JK_MPI_HAN_MAX / 3)

/* The module's state: made by jk_mpi_names_init before threads use it. The transliterator is
 * not safe for concurrent use: each thread transliterates with its own clone (kept in the
 * thread's key, closed when the thread ends). OpenCC promises nothing about threads: every
 * conversion holds the lock. */
static struct {
    UTransliterator *translit; /* cloned, never used itself after init */
    opencc_t t2s;
    pthread_key_t clone_key;
    pthread_mutex_t lock;
    int is_ready;
} st = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void clone_free(void *p)
{
    utrans_close(p);
}

jk_rc jk_mpi_names_init(char *err, size_t errlen)
{
    if (st.is_ready) return JK_OK;
    UErrorCode ue = U_ZERO_ERROR;
    UChar id[sizeof TRANSLIT_ID];
    u_uastrcpy(id, TRANSLIT_ID);
    st.translit = utrans_openU(id, -1, UTRANS_FORWARD, NULL, 0, NULL, &ue);
    if (U_FAILURE(ue)) {
        snprintf(err, errlen, "name folding: ICU transliterator \"%s\": %s", TRANSLIT_ID,
                 u_errorName(ue));
        return JK_EINTERNAL;
    }
    st.t2s = opencc_open(T2S_CONFIG);
    if (st.t2s == (opencc_t)-1) {
        snprintf(err, errlen, "name folding: OpenCC %s: %s", T2S_CONFIG, opencc_error());
        utrans_close(st.translit);
        return JK_EINTERNAL;
    }
    if (pthread_key_create(&st.clone_key, clone_free)) {
        snprintf(err, errlen, "name folding: no thread key");
        opencc_close(st.t2s);
        utrans_close(st.translit);
        return JK_EINTERNAL;
    }
    st.is_ready = 1;
    return JK_OK;
}

/* This thread's transliterator, cloned on first use. NULL when out of memory. */
static UTransliterator *translit_of_thread(void)
{
    UTransliterator *t = pthread_getspecific(st.clone_key);
    if (t) return t;
    UErrorCode ue = U_ZERO_ERROR;
    pthread_mutex_lock(&st.lock);
    t = utrans_clone(st.translit, &ue);
    pthread_mutex_unlock(&st.lock);
    if (U_FAILURE(ue)) return NULL;
    if (pthread_setspecific(st.clone_key, t)) {
        utrans_close(t);
        return NULL;
    }
    return t;
}

/* Traditional characters of s to Simplified, into out (cap bytes). JK_ENOMEM; JK_EINVAL
 * when the result does not fit. */
static jk_rc to_simplified(const char *s, size_t n, char *out, size_t cap)
{
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

/* Transliterates the UTF-8 text s into lower-case ASCII (out, cap bytes). */
static jk_rc transliterate(const char *s, size_t n, char *out, size_t cap)
{
    UTransliterator *t = translit_of_thread();
    if (!t) return JK_ENOMEM;
    UChar u[USTR_MAX];
    int32_t len = 0, limit;
    UErrorCode ue = U_ZERO_ERROR;
    u_strFromUTF8(u, USTR_MAX, &len, s, (int32_t)n, &ue);
    if (U_FAILURE(ue) || len >= USTR_MAX / 4) return JK_EINVAL;
    limit = len;
    utrans_transUChars(t, u, &len, USTR_MAX, 0, &limit, &ue);
    if (U_FAILURE(ue)) return JK_EINVAL;
    int32_t olen = 0;
    u_strToUTF8(out, (int32_t)cap, &olen, u, len, &ue);
    if (U_FAILURE(ue) || (size_t)olen >= cap) return JK_EINVAL;
    out[olen] = '\0';
    return JK_OK;
}

jk_rc jk_mpi_fold_name(const char *name, struct jk_mpi_rec *rec)
{
    char simp[NAME_MAX * 2], ascii[USTR_MAX];
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
