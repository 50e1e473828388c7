/* check.c - the checks of a prescription (docs/internals/rx.md): items, patient facts and
 * the rules in, findings out, each with its stable code, its severity and a message in
 * Chinese or English that names the rule and its limit. Pure: no clock, no database. */
#include <math.h>
#include <string.h>

#include "core/arena.h"
#include "svc/rx/rx_int.h"

struct run {
    const struct jk_rx_rules *r;
    const struct jk_rx_item *items;
    const struct jk_rx_drug **drugs; /* per item, NULL when not in the formulary */
    const struct jk_rx_patient *p;
    int is_en;
    struct jk_arena *a;
    struct jk_rx_finding *out;
    size_t n_out, max_out;
};

static const struct {
    const char *klass, *zh, *en;
} class_labels[] = {
    {"ordinary", "普通药品", "ordinary"},
    {"antimicrobial", "抗菌药物", "antimicrobial"},
    {"narcotic", "麻醉药品", "narcotic"},
    {"psychotropic-1", "第一类精神药品", "class I psychotropic"},
    {"psychotropic-2", "第二类精神药品", "class II psychotropic"},
    {"toxic", "医疗用毒性药品", "medical toxic"},
    {"radioactive", "放射性药品", "radioactive"},
    {"precursor", "易制毒药品", "precursor-chemical"},
    {"special-storage", "特殊储存药品", "special-storage"},
};

static const char *class_label(const char *klass, int is_en)
{
    for (size_t i = 0; i < sizeof class_labels / sizeof class_labels[0]; i++)
        if (!strcmp(class_labels[i].klass, klass))
            return is_en ? class_labels[i].en : class_labels[i].zh;
    return klass;
}

/* Adds a finding; its message is zh or en (already formatted) as the run's language says. */
static jk_rc add(struct run *x, enum jk_rx_severity sev, const char *code, int item, const char *zh,
                 const char *en)
{
    if (x->n_out == x->max_out) return JK_OK; /* cannot happen: max_out covers every check */
    const char *msg = x->is_en ? en : zh;
    if (!msg) return JK_ENOMEM;
    x->out[x->n_out++] = (struct jk_rx_finding){sev, code, item, msg};
    return JK_OK;
}

static enum jk_rx_severity graded(const struct run *x, int which)
{
    return x->r->severity[which];
}

#define ZH(...) (x->is_en ? "" : jk_arena_printf(x->a, __VA_ARGS__))
#define EN(...) (x->is_en ? jk_arena_printf(x->a, __VA_ARGS__) : "")

/* ---- the prescription as a whole ---- */

static jk_rc check_count(struct run *x, size_t n)
{
    int max = x->r->limits.max_items;
    if (n <= (size_t)max) return JK_OK;
    return add(
        x, JK_RX_REFUSE, "rx.max_items", -1,
        ZH("每张处方不得超过 %d 种药品（rx.max_items），本处方 %zu 种", max, n),
        EN("a prescription holds at most %d drugs (rx.max_items); this one has %zu", max, n));
}

/* ---- one item ---- */

static jk_rc check_class(struct run *x, int i, const struct jk_rx_drug *d)
{
    if (!jk_rx_class_in(x->r->online_forbidden, d->klass)) return JK_OK;
    return add(x, JK_RX_REFUSE, "rx.online_forbidden_classes", i,
               ZH("第 %d 项：%s 属于%s，互联网诊疗不得开具（rx.online_forbidden_classes）", i + 1,
                  d->name, class_label(d->klass, 0)),
               EN("item %d: %s is a %s drug, never prescribed online "
                  "(rx.online_forbidden_classes)",
                  i + 1, d->name_en, class_label(d->klass, 1)));
}

