/*
 * Ingest: what the writer does for one event inside its batch transaction. leadloopd's writer
 * thread, the mailer and the CLI all call it, so identity rules live in one place
 * (DESIGN.md "Identity"):
 *
 *  - the visitor row is created or touched (first/last seen, last country);
 *  - a form that carries an email creates or updates that contact (merging the kept fields) and
 *    binds the visitor to it; a valid click binds the visitor to the token's contact;
 *  - binding an unbound visitor attributes its earlier anonymous events to the contact (they are
 *    added to contact_events; the records themselves never change);
 *  - two known contacts are never merged: a click on contact B's link by a visitor bound to A is
 *    stored with contact B and LL_EVF_FORWARD, and the visitor stays bound to A;
 *  - an event without its own contact gets the visitor's contact, if any;
 *  - with a judge (judge.h), an email open or click gets its message-level label and, unless a
 *    machine signal settled it, waits provisional_s before it scores.
 *
 * Ownership: rec is the caller's; ingest patches seq, contact and flags in place.
 */
#ifndef LEADLOOP_INGEST_H
#define LEADLOOP_INGEST_H

#include "leadloop/store.h"

typedef struct st_ll_ingest_t {
    /* in */
    uint8_t *rec;
    size_t len;
    const char *email;       /* NUL-terminated normalised address to upsert and bind, or NULL */
    const char *fields_json; /* profile fields to merge with email, or NULL */
    int bind;                /* 1: bind the visitor to the record's contact (a valid click) */
    struct st_ll_scorer_t *scorer; /* score.h: scores the event (and attributed ones) in this txn; NULL: none */
    struct st_ll_judge_t *judge;   /* judge.h: labels email opens and clicks (leadloopd); NULL: none */
    const struct st_ll_ip_t *client_ip; /* the full client address for the judge's lists; NULL: the
                                         * stored (truncated) one */
    /* out */
    uint64_t seq;
    uint64_t contact;
    int contact_created;
} ll_ingest_t;

/** Runs the rules above and appends the event. On error the transaction must be aborted. */
int ll_ingest(ll_txn_t *t, ll_ingest_t *in);
/** Encodes ev and ingests it (no email to bind, no judge): for the mailer's and the CLI's own
 * events. scorer may be NULL. */
int ll_ingest_event(ll_txn_t *t, const ll_event_t *ev, struct st_ll_scorer_t *scorer);

#endif
