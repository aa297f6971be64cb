/*
 * leadloopd internals shared by the files of server/ (not a cross-component contract).
 *
 * Threads: N event-loop threads (h2o evloop, one context each, SO_REUSEPORT listeners) parse,
 * classify and encode events; one writer thread commits them in batches (writer.c). A request
 * that stores events is answered only after its batch commits: the handler hands a
 * ll_pending_t to the writer and returns without responding; the writer posts it back through
 * h2o_multithread to the request's own loop, which responds if the request is still alive.
 *
 * Ownership of a pending item: created and freed on its loop thread; while queued, only the
 * writer reads its records and writes its results. The request may die meanwhile (client
 * gone, HTTP/2 reset): a dispose guard on req->pool clears item->req, and the item lives on
 * until it comes back from the writer.
 */
#ifndef LEADLOOP_SERVER_H
#define LEADLOOP_SERVER_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdatomic.h>
#include "leadloop/config.h"
#include "leadloop/event.h"
#include "leadloop/geo.h"
#include "leadloop/store.h"
#include "leadloop/token.h"

/* ---- logging (STYLE.md 8) ---- */
extern int ll_log_level;
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));  /* adds strerror(errno) */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* ---- endpoints and metrics ---- */
typedef enum {
    EP_CLICK, EP_OPEN, EP_SNIPPET, EP_BEACON, EP_PIXEL, EP_FORM, EP_HEALTH, EP_METRICS, EP_OTHER, EP__MAX
} ll_endpoint_t;

typedef enum {
    REJ_BAD_TOKEN, REJ_BAD_JSON, REJ_BAD_UTF8, REJ_TOO_LARGE, REJ_UNKNOWN_FORM, REJ_HONEYPOT, REJ_RATE_LIMIT,
    REJ_BAD_EMAIL, REJ_BAD_REQUEST, REJ_METHOD, REJ_OVERLOAD, REJ_STORE_FAILED, REJ_PRIVACY, REJ__MAX
} ll_reject_t;

void ll__metrics_request(ll_endpoint_t ep, int status);
void ll__metrics_reject(ll_reject_t why);
void ll__metrics_stored(int type, size_t n);
void ll__metrics_batch(size_t events, uint64_t commit_us);
/* ack: journal: one journal write of requests in bytes, and the journal starting over */
void ll__metrics_journal(size_t requests, size_t bytes, uint64_t write_us);
void ll__metrics_journal_rewind(void);
void ll__metrics_lost(ll_endpoint_t ep, size_t n);   /* acknowledged-before-commit or failed */
void ll__metrics_render(ll_buf_t *out);

/* ---- the server as a whole ---- */
typedef struct st_ll_server_t {
    ll_config_t conf;
    ll_store_t *store;
    ll_keyring_t *keys;
    ll_geo_db_t *geo;
    struct st_ll_scorer_t *scorer; /* leadloop/score.h: scoring, leads, outbox */
    struct st_ll_judge_t *judge;   /* leadloop/judge.h: people or machines, for opens and clicks */
    h2o_iovec_t snippet;    /* /t.js body with the config substituted */
    char snippet_etag[40];
    h2o_iovec_t cookie_attrs; /* "; Path=/; Max-Age=...": the visitor cookie after its value (ll__cookie_init) */
} ll_server_t;

extern ll_server_t ll_srv;

/* ---- per-request context helpers (http.c) ---- */
typedef struct st_ll_reqinfo_t {
    ll_ip_t ip;             /* client, full (for geo) */
    ll_geo_t geo;
    ll_visitor_id_t visitor;
    int visitor_new;        /* no valid cookie: a new id was made */
    int cls;
    uint32_t reasons;
} ll_reqinfo_t;

