/*
 * The writer thread: group commit of pending events, and the hand-back of each pending item
 * to the loop that owns its request (see server.h for ownership).
 *
 * Under `ack: journal` the journal thread stands in front of it: each loop hands it the items of
 * a turn of its event loop as one batch when the turn ends (a 0 ms timeout); the journal thread
 * writes every batch that is waiting to DATA_DIR/edge.journal (journal.h) as one record in one
 * synced write, sends each batch back to its loop in one message, and hands the record to the
 * writer, which ingests records in larger batches behind it. The loop answers a batch's requests
 * when it comes back (forms and unsubscribes excepted: they wait for the commit). The loop never
 * waits for the disk: a click is still redirected after click_deadline_ms when the disk stalls.
 * One hand-off per turn and one message per batch: an earlier build that handed over and back
 * each request measured no faster than `ack: commit` (BENCHMARKS.md).
 * Every writer transaction also moves the store's journal mark (meta "journal": the last item
 * in the store), so a start ingests exactly the items a crash left out (ll__writer_start).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include "leadloop/ingest.h"
#include "leadloop/journal.h"
#include "leadloop/judge.h"
#include "leadloop/score.h"
#include "server.h"

#define QUEUE_CAP 65536 /* pending items; past this, requests are refused rather than queued */
/* Pending items past which ack: queued answers after the commit, as ack: commit does: the writer
 * is behind. Waiting holds clients back where answering early would let them fill the queue
 * (clicks outran the writer by half in the capture bench, and were dropped at QUEUE_CAP); it also
 * bounds what a crash loses: the gathering window (GATHER_MAX below) and the commit under way. */
#define QUEUE_EARLY_MAX 1024

struct st_ll_loop_t {
    h2o_context_t *ctx;
    h2o_multithread_receiver_t receiver;
    h2o_timeout_t deadline;
    /* ack: journal: this turn's items, handed to the journal thread when the turn ends */
    ll_pending_t *jhead, **jtail;
    size_t jevents;
    h2o_timeout_t turn_end;      /* 0 ms */
    h2o_timeout_entry_t flush;
    h2o_multithread_receiver_t journaled; /* batches back from the journal thread */
};

/* ack: journal: a turn's items on their way to the journal thread and back to their loop. */
typedef struct st_jbatch_t {
    h2o_multithread_message_t super;
    struct st_jbatch_t *next; /* the journal thread's queue */
    ll_loop_t *loop;
    ll_pending_t *items;      /* on the way back: those answered by the loop (the waiters went on) */
    size_t events;
    int result;
} jbatch_t;

struct st_ll_guard_t {
    ll_pending_t *p;
};

/* Under ack: queued, while no queued request waits for its commit, the writer gathers a batch for
 * up to queued_commit_ms (config.h) after the first item queued, or until GATHER_MAX items (half
 * of QUEUE_EARLY_MAX, so that gathering never makes requests wait), instead of committing whatever
 * queued during the previous commit: a commit's fixed cost (its page writes and two device
 * flushes, about 200 µs of CPU on the benchmark VM) is then shared by hundreds of events, not
 * tens. The open pixel went from 45k to 63-77k requests/s (BENCHMARKS.md). */
#define GATHER_MAX (QUEUE_EARLY_MAX / 2)

/* A journal record on its way to the store: the items of one batch as written (journal.h). */
typedef struct st_jrec_t {
    struct st_jrec_t *next;
    uint64_t first;          /* its first item's number */
    uint32_t items;
    size_t events;
    ll_buf_t body;           /* the items, put_item() */
    ll_pending_t *waiters;   /* its LL_ACK_COMMIT items (p->item, chained by p->next): answered after the commit */
} jrec_t;

/* WAKE_AFTER_UNLOCK: the hand-offs between the loops, the journal thread and the writer signal
 * their condition variable after releasing its mutex. Signalled under the mutex, the thread woken
 * ran at once on the server's CPU, found the mutex still held and slept again: two context
 * switches for one hand-off (perf: 12% of the journal thread in __pthread_mutex_cond_lock). The
 * waiters test their predicate under the mutex, so no wake-up is lost. */

/* What gathering looks at: a queue's length (events or items), its requests that wait for the
 * commit, and when it last went from empty to not. */
struct gather {
    size_t len;
    size_t waiting;
    struct timespec first;
};

static struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;   /* q.head, for the writer (ack: commit, queued; journal uses jhead) */
    ll_pending_t *head, **tail;
    struct gather g;       /* len: items queued; first: only under ack: queued */
    size_t gather;         /* GATHER_MAX, or batch_max when smaller */
    int stopping;
    pthread_t thread;
    /* ack: journal */
    pthread_cond_t jcond;  /* for the writer: a record, the stop, or a sync wanted */
    pthread_cond_t scond;  /* for the journal thread waiting for room: q.synced moved */
    jrec_t *jhead, **jtail;
    struct gather jg;      /* len: events in the records queued; waiting: records with waiters */
    uint64_t sync_want;    /* the journal thread needs the store durable up to this item */
    uint64_t synced;       /* the store is durable up to this item */
    int writer_gone;       /* the writer thread returned */
} q = {.mutex = PTHREAD_MUTEX_INITIALIZER, .tail = &q.head, .jtail = &q.jhead}; /* conds: ll__writer_start */

/* ack: journal: the journal thread's queue (mu, cond) and the journal, which only it touches
 * once it started. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    jbatch_t *head, **tail;
    int stopping;
    pthread_t thread;
    ll_journal_t *j;
    uint64_t next; /* the next item's number */
} jr = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .tail = &jr.head, .next = 1};

static __thread ll_loop_t *cur_loop;

