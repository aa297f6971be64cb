/* Counters for /metrics (Prometheus text format). Lock-free: relaxed atomics. */
#include <stdatomic.h>
#include "leadloop/judge.h"
#include "server.h"

static const char *const ep_names[EP__MAX] = {"click", "open", "snippet", "beacon", "pixel", "form", "healthz", "metrics", "other"};
static const char *const rej_names[REJ__MAX] = {"bad_token", "bad_json", "bad_utf8", "too_large", "unknown_form",
                                                "honeypot", "rate_limit", "bad_email", "bad_request", "method",
                                                "overload", "store_failed", "privacy"};
static const int statuses[] = {200, 204, 302, 303, 304, 400, 404, 405, 413, 414, 415, 429, 431, 500, 503, 0};
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))
static const uint64_t batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
static const uint64_t commit_bounds_us[] = {250, 500, 1000, 2000, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};
static const uint64_t journal_bounds_us[] = {100, 250, 500, 1000, 2000, 5000, 10000, 25000, 100000, 1000000};
#define NB(a) (sizeof(a) / sizeof(a[0]))

static struct {
    atomic_ullong requests[EP__MAX][NSTATUS];
    atomic_ullong rejects[REJ__MAX];
    atomic_ullong stored[LL_EV__MAX];
    atomic_ullong lost[EP__MAX];
    atomic_ullong batch_hist[NB(batch_bounds) + 1], batch_sum, batch_count;
    atomic_ullong commit_hist[NB(commit_bounds_us) + 1], commit_sum_us, commit_count;
    atomic_ullong jbatch_hist[NB(batch_bounds) + 1], jbatch_sum, jbatch_count;
    atomic_ullong jwrite_hist[NB(journal_bounds_us) + 1], jwrite_sum_us, jbytes, jrewinds;
} m;

void ll__metrics_request(ll_endpoint_t ep, int status)
{
    size_t i = 0;
    while (statuses[i] != 0 && statuses[i] != status)
        i++;
    atomic_fetch_add_explicit(&m.requests[ep][i], 1, memory_order_relaxed);
}

void ll__metrics_reject(ll_reject_t why)
{
    atomic_fetch_add_explicit(&m.rejects[why], 1, memory_order_relaxed);
}

void ll__metrics_stored(int type, size_t n)
{
    if (type > 0 && type < LL_EV__MAX)
        atomic_fetch_add_explicit(&m.stored[type], n, memory_order_relaxed);
}

void ll__metrics_lost(ll_endpoint_t ep, size_t n)
{
    atomic_fetch_add_explicit(&m.lost[ep], n, memory_order_relaxed);
}

static void observe(atomic_ullong *hist, const uint64_t *bounds, size_t nb, uint64_t v)
{
    size_t i = 0;
    while (i < nb && v > bounds[i])
        i++;
    atomic_fetch_add_explicit(&hist[i], 1, memory_order_relaxed);
}

void ll__metrics_batch(size_t events, uint64_t commit_us)
{
    observe(m.batch_hist, batch_bounds, NB(batch_bounds), events);
    atomic_fetch_add_explicit(&m.batch_sum, events, memory_order_relaxed);
    atomic_fetch_add_explicit(&m.batch_count, 1, memory_order_relaxed);
    observe(m.commit_hist, commit_bounds_us, NB(commit_bounds_us), commit_us);
    atomic_fetch_add_explicit(&m.commit_sum_us, commit_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&m.commit_count, 1, memory_order_relaxed);
}

void ll__metrics_journal(size_t requests, size_t bytes, uint64_t write_us)
{
    observe(m.jbatch_hist, batch_bounds, NB(batch_bounds), requests);
    atomic_fetch_add_explicit(&m.jbatch_sum, requests, memory_order_relaxed);
    atomic_fetch_add_explicit(&m.jbatch_count, 1, memory_order_relaxed);
    observe(m.jwrite_hist, journal_bounds_us, NB(journal_bounds_us), write_us);
    atomic_fetch_add_explicit(&m.jwrite_sum_us, write_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&m.jbytes, bytes, memory_order_relaxed);
}

void ll__metrics_journal_rewind(void)
{
    atomic_fetch_add_explicit(&m.jrewinds, 1, memory_order_relaxed);
}

static void histogram(ll_buf_t *out, const char *name, const char *help, atomic_ullong *hist, const uint64_t *bounds,
                      size_t nb, double scale, unsigned long long sum, unsigned long long count)
{
    ll_buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    unsigned long long cum = 0;
    for (size_t i = 0; i < nb; i++) {
        cum += atomic_load(&hist[i]);
        ll_buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i] * scale, cum);
    }
    cum += atomic_load(&hist[nb]);
    ll_buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %g\n%s_count %llu\n", name, cum, name, sum * scale, name, count);
}