static jk_rc check_days(struct run *x, int i, const struct jk_rx_drug *d, int is_long_term)
{
    const struct jk_rx_limits *l = &x->r->limits;
    int days = x->items[i].days;
    if (days <= l->max_days) return JK_OK;
    if (!is_long_term)
        return add(x, JK_RX_REFUSE, "rx.max_days", i,
                   ZH("第 %d 项：%s 用药 %d 天，超过普通处方 %d 天的限量（rx.max_days）；"
                      "慢性病长期处方须注明理由",
                      i + 1, d->name, days, l->max_days),
                   EN("item %d: %s for %d days is more than the %d days of an ordinary "
                      "prescription (rx.max_days); a long-term prescription for a chronic "
                      "disease needs a reason",
                      i + 1, d->name_en, days, l->max_days));
    if (jk_rx_class_in(x->r->long_term_excluded, d->klass))
        return add(x, JK_RX_REFUSE, "rx.long_term_excluded_classes", i,
                   ZH("第 %d 项：%s 属于%s，不得用于长期处方，用量不得超过 %d 天"
                      "（rx.long_term_excluded_classes）",
                      i + 1, d->name, class_label(d->klass, 0), l->max_days),
                   EN("item %d: %s is a %s drug, never on a long-term prescription: at most %d "
                      "days (rx.long_term_excluded_classes)",
                      i + 1, d->name_en, class_label(d->klass, 1), l->max_days));
    if (!d->is_chronic)
        return add(x, JK_RX_REFUSE, "rx.max_days", i,
                   ZH("第 %d 项：%s 不是慢性病长期用药，用量不得超过 %d 天（rx.max_days）", i + 1,
                      d->name, l->max_days),
                   EN("item %d: %s is not a drug for a chronic disease: at most %d days "
                      "(rx.max_days)",
                      i + 1, d->name_en, l->max_days));
    if (days > l->max_days_long_term)
        return add(x, JK_RX_REFUSE, "rx.max_days_long_term", i,
                   ZH("第 %d 项：%s 用药 %d 天，超过长期处方 %d 天的限量"
                      "（rx.max_days_long_term）",
                      i + 1, d->name, days, l->max_days_long_term),
                   EN("item %d: %s for %d days is more than the %d days of a long-term "
                      "prescription (rx.max_days_long_term)",
                      i + 1, d->name_en, days, l->max_days_long_term));
    if (days > l->long_term_review_days)
        return add(x, JK_RX_WARN, "rx.long_term_review_days", i,
                   ZH("第 %d 项：%s 用药 %d 天，超过 %d 天的长期处方须严格评估、记录并经患者确认"
                      "（rx.long_term_review_days）",
                      i + 1, d->name, days, l->long_term_review_days),
                   EN("item %d: %s for %d days: a long-term prescription of more than %d days "
                      "needs a strict assessment, a record and the patient's confirmation "
                      "(rx.long_term_review_days)",
                      i + 1, d->name_en, days, l->long_term_review_days));
    return JK_OK;
}

static jk_rc check_dose(struct run *x, int i, const struct jk_rx_drug *d)
{
    const struct jk_rx_item *it = &x->items[i];
    jk_rc rc = JK_OK;
    if (it->dose < d->dose_min || it->dose > d->dose_max)
        rc = add(x, graded(x, JK_RX_DOSE_RANGE), "dose.range", i,
                 ZH("第 %d 项：%s 单次剂量 %g%s 不在处方集 %g–%g%s 的范围内（dose.range）", i + 1,
                    d->name, it->dose, d->unit, d->dose_min, d->dose_max, d->unit),
                 EN("item %d: a dose of %g %s of %s is outside the formulary's %g-%g %s "
                    "(dose.range)",
                    i + 1, it->dose, d->unit, d->name_en, d->dose_min, d->dose_max, d->unit));
    double daily = it->dose * it->times_per_day;
    int is_in_range = it->dose >= d->dose_min && it->dose <= d->dose_max;
    if (!rc && is_in_range && d->daily_max > 0 && daily > d->daily_max + 1e-9)
        rc = add(x, graded(x, JK_RX_DOSE_DAILY), "dose.daily", i,
                 ZH("第 %d 项：%s 每日 %g%s（%g%s × %d 次）超过每日最大量 %g%s（dose.daily）",
                    i + 1, d->name, daily, d->unit, it->dose, d->unit, it->times_per_day,
                    d->daily_max, d->unit),
                 EN("item %d: %g %s a day of %s (%g %s × %d) is more than the daily maximum of "
                    "%g %s (dose.daily)",
                    i + 1, daily, d->unit, d->name_en, it->dose, d->unit, it->times_per_day,
                    d->daily_max, d->unit));
    return rc;
}