static void on_guard_dispose(void *_g)
{
    struct st_ll_guard_t *g = _g;
    if (g->p != NULL) {
        g->p->req = NULL;
        g->p->guard = NULL;
        if (h2o_timeout_is_linked(&g->p->deadline))
            h2o_timeout_unlink(&g->p->deadline);
    }
}

/* Detaches p from its request: the request is answered or gone. */
static h2o_req_t *detach(ll_pending_t *p)
{
    h2o_req_t *req = p->req;
    if (p->guard != NULL)
        p->guard->p = NULL;
    p->guard = NULL;
    p->req = NULL;
    if (h2o_timeout_is_linked(&p->deadline))
        h2o_timeout_unlink(&p->deadline);
    return req;
}

/* Answers p's request now, before its commit; p itself stays with the writer. */
static void answer_early(ll_pending_t *p)
{
    h2o_req_t *req = detach(p);
    p->answered_early = 1;
    if (req != NULL)
        p->on_done(p, req);
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    /* Answered before the commit returned; p->result belongs to the writer until then. The
     * callbacks that use a deadline (clicks, opens) answer the same whatever the result. */
    answer_early(H2O_STRUCT_FROM_MEMBER(ll_pending_t, deadline, entry));
}

/* On p's loop, with p->result set: answers its request (unless answered early) and frees p. */
static void finish(ll_pending_t *p)
{
    h2o_req_t *req = detach(p);
    if (p->answered_early) {
        if (p->result != 0)
            ll__metrics_lost(p->ep, p->nrecs);
    } else {
        p->on_done(p, req); /* req may be NULL: the callback counts, does not respond */
    }
    ll__pending_free(p);
}

static void on_writer_done(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        ll_pending_t *p = H2O_STRUCT_FROM_MEMBER(ll_pending_t, super.link, messages->next);
        h2o_linklist_unlink(&p->super.link);
        finish(p);
    }
}

/* Answers a batch's items with its result. */
static void answer_batch(jbatch_t *b)
{
    while (b->items != NULL) {
        ll_pending_t *p = b->items;
        b->items = p->next;
        p->result = b->result;
        finish(p);
    }
    free(b);
}

static void on_journaled(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        jbatch_t *b = H2O_STRUCT_FROM_MEMBER(jbatch_t, super.link, messages->next);
        h2o_linklist_unlink(&b->super.link);
        answer_batch(b);
    }
}

static void on_turn_end(h2o_timeout_entry_t *entry)
{
    ll_loop_t *l = H2O_STRUCT_FROM_MEMBER(ll_loop_t, flush, entry);
    jbatch_t *b = ll_calloc(1, sizeof(*b));
    b->loop = l;
    b->items = l->jhead;
    b->events = l->jevents;
    l->jhead = NULL;
    l->jtail = &l->jhead;
    l->jevents = 0;
    pthread_mutex_lock(&jr.mu);
    int stopped = jr.stopping, wake = 0;
    if (!stopped) {
        *jr.tail = b;
        jr.tail = &b->next;
        wake = jr.head == b;
    }
    pthread_mutex_unlock(&jr.mu);
    if (wake) /* after the unlock (WAKE_AFTER_UNLOCK) */
        pthread_cond_signal(&jr.cond);
    if (stopped) {
        b->result = LL_ENOMEM; /* 503, as a full queue is under the other ack: modes */
        answer_batch(b);
    }
}

ll_loop_t *ll__loop_new(h2o_context_t *ctx)
{
    ll_loop_t *l = ll_calloc(1, sizeof(*l));
    l->ctx = ctx;
    h2o_multithread_register_receiver(ctx->queue, &l->receiver, on_writer_done);
    h2o_timeout_init(ctx->loop, &l->deadline, (uint64_t)ll_srv.conf.click_deadline_ms);
    l->jtail = &l->jhead;
    h2o_timeout_init(ctx->loop, &l->turn_end, 0);
    l->flush.cb = on_turn_end;
    h2o_multithread_register_receiver(ctx->queue, &l->journaled, on_journaled);
    cur_loop = l;
    return l;
}

ll_loop_t *ll__loop_current(h2o_context_t *ctx)
{
    return cur_loop;
}

ll_pending_t *ll__pending_new(h2o_req_t *req, ll_endpoint_t ep, ll_pending_cb on_done)
{
    ll_pending_t *p = ll_calloc(1, sizeof(*p));
    p->loop = cur_loop;
    p->req = req;
    p->ep = ep;
    p->on_done = on_done;
    p->deadline.cb = on_deadline;
    ll_buf_init(&p->recs, 256 * 1024);
    p->guard = h2o_mem_alloc_shared(&req->pool, sizeof(*p->guard), on_guard_dispose);
    p->guard->p = p;
    return p;
}

int ll__pending_add(ll_pending_t *p, const ll_event_t *ev)
{
    if (p->nrecs == sizeof(p->rec_off) / sizeof(p->rec_off[0]))
        return LL_ETOOBIG;
    size_t off = p->recs.len;
    int rc = ll_event_encode(ev, &p->recs);
    if (rc == 0)
        p->rec_off[p->nrecs++] = off;
    return rc;
}

void ll__pending_free(ll_pending_t *p)
{
    detach(p);
    ll_buf_free(&p->recs);
    free(p->email);
    free(p->fields_json);
    free(p->location);
    free(p);
}

static int queue_full(void)
{
    return q.g.len >= QUEUE_CAP || q.stopping;
}

/* What a connection may send ahead while its answer waits before reading stops (see below). */
#define WAIT_READ_MAX 16384

static void on_read_while_waiting(h2o_socket_t *sock, const char *err)
{
    /* The bytes stay in sock->input: h2o parses them as the next request once it answered this
     * one. A closed or error socket, or a client sending too much ahead, stops reading as h2o would have. */
    if (err != NULL || sock->input->size > WAIT_READ_MAX)
        h2o_socket_read_stop(sock);
}

