/*
 * People or machines: the verdict on every email open and click (issue #5).
 *
 * Mail gateways (Defender Safe Links, Proofpoint, Mimecast, Barracuda) open and click every
 * link of a message within seconds to minutes of delivery; Apple Mail Privacy Protection
 * fetches every pixel through Apple's proxies. The request alone (classify.h) cannot tell
 * them from people, so ingest asks the judge about each open and click that names a send,
 * inside the writer's transaction, with what only the log knows:
 *
 *   time since the SMTP acceptance of that very message (sends.accepted_us, program.h): sooner
 *     than fast_after_send_s is "fast_after_send", later is "late";
 *   a sweep: 3 or more distinct links of one message within sweep_window_s, or 2 in document
 *     order within a second ("sweep");
 *   the honeypot: every HTML message carries a hidden link (link index LL_LINK_HONEYPOT) no
 *     person sees; a hit marks the whole burst ("honeypot_link");
 *   lists (lists.h, scanner_lists): the client's address, network (ASN) or user agent
 *     ("ip_list", "asn_list", "ua_list"; the list and entry go into the event's data);
 *   what the browser does next: the snippet running for the clicking visitor ("js_after") or
 *     not ("no_js_after"), and navigator.webdriver ("webdriver"). A snippet event looks back
 *     over its visitor's events within provisional_s, at most 50, and stops at the visitor's
 *     previous snippet event that added the same reason (whose own look-back covered the rest),
 *     so a browsing visitor's page views cost one step each, not 50.
 *
 * Labels: human, likely-human, prefetch, scanner, bot, unknown. A strong machine signal (a
 * list, the honeypot, a sweep, a machine user agent, HEAD, a prefetch header) decides alone.
 * Otherwise a click is human once its browser runs the snippet; without that it is a scanner
 * when it came fast after delivery, likely-human from a browser, else unknown. An open is
 * likely-human unless fast (unknown). Only human and likely-human score or alert.
 *
 * Provisional: an open or click waits provisional_s before it scores (LL_EVF_PROVISIONAL on
 * the record, a row in `judge_pending`), so that a sweep or honeypot hit arriving just after
 * it relabels the whole burst first. The person still gets the redirect at once. The writer
 * settles due rows every second (ll_judge_settle), a bounded number per transaction between
 * its batches of new events: final label, counts, then the scorer. A
 * relabel rewrites the stored record's class and reasons; the raw event is always kept.
 *
 * State, two named databases in the store:
 *   judge_pending  due time (be64) | seq (be64)            -> "": provisional events
 *   judge_counts   send (be64, 0: all) | 'c' | class (1)    -> count (be64)
 *                  send (be64, 0: all) | 'r' | reason bit (1) -> count (be64)
 * Counts cover opens and clicks of sends, by their current label and reasons; `leadloop stats`
 * and /metrics show them. A write transaction's counts are summed in memory and put once per
 * key when it commits (ll_txn_defer): read them after the commit, not inside it.
 *
 * Caveat: with provisional_s 0 (or shorter than a burst), an event scored before a later sweep
 * relabels it keeps its points until `leadloop rescore`.
 */
#ifndef LEADLOOP_JUDGE_H
#define LEADLOOP_JUDGE_H

#include "leadloop/config.h"
#include "leadloop/event.h"
#include "leadloop/store.h"

#define LL_LINK_HONEYPOT 0xfffffffeu /* the hidden link's index in its click token */

typedef struct st_ll_judge_t ll_judge_t;
struct st_ll_scorer_t;

/**
 * Opens the judge's databases and loads the lists in conf->scanner_lists (a missing default
 * directory is only logged through err with a 0 return: the judge then works without lists).
 * conf is borrowed.
 */
int ll_judge_open(ll_store_t *s, const ll_config_t *conf, ll_judge_t **out, char *err, size_t errlen);
void ll_judge_free(ll_judge_t *j);

/**
 * Called by ingest for each record before it is appended. For an open or click of a send it
 * sets the record's class, reasons and LL_EVF_PROVISIONAL flag in place, and may return
 * evidence JSON (the list that matched, seconds since delivery) in *data for the event's data
 * field when it has none (malloc'd, or NULL). For an event from the snippet it marks the
 * visitor's provisional clicks js_after (or webdriver). client_ip is the full client address
 * (lists may hold ranges narrower than the /24 or /48 the log keeps); NULL: the stored one.
 */
struct st_ll_ip_t;
int ll_judge_before(ll_judge_t *j, ll_txn_t *t, uint8_t *rec, size_t len, const struct st_ll_ip_t *client_ip,
                    char **data);
/**
 * After the append (seq known): the pending row for a provisional record, relabels of the
 * burst, counts. Returns 1 in *defer when scoring must wait for ll_judge_settle().
 */
int ll_judge_after(ll_judge_t *j, ll_txn_t *t, const uint8_t *rec, size_t len, uint64_t seq, int *defer);
/**
 * Settles provisional events due at now_us (at most max): final label, counts, then the
 * scorer (sc may be NULL). *more is set when more are due.
 */
int ll_judge_settle(ll_judge_t *j, ll_txn_t *t, struct st_ll_scorer_t *sc, uint64_t now_us, size_t max, int *more);
/** Reloads the lists when a file changed (at most once a second): 1 reloaded, 0 not, <0 a
 * bad file (err says which; the previous lists stay). */
int ll_judge_reload(ll_judge_t *j, uint64_t now_us, char *err, size_t errlen);
/** The earliest pending due time, or 0 when none. */
uint64_t ll_judge_next_due(ll_judge_t *j, ll_txn_t *t);

/* Counts by class and by reason bit. Readers (the CLI, /metrics) open the database with
 * ll_judge_counts_db() before their read transaction. */
typedef struct st_ll_judge_counts_t {
    uint64_t cls[LL_CLASS__MAX];
    uint64_t reason[32];
} ll_judge_counts_t;
int ll_judge_counts_db(ll_store_t *s, MDB_dbi *out);
MDB_dbi ll_judge_counts_dbi(const ll_judge_t *j); /* the same, already open */
/** Entries in the loaded lists (0: none loaded), for the start-up log. */
size_t ll_judge_list_entries(const ll_judge_t *j);
/** One send's counts (send 0: all sends). */
int ll_judge_counts(ll_txn_t *t, MDB_dbi dbi, uint64_t send, ll_judge_counts_t *out);
/** Calls cb for each send with counts, in send order (not the total); non-zero stops. */
typedef int (*ll_judge_counts_cb)(uint64_t send, const ll_judge_counts_t *c, void *ctx);
int ll_judge_counts_each(ll_txn_t *t, MDB_dbi dbi, ll_judge_counts_cb cb, void *ctx);

#endif
