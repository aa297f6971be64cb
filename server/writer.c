/*
 * The writer thread: group commit of pending events, and the hand-back of each pending item
 * to the loop that owns its request (see server.h for ownership).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "leadloop/ingest.h"
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
};

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

static struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    ll_pending_t *head, **tail;
    size_t len;
    size_t waiting;        /* queued items whose request waits for the commit */
    size_t gather;         /* GATHER_MAX, or batch_max when smaller */
    struct timespec first; /* ack: queued: when the queue last went from empty to not */
    int stopping;
    pthread_t thread;
} q = {.mutex = PTHREAD_MUTEX_INITIALIZER, .tail = &q.head}; /* cond: ll__writer_start */

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

static void on_writer_done(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        ll_pending_t *p = H2O_STRUCT_FROM_MEMBER(ll_pending_t, super.link, messages->next);
        h2o_linklist_unlink(&p->super.link);
        h2o_req_t *req = detach(p);
        if (p->answered_early) {
            if (p->result != 0)
                ll__metrics_lost(p->ep, p->nrecs);
        } else {
            p->on_done(p, req); /* req may be NULL: the callback counts, does not respond */
        }
        ll__pending_free(p);
    }
}

ll_loop_t *ll__loop_new(h2o_context_t *ctx)
{
    ll_loop_t *l = ll_calloc(1, sizeof(*l));
    l->ctx = ctx;
    h2o_multithread_register_receiver(ctx->queue, &l->receiver, on_writer_done);
    h2o_timeout_init(ctx->loop, &l->deadline, (uint64_t)ll_srv.conf.click_deadline_ms);
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
    return q.len >= QUEUE_CAP || q.stopping;
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

int ll__pending_submit(ll_pending_t *p, ll_ack_t ack)
{
    int early = 0;
    if (ll_srv.conf.ack_queued && ack != LL_ACK_COMMIT) {
        /* A full queue refuses p as without ack: queued. Then p is answered before the writer
         * can see it (on_done reads it), outside the lock (it writes to the socket). */
        pthread_mutex_lock(&q.mutex);
        int full = queue_full();
        early = q.len < QUEUE_EARLY_MAX;
        pthread_mutex_unlock(&q.mutex);
        if (full)
            return LL_ENOMEM;
        if (early)
            answer_early(p);
    }
    pthread_mutex_lock(&q.mutex);
    if (queue_full()) {
        pthread_mutex_unlock(&q.mutex);
        if (!early)
            return LL_ENOMEM;
        ll__metrics_lost(p->ep, p->nrecs); /* filled or stopping since it was answered */
        ll__pending_free(p);
        return 0;
    }
    p->next = NULL;
    p->waits = !early;
    if (q.head == NULL && ll_srv.conf.ack_queued)
        clock_gettime(CLOCK_MONOTONIC, &q.first);
    *q.tail = p;
    q.tail = &p->next;
    q.len++;
    q.waiting += p->waits;
    /* A gathering writer needs waking only when its batch is due. */
    if (q.len == 1 || p->waits || q.len == q.gather)
        pthread_cond_signal(&q.cond);
    pthread_mutex_unlock(&q.mutex);
    if (!early) {
        keep_reading(p->req);
        if (ack == LL_ACK_DEADLINE)
            h2o_timeout_link(p->loop->ctx->loop, &p->loop->deadline, &p->deadline);
    }
    return 0;
}

static int ingest_item(ll_txn_t *t, ll_pending_t *p)
{
    for (size_t i = 0; i < p->nrecs; i++) {
        size_t end = i + 1 < p->nrecs ? p->rec_off[i + 1] : p->recs.len;
        ll_ingest_t in = {.rec = (uint8_t *)p->recs.data + p->rec_off[i],
                          .len = end - p->rec_off[i],
                          /* only the first record (the form or the click itself) binds */
                          .email = i == 0 ? p->email : NULL,
                          .fields_json = i == 0 ? p->fields_json : NULL,
                          .bind = i == 0 ? p->bind : 0,
                          .scorer = ll_srv.scorer,
                          .judge = ll_srv.judge,
                          .client_ip = p->client_ip.family != 0 ? &p->client_ip : NULL};
        int rc = ll_ingest(t, &in);
        if (rc != 0)
            return rc;
        if (i == 0)
            p->contact = in.contact;
    }
    return 0;
}

static void count_stored(ll_pending_t *p)
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
        rc = ingest_item(&t, p);
    if ((rc = commit_and_kick(&t, outbox, rc)) == 0) {
        ll__metrics_batch(nevents, ll_now_us() - start);
        for (p = batch; p != NULL; p = p->next)
            p->result = 0, count_stored(p);
        return;
    }
    for (p = batch; p != NULL; p = p->next) {
        start = ll_now_us();
        if ((p->result = begin(&t, &outbox)) == 0)
            p->result = ingest_item(&t, p);
        if ((p->result = commit_and_kick(&t, outbox, p->result)) == 0) {
            ll__metrics_batch(p->nrecs, ll_now_us() - start);
            count_stored(p);
        } else {
            log_warnx("writer: could not store %zu event(s): %s", p->nrecs, ll_strerror(p->result));
        }
    }
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

/* Under ack: queued (GATHER_MAX above), with q.mutex held and the queue not empty: waits until
 * queued_commit_ms after the first item, a waiting request, GATHER_MAX items or the stop. */
static void gather_locked(void)
{
    int ms = ll_srv.conf.queued_commit_ms;
    if (!ll_srv.conf.ack_queued || ms <= 0)
        return;
    struct timespec until = q.first;
    until.tv_sec += ms / 1000;
    until.tv_nsec += ms % 1000 * 1000000L;
    if (until.tv_nsec >= 1000000000L)
        until.tv_sec++, until.tv_nsec -= 1000000000L;
    while (q.waiting == 0 && q.len < q.gather && !q.stopping && pthread_cond_timedwait(&q.cond, &q.mutex, &until) == 0)
        ;
}

static void *writer_main(void *arg)
{
    size_t max = ll_srv.conf.batch_max > 0 ? (size_t)ll_srv.conf.batch_max : 1024;
    uint64_t next_settle = 0, settle_now = 0; /* settle_now: when the pass under way started */
    for (;;) {
        pthread_mutex_lock(&q.mutex);
        while (q.head == NULL && !q.stopping && settle_now == 0) {
            if (ll_srv.judge == NULL) {
                pthread_cond_wait(&q.cond, &q.mutex);
                continue;
            }
            /* With a judge, wake at least once a second for its provisional events. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(&q.cond, &q.mutex, &ts) != 0)
                break;
        }
        if (q.head == NULL && q.stopping) {
            pthread_mutex_unlock(&q.mutex);
            break;
        }
        /* Not while a settling pass is under way: its chunks need the time (a chunk follows each
         * batch), and the batch grows meanwhile anyway. */
        if (q.head != NULL && settle_now == 0)
            gather_locked();
        /* Group commit: take whatever queued while the previous commit ran, up to the cap (none
         * when the wait timed out). */
        ll_pending_t *batch = q.head, **end = &q.head;
        size_t n = 0, items = 0;
        while (*end != NULL && (n == 0 || n + (*end)->nrecs <= max)) {
            n += (*end)->nrecs;
            items++;
            q.waiting -= (*end)->waits;
            end = &(*end)->next;
        }
        q.head = *end;
        *end = NULL;
        if (q.head == NULL)
            q.tail = &q.head;
        q.len -= items;
        pthread_mutex_unlock(&q.mutex);

        if (batch != NULL) {
            commit_batch(batch, n); /* alerts queued in it go out now */
            while (batch != NULL) {
                ll_pending_t *next = batch->next;
                h2o_multithread_send_message(&batch->loop->receiver, &batch->super);
                batch = next;
            }
        }
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
    return NULL;
}

int ll__writer_start(void)
{
    /* Timed waits on the monotonic clock: a step of the wall clock must not hold events back. */
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0 || pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&q.cond, &attr) != 0)
        return LL_EIO;
    pthread_condattr_destroy(&attr);
    q.gather = ll_srv.conf.batch_max > 0 && (size_t)ll_srv.conf.batch_max < GATHER_MAX ? (size_t)ll_srv.conf.batch_max
                                                                                        : GATHER_MAX;
    return pthread_create(&q.thread, NULL, writer_main, NULL) == 0 ? 0 : LL_EIO;
}

void ll__writer_stop(void)
{
    pthread_mutex_lock(&q.mutex);
    q.stopping = 1;
    pthread_cond_signal(&q.cond);
    pthread_mutex_unlock(&q.mutex);
    pthread_join(q.thread, NULL);
}
