/*
 * The notifier thread: delivers the outbox (tracker/outbox.c) and runs the SLA pass.
 *
 * Rows are written by the writer in the transaction of the event that raised them; this
 * thread reads the due ones, posts them concurrently with libcurl's multi interface (its own
 * thread, so no event loop ever waits on a receiver), and as posts end it removes, in one write
 * transaction a pass, those a receiver answered 2xx and pushes the others back with a backoff.
 *
 * Posts do not wait for one another. A pass runs whenever the writer queues an alert or a post
 * ends, at most every 5 ms, and every 200 ms when idle, for retries that came due. It publishes
 * the due SSE rows at once and starts the due posts beside those under way: up to 64, at most
 * 16 to one receiver, so a receiver that hangs until the 10 s timeout holds up neither the
 * others nor the live feed. A pass reads the outbox from the lowest row that the live feed or a
 * receiver able to take rows has not had yet: the rows a receiver that is down has queued are
 * read again only when its backoff ends (one probe), not on every pass.
 *
 * A crash between a 2xx and its commit sends the row again after the restart, with the same
 * Idempotency-Key (the alert id and the hook name), so a receiver can drop the repeat; a row
 * is never sent again after its removal is committed.
 *
 * A receiver that fails (no answer, or not 2xx) is backed off as a whole: until its own
 * backoff (1 s doubling to 10 min) passes, none of its rows is tried, and then one row probes
 * it; the rows keep their order and only the tried ones count attempts. So a receiver that is
 * down for an hour gets a probe every ten minutes, not every queued alert on every retry.
 *
 * JSON hooks are signed: X-Leadloop-Timestamp is the unix time of the attempt, and
 * X-Leadloop-Signature is "v1=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include <jansson.h>
#include "leadloop/score.h"
#include "server.h"

#define FLIGHT_MAX 64       /* posts under way at once, every receiver together */
#define PER_RECEIVER_MAX 16 /* of them to one receiver: a hung one cannot take every slot */
#define DROP_MAX 64         /* SSE (and undeliverable) rows removed by one pass */
#define IDLE_US 200000ULL   /* a pass at least this often: rows whose retry came due */
#define GAP_US 5000ULL      /* and at most this often */
#define SLA_EVERY_US 1000000ULL
#define RECEIVER_BACKOFF_MAX_US (600ULL * 1000000)

/* Per receiver (hook index), this thread's only: failures in a row, when to try again, its
 * posts under way, and where a pass must start reading for it (every row of it below `from` is
 * under way or was sent), so that a pass skips what a receiver that is down has queued. */
static struct {
    uint32_t failures;
    uint64_t next_us;
    int flying;
    int open;      /* it could take a row when the pass began */
    uint64_t from;
    uint64_t left; /* the pass's first row of it not taken */
} receivers[LL_ALERT_MAX_HOOKS];

typedef struct {
    uint64_t id;
    int kind;
    const ll_hook_t *hook;
    char *body;       /* what is posted */
    char idem[200];
    struct curl_slist *headers;
    CURL *easy;
    long status;
    int done;
} job_t;

static struct {
    pthread_t thread;
    pthread_mutex_t mutex;
    CURLM *multi;
    int stopping, kicked, started;
} n = {.mutex = PTHREAD_MUTEX_INITIALIZER};

/* The notifier thread's own: posts under way or ended and not yet recorded (a row in here is
 * never collected again), and the rows the current pass removes. */
static struct {
    job_t *jobs[FLIGHT_MAX];
    size_t njobs;
    uint64_t drop[DROP_MAX];
    size_t ndrop;
    uint64_t now;
    uint64_t seen;               /* the pass read every row below this */
    uint64_t sse_from, sse_left; /* `from` and `left` of the live feed's rows */
} f;

void ll__notify_kick(void)
{
    if (!n.started)
        return;
    pthread_mutex_lock(&n.mutex);
    n.kicked = 1;
    pthread_mutex_unlock(&n.mutex);
    curl_multi_wakeup(n.multi);
}

static const ll_hook_t *hook_named(const char *name)
{
    const ll_score_conf_t *c = ll_srv.conf.score;
    for (size_t i = 0; i < c->num_hooks; i++)
        if (strcmp(c->hooks[i].name, name) == 0)
            return &c->hooks[i];
    return NULL;
}