/* More packages than the days need would carry the supply past the day limits. */
static jk_rc check_quantity(struct run *x, int i, const struct jk_rx_drug *d)
{
    const struct jk_rx_item *it = &x->items[i];
    if (d->package_amount <= 0) return JK_OK;
    double need = it->dose * it->times_per_day * it->days;
    double packages = ceil(need / d->package_amount - 1e-9);
    if (packages < 1) packages = 1;
    if (it->quantity <= packages) return JK_OK;
    return add(x, graded(x, JK_RX_QUANTITY), "quantity", i,
               ZH("第 %d 项：%s 开具 %d 盒，超过 %d 天用量所需的 %.0f 盒（每盒 %s）（quantity）",
                  i + 1, d->name, it->quantity, it->days, packages, d->package),
               EN("item %d: %d packages of %s are more than the %.0f that %d days need (%s "
                  "each) (quantity)",
                  i + 1, it->quantity, d->name_en, packages, it->days, d->package));
}

static jk_rc check_patient(struct run *x, int i, const struct jk_rx_drug *d)
{
    const struct jk_rx_patient *p = x->p;
    jk_rc rc = JK_OK;
    size_t k = 0;
    while (k < p->n_allergies && strcmp(p->allergies[k], d->substance) &&
           strcmp(p->allergies[k], d->code))
        k++;
    if (k < p->n_allergies)
        rc = add(x, graded(x, JK_RX_ALLERGY), "allergy", i,
                 ZH("第 %d 项：患者有 %s 过敏记录（AllergyIntolerance），不得使用 %s"
                    "（allergy）",
                    i + 1, p->allergies[k], d->name),
                 EN("item %d: the patient has a recorded allergy to %s (AllergyIntolerance): "
                    "not %s (allergy)",
                    i + 1, p->allergies[k], d->name_en));
    int too_young = d->age_min_years >= 0 && p->age_years < d->age_min_years;
    int too_old = d->age_max_years >= 0 && p->age_years > d->age_max_years;
    if (!rc && p->age_years >= 0 && (too_young || too_old))
        rc = add(x, graded(x, JK_RX_AGE), "age", i,
                 too_young ? ZH("第 %d 项：%s 限 %d 岁及以上使用，患者 %d 岁（age）", i + 1,
                                d->name, d->age_min_years, p->age_years)
                           : ZH("第 %d 项：%s 限 %d 岁及以下使用，患者 %d 岁（age）", i + 1,
                                d->name, d->age_max_years, p->age_years),
                 too_young ? EN("item %d: %s is for patients of %d years or more; the patient is "
                                "%d (age)",
                                i + 1, d->name_en, d->age_min_years, p->age_years)
                           : EN("item %d: %s is for patients of %d years or less; the patient is "
                                "%d (age)",
                                i + 1, d->name_en, d->age_max_years, p->age_years));
    if (!rc && d->sex && p->sex && p->sex != d->sex)
        rc = add(
            x, graded(x, JK_RX_SEX), "sex", i,
            ZH("第 %d 项：%s 限%s性患者使用（sex）", i + 1, d->name, d->sex == 'f' ? "女" : "男"),
            EN("item %d: %s is for %s patients only (sex)", i + 1, d->name_en,
               d->sex == 'f' ? "female" : "male"));
    return rc;
}