/* h2o's HTTP/1 stops reading a connection while its request is processed and starts again once
 * the answer is sent. Answered in the same turn of the loop, the two cancel out; an answer that
 * waits for the commit comes a turn or more later, and each costs an epoll_ctl (two syscalls a
 * request, about 2 µs on the benchmark VM). Reading on meanwhile, into the input buffer only,
 * keeps the socket's registration as it was: h2o's own read_start replaces the callback. */
static void keep_reading(h2o_req_t *req)
{
    if (req->version >= 0x200 || req->conn->callbacks->get_socket == NULL)
        return; /* HTTP/2 multiplexes requests over the socket: h2o's own business */
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (sock != NULL && !h2o_socket_is_reading(sock))
        h2o_socket_read_start(sock, on_read_while_waiting);
}

/* ack: journal: p goes to the journal thread with its loop's turn (on_turn_end). What waits for
 * the writer in memory is bounded by the journal's size: a full journal waits for it. */
static void hand_to_turn(ll_pending_t *p)
{
    ll_loop_t *l = p->loop;
    p->next = NULL;
    *l->jtail = p;
    l->jtail = &p->next;
    l->jevents += p->nrecs;
    if (!h2o_timeout_is_linked(&l->flush))
        h2o_timeout_link(l->ctx->loop, &l->turn_end, &l->flush);
}

/* ack: commit or queued: queues p for the writer; *early when it was answered already (p may be
 * gone then). LL_ENOMEM when the queue is full and p was not answered. */
static int queue_for_writer(ll_pending_t *p, ll_ack_t ack, int *early)
{
    *early = 0;
    if (ll_srv.conf.ack == LL_ACK_AFTER_QUEUE && ack != LL_ACK_COMMIT) {
        /* A full queue refuses p as without ack: queued. Then p is answered before the writer
         * can see it (on_done reads it), outside the lock (it writes to the socket). */
        pthread_mutex_lock(&q.mutex);
        int full = queue_full();
        *early = q.g.len < QUEUE_EARLY_MAX;
        pthread_mutex_unlock(&q.mutex);
        if (full)
            return LL_ENOMEM;
        if (*early)
            answer_early(p);
    }
    pthread_mutex_lock(&q.mutex);
    if (queue_full()) {
        pthread_mutex_unlock(&q.mutex);
        if (!*early)
            return LL_ENOMEM;
        ll__metrics_lost(p->ep, p->nrecs); /* filled or stopping since it was answered */
        ll__pending_free(p);
        return 0;
    }
    p->next = NULL;
    p->waits = !*early;
    if (q.head == NULL && ll_srv.conf.ack == LL_ACK_AFTER_QUEUE)
        clock_gettime(CLOCK_MONOTONIC, &q.g.first);
    *q.tail = p;
    q.tail = &p->next;
    q.g.len++;
    q.g.waiting += p->waits;
    /* A gathering writer needs waking only when its batch is due. */
    int wake = q.g.len == 1 || p->waits || q.g.len == q.gather;
    pthread_mutex_unlock(&q.mutex);
    if (wake) /* after the unlock (WAKE_AFTER_UNLOCK) */
        pthread_cond_signal(&q.cond);
    return 0;
}

int ll__pending_submit(ll_pending_t *p, ll_ack_t ack)
{
    int early = 0, rc;
    p->after_commit = ack == LL_ACK_COMMIT;
    if (ll_srv.conf.ack == LL_ACK_AFTER_JOURNAL)
        hand_to_turn(p);
    else if ((rc = queue_for_writer(p, ack, &early)) != 0 || early)
        return rc;
    keep_reading(p->req);
    if (ack == LL_ACK_DEADLINE)
        h2o_timeout_link(p->loop->ctx->loop, &p->loop->deadline, &p->deadline);
    return 0;
}

/* One request's events to ingest: a pending item's, or the same read back from a journal record. */
typedef struct {
    ll_endpoint_t ep;
    int bind;
    int has_ip;
    ll_ip_t client_ip;        /* when has_ip; else the judge uses the stored (truncated) one */
    const char *email, *fields_json;
    size_t nrecs;
    uint8_t *rec[LL_PENDING_RECS];
    size_t len[LL_PENDING_RECS];
} item_t;

static void item_of_pending(ll_pending_t *p, item_t *it)
{
    *it = (item_t){.ep = p->ep, .bind = p->bind, .has_ip = p->client_ip.family != 0, .client_ip = p->client_ip,
                   .email = p->email, .fields_json = p->fields_json, .nrecs = p->nrecs};
    for (size_t i = 0; i < p->nrecs; i++) {
        size_t end = i + 1 < p->nrecs ? p->rec_off[i + 1] : p->recs.len;
        it->rec[i] = (uint8_t *)p->recs.data + p->rec_off[i];
        it->len[i] = end - p->rec_off[i];
    }
}

/* An item in a journal record (native byte order: journal.h), followed by email and fields_json
 * with their NULs (lengths 0 when NULL) and each event as u32 length | bytes. */
struct item_head {
    uint8_t ep, bind, nrecs, has_ip;
    uint32_t email_len, fields_len;
    ll_ip_t client_ip;
};

static int put_item(ll_buf_t *b, ll_pending_t *p)
{
    item_t it;
    item_of_pending(p, &it);
    struct item_head h = {.ep = (uint8_t)it.ep, .bind = (uint8_t)it.bind, .nrecs = (uint8_t)it.nrecs,
                          .has_ip = (uint8_t)it.has_ip, .client_ip = it.client_ip,
                          .email_len = it.email ? (uint32_t)strlen(it.email) + 1 : 0,
                          .fields_len = it.fields_json ? (uint32_t)strlen(it.fields_json) + 1 : 0};
    int rc = ll_buf_append(b, &h, sizeof(h));
    if (rc == 0 && h.email_len > 0)
        rc = ll_buf_append(b, it.email, h.email_len);
    if (rc == 0 && h.fields_len > 0)
        rc = ll_buf_append(b, it.fields_json, h.fields_len);
    for (size_t i = 0; i < it.nrecs && rc == 0; i++) {
        uint32_t len = (uint32_t)it.len[i];
        if ((rc = ll_buf_append(b, &len, sizeof(len))) == 0)
            rc = ll_buf_append(b, it.rec[i], len);
    }
    return rc;
}

