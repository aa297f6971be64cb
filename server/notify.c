/*
 * The notifier thread: delivers the outbox (tracker/outbox.c) and runs the SLA pass.
 *
 * Rows are written by the writer in the transaction of the event that raised them; this
 * thread reads the due ones, posts them concurrently with libcurl's multi interface (its own
 * thread, so no event loop ever waits on a receiver), then in one write transaction removes
 * those a receiver answered 2xx and pushes the others back with a backoff. A crash between a
 * 2xx and that commit sends the row again after the restart, with the same Idempotency-Key
 * (the alert id and the hook name), so a receiver can drop the repeat; a row is never sent
 * again after its removal is committed.
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

#define BATCH 32
#define SLA_EVERY_US 1000000ULL
#define RECEIVER_BACKOFF_MAX_US (600ULL * 1000000)

/* Per receiver (hook index), this thread's only: failures in a row and when to try again. */
static struct {
    uint32_t failures;
    uint64_t next_us;
    int in_batch; /* rows of it in the batch being collected */
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
    pthread_cond_t cond;
    int stopping, kicked, started;
} n = {.mutex = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

void ll__notify_kick(void)
{
    if (!n.started)
        return;
    pthread_mutex_lock(&n.mutex);
    n.kicked = 1;
    pthread_cond_signal(&n.cond);
    pthread_mutex_unlock(&n.mutex);
}

static const ll_hook_t *hook_named(const char *name)
{
    const ll_score_conf_t *c = ll_srv.conf.score;
    for (size_t i = 0; i < c->num_hooks; i++)
        if (strcmp(c->hooks[i].name, name) == 0)
            return &c->hooks[i];
    return NULL;
}

typedef struct {
    job_t jobs[BATCH];
    size_t njobs;
    uint64_t now;
    uint64_t drop[BATCH];
    size_t ndrop;
} collect_t;

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

static int on_row(uint64_t id, const ll_outbox_hdr_t *h, const char *body, size_t len, void *p)
{
    collect_t *x = p;
    if (h->kind == LL_OUT_EMAIL || h->next_us > x->now)
        return 0; /* email rows belong to the mailer */
    if (h->kind == LL_OUT_SSE) {
        ll__admin_publish(body, len);
        if (x->ndrop < BATCH)
            x->drop[x->ndrop++] = id;
        return x->ndrop == BATCH;
    }
    const ll_hook_t *hook = hook_named(h->target);
    if (hook != NULL) {
        /* A failing receiver waits out its backoff, then gets one probe per pass. */
        size_t r = (size_t)(hook - ll_srv.conf.score->hooks);
        if (receivers[r].next_us > x->now || (receivers[r].failures > 0 && receivers[r].in_batch > 0))
            return 0;
        receivers[r].in_batch++;
    }
    json_t *a = json_loadb(body, len, 0, NULL);
    if (hook == NULL || a == NULL) {
        log_warnx("notify: outbox row %llu: %s; dropped", (unsigned long long)id,
                  hook == NULL ? "its webhook is no longer configured" : "not JSON");
        json_decref(a);
        if (x->ndrop < BATCH)
            x->drop[x->ndrop++] = id;
        return x->ndrop == BATCH;
    }
    job_t *j = &x->jobs[x->njobs++];
    memset(j, 0, sizeof(*j));
    j->id = id;
    j->kind = h->kind;
    j->hook = hook;
    const char *aid = json_string_value(json_object_get(a, "id"));
    snprintf(j->idem, sizeof(j->idem), "%s:%s", aid ? aid : "row", hook->name);
    j->body = h->kind == LL_OUT_SLACK ? slack_text(a) : ll_strndup(body, len);
    json_decref(a);
    return x->njobs == BATCH;
}

static void job_prepare(job_t *j)
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
}

static int stopping(void)
{
    pthread_mutex_lock(&n.mutex);
    int s = n.stopping;
    pthread_mutex_unlock(&n.mutex);
    return s;
}