/** Resolves client ip (trusted XFF), geo, cookie visitor and classification for req. */
enum {
    LL_RI_SNIPPET = 1,   /* the request comes from ll.js (it ran JavaScript) */
    LL_RI_NO_VISITOR = 2 /* none wanted (an open pixel) or one given (a beacon's "v"): none read or minted */
};
void ll__reqinfo(h2o_req_t *req, unsigned flags, ll_reqinfo_t *ri);
/** Fills the request-derived parts of ev (time, visitor, class, geo, truncated ip, ua). */
void ll__event_from_req(h2o_req_t *req, ll_reqinfo_t *ri, ll_event_t *ev, uint8_t ipbuf[16], char asnbuf[16]);
/** Sets the UTM fields of ev from the query string of url (pointers into pool memory). */
void ll__event_utm(h2o_mem_pool_t *pool, ll_event_t *ev, ll_str_t url);
/** The visitor id under cookie name in one Cookie header value [v, v+len); LL_ENOTFOUND when none is valid. */
int ll__cookie_visitor(const char *name, const char *v, size_t len, ll_visitor_id_t *out);
/** Percent-decodes s ('+' is a space) into pool memory, NUL-terminated. */
ll_str_t ll__url_decode(h2o_mem_pool_t *pool, const char *s, size_t n);
/** Set-Cookie for the visitor, re-issued on every hit. */
void ll__set_visitor_cookie(h2o_req_t *req, const ll_visitor_id_t *v);
/** Makes ll_srv.cookie_attrs from the configuration, once at start. */
void ll__cookie_init(void);
/** Finds a header by lower-case name; returns its value or an empty iovec. */
h2o_iovec_t ll__header(h2o_req_t *req, const h2o_token_t *token);
h2o_iovec_t ll__header_str(h2o_req_t *req, const char *name);
/** Simple responses: status with a short text/plain reason. */
void ll__respond_text(h2o_req_t *req, ll_endpoint_t ep, int status, const char *reason, const char *body);
/**
 * h2o_send_inline() with the response length set: without it h2o 2.2 closes the connection after
 * any response but a 200 (every click's 302 lost its keep-alive; BENCHMARKS.md). 204 and 304
 * carry no body and no length.
 */
void ll__send(h2o_req_t *req, const char *body, size_t len);
void ll__respond_redirect(h2o_req_t *req, ll_endpoint_t ep, int status, const char *reason, const char *location);
void ll__respond_gif(h2o_req_t *req, ll_endpoint_t ep);
/** CORS headers echoing a well-formed Origin (beacons and forms are read cross-origin). */
void ll__cors(h2o_req_t *req);
/** 1 when the request is a browser navigation (a plain HTML form post) rather than fetch/XHR. */
int ll__is_navigation(h2o_req_t *req);

extern const uint8_t ll_gif[43];

/* ---- pending responses and the writer (writer.c) ---- */
typedef struct st_ll_loop_t ll_loop_t;
typedef struct st_ll_pending_t ll_pending_t;
typedef void (*ll_pending_cb)(ll_pending_t *p, h2o_req_t *req); /* req NULL: request gone */

#define LL_PENDING_RECS 64

struct st_ll_pending_t {
    h2o_multithread_message_t super;
    ll_pending_t *next;          /* writer queue */
    ll_loop_t *loop;
    h2o_req_t *req;              /* NULL once the request is gone or answered early */
    struct st_ll_guard_t *guard;
    h2o_timeout_entry_t deadline; /* clicks and opens answer anyway past click_deadline_ms */
    ll_endpoint_t ep;
    ll_pending_cb on_done;
    /* records: concatenated encoded events; offsets in rec_off */
    ll_buf_t recs;
    size_t rec_off[LL_PENDING_RECS];
    size_t nrecs;
    char *email;                 /* form: normalised email to upsert and bind */
    char *fields_json;
    int bind;
    ll_ip_t client_ip;           /* clicks and opens: the full address, for the judge's lists (the
                                  * log keeps only the truncated one) */
    /* results, written by the writer */
    int result;                  /* 0 or LL_E* */
    /* response data kept by the handler */
    char *location;              /* clicks and forms */
    ll_visitor_id_t visitor;
    int answered_early;          /* answered before the commit: the deadline passed, or ack: queued */
    int waits;                   /* queued with its request waiting for the commit (writer's, under its lock) */
    int after_commit;            /* LL_ACK_COMMIT: answered after the commit under every ack: */
    uint64_t item;               /* ack: journal: its number in the journal (journal.h) */
};