/* Reads the item at *pos of a record's body into it (pointing into the body); LL_EINVAL when the
 * body is cut short (not from a record that passed its checksum). */
static int get_item(uint8_t *body, size_t len, size_t *pos, item_t *it)
{
    struct item_head h;
    size_t at = *pos;
    if (len - at < sizeof(h))
        return LL_EINVAL;
    memcpy(&h, body + at, sizeof(h));
    at += sizeof(h);
    if (h.ep >= EP__MAX || h.nrecs > LL_PENDING_RECS || len - at < (size_t)h.email_len + h.fields_len ||
        (h.email_len > 0 && body[at + h.email_len - 1] != '\0') ||
        (h.fields_len > 0 && body[at + h.email_len + h.fields_len - 1] != '\0'))
        return LL_EINVAL;
    *it = (item_t){.ep = (ll_endpoint_t)h.ep, .bind = h.bind, .nrecs = h.nrecs, .has_ip = h.has_ip,
                   .client_ip = h.client_ip,
                   .email = h.email_len ? (char *)body + at : NULL,
                   .fields_json = h.fields_len ? (char *)body + at + h.email_len : NULL};
    at += (size_t)h.email_len + h.fields_len;
    for (size_t i = 0; i < h.nrecs; i++) {
        uint32_t n;
        if (len - at < sizeof(n))
            return LL_EINVAL;
        memcpy(&n, body + at, sizeof(n));
        at += sizeof(n);
        if (len - at < n)
            return LL_EINVAL;
        it->rec[i] = body + at;
        it->len[i] = n;
        at += n;
    }
    *pos = at;
    return 0;
}