/* Two drugs of one therapeutic group: in this prescription, or one the patient takes (an
 * active MedicationRequest of another drug; the same drug again is a renewal). */
static jk_rc check_duplicate(struct run *x, int i, const struct jk_rx_drug *d)
{
    for (int k = 0; k < i; k++) {
        const struct jk_rx_drug *o = x->drugs[k];
        if (!o || strcmp(o->group, d->group)) continue;
        return add(x, graded(x, JK_RX_DUPLICATE), "duplicate", i,
                   ZH("第 %d 项：%s 与第 %d 项 %s 同属 %s 类，重复用药（duplicate）", i + 1,
                      d->name, k + 1, o->name, d->group),
                   EN("item %d: %s and item %d, %s, are both %s: duplicate therapy (duplicate)",
                      i + 1, d->name_en, k + 1, o->name_en, d->group));
    }
    for (size_t k = 0; k < x->p->n_active; k++) {
        const struct jk_rx_drug *o = jk_rx_drug(x->r, NULL, x->p->active_drugs[k]);
        if (!o || o == d || strcmp(o->group, d->group)) continue;
        return add(x, graded(x, JK_RX_DUPLICATE), "duplicate", i,
                   ZH("第 %d 项：%s 与患者正在使用的 %s 同属 %s 类，重复用药（duplicate）", i + 1,
                      d->name, o->name, d->group),
                   EN("item %d: %s and %s, which the patient takes, are both %s: duplicate "
                      "therapy (duplicate)",
                      i + 1, d->name_en, o->name_en, d->group));
    }
    return JK_OK;
}

static jk_rc check_item(struct run *x, const char *org, int i, int is_long_term)
{
    const struct jk_rx_item *it = &x->items[i];
    const struct jk_rx_drug *d = jk_rx_drug(x->r, org, it->drug_code);
    x->drugs[i] = d;
    if (!d)
        return add(x, JK_RX_REFUSE, "formulary", i,
                   ZH("第 %d 项：药品 %s 不在本机构的处方集中（formulary）", i + 1, it->drug_code),
                   EN("item %d: the drug %s is not in the institution's formulary (formulary)",
                      i + 1, it->drug_code));
    jk_rc rc = check_class(x, i, d);
    if (!rc) rc = check_days(x, i, d, is_long_term);
    if (!rc) rc = check_dose(x, i, d);
    if (!rc) rc = check_quantity(x, i, d);
    if (!rc) rc = check_patient(x, i, d);
    if (!rc) rc = check_duplicate(x, i, d);
    return rc;
}

jk_rc jk_rx_check(const struct jk_rx_rules *r, const char *org, const struct jk_rx_item *items,
                  size_t n, const struct jk_rx_patient *patient, const char *long_term, int is_en,
                  struct jk_arena *a, struct jk_rx_finding **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (!n || n > JK_RX_MAX_ITEMS) return JK_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!items[i].drug_code || !(items[i].dose > 0) || items[i].times_per_day < 1 ||
            items[i].days < 1 || items[i].quantity < 1)
            return JK_EINVAL;
    struct run x = {r, items, NULL, patient, is_en, a, NULL, 0, 8 * n + 1};
    x.drugs = jk_arena_zalloc(a, n * sizeof *x.drugs);
    x.out = jk_arena_zalloc(a, x.max_out * sizeof *x.out);
    if (!x.drugs || !x.out) return JK_ENOMEM;
    int is_long_term = long_term && *long_term;
    jk_rc rc = check_count(&x, n);
    for (size_t i = 0; !rc && i < n; i++)
        rc = check_item(&x, org, (int)i, is_long_term);
    if (rc) return rc;
    *out = x.out;
    *n_out = x.n_out;
    return JK_OK;
}

const char *jk_rx_severity_name(enum jk_rx_severity s)
{
    return s == JK_RX_REFUSE ? "refuse" : "warn";
}