/** A new pending item bound to req (with its dispose guard). Caller adds records. */
ll_pending_t *ll__pending_new(h2o_req_t *req, ll_endpoint_t ep, ll_pending_cb on_done);
/** Adds one encoded event. LL_ETOOBIG past 64 events or the byte cap. */
int ll__pending_add(ll_pending_t *p, const ll_event_t *ev);
/** When a queued item's request is answered. */
typedef enum {
    LL_ACK_COMMIT,   /* after the commit, always: forms, unsubscribes (their answer says "stored") */
    LL_ACK_DEADLINE, /* clicks, opens: after the commit, or anyway past click_deadline_ms */
    LL_ACK_TRACKING, /* the snippet's beacons and page pixels: after the commit (503 if it failed) */
} ll_ack_t;

/**
 * Queues p for the writer and answers it according to ack. With `ack: journal` in the
 * configuration, every item goes to the journal thread when this turn of the loop ends
 * (writer.c); LL_ACK_DEADLINE and LL_ACK_TRACKING items are answered when their batch comes back
 * written (result 0, or the write's error; LL_ACK_DEADLINE anyway past click_deadline_ms),
 * LL_ACK_COMMIT items after their commit, as always. With `ack: queued` in the
 * configuration, LL_ACK_DEADLINE and LL_ACK_TRACKING items are answered here, once queued: on_done
 * runs before this returns, with answered_early set, and a later failed commit only counts
 * (leadloop_events_lost_total); a crash loses what was queued and not yet committed. Past
 * QUEUE_EARLY_MAX queued items (writer.c) they are answered as without it.
 * Returns LL_ENOMEM when the queue is over its cap (nothing was answered; the caller responds
 * and frees p).
 */
int ll__pending_submit(ll_pending_t *p, ll_ack_t ack);
void ll__pending_free(ll_pending_t *p);

/** Ingests what DATA_DIR/edge.journal holds past the store's journal mark (a crash under `ack:
 * journal`), then starts the writer (and under `ack: journal` the journal thread). err names the
 * file on failure. */
int ll__writer_start(char *err, size_t errlen);
void ll__writer_stop(void);   /* drains the queue, then joins */

/* The notifier (notify.c): outbox delivery and the SLA pass; kicked after each commit. */
int ll__notify_start(void);
void ll__notify_stop(void);
void ll__notify_kick(void);
/* The admin listener (admin.c): the SSE stream of alerts; off without alerts.admin_token. */
int ll__admin_start(char *err, size_t errlen);
void ll__admin_stop(void);
void ll__admin_publish(const char *json, size_t len);
ll_loop_t *ll__loop_current(h2o_context_t *ctx);
ll_loop_t *ll__loop_new(h2o_context_t *ctx);

/* ---- handlers ---- */
int ll__on_click(h2o_req_t *req, h2o_iovec_t token);
int ll__on_open(h2o_req_t *req, h2o_iovec_t token);
int ll__on_beacon(h2o_req_t *req);
/** cJSON allocates from the request's pool while ll__on_beacon runs (track.c); at start-up. */
void ll__json_hooks_init(void);
int ll__on_pixel(h2o_req_t *req);
int ll__on_form(h2o_req_t *req, h2o_iovec_t form_id);
int ll__on_unsub(h2o_req_t *req, h2o_iovec_t token, int post); /* unsub.c: GET confirms, POST unsubscribes */
int ll__on_snippet(h2o_req_t *req);
int ll__snippet_load(const char *path);

#endif