static int ingest_item(ll_txn_t *t, const item_t *it)
{
    for (size_t i = 0; i < it->nrecs; i++) {
        ll_ingest_t in = {.rec = it->rec[i],
                          .len = it->len[i],
                          /* only the first record (the form or the click itself) binds */
                          .email = i == 0 ? it->email : NULL,
                          .fields_json = i == 0 ? it->fields_json : NULL,
                          .bind = i == 0 ? it->bind : 0,
                          .scorer = ll_srv.scorer,
                          .judge = ll_srv.judge,
                          .client_ip = it->has_ip ? &it->client_ip : NULL};
        int rc = ll_ingest(t, &in);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int ingest_pending(ll_txn_t *t, ll_pending_t *p)
{
    item_t it;
    item_of_pending(p, &it);
    return ingest_item(t, &it);
}

static void count_stored(const item_t *it)
{
    for (size_t i = 0; i < it->nrecs; i++)
        ll__metrics_stored(ll_event_rec_type(it->rec[i]), 1);
}

static void count_stored_pending(ll_pending_t *p)
{
    for (size_t i = 0; i < p->nrecs; i++)
        ll__metrics_stored(ll_event_rec_type(p->recs.data + p->rec_off[i]), 1);
}

/* Commits t, or aborts it when rc says an earlier step failed. The data file is kept zero-filled
 * ahead of the log (store.h). The notifier is woken after a commit that queued an alert (the
 * outbox's next id moved since before), not after every commit: an idle wake per batch cost
 * about 3% of the pixel's CPU. */
static int commit_and_kick(ll_txn_t *t, uint64_t before, int rc)
{
    uint64_t after = before;
    if (rc == 0)
        ll_store_zero_ahead(t);
    if (rc == 0 && (rc = ll_outbox_next(t, &after)) == 0 && (rc = ll_txn_commit(t)) == 0) {
        if (after != before)
            ll__notify_kick();
        return 0;
    }
    ll_txn_abort(t);
    return rc;
}

/* A write transaction and the outbox's next id at its start. */
static int begin(ll_txn_t *t, uint64_t *outbox)
{
    int rc = ll_txn_begin(ll_srv.store, 0, t);
    return rc != 0 ? rc : ll_outbox_next(t, outbox);
}

/* Commits a batch. If anything fails the batch is retried one item per transaction, so that
 * one bad item (or the map filling up mid-batch) fails only the items that cannot be stored. */
static void commit_batch(ll_pending_t *batch, size_t nevents)
{
    ll_txn_t t;
    uint64_t start = ll_now_us(), outbox = 0;
    int rc = begin(&t, &outbox);
    ll_pending_t *p;
    for (p = batch; p != NULL && rc == 0; p = p->next)
        rc = ingest_pending(&t, p);
    if ((rc = commit_and_kick(&t, outbox, rc)) == 0) {
        ll__metrics_batch(nevents, ll_now_us() - start);
        for (p = batch; p != NULL; p = p->next)
            p->result = 0, count_stored_pending(p);
        return;
    }
    for (p = batch; p != NULL; p = p->next) {
        start = ll_now_us();
        if ((p->result = begin(&t, &outbox)) == 0)
            p->result = ingest_pending(&t, p);
        if ((p->result = commit_and_kick(&t, outbox, p->result)) == 0) {
            ll__metrics_batch(p->nrecs, ll_now_us() - start);
            count_stored_pending(p);
        } else {
            log_warnx("writer: could not store %zu event(s): %s", p->nrecs, ll_strerror(p->result));
        }
    }
}

/* ---- ack: journal ---- */

static const MDB_val mark_key = {7, "journal"};

/* Moves the store's journal mark to item (meta "journal", store.h). */
static int put_mark(ll_txn_t *t, uint64_t item)
{
    uint8_t v[8];
    ll_be64_put(v, item);
    MDB_val val = {8, v};
    return ll_store_err(mdb_put(t->txn, ll_store_dbi(ll_srv.store, LL_DB_META), (MDB_val *)&mark_key, &val, 0));
}

static uint64_t get_mark(void)
{
    ll_txn_t t;
    MDB_val v;
    uint64_t mark = 0;
    if (ll_txn_begin(ll_srv.store, 1, &t) != 0)
        return 0;
    if (mdb_get(t.txn, ll_store_dbi(ll_srv.store, LL_DB_META), (MDB_val *)&mark_key, &v) == 0 && v.mv_size == 8)
        mark = ll_be64_get(v.mv_data);
    ll_txn_abort(&t);
    return mark;
}

/* Calls fn for each item of r numbered above after, with its number; stops at a non-zero
 * return. A body that does not parse (never from a record that passed its checksum) is LL_EINVAL. */
typedef int (*item_fn)(const item_t *it, uint64_t num, void *ctx);
static int each_item(jrec_t *r, uint64_t after, item_fn fn, void *ctx)
{
    size_t pos = 0;
    item_t it;
    for (uint64_t num = r->first; num < r->first + r->items; num++) {
        int rc = get_item((uint8_t *)r->body.data, r->body.len, &pos, &it);
        if (rc == 0 && num > after)
            rc = fn(&it, num, ctx);
        if (rc != 0)
            return rc;
    }
    return 0;
}

struct ingest_ctx {
    ll_txn_t *t;
    size_t events;
    uint64_t last;
};

static int ingest_one(const item_t *it, uint64_t num, void *_x)
{
    struct ingest_ctx *x = _x;
    x->events += it->nrecs;
    x->last = num;
    return ingest_item(x->t, it);
}

static int count_one(const item_t *it, uint64_t num, void *ctx)
{
    count_stored(it);
    return 0;
}

/* The item-per-transaction retry of commit_records: each stored, or failed alone. */
struct retry_ctx {
    ll_pending_t *waiter; /* the next waiter of the record */
    size_t events;
};

static int retry_one(const item_t *it, uint64_t num, void *_x)
{
    struct retry_ctx *x = _x;
    ll_txn_t t;
    uint64_t start = ll_now_us(), outbox = 0;
    int rc = begin(&t, &outbox);
    t.journaled = 1;
    x->events += it->nrecs;
    if (rc == 0 && (rc = ingest_item(&t, it)) == 0)
        rc = put_mark(&t, num);
    if ((rc = commit_and_kick(&t, outbox, rc)) == 0) {
        ll__metrics_batch(it->nrecs, ll_now_us() - start);
        count_stored(it);
    } else {
        log_warnx("writer: could not store %zu event(s) of journal item %llu: %s", it->nrecs, (unsigned long long)num,
                  ll_strerror(rc));
    }
    if (x->waiter != NULL && x->waiter->item == num) {
        x->waiter->result = rc;
        x->waiter = x->waiter->next;
    } else if (rc != 0) {
        ll__metrics_lost(it->ep, it->nrecs); /* answered when it was journaled */
    }
    return 0;
}

/* Ingests the items of recs numbered above after in one transaction that also moves the
 * journal mark, or when that fails, one transaction per item (commit_batch's reasons). The
 * records' waiters get their results. Returns the number of events. */
static size_t commit_records(jrec_t *recs, uint64_t after)
{
    ll_txn_t t;
    uint64_t start = ll_now_us(), outbox = 0;
    struct ingest_ctx x = {&t, 0, after};
    int rc = begin(&t, &outbox);
    t.journaled = 1;
    for (jrec_t *r = recs; r != NULL && rc == 0; r = r->next)
        rc = each_item(r, after, ingest_one, &x);
    if (rc == 0 && x.last > after)
        rc = put_mark(&t, x.last);
    if ((rc = commit_and_kick(&t, outbox, rc)) == 0) {
        ll__metrics_batch(x.events, ll_now_us() - start);
        for (jrec_t *r = recs; r != NULL; r = r->next) {
            each_item(r, after, count_one, NULL);
            for (ll_pending_t *w = r->waiters; w != NULL; w = w->next)
                w->result = 0;
        }
        return x.events;
    }
    struct retry_ctx rx = {NULL, 0};
    for (jrec_t *r = recs; r != NULL; r = r->next) {
        rx.waiter = r->waiters;
        each_item(r, after, retry_one, &rx);
    }
    return rx.events;
}

static void jrec_free(jrec_t *r)
{
    ll_buf_free(&r->body);
    free(r);
}

/* Hands each of the list's items back to its loop (server.h: the loop answers and frees it). */
static void send_back(ll_pending_t *p)
{
    while (p != NULL) {
        ll_pending_t *next = p->next;
        h2o_multithread_send_message(&p->loop->receiver, &p->super);
        p = next;
    }
}

/* Waits until the writer made the store durable up to item upto (journal full: the file starts
 * over once everything in it is in the store for good). LL_EIO when the writer stopped first. */
static int wait_synced(uint64_t upto)
{
    pthread_mutex_lock(&q.mutex);
    if (q.sync_want < upto)
        q.sync_want = upto;
    pthread_cond_signal(&q.jcond);
    while (q.synced < upto && !q.writer_gone)
        pthread_cond_wait(&q.scond, &q.mutex);
    int rc = q.synced < upto ? LL_EIO : 0;
    pthread_mutex_unlock(&q.mutex);
    return rc;
}

/* On the journal thread: writes the items of every batch in the list to the journal as one
 * record, hands the record (with the waiters) to the writer and each batch back to its loop. */
static void journal_batches(jbatch_t *batches)
{
    jrec_t *r = ll_calloc(1, sizeof(*r));
    ll_buf_init(&r->body, SIZE_MAX);
    r->first = jr.next;
    int rc = 0;
    for (jbatch_t *b = batches; b != NULL; b = b->next) {
        r->events += b->events;
        for (ll_pending_t *p = b->items; p != NULL && rc == 0; p = p->next) {
            p->item = r->first + r->items++;
            rc = put_item(&r->body, p);
        }
    }
    if (rc == 0 && !ll_journal_fits(jr.j, r->body.len)) {
        if ((rc = wait_synced(r->first - 1)) == 0) {
            ll_journal_rewind(jr.j);
            ll__metrics_journal_rewind();
        } else {
            log_warnx("journal: full, and the writer stopped: %zu event(s) not taken", r->events);
        }
    }
    uint64_t start = ll_now_us();
    if (rc == 0 && (rc = ll_journal_append(jr.j, r->first, r->items, r->body.data, r->body.len)) != 0)
        log_warnx("journal: cannot write %zu event(s): %s", r->events,
                  rc == LL_ETOOBIG ? "larger than journal_kb" : strerror(errno));
    if (rc == 0)
        ll__metrics_journal(r->items, r->body.len + LL_JOURNAL_HEADER, ll_now_us() - start);
    if (rc == 0) {
        jr.next += r->items;
        /* The waiters go on with the record; the others go back with their batch. */
        ll_pending_t **w = &r->waiters;
        for (jbatch_t *b = batches; b != NULL; b = b->next) {
            ll_pending_t **a = &b->items;
            for (ll_pending_t *p = b->items, *next; p != NULL; p = next) {
                next = p->next;
                if (p->after_commit)
                    *w = p, w = &p->next;
                else
                    *a = p, a = &p->next;
            }
            *a = NULL;
        }
        *w = NULL;
    }
    /* Each batch back to its loop before the record goes to the writer: its answers wait for
     * nothing else. */
    while (batches != NULL) {
        jbatch_t *next = batches->next;
        batches->result = rc;
        h2o_multithread_send_message(&batches->loop->journaled, &batches->super);
        batches = next;
    }
    if (rc != 0) {
        jrec_free(r);
        return;
    }
    pthread_mutex_lock(&q.mutex);
    if (q.jhead == NULL)
        clock_gettime(CLOCK_MONOTONIC, &q.jg.first);
    *q.jtail = r;
    q.jtail = &r->next;
    q.jg.len += r->events;
    q.jg.waiting += r->waiters != NULL;
    int wake = q.jhead == r || r->waiters != NULL || q.jg.len >= q.gather;
    pthread_mutex_unlock(&q.mutex);
    if (wake) /* after the unlock (WAKE_AFTER_UNLOCK) */
        pthread_cond_signal(&q.jcond);
}

/*
 * The journal thread: writes whatever batches wait, all in one record, until stopped.
 *
 * It runs under SCHED_BATCH (ll_sched_batch): woken by a loop, it does not take the CPU from it,
 * and runs when the loop waits for its sockets (or at the next tick), with whatever turns ended
 * meanwhile. Where the loop and this thread share a CPU (the benchmark pins the server to one,
 * as small deployments are), the hand-off no longer costs a context switch each way: pairs of
 * the journal pixel (BENCHMARKS.md) measured the journal thread 15-25% and the whole server 2-10%
 * cheaper a request, with p99 up about 1 ms at saturation. With CPUs to spare it changes nothing.
 */
static void *journal_main(void *arg)
{
    ll_thread_name("ll-journal");
    int err = ll_sched_batch();
    if (err != 0)
        log_warnx("journal: cannot run under SCHED_BATCH: %s; left as it was", strerror(err));
    for (;;) {
        pthread_mutex_lock(&jr.mu);
        while (jr.head == NULL && !jr.stopping)
            pthread_cond_wait(&jr.cond, &jr.mu);
        jbatch_t *batches = jr.head;
        jr.head = NULL;
        jr.tail = &jr.head;
        pthread_mutex_unlock(&jr.mu);
        if (batches == NULL)
            break;
        journal_batches(batches);
    }
    return NULL;
}

/* Changed scanner lists are reloaded (judge.h), once a second. */
static void reload_lists(uint64_t now)
{
    char err[512];
    int rl = ll_judge_reload(ll_srv.judge, now, err, sizeof(err));
    if (rl < 0)
        log_warnx("scanner lists: %s (the previous lists stay in use)", err);
    else if (rl > 0)
        log_info("scanner lists reloaded");
}

/* Provisional opens and clicks whose window passed get their final label and score (judge.h):
 * one transaction of up to SETTLE_CHUNK of them, so that a second's worth due at once (44k
 * opens at full load) delays the next batch by one chunk, not by all of them (a 60 s capture
 * run saw a p99 of 271 ms from that). Returns 1 when more are due. */
#define SETTLE_CHUNK 512
static int settle_chunk(uint64_t now)
{
    ll_txn_t t;
    int more = 0;
    /* A read first: the write lock (shared with the mailer and the CLI) only when something is due. */
    if (ll_txn_begin(ll_srv.store, 1, &t) != 0)
        return 0;
    uint64_t due = ll_judge_next_due(ll_srv.judge, &t);
    ll_txn_abort(&t);
    if (due == 0 || due > now)
        return 0;
    uint64_t outbox = 0;
    int rc = begin(&t, &outbox);
    if (rc == 0)
        rc = ll_judge_settle(ll_srv.judge, &t, ll_srv.scorer, now, SETTLE_CHUNK, &more);
    if ((rc = commit_and_kick(&t, outbox, rc)) != 0) {
        log_warnx("writer: could not settle provisional events: %s", ll_strerror(rc));
        return 0;
    }
    return more;
}

/* Under ack: queued or journal (GATHER_MAX above), with q.mutex held and g's queue not empty:
 * waits on cond until queued_commit_ms after g's first item, a waiting request, GATHER_MAX events
 * or until done() says stop. */
static void gather_locked(struct gather *g, pthread_cond_t *cond, int (*done)(void))
{
    int ms = ll_srv.conf.queued_commit_ms;
    if (ll_srv.conf.ack == LL_ACK_AFTER_COMMIT || ms <= 0)
        return;
    struct timespec until = g->first;
    until.tv_sec += ms / 1000;
    until.tv_nsec += ms % 1000 * 1000000L;
    if (until.tv_nsec >= 1000000000L)
        until.tv_sec++, until.tv_nsec -= 1000000000L;
    while (g->waiting == 0 && g->len < q.gather && !done() && pthread_cond_timedwait(cond, &q.mutex, &until) == 0)
        ;
}

static int journal_mode(void)
{
    return ll_srv.conf.ack == LL_ACK_AFTER_JOURNAL;
}

/* With q.mutex held: whether the journal thread waits for a sync (wait_synced), whether gathering
 * ends, and whether the writer has input under its ack: mode. */
static int sync_wanted(void)
{
    return q.sync_want > q.synced;
}

static int items_done(void)
{
    return q.stopping;
}

static int records_done(void)
{
    return q.stopping || sync_wanted();
}

static int have_input(void)
{
    return journal_mode() ? q.jhead != NULL : q.head != NULL;
}

/* With q.mutex held: up to max events of queued items (at least one), unlinked. */
static ll_pending_t *take_items(size_t max, size_t *events)
{
    ll_pending_t *batch = q.head, **end = &q.head;
    size_t n = 0, items = 0;
    while (*end != NULL && (n == 0 || n + (*end)->nrecs <= max)) {
        n += (*end)->nrecs;
        items++;
        q.g.waiting -= (*end)->waits;
        end = &(*end)->next;
    }
    q.head = *end;
    *end = NULL;
    if (q.head == NULL)
        q.tail = &q.head;
    q.g.len -= items;
    *events = n;
    return batch;
}

/* With q.mutex held: up to max events of queued journal records (at least one), unlinked. */
static jrec_t *take_records(size_t max)
{
    jrec_t *recs = q.jhead, **end = &q.jhead;
    size_t n = 0;
    while (*end != NULL && (n == 0 || n + (*end)->events <= max)) {
        n += (*end)->events;
        q.jg.len -= (*end)->events;
        q.jg.waiting -= (*end)->waiters != NULL;
        end = &(*end)->next;
    }
    q.jhead = *end;
    *end = NULL;
    if (q.jhead == NULL)
        q.jtail = &q.jhead;
    return recs;
}

/* Makes the store durable up to item last (committed); tells the journal thread. */
static void sync_store(uint64_t last)
{
    int rc = ll_store_sync(ll_srv.store);
    if (rc != 0) {
        log_warnx("writer: cannot sync the store: %s (the journal keeps its records; retrying)", ll_strerror(rc));
        usleep(100000);
    }
    pthread_mutex_lock(&q.mutex);
    if (rc == 0 && last > q.synced)
        q.synced = last;
    pthread_cond_broadcast(&q.scond);
    pthread_mutex_unlock(&q.mutex);
}

/*
 * The writer. Under `ack: commit` it runs under SCHED_BATCH (ll_sched_batch, as the journal
 * thread does): a loop that hands it a turn's requests finishes its turn first, and more of them
 * go into the commit. Pairs of the durable open, click and beacon (BENCHMARKS.md): the server's
 * CPU a request lower in 10 of 12, the writer thread in 11 of 12, p99 no worse. Not under
 * `ack: queued`, where a writer that waits lets more requests pass QUEUE_EARLY_MAX and wait
 * for their commit (its p99 went from 5 to 15 ms), nor under `ack: journal`, where the journal
 * thread, not a loop, wakes it.
 */
static void *writer_main(void *arg)
{
    ll_thread_name("ll-writer");
    int err = ll_srv.conf.ack == LL_ACK_AFTER_COMMIT ? ll_sched_batch() : 0;
    if (err != 0)
        log_warnx("writer: cannot run under SCHED_BATCH: %s; left as it was", strerror(err));
    size_t max = ll_srv.conf.batch_max > 0 ? (size_t)ll_srv.conf.batch_max : 1024;
    uint64_t next_settle = 0, settle_now = 0; /* settle_now: when the pass under way started */
    uint64_t last = jr.next - 1;              /* ack: journal: the last item committed */
    int journal = journal_mode();
    pthread_cond_t *cond = journal ? &q.jcond : &q.cond;
    for (;;) {
        pthread_mutex_lock(&q.mutex);
        while (!have_input() && !q.stopping && settle_now == 0 && !(journal && sync_wanted())) {
            if (ll_srv.judge == NULL) {
                pthread_cond_wait(cond, &q.mutex);
                continue;
            }
            /* With a judge, wake at least once a second for its provisional events. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(cond, &q.mutex, &ts) != 0)
                break;
        }
        if (!have_input() && q.stopping) {
            pthread_mutex_unlock(&q.mutex);
            break;
        }
        /* Not while a settling pass is under way: its chunks need the time (a chunk follows each
         * batch), and the batch grows meanwhile anyway. */
        if (have_input() && settle_now == 0) {
            if (journal)
                gather_locked(&q.jg, cond, records_done);
            else
                gather_locked(&q.g, cond, items_done);
        }
        /* Group commit: take whatever queued while the previous commit ran, up to the cap (none
         * when the wait timed out). */
        size_t n = 0;
        ll_pending_t *batch = journal ? NULL : take_items(max, &n);
        jrec_t *recs = journal ? take_records(max) : NULL;
        int sync = journal && sync_wanted(); /* after the records taken: they may be what it waits for */
        pthread_mutex_unlock(&q.mutex);

        if (batch != NULL) {
            commit_batch(batch, n); /* alerts queued in it go out now */
            send_back(batch);
        }
        if (recs != NULL) {
            commit_records(recs, 0);
            while (recs != NULL) {
                jrec_t *next = recs->next;
                last = recs->first + recs->items - 1;
                send_back(recs->waiters);
                jrec_free(recs);
                recs = next;
            }
        }
        if (sync)
            sync_store(last);
        /* After the answers went back: settling never delays an acknowledgement. A pass
         * starts once a second and goes on a chunk between batches until nothing is due. */
        if (ll_srv.judge != NULL && settle_now == 0 && ll_now_us() >= next_settle) {
            settle_now = ll_now_us();
            next_settle = settle_now + 1000000;
            reload_lists(settle_now);
        }
        if (settle_now != 0 && !settle_chunk(settle_now))
            settle_now = 0;
    }
    if (journal)
        sync_store(last); /* a clean stop leaves nothing for the next start to replay */
    pthread_mutex_lock(&q.mutex);
    q.writer_gone = 1;
    pthread_cond_broadcast(&q.scond);
    pthread_mutex_unlock(&q.mutex);
    return NULL;
}

struct replay_ctx {
    uint64_t mark;
    size_t items, events;
};

static int replay_record(uint64_t first, uint32_t items, const uint8_t *body, size_t len, void *_x)
{
    struct replay_ctx *x = _x;
    if (first + items - 1 <= x->mark)
        return 0;
    /* The record as the journal thread hands it over, on a copy (ingest writes into events). */
    jrec_t r = {.first = first, .items = items};
    ll_buf_init(&r.body, SIZE_MAX);
    ll_buf_append(&r.body, body, len);
    x->items += first + items - 1 - (first > x->mark ? first - 1 : x->mark);
    x->events += commit_records(&r, x->mark);
    ll_buf_free(&r.body);
    return 0;
}

/* Ingests what the journal at path holds past the store's mark, makes it durable, and leaves
 * the journal open in *out for appending from offset 0 (NULL out: closes it). */
static int replay(const char *path, size_t size, ll_journal_t **out, char *err, size_t errlen)
{
    ll_journal_t *j;
    int rc = ll_journal_open(path, size, &j, err, errlen);
    if (rc != 0)
        return rc;
    struct replay_ctx x = {.mark = get_mark()};
    uint64_t last = 0;
    ll_journal_scan(j, replay_record, &x, &last);
    if (x.items > 0) {
        if ((rc = ll_store_sync(ll_srv.store)) != 0) {
            ll_journal_close(j);
            return ll_err(err, errlen, rc, "%s: cannot sync the store after replaying it: %s", path, ll_strerror(rc));
        }
        log_info("journal: %zu request(s), %zu event(s) not in the store were stored from %s", x.items, x.events, path);
    }
    jr.next = (last > x.mark ? last : x.mark) + 1;
    ll_journal_rewind(j);
    if (out != NULL)
        *out = j;
    else
        ll_journal_close(j);
    return 0;
}

int ll__writer_start(char *err, size_t errlen)
{
    /* Timed waits on the monotonic clock: a step of the wall clock must not hold events back. */
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0 || pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&q.cond, &attr) != 0 || pthread_cond_init(&q.jcond, &attr) != 0 ||
        pthread_cond_init(&q.scond, &attr) != 0)
        return ll_err(err, errlen, LL_EIO, "cannot start the writer thread");
    pthread_condattr_destroy(&attr);
    q.gather = ll_srv.conf.batch_max > 0 && (size_t)ll_srv.conf.batch_max < GATHER_MAX ? (size_t)ll_srv.conf.batch_max
                                                                                        : GATHER_MAX;
    /* A journal left by `ack: journal` is replayed under any ack: (it may hold what a crash kept
     * out of the store), with the size it has; under `ack: journal` it is then made the configured
     * size, otherwise removed. */
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/edge.journal", ll_srv.conf.data_dir);
    int rc = 0;
    size_t size = journal_mode() ? (size_t)ll_srv.conf.journal_kb * 1024 : 0;
    if (stat(path, &st) == 0 && (size_t)st.st_size != size && st.st_size >= 65536 && st.st_size % 4096 == 0)
        rc = replay(path, (size_t)st.st_size, NULL, err, errlen); /* as it is, before it is remade */
    if (rc == 0 && journal_mode())
        rc = replay(path, size, &jr.j, err, errlen);
    else if (rc == 0 && unlink(path) != 0 && errno != ENOENT)
        rc = ll_err(err, errlen, LL_EIO, "%s: %s", path, strerror(errno));
    if (rc != 0)
        return rc;
    q.synced = jr.next - 1;
    if (pthread_create(&q.thread, NULL, writer_main, NULL) != 0 ||
        (journal_mode() && pthread_create(&jr.thread, NULL, journal_main, NULL) != 0))
        return ll_err(err, errlen, LL_EIO, "cannot start the writer thread");
    return 0;
}

void ll__writer_stop(void)
{
    if (journal_mode()) {
        /* The journal thread first: what it wrote reaches the writer before the writer stops.
         * A loop's turn that ends after this is answered 503 (on_turn_end). */
        pthread_mutex_lock(&jr.mu);
        jr.stopping = 1;
        pthread_cond_signal(&jr.cond);
        pthread_mutex_unlock(&jr.mu);
        pthread_join(jr.thread, NULL);
    }
    pthread_mutex_lock(&q.mutex);
    q.stopping = 1;
    pthread_cond_signal(journal_mode() ? &q.jcond : &q.cond);
    pthread_mutex_unlock(&q.mutex);
    pthread_join(q.thread, NULL);
    ll_journal_close(jr.j);
    jr.j = NULL;
}