void ll__metrics_render(ll_buf_t *out)
{
    ll_buf_appends(out, "# HELP leadloop_requests_total HTTP requests by endpoint and status.\n"
                        "# TYPE leadloop_requests_total counter\n");
    for (int e = 0; e < EP__MAX; e++)
        for (size_t s = 0; s < NSTATUS; s++) {
            unsigned long long v = atomic_load(&m.requests[e][s]);
            if (v != 0 || (s == 0 && e != EP_OTHER))
                ll_buf_printf(out, "leadloop_requests_total{endpoint=\"%s\",status=\"%s%d\"} %llu\n", ep_names[e],
                              statuses[s] ? "" : "other", statuses[s] ? statuses[s] : 0, v);
        }
    ll_buf_appends(out, "# HELP leadloop_events_stored_total Events committed to the log, by type.\n"
                        "# TYPE leadloop_events_stored_total counter\n");
    for (int t = 1; t < LL_EV__MAX; t++)
        ll_buf_printf(out, "leadloop_events_stored_total{type=\"%s\"} %llu\n", ll_event_type_name(t),
                      (unsigned long long)atomic_load(&m.stored[t]));
    ll_buf_appends(out, "# HELP leadloop_rejects_total Requests or events refused, by reason.\n"
                        "# TYPE leadloop_rejects_total counter\n");
    for (int r = 0; r < REJ__MAX; r++)
        ll_buf_printf(out, "leadloop_rejects_total{reason=\"%s\"} %llu\n", rej_names[r],
                      (unsigned long long)atomic_load(&m.rejects[r]));
    ll_buf_appends(out, "# HELP leadloop_events_lost_total Events not stored (store full or failing, queue over its cap).\n"
                        "# TYPE leadloop_events_lost_total counter\n");
    for (int e = 0; e < EP__MAX; e++)
        if (e == EP_CLICK || e == EP_OPEN || e == EP_BEACON || e == EP_PIXEL || e == EP_FORM)
            ll_buf_printf(out, "leadloop_events_lost_total{endpoint=\"%s\"} %llu\n", ep_names[e],
                          (unsigned long long)atomic_load(&m.lost[e]));
    /* People or machines (judge.h): email opens and clicks by their current label and reasons,
     * from the store, so they survive restarts and follow relabels. */
    ll_txn_t t;
    ll_judge_counts_t c;
    if (ll_srv.judge != NULL && ll_txn_begin(ll_srv.store, 1, &t) == 0) {
        if (ll_judge_counts(&t, ll_judge_counts_dbi(ll_srv.judge), 0, &c) == 0) {
            ll_buf_appends(out, "# HELP leadloop_email_events Email opens and clicks by label (human, likely-human, "
                                "prefetch, scanner, bot, unknown).\n# TYPE leadloop_email_events gauge\n");
            for (int i = 0; i < LL_CLASS__MAX; i++)
                ll_buf_printf(out, "leadloop_email_events{class=\"%s\"} %llu\n", ll_class_name(i),
                              (unsigned long long)c.cls[i]);
            ll_buf_appends(out, "# HELP leadloop_email_event_reasons Email opens and clicks by classification reason.\n"
                                "# TYPE leadloop_email_event_reasons gauge\n");
            for (int b = 0; b < 32; b++)
                if (ll_reason_name(b) != NULL && c.reason[b] != 0)
                    ll_buf_printf(out, "leadloop_email_event_reasons{reason=\"%s\"} %llu\n", ll_reason_name(b),
                                  (unsigned long long)c.reason[b]);
        }
        ll_txn_abort(&t);
    }
    histogram(out, "leadloop_batch_events", "Events per group commit.", m.batch_hist, batch_bounds, NB(batch_bounds), 1,
              atomic_load(&m.batch_sum), atomic_load(&m.batch_count));
    histogram(out, "leadloop_commit_seconds", "Time to write and sync one batch.", m.commit_hist, commit_bounds_us,
              NB(commit_bounds_us), 1e-6, atomic_load(&m.commit_sum_us), atomic_load(&m.commit_count));
    if (ll_srv.conf.ack != LL_ACK_AFTER_JOURNAL)
        return;
    histogram(out, "leadloop_journal_batch_requests", "Requests per journal write (ack: journal).", m.jbatch_hist,
              batch_bounds, NB(batch_bounds), 1, atomic_load(&m.jbatch_sum), atomic_load(&m.jbatch_count));
    histogram(out, "leadloop_journal_write_seconds", "Time of one synced journal write.", m.jwrite_hist,
              journal_bounds_us, NB(journal_bounds_us), 1e-6, atomic_load(&m.jwrite_sum_us),
              atomic_load(&m.jbatch_count));
    ll_buf_printf(out,
                  "# HELP leadloop_journal_bytes_total Bytes written to the journal.\n"
                  "# TYPE leadloop_journal_bytes_total counter\nleadloop_journal_bytes_total %llu\n"
                  "# HELP leadloop_journal_rewinds_total Times the journal was full and started over.\n"
                  "# TYPE leadloop_journal_rewinds_total counter\nleadloop_journal_rewinds_total %llu\n",
                  (unsigned long long)atomic_load(&m.jbytes), (unsigned long long)atomic_load(&m.jrewinds));
}