static char *slack_text(json_t *a)
{
    const char *kind = json_string_value(json_object_get(a, "alert"));
    const char *why = json_string_value(json_object_get(a, "why"));
    json_t *c = json_object_get(a, "contact");
    const char *email = json_string_value(json_object_get(c, "email"));
    char text[1024];
    snprintf(text, sizeof(text), "*%s* %s: %s (score %lld, grade %s)", kind ? kind : "alert", email ? email : "?",
             why ? why : "", (long long)json_integer_value(json_object_get(a, "score")),
             json_string_value(json_object_get(a, "grade")) ? json_string_value(json_object_get(a, "grade")) : "?");
    json_t *o = json_pack("{s:s}", "text", text);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static void job_start(job_t *j)
{
    char hdr[256];
    j->headers = curl_slist_append(j->headers, "Content-Type: application/json");
    snprintf(hdr, sizeof(hdr), "Idempotency-Key: %s", j->idem);
    j->headers = curl_slist_append(j->headers, hdr);
    if (j->kind == LL_OUT_JSON && j->hook->secret != NULL) {
        char ts[24], sig[65];
        snprintf(ts, sizeof(ts), "%llu", (unsigned long long)(ll_now_us() / 1000000));
        ll_alert_sign(j->hook->secret, ts, j->body, strlen(j->body), sig);
        snprintf(hdr, sizeof(hdr), "X-Leadloop-Timestamp: %s", ts);
        j->headers = curl_slist_append(j->headers, hdr);
        snprintf(hdr, sizeof(hdr), "X-Leadloop-Signature: v1=%s", sig);
        j->headers = curl_slist_append(j->headers, hdr);
    }
    j->headers = curl_slist_append(j->headers, "Expect:");
    j->easy = curl_easy_init();
    curl_easy_setopt(j->easy, CURLOPT_URL, j->hook->url);
    curl_easy_setopt(j->easy, CURLOPT_HTTPHEADER, j->headers);
    curl_easy_setopt(j->easy, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(j->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(j->body));
    curl_easy_setopt(j->easy, CURLOPT_USERAGENT, "leadloop-notifier");
    curl_easy_setopt(j->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(j->easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(j->easy, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(j->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(j->easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(j->easy, CURLOPT_PRIVATE, j);
    curl_multi_add_handle(n.multi, j->easy);
}

static void job_free(job_t *j)
{
    curl_multi_remove_handle(n.multi, j->easy);
    curl_easy_cleanup(j->easy);
    curl_slist_free_all(j->headers);
    free(j->body);
    free(j);
}

static int in_flight(uint64_t id)
{
    for (size_t i = 0; i < f.njobs; i++)
        if (f.jobs[i]->id == id)
            return 1;
    return 0;
}

/* Whether receiver r can take a row now: a failing receiver waits out its backoff, then gets
 * one probe at a time; a receiver has at most its share of the slots. */
static int can_take(size_t r)
{
    return receivers[r].next_us <= f.now && !(receivers[r].failures > 0 && receivers[r].flying > 0) &&
           receivers[r].flying < PER_RECEIVER_MAX && f.njobs < FLIGHT_MAX;
}

static void lower(uint64_t *at, uint64_t id)
{
    if (id < *at)
        *at = id;
}

/* One row of the pass: a due SSE row is published and removed; a webhook's due row starts its
 * post if its receiver can take it. Stops the walk when the removals are full (the next pass
 * goes on at once). */
static int on_row(uint64_t id, const ll_outbox_hdr_t *h, const char *body, size_t len, void *p)
{
    (void)p;
    f.seen = id + 1;
    if (h->kind == LL_OUT_EMAIL || in_flight(id))
        return 0; /* email rows belong to the mailer; a post's end decides about its row */
    if (h->kind == LL_OUT_SSE) {
        if (h->next_us > f.now) {
            lower(&f.sse_left, id);
            return 0;
        }
        ll__admin_publish(body, len);
        f.drop[f.ndrop++] = id;
        return f.ndrop == DROP_MAX;
    }
    const ll_hook_t *hook = hook_named(h->target);
    size_t r = hook != NULL ? (size_t)(hook - ll_srv.conf.score->hooks) : 0;
    if (hook != NULL && (h->next_us > f.now || !can_take(r))) {
        lower(&receivers[r].left, id);
        return 0;
    }
    json_t *a = json_loadb(body, len, 0, NULL);
    if (hook == NULL || a == NULL) {
        log_warnx("notify: outbox row %llu: %s; dropped", (unsigned long long)id,
                  hook == NULL ? "its webhook is no longer configured" : "not JSON");
        json_decref(a);
        f.drop[f.ndrop++] = id;
        return f.ndrop == DROP_MAX;
    }
    job_t *j = ll_calloc(1, sizeof(*j));
    j->id = id;
    j->kind = h->kind;
    j->hook = hook;
    const char *aid = json_string_value(json_object_get(a, "id"));
    snprintf(j->idem, sizeof(j->idem), "%s:%s", aid ? aid : "row", hook->name);
    j->body = h->kind == LL_OUT_SLACK ? slack_text(a) : ll_strndup(body, len);
    json_decref(a);
    job_start(j);
    f.jobs[f.njobs++] = j;
    receivers[r].flying++;
    return 0;
}

/* Runs the transfers; marks the ended ones done. Returns how many ended. */
static int harvest(void)
{
    int running, ended = 0;
    curl_multi_perform(n.multi, &running);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(n.multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        job_t *j;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
        j->done = 1;
        ended++;
        if (m->data.result == CURLE_OK)
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &j->status);
        else
            log_info("notify: %s: %s", j->hook->name, curl_easy_strerror(m->data.result));
    }
    return ended;
}

/* In one write transaction: removes the pass's drops and the rows whose post a receiver
 * answered 2xx, pushes the failed ones back; frees the ended jobs. */
static void record(void)
{
    size_t ended = 0;
    for (size_t i = 0; i < f.njobs; i++)
        ended += f.jobs[i]->done;
    if (ended == 0 && f.ndrop == 0)
        return;
    ll_txn_t t;
    int rc = ll_txn_begin(ll_srv.store, 0, &t);
    uint64_t now = ll_now_us();
    for (size_t i = 0; rc == 0 && i < f.ndrop; i++)
        rc = ll_outbox_done(ll_srv.scorer, &t, f.drop[i]);
    for (size_t i = 0; rc == 0 && i < f.njobs; i++) {
        job_t *j = f.jobs[i];
        size_t r = (size_t)(j->hook - ll_srv.conf.score->hooks);
        if (!j->done)
            continue;
        if (j->status >= 200 && j->status < 300) {
            rc = ll_outbox_done(ll_srv.scorer, &t, j->id);
            receivers[r].failures = 0, receivers[r].next_us = 0;
        } else {
            if (j->status != 0)
                log_info("notify: %s answered %ld; will retry", j->hook->name, j->status);
            rc = ll_outbox_retry(ll_srv.scorer, &t, j->id, now);
            lower(&receivers[r].from, j->id);
            if (receivers[r].next_us <= now) { /* once per backoff step, however many of its rows failed */
                uint32_t fl = ++receivers[r].failures;
                uint64_t backoff = 1000000ULL << (fl < 10 ? fl - 1 : 9);
                receivers[r].next_us = now + (backoff < RECEIVER_BACKOFF_MAX_US ? backoff : RECEIVER_BACKOFF_MAX_US);
            }
        }
    }
    if (rc == 0)
        rc = ll_txn_commit(&t);
    else
        ll_txn_abort(&t);
    if (rc != 0) {
        log_warnx("notify: cannot record deliveries: %s", ll_strerror(rc));
        for (size_t i = 0; i < f.ndrop; i++)
            lower(&f.sse_from, f.drop[i]);
    }
    /* Recorded or not, the ended jobs leave: a row whose record failed is still in the outbox
     * and goes again (with its Idempotency-Key), as after a crash. */
    size_t k = 0;
    for (size_t i = 0; i < f.njobs; i++) {
        job_t *j = f.jobs[i];
        if (j->done) {
            size_t r = (size_t)(j->hook - ll_srv.conf.score->hooks);
            if (rc != 0)
                lower(&receivers[r].from, j->id);
            receivers[r].flying--;
            job_free(j);
        } else {
            f.jobs[k++] = j;
        }
    }
    f.njobs = k;
    f.ndrop = 0;
}

/* A pass: publishes the due SSE rows and starts the due posts, in id order. Returns whether
 * it stopped with more SSE rows due; rows waiting for a slot get the pass after a post ends. */
static int collect(uint64_t now)
{
    ll_txn_t t;
    size_t nr = ll_srv.conf.score->num_hooks;
    uint64_t from = f.sse_from;
    f.now = now;
    for (size_t r = 0; r < nr; r++) {
        receivers[r].left = UINT64_MAX;
        if ((receivers[r].open = can_take(r)) != 0)
            lower(&from, receivers[r].from);
    }
    f.sse_left = UINT64_MAX;
    f.seen = from;
    if (ll_txn_begin(ll_srv.store, 1, &t) != 0)
        return 0;
    ll_outbox_each_from(ll_srv.scorer, &t, from, on_row, NULL);
    ll_txn_abort(&t);
    /* What the pass read and did not take is where the next one starts, for the live feed and
     * for each receiver that could take rows; the others keep their place. */
    f.sse_from = f.sse_left < f.seen ? f.sse_left : f.seen;
    for (size_t r = 0; r < nr; r++)
        if (receivers[r].open)
            receivers[r].from = receivers[r].left < f.seen ? receivers[r].left : f.seen;
    return f.ndrop == DROP_MAX;
}

static void sla_pass(void)
{
    ll_txn_t t;
    int changed = 0, rc, due = 0;
    /* A read first: the write lock is taken only when some lead is due. */
    if (ll_txn_begin(ll_srv.store, 1, &t) == 0) {
        due = ll_lead_sla_due(ll_srv.scorer, &t, ll_now_us());
        ll_txn_abort(&t);
    }
    if (!due)
        return;
    rc = ll_txn_begin(ll_srv.store, 0, &t);
    if (rc == 0 && (rc = ll_lead_sla_pass(ll_srv.scorer, &t, ll_now_us(), &changed)) == 0 && changed > 0) {
        rc = ll_txn_commit(&t);
        if (rc == 0)
            log_info("sla: %d lead(s) escalated or recycled", changed);
    } else {
        ll_txn_abort(&t);
    }
    if (rc != 0)
        log_warnx("sla: %s", ll_strerror(rc));
}

/* The loop's own clock: its timing follows the machine's, not LEADLOOP_FAKE_TIME (which
 * ll_now_us() follows, and with it the rows' due times). */
static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void *notify_main(void *arg)
{
    ll_thread_name("ll-notify");
    uint64_t last_sla = 0, last_pass = 0;
    int want = 1; /* a pass is wanted: kicked, a post ended, an SLA pass, or more SSE rows due */
    for (;;) {
        uint64_t now = mono_us(), due = last_pass + (want ? GAP_US : IDLE_US);
        if (last_sla + SLA_EVERY_US < due)
            due = last_sla + SLA_EVERY_US;
        if (due > now)
            curl_multi_poll(n.multi, NULL, 0, (int)((due - now + 999) / 1000), NULL);
        pthread_mutex_lock(&n.mutex);
        want |= n.kicked;
        n.kicked = 0;
        int stop = n.stopping;
        pthread_mutex_unlock(&n.mutex);
        if (stop)
            break;
        if (harvest() > 0)
            want = 1;
        now = mono_us();
        if (now - last_sla >= SLA_EVERY_US) {
            last_sla = now;
            sla_pass();
            want = 1; /* its alerts go in this pass */
        }
        if (now - last_pass >= IDLE_US)
            want = 1;
        if (want && now - last_pass >= GAP_US) {
            last_pass = now;
            want = collect(ll_now_us());
            if (harvest() > 0) /* starts the new posts */
                want = 1;
            record();
        }
    }
    /* Stopping: what a receiver answered is recorded; a post still under way is left as it is
     * in the outbox (not counted as a failure) and goes again after the restart. */
    harvest();
    record();
    for (size_t i = 0; i < f.njobs; i++) {
        receivers[f.jobs[i]->hook - ll_srv.conf.score->hooks].flying--;
        job_free(f.jobs[i]);
    }
    f.njobs = 0;
    return NULL;
}

int ll__notify_start(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || (n.multi = curl_multi_init()) == NULL)
        return LL_EIO;
    if (pthread_create(&n.thread, NULL, notify_main, NULL) != 0) {
        curl_multi_cleanup(n.multi);
        return LL_EIO;
    }
    n.started = 1;
    return 0;
}

void ll__notify_stop(void)
{
    if (!n.started)
        return;
    pthread_mutex_lock(&n.mutex);
    n.stopping = 1;
    pthread_mutex_unlock(&n.mutex);
    curl_multi_wakeup(n.multi);
    pthread_join(n.thread, NULL);
    n.started = 0;
    curl_multi_cleanup(n.multi);
    n.multi = NULL;
    curl_global_cleanup();
}
