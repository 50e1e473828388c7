/* pay.c - the payment interface's "none" provider: records nothing, everything is unpaid. */
#include "svc/pay/pay.h"

const char *jk_pay_state_name(enum jk_pay_state s)
{
    static const char *const names[] = {"unpaid", "pending", "paid", "settled", "refunded"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unpaid";
}

static jk_rc none_change(jk_conn *c, const struct jk_pay_item *it, int64_t now_ms,
                         enum jk_pay_state *out)
{
    (void)c;
    (void)it;
    (void)now_ms;
    *out = JK_PAY_UNPAID;
    return JK_OK;
}

static jk_rc none_state(jk_conn *c, const struct jk_pay_item *it, enum jk_pay_state *out)
{
    (void)c;
    (void)it;
    *out = JK_PAY_UNPAID;
    return JK_OK;
}

static jk_rc none_callback(jk_conn *c, const char *kind, const char *id, const char *body,
                           size_t len, int64_t now_ms)
{
    (void)c;
    (void)kind;
    (void)id;
    (void)body;
    (void)len;
    (void)now_ms;
    return JK_EINVAL;
}

const struct jk_pay_provider jk_pay_none = {"none", none_change, none_change, none_state,
                                            none_callback};

static const struct jk_pay_provider *installed = &jk_pay_none;

const struct jk_pay_provider *jk_pay(void)
{
    return installed;
}

void jk_pay_install(const struct jk_pay_provider *p)
{
    installed = p ? p : &jk_pay_none;
}
