/* pay.h - payment and medical-insurance settlement of the internet hospital: an INTERFACE
 * that a later piece of work fills (docs/internals/rx.md, "Money"). The amounts due are
 * recorded by the services (rx_prescription.amount_fen, ih_visit.amount_fen); what is paid,
 * refunded or settled by insurance comes through a provider behind this interface.
 *
 * The only provider today is "none": it takes no money, records nothing and answers
 * "unpaid" for everything. It is not a payment. Nothing waits for payment while it is
 * installed: review, dispensing and delivery proceed, and responses and the supervision
 * export say "unpaid". */
#ifndef JK_PAY_H
#define JK_PAY_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"
#include "store/store.h"

enum jk_pay_state {
    JK_PAY_UNPAID,  /* nothing was paid (the "none" provider's answer) */
    JK_PAY_PENDING, /* a charge was started and has not been confirmed */
    JK_PAY_PAID,    /* paid by the patient */
    JK_PAY_SETTLED, /* paid, partly or wholly, through medical insurance */
    JK_PAY_REFUNDED /* paid, then refunded (a cancellation) */
};

/* "unpaid", "pending", "paid", "settled", "refunded". */
const char *jk_pay_state_name(enum jk_pay_state s);

/* What is charged: an online visit or a prescription, with its amount due. */
struct jk_pay_item {
    const char *kind;       /* "visit" or "prescription" */
    const char *id;         /* ih_visit.id or rx_prescription.id */
    const char *patient_id; /* who pays (or whose insurance) */
    const char *org;        /* the institution paid (Organization id) */
    int64_t amount_fen;     /* amount due, in fen (0.01 yuan) */
};

/* A provider. Each call runs inside the caller's transaction on c, so what it records
 * commits or rolls back with the change it belongs to; a provider that talks to a payment
 * gateway must do so outside (an outbox) and report back through on_callback. */
struct jk_pay_provider {
    const char *name;
    /* The amount of it becomes due (a prescription approved, a visit finished). */
    jk_rc (*charge)(jk_conn *c, const struct jk_pay_item *it, int64_t now_ms,
                    enum jk_pay_state *out);
    /* It was cancelled: what was paid goes back. */
    jk_rc (*refund)(jk_conn *c, const struct jk_pay_item *it, int64_t now_ms,
                    enum jk_pay_state *out);
    /* Its state now. */
    jk_rc (*state)(jk_conn *c, const struct jk_pay_item *it, enum jk_pay_state *out);
    /* A callback of the payment gateway or the insurance settlement platform (its body,
     * already authenticated by the caller) about kind/id. */
    jk_rc (*on_callback)(jk_conn *c, const char *kind, const char *id, const char *body, size_t len,
                         int64_t now_ms);
};

/* The "none" provider: records nothing; every state is JK_PAY_UNPAID; callbacks are refused
 * (JK_EINVAL: there is no payment to settle). */
extern const struct jk_pay_provider jk_pay_none;

/* The installed provider (jk_pay_none until jk_pay_install). */
const struct jk_pay_provider *jk_pay(void);

/* Installs p for the process; once at start-up, before threads use it. NULL: none. */
void jk_pay_install(const struct jk_pay_provider *p);

#endif
