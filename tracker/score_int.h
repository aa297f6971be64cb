/*
 * Internal to tracker/score*.c, lead.c, route.c and outbox.c: the scorer handle and the helpers
 * they share (score.h is the contract).
 */
#ifndef LEADLOOP_SCORE_INT_H
#define LEADLOOP_SCORE_INT_H

#include <jansson.h>
#include "leadloop/score.h"
#include "leadloop/program.h"

struct st_ll_scorer_t {
    ll_store_t *store;
    const ll_score_conf_t *conf;
    MDB_dbi scores, ledger, leads, sla_due, outbox, outbox_mail, routing;
    ll_nurture_t nurture; /* the mailer's sends: program and step of an email open or click */
    int rescoring; /* a rescore replays the log: no routing, no alerts */
    /* During a rescore, the current contact's last recycle (from its lead) and its previous seq. */
    uint64_t replay_recycled_us, replay_prev_seq;
    char replay_why[24];
};

/** Case-insensitive (ci) or exact glob: '*' any run, '?' one byte. */
int ll__glob(const char *pat, const char *s, size_t n, int ci);
/** A profile field as text (strings as they are, numbers printed); "" when absent. */
void ll__field(json_t *fields, const char *name, char *out, size_t outlen);
/** "2026-11-22T10:00:00Z". */
void ll__iso(uint64_t us, char out[32]);
/** Writes the state back. */
int ll__score_put(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, const ll_score_state_t *st);
/** The seq of the contact's latest event (0: none). */
uint64_t ll__contact_last_seq(ll_txn_t *t, uint64_t contact);
/**
 * Resets the engagement in *st at time_us (a recycle), with a ledger row after seq; the caller
 * writes *st back.
 */
int ll__engagement_reset(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_score_state_t *st, uint64_t seq,
                         uint64_t time_us, const char *why);
/** Appends a ledger row for contact (n tells rows of one event apart). */
int ll__ledger_put(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, uint16_t n, const ll_ledger_rec_t *r);

/**
 * Hand-off and alerts (lead.c), called by the scorer inside the event's transaction:
 * the contact reached the threshold; or a human event of a contact that has a lead.
 */
int ll__lead_on_ready(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, const ll_score_state_t *st, uint64_t seq,
                      uint64_t time_us);
int ll__lead_on_activity(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, const ll_event_t *ev,
                         const ll_score_state_t *st);
/** Builds and queues an alert (kind "sales_ready", "owner_click", "sla_breach") to `to`. */
int ll__alert(ll_scorer_t *sc, ll_txn_t *t, const char *kind, uint64_t contact, const ll_lead_t *l, uint64_t seq,
              const char *why, const char *to);

#endif