/* Posts the batch concurrently; returns when every transfer ended (or the server stops). */
static void deliver(CURLM *multi, collect_t *x)
{
    for (size_t i = 0; i < x->njobs; i++) {
        job_prepare(&x->jobs[i]);
        curl_multi_add_handle(multi, x->jobs[i].easy);
    }
    int running = (int)x->njobs;
    while (running > 0 && !stopping()) {
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            job_t *j;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            j->done = 1;
            if (m->data.result == CURLE_OK)
                curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &j->status);
            else
                log_info("notify: %s: %s", j->hook->name, curl_easy_strerror(m->data.result));
        }
        if (running > 0)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
}

static void record(collect_t *x)
{
    ll_txn_t t;
    int rc = ll_txn_begin(ll_srv.store, 0, &t);
    uint64_t now = ll_now_us();
    for (size_t i = 0; rc == 0 && i < x->ndrop; i++)
        rc = ll_outbox_done(ll_srv.scorer, &t, x->drop[i]);
    for (size_t i = 0; rc == 0 && i < x->njobs; i++) {
        job_t *j = &x->jobs[i];
        size_t r = (size_t)(j->hook - ll_srv.conf.score->hooks);
        if (j->done && j->status >= 200 && j->status < 300) {
            rc = ll_outbox_done(ll_srv.scorer, &t, j->id);
            receivers[r].failures = 0, receivers[r].next_us = 0;
        } else {
            if (j->done && j->status != 0)
                log_info("notify: %s answered %ld; will retry", j->hook->name, j->status);
            rc = ll_outbox_retry(ll_srv.scorer, &t, j->id, now);
            if (receivers[r].next_us <= now) { /* once per pass, however many of its rows failed */
                uint32_t f = ++receivers[r].failures;
                uint64_t backoff = 1000000ULL << (f < 10 ? f - 1 : 9);
                receivers[r].next_us = now + (backoff < RECEIVER_BACKOFF_MAX_US ? backoff : RECEIVER_BACKOFF_MAX_US);
            }
        }
    }
    if (rc == 0)
        rc = ll_txn_commit(&t);
    else
        ll_txn_abort(&t);
    if (rc != 0)
        log_warnx("notify: cannot record deliveries: %s", ll_strerror(rc));
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

static void *notify_main(void *arg)
{
    ll_thread_name("ll-notify");
    CURLM *multi = curl_multi_init();
    uint64_t last_sla = 0;
    for (;;) {
        pthread_mutex_lock(&n.mutex);
        if (!n.kicked && !n.stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L)
                ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&n.cond, &n.mutex, &ts);
        }
        n.kicked = 0;
        int stop = n.stopping;
        pthread_mutex_unlock(&n.mutex);
        if (stop)
            break;
        uint64_t now = ll_now_us();
        if (now - last_sla >= SLA_EVERY_US || now < last_sla) {
            last_sla = now;
            sla_pass();
        }
        collect_t *x = ll_calloc(1, sizeof(*x));
        x->now = now;
        for (size_t r = 0; r < LL_ALERT_MAX_HOOKS; r++)
            receivers[r].in_batch = 0;
        ll_txn_t t;
        if (ll_txn_begin(ll_srv.store, 1, &t) == 0) {
            ll_outbox_each(ll_srv.scorer, &t, on_row, x);
            ll_txn_abort(&t);
        }
        if (x->njobs > 0)
            deliver(multi, x);
        if (x->njobs > 0 || x->ndrop > 0)
            record(x);
        for (size_t i = 0; i < x->njobs; i++) {
            job_t *j = &x->jobs[i];
            if (j->easy != NULL) {
                curl_multi_remove_handle(multi, j->easy);
                curl_easy_cleanup(j->easy);
            }
            curl_slist_free_all(j->headers);
            free(j->body);
        }
        /* A full batch means more may be due: go again at once. */
        if (x->njobs == BATCH || x->ndrop == BATCH)
            ll__notify_kick();
        free(x);
    }
    curl_multi_cleanup(multi);
    return NULL;
}

int ll__notify_start(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
        return LL_EIO;
    if (pthread_create(&n.thread, NULL, notify_main, NULL) != 0)
        return LL_EIO;
    n.started = 1;
    return 0;
}

void ll__notify_stop(void)
{
    if (!n.started)
        return;
    pthread_mutex_lock(&n.mutex);
    n.stopping = 1;
    pthread_cond_signal(&n.cond);
    pthread_mutex_unlock(&n.mutex);
    pthread_join(n.thread, NULL);
    n.started = 0;
    curl_global_cleanup();
}
